/* test_agent_cgroups.c -- corral-agent on this host's real cgroups: discovery, OOM, promtool, Prometheus.
 *
 * Needs root (it makes test cgroups below its own, in the cpuacct and memory hierarchies on cgroup v1 or
 * in the unified one on v2, and removes them in teardown) and Debian's prometheus package (promtool and
 * prometheus). The agent runs at a 1 s interval against /sys/fs/cgroup and /proc on a picked loopback
 * port; Prometheus runs with a temp config and data dir on another picked port and is stopped by PID.
 *   discovery   a cgroup made while the agent runs is on /metrics within one interval (plus the time
 *               of one pass), a memory limit written to it shows within one interval on v1 (10 on v2),
 *               one removed is gone within one interval
 *   oom         a child in a cgroup limited to 32 MiB touches 256 MiB; the kernel kills it (twice); the
 *               agent's container_oom_events_total for that cgroup equals the kernel's oom_kill count
 *               after each kill (on v1 read because /dev/kmsg reported the kill: the agent says so), it
 *               logs an OOM-killed event, and the event reaches a real aggregator's /api/v1/events
 *               (type oom_killed, that cgroup)
 *   prometheus  promtool check metrics finds no problem on /metrics other than the camelCase lint on
 *               node_exporter's own node_memory_* names; a real Prometheus scraping the agent stores
 *               container_cpu_usage_seconds_total for a test cgroup with a CPU-burning child
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

#define INTERVAL_MS 1000

typedef struct fixture {
	char dir[256], token[300], agent_url[128], agg_url[128], agg_data[320];
	int v2;
	char cpu_mnt[64], mem_mnt[64];   /* hierarchy mounts holding the cpu and memory files */
	char cpu_own[1024], mem_own[1024]; /* our cgroup in each ("" = the root) */
	char cpu_dir[2048], mem_dir[2048]; /* test cgroups made, "" when none */
	char cpu_id[1100], mem_id[1100];
	pid_t child;
	itest_proc agent, prom, agg;
} fixture;

/* Our path in the hierarchy whose controller list holds ctl ("" = the v2 line). */
static int own_cgroup(const char *ctl, char *out, size_t cap)
{
	char text[8192];
	if (cm_read_file("/proc/self/cgroup", text, sizeof(text), NULL))
		return -1;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		char *list = c1 + 1, *save = NULL;
		int match = *ctl ? 0 : *list == '\0';
		for (char *tok = strtok_r(list, ",", &save); *ctl && tok; tok = strtok_r(NULL, ",", &save))
			match |= strcmp(tok, ctl) == 0;
		if (match) {
			snprintf(out, cap, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
			return 0;
		}
	}
	return -1;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	struct stat st;
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	itest_write_file(f->token, "cg-token\n");
	f->v2 = stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0;
	if (f->v2) {
		strcpy(f->cpu_mnt, "/sys/fs/cgroup"), strcpy(f->mem_mnt, "/sys/fs/cgroup");
		own_cgroup("", f->cpu_own, sizeof(f->cpu_own));
		strcpy(f->mem_own, f->cpu_own);
	} else {
		strcpy(f->cpu_mnt, stat("/sys/fs/cgroup/cpuacct", &st) == 0 ? "/sys/fs/cgroup/cpuacct"
									  : "/sys/fs/cgroup/cpu,cpuacct");
		strcpy(f->mem_mnt, "/sys/fs/cgroup/memory");
		own_cgroup("cpuacct", f->cpu_own, sizeof(f->cpu_own));
		own_cgroup("memory", f->mem_own, sizeof(f->mem_own));
	}
	*state = f;
	return 0;
}

static void rm_cgroup(char *dir)
{
	for (int i = 0; dir[0] && i < 200; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			break;
		itest_sleep_ms(10); /* a killed child may take a moment to leave */
	}
	dir[0] = '\0';
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->child > 0) {
		kill(f->child, SIGKILL);
		waitpid(f->child, NULL, 0);
	}
	itest_stop(&f->prom, SIGTERM, 10000);
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	if (itest_stop(&f->agg, SIGTERM, 10000))
		st = 1;
	rm_cgroup(f->cpu_dir);
	rm_cgroup(f->mem_dir);
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

