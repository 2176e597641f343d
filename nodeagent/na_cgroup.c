/* na_cgroup.c -- cgroup discovery: layout detection, the table of known cgroups, their open files.
 *
 * Owns the cgroup collector's state: which hierarchies there are (cgroup v2 unified, or v1 controller
 * mounts side by side), one node per cgroup path with its directory descriptors and its kernel files
 * kept open (re-read with pread, so a steady pass opens and allocates nothing), and the identity and
 * labels of each cgroup. na__cgroups_collect rescans a hierarchy (a bounded walk of directory
 * descriptors with getdents64: a cgroup made or removed is seen at the next pass, so within one
 * interval) when it may have changed, then hands each node to na_cgstat.c for its metrics. "May have
 * changed": each hierarchy has an inotify descriptor watching every directory the walk visited
 * (IN_CREATE, IN_DELETE, moves, removal of the directory itself); a pass that finds no event queued
 * (and no overflow) skips the walk and keeps the nodes of the last one. Without inotify (no descriptor,
 * or a watch refused at the user's limit) every pass walks, as before. Runs on the agent's worker thread,
 * one pass at a time. Never writes to the cgroup tree, never follows a symlink below a hierarchy
 * root, never lets one cgroup fail the walk: ENOENT or ENODEV mid-walk is a cgroup that went away.
 *
 * Layout, for a root R:
 *   v2  R/cgroup.controllers exists: R is the unified hierarchy.
 *   v1  otherwise: each of cpuacct, cpu, memory, blkio, pids, hugetlb at R/<name> (cpu and cpuacct also
 *       as R/cpu,cpuacct or R/cpuacct,cpu); at least cpuacct or memory must exist. Two names for the
 *       same mount (a symlink) are walked once. A hybrid host (v1 plus a v2 mount at R/unified) is
 *       read as v1, as cAdvisor does.
 * A cgroup's id is its path below its hierarchy root: "/" for the root, "/a/b" below it. On v1 a path
 * present in several hierarchies is one node with the files of each.
 *
 * Bounds: cgroups nested deeper than NA__CG_MAX_DEPTH or with ids past PATH_MAX are skipped with a
 * rate-limited warning. Each node keeps up to one descriptor per file it reads (about 20): the agent
 * raises its soft RLIMIT_NOFILE to the hard limit at start, and at most half of that limit is spent on
 * kept file descriptors; past it a file is opened, read and closed each pass (slower, never "too many
 * open files": 2,000 cgroups need 40,000 descriptors, more than many containers may open).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "na_int.h"

#define NA__CG_DEFAULT_ROOT "/sys/fs/cgroup"
#define NA__CG_ROOT_MAX (PATH_MAX - 64)

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* ---- the file table -------------------------------------------------------------------------------- */

const na__cg_fdef na__cg_files[NA__F_COUNT] = {
	[NA__F_PROCS] = {NA__R_ANY, "cgroup.procs"},
	[NA__F2_CPU_STAT] = {NA__R_UNIFIED, "cpu.stat"},
	[NA__F2_CPU_MAX] = {NA__R_UNIFIED, "cpu.max", 1},
	[NA__F2_CPU_WEIGHT] = {NA__R_UNIFIED, "cpu.weight", 2},
	[NA__F2_CPU_PRESSURE] = {NA__R_UNIFIED, "cpu.pressure"},
	[NA__F2_MEM_CURRENT] = {NA__R_UNIFIED, "memory.current"},
	[NA__F2_MEM_STAT] = {NA__R_UNIFIED, "memory.stat"},
	[NA__F2_MEM_EVENTS] = {NA__R_UNIFIED, "memory.events"},
	[NA__F2_MEM_MAX] = {NA__R_UNIFIED, "memory.max", 3},
	[NA__F2_MEM_LOW] = {NA__R_UNIFIED, "memory.low", 4},
	[NA__F2_MEM_PEAK] = {NA__R_UNIFIED, "memory.peak"},
	[NA__F2_SWAP_CURRENT] = {NA__R_UNIFIED, "memory.swap.current"},
	[NA__F2_SWAP_MAX] = {NA__R_UNIFIED, "memory.swap.max", 5},
	[NA__F2_MEM_PRESSURE] = {NA__R_UNIFIED, "memory.pressure"},
	[NA__F2_IO_STAT] = {NA__R_UNIFIED, "io.stat"},
	[NA__F2_IO_PRESSURE] = {NA__R_UNIFIED, "io.pressure"},
	[NA__F2_PIDS_CURRENT] = {NA__R_UNIFIED, "pids.current"},
	[NA__F2_PIDS_MAX] = {NA__R_UNIFIED, "pids.max", 6},
	[NA__F1_CPUACCT_USAGE] = {NA__R_CPUACCT, "cpuacct.usage"},
	[NA__F1_CPUACCT_STAT] = {NA__R_CPUACCT, "cpuacct.stat", 8, NA__REUSE_QUIET},
	[NA__F1_CPU_STAT] = {NA__R_CPU, "cpu.stat", 9, NA__REUSE_QUIET},
	[NA__F1_CPU_SHARES] = {NA__R_CPU, "cpu.shares", 1},
	[NA__F1_CPU_QUOTA] = {NA__R_CPU, "cpu.cfs_quota_us", 2},
	[NA__F1_CPU_PERIOD] = {NA__R_CPU, "cpu.cfs_period_us", 3},
	[NA__F1_MEM_USAGE] = {NA__R_MEMORY, "memory.usage_in_bytes"},
	[NA__F1_MEM_STAT] = {NA__R_MEMORY, "memory.stat", 14, NA__REUSE_MEMQUIET},
	[NA__F1_MEM_MAX_USAGE] = {NA__R_MEMORY, "memory.max_usage_in_bytes", 15, NA__REUSE_MEMQUIET},
	[NA__F1_MEM_FAILCNT] = {NA__R_MEMORY, "memory.failcnt", 12, NA__REUSE_HEADROOM},
	[NA__F1_MEM_LIMIT] = {NA__R_MEMORY, "memory.limit_in_bytes", 4},
	[NA__F1_MEM_SOFT_LIMIT] = {NA__R_MEMORY, "memory.soft_limit_in_bytes", 5},
	[NA__F1_MEMSW_LIMIT] = {NA__R_MEMORY, "memory.memsw.limit_in_bytes", 6},
	[NA__F1_MEM_OOM_CONTROL] = {NA__R_MEMORY, "memory.oom_control", 13, NA__REUSE_OOM},
	[NA__F1_BLKIO_BYTES] = {NA__R_BLKIO, "blkio.throttle.io_service_bytes", 10, NA__REUSE_QUIET},
	[NA__F1_BLKIO_OPS] = {NA__R_BLKIO, "blkio.throttle.io_serviced", 11, NA__REUSE_QUIET},
	[NA__F1_PIDS_CURRENT] = {NA__R_PIDS, "pids.current", 16, NA__REUSE_QUIET},
	[NA__F1_PIDS_MAX] = {NA__R_PIDS, "pids.max", 7},
	/* hugetlb files are named per page size at open: na__cg_file_name */
};

