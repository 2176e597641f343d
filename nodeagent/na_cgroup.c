/* na_cgroup.c -- the cgroup collector: CPU and memory per cgroup under cAdvisor's container_* names.
 *
 * Owns layout detection (cgroup v2 unified, or cgroup v1 controller mounts side by side) and the walk of
 * each hierarchy. The batch builder (na_collect.c) calls na__cgroups_collect once per interval and gets
 * one na_emit call per series. This file only reads small kernel files: it never writes to the cgroup
 * tree, never follows a symlink below a hierarchy root, and never lets one cgroup fail the walk. Cgroups
 * come and go while we read (containers exit), so ENOENT or ENODEV mid-walk is normal and silent; a file
 * that exists but does not parse costs that one metric and a rate-limited warning.
 *
 * Layout, for a root R:
 *   v2  R/cgroup.controllers exists: R is the unified hierarchy.
 *   v1  otherwise: cpuacct at R/cpuacct, R/cpu,cpuacct or R/cpuacct,cpu; memory at R/memory; at least
 *       one of them must exist. A hybrid host (v1 controllers plus a v2 mount at R/unified) is read as
 *       v1, as cAdvisor does: the v2 mount there holds no cpu or memory controller.
 * A cgroup's id is its path below its hierarchy root: "/" for the root, "/a/b" below it. On v1 the CPU
 * series come from the cpuacct walk and the memory series from the memory walk, so a path present in
 * both hierarchies gets both under the same id and a path present in one gets that one's metrics.
 *
 * Files read in a cgroup directory D, as the kernel writes them:
 *   v2  D/cpu.stat                 flat-keyed "key value\n" lines; usage_usec = CPU time in microseconds
 *       D/memory.current           one decimal and "\n", bytes; absent in the root cgroup and wherever
 *                                  the parent did not enable the memory controller
 *       D/memory.stat              flat-keyed, bytes; inactive_file
 *   v1  D/cpuacct.usage            one decimal, CPU time in nanoseconds (hierarchical)
 *       D/memory.usage_in_bytes    one decimal, bytes
 *       D/memory.stat              flat-keyed, bytes; total_inactive_file (hierarchical)
 * Series, each with the single label id:
 *   container_cpu_usage_seconds_total   usage_usec / 1e6, or cpuacct.usage / 1e9
 *   container_memory_usage_bytes        memory.current, or memory.usage_in_bytes
 *   container_memory_working_set_bytes  usage - inactive file pages, clamped at 0 (cAdvisor); only when
 *                                       memory.stat has the key (cAdvisor would report usage instead)
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "na_int.h"

#define NA__CG_DEFAULT_ROOT "/sys/fs/cgroup"
#define NA__CG_MAX_DEPTH 32       /* cgroups nested deeper than this below a hierarchy root are skipped */
#define NA__CG_TEXT_MAX 16384     /* memory.stat is ~1.5 KiB on v1 and ~4 KiB on v2 */
#define NA__CG_ROOT_MAX (PATH_MAX - 64)

struct na__cgroups {
	int version;
	char v2[PATH_MAX];       /* the unified hierarchy (version 2) */
	char cpuacct[PATH_MAX];  /* v1 cpuacct hierarchy, "" when absent */
	char memory[PATH_MAX];   /* v1 memory hierarchy, "" when absent */
	/* scratch for one collection: the directory being walked, a file in it, that file's bytes */
	char dir[PATH_MAX];
	char file[PATH_MAX];
	char text[NA__CG_TEXT_MAX];
	cm_ratelimit rl_read;   /* a file exists but cannot be read */
	cm_ratelimit rl_parse;  /* a file or key does not parse */
	cm_ratelimit rl_walk;   /* a directory cannot be listed, is nested too deep or has too long a path */
};

typedef struct cg_walk {
	na__cgroups *cg;
	const na_emit *emit;
	int (*visit)(struct cg_walk *w, const char *id);  /* reads cg->dir; returns emit's code */
	size_t rootlen;                                   /* cg->dir + rootlen is the id, "" at the root */
} cg_walk;

/* ---- parsing ------------------------------------------------------------------------------------- */

/* A decimal with optional blanks around it and a trailing newline: exactly [p, end) must be used. */
static int cg_parse_u64(const char *p, const char *end, uint64_t *out)
{
	uint64_t v;
	if (cm_scan_u64(&p, end, &v))
		return CM_EPROTO;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n'))
		p++;
	if (p != end)
		return CM_EPROTO;
	*out = v;
	return CM_OK;
}

