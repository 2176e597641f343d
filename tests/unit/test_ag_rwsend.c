/* test_ag_rwsend.c -- the remote write sender's disk queue (ag_rwsend.c) without a receiver.
 *
 * The sender points at a loopback port nobody listens on, so nothing is ever acknowledged and the
 * queue only grows: what it counts as pending must survive a restart exactly, a torn tail (a record
 * cut short by a crash) and a damaged last record are cut at the next start and only they are lost,
 * and a queue over its bound drops whole old segments, counted, so pending + dropped = queued.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_int.h"

#define URL "http://127.0.0.1:1/api/v1/write"

static char dir[256];

static ag__rwsend *open_q(uint64_t max_queue, long shards)
{
	const char *urls[] = {URL};
	ag__rwsend_opts o = {urls, 1, "", shards, 1000, 10, max_queue};
	ag__rwsend *s = NULL;
	cm_err err;
	assert_int_equal(ag__rwsend_create(dir, &o, &s, &err), 0);
	return s;
}

/* The value of metric{url=URL[,result=...]} in the sender's /metrics text. */
static double metric(ag__rwsend *s, const char *name)
{
	cm_buf b;
	cm_buf_init(&b);
	assert_int_equal(ag__rwsend_metrics(s, &b), 0);
	cm_buf_append(&b, "", 1);
	const char *p = strstr((char *)b.data, name);
	double v = p ? strtod(strchr(p, ' ') + 1, NULL) : -1;
	cm_buf_close(&b);
	return v;
}

/* n samples of one series named after i. */
static void enqueue(ag__rwsend *s, int i, size_t n)
{
	char v[16];
	snprintf(v, sizeof(v), "%d", i);
	cm_label l[] = {{"__name__", "rwq"}, {"i", v}};
	cm_sample *x = calloc(n, sizeof(*x));
	for (size_t k = 0; k < n; k++)
		x[k] = (cm_sample){(int64_t)k * 1000, (double)k};
	cm_series ser = {l, 2, x, n};
	ag__rwsend_enqueue(s, &ser, 1);
	free(x);
}

/* The path of the newest non-empty segment of shard 0 (the only shard). */
static void last_segment(char *out, size_t cap)
{
	char sub[600];
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)) && e->d_name[0] == '.')
		;
	snprintf(sub, sizeof(sub), "%s/%s/shard-000", dir, e->d_name);
	closedir(d);
	d = opendir(sub);
	char best[300] = "";
	while ((e = readdir(d))) {
		char p[1000];
		struct stat st;
		snprintf(p, sizeof(p), "%s/%s", sub, e->d_name);
		if (strstr(e->d_name, ".seg") && !stat(p, &st) && st.st_size > 16 && strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	snprintf(out, cap, "%s/%s", sub, best);
}

static void test_restart_keeps_pending(void **state)
{
	(void)state;
	ag__rwsend *s = open_q(1u << 30, 1);
	enqueue(s, 1, 10), enqueue(s, 2, 20), enqueue(s, 3, 30);
	assert_true(metric(s, "corral_remote_write_pending_samples{") == 60);
	ag__rwsend_destroy(s);
	s = open_q(1u << 30, 1);
	assert_true(metric(s, "corral_remote_write_pending_samples{") == 60);
	enqueue(s, 4, 5);
	assert_true(metric(s, "corral_remote_write_pending_samples{") == 65);
	ag__rwsend_destroy(s);
}

static void test_torn_tail_is_cut(void **state)
{
	(void)state;
	char seg[1024];
	ag__rwsend *s = open_q(1u << 30, 1);
	enqueue(s, 5, 7);
	ag__rwsend_destroy(s);
	last_segment(seg, sizeof(seg));
	struct stat st;
	assert_int_equal(stat(seg, &st), 0);
	int fd = open(seg, O_WRONLY | O_APPEND);
	uint8_t torn[18] = {100, 0, 0, 0, 1, 2, 3, 4}; /* says 100 bytes of payload, has 10 */
	assert_int_equal(write(fd, torn, sizeof(torn)), (ssize_t)sizeof(torn));
	close(fd);
	s = open_q(1u << 30, 1);
	assert_true(metric(s, "corral_remote_write_pending_samples{") == 72);
	struct stat after;
	assert_int_equal(stat(seg, &after), 0);
	assert_int_equal(after.st_size, st.st_size);
	ag__rwsend_destroy(s);
}

static void test_damaged_record_is_cut(void **state)
{
	(void)state;
	char seg[1024];
	ag__rwsend *s = open_q(1u << 30, 1);
	enqueue(s, 6, 9);
	ag__rwsend_destroy(s);
	last_segment(seg, sizeof(seg));
	struct stat st;
	assert_int_equal(stat(seg, &st), 0);
	int fd = open(seg, O_RDWR);
	uint8_t c;
	assert_int_equal(pread(fd, &c, 1, st.st_size - 3), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, st.st_size - 3), 1); /* a value byte: the CRC no longer matches */
	close(fd);
	s = open_q(1u << 30, 1);
	assert_true(metric(s, "corral_remote_write_pending_samples{") == 72); /* the 9 are gone */
	ag__rwsend_destroy(s);
}

static void test_bound_drops_oldest(void **state)
{
	(void)state;
	char fresh[300];
	snprintf(fresh, sizeof(fresh), "%s/bounded", dir);
	const char *urls[] = {URL};
	ag__rwsend_opts o = {urls, 1, "", 1, 1000, 10, 256u << 10};
	ag__rwsend *s;
	cm_err err;
	assert_int_equal(ag__rwsend_create(fresh, &o, &s, &err), 0);
	size_t total = 0;
	for (int i = 0; i < 200; i++, total += 1000)
		enqueue(s, i, 1000); /* ~16 KiB a record, 3.2 MiB in all */
	double pending = metric(s, "corral_remote_write_pending_samples{");
	double dropped = metric(s, "result=\"dropped\"}");
	assert_true(dropped > 0);
	assert_true(pending + dropped == (double)total);
	assert_true(pending * 16 < (256u << 10) + 3 * (64u << 10)); /* the bound, plus the two segments in use */
	ag__rwsend_destroy(s);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/corral-rwq-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_keeps_pending),
		cmocka_unit_test(test_torn_tail_is_cut),
		cmocka_unit_test(test_damaged_record_is_cut),
		cmocka_unit_test(test_bound_drops_oldest),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
