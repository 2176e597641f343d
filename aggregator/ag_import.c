/* ag_import.c -- bulk import: POST /api/v1/import/prometheus (streamed text exposition) and admin flush.
 *
 * The import endpoint takes Prometheus text exposition with millisecond timestamps, the way
 * VictoriaMetrics' endpoint of the same name does, so benchmark drivers and migration tools can load
 * the same file into corral and into the peers. ag_http.c hands the body over as it arrives
 * (ag__import_feed), so a body of any size streams through a bounded buffer. A per-request cache maps
 * the raw `name{labels}` text to the tsdb reference, so labels are parsed once per series, not once per
 * line; since bulk data repeats its series in the same order at every timestamp, a line is first read
 * as the entry after the previous line's followed by a plain value and timestamp (one memcmp against
 * text stored in order of first sight, no hashing, no scan from the end; line_fast).
 * Each line appends (entry, sample) to the batch log; every IMPORT_BATCH samples the log goes to the
 * request's own store thread, which groups it by series and calls ts_append_ref, so parsing the next
 * batch overlaps grouping, the WAL write and fsync of the previous one; the request is answered only
 * after the last batch is durable (WAL + fsync). A batch reads the series references from the cache
 * itself (no copy per batch), so the cache's arrays move or go only while the storer is idle.
 *
 * Accepted lines (the grammar of the text format, version 0.0.4):
 *   # anything                                      comment, HELP or TYPE: ignored
 *   (empty or blank)                                ignored
 *   name [{label="value",...[,]}] value [timestamp]
 * name is [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*, values double-quoted with the
 * escapes \\ \" \n; value is a float (also NaN, +Inf, -Inf); timestamp an integer in ms (the time of
 * the request when absent). Spaces or tabs separate the fields. A line that breaks the grammar or the
 * tsdb's label rules is skipped and counted; the answer is 204 when every line was stored, 400 with
 * the count and the first error (line number and reason) when some were skipped (the others are
 * stored), 503 when the store failed (what was acknowledged before stays). Lines are at most 64 KiB.
 *
 * Authentication: the bearer token of pushes, unless the aggregator runs with
 * --allow-unauthenticated-import (benchmarks only). POST /api/v1/admin/flush (same rule) makes
 * everything imported durable and queryable (ts_flush) and answers 204.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define IMPORT_BATCH (256u * 1024)  /* samples per ts_append_ref */
#define MAX_LINE (64u * 1024)
#define MAX_CACHE (1u << 20)        /* distinct series per request before the cache starts over */

struct ag__importer {
	ts_db *db;
	ag__metrics *metrics;
	ag__auth *auth;  /* push tokens (ag_auth.c) */
	int allow_unauth;
	ag__rwsend *fwd;  /* remote write sender (ag_rwsend.c), or NULL */
};

/* One series seen in this request: its raw text (keys[off..off+len)) and that text's hash. */
typedef struct cache_ent {
	uint64_t hash;
	size_t off;
	uint32_t len;
} cache_ent;

/* One parsed sample and the entry of its series. */
typedef struct pend {
	uint32_t ent;
	cm_sample x;
} pend;

/* A batch handed to the storer: the samples in line order (owned) and the references of the entries:
 * the request's own array, which is not reallocated or freed while the storer is busy (cache_room and
 * cache_clear wait for it), so a batch costs nothing per series. */
typedef struct batch {
	pend *log;
	size_t n;
	const uint64_t *refs;
	size_t nents;
} batch;

/* The request's storing thread: takes one batch at a time while the parser fills the next. */
typedef struct storer {
	pthread_t thr;
	int started, busy, stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	batch b;              /* the batch being handed over (owned) */
	int rc;               /* the first failure */
	cm_err err;
	uint64_t stored;
} storer;

struct ag__import {
	ag__importer *imp;
	storer st;
	int authorized;
	int64_t now_ms;
	cm_buf line;  /* a line split across two uploads */
	cm_buf keys;  /* the text of every cached series, back to back */
	cache_ent *ents;  /* in order of first sight */
	uint64_t *refs;   /* the tsdb reference of each entry */
	size_t count, ecap;
	uint32_t *slots;  /* hash table of entry numbers + 1, 0 = empty */
	size_t scap;
	uint32_t next;    /* the entry predicted for the next line */
	pend *log;        /* samples not yet handed to the storer */
	size_t npend, pcap;
	uint64_t lineno, stored, skipped;
	int failed;       /* the store failed: nothing more is stored */
	cm_err first_bad;
	cm_err store_err;
	int discard;      /* dropping the rest of an over-long line */
	char unesc[MAX_LINE + 16];
	cm_label labels[257];
};

