/* test_ts_block.c -- unit tests of blocks (tsdb/ts_block.c), cuts (ts_cut.c) and select over both (ts_query.c).
 *
 * The index's matcher algebra is checked against a brute-force oracle on random label sets, in the head
 * and in blocks; cuts must keep every sample (random in-order and out-of-order appends compared with a
 * model, before and after a reopen, and after compaction merged them per day); a bit flip in a block's index or meta leaves that block out with
 * the file and offset reported while the rest opens, and a flip in its chunks fails only that series.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <math.h>
#include <fcntl.h>
#include <pthread.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ts_int.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static char *tmpdir_new(void)
{
	char *d = strdup("/tmp/test_ts_block-XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void tmpdir_free(char *d)
{
	nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(d);
}

static ts_db *db_open(const char *dir, ts_open_report *rep)
{
	ts_db *db = NULL;
	ts_open_report local;
	ts_opts opts = {.no_fsync = 1, .manual_cut = 1, .cache_bytes = 256 << 10}; /* small: entries are evicted */
	cm_err err = {{0}};
	if (ts_open(dir, &opts, &db, rep ? rep : &local, &err))
		fail_msg("ts_open: %s", err.msg);
	return db;
}

/* ---- matcher algebra against a brute-force oracle ---------------------------------------------------- */

#define NSER 300
static const char *names[] = {"job", "env", "zone"};
static const char *vals[] = {"", "a", "b", "ab", "ba", "c"};

typedef struct rseries {
	char v[3][4];  /* values of job, env, zone ("" = absent) */
	char id[16];
} rseries;

static rseries S[NSER];

static void make_series(ts_db *db)
{
	for (int i = 0; i < NSER; i++) {
		cm_label l[5];
		size_t n = 0;
		snprintf(S[i].id, sizeof(S[i].id), "%d", i);
		l[n++] = (cm_label){"__name__", "m"};
		l[n++] = (cm_label){"i", S[i].id};
		for (int k = 0; k < 3; k++) {
			snprintf(S[i].v[k], sizeof(S[i].v[k]), "%s", vals[rnd() % 6]);
			if (S[i].v[k][0] || rnd() % 2) /* an empty value given explicitly or left out: the same */
				l[n++] = (cm_label){names[k], S[i].v[k]};
		}
		cm_sample x = {1000 + i, i};
		cm_series s = {l, n, &x, 1};
		assert_int_equal(ts_append(db, &s, 1, NULL), 0);
	}
}

typedef struct seen {
	int hit[NSER];
	int count;
} seen;

static int collect(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	seen *s = ctx;
	assert_int_equal(n, 1);
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, "i"))
			s->hit[atoi(l[i].value)]++;
	assert_int_equal((int)x[0].v + 1000, x[0].t_ms);
	s->count++;
	return 0;
}

static int collect_labels(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	seen *s = ctx;
	assert_null(x);
	assert_int_equal(n, 0);
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, "i"))
			s->hit[atoi(l[i].value)]++;
	s->count++;
	return 0;
}

static void check_matchers(ts_db *db, int rounds)
{
	static const char *res[] = {"a.*", "b", "", ".*", "a|c", "(ab|ba)", ".+"};
	for (int r = 0; r < rounds; r++) {
		ts_matcher m[3];
		size_t nm = 1 + rnd() % 3;
		int which[3];
		for (size_t k = 0; k < nm; k++) {
			ts_match_type t = (ts_match_type)(rnd() % 4);
			which[k] = (int)(rnd() % 3);
			const char *v = t < TS_MATCH_RE ? vals[rnd() % 6] : res[rnd() % 7];
			assert_int_equal(ts_matcher_init(&m[k], t, names[which[k]], v, NULL), 0);
		}
		seen got = {{0}, 0}, names_only = {{0}, 0};
		assert_int_equal(ts_select(db, m, nm, INT64_MIN, INT64_MAX, collect, &got), 0);
		assert_int_equal(ts_select_series(db, m, nm, INT64_MIN, INT64_MAX, collect_labels, &names_only), 0);
		assert_memory_equal(got.hit, names_only.hit, sizeof(got.hit));
		int want = 0;
		for (int i = 0; i < NSER; i++) {
			int ok = 1;
			for (size_t k = 0; k < nm; k++)
				ok &= ts_matcher_matches(&m[k], S[i].v[which[k]]);
			want += ok;
			assert_int_equal(got.hit[i], ok);
		}
		assert_int_equal(got.count, want);
		for (size_t k = 0; k < nm; k++)
			ts_matcher_close(&m[k]);
	}
}

