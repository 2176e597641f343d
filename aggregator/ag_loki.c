/* ag_loki.c -- Loki's HTTP API over the log store: push (JSON, protobuf + snappy), query, query_range,
 * labels, label values, series, index/stats.
 *
 * ag_http.c routes /loki/api/v1/... here; handlers run on libmicrohttpd's worker threads and answer in
 * Loki's JSON shapes (docs/logs-api.md). Push bodies are untrusted bytes: the decoders (exposed for the
 * fuzz harness fuzz_ls_push) check every length, decompress with a bound, and build the streams in the
 * request's arena; the store refuses bad labels. Errors are plain text with 400, as Loki answers them.
 *
 * ---- protobuf push body ------------------------------------------------------------------------------
 *
 * Content-Type application/x-protobuf; the body is a snappy block (raw, not framed) of Loki's
 * logproto.PushRequest, decoded here by hand so no generated code leaves common/:
 *
 *   PushRequest   1: repeated StreamAdapter streams (bytes)
 *   StreamAdapter 1: string labels ({a="b", ...})  2: repeated EntryAdapter entries (bytes)  3: uint64 hash
 *   EntryAdapter  1: Timestamp timestamp (bytes)   2: string line   3: repeated LabelPairAdapter metadata
 *   Timestamp     1: int64 seconds                 2: int32 nanos
 *
 * Unknown fields are skipped by wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32); groups
 * (3, 4) and anything cut short are errors. Structured metadata is accepted and dropped.
 *
 * ---- tail ----------------------------------------------------------------------------------------------
 *
 * /loki/api/v1/tail upgrades to a WebSocket (RFC 6455). The tail runs on a thread of its own (ag_http.c),
 * polls the store every second for entries newer than the last one sent (at least delay_for seconds old)
 * and sends each batch as one unmasked text frame {"streams":[{"stream":{...},"values":[["<ns>","line"]]}]}.
 * It answers pings, ends on a close frame, a broken socket, or ag__loki_stop_tails. Entries pushed later
 * with a timestamp older than the last one sent are not shown (Loki's tail has the same limit).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <snappy-c.h>
#include <sys/socket.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define MAX_DECOMPRESSED (64u << 20)
#define MAX_STREAMS 10000
#define NS_PER_S 1000000000LL

typedef struct fwd_item {
	struct fwd_item *next;
	size_t len;
	char data[];
} fwd_item;

/* --loki-push: a queue of Loki JSON push bodies and the thread that posts them, oldest first. */
typedef struct fwd {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	fwd_item *head, *tail;
	size_t bytes, max_bytes;
	int stop;
	char url[1024], auth[1100];
	uint64_t sent, dropped, retries;
} fwd;

struct ag__loki {
	ls_store *store;
	fwd *fwd;  /* NULL when not forwarding */
	ag__auth *auth;  /* push tokens (ag_auth.c) */
	pthread_mutex_t mu;  /* tails */
	pthread_cond_t cv;
	int ntails, stopping;
};

static int fwd_start(ag__loki *l, const char *url, cm_err *err);
static void fwd_stop(fwd *f);
static void fwd_enqueue(fwd *f, const ls_push_stream *st, size_t n);

