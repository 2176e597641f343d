/* test_promql_conformance.c -- PromQL answers of corral-aggregator against a real Prometheus 2.42.
 *
 * One fixed, seeded data set (below) is written twice: as OpenMetrics with second timestamps, backfilled
 * into a Prometheus data dir with `promtool tsdb create-blocks-from openmetrics`, and as Prometheus text
 * with millisecond timestamps, POSTed to corral's /api/v1/import/prometheus. Then a real `prometheus`
 * (Debian, 2.42) serves that dir on a loopback port next to a real corral-aggregator, and every query of
 * tests/data/promql/queries.txt runs as an instant query at INSTANT_TIMES and as a range query over each
 * of RANGES against both. The answers must agree: same status, same result type, same label sets, same
 * timestamps, and values equal to 1e-9 relative (NaN equals NaN, infinities of one sign are equal; two
 * values within 1e-12 of each other count as equal too, for float noise around zero). Vectors and
 * matrices are compared as sets of series, except that a top-level sort()/sort_desc() must also give
 * the same sequence of values. Every query of tests/data/promql/refused.txt must be refused by both with
 * 400 bad_data (or 422 execution where the line says so). `promtool query instant|range|series|labels`
 * must print the same against both, and /api/v1/labels, /label/<name>/values and /series must answer the
 * same data.
 *
 * Staleness: backfilled series carry no stale markers, and neither does the import, so a series that
 * stops (batch_last_success_timestamp_seconds, the gap in flaky_gauge) ends for both after the 5 m
 * lookback; instant times after the data's end (2h4m) check exactly that.
 *
 * CORRAL_PROMQL_ONLY=regex (POSIX extended) runs only the queries it matches, to iterate on the engine;
 * CORRAL_PROMQL_VERBOSE=1 prints every query's outcome. Failures print a per-query diff.
 *
 * The data set (T0 = 1704067200 = 2024-01-01T00:00:00Z, 481 points at 15 s = 2 h, xorshift seed fixed):
 *   container_cpu_usage_seconds_total{job,instance,namespace,pod,container}  counters, pod-1 resets
 *   container_memory_working_set_bytes{...same}                              gauges
 *   kube_pod_info{job,namespace,pod,node,created_by_kind}                    1
 *   kube_pod_container_resource_requests{job,namespace,pod,container,resource,unit} constants
 *   node_cpu_seconds_total{job,instance,cpu,mode}                             counters
 *   node_memory_MemAvailable_bytes, node_memory_MemTotal_bytes{job,instance}  gauges
 *   node_filesystem_avail_bytes{job,instance,device,mountpoint}               falling gauges
 *   http_requests_total{job,instance,handler,method,code}                     counters
 *   http_request_duration_seconds_bucket{job,instance,handler,le} + _sum, _count  classic histograms,
 *                                                                            one resets halfway
 *   up{job,instance}                                                          1, 0 for a while
 *   batch_last_success_timestamp_seconds{job,instance}                        stop at 30 m, 1 h, 1.5 h
 *   flaky_gauge{instance}                                                     gaps of 15 m and 2.5 m
 *   weird_values{kind}                                                        NaN, +Inf, -Inf, mixed
 *   temperature_celsius{room}                                                 multiples of 0.5 in [-5, 5]
 *   late_starter{instance}                                                    counter from 50 m on
 *   counter_small{instance}                                                   small counter, resets
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

#define TOKEN "promql-conformance-token"
#define T0 1704067200LL
#define STEP_S 15
#define NPTS 481
#define ABSENT (-1e300) /* no sample at this point */

static const long long INSTANT_TIMES[] = {T0 + 600, T0 + 2850, T0 + 5407, T0 + 7200, T0 + 7440};
static const struct {
	long long start, end, step;
} RANGES[] = {{T0, T0 + 7800, 60}, {T0 + 1807, T0 + 5407, 97}};

typedef struct fixture {
	char dir[256], token[300], data[300], promdir[300], url[64], prom_url[64];
	itest_proc agg, prom;
	int started;
} fixture;

/* ---- the data set ------------------------------------------------------------------------------------ */

typedef struct gen {
	cm_buf om, prom;
	uint64_t rng;
} gen;

