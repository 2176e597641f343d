/* ag_ingest.c -- POST /api/v1/agent/push: authenticate, decode, dedupe, store durably, acknowledge.
 *
 * A push is answered 200 only after its samples are in the tsdb WAL and fsynced. Retries are
 * idempotent: each (node, boot id) keeps a window of the seqs stored (cm_seqwin: the last 64 in store
 * order and a floor below them; the agent has up to 4 batches in flight, so 12 may arrive before 11),
 * and a batch whose seq the window holds is acknowledged without being stored again. That memory is
 * itself durable: every batch is stored together with the sample corral_agent_batch_seq{node,boot_id}
 * = seq in the same WAL record, at a time that grows with every batch stored, and ag__ingest_create
 * rebuilds each window by adding those samples' values in time order after a restart. Sequence
 * numbers must therefore stay below 2^53 (exact in a double); the agent's are microseconds.
 *
 * A node's clock is trusted while it agrees with ours: a batch created more than RETIME_MS in our future,
 * or more than RETIME_MS before the newest batch stored for its (node, boot), has every sample
 * shifted by (now - created_ms), so it lands at our receive time with its internal spacing kept
 * (counted in corral_aggregator_retimed_batches_total). Without that, a node clock stepped an hour
 * ahead would store samples an hour ahead, and every later sample would be older than the series'
 * newest by more than the out-of-order window and be dropped until the real time caught up. Spooled
 * batches delivered late are created after the node's newest and keep their timestamps.
 *
 * Every stored series gets the label node="<batch node>" (unless the agent set one), so cgroup ids
 * and node metrics from different nodes never collide. Pushes from different nodes run in parallel;
 * pushes from one node are serialised by that node's entry lock, except their log streams (below).
 *
 * Container log streams (wire field 10) go to the log store (ag_loki.c) first, under origin
 * "<node>/<boot_id>" and the batch seq, before the seq check and the tsdb append: the log store dedupes
 * on (origin, seq) itself, so a batch retried after a crash between the two stores keeps its logs,
 * which the tsdb's seq check alone would drop. That step takes no node lock (the log store's own
 * lock and window are enough), so the agent's log batches in flight at once are stored together: the
 * log store syncs its WAL for them in one fdatasync (ls_store.c, group commit). The seq check, the tsdb
 * append and the window's update then run under the node's lock. Stream labels are the agent's minus pod_uid and
 * container_id (one stream per container name, not per restart), empty values dropped, plus node.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define SEQ_METRIC "corral_agent_batch_seq"
#define NBUCKETS 1024
#define RETIME_MS (5 * 60 * 1000) /* within the tsdb's 10 min out-of-order window */

typedef struct node_entry {
	struct node_entry *next;
	pthread_mutex_t lock;
	cm_seqwin seqs;  /* the batches stored */
	int64_t last_t;  /* timestamp of the last seq sample: strictly increasing, so none is dropped */
	int64_t newest;  /* newest batch creation time stored, after any retiming (ms) */
	char *key;  /* node '\0' boot_id */
	size_t keylen;
} node_entry;

struct ag__ingest {
	ts_db *db;
	ag__metrics *metrics;
	ag__auth *auth;  /* push tokens (ag_auth.c) */
	cm_wire_limits limits;
	ag__state *state; /* inventory and events of stored batches (ag_state.c), or NULL */
	ag__loki *loki;   /* log store for field 10, or NULL (log streams are then ignored) */
	ag__rwsend *fwd;  /* remote write sender (ag_rwsend.c), or NULL */
	pthread_mutex_t table_lock;
	node_entry *buckets[NBUCKETS];
};

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
	return h;
}

