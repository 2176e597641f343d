/* ts_int.h -- tsdb internals shared by ts_wal.c, ts_head.c and ts_db.c.
 *
 * The WAL (ts_wal.c) owns the segment files, group commit and replay; the head (ts_head.c) owns the
 * in-memory series and their samples; ts_db.c glues them behind ts.h and orders publication. Nothing
 * here is visible outside libts.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TS_INT_H
#define TS_INT_H

#include <stdint.h>

#include "cm.h"
#include "ts.h"

/* Limits applied to every series on append and again on replay (the WAL is untrusted input). */
#define TS__MAX_LABELS 256           /* per series */
#define TS__MAX_LABEL_BYTES 65536u   /* per name or value */
#define TS__MAX_RECORD (256u << 20)  /* WAL record payload bytes */

/* Checks one series: label count, names, UTF-8 values, no duplicate names, at least one non-empty value. */
int ts__series_check(const cm_series *s, cm_err *err);

/* ---- head (ts_head.c) ------------------------------------------------------------------------------ */

typedef struct ts__head ts__head;

int ts__head_create(ts__head **out);
void ts__head_destroy(ts__head *h);
/* Adds the samples of checked series; takes the write lock. Fails only with CM_ENOMEM. */
int ts__head_append(ts__head *h, const cm_series *series, size_t nseries);
/* Calls fn for matching series in label-set order under the read lock; returns fn's non-zero value. */
int ts__head_select(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		    void *ctx);
void ts__head_stats(ts__head *h, uint64_t *series, uint64_t *samples);

/* ---- write-ahead log (ts_wal.c) -------------------------------------------------------------------- */

typedef struct ts__wal ts__wal;

/* Receives each series of each valid record during replay, in WAL order. */
typedef int (*ts__replay_fn)(void *ctx, const cm_series *s);

/* Replays <dir>/wal into fn, repairing torn or corrupt tails, then opens a fresh segment for appends. */
int ts__wal_open(const char *dir, const ts_opts *opts, ts__replay_fn fn, void *ctx, ts_open_report *rep,
		 ts__wal **out, cm_err *err);
void ts__wal_close(ts__wal *w);
/* Encodes checked series as one complete record (header included) into out. */
int ts__wal_encode(const cm_series *series, size_t nseries, cm_buf *out, cm_err *err);
/* Writes one encoded record; *seq numbers it among the records written since open (1, 2, ...). */
int ts__wal_write(ts__wal *w, const uint8_t *rec, size_t n, uint64_t *seq, cm_err *err);
/* Returns once every record up to seq is on stable storage, sharing fsyncs between callers. */
int ts__wal_sync(ts__wal *w, uint64_t seq, cm_err *err);
void ts__wal_stats(ts__wal *w, uint64_t *fsyncs, uint64_t *bytes);

#endif
