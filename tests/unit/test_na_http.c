/* test_na_http.c -- the agent HTTP server's request-head parser: complete, partial and malformed heads. */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "na_int.h"

static int parse(const char *req, char *method, char *path)
{
	return na__http_parse_request(req, strlen(req), method, 16, path, 64);
}

static void test_parse(void **state)
{
	(void)state;
	char m[16], p[64];
	const char *get = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
	assert_int_equal(parse(get, m, p), (int)strlen(get));
	assert_string_equal(m, "GET");
	assert_string_equal(p, "/metrics");
	assert_int_equal(parse("HEAD /healthz HTTP/1.0\r\n\r\nextra", m, p), 26);
	assert_string_equal(m, "HEAD");
	assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: a\r\n", m, p), 0); /* incomplete */
	assert_int_equal(parse("", m, p), 0);
	assert_int_equal(parse("GET /metrics\r\n\r\n", m, p), CM_EPROTO);
	assert_int_equal(parse("GET metrics HTTP/1.1\r\n\r\n", m, p), CM_EPROTO);
	assert_int_equal(parse("GET /metrics HTTP/2.0\r\n\r\n", m, p), CM_EPROTO);
	assert_int_equal(parse("GET  /metrics HTTP/1.1\r\n\r\n", m, p), CM_EPROTO);
	assert_int_equal(parse("VERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", m, p), CM_EPROTO);
	assert_int_equal(parse("GET /\x01 HTTP/1.1\r\n\r\n", m, p), CM_EPROTO);
	char longpath[200] = "GET /";
	memset(longpath + 5, 'a', 100);
	strcpy(longpath + 105, " HTTP/1.1\r\n\r\n");
	assert_int_equal(parse(longpath, m, p), CM_EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
