/* ls_tail.c -- the tailer: discovery, block reads, rotation and copytruncate, positions on ack.
 *
 * Owns every open container log file of a node. ls_tail_read (called by the agent from a worker thread)
 * rescans the directories when inotify or the rescan interval says so, checks each file for rotation and
 * truncation, reads what is new in large blocks, parses and joins lines (ls_parse.c, ls_join.c) and
 * copies whole records into the caller's batch. It snapshots each file's position under the batch id;
 * ls_tail_commit writes the snapshots up to an acknowledged batch to sqlite (ls_pos.c).
 *
 * A position is two offsets (docs/logs.md): resume_off, where reading restarts (the start of the
 * earliest record still open, so no piece of it is lost), and done_off, the end of the last record
 * shipped (so records that completed after resume_off are not shipped twice). With stdout and stderr
 * pieces interleaved the two differ; otherwise they are equal. ls_tail_stage records, before a batch is
 * sent, the positions after it under its wire seq; after a crash the first reads reproduce each staged
 * batch (every file read from the committed position up to the staged done_off) for the caller to send
 * again with the same seq, which the aggregator's dedupe turns into exactly once.
 *
 * Files are identified by (st_dev, st_ino) plus a CRC32C of their first 256 bytes. A path that now names
 * another inode (kubelet rename rotation) or none (deletion) leaves the old file open as "rotated": it is
 * drained to its end and closed rotate_wait_ms later. A file shorter than its position, or whose head
 * changed, was truncated (copytruncate): the copy next to it with the same head is drained from the
 * position first, then the file is read from 0; a scan never reads such a copy on its own, not even
 * while it is still being written (shorter than the head, so compared with the head's bytes). A
 * physical line longer than max_line is cut there and the rest skipped up to its newline; nothing ever
 * stops a file. Nothing here prints.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ls_int.h"

enum { FMT_UNKNOWN, FMT_CRI, FMT_DOCKER };

typedef struct ls__file {
	struct ls__file *next;
	char path[1024];
	uint64_t dev, ino;
	uint32_t fp_len, fp;
	uint8_t head[LS__FP_MAX]; /* the first fp_len bytes themselves, once head_ok */
	int head_ok;
	int fd, format;
	uint64_t read_off;   /* next byte to read: everything before it is parsed or open in the joiner */
	uint64_t done_off;   /* end of the last record emitted */
	uint64_t skip_upto;  /* records ending at or before it were shipped before a restart */
	uint64_t last_size;  /* size and mtime at the last check: unchanged means nothing to look at */
	int64_t last_mtime_ns;
	int rotated, at_eof, dirty, longline;
	int finished;        /* rotated and drained: closed, kept so scans do not reopen it */
	uint64_t seen_gen;   /* the last scan that found it on disk */
	uint64_t finished_gen; /* the scan of the read that finished it */
	int64_t rotated_ms;
	uint64_t long_start; /* offset of the physical line being skipped past max_line */
	cm_buf longbuf;      /* its first max_line bytes */
	ls__joiner j;
	ls__meta meta;
	uint64_t src_batch;  /* batch whose sources hold this file at src_idx */
	uint32_t src_idx;
	uint64_t replay_limit; /* replaying a staged batch: emit no record ending past this offset */
	int replay_hit;        /* reading stopped at replay_limit */
} ls__file;

typedef struct inflight {
	uint64_t id;
	size_t bytes;
} inflight;

typedef struct staged {
	uint64_t id, seq;
} staged;

struct ls_tail {
	ls_tail_opts o;
	pthread_mutex_t mu;
	ls__posdb *db;
	ls__pos *stored;  /* rows read at open not yet matched to a file */
	size_t nstored;
	ls__file *files;
	uint8_t *buf;
	cm_buf scratch;
	int ifd;
	int64_t last_scan_ms;
	uint64_t scan_gen;
	int need_scan;
	uint64_t next_batch;
	ls__pos *snaps;   /* positions not yet committed, in batch order */
	uint64_t *snap_batch;
	size_t nsnaps, capsnaps;
	inflight *infl;
	size_t ninfl, capinfl;
	staged *stg;        /* batches staged (ls_tail_stage) and not yet committed, in id order */
	size_t nstg, capstg;
	ls__pos *replay;    /* staged rows found at open, by seq: handed out again first */
	uint64_t *replay_seq;
	size_t nreplay, replay_pos;
	ls_tail_stats st;
};

/* The budget of one read. */
typedef struct rdctx {
	ls_batch *b;
	size_t max_bytes, max_records;
} rdctx;

static int rd_full(const rdctx *rd)
{
	return (rd->max_bytes && rd->b->bytes >= rd->max_bytes) ||
	       (rd->max_records && rd->b->nrecords >= rd->max_records);
}

/* ---- batches ------------------------------------------------------------------------------------------ */

void ls_batch_init(ls_batch *b)
{
	memset(b, 0, sizeof(*b));
	cm_arena_init(&b->arena, 0);
}

void ls_batch_close(ls_batch *b)
{
	free(b->records);
	free(b->sources);
	cm_arena_close(&b->arena);
	memset(b, 0, sizeof(*b));
}

