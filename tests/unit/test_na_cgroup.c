/* test_na_cgroup.c -- the cgroup collector against fixture trees, broken trees and this host's cgroups.
 *
 * Fixtures (tests/data/cgroup-v1, cgroup-v2; see tests/data/README.md) are checked value by value
 * against hand-computed tables (the runtime-layout cgroups of na_layouts.h included; their other
 * families are in test_na_layouts.c). Broken trees are temp copies: corrupt files, a cgroup removed from the
 * sink callback while the walk runs, symlinks, nesting past the depth bound and past PATH_MAX. The real-host
 * tests create corral-test-<pid> in our own cpuacct (v1) and unified (v2) cgroups, move a CPU-burning
 * child into it and watch its counter rise; they skip when not root or when the mount is not there, and
 * teardown always kills the child and removes the cgroup.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>

#include "na_test.h"
#include "na_layouts.h"

#define GiB (1024.0 * 1024 * 1024)
#define MiB (1024.0 * 1024)

#define CPU(id) "container_cpu_usage_seconds_total{id=\"" id "\"}"
#define MEM(id) "container_memory_usage_bytes{id=\"" id "\"}"
#define WS(id) "container_memory_working_set_bytes{id=\"" id "\"}"

/* ---- fixture paths and expectations ------------------------------------------------------------ */

#define V1_POD "/kubepods/burstable/pod6f1c2a3b-0000-4000-8000-000000000001"
#define V1_CTR V1_POD "/a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define V1_DOCKER "/docker/d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"

/* cpuacct.usage ns / 1e9; memory.usage_in_bytes; minus total_inactive_file, clamped at 0 */
static const want v1_want[] = {
	{CPU("/"), 100},
	{CPU("/kubepods"), 60},
	{CPU("/kubepods/burstable"), 40},
	{CPU(V1_POD), 30},
	{CPU(V1_CTR), 25},
	{CPU("/docker"), 10},
	{CPU(V1_DOCKER), 7.5},
	{CPU("/only-cpuacct"), 2.5},
	{MEM("/"), 8 * GiB},
	{WS("/"), 8 * GiB - 2 * GiB},
	{MEM("/kubepods"), 4 * GiB},
	{WS("/kubepods"), 4 * GiB - 1 * GiB},
	{MEM("/kubepods/burstable"), 2 * GiB},
	{WS("/kubepods/burstable"), 2 * GiB - 512 * MiB},
	{MEM(V1_POD), 1 * GiB},
	{WS(V1_POD), 1 * GiB - 256 * MiB},
	{MEM(V1_CTR), 768 * MiB},
	{WS(V1_CTR), 768 * MiB - 256 * MiB},
	{MEM("/docker"), 200 * MiB},
	{WS("/docker"), 200 * MiB - 100 * MiB},
	{MEM(V1_DOCKER), 100 * MiB},
	{WS(V1_DOCKER), 0}, /* total_inactive_file 200 MiB > usage 100 MiB */
	{MEM("/only-memory"), 50 * MiB},
	{WS("/only-memory"), 50 * MiB},
	/* the runtime layouts (na_layouts.h; every family in test_na_layouts.c); levels without memory files */
	{CPU(V1L_KS), 16},
	{CPU(V1L_KB), 6.5},
	{CPU(V1L_KBE), 4},
	{CPU("/kubepods/besteffort"), 3.5},
	{CPU("/system.slice"), 5.5},
	{CPU(V1L_CTRD_POD), 6.5},
	{MEM(V1L_CTRD_POD), 200 * MiB},
	{WS(V1L_CTRD_POD), 136 * MiB}, /* - total_inactive_file 64 MiB */
	{CPU(V1L_CTRD), 6},
	{MEM(V1L_CTRD), 192 * MiB},
	{WS(V1L_CTRD), 128 * MiB},     /* - 64 MiB */
	{CPU(V1L_CRIO_POD), 4},
	{MEM(V1L_CRIO_POD), 84 * MiB},
	{WS(V1L_CRIO_POD), 68 * MiB},  /* - 16 MiB */
	{CPU(V1L_CRIO), 3},
	{MEM(V1L_CRIO), 80 * MiB},
	{WS(V1L_CRIO), 64 * MiB},      /* - 16 MiB */
	{CPU(V1L_CRIO_CONMON), 0.5},
	{MEM(V1L_CRIO_CONMON), 2 * MiB},
	{WS(V1L_CRIO_CONMON), 2 * MiB}, /* total_inactive_file 0 */
	{CPU(V1L_DOCKER_POD), 5.5},
	{MEM(V1L_DOCKER_POD), 260 * MiB},
	{WS(V1L_DOCKER_POD), 228 * MiB}, /* - 32 MiB */
	{CPU(V1L_DOCKER), 5},
	{MEM(V1L_DOCKER), 256 * MiB},
	{WS(V1L_DOCKER), 224 * MiB},     /* - 32 MiB */
	{CPU(V1L_FS_G_POD), 7.5},
	{MEM(V1L_FS_G_POD), 66 * MiB},
	{WS(V1L_FS_G_POD), 58 * MiB},    /* - 8 MiB */
	{CPU(V1L_FS_G), 7},
	{MEM(V1L_FS_G), 64 * MiB},
	{WS(V1L_FS_G), 56 * MiB},        /* - 8 MiB */
	{CPU(V1L_FS_BE_POD), 3.5},
	{MEM(V1L_FS_BE_POD), 33 * MiB},
	{WS(V1L_FS_BE_POD), 29 * MiB},   /* - 4 MiB */
	{CPU(V1L_FS_BE), 3},
	{MEM(V1L_FS_BE), 32 * MiB},
	{WS(V1L_FS_BE), 28 * MiB},       /* - 4 MiB */
	{CPU(V1L_SERVICE), 5},
	{MEM(V1L_SERVICE), 16 * MiB},
	{WS(V1L_SERVICE), 14 * MiB},     /* - 2 MiB */
};

#define V2_KP "/kubepods.slice"
#define V2_KB V2_KP "/kubepods-burstable.slice"
#define V2_POD V2_KB "/kubepods-burstable-pod6f1c2a3b_0000_4000_8000_000000000001.slice"
#define V2_CTR V2_POD "/cri-containerd-c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0.scope"