static double rnd(gen *g)
{
	g->rng ^= g->rng >> 12, g->rng ^= g->rng << 25, g->rng ^= g->rng >> 27;
	return (double)((g->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void fmt_val(char *out, size_t cap, double v)
{
	if (isnan(v))
		snprintf(out, cap, "NaN");
	else if (isinf(v))
		snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
	else
		snprintf(out, cap, "%.6f", v);
}

/* One series: every present point to both texts, in time order. */
static void emit(gen *g, const char *series, const double *v)
{
	char val[64];
	for (int i = 0; i < NPTS; i++) {
		if (v[i] == ABSENT)
			continue;
		fmt_val(val, sizeof(val), v[i]);
		long long t = T0 + (long long)i * STEP_S;
		cm_buf_printf(&g->om, "%s %s %lld\n", series, val, t);
		cm_buf_printf(&g->prom, "%s %s %lld\n", series, val, t * 1000);
	}
}

/* A counter growing by about rate per second, reset to a small value every reset_every points (0: never). */
static void counter(gen *g, const char *series, double rate, int reset_every)
{
	double v[NPTS], c = rnd(g) * 100;
	for (int i = 0; i < NPTS; i++) {
		if (reset_every && i && i % reset_every == 0)
			c = rnd(g) * rate;
		c += rate * STEP_S * (0.5 + rnd(g));
		v[i] = c;
	}
	emit(g, series, v);
}

static void gauge(gen *g, const char *series, double mean, double amp)
{
	double v[NPTS], phase = rnd(g) * 6;
	for (int i = 0; i < NPTS; i++)
		v[i] = mean + amp * sin(i / 20.0 + phase) + amp * 0.1 * rnd(g);
	emit(g, series, v);
}

static void constant(gen *g, const char *series, double c)
{
	double v[NPTS];
	for (int i = 0; i < NPTS; i++)
		v[i] = c;
	emit(g, series, v);
}

static const char *NS[] = {"default", "kube-system", "monitoring"};

static void gen_containers(gen *g)
{
	char s[512];
	for (int n = 0; n < 3; n++)
		for (int p = 0; p < 3; p++) {
			const char *node = p == 2 ? "node-2" : "node-1";
			snprintf(s, sizeof(s), "kube_pod_info{job=\"kube-state-metrics\",namespace=\"%s\",pod=\"pod-%d\","
				 "node=\"%s\",created_by_kind=\"%s\"}", NS[n], p, node, p ? "ReplicaSet" : "DaemonSet");
			constant(g, s, 1);
			for (int c = 0; c < 2; c++) {
				const char *cont = c ? "sidecar" : "app";
				snprintf(s, sizeof(s), "container_cpu_usage_seconds_total{job=\"kubelet\",instance=\"%s\","
					 "namespace=\"%s\",pod=\"pod-%d\",container=\"%s\"}", node, NS[n], p, cont);
				counter(g, s, 0.05 + 0.4 * rnd(g), p == 1 ? 160 : 0);
				snprintf(s, sizeof(s), "container_memory_working_set_bytes{job=\"kubelet\",instance=\"%s\","
					 "namespace=\"%s\",pod=\"pod-%d\",container=\"%s\"}", node, NS[n], p, cont);
				gauge(g, s, 1e8 * (1 + n + p), 1e7);
				snprintf(s, sizeof(s), "kube_pod_container_resource_requests{job=\"kube-state-metrics\","
					 "namespace=\"%s\",pod=\"pod-%d\",container=\"%s\",resource=\"cpu\",unit=\"core\"}",
					 NS[n], p, cont);
				constant(g, s, 0.25 * (1 + c + p));
			}
		}
}

static void gen_nodes(gen *g)
{
	static const char *modes[] = {"idle", "user", "system", "iowait"};
	char s[512];
	for (int i = 1; i <= 3; i++) {
		for (int cpu = 0; cpu < 2; cpu++)
			for (int m = 0; m < 4; m++) {
				snprintf(s, sizeof(s), "node_cpu_seconds_total{job=\"node\",instance=\"node-%d\",cpu=\"%d\","
					 "mode=\"%s\"}", i, cpu, modes[m]);
				counter(g, s, m ? 0.05 * m : 0.7, 0);
			}
		snprintf(s, sizeof(s), "node_memory_MemTotal_bytes{job=\"node\",instance=\"node-%d\"}", i);
		constant(g, s, 8e9 * i);
		snprintf(s, sizeof(s), "node_memory_MemAvailable_bytes{job=\"node\",instance=\"node-%d\"}", i);
		gauge(g, s, 3e9 * i, 5e8);
		for (int d = 0; d < 2; d++) {
			double v[NPTS], a = 5e10 * (d + 1);
			for (int k = 0; k < NPTS; k++)
				v[k] = a -= 1e6 * rnd(g);
			snprintf(s, sizeof(s), "node_filesystem_avail_bytes{job=\"node\",instance=\"node-%d\","
				 "device=\"/dev/sd%c\",mountpoint=\"%s\"}", i, 'a' + d, d ? "/data" : "/");
			emit(g, s, v);
		}
	}
}

static const double LE[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, INFINITY};
#define NLE 8

/* One classic histogram: cumulative bucket counters, _sum and _count, reset at reset_at (0: never). */
static void histogram(gen *g, const char *labels, int reset_at)
{
	double b[NLE][NPTS], sum[NPTS], cnt[NPTS];
	double cb[NLE] = {0}, cs = 0, cc = 0;
	for (int i = 0; i < NPTS; i++) {
		if (reset_at && i == reset_at)
			memset(cb, 0, sizeof(cb)), cs = cc = 0;
		int n = 3 + (int)(rnd(g) * 15);
		for (int k = 0; k < n; k++) {
			double x = -log(1 - rnd(g)) * 0.4; /* exponential, mean 0.4 s */
			for (int j = 0; j < NLE; j++)
				cb[j] += x <= LE[j];
			cs += x, cc++;
		}
		for (int j = 0; j < NLE; j++)
			b[j][i] = cb[j];
		sum[i] = cs, cnt[i] = cc;
	}
	char s[512], le[32];
	for (int j = 0; j < NLE; j++) {
		if (isinf(LE[j]))
			snprintf(le, sizeof(le), "+Inf");
		else
			snprintf(le, sizeof(le), "%g", LE[j]);
		snprintf(s, sizeof(s), "http_request_duration_seconds_bucket{%s,le=\"%s\"}", labels, le);
		emit(g, s, b[j]);
	}
	snprintf(s, sizeof(s), "http_request_duration_seconds_sum{%s}", labels);
	emit(g, s, sum);
	snprintf(s, sizeof(s), "http_request_duration_seconds_count{%s}", labels);
	emit(g, s, cnt);
}

static void gen_http(gen *g)
{
	static const char *handlers[] = {"/api/v1/query", "/api/v1/series", "/metrics"};
	char s[512], l[256];
	for (int i = 0; i < 2; i++)
		for (int h = 0; h < 3; h++) {
			for (int c = 0; c < 2; c++) {
				snprintf(s, sizeof(s), "http_requests_total{job=\"api\",instance=\"api-%d:8080\",handler=\"%s\","
					 "method=\"GET\",code=\"%s\"}", i, handlers[h], c ? "500" : "200");
				counter(g, s, c ? 0.1 : 5 + h, i == 1 && h == 0 ? 200 : 0);
			}
			snprintf(l, sizeof(l), "job=\"api\",instance=\"api-%d:8080\",handler=\"%s\"", i, handlers[h]);
			histogram(g, l, i == 0 && h == 1 ? 240 : 0);
		}
}

static void gen_up_and_batch(gen *g)
{
	static const char *jobs[] = {"node", "node", "node", "api", "api", "kubelet", "kubelet"};
	static const char *insts[] = {"node-1", "node-2", "node-3", "api-0:8080", "api-1:8080", "node-1", "node-2"};
	char s[512];
	double v[NPTS];
	for (int k = 0; k < 7; k++) {
		for (int i = 0; i < NPTS; i++)
			v[i] = (k == 1 && i >= 100 && i < 140) || (k == 4 && i >= 300 && i < 310) ? 0 : 1;
		snprintf(s, sizeof(s), "up{job=\"%s\",instance=\"%s\"}", jobs[k], insts[k]);
		emit(g, s, v);
	}
	for (int k = 0; k < 4; k++) { /* three stop early: staleness after the 5 m lookback */
		for (int i = 0; i < NPTS; i++)
			v[i] = i < 120 * (k + 1) ? (double)(T0 + (i / 20) * 300) : ABSENT;
		snprintf(s, sizeof(s), "batch_last_success_timestamp_seconds{job=\"batch\",instance=\"batch-%d\"}", k);
		emit(g, s, v);
	}
}

static void gen_odd(gen *g)
{
	char s[256];
	double v[NPTS];
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < NPTS; i++)
			v[i] = (k == 0 && i >= 100 && i < 160) || (k == 1 && i >= 300 && i < 310) ? ABSENT : 10 + rnd(g);
		snprintf(s, sizeof(s), "flaky_gauge{instance=\"flaky-%d\"}", k);
		emit(g, s, v);
	}
	static const char *kinds[] = {"nan", "inf", "neginf", "mixed"};
	for (int k = 0; k < 4; k++) {
		for (int i = 0; i < NPTS; i++) {
			double x = 1 + rnd(g);
			v[i] = k == 0 ? NAN : k == 1 ? INFINITY : k == 2 ? -INFINITY : i % 17 == 0 ? NAN : i % 29 == 0 ? INFINITY : x;
		}
		snprintf(s, sizeof(s), "weird_values{kind=\"%s\"}", kinds[k]);
		emit(g, s, v);
	}
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < NPTS; i++)
			v[i] = floor(rnd(g) * 21) / 2 - 5;
		snprintf(s, sizeof(s), "temperature_celsius{room=\"%c\"}", 'a' + k);
		emit(g, s, v);
	}
	for (int k = 0; k < 2; k++) {
		double c = 0;
		for (int i = 0; i < NPTS; i++)
			v[i] = i < 200 ? ABSENT : (c += 1 + k + rnd(g));
		snprintf(s, sizeof(s), "late_starter{instance=\"late-%d\"}", k);
		emit(g, s, v);
		c = 0;
		for (int i = 0; i < NPTS; i++)
			v[i] = (i % (37 + 20 * k) == 0) ? (c = 0) : (c += rnd(g) < 0.3);
		snprintf(s, sizeof(s), "counter_small{instance=\"small-%d\"}", k);
		emit(g, s, v);
	}
}

