/* ts_head.c -- the in-memory head: series with interned labels and Gorilla-compressed chunks.
 *
 * A series is identified by the canonical form of its label set (labels sorted by name, labels with an
 * empty value dropped, as Prometheus treats an empty value as absent). Its id is a 64-bit hash of that
 * form; when two label sets hash alike the newer one takes the next free id (+1 in the low 60 bits), so
 * ids stay unique and, once written to the WAL, stable across restarts. The top 4 bits of an id pick one
 * of 16 shards; each shard has its own writer-preferring rwlock and an open-addressing table keyed by
 * id, so appends to different shards and selects proceed in parallel. Label strings are interned in one
 * table (its own mutex, used only when a series is created), so a value shared by many series is kept once.
 *
 * A series holds closed chunks (exact-size byte arrays, ts_chunk.c) and one open chunk being appended
 * to; a chunk closes at TS__CHUNK_SAMPLES samples or TS__CHUNK_SPAN_MS. A sample newer than the series'
 * newest is appended; an older one inside the out-of-order window is inserted by re-encoding the
 * chunks from the one that covers it (bounded by the window); an older one is rejected; a sample whose
 * timestamp is present is ignored (the first value wins). Both are counted.
 *
 * Called by ts_db.c for appends after their WAL record is durable and for replay at open. Select
 * callbacks run under every shard's read lock and must not call back into the same db. Never touches
 * the disk.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ts_int.h"

#define NSHARDS 16
#define SHARD_SHIFT 60
#define ID_LOW (((uint64_t)1 << SHARD_SHIFT) - 1)
#define SHARD_INITIAL_CAP 256

typedef struct ts__chunk {
	int64_t mint, maxt;
	uint8_t *data;
	uint32_t len;
	uint32_t n;
} ts__chunk;

struct ts__series {
	uint64_t id;
	cm_label *labels;  /* canonical, interned strings */
	size_t nlabels;
	atomic_int logged;
	ts__chunk *chunks;  /* closed, in time order */
	uint32_t nchunks, chunkcap;
	ts__enc open;
	int64_t mint, maxt;  /* of every sample; valid when nsamples */
	uint64_t nsamples;
};

typedef struct shard {
	pthread_rwlock_t lock;
	ts__series **slots;  /* cap entries keyed by id, NULL = empty */
	size_t cap, count;
	uint64_t samples, rejected, duplicates;
} shard;

typedef struct intern {
	pthread_mutex_t mu;
	char **slots;
	size_t cap, count;
} intern;

struct ts__head {
	shard shards[NSHARDS];
	intern strs;
	int64_t ooo_ms;
};

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

size_t ts__labels_canon(const cm_label *in, size_t n, cm_label *out)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (in[i].value[0])
			out[k++] = in[i];
	cm_labels_sort(out, k);
	return k;
}

static uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	return h ^ (h >> 33);
}

static uint64_t str_hash(uint64_t h, const char *s, uint8_t end)
{
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return (h ^ end) * 0x100000001b3ull;
}

/* FNV-1a over "name\xff value\xfe ..." with a final avalanche. */
static uint64_t labels_hash(const cm_label *l, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = str_hash(str_hash(h, l[i].name, 0xff), l[i].value, 0xfe);
	return mix64(h);
}

/* Orders label sets label by label (name, then value); a prefix sorts first. */
int ts__labels_cmp(const cm_label *a, size_t na, const cm_label *b, size_t nb)
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

/* ---- string interning ------------------------------------------------------------------------------ */

static size_t intern_slot(char **slots, size_t cap, const char *s)
{
	size_t i = mix64(str_hash(0xcbf29ce484222325ull, s, 0)) & (cap - 1);
	while (slots[i] && strcmp(slots[i], s) != 0)
		i = (i + 1) & (cap - 1);
	return i;
}

static int intern_grow(intern *t)
{
	size_t cap = t->cap ? t->cap * 2 : 1024;
	char **slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return CM_ENOMEM;
	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i])
			slots[intern_slot(slots, cap, t->slots[i])] = t->slots[i];
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	return CM_OK;
}

