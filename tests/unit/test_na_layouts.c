/* test_na_layouts.c -- every runtime layout of the fixture trees: identity, labels and every family.
 *
 * tests/data/cgroup-v2 and cgroup-v1 hold, besides the original kubepods containers (test_na_cgstat.c),
 * one container per layout the agent must recognise (ids in na_layouts.h, provenance in
 * tests/data/README.md): docker on a systemd host, cri-o with its sandbox and its conmon scope (and
 * under the cgroupfs driver, without ".scope"), the
 * kubelet's cgroupfs and systemd drivers with guaranteed, burstable and besteffort pods, containerd,
 * docker under the systemd driver, a systemd service. For each cgroup the tables below list, by hand,
 * its identity, its labels (from tests/data/pods/layouts and tests/data/docker) and the value of every
 * series the collector emits for it, with the arithmetic from the fixture file in the comments; the
 * test fails on a missing, extra or wrong series. Pod cgroups get their own series besides their
 * containers' (as cAdvisor), network once per pod, never per container; conmon is not a container
 * (no network, no start/stop events).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "na_layouts.h"
#include "na_test.h"

#define MiB (1024.0 * 1024)
#define KiB 1024.0
#define NOW_MS 1700000000000LL

/* Which file groups a cgroup has; each group stands for the series listed in expect_layout(). */
enum {
	F_CPU = 1 << 0,      /* v2 cpu.stat usage/user/system; v1 cpuacct.usage + cpuacct.stat */
	F_CFS = 1 << 1,      /* v2 cpu.stat nr_periods...; v1 cpu.stat */
	F_MEM = 1 << 2,      /* usage, memory.stat (working set, rss, cache, mapped, faults; v1 total_swap) */
	F_MEMX = 1 << 3,     /* v2 swap.current, peak, events; v1 max_usage, failcnt, oom_control */
	F_PSI = 1 << 4,      /* v2 only */
	F_IO = 1 << 5,       /* io.stat / blkio, one line for 254:0 (/dev/vda) */
	F_PIDS = 1 << 6,     /* pids.current */
	F_PIDSMAX = 1 << 7,  /* pids.max */
	F_SPEC = 1 << 8,     /* cpu weight/shares, quota, period; memory limits */
	F_HUGE = 1 << 9,     /* hugetlb 2MB */
	F_NET = 1 << 10,     /* network series under this id (pods; containers outside pods) */
};
#define F_CTR (F_CPU | F_CFS | F_MEM | F_MEMX | F_PSI | F_IO | F_PIDS | F_PIDSMAX | F_SPEC | F_HUGE)
#define F_POD2 (F_CPU | F_CFS | F_MEM | F_NET) /* v2 pods: cpu.stat with cfs keys, memory */
#define F_POD1 (F_CPU | F_MEM | F_NET)         /* v1 pods: cpuacct, memory */

typedef struct layout {
	const char *id;
	int files;
	const char *labels; /* the metadata labels after id, ",name=..." in emission order, or "" */
	int kind;
	const char *runtime, *qos, *uid, *cid, *unit;
	double cpu, user, sys; /* seconds; v1 user and sys are USER_HZ ticks (cpuacct.stat) */
	double periods, throttled, throttled_s;
	double mem, ws, rss, cache, mapped, swap, pgfault, pgmajfault;
	double tpgfault, tpgmajfault; /* v1 hierarchy scope (total_*); v2 reports the container's */
	double max_usage, failcnt, oom;
	double psi[6]; /* cpu some, full; memory some, full; io some, full (seconds) */
	double io[4];  /* rbytes, wbytes, rios, wios of 254:0 */
	int no_io;     /* io.stat is empty */
	double threads, threads_max;
	double shares, quota, period; /* quota < 0: not set, no series */
	double mlimit, mres, mswap;
	double huge, huge_max, huge_fail; /* huge_max: v1 only */
} layout;

#define UNSET (-1)

/* ---- cgroup v2 ------------------------------------------------------------------------------------- */

