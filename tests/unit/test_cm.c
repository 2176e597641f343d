/* test_cm.c -- common/: the wire codec (round trip and every rejection path), float and time formats,
 * CRC32C, buffers and readers, the flag table.
 *
 * Rejections are provoked with hand-built protobuf bytes (a tiny encoder below, written from the
 * protobuf encoding spec) so the test does not depend on protobuf-c to produce invalid messages.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cm.h"

/* ---- a minimal protobuf writer ------------------------------------------------------------------ */

static void pb_key(cm_buf *b, int field, int wire) { cm_buf_put_uvarint(b, (uint64_t)(field << 3 | wire)); }

static void pb_bytes(cm_buf *b, int field, const void *p, size_t n)
{
	pb_key(b, field, 2);
	cm_buf_put_uvarint(b, n);
	cm_buf_append(b, p, n);
}

static void pb_str(cm_buf *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

static void pb_label(cm_buf *series, const char *name, const char *value)
{
	cm_buf l;
	cm_buf_init(&l);
	pb_str(&l, 1, name);
	pb_str(&l, 2, value);
	pb_bytes(series, 1, l.data, l.len);
	cm_buf_close(&l);
}

/* Series with nts timestamps and nvals values (packed), labels given as name,value pairs. */
static void pb_series(cm_buf *batch, size_t nts, size_t nvals, const char *const *labels, size_t nlabels)
{
	cm_buf s, packed;
	cm_buf_init(&s);
	cm_buf_init(&packed);
	for (size_t i = 0; i < nlabels; i++)
		pb_label(&s, labels[2 * i], labels[2 * i + 1]);
	for (size_t i = 0; i < nts; i++)
		cm_buf_put_uvarint(&packed, 1000 + i);
	if (nts)
		pb_bytes(&s, 2, packed.data, packed.len);
	packed.len = 0;
	for (size_t i = 0; i < nvals; i++)
		cm_buf_put_f64le(&packed, (double)i);
	if (nvals)
		pb_bytes(&s, 3, packed.data, packed.len);
	pb_bytes(batch, 6, s.data, s.len);
	cm_buf_close(&s);
	cm_buf_close(&packed);
}

static void frame_pb(cm_buf *out, const cm_buf *pb)
{
	size_t bound = ZSTD_compressBound(pb->len);
	uint8_t *z = malloc(bound);
	size_t zl = ZSTD_compress(z, bound, pb->data ? pb->data : (const uint8_t *)"", pb->len, 1);
	uint8_t h[CM_WIRE_HEADER] = {'C', 'R', 'L', 'B', 1, 1, 0, 0};
	cm_put_u32le(h + 8, (uint32_t)pb->len);
	cm_put_u32le(h + 12, (uint32_t)zl);
	cm_put_u32le(h + 16, cm_crc32c(cm_crc32c(0, h, 16), z, zl));
	out->len = 0;
	cm_buf_append(out, h, sizeof(h));
	cm_buf_append(out, z, zl);
	free(z);
}

static int decode(const cm_buf *f, const cm_wire_limits *lim, cm_batch *b, cm_arena *a, cm_err *err)
{
	return cm_wire_decode(f->data, f->len, lim ? lim : &cm_wire_default_limits, a, b, err);
}

static void expect_reject(const cm_buf *f, const cm_wire_limits *lim, int rc, const char *words)
{
	cm_arena a;
	cm_arena_init(&a, 0);
	cm_batch b;
	memset(&b, 0x5a, sizeof(b));
	cm_err err = {{0}};
	int got = decode(f, lim, &b, &a, &err);
	if (got != rc || !strstr(err.msg, words))
		fprintf(stderr, "got %d '%s', wanted %d '%s'\n", got, err.msg, rc, words);
	assert_int_equal(got, rc);
	assert_non_null(strstr(err.msg, words));
	assert_int_equal(b.nseries, (size_t)0x5a5a5a5a5a5a5a5aULL); /* out-parameter untouched */
	cm_arena_close(&a);
}

/* ---- wire ------------------------------------------------------------------------------------------ */

static void make_batch(cm_batch *b, cm_series *s, cm_label *l, cm_sample *smp)
{
	l[0] = (cm_label){"__name__", "container_cpu_usage_seconds_total"};
	l[1] = (cm_label){"id", "/kubepods/pod1/c1"};
	l[2] = (cm_label){"empty", ""};
	smp[0] = (cm_sample){1700000000000, 1.5};
	smp[1] = (cm_sample){1700000010000, NAN};
	smp[2] = (cm_sample){1700000020000, -INFINITY};
	s[0] = (cm_series){l, 3, smp, 3};
	s[1] = (cm_series){l, 2, smp, 0};
	*b = (cm_batch){.node = "node-1", .boot_id = "b00t", .agent_version = "0.1.0", .seq = 123456789012345ULL,
			.created_ms = 1700000020000, .series = s, .nseries = 2};
}

static void test_wire_round_trip(void **state)
{
	(void)state;
	cm_series s[2];
	cm_label l[3];
	cm_sample smp[3];
	cm_batch in, out;
	make_batch(&in, s, l, smp);
	cm_buf f;
	cm_buf_init(&f);
	cm_err err;
	assert_int_equal(cm_wire_encode(&in, 3, &f, &err), 0);
	assert_memory_equal(f.data, "CRLB\x01\x01\x00\x00", 8);
	assert_int_equal(cm_get_u32le(f.data + 12), f.len - CM_WIRE_HEADER);
	cm_arena a;
	cm_arena_init(&a, 0);
	assert_int_equal(decode(&f, NULL, &out, &a, &err), 0);
	assert_string_equal(out.node, "node-1");
	assert_string_equal(out.boot_id, "b00t");
	assert_string_equal(out.agent_version, "0.1.0");
	assert_true(out.seq == 123456789012345ULL);
	assert_true(out.created_ms == 1700000020000);
	assert_int_equal(out.nseries, 2);
	assert_int_equal(out.series[0].nlabels, 2); /* the empty-valued label is dropped */
	assert_string_equal(out.series[0].labels[1].value, "/kubepods/pod1/c1");
	assert_int_equal(out.series[0].nsamples, 3);
	assert_true(out.series[0].samples[0].v == 1.5);
	assert_true(isnan(out.series[0].samples[1].v));
	assert_true(isinf(out.series[0].samples[2].v) && out.series[0].samples[2].v < 0);
	assert_true(out.series[0].samples[2].t_ms == 1700000020000);
	assert_int_equal(out.series[1].nsamples, 0);
	cm_arena_close(&a);
	cm_buf_close(&f);
}

static void test_wire_frame_rejections(void **state)
{
	(void)state;
	cm_series s[2];
	cm_label l[3];
	cm_sample smp[3];
	cm_batch in;
	make_batch(&in, s, l, smp);
	cm_buf f, g;
	cm_buf_init(&f);
	cm_buf_init(&g);
	cm_err err;
	assert_int_equal(cm_wire_encode(&in, 3, &f, &err), 0);
	cm_buf_append(&g, f.data, f.len);

	g.len = 19;
	expect_reject(&g, NULL, CM_EPROTO, "shorter than");
	g.len = f.len - 1;
	expect_reject(&g, NULL, CM_EPROTO, "truncated");
	cm_buf_append(&g, "xy", 2);
	expect_reject(&g, NULL, CM_EPROTO, "declares");
	g.len = 0;
	cm_buf_append(&g, f.data, f.len);
	cm_wire_limits lim = cm_wire_default_limits;
	lim.max_frame = f.len - 1;
	expect_reject(&g, &lim, CM_E2BIG, "exceeds the limit");
	lim = cm_wire_default_limits;
	lim.max_decompressed = 10;
	expect_reject(&g, &lim, CM_E2BIG, "decompressed, limit");

	struct {
		size_t off;
		uint8_t x;
		const char *words;
	} flips[] = {{0, 1, "bad magic"},     {4, 3, "version"},        {5, 2, "codec"},
		     {6, 1, "reserved"},      {16, 1, "checksum"},      {CM_WIRE_HEADER + 5, 0x40, "checksum"},
		     {8, 1, "checksum"},      {13, 1, "declares"}};
	for (size_t i = 0; i < CM_ARRAY_LEN(flips); i++) {
		memcpy(g.data, f.data, f.len);
		g.data[flips[i].off] ^= flips[i].x;
		expect_reject(&g, NULL, CM_EPROTO, flips[i].words);
	}
	cm_buf_close(&f);
	cm_buf_close(&g);
}

static void test_wire_body_rejections(void **state)
{
	(void)state;
	cm_buf pb, f;
	cm_buf_init(&pb);
	cm_buf_init(&f);
	/* not zstd at all, with a valid CRC */
	uint8_t h[CM_WIRE_HEADER + 8] = {'C', 'R', 'L', 'B', 1, 1, 0, 0};
	memcpy(h + CM_WIRE_HEADER, "notzstd!", 8);
	cm_put_u32le(h + 8, 8);
	cm_put_u32le(h + 12, 8);
	cm_put_u32le(h + 16, cm_crc32c(cm_crc32c(0, h, 16), h + CM_WIRE_HEADER, 8));
	cm_buf_append(&f, h, sizeof(h));
	expect_reject(&f, NULL, CM_EPROTO, "not a zstd frame");

	/* content size differs from the header's */
	pb_str(&pb, 1, "node");
	frame_pb(&f, &pb);
	cm_put_u32le(f.data + 8, (uint32_t)pb.len + 1);
	cm_put_u32le(f.data + 16, cm_crc32c(cm_crc32c(0, f.data, 16), f.data + CM_WIRE_HEADER, f.len - CM_WIRE_HEADER));
	expect_reject(&f, NULL, CM_EPROTO, "header declares");

	/* invalid protobuf: a length running past the end */
	pb.len = 0;
	cm_buf_append(&pb, "\x0a\x7f" "abc", 5);
	frame_pb(&f, &pb);
	expect_reject(&f, NULL, CM_EPROTO, "not a valid protobuf");

	pb.len = 0; /* no node */
	frame_pb(&f, &pb);
	expect_reject(&f, NULL, CM_EPROTO, "no node name");
	cm_buf_close(&pb);
	cm_buf_close(&f);
}

/* A batch with node "n" and one series with the given labels, timestamps and values. */
static void series_case(cm_buf *f, size_t nts, size_t nvals, const char *const *labels, size_t nlabels)
{
	cm_buf pb;
	cm_buf_init(&pb);
	pb_str(&pb, 1, "n");
	pb_series(&pb, nts, nvals, labels, nlabels);
	frame_pb(f, &pb);
	cm_buf_close(&pb);
}

static void test_wire_batch_rules(void **state)
{
	(void)state;
	cm_buf f;
	cm_buf_init(&f);
	const char *ok[] = {"__name__", "m", "a", "b"};
	series_case(&f, 2, 1, ok, 2);
	expect_reject(&f, NULL, CM_EPROTO, "2 timestamps but 1 values");
	const char *noname[] = {"a", "b"};
	series_case(&f, 1, 1, noname, 1);
	expect_reject(&f, NULL, CM_EPROTO, "missing or invalid metric name");
	const char *badmetric[] = {"__name__", "9lives"};
	series_case(&f, 1, 1, badmetric, 1);
	expect_reject(&f, NULL, CM_EPROTO, "missing or invalid metric name");
	const char *badlabel[] = {"__name__", "m", "a-b", "x"};
	series_case(&f, 1, 1, badlabel, 2);
	expect_reject(&f, NULL, CM_EPROTO, "invalid label name");
	const char *dup[] = {"__name__", "m", "a", "1", "a", "2"};
	series_case(&f, 1, 1, dup, 3);
	expect_reject(&f, NULL, CM_EPROTO, "duplicate label a");
	const char *utf[] = {"__name__", "m", "a", "\xc3\x28"};
	series_case(&f, 1, 1, utf, 2);
	expect_reject(&f, NULL, CM_EPROTO, "not valid UTF-8");

	cm_wire_limits lim = cm_wire_default_limits;
	lim.max_labels = 1;
	series_case(&f, 1, 1, ok, 2);
	expect_reject(&f, &lim, CM_E2BIG, "2 labels, limit 1");
	lim = cm_wire_default_limits;
	lim.max_samples = 2;
	series_case(&f, 3, 3, ok, 2);
	expect_reject(&f, &lim, CM_E2BIG, "more than 2 samples");
	lim = cm_wire_default_limits;
	lim.max_label_bytes = 8;
	const char *longv[] = {"__name__", "m", "a", "long value"};
	series_case(&f, 1, 1, longv, 2);
	expect_reject(&f, &lim, CM_E2BIG, "label value is 10 bytes, limit 8");
	lim = cm_wire_default_limits;
	lim.max_series = 0;
	series_case(&f, 1, 1, ok, 2);
	expect_reject(&f, &lim, CM_E2BIG, "1 series, limit 0");

	/* and the well-formed one is accepted */
	cm_arena a;
	cm_arena_init(&a, 0);
	cm_batch b;
	cm_err err;
	series_case(&f, 3, 3, ok, 2);
	assert_int_equal(decode(&f, NULL, &b, &a, &err), 0);
	assert_int_equal(b.series[0].nsamples, 3);
	assert_true(b.series[0].samples[2].t_ms == 1002 && b.series[0].samples[2].v == 2);
	cm_arena_close(&a);
	cm_buf_close(&f);
}

/* ---- formats --------------------------------------------------------------------------------------- */

/* ---- wire: inventory and events (fields 11, 12) -------------------------------------------------- */

static void inv_encode_decode(const cm_batch *in, cm_buf *f, cm_arena *a, cm_batch *out)
{
	cm_err err = {{0}};
	f->len = 0;
	assert_int_equal(cm_wire_encode(in, 1, f, &err), 0);
	assert_int_equal(decode(f, NULL, out, a, &err), 0);
}

static void test_wire_inventory_and_events(void **state)
{
	(void)state;
	cm_label pl[2] = {{"app", "web"}, {"tier", "front"}}, nf[1] = {{"cpu_cores", "4"}};
	const char *ips[2] = {"10.0.0.5", "fd00::5"};
	cm_container c[2] = {{"nginx", "c0c0", "nginx:1.25", "/demo/web", "250m", "64Mi", "1", "128Mi"},
			     {"side", "", "envoy", "", "", "", "", ""}};
	cm_pod pods[2] = {{"web", "shop", "uid-1", "Running", 1, pl, 2, ips, 2, c, 2},
			  {"job", "batch", "", "", 0, NULL, 0, NULL, 0, NULL, 0}};
	cm_inventory inv = {1700000000000, pods, 2, nf, 1};
	cm_event ev[2] = {{1700000000001, "started", "/demo/web", "c0c0", "nginx", "web", "shop", 0},
			  {1700000000002, "oom_killed", "/demo/hog", "", "", "", "", 3}};
	cm_batch b = {.node = "n", .boot_id = "b", .seq = 7, .inventory = &inv, .events = ev, .nevents = 2}, d;
	cm_buf f;
	cm_buf_init(&f);
	cm_arena a;
	cm_arena_init(&a, 0);
	inv_encode_decode(&b, &f, &a, &d);
	assert_non_null(d.inventory);
	assert_int_equal(d.inventory->collected_ms, 1700000000000);
	assert_int_equal(d.inventory->npods, 2);
	assert_int_equal(d.inventory->nnode, 1);
	assert_string_equal(d.inventory->node[0].value, "4");
	const cm_pod *p = &d.inventory->pods[0];
	assert_string_equal(p->name, "web");
	assert_string_equal(p->namespace_, "shop");
	assert_string_equal(p->status, "Running");
	assert_int_equal(p->ready, 1);
	assert_int_equal(p->nlabels, 2);
	assert_string_equal(p->labels[1].value, "front");
	assert_int_equal(p->nips, 2);
	assert_string_equal(p->ips[1], "fd00::5");
	assert_int_equal(p->ncontainers, 2);
	assert_string_equal(p->containers[0].cgroup, "/demo/web");
	assert_string_equal(p->containers[0].req_mem, "64Mi");
	assert_string_equal(p->containers[0].lim_cpu, "1");
	assert_string_equal(p->containers[1].id, "");
	assert_int_equal(d.inventory->pods[1].ncontainers, 0);
	assert_int_equal(d.nevents, 2);
	assert_string_equal(d.events[0].type, "started");
	assert_string_equal(d.events[0].pod, "web");
	assert_string_equal(d.events[1].type, "oom_killed");
	assert_int_equal(d.events[1].count, 3);
	/* absent inventory stays absent; no events is zero events */
	cm_batch plain = {.node = "n", .boot_id = "b", .seq = 8};
	inv_encode_decode(&plain, &f, &a, &d);
	assert_null(d.inventory);
	assert_int_equal(d.nevents, 0);
	/* limits and rules */
	cm_wire_limits lim = cm_wire_default_limits;
	f.len = 0;
	cm_err err = {{0}};
	assert_int_equal(cm_wire_encode(&b, 1, &f, &err), 0);
	lim.max_pods = 1;
	expect_reject(&f, &lim, CM_E2BIG, "pods");
	lim = cm_wire_default_limits;
	lim.max_pod_items = 1;
	expect_reject(&f, &lim, CM_E2BIG, "labels, IPs or containers");
	lim = cm_wire_default_limits;
	lim.max_events = 1;
	expect_reject(&f, &lim, CM_E2BIG, "events");
	ev[1].type = "exploded";
	f.len = 0;
	assert_int_equal(cm_wire_encode(&b, 1, &f, &err), 0);
	expect_reject(&f, NULL, CM_EPROTO, "unknown type");
	ev[1].type = "oom_killed";
	c[0].image = "bad\xff";
	f.len = 0;
	assert_int_equal(cm_wire_encode(&b, 1, &f, &err), 0);
	expect_reject(&f, NULL, CM_EPROTO, "UTF-8");
	cm_arena_close(&a);
	cm_buf_close(&f);
}

/* The reusable encoder: batches of different sizes back to back, each frame byte for byte the one
 * cm_wire_encode makes at the same level (so decoders cannot tell them apart), its buffers kept warm. */
/* Out of order within the window is exact; a seq pushed out of it goes to the floor. */
static void test_seqwin(void **state)
{
	(void)state;
	cm_seqwin w = {0};
	assert_false(cm_seqwin_has(&w, 1));
	cm_seqwin_add(&w, 12);
	assert_true(cm_seqwin_has(&w, 12));
	assert_false(cm_seqwin_has(&w, 11)); /* a high-water mark would lose 11 here */
	cm_seqwin_add(&w, 11);
	cm_seqwin_add(&w, 11);
	assert_int_equal(w.n, 2);
	for (uint64_t s = 100; s < 100 + CM_SEQWIN_N - 2; s++)
		cm_seqwin_add(&w, s);
	assert_int_equal(w.floor, 0);
	assert_false(cm_seqwin_has(&w, 13));
	cm_seqwin_add(&w, 1000); /* 12 leaves the window: the floor */
	assert_int_equal(w.floor, 12);
	assert_true(cm_seqwin_has(&w, 11) && cm_seqwin_has(&w, 5) && cm_seqwin_has(&w, 1000));
	assert_false(cm_seqwin_has(&w, 13) || cm_seqwin_has(&w, 999));
	assert_int_equal(cm_seqwin_at(&w, 0), 11);
	assert_int_equal(cm_seqwin_at(&w, CM_SEQWIN_N - 1), 1000);
	cm_seqwin_add(&w, 1001); /* 11 leaves: below the floor, which stays */
	assert_int_equal(w.floor, 12);
	assert_int_equal(cm_seqwin_at(&w, 0), 100);
}

static void test_wire_encoder_reuse(void **state)
{
	(void)state;
	enum { N = 20000 };
	cm_label lb[] = {{"namespace", "default"}, {"pod", "web"}, {"stream", "stdout"}};
	int64_t *ts = calloc(N, sizeof(*ts));
	const char **lines = calloc(N, sizeof(*lines));
	size_t *lens = calloc(N, sizeof(*lens));
	char *text = malloc((size_t)N * 48);
	assert_true(ts && lines && lens && text);
	for (size_t i = 0; i < N; i++) {
		ts[i] = 1714557600000000000LL + (int64_t)i * 1000;
		lines[i] = text + i * 48;
		lens[i] = (size_t)snprintf(text + i * 48, 48, "GET /api/v1/items/%zu 200 %zu ms", i * 7919 % 100003,
					   i % 97);
	}
	cm_wire_enc *e;
	assert_int_equal(cm_wire_enc_create(1, &e), 0);
	size_t sizes[] = {3, N, 1, N / 2, N};
	cm_buf ref;
	cm_buf_init(&ref);
	cm_err err = {{0}};
	for (size_t k = 0; k < CM_ARRAY_LEN(sizes); k++) {
		cm_log_stream st = {lb, 3, ts, lines, lens, NULL, sizes[k]};
		cm_batch b = {.node = "n", .boot_id = "b", .seq = 10 + k, .created_ms = 5, .log_streams = &st,
			      .nlog_streams = 1};
		const uint8_t *frame;
		size_t len;
		ref.len = 0;
		assert_int_equal(cm_wire_enc_encode(e, &b, &frame, &len, &err), 0);
		assert_int_equal(cm_wire_encode(&b, 1, &ref, &err), 0);
		assert_int_equal(len, ref.len);
		assert_memory_equal(frame, ref.data, len);
		cm_arena a;
		cm_arena_init(&a, 0);
		cm_batch d;
		assert_int_equal(cm_wire_decode(frame, len, &cm_wire_default_limits, &a, &d, &err), 0);
		assert_int_equal(d.seq, 10 + k);
		assert_int_equal(d.log_streams[0].nrecords, sizes[k]);
		size_t last = sizes[k] - 1;
		assert_true(d.log_streams[0].timestamps_ns[last] == ts[last]);
		assert_memory_equal(d.log_streams[0].lines[last], lines[last], lens[last]);
		cm_arena_close(&a);
	}
	cm_wire_enc_destroy(e);
	cm_buf_close(&ref);
	free(ts), free(lines), free(lens), free(text);
}

/* Log streams (field 10): bytes survive as bytes (NUL and invalid UTF-8 included), flags round-trip,
 * and each limit and rule rejects. */
static void test_wire_log_streams(void **state)
{
	(void)state;
	cm_label l0[] = {{"namespace", "default"}, {"pod", "web"}, {"stream", "stdout"}};
	int64_t ts[] = {1000, 2000, 3000};
	const char *lines[] = {"hello", "bad \xff utf8 \0 nul", ""};
	size_t lens[] = {5, 16, 0};
	uint32_t flags[] = {0, CM_LOG_TRUNCATED, 0};
	cm_log_stream st[2] = {{l0, 3, ts, lines, lens, flags, 3}, {l0, 2, ts + 1, lines, lens, NULL, 2}};
	cm_batch b = {.node = "n", .boot_id = "b", .seq = 9, .log_streams = st, .nlog_streams = 2};
	cm_buf f;
	cm_buf_init(&f);
	cm_arena a;
	cm_arena_init(&a, 0);
	cm_err err = {{0}};
	cm_batch d;
	assert_int_equal(cm_wire_encode(&b, 1, &f, &err), 0);
	assert_int_equal(decode(&f, NULL, &d, &a, &err), 0);
	assert_int_equal(d.nlog_streams, 2);
	assert_int_equal(d.log_streams[0].nlabels, 3);
	assert_string_equal(d.log_streams[0].labels[1].value, "web");
	assert_int_equal(d.log_streams[0].nrecords, 3);
	assert_true(d.log_streams[0].timestamps_ns[2] == 3000);
	assert_int_equal(d.log_streams[0].line_lens[1], 16);
	assert_memory_equal(d.log_streams[0].lines[1], lines[1], 16);
	assert_int_equal(d.log_streams[0].line_lens[2], 0);
	assert_int_equal(d.log_streams[0].flags[1], CM_LOG_TRUNCATED);
	assert_int_equal(d.log_streams[1].nlabels, 2);
	assert_true(d.log_streams[1].timestamps_ns[0] == 2000 && d.log_streams[1].flags[0] == 0);
	/* limits */
	cm_wire_limits lim = cm_wire_default_limits;
	lim.max_log_streams = 1;
	expect_reject(&f, &lim, CM_E2BIG, "2 log streams, limit 1");
	lim = cm_wire_default_limits;
	lim.max_log_records = 4;
	expect_reject(&f, &lim, CM_E2BIG, "more than 4 log records");
	lim = cm_wire_default_limits;
	lim.max_log_line = 15;
	expect_reject(&f, &lim, CM_E2BIG, "line of 16 bytes, limit 15");
	lim = cm_wire_default_limits;
	lim.max_labels = 2;
	expect_reject(&f, &lim, CM_E2BIG, "3 labels, limit 2");
	/* rules: label names and values, duplicates, parallel arrays */
	cm_label bad[][2] = {{{"a-b", "x"}, {"c", "d"}}, {{"a", "x"}, {"a", "y"}}, {{"a", "\xc3\x28"}, {"c", "d"}}};
	const char *why[] = {"invalid label name", "duplicate label a", "not valid UTF-8"};
	for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
		cm_log_stream one = {bad[i], 2, ts, lines, lens, flags, 3};
		cm_batch bb = {.node = "n", .seq = 1, .log_streams = &one, .nlog_streams = 1};
		f.len = 0;
		assert_int_equal(cm_wire_encode(&bb, 1, &f, &err), 0);
		expect_reject(&f, NULL, CM_EPROTO, why[i]);
	}
	cm_buf pb, ls;
	cm_buf_init(&pb);
	cm_buf_init(&ls);
	pb_str(&pb, 1, "n");
	pb_bytes(&ls, 3, "x", 1); /* a line without a timestamp */
	pb_bytes(&pb, 10, ls.data, ls.len);
	frame_pb(&f, &pb);
	expect_reject(&f, NULL, CM_EPROTO, "0 timestamps, 1 lines");
	cm_buf_close(&pb);
	cm_buf_close(&ls);
	cm_arena_close(&a);
	cm_buf_close(&f);
}

