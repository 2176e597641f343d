/* ts_query.c -- ts_select over the head and the blocks: one callback per label set, samples merged.
 *
 * Every source lists its matching series in label-set order: the head (ts__head_collect, under every
 * shard's read lock) and each block overlapping the range (ts__block_select on its postings). A k-way
 * merge walks the lists in label-set order and plans one job per label set: where each source keeps it.
 * A job's samples (block frames read with pread, decompressed and decoded; head chunks decoded) are
 * merged into one time-ordered run in which a timestamp appears once (blocks first, oldest block first,
 * then the head: the same sample can be in a block and, until the cut finishes, in the head); block
 * series come through the cache of decoded series (ts_cache.c), and a label set with one source is
 * handed to the callback where its samples are, without a copy. Jobs sit in a ring of slots: when a select
 * reads many block series, one worker thread decodes the jobs ahead while the calling thread runs the
 * callback on the finished ones, in label-set order (and decodes too when it would wait), so decoding
 * and the caller's work overlap on two cores. The callback runs on the calling thread, under the head's
 * read locks and the block list's read lock. A series that fails to read from a block (checksum, frame or
 * stream damage) stops the walk, and ts_select returns CM_ECORRUPT.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
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

/* Where one source keeps a label set: a block's series, or the head's. */
typedef struct src {
	ts__block *b;
	ts__bseries info;
	const ts__series *hs;
	ts__centry *ce;  /* the block series' samples, held while the job's samples are in use */
} src;

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

/* ---- the ring of jobs -------------------------------------------------------------------------- */

#define SLOTS 16            /* jobs in flight with a worker */
#define WORKER_SERIES 64    /* block series a select must read before a worker pays for itself */

typedef struct job {
	cm_label labels[TS__MAX_LABELS];
	size_t nlabels;
	src *src;      /* one per cursor */
	size_t nsrc;
	merge mg;
	const cm_sample *x;  /* the samples for the callback: a cached series' or mg.out */
	size_t n;
	size_t rank;         /* the job's number: the label set's rank in label-set order */
	int done, rc;
	cm_err err;
} job;

typedef struct ring {
	job *slots;
	size_t nslots;
	size_t planned, claimed, consumed;  /* job numbers; planned and claimed change under mu */
	int64_t mint, maxt;
	ts__cache *cache;
	ts_series_fn fn;        /* called in order on the calling thread, or */
	ts_series_rank_fn rfn;  /* called by whichever thread decoded the job */
	void *ctx;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
} ring;

/* The samples of s, [*lo, *hi) being those inside [mint, maxt]: the head's decoded into m->run, a
 * block's from the cache. */
static int src_read(ring *p, src *s, merge *m, ts__rdbuf *rb, const cm_sample **x, size_t *lo, size_t *hi,
		    cm_err *err)
{
	size_t n;
	if (!s->b) {
		int rc = ts__series_read(s->hs, p->mint, p->maxt, &m->run, &m->caprun, lo, hi);
		*x = m->run;
		return rc;
	}
	*x = NULL, *lo = *hi = 0;
	if (s->info.maxt < p->mint || s->info.mint > p->maxt)
		return CM_OK;
	int rc = ts__cache_get(p->cache, s->b, &s->info, rb, &s->ce, err);
	if (rc)
		return rc;
	*x = ts__centry_samples(s->ce, &n);
	*lo = ts__samples_lower(*x, n, p->mint);
	*hi = p->maxt == INT64_MAX ? n : ts__samples_lower(*x, n, p->maxt + 1);
	return CM_OK;
}

/* Reads every source of j; one source's samples are used where they are, several are merged. */
static int job_decode(ring *p, job *j, ts__rdbuf *rb)
{
	int rc = CM_OK;
	j->mg.nout = 0;
	for (size_t i = 0; i < j->nsrc && !rc; i++) {
		const cm_sample *x;
		size_t lo, hi;
		rc = src_read(p, &j->src[i], &j->mg, rb, &x, &lo, &hi, &j->err);
		if (!rc && j->nsrc == 1) {
			j->x = x + lo, j->n = hi - lo;
			return CM_OK;
		}
		rc = rc ? rc : merge_run(&j->mg, x + lo, hi - lo);
	}
	j->x = j->mg.out, j->n = j->mg.nout;
	return rc;
}

static void job_release(ring *p, job *j)
{
	for (size_t i = 0; i < j->nsrc; i++) {
		ts__cache_release(p->cache, j->src[i].ce);
		j->src[i].ce = NULL;
	}
}

