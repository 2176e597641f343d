/* test_na_collect.c -- the batch builder: stale markers for vanished series, /metrics text from a pass.
 *
 * Runs na__collect on a temp copy of tests/data/cgroup-v2 (with tests/data/proc), removes a cgroup
 * between passes and decodes the second pass's wire frame: every series of the removed cgroup must be
 * there once with Prometheus' stale marker (NaN bits 0x7ff0000000000002), /metrics text must no longer
 * list it, and a third pass must not repeat the markers. Then, removing each cgroup in turn, the
 * markers must be exactly the series that vanished (none for a live one, whatever came before it);
 * a relabelled cgroup's old series are marked too. The text must be the batch's live series, no more.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "na_test.h"

#define GONE "/system.slice/cron.service"

typedef struct pass {
	cm_buf frame, text;
	cm_arena arena;
	cm_batch b;
} pass;

static void run_pass(na__collector *c, uint64_t seq, pass *p)
{
	na__collect_stats st;
	cm_err err = {{0}};
	cm_buf_init(&p->frame);
	cm_buf_init(&p->text);
	cm_arena_init(&p->arena, 0);
	if (na__collect(c, seq, &p->frame, &st, &err))
		fail_msg("collect: %s", err.msg);
	assert_non_null(na__collector_last(c));
	assert_int_equal(na__pass_render(na__collector_last(c), &p->text), 0);
	assert_int_equal(cm_wire_decode(p->frame.data, p->frame.len, &cm_wire_default_limits, &p->arena, &p->b, &err), 0);
	cm_buf_append(&p->text, "", 1);
}

static void pass_close(pass *p)
{
	cm_buf_close(&p->frame);
	cm_buf_close(&p->text);
	cm_arena_close(&p->arena);
}

static int is_stale(double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof(bits));
	return bits == 0x7ff0000000000002ULL;
}

static const char *label(const cm_series *s, const char *name)
{
	for (size_t i = 0; i < s->nlabels; i++)
		if (!strcmp(s->labels[i].name, name))
			return s->labels[i].value;
	return NULL;
}

/* Series of the batch whose id is GONE: how many, and how many carry the stale marker. */
static void count_gone(const cm_batch *b, size_t *n, size_t *stale, size_t *stale_elsewhere)
{
	*n = *stale = *stale_elsewhere = 0;
	for (size_t i = 0; i < b->nseries; i++) {
		const char *id = label(&b->series[i], "id");
		int st = b->series[i].nsamples == 1 && is_stale(b->series[i].samples[0].v);
		if (id && !strcmp(id, GONE))
			(*n)++, *stale += (size_t)st;
		else
			*stale_elsewhere += (size_t)st;
	}
}

static void test_vanished_series_get_stale_markers(void **state)
{
	(void)state;
	char src[PATH_MAX], tmp[PATH_MAX], proc[PATH_MAX], gone[PATH_MAX];
	data_path(src, "cgroup-v2");
	data_path(proc, "proc");
	temp_dir(tmp, "collect");
	copy_tree(src, tmp);
	na_config cfg = {.node = "n1", .cgroup_root = tmp, .proc_root = proc};
	na__collector *c = NULL;
	cm_err err = {{0}};
	if (na__collector_create(&cfg, &c, &err))
		fail_msg("create: %s", err.msg);
	pass p1, p2, p3;
	size_t n, stale, other;
	run_pass(c, 1, &p1);
	count_gone(&p1.b, &n, &stale, &other);
	assert_true(n >= 3); /* cpu usage, user, system, last seen, ... */
	assert_int_equal(stale + other, 0);
	size_t had = n;
	fmt_into(gone, sizeof(gone), "%s%s", tmp, GONE);
	rm_tree(gone);
	run_pass(c, 2, &p2);
	count_gone(&p2.b, &n, &stale, &other);
	assert_int_equal(n, had);     /* every series of the removed cgroup, once */
	assert_int_equal(stale, had); /* each as a stale marker */
	assert_int_equal(other, 0);
	assert_null(strstr((char *)p2.text.data, "id=\"" GONE "\""));
	assert_non_null(strstr((char *)p1.text.data, "id=\"" GONE "\""));
	run_pass(c, 3, &p3);
	count_gone(&p3.b, &n, &stale, &other);
	assert_int_equal(n + stale + other, 0); /* markers are sent once */
	assert_int_equal(p3.b.nseries, p2.b.nseries - had);
	pass_close(&p1), pass_close(&p2), pass_close(&p3);
	na__collector_destroy(c);
	rm_tree(tmp);
}

