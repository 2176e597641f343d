/* ag_rwsend.c -- the remote write sender: every stored sample forwarded to --remote-write URLs.
 *
 * Ingest (ag_ingest.c, ag_import.c, ag_rw.c) calls ag__rwsend_enqueue once its samples are durable in
 * the tsdb. The samples are hashed by series (order-independent hash of the label set) to one of
 * `shards` queues per URL, so every series' samples keep their order; each queue is a directory of
 * segment files on disk, and one thread per queue reads it, builds remote write 1.0 requests
 * (prometheus.WriteRequest, snappy block, at most max_samples samples, waiting at most max_wait_ms to
 * fill one), POSTs them with libcurl and moves its acknowledged offset on. The HTTP threads only
 * encode and write(2) under the queue's mutex; the network is touched only by the queue threads.
 *
 * Delivery: 2xx acknowledges; 429, 5xx and connection errors are retried for ever with exponential
 * backoff (RETRY_MIN_MS doubling to RETRY_MAX_MS, jitter: a uniform draw in [d/2, d]); any other 4xx
 * drops the request (counted as rejected). A request is built from whole records of one segment and
 * acknowledged as a whole, so after a restart the queue resends from the last acknowledged record:
 * at-least-once delivery, and exact duplicates (same series, same timestamp) are what a receiver
 * dedupes. When a URL's queue passes max_queue_bytes the oldest segment nobody is reading is deleted
 * and its samples counted as dropped (the segment being sent and the one being written stay).
 *
 * ---- on-disk format (version 1) ----------------------------------------------------------------------
 *
 * <data-dir>/remote-write/<16 hex digits: FNV-1a 64 of the URL>/
 *     url                    the URL, for people (not read back)
 *     shard-NNN/             one queue (NNN = 000 .. shards-1, decimal)
 *         <16 hex>.seg       segments, numbered upwards; a start always begins a new one
 *         ack                the acknowledged position
 *
 * A segment: a 16-byte header, then records, appended only.
 *     0   4  magic "CRWQ"
 *     4   4  version, u32 little-endian = 1
 *     8   8  segment number, u64 LE (equals the file name)
 *    16   .. records
 * A record (all integers little-endian):
 *     0   4  payload length L, u32 (at most REC_MAX)
 *     4   4  CRC32C of the payload
 *     8   L  payload:
 *            0  8  enqueue time, Unix ms, i64
 *            8  4  samples in the record, u32
 *           12  4  series in the record, u32
 *           16  .. series, each:
 *                 1 byte kind: 0 = label pairs, 1 = exposition text
 *                 kind 0: uvarint label count, then per label uvarint length + name bytes,
 *                         uvarint length + value bytes
 *                 kind 1: uvarint length + `name{label="value",...}` as the text format writes it
 *                 uvarint sample count, then per sample i64 timestamp (ms) + f64 value (IEEE bits)
 * A record is written with one write(2) under the queue's mutex. At start each segment is scanned and
 * cut at the first record that is short or fails its CRC (a torn tail); a bad header drops the file.
 *
 * ack (24 bytes, rewritten in place after every acknowledged request):
 *     0   8  segment number, u64 LE
 *     8   8  offset of the next record to send in that segment, u64 LE
 *    16   4  CRC32C of bytes 0..15
 *    20   4  zero
 * A missing or bad ack file means: send everything still on disk. Segments below the acknowledged
 * one are deleted at start and whenever the sender moves past one.
 *
 * Durability: records and ack are written with write(2), not fsynced: they survive the aggregator's
 * crash or SIGKILL (the page cache keeps them), not a machine crash; the samples themselves are in the
 * fsynced tsdb either way. A crash between the tsdb append and the enqueue loses that batch for the
 * receiver only.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ag_int.h"
#include "prompb.pb-c.h"

#define SEG_HEADER 16
#define REC_HEADER 8
#define REC_PAYLOAD_HEADER 16
#define REC_MAX (64u << 20)
#define MAX_SHARDS 64
#define SEG_MAX_BYTES (64u << 20)
#define SEG_MIN_BYTES (64u << 10)
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 5000

typedef struct seg {
	uint64_t no, bytes, samples;
} seg;

struct rw_url;

typedef struct shard {
	struct rw_url *u;
	unsigned idx;
	char dir[4096];
	pthread_t thr;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	seg *segs;          /* segs[0]: the one being sent; segs[nsegs-1]: the one being written */
	size_t nsegs, cap;
	uint64_t bytes;     /* on disk, all segments */
	int wfd;            /* the writer's segment, -1 after a failed write (reopened on the next) */
	uint64_t rd_off;    /* acknowledged offset in segs[0] */
	int ack_fd;
	atomic_uint_fast64_t pending;
	atomic_int_fast64_t lag_from_ms;  /* enqueue time of the oldest unacknowledged record, 0 = none */
	cm_ratelimit rl;
} shard;

typedef struct rw_url {
	struct ag__rwsend *s;
	char *url;
	shard *shards;
	size_t nshards;  /* open queues: the configured count, or more when an earlier run had more */
	atomic_uint_fast64_t sent, rejected, dropped, failures, retries;
} rw_url;

struct ag__rwsend {
	long shards, max_samples;
	int64_t max_wait_ms;
	uint64_t max_queue_bytes, seg_max;
	char *auth;  /* "Authorization: Bearer ..." or NULL */
	rw_url *urls;
	size_t nurls;
	atomic_int stop;
};

/* ---- small helpers ---------------------------------------------------------------------------------- */

static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

/* The same for any order of the labels. */
static uint64_t labels_hash(const cm_label *l, size_t n)
{
	uint64_t h = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t x = fnv1a(l[i].name, strlen(l[i].name) + 1, 1469598103934665603ULL);
		x = fnv1a(l[i].value, strlen(l[i].value), x);
		h += x ^ (x >> 29);
	}
	return h;
}