static void gen_all(gen *g)
{
	cm_buf_init(&g->om);
	cm_buf_init(&g->prom);
	g->rng = 0x9E3779B97F4A7C15ULL;
	gen_containers(g);
	gen_nodes(g);
	gen_http(g);
	gen_up_and_batch(g);
	gen_odd(g);
	cm_buf_puts(&g->om, "# EOF\n");
}

/* ---- child processes ----------------------------------------------------------------------------------- */

/* Runs argv (argv[0] a path), stdout and stderr into out; waits at most timeout_ms. Returns the exit code,
 * or -1 when it did not start or end in time. */
static int run_capture(char *const argv[], cm_buf *out, int timeout_ms)
{
	int fds[2];
	if (pipe(fds))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1), dup2(fds[1], 2);
		close(fds[0]), close(fds[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	int64_t deadline = itest_now_ms() + timeout_ms;
	char buf[4096];
	for (;;) {
		struct pollfd p = {.fd = fds[0], .events = POLLIN};
		int left = (int)(deadline - itest_now_ms());
		if (pid < 0 || left <= 0 || poll(&p, 1, left) <= 0)
			break;
		ssize_t n = read(fds[0], buf, sizeof(buf));
		if (n <= 0)
			break;
		cm_buf_append(out, buf, (size_t)n);
	}
	close(fds[0]);
	if (pid < 0)
		return -1;
	int status = 0;
	if (itest_now_ms() >= deadline)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	cm_buf_append(out, "", 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int start_prometheus(fixture *f)
{
	char cfg[320], listen[64], path[320];
	snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", f->dir);
	itest_write_file(cfg, "global:\n  scrape_interval: 1h\n");
	int port = itest_port();
	snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", port);
	snprintf(f->prom_url, sizeof(f->prom_url), "http://127.0.0.1:%d", port);
	char cfgflag[340], pathflag[340];
	snprintf(cfgflag, sizeof(cfgflag), "--config.file=%s", cfg);
	snprintf(pathflag, sizeof(pathflag), "--storage.tsdb.path=%s", f->promdir);
	char *argv[] = {"/usr/bin/prometheus", cfgflag, pathflag, listen, "--storage.tsdb.retention.time=100y",
			"--log.level=warn", "--web.enable-lifecycle", NULL};
	if (itest_spawn(&f->prom, f->dir, "prometheus", argv))
		return -1;
	snprintf(path, sizeof(path), "%s/-/ready", f->prom_url);
	return itest_wait_http(path, 30000);
}

static int load_prometheus(fixture *f, const gen *g)
{
	char om[320];
	snprintf(om, sizeof(om), "%s/data.om", f->dir);
	FILE *fp = fopen(om, "w");
	if (!fp || fwrite(g->om.data, 1, g->om.len, fp) != g->om.len || fclose(fp))
		return -1;
	cm_buf out;
	cm_buf_init(&out);
	char *argv[] = {"/usr/bin/promtool", "tsdb", "create-blocks-from", "openmetrics", om, f->promdir, NULL};
	int rc = run_capture(argv, &out, 60000);
	if (rc)
		fprintf(stderr, "promtool backfill failed (%d): %s\n", rc, (char *)out.data);
	cm_buf_close(&out);
	return rc;
}

static int load_corral(fixture *f, const gen *g)
{
	char url[256], auth[128];
	snprintf(url, sizeof(url), "%s/api/v1/import/prometheus", f->url);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", TOKEN);
	const char *headers[] = {auth, "Content-Type: text/plain", NULL};
	cm_buf reply;
	cm_buf_init(&reply);
	long st = itest_http("POST", url, headers, g->prom.data, g->prom.len, &reply);
	if (st != 204)
		fprintf(stderr, "import answered %ld: %s\n", st, reply.data ? (char *)reply.data : "");
	cm_buf_close(&reply);
	return st == 204 ? 0 : -1;
}

static int group_setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/corral", f->dir);
	snprintf(f->promdir, sizeof(f->promdir), "%s/prom", f->dir);
	itest_write_file(f->token, TOKEN "\n");
	*state = f;
	gen g;
	gen_all(&g);
	int rc = load_prometheus(f, &g);
	rc = rc ? rc : start_prometheus(f);
	rc = rc ? rc : itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url));
	rc = rc ? rc : load_corral(f, &g);
	cm_buf_close(&g.om);
	cm_buf_close(&g.prom);
	f->started = !rc;
	if (rc && f->prom.pid)
		itest_dump_log(&f->prom);
	return rc;
}

