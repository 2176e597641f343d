/* na_spool.c -- the agent's bounded queue of batches not yet acknowledged, on disk under --state-dir.
 *
 * Every batch the agent makes is put here (write-through, by the collection worker) and stays until
 * the aggregator answers 200 for it (or refuses it for good); the sender takes the oldest ones (up to
 * a window of the first few, several in flight), POSTs them and marks each done. Done batches leave
 * from the front only, in seq order: one done while an older one is still out stays (as done, not sent
 * again) until every older one is done. So at most window - 1 batches newer than an unacknowledged
 * one can ever be stored (the aggregator's dedupe window relies on it: cm_seqwin in cm.h), and the
 * oldest seq in the spool bounds what may be committed (na_logs.c). A batch survives an aggregator
 * outage and a crash or SIGKILL of the agent (a done one still here is sent again then, and the
 * aggregator acknowledges it as a duplicate), and one agent restart later is delivered in order before
 * anything newer. Past --spool-max-bytes or --max-pending batches the oldest one neither being sent
 * nor done is deleted and counted as dropped, never a logs-only one (the tailer's positions up to it
 * would be committed, and lines still in the log files lost; the agent keeps at most a few of them). Without a state directory the same queue lives in
 * memory only (bounded by --max-pending). A logs-only batch stays in memory in either mode: the log
 * files and the tailer's staged positions are its durable copy (after a crash the tailer reads it again
 * and it goes out under the same seq: na_logs.c), so it costs no file write or read back.
 *
 * Called from worker threads (put: the collection worker; take/done: the sender's workers) and from
 * the loop thread (stats, sendable); a mutex guards the index, never held across file I/O other than
 * one unlink. Never allocates per sample; one small allocation per batch.
 *
 * ## On-disk format, version 1
 *
 * Directory <state-dir>/spool/ holds one file per batch, named by its sequence number as 16 lowercase
 * hex digits plus ".batch" ("0006123456789abc.batch"), so name order is seq order. A file is written
 * as ".tmp-<16 hex>", then renamed, so a complete name means a complete file as long as the kernel
 * runs: a crash or SIGKILL of the agent loses nothing (the page cache has it). Neither the file nor the
 * directory is synced, as Prometheus' WAL does not sync each record: a power loss may lose the newest
 * batches (up to the kernel's dirty writeback age, 30 s by default) or leave one cut short, which the
 * CRC catches at open (deleted, counted corrupt). A sync per batch was ~4 % of the agent's CPU.
 *
 *   offset size field
 *        0    4 magic "CSP1" (0x43 0x53 0x50 0x31)
 *        4    2 version = 1, little-endian
 *        6    2 header length = 32, little-endian
 *        8    8 seq, little-endian; equals the file name's number
 *       16    8 created, Unix milliseconds, little-endian (informational)
 *       24    4 payload length N, little-endian, 1 <= N <= 64 MiB
 *       28    4 CRC32C (Castagnoli) of bytes 0..27 followed by the N payload bytes, little-endian
 *       32    N payload: the cm_wire frame exactly as POSTed (docs/wire-format.md)
 *
 * Valid: file size is exactly 32 + N and every field above holds. At open, invalid files and stale
 * ".tmp-*" files are deleted and counted (corrupt); other names are left alone.
 *
 * <state-dir>/agent.seq keeps the newest sequence number put, so seqs keep increasing across agent
 * restarts even when the spool is empty and the wall clock stepped back: 16 bytes, magic "CSQ1",
 * seq (8, LE), CRC32C of bytes 0..11 (4, LE). Rewritten in place (pwrite) on every put, not synced.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "na_int.h"

#define HDR         32
#define MAX_PAYLOAD (64u << 20)
#define NAME_LEN    22 /* 16 hex + ".batch" */

enum { IDLE, SENDING, DONE };