static int value_seen(void *ctx, const char *v)
{
	int *hit = ctx;
	for (int i = 1; i < 6; i++)
		if (!strcmp(vals[i], v))
			hit[i] = 1;
	assert_true(v[0]);
	return 0;
}

/* ts_label_values of every name over [1000 + from, end] against the values the series hold. */
static void check_values(ts_db *db, int from)
{
	for (int k = 0; k < 3; k++) {
		int want[6] = {0}, got[6] = {0};
		for (int i = from; i < NSER; i++)
			for (int j = 1; j < 6; j++)
				want[j] |= !strcmp(S[i].v[k], vals[j]);
		assert_int_equal(ts_label_values(db, names[k], 1000 + from, INT64_MAX, value_seen, got), 0);
		assert_memory_equal(got, want, sizeof(want));
	}
}

static void test_matcher_oracle(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, NULL);
	make_series(db);
	check_matchers(db, 300); /* the head */
	check_values(db, 0);
	check_values(db, 290);
	assert_int_equal(ts_flush(db, NULL), 0);
	check_values(db, 0);   /* the block's postings */
	check_values(db, 290); /* the block reaches out of the range: series by series */
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.blocks, 1);
	assert_int_equal(st.block_samples, NSER);
	assert_int_equal(st.samples, 0);
	check_matchers(db, 300); /* the block's postings */
	ts_close(db);
	db = db_open(dir, NULL);
	check_matchers(db, 100); /* reopened from disk */
	ts_close(db);
	tmpdir_free(dir);
}

/* ---- cuts keep every sample ---------------------------------------------------------------------- */

#define NS 70 /* more than the 64 block series past which ts_select decodes on a worker thread */
#define HOUR (3600 * 1000LL)

typedef struct model {
	cm_sample *x[NS];
	size_t n[NS];
} model;

static void model_add(model *m, int s, cm_sample x)
{
	size_t i = 0;
	while (i < m->n[s] && m->x[s][i].t_ms < x.t_ms)
		i++;
	if (i < m->n[s] && m->x[s][i].t_ms == x.t_ms)
		return;
	m->x[s] = realloc(m->x[s], (m->n[s] + 1) * sizeof(cm_sample));
	memmove(m->x[s] + i + 1, m->x[s] + i, (m->n[s] - i) * sizeof(cm_sample));
	m->x[s][i] = x;
	m->n[s]++;
}

typedef struct cmp_ctx {
	model *m;
	int seen;
	char prev[16];
} cmp_ctx;

static int compare(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	cmp_ctx *c = ctx;
	int s = -1;
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, "s")) {
			s = atoi(l[i].value);
			assert_true(strcmp(c->prev, l[i].value) < 0); /* in label-set order */
			snprintf(c->prev, sizeof(c->prev), "%s", l[i].value);
		}
	assert_true(s >= 0 && s < NS);
	if (n != c->m->n[s])
		fail_msg("series %d: %zu samples, want %zu", s, n, c->m->n[s]);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(x[i].t_ms, c->m->x[s][i].t_ms);
		assert_memory_equal(&x[i].v, &c->m->x[s][i].v, sizeof(double)); /* NaN payloads too */
	}
	c->seen++;
	return 0;
}

typedef struct par_ctx {
	model *m;
	long rank[NS]; /* each written by the one call that gets its series */
} par_ctx;

static int compare_par(void *ctx, size_t rank, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	par_ctx *c = ctx;
	int s = -1;
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, "s"))
			s = atoi(l[i].value);
	if (s < 0 || s >= NS || n != c->m->n[s] || c->rank[s] != -1)
		return CM_EINVAL; /* cmocka's asserts are not for other threads */
	for (size_t i = 0; i < n; i++)
		if (x[i].t_ms != c->m->x[s][i].t_ms || memcmp(&x[i].v, &c->m->x[s][i].v, sizeof(double)))
			return CM_EINVAL;
	c->rank[s] = (long)rank;
	return 0;
}

static int by_label(const void *a, const void *b)
{
	char x[16], y[16];
	snprintf(x, sizeof(x), "%d", *(const int *)a);
	snprintf(y, sizeof(y), "%d", *(const int *)b);
	return strcmp(x, y);
}