/* cpu.stat usage_usec / 1e6; memory.current; minus memory.stat inactive_file, clamped at 0 */
static const want v2_want[] = {
	{CPU("/"), 500}, /* the root has no memory.current */
	{CPU(V2_KP), 300},
	{CPU(V2_KB), 200},
	{CPU(V2_POD), 150},
	{CPU(V2_CTR), 125},
	{CPU("/system.slice"), 100},
	{CPU("/system.slice/cron.service"), 50}, /* no memory controller there */
	{MEM(V2_KP), 4 * GiB},
	{WS(V2_KP), 4 * GiB - 1 * GiB},
	{MEM(V2_KB), 2 * GiB},
	{WS(V2_KB), 2 * GiB - 512 * MiB},
	{MEM(V2_POD), 1 * GiB},
	{WS(V2_POD), 1 * GiB - 256 * MiB},
	{MEM(V2_CTR), 768 * MiB},
	{WS(V2_CTR), 768 * MiB - 256 * MiB},
	{MEM("/system.slice"), 100 * MiB},
	{WS("/system.slice"), 0}, /* inactive_file 200 MiB > memory.current 100 MiB */
	/* the runtime layouts (na_layouts.h; every family in test_na_layouts.c); QoS levels have cpu.stat only */
	{CPU(V2L_DOCKER), 40},
	{MEM(V2L_DOCKER), 64 * MiB},
	{WS(V2L_DOCKER), 48 * MiB},     /* - inactive_file 16 MiB */
	{CPU(V2L_BE), 21},
	{CPU(V2L_CRIO_POD), 21},
	{MEM(V2L_CRIO_POD), 100 * MiB},
	{WS(V2L_CRIO_POD), 68 * MiB},   /* - 32 MiB */
	{CPU(V2L_CRIO), 20},
	{MEM(V2L_CRIO), 96 * MiB},
	{WS(V2L_CRIO), 64 * MiB},       /* - 32 MiB */
	{CPU(V2L_CRIO_PAUSE), 0.25},
	{MEM(V2L_CRIO_PAUSE), 1 * MiB},
	{WS(V2L_CRIO_PAUSE), 1 * MiB},  /* inactive_file 0 */
	{CPU(V2L_CRIO_CONMON), 0.5},
	{MEM(V2L_CRIO_CONMON), 2 * MiB},
	{WS(V2L_CRIO_CONMON), 2 * MiB}, /* inactive_file 0 */
	{CPU("/kubepods"), 52},
	{CPU("/kubepods/besteffort"), 9},
	{CPU("/kubepods/burstable"), 12},
	{CPU(V2L_FS_CRIO_POD), 12},
	{MEM(V2L_FS_CRIO_POD), 170 * MiB},
	{WS(V2L_FS_CRIO_POD), 122 * MiB}, /* - 48 MiB */
	{CPU(V2L_FS_CRIO), 11},
	{MEM(V2L_FS_CRIO), 160 * MiB},
	{WS(V2L_FS_CRIO), 112 * MiB},     /* - 48 MiB */
	{CPU(V2L_FS_CRIO_CONMON), 0.5},
	{MEM(V2L_FS_CRIO_CONMON), 2 * MiB},
	{WS(V2L_FS_CRIO_CONMON), 2 * MiB},
	{CPU(V2L_FS_BE_POD), 9},
	{MEM(V2L_FS_BE_POD), 50 * MiB},
	{WS(V2L_FS_BE_POD), 42 * MiB},  /* - 8 MiB */
	{CPU(V2L_FS_BE), 8},
	{MEM(V2L_FS_BE), 48 * MiB},
	{WS(V2L_FS_BE), 40 * MiB},      /* - 8 MiB */
	{CPU(V2L_FS_G_POD), 31},
	{MEM(V2L_FS_G_POD), 260 * MiB},
	{WS(V2L_FS_G_POD), 196 * MiB},  /* - 64 MiB */
	{CPU(V2L_FS_G), 30},
	{MEM(V2L_FS_G), 256 * MiB},
	{WS(V2L_FS_G), 192 * MiB},      /* - 64 MiB */
	{CPU(V2L_SD_G_POD), 11},
	{MEM(V2L_SD_G_POD), 130 * MiB},
	{WS(V2L_SD_G_POD), 98 * MiB},   /* - 32 MiB */
	{CPU(V2L_SD_G), 10},
	{MEM(V2L_SD_G), 128 * MiB},
	{WS(V2L_SD_G), 96 * MiB},       /* - 32 MiB */
};

/* The three families the original fixture tables cover; the full tables are in test_na_cgstat.c. */
static const char *const base_metrics[] = {"container_cpu_usage_seconds_total", "container_memory_usage_bytes",
					   "container_memory_working_set_bytes", NULL};

static int open_root(const char *root, na__cgroups **cg, cm_err *err)
{
	na__cgroups_opts o = {.root = root};
	return na__cgroups_open(&o, cg, err);
}

/* Opens root, checks the version, collects once into s (the base families unless s filters). */
static void collect_root(const char *root, int version, sink *s)
{
	na__cgroups *cg = NULL;
	cm_err err = {{0}};
	int rc = open_root(root, &cg, &err);
	if (rc)
		fail_msg("open %s: %s", root ? root : "(default root)", err.msg);
	assert_int_equal(na__cgroups_version(cg), version);
	if (!s->only)
		s->only = base_metrics;
	na_emit e = sink_emit(s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
	na__cgroups_close(cg);
}

static void collect_fixture(const char *rel, int version, sink *s)
{
	char root[PATH_MAX];
	data_path(root, rel);
	collect_root(root, version, s);
}

/* ---- fixtures ------------------------------------------------------------------------------------ */

static void test_v1_fixture_union(void **state)
{
	(void)state;
	sink s = {0};
	collect_fixture("cgroup-v1", 1, &s);
	check_exact(&s, v1_want, CM_ARRAY_LEN(v1_want), NULL, 0);
	sink_clear(&s);
}

static void test_v2_fixture(void **state)
{
	(void)state;
	sink s = {0};
	collect_fixture("cgroup-v2", 2, &s);
	check_exact(&s, v2_want, CM_ARRAY_LEN(v2_want), NULL, 0);
	sink_clear(&s);
}

static void test_collect_twice_same_result(void **state)
{
	(void)state;
	char root[PATH_MAX];
	na__cgroups *cg = NULL;
	data_path(root, "cgroup-v2");
	assert_int_equal(open_root(root, &cg, NULL), 0);
	for (int i = 0; i < 2; i++) {
		sink s = {.only = base_metrics};
		na_emit e = sink_emit(&s);
		assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
		check_exact(&s, v2_want, CM_ARRAY_LEN(v2_want), NULL, 0);
		sink_clear(&s);
	}
	na__cgroups_close(cg);
}

/* Past its descriptor budget the collector opens, reads and closes a file each pass: the same values,
 * never more than the budget kept open (2,000 cgroups at 20 files each exhaust many containers' limit). */
static void test_fd_budget(void **state)
{
	(void)state;
	char root[PATH_MAX];
	data_path(root, "cgroup-v2");
	for (size_t budget = 1; budget <= 9; budget += 8) {
		na__cgroups *cg = NULL;
		na__cgroups_opts o = {.root = root, .fd_budget = budget};
		assert_int_equal(na__cgroups_open(&o, &cg, NULL), 0);
		for (int i = 0; i < 2; i++) {
			sink s = {.only = base_metrics};
			na_emit e = sink_emit(&s);
			assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
			check_exact(&s, v2_want, CM_ARRAY_LEN(v2_want), NULL, 0);
			sink_clear(&s);
			assert_int_equal(cg->kept_fds, budget);
		}
		na__cgroups_close(cg);
	}
}

static void test_emit_error_stops_walk(void **state)
{
	(void)state;
	char root[PATH_MAX];
	na__cgroups *cg = NULL;
	sink s = {.stop_after = 3, .only = base_metrics};
	data_path(root, "cgroup-v1");
	assert_int_equal(open_root(root, &cg, NULL), 0);
	na_emit e = sink_emit(&s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), SINK_STOP);
	assert_int_equal(s.n, 3);
	na__cgroups_close(cg);
	sink_clear(&s);
}