/* Returns the one stored copy of s (created if needed), or NULL when out of memory. */
static const char *intern_get(intern *t, const char *s)
{
	char *r = NULL;
	pthread_mutex_lock(&t->mu);
	if ((t->count + 1) * 10 > t->cap * 7 && intern_grow(t))
		goto out;
	size_t i = intern_slot(t->slots, t->cap, s);
	if (!t->slots[i] && (t->slots[i] = strdup(s)))
		t->count++;
	r = t->slots[i];
out:
	pthread_mutex_unlock(&t->mu);
	return r;
}

/* ---- series ---------------------------------------------------------------------------------------- */

static ts__series *series_new(ts__head *h, const cm_label *l, size_t n, uint64_t id)
{
	ts__series *s = calloc(1, sizeof(*s) + n * sizeof(cm_label));
	if (!s)
		return NULL;
	s->id = id;
	s->nlabels = n;
	s->labels = (cm_label *)(s + 1);
	for (size_t i = 0; i < n; i++) {
		s->labels[i].name = intern_get(&h->strs, l[i].name);
		s->labels[i].value = intern_get(&h->strs, l[i].value);
		if (!s->labels[i].name || !s->labels[i].value) {
			free(s);
			return NULL;
		}
	}
	atomic_init(&s->logged, 0);
	ts__enc_init(&s->open);
	return s;
}

static void series_chunks_free(ts__series *s, uint32_t from)
{
	for (uint32_t i = from; i < s->nchunks; i++)
		free(s->chunks[i].data);
	s->nchunks = from;
}

static void series_free(ts__series *s)
{
	if (!s)
		return;
	series_chunks_free(s, 0);
	free(s->chunks);
	ts__enc_close(&s->open);
	free(s);
}

uint64_t ts__series_id(const ts__series *s) { return s->id; }

const cm_label *ts__series_labels(const ts__series *s, size_t *n)
{
	*n = s->nlabels;
	return s->labels;
}

int ts__series_logged(const ts__series *s) { return atomic_load_explicit(&s->logged, memory_order_acquire); }

void ts__series_set_logged(ts__series *s) { atomic_store_explicit(&s->logged, 1, memory_order_release); }

/* Moves the open chunk to the closed list, shrunk to its exact size. */
static int series_close_open(ts__series *s)
{
	if (s->nchunks == s->chunkcap) {
		uint32_t cap = s->chunkcap ? s->chunkcap * 2 : 4;
		ts__chunk *p = realloc(s->chunks, cap * sizeof(*p));
		if (!p)
			return CM_ENOMEM;
		s->chunks = p;
		s->chunkcap = cap;
	}
	size_t len = ts__enc_bytes(&s->open);
	uint8_t *data = realloc(s->open.buf, len ? len : 1);
	if (!data)
		return CM_ENOMEM;
	s->chunks[s->nchunks++] = (ts__chunk){s->open.mint, s->open.t, data, (uint32_t)len, s->open.n};
	s->open.buf = NULL;
	ts__enc_init(&s->open);
	return CM_OK;
}

/* Appends a sample newer than every sample of s. */
static int series_push(ts__series *s, cm_sample x)
{
	ts__enc *e = &s->open;
	if (e->n >= TS__CHUNK_SAMPLES || (e->n && (uint64_t)x.t_ms - (uint64_t)e->mint >= TS__CHUNK_SPAN_MS)) {
		int rc = series_close_open(s);
		if (rc)
			return rc;
	}
	if (ts__enc_append(e, x.t_ms, x.v))
		return CM_ENOMEM;
	if (!s->nsamples)
		s->mint = x.t_ms;
	s->maxt = x.t_ms;
	s->nsamples++;
	return CM_OK;
}

