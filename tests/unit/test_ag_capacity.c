/* test_ag_capacity.c -- capacity reports on a synthetic history with answers computed by hand.
 *
 * A tsdb in a temp dir gets one day (2024-01-01, 5 min buckets) of two nodes written through the ts API;
 * the inventory goes through ag_state.c into a state.db as an agent's batch would. Then the four
 * handlers answer requests built here, and every figure is compared with the value worked out from
 * the written distributions (comments show the arithmetic):
 *   n1  8 cores, 32 GiB; pods web-...-abcde and web-...-fghij (app=web), container nginx, requests
 *       1 core / 1 GiB, limits 2 / 2 GiB. CPU: A 0.2 cores in the first 144 buckets then 0.6, B 0.3
 *       throughout (its counter resets at bucket 100). Memory: A 500 MiB; B 300 MiB then 700 MiB.
 *   n2  4 cores, 16 GiB; pod db-0 (container pg, requests 500m / 4 Gi, no limits): 0.1 cores for 262
 *       buckets, then 0.5 for the last 26, 1 GiB, 2 OOM kills. A docker container "batch" with no pod
 *       spec: cpu.shares 512, quota 150000/100000, memory limit 512 Mi; 0.25 cores, 100 MiB.
 * pg's last 26 buckets are 9 % of the samples but 12 % of the decayed weight, so its p90 is 0.5
 * only because of the 24 h half-life (plain percentiles give 0.1). Reservations 500m and 1 Gi.
 * The same day read back from the 5 min tier (downsample on, after compaction) answers the same.
 * Also: the quantity parser, the fit counts against a brute-force packing, CSV, and the 400s.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ag_int.h"

#define END_MS   1704153600000LL /* 2024-01-02T00:00:00Z */
#define STEP_MS  300000LL
#define NB       288
#define NO_RESET (-2)
#define START_MS (END_MS - NB * STEP_MS)
#define MiB      1048576.0
#define GiB      1073741824.0

typedef struct fx {
	char dir[128], ts_dir[160], state[160];
	ts_db *db;
	ag__capacity *cap;
} fx;

/* ---- writing the history -------------------------------------------------------------------------- */

static void append(ts_db *db, cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	cm_series se = {l, nl, (cm_sample *)s, n};
	cm_err err = {{0}};
	if (ts_append(db, &se, 1, &err))
		fail_msg("append: %s", err.msg);
}

/* A counter whose rate in bucket b is rate(b): two samples per bucket, the last 1 s before its end,
 * starting one bucket before the window. reset_at >= 0: the process restarts just after that bucket's
 * last sample (the counter starts again from 0). */
static void write_counter(ts_db *db, cm_label *l, size_t nl, double (*rate)(int b), int reset_at)
{
	static cm_sample s[2 * (NB + 1)];
	size_t n = 0;
	double c = 1000, prev_t = (double)(START_MS - 1000) / 1000;
	for (int b = -1; b < NB; b++) {
		int64_t t0 = START_MS + (int64_t)b * STEP_MS;
		int64_t ts[2] = {t0 + 150000, t0 + STEP_MS - 1000};
		for (int k = 0; k < 2; k++) {
			double r = b < 0 ? 0 : rate(b);
			if (b >= 0 || k == 1) {
				c += r * ((double)ts[k] / 1000 - prev_t);
				prev_t = (double)ts[k] / 1000;
				s[n++] = (cm_sample){ts[k], c};
			}
		}
		if (b == reset_at)
			c = 0;
	}
	append(db, l, nl, s, n);
}

static void write_gauge(ts_db *db, cm_label *l, size_t nl, double (*val)(int b))
{
	static cm_sample s[2 * NB];
	size_t n = 0;
	for (int b = 0; b < NB; b++) {
		int64_t t0 = START_MS + (int64_t)b * STEP_MS;
		s[n++] = (cm_sample){t0 + 60000, val(b) * 0.9}; /* the peak is what counts */
		s[n++] = (cm_sample){t0 + 200000, val(b)};
	}
	append(db, l, nl, s, n);
}

