/* test_capacity_live.c -- capacity reports on a live run: real cgroups, a real agent and aggregator.
 *
 * Two tests/corral-load workloads run in test cgroups of their own below this process's cgroup, each
 * burning a whole CPU held back by a CFS quota this test writes (the kernel, not the burner's wall-clock
 * arithmetic, decides the usage, so a busy machine does not skew it):
 *   w0  quota 30000/100000 us (0.3 cores), holds 64 MiB; its pod file asks for 300m / 64Mi with limits
 *       300m / 128Mi;
 *   w1  quota 15000/100000 us (0.15 cores), holds 32 MiB; its pod file has no resources, so its requests
 *       come from its cgroup settings: cpu.shares 512 (v2: cpu.weight 20), the quota, a 256 MiB
 *       memory limit.
 * On cgroup v1 the workloads' cgroups sit below parents this test makes, and the agent's --cgroup-root
 * is a directory of links to those parents, so it sees our two workloads, not the whole host; the parent
 * has the largest CPU weight, so on a busy machine the quotas, not contention, decide the usage.
 * The agent (1 s interval, --pods-dir) pushes to the aggregator (reservations 250m and 512Mi). After
 * 34 s the nodes report over the last 30 s must show the node's requests, limits and usage within 5 %
 * of what the workloads were configured to do, its capacity as this machine's CPUs and MemTotal and
 * its allocatable as capacity minus the reservations; the workloads report names w1's requests as
 * derived from cgroup settings; and the fit report for 100m / 64Mi must agree with a brute-force
 * packing of that shape onto the node's free capacity, by requests (from the configured figures) and by
 * usage (from the nodes report at the same time). corralctl capacity nodes prints the node's row.
 * Needs root (cgroups); skips otherwise. About 40 s.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

#define MiB        1048576.0
#define WINDOW_S   30
#define RESERVED_CPU 0.25
#define RESERVED_MEM (512 * MiB)

typedef itest_load load;

typedef struct fixture {
	char dir[256], token[300], url[64], pods[300];
	itest_proc agg, agent;
	load w[2];
	int v2;
	char cgroot[300];        /* v1: the agent's --cgroup-root, links to the parents below ("" on v2) */
	char parents[3][4200];   /* v1: our parent cgroup in cpuacct, cpu and memory, "" when not made */
} fixture;

/* ---- an isolated cgroup tree (v1) ---------------------------------------------------------------- */

static const char *const ctls[3] = {"cpuacct", "cpu", "memory"};

