/* test_ls_logql.c -- the LogQL subset: what parses and what does not (with the message), and results on
 * a real store: selectors, line filters, json, logfmt, label filters, line_format, limit and direction,
 * count_over_time, rate, bytes_over_time, bytes_rate, sum by, and the limits.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ls.h"

static void test_parse(void **state)
{
	(void)state;
	const char *ok[] = {
		"{app=\"web\"}",
		" { app = \"web\" , pod =~ `web-.*`, ns!=\"x\", c!~\"a|b\", } ",
		"{app=\"web\"} |= \"error\" != `debug` |~ \"time(out)?\" !~ \"x+\"",
		"{app=\"web\"} | json | level=\"error\" | status >= 500 | line_format \"{{.level}} {{ .msg }}\"",
		"{app=\"web\"} | logfmt | duration_ms > 10.5 | status == 200 | method != \"GET\" | path=~\"/api/.*\"",
		"{app=~\"(web|api)-(a|b)+-[0-9]{1,3}\"} |~ \"(GET|POST) (/v[0-9])?/\"",
		"count_over_time({app=\"web\"}[5m])",
		"rate({app=\"web\"} |= \"error\" [1h30m])",
		"bytes_over_time({app=\"web\"}[10s])",
		"bytes_rate({app=\"web\"}[500ms])",
		"sum by (pod) (count_over_time({app=\"web\"}[1m]))",
		"sum(rate({app=\"web\"}[1m])) by (pod, container)",
		"sum(count_over_time({app=\"web\"} | json [1m]))",
		"{a=\"\\\"q\\\" \\\\ \\n \\x41\"}",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ls_query *q;
		cm_err err = {{0}};
		if (ls_logql_parse(ok[i], &q, &err))
			fail_msg("%s: %s", ok[i], err.msg);
		assert_int_equal(ls_logql_is_metric(q), ok[i][strspn(ok[i], " ")] != '{');
		ls_logql_free(q);
	}
	const char *bad[] = {"", "{}", "app=\"web\"", "{app=\"web\"", "{app=web}", "{app>\"1\"}", "{1app=\"x\"}",
			     "{app=\"web\"} |", "{app=\"web\"} |= error", "{app=\"web\"} | status > \"x\"",
			     "{app=\"web\"} | x =~ 5", "{app=~\"(\"}", "{app=\"web\"} |~ \"[\"", "rate({app=\"web\"})",
			     "rate({app=\"web\"}[5])", "rate({app=\"web\"}[5q])", "sum(rate({app=\"web\"}[1m])) by (a) by (b)",
			     "avg(rate({app=\"web\"}[1m]))", "{app=\"web\"} extra", "{app=\"\\q\"}", "{app=\"a\\x0\"}",
			     "{app=\"web\"} | line_format", "count_over_time({app=\"web\"}[0s])",
			     /* regexes that would take glibc's regcomp exponential memory */
			     "{app=~\"w++++++++++++++++++++++++++++++++\"}", "{app=~\"((a{1000}){1000}){1000}\"}",
			     "{app=\"x\"} |~ \"(a{20}){60}\"", "{app=~\"a*?\"}",
			     "{app=~\"((((((((((((a)+)+)+)+)+)+)+)+)+)+)+)+\"}", "{app=\"x\"} |~ \"(a*)*\\\\1\"",
			     "{app=~\"(((((()+))+)+)+)+)+)+)+)+\"}", "{app=~\"(a)+(b)+(c)*(d)?(e)+\"}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ls_query *q;
		cm_err err = {{0}};
		if (ls_logql_parse(bad[i], &q, &err) != CM_EINVAL)
			fail_msg("accepted '%s'", bad[i]);
		assert_true(strlen(err.msg) > 0);
	}
}

/* ---- on a store ------------------------------------------------------------------------------------------- */

typedef struct fx {
	char dir[256];
	ls_store *s;
} fx;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

#define SEC 1000000000LL

