/* test_ag_promql.c -- the selector parser: every matcher type, the string syntaxes and their escapes,
 * and the errors users see for what is not (yet) supported.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "ag_int.h"

static void parse_ok(const char *q, size_t n, ag__selector *sel, cm_arena *a)
{
	cm_err err = {{0}};
	int rc = ag__selector_parse(q, a, sel, &err);
	if (rc)
		fail_msg("%s: %s", q, err.msg);
	assert_int_equal(sel->nmatchers, n);
}

static void expect_matcher(const ag__selector *sel, size_t i, ts_match_type t, const char *name, const char *value)
{
	assert_int_equal(sel->matchers[i].type, t);
	assert_string_equal(sel->matchers[i].name, name);
	assert_string_equal(sel->matchers[i].value, value);
}

static void test_selectors(void **state)
{
	(void)state;
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ag__selector s;
	parse_ok("up", 1, &s, &a);
	expect_matcher(&s, 0, TS_MATCH_EQ, "__name__", "up");
	ag__selector_close(&s);
	parse_ok("  container_cpu_usage_seconds_total { id = \"/a/b\" , image!='x', pod=~`web-.*`,ns!~\"kube-.*\", } ",
		 5, &s, &a);
	expect_matcher(&s, 0, TS_MATCH_EQ, "__name__", "container_cpu_usage_seconds_total");
	expect_matcher(&s, 1, TS_MATCH_EQ, "id", "/a/b");
	expect_matcher(&s, 2, TS_MATCH_NE, "image", "x");
	expect_matcher(&s, 3, TS_MATCH_RE, "pod", "web-.*");
	expect_matcher(&s, 4, TS_MATCH_NRE, "ns", "kube-.*");
	assert_true(ts_matcher_matches(&s.matchers[3], "web-1"));
	assert_false(ts_matcher_matches(&s.matchers[3], "xweb-1")); /* anchored */
	ag__selector_close(&s);
	parse_ok("{__name__=~\"node_.*\", job=\"x\"}", 2, &s, &a);
	expect_matcher(&s, 0, TS_MATCH_RE, "__name__", "node_.*");
	ag__selector_close(&s);
	parse_ok("ns:metric:rate5m", 1, &s, &a);
	ag__selector_close(&s);
	parse_ok("m{a=\"\\\"q\\\" \\\\ \\n \\t \\x41 \\101 \\u00e9 \\U0001F600\", b='it\\'s', c=`raw\\n`}", 4, &s, &a);
	expect_matcher(&s, 1, TS_MATCH_EQ, "a", "\"q\" \\ \n \t A A \xc3\xa9 \xf0\x9f\x98\x80");
	expect_matcher(&s, 2, TS_MATCH_EQ, "b", "it's");
	expect_matcher(&s, 3, TS_MATCH_EQ, "c", "raw\\n");
	ag__selector_close(&s);
	cm_arena_close(&a);
}

static void parse_err(const char *q, const char *words)
{
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ag__selector s;
	cm_err err = {{0}};
	assert_int_not_equal(ag__selector_parse(q, &a, &s, &err), 0);
	if (!strstr(err.msg, words))
		fail_msg("%s: got '%s', wanted '%s'", q, err.msg, words);
	cm_arena_close(&a);
}

static void test_errors(void **state)
{
	(void)state;
	parse_err("", "expected a metric name");
	parse_err("rate(x[5m])", "unexpected input after the selector");
	parse_err("sum by (a) (x)", "unexpected input");
	parse_err("x{a=\"b}", "unterminated quoted string");
	parse_err("x{a==\"b\"}", "expected one of");
	parse_err("x{a=b}", "expected a quoted string");
	parse_err("x{1a=\"b\"}", "expected a label name");
	parse_err("x{a=\"b\" c=\"d\"}", "expected \",\" or \"}\"");
	parse_err("x{__name__=\"y\"}", "metric name must not be set twice");
	parse_err("{a=\"\"}", "at least one non-empty matcher");
	parse_err("{a=~\".*\"}", "at least one non-empty matcher");
	parse_err("x{a=\"\\q\"}", "unknown escape sequence");
	parse_err("x{a=\"\\xZZ\"}", "invalid escape sequence");
	parse_err("x{a=\"\\uD800\"}", "invalid Unicode code point");
	parse_err("x{a=\"\xff\"}", "not valid UTF-8");
	parse_err("x{a=~\"(\"}", "regex");
	/* patterns that made glibc's regex compiler take gigabytes or hang (found by the LogQL fuzzer) */
	parse_err("x{a=~\"a++++++++++\"}", "stacked repetitions");
	parse_err("x{a=~\"((a{9}){9}){9}\"}", "count over 1000");
	parse_err("x{a=~\"(a)\\\\1\"}", "back-reference");
	parse_err("x{a=~\"()*\"}", "empty group");
	parse_err("x{a=\"1\",a=\"2\",b=\"3\",c=\"4\",d=\"5\",e=\"6\",f=\"7\",g=\"8\",h=\"9\",i=\"1\",j=\"1\",k=\"1\","
		  "l=\"1\",m=\"1\",n=\"1\",o=\"1\",p=\"1\",q=\"1\",r=\"1\",s=\"1\",t=\"1\",u=\"1\",v=\"1\",w=\"1\","
		  "x=\"1\",y=\"1\",z=\"1\",aa=\"1\",ab=\"1\",ac=\"1\",ad=\"1\",ae=\"1\",af=\"1\",ag=\"1\",ah=\"1\","
		  "ai=\"1\",aj=\"1\",ak=\"1\",al=\"1\",am=\"1\",an=\"1\",ao=\"1\",ap=\"1\",aq=\"1\",ar=\"1\",as=\"1\","
		  "at=\"1\",au=\"1\",av=\"1\",aw=\"1\",ax=\"1\",ay=\"1\",az=\"1\",ba=\"1\",bb=\"1\",bc=\"1\",bd=\"1\","
		  "be=\"1\",bf=\"1\",bg=\"1\",bh=\"1\",bi=\"1\",bj=\"1\",bk=\"1\"}",
		  "more than 64 label matchers");
}

static void test_json_time(void **state)
{
	(void)state;
	struct {
		int64_t ms;
		const char *s;
	} cases[] = {{1700000000000, "1700000000"}, {1700000000500, "1700000000.5"}, {1700000000123, "1700000000.123"},
		     {1700000000010, "1700000000.01"}, {0, "0"}, {-1500, "-1.5"}, {-500, "-0.5"}, {-1200, "-1.2"}};
	for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
		cm_buf b;
		cm_buf_init(&b);
		ag__put_json_time(&b, cases[i].ms);
		assert_string_equal((char *)b.data, cases[i].s);
		cm_buf_close(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_selectors),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_json_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
