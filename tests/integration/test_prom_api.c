/* test_prom_api.c -- the Prometheus API around the query engine on a real corral-aggregator: labels,
 * label values, series (with limit), metadata, status/buildinfo|runtimeinfo|flags, query_exemplars and
 * /federate, by GET and by POST form body; then a real Prometheus 2.42 scrapes corral's /federate and
 * must store exactly what corral serves. Last, corralctl query, query-range, series and labels print their
 * tables from the same aggregator.
 *
 * Data comes in through /api/v1/import/prometheus: an "old" part at T0 (2024) and a "recent" part a
 * minute before now (what /federate's 5 m lookback sees). Expected answers are written out here, by
 * hand, from that data.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "itest.h"

#define TOKEN "prom-api-test-token"
#define T0 1704067200000LL

typedef struct fixture {
	char dir[256], token[300], data[300], url[64];
	itest_proc agg;
	long long recent_ms; /* timestamp of the recent samples */
} fixture;

static void import(const fixture *f, const char *text)
{
	char url[256], auth[128];
	snprintf(url, sizeof(url), "%s/api/v1/import/prometheus", f->url);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", TOKEN);
	const char *headers[] = {auth, "Content-Type: text/plain", NULL};
	assert_int_equal(itest_http("POST", url, headers, text, strlen(text), NULL), 204);
}

static void load(fixture *f)
{
	cm_buf b;
	cm_buf_init(&b);
	for (int i = 0; i < 4; i++) { /* old: 10 minutes of two jobs at T0 */
		long long t = T0 + i * 150000;
		cm_buf_printf(&b, "api_requests_total{job=\"api\",instance=\"a:1\",code=\"200\"} %d %lld\n", 10 * i, t);
		cm_buf_printf(&b, "api_requests_total{job=\"api\",instance=\"a:1\",code=\"500\"} %d %lld\n", i, t);
		cm_buf_printf(&b, "api_latency_seconds_bucket{job=\"api\",instance=\"a:1\",le=\"0.5\"} %d %lld\n", i, t);
		cm_buf_printf(&b, "api_latency_seconds_bucket{job=\"api\",instance=\"a:1\",le=\"+Inf\"} %d %lld\n", 2 * i,
			      t);
		cm_buf_printf(&b, "api_latency_seconds_sum{job=\"api\",instance=\"a:1\"} %d.5 %lld\n", i, t);
		cm_buf_printf(&b, "api_latency_seconds_count{job=\"api\",instance=\"a:1\"} %d %lld\n", 2 * i, t);
		cm_buf_printf(&b, "rpc_duration_seconds{job=\"db\",instance=\"d:2\",quantile=\"0.9\"} 0.%d %lld\n", i + 1,
			      t);
		cm_buf_printf(&b, "db_connections{job=\"db\",instance=\"d:2\"} %d %lld\n", 5 + i, t);
	}
	import(f, (const char *)b.data);
	b.len = 0;
	/* recent: what /federate serves (two samples of fed_bytes: the newest is the one served) */
	f->recent_ms = itest_now_ms() - 60000;
	long long r = f->recent_ms;
	cm_buf_printf(&b, "fed_bytes{job=\"fed\",instance=\"f:3\"} 7 %lld\n", r - 15000);
	cm_buf_printf(&b, "fed_bytes{job=\"fed\",instance=\"f:3\"} 1000000 %lld\n", r);
	cm_buf_printf(&b, "fed_ratio{job=\"fed\",path=\"a\\\\b \\\"q\\\"\\n\"} 0.000012 %lld\n", r);
	cm_buf_printf(&b, "fed_ratio{job=\"fed\",path=\"plain\"} 1234567.5 %lld\n", r);
	cm_buf_printf(&b, "fed_up 1 %lld\n", r);
	cm_buf_printf(&b, "fed_old{job=\"fed\"} 3 %lld\n", r - 10 * 60000); /* beyond the lookback */
	import(f, (const char *)b.data);
	cm_buf_close(&b);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	itest_write_file(f->token, TOKEN "\n");
	if (itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)))
		return -1;
	*state = f;
	load(f);
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	int rc = itest_aggregator_stop(&f->agg);
	itest_rmtree(f->dir);
	free(f);
	return rc ? -1 : 0;
}