static void put(ls_store *s, const char *app, const char *pod, int64_t t_s, const char *line)
{
	cm_label l[3] = {{"app", app}, {"pod", pod}, {"level", "info"}};
	ls_entry e = {t_s * SEC, line, strlen(line)};
	ls_push_stream st = {l, 3, &e, 1};
	cm_err err = {{0}};
	assert_int_equal(ls_store_append(s, NULL, 0, &st, 1, &err), 0);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ls_logql.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	ls_store_opts o = {.dir = f->dir, .no_fsync = 1};
	cm_err err = {{0}};
	assert_int_equal(ls_store_open(&o, &f->s, &err), 0);
	put(f->s, "web", "web-1", 10, "{\"level\":\"error\",\"status\":500,\"req\":{\"path\":\"/a\"},\"tags\":[1]}");
	put(f->s, "web", "web-1", 20, "{\"level\":\"info\",\"status\":200,\"req\":{\"path\":\"/b\"}}");
	put(f->s, "web", "web-2", 30, "{\"level\":\"error\",\"status\":503}");
	put(f->s, "web", "web-2", 40, "not json at all");
	put(f->s, "db", "db-1", 15, "level=warn msg=\"slow query\" duration_ms=250");
	put(f->s, "db", "db-1", 25, "level=info msg=ok duration_ms=3");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ls_store_close(f->s);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static ls_qresult run(fx *f, const char *text, int64_t start_s, int64_t end_s, int64_t step_s, const ls_qlimits *lim)
{
	ls_query *q;
	cm_err err = {{0}};
	if (ls_logql_parse(text, &q, &err))
		fail_msg("%s: %s", text, err.msg);
	ls_qresult r;
	if (ls_logql_exec(f->s, q, start_s * SEC, end_s * SEC, step_s * SEC, lim, &r, &err))
		fail_msg("%s: %s", text, err.msg);
	ls_logql_free(q);
	return r;
}

static size_t total_entries(const ls_qresult *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->nstreams; i++)
		n += r->streams[i].nentries;
	return n;
}

static const char *lab(const cm_label *l, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].name, name))
			return l[i].value;
	return NULL;
}

static void test_log_queries(void **state)
{
	fx *f = *state;
	ls_qresult r = run(f, "{app=\"web\"}", 0, 100, 0, NULL);
	assert_int_equal(r.nstreams, 2);
	assert_int_equal(total_entries(&r), 4);
	assert_true(r.streams[0].entries[0].ts_ns > r.streams[0].entries[r.streams[0].nentries - 1].ts_ns); /* backward */
	ls_qresult_close(&r);
	ls_qlimits lim = {.limit = 2, .forward = 1};
	r = run(f, "{app=~\"web|db\"}", 0, 100, 0, &lim);
	assert_int_equal(total_entries(&r), 2); /* the two oldest: t=10 web, t=15 db */
	ls_qresult_close(&r);
	r = run(f, "{app=\"web\"} |= \"error\" != \"503\"", 0, 100, 0, NULL);
	assert_int_equal(total_entries(&r), 1);
	assert_int_equal(r.streams[0].entries[0].ts_ns, 10 * SEC);
	ls_qresult_close(&r);
	r = run(f, "{app=\"web\"} |~ \"status\\\":5[0-9]+\"", 0, 100, 0, NULL);
	assert_int_equal(total_entries(&r), 2);
	ls_qresult_close(&r);
	/* json: extracted labels, nested keys flattened, a stream label clash renamed, errors labelled */
	r = run(f, "{app=\"web\"} | json | __error__=\"\" | status >= 500 | line_format \"{{.level_extracted}} {{ .req_path }}|\"",
		0, 100, 0, NULL);
	assert_int_equal(total_entries(&r), 2);
	for (size_t i = 0; i < r.nstreams; i++) {
		const ls_qstream *s = &r.streams[i];
		assert_string_equal(lab(s->labels, s->nlabels, "level_extracted"), "error");
		if (s->entries[0].ts_ns == 10 * SEC) {
			assert_string_equal(lab(s->labels, s->nlabels, "req_path"), "/a");
			assert_memory_equal(s->entries[0].line, "error /a|", 9);
			assert_null(lab(s->labels, s->nlabels, "tags"));
		}
	}
	ls_qresult_close(&r);
	r = run(f, "{app=\"web\"} | json | __error__=\"JSONParserErr\"", 0, 100, 0, NULL);
	assert_int_equal(total_entries(&r), 1);
	ls_qresult_close(&r);
	r = run(f, "{app=\"db\"} | logfmt | duration_ms > 100", 0, 100, 0, NULL);
	assert_int_equal(total_entries(&r), 1);
	assert_string_equal(lab(r.streams[0].labels, r.streams[0].nlabels, "msg"), "slow query");
	ls_qresult_close(&r);
	r = run(f, "{app=\"web\"}", 25, 35, 0, NULL); /* time range */
	assert_int_equal(total_entries(&r), 1);
	ls_qresult_close(&r);
}

