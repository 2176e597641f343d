/* ag_rw.c -- POST /api/v1/write: the Prometheus remote write 1.0 receiver.
 *
 * A remote write sender (Prometheus, Grafana Agent, vmagent, ...) POSTs a snappy block (raw, not
 * framed) of a prometheus.WriteRequest (proto/prompb.proto) with Content-Encoding: snappy,
 * Content-Type: application/x-protobuf and X-Prometheus-Remote-Write-Version: 0.1.0. This file
 * decodes it with limits, checks the labels, and appends the series through the same durable path as
 * agent pushes: ts_append returns only after the WAL record is fsynced, and only then is the answer
 * 204. Then the samples are queued for the remote write sender (ag_rwsend.c), if one runs.
 *
 * Answers (the sender retries 5xx and 429 and drops on other 4xx, so the status says whether a retry
 * can help):
 *   204  stored (duplicates of stored samples are dropped by the tsdb, so a retry is harmless)
 *   400  bad snappy, bad protobuf, a label rule broken (message says which series)
 *   401  the bearer token is missing or not a push token (ag__auth_push, the rule of every writing route)
 *   403  the token is bound to one node (ag_auth.c): remote write carries any series, not one node's
 *   413  body over --max-push-bytes, or uncompressed size over RW_MAX_RAW (read from the snappy
 *        header before anything is allocated), or the decoded request over RW_MAX_DECODED
 *   415  Content-Encoding other than snappy, or a remote write 2.0 Content-Type
 *   503  the store failed (disk full, ...): retry later
 *
 * Label rules: names [a-zA-Z_][a-zA-Z0-9_]* and unique in a series, values UTF-8 of at most
 * RW_MAX_LABEL_BYTES; a label with an empty value is an absent label (Prometheus) and is dropped; a
 * series keeps at least one label and at most RW_MAX_LABELS. Samples are stored as sent, stale
 * markers (the NaN with bits 0x7ff0000000000002) included: selectors skip them like Prometheus does.
 * Series without samples (exemplars or native histograms only, which corral does not store) are
 * skipped. Runs on the HTTP threads; never logs per request.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ag_int.h"
#include "prompb.pb-c.h"

#define RW_MAX_RAW (32u << 20)        /* uncompressed WriteRequest */
#define RW_MAX_DECODED (256u << 20)   /* protobuf-c structures and our series, in the request's arena */
#define RW_MAX_LABELS 256
#define RW_MAX_LABEL_BYTES (64u << 10)

enum { RW_OK, RW_BAD, RW_UNAUTHORIZED, RW_TOO_LARGE, RW_UNAVAILABLE, RW_NRESULTS };
static const char *const rw_results[RW_NRESULTS] = {"ok", "bad_request", "unauthorized", "too_large",
						    "unavailable"};

struct ag__rw {
	ts_db *db;
	ag__rwsend *fwd;
	ag__auth *auth;
	atomic_uint_fast64_t requests[RW_NRESULTS];
	atomic_uint_fast64_t samples;
};

/* ---- decoding ------------------------------------------------------------------------------------- */

/* protobuf-c allocates from the request's arena; a refusal (the arena's limit) is remembered. */
typedef struct pb_alloc {
	cm_arena *a;
	int refused;
} pb_alloc;

static void *arena_alloc(void *data, size_t n)
{
	pb_alloc *pa = data;
	void *p = cm_arena_alloc(pa->a, n ? n : 1);
	pa->refused |= !p;
	return p;
}
static void arena_free(void *data, void *p) { (void)data, (void)p; }

static int check_labels(cm_label *l, size_t n, size_t idx, cm_err *err)
{
	if (!n)
		return cm_errf(err, CM_EPROTO, "series %zu has no label with a value", idx);
	if (n > RW_MAX_LABELS)
		return cm_errf(err, CM_EPROTO, "series %zu has more than %d labels", idx, RW_MAX_LABELS);
	for (size_t i = 0; i < n; i++) {
		size_t vl = strlen(l[i].value);
		if (!cm_label_name_valid(l[i].name) || strlen(l[i].name) > RW_MAX_LABEL_BYTES)
			return cm_errf(err, CM_EPROTO, "series %zu: invalid label name \"%.64s\"", idx, l[i].name);
		if (vl > RW_MAX_LABEL_BYTES || !cm_utf8_valid(l[i].value, vl))
			return cm_errf(err, CM_EPROTO, "series %zu: label %.64s: value is not UTF-8 of at most %u bytes",
				       idx, l[i].name, RW_MAX_LABEL_BYTES);
	}
	for (size_t i = 1, sorted = 0; i < n; i++) { /* senders sort by name (remote write 1.0): usually no sort */
		int c = strcmp(l[i - 1].name, l[i].name);
		if (!c)
			return cm_errf(err, CM_EPROTO, "series %zu: label %.64s appears twice", idx, l[i].name);
		if (c > 0 && !sorted)
			cm_labels_sort(l, n), sorted = 1, i = 0;
	}
	return CM_OK;
}

