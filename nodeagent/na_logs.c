/* na_logs.c -- the agent's container logs: tailer records into batches of their own, exactly once.
 *
 * With --log-root set, the agent tails the container logs under <log-root>/var/log/{pods,containers}
 * with logship's tailer (ls.h), its positions in <state-dir>/log-positions.db. Everything here runs
 * on the agent's worker, one pass at a time (na_agent.c decides when: after each metrics pass, and back
 * to back while a backlog lasts and the spool has room). A logs pass (na__logs_pass):
 *
 *  1. Commit: every batch whose seq is below the oldest seq still in the spool has left it (acked,
 *     refused for good, or dropped), so ls_tail_commit(id) of the newest such batch makes its
 *     positions durable (a commit covers every batch before it).
 *  2. Replay: right after a restart the tailer hands back batches staged before it (replay_seq set).
 *     Each goes out alone under that seq, unless the spool still holds that seq (the original frame is
 *     then still to be sent). The aggregator's per-origin seq dedupe stores it once either way.
 *  3. Read: up to READ_BYTES of new records (CM_AGAIN = back-pressure: none this pass), grouped into one
 *     cm_log_stream per (source file, stdout|stderr). The read says whether it stopped at its budget
 *     (na__logs_more: a backlog, so the agent runs the next pass at once).
 *  4. Encode the streams as a batch of their own with the pass's seq (a reused encoder at ZSTD_LEVEL:
 *     no allocation per pass once warm), stage (ls_tail_stage(id, seq)), spool. A pass that failed
 *     keeps its records for the next pass instead of reading more.
 *
 * Stream labels: namespace, pod, pod_uid, container, container_id, stream. Flags bit 0 = truncated.
 * Memory: one read's records, their grouping and their frame, all in buffers kept from pass to pass.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ls.h"
#include "na_int.h"

#define READ_BYTES (4u << 20)
#define ZSTD_LEVEL 1 /* on log lines 1.8x level 3's speed at the same ratio (bench/logs) */
#define MAX_STAGED 4096
#define RESCAN_MS 10000 /* directory walks between inotify's events (every read without inotify): a walk
                         * of the 5 M bench tree's 50 pods every read was ~8 % of the agent's CPU */

typedef struct staged {
	uint64_t seq, id;
	int unsent; /* its frame could not be spooled: nothing from it on is committed before a restart,
	             * which reads it again from the staged positions */
} staged;

struct na__logs {
	ls_tail *tail;
	ls_batch batch;
	int pending;            /* batch read but not yet staged (a pass failed after reading) */
	int more;               /* the last read stopped at its budget or at back-pressure: more to read */
	staged map[MAX_STAGED]; /* seq -> batch id, oldest first, not yet committed */
	size_t nmap;
	char node[256], boot_id[64];
	cm_arena arena;         /* this pass's streams */
	cm_wire_enc *enc;       /* logs-only frames */
	cm_log_stream *streams;
	size_t nstreams;
	uint64_t replays, commits, backpressure;  /* worker-side counters */
	cm_ratelimit rl;
};

int na__logs_open(const na_config *cfg, na__logs **out, cm_err *err)
{
	*out = NULL;
	if (!cfg->log_root || !*cfg->log_root)
		return CM_OK;
	if (!cfg->state_dir)
		return cm_errf(err, CM_EINVAL, "--log-root needs --state-dir (the tailer's positions live there)");
	na__logs *l = calloc(1, sizeof(*l));
	if (!l)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	char db[4096], path[4096];
	snprintf(db, sizeof(db), "%s/log-positions.db", cfg->state_dir);
	snprintf(path, sizeof(path), "%s/sys/kernel/random/boot_id", cfg->proc_root);
	snprintf(l->node, sizeof(l->node), "%s", cfg->node ? cfg->node : "");
	int rc = cm_read_file(path, l->boot_id, sizeof(l->boot_id), NULL);
	if (rc)
		rc = cm_errf(err, rc, "cannot read %s: %s", path, cm_strerror(rc));
	l->boot_id[strcspn(l->boot_id, "\r\n")] = 0;
	ls_batch_init(&l->batch);
	cm_arena_init(&l->arena, 0);
	if (!rc && cm_wire_enc_create(ZSTD_LEVEL, &l->enc))
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	if (!rc)
		rc = ls_tail_open(&(ls_tail_opts){.log_root = cfg->log_root, .db_path = db, .rescan_ms = RESCAN_MS},
				  &l->tail, err);
	if (rc) {
		na__logs_close(l);
		return rc;
	}
	*out = l;
	return CM_OK;
}