static double value_at(const ls_qseries *s, int64_t t_s)
{
	for (size_t i = 0; i < s->npoints; i++)
		if (s->points[i].t_ns == t_s * SEC)
			return s->points[i].v;
	return -1;
}

static void test_metric_queries(void **state)
{
	fx *f = *state;
	ls_qresult r = run(f, "count_over_time({app=\"web\"}[15s])", 0, 60, 10, NULL);
	assert_true(r.metric);
	assert_int_equal(r.nseries, 2);
	for (size_t i = 0; i < r.nseries; i++) {
		const ls_qseries *s = &r.series[i];
		if (!strcmp(lab(s->labels, s->nlabels, "pod"), "web-1")) {
			assert_true(value_at(s, 10) == 1); /* (−5, 10] */
			assert_true(value_at(s, 20) == 2); /* (5, 20] */
			assert_true(value_at(s, 30) == 1);
			assert_true(value_at(s, 40) == -1); /* no point for an empty window */
		}
	}
	ls_qresult_close(&r);
	r = run(f, "sum(count_over_time({app=~\".+\"}[100s]))", 0, 100, 50, NULL);
	assert_int_equal(r.nseries, 1);
	assert_int_equal(r.series[0].nlabels, 0);
	assert_true(value_at(&r.series[0], 50) == 6);
	ls_qresult_close(&r);
	r = run(f, "sum by (app) (rate({app=~\".+\"}[100s]))", 0, 50, 0, NULL); /* instant, at 50 */
	assert_int_equal(r.nseries, 2);
	for (size_t i = 0; i < r.nseries; i++) {
		const ls_qseries *s = &r.series[i];
		assert_int_equal(s->nlabels, 1);
		assert_int_equal(s->npoints, 1);
		double want = !strcmp(s->labels[0].value, "web") ? 4 / 100.0 : 2 / 100.0;
		assert_true(s->points[0].v == want);
	}
	ls_qresult_close(&r);
	r = run(f, "sum(bytes_over_time({app=\"db\"}[1m]))", 0, 30, 0, NULL);
	assert_true(r.series[0].points[0].v == (double)(strlen("level=warn msg=\"slow query\" duration_ms=250") +
							strlen("level=info msg=ok duration_ms=3")));
	ls_qresult_close(&r);
	r = run(f, "sum by (level) (count_over_time({app=\"web\"} | json [1m]))", 0, 60, 0, NULL);
	assert_int_equal(r.nseries, 1); /* the stream label level="info" wins; the json one is level_extracted */
	ls_qresult_close(&r);
	r = run(f, "sum by (level_extracted) (bytes_rate({app=\"web\"} | json | __error__=\"\" [1m]))", 0, 60, 0, NULL);
	assert_int_equal(r.nseries, 2);
	ls_qresult_close(&r);
}

static void test_limits(void **state)
{
	fx *f = *state;
	ls_query *q;
	cm_err err = {{0}};
	ls_qresult r;
	assert_int_equal(ls_logql_parse("{app=~\".+\"}", &q, &err), 0);
	ls_qlimits lim = {.max_scanned = 3};
	assert_int_equal(ls_logql_exec(f->s, q, 0, 100 * SEC, 0, &lim, &r, &err), CM_E2BIG);
	lim = (ls_qlimits){.max_series = 1};
	assert_int_equal(ls_logql_exec(f->s, q, 0, 100 * SEC, 0, &lim, &r, &err), CM_E2BIG);
	assert_int_equal(ls_logql_exec(f->s, q, 100 * SEC, 0, 0, NULL, &r, &err), CM_EINVAL);
	ls_logql_free(q);
	assert_int_equal(ls_logql_parse("count_over_time({app=~\".+\"}[1m])", &q, &err), 0);
	assert_int_equal(ls_logql_exec(f->s, q, 0, 100000 * SEC, 1 * SEC, NULL, &r, &err), CM_E2BIG);
	ls_logql_free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_log_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_metric_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