static void need_root(void)
{
	if (geteuid() != 0) {
		print_message("needs root to make test cgroups\n");
		skip();
	}
}

static void make_cgroups(fixture *f, const char *tag)
{
	snprintf(f->cpu_id, sizeof(f->cpu_id), "%s/corral-itest-%s-%ld", f->cpu_own, tag, (long)getpid());
	snprintf(f->mem_id, sizeof(f->mem_id), "%s/corral-itest-%s-%ld", f->mem_own, tag, (long)getpid());
	snprintf(f->cpu_dir, sizeof(f->cpu_dir), "%s%s", f->cpu_mnt, f->cpu_id);
	snprintf(f->mem_dir, sizeof(f->mem_dir), "%s%s", f->mem_mnt, f->mem_id);
	if (mkdir(f->cpu_dir, 0755) < 0)
		fail_msg("mkdir %s: %s", f->cpu_dir, strerror(errno));
	if (strcmp(f->cpu_dir, f->mem_dir) && mkdir(f->mem_dir, 0755) < 0)
		fail_msg("mkdir %s: %s", f->mem_dir, strerror(errno));
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	char agg[128];
	if (f->agg_url[0])
		snprintf(agg, sizeof(agg), "%s", f->agg_url);
	else
		snprintf(agg, sizeof(agg), "http://127.0.0.1:%d", itest_port()); /* nobody listens: batches wait */
	char *argv[] = {bin, "--node", "cg-node", "--aggregator", agg, "--token-file", f->token, "--interval", "1s",
			"--listen", listen, NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
	char health[160];
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

/* The agent's /metrics into b (caller closes). */
static void get_metrics(fixture *f, cm_buf *b)
{
	char url[160];
	cm_buf_init(b);
	snprintf(url, sizeof(url), "%s/metrics", f->agent_url);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, b), 200);
	cm_buf_append(b, "", 1);
}

/* The value of series key ("metric{id=\"...\"}") on /metrics, or -1 when absent. */
static double metric_value(fixture *f, const char *key)
{
	cm_buf b;
	char needle[2048];
	get_metrics(f, &b);
	snprintf(needle, sizeof(needle), "\n%s ", key);
	const char *p = strstr((char *)b.data, needle);
	double v = p ? strtod(p + strlen(needle), NULL) : -1;
	cm_buf_close(&b);
	return v;
}

/* Polls every 50 ms until key is present (want 1) or absent (want 0); returns the ms it took. */
static int64_t wait_series(fixture *f, const char *key, int want, int timeout_ms)
{
	int64_t t0 = itest_now_ms();
	while (itest_now_ms() - t0 < timeout_ms) {
		if ((metric_value(f, key) >= 0) == want)
			return itest_now_ms() - t0;
		itest_sleep_ms(50);
	}
	itest_dump_log(&f->agent);
	fail_msg("%s still %s after %d ms", key, want ? "absent" : "present", timeout_ms);
	return -1;
}

static void test_discovery_within_one_interval(void **state)
{
	fixture *f = *state;
	char key[1200];
	need_root();
	start_agent(f);
	itest_sleep_ms(1500); /* a few passes: the walk has settled */
	make_cgroups(f, "disc");
	snprintf(key, sizeof(key), "container_last_seen{id=\"%s\"}", f->cpu_id);
	int64_t seen = wait_series(f, key, 1, 10000);
	print_message("new cgroup on /metrics after %lld ms (interval %d ms)\n", (long long)seen, INTERVAL_MS);
	assert_true(seen <= INTERVAL_MS + 500); /* one interval, plus one pass and the poll step */
	/* a limit written: on v1 the write's inotify event has it read again at the next pass; v2 re-reads
	 * limits one pass in 10 */
	char path[2200];
	snprintf(path, sizeof(path), "%s/%s", f->mem_dir, f->v2 ? "memory.max" : "memory.limit_in_bytes");
	itest_write_file(path, "67108864\n");
	snprintf(key, sizeof(key), "container_spec_memory_limit_bytes{id=\"%s\"}", f->mem_id);
	int64_t t0 = itest_now_ms();
	while (metric_value(f, key) != 67108864 && itest_now_ms() - t0 < 15000)
		itest_sleep_ms(50);
	int64_t limit_ms = itest_now_ms() - t0;
	print_message("written memory limit on /metrics after %lld ms\n", (long long)limit_ms);
	assert_true(limit_ms <= (f->v2 ? 10 : 1) * INTERVAL_MS + 500);
	snprintf(key, sizeof(key), "container_last_seen{id=\"%s\"}", f->cpu_id);
	rm_cgroup(f->cpu_dir);
	rm_cgroup(f->mem_dir);
	int64_t gone = wait_series(f, key, 0, 10000);
	print_message("removed cgroup gone from /metrics after %lld ms\n", (long long)gone);
	assert_true(gone <= INTERVAL_MS + 500);
}