static void write_const(ts_db *db, cm_label *l, size_t nl, double v)
{
	cm_sample s[2] = {{START_MS + 1000, v}, {END_MS - 60000, v}};
	append(db, l, nl, s, 2);
}

static double cpu_a(int b) { return b < 144 ? 0.2 : 0.6; }
static double cpu_b(int b) { (void)b; return 0.3; }
static double cpu_pg(int b) { return b < NB - 26 ? 0.1 : 0.5; }
static double cpu_batch(int b) { (void)b; return 0.25; }
static double mem_a(int b) { (void)b; return 500 * MiB; }
static double mem_b(int b) { return b < 144 ? 300 * MiB : 700 * MiB; }
static double mem_pg(int b) { (void)b; return GiB; }
static double mem_batch(int b) { (void)b; return 100 * MiB; }
static double oom_pg(int b) { return b == 10 || b == 200 ? 1.0 / 300 : 0; } /* one kill in each */
static double thr_a(int b) { (void)b; return 1.0 / 60; }                     /* 5 per bucket */

#define L(...) (cm_label[]){__VA_ARGS__}, sizeof((cm_label[]){__VA_ARGS__}) / sizeof(cm_label)

static void write_history(ts_db *db)
{
	const char *pa = "web-5d8f7c9b4-abcde", *pb = "web-5d8f7c9b4-fghij";
	write_const(db, L({"__name__", "machine_cpu_cores"}, {"node", "n1"}), 8);
	write_const(db, L({"__name__", "machine_memory_bytes"}, {"node", "n1"}), 32 * GiB);
	write_const(db, L({"__name__", "machine_cpu_cores"}, {"node", "n2"}), 4);
	write_const(db, L({"__name__", "machine_memory_bytes"}, {"node", "n2"}), 16 * GiB);
#define CTR(metric, node, pod, name) L({"__name__", metric}, {"container", name}, {"namespace", "shop"}, \
				       {"node", node}, {"pod", pod})
	write_counter(db, CTR("container_cpu_usage_seconds_total", "n1", pa, "nginx"), cpu_a, NO_RESET);
	write_counter(db, CTR("container_cpu_usage_seconds_total", "n1", pb, "nginx"), cpu_b, 100);
	write_counter(db, CTR("container_cpu_usage_seconds_total", "n2", "db-0", "pg"), cpu_pg, NO_RESET);
	write_gauge(db, CTR("container_memory_working_set_bytes", "n1", pa, "nginx"), mem_a);
	write_gauge(db, CTR("container_memory_working_set_bytes", "n1", pb, "nginx"), mem_b);
	write_gauge(db, CTR("container_memory_working_set_bytes", "n2", "db-0", "pg"), mem_pg);
	write_counter(db, CTR("container_oom_events_total", "n2", "db-0", "pg"), oom_pg, NO_RESET);
	write_counter(db, CTR("container_cpu_cfs_throttled_periods_total", "n1", pa, "nginx"), thr_a, NO_RESET);
	/* the pod-level cgroup (no container label) must not count twice */
	write_counter(db, L({"__name__", "container_cpu_usage_seconds_total"}, {"id", "/kubepods/pod1"},
			    {"namespace", "shop"}, {"node", "n1"}, {"pod", pa}), cpu_a, NO_RESET);
#define DOCKER(metric) L({"__name__", metric}, {"id", "/docker/b1"}, {"name", "batch"}, {"node", "n2"})
	write_counter(db, DOCKER("container_cpu_usage_seconds_total"), cpu_batch, NO_RESET);
	write_gauge(db, DOCKER("container_memory_working_set_bytes"), mem_batch);
	write_const(db, DOCKER("container_spec_cpu_shares"), 512);
	write_const(db, DOCKER("container_spec_cpu_quota"), 150000);
	write_const(db, DOCKER("container_spec_cpu_period"), 100000);
	write_const(db, DOCKER("container_spec_memory_limit_bytes"), 512 * MiB);
}

