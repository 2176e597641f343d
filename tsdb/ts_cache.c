/* ts_cache.c -- a bounded LRU of decoded block series, so repeated queries skip pread, zstd and decoding.
 *
 * ts_query.c asks for the samples of one series of one block (ts__cache_get): a hit hands out the
 * cached array itself, shared and read-only, held by a reference until ts__cache_release; a miss reads
 * and decodes the series (ts__block_samples) outside the lock and keeps it when it fits. The entries
 * are keyed by the block's identity (ts__block_uid, from its unique directory name) and the series'
 * offset in the chunks file: blocks are immutable, so an entry never goes stale; a removed block's
 * entries are never asked for again and age out. Past the byte budget the least recently used entries
 * leave the map; one still held is freed by its last release, and its bytes count against the budget
 * until then, so the budget bounds the real memory of what was cached even while concurrent queries hold
 * entries (held bytes over the budget leave nothing else cached). An entry too big to cache (over a
 * quarter of the budget) is its query's own memory and never counts. A budget of 0 caches nothing
 * (every get decodes into an entry of its own). One mutex guards the map and the list; decoding happens
 * outside it.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdlib.h>

#include "ts_int.h"

struct ts__centry {
	uint64_t uid, off;
	cm_sample *x;
	size_t n, cap, bytes;
	uint32_t refs;
	int in_map;
	int evicted;  /* left the map while held: its bytes count until the last release */
	ts__centry *next;              /* bucket chain */
	ts__centry *older, *newer;     /* LRU list */
};

struct ts__cache {
	pthread_mutex_t mu;
	uint64_t max_bytes, bytes, hits, misses;
	ts__centry **buckets;
	size_t nbuckets, n;
	ts__centry *newest, *oldest;
};

int ts__cache_create(uint64_t max_bytes, ts__cache **out)
{
	ts__cache *c = calloc(1, sizeof(*c));
	if (!c)
		return CM_ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	c->max_bytes = max_bytes;
	*out = c;
	return CM_OK;
}

static void entry_free(ts__centry *e)
{
	free(e->x);
	free(e);
}

void ts__cache_destroy(ts__cache *c)
{
	if (!c)
		return;
	for (ts__centry *e = c->newest, *next; e; e = next) {
		next = e->older;
		entry_free(e);
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static size_t slot(const ts__cache *c, uint64_t uid, uint64_t off)
{
	uint64_t h = (uid ^ off * 0x9e3779b97f4a7c15ULL) * 0xff51afd7ed558ccdULL;
	return (size_t)(h >> 32) & (c->nbuckets - 1);
}

static ts__centry **find(ts__cache *c, uint64_t uid, uint64_t off)
{
	ts__centry **p = &c->buckets[slot(c, uid, off)];
	while (*p && ((*p)->uid != uid || (*p)->off != off))
		p = &(*p)->next;
	return p;
}

static void lru_unlink(ts__cache *c, ts__centry *e)
{
	*(e->older ? &e->older->newer : &c->oldest) = e->newer;
	*(e->newer ? &e->newer->older : &c->newest) = e->older;
	e->older = e->newer = NULL;
}

static void lru_push(ts__cache *c, ts__centry *e)
{
	e->older = c->newest, e->newer = NULL;
	*(c->newest ? &c->newest->newer : &c->oldest) = e;
	c->newest = e;
}

/* Takes e out of the map and the list; frees it unless it is held. */
static void evict(ts__cache *c, ts__centry *e)
{
	*find(c, e->uid, e->off) = e->next;
	lru_unlink(c, e);
	e->in_map = 0;
	c->n--;
	e->evicted = e->refs > 0;
	if (!e->refs) {
		c->bytes -= e->bytes;
		entry_free(e);
	}
}

static int grow(ts__cache *c)
{
	size_t nb = c->nbuckets ? c->nbuckets * 2 : 1024;
	ts__centry **b = calloc(nb, sizeof(*b));
	if (!b)
		return CM_ENOMEM;
	ts__centry **old = c->buckets;
	size_t on = c->nbuckets;
	c->buckets = b, c->nbuckets = nb;
	for (size_t i = 0; i < on; i++)
		for (ts__centry *e = old[i], *next; e; e = next) {
			next = e->next;
			ts__centry **p = &c->buckets[slot(c, e->uid, e->off)];
			e->next = *p, *p = e;
		}
	free(old);
	return CM_OK;
}

/* Puts a freshly decoded entry in the map (or hands out the one another thread put there first). */
static ts__centry *insert(ts__cache *c, ts__centry *e)
{
	if (e->bytes > c->max_bytes / 4 || (c->n >= c->nbuckets && grow(c)))
		return e; /* kept out: freed on release */
	ts__centry **p = find(c, e->uid, e->off);
	if (*p) {
		entry_free(e);
		e = *p;
		e->refs++;
		lru_unlink(c, e);
		lru_push(c, e);
		return e;
	}
	*p = e;
	e->in_map = 1;
	lru_push(c, e);
	c->bytes += e->bytes;
	c->n++;
	while (c->bytes > c->max_bytes && c->oldest != e)
		evict(c, c->oldest);
	return e;
}

int ts__cache_get(ts__cache *c, ts__block *b, const ts__bseries *info, ts__rdbuf *rb, ts__centry **out,
		  cm_err *err)
{
	uint64_t uid = ts__block_uid(b);
	pthread_mutex_lock(&c->mu);
	ts__centry **p = c->nbuckets ? find(c, uid, info->off) : NULL;
	if (p && *p) {
		ts__centry *e = *p;
		e->refs++;
		lru_unlink(c, e);
		lru_push(c, e);
		c->hits++;
		pthread_mutex_unlock(&c->mu);
		*out = e;
		return CM_OK;
	}
	c->misses++;
	pthread_mutex_unlock(&c->mu);
	ts__centry *e = calloc(1, sizeof(*e));
	if (!e)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	*e = (ts__centry){.uid = uid, .off = info->off, .refs = 1, .cap = info->n};
	int rc = (e->x = malloc(e->cap * sizeof(*e->x))) ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
	rc = rc ? rc : ts__block_samples(b, info, rb, &e->x, &e->n, &e->cap, err);
	if (rc) {
		entry_free(e);
		return rc;
	}
	e->bytes = e->cap * sizeof(*e->x) + sizeof(*e);
	pthread_mutex_lock(&c->mu);
	*out = insert(c, e);
	pthread_mutex_unlock(&c->mu);
	return CM_OK;
}

const cm_sample *ts__centry_samples(const ts__centry *e, size_t *n)
{
	*n = e->n;
	return e->x;
}

void ts__cache_release(ts__cache *c, ts__centry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&c->mu);
	int last = --e->refs == 0 && !e->in_map;
	if (last && e->evicted)
		c->bytes -= e->bytes;
	pthread_mutex_unlock(&c->mu);
	if (last)
		entry_free(e);
}

void ts__cache_stats(ts__cache *c, ts_stats *st)
{
	pthread_mutex_lock(&c->mu);
	st->cache_hits = c->hits;
	st->cache_misses = c->misses;
	st->cache_bytes = c->bytes;
	pthread_mutex_unlock(&c->mu);
}
