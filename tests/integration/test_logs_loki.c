/* test_logs_loki.c -- the aggregator's Loki API on loopback: pushes in Loki's JSON and protobuf + snappy
 * forms (what winston-loki, promtail and Grafana Agent send), refusals (no token, bad JSON, bad labels,
 * bad protobuf), then query_range, query, labels, label values, series and index/stats compared field
 * by field with the shapes of Loki's API documentation; then SIGKILL and a restart: every acknowledged
 * line is still there, once. --loki-push into a second aggregator delivers every line, in order, also
 * across a restart of the receiver. The tail WebSocket: the RFC 6455 handshake, a pushed line arriving as a
 * frame in Loki's tail shape, and a close.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <snappy-c.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

#define TOKEN "loki-test-token"

typedef struct fixture {
	char dir[256], data[300], token[300], url[64];
	itest_proc agg;
	int64_t t0;  /* ns of the first pushed line */
} fixture;

static fixture *F;

static long post(const char *path, const char *ctype, const void *body, size_t n, int auth, cm_buf *reply)
{
	char url[256], ct[128];
	snprintf(url, sizeof(url), "%s%s", F->url, path);
	snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
	const char *h[] = {ct, auth ? "Authorization: Bearer " TOKEN : NULL, NULL};
	reply->len = 0;
	return itest_http("POST", url, h, body, n, reply);
}

static json_t *get(const char *path_and_query)
{
	char url[2048];
	snprintf(url, sizeof(url), "%s%s", F->url, path_and_query);
	long status;
	json_t *j = itest_get_json(url, &status);
	if (status != 200 || !j)
		fail_msg("GET %s: %ld", path_and_query, status);
	return j;
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->data, sizeof(F->data), "%s/data", F->dir);
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	if (itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url)))
		return -1;
	F->t0 = (itest_now_ms() - 60000) * 1000000;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	int st = itest_stop(&F->agg, SIGTERM, 10000);
	itest_rmtree(F->dir);
	free(F);
	return st == 0 ? 0 : -1;
}

/* ---- protobuf by hand (Loki's logproto.PushRequest) -------------------------------------------------------- */

static void pb_varint(cm_buf *b, uint64_t v)
{
	do {
		uint8_t c = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			c |= 0x80;
		cm_buf_append(b, &c, 1);
	} while (v);
}

static void pb_bytes(cm_buf *b, int field, const void *p, size_t n)
{
	pb_varint(b, (uint64_t)field << 3 | 2);
	pb_varint(b, n);
	cm_buf_append(b, p, n);
}

static void proto_push(cm_buf *out, const char *labels, int64_t t, const char *const *lines, int n)
{
	cm_buf req, st, ent, ts;
	cm_buf_init(&req), cm_buf_init(&st), cm_buf_init(&ent), cm_buf_init(&ts);
	pb_bytes(&st, 1, labels, strlen(labels));
	for (int i = 0; i < n; i++) {
		ts.len = ent.len = 0;
		pb_varint(&ts, 1 << 3), pb_varint(&ts, (uint64_t)((t + i) / 1000000000));
		pb_varint(&ts, 2 << 3), pb_varint(&ts, (uint64_t)((t + i) % 1000000000));
		pb_bytes(&ent, 1, ts.data, ts.len);
		pb_bytes(&ent, 2, lines[i], strlen(lines[i]));
		pb_bytes(&st, 2, ent.data, ent.len);
	}
	pb_varint(&st, 3 << 3), pb_varint(&st, 12345); /* hash: ignored */
	pb_bytes(&req, 1, st.data, st.len);
	size_t cap = snappy_max_compressed_length(req.len);
	out->len = 0;
	cm_buf_reserve(out, cap);
	assert_int_equal(snappy_compress((const char *)req.data, req.len, (char *)out->data, &cap), SNAPPY_OK);
	out->len = cap;
	cm_buf_close(&req), cm_buf_close(&st), cm_buf_close(&ent), cm_buf_close(&ts);
}

