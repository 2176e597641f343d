/* test_dns_endpoints.c -- a headless service's DNS answer follows pods on real cgroups (issue 8, point 2).
 *
 * The aggregator runs with DNS on a loopback port picked here and one headless service (shop/web,
 * selector app=web) from a --services manifest. Two tests/corral-load workloads each make a real test
 * cgroup below this process's own cgroup; a pods dir describes one pod per workload (label app=web,
 * pod IPs 10.0.0.x: DNS data only, nothing is sent there) whose container names that cgroup. The agent
 * runs at --interval 500ms with the default --meta-refresh (10 s): a cgroup with no pod yet makes the
 * agent re-read the pods dir on its next pass, so a new pod's IP must not wait for the refresh interval.
 * With the real `dig`:
 *   both IPs are in the answer; then one workload is stopped (SIGTERM: it removes its cgroup) and its IP
 *   must leave the answer within 2 intervals + slack; then a third workload and pod file are added and
 *   its IP must appear within 2 intervals + slack. The measured times are printed.
 * After each step `corralctl services --namespace shop` must list the same endpoints for web and for a
 * ClusterIP service (shop/api, same selector; its endpoints are listed though DNS answers its cluster IP),
 * and the service of another namespace must not be listed.
 * Slack (250 ms): the aggregator's zone builder wakes every 100 ms (ag_dns.c), plus the build, the
 * agent's HTTP push and ingest, and this test's 25 ms dig polling. Needs root (cgroups); skips otherwise.
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
#include <unistd.h>

#include "itest.h"

#define INTERVAL_MS 500
#define SLACK_MS    250
#define NLOAD       3

typedef itest_load load;

typedef struct fixture {
	char dir[256], token[300], url[64], pods[300], manifest[300];
	int dns_port;
	itest_proc agg, agent;
	load w[NLOAD];
} fixture;

/* ---- dig ------------------------------------------------------------------------------------------ */

static char OUT[1 << 16];

/* The answer section of "dig +short" for the service, one address a line. */
static const char *dig_web(fixture *f)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "dig -p %d @127.0.0.1 +time=1 +tries=1 +short web.shop.svc.cluster.local A 2>&1",
	         f->dns_port);
	itest_capture(cmd, OUT, sizeof(OUT));
	return OUT;
}

static int has_ip(const char *out, const char *ip)
{
	char want[64];
	snprintf(want, sizeof(want), "%s\n", ip);
	for (const char *s = out; (s = strstr(s, want)); s++)
		if (s == out || s[-1] == '\n')
			return 1;
	return 0;
}

/* Polls dig until ip is present (want 1) or absent (want 0); returns ms waited, or -1 after timeout_ms. */
static int64_t wait_ip(fixture *f, const char *ip, int want, int timeout_ms)
{
	int64_t t0 = itest_now_ms();
	for (;;) {
		int64_t now = itest_now_ms();
		if (has_ip(dig_web(f), ip) == want)
			return now - t0; /* the time the query that saw it was sent */
		if (now - t0 > timeout_ms)
			return -1;
		itest_sleep_ms(25);
	}
}

/* `corralctl services --namespace shop`'s row of service name: ENDPOINTS (the cell before SOURCE) holds
 * exactly the ready ips ("a,b", in any order). */
static void check_ctl(fixture *f, const char *name, const char *ips)
{
	char bin[4096], cmd[8400], want[128], cell[128], *save = NULL;
	itest_bin(bin, sizeof(bin), "corralctl");
	snprintf(cmd, sizeof(cmd), "'%s' --url %s --namespace shop services 2>&1", bin, f->url);
	assert_int_equal(itest_capture(cmd, OUT, sizeof(OUT)), 0);
	printf("%s", OUT);
	assert_null(strstr(OUT, "other"));
	snprintf(want, sizeof(want), "\nshop       %s ", name);
	const char *row = strstr(OUT, want), *end = row ? strstr(row, " manifest\n") : NULL, *start;
	assert_non_null(end);
	while (end[-1] == ' ')
		end--;
	for (start = end; start[-1] != ' ';)
		start--;
	snprintf(cell, sizeof(cell), ",%.*s,", (int)(end - start), start);
	assert_int_equal(strlen(cell), strlen(ips) + 2);
	snprintf(want, sizeof(want), "%s", ips);
	for (char *ip = strtok_r(want, ",", &save); ip; ip = strtok_r(NULL, ",", &save)) {
		char one[64];
		snprintf(one, sizeof(one), ",%s,", ip);
		assert_non_null(strstr(cell, one));
	}
	assert_non_null(strstr(row, " app=web "));
}

/* ---- workloads and pods --------------------------------------------------------------------------- */

static void start_load(fixture *f, int i)
{
	load *w = &f->w[i];
	char bin[4096], name[64];
	itest_bin(bin, sizeof(bin), "tests/corral-load");
	snprintf(name, sizeof(name), "corral-dnx-%d-%d", (int)getpid(), i);
	char tag[16];
	snprintf(tag, sizeof(tag), "load%d", i);
	char *argv[] = {bin, "--cgroup", name, "--cpu", "0.02", "--mem", "1000000", NULL};
	if (itest_load_start(w, f->dir, tag, argv))
		fail_msg("workload did not start in its cgroup");
}

