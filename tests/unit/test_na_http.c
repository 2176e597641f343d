/* test_na_http.c -- the agent HTTP server: the request-head parser (complete, partial and malformed
 * heads) and parked requests (answered at a later resume, closed when the server closes), over real
 * loopback connections on a libuv loop.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"
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

/* The handler parks /metrics until it was called `park` times; then it answers "ok <calls>". */
typedef struct parker {
	int calls, park;
} parker;

static int park_handler(void *ctx, const char *path, cm_buf *body, const char **ctype)
{
	parker *p = ctx;
	(void)ctype;
	assert_string_equal(path, "/metrics");
	if (++p->calls <= p->park)
		return NA__HTTP_LATER;
	return cm_buf_printf(body, "ok %d", p->calls) ? 500 : 200;
}

/* A blocking client connected to port that has sent a GET /metrics. */
static int client(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Runs the loop until the handler was called want times (bounded). */
static void run_until(uv_loop_t *loop, const parker *p, int want)
{
	for (int i = 0; i < 2000 && p->calls < want; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_int_equal(p->calls, want);
}

static size_t read_all(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	ssize_t r;
	while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = 0;
	return n;
}

static void closed(void *arg) { *(int *)arg = 1; }

static void test_parked_request_answered_at_resume(void **state)
{
	(void)state;
	uv_loop_t loop;
	na__http *h = NULL;
	parker p = {0, 2};
	char listen[32], buf[1024];
	int done = 0, port = itest_port();
	uv_loop_init(&loop);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	assert_int_equal(na__http_start(&loop, listen, park_handler, &p, &h, NULL), 0);
	int fd = client(port);
	run_until(&loop, &p, 1);
	na__http_resume(h); /* parked again */
	assert_int_equal(p.calls, 2);
	na__http_resume(h);
	assert_int_equal(p.calls, 3);
	for (int i = 0; i < 100; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	read_all(fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(buf, "\r\n\r\nok 3"));
	close(fd);
	/* parked when the server closes: the connection is closed unanswered */
	p.calls = 0;
	fd = client(port);
	run_until(&loop, &p, 1);
	na__http_close(h, closed, &done);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_true(done);
	assert_int_equal(read_all(fd, buf, sizeof(buf)), 0);
	close(fd);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse),
					   cmocka_unit_test(test_parked_request_answered_at_resume)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
