/* test_push_reject.c -- the push endpoint refuses what it must and keeps serving: no or wrong token
 * (401), truncated, bit-flipped, oversized, decompression-bomb and malformed bodies (400 with a
 * message); retried batches are acknowledged once and stored once; the query API answers bad
 * parameters with Prometheus' bad_data envelope. After every refusal the aggregator still answers
 * /healthz and the data accepted before is still there.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "itest.h"

#define TOKEN "reject-test-token"

typedef struct fixture {
	char dir[256], token[300], url[64];
	itest_proc agg;
} fixture;

static fixture *F;

static long push(const void *body, size_t len, const char *token, cm_buf *reply)
{
	return itest_push(F->url, token, body, len, reply);
}

/* A valid frame: one series test_reject_value{case=name} = v at t. */
static void make_frame(cm_buf *out, uint64_t seq, const char *name, int64_t t, double v)
{
	cm_label labels[] = {{"__name__", "test_reject_value"}, {"case", name}};
	cm_sample smp = {t, v};
	cm_series s = {labels, 2, &smp, 1};
	cm_batch b = {.node = "reject-node", .boot_id = "boot-1", .agent_version = "test", .seq = seq,
		      .created_ms = t, .series = &s, .nseries = 1};
	cm_err err;
	out->len = 0;
	assert_int_equal(cm_wire_encode(&b, 1, out, &err), 0);
}

/* Frames a raw zstd body with a correct CRC, so only the later checks can refuse it. */
static void frame_raw(cm_buf *out, const void *zbody, size_t zlen, uint32_t declared)
{
	uint8_t h[CM_WIRE_HEADER] = {'C', 'R', 'L', 'B', 1, 1, 0, 0};
	cm_put_u32le(h + 8, declared);
	cm_put_u32le(h + 12, (uint32_t)zlen);
	cm_put_u32le(h + 16, cm_crc32c(cm_crc32c(0, h, 16), zbody, zlen));
	out->len = 0;
	cm_buf_append(out, h, sizeof(h));
	cm_buf_append(out, zbody, zlen);
}

static void expect_400(const void *body, size_t len, const char *words)
{
	cm_buf reply;
	cm_buf_init(&reply);
	long st = push(body, len, TOKEN, &reply);
	if (st != 400 || !reply.data || !strstr((char *)reply.data, words))
		fprintf(stderr, "HTTP %ld: %s (wanted 400 with '%s')\n", st, reply.data ? (char *)reply.data : "", words);
	assert_int_equal(st, 400);
	assert_non_null(strstr((char *)reply.data, "\"status\":\"error\""));
	assert_non_null(strstr((char *)reply.data, words));
	cm_buf_close(&reply);
	char health[128];
	snprintf(health, sizeof(health), "%s/healthz", F->url);
	assert_int_equal(itest_http("GET", health, NULL, NULL, 0, NULL), 200);
}

static json_t *query(const char *params, long *status)
{
	char url[2048];
	snprintf(url, sizeof(url), "%s/api/v1/%s", F->url, params);
	return itest_get_json(url, status);
}

/* The value of test_reject_value{case=name} at t (newest sample at or before t); returns the number
 * of series found (0 or 1). */
static int value_at(const char *name, int64_t t, double *last)
{
	char params[512];
	long st;
	snprintf(params, sizeof(params), "query_range?query=test_reject_value%%7Bcase%%3D%%22%s%%22%%7D"
					  "&start=%.3f&end=%.3f&step=0.001", name, t / 1000.0, t / 1000.0);
	json_t *j = query(params, &st);
	assert_int_equal(st, 200);
	json_t *res = json_object_get(json_object_get(j, "data"), "result");
	int n = (int)json_array_size(res);
	if (n) {
		json_t *vals = json_object_get(json_array_get(res, 0), "values");
		*last = strtod(json_string_value(json_array_get(json_array_get(vals, 0), 1)), NULL);
	}
	json_decref(j);
	return n;
}

static void test_auth(void **state)
{
	(void)state;
	cm_buf f, reply;
	cm_buf_init(&f);
	cm_buf_init(&reply);
	make_frame(&f, 1, "auth", 1000, 1);
	assert_int_equal(push(f.data, f.len, NULL, &reply), 401);
	assert_non_null(strstr((char *)reply.data, "unauthorized"));
	assert_int_equal(push(f.data, f.len, "wrong-token", NULL), 401);
	assert_int_equal(push(f.data, f.len, TOKEN "x", NULL), 401);
	double v;
	assert_int_equal(value_at("auth", 1000, &v), 0); /* nothing refused was stored */
	cm_buf_close(&f);
	cm_buf_close(&reply);
}

