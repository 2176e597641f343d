/* cm_wire.c -- the wire batch: protobuf-c message, zstd body, framed with magic, lengths and CRC32C.
 *
 * The agent encodes one cm_batch per interval and POSTs the frame to /api/v1/agent/push; the
 * aggregator decodes it with limits. Nothing outside common/ sees the protobuf-c generated names: the
 * codec converts to and from the plain cm_batch structs of cm.h.
 *
 * Frame layout, version 1 (all integers little-endian):
 *
 *   offset  size  field
 *   0       4     magic "CRLB" (0x43 0x52 0x4C 0x42)
 *   4       1     version, 1
 *   5       1     body codec, 1 = zstd (the only one defined)
 *   6       2     reserved, 0
 *   8       4     decompressed length: exact byte size of the protobuf corral.wire.Batch
 *   12      4     body length: byte size of the zstd frame that follows
 *   16      4     CRC32C (Castagnoli) of bytes 0..15 followed by the body
 *   20      n     body: one zstd frame whose content is the Batch (common/proto/corral.proto)
 *
 * The encoder writes the Batch's series (field 6) after its other fields (protobuf parsers merge a
 * repeated field's occurrences wherever they are); the decoder takes the fields in any order. It reads
 * the log streams (field 10) itself, their lines left in the decompressed body, and protobuf-c the rest.
 *
 * A frame is valid when: it is exactly 20 + body length bytes; magic, version, codec and reserved
 * match; the CRC matches; the body length and decompressed length are within the receiver's limits;
 * the zstd frame decompresses to exactly the declared length (a longer output is refused as a
 * decompression bomb before it is written); the protobuf parses; and the batch obeys the element limits
 * and the label rules below. Anything else is rejected with CM_EPROTO or CM_E2BIG and a message.
 *
 * Batch rules: node is non-empty; every string is valid UTF-8; each series has a valid metric name in
 * __name__ ([a-zA-Z_:][a-zA-Z0-9_:]*), valid and unique label names, and as many timestamps as values.
 * Labels with an empty value are dropped, as Prometheus does (an empty label is an absent label).
 * Inventory (field 11) and events (field 12): every string valid UTF-8 within max_label_bytes, at most
 * max_pods pods of at most max_pod_items labels, IPs and containers each, at most max_events events,
 * event type one of "started", "stopped", "oom_killed".
 * Log streams (field 10): at most max_log_streams streams and max_log_records records in the batch,
 * each stream with at most max_labels labels (valid, unique names; UTF-8 values within
 * max_label_bytes), as many timestamps as lines, flags either absent or one per line, and no line
 * longer than max_log_line bytes. Lines are bytes and are not checked for UTF-8.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cm.h"
#include "corral.pb-c.h"

#define WIRE_MAGIC "CRLB"
#define WIRE_VERSION 1
#define WIRE_CODEC_ZSTD 1

const cm_wire_limits cm_wire_default_limits = {
	.max_frame = 16u << 20,
	.max_decompressed = 64u << 20,
	.max_series = 200000,
	.max_samples = 2000000,
	.max_labels = 64,
	.max_label_bytes = 4096,
	.max_pods = 20000,
	.max_pod_items = 1024,
	.max_events = 100000,
	.max_log_streams = 10000,
	.max_log_records = 1000000,
	.max_log_line = 1u << 20,
};

/* ---- encode ---------------------------------------------------------------------------------------- */

/* Series (field 6) are written straight from the cm_series, after the fields protobuf-c packs: a
 * parser merges the occurrences of a repeated field wherever they are, and the bytes are those
 * protobuf-c would write for them (empty strings omitted, timestamps and values packed). This skips a
 * message tree of a few hundred bytes per series. */
static size_t pb_varint_len(uint64_t v)
{
	size_t n = 1;
	for (; v >= 0x80; v >>= 7)
		n++;
	return n;
}

static uint8_t *pb_varint(uint8_t *p, uint64_t v)
{
	for (; v >= 0x80; v >>= 7)
		*p++ = (uint8_t)(v | 0x80);
	*p++ = (uint8_t)v;
	return p;
}

/* A length-delimited field of n bytes: tag, length, bytes. */
static size_t pb_len_field(size_t n) { return 1 + pb_varint_len(n) + n; }

/* One Label message (Series field 1): its bytes after the tag and length, and the whole of it. */
static size_t label_body(size_t nlen, size_t vlen)
{
	return (nlen ? pb_len_field(nlen) : 0) + (vlen ? pb_len_field(vlen) : 0);
}

static uint8_t *put_label(uint8_t *p, const char *name, size_t nlen, const char *value, size_t vlen)
{
	*p++ = 1 << 3 | 2;
	p = pb_varint(p, label_body(nlen, vlen));
	if (nlen) {
		*p++ = 1 << 3 | 2;
		p = pb_varint(p, nlen);
		memcpy(p, name, nlen), p += nlen;
	}
	if (vlen) {
		*p++ = 2 << 3 | 2;
		p = pb_varint(p, vlen);
		memcpy(p, value, vlen), p += vlen;
	}
	return p;
}

static size_t labels_len(const cm_label *l, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += pb_len_field(label_body(l[i].name ? strlen(l[i].name) : 0, l[i].value ? strlen(l[i].value) : 0));
	return len;
}

static uint8_t *put_labels(uint8_t *p, const cm_label *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p = put_label(p, l[i].name, l[i].name ? strlen(l[i].name) : 0, l[i].value,
			      l[i].value ? strlen(l[i].value) : 0);
	return p;
}

/* The packed timestamps (field 2) and values (field 3) of a Series. */
static size_t samples_len(const cm_sample *s, size_t n, size_t *tslen)
{
	*tslen = 0;
	for (size_t i = 0; i < n; i++)
		*tslen += pb_varint_len((uint64_t)s[i].t_ms);
	return n ? pb_len_field(*tslen) + pb_len_field(8 * n) : 0;
}

