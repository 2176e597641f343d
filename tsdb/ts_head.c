/* ts_head.c -- the in-memory head: every series with its labels and time-ordered samples.
 *
 * Series live in an open-addressing hash table (linear probing, power-of-two capacity, never shrinks)
 * keyed by a 64-bit hash of the canonical label set: labels sorted by name, labels with an empty value
 * dropped (Prometheus treats an empty value as an absent label). Collisions are resolved by comparing
 * the full label set. Each series owns one allocation holding its labels and their strings, and a
 * growable sample array kept sorted by time: a newer sample is pushed, an older one is inserted in
 * place, and a sample whose timestamp is already present is ignored (the first value wins).
 *
 * Called by ts_db.c, for appends after the WAL record is durable and for replay at open. One rwlock
 * (writer-preferring) guards everything: appends take it for writing, selects for reading; select
 * callbacks run under it and must not call back into the same db. This file never touches the disk.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ts_int.h"

typedef struct ts__series {
	uint64_t hash;
	cm_label *labels;  /* canonical; the strings follow the array in the same allocation */
	size_t nlabels;
	cm_sample *samples;
	size_t nsamples;
	size_t cap;
} ts__series;

struct ts__head {
	pthread_rwlock_t lock;
	ts__series **slots;  /* cap entries, NULL = empty */
	size_t cap;
	size_t count;
	uint64_t nsamples;
	cm_label canon[TS__MAX_LABELS];  /* scratch for the write-lock holder */
};

/* A series picked by a select, with the index range of its samples inside [mint, maxt]. */
typedef struct ts__hit {
	const ts__series *s;
	size_t lo;
	size_t hi;
} ts__hit;

#define HEAD_INITIAL_CAP 1024

/* ---- label sets ------------------------------------------------------------------------------------ */

static int label_check(const cm_label *l, cm_err *err)
{
	if (!l->name || !l->value)
		return cm_errf(err, CM_EINVAL, "label with a NULL name or value");
	if (strlen(l->name) > TS__MAX_LABEL_BYTES || strlen(l->value) > TS__MAX_LABEL_BYTES)
		return cm_errf(err, CM_EINVAL, "label longer than %u bytes", TS__MAX_LABEL_BYTES);
	if (!cm_label_name_valid(l->name))
		return cm_errf(err, CM_EINVAL, "invalid label name \"%.64s\"", l->name);
	if (!cm_utf8_valid(l->value, strlen(l->value)))
		return cm_errf(err, CM_EINVAL, "label %s: value is not valid UTF-8", l->name);
	return CM_OK;
}

int ts__series_check(const cm_series *s, cm_err *err)
{
	cm_label sorted[TS__MAX_LABELS];
	size_t nonempty = 0;
	if (s->nlabels > TS__MAX_LABELS)
		return cm_errf(err, CM_EINVAL, "series has %zu labels, limit %d", s->nlabels, TS__MAX_LABELS);
	if (s->nsamples && !s->samples)
		return cm_errf(err, CM_EINVAL, "series has %zu samples but no sample array", s->nsamples);
	for (size_t i = 0; i < s->nlabels; i++) {
		int rc = label_check(&s->labels[i], err);
		if (rc)
			return rc;
		sorted[i] = s->labels[i];
		nonempty += s->labels[i].value[0] != 0;
	}
	if (nonempty == 0)
		return cm_errf(err, CM_EINVAL, "series has no label with a non-empty value");
	cm_labels_sort(sorted, s->nlabels);
	for (size_t i = 1; i < s->nlabels; i++)
		if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
			return cm_errf(err, CM_EINVAL, "duplicate label name \"%.64s\"", sorted[i].name);
	return CM_OK;
}

/* Copies the non-empty labels into out, sorted by name; returns how many. */
static size_t labels_canon(const cm_label *in, size_t n, cm_label *out)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (in[i].value[0])
			out[k++] = in[i];
	cm_labels_sort(out, k);
	return k;
}

/* FNV-1a over "name\xff value\xff ..." with a final avalanche, so low bits are usable as a slot. */
static uint64_t labels_hash(const cm_label *l, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		for (const char *s = l[i].name; *s; s++)
			h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
		h = (h ^ 0xff) * 0x100000001b3ull;
		for (const char *s = l[i].value; *s; s++)
			h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
		h = (h ^ 0xfe) * 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	return h ^ (h >> 33);
}

