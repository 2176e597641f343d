/* test_ts_chunk.c -- unit tests of the Gorilla chunk codec (tsdb/ts_chunk.c) and the head's chunked series.
 *
 * Round trips compare IEEE 754 bits, so NaN payloads (the Prometheus stale marker), infinities and -0
 * must come back exactly; timestamps cover regular, irregular, huge and extreme deltas. Truncated or
 * mutated chunks must fail cleanly. The head tests feed random in-order, out-of-order, duplicate and
 * too-old samples and compare what select returns with a brute-force model.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "ts_int.h"

#define STALE 0x7ff0000000000002ull

static double from_bits(uint64_t b)
{
	double d;
	memcpy(&d, &b, 8);
	return d;
}

static uint64_t to_bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, 8);
	return b;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Encodes x[0..n), decodes it back and checks every bit. */
static void roundtrip(const cm_sample *x, size_t n)
{
	ts__enc e;
	ts__dec d;
	cm_sample got;
	ts__enc_init(&e);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ts__enc_append(&e, x[i].t_ms, x[i].v), 0);
	assert_int_equal(e.n, n);
	ts__dec_init(&d, e.buf, ts__enc_bytes(&e), (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(ts__dec_next(&d, &got), 1);
		assert_int_equal(got.t_ms, x[i].t_ms);
		assert_int_equal(to_bits(got.v), to_bits(x[i].v));
	}
	assert_int_equal(ts__dec_next(&d, &got), 0);
	/* every strict prefix of the bytes is too short for n samples (or decodes fewer) */
	for (size_t cut = 0; cut + 1 < ts__enc_bytes(&e) && n > 1; cut += 1 + cut / 8) {
		int rc;
		size_t k = 0;
		ts__dec_init(&d, e.buf, cut, (uint32_t)n);
		while ((rc = ts__dec_next(&d, &got)) == 1)
			k++;
		assert_int_equal(rc, CM_ECORRUPT);
		assert_true(k < n);
	}
	ts__enc_close(&e);
}

static void test_special_values(void **state)
{
	(void)state;
	cm_sample x[] = {
		{1000, 1.5},		{2000, NAN},	       {3000, INFINITY},	 {4000, -INFINITY},
		{5000, from_bits(STALE)}, {6000, -0.0},	       {7000, 0.0},		 {8000, from_bits(STALE)},
		{9000, 1e308},		{10000, 5e-324},       {11000, -1e-300},	 {12000, from_bits(0x7ff8dead00000001ull)},
		{13000, 42},		{14000, 42},	       {15000, from_bits(STALE)}, {16000, 1},
	};
	roundtrip(x, sizeof(x) / sizeof(x[0]));
}

static void test_counter_resets(void **state)
{
	(void)state;
	cm_sample x[120];
	double c = 0;
	for (int i = 0; i < 120; i++) {
		c = i % 37 == 36 ? 0 : c + (double)(rnd() % 1000) * 0.001; /* resets to 0 */
		x[i] = (cm_sample){1704067200000 + i * 10000, c};
	}
	roundtrip(x, 120);
}

static void test_irregular_intervals(void **state)
{
	(void)state;
	cm_sample x[120];
	int64_t t = -1000000;
	static const int64_t jumps[] = {1, 10000, 10001, 9999, 8192, 8193, 65536, 65537, 524288, 524289, 1LL << 40};
	for (int i = 0; i < 120; i++) {
		t += jumps[rnd() % (sizeof(jumps) / sizeof(jumps[0]))] + (int64_t)(rnd() % 3);
		x[i] = (cm_sample){t, (double)(rnd() % 100000) / 7.0};
	}
	roundtrip(x, 120);
	cm_sample ext[] = {{INT64_MIN, 1}, {INT64_MIN + 1, 2}, {-1, 3}, {0, 4}, {INT64_MAX - 1, 5}, {INT64_MAX, 6}};
	roundtrip(ext, 6);
	roundtrip(ext, 1);
}

static void test_random_bits(void **state)
{
	(void)state;
	for (int round = 0; round < 200; round++) {
		cm_sample x[120];
		int64_t t = (int64_t)(rnd() >> 2) - (1LL << 61);
		size_t n = 1 + rnd() % 120;
		for (size_t i = 0; i < n; i++) {
			t += 1 + (int64_t)(rnd() % (round % 2 ? 30000 : (1ull << (rnd() % 40))));
			uint64_t b = rnd() % 4 == 0 ? to_bits(x[i ? i - 1 : 0].v) ^ (rnd() & 0xffff0) : rnd();
			x[i] = (cm_sample){t, from_bits(b)};
		}
		roundtrip(x, n);
	}
}

