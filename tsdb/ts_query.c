/* ts_query.c -- ts_select over the head and the blocks: one callback per label set, samples merged.
 *
 * Every source lists its matching series in label-set order: the head (ts__head_collect, under every
 * shard's read lock) and each block overlapping the range (ts__block_select on its postings). A k-way
 * merge walks the lists in label-set order; for each label set it gathers the samples of every source
 * that has it (block samples read with pread and decoded, head chunks decoded) and merges them into
 * one time-ordered run in which a timestamp appears once (blocks first, oldest block first, then the
 * head: the same sample can be in a block and, until the cut finishes, in the head). The callback runs
 * under the head's read locks and the block list's read lock. A series that fails to read from a
 * block (checksum, frame or stream damage) stops the walk, and ts_select returns CM_ECORRUPT.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ts_int.h"

typedef struct cursor {
	ts__block *b;    /* NULL for the head */
	uint64_t *ids;   /* block series numbers */
	ts__series **hits;
	size_t n, i;
	cm_label labels[TS__MAX_LABELS];
	size_t nlabels;
	ts__bseries info;
} cursor;

typedef struct merge {
	cm_sample *out, *tmp, *run;
	size_t nout, capout, captmp, caprun;
} merge;

/* Loads the labels of the cursor's current series; *done when it is exhausted. */
static int cursor_load(cursor *c, cm_err *err)
{
	if (c->i >= c->n)
		return CM_OK;
	if (!c->b) {
		const cm_label *l = ts__series_labels(c->hits[c->i], &c->nlabels);
		memcpy(c->labels, l, c->nlabels * sizeof(*l));
		return CM_OK;
	}
	return ts__block_series(c->b, c->ids[c->i], c->labels, &c->nlabels, &c->info, err);
}

static int grow(cm_sample **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return CM_OK;
	size_t n = need * 2;
	cm_sample *q = realloc(*p, n * sizeof(*q));
	if (!q)
		return CM_ENOMEM;
	*p = q;
	*cap = n;
	return CM_OK;
}

/* Merges run x[0..n) into m->out; on equal timestamps the sample already in out stays. */
static int merge_run(merge *m, const cm_sample *x, size_t n)
{
	if (!n)
		return CM_OK;
	if (!m->nout || x[0].t_ms > m->out[m->nout - 1].t_ms) {
		if (grow(&m->out, &m->capout, m->nout + n))
			return CM_ENOMEM;
		memcpy(m->out + m->nout, x, n * sizeof(*x));
		m->nout += n;
		return CM_OK;
	}
	if (grow(&m->tmp, &m->captmp, m->nout + n))
		return CM_ENOMEM;
	size_t i = 0, j = 0, k = 0;
	while (i < m->nout || j < n) {
		if (j == n || (i < m->nout && m->out[i].t_ms <= x[j].t_ms)) {
			if (j < n && m->out[i].t_ms == x[j].t_ms)
				j++;
			m->tmp[k++] = m->out[i++];
		} else {
			m->tmp[k++] = x[j++];
		}
	}
	cm_sample *t = m->out;
	size_t tc = m->capout;
	m->out = m->tmp, m->capout = m->captmp, m->nout = k;
	m->tmp = t, m->captmp = tc;
	return CM_OK;
}

/* Adds the current series of c (inside [mint, maxt]) to the merge. */
static int cursor_samples(cursor *c, merge *m, int64_t mint, int64_t maxt, cm_err *err)
{
	size_t len = 0, lo, hi;
	int rc;
	if (!c->b) {
		rc = ts__series_read(c->hits[c->i], mint, maxt, &m->run, &m->caprun, &lo, &hi);
		return rc ? rc : merge_run(m, m->run + lo, hi - lo);
	}
	if (c->info.maxt < mint || c->info.mint > maxt)
		return CM_OK;
	if ((rc = ts__block_samples(c->b, &c->info, &m->run, &len, &m->caprun, err)))
		return rc;
	for (lo = 0; lo < len && m->run[lo].t_ms < mint; lo++)
		;
	for (hi = len; hi > lo && m->run[hi - 1].t_ms > maxt; hi--)
		;
	return merge_run(m, m->run + lo, hi - lo);
}

