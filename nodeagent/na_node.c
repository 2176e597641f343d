/* na_node.c -- the node collector: per-CPU time from /proc/stat and /proc/meminfo, node_exporter's names.
 *
 * The batch builder (na_collect.c) calls na__node_collect once per interval; each value read becomes one
 * na_emit call. Every /proc file of the node collectors is opened once and read whole from offset 0
 * each pass with pread (na__node_text: a buffer per file that grows, /proc/stat grows with CPUs and
 * interrupt sources); nothing is written. A missing or unreadable file is an error with a message (and
 * is opened again next pass); a line that does not parse is skipped.
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
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "na_int.h"

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

static const char *const node_file_names[NA__NODE_FILES] = {
	"stat", "meminfo", "loadavg", "net/dev", "diskstats", "mounts", "sys/kernel/random/boot_id"};

struct na__node {
	char root[PATH_MAX];
	int fd[NA__NODE_FILES];       /* -1 = not open */
	cm_buf text[NA__NODE_FILES];  /* the last read */
	uint64_t read_pass[NA__NODE_FILES], pass;
	int mounts_polled;            /* the mounts fd is a proc file: poll(2) says when the table changed */
};

int na__node_open(const char *proc_root, na__node **out)
{
	na__node *nd = calloc(1, sizeof(*nd));
	if (!nd)
		return CM_ENOMEM;
	snprintf(nd->root, sizeof(nd->root), "%s", proc_root ? proc_root : "/proc");
	for (int f = 0; f < NA__NODE_FILES; f++)
		nd->fd[f] = -1;
	*out = nd;
	return CM_OK;
}

void na__node_close(na__node *nd)
{
	if (!nd)
		return;
	for (int f = 0; f < NA__NODE_FILES; f++) {
		if (nd->fd[f] >= 0)
			close(nd->fd[f]);
		cm_buf_close(&nd->text[f]);
	}
	free(nd);
}

/* Whether f's text from an earlier pass is still what a read would give: the mount table's while a
 * poll of its proc file reports no change since the last one (or since it was opened, proc(5)). */
static int node_text_current(na__node *nd, int f)
{
	if (!nd->read_pass[f] || nd->fd[f] < 0)
		return 0;
	if (nd->read_pass[f] == nd->pass || f == NA__NODE_BOOT_ID)
		return 1;
	if (f != NA__NODE_MOUNTS || !nd->mounts_polled)
		return 0;
	struct pollfd p = {nd->fd[f], POLLPRI, 0};
	return poll(&p, 1, 0) == 0;
}

static int node_pread_all(int fd, cm_buf *b)
{
	b->len = 0;
	for (;;) {
		if (b->cap - b->len < 4096) { /* room for a page more, doubling up to NA__NODE_READ_MAX */
			if (b->cap >= NA__NODE_READ_MAX)
				return CM_E2BIG;
			if (cm_buf_reserve(b, b->cap ? b->cap : 4096))
				return CM_ENOMEM;
		}
		ssize_t r = pread(fd, b->data + b->len, b->cap - b->len - 1, (off_t)b->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		b->len += (size_t)r;
	}
	b->data[b->len] = 0;
	return CM_OK;
}

int na__node_text(na__node *nd, int f, const char **text, cm_err *err)
{
	if (node_text_current(nd, f)) {
		*text = (const char *)nd->text[f].data;
		return CM_OK;
	}
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", nd->root, node_file_names[f]);
	int rc = CM_OK;
	if (nd->fd[f] < 0) {
		nd->fd[f] = open(path, O_RDONLY | O_CLOEXEC);
		if (nd->fd[f] < 0)
			return cm_errf(err, -errno, "cannot read %s: %s", path, cm_strerror(-errno));
		struct statfs st;
		if (f == NA__NODE_MOUNTS)
			nd->mounts_polled = !fstatfs(nd->fd[f], &st) && st.f_type == PROC_SUPER_MAGIC;
	}
	if ((rc = node_pread_all(nd->fd[f], &nd->text[f]))) {
		close(nd->fd[f]);
		nd->fd[f] = -1, nd->read_pass[f] = 0;
		return cm_errf(err, rc, "cannot read %s: %s", path, cm_strerror(rc));
	}
	nd->read_pass[f] = nd->pass;
	*text = (const char *)nd->text[f].data;
	return CM_OK;
}

static int node_file(na__node *nd, int f, node_line_fn fn, double hz, const na_emit *emit, cm_err *err)
{
	const char *text;
	int rc = na__node_text(nd, f, &text, err);
	if (rc)
		return rc;
	for (const char *line = text; rc == CM_OK && *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		rc = fn(line, eol, hz, emit);
		line = *eol ? eol + 1 : eol;
	}
	if (rc)
		return cm_errf(err, rc, "%s/%s: collection stopped: %s", nd->root, node_file_names[f], cm_strerror(rc));
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

int na__node_collect(na__node *nd, const na_emit *emit, cm_err *err)
{
	long hz = sysconf(_SC_CLK_TCK);
	node_machine m = {emit, 0, 0};
	na_emit wrap = {node_machine_series, &m};
	cm_label none = {NULL, NULL};
	nd->pass++;
	int rc = node_file(nd, NA__NODE_STAT, node_cpu_line, hz > 0 ? (double)hz : 100.0, &wrap, err);
	if (rc == CM_OK)
		rc = node_file(nd, NA__NODE_MEMINFO, node_mem_line, 0, &wrap, err);
	if (rc == CM_OK && m.cpus > 0)
		rc = emit->series(emit->ctx, "machine_cpu_cores", NULL, &none, 0, m.cpus);
	if (rc == CM_OK && m.mem > 0)
		rc = emit->series(emit->ctx, "machine_memory_bytes", NULL, &none, 0, m.mem);
	cm_err derr = {{0}};
	int drc = rc == CM_OK ? na__node_devices(nd, emit, &derr) : CM_OK;
	if (drc && err)
		*err = derr;
	return rc ? rc : drc;
}
