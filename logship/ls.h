/* ls.h -- corral's log library: container log parsers and the tailer (agent side), the log store and
 * LogQL (aggregator side).
 *
 * The one public header of logship/. Four parts:
 *
 *  - Line parsers for the two container log formats on a node: CRI ("<RFC3339Nano> <stdout|stderr>
 *    <P|F> <msg>", containerd and CRI-O) and docker json-file ({"log":"...\n","stream":..,"time":..}).
 *    They never allocate except the docker parser's scratch buffer and never print; bad lines are
 *    rejected with CM_EPROTO. Partial pieces (CRI "P", docker "log" without a trailing newline) are
 *    joined into records by the tailer.
 *
 *  - The tailer (ls_tail): discovers container log files under a log root, reads what is new in large
 *    blocks, joins partial pieces, follows kubelet rename rotation and copytruncate, and keeps its
 *    positions in sqlite3. Positions move only when the caller commits a batch it has had acknowledged,
 *    so a crash of the agent or of the aggregator re-reads at most the unacknowledged lines and never
 *    loses or duplicates one (docs/logs.md explains the two-offset position that makes this exact).
 *    ls_tail_read and ls_tail_commit do file I/O and sqlite writes, so a libuv agent calls them from a
 *    worker (uv_queue_work); they serialise on an internal mutex. ls_tail_fd is an inotify descriptor
 *    the loop can poll to learn that there is something new.
 *
 *  - The log store (ls_store): durable appends of label-set streams, zstd blocks, a sqlite3 index.
 *
 *  - LogQL (ls_query): a parser and an evaluator over the store.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LS_H
#define LS_H

#include <stddef.h>
#include <stdint.h>

#include "cm.h"

/* ---- line parsers ----------------------------------------------------------------------------------- */

enum { LS_STDOUT = 0, LS_STDERR = 1 };

/* One physical line of a container log, newline excluded. */
typedef struct ls_line {
	int64_t ts_ns;     /* Unix nanoseconds */
	int stream;        /* LS_STDOUT or LS_STDERR */
	int partial;       /* 1: a piece of a longer record, more pieces follow on this stream */
	const char *msg;   /* CRI: points into the input; docker: into the scratch buffer */
	size_t len;
} ls_line;

/* RFC 3339 with an optional fraction of 1-9 digits and "Z" or a numeric offset, e.g.
 * "2024-05-01T10:00:00.123456789Z"; years 1970-9999. 0 or CM_EPROTO. */
int ls_parse_time(const char *s, size_t n, int64_t *ns);
/* A CRI line: "<time> <stdout|stderr> <P|F>[:tags] <msg>" (the message may be empty, the space before it
 * is then optional). 0 or CM_EPROTO; *out written only on success. */
int ls_cri_parse(const char *p, size_t n, ls_line *out);
/* A docker json-file line. The decoded "log" string goes into scratch (reset first); a log without a
 * trailing newline is a partial piece, the newline is not part of msg. 0, CM_EPROTO or CM_ENOMEM. */
int ls_docker_parse(const char *p, size_t n, cm_buf *scratch, ls_line *out);

/* ---- tailer ----------------------------------------------------------------------------------------- */

typedef struct ls_tail ls_tail;

typedef struct ls_tail_opts {
	const char *log_root;        /* prefix of /var/log/{pods,containers}; "" = the host */
	const char *db_path;         /* sqlite3 positions file, created if missing */
	size_t max_line;             /* a record longer than this is truncated and counted; 0 = 256 KiB */
	size_t read_block;           /* bytes per read(2); 0 = 1 MiB; raised to at least 2 * max_line */
	size_t max_unacked_bytes;    /* back-pressure: stop reading past this; 0 = 32 MiB */
	int64_t rotate_wait_ms;      /* keep a rotated file open this long after its end; < 0 = 0; 0 = 5 s */
	int64_t rescan_ms;           /* rescan the directories at least this often; 0 = every read */
	int no_inotify;              /* polling only */
} ls_tail_opts;

/* Where a record came from; the strings live as long as the batch. */
typedef struct ls_source {
	const char *namespace_;
	const char *pod;
	const char *pod_uid;
	const char *container;
	const char *container_id;  /* "" when only the /var/log/pods path was seen */
	const char *path;
} ls_source;

typedef struct ls_record {
	int64_t ts_ns;      /* of the record's first piece */
	uint32_t source;    /* index into ls_batch.sources */
	uint8_t stream;     /* LS_STDOUT or LS_STDERR */
	uint8_t truncated;  /* longer than max_line, cut there */
	const char *line;   /* the joined message, not NUL-terminated */
	size_t len;
} ls_record;

/* What one ls_tail_read produced. Caller-embedded: ls_batch_init before the first read, ls_batch_close
 * after the last; each read resets it. */