/* ---- the line parser ------------------------------------------------------------------------------- */

static int name_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
	       (!first && c >= '0' && c <= '9');
}

/* Where the series text (name and braces) of line p[0..n) ends; 0 when it is malformed. */
static size_t series_end(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && name_char(p[i], i == 0))
		i++;
	if (i == 0 || i == n || p[i] != '{')
		return i;
	for (int quoted = 0; ++i < n;) {
		if (quoted && p[i] == '\\')
			i++;
		else if (p[i] == '"')
			quoted = !quoted;
		else if (!quoted && p[i] == '}')
			return i + 1;
	}
	return 0;
}

/* Checks and parses `name{l="v",...}` (all of p[0..n)) into labels with unescaped strings in buf. */
int ag__prom_series_parse(const char *p, size_t n, cm_label *labels, size_t max, size_t *nlabels, char *buf,
			  cm_err *err)
{
	size_t i = 0, k = 0, o = 0;
	if (n == 0 || series_end(p, n) != n)
		return cm_errf(err, CM_EPROTO, "bad metric name or labels");
	while (i < n && p[i] != '{')
		i++;
	labels[k++] = (cm_label){"__name__", buf};
	memcpy(buf, p, i), o = i, buf[o++] = 0;
	if (i < n)
		i++; /* '{' */
	while (i < n && p[i] != '}') {
		size_t s = i;
		while (i < n && name_char(p[i], i == s) && p[i] != ':')
			i++;
		if (i == s || i + 1 >= n || p[i] != '=' || p[i + 1] != '"')
			return cm_errf(err, CM_EPROTO, "bad label name at column %zu", s + 1);
		if (k == max)
			return cm_errf(err, CM_EPROTO, "too many labels");
		labels[k].name = buf + o;
		memcpy(buf + o, p + s, i - s), o += i - s, buf[o++] = 0;
		labels[k].value = buf + o;
		for (i += 2; i < n && p[i] != '"'; i++) {
			char c = p[i];
			if (c == '\\' && i + 1 < n) {
				c = p[++i];
				c = c == 'n' ? '\n' : c;
				if (c != '\n' && c != '\\' && c != '"')
					return cm_errf(err, CM_EPROTO, "bad escape in label value");
			}
			buf[o++] = c;
		}
		buf[o++] = 0;
		k++;
		if (++i < n && p[i] == ',')
			i++;
	}
	*nlabels = k;
	return CM_OK;
}

/* The value of the 8 decimal digits at s, or -1 when one of them is not a digit: the bytes as one word,
 * checked and combined pairwise (10, 100, 10000) in its lanes. */
