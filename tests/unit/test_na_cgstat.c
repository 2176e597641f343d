/* test_na_cgstat.c -- every cAdvisor family of the cgroup collector, value by value, and path identity.
 *
 * The fully populated containers of the fixture trees (tests/data/cgroup-v2: kubepods systemd driver,
 * cri-containerd scope; tests/data/cgroup-v1: kubepods cgroupfs driver) must produce exactly the series
 * listed here, each with its hand-computed value (the arithmetic is in the comments). Their pods get
 * network series from tests/data/proc/4242/net/dev through the containers' cgroup.procs. Identity
 * tests cover every path layout na_ident.c knows: kubepods (systemd and cgroupfs drivers, guaranteed,
 * burstable, besteffort), docker, containerd, cri-o and systemd services.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "na_test.h"

#define MiB (1024.0 * 1024)
#define NOW_MS 1700000000000LL

#define V1_POD "/kubepods/burstable/pod6f1c2a3b-0000-4000-8000-000000000001"
#define V1_CTR V1_POD "/a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define V2_POD "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a3b_0000_4000_8000_000000000001.slice"
#define V2_CTR V2_POD "/cri-containerd-c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0.scope"

#define K(m, id) m "{id=\"" id "\"}"
#define KL(m, id, l) m "{id=\"" id "\"," l "}"

static const want v2_ctr[] = {
	{K("container_cpu_usage_seconds_total", V2_CTR), 125},       /* usage_usec 125000000 / 1e6 */
	{K("container_cpu_user_seconds_total", V2_CTR), 75},
	{K("container_cpu_system_seconds_total", V2_CTR), 50},
	{K("container_cpu_cfs_periods_total", V2_CTR), 1000},
	{K("container_cpu_cfs_throttled_periods_total", V2_CTR), 50},
	{K("container_cpu_cfs_throttled_seconds_total", V2_CTR), 2.5}, /* throttled_usec 2500000 */
	{K("container_memory_usage_bytes", V2_CTR), 768 * MiB},
	{K("container_memory_working_set_bytes", V2_CTR), 512 * MiB},  /* 768 MiB - inactive_file 256 MiB */
	{K("container_memory_rss", V2_CTR), 448 * MiB},                 /* anon */
	{K("container_memory_cache", V2_CTR), 320 * MiB},               /* file */
	{K("container_memory_mapped_file", V2_CTR), 16 * MiB},          /* file_mapped */
	{KL("container_memory_failures_total", V2_CTR, "failure_type=\"pgfault\",scope=\"container\""), 200000},
	{KL("container_memory_failures_total", V2_CTR, "failure_type=\"pgmajfault\",scope=\"container\""), 12},
	{KL("container_memory_failures_total", V2_CTR, "failure_type=\"pgfault\",scope=\"hierarchy\""), 200000},
	{KL("container_memory_failures_total", V2_CTR, "failure_type=\"pgmajfault\",scope=\"hierarchy\""), 12},
	{K("container_memory_swap", V2_CTR), 4096},
	{K("container_memory_max_usage_bytes", V2_CTR), 900000000},    /* memory.peak */
	{K("container_memory_failcnt", V2_CTR), 7},                     /* memory.events max */
	{K("container_oom_events_total", V2_CTR), 2},                   /* memory.events oom_kill */
	{K("container_pressure_cpu_waiting_seconds_total", V2_CTR), 1.5},
	{K("container_pressure_cpu_stalled_seconds_total", V2_CTR), 0.5},
	{K("container_pressure_memory_waiting_seconds_total", V2_CTR), 0.25},
	{K("container_pressure_memory_stalled_seconds_total", V2_CTR), 0.125},
	{K("container_pressure_io_waiting_seconds_total", V2_CTR), 3},
	{K("container_pressure_io_stalled_seconds_total", V2_CTR), 2},
	{KL("container_fs_reads_bytes_total", V2_CTR, "device=\"/dev/vda\""), 1048576}, /* 254:0 in partitions */
	{KL("container_fs_writes_bytes_total", V2_CTR, "device=\"/dev/vda\""), 2097152},
	{KL("container_fs_reads_total", V2_CTR, "device=\"/dev/vda\""), 100},
	{KL("container_fs_writes_total", V2_CTR, "device=\"/dev/vda\""), 200},
	{KL("container_fs_reads_bytes_total", V2_CTR, "device=\"8:16\""), 512},        /* not in partitions */
	{KL("container_fs_writes_bytes_total", V2_CTR, "device=\"8:16\""), 0},
	{KL("container_fs_reads_total", V2_CTR, "device=\"8:16\""), 1},
	{KL("container_fs_writes_total", V2_CTR, "device=\"8:16\""), 0},
	{K("container_threads", V2_CTR), 12},
	{K("container_threads_max", V2_CTR), 0},                        /* "max" */
	{K("container_spec_cpu_shares", V2_CTR), 2046},                 /* 2 + (79 - 1) * 262142 / 9999 */
	{K("container_spec_cpu_quota", V2_CTR), 50000},
	{K("container_spec_cpu_period", V2_CTR), 100000},
	{K("container_spec_memory_limit_bytes", V2_CTR), 1024 * MiB},
	{K("container_spec_memory_reservation_limit_bytes", V2_CTR), 256 * MiB}, /* memory.low */
	{K("container_spec_memory_swap_limit_bytes", V2_CTR), 0},       /* "max" */
	{KL("container_hugetlb_usage_bytes", V2_CTR, "pagesize=\"2MB\""), 4 * MiB},
	{KL("container_hugetlb_failcnt", V2_CTR, "pagesize=\"2MB\""), 3},
	{K("container_start_time_seconds", V2_CTR), -1},                /* the directory's ctime */
	{K("container_last_seen", V2_CTR), NOW_MS / 1000.0},
};