static void check_model(ts_db *db, model *m)
{
	cmp_ctx c = {m, 0, ""};
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, compare, &c), 0);
	assert_int_equal(c.seen, NS);
	static par_ctx p; /* the same through ts_select_par: every series once, ranks in label-set order */
	int order[NS];
	p.m = m;
	for (int s = 0; s < NS; s++)
		p.rank[s] = -1, order[s] = s;
	assert_int_equal(ts_select_par(db, NULL, 0, INT64_MIN, INT64_MAX, compare_par, &p), 0);
	qsort(order, NS, sizeof(*order), by_label);
	for (int i = 1; i < NS; i++)
		assert_true(p.rank[order[i - 1]] >= 0 && p.rank[order[i - 1]] < p.rank[order[i]]);
}

static void append_one(ts_db *db, model *m, int s, int64_t t)
{
	char v[16];
	snprintf(v, sizeof(v), "%d", s);
	cm_label l[] = {{"__name__", "cut"}, {"s", v}};
	cm_sample x = {t, (double)(rnd() % 1000)};
	cm_series ser = {l, 2, &x, 1};
	assert_int_equal(ts_append(db, &ser, 1, NULL), 0);
	ts_stats st;
	ts_get_stats(db, &st);
	model_add(m, s, x);
}

static void test_cut_keeps_samples(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	static model m;
	memset(&m, 0, sizeof(m));
	ts_db *db = db_open(dir, NULL);
	int64_t t = 0;
	for (int step = 0; step < 1500; step++) {
		t += 10000 + (int64_t)(rnd() % 30000);
		for (int s = 0; s < NS; s++) {
			int64_t at = rnd() % 10 == 0 ? t - (int64_t)(rnd() % 500000) : t; /* some out of order */
			append_one(db, &m, s, at);
		}
		if (step % 300 == 299) { /* a cut at the last whole window, as the storage thread does */
			cm_err err;
			int64_t b = (t - 600000) / TS__BLOCK_MS * TS__BLOCK_MS;
			assert_int_equal(ts__cut(db, b, &err), 0);
			check_model(db, &m);
		}
	}
	check_model(db, &m);
	ts_close(db); /* the checkpoint and later segments must replay to the same */
	db = db_open(dir, NULL);
	check_model(db, &m);
	assert_int_equal(ts_flush(db, NULL), 0);
	check_model(db, &m);
	ts_stats st;
	ts_get_stats(db, &st);
	assert_true(st.cuts >= 1);
	assert_true(st.compactions >= 1); /* the 2 h blocks of each day merged: every sample still there */
	assert_true(st.blocks <= 2);
	assert_int_equal(st.samples, 0);
	assert_true(st.cache_misses > 0 && st.cache_bytes <= 256 << 10); /* every select scanned more than fits */
	ts_matcher one;
	assert_int_equal(ts_matcher_init(&one, TS_MATCH_EQ, "s", "7", NULL), 0);
	for (int i = 0; i < 2; i++) { /* the second select of one series finds it in the cache */
		cmp_ctx c = {&m, 0, ""};
		assert_int_equal(ts_select(db, &one, 1, INT64_MIN, INT64_MAX, compare, &c), 0);
		assert_int_equal(c.seen, 1);
	}
	ts_matcher_close(&one);
	uint64_t hits = st.cache_hits;
	ts_get_stats(db, &st);
	assert_true(st.cache_hits > hits);
	ts_close(db);
	db = db_open(dir, NULL);
	check_model(db, &m);
	ts_close(db);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
	tmpdir_free(dir);
}

/* A cut killed after its checkpoint replaced a segment and while it was removing the older segments
 * (oldest first): a restarted process cut at 2 h again, so the first cut's checkpoint (the samples from
 * 2 h on) is gone, but the segments written after the restart are still there. They hold samples newer
 * than the new checkpoint's oldest by more than the out-of-order window; a reopen that replayed them
 * before the checkpoint would drop the checkpoint's first samples. The checkpoint supersedes every
 * lower-numbered segment, so nothing may be lost. */
typedef struct saved_seg {
	char name[64];
	uint8_t *data;
	size_t len;
} saved_seg;

static int save_wal(const char *dir, saved_seg *out, int max)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/wal", dir);
	DIR *d = opendir(path);
	int n = 0;
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d)) && n < max;) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/wal/%.60s", dir, e->d_name);
		saved_seg *sg = &out[n++];
		snprintf(sg->name, sizeof(sg->name), "%.60s", e->d_name);
		FILE *f = fopen(path, "rb");
		assert_non_null(f);
		fseek(f, 0, SEEK_END);
		sg->len = (size_t)ftell(f);
		rewind(f);
		sg->data = malloc(sg->len + 1);
		assert_int_equal(fread(sg->data, 1, sg->len, f), sg->len);
		fclose(f);
	}
	closedir(d);
	return n;
}

