/* ts_int.h -- tsdb internals shared by ts_wal.c, ts_head.c and ts_db.c.
 *
 * The WAL (ts_wal.c) owns the segment files, group commit and replay; the head (ts_head.c) owns the
 * in-memory series and their samples; ts_db.c glues them behind ts.h and orders publication. Nothing
 * here is visible outside libts.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TS_INT_H
#define TS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cm.h"
#include "ts.h"

/* Limits applied to every series on append and again on replay (the WAL is untrusted input). */
#define TS__MAX_LABELS 256           /* per series */
#define TS__MAX_LABEL_BYTES 65536u   /* per name or value */
#define TS__MAX_RECORD (256u << 20)  /* WAL record payload bytes */

/* Checks one series: label count, names, UTF-8 values, no duplicate names, at least one non-empty value. */
int ts__series_check(const cm_series *s, cm_err *err);

/* ---- chunks (ts_chunk.c, format documented there) ------------------------------------------------- */

#define TS__CHUNK_SAMPLES 120                  /* a head chunk closes at this many samples */
#define TS__CHUNK_SPAN_MS (2 * 3600 * 1000LL)  /* or when it would span this long */

/* Gorilla encoder state; buf holds nbits bits. Caller embeds it (_init/_close). */
typedef struct ts__enc {
	uint8_t *buf;
	uint32_t cap;
	uint32_t nbits;
	uint32_t n;
	uint8_t lead, trail;  /* current XOR window; lead = 0xff before the first */
	int64_t mint, t;
	uint64_t delta, v;
} ts__enc;

void ts__enc_init(ts__enc *e);
void ts__enc_close(ts__enc *e);
/* Appends one sample; t must be after the previous one. Fails only with CM_ENOMEM. */
int ts__enc_append(ts__enc *e, int64_t t, double v);
static inline size_t ts__enc_bytes(const ts__enc *e) { return ((size_t)e->nbits + 7) / 8; }

/* Decoder over untrusted bytes: n samples are expected in nbytes. */
typedef struct ts__dec {
	const uint8_t *p;
	uint64_t nbits, pos;
	uint32_t n, i;
	uint8_t lead, trail;
	uint64_t t, delta, v;
} ts__dec;

void ts__dec_init(ts__dec *d, const uint8_t *p, size_t nbytes, uint32_t n);
/* 1 and *out set for the next sample, 0 at the end, CM_ECORRUPT for a malformed chunk. */
int ts__dec_next(ts__dec *d, cm_sample *out);

/* ---- head (ts_head.c) ------------------------------------------------------------------------------ */

typedef struct ts__head ts__head;
typedef struct ts__series ts__series;

#define TS__DEFAULT_OOO_MS (10 * 60 * 1000LL)

int ts__head_create(int64_t ooo_window_ms, ts__head **out);
void ts__head_destroy(ts__head *h);
/* Copies the non-empty labels of a checked series into out (TS__MAX_LABELS entries), sorted by name. */
size_t ts__labels_canon(const cm_label *in, size_t n, cm_label *out);
/* Orders canonical label sets label by label (name, then value); a prefix sorts first. */
int ts__labels_cmp(const cm_label *a, size_t na, const cm_label *b, size_t nb);
/* Finds the series with canonical labels l, creating it (and its id) if needed. CM_ENOMEM only. */
int ts__head_get(ts__head *h, const cm_label *l, size_t n, ts__series **out);
/* The series with id, or NULL. */
ts__series *ts__head_find(ts__head *h, uint64_t id);
uint64_t ts__series_id(const ts__series *s);
const cm_label *ts__series_labels(const ts__series *s, size_t *n);
/* Whether a WAL record defining the series has been written (then later records may use its id). */
int ts__series_logged(const ts__series *s);
void ts__series_set_logged(ts__series *s);
/* Adds samples in any order: newer ones are appended, older ones within the out-of-order window are
 * inserted, older ones beyond it are rejected and duplicates of a present timestamp ignored (both
 * counted). Takes the series' shard lock. Fails only with CM_ENOMEM. */
int ts__head_add(ts__head *h, ts__series *s, const cm_sample *x, size_t n);
/* Replay: defines series id with canonical labels l; dry only checks. CM_ECORRUPT when the id is
 * taken by other labels. */
int ts__head_define(ts__head *h, uint64_t id, const cm_label *l, size_t n, int dry);
/* Replay: adds samples to series id; dry only checks it exists (CM_ECORRUPT when not). */
int ts__head_add_id(ts__head *h, uint64_t id, const cm_sample *x, size_t n, int dry);
/* Calls fn for matching series in label-set order under the read locks; returns fn's non-zero value. */
int ts__head_select(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		    void *ctx);
void ts__head_stats(ts__head *h, ts_stats *st);
/* Query pieces for ts_select over head and blocks: take every shard's read lock, collect the matching
 * series with samples in [mint, maxt] in label-set order (*out malloc'd), read one series' samples. */
