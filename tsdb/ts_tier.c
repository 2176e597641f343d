/* ts_tier.c -- downsampled tiers: 5 min and 1 h aggregates (min, max, sum, count, last) of raw blocks.
 *
 * When compaction has written the block of a whole day (ts_compact.c) and ts_opts.downsample is set,
 * this file writes two more blocks from it, one per resolution (block meta resolution_ms = 300000 or 3600000, same formats). For
 * every raw series with labels L a tier block holds five series, L plus the label __ds__ = "min", "max",
 * "sum", "count" or "last"; a point at the start t of each bucket [t, t + resolution) that has samples
 * carries the aggregate of the raw samples in it. min, max and sum skip NaN (a bucket of only NaN gives
 * NaN), count counts every sample, last is the last sample's value as written (a stale marker stays).
 * Buckets are aligned to multiples of the resolution from time 0.
 *
 * ts_select reads raw blocks only; ts_select_agg reads the tier of one resolution (falling back to
 * nothing where no tier exists: the caller then reads raw samples), so a long-range query can read 288
 * points a day per series instead of 8,640. Runs on the storage thread with compaction.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ts_int.h"

static const char *const agg_names[TS_AGG_N] = {"min", "max", "sum", "count", "last"};
static const int64_t resolutions[] = {5 * 60 * 1000LL, 3600 * 1000LL};

typedef struct tier_ent {
	uint64_t src;  /* series number in the raw block */
	int agg;
	size_t lab, nl;
} tier_ent;

typedef struct tier_ctx {
	ts__block *raw;
	int64_t res;
	tier_ent *e;
	size_t ne;
	cm_label *lab;
	size_t nlab, caplab;
	cm_sample *in, *out;
	size_t capin, capout;
} tier_ctx;

static int64_t bucket_of(int64_t t, int64_t res)
{
	int64_t b = t / res * res;
	return b > t ? b - res : b;
}

/* Aggregates x[0..n) (time-ordered) into per-bucket points of kind agg; returns how many. */
static size_t aggregate(const cm_sample *x, size_t n, int64_t res, int agg, cm_sample *out)
{
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		int64_t b = bucket_of(x[i].t_ms, res);
		double v = agg == TS_AGG_MIN ? INFINITY : agg == TS_AGG_MAX ? -INFINITY : 0;
		size_t seen = 0, count = 0;
		for (; i < n && x[i].t_ms < b + res; i++, count++) {
			double s = x[i].v;
			if (agg == TS_AGG_LAST)
				v = s;
			if (isnan(s) || agg == TS_AGG_LAST || agg == TS_AGG_COUNT)
				continue;
			v = agg == TS_AGG_MIN ? fmin(v, s) : agg == TS_AGG_MAX ? fmax(v, s) : v + s;
			seen++;
		}
		if (agg == TS_AGG_COUNT)
			v = (double)count;
		else if (agg != TS_AGG_LAST && !seen)
			v = NAN;
		out[k++] = (cm_sample){b, v};
	}
	return k;
}

static int tier_fetch(void *ctx, const ts__bw_series *s, const cm_sample **x, size_t *n)
{
	tier_ctx *t = ctx;
	const tier_ent *e = s->src;
	cm_label l[TS__MAX_LABELS];
	size_t nl, len = 0;
	ts__bseries info;
	cm_err err;
	int rc = ts__block_series(t->raw, e->src, l, &nl, &info, &err);
	rc = rc ? rc : ts__block_samples(t->raw, &info, NULL, &t->in, &len, &t->capin, &err);
	if (!rc && len > t->capout) {
		cm_sample *p = realloc(t->out, len * sizeof(*p));
		rc = p ? CM_OK : CM_ENOMEM;
		if (p)
			t->out = p, t->capout = len;
	}
	if (rc)
		return rc;
	*n = aggregate(t->in, len, t->res, e->agg, t->out);
	*x = t->out;
	return CM_OK;
}

static int ent_cmp(const void *a, const void *b, void *ctx)
{
	const tier_ctx *t = ctx;
	const tier_ent *x = a, *y = b;
	return ts__labels_cmp(t->lab + x->lab, x->nl, t->lab + y->lab, y->nl);
}