/* ---- layout detection ---------------------------------------------------------------------------- */

static void test_layout_errors(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX], want_msg[PATH_MAX + 64];
	na__cgroups *cg = NULL;
	cm_err err = {{0}};
	temp_dir(dir, "cg-none");
	assert_int_equal(open_root(dir, &cg, &err), CM_ENOENT);
	fmt_into(want_msg, sizeof(want_msg), "no cgroup v1 or v2 hierarchy under %s", dir);
	if (!strstr(err.msg, want_msg))
		fail_msg("error was \"%s\"", err.msg);
	assert_null(cg);

	fmt_into(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(open_root(path, &cg, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "cannot open cgroup root"));

	fmt_into(path, sizeof(path), "%s/file", dir);
	write_file(path, "x\n");
	assert_int_equal(open_root(path, &cg, &err), -ENOTDIR);
	assert_int_equal(open_root("", &cg, &err), CM_EINVAL);
	assert_null(cg);
	rm_tree(dir);
}

/* v1 spelled "cpu,cpuacct" (most distributions), and a hybrid host read as v1. */
static void test_layout_v1_names_and_hybrid(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX];
	sink s = {0};
	temp_dir(dir, "cg-hybrid");
	fmt_into(path, sizeof(path), "%s/cpu,cpuacct", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	fmt_into(path, sizeof(path), "%s/cpu,cpuacct/cpuacct.usage", dir);
	write_file(path, "1500000000\n");
	fmt_into(path, sizeof(path), "%s/unified", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	fmt_into(path, sizeof(path), "%s/unified/cgroup.controllers", dir);
	write_file(path, "\n");
	fmt_into(path, sizeof(path), "%s/unified/cpu.stat", dir);
	write_file(path, "usage_usec 99000000\n");
	collect_root(dir, 1, &s);
	const want w[] = {{CPU("/"), 1.5}};
	check_exact(&s, w, CM_ARRAY_LEN(w), NULL, 0);
	sink_clear(&s);
	rm_tree(dir);
}

/* ---- broken trees -------------------------------------------------------------------------------- */

typedef struct tmp_tree {
	char dir[PATH_MAX];
	const char *victim;  /* for the vanish hook */
} tmp_tree;

static int tmp_setup(void **state)
{
	*state = calloc(1, sizeof(tmp_tree));
	return *state ? 0 : -1;
}

static int tmp_teardown(void **state)
{
	tmp_tree *t = *state;
	if (t->dir[0])
		rm_tree(t->dir);
	free(t);
	return 0;
}

static void tmp_copy(tmp_tree *t, const char *fixture)
{
	char src[PATH_MAX];
	data_path(src, fixture);
	temp_dir(t->dir, "cg");
	copy_tree(src, t->dir);
}

static void tmp_write(const tmp_tree *t, const char *rel, const char *text)
{
	char path[PATH_MAX];
	fmt_into(path, sizeof(path), "%s/%s", t->dir, rel);
	write_file(path, text);
}

static void tmp_mkdir(const tmp_tree *t, const char *rel)
{
	char path[PATH_MAX];
	fmt_into(path, sizeof(path), "%s/%s", t->dir, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

/* Limit files are re-read in one pass out of NA__CG_SPEC_EVERY (the node's own, from its id hash) and
 * their last text reused in between, when they have no inotify watch (here: a descriptor budget of 1,
 * so nothing is kept open, or no watches left for files); usage files are read every pass. id "/only-memory" is in the memory
 * hierarchy only: its limits stay cached too (they were re-read every pass when a v2 limit file sharing
 * the slot was taken to live in the first mount, where the cgroup is absent). */
static void spec_reread(tmp_tree *t, const char *id, int no_file_watches)
{
	static const char *const only[] = {"container_memory_usage_bytes", "container_spec_memory_limit_bytes", NULL};
	char rel[PATH_MAX], key[PATH_MAX];
	tmp_copy(t, "cgroup-v1");
	fmt_into(rel, sizeof(rel), "memory%s/memory.limit_in_bytes", id);
	tmp_write(t, rel, "1073741824\n");
	na__cgroups *cg = NULL;
	na__cgroups_opts o = {.root = t->dir, .fd_budget = no_file_watches ? 0 : 1};
	assert_int_equal(na__cgroups_open(&o, &cg, NULL), 0);
	if (no_file_watches)
		cg->file_watch_max = 0;
	int changed_at = -1;
	for (int pass = 0; pass < 2 * NA__CG_SPEC_EVERY; pass++) {
		if (pass == 1) {
			fmt_into(rel, sizeof(rel), "memory%s/memory.limit_in_bytes", id);
			tmp_write(t, rel, "536870912\n");
			fmt_into(rel, sizeof(rel), "memory%s/memory.usage_in_bytes", id);
			tmp_write(t, rel, "1000\n");
		}
		sink s = {.only = only};
		na_emit e = sink_emit(&s);
		assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
		fmt_into(key, sizeof(key), "container_spec_memory_limit_bytes{id=\"%s\"}", id);
		const sink_rec *lim = sink_find(&s, key);
		fmt_into(key, sizeof(key), "container_memory_usage_bytes{id=\"%s\"}", id);
		const sink_rec *use = sink_find(&s, key);
		assert_non_null(lim);
		assert_non_null(use);
		assert_true(pass == 0 || use->v == 1000);
		const na__cg_node *n = na__cg_find(cg, id);
		int due = (cg->gen + n->hash) % NA__CG_SPEC_EVERY == 0;
		if (pass >= 1 && changed_at < 0 && due)
			changed_at = pass;
		if (lim->v != (changed_at >= 0 ? 512 * MiB : 1 * GiB))
			fail_msg("%s pass %d (due %d, changed at %d): limit %.17g", id, pass, due, changed_at, lim->v);
		sink_clear(&s);
	}
	assert_true(changed_at >= 1 && changed_at <= NA__CG_SPEC_EVERY);
	na__cgroups_close(cg);
	rm_tree(t->dir);
	t->dir[0] = '\0';
}

static void test_spec_reread_every_nth_pass(void **state)
{
	for (int no_file_watches = 0; no_file_watches < 2; no_file_watches++) {
		spec_reread(*state, V1_CTR, no_file_watches);
		spec_reread(*state, "/only-memory", no_file_watches);
	}
}

/* One pass at ms (wall and monotonic clocks alike); the value of metric for V1_CTR, and (when due is not
 * NULL) whether this was the node's re-read pass. */
static double v1_pass(na__cgroups *cg, const char *metric, int64_t ms, int *due)
{
	const char *only[] = {metric, NULL};
	char key[512];
	fmt_into(key, sizeof(key), "%s{id=\"" V1_CTR "\"}", metric);
	sink s = {.only = only};
	na_emit e = sink_emit(&s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, ms, ms), 0);
	const sink_rec *r = sink_find(&s, key);
	assert_non_null(r);
	double v = r->v;
	if (due) {
		const na__cg_node *n = na__cg_find(cg, V1_CTR);
		*due = (cg->gen + n->hash) % NA__CG_SPEC_EVERY == 0;
	}
	sink_clear(&s);
	return v;
}

/* A v1 limit file kept open has an inotify watch for writes to it: its kept text is used in every pass
 * (the re-read passes included) until a write, and the pass after a write reads it again. The kept
 * text is overwritten here to tell a reuse from a read. */
static void test_spec_reread_after_write(void **state)
{
	tmp_tree *t = *state;
	tmp_copy(t, "cgroup-v1");
	tmp_write(t, "memory" V1_CTR "/memory.limit_in_bytes", "1073741824\n");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	assert_true(v1_pass(cg, "container_spec_memory_limit_bytes", 0, NULL) == 1 * GiB);
	na__cg_node *n = na__cg_find(cg, V1_CTR);
	int slot = na__cg_files[NA__F1_MEM_LIMIT].keep - 1;
	assert_true(n->kept_wd[slot] > 0);
	assert_int_equal(n->kept_len[slot], 11);
	memcpy(n->kept[slot], "12345678\n", 10);
	n->kept_len[slot] = 9;
	for (int pass = 0; pass < NA__CG_SPEC_EVERY + 1; pass++)
		/* reused, the node's re-read pass too */
		assert_true(v1_pass(cg, "container_spec_memory_limit_bytes", 0, NULL) == 12345678);
	tmp_write(t, "memory" V1_CTR "/memory.limit_in_bytes", "536870912\n");
	assert_true(v1_pass(cg, "container_spec_memory_limit_bytes", 0, NULL) == 512 * MiB);
	na__cgroups_close(cg);
}

/* Activity files (cpuacct.stat, cpu.stat, blkio.throttle.*) of a cgroup whose cpuacct.usage has not
 * changed for NA__CG_QUIET_MS are reused between its re-read passes; a change of usage makes that pass
 * read them again. cpu.stat changes in the pass after the node's re-read pass (w, once quiet), so the
 * next two passes are not re-read passes; usage changes two passes later. */
static void test_quiet_cgroup_reuses_activity_files(void **state)
{
	tmp_tree *t = *state;
	tmp_copy(t, "cgroup-v1");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	int w = -1, was_due = 0;
	for (int pass = 0; w < 0 || pass <= w + 2; pass++) {
		if (pass >= 6 && was_due && w < 0) {
			w = pass;
			tmp_write(t, "cpu" V1_CTR "/cpu.stat",
				  "nr_periods 400\nnr_throttled 777\nthrottled_time 3000000000\n");
		}
		if (w >= 0 && pass == w + 2)
			tmp_write(t, "cpuacct" V1_CTR "/cpuacct.usage", "26000000000\n");
		double v = v1_pass(cg, "container_cpu_cfs_throttled_periods_total", 1000 + 1000 * (int64_t)pass, &was_due);
		assert_int_equal(na__cg_find(cg, V1_CTR)->quiet, pass >= 5 && (w < 0 || pass < w + 2));
		if (v != (w >= 0 && pass == w + 2 ? 777 : 20))
			fail_msg("pass %d (cpu.stat changed at %d): %.17g", pass, w, v);
		assert_true(pass < 30);
	}
	na__cgroups_close(cg);
}

/* memory.stat of cgroup id with the line of key set to value. */
static void write_memstat(const tmp_tree *t, const char *id, const char *key, const char *value)
{
	char path[PATH_MAX], text[8192], out[8192], k[64];
	fmt_into(path, sizeof(path), "%s/memory%s/memory.stat", t->dir, id);
	assert_int_equal(cm_read_file(path, text, sizeof(text), NULL), 0);
	fmt_into(k, sizeof(k), "\n%s ", key);
	char *line = strstr(text, k);
	assert_non_null(line);
	line[1] = '\0';
	char *rest = strchr(line + 1 + strlen(k), '\n');
	fmt_into(out, sizeof(out), "%s%s %s\n%s", text, key, value, rest ? rest + 1 : "");
	fmt_into(path, sizeof(path), "memory%s/memory.stat", id);
	tmp_write(t, path, out);
}

static void write_hlimit(const tmp_tree *t, const char *limit)
{
	write_memstat(t, V1_CTR, "hierarchical_memory_limit", limit);
}

/* memory.stat and max_usage_in_bytes of a cgroup whose memory.usage_in_bytes has not changed for
 * NA__CG_QUIET_MS (and whose cpuacct cgroup, where the path has one, is quiet) are reused between its
 * re-read passes; a change of usage, or of the path's cpuacct.usage, makes that pass read them again.
 * total_rss changes in the pass after the node's re-read pass (w, once quiet) and is not seen for two
 * passes; usage changes two passes later. /only-memory has no cpuacct cgroup: its usage alone counts. */
static void test_quiet_memory_reuses_detail_files(void **state)
{
	tmp_tree *t = *state;
	tmp_copy(t, "cgroup-v1");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	int w = -1, was_due = 0;
	for (int pass = 0; w < 0 || pass <= w + 8; pass++) {
		if (pass >= 6 && was_due && w < 0) {
			w = pass;
			write_memstat(t, V1_CTR, "total_rss", "1000001536");
		}
		if (w >= 0 && pass == w + 2)
			tmp_write(t, "memory" V1_CTR "/memory.usage_in_bytes", "805310464\n");
		if (w >= 0 && pass == w + 8)
			tmp_write(t, "cpuacct" V1_CTR "/cpuacct.usage", "26000000000\n");
		double v = v1_pass(cg, "container_memory_rss", 1000 + 1000 * (int64_t)pass, &was_due);
		const na__cg_node *n = na__cg_find(cg, V1_CTR), *m = na__cg_find(cg, "/only-memory");
		int quiet = pass >= 5 && (w < 0 || pass < w + 2 || (pass >= w + 7 && pass < w + 8));
		if (n->mem_quiet != quiet || m->mem_quiet != (pass >= 5))
			fail_msg("pass %d (w %d): mem_quiet %d, /only-memory %d", pass, w, n->mem_quiet, m->mem_quiet);
		if (v != (w >= 0 && pass >= w + 2 ? 1000001536 : 469762048))
			fail_msg("pass %d (memory.stat changed at %d): %.17g", pass, w, v);
		assert_true(pass < 40);
	}
	na__cgroups_close(cg);
}

/* v1 memory.failcnt is reused between the node's re-read passes while the limit over the cgroup
 * (memory.stat hierarchical_memory_limit) is unchanged and at least a largest charge above the
 * watermark (memory.max_usage_in_bytes): a failure cannot be counted then. A watermark within one
 * charge of the limit, or a changed limit, makes that same pass read it. */
static void test_failcnt_reused_only_with_headroom(void **state)
{
	tmp_tree *t = *state;
	uint64_t charge = (uint64_t)NA__CG_CHARGE_MAX_PAGES * (uint64_t)sysconf(_SC_PAGESIZE);
	char wm[32];
	tmp_copy(t, "cgroup-v1");
	write_hlimit(t, "1073741824");
	tmp_write(t, "memory" V1_CTR "/memory.max_usage_in_bytes", "1000000\n");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	int due, pass = 0;
	assert_true(v1_pass(cg, "container_memory_failcnt", 0, &due) == 4); /* first pass: read */
	assert_int_equal(cg->kmsg_fd, -1); /* not a cgroup mount: OOM counts are read every pass */
	assert_true(cg->oom_poll);
	tmp_write(t, "memory" V1_CTR "/memory.failcnt", "5\n");
	for (double v = 4; v == 4; pass++) { /* kept until the node's re-read pass */
		v = v1_pass(cg, "container_memory_failcnt", 0, &due);
		if (v != (due ? 5 : 4))
			fail_msg("pass %d (due %d): failcnt %.17g", pass, due, v);
		assert_true(pass < NA__CG_SPEC_EVERY);
	}
	/* watermark one page short of a charge below the limit: read at once */
	tmp_write(t, "memory" V1_CTR "/memory.failcnt", "6\n");
	fmt_into(wm, sizeof(wm), "%llu\n", (unsigned long long)(1073741824 - charge + 4096));
	tmp_write(t, "memory" V1_CTR "/memory.max_usage_in_bytes", wm);
	assert_true(v1_pass(cg, "container_memory_failcnt", 0, &due) == 6);
	tmp_write(t, "memory" V1_CTR "/memory.failcnt", "7\n");
	assert_true(v1_pass(cg, "container_memory_failcnt", 0, &due) == 7);
	/* headroom again (exactly one charge), but the limit changed: read at once, then kept */
	fmt_into(wm, sizeof(wm), "%llu\n", (unsigned long long)(2147483648ULL - charge));
	tmp_write(t, "memory" V1_CTR "/memory.max_usage_in_bytes", wm);
	write_hlimit(t, "2147483648");
	tmp_write(t, "memory" V1_CTR "/memory.failcnt", "8\n");
	assert_true(v1_pass(cg, "container_memory_failcnt", 0, &due) == 8);
	tmp_write(t, "memory" V1_CTR "/memory.failcnt", "9\n");
	double v = v1_pass(cg, "container_memory_failcnt", 0, &due);
	assert_true(v == (due ? 9 : 8));
	na__cgroups_close(cg);
}

/* The quiet rule times cpuacct.usage on the monotonic clock: wall-clock steps of an hour either way
 * between passes 1 s apart (monotonic) neither make the cgroup quiet before 5 s nor keep it loud. */
static void test_quiet_rule_ignores_wall_clock_steps(void **state)
{
	tmp_tree *t = *state;
	static const char *const only[] = {"container_cpu_usage_seconds_total", NULL};
	tmp_copy(t, "cgroup-v1");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	for (int pass = 0; pass < 8; pass++) {
		sink s = {.only = only};
		na_emit e = sink_emit(&s);
		int64_t mono = 1000 + 1000 * (int64_t)pass, wall = 1700000000000LL + (pass % 2 ? 3600000 : -3600000);
		assert_int_equal(na__cgroups_collect(cg, &e, NULL, wall, mono), 0);
		const na__cg_node *n = na__cg_find(cg, V1_CTR);
		assert_non_null(n);
		if (n->quiet != (pass >= 5))
			fail_msg("pass %d: quiet %d", pass, n->quiet);
		sink_clear(&s);
	}
	na__cgroups_close(cg);
}

/* memory.stat is scanned once for all its keys: a key that is missing or does not parse costs its own
 * series only; the failure counters need both fault counts. */
static void test_memstat_partial(void **state)
{
	tmp_tree *t = *state;
	static const char *const only[] = {"container_memory_rss", "container_memory_mapped_file",
					   "container_memory_cache", "container_memory_failures_total", NULL};
	tmp_copy(t, "cgroup-v2");
	tmp_write(t, V2_CTR "/memory.stat", "anon 100\nfile x\nfile_mapped 300\npgmajfault 7\n");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	sink s = {.only = only};
	na_emit e = sink_emit(&s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
	assert_true(sink_find(&s, "container_memory_rss{id=\"" V2_CTR "\"}")->v == 100);
	assert_true(sink_find(&s, "container_memory_mapped_file{id=\"" V2_CTR "\"}")->v == 300);
	assert_null(sink_find(&s, "container_memory_cache{id=\"" V2_CTR "\"}"));
	for (size_t i = 0; i < s.n; i++)
		if (strstr(s.recs[i].key, "failures") && strstr(s.recs[i].key, V2_CTR "\""))
			fail_msg("%s without pgfault", s.recs[i].key);
	sink_clear(&s);
	na__cgroups_close(cg);
}

/* One pass: whether CPU(id) and MEM(id) are there, as bit 0 and bit 1, and the whole walks it made. */
static int dir_pass(na__cgroups *cg, const char *cpu_key, const char *mem_key, uint64_t *walks)
{
	sink s = {.only = base_metrics};
	na_emit e = sink_emit(&s);
	uint64_t before = cg->walks;
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
	*walks = cg->walks - before;
	int r = (sink_find(&s, cpu_key) != NULL) | (sink_find(&s, mem_key) != NULL) << 1;
	sink_clear(&s);
	return r;
}

static void v1_mkcg(tmp_tree *t, const char *ctl, const char *file, const char *value)
{
	char rel[PATH_MAX];
	fmt_into(rel, sizeof(rel), "%s/extra", ctl);
	tmp_mkdir(t, rel);
	fmt_into(rel, sizeof(rel), "%s/extra/%s", ctl, file);
	tmp_write(t, rel, value);
}

/* v1: a cgroup is one node over its hierarchies. Its directory made in two of them is walked alone;
 * removed from one, the node keeps the other's series; made there again, it is walked alone again;
 * removed and made again in one pass (a name the walk knows), the hierarchy is walked as a whole (which
 * keeps the old descriptors until a read finds them gone, as before). */
static void test_dir_events_v1(void **state)
{
	tmp_tree *t = *state;
	char path[PATH_MAX];
	uint64_t walks;
	tmp_copy(t, "cgroup-v1");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	for (int i = 0; i < 2; i++)
		dir_pass(cg, CPU("/extra"), MEM("/extra"), &walks);
	v1_mkcg(t, "cpuacct", "cpuacct.usage", "1000000000\n");
	v1_mkcg(t, "memory", "memory.usage_in_bytes", "4096\n");
	uint64_t dirs = cg->dir_walks;
	assert_int_equal(dir_pass(cg, CPU("/extra"), MEM("/extra"), &walks), 3);
	assert_int_equal(walks, 0);
	assert_int_equal(cg->dir_walks - dirs, 2);
	fmt_into(path, sizeof(path), "%s/memory/extra", t->dir);
	rm_tree(path);
	assert_int_equal(dir_pass(cg, CPU("/extra"), MEM("/extra"), &walks), 1);
	assert_int_equal(walks, 0);
	v1_mkcg(t, "memory", "memory.usage_in_bytes", "8192\n");
	assert_int_equal(dir_pass(cg, CPU("/extra"), MEM("/extra"), &walks), 3);
	assert_int_equal(walks, 0);
	rm_tree(path);
	v1_mkcg(t, "memory", "memory.usage_in_bytes", "12288\n");
	sink s = {.only = base_metrics};
	na_emit e = sink_emit(&s);
	uint64_t before = cg->walks;
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
	assert_int_equal(cg->walks - before, 1);
	assert_non_null(sink_find(&s, MEM("/extra")));
	sink_clear(&s);
	na__cgroups_close(cg);
}

/* Corrupt files cost exactly their own metric. */
static size_t count_key(const sink *s, const char *key) { return sink_find(s, key) != NULL; }

/* Steady passes do not walk the hierarchy (inotify saw nothing); a cgroup made or removed, at any depth,
 * is seen by the next pass, which walks only the new directory (or drops the removed one). */
static void test_walk_only_on_change(void **state)
{
	tmp_tree *t = *state;
	tmp_copy(t, "cgroup-v2");
	na__cgroups *cg = NULL;
	assert_int_equal(open_root(t->dir, &cg, NULL), 0);
	char path[PATH_MAX + 64];
	const char *newid = V2_POD "/extra";
	for (int pass = 0; pass < 6; pass++) {
		if (pass == 3) { /* a new cgroup three levels down */
			fmt_into(path, sizeof(path), "%s%s", t->dir, newid);
			assert_int_equal(mkdir(path, 0755), 0);
			tmp_write(t, V2_POD "/extra/cpu.stat", "usage_usec 2000000\n");
		}
		if (pass == 5) {
			fmt_into(path, sizeof(path), "%s%s", t->dir, newid);
			rm_tree(path);
		}
		uint64_t before = cg->walks, dirs_before = cg->dir_walks;
		sink s = {.only = base_metrics};
		na_emit e = sink_emit(&s);
		assert_int_equal(na__cgroups_collect(cg, &e, NULL, 0, 0), 0);
		int walked = cg->walks != before;
		if (pass == 0)
			assert_true(walked);
		if (pass >= 2) /* pass 1 may walk once for the queue a first walk leaves; then only the new
				* directory is walked (pass 3), and a removed one is dropped without a walk (5) */
			assert_false(walked);
		assert_int_equal(cg->dir_walks - dirs_before, pass == 3);
		assert_int_equal(count_key(&s, CPU(V2_POD "/extra")), pass == 3 || pass == 4);
		assert_non_null(sink_find(&s, CPU(V2_CTR)));
		if (pass == 4)
			assert_true(sink_find(&s, CPU(V2_POD "/extra"))->v == 2);
		sink_clear(&s);
	}
	na__cgroups_close(cg);
}

static void test_corrupt_files(void **state)
{
	tmp_tree *t = *state;
	sink s = {0};
	tmp_copy(t, "cgroup-v1");
	tmp_write(t, "cpuacct/docker/cpuacct.usage", "garbage\n");
	tmp_write(t, "cpuacct/kubepods/cpuacct.usage", "99999999999999999999999\n"); /* > UINT64_MAX */
	tmp_write(t, "cpuacct/only-cpuacct/cpuacct.usage", "");
	tmp_write(t, "memory/docker/memory.stat", "cache 0\ntotal_inactive_file 12x\n");
	tmp_write(t, "memory/only-memory/memory.usage_in_bytes", "-5\n");
	tmp_write(t, "memory/kubepods/memory.stat", "cache 0\ninactive_file 1\n"); /* no total_inactive_file */
	collect_root(t->dir, 1, &s);
	static const char *const gone[] = {CPU("/docker"),     CPU("/kubepods"),    CPU("/only-cpuacct"),
					   WS("/docker"),      MEM("/only-memory"), WS("/only-memory"),
					   WS("/kubepods")};
	check_exact(&s, v1_want, CM_ARRAY_LEN(v1_want), gone, CM_ARRAY_LEN(gone));
	sink_clear(&s);
}

/* The sink removes a cgroup (and its subtree) right after that cgroup's first series: its memory
 * files and its children disappear mid-walk. */
static void hook_remove_victim(sink *s, const char *key)
{
	tmp_tree *t = s->hook_ctx;
	char want_key[PATH_MAX + 64], path[PATH_MAX];
	fmt_into(want_key, sizeof(want_key), "container_cpu_usage_seconds_total{id=\"%s\"}", t->victim);
	if (strcmp(key, want_key) != 0)
		return;
	fmt_into(path, sizeof(path), "%s%s", t->dir, t->victim);
	rm_tree(path);
}

static void test_cgroup_removed_mid_walk(void **state)
{
	tmp_tree *t = *state;
	sink s = {.hook = hook_remove_victim, .hook_ctx = t};
	tmp_copy(t, "cgroup-v2");
	t->victim = V2_KB;
	collect_root(t->dir, 2, &s);
	static const char *const gone[] = {MEM(V2_KB),  WS(V2_KB),  CPU(V2_POD), MEM(V2_POD),
					   WS(V2_POD),  CPU(V2_CTR), MEM(V2_CTR), WS(V2_CTR)};
	check_exact(&s, v2_want, CM_ARRAY_LEN(v2_want), gone, CM_ARRAY_LEN(gone));
	sink_clear(&s);
}

/* Two siblings: whichever the walk reaches first deletes the other after readdir already listed it. */
static void hook_remove_sibling(sink *s, const char *key)
{
	tmp_tree *t = s->hook_ctx;
	char path[PATH_MAX];
	const char *other = NULL;
	if (strcmp(key, CPU("/system.slice/a.service")) == 0)
		other = "b.service";
	else if (strcmp(key, CPU("/system.slice/b.service")) == 0)
		other = "a.service";
	if (!other)
		return;
	fmt_into(path, sizeof(path), "%s/system.slice/%s", t->dir, other);
	rm_tree(path);
}

static void test_sibling_removed_after_listing(void **state)
{
	tmp_tree *t = *state;
	sink s = {.hook = hook_remove_sibling, .hook_ctx = t};
	tmp_copy(t, "cgroup-v2");
	tmp_mkdir(t, "system.slice/a.service");
	tmp_mkdir(t, "system.slice/b.service");
	tmp_write(t, "system.slice/a.service/cpu.stat", "usage_usec 1000000\n");
	tmp_write(t, "system.slice/b.service/cpu.stat", "usage_usec 2000000\n");
	collect_root(t->dir, 2, &s);
	int a = sink_find(&s, CPU("/system.slice/a.service")) != NULL;
	int b = sink_find(&s, CPU("/system.slice/b.service")) != NULL;
	assert_true(a != b);
	want w[CM_ARRAY_LEN(v2_want) + 1];
	memcpy(w, v2_want, sizeof(v2_want));
	w[CM_ARRAY_LEN(v2_want)] = a ? (want){CPU("/system.slice/a.service"), 1}
				     : (want){CPU("/system.slice/b.service"), 2};
	check_exact(&s, w, CM_ARRAY_LEN(w), NULL, 0);
	sink_clear(&s);
}

static void test_symlink_not_followed(void **state)
{
	tmp_tree *t = *state;
	char elsewhere[PATH_MAX], link[PATH_MAX];
	sink s = {0};
	tmp_copy(t, "cgroup-v2");
	tmp_mkdir(t, "elsewhere");
	tmp_write(t, "elsewhere/cpu.stat", "usage_usec 7000000\n");
	fmt_into(elsewhere, sizeof(elsewhere), "%s/elsewhere", t->dir);
	fmt_into(link, sizeof(link), "%s/system.slice/link.service", t->dir);
	assert_int_equal(symlink(elsewhere, link), 0);
	collect_root(t->dir, 2, &s);
	assert_null(sink_find(&s, CPU("/system.slice/link.service")));
	assert_non_null(sink_find(&s, CPU("/elsewhere"))); /* reached once, as itself */
	assert_int_equal(s.n, CM_ARRAY_LEN(v2_want) + 1);
	sink_clear(&s);
}

/* Keys match whole: real files have keys that extend others (workingset_refault vs _anon). */
static void test_flat_keys_match_whole(void **state)
{
	tmp_tree *t = *state;
	sink s = {0};
	temp_dir(t->dir, "cg-keys");
	tmp_write(t, "cgroup.controllers", "cpu memory\n");
	tmp_write(t, "cpu.stat", "usage_usec_extra 1\nusage_usec 3000000\n");
	tmp_mkdir(t, "a");
	tmp_write(t, "a/cpu.stat", "xusage_usec 1\nusage_usec_total x\nusage_usec 2000000\n");
	tmp_write(t, "a/memory.current", "1000\n");
	tmp_write(t, "a/memory.stat", "active_inactive_file 7\ninactive_file_x y\ninactive_file 400\n");
	collect_root(t->dir, 2, &s);
	const want w[] = {{CPU("/"), 3}, {CPU("/a"), 2}, {MEM("/a"), 1000}, {WS("/a"), 600}};
	check_exact(&s, w, CM_ARRAY_LEN(w), NULL, 0);
	sink_clear(&s);
}

/* 40 nested cgroups: ids down to depth 32 are reported, deeper ones skipped. */
static void test_depth_bound(void **state)
{
	tmp_tree *t = *state;
	char rel[PATH_MAX] = "";
	char id[PATH_MAX] = "";
	sink s = {0};
	temp_dir(t->dir, "cg-deep");
	tmp_write(t, "cgroup.controllers", "cpu\n");
	tmp_write(t, "cpu.stat", "usage_usec 1000000\n");
	for (int depth = 1; depth <= 40; depth++) {
		strcat(rel, depth == 1 ? "d" : "/d");
		tmp_mkdir(t, rel);
		char file[PATH_MAX];
		fmt_into(file, sizeof(file), "%s/cpu.stat", rel);
		tmp_write(t, file, "usage_usec 1000000\n");
	}
	collect_root(t->dir, 2, &s);
	assert_int_equal(s.n, 33); /* the root and depths 1..32 */
	for (int depth = 1; depth <= 32; depth++)
		strcat(id, "/d");
	char key[PATH_MAX + 64];
	fmt_into(key, sizeof(key), "container_cpu_usage_seconds_total{id=\"%s\"}", id);
	assert_non_null(sink_find(&s, key));
	sink_clear(&s);
}

/* Paths past PATH_MAX: built fd-relative; the collector reports what fits and skips the rest. */
static void test_path_too_long(void **state)
{
	tmp_tree *t = *state;
	char name[201];
	sink s = {0};
	memset(name, 'x', 200);
	name[200] = '\0';
	temp_dir(t->dir, "cg-long");
	tmp_write(t, "cgroup.controllers", "cpu\n");
	tmp_write(t, "cpu.stat", "usage_usec 1000000\n");
	int fd = open(t->dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	for (int level = 1; level <= 25; level++) {
		assert_int_equal(mkdirat(fd, name, 0755), 0);
		int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
		assert_true(next >= 0);
		close(fd);
		fd = next;
		write_at(fd, "cpu.stat", "usage_usec 1000000\n");
	}
	close(fd);
	collect_root(t->dir, 2, &s);
	size_t fits = 0, len = strlen(t->dir);
	for (int level = 0; level <= 25; level++)
		if (len + 201 * (size_t)level + strlen("/cpu.stat") < PATH_MAX)
			fits++;
	assert_true(fits > 1 && fits < 26);
	assert_int_equal(s.n, fits);
	sink_clear(&s);
}

/* ---- this host's cgroups ------------------------------------------------------------------------- */

#ifndef CGROUP_SUPER_MAGIC
#define CGROUP_SUPER_MAGIC 0x27e0eb
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

typedef struct real_cg {
	char dir[PATH_MAX];  /* the test cgroup, "" until made */
	char id[PATH_MAX];   /* its id in the hierarchy */
	pid_t child;         /* the CPU burner, 0 until forked */
} real_cg;

static int real_setup(void **state)
{
	*state = calloc(1, sizeof(real_cg));
	return *state ? 0 : -1;
}

static int real_teardown(void **state)
{
	real_cg *r = *state;
	if (r->child > 0) {
		kill(r->child, SIGKILL);
		waitpid(r->child, NULL, 0);
	}
	for (int i = 0; r->dir[0] && i < 100; i++) {
		if (rmdir(r->dir) == 0 || errno == ENOENT)
			break;
		usleep(10000); /* the dead child may take a moment to leave the cgroup */
	}
	free(r);
	return 0;
}

static int is_mount_of(const char *path, long magic)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && (long)sf.f_type == magic;
}

/* Our path in the hierarchy whose /proc/self/cgroup controller list contains ctl ("" = the v2 line). */
static int own_cgroup(const char *ctl, char *out)
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
		int match = *ctl ? 0 : *list == '\0' && strncmp(line, "0:", 2) == 0;
		for (char *tok = strtok_r(list, ",", &save); *ctl && tok; tok = strtok_r(NULL, ",", &save))
			match |= strcmp(tok, ctl) == 0;
		if (match) {
			fmt_into(out, PATH_MAX, "%s", strcmp(c2 + 1, "/") == 0 ? "" : c2 + 1);
			return 0;
		}
	}
	return -1;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Makes <mnt><own>/corral-test-<pid>, or skips the test when that is not possible here. */
static void real_make(real_cg *r, const char *mnt, const char *ctl)
{
	char own[PATH_MAX], parent[PATH_MAX];
	struct stat st;
	if (own_cgroup(ctl, own) < 0) {
		print_message("no %s line in /proc/self/cgroup\n", *ctl ? ctl : "v2");
		skip();
	}
	fmt_into(parent, sizeof(parent), "%s%s", mnt, own);
	if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode)) {
		print_message("our cgroup %s is not visible under %s\n", own, mnt);
		skip();
	}
	fmt_into(r->id, sizeof(r->id), "%s/corral-test-%ld", own, (long)getpid());
	fmt_into(r->dir, sizeof(r->dir), "%s%s", mnt, r->id);
	if (mkdir(r->dir, 0755) < 0)
		fail_msg("mkdir %s: %s", r->dir, strerror(errno));
}

