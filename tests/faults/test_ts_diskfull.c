/* test_ts_diskfull.c -- a full disk under a running corral-aggregator: pushes get 503 (the agent keeps
 * and retries the batch), nothing acknowledged is lost, and once space is freed pushes are stored again.
 *
 * The test mounts a 4 MiB tmpfs of its own (it needs root; without it the test is skipped), puts the
 * aggregator's data directory on it, pushes until the store refuses, checks the 503, frees the space by
 * removing a filler file it wrote, pushes again (200), then kills the aggregator with SIGKILL, restarts
 * it and checks that every acknowledged batch is there. The mount is removed in teardown.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

#define TOKEN "diskfull-token"

typedef struct fixture {
	char dir[256], mnt[300], data[320], filler[320], token[300], url[64];
	int mounted;
	itest_proc agg;
} fixture;

/* Pushes batch seq: 40 series x 1 sample of value seq, at time seq seconds. */
static long push(fixture *f, uint64_t seq)
{
	cm_label l[40][2];
	char v[40][8];
	cm_sample x[40];
	cm_series s[40];
	cm_buf frame;
	cm_err err;
	for (int i = 0; i < 40; i++) {
		snprintf(v[i], sizeof(v[i]), "%d", i);
		l[i][0] = (cm_label){"__name__", "diskfull_value"};
		l[i][1] = (cm_label){"i", v[i]};
		x[i] = (cm_sample){(int64_t)seq * 1000, (double)seq};
		s[i] = (cm_series){l[i], 2, &x[i], 1};
	}
	cm_batch b = {.node = "df-node", .boot_id = "boot", .agent_version = "test", .seq = seq,
		      .created_ms = (int64_t)seq * 1000, .series = s, .nseries = 40};
	cm_buf_init(&frame);
	assert_int_equal(cm_wire_encode(&b, 1, &frame, &err), 0);
	long st = itest_push(f->url, TOKEN, frame.data, frame.len, NULL);
	cm_buf_close(&frame);
	return st;
}

/* Fills the file system with the filler file until it is full. */
static void fill(fixture *f)
{
	char block[4096];
	memset(block, 'x', sizeof(block));
	int fd = open(f->filler, O_WRONLY | O_CREAT | O_APPEND, 0644);
	assert_true(fd >= 0);
	while (write(fd, block, sizeof(block)) > 0)
		;
	close(fd);
}

/* Marks in have[seq] the batches stored: the point at t = seq s has value seq (the 1 s query steps fill
 * a missing second with the previous value, which differs). */
static void stored(fixture *f, uint64_t last, char *have)
{
	char q[256], url[512];
	long status;
	size_t i;
	json_t *p;
	itest_urlencode(q, sizeof(q), "diskfull_value{i=\"0\"}");
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=%s&start=1&end=%llu&step=1", f->url, q,
		 (unsigned long long)last);
	json_t *j = itest_get_json(url, &status);
	assert_int_equal(status, 200);
	json_t *r = json_array_get(json_object_get(json_object_get(j, "data"), "result"), 0);
	json_array_foreach(json_object_get(r, "values"), i, p) {
		long long t = (long long)json_number_value(json_array_get(p, 0));
		if (t >= 1 && (uint64_t)t <= last && atof(json_string_value(json_array_get(p, 1))) == (double)t)
			have[t] = 1;
	}
	json_decref(j);
}

static void test_disk_full(void **state)
{
	fixture *f = *state;
	uint64_t seq = 1, acked = 0;
	char ack[512] = {0}, have[512] = {0};
	if (!f->mounted)
		skip();
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	for (; seq <= 20; seq++, acked++, ack[seq - 1] = 1)
		assert_int_equal(push(f, seq), 200);
	fill(f);
	long st = 200;
	for (int tries = 0; tries < 200 && (st = push(f, seq)) == 200; tries++) { /* a partly used page */
		ack[seq++] = 1;
		acked++;
	}
	assert_int_equal(st, 503);
	assert_int_equal(push(f, seq), 503); /* still full: the agent retries the same batch */
	char health[128];
	snprintf(health, sizeof(health), "%s/healthz", f->url);
	assert_int_equal(itest_http("GET", health, NULL, NULL, 0, NULL), 200);

	assert_int_equal(unlink(f->filler), 0); /* space freed: the retried batch and later ones go in */
	for (uint64_t end = seq + 10; seq < end; seq++, acked++) {
		assert_int_equal(push(f, seq), 200);
		ack[seq] = 1;
	}
	itest_stop(&f->agg, SIGKILL, 5000);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	stored(f, seq - 1, have);
	for (uint64_t i = 1; i < seq; i++)
		if (ack[i] && !have[i])
			fail_msg("acknowledged batch %llu is missing", (unsigned long long)i);
	print_message("%llu batches acknowledged around a full disk, all stored\n", (unsigned long long)acked);
	assert_int_equal(itest_stop(&f->agg, SIGTERM, 10000), 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->mnt, sizeof(f->mnt), "%s/mnt", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->mnt);
	snprintf(f->filler, sizeof(f->filler), "%s/filler", f->mnt);
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	itest_write_file(f->token, TOKEN "\n");
	mkdir(f->mnt, 0755);
	f->mounted = geteuid() == 0 && mount("tmpfs", f->mnt, "tmpfs", 0, "size=4m") == 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->agg.pid > 0)
		itest_stop(&f->agg, SIGKILL, 5000);
	if (f->mounted)
		umount2(f->mnt, MNT_DETACH);
	itest_rmtree(f->dir);
	free(f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
