/* test_ts.c -- unit tests for tsdb/: WAL round trip and repair, the head, matchers, group commit.
 *
 * Every test works in its own mkdtemp directory under /tmp and removes it at the end. Corruption is
 * made by editing segment files directly (truncating, flipping bits, overwriting a CRC); a failed write
 * is injected with RLIMIT_FSIZE. Runs under ASan/LSan in the sanitizer build.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts.h"

#define REC_HEADER 9

/* ---- helpers ----------------------------------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static char *tmpdir_new(void)
{
	char *d = strdup("/tmp/test_ts-XXXXXX");
	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void tmpdir_free(char *d)
{
	nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(d);
}

static ts_db *db_open(const char *dir, const ts_opts *opts, ts_open_report *rep)
{
	ts_db *db = NULL;
	ts_open_report local;
	cm_err err = {{0}};
	int rc = ts_open(dir, opts, &db, rep ? rep : &local, &err);
	if (rc)
		fail_msg("ts_open: %s", err.msg);
	return db;
}

static void append1(ts_db *db, const char *name, const char *key, const char *val, const cm_sample *s, size_t n)
{
	cm_label l[2] = {{"__name__", name}, {key, val}};
	cm_series ser = {l, 2, (cm_sample *)s, n};
	cm_err err = {{0}};
	int rc = ts_append(db, &ser, 1, &err);
	if (rc)
		fail_msg("ts_append: %s", err.msg);
}

static void seg_name(const char *dir, unsigned n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/wal/%08u", dir, n);
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

/* Fills offs with the offsets of the batch records (type 3; type 2 series definitions are skipped) of a
 * (valid) segment; returns how many. */
static size_t seg_records(const char *path, off_t *offs, size_t cap)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	off_t size = file_size(path), off = 8;
	size_t n = 0;
	while (off < size && n < cap) {
		unsigned char h[9];
		assert_int_equal(pread(fd, h, 9, off), 9);
		if (h[8] != 2)
			offs[n++] = off;
		off += REC_HEADER + (off_t)(h[0] | h[1] << 8 | h[2] << 16 | (unsigned)h[3] << 24);
	}
	close(fd);
	return n;
}

static void flip_byte(const char *path, off_t off, unsigned char mask)
{
	unsigned char c;
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= mask;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

/* What a select returned, flattened: one line per series "name=value,...:t=v t=v ..." */
typedef struct got {
	size_t series;
	size_t samples;
	size_t stop_after;  /* 0 = never stop */
	char text[8192];
} got;

/* Appends to g->text, dropping what does not fit. */
static void text_add(got *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(got *g, const char *fmt, ...)
{
	size_t len = strlen(g->text);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g->text + len, sizeof(g->text) - len, fmt, ap);
	va_end(ap);
}

static int collect(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t ns)
{
	got *g = ctx;
	for (size_t i = 0; i < nl; i++)
		text_add(g, "%s%s=%s", i ? "," : "", l[i].name, l[i].value);
	text_add(g, ":");
	for (size_t i = 0; i < ns; i++)
		text_add(g, " %lld=%g", (long long)s[i].t_ms, s[i].v);
	text_add(g, "\n");
	g->series++;
	g->samples += ns;
	return g->stop_after && g->series >= g->stop_after ? 7 : 0;
}

static got select_all(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt)
{
	got g = {0};
	assert_int_equal(ts_select(db, m, nm, mint, maxt, collect, &g), 0);
	return g;
}

static got everything(ts_db *db) { return select_all(db, NULL, 0, INT64_MIN, INT64_MAX); }

/* ---- round trip ----------------------------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_open_report rep;
	ts_opts opts = {.ooo_window_ms = INT64_MAX, .manual_cut = 1}; /* b's 0 comes after INT64_MAX */
	ts_db *db = db_open(dir, &opts, &rep);
	cm_sample a[] = {{1000, 1.5}, {2000, NAN}, {-5000, INFINITY}, {1500, -INFINITY}, {2000, 99}, {3000, -0.25}};
	cm_sample b[] = {{INT64_MIN, 1}, {INT64_MAX, 2}, {0, 3}};
	cm_sample a2[] = {{1000, 42}, {500, 7}};
	append1(db, "m", "job", "a", a, 6);
	append1(db, "m", "job", "b", b, 3);
	append1(db, "m", "job", "a", a2, 2);
	got live = everything(db);
	const char *want = "__name__=m,job=a: -5000=inf 500=7 1000=1.5 1500=-inf 2000=nan 3000=-0.25\n"
			   "__name__=m,job=b: -9223372036854775808=1 0=3 9223372036854775807=2\n";
	assert_string_equal(live.text, want);
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.series, 2);
	assert_int_equal(st.samples, 9);
	assert_int_equal(st.appends, 3);
	ts_close(db);

	db = db_open(dir, &opts, &rep);
	assert_int_equal(rep.records, 3);
	assert_int_equal(rep.samples, 11);
	assert_int_equal(rep.truncated_bytes, 0);
	assert_string_equal(rep.first_problem, "");
	got again = everything(db);
	assert_string_equal(again.text, want);
	ts_close(db);
	tmpdir_free(dir);
}

