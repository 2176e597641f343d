/* ts_compact.c -- compaction (the blocks of one aligned 24 h window merged into one) and retention.
 *
 * Cuts write one level-1 block per 2 h window; a flush in the middle of a window, or late samples, add
 * more blocks for the same window. Once the head holds nothing for a 24 h window any more (its end is
 * at or before the cut boundary), the storage thread merges every block of that window into one block
 * (level = highest source level + 1): series in label-set order from all sources, samples merged with a
 * timestamp kept once. The new block is written and published before the old ones leave the list; the
 * old directories are then renamed to "<name>.deleted" and removed (a leftover is removed at open). A
 * crash in between leaves both, and reads merge the duplicates until the next compaction.
 *
 * Retention drops whole blocks, oldest first: those that end more than retention_ms before the newest
 * sample, then more while the blocks take more than retention_bytes. The head is never dropped, so the
 * size limit bounds the blocks, not the WAL.
 *
 * Runs on the storage thread (or ts_flush's caller) under cut_mu, never on the ingest path; readers
 * keep reading the old blocks until the list is swapped under blocks_lock.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ts_int.h"

#define DAY_MS (24 * 3600 * 1000LL)

typedef struct src {
	ts__block *b;
	ts__bseries info;
} src;

typedef struct entry {
	size_t lab, nl;      /* into the label pool */
	size_t first, nsrc;  /* into the src array */
} entry;

typedef struct plan {
	ts__block **b;
	size_t nb;
	entry *e;
	size_t ne, cape;
	src *s;
	size_t ns, caps;
	cm_label *lab;       /* every entry's labels, back to back (they point into the blocks' maps) */
	size_t nlab, caplab;
	cm_sample *buf, *run;
	size_t nbuf, capbuf, caprun;
} plan;

static int64_t day_of(int64_t t)
{
	int64_t d = t / DAY_MS * DAY_MS;
	return d > t ? d - DAY_MS : d;
}

static void plan_free(plan *p)
{
	free(p->b);
	free(p->e);
	free(p->s);
	free(p->lab);
	free(p->buf);
	free(p->run);
}

/* ---- the series union ------------------------------------------------------------------------------ */

typedef struct bcur {
	ts__block *b;
	uint64_t i, n;
	cm_label labels[TS__MAX_LABELS];
	size_t nl;
	ts__bseries info;
} bcur;

static int bcur_load(bcur *c, cm_err *err)
{
	return c->i < c->n ? ts__block_series(c->b, c->i, c->labels, &c->nl, &c->info, err) : CM_OK;
}

static int plan_push(plan *p, const bcur *low)
{
	if (p->ne == p->cape) {
		size_t cap = p->cape ? p->cape * 2 : 256;
		entry *e = realloc(p->e, cap * sizeof(*e));
		if (!e)
			return CM_ENOMEM;
		p->e = e, p->cape = cap;
	}
	if (p->nlab + low->nl > p->caplab) {
		size_t cap = (p->nlab + low->nl) * 2;
		cm_label *l = realloc(p->lab, cap * sizeof(*l));
		if (!l)
			return CM_ENOMEM;
		p->lab = l, p->caplab = cap;
	}
	entry *e = &p->e[p->ne++];
	memcpy(p->lab + p->nlab, low->labels, low->nl * sizeof(cm_label));
	e->lab = p->nlab, e->nl = low->nl, e->first = p->ns, e->nsrc = 0;
	p->nlab += low->nl;
	return CM_OK;
}

static int plan_src(plan *p, const bcur *c)
{
	if (p->ns == p->caps) {
		size_t cap = p->caps ? p->caps * 2 : 256;
		src *s = realloc(p->s, cap * sizeof(*s));
		if (!s)
			return CM_ENOMEM;
		p->s = s, p->caps = cap;
	}
	p->s[p->ns++] = (src){c->b, c->info};
	p->e[p->ne - 1].nsrc++;
	return CM_OK;
}

/* Lists every series of the plan's blocks once, in label-set order, with where its samples are. */
static int plan_union(plan *p, cm_err *err)
{
	bcur *c = calloc(p->nb, sizeof(*c));
	int rc = c ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
	for (size_t i = 0; i < p->nb && !rc; i++) {
		c[i] = (bcur){.b = p->b[i], .n = ts__block_nseries(p->b[i])};
		rc = bcur_load(&c[i], err);
	}
	while (!rc) {
		bcur *low = NULL;
		for (size_t i = 0; i < p->nb; i++)
			if (c[i].i < c[i].n && (!low || ts__labels_cmp(c[i].labels, c[i].nl, low->labels, low->nl) < 0))
				low = &c[i];
		if (!low)
			break;
		rc = plan_push(p, low);
		const entry *e = rc ? NULL : &p->e[p->ne - 1];
		for (size_t i = 0; i < p->nb && !rc; i++) {
			if (c[i].i >= c[i].n || ts__labels_cmp(c[i].labels, c[i].nl, p->lab + e->lab, e->nl) != 0)
				continue;
			rc = plan_src(p, &c[i]);
			c[i].i++;
			rc = rc ? rc : bcur_load(&c[i], err);
		}
		if (rc == CM_ENOMEM)
			cm_errf(err, rc, "out of memory");
	}
	free(c);
	return rc;
}