int ag__loki_create(const char *dir, ag__auth *auth, const char *push_url, ag__loki **out, cm_err *err)
{
	ag__loki *l = calloc(1, sizeof(*l));
	if (!l)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	l->auth = auth;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	ls_store_opts o = {.dir = dir};
	int rc = ls_store_open(&o, &l->store, err);
	if (!rc && push_url && *push_url && (rc = fwd_start(l, push_url, err)))
		ls_store_close(l->store);
	if (rc) {
		pthread_mutex_destroy(&l->mu);
		pthread_cond_destroy(&l->cv);
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void ag__loki_destroy(ag__loki *l)
{
	if (!l)
		return;
	ag__loki_stop_tails(l);
	fwd_stop(l->fwd);
	ls_store_close(l->store);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l);
}

ls_store *ag__loki_store(ag__loki *l) { return l->store; }

static void text_error(ag__resp *resp, int status, const char *msg)
{
	resp->status = status;
	resp->content_type = "text/plain; charset=utf-8";
	resp->body.len = 0;
	if (cm_buf_puts(&resp->body, msg) || cm_buf_puts(&resp->body, "\n"))
		resp->status = 500;
}

/* ---- push decoding ------------------------------------------------------------------------------------ */

typedef struct pbuf {
	const uint8_t *p, *end;
} pbuf;

static int pb_varint(pbuf *b, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return CM_EPROTO;
		uint8_t c = *b->p++;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return CM_EPROTO;
}

/* Next field: number and wire type; for type 2 the payload in *sub. Other types are skipped. */
static int pb_field(pbuf *b, uint32_t *num, int *type, pbuf *sub, uint64_t *val)
{
	uint64_t key, len;
	if (pb_varint(b, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
		return CM_EPROTO;
	*num = (uint32_t)(key >> 3), *type = (int)(key & 7);
	switch (*type) {
	case 0: return pb_varint(b, val);
	case 1:
	case 5: {
		size_t n = *type == 1 ? 8 : 4;
		if ((size_t)(b->end - b->p) < n)
			return CM_EPROTO;
		b->p += n;
		return 0;
	}
	case 2:
		if (pb_varint(b, &len) || len > (uint64_t)(b->end - b->p))
			return CM_EPROTO;
		sub->p = b->p, sub->end = b->p + len;
		b->p += len;
		return 0;
	default: return CM_EPROTO;
	}
}

static int pb_timestamp(pbuf b, int64_t *ns)
{
	int64_t sec = 0, nanos = 0;
	while (b.p < b.end) {
		uint32_t num;
		int type;
		pbuf sub;
		uint64_t v = 0;
		if (pb_field(&b, &num, &type, &sub, &v))
			return CM_EPROTO;
		if (num == 1 && type == 0)
			sec = (int64_t)v;
		else if (num == 2 && type == 0)
			nanos = (int32_t)v;
	}
	if (sec < 0 || sec > INT64_MAX / NS_PER_S - 1 || nanos < 0 || nanos >= NS_PER_S)
		return CM_EPROTO;
	*ns = sec * NS_PER_S + nanos;
	return 0;
}

static int pb_entry(pbuf b, cm_arena *a, ls_entry *e)
{
	*e = (ls_entry){0, "", 0};
	while (b.p < b.end) {
		uint32_t num;
		int type;
		pbuf sub;
		uint64_t v;
		if (pb_field(&b, &num, &type, &sub, &v))
			return CM_EPROTO;
		if (num == 1 && type == 2 && pb_timestamp(sub, &e->ts_ns))
			return CM_EPROTO;
		if (num == 2 && type == 2) {
			size_t n = (size_t)(sub.end - sub.p);
			char *line = cm_arena_alloc(a, n ? n : 1);
			if (!line)
				return CM_ENOMEM;
			memcpy(line, sub.p, n);
			e->line = line, e->len = n;
		}
	}
	return 0;
}

static int pb_count(pbuf b, uint32_t want, size_t *n)
{
	*n = 0;
	while (b.p < b.end) {
		uint32_t num;
		int type;
		pbuf sub;
		uint64_t v;
		if (pb_field(&b, &num, &type, &sub, &v))
			return CM_EPROTO;
		*n += num == want && type == 2;
	}
	return 0;
}

static int pb_stream(pbuf b, cm_arena *a, ls_push_stream *st, cm_err *err)
{
	size_t n;
	if (pb_count(b, 2, &n))
		return cm_errf(err, CM_EPROTO, "bad protobuf");
	ls_entry *e = cm_arena_calloc(a, n ? n : 1, sizeof(*e));
	char *labels = NULL;
	if (!e)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	st->entries = e, st->nentries = 0;
	while (b.p < b.end) {
		uint32_t num;
		int type;
		pbuf sub;
		uint64_t v;
		int rc = pb_field(&b, &num, &type, &sub, &v);
		if (!rc && num == 1 && type == 2 && !(labels = cm_arena_strndup(a, (const char *)sub.p, (size_t)(sub.end - sub.p))))
			rc = CM_ENOMEM;
		if (!rc && num == 2 && type == 2)
			rc = pb_entry(sub, a, &e[st->nentries++]);
		if (rc)
			return cm_errf(err, rc, "bad protobuf");
	}
	if (!labels)
		return cm_errf(err, CM_EPROTO, "a stream without labels");
	cm_label *l;
	int rc = ls_labels_parse(labels, a, &l, &st->nlabels, err);
	st->labels = l;
	return rc;
}

int ag__loki_decode_proto(const uint8_t *body, size_t n, cm_arena *a, ls_push_stream **out, size_t *nout,
			  cm_err *err)
{
	size_t raw_len;
	if (snappy_uncompressed_length((const char *)body, n, &raw_len) != SNAPPY_OK || raw_len > MAX_DECOMPRESSED)
		return cm_errf(err, CM_EPROTO, "body is not a snappy block of at most %u bytes", MAX_DECOMPRESSED);
	char *raw = cm_arena_alloc(a, raw_len ? raw_len : 1);
	if (!raw)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	size_t got = raw_len;
	if (snappy_uncompress((const char *)body, n, raw, &got) != SNAPPY_OK || got != raw_len)
		return cm_errf(err, CM_EPROTO, "bad snappy block");
	pbuf b = {(const uint8_t *)raw, (const uint8_t *)raw + raw_len};
	size_t ns;
	if (pb_count(b, 1, &ns) || ns > MAX_STREAMS)
		return cm_errf(err, CM_EPROTO, "bad protobuf or more than %d streams", MAX_STREAMS);
	ls_push_stream *st = cm_arena_calloc(a, ns ? ns : 1, sizeof(*st));
	if (!st)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	size_t k = 0;
	while (b.p < b.end) {
		uint32_t num;
		int type;
		pbuf sub;
		uint64_t v;
		int rc = pb_field(&b, &num, &type, &sub, &v);
		if (rc)
			return cm_errf(err, rc, "bad protobuf");
		if (num == 1 && type == 2 && (rc = pb_stream(sub, a, &st[k++], err)))
			return rc;
	}
	*out = st, *nout = k;
	return 0;
}

/* Loki's time strings: integer nanoseconds (or seconds when at most 10 digits), float seconds, or
 * RFC 3339. */
static int parse_ns(const char *s, int64_t *out)
{
	char *end;
	size_t n = strlen(s);
	if (n && strspn(s, "0123456789") == n && n <= 19) {
		long long v = strtoll(s, &end, 10);
		*out = n <= 10 ? (int64_t)v * NS_PER_S : (int64_t)v;
		return 0;
	}
	double d = strtod(s, &end);
	if (n && !*end && d >= 0 && d < 9.2e9) {
		*out = (int64_t)(d * 1e9);
		return 0;
	}
	return ls_parse_time(s, n, out);
}

static int json_stream(json_t *js, cm_arena *a, ls_push_stream *st, cm_err *err)
{
	json_t *labels = json_object_get(js, "stream"), *values = json_object_get(js, "values");
	if (!json_is_object(labels) || !json_is_array(values))
		return cm_errf(err, CM_EPROTO, "a stream needs a \"stream\" object and a \"values\" array");
	size_t nl = json_object_size(labels), i = 0;
	cm_label *l = cm_arena_calloc(a, nl ? nl : 1, sizeof(*l));
	ls_entry *e = cm_arena_calloc(a, json_array_size(values) ? json_array_size(values) : 1, sizeof(*e));
	if (!l || !e)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	const char *k;
	json_t *v;
	json_object_foreach(labels, k, v) {
		if (!json_is_string(v) || !(l[i].name = cm_arena_strdup(a, k)) ||
		    !(l[i].value = cm_arena_strdup(a, json_string_value(v))))
			return cm_errf(err, CM_EPROTO, "label values must be strings");
		i++;
	}
	size_t idx;
	json_array_foreach(values, idx, v) {
		json_t *ts = json_array_get(v, 0), *line = json_array_get(v, 1);
		if (!json_is_array(v) || !json_is_string(ts) || !json_is_string(line) ||
		    parse_ns(json_string_value(ts), &e[idx].ts_ns))
			return cm_errf(err, CM_EPROTO, "values are [\"<unix ns>\", \"<line>\"(, {metadata})]");
		size_t n = json_string_length(line);
		char *copy = cm_arena_alloc(a, n ? n : 1);
		if (!copy)
			return cm_errf(err, CM_ENOMEM, "out of memory");
		memcpy(copy, json_string_value(line), n);
		e[idx].line = copy, e[idx].len = n;
	}
	*st = (ls_push_stream){l, nl, e, json_array_size(values)};
	return 0;
}

int ag__loki_decode_json(const uint8_t *body, size_t n, cm_arena *a, ls_push_stream **out, size_t *nout,
			 cm_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb((const char *)body, n, JSON_ALLOW_NUL, &jerr);
	json_t *streams = json_object_get(root, "streams");
	int rc = 0;
	if (!json_is_array(streams) || json_array_size(streams) > MAX_STREAMS)
		rc = cm_errf(err, CM_EPROTO, "body must be {\"streams\": [...]} with at most %d streams", MAX_STREAMS);
	size_t ns = rc ? 0 : json_array_size(streams), i;
	ls_push_stream *st = rc ? NULL : cm_arena_calloc(a, ns ? ns : 1, sizeof(*st));
	if (!rc && !st)
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	json_t *js;
	json_array_foreach(streams, i, js) {
		if (!rc)
			rc = json_stream(js, a, &st[i], err);
	}
	json_decref(root);
	if (!rc)
		*out = st, *nout = ns;
	return rc;
}

int ag__loki_append(ag__loki *l, const char *origin, uint64_t seq, const ls_push_stream *st, size_t n, cm_err *err)
{
	int rc = ls_store_append(l->store, origin, seq, st, n, err);
	if (!rc && l->fwd)
		fwd_enqueue(l->fwd, st, n);
	return rc;
}

/* 0, or the status refusing the request: 401 without a push token, 403 for a token bound to one node
 * (Loki streams carry no node to check it against). */
static int authorized(const ag__loki *l, const ag__req *req)
{
	char bound[256];
	if (!ag__auth_push(l->auth, req->authorization, bound, sizeof(bound)))
		return 401;
	return bound[0] ? 403 : 0;
}

void ag__loki_push(ag__loki *l, const ag__req *req, ag__resp *resp)
{
	int refused = authorized(l, req);
	if (refused)
		return text_error(resp, refused,
				  refused == 401 ? "unauthorized" : "a token bound to one node may not push here");
	if (req->body_too_large)
		return text_error(resp, 413, "request body too large");
	const char *ct = req->content_type ? req->content_type : "";
	int proto = !strncmp(ct, "application/x-protobuf", 22);
	ls_push_stream *st;
	size_t n;
	cm_err err = {{0}};
	int rc = proto ? ag__loki_decode_proto(req->body, req->body_len, req->arena, &st, &n, &err)
		       : ag__loki_decode_json(req->body, req->body_len, req->arena, &st, &n, &err);
	/* corral's extension: ?origin=<name>&seq=<n> makes a retried push a no-op (see ls_store_append) */
	const char *origin = ag__param_get(req, "origin"), *seqs = ag__param_get(req, "seq");
	uint64_t seq = seqs ? strtoull(seqs, NULL, 10) : 0;
	if (!rc && origin && (!*origin || !seq || strlen(origin) > 256))
		rc = cm_errf(&err, CM_EINVAL, "origin takes a seq above 0 and at most 256 bytes");
	if (!rc)
		rc = ag__loki_append(l, origin, seq, st, n, &err);
	if (rc)
		return text_error(resp, rc == CM_EPROTO || rc == CM_EINVAL ? 400 : 500, err.msg);
	resp->status = 204;
	resp->body.len = 0;
}

/* ---- JSON output ---------------------------------------------------------------------------------------- */

/* A JSON string of arbitrary bytes: escapes as JSON requires, invalid UTF-8 bytes as U+FFFD. */
static int put_json_bytes(cm_buf *b, const char *s, size_t n)
{
	int rc = cm_buf_append(b, "\"", 1);
	for (size_t i = 0; i < n && !rc;) {
		unsigned char c = (unsigned char)s[i];
		size_t run = i;
		while (run < n && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 && s[run] != '"' &&
		       s[run] != '\\')
			run++;
		if (run > i) /* plain ASCII up to run, in one copy */
			rc = cm_buf_append(b, s + i, run - i), i = run;
		else if (c == '"' || c == '\\')
			rc = cm_buf_printf(b, "\\%c", c), i++;
		else if (c < 0x20)
			rc = cm_buf_printf(b, "\\u%04x", c), i++;
		else {
			size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
			if (k > 1 && i + k <= n && cm_utf8_valid(s + i, k))
				rc = cm_buf_append(b, s + i, k), i += k;
			else
				rc = cm_buf_puts(b, "\xef\xbf\xbd"), i++;
		}
	}
	return rc || cm_buf_append(b, "\"", 1) ? CM_ENOMEM : 0;
}

static int put_labels_obj(cm_buf *b, const cm_label *l, size_t n)
{
	int rc = cm_buf_puts(b, "{");
	for (size_t i = 0; i < n && !rc; i++)
		rc = (i && cm_buf_puts(b, ",")) || cm_buf_put_json_str(b, l[i].name) || cm_buf_puts(b, ":") ||
		     cm_buf_put_json_str(b, l[i].value);
	return rc || cm_buf_puts(b, "}") ? CM_ENOMEM : 0;
}

static int put_streams(cm_buf *b, const ls_qresult *r)
{
	int rc = cm_buf_puts(b, "\"resultType\":\"streams\",\"result\":[");
	for (size_t i = 0; i < r->nstreams && !rc; i++) {
		const ls_qstream *s = &r->streams[i];
		rc = (i && cm_buf_puts(b, ",")) || cm_buf_puts(b, "{\"stream\":") || put_labels_obj(b, s->labels, s->nlabels) ||
		     cm_buf_puts(b, ",\"values\":[");
		for (size_t k = 0; k < s->nentries && !rc; k++)
			rc = cm_buf_printf(b, "%s[\"%lld\",", k ? "," : "", (long long)s->entries[k].ts_ns) ||
			     put_json_bytes(b, s->entries[k].line, s->entries[k].len) || cm_buf_puts(b, "]");
		rc = rc || cm_buf_puts(b, "]}");
	}
	return rc || cm_buf_puts(b, "]") ? CM_ENOMEM : 0;
}

static int put_point(cm_buf *b, const ls_qpoint *p)
{
	char v[64];
	cm_fmt_double(v, sizeof(v), p->v);
	return cm_buf_puts(b, "[") || ag__put_json_time(b, p->t_ns / 1000000) || cm_buf_puts(b, ",") ||
	       cm_buf_put_json_str(b, v) || cm_buf_puts(b, "]");
}

static int put_series(cm_buf *b, const ls_qresult *r, int instant)
{
	int rc = cm_buf_printf(b, "\"resultType\":\"%s\",\"result\":[", instant ? "vector" : "matrix");
	for (size_t i = 0; i < r->nseries && !rc; i++) {
		const ls_qseries *s = &r->series[i];
		rc = (i && cm_buf_puts(b, ",")) || cm_buf_puts(b, "{\"metric\":") || put_labels_obj(b, s->labels, s->nlabels) ||
		     cm_buf_puts(b, instant ? ",\"value\":" : ",\"values\":[");
		for (size_t k = 0; k < s->npoints && !rc; k++)
			rc = (k && cm_buf_puts(b, ",")) || put_point(b, &s->points[k]);
		rc = rc || cm_buf_puts(b, instant ? "}" : "]}");
	}
	return rc || cm_buf_puts(b, "]") ? CM_ENOMEM : 0;
}

static int put_stats(cm_buf *b, const ls_qresult *r)
{
	return cm_buf_printf(b,
			     ",\"stats\":{\"summary\":{\"totalEntriesReturned\":%zu,\"totalLinesProcessed\":%llu,"
			     "\"totalBytesProcessed\":%llu}}",
			     r->metric ? r->nseries : r->nstreams, (unsigned long long)r->scanned_entries,
			     (unsigned long long)r->scanned_bytes);
}

/* ---- queries -------------------------------------------------------------------------------------------- */

typedef struct qargs {
	int64_t start, end, step;
	ls_qlimits lim;
} qargs;

static int arg_ns(const ag__req *req, const char *key, int64_t def, int64_t *out)
{
	const char *v = ag__param_get(req, key);
	if (!v || !*v) {
		*out = def;
		return 0;
	}
	return parse_ns(v, out);
}

static int arg_step(const ag__req *req, int64_t def, int64_t *out)
{
	const char *v = ag__param_get(req, "step");
	int64_t ms;
	char *end;
	if (!v || !*v) {
		*out = def;
		return 0;
	}
	double d = strtod(v, &end);
	if (!*end && d > 0 && d < 1e9) {
		*out = (int64_t)(d * 1e9);
		return 0;
	}
	if (cm_parse_duration_ms(v, &ms) || ms <= 0)
		return CM_EINVAL;
	*out = ms * 1000000;
	return 0;
}

static int parse_args(const ag__req *req, int range, qargs *a, const char **why)
{
	int64_t now = cm_now_ms() * 1000000;
	const char *lim = ag__param_get(req, "limit"), *dir = ag__param_get(req, "direction");
	*a = (qargs){0};
	if (range) {
		if (arg_ns(req, "end", now, &a->end) || arg_ns(req, "start", a->end - 3600 * NS_PER_S, &a->start))
			return *why = "bad start or end", CM_EINVAL;
		int64_t def = (a->end - a->start) / 250;
		def = def < NS_PER_S ? NS_PER_S : def / NS_PER_S * NS_PER_S;
		if (arg_step(req, def, &a->step))
			return *why = "bad step", CM_EINVAL;
	} else {
		if (arg_ns(req, "time", now, &a->end))
			return *why = "bad time", CM_EINVAL;
		a->start = a->end - 3600 * NS_PER_S; /* log queries at an instant look back an hour, as Loki */
	}
	if (a->end < a->start)
		return *why = "end is before start", CM_EINVAL;
	if (lim && (a->lim.limit = strtoul(lim, NULL, 10)) == 0)
		return *why = "bad limit", CM_EINVAL;
	if (a->lim.limit > 5000)
		return *why = "limit above the maximum of 5000", CM_EINVAL;
	a->lim.forward = dir && !strcmp(dir, "forward");
	if (dir && !a->lim.forward && strcmp(dir, "backward"))
		return *why = "direction is forward or backward", CM_EINVAL;
	return 0;
}

static void run_query(ag__loki *l, const ag__req *req, ag__resp *resp, int range)
{
	const char *text = ag__param_get(req, "query"), *why = NULL;
	qargs a;
	if (!text || !*text)
		return text_error(resp, 400, "query is required");
	if (parse_args(req, range, &a, &why))
		return text_error(resp, 400, why);
	ls_query *q;
	cm_err err = {{0}};
	if (ls_logql_parse(text, &q, &err))
		return text_error(resp, 400, err.msg);
	int metric = ls_logql_is_metric(q);
	int64_t start = metric && !range ? a.end : a.start, step = metric && !range ? 0 : a.step;
	ls_qresult r;
	int rc = ls_logql_exec(l->store, q, start, a.end, step, &a.lim, &r, &err);
	ls_logql_free(q);
	if (rc)
		return text_error(resp, rc == CM_ENOMEM || rc == CM_EIO ? 500 : 400, err.msg);
	cm_buf *b = &resp->body;
	b->len = 0;
	rc = cm_buf_puts(b, "{\"status\":\"success\",\"data\":{") ||
	     (metric ? put_series(b, &r, !range) : put_streams(b, &r)) || put_stats(b, &r) || cm_buf_puts(b, "}}");
	ls_qresult_close(&r);
	if (rc)
		return text_error(resp, 500, "out of memory");
	resp->status = 200;
	resp->content_type = "application/json";
}

void ag__loki_query(ag__loki *l, const ag__req *req, ag__resp *resp) { run_query(l, req, resp, 0); }
void ag__loki_query_range(ag__loki *l, const ag__req *req, ag__resp *resp) { run_query(l, req, resp, 1); }

/* ---- labels, values, series, stats ---------------------------------------------------------------------- */

typedef struct names {
	const char *want;      /* label whose values are collected; NULL: label names */
	ls_query *match;       /* optional selector */
	char **v;
	size_t n, cap;
	int rc;
} names;

static int add_name(names *c, const char *s)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcmp(c->v[i], s))
			return 0;
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 64;
		char **nv = realloc(c->v, nc * sizeof(*nv));
		if (!nv)
			return CM_ENOMEM;
		c->v = nv, c->cap = nc;
	}
	return (c->v[c->n] = strdup(s)) ? (c->n++, 0) : CM_ENOMEM;
}