static void batch_reset(ls_batch *b, uint64_t id)
{
	cm_arena_reset(&b->arena); /* keeps its blocks: the next read reuses them instead of faulting new pages */
	b->id = id;
	b->replay_seq = 0;
	b->more = 0;
	b->nrecords = b->nsources = b->bytes = 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 64;
	while (nc < need)
		nc *= 2;
	void *np = realloc(*p, nc * size);
	if (!np)
		return CM_ENOMEM;
	*p = np;
	*cap = nc;
	return 0;
}

static int batch_source(ls_batch *b, ls__file *f, uint32_t *idx)
{
	if (f->src_batch == b->id) {
		*idx = f->src_idx;
		return 0;
	}
	if (grow((void **)&b->sources, &b->cap_sources, b->nsources + 1, sizeof(ls_source)))
		return CM_ENOMEM;
	ls_source *s = &b->sources[b->nsources];
	s->namespace_ = cm_arena_strdup(&b->arena, f->meta.ns);
	s->pod = cm_arena_strdup(&b->arena, f->meta.pod);
	s->pod_uid = cm_arena_strdup(&b->arena, f->meta.uid);
	s->container = cm_arena_strdup(&b->arena, f->meta.container);
	s->container_id = cm_arena_strdup(&b->arena, f->meta.container_id);
	s->path = cm_arena_strdup(&b->arena, f->path);
	if (!s->namespace_ || !s->pod || !s->pod_uid || !s->container || !s->container_id || !s->path)
		return CM_ENOMEM;
	f->src_batch = b->id;
	*idx = f->src_idx = (uint32_t)b->nsources++;
	return 0;
}

static int emit(ls_tail *t, ls__file *f, const ls__rec *r, rdctx *rd)
{
	ls_batch *b = rd->b;
	uint32_t src;
	if (batch_source(b, f, &src) ||
	    grow((void **)&b->records, &b->cap_records, b->nrecords + 1, sizeof(ls_record)))
		return CM_ENOMEM;
	char *line = cm_arena_alloc(&b->arena, r->len ? r->len : 1);
	if (!line)
		return CM_ENOMEM;
	memcpy(line, r->msg, r->len);
	b->records[b->nrecords++] = (ls_record){r->ts_ns, src, (uint8_t)r->stream, (uint8_t)r->truncated, line,
						r->len};
	b->bytes += r->len;
	t->st.records++;
	t->st.bytes += r->len;
	t->st.truncated += r->truncated != 0;
	return 0;
}

/* ---- lines --------------------------------------------------------------------------------------------- */

/* One physical line [start, end) of file f; `cut` when it was longer than max_line. */
static int handle_line(ls_tail *t, ls__file *f, const char *p, size_t len, uint64_t start, uint64_t end, int cut,
		       rdctx *rd)
{
	if (f->format == FMT_UNKNOWN)
		f->format = len && p[0] == '{' ? FMT_DOCKER : FMT_CRI;
	ls_line l;
	int rc = f->format == FMT_DOCKER ? ls_docker_parse(p, len, &t->scratch, &l) : ls_cri_parse(p, len, &l);
	if (rc == CM_ENOMEM)
		return rc;
	if (rc) {
		t->st.bad_lines++;
		return 0;
	}
	ls__rec r;
	rc = ls__join_feed(&f->j, &l, start, cut, &r);
	if (rc <= 0)
		return rc;
	if (end <= f->skip_upto)
		return 0; /* shipped before a restart */
	f->done_off = end;
	return emit(t, f, &r, rd);
}

/* Parses the complete lines of buf (read at file offset base); returns the bytes consumed. */
static int process_block(ls_tail *t, ls__file *f, const uint8_t *buf, size_t n, uint64_t base, rdctx *rd,
			 size_t *consumed)
{
	size_t pos = 0;
	int rc = 0;
	while (pos < n && !rd_full(rd)) {
		const uint8_t *nl = memchr(buf + pos, '\n', n - pos);
		uint64_t end = nl ? base + (uint64_t)(nl - buf) + 1 : 0;
		if (nl && f->replay_limit && end > f->replay_limit) {
			f->replay_hit = 1; /* the staged batch ended before this line */
			break;
		}
		if (f->longline) {
			if (!nl) {
				pos = n;
				break;
			}
			rc = handle_line(t, f, (const char *)f->longbuf.data, f->longbuf.len, f->long_start, end, 1, rd);
			f->longline = 0;
		} else if (!nl) {
			if (n - pos <= t->o.max_line)
				break; /* an incomplete line: read it again when it is whole */
			f->longline = 1, f->long_start = base + pos, f->longbuf.len = 0;
			rc = cm_buf_append(&f->longbuf, buf + pos, t->o.max_line);
			pos = n;
		} else {
			rc = handle_line(t, f, (const char *)buf + pos, (size_t)(nl - buf) - pos, base + pos, end, 0, rd);
		}
		if (rc)
			return rc;
		if (nl)
			pos = (size_t)(nl - buf) + 1;
	}
	*consumed = pos;
	return 0;
}