/* Equal label sets written in different orders, or with empty values, are one series. */
static void test_canonical_labels(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	cm_sample s1 = {1, 1}, s2 = {2, 2}, s3 = {3, 3};
	cm_label l1[] = {{"b", "2"}, {"a", "1"}};
	cm_label l2[] = {{"a", "1"}, {"c", ""}, {"b", "2"}};
	cm_label l3[] = {{"a", "1"}, {"b", "2"}};
	cm_series ser[] = {{l1, 2, &s1, 1}, {l2, 3, &s2, 1}, {l3, 2, &s3, 1}};
	assert_int_equal(ts_append(db, ser, 3, NULL), 0);
	got g = everything(db);
	assert_string_equal(g.text, "a=1,b=2: 1=1 2=2 3=3\n");
	ts_close(db);
	tmpdir_free(dir);
}

static void test_invalid_input(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	cm_sample s = {1, 1};
	cm_err err = {{0}};
	cm_label bad_name[] = {{"1x", "v"}};
	cm_label dup[] = {{"a", "1"}, {"a", "2"}};
	cm_label empty[] = {{"a", ""}};
	cm_label bad_utf8[] = {{"a", "\xff"}};
	cm_series ser[] = {{bad_name, 1, &s, 1}, {dup, 2, &s, 1}, {empty, 1, &s, 1}, {bad_utf8, 1, &s, 1}};
	for (size_t i = 0; i < CM_ARRAY_LEN(ser); i++) {
		err.msg[0] = 0;
		assert_int_equal(ts_append(db, &ser[i], 1, &err), CM_EINVAL);
		assert_true(strlen(err.msg) > 0);
	}
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.appends, 0);
	assert_int_equal(st.series, 0);
	assert_int_equal(ts_append(db, NULL, 0, NULL), 0);
	ts_close(db);
	tmpdir_free(dir);
}

static void test_lock(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, NULL, NULL), *db2 = NULL;
	cm_err err = {{0}};
	assert_int_equal(ts_open(dir, NULL, &db2, NULL, &err), CM_AGAIN);
	assert_null(db2);
	assert_non_null(strstr(err.msg, "already open"));
	ts_close(db);
	db = db_open(dir, NULL, NULL);
	ts_close(db);
	tmpdir_free(dir);
}

/* ---- matchers and bounds -------------------------------------------------------------------------- */

static size_t count_match(ts_db *db, ts_match_type type, const char *name, const char *value)
{
	ts_matcher m;
	cm_err err = {{0}};
	if (ts_matcher_init(&m, type, name, value, &err))
		fail_msg("ts_matcher_init: %s", err.msg);
	got g = select_all(db, &m, 1, INT64_MIN, INT64_MAX);
	ts_matcher_close(&m);
	return g.series;
}

static ts_db *matcher_db(const char *dir)
{
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	cm_sample s = {10, 1};
	cm_label l1[] = {{"__name__", "up"}, {"job", "a"}, {"inst", "1"}};
	cm_label l2[] = {{"__name__", "up"}, {"job", "b"}};
	cm_label l3[] = {{"__name__", "down"}, {"job", "a"}, {"env", "prod"}};
	cm_series ser[] = {{l1, 3, &s, 1}, {l2, 2, &s, 1}, {l3, 3, &s, 1}};
	assert_int_equal(ts_append(db, ser, 3, NULL), 0);
	return db;
}