const char *na__cg_file_name(const na__cgroups *cg, int f, char *buf, size_t cap)
{
	if (f < NA__F_HUGE0)
		return na__cg_files[f].name;
	int i = (f - NA__F_HUGE0) / 3, k = (f - NA__F_HUGE0) % 3;
	static const char *const v2[] = {"current", "max", "events"};
	static const char *const v1[] = {"usage_in_bytes", "max_usage_in_bytes", "failcnt"};
	snprintf(buf, cap, "hugetlb.%s.%s", cg->huge[i], cg->version == 2 ? v2[k] : v1[k]);
	return buf;
}

static int cg_file_role(int f) { return f < NA__F_HUGE0 ? na__cg_files[f].role : NA__R_HUGETLB; }

/* ---- nodes and the hash table ---------------------------------------------------------------------- */

static uint64_t cg_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static na__cg_node *cg_lookup(const na__cgroups *cg, const char *id, uint64_t h)
{
	if (!cg->tcap)
		return NULL;
	for (size_t i = h & (cg->tcap - 1);; i = (i + 1) & (cg->tcap - 1)) {
		na__cg_node *n = cg->table[i];
		if (!n)
			return NULL;
		if (n->hash == h && !strcmp(n->id, id))
			return n;
	}
}

static void cg_table_put(na__cg_node **table, size_t cap, na__cg_node *n)
{
	size_t i = n->hash & (cap - 1);
	while (table[i])
		i = (i + 1) & (cap - 1);
	table[i] = n;
}

/* Rebuilds the table from the node list at a size with room for one more node. */
static int cg_table_rebuild(na__cgroups *cg, size_t want)
{
	size_t cap = 64;
	while (cap < 2 * want)
		cap *= 2;
	na__cg_node **t = calloc(cap, sizeof(*t));
	if (!t)
		return CM_ENOMEM;
	for (size_t i = 0; i < cg->nnodes; i++)
		cg_table_put(t, cap, cg->nodes[i]);
	free(cg->table);
	cg->table = t;
	cg->tcap = cap;
	return CM_OK;
}

/* The kept-text slot of file f, or -1 when f is read every pass. */
static int cg_keep_slot(int f) { return f < NA__F_HUGE0 ? na__cg_files[f].keep - 1 : -1; }

static void cg_close_file(na__cgroups *cg, na__cg_node *n, int f)
{
	int slot = cg_keep_slot(f);
	close(n->fd[f]);
	n->fd[f] = -1;
	cg->kept_fds--;
	if (slot < 0)
		return;
	n->kept_len[slot] = 0;
	if (n->kept_wd[slot] > 0) {
		inotify_rm_watch(cg->mounts[n->fmount[f]].ino_fd, n->kept_wd[slot]);
		cg->file_watches--;
	}
	n->kept_wd[slot] = 0;
}

static void cg_node_free(na__cgroups *cg, na__cg_node *n)
{
	for (int f = 0; f < NA__F_COUNT; f++)
		if (n->fd[f] >= 0)
			cg_close_file(cg, n, f);
	for (int m = 0; m < NA__CG_MOUNTS; m++)
		if (n->dfd[m] >= 0)
			close(n->dfd[m]);
	for (int k = 0; k < NA__CG_KEEP_SLOTS; k++)
		free(n->kept[k]);
	cm_buf_close(&n->labels_pb);
	free(n);
}