static void test_cut_interrupted(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	static model m;
	memset(&m, 0, sizeof(m));
	ts_db *db = NULL;
	ts_opts opts = {.no_fsync = 1, .manual_cut = 1, .segment_bytes = 2048};
	cm_err err;
	int64_t t = 0;
	static saved_seg segs[4096];
	int nseg = 0, first_ckpt = 0;
	for (int round = 0; round < 2; round++) {
		assert_int_equal(ts_open(dir, &opts, &db, NULL, NULL), 0);
		for (; t <= TS__BLOCK_MS + (round ? 3600000 : 1200000); t += 75000)
			for (int s = 0; s < NS; s++)
				append_one(db, &m, s, t);
		if (round == 1)
			nseg = save_wal(dir, segs, 4096);
		assert_int_equal(ts__cut(db, TS__BLOCK_MS, &err), 0);
		if (round == 0) { /* the first cut's checkpoint is the highest segment but the new one now */
			int n = save_wal(dir, segs, 4096);
			for (int i = 0; i < n; i++) {
				first_ckpt = atoi(segs[i].name) > first_ckpt ? atoi(segs[i].name) : first_ckpt;
				free(segs[i].data);
			}
			first_ckpt--;
			for (; t <= TS__BLOCK_MS + 2400000; t += 75000) /* into segments that define their series */
				for (int s = 0; s < NS; s++)
					append_one(db, &m, s, t);
		}
		ts_close(db);
	}
	int restored = 0;
	for (int i = 0; i < nseg; i++) { /* the second cut was killed having removed up to the first checkpoint */
		char path[600];
		struct stat sb;
		snprintf(path, sizeof(path), "%s/wal/%.60s", dir, segs[i].name);
		if (atoi(segs[i].name) > first_ckpt && stat(path, &sb) != 0) {
			FILE *f = fopen(path, "wb");
			assert_non_null(f);
			assert_int_equal(fwrite(segs[i].data, 1, segs[i].len, f), segs[i].len);
			fclose(f);
			restored++;
		}
		free(segs[i].data);
	}
	assert_true(restored > 1);
	db = db_open(dir, NULL);
	check_model(db, &m);
	ts_close(db);
	db = db_open(dir, NULL); /* and the superseded segments are gone for good */
	check_model(db, &m);
	ts_close(db);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
	tmpdir_free(dir);
}

/* A cut behind a fast import finds many samples past its boundary: its checkpoint is written in pieces
 * (several samples records of about 4 MiB each), and a reopen replays every sample of them. */
static void test_cut_big_checkpoint(void **state)
{
	(void)state;
	enum { AFTER = 8000 }; /* samples a series has past the boundary: 70 * 8000 * 10 bytes > 4 MiB */
	char *dir = tmpdir_new();
	static model m;
	memset(&m, 0, sizeof(m));
	ts_db *db = db_open(dir, NULL);
	for (int s = 0; s < NS; s++) { /* a minute before the boundary at 2 h, then AFTER seconds past it */
		char v[16];
		snprintf(v, sizeof(v), "%d", s);
		cm_label l[] = {{"__name__", "cut"}, {"s", v}};
		m.n[s] = 60 + AFTER;
		m.x[s] = malloc(m.n[s] * sizeof(cm_sample));
		for (size_t i = 0; i < m.n[s]; i++)
			m.x[s][i] = (cm_sample){TS__BLOCK_MS - 60000 + (int64_t)i * 1000, (double)(rnd() % 100000) / 7};
		cm_series ser = {l, 2, m.x[s], m.n[s]};
		assert_int_equal(ts_append(db, &ser, 1, NULL), 0);
	}
	cm_err err;
	assert_int_equal(ts__cut(db, TS__BLOCK_MS, &err), 0);
	check_model(db, &m);
	ts_close(db);
	saved_seg segs[8];
	int nseg = save_wal(dir, segs, 8), nckpt = 0;
	for (int i = 0; i < nseg; i++) { /* the checkpoint (version 3): one series record, samples in pieces */
		const uint8_t *p = segs[i].data;
		if (segs[i].len >= 8 && !memcmp(p, "CRLW", 4) && p[4] == 3) {
			int records[4] = {0};
			nckpt++;
			for (size_t off = 8; off < segs[i].len;) {
				assert_true(segs[i].len - off >= 9);
				uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
					       (uint32_t)p[off + 3] << 24;
				assert_true(p[off + 8] == TS__REC_SERIES || p[off + 8] == TS__REC_SAMPLES);
				assert_true(len + 9 >= (4u << 20) || p[off + 8] == TS__REC_SERIES || off + 9 + len == segs[i].len);
				assert_true(len < (5u << 20));
				records[p[off + 8]]++;
				off += 9 + (size_t)len;
			}
			assert_int_equal(records[TS__REC_SERIES], 1);
			assert_true(records[TS__REC_SAMPLES] >= 2); /* 5.6 MB of samples in pieces of about 4 MiB */
		}
		free(segs[i].data);
	}
	assert_int_equal(nckpt, 1);
	ts_open_report rep;
	db = db_open(dir, &rep);
	assert_int_equal(rep.samples, (uint64_t)NS * AFTER);
	assert_int_equal(rep.truncated_bytes, 0);
	check_model(db, &m);
	ts_close(db);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
	tmpdir_free(dir);
}

