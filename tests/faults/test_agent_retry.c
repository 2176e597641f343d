/* test_agent_retry.c -- the agent keeps batches while the aggregator is away and delivers them once,
 * in order, when it comes back; with a small --max-pending or --spool-max-bytes the oldest are dropped
 * and counted; with --state-dir the spool survives a SIGKILL of the agent and seqs continue.
 *
 * The agent runs on the fixture trees (tests/data/cgroup-v2, tests/data/proc) at a 200 ms interval,
 * so no root is needed. Delivery is read back from the aggregator's corral_agent_batch_seq series:
 * one sample per stored batch, whose values are the batch sequence numbers. The outage lasts 2 s, or
 * CORRAL_OUTAGE_MS (the 2-minute outage: CORRAL_OUTAGE_MS=120000, run by hand).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], token[300], data[320], state[320], url[128], agent_url[128];
	itest_proc agg, agent;
} fixture;

static int outage_ms(void)
{
	const char *e = getenv("CORRAL_OUTAGE_MS");
	return e && atoi(e) > 0 ? atoi(e) : 2000;
}

/* spool_bytes NULL: no --state-dir (memory only). The aggregator URL is picked once per test. */
static void start_agent(fixture *f, const char *max_pending, const char *spool_bytes)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	if (!f->url[0])
		snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", itest_port()); /* nobody listens yet */
	char *argv[] = {bin, "--node", "retry-node", "--aggregator", f->url, "--token-file", f->token, "--interval",
			"200ms", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot, "--max-pending",
			(char *)max_pending, spool_bytes ? "--state-dir" : NULL, f->state, "--spool-max-bytes",
			(char *)spool_bytes, NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
	char health[160];
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

/* Waits until the agent has nothing pending and sent at least min batches. */
static void wait_drained(fixture *f, double min_sent)
{
	for (int waited = 0; waited < 20000 + outage_ms() / 2; waited += 100) {
		if (itest_metric(f->agent_url, "corral_agent_pending_batches") == 0 &&
		    itest_metric(f->agent_url, "corral_agent_batches_sent_total") >= min_sent)
			return;
		itest_sleep_ms(100);
	}
	itest_dump_log(&f->agent);
	fail_msg("the agent did not deliver its pending batches");
}

static void outage(fixture *f, const char *max_pending, const char *spool_bytes, double *made)
{
	start_agent(f, max_pending, spool_bytes);
	itest_sleep_ms(outage_ms()); /* about five batches a second pile up */
	*made = itest_metric(f->agent_url, "corral_agent_collections_total");
	assert_true(*made >= 5);
	assert_true(itest_metric(f->agent_url, "corral_agent_send_failures_total") >= 1);
	assert_int_equal(itest_metric(f->agent_url, "corral_agent_batches_sent_total"), 0);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
}

static void outage_delivers(fixture *f, const char *spool_bytes)
{
	int64_t t0 = itest_now_ms();
	double made, seqs[8192];
	outage(f, "4000", spool_bytes, &made);
	wait_drained(f, made);
	int n = itest_batch_seqs(f->url, t0, itest_now_ms(), seqs, CM_ARRAY_LEN(seqs));
	assert_true(n >= made);
	print_message("outage of %d ms: %.0f batches made, %d stored, first seq %.0f, last %.0f\n", outage_ms(), made, n,
		      n ? seqs[0] : 0, n ? seqs[n - 1] : 0);
	for (int i = 1; i < n; i++)
		assert_true(seqs[i] == seqs[i - 1] + 1); /* every batch, once, in order */
	assert_int_equal(itest_metric(f->agent_url, "corral_agent_batches_dropped_total"), 0);
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_outage_delivers_everything_once_in_order(void **state) { outage_delivers(*state, NULL); }

static void test_spool_outage_delivers_everything_once_in_order(void **state)
{
	outage_delivers(*state, "256Mi");
}

static void small_bound_drops_oldest(fixture *f, const char *max_pending, const char *spool_bytes)
{
	int64_t t0 = itest_now_ms();
	double made, seqs[8192];
	outage(f, max_pending, spool_bytes, &made);
	wait_drained(f, 2);
	double dropped = itest_metric(f->agent_url, "corral_agent_batches_dropped_total");
	assert_true(dropped >= made - 3); /* all but the newest two (one may be in flight) */
	int n = itest_batch_seqs(f->url, t0, itest_now_ms(), seqs, CM_ARRAY_LEN(seqs));
	assert_true(n >= 2);
	for (int i = 1; i < n; i++)
		assert_true(seqs[i] > seqs[i - 1]); /* still in order, only the oldest are missing */
	assert_true(n + dropped >= made); /* every batch of the outage was delivered or counted as dropped */
	print_message("small bound: %.0f batches made, %.0f dropped, %d stored\n", made, dropped, n);
	if (spool_bytes)
		assert_true(itest_metric(f->agent_url, "corral_agent_spool_dropped_bytes_total") > 0);
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_small_queue_drops_oldest(void **state) { small_bound_drops_oldest(*state, "2", NULL); }

/* A spool bound of 1 byte keeps only the newest batch (and the one being sent). */
static void test_small_spool_drops_oldest(void **state) { small_bound_drops_oldest(*state, "4000", "1"); }

/* Spooled batches, and how many of them have a seq at or below upto (files are named <seq>.batch). */
static size_t spool_files_upto(fixture *f, double upto, size_t *at_or_below)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/spool", f->state);
	DIR *d = opendir(path);
	assert_non_null(d);
	size_t n = 0, below = 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (!strstr(de->d_name, ".batch"))
			continue;
		n++;
		below += strtod(de->d_name, NULL) <= upto;
	}
	closedir(d);
	if (at_or_below)
		*at_or_below = below;
	return n;
}

static size_t spool_files(fixture *f) { return spool_files_upto(f, 0, NULL); }

/* Every batch the aggregator stored (seq <= last) leaves the spool; the agent keeps collecting, so
 * newer batches may be there, and the one just acknowledged may take a moment to be deleted. */
static void expect_acked_deleted(fixture *f, double last)
{
	size_t below = 1;
	for (int waited = 0; waited < 3000 && below; waited += 50) {
		spool_files_upto(f, last, &below);
		if (below)
			itest_sleep_ms(50);
	}
	assert_int_equal(below, 0);
}

/* SIGKILL mid-outage: what the first run spooled is delivered after the restart, before the second
 * run's batches, and the second run's seqs continue above the first's. */
static void test_spool_survives_sigkill(void **state)
{
	fixture *f = *state;
	int64_t t0 = itest_now_ms();
	double seqs[8192];
	start_agent(f, "4000", "256Mi");
	itest_sleep_ms(outage_ms() / 2);
	double made1 = itest_metric(f->agent_url, "corral_agent_collections_total");
	double next1 = itest_metric(f->agent_url, "corral_agent_next_seq");
	itest_stop(&f->agent, SIGKILL, 1000);
	size_t spooled = spool_files(f);
	assert_true(spooled >= made1 && made1 >= 3);
	start_agent(f, "4000", "256Mi");
	assert_true(itest_metric(f->agent_url, "corral_agent_next_seq") > next1 - 1);
	itest_sleep_ms(outage_ms() / 2);
	double made2 = itest_metric(f->agent_url, "corral_agent_collections_total");
	assert_true(itest_metric(f->agent_url, "corral_agent_pending_batches") >= spooled);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	wait_drained(f, made2 + spooled);
	int n = itest_batch_seqs(f->url, t0, itest_now_ms(), seqs, CM_ARRAY_LEN(seqs));
	assert_true(n >= made2 + spooled);
	int jumps = 0;
	for (int i = 1; i < n; i++) {
		assert_true(seqs[i] > seqs[i - 1]);
		jumps += seqs[i] != seqs[i - 1] + 1;
	}
	assert_int_equal(jumps, 1); /* consecutive within each run; the restart continues above */
	print_message("SIGKILL: %zu spooled by the first run, %.0f made by the second, %d stored in order\n", spooled,
		      made2, n);
	expect_acked_deleted(f, seqs[n - 1]); /* acknowledged batches are deleted */
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/agg", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	itest_write_file(f->token, "retry-token\n");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	itest_stop(&f->agent, SIGKILL, 1000);
	int st = itest_aggregator_stop(&f->agg);
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_outage_delivers_everything_once_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_queue_drops_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_outage_delivers_everything_once_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_spool_drops_oldest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_survives_sigkill, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