/* ---- merged samples -------------------------------------------------------------------------------- */

/* Appends run x[0..n) to p->buf keeping times strictly increasing (an equal time keeps the first). */
static int merge_into(plan *p, const cm_sample *x, size_t n)
{
	size_t need = p->nbuf + n;
	if (need > p->capbuf) {
		cm_sample *q = realloc(p->buf, need * 2 * sizeof(*q));
		if (!q)
			return CM_ENOMEM;
		p->buf = q, p->capbuf = need * 2;
	}
	if (!p->nbuf || x[0].t_ms > p->buf[p->nbuf - 1].t_ms) {
		memcpy(p->buf + p->nbuf, x, n * sizeof(*x));
		p->nbuf += n;
		return CM_OK;
	}
	cm_sample *out = malloc(need * sizeof(*out));
	size_t i = 0, j = 0, k = 0;
	if (!out)
		return CM_ENOMEM;
	while (i < p->nbuf || j < n) {
		if (j == n || (i < p->nbuf && p->buf[i].t_ms <= x[j].t_ms)) {
			j += j < n && p->buf[i].t_ms == x[j].t_ms;
			out[k++] = p->buf[i++];
		} else {
			out[k++] = x[j++];
		}
	}
	memcpy(p->buf, out, k * sizeof(*out));
	p->nbuf = k;
	free(out);
	return CM_OK;
}

static int plan_fetch(void *ctx, const ts__bw_series *s, const cm_sample **x, size_t *n)
{
	plan *p = ctx;
	const entry *e = s->src;
	cm_err err;
	p->nbuf = 0;
	for (size_t i = 0; i < e->nsrc; i++) {
		const src *sr = &p->s[e->first + i];
		size_t len = 0;
		int rc = ts__block_samples(sr->b, &sr->info, NULL, &p->run, &len, &p->caprun, &err);
		rc = rc ? rc : merge_into(p, p->run, len);
		if (rc)
			return rc;
	}
	*x = p->buf;
	*n = p->nbuf;
	return CM_OK;
}