/* Our path in the v1 hierarchy holding controller ctl ("" = the root). */
static void own_path(const char *ctl, char *out, size_t cap)
{
	FILE *fp = fopen("/proc/self/cgroup", "r");
	char line[4096];
	out[0] = 0;
	while (fp && fgets(line, sizeof(line), fp)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		c2[1 + strcspn(c2 + 1, "\n")] = 0;
		int match = 0;
		for (char *save, *tok = strtok_r(c1 + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			match |= !strcmp(tok, ctl);
		if (match)
			snprintf(out, cap, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
	}
	if (fp)
		fclose(fp);
}

/* v1: a parent cgroup of our own in each hierarchy, and a directory of links to them that the agent
 * takes as its cgroup root, so it walks our workloads only, not the host's thousands of cgroups (it
 * keeps ~20 descriptors per cgroup: a busy CI host would exhaust them). The workloads' ids are then
 * "/<name>" in every hierarchy. */
static void make_parents(fixture *f)
{
	snprintf(f->cgroot, sizeof(f->cgroot), "%s/cgroot", f->dir);
	assert_int_equal(mkdir(f->cgroot, 0755), 0);
	for (int i = 0; i < 3; i++) {
		char own[4096], link[400];
		own_path(ctls[i], own, sizeof(own));
		snprintf(f->parents[i], sizeof(f->parents[i]), "/sys/fs/cgroup/%s%s/corral-cap-%d", ctls[i], own,
		         (int)getpid());
		if (mkdir(f->parents[i], 0755) && errno != EEXIST) /* cpu and cpuacct may be one hierarchy */
			fail_msg("mkdir %s: %s", f->parents[i], strerror(errno));
		snprintf(link, sizeof(link), "%s/%s", f->cgroot, ctls[i]);
		assert_int_equal(symlink(f->parents[i], link), 0);
	}
	/* the most CPU weight v1 allows: on a busy machine the quotas, not contention, bound the usage */
	char path[4300];
	snprintf(path, sizeof(path), "%s/cpu.shares", f->parents[1]);
	itest_write_file(path, "262144");
}

static void remove_parents(fixture *f)
{
	for (int i = 2; i >= 0; i--) {
		char link[400];
		snprintf(link, sizeof(link), "%s/%s", f->cgroot, ctls[i]);
		unlink(link);
		if (f->parents[i][0])
			rmdir(f->parents[i]);
	}
}

static void start_load(fixture *f, int i, const char *cpu, const char *mem)
{
	load *w = &f->w[i];
	char bin[4096], name[64], tag[16], script[20000];
	itest_bin(bin, sizeof(bin), "tests/corral-load");
	snprintf(name, sizeof(name), "w%d", i);
	snprintf(tag, sizeof(tag), "load%d", i);
	/* v1: the shell moves into our parents first, so corral-load makes its cgroup below them */
	snprintf(script, sizeof(script),
	         "for d in '%s' '%s' '%s'; do echo $$ > \"$d/cgroup.procs\" || exit 1; done; "
	         "exec '%s' --cgroup %s --cpu %s --mem %s",
	         f->parents[0], f->parents[1], f->parents[2], bin, name, cpu, mem);
	char *argv_v1[] = {"/bin/sh", "-c", script, NULL};
	char *argv_v2[] = {bin, "--cgroup", name, "--cpu", (char *)cpu, "--mem", (char *)mem, NULL};
	if (itest_load_start(w, f->dir, tag, f->v2 ? argv_v2 : argv_v1))
		fail_msg("workload did not start in its cgroup");
	if (!f->v2) /* ids below the agent's root of links */
		snprintf(w->id, sizeof(w->id), "/%s", name);
}

/* Writes value to file in each of the workload's cgroup directories that has it; 1 when one had. */
static int set_cgroup(load *w, const char *file, const char *value)
{
	int done = 0;
	for (int i = 0; i < w->ndirs; i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%s/%s", w->dirs[i], file);
		if (access(path, W_OK))
			continue;
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		fputs(value, fp);
		assert_int_equal(fclose(fp), 0);
		done = 1;
	}
	return done;
}

static void write_pod(fixture *f, int i, const char *resources)
{
	char path[400], tmp[420], body[8192];
	snprintf(body, sizeof(body),
	         "{\"name\": \"cap-w%d\", \"namespace\": \"capacity\", \"status\": \"Running\","
	         " \"labels\": {\"app\": \"w%d\"}, \"containers\": [{\"name\": \"load\", \"image\": \"corral-load\","
	         " \"cgroup\": \"%s\"%s}]}\n",
	         i, i, f->w[i].id, resources);
	snprintf(path, sizeof(path), "%s/w%d.json", f->pods, i);
	snprintf(tmp, sizeof(tmp), "%s/.w%d.tmp", f->pods, i);
	itest_write_file(tmp, body);
	assert_int_equal(rename(tmp, path), 0);
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64];
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	char *argv[] = {bin,      "--node",     "cap-node", "--aggregator", f->url,  "--token-file",   f->token,
	                "--interval", "1s",     "--listen", listen,         "--pods-dir", f->pods, "--meta-refresh",
	                "1s",     "--label-allowlist", "app", f->v2 ? NULL : "--cgroup-root", f->cgroot, NULL};
	assert_int_equal(itest_spawn(&f->agent, f->dir, "agent", argv), 0);
}

/* ---- reading the reports ------------------------------------------------------------------------- */

static json_t *report(fixture *f, const char *what, long end_s, const char *extra)
{
	char url[512];
	long status;
	snprintf(url, sizeof(url), "%s/api/v1/capacity/%s?window=%ds&time=%ld%s", f->url, what, WINDOW_S, end_s, extra);
	json_t *j = itest_get_json(url, &status);
	if (status != 200 || !j) {
		itest_dump_log(&f->agg);
		fail_msg("%s: status %ld", url, status);
	}
	json_t *d = json_incref(json_object_get(j, "data"));
	json_decref(j);
	return d;
}

static double num(json_t *o, const char *a, const char *b)
{
	json_t *v = json_object_get(b ? json_object_get(o, a) : o, b ? b : a);
	if (!json_is_number(v))
		fail_msg("%s.%s is not a number", a, b ? b : "");
	return json_number_value(v);
}

static void within(const char *what, double got, double want, double rel)
{
	printf("capacity live: %-22s %.6g (configured %.6g, %+.2f %%)\n", what, got, want,
	       want ? 100 * (got - want) / want : 0);
	fflush(stdout);
	if (fabs(got - want) > rel * fabs(want))
		fail_msg("%s: %g, want %g within %.0f %%", what, got, want, rel * 100);
}

static json_t *node_of(fixture *f, json_t *d, const char *name)
{
	json_t *n;
	size_t i;
	json_array_foreach(json_object_get(d, "nodes"), i, n) if (!strcmp(json_string_value(json_object_get(n, "node")),
	                                                                   name)) return n;
	itest_dump_log(&f->agent);
	itest_dump_log(&f->agg);
	char *txt = json_dumps(d, JSON_COMPACT);
	fail_msg("node %s not in the report: %.2000s", name, txt);
	return NULL;
}

static double mem_total(void)
{
	FILE *fp = fopen("/proc/meminfo", "r");
	char line[256];
	double kb = 0;
	while (fp && fgets(line, sizeof(line), fp))
		if (sscanf(line, "MemTotal: %lf kB", &kb) == 1)
			break;
	if (fp)
		fclose(fp);
	return kb * 1024;
}

/* Brute force: places pods of (cpu, mem) one by one while both still fit. */
static long pack(double free_cpu, double free_mem, double cpu, double mem)
{
	long n = 0;
	while (n < 1000000 && free_cpu >= cpu - 1e-9 && free_mem >= mem - 1e-9)
		free_cpu -= cpu, free_mem -= mem, n++;
	return n;
}

/* corralctl capacity nodes prints the node's row: requests 800m of 1750m allocatable, 46 %. */
static void check_corralctl(fixture *f, long end_s)
{
	char bin[4096], cmd[8400], out[8192];
	itest_bin(bin, sizeof(bin), "corralctl");
	snprintf(cmd, sizeof(cmd), "'%s' --url %s --window %ds --time %ld capacity nodes 2>&1", bin, f->url, WINDOW_S,
	         end_s);
	assert_int_equal(itest_capture(cmd, out, sizeof(out)), 0);
	printf("%s", out);
	const char *row = strstr(out, "\ncap-node ");
	assert_non_null(row);
	assert_non_null(strstr(row, " 800m (46%) "));
	assert_non_null(strstr(out, "CPU REQUESTS"));
}

/* ---- the test --------------------------------------------------------------------------------------- */

static void test_capacity_live(void **state)
{
	fixture *f = *state;
	if (geteuid() != 0) {
		print_message("needs root to make test cgroups\n");
		skip();
	}
	struct stat st;
	f->v2 = stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0;
	if (!f->v2)
		make_parents(f);
	start_load(f, 0, "1", "67108864");
	start_load(f, 1, "1", "33554432");
	assert_true(f->v2 ? set_cgroup(&f->w[0], "cpu.max", "30000 100000")
	                  : set_cgroup(&f->w[0], "cpu.cfs_quota_us", "30000"));
	assert_true(f->v2 ? set_cgroup(&f->w[1], "cpu.max", "15000 100000")
	                  : set_cgroup(&f->w[1], "cpu.cfs_quota_us", "15000"));
	/* w1's request through the CPU weight (the agent's v2 conversion: 2 + (w - 1) * 262142 / 9999) */
	double w1_req = f->v2 ? (2 + (20 - 1) * 262142 / 9999) / 1024.0 : 512 / 1024.0;
	assert_true(set_cgroup(&f->w[1], f->v2 ? "cpu.weight" : "cpu.shares", f->v2 ? "20" : "512"));
	assert_true(set_cgroup(&f->w[1], f->v2 ? "memory.max" : "memory.limit_in_bytes", "268435456"));
	write_pod(f, 0, ", \"requests\": {\"cpu\": \"300m\", \"memory\": \"64Mi\"},"
	                " \"limits\": {\"cpu\": \"300m\", \"memory\": \"128Mi\"}");
	write_pod(f, 1, "");
	int64_t t0 = itest_now_ms();
	start_agent(f);
	itest_sleep_ms((WINDOW_S + 4) * 1000 - (int)(itest_now_ms() - t0));
	long end_s = (long)(itest_now_ms() / 1000);

	json_t *nodes = report(f, "nodes", end_s, ""), *n = node_of(f, nodes, "cap-node");
	double cores = (double)sysconf(_SC_NPROCESSORS_ONLN), mem = mem_total();
	assert_int_equal((int)num(n, "pods", NULL), 2);
	within("cpu capacity", num(n, "cpu", "capacity"), cores, 1e-9);
	within("cpu allocatable", num(n, "cpu", "allocatable"), cores - RESERVED_CPU, 1e-9);
	within("memory allocatable", num(n, "memory", "allocatable"), mem - RESERVED_MEM, 1e-6);
	within("cpu requests", num(n, "cpu", "requests"), 0.3 + w1_req, 0.05);
	within("cpu limits", num(n, "cpu", "limits"), 0.3 + 0.15, 0.05);
	within("memory requests", num(n, "memory", "requests"), 64 * MiB, 0.05);
	within("memory limits", num(n, "memory", "limits"), 128 * MiB + 256 * MiB, 0.05);
	within("cpu used p50", num(n, "cpu", "used_p50"), 0.45, 0.05);
	within("memory used p50", num(n, "memory", "used_p50"), 96 * MiB, 0.05);
	within("memory used max", num(n, "memory", "used_max"), 96 * MiB, 0.05);

	json_t *wl = report(f, "workloads", end_s, "&namespace=capacity"), *w;
	size_t i, seen = 0;
	json_array_foreach(json_object_get(wl, "workloads"), i, w)
	{
		const char *name = json_string_value(json_object_get(w, "workload"));
		const char *from = json_string_value(json_object_get(w, "requests_from"));
		seen++;
		assert_string_equal(from, !strcmp(name, "w1") ? "cgroup" : "pod_spec");
		if (!strcmp(name, "w1"))
			within("w1 cpu limit", num(w, "cpu", "limit"), 0.15, 1e-6);
	}
	assert_int_equal(seen, 2);

	/* fit: by requests from the configured figures, by usage from the nodes report's free capacity */
	json_t *fit = report(f, "fit", end_s, "&cpu=100m&memory=64Mi"), *fn = node_of(f, fit, "cap-node");
	long want_req = pack(cores - RESERVED_CPU - 0.3 - w1_req, mem - RESERVED_MEM - 64 * MiB, 0.1, 64 * MiB);
	long want_use = pack(num(n, "cpu", "free_by_usage"), num(n, "memory", "free_by_usage"), 0.1, 64 * MiB);
	printf("capacity live: fit 100m/64Mi by requests %ld (brute force %ld), by usage %ld (brute force %ld)\n",
	       (long)num(fn, "by_requests", NULL), want_req, (long)num(fn, "by_usage", NULL), want_use);
	assert_int_equal((long)num(fn, "by_requests", NULL), want_req);
	assert_int_equal((long)num(fn, "by_usage", NULL), want_use);
	json_decref(fit);
	json_decref(wl);
	json_decref(nodes);
	check_corralctl(f, end_s);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->pods, sizeof(f->pods), "%s/pods", f->dir);
	itest_write_file(f->token, "cap-token\n");
	mkdir(f->pods, 0755);
	char data[300];
	snprintf(data, sizeof(data), "%s/data", f->dir);
	const char *extra[] = {"--dns-listen", "off", "--capacity-reserved-cpu", "250m", "--capacity-reserved-memory",
	                       "512Mi", NULL};
	*state = f;
	return itest_aggregator_start(&f->agg, f->dir, data, f->token, extra, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	for (int i = 0; i < 2; i++)
		if (f->w[i].p.pid > 0)
			itest_stop(&f->w[i].p, SIGTERM, 10000);
	if (f->agent.pid > 0)
		itest_stop(&f->agent, SIGTERM, 10000);
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	if (f->cgroot[0])
		remove_parents(f);
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_capacity_live, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
