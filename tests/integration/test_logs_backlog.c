/* test_logs_backlog.c -- a log backlog bigger than one read ships in back-to-back logs passes, exactly once.
 *
 * Issue 7, points 2 and 3. The tree holds NFILES CRI files of RECORDS records (about 24 MB of messages,
 * six times the agent's 4 MiB read per pass) before corral-agent starts with --interval 60s: its first
 * tick can read only 4 MiB, and the next tick is after the test's deadline, so every record arriving
 * within DEADLINE_MS proves the logs passes followed each other. The aggregator runs in a test cgroup
 * capped at THROTTLE_PCT % of a CPU, so the backlog takes seconds and the kills land in its middle: the
 * aggregator is killed with SIGKILL once it stored a sixth of the records and restarted (capped again);
 * once the new one stored a tenth more, the agent is killed, and the cap lifted. The restarted agent
 * must find batches it had staged but not seen acknowledged (the kill was mid-backlog; the aggregator
 * may have stored them, then it must not store them twice) and send them again under their seqs: at the
 * end /loki/api/v1/index/stats counts every record exactly once, and each file's records read back whole
 * and in order. (Before the agent kicked its sender after a logs pass that only re-queued such batches,
 * they waited for the next 60 s tick.)
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define TOKEN "logs-backlog-token"
#define NFILES 3
#define RECORDS 50000 /* per file, 160 message bytes each */
#define DEADLINE_MS 45000
#define THROTTLE_PCT 5
#define T0 1700000000000000000LL

typedef struct fixture {
	char dir[256], data[300], token[300], url[64], root[300], state[300], agent_url[96];
	itest_proc agg, agent;
	itest_cgtree cg; /* its child "agg" holds the aggregator */
} fixture;

static fixture *F;

/* Record i of file k: "f<k> r<i> " padded with a letter to 160 bytes, at T0 + i ms. */
static void write_file(int k)
{
	char p[600], dir[512], cmd[1400], link[800], pad[161];
	snprintf(dir, sizeof(dir), "%s/var/log/pods/backlog_app-%d_uid-%d/main", F->root, k, k);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s/var/log/containers'", dir, F->root);
	assert_int_equal(system(cmd), 0);
	snprintf(p, sizeof(p), "%s/0.log", dir);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	for (int i = 0; i < RECORDS; i++) {
		long long ts = T0 + (long long)i * 1000000;
		time_t sec = (time_t)(ts / 1000000000);
		struct tm tm;
		gmtime_r(&sec, &tm);
		int n = snprintf(pad, sizeof(pad), "f%d r%d ", k, i);
		memset(pad + n, 'a' + i % 26, 160 - (size_t)n);
		pad[160] = 0;
		fprintf(fp, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ stdout F %s\n", tm.tm_year + 1900, tm.tm_mon + 1,
			tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts % 1000000000, pad);
	}
	fclose(fp);
	snprintf(link, sizeof(link), "%s/var/log/containers/app-%d_backlog_main-%064d.log", F->root, k, k);
	assert_int_equal(symlink(p, link), 0);
}