/* Builds the cursors: blocks overlapping the range (oldest first), then the head. */
static int cursors_make(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t res,
			cursor **out, size_t *nout, cm_err *err)
{
	cursor *c = calloc(db->nblocks + 1, sizeof(*c));
	size_t n = 0;
	int rc = c ? CM_OK : CM_ENOMEM;
	for (size_t i = 0; i < db->nblocks && !rc; i++) {
		const ts__block_meta *bm = ts__block_meta_get(db->blocks[i]);
		if (bm->maxt < mint || bm->mint > maxt || bm->resolution_ms != res)
			continue;
		c[n].b = db->blocks[i];
		rc = ts__block_select(c[n].b, m, nm, &c[n].ids, &c[n].n, err);
		n++;
	}
	if (!rc && res == 0) {
		rc = ts__head_collect(db->head, m, nm, mint, maxt, &c[n].hits, &c[n].n);
		n++;
	}
	for (size_t i = 0; i < n && !rc; i++)
		rc = cursor_load(&c[i], err);
	*out = c;
	*nout = n;
	return rc;
}

static void cursors_free(cursor *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++) {
		free(c[i].ids);
		free(c[i].hits);
	}
	free(c);
}

/* The cursor with the smallest current label set, or NULL when all are done. */
static cursor *cursors_min(cursor *c, size_t n)
{
	cursor *best = NULL;
	for (size_t i = 0; i < n; i++)
		if (c[i].i < c[i].n &&
		    (!best || ts__labels_cmp(c[i].labels, c[i].nlabels, best->labels, best->nlabels) < 0))
			best = &c[i];
	return best;
}

/* Whether the current series of c has data overlapping [mint, maxt] (by its time range, no decoding). */
static int cursor_overlaps(const cursor *c, int64_t mint, int64_t maxt)
{
	if (c->b)
		return c->info.maxt >= mint && c->info.mint <= maxt;
	return 1; /* ts__head_collect already checked */
}

/* The labels-only walk of ts_select_series: one call per label set, no samples read. */
static int walk_labels(cursor *c, size_t n, int64_t mint, int64_t maxt, ts_series_fn fn, void *ctx, cm_err *err)
{
	cm_label labels[TS__MAX_LABELS];
	int rc = CM_OK;
	for (cursor *low; !rc && (low = cursors_min(c, n));) {
		size_t nl = low->nlabels;
		int hit = 0;
		memcpy(labels, low->labels, nl * sizeof(*labels));
		for (size_t i = 0; i < n && !rc; i++) {
			if (c[i].i >= c[i].n || ts__labels_cmp(c[i].labels, c[i].nlabels, labels, nl) != 0)
				continue;
			hit |= cursor_overlaps(&c[i], mint, maxt);
			c[i].i++;
			rc = cursor_load(&c[i], err);
		}
		if (!rc && hit)
			rc = fn(ctx, labels, nl, NULL, 0);
	}
	return rc;
}

static int walk(cursor *c, size_t n, int64_t mint, int64_t maxt, ts_series_fn fn, void *ctx, cm_err *err)
{
	merge mg = {0};
	cm_label labels[TS__MAX_LABELS];
	int rc = CM_OK;
	for (cursor *low; !rc && (low = cursors_min(c, n));) {
		size_t nl = low->nlabels;
		memcpy(labels, low->labels, nl * sizeof(*labels));
		mg.nout = 0;
		for (size_t i = 0; i < n && !rc; i++) {
			if (c[i].i >= c[i].n || ts__labels_cmp(c[i].labels, c[i].nlabels, labels, nl) != 0)
				continue;
			rc = cursor_samples(&c[i], &mg, mint, maxt, err);
			c[i].i++;
			if (!rc)
				rc = cursor_load(&c[i], err);
		}
		if (!rc && mg.nout)
			rc = fn(ctx, labels, nl, mg.out, mg.nout);
	}
	free(mg.out);
	free(mg.tmp);
	free(mg.run);
	return rc;
}

static int select_any(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t res,
		      ts_series_fn fn, void *ctx, int labels_only)
{
	cursor *c = NULL;
	size_t n = 0;
	cm_err err;
	if (!fn || (nm && !m))
		return CM_EINVAL;
	if (mint > maxt)
		return CM_OK;
	pthread_rwlock_rdlock(&db->blocks_lock);
	ts__head_rdlock(db->head);
	int rc = cursors_make(db, m, nm, mint, maxt, res, &c, &n, &err);
	if (!rc)
		rc = labels_only ? walk_labels(c, n, mint, maxt, fn, ctx, &err) : walk(c, n, mint, maxt, fn, ctx, &err);
	ts__head_unlock(db->head);
	pthread_rwlock_unlock(&db->blocks_lock);
	cursors_free(c, n);
	return rc;
}

int ts_select(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
	      void *ctx)
{
	return select_any(db, m, nm, mint, maxt, 0, fn, ctx, 0);
}

int ts__select_res(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t res,
		   ts_series_fn fn, void *ctx)
{
	return select_any(db, m, nm, mint, maxt, res, fn, ctx, 0);
}

int ts_select_series(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		     void *ctx)
{
	return select_any(db, m, nm, mint, maxt, 0, fn, ctx, 1);
}