static int64_t digits8(const char *s)
{
	uint64_t w;
	memcpy(&w, s, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	w = __builtin_bswap64(w); /* the first digit in the low byte */
#endif
	if ((w & 0xf0f0f0f0f0f0f0f0ull) != 0x3030303030303030ull ||
	    ((w + 0x0606060606060606ull) & 0xf0f0f0f0f0f0f0f0ull) != 0x3030303030303030ull)
		return -1;
	w -= 0x3030303030303030ull;
	w = (w * 10 + (w >> 8)) & 0x00ff00ff00ff00ffull;
	w = (w * 100 + (w >> 16)) & 0x0000ffff0000ffffull;
	return (int64_t)((w * 10000 + (w >> 32)) & 0xffffffffull);
}

/* Exact decimal fast path (Clinger): at most 15 significant digits and a power of ten up to 22. */
static int fast_float(const char *s, size_t n, double *out)
{
	static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,	 1e6,  1e7,  1e8,  1e9,	 1e10, 1e11,
				     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
	size_t i = 0, digits = 0;
	int neg = 0, frac = -1;
	uint64_t m = 0;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	for (; i < n; i++) {
		int64_t d8;
		if (s[i] == '.' && frac < 0) {
			frac = 0;
			continue;
		}
		if (i + 8 <= n && digits + 8 <= 15 && (d8 = digits8(s + i)) >= 0) {
			m = m * 100000000 + (uint64_t)d8;
			digits += 8, i += 7;
			frac += frac >= 0 ? 8 : 0;
			continue;
		}
		if (s[i] < '0' || s[i] > '9' || ++digits > 15)
			return 0;
		m = m * 10 + (uint64_t)(s[i] - '0');
		frac += frac >= 0;
	}
	if (digits == 0)
		return 0;
	double d = (double)m;
	d = frac > 0 ? d / p10[frac] : d;
	*out = neg ? -d : d;
	return 1;
}

static int parse_value(const char *s, size_t n, double *out)
{
	char tmp[64];
	char *end;
	if (fast_float(s, n, out))
		return CM_OK;
	if (n == 0 || n >= sizeof(tmp))
		return CM_EPROTO;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	if (!strcmp(tmp, "NaN") || !strcmp(tmp, "+Inf") || !strcmp(tmp, "-Inf") || !strcmp(tmp, "Inf")) {
		*out = tmp[0] == 'N' ? NAN : tmp[0] == '-' ? -INFINITY : INFINITY;
		return CM_OK;
	}
	if (strchr(tmp, 'n') || strchr(tmp, 'N') || strchr(tmp, 'x') || strchr(tmp, 'X'))
		return CM_EPROTO; /* strtod's nan(...), inf, infinity spellings and hex floats */
	*out = strtod(tmp, &end);
	return *end ? CM_EPROTO : CM_OK;
}

static int parse_ts(const char *s, size_t n, int64_t *out)
{
	size_t i = 0;
	int neg = 0;
	uint64_t v = 0;
	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (i == n || n - i > 18)
		return CM_EPROTO;
	for (int64_t d8; i + 8 <= n && (d8 = digits8(s + i)) >= 0; i += 8)
		v = v * 100000000 + (uint64_t)d8;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return CM_EPROTO;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = neg ? -(int64_t)v : (int64_t)v;
	return CM_OK;
}

static size_t skip_ws(const char *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i;
}

/* The last token of p[0..n) (n at a non-blank end): [*a, n). */
static size_t token_start(const char *p, size_t n)
{
	while (n && p[n - 1] != ' ' && p[n - 1] != '\t')
		n--;
	return n;
}

static size_t trim_end(const char *p, size_t n)
{
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	return n;
}

/* Splits from the end, so the series text is not scanned here: the last token is the timestamp when
 * the one before it is a value, otherwise the value. The caller checks the series text (series_end)
 * the first time it sees it; a cached text was checked before. */
int ag__prom_line_split(const char *p, size_t n, int64_t now_ms, size_t *key_len, cm_sample *out, cm_err *err)
{
	double v;
	n = trim_end(p, n);
	size_t a = token_start(p, n), kend = trim_end(p, a);
	size_t b = token_start(p, kend), kend2 = trim_end(p, b);
	if (a == 0 || kend == 0)
		return cm_errf(err, CM_EPROTO, "no sample value");
	if (kend2 > 0 && p[kend - 1] != '}' && parse_value(p + b, kend - b, &v) == CM_OK) {
		if (parse_ts(p + a, n - a, &out->t_ms))
			return cm_errf(err, CM_EPROTO, "bad timestamp");
		out->v = v;
		*key_len = kend2;
		return CM_OK;
	}
	if (parse_value(p + a, n - a, &out->v))
		return cm_errf(err, CM_EPROTO, "bad sample value");
	out->t_ms = now_ms;
	*key_len = kend;
	return CM_OK;
}

static int batch_flush(ag__import *im);
static int storer_wait(ag__import *im);

/* ---- the series cache ------------------------------------------------------------------------------ */

static uint64_t key_hash(const char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
	h ^= h >> 33;
	return h * 0xc4ceb9fe1a85ec53ull;
}

static void cache_clear(ag__import *im)
{
	storer_wait(im); /* its batch reads refs */
	free(im->ents), free(im->refs), free(im->slots);
	im->ents = NULL, im->refs = NULL, im->slots = NULL;
	im->count = im->ecap = im->scap = im->next = 0;
	im->keys.len = 0;
}

/* Makes room for one more entry: the entry arrays grow, the slot table doubles at 3/4 full. */
static int cache_room(ag__import *im)
{
	if (im->count == im->ecap) {
		size_t cap = im->ecap ? im->ecap * 2 : 1024;
		storer_wait(im); /* its batch reads refs */
		cache_ent *e = realloc(im->ents, cap * sizeof(*e));
		if (e)
			im->ents = e;
		uint64_t *r = realloc(im->refs, cap * sizeof(*r));
		if (r)
			im->refs = r;
		if (!e || !r)
			return CM_ENOMEM;
		im->ecap = cap;
	}
	if ((im->count + 1) * 4 <= im->scap * 3)
		return CM_OK;
	size_t cap = im->scap ? im->scap * 2 : 4096;
	uint32_t *s = calloc(cap, sizeof(*s));
	if (!s)
		return CM_ENOMEM;
	for (uint32_t i = 0; i < im->count; i++) {
		size_t j = im->ents[i].hash & (cap - 1);
		while (s[j])
			j = (j + 1) & (cap - 1);
		s[j] = i + 1;
	}
	free(im->slots);
	im->slots = s, im->scap = cap;
	return CM_OK;
}

/* The entry of series text p[0..n), created (labels parsed, reference taken) on first sight. */
static int cache_get(ag__import *im, const char *p, size_t n, uint32_t *out, cm_err *err)
{
	int64_t g = -1;
	uint64_t h = key_hash(p, n);
	for (size_t j = im->scap ? h & (im->scap - 1) : 0; g < 0 && im->scap && im->slots[j];
	     j = (j + 1) & (im->scap - 1)) {
		const cache_ent *e = &im->ents[im->slots[j] - 1];
		if (e->hash == h && e->len == n && !memcmp(im->keys.data + e->off, p, n))
			g = im->slots[j] - 1;
	}
	if (g < 0) {
		size_t nl;
		uint64_t ref;
		int rc = ag__prom_series_parse(p, n, im->labels, CM_ARRAY_LEN(im->labels), &nl, im->unesc, err);
		if (!rc)
			rc = ts_series_ref(im->imp->db, im->labels, nl, &ref, err);
		if (rc)
			return rc == CM_ENOMEM ? rc : CM_EPROTO;
		if (cache_room(im) || cm_buf_append(&im->keys, p, n))
			return cm_errf(err, CM_ENOMEM, "out of memory");
		size_t j = h & (im->scap - 1);
		while (im->slots[j])
			j = (j + 1) & (im->scap - 1);
		g = im->count++;
		im->slots[j] = (uint32_t)g + 1;
		im->ents[g] = (cache_ent){h, im->keys.len - n, (uint32_t)n};
		im->refs[g] = ref;
	}
	im->next = (uint32_t)g + 1 == im->count ? 0 : (uint32_t)g + 1;
	*out = (uint32_t)g;
	return CM_OK;
}

/* ---- batches --------------------------------------------------------------------------------------- */

/* Groups a batch's samples by entry, keeping their order within each: x gets them series by series,
 * ents the entries that have samples (in entry order) and ends where each one's samples end in x. */
static int batch_group(const pend *log, size_t n, size_t nents, cm_sample *x, uint32_t *ents, size_t *ends,
		       size_t *ngroups)
{
	size_t *at = calloc(nents ? nents : 1, sizeof(*at)), g = 0, sum = 0;
	if (!at)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		at[log[i].ent]++;
	for (uint32_t e = 0; e < nents; e++) {
		size_t c = at[e];
		if (c)
			ents[g++] = e;
		at[e] = sum, sum += c;
	}
	for (size_t i = 0; i < n; i++)
		x[at[log[i].ent]++] = log[i].x;
	for (size_t i = 0; i < g; i++)
		ends[i] = at[ents[i]];
	free(at);
	*ngroups = g;
	return CM_OK;
}

/* Stores one batch: groups its samples by series and appends them (one WAL record). */
static int batch_store(ts_db *db, const batch *b, cm_err *err)
{
	size_t most = b->n < b->nents ? b->n : b->nents, ng = 0; /* groups */
	cm_sample *x = malloc((b->n ? b->n : 1) * sizeof(*x));
	uint32_t *ents = malloc((most ? most : 1) * sizeof(*ents));
	size_t *ends = malloc((most ? most : 1) * sizeof(*ends));
	ts_ref_series *rs = malloc((most ? most : 1) * sizeof(*rs));
	int rc = x && ents && ends && rs ? batch_group(b->log, b->n, b->nents, x, ents, ends, &ng) : CM_ENOMEM;
	for (size_t i = 0; !rc && i < ng; i++) {
		size_t from = i ? ends[i - 1] : 0;
		rs[i] = (ts_ref_series){b->refs[ents[i]], x + from, ends[i] - from};
	}
	if (rc)
		cm_errf(err, rc, "out of memory");
	else
		rc = ts_append_ref(db, rs, ng, err);
	free(x), free(ents), free(ends), free(rs);
	return rc;
}

static void batch_free(batch *b)
{
	free(b->log);
	*b = (batch){0};
}

static void *storer_run(void *arg)
{
	ag__import *im = arg;
	storer *st = &im->st;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->busy && !st->stop)
			pthread_cond_wait(&st->cv, &st->mu);
		if (!st->busy)
			break;
		pthread_mutex_unlock(&st->mu);
		cm_err err;
		int rc = st->rc ? st->rc : batch_store(im->imp->db, &st->b, &err);
		if (!rc)
			atomic_fetch_add(&im->imp->metrics->samples_ingested, st->b.n);
		pthread_mutex_lock(&st->mu);
		if (rc && !st->rc)
			st->rc = rc, st->err = err;
		st->stored += rc ? 0 : st->b.n;
		batch_free(&st->b);
		st->busy = 0;
		pthread_cond_broadcast(&st->cv);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Waits until the storer has no batch; returns its first failure (copied into im). */
static int storer_wait(ag__import *im)
{
	storer *st = &im->st;
	pthread_mutex_lock(&st->mu);
	while (st->busy)
		pthread_cond_wait(&st->cv, &st->mu);
	int rc = st->rc;
	if (rc && !im->failed)
		im->failed = rc, im->store_err = st->err;
	im->stored = st->stored;
	pthread_mutex_unlock(&st->mu);
	return rc;
}

static void storer_stop(ag__import *im)
{
	storer *st = &im->st;
	if (!st->started)
		return;
	pthread_mutex_lock(&st->mu);
	st->stop = 1;
	pthread_cond_broadcast(&st->cv);
	pthread_mutex_unlock(&st->mu);
	pthread_join(st->thr, NULL);
	st->started = 0;
}

/* Queues the pending samples for remote write, keyed by their series text (which lives only here, so
 * this runs as the batch is handed to the storer, before its append; a failed append answers 503 and
 * the client's retry sends them again, which receivers dedupe). */
static void forward_pending(ag__import *im)
{
	size_t n = im->npend < im->count ? im->npend : im->count, ng = 0; /* groups */
	n = n ? n : 1;
	cm_sample *x = malloc((im->npend ? im->npend : 1) * sizeof(*x));
	uint32_t *ents = malloc(n * sizeof(*ents));
	size_t *ends = malloc(n * sizeof(*ends)), *kl = malloc(n * sizeof(*kl)), *nx = malloc(n * sizeof(*nx));
	const char **k = malloc(n * sizeof(*k));
	const cm_sample **xs = malloc(n * sizeof(*xs));
	if (x && ents && ends && kl && nx && k && xs && !batch_group(im->log, im->npend, im->count, x, ents, ends, &ng)) {
		for (size_t i = 0; i < ng; i++) {
			size_t from = i ? ends[i - 1] : 0;
			k[i] = (const char *)im->keys.data + im->ents[ents[i]].off, kl[i] = im->ents[ents[i]].len;
			xs[i] = x + from, nx[i] = ends[i] - from;
		}
		ag__rwsend_enqueue_text(im->imp->fwd, k, kl, xs, nx, ng);
	}
	free(x), free(ents), free(ends), free(kl), free(nx), free(k), free(xs);
}

/* Hands the pending samples to the storer (which stores the previous batch meanwhile). */
static int batch_flush(ag__import *im)
{
	if (!im->npend || im->failed)
		return im->failed;
	int rc = storer_wait(im);
	batch b = {im->log, im->npend, im->refs, im->count};
	if (!rc && im->imp->fwd)
		forward_pending(im);
	if (!rc && !im->st.started) {
		int e = pthread_create(&im->st.thr, NULL, storer_run, im);
		if (e)
			rc = cm_errf(&im->store_err, -e, "starting the import's store thread: %s", strerror(e));
		im->st.started = !e;
	}
	im->log = NULL, im->npend = im->pcap = 0;
	if (rc) {
		batch_free(&b);
		im->failed = im->failed ? im->failed : rc;
		return rc;
	}
	pthread_mutex_lock(&im->st.mu);
	im->st.b = b, im->st.busy = 1;
	pthread_cond_broadcast(&im->st.cv);
	pthread_mutex_unlock(&im->st.mu);
	return CM_OK;
}

static int pend_add(ag__import *im, uint32_t ent, cm_sample x)
{
	if (im->npend == im->pcap) {
		size_t cap = im->pcap ? im->pcap * 2 : IMPORT_BATCH;
		pend *p = realloc(im->log, cap * sizeof(*p));
		if (!p)
			return CM_ENOMEM;
		im->log = p, im->pcap = cap;
	}
	im->log[im->npend++] = (pend){ent, x};
	return CM_OK;
}

static void line_bad(ag__import *im, const cm_err *why)
{
	if (im->skipped++ == 0)
		cm_errf(&im->first_bad, CM_EPROTO, "line %llu: %s", (unsigned long long)im->lineno, why->msg);
}

/* The common line of bulk data, the series predicted next (bulk data repeats its series in the same
 * order at every timestamp), one blank, a plain decimal value, one blank and a timestamp: 1 and *e, *x
 * set, else 0 (the general path then reads the line). Gives what ag__prom_line_split would. */
static int line_fast(ag__import *im, const char *p, size_t n, uint32_t *e, cm_sample *x)
{
	uint32_t g = im->next;
	if (g >= im->count)
		return 0;
	size_t k = im->ents[g].len, v = k + 1, t = v;
	if (n <= v || (p[k] != ' ' && p[k] != '\t') || memcmp(im->keys.data + im->ents[g].off, p, k))
		return 0;
	while (t < n && p[t] != ' ' && p[t] != '\t')
		t++;
	if (t + 1 >= n || !fast_float(p + v, t - v, &x->v) || parse_ts(p + t + 1, n - t - 1, &x->t_ms))
		return 0;
	im->next = g + 1 == im->count ? 0 : g + 1;
	*e = g;
	return 1;
}

/* Splits a line and finds the entry of its series: the fast path, else the general grammar. */
static int line_entry(ag__import *im, const char *p, size_t n, uint32_t *e, cm_sample *x, cm_err *why)
{
	size_t k;
	if (line_fast(im, p, n, e, x))
		return CM_OK;
	int rc = ag__prom_line_split(p, n, im->now_ms, &k, x, why);
	if (!rc && im->count >= MAX_CACHE && !(rc = batch_flush(im)))
		cache_clear(im);
	return rc ? rc : cache_get(im, p, k, e, why);
}

/* Handles one complete line (without its newline). */
static int line_take(ag__import *im, const char *p, size_t n)
{
	cm_err why;
	cm_sample x;
	uint32_t e = 0;
	im->lineno++;
	if (n && p[n - 1] == '\r')
		n--;
	size_t i = skip_ws(p, 0, n);
	if (i == n || p[i] == '#')
		return CM_OK;
	int rc = line_entry(im, p + i, n - i, &e, &x, &why);
	if (!rc && (rc = pend_add(im, e, x)))
		cm_errf(&im->store_err, rc, "out of memory");
	if (rc == CM_EPROTO) {
		line_bad(im, &why);
		return CM_OK;
	}
	if (!rc && im->npend >= IMPORT_BATCH)
		rc = batch_flush(im);
	if (rc && !im->failed) {
		im->failed = rc;
		if (!im->store_err.msg[0])
			cm_errf(&im->store_err, rc, "%s", why.msg);
	}
	return rc;
}

/* Adds p[0..n) to the split-line buffer; a line over MAX_LINE is skipped up to its newline. */
static void line_part(ag__import *im, const char *p, size_t n, int complete)
{
	if (!im->discard && im->line.len + n > MAX_LINE) {
		cm_err why;
		cm_errf(&why, CM_EPROTO, "line longer than %u bytes", MAX_LINE);
		im->lineno++;
		line_bad(im, &why);
		im->line.len = 0;
		im->discard = 1;
	}
	if (!im->discard && cm_buf_append(&im->line, p, n)) {
		im->failed = CM_ENOMEM;
		cm_errf(&im->store_err, CM_ENOMEM, "out of memory");
		return;
	}
	if (complete && !im->discard)
		line_take(im, (const char *)im->line.data, im->line.len);
	if (complete)
		im->line.len = 0, im->discard = 0;
}

void ag__import_feed(ag__import *im, const char *p, size_t n)
{
	if (!im->authorized || im->failed)
		return;
	while (n && !im->failed) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (!nl || im->line.len || im->discard)
			line_part(im, p, take, nl != NULL);
		else
			line_take(im, p, take);
		p += take + (nl != NULL), n -= take + (nl != NULL);
	}
}