static void start_agent(void)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096], health[128];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(F->agent_url, sizeof(F->agent_url), "http://%s", listen);
	char *argv[] = {bin, "--node", "backlog-node", "--aggregator", F->url, "--token-file", F->token, "--interval",
			"60s", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot, "--state-dir",
			F->state, "--log-root", F->root, NULL};
	assert_int_equal(itest_spawn(&F->agent, F->dir, "agent", argv), 0);
	snprintf(health, sizeof(health), "%s/healthz", F->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

/* Entries the aggregator holds (index/stats reads them all: a second or so at this size). */
static long stored(void)
{
	return itest_loki_entries(F->url, "{namespace=\"backlog\"}", T0 - 1000000000000LL, T0 + 1000000000000LL);
}

/* The aggregator's own counter of appended entries: cheap enough to poll. */
static long appended(void)
{
	char path[128];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(path, sizeof(path), "%s/metrics", F->url);
	long n = -1;
	if (itest_http("GET", path, NULL, NULL, 0, &b) == 200 && !cm_buf_append(&b, "", 1)) {
		const char *p = strstr((const char *)b.data, "\ncorral_log_entries_appended_total ");
		if (p)
			n = atol(p + strlen("\ncorral_log_entries_appended_total "));
	}
	cm_buf_close(&b);
	return n;
}

static void wait_appended(long n, int64_t deadline)
{
	while (appended() < n && itest_now_ms() < deadline)
		itest_sleep_ms(100);
}

/* Moves pid (0: none) into the test cgroup "agg" and caps its CPU at pct % of one CPU (0: no cap). */
static void throttle(int pid, int pct)
{
	int capped = 0;
	for (int i = 0; i < F->cg.nparents; i++) {
		char p[4200], v[64];
		FILE *fp;
		snprintf(p, sizeof(p), "%s/agg/cgroup.procs", F->cg.parent[i]);
		if (pid && (fp = fopen(p, "w")))
			fprintf(fp, "%d\n", pid), fclose(fp);
		snprintf(p, sizeof(p), "%s/agg/cpu.cfs_quota_us", F->cg.parent[i]); /* v1 */
		snprintf(v, sizeof(v), "%d\n", pct ? pct * 1000 : -1);
		if ((fp = fopen(p, "w")))
			capped += fputs(v, fp) >= 0, fclose(fp);
		snprintf(p, sizeof(p), "%s/agg/cpu.max", F->cg.parent[i]); /* v2 */
		snprintf(v, sizeof(v), pct ? "%d 100000\n" : "max 100000\n", pct * 1000);
		if ((fp = fopen(p, "w")))
			capped += fputs(v, fp) >= 0, fclose(fp);
	}
	assert_true(capped > 0);
}

typedef struct file_check {
	int k, next;
} file_check;

static void check_record(void *ctx, const char *line)
{
	file_check *c = ctx;
	int fk = -1, r = -1;
	if (sscanf(line, "f%d r%d ", &fk, &r) != 2 || fk != c->k || r != c->next)
		fail_msg("file %d: expected record %d, got '%.40s'", c->k, c->next, line);
	if (strlen(line) != 160 || line[159] != 'a' + r % 26)
		fail_msg("file %d record %d: %zu bytes (split or cut?)", c->k, r, strlen(line));
	c->next++;
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
	for (int k = 0; k < NFILES; k++)
		write_file(k);
	char name[64];
	snprintf(name, sizeof(name), "corral-backlog-%d", (int)getpid());
	if (itest_cgtree_make(&F->cg, F->dir, name) || itest_cgtree_child(&F->cg, "agg", 1))
		return -1;
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	int sa = itest_stop(&F->agent, SIGTERM, 10000);
	int st = itest_stop(&F->agg, SIGTERM, 10000);
	itest_cgtree_child(&F->cg, "agg", 0);
	itest_cgtree_remove(&F->cg);
	itest_rmtree(F->dir);
	free(F);
	return st == 0 && sa == 0 ? 0 : -1;
}

static void test_backlog_back_to_back_exactly_once(void **state)
{
	(void)state;
	long total = (long)NFILES * RECORDS;
	int64_t deadline = itest_now_ms() + DEADLINE_MS;
	throttle(F->agg.pid, THROTTLE_PCT);
	start_agent();
	wait_appended(total / 6, deadline); /* past the first read: the second logs pass is running */
	itest_stop(&F->agg, SIGKILL, 1000);
	itest_sleep_ms(300);
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url)), 0);
	throttle(F->agg.pid, THROTTLE_PCT);
	wait_appended(appended() + total / 10, deadline); /* its counter starts again, at what its WAL replayed */
	itest_stop(&F->agent, SIGKILL, 1000);
	throttle(0, 0);
	fprintf(stderr, "%ld of %ld records stored when the agent was killed\n", stored(), total);
	start_agent(); /* the in-flight and staged batches go again under their seqs: the kill was mid-backlog */
	assert_int_equal(itest_wait_log(&F->agent, "log batch staged before the restart", 10000), 0);
	long got;
	while ((got = stored()) < total && itest_now_ms() < deadline)
		itest_sleep_ms(500);
	if (got != total) {
		itest_dump_log(&F->agent);
		itest_dump_log(&F->agg);
		fail_msg("%ld of %ld records stored %d s after the agent started (interval 60 s)", got, total,
			 DEADLINE_MS / 1000);
	}
	itest_sleep_ms(1000); /* anything stored twice would arrive now */
	assert_int_equal(stored(), total);
	for (int k = 0; k < NFILES; k++) {
		char sel[128];
		snprintf(sel, sizeof(sel), "{pod=\"app-%d\", node=\"backlog-node\"}", k);
		file_check c = {k, 0};
		itest_loki_forward(F->url, sel, T0 - 1000000000LL, T0 + 1000000000000LL, check_record, &c);
		assert_int_equal(c.next, RECORDS);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_backlog_back_to_back_exactly_once, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
