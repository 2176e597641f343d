/* test_na_node.c -- the node collector against tests/data/proc, broken /proc files and this host's /proc.
 *
 * Every cpu mode of every cpu in the fixture is checked against its tick count / USER_HZ; meminfo is
 * checked for the series count, kB scaling, the parenthesis rule and the unit-less HugePages_* lines.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "na_test.h"

/* tests/data/proc/stat, USER_HZ ticks: user nice system idle iowait irq softirq steal */
static const char *const modes[] = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"};
static const double ticks[4][8] = {
	{10000, 100, 3000, 500000, 200, 10, 300, 20},
	{20000, 200, 4000, 400000, 300, 20, 400, 30},
	{30000, 300, 5000, 300000, 400, 30, 500, 40},
	{40000, 400, 6000, 200000, 500, 40, 600, 50},
};

#define KiB 1024.0

static const want mem_want[] = {
	{"node_memory_MemTotal_bytes{}", 16777216 * KiB}, /* 16 GiB */
	{"node_memory_MemFree_bytes{}", 8388608 * KiB},
	{"node_memory_Active_anon_bytes{}", 262144 * KiB}, /* Active(anon) */
	{"node_memory_Inactive_file_bytes{}", 1966080 * KiB},
	{"node_memory_Committed_AS_bytes{}", 524288 * KiB},
	{"node_memory_NFS_Unstable_bytes{}", 0},
	{"node_memory_VmallocTotal_bytes{}", 34359738367 * KiB},
	{"node_memory_HugePages_Total{}", 16}, /* a page count: no unit, no _bytes, x1 */
	{"node_memory_HugePages_Free{}", 8},
	{"node_memory_Hugepagesize_bytes{}", 2048 * KiB},
	{"node_memory_DirectMap1G_bytes{}", 16777216 * KiB},
};

static double hz(void)
{
	long v = sysconf(_SC_CLK_TCK);
	return v > 0 ? (double)v : 100.0;
}

static size_t count_prefix(const sink *s, const char *prefix)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += strncmp(s->recs[i].key, prefix, strlen(prefix)) == 0;
	return n;
}

static void test_fixture_cpu(void **state)
{
	(void)state;
	char root[PATH_MAX], key[128];
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	data_path(root, "proc");
	assert_int_equal(na__node_collect(root, &e, &err), 0);
	assert_int_equal(s.dups, 0);
	assert_int_equal(count_prefix(&s, "node_cpu_seconds_total{"), 4 * 8); /* no aggregate "cpu " line */
	for (int cpu = 0; cpu < 4; cpu++) {
		for (int m = 0; m < 8; m++) {
			fmt_into(key, sizeof(key), "node_cpu_seconds_total{cpu=\"%d\",mode=\"%s\"}", cpu, modes[m]);
			const sink_rec *r = sink_find(&s, key);
			if (!r)
				fail_msg("%s missing", key);
			if (fabs(r->v - ticks[cpu][m] / hz()) > 1e-9)
				fail_msg("%s = %g, want %g", key, r->v, ticks[cpu][m] / hz());
		}
	}
	sink_clear(&s);
}

static void test_fixture_meminfo(void **state)
{
	(void)state;
	char root[PATH_MAX], path[PATH_MAX], text[8192];
	sink s = {0};
	na_emit e = sink_emit(&s);
	data_path(root, "proc");
	assert_int_equal(na__node_collect(root, &e, NULL), 0);
	for (size_t i = 0; i < CM_ARRAY_LEN(mem_want); i++) {
		const sink_rec *r = sink_find(&s, mem_want[i].key);
		if (!r)
			fail_msg("%s missing", mem_want[i].key);
		if (r->v != mem_want[i].v)
			fail_msg("%s = %.17g, want %.17g", mem_want[i].key, r->v, mem_want[i].v);
	}
	assert_null(sink_find(&s, "node_memory_HugePages_Total_bytes{}"));
	assert_non_null(sink_find(&s, "machine_cpu_cores{}"));
	assert_true(sink_find(&s, "machine_cpu_cores{}")->v == 4); /* cpu0..cpu3 in tests/data/proc/stat */
	assert_true(sink_find(&s, "machine_memory_bytes{}")->v == mem_want[0].v); /* MemTotal */
	assert_null(sink_find(&s, "node_memory_Active(anon)_bytes{}"));
	/* one series per meminfo line */
	data_path(path, "proc/meminfo");
	assert_int_equal(cm_read_file(path, text, sizeof(text), NULL), 0);
	size_t lines = 0;
	for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
		lines++;
	assert_int_equal(count_prefix(&s, "node_memory_"), lines);
	assert_int_equal(s.dups, 0);
	sink_clear(&s);
}

