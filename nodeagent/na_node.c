/* na_node.c -- the node collector: per-CPU time from /proc/stat and /proc/meminfo, node_exporter's names.
 *
 * The batch builder (na_collect.c) calls na__node_collect once per interval; each value read becomes one
 * na_emit call. Reads two /proc files whole (a growing buffer: /proc/stat grows with CPUs and interrupt
 * sources), never writes, keeps no state between calls. A missing or unreadable file is an error with a
 * message; a line that does not parse is skipped.
 *
 * <proc>/stat, the lines used (every other line, and the aggregate "cpu " line, is ignored):
 *   "cpuN user nice system idle iowait irq softirq steal [guest guest_nice]\n"
 *   in USER_HZ ticks (sysconf(_SC_CLK_TCK), 100 on Linux), becoming
 *   node_cpu_seconds_total{cpu="N",mode="user"|...|"steal"} = ticks / USER_HZ.
 *   A cpu line with fewer than eight numbers is skipped whole.
 * <proc>/meminfo, every line: "Field:   value kB\n" or "Field:   value\n" (the HugePages_* counts),
 *   becoming node_memory_<Field>_bytes = value * 1024 with the kB unit, or node_memory_<Field> = value
 *   without one -- node_exporter's names: HugePages_Total is a page count, not bytes. In Field "(" becomes
 *   "_" and ")" is dropped ("Active(anon)" -> "Active_anon"); any other character outside [A-Za-z0-9_]
 *   skips the line, as does a unit other than kB.
 * Then cAdvisor's machine_cpu_cores (the number of cpuN lines) and machine_memory_bytes (MemTotal),
 * then load, network, disks, filesystems and boot time (na_nodedev.c; a source there that cannot be
 * read is reported in err while the rest is still collected).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "na_int.h"

#define NA__NODE_READ_MIN (64 * 1024)
#define NA__NODE_READ_MAX (16 * 1024 * 1024)
#define NA__NODE_NAME_MAX 128

static const char *const node_cpu_modes[] = {"user", "nice", "system", "idle", "iowait", "irq", "softirq",
					      "steal"};

typedef int (*node_line_fn)(const char *line, const char *eol, double hz, const na_emit *emit);

/* Parses the decimal at *pp after blanks; it must end at a blank or at end. Advances *pp past it. */
static int node_next_u64(const char **pp, const char *end, uint64_t *out)
{
	const char *p = *pp;
	uint64_t v;
	if (cm_scan_u64(&p, end, &v) || (p < end && *p != ' ' && *p != '\t'))
		return CM_EPROTO;
	*pp = p;
	*out = v;
	return CM_OK;
}

/* ---- /proc/stat ---------------------------------------------------------------------------------- */

static int node_cpu_line(const char *line, const char *eol, double hz, const na_emit *emit)
{
	char cpu[16];
	size_t n = 0;
	const char *p = line + 3;
	if (eol - line < 4 || memcmp(line, "cpu", 3) != 0)
		return CM_OK;
	while (p < eol && *p >= '0' && *p <= '9' && n < sizeof(cpu) - 1)
		cpu[n++] = *p++;
	if (n == 0 || p == eol || *p != ' ')
		return CM_OK;  /* the aggregate "cpu " line, or not a cpu line */
	cpu[n] = '\0';
	uint64_t ticks[CM_ARRAY_LEN(node_cpu_modes)];
	for (size_t i = 0; i < CM_ARRAY_LEN(ticks); i++)
		if (node_next_u64(&p, eol, &ticks[i]))
			return CM_OK;
	for (size_t i = 0; i < CM_ARRAY_LEN(ticks); i++) {
		cm_label labels[2] = {{"cpu", cpu}, {"mode", node_cpu_modes[i]}};
		int rc = emit->series(emit->ctx, "node_cpu_seconds_total", NULL, labels, 2, (double)ticks[i] / hz);
		if (rc)
			return rc;
	}
	return CM_OK;
}

/* ---- /proc/meminfo ------------------------------------------------------------------------------- */

/* "node_memory_" + Field with node_exporter's parenthesis rule; 0 when the name is not usable. */
static size_t node_mem_name(char *name, const char *field, size_t flen)
{
	static const char prefix[] = "node_memory_";
	size_t n = sizeof(prefix) - 1;
	if (flen == 0 || n + flen + sizeof("_bytes") > NA__NODE_NAME_MAX)
		return 0;
	memcpy(name, prefix, n);
	for (size_t i = 0; i < flen; i++) {
		char c = field[i];
		if (c == '(')
			name[n++] = '_';
		else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
			name[n++] = c;
		else if (c != ')')
			return 0;
	}
	name[n] = '\0';
	return n;
}

