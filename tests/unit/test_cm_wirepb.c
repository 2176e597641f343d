/* test_cm_wirepb.c -- the wire encoder's hand-written Series (field 6) against protobuf-c's own packing.
 *
 * cm_wire.c writes each Series straight from the cm_series instead of building a protobuf-c message
 * tree. For a batch without fields 10-12 (whose order would differ: the encoder writes field 6 last) the
 * packed Batch inside the frame's zstd body must be, byte for byte, what corral__wire__batch__pack
 * writes for the message tree built here from the same cm_batch: NULL and empty strings, a label value
 * long enough for two-byte lengths, INT64_MIN and negative timestamps, NaN and -0.0, series without
 * samples or labels, many series with random value bits. The decoder must then read a valid batch back
 * equal (labels with an empty value dropped, value bits unchanged). Series written ahead of the batch
 * (cm_wire_series1_pb, the agent's way) must be the same bytes as those written from cm_series, be
 * recognised by cm_wire_series1_same (and nothing else), and take a new sample in place.
 *
 * The decoder reads the log streams (field 10) by hand: on Batches written here byte by byte with every
 * wire form protobuf allows (field 10 before and after the header fields, packed and unpacked
 * timestamps and flags, unknown fields of each wire type, a Label name given twice, 10-byte negative
 * varints, empty lines) it must read what protobuf-c's own unpacking reads, and refuse what that
 * refuses (a known field of another wire type, a cut-short packed run or length).
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

/* Series written ahead (cm_wire_series1_pb, as the agent does) are the bytes put_series writes for the
 * same one-sample series, however the labels are split between encoded ones (cm_wire_labels_pb) and
 * strings, and again when written around the label bytes alone (a stale marker's form);
 * cm_wire_label_next walks those label bytes back to the labels. */