/* An append faster than the storage thread's cuts waits for them once the head holds more than one whole
 * window to cut, so the head stays within a few windows however far ahead the import runs. */
static void test_head_bounded(void **state)
{
	(void)state;
	enum { SERIES = 300, PER = 720, WINDOWS = 12 }; /* a window of 10 s samples per append */
	char *dir = tmpdir_new();
	ts_db *db = NULL;
	ts_opts opts = {.no_fsync = 1};
	assert_int_equal(ts_open(dir, &opts, &db, NULL, NULL), 0);
	static cm_sample x[SERIES][PER];
	ts_ref_series rs[SERIES];
	for (int s = 0; s < SERIES; s++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", s);
		cm_label l[] = {{"__name__", "bounded"}, {"s", v}};
		assert_int_equal(ts_series_ref(db, l, 2, &rs[s].ref, NULL), 0);
	}
	uint64_t most = 0;
	for (int w = 0; w < WINDOWS; w++) {
		for (int s = 0; s < SERIES; s++) {
			for (int i = 0; i < PER; i++)
				x[s][i] = (cm_sample){w * TS__BLOCK_MS + i * 10000LL, (double)(s + i)};
			rs[s].samples = x[s], rs[s].nsamples = PER;
		}
		assert_int_equal(ts_append_ref(db, rs, SERIES, NULL), 0);
		ts_stats st;
		ts_get_stats(db, &st);
		most = st.samples > most ? st.samples : most;
		if (w == WINDOWS / 2) /* a flush in the middle: cuts (and the bound) go on after it */
			assert_int_equal(ts_flush(db, NULL), 0);
	}
	assert_true(most <= 4ull * SERIES * PER);
	assert_int_equal(ts_flush(db, NULL), 0);
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.block_samples, (uint64_t)WINDOWS * SERIES * PER);
	ts_close(db);
	tmpdir_free(dir);
}

/* Appends a sample a minute to one series for the 2 h windows [from, to). */
static int append_windows(ts_db *db, int from, int to)
{
	static cm_sample x[5 * 120];
	size_t n = 0;
	for (int64_t t = from * TS__BLOCK_MS; t < to * TS__BLOCK_MS && n < 5 * 120; t += 60000)
		x[n++] = (cm_sample){t, (double)t / 1000};
	cm_label l[] = {{"__name__", "stuck"}};
	cm_series ser = {l, 1, x, n};
	return ts_append(db, &ser, 1, NULL);
}

static void *append_late(void *arg)
{
	return (void *)(intptr_t)append_windows(arg, 4, 5);
}

/* A cut that keeps failing (here the blocks directory is a file; ENOSPC in test_ts_diskfull) does not
 * hold appends back: each would start another round with a full head snapshot for nothing. The test
 * holds cut_mu, as a long cut or compaction would: an append that waited for the next cut would hang. */