/* Finds or creates the entry for (node, boot). */
static node_entry *entry_get(ag__ingest *in, const char *node, const char *boot)
{
	size_t nl = strlen(node), bl = strlen(boot), kl = nl + 1 + bl;
	char *key = malloc(kl + 1);
	if (!key)
		return NULL;
	memcpy(key, node, nl + 1);
	memcpy(key + nl + 1, boot, bl + 1);
	node_entry **slot = &in->buckets[hash_bytes(key, kl) % NBUCKETS], *e;
	pthread_mutex_lock(&in->table_lock);
	for (e = *slot; e; e = e->next)
		if (e->keylen == kl && !memcmp(e->key, key, kl))
			break;
	if (!e && (e = calloc(1, sizeof(*e)))) {
		pthread_mutex_init(&e->lock, NULL);
		e->key = key, e->keylen = kl, key = NULL;
		e->next = *slot;
		*slot = e;
	}
	pthread_mutex_unlock(&in->table_lock);
	free(key);
	return e;
}

static int restore_one(void *ctx, const cm_label *labels, size_t nlabels, const cm_sample *samples, size_t n)
{
	ag__ingest *in = ctx;
	const char *node = NULL, *boot = "";
	for (size_t i = 0; i < nlabels; i++) {
		if (!strcmp(labels[i].name, "node"))
			node = labels[i].value;
		else if (!strcmp(labels[i].name, "boot_id"))
			boot = labels[i].value;
	}
	node_entry *e = node ? entry_get(in, node, boot) : NULL;
	for (size_t i = 0; e && i < n; i++)
		cm_seqwin_add(&e->seqs, (uint64_t)samples[i].v);
	if (e && n)
		e->last_t = samples[n - 1].t_ms;
	return 0;
}

int ag__ingest_create(ts_db *db, ag__metrics *m, ag__loki *loki, ag__auth *auth, size_t max_push,
		      ag__ingest **out, cm_err *err)
{
	ag__ingest *in = calloc(1, sizeof(*in));
	if (!in)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	in->auth = auth;
	in->db = db;
	in->metrics = m;
	in->loki = loki;
	in->limits = cm_wire_default_limits;
	if (max_push < in->limits.max_frame)
		in->limits.max_frame = max_push;
	pthread_mutex_init(&in->table_lock, NULL);
	ts_matcher mt;
	int rc = ts_matcher_init(&mt, TS_MATCH_EQ, "__name__", SEQ_METRIC, err);
	if (rc) {
		ag__ingest_destroy(in);
		return rc;
	}
	ts_select(db, &mt, 1, INT64_MIN, INT64_MAX, restore_one, in);
	ts_matcher_close(&mt);
	*out = in;
	return CM_OK;
}

void ag__ingest_destroy(ag__ingest *in)
{
	for (size_t i = 0; i < NBUCKETS; i++) {
		for (node_entry *e = in->buckets[i], *next; e; e = next) {
			next = e->next;
			pthread_mutex_destroy(&e->lock);
			free(e->key);
			free(e);
		}
	}
	pthread_mutex_destroy(&in->table_lock);
	free(in);
}

/* The batch's series with node="..." added where absent, plus the sequence series at time t, in the
 * arena. */
/* The shift (ms) to add to a batch's sample times: 0 while the node's clock agrees with ours. */
static int64_t retime_shift(const node_entry *e, const cm_batch *b, int64_t now)
{
	int64_t c = b->created_ms;
	if (c <= 0 || (c <= now + RETIME_MS && (!e->newest || c >= e->newest - RETIME_MS)))
		return 0;
	return now - c;
}

static int shift_samples(cm_series *s, int64_t shift, cm_arena *a)
{
	cm_sample *v = cm_arena_alloc(a, s->nsamples * sizeof(*v) + 1);
	if (!v)
		return CM_ENOMEM;
	for (size_t i = 0; i < s->nsamples; i++)
		v[i] = (cm_sample){s->samples[i].t_ms + shift, s->samples[i].v};
	s->samples = v;
	return CM_OK;
}