/* Decodes one chunk (or the open one when c is NULL) onto the end of a growable sample array. */
static int chunk_decode(const ts__series *s, const ts__chunk *c, cm_sample **buf, size_t *len, size_t *cap)
{
	ts__dec d;
	uint32_t n = c ? c->n : s->open.n;
	if (c)
		ts__dec_init(&d, c->data, c->len, n);
	else
		ts__dec_init(&d, s->open.buf, ts__enc_bytes(&s->open), n);
	if (*len + n > *cap) {
		size_t ncap = (*len + n) * 2;
		cm_sample *p = realloc(*buf, ncap * sizeof(*p));
		if (!p)
			return CM_ENOMEM;
		*buf = p;
		*cap = ncap;
	}
	int rc;
	while ((rc = ts__dec_next(&d, *buf + *len)) == 1)
		(*len)++;
	return rc < 0 ? CM_EIO : CM_OK; /* the head wrote these chunks itself */
}

/* Index of the first sample at or after t. */
size_t ts__samples_lower(const cm_sample *x, size_t n, int64_t t)
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

/* Inserts an older sample: decodes the chunks from the first one that reaches t, inserts, re-encodes.
 * Returns 1 if added, 0 if its timestamp was present, or CM_ENOMEM. */
static int series_insert(ts__series *s, cm_sample x)
{
	uint32_t k = s->nchunks;
	while (k > 0 && s->chunks[k - 1].maxt >= x.t_ms)
		k--;
	cm_sample *buf = NULL;
	size_t len = 0, cap = 0;
	int rc = CM_OK;
	for (uint32_t i = k; i < s->nchunks && !rc; i++)
		rc = chunk_decode(s, &s->chunks[i], &buf, &len, &cap);
	if (!rc)
		rc = chunk_decode(s, NULL, &buf, &len, &cap);
	size_t at = ts__samples_lower(buf, len, x.t_ms);
	if (rc || (at < len && buf[at].t_ms == x.t_ms)) {
		free(buf);
		return rc ? rc : 0;
	}
	series_chunks_free(s, k);
	ts__enc_close(&s->open);
	s->nsamples -= len;
	if (s->nsamples == 0)
		s->mint = x.t_ms;
	else if (x.t_ms < s->mint)
		s->mint = x.t_ms;
	int64_t mint = s->mint;
	for (size_t i = 0; i <= len && !rc; i++)
		rc = series_push(s, i < at ? buf[i] : i == at ? x : buf[i - 1]);
	s->mint = mint < s->mint ? mint : s->mint;
	free(buf);
	return rc ? rc : 1;
}

/* ---- shards ---------------------------------------------------------------------------------------- */

static shard *shard_of(ts__head *h, uint64_t id) { return &h->shards[id >> SHARD_SHIFT]; }

static uint64_t id_next(uint64_t id) { return (id & ~ID_LOW) | ((id + 1) & ID_LOW); }

static size_t slot_find(ts__series **slots, size_t cap, uint64_t id)
{
	size_t i = mix64(id) & (cap - 1);
	while (slots[i] && slots[i]->id != id)
		i = (i + 1) & (cap - 1);
	return i;
}

static int shard_grow(shard *sh)
{
	size_t cap = sh->cap * 2;
	ts__series **slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return CM_ENOMEM;
	for (size_t i = 0; i < sh->cap; i++)
		if (sh->slots[i])
			slots[slot_find(slots, cap, sh->slots[i]->id)] = sh->slots[i];
	free(sh->slots);
	sh->slots = slots;
	sh->cap = cap;
	return CM_OK;
}

/* Inserts s (its id must be free); shard write lock held. */
static int shard_put(shard *sh, ts__series *s)
{
	if ((sh->count + 1) * 10 > sh->cap * 7 && shard_grow(sh))
		return CM_ENOMEM;
	sh->slots[slot_find(sh->slots, sh->cap, s->id)] = s;
	sh->count++;
	return CM_OK;
}

static ts__series *shard_get(shard *sh, uint64_t id) { return sh->slots[slot_find(sh->slots, sh->cap, id)]; }

