/* test_ts_import.c -- bulk import into a real corral-aggregator: POST /api/v1/import/prometheus streams
 * Prometheus text (bodies far over --max-push-bytes), stores exactly the lines it accepts, answers 400
 * with the count and first bad line when it skips some, 401 without the token (unless the aggregator
 * runs with --allow-unauthenticated-import), and what it acknowledged survives a SIGKILL and restart.
 * POST /api/v1/admin/flush answers 204 (401 without the token).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

#define TOKEN "import-test-token"
#define T0 1704067200000LL

typedef struct fixture {
	char dir[256], token[300], data[300], url[64];
	itest_proc agg;
} fixture;

static long post(const fixture *f, const char *path, const char *token, const void *body, size_t len, cm_buf *reply)
{
	char url[256], auth[256];
	snprintf(url, sizeof(url), "%s%s", f->url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
	const char *headers[] = {auth, "Content-Type: text/plain", NULL};
	return itest_http("POST", url, token ? headers : headers + 1, body, len, reply);
}

/* The points query_range returns for selector over [T0, T0 + span] at 1 s steps, and their sum. */
static size_t points(const fixture *f, const char *selector, int64_t span_s, double *sum)
{
	char q[512], url[1024];
	long status;
	itest_urlencode(q, sizeof(q), selector);
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=%s&start=%lld&end=%lld&step=1", f->url, q,
		 (long long)(T0 / 1000), (long long)(T0 / 1000 + span_s));
	json_t *j = itest_get_json(url, &status);
	assert_int_equal(status, 200);
	json_t *res = json_object_get(json_object_get(j, "data"), "result");
	size_t n = 0, i, k;
	json_t *s, *v;
	*sum = 0;
	json_array_foreach(res, i, s) {
		json_array_foreach(json_object_get(s, "values"), k, v) {
			*sum += atof(json_string_value(json_array_get(v, 1)));
			n++;
		}
	}
	json_decref(j);
	return n;
}

/* 50 series x 2,000 samples at 1 s, in time order: about 6 MB of text. */
static void make_big(cm_buf *b)
{
	for (int t = 0; t < 2000; t++)
		for (int s = 0; s < 50; s++)
			cm_buf_printf(b, "imp_big{series=\"s%02d\",pod=\"some-longer-pod-name-%d-abcdef\"} %d.25 %lld\n", s,
				      s * 7, t, (long long)(T0 + t * 1000));
}

static void start(fixture *f, const char *const *extra)
{
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, extra, f->url, sizeof(f->url)), 0);
}