void na__logs_close(na__logs *l)
{
	if (!l)
		return;
	if (l->tail)
		ls_tail_close(l->tail);
	ls_batch_close(&l->batch);
	cm_arena_close(&l->arena);
	cm_wire_enc_destroy(l->enc);
	free(l);
}

/* Commits the newest staged batch whose frame is no longer in the spool. */
static void commit_left(na__logs *l, na__spool *sp)
{
	uint64_t oldest = na__spool_oldest_seq(sp);
	size_t k = 0;
	while (k < l->nmap && l->map[k].seq < oldest && !l->map[k].unsent)
		k++;
	if (!k)
		return;
	int rc = ls_tail_commit(l->tail, l->map[k - 1].id);
	if (rc) {
		CM_LOG_RL(&l->rl, CM_LOG_WARN, "agent", "log positions: commit failed: %s", cm_strerror(rc));
		return;
	}
	l->commits++;
	memmove(l->map, l->map + k, (l->nmap - k) * sizeof(*l->map));
	l->nmap -= k;
}

static int remember(na__logs *l, uint64_t seq, uint64_t id)
{
	if (l->nmap == MAX_STAGED)
		return CM_E2BIG; /* the spool holds fewer batches than this: cannot happen with sane bounds */
	size_t i = l->nmap;
	while (i && l->map[i - 1].seq > seq) /* replays arrive below the newest seq */
		i--;
	memmove(l->map + i + 1, l->map + i, (l->nmap - i) * sizeof(*l->map));
	l->map[i] = (staged){seq, id, 0};
	l->nmap++;
	return CM_OK;
}

/* Batch seq was staged and remembered but not spooled. */
static void unsent(na__logs *l, uint64_t seq)
{
	for (size_t i = 0; i < l->nmap; i++)
		if (l->map[i].seq == seq)
			l->map[i].unsent = 1;
}

static int add_stream(na__logs *l, const ls_source *src, int stream, size_t n, size_t *cap)
{
	if (l->nstreams == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		cm_log_stream *s = cm_arena_calloc(&l->arena, nc, sizeof(*s));
		if (!s)
			return CM_ENOMEM;
		if (l->nstreams)
			memcpy(s, l->streams, l->nstreams * sizeof(*s));
		l->streams = s, *cap = nc;
	}
	cm_label *lb = cm_arena_calloc(&l->arena, 6, sizeof(*lb));
	int64_t *ts = cm_arena_calloc(&l->arena, n, sizeof(*ts));
	const char **lines = cm_arena_calloc(&l->arena, n, sizeof(*lines));
	size_t *lens = cm_arena_calloc(&l->arena, n, sizeof(*lens));
	uint32_t *flags = cm_arena_calloc(&l->arena, n, sizeof(*flags));
	if (!lb || !ts || !lines || !lens || !flags)
		return CM_ENOMEM;
	lb[0] = (cm_label){"namespace", src->namespace_}, lb[1] = (cm_label){"pod", src->pod};
	lb[2] = (cm_label){"pod_uid", src->pod_uid}, lb[3] = (cm_label){"container", src->container};
	lb[4] = (cm_label){"container_id", src->container_id};
	lb[5] = (cm_label){"stream", stream == LS_STDERR ? "stderr" : "stdout"};
	l->streams[l->nstreams++] = (cm_log_stream){lb, 6, ts, lines, lens, flags, 0};
	return CM_OK;
}

/* One stream per (source, stream), records in read order. */
static int group(na__logs *l)
{
	cm_arena_reset(&l->arena);
	l->streams = NULL, l->nstreams = 0;
	const ls_batch *b = &l->batch;
	size_t cap = 0, *slot = cm_arena_calloc(&l->arena, 2 * b->nsources + 1, sizeof(*slot));
	if (!slot)
		return CM_ENOMEM;
	size_t *count = cm_arena_calloc(&l->arena, 2 * b->nsources + 1, sizeof(*count));
	if (!count)
		return CM_ENOMEM;
	for (size_t i = 0; i < b->nrecords; i++)
		count[2 * b->records[i].source + (b->records[i].stream == LS_STDERR)]++;
	for (size_t i = 0; i < b->nrecords; i++) {
		const ls_record *r = &b->records[i];
		size_t k = 2 * r->source + (r->stream == LS_STDERR);
		if (!slot[k]) {
			int rc = add_stream(l, &b->sources[r->source], r->stream, count[k], &cap);
			if (rc)
				return rc;
			slot[k] = l->nstreams;
		}
		cm_log_stream *s = &l->streams[slot[k] - 1];
		((int64_t *)s->timestamps_ns)[s->nrecords] = r->ts_ns;
		((const char **)s->lines)[s->nrecords] = r->line;
		((size_t *)s->line_lens)[s->nrecords] = r->len;
		((uint32_t *)s->flags)[s->nrecords] = r->truncated ? CM_LOG_TRUNCATED : 0;
		s->nrecords++;
	}
	return CM_OK;
}