static const want v1_ctr[] = {
	{K("container_cpu_usage_seconds_total", V1_CTR), 25},        /* cpuacct.usage 25e9 ns */
	{K("container_cpu_user_seconds_total", V1_CTR), -2},          /* cpuacct.stat user 1500 ticks / USER_HZ */
	{K("container_cpu_system_seconds_total", V1_CTR), -3},        /* system 1000 ticks / USER_HZ */
	{K("container_cpu_cfs_periods_total", V1_CTR), 400},
	{K("container_cpu_cfs_throttled_periods_total", V1_CTR), 20},
	{K("container_cpu_cfs_throttled_seconds_total", V1_CTR), 3}, /* throttled_time 3e9 ns */
	{K("container_memory_usage_bytes", V1_CTR), 768 * MiB},
	{K("container_memory_working_set_bytes", V1_CTR), 512 * MiB}, /* - total_inactive_file 256 MiB */
	{K("container_memory_rss", V1_CTR), 448 * MiB},                /* total_rss */
	{K("container_memory_cache", V1_CTR), 320 * MiB},              /* total_cache */
	{K("container_memory_mapped_file", V1_CTR), 16 * MiB},         /* total_mapped_file */
	{K("container_memory_swap", V1_CTR), 8192},                    /* total_swap */
	{KL("container_memory_failures_total", V1_CTR, "failure_type=\"pgfault\",scope=\"container\""), 150000},
	{KL("container_memory_failures_total", V1_CTR, "failure_type=\"pgmajfault\",scope=\"container\""), 5},
	{KL("container_memory_failures_total", V1_CTR, "failure_type=\"pgfault\",scope=\"hierarchy\""), 200000},
	{KL("container_memory_failures_total", V1_CTR, "failure_type=\"pgmajfault\",scope=\"hierarchy\""), 9},
	{K("container_memory_max_usage_bytes", V1_CTR), 900000000},
	{K("container_memory_failcnt", V1_CTR), 4},
	{K("container_oom_events_total", V1_CTR), 1},                  /* memory.oom_control oom_kill */
	{KL("container_fs_reads_bytes_total", V1_CTR, "device=\"/dev/vda\""), 1048576},
	{KL("container_fs_writes_bytes_total", V1_CTR, "device=\"/dev/vda\""), 2097152},
	{KL("container_fs_reads_total", V1_CTR, "device=\"/dev/vda\""), 100},
	{KL("container_fs_writes_total", V1_CTR, "device=\"/dev/vda\""), 200},
	{K("container_threads", V1_CTR), 7},
	{K("container_threads_max", V1_CTR), 1024},
	{K("container_spec_cpu_shares", V1_CTR), 512},
	{K("container_spec_cpu_quota", V1_CTR), 25000},
	{K("container_spec_cpu_period", V1_CTR), 100000},
	{K("container_spec_memory_limit_bytes", V1_CTR), 1024 * MiB},
	{K("container_spec_memory_reservation_limit_bytes", V1_CTR), 0}, /* 9223372036854771712 = unlimited */
	{K("container_spec_memory_swap_limit_bytes", V1_CTR), 2048 * MiB},
	{K("container_start_time_seconds", V1_CTR), -1},
	{K("container_last_seen", V1_CTR), NOW_MS / 1000.0},
};