static void test_fmt_double(void **state)
{
	(void)state;
	struct {
		double v;
		const char *s;
	} cases[] = {{0, "0"},          {1, "1"},           {-1.5, "-1.5"},         {0.1, "0.1"},
		     {1e21, "1000000000000000000000"}, {1e-7, "0.0000001"}, {123456.789, "123456.789"},
		     {1.0 / 3, "0.3333333333333333"}, {NAN, "NaN"}, {INFINITY, "+Inf"}, {-INFINITY, "-Inf"},
		     {1700000000.123, "1700000000.123"}};
	char buf[CM_FMT_DOUBLE_MAX];
	for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
		cm_fmt_double(buf, sizeof(buf), cases[i].v);
		assert_string_equal(buf, cases[i].s);
	}
	char tiny[400] = "0.";
	memset(tiny + 2, '0', 323);
	strcpy(tiny + 325, "5");
	cm_fmt_double(buf, sizeof(buf), 5e-324); /* the smallest denormal: 323 zeros, then 5 */
	assert_string_equal(buf, tiny);
}

/* The digits of the shortest %.*e that reads back to v (the definition, by linear search). */
static void shortest_oracle(double v, char *dig)
{
	char tmp[64];
	for (int p = 1; p <= 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	int n = 0;
	for (const char *c = tmp; *c && *c != 'e'; c++)
		if (*c >= '0' && *c <= '9')
			dig[n++] = *c;
	while (n > 1 && dig[n - 1] == '0')
		n--;
	dig[n] = 0;
}

/* The significant digits of a positional number. */
static void significant(const char *s, char *dig)
{
	int n = 0;
	for (; *s; s++)
		if (*s >= '0' && *s <= '9' && (n || *s != '0'))
			dig[n++] = *s;
	while (n > 1 && dig[n - 1] == '0')
		n--;
	dig[n] = 0;
}

static void test_fmt_double_random(void **state)
{
	(void)state;
	uint64_t x = 88172645463325252ULL;
	char buf[CM_FMT_DOUBLE_MAX], want[64], got[CM_FMT_DOUBLE_MAX];
	for (int i = 0; i < 60000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double v;
		switch (i % 5) { /* any bits; decimals; binary fractions; next to powers of ten; rate-like */
		case 0: memcpy(&v, &x, 8); break;
		case 1: v = (double)(x % 100000000000ULL) / pow(10, (double)(x >> 40 & 15)); break;
		case 2: v = ldexp((double)(x >> 11), -(int)(x % 120)); break;
		case 3: v = nextafter(pow(10, (double)((int)(x % 30) - 8)), (x >> 32 & 1) ? 0 : 1e300); break;
		default: v = (double)(x % 1000000) / 3e4 / 300; break;
		}
		if (!isfinite(v) || v == 0)
			continue;
		cm_fmt_double(buf, sizeof(buf), v);
		shortest_oracle(fabs(v), want);
		significant(buf, got);
		assert_true(strtod(buf, NULL) == v);
		assert_string_equal(got, want);
	}
}

static void test_durations_and_times(void **state)
{
	(void)state;
	struct {
		const char *s;
		int rc;
		int64_t ms;
	} d[] = {{"10s", 0, 10000},  {"1h30m", 0, 5400000}, {"250ms", 0, 250},   {"1.5", 0, 1500},
		 {"2d", 0, 172800000}, {"1w", 0, 604800000}, {"", CM_EINVAL, 0},  {"5x", CM_EINVAL, 0},
		 {"30m1h", CM_EINVAL, 0}, {"-5s", CM_EINVAL, 0}, {"1m1m", CM_EINVAL, 0}, {"1s500ms", 0, 1500}};
	for (size_t i = 0; i < CM_ARRAY_LEN(d); i++) {
		int64_t ms = -1;
		assert_int_equal(cm_parse_duration_ms(d[i].s, &ms), d[i].rc);
		if (!d[i].rc)
			assert_true(ms == d[i].ms);
	}
	int64_t t;
	assert_int_equal(cm_parse_time_ms("1700000000.5", &t), 0);
	assert_true(t == 1700000000500);
	assert_int_equal(cm_parse_time_ms("2023-11-14T22:13:20Z", &t), 0);
	assert_true(t == 1700000000000);
	assert_int_equal(cm_parse_time_ms("2023-11-14T23:13:20.25+01:00", &t), 0);
	assert_true(t == 1700000000250);
	assert_int_equal(cm_parse_time_ms("-1.5", &t), 0);
	assert_true(t == -1500);
	assert_int_equal(cm_parse_time_ms("yesterday", &t), CM_EINVAL);
	assert_int_equal(cm_parse_time_ms("2023-11-14T22:13:20", &t), CM_EINVAL);
	assert_int_equal(cm_parse_time_ms("1e9", &t), CM_EINVAL);
}

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(cm_crc32c(0, "123456789", 9), 0xE3069283);
	assert_int_equal(cm_crc32c(0, "", 0), 0);
	uint8_t zeros[32] = {0};
	assert_int_equal(cm_crc32c(0, zeros, 32), 0x8A9136AA); /* RFC 3720 B.4 */
	assert_int_equal(cm_crc32c(cm_crc32c(0, "12345", 5), "6789", 4), 0xE3069283);
}