static void push_all(void)
{
	cm_buf body, reply;
	cm_buf_init(&body), cm_buf_init(&reply);
	int64_t t = F->t0;
	cm_buf_printf(&body,
		      "{\"streams\":[{\"stream\":{\"app\":\"web\",\"pod\":\"web-1\"},\"values\":["
		      "[\"%lld\",\"GET /a 200\"],[\"%lld\",\"GET /b 500 \\\"quoted\\\" \\u00e9\"],"
		      "[\"%lld\",\"{\\\"level\\\":\\\"error\\\",\\\"status\\\":503}\",{\"trace_id\":\"x\"}]]},"
		      "{\"stream\":{\"app\":\"db\",\"pod\":\"db-1\"},\"values\":[[\"%lld\",\"level=warn msg=slow\"]]}]}",
		      (long long)t, (long long)(t + 1000000000), (long long)(t + 2000000000), (long long)(t + 500000000));
	assert_int_equal(post("/loki/api/v1/push", "application/json", body.data, body.len, 1, &reply), 204);
	const char *lines[] = {"proto line 1", "proto line 2"};
	proto_push(&body, "{app=\"proto\", pod=\"p-1\"}", t + 3000000000LL, lines, 2);
	assert_int_equal(post("/loki/api/v1/push", "application/x-protobuf", body.data, body.len, 1, &reply), 204);
	/* refusals, each with a message, nothing stored */
	assert_int_equal(post("/loki/api/v1/push", "application/json", "{}", 2, 0, &reply), 401);
	assert_int_equal(post("/loki/api/v1/push", "application/json", "{\"streams\":[", 12, 1, &reply), 400);
	const char *badlab = "{\"streams\":[{\"stream\":{\"1bad\":\"x\"},\"values\":[[\"1\",\"x\"]]}]}";
	assert_int_equal(post("/loki/api/v1/push", "application/json", badlab, strlen(badlab), 1, &reply), 400);
	const char *badts = "{\"streams\":[{\"stream\":{\"a\":\"x\"},\"values\":[[\"yesterday\",\"x\"]]}]}";
	assert_int_equal(post("/loki/api/v1/push", "application/json", badts, strlen(badts), 1, &reply), 400);
	assert_int_equal(post("/loki/api/v1/push", "application/x-protobuf", "\x05garbage", 8, 1, &reply), 400);
	cm_buf_close(&body), cm_buf_close(&reply);
}

static json_t *data_of(json_t *j, const char *type)
{
	assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
	json_t *d = json_object_get(j, "data");
	if (type)
		assert_string_equal(json_string_value(json_object_get(d, "resultType")), type);
	return d;
}

static char *q(const char *query, const char *extra)
{
	static char buf[2048];
	char enc[1024];
	itest_urlencode(enc, sizeof(enc), query);
	snprintf(buf, sizeof(buf), "query=%s&start=%lld&end=%lld%s", enc, (long long)(F->t0 - 1000000000),
		 (long long)(F->t0 + 10000000000LL), extra);
	return buf;
}

