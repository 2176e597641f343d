/* test_multinode.c -- three "nodes" on one machine: one agent per network namespace, one aggregator.
 *
 * Issue 11, point 2. Each node k (1..NODES) is a network namespace made here with a veth pair: the
 * namespace side has 10.<net>.<k>.2, the host side 10.<net>.<k>.1 (net picked from the PID, so the
 * normal and the sanitizer run of this test can run at once). The aggregator listens on node 1's host
 * address, which every namespace reaches through its default route; nothing else is contacted.
 *
 * Each node also gets its own subtree of real test cgroups (itest_cgtree: a parent cgroup per node
 * below this process's own, which the node's agent reads as its whole --cgroup-root, the way a
 * containerised agent sees a cgroup namespace). A tests/corral-load workload runs in
 * <parent>/web (id "/web" on every node), writes kubelet-style CRI logs under the node's own
 * --log-root, and a pods dir names it pod web-<k> of service shop/web with the node's address.
 * The agents run inside their namespaces (nsenter --net, which keeps this mount namespace: `ip netns
 * exec` would remount /sys and hide the cgroup mounts).
 *
 * Checked: per-node container metrics (id "/web", pod web-<k>, node mn-<k>) and node network metrics
 * of the namespace's own veth; each node's log lines through the Loki API; the headless service's DNS
 * answer (real `dig`) lists every node's pod. Then node 2's agent is killed with SIGKILL: within
 * --node-grace (3 s) + slack the inventory marks mn-2 not ready and 10.<net>.2.2 leaves the answer,
 * while the other nodes stay. Needs root, `ip`, `nsenter` and `dig`; skips otherwise.
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

#define NODES       3
#define TOKEN       "multinode-token"
#define INTERVAL    "500ms"
#define GRACE_MS    3000
#define SLACK_MS    3000

typedef struct node {
	char ns[32], veth_h[16], veth_n[16], host_ip[32], ip[32], name[16];
	itest_cgtree cg; /* this node's cgroups */
	char pods[512], logroot[512], state[512];
	itest_proc load, agent;
	int net_made;
} node;

typedef struct fixture {
	char dir[256], token[300], url[64], services[300];
	int net, dns_port;
	const char *broken; /* what setup could not do */
	itest_proc agg;
	node n[NODES];
} fixture;

/* ---- shell steps ---------------------------------------------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int rc = system(cmd);
	if (rc)
		fprintf(stderr, "multinode: `%s` failed (%d)\n", cmd, rc);
	return rc;
}

static int have(const char *tool)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return system(cmd) == 0;
}

static void mkdirs(const char *path)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	assert_int_equal(system(cmd), 0);
}

/* ---- network ------------------------------------------------------------------------------------------ */

static int net_up(fixture *f, node *nd, int k)
{
	int pid = (int)getpid();
	snprintf(nd->ns, sizeof(nd->ns), "corral-mn%d-%d", pid, k);
	snprintf(nd->veth_h, sizeof(nd->veth_h), "cmn%dh%d", pid % 100000, k);
	snprintf(nd->veth_n, sizeof(nd->veth_n), "cmn%dn%d", pid % 100000, k);
	snprintf(nd->host_ip, sizeof(nd->host_ip), "10.%d.%d.1", f->net, k);
	snprintf(nd->ip, sizeof(nd->ip), "10.%d.%d.2", f->net, k);
	snprintf(nd->name, sizeof(nd->name), "mn-%d", k);
	if (sh("ip netns add %s", nd->ns))
		return -1;
	nd->net_made = 1;
	return sh("ip link add %s type veth peer name %s && ip link set %s netns %s && "
	          "ip addr add %s/24 dev %s && ip link set %s up && "
	          "ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up && "
	          "ip -n %s route add default via %s",
	          nd->veth_h, nd->veth_n, nd->veth_n, nd->ns, nd->host_ip, nd->veth_h, nd->veth_h, nd->ns, nd->ip,
	          nd->veth_n, nd->ns, nd->veth_n, nd->ns, nd->ns, nd->host_ip);
}