static void put_u64le(uint8_t *p, uint64_t v)
{
	cm_put_u32le(p, (uint32_t)v);
	cm_put_u32le(p + 4, (uint32_t)(v >> 32));
}
static uint64_t get_u64le(const uint8_t *p) { return cm_get_u32le(p) | (uint64_t)cm_get_u32le(p + 4) << 32; }

static void seg_path(const shard *sh, uint64_t no, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%016" PRIx64 ".seg", sh->dir, no);
}

/* Waits on the shard's condition until abs_ms (CLOCK_REALTIME) at the latest. */
static void wait_until(shard *sh, int64_t abs_ms)
{
	struct timespec ts = {(time_t)(abs_ms / 1000), (long)(abs_ms % 1000) * 1000000L};
	pthread_cond_timedwait(&sh->cv, &sh->mu, &ts);
}

/* ---- records ----------------------------------------------------------------------------------------- */

static int rec_begin(cm_buf *b)
{
	static const uint8_t zero[REC_HEADER + REC_PAYLOAD_HEADER];
	b->len = 0;
	return cm_buf_append(b, zero, sizeof(zero));
}

static int put_str(cm_buf *b, const char *s, size_t n)
{
	int rc = cm_buf_put_uvarint(b, n);
	return rc ? rc : cm_buf_append(b, s, n);
}

static int put_samples(cm_buf *b, const cm_sample *x, size_t n)
{
	int rc = cm_buf_put_uvarint(b, n);
	rc = rc ? rc : cm_buf_reserve(b, n * 16);
	for (size_t i = 0; i < n && !rc; i++) {
		put_u64le(b->data + b->len, (uint64_t)x[i].t_ms);
		b->len += 8;
		rc = cm_buf_put_f64le(b, x[i].v);
	}
	return rc;
}

/* One series (label pairs when key is NULL, else exposition text) with n samples. */
static int rec_series(cm_buf *b, const cm_series *s, const char *key, size_t klen, const cm_sample *x, size_t n)
{
	uint8_t kind = key ? 1 : 0;
	int rc = cm_buf_append(b, &kind, 1);
	if (key)
		rc = rc ? rc : put_str(b, key, klen);
	else
		rc = rc ? rc : cm_buf_put_uvarint(b, s->nlabels);
	for (size_t i = 0; !key && i < s->nlabels && !rc; i++) {
		rc = put_str(b, s->labels[i].name, strlen(s->labels[i].name));
		rc = rc ? rc : put_str(b, s->labels[i].value, strlen(s->labels[i].value));
	}
	return rc ? rc : put_samples(b, x, n);
}

static void rec_finish(cm_buf *b, int64_t now_ms, uint32_t samples, uint32_t nseries)
{
	uint8_t *p = b->data + REC_HEADER;
	put_u64le(p, (uint64_t)now_ms);
	cm_put_u32le(p + 8, samples);
	cm_put_u32le(p + 12, nseries);
	cm_put_u32le(b->data, (uint32_t)(b->len - REC_HEADER));
	cm_put_u32le(b->data + 4, cm_crc32c(0, p, b->len - REC_HEADER));
}

/* ---- the queue on disk ------------------------------------------------------------------------------- */

static int ack_write(shard *sh)
{
	uint8_t a[24] = {0};
	put_u64le(a, sh->segs[0].no);
	put_u64le(a + 8, sh->rd_off);
	cm_put_u32le(a + 16, cm_crc32c(0, a, 16));
	return sh->ack_fd >= 0 ? cm_pwrite_all(sh->ack_fd, a, sizeof(a), 0) : CM_EIO;
}

static int seg_push(shard *sh, seg x)
{
	if (sh->nsegs == sh->cap) {
		size_t cap = sh->cap ? sh->cap * 2 : 16;
		seg *p = realloc(sh->segs, cap * sizeof(*p));
		if (!p)
			return CM_ENOMEM;
		sh->segs = p, sh->cap = cap;
	}
	sh->segs[sh->nsegs++] = x;
	sh->bytes += x.bytes;
	return CM_OK;
}

static void seg_remove(shard *sh, size_t i)
{
	char path[4200];
	seg_path(sh, sh->segs[i].no, path, sizeof(path));
	unlink(path);
	sh->bytes -= sh->segs[i].bytes;
	memmove(&sh->segs[i], &sh->segs[i + 1], (sh->nsegs - i - 1) * sizeof(seg));
	sh->nsegs--;
}

/* Starts segment no for writing (header written). */
static int seg_create(shard *sh, uint64_t no)
{
	char path[4200];
	uint8_t h[SEG_HEADER] = {'C', 'R', 'W', 'Q'};
	seg_path(sh, no, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0640);
	if (fd < 0)
		return -errno;
	cm_put_u32le(h + 4, 1);
	put_u64le(h + 8, no);
	int rc = cm_write_all(fd, h, sizeof(h));
	if (rc == CM_OK)
		rc = seg_push(sh, (seg){no, SEG_HEADER, 0});
	if (rc) {
		close(fd);
		unlink(path);
		return rc;
	}
	if (sh->wfd >= 0)
		close(sh->wfd);
	sh->wfd = fd;
	return CM_OK;
}

/* Reads the record at off of fd (file size end); 0 and the payload in buf, or CM_ECORRUPT. */
static int rec_read(int fd, uint64_t off, uint64_t end, cm_buf *buf)
{
	uint8_t h[REC_HEADER];
	if (off + REC_HEADER > end || cm_pread_all(fd, h, REC_HEADER, off))
		return CM_ECORRUPT;
	uint32_t len = cm_get_u32le(h);
	if (len < REC_PAYLOAD_HEADER || len > REC_MAX || off + REC_HEADER + len > end)
		return CM_ECORRUPT;
	buf->len = 0;
	if (cm_buf_reserve(buf, len))
		return CM_ENOMEM;
	if (cm_pread_all(fd, buf->data, len, off + REC_HEADER) || cm_crc32c(0, buf->data, len) != cm_get_u32le(h + 4))
		return CM_ECORRUPT;
	buf->len = len;
	return CM_OK;
}

