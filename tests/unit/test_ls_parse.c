/* test_ls_parse.c -- the container log parsers: RFC 3339 times, every field of CRI and docker json-file
 * lines, partial pieces and their joining, bad lines, container metadata from kubelet paths.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "ls_int.h"

#define S(x) x, sizeof(x) - 1

static void test_time(void **state)
{
	(void)state;
	int64_t ns;
	assert_int_equal(ls_parse_time(S("1970-01-01T00:00:00Z"), &ns), 0);
	assert_int_equal(ns, 0);
	assert_int_equal(ls_parse_time(S("2024-05-01T10:00:00.123456789Z"), &ns), 0);
	assert_int_equal(ns, 1714557600123456789LL);
	assert_int_equal(ls_parse_time(S("2024-05-01T10:00:00.5Z"), &ns), 0); /* Go drops trailing zeros */
	assert_int_equal(ns, 1714557600500000000LL);
	assert_int_equal(ls_parse_time(S("2024-05-01T12:00:00.25+02:00"), &ns), 0);
	assert_int_equal(ns, 1714557600250000000LL);
	assert_int_equal(ls_parse_time(S("2024-05-01T05:30:00-04:30"), &ns), 0);
	assert_int_equal(ns, 1714557600000000000LL);
	assert_int_equal(ls_parse_time(S("2024-02-29T00:00:00Z"), &ns), 0); /* leap year */
	const char *bad[] = {"2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01 10:00:00Z",
			     "2024-05-01T10:00:00", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00.1234567890Z",
			     "2024-05-01T24:00:00Z", "1969-12-31T23:59:59Z", "2024-05-01T10:00:00+0200",
			     "2024-05-01T10:00:00Zx", "x024-05-01T10:00:00Z", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ls_parse_time(bad[i], strlen(bad[i]), &ns) != CM_EPROTO)
			fail_msg("accepted %s", bad[i]);
}

static void cri_ok(const char *s, int stream, int partial, const char *msg)
{
	ls_line l;
	int rc = ls_cri_parse(s, strlen(s), &l);
	if (rc)
		fail_msg("rejected %s", s);
	assert_int_equal(l.stream, stream);
	assert_int_equal(l.partial, partial);
	assert_int_equal(l.len, strlen(msg));
	assert_memory_equal(l.msg, msg, l.len);
}