static void net_down(node *nd)
{
	if (!nd->net_made)
		return;
	sh("ip link del %s 2>/dev/null; ip netns del %s", nd->veth_h, nd->ns);
	nd->net_made = 0;
}

/* ---- a node's workload, pod and agent ---------------------------------------------------------------- */

static void start_node(fixture *f, node *nd, int k)
{
	char bin[4096], cg[64], cri[700], tag[32], pod[700], body[1024];
	/* kubelet's layout: var/log/pods/<ns>_<pod>_<uid>/<container>/0.log */
	snprintf(nd->logroot, sizeof(nd->logroot), "%s/logs-%d", f->dir, k);
	snprintf(cri, sizeof(cri), "%s/var/log/pods/shop_web-%d_uid-%d/main", nd->logroot, k, k);
	mkdirs(cri);
	strcat(cri, "/0.log");
	itest_bin(bin, sizeof(bin), "tests/corral-load");
	snprintf(cg, sizeof(cg), "corral-mn%d-%d/web", (int)getpid(), k);
	snprintf(tag, sizeof(tag), "load%d", k);
	char *largv[] = {bin, "--cgroup", cg, "--cpu", "0.05", "--mem", "4000000", "--log-every", "100",
	                 "--cri-log", cri, NULL};
	assert_int_equal(itest_spawn(&nd->load, f->dir, tag, largv), 0);
	if (itest_wait_log(&nd->load, "ready", 10000)) {
		itest_dump_log(&nd->load);
		fail_msg("node %d: workload did not start in its cgroup", k);
	}
	snprintf(nd->pods, sizeof(nd->pods), "%s/pods-%d", f->dir, k);
	assert_int_equal(mkdir(nd->pods, 0755), 0);
	snprintf(body, sizeof(body),
	         "{\"name\": \"web-%d\", \"namespace\": \"shop\", \"uid\": \"uid-%d\", \"status\": \"Running\","
	         " \"labels\": {\"app\": \"web\"}, \"ips\": [\"%s\"], \"containers\": [{\"name\": \"main\","
	         " \"image\": \"corral-load\", \"cgroup\": \"/web\"}]}\n",
	         k, k, nd->ip);
	snprintf(pod, sizeof(pod), "%s/web.json", nd->pods);
	itest_write_file(pod, body);

	snprintf(nd->state, sizeof(nd->state), "%s/state-%d", f->dir, k);
	char agent[4096], netns[128];
	itest_bin(agent, sizeof(agent), "corral-agent");
	snprintf(netns, sizeof(netns), "--net=/run/netns/%s", nd->ns);
	snprintf(tag, sizeof(tag), "agent%d", k);
	char *aargv[] = {"/usr/bin/nsenter", netns,         "--",         agent,         "--node",    nd->name,
	                 "--aggregator",     f->url,        "--token-file", f->token,    "--interval", INTERVAL,
	                 "--listen",         "127.0.0.1:9301", "--cgroup-root", nd->cg.root, "--pods-dir", nd->pods,
	                 "--label-allowlist", "app",        "--state-dir", nd->state,    "--log-root", nd->logroot,
	                 NULL};
	assert_int_equal(itest_spawn(&nd->agent, f->dir, tag, aargv), 0);
}

/* ---- checks ------------------------------------------------------------------------------------------- */

static json_t *query(fixture *f, const char *promql)
{
	char enc[1024], url[1200];
	itest_urlencode(enc, sizeof(enc), promql);
	snprintf(url, sizeof(url), "%s/api/v1/query?query=%s", f->url, enc);
	long st = 0;
	json_t *j = itest_get_json(url, &st);
	if (st != 200) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Number of series the instant query returns (with a value > 0 when positive is set). */
static int count_series(fixture *f, const char *promql, int positive)
{
	json_t *j = query(f, promql), *r = json_object_get(json_object_get(j, "data"), "result"), *s;
	size_t i;
	int n = 0;
	json_array_foreach(r, i, s)
	{
		const char *v = json_string_value(json_array_get(json_object_get(s, "value"), 1));
		n += !positive || (v && atof(v) > 0);
	}
	json_decref(j);
	return n;
}

static int wait_series(fixture *f, const char *promql, int timeout_ms)
{
	int64_t end = itest_now_ms() + timeout_ms;
	do {
		if (count_series(f, promql, 1) > 0)
			return 0;
		itest_sleep_ms(200);
	} while (itest_now_ms() < end);
	return -1;
}

static char DIG[8192];

static const char *dig_web(fixture *f)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "dig +short +tries=1 +time=1 -p %d @127.0.0.1 web.shop.svc.cluster.local A",
	         f->dns_port);
	itest_capture(cmd, DIG, sizeof(DIG));
	return DIG;
}