/* Joins the memory cgroup and touches 256 MiB against a 32 MiB limit; the kernel kills it. */
static void oom_child(const char *procs)
{
	char pid[32];
	snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	itest_write_file(procs, pid);
	for (int i = 0; i < 256; i++) {
		char *p = malloc(1 << 20);
		if (!p)
			_exit(3);
		memset(p, 0x5a, 1 << 20);
	}
	_exit(0); /* not killed: the test fails on the exit status */
}

/* The kernel's own count of OOM kills in the test memory cgroup. */
static double kernel_oom_kills(const fixture *f)
{
	char path[2200], text[4096];
	snprintf(path, sizeof(path), "%s/%s", f->mem_dir, f->v2 ? "memory.events" : "memory.oom_control");
	assert_int_equal(cm_read_file(path, text, sizeof(text), NULL), 0);
	const char *p = strstr(text, "oom_kill ");
	assert_non_null(p);
	return strtod(p + 9, NULL);
}

static void oom_kill_once(const char *procs)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		oom_child(procs);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static void test_oom_kill_counted_and_logged(void **state)
{
	fixture *f = *state;
	char key[1200], path[2200];
	need_root();
	make_cgroups(f, "oom");
	snprintf(path, sizeof(path), "%s/%s", f->mem_dir, f->v2 ? "memory.max" : "memory.limit_in_bytes");
	itest_write_file(path, "33554432\n");
	snprintf(path, sizeof(path), "%s/%s", f->mem_dir, f->v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes");
	if (access(path, W_OK) == 0)
		itest_write_file(path, f->v2 ? "0\n" : "33554432\n");
	snprintf(f->agg_data, sizeof(f->agg_data), "%s/agg", f->dir);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->agg_data, f->token, NULL, f->agg_url,
						sizeof(f->agg_url)), 0);
	start_agent(f);
	snprintf(key, sizeof(key), "container_oom_events_total{id=\"%s\"}", f->mem_id);
	wait_series(f, key, 1, 10000); /* the agent knows the count before the kill */
	assert_true(metric_value(f, key) == 0);
	snprintf(path, sizeof(path), "%s/cgroup.procs", f->mem_dir);
	for (int kill = 1; kill <= 2; kill++) {
		oom_kill_once(path);
		double v = 0, want = kernel_oom_kills(f);
		assert_true(want >= kill);
		for (int i = 0; i < 60 && v < want; i++, itest_sleep_ms(100))
			v = metric_value(f, key);
		print_message("OOM kill %d: agent %.0f, kernel %.0f\n", kill, v, want);
		assert_true(v == want);
	}
	assert_int_equal(itest_wait_log(&f->agent, "OOM-killed", 3000), 0);
	if (!f->v2) /* v1: the count was read because the kernel log reported the kill (not polled) */
		assert_int_equal(itest_wait_log(&f->agent, "the kernel log reports an OOM kill", 3000), 0);
	char url[512], cg[1200];
	itest_urlencode(cg, sizeof(cg), f->mem_id);
	snprintf(url, sizeof(url), "%s/api/v1/events?node=cg-node&type=oom_killed", f->agg_url);
	/* the agent watches the whole hierarchy: another test's OOM kills (the other tree's copy of this
	 * test, run beside it) are events too; this one's must be among them */
	json_t *ev = NULL, *e = NULL;
	for (int i = 0; i < 100 && !e; i++, itest_sleep_ms(100)) {
		long status;
		json_decref(ev);
		ev = itest_get_json(url, &status);
		json_t *data = json_object_get(ev, "data"), *x;
		size_t k;
		json_array_foreach(data, k, x)
			if (!e && !strcmp(json_string_value(json_object_get(x, "cgroup")) ?: "", f->mem_id))
				e = x;
	}
	assert_non_null(e);
	assert_true(json_integer_value(json_object_get(e, "count")) >= 1);
	json_decref(ev);
}