/* The series of b as text keys, "label=value,..." in order, into keys[] (malloc'd); returns how many. */
static size_t batch_keys(const cm_batch *b, int stale, char **keys)
{
	size_t k = 0;
	for (size_t i = 0; i < b->nseries; i++) {
		const cm_series *se = &b->series[i];
		if (is_stale(se->samples[0].v) != stale)
			continue;
		cm_buf key;
		cm_buf_init(&key);
		for (size_t j = 0; j < se->nlabels; j++)
			cm_buf_printf(&key, "%s=%s,", se->labels[j].name, se->labels[j].value);
		cm_buf_append(&key, "", 1);
		keys[k++] = (char *)key.data;
	}
	return k;
}

static int has_key(char *const *keys, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(keys[i], key))
			return 1;
	return 0;
}

/* Every cgroup directory below root/rel (depth first), relative to root, into dirs[] (malloc'd). */
static void list_dirs(const char *root, const char *rel, char **dirs, size_t *n, size_t cap)
{
	char path[PATH_MAX];
	fmt_into(path, sizeof(path), "%s%s", root, rel);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.')
			continue;
		assert_true(*n < cap);
		char sub[PATH_MAX];
		fmt_into(sub, sizeof(sub), "%s/%s", rel, de->d_name);
		dirs[(*n)++] = strdup(sub);
		list_dirs(root, sub, dirs, n, cap);
	}
	closedir(d);
}

/* The cgroup-v2 fixture in tmp, plus /io and its child /io/io with a cpu.stat and an io.stat of the same
 * device each: the child's first device series has more labels than the cpu series before it, and the
 * labels after id are those of the parent's last device series. */