static int collect_names(void *arg, const ls_stream_info *st)
{
	names *c = arg;
	if (c->match && !ls_logql_matches(c->match, st->labels, st->nlabels))
		return 0;
	for (size_t i = 0; i < st->nlabels; i++)
		if (!c->want ? add_name(c, st->labels[i].name) : !strcmp(st->labels[i].name, c->want) ? add_name(c, st->labels[i].value) : 0)
			return CM_ENOMEM;
	return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list_answer(ag__loki *l, const ag__req *req, ag__resp *resp, const char *want)
{
	qargs a;
	const char *why, *m = ag__param_get(req, "query");
	if (parse_args(req, 1, &a, &why))
		return text_error(resp, 400, why);
	names c = {.want = want};
	cm_err err = {{0}};
	if (m && *m && ls_logql_parse(m, &c.match, &err))
		return text_error(resp, 400, err.msg);
	int rc = ls_store_streams(l->store, a.start, a.end, collect_names, &c);
	if (c.n)
		qsort(c.v, c.n, sizeof(char *), cmp_str);
	cm_buf *b = &resp->body;
	rc = rc || cm_buf_puts(b, "{\"status\":\"success\",\"data\":[");
	for (size_t i = 0; i < c.n; i++) {
		rc = rc || (i && cm_buf_puts(b, ",")) || cm_buf_put_json_str(b, c.v[i]);
		free(c.v[i]);
	}
	free(c.v);
	ls_logql_free(c.match);
	if (rc || cm_buf_puts(b, "]}"))
		return text_error(resp, 500, "out of memory");
	resp->status = 200;
	resp->content_type = "application/json";
}

void ag__loki_labels(ag__loki *l, const ag__req *req, ag__resp *resp) { list_answer(l, req, resp, NULL); }

void ag__loki_label_values(ag__loki *l, const ag__req *req, ag__resp *resp)
{
	static const char prefix[] = "/loki/api/v1/label/";
	const char *name = req->url + sizeof(prefix) - 1;
	size_t n = strlen(name);
	if (n < 8 || strcmp(name + n - 7, "/values"))
		return text_error(resp, 404, "no such endpoint");
	char *label = cm_arena_strndup(req->arena, name, n - 7);
	if (!label || !cm_label_name_valid(label))
		return text_error(resp, 400, "bad label name");
	list_answer(l, req, resp, label);
}

typedef struct series_ctx {
	ls_query **match;
	size_t nmatch;
	cm_buf *b;
	size_t n;
	int64_t start, end;
	uint64_t entries, bytes, streams;
} series_ctx;

static int series_one(void *arg, const ls_stream_info *st)
{
	series_ctx *c = arg;
	size_t i = 0;
	while (i < c->nmatch && !ls_logql_matches(c->match[i], st->labels, st->nlabels))
		i++;
	if (i == c->nmatch)
		return 0;
	return (c->n++ && cm_buf_puts(c->b, ",")) || put_labels_obj(c->b, st->labels, st->nlabels) ? CM_ENOMEM : 0;
}

void ag__loki_series(ag__loki *l, const ag__req *req, ag__resp *resp)
{
	qargs a;
	const char *why;
	if (parse_args(req, 1, &a, &why))
		return text_error(resp, 400, why);
	ls_query *match[16];
	series_ctx c = {.match = match, .b = &resp->body, .start = a.start, .end = a.end};
	cm_err err = {{0}};
	int rc = 0;
	for (size_t i = 0; i < req->nparams && !rc; i++)
		if (!strcmp(req->params[i].key, "match[]") || !strcmp(req->params[i].key, "match")) {
			if (c.nmatch == CM_ARRAY_LEN(match))
				rc = cm_errf(&err, CM_EINVAL, "at most 16 match[] selectors");
			else if (!(rc = ls_logql_parse(req->params[i].value, &match[c.nmatch], &err)))
				c.nmatch++;
		}
	if (!rc && !c.nmatch)
		rc = cm_errf(&err, CM_EINVAL, "match[] is required");
	if (!rc && (cm_buf_puts(c.b, "{\"status\":\"success\",\"data\":[") ||
		    ls_store_streams(l->store, a.start, a.end, series_one, &c) || cm_buf_puts(c.b, "]}")))
		rc = cm_errf(&err, CM_ENOMEM, "out of memory");
	for (size_t i = 0; i < c.nmatch; i++)
		ls_logql_free(match[i]);
	if (rc)
		return text_error(resp, rc == CM_ENOMEM ? 500 : 400, err.msg);
	resp->status = 200;
	resp->content_type = "application/json";
}

static int stats_want(void *arg, const ls_stream_info *st)
{
	series_ctx *c = arg;
	int m = ls_logql_matches(c->match[0], st->labels, st->nlabels);
	c->streams += m != 0;
	return m;
}

static int stats_entry(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	(void)st, (void)ts, (void)line;
	series_ctx *c = arg;
	c->entries++, c->bytes += len;
	return c->entries > 50000000 ? CM_E2BIG : 0;
}

void ag__loki_index_stats(ag__loki *l, const ag__req *req, ag__resp *resp)
{
	qargs a;
	const char *why, *q = ag__param_get(req, "query");
	if (parse_args(req, 1, &a, &why))
		return text_error(resp, 400, why);
	ls_query *match;
	cm_err err = {{0}};
	if (!q || ls_logql_parse(q, &match, &err))
		return text_error(resp, 400, q ? err.msg : "query is required");
	series_ctx c = {.match = &match, .nmatch = 1};
	int rc = ls_store_select(l->store, a.start, a.end, stats_want, &c, stats_entry, &c);
	ls_logql_free(match);
	if (rc)
		return text_error(resp, rc == CM_E2BIG ? 400 : 500, rc == CM_E2BIG ? "too many entries" : "store error");
	resp->body.len = 0;
	if (cm_buf_printf(&resp->body, "{\"streams\":%llu,\"chunks\":%llu,\"bytes\":%llu,\"entries\":%llu}",
			  (unsigned long long)c.streams, (unsigned long long)c.streams, (unsigned long long)c.bytes,
			  (unsigned long long)c.entries))
		return text_error(resp, 500, "out of memory");
	resp->status = 200;
	resp->content_type = "application/json";
}

/* ---- tail (WebSocket) ------------------------------------------------------------------------------------ */

/* SHA-1 (FIPS 180-4), only for the WebSocket handshake. */
static uint32_t rol(uint32_t x, int n) { return x << n | x >> (32 - n); }

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 80; i++)
		w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (int i = 0; i < 80; i++) {
		uint32_t f = i < 20 ? (b & c) | (~b & d) : i < 40 ? b ^ c ^ d : i < 60 ? (b & c) | (b & d) | (c & d) : b ^ c ^ d;
		uint32_t k = i < 20 ? 0x5a827999 : i < 40 ? 0x6ed9eba1 : i < 60 ? 0x8f1bbcdc : 0xca62c1d6;
		uint32_t t = rol(a, 5) + f + e + k + w[i];
		e = d, d = c, c = rol(b, 30), b = a, a = t;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const void *data, size_t n, uint8_t out[20])
{
	uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
	const uint8_t *p = data;
	size_t i = 0;
	for (; i + 64 <= n; i += 64)
		sha1_block(h, p + i);
	uint8_t last[128] = {0};
	size_t r = n - i, blocks = r + 9 > 64 ? 2 : 1;
	memcpy(last, p + i, r);
	last[r] = 0x80;
	uint64_t bits = (uint64_t)n * 8;
	for (int k = 0; k < 8; k++)
		last[blocks * 64 - 1 - k] = (uint8_t)(bits >> (8 * k));
	for (size_t k = 0; k < blocks; k++)
		sha1_block(h, last + 64 * k);
	for (int k = 0; k < 20; k++)
		out[k] = (uint8_t)(h[k / 4] >> (24 - 8 * (k % 4)));
}