/* Walks the ids of hash l: *found is the series with labels l, else *free_id the first free id. */
static void shard_lookup(shard *sh, uint64_t hash, const cm_label *l, size_t n, ts__series **found,
			 uint64_t *free_id)
{
	uint64_t id = hash;
	ts__series *s;
	while ((s = shard_get(sh, id)) && ts__labels_cmp(s->labels, s->nlabels, l, n) != 0)
		id = id_next(id);
	*found = s;
	*free_id = id;
}

/* ---- the head -------------------------------------------------------------------------------------- */

int ts__head_create(int64_t ooo_window_ms, ts__head **out)
{
	pthread_rwlockattr_t attr;
	ts__head *h = calloc(1, sizeof(*h));
	if (!h)
		return CM_ENOMEM;
	h->ooo_ms = ooo_window_ms;
	pthread_mutex_init(&h->strs.mu, NULL);
	/* glibc's default rwlock prefers readers, so a steady stream of selects could starve appends */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (int i = 0; i < NSHARDS; i++) {
		shard *sh = &h->shards[i];
		pthread_rwlock_init(&sh->lock, &attr);
		sh->cap = SHARD_INITIAL_CAP;
		sh->slots = calloc(sh->cap, sizeof(*sh->slots));
	}
	pthread_rwlockattr_destroy(&attr);
	for (int i = 0; i < NSHARDS; i++) {
		if (!h->shards[i].slots) {
			ts__head_destroy(h);
			return CM_ENOMEM;
		}
	}
	*out = h;
	return CM_OK;
}

void ts__head_destroy(ts__head *h)
{
	if (!h)
		return;
	for (int i = 0; i < NSHARDS; i++) {
		shard *sh = &h->shards[i];
		for (size_t j = 0; sh->slots && j < sh->cap; j++)
			series_free(sh->slots[j]);
		free(sh->slots);
		pthread_rwlock_destroy(&sh->lock);
	}
	for (size_t i = 0; i < h->strs.cap; i++)
		free(h->strs.slots[i]);
	free(h->strs.slots);
	pthread_mutex_destroy(&h->strs.mu);
	free(h);
}

int ts__head_get(ts__head *h, const cm_label *l, size_t n, ts__series **out)
{
	uint64_t hash = labels_hash(l, n), id;
	shard *sh = shard_of(h, hash);
	ts__series *s;
	pthread_rwlock_rdlock(&sh->lock);
	shard_lookup(sh, hash, l, n, &s, &id);
	pthread_rwlock_unlock(&sh->lock);
	if (s) {
		*out = s;
		return CM_OK;
	}
	int rc = CM_OK;
	pthread_rwlock_wrlock(&sh->lock);
	shard_lookup(sh, hash, l, n, &s, &id); /* another thread may have created it meanwhile */
	if (!s && !(s = series_new(h, l, n, id)))
		rc = CM_ENOMEM;
	else if (s->id == id && shard_get(sh, id) != s && (rc = shard_put(sh, s)))
		series_free(s);
	pthread_rwlock_unlock(&sh->lock);
	if (!rc)
		*out = s;
	return rc;
}

/* Adds one sample to s under its shard's write lock. */
static int series_add(ts__head *h, shard *sh, ts__series *s, cm_sample x)
{
	int rc;
	if (!s->nsamples || x.t_ms > s->maxt) {
		if ((rc = series_push(s, x)))
			return rc;
		sh->samples++;
		return CM_OK;
	}
	if (x.t_ms == s->maxt) {
		sh->duplicates++;
		return CM_OK;
	}
	if ((uint64_t)s->maxt - (uint64_t)x.t_ms > (uint64_t)h->ooo_ms) {
		sh->rejected++;
		return CM_OK;
	}
	if ((rc = series_insert(s, x)) < 0)
		return rc;
	if (rc)
		sh->samples++;
	else
		sh->duplicates++;
	return CM_OK;
}

int ts__head_add(ts__head *h, ts__series *s, const cm_sample *x, size_t n)
{
	shard *sh = shard_of(h, s->id);
	int rc = CM_OK;
	pthread_rwlock_wrlock(&sh->lock);
	for (size_t i = 0; i < n && !rc; i++)
		rc = series_add(h, sh, s, x[i]);
	pthread_rwlock_unlock(&sh->lock);
	return rc;
}