static void write_inventory(const char *state_db)
{
	ag__state *st;
	cm_err err = {{0}};
	assert_int_equal(ag__state_create(state_db, NULL, 0, &st, &err), 0);
	cm_container nginx = {"nginx", "", "nginx:1", "", "1", "1Gi", "2", "2Gi"};
	cm_container pg = {"pg", "", "postgres", "", "500m", "4Gi", "", ""};
	cm_label app[] = {{"app", "web"}};
	cm_pod n1pods[] = {{"web-5d8f7c9b4-abcde", "shop", "u1", "Running", 1, app, 1, NULL, 0, &nginx, 1},
			   {"web-5d8f7c9b4-fghij", "shop", "u2", "Running", 1, app, 1, NULL, 0, &nginx, 1},
			   {"old-job-x1y2z", "shop", "u9", "Succeeded", 0, NULL, 0, NULL, 0, &pg, 1}};
	cm_pod n2pods[] = {{"db-0", "shop", "u3", "Running", 1, NULL, 0, NULL, 0, &pg, 1}};
	cm_inventory i1 = {END_MS, n1pods, 3, NULL, 0}, i2 = {END_MS, n2pods, 1, NULL, 0};
	cm_batch b1 = {.node = "n1", .boot_id = "b", .seq = 1, .inventory = &i1};
	cm_batch b2 = {.node = "n2", .boot_id = "b", .seq = 1, .inventory = &i2};
	ag__state_record(st, &b1);
	ag__state_record(st, &b2);
	ag__state_destroy(st); /* drains the writer */
}

static int open_fx(fx *f, int downsample)
{
	ts_opts o = {.no_fsync = 1, .manual_cut = 1, .downsample = downsample, .ooo_window_ms = -1};
	ts_open_report rep;
	cm_err err = {{0}};
	if (ts_open(f->ts_dir, &o, &f->db, &rep, &err))
		fail_msg("ts_open: %s", err.msg);
	ag__capacity_opts co = {.reserved_cpu = 0.5, .reserved_mem = GiB, .max_window_ms = 8 * 86400000LL};
	assert_int_equal(ag__capacity_create(f->db, f->state, &co, &f->cap, &err), 0);
	return 0;
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/corral-cap-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->ts_dir, sizeof(f->ts_dir), "%s/tsdb", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state.db", f->dir);
	write_inventory(f->state);
	open_fx(f, 0);
	write_history(f->db);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ag__capacity_destroy(f->cap);
	ts_close(f->db);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int rc = system(cmd);
	free(f);
	return rc;
}

/* ---- asking ------------------------------------------------------------------------------------------- */

typedef void (*handler)(ag__capacity *, const ag__req *, ag__resp *);

/* Calls h with the query string qs; returns the status, the body in *body (caller frees). */
static long ask(fx *f, handler h, const char *qs, char **body)
{
	cm_arena a;
	cm_arena_init(&a, 0);
	ag__req req = {.method = "GET", .url = "/", .arena = &a};
	assert_int_equal(ag__parse_form(&req, qs, strlen(qs)), 0);
	ag__resp resp = {.status = 200};
	cm_buf_init(&resp.body);
	h(f->cap, &req, &resp);
	cm_buf_append(&resp.body, "", 1);
	*body = strdup((char *)resp.body.data);
	cm_buf_close(&resp.body);
	cm_arena_close(&a);
	return resp.status;
}

static json_t *ask_json(fx *f, handler h, const char *qs)
{
	char *body;
	long st = ask(f, h, qs, &body);
	if (st != 200)
		fail_msg("status %ld: %s", st, body);
	json_error_t je;
	json_t *j = json_loads(body, 0, &je);
	if (!j)
		fail_msg("bad JSON (%s): %s", je.text, body);
	free(body);
	json_t *d = json_incref(json_object_get(j, "data"));
	json_decref(j);
	return d;
}

static double num(json_t *o, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *save, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save))
		cur = json_object_get(cur, k);
	if (!json_is_number(cur))
		fail_msg("%s is not a number", path);
	return json_number_value(cur);
}

static int near(double got, double want)
{
	if (fabs(got - want) <= 1e-6 * fmax(1, fabs(want)))
		return 1;
	print_message("got %.17g, want %.17g\n", got, want);
	return 0;
}

#define NEAR(got, want) assert_true(near((got), (want)))

