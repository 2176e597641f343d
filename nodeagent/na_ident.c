/* na_ident.c -- container identity from a cgroup path: kubepods, docker, containerd, cri-o, systemd.
 *
 * The cgroup collector (na_cgroup.c) calls na__ident_parse once when it discovers a cgroup; the
 * result picks the metadata to look up (na_meta.c) and the events to raise. Pure string work on the
 * id: no I/O, no allocation, never fails (an unknown path is a raw cgroup, as cAdvisor's raw handler).
 *
 * Paths recognised (the id is the path below the hierarchy root; "<id>" is 64 lowercase hex digits):
 *   kubepods, cgroupfs driver   .../kubepods[/burstable|/besteffort]/pod<uid>[/<id>|/crio-<id>]
 *   kubepods, systemd driver    .../kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice
 *                               [/cri-containerd-<id>.scope | /crio-<id>.scope | /docker-<id>.scope]
 *                               (uid with "_" for "-"; no qos level = guaranteed)
 *   kubelet --cgroup-root       the same below a root of its own: .../kubepods/... (cgroupfs), or systemd
 *                               slices named after it, .../kubelet-kubepods.slice/kubelet-kubepods-<qos>.slice/
 *                               kubelet-kubepods-<qos>-pod<uid_>.slice/... (kind's nodes)
 *   docker                      .../docker/<id>  or  .../docker-<id>.scope
 *   containerd                  .../cri-containerd-<id>.scope, or .../<namespace>/<id> (cgroupfs)
 *   cri-o                       .../crio-<id>.scope or .../crio-<id> (crio-conmon-* is raw)
 *   systemd service             .../<unit>.service
 * A pod's cgroup is kind POD; a container's cgroup below a pod is kind CONTAINER with the pod's uid.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "na_int.h"

static int ident_hex64(const char *p, size_t n)
{
	if (n != 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return 0;
	return 1;
}

static int ident_prefix(const char *p, size_t n, const char *pre)
{
	size_t k = strlen(pre);
	return n >= k && memcmp(p, pre, k) == 0;
}

static int ident_suffix(const char *p, size_t n, const char *suf)
{
	size_t k = strlen(suf);
	return n >= k && memcmp(p + n - k, suf, k) == 0;
}

/* A pod UID (36 characters, 8-4-4-4-12) with "-" or "_" separators, copied with "-". */
static int ident_uid(const char *p, size_t n, char *out)
{
	if (n != 36)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		int sep = i == 8 || i == 13 || i == 18 || i == 23;
		if (sep ? (c != '-' && c != '_') : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return 0;
		out[i] = sep ? '-' : c;
	}
	out[n] = '\0';
	return 1;
}

/* A container component: "<id>", "<rt>-<id>.scope", "crio-<id>". Sets container_id and runtime. */
static int ident_container(const char *c, size_t n, na__ident *o, const char *plain_runtime)
{
	static const struct {
		const char *prefix, *runtime;
	} scopes[] = {{"cri-containerd-", "containerd"}, {"containerd-", "containerd"}, {"crio-", "crio"},
		      {"docker-", "docker"}};
	if (ident_hex64(c, n)) {
		memcpy(o->container_id, c, 64);
		o->container_id[64] = '\0';
		o->runtime = plain_runtime;
		return 1;
	}
	if (ident_prefix(c, n, "crio-conmon-"))
		return 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(scopes); i++) {
		size_t k = strlen(scopes[i].prefix), m = n - k;
		if (!ident_prefix(c, n, scopes[i].prefix))
			continue;
		if (ident_suffix(c, n, ".scope"))
			m -= 6;
		if (ident_hex64(c + k, m)) {
			memcpy(o->container_id, c + k, 64);
			o->container_id[64] = '\0';
			o->runtime = scopes[i].runtime;
			return 1;
		}
	}
	return 0;
}