/* Validates segment no, cuts a torn tail, and counts the samples from offset from. */
static int seg_scan(shard *sh, uint64_t no, uint64_t from, cm_buf *buf, seg *out)
{
	char path[4200];
	uint8_t h[SEG_HEADER];
	struct stat st;
	seg_path(sh, no, path, sizeof(path));
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ok = !fstat(fd, &st) && !cm_pread_all(fd, h, SEG_HEADER, 0) && !memcmp(h, "CRWQ", 4) &&
		 cm_get_u32le(h + 4) == 1 && get_u64le(h + 8) == no;
	uint64_t off = SEG_HEADER, samples = 0;
	while (ok && !rec_read(fd, off, (uint64_t)st.st_size, buf)) {
		samples += off >= from ? cm_get_u32le(buf->data + 8) : 0;
		off += REC_HEADER + buf->len;
	}
	if (ok && off < (uint64_t)st.st_size) {
		CM_LOG(CM_LOG_WARN, "remote-write", "%s: cut %llu bytes of a torn or damaged tail", path,
		       (unsigned long long)((uint64_t)st.st_size - off));
		ok = !ftruncate(fd, (off_t)off);
	}
	close(fd);
	if (!ok) {
		CM_LOG(CM_LOG_WARN, "remote-write", "%s: not a queue segment, removed", path);
		unlink(path);
		return CM_ECORRUPT;
	}
	*out = (seg){no, off, samples};
	return CM_OK;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The numbers of the segment files in the shard's directory, sorted. */
static int seg_list(shard *sh, uint64_t **out, size_t *n)
{
	DIR *d = opendir(sh->dir);
	if (!d)
		return -errno;
	uint64_t *v = NULL;
	size_t k = 0, cap = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char *end;
		unsigned long long no = strtoull(e->d_name, &end, 16);
		if (strlen(e->d_name) != 20 || strcmp(end, ".seg") != 0)
			continue;
		if (k == cap) {
			uint64_t *p = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*p));
			if (!p) {
				free(v), closedir(d);
				return CM_ENOMEM;
			}
			v = p;
		}
		v[k++] = no;
	}
	closedir(d);
	if (k)
		qsort(v, k, sizeof(*v), u64_cmp);
	*out = v, *n = k;
	return CM_OK;
}

/* Reads ack; 0 and the position, or CM_ENOENT when there is none worth believing. */
static int ack_read(shard *sh, uint64_t *no, uint64_t *off)
{
	uint8_t a[24];
	if (cm_pread_all(sh->ack_fd, a, sizeof(a), 0) || cm_crc32c(0, a, 16) != cm_get_u32le(a + 16))
		return CM_ENOENT;
	*no = get_u64le(a), *off = get_u64le(a + 8);
	return CM_OK;
}

/* Rebuilds the queue from disk: old segments dropped, the rest scanned, a new writer segment. */
static int shard_load(shard *sh, cm_buf *buf)
{
	uint64_t *nos = NULL, ack_no = 0, ack_off = SEG_HEADER, next = 1;
	size_t n = 0;
	int have_ack = !ack_read(sh, &ack_no, &ack_off);
	int rc = seg_list(sh, &nos, &n);
	for (size_t i = 0; !rc && i < n; i++) {
		char path[4200];
		seg x;
		next = nos[i] + 1;
		seg_path(sh, nos[i], path, sizeof(path));
		if (have_ack && nos[i] < ack_no)
			unlink(path);
		else if (!seg_scan(sh, nos[i], have_ack && nos[i] == ack_no ? ack_off : 0, buf, &x))
			rc = seg_push(sh, x);
	}
	free(nos);
	if (rc)
		return rc;
	next = have_ack && ack_no >= next ? ack_no + 1 : next; /* never below an acknowledged number */
	if (!have_ack || !sh->nsegs || sh->segs[0].no != ack_no || ack_off < SEG_HEADER || ack_off > sh->segs[0].bytes)
		ack_off = SEG_HEADER;
	uint64_t pending = 0;
	for (size_t i = 0; i < sh->nsegs; i++)
		pending += sh->segs[i].samples;
	atomic_store(&sh->pending, pending);
	if ((rc = seg_create(sh, next)))
		return rc;
	sh->rd_off = ack_off;
	return ack_write(sh);
}

/* ---- writing (HTTP threads) --------------------------------------------------------------------------- */

/* Drops the oldest segments nobody reads or writes while the queue is over its bound. */
static void shard_bound(shard *sh)
{
	rw_url *u = sh->u;
	uint64_t max = u->s->max_queue_bytes / u->nshards;
	while (sh->bytes > max && sh->nsegs > 2) {
		uint64_t lost = sh->segs[1].samples;
		atomic_fetch_add(&u->dropped, lost);
		atomic_fetch_sub(&sh->pending, lost);
		CM_LOG_RL(&sh->rl, CM_LOG_WARN, "remote-write", "%s: queue over %llu bytes, dropped %llu samples", u->url,
			  (unsigned long long)max, (unsigned long long)lost);
		seg_remove(sh, 1);
	}
}

static void shard_append(shard *sh, const cm_buf *rec, uint64_t samples)
{
	pthread_mutex_lock(&sh->mu);
	seg *w = &sh->segs[sh->nsegs - 1];
	int rc = CM_OK;
	if (sh->wfd < 0 || (w->bytes > SEG_HEADER && w->bytes + rec->len > sh->u->s->seg_max))
		rc = seg_create(sh, w->no + 1);
	w = &sh->segs[sh->nsegs - 1];
	if (!rc && (rc = cm_write_all(sh->wfd, rec->data, rec->len))) {
		if (ftruncate(sh->wfd, (off_t)w->bytes)) /* a partial record would hide every later one */
			close(sh->wfd), sh->wfd = -1;
	}
	if (rc) {
		atomic_fetch_add(&sh->u->dropped, samples);
		CM_LOG_RL(&sh->rl, CM_LOG_ERROR, "remote-write", "%s: cannot queue %llu samples: %s", sh->u->url,
			  (unsigned long long)samples, cm_strerror(rc));
	} else {
		w->bytes += rec->len, w->samples += samples, sh->bytes += rec->len;
		atomic_fetch_add(&sh->pending, samples);
		shard_bound(sh);
		pthread_cond_signal(&sh->cv);
	}
	pthread_mutex_unlock(&sh->mu);
}