static void base64(const uint8_t *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
		out[o++] = tab[v >> 18 & 63], out[o++] = tab[v >> 12 & 63];
		out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? tab[v & 63] : '=';
	}
	out[o] = 0;
}

/* Sec-WebSocket-Accept of a client key (RFC 6455 section 4.2.2). */
int ag__ws_accept(const char *key, char out[32])
{
	char buf[128];
	if (strlen(key) > 64)
		return CM_EINVAL;
	snprintf(buf, sizeof(buf), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	uint8_t d[20];
	sha1(buf, strlen(buf), d);
	base64(d, 20, out);
	return 0;
}

typedef struct tail {
	ag__loki *l;
	ls_query *q;
	int64_t last_ns;   /* newest entry sent */
	int64_t delay_ns;
	size_t limit;
} tail;

static int ws_send(int fd, int opcode, const void *p, size_t n)
{
	uint8_t h[10];
	size_t hl = 2;
	h[0] = (uint8_t)(0x80 | opcode);
	if (n < 126)
		h[1] = (uint8_t)n;
	else if (n < 65536)
		h[1] = 126, h[2] = (uint8_t)(n >> 8), h[3] = (uint8_t)n, hl = 4;
	else {
		h[1] = 127, hl = 10;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
	}
	return send(fd, h, hl, MSG_NOSIGNAL) == (ssize_t)hl && (n == 0 || send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n) ? 0 : CM_EIO;
}

/* Reads what the client sent (control frames; data frames are ignored). 1 = the connection is gone,
 * 2 = the client closed it (its close frame was echoed, as RFC 6455 section 5.5.1 asks). */
static int ws_read(int fd, cm_buf *in)
{
	uint8_t buf[4096];
	ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		return 1;
	if (r > 0 && (cm_buf_append(in, buf, (size_t)r) || in->len > (1u << 20)))
		return 1;
	while (in->len >= 2) {
		uint8_t *p = in->data;
		size_t len = p[1] & 0x7f, hl = 2;
		if (len == 126)
			hl = 4, len = in->len >= 4 ? (size_t)p[2] << 8 | p[3] : 0;
		else if (len == 127)
			return 1; /* no client sends us 64-bit frames */
		hl += (p[1] & 0x80) ? 4 : 0;
		if (in->len < hl + len)
			break;
		int op = p[0] & 0x0f;
		uint8_t *payload = p + hl;
		for (size_t i = 0; (p[1] & 0x80) && i < len; i++)
			payload[i] ^= p[hl - 4 + i % 4];
		if (op == 8)
			return ws_send(fd, 8, payload, len < 2 ? len : 2), 2;
		if (op == 9 && ws_send(fd, 10, payload, len))
			return 1;
		memmove(in->data, in->data + hl + len, in->len - hl - len);
		in->len -= hl + len;
	}
	return 0;
}

/* One poll of the store: entries newer than the last sent, as one frame. */
static int tail_once(tail *t, int fd, cm_buf *out)
{
	int64_t now = cm_now_ms() * 1000000 - t->delay_ns;
	if (now <= t->last_ns)
		return 0;
	ls_qlimits lim = {.limit = t->limit, .forward = 1};
	ls_qresult r;
	cm_err err;
	if (ls_logql_exec(t->l->store, t->q, t->last_ns + 1, now, 0, &lim, &r, &err))
		return ws_send(fd, 1, err.msg, strlen(err.msg)) ? CM_EIO : 0;
	int rc = 0;
	if (r.nstreams) {
		out->len = 0;
		rc = cm_buf_puts(out, "{\"streams\":[");
		for (size_t i = 0; i < r.nstreams && !rc; i++) {
			const ls_qstream *s = &r.streams[i];
			rc = (i && cm_buf_puts(out, ",")) || cm_buf_puts(out, "{\"stream\":") ||
			     put_labels_obj(out, s->labels, s->nlabels) || cm_buf_puts(out, ",\"values\":[");
			for (size_t k = 0; k < s->nentries && !rc; k++) {
				rc = cm_buf_printf(out, "%s[\"%lld\",", k ? "," : "", (long long)s->entries[k].ts_ns) ||
				     put_json_bytes(out, s->entries[k].line, s->entries[k].len) || cm_buf_puts(out, "]");
				if (s->entries[k].ts_ns > t->last_ns)
					t->last_ns = s->entries[k].ts_ns;
			}
			rc = rc || cm_buf_puts(out, "]}");
		}
		rc = rc || cm_buf_puts(out, "]}") || ws_send(fd, 1, out->data, out->len);
	}
	ls_qresult_close(&r);
	return rc;
}

static void tail_run(void *arg, int fd)
{
	tail *t = arg;
	cm_buf in, out;
	cm_buf_init(&in), cm_buf_init(&out);
	int rd = 0;
	for (;;) {
		pthread_mutex_lock(&t->l->mu);
		int stop = t->l->stopping;
		pthread_mutex_unlock(&t->l->mu);
		if (fd < 0 || stop || (rd = ws_read(fd, &in)) || tail_once(t, fd, &out))
			break;
		struct pollfd pfd = {fd, POLLIN, 0};
		poll(&pfd, 1, 1000);
	}
	if (fd >= 0 && rd != 2) /* one close frame only: not after echoing the client's */
		ws_send(fd, 8, "\x03\xe9", 2); /* 1001 going away */
	cm_buf_close(&in), cm_buf_close(&out);
	ls_logql_free(t->q);
	pthread_mutex_lock(&t->l->mu);
	t->l->ntails--;
	pthread_cond_broadcast(&t->l->cv);
	pthread_mutex_unlock(&t->l->mu);
	free(t);
}

void ag__loki_tail(ag__loki *l, const ag__req *req, ag__resp *resp)
{
	const char *text = ag__param_get(req, "query"), *d = ag__param_get(req, "delay_for"), *lim = ag__param_get(req, "limit");
	if (!req->ws_key || ag__ws_accept(req->ws_key, resp->ws_accept))
		return text_error(resp, 400, "a WebSocket upgrade is required");
	tail *t = calloc(1, sizeof(*t));
	cm_err err = {{0}};
	if (!t)
		return text_error(resp, 500, "out of memory");
	t->l = l, t->limit = lim ? strtoul(lim, NULL, 10) : 100;
	t->delay_ns = d ? (int64_t)strtol(d, NULL, 10) * NS_PER_S : 0;
	int64_t start;
	if (!text || ls_logql_parse(text, &t->q, &err) || ls_logql_is_metric(t->q) || t->limit == 0 || t->limit > 5000 ||
	    t->delay_ns < 0 || t->delay_ns > 5 * NS_PER_S || arg_ns(req, "start", cm_now_ms() * 1000000 - 3600 * NS_PER_S, &start)) {
		ls_logql_free(t->q);
		free(t);
		return text_error(resp, 400, err.msg[0] ? err.msg : "tail takes a log query, limit 1-5000, delay_for 0-5");
	}
	t->last_ns = start - 1;
	pthread_mutex_lock(&l->mu);
	int stopping = l->stopping;
	l->ntails += !stopping;
	pthread_mutex_unlock(&l->mu);
	if (stopping) {
		ls_logql_free(t->q);
		free(t);
		return text_error(resp, 503, "shutting down");
	}
	resp->upgrade = tail_run, resp->upgrade_arg = t;
}

/* A running tail sees stopping within a second; one whose client vanished before the upgrade finished
 * never started (libmicrohttpd drops it without a call), hence the bound on the wait. */
void ag__loki_stop_tails(ag__loki *l)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&l->mu);
	l->stopping = 1;
	while (l->ntails && pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0)
		;
	pthread_mutex_unlock(&l->mu);
}

