/* test_na_degrade.c -- a broken source costs one metric or one label source, with one rate-limited warning.
 *
 * The whole collection pass (na__collect: cgroups, node, metadata, batch and /metrics text) runs three
 * times on a temp copy of tests/data/cgroup-v2 with a pods dir and a kubelet URL nobody listens on;
 * between passes a cgroup file is corrupted and a cgroup removed. stderr (where cm_log writes) goes to
 * a temp file so the warnings can be counted: each kind appears once although it happens every pass,
 * and everything else is still in every pass's /metrics text. A cgroup vanishing in the middle of a
 * walk is covered by test_na_cgroup.c (test_cgroup_removed_mid_walk, test_sibling_removed_after_listing).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "na_test.h"

#define CTR                                                                                                            \
	"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2a3b_0000_4000_8000_000000000001.slice/"   \
	"cri-containerd-c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0.scope"

typedef struct cap {
	int saved;
	char path[PATH_MAX + 16];
} cap;

static void capture_start(cap *c, const char *dir)
{
	fmt_into(c->path, sizeof(c->path), "%s/stderr.log", dir);
	int fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	assert_true(fd >= 0);
	c->saved = dup(2);
	assert_int_equal(dup2(fd, 2), 2);
	close(fd);
}

static void capture_stop(cap *c)
{
	dup2(c->saved, 2);
	close(c->saved);
}

static int count_lines(const cap *c, const char *needle)
{
	static char text[1 << 16];
	size_t n = 0;
	if (cm_read_file(c->path, text, sizeof(text), &n))
		return -1;
	int k = 0;
	for (const char *p = text; (p = strstr(p, needle)); p++)
		k++;
	return k;
}

static int has(const cm_buf *text, const char *needle)
{
	return strstr((const char *)text->data, needle) != NULL;
}

static void pass(na__collector *c, uint64_t seq, cm_buf *text)
{
	cm_buf frame;
	cm_buf_init(&frame);
	text->len = 0;
	na__collect_stats st;
	cm_err err = {{0}};
	assert_int_equal(na__collect(c, seq, &frame, &st, &err), 0);
	assert_int_equal(na__pass_render(na__collector_last(c), text), 0);
	assert_true(frame.len > 0);
	assert_int_equal(st.meta_errors, 1); /* the kubelet is down every pass */
	cm_buf_close(&frame);
}

static void test_broken_sources_cost_one_thing(void **state)
{
	(void)state;
	char dir[PATH_MAX], src[PATH_MAX], cg[PATH_MAX + 16], pods[PATH_MAX + 16], proc[PATH_MAX], path[PATH_MAX * 2];
	temp_dir(dir, "degrade");
	fmt_into(cg, sizeof(cg), "%s/cg", dir);
	fmt_into(pods, sizeof(pods), "%s/pods", dir);
	data_path(src, "cgroup-v2");
	copy_tree(src, cg);
	assert_int_equal(mkdir(pods, 0755), 0);
	data_path(src, "pods/cron.json");
	char json[4096];
	assert_int_equal(cm_read_file(src, json, sizeof(json), NULL), 0);
	fmt_into(path, sizeof(path), "%s/cron.json", pods);
	write_file(path, json);
	data_path(proc, "proc");
	setenv("KUBELET_TOKEN", "t", 1);
	na_config cfg = {.node = "n1",
	                 .cgroup_root = cg,
	                 .proc_root = proc,
	                 .pods_dir = pods,
	                 .label_allowlist = "app",
	                 .kubelet_url = "http://127.0.0.1:1",
	                 .meta_refresh_ms = 1};
	na__collector *c;
	cm_err err = {{0}};
	cap cp;
	capture_start(&cp, dir);
	int rc = na__collector_create(&cfg, &c, &err);
	cm_buf text;
	cm_buf_init(&text);
	if (!rc) {
		pass(c, 1, &text);
		assert_true(has(&text, "container_memory_rss{id=\"" CTR "\""));
		assert_true(has(&text, "pod=\"cron\"")); /* pods-dir labels although the kubelet is down */
		/* corrupt one file: that metric goes, its siblings stay */
		fmt_into(path, sizeof(path), "%s%s/memory.stat", cg, CTR);
		write_file(path, "anon 12x\nfile zz\n");
		for (uint64_t seq = 2; seq <= 3; seq++) {
			usleep(2000); /* past the 1 ms metadata refresh */
			pass(c, seq, &text);
			assert_false(has(&text, "container_memory_rss{id=\"" CTR "\""));
			assert_true(has(&text, "container_memory_usage_bytes{id=\"" CTR "\""));
			assert_true(has(&text, "container_cpu_usage_seconds_total{id=\"" CTR "\""));
			assert_true(has(&text, "node_load1 "));
			if (seq == 2) {
				assert_true(has(
				    &text, "pod=\"cron\"")); /* a cgroup goes away between passes: only its series go */
				fmt_into(path, sizeof(path), "%s/system.slice/cron.service", cg);
				rm_tree(path);
			}
		}
		assert_false(has(&text, "id=\"/system.slice/cron.service\""));
		assert_true(has(&text, "container_cpu_usage_seconds_total{id=\"/system.slice\"}"));
		na__collector_destroy(c);
	}
	capture_stop(&cp);
	if (rc)
		fail_msg("%s", err.msg);
	/* three passes, two of them with the broken file and all three with the kubelet down: one warning each */
	assert_int_equal(count_lines(&cp, "does not parse"), 1);
	assert_int_equal(count_lines(&cp, "meta: metadata incomplete"), 1);
	assert_int_equal(count_lines(&cp, "127.0.0.1:1"), 1);
	cm_buf_close(&text);
	rm_tree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_broken_sources_cost_one_thing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