/* Orders label sets label by label (name, then value); a prefix sorts first. */
static int labels_cmp(const cm_label *a, size_t na, const cm_label *b, size_t nb)
{
	for (size_t i = 0; i < na && i < nb; i++) {
		int c = strcmp(a[i].name, b[i].name);
		if (c == 0)
			c = strcmp(a[i].value, b[i].value);
		if (c)
			return c;
	}
	return na < nb ? -1 : na > nb;
}

static const char *labels_get(const cm_label *l, size_t n, const char *name)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(l[mid].name, name);
		if (c == 0)
			return l[mid].value;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return "";
}

/* ---- series ---------------------------------------------------------------------------------------- */

static ts__series *series_new(const cm_label *l, size_t n, uint64_t hash)
{
	size_t bytes = sizeof(ts__series) + n * sizeof(cm_label);
	for (size_t i = 0; i < n; i++)
		bytes += strlen(l[i].name) + strlen(l[i].value) + 2;
	ts__series *s = calloc(1, bytes);
	if (!s)
		return NULL;
	s->hash = hash;
	s->nlabels = n;
	s->labels = (cm_label *)(s + 1);
	char *p = (char *)(s->labels + n);
	for (size_t i = 0; i < n; i++) {
		size_t ln = strlen(l[i].name) + 1, lv = strlen(l[i].value) + 1;
		s->labels[i].name = memcpy(p, l[i].name, ln);
		s->labels[i].value = memcpy(p + ln, l[i].value, lv);
		p += ln + lv;
	}
	return s;
}

static void series_free(ts__series *s)
{
	if (s)
		free(s->samples);
	free(s);
}

/* Index of the first sample at or after t. */
static size_t samples_lower(const cm_sample *x, size_t n, int64_t t)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (x[mid].t_ms < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Returns 1 if the sample was added, 0 if its timestamp was already present, or CM_ENOMEM. */
static int series_add(ts__series *s, cm_sample v)
{
	size_t i = s->nsamples;
	if (i && s->samples[i - 1].t_ms >= v.t_ms) {
		i = samples_lower(s->samples, s->nsamples, v.t_ms);
		if (s->samples[i].t_ms == v.t_ms)
			return 0;
	}
	if (s->nsamples == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		cm_sample *p = realloc(s->samples, cap * sizeof(*p));
		if (!p)
			return CM_ENOMEM;
		s->samples = p;
		s->cap = cap;
	}
	memmove(s->samples + i + 1, s->samples + i, (s->nsamples - i) * sizeof(cm_sample));
	s->samples[i] = v;
	s->nsamples++;
	return 1;
}

/* ---- the table ------------------------------------------------------------------------------------- */

int ts__head_create(ts__head **out)
{
	ts__head *h = calloc(1, sizeof(*h));
	if (!h)
		return CM_ENOMEM;
	/* glibc's default rwlock prefers readers, so a steady stream of selects could starve appends */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	h->slots = calloc(HEAD_INITIAL_CAP, sizeof(*h->slots));
	int rc = h->slots ? pthread_rwlock_init(&h->lock, &attr) : CM_ENOMEM;
	pthread_rwlockattr_destroy(&attr);
	if (rc) {
		free(h->slots);
		free(h);
		return CM_ENOMEM;
	}
	h->cap = HEAD_INITIAL_CAP;
	*out = h;
	return CM_OK;
}

void ts__head_destroy(ts__head *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->cap; i++)
		series_free(h->slots[i]);
	free(h->slots);
	pthread_rwlock_destroy(&h->lock);
	free(h);
}

static size_t slot_find(ts__series **slots, size_t cap, uint64_t hash, const cm_label *l, size_t n)
{
	size_t i = hash & (cap - 1);
	while (slots[i]) {
		const ts__series *s = slots[i];
		if (s->hash == hash && labels_cmp(s->labels, s->nlabels, l, n) == 0)
			break;
		i = (i + 1) & (cap - 1);
	}
	return i;
}