static void test_series_written_ahead(void **state)
{
	(void)state;
	cases *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	cm_batch b;
	make_valid(c, &b);
	cm_series *one = calloc(b.nseries, sizeof(*one));
	cm_buf ahead, pre, again;
	cm_buf_init(&ahead), cm_buf_init(&pre), cm_buf_init(&again);
	size_t n = 0;
	for (size_t i = 0; i < b.nseries; i++) {
		const cm_series *se = &b.series[i];
		if (se->nsamples != 1 || !se->nlabels || strcmp(se->labels[0].name, "__name__"))
			continue;
		one[n++] = *se;
		size_t split = 1 + i % se->nlabels, at, len, at2, len2;
		pre.len = 0;
		assert_int_equal(cm_wire_labels_pb(&pre, se->labels + 1, split - 1), 0);
		assert_int_equal(cm_wire_series1_pb(&ahead, se->labels[0].value, pre.data, pre.len, se->labels + split,
						    se->nlabels - split, se->samples[0].t_ms, se->samples[0].v, &at, &len),
				 0);
		assert_int_equal(cm_wire_series1_pb(&again, NULL, ahead.data + at, len, NULL, 0, se->samples[0].t_ms,
						    se->samples[0].v, &at2, &len2),
				 0);
		assert_int_equal(len2, len);
		const cm_label *post = se->labels + split;
		size_t npost = se->nlabels - split;
		assert_true(cm_wire_series1_same(ahead.data + at, len, se->labels[0].value, pre.data, pre.len, post, npost));
		assert_false(cm_wire_series1_same(ahead.data + at, len, "other_metric", pre.data, pre.len, post, npost));
		if (pre.len)
			assert_false(cm_wire_series1_same(ahead.data + at, len, se->labels[0].value, pre.data, pre.len - 1,
							  post, npost));
		if (npost)
			assert_false(cm_wire_series1_same(ahead.data + at, len, se->labels[0].value, pre.data, pre.len, post,
							  npost - 1));
		cm_label_ref l;
		size_t pos = 0, k = 0;
		int more;
		while ((more = cm_wire_label_next(ahead.data + at, len, &pos, &l)) == 1) {
			assert_true(k < se->nlabels);
			const char *name = se->labels[k].name ? se->labels[k].name : "";
			const char *value = se->labels[k].value ? se->labels[k].value : "";
			assert_true(l.nlen == strlen(name) && !memcmp(l.name, name, l.nlen));
			assert_true(l.vlen == strlen(value) && !memcmp(l.value, value, l.vlen));
			k++;
		}
		assert_int_equal(more, 0);
		assert_int_equal(k, se->nlabels);
	}
	assert_true(n > 10);
	assert_int_equal(again.len, ahead.len);
	assert_memory_equal(again.data, ahead.data, ahead.len);
	cm_batch ref = b, enc = b;
	ref.series = one, ref.nseries = n;
	enc.series = NULL, enc.nseries = 0, enc.series_pb = ahead.data, enc.series_pblen = ahead.len;
	cm_arena a;
	cm_buf r, e;
	cm_arena_init(&a, 0);
	cm_buf_init(&r), cm_buf_init(&e);
	pack_reference(&ref, &a, &r);
	pack_encoder(&enc, &e);
	assert_int_equal(e.len, r.len);
	assert_memory_equal(e.data, r.data, r.len);
	print_message("%zu series written ahead, %zu bytes identical\n", n, r.len);
	/* a sample rewritten in place is the one a new series would carry */
	size_t at, len;
	cm_buf one_pb;
	cm_buf_init(&one_pb);
	assert_int_equal(cm_wire_series1_pb(&one_pb, "m", NULL, 0, NULL, 0, 1700000000000, 1.5, &at, &len), 0);
	cm_wire_series1_set(one_pb.data + at + len, 1700000001234, -2.25);
	cm_buf fresh;
	cm_buf_init(&fresh);
	assert_int_equal(cm_wire_series1_pb(&fresh, "m", NULL, 0, NULL, 0, 1700000001234, -2.25, &at, &len), 0);
	assert_int_equal(one_pb.len, fresh.len);
	assert_memory_equal(one_pb.data, fresh.data, fresh.len);
	cm_buf_close(&one_pb), cm_buf_close(&fresh);
	cm_buf_close(&r), cm_buf_close(&e), cm_buf_close(&ahead), cm_buf_close(&pre), cm_buf_close(&again);
	cm_arena_close(&a);
	free(one);
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

/* ---- log streams (field 10): the hand decoder against protobuf-c ---------------------------------- */

static void put_key(cm_buf *b, unsigned no, unsigned wt)
{
	uint8_t t[10];
	size_t n = 0;
	for (uint64_t v = (uint64_t)no << 3 | wt; ; v >>= 7) {
		t[n++] = (uint8_t)(v >= 0x80 ? (v & 0x7f) | 0x80 : v);
		if (v < 0x80)
			break;
	}
	assert_int_equal(cm_buf_append(b, t, n), 0);
}

static void put_varint(cm_buf *b, uint64_t v)
{
	uint8_t t[10];
	size_t n = 0;
	for (; v >= 0x80; v >>= 7)
		t[n++] = (uint8_t)(v | 0x80);
	t[n++] = (uint8_t)v;
	assert_int_equal(cm_buf_append(b, t, n), 0);
}

static void put_bytes(cm_buf *b, unsigned no, const void *p, size_t n)
{
	put_key(b, no, 2);
	put_varint(b, n);
	assert_int_equal(cm_buf_append(b, p, n), 0);
}

static void put_msg(cm_buf *b, unsigned no, const cm_buf *m) { put_bytes(b, no, m->data, m->len); }

/* A LogStream in many wire forms; cut > 0 breaks it that way (1: a line as a varint, 2: a packed run cut
 * inside its last varint). */
static void log_stream_a(cm_buf *out, int cut)
{
	cm_buf m, l, run;
	cm_buf_init(&m), cm_buf_init(&l), cm_buf_init(&run);
	put_bytes(&l, 1, "namespace", 9);
	put_key(&l, 7, 0), put_varint(&l, 99); /* unknown, in a Label */
	put_bytes(&l, 2, "shop", 4);
	put_msg(&m, 1, &l);
	l.len = 0;
	put_bytes(&l, 1, "wrong", 5);
	put_bytes(&l, 2, "stdout", 6);
	put_bytes(&l, 1, "stream", 6); /* the last name wins */
	put_msg(&m, 1, &l);
	put_varint(&run, (uint64_t)-1700000000123456789LL); /* ten bytes */
	put_varint(&run, 5);
	if (cut == 2)
		run.data[run.len - 1] |= 0x80;
	put_msg(&m, 2, &run);
	put_bytes(&m, 3, "first line", 10);
	put_key(&m, 9, 1), assert_int_equal(cm_buf_append(&m, "12345678", 8), 0); /* unknown fixed64 */
	if (cut == 1)
		put_key(&m, 3, 0), put_varint(&m, 7);
	else
		put_bytes(&m, 3, "", 0);
	put_key(&m, 2, 0), put_varint(&m, 1700000000000000000ULL); /* unpacked, after a packed run */
	put_bytes(&m, 3, "third \xff line", 12);
	put_key(&m, 15, 5), assert_int_equal(cm_buf_append(&m, "1234", 4), 0); /* unknown fixed32 */
	put_bytes(&m, 20, "skip me", 7);
	for (uint64_t f = 0; f < 3; f++)
		put_key(&m, 4, 0), put_varint(&m, f == 2 ? 1 : 0); /* unpacked flags */
	put_msg(out, 10, &m);
	cm_buf_close(&m), cm_buf_close(&l), cm_buf_close(&run);
}

static void log_stream_b(cm_buf *out)
{
	cm_buf m, l, run;
	cm_buf_init(&m), cm_buf_init(&l), cm_buf_init(&run);
	put_bytes(&l, 1, "pod", 3);
	put_bytes(&l, 2, "api-1", 5);
	put_msg(&m, 1, &l);
	for (int i = 0; i < 300; i++) { /* lines of one- and two-byte lengths */
		char line[200];
		memset(line, 'a' + i % 26, sizeof(line));
		put_bytes(&m, 3, line, (size_t)(i % 200));
		put_key(&m, 2, 0), put_varint(&m, (uint64_t)i * 1000);
		put_varint(&run, (uint64_t)(i % 2));
	}
	put_msg(&m, 4, &run); /* packed flags */
	put_msg(out, 10, &m);
	cm_buf_close(&m), cm_buf_close(&l), cm_buf_close(&run);
}

/* The Batch, with field 10 around the header fields. */
static void log_batch(cm_buf *raw, int cut)
{
	log_stream_a(raw, cut);
	put_bytes(raw, 1, "node-1", 6);
	log_stream_b(raw);
	put_key(raw, 4, 0), put_varint(raw, 42);
	put_bytes(raw, 2, "b00t", 4);
	log_stream_a(raw, 0);
}

static void frame(const cm_buf *raw, cm_buf *f)
{
	size_t bound = ZSTD_compressBound(raw->len);
	assert_int_equal(cm_buf_reserve(f, CM_WIRE_HEADER + bound), 0);
	size_t c = ZSTD_compress(f->data + CM_WIRE_HEADER, bound, raw->data, raw->len, 1);
	assert_false(ZSTD_isError(c));
	uint8_t *h = f->data;
	memcpy(h, "CRLB\1\1\0\0", 8);
	cm_put_u32le(h + 8, (uint32_t)raw->len);
	cm_put_u32le(h + 12, (uint32_t)c);
	cm_put_u32le(h + 16, cm_crc32c(cm_crc32c(0, h, 16), h + CM_WIRE_HEADER, c));
	f->len = CM_WIRE_HEADER + c;
}

static int decode_raw(const cm_buf *raw, cm_arena *a, cm_batch *out)
{
	cm_buf f;
	cm_err err = {{0}};
	cm_buf_init(&f);
	frame(raw, &f);
	int rc = cm_wire_decode(f.data, f.len, &cm_wire_default_limits, a, out, &err);
	cm_buf_close(&f);
	return rc;
}

static void test_log_streams_like_protobuf_c(void **state)
{
	(void)state;
	cm_buf raw;
	cm_arena a;
	cm_batch out;
	cm_buf_init(&raw);
	cm_arena_init(&a, 0);
	log_batch(&raw, 0);
	Corral__Wire__Batch *ref = corral__wire__batch__unpack(NULL, raw.len, raw.data);
	assert_non_null(ref);
	assert_int_equal(decode_raw(&raw, &a, &out), 0);
	assert_string_equal(out.node, "node-1");
	assert_int_equal(out.seq, 42);
	assert_int_equal(out.nlog_streams, ref->n_log_streams);
	assert_int_equal(out.nlog_streams, 3);
	for (size_t i = 0; i < out.nlog_streams; i++) {
		const cm_log_stream *s = &out.log_streams[i];
		const Corral__Wire__LogStream *r = ref->log_streams[i];
		assert_int_equal(s->nlabels, r->n_labels);
		for (size_t j = 0; j < s->nlabels; j++) {
			assert_string_equal(s->labels[j].name, r->labels[j]->name);
			assert_string_equal(s->labels[j].value, r->labels[j]->value);
		}
		assert_int_equal(s->nrecords, r->n_lines);
		assert_int_equal(r->n_timestamps_ns, r->n_lines);
		for (size_t j = 0; j < s->nrecords; j++) {
			assert_true(s->timestamps_ns[j] == r->timestamps_ns[j]);
			assert_int_equal(s->line_lens[j], r->lines[j].len);
			assert_memory_equal(s->lines[j], r->lines[j].data, r->lines[j].len);
			assert_int_equal(s->flags[j], r->n_flags ? r->flags[j] : 0);
		}
	}
	assert_string_equal(out.log_streams[0].labels[1].name, "stream");
	assert_true(out.log_streams[0].timestamps_ns[0] == -1700000000123456789LL);
	assert_int_equal(out.log_streams[0].flags[2], 1);
	corral__wire__batch__free_unpacked(ref, NULL);
	for (int cut = 1; cut <= 2; cut++) { /* refused by both */
		raw.len = 0;
		log_batch(&raw, cut);
		ref = corral__wire__batch__unpack(NULL, raw.len, raw.data);
		assert_null(ref);
		assert_int_equal(decode_raw(&raw, &a, &out), CM_EPROTO);
	}
	cm_arena_close(&a);
	cm_buf_close(&raw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_series_bytes_odd_strings),
		cmocka_unit_test(test_series_bytes_valid_batch),
		cmocka_unit_test(test_series_decode_back_equal),
		cmocka_unit_test(test_series_written_ahead),
		cmocka_unit_test(test_log_streams_like_protobuf_c),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