static void test_cri(void **state)
{
	(void)state;
	ls_line l;
	const char *s = "2024-05-01T10:00:00.123456789Z stdout F hello world";
	assert_int_equal(ls_cri_parse(s, strlen(s), &l), 0);
	assert_int_equal(l.ts_ns, 1714557600123456789LL);
	cri_ok("2024-05-01T10:00:00Z stderr P  two  spaces ", LS_STDERR, 1, " two  spaces ");
	cri_ok("2024-05-01T10:00:00Z stdout F", LS_STDOUT, 0, "");       /* empty message, no space */
	cri_ok("2024-05-01T10:00:00Z stdout F ", LS_STDOUT, 0, "");      /* empty message */
	cri_ok("2024-05-01T10:00:00Z stdout F:x:y msg", LS_STDOUT, 0, "msg"); /* containerd tags */
	cri_ok("2024-05-01T10:00:00+01:00 stdout F \xff\xfe binary\r", LS_STDOUT, 0, "\xff\xfe binary\r");
	const char *bad[] = {"", "hello", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z stdout",
			     "2024-05-01T10:00:00Z stdout ", "2024-05-01T10:00:00Z stdin F x",
			     "2024-05-01T10:00:00Z stdout X x", "2024-05-01T10:00:00Z stdout Fx",
			     "2024-05-01 stdout F x", "not-a-time stdout F x", "2024-05-01T10:00:00Z  stdout F x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ls_cri_parse(bad[i], strlen(bad[i]), &l) != CM_EPROTO)
			fail_msg("accepted '%s'", bad[i]);
}

static void docker_ok(const char *s, int stream, int partial, const char *msg, size_t msglen)
{
	ls_line l;
	cm_buf b;
	cm_buf_init(&b);
	if (ls_docker_parse(s, strlen(s), &b, &l))
		fail_msg("rejected %s", s);
	assert_int_equal(l.stream, stream);
	assert_int_equal(l.partial, partial);
	assert_int_equal(l.len, msglen);
	assert_memory_equal(l.msg, msg, msglen);
	cm_buf_close(&b);
}

static void test_docker(void **state)
{
	(void)state;
	ls_line l;
	cm_buf b;
	cm_buf_init(&b);
	const char *s = "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00.123456789Z\"}";
	assert_int_equal(ls_docker_parse(s, strlen(s), &b, &l), 0);
	assert_int_equal(l.ts_ns, 1714557600123456789LL);
	assert_false(l.partial);
	docker_ok("{\"stream\":\"stderr\", \"attrs\":{\"a\":[1,2,{\"b\":null}],\"c\":true}, \"time\":\"2024-05-01T10:00:00Z\","
		  " \"log\":\"part\"}",
		  LS_STDERR, 1, "part", 4);
	docker_ok("{\"log\":\"q\\\"b\\\\s\\/t\\tn\\u00e9\\ud83d\\ude00\\u0000\\n\",\"stream\":\"stdout\",\"time\":"
		  "\"2024-05-01T10:00:00Z\"}",
		  LS_STDOUT, 0, "q\"b\\s/t\tn\xc3\xa9\xf0\x9f\x98\x80\0", 16);
	docker_ok("{\"log\":\"\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}", LS_STDOUT, 0, "", 0);
	docker_ok("{\"log\":\"\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}", LS_STDOUT, 1, "", 0);
	const char *bad[] = {
		"", "{}", "[]", "{\"log\":\"x\\n\",\"stream\":\"stdout\"}",
		"{\"log\":\"x\\n\",\"stream\":\"stdin\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"yesterday\"}",
		"{\"log\":1,\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"x\\q\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"\\ud83d\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"\\ude00\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"x\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"} trailing",
		"{\"log\":\"x\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"",
		"{\"log\":\"x\",\"log\":\"y\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"x\",\"stream\":\"std\\u006fut\",\"time\":\"2024-05-01T10:00:00Z\"}",
		"{\"log\":\"tab\there\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:00Z\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ls_docker_parse(bad[i], strlen(bad[i]), &b, &l) != CM_EPROTO)
			fail_msg("accepted '%s'", bad[i]);
	cm_buf_close(&b);
}

static int feed_cri(ls__joiner *j, const char *s, uint64_t off, ls__rec *r)
{
	ls_line l;
	assert_int_equal(ls_cri_parse(s, strlen(s), &l), 0);
	return ls__join_feed(j, &l, off, 0, r);
}

static void test_join(void **state)
{
	(void)state;
	ls__joiner j;
	ls__join_init(&j, 10);
	ls__rec r;
	/* stdout P, stderr F in between, stdout P, stdout F: two records, the stdout one joined */
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:01Z stdout P abc", 0, &r), 0);
	assert_int_equal(ls__join_resume(&j, 100), 0);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:02Z stderr F err", 34, &r), 1);
	assert_int_equal(r.stream, LS_STDERR);
	assert_int_equal(r.len, 3);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:03Z stdout P def", 68, &r), 0);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:04Z stdout F g", 102, &r), 1);
	assert_int_equal(r.stream, LS_STDOUT);
	assert_int_equal(r.ts_ns, 1714557601000000000LL); /* the first piece's time */
	assert_int_equal(r.len, 7);
	assert_memory_equal(r.msg, "abcdefg", 7);
	assert_false(r.truncated);
	assert_int_equal(ls__join_resume(&j, 200), 200);
	/* over the limit: cut at 10 bytes, marked */
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:05Z stdout P 123456", 0, &r), 0);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:05Z stdout P 789012", 0, &r), 0);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:05Z stdout F 345", 0, &r), 1);
	assert_int_equal(r.len, 10);
	assert_memory_equal(r.msg, "1234567890", 10);
	assert_true(r.truncated);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:05Z stdout F 12345678901", 0, &r), 1);
	assert_int_equal(r.len, 10);
	assert_true(r.truncated);
	assert_int_equal(feed_cri(&j, "2024-05-01T10:00:05Z stdout F 1234567890", 0, &r), 1);
	assert_false(r.truncated);
	ls__join_close(&j);
}

static void test_paths(void **state)
{
	(void)state;
	ls__meta m;
	assert_int_equal(ls__meta_from_pods_path("/r/var/log/pods/default_web-1_0a1b-2c/nginx/0.log", &m), 0);
	assert_string_equal(m.ns, "default");
	assert_string_equal(m.pod, "web-1");
	assert_string_equal(m.uid, "0a1b-2c");
	assert_string_equal(m.container, "nginx");
	assert_string_equal(m.container_id, "");
	assert_int_equal(ls__meta_from_containers_path("/var/log/containers/web-1_default_istio-proxy-abc123.log", &m), 0);
	assert_string_equal(m.pod, "web-1");
	assert_string_equal(m.ns, "default");
	assert_string_equal(m.container, "istio-proxy");
	assert_string_equal(m.container_id, "abc123");
	assert_int_equal(ls__meta_from_pods_path("/var/log/pods/default_web/nginx/0.log", &m), CM_EINVAL);
	assert_int_equal(ls__meta_from_pods_path("/var/log/pods/a_b_c_d/nginx/0.log", &m), CM_EINVAL);
	assert_int_equal(ls__meta_from_pods_path("/var/log/pods/a_b_c/nginx/0.txt", &m), CM_EINVAL);
	assert_int_equal(ls__meta_from_pods_path("0.log", &m), CM_EINVAL);
	assert_int_equal(ls__meta_from_containers_path("/x/web_default_nginx.log", &m), CM_EINVAL);
	assert_int_equal(ls__meta_from_containers_path("/x/web_default-abc.log", &m), CM_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time),  cmocka_unit_test(test_cri),   cmocka_unit_test(test_docker),
		cmocka_unit_test(test_join),  cmocka_unit_test(test_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
