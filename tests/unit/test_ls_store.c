/* test_ls_store.c -- the log store on a real directory: append and select, heads cut into zstd blocks,
 * WAL replay after a close without a flush, a torn WAL tail, idempotent replays of the same (origin,
 * seq), also out of order and with both copies of a seq in flight at once across WAL restarts (group
 * commit), an append whose entries cannot reach a head failing every append until a reopen, retention
 * by size and by age, blocks within their size, an empty line without a pointer, and bad labels refused.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ls.h"

typedef struct fx {
	char dir[256];
	ls_store *s;
	ls_store_opts o;
} fx;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

static void reopen(fx *f)
{
	ls_store_close(f->s);
	f->s = NULL;
	cm_err err = {{0}};
	if (ls_store_open(&f->o, &f->s, &err))
		fail_msg("open: %s", err.msg);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_ls_store.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->o = (ls_store_opts){.dir = f->dir, .block_bytes = 4096, .no_fsync = 1};
	reopen(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	ls_store_close(f->s);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Appends n entries "line <i>" at t = base + i ms to stream {app=<app>, pod=p}. */
static int push(fx *f, const char *app, int base, int n, const char *origin, uint64_t seq)
{
	cm_label l[2] = {{"pod", "p"}, {"app", app}};
	ls_entry *e = calloc((size_t)n, sizeof(*e));
	char(*lines)[32] = calloc((size_t)n, 32);
	for (int i = 0; i < n; i++) {
		snprintf(lines[i], 32, "line %d", base + i);
		e[i] = (ls_entry){(int64_t)(base + i) * 1000000, lines[i], strlen(lines[i])};
	}
	ls_push_stream st = {l, 2, e, (size_t)n};
	cm_err err = {{0}};
	int rc = ls_store_append(f->s, origin, seq, &st, 1, &err);
	free(e);
	free(lines);
	return rc;
}

typedef struct acc {
	int n;
	int64_t sum, last;
	int ordered;
	char key[128];
} acc;

static int want_app(void *arg, const ls_stream_info *st)
{
	const char *app = arg;
	for (size_t i = 0; i < st->nlabels; i++)
		if (!strcmp(st->labels[i].name, "app"))
			return !app || !strcmp(st->labels[i].value, app);
	return 0;
}

static int count_entry(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	acc *a = arg;
	char want[32];
	snprintf(want, sizeof(want), "line %d", (int)(ts / 1000000));
	if (len != strlen(want) || memcmp(line, want, len))
		fail_msg("entry at %lld is '%.*s'", (long long)ts, (int)len, line);
	if (a->n && ts < a->last)
		a->ordered = 0;
	a->n++, a->sum += ts / 1000000, a->last = ts;
	snprintf(a->key, sizeof(a->key), "%s", st->key);
	return 0;
}

static acc query(fx *f, const char *app, int64_t from_ms, int64_t to_ms)
{
	acc a = {.ordered = 1};
	assert_int_equal(ls_store_select(f->s, from_ms * 1000000, to_ms * 1000000, want_app, (void *)app, count_entry, &a),
			 0);
	return a;
}

static void test_append_select_blocks(void **state)
{
	fx *f = *state;
	assert_int_equal(push(f, "web", 0, 1000, NULL, 0), 0);
	assert_int_equal(push(f, "db", 0, 10, NULL, 0), 0);
	acc a = query(f, "web", 0, 999);
	assert_int_equal(a.n, 1000);
	assert_int_equal(a.sum, 999 * 1000 / 2);
	assert_true(a.ordered);
	assert_string_equal(a.key, "{app=\"web\", pod=\"p\"}");
	a = query(f, "web", 100, 199);
	assert_int_equal(a.n, 100);
	a = query(f, NULL, 0, 5);
	assert_int_equal(a.n, 12);
	ls_store_stats st;
	ls_store_stats_get(f->s, &st);
	assert_true(st.blocks >= 1); /* 1000 entries are past 4 KiB */
	assert_int_equal(st.entries, 1010);
	assert_true(st.disk_bytes > 8);
	/* after a restart: blocks from the index, the rest of the heads from the WAL, nothing twice */
	reopen(f);
	a = query(f, "web", 0, 999);
	assert_int_equal(a.n, 1000);
	assert_int_equal(a.sum, 999 * 1000 / 2);
	ls_store_stats_get(f->s, &st);
	assert_true(st.wal_replayed < 1010);
}

