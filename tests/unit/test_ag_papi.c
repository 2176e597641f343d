/* test_ag_papi.c -- the parameter parsers and formats of ag_papi.c (limit, the label-values path, Go's
 * float text of /federate), and the handlers over a real store: labels, label values, series with
 * limit, metadata and federate answers for a few series.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

static void test_limit(void **state)
{
	(void)state;
	size_t v = 99;
	assert_int_equal(ag__papi_limit(NULL, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(ag__papi_limit("", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(ag__papi_limit("17", &v), 0);
	assert_int_equal(v, 17);
	v = 5;
	assert_int_equal(ag__papi_limit("-1", &v), CM_EINVAL);
	assert_int_equal(ag__papi_limit("1.5", &v), CM_EINVAL);
	assert_int_equal(ag__papi_limit("12a", &v), CM_EINVAL);
	assert_int_equal(ag__papi_limit("99999999999999999999999", &v), CM_EINVAL);
	assert_int_equal(v, 5); /* untouched on error */
}

static void test_label_path(void **state)
{
	(void)state;
	cm_arena a;
	cm_arena_init(&a, 0);
	assert_string_equal(ag__papi_label_from_path("/api/v1/label/job/values", &a), "job");
	assert_string_equal(ag__papi_label_from_path("/api/v1/label/__name__/values", &a), "__name__");
	assert_null(ag__papi_label_from_path("/api/v1/label//values", &a));
	assert_null(ag__papi_label_from_path("/api/v1/label/job", &a));
	assert_null(ag__papi_label_from_path("/api/v1/label/a/b/values", &a));
	assert_null(ag__papi_label_from_path("/api/v1/labels", &a));
	assert_null(ag__papi_label_from_path("/api/v1/label/values", &a));
	cm_arena_close(&a);
}

/* A POST with an empty form body hands ag__parse_form a NULL body: it once reached memcpy(dst, NULL, 0),
 * which UBSan stops the aggregator for. */
static void test_parse_form_empty_body(void **state)
{
	(void)state;
	cm_arena a;
	cm_arena_init(&a, 0);
	ag__req req = {.arena = &a};
	assert_int_equal(ag__parse_form(&req, NULL, 0), 0);
	assert_int_equal(req.nparams, 0);
	assert_int_equal(ag__parse_form(&req, "match%5B%5D=up&limit=2&x", 24), 0);
	assert_int_equal(req.nparams, 3);
	assert_string_equal(ag__param_get(&req, "match[]"), "up");
	assert_string_equal(ag__param_get(&req, "x"), "");
	cm_arena_close(&a);
}

/* Expected strings are what Go's strconv.FormatFloat(v, 'g', -1, 64) prints. */
static void test_go_float(void **state)
{
	(void)state;
	static const struct {
		double v;
		const char *want;
	} cases[] = {
		{1, "1"},           {-1, "-1"},          {0, "0"},
		{1e6, "1e+06"},     {123456, "123456"},  {1234567, "1.234567e+06"},
		{100, "100"},       {0.0001, "0.0001"},  {0.00001, "1e-05"},
		{1.5, "1.5"},       {-2.5e-7, "-2.5e-07"}, {0.1 + 0.2, "0.30000000000000004"},
		{1e21, "1e+21"},    {1e100, "1e+100"},   {5e-324, "5e-324"},
		{1.7976931348623157e308, "1.7976931348623157e+308"},
		{999999, "999999"}, {1234567.5, "1.2345675e+06"}, {0.000012, "1.2e-05"},
		{INFINITY, "+Inf"}, {-INFINITY, "-Inf"}, {NAN, "NaN"},
	};
	char buf[64];
	for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
		ag__fmt_go_g(buf, sizeof(buf), cases[i].v);
		if (strcmp(buf, cases[i].want))
			fail_msg("%.17g: got %s, want %s", cases[i].v, buf, cases[i].want);
	}
}

/* ---- handlers over a store ---------------------------------------------------------------------- */

