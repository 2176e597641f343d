/* test_agent_inventory.c -- inventory and container events travel from the agent to the aggregator's
 * /api/v1/inventory and /api/v1/events, kept in state.db across an aggregator restart.
 *
 * The agent runs on temp copies of the fixture trees (tests/data/cgroup-v2, tests/data/pods) at a
 * 200 ms interval with --inventory-interval 1s, so no root is needed and the test can change them:
 *   events      a containerd container directory made in the pod's cgroup is a "started" event with
 *               the pod's names from the pods dir; removed, a "stopped" one; the fixture container's
 *               memory.events oom_kill raised from 2 to 5 is an "oom_killed" event counting 3. Each
 *               exactly once (batches are deduped before the state is written).
 *   inventory   the pods dir's pods with allowlisted labels only, IPs, images, requests and limits; a
 *               pod file added shows up; the broken.json fixture costs that file only.
 *   restart     after an aggregator restart both answers are the same (sqlite, not memory).
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
#include <sys/wait.h>

#include "itest.h"

#define POD_DIR                                                                                                        \
	"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a3b_0000_4000_8000_000000000001.slice"
#define C0 "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
#define E1 "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"

typedef struct fixture {
	char dir[256], token[300], data[320], cg[320], pods[320], url[128], agent_url[128];
	itest_proc agg, agent;
} fixture;

static void copy_fixture(const char *rel, const char *dst)
{
	char cmd[1200];
	const char *src = getenv("CORRAL_SRC");
	snprintf(cmd, sizeof(cmd), "cp -r '%s/tests/data/%s' '%s'", src ? src : ".", rel, dst);
	assert_int_equal(system(cmd), 0);
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64], procroot[4096];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(f->agent_url, sizeof(f->agent_url), "http://%s", listen);
	char *argv[] = {bin,        "--node",
	                "inv-node", "--aggregator",
	                f->url,     "--token-file",
	                f->token,   "--interval",
	                "200ms",    "--listen",
	                listen,     "--cgroup-root",
	                f->cg,      "--proc-root",
	                procroot,   "--pods-dir",
	                f->pods,    "--label-allowlist",
	                "app",      "--inventory-interval",
	                "1s",       "--meta-refresh",
	                "200ms",    NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
	char health[160];
	snprintf(health, sizeof(health), "%s/healthz", f->agent_url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

static json_t *get_data(fixture *f, const char *path)
{
	char url[512];
	long status;
	snprintf(url, sizeof(url), "%s%s", f->url, path);
	json_t *j = itest_get_json(url, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "success");
	json_t *d = json_incref(json_object_get(j, "data"));
	json_decref(j);
	assert_true(json_is_array(d));
	return d;
}

static const char *sget(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

/* Waits until /api/v1/events?node=inv-node&type=T has n events; returns them. */
static json_t *wait_events(fixture *f, const char *type, size_t n)
{
	char path[128];
	snprintf(path, sizeof(path), "/api/v1/events?node=inv-node&type=%s", type);
	for (int waited = 0;; waited += 100) {
		json_t *d = get_data(f, path);
		if (json_array_size(d) >= n || waited >= 10000)
			return d;
		json_decref(d);
		itest_sleep_ms(100);
	}
}

static json_t *find_pod(json_t *node, const char *name)
{
	json_t *p;
	size_t i;
	json_array_foreach(json_object_get(node, "pods"), i, p) if (!strcmp(sget(p, "name"), name)) return p;
	return NULL;
}

/* Waits until the node's inventory has pod name (or gives up after 10 s); returns the node object. */
static json_t *wait_inventory(fixture *f, const char *pod)
{
	for (int waited = 0;; waited += 100) {
		json_t *d = get_data(f, "/api/v1/inventory?node=inv-node");
		json_t *n = json_array_get(d, 0);
		if ((n && find_pod(n, pod)) || waited >= 10000) {
			json_incref(n);
			json_decref(d);
			return n;
		}
		json_decref(d);
		itest_sleep_ms(100);
	}
}

static void check_inventory(json_t *n)
{
	assert_non_null(n);
	assert_string_equal(sget(n, "node"), "inv-node");
	assert_true(json_integer_value(json_object_get(n, "last_seen_ms")) > 0);
	assert_string_equal(sget(json_object_get(n, "facts"), "agent_version"), CM_VERSION);
	json_t *web = find_pod(n, "web-7d4b9c"), *cron = find_pod(n, "cron");
	assert_non_null(web);
	assert_non_null(cron);
	assert_string_equal(sget(web, "namespace"), "shop");
	assert_true(json_is_true(json_object_get(web, "ready")));
	json_t *labels = json_object_get(web, "labels");
	assert_int_equal(json_object_size(labels), 1); /* team and app.kubernetes.io/name not allowlisted */
	assert_string_equal(sget(labels, "app"), "web");
	assert_string_equal(json_string_value(json_array_get(json_object_get(web, "ips"), 0)), "10.244.1.17");
	json_t *nginx = json_array_get(json_object_get(web, "containers"), 0);
	assert_string_equal(sget(nginx, "image"), "nginx:1.25");
	assert_string_equal(sget(json_object_get(nginx, "requests"), "cpu"), "250m");
	assert_string_equal(sget(json_object_get(nginx, "limits"), "memory"), "128Mi");
	char *dump = json_dumps(n, 0);
	assert_null(strstr(dump, "hunter2")); /* the env entry of the fixture is never copied */
	free(dump);
}