static void test_bad_frames(void **state)
{
	(void)state;
	cm_buf f, raw;
	cm_buf_init(&f);
	cm_buf_init(&raw);
	int64_t t = 5000;
	make_frame(&f, 10, "good", t, 42);
	assert_int_equal(push(f.data, f.len, TOKEN, NULL), 200);

	make_frame(&f, 11, "bad", t, 1);
	expect_400(f.data, f.len - 7, "truncated");
	expect_400(f.data, 10, "shorter than its 20-byte header");
	f.data[f.len - 3] ^= 0x10;
	expect_400(f.data, f.len, "checksum mismatch");
	f.data[f.len - 3] ^= 0x10;
	f.data[0] = 'X';
	expect_400(f.data, f.len, "bad magic");
	f.data[0] = 'C', f.data[4] = 9;
	expect_400(f.data, f.len, "unsupported batch version");
	expect_400("hello", 5, "shorter than");

	/* bombs: 64 MiB of zeros compress to a few KiB */
	size_t big = 64u << 20;
	uint8_t *zeros = calloc(1, big), *z = malloc(ZSTD_compressBound(big));
	size_t zl = ZSTD_compress(z, ZSTD_compressBound(big), zeros, big, 1);
	frame_raw(&raw, z, zl, 1000);
	expect_400(raw.data, raw.len, "header declares 1000");
	frame_raw(&raw, z, zl, (uint32_t)big + 1);
	expect_400(raw.data, raw.len, "limit");
	ZSTD_CCtx *cc = ZSTD_createCCtx(); /* a frame that does not state its size: caught while decoding */
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	ZSTD_outBuffer ob = {z, ZSTD_compressBound(big), 0};
	ZSTD_inBuffer ib = {zeros, big, 0};
	ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end);
	ZSTD_freeCCtx(cc);
	frame_raw(&raw, z, ob.pos, 1000);
	expect_400(raw.data, raw.len, "zstd");
	free(zeros);
	free(z);

	/* well-framed garbage, and a batch that breaks the label rules */
	uint8_t junk[300];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 7919 + 13);
	uint8_t zj[512];
	zl = ZSTD_compress(zj, sizeof(zj), junk, sizeof(junk), 1);
	frame_raw(&raw, zj, zl, sizeof(junk));
	expect_400(raw.data, raw.len, "not a valid protobuf");
	cm_label bad_labels[] = {{"__name__", "ok_name"}, {"bad-name", "v"}};
	cm_sample smp = {t, 1};
	cm_series s = {bad_labels, 2, &smp, 1};
	cm_batch b = {.node = "reject-node", .boot_id = "boot-1", .seq = 12, .series = &s, .nseries = 1};
	cm_err err;
	f.len = 0;
	assert_int_equal(cm_wire_encode(&b, 1, &f, &err), 0);
	expect_400(f.data, f.len, "invalid label name");

	double v = 0;
	assert_int_equal(value_at("good", t, &v), 1);
	assert_true(v == 42);
	cm_buf_close(&f);
	cm_buf_close(&raw);
}

static void test_oversized(void **state)
{
	(void)state;
	size_t n = 3u << 20; /* the aggregator runs with --max-push-bytes 2Mi */
	uint8_t *body = calloc(1, n);
	memcpy(body, "CRLB", 4);
	expect_400(body, n, "size limit");
	free(body);
}

/* Pushes seq with test_reject_value{case=name} = v at t; checks the answer's duplicate flag. */
static void push_seq(uint64_t seq, const char *name, int64_t t, double v, int dup)
{
	cm_buf f, reply;
	cm_buf_init(&f);
	cm_buf_init(&reply);
	make_frame(&f, seq, name, t, v);
	assert_int_equal(push(f.data, f.len, TOKEN, &reply), 200);
	assert_non_null(strstr((char *)reply.data, dup ? "\"duplicate\":true" : "\"duplicate\":false"));
	cm_buf_close(&f);
	cm_buf_close(&reply);
}

/* Retries are stored once, also out of order (the agent has several batches in flight: 99 may come
 * after 100) and across a restart, which rebuilds the window from the seq series. */
