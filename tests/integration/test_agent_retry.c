/* test_agent_retry.c -- the agent keeps batches while the aggregator is away and delivers them once,
 * in order, when it comes back; with a small --max-pending the oldest are dropped and counted.
 *
 * The agent runs on the fixture trees (tests/data/cgroup-v2, tests/data/proc) at a 200 ms interval,
 * so no root is needed. Delivery is read back from the aggregator's corral_agent_batch_seq series:
 * one sample per stored batch, whose values are the batch sequence numbers.
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
#include <sys/wait.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], token[300], data[320], url[128], agent_url[128];
	itest_proc agg, agent;
} fixture;

static void start_agent(fixture *f, const char *max_pending)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d", itest_port()); /* nobody listens yet */
	char *argv[] = {bin, "--node", "retry-node", "--aggregator", f->url, "--token-file", f->token, "--interval",
			"200ms", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot, "--max-pending",
			(char *)max_pending, NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
	char health[160];
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

/* A counter or gauge from the agent's /metrics. */
static double agent_metric(fixture *f, const char *name)
{
	char url[160], needle[128];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(url, sizeof(url), "%s/metrics", f->agent_url);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, &b), 200);
	snprintf(needle, sizeof(needle), "\n%s ", name);
	const char *p = strstr((char *)b.data, needle);
	assert_non_null(p);
	double v = strtod(p + strlen(needle), NULL);
	cm_buf_close(&b);
	return v;
}

/* The distinct sequence numbers stored, in time order (the range query repeats a value until the
 * next sample, so runs of one value are one batch). */
static int stored_seqs(fixture *f, int64_t since, double *out, int cap)
{
	char url[512];
	int64_t now = itest_now_ms();
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=corral_agent_batch_seq&start=%.3f&end=%.3f&step=0.001",
		 f->url, since / 1000.0, now / 1000.0);
	long status;
	json_t *j = itest_get_json(url, &status);
	assert_int_equal(status, 200);
	json_t *res = json_object_get(json_object_get(j, "data"), "result");
	assert_int_equal(json_array_size(res), 1);
	json_t *pt;
	size_t i;
	int n = 0;
	json_array_foreach(json_object_get(json_array_get(res, 0), "values"), i, pt)
	{
		double v = strtod(json_string_value(json_array_get(pt, 1)), NULL);
		if ((!n || v != out[n - 1]) && n < cap)
			out[n++] = v;
	}
	json_decref(j);
	return n;
}

/* Waits until the agent has nothing pending and sent at least min batches. */
static void wait_drained(fixture *f, double min_sent)
{
	for (int waited = 0; waited < 20000; waited += 100) {
		if (agent_metric(f, "corral_agent_pending_batches") == 0 &&
		    agent_metric(f, "corral_agent_batches_sent_total") >= min_sent)
			return;
		itest_sleep_ms(100);
	}
	itest_dump_log(&f->agent);
	fail_msg("the agent did not deliver its pending batches");
}

static void outage(fixture *f, const char *max_pending, double *made)
{
	start_agent(f, max_pending);
	itest_sleep_ms(2000); /* about ten batches pile up */
	*made = agent_metric(f, "corral_agent_collections_total");
	assert_true(*made >= 5);
	assert_true(agent_metric(f, "corral_agent_send_failures_total") >= 1);
	assert_int_equal(agent_metric(f, "corral_agent_batches_sent_total"), 0);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
}

static void test_outage_delivers_everything_once_in_order(void **state)
{
	fixture *f = *state;
	int64_t t0 = itest_now_ms();
	double made, seqs[4096];
	outage(f, "360", &made);
	wait_drained(f, made);
	int n = stored_seqs(f, t0, seqs, 4096);
	assert_true(n >= made);
	for (int i = 1; i < n; i++)
		assert_true(seqs[i] == seqs[i - 1] + 1); /* every batch, once, in order */
	assert_int_equal(agent_metric(f, "corral_agent_batches_dropped_total"), 0);
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_small_queue_drops_oldest(void **state)
{
	fixture *f = *state;
	int64_t t0 = itest_now_ms();
	double made, seqs[4096];
	outage(f, "2", &made);
	wait_drained(f, 2);
	double dropped = agent_metric(f, "corral_agent_batches_dropped_total");
	assert_true(dropped >= made - 3); /* all but the newest two (one may be in flight) */
	int n = stored_seqs(f, t0, seqs, 4096);
	assert_true(n >= 2);
	for (int i = 1; i < n; i++)
		assert_true(seqs[i] > seqs[i - 1]); /* still in order, only the oldest are missing */
	assert_true(n + dropped >= made); /* every batch of the outage was delivered or counted as dropped */
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/agg", f->dir);
	itest_write_file(f->token, "retry-token\n");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	itest_stop(&f->agent, SIGKILL, 1000);
	int st = itest_stop(&f->agg, SIGTERM, 10000);
	if (st)
		itest_dump_log(&f->agg);
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_outage_delivers_everything_once_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_queue_drops_oldest, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