static void test_dedupe(void **state)
{
	fx *f = *state;
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 5), 0);
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 5), 0); /* a retry */
	assert_int_equal(push(f, "web", 0, 10, "node-b/boot1", 5), 0);
	assert_int_equal(query(f, "web", 0, 100).n, 20);
	/* with several batches in flight 4 may arrive after 5: stored, once */
	assert_int_equal(push(f, "web", 10, 10, "node-a/boot1", 4), 0);
	assert_int_equal(push(f, "web", 10, 10, "node-a/boot1", 4), 0);
	assert_int_equal(query(f, "web", 0, 100).n, 30);
	reopen(f);
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 5), 0); /* remembered across a restart (WAL) */
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 4), 0);
	assert_int_equal(push(f, "web", 20, 10, "node-a/boot1", 3), 0); /* never stored: stored now */
	assert_int_equal(query(f, "web", 0, 100).n, 40);
	f->o.wal_bytes = 1; /* every append restarts the WAL: windows move to the index */
	reopen(f);
	assert_int_equal(push(f, "web", 30, 10, "node-a/boot1", 7), 0);
	reopen(f);
	for (uint64_t seq = 3; seq <= 7; seq++) /* 3, 4, 5 and 7 from the index's window */
		assert_int_equal(push(f, "web", 30, 10, "node-a/boot1", seq), 0);
	assert_int_equal(query(f, "web", 0, 100).n, 60); /* 6 was new */
	for (uint64_t seq = 100; seq < 100 + CM_SEQWIN_N; seq++) /* pushes 3..7 out to the floor */
		assert_int_equal(push(f, "other", 0, 1, "node-a/boot1", seq), 0);
	reopen(f);
	assert_int_equal(push(f, "web", 30, 10, "node-a/boot1", 2), 0); /* at most the floor: a duplicate */
	assert_int_equal(query(f, "web", 0, 100).n, 60);
	ls_store_stats st;
	ls_store_stats_get(f->s, &st);
	assert_int_equal(st.wal_replayed, 1); /* the last append's record: the WAL restarts before the next one */
	assert_int_equal(st.duplicates, 1);
}

typedef struct pusher {
	fx *f;
	pthread_barrier_t *bar; /* shared by the two threads of a pair */
	int pair, rc;
} pusher;

#define COPY_SEQS 25 /* per pair */

/* One of the two threads of pair 0 or 1: seqs pair + 1, pair + 3, ... (the pairs interleave them), each
 * sent by both threads of the pair at once, so two copies of one seq are in flight together. */
static void *copy_thread(void *arg)
{
	pusher *p = arg;
	for (int k = 0; k < COPY_SEQS; k++) {
		uint64_t seq = (uint64_t)(2 * k + p->pair + 1);
		pthread_barrier_wait(p->bar);
		if (push(p->f, "web", (int)seq * 10, 10, "node-a/boot1", seq))
			p->rc = 1;
	}
	return NULL;
}

/* Two pairs of threads, each pair sending both copies of every seq at once, with fsync (group commit)
 * and a WAL restart before every append (each waits for the records between their write and their
 * heads, without the mutex): every batch stored exactly once, and a reopen reads the same back. Before
 * the restart wait moved ahead of the dedupe check, both copies of a seq missed the window there in
 * most rounds and both were stored. */
static void test_concurrent_copies(void **state)
{
	fx *f = *state;
	f->o.no_fsync = 0;
	f->o.wal_bytes = 1;
	reopen(f);
	pthread_barrier_t bar[2];
	pthread_t th[4];
	pusher p[4];
	for (int t = 0; t < 4; t++) {
		if (t < 2)
			pthread_barrier_init(&bar[t], NULL, 2);
		p[t] = (pusher){f, &bar[t / 2], t / 2, 0};
		assert_int_equal(pthread_create(&th[t], NULL, copy_thread, &p[t]), 0);
	}
	for (int t = 0; t < 4; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(p[t].rc, 0);
	}
	pthread_barrier_destroy(&bar[0]);
	pthread_barrier_destroy(&bar[1]);
	ls_store_stats st;
	ls_store_stats_get(f->s, &st);
	assert_int_equal(st.duplicates, 2 * COPY_SEQS); /* one copy of each seq */
	for (int round = 0; round < 2; round++) {
		acc a = query(f, "web", 0, 100000);
		assert_int_equal(a.n, 2 * COPY_SEQS * 10);
		assert_int_equal(a.sum, (int64_t)(10 + 2 * COPY_SEQS * 10 + 9) * 2 * COPY_SEQS * 10 / 2);
		reopen(f);
	}
}