/* Where "kubepods" starts in a component: 0 for "kubepods...", after a prefix of dash-separated slice
 * names for a kubelet --cgroup-root under the systemd driver ("kubelet-kubepods-burstable.slice"); -1
 * when the component is neither. */
static long ident_kube_at(const char *c, size_t n)
{
	if (ident_prefix(c, n, "kubepods"))
		return 0;
	if (!ident_suffix(c, n, ".slice"))
		return -1;
	for (size_t i = 1; i + 8 <= n; i++)
		if (c[i - 1] == '-' && memcmp(c + i, "kubepods", 8) == 0)
			return (long)i;
	return -1;
}

/* A pod component: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid_>.slice" (systemd). */
static int ident_pod(const char *c, size_t n, na__ident *o)
{
	if (ident_prefix(c, n, "pod"))
		return ident_uid(c + 3, n - 3, o->pod_uid);
	if (!ident_prefix(c, n, "kubepods") || !ident_suffix(c, n, ".slice"))
		return 0;
	const char *pod = NULL;
	for (const char *p = c; p + 4 <= c + n; p++)
		if (memcmp(p, "-pod", 4) == 0)
			pod = p + 4;
	return pod && ident_uid(pod, (size_t)(c + n - 6 - pod), o->pod_uid);
}

static void ident_qos(const char *c, size_t n, na__ident *o)
{
	static const char *const names[] = {"burstable", "besteffort"};
	for (size_t i = 0; i < CM_ARRAY_LEN(names); i++) {
		size_t k = strlen(names[i]);
		if ((n == k && memcmp(c, names[i], k) == 0) ||
		    (ident_prefix(c, n, "kubepods-") && n == 9 + k + 6 && memcmp(c + 9, names[i], k) == 0 &&
		     ident_suffix(c, n, ".slice")))
			strcpy(o->qos, names[i]);
	}
}

void na__ident_parse(const char *id, na__ident *o)
{
	memset(o, 0, sizeof(*o));
	o->runtime = "";
	int in_kube = 0, in_pod = 0;
	const char *prev = NULL;
	size_t prevn = 0;
	for (const char *c = id; *c;) {
		while (*c == '/')
			c++;
		size_t n = strcspn(c, "/");
		if (n == 0)
			break;
		int last = c[n] == '\0' || (c[n] == '/' && c[n + 1] == '\0');
		long k = ident_kube_at(c, n);
		size_t kn = k > 0 ? (size_t)k : 0; /* "kubelet-kubepods-..." is read from "kubepods-..." */
		if (!in_kube && k >= 0) {
			in_kube = 1;
			strcpy(o->qos, "guaranteed");
		}
		if (in_kube && !in_pod)
			ident_qos(c + kn, n - kn, o);
		if (in_kube && !in_pod && ident_pod(c + kn, n - kn, o)) {
			in_pod = 1;
			o->kind = NA_KIND_POD;
			o->runtime = "kubepods";
		} else if (in_pod && last && ident_container(c, n, o, "containerd")) {
			o->kind = NA_KIND_CONTAINER;
		} else if (!in_kube && last && ident_container(c, n, o, prevn == 6 && memcmp(prev, "docker", 6) == 0
										? "docker" : "containerd")) {
			o->kind = NA_KIND_CONTAINER;
		} else if (!in_kube && last && ident_suffix(c, n, ".service") && n < sizeof(o->unit)) {
			o->kind = NA_KIND_SERVICE;
			o->runtime = "systemd";
			memcpy(o->unit, c, n);
			o->unit[n] = '\0';
		} else if (last && (in_pod || in_kube)) {
			o->kind = NA_KIND_RAW; /* a level of the kubepods tree, or an unknown cgroup in a pod */
			if (!in_pod)
				o->runtime = "";
		}
		prev = c, prevn = n;
		c += n;
	}
	if (o->kind == NA_KIND_RAW && !in_pod) {
		o->qos[0] = '\0';
		o->pod_uid[0] = '\0';
	}
}