/* One TimeSeries into s (labels with values, checked; samples copied). */
static int series_take(const Prometheus__TimeSeries *ts, size_t idx, cm_arena *a, cm_series *s, cm_err *err)
{
	cm_label *l = cm_arena_calloc(a, ts->n_labels ? ts->n_labels : 1, sizeof(*l));
	cm_sample *x = cm_arena_calloc(a, ts->n_samples, sizeof(*x));
	if (!l || !x)
		return cm_errf(err, CM_E2BIG, "decoded request exceeds %u bytes", RW_MAX_DECODED);
	size_t n = 0;
	for (size_t i = 0; i < ts->n_labels; i++)
		if (ts->labels[i]->value[0])
			l[n++] = (cm_label){ts->labels[i]->name, ts->labels[i]->value};
	int rc = check_labels(l, n, idx, err);
	if (rc)
		return rc;
	for (size_t i = 0; i < ts->n_samples; i++)
		x[i] = (cm_sample){ts->samples[i]->timestamp, ts->samples[i]->value};
	*s = (cm_series){l, n, x, ts->n_samples};
	return CM_OK;
}

static int unsnappy(const uint8_t *body, size_t n, cm_arena *a, uint8_t **raw, size_t *len, cm_err *err)
{
	size_t want;
	if (snappy_uncompressed_length((const char *)body, n, &want) != SNAPPY_OK)
		return cm_errf(err, CM_EPROTO, "body is not a snappy block");
	if (want > RW_MAX_RAW)
		return cm_errf(err, CM_E2BIG, "uncompressed request of %zu bytes exceeds %u", want, RW_MAX_RAW);
	uint8_t *p = cm_arena_alloc(a, want ? want : 1);
	size_t got = want;
	if (!p)
		return cm_errf(err, CM_E2BIG, "decoded request exceeds %u bytes", RW_MAX_DECODED);
	if (snappy_uncompress((const char *)body, n, (char *)p, &got) != SNAPPY_OK || got != want)
		return cm_errf(err, CM_EPROTO, "bad snappy block");
	*raw = p, *len = got;
	return CM_OK;
}

int ag__rw_decode(const uint8_t *body, size_t n, cm_arena *a, cm_series **out, size_t *nout, cm_err *err)
{
	uint8_t *raw = NULL;
	size_t len = 0;
	int rc = unsnappy(body, n, a, &raw, &len, err);
	if (rc)
		return rc;
	pb_alloc pa = {a, 0};
	ProtobufCAllocator al = {arena_alloc, arena_free, &pa};
	Prometheus__WriteRequest *wr = prometheus__write_request__unpack(&al, len, raw);
	if (!wr && pa.refused)
		return cm_errf(err, CM_E2BIG, "decoded request exceeds the size limit");
	if (!wr)
		return cm_errf(err, CM_EPROTO, "bad protobuf: not a remote write 1.0 WriteRequest");
	cm_series *s = cm_arena_calloc(a, wr->n_timeseries ? wr->n_timeseries : 1, sizeof(*s));
	if (!s)
		return cm_errf(err, CM_E2BIG, "decoded request exceeds the size limit");
	size_t k = 0;
	for (size_t i = 0; i < wr->n_timeseries; i++) {
		if (!wr->timeseries[i]->n_samples)
			continue;
		if ((rc = series_take(wr->timeseries[i], i, a, &s[k++], err)))
			return rc;
	}
	*out = s, *nout = k;
	return CM_OK;
}

/* ---- the endpoint ---------------------------------------------------------------------------------- */

int ag__rw_create(ts_db *db, ag__auth *auth, ag__rwsend *fwd, ag__rw **out, cm_err *err)
{
	ag__rw *rw = calloc(1, sizeof(*rw));
	if (!rw)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	rw->db = db, rw->auth = auth, rw->fwd = fwd;
	*out = rw;
	return CM_OK;
}