/* Claims and decodes the next planned job; called and returns with mu held. */
static void claim_one(ring *p, ts__rdbuf *rb)
{
	job *j = &p->slots[p->claimed++ % p->nslots];
	pthread_mutex_unlock(&p->mu);
	int rc = job_decode(p, j, rb);
	if (p->rfn) {
		if (!rc && j->n)
			rc = p->rfn(p->ctx, j->rank, j->labels, j->nlabels, j->x, j->n);
		job_release(p, j);
	}
	pthread_mutex_lock(&p->mu);
	j->rc = rc, j->done = 1;
	pthread_cond_broadcast(&p->cv);
}

static void *worker(void *arg)
{
	ring *p = arg;
	ts__rdbuf rb = {0};
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		if (p->claimed < p->planned)
			claim_one(p, &rb);
		else
			pthread_cond_wait(&p->cv, &p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	ts__rdbuf_free(&rb);
	return NULL;
}

/* Plans the next label set into a free slot: its labels and every source that has it. */
static int plan(ring *p, cursor *c, size_t n, cursor *low, cm_err *err)
{
	job *j = &p->slots[p->planned % p->nslots];
	int rc = CM_OK;
	j->nlabels = low->nlabels;
	memcpy(j->labels, low->labels, j->nlabels * sizeof(*j->labels));
	j->nsrc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		if (c[i].i >= c[i].n || ts__labels_cmp(c[i].labels, c[i].nlabels, j->labels, j->nlabels) != 0)
			continue;
		j->src[j->nsrc++] = c[i].b ? (src){.b = c[i].b, .info = c[i].info} : (src){.hs = c[i].hits[c[i].i]};
		c[i].i++;
		rc = cursor_load(&c[i], err);
	}
	pthread_mutex_lock(&p->mu);
	j->done = 0;
	j->rank = p->planned++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* Waits for job j, decoding planned jobs meanwhile. */
static void await(ring *p, job *j, ts__rdbuf *rb)
{
	pthread_mutex_lock(&p->mu);
	while (!j->done) {
		if (p->claimed < p->planned)
			claim_one(p, rb);
		else
			pthread_cond_wait(&p->cv, &p->mu);
	}
	pthread_mutex_unlock(&p->mu);
}

static int ring_run(ring *p, cursor *c, size_t n, cm_err *err)
{
	ts__rdbuf rb = {0};
	int rc = CM_OK;
	for (;;) {
		cursor *low = NULL;
		while (!rc && p->planned - p->consumed < p->nslots && (low = cursors_min(c, n)))
			rc = plan(p, c, n, low, err);
		if (rc || p->consumed == p->planned)
			break;
		job *j = &p->slots[p->consumed % p->nslots];
		await(p, j, &rb);
		if (j->rc) {
			*err = j->err;
			rc = j->rc;
		} else if (p->fn && j->n) {
			rc = p->fn(p->ctx, j->labels, j->nlabels, j->x, j->n);
		}
		job_release(p, j);
		p->consumed++;
		if (rc)
			break;
	}
	ts__rdbuf_free(&rb);
	return rc;
}

/* Runs the jobs of the walk through the ring p (callbacks, range and cache set by the caller). */
static int walk(ring *p, cursor *c, size_t n, cm_err *err)
{
	size_t bseries = 0;
	for (size_t i = 0; i < n; i++)
		bseries += c[i].b ? c[i].n : 0;
	p->nslots = bseries >= WORKER_SERIES ? SLOTS : 1;
	pthread_t th;
	int threaded = 0, rc = CM_ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (!(p->slots = calloc(p->nslots, sizeof(*p->slots))))
		goto fail;
	for (size_t i = 0; i < p->nslots; i++)
		if (!(p->slots[i].src = calloc(n ? n : 1, sizeof(src))))
			goto fail;
	threaded = p->nslots > 1 && pthread_create(&th, NULL, worker, p) == 0;
	rc = ring_run(p, c, n, err);
fail:
	if (threaded) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(th, NULL);
	}
	for (size_t i = 0; p->slots && i < p->nslots; i++) {
		if (p->slots[i].src)
			job_release(p, &p->slots[i]);
		free(p->slots[i].src);
		free(p->slots[i].mg.out);
		free(p->slots[i].mg.tmp);
		free(p->slots[i].mg.run);
	}
	free(p->slots);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	return rc;
}