static void test_matchers(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = matcher_db(dir);
	assert_int_equal(count_match(db, TS_MATCH_EQ, "job", "a"), 2);
	assert_int_equal(count_match(db, TS_MATCH_NE, "job", "a"), 1);
	assert_int_equal(count_match(db, TS_MATCH_EQ, "__name__", "up"), 2);
	assert_int_equal(count_match(db, TS_MATCH_RE, "job", "a|b"), 3);
	assert_int_equal(count_match(db, TS_MATCH_RE, "__name__", "u"), 0);        /* anchored */
	assert_int_equal(count_match(db, TS_MATCH_RE, "__name__", "up|dow"), 2);   /* ^(up|dow)$ */
	assert_int_equal(count_match(db, TS_MATCH_NRE, "job", "a"), 1);
	/* a missing label reads as "" */
	assert_int_equal(count_match(db, TS_MATCH_EQ, "inst", ""), 2);
	assert_int_equal(count_match(db, TS_MATCH_NE, "inst", "1"), 2);
	assert_int_equal(count_match(db, TS_MATCH_NE, "inst", ""), 1);
	assert_int_equal(count_match(db, TS_MATCH_RE, "env", ".*"), 3);
	assert_int_equal(count_match(db, TS_MATCH_RE, "env", ".+"), 1);
	assert_int_equal(count_match(db, TS_MATCH_NRE, "env", "prod"), 2);
	assert_int_equal(count_match(db, TS_MATCH_EQ, "nope", "x"), 0);

	ts_matcher m[2];
	cm_err err = {{0}};
	assert_int_equal(ts_matcher_init(&m[0], TS_MATCH_EQ, "job", "a", &err), 0);
	assert_int_equal(ts_matcher_init(&m[1], TS_MATCH_NRE, "__name__", "down", &err), 0);
	got g = select_all(db, m, 2, INT64_MIN, INT64_MAX);
	assert_string_equal(g.text, "__name__=up,inst=1,job=a: 10=1\n");
	ts_matcher_close(&m[0]);
	ts_matcher_close(&m[1]);
	assert_int_equal(ts_matcher_init(&m[0], TS_MATCH_RE, "job", "(", &err), CM_EINVAL);
	assert_non_null(strstr(err.msg, "bad regex"));
	ts_matcher_close(&m[0]);
	ts_close(db);
	tmpdir_free(dir);
}

/* Output is ordered by label set whatever the insertion order; a non-zero callback stops the walk. */
static void test_select_order_and_stop(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = matcher_db(dir);
	got g = everything(db);
	assert_string_equal(g.text, "__name__=down,env=prod,job=a: 10=1\n"
				    "__name__=up,inst=1,job=a: 10=1\n"
				    "__name__=up,job=b: 10=1\n");
	got stop = {.stop_after = 2};
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, collect, &stop), 7);
	assert_int_equal(stop.series, 2);
	ts_close(db);
	tmpdir_free(dir);
}

static void test_bounds(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	cm_sample s[] = {{10, 1}, {20, 2}, {30, 3}, {40, 4}};
	append1(db, "m", "k", "v", s, 4);
	append1(db, "n", "k", "v", s + 3, 1);
	assert_string_equal(select_all(db, NULL, 0, 20, 30).text, "__name__=m,k=v: 20=2 30=3\n");
	assert_int_equal(select_all(db, NULL, 0, 15, 15).series, 0);
	assert_int_equal(select_all(db, NULL, 0, 41, INT64_MAX).series, 0);
	assert_int_equal(select_all(db, NULL, 0, 30, 20).series, 0);
	assert_int_equal(select_all(db, NULL, 0, 40, 40).samples, 2);
	assert_int_equal(select_all(db, NULL, 0, INT64_MIN, 10).samples, 1);
	assert_int_equal(select_all(db, NULL, 0, INT64_MIN, INT64_MAX).samples, 5);
	ts_close(db);
	tmpdir_free(dir);
}

/* Enough series to grow the hash table several times; series with no samples are not created. */
typedef struct order {
	char last[32];
	size_t n;
	int unordered;
} order;

static int check_series_order(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t ns)
{
	(void)s, (void)ns;
	order *o = ctx;
	if (nl != 2 || strcmp(l[1].value, o->last) <= 0)
		o->unordered++;
	snprintf(o->last, sizeof(o->last), "%s", l[1].value);
	o->n++;
	return 0;
}

static void check_many(ts_db *db, size_t want)
{
	order o = {"", 0, 0};
	ts_stats st;
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, check_series_order, &o), 0);
	assert_int_equal(o.n, want);
	assert_int_equal(o.unordered, 0);
	ts_get_stats(db, &st);
	assert_int_equal(st.series, want);
	assert_int_equal(st.samples, want);
}