/* The open records of one enqueue call, one per shard. */
typedef struct enq {
	ag__rwsend *s;
	int64_t now_ms;
	cm_buf rec[MAX_SHARDS];
	uint32_t samples[MAX_SHARDS], nseries[MAX_SHARDS];
	int failed;
} enq;

static void enq_flush(enq *e, size_t k)
{
	if (!e->samples[k])
		return;
	rec_finish(&e->rec[k], e->now_ms, e->samples[k], e->nseries[k]);
	for (size_t i = 0; i < e->s->nurls; i++)
		shard_append(&e->s->urls[i].shards[k], &e->rec[k], e->samples[k]);
	e->samples[k] = e->nseries[k] = 0;
	rec_begin(&e->rec[k]);
}

/* Adds one series, split over records of at most max_samples samples. */
static void enq_series(enq *e, uint64_t hash, const cm_series *s, const char *key, size_t klen, const cm_sample *x,
		       size_t n)
{
	size_t k = hash % (uint64_t)e->s->shards, max = (size_t)e->s->max_samples;
	while (n && !e->failed) {
		size_t take = n < max - e->samples[k] ? n : max - e->samples[k];
		if (rec_series(&e->rec[k], s, key, klen, x, take)) {
			e->failed = 1;
			return;
		}
		e->samples[k] += (uint32_t)take, e->nseries[k]++;
		x += take, n -= take;
		if (e->samples[k] >= max)
			enq_flush(e, k);
	}
}

static int enq_begin(enq *e, ag__rwsend *s)
{
	memset(e, 0, sizeof(*e));
	e->s = s, e->now_ms = cm_now_ms();
	for (long k = 0; k < s->shards; k++) {
		cm_buf_init(&e->rec[k]);
		if (rec_begin(&e->rec[k]))
			e->failed = 1;
	}
	return e->failed ? CM_ENOMEM : CM_OK;
}

static void enq_end(enq *e)
{
	for (long k = 0; k < e->s->shards; k++) {
		if (!e->failed)
			enq_flush(e, (size_t)k);
		cm_buf_close(&e->rec[k]);
	}
	if (e->failed)
		CM_LOG(CM_LOG_ERROR, "remote-write", "out of memory: samples not queued");
}

void ag__rwsend_enqueue(ag__rwsend *s, const cm_series *series, size_t n)
{
	enq e;
	if (!s || !n)
		return;
	enq_begin(&e, s);
	for (size_t i = 0; i < n && !e.failed; i++)
		enq_series(&e, labels_hash(series[i].labels, series[i].nlabels), &series[i], NULL, 0, series[i].samples,
			   series[i].nsamples);
	enq_end(&e);
}

void ag__rwsend_enqueue_text(ag__rwsend *s, const char *const *keys, const size_t *key_lens,
			     const cm_sample *const *samples, const size_t *nsamples, size_t n)
{
	enq e;
	if (!s || !n)
		return;
	enq_begin(&e, s);
	for (size_t i = 0; i < n && !e.failed; i++)
		enq_series(&e, fnv1a(keys[i], key_lens[i], 1469598103934665603ULL), NULL, keys[i], key_lens[i],
			   samples[i], nsamples[i]);
	enq_end(&e);
}

/* ---- building a request -------------------------------------------------------------------------------- */

typedef struct batch {
	cm_buf recs;        /* payloads, each prefixed by its u32 length */
	uint64_t samples;
	uint32_t nseries;
	uint64_t end;       /* offset after the last record */
	int64_t first_ms, last_ms;
	cm_buf body;        /* the snappy request */
} batch;

static int rd_str(cm_rd *r, cm_arena *a, char **out, size_t *len)
{
	uint64_t n;
	const uint8_t *p;
	if (cm_rd_uvarint(r, &n) || cm_rd_bytes(r, n, &p) || !(*out = cm_arena_strndup(a, (const char *)p, n)))
		return CM_ECORRUPT;
	if (len)
		*len = n;
	return CM_OK;
}

/* Labels of a queued series into the request: sorted, empty values left out (remote write 1.0). */
static int ts_labels(Prometheus__TimeSeries *ts, cm_label *l, size_t n, cm_arena *a)
{
	cm_labels_sort(l, n);
	Prometheus__Label *pl = cm_arena_calloc(a, n ? n : 1, sizeof(*pl));
	ts->labels = cm_arena_calloc(a, n ? n : 1, sizeof(*ts->labels));
	if (!pl || !ts->labels)
		return CM_ENOMEM;
	ts->n_labels = 0;
	for (size_t i = 0; i < n; i++) {
		if (!l[i].value[0])
			continue;
		prometheus__label__init(&pl[i]);
		pl[i].name = (char *)l[i].name, pl[i].value = (char *)l[i].value;
		ts->labels[ts->n_labels++] = &pl[i];
	}
	return CM_OK;
}