static const layout v2_layouts[] = {
	{.id = V2L_DOCKER, .files = F_CTR | F_NET, .labels = ",name=\"redis\",image=\"redis:7\"", /* docker config */
	 .kind = NA_KIND_CONTAINER, .runtime = "docker", .qos = "", .uid = "", .cid = LY_HEX("d0"), .unit = "",
	 .cpu = 40, .user = 30, .sys = 10,                       /* usage_usec 40000000 ... */
	 .mem = 64 * MiB, .ws = 48 * MiB,                        /* 67108864 - inactive_file 16 MiB */
	 .rss = 40 * MiB, .cache = 24 * MiB, .mapped = 8 * MiB, /* anon, file, file_mapped */
	 .pgfault = 5000, .pgmajfault = 3, .tpgfault = 5000, .tpgmajfault = 3,
	 .max_usage = 80 * MiB,                                  /* memory.peak 83886080 */
	 .psi = {0.5, 0.25, 0.125, 0.0625, 1, 0.5},              /* total=500000 ... (usec) */
	 .io = {4096, 8192, 1, 2}, .threads = 4, .threads_max = 0, /* pids.max "max" */
	 .shares = 2597,                                         /* weight 100: 2 + 99 * 262142 / 9999 = 2 + 2595 */
	 .quota = UNSET, .period = 100000},                      /* cpu.max "max 100000"; memory.* "max" = 0 */
	{.id = V2L_CRIO, .files = F_CTR,
	 .labels = ",name=\"api\",container=\"api\",pod=\"api-5f6d\",namespace=\"shop\",image=\"api:2.1\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "crio", .qos = "besteffort", .uid = LY_UID("2"), .cid = LY_HEX("c2"),
	 .unit = "", .cpu = 20, .user = 12, .sys = 8, .mem = 96 * MiB, .ws = 64 * MiB, /* - 32 MiB */
	 .rss = 64 * MiB, .cache = 32 * MiB, .mapped = 4 * MiB, .swap = 1 * MiB,       /* memory.swap.current */
	 .pgfault = 7000, .pgmajfault = 1, .tpgfault = 7000, .tpgmajfault = 1, .max_usage = 128 * MiB,
	 .psi = {2, 1, 0.75, 0.5, 0.25, 0.125}, .io = {65536, 131072, 16, 32}, .threads = 9, .threads_max = 4096,
	 .shares = 2, /* weight 1: 2 + 0 */
	 .quota = UNSET, .period = 100000},
	{.id = V2L_CRIO_PAUSE, .files = F_CTR, .labels = ",pod=\"api-5f6d\",namespace=\"shop\"", /* by pod UID */
	 .kind = NA_KIND_CONTAINER, .runtime = "crio", .qos = "besteffort", .uid = LY_UID("2"), .cid = LY_HEX("b2"),
	 .unit = "", .cpu = 0.25, .user = 0.125, .sys = 0.125, .mem = 1 * MiB, .ws = 1 * MiB, /* inactive_file 0 */
	 .rss = 768 * KiB, .cache = 256 * KiB, .pgfault = 300, .tpgfault = 300, .max_usage = 2 * MiB, .no_io = 1,
	 .threads = 1, .shares = 2, .quota = UNSET, .period = 100000},
	{.id = V2L_CRIO_CONMON, .files = F_CPU | F_CFS | F_MEM | F_PIDS, /* no network: not a container */
	 .labels = ",pod=\"api-5f6d\",namespace=\"shop\"", .kind = NA_KIND_RAW, .runtime = "kubepods",
	 .qos = "besteffort", .uid = LY_UID("2"), .cid = "", .unit = "", .cpu = 0.5, .user = 0.25, .sys = 0.25,
	 .mem = 2 * MiB, .ws = 2 * MiB, .rss = 1536 * KiB, .cache = 512 * KiB, .pgfault = 100, .tpgfault = 100,
	 .threads = 1},
	{.id = V2L_CRIO_POD, .files = F_POD2, .labels = ",pod=\"api-5f6d\",namespace=\"shop\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "besteffort", .uid = LY_UID("2"), .cid = "", .unit = "", .cpu = 21, .user = 13,
	 .sys = 8, .mem = 100 * MiB, .ws = 68 * MiB, .rss = 66 * MiB, .cache = 34 * MiB, .mapped = 4 * MiB,
	 .pgfault = 7500, .pgmajfault = 1, .tpgfault = 7500, .tpgmajfault = 1},
	{.id = V2L_FS_BE, .files = F_CTR,
	 .labels = ",name=\"worker\",container=\"worker\",pod=\"batch-x1\",namespace=\"jobs\",image=\"worker:1\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "besteffort", .uid = LY_UID("3"),
	 .cid = LY_HEX("c3"), .unit = "", .cpu = 8, .user = 5, .sys = 3, .mem = 48 * MiB, .ws = 40 * MiB,
	 .rss = 32 * MiB, .cache = 16 * MiB, .mapped = 2 * MiB, .pgfault = 3000, .pgmajfault = 2, .tpgfault = 3000,
	 .tpgmajfault = 2, .max_usage = 50 * MiB, .psi = {4, 2, 1, 0.5, 8, 4}, .io = {3 * MiB, 1 * MiB, 30, 10},
	 .threads = 3, .shares = 2, .quota = UNSET, .period = 100000},
	{.id = V2L_FS_BE_POD, .files = F_POD2, .labels = ",pod=\"batch-x1\",namespace=\"jobs\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "besteffort", .uid = LY_UID("3"), .cid = "", .unit = "", .cpu = 9, .user = 6,
	 .sys = 3, .mem = 50 * MiB, .ws = 42 * MiB, .rss = 33 * MiB, .cache = 17 * MiB, .mapped = 2 * MiB,
	 .pgfault = 3100, .pgmajfault = 2, .tpgfault = 3100, .tpgmajfault = 2},
	{.id = V2L_FS_G, .files = F_CTR,
	 .labels = ",name=\"postgres\",container=\"postgres\",pod=\"db-0\",namespace=\"data\",image=\"postgres:16\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "guaranteed", .uid = LY_UID("4"),
	 .cid = LY_HEX("c4"), .unit = "", .cpu = 30, .user = 20, .sys = 10, .periods = 3000, .throttled = 300,
	 .throttled_s = 15, /* throttled_usec 15000000 */
	 .mem = 256 * MiB, .ws = 192 * MiB, .rss = 192 * MiB, .cache = 64 * MiB, .mapped = 32 * MiB,
	 .pgfault = 40000, .pgmajfault = 40, .tpgfault = 40000, .tpgmajfault = 40, .max_usage = 300 * MiB,
	 .failcnt = 11, .oom = 3, /* memory.events max 11, oom_kill 3 */
	 .psi = {6, 3, 2, 1, 0.5, 0.25}, .io = {512 * KiB, 1 * MiB, 64, 128}, .threads = 20, .threads_max = 1024,
	 .shares = 998,                                 /* weight 39: 2 + 38 * 262142 / 9999 = 2 + 996 */
	 .quota = 100000, .period = 100000,             /* cpu.max "100000 100000" */
	 .mlimit = 256 * MiB, .mres = 0, .mswap = 0,    /* memory.max 268435456, low 0, swap.max 0 */
	 .huge = 2 * MiB, .huge_fail = 1},              /* hugetlb.2MB.current, events max */
	{.id = V2L_FS_G_POD, .files = F_POD2, .labels = ",pod=\"db-0\",namespace=\"data\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "guaranteed", .uid = LY_UID("4"), .cid = "", .unit = "", .cpu = 31, .user = 21,
	 .sys = 10, .mem = 260 * MiB, .ws = 196 * MiB, .rss = 195 * MiB, .cache = 65 * MiB, .mapped = 32 * MiB,
	 .pgfault = 40100, .pgmajfault = 40, .tpgfault = 40100, .tpgmajfault = 40},
	{.id = V2L_FS_CRIO, .files = F_CTR,
	 .labels = ",name=\"render\",container=\"render\",pod=\"reports-7c\",namespace=\"jobs\",image=\"render:5\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "crio", .qos = "burstable", .uid = LY_UID("b"), .cid = LY_HEX("cd"),
	 .unit = "", .cpu = 11, .user = 7, .sys = 4, .periods = 500, .throttled = 25, .throttled_s = 1.25,
	 .mem = 160 * MiB, .ws = 112 * MiB, .rss = 112 * MiB, .cache = 48 * MiB, .mapped = 6 * MiB, .swap = 2 * MiB,
	 .pgfault = 15000, .pgmajfault = 7, .tpgfault = 15000, .tpgmajfault = 7, .max_usage = 200 * MiB,
	 .failcnt = 3, .psi = {3, 1.5, 0.5, 0.125, 1.5, 0.75}, .io = {2 * MiB, 3 * MiB, 20, 30}, .threads = 11,
	 .threads_max = 2048, .shares = 237, /* weight 10: 2 + 9 * 262142 / 9999 = 2 + 235 */
	 .quota = 75000, .period = 100000, .mlimit = 512 * MiB, .mres = 0, .mswap = 0},
	{.id = V2L_FS_CRIO_CONMON, .files = F_CPU | F_CFS | F_MEM | F_PIDS,
	 .labels = ",pod=\"reports-7c\",namespace=\"jobs\"", .kind = NA_KIND_RAW, .runtime = "kubepods",
	 .qos = "burstable", .uid = LY_UID("b"), .cid = "", .unit = "", .cpu = 0.5, .user = 0.25, .sys = 0.25,
	 .mem = 2 * MiB, .ws = 2 * MiB, .rss = 1536 * KiB, .cache = 512 * KiB, .pgfault = 100, .tpgfault = 100,
	 .threads = 1},
	{.id = V2L_FS_CRIO_POD, .files = F_POD2, .labels = ",pod=\"reports-7c\",namespace=\"jobs\"",
	 .kind = NA_KIND_POD, .runtime = "kubepods", .qos = "burstable", .uid = LY_UID("b"), .cid = "", .unit = "",
	 .cpu = 12, .user = 8, .sys = 4, .mem = 170 * MiB, .ws = 122 * MiB, .rss = 120 * MiB, .cache = 50 * MiB,
	 .mapped = 6 * MiB, .pgfault = 15200, .pgmajfault = 7, .tpgfault = 15200, .tpgmajfault = 7},
	{.id = V2L_SD_G, .files = F_CTR, /* labelled by its cgroup path in cache.json (no id there) */
	 .labels = ",name=\"memcached\",container=\"memcached\",pod=\"cache-0\",namespace=\"data\","
		   "image=\"memcached:1.6\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "guaranteed", .uid = LY_UID("5"),
	 .cid = LY_HEX("c5"), .unit = "", .cpu = 10, .user = 6, .sys = 4, .periods = 2000, .throttled = 100,
	 .throttled_s = 5, .mem = 128 * MiB, .ws = 96 * MiB, .rss = 96 * MiB, .cache = 32 * MiB, .mapped = 16 * MiB,
	 .pgfault = 10000, .pgmajfault = 10, .tpgfault = 10000, .tpgmajfault = 10, .max_usage = 130 * MiB,
	 .failcnt = 2, .oom = 1, .psi = {1, 0.5, 0.5, 0.25, 2, 1}, .io = {256 * KiB, 512 * KiB, 8, 16}, .threads = 6,
	 .threads_max = 512, .shares = 500, /* weight 20: 2 + 19 * 262142 / 9999 = 2 + 498 */
	 .quota = 50000, .period = 100000, .mlimit = 256 * MiB, .mres = 64 * MiB, .mswap = 0},
	{.id = V2L_SD_G_POD, .files = F_POD2, .labels = ",pod=\"cache-0\",namespace=\"data\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "guaranteed", .uid = LY_UID("5"), .cid = "", .unit = "", .cpu = 11, .user = 7,
	 .sys = 4, .mem = 130 * MiB, .ws = 98 * MiB, .rss = 98 * MiB, .cache = 32 * MiB, .mapped = 16 * MiB,
	 .pgfault = 10100, .pgmajfault = 10, .tpgfault = 10100, .tpgmajfault = 10},
};