/* Forks a child that spins until killed (or its parent dies) and moves it into the test cgroup. */
static void real_burn(real_cg *r)
{
	char path[PATH_MAX], pid[32];
	r->child = fork();
	assert_true(r->child >= 0);
	if (r->child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(60);
		for (volatile unsigned long spin = 0;; spin++)
			;
	}
	fmt_into(path, sizeof(path), "%s/cgroup.procs", r->dir);
	fmt_into(pid, sizeof(pid), "%ld\n", (long)r->child);
	write_file(path, pid);
}

static double real_collect(const char *root, int version, const char *id)
{
	char key[PATH_MAX + 64];
	sink s = {0};
	collect_root(root, version, &s);
	fmt_into(key, sizeof(key), "container_cpu_usage_seconds_total{id=\"%s\"}", id);
	const sink_rec *rec = sink_find(&s, key);
	if (!rec)
		fail_msg("no %s among %zu series", key, s.n);
	assert_int_equal(s.dups, 0);
	double v = rec->v;
	sink_clear(&s);
	return v;
}

static void real_check(real_cg *r, const char *root, int version)
{
	real_burn(r);
	sleep_ms(300);
	double first = real_collect(root, version, r->id);
	sleep_ms(200);
	double second = real_collect(root, version, r->id);
	print_message("%s: %s used %.3f s, then %.3f s\n", root ? root : "/sys/fs/cgroup", r->id, first, second);
	assert_true(first > 0);
	assert_true(second > first);
}