static void io_tree(const char *tmp)
{
	static const char *const dirs[] = {"/io", "/io/io"};
	char src[PATH_MAX], path[PATH_MAX + 16];
	data_path(src, "cgroup-v2");
	copy_tree(src, tmp);
	for (size_t i = 0; i < CM_ARRAY_LEN(dirs); i++) {
		fmt_into(path, sizeof(path), "%s%s", tmp, dirs[i]);
		assert_int_equal(mkdir(path, 0755), 0);
		fmt_into(path, sizeof(path), "%s%s/io.stat", tmp, dirs[i]);
		write_file(path, "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
		fmt_into(path, sizeof(path), "%s%s/cpu.stat", tmp, dirs[i]);
		write_file(path, "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\n");
	}
}

/* Whichever cgroup vanishes (or /io's device changes), the next pass marks stale exactly the series
 * that are gone and none that is still there: a series' identity must not depend on the series
 * collected before it or at the same place in the pass before. (A label-prefix hash cache once kept a
 * longer series' hash after a shorter one changed an earlier label, so m{id=B,dev=x} after m{id=B}
 * after m{id=A,dev=x} got A's hash, here /io/io after /io.) With the pods directory, cgroups carry
 * different numbers of labels. */
static void test_stale_markers_whatever_vanishes(void **state)
{
	(void)state;
	char tmp[PATH_MAX], proc[PATH_MAX], pods[PATH_MAX], *dirs[64];
	size_t ndirs = 0, cases = 0;
	data_path(proc, "proc");
	data_path(pods, "pods");
	temp_dir(tmp, "collect");
	io_tree(tmp);
	list_dirs(tmp, "", dirs, &ndirs, CM_ARRAY_LEN(dirs) - 1);
	dirs[ndirs++] = strdup("/io/io.stat"); /* rewritten: the parent's device series change devices */
	rm_tree(tmp);
	assert_true(ndirs > 5);
	for (size_t d = 0; d < ndirs; d++) {
		char gone[2 * PATH_MAX];
		temp_dir(tmp, "collect");
		io_tree(tmp);
		na_config cfg = {.node = "n1", .cgroup_root = tmp, .proc_root = proc, .pods_dir = pods};
		na__collector *c = NULL;
		cm_err err = {{0}};
		if (na__collector_create(&cfg, &c, &err))
			fail_msg("create: %s", err.msg);
		pass p1, p2;
		run_pass(c, 1, &p1);
		fmt_into(gone, sizeof(gone), "%s%s", tmp, dirs[d]);
		if (strstr(dirs[d], "io.stat"))
			write_file(gone, "8:16 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
		else
			rm_tree(gone);
		run_pass(c, 2, &p2);
		char **before = malloc(p1.b.nseries * sizeof(char *)), **live = malloc(p2.b.nseries * sizeof(char *));
		char **stale = malloc(p2.b.nseries * sizeof(char *));
		assert_true(before && live && stale);
		size_t nb = batch_keys(&p1.b, 0, before), nl = batch_keys(&p2.b, 0, live);
		size_t ns = batch_keys(&p2.b, 1, stale), vanished = 0;
		for (size_t i = 0; i < ns; i++)
			if (has_key(live, nl, stale[i]))
				fail_msg("without %s: a stale marker for the live %s", dirs[d], stale[i]);
		for (size_t i = 0; i < nb; i++)
			if (!has_key(live, nl, before[i])) {
				vanished++;
				if (!has_key(stale, ns, before[i]))
					fail_msg("without %s: no stale marker for %s", dirs[d], before[i]);
			}
		assert_int_equal(ns, vanished);
		cases += vanished > 0;
		for (size_t i = 0; i < nb; i++)
			free(before[i]);
		for (size_t i = 0; i < nl; i++)
			free(live[i]);
		for (size_t i = 0; i < ns; i++)
			free(stale[i]);
		free(before), free(live), free(stale), free(dirs[d]);
		pass_close(&p1), pass_close(&p2);
		na__collector_destroy(c);
		rm_tree(tmp);
	}
	print_message("%zu of %zu removals made series vanish\n", cases, ndirs);
	assert_true(cases > 5);
}

/* A collector on a temp copy of the cgroup-v2 fixture in tmp, with a pods directory holding one file,
 * path, of json (read again every pass). */
static na__collector *with_pod(char *tmp, char *path, const char *json)
{
	char src[PATH_MAX], proc[PATH_MAX], pods[PATH_MAX + 8];
	data_path(src, "cgroup-v2");
	data_path(proc, "proc");
	temp_dir(tmp, "collect");
	copy_tree(src, tmp);
	fmt_into(pods, sizeof(pods), "%s/pods", tmp);
	assert_int_equal(mkdir(pods, 0755), 0);
	fmt_into(path, PATH_MAX + 32, "%s/pod.json", pods);
	write_file(path, json);
	na_config cfg = {.node = "n1", .cgroup_root = tmp, .proc_root = proc, .pods_dir = pods, .meta_refresh_ms = 1};
	na__collector *c = NULL;
	cm_err err = {{0}};
	if (na__collector_create(&cfg, &c, &err))
		fail_msg("create: %s", err.msg);
	return c;
}

/* A pod renamed in the pods directory relabels its cgroup's series: the next pass has them under the new
 * name and a stale marker for each under the old one, and no marker for anything else. */
static void test_relabel_marks_old_series(void **state)
{
	(void)state;
	char tmp[PATH_MAX], path[PATH_MAX + 32];
	na__collector *c = with_pod(tmp, path, "{\"name\": \"cron\", \"namespace\": \"host\", \"containers\": "
					       "[{\"name\": \"c\", \"cgroup\": \"" GONE "\"}]}");
	pass p1, p2;
	run_pass(c, 1, &p1);
	write_file(path, "{\"name\": \"cron-renamed\", \"namespace\": \"host\", \"containers\": [{\"name\": "
			 "\"c\", \"cgroup\": \"" GONE "\"}]}");
	usleep(5000);
	run_pass(c, 2, &p2);
	size_t old_live = 0, renamed = 0, marked = 0;
	for (size_t i = 0; i < p1.b.nseries; i++)
		old_live += label(&p1.b.series[i], "pod") && !strcmp(label(&p1.b.series[i], "pod"), "cron");
	for (size_t i = 0; i < p2.b.nseries; i++) {
		const cm_series *se = &p2.b.series[i];
		const char *pod = label(se, "pod");
		int st = is_stale(se->samples[0].v);
		if (st && (!pod || strcmp(pod, "cron")))
			fail_msg("a stale marker for %s{id=%s}", label(se, "__name__"), label(se, "id"));
		marked += st;
		renamed += !st && pod && !strcmp(pod, "cron-renamed");
		assert_false(!st && pod && !strcmp(pod, "cron"));
	}
	assert_true(old_live > 5);
	assert_int_equal(marked, old_live);
	assert_int_equal(renamed, old_live);
	pass_close(&p1), pass_close(&p2);
	na__collector_destroy(c);
	rm_tree(tmp);
}

/* The /metrics text holds each live series of the batch, labels in batch order and escaped as the text
 * format wants, and nothing else: one sample line per series. Again on the passes after it, which
 * repeat the first one's series and rewrite their samples in place: every sample has its own pass's
 * timestamp, and a value changed in between (a cgroup's cpu usage) is the new one. */
static void test_text_is_the_batch(void **state)
{
	(void)state;
	char src[PATH_MAX], tmp[PATH_MAX], proc[PATH_MAX], pods[PATH_MAX], path[PATH_MAX + 32];
	data_path(src, "cgroup-v2");
	data_path(proc, "proc");
	data_path(pods, "pods");
	temp_dir(tmp, "collect");
	copy_tree(src, tmp);
	na_config cfg = {.node = "n1", .cgroup_root = tmp, .proc_root = proc, .pods_dir = pods};
	na__collector *c = NULL;
	cm_err err = {{0}};
	if (na__collector_create(&cfg, &c, &err))
		fail_msg("create: %s", err.msg);
	size_t first = 0;
	for (int k = 0; k < 3; k++) {
		pass p;
		run_pass(c, 1 + (uint64_t)k, &p);
		size_t lines = 0, usage = 0;
		for (const char *t = (const char *)p.text.data; *t; t = strchr(t, '\n') + 1)
			lines += *t != '#';
		assert_int_equal(lines, p.b.nseries);
		for (size_t i = 0; i < p.b.nseries; i++) {
			const cm_series *se = &p.b.series[i];
			assert_true(se->nsamples == 1 && se->samples[0].t_ms == p.b.created_ms);
			cm_buf line;
			cm_buf_init(&line);
			cm_buf_printf(&line, "\n%s", se->labels[0].value);
			for (size_t j = 1; j < se->nlabels; j++)
				cm_buf_printf(&line, "%s%s=\"%s\"", j > 1 ? "," : "{", se->labels[j].name, se->labels[j].value);
			cm_buf_printf(&line, "%s ", se->nlabels > 1 ? "}" : "");
			if (!strstr((char *)p.text.data, (char *)line.data))
				fail_msg("pass %d: not in /metrics:%s", k + 1, (char *)line.data);
			cm_buf_close(&line);
			if (!strcmp(se->labels[0].value, "container_cpu_usage_seconds_total") && !strcmp(label(se, "id"), GONE)) {
				assert_true(se->samples[0].v == (k ? 7.0 + k : 50.0)); /* the fixture's, then ours */
				usage++;
			}
		}
		assert_int_equal(usage, 1);
		if (!k)
			first = p.b.nseries;
		assert_int_equal(p.b.nseries, first);
		pass_close(&p);
		fmt_into(path, sizeof(path), "%s%s/cpu.stat", tmp, GONE);
		char text[256];
		fmt_into(text, sizeof(text),
			 "usage_usec %d\nuser_usec 30000000\nsystem_usec 20000000\nnice_usec 0\nnr_periods 0\n"
			 "nr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n",
			 (8 + k) * 1000000);
		write_file(path, text);
		usleep(2000); /* a later timestamp for the next pass */
	}
	assert_true(first > 100);
	na__collector_destroy(c);
	rm_tree(tmp);
}

/* Every value in /metrics is the text cm_fmt_double (Prometheus' float format) gives for the value in
 * the batch; the text's integer fast path must not change a byte. Labels are escaped as the text format
 * wants (a pods-dir name with a quote, a backslash and a newline). */
static void test_text_values_match_the_batch(void **state)
{
	(void)state;
	char tmp[PATH_MAX], path[PATH_MAX + 32];
	na__collector *c = with_pod(tmp, path, "{\"name\": \"we\\\"ird\\\\po\\nd\", \"namespace\": \"x\", "
					       "\"containers\": [{\"name\": \"c\", \"cgroup\": \"/system.slice\"}]}");
	pass p;
	run_pass(c, 1, &p);
	size_t checked = 0, fractional = 0;
	for (size_t i = 0; i < p.b.nseries; i++) {
		const cm_series *se = &p.b.series[i];
		if (!label(se, "id") || se->nlabels != 2) /* __name__ and id only */
			continue;
		char line[256], v[CM_FMT_DOUBLE_MAX];
		cm_fmt_double(v, sizeof(v), se->samples[0].v);
		fmt_into(line, sizeof(line), "%s{id=\"%s\"} %s\n", label(se, "__name__"), label(se, "id"), v);
		if (!strstr((char *)p.text.data, line))
			fail_msg("not in /metrics: %s", line);
		checked++;
		fractional += se->samples[0].v != (double)(int64_t)se->samples[0].v;
	}
	print_message("%zu values compared, %zu of them fractional\n", checked, fractional);
	assert_true(checked > 50);
	assert_true(fractional > 5); /* seconds, pressure totals */
	assert_non_null(strstr((char *)p.text.data, "pod=\"we\\\"ird\\\\po\\nd\""));
	pass_close(&p);
	na__collector_destroy(c);
	rm_tree(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vanished_series_get_stale_markers),
		cmocka_unit_test(test_text_values_match_the_batch),
		cmocka_unit_test(test_stale_markers_whatever_vanishes),
		cmocka_unit_test(test_relabel_marks_old_series),
		cmocka_unit_test(test_text_is_the_batch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