/* ---- cgroup v1 ------------------------------------------------------------------------------------- */

static const layout v1_layouts[] = {
	{.id = V1L_CTRD, .files = F_CTR,
	 .labels = ",name=\"app\",container=\"app\",pod=\"web-v1\",namespace=\"shop\",image=\"app:3\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "burstable", .uid = LY_UID("6"),
	 .cid = LY_HEX("c6"), .unit = "", .cpu = 6, .user = 400, .sys = 200, /* cpuacct.usage 6e9 ns; ticks */
	 .periods = 600, .throttled = 30, .throttled_s = 1.5,                     /* throttled_time 1.5e9 ns */
	 .mem = 192 * MiB, .ws = 128 * MiB, .rss = 128 * MiB, .cache = 64 * MiB, /* total_* */
	 .mapped = 8 * MiB, .pgfault = 20000, .pgmajfault = 6, .tpgfault = 20000, .tpgmajfault = 6,
	 .max_usage = 200 * MiB, .failcnt = 2, .io = {2 * MiB, 4 * MiB, 40, 80}, /* blkio Read/Write lines */
	 .threads = 15, .threads_max = 2048, .shares = 512, .quota = 50000, .period = 100000,
	 .mlimit = 512 * MiB, .mres = 0, .mswap = 0, /* soft and memsw 9223372036854771712: unlimited = 0 */
	 .huge = 0, .huge_max = 4 * MiB, .huge_fail = 1},
	{.id = V1L_CTRD_POD, .files = F_POD1, .labels = ",pod=\"web-v1\",namespace=\"shop\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "burstable", .uid = LY_UID("6"), .cid = "", .unit = "", .cpu = 6.5,
	 .user = 420, .sys = 210, .mem = 200 * MiB, .ws = 136 * MiB, .rss = 132 * MiB, .cache = 68 * MiB,
	 .mapped = 8 * MiB, .pgfault = 100, .pgmajfault = 0, .tpgfault = 20100, .tpgmajfault = 6},
	{.id = V1L_CRIO, .files = F_CTR,
	 .labels = ",name=\"api\",container=\"api\",pod=\"api-v1\",namespace=\"shop\",image=\"api:2.1\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "crio", .qos = "besteffort", .uid = LY_UID("7"), .cid = LY_HEX("c7"),
	 .unit = "", .cpu = 3, .user = 180, .sys = 110, .mem = 80 * MiB, .ws = 64 * MiB, .rss = 48 * MiB,
	 .cache = 32 * MiB, .mapped = 4 * MiB, .pgfault = 9000, .pgmajfault = 2, .tpgfault = 9000, .tpgmajfault = 2,
	 .max_usage = 90 * MiB, .io = {8192, 16384, 2, 4}, .threads = 5, .threads_max = 0, /* "max" */
	 .shares = 2, .quota = UNSET, .period = 100000},                                 /* quota -1 */
	{.id = V1L_CRIO_CONMON, .files = F_CPU | F_MEM | F_PIDS, .labels = ",pod=\"api-v1\",namespace=\"shop\"",
	 .kind = NA_KIND_RAW, .runtime = "kubepods", .qos = "besteffort", .uid = LY_UID("7"), .cid = "", .unit = "",
	 .cpu = 0.5, .user = 30, .sys = 20, .mem = 2 * MiB, .ws = 2 * MiB, .rss = 1536 * KiB, .cache = 512 * KiB,
	 .pgfault = 100, .tpgfault = 100, .threads = 1},
	{.id = V1L_CRIO_POD, .files = F_POD1, .labels = ",pod=\"api-v1\",namespace=\"shop\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "besteffort", .uid = LY_UID("7"), .cid = "", .unit = "", .cpu = 4,
	 .user = 240, .sys = 150, .mem = 84 * MiB, .ws = 68 * MiB, .rss = 50 * MiB, .cache = 34 * MiB,
	 .mapped = 4 * MiB, .pgfault = 50, .tpgfault = 9150, .tpgmajfault = 2},
	{.id = V1L_DOCKER, .files = F_CTR,
	 .labels = ",name=\"legacy\",container=\"legacy\",pod=\"legacy-0\",namespace=\"ops\",image=\"legacy:0.9\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "docker", .qos = "guaranteed", .uid = LY_UID("8"),
	 .cid = LY_HEX("c8"), .unit = "", .cpu = 5, .user = 320, .sys = 170, .periods = 1000, .throttled = 10,
	 .throttled_s = 0.5, .mem = 256 * MiB, .ws = 224 * MiB, .rss = 200 * MiB, .cache = 56 * MiB,
	 .mapped = 12 * MiB, .pgfault = 30000, .pgmajfault = 30, .tpgfault = 30000, .tpgmajfault = 30,
	 .max_usage = 256 * MiB, .failcnt = 9, .oom = 2, .io = {1 * MiB, 0, 10, 0}, .threads = 30,
	 .threads_max = 4096, .shares = 1024, .quota = 100000, .period = 100000, .mlimit = 256 * MiB, .mres = 0,
	 .mswap = 256 * MiB, .huge = 4 * MiB, .huge_max = 4 * MiB, .huge_fail = 0},
	{.id = V1L_DOCKER_POD, .files = F_POD1, .labels = ",pod=\"legacy-0\",namespace=\"ops\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "guaranteed", .uid = LY_UID("8"), .cid = "", .unit = "", .cpu = 5.5,
	 .user = 350, .sys = 190, .mem = 260 * MiB, .ws = 228 * MiB, .rss = 202 * MiB, .cache = 58 * MiB,
	 .mapped = 12 * MiB, .pgfault = 10, .tpgfault = 30010, .tpgmajfault = 30},
	{.id = V1L_FS_G, .files = F_CTR,
	 .labels = ",name=\"rabbitmq\",container=\"rabbitmq\",pod=\"queue-0\",namespace=\"data\",image=\"rabbitmq:3\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "guaranteed", .uid = LY_UID("9"),
	 .cid = LY_HEX("c9"), .unit = "", .cpu = 7, .user = 450, .sys = 250, .periods = 700, .throttled = 7,
	 .throttled_s = 0.25, .mem = 64 * MiB, .ws = 56 * MiB, .rss = 48 * MiB, .cache = 16 * MiB, .mapped = 1 * MiB,
	 .pgfault = 6000, .pgmajfault = 4, .tpgfault = 6000, .tpgmajfault = 4, .max_usage = 70 * MiB, .failcnt = 1,
	 .oom = 1, .io = {512 * KiB, 256 * KiB, 12, 6}, .threads = 8, .threads_max = 256, .shares = 256,
	 .quota = 25000, .period = 100000, .mlimit = 128 * MiB, .mres = 0, .mswap = 128 * MiB},
	{.id = V1L_FS_G_POD, .files = F_POD1, .labels = ",pod=\"queue-0\",namespace=\"data\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "guaranteed", .uid = LY_UID("9"), .cid = "", .unit = "", .cpu = 7.5,
	 .user = 470, .sys = 260, .mem = 66 * MiB, .ws = 58 * MiB, .rss = 49 * MiB, .cache = 17 * MiB,
	 .mapped = 1 * MiB, .pgfault = 20, .tpgfault = 6020, .tpgmajfault = 4},
	{.id = V1L_FS_BE, .files = F_CTR,
	 .labels = ",name=\"sweep\",container=\"sweep\",pod=\"sweeper-1\",namespace=\"jobs\",image=\"busybox:1.36\"",
	 .kind = NA_KIND_CONTAINER, .runtime = "containerd", .qos = "besteffort", .uid = LY_UID("a"),
	 .cid = LY_HEX("cb"), .unit = "", .cpu = 3, .user = 200, .sys = 100, .mem = 32 * MiB, .ws = 28 * MiB,
	 .rss = 24 * MiB, .cache = 8 * MiB, .mapped = 512 * KiB, .pgfault = 2500, .pgmajfault = 1, .tpgfault = 2500,
	 .tpgmajfault = 1, .max_usage = 40 * MiB, .io = {0, 4096, 0, 1}, .threads = 2, .shares = 2, .quota = UNSET,
	 .period = 100000},
	{.id = V1L_FS_BE_POD, .files = F_POD1, .labels = ",pod=\"sweeper-1\",namespace=\"jobs\"", .kind = NA_KIND_POD,
	 .runtime = "kubepods", .qos = "besteffort", .uid = LY_UID("a"), .cid = "", .unit = "", .cpu = 3.5,
	 .user = 220, .sys = 110, .mem = 33 * MiB, .ws = 29 * MiB, .rss = 25 * MiB, .cache = 8 * MiB,
	 .mapped = 512 * KiB, .pgfault = 5, .tpgfault = 2505, .tpgmajfault = 1},
	{.id = V1L_SERVICE, .files = F_CTR, /* cgroup.procs names 4242, but a service gets no network series */
	 .labels = ",name=\"foo\",container=\"foo\",pod=\"foo\",namespace=\"host\"", /* no image in foo.json */
	 .kind = NA_KIND_SERVICE, .runtime = "systemd", .qos = "", .uid = "", .cid = "", .unit = "foo.service",
	 .cpu = 5, .user = 300, .sys = 150, .mem = 16 * MiB, .ws = 14 * MiB, .rss = 12 * MiB, .cache = 4 * MiB,
	 .mapped = 1 * MiB, .pgfault = 1200, .tpgfault = 1200, .max_usage = 20 * MiB, .io = {16384, 32768, 4, 8},
	 .threads = 2, .shares = 1024, .quota = UNSET, .period = 100000},
};