static void test_import(void **state)
{
	fixture *f = *state;
	const char *extra[] = {"--max-push-bytes", "1Mi", NULL};
	cm_buf body, reply;
	double sum;
	cm_buf_init(&body);
	cm_buf_init(&reply);
	start(f, extra);
	make_big(&body);
	assert_true(body.len > 4u << 20);
	assert_int_equal(post(f, "/api/v1/import/prometheus", NULL, body.data, body.len, NULL), 401);
	assert_int_equal(post(f, "/api/v1/import/prometheus", "wrong", body.data, body.len, NULL), 401);
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, body.data, body.len, NULL), 204);
	assert_int_equal(points(f, "imp_big", 1999, &sum), 100000);
	assert_true(sum == 50 * (1999.0 * 2000 / 2 + 0.25 * 2000));

	static const char mixed[] = "# TYPE imp_mixed gauge\n"
				    "imp_mixed{k=\"a\"} 1 1704067200000\n"
				    "imp_mixed{k=\"a\" 2 1704067201000\n" /* line 3: unterminated braces */
				    "imp_mixed{k=\"b\\\"q\"} +Inf 1704067200000\n"
				    "imp_mixed{k=\"c\"} NaN\n" /* no timestamp: now, outside the queried range */
				    "imp_mixed{k=\"a\"} 3 1704067202000"; /* no final newline */
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, mixed, strlen(mixed), &reply), 400);
	assert_non_null(strstr((char *)reply.data, "1 line(s) skipped"));
	assert_non_null(strstr((char *)reply.data, "line 3"));
	/* steps at 0, 1, 2 s: 1, 1 (the lookback; the skipped line would make it 2), 3 */
	assert_int_equal(points(f, "imp_mixed{k=\"a\"}", 2, &sum), 3);
	assert_true(sum == 5);
	assert_int_equal(points(f, "imp_mixed{k=\"b\\\"q\"}", 0, &sum), 1);
	assert_true(sum == INFINITY);

	/* the same series again in the same order take the fast path (line_fast); each variant here must
	 * read as the general grammar reads it: an exponent, two blanks, tabs, series out of order (one
	 * as long as the predicted one), trailing blanks */
	static const char fast[] = "fp{k=\"a\"} 1 1704067200000\n"
				   "fp 2 1704067200000\n"
				   "fp{k=\"b c\"} 3 1704067200000\n"
				   "fp{k=\"a\"} 1e1 1704067201000\n"
				   "fp  20 1704067201000\n"
				   "fp{k=\"b c\"}\t30\t1704067201000\n"
				   "fp{k=\"x\"} 5 1704067202000\n"
				   "fp{k=\"b c\"} 300 1704067202000\n"
				   "fp{k=\"a\"} 100 1704067202000\r\n"
				   "fp 200 1704067202000  \n";
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, fast, strlen(fast), NULL), 204);
	assert_int_equal(points(f, "fp{k=\"a\"}", 2, &sum), 3);
	assert_true(sum == 111);
	assert_int_equal(points(f, "fp{k=\"\"}", 2, &sum), 3);
	assert_true(sum == 222);
	assert_int_equal(points(f, "fp{k=\"b c\"}", 2, &sum), 3);
	assert_true(sum == 333);
	assert_int_equal(points(f, "fp{k=\"x\"}", 2, &sum), 1);
	assert_true(sum == 5);

	/* values read 8 digits at a time, and ones too long for the exact path */
	static const char vals[] = "fv{i=\"1\"} 123456789012.125 1704067200000\n"
				   "fv{i=\"2\"} -98765432.5 1704067200000\n"
				   "fv{i=\"3\"} +0.000000015625 1704067200000\n"
				   "fv{i=\"4\"} 1234567890123456 1704067200000\n"
				   "fv{i=\"5\"} 12345678.12345678 1704067200000\n";
	static const double want[] = {123456789012.125, -98765432.5, 0.000000015625, 1234567890123456.0,
				      12345678.12345678};
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, vals, strlen(vals), NULL), 204);
	for (int i = 0; i < 5; i++) {
		char sel[64];
		snprintf(sel, sizeof(sel), "fv{i=\"%d\"}", i + 1);
		assert_int_equal(points(f, sel, 0, &sum), 1);
		assert_true(sum == want[i]);
	}

	/* more series than the import's first series table holds: it grows mid-request (a bug once lost
	 * the pending samples of the series it moved) */
	cm_buf many;
	cm_buf_init(&many);
	for (int t = 0; t < 3; t++)
		for (int s = 0; s < 5000; s++)
			cm_buf_printf(&many, "imp_many{s=\"%d\"} %d %lld\n", s, s + t, (long long)(T0 + t * 1000));
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, many.data, many.len, NULL), 204);
	assert_int_equal(points(f, "imp_many", 0, &sum), 5000);
	assert_true(sum == 4999.0 * 5000 / 2);
	assert_int_equal(points(f, "imp_many", 2, &sum), 15000);
	assert_true(sum == 3 * (4999.0 * 5000 / 2) + 5000 * 3);

	/* the series table grows while the store thread holds a batch that reads the series references in
	 * it: 1,000 series x 300 s hand over a first batch, then 4,000 new series follow */
	many.len = 0;
	for (int t = 0; t < 300; t++)
		for (int s = 0; s < 1000; s++)
			cm_buf_printf(&many, "imp_grow{s=\"%d\"} %d %lld\n", s, t, (long long)(T0 + t * 1000));
	for (int s = 1000; s < 5000; s++)
		cm_buf_printf(&many, "imp_grow{s=\"%d\"} %d %lld\n", s, s, (long long)(T0 + 299 * 1000));
	assert_int_equal(post(f, "/api/v1/import/prometheus", TOKEN, many.data, many.len, NULL), 204);
	assert_int_equal(points(f, "imp_grow", 0, &sum), 1000);
	assert_true(sum == 0);
	assert_int_equal(points(f, "imp_grow{s=\"7\"}", 299, &sum), 300);
	assert_true(sum == 299.0 * 300 / 2);
	assert_int_equal(points(f, "imp_grow{s=~\"[0-9]{4}\"}", 299, &sum), 4000);
	assert_true(sum == (1000.0 + 4999) * 4000 / 2);
	cm_buf_close(&many);

	assert_int_equal(post(f, "/api/v1/admin/flush", NULL, "", 0, NULL), 401);
	assert_int_equal(post(f, "/api/v1/admin/flush", TOKEN, "", 0, NULL), 204);

	/* acknowledged means durable: kill -9, restart on the same data */
	itest_stop(&f->agg, SIGKILL, 5000);
	start(f, extra);
	assert_int_equal(points(f, "imp_big", 1999, &sum), 100000);
	assert_int_equal(points(f, "imp_mixed{k=\"a\"}", 2, &sum), 3);
	itest_stop(&f->agg, SIGTERM, 10000);

	const char *open_import[] = {"--allow-unauthenticated-import", NULL};
	start(f, open_import);
	static const char one[] = "imp_open 7 1704067200000\n";
	assert_int_equal(post(f, "/api/v1/import/prometheus", NULL, one, strlen(one), NULL), 204);
	assert_int_equal(post(f, "/api/v1/admin/flush", NULL, "", 0, NULL), 204);
	assert_int_equal(points(f, "imp_open", 0, &sum), 1);
	assert_true(sum == 7);
	itest_stop(&f->agg, SIGTERM, 10000);
	cm_buf_close(&body);
	cm_buf_close(&reply);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	itest_write_file(f->token, TOKEN "\n");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->agg.pid > 0)
		itest_stop(&f->agg, SIGKILL, 5000);
	itest_rmtree(f->dir);
	free(f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test_setup_teardown(test_import, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