static int node_mem_line(const char *line, const char *eol, double hz, const na_emit *emit)
{
	(void)hz;
	char name[NA__NODE_NAME_MAX];
	const char *colon = memchr(line, ':', (size_t)(eol - line));
	if (!colon)
		return CM_OK;
	size_t n = node_mem_name(name, line, (size_t)(colon - line));
	const char *p = colon + 1;
	uint64_t v;
	if (n == 0 || node_next_u64(&p, eol, &v))
		return CM_OK;
	while (p < eol && (*p == ' ' || *p == '\t'))
		p++;
	int kb = eol - p == 2 && memcmp(p, "kB", 2) == 0;
	if (!kb && p != eol)
		return CM_OK;
	if (kb)
		memcpy(name + n, "_bytes", sizeof("_bytes"));
	cm_label none = {NULL, NULL};  /* a valid pointer even with no labels, for sinks that memcpy */
	return emit->series(emit->ctx, name, NULL, &none, 0, kb ? (double)v * 1024.0 : (double)v);
}

/* ---- files --------------------------------------------------------------------------------------- */

/* Reads a whole /proc file into a malloc'd, NUL-terminated buffer the caller frees. */
int na__node_read(const char *path, char **out)
{
	for (size_t cap = NA__NODE_READ_MIN;; cap *= 2) {
		char *buf = malloc(cap);
		if (!buf)
			return CM_ENOMEM;
		int rc = cm_read_file(path, buf, cap, NULL);
		if (rc == CM_OK) {
			*out = buf;
			return CM_OK;
		}
		free(buf);
		if (rc != CM_E2BIG || cap >= NA__NODE_READ_MAX)
			return rc;
	}
}

static int node_file(const char *proc_root, const char *name, node_line_fn fn, double hz,
		     const na_emit *emit, cm_err *err)
{
	char path[PATH_MAX];
	char *text;
	int n = snprintf(path, sizeof(path), "%s/%s", proc_root, name);
	if (n < 0 || (size_t)n >= sizeof(path))
		return cm_errf(err, CM_E2BIG, "proc root path too long: %s", proc_root);
	int rc = na__node_read(path, &text);
	if (rc)
		return cm_errf(err, rc, "cannot read %s: %s", path, cm_strerror(rc));
	for (const char *line = text; rc == CM_OK && *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		rc = fn(line, eol, hz, emit);
		line = *eol ? eol + 1 : eol;
	}
	free(text);
	if (rc)
		return cm_errf(err, rc, "%s: collection stopped: %s", path, cm_strerror(rc));
	return CM_OK;
}

/* cAdvisor's machine_* gauges ride along: the emit sink is wrapped to count CPUs and see MemTotal. */
typedef struct node_machine {
	const na_emit *inner;
	double cpus, mem;
} node_machine;

static int node_machine_series(void *ctx, const char *metric, const na_lset *set, const cm_label *labels, size_t n,
			       double v)
{
	node_machine *m = ctx;
	if (!strcmp(metric, "node_cpu_seconds_total") && n == 2 && !strcmp(labels[1].value, "user"))
		m->cpus++;
	else if (!strcmp(metric, "node_memory_MemTotal_bytes"))
		m->mem = v;
	return m->inner->series(m->inner->ctx, metric, set, labels, n, v);
}

int na__node_collect(const char *proc_root, const na_emit *emit, cm_err *err)
{
	long hz = sysconf(_SC_CLK_TCK);
	node_machine m = {emit, 0, 0};
	na_emit wrap = {node_machine_series, &m};
	cm_label none = {NULL, NULL};
	if (!proc_root)
		proc_root = "/proc";
	int rc = node_file(proc_root, "stat", node_cpu_line, hz > 0 ? (double)hz : 100.0, &wrap, err);
	if (rc == CM_OK)
		rc = node_file(proc_root, "meminfo", node_mem_line, 0, &wrap, err);
	if (rc == CM_OK && m.cpus > 0)
		rc = emit->series(emit->ctx, "machine_cpu_cores", NULL, &none, 0, m.cpus);
	if (rc == CM_OK && m.mem > 0)
		rc = emit->series(emit->ctx, "machine_memory_bytes", NULL, &none, 0, m.mem);
	cm_err derr = {{0}};
	int drc = rc == CM_OK ? na__node_devices(proc_root, emit, &derr) : CM_OK;
	if (drc && err)
		*err = derr;
	return rc ? rc : drc;
}