static void test_many_series(void **state)
{
	(void)state;
	enum { N = 5000 };
	char *dir = tmpdir_new();
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	cm_label *l = calloc(2 * N, sizeof(*l));
	cm_series *ser = calloc(N + 1, sizeof(*ser));
	char (*vals)[8] = calloc(N, sizeof(*vals));
	cm_sample smp = {1, 1};
	assert_true(l && ser && vals);
	for (size_t i = 0; i < N; i++) {
		size_t k = (i * 7919) % N; /* insert out of label order */
		snprintf(vals[i], sizeof(vals[i]), "%05zu", k);
		l[2 * i] = (cm_label){"__name__", "m"};
		l[2 * i + 1] = (cm_label){"i", vals[i]};
		ser[i] = (cm_series){&l[2 * i], 2, &smp, 1};
	}
	cm_label empty[] = {{"__name__", "no_samples"}};
	ser[N] = (cm_series){empty, 1, NULL, 0};
	assert_int_equal(ts_append(db, ser, N + 1, NULL), 0);
	check_many(db, N);
	ts_close(db);
	db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	check_many(db, N);
	ts_close(db);
	free(l);
	free(ser);
	free(vals);
	tmpdir_free(dir);
}

/* ---- repair --------------------------------------------------------------------------------------- */

/* Appends records k..k+n-1, each one series {__name__="r", i="<k>"} with one sample. */
static void append_records(ts_db *db, int k, int n)
{
	for (int i = k; i < k + n; i++) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i);
		cm_sample s = {i, i};
		append1(db, "r", "i", v, &s, 1);
	}
}

static void test_torn_tail(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096], want[4200];
	off_t offs[16];
	ts_open_report rep;
	ts_db *db = db_open(dir, NULL, NULL);
	append_records(db, 0, 10);
	ts_close(db);
	seg_name(dir, 1, seg, sizeof(seg));
	off_t size = file_size(seg);
	assert_int_equal(seg_records(seg, offs, 16), 10);
	assert_int_equal(truncate(seg, size - 3), 0);

	db = db_open(dir, NULL, &rep);
	assert_int_equal(rep.records, 9);
	assert_int_equal(rep.truncated_segments, 1);
	assert_int_equal(rep.truncated_bytes, size - 3 - offs[9]);
	snprintf(want, sizeof(want), "file %s offset %lld: torn record", seg, (long long)offs[9]);
	assert_memory_equal(rep.first_problem, want, strlen(want));
	assert_int_equal(file_size(seg), offs[9]);
	assert_int_equal(everything(db).series, 9);
	append_records(db, 10, 1);
	ts_close(db);

	db = db_open(dir, NULL, &rep);
	assert_int_equal(rep.truncated_bytes, 0);
	assert_string_equal(rep.first_problem, "");
	assert_int_equal(rep.records, 10);
	got g = everything(db);
	assert_int_equal(g.series, 10);
	assert_null(strstr(g.text, "i=9:"));
	assert_non_null(strstr(g.text, "i=10:"));
	ts_close(db);
	tmpdir_free(dir);
}

static void test_bit_flip_last_record(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096];
	off_t offs[16];
	ts_open_report rep;
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	append_records(db, 0, 5);
	ts_close(db);
	seg_name(dir, 1, seg, sizeof(seg));
	off_t size = file_size(seg);
	assert_int_equal(seg_records(seg, offs, 16), 5);
	flip_byte(seg, offs[4] + REC_HEADER + 3, 0x10);

	db = db_open(dir, &(ts_opts){.no_fsync = 1}, &rep);
	assert_int_equal(rep.records, 4);
	assert_int_equal(rep.truncated_segments, 1);
	assert_int_equal(rep.truncated_bytes, size - offs[4]);
	assert_non_null(strstr(rep.first_problem, "checksum mismatch"));
	assert_int_equal(file_size(seg), offs[4]);
	assert_int_equal(everything(db).series, 4);
	ts_close(db);
	tmpdir_free(dir);
}

/* A bad CRC in segment 2 of 3 cuts segment 2 there; segments 1 and 3 replay whole. */
static void test_bad_crc_middle_segment(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096], want[4200];
	off_t offs[16];
	ts_open_report rep;
	for (int i = 0; i < 3; i++) { /* each open starts a new segment */
		ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
		append_records(db, i * 3, 3);
		ts_close(db);
	}
	seg_name(dir, 2, seg, sizeof(seg));
	off_t size = file_size(seg);
	assert_int_equal(seg_records(seg, offs, 16), 3);
	flip_byte(seg, offs[1] + 4, 0x01);

	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, &rep);
	assert_int_equal(rep.records, 7);
	assert_int_equal(rep.truncated_segments, 1);
	assert_int_equal(rep.truncated_bytes, size - offs[1]);
	snprintf(want, sizeof(want), "file %s offset %lld: checksum mismatch", seg, (long long)offs[1]);
	assert_string_equal(rep.first_problem, want);
	got g = everything(db);
	assert_int_equal(g.series, 7);
	assert_null(strstr(g.text, "i=4:"));
	assert_null(strstr(g.text, "i=5:"));
	assert_non_null(strstr(g.text, "i=8:"));
	ts_close(db);
	tmpdir_free(dir);
}