void ag__rw_destroy(ag__rw *rw) { free(rw); }

static void answer(ag__rw *rw, ag__resp *resp, int result, int status, const char *msg)
{
	static const char *const types[RW_NRESULTS] = {"", "bad_data", "unauthorized", "bad_data", "unavailable"};
	atomic_fetch_add(&rw->requests[result], 1);
	if (status == 204) {
		resp->status = 204;
		resp->body.len = 0;
		return;
	}
	ag__resp_error(resp, status, status == 415 ? "bad_data" : status == 403 ? "forbidden" : types[result], msg);
}

/* 0 when the headers describe a remote write 1.0 body, else the status to answer. */
static int headers_status(const ag__req *req, const char **msg)
{
	const char *enc = req->content_encoding, *ct = req->content_type;
	if (enc && strcasecmp(enc, "snappy") != 0) {
		*msg = "Content-Encoding must be snappy (remote write 1.0)";
		return 415;
	}
	if (ct && strstr(ct, "io.prometheus.write.v2")) {
		*msg = "remote write 2.0 is not supported; send remote write 1.0 (prometheus.WriteRequest)";
		return 415;
	}
	return 0;
}

static void store(ag__rw *rw, const cm_series *s, size_t n, ag__resp *resp)
{
	cm_err err = {{0}};
	int rc = n ? ts_append(rw->db, s, n, &err) : CM_OK;
	if (rc == CM_EINVAL) {
		answer(rw, resp, RW_BAD, 400, err.msg);
		return;
	}
	if (rc) {
		answer(rw, resp, RW_UNAVAILABLE, 503, rc == CM_ENOMEM ? "out of memory" : err.msg);
		return;
	}
	size_t samples = 0;
	for (size_t i = 0; i < n; i++)
		samples += s[i].nsamples;
	atomic_fetch_add(&rw->samples, samples);
	ag__rwsend_enqueue(rw->fwd, s, n);
	answer(rw, resp, RW_OK, 204, NULL);
}

void ag__rw_write(ag__rw *rw, const ag__req *req, ag__resp *resp)
{
	const char *msg = NULL;
	int status;
	char node[256];
	if (!ag__auth_push(rw->auth, req->authorization, node, sizeof(node))) {
		answer(rw, resp, RW_UNAUTHORIZED, 401, "missing or wrong bearer token");
		return;
	}
	if (node[0]) {
		answer(rw, resp, RW_UNAUTHORIZED, 403, "a token bound to one node may not remote write");
		return;
	}
	if (req->body_too_large) {
		answer(rw, resp, RW_TOO_LARGE, 413, "request body exceeds --max-push-bytes");
		return;
	}
	if ((status = headers_status(req, &msg))) {
		answer(rw, resp, RW_BAD, status, msg);
		return;
	}
	cm_arena a;
	cm_arena_init(&a, RW_MAX_DECODED);
	cm_series *s;
	size_t n;
	cm_err err = {{0}};
	int rc = ag__rw_decode(req->body, req->body_len, &a, &s, &n, &err);
	if (rc)
		answer(rw, resp, rc == CM_E2BIG ? RW_TOO_LARGE : RW_BAD, rc == CM_E2BIG ? 413 : 400, err.msg);
	else
		store(rw, s, n, resp);
	cm_arena_close(&a);
}

int ag__rw_metrics(ag__rw *rw, cm_buf *b)
{
	if (!rw)
		return CM_OK;
	int rc = cm_buf_puts(b, "# HELP corral_remote_write_requests_total Remote write requests received, by result.\n"
				"# TYPE corral_remote_write_requests_total counter\n");
	for (int i = 0; i < RW_NRESULTS && !rc; i++)
		rc = cm_buf_printf(b, "corral_remote_write_requests_total{result=\"%s\"} %llu\n", rw_results[i],
				   (unsigned long long)atomic_load(&rw->requests[i]));
	return rc ? rc
		  : cm_buf_printf(b,
				  "# HELP corral_remote_write_received_samples_total Samples stored from remote write.\n"
				  "# TYPE corral_remote_write_received_samples_total counter\n"
				  "corral_remote_write_received_samples_total %llu\n",
				  (unsigned long long)atomic_load(&rw->samples));
}