static int rd_labels(cm_rd *r, cm_arena *a, cm_label **out, size_t *n)
{
	uint8_t kind;
	const uint8_t *kp;
	uint64_t cnt;
	if (cm_rd_bytes(r, 1, &kp))
		return CM_ECORRUPT;
	kind = *kp;
	if (kind == 1) {
		char *text;
		size_t len;
		cm_label *l = cm_arena_calloc(a, 257, sizeof(*l));
		if (rd_str(r, a, &text, &len) || !l)
			return CM_ECORRUPT;
		char *buf = cm_arena_alloc(a, len + 16);
		cm_err err;
		if (!buf || ag__prom_series_parse(text, len, l, 257, n, buf, &err))
			return CM_ECORRUPT;
		*out = l;
		return CM_OK;
	}
	if (kind != 0 || cm_rd_uvarint(r, &cnt) || cnt > 4096)
		return CM_ECORRUPT;
	cm_label *l = cm_arena_calloc(a, cnt ? cnt : 1, sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	for (uint64_t i = 0; i < cnt; i++)
		if (rd_str(r, a, (char **)&l[i].name, NULL) || rd_str(r, a, (char **)&l[i].value, NULL))
			return CM_ECORRUPT;
	*out = l, *n = cnt;
	return CM_OK;
}

static int rd_series(cm_rd *r, cm_arena *a, Prometheus__TimeSeries *ts)
{
	cm_label *l;
	size_t nl;
	uint64_t ns;
	prometheus__time_series__init(ts);
	if (rd_labels(r, a, &l, &nl) || ts_labels(ts, l, nl, a) || cm_rd_uvarint(r, &ns) || ns > cm_rd_left(r) / 16)
		return CM_ECORRUPT;
	Prometheus__Sample *x = cm_arena_calloc(a, ns ? ns : 1, sizeof(*x));
	ts->samples = cm_arena_calloc(a, ns ? ns : 1, sizeof(*ts->samples));
	if (!x || !ts->samples)
		return CM_ENOMEM;
	for (uint64_t i = 0; i < ns; i++) {
		const uint8_t *p;
		cm_rd_bytes(r, 8, &p);
		prometheus__sample__init(&x[i]);
		x[i].timestamp = (int64_t)get_u64le(p);
		cm_rd_f64le(r, &x[i].value);
		ts->samples[i] = &x[i];
	}
	ts->n_samples = ns;
	return CM_OK;
}

/* The batch's records as one snappy-compressed WriteRequest in b->body. */
static int batch_encode(batch *b)
{
	cm_arena a;
	cm_arena_init(&a, 0);
	Prometheus__WriteRequest wr = PROMETHEUS__WRITE_REQUEST__INIT;
	Prometheus__TimeSeries *ts = cm_arena_calloc(&a, b->nseries ? b->nseries : 1, sizeof(*ts));
	wr.timeseries = cm_arena_calloc(&a, b->nseries ? b->nseries : 1, sizeof(*wr.timeseries));
	int rc = ts && wr.timeseries ? CM_OK : CM_ENOMEM;
	cm_rd r;
	cm_rd_init(&r, b->recs.data, b->recs.len);
	while (!rc && cm_rd_left(&r)) {
		uint32_t len, nser;
		const uint8_t *p;
		if (cm_rd_u32le(&r, &len) || cm_rd_bytes(&r, len, &p) || len < REC_PAYLOAD_HEADER) {
			rc = CM_ECORRUPT;
			break;
		}
		cm_rd one;
		cm_rd_init(&one, p + REC_PAYLOAD_HEADER, len - REC_PAYLOAD_HEADER);
		nser = cm_get_u32le(p + 12);
		for (uint32_t i = 0; i < nser && !rc; i++) {
			rc = wr.n_timeseries < b->nseries ? rd_series(&one, &a, &ts[wr.n_timeseries]) : CM_ECORRUPT;
			wr.timeseries[wr.n_timeseries] = &ts[wr.n_timeseries];
			wr.n_timeseries += !rc;
		}
	}
	size_t plen = prometheus__write_request__get_packed_size(&wr);
	uint8_t *raw = rc ? NULL : malloc(plen ? plen : 1);
	size_t clen = snappy_max_compressed_length(plen);
	b->body.len = 0;
	if (!rc && (!raw || cm_buf_reserve(&b->body, clen)))
		rc = CM_ENOMEM;
	if (!rc) {
		prometheus__write_request__pack(&wr, raw);
		rc = snappy_compress((const char *)raw, plen, (char *)b->body.data, &clen) == SNAPPY_OK ? CM_OK : CM_EIO;
		b->body.len = rc ? 0 : clen;
	}
	free(raw);
	cm_arena_close(&a);
	return rc;
}

/* ---- reading (the shard's thread) ------------------------------------------------------------------------ */

typedef struct reader {
	int fd;
	uint64_t no;
	cm_buf rec;
} reader;

/* Adds the records of [off, end) of the reader's segment to b until it holds max_samples. */
static void batch_fill(shard *sh, reader *rd, batch *b, uint64_t end)
{
	uint64_t max = (uint64_t)sh->u->s->max_samples;
	while (b->end < end && b->samples < max) {
		if (rec_read(rd->fd, b->end, end, &rd->rec)) {
			CM_LOG_RL(&sh->rl, CM_LOG_ERROR, "remote-write", "%s: damaged queue record at %llu, skipped to the "
				  "segment's end", sh->u->url, (unsigned long long)b->end);
			b->end = end;
			return;
		}
		uint32_t ns = cm_get_u32le(rd->rec.data + 8);
		if (b->samples && b->samples + ns > max)
			return;
		int64_t t = (int64_t)get_u64le(rd->rec.data);
		if (cm_buf_put_u32le(&b->recs, (uint32_t)rd->rec.len) || cm_buf_append(&b->recs, rd->rec.data, rd->rec.len))
			return;
		b->first_ms = b->samples ? b->first_ms : t;
		b->last_ms = t;
		b->samples += ns, b->nseries += cm_get_u32le(rd->rec.data + 12);
		b->end += REC_HEADER + rd->rec.len;
	}
}

/* Under the lock: waits until segs[0] has unsent records, moving past finished segments. 0 = stop. */
static int await_data(shard *sh)
{
	while (!atomic_load(&sh->u->s->stop)) {
		if (sh->rd_off < sh->segs[0].bytes)
			return 1;
		if (sh->nsegs > 1) { /* finished and acknowledged: the next one */
			seg_remove(sh, 0);
			sh->rd_off = SEG_HEADER;
			ack_write(sh);
			continue;
		}
		pthread_cond_wait(&sh->cv, &sh->mu);
	}
	return 0;
}

static int reader_open(shard *sh, reader *rd, uint64_t no)
{
	if (rd->fd >= 0 && rd->no == no)
		return CM_OK;
	char path[4200];
	if (rd->fd >= 0)
		close(rd->fd);
	seg_path(sh, no, path, sizeof(path));
	rd->fd = open(path, O_RDONLY | O_CLOEXEC);
	rd->no = no;
	return rd->fd < 0 ? -errno : CM_OK;
}

/* The next request's records: waits for the first, then up to max_wait_ms for more. 0 = stop. */
static int batch_collect(shard *sh, reader *rd, batch *b)
{
	b->recs.len = 0, b->samples = 0, b->nseries = 0;
	pthread_mutex_lock(&sh->mu);
	if (!await_data(sh)) {
		pthread_mutex_unlock(&sh->mu);
		return 0;
	}
	int64_t deadline = cm_now_ms() + sh->u->s->max_wait_ms;
	uint64_t no = sh->segs[0].no, end = sh->segs[0].bytes;
	int complete = sh->nsegs > 1;
	b->end = sh->rd_off;
	pthread_mutex_unlock(&sh->mu);
	if (reader_open(sh, rd, no)) {
		b->end = end; /* a segment we cannot open: acknowledged as lost */
		return 1;
	}
	for (;;) {
		batch_fill(sh, rd, b, end);
		if (b->samples >= (uint64_t)sh->u->s->max_samples || b->end < end || complete ||
		    cm_now_ms() >= deadline || atomic_load(&sh->u->s->stop))
			break;
		pthread_mutex_lock(&sh->mu);
		if (sh->segs[0].bytes == end && sh->nsegs == 1 && !atomic_load(&sh->u->s->stop))
			wait_until(sh, deadline);
		end = sh->segs[0].bytes, complete = sh->nsegs > 1;
		pthread_mutex_unlock(&sh->mu);
	}
	if (b->samples)
		atomic_store(&sh->lag_from_ms, b->first_ms);
	return 1;
}

/* ---- sending ----------------------------------------------------------------------------------------- */

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	return atomic_load(&((ag__rwsend *)arg)->stop) ? 1 : 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	cm_buf *b = arg;
	size_t len = size * n;
	if (b->len < 512)
		cm_buf_append(b, p, len < 512 - b->len ? len : 512 - b->len);
	return len;
}