/* A segment whose header is wrong is set aside as .corrupt and its number is never reused. */
static void test_bad_segment_header(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096], moved[4200];
	ts_open_report rep;
	ts_db *db = db_open(dir, &(ts_opts){.no_fsync = 1}, NULL);
	append_records(db, 0, 2);
	ts_close(db);
	seg_name(dir, 5, seg, sizeof(seg));
	FILE *f = fopen(seg, "wb");
	assert_non_null(f);
	fputs("XXXXjunkjunk", f);
	fclose(f);

	db = db_open(dir, &(ts_opts){.no_fsync = 1}, &rep);
	assert_int_equal(rep.records, 2);
	assert_int_equal(rep.truncated_segments, 1);
	assert_int_equal(rep.truncated_bytes, 12);
	assert_non_null(strstr(rep.first_problem, "bad segment header"));
	snprintf(moved, sizeof(moved), "%s.corrupt", seg);
	assert_int_equal(access(seg, F_OK), -1);
	assert_int_equal(access(moved, F_OK), 0);
	seg_name(dir, 6, seg, sizeof(seg));
	assert_int_equal(access(seg, F_OK), 0); /* the fresh segment */
	ts_close(db);
	tmpdir_free(dir);
}

static void test_segment_roll(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096];
	ts_opts opts = {.segment_bytes = 256};
	ts_db *db = db_open(dir, &opts, NULL);
	append_records(db, 0, 50);
	ts_stats st;
	ts_get_stats(db, &st);
	ts_close(db);
	uint64_t total = 0;
	unsigned n = 1;
	for (;; n++) {
		seg_name(dir, n, seg, sizeof(seg));
		if (access(seg, F_OK) != 0)
			break;
		assert_true(file_size(seg) <= 256);
		total += (uint64_t)file_size(seg);
	}
	assert_true(n > 5);
	assert_int_equal(total, st.wal_bytes);

	ts_open_report rep;
	db = db_open(dir, &opts, &rep);
	assert_int_equal(rep.records, 50);
	assert_int_equal(rep.truncated_bytes, 0);
	assert_int_equal(everything(db).series, 50);
	ts_close(db);
	tmpdir_free(dir);
}

/* A write that fails half way (EFBIG via RLIMIT_FSIZE, as ENOSPC would) leaves no partial record. */
static void test_write_failure_truncates(void **state)
{
	(void)state;
	char *dir = tmpdir_new(), seg[4096];
	struct rlimit old, lim;
	cm_sample big[512];
	for (size_t i = 0; i < CM_ARRAY_LEN(big); i++)
		big[i] = (cm_sample){(int64_t)i * 1000, (double)i};
	ts_db *db = db_open(dir, NULL, NULL);
	append_records(db, 0, 2);
	seg_name(dir, 1, seg, sizeof(seg));
	off_t size = file_size(seg);

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 100;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	cm_label l[] = {{"__name__", "big"}};
	cm_series ser = {l, 1, big, CM_ARRAY_LEN(big)};
	cm_err err = {{0}};
	int rc = ts_append(db, &ser, 1, &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(err.msg, "nothing was stored"));
	assert_int_equal(file_size(seg), size);
	assert_int_equal(everything(db).series, 2);
	append_records(db, 2, 1);
	ts_close(db);

	ts_open_report rep;
	db = db_open(dir, NULL, &rep);
	assert_int_equal(rep.truncated_bytes, 0);
	assert_int_equal(rep.records, 3);
	assert_int_equal(everything(db).series, 3);
	ts_close(db);
	tmpdir_free(dir);
}

/* ---- concurrency ---------------------------------------------------------------------------------- */

#define THREADS 4
#define BATCHES 1000

typedef struct worker {
	ts_db *db;
	int id;
	int failures;
} worker;

