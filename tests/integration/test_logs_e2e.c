/* test_logs_e2e.c -- every container log line exactly once, end to end, through crashes: a shipper
 * process (this binary re-run as "--ship": the logship tailer staging each batch, pushing it to the
 * aggregator's Loki push with origin and seq, committing on 204) reads a kubelet-style tree of CRI files
 * with long records split into P pieces, while a writer appends and renames files the way the kubelet
 * rotates them. The shipper dies right after an ack and before its commit (the worst moment), the
 * aggregator is killed with SIGKILL and restarted twice while lines are shipped, and the shipper is
 * killed once more. At the end the aggregator holds every record exactly once, whole, in order per file.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"
#include "ls.h"

#define TOKEN "e2e-test-token"
#define NFILES 4
#define PRE 20000    /* records per file written before shipping starts */
#define LIVE 5000    /* records per file appended while shipping, with one rotation */
#define LONG_EVERY 50
#define T0 1700000000000000000LL

typedef struct fixture {
	char dir[256], data[300], token[300], url[64], root[300], db[300];
	itest_proc agg, ship;
} fixture;

static fixture *F;

/* ---- the shipper (a process of its own) ---------------------------------------------------------------- */

static int put_json_bytes(cm_buf *b, const char *s, size_t n)
{
	char *z = strndup(s, n);
	int rc = !z || cm_buf_put_json_str(b, z);
	free(z);
	return rc;
}

static int encode(const ls_batch *b, cm_buf *out)
{
	out->len = 0;
	int rc = cm_buf_puts(out, "{\"streams\":[");
	for (size_t i = 0; i < b->nrecords && !rc; i++) {
		const ls_record *r = &b->records[i];
		const ls_source *s = &b->sources[r->source];
		rc = cm_buf_printf(out,
				   "%s{\"stream\":{\"namespace\":\"%s\",\"pod\":\"%s\",\"container\":\"%s\",\"stream\":\"%s\"},"
				   "\"values\":[[\"%lld\",",
				   i ? "," : "", s->namespace_, s->pod, s->container, r->stream ? "stderr" : "stdout",
				   (long long)r->ts_ns) ||
		     put_json_bytes(out, r->line, r->len) || cm_buf_puts(out, "]]}");
	}
	return rc || cm_buf_puts(out, "]}");
}

/* crash_after > 0: exit right after that many acknowledged pushes, before committing the last one
 * (the worst moment for a kill -9: stored, not committed). */
static int ship(const char *root, const char *db, const char *url, int crash_after)
{
	ls_tail_opts o = {.log_root = root, .db_path = db, .rotate_wait_ms = 200, .rescan_ms = 100};
	ls_tail *t;
	cm_err err;
	if (ls_tail_open(&o, &t, &err))
		return fprintf(stderr, "ship: %s\n", err.msg), 1;
	ls_batch b;
	ls_batch_init(&b);
	cm_buf body, reply;
	cm_buf_init(&body), cm_buf_init(&reply);
	uint64_t last_seq = (uint64_t)itest_now_ms() * 1000;
	printf("shipping\n");
	fflush(stdout);
	for (;;) {
		int rc = ls_tail_read(t, &b, 32 * 1024, 0); /* small batches, paced: the kills land mid-stream */
		if (rc == CM_AGAIN || (!rc && !b.nrecords)) {
			if (!rc)
				ls_tail_commit(t, b.id);
			itest_sleep_ms(20);
			continue;
		}
		if (rc)
			return fprintf(stderr, "ship: read: %s\n", cm_strerror(rc)), 1;
		uint64_t seq = b.replay_seq;
		if (!seq) {
			uint64_t now = (uint64_t)itest_now_ms() * 1000;
			seq = last_seq = now > last_seq ? now : last_seq + 1;
			if (ls_tail_stage(t, b.id, seq))
				return fprintf(stderr, "ship: stage failed\n"), 1;
		}
		if (encode(&b, &body))
			return 1;
		char u[256];
		snprintf(u, sizeof(u), "%s/loki/api/v1/push?origin=e2e&seq=%llu", url, (unsigned long long)seq);
		const char *h[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN, NULL};
		while (itest_http("POST", u, h, body.data, body.len, &reply) != 204)
			itest_sleep_ms(50); /* the aggregator is down or restarting: the same batch again */
		if (crash_after && --crash_after == 0)
			_exit(9);
		if (ls_tail_commit(t, b.id))
			return fprintf(stderr, "ship: commit failed\n"), 1;
		itest_sleep_ms(8);
	}
}