static int group_teardown(void **state)
{
	fixture *f = *state;
	int rc = 0;
	if (f->agg.pid)
		rc = itest_aggregator_stop(&f->agg);
	itest_stop(&f->prom, SIGTERM, 10000);
	if (!rc)
		itest_rmtree(f->dir);
	else
		fprintf(stderr, "kept %s\n", f->dir);
	free(f);
	return rc ? -1 : 0;
}

/* ---- comparing answers ---------------------------------------------------------------------------------- */

typedef struct qctx {
	const fixture *f;
	regex_t only;
	int have_only, verbose;
	int run, failed;
	cm_buf diff; /* the current query's mismatch description */
} qctx;

static int values_equal(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	if (!strcmp(a, b))
		return 1;
	double x = strtod(a, NULL), y = strtod(b, NULL);
	if (isnan(x) || isnan(y))
		return isnan(x) && isnan(y);
	if (isinf(x) || isinf(y))
		return x == y;
	double d = fabs(x - y), m = fmax(fabs(x), fabs(y));
	return d <= 1e-9 * m || d <= 1e-12;
}

/* The label set as canonical text: names sorted, {a="x",b="y"}. */
static void label_key(json_t *metric, char *out, size_t cap)
{
	const char *names[64];
	size_t n = 0;
	const char *k;
	json_t *v;
	json_object_foreach(metric, k, v)
	{
		if (n < 64)
			names[n++] = k;
	}
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			const char *t = names[j];
			names[j] = names[j - 1], names[j - 1] = t;
		}
	size_t o = (size_t)snprintf(out, cap, "{");
	for (size_t i = 0; i < n && o < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s=\"%s\"", i ? "," : "", names[i],
				      json_string_value(json_object_get(metric, names[i])));
	if (o < cap)
		snprintf(out + o, cap - o, "}");
}

