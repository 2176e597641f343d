/* test_ui.c -- the web UI in a real browser against a live stack (issue 10, acceptance 1, 2 and 4).
 *
 * Starts what `make demo` starts, on loopback ports picked here: corral-aggregator (DNS on a picked port,
 * a --services manifest with the headless services web, batch and cache in namespace demo), three
 * tests/corral-load workloads in real test cgroups below this process's cgroup, each writing a CRI log
 * in kubelet's layout, a pods dir describing them, and corral-agent at a 1 s interval shipping metrics,
 * inventory and those logs. Data with markup goes in on purpose: the web pod carries the label
 * team=<img src=x onerror=alert(2)>, its log gets a line `<script>alert(1)</script> xss-probe`, and one
 * imported series has a label value with markup. Once the workloads' samples and logs are queryable it
 * runs tests/browser/ui_test.mjs (playwright-core driving Debian's chromium, headless), which loads every
 * page and checks it (see that file). The aggregator runs with a read token (--read-token-file), so the
 * browser goes through the UI's token form and the tail's WebSocket carries the token. Screenshots go
 * to <build>/tests/ui-artifacts/. The workloads live below a parent cgroup of this test's that is the agent's --cgroup-root (itest_cgtree). The test fails when
 * the browser script fails or the aggregator does not exit cleanly. Needs root (cgroups), node,
 * chromium and tests/browser/node_modules (scripts/install-deps.sh); skips with a message otherwise.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

#define NLOAD    3
#define CHROMIUM "/usr/bin/chromium"

static const struct {
	const char *name, *cpu, *mem, *ip, *req_cpu, *req_mem;
} loads[NLOAD] = {
	{"web", "0.2", "32000000", "127.0.0.11", "200m", "32M"},
	{"batch", "0.4", "8000000", "127.0.0.12", "400m", "8M"},
	{"cache", "0.05", "64000000", "127.0.0.13", "50m", "64M"},
};

typedef struct fixture {
	char dir[256], token[300], url[64], pods[300], manifest[300], src[4096], logs[NLOAD][700];
	char node[64], ids[NLOAD][4][1024]; /* a workload's distinct cgroup ids (v1: one per hierarchy path) */
	int nids[NLOAD];
	char parent[64];   /* the workloads' parent cgroup */
	itest_cgtree tree; /* its directories and the agent's --cgroup-root */
	int dns_port;
	itest_proc agg, agent;
	itest_load w[NLOAD];
} fixture;

static void uid_of(int i, char *out, size_t cap)
{
	snprintf(out, cap, "de300000-0000-4000-8000-0000000000%02d", i);
}

/* The workloads' parent cgroup "corral-ui-<pid>" below this process's cgroup is the agent's --cgroup-root
 * (as bench/soak does): the agent then sees only these workloads, whatever else the host runs (other tests
 * and benchmarks create thousands of cgroups), and a workload's id is "/<name>" everywhere. */
static void make_parent(fixture *f)
{
	snprintf(f->parent, sizeof(f->parent), "corral-ui-%d", (int)getpid());
	assert_int_equal(itest_cgtree_make(&f->tree, f->dir, f->parent), 0);
}

/* var/log/pods/demo_<pod>_<uid>/<ctr>/0.log and the var/log/containers symlink, as kubelet lays them out. */
static void make_cri_log(fixture *f, int i)
{
	char uid[64], d[600], link[800], target[600];
	uid_of(i, uid, sizeof(uid));
	snprintf(d, sizeof(d), "%s/var/log/pods/demo_%s_%s/%s", f->dir, loads[i].name, uid, loads[i].name);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s/var/log/containers'", d, f->dir);
	assert_int_equal(system(cmd), 0);
	snprintf(f->logs[i], sizeof(f->logs[i]), "%s/0.log", d);
	snprintf(target, sizeof(target), "../pods/demo_%s_%s/%s/0.log", loads[i].name, uid, loads[i].name);
	snprintf(link, sizeof(link), "%s/var/log/containers/%s_demo_%s-%064d.log", f->dir, loads[i].name, loads[i].name,
	         i);
	assert_int_equal(symlink(target, link), 0);
}

static void start_load(fixture *f, int i)
{
	char bin[4096], name[160];
	itest_bin(bin, sizeof(bin), "tests/corral-load");
	snprintf(name, sizeof(name), "%s/%s", f->parent, loads[i].name);
	make_cri_log(f, i);
	char *argv[] = {bin, "--cgroup", name, "--cpu", (char *)loads[i].cpu, "--mem", (char *)loads[i].mem,
	                "--log-every", "500", "--cri-log", f->logs[i], NULL};
	if (itest_load_start(&f->w[i], f->dir, loads[i].name, argv))
		fail_msg("workload %s did not start", loads[i].name);
	for (int d = 0; d < f->w[i].ndirs; d++) {
		char *id = f->w[i].ids[d], *below = strstr(id, f->parent); /* the id below --cgroup-root */
		if (below)
			memmove(id, below + strlen(f->parent), strlen(below + strlen(f->parent)) + 1);
		int seen = 0;
		for (int k = 0; k < f->nids[i]; k++)
			seen |= !strcmp(f->ids[i][k], id);
		if (!seen)
			snprintf(f->ids[i][f->nids[i]++], sizeof(f->ids[i][0]), "%s", id);
	}
}