/* ---- forwarding (--loki-push) ------------------------------------------------------------------------------ */

#define FWD_MAX_BYTES (256u << 20)

static int put_push_json(cm_buf *b, const ls_push_stream *st, size_t n)
{
	int rc = cm_buf_puts(b, "{\"streams\":[");
	for (size_t i = 0; i < n && !rc; i++) {
		rc = (i && cm_buf_puts(b, ",")) || cm_buf_puts(b, "{\"stream\":") ||
		     put_labels_obj(b, st[i].labels, st[i].nlabels) || cm_buf_puts(b, ",\"values\":[");
		for (size_t k = 0; k < st[i].nentries && !rc; k++)
			rc = cm_buf_printf(b, "%s[\"%lld\",", k ? "," : "", (long long)st[i].entries[k].ts_ns) ||
			     put_json_bytes(b, st[i].entries[k].line, st[i].entries[k].len) || cm_buf_puts(b, "]");
		rc = rc || cm_buf_puts(b, "]}");
	}
	return rc || cm_buf_puts(b, "]}") ? CM_ENOMEM : 0;
}

/* Queues one stored append; past max_bytes the oldest bodies are dropped and counted. */
static void fwd_enqueue(fwd *f, const ls_push_stream *st, size_t n)
{
	cm_buf b;
	cm_buf_init(&b);
	fwd_item *it = NULL;
	if (!put_push_json(&b, st, n) && (it = malloc(sizeof(*it) + b.len))) {
		it->next = NULL, it->len = b.len;
		memcpy(it->data, b.data, b.len);
	}
	cm_buf_close(&b);
	pthread_mutex_lock(&f->mu);
	if (!it)
		f->dropped++;
	while (it && f->head && f->bytes + it->len > f->max_bytes) {
		fwd_item *old = f->head;
		f->head = old->next;
		f->bytes -= old->len;
		f->dropped++;
		free(old);
	}
	if (it) {
		if (!f->head)
			f->tail = NULL;
		if (f->tail)
			f->tail->next = it;
		else
			f->head = it;
		f->tail = it;
		f->bytes += it->len;
		pthread_cond_signal(&f->cv);
	}
	pthread_mutex_unlock(&f->mu);
}