int ts__head_define(ts__head *h, uint64_t id, const cm_label *l, size_t n, int dry)
{
	shard *sh = shard_of(h, id);
	int rc = CM_OK;
	pthread_rwlock_wrlock(&sh->lock);
	ts__series *s = shard_get(sh, id);
	if (s && ts__labels_cmp(s->labels, s->nlabels, l, n) != 0)
		rc = CM_ECORRUPT;
	else if (!s && !dry) {
		s = series_new(h, l, n, id);
		rc = !s ? CM_ENOMEM : shard_put(sh, s);
		if (rc)
			series_free(s);
		else
			ts__series_set_logged(s);
	}
	pthread_rwlock_unlock(&sh->lock);
	return rc;
}

ts__series *ts__head_find(ts__head *h, uint64_t id)
{
	shard *sh = shard_of(h, id);
	pthread_rwlock_rdlock(&sh->lock);
	ts__series *s = shard_get(sh, id);
	pthread_rwlock_unlock(&sh->lock);
	return s;
}

int ts__head_add_id(ts__head *h, uint64_t id, const cm_sample *x, size_t n, int dry)
{
	ts__series *s = ts__head_find(h, id);
	if (!s)
		return CM_ECORRUPT;
	return dry ? CM_OK : ts__head_add(h, s, x, n);
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
	const ts__series *x = *(ts__series *const *)a, *y = *(ts__series *const *)b;
	return ts__labels_cmp(x->labels, x->nlabels, y->labels, y->nlabels);
}

/* Collects the matching series with samples overlapping [mint, maxt]; read locks held. */
static int head_collect_unsorted(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt,
			ts__series ***out, size_t *nout)
{
	ts__series **hits = NULL;
	size_t n = 0, cap = 0;
	for (int k = 0; k < NSHARDS; k++) {
		shard *sh = &h->shards[k];
		for (size_t i = 0; i < sh->cap; i++) {
			ts__series *s = sh->slots[i];
			if (!s || !s->nsamples || s->maxt < mint || s->mint > maxt || !series_matches(s, m, nm))
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				ts__series **p = realloc(hits, cap * sizeof(*p));
				if (!p) {
					free(hits);
					return CM_ENOMEM;
				}
				hits = p;
			}
			hits[n++] = s;
		}
	}
	*out = hits;
	*nout = n;
	return CM_OK;
}

int ts__head_collect(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt,
		      ts__series ***out, size_t *nout)
{
	int rc = head_collect_unsorted(h, m, nm, mint, maxt, out, nout);
	if (!rc && *nout > 1)
		qsort(*out, *nout, sizeof(**out), hit_cmp);
	return rc;
}

void ts__head_rdlock(ts__head *h)
{
	for (int k = 0; k < NSHARDS; k++)
		pthread_rwlock_rdlock(&h->shards[k].lock);
}

void ts__head_unlock(ts__head *h)
{
	for (int k = NSHARDS - 1; k >= 0; k--)
		pthread_rwlock_unlock(&h->shards[k].lock);
}

/* Decodes the samples of s inside [mint, maxt] into *buf; *lo..*len is the range. */
int ts__series_read(const ts__series *s, int64_t mint, int64_t maxt, cm_sample **buf, size_t *cap,
		       size_t *lo, size_t *hi)
{
	size_t len = 0;
	int rc = CM_OK;
	for (uint32_t i = 0; i < s->nchunks && !rc; i++)
		if (s->chunks[i].maxt >= mint && s->chunks[i].mint <= maxt)
			rc = chunk_decode(s, &s->chunks[i], buf, &len, cap);
	if (!rc && s->open.n && s->open.t >= mint && s->open.mint <= maxt)
		rc = chunk_decode(s, NULL, buf, &len, cap);
	if (rc)
		return rc;
	*lo = ts__samples_lower(*buf, len, mint);
	*hi = maxt == INT64_MAX ? len : ts__samples_lower(*buf, len, maxt + 1);
	return CM_OK;
}