static void test_buf_and_reader(void **state)
{
	(void)state;
	cm_buf b;
	cm_buf_init(&b);
	uint64_t vals[] = {0, 1, 127, 128, 300, UINT64_MAX};
	for (size_t i = 0; i < CM_ARRAY_LEN(vals); i++)
		assert_int_equal(cm_buf_put_uvarint(&b, vals[i]), 0);
	cm_buf_put_u32le(&b, 0xdeadbeef);
	cm_buf_put_f64le(&b, -2.5);
	cm_rd r;
	cm_rd_init(&r, b.data, b.len);
	for (size_t i = 0; i < CM_ARRAY_LEN(vals); i++) {
		uint64_t v;
		assert_int_equal(cm_rd_uvarint(&r, &v), 0);
		assert_true(v == vals[i]);
	}
	uint32_t u;
	double d;
	assert_int_equal(cm_rd_u32le(&r, &u), 0);
	assert_int_equal(u, 0xdeadbeef);
	assert_int_equal(cm_rd_f64le(&r, &d), 0);
	assert_true(d == -2.5);
	assert_int_equal(cm_rd_u32le(&r, &u), CM_EPROTO); /* past the end fails cleanly */
	const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
	uint64_t v;
	cm_rd_init(&r, over, sizeof(over));
	assert_int_equal(cm_rd_uvarint(&r, &v), CM_EPROTO); /* more than 64 bits */
	b.len = 0;
	cm_buf_put_json_str(&b, "a\"b\\c\n<x>\x01");
	assert_string_equal((char *)b.data, "\"a\\\"b\\\\c\\u000a\\u003cx\\u003e\\u0001\"");
	cm_buf_close(&b);
}

