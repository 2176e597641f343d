/* ag_peval.c -- the PromQL evaluator: a parsed query over the tsdb, at an instant or over a range.
 *
 * Called by ag_api.c for /api/v1/query and /api/v1/query_range with a tree from ag_promql.c. The design
 * follows Prometheus 2.42's engine with one difference in shape: every selector is read from the tsdb
 * ONCE, on its first evaluation, over everything the whole query needs of it ([start - offset - range -
 * lookback, end - offset], or around its @ time). Instant-vector selectors, and range functions directly
 * over a range selector, are streamed: the ts_select callback slides through every step of the range and
 * keeps per-step results only. Other range selectors are copied into arrays in the query's arena (the
 * callback must not re-enter the tsdb); at each step a range vector is a window of two indices into
 * them, never a copy. A subquery is evaluated once, as a range query of its own over its aligned steps,
 * and then read like a selector. Label sets are interned per query (ag__pls), so label sets compare by
 * pointer and what depends only on a series' labels (dropping __name__, the group of an aggregation, the
 * matching signature of a binary operation) is computed once per series per query, not per step.
 * Per-step values live in a scratch arena reset at every step, so memory is bounded by what the query
 * loads and answers. Guards: deadline (timeout), samples loaded plus points answered (max_samples).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define STALE_NAN_BITS 0x7ff0000000000002ULL
#define MAX_LABELS 256

/* A series with its samples: loaded from the tsdb (arrays in the query arena) or materialized by a
 * range evaluation (malloc'd, growing; freed with the context). */
typedef struct series {
	const ag__pls *ls;
	cm_sample *s;
	size_t n, cap;
} series;

typedef struct source {
	series *v;
	size_t n, cap;
	int loaded, owned;
	struct source *next_owned;
} source;

/* Pointer-keyed open-addressing map (label set -> index or label set), in the query arena. */
typedef struct pmap {
	const void **keys;
	const void **vals;
	size_t cap, n;
} pmap;

struct ag__pctx {
	ts_db *db;
	const ag__pql_opts *o;
	cm_arena qa;   /* the query's: label sets, loaded samples, memo tables */
	cm_arena *sa;  /* the current step's scratch */
	ag__pls **itab;
	size_t icap, icount;
	int64_t qstart, qend;  /* what @ start() and end() mean */
	int64_t rstart, rend;  /* the range being evaluated: what selectors load */
	int64_t rstep;
	uint64_t stamp;        /* ag__pvec_unique's last check */
	uint64_t samples;
	int64_t deadline_ns;
	cm_err *err;
	int kind;
	const ag__pls *empty;
	source *owned;
};

/* ---- context services --------------------------------------------------------------------------- */

void *ag__pctx_alloc(ag__pctx *c, size_t n)
{
	void *p = cm_arena_alloc(c->sa, n ? n : 1);
	if (!p)
		ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	return p;
}

cm_arena *ag__pctx_arena(ag__pctx *c)
{
	return c->sa;
}

int ag__pctx_fail(ag__pctx *c, int kind, const char *fmt, ...)
{
	if (!c->kind) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err->msg, sizeof(c->err->msg), fmt, ap);
		va_end(ap);
		c->kind = kind;
	}
	return CM_EINVAL;
}

static int check_deadline(ag__pctx *c)
{
	if (cm_mono_ns() > c->deadline_ns)
		return ag__pctx_fail(c, AG_PQL_TIMEOUT, "query timed out in query execution");
	return CM_OK;
}

static int count_samples(ag__pctx *c, uint64_t n)
{
	c->samples += n;
	if (c->samples > c->o->max_samples)
		return ag__pctx_fail(c, AG_PQL_EXECUTION,
				     "query processing would load too many samples into memory in query execution");
	return CM_OK;
}

static int is_stale(double v)
{
	uint64_t u;
	memcpy(&u, &v, 8);
	return u == STALE_NAN_BITS;
}

/* ---- label sets --------------------------------------------------------------------------------- */

static uint64_t hash_labels(const cm_label *l, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		for (const char *p = l[i].name; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL;
		for (const char *p = l[i].value; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ULL;
		h = (h ^ 0xfe) * 1099511628211ULL;
	}
	return h ^ (h >> 29);
}

static int same_labels(const ag__pls *ls, const cm_label *l, size_t n)
{
	if (ls->n != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(ls->l[i].name, l[i].name) || strcmp(ls->l[i].value, l[i].value))
			return 0;
	return 1;
}

static int grow_intern(ag__pctx *c)
{
	size_t cap = c->icap ? c->icap * 2 : 1024;
	ag__pls **t = cm_arena_calloc(&c->qa, cap, sizeof(*t));
	if (!t)
		return CM_ENOMEM;
	for (size_t i = 0; i < c->icap; i++)
		for (ag__pls *e = c->itab[i], *next; e; e = next) {
			next = e->next;
			e->next = t[e->hash & (cap - 1)];
			t[e->hash & (cap - 1)] = e;
		}
	c->itab = t, c->icap = cap;
	return CM_OK;
}

static ag__pls *intern_new(ag__pctx *c, const cm_label *l, size_t n, uint64_t h)
{
	ag__pls *ls = cm_arena_calloc(&c->qa, 1, sizeof(*ls));
	cm_label *copy = cm_arena_alloc(&c->qa, (n ? n : 1) * sizeof(*copy));
	if (!ls || !copy)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		copy[i].name = cm_arena_strdup(&c->qa, l[i].name);
		copy[i].value = cm_arena_strdup(&c->qa, l[i].value);
		if (!copy[i].name || !copy[i].value)
			return NULL;
	}
	ls->hash = h, ls->n = n, ls->l = copy;
	ls->next = c->itab[h & (c->icap - 1)];
	c->itab[h & (c->icap - 1)] = ls;
	c->icount++;
	return ls;
}

static int cmp_label(const void *a, const void *b)
{
	return strcmp(((const cm_label *)a)->name, ((const cm_label *)b)->name);
}

const ag__pls *ag__pls_make(ag__pctx *c, cm_label *l, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(l[i - 1].name, l[i].name) > 0) {
			qsort(l, n, sizeof(*l), cmp_label);
			break;
		}
	if (c->icount >= c->icap && grow_intern(c))
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory"), NULL;
	uint64_t h = hash_labels(l, n);
	for (ag__pls *e = c->itab[h & (c->icap - 1)]; e; e = e->next)
		if (e->hash == h && same_labels(e, l, n))
			return e;
	ag__pls *ls = intern_new(c, l, n, h);
	if (!ls)
		ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	return ls;
}

const char *ag__pls_get(const ag__pls *ls, const char *name)
{
	for (size_t i = 0; i < ls->n; i++)
		if (!strcmp(ls->l[i].name, name))
			return ls->l[i].value;
	return NULL;
}

/* The labels of ls for which keep(name) is true, interned. */
const ag__pls *ag__pls_filter(ag__pctx *c, const ag__pls *ls, const char *const *names, size_t nn, int keep,
			      int drop_name)
{
	cm_label tmp[MAX_LABELS];
	size_t k = 0;
	for (size_t i = 0; i < ls->n && k < MAX_LABELS; i++) {
		int listed = 0;
		for (size_t j = 0; j < nn && !listed; j++)
			listed = !strcmp(names[j], ls->l[i].name);
		if (drop_name && !strcmp(ls->l[i].name, "__name__"))
			continue;
		if (listed == keep)
			tmp[k++] = ls->l[i];
	}
	return ag__pls_make(c, tmp, k);
}

