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

#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

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

/* One pass of a node collector made for it. */
static int node_once(const char *root, const na_emit *e, cm_err *err)
{
	na__node *nd;
	assert_int_equal(na__node_open(root, &nd), 0);
	int rc = na__node_collect(nd, e, err);
	na__node_close(nd);
	return rc;
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
	assert_int_equal(node_once(root, &e, &err), 0);
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
	assert_int_equal(node_once(root, &e, NULL), 0);
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
	/* no loadavg, net/dev, diskstats, mounts here: reported, while cpu and memory are still collected */
	assert_int_equal(node_once(dir, &e, NULL), CM_ENOENT);
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
	assert_int_equal(node_once(dir, &e, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "/stat"));
	fmt_into(path, sizeof(path), "%s/stat", dir);
	write_file(path, "cpu0 1 1 1 1 1 1 1 1 0 0\n");
	assert_int_equal(node_once(dir, &e, &err), CM_ENOENT);
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
	assert_int_equal(node_once(root, &e, &err), SINK_STOP);
	assert_int_equal(s.n, 5);
	sink_clear(&s);
}

/* tests/data/proc/{loadavg,net/dev,diskstats,mounts}, stat's btime and boot_id, by hand. */
static void test_fixture_devices(void **state)
{
	(void)state;
	char root[PATH_MAX];
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	data_path(root, "proc");
	int64_t t0 = cm_now_ms();
	assert_int_equal(node_once(root, &e, &err), 0);
	assert_int_equal(s.dups, 0);
	const want w[] = {
		{"node_load1{}", 0.5}, {"node_load5{}", 1.25}, {"node_load15{}", 2.0},
		{"node_boot_time_seconds{}", 1795695385},
		{"corral_node_boot_info{boot_id=\"5f1e7c2a-3b4d-4e6f-8a9b-0c1d2e3f4a5b\"}", 1},
		{"node_network_receive_bytes_total{device=\"lo\"}", 4096},
		{"node_network_receive_bytes_total{device=\"eth0\"}", 2097152},
		{"node_network_receive_packets_total{device=\"eth0\"}", 3000},
		{"node_network_receive_errs_total{device=\"eth0\"}", 5},
		{"node_network_receive_drop_total{device=\"eth0\"}", 6},
		{"node_network_receive_fifo_total{device=\"eth0\"}", 7},
		{"node_network_receive_frame_total{device=\"eth0\"}", 8},
		{"node_network_receive_compressed_total{device=\"eth0\"}", 9},
		{"node_network_receive_multicast_total{device=\"eth0\"}", 10},
		{"node_network_transmit_bytes_total{device=\"eth0\"}", 1048576},
		{"node_network_transmit_packets_total{device=\"eth0\"}", 1500},
		{"node_network_transmit_errs_total{device=\"eth0\"}", 11},
		{"node_network_transmit_drop_total{device=\"eth0\"}", 12},
		{"node_network_transmit_fifo_total{device=\"eth0\"}", 13},
		{"node_network_transmit_colls_total{device=\"eth0\"}", 14},
		{"node_network_transmit_carrier_total{device=\"eth0\"}", 15},
		{"node_network_transmit_compressed_total{device=\"eth0\"}", 16},
		{"node_disk_reads_completed_total{device=\"vda\"}", 1000},
		{"node_disk_reads_merged_total{device=\"vda\"}", 10},
		{"node_disk_read_bytes_total{device=\"vda\"}", 2048 * 512},
		{"node_disk_read_time_seconds_total{device=\"vda\"}", 0.5},
		{"node_disk_writes_completed_total{device=\"vda\"}", 2000},
		{"node_disk_writes_merged_total{device=\"vda\"}", 20},
		{"node_disk_written_bytes_total{device=\"vda\"}", 4096 * 512},
		{"node_disk_write_time_seconds_total{device=\"vda\"}", 1.5},
		{"node_disk_io_now{device=\"vda\"}", 3},
		{"node_disk_io_time_seconds_total{device=\"vda\"}", 2.5},
		{"node_disk_io_time_weighted_seconds_total{device=\"vda\"}", 4.0},
		{"node_disk_read_bytes_total{device=\"dm-0\"}", 800 * 512}, /* 11 counters only: still read */
		{"node_disk_io_now{device=\"dm-0\"}", 1},
		{"node_filesystem_device_error{device=\"/dev/vdb\",fstype=\"ext4\",mountpoint=\"/nonexistent/with space\"}", 1},
		{"node_filesystem_device_error{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"}", 0},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(w); i++) {
		const sink_rec *r = sink_find(&s, w[i].key);
		if (!r || fabs(r->v - w[i].v) > 1e-9) {
			sink_dump(&s);
			fail_msg("%s = %g, want %g", w[i].key, r ? r->v : NAN, w[i].v);
		}
	}
	assert_int_equal(count_prefix(&s, "node_network_"), 2 * 16);
	assert_int_equal(count_prefix(&s, "node_disk_"), 2 * 11); /* loop0 and the partition vda1 skipped */
	/* only / is a real filesystem here (7 families) plus the error for the missing mount point */
	assert_int_equal(count_prefix(&s, "node_filesystem_"), 7 + 1);
	struct statvfs v;
	assert_int_equal(statvfs("/", &v), 0);
	const sink_rec *size = sink_find(&s, "node_filesystem_size_bytes{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"}");
	const sink_rec *files = sink_find(&s, "node_filesystem_files{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"}");
	assert_non_null(size);
	assert_non_null(files);
	assert_true(size->v == (double)v.f_blocks * (double)v.f_frsize);
	assert_true(files->v == (double)v.f_files);
	const sink_rec *now = sink_find(&s, "node_time_seconds{}");
	assert_non_null(now);
	assert_true(now->v * 1000 >= (double)t0 - 1 && now->v * 1000 <= (double)cm_now_ms() + 1);
	sink_clear(&s);
}

