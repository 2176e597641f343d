/* test_promql.c -- the PromQL parser and evaluator on a small tsdb written here, against answers
 * computed by hand from Prometheus 2.42's definitions (extrapolatedRate, bucketQuantile, vector
 * matching, subquery step alignment, staleness and the 5 m lookback).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

static ts_db *db;
static char dir[64];

static void add(const char *name, const char *l1, const char *v1, const char *l2, const char *v2,
		const cm_sample *s, size_t n)
{
	cm_label labels[3] = {{"__name__", name}, {l1, v1}, {l2, v2}};
	cm_series se = {labels, l2 ? 3 : l1 ? 2 : 1, (cm_sample *)s, n};
	cm_err err;
	assert_int_equal(ts_append(db, &se, 1, &err), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_promql.XXXXXX");
	assert_non_null(mkdtemp(dir));
	ts_opts o = {.no_fsync = 1, .manual_cut = 1};
	cm_err err;
	assert_int_equal(ts_open(dir, &o, &db, NULL, &err), 0);
	/* a counter with a reset: 5 10 2 6 8 at 0, 60, ... 240 s */
	cm_sample c[] = {{0, 5}, {60000, 10}, {120000, 2}, {180000, 6}, {240000, 8}};
	add("http_total", "job", "a", NULL, NULL, c, 5);
	/* a gauge 0..10 at every minute */
	cm_sample g[11];
	for (int i = 0; i <= 10; i++)
		g[i] = (cm_sample){i * 60000, i};
	add("g", "job", "a", NULL, NULL, g, 11);
	/* a series that goes stale at 90 s */
	double stale;
	uint64_t bits = 0x7ff0000000000002ULL;
	memcpy(&stale, &bits, 8);
	cm_sample st[] = {{0, 1}, {60000, 2}, {90000, stale}};
	add("st", "job", "a", NULL, NULL, st, 3);
	/* a histogram at 600 s */
	const char *le[] = {"0.1", "0.5", "1", "+Inf"};
	double cnt[] = {10, 30, 40, 50};
	for (int i = 0; i < 4; i++) {
		cm_sample h = {600000, cnt[i]};
		add("lat_bucket", "job", "a", "le", le[i], &h, 1);
	}
	/* vector matching */
	cm_sample a1 = {600000, 10}, a2 = {600000, 20}, b1 = {600000, 2}, b2 = {600000, 4};
	add("va", "x", "1", "y", "p", &a1, 1);
	add("va", "x", "2", "y", "q", &a2, 1);
	add("vb", "x", "1", NULL, NULL, &b1, 1);
	add("vb", "x", "2", NULL, NULL, &b2, 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ts_close(db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static const ag__pql_opts opts = {300000, 10000, 1000000, 60000};

/* Runs q and returns the JSON data (malloc'd) or the error message prefixed with "ERR:". */
static char *run(const char *q, int64_t start, int64_t end, int64_t step, int instant)
{
	cm_arena a;
	cm_arena_init(&a, 1 << 22);
	ag__pquery pq;
	cm_err err = {{0}};
	cm_buf b;
	cm_buf_init(&b);
	int kind = 0, rc = ag__pql_parse(q, &a, &pq, &err);
	if (!rc) {
		rc = ag__pql_exec(db, &pq, start, end, step, instant, &opts, &b, &kind, &err);
		ag__pql_close(&pq);
	}
	char *out;
	if (rc) {
		out = malloc(strlen(err.msg) + 8);
		sprintf(out, "ERR:%s", err.msg);
	} else {
		cm_buf_append(&b, "", 1);
		out = strdup((char *)b.data);
	}
	cm_buf_close(&b);
	cm_arena_close(&a);
	return out;
}

static void expect(const char *q, int64_t t_s, const char *want)
{
	char *got = run(q, t_s * 1000, t_s * 1000, 1, 1);
	if (strcmp(got, want))
		fail_msg("%s @%lld:\n got  %s\n want %s", q, (long long)t_s, got, want);
	free(got);
}

static void expect_range(const char *q, int64_t s, int64_t e, int64_t step, const char *want)
{
	char *got = run(q, s * 1000, e * 1000, step * 1000, 0);
	if (strcmp(got, want))
		fail_msg("%s [%lld..%lld/%lld]:\n got  %s\n want %s", q, (long long)s, (long long)e, (long long)step, got,
			 want);
	free(got);
}

/* The single value of an instant query. */
static double value(const char *q, int64_t t_s)
{
	char *got = run(q, t_s * 1000, t_s * 1000, 1, 1);
	const char *p = strstr(got, "\"value\":[");
	p = p ? p : strstr(got, "\"result\":[");
	if (!p || strncmp(got, "ERR", 3) == 0)
		fail_msg("%s: %s", q, got);
	p = strchr(p, ',');
	double v = strtod(p + 2, NULL);
	free(got);
	return v;
}

static void expect_err(const char *q, const char *words)
{
	char *got = run(q, 600000, 600000, 1, 1);
	if (strncmp(got, "ERR:", 4) || !strstr(got, words))
		fail_msg("%s: got '%s', wanted an error with '%s'", q, got, words);
	free(got);
}

static void test_precedence(void **state)
{
	(void)state;
	assert_true(value("1 + 2 * 3", 0) == 7);
	assert_true(value("2 ^ 3 ^ 2", 0) == 512);
	assert_true(value("-2 ^ 2", 0) == -4);
	assert_true(value("(1 + 2) * 3", 0) == 9);
	assert_true(value("1 - 2 - 3", 0) == -4);
	assert_true(value("2 * 3 % 4", 0) == 2);
	assert_true(value("1 < bool 2 + 1", 0) == 1);
	assert_true(value("8 / 2 / 2", 0) == 2);
	assert_true(value("0x10 + 1e1 + .5 # comment", 0) == 26.5);
	expect("\"a\\tb\"", 1, "{\"resultType\":\"string\",\"result\":[1,\"a\\u0009b\"]}");
	expect("1 > bool Inf", 1, "{\"resultType\":\"scalar\",\"result\":[1,\"0\"]}");
}

static void test_parse_errors(void **state)
{
	(void)state;
	expect_err("sum(g", "parse error at char 6");
	expect_err("rate(g)", "expected type range vector in call to function \"rate\", got instant vector");
	expect_err("1 < 2", "comparisons between scalars must use BOOL modifier");
	expect_err("g and 1", "set operator \"and\" not allowed in binary scalar expression");
	expect_err("nosuch(g)", "unknown function with name \"nosuch\"");
	expect_err("g[5m][5m]", "ranges only allowed for vector selectors");
	expect_err("sum(g) offset 5m", "offset modifier must be preceded");
	expect_err("topk(g)", "wrong number of arguments");
	expect_err("g[5x]", "bad duration syntax");
	expect_err("label_join(g, \"a\")", "expected at least 3 argument(s)");
	expect_err("{a=\"\"}", "at least one non-empty matcher");
	char deep[1200];
	memset(deep, '(', 600);
	strcpy(deep + 600, "1");
	memset(deep + 601, ')', 500);
	deep[1101] = 0;
	expect_err(deep, "nested deeper than");
	/* a long chain of operators is as deep a tree as nesting: refused, not a stack overflow */
	char chain[40000];
	size_t n = 0;
	for (int i = 0; i < 10000; i++)
		n += (size_t)sprintf(chain + n, "1+");
	strcpy(chain + n, "1");
	expect_err(chain, "nested deeper than");
	expect_err("g[300y]", "duration out of range");
	expect_err("g @ 1e300", "timestamp out of bounds");
	assert_true(value("label_join(vector(1), \"d\", \"-\", \"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", "
			  "\"h\", \"i\", \"j\")", 0) == 1);
}

static void test_rate_extrapolation(void **state)
{
	(void)state;
	/* window [0, 300]: increase 3 + reset 10 = 13 over 240 s sampled, 0 s to start, 60 s to the end
	 * (under 1.1 x the 60 s average: extrapolated): 13 * 300/240 */
	assert_true(fabs(value("increase(http_total[5m])", 300) - 16.25) < 1e-12);
	assert_true(fabs(value("rate(http_total[5m])", 300) - 16.25 / 300) < 1e-12);
	/* window [100, 400]: 2 6 8, 20 s to start, 160 s to the end (over the threshold: half an interval) */
	assert_true(fabs(value("increase(http_total[5m])", 400) - 6 * 170.0 / 120) < 1e-12);
	assert_true(fabs(value("delta(http_total[5m])", 400) - 6 * 170.0 / 120) < 1e-12);
	assert_true(value("resets(http_total[5m])", 300) == 1);
	assert_true(value("changes(http_total[5m])", 300) == 4);
	assert_true(fabs(value("irate(http_total[5m])", 300) - 2.0 / 60) < 1e-12);
	assert_true(value("idelta(http_total[5m])", 300) == 2);
	assert_true(fabs(value("deriv(g[10m])", 600) - 1.0 / 60) < 1e-12);
	assert_true(fabs(value("predict_linear(g[10m], 60)", 600) - 11) < 1e-9);
	expect("rate(http_total[1m] offset 10m)", 300, "{\"resultType\":\"vector\",\"result\":[]}");
	/* the same two windows in one range query: streamed, resets tracked across steps */
	expect_range("increase(http_total[5m])", 300, 400, 100, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":"
		     "{\"job\":\"a\"},\"values\":[[300,\"16.25\"],[400,\"8.5\"]]}]}");
	expect_range("resets(http_total[5m])", 300, 400, 100, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":"
		     "{\"job\":\"a\"},\"values\":[[300,\"1\"],[400,\"0\"]]}]}");
	/* rate drops the metric name, last_over_time keeps it */
	expect("rate(http_total[5m] @ 300)", 7, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"job\":\"a\"},"
	       "\"value\":[7,\"0.05416666666666667\"]}]}");
	expect("last_over_time(g[1m])", 60, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":\"g\","
	       "\"job\":\"a\"},\"value\":[60,\"1\"]}]}");
}

static void test_over_time_and_math(void **state)
{
	(void)state;
	assert_true(value("sum_over_time(g[2m])", 600) == 8 + 9 + 10);
	assert_true(value("avg_over_time(g[2m])", 600) == 9);
	assert_true(value("count_over_time(g[10m])", 600) == 11);
	assert_true(value("quantile_over_time(0.5, g[10m])", 600) == 5);
	assert_true(fabs(value("stddev_over_time(g[2m])", 600) - sqrt(2.0 / 3)) < 1e-12);
	assert_true(value("clamp(g, 2, 3)", 600) == 3);
	assert_true(value("round(g / 3, 0.5)", 600) == 3.5);
	assert_true(value("scalar(g) * 2", 600) == 20);
	assert_true(value("time()", 600) == 600);
	assert_true(value("timestamp(g)", 630) == 600);
	assert_true(value("day_of_week(vector(86400 * 3))", 0) == 0); /* 1970-01-04 was a Sunday */
	assert_true(value("days_in_month(vector(86400 * 40))", 0) == 28);
	assert_true(value("count(absent(nope{job=\"z\"}))", 0) == 1);
	expect("absent(nope{job=\"z\",a=~\"x\"})", 5, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"job\":"
	       "\"z\"},\"value\":[5,\"1\"]}]}");
	expect("label_replace(g, \"dst\", \"v-$1\", \"job\", \"(.*)\")", 600,
	       "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":\"g\",\"dst\":\"v-a\",\"job\":\"a\"},"
	       "\"value\":[600,\"10\"]}]}");
	expect("label_join(g, \"j\", \"-\", \"job\", \"__name__\")", 600,
	       "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":\"g\",\"j\":\"a-g\",\"job\":\"a\"},"
	       "\"value\":[600,\"10\"]}]}");
}

static void test_histogram_quantile(void **state)
{
	(void)state;
	/* rank 25 lands in (0.1, 0.5] holding 20 of it, 15 in: 0.1 + 0.4 * 15/20 */
	assert_true(fabs(value("histogram_quantile(0.5, lat_bucket)", 600) - 0.4) < 1e-12);
	assert_true(value("histogram_quantile(0.9, lat_bucket)", 600) == 1); /* in +Inf: the last finite bound */
	assert_true(fabs(value("histogram_quantile(0.05, lat_bucket)", 600) - 0.025) < 1e-12);
	expect("histogram_quantile(0.5, lat_bucket)", 600,
	       "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"job\":\"a\"},\"value\":[600,\"0.4\"]}]}");
}

static void test_vector_matching(void **state)
{
	(void)state;
	expect("sort(va / ignoring(y) vb)", 600, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"x\":\"1\"},"
	       "\"value\":[600,\"5\"]},{\"metric\":{\"x\":\"2\"},\"value\":[600,\"5\"]}]}");
	expect("sort_desc(va * on(x) group_left vb)", 600, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"x\":"
	       "\"2\",\"y\":\"q\"},\"value\":[600,\"80\"]},{\"metric\":{\"x\":\"1\",\"y\":\"p\"},\"value\":[600,\"20\"]}]}");
	expect("va{x=\"2\"} > on(x) group_left vb * 4", 600, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":"
	       "\"va\",\"x\":\"2\",\"y\":\"q\"},\"value\":[600,\"20\"]}]}");
	assert_true(value("count(va / on(x) vb)", 600) == 2);
	expect("va / vb", 600, "{\"resultType\":\"vector\",\"result\":[]}");
	assert_true(value("count(va and on(x) vb{x=\"1\"})", 600) == 1);
	assert_true(value("count(va unless on(x) vb{x=\"1\"})", 600) == 1);
	assert_true(value("count(va or vb)", 600) == 4);
	assert_true(value("sum(sum(va) by (x) - on(x) vb)", 600) == 8 + 16);
	expect_err("vb + on() group_left va", "duplicate series");
	expect_err("topk(scalar(nope), va)", "Scalar value NaN overflows int64");
	expect("sum by (x) (va)", 600, "{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"x\":\"1\"},\"value\":[600,"
	       "\"10\"]},{\"metric\":{\"x\":\"2\"},\"value\":[600,\"20\"]}]}");
	assert_true(value("avg without (x, y) (va)", 600) == 15);
	assert_true(value("stddev(va)", 600) == 5);
	assert_true(value("count(topk(1, va))", 600) == 1);
	assert_true(value("sum(topk(1, va))", 600) == 20);
	assert_true(value("sum(bottomk(1, va))", 600) == 10);
	assert_true(value("quantile(0.5, va)", 600) == 15);
	assert_true(value("count(count_values(\"v\", va))", 600) == 2);
}

static void test_range_subquery_staleness(void **state)
{
	(void)state;
	/* subquery steps are aligned to multiples of 1 m: 420 480 540 600 */
	assert_true(value("sum_over_time(g[3m:1m])", 600) == 7 + 8 + 9 + 10);
	/* 90 s steps inside [330, 600]: 360 450 540 (aligned to 90 s), values 6 7 9 */
	assert_true(value("sum_over_time(g[270s:90s])", 600) == 6 + 7 + 9);
	assert_true(value("max_over_time(rate(http_total[2m])[5m:1m])", 300) > 0);
	/* staleness: the marker at 90 s ends the series, the lookback (5 m) ends g after its last sample */
	expect_range("st", 0, 120, 30, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"__name__\":\"st\",\"job\":"
		     "\"a\"},\"values\":[[0,\"1\"],[30,\"1\"],[60,\"2\"]]}]}");
	expect_range("g offset -1m", 840, 960, 60, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"__name__\":"
		     "\"g\",\"job\":\"a\"},\"values\":[[840,\"10\"]]}]}");
	expect_range("1 + 1", 0, 60, 30, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{},\"values\":[[0,\"2\"],"
		     "[30,\"2\"],[60,\"2\"]]}]}");
	expect_range("g @ 120", 0, 60, 60, "{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"__name__\":\"g\","
		     "\"job\":\"a\"},\"values\":[[0,\"2\"],[60,\"2\"]]}]}");
	char *got = run("g[5m]", 0, 60000, 1000, 0);
	assert_non_null(strstr(got, "invalid expression type \"range vector\" for range query"));
	free(got);
}

static void test_guards(void **state)
{
	(void)state;
	ag__pql_opts tiny = opts;
	tiny.max_samples = 5;
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ag__pquery pq;
	cm_err err;
	cm_buf b;
	cm_buf_init(&b);
	int kind = 0;
	assert_int_equal(ag__pql_parse("g[10m]", &a, &pq, &err), 0);
	assert_int_not_equal(ag__pql_exec(db, &pq, 600000, 600000, 1, 1, &tiny, &b, &kind, &err), 0);
	assert_int_equal(kind, AG_PQL_EXECUTION);
	assert_non_null(strstr(err.msg, "too many samples"));
	ag__pql_close(&pq);
	tiny.max_samples = 1000000;
	tiny.timeout_ms = 0;
	b.len = 0;
	assert_int_equal(ag__pql_parse("g", &a, &pq, &err), 0);
	assert_int_not_equal(ag__pql_exec(db, &pq, 0, 600000, 1000, 0, &tiny, &b, &kind, &err), 0);
	assert_int_equal(kind, AG_PQL_TIMEOUT);
	ag__pql_close(&pq);
	cm_buf_close(&b);
	cm_arena_close(&a);
}

/* The HTTP handlers' guards: one place for queries, taken: 503; bad timeout: 400; too many samples: 422. */
static long api_call(ag__api *api, const char *query, const char *timeout, char **body)
{
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ag__param params[] = {{"query", query}, {"time", "600"}, {"timeout", timeout}};
	ag__req req = {.method = "GET", .url = "/api/v1/query", .params = params, .nparams = timeout ? 3 : 2,
		       .arena = &a};
	ag__resp resp = {0};
	cm_buf_init(&resp.body);
	ag__api_query(api, &req, &resp);
	cm_buf_append(&resp.body, "", 1);
	*body = strdup((char *)resp.body.data);
	cm_buf_close(&resp.body);
	cm_arena_close(&a);
	return resp.status;
}

static void test_api_guards(void **state)
{
	(void)state;
	ag__metrics m = {{0}};
	ag__api api = {.db = db, .metrics = &m, .lookback_ms = 300000, .max_queries = 1, .query_wait_ms = 30};
	char *body;
	atomic_store(&api.active_queries, 1);
	assert_int_equal(api_call(&api, "g", NULL, &body), 503);
	assert_non_null(strstr(body, "unavailable"));
	free(body);
	atomic_store(&api.active_queries, 0);
	assert_int_equal(api_call(&api, "g", NULL, &body), 200);
	assert_string_equal(body, "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[{\"metric\":"
			    "{\"__name__\":\"g\",\"job\":\"a\"},\"value\":[600,\"10\"]}]}}\n");
	free(body);
	assert_int_equal(atomic_load(&api.active_queries), 0);
	assert_int_equal(api_call(&api, "g", "abc", &body), 400);
	free(body);
	assert_int_equal(api_call(&api, "sum(", NULL, &body), 400);
	assert_non_null(strstr(body, "bad_data"));
	free(body);
	api.max_samples = 3;
	assert_int_equal(api_call(&api, "g[10m]", NULL, &body), 422);
	assert_non_null(strstr(body, "\"execution\""));
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_rate_extrapolation),
		cmocka_unit_test(test_over_time_and_math),
		cmocka_unit_test(test_histogram_quantile),
		cmocka_unit_test(test_vector_matching),
		cmocka_unit_test(test_range_subquery_staleness),
		cmocka_unit_test(test_guards),
		cmocka_unit_test(test_api_guards),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