static int head_emit(ts__series **hits, size_t n, int64_t mint, int64_t maxt, ts_series_fn fn, void *ctx)
{
	cm_sample *buf = NULL;
	size_t cap = 0, lo, hi;
	int rc = CM_OK;
	for (size_t i = 0; i < n && !rc; i++) {
		rc = ts__series_read(hits[i], mint, maxt, &buf, &cap, &lo, &hi);
		if (!rc && lo < hi)
			rc = fn(ctx, hits[i]->labels, hits[i]->nlabels, buf + lo, hi - lo);
	}
	free(buf);
	return rc;
}

int ts__head_select(ts__head *h, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
		    void *ctx)
{
	ts__series **hits = NULL;
	size_t n = 0;
	if (mint > maxt)
		return CM_OK;
	ts__head_rdlock(h);
	int rc = ts__head_collect(h, m, nm, mint, maxt, &hits, &n);
	if (!rc)
		rc = head_emit(hits, n, mint, maxt, fn, ctx);
	ts__head_unlock(h);
	free(hits);
	return rc;
}

void ts__head_stats(ts__head *h, ts_stats *st)
{
	for (int k = 0; k < NSHARDS; k++) {
		shard *sh = &h->shards[k];
		pthread_rwlock_rdlock(&sh->lock);
		st->series += sh->count;
		st->samples += sh->samples;
		st->rejected_old += sh->rejected;
		st->duplicates += sh->duplicates;
		pthread_rwlock_unlock(&sh->lock);
	}
}

/* ---- snapshots for cutting blocks ------------------------------------------------------------------ */

void ts__head_unlog_all(ts__head *h)
{
	for (int k = 0; k < NSHARDS; k++) {
		shard *sh = &h->shards[k];
		pthread_rwlock_rdlock(&sh->lock);
		for (size_t i = 0; i < sh->cap; i++)
			if (sh->slots[i])
				atomic_store_explicit(&sh->slots[i]->logged, 0, memory_order_release);
		pthread_rwlock_unlock(&sh->lock);
	}
}

static int snap_chunk(ts__snap_series *ss, const uint8_t *orig, const uint8_t *p, size_t len, uint32_t n,
		      int64_t mint, int64_t maxt)
{
	ts__snap_chunk *c = &ss->chunks[ss->nchunks];
	if (!(c->data = malloc(len ? len : 1)))
		return CM_ENOMEM;
	memcpy(c->data, p, len);
	*c = (ts__snap_chunk){orig, c->data, (uint32_t)len, n, mint, maxt};
	ss->nchunks++;
	return CM_OK;
}

/* Copies every chunk of s (the open one last, orig NULL); shard lock held. */
static int snap_series(ts__series *s, ts__snap_series *ss)
{
	*ss = (ts__snap_series){.s = s, .labels = s->labels, .nlabels = s->nlabels, .id = s->id};
	ss->chunks = calloc(s->nchunks + 1, sizeof(*ss->chunks));
	int rc = ss->chunks ? CM_OK : CM_ENOMEM;
	for (uint32_t i = 0; i < s->nchunks && !rc; i++) {
		const ts__chunk *c = &s->chunks[i];
		rc = snap_chunk(ss, c->data, c->data, c->len, c->n, c->mint, c->maxt);
	}
	if (!rc && s->open.n)
		rc = snap_chunk(ss, NULL, s->open.buf, ts__enc_bytes(&s->open), s->open.n, s->open.mint, s->open.t);
	ss->open_n = s->open.n;
	ss->open_t = s->open.t;
	return rc;
}

static int snap_cmp(const void *a, const void *b)
{
	const ts__snap_series *x = a, *y = b;
	return ts__labels_cmp(x->labels, x->nlabels, y->labels, y->nlabels);
}