static void *worker_run(void *arg)
{
	worker *w = arg;
	char id[8];
	snprintf(id, sizeof(id), "%d", w->id);
	for (int i = 0; i < BATCHES; i++) {
		cm_sample own = {i, i}, shared = {(int64_t)w->id * BATCHES + i, w->id};
		cm_label l1[] = {{"__name__", "own"}, {"t", id}};
		cm_label l2[] = {{"__name__", "shared"}};
		cm_series ser[] = {{l1, 2, &own, 1}, {l2, 1, &shared, 1}};
		if (ts_append(w->db, ser, 2, NULL) != 0)
			w->failures++;
	}
	return NULL;
}

static void check_concurrent(ts_db *db)
{
	ts_matcher m;
	assert_int_equal(ts_matcher_init(&m, TS_MATCH_EQ, "__name__", "shared", NULL), 0);
	got g = select_all(db, &m, 1, INT64_MIN, INT64_MAX);
	ts_matcher_close(&m);
	assert_int_equal(g.series, 1);
	assert_int_equal(g.samples, THREADS * BATCHES);
	g = everything(db);
	assert_int_equal(g.series, THREADS + 1);
	assert_int_equal(g.samples, 2 * THREADS * BATCHES);
}

/* Selects until the writers are done; the shared series must only ever grow and stay in time order. */
typedef struct reader {
	ts_db *db;
	atomic_int *done;
	int errors;
	size_t passes;
} reader;

static int check_order(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t ns)
{
	(void)l, (void)nl;
	size_t *n = ctx;
	for (size_t i = 1; i < ns; i++)
		if (s[i - 1].t_ms >= s[i].t_ms)
			return 1;
	*n = ns;
	return 0;
}

static void *reader_run(void *arg)
{
	reader *r = arg;
	ts_matcher m;
	size_t last = 0;
	if (ts_matcher_init(&m, TS_MATCH_RE, "__name__", "shar.*", NULL) != 0)
		return NULL;
	while (!atomic_load(r->done)) {
		size_t n = 0;
		if (ts_select(r->db, &m, 1, INT64_MIN, INT64_MAX, check_order, &n) != 0 || n < last)
			r->errors++;
		last = n;
		r->passes++;
	}
	ts_matcher_close(&m);
	return NULL;
}

static void concurrent_run(uint64_t segment_bytes)
{
	char *dir = tmpdir_new();
	ts_opts opts = {.segment_bytes = segment_bytes};
	ts_db *db = db_open(dir, &opts, NULL);
	pthread_t th[THREADS], rth;
	worker w[THREADS];
	atomic_int done = 0;
	reader r = {db, &done, 0, 0};
	assert_int_equal(pthread_create(&rth, NULL, reader_run, &r), 0);
	for (int i = 0; i < THREADS; i++) {
		w[i] = (worker){db, i, 0};
		assert_int_equal(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].failures, 0);
	}
	atomic_store(&done, 1);
	pthread_join(rth, NULL);
	assert_int_equal(r.errors, 0);
	ts_stats st;
	ts_get_stats(db, &st);
	assert_int_equal(st.appends, THREADS * BATCHES);
	assert_true(st.fsyncs >= 1);
	print_message("concurrent (segment_bytes %llu): %llu appends, %llu fsyncs, %zu selects\n",
		      (unsigned long long)segment_bytes, (unsigned long long)st.appends,
		      (unsigned long long)st.fsyncs, r.passes);
	check_concurrent(db);
	ts_close(db);

	ts_open_report rep;
	db = db_open(dir, &opts, &rep);
	assert_int_equal(rep.records, THREADS * BATCHES);
	assert_int_equal(rep.truncated_bytes, 0);
	check_concurrent(db);
	ts_close(db);
	tmpdir_free(dir);
}

static void test_concurrent_appends(void **state)
{
	(void)state;
	concurrent_run(0);
}

/* Segments roll while other threads write and fsync. */
static void test_concurrent_appends_rolling(void **state)
{
	(void)state;
	concurrent_run(4096);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_canonical_labels),
		cmocka_unit_test(test_invalid_input),
		cmocka_unit_test(test_lock),
		cmocka_unit_test(test_matchers),
		cmocka_unit_test(test_select_order_and_stop),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_many_series),
		cmocka_unit_test(test_torn_tail),
		cmocka_unit_test(test_bit_flip_last_record),
		cmocka_unit_test(test_bad_crc_middle_segment),
		cmocka_unit_test(test_bad_segment_header),
		cmocka_unit_test(test_segment_roll),
		cmocka_unit_test(test_write_failure_truncates),
		cmocka_unit_test(test_concurrent_appends),
		cmocka_unit_test(test_concurrent_appends_rolling),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