static void test_unparsable_lines_skipped(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX];
	sink s = {0};
	na_emit e = sink_emit(&s);
	temp_dir(dir, "proc");
	fmt_into(path, sizeof(path), "%s/stat", dir);
	write_file(path, "cpu  1 2 3 4 5 6 7 8 0 0\n"
			 "cpu0 100 200 300 400 500 600 700 800 0 0\n"
			 "cpu1 1 2 x 4 5 6 7 8 0 0\n"
			 "cpu2 1 2 3\n"
			 "cpu3 18446744073709551616 0 0 0 0 0 0 0 0 0\n"
			 "cpufoo 1 2 3 4 5 6 7 8\n"
			 "cpu\n"
			 "cpu5 -1 2 3 4 5 6 7 8\n"
			 "intr 1 2 3\n"
			 "cpu4 100 100 100 100 100 100 100 100"); /* no guest columns, no final newline */
	fmt_into(path, sizeof(path), "%s/meminfo", dir);
	write_file(path, "MemTotal:       1 kB\n"
			 "Bad line\n"
			 "Foo:          abc kB\n"
			 "Bar:            5 MB\n"
			 "Weird-Name:     1 kB\n"
			 "Baz:\n"
			 ":              5 kB\n"
			 "Neg:          -5 kB\n"
			 "Trailing:       5 kB x\n"
			 "HugePages_Total:   3\n"
			 "Last(x):        7 kB");
	assert_int_equal(na__node_collect(dir, &e, NULL), 0);
	assert_int_equal(count_prefix(&s, "node_cpu_seconds_total{cpu=\"0\""), 8);
	assert_int_equal(count_prefix(&s, "node_cpu_seconds_total{cpu=\"4\""), 8);
	assert_int_equal(count_prefix(&s, "node_cpu_seconds_total{"), 16);
	assert_true(fabs(sink_find(&s, "node_cpu_seconds_total{cpu=\"0\",mode=\"steal\"}")->v - 800 / hz()) < 1e-9);
	const want w[] = {{"node_memory_MemTotal_bytes{}", 1024},
			  {"node_memory_HugePages_Total{}", 3},
			  {"node_memory_Last_x_bytes{}", 7 * 1024}};
	for (size_t i = 0; i < CM_ARRAY_LEN(w); i++) {
		const sink_rec *r = sink_find(&s, w[i].key);
		assert_non_null(r);
		assert_true(r->v == w[i].v);
	}
	assert_int_equal(count_prefix(&s, "node_memory_"), CM_ARRAY_LEN(w));
	sink_clear(&s);
	rm_tree(dir);
}

static void test_missing_file_is_error(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX];
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	temp_dir(dir, "proc");
	assert_int_equal(na__node_collect(dir, &e, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "/stat"));
	fmt_into(path, sizeof(path), "%s/stat", dir);
	write_file(path, "cpu0 1 1 1 1 1 1 1 1 0 0\n");
	assert_int_equal(na__node_collect(dir, &e, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "/meminfo"));
	sink_clear(&s);
	rm_tree(dir);
}

static void test_emit_error_stops(void **state)
{
	(void)state;
	char root[PATH_MAX];
	sink s = {.stop_after = 5};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	data_path(root, "proc");
	assert_int_equal(na__node_collect(root, &e, &err), SINK_STOP);
	assert_int_equal(s.n, 5);
	sink_clear(&s);
}

static void test_real_proc(void **state)
{
	(void)state;
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	if (na__node_collect(NULL, &e, &err))
		fail_msg("%s", err.msg);
	const sink_rec *idle = sink_find(&s, "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}");
	const sink_rec *total = sink_find(&s, "node_memory_MemTotal_bytes{}");
	assert_non_null(idle);
	assert_non_null(total);
	assert_true(idle->v > 0);
	assert_true(total->v > 0);
	assert_int_equal(count_prefix(&s, "node_cpu_seconds_total{") % 8, 0);
	assert_int_equal(s.dups, 0);
	sink_clear(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_cpu),
		cmocka_unit_test(test_fixture_meminfo),
		cmocka_unit_test(test_unparsable_lines_skipped),
		cmocka_unit_test(test_missing_file_is_error),
		cmocka_unit_test(test_emit_error_stops),
		cmocka_unit_test(test_real_proc),
	};
	return cmocka_run_group_tests_name("na_node", tests, NULL, NULL);
}