static json_t *by_key(json_t *arr, const char *key, const char *v, const char *key2, const char *v2)
{
	json_t *x;
	size_t i;
	json_array_foreach(arr, i, x) if (!strcmp(json_string_value(json_object_get(x, key)), v) &&
					  (!key2 || !strcmp(json_string_value(json_object_get(x, key2)), v2))) return x;
	fail_msg("no %s=%s", key, v);
	return NULL;
}

/* ---- answers -------------------------------------------------------------------------------------------- */

#define Q "time=1704153600&window=24h"

static void check_nodes(fx *f)
{
	json_t *d = ask_json(f, ag__capacity_nodes, Q);
	assert_int_equal((int)num(d, "step_seconds"), 300);
	json_t *nodes = json_object_get(d, "nodes");
	assert_int_equal(json_array_size(nodes), 2);
	json_t *n1 = by_key(nodes, "node", "n1", NULL, NULL), *n2 = by_key(nodes, "node", "n2", NULL, NULL);
	assert_int_equal((int)num(n1, "pods"), 2);       /* the Succeeded pod does not count */
	NEAR(num(n1, "cpu.capacity"), 8);
	NEAR(num(n1, "cpu.allocatable"), 7.5);            /* 8 - 500m */
	NEAR(num(n1, "cpu.requests"), 2);
	NEAR(num(n1, "cpu.limits"), 4);
	NEAR(num(n1, "cpu.used_p50"), 0.5);               /* 144 buckets of 0.2 + 0.3, rank 144 */
	NEAR(num(n1, "cpu.used_p95"), 0.9);               /* rank 274 of 288: 0.6 + 0.3 */
	NEAR(num(n1, "cpu.used_max"), 0.9);
	NEAR(num(n1, "cpu.used_now"), 0.9);
	NEAR(num(n1, "cpu.reclaimable"), 1.1);            /* 2 - 0.9 */
	NEAR(num(n1, "cpu.free_by_requests"), 5.5);
	NEAR(num(n1, "cpu.free_by_usage"), 6.6);
	NEAR(num(n1, "memory.allocatable"), 31 * GiB);
	NEAR(num(n1, "memory.requests"), 2 * GiB);
	NEAR(num(n1, "memory.used_p50"), 800 * MiB);      /* 500 + 300 */
	NEAR(num(n1, "memory.used_p95"), 1200 * MiB);     /* 500 + 700 */
	NEAR(num(n1, "memory.reclaimable"), 2 * GiB - 1200 * MiB);
	assert_int_equal((int)num(n2, "pods"), 2);       /* db-0 and the docker container */
	NEAR(num(n2, "cpu.requests"), 1.0);               /* 500m + 512 shares */
	NEAR(num(n2, "cpu.limits"), 1.5);                 /* quota / period */
	NEAR(num(n2, "cpu.used_p50"), 0.35);
	NEAR(num(n2, "cpu.used_p95"), 0.75);              /* 26 buckets of 0.75 hold ranks 263..288 */
	NEAR(num(n2, "memory.requests"), 4 * GiB);
	NEAR(num(n2, "memory.limits"), 512 * MiB);
	NEAR(num(n2, "memory.used_max"), GiB + 100 * MiB);
	NEAR(num(n2, "memory.reclaimable"), 3 * GiB - 100 * MiB);
	json_decref(d);
}

/* The VPA histogram, worked independently: bucket i starts at first * (1.05^i - 1) / 0.05; a
 * percentile answers the start of the bucket after the one holding it. */
static double vpa_end(double first, double v)
{
	int i = (int)floor(log(v * 0.05 / first + 1) / log(1.05));
	return first * (pow(1.05, i + 1) - 1) / 0.05;
}

