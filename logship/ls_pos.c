/* ls_pos.c -- the tailer's positions in sqlite3: one row per file it has shipped lines of.
 *
 * Written only by ls_tail_commit, i.e. only after the aggregator acknowledged the batch holding the lines
 * up to that position; read once at ls_tail_open. synchronous=FULL with a write-ahead log (files
 * <db>-wal and <db>-shm next to it): each commit is one append and one fsync of the -wal file, so a
 * committed position survives power loss (a rollback journal took three syncs and a file made and
 * deleted per commit: 0.8 instead of 0.25 ms, two commits per 4 MiB agent batch). Never called on an
 * event-loop thread (ls.h).
 *
 * Schema, version 1 (PRAGMA user_version = 1):
 *
 *   CREATE TABLE ls_pos(dev INTEGER, ino INTEGER,  -- the file's identity (st_dev, st_ino)
 *                       fp_len INTEGER, fp INTEGER, -- CRC32C of its first fp_len (<= 256) bytes
 *                       path TEXT,                  -- where it was last seen (rotation search)
 *                       resume_off INTEGER,         -- reading restarts at this byte
 *                       done_off INTEGER,           -- records ending at or before it were shipped
 *                       PRIMARY KEY(dev, ino))
 *
 * A row matches a file when dev and ino are equal and the file's first fp_len bytes have that CRC (an
 * inode reused by a new file does not match and is read from its start).
 *
 *   CREATE TABLE ls_inflight(seq INTEGER, dev INTEGER, ino INTEGER,  -- a staged batch: its wire seq and
 *                            resume_off INTEGER, done_off INTEGER)  -- each file's position after it
 *
 * ls_tail_stage writes a batch's rows before the batch is sent; ls_tail_commit deletes them in the same
 * transaction that moves ls_pos. Rows still there at open are batches that may or may not have been
 * stored: the tailer reads them again, up to those positions, and hands them out with the same seq so
 * the aggregator's (node, boot, seq) dedupe stores each exactly once.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ls_int.h"

struct ls__posdb {
	sqlite3 *db;
	sqlite3_stmt *upsert, *del, *stage, *unstage;
};

static const char schema[] =
	"PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	"CREATE TABLE IF NOT EXISTS ls_pos(dev INTEGER, ino INTEGER, fp_len INTEGER, fp INTEGER, path TEXT,"
	" resume_off INTEGER, done_off INTEGER, PRIMARY KEY(dev, ino));"
	"CREATE TABLE IF NOT EXISTS ls_inflight(seq INTEGER, dev INTEGER, ino INTEGER, resume_off INTEGER,"
	" done_off INTEGER, PRIMARY KEY(seq, dev, ino));"
	"PRAGMA user_version=1;";

int ls__posdb_open(const char *path, ls__posdb **out, cm_err *err)
{
	ls__posdb *p = calloc(1, sizeof(*p));
	if (!p)
		return cm_errf(err, CM_ENOMEM, "positions: out of memory");
	if (sqlite3_open_v2(path, &p->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    sqlite3_exec(p->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->db,
			       "INSERT OR REPLACE INTO ls_pos VALUES(?1,?2,?3,?4,?5,?6,?7)", -1, &p->upsert,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->db, "DELETE FROM ls_pos WHERE dev=?1 AND ino=?2", -1, &p->del, NULL) !=
		    SQLITE_OK ||
	    sqlite3_prepare_v2(p->db, "INSERT OR REPLACE INTO ls_inflight VALUES(?1,?2,?3,?4,?5)", -1, &p->stage,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->db, "DELETE FROM ls_inflight WHERE seq<=?1", -1, &p->unstage, NULL) != SQLITE_OK)
		goto fail;
	*out = p;
	return 0;
fail:
	cm_errf(err, CM_EIO, "positions %s: %s", path, p->db ? sqlite3_errmsg(p->db) : "cannot open");
	ls__posdb_close(p);
	return CM_EIO;
}

void ls__posdb_close(ls__posdb *p)
{
	if (!p)
		return;
	sqlite3_finalize(p->upsert);
	sqlite3_finalize(p->del);
	sqlite3_finalize(p->stage);
	sqlite3_finalize(p->unstage);
	sqlite3_close(p->db);
	free(p);
}

int ls__posdb_load(ls__posdb *p, ls__pos **rows, size_t *n)
{
	sqlite3_stmt *st = NULL;
	ls__pos *r = NULL;
	size_t cnt = 0, cap = 0;
	if (sqlite3_prepare_v2(p->db, "SELECT dev,ino,fp_len,fp,path,resume_off,done_off FROM ls_pos", -1, &st,
			       NULL) != SQLITE_OK)
		return CM_EIO;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			ls__pos *nr = realloc(r, (cap = cap ? cap * 2 : 16) * sizeof(*r));
			if (!nr)
				goto fail;
			r = nr;
		}
		ls__pos *x = &r[cnt++];
		memset(x, 0, sizeof(*x));
		x->dev = (uint64_t)sqlite3_column_int64(st, 0);
		x->ino = (uint64_t)sqlite3_column_int64(st, 1);
		x->fp_len = (uint32_t)sqlite3_column_int64(st, 2);
		x->fp = (uint32_t)sqlite3_column_int64(st, 3);
		const unsigned char *path = sqlite3_column_text(st, 4);
		snprintf(x->path, sizeof(x->path), "%s", path ? (const char *)path : "");
		x->resume_off = (uint64_t)sqlite3_column_int64(st, 5);
		x->done_off = (uint64_t)sqlite3_column_int64(st, 6);
		if (x->fp_len > LS__FP_MAX)
			cnt--; /* not a row we wrote: ignore it */
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	*rows = r;
	*n = cnt;
	return 0;