/* ---- the tree and its writer --------------------------------------------------------------------------- */

static void file_path(char *out, size_t cap, int k)
{
	snprintf(out, cap, "%s/var/log/pods/e2e_app-%d_uid-%d/main/0.log", F->root, k, k);
}

/* Record i of file k: "f<k> r<i> ..." at T0 + k * 1000 s + i ms; every LONG_EVERY-th one is 3,000 bytes
 * in three P pieces and an F, with a stderr record between its pieces. */
static void write_record(FILE *fp, int k, int i)
{
	long long ts = T0 + (long long)k * 1000000000000LL + (long long)i * 1000000;
	time_t sec = (time_t)(ts / 1000000000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	char t[64];
	snprintf(t, sizeof(t), "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, ts % 1000000000);
	if (i % LONG_EVERY) {
		fprintf(fp, "%s stdout F f%d r%d payload-%d\n", t, k, i, i * 7);
		return;
	}
	char piece[1001];
	memset(piece, 'x', 1000);
	piece[1000] = 0;
	fprintf(fp, "%s stdout P f%d r%d %s\n", t, k, i, piece);
	fprintf(fp, "%s stdout P %s\n", t, piece);
	fprintf(fp, "%s stderr F interleaved f%d r%d\n", t, k, i); /* another stream's record in between */
	fprintf(fp, "%s stdout F %s end\n", t, piece);
}

static void write_pre(void)
{
	for (int k = 0; k < NFILES; k++) {
		char p[512], dir[512];
		file_path(p, sizeof(p), k);
		snprintf(dir, sizeof(dir), "%s", p);
		*strrchr(dir, '/') = 0;
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
		assert_int_equal(system(cmd), 0);
		FILE *fp = fopen(p, "w");
		for (int i = 0; i < PRE; i++)
			write_record(fp, k, i);
		fclose(fp);
	}
}

static void *writer(void *arg)
{
	(void)arg;
	for (int i = PRE; i < PRE + LIVE; i += 100) {
		for (int k = 0; k < NFILES; k++) {
			char p[512];
			file_path(p, sizeof(p), k);
			if (i == PRE + LIVE / 2) { /* kubelet rotation: rename, new file */
				char r[600];
				snprintf(r, sizeof(r), "%s.20231114-221320", p);
				rename(p, r);
			}
			FILE *fp = fopen(p, "a");
			for (int j = i; j < i + 100; j++)
				write_record(fp, k, j);
			fclose(fp);
		}
		itest_sleep_ms(10);
	}
	return NULL;
}

/* ---- checks ---------------------------------------------------------------------------------------------- */

/* Entries the aggregator holds (index/stats reads them all: cheap at this size). */
static long stored(void)
{
	return itest_loki_entries(F->url, "{namespace=\"e2e\"}", T0 - 1000000000000LL, T0 + 100 * 1000000000000LL);
}

static void wait_stored(long n, int timeout_ms)
{
	int64_t deadline = itest_now_ms() + timeout_ms;
	while (stored() < n && itest_now_ms() < deadline)
		itest_sleep_ms(250);
	if (stored() < n) {
		itest_dump_log(&F->ship);
		fail_msg("only %ld of %ld entries stored", stored(), n);
	}
}

static void start_shipper(const char *crash_after)
{
	char self[512];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(n > 0);
	self[n] = 0;
	char *argv[] = {self, "--ship", F->root, F->db, F->url, (char *)crash_after, NULL};
	assert_int_equal(itest_spawn(&F->ship, F->dir, "shipper", argv), 0);
	assert_int_equal(itest_wait_log(&F->ship, "shipping", 10000), 0);
}

static void restart_aggregator(void)
{
	itest_stop(&F->agg, SIGKILL, 1000);
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url)), 0);
}