/* pods/<i>.json (written to a temp name and renamed, as docs/agent.md asks) for workload i. */
static void write_pod(fixture *f, int i)
{
	char path[400], tmp[420], body[8192];
	snprintf(body, sizeof(body),
	         "{\"name\": \"web-%d\", \"namespace\": \"shop\", \"status\": \"Running\", \"labels\": {\"app\": \"web\"},"
	         " \"ips\": [\"10.0.0.%d\"], \"containers\": [{\"name\": \"load\", \"image\": \"corral-load\","
	         " \"cgroup\": \"%s\"}]}\n",
	         i, i + 1, f->w[i].id);
	snprintf(path, sizeof(path), "%s/web-%d.json", f->pods, i);
	snprintf(tmp, sizeof(tmp), "%s/.web-%d.tmp", f->pods, i);
	itest_write_file(tmp, body);
	assert_int_equal(rename(tmp, path), 0);
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64], ival[16];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(ival, sizeof(ival), "%dms", INTERVAL_MS);
	char *argv[] = {bin,      "--node",         "dnx-node",  "--aggregator", f->url, "--token-file",
	                f->token, "--interval",     ival,        "--listen",     listen, "--pods-dir",
	                f->pods,  "--label-allowlist", "app", NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
}

/* ---- the test ------------------------------------------------------------------------------------- */

static void check_within(fixture *f, int64_t ms, const char *what)
{
	printf("dns endpoints: %s after %lld ms (bound %d ms = 2 intervals + %d ms slack)\n", what, (long long)ms,
	       2 * INTERVAL_MS + SLACK_MS, SLACK_MS);
	fflush(stdout);
	if (ms < 0 || ms > 2 * INTERVAL_MS + SLACK_MS) {
		itest_dump_log(&f->agent);
		itest_dump_log(&f->agg);
		fail_msg("%s: %lld ms", what, (long long)ms);
	}
}

static void test_endpoints_follow_cgroups(void **state)
{
	fixture *f = *state;
	if (geteuid() != 0)
		skip();
	start_load(f, 0);
	start_load(f, 1);
	write_pod(f, 0);
	write_pod(f, 1);
	start_agent(f);
	assert_true(wait_ip(f, "10.0.0.1", 1, 15000) >= 0);
	assert_true(wait_ip(f, "10.0.0.2", 1, 5000) >= 0);
	check_ctl(f, "web", "10.0.0.1,10.0.0.2");
	check_ctl(f, "api", "10.0.0.1,10.0.0.2");
	/* stop workload 0: corral-load removes its cgroup before it exits */
	assert_int_equal(itest_stop(&f->w[0].p, SIGTERM, 10000), 0);
	int64_t gone = wait_ip(f, "10.0.0.1", 0, 10000);
	struct stat sb;
	for (int i = 0; i < f->w[0].ndirs; i++)
		assert_int_not_equal(stat(f->w[0].dirs[i], &sb), 0);
	check_within(f, gone, "removed cgroup's pod left the answer");
	assert_true(has_ip(dig_web(f), "10.0.0.2")); /* the other pod stays */
	check_ctl(f, "web", "10.0.0.2");
	check_ctl(f, "api", "10.0.0.2");
	/* a new matching pod: cgroup first, then its file */
	start_load(f, 2);
	write_pod(f, 2);
	int64_t seen = wait_ip(f, "10.0.0.3", 1, 10000);
	check_within(f, seen, "new pod appeared in the answer");
	assert_true(has_ip(OUT, "10.0.0.2"));
	assert_false(has_ip(OUT, "10.0.0.1"));
	check_ctl(f, "web", "10.0.0.2,10.0.0.3");
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->pods, sizeof(f->pods), "%s/pods", f->dir);
	snprintf(f->manifest, sizeof(f->manifest), "%s/services.json", f->dir);
	itest_write_file(f->token, "dnx-token\n");
	mkdir(f->pods, 0755);
	itest_write_file(f->manifest,
	                 "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Service\","
	                 "\"metadata\":{\"name\":\"web\",\"namespace\":\"shop\"},\"spec\":{\"clusterIP\":\"None\","
	                 "\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\","
	                 "\"port\":80}]}},{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"api\","
	                 "\"namespace\":\"shop\"},\"spec\":{\"clusterIP\":\"10.96.0.10\",\"selector\":{\"app\":\"web\"}}},"
	                 "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"other\",\"namespace\":"
	                 "\"default\"},\"spec\":{\"clusterIP\":\"10.96.0.11\",\"selector\":{\"app\":\"web\"}}}]}\n");
	f->dns_port = itest_port();
	char data[300], listen[64];
	snprintf(data, sizeof(data), "%s/data", f->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", f->dns_port);
	const char *extra[] = {"--dns-listen", listen, "--services", f->manifest, "--dns-threads", "1", NULL};
	*state = f;
	return itest_aggregator_start(&f->agg, f->dir, data, f->token, extra, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	for (int i = 0; i < NLOAD; i++)
		if (f->w[i].p.pid > 0)
			itest_stop(&f->w[i].p, SIGTERM, 10000);
	if (f->agent.pid > 0)
		itest_stop(&f->agent, SIGTERM, 10000);
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_endpoints_follow_cgroups, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