int ts__head_snapshot(ts__head *h, ts__snap *out)
{
	ts__snap sn = {0};
	size_t cap = 0;
	int rc = CM_OK;
	for (int k = 0; k < NSHARDS && !rc; k++) {
		shard *sh = &h->shards[k];
		pthread_rwlock_rdlock(&sh->lock);
		for (size_t i = 0; i < sh->cap && !rc; i++) {
			ts__series *s = sh->slots[i];
			if (!s || !s->nsamples)
				continue;
			if (sn.n == cap) {
				cap = cap ? cap * 2 : 1024;
				ts__snap_series *p = realloc(sn.s, cap * sizeof(*p));
				if (!p) {
					rc = CM_ENOMEM;
					break;
				}
				sn.s = p;
			}
			rc = snap_series(s, &sn.s[sn.n++]);
		}
		pthread_rwlock_unlock(&sh->lock);
	}
	if (rc) {
		ts__snap_free(&sn);
		return rc;
	}
	if (sn.n > 1)
		qsort(sn.s, sn.n, sizeof(*sn.s), snap_cmp);
	*out = sn;
	return CM_OK;
}

void ts__snap_free(ts__snap *sn)
{
	for (size_t i = 0; i < sn->n; i++) {
		for (uint32_t j = 0; j < sn->s[i].nchunks; j++)
			free(sn->s[i].chunks[j].data);
		free(sn->s[i].chunks);
	}
	free(sn->s);
	memset(sn, 0, sizeof(*sn));
}

int ts__snap_samples(const ts__snap_series *ss, int64_t lo, int64_t hi, cm_sample **buf, size_t *len, size_t *cap)
{
	*len = 0;
	for (uint32_t j = 0; j < ss->nchunks; j++) {
		const ts__snap_chunk *c = &ss->chunks[j];
		if (c->maxt < lo || c->mint > hi)
			continue;
		ts__chunk tmp = {c->mint, c->maxt, c->data, c->len, c->n};
		int rc = chunk_decode(NULL, &tmp, buf, len, cap);
		if (rc)
			return rc;
	}
	return CM_OK;
}

/* Frees the leading chunks of s that the snapshot holds and that end before `before`; with all, the open
 * chunk too when it is unchanged. Shard write lock held; returns the samples dropped. */
static uint64_t drop_series(ts__series *s, const ts__snap_series *ss, int64_t before, int all)
{
	uint32_t k = 0;
	uint64_t dropped = 0;
	while (k < s->nchunks && k < ss->nchunks && s->chunks[k].data == ss->chunks[k].orig &&
	       s->chunks[k].maxt < before) {
		dropped += s->chunks[k].n;
		free(s->chunks[k].data);
		k++;
	}
	if (k) {
		memmove(s->chunks, s->chunks + k, (s->nchunks - k) * sizeof(*s->chunks));
		s->nchunks -= k;
	}
	if (all && s->nchunks == 0 && s->open.n && s->open.n == ss->open_n && s->open.t == ss->open_t &&
	    ss->nchunks && !ss->chunks[ss->nchunks - 1].orig) {
		dropped += s->open.n;
		ts__enc_close(&s->open);
	}
	s->nsamples -= dropped;
	if (s->nchunks)
		s->mint = s->chunks[0].mint;
	else if (s->open.n)
		s->mint = s->open.mint;
	return dropped;
}

/* Frees the snapshot's copies of the chunks of ss that end before `before`. */
static void snap_trim(ts__snap_series *ss, int64_t before)
{
	uint32_t k = 0;
	while (k < ss->nchunks && ss->chunks[k].maxt < before)
		free(ss->chunks[k++].data);
	memmove(ss->chunks, ss->chunks + k, (ss->nchunks - k) * sizeof(*ss->chunks));
	ss->nchunks -= k;
}

void ts__head_drop(ts__head *h, ts__snap *sn, int64_t before, int all)
{
	for (size_t i = 0; i < sn->n; i++) {
		shard *sh = shard_of(h, sn->s[i].id);
		pthread_rwlock_wrlock(&sh->lock);
		sh->samples -= drop_series(sn->s[i].s, &sn->s[i], before, all);
		pthread_rwlock_unlock(&sh->lock);
		snap_trim(&sn->s[i], before);
	}
}
