/* test_agg_outage.c -- the aggregator is away for ten minutes' worth of batches, then slow.
 *
 * Issue 11, faults. The agent reads the fixture trees (no root) every 200 ms with --state-dir and tails
 * one CRI log file that this test appends LINES_PER_S lines a second to. Then:
 *   - outage: the aggregator is stopped (SIGTERM) for OUTAGE_BATCHES passes, the number of batches a
 *     10-minute outage makes at the agent's default 10 s interval, and the log file is rotated the
 *     kubelet way (rename, new 0.log) in the middle of it;
 *   - slow: the aggregator is restarted and then frozen with SIGSTOP for FREEZE_MS, SLOW_CYCLES times,
 *     so the agent's pushes hang mid-request (back-pressure: one batch in flight, the rest spooled).
 * Checked at the end: every batch is stored exactly once (the corral_agent_batch_seq values are
 * consecutive), every log line exactly once and in order, the agent drained its spool, and its RSS stayed
 * below RSS_MAX_KIB throughout (sampled every 100 ms from /proc; not under ASan, whose quarantine
 * holds freed memory).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define OUTAGE_BATCHES 60  /* 10 min at the default --interval 10s */
#define INTERVAL_MS    200
#define LINES_PER_S    100
#define FREEZE_MS      2000
#define SLOW_CYCLES    3
#define RSS_MAX_KIB    (64 * 1024)

typedef struct fixture {
	char dir[256], token[300], data[320], state[320], root[320], log[512], url[128], agent_url[128];
	itest_proc agg, agent;
	pthread_t writer, sampler;
	atomic_int stop;
	atomic_int lines;   /* written so far */
	atomic_long rss_max; /* KiB */
} fixture;

/* ---- the log writer and the RSS sampler -------------------------------------------------------------- */

static void cri_line(FILE *fp, int i)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(fp, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ stdout F line %d\n", tm.tm_year + 1900, tm.tm_mon + 1,
	        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec, i);
}

static void *writer_main(void *arg)
{
	fixture *f = arg;
	while (!atomic_load(&f->stop)) {
		FILE *fp = fopen(f->log, "a");
		if (!fp)
			break;
		int i = atomic_load(&f->lines);
		for (int k = 0; k < LINES_PER_S / 10; k++)
			cri_line(fp, i + k);
		fclose(fp);
		atomic_store(&f->lines, i + LINES_PER_S / 10);
		itest_sleep_ms(100);
	}
	return NULL;
}

static void *sampler_main(void *arg)
{
	fixture *f = arg;
	while (!atomic_load(&f->stop)) {
		long k = f->agent.pid > 0 ? itest_rss_kib(f->agent.pid) : 0;
		if (k > atomic_load(&f->rss_max))
			atomic_store(&f->rss_max, k);
		itest_sleep_ms(100);
	}
	return NULL;
}

/* ---- the daemons ---------------------------------------------------------------------------------------- */