/* The value of key in a flat-keyed file; CM_ENOENT when no line has that key. */
static int cg_flat_key(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	const char *line = text;
	while (*line) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		if ((size_t)(eol - line) > klen && memcmp(line, key, klen) == 0 && line[klen] == ' ')
			return cg_parse_u64(line + klen + 1, eol, out);
		line = *eol ? eol + 1 : eol;
	}
	return CM_ENOENT;
}

/* ---- reading one value ------------------------------------------------------------------------- */

/* Reads cg->dir/name: the whole file as one decimal (key NULL) or key's line of a flat-keyed file.
 * Non-zero means skip the metric; the reason is already logged unless the cgroup simply is not there. */
static int cg_read_u64(na__cgroups *cg, const char *name, const char *key, uint64_t *out)
{
	int n = snprintf(cg->file, sizeof(cg->file), "%s/%s", cg->dir, name);
	if (n < 0 || (size_t)n >= sizeof(cg->file)) {
		CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "path too long: %s/%s", cg->dir, name);
		return CM_E2BIG;
	}
	int rc = cm_read_file(cg->file, cg->text, sizeof(cg->text), NULL);
	if (rc) {
		if (rc != CM_ENOENT && rc != -ENODEV)
			CM_LOG_RL(&cg->rl_read, CM_LOG_WARN, "cgroup", "cannot read %s: %s", cg->file,
				  cm_strerror(rc));
		return rc;
	}
	rc = key ? cg_flat_key(cg->text, key, out) : cg_parse_u64(cg->text, cg->text + strlen(cg->text), out);
	if (rc)
		CM_LOG_RL(&cg->rl_parse, CM_LOG_WARN, "cgroup", "%s: %s %s", cg->file, key ? key : "value",
			  rc == CM_ENOENT ? "missing" : "does not parse");
	return rc;
}

/* ---- metrics ------------------------------------------------------------------------------------- */

static int cg_emit(const cg_walk *w, const char *metric, const char *id, double v)
{
	cm_label id_label = {"id", id};
	return w->emit->series(w->emit->ctx, metric, &id_label, 1, v);
}

static int cg_cpu(cg_walk *w, const char *id, const char *name, const char *key, double per_second)
{
	uint64_t v;
	if (cg_read_u64(w->cg, name, key, &v))
		return CM_OK;
	return cg_emit(w, "container_cpu_usage_seconds_total", id, (double)v / per_second);
}

static int cg_memory(cg_walk *w, const char *id, const char *usage_name, const char *inactive_key)
{
	uint64_t usage, inactive;
	if (cg_read_u64(w->cg, usage_name, NULL, &usage))
		return CM_OK;
	int rc = cg_emit(w, "container_memory_usage_bytes", id, (double)usage);
	if (rc || cg_read_u64(w->cg, "memory.stat", inactive_key, &inactive))
		return rc;
	uint64_t working_set = usage > inactive ? usage - inactive : 0;
	return cg_emit(w, "container_memory_working_set_bytes", id, (double)working_set);
}

static int cg_visit_v2(cg_walk *w, const char *id)
{
	int rc = cg_cpu(w, id, "cpu.stat", "usage_usec", 1e6);
	return rc ? rc : cg_memory(w, id, "memory.current", "inactive_file");
}

static int cg_visit_v1_cpuacct(cg_walk *w, const char *id)
{
	return cg_cpu(w, id, "cpuacct.usage", NULL, 1e9);
}

static int cg_visit_v1_memory(cg_walk *w, const char *id)
{
	return cg_memory(w, id, "memory.usage_in_bytes", "total_inactive_file");
}

/* ---- the walk ------------------------------------------------------------------------------------ */

/* A real subdirectory: not "." or "..", not a symlink. */
static int cg_is_subdir(DIR *d, const struct dirent *de)
{
	const char *n = de->d_name;
	if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
		return 0;
	if (de->d_type != DT_UNKNOWN)
		return de->d_type == DT_DIR;
	struct stat st;
	return fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* Visits cg->dir (len bytes), then each subdirectory depth first. Fails only when emit says stop or the
 * hierarchy root (depth 0) cannot be listed; a cgroup that vanished is skipped with its subtree. */
static int cg_walk_dir(cg_walk *w, size_t len, int depth)
{
	na__cgroups *cg = w->cg;
	int rc = w->visit(w, len > w->rootlen ? cg->dir + w->rootlen : "/");
	if (rc)
		return rc;
	DIR *d = opendir(cg->dir);
	if (!d) {
		rc = -errno;
		if (depth == 0)
			return rc;
		if (rc != CM_ENOENT && rc != -ENODEV)
			CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "cannot list %s: %s", cg->dir, cm_strerror(rc));
		return CM_OK;
	}
	struct dirent *de;
	while (rc == CM_OK && (de = readdir(d)) != NULL) {
		if (!cg_is_subdir(d, de))
			continue;
		size_t n = strlen(de->d_name);
		if (depth >= NA__CG_MAX_DEPTH || len + 1 + n >= sizeof(cg->dir)) {
			CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "skipping %s/%s: %s", cg->dir, de->d_name,
				  depth >= NA__CG_MAX_DEPTH ? "nested too deep" : "path too long");
			continue;
		}
		cg->dir[len] = '/';
		memcpy(cg->dir + len + 1, de->d_name, n + 1);
		rc = cg_walk_dir(w, len + 1 + n, depth + 1);
		cg->dir[len] = '\0';
	}
	closedir(d);
	return rc;
}