static void check_workloads(fx *f)
{
	json_t *d = ask_json(f, ag__capacity_workloads, Q), *ws = json_object_get(d, "workloads");
	assert_int_equal(json_array_size(ws), 3);
	json_t *web = by_key(ws, "workload", "web", "container", "nginx");
	assert_int_equal((int)num(web, "pods"), 2);
	/* decayed weights: S1 (first half) < S/2, so the 0.2 samples (S1) plus the 0.3 ones (S) reach
	 * half of 2S but not 0.9 of it: p50 in 0.3's bucket, p90 and p95 in 0.6's */
	NEAR(num(web, "cpu.usage_p50"), vpa_end(0.01, 0.3));
	NEAR(num(web, "cpu.usage_p90"), vpa_end(0.01, 0.6));
	NEAR(num(web, "cpu.recommended_request"), vpa_end(0.01, 0.6) * 1.15);
	NEAR(num(web, "cpu.recommended_limit"), vpa_end(0.01, 0.6) * 1.15 * 2);   /* limit/request = 2 */
	NEAR(num(web, "cpu.over_provisioned"), 1 - vpa_end(0.01, 0.6) * 1.15);
	NEAR(num(web, "cpu.usage_max"), 0.6);
	NEAR(num(web, "memory.usage_p50"), vpa_end(1e7, 500 * MiB));
	NEAR(num(web, "memory.recommended_request"), vpa_end(1e7, 700 * MiB) * 1.15);
	NEAR(num(web, "throttled_periods"), 5 * NB);
	json_t *pg = by_key(ws, "workload", "db", "container", "pg"); /* db-0: a StatefulSet's ordinal */
	NEAR(num(pg, "cpu.usage_p90"), vpa_end(0.01, 0.5)); /* 0.1 without the decay */
	NEAR(num(pg, "cpu.recommended_request"), vpa_end(0.01, 0.5) * 1.15);
	NEAR(num(pg, "cpu.recommended_lower"), vpa_end(0.01, 0.1) * 1.15);
	assert_true(json_is_null(json_object_get(json_object_get(pg, "cpu"), "recommended_limit")));
	NEAR(num(pg, "memory.over_provisioned"), 4 * GiB - vpa_end(1e7, GiB) * 1.15);
	NEAR(num(pg, "oom_kills"), 2);
	json_t *batch = by_key(ws, "container", "batch", NULL, NULL);
	assert_string_equal(json_string_value(json_object_get(batch, "requests_from")), "cgroup");
	NEAR(num(batch, "cpu.request"), 0.5);
	NEAR(num(batch, "cpu.limit"), 1.5);
	NEAR(num(batch, "cpu.usage_p90"), vpa_end(0.01, 0.25));
	json_decref(d);
}

/* Places pods of (cpu, mem) one at a time on a node while both still fit: the brute-force count. */
static int pack(double free_cpu, double free_mem, double cpu, double mem)
{
	int n = 0;
	while (n < 100000 && free_cpu >= cpu - 1e-9 && free_mem >= mem - 1e-9)
		free_cpu -= cpu, free_mem -= mem, n++;
	return n;
}

static void check_fit(fx *f)
{
	json_t *d = ask_json(f, ag__capacity_fit, Q "&cpu=500m&memory=512Mi&replicas=30");
	json_t *nodes = json_object_get(d, "nodes");
	json_t *n1 = by_key(nodes, "node", "n1", NULL, NULL), *n2 = by_key(nodes, "node", "n2", NULL, NULL);
	int r1 = pack(7.5 - 2, 31 * GiB - 2 * GiB, 0.5, 512 * MiB), r2 = pack(3.5 - 1, 15 * GiB - 4 * GiB, 0.5, 512 * MiB);
	int u1 = pack(7.5 - 0.9, 31 * GiB - 1200 * MiB, 0.5, 512 * MiB),
	    u2 = pack(3.5 - 0.75, 15 * GiB - GiB - 100 * MiB, 0.5, 512 * MiB);
	assert_int_equal(r1, 11), assert_int_equal(r2, 5), assert_int_equal(u1, 13), assert_int_equal(u2, 5);
	assert_int_equal((int)num(n1, "by_requests"), r1);
	assert_int_equal((int)num(n2, "by_requests"), r2);
	assert_int_equal((int)num(n1, "by_usage"), u1);
	assert_int_equal((int)num(n2, "by_usage"), u2);
	assert_int_equal((int)num(d, "total.by_requests"), r1 + r2);
	assert_true(json_is_false(json_object_get(json_object_get(d, "fits"), "by_requests"))); /* 16 < 30 */
	json_decref(d);
	d = ask_json(f, ag__capacity_fit, Q "&memory=3Gi");
	n2 = by_key(json_object_get(d, "nodes"), "node", "n2", NULL, NULL);
	assert_int_equal((int)num(n2, "by_requests"), pack(1e9, 11 * GiB, 0, 3 * GiB)); /* 3 */
	json_decref(d);
}