fail:
	sqlite3_finalize(st);
	free(r);
	return CM_EIO;
}

static int store_one(ls__posdb *p, const ls__pos *x)
{
	sqlite3_stmt *st = x->gone ? p->del : p->upsert;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)x->dev);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)x->ino);
	if (!x->gone) {
		sqlite3_bind_int64(st, 3, x->fp_len);
		sqlite3_bind_int64(st, 4, x->fp);
		sqlite3_bind_text(st, 5, x->path, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)x->resume_off);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)x->done_off);
	}
	return sqlite3_step(st) == SQLITE_DONE ? 0 : CM_EIO;
}

int ls__posdb_store(ls__posdb *p, const ls__pos *rows, size_t n, uint64_t unstage_upto)
{
	if (n == 0 && !unstage_upto)
		return 0;
	if (sqlite3_exec(p->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return CM_EIO;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++)
		rc = store_one(p, &rows[i]);
	if (!rc && unstage_upto) {
		sqlite3_reset(p->unstage);
		sqlite3_bind_int64(p->unstage, 1, (sqlite3_int64)unstage_upto);
		rc = sqlite3_step(p->unstage) == SQLITE_DONE ? 0 : CM_EIO;
	}
	if (rc || sqlite3_exec(p->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(p->db, "ROLLBACK", NULL, NULL, NULL);
		return CM_EIO;
	}
	return 0;
}

int ls__posdb_stage(ls__posdb *p, uint64_t seq, const ls__pos *rows, size_t n)
{
	if (sqlite3_exec(p->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return CM_EIO;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		sqlite3_stmt *st = p->stage;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)rows[i].dev);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)rows[i].ino);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)rows[i].resume_off);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)rows[i].done_off);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : CM_EIO;
	}
	if (rc || sqlite3_exec(p->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(p->db, "ROLLBACK", NULL, NULL, NULL);
		return CM_EIO;
	}
	return 0;
}

int ls__posdb_load_inflight(ls__posdb *p, ls__pos **rows, uint64_t **seqs, size_t *n)
{
	sqlite3_stmt *st = NULL;
	ls__pos *r = NULL;
	uint64_t *sq = NULL;
	size_t cnt = 0, cap = 0;
	if (sqlite3_prepare_v2(p->db, "SELECT seq,dev,ino,resume_off,done_off FROM ls_inflight ORDER BY seq", -1, &st,
			       NULL) != SQLITE_OK)
		return CM_EIO;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			ls__pos *nr = realloc(r, cap * sizeof(*r));
			uint64_t *ns = nr ? realloc(sq, cap * sizeof(*sq)) : NULL;
			if (nr)
				r = nr;
			if (!ns)
				goto fail;
			sq = ns;
		}
		memset(&r[cnt], 0, sizeof(r[cnt]));
		sq[cnt] = (uint64_t)sqlite3_column_int64(st, 0);
		r[cnt].dev = (uint64_t)sqlite3_column_int64(st, 1);
		r[cnt].ino = (uint64_t)sqlite3_column_int64(st, 2);
		r[cnt].resume_off = (uint64_t)sqlite3_column_int64(st, 3);
		r[cnt].done_off = (uint64_t)sqlite3_column_int64(st, 4);
		cnt++;
	}
	if (rc != SQLITE_DONE)
		goto fail;
	sqlite3_finalize(st);
	*rows = r, *seqs = sq, *n = cnt;
	return 0;
fail:
	sqlite3_finalize(st);
	free(r);
	free(sq);
	return CM_EIO;
}