static void test_throttle_after_failed_cut(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), path[600];
	ts_db *db = NULL;
	ts_opts opts = {.no_fsync = 1};
	assert_int_equal(ts_open(dir, &opts, &db, NULL, NULL), 0);
	snprintf(path, sizeof(path), "%s/blocks", dir);
	assert_int_equal(rmdir(path), 0);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(append_windows(db, 0, 4), 0); /* three windows to cut: waits for the cut, which fails */
	int failed = 0;
	for (int i = 0; i < 1000 && !failed; i++) {
		pthread_mutex_lock(&db->st_mu);
		failed = atomic_load(&db->cut_before) < db->st_cut_to;
		pthread_mutex_unlock(&db->st_mu);
		if (!failed)
			usleep(10000);
	}
	assert_true(failed);
	pthread_mutex_lock(&db->cut_mu);
	pthread_t th;
	void *rc = (void *)-1;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	assert_int_equal(pthread_create(&th, NULL, append_late, db), 0);
	int joined = pthread_timedjoin_np(th, &rc, &deadline) == 0;
	pthread_mutex_unlock(&db->cut_mu);
	if (!joined)
		pthread_join(th, &rc);
	assert_true(joined);
	assert_int_equal((intptr_t)rc, 0);
	ts_close(db);
	assert_int_equal(unlink(path), 0); /* every sample is still in the WAL */
	assert_int_equal(mkdir(path, 0755), 0);
	ts_open_report rep;
	db = db_open(dir, &rep);
	assert_int_equal(rep.samples, 5 * 120);
	ts_close(db);
	tmpdir_free(dir);
}

/* ---- the cache of decoded block series ------------------------------------------------------------ */

static uint64_t cache_bytes(ts__cache *c)
{
	ts_stats st;
	ts__cache_stats(c, &st);
	return st.cache_bytes;
}

/* Entries evicted while queries hold them count until released: the byte count is the real memory. */
static void test_cache_counts_held(void **state)
{
	(void)state;
	enum { NSERIES = 10, N = 1000 };
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, NULL);
	for (int s = 0; s < NSERIES; s++) {
		char v[16];
		static cm_sample x[N];
		snprintf(v, sizeof(v), "%d", s);
		cm_label l[] = {{"__name__", "cached"}, {"s", v}};
		for (int i = 0; i < N; i++)
			x[i] = (cm_sample){(int64_t)i * 1000, (double)(s * N + i)};
		cm_series ser = {l, 2, x, N};
		assert_int_equal(ts_append(db, &ser, 1, NULL), 0);
	}
	assert_int_equal(ts_flush(db, NULL), 0);
	assert_int_equal(db->nblocks, 1);
	ts__block *b = db->blocks[0];
	uint64_t *ids;
	size_t n;
	cm_err err;
	assert_int_equal(ts__block_select(b, NULL, 0, &ids, &n, &err), 0);
	assert_int_equal(n, NSERIES);
	ts__bseries info[NSERIES];
	for (size_t i = 0; i < n; i++) {
		cm_label l[TS__MAX_LABELS];
		size_t nl;
		assert_int_equal(ts__block_series(b, ids[i], l, &nl, &info[i], &err), 0);
	}
	free(ids);
	ts__cache *c, *probe;
	ts__centry *e[NSERIES], *one;
	assert_int_equal(ts__cache_create(1 << 30, &probe), 0); /* the bytes of one entry */
	assert_int_equal(ts__cache_get(probe, b, &info[0], NULL, &one, &err), 0);
	uint64_t eb = cache_bytes(probe);
	ts__cache_release(probe, one);
	ts__cache_destroy(probe);
	assert_int_equal(ts__cache_create(5 * eb, &c), 0); /* room for 5 */
	for (int i = 0; i < NSERIES; i++) { /* 10 held at once, as by concurrent queries */
		assert_int_equal(ts__cache_get(c, b, &info[i], NULL, &e[i], &err), 0);
		assert_int_equal(cache_bytes(c), (uint64_t)(i + 1) * eb);
	}
	for (int i = 0; i < NSERIES; i++) {
		size_t k;
		const cm_sample *x = ts__centry_samples(e[i], &k);
		assert_int_equal(k, N);
		assert_true(fmod(x[0].v, N) == 0 && x[N - 1].v == x[0].v + N - 1); /* one whole series each */
	}
	for (int i = 0; i < NSERIES; i++) /* the evicted ones leave the count as they are released */
		ts__cache_release(c, e[i]);
	assert_int_equal(cache_bytes(c), eb); /* only the newest stayed in the map: the held ones filled it */
	for (int i = 0; i < NSERIES; i++) { /* taken and released one by one: 5 stay cached */
		assert_int_equal(ts__cache_get(c, b, &info[i], NULL, &one, &err), 0);
		ts__cache_release(c, one);
		assert_true(cache_bytes(c) <= 5 * eb);
	}
	assert_int_equal(cache_bytes(c), 5 * eb);
	ts__cache_destroy(c);
	ts_close(db);
	tmpdir_free(dir);
}

/* ---- damaged blocks -------------------------------------------------------------------------------- */