static int table_grow(ts__head *h)
{
	size_t cap = h->cap * 2;
	ts__series **slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return CM_ENOMEM;
	for (size_t i = 0; i < h->cap; i++) {
		ts__series *s = h->slots[i];
		if (s)
			slots[slot_find(slots, cap, s->hash, s->labels, s->nlabels)] = s;
	}
	free(h->slots);
	h->slots = slots;
	h->cap = cap;
	return CM_OK;
}

/* Finds the series with canonical labels l, creating it if needed. */
static ts__series *head_series(ts__head *h, const cm_label *l, size_t n)
{
	uint64_t hash = labels_hash(l, n);
	size_t i = slot_find(h->slots, h->cap, hash, l, n);
	if (h->slots[i])
		return h->slots[i];
	if ((h->count + 1) * 10 > h->cap * 7) {
		if (table_grow(h))
			return NULL;
		i = slot_find(h->slots, h->cap, hash, l, n);
	}
	h->slots[i] = series_new(l, n, hash);
	if (h->slots[i])
		h->count++;
	return h->slots[i];
}

static int head_add(ts__head *h, const cm_series *in)
{
	if (in->nsamples == 0)
		return CM_OK;
	size_t n = labels_canon(in->labels, in->nlabels, h->canon);
	ts__series *s = head_series(h, h->canon, n);
	if (!s)
		return CM_ENOMEM;
	for (size_t i = 0; i < in->nsamples; i++) {
		int added = series_add(s, in->samples[i]);
		if (added < 0)
			return added;
		h->nsamples += (uint64_t)added;
	}
	return CM_OK;
}

int ts__head_append(ts__head *h, const cm_series *series, size_t nseries)
{
	int rc = CM_OK;
	pthread_rwlock_wrlock(&h->lock);
	for (size_t i = 0; i < nseries && !rc; i++)
		rc = head_add(h, &series[i]);
	pthread_rwlock_unlock(&h->lock);
	return rc;
}

/* ---- select ---------------------------------------------------------------------------------------- */

static int series_matches(const ts__series *s, const ts_matcher *m, size_t nm)
{
	for (size_t i = 0; i < nm; i++)
		if (!ts_matcher_matches(&m[i], labels_get(s->labels, s->nlabels, m[i].name)))
			return 0;
	return 1;
}

static int hit_cmp(const void *a, const void *b)
{
	const ts__series *x = ((const ts__hit *)a)->s, *y = ((const ts__hit *)b)->s;
	return labels_cmp(x->labels, x->nlabels, y->labels, y->nlabels);
}

/* Collects the matching series with samples in [mint, maxt]; *out is malloc'd (NULL when none). */
static int head_collect(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts__hit **out,
			size_t *nout)
{
	ts__hit *hits = NULL;
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < h->cap; i++) {
		const ts__series *s = h->slots[i];
		if (!s || !series_matches(s, m, nm))
			continue;
		size_t lo = samples_lower(s->samples, s->nsamples, mint);
		size_t hi = maxt == INT64_MAX ? s->nsamples : samples_lower(s->samples, s->nsamples, maxt + 1);
		if (lo >= hi)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			ts__hit *p = realloc(hits, cap * sizeof(*p));
			if (!p) {
				free(hits);
				return CM_ENOMEM;
			}
			hits = p;
		}
		hits[n++] = (ts__hit){s, lo, hi};
	}
	*out = hits;
	*nout = n;
	return CM_OK;
}

int ts__head_select(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		    void *ctx)
{
	ts__hit *hits = NULL;
	size_t n = 0;
	if (mint > maxt)
		return CM_OK;
	pthread_rwlock_rdlock(&h->lock);
	int rc = head_collect(h, m, nm, mint, maxt, &hits, &n);
	if (n > 1)
		qsort(hits, n, sizeof(*hits), hit_cmp);
	for (size_t i = 0; i < n && !rc; i++) {
		const ts__series *s = hits[i].s;
		rc = fn(ctx, s->labels, s->nlabels, s->samples + hits[i].lo, hits[i].hi - hits[i].lo);
	}
	pthread_rwlock_unlock(&h->lock);
	free(hits);
	return rc;
}

void ts__head_stats(ts__head *h, uint64_t *series, uint64_t *samples)
{
	pthread_rwlock_rdlock(&h->lock);
	*series = h->count;
	*samples = h->nsamples;
	pthread_rwlock_unlock(&h->lock);
}