typedef struct entry {
	uint64_t seq;
	size_t len;
	uint8_t *data; /* memory mode only */
	int state;     /* IDLE, SENDING, DONE (behind an older one not done yet) */
	int alone;     /* sent with nothing else in flight (not known to be a logs-only batch) */
} entry;

struct na__spool {
	int dirfd; /* <state-dir>/spool, -1 in memory mode */
	int seqfd; /* <state-dir>/agent.seq, -1 in memory mode */
	size_t max_batches;
	uint64_t max_bytes;
	uv_mutex_t mu;
	entry *e; /* oldest first */
	size_t n, cap;
	na__spool_stats st;
};

static void put_u64le(uint8_t *p, uint64_t v)
{
	cm_put_u32le(p, (uint32_t)v);
	cm_put_u32le(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64le(const uint8_t *p)
{
	return cm_get_u32le(p) | (uint64_t)cm_get_u32le(p + 4) << 32;
}

static void file_name(char *out, uint64_t seq, int tmp)
{
	snprintf(out, NAME_LEN + 8, tmp ? ".tmp-%016" PRIx64 : "%016" PRIx64 ".batch", seq);
}

static void make_header(uint8_t *h, uint64_t seq, const uint8_t *frame, size_t len)
{
	memcpy(h, "CSP1", 4);
	h[4] = 1, h[5] = 0, h[6] = HDR, h[7] = 0;
	put_u64le(h + 8, seq);
	put_u64le(h + 16, (uint64_t)cm_now_ms());
	cm_put_u32le(h + 24, (uint32_t)len);
	cm_put_u32le(h + 28, cm_crc32c(cm_crc32c(0, h, 28), frame, len));
}

/* Checks a header against the name's seq and the file size; the CRC is checked when the payload is read. */
static int check_header(const uint8_t *h, uint64_t seq, uint64_t size)
{
	if (memcmp(h, "CSP1", 4) || h[4] != 1 || h[5] || h[6] != HDR || h[7] || get_u64le(h + 8) != seq)
		return CM_ECORRUPT;
	uint32_t n = cm_get_u32le(h + 24);
	return n && n <= MAX_PAYLOAD && size == HDR + (uint64_t)n ? CM_OK : CM_ECORRUPT;
}

/* ---- the index (callers hold mu) -------------------------------------------------------------------- */

static int index_push(na__spool *sp, uint64_t seq, size_t len, uint8_t *data, int alone)
{
	if (sp->n == sp->cap) {
		size_t cap = sp->cap ? sp->cap * 2 : 64;
		entry *e = realloc(sp->e, cap * sizeof(*e));
		if (!e)
			return CM_ENOMEM;
		sp->e = e, sp->cap = cap;
	}
	sp->e[sp->n++] = (entry){seq, len, data, IDLE, alone};
	sp->st.batches++;
	sp->st.bytes += len;
	return CM_OK;
}

static void index_remove(na__spool *sp, size_t i)
{
	char name[NAME_LEN + 8];
	entry e = sp->e[i];
	memmove(&sp->e[i], &sp->e[i + 1], (sp->n - i - 1) * sizeof(*sp->e));
	sp->n--;
	sp->st.batches--;
	sp->st.bytes -= e.len;
	free(e.data);
	if (sp->dirfd >= 0 && !e.data) {
		file_name(name, e.seq, 0);
		unlinkat(sp->dirfd, name, 0);
	}
}

/* Drops the oldest idle batches (never the newest) while a bound is exceeded. */
static void enforce_bounds(na__spool *sp)
{
	size_t i = 0;
	while (sp->n > sp->max_batches || (sp->max_bytes && sp->st.bytes > sp->max_bytes)) {
		while (i + 1 < sp->n && (sp->e[i].state != IDLE || !sp->e[i].alone))
			i++; /* never a logs-only batch: its lines would be committed unsent (na_logs.c) */
		if (i + 1 >= sp->n)
			return;
		sp->st.dropped++;
		sp->st.dropped_bytes += sp->e[i].len;
		index_remove(sp, i);
	}
}

static size_t find(const na__spool *sp, uint64_t seq)
{
	size_t i = 0;
	while (i < sp->n && sp->e[i].seq != seq)
		i++;
	return i;
}

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = ((const entry *)a)->seq, y = ((const entry *)b)->seq;
	return (x > y) - (x < y);
}

/* ---- opening: scan what a previous run left ------------------------------------------------------------ */

static int parse_name(const char *name, uint64_t *seq)
{
	if (strlen(name) != NAME_LEN || strcmp(name + 16, ".batch"))
		return CM_EINVAL;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return CM_EINVAL;
		v = v << 4 | (uint64_t)d;
	}
	*seq = v;
	return CM_OK;
}