static uint8_t *put_samples(uint8_t *p, const cm_sample *s, size_t n, size_t tslen)
{
	if (!n)
		return p;
	*p++ = 2 << 3 | 2;
	p = pb_varint(p, tslen);
	for (size_t i = 0; i < n; i++)
		p = pb_varint(p, (uint64_t)s[i].t_ms);
	*p++ = 3 << 3 | 2;
	p = pb_varint(p, 8 * n);
	for (size_t i = 0; i < n; i++, p += 8) {
		uint64_t bits;
		memcpy(&bits, &s[i].v, 8);
		cm_put_u32le(p, (uint32_t)bits);
		cm_put_u32le(p + 4, (uint32_t)(bits >> 32));
	}
	return p;
}

/* Appends field 6 (one Series message) for in. */
static int put_series(const cm_series *in, cm_buf *out)
{
	size_t tslen, n = labels_len(in->labels, in->nlabels) + samples_len(in->samples, in->nsamples, &tslen);
	if (cm_buf_reserve(out, pb_len_field(n)))
		return CM_ENOMEM;
	uint8_t *p = out->data + out->len;
	*p++ = 6 << 3 | 2;
	p = pb_varint(p, n);
	p = put_labels(p, in->labels, in->nlabels);
	p = put_samples(p, in->samples, in->nsamples, tslen);
	out->len = (size_t)(p - out->data);
	return CM_OK;
}

int cm_wire_labels_pb(cm_buf *out, const cm_label *l, size_t n)
{
	if (cm_buf_reserve(out, labels_len(l, n)))
		return CM_ENOMEM;
	out->len = (size_t)(put_labels(out->data + out->len, l, n) - out->data);
	return CM_OK;
}

int cm_wire_series1_pb(cm_buf *out, const char *metric, const uint8_t *pre, size_t prelen, const cm_label *l,
		       size_t n, int64_t t_ms, double v, size_t *labels_at, size_t *labels_len_out)
{
	static const char name[] = "__name__";
	size_t mlen = metric ? strlen(metric) : 0, tslen;
	cm_sample s = {t_ms, v};
	size_t lab = (metric ? pb_len_field(label_body(sizeof(name) - 1, mlen)) : 0) + prelen + labels_len(l, n);
	size_t body = lab + samples_len(&s, 1, &tslen);
	if (cm_buf_reserve(out, pb_len_field(body)))
		return CM_ENOMEM;
	uint8_t *p = out->data + out->len;
	*p++ = 6 << 3 | 2;
	p = pb_varint(p, body);
	*labels_at = (size_t)(p - out->data), *labels_len_out = lab;
	if (metric)
		p = put_label(p, name, sizeof(name) - 1, metric, mlen);
	if (prelen)
		memcpy(p, pre, prelen), p += prelen;
	p = put_labels(p, l, n);
	p = put_samples(p, &s, 1, tslen);
	out->len = (size_t)(p - out->data);
	return CM_OK;
}

int cm_wire_series1_same(const uint8_t *lab, size_t len, const char *metric, const uint8_t *pre, size_t prelen,
			 const cm_label *l, size_t n)
{
	static const char name[] = "__name__";
	uint8_t head[288], tail[1024]; /* longer names or own labels compare as different: written anew */
	size_t mlen = strlen(metric), tlen = labels_len(l, n);
	if (!mlen || mlen > 256 || tlen > sizeof(tail))
		return 0;
	size_t hlen = (size_t)(put_label(head, name, sizeof(name) - 1, metric, mlen) - head);
	put_labels(tail, l, n);
	return len == hlen + prelen + tlen && !memcmp(lab, head, hlen) && (!prelen || !memcmp(lab + hlen, pre, prelen)) &&
	       (!tlen || !memcmp(lab + hlen + prelen, tail, tlen));
}

void cm_wire_series1_set(uint8_t *labels_end, int64_t t_ms, double v)
{
	cm_sample s = {t_ms, v};
	size_t tslen;
	samples_len(&s, 1, &tslen);
	put_samples(labels_end, &s, 1, tslen);
}

size_t cm_wire_varint_len(uint64_t v) { return pb_varint_len(v); }

/* ---- encode: inventory and events (fields 11, 12) ------------------------------------------------ */

static char *s_(const char *s) { return (char *)(s ? s : ""); }

static Corral__Wire__Label **build_labels(const cm_label *in, size_t n, cm_arena *a)
{
	Corral__Wire__Label **out = cm_arena_calloc(a, n ? n : 1, sizeof(*out));
	Corral__Wire__Label *l = cm_arena_calloc(a, n ? n : 1, sizeof(*l));
	if (!out || !l)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		corral__wire__label__init(&l[i]);
		l[i].name = s_(in[i].name), l[i].value = s_(in[i].value);
		out[i] = &l[i];
	}
	return out;
}

static int build_pod(const cm_pod *in, Corral__Wire__Pod *p, cm_arena *a)
{
	corral__wire__pod__init(p);
	p->name = s_(in->name), p->namespace_ = s_(in->namespace_), p->uid = s_(in->uid), p->status = s_(in->status);
	p->ready = in->ready != 0;
	p->n_labels = in->nlabels, p->n_ips = in->nips, p->n_containers = in->ncontainers;
	p->labels = build_labels(in->labels, in->nlabels, a);
	p->ips = cm_arena_calloc(a, in->nips ? in->nips : 1, sizeof(char *));
	p->containers = cm_arena_calloc(a, in->ncontainers ? in->ncontainers : 1, sizeof(*p->containers));
	Corral__Wire__Container *c = cm_arena_calloc(a, in->ncontainers ? in->ncontainers : 1, sizeof(*c));
	if (!p->labels || !p->ips || !p->containers || !c)
		return CM_ENOMEM;
	for (size_t i = 0; i < in->nips; i++)
		p->ips[i] = s_(in->ips[i]);
	for (size_t i = 0; i < in->ncontainers; i++) {
		const cm_container *x = &in->containers[i];
		corral__wire__container__init(&c[i]);
		c[i].name = s_(x->name), c[i].id = s_(x->id), c[i].image = s_(x->image), c[i].cgroup = s_(x->cgroup);
		c[i].request_cpu = s_(x->req_cpu), c[i].request_memory = s_(x->req_mem);
		c[i].limit_cpu = s_(x->lim_cpu), c[i].limit_memory = s_(x->lim_mem);
		p->containers[i] = &c[i];
	}
	return CM_OK;
}

