/* na_layouts.h -- the cgroup ids of the runtime-layout fixtures in tests/data/cgroup-v1 and cgroup-v2.
 *
 * One place for the long paths that test_na_cgroup.c (the base families over the whole trees) and
 * test_na_layouts.c (every family, identity and labels per layout) both name. Pod UIDs are
 * 6f1c2a3b-0000-4000-8000-00000000000N, container ids 32 repetitions of two hex digits; the layouts
 * and their values are listed in tests/data/README.md. Included after <cmocka.h>; macros only.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef NA_LAYOUTS_H
#define NA_LAYOUTS_H

#define LY_HEX(h) h h h h h h h h h h h h h h h h h h h h h h h h h h h h h h h h
#define LY_UID(n) "6f1c2a3b-0000-4000-8000-00000000000" n
#define LY_UIDU(n) "6f1c2a3b_0000_4000_8000_00000000000" n

/* ---- cgroup v2 ---- */
/* docker on a systemd host */
#define V2L_DOCKER "/system.slice/docker-" LY_HEX("d0") ".scope"
/* cri-o, systemd driver, besteffort: the app container, the sandbox (pause) and conmon (not a container) */
#define V2L_BE "/kubepods.slice/kubepods-besteffort.slice"
#define V2L_CRIO_POD V2L_BE "/kubepods-besteffort-pod" LY_UIDU("2") ".slice"
#define V2L_CRIO V2L_CRIO_POD "/crio-" LY_HEX("c2") ".scope"
#define V2L_CRIO_PAUSE V2L_CRIO_POD "/crio-" LY_HEX("b2") ".scope"
#define V2L_CRIO_CONMON V2L_CRIO_POD "/crio-conmon-" LY_HEX("c2") ".scope"
/* kubepods, cgroupfs driver: besteffort, and guaranteed (no QoS level) */
#define V2L_FS_BE_POD "/kubepods/besteffort/pod" LY_UID("3")
#define V2L_FS_BE V2L_FS_BE_POD "/" LY_HEX("c3")
#define V2L_FS_G_POD "/kubepods/pod" LY_UID("4")
#define V2L_FS_G V2L_FS_G_POD "/" LY_HEX("c4")
/* cri-o under the cgroupfs driver, burstable: container and conmon without ".scope" */
#define V2L_FS_CRIO_POD "/kubepods/burstable/pod" LY_UID("b")
#define V2L_FS_CRIO V2L_FS_CRIO_POD "/crio-" LY_HEX("cd")
#define V2L_FS_CRIO_CONMON V2L_FS_CRIO_POD "/crio-conmon-" LY_HEX("cd")
/* kubepods, systemd driver, guaranteed (no QoS slice), containerd */
#define V2L_SD_G_POD "/kubepods.slice/kubepods-pod" LY_UIDU("5") ".slice"
#define V2L_SD_G V2L_SD_G_POD "/cri-containerd-" LY_HEX("c5") ".scope"

/* ---- cgroup v1 (the same path in every controller mount) ---- */
#define V1L_KS "/kubepods.slice"
#define V1L_KB V1L_KS "/kubepods-burstable.slice"
#define V1L_KBE V1L_KS "/kubepods-besteffort.slice"
/* systemd driver: burstable containerd, besteffort cri-o (+ conmon), guaranteed docker */
#define V1L_CTRD_POD V1L_KB "/kubepods-burstable-pod" LY_UIDU("6") ".slice"
#define V1L_CTRD V1L_CTRD_POD "/cri-containerd-" LY_HEX("c6") ".scope"
#define V1L_CRIO_POD V1L_KBE "/kubepods-besteffort-pod" LY_UIDU("7") ".slice"
#define V1L_CRIO V1L_CRIO_POD "/crio-" LY_HEX("c7") ".scope"
#define V1L_CRIO_CONMON V1L_CRIO_POD "/crio-conmon-" LY_HEX("c7") ".scope"
#define V1L_DOCKER_POD V1L_KS "/kubepods-pod" LY_UIDU("8") ".slice"
#define V1L_DOCKER V1L_DOCKER_POD "/docker-" LY_HEX("c8") ".scope"
/* cgroupfs driver: guaranteed and besteffort */
#define V1L_FS_G_POD "/kubepods/pod" LY_UID("9")
#define V1L_FS_G V1L_FS_G_POD "/" LY_HEX("c9")
#define V1L_FS_BE_POD "/kubepods/besteffort/pod" LY_UID("a")
#define V1L_FS_BE V1L_FS_BE_POD "/" LY_HEX("cb")
/* a systemd service */
#define V1L_SERVICE "/system.slice/foo.service"

#endif