/* GET (post = 0) or POST the form args to path; the answer's body as text (caller frees), status out. */
static char *call(const fixture *f, const char *path, const char *args, int post, long *status)
{
	char url[4096];
	cm_buf reply;
	cm_buf_init(&reply);
	if (post) {
		snprintf(url, sizeof(url), "%s%s", f->url, path);
		const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
		*status = itest_http("POST", url, headers, args, strlen(args), &reply);
	} else {
		snprintf(url, sizeof(url), "%s%s%s%s", f->url, path, *args ? "?" : "", args);
		*status = itest_http("GET", url, NULL, NULL, 0, &reply);
	}
	cm_buf_append(&reply, "", 0);
	size_t n;
	return (char *)cm_buf_take(&reply, &n);
}

/* The answer's "data" re-serialized compactly with sorted keys, for exact comparison. */
static char *data_of(const char *body, const char **warning)
{
	json_t *j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
	static char w[256];
	json_t *ws = json_object_get(j, "warnings");
	snprintf(w, sizeof(w), "%s", ws ? json_string_value(json_array_get(ws, 0)) : "");
	if (warning)
		*warning = w;
	char *s = json_dumps(json_object_get(j, "data"), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(j);
	return s;
}

/* path?args answers 200 with exactly want as data, by GET and by POST alike. */
static void expect(const fixture *f, const char *path, const char *args, const char *want, const char *warning)
{
	for (int post = 0; post < 2; post++) {
		long st;
		char *body = call(f, path, args, post, &st);
		if (st != 200)
			fprintf(stderr, "%s %s?%s: %ld %s\n", post ? "POST" : "GET", path, args, st, body);
		assert_int_equal(st, 200);
		const char *w;
		char *got = data_of(body, &w);
		if (strcmp(got, want))
			fprintf(stderr, "%s?%s\n got: %s\nwant: %s\n", path, args, got, want);
		assert_string_equal(got, want);
		assert_string_equal(w, warning ? warning : "");
		free(got);
		free(body);
	}
}

static void expect_bad(const fixture *f, const char *path, const char *args, const char *msg_part)
{
	long st;
	char *body = call(f, path, args, 0, &st);
	assert_int_equal(st, 400);
	json_t *j = json_loads(body, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "bad_data");
	const char *msg = json_string_value(json_object_get(j, "error"));
	if (!strstr(msg, msg_part))
		fprintf(stderr, "%s?%s: %s\n", path, args, msg);
	assert_non_null(strstr(msg, msg_part));
	json_decref(j);
	free(body);
}

#define CUT "results truncated due to limit"

static void test_labels(void **state)
{
	const fixture *f = *state;
	expect(f, "/api/v1/labels", "",
	       "[\"__name__\",\"code\",\"instance\",\"job\",\"le\",\"path\",\"quantile\"]", NULL);
	expect(f, "/api/v1/labels", "match[]=db_connections&match[]=fed_up", "[\"__name__\",\"instance\",\"job\"]",
	       NULL);
	expect(f, "/api/v1/labels", "match[]=%7Bjob%3D%22api%22%7D&limit=2", "[\"__name__\",\"code\"]", CUT);
	expect(f, "/api/v1/labels", "match[]=%7Bjob%3D%22api%22%7D&limit=5",
	       "[\"__name__\",\"code\",\"instance\",\"job\",\"le\"]", NULL);
	/* a time range that only the recent data overlaps */
	expect(f, "/api/v1/labels", "start=1800000000", "[]", NULL);
	expect(f, "/api/v1/label/job/values", "", "[\"api\",\"db\",\"fed\"]", NULL);
	expect(f, "/api/v1/label/job/values", "match[]=%7B__name__%3D~%22api_.%2A%22%7D", "[\"api\"]", NULL);
	expect(f, "/api/v1/label/job/values", "end=1704067300", "[\"api\",\"db\"]", NULL);
	expect(f, "/api/v1/label/__name__/values", "limit=3",
	       "[\"api_latency_seconds_bucket\",\"api_latency_seconds_count\",\"api_latency_seconds_sum\"]", CUT);
	expect(f, "/api/v1/label/nope/values", "", "[]", NULL);
	expect_bad(f, "/api/v1/label/1bad/values", "", "invalid label name");
	expect_bad(f, "/api/v1/labels", "limit=-1", "invalid parameter \"limit\"");
	expect_bad(f, "/api/v1/labels", "start=yesterday", "invalid parameter \"start\"");
	expect_bad(f, "/api/v1/labels", "match[]=rate(x%5B5m%5D)", "invalid parameter \"match[]\"");
}

static void test_series(void **state)
{
	const fixture *f = *state;
	expect(f, "/api/v1/series", "match[]=api_requests_total&match[]=%7Bcode%3D%22500%22%7D",
	       "[{\"__name__\":\"api_requests_total\",\"code\":\"200\",\"instance\":\"a:1\",\"job\":\"api\"},"
	       "{\"__name__\":\"api_requests_total\",\"code\":\"500\",\"instance\":\"a:1\",\"job\":\"api\"}]",
	       NULL);
	expect(f, "/api/v1/series", "match[]=api_requests_total&limit=1",
	       "[{\"__name__\":\"api_requests_total\",\"code\":\"200\",\"instance\":\"a:1\",\"job\":\"api\"}]", CUT);
	expect(f, "/api/v1/series", "match[]=db_connections&start=1800000000", "[]", NULL);
	expect_bad(f, "/api/v1/series", "", "no match[] parameter provided");
}

static void test_metadata(void **state)
{
	const fixture *f = *state;
#define META(type) "[{\"help\":\"\",\"type\":\"" type "\",\"unit\":\"\"}]"
	char want[2048];
	const char *t[] = {META("histogram"), META("counter"), META("unknown"), META("summary")};
	snprintf(want, sizeof(want),
		 "{\"api_latency_seconds\":%s,\"api_requests_total\":%s,\"db_connections\":%s,\"fed_bytes\":%s,"
		 "\"fed_old\":%s,\"fed_ratio\":%s,\"fed_up\":%s,\"rpc_duration_seconds\":%s}",
		 t[0], t[1], t[2], t[2], t[2], t[2], t[2], t[3]);
	expect(f, "/api/v1/metadata", "", want, NULL);
	snprintf(want, sizeof(want), "{\"api_latency_seconds\":%s}", t[0]);
	expect(f, "/api/v1/metadata", "metric=api_latency_seconds", want, NULL);
	snprintf(want, sizeof(want), "{\"api_latency_seconds\":%s,\"api_requests_total\":%s}", t[0], t[1]);
	expect(f, "/api/v1/metadata", "limit=2", want, NULL);
}

static void test_status(void **state)
{
	const fixture *f = *state;
	long st;
	char *body = call(f, "/api/v1/status/buildinfo", "", 0, &st);
	char *d = data_of(body, NULL);
	assert_non_null(strstr(d, "\"version\":\"2.42.0\""));
	assert_non_null(strstr(d, "\"application\":\"corral\""));
	free(d), free(body);
	body = call(f, "/api/v1/status/runtimeinfo", "", 1, &st);
	json_t *j = json_loads(body, 0, NULL), *data = json_object_get(j, "data");
	const char *start = json_string_value(json_object_get(data, "startTime"));
	assert_non_null(start);
	assert_int_equal(strlen(start), strlen("2026-01-01T00:00:00.000Z"));
	assert_true(strncmp(start, "1970", 4) > 0); /* the server's start, not zero */
	assert_non_null(json_object_get(data, "storageRetention"));
	assert_true(json_integer_value(json_object_get(data, "GOMAXPROCS")) >= 1);
	json_decref(j), free(body);
	body = call(f, "/api/v1/status/flags", "", 0, &st);
	j = json_loads(body, 0, NULL), data = json_object_get(j, "data");
	assert_string_equal(json_string_value(json_object_get(data, "listen")), f->url + strlen("http://"));
	assert_string_equal(json_string_value(json_object_get(data, "data-dir")), f->data);
	json_decref(j), free(body);
	expect(f, "/api/v1/query_exemplars", "query=api_requests_total&start=1704067200&end=1704070800", "[]", NULL);
	expect_bad(f, "/api/v1/query_exemplars", "start=1704067200", "invalid parameter \"query\"");
}

static void test_federate(void **state)
{
	const fixture *f = *state;
	long st;
	char *body = call(f, "/federate", "match[]=%7Bjob%3D%22fed%22%7D&match[]=fed_up&match[]=fed_bytes", 0, &st);
	assert_int_equal(st, 200);
	char want[2048];
	long long r = f->recent_ms;
	snprintf(want, sizeof(want),
		 "# TYPE fed_bytes untyped\n"
		 "fed_bytes{instance=\"f:3\",job=\"fed\"} 1e+06 %lld\n"
		 "# TYPE fed_ratio untyped\n"
		 "fed_ratio{job=\"fed\",path=\"a\\\\b \\\"q\\\"\\n\"} 1.2e-05 %lld\n"
		 "fed_ratio{job=\"fed\",path=\"plain\"} 1.2345675e+06 %lld\n"
		 "# TYPE fed_up untyped\n"
		 "fed_up 1 %lld\n",
		 r, r, r, r);
	if (strcmp(body, want))
		fprintf(stderr, "got:\n%s\nwant:\n%s", body, want);
	assert_string_equal(body, want);
	free(body);
	body = call(f, "/federate", "match[]=fed_up", 1, &st);
	assert_int_equal(st, 200);
	assert_non_null(strstr(body, "fed_up 1 "));
	free(body);
	body = call(f, "/federate", "match[]=%7B%7D", 0, &st);
	assert_int_equal(st, 400);
	free(body);
}

/* A real Prometheus scrapes corral's /federate (honor_labels) and stores what it got. */
static void test_federate_scraped(void **state)
{
	const fixture *f = *state;
	char cfg[512], yml[1024], flag_cfg[600], flag_path[600], listen[64], url[256], ready[256];
	int port = itest_port();
	snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", f->dir);
	snprintf(yml, sizeof(yml),
		 "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
		 "  - job_name: federate\n    honor_labels: true\n    metrics_path: /federate\n"
		 "    params:\n      'match[]': ['{job=\"fed\"}', 'fed_up']\n"
		 "    static_configs:\n      - targets: ['%s']\n",
		 f->url + strlen("http://"));
	itest_write_file(cfg, yml);
	snprintf(flag_cfg, sizeof(flag_cfg), "--config.file=%s", cfg);
	snprintf(flag_path, sizeof(flag_path), "--storage.tsdb.path=%s/prom", f->dir);
	snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", port);
	char *argv[] = {"/usr/bin/prometheus", flag_cfg, flag_path, listen, "--log.level=warn", NULL};
	itest_proc prom = {0};
	assert_int_equal(itest_spawn(&prom, f->dir, "prometheus", argv), 0);
	snprintf(ready, sizeof(ready), "http://127.0.0.1:%d/-/ready", port);
	assert_int_equal(itest_wait_http(ready, 30000), 0);
	/* the samples keep their own timestamps (a minute ago): query at that time */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/query?query=count(%%7Bjob%%3D%%22fed%%22%%7D)%%20%%2B%%20scalar(fed_up)"
		 "&time=%.3f", port, f->recent_ms / 1000.0);
	const char *got = NULL;
	json_t *j = NULL;
	for (int i = 0; i < 100 && !got; i++) { /* at most 10 s */
		long st;
		json_decref(j);
		j = itest_get_json(url, &st);
		json_t *res = json_object_get(json_object_get(j, "data"), "result");
		got = json_string_value(json_array_get(json_object_get(json_array_get(res, 0), "value"), 1));
		if (!got)
			itest_sleep_ms(100);
	}
	if (!got) {
		char targets[128];
		snprintf(targets, sizeof(targets), "http://127.0.0.1:%d/api/v1/targets", port);
		json_t *t = itest_get_json(targets, &(long){0});
		char *s = json_dumps(t, 0);
		fprintf(stderr, "targets: %s\n", s);
		free(s), json_decref(t);
		itest_dump_log(&prom);
	}
	assert_non_null(got);
	assert_string_equal(got, "4"); /* fed_bytes, two fed_ratio (fed_old is too old), plus fed_up's 1 */
	json_decref(j);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/query?query=fed_ratio%%7Bpath%%3D%%22plain%%22%%7D"
		 "&time=%.3f", port, f->recent_ms / 1000.0);
	long st;
	j = itest_get_json(url, &st);
	json_t *v = json_object_get(json_array_get(json_object_get(json_object_get(j, "data"), "result"), 0), "value");
	assert_string_equal(json_string_value(json_array_get(v, 1)), "1234567.5");
	assert_true(fabs(json_number_value(json_array_get(v, 0)) - f->recent_ms / 1000.0) < 1e-6);
	json_decref(j);
	itest_stop(&prom, SIGTERM, 10000);
}