static int cg_walk_tree(na__cgroups *cg, const na_emit *emit, const char *root,
			int (*visit)(cg_walk *w, const char *id))
{
	size_t len = strlen(root);
	memcpy(cg->dir, root, len + 1);
	cg_walk w = {.cg = cg, .emit = emit, .visit = visit, .rootlen = len};
	return cg_walk_dir(&w, len, 0);
}

/* Fails only with emit's code or when a hierarchy root cannot be listed (unmounted under us). */
int na__cgroups_collect(na__cgroups *cg, const na_emit *emit)
{
	if (cg->version == 2)
		return cg_walk_tree(cg, emit, cg->v2, cg_visit_v2);
	int rc = CM_OK;
	if (cg->cpuacct[0])
		rc = cg_walk_tree(cg, emit, cg->cpuacct, cg_visit_v1_cpuacct);
	if (rc == CM_OK && cg->memory[0])
		rc = cg_walk_tree(cg, emit, cg->memory, cg_visit_v1_memory);
	return rc;
}

/* ---- layout detection ---------------------------------------------------------------------------- */

/* Sets out to root/name and returns 1 when that is a directory (want_dir) or a regular file; else
 * out is "". stat() follows a symlink here on purpose: v1 hosts often link cpuacct -> cpu,cpuacct. */
static int cg_probe(char *out, const char *root, const char *name, int want_dir)
{
	struct stat st;
	int n = snprintf(out, PATH_MAX, "%s/%s", root, name);
	if (n > 0 && n < PATH_MAX && stat(out, &st) == 0 && (want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode)))
		return 1;
	out[0] = '\0';
	return 0;
}

static int cg_detect(na__cgroups *cg, const char *root, cm_err *err)
{
	static const char *const cpuacct_names[] = {"cpuacct", "cpu,cpuacct", "cpuacct,cpu"};
	struct stat st;
	if (stat(root, &st) < 0)
		return cm_errf(err, -errno, "cannot open cgroup root %s: %s", root, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return cm_errf(err, -ENOTDIR, "cgroup root %s is not a directory", root);
	if (cg_probe(cg->v2, root, "cgroup.controllers", 0)) {
		memcpy(cg->v2, root, strlen(root) + 1);
		cg->version = 2;
		return CM_OK;
	}
	for (size_t i = 0; i < CM_ARRAY_LEN(cpuacct_names) && !cg->cpuacct[0]; i++)
		cg_probe(cg->cpuacct, root, cpuacct_names[i], 1);
	cg_probe(cg->memory, root, "memory", 1);
	if (!cg->cpuacct[0] && !cg->memory[0])
		return cm_errf(err, CM_ENOENT,
			       "no cgroup v1 or v2 hierarchy under %s (neither cgroup.controllers nor a cpuacct "
			       "or memory directory)", root);
	cg->version = 1;
	return CM_OK;
}

int na__cgroups_open(const char *root, na__cgroups **out, cm_err *err)
{
	if (!root)
		root = NA__CG_DEFAULT_ROOT;
	if (!*root || strlen(root) >= NA__CG_ROOT_MAX)
		return cm_errf(err, CM_EINVAL, "cgroup root path is empty or too long");
	na__cgroups *cg = calloc(1, sizeof(*cg));
	if (!cg)
		return cm_errf(err, CM_ENOMEM, "out of memory for the cgroup collector");
	int rc = cg_detect(cg, root, err);
	if (rc) {
		free(cg);
		return rc;
	}
	*out = cg;
	return CM_OK;
}

void na__cgroups_close(na__cgroups *cg) { free(cg); }

int na__cgroups_version(const na__cgroups *cg) { return cg->version; }