/* This read's streams alone as the frame of batch seq (no series: a logs-only batch), in a malloc'd copy
 * of exactly its size for the spool (the encoder's buffers stay with it, warm for the next batch). */
static int encode_logs(na__logs *l, uint64_t seq, uint8_t **frame, size_t *len)
{
	cm_batch b = {.node = l->node, .boot_id = l->boot_id, .agent_version = CM_VERSION, .seq = seq,
		      .created_ms = cm_now_ms(), .log_streams = l->streams, .nlog_streams = l->nstreams};
	cm_err err = {{0}};
	const uint8_t *f;
	int rc = cm_wire_enc_encode(l->enc, &b, &f, len, &err);
	if (!rc && !(*frame = malloc(*len)))
		rc = CM_ENOMEM;
	if (!rc)
		memcpy(*frame, f, *len);
	return rc;
}

/* A staged batch from before a restart, alone under its old seq. */
static int replay(na__logs *l, na__spool *sp)
{
	uint64_t seq = l->batch.replay_seq, id = l->batch.id;
	int rc = remember(l, seq, id);
	int queued = !rc && na__spool_has(sp, seq);
	CM_LOG(CM_LOG_INFO, "agent", "log batch staged before the restart: seq %llu, %zu records, %s",
	       (unsigned long long)seq, l->batch.nrecords, queued ? "still in the spool" : "sent again");
	if (rc || queued)
		return rc;
	uint8_t *frame = NULL;
	size_t len = 0;
	rc = group(l);
	if (!rc)
		rc = encode_logs(l, seq, &frame, &len);
	if (!rc)
		rc = na__spool_put(sp, seq, frame, len, 1);
	if (rc)
		unsent(l, seq);
	l->replays++;
	return rc;
}

int na__logs_begin(na__logs *l, na__spool *sp, const cm_log_stream **streams, size_t *n)
{
	*streams = NULL, *n = 0;
	commit_left(l, sp);
	int rc = CM_OK;
	while (!l->pending) {
		rc = ls_tail_read(l->tail, &l->batch, READ_BYTES, 0);
		l->more = rc == CM_AGAIN || (!rc && l->batch.more);
		if (rc == CM_AGAIN)
			l->backpressure++;
		if (rc || !l->batch.replay_seq)
			break;
		if ((rc = replay(l, sp)))
			break;
	}
	if (rc == CM_AGAIN)
		return CM_OK;
	if (rc) {
		CM_LOG_RL(&l->rl, CM_LOG_WARN, "agent", "log tailing: %s", cm_strerror(rc));
		return CM_OK; /* metrics go out anyway; the tailer retries next pass */
	}
	if (!l->batch.nrecords)
		return CM_OK;
	l->pending = 1;
	if ((rc = group(l)))
		return rc;
	*streams = l->streams, *n = l->nstreams;
	return CM_OK;
}

int na__logs_stage(na__logs *l, uint64_t seq)
{
	if (!l->pending)
		return CM_OK;
	int rc = ls_tail_stage(l->tail, l->batch.id, seq);
	if (!rc)
		rc = remember(l, seq, l->batch.id);
	if (!rc)
		l->pending = 0;
	return rc;
}

int na__logs_more(const na__logs *l) { return l->more; }

int na__logs_pass(na__logs *l, na__spool *sp, uint64_t seq, int *spooled, cm_err *err)
{
	const cm_log_stream *streams;
	size_t n;
	uint8_t *frame = NULL;
	size_t len = 0;
	*spooled = 0;
	int rc = na__logs_begin(l, sp, &streams, &n);
	if (rc || !n)
		return rc ? cm_errf(err, rc, "log streams: %s", cm_strerror(rc)) : CM_OK;
	if ((rc = encode_logs(l, seq, &frame, &len)))
		return cm_errf(err, rc, "encoding log batch: %s", cm_strerror(rc));
	if ((rc = na__logs_stage(l, seq))) {
		free(frame);
		return cm_errf(err, rc, "staging log batch: %s", cm_strerror(rc));
	}
	*spooled = 1; /* seq is used even if the put fails: its records are staged under it */
	if ((rc = na__spool_put(sp, seq, frame, len, 1))) {
		unsent(l, seq);
		return cm_errf(err, rc, "cannot spool log batch %llu: %s (sent again after a restart)",
			       (unsigned long long)seq, cm_strerror(rc));
	}
	return CM_OK;
}