/* One container entry per cgroup id: on cgroup v1 hosts whose controllers place a process at different
 * paths, the CPU and memory series of one container carry different ids, and the pods-dir format names
 * one cgroup per entry. Requests and limits go on the first entry only. */
static void containers_json(fixture *f, int i, char *out, size_t cap)
{
	size_t o = 0;
	for (int k = 0; k < f->nids[i]; k++) {
		o += (size_t)snprintf(out + o, cap - o, "%s{\"name\": \"%s\", \"image\": \"corral-load\", \"cgroup\": \"%s\"",
		                      k ? ", " : "", loads[i].name, f->ids[i][k]);
		if (!k)
			o += (size_t)snprintf(out + o, cap - o,
			                      ", \"requests\": {\"cpu\": \"%s\", \"memory\": \"%s\"}, \"limits\": {\"memory\": \"%s\"}",
			                      loads[i].req_cpu, loads[i].req_mem, loads[i].req_mem);
		o += (size_t)snprintf(out + o, cap - o, "}");
	}
}

static void write_pod(fixture *f, int i)
{
	char path[400], tmp[420], body[9000], uid[64], ctrs[5000];
	uid_of(i, uid, sizeof(uid));
	containers_json(f, i, ctrs, sizeof(ctrs));
	/* the web pod's extra label is markup: the UI must show it as text */
	const char *team = i == 0 ? ", \"team\": \"<img src=x onerror=alert(2)>\"" : "";
	snprintf(body, sizeof(body),
	         "{\"name\": \"%s\", \"namespace\": \"demo\", \"uid\": \"%s\", \"status\": \"Running\","
	         " \"labels\": {\"app\": \"%s\"%s}, \"ips\": [\"%s\"], \"containers\": [%s]}\n",
	         loads[i].name, uid, loads[i].name, team, loads[i].ip, ctrs);
	snprintf(path, sizeof(path), "%s/%s.json", f->pods, loads[i].name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", f->pods, loads[i].name);
	itest_write_file(tmp, body);
	assert_int_equal(rename(tmp, path), 0);
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64], state[300];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(state, sizeof(state), "%s/agent", f->dir);
	char *argv[] = {bin, "--node", f->node, "--aggregator", f->url, "--token-file", f->token, "--interval", "1s",
	                "--listen", listen, "--pods-dir", f->pods, "--label-allowlist", "app,team", "--state-dir", state,
	                "--log-root", f->dir, "--cgroup-root", f->tree.root, NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
}

/* Appends one CRI line (stdout, full) to workload i's log now. */
static void cri_append(fixture *f, int i, const char *msg)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[64];
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	FILE *fp = fopen(f->logs[i], "a");
	assert_non_null(fp);
	fprintf(fp, "%s.%09ldZ stdout F %s\n", stamp, ts.tv_nsec, msg);
	fclose(fp);
}

/* Polls a GET until the answer contains needle (at least min times); 0 when it did within timeout_ms. */
static int wait_body(const char *url, const char *needle, int min, int timeout_ms)
{
	for (int64_t t0 = itest_now_ms(); itest_now_ms() - t0 < timeout_ms; itest_sleep_ms(250)) {
		cm_buf b;
		cm_buf_init(&b);
		const char *hdr[] = {"Authorization: Bearer ui-read", NULL};
		long st = itest_http("GET", url, hdr, NULL, 0, &b);
		int n = 0;
		if (st == 200 && cm_buf_append(&b, "", 1) == 0)
			for (const char *p = (const char *)b.data; (p = strstr(p, needle)); p++)
				n++;
		cm_buf_close(&b);
		if (n >= min)
			return 0;
	}
	return -1;
}

static void wait_data(fixture *f)
{
	char url[2048], q[512], enc[1024];
	long long now = (long long)(itest_now_ms() / 1000);
	snprintf(q, sizeof(q), "container_cpu_usage_seconds_total{namespace=\"demo\"}");
	itest_urlencode(enc, sizeof(enc), q);
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=%s&start=%lld&end=%lld&step=1", f->url, enc, now - 60,
	         now + 120);
	/* a series for each of the 3 pods, then a few more seconds of points for the rates */
	if (wait_body(url, "\"pod\":\"", 3, 30000)) {
		itest_dump_log(&f->agent);
		fail_msg("the workloads' samples did not arrive");
	}
	itest_sleep_ms(3000); /* a few more points for rates */
	itest_urlencode(enc, sizeof(enc), "{namespace=\"demo\", pod=\"web\"} |= \"xss-probe\"");
	snprintf(url, sizeof(url), "%s/loki/api/v1/query_range?query=%s&start=%lld&end=%lld", f->url, enc, now - 600,
	         now + 600);
	if (wait_body(url, "xss-probe", 1, 20000)) {
		itest_dump_log(&f->agent);
		fail_msg("the probe log line did not arrive");
	}
}