static void check_events(fixture *f)
{
	json_t *st = wait_events(f, "started", 1), *sp = wait_events(f, "stopped", 1),
	       *oom = wait_events(f, "oom_killed", 1);
	assert_int_equal(json_array_size(st), 1);
	assert_int_equal(json_array_size(sp), 1);
	assert_int_equal(json_array_size(oom), 1);
	json_t *e = json_array_get(st, 0);
	assert_string_equal(sget(e, "container_id"), E1);
	assert_string_equal(sget(e, "pod"), "web-7d4b9c"); /* from the pod UID in its path */
	assert_string_equal(sget(e, "namespace"), "shop");
	assert_non_null(strstr(sget(e, "cgroup"), "cri-containerd-" E1 ".scope"));
	assert_string_equal(sget(json_array_get(sp, 0), "container_id"), E1);
	assert_true(json_integer_value(json_object_get(json_array_get(sp, 0), "time_ms")) >=
	            json_integer_value(json_object_get(e, "time_ms")));
	e = json_array_get(oom, 0);
	assert_string_equal(sget(e, "container"), "nginx");
	assert_string_equal(sget(e, "pod"), "web-7d4b9c");
	assert_int_equal(json_integer_value(json_object_get(e, "count")), 3);
	json_decref(st);
	json_decref(sp);
	json_decref(oom);
}

static void make_container(fixture *f)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/" POD_DIR "/cri-containerd-" E1 ".scope", f->cg);
	assert_int_equal(mkdir(path, 0755), 0);
	char file[1100];
	snprintf(file, sizeof(file), "%s/cpu.stat", path);
	itest_write_file(file, "usage_usec 1000000\nuser_usec 500000\nsystem_usec 500000\n");
}

static void test_inventory_and_events(void **state)
{
	fixture *f = *state;
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	start_agent(f);
	json_t *n = wait_inventory(f, "web-7d4b9c");
	check_inventory(n);
	json_decref(n);
	itest_sleep_ms(500); /* the agent has seen the tree once: what comes now is an event */
	make_container(f);
	json_decref(wait_events(f, "started", 1));
	char path[1024];
	snprintf(path, sizeof(path), "%s/" POD_DIR "/cri-containerd-" E1 ".scope", f->cg);
	itest_rmtree(path);
	snprintf(path, sizeof(path), "%s/" POD_DIR "/cri-containerd-" C0 ".scope/memory.events", f->cg);
	itest_write_file(path, "low 0\nhigh 0\nmax 7\noom 5\noom_kill 5\noom_group_kill 0\n");
	check_events(f);
	/* a new pod file is in the inventory within the refresh and inventory intervals */
	snprintf(path, sizeof(path), "%s/db.json", f->pods);
	itest_write_file(
	    path, "{\"name\": \"db-0\", \"namespace\": \"shop\", \"ips\": [\"10.244.1.30\"], "
	          "\"labels\": {\"app\": \"db\"}, \"containers\": [{\"name\": \"pg\", \"image\": \"postgres:16\"}]}");
	n = wait_inventory(f, "db-0");
	assert_non_null(find_pod(n, "db-0"));
	json_decref(n);
	/* restart the aggregator: the state is in sqlite */
	int st = itest_stop(&f->agent, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	itest_sleep_ms(300);
	st = itest_stop(&f->agg, SIGTERM, 10000);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url)), 0);
	n = wait_inventory(f, "db-0");
	check_inventory(n);
	json_decref(n);
	check_events(f);
	json_t *all = get_data(f, "/api/v1/events?node=inv-node&limit=2");
	assert_int_equal(json_array_size(all), 2);
	json_decref(all);
	char url[256];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(url, sizeof(url), "%s/api/v1/events?limit=-1", f->url);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, &b), 400);
	cm_buf_close(&b);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/agg", f->dir);
	snprintf(f->cg, sizeof(f->cg), "%s/cgroup-v2", f->dir);
	snprintf(f->pods, sizeof(f->pods), "%s/pods", f->dir);
	itest_write_file(f->token, "inv-token\n");
	copy_fixture("cgroup-v2", f->cg);
	copy_fixture("pods", f->pods);
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
	    cmocka_unit_test_setup_teardown(test_inventory_and_events, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
