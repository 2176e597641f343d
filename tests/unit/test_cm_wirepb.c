/* test_cm_wirepb.c -- the wire encoder's hand-written Series (field 6) against protobuf-c's own packing.
 *
 * cm_wire.c writes each Series straight from the cm_series instead of building a protobuf-c message
 * tree. For a batch without fields 10-12 (whose order would differ: the encoder writes field 6 last) the
 * packed Batch inside the frame's zstd body must be, byte for byte, what corral__wire__batch__pack
 * writes for the message tree built here from the same cm_batch: NULL and empty strings, a label value
 * long enough for two-byte lengths, INT64_MIN and negative timestamps, NaN and -0.0, series without
 * samples or labels, many series with random value bits. The decoder must then read a valid batch back
 * equal (labels with an empty value dropped, value bits unchanged).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cm.h"
#include "corral.pb-c.h"

/* ---- the reference: protobuf-c's message tree for b ----------------------------------------------- */

static Corral__Wire__Series *tree_series(const cm_series *in, cm_arena *a)
{
	Corral__Wire__Series *s = cm_arena_calloc(a, 1, sizeof(*s));
	Corral__Wire__Label **lp = cm_arena_calloc(a, in->nlabels + 1, sizeof(*lp));
	Corral__Wire__Label *l = cm_arena_calloc(a, in->nlabels + 1, sizeof(*l));
	int64_t *t = cm_arena_calloc(a, in->nsamples + 1, sizeof(*t));
	double *v = cm_arena_calloc(a, in->nsamples + 1, sizeof(*v));
	assert_true(s && lp && l && t && v);
	corral__wire__series__init(s);
	for (size_t i = 0; i < in->nlabels; i++) {
		corral__wire__label__init(&l[i]);
		l[i].name = (char *)in->labels[i].name; /* NULL as it is: protobuf-c omits it like "" */
		l[i].value = (char *)in->labels[i].value;
		lp[i] = &l[i];
	}
	for (size_t i = 0; i < in->nsamples; i++)
		t[i] = in->samples[i].t_ms, v[i] = in->samples[i].v;
	s->n_labels = in->nlabels, s->labels = lp;
	s->n_timestamps_ms = s->n_values = in->nsamples;
	s->timestamps_ms = t, s->values = v;
	return s;
}

/* What protobuf-c packs for b (header fields and series only), into out. */
static void pack_reference(const cm_batch *b, cm_arena *a, cm_buf *out)
{
	Corral__Wire__Batch msg;
	corral__wire__batch__init(&msg);
	msg.node = (char *)b->node;
	msg.boot_id = (char *)b->boot_id;
	msg.agent_version = (char *)b->agent_version;
	msg.seq = b->seq;
	msg.created_ms = b->created_ms;
	msg.n_series = b->nseries;
	msg.series = cm_arena_calloc(a, b->nseries + 1, sizeof(*msg.series));
	assert_non_null(msg.series);
	for (size_t i = 0; i < b->nseries; i++)
		msg.series[i] = tree_series(&b->series[i], a);
	size_t n = corral__wire__batch__get_packed_size(&msg);
	assert_int_equal(cm_buf_reserve(out, n), 0);
	out->len = corral__wire__batch__pack(&msg, out->data);
	assert_int_equal(out->len, n);
}

/* The packed Batch of the frame cm_wire_encode makes for b, into out. */
static void pack_encoder(const cm_batch *b, cm_buf *out)
{
	cm_buf f;
	cm_err err = {{0}};
	cm_buf_init(&f);
	if (cm_wire_encode(b, 1, &f, &err))
		fail_msg("encode: %s", err.msg);
	size_t raw = cm_get_u32le(f.data + 8);
	assert_int_equal(cm_buf_reserve(out, raw + 1), 0);
	out->len = ZSTD_decompress(out->data, raw + 1, f.data + CM_WIRE_HEADER, f.len - CM_WIRE_HEADER);
	assert_false(ZSTD_isError(out->len));
	assert_int_equal(out->len, raw);
	cm_buf_close(&f);
}

static void expect_same_bytes(const cm_batch *b)
{
	cm_arena a;
	cm_buf ref, enc;
	cm_arena_init(&a, 0);
	cm_buf_init(&ref);
	cm_buf_init(&enc);
	pack_reference(b, &a, &ref);
	pack_encoder(b, &enc);
	size_t i = 0;
	while (i < ref.len && i < enc.len && ref.data[i] == enc.data[i])
		i++;
	if (i < ref.len || i < enc.len)
		fail_msg("packed Batch differs at byte %zu (protobuf-c %zu bytes, encoder %zu)", i, ref.len, enc.len);
	print_message("%zu series, %zu bytes identical\n", b->nseries, ref.len);
	cm_buf_close(&ref);
	cm_buf_close(&enc);
	cm_arena_close(&a);
}

/* ---- the cases ------------------------------------------------------------------------------------ */

#define NSPECIAL 6
#define NMANY 600

typedef struct cases {
	char longv[300];
	cm_label l[NSPECIAL][4];
	cm_sample smp[8];
	cm_series s[NSPECIAL + NMANY];
	cm_arena a; /* the many series' labels and samples */
} cases;

static double bits_double(uint64_t bits)
{
	double v;
	memcpy(&v, &bits, sizeof(v));
	return v;
}

/* Series the decoder accepts: the special ones, then NMANY with 1-4 labels (some long), 0-40 samples
 * (over 16 samples the values take a two-byte length) and random timestamps and value bits. */
