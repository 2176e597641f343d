/* na_test.h -- helpers for the nodeagent collector tests: a recording na_emit sink and temp-tree tools.
 *
 * The sink records each series as a text key, metric{name="value",...} with labels in emission order,
 * plus its value; it counts keys emitted twice in one collection, can stop the collector after N
 * series, and can run a hook after each record (the vanish tests delete directories from there). The
 * tree helpers copy a fixture into a temp directory and remove trees of any depth (fd-relative, so paths
 * longer than PATH_MAX are fine). Included after <cmocka.h> by one test file each; everything is static.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef NA_TEST_H
#define NA_TEST_H

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "na_int.h"

#define SINK_STOP (-ECANCELED)

typedef struct sink_rec {
	char *key;
	double v;
} sink_rec;

typedef struct sink {
	sink_rec *recs;
	size_t n, cap;
	size_t dups;
	size_t stop_after;                             /* 0 = never; else return SINK_STOP at that record */
	void (*hook)(struct sink *s, const char *key);  /* after each record */
	const char *const *only;                       /* NULL-terminated metric names to record, or NULL */
	void *hook_ctx;
} sink;

static inline const sink_rec *sink_find(const sink *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->recs[i].key, key) == 0)
			return &s->recs[i];
	return NULL;
}

/* set's wire bytes must be its labels' (what the batch carries is what the sink sees). */
static inline void sink_check_set(const na_lset *set)
{
	cm_buf pb;
	cm_buf_init(&pb);
	assert_int_equal(cm_wire_labels_pb(&pb, set->labels, set->n), 0);
	assert_int_equal(pb.len, set->pblen);
	assert_true(!pb.len || !memcmp(pb.data, set->pb, pb.len));
	cm_buf_close(&pb);
}

static inline int sink_series(void *ctx, const char *metric, const na_lset *set, const cm_label *extra,
			      size_t nextra, double v)
{
	sink *s = ctx;
	char key[PATH_MAX + 512];
	cm_label labels[16];
	size_t nlabels = set ? set->n : 0;
	assert_true(nlabels + nextra <= 16);
	if (set) {
		sink_check_set(set);
		memcpy(labels, set->labels, set->n * sizeof(*labels));
	}
	if (nextra)
		memcpy(labels + nlabels, extra, nextra * sizeof(*labels));
	nlabels += nextra;
	if (s->only) {
		size_t i = 0;
		while (s->only[i] && strcmp(s->only[i], metric))
			i++;
		if (!s->only[i])
			return 0;
	}
	int n = snprintf(key, sizeof(key), "%s{", metric);
	for (size_t i = 0; i < nlabels && n > 0 && (size_t)n < sizeof(key); i++)
		n += snprintf(key + n, sizeof(key) - (size_t)n, "%s%s=\"%s\"", i ? "," : "", labels[i].name,
			      labels[i].value);
	if (n < 0 || (size_t)n + 2 > sizeof(key))
		return CM_E2BIG;
	memcpy(key + n, "}", 2);
	if (sink_find(s, key))
		s->dups++;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->recs = realloc(s->recs, s->cap * sizeof(*s->recs));
		assert_non_null(s->recs);
	}
	s->recs[s->n].key = strdup(key);
	s->recs[s->n++].v = v;
	if (s->hook)
		s->hook(s, key);
	return s->stop_after && s->n == s->stop_after ? SINK_STOP : 0;
}

static inline na_emit sink_emit(sink *s)
{
	na_emit e = {.series = sink_series, .ctx = s};
	return e;
}

static inline void sink_clear(sink *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->recs[i].key);
	free(s->recs);
	memset(s, 0, sizeof(*s));
}

static inline void sink_dump(const sink *s)
{
	for (size_t i = 0; i < s->n; i++)
		print_message("  emitted %s = %.17g\n", s->recs[i].key, s->recs[i].v);
}

/* One expected series; the tables in the tests list every value a fixture must produce. */
typedef struct want {
	const char *key;
	double v;
} want;

static inline int want_skipped(const char *key, const char *const *skip, size_t nskip)
{
	for (size_t i = 0; i < nskip; i++)
		if (strcmp(key, skip[i]) == 0)
			return 1;
	return 0;
}

/* The sink holds exactly the wanted series minus those named in skip, each once, with its value. */
static inline void check_exact(const sink *s, const want *w, size_t nw, const char *const *skip, size_t nskip)
{
	size_t expected = 0;
	if (s->dups)
		sink_dump(s);
	assert_int_equal(s->dups, 0);
	for (size_t i = 0; i < nw; i++) {
		const sink_rec *r = sink_find(s, w[i].key);
		if (want_skipped(w[i].key, skip, nskip)) {
			if (r)
				fail_msg("%s was emitted but should be missing", w[i].key);
			continue;
		}
		expected++;
		if (!r) {
			sink_dump(s);
			fail_msg("%s missing", w[i].key);
		}
		if (fabs(r->v - w[i].v) > 1e-9 * (fabs(w[i].v) > 1.0 ? fabs(w[i].v) : 1.0))
			fail_msg("%s = %.17g, want %.17g", w[i].key, r->v, w[i].v);
	}
	if (s->n != expected)
		sink_dump(s);
	assert_int_equal(s->n, expected);
}

/* snprintf that fails the test instead of truncating (and keeps -Wformat-truncation quiet). */
static inline void fmt_into(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void fmt_into(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, cap, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < cap);
}

/* ---- temp trees ---------------------------------------------------------------------------------- */

static inline void write_at(int dfd, const char *name, const char *text)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
}

static inline void write_file(const char *path, const char *text) { write_at(AT_FDCWD, path, text); }

/* Removes dfd/name and everything below it; missing is fine. */
static inline void rm_tree_at(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		unlinkat(dfd, name, 0);
		return;
	}
	DIR *d = fdopendir(fd);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type == DT_DIR)
			rm_tree_at(dirfd(d), de->d_name);
		else
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	unlinkat(dfd, name, AT_REMOVEDIR);
}

static inline void rm_tree(const char *path) { rm_tree_at(AT_FDCWD, path); }

static inline void copy_tree(const char *src, const char *dst)
{
	char s[PATH_MAX], t[PATH_MAX], buf[65536];
	assert_true(mkdir(dst, 0755) == 0 || errno == EEXIST);
	DIR *d = opendir(src);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		assert_true(snprintf(s, sizeof(s), "%s/%s", src, de->d_name) < (int)sizeof(s));
		assert_true(snprintf(t, sizeof(t), "%s/%s", dst, de->d_name) < (int)sizeof(t));
		if (de->d_type == DT_DIR) {
			copy_tree(s, t);
			continue;
		}
		assert_int_equal(cm_read_file(s, buf, sizeof(buf), NULL), 0);
		write_file(t, buf);
	}
	closedir(d);
}

/* $CORRAL_SRC/tests/data/<rel> into out (PATH_MAX); ctest sets CORRAL_SRC. */
static inline void data_path(char *out, const char *rel)
{
	const char *src = getenv("CORRAL_SRC");
	if (!src)
		fail_msg("CORRAL_SRC is not set (ctest sets it to the source tree)");
	assert_true(snprintf(out, PATH_MAX, "%s/tests/data/%s", src, rel) < PATH_MAX);
}

/* A fresh temp directory in out (PATH_MAX). */
static inline void temp_dir(char *out, const char *tag)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(out, PATH_MAX, "%s/corral-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
	assert_non_null(mkdtemp(out));
}

#endif
