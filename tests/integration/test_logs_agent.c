/* test_logs_agent.c -- container logs through the real agent and aggregator, every line exactly once.
 *
 * The test makes a CRI log tree (var/log/pods/<ns>_<pod>_<uid>/<ctr>/0.log with its
 * var/log/containers/<pod>_<ns>_<ctr>-<id>.log symlink), runs corral-agent with --log-root on it,
 * --state-dir and a 300 ms interval (metrics from the fixture trees tests/data/cgroup-v2 and
 * tests/data/proc), and corral-aggregator. Lines are appended while the agent runs, every LONG_EVERY-th
 * record is 3,000 bytes in P pieces and an F with another stream's record between them, and each file is
 * rotated once the kubelet way (rename, new 0.log). The aggregator is killed with SIGKILL mid-stream and
 * restarted, then the agent is (its staged batches are replayed under their seqs). At the end
 * /loki/api/v1/query_range holds every record once, whole, in order per file, and nothing else.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define TOKEN "logs-agent-token"
#define NFILES 3
#define PRE 2000     /* records per file written before the agent starts */
#define LIVE 3000    /* records per file appended while it runs, 30 per 100 ms, one rotation halfway */
#define CHUNK 30
#define LONG_EVERY 50
#define T0 1700000000000000000LL

typedef struct fixture {
	char dir[256], data[300], token[300], url[64], root[300], state[300];
	itest_proc agg, agent;
} fixture;

static fixture *F;

/* ---- the tree and its writer --------------------------------------------------------------------------- */

static void file_path(char *out, size_t cap, int k)
{
	snprintf(out, cap, "%s/var/log/pods/e2e_app-%d_uid-%d/main/0.log", F->root, k, k);
}

/* Record i of file k: "f<k> r<i> ..." at T0 + k * 1000 s + i ms; every LONG_EVERY-th one is 3,000 bytes
 * in two P pieces and an F, with a stderr record between its pieces. */
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
	fprintf(fp, "%s stderr F interleaved f%d r%d\n", t, k, i);
	fprintf(fp, "%s stdout F %s end\n", t, piece);
}

static void write_pre(void)
{
	char cmd[1400], p[512], dir[512], link[700];
	for (int k = 0; k < NFILES; k++) {
		file_path(p, sizeof(p), k);
		snprintf(dir, sizeof(dir), "%s", p);
		*strrchr(dir, '/') = 0;
		snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s/var/log/containers'", dir, F->root);
		assert_int_equal(system(cmd), 0);
		FILE *fp = fopen(p, "w");
		assert_non_null(fp);
		for (int i = 0; i < PRE; i++)
			write_record(fp, k, i);
		fclose(fp);
		snprintf(link, sizeof(link), "%s/var/log/containers/app-%d_e2e_main-%064d.log", F->root, k, k);
		assert_int_equal(symlink(p, link), 0);
	}
}

static void *writer(void *arg)
{
	(void)arg;
	for (int i = PRE; i < PRE + LIVE; i += CHUNK) {
		for (int k = 0; k < NFILES; k++) {
			char p[512];
			file_path(p, sizeof(p), k);
			if (i == PRE + LIVE / 2) { /* kubelet rotation: rename, new file */
				char r[600];
				snprintf(r, sizeof(r), "%s.20231114-221320", p);
				rename(p, r);
			}
			FILE *fp = fopen(p, "a");
			for (int j = i; j < i + CHUNK; j++)
				write_record(fp, k, j);
			fclose(fp);
		}
		itest_sleep_ms(100);
	}
	return NULL;
}

/* ---- the daemons ----------------------------------------------------------------------------------------- */

static void start_agent(void)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096], health[128];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	char *argv[] = {bin, "--node", "logs-node", "--aggregator", F->url, "--token-file", F->token, "--interval",
			"300ms", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot, "--state-dir",
			F->state, "--log-root", F->root, NULL};
	assert_int_equal(itest_spawn(&F->agent, F->dir, "agent", argv), 0);
	snprintf(health, sizeof(health), "http://%s/healthz", listen);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

static void restart_aggregator(void)
{
	itest_stop(&F->agg, SIGKILL, 1000);
	itest_sleep_ms(600); /* the agent's pushes fail meanwhile: its spool keeps them */
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url)), 0);
}

/* ---- checks ---------------------------------------------------------------------------------------------- */

/* Entries the aggregator holds for the tree (index/stats reads them all: cheap at this size). */
static long stored(void)
{
	return itest_loki_entries(F->url, "{namespace=\"e2e\"}", T0 - 1000000000000LL, T0 + 100 * 1000000000000LL);
}

static void wait_stored(long n, int timeout_ms)
{
	int64_t deadline = itest_now_ms() + timeout_ms;
	while (stored() < n && itest_now_ms() < deadline)
		itest_sleep_ms(100);
	if (stored() < n) {
		itest_dump_log(&F->agent);
		itest_dump_log(&F->agg);
		fail_msg("only %ld of %ld entries stored", stored(), n);
	}
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
	size_t want = r % LONG_EVERY ? (size_t)snprintf(NULL, 0, "f%d r%d payload-%d", k, r, r * 7)
				     : (size_t)snprintf(NULL, 0, "f%d r%d ", k, r) + 3004;
	if (strlen(line) != want)
		fail_msg("file %d record %d: %zu bytes, want %zu (split or cut?)", k, r, strlen(line), want);
	c->next++;
}

/* Reads one file's stdout records back through the Loki API and checks each. */
static void check_stream(int k, int records)
{
	char sel[160];
	snprintf(sel, sizeof(sel), "{pod=\"app-%d\", stream=\"stdout\", node=\"logs-node\"}", k);
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
	snprintf(F->state, sizeof(F->state), "%s/state", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	int sa = itest_stop(&F->agent, SIGTERM, 10000);
	int st = itest_stop(&F->agg, SIGTERM, 10000);
	itest_rmtree(F->dir);
	free(F);
	return st == 0 && sa == 0 ? 0 : -1;
}

static void test_agent_logs_exactly_once(void **state)
{
	(void)state;
	long per_file = PRE + LIVE + (PRE + LIVE + LONG_EVERY - 1) / LONG_EVERY; /* + the stderr records */
	long total = NFILES * per_file, pre = NFILES * (PRE + PRE / LONG_EVERY);
	write_pre();
	start_agent();
	pthread_t w;
	pthread_create(&w, NULL, writer, NULL);
	wait_stored(pre, 30000);
	assert_true(stored() < total); /* still shipping: the kills land mid-stream */
	restart_aggregator(); /* SIGKILL 1 */
	wait_stored(stored() + 200, 30000);
	assert_true(stored() < total);
	/* SIGKILL 2 while the aggregator is frozen: the agent's newest batches are staged and unacknowledged,
	 * so its restart must replay them (with nothing in flight the kill would test nothing) */
	kill(F->agg.pid, SIGSTOP);
	itest_sleep_ms(700);
	itest_stop(&F->agent, SIGKILL, 1000);
	kill(F->agg.pid, SIGCONT);
	start_agent();
	assert_int_equal(itest_wait_log(&F->agent, "log batch staged before the restart", 5000), 0);
	pthread_join(w, NULL);
	wait_stored(total, 60000);
	itest_sleep_ms(1500); /* anything extra would arrive now (five agent passes) */
	assert_int_equal(stored(), total); /* nothing twice, nothing extra */
	for (int k = 0; k < NFILES; k++) /* every record, whole, in order */
		check_stream(k, PRE + LIVE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_agent_logs_exactly_once, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