static int build_inventory(const cm_inventory *in, Corral__Wire__Batch *msg, cm_arena *a)
{
	Corral__Wire__Inventory *inv = cm_arena_calloc(a, 1, sizeof(*inv));
	Corral__Wire__Pod *pods = cm_arena_calloc(a, in->npods ? in->npods : 1, sizeof(*pods));
	if (!inv || !pods)
		return CM_ENOMEM;
	corral__wire__inventory__init(inv);
	inv->collected_ms = in->collected_ms;
	inv->n_pods = in->npods, inv->n_node = in->nnode;
	inv->pods = cm_arena_calloc(a, in->npods ? in->npods : 1, sizeof(*inv->pods));
	inv->node = build_labels(in->node, in->nnode, a);
	if (!inv->pods || !inv->node)
		return CM_ENOMEM;
	for (size_t i = 0; i < in->npods; i++) {
		int rc = build_pod(&in->pods[i], &pods[i], a);
		if (rc)
			return rc;
		inv->pods[i] = &pods[i];
	}
	msg->inventory = inv;
	return CM_OK;
}

static int build_events(const cm_event *in, size_t n, Corral__Wire__Batch *msg, cm_arena *a)
{
	Corral__Wire__Event *e = cm_arena_calloc(a, n ? n : 1, sizeof(*e));
	msg->events = cm_arena_calloc(a, n ? n : 1, sizeof(*msg->events));
	if (!e || !msg->events)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		corral__wire__event__init(&e[i]);
		e[i].time_ms = in[i].t_ms, e[i].type = s_(in[i].type), e[i].cgroup = s_(in[i].cgroup);
		e[i].container_id = s_(in[i].container_id), e[i].container = s_(in[i].container);
		e[i].pod = s_(in[i].pod), e[i].namespace_ = s_(in[i].namespace_), e[i].count = in[i].count;
		msg->events[i] = &e[i];
	}
	msg->n_events = n;
	return CM_OK;
}

/* ---- encode: log streams (field 10) ------------------------------------------------------------- */

static int build_log_stream(const cm_log_stream *in, Corral__Wire__LogStream *out, cm_arena *a)
{
	size_t n = in->nrecords, any_flag = 0;
	corral__wire__log_stream__init(out);
	out->labels = build_labels(in->labels, in->nlabels, a);
	out->timestamps_ns = cm_arena_calloc(a, n ? n : 1, sizeof(int64_t));
	out->lines = cm_arena_calloc(a, n ? n : 1, sizeof(*out->lines));
	out->flags = cm_arena_calloc(a, n ? n : 1, sizeof(uint32_t));
	if (!out->labels || !out->timestamps_ns || !out->lines || !out->flags)
		return CM_ENOMEM;
	out->n_labels = in->nlabels;
	out->n_timestamps_ns = out->n_lines = n;
	for (size_t i = 0; i < n; i++) {
		out->timestamps_ns[i] = in->timestamps_ns[i];
		out->lines[i].data = (uint8_t *)in->lines[i];
		out->lines[i].len = in->line_lens[i];
		out->flags[i] = in->flags ? in->flags[i] : 0;
		any_flag |= out->flags[i];
	}
	out->n_flags = any_flag ? n : 0; /* all zero: the field is left out */
	return CM_OK;
}

static int build_log_streams(const cm_log_stream *in, size_t n, Corral__Wire__Batch *msg, cm_arena *a)
{
	Corral__Wire__LogStream *st = cm_arena_calloc(a, n ? n : 1, sizeof(*st));
	msg->log_streams = cm_arena_calloc(a, n ? n : 1, sizeof(*msg->log_streams));
	if (!st || !msg->log_streams)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int rc = build_log_stream(&in[i], &st[i], a);
		if (rc)
			return rc;
		msg->log_streams[i] = &st[i];
	}
	msg->n_log_streams = n;
	return CM_OK;
}

/* Packs b into pbuf (emptied first); the message tree of the fields other than series goes into a. */
static int pack_batch(const cm_batch *b, cm_arena *a, cm_buf *pbuf)
{
	Corral__Wire__Batch msg;
	corral__wire__batch__init(&msg);
	msg.node = (char *)(b->node ? b->node : "");
	msg.boot_id = (char *)(b->boot_id ? b->boot_id : "");
	msg.agent_version = (char *)(b->agent_version ? b->agent_version : "");
	msg.seq = b->seq;
	msg.created_ms = b->created_ms;
	if (b->inventory && build_inventory(b->inventory, &msg, a))
		return CM_ENOMEM;
	if (b->nevents && build_events(b->events, b->nevents, &msg, a))
		return CM_ENOMEM;
	if (b->nlog_streams && build_log_streams(b->log_streams, b->nlog_streams, &msg, a))
		return CM_ENOMEM;
	size_t n = corral__wire__batch__get_packed_size(&msg);
	pbuf->len = 0;
	if (cm_buf_reserve(pbuf, n))
		return CM_ENOMEM;
	pbuf->len = corral__wire__batch__pack(&msg, pbuf->data);
	for (size_t i = 0; i < b->nseries; i++)
		if (put_series(&b->series[i], pbuf))
			return CM_ENOMEM;
	return cm_buf_append(pbuf, b->series_pb, b->series_pblen);
}

/* Compresses the packed Batch pb into a frame appended to out, with cctx (NULL: a one-off context). */
static int frame_pb(ZSTD_CCtx *cctx, int zstd_level, const uint8_t *pb, size_t pblen, cm_buf *out, cm_err *err)
{
	if (pblen > UINT32_MAX)
		return cm_errf(err, CM_E2BIG, "batch of %zu bytes does not fit a frame", pblen);
	size_t bound = ZSTD_compressBound(pblen), start = out->len;
	int rc = cm_buf_reserve(out, CM_WIRE_HEADER + bound);
	if (rc)
		return cm_errf(err, rc, "out of memory encoding batch");
	uint8_t *h = out->data + start;
	size_t clen = cctx ? ZSTD_compressCCtx(cctx, h + CM_WIRE_HEADER, bound, pb, pblen, zstd_level)
			   : ZSTD_compress(h + CM_WIRE_HEADER, bound, pb, pblen, zstd_level);
	if (ZSTD_isError(clen))
		return cm_errf(err, CM_EIO, "zstd: %s", ZSTD_getErrorName(clen));
	memcpy(h, WIRE_MAGIC, 4);
	h[4] = WIRE_VERSION, h[5] = WIRE_CODEC_ZSTD, h[6] = h[7] = 0;
	cm_put_u32le(h + 8, (uint32_t)pblen);
	cm_put_u32le(h + 12, (uint32_t)clen);
	cm_put_u32le(h + 16, cm_crc32c(cm_crc32c(0, h, 16), h + CM_WIRE_HEADER, clen));
	out->len = start + CM_WIRE_HEADER + clen;
	return CM_OK;
}