static void check_streams(void)
{
	char path[2400];
	snprintf(path, sizeof(path), "/loki/api/v1/query_range?%s", q("{app=~\"web|db\"}", "&limit=10"));
	json_t *j = get(path), *d = data_of(j, "streams");
	json_t *res = json_object_get(d, "result");
	assert_int_equal(json_array_size(res), 2);
	size_t i;
	json_t *s;
	int seen_web = 0;
	json_array_foreach(res, i, s) {
		json_t *labels = json_object_get(s, "stream"), *values = json_object_get(s, "values");
		assert_true(json_is_object(labels) && json_is_array(values));
		if (strcmp(json_string_value(json_object_get(labels, "app")), "web"))
			continue;
		seen_web = 1;
		assert_string_equal(json_string_value(json_object_get(labels, "pod")), "web-1");
		assert_int_equal(json_object_size(labels), 2);
		assert_int_equal(json_array_size(values), 3);
		json_t *v0 = json_array_get(values, 0); /* backward: newest first */
		char ts[32];
		snprintf(ts, sizeof(ts), "%lld", (long long)(F->t0 + 2000000000));
		assert_string_equal(json_string_value(json_array_get(v0, 0)), ts);
		assert_string_equal(json_string_value(json_array_get(v0, 1)), "{\"level\":\"error\",\"status\":503}");
		assert_string_equal(json_string_value(json_array_get(json_array_get(values, 1), 1)),
				    "GET /b 500 \"quoted\" \xc3\xa9");
	}
	assert_true(seen_web);
	assert_non_null(json_object_get(d, "stats"));
	json_decref(j);
	/* a pipeline, forward */
	snprintf(path, sizeof(path), "/loki/api/v1/query_range?%s",
		 q("{app=\"web\"} | json | __error__=\"\" | status >= 500 | line_format \"{{.level}}!\"", "&direction=forward"));
	j = get(path);
	res = json_object_get(data_of(j, "streams"), "result");
	assert_int_equal(json_array_size(res), 1);
	s = json_array_get(res, 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(s, "stream"), "level")), "error");
	assert_string_equal(json_string_value(json_array_get(json_array_get(json_object_get(s, "values"), 0), 1)), "error!");
	json_decref(j);
	snprintf(path, sizeof(path), "/loki/api/v1/query_range?%s", q("{app=\"proto\"} |= \"line 2\"", ""));
	j = get(path);
	res = json_object_get(data_of(j, "streams"), "result");
	assert_int_equal(json_array_size(res), 1);
	json_decref(j);
}

static void check_metrics(void)
{
	char path[2400];
	snprintf(path, sizeof(path), "/loki/api/v1/query_range?%s", q("sum by (app) (count_over_time({app=~\".+\"}[1m]))", "&step=5"));
	json_t *j = get(path), *res = json_object_get(data_of(j, "matrix"), "result");
	assert_int_equal(json_array_size(res), 3);
	size_t i;
	json_t *s;
	json_array_foreach(res, i, s) {
		json_t *m = json_object_get(s, "metric"), *vals = json_object_get(s, "values");
		assert_int_equal(json_object_size(m), 1);
		json_t *last = json_array_get(vals, json_array_size(vals) - 1);
		assert_true(json_is_number(json_array_get(last, 0))); /* [<unix seconds>, "<value>"] */
		const char *app = json_string_value(json_object_get(m, "app"));
		const char *want = !strcmp(app, "web") ? "3" : !strcmp(app, "db") ? "1" : "2";
		assert_string_equal(json_string_value(json_array_get(last, 1)), want);
	}
	json_decref(j);
	char enc[256];
	itest_urlencode(enc, sizeof(enc), "sum(count_over_time({app=~\".+\"}[5m]))");
	snprintf(path, sizeof(path), "/loki/api/v1/query?query=%s&time=%lld", enc, (long long)(F->t0 + 60000000000LL));
	j = get(path);
	res = json_object_get(data_of(j, "vector"), "result");
	assert_int_equal(json_array_size(res), 1);
	json_t *v = json_object_get(json_array_get(res, 0), "value");
	assert_true(json_is_number(json_array_get(v, 0)));
	assert_string_equal(json_string_value(json_array_get(v, 1)), "6");
	json_decref(j);
	/* bad queries: 400 with Loki's plain-text message */
	cm_buf reply;
	cm_buf_init(&reply);
	snprintf(path, sizeof(path), "%s/loki/api/v1/query_range?query=%%7Bapp", F->url);
	assert_int_equal(itest_http("GET", path, NULL, NULL, 0, &reply), 400);
	assert_non_null(strstr((const char *)reply.data, "parse error"));
	cm_buf_close(&reply);
}