static int has_ip(const char *answer, const char *ip)
{
	size_t l = strlen(ip);
	for (const char *p = answer; (p = strstr(p, ip)); p += l)
		if ((p == answer || p[-1] == '\n') && (p[l] == '\n' || !p[l]))
			return 1;
	return 0;
}

/* Waits until the answer holds (want 1) or lacks (want 0) ip; returns the time it took or -1. */
static int64_t wait_ip(fixture *f, const char *ip, int want, int timeout_ms)
{
	int64_t t0 = itest_now_ms();
	do {
		if (has_ip(dig_web(f), ip) == want)
			return itest_now_ms() - t0;
		itest_sleep_ms(100);
	} while (itest_now_ms() - t0 < timeout_ms);
	return -1;
}

static int node_ready(fixture *f, const char *name)
{
	char url[256];
	snprintf(url, sizeof(url), "%s/api/v1/inventory?node=%s", f->url, name);
	long st = 0;
	json_t *j = itest_get_json(url, &st);
	json_t *ready = json_object_get(json_array_get(json_object_get(j, "data"), 0), "ready");
	int r = json_is_boolean(ready) ? json_is_true(ready) : -1;
	json_decref(j);
	return r;
}

static void count_line(void *ctx, const char *line)
{
	(void)line;
	(*(int *)ctx)++;
}

static int log_lines(fixture *f, int k)
{
	char q[128];
	snprintf(q, sizeof(q), "{node=\"mn-%d\", pod=\"web-%d\"}", k, k);
	int n = 0;
	long long now_ns = itest_now_ms() * 1000000LL;
	itest_loki_forward(f->url, q, now_ns - 600000000000LL, now_ns + 60000000000LL, count_line, &n);
	return n;
}

/* ---- the test ------------------------------------------------------------------------------------- */

static void test_three_nodes(void **state)
{
	fixture *f = *state;
	char q[256];
	for (int k = 1; k <= NODES; k++) {
		node *nd = &f->n[k - 1];
		snprintf(q, sizeof(q), "container_cpu_usage_seconds_total{node=\"%s\", id=\"/web\", pod=\"web-%d\"}",
		         nd->name, k);
		if (wait_series(f, q, 20000)) {
			itest_dump_log(&nd->agent);
			fail_msg("no CPU usage of node %d's workload", k);
		}
		snprintf(q, sizeof(q), "node_network_receive_bytes_total{node=\"%s\", device=\"%s\"}", nd->name,
		         nd->veth_n);
		assert_int_equal(wait_series(f, q, 5000), 0); /* the agent really runs in its namespace */
		snprintf(q, sizeof(q), "node_network_receive_bytes_total{node=\"%s\", device=\"%s\"}", nd->name,
		         f->n[k % NODES].veth_n);
		assert_int_equal(count_series(f, q, 0), 0); /* and sees no other node's interface */
		snprintf(q, sizeof(q), "container_memory_usage_bytes{node=\"%s\", id=\"/web\"}", nd->name);
		assert_int_equal(count_series(f, q, 1), 1);
		int ready = -1; /* the inventory is recorded just after the batch's samples are stored */
		for (int64_t end = itest_now_ms() + 5000; ready != 1 && itest_now_ms() < end; itest_sleep_ms(100))
			ready = node_ready(f, nd->name);
		assert_int_equal(ready, 1);
	}
	for (int k = 1; k <= NODES; k++) {
		int64_t end = itest_now_ms() + 10000;
		int n = 0;
		while ((n = log_lines(f, k)) < 5 && itest_now_ms() < end)
			itest_sleep_ms(300);
		printf("multinode: node %d: %d log lines through the Loki API\n", k, n);
		assert_true(n >= 5);
	}
	for (int k = 1; k <= NODES; k++)
		assert_true(wait_ip(f, f->n[k - 1].ip, 1, 15000) >= 0);

	/* node 2's agent dies */
	node *dead = &f->n[1];
	itest_stop(&dead->agent, SIGKILL, 5000);
	int64_t gone = wait_ip(f, dead->ip, 0, GRACE_MS + SLACK_MS + 5000);
	printf("multinode: node 2's pod left the DNS answer %lld ms after its agent was killed (grace %d ms)\n",
	       (long long)gone, GRACE_MS);
	assert_true(gone >= 0 && gone <= GRACE_MS + SLACK_MS);
	assert_int_equal(node_ready(f, dead->name), 0);
	assert_true(has_ip(dig_web(f), f->n[0].ip));
	assert_true(has_ip(DIG, f->n[2].ip));
	assert_int_equal(node_ready(f, f->n[0].name), 1);
	assert_int_equal(node_ready(f, f->n[2].name), 1);
}

