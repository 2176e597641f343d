/* test_cgroup_churn.c -- thousands of cgroups come and go under a running agent.
 *
 * Issue 11, faults. The agent's --cgroup-root is a subtree of real test cgroups (itest_cgtree, below
 * this process's own cgroup) and it collects every 200 ms. ROUNDS times, this test makes PER_ROUND
 * cgroups and removes the previous round's, ROUND_MS apart (ROUNDS * PER_ROUND = 2,000 cgroups made and
 * removed), then removes the last round. Checked: the agent stays up and keeps collecting; its RSS
 * after the churn is within RSS_GROWTH_KIB of its RSS after the first round (nothing per cgroup is
 * kept once it is gone) and below RSS_MAX_KIB; at the end only the subtree's root cgroup has a live
 * series at the aggregator (every removed cgroup's series was ended by a stale marker); and a cgroup
 * made after the churn is seen within one interval plus the push. Needs root; skips otherwise.
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
#include <unistd.h>

#include "itest.h"

#define ROUNDS         10
#define PER_ROUND      200
#define ROUND_MS       400
#define RSS_MAX_KIB    (64 * 1024)
#define RSS_GROWTH_KIB (8 * 1024)

typedef struct fixture {
	char dir[256], token[300], data[320], url[128], agent_url[128], name[64];
	itest_cgtree cg;
	int made;
	const char *broken; /* what setup could not do */
	itest_proc agg, agent;
} fixture;

/* Live series of container_memory_usage_bytes from the agent's node, and whether id is among them. */
static int live_series(fixture *f, const char *id, int *has_id)
{
	char url[512];
	snprintf(url, sizeof(url), "%s/api/v1/query?query=container_memory_usage_bytes%%7Bnode%%3D%%22churn-node%%22%%7D",
	         f->url);
	long st = 0;
	json_t *j = itest_get_json(url, &st), *r = json_object_get(json_object_get(j, "data"), "result"), *s;
	assert_int_equal(st, 200);
	size_t i;
	*has_id = 0;
	json_array_foreach(r, i, s)
	{
		const char *sid = json_string_value(json_object_get(json_object_get(s, "metric"), "id"));
		*has_id |= sid && id && !strcmp(sid, id);
	}
	int n = (int)json_array_size(r);
	json_decref(j);
	return n;
}

static void churn_round(fixture *f, int round, int mk)
{
	for (int i = 0; i < PER_ROUND; i++) {
		char child[64];
		snprintf(child, sizeof(child), "r%d-c%d", round, i);
		assert_int_equal(itest_cgtree_child(&f->cg, child, mk), 0);
		f->made += mk ? 1 : -1;
	}
}

static void test_churn(void **state)
{
	fixture *f = *state;
	if (f->broken)
		fail_msg("setup: %s", f->broken);
	if (!f->cg.nparents)
		skip();
	long rss_first = 0, rss_peak = 0;
	for (int r = 0; r < ROUNDS; r++) {
		churn_round(f, r, 1);
		if (r > 0)
			churn_round(f, r - 1, 0);
		itest_sleep_ms(ROUND_MS);
		long k = itest_rss_kib(f->agent.pid);
		rss_peak = k > rss_peak ? k : rss_peak;
		if (r == 0)
			rss_first = k;
	}
	churn_round(f, ROUNDS - 1, 0);
	double passes = itest_metric(f->agent_url, "corral_agent_collections_total");
	itest_sleep_ms(1500);
	assert_true(itest_metric(f->agent_url, "corral_agent_collections_total") > passes); /* still collecting */
	long rss_end = itest_rss_kib(f->agent.pid);
	print_message("%d cgroups made and removed; agent RSS after round 1 %ld KiB, peak %ld KiB, end %ld KiB\n",
	              ROUNDS * PER_ROUND, rss_first, rss_peak, rss_end);
	if (!itest_sanitized()) { /* ASan's quarantine holds freed memory: its RSS says nothing about ours */
		assert_true(rss_peak < RSS_MAX_KIB);
		assert_true(rss_end < rss_first + RSS_GROWTH_KIB);
	}

	int has = 0, n = live_series(f, "/", &has);
	print_message("live container_memory_usage_bytes series after the churn: %d\n", n);
	assert_true(has);
	assert_int_equal(n, 1);

	/* discovery still works */
	assert_int_equal(itest_cgtree_child(&f->cg, "after", 1), 0);
	f->made++;
	int64_t t0 = itest_now_ms();
	while (live_series(f, "/after", &has) < 2 || !has) {
		assert_true(itest_now_ms() - t0 < 3000);
		itest_sleep_ms(50);
	}
	print_message("a cgroup made after the churn was live at the aggregator after %lld ms\n",
	              (long long)(itest_now_ms() - t0));
	assert_int_equal(itest_cgtree_child(&f->cg, "after", 0), 0);
	f->made--;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	*state = f;
	itest_mkdtemp(f->dir, sizeof(f->dir));
	if (geteuid() != 0) {
		print_message("needs root for real cgroups: skipped\n");
		return 0;
	}
	snprintf(f->name, sizeof(f->name), "corral-churn-%d", (int)getpid());
	if (itest_cgtree_make(&f->cg, f->dir, f->name))
		return f->broken = "cannot make the test cgroups", 0;
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	itest_write_file(f->token, "churn-token\n");
	if (itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)))
		return f->broken = "the aggregator did not start", 0;
	char bin[4096], listen[64], health[160];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	char *argv[] = {bin,      "--node",     "churn-node", "--aggregator", f->url,      "--token-file",
	                f->token, "--interval", "200ms",      "--listen",     listen,      "--cgroup-root",
	                f->cg.root, NULL};
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	if (itest_spawn(&f->agent, f->dir, "agent", argv) || itest_wait_http(health, 10000))
		f->broken = "the agent did not start";
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	int bad = 0;
	if (f->agent.pid > 0 && itest_stop(&f->agent, SIGTERM, 10000)) {
		itest_dump_log(&f->agent);
		bad = 1;
	}
	if (f->agg.pid > 0 && itest_aggregator_stop(&f->agg))
		bad = 1;
	if (f->made) /* a failed check left some: remove whatever is there */
		for (int r = 0; r < ROUNDS; r++)
			for (int i = 0; i < PER_ROUND; i++) {
				char cmd[5000];
				for (int p = 0; p < f->cg.nparents; p++) {
					snprintf(cmd, sizeof(cmd), "%s/r%d-c%d", f->cg.parent[p], r, i);
					rmdir(cmd);
				}
			}
	if (f->cg.nparents) {
		for (int p = 0; p < f->cg.nparents; p++) {
			char after[4200];
			snprintf(after, sizeof(after), "%s/after", f->cg.parent[p]);
			rmdir(after);
		}
		itest_cgtree_remove(&f->cg);
	}
	itest_rmtree(f->dir);
	free(f);
	return bad;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_churn, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