/* Fills out with the paths of the block directories, sorted. */
static int list_blocks(const char *dir, char out[][512], int max)
{
	char path[200];
	snprintf(path, sizeof(path), "%s/blocks", dir);
	DIR *d = opendir(path);
	int n = 0;
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d)) && n < max;)
		if (e->d_name[0] != '.')
			snprintf(out[n++], 512, "%s/%.250s", path, e->d_name);
	closedir(d);
	qsort(out, (size_t)n, 512, (int (*)(const void *, const void *))strcmp);
	return n;
}

static void flip(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x10;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static int count_fn(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	(void)l, (void)nl, (void)x;
	*(size_t *)ctx += n;
	return 0;
}

static size_t count_all(ts_db *db, int *rc)
{
	size_t n = 0;
	*rc = ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, count_fn, &n);
	return n;
}

static void test_damaged_blocks(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), blocks[4][512], path[600];
	static model m;
	int rc;
	memset(&m, 0, sizeof(m));
	ts_db *db = db_open(dir, NULL);
	for (int w = 0; w < 3; w++) /* three days: three blocks, even after compaction */
		for (int s = 0; s < NS; s++)
			append_one(db, &m, s, w * 24 * HOUR + 1000 * s);
	assert_int_equal(ts_flush(db, NULL), 0);
	ts_close(db);
	assert_int_equal(list_blocks(dir, blocks, 4), 3);

	snprintf(path, sizeof(path), "%s/index", blocks[0]);
	flip(path, 20);
	snprintf(path, sizeof(path), "%s/meta", blocks[1]);
	flip(path, 9);
	ts_open_report rep;
	db = db_open(dir, &rep);
	assert_int_equal(rep.blocks, 1);
	assert_int_equal(rep.bad_blocks, 2);
	assert_non_null(strstr(rep.first_problem, "offset"));
	assert_int_equal(count_all(db, &rc), NS);
	assert_int_equal(rc, 0);
	ts_close(db);

	snprintf(path, sizeof(path), "%s/chunks", blocks[2]);
	flip(path, 12); /* inside the first series' frame */
	db = db_open(dir, &rep);
	assert_int_equal(count_all(db, &rc), 0);
	assert_int_equal(rc, CM_ECORRUPT); /* the walk stops at the damaged series and says so */
	ts_close(db);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
	tmpdir_free(dir);
}

/* ---- retention ------------------------------------------------------------------------------------- */

static int min_time(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	(void)l, (void)nl;
	int64_t *min = ctx;
	if (n && x[0].t_ms < *min)
		*min = x[0].t_ms;
	return 0;
}

/* Five days, one sample per series per hour; returns the store after a flush with opts. */
static ts_db *five_days(const char *dir, ts_opts *opts, model *m)
{
	ts_db *db = NULL;
	assert_int_equal(ts_open(dir, opts, &db, NULL, NULL), 0);
	for (int h = 0; h < 5 * 24; h++)
		for (int s = 0; s < NS; s++)
			append_one(db, m, s, h * HOUR + s);
	assert_int_equal(ts_flush(db, NULL), 0);
	return db;
}

static void test_retention(void **state)
{
	(void)state;
	static model m;
	ts_stats st;
	int64_t min = INT64_MAX;
	char *dir = tmpdir_new();
	memset(&m, 0, sizeof(m));
	ts_opts age = {.no_fsync = 1, .manual_cut = 1, .retention_ms = 2 * 24 * HOUR, .downsample = 1};
	ts_db *db = five_days(dir, &age, &m);
	ts_get_stats(db, &st);
	/* newest sample at 119 h: the days ending before 71 h go (days 0 and 1), days 2..4 stay */
	assert_int_equal(st.blocks, 3);
	/* raw and tier blocks of days 0 and 1, and the tiers of day 2, whose last bucket starts at 71 h */
	assert_int_equal(st.blocks_dropped, 8);
	assert_int_equal(st.tier_blocks, 4);
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, min_time, &min), 0);
	assert_int_equal(min, 2 * 24 * HOUR);
	ts_close(db);
	tmpdir_free(dir);

	dir = tmpdir_new();
	ts_opts size = {.no_fsync = 1, .manual_cut = 1, .retention_bytes = 1, .downsample = 1};
	db = five_days(dir, &size, &m);
	ts_get_stats(db, &st);
	assert_int_equal(st.blocks, 0); /* every block is over a 1-byte budget */
	assert_int_equal(st.tier_blocks, 0);
	assert_int_equal(st.blocks_dropped, 15);
	ts_close(db);
	tmpdir_free(dir);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
}

/* ---- downsampled tiers against a brute-force computation -------------------------------------------- */