static void test_real_v1_cpuacct(void **state)
{
	real_cg *r = *state;
	if (geteuid() != 0 || !is_mount_of("/sys/fs/cgroup/cpuacct", CGROUP_SUPER_MAGIC)) {
		print_message("needs root and a cgroup v1 mount at /sys/fs/cgroup/cpuacct\n");
		skip();
	}
	real_make(r, "/sys/fs/cgroup/cpuacct", "cpuacct");
	real_check(r, NULL, 1);
}

static void test_real_v2_unified(void **state)
{
	real_cg *r = *state;
	if (geteuid() != 0 || !is_mount_of("/sys/fs/cgroup/unified", CGROUP2_SUPER_MAGIC)) {
		print_message("needs root and a cgroup v2 mount at /sys/fs/cgroup/unified\n");
		skip();
	}
	real_make(r, "/sys/fs/cgroup/unified", "");
	real_check(r, "/sys/fs/cgroup/unified", 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_fixture_union),
		cmocka_unit_test(test_v2_fixture),
		cmocka_unit_test(test_collect_twice_same_result),
		cmocka_unit_test(test_fd_budget),
		cmocka_unit_test(test_emit_error_stops_walk),
		cmocka_unit_test(test_layout_errors),
		cmocka_unit_test(test_layout_v1_names_and_hybrid),
		cmocka_unit_test_setup_teardown(test_walk_only_on_change, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_spec_reread_every_nth_pass, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_quiet_cgroup_reuses_activity_files, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_quiet_rule_ignores_wall_clock_steps, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_quiet_memory_reuses_detail_files, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_failcnt_reused_only_with_headroom, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_spec_reread_after_write, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_dir_events_v1, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_memstat_partial, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_files, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_cgroup_removed_mid_walk, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_sibling_removed_after_listing, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_symlink_not_followed, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_flat_keys_match_whole, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_depth_bound, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_path_too_long, tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_real_v1_cpuacct, real_setup, real_teardown),
		cmocka_unit_test_setup_teardown(test_real_v2_unified, real_setup, real_teardown),
	};
	cm_log_set_level(CM_LOG_ERROR); /* the broken-tree tests provoke warnings on purpose */
	return cmocka_run_group_tests_name("na_cgroup", tests, NULL, NULL);
}