/* Forgets every descriptor of n: its directory was removed and a new one made with the same name. */
static void cg_node_renew(na__cgroups *cg, na__cg_node *n)
{
	for (int f = 0; f < NA__F_COUNT; f++) {
		if (n->fd[f] >= 0)
			cg_close_file(cg, n, f);
		n->fd[f] = -1;
		n->fmount[f] = -1;
	}
	for (int m = 0; m < NA__CG_MOUNTS; m++) {
		if (n->dfd[m] >= 0)
			close(n->dfd[m]);
		n->dfd[m] = -1;
	}
	memset(n->dwd, 0, sizeof(n->dwd));
	memset(n->kept_len, 0, sizeof(n->kept_len));
	n->stale = 0;
	n->cpu_changed_ms = 0;
	n->born_gen = cg->gen;
	n->start_s = 0;
}

/* A new node for id (len bytes): identity parsed, labels set, descriptors not yet open. */
static na__cg_node *cg_node_new(na__cgroups *cg, const char *id, size_t len, uint64_t h)
{
	if (cg->nnodes == cg->ncap) {
		size_t cap = cg->ncap ? 2 * cg->ncap : 64;
		na__cg_node **v = realloc(cg->nodes, cap * sizeof(*v));
		if (!v)
			return NULL;
		cg->nodes = v, cg->ncap = cap;
	}
	if (2 * (cg->nnodes + 1) > cg->tcap && cg_table_rebuild(cg, cg->nnodes + 1))
		return NULL;
	na__cg_node *n = calloc(1, sizeof(*n) + len + 1);
	if (!n)
		return NULL;
	memcpy(n->id, id, len + 1);
	n->hash = h;
	for (int f = 0; f < NA__F_COUNT; f++)
		n->fd[f] = -1, n->fmount[f] = -1;
	for (int m = 0; m < NA__CG_MOUNTS; m++)
		n->dfd[m] = -1;
	na__ident_parse(id, &n->ident);
	n->born_gen = cg->gen;
	cg->nodes[cg->nnodes++] = n;
	cg_table_put(cg->table, cg->tcap, n);
	return n;
}

/* ---- the walk ------------------------------------------------------------------------------------- */

/* Marks node n seen in mount m, with its directory descriptor dfd (taken), and walks its children.
 * cg->idbuf holds n's id ("" for the root). */
static void cg_walk(na__cgroups *cg, int m, na__cg_node *n, size_t idlen, int depth);

static void cg_child(na__cgroups *cg, int m, na__cg_node *parent, const char *name, size_t idlen, int depth)
{
	size_t nlen = strlen(name);
	if (depth >= NA__CG_MAX_DEPTH || idlen + 1 + nlen >= sizeof(cg->idbuf)) {
		CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "skipping %s/%s: %s", cg->idbuf, name,
			  depth >= NA__CG_MAX_DEPTH ? "nested too deep" : "path too long");
		return;
	}
	cg->idbuf[idlen] = '/';
	memcpy(cg->idbuf + idlen + 1, name, nlen + 1);
	uint64_t h = cg_hash(cg->idbuf);
	na__cg_node *c = cg_lookup(cg, cg->idbuf, h);
	if (c && c->stale)
		cg_node_renew(cg, c); /* removed and made again under the same name */
	if (!c || c->dfd[m] < 0) {
		int fd = openat(parent->dfd[m], name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			goto out; /* gone since the listing, or a symlink */
		if (!c && !(c = cg_node_new(cg, cg->idbuf, idlen + 1 + nlen, h))) {
			close(fd);
			CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "out of memory for cgroup %s", cg->idbuf);
			goto out;
		}
		c->dfd[m] = fd;
	}
	cg_walk(cg, m, c, idlen + 1 + nlen, depth + 1);
out:
	cg->idbuf[idlen] = '\0';
}