typedef struct fx {
	char dir[64];
	ts_db *db;
	ag__metrics m;
	int64_t now;
} fx;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ag_papi.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	ts_opts o = {.no_fsync = 1, .manual_cut = 1};
	if (ts_open(f->dir, &o, &f->db, NULL, NULL))
		return -1;
	f->now = cm_now_ms();
	cm_label a[] = {{"__name__", "reqs_total"}, {"code", "200"}, {"job", "api"}};
	cm_label b[] = {{"__name__", "reqs_total"}, {"code", "500"}, {"job", "api"}};
	cm_label c[] = {{"__name__", "lat_bucket"}, {"job", "api"}, {"le", "+Inf"}};
	cm_sample s1[] = {{f->now - 20000, 1}, {f->now - 10000, 2.5}};
	cm_sample s2[] = {{1000, 7}};
	cm_sample s3[] = {{f->now - 1000, 1e6}};
	cm_series ser[] = {{a, 3, s1, 2}, {b, 3, s2, 1}, {c, 3, s3, 1}};
	if (ts_append(f->db, ser, 3, NULL))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ts_close(f->db);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Runs url with the form text as its parameters; returns the status, body in out (caller closes). */
static int handle(fx *f, const char *url, const char *form, cm_buf *out)
{
	cm_arena a;
	cm_arena_init(&a, 0);
	ag__req req = {.method = "GET", .url = url, .arena = &a};
	assert_int_equal(ag__parse_form(&req, form, strlen(form)), 0);
	ag__papi p = {.db = f->db, .metrics = &f->m, .lookback_ms = 300000};
	ag__resp resp = {.status = 200};
	cm_buf_init(&resp.body);
	ag__papi_handle(&p, &req, &resp);
	cm_buf_append(&resp.body, "", 0);
	*out = resp.body;
	cm_arena_close(&a);
	return resp.status;
}

static void expect(fx *f, const char *url, const char *form, int status, const char *want)
{
	cm_buf b;
	int st = handle(f, url, form, &b);
	if (st != status || strcmp((char *)b.data, want))
		fail_msg("%s?%s: %d %s\nwant %d %s", url, form, st, (char *)b.data, status, want);
	cm_buf_close(&b);
}

static void test_handlers(void **state)
{
	fx *f = *state;
	expect(f, "/api/v1/labels", "", 200, "{\"status\":\"success\",\"data\":[\"__name__\",\"code\",\"job\",\"le\"]}\n");
	expect(f, "/api/v1/labels", "match[]=reqs_total&limit=1", 200,
	       "{\"status\":\"success\",\"data\":[\"__name__\"],\"warnings\":[\"results truncated due to limit\"]}\n");
	expect(f, "/api/v1/label/code/values", "start=0&end=2", 200,
	       "{\"status\":\"success\",\"data\":[\"500\"]}\n");
	expect(f, "/api/v1/label/code/values", "match[]=reqs_total{code!~\"5..\"}", 200,
	       "{\"status\":\"success\",\"data\":[\"200\"]}\n");
	expect(f, "/api/v1/series", "match[]=lat_bucket", 200,
	       "{\"status\":\"success\",\"data\":[{\"__name__\":\"lat_bucket\",\"job\":\"api\",\"le\":\"+Inf\"}]}\n");
	expect(f, "/api/v1/metadata", "", 200,
	       "{\"status\":\"success\",\"data\":{\"lat\":[{\"type\":\"histogram\",\"help\":\"\",\"unit\":\"\"}],"
	       "\"reqs_total\":[{\"type\":\"counter\",\"help\":\"\",\"unit\":\"\"}]}}\n");
	expect(f, "/api/v1/label/a-b/values", "", 400,
	       "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"invalid label name: \\\"a-b\\\"\"}\n");
	expect(f, "/api/v1/label/x", "", 404,
	       "{\"status\":\"error\",\"errorType\":\"not_found\",\"error\":\"no such endpoint\"}\n");
	char want[512];
	snprintf(want, sizeof(want),
		 "# TYPE lat_bucket untyped\nlat_bucket{job=\"api\",le=\"+Inf\"} 1e+06 %lld\n"
		 "# TYPE reqs_total untyped\nreqs_total{code=\"200\",job=\"api\"} 2.5 %lld\n",
		 (long long)(f->now - 1000), (long long)(f->now - 10000));
	expect(f, "/federate", "match[]={job=\"api\"}&match[]=reqs_total", 200, want);
	expect(f, "/federate", "", 200, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_label_path),
		cmocka_unit_test(test_go_float),
		cmocka_unit_test(test_parse_form_empty_body),
		cmocka_unit_test_setup_teardown(test_handlers, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