/* The record check: file k's records arrive in order, whole. */
typedef struct stream_check {
	int k, next;
} stream_check;

static void check_record(void *ctx, const char *line)
{
	stream_check *c = ctx;
	int k = c->k, fk = -1, r = -1;
	if (sscanf(line, "f%d r%d", &fk, &r) != 2 || fk != k || r != c->next)
		fail_msg("file %d: expected record %d, got '%.60s'", k, c->next, line);
	size_t want = r % LONG_EVERY ? 0 : (size_t)snprintf(NULL, 0, "f%d r%d ", k, r) + 3004;
	if (want && strlen(line) != want)
		fail_msg("file %d record %d: %zu bytes, want %zu (split?)", k, r, strlen(line), want);
	c->next++;
}

/* Reads one file's stdout records back through the Loki API and checks each. */
static void check_stream(int k, int records)
{
	char sel[160];
	snprintf(sel, sizeof(sel), "{pod=\"app-%d\"} |~ \"^f%d r\"", k, k);
	stream_check c = {k, 0};
	itest_loki_forward(F->url, sel, T0 - 1000000000000LL, T0 + 100 * 1000000000000LL, check_record, &c);
	if (c.next < records)
		fail_msg("file %d: records end at %d of %d", k, c.next, records);
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->data, sizeof(F->data), "%s/data", F->dir);
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	snprintf(F->root, sizeof(F->root), "%s/root", F->dir);
	snprintf(F->db, sizeof(F->db), "%s/positions.db", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	itest_stop(&F->ship, SIGKILL, 1000);
	int st = itest_stop(&F->agg, SIGTERM, 10000);
	itest_rmtree(F->dir);
	free(F);
	return st == 0 ? 0 : -1;
}

static void test_exactly_once(void **state)
{
	(void)state;
	write_pre();
	long per_file = PRE + LIVE + (PRE + LIVE + LONG_EVERY - 1) / LONG_EVERY; /* + the stderr records */
	long total = NFILES * per_file;
	start_shipper("40");
	assert_int_not_equal(itest_stop(&F->ship, 0, 60000), 0); /* it crashed after its 40th ack */
	long before = stored();
	assert_true(before > 0 && before < total / 5);
	start_shipper("0"); /* replays the batch it had not committed, with its seq */
	pthread_t w;
	pthread_create(&w, NULL, writer, NULL);
	wait_stored(total / 5, 60000);
	assert_true(stored() < total * 2 / 5); /* still shipping: the kill lands mid-stream */
	restart_aggregator();   /* SIGKILL 1 */
	wait_stored(total * 2 / 5, 60000);
	assert_true(stored() < total * 3 / 5);
	restart_aggregator();   /* SIGKILL 2 */
	wait_stored(total * 3 / 5, 60000);
	assert_true(stored() < total * 4 / 5);
	itest_stop(&F->ship, SIGKILL, 1000); /* the shipper dies between reads, pushes and commits */
	start_shipper("0");
	pthread_join(w, NULL);
	wait_stored(total, 120000);
	itest_sleep_ms(1000); /* anything extra would arrive now */
	assert_int_equal(stored(), total); /* nothing twice, nothing extra */
	for (int k = 0; k < NFILES; k++) /* every record, whole, in order */
		check_stream(k, PRE + LIVE);
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "--ship"))
		return ship(argv[2], argv[3], argv[4], atoi(argv[5]));
	const struct CMUnitTest tests[] = {cmocka_unit_test_setup_teardown(test_exactly_once, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