/* Adds the five entries of raw series i: its labels plus __ds__, sorted. */
static int tier_add(tier_ctx *t, uint64_t i, cm_err *err)
{
	cm_label l[TS__MAX_LABELS + 1];
	size_t nl;
	ts__bseries info;
	int rc = ts__block_series(t->raw, i, l, &nl, &info, err);
	if (rc || nl >= TS__MAX_LABELS)
		return rc; /* a series with the most labels gets no tier: no room for __ds__ */
	if (t->nlab + TS_AGG_N * (nl + 1) > t->caplab) {
		size_t cap = (t->nlab + TS_AGG_N * (nl + 1)) * 2;
		cm_label *p = realloc(t->lab, cap * sizeof(*p));
		if (!p)
			return cm_errf(err, CM_ENOMEM, "out of memory");
		t->lab = p, t->caplab = cap;
	}
	for (int a = 0; a < TS_AGG_N; a++) {
		memcpy(t->lab + t->nlab, l, nl * sizeof(*l));
		t->lab[t->nlab + nl] = (cm_label){"__ds__", agg_names[a]};
		cm_labels_sort(t->lab + t->nlab, nl + 1);
		t->e[t->ne++] = (tier_ent){i, a, t->nlab, nl + 1};
		t->nlab += nl + 1;
	}
	return CM_OK;
}

static int tier_write(ts_db *db, tier_ctx *t, cm_err *err)
{
	char dir[4200], name[128], path[4400];
	ts__block *b;
	ts__block_meta m = {.level = ts__block_meta_get(t->raw)->level, .resolution_ms = (uint32_t)t->res};
	ts__bw_series *in = malloc((t->ne ? t->ne : 1) * sizeof(*in));
	if (!in)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	qsort_r(t->e, t->ne, sizeof(*t->e), ent_cmp, t);
	for (size_t i = 0; i < t->ne; i++)
		in[i] = (ts__bw_series){t->lab + t->e[i].lab, t->e[i].nl, &t->e[i]};
	snprintf(dir, sizeof(dir), "%s/blocks", db->dir);
	int rc = ts__block_write(dir, in, t->ne, tier_fetch, t, &m, db->opts.no_fsync, name, sizeof(name), err);
	free(in);
	if (rc || !name[0])
		return rc;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((rc = ts__block_open(path, &b, err)))
		return rc;
	if ((rc = ts__blocks_add(db, b)))
		ts__block_close(b);
	return rc;
}

int ts__tiers_write(ts_db *db, ts__block *raw, cm_err *err)
{
	int rc = CM_OK;
	uint64_t n = ts__block_nseries(raw);
	for (size_t r = 0; r < sizeof(resolutions) / sizeof(resolutions[0]) && !rc; r++) {
		tier_ctx t = {.raw = raw, .res = resolutions[r]};
		t.e = malloc((n ? n : 1) * TS_AGG_N * sizeof(*t.e));
		rc = t.e ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
		for (uint64_t i = 0; i < n && !rc; i++)
			rc = tier_add(&t, i, err);
		rc = rc ? rc : tier_write(db, &t, err);
		free(t.e);
		free(t.lab);
		free(t.in);
		free(t.out);
	}
	return rc;
}

/* ---- reading ----------------------------------------------------------------------------------------- */

typedef struct strip_ctx {
	ts_series_fn fn;
	void *ctx;
} strip_ctx;

/* Passes a tier series on without its __ds__ label. */
static int strip(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	strip_ctx *s = ctx;
	cm_label out[TS__MAX_LABELS];
	size_t k = 0;
	for (size_t i = 0; i < nl; i++)
		if (strcmp(l[i].name, "__ds__") != 0)
			out[k++] = l[i];
	return s->fn(s->ctx, out, k, x, n);
}

int ts_select_agg(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t resolution_ms,
		  ts_agg agg, ts_series_fn fn, void *ctx)
{
	ts_matcher *all;
	int rc;
	if (!fn || (nm && !m) || agg >= TS_AGG_N || nm >= TS__MAX_LABELS)
		return CM_EINVAL;
	if (!(all = malloc((nm + 1) * sizeof(*all))))
		return CM_ENOMEM;
	if (nm)
		memcpy(all, m, nm * sizeof(*m));
	if ((rc = ts_matcher_init(&all[nm], TS_MATCH_EQ, "__ds__", agg_names[agg], NULL)) == CM_OK) {
		strip_ctx s = {fn, ctx};
		rc = ts__select_res(db, all, nm + 1, mint, maxt, resolution_ms, strip, &s);
		ts_matcher_close(&all[nm]);
	}
	free(all);
	return rc;
}