void ts__head_rdlock(ts__head *h);
void ts__head_unlock(ts__head *h);
int ts__head_collect(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt,
		     ts__series ***out, size_t *nout);
/* Decodes the samples of s overlapping [mint, maxt] into *buf; [*lo, *hi) are those inside. */
int ts__series_read(const ts__series *s, int64_t mint, int64_t maxt, cm_sample **buf, size_t *cap, size_t *lo,
		    size_t *hi);

/* Snapshots for cutting blocks: copies of every chunk of every series with samples, sorted by labels. */
typedef struct ts__snap_chunk {
	const uint8_t *orig;  /* the head's chunk, NULL for the open one */
	uint8_t *data;
	uint32_t len, n;
	int64_t mint, maxt;
} ts__snap_chunk;

typedef struct ts__snap_series {
	ts__series *s;
	const cm_label *labels;  /* the head's, valid while the db is open */
	size_t nlabels;
	uint64_t id;
	ts__snap_chunk *chunks;
	uint32_t nchunks;
	uint32_t open_n;
	int64_t open_t;
} ts__snap_series;

typedef struct ts__snap {
	ts__snap_series *s;
	size_t n;
} ts__snap;

/* Marks every series as not yet defined in the WAL (after a roll, so new segments define them again). */
void ts__head_unlog_all(ts__head *h);
int ts__head_snapshot(ts__head *h, ts__snap *out);
void ts__snap_free(ts__snap *sn);
/* Decodes the samples of a snapshot series' chunks that overlap [lo, hi] into *buf (replacing its
 * contents, *len samples; the first and last chunk may hold some outside). */
int ts__snap_samples(const ts__snap_series *ss, int64_t lo, int64_t hi, cm_sample **buf, size_t *len,
		     size_t *cap);
/* Frees the snapshotted chunks that end before `before` (with all, also an unchanged open chunk) from the
 * head, and the snapshot's copies of them. */
void ts__head_drop(ts__head *h, ts__snap *sn, int64_t before, int all);

/* ---- sample frames (ts_frame.c, format documented there) ------------------------------------------ */

#define TS__ZSTD_LEVEL 3          /* blocks cut from the head */
#define TS__ZSTD_LEVEL_COMPACT 19 /* compacted blocks: written once, off the ingest path */
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
/* Appends the frame of n >= 1 samples (strictly increasing in time) to out, choosing the encoding that
 * is smallest after zstd with zc. CM_ENOMEM only. */
int ts__frame_encode(const cm_sample *x, size_t n, ZSTD_CCtx *zc, cm_buf *out);
/* Decodes a frame of exactly n samples into out; CM_ECORRUPT for anything malformed. */
int ts__frame_decode(const uint8_t *p, size_t len, uint32_t n, cm_sample *out);

/* ---- blocks (ts_block.c, formats documented there) ------------------------------------------------ */

typedef struct ts__block ts__block;

typedef struct ts__block_meta {
	int64_t mint, maxt;  /* inclusive */
	uint64_t series, samples;
	uint32_t level;          /* 1 = cut from the head, +1 per compaction */
	uint32_t resolution_ms;  /* 0 = raw */
} ts__block_meta;

/* One series to write: canonical labels and where the caller finds its samples. */
typedef struct ts__bw_series {
	const cm_label *labels;
	size_t nlabels;
	void *src;
} ts__bw_series;

/* Gives the samples of s for the block (strictly increasing in time; none = the series is left out);
 * *x stays valid until the next call. */
typedef int (*ts__bw_fetch)(void *ctx, const ts__bw_series *s, const cm_sample **x, size_t *n);

/* Where one series of a block keeps its samples. */
typedef struct ts__bseries {
	uint64_t off;
	uint32_t clen, rawlen, n;
	int64_t mint, maxt;
	uint32_t crc;
} ts__bseries;

/* Writes a block of series sorted by label set into blocks_dir/<name>; m gives level and resolution
 * and gets the time range and counts. name is "" (and nothing written) when no series had samples. */
int ts__block_write(const char *blocks_dir, const ts__bw_series *s, size_t n, ts__bw_fetch fetch, void *ctx,
		    ts__block_meta *m, int no_fsync, char *name, size_t name_cap, cm_err *err);