int cm_wire_encode(const cm_batch *b, int zstd_level, cm_buf *out, cm_err *err)
{
	cm_arena a;
	cm_buf pb;
	cm_arena_init(&a, 0);
	cm_buf_init(&pb);
	int rc = pack_batch(b, &a, &pb);
	if (rc)
		rc = cm_errf(err, rc, "out of memory encoding batch");
	else
		rc = frame_pb(NULL, zstd_level, pb.data, pb.len, out, err);
	cm_buf_close(&pb);
	cm_arena_close(&a);
	return rc;
}

/* ---- encode: a reusable encoder -------------------------------------------------------------------- */

struct cm_wire_enc {
	int level;
	ZSTD_CCtx *cctx;
	cm_arena arena; /* the message of the fields other than series; reset (blocks kept) per batch */
	cm_buf pb;      /* its packed bytes */
	cm_buf out;
};

int cm_wire_enc_create(int zstd_level, cm_wire_enc **out)
{
	cm_wire_enc *e = calloc(1, sizeof(*e));
	if (!e || !(e->cctx = ZSTD_createCCtx())) {
		free(e);
		return CM_ENOMEM;
	}
	e->level = zstd_level;
	cm_arena_init(&e->arena, 0);
	cm_buf_init(&e->pb);
	cm_buf_init(&e->out);
	*out = e;
	return CM_OK;
}

void cm_wire_enc_destroy(cm_wire_enc *e)
{
	if (!e)
		return;
	ZSTD_freeCCtx(e->cctx);
	cm_arena_close(&e->arena);
	cm_buf_close(&e->pb);
	cm_buf_close(&e->out);
	free(e);
}

int cm_wire_enc_encode(cm_wire_enc *e, const cm_batch *b, const uint8_t **frame, size_t *len, cm_err *err)
{
	cm_arena_reset(&e->arena);
	e->out.len = 0;
	int rc = pack_batch(b, &e->arena, &e->pb);
	if (rc)
		return cm_errf(err, rc, "out of memory encoding batch");
	if ((rc = frame_pb(e->cctx, e->level, e->pb.data, e->pb.len, &e->out, err)))
		return rc;
	*frame = e->out.data, *len = e->out.len;
	return CM_OK;
}

/* ---- decode ---------------------------------------------------------------------------------------- */

/* protobuf-c allocates through the caller's arena, capped so a small, dense message cannot expand
 * into unbounded memory; free is a no-op because the arena is released as a whole. */
typedef struct pb_alloc_ctx {
	cm_arena *arena;
	size_t start, cap;
} pb_alloc_ctx;