const ag__pls *ag__pls_drop_name(ag__pctx *c, const ag__pls *ls)
{
	if (ls->noname)
		return ls->noname;
	const ag__pls *r = ls;
	if (ag__pls_get(ls, "__name__"))
		r = ag__pls_filter(c, ls, NULL, 0, 0, 1);
	if (r)
		((ag__pls *)ls)->noname = r;
	return r;
}

/* ---- pointer maps ------------------------------------------------------------------------------- */

static size_t ptr_slot(const void *k, size_t cap)
{
	uint64_t x = (uint64_t)(uintptr_t)k * 0x9E3779B97F4A7C15ULL;
	return (size_t)(x >> 20) & (cap - 1);
}

static const void **pmap_find(pmap *m, const void *k)
{
	if (!m->cap)
		return NULL;
	for (size_t i = ptr_slot(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == k)
			return &m->vals[i];
		if (!m->keys[i])
			return NULL;
	}
}

static int pmap_put(pmap *m, cm_arena *a, const void *k, const void *v)
{
	if (2 * (m->n + 1) > m->cap) {
		pmap nm = {NULL, NULL, m->cap ? m->cap * 2 : 64, 0};
		nm.keys = cm_arena_calloc(a, nm.cap, sizeof(void *));
		nm.vals = cm_arena_calloc(a, nm.cap, sizeof(void *));
		if (!nm.keys || !nm.vals)
			return CM_ENOMEM;
		for (size_t i = 0; i < m->cap; i++)
			if (m->keys[i])
				pmap_put(&nm, a, m->keys[i], m->vals[i]);
		*m = nm;
	}
	size_t i = ptr_slot(k, m->cap);
	while (m->keys[i] && m->keys[i] != k)
		i = (i + 1) & (m->cap - 1);
	m->n += !m->keys[i];
	m->keys[i] = k, m->vals[i] = v;
	return CM_OK;
}

/* Label sets are interned, so a duplicate is a label set met twice: each check stamps the sets it meets
 * with a number of its own, no hashing. */
int ag__pvec_unique(ag__pctx *c, const ag__pval *v)
{
	if (v->n < 2)
		return CM_OK;
	uint64_t stamp = ++c->stamp;
	for (size_t i = 0; i < v->n; i++) {
		ag__pls *ls = (ag__pls *)v->v[i].ls;
		if (ls->stamp == stamp)
			return ag__pctx_fail(c, AG_PQL_EXECUTION, "vector cannot contain metrics with the same labelset");
		ls->stamp = stamp;
	}
	return CM_OK;
}

/* ---- loading selectors and subqueries ----------------------------------------------------------- */

static int series_push(ag__pctx *c, source *src, const ag__pls *ls, series **out)
{
	if (src->n == src->cap) {
		size_t cap = src->cap ? src->cap * 2 : 16;
		series *v = cm_arena_alloc(&c->qa, cap * sizeof(*v));
		if (!v)
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
		if (src->n)
			memcpy(v, src->v, src->n * sizeof(*v));
		src->v = v, src->cap = cap;
	}
	*out = &src->v[src->n++];
	**out = (series){ls, NULL, 0, 0};
	return CM_OK;
}

typedef struct load_ctx {
	ag__pctx *c;
	source *src;
	int drop_stale;
} load_ctx;

static int load_one(void *arg, const cm_label *labels, size_t nlabels, const cm_sample *s, size_t n)
{
	load_ctx *lc = arg;
	ag__pctx *c = lc->c;
	cm_label tmp[MAX_LABELS];
	if (check_deadline(c) || count_samples(c, n))
		return CM_EINVAL;
	if (nlabels > MAX_LABELS)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "series with more than %d labels", MAX_LABELS);
	memcpy(tmp, labels, nlabels * sizeof(*tmp));
	const ag__pls *ls = ag__pls_make(c, tmp, nlabels);
	series *se;
	if (!ls || series_push(c, lc->src, ls, &se))
		return CM_EINVAL;
	se->s = cm_arena_alloc(&c->qa, (n ? n : 1) * sizeof(cm_sample));
	if (!se->s)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	for (size_t i = 0; i < n; i++)
		if (!lc->drop_stale || !is_stale(s[i].v))
			se->s[se->n++] = s[i];
	return CM_OK;
}

static int64_t at_time(const ag__pctx *c, const ag__pexpr *e, int64_t t)
{
	switch (e->at) {
	case AG_AT_TIME: return e->at_ms;
	case AG_AT_START: return c->qstart;
	case AG_AT_END: return c->qend;
	default: return t;
	}
}

int64_t ag__pctx_ref_time(const ag__pctx *c, const ag__pexpr *sel, int64_t t)
{
	return at_time(c, sel, t) - sel->offset;
}

static int load_selector(ag__pctx *c, ag__pexpr *e, source *src)
{
	int64_t lo = at_time(c, e, c->rstart) - e->offset, hi = at_time(c, e, c->rend) - e->offset;
	int matrix = e->type == AG_PT_MATRIX;
	lo -= matrix ? e->range : c->o->lookback_ms;
	load_ctx lc = {c, src, matrix};
	int rc = ts_select(c->db, e->sel.matchers, e->sel.nmatchers, lo, hi, load_one, &lc);
	if (rc && !c->kind)
		ag__pctx_fail(c, AG_PQL_INTERNAL, "reading the tsdb: %s", cm_strerror(rc));
	return rc ? CM_EINVAL : CM_OK;
}

static int range_eval(ag__pctx *c, ag__pexpr *e, int64_t start, int64_t end, int64_t step, source *out);

static int load_subquery(ag__pctx *c, ag__pexpr *e, source *src)
{
	int64_t step = e->step ? e->step : c->o->subquery_step_ms;
	int64_t lo = at_time(c, e, c->rstart) - e->offset - e->range, hi = at_time(c, e, c->rend) - e->offset;
	int64_t start = step * (lo / step);
	if (start < lo)
		start += step;
	if ((hi - start) / step > 11000 * 100)
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "subquery has more than %d steps", 11000 * 100);
	int64_t rs = c->rstart, re = c->rend;
	int rc = range_eval(c, e->lhs, start, hi, step, src);
	c->rstart = rs, c->rend = re; /* range_eval restores rstep itself */
	return rc;
}

static int source_of(ag__pctx *c, ag__pexpr *e, source **out)
{
	source *src = e->state;
	if (!src) {
		src = cm_arena_calloc(&c->qa, 1, sizeof(*src));
		if (!src)
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
		e->state = src;
	}
	if (!src->loaded) {
		src->loaded = 1;
		int rc = e->kind == AG_P_SEL ? load_selector(c, e, src) : load_subquery(c, e, src);
		if (rc)
			return rc;
	}
	*out = src;
	return CM_OK;
}

/* ---- selectors at one step ---------------------------------------------------------------------- */

/* Number of samples with t_ms <= t. */
static size_t upper_bound(const cm_sample *s, size_t n, int64_t t)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s[mid].t_ms <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A range selector or subquery: the windows [ref - range, ref] of its series that hold samples. */
static int eval_windows(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	source *src = NULL;
	int rc = source_of(c, e, &src);
	if (rc)
		return rc;
	int64_t ref = at_time(c, e, t) - e->offset;
	ag__pwin *m = ag__pctx_alloc(c, src->n * sizeof(*m));
	if (!m)
		return CM_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < src->n; i++) {
		const series *se = &src->v[i];
		size_t hi = upper_bound(se->s, se->n, ref), lo = upper_bound(se->s, hi, ref - e->range - 1);
		if (hi > lo)
			m[k++] = (ag__pwin){se->ls, se->s + lo, hi - lo};
	}
	*out = (ag__pval){.type = AG_PT_MATRIX, .m = m, .n = k};
	return CM_OK;
}