/* One device source missing costs that source only. */
static void test_device_source_missing(void **state)
{
	(void)state;
	char src[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 16];
	data_path(src, "proc");
	temp_dir(dir, "proc");
	rm_tree(dir);
	copy_tree(src, dir);
	fmt_into(path, sizeof(path), "%s/diskstats", dir);
	assert_int_equal(unlink(path), 0);
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	assert_int_equal(node_once(dir, &e, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "diskstats"));
	assert_int_equal(count_prefix(&s, "node_disk_"), 0);
	assert_int_equal(count_prefix(&s, "node_network_"), 32);
	assert_int_equal(count_prefix(&s, "node_filesystem_"), 8);
	assert_non_null(sink_find(&s, "node_load1{}"));
	sink_clear(&s);
	rm_tree(dir);
}

static void test_real_proc(void **state)
{
	(void)state;
	sink s = {0};
	na_emit e = sink_emit(&s);
	cm_err err = {{0}};
	if (node_once(NULL, &e, &err))
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

/* Files stay open from pass to pass and are read again from their start: a fixture file rewritten
 * between passes gives its new values, and on this host's /proc a filesystem mounted between passes
 * (in a mount namespace of this test) is seen by the next pass through poll(2) on the mounts file. */
static void test_files_kept_open(void **state)
{
	(void)state;
	char src[PATH_MAX], dir[PATH_MAX], path[PATH_MAX + 16], mnt[PATH_MAX], key[PATH_MAX + 128];
	data_path(src, "proc");
	temp_dir(dir, "proc");
	rm_tree(dir);
	copy_tree(src, dir);
	na__node *nd;
	sink s = {0};
	na_emit e = sink_emit(&s);
	assert_int_equal(na__node_open(dir, &nd), 0);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0);
	assert_true(sink_find(&s, "node_load1{}")->v != 9.5);
	fmt_into(path, sizeof(path), "%s/loadavg", dir);
	write_file(path, "9.50 0.25 0.12 1/100 4242\n");
	sink_clear(&s);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0);
	assert_true(sink_find(&s, "node_load1{}")->v == 9.5);
	sink_clear(&s);
	na__node_close(nd);
	rm_tree(dir);

	if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		print_message("no mount namespace here (%s): the mounts poll is not tested\n", strerror(errno));
		return;
	}
	temp_dir(mnt, "mnt");
	fmt_into(key, sizeof(key), "node_filesystem_size_bytes{device=\"corraltest\",fstype=\"tmpfs\",mountpoint=\"%s\"}",
		 mnt);
	assert_int_equal(na__node_open(NULL, &nd), 0);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0);
	assert_null(sink_find(&s, key));
	sink_clear(&s);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0); /* no change: the kept text */
	assert_null(sink_find(&s, key));
	sink_clear(&s);
	assert_int_equal(mount("corraltest", mnt, "tmpfs", 0, "size=1m"), 0);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0);
	assert_non_null(sink_find(&s, key));
	assert_true(sink_find(&s, key)->v == 1024.0 * 1024.0);
	sink_clear(&s);
	assert_int_equal(umount(mnt), 0);
	assert_int_equal(na__node_collect(nd, &e, NULL), 0);
	assert_null(sink_find(&s, key));
	sink_clear(&s);
	na__node_close(nd);
	rmdir(mnt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixture_cpu),
		cmocka_unit_test(test_fixture_meminfo),
		cmocka_unit_test(test_unparsable_lines_skipped),
		cmocka_unit_test(test_missing_file_is_error),
		cmocka_unit_test(test_emit_error_stops),
		cmocka_unit_test(test_fixture_devices),
		cmocka_unit_test(test_device_source_missing),
		cmocka_unit_test(test_real_proc),
		cmocka_unit_test(test_files_kept_open),
	};
	return cmocka_run_group_tests_name("na_node", tests, NULL, NULL);
}