static void check_summary(fx *f)
{
	json_t *d = ask_json(f, ag__capacity_summary, Q), *c = json_object_get(d, "cluster");
	assert_int_equal((int)num(c, "nodes"), 2);
	assert_int_equal((int)num(c, "pods"), 4);
	NEAR(num(c, "cpu.allocatable"), 11);
	NEAR(num(c, "cpu.requests"), 3);
	NEAR(num(c, "cpu.used_now"), 1.65);                            /* 0.9 + 0.75 */
	NEAR(num(c, "cpu.used_avg"), (144 * 0.5 + 144 * 0.9 + 262 * 0.35 + 26 * 0.75) / 288.0);
	NEAR(num(c, "cpu.utilization_now"), 1.65 / 11);
	NEAR(num(c, "cpu.requested_ratio"), 3.0 / 11);
	NEAR(num(c, "memory.allocatable"), 46 * GiB);
	json_t *top = json_object_get(d, "top_overprovisioned");
	assert_true(json_array_size(top) >= 1);
	/* score = over-provisioned CPU / allocatable CPU + memory / memory, over all pods:
	 * web 2 x (1 - 0.7167) / 11 + 2 x (1 GiB - 866 MB) / 46 GiB = 0.0599,
	 * db (0.5 - 0.5878) / 11 + (4 GiB - 1239 MB) / 46 GiB = 0.0539 */
	assert_string_equal(json_string_value(json_object_get(json_array_get(top, 0), "workload")), "web");
	assert_string_equal(json_string_value(json_object_get(json_array_get(top, 1), "workload")), "db");
	json_decref(d);
}

static void test_synthetic_raw(void **state)
{
	fx *f = *state;
	check_nodes(f);
	check_workloads(f);
	check_fit(f);
	check_summary(f);
	/* windows from 4.8 h get whole 5 min buckets (the tier's); shorter ones window / 288, at least 5 s */
	json_t *d = ask_json(f, ag__capacity_nodes, "time=1704153600&window=23h");
	assert_int_equal((int)num(d, "step_seconds"), 300);
	assert_int_equal((int)num(d, "window_seconds"), 23 * 3600);
	json_decref(d);
	d = ask_json(f, ag__capacity_nodes, "time=1704153600&window=1h");
	assert_int_equal((int)num(d, "step_seconds"), 13);
	json_decref(d);
	d = ask_json(f, ag__capacity_nodes, "time=1704153600&window=10s");
	assert_int_equal((int)num(d, "step_seconds"), 5);
	json_decref(d);
	/* ten days after the inventory was last heard of, its nodes are gone */
	char qs[64];
	snprintf(qs, sizeof(qs), "time=%lld&window=24h", (long long)time(NULL) + 10 * 86400);
	d = ask_json(f, ag__capacity_nodes, qs);
	assert_int_equal(json_array_size(json_object_get(d, "nodes")), 0);
	json_decref(d);
}

/* The same day from the 5 min tier: compaction writes it once the day's blocks are cut. */
static void test_synthetic_tier(void **state)
{
	fx *f = *state;
	ag__capacity_destroy(f->cap);
	ts_close(f->db);
	open_fx(f, 1);
	cm_err err = {{0}};
	assert_int_equal(ts_flush(f->db, &err), 0);
	ts_stats st;
	for (int i = 0; i < 200; i++) { /* compaction may run on the storage thread */
		ts_get_stats(f->db, &st);
		if (st.tier_blocks > 0)
			break;
		struct timespec ts = {0, 50000000};
		nanosleep(&ts, NULL);
	}
	assert_true(st.tier_blocks > 0);
	check_nodes(f);
	check_workloads(f);
	check_fit(f);
}