static int cg_is_dir(int dfd, const struct linux_dirent64 *de)
{
	const char *n = de->d_name;
	if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
		return 0;
	if (de->d_type != DT_UNKNOWN)
		return de->d_type == DT_DIR;
	struct stat st;
	return fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

#define CG_WATCH_MASK                                                                                      \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* Watches n's directory in mount m so that a change below it makes the next pass walk. */
static void cg_watch(na__cgroups *cg, int m, na__cg_node *n)
{
	na__cg_mount *mt = &cg->mounts[m];
	char path[64];
	if (mt->ino_fd < 0 || !mt->ino_ok || n->dwd[m] > 0)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", n->dfd[m]);
	int wd = inotify_add_watch(mt->ino_fd, path, CG_WATCH_MASK);
	if (wd <= 0)
		mt->ino_ok = 0; /* at the watch limit (or no /proc): walk every pass */
	else
		n->dwd[m] = wd;
}

static void cg_walk(na__cgroups *cg, int m, na__cg_node *n, size_t idlen, int depth)
{
	_Alignas(8) char buf[4096];
	n->mgen[m] = cg->gen;
	cg_watch(cg, m, n);
	if (lseek(n->dfd[m], 0, SEEK_SET) < 0)
		return;
	for (;;) {
		long nr = syscall(SYS_getdents64, n->dfd[m], buf, sizeof(buf));
		if (nr <= 0)
			return; /* end, or the directory went away (ENOENT/ENODEV): its subtree is gone */
		for (long off = 0; off < nr;) {
			struct linux_dirent64 *de = (struct linux_dirent64 *)(buf + off);
			off += de->d_reclen;
			if (cg_is_dir(n->dfd[m], de))
				cg_child(cg, m, n, de->d_name, idlen, depth);
		}
	}
}

/* Drops descriptors of mounts where a node was not seen this pass, and nodes seen nowhere. */
static void cg_sweep(na__cgroups *cg, const na_event_sink *ev, int64_t now_ms)
{
	size_t kept = 0, removed = 0;
	for (size_t i = 0; i < cg->nnodes; i++) {
		na__cg_node *n = cg->nodes[i];
		int seen = 0;
		for (int m = 0; m < cg->nmounts; m++) {
			if (n->mgen[m] == cg->gen) {
				seen = 1;
				continue;
			}
			if (n->dfd[m] < 0)
				continue; /* not in mount m, or its files there were dropped when it left */
			close(n->dfd[m]), n->dfd[m] = -1;
			n->dwd[m] = 0;
			for (int f = 0; f < NA__F_COUNT; f++) {
				if (n->fd[f] >= 0 && n->fmount[f] == m)
					cg_close_file(cg, n, f);
				else if (n->fmount[f] == m && cg_keep_slot(f) >= 0)
					n->kept_len[cg_keep_slot(f)] = 0; /* read past the fd budget */
			}
		}
		if (seen) {
			cg->nodes[kept++] = n;
			continue;
		}
		if (ev && n->ident.kind == NA_KIND_CONTAINER)
			ev->event(ev->ctx, NA_EVENT_STOPPED, n->id, &n->ident, now_ms, 0);
		cg_node_free(cg, n);
		removed++;
	}
	cg->nnodes = kept;
	if (removed && cg_table_rebuild(cg, kept))
		CM_LOG_RL(&cg->rl_walk, CM_LOG_WARN, "cgroup", "%s", "out of memory rebuilding the cgroup table");
}

/* ---- reading files ------------------------------------------------------------------------------- */

/* A v1 limit file kept open gets an inotify watch for writes to it (na_int.h, NA__REUSE_LIMIT), added
 * before its first read, while file_watch_max allows; without one it is re-read one pass in
 * NA__CG_SPEC_EVERY. */
static void cg_watch_file(na__cgroups *cg, na__cg_node *n, int f)
{
	int slot = cg_keep_slot(f), ino = cg->mounts[n->fmount[f]].ino_fd;
	char path[64];
	if (cg->version != 1 || slot < 0 || na__cg_files[f].reuse != NA__REUSE_LIMIT || ino < 0 ||
	    cg->file_watches >= cg->file_watch_max)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", n->fd[f]);
	int wd = inotify_add_watch(ino, path, IN_MODIFY);
	n->kept_wd[slot] = wd > 0 ? wd : 0;
	cg->file_watches += wd > 0;
}

/* Opens file f of node n on first use and keeps it, or, past the descriptor budget, opens it for this
 * read only (*temp set: the caller closes it); -1 when the node has no such file (remembered until the
 * node is rediscovered in that mount). */
static int cg_fd(na__cgroups *cg, na__cg_node *n, int f, int *temp)
{
	if (n->fd[f] >= 0 || n->fd[f] == -2)
		return n->fd[f];
	int role = cg_file_role(f);
	for (int m = 0; m < cg->nmounts; m++) {
		if (!(cg->mounts[m].roles & role) || n->dfd[m] < 0 || n->mgen[m] != cg->gen)
			continue;
		char buf[96];
		const char *name = na__cg_file_name(cg, f, buf, sizeof(buf)); /* buf is used for hugetlb only */
		int fd = openat(n->dfd[m], name, O_RDONLY | O_CLOEXEC);
		if (fd >= 0)
			n->fmount[f] = (signed char)m;
		if (fd >= 0 && cg->kept_fds >= cg->fd_budget) {
			*temp = 1;
			return fd;
		}
		if (fd >= 0) {
			n->fd[f] = fd;
			cg->kept_fds++;
			cg_watch_file(cg, n, f);
			return fd;
		}
		if (errno == ENOENT && role != NA__R_ANY)
			n->fd[f] = -2;
		if (errno == ENOENT)
			continue;
		int rc = -errno;
		if (rc != -ENODEV)
			CM_LOG_RL(&cg->rl_read, CM_LOG_WARN, "cgroup", "cannot open %s/%s: %s", n->id, name,
				  cm_strerror(rc));
		return -1;
	}
	return -1;
}

/* Whether the kept text of f may stand in for a read this pass (na_int.h says why each may). */
static int cg_reusable(const na__cgroups *cg, const na__cg_node *n, int f)
{
	switch (na__cg_files[f].reuse) {
	case NA__REUSE_LIMIT:
		if (n->kept_wd[cg_keep_slot(f)] > 0)
			return 1; /* until a write to it (cg_events) */
		break;
	case NA__REUSE_OOM:
		return !cg->oom_poll;
	case NA__REUSE_QUIET:
		if (!n->quiet)
			return 0;
		break;
	case NA__REUSE_MEMQUIET:
		if (!n->mem_quiet)
			return 0;
		break;
	case NA__REUSE_HEADROOM:
		if (!n->headroom)
			return 0;
		break;
	}
	return (cg->gen + n->hash) % NA__CG_SPEC_EVERY != 0; /* else n's pass to re-read */
}

/* Kept file f of n as its last read left it (the kept copy itself, not cg->text: a caller that parsed
 * the text when it was read can tell), when it may be reused and its directory in that mount is still
 * there. */
static int cg_kept(na__cgroups *cg, const na__cg_node *n, int f, const char **text)
{
	int slot = cg_keep_slot(f);
	if (slot < 0 || !n->kept_len[slot] || n->stale || n->mgen[n->fmount[f]] != cg->gen ||
	    !cg_reusable(cg, n, f))
		return 0;
	*text = n->kept[slot];
	return 1;
}

/* Keeps the text of kept file f; one that cannot be kept (too long, no memory) is read every pass. */
static void cg_keep_text(na__cg_node *n, int f, const char *text, size_t len)
{
	int slot = cg_keep_slot(f);
	if (slot < 0)
		return;
	n->kept_len[slot] = 0;
	if (len >= n->kept_cap[slot] && len < NA__CG_KEEP_MAX) {
		size_t cap = len < 32 ? 32 : len + 1;
		char *t = realloc(n->kept[slot], cap);
		if (!t)
			return;
		n->kept[slot] = t, n->kept_cap[slot] = (unsigned short)cap;
	}
	if (len >= n->kept_cap[slot])
		return;
	memcpy(n->kept[slot], text, len);
	n->kept[slot][len] = '\0';
	n->kept_len[slot] = (unsigned short)len;
}

int na__cg_read(na__cgroups *cg, na__cg_node *n, int f, const char **text)
{
	if (cg_kept(cg, n, f, text))
		return CM_OK;
	int temp = 0, fd = cg_fd(cg, n, f, &temp);
	if (fd < 0)
		return CM_ENOENT;
	ssize_t r = pread(fd, cg->text, sizeof(cg->text) - 1, 0);
	if (temp) {
		int e = errno;
		close(fd);
		errno = e;
	}
	if (r < 0) {
		int rc = -errno;
		if (rc == -ENODEV || rc == CM_ENOENT)
			n->stale = 1, cg->any_stale = 1;
		else {
			char name[96];
			CM_LOG_RL(&cg->rl_read, CM_LOG_WARN, "cgroup", "cannot read %s/%s: %s", n->id,
				  na__cg_file_name(cg, f, name, sizeof(name)), cm_strerror(rc));
		}
		return rc;
	}
	if ((size_t)r == sizeof(cg->text) - 1)
		return CM_E2BIG;
	cg->text[r] = '\0';
	cg_keep_text(n, f, cg->text, (size_t)r);
	*text = cg->text;
	return CM_OK;
}

void na__cg_parse_warn(na__cgroups *cg, const na__cg_node *n, int f, const char *what)
{
	char name[96];
	CM_LOG_RL(&cg->rl_parse, CM_LOG_WARN, "cgroup", "%s/%s: %s does not parse", n->id,
		  na__cg_file_name(cg, f, name, sizeof(name)), what);
}

/* ---- the pass ------------------------------------------------------------------------------------- */

/* A write to the watched limit file wd of mount m (0: lost events, every one): read it again. */
static void cg_file_written(na__cgroups *cg, int m, int wd)
{
	for (size_t i = 0; i < cg->nnodes; i++) {
		na__cg_node *n = cg->nodes[i];
		for (int f = 0; f < NA__F_HUGE0; f++) {
			int slot = cg_keep_slot(f);
			if (slot >= 0 && n->kept_wd[slot] > 0 && n->fmount[f] == m && (!wd || n->kept_wd[slot] == wd))
				n->kept_len[slot] = 0;
		}
	}
}

/* Takes one event of mount m's queue: a write to a watched limit file makes it be read again; a
 * directory made or removed is kept in cg->direv for cg_dir_events; 1 when the event (a move, a queue
 * overflow, too many events) means the hierarchy must be walked.
 * A removed directory's own IN_DELETE_SELF and IN_IGNORED add nothing to its parent's IN_DELETE. */
static int cg_event(na__cgroups *cg, int m, const struct inotify_event *ev)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		cg_file_written(cg, m, 0);
		return 1;
	}
	if (ev->mask & IN_MODIFY) {
		cg_file_written(cg, m, ev->wd);
		return 0;
	}
	if ((ev->mask & (IN_DELETE_SELF | IN_IGNORED)) || ((ev->mask & (IN_CREATE | IN_DELETE)) && !(ev->mask & IN_ISDIR)))
		return 0; /* a file made or removed (fixture trees) is nothing to a walk */
	if (!(ev->mask & (IN_CREATE | IN_DELETE)) || !ev->len ||
	    cg->ndirev == NA__CG_DIREVS || strlen(ev->name) >= sizeof(cg->direv[0].name))
		return 1;
	na__cg_direv *d = &cg->direv[cg->ndirev++];
	d->wd = ev->wd;
	d->created = (ev->mask & IN_CREATE) != 0;
	strcpy(d->name, ev->name);
	return 0;
}