static int setup(void **state)
{
	if (geteuid() != 0 || !have("ip") || !have("nsenter") || !have("dig")) {
		printf("multinode: needs root, ip, nsenter and dig: skipped\n");
		*state = NULL;
		return 0;
	}
	fixture *f = calloc(1, sizeof(*f));
	*state = f;
	itest_mkdtemp(f->dir, sizeof(f->dir));
	f->net = 100 + (int)getpid() % 100;
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	itest_write_file(f->token, TOKEN "\n");
	snprintf(f->services, sizeof(f->services), "%s/services.json", f->dir);
	itest_write_file(f->services,
	                 "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":"
	                 "\"shop\"},\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"web\"},\"ports\":"
	                 "[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":80}]}}\n");
	for (int k = 1; k <= NODES; k++)
		if (net_up(f, &f->n[k - 1], k))
			return f->broken = "could not make the namespaces and veth pairs", 0;
	/* the aggregator on node 1's host-side address: every namespace routes there */
	snprintf(f->url, sizeof(f->url), "http://%s:%d", f->n[0].host_ip, itest_port());
	f->dns_port = itest_port();
	char data[300], dns[64], grace[16];
	snprintf(data, sizeof(data), "%s/data", f->dir);
	snprintf(dns, sizeof(dns), "127.0.0.1:%d", f->dns_port);
	snprintf(grace, sizeof(grace), "%dms", GRACE_MS);
	const char *extra[] = {"--dns-listen", dns,     "--services", f->services, "--node-grace",
	                       grace,          "--dns-threads", "1",   NULL};
	if (itest_aggregator_start(&f->agg, f->dir, data, f->token, extra, f->url, sizeof(f->url)))
		f->broken = "the aggregator did not start";
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (!f)
		return 0;
	int bad = 0;
	for (int k = 0; k < NODES; k++) {
		node *nd = &f->n[k];
		if (nd->agent.pid > 0 && itest_stop(&nd->agent, SIGTERM, 10000)) {
			itest_dump_log(&nd->agent);
			bad = 1;
		}
		if (nd->load.pid > 0)
			itest_stop(&nd->load, SIGTERM, 10000);
		itest_cgtree_remove(&nd->cg);
	}
	if (f->agg.pid > 0 && itest_aggregator_stop(&f->agg))
		bad = 1;
	for (int k = 0; k < NODES; k++)
		net_down(&f->n[k]);
	itest_rmtree(f->dir);
	free(f);
	return bad;
}

static void run(void **state)
{
	fixture *f = *state;
	if (!f)
		skip();
	if (f->broken)
		fail_msg("setup: %s", f->broken);
	for (int k = 1; k <= NODES; k++) {
		char name[64];
		snprintf(name, sizeof(name), "corral-mn%d-%d", (int)getpid(), k);
		assert_int_equal(itest_cgtree_make(&f->n[k - 1].cg, f->dir, name), 0);
		start_node(f, &f->n[k - 1], k);
	}
	test_three_nodes(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(run, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