/* ---- operators ---------------------------------------------------------------------------------- */

static int eval(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out);

static double binop(int op, double l, double r, int *keep)
{
	*keep = 1;
	switch (op) {
	case AG_OP_ADD: return l + r;
	case AG_OP_SUB: return l - r;
	case AG_OP_MUL: return l * r;
	case AG_OP_DIV: return l / r;
	case AG_OP_MOD: return fmod(l, r);
	case AG_OP_POW: return pow(l, r);
	case AG_OP_ATAN2: return atan2(l, r);
	case AG_OP_EQ: *keep = l == r; return l;
	case AG_OP_NE: *keep = l != r; return l;
	case AG_OP_GT: *keep = l > r; return l;
	case AG_OP_LT: *keep = l < r; return l;
	case AG_OP_GE: *keep = l >= r; return l;
	case AG_OP_LE: *keep = l <= r; return l;
	default: return NAN;
	}
}

static int is_arith(int op)
{
	return op >= AG_OP_ADD;
}

/* Prometheus 2.42's shouldDropMetricName: arithmetic except atan2. */
static int drops_name(int op)
{
	return is_arith(op) && op != AG_OP_ATAN2;
}

static int eval_neg(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	int rc = eval(c, e->lhs, t, out);
	if (rc || out->type == AG_PT_SCALAR)
		return rc ? rc : (out->num = -out->num, CM_OK);
	for (size_t i = 0; i < out->n; i++) {
		out->v[i].v = -out->v[i].v;
		out->v[i].t = t;
		if (!(out->v[i].ls = ag__pls_drop_name(c, out->v[i].ls)))
			return CM_ENOMEM;
	}
	return ag__pvec_unique(c, out);
}

static int vec_scalar(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *vec, double s, int swap, ag__pval *out)
{
	size_t k = 0;
	for (size_t i = 0; i < vec->n; i++) {
		ag__psmp x = vec->v[i];
		int keep;
		double v = swap ? binop(e->op, s, x.v, &keep) : binop(e->op, x.v, s, &keep);
		if (!is_arith(e->op) && swap)
			v = x.v;
		if (e->ret_bool)
			v = keep, keep = 1;
		if (!keep)
			continue;
		if ((drops_name(e->op) || e->ret_bool) && !(x.ls = ag__pls_drop_name(c, x.ls)))
			return CM_ENOMEM;
		vec->v[k++] = (ag__psmp){x.ls, v, t};
	}
	*out = *vec;
	out->n = k;
	return drops_name(e->op) || e->ret_bool ? ag__pvec_unique(c, out) : CM_OK;
}

typedef struct bin_state {
	pmap sig;     /* label set -> matching signature */
	pmap result;  /* many-side label set -> result label set (without group_x labels) */
} bin_state;

static const ag__pls *signature(ag__pctx *c, ag__pexpr *e, bin_state *st, const ag__pls *ls)
{
	const void **hit = pmap_find(&st->sig, ls);
	if (hit)
		return *hit;
	const ag__pls *s = e->on ? ag__pls_filter(c, ls, e->labels, e->nlabels, 1, 0)
				 : ag__pls_filter(c, ls, e->labels, e->nlabels, 0, 1);
	if (s && pmap_put(&st->sig, &c->qa, ls, s))
		s = NULL;
	return s;
}

static const ag__pls *result_labels(ag__pctx *c, ag__pexpr *e, bin_state *st, const ag__pls *many,
				    const ag__pls *one)
{
	const void **hit = e->ninclude ? NULL : pmap_find(&st->result, many);
	if (hit)
		return *hit;
	cm_label tmp[MAX_LABELS];
	size_t k = 0;
	for (size_t i = 0; i < many->n && k < MAX_LABELS; i++) {
		const char *name = many->l[i].name;
		int listed = 0;
		for (size_t j = 0; j < e->nlabels && !listed; j++)
			listed = !strcmp(name, e->labels[j]);
		for (size_t j = 0; j < e->ninclude; j++)
			if (!strcmp(name, e->include[j]))
				goto skip;
		if ((drops_name(e->op) || e->ret_bool) && !strcmp(name, "__name__"))
			continue;
		if (e->card == AG_CARD_ONE_ONE && listed != e->on)
			continue;
		tmp[k++] = many->l[i];
skip:;
	}
	for (size_t j = 0; j < e->ninclude && k < MAX_LABELS; j++) {
		const char *v = ag__pls_get(one, e->include[j]);
		if (v && *v)
			tmp[k++] = (cm_label){e->include[j], v};
	}
	const ag__pls *r = ag__pls_make(c, tmp, k);
	if (r && !e->ninclude && pmap_put(&st->result, &c->qa, many, r))
		r = NULL;
	return r;
}

static int sig_map(ag__pctx *c, ag__pexpr *e, bin_state *st, const ag__pval *v, pmap *m, int unique, const char *side)
{
	for (size_t i = 0; i < v->n; i++) {
		const ag__pls *s = signature(c, e, st, v->v[i].ls);
		if (!s)
			return CM_ENOMEM;
		if (unique && pmap_find(m, s))
			return ag__pctx_fail(c, AG_PQL_EXECUTION, "found duplicate series for the match group on the %s "
					     "hand-side of the operation;many-to-many matching not allowed: matching "
					     "labels must be unique on one side", side);
		if (pmap_put(m, c->sa, s, &v->v[i]))
			return CM_ENOMEM;
	}
	return CM_OK;
}