typedef struct series_ref {
	char key[1024];
	json_t *s;
} series_ref;

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const series_ref *)a)->key, ((const series_ref *)b)->key);
}

/* Points: [[t, "v"], ...] for a matrix, or one [t, "v"] for a vector element. */
static int points_equal(qctx *q, const char *key, json_t *pa, json_t *pb, int matrix)
{
	size_t na = matrix ? json_array_size(pa) : 1, nb = matrix ? json_array_size(pb) : 1;
	if (na != nb) {
		cm_buf_printf(&q->diff, "  %s: %zu points from Prometheus, %zu from corral\n", key, na, nb);
		return 0;
	}
	for (size_t i = 0; i < na; i++) {
		json_t *x = matrix ? json_array_get(pa, i) : pa, *y = matrix ? json_array_get(pb, i) : pb;
		double tx = json_number_value(json_array_get(x, 0)), ty = json_number_value(json_array_get(y, 0));
		const char *vx = json_string_value(json_array_get(x, 1)), *vy = json_string_value(json_array_get(y, 1));
		if (fabs(tx - ty) > 1e-6 || !values_equal(vx, vy)) {
			cm_buf_printf(&q->diff, "  %s point %zu: Prometheus [%.3f, %s], corral [%.3f, %s]\n", key, i, tx,
				      vx ? vx : "?", ty, vy ? vy : "?");
			return 0;
		}
	}
	return 1;
}

static series_ref *sorted_refs(json_t *result, size_t *n, int keep_order)
{
	*n = json_array_size(result);
	series_ref *r = calloc(*n + 1, sizeof(*r));
	size_t i;
	json_t *s;
	json_array_foreach(result, i, s)
	{
		label_key(json_object_get(s, "metric"), r[i].key, sizeof(r[i].key));
		r[i].s = s;
	}
	if (!keep_order)
		qsort(r, *n, sizeof(*r), cmp_ref);
	return r;
}

/* For a top-level sort(): the values in answer order must agree (ties may order labels differently). */
static int order_equal(qctx *q, json_t *ra, json_t *rb)
{
	size_t n;
	series_ref *a = sorted_refs(ra, &n, 1), *b = sorted_refs(rb, &n, 1);
	int ok = 1;
	for (size_t i = 0; i < n && ok; i++) {
		const char *x = json_string_value(json_array_get(json_object_get(a[i].s, "value"), 1));
		const char *y = json_string_value(json_array_get(json_object_get(b[i].s, "value"), 1));
		if (!values_equal(x, y)) {
			cm_buf_printf(&q->diff, "  sort order differs at %zu: Prometheus %s, corral %s\n", i, x, y);
			ok = 0;
		}
	}
	free(a), free(b);
	return ok;
}

static int series_sets_equal(qctx *q, json_t *ra, json_t *rb, int matrix)
{
	size_t na, nb;
	series_ref *a = sorted_refs(ra, &na, 0), *b = sorted_refs(rb, &nb, 0);
	int ok = 1;
	for (size_t i = 0, j = 0; i < na || j < nb;) {
		int c = i == na ? 1 : j == nb ? -1 : strcmp(a[i].key, b[j].key);
		if (c) {
			cm_buf_printf(&q->diff, "  only from %s: %s\n", c < 0 ? "Prometheus" : "corral",
				      c < 0 ? a[i].key : b[j].key);
			ok = 0;
			c < 0 ? i++ : j++;
			continue;
		}
		const char *field = matrix ? "values" : "value";
		if (!points_equal(q, a[i].key, json_object_get(a[i].s, field), json_object_get(b[j].s, field), matrix))
			ok = 0;
		i++, j++;
	}
	free(a), free(b);
	return ok;
}