static int has_str(json_t *arr, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) if (!strcmp(json_string_value(v), s)) return 1;
	return 0;
}

static void check_labels_series(void)
{
	char path[2400];
	snprintf(path, sizeof(path), "/loki/api/v1/labels?start=%lld", (long long)(F->t0 - 1000000000));
	json_t *j = get(path), *d = data_of(j, NULL);
	assert_int_equal(json_array_size(d), 2);
	assert_true(has_str(d, "app") && has_str(d, "pod"));
	json_decref(j);
	snprintf(path, sizeof(path), "/loki/api/v1/label/app/values?start=%lld", (long long)(F->t0 - 1000000000));
	j = get(path), d = data_of(j, NULL);
	assert_int_equal(json_array_size(d), 3);
	assert_string_equal(json_string_value(json_array_get(d, 0)), "db"); /* sorted */
	assert_string_equal(json_string_value(json_array_get(d, 2)), "web");
	json_decref(j);
	char enc[128];
	itest_urlencode(enc, sizeof(enc), "{app=\"web\"}");
	snprintf(path, sizeof(path), "/loki/api/v1/series?match[]=%s&start=%lld", enc, (long long)(F->t0 - 1000000000));
	j = get(path), d = data_of(j, NULL);
	assert_int_equal(json_array_size(d), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "pod")), "web-1");
	json_decref(j);
	snprintf(path, sizeof(path), "/loki/api/v1/index/stats?%s", q("{app=~\".+\"}", ""));
	j = get(path);
	assert_int_equal(json_integer_value(json_object_get(j, "streams")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "entries")), 6);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes")),
			 strlen("GET /a 200") + strlen("GET /b 500 \"quoted\" \xc3\xa9") +
				 strlen("{\"level\":\"error\",\"status\":503}") + strlen("level=warn msg=slow") + 24);
	json_decref(j);
}

static size_t count_all(void)
{
	char path[2400];
	snprintf(path, sizeof(path), "/loki/api/v1/query_range?%s", q("{app=~\".+\"}", "&limit=1000"));
	json_t *j = get(path), *res = json_object_get(data_of(j, "streams"), "result");
	size_t n = 0, i;
	json_t *s;
	json_array_foreach(res, i, s) n += json_array_size(json_object_get(s, "values"));
	json_decref(j);
	return n;
}

/* ---- tail -------------------------------------------------------------------------------------------- */

static int read_some(int fd, char *buf, size_t cap, size_t *len, int timeout_ms)
{
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, timeout_ms) <= 0)
		return -1;
	ssize_t r = recv(fd, buf + *len, cap - *len - 1, 0);
	if (r <= 0)
		return r == 0 ? -2 : -1; /* -2: the peer closed the connection */
	*len += (size_t)r;
	buf[*len] = 0;
	return 0;
}

/* One server frame (unmasked, payload < 64 KiB) from buf/len, reading more as needed. */
static int read_frame(int fd, char *buf, size_t cap, size_t *len, int *op, char **payload, size_t *plen)
{
	int64_t deadline = itest_now_ms() + 10000;
	for (;;) {
		if (*len >= 2) {
			size_t n = (uint8_t)buf[1] & 0x7f, hl = 2;
			if (n == 126 && *len >= 4)
				n = (size_t)(uint8_t)buf[2] << 8 | (uint8_t)buf[3], hl = 4;
			if (n != 126 && *len >= hl + n) {
				*op = buf[0] & 0x0f, *payload = buf + hl, *plen = n;
				return 0;
			}
		}
		if (itest_now_ms() > deadline || read_some(fd, buf, cap, len, 1000) == -2)
			return -1;
	}
}