/* Levels of the kubepods trees: raw cgroups (no pod, no QoS class, no runtime). */
static const char *const v2_levels[] = {"/kubepods", "/kubepods/besteffort", "/kubepods/burstable", V2L_BE,
					"/system.slice"};
static const char *const v1_levels[] = {"/kubepods", "/kubepods/besteffort", V1L_KS, V1L_KB, V1L_KBE, "/system.slice"};

/* The cgroups that carry network series (tests/data/proc/4242/net/dev), each once: pods, and
 * containers outside pods. Containers in pods, conmon and services have none. */
static const char *const v2_net_ids[] = {
	"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" LY_UIDU("1") ".slice",
	V2L_CRIO_POD, V2L_FS_BE_POD, V2L_FS_G_POD, V2L_FS_CRIO_POD, V2L_SD_G_POD, V2L_DOCKER};
static const char *const v1_net_ids[] = {"/kubepods/burstable/pod" LY_UID("1"), V1L_CTRD_POD, V1L_CRIO_POD,
					 V1L_DOCKER_POD, V1L_FS_G_POD, V1L_FS_BE_POD};

/* ---- expectations ----------------------------------------------------------------------------------- */

#define WL_MAX 64

typedef struct wlist {
	char key[WL_MAX][768];
	double v[WL_MAX];
	size_t n;
	const layout *l;
} wlist;