static int read_file(ls_tail *t, ls__file *f, rdctx *rd)
{
	while (!rd_full(rd)) {
		ssize_t n = pread(f->fd, t->buf, t->o.read_block, (off_t)f->read_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		size_t used = 0;
		int rc = n ? process_block(t, f, t->buf, (size_t)n, f->read_off, rd, &used) : 0;
		if (rc)
			return rc;
		f->read_off += used;
		f->dirty |= used != 0;
		if (f->replay_hit) {
			f->at_eof = 0;
			break;
		}
		if ((size_t)n < t->o.read_block) { /* the end of the file, maybe with a line still open */
			f->at_eof = used == (size_t)n || !rd_full(rd);
			break;
		}
		if (rd_full(rd) || !used) {
			f->at_eof = 0; /* more of it may wait: a rotated file is not closed before it is drained */
			break;
		}
		/* a full block whose last line goes on in the next one: read on from it */
	}
	return 0;
}

/* ---- files --------------------------------------------------------------------------------------------- */

/* CRC32C of the first min(size, 256) bytes, which are left in head (LS__FP_MAX bytes). */
static int fingerprint(int fd, uint64_t size, uint32_t len_old, uint32_t *crc_old, uint32_t *len, uint32_t *crc,
		       uint8_t *head)
{
	size_t want = size < LS__FP_MAX ? (size_t)size : LS__FP_MAX;
	ssize_t n = pread(fd, head, want, 0);
	if (n < 0)
		return -errno;
	*len = (uint32_t)n;
	*crc = cm_crc32c(0, head, (size_t)n);
	*crc_old = len_old <= (uint32_t)n ? cm_crc32c(0, head, len_old) : ~0u;
	return 0;
}

static ls__file *file_new(ls_tail *t, const char *path, const struct stat *st, int fd, const ls__meta *m)
{
	ls__file *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	snprintf(f->path, sizeof(f->path), "%s", path);
	f->dev = (uint64_t)st->st_dev, f->ino = (uint64_t)st->st_ino, f->fd = fd;
	f->meta = *m;
	f->dirty = 1;
	cm_buf_init(&f->longbuf);
	ls__join_init(&f->j, t->o.max_line);
	return f;
}

static void file_free(ls__file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	cm_buf_close(&f->longbuf);
	ls__join_close(&f->j);
	free(f);
}

/* Restores a stored position for (dev, ino), if any, and forgets the row. */
static void restore_position(ls_tail *t, ls__file *f)
{
	for (size_t i = 0; i < t->nstored; i++) {
		ls__pos *p = &t->stored[i];
		if (p->dev != f->dev || p->ino != f->ino)
			continue;
		f->fp_len = p->fp_len, f->fp = p->fp;
		f->read_off = p->resume_off, f->skip_upto = p->done_off, f->done_off = p->done_off;
		f->last_size = UINT64_MAX; /* check the head (and learn its bytes) at the first read */
		t->stored[i] = t->stored[--t->nstored];
		return;
	}
}

static ls__file *find_file(ls_tail *t, uint64_t dev, uint64_t ino)
{
	for (ls__file *f = t->files; f; f = f->next)
		if (f->dev == dev && f->ino == ino)
			return f;
	return NULL;
}

static void file_append(ls_tail *t, ls__file *f)
{
	ls__file **pp = &t->files;
	while (*pp)
		pp = &(*pp)->next;
	*pp = f;
	t->st.files++;
}

/* Rotated files go before live ones, in name order (kubelet's suffixes sort by time), so a stream's
 * older lines are read first. */
static void file_insert_rotated(ls_tail *t, ls__file *f)
{
	ls__file **pp = &t->files;
	while (*pp && (*pp)->rotated && strcmp((*pp)->path, f->path) < 0)
		pp = &(*pp)->next;
	f->next = *pp, *pp = f;
	t->st.files++;
}

/* Whether a file whose first n bytes are h starts with f's head, or is a prefix of it: a copy still
 * being written (logrotate creates it empty and fills it) cannot be told from a finished one until it
 * holds fp_len bytes. A head not read since a restart is not known: such a file may be a copy too. */
static int head_matches(const ls__file *f, const uint8_t *h, uint32_t n)
{
	if (n >= f->fp_len)
		return cm_crc32c(0, h, f->fp_len) == f->fp;
	return !f->head_ok || memcmp(h, f->head, n) == 0;
}

/* Whether new file c has the head of a file we track in its directory, or part of it (a copy of it,
 * maybe unfinished, or the same bytes: shipping it would duplicate them). Not tracked now, a copy is
 * drained by on_truncate from the original's position; anything else is looked at again next scan. */
static int is_copy_of_tracked(ls_tail *t, const ls__file *c)
{
	const char *slash = strrchr(c->path, '/');
	size_t dl = slash ? (size_t)(slash - c->path) : 0;
	struct stat st;
	uint8_t head[LS__FP_MAX];
	uint32_t len, crc, crc_old;
	if (fstat(c->fd, &st) || fingerprint(c->fd, (uint64_t)st.st_size, 0, &crc_old, &len, &crc, head))
		return 0;
	for (ls__file *f = t->files; f; f = f->next) {
		if (f->rotated || !f->fp_len || strncmp(f->path, c->path, dl) || f->path[dl] != '/')
			continue;
		if (head_matches(f, head, len))
			return 1;
	}
	return 0;
}

/* Whether a finished (closed) file's inode now holds another file: once the rotated file was deleted
 * the filesystem may give its inode to the next file made (ext4 does at once, and kubelet deletes the
 * oldest rotated file as it rotates), which must then be read from 0. A finished file never changes, so
 * another size or another head means another file. */
static int inode_reused(const ls__file *f, const char *path, const struct stat *st)
{
	if ((uint64_t)st->st_size != f->read_off)
		return 1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint32_t len, crc, crc_old;
	uint8_t head[LS__FP_MAX];
	int same = fd >= 0 && fingerprint(fd, (uint64_t)st->st_size, f->fp_len, &crc_old, &len, &crc, head) == 0 &&
		   crc_old == f->fp;
	if (fd >= 0)
		close(fd);
	return !same;
}

/* Drops the finished entry f (its file is gone): the new file at its inode gets a fresh entry, whose first
 * snapshot overwrites the stored position of the same (dev, ino). */
static void forget_finished(ls_tail *t, ls__file *f)
{
	for (ls__file **pp = &t->files; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			file_free(f);
			t->st.inode_reuses++;
			return;
		}
}

/* A file found by a scan at path; `rotated` for a rotated name ("0.log.<suffix>"). */
static int track(ls_tail *t, const char *path, const ls__meta *m, int rotated)
{
	struct stat st;
	if (stat(path, &st) || !S_ISREG(st.st_mode))
		return 0;
	ls__file *f = find_file(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
	if (f && f->finished && inode_reused(f, path, &st)) {
		forget_finished(t, f);
		f = NULL;
	}
	if (f)
		f->seen_gen = t->scan_gen;
	if (f) {
		if (!f->meta.container_id[0] && m->container_id[0])
			snprintf(f->meta.container_id, sizeof(f->meta.container_id), "%s", m->container_id);
		return 0;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0; /* gone since the readdir */
	f = file_new(t, path, &st, fd, m);
	if (!f) {
		close(fd);
		return CM_ENOMEM;
	}
	restore_position(t, f);
	if (rotated && f->read_off == 0 && f->skip_upto == 0 && is_copy_of_tracked(t, f)) {
		file_free(f); /* a copytruncate copy: on_truncate drains it from the original's position */
		return 0;
	}
	f->seen_gen = t->scan_gen;
	f->rotated = rotated, f->rotated_ms = cm_mono_ns() / 1000000;
	file_append(t, f);
	return 0;
}

/* Metadata of a file from its path or, for a rotated name ("0.log.20240501-100000", "0.log.1"), from
 * the name it was rotated from. */
static int meta_any(const char *path, ls__meta *m)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s", path);
	char *base = strrchr(p, '/');
	char *dot = base ? strstr(base, ".log") : NULL;
	if (dot)
		dot[4] = 0;
	return ls__meta_from_pods_path(p, m) && ls__meta_from_containers_path(p, m) ? CM_EINVAL : 0;
}

/* ---- discovery ----------------------------------------------------------------------------------------- */

/* Called before dir is listed, so an entry made after the listing gives an event. A directory that
 * could not be watched (out of watches or memory; not one that is gone) makes the next read scan again. */
static void watch_dir(ls_tail *t, const char *dir)
{
	if (t->ifd >= 0 && inotify_add_watch(t->ifd, dir, IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
								   IN_MODIFY | IN_ONLYDIR) < 0 && errno != ENOENT)
		t->need_scan = 1;
}

static int is_log_name(const char *n)
{
	size_t k = strlen(n);
	return n[0] != '.' && k > 4 && !strcmp(n + k - 4, ".log");
}

/* "0.log.20240501-100000" (kubelet), "0.log.1" (logrotate); compressed ones are not read. */
static int is_rotated_name(const char *n)
{
	const char *d = strstr(n, ".log.");
	size_t k = strlen(n);
	return n[0] != '.' && d && d > n && !(k > 3 && !strcmp(n + k - 3, ".gz"));
}

/* Rotated names first, in name order (kubelet's suffixes sort by time), then live ones: a file first
 * seen in this scan is read after those of the same directory that are older. */
static int name_order(const struct dirent **a, const struct dirent **b)
{
	int ra = is_rotated_name((*a)->d_name), rb = is_rotated_name((*b)->d_name);
	return ra != rb ? rb - ra : strcmp((*a)->d_name, (*b)->d_name);
}

static int log_entry(const struct dirent *e) { return is_rotated_name(e->d_name) || is_log_name(e->d_name); }

static int scan_container_dir(ls_tail *t, const char *dir)
{
	struct dirent **ents;
	watch_dir(t, dir);
	int n = scandir(dir, &ents, log_entry, name_order);
	if (n < 0)
		return 0;
	int rc = 0;
	char path[1024];
	for (int i = 0; i < n; i++) {
		ls__meta m;
		if (!rc && (size_t)snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name) < sizeof(path) &&
		    meta_any(path, &m) == 0)
			rc = track(t, path, &m, is_rotated_name(ents[i]->d_name));
		free(ents[i]);
	}
	free(ents);
	return rc;
}

/* Calls fn on every subdirectory of dir. */
static int each_subdir(ls_tail *t, const char *dir, int (*fn)(ls_tail *, const char *))
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	watch_dir(t, dir);
	struct dirent *e;
	int rc = 0;
	char path[1024];
	while (!rc && (e = readdir(d))) {
		if (e->d_name[0] == '.' || (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < sizeof(path))
			rc = fn(t, path);
	}
	closedir(d);
	return rc;
}

static int scan_pod_dir(ls_tail *t, const char *dir) { return each_subdir(t, dir, scan_container_dir); }

static int scan_containers(ls_tail *t, const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	watch_dir(t, dir);
	struct dirent *e;
	int rc = 0;
	char path[1024];
	while (!rc && (e = readdir(d))) {
		ls__meta m;
		if (!is_log_name(e->d_name) || (size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
			continue;
		if (ls__meta_from_containers_path(path, &m) == 0)
			rc = track(t, path, &m, 0);
	}
	closedir(d);
	return rc;
}

static int scan(ls_tail *t)
{
	char dir[1024];
	t->scan_gen++;
	t->need_scan = 0; /* before the walk: a watch it cannot add sets it again */
	snprintf(dir, sizeof(dir), "%s/var/log/pods", t->o.log_root);
	int rc = each_subdir(t, dir, scan_pod_dir);
	snprintf(dir, sizeof(dir), "%s/var/log/containers", t->o.log_root);
	if (!rc)
		rc = scan_containers(t, dir);
	t->last_scan_ms = cm_mono_ns() / 1000000;
	return rc;
}

/* ---- rotation and truncation --------------------------------------------------------------------------- */

/* Opens the file in dir whose name starts with base (and differs from it) that satisfies match. */
static int find_sibling(const char *path, int (*match)(const struct stat *, int, void *), void *arg,
			char *out, size_t cap)
{
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash)
		return -1;
	*slash = 0;
	const char *base = slash + 1;
	size_t bl = strlen(base);
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int fd = -1;
	struct dirent *e;
	while (fd < 0 && (e = readdir(d))) {
		size_t k = strlen(e->d_name);
		if (k <= bl || memcmp(e->d_name, base, bl) || (k > 3 && !strcmp(e->d_name + k - 3, ".gz")))
			continue;
		if ((size_t)snprintf(out, cap, "%s/%s", dir, e->d_name) >= cap)
			continue;
		struct stat st;
		int cfd = open(out, O_RDONLY | O_CLOEXEC);
		if (cfd < 0)
			continue;
		if (fstat(cfd, &st) == 0 && S_ISREG(st.st_mode) && match(&st, cfd, arg))
			fd = cfd;
		else
			close(cfd);
	}
	closedir(d);
	return fd;
}

/* A copytruncate copy: another inode, at least as long as our position, with our head. */
static int copy_matches(const struct stat *st, int fd, void *arg)
{
	const ls__file *f = arg;
	uint32_t len, crc, crc_old;
	uint8_t head[LS__FP_MAX];
	if ((uint64_t)st->st_ino == f->ino || (uint64_t)st->st_size < f->read_off)
		return 0;
	return fingerprint(fd, (uint64_t)st->st_size, f->fp_len, &crc_old, &len, &crc, head) == 0 &&
	       crc_old == f->fp && f->fp_len > 0;
}

/* *pp was truncated: hand its state to a rotated entry for the copy, inserted before it so the copy is
 * drained from the position first, or drop it when no copy is found; then read the file from 0. */
static int on_truncate(ls_tail *t, ls__file **pp)
{
	ls__file *f = *pp;
	char cpath[1024];
	int cfd = find_sibling(f->path, copy_matches, f, cpath, sizeof(cpath));
	t->st.truncations++;
	if (cfd >= 0) {
		struct stat st;
		ls__file *c = fstat(cfd, &st) == 0 ? file_new(t, cpath, &st, cfd, &f->meta) : NULL;
		if (!c) {
			close(cfd);
			return CM_ENOMEM;
		}
		ls__joiner tmp = c->j;
		c->j = f->j, f->j = tmp;
		cm_buf tb = c->longbuf;
		c->longbuf = f->longbuf, f->longbuf = tb;
		c->longline = f->longline, c->long_start = f->long_start, c->format = f->format;
		c->read_off = f->read_off, c->done_off = f->done_off, c->skip_upto = f->skip_upto;
		c->fp = f->fp, c->fp_len = f->fp_len;
		c->rotated = 1, c->rotated_ms = cm_mono_ns() / 1000000;
		c->seen_gen = t->scan_gen;
		c->next = f, *pp = c;
		t->st.files++;
	}
	ls__join_reset(&f->j);
	f->longline = 0;
	f->read_off = f->done_off = f->skip_upto = 0;
	f->fp_len = f->fp = 0, f->head_ok = 1;
	f->last_size = 0;
	f->dirty = 1;
	return 0;
}

/* Follows rename rotation, deletion and truncation of a file that is still at its path. */
static int check_file(ls_tail *t, ls__file **pp)
{
	ls__file *f = *pp;
	struct stat ps, fs;
	if (stat(f->path, &ps) || (uint64_t)ps.st_ino != f->ino || (uint64_t)ps.st_dev != f->dev) {
		f->rotated = 1, f->rotated_ms = cm_mono_ns() / 1000000;
		f->at_eof = 0; /* drained only once a read after this one reaches the end */
		t->st.rotations++;
		t->need_scan = 1;
		return 0;
	}
	if (fstat(f->fd, &fs))
		return -errno;
	uint64_t size = (uint64_t)fs.st_size;
	int64_t mtime = (int64_t)fs.st_mtim.tv_sec * 1000000000 + fs.st_mtim.tv_nsec;
	if (size == f->last_size && mtime == f->last_mtime_ns)
		return 0; /* size alone is not enough: a truncated file can regrow to the same size */
	if (size < f->read_off)
		return on_truncate(t, pp);
	f->last_size = size, f->last_mtime_ns = mtime;
	uint32_t len, crc, crc_old;
	uint8_t head[LS__FP_MAX];
	int rc = fingerprint(f->fd, size, f->fp_len, &crc_old, &len, &crc, head);
	if (rc)
		return rc;
	if (f->fp_len && crc_old != f->fp)
		return on_truncate(t, pp); /* truncated and rewritten past our position */
	if (len != f->fp_len)
		f->fp_len = len, f->fp = crc, f->dirty = 1;
	memcpy(f->head, head, f->fp_len);
	f->head_ok = 1;
	return 0;
}

/* ---- positions ----------------------------------------------------------------------------------------- */

static int snapshot(ls_tail *t, const ls__file *f, uint64_t batch, int gone)
{
	if (grow((void **)&t->snaps, &t->capsnaps, t->nsnaps + 1, sizeof(ls__pos)))
		return CM_ENOMEM;
	size_t cap = t->capsnaps;
	uint64_t *nb = realloc(t->snap_batch, cap * sizeof(*nb));
	if (!nb)
		return CM_ENOMEM;
	t->snap_batch = nb;
	ls__pos *p = &t->snaps[t->nsnaps];
	memset(p, 0, sizeof(*p));
	p->dev = f->dev, p->ino = f->ino, p->fp_len = f->fp_len, p->fp = f->fp, p->gone = gone;
	p->resume_off = ls__join_resume(&f->j, f->longline ? f->long_start : f->read_off);
	p->done_off = f->done_off > f->skip_upto ? f->done_off : f->skip_upto;
	snprintf(p->path, sizeof(p->path), "%s", f->path);
	t->snap_batch[t->nsnaps++] = batch;
	return 0;
}

/* Snapshots changed files; closes rotated files that are drained and past rotate_wait. */
static int end_read(ls_tail *t, uint64_t batch)
{
	int64_t now = cm_mono_ns() / 1000000;
	for (ls__file **pp = &t->files; *pp;) {
		ls__file *f = *pp;
		if (!f->finished && f->rotated && f->at_eof && !f->longline && now - f->rotated_ms >= t->o.rotate_wait_ms) {
			close(f->fd);
			f->fd = -1, f->finished = 1, f->dirty = 1, f->finished_gen = t->scan_gen;
			ls__join_reset(&f->j);
			t->st.files--;
		}
		/* Gone when a scan that began after it finished did not find it: a readdir that races with
		 * the rename that rotated it may see neither name (ext4 orders entries by hash). */
		int vanished = f->finished && f->seen_gen != t->scan_gen && f->finished_gen != t->scan_gen;
		if ((f->dirty || vanished) && snapshot(t, f, batch, vanished))
			return CM_ENOMEM;
		f->dirty = 0;
		if (vanished) {
			*pp = f->next;
			file_free(f);
		} else {
			pp = &f->next;
		}
	}
	return 0;
}

/* ---- inotify ------------------------------------------------------------------------------------------- */

static void drain_inotify(ls_tail *t)
{
	if (t->ifd < 0)
		return;
	_Alignas(struct inotify_event) char ev[4096];
	ssize_t n;
	while ((n = read(t->ifd, ev, sizeof(ev))) > 0)
		for (char *p = ev; p < ev + n;) {
			const struct inotify_event *e = (const struct inotify_event *)p;
			if (e->mask & (IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_Q_OVERFLOW))
				t->need_scan = 1;
			p += sizeof(*e) + e->len;
		}
}

/* ---- API ----------------------------------------------------------------------------------------------- */

static void defaults(ls_tail_opts *o)
{
	if (!o->log_root)
		o->log_root = "";
	if (!o->max_line)
		o->max_line = 256 * 1024;
	if (!o->read_block)
		o->read_block = 1 << 20;
	if (o->read_block < 2 * o->max_line)
		o->read_block = 2 * o->max_line;
	if (!o->max_unacked_bytes)
		o->max_unacked_bytes = 32u << 20;
	if (o->rotate_wait_ms == 0)
		o->rotate_wait_ms = 5000;
	if (o->rotate_wait_ms < 0)
		o->rotate_wait_ms = 0;
}

static int same_inode(const struct stat *st, int fd, void *arg)
{
	(void)fd;
	return (uint64_t)st->st_ino == ((const ls__pos *)arg)->ino && (uint64_t)st->st_dev == ((const ls__pos *)arg)->dev;
}

/* A stored row no scanned path matched: a rotated file not yet drained (at its stored path or a sibling
 * of it) is reopened as rotated; otherwise the file is gone and the row is deleted at the next commit. */
static int resume_one(ls_tail *t, ls__pos *p)
{
	char path[1024];
	struct stat st;
	ls__meta m;
	snprintf(path, sizeof(path), "%s", p->path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && (fstat(fd, &st) || !same_inode(&st, fd, p))) {
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		fd = find_sibling(p->path, same_inode, p, path, sizeof(path));
	if (fd < 0 || fstat(fd, &st) || meta_any(path, &m)) {
		if (fd >= 0)
			close(fd);
		ls__file gone = {.dev = p->dev, .ino = p->ino};
		return snapshot(t, &gone, t->next_batch, 1);
	}
	ls__file *f = file_new(t, path, &st, fd, &m);
	if (!f) {
		close(fd);
		return CM_ENOMEM;
	}
	f->fp_len = p->fp_len, f->fp = p->fp;
	f->read_off = p->resume_off, f->skip_upto = f->done_off = p->done_off;
	f->rotated = 1, f->rotated_ms = cm_mono_ns() / 1000000;
	f->seen_gen = t->scan_gen;
	t->st.rotations++;
	file_insert_rotated(t, f);
	return 0;
}

static int resume_stored(ls_tail *t)
{
	int rc = 0;
	while (!rc && t->nstored)
		rc = resume_one(t, &t->stored[--t->nstored]);
	return rc;
}

int ls_tail_open(const ls_tail_opts *opts, ls_tail **out, cm_err *err)
{
	ls_tail *t = calloc(1, sizeof(*t));
	if (!t)
		return cm_errf(err, CM_ENOMEM, "tail: out of memory");
	t->o = *opts;
	defaults(&t->o);
	t->ifd = -1;
	t->next_batch = 1;
	pthread_mutex_init(&t->mu, NULL);
	cm_buf_init(&t->scratch);
	int rc = ls__posdb_open(t->o.db_path, &t->db, err);
	if (rc)
		goto fail;
	rc = CM_ENOMEM;
	if (!(t->buf = malloc(t->o.read_block)))
		goto fail;
	if ((rc = ls__posdb_load(t->db, &t->stored, &t->nstored)) ||
	    (rc = ls__posdb_load_inflight(t->db, &t->replay, &t->replay_seq, &t->nreplay))) {
		cm_errf(err, rc, "positions %s: cannot read", t->o.db_path);
		goto fail;
	}
	if (!t->o.no_inotify)
		t->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if ((rc = scan(t)) || (rc = resume_stored(t))) {
		cm_errf(err, rc, "tail: scanning %s: %s", t->o.log_root, cm_strerror(rc));
		goto fail;
	}
	*out = t;
	return 0;
fail:
	ls_tail_close(t);
	return rc;
}

void ls_tail_close(ls_tail *t)
{
	if (!t)
		return;
	for (ls__file *f = t->files, *n; f; f = n) {
		n = f->next;
		file_free(f);
	}
	if (t->ifd >= 0)
		close(t->ifd);
	ls__posdb_close(t->db);
	free(t->stored);
	free(t->snaps);
	free(t->snap_batch);
	free(t->infl);
	free(t->stg);
	free(t->replay);
	free(t->replay_seq);
	free(t->buf);
	cm_buf_close(&t->scratch);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

int ls_tail_fd(const ls_tail *t) { return t->ifd; }

static size_t unacked(const ls_tail *t)
{
	size_t s = 0;
	for (size_t i = 0; i < t->ninfl; i++)
		s += t->infl[i].bytes;
	return s;
}

/* Hands out the next batch staged before a restart: each of its files read from the committed
 * position up to the staged one, nothing else; b->replay_seq tells the caller which seq to send it as. */
static int replay_locked(ls_tail *t, ls_batch *b)
{
	uint64_t seq = t->replay_seq[t->replay_pos];
	rdctx rd = {b, 0, 0};
	int rc = 0;
	for (; !rc && t->replay_pos < t->nreplay && t->replay_seq[t->replay_pos] == seq; t->replay_pos++) {
		const ls__pos *p = &t->replay[t->replay_pos];
		ls__file *f = find_file(t, p->dev, p->ino);
		if (!f || f->finished || f->read_off >= p->done_off)
			continue; /* gone while we were down, or nothing of it left to read */
		f->replay_limit = p->done_off, f->replay_hit = 0;
		rc = read_file(t, f, &rd);
		f->replay_limit = 0, f->replay_hit = 0;
	}
	b->replay_seq = seq;
	if (!rc && grow((void **)&t->stg, &t->capstg, t->nstg + 1, sizeof(staged)))
		rc = CM_ENOMEM;
	if (!rc)
		t->stg[t->nstg++] = (staged){b->id, seq};
	return rc;
}

static int read_locked(ls_tail *t, ls_batch *b, size_t max_bytes, size_t max_records)
{
	size_t ua = unacked(t);
	if (ua >= t->o.max_unacked_bytes)
		return CM_AGAIN;
	if (!max_bytes || max_bytes > t->o.max_unacked_bytes - ua)
		max_bytes = t->o.max_unacked_bytes - ua;
	batch_reset(b, t->next_batch++);
	rdctx rd = {b, max_bytes, max_records};
	drain_inotify(t);
	int64_t now = cm_mono_ns() / 1000000;
	int rc = 0;
	if (t->replay_pos < t->nreplay) {
		rc = replay_locked(t, b);
		goto done;
	}
	if (t->need_scan || t->ifd < 0 || now - t->last_scan_ms >= t->o.rescan_ms)
		rc = scan(t);
	for (ls__file **pp = &t->files; *pp && !rc && !rd_full(&rd);) {
		ls__file *f = *pp;
		if (!f->rotated && !f->finished && (rc = check_file(t, pp)))
			break;
		if (*pp != f)
			continue; /* a copytruncate copy went in before f: drain it first */
		if (!f->finished)
			rc = read_file(t, f, &rd);
		pp = &f->next;
	}
	b->more = rd_full(&rd);
done:
	if (rc == 0)
		rc = end_read(t, b->id);
	if (rc == 0 && grow((void **)&t->infl, &t->capinfl, t->ninfl + 1, sizeof(inflight)))
		rc = CM_ENOMEM;
	if (rc == 0)
		t->infl[t->ninfl++] = (inflight){b->id, b->bytes};
	return rc;
}

int ls_tail_read(ls_tail *t, ls_batch *b, size_t max_bytes, size_t max_records)
{
	pthread_mutex_lock(&t->mu);
	int rc = read_locked(t, b, max_bytes, max_records);
	pthread_mutex_unlock(&t->mu);
	return rc;
}

/* Removes the first k of *len elements of arr. */
static void drop_front(void *arr, size_t *len, size_t k, size_t size)
{
	if (k && k < *len)
		memmove(arr, (char *)arr + k * size, (*len - k) * size);
	*len -= k;
}

static int commit_locked(ls_tail *t, uint64_t id)
{
	size_t n = 0, ns = 0;
	uint64_t unstage = 0;
	while (n < t->nsnaps && t->snap_batch[n] <= id)
		n++;
	for (; ns < t->nstg && t->stg[ns].id <= id; ns++)
		unstage = t->stg[ns].seq > unstage ? t->stg[ns].seq : unstage;
	int rc = ls__posdb_store(t->db, t->snaps, n, unstage);
	if (rc)
		return rc;
	drop_front(t->stg, &t->nstg, ns, sizeof(*t->stg));
	size_t nb = t->nsnaps;
	drop_front(t->snaps, &t->nsnaps, n, sizeof(*t->snaps));
	drop_front(t->snap_batch, &nb, n, sizeof(*t->snap_batch));
	size_t k = 0;
	while (k < t->ninfl && t->infl[k].id <= id)
		k++;
	drop_front(t->infl, &t->ninfl, k, sizeof(*t->infl));
	if (id > t->st.committed_batch)
		t->st.committed_batch = id;
	return 0;
}

/* The positions after batch id: for each file with an uncommitted snapshot up to id, the latest. */
static int stage_locked(ls_tail *t, uint64_t id, uint64_t seq)
{
	ls__pos *rows = calloc(t->nsnaps ? t->nsnaps : 1, sizeof(*rows));
	size_t n = 0;
	if (!rows)
		return CM_ENOMEM;
	for (size_t i = 0; i < t->nsnaps && t->snap_batch[i] <= id; i++) {
		size_t k = 0;
		while (k < n && (rows[k].dev != t->snaps[i].dev || rows[k].ino != t->snaps[i].ino))
			k++;
		rows[k] = t->snaps[i];
		n += k == n;
	}
	int rc = ls__posdb_stage(t->db, seq, rows, n);
	free(rows);
	if (!rc && grow((void **)&t->stg, &t->capstg, t->nstg + 1, sizeof(staged)))
		rc = CM_ENOMEM;
	if (!rc && !(t->nstg && t->stg[t->nstg - 1].id == id))
		t->stg[t->nstg++] = (staged){id, seq};
	return rc;
}

int ls_tail_stage(ls_tail *t, uint64_t id, uint64_t seq)
{
	pthread_mutex_lock(&t->mu);
	int rc = stage_locked(t, id, seq);
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int ls_tail_commit(ls_tail *t, uint64_t id)
{
	pthread_mutex_lock(&t->mu);
	int rc = commit_locked(t, id);
	pthread_mutex_unlock(&t->mu);
	return rc;
}

void ls_tail_stats_get(ls_tail *t, ls_tail_stats *out)
{
	pthread_mutex_lock(&t->mu);
	*out = t->st;
	out->unacked_bytes = unacked(t);
	pthread_mutex_unlock(&t->mu);
}