static int data_equal(qctx *q, json_t *da, json_t *db, int sorted)
{
	const char *ta = json_string_value(json_object_get(da, "resultType"));
	const char *tb = json_string_value(json_object_get(db, "resultType"));
	if (!ta || !tb || strcmp(ta, tb)) {
		cm_buf_printf(&q->diff, "  result type: Prometheus %s, corral %s\n", ta ? ta : "?", tb ? tb : "?");
		return 0;
	}
	json_t *ra = json_object_get(da, "result"), *rb = json_object_get(db, "result");
	if (!strcmp(ta, "scalar") || !strcmp(ta, "string"))
		return points_equal(q, ta, ra, rb, 0);
	int matrix = !strcmp(ta, "matrix");
	int ok = series_sets_equal(q, ra, rb, matrix);
	return ok && sorted && !matrix ? order_equal(q, ra, rb) : ok;
}

/* GET <base>/api/v1/<path>?<args>; the JSON answer (NULL when unreadable), status in *st. */
static json_t *api_get(const char *base, const char *path, const char *args, long *st)
{
	char url[8400];
	snprintf(url, sizeof(url), "%s/api/v1/%s?%s", base, path, args);
	return itest_get_json(url, st);
}

static void describe_answer(cm_buf *d, const char *who, json_t *j, long st)
{
	const char *s = json_string_value(json_object_get(j, "status"));
	cm_buf_printf(d, "  %s: HTTP %ld %s", who, st, s ? s : "(unreadable)");
	if (s && strcmp(s, "success"))
		cm_buf_printf(d, " %s: %s", json_string_value(json_object_get(j, "errorType")),
			      json_string_value(json_object_get(j, "error")));
	cm_buf_puts(d, "\n");
}

/* One request to both servers; 1 when the answers agree. */
static int compare_one(qctx *q, const char *path, const char *args, int sorted)
{
	long sa = 0, sb = 0;
	json_t *a = api_get(q->f->prom_url, path, args, &sa), *b = api_get(q->f->url, path, args, &sb);
	const char *xa = json_string_value(json_object_get(a, "status"));
	const char *xb = json_string_value(json_object_get(b, "status"));
	int ok;
	if (!xa || !xb || strcmp(xa, "success") || strcmp(xb, "success")) {
		ok = 0;
		describe_answer(&q->diff, "Prometheus", a, sa);
		describe_answer(&q->diff, "corral", b, sb);
	} else {
		ok = data_equal(q, json_object_get(a, "data"), json_object_get(b, "data"), sorted);
	}
	if (!ok)
		cm_buf_printf(&q->diff, "  (request: %s?%s)\n", path, args);
	json_decref(a);
	json_decref(b);
	return ok;
}

static int top_level_sort(const char *query)
{
	while (*query == ' ')
		query++;
	return !strncmp(query, "sort(", 5) || !strncmp(query, "sort_desc(", 10);
}

/* Every instant time and range against both; the diff keeps the first differing request only. */
static int check_query(qctx *q, const char *query)
{
	char enc[4096], args[8192];
	itest_urlencode(enc, sizeof(enc), query);
	int sorted = top_level_sort(query), bad = 0, n = 0;
	size_t first_len = 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(INSTANT_TIMES) + CM_ARRAY_LEN(RANGES); i++, n++) {
		if (i < CM_ARRAY_LEN(INSTANT_TIMES)) {
			snprintf(args, sizeof(args), "query=%s&time=%lld", enc, INSTANT_TIMES[i]);
		} else {
			size_t r = i - CM_ARRAY_LEN(INSTANT_TIMES);
			snprintf(args, sizeof(args), "query=%s&start=%lld&end=%lld&step=%lld", enc, RANGES[r].start,
				 RANGES[r].end, RANGES[r].step);
		}
		if (!compare_one(q, i < CM_ARRAY_LEN(INSTANT_TIMES) ? "query" : "query_range", args, sorted) &&
		    !bad++)
			first_len = q->diff.len;
	}
	if (bad > 1) {
		q->diff.len = first_len;
		cm_buf_printf(&q->diff, "  (%d of %d requests differ)\n", bad, n);
	}
	return !bad;
}

/* A refused.txt line: a query both must refuse with 400 bad_data, or, after "execution: ", with
 * 422 execution (what Prometheus answers for errors found while evaluating). */
static int refused_both(qctx *q, const char *query)
{
	char enc[4096], url[8192];
	int exec = !strncmp(query, "execution: ", 11);
	const char *want = exec ? "execution" : "bad_data";
	long want_st = exec ? 422 : 400;
	itest_urlencode(enc, sizeof(enc), query + (exec ? 11 : 0));
	int ok = 1;
	const char *bases[] = {q->f->prom_url, q->f->url}, *who[] = {"Prometheus", "corral"};
	for (int k = 0; k < 2; k++) {
		long st = 0;
		snprintf(url, sizeof(url), "%s/api/v1/query?query=%s&time=%lld", bases[k], enc, T0 + 3600);
		json_t *j = itest_get_json(url, &st);
		const char *et = json_string_value(json_object_get(j, "errorType"));
		if (st != want_st || !et || strcmp(et, want)) {
			describe_answer(&q->diff, who[k], j, st);
			ok = 0;
		}
		json_decref(j);
	}
	return ok;
}