static size_t discard_body(char *p, size_t size, size_t n, void *arg)
{
	(void)p, (void)arg;
	return size * n;
}

static int fwd_post(fwd *f, CURL *c, const fwd_item *it)
{
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	if (f->auth[0])
		h = curl_slist_append(h, f->auth);
	curl_easy_setopt(c, CURLOPT_URL, f->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	const char *body = it->data;
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)it->len);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	long code = 0;
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(h);
	if (rc == CURLE_OK && code >= 400 && code < 500 && code != 429) {
		CM_LOG(CM_LOG_WARN, "loki-push", "%s refused a push with %ld: dropped", f->url, code);
		return 1; /* retrying cannot help */
	}
	return rc == CURLE_OK && code >= 200 && code < 300 ? 0 : -1;
}

static void *fwd_run(void *arg)
{
	fwd *f = arg;
	CURL *c = curl_easy_init();
	int fails = 0; /* in a row: the wait before the next try doubles from 250 ms up to 32 s */
	pthread_mutex_lock(&f->mu);
	while (!f->stop && c) {
		if (!f->head || fails) {
			int64_t wait = fails ? 250LL << (fails < 7 ? fails : 7) : 1000;
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += wait / 1000, until.tv_nsec += (wait % 1000) * 1000000;
			if (until.tv_nsec >= 1000000000)
				until.tv_sec++, until.tv_nsec -= 1000000000;
			int timed_out = pthread_cond_timedwait(&f->cv, &f->mu, &until) != 0;
			if (!fails || !timed_out)
				continue;
		}
		fwd_item *it = f->head;
		if (!it) {
			fails = 0;
			continue;
		}
		pthread_mutex_unlock(&f->mu);
		int rc = fwd_post(f, c, it); /* the item stays queued until it is delivered or refused */
		pthread_mutex_lock(&f->mu);
		if (rc < 0) {
			f->retries++, fails++;
			continue;
		}
		fails = 0;
		f->head = it->next;
		f->bytes -= it->len;
		f->sent += rc == 0;
		f->dropped += rc != 0;
		free(it);
	}
	pthread_mutex_unlock(&f->mu);
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

static int fwd_start(ag__loki *l, const char *url, cm_err *err)
{
	fwd *f = calloc(1, sizeof(*f));
	if (!f)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(f->url, sizeof(f->url), "%s", url);
	const char *tok = getenv("CORRAL_LOKI_PUSH_TOKEN");
	if (tok && *tok)
		snprintf(f->auth, sizeof(f->auth), "Authorization: Bearer %s", tok);
	f->max_bytes = FWD_MAX_BYTES;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) || pthread_create(&f->th, NULL, fwd_run, f)) {
		pthread_mutex_destroy(&f->mu);
		pthread_cond_destroy(&f->cv);
		free(f);
		return cm_errf(err, CM_ENOMEM, "cannot start the Loki forwarder");
	}
	l->fwd = f;
	return 0;
}

