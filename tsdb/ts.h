/* ts.h -- corral's embedded time-series store: durable append, select by label matchers.
 *
 * The one public header of tsdb/. A ts_db owns a directory: an append-only write-ahead log (ts_wal.c,
 * format documented there) and an in-memory head of every series (ts_head.c). ts_append() makes a whole
 * group of series durable as one WAL record and returns only after that record is fsynced (group commit:
 * concurrent appenders share one fsync), so a caller may acknowledge once it returns 0. ts_open() replays
 * the WAL; a torn or corrupt tail is truncated and reported, never fatal.
 *
 * Thread safety: ts_append, ts_select and ts_stats may be called from any number of threads at once.
 * This is the foundation's first store; the tsdb issue replaces the head and adds blocks behind this API.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TS_H
#define TS_H

#include <regex.h>
#include <stdint.h>

#include "cm.h"

typedef struct ts_db ts_db;

typedef struct ts_opts {
	uint64_t segment_bytes;  /* WAL segment size before rolling to a new file; 0 = default 128 MiB */
	int no_fsync;            /* tests and benchmarks only: skip fsync (never in a daemon) */
} ts_opts;

/* What ts_open found while replaying; reported by the caller, never fatal. */
typedef struct ts_open_report {
	uint64_t records;
	uint64_t samples;
	uint64_t truncated_bytes;  /* bytes cut from torn or corrupt tails */
	uint32_t truncated_segments;
	char first_problem[256];   /* file and offset of the first cut, "" when clean */
} ts_open_report;

int ts_open(const char *dir, const ts_opts *opts, ts_db **out, ts_open_report *report, cm_err *err);
void ts_close(ts_db *db);

/* Durably appends every sample of every series (one WAL record), then publishes them to readers.
 * Samples older than a series' newest are inserted in order; an exact duplicate timestamp keeps the
 * first value. Returns 0 only after fsync; CM_EINVAL (nothing written) for a batch that breaks the
 * label rules (names valid and unique, values UTF-8, at most 256 labels of 64 KiB, one non-empty). */
int ts_append(ts_db *db, const cm_series *series, size_t nseries, cm_err *err);

typedef enum ts_match_type { TS_MATCH_EQ, TS_MATCH_NE, TS_MATCH_RE, TS_MATCH_NRE } ts_match_type;

typedef struct ts_matcher {
	ts_match_type type;
	const char *name;
	const char *value;
	regex_t re;  /* compiled, anchored, for RE and NRE */
	int re_ok;
} ts_matcher;

/* Compiles a matcher (regexes are anchored at both ends, as in Prometheus). name and value must
 * outlive it. */
int ts_matcher_init(ts_matcher *m, ts_match_type type, const char *name, const char *value, cm_err *err);
void ts_matcher_close(ts_matcher *m);
int ts_matcher_matches(const ts_matcher *m, const char *value);

/* Called once per series that matches every matcher and has samples in [mint, maxt]; samples holds
 * exactly those, in time order. Pointers are valid only during the call; return non-zero to stop.
 * The callback runs under the head's read lock: it must not call ts_append or ts_select on the same db.
 * ts_select returns 0, CM_ENOMEM, CM_EINVAL for bad arguments, or the callback's non-zero value. */
typedef int (*ts_series_fn)(void *ctx, const cm_label *labels, size_t nlabels, const cm_sample *samples,
			    size_t nsamples);

int ts_select(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
	      void *ctx);

typedef struct ts_stats {
	uint64_t series;
	uint64_t samples;
	uint64_t appends;
	uint64_t fsyncs;
	uint64_t wal_bytes;
} ts_stats;

void ts_get_stats(ts_db *db, ts_stats *out);

#endif