static int set_op(ag__pctx *c, ag__pexpr *e, bin_state *st, ag__pval *l, ag__pval *r, int64_t t, ag__pval *out)
{
	pmap rs = {0}, ls = {0};
	int rc = sig_map(c, e, st, r, &rs, 0, "right");
	if (!rc && e->op == AG_OP_OR)
		rc = sig_map(c, e, st, l, &ls, 0, "left");
	ag__psmp *v = rc ? NULL : ag__pctx_alloc(c, (l->n + r->n) * sizeof(*v));
	if (!v)
		return CM_EINVAL;
	size_t k = 0;
	for (size_t i = 0; i < l->n; i++) {
		int in_r = pmap_find(&rs, signature(c, e, st, l->v[i].ls)) != NULL;
		if (e->op == AG_OP_OR || (e->op == AG_OP_AND) == in_r)
			v[k++] = (ag__psmp){l->v[i].ls, l->v[i].v, t};
	}
	for (size_t i = 0; e->op == AG_OP_OR && i < r->n; i++)
		if (!pmap_find(&ls, signature(c, e, st, r->v[i].ls)))
			v[k++] = (ag__psmp){r->v[i].ls, r->v[i].v, t};
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

static int vec_vec(ag__pctx *c, ag__pexpr *e, bin_state *st, ag__pval *l, ag__pval *r, int64_t t, ag__pval *out)
{
	int swap = e->card == AG_CARD_ONE_MANY;
	ag__pval *many = swap ? r : l, *one = swap ? l : r;
	pmap ones = {0}, seen = {0};
	int rc = sig_map(c, e, st, one, &ones, 1, swap ? "left" : "right");
	ag__psmp *v = rc ? NULL : ag__pctx_alloc(c, many->n * sizeof(*v));
	if (!v)
		return CM_EINVAL;
	size_t k = 0;
	for (size_t i = 0; i < many->n; i++) {
		const ag__pls *sig = signature(c, e, st, many->v[i].ls);
		const void **hit = sig ? pmap_find(&ones, sig) : NULL;
		if (!hit)
			continue;
		const ag__psmp *o = *hit;
		int keep;
		double val = swap ? binop(e->op, o->v, many->v[i].v, &keep) : binop(e->op, many->v[i].v, o->v, &keep);
		if (e->ret_bool)
			val = keep, keep = 1;
		if (!keep)
			continue;
		const ag__pls *res = result_labels(c, e, st, many->v[i].ls, o->ls);
		if (!res)
			return CM_ENOMEM;
		const void *key = e->card == AG_CARD_ONE_ONE ? (const void *)sig : (const void *)res;
		if (pmap_find(&seen, key))
			return ag__pctx_fail(c, AG_PQL_EXECUTION, e->card == AG_CARD_ONE_ONE
					     ? "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
					     : "multiple matches for labels: grouping labels must ensure unique matches");
		if (pmap_put(&seen, c->sa, key, key))
			return CM_ENOMEM;
		v[k++] = (ag__psmp){res, val, t};
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

static int eval_bin(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	ag__pval l, r;
	int rc = eval(c, e->lhs, t, &l);
	rc = rc ? rc : eval(c, e->rhs, t, &r);
	if (rc)
		return rc;
	if (l.type == AG_PT_SCALAR && r.type == AG_PT_SCALAR) {
		int keep;
		double v = binop(e->op, l.num, r.num, &keep);
		*out = (ag__pval){.type = AG_PT_SCALAR, .num = is_arith(e->op) ? v : keep};
		return CM_OK;
	}
	if (l.type == AG_PT_SCALAR)
		return vec_scalar(c, e, t, &r, l.num, 1, out);
	if (r.type == AG_PT_SCALAR)
		return vec_scalar(c, e, t, &l, r.num, 0, out);
	bin_state *st = e->state;
	if (!st && !(st = e->state = cm_arena_calloc(&c->qa, 1, sizeof(*st))))
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	if (e->card == AG_CARD_MANY_MANY)
		return set_op(c, e, st, &l, &r, t, out);
	return vec_vec(c, e, st, &l, &r, t, out);
}

/* ---- aggregation -------------------------------------------------------------------------------- */

typedef struct agg_state {
	pmap group;          /* input label set -> group number + 1 (as a pointer-sized integer) */
	const ag__pls **out; /* group labels */
	size_t n, cap;
	struct acc *fused;   /* over a streamed input: every step's accumulators, step by step (eval_fused) */
	int fuse_tried;
} agg_state;

typedef struct acc {
	double value, mean, count;
	size_t first, nvals;
} acc;

static int eval_fused(ag__pctx *c, ag__pexpr *e, agg_state *st, int64_t t, ag__pval *out);

static const ag__pls *group_labels(ag__pctx *c, const ag__pexpr *e, const ag__pls *ls)
{
	return e->without ? ag__pls_filter(c, ls, e->labels, e->nlabels, 0, 1) : ag__pls_filter(c, ls, e->labels, e->nlabels, 1, 0);
}

static int group_of(ag__pctx *c, ag__pexpr *e, agg_state *st, const ag__pls *ls, size_t *gi)
{
	if (ls->memo_node == e) {
		*gi = ls->memo_group;
		return CM_OK;
	}
	const void **hit = pmap_find(&st->group, ls);
	if (hit) {
		*gi = (size_t)(uintptr_t)*hit - 1;
		return CM_OK;
	}
	const ag__pls *g = group_labels(c, e, ls);
	if (!g)
		return CM_ENOMEM;
	size_t i = 0;
	while (i < st->n && st->out[i] != g)
		i++;
	if (i == st->n && st->n == st->cap) {
		/* groups are few next to series; a linear scan on a new series keeps this simple */
		size_t cap = st->cap ? st->cap * 2 : 16;
		const ag__pls **o = cm_arena_alloc(&c->qa, cap * sizeof(*o));
		if (!o)
			return CM_ENOMEM;
		if (st->n)
			memcpy(o, st->out, st->n * sizeof(*o));
		st->out = o, st->cap = cap;
	}
	if (i == st->n)
		st->out[st->n++] = g;
	*gi = i;
	((ag__pls *)ls)->memo_node = e, ((ag__pls *)ls)->memo_group = i;
	return pmap_put(&st->group, &c->qa, ls, (const void *)(uintptr_t)(i + 1));
}

static void acc_add(int op, acc *a, double v)
{
	if (a->count == 0) {
		a->value = op == AG_AGG_STDDEV || op == AG_AGG_STDVAR ? 0 : v;
		a->mean = v, a->count = 1;
		return;
	}
	a->count++;
	switch (op) {
	case AG_AGG_SUM: a->value += v; break;
	case AG_AGG_AVG:
		if (isinf(a->mean)) {
			if (isinf(v) && (a->mean > 0) == (v > 0))
				break;
			if (!isinf(v) && !isnan(v))
				break;
		}
		a->mean += v / a->count - a->mean / a->count;
		break;
	case AG_AGG_MIN: if (a->value > v || isnan(a->value)) a->value = v; break;
	case AG_AGG_MAX: if (a->value < v || isnan(a->value)) a->value = v; break;
	case AG_AGG_STDDEV:
	case AG_AGG_STDVAR: {
		double delta = v - a->mean;
		a->mean += delta / a->count;
		a->value += delta * (v - a->mean);
		break;
	}
	default: break;
	}
}

static double acc_result(int op, const acc *a)
{
	switch (op) {
	case AG_AGG_AVG: return a->mean;
	case AG_AGG_COUNT: return a->count;
	case AG_AGG_GROUP: return 1;
	case AG_AGG_STDVAR: return a->value / a->count;
	case AG_AGG_STDDEV: return sqrt(a->value / a->count);
	default: return a->value;
	}
}

/* topk/bottomk order: NaN always loses. */
static int topk_before(int bottom, double a, double b)
{
	if (isnan(a) || isnan(b))
		return !isnan(a) && isnan(b);
	return bottom ? a < b : a > b;
}

static int topk_group(ag__pctx *c, int bottom, int64_t k, const ag__psmp *const *in, size_t n, ag__psmp *out,
		      size_t *nout, int64_t t)
{
	(void)c;
	size_t take = (uint64_t)k < n ? (size_t)k : n;
	for (size_t i = 0; i < take; i++) { /* selection: k is small next to n in practice */
		size_t best = i;
		for (size_t j = i + 1; j < n; j++)
			if (topk_before(bottom, in[j]->v, in[best]->v))
				best = j;
		const ag__psmp *tmp = ((const ag__psmp **)in)[i];
		((const ag__psmp **)in)[i] = in[best];
		((const ag__psmp **)in)[best] = tmp;
		out[(*nout)++] = (ag__psmp){in[i]->ls, in[i]->v, t};
	}
	return CM_OK;
}

static int agg_lists(ag__pctx *c, ag__pexpr *e, const ag__pval *in, const size_t *gi, size_t ng, double param,
		     int64_t t, ag__pval *out)
{
	size_t *off = ag__pctx_alloc(c, (ng + 1) * sizeof(*off)), *fill = ag__pctx_alloc(c, (ng + 1) * sizeof(*fill));
	const ag__psmp **byg = ag__pctx_alloc(c, in->n * sizeof(*byg));
	ag__psmp *v = ag__pctx_alloc(c, (in->n > ng ? in->n : ng) * sizeof(*v));
	double *vals = ag__pctx_alloc(c, in->n * sizeof(*vals));
	if (!off || !fill || !byg || !v || !vals)
		return CM_ENOMEM;
	memset(off, 0, (ng + 1) * sizeof(*off));
	for (size_t i = 0; i < in->n; i++)
		off[gi[i] + 1]++;
	for (size_t g = 0; g < ng; g++)
		off[g + 1] += off[g];
	memcpy(fill, off, (ng + 1) * sizeof(*off));
	for (size_t i = 0; i < in->n; i++)
		byg[fill[gi[i]]++] = &in->v[i];
	size_t k = 0;
	agg_state *st = e->state;
	for (size_t g = 0; g < ng; g++) {
		size_t n = off[g + 1] - off[g];
		if (!n)
			continue;
		if (e->op == AG_AGG_QUANTILE) {
			for (size_t i = 0; i < n; i++)
				vals[i] = byg[off[g] + i]->v;
			v[k++] = (ag__psmp){st->out[g], ag__pquantile(param, vals, n), t};
		} else if (param >= 1) {
			int64_t kk = param > 9e18 ? INT64_MAX : (int64_t)param;
			topk_group(c, e->op == AG_AGG_BOTTOMK, kk, byg + off[g], n, v, &k, t);
		}
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

static int count_values(ag__pctx *c, ag__pexpr *e, const ag__pval *in, const char *label, int64_t t, ag__pval *out)
{
	if (!cm_label_name_valid(label))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "invalid label name \"%s\"", label);
	ag__psmp *v = ag__pctx_alloc(c, in->n * sizeof(*v));
	pmap pos = {0};
	if (!v)
		return CM_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < in->n; i++) {
		const ag__pls *g = group_labels(c, e, in->v[i].ls);
		cm_label tmp[MAX_LABELS + 1];
		char num[CM_FMT_DOUBLE_MAX];
		if (!g)
			return CM_ENOMEM;
		size_t n = 0;
		for (size_t j = 0; j < g->n; j++)
			if (strcmp(g->l[j].name, label))
				tmp[n++] = g->l[j];
		cm_fmt_double(num, sizeof(num), in->v[i].v);
		tmp[n++] = (cm_label){label, num};
		const ag__pls *ls = ag__pls_make(c, tmp, n);
		if (!ls)
			return CM_ENOMEM;
		const void **hit = pmap_find(&pos, ls);
		if (hit) {
			v[(size_t)(uintptr_t)*hit - 1].v++;
			continue;
		}
		v[k] = (ag__psmp){ls, 1, t};
		if (pmap_put(&pos, c->sa, ls, (const void *)(uintptr_t)++k))
			return CM_ENOMEM;
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

static int eval_agg(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	ag__pval in, param = {0};
	agg_state *st = e->state;
	if (!st && !(st = e->state = cm_arena_calloc(&c->qa, 1, sizeof(*st))))
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	if (st->fused)
		return eval_fused(c, e, st, t, out);
	int rc = e->param ? eval(c, e->param, t, &param) : CM_OK;
	rc = rc ? rc : eval(c, e->lhs, t, &in);
	if (rc)
		return rc;
	if (e->op == AG_AGG_COUNT_VALUES)
		return count_values(c, e, &in, param.str, t, out);
	if (!st->fuse_tried && !e->param) {
		st->fuse_tried = 1;
		if ((rc = eval_fused(c, e, st, t, out)) != CM_AGAIN)
			return rc;
	}
	size_t *gi = ag__pctx_alloc(c, in.n * sizeof(*gi));
	for (size_t i = 0; gi && i < in.n; i++)
		if (group_of(c, e, st, in.v[i].ls, &gi[i]))
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	if (!gi)
		return CM_ENOMEM;
	if ((e->op == AG_AGG_TOPK || e->op == AG_AGG_BOTTOMK) &&
	    !(param.num >= -9223372036854775808.0 && param.num <= 9223372036854775807.0))
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "Scalar value %s overflows int64",
				     isnan(param.num) ? "NaN" : param.num > 0 ? "+Inf" : "-Inf");
	if (e->op == AG_AGG_TOPK || e->op == AG_AGG_BOTTOMK || e->op == AG_AGG_QUANTILE)
		return agg_lists(c, e, &in, gi, st->n, param.num, t, out);
	acc *a = ag__pctx_alloc(c, st->n * sizeof(*a));
	ag__psmp *v = ag__pctx_alloc(c, st->n * sizeof(*v));
	if (!a || !v)
		return CM_ENOMEM;
	memset(a, 0, st->n * sizeof(*a));
	for (size_t i = 0; i < in.n; i++)
		acc_add(e->op, &a[gi[i]], in.v[i].v);
	size_t k = 0;
	for (size_t g = 0; g < st->n; g++)
		if (a[g].count > 0)
			v[k++] = (ag__psmp){st->out[g], acc_result(e->op, &a[g]), t};
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

/* ---- streamed selectors and range functions ------------------------------------------------------ */

/* An instant-vector selector, and rate(x[5m]) and its kin over a plain range selector, are computed
 * while ts_select_par hands over each series: indices slide over its samples through every step of the
 * range, and only the per-step results are kept (a value, a flag and for selectors the sample's time
 * per step) instead of every sample. Steps are those of the range evaluation the node belongs to. The
 * callback runs on two threads at once (the tsdb's worker decodes and computes some series while the
 * query's thread does others): the bookkeeping (guards, interning, the arena) is done under the
 * stream's mutex, the per-step arithmetic outside it, and series are kept by their rank in label-set
 * order, so the answer does not depend on which thread took which series. */
typedef struct stream_series {
	const ag__pls *ls;
	double *v;
	int64_t *t;    /* selectors: the sample's time (timestamp()) */
	uint8_t *has;
} stream_series;

typedef struct stream_state {
	ag__pctx *c;
	const ag__pexpr *call, *sel;  /* call is NULL for a plain selector */
	stream_series **v;  /* by rank while loading (NULL where none came), then packed in rank order */
	size_t n, cap, nsteps;
	int64_t start, step;
	pmap outs;  /* output label sets seen, to know whether duplicates are possible */
	int dups, keep_name;
	pthread_mutex_t mu; /* the context, its arena, v and outs while loading */
} stream_state;

/* s without its stale markers: s itself, or a copy in *own (malloc'd) when it has any; NULL = no memory. */
static const cm_sample *without_stale(const cm_sample *s, size_t *n, cm_sample **own)
{
	size_t i = 0;
	while (i < *n && !is_stale(s[i].v))
		i++;
	if (i == *n)
		return s;
	if (!(*own = malloc(*n * sizeof(**own))))
		return NULL;
	size_t k = 0;
	for (i = 0; i < *n; i++)
		if (!is_stale(s[i].v))
			(*own)[k++] = s[i];
	*n = k;
	return *own;
}

/* Registers the series of rank with its (interned) output labels; under st->mu. */
static int stream_push(stream_state *st, size_t rank, const ag__pls *ls, stream_series **out)
{
	ag__pctx *c = st->c;
	if (rank >= st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 64;
		cap = cap > rank ? cap : rank + 1;
		stream_series **v = cm_arena_calloc(&c->qa, cap, sizeof(*v));
		if (!v)
			return CM_ENOMEM;
		if (st->n)
			memcpy(v, st->v, st->n * sizeof(*v));
		st->v = v, st->cap = cap;
	}
	stream_series *se = cm_arena_alloc(&c->qa, sizeof(*se));
	if (!se)
		return CM_ENOMEM;
	se->ls = ls;
	se->v = cm_arena_alloc(&c->qa, st->nsteps * sizeof(double));
	se->t = st->call ? NULL : cm_arena_alloc(&c->qa, st->nsteps * sizeof(int64_t));
	se->has = cm_arena_alloc(&c->qa, st->nsteps);
	if (!se->v || !se->has || (!st->call && !se->t))
		return CM_ENOMEM;
	st->v[rank] = se;
	st->n = rank + 1 > st->n ? rank + 1 : st->n;
	if (st->call && pmap_find(&st->outs, ls))
		st->dups = 1;
	*out = se;
	return st->call ? pmap_put(&st->outs, &c->qa, ls, ls) : CM_OK;
}

/* The selector's value at every step: the newest sample within the lookback, unless it is stale. */
static void stream_vector(stream_state *st, stream_series *se, const cm_sample *s, size_t n)
{
	ag__pctx *c = st->c;
	size_t hi = 0;
	for (size_t j = 0; j < st->nsteps; j++) {
		int64_t t = st->start + (int64_t)j * st->step, ref = at_time(c, st->sel, t) - st->sel->offset;
		while (hi < n && s[hi].t_ms <= ref)
			hi++;
		se->has[j] = hi && s[hi - 1].t_ms >= ref - c->o->lookback_ms && !is_stale(s[hi - 1].v);
		if (se->has[j])
			se->v[j] = s[hi - 1].v, se->t[j] = s[hi - 1].t_ms;
	}
}

/* rate and increase: the counter resets of the series are found once; a window adds those inside it,
 * in order, exactly as extrapolatedRate's loop would (the loop's first comparison is with 0, which for
 * a negative first sample adds 0). */
static int stream_counter(stream_state *st, stream_series *se, const cm_sample *s, size_t n, int kind)
{
	size_t *resets = malloc((n ? n : 1) * sizeof(*resets)), nr = 0, r = 0, lo = 0, hi = 0;
	ag__pxmemo memo = {0};
	if (!resets)
		return CM_ENOMEM;
	for (size_t i = 1; i < n; i++)
		if (s[i].v < s[i - 1].v)
			resets[nr++] = i;
	for (size_t j = 0; j < st->nsteps; j++) {
		int64_t t = st->start + (int64_t)j * st->step, ref = at_time(st->c, st->sel, t) - st->sel->offset;
		while (hi < n && s[hi].t_ms <= ref)
			hi++;
		while (lo < hi && s[lo].t_ms < ref - st->sel->range)
			lo++;
		se->has[j] = hi - lo >= 2;
		if (!se->has[j])
			continue;
		while (r < nr && resets[r] <= lo)
			r++;
		double result = s[hi - 1].v - s[lo].v;
		for (size_t k = r; k < nr && resets[k] < hi; k++)
			result += s[resets[k] - 1].v;
		ag__pwin w = {se->ls, s + lo, hi - lo};
		se->v[j] = ag__pfunc_extrapolate(&w, ref, st->sel->range, 1, kind == 2, result, &memo);
	}
	free(resets);
	return CM_OK;
}

static void stream_windows(stream_state *st, stream_series *se, const cm_sample *s, size_t n)
{
	size_t lo = 0, hi = 0;
	for (size_t j = 0; j < st->nsteps; j++) {
		int64_t t = st->start + (int64_t)j * st->step, ref = at_time(st->c, st->sel, t) - st->sel->offset;
		while (hi < n && s[hi].t_ms <= ref)
			hi++;
		while (lo < hi && s[lo].t_ms < ref - st->sel->range)
			lo++;
		ag__pwin w = {se->ls, s + lo, hi - lo};
		se->has[j] = w.n && ag__pfunc_window(st->call, &w, ref, t, &se->v[j]);
	}
}

/* The guards, the labels and the series' place for one callback; under st->mu. */
static int stream_begin(stream_state *st, size_t rank, const cm_label *labels, size_t nlabels, size_t n,
			stream_series **se)
{
	ag__pctx *c = st->c;
	cm_label tmp[MAX_LABELS];
	if (c->kind || check_deadline(c) || count_samples(c, n + st->nsteps))
		return CM_EINVAL;
	if (nlabels > MAX_LABELS)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "too many labels");
	memcpy(tmp, labels, nlabels * sizeof(*tmp));
	const ag__pls *ls = ag__pls_make(c, tmp, nlabels);
	if (ls && !st->keep_name)
		ls = ag__pls_drop_name(c, ls);
	if (!ls || stream_push(st, rank, ls, se))
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	return CM_OK;
}

static int stream_one(void *arg, size_t rank, const cm_label *labels, size_t nlabels, const cm_sample *s, size_t n)
{
	stream_state *st = arg;
	stream_series *se;
	cm_sample *own = NULL;
	pthread_mutex_lock(&st->mu);
	int rc = stream_begin(st, rank, labels, nlabels, n, &se);
	pthread_mutex_unlock(&st->mu);
	if (rc)
		return rc;
	int kind = st->call ? ag__pfunc_counter_rate(st->call) : 0;
	if (st->call && !(s = without_stale(s, &n, &own)))
		rc = CM_ENOMEM;
	else if (kind)
		rc = stream_counter(st, se, s, n, kind);
	else if (st->call)
		stream_windows(st, se, s, n);
	else
		stream_vector(st, se, s, n);
	free(own);
	if (rc) {
		pthread_mutex_lock(&st->mu);
		ag__pctx_fail(st->c, AG_PQL_INTERNAL, "out of memory");
		pthread_mutex_unlock(&st->mu);
	}
	return rc;
}

/* e is the selector (call NULL) or the call whose first argument is the range selector. */
static int stream_load(ag__pctx *c, ag__pexpr *e, const ag__pexpr *call, stream_state **out)
{
	const ag__pexpr *sel = call ? call->args[0] : e;
	while (sel->kind == AG_P_PAREN)
		sel = sel->lhs;
	stream_state *st = cm_arena_calloc(&c->qa, 1, sizeof(*st));
	if (!st)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	*st = (stream_state){.c = c, .call = call, .sel = sel, .start = c->rstart, .step = c->rstep,
			     .keep_name = !call || !strcmp(call->func->name, "last_over_time")};
	st->nsteps = (size_t)((c->rend - c->rstart) / c->rstep) + 1;
	e->state = st;
	int64_t lo = at_time(c, sel, c->rstart) - sel->offset - (call ? sel->range : c->o->lookback_ms);
	int64_t hi = at_time(c, sel, c->rend) - sel->offset;
	pthread_mutex_init(&st->mu, NULL);
	int rc = ts_select_par(c->db, sel->sel.matchers, sel->sel.nmatchers, lo, hi, stream_one, st);
	pthread_mutex_destroy(&st->mu);
	size_t k = 0;
	for (size_t i = 0; i < st->n; i++)
		if (st->v[i])
			st->v[k++] = st->v[i];
	st->n = k;
	if (rc && !c->kind)
		ag__pctx_fail(c, AG_PQL_INTERNAL, "reading the tsdb: %s", cm_strerror(rc));
	*out = st;
	return rc ? CM_EINVAL : CM_OK;
}

static int eval_stream(ag__pctx *c, ag__pexpr *e, int is_call, int64_t t, ag__pval *out)
{
	stream_state *st = e->state;
	int rc = st ? CM_OK : stream_load(c, e, is_call ? e : NULL, &st);
	if (rc)
		return rc;
	size_t j = (size_t)((t - st->start) / st->step), k = 0;
	ag__psmp *v = ag__pctx_alloc(c, (st->n ? st->n : 1) * sizeof(*v));
	if (!v)
		return CM_ENOMEM;
	for (size_t i = 0; j < st->nsteps && i < st->n; i++)
		if (st->v[i]->has[j])
			v[k++] = (ag__psmp){st->v[i]->ls, st->v[i]->v[j], is_call ? t : st->v[i]->t[j]};
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return st->dups ? ag__pvec_unique(c, out) : CM_OK;
}

/* ---- aggregations over a streamed input ---------------------------------------------------------- */

#define FUSED_MAX (8u << 20) /* accumulators (steps x groups) */

/* The stream under e's input when it is a streamed selector or range function, else NULL. */
static stream_state *streamed_input(ag__pexpr *e)
{
	ag__pexpr *in = e->lhs;
	while (in->kind == AG_P_PAREN)
		in = in->lhs;
	int streamed = (in->kind == AG_P_SEL && in->type != AG_PT_MATRIX) ||
		       (in->kind == AG_P_CALL && ag__pfunc_streamable(in));
	return streamed ? in->state : NULL;
}

/* Fills every step's accumulators of sum by (x) and its kin once, series by series in rank order (the
 * order in which each step would add them), instead of a vector of every series at every step; then
 * answers each step from them. CM_AGAIN when the input is not streamed, may hold duplicate label sets
 * (the per-step path reports them) or the table would be too large: the caller goes step by step. */
static int fused_build(ag__pctx *c, ag__pexpr *e, agg_state *st, stream_state *ss)
{
	size_t *gi = cm_arena_alloc(&c->qa, (ss->n ? ss->n : 1) * sizeof(*gi));
	if (!gi)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	for (size_t i = 0; i < ss->n; i++) {
		gi[i] = SIZE_MAX;
		if (memchr(ss->v[i]->has, 1, ss->nsteps) && group_of(c, e, st, ss->v[i]->ls, &gi[i]))
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	}
	size_t ng = st->n;
	if (ng && ss->nsteps > FUSED_MAX / ng)
		return CM_AGAIN;
	acc *a = cm_arena_calloc(&c->qa, ss->nsteps * ng + 1, sizeof(*a));
	if (!a)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	for (size_t i = 0; i < ss->n; i++)
		for (size_t j = 0; gi[i] != SIZE_MAX && j < ss->nsteps; j++)
			if (ss->v[i]->has[j])
				acc_add(e->op, &a[j * ng + gi[i]], ss->v[i]->v[j]);
	st->fused = a;
	return CM_OK;
}

static int eval_fused(ag__pctx *c, ag__pexpr *e, agg_state *st, int64_t t, ag__pval *out)
{
	stream_state *ss = streamed_input(e);
	int simple = e->op != AG_AGG_TOPK && e->op != AG_AGG_BOTTOMK && e->op != AG_AGG_QUANTILE &&
		     e->op != AG_AGG_COUNT_VALUES;
	if (!st->fused) {
		int rc = ss && simple && !ss->dups ? fused_build(c, e, st, ss) : CM_AGAIN;
		if (rc)
			return rc;
	}
	size_t j = (size_t)((t - ss->start) / ss->step), k = 0;
	ag__psmp *v = ag__pctx_alloc(c, (st->n ? st->n : 1) * sizeof(*v));
	if (!v)
		return CM_ENOMEM;
	for (size_t g = 0; j < ss->nsteps && g < st->n; g++) {
		const acc *a = &st->fused[j * st->n + g];
		if (a->count > 0)
			v[k++] = (ag__psmp){st->out[g], acc_result(e->op, a), t};
	}
	*out = (ag__pval){.type = AG_PT_VECTOR, .v = v, .n = k};
	return CM_OK;
}

/* ---- functions and dispatch --------------------------------------------------------------------- */

static int eval_call(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	if (ag__pfunc_streamable(e))
		return eval_stream(c, e, 1, t, out);
	ag__pval *args = ag__pctx_alloc(c, (e->nargs + 1) * sizeof(*args));
	if (!args)
		return CM_ENOMEM;
	for (size_t i = 0; i < e->nargs; i++) {
		int rc = eval(c, e->args[i], t, &args[i]);
		if (rc)
			return rc;
	}
	return ag__pfunc_call(c, e, t, args, out);
}

static int eval(ag__pctx *c, ag__pexpr *e, int64_t t, ag__pval *out)
{
	switch (e->kind) {
	case AG_P_NUM: *out = (ag__pval){.type = AG_PT_SCALAR, .num = e->num}; return CM_OK;
	case AG_P_STR: *out = (ag__pval){.type = AG_PT_STRING, .str = e->str}; return CM_OK;
	case AG_P_PAREN: return eval(c, e->lhs, t, out);
	case AG_P_NEG: return eval_neg(c, e, t, out);
	case AG_P_SEL: return e->type == AG_PT_MATRIX ? eval_windows(c, e, t, out) : eval_stream(c, e, 0, t, out);
	case AG_P_SUBQ: return eval_windows(c, e, t, out);
	case AG_P_CALL: return eval_call(c, e, t, out);
	case AG_P_AGG: return eval_agg(c, e, t, out);
	case AG_P_BIN: return eval_bin(c, e, t, out);
	}
	return ag__pctx_fail(c, AG_PQL_INTERNAL, "unknown node");
}

/* ---- range evaluation ---------------------------------------------------------------------------- */

static int append_point(ag__pctx *c, source *out, pmap *idx, const ag__pls *ls, int64_t t, double v)
{
	const void **hit = pmap_find(idx, ls);
	series *se;
	if (hit) {
		se = &out->v[(size_t)(uintptr_t)*hit - 1];
	} else {
		if (series_push(c, out, ls, &se) || pmap_put(idx, &c->qa, ls, (const void *)(uintptr_t)out->n))
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	}
	if (se->n && se->s[se->n - 1].t_ms == t)
		return ag__pctx_fail(c, AG_PQL_EXECUTION, "vector cannot contain metrics with the same labelset");
	if (se->n == se->cap) {
		size_t cap = se->cap ? se->cap * 2 : 8;
		cm_sample *s = realloc(se->s, cap * sizeof(*s));
		if (!s)
			return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
		se->s = s, se->cap = cap;
	}
	se->s[se->n++] = (cm_sample){t, v};
	return count_samples(c, 1);
}

static int range_eval(ag__pctx *c, ag__pexpr *e, int64_t start, int64_t end, int64_t step, source *out)
{
	cm_arena sa, *saved = c->sa;
	pmap idx = {0};
	int rc = CM_OK;
	cm_arena_init(&sa, 0);
	int64_t saved_step = c->rstep;
	c->sa = &sa, c->rstart = start, c->rend = end, c->rstep = step;
	out->owned = 1, out->next_owned = c->owned, c->owned = out;
	for (int64_t t = start; t <= end && !rc; t += step) {
		cm_arena_reset(&sa);
		ag__pval v;
		rc = check_deadline(c);
		rc = rc ? rc : eval(c, e, t, &v);
		if (!rc && v.type == AG_PT_SCALAR)
			rc = append_point(c, out, &idx, c->empty, t, v.num);
		for (size_t i = 0; !rc && v.type == AG_PT_VECTOR && i < v.n; i++)
			rc = append_point(c, out, &idx, v.v[i].ls, t, v.v[i].v);
	}
	c->sa = saved, c->rstep = saved_step;
	cm_arena_close(&sa);
	return rc;
}

/* ---- answers ------------------------------------------------------------------------------------ */

static int put_value(cm_buf *b, double v)
{
	char tmp[CM_FMT_DOUBLE_MAX];
	cm_fmt_double(tmp, sizeof(tmp), v);
	return cm_buf_put_json_str(b, tmp);
}

/* [t,"v"] with t as ag__put_json_time writes it (seconds, up to 3 decimals, no trailing zeros), without
 * printf: answers have up to 11,000 points per series. */
static int put_point(cm_buf *b, int64_t t, double v)
{
	char o[64 + CM_FMT_DOUBLE_MAX], digits[24];
	size_t n = 0, k = 0;
	uint64_t a = t < 0 ? -(uint64_t)t : (uint64_t)t, sec = a / 1000;
	unsigned ms = (unsigned)(a % 1000);
	o[n++] = '[';
	if (t < 0)
		o[n++] = '-';
	do
		digits[k++] = (char)('0' + sec % 10);
	while ((sec /= 10) > 0);
	while (k)
		o[n++] = digits[--k];
	if (ms) {
		o[n++] = '.';
		o[n++] = (char)('0' + ms / 100);
		if (ms % 100)
			o[n++] = (char)('0' + ms / 10 % 10);
		if (ms % 10)
			o[n++] = (char)('0' + ms % 10);
	}
	o[n++] = ',', o[n++] = '"';
	n += cm_fmt_double(o + n, sizeof(o) - n - 3, v);
	o[n++] = '"', o[n++] = ']';
	return cm_buf_append(b, o, n);
}

static int put_metric(cm_buf *b, const ag__pls *ls)
{
	int rc = cm_buf_puts(b, "{\"metric\":{");
	for (size_t i = 0; i < ls->n && !rc; i++) {
		rc = cm_buf_puts(b, i ? "," : "");
		rc = rc ? rc : cm_buf_put_json_str(b, ls->l[i].name);
		rc = rc ? rc : cm_buf_puts(b, ":");
		rc = rc ? rc : cm_buf_put_json_str(b, ls->l[i].value);
	}
	return rc ? rc : cm_buf_puts(b, "}");
}

static int put_series(cm_buf *b, const ag__pls *ls, const cm_sample *s, size_t n, int first)
{
	int rc = cm_buf_puts(b, first ? "" : ",");
	rc = rc ? rc : put_metric(b, ls);
	rc = rc ? rc : cm_buf_puts(b, ",\"values\":[");
	for (size_t i = 0; i < n && !rc; i++) {
		rc = cm_buf_puts(b, i ? "," : "");
		rc = rc ? rc : put_point(b, s[i].t_ms, s[i].v);
	}
	return rc ? rc : cm_buf_puts(b, "]}");
}

static int cmp_ls(const ag__pls *a, const ag__pls *b)
{
	for (size_t i = 0; i < a->n && i < b->n; i++) {
		int d = strcmp(a->l[i].name, b->l[i].name);
		if (d)
			return d;
		if ((d = strcmp(a->l[i].value, b->l[i].value)))
			return d;
	}
	return (a->n > b->n) - (a->n < b->n);
}

static int cmp_series(const void *a, const void *b)
{
	return cmp_ls(((const series *)a)->ls, ((const series *)b)->ls);
}

static int write_matrix(cm_buf *b, source *m)
{
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), cmp_series);
	int rc = cm_buf_puts(b, "{\"resultType\":\"matrix\",\"result\":[");
	for (size_t i = 0; i < m->n && !rc; i++)
		rc = put_series(b, m->v[i].ls, m->v[i].s, m->v[i].n, i == 0);
	return rc ? rc : cm_buf_puts(b, "]}");
}

static int write_instant(ag__pctx *c, cm_buf *b, const ag__pval *v, int64_t t)
{
	int rc;
	if (v->type == AG_PT_SCALAR || v->type == AG_PT_STRING) {
		rc = cm_buf_printf(b, "{\"resultType\":\"%s\",\"result\":[", v->type == AG_PT_SCALAR ? "scalar" : "string");
		rc = rc ? rc : ag__put_json_time(b, t);
		rc = rc ? rc : cm_buf_puts(b, ",");
		rc = rc ? rc : v->type == AG_PT_SCALAR ? put_value(b, v->num) : cm_buf_put_json_str(b, v->str);
		return rc ? rc : cm_buf_puts(b, "]}");
	}
	if (v->type == AG_PT_MATRIX) {
		rc = cm_buf_puts(b, "{\"resultType\":\"matrix\",\"result\":[");
		for (size_t i = 0; i < v->n && !rc; i++)
			rc = put_series(b, v->m[i].ls, v->m[i].s, v->m[i].n, i == 0);
		return rc ? rc : cm_buf_puts(b, "]}");
	}
	if ((rc = ag__pvec_unique(c, v)))
		return rc;
	rc = cm_buf_puts(b, "{\"resultType\":\"vector\",\"result\":[");
	for (size_t i = 0; i < v->n && !rc; i++) {
		rc = cm_buf_puts(b, i ? "," : "");
		rc = rc ? rc : put_metric(b, v->v[i].ls);
		rc = rc ? rc : cm_buf_puts(b, ",\"value\":");
		rc = rc ? rc : put_point(b, t, v->v[i].v);
		rc = rc ? rc : cm_buf_puts(b, "}");
	}
	return rc ? rc : cm_buf_puts(b, "]}");
}

static int exec_instant(ag__pctx *c, ag__pquery *q, int64_t t, cm_buf *out)
{
	cm_arena sa;
	cm_arena_init(&sa, 0);
	c->sa = &sa, c->rstart = c->rend = t, c->rstep = 1;
	ag__pval v;
	int rc = eval(c, q->root, t, &v);
	if (!rc && write_instant(c, out, &v, t))
		rc = ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory writing the answer");
	cm_arena_close(&sa);
	return rc;
}

static int exec_range(ag__pctx *c, ag__pquery *q, int64_t start, int64_t end, int64_t step, cm_buf *out)
{
	ag__ptype t = q->root->type;
	if (t != AG_PT_SCALAR && t != AG_PT_VECTOR)
		return ag__pctx_fail(c, AG_PQL_BAD_DATA, "invalid expression type \"%s\" for range query, must be Scalar "
				     "or instant Vector", ag__ptype_name(t));
	source *m = cm_arena_calloc(&c->qa, 1, sizeof(*m));
	if (!m)
		return ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory");
	int rc = range_eval(c, q->root, start, end, step, m);
	if (!rc && write_matrix(out, m))
		rc = ag__pctx_fail(c, AG_PQL_INTERNAL, "out of memory writing the answer");
	return rc;
}

static void clear_state(ag__pexpr *e)
{
	if (!e)
		return;
	e->state = NULL;
	clear_state(e->lhs);
	clear_state(e->rhs);
	for (size_t i = 0; i < e->nargs; i++)
		clear_state(e->args[i]);
}

int ag__pql_exec(ts_db *db, ag__pquery *q, int64_t start, int64_t end, int64_t step, int instant,
		 const ag__pql_opts *o, cm_buf *out, int *kind, cm_err *err)
{
	ag__pctx c = {.db = db, .o = o, .qstart = start, .qend = end, .err = err};
	if (start < -AG_PQL_MAX_TIME || end > AG_PQL_MAX_TIME || (!instant && (step <= 0 || step > AG_PQL_MAX_TIME))) {
		*kind = AG_PQL_BAD_DATA;
		return cm_errf(err, CM_EINVAL, "start, end or step out of range");
	}
	c.deadline_ns = cm_mono_ns() + o->timeout_ms * 1000000;
	cm_arena_init(&c.qa, 0);
	clear_state(q->root);
	int rc = grow_intern(&c);
	if (!rc && !(c.empty = ag__pls_make(&c, NULL, 0)))
		rc = CM_ENOMEM;
	if (!rc)
		rc = instant ? exec_instant(&c, q, start, out) : exec_range(&c, q, start, end, step, out);
	for (source *s = c.owned; s; s = s->next_owned)
		for (size_t i = 0; i < s->n; i++)
			free(s->v[i].s);
	clear_state(q->root);
	cm_arena_close(&c.qa);
	if (rc) {
		if (!c.kind)
			ag__pctx_fail(&c, AG_PQL_INTERNAL, "%s", cm_strerror(rc));
		*kind = c.kind;
		return rc;
	}
	return CM_OK;
}