/* Stops the forwarder; what is still queued is dropped (the lines are in the store). */
static void fwd_stop(fwd *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = 1;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->th, NULL);
	for (fwd_item *it = f->head, *n; it; it = n) {
		n = it->next;
		free(it);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	free(f);
	curl_global_cleanup();
}

int ag__loki_metrics(ag__loki *l, cm_buf *out)
{
	if (!l)
		return 0;
	ls_store_stats st;
	ls_store_stats_get(l->store, &st);
	uint64_t sent = 0, dropped = 0, queued = 0;
	if (l->fwd) {
		pthread_mutex_lock(&l->fwd->mu);
		sent = l->fwd->sent, dropped = l->fwd->dropped, queued = l->fwd->bytes;
		pthread_mutex_unlock(&l->fwd->mu);
	}
	return cm_buf_printf(out,
			     "# HELP corral_log_entries_appended_total Log entries stored since start (WAL replay included).\n"
			     "# TYPE corral_log_entries_appended_total counter\ncorral_log_entries_appended_total %llu\n"
			     "# HELP corral_log_bytes_appended_total Bytes of log lines stored since start.\n"
			     "# TYPE corral_log_bytes_appended_total counter\ncorral_log_bytes_appended_total %llu\n"
			     "# HELP corral_log_streams Log streams known to the store.\n"
			     "# TYPE corral_log_streams gauge\ncorral_log_streams %llu\n"
			     "# HELP corral_log_disk_bytes Bytes of the log store's chunk files.\n"
			     "# TYPE corral_log_disk_bytes gauge\ncorral_log_disk_bytes %llu\n"
			     "# HELP corral_log_duplicate_appends_total Appends skipped as replays of a stored batch.\n"
			     "# TYPE corral_log_duplicate_appends_total counter\ncorral_log_duplicate_appends_total %llu\n"
			     "# HELP corral_loki_push_sent_total Push requests --loki-push delivered.\n"
			     "# TYPE corral_loki_push_sent_total counter\ncorral_loki_push_sent_total %llu\n"
			     "# HELP corral_loki_push_dropped_total Push requests --loki-push gave up on (refused or queue full).\n"
			     "# TYPE corral_loki_push_dropped_total counter\ncorral_loki_push_dropped_total %llu\n"
			     "# HELP corral_loki_push_queued_bytes Bytes waiting to be forwarded.\n"
			     "# TYPE corral_loki_push_queued_bytes gauge\ncorral_loki_push_queued_bytes %llu\n",
			     (unsigned long long)st.entries, (unsigned long long)st.bytes, (unsigned long long)st.streams,
			     (unsigned long long)st.disk_bytes, (unsigned long long)st.duplicates, (unsigned long long)sent,
			     (unsigned long long)dropped, (unsigned long long)queued);
}