static void *pb_alloc(void *data, size_t size)
{
	pb_alloc_ctx *c = data;
	if (c->arena->used - c->start + size > c->cap)
		return NULL;
	return cm_arena_alloc(c->arena, size);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

static int metric_name_valid(const char *s)
{
	if (!*s)
		return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (!(c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (p != s && c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

static int check_string(const char *s, size_t max, const char *what, cm_err *err)
{
	size_t n = strlen(s);
	if (n > max)
		return cm_errf(err, CM_E2BIG, "%s is %zu bytes, limit %zu", what, n, max);
	if (!cm_utf8_valid(s, n))
		return cm_errf(err, CM_EPROTO, "%s is not valid UTF-8", what);
	return CM_OK;
}

static int convert_labels(const Corral__Wire__Series *in, size_t idx, const cm_wire_limits *lim,
			  cm_arena *a, cm_series *out, cm_err *err)
{
	if (in->n_labels > lim->max_labels)
		return cm_errf(err, CM_E2BIG, "series %zu has %zu labels, limit %zu", idx, in->n_labels,
			       lim->max_labels);
	out->labels = cm_arena_calloc(a, in->n_labels ? in->n_labels : 1, sizeof(cm_label));
	if (!out->labels)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding batch");
	const char *metric = NULL;
	size_t n = 0;
	for (size_t i = 0; i < in->n_labels; i++) {
		const Corral__Wire__Label *l = in->labels[i];
		if (!cm_label_name_valid(l->name))
			return cm_errf(err, CM_EPROTO, "series %zu: invalid label name", idx);
		int rc = check_string(l->name, lim->max_label_bytes, "label name", err);
		if (!rc)
			rc = check_string(l->value, lim->max_label_bytes, "label value", err);
		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(in->labels[j]->name, l->name))
				return cm_errf(err, CM_EPROTO, "series %zu: duplicate label %s", idx, l->name);
		if (!strcmp(l->name, "__name__"))
			metric = l->value;
		if (*l->value)
			out->labels[n++] = (cm_label){l->name, l->value};
	}
	if (!metric || !metric_name_valid(metric))
		return cm_errf(err, CM_EPROTO, "series %zu: missing or invalid metric name", idx);
	out->nlabels = n;
	return CM_OK;
}

static int convert_series(const Corral__Wire__Series *in, size_t idx, const cm_wire_limits *lim,
			  cm_arena *a, cm_series *out, size_t *total_samples, cm_err *err)
{
	if (in->n_timestamps_ms != in->n_values)
		return cm_errf(err, CM_EPROTO, "series %zu: %zu timestamps but %zu values", idx,
			       in->n_timestamps_ms, in->n_values);
	if (in->n_values > lim->max_samples - *total_samples)
		return cm_errf(err, CM_E2BIG, "batch has more than %zu samples", lim->max_samples);
	*total_samples += in->n_values;
	int rc = convert_labels(in, idx, lim, a, out, err);
	if (rc)
		return rc;
	out->nsamples = in->n_values;
	out->samples = cm_arena_calloc(a, in->n_values ? in->n_values : 1, sizeof(cm_sample));
	if (!out->samples)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding batch");
	for (size_t i = 0; i < in->n_values; i++)
		out->samples[i] = (cm_sample){in->timestamps_ms[i], in->values[i]};
	return CM_OK;
}

/* ---- decode: inventory and events (fields 11, 12) ------------------------------------------------ */

static int check_strings(const char *const *s, size_t n, const cm_wire_limits *lim, const char *what, cm_err *err)
{
	int rc = CM_OK;
	for (size_t i = 0; i < n && !rc; i++)
		rc = check_string(s[i], lim->max_label_bytes, what, err);
	return rc;
}

static int convert_kv(Corral__Wire__Label **in, size_t n, const cm_wire_limits *lim, cm_arena *a,
		      const cm_label **out, cm_err *err)
{
	cm_label *l = cm_arena_calloc(a, n ? n : 1, sizeof(*l));
	if (!l)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding inventory");
	for (size_t i = 0; i < n; i++) {
		const char *kv[2] = {in[i]->name, in[i]->value};
		int rc = check_strings(kv, 2, lim, "inventory label", err);
		if (rc)
			return rc;
		l[i] = (cm_label){kv[0], kv[1]};
	}
	*out = l;
	return CM_OK;
}

static int convert_pod(const Corral__Wire__Pod *in, const cm_wire_limits *lim, cm_arena *a, cm_pod *p, cm_err *err)
{
	if (in->n_labels > lim->max_pod_items || in->n_ips > lim->max_pod_items || in->n_containers > lim->max_pod_items)
		return cm_errf(err, CM_E2BIG, "inventory pod has more than %zu labels, IPs or containers",
			       lim->max_pod_items);
	const char *f[] = {in->name, in->namespace_, in->uid, in->status};
	int rc = check_strings(f, 4, lim, "inventory pod field", err);
	rc = rc ? rc : check_strings((const char *const *)in->ips, in->n_ips, lim, "inventory pod IP", err);
	rc = rc ? rc : convert_kv(in->labels, in->n_labels, lim, a, &p->labels, err);
	cm_container *c = cm_arena_calloc(a, in->n_containers ? in->n_containers : 1, sizeof(*c));
	if (!rc && !c)
		rc = cm_errf(err, CM_ENOMEM, "out of memory decoding inventory");
	for (size_t i = 0; i < in->n_containers && !rc; i++) {
		const Corral__Wire__Container *x = in->containers[i];
		c[i] = (cm_container){x->name, x->id, x->image, x->cgroup, x->request_cpu, x->request_memory,
				      x->limit_cpu, x->limit_memory};
		const char *f8[] = {x->name, x->id, x->image, x->cgroup, x->request_cpu, x->request_memory,
				    x->limit_cpu, x->limit_memory};
		rc = check_strings(f8, 8, lim, "inventory container field", err);
	}
	if (rc)
		return rc;
	p->name = in->name, p->namespace_ = in->namespace_, p->uid = in->uid, p->status = in->status;
	p->ready = in->ready, p->nlabels = in->n_labels;
	p->ips = (const char *const *)in->ips, p->nips = in->n_ips;
	p->containers = c, p->ncontainers = in->n_containers;
	return CM_OK;
}

static int convert_inventory(const Corral__Wire__Inventory *in, const cm_wire_limits *lim, cm_arena *a,
			     const cm_inventory **out, cm_err *err)
{
	if (in->n_pods > lim->max_pods)
		return cm_errf(err, CM_E2BIG, "inventory has %zu pods, limit %zu", in->n_pods, lim->max_pods);
	if (in->n_node > lim->max_pod_items)
		return cm_errf(err, CM_E2BIG, "inventory has %zu node facts, limit %zu", in->n_node, lim->max_pod_items);
	cm_inventory *inv = cm_arena_calloc(a, 1, sizeof(*inv));
	cm_pod *pods = cm_arena_calloc(a, in->n_pods ? in->n_pods : 1, sizeof(*pods));
	if (!inv || !pods)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding inventory");
	int rc = convert_kv(in->node, in->n_node, lim, a, &inv->node, err);
	for (size_t i = 0; i < in->n_pods && !rc; i++)
		rc = convert_pod(in->pods[i], lim, a, &pods[i], err);
	if (rc)
		return rc;
	inv->collected_ms = in->collected_ms, inv->nnode = in->n_node;
	inv->pods = pods, inv->npods = in->n_pods;
	*out = inv;
	return CM_OK;
}

static int convert_events(const Corral__Wire__Batch *m, const cm_wire_limits *lim, cm_arena *a, cm_batch *b,
			  cm_err *err)
{
	if (m->n_events > lim->max_events)
		return cm_errf(err, CM_E2BIG, "batch has %zu events, limit %zu", m->n_events, lim->max_events);
	cm_event *e = cm_arena_calloc(a, m->n_events ? m->n_events : 1, sizeof(*e));
	if (!e)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding events");
	for (size_t i = 0; i < m->n_events; i++) {
		const Corral__Wire__Event *x = m->events[i];
		e[i] = (cm_event){x->time_ms, x->type, x->cgroup, x->container_id, x->container, x->pod, x->namespace_,
				  x->count};
		const char *f6[] = {x->type, x->cgroup, x->container_id, x->container, x->pod, x->namespace_};
		int rc = check_strings(f6, 6, lim, "event field", err);
		if (rc)
			return rc;
		if (strcmp(x->type, "started") && strcmp(x->type, "stopped") && strcmp(x->type, "oom_killed"))
			return cm_errf(err, CM_EPROTO, "event %zu has unknown type", i);
	}
	b->events = e, b->nevents = m->n_events;
	return CM_OK;
}

/* ---- decode: log streams (field 10) ------------------------------------------------------------- */

static int convert_log_labels(const Corral__Wire__LogStream *in, size_t idx, const cm_wire_limits *lim,
			      cm_arena *a, cm_log_stream *out, cm_err *err)
{
	if (in->n_labels > lim->max_labels)
		return cm_errf(err, CM_E2BIG, "log stream %zu has %zu labels, limit %zu", idx, in->n_labels,
			       lim->max_labels);
	for (size_t i = 0; i < in->n_labels; i++) {
		const Corral__Wire__Label *l = in->labels[i];
		if (!cm_label_name_valid(l->name))
			return cm_errf(err, CM_EPROTO, "log stream %zu: invalid label name", idx);
		const char *kv[2] = {l->name, l->value};
		int rc = check_strings(kv, 2, lim, "log stream label", err);
		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(in->labels[j]->name, l->name))
				return cm_errf(err, CM_EPROTO, "log stream %zu: duplicate label %s", idx, l->name);
	}
	cm_label *labels = cm_arena_calloc(a, in->n_labels ? in->n_labels : 1, sizeof(*labels));
	if (!labels)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding log streams");
	for (size_t i = 0; i < in->n_labels; i++)
		labels[i] = (cm_label){in->labels[i]->name, in->labels[i]->value};
	out->labels = labels, out->nlabels = in->n_labels;
	return CM_OK;
}

static int convert_log_stream(const Corral__Wire__LogStream *in, size_t idx, const cm_wire_limits *lim,
			      cm_arena *a, cm_log_stream *out, cm_err *err)
{
	size_t n = in->n_lines;
	if (in->n_timestamps_ns != n || (in->n_flags && in->n_flags != n))
		return cm_errf(err, CM_EPROTO, "log stream %zu: %zu timestamps, %zu lines, %zu flags", idx,
			       in->n_timestamps_ns, n, in->n_flags);
	int rc = convert_log_labels(in, idx, lim, a, out, err);
	if (rc)
		return rc;
	const char **lines = cm_arena_calloc(a, n ? n : 1, sizeof(*lines));
	size_t *lens = cm_arena_calloc(a, n ? n : 1, sizeof(*lens));
	uint32_t *flags = cm_arena_calloc(a, n ? n : 1, sizeof(*flags));
	if (!lines || !lens || !flags)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding log streams");
	for (size_t i = 0; i < n; i++) {
		if (in->lines[i].len > lim->max_log_line)
			return cm_errf(err, CM_E2BIG, "log stream %zu: line of %zu bytes, limit %zu", idx,
				       in->lines[i].len, lim->max_log_line);
		lines[i] = in->lines[i].len ? (const char *)in->lines[i].data : "";
		lens[i] = in->lines[i].len;
		flags[i] = in->n_flags ? in->flags[i] : 0;
	}
	out->timestamps_ns = in->timestamps_ns, out->lines = lines, out->line_lens = lens, out->flags = flags;
	out->nrecords = n;
	return CM_OK;
}

static int convert_log_streams(const Corral__Wire__Batch *m, const cm_wire_limits *lim, cm_arena *a, cm_batch *b,
			       cm_err *err)
{
	if (m->n_log_streams > lim->max_log_streams)
		return cm_errf(err, CM_E2BIG, "batch has %zu log streams, limit %zu", m->n_log_streams,
			       lim->max_log_streams);
	size_t total = 0;
	for (size_t i = 0; i < m->n_log_streams; i++) {
		if (m->log_streams[i]->n_lines > lim->max_log_records - total)
			return cm_errf(err, CM_E2BIG, "batch has more than %zu log records", lim->max_log_records);
		total += m->log_streams[i]->n_lines;
	}
	cm_log_stream *st = cm_arena_calloc(a, m->n_log_streams ? m->n_log_streams : 1, sizeof(*st));
	if (!st)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding log streams");
	for (size_t i = 0; i < m->n_log_streams; i++) {
		int rc = convert_log_stream(m->log_streams[i], i, lim, a, &st[i], err);
		if (rc)
			return rc;
	}
	b->log_streams = st, b->nlog_streams = m->n_log_streams;
	return CM_OK;
}

static int convert_batch(const Corral__Wire__Batch *m, const cm_wire_limits *lim, cm_arena *a,
			 cm_batch *out, cm_err *err)
{
	int rc = check_string(m->node, lim->max_label_bytes, "node", err);
	if (!rc)
		rc = check_string(m->boot_id, lim->max_label_bytes, "boot_id", err);
	if (!rc)
		rc = check_string(m->agent_version, lim->max_label_bytes, "agent_version", err);
	if (rc)
		return rc;
	if (!*m->node)
		return cm_errf(err, CM_EPROTO, "batch has no node name");
	if (m->n_series > lim->max_series)
		return cm_errf(err, CM_E2BIG, "batch has %zu series, limit %zu", m->n_series, lim->max_series);
	cm_batch b = {.node = m->node, .boot_id = m->boot_id, .agent_version = m->agent_version,
		      .seq = m->seq, .created_ms = m->created_ms, .nseries = m->n_series};
	b.series = cm_arena_calloc(a, m->n_series ? m->n_series : 1, sizeof(cm_series));
	if (!b.series)
		return cm_errf(err, CM_ENOMEM, "out of memory decoding batch");
	size_t total = 0;
	for (size_t i = 0; i < m->n_series; i++) {
		rc = convert_series(m->series[i], i, lim, a, &b.series[i], &total, err);
		if (rc)
			return rc;
	}
	if (m->inventory && (rc = convert_inventory(m->inventory, lim, a, &b.inventory, err)))
		return rc;
	if ((rc = convert_events(m, lim, a, &b, err)))
		return rc;
	if ((rc = convert_log_streams(m, lim, a, &b, err)))
		return rc;
	*out = b;
	return CM_OK;
}

/* ---- decode: field 10 by hand -------------------------------------------------------------------- */

/* The log streams (field 10) are read here into the protobuf-c structs convert_log_streams checks, their
 * lines pointing into the decompressed body: protobuf-c would copy each one (~20,000 in a 4 MiB agent
 * batch) and walk them again. protobuf-c unpacks the other fields, copied out in their order. The wire
 * rules are protobuf-c's: unknown fields skipped, repeated scalars packed or not, the last name or value
 * of a Label wins, a known field of another wire type or a cut-short one fails the batch. */

typedef struct pb_field {
	uint32_t no;
	unsigned wt;
	uint64_t v;       /* a varint's value; a length-delimited field's length */
	const uint8_t *p; /* a length-delimited field's bytes */
} pb_field;

static int pb_next(cm_rd *r, pb_field *f)
{
	uint64_t k;
	f->v = 0, f->p = NULL;
	if (cm_rd_uvarint(r, &k) || !(k >> 3) || k >> 32)
		return CM_EPROTO;
	f->no = (uint32_t)(k >> 3), f->wt = (unsigned)(k & 7);
	if (f->wt == 0)
		return cm_rd_uvarint(r, &f->v);
	if (f->wt == 1 || f->wt == 5)
		return cm_rd_bytes(r, f->wt == 1 ? 8 : 4, &f->p);
	if (f->wt == 2)
		return cm_rd_uvarint(r, &f->v) || f->v > cm_rd_left(r) ? CM_EPROTO : cm_rd_bytes(r, f->v, &f->p);
	return CM_EPROTO;
}

int cm_wire_label_next(const uint8_t *p, size_t n, size_t *pos, cm_label_ref *out)
{
	cm_rd r = {p + *pos, p + n};
	pb_field f, g;
	if (*pos >= n)
		return 0;
	if (pb_next(&r, &f) || f.no != 1 || f.wt != 2)
		return CM_EPROTO;
	*out = (cm_label_ref){"", 0, "", 0};
	for (cm_rd lr = {f.p, f.p + f.v}; cm_rd_left(&lr);) {
		if (pb_next(&lr, &g))
			return CM_EPROTO;
		if (g.no == 1 && g.wt == 2)
			out->name = (const char *)g.p, out->nlen = g.v;
		else if (g.no == 2 && g.wt == 2)
			out->value = (const char *)g.p, out->vlen = g.v;
	}
	*pos = (size_t)(r.p - p);
	return 1;
}

/* How many values of a repeated varint field one occurrence holds: one, or a packed run's. */
static int pb_count_varints(const pb_field *f, size_t *n)
{
	if (f->wt == 0) {
		(*n)++;
		return CM_OK;
	}
	if (f->wt != 2 || (f->v && (f->p[f->v - 1] & 0x80)))
		return CM_EPROTO;
	for (size_t i = 0; i < f->v; i++)
		*n += !(f->p[i] & 0x80);
	return CM_OK;
}

/* The values of one occurrence into arr (int64_t or uint32_t elements, cap of them) from index *k on. */
static int pb_put_varints(const pb_field *f, void *arr, int wide, size_t cap, size_t *k)
{
	cm_rd r;
	cm_rd_init(&r, f->p, f->wt == 2 ? f->v : 0);
	uint64_t v = f->v;
	for (int one = f->wt == 0; one || cm_rd_left(&r); one = 0) {
		if ((!one && cm_rd_uvarint(&r, &v)) || *k == cap)
			return CM_EPROTO;
		if (wide)
			((int64_t *)arr)[(*k)++] = (int64_t)v;
		else
			((uint32_t *)arr)[(*k)++] = (uint32_t)v;
	}
	return CM_OK;
}

static int pb_label(const pb_field *f, cm_arena *a, Corral__Wire__Label **out)
{
	Corral__Wire__Label *l = cm_arena_alloc(a, sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	corral__wire__label__init(l);
	cm_rd r;
	pb_field x;
	cm_rd_init(&r, f->p, f->v);
	while (cm_rd_left(&r)) {
		if (pb_next(&r, &x) || ((x.no == 1 || x.no == 2) && x.wt != 2))
			return CM_EPROTO;
		if (x.no != 1 && x.no != 2)
			continue;
		char *s = cm_arena_strndup(a, (const char *)x.p, x.v);
		if (!s)
			return CM_ENOMEM;
		*(x.no == 1 ? &l->name : &l->value) = s;
	}
	*out = l;
	return CM_OK;
}

/* One LogStream message: the counts first, then the arrays. */
static int pb_log_stream(const pb_field *f, cm_arena *a, Corral__Wire__LogStream *out)
{
	corral__wire__log_stream__init(out);
	cm_rd r;
	pb_field x;
	size_t n[5] = {0}; /* per field number 1..4 */
	cm_rd_init(&r, f->p, f->v);
	while (cm_rd_left(&r)) {
		if (pb_next(&r, &x))
			return CM_EPROTO;
		if (x.no == 1 || x.no == 3) {
			if (x.wt != 2)
				return CM_EPROTO;
			n[x.no]++;
		} else if ((x.no == 2 || x.no == 4) && pb_count_varints(&x, &n[x.no])) {
			return CM_EPROTO;
		}
	}
	out->labels = cm_arena_calloc(a, n[1] + 1, sizeof(*out->labels));
	out->timestamps_ns = cm_arena_calloc(a, n[2] + 1, sizeof(*out->timestamps_ns));
	out->lines = cm_arena_calloc(a, n[3] + 1, sizeof(*out->lines));
	out->flags = cm_arena_calloc(a, n[4] + 1, sizeof(*out->flags));
	if (!out->labels || !out->timestamps_ns || !out->lines || !out->flags)
		return CM_ENOMEM;
	cm_rd_init(&r, f->p, f->v);
	int rc = CM_OK;
	while (!rc && cm_rd_left(&r)) {
		pb_next(&r, &x); /* read once already */
		if (x.no == 1)
			rc = pb_label(&x, a, &out->labels[out->n_labels++]);
		else if (x.no == 2)
			rc = pb_put_varints(&x, out->timestamps_ns, 1, n[2], &out->n_timestamps_ns);
		else if (x.no == 3)
			out->lines[out->n_lines++] = (ProtobufCBinaryData){(size_t)x.v, (uint8_t *)x.p};
		else if (x.no == 4)
			rc = pb_put_varints(&x, out->flags, 0, n[4], &out->n_flags);
	}
	return rc;
}

/* The Batch in raw: field 10 by hand, the rest by protobuf-c (first, so its allocation cap counts only
 * its own); NULL with *rc set when it is not one. Bytes whose top level does not parse all go to
 * protobuf-c, which refuses them. */
static Corral__Wire__Batch *unpack_batch(const uint8_t *raw, size_t n, cm_arena *a, ProtobufCAllocator *alloc,
					 int *rc)
{
	cm_rd r;
	pb_field f;
	size_t nlog = 0, len = 0;
	int bad = 0;
	*rc = CM_EPROTO;
	cm_rd_init(&r, raw, n);
	while (!bad && cm_rd_left(&r)) {
		bad = pb_next(&r, &f) || (f.no == 10 && f.wt != 2);
		nlog += f.no == 10;
	}
	if (bad || !nlog)
		return corral__wire__batch__unpack(alloc, n, raw);
	uint8_t *rest = cm_arena_alloc(a, n);
	if (!rest) {
		*rc = CM_ENOMEM;
		return NULL;
	}
	cm_rd_init(&r, raw, n);
	for (const uint8_t *start = raw; cm_rd_left(&r); start = r.p)
		if (!pb_next(&r, &f) && f.no != 10) /* read once already */
			memcpy(rest + len, start, (size_t)(r.p - start)), len += (size_t)(r.p - start);
	Corral__Wire__Batch *m = corral__wire__batch__unpack(alloc, len, rest);
	Corral__Wire__LogStream *st = m ? cm_arena_calloc(a, nlog, sizeof(*st)) : NULL;
	Corral__Wire__LogStream **sp = st ? cm_arena_calloc(a, nlog, sizeof(*sp)) : NULL;
	if (!sp) {
		*rc = m ? CM_ENOMEM : CM_EPROTO;
		return NULL;
	}
	cm_rd_init(&r, raw, n);
	for (size_t k = 0; k < nlog;) {
		if (!pb_next(&r, &f) && f.no == 10 && (*rc = pb_log_stream(&f, a, &st[k])))
			return NULL;
		if (f.no == 10)
			sp[k] = &st[k], k++;
	}
	m->log_streams = sp, m->n_log_streams = nlog;
	return m;
}

static int check_header(const uint8_t *p, size_t n, const cm_wire_limits *lim, uint32_t *rawlen, cm_err *err)
{
	if (n < CM_WIRE_HEADER)
		return cm_errf(err, CM_EPROTO, "frame of %zu bytes is shorter than its %d-byte header", n,
			       CM_WIRE_HEADER);
	if (n > lim->max_frame)
		return cm_errf(err, CM_E2BIG, "frame of %zu bytes exceeds the limit of %zu", n, lim->max_frame);
	if (memcmp(p, WIRE_MAGIC, 4) != 0)
		return cm_errf(err, CM_EPROTO, "not a corral batch (bad magic)");
	if (p[4] != WIRE_VERSION)
		return cm_errf(err, CM_EPROTO, "unsupported batch version %u", p[4]);
	if (p[5] != WIRE_CODEC_ZSTD || p[6] || p[7])
		return cm_errf(err, CM_EPROTO, "unsupported codec %u or non-zero reserved bytes", p[5]);
	uint32_t body = cm_get_u32le(p + 12);
	if ((size_t)body != n - CM_WIRE_HEADER)
		return cm_errf(err, CM_EPROTO, "frame is %zu bytes but its header declares %zu (truncated?)", n,
			       (size_t)body + CM_WIRE_HEADER);
	if (cm_crc32c(cm_crc32c(0, p, 16), p + CM_WIRE_HEADER, body) != cm_get_u32le(p + 16))
		return cm_errf(err, CM_EPROTO, "frame checksum mismatch (corrupted in transit?)");
	*rawlen = cm_get_u32le(p + 8);
	if (*rawlen > lim->max_decompressed)
		return cm_errf(err, CM_E2BIG, "batch declares %u bytes decompressed, limit %zu", *rawlen,
			       lim->max_decompressed);
	return CM_OK;
}

static int decompress_body(const uint8_t *body, size_t blen, uint32_t rawlen, cm_arena *a, uint8_t **out,
			   cm_err *err)
{
	unsigned long long content = ZSTD_getFrameContentSize(body, blen);
	if (content == ZSTD_CONTENTSIZE_ERROR)
		return cm_errf(err, CM_EPROTO, "body is not a zstd frame");
	if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != rawlen)
		return cm_errf(err, CM_EPROTO, "zstd frame holds %llu bytes, header declares %u", content, rawlen);
	uint8_t *raw = cm_arena_alloc(a, rawlen ? rawlen : 1);
	if (!raw)
		return cm_errf(err, CM_ENOMEM, "out of memory for a %u-byte batch", rawlen);
	/* the output buffer is exactly the declared size: a bomb fails here without writing past it */
	size_t got = ZSTD_decompress(raw, rawlen, body, blen);
	if (ZSTD_isError(got))
		return cm_errf(err, CM_EPROTO, "zstd: %s", ZSTD_getErrorName(got));
	if (got != rawlen)
		return cm_errf(err, CM_EPROTO, "body decompressed to %zu bytes, header declares %u", got, rawlen);
	*out = raw;
	return CM_OK;
}

int cm_wire_decode(const void *frame, size_t n, const cm_wire_limits *lim, cm_arena *a, cm_batch *out,
		   cm_err *err)
{
	const uint8_t *p = frame;
	uint32_t rawlen = 0;
	uint8_t *raw = NULL;
	int rc = check_header(p, n, lim, &rawlen, err);
	if (!rc)
		rc = decompress_body(p + CM_WIRE_HEADER, n - CM_WIRE_HEADER, rawlen, a, &raw, err);
	if (rc)
		return rc;
	/* protobuf-c structs cost more than their encoding; 16x the bytes bounds any valid batch */
	pb_alloc_ctx ctx = {a, a->used, 16 * (size_t)rawlen + 4096};
	ProtobufCAllocator alloc = {pb_alloc, pb_free, &ctx};
	Corral__Wire__Batch *m = unpack_batch(raw, rawlen, a, &alloc, &rc);
	if (!m)
		return rc == CM_ENOMEM ? cm_errf(err, rc, "out of memory decoding log streams")
				       : cm_errf(err, CM_EPROTO, "batch is not a valid protobuf corral.wire.Batch");
	return convert_batch(m, lim, a, out, err);
}