typedef struct agg_ctx {
	model *m;
	int64_t res;
	ts_agg agg;
	int seen;
} agg_ctx;

static double brute(const model *m, int s, int64_t b, int64_t res, ts_agg agg, size_t *count)
{
	double v = agg == TS_AGG_MIN ? INFINITY : agg == TS_AGG_MAX ? -INFINITY : 0, last = 0;
	size_t n = 0, real = 0;
	for (size_t i = 0; i < m->n[s]; i++) {
		const cm_sample *x = &m->x[s][i];
		if (x->t_ms < b || x->t_ms >= b + res)
			continue;
		n++, last = x->v;
		if (isnan(x->v))
			continue;
		real++;
		v = agg == TS_AGG_MIN ? fmin(v, x->v) : agg == TS_AGG_MAX ? fmax(v, x->v) : v + x->v;
	}
	*count = n;
	if (agg == TS_AGG_COUNT)
		return (double)n;
	if (agg == TS_AGG_LAST)
		return last;
	return real ? v : NAN;
}

static int check_agg(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	agg_ctx *c = ctx;
	int s = -1;
	size_t buckets = 0, count;
	for (size_t i = 0; i < nl; i++) {
		assert_string_not_equal(l[i].name, "__ds__");
		if (!strcmp(l[i].name, "s"))
			s = atoi(l[i].value);
	}
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(x[i].t_ms % c->res, 0);
		double want = brute(c->m, s, x[i].t_ms, c->res, c->agg, &count);
		assert_true(count > 0);
		if (!(isnan(want) ? isnan(x[i].v) : want == x[i].v))
			fail_msg("series %d agg %d bucket %lld: %g, want %g", s, (int)c->agg, (long long)x[i].t_ms, x[i].v,
				 want);
	}
	for (int64_t b = 0; b < 2 * 24 * HOUR; b += c->res) /* every bucket with samples has its point */
		buckets += brute(c->m, s, b, c->res, TS_AGG_COUNT, &count) > 0;
	assert_int_equal(n, buckets);
	c->seen++;
	return 0;
}

static void test_downsampling(void **state)
{
	(void)state;
	static model m;
	char *dir = tmpdir_new();
	memset(&m, 0, sizeof(m));
	ts_db *db = NULL;
	ts_opts opts = {.no_fsync = 1, .manual_cut = 1, .downsample = 1};
	assert_int_equal(ts_open(dir, &opts, &db, NULL, NULL), 0);
	for (int64_t t = 0; t < 2 * 24 * HOUR; t += 15000 + (int64_t)(rnd() % 60000)) /* irregular, two days */
		for (int s = 0; s < NS; s++) {
			append_one(db, &m, s, t + s);
			if (rnd() % 50 == 0) { /* a NaN now and then, and a bucket of only NaN */
				char v[16];
				snprintf(v, sizeof(v), "%d", s);
				cm_label l[] = {{"__name__", "cut"}, {"s", v}};
				cm_sample x = {t + s + 1, NAN};
				cm_series ser = {l, 2, &x, 1};
				assert_int_equal(ts_append(db, &ser, 1, NULL), 0);
				model_add(&m, s, x);
			}
		}
	assert_int_equal(ts_flush(db, NULL), 0);
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.tier_blocks, 4); /* two days, two resolutions */
	static const int64_t res[] = {5 * 60 * 1000, HOUR};
	for (int r = 0; r < 2; r++)
		for (int a = 0; a < TS_AGG_N; a++) {
			agg_ctx c = {&m, res[r], (ts_agg)a, 0};
			assert_int_equal(ts_select_agg(db, NULL, 0, INT64_MIN, INT64_MAX, res[r], (ts_agg)a, check_agg, &c), 0);
			assert_int_equal(c.seen, NS);
		}
	cmp_ctx raw = {&m, 0}; /* raw selects do not see the tiers */
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, compare, &raw), 0);
	assert_int_equal(raw.seen, NS);
	ts_close(db);
	for (int s = 0; s < NS; s++)
		free(m.x[s]);
	tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_matcher_oracle),
		cmocka_unit_test(test_cut_keeps_samples),
		cmocka_unit_test(test_cut_interrupted),
		cmocka_unit_test(test_cut_big_checkpoint),
		cmocka_unit_test(test_cache_counts_held),
		cmocka_unit_test(test_head_bounded),
		cmocka_unit_test(test_throttle_after_failed_cut),
		cmocka_unit_test(test_damaged_blocks),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_downsampling),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