/* ---- one window ------------------------------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* Renames a block's directory to .deleted, removes it and closes the block (no longer listed). */
static void block_remove(ts__block *b)
{
	char del[4200];
	snprintf(del, sizeof(del), "%s.deleted", ts__block_path(b));
	if (rename(ts__block_path(b), del) == 0)
		nftw(del, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	ts__block_close(b);
}

/* Swaps the plan's blocks for nb in the list, then removes their directories. */
static int plan_swap(ts_db *db, plan *p, ts__block *nb)
{
	pthread_rwlock_wrlock(&db->blocks_lock);
	size_t k = 0;
	for (size_t i = 0; i < db->nblocks; i++) {
		int old = 0;
		for (size_t j = 0; j < p->nb; j++)
			old |= db->blocks[i] == p->b[j];
		if (!old)
			db->blocks[k++] = db->blocks[i];
	}
	db->blocks[k++] = nb; /* the list had room: nb replaces at least two */
	db->nblocks = k;
	ts__blocks_sort(db);
	pthread_rwlock_unlock(&db->blocks_lock);
	for (size_t j = 0; j < p->nb; j++)
		block_remove(p->b[j]);
	return CM_OK;
}

/* Removes the tier blocks of one day from the list and the disk. */
static void tiers_drop(ts_db *db, int64_t day)
{
	for (;;) {
		ts__block *b = NULL;
		pthread_rwlock_wrlock(&db->blocks_lock);
		for (size_t i = 0; i < db->nblocks && !b; i++) {
			const ts__block_meta *m = ts__block_meta_get(db->blocks[i]);
			if (m->resolution_ms && day_of(m->mint) == day) {
				b = db->blocks[i];
				memmove(db->blocks + i, db->blocks + i + 1, (db->nblocks - i - 1) * sizeof(*db->blocks));
				db->nblocks--;
			}
		}
		pthread_rwlock_unlock(&db->blocks_lock);
		if (!b)
			return;
		block_remove(b);
	}
}

static int compact_window(ts_db *db, plan *p, cm_err *err)
{
	char dir[4200], name[128], path[4400];
	ts__block_meta m = {.level = 1};
	ts__block *nb;
	for (size_t i = 0; i < p->nb; i++)
		if (ts__block_meta_get(p->b[i])->level >= m.level)
			m.level = ts__block_meta_get(p->b[i])->level + 1;
	int rc = plan_union(p, err);
	ts__bw_series *in = rc ? NULL : malloc((p->ne ? p->ne : 1) * sizeof(*in));
	if (!rc && !in)
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	for (size_t i = 0; !rc && i < p->ne; i++)
		in[i] = (ts__bw_series){p->lab + p->e[i].lab, p->e[i].nl, &p->e[i]};
	snprintf(dir, sizeof(dir), "%s/blocks", db->dir);
	rc = rc ? rc : ts__block_write(dir, in, p->ne, plan_fetch, p, &m, db->opts.no_fsync, name, sizeof(name), err);
	free(in);
	if (rc || !name[0])
		return rc;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((rc = ts__block_open(path, &nb, err)))
		return rc;
	plan_swap(db, p, nb);
	tiers_drop(db, day_of(ts__block_meta_get(nb)->mint)); /* a day compacted again gets new tiers */
	return db->opts.downsample ? ts__tiers_write(db, nb, err) : CM_OK;
}

/* Picks the earliest 24 h window with two or more blocks that the head no longer writes into. */
static int plan_pick(ts_db *db, plan *p)
{
	int64_t limit = atomic_load(&db->compact_all) ? INT64_MAX : atomic_load(&db->cut_before);
	if (limit < INT64_MIN + DAY_MS)
		return 0;
	pthread_rwlock_rdlock(&db->blocks_lock);
	for (size_t i = 0; i < db->nblocks && !p->nb; i++) {
		int64_t day = day_of(ts__block_meta_get(db->blocks[i])->mint);
		size_t n = 0;
		for (size_t j = 0; j < db->nblocks; j++) {
			const ts__block_meta *m = ts__block_meta_get(db->blocks[j]);
			n += !m->resolution_ms && day_of(m->mint) == day && day_of(m->maxt) == day;
		}
		if (n < 2 || (limit != INT64_MAX && day > limit - DAY_MS))
			continue;
		p->b = malloc(n * sizeof(*p->b));
		for (size_t j = 0; p->b && j < db->nblocks; j++) {
			const ts__block_meta *m = ts__block_meta_get(db->blocks[j]);
			if (!m->resolution_ms && day_of(m->mint) == day && day_of(m->maxt) == day)
				p->b[p->nb++] = db->blocks[j];
		}
	}
	pthread_rwlock_unlock(&db->blocks_lock);
	return p->nb ? 1 : 0;
}

int ts__compact(ts_db *db, cm_err *err)
{
	int rc = CM_OK;
	pthread_mutex_lock(&db->cut_mu);
	for (;;) {
		plan p = {0};
		if (!plan_pick(db, &p)) {
			plan_free(&p);
			break;
		}
		rc = compact_window(db, &p, err);
		plan_free(&p);
		if (rc)
			break;
		atomic_fetch_add(&db->compactions, 1);
	}
	if (!rc)
		atomic_store(&db->compact_all, 0); /* a later flush sets it again after its cut (cut_mu) */
	pthread_mutex_unlock(&db->cut_mu);
	return rc;
}

/* ---- retention ------------------------------------------------------------------------------------- */

/* Takes the oldest block out of the list when it is past the age limit or the store is over the size
 * limit; NULL when none is. blocks_lock held for writing. */
static ts__block *retain_pick(ts_db *db, int64_t newest)
{
	uint64_t total = 0;
	size_t oldest = 0;
	if (!db->nblocks)
		return NULL;
	for (size_t i = 0; i < db->nblocks; i++) {
		total += ts__block_bytes(db->blocks[i]);
		if (ts__block_meta_get(db->blocks[i])->maxt < ts__block_meta_get(db->blocks[oldest])->maxt)
			oldest = i;
	}
	int64_t maxt = ts__block_meta_get(db->blocks[oldest])->maxt;
	int old = db->opts.retention_ms > 0 && newest != INT64_MIN && maxt < newest - db->opts.retention_ms;
	int big = db->opts.retention_bytes > 0 && total > db->opts.retention_bytes;
	if (!old && !big)
		return NULL;
	ts__block *b = db->blocks[oldest];
	memmove(db->blocks + oldest, db->blocks + oldest + 1, (db->nblocks - oldest - 1) * sizeof(*db->blocks));
	db->nblocks--;
	return b;
}

void ts__retain(ts_db *db)
{
	int64_t newest = atomic_load(&db->maxt);
	pthread_mutex_lock(&db->cut_mu);
	for (;;) {
		pthread_rwlock_wrlock(&db->blocks_lock);
		for (size_t i = 0; i < db->nblocks; i++) /* the newest sample may be in a block only */
			if (ts__block_meta_get(db->blocks[i])->maxt > newest)
				newest = ts__block_meta_get(db->blocks[i])->maxt;
		ts__block *b = retain_pick(db, newest);
		pthread_rwlock_unlock(&db->blocks_lock);
		if (!b)
			break;
		block_remove(b);
		atomic_fetch_add(&db->blocks_dropped, 1);
	}
	pthread_mutex_unlock(&db->cut_mu);
}