/* Reads every queued event of mount m's inotify descriptor (cg_event); 1 when the hierarchy must be
 * walked as a whole. */
static int cg_events(na__cgroups *cg, int m)
{
	_Alignas(struct inotify_event) char buf[4096];
	int walk = 0;
	ssize_t r;
	cg->ndirev = 0;
	while ((r = read(cg->mounts[m].ino_fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= r;) {
			const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
			off += (ssize_t)sizeof(*ev) + ev->len;
			walk |= cg_event(cg, m, ev);
		}
	}
	return walk;
}

static na__cg_node *cg_by_wd(const na__cgroups *cg, int m, int wd)
{
	for (size_t i = 0; i < cg->nnodes; i++)
		if (cg->nodes[i]->dwd[m] == wd)
			return cg->nodes[i];
	return NULL;
}

/* Whether a node below id (its descendants) is seen in mount m this pass. */
static int cg_has_children(const na__cgroups *cg, int m, const char *id)
{
	size_t len = strlen(id);
	for (size_t i = 0; i < cg->nnodes; i++) {
		const na__cg_node *n = cg->nodes[i];
		if (n->mgen[m] == cg->gen && !strncmp(n->id, id, len) && n->id[len] == '/')
			return 1;
	}
	return 0;
}

/* One directory made (walked, with what it holds) or removed (no longer seen in m: rmdir takes empty
 * cgroups only) below parent p; 1 when only a whole walk will do (made again under a known name). */
static int cg_dir_event(na__cgroups *cg, int m, na__cg_node *p, const na__cg_direv *d)
{
	int root = !strcmp(p->id, "/");
	size_t idlen = root ? 0 : strlen(p->id), depth = 0;
	if (idlen + 1 + strlen(d->name) >= sizeof(cg->idbuf))
		return 1;
	memcpy(cg->idbuf, p->id, idlen);
	cg->idbuf[idlen] = '/';
	strcpy(cg->idbuf + idlen + 1, d->name);
	na__cg_node *c = cg_lookup(cg, cg->idbuf, cg_hash(cg->idbuf));
	if (d->created && c && c->dfd[m] >= 0)
		return 1;
	if (!d->created) {
		if (c && cg_has_children(cg, m, c->id))
			return 1;
		if (c)
			c->mgen[m] = 0;
		return 0;
	}
	for (size_t i = 0; i < idlen; i++)
		depth += p->id[i] == '/';
	cg->idbuf[idlen] = '\0';
	cg_child(cg, m, p, d->name, idlen, (int)depth);
	cg->dir_walks++;
	return 0;
}

/* Applies this pass's directory events of mount m to the nodes of the last walk (seen again); 1 when
 * only a whole walk will do. */
static int cg_dir_events(na__cgroups *cg, int m)
{
	for (int i = 0; i < cg->ndirev; i++) {
		na__cg_node *p = cg_by_wd(cg, m, cg->direv[i].wd);
		if (!p || p->mgen[m] != cg->gen || cg_dir_event(cg, m, p, &cg->direv[i]))
			return 1;
	}
	return 0;
}

/* Reads the kernel log records queued since the last pass; 1 when this pass must read every
 * memory.oom_control: a record says the kernel killed a task for memory ("Killed process", logged after
 * the kill was counted), records were overwritten before they were read (EPIPE), or more were queued
 * than one pass reads (the rest is skipped). Without /dev/kmsg every pass reads them. */
static int cg_kmsg_oom(na__cgroups *cg)
{
	char rec[8192]; /* one record per read; the kernel's are at most ~1 KiB of text */
	int poll = 0;
	if (cg->kmsg_fd < 0)
		return 1;
	for (int i = 0; i < NA__CG_KMSG_MAX; i++) {
		ssize_t r = read(cg->kmsg_fd, rec, sizeof(rec));
		if (r > 0)
			poll |= memmem(rec, (size_t)r, "Killed process", 14) != NULL;
		else if (r < 0 && errno == EAGAIN)
			return poll;
		else if (r < 0 && errno == EPIPE)
			poll = 1;
		else
			break; /* a record too large for rec (EINVAL) or anything unforeseen */
	}
	lseek(cg->kmsg_fd, 0, SEEK_END);
	return 1;
}

/* Opens /dev/kmsg at its end when the memory controller is a v1 cgroup mount (fixture trees poll). */
static void cg_kmsg_open(na__cgroups *cg)
{
	struct statfs sf;
	cg->kmsg_fd = -1;
	for (int m = 0; m < cg->nmounts && cg->version == 1 && cg->kmsg_fd < 0; m++) {
		if (!(cg->mounts[m].roles & NA__R_MEMORY) || fstatfs(cg->mounts[m].fd, &sf) ||
		    sf.f_type != CGROUP_SUPER_MAGIC)
			continue;
		cg->kmsg_fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (cg->kmsg_fd >= 0 && lseek(cg->kmsg_fd, 0, SEEK_END) < 0)
			close(cg->kmsg_fd), cg->kmsg_fd = -1;
		if (cg->kmsg_fd < 0)
			CM_LOG(CM_LOG_INFO, "cgroup", "cannot read /dev/kmsg (%s): reading memory.oom_control every pass",
			       strerror(errno));
	}
}

/* No change in mount m since the last walk: every node that walk saw is seen again. */
static void cg_keep(na__cgroups *cg, int m)
{
	for (size_t i = 0; i < cg->nnodes; i++) {
		na__cg_node *n = cg->nodes[i];
		if (n->dfd[m] >= 0 && n->mgen[m] == cg->gen - 1 && !n->stale)
			n->mgen[m] = cg->gen;
	}
}

/* Undoes cg_keep (and what directory events added) before a whole walk of mount m. */
static void cg_unkeep(na__cgroups *cg, int m)
{
	for (size_t i = 0; i < cg->nnodes; i++)
		if (cg->nodes[i]->mgen[m] == cg->gen)
			cg->nodes[i]->mgen[m] = cg->gen - 1;
}

static void cg_root_node(na__cgroups *cg)
{
	na__cg_node *root = cg_lookup(cg, "/", cg_hash("/"));
	if (!root)
		root = cg_node_new(cg, "/", 1, cg_hash("/"));
	if (!root)
		return;
	for (int m = 0; m < cg->nmounts; m++) {
		if (root->dfd[m] < 0)
			root->dfd[m] = fcntl(cg->mounts[m].fd, F_DUPFD_CLOEXEC, 0);
		if (root->dfd[m] < 0)
			continue;
		na__cg_mount *mt = &cg->mounts[m];
		int whole = mt->ino_fd < 0 || cg_events(cg, m); /* drained every pass */
		whole = whole || !mt->ino_ok || !mt->walked || cg->any_stale;
		if (!whole) {
			cg_keep(cg, m);
			if (!cg_dir_events(cg, m))
				continue;
			cg_unkeep(cg, m);
		}
		mt->ino_ok = mt->ino_fd >= 0;
		cg->idbuf[0] = '\0';
		cg_walk(cg, m, root, 0, 0);
		mt->walked = 1;
		cg->walks++;
	}
	cg->any_stale = 0;
}

int na__cgroups_collect(na__cgroups *cg, const na_emit *emit, const na_event_sink *ev, int64_t now_ms,
			int64_t mono_ms)
{
	cg->gen++;
	cg->oom_poll = cg->version == 2 || cg_kmsg_oom(cg);
	if (cg->oom_poll && cg->kmsg_fd >= 0)
		CM_LOG_RL(&cg->rl_oom, CM_LOG_INFO, "cgroup", "%s",
			  "the kernel log reports an OOM kill (or lost records): reading every memory.oom_control");
	cg_root_node(cg);
	cg_sweep(cg, ev, now_ms);
	int rc = na__cg_stats_begin(cg, mono_ms);
	for (size_t i = 0; i < cg->nnodes && rc == CM_OK; i++) {
		na__cg_node *n = cg->nodes[i];
		if (ev && n->born_gen == cg->gen && cg->gen > 1 && n->ident.kind == NA_KIND_CONTAINER)
			ev->event(ev->ctx, NA_EVENT_STARTED, n->id, &n->ident, now_ms, 0);
		rc = na__cg_labels(cg, n);
		rc = rc ? rc : na__cg_stats_node(cg, n, emit, ev, now_ms);
	}
	return rc ? rc : na__cg_stats_end(cg, emit);
}

na__cg_node *na__cg_find(const na__cgroups *cg, const char *id) { return cg_lookup(cg, id, cg_hash(id)); }

size_t na__cgroups_count(const na__cgroups *cg) { return cg->nnodes; }

/* ---- labels ------------------------------------------------------------------------------------------ */

/* Sets n's label set: id, then name, container, pod, namespace, image when a metadata provider knows
 * them (a path alone gives only id, as cAdvisor's raw cgroups), and its wire encoding. Redone only when
 * the metadata changed since the node's last labels. */
int na__cg_labels(na__cgroups *cg, na__cg_node *n)
{
	uint64_t mg = cg->meta ? na__meta_generation(cg->meta) : 0;
	if (n->labels_set && n->labels_gen == mg)
		return CM_OK;
	na__meta_labels *ml = &n->meta;
	memset(ml, 0, sizeof(*ml));
	if (!cg->meta || na__meta_lookup(cg->meta, n->id, &n->ident, ml) != CM_OK)
		memset(ml, 0, sizeof(*ml));
	size_t k = 0;
	n->labels[k++] = (cm_label){"id", n->id};
	const struct {
		const char *name, *value;
	} opt[] = {{"name", ml->name}, {"container", ml->container}, {"pod", ml->pod},
		   {"namespace", ml->namespace_}, {"image", ml->image}};
	for (size_t i = 0; i < CM_ARRAY_LEN(opt); i++)
		if (opt[i].value[0])
			n->labels[k++] = (cm_label){opt[i].name, opt[i].value};
	n->nlabels = k;
	n->labels_pb.len = 0;
	int rc = cm_wire_labels_pb(&n->labels_pb, n->labels, n->nlabels);
	n->labels_gen = mg;
	n->labels_set = rc == CM_OK; /* else tried again next pass */
	return rc;
}

/* ---- layout detection ------------------------------------------------------------------------------ */

static int cg_add_mount(na__cgroups *cg, const char *root, const char *name, int role)
{
	char path[PATH_MAX];
	struct stat st;
	int n = snprintf(path, sizeof(path), "%s/%s", root, name);
	if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	for (int m = 0; m < cg->nmounts; m++) {
		if (cg->mounts[m].dev == st.st_dev && cg->mounts[m].ino == st.st_ino) {
			cg->mounts[m].roles |= role;
			return 1;
		}
	}
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || cg->nmounts == NA__CG_MOUNTS) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	cg->mounts[cg->nmounts++] = (na__cg_mount){fd, role | NA__R_ANY, st.st_dev, st.st_ino, ino, ino >= 0, 0};
	return 1;
}

