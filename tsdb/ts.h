/* ts.h -- corral's embedded time-series store: durable append, select by label matchers.
 *
 * The one public header of tsdb/. A ts_db owns a directory: an append-only write-ahead log (ts_wal.c,
 * format documented there) and an in-memory head of every series in Gorilla chunks (ts_head.c,
 * ts_chunk.c). ts_append() makes a whole group of series durable in one WAL write and returns only after
 * it is fsynced (group commit: concurrent appenders share one fsync), so a caller may acknowledge once
 * it returns 0. ts_open() replays
 * the WAL; a torn or corrupt tail is truncated and reported, never fatal.
 *
 * A storage thread cuts the head into immutable 2 h blocks (ts_block.c: zstd-compressed frames, an
 * mmapped inverted index), replaces the WAL segments they cover with a checkpoint, merges the blocks of
 * each day (compaction) and applies retention; ts_select reads head and blocks. docs/tsdb-engine.md.
 *
 * Thread safety: everything except ts_open/ts_close may be called from any number of threads at once.
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
	int manual_cut;          /* tests: no background cuts of the head into blocks (ts_flush still cuts) */
	int64_t retention_ms;    /* drop blocks that end this long before the newest sample; 0 = keep */
	uint64_t retention_bytes; /* drop the oldest blocks while blocks take more; 0 = no limit */
	int downsample;          /* write the 5 min and 1 h tiers of each compacted day (more disk) */
	int64_t ooo_window_ms;   /* how far behind a series' newest sample a sample may arrive; 0 = 10 min,
				    negative = none */
	uint64_t cache_bytes;    /* decoded block series kept for repeated queries (LRU); 0 = none */
} ts_opts;

/* What ts_open found while replaying; reported by the caller, never fatal. */
typedef struct ts_open_report {
	uint64_t records;          /* ts_append batches replayed (series definitions not counted) */
	uint64_t samples;
	uint64_t truncated_bytes;  /* bytes cut from torn or corrupt tails */
	uint32_t truncated_segments;
	uint32_t blocks;           /* blocks opened */
	uint32_t bad_blocks;       /* blocks left out because a file failed validation */
	char first_problem[256];   /* file and offset of the first cut or bad block, "" when clean */
} ts_open_report;

int ts_open(const char *dir, const ts_opts *opts, ts_db **out, ts_open_report *report, cm_err *err);
void ts_close(ts_db *db);

/* Durably appends every sample of every series (one WAL write), then publishes them to readers.
 * Samples older than a series' newest but within the out-of-order window are inserted in order; older
 * ones are dropped and counted (ts_stats.rejected_old); an exact duplicate timestamp keeps the first
 * value (counted in ts_stats.duplicates). Returns 0 only after fsync; CM_EINVAL (nothing written) for a batch that breaks the
 * label rules (names valid and unique, values UTF-8, at most 256 labels of 64 KiB, one non-empty). */
int ts_append(ts_db *db, const cm_series *series, size_t nseries, cm_err *err);

/* Appending by reference, for bulk loads: ts_series_ref checks a label set (the rules above) and returns
 * its series' reference, stable while the db is open; ts_append_ref then appends like ts_append
 * without looking labels up again. CM_EINVAL for a reference ts_series_ref did not return. */
typedef struct ts_ref_series {
	uint64_t ref;
	const cm_sample *samples;
	size_t nsamples;
} ts_ref_series;

int ts_series_ref(ts_db *db, const cm_label *labels, size_t nlabels, uint64_t *ref, cm_err *err);
int ts_append_ref(ts_db *db, const ts_ref_series *series, size_t nseries, cm_err *err);

/* Cuts the whole head into blocks (everything appended is durable and visible to ts_select already once
 * ts_append returned) and starts compaction of the windows that are complete (in the background when
 * the db has its storage thread, else before returning). */
int ts_flush(ts_db *db, cm_err *err);

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

/* Like ts_select, but fn may run on two threads at once (the caller's and a worker's that decodes
 * ahead), so the caller's work per series runs in parallel: each call gets the label set's rank in
 * label-set order (0, 1, ...; the rank of a label set without samples in the range is skipped) to put
 * results back in order. fn must be thread-safe; a non-zero return stops the walk as in ts_select. */
typedef int (*ts_series_rank_fn)(void *ctx, size_t rank, const cm_label *labels, size_t nlabels,
				 const cm_sample *samples, size_t nsamples);

int ts_select_par(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_rank_fn fn,
		  void *ctx);

/* Like ts_select, but reads only the index and the head's series: fn gets samples NULL and nsamples 0,
 * once per label set whose data overlaps [mint, maxt] by its time range (a series with a gap over the
 * whole range can be included), in label-set order. For the series API; cheap on long ranges. */
int ts_select_series(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		     void *ctx);

/* The values of label name among the series whose data overlaps [mint, maxt] (by time range, as
 * ts_select_series), each given to fn at least once, in no particular order. A block inside the range
 * answers from its postings table without reading its series. For the label values API. */
typedef int (*ts_value_fn)(void *ctx, const char *value);

int ts_label_values(ts_db *db, const char *name, int64_t mint, int64_t maxt, ts_value_fn fn, void *ctx);

/* Downsampled tiers (written when compaction completes a day): per bucket of resolution_ms (300000 or
 * 3600000), the min, max or sum of the non-NaN samples, their count, or the last value; points sit at the
 * bucket start. ts_select_agg is ts_select over the tier of that resolution: it returns only what tier
 * blocks hold (complete days), so a caller reads the newest part raw. */
typedef enum ts_agg { TS_AGG_MIN, TS_AGG_MAX, TS_AGG_SUM, TS_AGG_COUNT, TS_AGG_LAST, TS_AGG_N } ts_agg;

int ts_select_agg(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t resolution_ms,
		  ts_agg agg, ts_series_fn fn, void *ctx);

typedef struct ts_stats {
	uint64_t series;
	uint64_t samples;
	uint64_t appends;
	uint64_t fsyncs;
	uint64_t wal_bytes;
	uint64_t rejected_old;  /* samples older than the out-of-order window allows */
	uint64_t duplicates;    /* samples whose timestamp was already present */
	uint64_t blocks;        /* raw blocks open */
	uint64_t block_samples; /* samples in them */
	uint64_t tier_blocks;   /* downsampled blocks open */
	uint64_t cuts;          /* head cuts done */
	uint64_t compactions;   /* blocks merged into larger ones */
	uint64_t blocks_dropped; /* blocks removed by retention */
	uint64_t cache_hits;    /* block series a select found decoded in the cache */
	uint64_t cache_misses;  /* block series a select read and decoded */
	uint64_t cache_bytes;   /* held by the cache, and by queries still using entries it evicted */
} ts_stats;

void ts_get_stats(ts_db *db, ts_stats *out);

#endif