/* Runs check on every query of tests/data/promql/<file> that CORRAL_PROMQL_ONLY selects. */
static void run_list(qctx *q, const char *file, int (*check)(qctx *q, const char *query))
{
	char path[512], line[2048];
	const char *src = getenv("CORRAL_SRC");
	snprintf(path, sizeof(path), "%s/tests/data/promql/%s", src ? src : ".", file);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp)) {
		line[strcspn(line, "\n")] = 0;
		if (!line[0] || line[0] == '#' || (q->have_only && regexec(&q->only, line, 0, NULL, 0)))
			continue;
		q->diff.len = 0;
		q->run++;
		int ok = check(q, line);
		if (!ok) {
			q->failed++;
			fprintf(stderr, "MISMATCH %s\n%s", line, q->diff.data ? (char *)q->diff.data : "");
		} else if (q->verbose) {
			fprintf(stderr, "ok       %s\n", line);
		}
	}
	fclose(fp);
}

static void qctx_init(qctx *q, const fixture *f)
{
	memset(q, 0, sizeof(*q));
	q->f = f;
	cm_buf_init(&q->diff);
	const char *only = getenv("CORRAL_PROMQL_ONLY"), *verbose = getenv("CORRAL_PROMQL_VERBOSE");
	q->verbose = verbose && *verbose && strcmp(verbose, "0");
	if (only && *only) {
		assert_int_equal(regcomp(&q->only, only, REG_EXTENDED | REG_NOSUB), 0);
		q->have_only = 1;
	}
}

static void qctx_close(qctx *q)
{
	if (q->have_only)
		regfree(&q->only);
	cm_buf_close(&q->diff);
}

static void test_queries(void **state)
{
	qctx q;
	qctx_init(&q, *state);
	int64_t t = itest_now_ms();
	run_list(&q, "queries.txt", check_query);
	fprintf(stderr, "promql conformance: %d of %d queries agree with Prometheus 2.42 (%lld ms)\n", q.run - q.failed,
		q.run, (long long)(itest_now_ms() - t));
	int failed = q.failed;
	qctx_close(&q);
	assert_int_equal(failed, 0);
}

static void test_refused(void **state)
{
	qctx q;
	qctx_init(&q, *state);
	run_list(&q, "refused.txt", refused_both);
	fprintf(stderr, "promql refusals: %d of %d queries refused alike by both\n", q.run - q.failed, q.run);
	int failed = q.failed;
	qctx_close(&q);
	assert_int_equal(failed, 0);
}

/* ---- promtool query against both ------------------------------------------------------------------------ */

static int cmp_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* promtool's output as records (a line, or a range series' "labels =>" line with its points), sorted:
 * the order of series in an answer is not defined. */
static void sort_records(cm_buf *b)
{
	char *s = b->data ? strdup((char *)b->data) : strdup(""), *recs[4096];
	size_t n = 0;
	for (char *p = s; *p && n < 4096;) {
		char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
		int header = end - p >= 2 && !strncmp(end - 2, "=>", 2);
		if (header) { /* the points follow until the next header */
			char *q = nl;
			while (q && q[1] && q[1] != '{')
				q = strchr(q + 1, '\n');
			end = q ? q : p + strlen(p);
		}
		recs[n++] = p;
		p = *end ? end + 1 : end;
		*end = 0;
	}
	qsort(recs, n, sizeof(*recs), cmp_line);
	b->len = 0;
	for (size_t i = 0; i < n; i++)
		cm_buf_printf(b, "%s\n", recs[i]);
	cm_buf_append(b, "", 0);
	free(s);
}

/* Runs promtool with args, the server URL put where "@" stands, against both; 1 when outputs agree. */
static int promtool_same(const fixture *f, const char *const *args, int must_succeed)
{
	cm_buf out[2];
	int rc[2];
	const char *bases[] = {f->prom_url, f->url};
	for (int k = 0; k < 2; k++) {
		char *argv[24];
		size_t n = 0;
		argv[n++] = "/usr/bin/promtool";
		for (size_t i = 0; args[i] && n < 22; i++)
			argv[n++] = (char *)(strcmp(args[i], "@") ? args[i] : bases[k]);
		argv[n] = NULL;
		cm_buf_init(&out[k]);
		rc[k] = run_capture(argv, &out[k], 30000);
		sort_records(&out[k]);
	}
	/* a refusal must fail in both; the wording of the error may differ */
	int ok = must_succeed ? !rc[0] && !rc[1] && !strcmp((char *)out[0].data, (char *)out[1].data)
			      : rc[0] && rc[1];
	if (!ok) {
		fprintf(stderr, "promtool");
		for (size_t i = 0; args[i]; i++)
			fprintf(stderr, " %s", args[i]);
		fprintf(stderr, "\n-- Prometheus (exit %d):\n%s-- corral (exit %d):\n%s", rc[0], (char *)out[0].data, rc[1],
			(char *)out[1].data);
	}
	cm_buf_close(&out[0]);
	cm_buf_close(&out[1]);
	return ok;
}