typedef struct opts_cfg {
	const char *name;
	long n;
	int64_t every;
	uint64_t size;
	int flag;
} opts_cfg;

static const cm_opt test_opts[] = {
	{"name", CM_OPT_STR, "def", offsetof(opts_cfg, name), "a name", "CM_TEST_NAME"},
	{"n", CM_OPT_INT, "3", offsetof(opts_cfg, n), "a number", NULL},
	{"every", CM_OPT_DURATION, "10s", offsetof(opts_cfg, every), "a duration", NULL},
	{"size", CM_OPT_SIZE, "1Ki", offsetof(opts_cfg, size), "a size", NULL},
	{"flag", CM_OPT_BOOL, "false", offsetof(opts_cfg, flag), "a flag", NULL},
};

static void test_opts_table(void **state)
{
	(void)state;
	opts_cfg c;
	cm_err err;
	char *argv1[] = {"prog", "--n=7", "--every", "1m", "--flag", "pos", "--size", "2Mi", NULL};
	char **pos;
	int npos;
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 8, argv1, "u", &pos, &npos, &err), 0);
	assert_string_equal(c.name, "def");
	assert_int_equal(c.n, 7);
	assert_true(c.every == 60000);
	assert_true(c.size == 2u << 20);
	assert_int_equal(c.flag, 1);
	assert_int_equal(npos, 1);
	assert_string_equal(pos[0], "pos");
	setenv("CM_TEST_NAME", "from-env", 1);
	char *argv2[] = {"prog", NULL};
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 1, argv2, "u", NULL, NULL, &err), 0);
	assert_string_equal(c.name, "from-env");
	unsetenv("CM_TEST_NAME");
	char *argv3[] = {"prog", "--nope", NULL};
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 2, argv3, "u", NULL, NULL, &err), CM_EINVAL);
	assert_non_null(strstr(err.msg, "unknown flag '--nope'"));
	char *argv4[] = {"prog", "--every", "soon", NULL};
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 3, argv4, "u", NULL, NULL, &err), CM_EINVAL);
	assert_non_null(strstr(err.msg, "--every: invalid value 'soon'"));
	char *argv5[] = {"prog", "--n", NULL};
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 2, argv5, "u", NULL, NULL, &err), CM_EINVAL);
	assert_non_null(strstr(err.msg, "needs a value"));
	char *argv6[] = {"prog", "stray", NULL};
	assert_int_equal(cm_opts_parse(test_opts, 5, &c, 2, argv6, "u", NULL, NULL, &err), CM_EINVAL);
}