/* A record durable in the WAL whose entries cannot reach a head (its new stream cannot be inserted: the
 * index is write-locked by another connection) fails its append, and every later one, until a reopen
 * replays it: a retry acknowledged as a duplicate, then a WAL restart, lost it. */
static void test_apply_failure_sticky(void **state)
{
	fx *f = *state;
	f->o.wal_bytes = 64; /* the WAL restarts before the append after the first one */
	reopen(f);
	char path[300];
	snprintf(path, sizeof(path), "%s/index.db", f->dir);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_not_equal(push(f, "new", 0, 10, "node-a/boot1", 1), 0);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_not_equal(push(f, "new", 0, 10, "node-a/boot1", 1), 0); /* the retry: not acknowledged */
	assert_int_not_equal(push(f, "web", 0, 10, "node-a/boot1", 2), 0); /* nor anything after it */
	assert_int_equal(query(f, "web", 0, 1000).n, 0);
	reopen(f);
	assert_int_equal(query(f, "new", 0, 1000).n, 10); /* replayed from the WAL */
	assert_int_equal(push(f, "new", 0, 10, "node-a/boot1", 1), 0); /* now a duplicate */
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 2), 0);
	reopen(f);
	assert_int_equal(query(f, "new", 0, 1000).n, 10);
	assert_int_equal(query(f, "web", 0, 1000).n, 10);
}

/* A WAL restart writes over the old records without truncating: a whole record of the cycle before
 * that follows the last one written ends the replay (its lsn is below the cycle's first) and is cut. */
static void test_wal_restart_overwrites(void **state)
{
	fx *f = *state;
	char path[512];
	snprintf(path, sizeof(path), "%s/wal", f->dir);
	struct stat st;
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 1), 0);
	assert_int_equal(stat(path, &st), 0);
	off_t rec = st.st_size - 8; /* every push below makes a record of this size */
	f->o.wal_bytes = (uint64_t)(9 + rec); /* restarts before every third record */
	reopen(f);
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 2), 0);
	assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", 3), 0); /* at offset 8, then 2's record */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 8 + 2 * rec);
	/* a crash: the file as it was (a close cuts 2's record off), heads from the WAL */
	static char wal[4096];
	size_t wlen;
	assert_true(8 + 2 * rec < (off_t)sizeof(wal));
	assert_int_equal(cm_read_file(path, wal, sizeof(wal), &wlen), 0);
	ls_store_close(f->s);
	f->s = NULL;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 8 + rec);
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(cm_write_all(fd, wal, wlen), 0);
	close(fd);
	reopen(f);
	assert_int_equal(query(f, "web", 0, 100).n, 30);
	ls_store_stats s;
	ls_store_stats_get(f->s, &s);
	assert_int_equal(s.wal_truncated, (uint64_t)rec); /* 2's record, not replayed */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 8 + rec);
	for (uint64_t seq = 1; seq <= 3; seq++) /* each stored once */
		assert_int_equal(push(f, "web", 0, 10, "node-a/boot1", seq), 0);
	assert_int_equal(query(f, "web", 0, 100).n, 30);
	reopen(f);
	assert_int_equal(query(f, "web", 0, 100).n, 30);
}

static void test_torn_wal(void **state)
{
	fx *f = *state;
	assert_int_equal(push(f, "web", 0, 10, NULL, 0), 0);
	assert_int_equal(push(f, "web", 10, 10, NULL, 0), 0);
	ls_store_close(f->s);
	f->s = NULL;
	char path[512];
	snprintf(path, sizeof(path), "%s/wal", f->dir);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 3), 0); /* the second record loses its end */
	reopen(f);
	assert_int_equal(query(f, "web", 0, 100).n, 10);
	ls_store_stats s;
	ls_store_stats_get(f->s, &s);
	assert_true(s.wal_truncated > 0);
	assert_int_equal(push(f, "web", 10, 10, NULL, 0), 0);
	reopen(f);
	assert_int_equal(query(f, "web", 0, 100).n, 20);
	/* a WAL with a wrong magic fails the open: it is not ours to truncate */
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4);
	close(fd);
	ls_store_close(f->s);
	f->s = NULL;
	cm_err err = {{0}};
	assert_int_equal(ls_store_open(&f->o, &f->s, &err), CM_ECORRUPT);
}

