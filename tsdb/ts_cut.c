/* ts_cut.c -- cutting the head into blocks, WAL checkpoints, the block list and the storage thread.
 *
 * A cut (ts__cut) runs off the ingest path: on the storage thread when the head holds a whole 2 h
 * window older than the out-of-order window, or in the caller of ts_flush. It takes the append barrier
 * exclusively for a moment: no append is between its WAL write and its publication then, so rolling the
 * WAL to a new segment R and copying every head chunk (ts__head_snapshot) see the same samples; every
 * series is marked undefined, so segments from R on define again the series they use. Outside the
 * barrier it writes the samples before `before` as one block per aligned 2 h window (ts_block.c),
 * publishes the blocks, frees the head chunks they hold and the snapshot's copies of them, then writes
 * the samples from `before` on (and their series) as a checkpoint that replaces the segments below R
 * (ts__wal_truncate), streamed to its file in pieces of CKPT_PIECE bytes: a cut's memory is the head's
 * chunks copied once, not the samples after `before` at 10 bytes each (a cut behind a fast import
 * finds millions of them). A crash at any point leaves data at least once: before the checkpoint the old
 * segments are still there (a replay puts into the head what a block also holds, and reads merge
 * duplicates).
 *
 * After each cut, and when ts_flush wakes it, the storage thread also compacts (ts_compact.c). It never
 * holds a lock an append waits for, except the barrier during the snapshot. An append that finds it more
 * than a whole window behind waits for its next cut (ts__storage_throttle; released before the
 * compaction that follows, and not at all while the last cut failed), so the head's memory is bounded by
 * a few windows, not by how far ahead of the cuts an import runs.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <ftw.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_int.h"

static int64_t floor_window(int64_t t)
{
	int64_t w = t / TS__BLOCK_MS * TS__BLOCK_MS;
	return w > t ? w - TS__BLOCK_MS : w;
}

/* ---- the block list -------------------------------------------------------------------------------- */

static int block_cmp(const void *a, const void *b)
{
	const ts__block_meta *x = ts__block_meta_get(*(ts__block *const *)a);
	const ts__block_meta *y = ts__block_meta_get(*(ts__block *const *)b);
	return x->mint < y->mint ? -1 : x->mint > y->mint;
}

void ts__blocks_sort(ts_db *db)
{
	qsort(db->blocks, db->nblocks, sizeof(*db->blocks), block_cmp);
}