static void test_csv(void **state)
{
	fx *f = *state;
	char *body;
	assert_int_equal(ask(f, ag__capacity_nodes, Q "&format=csv", &body), 200);
	assert_true(!strncmp(body, "node,pods,cpu_capacity,cpu_allocatable,", 39));
	char *row = strstr(body, "\nn1,2,8,7.5,2,4,");
	assert_non_null(row);
	size_t commas = 0;
	for (char *p = row + 1; *p && *p != '\n'; p++)
		commas += *p == ',';
	assert_int_equal(commas, 1 + 2 * 11);
	free(body);
	const handler hs[] = {ag__capacity_workloads, ag__capacity_summary};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(ask(f, hs[i], Q "&format=csv", &body), 200);
		assert_null(strstr(body, "null"));
		free(body);
	}
	assert_int_equal(ask(f, ag__capacity_fit, Q "&format=csv&cpu=1", &body), 200);
	assert_non_null(strstr(body, "\ntotal,7,"));  /* 5 + 2 by requests */
	free(body);
}

static void expect_400(fx *f, handler h, const char *qs, const char *words)
{
	char *body;
	long st = ask(f, h, qs, &body);
	if (st != 400 || !strstr(body, words))
		fail_msg("%s: %ld %s (wanted 400 with \"%s\")", qs, st, body, words);
	free(body);
}

static void test_bad_parameters(void **state)
{
	fx *f = *state;
	expect_400(f, ag__capacity_nodes, "window=abc", "window");
	expect_400(f, ag__capacity_nodes, "window=-1h", "window");
	expect_400(f, ag__capacity_workloads, "window=30d", "beyond the retention");
	expect_400(f, ag__capacity_summary, "time=yesterday", "time");
	expect_400(f, ag__capacity_nodes, "format=xml", "format");
	expect_400(f, ag__capacity_fit, "cpu=500x", "unknown unit");
	expect_400(f, ag__capacity_fit, "cpu=1&memory=-512Mi", "negative");
	expect_400(f, ag__capacity_fit, "memory=1Gi&replicas=0", "replicas");
	expect_400(f, ag__capacity_fit, "", "shape");
	expect_400(f, ag__capacity_fit, "cpu=0", "empty");
}

static void expect_q(const char *s, double want)
{
	double v = -12345;
	cm_err err = {{0}};
	if (ag__quantity_parse(s, &v, &err))
		fail_msg("%s: %s", s, err.msg);
	if (fabs(v - want) > 1e-12 * fmax(1, fabs(want)))
		fail_msg("%s = %.17g, want %.17g", s, v, want);
}

static void test_quantity(void **state)
{
	(void)state;
	expect_q("500m", 0.5), expect_q("1", 1), expect_q("1.5", 1.5), expect_q(".5", 0.5), expect_q("2.", 2);
	expect_q("512Mi", 512 * MiB), expect_q("1Gi", GiB), expect_q("1Ki", 1024), expect_q("2Ti", 2 * 1099511627776.0);
	expect_q("1k", 1000), expect_q("1M", 1e6), expect_q("3G", 3e9), expect_q("1E", 1e18);
	expect_q("1Ei", 1152921504606846976.0);
	expect_q("100n", 1e-7), expect_q("250u", 2.5e-4), expect_q("1e3", 1000), expect_q("1E3", 1000),
	expect_q("12e-1", 1.2), expect_q("+1", 1), expect_q("-1", -1), expect_q("0", 0), expect_q("-0", 0);
	const char *bad[] = {"", "m", "1x", "1 m", "1mi", "1KI", "1e", "1e1000", "1e+", "--1", "1..2", "Mi", "1e1Mi",
			     "1.2.3", "0x10", "99999999999999999999999999999999999999999999999999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		double v = 7;
		cm_err err = {{0}};
		if (!ag__quantity_parse(bad[i], &v, &err))
			fail_msg("\"%s\" parsed as %g", bad[i], v);
		assert_true(err.msg[0] != 0);
		assert_true(v == 7);
	}
	double v;
	cm_err err = {{0}};
	assert_int_not_equal(ag__quantity_size("cpu", "-1", &v, &err), 0);
	assert_non_null(strstr(err.msg, "negative"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_quantity),
	    cmocka_unit_test_setup_teardown(test_synthetic_raw, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_synthetic_tier, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_csv, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_parameters, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