/* Mutated chunks never crash and never yield times out of order. */
static void test_mutations(void **state)
{
	(void)state;
	ts__enc e;
	ts__enc_init(&e);
	for (int i = 0; i < 120; i++)
		assert_int_equal(ts__enc_append(&e, 1000 * i + (int64_t)(rnd() % 7), (double)(rnd() % 1000)), 0);
	size_t len = ts__enc_bytes(&e);
	uint8_t *copy = malloc(len);
	for (int round = 0; round < 2000; round++) {
		memcpy(copy, e.buf, len);
		copy[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
		ts__dec d;
		cm_sample s;
		int64_t prev = INT64_MIN;
		int rc, k = 0;
		ts__dec_init(&d, copy, len, 120);
		while ((rc = ts__dec_next(&d, &s)) == 1) {
			assert_true(k == 0 || s.t_ms > prev);
			prev = s.t_ms;
			k++;
		}
		assert_true(rc == 0 || rc == CM_ECORRUPT);
	}
	free(copy);
	ts__enc_close(&e);
}

/* ---- the head with out-of-order samples ------------------------------------------------------------ */

typedef struct model {
	int64_t t[4096];
	double v[4096];
	size_t n;
	int64_t maxt;
	uint64_t rejected, dups;
} model;

static void model_add(model *m, int64_t t, double v, int64_t window)
{
	size_t i = 0;
	if (m->n && t < m->maxt - window) {
		m->rejected++;
		return;
	}
	while (i < m->n && m->t[i] < t)
		i++;
	if (i < m->n && m->t[i] == t) {
		m->dups++;
		return;
	}
	memmove(m->t + i + 1, m->t + i, (m->n - i) * sizeof(m->t[0]));
	memmove(m->v + i + 1, m->v + i, (m->n - i) * sizeof(m->v[0]));
	m->t[i] = t;
	m->v[i] = v;
	m->n++;
	m->maxt = m->n == 1 || t > m->maxt ? t : m->maxt;
}

static int check_model(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t ns)
{
	const model *m = ctx;
	(void)l, (void)nl;
	assert_int_equal(ns, m->n);
	for (size_t i = 0; i < ns; i++) {
		assert_int_equal(s[i].t_ms, m->t[i]);
		assert_true(s[i].v == m->v[i]);
	}
	return 0;
}

static void test_head_out_of_order(void **state)
{
	(void)state;
	const int64_t window = 600000;
	ts__head *h;
	ts__series *s;
	static model m;
	cm_label l[] = {{"__name__", "x"}, {"job", "j"}};
	memset(&m, 0, sizeof(m));
	assert_int_equal(ts__head_create(window, &h), 0);
	assert_int_equal(ts__head_get(h, l, 2, &s), 0);
	int64_t t = 0;
	for (int i = 0; i < 3000; i++) {
		int64_t at;
		switch (rnd() % 8) {
		case 0: at = t - (int64_t)(rnd() % (2 * window)); break; /* maybe too old */
		case 1: at = t - 1000 * (int64_t)(rnd() % 60); break; /* recent, often a duplicate */
		default: at = (t += 1000 * (1 + (int64_t)(rnd() % 20))); break;
		}
		double v = (double)i;
		model_add(&m, at, v, window);
		cm_sample x = {at, v};
		assert_int_equal(ts__head_add(h, s, &x, 1), 0);
	}
	assert_int_equal(ts__head_select(h, NULL, 0, INT64_MIN, INT64_MAX, check_model, &m), 0);
	ts_stats st = {0};
	ts__head_stats(h, &st);
	assert_int_equal(st.samples, m.n);
	assert_int_equal(st.rejected_old, m.rejected);
	assert_int_equal(st.duplicates, m.dups);
	assert_true(m.rejected > 0 && m.dups > 0);
	ts__head_destroy(h);
}

/* A label set whose hash id is taken by another set gets the next id; both stay distinct, and replay's
 * define refuses an id bound to other labels. */
static void test_head_ids(void **state)
{
	(void)state;
	ts__head *h0, *h;
	ts__series *a, *a2, *b;
	cm_label la[] = {{"__name__", "a"}}, lb[] = {{"__name__", "b"}};
	assert_int_equal(ts__head_create(0, &h0), 0);
	assert_int_equal(ts__head_get(h0, la, 1, &a), 0);
	uint64_t ida = ts__series_id(a); /* the hash of la */
	ts__head_destroy(h0);

	assert_int_equal(ts__head_create(0, &h), 0);
	assert_int_equal(ts__head_define(h, ida, lb, 1, 0), 0); /* b holds a's hash id: a collision */
	assert_int_equal(ts__head_get(h, la, 1, &a), 0);
	assert_int_not_equal(ts__series_id(a), ida);
	assert_int_equal(ts__series_id(a) >> 60, ida >> 60); /* same shard */
	assert_int_equal(ts__head_get(h, la, 1, &a2), 0);
	assert_ptr_equal(a, a2);
	assert_int_equal(ts__head_get(h, lb, 1, &b), 0);
	assert_int_not_equal(ts__series_id(b), ts__series_id(a));
	assert_int_equal(ts__head_define(h, ida, la, 1, 1), CM_ECORRUPT);
	assert_int_equal(ts__head_define(h, ida, lb, 1, 1), 0);
	assert_int_equal(ts__head_add_id(h, ida ^ (1ull << 40), NULL, 0, 1), CM_ECORRUPT);
	ts__head_destroy(h);
}

/* ---- block frames (ts_frame.c): every encoding round-trips bit for bit ----------------------------- */

static void frame_roundtrip(const cm_sample *x, size_t n, int want_enc)
{
	cm_buf b;
	cm_sample *got = calloc(n, sizeof(*got));
	ZSTD_CCtx *zc = ZSTD_createCCtx();
	cm_buf_init(&b);
	assert_int_equal(ts__frame_encode(x, n, zc, &b), 0);
	if (want_enc)
		assert_int_equal(b.data[0], want_enc);
	assert_int_equal(ts__frame_decode(b.data, b.len, (uint32_t)n, got), 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(got[i].t_ms, x[i].t_ms);
		assert_int_equal(to_bits(got[i].v), to_bits(x[i].v));
	}
	for (size_t cut = 0; cut < b.len; cut += 1 + b.len / 16) /* short frames fail cleanly */
		assert_int_equal(ts__frame_decode(b.data, cut, (uint32_t)n, got), CM_ECORRUPT);
	for (int round = 0; round < 200; round++) { /* flipped bits never crash */
		uint8_t *copy = malloc(b.len);
		memcpy(copy, b.data, b.len);
		copy[rnd() % b.len] ^= (uint8_t)(1u << (rnd() % 8));
		ts__frame_decode(copy, b.len, (uint32_t)n, got);
		free(copy);
	}
	cm_buf_close(&b);
	ZSTD_freeCCtx(zc);
	free(got);
}

static void test_frames(void **state)
{
	(void)state;
	enum { N = 720 };
	static cm_sample x[N];
	int64_t ns = 123456789012345;
	for (int i = 0; i < N; i++) { /* cpu seconds with ns precision: decimal */
		ns += 800000000 + (int64_t)(rnd() % 400000000);
		x[i] = (cm_sample){1704067200000 + i * 10000, (double)ns / 1e9};
	}
	frame_roundtrip(x, N, 0);
	for (int i = 0; i < N; i++) /* pages of 4 KiB, a random walk */
		x[i].v = (double)(4096 * (100000 + (int64_t)(rnd() % 50)));
	frame_roundtrip(x, N, 0);
	for (int i = 0; i < N; i++) /* constant */
		x[i].v = 1073741824;
	frame_roundtrip(x, N, 0);
	for (int i = 0; i < N; i++) /* mostly flat counter with rare jumps and a reset */
		x[i].v = i < 400 ? (double)(i / 100) * 0.5 : (double)(i % 7 == 0);
	frame_roundtrip(x, N, 0);
	x[17].v = from_bits(STALE); /* a stale marker forces Gorilla */
	frame_roundtrip(x, N, 1);
	x[17].v = -0.0;
	frame_roundtrip(x, N, 1);
	x[17].v = 0.1 + 0.2; /* 17 significant digits */
	frame_roundtrip(x, N, 1);
	for (int i = 0; i < N; i++) /* near 2^53 and negative */
		x[i].v = (double)((1LL << 52) - (int64_t)(rnd() % 1000)) * (i % 2 ? -1 : 1);
	frame_roundtrip(x, N, 0);
	for (int i = 0; i < N; i++) /* irregular times */
		x[i].t_ms = (i ? x[i - 1].t_ms : -5000) + 1 + (int64_t)(rnd() % 100000);
	frame_roundtrip(x, N, 0);
	frame_roundtrip(x, 1, 0);
	frame_roundtrip(x, 2, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_special_values),	  cmocka_unit_test(test_counter_resets),
		cmocka_unit_test(test_irregular_intervals), cmocka_unit_test(test_random_bits),
		cmocka_unit_test(test_mutations),	  cmocka_unit_test(test_head_out_of_order),
		cmocka_unit_test(test_head_ids),	  cmocka_unit_test(test_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