/* One POST: the HTTP status, or 0 when no answer came. */
static long post(shard *sh, CURL *c, struct curl_slist *h, const batch *b, cm_buf *reply)
{
	long code = 0;
	reply->len = 0;
	curl_easy_setopt(c, CURLOPT_URL, sh->u->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)b->body.data);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->body.len);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, sh->u->s);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	return code;
}

/* Sleeps the backoff for attempt n (interrupted by stop). */
static void backoff(shard *sh, unsigned n, unsigned *seed)
{
	int64_t d = RETRY_MIN_MS << (n < 7 ? n : 7);
	d = d < RETRY_MAX_MS ? d : RETRY_MAX_MS;
	d = d / 2 + rand_r(seed) % (d / 2 + 1);
	pthread_mutex_lock(&sh->mu);
	if (!atomic_load(&sh->u->s->stop))
		wait_until(sh, cm_now_ms() + d);
	pthread_mutex_unlock(&sh->mu);
}

static void acknowledge(shard *sh, const batch *b)
{
	pthread_mutex_lock(&sh->mu);
	sh->rd_off = b->end;
	atomic_fetch_sub(&sh->pending, b->samples);
	if (ack_write(sh))
		CM_LOG_RL(&sh->rl, CM_LOG_ERROR, "remote-write", "%s: cannot write %s/ack", sh->u->url, sh->dir);
	atomic_store(&sh->lag_from_ms, atomic_load(&sh->pending) ? b->last_ms : 0);
	pthread_mutex_unlock(&sh->mu);
}

/* Sends b until it is acknowledged or refused for good; returns early only when stopping. */
static void deliver(shard *sh, CURL *c, struct curl_slist *h, batch *b, unsigned *seed)
{
	rw_url *u = sh->u;
	cm_buf reply;
	cm_buf_init(&reply);
	for (unsigned attempt = 0; !atomic_load(&u->s->stop); attempt++) {
		long code = b->samples ? post(sh, c, h, b, &reply) : 204;
		if (code >= 200 && code < 300) {
			atomic_fetch_add(&u->sent, b->samples);
			acknowledge(sh, b);
			break;
		}
		if (code >= 400 && code < 500 && code != 429) {
			atomic_fetch_add(&u->rejected, b->samples);
			CM_LOG_RL(&sh->rl, CM_LOG_WARN, "remote-write", "%s refused %llu samples with %ld: %.*s", u->url,
				  (unsigned long long)b->samples, code, (int)reply.len, (const char *)reply.data);
			acknowledge(sh, b);
			break;
		}
		atomic_fetch_add(&u->failures, 1);
		CM_LOG_RL(&sh->rl, CM_LOG_WARN, "remote-write", "%s: %s %ld, retrying", u->url,
			  code ? "status" : "no answer, status", code);
		backoff(sh, attempt, seed);
		if (!atomic_load(&u->s->stop))
			atomic_fetch_add(&u->retries, 1);
	}
	cm_buf_close(&reply);
}