static void w_add(wlist *w, const char *metric, const char *extra, double v)
{
	assert_true(w->n < WL_MAX);
	fmt_into(w->key[w->n], sizeof(w->key[0]), "%s{id=\"%s\"%s%s%s}", metric, w->l->id, w->l->labels,
		 extra ? "," : "", extra ? extra : "");
	w->v[w->n++] = v;
}

static void w_cpu(wlist *w, int version, double hz)
{
	const layout *l = w->l;
	if (l->files & F_CPU) {
		w_add(w, "container_cpu_usage_seconds_total", NULL, l->cpu);
		w_add(w, "container_cpu_user_seconds_total", NULL, version == 1 ? l->user / hz : l->user);
		w_add(w, "container_cpu_system_seconds_total", NULL, version == 1 ? l->sys / hz : l->sys);
	}
	if (l->files & F_CFS) {
		w_add(w, "container_cpu_cfs_periods_total", NULL, l->periods);
		w_add(w, "container_cpu_cfs_throttled_periods_total", NULL, l->throttled);
		w_add(w, "container_cpu_cfs_throttled_seconds_total", NULL, l->throttled_s);
	}
}

static void w_mem(wlist *w, int version)
{
	const layout *l = w->l;
	if (l->files & F_MEM) {
		w_add(w, "container_memory_usage_bytes", NULL, l->mem);
		w_add(w, "container_memory_working_set_bytes", NULL, l->ws);
		w_add(w, "container_memory_rss", NULL, l->rss);
		w_add(w, "container_memory_cache", NULL, l->cache);
		w_add(w, "container_memory_mapped_file", NULL, l->mapped);
		w_add(w, "container_memory_failures_total", "failure_type=\"pgfault\",scope=\"container\"", l->pgfault);
		w_add(w, "container_memory_failures_total", "failure_type=\"pgmajfault\",scope=\"container\"",
		      l->pgmajfault);
		w_add(w, "container_memory_failures_total", "failure_type=\"pgfault\",scope=\"hierarchy\"",
		      l->tpgfault);
		w_add(w, "container_memory_failures_total", "failure_type=\"pgmajfault\",scope=\"hierarchy\"",
		      l->tpgmajfault);
		if (version == 1)
			w_add(w, "container_memory_swap", NULL, l->swap); /* total_swap */
	}
	if (l->files & F_MEMX) {
		if (version == 2)
			w_add(w, "container_memory_swap", NULL, l->swap); /* memory.swap.current */
		w_add(w, "container_memory_max_usage_bytes", NULL, l->max_usage);
		w_add(w, "container_memory_failcnt", NULL, l->failcnt);
		w_add(w, "container_oom_events_total", NULL, l->oom);
	}
}