/* ---- corralctl query | query-range | series | labels ------------------------------------------------ */

/* Runs corralctl with args against the aggregator (TZ=UTC); its stdout in out, the exit status returned. */
static int ctl(const fixture *f, const char *args, char *out, size_t cap)
{
	char bin[4096], cmd[8192];
	itest_bin(bin, sizeof(bin), "corralctl");
	snprintf(cmd, sizeof(cmd), "TZ=UTC %s --url %s %s", bin, f->url, args);
	return itest_capture(cmd, out, cap);
}

static void expect_ctl(const fixture *f, const char *args, const char *want)
{
	char out[8192];
	int rc = ctl(f, args, out, sizeof(out));
	if (rc || strcmp(out, want))
		fprintf(stderr, "corralctl %s: exit %d\n%s-- want:\n%s", args, rc, out, want);
	assert_int_equal(rc, 0);
	assert_string_equal(out, want);
}

static void test_corralctl(void **state)
{
	const fixture *f = *state;
	expect_ctl(f, "--time 1704067350 query api_requests_total",
		   "VALUE  __name__            code  instance  job\n"
		   "10     api_requests_total  200   a:1       api\n"
		   "1      api_requests_total  500   a:1       api\n"
		   "(2 samples)\n");
	expect_ctl(f, "--time 2024-01-01T00:07:30Z query 'rpc_duration_seconds{quantile=\"0.9\"}'",
		   "VALUE  __name__              instance  job  quantile\n"
		   "0.4    rpc_duration_seconds  d:2       db   0.9\n"
		   "(1 samples)\n");
	expect_ctl(f, "--since 10m series fed_ratio fed_up",
		   "__name__   job  path\n"
		   "fed_ratio  fed  a\\b \"q\"\\n\n"
		   "fed_ratio  fed  plain\n"
		   "fed_up\n"
		   "(3 series)\n");
	expect_ctl(f, "--since 1h labels", "LABEL\n__name__\ninstance\njob\npath\n(4 labels)\n");
	expect_ctl(f, "--since 1h labels job", "job\nfed\n(1 values)\n");
	expect_ctl(f, "--since 1h --match fed_up labels", "LABEL\n__name__\n(1 labels)\n");
	/* a range over the recent samples: fed_bytes is 7, then 1000000 15 s later (a minute ago) */
	char out[8192];
	assert_int_equal(ctl(f, "--since 3m --step 5s query-range 'fed_bytes{job=\"fed\"}'", out, sizeof(out)), 0);
	assert_int_equal(strncmp(out, "TIME   ", 7), 0);
	assert_non_null(strstr(out, "  VALUE    __name__   instance  job\n"));
	assert_non_null(strstr(out, "  7        fed_bytes  f:3       fed\n"));
	assert_non_null(strstr(out, "  1000000  fed_bytes  f:3       fed\n"));
	assert_non_null(strstr(out, "(1 series)\n"));
	/* an error answer: exit 1, the server's words on stderr */
	assert_int_equal(ctl(f, "query 'sum(' 2>/dev/null", out, sizeof(out)), 1);
	assert_int_equal(ctl(f, "labels 1bad 2>/dev/null", out, sizeof(out)), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_labels),   cmocka_unit_test(test_series),  cmocka_unit_test(test_metadata),
		cmocka_unit_test(test_status),   cmocka_unit_test(test_federate), cmocka_unit_test(test_federate_scraped),
		cmocka_unit_test(test_corralctl),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