/* A series whose label value is markup, through the bulk import (same bearer token). */
static void import_probe(fixture *f)
{
	char url[128], auth[128];
	snprintf(url, sizeof(url), "%s/api/v1/import/prometheus", f->url);
	snprintf(auth, sizeof(auth), "Authorization: Bearer ui-token");
	const char *hdr[] = {auth, NULL};
	const char *body = "corral_ui_probe{note=\"<b>bold</b><script>alert(3)</script>\"} 1\n";
	cm_buf b;
	cm_buf_init(&b);
	long st = itest_http("POST", url, hdr, body, strlen(body), &b);
	cm_buf_close(&b);
	assert_true(st == 204 || st == 200);
}

static int run_browser(fixture *f)
{
	char script[4200], bindir[4096], artifacts[4200], uidir[4200];
	snprintf(script, sizeof(script), "%s/tests/browser/ui_test.mjs", f->src);
	itest_bin(bindir, sizeof(bindir), "");
	snprintf(artifacts, sizeof(artifacts), "%s/tests/ui-artifacts", bindir);
	snprintf(uidir, sizeof(uidir), "%s/ui", bindir);
	setenv("CORRAL_URL", f->url, 1);
	setenv("CORRAL_NODE", f->node, 1);
	setenv("CORRAL_CRI_LOG", f->logs[0], 1);
	setenv("CORRAL_UI_DIR", uidir, 1);
	setenv("CORRAL_ARTIFACTS", artifacts, 1);
	setenv("CHROMIUM", CHROMIUM, 1);
	setenv("CORRAL_UI_TOKEN", "ui-read", 1);
	char cmd[9000];
	snprintf(cmd, sizeof(cmd), "node '%s'", script);
	fflush(stdout);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int have_tools(const char *src)
{
	char p[4200];
	struct stat sb;
	snprintf(p, sizeof(p), "%s/tests/browser/node_modules/playwright-core/package.json", src);
	if (stat(p, &sb) || stat(CHROMIUM, &sb) || system("node --version >/dev/null 2>&1")) {
		printf("test_ui: SKIP: needs node, %s and %s (scripts/install-deps.sh installs them)\n", CHROMIUM, p);
		return 0;
	}
	return 1;
}

static void test_ui_pages(void **state)
{
	fixture *f = *state;
	if (geteuid() != 0 || !have_tools(f->src))
		skip();
	make_parent(f);
	for (int i = 0; i < NLOAD; i++)
		start_load(f, i);
	cri_append(f, 0, "<script>alert(1)</script> xss-probe before the agent started");
	for (int i = 0; i < NLOAD; i++)
		write_pod(f, i);
	start_agent(f);
	import_probe(f);
	wait_data(f);
	int rc = run_browser(f);
	if (rc) {
		itest_dump_log(&f->agg);
		fail_msg("tests/browser/ui_test.mjs failed (exit %d)", rc);
	}
}

static const char MANIFEST[] =
    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"demo\"},"
    "\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"protocol\":"
    "\"TCP\",\"port\":8080}]}},"
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"batch\",\"namespace\":\"demo\"},"
    "\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"batch\"},\"ports\":[{\"name\":\"http\",\"protocol\":"
    "\"TCP\",\"port\":8080}]}},"
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"cache\",\"namespace\":\"demo\"},"
    "\"spec\":{\"clusterIP\":\"10.96.0.20\",\"selector\":{\"app\":\"cache\"},\"ports\":[{\"name\":\"redis\","
    "\"protocol\":\"TCP\",\"port\":6379}]}}]}\n";

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	const char *src = getenv("CORRAL_SRC");
	snprintf(f->src, sizeof(f->src), "%s", src ? src : ".");
	snprintf(f->node, sizeof(f->node), "ui-node-%d", (int)getpid());
	itest_mkdtemp(f->dir, sizeof(f->dir));
	chmod(f->dir, 0755);
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->pods, sizeof(f->pods), "%s/pods", f->dir);
	snprintf(f->manifest, sizeof(f->manifest), "%s/services.json", f->dir);
	itest_write_file(f->token, "ui-token\n");
	char read_token[300];
	snprintf(read_token, sizeof(read_token), "%s/read-token", f->dir);
	itest_write_file(read_token, "ui-read\n");
	itest_write_file(f->manifest, MANIFEST);
	mkdir(f->pods, 0755);
	f->dns_port = itest_port();
	char data[300], listen[64];
	snprintf(data, sizeof(data), "%s/data", f->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", f->dns_port);
	const char *extra[] = {"--dns-listen", listen, "--services", f->manifest, "--dns-threads", "1",
	                       "--read-token-file", read_token, NULL};
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
	if (f->tree.nparents)
		itest_cgtree_remove(&f->tree);
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ui_pages, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