static struct curl_slist *headers(const ag__rwsend *s)
{
	static const char *const h[] = {"Content-Type: application/x-protobuf", "Content-Encoding: snappy",
					"X-Prometheus-Remote-Write-Version: 0.1.0",
					("User-Agent: corral-aggregator/" CM_VERSION)};
	struct curl_slist *l = NULL;
	for (size_t i = 0; i < CM_ARRAY_LEN(h); i++)
		l = curl_slist_append(l, h[i]);
	return s->auth ? curl_slist_append(l, s->auth) : l;
}

static void *shard_run(void *arg)
{
	shard *sh = arg;
	CURL *c = curl_easy_init();
	struct curl_slist *h = headers(sh->u->s);
	reader rd = {.fd = -1};
	batch b = {0};
	unsigned seed = (unsigned)cm_mono_ns() ^ sh->idx;
	cm_buf_init(&rd.rec), cm_buf_init(&b.recs), cm_buf_init(&b.body);
	while (c && h && batch_collect(sh, &rd, &b)) {
		if (b.samples && batch_encode(&b)) {
			CM_LOG_RL(&sh->rl, CM_LOG_ERROR, "remote-write", "%s: cannot build a request of %llu samples, "
				  "dropped", sh->u->url, (unsigned long long)b.samples);
			atomic_fetch_add(&sh->u->dropped, b.samples);
			acknowledge(sh, &b);
			continue;
		}
		deliver(sh, c, h, &b, &seed);
	}
	if (rd.fd >= 0)
		close(rd.fd);
	cm_buf_close(&rd.rec), cm_buf_close(&b.recs), cm_buf_close(&b.body);
	curl_slist_free_all(h);
	if (c)
		curl_easy_cleanup(c);
	return NULL;
}

/* ---- start, stop, metrics ------------------------------------------------------------------------------- */

static int mkdirs(const char *path)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0750) && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return mkdir(p, 0750) && errno != EEXIST ? -errno : CM_OK;
}

static int shard_open(rw_url *u, const char udir[4000], unsigned idx, cm_buf *buf, cm_err *err)
{
	shard *sh = &u->shards[idx];
	char path[4200];
	sh->u = u, sh->idx = idx, sh->wfd = -1, sh->ack_fd = -1;
	pthread_mutex_init(&sh->mu, NULL);
	pthread_cond_init(&sh->cv, NULL);
	snprintf(sh->dir, sizeof(sh->dir), "%s/shard-%03u", udir, idx);
	snprintf(path, sizeof(path), "%s/ack", sh->dir);
	int rc = mkdirs(sh->dir);
	if (!rc && (sh->ack_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) < 0)
		rc = -errno;
	rc = rc ? rc : shard_load(sh, buf);
	if (rc)
		return cm_errf(err, rc, "remote write queue %s: %s", sh->dir, cm_strerror(rc));
	return CM_OK;
}

/* Shards an earlier run left (shard-NNN directories), so a smaller --remote-write-shards still drains them. */
static size_t shards_on_disk(const char *udir)
{
	DIR *d = opendir(udir);
	size_t n = 0;
	for (struct dirent *e; d && (e = readdir(d));) {
		unsigned i;
		if (sscanf(e->d_name, "shard-%3u", &i) == 1 && i < MAX_SHARDS && i + 1 > n)
			n = i + 1;
	}
	if (d)
		closedir(d);
	return n;
}

static int url_open(ag__rwsend *s, rw_url *u, const char *dir, const char *url, cm_err *err)
{
	char udir[4000], path[4200];
	u->s = s;
	if (!(u->url = strdup(url)))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(udir, sizeof(udir), "%s/%016" PRIx64, dir, fnv1a(url, strlen(url), 1469598103934665603ULL));
	int rc = mkdirs(udir);
	if (rc)
		return cm_errf(err, rc, "cannot create %s: %s", udir, cm_strerror(rc));
	snprintf(path, sizeof(path), "%s/url", udir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd >= 0)
		cm_write_all(fd, url, strlen(url)), close(fd);
	size_t disk = shards_on_disk(udir);
	u->nshards = disk > (size_t)s->shards ? disk : (size_t)s->shards;
	if (!(u->shards = calloc(u->nshards, sizeof(*u->shards))))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	cm_buf buf;
	cm_buf_init(&buf);
	for (size_t i = 0; i < u->nshards && !rc; i++)
		rc = shard_open(u, udir, (unsigned)i, &buf, err);
	cm_buf_close(&buf);
	return rc;
}

static int check_opts(const ag__rwsend_opts *o, cm_err *err)
{
	if (o->shards < 1 || o->shards > MAX_SHARDS)
		return cm_errf(err, CM_EINVAL, "--remote-write-shards must be 1..%d", MAX_SHARDS);
	if (o->max_samples < 1 || o->max_samples > 1000000)
		return cm_errf(err, CM_EINVAL, "--remote-write-max-samples must be 1..1000000");
	for (size_t i = 0; i < o->nurls; i++) {
		if (strncmp(o->urls[i], "http://", 7) && strncmp(o->urls[i], "https://", 8))
			return cm_errf(err, CM_EINVAL, "--remote-write %s: not an http:// or https:// URL", o->urls[i]);
		for (size_t k = 0; k < i; k++)
			if (!strcmp(o->urls[i], o->urls[k])) /* one queue directory per URL */
				return cm_errf(err, CM_EINVAL, "--remote-write %s: given twice", o->urls[i]);
	}
	return CM_OK;
}

static int start_threads(ag__rwsend *s, cm_err *err)
{
	for (size_t i = 0; i < s->nurls; i++) {
		for (size_t k = 0; k < s->urls[i].nshards; k++) {
			shard *sh = &s->urls[i].shards[k];
			int e = pthread_create(&sh->thr, NULL, shard_run, sh);
			if (e)
				return cm_errf(err, -e, "remote write thread: %s", strerror(e));
			sh->started = 1;
		}
	}
	return CM_OK;
}