/* ---- requests -------------------------------------------------------------------------------------- */

int ag__importer_create(ts_db *db, ag__metrics *m, ag__auth *auth, int allow_unauth, ag__importer **out,
			cm_err *err)
{
	ag__importer *imp = calloc(1, sizeof(*imp));
	if (!imp)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	imp->db = db, imp->metrics = m, imp->auth = auth, imp->allow_unauth = allow_unauth;
	*out = imp;
	return CM_OK;
}

void ag__importer_set_forward(ag__importer *imp, ag__rwsend *fwd) { imp->fwd = fwd; }

void ag__importer_destroy(ag__importer *imp)
{
	if (!imp)
		return;
	free(imp);
}

static int import_authorized(const ag__importer *imp, const char *header)
{
	char bound[256]; /* a token bound to one node imports nothing */
	return imp->allow_unauth || (ag__auth_push(imp->auth, header, bound, sizeof(bound)) && !bound[0]);
}

ag__import *ag__import_begin(ag__importer *imp, const char *authorization)
{
	ag__import *im = calloc(1, sizeof(*im));
	if (!im)
		return NULL;
	im->imp = imp;
	im->authorized = import_authorized(imp, authorization);
	im->now_ms = cm_now_ms();
	cm_buf_init(&im->line);
	cm_buf_init(&im->keys);
	pthread_mutex_init(&im->st.mu, NULL);
	pthread_cond_init(&im->st.cv, NULL);
	return im;
}