static void w_psi_io(wlist *w, int version)
{
	static const char *const psi[] = {
		"container_pressure_cpu_waiting_seconds_total",    "container_pressure_cpu_stalled_seconds_total",
		"container_pressure_memory_waiting_seconds_total", "container_pressure_memory_stalled_seconds_total",
		"container_pressure_io_waiting_seconds_total",     "container_pressure_io_stalled_seconds_total"};
	static const char *const io[] = {"container_fs_reads_bytes_total", "container_fs_writes_bytes_total",
					 "container_fs_reads_total", "container_fs_writes_total"};
	const layout *l = w->l;
	for (int i = 0; i < 6 && (l->files & F_PSI) && version == 2; i++)
		w_add(w, psi[i], NULL, l->psi[i]);
	for (int i = 0; i < 4 && (l->files & F_IO) && !l->no_io; i++)
		w_add(w, io[i], "device=\"/dev/vda\"", l->io[i]); /* 254:0 in tests/data/proc/partitions */
}

static void w_rest(wlist *w, int version, double start)
{
	const layout *l = w->l;
	if (l->files & F_PIDS)
		w_add(w, "container_threads", NULL, l->threads);
	if (l->files & F_PIDSMAX)
		w_add(w, "container_threads_max", NULL, l->threads_max);
	if (l->files & F_SPEC) {
		w_add(w, "container_spec_cpu_shares", NULL, l->shares);
		if (l->quota != UNSET)
			w_add(w, "container_spec_cpu_quota", NULL, l->quota);
		w_add(w, "container_spec_cpu_period", NULL, l->period);
		w_add(w, "container_spec_memory_limit_bytes", NULL, l->mlimit);
		w_add(w, "container_spec_memory_reservation_limit_bytes", NULL, l->mres);
		w_add(w, "container_spec_memory_swap_limit_bytes", NULL, l->mswap);
	}
	if (l->files & F_HUGE) {
		w_add(w, "container_hugetlb_usage_bytes", "pagesize=\"2MB\"", l->huge);
		if (version == 1)
			w_add(w, "container_hugetlb_max_usage_bytes", "pagesize=\"2MB\"", l->huge_max);
		w_add(w, "container_hugetlb_failcnt", "pagesize=\"2MB\"", l->huge_fail);
	}
	w_add(w, "container_start_time_seconds", NULL, start); /* the directory's ctime */
	w_add(w, "container_last_seen", NULL, NOW_MS / 1000.0);
	if (l->files & F_NET) { /* tests/data/proc/4242/net/dev, eth0 ("lo" skipped) */
		static const char *const m[] = {
			"container_network_receive_bytes_total",    "container_network_receive_packets_total",
			"container_network_receive_errors_total",   "container_network_receive_packets_dropped_total",
			"container_network_transmit_bytes_total",   "container_network_transmit_packets_total",
			"container_network_transmit_errors_total",  "container_network_transmit_packets_dropped_total"};
		static const double v[] = {1048576, 2000, 1, 2, 524288, 1000, 3, 4};
		for (int i = 0; i < 8; i++)
			w_add(w, m[i], "interface=\"eth0\"", v[i]);
	}
}

/* The records of s whose id label is exactly id. */
static size_t count_id(const sink *s, const char *id)
{
	char pre[PATH_MAX + 16];
	size_t n = 0;
	fmt_into(pre, sizeof(pre), "{id=\"%s\"", id);
	for (size_t i = 0; i < s->n; i++) {
		const char *p = strstr(s->recs[i].key, pre);
		if (p && (p[strlen(pre)] == '}' || p[strlen(pre)] == ','))
			n++;
	}
	return n;
}

static void check_ident(const na__ident *o, const layout *l, const char *how)
{
	if (o->kind != l->kind || strcmp(o->runtime, l->runtime) || strcmp(o->qos, l->qos) ||
	    strcmp(o->pod_uid, l->uid) || strcmp(o->container_id, l->cid) || strcmp(o->unit, l->unit))
		fail_msg("%s %s: kind %d runtime '%s' qos '%s' uid '%s' cid '%s' unit '%s'", how, l->id, o->kind,
			 o->runtime, o->qos, o->pod_uid, o->container_id, o->unit);
}