/* Page sizes of the hugetlb controller: names "hugetlb.<size>.<suffix>" in dir (the root cgroup). */
static void cg_huge_sizes(na__cgroups *cg, int dfd, const char *suffix)
{
	int fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	size_t sl = strlen(suffix);
	while ((de = readdir(d)) != NULL && cg->nhuge < NA__CG_HUGE_MAX) {
		const char *nm = de->d_name;
		size_t n = strlen(nm);
		if (n <= 8 + sl || strncmp(nm, "hugetlb.", 8) || strcmp(nm + n - sl, suffix) || n - 8 - sl >= 16)
			continue;
		memcpy(cg->huge[cg->nhuge], nm + 8, n - 8 - sl);
		cg->huge[cg->nhuge][n - 8 - sl] = '\0';
		if (!strchr(cg->huge[cg->nhuge], '.'))
			cg->nhuge++;
	}
	closedir(d);
}

static int cg_detect(na__cgroups *cg, const char *root, cm_err *err)
{
	struct stat st;
	char path[PATH_MAX];
	if (stat(root, &st) < 0)
		return cm_errf(err, -errno, "cannot open cgroup root %s: %s", root, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return cm_errf(err, -ENOTDIR, "cgroup root %s is not a directory", root);
	snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
		cg->version = 2;
		if (!cg_add_mount(cg, root, ".", NA__R_UNIFIED | NA__R_HUGETLB))
			return cm_errf(err, CM_EIO, "cannot open cgroup root %s", root);
		cg_huge_sizes(cg, cg->mounts[0].fd, ".current");
		return CM_OK;
	}
	static const char *const cpuacct[] = {"cpuacct", "cpu,cpuacct", "cpuacct,cpu"};
	static const char *const cpu[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"};
	int have = 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(cpuacct) && !have; i++)
		have = cg_add_mount(cg, root, cpuacct[i], NA__R_CPUACCT);
	int mem = cg_add_mount(cg, root, "memory", NA__R_MEMORY);
	if (!have && !mem)
		return cm_errf(err, CM_ENOENT,
			       "no cgroup v1 or v2 hierarchy under %s (neither cgroup.controllers nor a cpuacct "
			       "or memory directory)", root);
	for (size_t i = 0, done = 0; i < CM_ARRAY_LEN(cpu) && !done; i++)
		done = (size_t)cg_add_mount(cg, root, cpu[i], NA__R_CPU);
	cg_add_mount(cg, root, "blkio", NA__R_BLKIO);
	cg_add_mount(cg, root, "pids", NA__R_PIDS);
	if (cg_add_mount(cg, root, "hugetlb", NA__R_HUGETLB))
		cg_huge_sizes(cg, cg->mounts[cg->nmounts - 1].fd, ".usage_in_bytes");
	cg->version = 1;
	return CM_OK;
}