static int with_node_labels(const cm_batch *b, int64_t t, int64_t shift, cm_arena *a, cm_series **out,
			    size_t *nout)
{
	cm_series *s = cm_arena_calloc(a, b->nseries + 1, sizeof(*s));
	if (!s)
		return CM_ENOMEM;
	for (size_t i = 0; i < b->nseries; i++) {
		const cm_series *src = &b->series[i];
		int has_node = 0;
		for (size_t j = 0; j < src->nlabels; j++)
			has_node |= !strcmp(src->labels[j].name, "node");
		s[i] = *src;
		if (shift && shift_samples(&s[i], shift, a))
			return CM_ENOMEM;
		if (has_node)
			continue;
		s[i].labels = cm_arena_calloc(a, src->nlabels + 1, sizeof(cm_label));
		if (!s[i].labels)
			return CM_ENOMEM;
		memcpy(s[i].labels, src->labels, src->nlabels * sizeof(cm_label));
		s[i].labels[s[i].nlabels++] = (cm_label){"node", b->node};
	}
	cm_label *l = cm_arena_calloc(a, 3, sizeof(*l));
	cm_sample *smp = cm_arena_calloc(a, 1, sizeof(*smp));
	if (!l || !smp)
		return CM_ENOMEM;
	l[0] = (cm_label){"__name__", SEQ_METRIC}, l[1] = (cm_label){"node", b->node};
	l[2] = (cm_label){"boot_id", b->boot_id};
	*smp = (cm_sample){t, (double)b->seq};
	s[b->nseries] = (cm_series){l, 3, smp, 1};
	*out = s;
	*nout = b->nseries + 1;
	return CM_OK;
}

/* ---- log streams (field 10) -------------------------------------------------------------------- */