static int select_any(ts_db *db, const ts_matcher *m, size_t nm, int64_t res, ring *p, int labels_only)
{
	cursor *c = NULL;
	size_t n = 0;
	cm_err err;
	if ((!p->fn && !p->rfn) || (nm && !m))
		return CM_EINVAL;
	if (p->mint > p->maxt)
		return CM_OK;
	pthread_rwlock_rdlock(&db->blocks_lock);
	ts__head_rdlock(db->head);
	p->cache = db->cache;
	int rc = cursors_make(db, m, nm, p->mint, p->maxt, res, &c, &n, &err);
	if (!rc)
		rc = labels_only ? walk_labels(c, n, p->mint, p->maxt, p->fn, p->ctx, &err) : walk(p, c, n, &err);
	ts__head_unlock(db->head);
	pthread_rwlock_unlock(&db->blocks_lock);
	cursors_free(c, n);
	return rc;
}

int ts_select(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
	      void *ctx)
{
	ring p = {.mint = mint, .maxt = maxt, .fn = fn, .ctx = ctx};
	return select_any(db, m, nm, 0, &p, 0);
}

int ts_select_par(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_rank_fn fn,
		  void *ctx)
{
	ring p = {.mint = mint, .maxt = maxt, .rfn = fn, .ctx = ctx};
	return select_any(db, m, nm, 0, &p, 0);
}

int ts__select_res(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, int64_t res,
		   ts_series_fn fn, void *ctx)
{
	ring p = {.mint = mint, .maxt = maxt, .fn = fn, .ctx = ctx};
	return select_any(db, m, nm, res, &p, 0);
}

int ts_select_series(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		     void *ctx)
{
	ring p = {.mint = mint, .maxt = maxt, .fn = fn, .ctx = ctx};
	return select_any(db, m, nm, 0, &p, 1);
}

/* ---- label values ---------------------------------------------------------------------------------- */

typedef struct values_ctx {
	const char *name;
	ts_value_fn fn;
	void *ctx;
} values_ctx;

static int value_of(void *arg, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	values_ctx *v = arg;
	(void)x, (void)n;
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, v->name))
			return v->fn(v->ctx, l[i].value);
	return CM_OK;
}

/* The values in the head and in blocks that lie inside [mint, maxt]; *inside = 0 (and nothing done) when
 * a block reaches out of the range. Under the caller's locks. */
static int values_inside(ts_db *db, const ts_matcher *m, int64_t mint, int64_t maxt, values_ctx *v, int *inside)
{
	ts__series **hits = NULL;
	size_t n = 0;
	int rc = CM_OK;
	for (size_t i = 0; i < db->nblocks && *inside; i++) {
		const ts__block_meta *bm = ts__block_meta_get(db->blocks[i]);
		*inside = bm->resolution_ms || bm->maxt < mint || bm->mint > maxt || (bm->mint >= mint && bm->maxt <= maxt);
	}
	for (size_t i = 0; i < db->nblocks && *inside && !rc; i++) {
		const ts__block_meta *bm = ts__block_meta_get(db->blocks[i]);
		if (!bm->resolution_ms && bm->maxt >= mint && bm->mint <= maxt)
			rc = ts__block_label_values(db->blocks[i], v->name, v->fn, v->ctx, NULL);
	}
	if (*inside && !rc)
		rc = ts__head_collect(db->head, m, 1, mint, maxt, &hits, &n);
	for (size_t i = 0; i < n && !rc; i++) {
		size_t nl;
		const cm_label *l = ts__series_labels(hits[i], &nl);
		rc = value_of(v, l, nl, NULL, 0);
	}
	free(hits);
	return rc;
}

int ts_label_values(ts_db *db, const char *name, int64_t mint, int64_t maxt, ts_value_fn fn, void *ctx)
{
	ts_matcher m;
	values_ctx v = {name, fn, ctx};
	int inside = 1, rc = ts_matcher_init(&m, TS_MATCH_NE, name, "", NULL);
	if (rc)
		return rc;
	if (mint <= maxt) {
		pthread_rwlock_rdlock(&db->blocks_lock);
		ts__head_rdlock(db->head);
		rc = values_inside(db, &m, mint, maxt, &v, &inside);
		ts__head_unlock(db->head);
		pthread_rwlock_unlock(&db->blocks_lock);
	}
	ring p = {.mint = mint, .maxt = maxt, .fn = value_of, .ctx = &v};
	if (!rc && !inside) /* series by series */
		rc = select_any(db, &m, 1, 0, &p, 1);
	ts_matcher_close(&m);
	return rc;
}