static void test_retention(void **state)
{
	fx *f = *state;
	f->o.chunk_file_bytes = 2048;
	f->o.retention_bytes = 6000;
	reopen(f);
	for (int i = 0; i < 20; i++)
		assert_int_equal(push(f, "web", i * 1000, 1000, NULL, 0), 0);
	assert_int_equal(ls_store_retain(f->s, 0), 0);
	ls_store_stats st;
	ls_store_stats_get(f->s, &st);
	assert_true(st.disk_bytes <= 6000);
	acc a = query(f, "web", 0, 1000000);
	assert_true(a.n > 0 && a.n < 20000);
	assert_int_equal(query(f, "web", 19000, 19999).n, 1000); /* the newest stay */
	/* by age: everything is from 1970 */
	f->o.retention_bytes = 0;
	f->o.retention_ms = 1000;
	reopen(f);
	assert_int_equal(push(f, "web", 30000, 1000, NULL, 0), 0);
	assert_int_equal(ls_store_retain(f->s, 1000000000000LL), 0);
	assert_true(query(f, "web", 0, 29999).n < a.n);
}

/* Appends of 100 entries (about 1.3 KiB raw each) into 4 KiB blocks: the head is cut before an append
 * would overfill it, so every block in the chunk file holds whole appends within block_bytes (a head
 * that took a block plus an append's share kept ~2 MiB per stream on the agent's 4 MiB batches). */
static void test_blocks_within_size(void **state)
{
	fx *f = *state;
	for (int k = 0; k < 30; k++)
		assert_int_equal(push(f, "web", k * 100, 100, NULL, 0), 0);
	char path[512];
	snprintf(path, sizeof(path), "%s/chunks/00000001", f->dir);
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	uint8_t h[40];
	assert_int_equal(fread(h, 1, 8, fp), 8);
	int blocks = 0;
	while (fread(h, 1, 40, fp) == 40) {
		uint32_t c = cm_get_u32le(h), raw = cm_get_u32le(h + 4), n = cm_get_u32le(h + 8);
		assert_true(raw <= f->o.block_bytes);
		assert_int_equal(n % 100, 0);
		assert_int_equal(fseek(fp, c, SEEK_CUR), 0);
		blocks++;
	}
	fclose(fp);
	assert_true(blocks >= 8);
	acc a = query(f, "web", 0, 3000);
	assert_int_equal(a.n, 3000);
	assert_true(a.ordered);
}

static int count_empty(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	(void)st, (void)line;
	*(int *)arg += ts == 5000000 && len == 0;
	return 0;
}

/* An empty line may come without a pointer (protobuf-c decodes empty bytes so): stored, read back empty. */
static void test_empty_line(void **state)
{
	fx *f = *state;
	cm_label l[1] = {{"app", "empty"}};
	ls_entry e = {5000000, NULL, 0};
	ls_push_stream st = {l, 1, &e, 1};
	cm_err err = {{0}};
	assert_int_equal(ls_store_append(f->s, NULL, 0, &st, 1, &err), 0);
	int n = 0;
	assert_int_equal(ls_store_select(f->s, 0, 10000000, want_app, "empty", count_empty, &n), 0);
	reopen(f); /* and from the WAL */
	assert_int_equal(ls_store_select(f->s, 0, 10000000, want_app, "empty", count_empty, &n), 0);
	assert_int_equal(n, 2);
}

static void test_bad_labels(void **state)
{
	fx *f = *state;
	cm_label bad[][2] = {{{"1x", "v"}, {"a", "b"}}, {{"a", "v"}, {"a", "w"}}, {{"a", "\xff"}, {"b", "c"}}};
	ls_entry e = {1, "x", 1};
	cm_err err = {{0}};
	for (size_t i = 0; i < 3; i++) {
		ls_push_stream st = {bad[i], 2, &e, 1};
		assert_int_equal(ls_store_append(f->s, NULL, 0, &st, 1, &err), CM_EINVAL);
	}
	ls_push_stream none = {bad[0], 0, &e, 1};
	assert_int_equal(ls_store_append(f->s, NULL, 0, &none, 1, &err), CM_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_select_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedupe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_copies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply_failure_sticky, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wal_restart_overwrites, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_wal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blocks_within_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_labels, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