static void check_tail(void)
{
	int port = atoi(strrchr(F->url, ':') + 1);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	char req[512], buf[65536];
	int n = snprintf(req, sizeof(req),
			 "GET /loki/api/v1/tail?query=%%7Bapp%%3D%%22tail%%22%%7D&start=%lld HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			 "Sec-WebSocket-Version: 13\r\n\r\n",
			 (long long)(F->t0 - 1000000000));
	assert_int_equal(send(fd, req, (size_t)n, 0), n);
	size_t len = 0;
	char *end = NULL;
	while (!end && read_some(fd, buf, sizeof(buf), &len, 5000) == 0)
		end = strstr(buf, "\r\n\r\n");
	assert_non_null(end);
	assert_non_null(strstr(buf, " 101 "));
	assert_non_null(strstr(buf, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")); /* RFC 6455's example key and answer */
	size_t hl = (size_t)(end + 4 - buf);
	memmove(buf, buf + hl, len - hl);
	len -= hl;
	cm_buf body, reply;
	cm_buf_init(&body), cm_buf_init(&reply);
	cm_buf_printf(&body, "{\"streams\":[{\"stream\":{\"app\":\"tail\"},\"values\":[[\"%lld\",\"tailed line\"]]}]}",
		      (long long)(F->t0 + 5000000000LL));
	assert_int_equal(post("/loki/api/v1/push", "application/json", body.data, body.len, 1, &reply), 204);
	int op = 0;
	char *payload = NULL;
	size_t plen = 0;
	if (read_frame(fd, buf, sizeof(buf), &len, &op, &payload, &plen)) {
		itest_dump_log(&F->agg);
		fail_msg("no frame from the tail");
	}
	assert_int_equal(op, 1);
	json_error_t jerr;
	json_t *j = json_loadb(payload, plen, 0, &jerr);
	json_t *st = json_array_get(json_object_get(j, "streams"), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(st, "stream"), "app")), "tail");
	json_t *v = json_array_get(json_object_get(st, "values"), 0);
	assert_string_equal(json_string_value(json_array_get(v, 1)), "tailed line");
	char ts[32];
	snprintf(ts, sizeof(ts), "%lld", (long long)(F->t0 + 5000000000LL));
	assert_string_equal(json_string_value(json_array_get(v, 0)), ts);
	json_decref(j);
	/* our close: the answer is one close frame echoing 1000, then the end of the connection */
	const uint8_t close_frame[] = {0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2}; /* masked close 1000 */
	assert_int_equal(send(fd, close_frame, sizeof(close_frame), 0), (ssize_t)sizeof(close_frame));
	int closes = 0;
	for (;;) {
		size_t used = (size_t)(payload - buf) + plen; /* drop the frame read last */
		memmove(buf, buf + used, len - used);
		len -= used;
		if (read_frame(fd, buf, sizeof(buf), &len, &op, &payload, &plen))
			break;
		if (op == 8) {
			closes++;
			assert_int_equal(plen, 2);
			assert_memory_equal(payload, "\x03\xe8", 2);
		}
	}
	assert_int_equal(closes, 1);
	close(fd);
	cm_buf_close(&body), cm_buf_close(&reply);
}

static void test_loki_api(void **state)
{
	(void)state;
	push_all();
	check_streams();
	check_metrics();
	check_labels_series();
	check_tail();
	/* acknowledged means durable: SIGKILL, restart, same lines, once */
	assert_int_equal(count_all(), 7);
	itest_stop(&F->agg, SIGKILL, 1000);
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url)), 0);
	assert_int_equal(count_all(), 7);
}

/* ---- --loki-push --------------------------------------------------------------------------------------- */

static void push_batch(const char *url, int first, int n)
{
	cm_buf body, reply;
	cm_buf_init(&body), cm_buf_init(&reply);
	cm_buf_puts(&body, "{\"streams\":[{\"stream\":{\"app\":\"fwd\"},\"values\":[");
	for (int i = 0; i < n; i++)
		cm_buf_printf(&body, "%s[\"%lld\",\"line %d\"]", i ? "," : "", (long long)(F->t0 + (first + i) * 1000LL),
			      first + i);
	cm_buf_puts(&body, "]}]}");
	char u[128];
	snprintf(u, sizeof(u), "%s/loki/api/v1/push", url);
	const char *h[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN, NULL};
	assert_int_equal(itest_http("POST", u, h, body.data, body.len, &reply), 204);
	cm_buf_close(&body), cm_buf_close(&reply);
}