/* tests/data/proc/4242/net/dev, eth0 only ("lo" is skipped) */
#define NET(id)                                                                                            \
	{KL("container_network_receive_bytes_total", id, "interface=\"eth0\""), 1048576},                  \
	{KL("container_network_receive_packets_total", id, "interface=\"eth0\""), 2000},               \
	{KL("container_network_receive_errors_total", id, "interface=\"eth0\""), 1},                   \
	{KL("container_network_receive_packets_dropped_total", id, "interface=\"eth0\""), 2},          \
	{KL("container_network_transmit_bytes_total", id, "interface=\"eth0\""), 524288},              \
	{KL("container_network_transmit_packets_total", id, "interface=\"eth0\""), 1000},              \
	{KL("container_network_transmit_errors_total", id, "interface=\"eth0\""), 3},                  \
	{KL("container_network_transmit_packets_dropped_total", id, "interface=\"eth0\""), 4}

static const want v2_pod_net[] = {NET(V2_POD)};
static const want v1_pod_net[] = {NET(V1_POD)};

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

/* Every wanted series once with its value (negative = computed here), and nothing else for that id. */
static void check_id(const sink *s, const char *id, const want *w, size_t nw, const char *ctr_dir, int metrics_net)
{
	long hz = sysconf(_SC_CLK_TCK);
	struct stat st;
	assert_int_equal(stat(ctr_dir, &st), 0);
	assert_int_equal(s->dups, 0);
	for (size_t i = 0; i < nw; i++) {
		const sink_rec *r = sink_find(s, w[i].key);
		double v = w[i].v;
		if (v == -1)
			v = (double)st.st_ctim.tv_sec + (double)st.st_ctim.tv_nsec * 1e-9;
		else if (v == -2)
			v = 1500.0 / (double)hz;
		else if (v == -3)
			v = 1000.0 / (double)hz;
		if (!r) {
			sink_dump(s);
			fail_msg("%s missing", w[i].key);
		}
		if (fabs(r->v - v) > 1e-9 * (fabs(v) > 1.0 ? fabs(v) : 1.0))
			fail_msg("%s = %.17g, want %.17g", w[i].key, r->v, v);
	}
	if (count_id(s, id) != nw) {
		sink_dump(s);
		fail_msg("%zu series for %s, want %zu (net %d)", count_id(s, id), id, nw, metrics_net);
	}
}

static void collect(const char *rel, int version, sink *s)
{
	char root[PATH_MAX], proc[PATH_MAX];
	na__cgroups *cg = NULL;
	cm_err err = {{0}};
	data_path(root, rel);
	data_path(proc, "proc");
	na__cgroups_opts o = {.root = root, .proc_root = proc};
	if (na__cgroups_open(&o, &cg, &err))
		fail_msg("open: %s", err.msg);
	assert_int_equal(na__cgroups_version(cg), version);
	na_emit e = sink_emit(s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, NOW_MS, NOW_MS), 0);
	na__cgroups_close(cg);
}

static void test_v2_container_every_family(void **state)
{
	(void)state;
	sink s = {0};
	char dir[PATH_MAX];
	collect("cgroup-v2", 2, &s);
	data_path(dir, "cgroup-v2" V2_CTR);
	check_id(&s, V2_CTR, v2_ctr, CM_ARRAY_LEN(v2_ctr), dir, 0);
	data_path(dir, "cgroup-v2" V2_POD);
	const sink_rec *r = sink_find(&s, v2_pod_net[0].key);
	assert_non_null(r);
	for (size_t i = 0; i < CM_ARRAY_LEN(v2_pod_net); i++) {
		r = sink_find(&s, v2_pod_net[i].key);
		assert_non_null(r);
		assert_true(r->v == v2_pod_net[i].v);
	}
	sink_clear(&s);
}