static int log_labels(const cm_log_stream *src, const char *node, cm_arena *a, ls_push_stream *out)
{
	cm_label *l = cm_arena_calloc(a, src->nlabels + 1, sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	size_t n = 0;
	int has_node = 0;
	for (size_t i = 0; i < src->nlabels; i++) {
		const cm_label *x = &src->labels[i];
		if (!*x->value || !strcmp(x->name, "pod_uid") || !strcmp(x->name, "container_id"))
			continue;
		has_node |= !strcmp(x->name, "node");
		l[n++] = *x;
	}
	if (!has_node)
		l[n++] = (cm_label){"node", node};
	out->labels = l, out->nlabels = n;
	return CM_OK;
}

static int log_streams(const cm_batch *b, cm_arena *a, ls_push_stream **out)
{
	ls_push_stream *st = cm_arena_calloc(a, b->nlog_streams, sizeof(*st));
	if (!st)
		return CM_ENOMEM;
	for (size_t i = 0; i < b->nlog_streams; i++) {
		const cm_log_stream *src = &b->log_streams[i];
		ls_entry *e = cm_arena_calloc(a, src->nrecords ? src->nrecords : 1, sizeof(*e));
		if (!e || log_labels(src, b->node, a, &st[i]))
			return CM_ENOMEM;
		for (size_t j = 0; j < src->nrecords; j++)
			e[j] = (ls_entry){src->timestamps_ns[j], src->lines[j], src->line_lens[j]};
		st[i].entries = e, st[i].nentries = src->nrecords;
	}
	*out = st;
	return CM_OK;
}

/* Durable in the log store before anything else of the batch; a replay is a no-op there. */
static int store_logs(ag__ingest *in, const cm_batch *b, cm_arena *a, cm_err *err)
{
	if (!in->loki || !b->nlog_streams)
		return CM_OK;
	ls_push_stream *st;
	size_t ol = strlen(b->node) + strlen(b->boot_id) + 2;
	char *origin = cm_arena_alloc(a, ol);
	if (!origin || log_streams(b, a, &st))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(origin, ol, "%s/%s", b->node, b->boot_id);
	return ag__loki_append(in->loki, origin, b->seq, st, b->nlog_streams, err);
}

static void respond(ag__ingest *in, ag__resp *resp, int result, int status, const char *type, const char *msg)
{
	atomic_fetch_add(&in->metrics->push[result], 1);
	if (status != 200) {
		ag__resp_error(resp, status, type, msg);
		return;
	}
	resp->status = 200;
	resp->content_type = "application/json";
	cm_buf_printf(&resp->body, "{\"status\":\"success\",\"duplicate\":%s}\n",
		      result == AG_PUSH_DUPLICATE ? "true" : "false");
}

/* Stores a decoded batch unless its seq was already stored for (node, boot). */
static void store(ag__ingest *in, const cm_batch *b, cm_arena *a, ag__resp *resp)
{
	cm_err err = {{0}};
	node_entry *e = entry_get(in, b->node, b->boot_id);
	cm_series *series;
	size_t n;
	if (!e) {
		respond(in, resp, AG_PUSH_UNAVAILABLE, 503, "unavailable", "out of memory");
		return;
	}
	int rc = store_logs(in, b, a, &err); /* outside the node's lock: several of its batches at once */
	if (rc) {
		int bad = rc == CM_EINVAL || rc == CM_EPROTO;
		respond(in, resp, bad ? AG_PUSH_BAD_REQUEST : AG_PUSH_UNAVAILABLE, bad ? 400 : 503,
			bad ? "bad_data" : "unavailable", err.msg);
		return;
	}
	pthread_mutex_lock(&e->lock);
	if (cm_seqwin_has(&e->seqs, b->seq)) {
		pthread_mutex_unlock(&e->lock);
		respond(in, resp, AG_PUSH_DUPLICATE, 200, NULL, NULL);
		return;
	}
	int64_t now = cm_now_ms(), t = now > e->last_t ? now : e->last_t + 1;
	int64_t shift = retime_shift(e, b, now);
	rc = with_node_labels(b, t, shift, a, &series, &n);
	if (!rc)
		rc = ts_append(in->db, series, n, &err);
	if (!rc) {
		cm_seqwin_add(&e->seqs, b->seq);
		e->last_t = t;
		if (b->created_ms + shift > e->newest)
			e->newest = b->created_ms + shift;
		if (shift)
			atomic_fetch_add(&in->metrics->retimed_batches, 1);
		ag__rwsend_enqueue(in->fwd, series, b->nseries); /* the batch's series, in the node's order */
	}
	pthread_mutex_unlock(&e->lock);
	if (rc == CM_EINVAL) { /* the store refuses it for good: a retry would not help */
		respond(in, resp, AG_PUSH_BAD_REQUEST, 400, "bad_data", err.msg);
		return;
	}
	if (rc) {
		respond(in, resp, AG_PUSH_UNAVAILABLE, 503, "unavailable", rc == CM_ENOMEM ? "out of memory" : err.msg);
		return;
	}
	size_t samples = 0;
	for (size_t i = 0; i < b->nseries; i++)
		samples += b->series[i].nsamples;
	atomic_fetch_add(&in->metrics->samples_ingested, samples);
	ag__state_record(in->state, b); /* after durability, never for a duplicate */
	respond(in, resp, AG_PUSH_OK, 200, NULL, NULL);
}

void ag__ingest_set_state(ag__ingest *in, struct ag__state *st) { in->state = st; }
void ag__ingest_set_forward(ag__ingest *in, ag__rwsend *fwd) { in->fwd = fwd; }

void ag__ingest_push(ag__ingest *in, const ag__req *req, ag__resp *resp)
{
	char bound[256]; /* the node a per-node token is valid for, "" = any */
	if (!ag__auth_push(in->auth, req->authorization, bound, sizeof(bound))) {
		respond(in, resp, AG_PUSH_UNAUTHORIZED, 401, "unauthorized", "missing or wrong bearer token");
		return;
	}
	if (req->body_too_large) {
		respond(in, resp, AG_PUSH_BAD_REQUEST, 400, "bad_data", "push body exceeds the size limit");
		return;
	}
	cm_batch b;
	cm_err err = {{0}};
	if (cm_wire_decode(req->body, req->body_len, &in->limits, req->arena, &b, &err)) {
		char msg[320];
		snprintf(msg, sizeof(msg), "bad batch: %s", err.msg);
		respond(in, resp, AG_PUSH_BAD_REQUEST, 400, "bad_data", msg);
		return;
	}
	if (bound[0] && strcmp(bound, b.node)) {
		respond(in, resp, AG_PUSH_UNAUTHORIZED, 403, "forbidden", "this token may not push for this node");
		return;
	}
	store(in, &b, req->arena, resp);
}