/* Opens and validates a block directory; CM_ECORRUPT names the file and offset. */
int ts__block_open(const char *path, ts__block **out, cm_err *err);
void ts__block_close(ts__block *b);
const ts__block_meta *ts__block_meta_get(const ts__block *b);
const char *ts__block_path(const ts__block *b);
uint64_t ts__block_nseries(const ts__block *b);
uint64_t ts__block_bytes(const ts__block *b);
/* The numbers (in label-set order) of the series matching every matcher; *out is malloc'd. */
int ts__block_select(ts__block *b, const ts_matcher *m, size_t nm, uint64_t **out, size_t *nout, cm_err *err);
/* Labels (pointing into the block, valid while it is open; TS__MAX_LABELS room) and location of series i. */
int ts__block_series(ts__block *b, uint64_t i, cm_label *labels, size_t *nlabels, ts__bseries *info,
		     cm_err *err);
/* What one reading thread reuses from series to series: a zstd context, the compressed and raw frame. */
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
typedef struct ts__rdbuf {
	ZSTD_DCtx *dz;
	uint8_t *z, *raw;
	size_t zcap, rawcap;
} ts__rdbuf;

void ts__rdbuf_free(ts__rdbuf *rb);
/* Appends the series' samples to a growable array; rb may be NULL (buffers for this call only). */
int ts__block_samples(ts__block *b, const ts__bseries *info, ts__rdbuf *rb, cm_sample **buf, size_t *len,
		      size_t *cap, cm_err *err);
int ts__fsync_dir(const char *path);
/* Calls fn with every value of label name in the block (from the postings table, no series read). */
int ts__block_label_values(ts__block *b, const char *name, ts_value_fn fn, void *ctx, cm_err *err);
/* A number that tells this block from every other (from its unique directory name). */
uint64_t ts__block_uid(const ts__block *b);

/* ---- cache of decoded block series (ts_cache.c) ---------------------------------------------------- */

typedef struct ts__cache ts__cache;
typedef struct ts__centry ts__centry;

/* max_bytes 0 = cache nothing. */
int ts__cache_create(uint64_t max_bytes, ts__cache **out);
void ts__cache_destroy(ts__cache *c);
/* The samples of block b's series info, from the cache or read and decoded; *out is held (shared,
 * read-only) until ts__cache_release. */
int ts__cache_get(ts__cache *c, ts__block *b, const ts__bseries *info, ts__rdbuf *rb, ts__centry **out,
		  cm_err *err);
const cm_sample *ts__centry_samples(const ts__centry *e, size_t *n);
void ts__cache_release(ts__cache *c, ts__centry *e);
void ts__cache_stats(ts__cache *c, ts_stats *st);

/* ---- write-ahead log (ts_wal.c) -------------------------------------------------------------------- */

typedef struct ts__wal ts__wal;

/* Receives the valid records during replay, in WAL order. Each record is first offered with dry = 1
 * (check only: CM_ECORRUPT rejects it) and then, when every part passed, applied with dry = 0. */
typedef struct ts__replay_ops {
	void *ctx;
	int (*batch)(void *ctx, const cm_series *s);  /* version 1 batch, one series at a time */
	int (*define)(void *ctx, uint64_t id, const cm_label *l, size_t n, int dry);
	int (*samples)(void *ctx, uint64_t id, const cm_sample *x, size_t n, int dry);
} ts__replay_ops;

#define TS__REC_SERIES 2
#define TS__REC_SAMPLES 3

/* Replays <dir>/wal into ops, repairing torn or corrupt tails, then opens a fresh segment for appends. */
int ts__wal_open(const char *dir, const ts_opts *opts, const ts__replay_ops *ops, ts_open_report *rep,
		 ts__wal **out, cm_err *err);
void ts__wal_close(ts__wal *w);
/* Record encoding: begin (header placeholder), put entries of the record's type, end (length, CRC). */
int ts__wal_begin(cm_buf *out, uint8_t type, size_t *start);
int ts__wal_put_series(cm_buf *out, uint64_t id, const cm_label *l, size_t n);
int ts__wal_put_samples(cm_buf *out, uint64_t id, const cm_sample *x, size_t n);
int ts__wal_end(cm_buf *out, size_t start, cm_err *err);
/* Writes one encoded record; *seq numbers it among the records written since open (1, 2, ...). */
int ts__wal_write(ts__wal *w, const uint8_t *rec, size_t n, uint64_t *seq, cm_err *err);
/* Returns once every record up to seq is on stable storage, sharing fsyncs between callers. */
int ts__wal_sync(ts__wal *w, uint64_t seq, cm_err *err);
void ts__wal_stats(ts__wal *w, uint64_t *fsyncs, uint64_t *bytes);
/* Starts a new segment now (unless the current one is empty); *seg is its number: everything written
 * before lies in lower-numbered segments. */
int ts__wal_cut(ts__wal *w, uint32_t *seg, cm_err *err);
/* A checkpoint being written (to <wal>/checkpoint.tmp, header first): a cut puts complete version 2
 * records into it piece by piece, so its memory does not grow with the head, then ts__wal_truncate
 * installs it. */
typedef struct ts__ckpt {
	ts__wal *w;
	int fd;
	uint64_t len;  /* bytes written, the header included */
} ts__ckpt;