/* Lines of {app="fwd"} at url (every one checked to be "line <i>" with i < n, each once). */
static int fwd_count(const char *url, int n)
{
	char path[1024], enc[64];
	itest_urlencode(enc, sizeof(enc), "{app=\"fwd\"}");
	snprintf(path, sizeof(path), "%s/loki/api/v1/query_range?query=%s&start=%lld&end=%lld&limit=5000&direction=forward",
		 url, enc, (long long)(F->t0 - 1000000000), (long long)(F->t0 + 1000000000));
	long status;
	json_t *j = itest_get_json(path, &status);
	json_t *values = json_object_get(json_array_get(json_object_get(json_object_get(j, "data"), "result"), 0), "values");
	char *seen = calloc((size_t)n, 1);
	int got = 0;
	size_t i;
	json_t *v;
	json_array_foreach(values, i, v) {
		int k = -1;
		if (sscanf(json_string_value(json_array_get(v, 1)), "line %d", &k) != 1 || k < 0 || k >= n || seen[k]++)
			fail_msg("bad or repeated line %s", json_string_value(json_array_get(v, 1)));
		if (k != (int)i)
			fail_msg("line %d at position %zu", k, i);
		got++;
	}
	free(seen);
	json_decref(j);
	return got;
}

static void test_loki_forward(void **state)
{
	(void)state;
	itest_proc down;
	char ddata[400], durl[64] = "", fwd_url[128];
	snprintf(ddata, sizeof(ddata), "%s/downstream", F->dir);
	assert_int_equal(itest_aggregator_start(&down, F->dir, ddata, F->token, NULL, durl, sizeof(durl)), 0);
	/* the first aggregator again, now forwarding */
	assert_int_equal(itest_stop(&F->agg, SIGTERM, 10000), 0);
	snprintf(fwd_url, sizeof(fwd_url), "%s/loki/api/v1/push", durl);
	setenv("CORRAL_LOKI_PUSH_TOKEN", TOKEN, 1);
	const char *extra[] = {"--loki-push", fwd_url, NULL};
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, F->data, F->token, extra, F->url, sizeof(F->url)), 0);
	for (int b = 0; b < 20; b++)
		push_batch(F->url, b * 100, 100);
	int64_t deadline = itest_now_ms() + 20000;
	while (fwd_count(durl, 4000) < 2000 && itest_now_ms() < deadline)
		itest_sleep_ms(100);
	assert_int_equal(fwd_count(durl, 4000), 2000);
	/* the receiver goes away: pushes are still acknowledged, and delivered once it is back */
	assert_int_equal(itest_stop(&down, SIGTERM, 10000), 0);
	for (int b = 20; b < 40; b++)
		push_batch(F->url, b * 100, 100);
	itest_sleep_ms(500);
	assert_int_equal(itest_aggregator_start(&down, F->dir, ddata, F->token, NULL, durl, sizeof(durl)), 0);
	deadline = itest_now_ms() + 30000;
	while (fwd_count(durl, 4000) < 4000 && itest_now_ms() < deadline)
		itest_sleep_ms(200);
	assert_int_equal(fwd_count(durl, 4000), 4000);
	assert_int_equal(fwd_count(F->url, 4000), 4000);
	assert_int_equal(itest_stop(&down, SIGTERM, 10000), 0);
	unsetenv("CORRAL_LOKI_PUSH_TOKEN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test_setup_teardown(test_loki_api, setup, teardown),
					   cmocka_unit_test_setup_teardown(test_loki_forward, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