static void drop_corrupt(na__spool *sp, const char *name, const char *why)
{
	CM_LOG(CM_LOG_WARN, "spool", "deleting spool file %s: %s", name, why);
	unlinkat(sp->dirfd, name, 0);
	sp->st.corrupt++;
}

static void scan_one(na__spool *sp, const char *name)
{
	uint64_t seq;
	uint8_t h[HDR];
	struct stat s;
	if (!strncmp(name, ".tmp-", 5)) {
		drop_corrupt(sp, name, "left half-written by a crash");
		return;
	}
	if (parse_name(name, &seq))
		return;
	int fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	int ok = !fstat(fd, &s) && pread(fd, h, HDR, 0) == HDR && !check_header(h, seq, (uint64_t)s.st_size);
	close(fd);
	if (!ok)
		drop_corrupt(sp, name, "bad header or size");
	else if (index_push(sp, seq, s.st_size - HDR, NULL, 1))
		CM_LOG(CM_LOG_WARN, "spool", "out of memory indexing %s: left for the next start", name);
}

static int scan(na__spool *sp, cm_err *err)
{
	int fd = dup(sp->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int rc = -errno;
		if (fd >= 0)
			close(fd);
		return cm_errf(err, rc, "cannot list the spool: %s", cm_strerror(rc));
	}
	for (struct dirent *de; (de = readdir(d));)
		if (de->d_name[0] != '.' || !strncmp(de->d_name, ".tmp-", 5))
			scan_one(sp, de->d_name);
	closedir(d);
	if (sp->n)
		qsort(sp->e, sp->n, sizeof(*sp->e), cmp_entry);
	return CM_OK;
}

static uint64_t read_seq_file(int fd)
{
	uint8_t b[16];
	if (pread(fd, b, 16, 0) != 16 || memcmp(b, "CSQ1", 4) || cm_get_u32le(b + 12) != cm_crc32c(0, b, 12))
		return 0;
	return get_u64le(b + 4);
}