/* The cgroup's identity (parsed, and as the collector holds it) and exactly its wanted series. */
static void check_layout(const sink *s, na__cgroups *cg, const char *dir, const layout *l)
{
	struct stat st;
	na__ident o;
	na__ident_parse(l->id, &o);
	check_ident(&o, l, "parse");
	const na__cg_node *n = na__cg_find(cg, l->id);
	if (!n)
		fail_msg("the collector does not know %s", l->id);
	check_ident(&n->ident, l, "collector");
	if (stat(dir, &st) < 0)
		fail_msg("%s: %s", dir, strerror(errno));
	wlist *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	w->l = l;
	long hz = sysconf(_SC_CLK_TCK);
	w_cpu(w, cg->version, (double)hz);
	w_mem(w, cg->version);
	w_psi_io(w, cg->version);
	w_rest(w, cg->version, (double)st.st_ctim.tv_sec + (double)st.st_ctim.tv_nsec * 1e-9);
	for (size_t i = 0; i < w->n; i++) {
		const sink_rec *r = sink_find(s, w->key[i]);
		if (!r) {
			sink_dump(s);
			fail_msg("%s missing", w->key[i]);
		}
		if (fabs(r->v - w->v[i]) > 1e-9 * (fabs(w->v[i]) > 1.0 ? fabs(w->v[i]) : 1.0))
			fail_msg("%s = %.17g, want %.17g", w->key[i], r->v, w->v[i]);
	}
	if (count_id(s, l->id) != w->n) {
		sink_dump(s);
		fail_msg("%zu series for %s, want %zu", count_id(s, l->id), l->id, w->n);
	}
	free(w);
}

/* ---- collection -------------------------------------------------------------------------------------- */

typedef struct run {
	sink s;
	na__meta *meta;
	na__cgroups *cg;
	char root[PATH_MAX];
} run;

/* Labels from tests/data/pods/layouts and tests/data/docker, one collection at NOW_MS. */
static void run_collect(run *r, const char *tree, int version)
{
	char pods[PATH_MAX], docker[PATH_MAX], proc[PATH_MAX];
	cm_err err = {{0}};
	data_path(r->root, tree);
	data_path(pods, "pods/layouts");
	data_path(docker, "docker");
	data_path(proc, "proc");
	na__meta_opts mo = {.pods_dir = pods, .docker_root = docker, .label_allowlist = "app", .refresh_ms = 1000};
	if (na__meta_create(&mo, &r->meta, &err))
		fail_msg("meta: %s", err.msg);
	assert_int_equal(na__meta_refresh(r->meta, 0, 1), 0);
	na__cgroups_opts o = {.root = r->root, .proc_root = proc, .meta = r->meta};
	if (na__cgroups_open(&o, &r->cg, &err))
		fail_msg("open: %s", err.msg);
	assert_int_equal(na__cgroups_version(r->cg), version);
	na_emit e = sink_emit(&r->s);
	assert_int_equal(na__cgroups_collect(r->cg, &e, NULL, NOW_MS, NOW_MS), 0);
	assert_int_equal(r->s.dups, 0);
}

static void run_close(run *r)
{
	na__cgroups_close(r->cg);
	na__meta_destroy(r->meta);
	sink_clear(&r->s);
}

/* Exactly the listed ids carry network series, each one set of eight. */
static void check_net_once(const sink *s, const char *const *ids, size_t nids)
{
	size_t total = 0;
	for (size_t i = 0; i < s->n; i++)
		total += strncmp(s->recs[i].key, "container_network_", 18) == 0;
	for (size_t i = 0; i < nids; i++) {
		char pre[PATH_MAX + 64];
		size_t found = 0;
		fmt_into(pre, sizeof(pre), "container_network_receive_bytes_total{id=\"%s\"", ids[i]);
		for (size_t k = 0; k < s->n; k++)
			found += strncmp(s->recs[k].key, pre, strlen(pre)) == 0 && s->recs[k].key[strlen(pre)] == ',';
		if (found != 1)
			fail_msg("%zu network sets for %s, want 1", found, ids[i]);
	}
	if (total != 8 * nids) {
		sink_dump(s);
		fail_msg("%zu network series, want %zu", total, 8 * nids);
	}
}

static void check_levels(na__cgroups *cg, const char *const *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		layout l = {.id = ids[i], .kind = NA_KIND_RAW, .runtime = "", .qos = "", .uid = "", .cid = "",
			    .unit = ""};
		na__ident o;
		na__ident_parse(ids[i], &o);
		check_ident(&o, &l, "parse");
		assert_non_null(na__cg_find(cg, ids[i]));
		check_ident(&na__cg_find(cg, ids[i])->ident, &l, "collector");
	}
}

static void test_v2_layouts(void **state)
{
	(void)state;
	run r = {0};
	char dir[PATH_MAX * 2];
	run_collect(&r, "cgroup-v2", 2);
	for (size_t i = 0; i < CM_ARRAY_LEN(v2_layouts); i++) {
		fmt_into(dir, sizeof(dir), "%s%s", r.root, v2_layouts[i].id);
		check_layout(&r.s, r.cg, dir, &v2_layouts[i]);
	}
	check_levels(r.cg, v2_levels, CM_ARRAY_LEN(v2_levels));
	check_net_once(&r.s, v2_net_ids, CM_ARRAY_LEN(v2_net_ids));
	run_close(&r);
}

static void test_v1_layouts(void **state)
{
	(void)state;
	run r = {0};
	char dir[PATH_MAX * 2];
	run_collect(&r, "cgroup-v1", 1);
	for (size_t i = 0; i < CM_ARRAY_LEN(v1_layouts); i++) {
		fmt_into(dir, sizeof(dir), "%s/cpuacct%s", r.root, v1_layouts[i].id); /* the first mount: its ctime */
		check_layout(&r.s, r.cg, dir, &v1_layouts[i]);
	}
	check_levels(r.cg, v1_levels, CM_ARRAY_LEN(v1_levels));
	check_net_once(&r.s, v1_net_ids, CM_ARRAY_LEN(v1_net_ids));
	run_close(&r);
}

/* ---- identity only: layouts not in the trees ------------------------------------------------------------- */

