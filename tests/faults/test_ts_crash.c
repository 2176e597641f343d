/* test_ts_crash.c -- the tsdb under SIGKILL and a full disk.
 *
 * Crash: a child process opens a store and appends batches as fast as it can, with timestamps that move
 * fast enough (5 min a batch) that the storage thread cuts blocks and writes WAL checkpoints while it
 * runs; after each acknowledged append it reports the batch number on a pipe. The parent kills it with
 * SIGKILL at a random moment (25 rounds on the same directory), reopens the store and checks that every
 * acknowledged batch is there in full, that nothing is there that was never written, and that the store
 * reports no damage it could not repair.
 *
 * Disk full: a child with RLIMIT_FSIZE (SIGXFSZ ignored, so writes fail with EFBIG) appends until an
 * append fails; the error must say so, nothing acknowledged may be lost, and after the limit is raised
 * (space freed) appends succeed again and everything is there after a reopen.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"
#include "ts.h"

#define SERIES 8
#define PER 4          /* samples per series per batch */
#define STEP_MS 75000  /* between samples: a batch spans 5 min */

/* Batch b: series s gets samples at b * PER + k (k < PER), value b * 1000 + s. */
static void batch(int64_t b, cm_series *ser, cm_label (*l)[2], char (*v)[8], cm_sample (*x)[PER])
{
	for (int s = 0; s < SERIES; s++) {
		snprintf(v[s], sizeof(v[s]), "%d", s);
		l[s][0] = (cm_label){"__name__", "crash"};
		l[s][1] = (cm_label){"s", v[s]};
		for (int k = 0; k < PER; k++)
			x[s][k] = (cm_sample){(b * PER + k) * STEP_MS, (double)(b * 1000 + s)};
		ser[s] = (cm_series){l[s], 2, x[s], PER};
	}
}

static int append_batch(ts_db *db, int64_t b, cm_err *err)
{
	cm_series ser[SERIES];
	cm_label l[SERIES][2];
	char v[SERIES][8];
	cm_sample x[SERIES][PER];
	batch(b, ser, l, v, x);
	return ts_append(db, ser, SERIES, err);
}

/* The child: appends batches from `first` on, writing each acknowledged number to fd. */
static void child_run(const char *dir, int64_t first, int fd)
{
	ts_db *db;
	cm_err err;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (ts_open(dir, NULL, &db, NULL, &err))
		_exit(3);
	for (int64_t b = first;; b++) {
		if (append_batch(db, b, &err))
			_exit(4);
		if (write(fd, &b, sizeof(b)) != sizeof(b))
			_exit(5);
	}
}

typedef struct check {
	int64_t acked;     /* every batch up to this must be there */
	int64_t written;   /* no batch past this may be there */
	int64_t batches;   /* complete batches seen */
	int bad;
} check;

static int check_series(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	check *c = ctx;
	int s = -1;
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, "s"))
			s = atoi(l[i].value);
	for (size_t i = 0; i < n; i++) {
		int64_t idx = x[i].t_ms / STEP_MS, b = idx / PER;
		if (x[i].t_ms % STEP_MS || (int64_t)x[i].v != b * 1000 + s || b > c->written)
			c->bad++;
		if (i != (size_t)idx) /* samples 0..n-1 all present, in order */
			c->bad++;
	}
	int64_t full = (int64_t)n / PER;
	if (s == 0 || full < c->batches)
		c->batches = full;
	return 0;
}

static void verify(const char *dir, int64_t acked, int64_t written)
{
	ts_db *db;
	ts_open_report rep;
	cm_err err;
	check c = {acked, written, INT64_MAX, 0};
	assert_int_equal(ts_open(dir, NULL, &db, &rep, &err), 0);
	assert_int_equal(rep.bad_blocks, 0);
	assert_int_equal(ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, check_series, &c), 0);
	if (c.bad || c.batches < acked + 1)
		fail_msg("acked through batch %lld, found %lld complete batches, %d bad samples", (long long)acked,
			 (long long)c.batches - 1, c.bad);
	ts_close(db);
}

static void test_sigkill(void **state)
{
	(void)state;
	char dir[256];
	int64_t next = 0, acked = -1;
	itest_mkdtemp(dir, sizeof(dir));
	srand((unsigned)time(NULL));
	for (int round = 0; round < 25; round++) {
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			child_run(dir, next, p[1]);
		}
		close(p[1]);
		itest_sleep_ms(20 + rand() % 150);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		for (int64_t b; read(p[0], &b, sizeof(b)) == sizeof(b);)
			acked = b; /* batches are acknowledged in order */
		close(p[0]);
		/* the batch after the last ack may or may not have made it; it is rewritten next round */
		verify(dir, acked, acked + 1);
		next = acked + 1;
	}
	ts_db *db;
	ts_stats st;
	assert_int_equal(ts_open(dir, &(ts_opts){.manual_cut = 1}, &db, NULL, NULL), 0);
	ts_get_stats(db, &st);
	ts_close(db);
	print_message("25 SIGKILLs, %lld batches acknowledged, %llu blocks cut meanwhile\n", (long long)acked + 1,
		      (unsigned long long)st.blocks);
	assert_true(acked > 25);
	assert_true(st.blocks > 0); /* the kills also hit cuts and checkpoints */
	itest_rmtree(dir);
}

/* ---- disk full ------------------------------------------------------------------------------------- */

static void test_disk_full(void **state)
{
	(void)state;
	char dir[256];
	itest_mkdtemp(dir, sizeof(dir));
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		ts_db *db;
		cm_err err;
		struct rlimit lim, full = {256 << 10, RLIM_INFINITY};
		int64_t b = 0;
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &lim);
		setrlimit(RLIMIT_FSIZE, &full); /* no file may grow past 256 KiB: a full disk */
		if (ts_open(dir, &(ts_opts){.manual_cut = 1}, &db, NULL, &err))
			_exit(3);
		int rc;
		while ((rc = append_batch(db, b, &err)) == 0)
			b++;
		if (rc != -EFBIG || !strstr(err.msg, "nothing was stored"))
			_exit(4);
		if (append_batch(db, b, &err) == 0) /* still full */
			_exit(5);
		setrlimit(RLIMIT_FSIZE, &lim); /* space freed */
		for (int64_t end = b + 20; b < end; b++)
			if (append_batch(db, b, &err))
				_exit(6);
		ts_close(db);
		_exit(b > 30 ? 0 : 7);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	ts_db *db;
	ts_stats st;
	assert_int_equal(ts_open(dir, NULL, &db, NULL, NULL), 0);
	ts_get_stats(db, &st);
	ts_close(db);
	uint64_t total = st.samples + st.block_samples;
	assert_true(total % (SERIES * PER) == 0 && total >= 30 * SERIES * PER);
	verify(dir, (int64_t)(total / (SERIES * PER)) - 1, (int64_t)(total / (SERIES * PER)) - 1);
	itest_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_sigkill), cmocka_unit_test(test_disk_full)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