/* promtool's output: nothing but the camelCase lint on node_exporter's node_memory_* names. */
static void promtool_check(fixture *f)
{
	char file[400], cmd[900], line[1024];
	cm_buf b;
	get_metrics(f, &b);
	snprintf(file, sizeof(file), "%s/metrics.txt", f->dir);
	itest_write_file(file, (char *)b.data);
	cm_buf_close(&b);
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", file);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	int other = 0, lint = 0;
	while (fgets(line, sizeof(line), p)) {
		if (!strncmp(line, "node_memory_", 12) && strstr(line, "should be written in 'snake_case' not 'camelCase'"))
			lint++;
		else
			other++, print_message("promtool: %s", line);
	}
	int st = pclose(p);
	print_message("promtool: exit %d, %d camelCase lint lines on node_memory_*, %d other\n", WEXITSTATUS(st),
		      lint, other);
	assert_int_equal(other, 0);
	assert_true(WEXITSTATUS(st) == 0 || (WEXITSTATUS(st) == 3 && lint > 0));
}

static void start_prometheus(fixture *f, char *url, size_t cap)
{
	char cfg[400], data[400], listen[64], cfgarg[420], dataarg[420], listenarg[100];
	snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", f->dir);
	snprintf(data, sizeof(data), "%s/prom-data", f->dir);
	char yml[512];
	snprintf(yml, sizeof(yml),
		 "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: corral-agent\n"
		 "    static_configs:\n      - targets: ['%s']\n", f->agent_url + 7);
	itest_write_file(cfg, yml);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(url, cap, "http://%s", listen);
	snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", cfg);
	snprintf(dataarg, sizeof(dataarg), "--storage.tsdb.path=%s", data);
	snprintf(listenarg, sizeof(listenarg), "--web.listen-address=%s", listen);
	char *argv[] = {"/usr/bin/prometheus", cfgarg, dataarg, listenarg, NULL};
	if (access(argv[0], X_OK) != 0)
		fail_msg("/usr/bin/prometheus is missing: scripts/install-deps.sh installs Debian's prometheus");
	assert_int_equal(itest_spawn(&f->prom, f->dir, "prometheus", argv), 0);
}

static void burn_in(fixture *f)
{
	char procs[2200], pid[32];
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(120);
		for (volatile unsigned long spin = 0;; spin++)
			;
	}
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", f->cpu_dir);
	snprintf(pid, sizeof(pid), "%ld\n", (long)f->child);
	itest_write_file(procs, pid);
}

static void test_promtool_and_prometheus_scrape(void **state)
{
	fixture *f = *state;
	char prom[128], sel[1300], enc[4000], url[4200];
	need_root();
	make_cgroups(f, "prom");
	burn_in(f);
	start_agent(f);
	snprintf(sel, sizeof(sel), "container_cpu_usage_seconds_total{id=\"%s\"}", f->cpu_id);
	wait_series(f, sel, 1, 10000);
	promtool_check(f);
	start_prometheus(f, prom, sizeof(prom));
	itest_urlencode(enc, sizeof(enc), sel);
	snprintf(url, sizeof(url), "%s/api/v1/query?query=%s", prom, enc);
	double v = 0;
	for (int i = 0; i < 300 && v <= 0; i++) {
		long status = 0;
		json_t *j = itest_get_json(url, &status);
		json_t *res = j ? json_object_get(json_object_get(j, "data"), "result") : NULL;
		if (status == 200 && json_array_size(res) == 1)
			v = strtod(json_string_value(json_array_get(json_object_get(json_array_get(res, 0), "value"), 1)),
				   NULL);
		json_decref(j);
		if (v <= 0)
			itest_sleep_ms(100);
	}
	if (v <= 0)
		itest_dump_log(&f->prom);
	print_message("Prometheus stored %s = %.3f\n", sel, v);
	assert_true(v > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_discovery_within_one_interval, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oom_kill_counted_and_logged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_promtool_and_prometheus_scrape, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