int ag__rwsend_create(const char *dir, const ag__rwsend_opts *o, ag__rwsend **out, cm_err *err)
{
	int rc = check_opts(o, err);
	if (rc)
		return rc;
	ag__rwsend *s = calloc(1, sizeof(*s));
	if (!s || curl_global_init(CURL_GLOBAL_DEFAULT)) {
		free(s);
		return cm_errf(err, CM_ENOMEM, "out of memory");
	}
	s->shards = o->shards, s->max_samples = o->max_samples, s->max_wait_ms = o->max_wait_ms;
	s->max_queue_bytes = o->max_queue_bytes;
	uint64_t per = o->max_queue_bytes / (uint64_t)o->shards / 8;
	s->seg_max = per > SEG_MAX_BYTES ? SEG_MAX_BYTES : per < SEG_MIN_BYTES ? SEG_MIN_BYTES : per;
	if (o->token && o->token[0] && asprintf(&s->auth, "Authorization: Bearer %s", o->token) < 0)
		s->auth = NULL, rc = cm_errf(err, CM_ENOMEM, "out of memory");
	s->urls = calloc(o->nurls, sizeof(*s->urls));
	if (!rc && !s->urls)
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	s->nurls = rc ? 0 : o->nurls;
	for (size_t i = 0; i < s->nurls && !rc; i++)
		rc = url_open(s, &s->urls[i], dir, o->urls[i], err);
	rc = rc ? rc : start_threads(s, err);
	if (rc) {
		ag__rwsend_destroy(s);
		return rc;
	}
	*out = s;
	return CM_OK;
}

static void shard_close(shard *sh)
{
	if (!sh->u)
		return;
	if (sh->started)
		pthread_join(sh->thr, NULL);
	if (sh->wfd >= 0)
		close(sh->wfd);
	if (sh->ack_fd >= 0)
		close(sh->ack_fd);
	free(sh->segs);
	pthread_mutex_destroy(&sh->mu);
	pthread_cond_destroy(&sh->cv);
}

void ag__rwsend_destroy(ag__rwsend *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, 1);
	for (size_t i = 0; i < s->nurls; i++) {
		for (size_t k = 0; k < s->urls[i].nshards && s->urls[i].shards; k++) {
			shard *sh = &s->urls[i].shards[k];
			if (!sh->u)
				continue;
			pthread_mutex_lock(&sh->mu);
			pthread_cond_broadcast(&sh->cv);
			pthread_mutex_unlock(&sh->mu);
		}
	}
	for (size_t i = 0; i < s->nurls; i++) {
		for (size_t k = 0; k < s->urls[i].nshards && s->urls[i].shards; k++)
			shard_close(&s->urls[i].shards[k]);
		free(s->urls[i].shards);
		free(s->urls[i].url);
	}
	if (s->auth) {
		memset(s->auth, 0, strlen(s->auth));
		free(s->auth);
	}
	free(s->urls);
	free(s);
	curl_global_cleanup();
}

static int url_label(cm_buf *b, const char *url)
{
	int rc = CM_OK;
	for (const char *p = url; *p && !rc; p++)
		rc = *p == '"' || *p == '\\' ? cm_buf_printf(b, "\\%c", *p)
		     : *p == '\n'            ? cm_buf_puts(b, "\\n")
					     : cm_buf_append(b, p, 1);
	return rc;
}

static int metric(cm_buf *b, const char *name, const char *url, const char *result, double v)
{
	int rc = cm_buf_printf(b, "%s{url=\"", name);
	rc = rc ? rc : url_label(b, url);
	if (!rc && result)
		rc = cm_buf_printf(b, "\",result=\"%s", result);
	return rc ? rc : cm_buf_printf(b, "\"} %.17g\n", v);
}

static int family(cm_buf *b, const char *name, const char *type, const char *help)
{
	return cm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void url_gauges(rw_url *u, double *pending, double *lag)
{
	int64_t now = cm_now_ms(), oldest = 0;
	*pending = 0;
	for (size_t k = 0; k < u->nshards; k++) {
		int64_t t = atomic_load(&u->shards[k].lag_from_ms);
		*pending += (double)atomic_load(&u->shards[k].pending);
		if (t && (!oldest || t < oldest))
			oldest = t;
	}
	*lag = oldest && now > oldest ? (double)(now - oldest) / 1000.0 : 0;
}

int ag__rwsend_metrics(ag__rwsend *s, cm_buf *b)
{
	if (!s)
		return CM_OK;
	static const char *const res[] = {"sent", "rejected", "dropped"};
	int rc = family(b, "corral_remote_write_samples_total", "counter",
			"Samples forwarded by remote write: sent (2xx), rejected (other 4xx), dropped (queue full or unwritable).");
	for (size_t i = 0; i < s->nurls && !rc; i++) {
		rw_url *u = &s->urls[i];
		uint64_t v[] = {atomic_load(&u->sent), atomic_load(&u->rejected), atomic_load(&u->dropped)};
		for (size_t r = 0; r < 3 && !rc; r++)
			rc = metric(b, "corral_remote_write_samples_total", u->url, res[r], (double)v[r]);
	}
	static const char *const names[] = {"corral_remote_write_pending_samples", "corral_remote_write_lag_seconds",
					    "corral_remote_write_failures_total", "corral_remote_write_retries_total"};
	static const char *const help[] = {
		"Samples queued and not yet acknowledged.",
		"Age of the oldest queued sample not yet acknowledged (time since it was stored).",
		"Requests that failed (5xx, 429, no answer).", "Requests sent again after a failure."};
	for (size_t m = 0; m < 4 && !rc; m++) {
		rc = family(b, names[m], m < 2 ? "gauge" : "counter", help[m]);
		for (size_t i = 0; i < s->nurls && !rc; i++) {
			rw_url *u = &s->urls[i];
			double g[2];
			url_gauges(u, &g[0], &g[1]);
			double v = m < 2 ? g[m] : (double)atomic_load(m == 2 ? &u->failures : &u->retries);
			rc = metric(b, names[m], u->url, NULL, v);
		}
	}
	return rc;
}