static void test_duplicate(void **state)
{
	(void)state;
	push_seq(100, "dup", 7000, 7, 0);
	push_seq(100, "dup", 7001, 8, 1); /* a retry of seq 100 must not be stored, whatever it holds */
	double v = 0;
	assert_int_equal(value_at("dup", 7001, &v), 1);
	assert_true(v == 7);
	push_seq(99, "dup", 7002, 9, 0); /* overtaken by 100: a high-water mark would drop it */
	push_seq(99, "dup", 7003, 10, 1);
	assert_int_equal(value_at("dup", 7003, &v), 1);
	assert_true(v == 9);
	char data[320];
	snprintf(data, sizeof(data), "%s/agg", F->dir);
	const char *extra[] = {"--max-push-bytes", "2Mi", NULL};
	assert_int_equal(itest_aggregator_stop(&F->agg), 0);
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, data, F->token, extra, F->url, sizeof(F->url)), 0);
	push_seq(99, "dup", 7004, 11, 1);
	push_seq(100, "dup", 7005, 12, 1);
	push_seq(98, "dup", 7006, 13, 0);
	assert_int_equal(value_at("dup", 7006, &v), 1);
	assert_true(v == 13);
}

typedef struct racer {
	pthread_barrier_t *go;
	const cm_buf *frame;
	int fresh; /* the answer said "duplicate":false */
} racer;

static void *race_push(void *arg)
{
	racer *r = arg;
	cm_buf reply;
	cm_buf_init(&reply);
	pthread_barrier_wait(r->go);
	long st = push(r->frame->data, r->frame->len, TOKEN, &reply);
	r->fresh = st == 200 && reply.len && strstr((char *)reply.data, "\"duplicate\":false") != NULL;
	cm_buf_close(&reply);
	return NULL;
}

/* The same batch from 8 connections at once (the agent has several in flight; a retry can overlap the
 * first copy): stored by exactly one of them, five times over. */
static void test_duplicate_concurrent(void **state)
{
	(void)state;
	for (uint64_t seq = 200; seq < 205; seq++) {
		enum { N = 8 };
		cm_buf f;
		cm_buf_init(&f);
		make_frame(&f, seq, "race", 8000 + (int64_t)seq, (double)seq);
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, N);
		racer r[N];
		pthread_t th[N];
		for (int i = 0; i < N; i++) {
			r[i] = (racer){&go, &f, 0};
			assert_int_equal(pthread_create(&th[i], NULL, race_push, &r[i]), 0);
		}
		int fresh = 0;
		for (int i = 0; i < N; i++) {
			pthread_join(th[i], NULL);
			fresh += r[i].fresh;
		}
		pthread_barrier_destroy(&go);
		cm_buf_close(&f);
		assert_int_equal(fresh, 1);
	}
}

static void expect_bad_query(const char *params, const char *words)
{
	long st;
	json_t *j = query(params, &st);
	assert_int_equal(st, 400);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "error");
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "bad_data");
	const char *e = json_string_value(json_object_get(j, "error"));
	if (!strstr(e, words))
		fprintf(stderr, "error was: %s\n", e);
	assert_non_null(strstr(e, words));
	json_decref(j);
}

static void test_bad_queries(void **state)
{
	(void)state;
	expect_bad_query("query_range?query=rate(x%5B5m%5D&start=1&end=2&step=1", "parse error");
	expect_bad_query("query_range?query=x%5B5m%5D&start=1&end=2&step=1", "range vector");
	expect_bad_query("query_range?query=x%7Ba%3D%22b%7D&start=1&end=2&step=1", "unterminated");
	expect_bad_query("query_range?query=%7Ba%3D%22%22%7D&start=1&end=2&step=1", "non-empty matcher");
	expect_bad_query("query_range?query=up&start=1&end=2", "step");
	expect_bad_query("query_range?query=up&start=10&end=2&step=1", "before start");
	expect_bad_query("query_range?query=up&start=0&end=100000&step=1", "11,000 points");
	expect_bad_query("query_range?query=up&start=abc&end=2&step=1", "start");
	expect_bad_query("query?query=", "empty query");
	expect_bad_query("series", "match[]");
	long st;
	json_t *j = query("series?match[]=test_reject_value", &st);
	assert_int_equal(st, 200);
	assert_true(json_array_size(json_object_get(j, "data")) >= 2);
	json_decref(j);
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	char data[320];
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	snprintf(data, sizeof(data), "%s/agg", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	const char *extra[] = {"--max-push-bytes", "2Mi", NULL};
	return itest_aggregator_start(&F->agg, F->dir, data, F->token, extra, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	int st = itest_aggregator_stop(&F->agg);
	itest_rmtree(F->dir);
	free(F);
	return st != 0; /* a clean exit, no sanitizer report */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth),       cmocka_unit_test(test_bad_frames), cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_duplicate),  cmocka_unit_test(test_duplicate_concurrent),
		cmocka_unit_test(test_bad_queries),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