static void test_v1_container_every_family(void **state)
{
	(void)state;
	sink s = {0};
	char dir[PATH_MAX];
	collect("cgroup-v1", 1, &s);
	data_path(dir, "cgroup-v1/cpuacct" V1_CTR);
	check_id(&s, V1_CTR, v1_ctr, CM_ARRAY_LEN(v1_ctr), dir, 0);
	for (size_t i = 0; i < CM_ARRAY_LEN(v1_pod_net); i++) {
		const sink_rec *r = sink_find(&s, v1_pod_net[i].key);
		if (!r)
			fail_msg("%s missing", v1_pod_net[i].key);
		assert_true(r->v == v1_pod_net[i].v);
	}
	sink_clear(&s);
}

/* ---- identity --------------------------------------------------------------------------------------- */

#define UID "6f1c2a3b-0000-4000-8000-000000000001"
#define UIDU "6f1c2a3b_0000_4000_8000_000000000001"
#define CID "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"

static void expect_ident(const char *id, int kind, const char *runtime, const char *qos, const char *uid,
			 const char *cid, const char *unit)
{
	na__ident o;
	na__ident_parse(id, &o);
	if (o.kind != kind || strcmp(o.runtime, runtime) || strcmp(o.qos, qos) || strcmp(o.pod_uid, uid) ||
	    strcmp(o.container_id, cid) || strcmp(o.unit, unit))
		fail_msg("%s: kind %d runtime '%s' qos '%s' uid '%s' cid '%s' unit '%s'", id, o.kind, o.runtime, o.qos,
			 o.pod_uid, o.container_id, o.unit);
}

static void test_ident_layouts(void **state)
{
	(void)state;
	/* kubepods, cgroupfs driver */
	expect_ident("/kubepods/burstable/pod" UID, NA_KIND_POD, "kubepods", "burstable", UID, "", "");
	expect_ident("/kubepods/burstable/pod" UID "/" CID, NA_KIND_CONTAINER, "containerd", "burstable", UID, CID, "");
	expect_ident("/kubepods/pod" UID "/" CID, NA_KIND_CONTAINER, "containerd", "guaranteed", UID, CID, "");
	expect_ident("/kubepods/besteffort/pod" UID "/crio-" CID, NA_KIND_CONTAINER, "crio", "besteffort", UID, CID, "");
	expect_ident("/kubepods", NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/kubepods/burstable", NA_KIND_RAW, "", "", "", "", "");
	/* kubepods, systemd driver */
	expect_ident("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UIDU ".slice", NA_KIND_POD,
		     "kubepods", "burstable", UID, "", "");
	expect_ident("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" UIDU ".slice/crio-" CID
		     ".scope", NA_KIND_CONTAINER, "crio", "besteffort", UID, CID, "");
	expect_ident("/kubepods.slice/kubepods-pod" UIDU ".slice/cri-containerd-" CID ".scope", NA_KIND_CONTAINER,
		     "containerd", "guaranteed", UID, CID, "");
	expect_ident("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UIDU ".slice/docker-" CID
		     ".scope", NA_KIND_CONTAINER, "docker", "burstable", UID, CID, "");
	expect_ident("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" UIDU ".slice/crio-conmon-" CID
		     ".scope", NA_KIND_RAW, "kubepods", "burstable", UID, "", "");
	/* outside Kubernetes */
	expect_ident("/docker/" CID, NA_KIND_CONTAINER, "docker", "", "", CID, "");
	expect_ident("/system.slice/docker-" CID ".scope", NA_KIND_CONTAINER, "docker", "", "", CID, "");
	expect_ident("/default/" CID, NA_KIND_CONTAINER, "containerd", "", "", CID, "");
	expect_ident("/system.slice/crio-" CID ".scope", NA_KIND_CONTAINER, "crio", "", "", CID, "");
	expect_ident("/system.slice/cron.service", NA_KIND_SERVICE, "systemd", "", "", "", "cron.service");
	expect_ident("/", NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/user.slice", NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/docker/" CID "x", NA_KIND_RAW, "", "", "", "", "");
	expect_ident("/kubepods/burstable/podnot-a-uid", NA_KIND_RAW, "", "", "", "", "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_container_every_family),
		cmocka_unit_test(test_v1_container_every_family),
		cmocka_unit_test(test_ident_layouts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
