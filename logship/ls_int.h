/* ls_int.h -- logship internals shared between its files (and its unit tests and fuzz harnesses).
 *
 * Nothing here is part of the library's interface; ls.h is.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef LS_INT_H
#define LS_INT_H

#include <sys/types.h>

#include "ls.h"

/* ---- joiner (ls_join.c): partial pieces into records, per stream ------------------------------------ */

typedef struct ls__piece {
	int active;          /* a record is open on this stream */
	int truncated;
	int64_t ts_ns;       /* of the first piece */
	uint64_t start_off;  /* file offset of the first piece's line */
	cm_buf buf;
} ls__piece;

typedef struct ls__joiner {
	ls__piece s[2];
	size_t max_line;
} ls__joiner;

/* A completed record; msg points into the line or into the joiner, valid until the next feed. */
typedef struct ls__rec {
	int64_t ts_ns;
	int stream;
	int truncated;
	const char *msg;
	size_t len;
} ls__rec;

void ls__join_init(ls__joiner *j, size_t max_line);
void ls__join_close(ls__joiner *j);
void ls__join_reset(ls__joiner *j);
/* Feeds a parsed line that starts at file offset off; `truncated` says the physical line was cut.
 * Returns 1 and fills *out when it completes a record, 0 when it opened or extended one, CM_ENOMEM. */
int ls__join_feed(ls__joiner *j, const ls_line *l, uint64_t off, int truncated, ls__rec *out);
/* Where reading must resume so no open record loses a piece: the first open piece's offset, or off. */
uint64_t ls__join_resume(const ls__joiner *j, uint64_t off);

/* ---- paths (ls_path.c): what a log file's path says about its container ------------------------------ */

typedef struct ls__meta {
	char ns[256], pod[256], uid[128], container[256], container_id[128];
} ls__meta;

/* ".../var/log/pods/<ns>_<pod>_<uid>/<container>/<N>.log": 0 or CM_EINVAL. */
int ls__meta_from_pods_path(const char *path, ls__meta *m);
/* ".../var/log/containers/<pod>_<ns>_<container>-<id>.log": 0 or CM_EINVAL. */
int ls__meta_from_containers_path(const char *path, ls__meta *m);

/* ---- positions (ls_pos.c): sqlite3 table of file positions -------------------------------------------- */

typedef struct ls__pos {
	uint64_t dev, ino;
	uint32_t fp_len, fp;  /* CRC32C of the first fp_len bytes (head fingerprint) */
	uint64_t resume_off;  /* reading restarts here */
	uint64_t done_off;    /* records ending at or before this offset were shipped */
	char path[1024];
	int gone;             /* commit deletes the row */
} ls__pos;

typedef struct ls__posdb ls__posdb;

int ls__posdb_open(const char *path, ls__posdb **out, cm_err *err);
void ls__posdb_close(ls__posdb *db);
/* Every stored row, malloc'd array. */
int ls__posdb_load(ls__posdb *db, ls__pos **rows, size_t *n);
/* Upserts (or deletes, for gone) every row and drops staged batches with seq <= unstage_upto (0: none),
 * in one transaction, synced (synchronous=FULL). */
int ls__posdb_store(ls__posdb *db, const ls__pos *rows, size_t n, uint64_t unstage_upto);
/* Records the positions after a batch about to be sent as seq (ls_inflight). */
int ls__posdb_stage(ls__posdb *db, uint64_t seq, const ls__pos *rows, size_t n);
/* Every staged row, ordered by seq (malloc'd arrays, seqs parallel to rows). */
int ls__posdb_load_inflight(ls__posdb *db, ls__pos **rows, uint64_t **seqs, size_t *n);

#define LS__FP_MAX 256u

/* ---- JSON scanning (ls_parse.c), shared with LogQL's | json ----------------------------------------------- */

/* A JSON string at *p (its opening quote), decoded and appended to out (NULL: skipped); *p moves past it. */
int ls__json_string(const char **p, const char *end, cm_buf *out);
/* Any JSON value at *p (leading whitespace allowed); *p moves past it. 0 or CM_EPROTO. */
int ls__json_skip(const char **p, const char *end);

#endif