static void test_promtool(void **state)
{
	const fixture *f = *state;
	static const char *const cmds[][12] = {
		{"query", "instant", "--time=1704070800", "@", "up", NULL},
		{"query", "instant", "--time=1704069000", "@", "container_cpu_usage_seconds_total{namespace=\"default\"}",
		 NULL},
		{"query", "instant", "--time=1704070800", "@", "1+1", NULL},
		{"query", "instant", "--time=1704070800", "@", "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
		 NULL},
		{"query", "range", "--start=1704067200", "--end=1704070800", "--step=5m", "@", "temperature_celsius", NULL},
		{"query", "range", "--start=1704067200", "--end=1704074400", "--step=10m", "@",
		 "rate(http_requests_total{code=\"500\"}[5m])", NULL},
		{"query", "range", "--start=1704067200", "--end=1704074400", "--step=1m", "@",
		 "batch_last_success_timestamp_seconds", NULL},
		{"query", "series", "--match=up", "--start=1704067200", "--end=1704074400", "@", NULL},
		{"query", "series", "--match=http_requests_total{code=\"500\"}", "--match=flaky_gauge", "--start=1704067200",
		 "--end=1704074400", "@", NULL},
		{"query", "labels", "--start=1704067200", "--end=1704074400", "@", "job", NULL},
		{"query", "labels", "--start=1704067200", "--end=1704074400", "@", "__name__", NULL},
		{"query", "labels", "--match=up", "--start=1704067200", "--end=1704074400", "@", "instance", NULL},
		{"query", "instant", "--time=1704070800", "@", "sum(", NULL},
	};
	int failed = 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(cmds); i++)
		failed += !promtool_same(f, cmds[i], i + 1 < CM_ARRAY_LEN(cmds));
	assert_int_equal(failed, 0);
}

/* ---- labels, label values and series: the JSON answers of both ------------------------------------------ */

static char *sorted_data(json_t *j)
{
	json_t *d = json_object_get(j, "data");
	if (json_is_array(d)) { /* series order is not defined: compare as sets */
		size_t n = json_array_size(d);
		char **items = calloc(n + 1, sizeof(*items));
		cm_buf b;
		cm_buf_init(&b);
		for (size_t i = 0; i < n; i++)
			items[i] = json_dumps(json_array_get(d, i), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		qsort(items, n, sizeof(*items), cmp_line);
		for (size_t i = 0; i < n; i++) {
			cm_buf_printf(&b, "%s%s", i ? "," : "[", items[i]);
			free(items[i]);
		}
		cm_buf_puts(&b, n ? "]" : "[]");
		free(items);
		size_t len;
		return (char *)cm_buf_take(&b, &len);
	}
	return json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static void test_label_apis(void **state)
{
	const fixture *f = *state;
	static const char *const reqs[][2] = {
		{"labels", ""},
		{"labels", "start=1704067200&end=1704074400"},
		{"labels", "match[]=http_requests_total&match[]=up"},
		{"labels", "match[]=%7B__name__%3D~%22kube_.%2A%22%7D"},
		{"label/__name__/values", ""},
		{"label/job/values", "start=1704067200&end=1704074400"},
		{"label/le/values", "match[]=http_request_duration_seconds_bucket"},
		{"label/namespace/values", "match[]=kube_pod_info&match[]=container_memory_working_set_bytes"},
		{"label/nonexistent/values", ""},
		{"series", "match[]=up"},
		{"series", "match[]=%7Bjob%3D%22api%22%2Chandler%3D~%22.%2Aquery%22%7D&match[]=flaky_gauge"},
		{"series", "match[]=batch_last_success_timestamp_seconds&start=1704067200&end=1704074400"},
	};
	int failed = 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(reqs); i++) {
		long sa = 0, sb = 0;
		json_t *a = api_get(f->prom_url, reqs[i][0], reqs[i][1], &sa), *b = api_get(f->url, reqs[i][0], reqs[i][1], &sb);
		char *da = a ? sorted_data(a) : NULL, *db = b ? sorted_data(b) : NULL;
		if (sa != 200 || sb != 200 || !da || !db || strcmp(da, db)) {
			fprintf(stderr, "MISMATCH /api/v1/%s?%s\n  Prometheus (%ld): %.2000s\n  corral (%ld): %.2000s\n", reqs[i][0],
				reqs[i][1], sa, da ? da : "?", sb, db ? db : "?");
			failed++;
		}
		free(da), free(db);
		json_decref(a), json_decref(b);
	}
	assert_int_equal(failed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_promtool),
		cmocka_unit_test(test_label_apis),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_queries),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