int ts__ckpt_open(ts__wal *w, ts__ckpt *ck, cm_err *err);
int ts__ckpt_put(ts__ckpt *ck, const uint8_t *p, size_t n, cm_err *err);
/* Closes the file (a checkpoint not installed stays checkpoint.tmp, which nothing reads). */
void ts__ckpt_close(ts__ckpt *ck);
/* Removes the segments below seg, first installing ck (when it holds records) as segment seg - 1 in their
 * place, atomically: a checkpoint segment, which supersedes every lower-numbered one, so what a crash
 * midway leaves of them is removed at the next open, never replayed (docs/tsdb-wal.md, Checkpoints).
 * Closes ck. */
int ts__wal_truncate(ts__wal *w, uint32_t seg, ts__ckpt *ck, cm_err *err);

/* ---- the database (ts_db.c open/append, ts_cut.c blocks, ts_query.c select) ------------------------ */

#define TS__BLOCK_MS (2 * 3600 * 1000LL)  /* blocks cover aligned 2 h windows */

struct ts_db {
	char *dir;
	ts_opts opts;
	int64_t ooo_ms;
	ts__head *head;
	ts__wal *wal;
	int lock_fd;
	pthread_mutex_t pub_mu;
	pthread_cond_t pub_cv;
	uint64_t published;  /* highest WAL record number handed to the head (or given up on) */
	atomic_uint_least64_t appends;
	pthread_rwlock_t barrier;   /* appends hold it shared; a cut takes it exclusively to snapshot */
	pthread_rwlock_t blocks_lock;
	ts__block **blocks;         /* sorted by mint */
	ts__cache *cache;           /* decoded block series (ts_cache.c) */
	size_t nblocks;
	pthread_mutex_t cut_mu;     /* one cut or compaction at a time */
	atomic_int_least64_t maxt;  /* newest sample time appended */
	atomic_int_least64_t mint;  /* oldest sample time appended since the last cut (about) */
	atomic_int_least64_t cut_before; /* the head holds nothing before this that is not also in blocks */
	atomic_int compact_all;          /* set by ts_flush: the next compaction merges every day, the head's
	                                  * current one too (else only days the head no longer writes into) */
	pthread_t storage;          /* cuts blocks in the background */
	int storage_started;
	pthread_mutex_t st_mu;
	pthread_cond_t st_cv;
	pthread_cond_t st_done;     /* the storage thread finished a round's cut (st_gen counts them) */
	uint64_t st_gen;
	int64_t st_cut_to;          /* the boundary its last cut tried; cut_before below it: that cut failed */
	int st_stop, st_wake;
	cm_err st_err;              /* the background thread's last failure */
	atomic_uint_least64_t cuts, blocks_written, compactions, blocks_dropped;
};

/* Opens every block under <dir>/blocks (skipping and reporting bad ones). */
int ts__blocks_load(ts_db *db, ts_open_report *rep, cm_err *err);
void ts__blocks_unload(ts_db *db);
/* Cuts the head: samples before `before` into blocks (INT64_MAX = everything), the rest into a WAL
 * checkpoint, then drops what the blocks now hold from the head. */
int ts__cut(ts_db *db, int64_t before, cm_err *err);
/* Adds an open block to the list (ts_cut.c). */
int ts__blocks_add(ts_db *db, ts__block *b);
/* Writes the downsampled tiers of a raw block of a whole day and adds them (ts_tier.c). */
int ts__tiers_write(ts_db *db, ts__block *raw, cm_err *err);
/* ts_select over the blocks of one resolution (0 = raw blocks and the head) (ts_query.c). */
int ts__select_res(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t res,
		   ts_series_fn fn, void *ctx);
/* Merges the blocks of each 24 h window the head no longer writes into (ts_compact.c). */
int ts__compact(ts_db *db, cm_err *err);
/* Drops whole blocks past the retention age or over the retention size (ts_compact.c). */
void ts__retain(ts_db *db);
void ts__blocks_sort(ts_db *db);
int ts__storage_start(ts_db *db, cm_err *err);
void ts__storage_wake(ts_db *db);
void ts__storage_stop(ts_db *db);
/* Wakes the storage thread when the head has a whole window past the out-of-order window to cut. */
void ts__storage_poke(ts_db *db, int64_t mint, int64_t maxt);
/* Holds an append back until the storage thread's next cut while the head has more than one whole
 * window to cut: appends faster than cuts cannot grow the head without bound. Not while the last cut
 * failed (nor for the compaction after a cut). Never holds a lock. */
void ts__storage_throttle(ts_db *db);

/* Index of the first sample at or after t in a time-ordered array (ts_head.c). */
size_t ts__samples_lower(const cm_sample *x, size_t n, int64_t t);

#endif
