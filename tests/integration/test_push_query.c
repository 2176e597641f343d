/* test_push_query.c -- the whole path on real cgroups: a workload burning CPU in a test cgroup, the
 * agent collecting it, the aggregator storing it, the Prometheus API and corralctl answering with
 * increasing CPU samples.
 *
 * Runs once on the host's cgroup hierarchy as the agent autodetects it (v1 here, v2 elsewhere) and
 * once on a cgroup v2 mount at /sys/fs/cgroup/unified when the host has one (hybrid hosts). The test
 * cgroups are created below this process's own cgroup by tests/corral-load, which removes them on
 * SIGTERM; the test checks that they are gone. Needs root; skips otherwise.
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
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>

#include "itest.h"

typedef struct stack {
	char dir[256], token[300], url[128], agent_url[128];
	itest_proc agg, agent;
	itest_load load;
	char cg_id[4096], mem_id[4096];
} stack;

static void start_aggregator(stack *s)
{
	char data[320];
	snprintf(data, sizeof(data), "%s/agg", s->dir);
	if (itest_aggregator_start(&s->agg, s->dir, data, s->token, NULL, s->url, sizeof(s->url)))
		fail_msg("aggregator did not come up");
}

/* Starts corral-load in a new cgroup under root; picks the ids to query: the memory hierarchy's (v1) and the
 * first other one (cpuacct, or the v2 cgroup). */
static void start_load(stack *s, const char *root)
{
	char bin[4096], name[64];
	itest_bin(bin, sizeof(bin), "tests/corral-load");
	snprintf(name, sizeof(name), "corral-itest-%d", (int)getpid());
	char *argv[] = {bin, "--cgroup", name, "--cgroup-root", (char *)root, "--cpu", "0.5", "--mem", "16000000",
			NULL};
	if (itest_load_start(&s->load, s->dir, "load", argv))
		fail_msg("workload did not start in its cgroup");
	for (int i = 0; i < s->load.ndirs; i++) {
		if (strstr(s->load.dirs[i], "/memory/"))
			snprintf(s->mem_id, sizeof(s->mem_id), "%s", s->load.ids[i]);
		else if (!s->cg_id[0])
			snprintf(s->cg_id, sizeof(s->cg_id), "%s", s->load.ids[i]);
	}
	assert_true(s->cg_id[0]);
}

static void start_agent(stack *s, const char *root)
{
	char bin[4096], listen[64];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(s->agent_url, sizeof(s->agent_url), "http://%s", listen);
	char *argv[] = {bin, "--node", "itest-node", "--aggregator", s->url, "--token-file", s->token, "--interval",
			"500ms", "--listen", listen, root ? "--cgroup-root" : NULL, (char *)root, NULL};
	assert_int_equal(itest_spawn(&s->agent, s->dir, "agent", argv), 0);
}

/* Values of the single series the selector returns over the last minute at 500 ms steps. */
static int range_values(stack *s, const char *selector, double *vals, int cap, json_t **metric)
{
	char enc[8192], url[9000];
	itest_urlencode(enc, sizeof(enc), selector);
	int64_t now = itest_now_ms();
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=%s&start=%.3f&end=%.3f&step=0.5", s->url, enc,
		 (now - 60000) / 1000.0, now / 1000.0);
	long status;
	json_t *j = itest_get_json(url, &status);
	assert_non_null(j);
	assert_int_equal(status, 200);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
	json_t *result = json_object_get(json_object_get(j, "data"), "result");
	int n = 0;
	if (json_array_size(result) == 1) {
		json_t *values = json_object_get(json_array_get(result, 0), "values"), *pt;
		size_t i;
		json_array_foreach(values, i, pt)
			if (n < cap)
				vals[n++] = strtod(json_string_value(json_array_get(pt, 1)), NULL);
		if (metric)
			*metric = json_incref(json_object_get(json_array_get(result, 0), "metric"));
	}
	assert_true(json_array_size(result) <= 1);
	json_decref(j);
	return n;
}

static int count_increases(const double *v, int n)
{
	int inc = 0;
	for (int i = 1; i < n; i++) {
		assert_true(v[i] >= v[i - 1]); /* a counter never goes down */
		inc += v[i] > v[i - 1];
	}
	return inc;
}