/* A quarter of the user's inotify watches (max_user_watches; 8192, the default before Linux 5.11, when
 * unreadable) for limit files: directories need theirs more (without them every pass walks). */
static size_t cg_file_watch_max(void)
{
	char w[32];
	const char *p = w;
	uint64_t max = 8192;
	if (cm_read_file("/proc/sys/fs/inotify/max_user_watches", w, sizeof(w), NULL) ||
	    cm_scan_u64(&p, w + strlen(w), &max))
		max = 8192;
	return (size_t)(max / 4);
}

int na__cgroups_open(const na__cgroups_opts *o, na__cgroups **out, cm_err *err)
{
	const char *root = o->root ? o->root : NA__CG_DEFAULT_ROOT;
	if (!*root || strlen(root) >= NA__CG_ROOT_MAX)
		return cm_errf(err, CM_EINVAL, "cgroup root path is empty or too long");
	na__cgroups *cg = calloc(1, sizeof(*cg));
	if (!cg)
		return cm_errf(err, CM_ENOMEM, "out of memory for the cgroup collector");
	snprintf(cg->proc_root, sizeof(cg->proc_root), "%s", o->proc_root ? o->proc_root : "/proc");
	cg->meta = o->meta;
	struct rlimit rl;
	cg->fd_budget = o->fd_budget ? o->fd_budget
			: getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur / 2
											       : 1u << 20;
	cg->kmsg_fd = -1;
	cg->file_watch_max = cg_file_watch_max();
	int rc = cg_detect(cg, root, err);
	if (rc) {
		na__cgroups_close(cg);
		return rc;
	}
	cg_kmsg_open(cg);
	*out = cg;
	return CM_OK;
}

void na__cgroups_close(na__cgroups *cg)
{
	if (!cg)
		return;
	for (size_t i = 0; i < cg->nnodes; i++)
		cg_node_free(cg, cg->nodes[i]);
	for (int m = 0; m < cg->nmounts; m++) {
		close(cg->mounts[m].fd);
		if (cg->mounts[m].ino_fd >= 0)
			close(cg->mounts[m].ino_fd);
	}
	if (cg->kmsg_fd >= 0)
		close(cg->kmsg_fd);
	free(cg->nodes);
	free(cg->table);
	free(cg);
}

int na__cgroups_version(const na__cgroups *cg) { return cg->version; }