static void make_valid(cases *c, cm_batch *b)
{
	memset(c->longv, 'v', sizeof(c->longv) - 1);
	c->longv[sizeof(c->longv) - 1] = 0; /* 299 bytes: two-byte lengths for value, label and series */
	const cm_label l[NSPECIAL][4] = {
		{{"__name__", "m_empty"}, {"id", ""}, {"x", "1"}},
		{{"__name__", "m_null"}, {"id", NULL}},
		{{"__name__", "m_long"}, {"id", c->longv}},
		{{"__name__", "m_times"}},
		{{"__name__", "m_floats"}, {"a", "b"}},
		{{"__name__", "m_nosamples"}, {"id", "/x"}},
	};
	memcpy(c->l, l, sizeof(l));
	const cm_sample smp[8] = {{INT64_MIN, 1}, {-1, 2}, {-1700000000000, 3}, {0, 4}, {INT64_MAX, 5},
				  {1, NAN}, {2, -0.0}, {3, bits_double(0x7ff0000000000002ULL)}};
	memcpy(c->smp, smp, sizeof(smp));
	c->s[0] = (cm_series){c->l[0], 3, c->smp, 1};
	c->s[1] = (cm_series){c->l[1], 2, c->smp + 1, 1};
	c->s[2] = (cm_series){c->l[2], 2, c->smp + 3, 2};
	c->s[3] = (cm_series){c->l[3], 1, c->smp, 5};
	c->s[4] = (cm_series){c->l[4], 2, c->smp + 5, 3};
	c->s[5] = (cm_series){c->l[5], 2, NULL, 0};
	cm_arena_init(&c->a, 0);
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t k = 0; k < NMANY; k++) {
		size_t nl = 1 + k % 4, ns = k % 41;
		cm_label *lk = cm_arena_calloc(&c->a, nl, sizeof(*lk));
		cm_sample *sk = cm_arena_calloc(&c->a, ns + 1, sizeof(*sk));
		char name[32], id[32];
		assert_true(lk && sk);
		snprintf(name, sizeof(name), "m_%zu", k % 7);
		snprintf(id, sizeof(id), "/c/%zu", k);
		static const char *const names[] = {"__name__", "id", "device", "long"};
		const char *values[] = {name, id, k % 3 ? "8:0" : "", k % 50 ? "y" : c->longv};
		for (size_t i = 0; i < nl; i++)
			lk[i] = (cm_label){names[i], cm_arena_strdup(&c->a, values[i])};
		for (size_t i = 0; i < ns; i++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			sk[i] = (cm_sample){(int64_t)(x >> (k % 64)) - (int64_t)(k << 20), bits_double(x ^ (x << 17))};
		}
		c->s[NSPECIAL + k] = (cm_series){lk, nl, sk, ns};
	}
	*b = (cm_batch){.node = "node-1", .boot_id = "b00t", .agent_version = "1.2.3", .seq = 1ULL << 40,
			.created_ms = -5, .series = c->s, .nseries = NSPECIAL + NMANY};
}

/* ---- tests ---------------------------------------------------------------------------------------- */

/* Strings the decoder would refuse are still packed the same: empty and NULL names, no labels at all,
 * NULL header strings, an empty batch. */
static void test_series_bytes_odd_strings(void **state)
{
	(void)state;
	cm_label l[4] = {{"", "x"}, {NULL, "y"}, {"z", NULL}, {NULL, NULL}};
	cm_sample smp[2] = {{INT64_MIN, -0.0}, {-7, NAN}};
	cm_series s[3] = {{l, 4, smp, 2}, {NULL, 0, smp, 1}, {l, 1, NULL, 0}};
	cm_batch b = {.node = "n", .series = s, .nseries = 3};
	expect_same_bytes(&b);
	b.nseries = 0;
	expect_same_bytes(&b);
}

static void test_series_bytes_valid_batch(void **state)
{
	(void)state;
	cases *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	cm_batch b;
	make_valid(c, &b);
	expect_same_bytes(&b);
	cm_arena_close(&c->a);
	free(c);
}

static void expect_series_equal(const cm_series *in, const cm_series *out)
{
	size_t j = 0;
	for (size_t i = 0; i < in->nlabels; i++) {
		const cm_label *l = &in->labels[i];
		if (!l->value || !*l->value)
			continue; /* an empty label is an absent label */
		assert_true(j < out->nlabels);
		assert_string_equal(out->labels[j].name, l->name);
		assert_string_equal(out->labels[j].value, l->value);
		j++;
	}
	assert_int_equal(out->nlabels, j);
	assert_int_equal(out->nsamples, in->nsamples);
	for (size_t i = 0; i < in->nsamples; i++) {
		assert_true(out->samples[i].t_ms == in->samples[i].t_ms);
		assert_memory_equal(&out->samples[i].v, &in->samples[i].v, sizeof(double));
	}
}

static void test_series_decode_back_equal(void **state)
{
	(void)state;
	cases *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	cm_batch in, out;
	make_valid(c, &in);
	cm_buf f;
	cm_arena a;
	cm_err err = {{0}};
	cm_buf_init(&f);
	cm_arena_init(&a, 0);
	assert_int_equal(cm_wire_encode(&in, 1, &f, &err), 0);
	if (cm_wire_decode(f.data, f.len, &cm_wire_default_limits, &a, &out, &err))
		fail_msg("decode: %s", err.msg);
	assert_true(out.created_ms == -5 && out.seq == 1ULL << 40);
	assert_int_equal(out.nseries, in.nseries);
	for (size_t i = 0; i < in.nseries; i++)
		expect_series_equal(&in.series[i], &out.series[i]);
	cm_arena_close(&a);
	cm_buf_close(&f);
	cm_arena_close(&c->a);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_series_bytes_odd_strings),
		cmocka_unit_test(test_series_bytes_valid_batch),
		cmocka_unit_test(test_series_decode_back_equal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