static void check_cpu_increasing(stack *s)
{
	char sel[4200];
	double vals[200];
	snprintf(sel, sizeof(sel), "container_cpu_usage_seconds_total{id=\"%s\"}", s->cg_id);
	int n = 0, inc = 0;
	for (int waited = 0; waited < 30000 && inc < 3; waited += 500) {
		itest_sleep_ms(500);
		n = range_values(s, sel, vals, 200, NULL);
		inc = count_increases(vals, n);
	}
	if (inc < 3) {
		itest_dump_log(&s->agent);
		itest_dump_log(&s->agg);
	}
	assert_true(inc >= 3);
	assert_true(vals[n - 1] > 0);
	json_t *metric = NULL;
	range_values(s, sel, vals, 200, &metric);
	assert_non_null(metric);
	assert_string_equal(json_string_value(json_object_get(metric, "node")), "itest-node");
	assert_string_equal(json_string_value(json_object_get(metric, "__name__")), "container_cpu_usage_seconds_total");
	json_decref(metric);
}

static void check_memory(stack *s)
{
	char sel[4200];
	double vals[200];
	snprintf(sel, sizeof(sel), "container_memory_usage_bytes{id=\"%s\"}", s->mem_id);
	int n = range_values(s, sel, vals, 200, NULL);
	assert_true(n > 0);
	assert_true(vals[n - 1] >= 16000000); /* the workload touched 16 MB */
	snprintf(sel, sizeof(sel), "container_memory_working_set_bytes{id=\"%s\"}", s->mem_id);
	assert_true(range_values(s, sel, vals, 200, NULL) > 0);
}

static void check_corralctl(stack *s)
{
	char bin[4096], cmd[9000];
	itest_bin(bin, sizeof(bin), "corralctl");
	snprintf(cmd, sizeof(cmd), "%s --url %s --since 1m --step 500ms query-range 'container_cpu_usage_seconds_total{id=\"%s\"}'",
		 bin, s->url, s->cg_id);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char line[8300];
	int rows = 0, header = 0;
	while (fgets(line, sizeof(line), p)) {
		header |= !strncmp(line, "TIME", 4);
		rows += strstr(line, s->cg_id) != NULL;
	}
	assert_int_equal(pclose(p), 0);
	assert_true(header);
	assert_true(rows >= 3);
}

static void check_agent_metrics(stack *s)
{
	char url[160];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(url, sizeof(url), "%s/metrics", s->agent_url);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, &b), 200);
	char needle[4200];
	snprintf(needle, sizeof(needle), "container_cpu_usage_seconds_total{id=\"%s\"}", s->cg_id);
	assert_non_null(strstr((char *)b.data, needle));
	assert_non_null(strstr((char *)b.data, "# TYPE container_cpu_usage_seconds_total counter"));
	assert_non_null(strstr((char *)b.data, "node_cpu_seconds_total{cpu=\"0\",mode=\"user\"}"));
	assert_non_null(strstr((char *)b.data, "corral_agent_batches_sent_total"));
	cm_buf_close(&b);
}

static void stop_all(stack *s)
{
	int st = itest_stop(&s->load.p, SIGTERM, 5000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	struct stat sb;
	for (int i = 0; i < s->load.ndirs; i++)
		assert_int_not_equal(stat(s->load.dirs[i], &sb), 0); /* the test cgroup is gone */
	st = itest_stop(&s->agent, SIGTERM, 10000);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		itest_dump_log(&s->agent);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(itest_aggregator_stop(&s->agg), 0);
}

static int setup(void **state)
{
	stack *s = calloc(1, sizeof(*s));
	itest_mkdtemp(s->dir, sizeof(s->dir));
	snprintf(s->token, sizeof(s->token), "%s/token", s->dir);
	itest_write_file(s->token, "itest-token-123\n");
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	stack *s = *state;
	itest_stop(&s->load.p, SIGTERM, 5000); /* removes its cgroups even when an assertion failed */
	itest_stop(&s->agent, SIGKILL, 1000);
	itest_stop(&s->agg, SIGKILL, 1000);
	for (int i = 0; i < s->load.ndirs; i++)
		rmdir(s->load.dirs[i]);
	itest_rmtree(s->dir);
	free(s);
	return 0;
}

static void run_stack(void **state, const char *root)
{
	stack *s = *state;
	start_aggregator(s);
	start_load(s, root ? root : "/sys/fs/cgroup");
	start_agent(s, root);
	check_cpu_increasing(s);
	if (s->mem_id[0])
		check_memory(s);
	check_corralctl(s);
	check_agent_metrics(s);
	stop_all(s);
}

static void test_host_hierarchy(void **state)
{
	if (geteuid() != 0)
		skip();
	run_stack(state, NULL);
}

static void test_unified_v2(void **state)
{
	struct statfs fs;
	if (geteuid() != 0 || statfs("/sys/fs/cgroup/unified", &fs) || fs.f_type != CGROUP2_SUPER_MAGIC)
		skip(); /* only hybrid hosts have a separate v2 mount; pure v2 hosts ran it above */
	run_stack(state, "/sys/fs/cgroup/unified");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_hierarchy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unified_v2, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