typedef struct ls_batch {
	uint64_t id;              /* pass to ls_tail_commit once the aggregator acknowledged these records */
	uint64_t replay_seq;      /* nonzero: a batch staged before a restart, to be sent again as this seq */
	ls_record *records;
	size_t nrecords;
	ls_source *sources;
	size_t nsources;
	size_t bytes;             /* sum of record lengths */
	int more;                 /* the read stopped at its budget (max_bytes, max_records): more may wait */
	/* private */
	size_t cap_records, cap_sources;
	cm_arena arena;
} ls_batch;

typedef struct ls_tail_stats {
	uint64_t files;            /* open files, rotated ones still draining included */
	uint64_t records, bytes;   /* emitted since open */
	uint64_t truncated;        /* records cut at max_line */
	uint64_t bad_lines;        /* lines neither parser accepted (skipped, counted) */
	uint64_t rotations, truncations;  /* renames and copytruncates followed */
	uint64_t inode_reuses;            /* a deleted rotated file's inode came back as a new file */
	uint64_t unacked_bytes;
	uint64_t committed_batch;
} ls_tail_stats;

int ls_tail_open(const ls_tail_opts *opts, ls_tail **out, cm_err *err);
void ls_tail_close(ls_tail *t);
/* inotify descriptor (readable when a watched directory or file changed), or -1 when polling. */
int ls_tail_fd(const ls_tail *t);
/* Reads what is new, up to about max_bytes of records and max_records records (0 = no limit), into b.
 * Returns 0 (b->nrecords may be 0: nothing new), CM_AGAIN when back-pressure holds reading (commit
 * first), or a negative error. Never blocks on anything but local file reads. */
int ls_tail_read(ls_tail *t, ls_batch *b, size_t max_bytes, size_t max_records);
/* Makes the positions after batch `id` (and every batch before it) durable in sqlite. A batch the
 * caller drops for good (spool overflow) is committed too; its lines are then lost and counted there. */
int ls_tail_commit(ls_tail *t, uint64_t id);
/* Exactly once across agent crashes: call before sending batch `id` as wire sequence number `seq`
 * (one sqlite transaction). After a crash between the aggregator's ack and ls_tail_commit, the first
 * reads after ls_tail_open return the staged batches again, in seq order, with the same records and
 * b->replay_seq = seq: send each as that seq (a batch of its own) and the aggregator's (node, boot, seq)
 * dedupe stores it once whether or not it had been stored. Without staging, a crash in that window
 * ships the batch's records twice. */
int ls_tail_stage(ls_tail *t, uint64_t id, uint64_t seq);
void ls_tail_stats_get(ls_tail *t, ls_tail_stats *out);

void ls_batch_init(ls_batch *b);
void ls_batch_close(ls_batch *b);

/* ---- log store (aggregator side) -------------------------------------------------------------------- */

/* A directory of zstd-compressed per-stream blocks with a sqlite3 index and a write-ahead log
 * (ls_store.c documents the formats). ls_store_append returns after the entries are fsynced; a retried
 * append with the same (origin, seq) is a no-op, so replays are idempotent. Thread safety: every call
 * may come from any thread; they serialise on one mutex (queries block appends while they read). */

typedef struct ls_store ls_store;

typedef struct ls_store_opts {
	const char *dir;             /* created if missing */
	size_t block_bytes;          /* a stream's head is cut into a block past this; 0 = 256 KiB */
	uint64_t wal_bytes;          /* past this, every head is cut and the WAL starts over; 0 = 64 MiB */
	uint64_t chunk_file_bytes;   /* chunk files roll over past this; 0 = 64 MiB */
	int64_t retention_ms;        /* 0 = keep forever */
	uint64_t retention_bytes;    /* chunk files on disk; 0 = no limit */
	int zstd_level;              /* 0 = 1 */
	int no_fsync;                /* tests and benchmarks only */
} ls_store_opts;

typedef struct ls_entry {
	int64_t ts_ns;
	const char *line;
	size_t len;
} ls_entry;

/* One stream's entries: labels name the stream (names valid, unique; order free). */
typedef struct ls_push_stream {
	const cm_label *labels;
	size_t nlabels;
	const ls_entry *entries;
	size_t nentries;
} ls_push_stream;

/* What a query sees of a stream: labels sorted by name, and the Loki stream string {a="b", ...}. */
typedef struct ls_stream_info {
	uint64_t id;
	const cm_label *labels;
	size_t nlabels;
	const char *key;
	int64_t min_ns, max_ns;  /* time range of its entries (INT64_MAX, INT64_MIN when none) */
} ls_stream_info;