static void test_parse_listen(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	cm_err err;
	assert_int_equal(cm_parse_listen("listen", "127.0.0.1:9300", &ss, &err), 0);
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	assert_int_equal(in4->sin_family, AF_INET);
	assert_int_equal(ntohs(in4->sin_port), 9300);
	assert_int_equal(ntohl(in4->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(cm_parse_listen("listen", ":80", &ss, &err), 0);
	assert_int_equal(in4->sin_addr.s_addr, 0);
	assert_int_equal(cm_parse_listen("listen", "[::1]:53", &ss, &err), 0);
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(in6->sin6_port), 53);
	assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
	const char *bad[] = {"9300", "127.0.0.1:", "127.0.0.1:70000", "localhost:9300", "[::1:53", "1.2.3:4", "::1:53"};
	for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
		assert_int_equal(cm_parse_listen("listen", bad[i], &ss, &err), CM_EINVAL);
		assert_non_null(strstr(err.msg, "--listen"));
	}
}

static void test_arena_limit(void **state)
{
	(void)state;
	cm_arena a;
	cm_arena_init(&a, 100);
	assert_non_null(cm_arena_alloc(&a, 64));
	assert_null(cm_arena_alloc(&a, 64)); /* 128 > 100 */
	assert_non_null(cm_arena_strdup(&a, "hi"));
	assert_null(cm_arena_calloc(&a, SIZE_MAX / 2, 4));
	cm_arena_close(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wire_round_trip),    cmocka_unit_test(test_wire_frame_rejections),
		cmocka_unit_test(test_wire_body_rejections), cmocka_unit_test(test_wire_batch_rules),
		cmocka_unit_test(test_fmt_double),         cmocka_unit_test(test_fmt_double_random),         cmocka_unit_test(test_durations_and_times),
		cmocka_unit_test(test_crc32c),             cmocka_unit_test(test_buf_and_reader),
		cmocka_unit_test(test_opts_table),         cmocka_unit_test(test_arena_limit),
		cmocka_unit_test(test_parse_listen),
		cmocka_unit_test(test_wire_inventory_and_events),
		cmocka_unit_test(test_wire_log_streams),
		cmocka_unit_test(test_wire_encoder_reuse),
		cmocka_unit_test(test_seqwin),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