static void start_agent(fixture *f)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096], health[160], ival[16];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	snprintf(ival, sizeof(ival), "%dms", INTERVAL_MS);
	char *argv[] = {bin,         "--node",      "outage-node", "--aggregator", f->url,   "--token-file",
	                f->token,    "--interval",  ival,          "--listen",     listen,   "--cgroup-root",
	                cgroot,      "--proc-root", procroot,      "--state-dir",  f->state, "--log-root",
	                f->root,     NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

/* ---- checks --------------------------------------------------------------------------------------------- */

typedef struct line_check {
	int next, bad;
	char first_bad[128];
} line_check;

static void check_line(void *ctx, const char *line)
{
	line_check *c = ctx;
	int i = -1;
	if (sscanf(line, "line %d", &i) != 1 || i != c->next) {
		if (!c->bad++)
			snprintf(c->first_bad, sizeof(c->first_bad), "expected line %d, got '%.60s'", c->next, line);
		if (i >= 0)
			c->next = i;
	}
	c->next++;
}

static void test_outage_then_slow(void **state)
{
	fixture *f = *state;
	int64_t t0 = itest_now_ms();
	start_agent(f);
	pthread_create(&f->writer, NULL, writer_main, f);
	pthread_create(&f->sampler, NULL, sampler_main, f);
	itest_sleep_ms(1000);

	/* outage: OUTAGE_BATCHES passes with nobody listening, a rotation halfway */
	double made0 = itest_metric(f->agent_url, "corral_agent_collections_total");
	assert_int_equal(itest_aggregator_stop(&f->agg), 0);
	itest_sleep_ms(OUTAGE_BATCHES * INTERVAL_MS / 2);
	char rotated[600];
	snprintf(rotated, sizeof(rotated), "%s.20261126-120000", f->log);
	assert_int_equal(rename(f->log, rotated), 0);
	itest_sleep_ms(OUTAGE_BATCHES * INTERVAL_MS / 2);
	double made = itest_metric(f->agent_url, "corral_agent_collections_total") - made0;
	double pending = itest_metric(f->agent_url, "corral_agent_pending_batches");
	print_message("outage: %.0f batches made, %.0f pending in the spool\n", made, pending);
	assert_true(made >= OUTAGE_BATCHES - 2);
	assert_true(pending >= OUTAGE_BATCHES - 2);

	/* back, then slow: frozen mid-request a few times */
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	for (int c = 0; c < SLOW_CYCLES; c++) {
		itest_sleep_ms(500);
		kill(f->agg.pid, SIGSTOP);
		itest_sleep_ms(FREEZE_MS);
		kill(f->agg.pid, SIGCONT);
	}
	atomic_store(&f->stop, 1);
	pthread_join(f->writer, NULL);
	pthread_join(f->sampler, NULL);
	int lines = atomic_load(&f->lines);

	/* drained: nothing pending, every line stored */
	int64_t end = itest_now_ms() + 30000;
	while (itest_metric(f->agent_url, "corral_agent_pending_batches") != 0 && itest_now_ms() < end)
		itest_sleep_ms(200);
	assert_int_equal(itest_metric(f->agent_url, "corral_agent_pending_batches"), 0);
	itest_sleep_ms(2 * INTERVAL_MS + 300); /* the passes that read the last lines */
	int64_t t1 = itest_now_ms();
	line_check c = {0};
	long long ns0 = (t0 - 60000) * 1000000LL, ns1 = (t1 + 60000) * 1000000LL;
	for (int64_t until = itest_now_ms() + 15000; c.next < lines && itest_now_ms() < until; itest_sleep_ms(300)) {
		c = (line_check){0};
		itest_loki_forward(f->url, "{node=\"outage-node\"}", ns0, ns1, check_line, &c);
	}
	print_message("%d log lines written, %d read back, %d out of place; agent RSS peak %ld KiB\n", lines, c.next,
	              c.bad, atomic_load(&f->rss_max));
	if (c.bad)
		fail_msg("log lines: %s", c.first_bad);
	assert_int_equal(c.next, lines);
	assert_true(atomic_load(&f->rss_max) > 0);
	if (!itest_sanitized())
		assert_true(atomic_load(&f->rss_max) < RSS_MAX_KIB);

	static double seqs[4096];
	int n = itest_batch_seqs(f->url, t0, itest_now_ms(), seqs, 4096);
	double sent = itest_metric(f->agent_url, "corral_agent_batches_sent_total");
	print_message("%d batches stored (agent sent %.0f), seq %.0f .. %.0f\n", n, sent, n ? seqs[0] : 0,
	              n ? seqs[n - 1] : 0);
	assert_true(n >= OUTAGE_BATCHES);
	for (int i = 1; i < n; i++)
		if (seqs[i] != seqs[i - 1] + 1)
			fail_msg("batch seq %.0f follows %.0f: lost or stored twice", seqs[i], seqs[i - 1]);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	*state = f;
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	snprintf(f->root, sizeof(f->root), "%s/root", f->dir);
	itest_write_file(f->token, "outage-token\n");
	char cmd[1400], link[900];
	snprintf(f->log, sizeof(f->log), "%s/var/log/pods/faults_app_uid-1/main/0.log", f->root);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s/var/log/pods/faults_app_uid-1/main' '%s/var/log/containers'", f->root,
	         f->root);
	assert_int_equal(system(cmd), 0);
	itest_write_file(f->log, "");
	snprintf(link, sizeof(link), "%s/var/log/containers/app_faults_main-%064d.log", f->root, 1);
	assert_int_equal(symlink(f->log, link), 0);
	return itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	int bad = 0;
	if (!atomic_load(&f->stop)) { /* a failed check left the threads running */
		atomic_store(&f->stop, 1);
		if (f->writer)
			pthread_join(f->writer, NULL);
		if (f->sampler)
			pthread_join(f->sampler, NULL);
	}
	if (f->agg.pid > 0)
		kill(f->agg.pid, SIGCONT);
	if (f->agent.pid > 0 && itest_stop(&f->agent, SIGTERM, 10000)) {
		itest_dump_log(&f->agent);
		bad = 1;
	}
	if (f->agg.pid > 0 && itest_aggregator_stop(&f->agg))
		bad = 1;
	itest_rmtree(f->dir);
	free(f);
	return bad;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_outage_then_slow, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