static void expect_ident(const char *id, int kind, const char *runtime, const char *qos, const char *uid,
			 const char *cid, const char *unit)
{
	layout l = {.id = id, .kind = kind, .runtime = runtime, .qos = qos, .uid = uid, .cid = cid, .unit = unit};
	na__ident o;
	na__ident_parse(id, &o);
	check_ident(&o, &l, "parse");
}

/* The kubelet's --cgroup-root: kind's nodes run it as /kubelet with the systemd driver, so every slice
 * name is prefixed "kubelet-"; with cgroupfs the kubepods tree sits below /kubelet. */
static void test_ident_kubelet_cgroup_root(void **state)
{
	(void)state;
#define KIND "/kubelet.slice/kubelet-kubepods.slice"
	expect_ident(KIND "/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" LY_UIDU("2")
		     ".slice/cri-containerd-" LY_HEX("c2") ".scope",
		     NA_KIND_CONTAINER, "containerd", "besteffort", LY_UID("2"), LY_HEX("c2"), "");
	expect_ident(KIND "/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod" LY_UIDU("3") ".slice",
		     NA_KIND_POD, "kubepods", "burstable", LY_UID("3"), "", "");
	expect_ident(KIND "/kubelet-kubepods-pod" LY_UIDU("4") ".slice/crio-" LY_HEX("c4") ".scope",
		     NA_KIND_CONTAINER, "crio", "guaranteed", LY_UID("4"), LY_HEX("c4"), "");
	expect_ident(KIND "/kubelet-kubepods-pod" LY_UIDU("4") ".slice/crio-conmon-" LY_HEX("c4") ".scope",
		     NA_KIND_RAW, "kubepods", "guaranteed", LY_UID("4"), "", "");
	expect_ident(KIND "/kubelet-kubepods-besteffort.slice", NA_KIND_RAW, "", "", "", "", "");
	expect_ident(KIND, NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/kubelet.slice", NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/kubelet/kubepods/burstable/pod" LY_UID("5") "/" LY_HEX("c5"), NA_KIND_CONTAINER, "containerd",
		     "burstable", LY_UID("5"), LY_HEX("c5"), "");
	/* "kubepods" inside a name that is not a slice level starts nothing */
	expect_ident("/system.slice/x-kubepods.service", NA_KIND_SERVICE, "systemd", "", "", "", "x-kubepods.service");
	expect_ident("/system.slice/xkubepods.slice/docker-" LY_HEX("d0") ".scope", NA_KIND_CONTAINER, "docker", "",
		     "", LY_HEX("d0"), "");
#undef KIND
}

/* ---- events: conmon is not a container ---------------------------------------------------------------- */

typedef struct evlog {
	int type[8];
	char cid[8][72], runtime[8][16];
	size_t n;
} evlog;

static void ev_record(void *ctx, int type, const char *id, const na__ident *ident, int64_t t_ms, uint64_t count)
{
	evlog *e = ctx;
	(void)id, (void)t_ms, (void)count;
	assert_true(e->n < CM_ARRAY_LEN(e->type));
	e->type[e->n] = type;
	fmt_into(e->cid[e->n], sizeof(e->cid[0]), "%s", ident->container_id);
	fmt_into(e->runtime[e->n], sizeof(e->runtime[0]), "%s", ident->runtime);
	e->n++;
}

static void ev_pass(na__cgroups *cg, evlog *e, int64_t now_ms)
{
	sink s = {0};
	na_emit emit = sink_emit(&s);
	na_event_sink ev = {ev_record, e};
	memset(e, 0, sizeof(*e));
	assert_int_equal(na__cgroups_collect(cg, &emit, &ev, now_ms, now_ms), 0);
	sink_clear(&s);
}

/* A cri-o container and its conmon scope appear in a pod, then go: one started and one stopped event,
 * both for the container; conmon raises none. */
static void test_crio_conmon_raises_no_event(void **state)
{
	(void)state;
	char src[PATH_MAX], tmp[PATH_MAX], ctr[PATH_MAX * 2], conmon[PATH_MAX * 2];
	data_path(src, "cgroup-v2");
	temp_dir(tmp, "layouts");
	copy_tree(src, tmp);
	na__cgroups_opts o = {.root = tmp};
	na__cgroups *cg = NULL;
	assert_int_equal(na__cgroups_open(&o, &cg, NULL), 0);
	evlog e;
	ev_pass(cg, &e, 1000);
	assert_int_equal(e.n, 0); /* the first pass reports what exists as present, not as started */
	fmt_into(ctr, sizeof(ctr), "%s%s/crio-%s.scope", tmp, V2L_CRIO_POD, LY_HEX("e2"));
	fmt_into(conmon, sizeof(conmon), "%s%s/crio-conmon-%s.scope", tmp, V2L_CRIO_POD, LY_HEX("e2"));
	assert_int_equal(mkdir(conmon, 0755), 0);
	assert_int_equal(mkdir(ctr, 0755), 0);
	ev_pass(cg, &e, 2000);
	assert_int_equal(e.n, 1);
	assert_int_equal(e.type[0], NA_EVENT_STARTED);
	assert_string_equal(e.cid[0], LY_HEX("e2"));
	assert_string_equal(e.runtime[0], "crio");
	rm_tree(conmon);
	rm_tree(ctr);
	ev_pass(cg, &e, 3000);
	assert_int_equal(e.n, 1);
	assert_int_equal(e.type[0], NA_EVENT_STOPPED);
	assert_string_equal(e.cid[0], LY_HEX("e2"));
	na__cgroups_close(cg);
	rm_tree(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_layouts),
		cmocka_unit_test(test_v1_layouts),
		cmocka_unit_test(test_crio_conmon_raises_no_event),
		cmocka_unit_test(test_ident_kubelet_cgroup_root),
	};
	return cmocka_run_group_tests_name("na_layouts", tests, NULL, NULL);
}