static int open_dirs(na__spool *sp, const char *dir, cm_err *err)
{
	char path[4096];
	if (mkdir(dir, 0700) && errno != EEXIST)
		return cm_errf(err, -errno, "cannot create --state-dir %s: %s", dir, cm_strerror(-errno));
	snprintf(path, sizeof(path), "%s/spool", dir);
	if (mkdir(path, 0700) && errno != EEXIST)
		return cm_errf(err, -errno, "cannot create %s: %s", path, cm_strerror(-errno));
	if ((sp->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return cm_errf(err, -errno, "cannot open %s: %s", path, cm_strerror(-errno));
	snprintf(path, sizeof(path), "%s/agent.seq", dir);
	if ((sp->seqfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return cm_errf(err, -errno, "cannot open %s: %s", path, cm_strerror(-errno));
	return CM_OK;
}

int na__spool_open(const char *dir, size_t max_batches, uint64_t max_bytes, na__spool **out, uint64_t *last_seq,
                   cm_err *err)
{
	na__spool *sp = calloc(1, sizeof(*sp));
	if (!sp)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	sp->dirfd = sp->seqfd = -1;
	sp->max_batches = max_batches ? max_batches : 1;
	sp->max_bytes = max_bytes;
	uv_mutex_init(&sp->mu);
	int rc = dir ? open_dirs(sp, dir, err) : CM_OK;
	rc = rc || !dir ? rc : scan(sp, err);
	if (rc) {
		na__spool_close(sp);
		return rc;
	}
	uint64_t seq = sp->seqfd >= 0 ? read_seq_file(sp->seqfd) : 0;
	if (sp->n && sp->e[sp->n - 1].seq > seq)
		seq = sp->e[sp->n - 1].seq;
	enforce_bounds(sp);
	*last_seq = seq;
	*out = sp;
	return CM_OK;
}

void na__spool_close(na__spool *sp)
{
	if (!sp)
		return;
	for (size_t i = 0; i < sp->n; i++)
		free(sp->e[i].data);
	free(sp->e);
	if (sp->dirfd >= 0)
		close(sp->dirfd);
	if (sp->seqfd >= 0)
		close(sp->seqfd);
	uv_mutex_destroy(&sp->mu);
	free(sp);
}

/* ---- put, head, pop ------------------------------------------------------------------------------------ */

static int write_file(na__spool *sp, uint64_t seq, const uint8_t *frame, size_t len)
{
	char tmp[NAME_LEN + 8], name[NAME_LEN + 8];
	uint8_t h[HDR];
	make_header(h, seq, frame, len);
	file_name(tmp, seq, 1);
	file_name(name, seq, 0);
	int fd = openat(sp->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct iovec iov[2] = {{h, HDR}, {(void *)frame, len}};
	ssize_t w = writev(fd, iov, 2);
	int rc = w == (ssize_t)(HDR + len) ? CM_OK : w < 0 ? -errno : CM_EIO;
	close(fd);
	if (!rc && renameat(sp->dirfd, tmp, sp->dirfd, name))
		rc = -errno;
	if (rc)
		unlinkat(sp->dirfd, tmp, 0);
	return rc;
}

static void write_seq(na__spool *sp, uint64_t seq)
{
	uint8_t b[16];
	memcpy(b, "CSQ1", 4);
	put_u64le(b + 4, seq);
	cm_put_u32le(b + 12, cm_crc32c(0, b, 12));
	if (pwrite(sp->seqfd, b, 16, 0) != 16)
		sp->st.errors++;
}

int na__spool_put(na__spool *sp, uint64_t seq, uint8_t *frame, size_t len, int logs)
{
	int rc = len && len <= MAX_PAYLOAD ? CM_OK : CM_E2BIG;
	if (!rc && sp->dirfd >= 0)
		write_seq(sp, seq);
	if (!rc && sp->dirfd >= 0 && !logs) {
		rc = write_file(sp, seq, frame, len);
		free(frame);
		frame = NULL;
	}
	uv_mutex_lock(&sp->mu);
	if (!rc)
		rc = index_push(sp, seq, len, frame, !logs);
	if (rc) {
		sp->st.errors++;
		free(frame);
	} else {
		enforce_bounds(sp);
	}
	uv_mutex_unlock(&sp->mu);
	return rc;
}

size_t na__spool_pending(na__spool *sp)
{
	uv_mutex_lock(&sp->mu);
	size_t n = sp->n;
	uv_mutex_unlock(&sp->mu);
	return n;
}

static int read_file(na__spool *sp, uint64_t seq, size_t len, cm_buf *buf)
{
	char name[NAME_LEN + 8];
	uint8_t h[HDR];
	file_name(name, seq, 0);
	int fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf->len = 0;
	int rc = cm_buf_reserve(buf, len);
	if (!rc && (pread(fd, h, HDR, 0) != HDR || check_header(h, seq, HDR + (uint64_t)len) ||
	            pread(fd, buf->data, len, HDR) != (ssize_t)len ||
	            cm_crc32c(cm_crc32c(0, h, 28), buf->data, len) != cm_get_u32le(h + 28)))
		rc = CM_ECORRUPT;
	close(fd);
	if (!rc)
		buf->len = len;
	return rc;
}

/* How many batches claim would give out one after the other now: none while a batch that goes alone is
 * out, and one that goes alone only when nothing is (callers hold mu). */
static size_t claimable(const na__spool *sp, size_t window)
{
	size_t w = sp->n < window ? sp->n : window, busy = 0, k = 0;
	for (size_t i = 0; i < w; i++) {
		if (sp->e[i].state == SENDING && sp->e[i].alone)
			return 0;
		busy += sp->e[i].state == SENDING;
	}
	for (size_t i = 0; i < w; i++) {
		if (sp->e[i].state != IDLE)
			continue;
		if (sp->e[i].alone)
			return k + (!busy && !k);
		k++;
	}
	return k;
}

/* The first idle batch among the first window, marked as being sent, when one may go (callers hold mu). */
static entry *claim(na__spool *sp, size_t window)
{
	if (!claimable(sp, window))
		return NULL;
	for (size_t i = 0; i < sp->n && i < window; i++)
		if (sp->e[i].state == IDLE) {
			sp->e[i].state = SENDING;
			return &sp->e[i];
		}
	return NULL;
}

size_t na__spool_sendable(na__spool *sp, size_t window)
{
	uv_mutex_lock(&sp->mu);
	size_t k = claimable(sp, window);
	uv_mutex_unlock(&sp->mu);
	return k;
}

int na__spool_take(na__spool *sp, size_t window, cm_buf *buf, uint64_t *seq, const uint8_t **data, size_t *len)
{
	for (;;) {
		uv_mutex_lock(&sp->mu);
		entry *p = claim(sp, window), e = p ? *p : (entry){0};
		uv_mutex_unlock(&sp->mu);
		if (!p)
			return CM_ENOENT;
		int rc = e.data ? CM_OK : read_file(sp, e.seq, e.len, buf);
		if (!rc) {
			*seq = e.seq, *data = e.data ? e.data : buf->data, *len = e.len;
			return CM_OK;
		}
		CM_LOG(CM_LOG_WARN, "spool", "spooled batch %" PRIu64 " unreadable (%s): deleted", e.seq,
		       cm_strerror(rc));
		uv_mutex_lock(&sp->mu);
		sp->st.corrupt++;
		index_remove(sp, find(sp, e.seq));
		uv_mutex_unlock(&sp->mu);
	}
}

void na__spool_done(na__spool *sp, uint64_t seq, int delivered)
{
	uv_mutex_lock(&sp->mu);
	size_t i = find(sp, seq);
	assert(i < sp->n && sp->e[i].state == SENDING);
	sp->e[i].state = delivered ? DONE : IDLE;
	while (sp->n && sp->e[0].state == DONE)
		index_remove(sp, 0);
	enforce_bounds(sp);
	uv_mutex_unlock(&sp->mu);
}

void na__spool_stats_get(na__spool *sp, na__spool_stats *out)
{
	uv_mutex_lock(&sp->mu);
	*out = sp->st;
	uv_mutex_unlock(&sp->mu);
}

uint64_t na__spool_oldest_seq(na__spool *sp)
{
	uint64_t min = UINT64_MAX;
	uv_mutex_lock(&sp->mu);
	for (size_t i = 0; i < sp->n; i++)
		min = sp->e[i].seq < min ? sp->e[i].seq : min;
	uv_mutex_unlock(&sp->mu);
	return min;
}

int na__spool_has(na__spool *sp, uint64_t seq)
{
	int has = 0;
	uv_mutex_lock(&sp->mu);
	for (size_t i = 0; i < sp->n && !has; i++)
		has = sp->e[i].seq == seq;
	uv_mutex_unlock(&sp->mu);
	return has;
}