void ag__import_end(ag__import *im, ag__resp *resp)
{
	if (!im->authorized) {
		ag__resp_error(resp, 401, "unauthorized", "missing or wrong bearer token");
		return;
	}
	if (im->line.len && !im->failed && !im->discard) /* a last line without a newline */
		line_take(im, (const char *)im->line.data, im->line.len);
	batch_flush(im);
	storer_wait(im); /* acknowledged means stored: every batch is durable before the answer */
	if (im->failed) {
		ag__resp_error(resp, im->failed == CM_EINVAL ? 400 : 503, im->failed == CM_EINVAL ? "bad_data" : "unavailable",
			       im->store_err.msg);
		return;
	}
	if (im->skipped) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%llu line(s) skipped, %llu sample(s) stored; first: %s",
			 (unsigned long long)im->skipped, (unsigned long long)im->stored, im->first_bad.msg);
		ag__resp_error(resp, 400, "bad_data", msg);
		return;
	}
	resp->status = 204;
}

void ag__import_free(ag__import *im)
{
	if (!im)
		return;
	storer_stop(im);
	batch_free(&im->st.b);
	free(im->log);
	cache_clear(im);
	pthread_mutex_destroy(&im->st.mu);
	pthread_cond_destroy(&im->st.cv);
	cm_buf_close(&im->keys);
	cm_buf_close(&im->line);
	free(im);
}

void ag__import_flush(ag__importer *imp, const ag__req *req, ag__resp *resp)
{
	cm_err err = {{0}};
	if (!import_authorized(imp, req->authorization)) {
		ag__resp_error(resp, 401, "unauthorized", "missing or wrong bearer token");
		return;
	}
	int rc = ts_flush(imp->db, &err);
	if (rc) {
		ag__resp_error(resp, 503, "unavailable", err.msg);
		return;
	}
	resp->status = 204;
}