/* Adds an open block to the list (readers see it from now on). */
int ts__blocks_add(ts_db *db, ts__block *b)
{
	pthread_rwlock_wrlock(&db->blocks_lock);
	ts__block **p = realloc(db->blocks, (db->nblocks + 1) * sizeof(*p));
	if (p) {
		db->blocks = p;
		db->blocks[db->nblocks++] = b;
		ts__blocks_sort(db);
	}
	pthread_rwlock_unlock(&db->blocks_lock);
	return p ? CM_OK : CM_ENOMEM;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void report_bad(ts_open_report *rep, const char *why)
{
	rep->bad_blocks++;
	if (!rep->first_problem[0])
		snprintf(rep->first_problem, sizeof(rep->first_problem), "%s", why);
}

static int blocks_dir(const ts_db *db, char *out, size_t cap, cm_err *err)
{
	snprintf(out, cap, "%s/blocks", db->dir);
	if (mkdir(out, 0755) != 0 && errno != EEXIST)
		return cm_errf(err, -errno, "creating %s: %s", out, strerror(errno));
	return CM_OK;
}

int ts__blocks_load(ts_db *db, ts_open_report *rep, cm_err *err)
{
	char dir[4200], path[4500];
	cm_err why;
	int rc = blocks_dir(db, dir, sizeof(dir), err);
	DIR *d = rc ? NULL : opendir(dir);
	if (!rc && !d)
		return cm_errf(err, -errno, "listing %s: %s", dir, strerror(errno));
	for (struct dirent *e; !rc && (e = readdir(d));) {
		size_t len = strlen(e->d_name);
		if (e->d_name[0] == '.' || (len > 8 && !strcmp(e->d_name + len - 8, ".corrupt")))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if ((len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) ||
		    (len > 8 && !strcmp(e->d_name + len - 8, ".deleted"))) { /* an unfinished write or removal */
			nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
			continue;
		}
		ts__block *b;
		int brc = ts__block_open(path, &b, &why);
		if (brc == CM_ECORRUPT) {
			report_bad(rep, why.msg);
			continue;
		}
		if (brc)
			rc = cm_errf(err, brc, "%s", why.msg);
		else if ((rc = ts__blocks_add(db, b)))
			ts__block_close(b);
		else {
			const ts__block_meta *m = ts__block_meta_get(b);
			rep->blocks++;
			if (floor_window(m->maxt) > atomic_load(&db->cut_before))
				atomic_store(&db->cut_before, floor_window(m->maxt));
		}
	}
	if (d)
		closedir(d);
	return rc;
}

void ts__blocks_unload(ts_db *db)
{
	for (size_t i = 0; i < db->nblocks; i++)
		ts__block_close(db->blocks[i]);
	free(db->blocks);
	db->blocks = NULL;
	db->nblocks = 0;
}

/* ---- writing blocks from a snapshot ---------------------------------------------------------------- */

typedef struct fetch_ctx {
	int64_t lo, hi;  /* inclusive */
	cm_sample *buf;
	size_t len, cap;
} fetch_ctx;

static int snap_fetch(void *ctx, const ts__bw_series *s, const cm_sample **x, size_t *n)
{
	fetch_ctx *f = ctx;
	int rc = ts__snap_samples(s->src, f->lo, f->hi, &f->buf, &f->len, &f->cap);
	if (rc)
		return rc;
	size_t a = ts__samples_lower(f->buf, f->len, f->lo);
	size_t b = f->hi == INT64_MAX ? f->len : ts__samples_lower(f->buf, f->len, f->hi + 1);
	*x = f->buf + a;
	*n = b > a ? b - a : 0;
	return CM_OK;
}

/* Writes, opens and publishes one block of the snapshot's samples in [lo, hi]. */
static int cut_window(ts_db *db, const ts__bw_series *in, size_t n, int64_t lo, int64_t hi, cm_err *err)
{
	char dir[4200], name[128], path[4400];
	fetch_ctx f = {lo, hi, NULL, 0, 0};
	ts__block_meta m = {.level = 1};
	ts__block *b;
	int rc = blocks_dir(db, dir, sizeof(dir), err);
	rc = rc ? rc : ts__block_write(dir, in, n, snap_fetch, &f, &m, db->opts.no_fsync, name, sizeof(name), err);
	free(f.buf);
	if (rc || !name[0])
		return rc;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((rc = ts__block_open(path, &b, err)))
		return rc;
	if ((rc = ts__blocks_add(db, b))) {
		ts__block_close(b);
		return cm_errf(err, rc, "out of memory");
	}
	atomic_fetch_add(&db->blocks_written, 1);
	return CM_OK;
}

/* The earliest time after `end` that may hold a sample of the snapshot (INT64_MAX when none). */
static int64_t next_time(const ts__snap *sn, int64_t end)
{
	int64_t next = INT64_MAX;
	for (size_t i = 0; i < sn->n; i++) {
		const ts__snap_series *ss = &sn->s[i];
		for (uint32_t j = 0; j < ss->nchunks; j++) {
			if (ss->chunks[j].maxt <= end)
				continue;
			int64_t t = ss->chunks[j].mint > end ? ss->chunks[j].mint : end + 1;
			next = t < next ? t : next;
			break;
		}
	}
	return next;
}

static int cut_blocks(ts_db *db, const ts__snap *sn, int64_t before, cm_err *err)
{
	int64_t mint = INT64_MAX, maxt = INT64_MIN;
	ts__bw_series *in = malloc((sn->n ? sn->n : 1) * sizeof(*in));
	if (!in)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	for (size_t i = 0; i < sn->n; i++) {
		const ts__snap_series *ss = &sn->s[i];
		in[i] = (ts__bw_series){ss->labels, ss->nlabels, (void *)ss};
		if (ss->nchunks) {
			mint = ss->chunks[0].mint < mint ? ss->chunks[0].mint : mint;
			maxt = ss->chunks[ss->nchunks - 1].maxt > maxt ? ss->chunks[ss->nchunks - 1].maxt : maxt;
		}
	}
	maxt = before != INT64_MAX && before - 1 < maxt ? before - 1 : maxt;
	int rc = CM_OK;
	for (int64_t w = mint <= maxt ? floor_window(mint) : INT64_MAX; !rc && w <= maxt;) {
		int64_t end = w > INT64_MAX - TS__BLOCK_MS ? INT64_MAX : w + TS__BLOCK_MS - 1;
		rc = cut_window(db, in, sn->n, w < mint ? mint : w, end > maxt ? maxt : end, err);
		if (end >= maxt)
			break;
		w = floor_window(next_time(sn, end)); /* skips empty windows */
	}
	free(in);
	return rc;
}

/* ---- the checkpoint -------------------------------------------------------------------------------- */

#define CKPT_PIECE (4u << 20) /* record bytes gathered before they go to the checkpoint file */

/* Ends the record that starts out (when it has entries) and writes it to the checkpoint; empties out. */
static int ckpt_piece(ts__ckpt *ck, cm_buf *out, size_t *entries, cm_err *err)
{
	int rc = *entries ? ts__wal_end(out, 0, err) : CM_OK;
	rc = rc || !*entries ? rc : ts__ckpt_put(ck, out->data, out->len, err);
	out->len = 0, *entries = 0;
	return rc;
}

/* One entry of a checkpoint record of type: the series' definition or its samples from `before` on.
 * Fills err except for CM_ENOMEM (ckpt_encode reports that once for all its steps). */
static int ckpt_entry(const ts__snap_series *ss, int type, int64_t before, cm_buf *out, cm_sample **buf,
		      size_t *cap, cm_err *err)
{
	size_t len;
	if (type == TS__REC_SERIES)
		return ts__wal_put_series(out, ss->id, ss->labels, ss->nlabels);
	int rc = ts__snap_samples(ss, before, INT64_MAX, buf, &len, cap);
	if (rc && rc != CM_ENOMEM)
		return cm_errf(err, rc, "decoding the head chunks of series %llu for the WAL checkpoint: %s",
			       (unsigned long long)ss->id, cm_strerror(rc));
	size_t a = rc ? 0 : ts__samples_lower(*buf, len, before);
	return rc ? rc : ts__wal_put_samples(out, ss->id, *buf + a, len - a);
}

/* Writes the series with samples from `before` on, then those samples, as version 2 records of about
 * CKPT_PIECE bytes each (every definition before the first samples record). */
static int ckpt_encode(const ts__snap *sn, int64_t before, ts__ckpt *ck, cm_err *err)
{
	cm_sample *buf = NULL;
	size_t cap = 0, start, entries = 0;
	cm_buf out;
	cm_buf_init(&out);
	int rc = CM_OK;
	for (int type = TS__REC_SERIES; type <= TS__REC_SAMPLES && !rc; type++) {
		rc = ts__wal_begin(&out, (uint8_t)type, &start);
		for (size_t i = 0; i < sn->n && !rc; i++) {
			const ts__snap_series *ss = &sn->s[i];
			if (!ss->nchunks || ss->chunks[ss->nchunks - 1].maxt < before)
				continue;
			rc = ckpt_entry(ss, type, before, &out, &buf, &cap, err);
			entries++;
			if (!rc && out.len >= CKPT_PIECE && !(rc = ckpt_piece(ck, &out, &entries, err)))
				rc = ts__wal_begin(&out, (uint8_t)type, &start);
		}
		rc = rc ? rc : ckpt_piece(ck, &out, &entries, err);
	}
	free(buf);
	cm_buf_close(&out);
	return rc == CM_ENOMEM ? cm_errf(err, rc, "out of memory encoding the WAL checkpoint") : rc;
}

/* ---- the cut --------------------------------------------------------------------------------------- */

static int cut_snapshot(ts_db *db, uint32_t *seg, ts__snap *sn, cm_err *err)
{
	pthread_rwlock_wrlock(&db->barrier);
	int rc = ts__wal_cut(db->wal, seg, err);
	if (!rc) {
		ts__head_unlog_all(db->head);
		if ((rc = ts__head_snapshot(db->head, sn)))
			cm_errf(err, rc, "out of memory taking a head snapshot");
	}
	pthread_rwlock_unlock(&db->barrier);
	return rc;
}

/* Once the blocks before `before` are published: frees what they hold from the head and the snapshot. */
static void cut_drop(ts_db *db, ts__snap *sn, int64_t before)
{
	ts__head_drop(db->head, sn, before, before == INT64_MAX);
	int64_t mark = before, maxt = atomic_load(&db->maxt);
	if (before == INT64_MAX) /* a flush: all is in blocks, but appends go on into the current window */
		mark = maxt == INT64_MIN ? INT64_MIN : floor_window(maxt);
	if (mark > atomic_load(&db->cut_before))
		atomic_store(&db->cut_before, mark);
	int64_t low = atomic_load(&db->mint); /* what is left in the head starts at `before` */
	while (low < before && !atomic_compare_exchange_weak(&db->mint, &low, before))
		;
}

int ts__cut(ts_db *db, int64_t before, cm_err *err)
{
	ts__snap sn = {0};
	ts__ckpt ck = {.fd = -1};
	uint32_t seg;
	pthread_mutex_lock(&db->cut_mu);
	int rc = cut_snapshot(db, &seg, &sn, err);
	rc = rc ? rc : cut_blocks(db, &sn, before, err);
	if (!rc)
		cut_drop(db, &sn, before);
	rc = rc ? rc : ts__ckpt_open(db->wal, &ck, err);
	rc = rc ? rc : ckpt_encode(&sn, before, &ck, err);
	rc = rc ? rc : ts__wal_truncate(db->wal, seg, &ck, err);
	ts__ckpt_close(&ck);
	if (!rc)
		atomic_fetch_add(&db->cuts, 1);
	pthread_mutex_unlock(&db->cut_mu);
	ts__snap_free(&sn);
	malloc_trim(0); /* the cut freed the snapshot and the head's older chunks: give the pages back */
	return rc;
}

/* ---- the storage thread ---------------------------------------------------------------------------- */

/* The window boundary the head may be cut at now, or INT64_MIN when nothing is due. */
static int64_t cut_due(ts_db *db)
{
	int64_t maxt = atomic_load(&db->maxt), mint = atomic_load(&db->mint);
	if (maxt == INT64_MIN || maxt < INT64_MIN + db->ooo_ms + TS__BLOCK_MS)
		return INT64_MIN;
	int64_t b = floor_window(maxt - db->ooo_ms);
	return b > atomic_load(&db->cut_before) && mint < b ? b : INT64_MIN;
}

static void *storage_run(void *arg)
{
	ts_db *db = arg;
	pthread_mutex_lock(&db->st_mu);
	while (!db->st_stop) {
		if (!db->st_wake)
			pthread_cond_wait(&db->st_cv, &db->st_mu);
		db->st_wake = 0;
		if (db->st_stop)
			break;
		int64_t b = cut_due(db);
		pthread_mutex_unlock(&db->st_mu);
		cm_err err = {{0}};
		int rc = b == INT64_MIN ? CM_OK : ts__cut(db, b, &err);
		pthread_mutex_lock(&db->st_mu); /* releases the appends waiting for a cut, not the compaction */
		db->st_cut_to = b != INT64_MIN ? b : db->st_cut_to;
		db->st_gen++;
		pthread_cond_broadcast(&db->st_done);
		pthread_mutex_unlock(&db->st_mu);
		rc = rc ? rc : ts__compact(db, &err);
		ts__retain(db);
		pthread_mutex_lock(&db->st_mu);
		if (rc)
			db->st_err = err;
	}
	db->st_gen++;
	pthread_cond_broadcast(&db->st_done);
	pthread_mutex_unlock(&db->st_mu);
	return NULL;
}

int ts__storage_start(ts_db *db, cm_err *err)
{
	int rc = pthread_create(&db->storage, NULL, storage_run, db);
	if (rc)
		return cm_errf(err, -rc, "starting the tsdb storage thread: %s", strerror(rc));
	db->storage_started = 1;
	return CM_OK;
}

void ts__storage_stop(ts_db *db)
{
	if (!db->storage_started)
		return;
	pthread_mutex_lock(&db->st_mu);
	db->st_stop = 1;
	pthread_cond_signal(&db->st_cv);
	pthread_mutex_unlock(&db->st_mu);
	pthread_join(db->storage, NULL);
	db->storage_started = 0;
}

void ts__storage_wake(ts_db *db)
{
	pthread_mutex_lock(&db->st_mu);
	db->st_wake = 1;
	pthread_cond_signal(&db->st_cv);
	pthread_mutex_unlock(&db->st_mu);
}

void ts__storage_throttle(ts_db *db)
{
	int64_t b = db->storage_started ? cut_due(db) : INT64_MIN;
	if (b == INT64_MIN || b - TS__BLOCK_MS <= floor_window(atomic_load(&db->mint)))
		return;
	pthread_mutex_lock(&db->st_mu);
	uint64_t gen = db->st_gen;
	if (atomic_load(&db->cut_before) >= db->st_cut_to) { /* else the last cut failed: a full disk */
		db->st_wake = 1;
		pthread_cond_signal(&db->st_cv);
		while (db->st_gen == gen && !db->st_stop)
			pthread_cond_wait(&db->st_done, &db->st_mu);
	}
	pthread_mutex_unlock(&db->st_mu);
}

void ts__storage_poke(ts_db *db, int64_t mint, int64_t maxt)
{
	int64_t cur = atomic_load(&db->maxt), low = atomic_load(&db->mint);
	while (mint < low && !atomic_compare_exchange_weak(&db->mint, &low, mint))
		;
	while (maxt > cur && !atomic_compare_exchange_weak(&db->maxt, &cur, maxt))
		;
	if (maxt <= cur || !db->storage_started || cut_due(db) == INT64_MIN)
		return;
	pthread_mutex_lock(&db->st_mu);
	db->st_wake = 1;
	pthread_cond_signal(&db->st_cv);
	pthread_mutex_unlock(&db->st_mu);
}