typedef struct ls_store_stats {
	uint64_t streams, entries, bytes;   /* appended since open (bytes of lines) */
	uint64_t blocks, disk_bytes;        /* blocks written since open; chunk file bytes now */
	uint64_t duplicates;                /* appends skipped as replays */
	uint64_t wal_replayed;              /* entries replayed at open */
	uint64_t wal_truncated;             /* bytes of a torn WAL tail cut off at open */
} ls_store_stats;

int ls_store_open(const ls_store_opts *opts, ls_store **out, cm_err *err);
void ls_store_close(ls_store *s);
/* Durable append. origin/seq (origin may be NULL: no dedupe) make a retry of the same batch a no-op:
 * an append whose seq origin's window holds (cm_seqwin: stored already, or at most its floor) returns 0
 * and stores nothing. Seqs may come out of order (a sender with several batches in flight). */
int ls_store_append(ls_store *s, const char *origin, uint64_t seq, const ls_push_stream *streams, size_t n,
		    cm_err *err);
/* Streams whose range overlaps [start_ns, end_ns]; fn returns nonzero to stop (that value is returned). */
typedef int (*ls_stream_fn)(void *arg, const ls_stream_info *st);
int ls_store_streams(ls_store *s, int64_t start_ns, int64_t end_ns, ls_stream_fn fn, void *arg);
/* Entries of the streams `want` accepts, with start_ns <= t <= end_ns, per stream in append order. */
typedef int (*ls_want_fn)(void *arg, const ls_stream_info *st);
typedef int (*ls_entry_fn)(void *arg, const ls_stream_info *st, int64_t ts_ns, const char *line, size_t len);
int ls_store_select(ls_store *s, int64_t start_ns, int64_t end_ns, ls_want_fn want, void *warg, ls_entry_fn fn,
		    void *farg);
/* Applies retention (age, then size) relative to now_ms; also called by append now and then. */
int ls_store_retain(ls_store *s, int64_t now_ms);
void ls_store_stats_get(ls_store *s, ls_store_stats *out);

/* ---- LogQL (a subset) over the store ----------------------------------------------------------------- */

/* Parsed query (ls_logql.c has the grammar): stream selector {a="b", c=~"re"}, line filters |= != |~ !~,
 * parsers | json and | logfmt, label filters | name op value (= != =~ !~, and > >= < <= == != on
 * numbers), | line_format "{{.name}}", and the metric forms count_over_time, rate, bytes_over_time,
 * bytes_rate over [range], optionally inside sum [by (labels)]. */
typedef struct ls_query ls_query;

int ls_logql_parse(const char *q, ls_query **out, cm_err *err);
void ls_logql_free(ls_query *q);
int ls_logql_is_metric(const ls_query *q);
/* A label set in Loki's stream form {a="b", c="d"} (as Loki's protobuf push carries it), into arena memory. */
int ls_labels_parse(const char *s, cm_arena *a, cm_label **out, size_t *n, cm_err *err);
/* Whether a stream's labels satisfy the query's selector (for series and tail). */
int ls_logql_matches(const ls_query *q, const cm_label *labels, size_t n);

typedef struct ls_qentry {
	int64_t ts_ns;
	const char *line;
	size_t len;
} ls_qentry;

typedef struct ls_qstream {
	cm_label *labels;  /* sorted by name */
	size_t nlabels;
	ls_qentry *entries;
	size_t nentries;
} ls_qstream;

typedef struct ls_qpoint {
	int64_t t_ns;
	double v;
} ls_qpoint;

typedef struct ls_qseries {
	cm_label *labels;
	size_t nlabels;
	ls_qpoint *points;
	size_t npoints;
} ls_qseries;

typedef struct ls_qlimits {
	size_t limit;            /* log queries: entries returned; 0 = 100 */
	int forward;             /* log queries: oldest first (default newest first, Loki's "backward") */
	size_t max_scanned;      /* entries read from the store before the query fails; 0 = 5,000,000 */
	size_t max_series;       /* result streams or series; 0 = 10,000 */
	size_t max_points;       /* steps of a metric query; 0 = 11,000 (Loki's limit) */
} ls_qlimits;

typedef struct ls_qresult {
	int metric;               /* 1: series (matrix/vector), 0: streams */
	ls_qstream *streams;
	size_t nstreams;
	ls_qseries *series;
	size_t nseries;
	uint64_t scanned_entries, scanned_bytes;
	cm_arena arena;           /* everything above lives here */
} ls_qresult;

/* Runs q over [start_ns, end_ns]; metric queries evaluate at start, start + step, ... <= end (step 0:
 * only at end, an instant query). CM_E2BIG when a limit is hit, CM_EINVAL for bad arguments. */
int ls_logql_exec(ls_store *s, const ls_query *q, int64_t start_ns, int64_t end_ns, int64_t step_ns,
		  const ls_qlimits *lim, ls_qresult *out, cm_err *err);
void ls_qresult_close(ls_qresult *r);

#endif
