/* ts_wal.c -- the write-ahead log: segment files, group commit, replay and repair.
 *
 * Owns <dir>/wal/. ts_db.c encodes each ts_append() call as a series record for the series the WAL has
 * not seen yet and one samples record (ts__wal_put_*), writes them with one write (ts__wal_write) and
 * waits for them to be durable (ts__wal_sync); at open it replays every segment into the head
 * (ts__wal_open, through ts__replay_ops). Replay treats the files as untrusted bytes: every length and count is checked
 * against what is left, a torn or corrupt record is cut off and reported, and only I/O errors and
 * out-of-memory are fatal. This file never touches the head and never prints.
 *
 * ---- on-disk format, version 2 (version 1 segments are still replayed) ---------------------------------
 *
 * <dir>/wal/ holds segment files named by their number in decimal, zero-padded to eight digits
 * ("00000001", "00000002", ...), replayed in numeric order. Other names are ignored. A segment is
 *
 *   offset 0   4 bytes   magic "CRLW"
 *   offset 4   4 bytes   u32le format version: 2 (written now), 3 (a checkpoint, below) or 1 (replayed only)
 *   offset 8   records, back to back, up to the end of the file
 *
 * A checkpoint (version 3, records as in version 2) is what a cut (ts_cut.c) keeps of the segments
 * below the one it rolled to: every series with samples from the cut's boundary on, and those samples;
 * the rest is in blocks. It replaces the highest of those segments by rename and then the lower ones are
 * removed, oldest first. It supersedes every lower-numbered segment: at open, segments below the newest
 * checkpoint (left by a crash during that removal) are removed unreplayed. Replaying them first would
 * be worse than useless: their newer samples would make the checkpoint's older ones look out of order.
 *
 * A record is a 9-byte header and a payload:
 *
 *   4 bytes   u32le payload length (the header not included), at most 256 MiB
 *   4 bytes   u32le CRC32C (Castagnoli, cm_crc32c) of the type byte followed by the payload
 *   1 byte    type
 *   n bytes   payload
 *
 * Version 2 segments hold records of types 2 and 3; version 1 segments only records of type 1.
 *
 * Type 2, series: defines series ids, entries back to back up to the end of the payload:
 *
 *     uvarint   id                               the head's series id (ts_head.c)
 *     uvarint   nlabels                          1 to 256
 *     nlabels times:
 *       uvarint   name length, then the name     at most 65536 bytes, [a-zA-Z_][a-zA-Z0-9_]*
 *       uvarint   value length, then the value   1 to 65536 bytes, UTF-8
 *     Labels are canonical: sorted by name (bytewise), names unique, no empty value. An id defined again
 *     must carry the same labels.
 *
 * Type 3, samples: entries back to back up to the end of the payload:
 *
 *     uvarint   id                               defined by an earlier type 2 record (in this or an
 *                                                earlier segment)
 *     uvarint   nsamples                         at least 1
 *     nsamples times:
 *       varint    t_ms delta   as in type 1 below
 *       8 bytes   f64le value
 *
 * One ts_append() writes at most one type 2 record (the series no earlier record defined) followed by
 * one type 3 record with all its samples, in one write, so a batch is replayed whole or not at all; a
 * type 2 record whose type 3 record was torn off defines series that simply have no samples.
 *
 * Type 1 (version 1 only), samples batch: everything one ts_append() call wrote.
 *
 *   uvarint   nseries
 *   nseries times:
 *     uvarint   nlabels                          at most 256
 *     nlabels times:
 *       uvarint   name length, then the name     at most 65536 bytes, [a-zA-Z_][a-zA-Z0-9_]*
 *       uvarint   value length, then the value   at most 65536 bytes, UTF-8, may be empty
 *     uvarint   nsamples
 *     nsamples times:
 *       varint    t_ms delta   zigzag-encoded t_ms minus the previous t_ms of this series (the first
 *                              sample's minus 0), in wrapping 64-bit arithmetic
 *       8 bytes   f64le value  the IEEE 754 bits as written (NaN payloads, infinities kept)
 *
 * uvarints are LEB128 (7 bits a byte, least significant first, at most 10 bytes); zigzag maps
 * 0, -1, 1, -2, ... to 0, 1, 2, 3, .... Labels appear in the order the caller gave them.
 *
 * Validity. A record is valid when its header and whole payload lie inside the file, its length is within
 * the limit, its CRC matches, its type belongs to the segment's version and its payload decodes exactly:
 * every count is bounded by the bytes left (a series takes at least 2 bytes, a sample at least 9), no
 * string holds a NUL byte, no bytes are left over, every series passes ts__series_check (label names valid
 * and unique, values UTF-8, at least one non-empty value), type 2 labels are canonical and agree with
 * earlier definitions, and every type 3 id is defined. The first invalid record ends its segment: replay truncates the file at
 * that record's offset, fsyncs it, reports it, and goes on with the next segment. A segment shorter than
 * 8 bytes or with a wrong magic or version is renamed to "<name>.corrupt", reported and skipped. A
 * segment that holds no record after replay is removed.
 *
 * ---- writing ----------------------------------------------------------------------------------------
 *
 * Every open starts a fresh segment numbered one past the highest name present (".corrupt" ones
 * included), so nothing is ever appended after a repaired tail. A record is written with pwrite at the
 * segment's end under the mutex; a failed or short write is cut off again with ftruncate, so a segment
 * always ends on a record boundary. Before a record would take a segment past segment_bytes the segment
 * rolls: the old file is fdatasynced and closed, the new one gets its header and is fdatasynced, and
 * the directory is fsynced.
 *
 * Durability is a group commit. Records are numbered as they are written; `written` and `synced` hold
 * the highest written and the highest known-durable number. A caller whose record is not yet synced
 * either becomes the one thread running fdatasync (outside the mutex, covering everything written so
 * far) or waits on the condition variable for the one that is. After a failed fsync or a failed
 * truncate the WAL is broken: every later write fails until the database is reopened and replayed,
 * because the kernel may have dropped the dirty pages and only the file can say what survived.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_int.h"

#define WAL_MAGIC "CRLW"
#define WAL_VERSION 2u
#define CKPT_VERSION 3u /* version 2 records, superseding every lower-numbered segment */
#define SEG_HEADER 8u
#define REC_HEADER 9u
#define REC_SAMPLES 1u  /* version 1 */
#define REC_SERIES 2u   /* version 2 */
#define REC_IDS 3u      /* version 2 */
#define DEFAULT_SEGMENT_BYTES (128ull << 20)

struct ts__wal {
	char *path;           /* <dir>/wal */
	uint64_t seg_bytes;
	int no_fsync;
	pthread_mutex_t mu;   /* guards everything below */
	pthread_cond_t cv;    /* a sync finished */
	int fd;               /* the current segment */
	uint32_t seg;         /* its number */
	uint64_t size;        /* its length */
	uint64_t written;     /* highest record number written */
	uint64_t synced;      /* highest record number durable */
	int syncing;          /* a thread is in fdatasync on fd */
	int broken;           /* first unrecoverable error, 0 while healthy */
	cm_err broken_why;
	uint64_t fsyncs;
	uint64_t bytes;       /* valid bytes in all segments */
};

/* Scratch for decoding one series of a record. */
typedef struct rec_dec {
	cm_label labels[TS__MAX_LABELS];
	size_t offs[TS__MAX_LABELS][2];  /* name and value offsets into strs */
	cm_buf strs;                     /* the series' label strings, each NUL-terminated */
	cm_sample *samples;
	size_t cap;
} rec_dec;

/* State of one replay. */
typedef struct replay {
	ts__wal *w;
	const ts__replay_ops *ops;
	uint32_t version;  /* of the segment being replayed */
	ts_open_report *rep;
	rec_dec dec;
	cm_buf payload;
	int dir_dirty;  /* a file was renamed or removed */
} replay;

/* ---- file helpers ---------------------------------------------------------------------------------- */

static void seg_path(const ts__wal *w, uint32_t n, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%08u", w->path, n);
}

static int dir_sync(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : CM_OK;
	close(fd);
	return rc;
}

/* Accepts "NNNNNNNN" (8 to 10 digits) and, when corrupt is not NULL, "NNNNNNNN.corrupt". */
static int seg_name_parse(const char *name, uint32_t *n, int *corrupt)
{
	size_t digits = strspn(name, "0123456789");
	if (digits < 8 || digits > 10)
		return 0;
	int bad = strcmp(name + digits, ".corrupt") == 0;
	if (name[digits] && !bad)
		return 0;
	unsigned long long v = strtoull(name, NULL, 10);
	if (v > UINT32_MAX)
		return 0;
	*n = (uint32_t)v;
	*corrupt = bad;
	return 1;
}

/* ---- encode ---------------------------------------------------------------------------------------- */

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

static int put_str(cm_buf *b, const char *s)
{
	size_t n = strlen(s);
	int rc = cm_buf_put_uvarint(b, n);
	return rc ? rc : cm_buf_append(b, s, n);
}

/* Room for the worst case is reserved once, then the samples are written in place. */
static int put_samples(cm_buf *b, const cm_sample *x, size_t n)
{
	uint64_t prev = 0;
	if (n > SIZE_MAX / 32 || cm_buf_reserve(b, 10 + n * 18))
		return CM_ENOMEM;
	uint8_t *p = b->data + b->len, *start = p;
	p += cm_put_uvarint(p, n);
	for (size_t i = 0; i < n; i++) {
		uint64_t t = (uint64_t)x[i].t_ms, v;
		p += cm_put_uvarint(p, zigzag((int64_t)(t - prev)));
		memcpy(&v, &x[i].v, 8);
		for (int k = 0; k < 8; k++)
			*p++ = (uint8_t)(v >> (8 * k));
		prev = t;
	}
	b->len += (size_t)(p - start);
	return CM_OK;
}

int ts__wal_begin(cm_buf *out, uint8_t type, size_t *start)
{
	uint8_t header[REC_HEADER] = {0, 0, 0, 0, 0, 0, 0, 0, type};
	*start = out->len;
	return cm_buf_append(out, header, sizeof(header));
}

int ts__wal_put_series(cm_buf *out, uint64_t id, const cm_label *l, size_t n)
{
	int rc = cm_buf_put_uvarint(out, id);
	if (!rc)
		rc = cm_buf_put_uvarint(out, n);
	for (size_t i = 0; i < n && !rc; i++) {
		rc = put_str(out, l[i].name);
		if (!rc)
			rc = put_str(out, l[i].value);
	}
	return rc;
}

int ts__wal_put_samples(cm_buf *out, uint64_t id, const cm_sample *x, size_t n)
{
	int rc = cm_buf_put_uvarint(out, id);
	return rc ? rc : put_samples(out, x, n);
}

int ts__wal_end(cm_buf *out, size_t start, cm_err *err)
{
	size_t len = out->len - start - REC_HEADER;
	if (len > TS__MAX_RECORD)
		return cm_errf(err, CM_E2BIG, "batch encodes to %zu bytes, over the %u-byte WAL record limit", len,
			       TS__MAX_RECORD);
	uint8_t *h = out->data + start;
	cm_put_u32le(h, (uint32_t)len);
	cm_put_u32le(h + 4, cm_crc32c(0, h + 8, len + 1));
	return CM_OK;
}

/* ---- decode ---------------------------------------------------------------------------------------- */

/* Reads one length-prefixed string into d->strs; *off is where it starts there. */
static int dec_str(cm_rd *r, rec_dec *d, size_t *off, cm_err *err)
{
	uint64_t n;
	const uint8_t *p;
	if (cm_rd_uvarint(r, &n) || n > TS__MAX_LABEL_BYTES || cm_rd_bytes(r, (size_t)n, &p))
		return cm_errf(err, CM_ECORRUPT, "bad label string length");
	if (memchr(p, 0, (size_t)n))
		return cm_errf(err, CM_ECORRUPT, "label string holds a NUL byte");
	*off = d->strs.len;
	int rc = cm_buf_append(&d->strs, p, (size_t)n);
	if (!rc)
		rc = cm_buf_append(&d->strs, "", 1);
	return rc ? cm_errf(err, rc, "out of memory decoding WAL") : CM_OK;
}

static int dec_labels(cm_rd *r, rec_dec *d, cm_series *s, cm_err *err)
{
	uint64_t n;
	if (cm_rd_uvarint(r, &n) || n > TS__MAX_LABELS || n > cm_rd_left(r) / 2)
		return cm_errf(err, CM_ECORRUPT, "bad label count");
	d->strs.len = 0;
	for (size_t i = 0; i < n; i++) {
		int rc = dec_str(r, d, &d->offs[i][0], err);
		if (!rc)
			rc = dec_str(r, d, &d->offs[i][1], err);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < n; i++) {
		d->labels[i].name = (const char *)d->strs.data + d->offs[i][0];
		d->labels[i].value = (const char *)d->strs.data + d->offs[i][1];
	}
	s->labels = d->labels;
	s->nlabels = (size_t)n;
	return CM_OK;
}

static int dec_samples(cm_rd *r, rec_dec *d, cm_series *s, cm_err *err)
{
	uint64_t n, prev = 0;
	if (cm_rd_uvarint(r, &n) || n > cm_rd_left(r) / 9)
		return cm_errf(err, CM_ECORRUPT, "bad sample count");
	if (n > d->cap) {
		cm_sample *p = realloc(d->samples, (size_t)n * sizeof(*p));
		if (!p)
			return cm_errf(err, CM_ENOMEM, "out of memory decoding WAL");
		d->samples = p;
		d->cap = (size_t)n;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t z;
		if (cm_rd_uvarint(r, &z) || cm_rd_f64le(r, &d->samples[i].v))
			return cm_errf(err, CM_ECORRUPT, "truncated sample");
		prev += (uint64_t)unzigzag(z);
		d->samples[i].t_ms = (int64_t)prev;
	}
	s->samples = d->samples;
	s->nsamples = (size_t)n;
	return CM_OK;
}

static int dec_series(cm_rd *r, rec_dec *d, cm_series *s, cm_err *err)
{
	cm_err why;
	int rc = dec_labels(r, d, s, err);
	if (!rc)
		rc = dec_samples(r, d, s, err);
	if (!rc && ts__series_check(s, &why))
		rc = cm_errf(err, CM_ECORRUPT, "%s", why.msg);
	return rc;
}

/* Decodes a version 1 samples payload, passing each series to ops (when not NULL); *nsamples counts
 * samples. Fails with CM_ECORRUPT (err says why), CM_ENOMEM, or whatever ops returned. */
static int rec_decode_v1(const uint8_t *p, size_t n, rec_dec *d, const ts__replay_ops *ops, uint64_t *nsamples,
			 cm_err *err)
{
	cm_rd r;
	uint64_t nseries;
	cm_rd_init(&r, p, n);
	if (cm_rd_uvarint(&r, &nseries) || nseries > cm_rd_left(&r) / 2)
		return cm_errf(err, CM_ECORRUPT, "bad series count");
	*nsamples = 0;
	for (uint64_t i = 0; i < nseries; i++) {
		cm_series s;
		int rc = dec_series(&r, d, &s, err);
		if (!rc && ops)
			rc = ops->batch(ops->ctx, &s);
		if (rc)
			return rc;
		*nsamples += s.nsamples;
	}
	if (cm_rd_left(&r))
		return cm_errf(err, CM_ECORRUPT, "%zu bytes after the last series", cm_rd_left(&r));
	return CM_OK;
}

/* Checks that decoded labels are canonical: sorted by name, names unique, no empty value. */
static int labels_canonical(const cm_series *s, cm_err *err)
{
	cm_err why;
	if (ts__series_check(s, &why))
		return cm_errf(err, CM_ECORRUPT, "%s", why.msg);
	for (size_t i = 0; i < s->nlabels; i++) {
		if (!s->labels[i].value[0] || (i && strcmp(s->labels[i - 1].name, s->labels[i].name) >= 0))
			return cm_errf(err, CM_ECORRUPT, "series labels not in canonical form");
	}
	return CM_OK;
}

/* Decodes a series payload; dry only checks it (against the head's existing ids too). */
static int rec_decode_series(const uint8_t *p, size_t n, rec_dec *d, const ts__replay_ops *ops, int dry,
			     cm_err *err)
{
	cm_rd r;
	cm_rd_init(&r, p, n);
	while (cm_rd_left(&r)) {
		uint64_t id;
		cm_series s = {0};
		if (cm_rd_uvarint(&r, &id))
			return cm_errf(err, CM_ECORRUPT, "bad series id");
		int rc = dec_labels(&r, d, &s, err);
		if (!rc)
			rc = labels_canonical(&s, err);
		if (!rc && (rc = ops->define(ops->ctx, id, s.labels, s.nlabels, dry)) == CM_ECORRUPT)
			cm_errf(err, rc, "series id %llu defined again with other labels", (unsigned long long)id);
		if (rc)
			return rc;
	}
	return CM_OK;
}

/* Decodes a samples payload of ids; dry only checks it. *nsamples counts samples. */
static int rec_decode_ids(const uint8_t *p, size_t n, rec_dec *d, const ts__replay_ops *ops, int dry,
			  uint64_t *nsamples, cm_err *err)
{
	cm_rd r;
	cm_rd_init(&r, p, n);
	*nsamples = 0;
	while (cm_rd_left(&r)) {
		uint64_t id;
		cm_series s = {0};
		if (cm_rd_uvarint(&r, &id))
			return cm_errf(err, CM_ECORRUPT, "bad series id");
		int rc = dec_samples(&r, d, &s, err);
		if (!rc && s.nsamples == 0)
			rc = cm_errf(err, CM_ECORRUPT, "series id %llu without samples", (unsigned long long)id);
		if (!rc && (rc = ops->samples(ops->ctx, id, s.samples, s.nsamples, dry)) == CM_ECORRUPT)
			cm_errf(err, rc, "samples for undefined series id %llu", (unsigned long long)id);
		if (rc)
			return rc;
		*nsamples += s.nsamples;
	}
	return CM_OK;
}

/* Decodes a payload of the given type; dry validates only (nothing reaches the head). */
static int rec_decode(replay *rp, uint8_t type, const uint8_t *p, size_t n, int dry, uint64_t *nsamples,
		      cm_err *err)
{
	*nsamples = 0;
	if (type == REC_SAMPLES)
		return rec_decode_v1(p, n, &rp->dec, dry ? NULL : rp->ops, nsamples, err);
	if (type == REC_SERIES)
		return rec_decode_series(p, n, &rp->dec, rp->ops, dry, err);
	return rec_decode_ids(p, n, &rp->dec, rp->ops, dry, nsamples, err);
}

/* ---- replay ---------------------------------------------------------------------------------------- */

static void report_cut(replay *rp, const char *path, uint64_t off, uint64_t bytes, const char *why)
{
	ts_open_report *rep = rp->rep;
	rep->truncated_bytes += bytes;
	rep->truncated_segments++;
	cm_err msg; /* same size as first_problem; a very long path cuts the message short */
	_Static_assert(sizeof(msg.msg) == sizeof(rep->first_problem), "first_problem size");
	if (rep->first_problem[0])
		return;
	cm_errf(&msg, 0, "file %s offset %llu: %s", path, (unsigned long long)off, why);
	memcpy(rep->first_problem, msg.msg, sizeof(msg.msg));
}

/* Checks and reads the payload of the record at off; CM_ECORRUPT (err says why) marks a bad record. */
static int record_read(replay *rp, int fd, uint64_t size, uint64_t off, size_t *len, cm_err *err)
{
	uint8_t h[REC_HEADER];
	uint64_t left = size - off;
	if (left < REC_HEADER)
		return cm_errf(err, CM_ECORRUPT, "torn record header (%llu bytes)", (unsigned long long)left);
	int rc = cm_pread_all(fd, h, REC_HEADER, off);
	if (rc)
		return cm_errf(err, rc, "reading WAL: %s", cm_strerror(rc));
	uint32_t n = cm_get_u32le(h), crc = cm_get_u32le(h + 4);
	if (n > TS__MAX_RECORD)
		return cm_errf(err, CM_ECORRUPT, "record length %u over the limit", n);
	if (n > left - REC_HEADER)
		return cm_errf(err, CM_ECORRUPT, "torn record: %u-byte payload, %llu bytes left", n,
			       (unsigned long long)(left - REC_HEADER));
	rp->payload.len = 0;
	if (cm_buf_reserve(&rp->payload, (size_t)n + 1))
		return cm_errf(err, CM_ENOMEM, "out of memory reading a %u-byte WAL record", n);
	rp->payload.data[0] = h[8];
	rc = cm_pread_all(fd, rp->payload.data + 1, n, off + REC_HEADER);
	if (rc)
		return cm_errf(err, rc, "reading WAL: %s", cm_strerror(rc));
	if (cm_crc32c(0, rp->payload.data, (size_t)n + 1) != crc)
		return cm_errf(err, CM_ECORRUPT, "checksum mismatch");
	if (rp->version == 1 ? h[8] != REC_SAMPLES : h[8] != REC_SERIES && h[8] != REC_IDS)
		return cm_errf(err, CM_ECORRUPT, "unknown record type %u", h[8]);
	*len = n;
	return CM_OK;
}

/* Replays the record at *off and advances it; CM_ECORRUPT (err says why) marks a bad record. */
static int record_replay(replay *rp, int fd, uint64_t size, uint64_t *off, cm_err *err)
{
	size_t n = 0;
	uint64_t nsamples;
	int rc = record_read(rp, fd, size, *off, &n, err);
	if (rc)
		return rc;
	uint8_t type = rp->payload.data[0];
	const uint8_t *p = rp->payload.data + 1;
	rc = rec_decode(rp, type, p, n, 1, &nsamples, err); /* validate before applying any of it */
	if (!rc) {
		rc = rec_decode(rp, type, p, n, 0, &nsamples, err);
		if (rc == CM_ECORRUPT)
			rc = CM_EIO; /* cannot happen: the first pass accepted it */
	}
	if (rc)
		return rc;
	rp->rep->records += type != REC_SERIES; /* one per ts_append batch */
	rp->rep->samples += nsamples;
	*off += REC_HEADER + n;
	return CM_OK;
}

static int seg_quarantine(replay *rp, const char *path, uint64_t size, cm_err *err)
{
	char to[4200];
	snprintf(to, sizeof(to), "%s.corrupt", path);
	if (rename(path, to) != 0)
		return cm_errf(err, -errno, "renaming bad WAL segment %s: %s", path, strerror(errno));
	rp->dir_dirty = 1;
	report_cut(rp, path, 0, size, "bad segment header, renamed to .corrupt");
	return CM_OK;
}

static int seg_cut(replay *rp, int fd, const char *path, uint64_t off, uint64_t size, const char *why, cm_err *err)
{
	if (ftruncate(fd, (off_t)off) != 0 || (!rp->w->no_fsync && fsync(fd) != 0))
		return cm_errf(err, -errno, "truncating WAL segment %s at %llu: %s", path, (unsigned long long)off,
			       strerror(errno));
	report_cut(rp, path, off, size - off, why);
	return CM_OK;
}

/* Replays the records of an open segment; returns the offset where the valid ones end in *end. */
static int seg_records(replay *rp, int fd, const char *path, uint64_t size, uint64_t *end, cm_err *err)
{
	uint64_t off = SEG_HEADER;
	int rc = CM_OK;
	cm_err why;
	while (off < size && !(rc = record_replay(rp, fd, size, &off, &why)))
		;
	if (rc == CM_ECORRUPT)
		rc = seg_cut(rp, fd, path, off, size, why.msg, err);
	else if (rc)
		rc = cm_errf(err, rc, "replaying %s at offset %llu: %s", path, (unsigned long long)off, why.msg);
	*end = off;
	return rc;
}

static int seg_replay(replay *rp, uint32_t seg, cm_err *err)
{
	char path[4096];
	uint8_t h[SEG_HEADER];
	struct stat st;
	uint64_t end = 0;
	int rc = CM_OK;
	seg_path(rp->w, seg, path, sizeof(path));
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		rc = cm_errf(err, -errno, "opening WAL segment %s: %s", path, strerror(errno));
		goto out;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size >= SEG_HEADER && (rc = cm_pread_all(fd, h, SEG_HEADER, 0))) {
		rc = cm_errf(err, rc, "reading WAL segment %s: %s", path, cm_strerror(rc));
		goto out;
	}
	rp->version = size < SEG_HEADER ? 0 : cm_get_u32le(h + 4);
	if (size < SEG_HEADER || memcmp(h, WAL_MAGIC, 4) ||
	    (rp->version != 1 && rp->version != WAL_VERSION && rp->version != CKPT_VERSION)) {
		rc = seg_quarantine(rp, path, size, err);
		goto out;
	}
	rc = seg_records(rp, fd, path, size, &end, err);
	if (!rc && end == SEG_HEADER) {
		if (unlink(path) != 0)
			rc = cm_errf(err, -errno, "removing empty WAL segment %s: %s", path, strerror(errno));
		rp->dir_dirty = 1;
	} else if (!rc) {
		rp->w->bytes += end;
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Lists the segment numbers in order; *max is the highest number in use, .corrupt names included. */
static int seg_list(const ts__wal *w, uint32_t **out, size_t *nout, uint32_t *max, cm_err *err)
{
	uint32_t *segs = NULL, n;
	size_t count = 0, cap = 0;
	int corrupt;
	DIR *d = opendir(w->path);
	if (!d)
		return cm_errf(err, -errno, "listing %s: %s", w->path, strerror(errno));
	*max = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (!seg_name_parse(e->d_name, &n, &corrupt))
			continue;
		*max = n > *max ? n : *max;
		if (corrupt)
			continue;
		if (count == cap) {
			uint32_t *p = realloc(segs, (cap = cap ? cap * 2 : 16) * sizeof(*p));
			if (!p) {
				free(segs);
				closedir(d);
				return cm_errf(err, CM_ENOMEM, "out of memory listing %s", w->path);
			}
			segs = p;
		}
		segs[count++] = n;
	}
	closedir(d);
	if (count > 1)
		qsort(segs, count, sizeof(*segs), u32_cmp);
	*out = segs;
	*nout = count;
	return CM_OK;
}

/* 1 when segment n is a checkpoint (a header that says so; anything else is for seg_replay to judge). */
static int seg_is_checkpoint(const ts__wal *w, uint32_t n)
{
	char path[4096];
	uint8_t h[SEG_HEADER];
	seg_path(w, n, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int yes = fd >= 0 && !cm_pread_all(fd, h, SEG_HEADER, 0) && !memcmp(h, WAL_MAGIC, 4) &&
		  cm_get_u32le(h + 4) == CKPT_VERSION;
	if (fd >= 0)
		close(fd);
	return yes;
}

/* Removes the segments below the newest checkpoint (a cut's unfinished removal); *first is its index. */
static int drop_superseded(replay *rp, const uint32_t *segs, size_t n, size_t *first, cm_err *err)
{
	char path[4096];
	*first = 0;
	for (size_t i = n; i-- > 0;)
		if (seg_is_checkpoint(rp->w, segs[i])) {
			*first = i;
			break;
		}
	for (size_t i = 0; i < *first; i++) {
		seg_path(rp->w, segs[i], path, sizeof(path));
		if (unlink(path) != 0)
			return cm_errf(err, -errno, "removing WAL segment %s below a checkpoint: %s", path, strerror(errno));
		rp->dir_dirty = 1;
	}
	return CM_OK;
}

static int wal_replay(ts__wal *w, const ts__replay_ops *ops, ts_open_report *rep, uint32_t *max, cm_err *err)
{
	replay rp = {.w = w, .ops = ops, .rep = rep};
	uint32_t *segs = NULL;
	size_t n = 0, first = 0;
	cm_buf_init(&rp.dec.strs);
	cm_buf_init(&rp.payload);
	int rc = seg_list(w, &segs, &n, max, err);
	rc = rc ? rc : drop_superseded(&rp, segs, n, &first, err);
	for (size_t i = first; i < n && !rc; i++)
		rc = seg_replay(&rp, segs[i], err);
	if (!rc && rp.dir_dirty && !w->no_fsync && (rc = dir_sync(w->path)))
		cm_errf(err, rc, "syncing %s: %s", w->path, cm_strerror(rc));
	free(segs);
	free(rp.dec.samples);
	cm_buf_close(&rp.dec.strs);
	cm_buf_close(&rp.payload);
	return rc;
}

/* ---- segments -------------------------------------------------------------------------------------- */

/* Creates segment n with its header, durable (file and directory) unless no_fsync. */
static int seg_create(ts__wal *w, uint32_t n, int *out, cm_err *err)
{
	char path[4096];
	uint8_t h[SEG_HEADER];
	memcpy(h, WAL_MAGIC, 4);
	cm_put_u32le(h + 4, WAL_VERSION);
	seg_path(w, n, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return cm_errf(err, -errno, "creating WAL segment %s: %s", path, strerror(errno));
	int rc = cm_pwrite_all(fd, h, SEG_HEADER, 0);
	if (!rc && !w->no_fsync && fdatasync(fd) != 0)
		rc = -errno;
	if (!rc && !w->no_fsync)
		rc = dir_sync(w->path);
	if (rc) {
		close(fd);
		unlink(path);
		return cm_errf(err, rc, "creating WAL segment %s: %s", path, cm_strerror(rc));
	}
	*out = fd;
	return CM_OK;
}

static int wal_break(ts__wal *w, int rc, cm_err *err, const char *what)
{
	if (!w->broken) {
		w->broken = rc;
		cm_errf(&w->broken_why, rc, "WAL %s failed (%s); the database must be reopened", what,
			cm_strerror(rc));
	}
	return cm_errf(err, rc, "%s", w->broken_why.msg);
}

/* Closes the current segment durably and starts the next one. Called with mu held and no sync running. */
static int wal_roll(ts__wal *w, cm_err *err)
{
	int fd;
	if (w->seg == UINT32_MAX)
		return cm_errf(err, CM_E2BIG, "WAL segment numbers exhausted in %s", w->path);
	if (!w->no_fsync) {
		if (fdatasync(w->fd) != 0)
			return wal_break(w, -errno, err, "fsync");
		w->fsyncs++;
	}
	w->synced = w->written;
	int rc = seg_create(w, w->seg + 1, &fd, err);
	if (rc)
		return rc;
	close(w->fd);
	w->fd = fd;
	w->seg++;
	w->size = SEG_HEADER;
	w->bytes += SEG_HEADER;
	return CM_OK;
}

/* Writes one record at the end of the segment, or cuts a partial write off again. Called with mu held. */
static int wal_put(ts__wal *w, const uint8_t *rec, size_t n, cm_err *err)
{
	int rc = cm_pwrite_all(w->fd, rec, n, w->size);
	if (!rc) {
		w->size += n;
		w->bytes += n;
		return CM_OK;
	}
	if (ftruncate(w->fd, (off_t)w->size) != 0)
		return wal_break(w, -errno, err, "truncate after a failed write");
	return cm_errf(err, rc, "writing a %zu-byte record to WAL segment %s/%08u: %s; nothing was stored", n, w->path,
		       w->seg, cm_strerror(rc));
}

/* ---- the public face for ts_db.c ------------------------------------------------------------------- */

int ts__wal_write(ts__wal *w, const uint8_t *rec, size_t n, uint64_t *seq, cm_err *err)
{
	int rc = CM_OK;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		if (w->broken) {
			rc = cm_errf(err, w->broken, "%s", w->broken_why.msg);
			break;
		}
		if (w->size <= SEG_HEADER || w->size + n <= w->seg_bytes)
			break;
		if (w->syncing) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		if ((rc = wal_roll(w, err)))
			break;
	}
	if (!rc)
		rc = wal_put(w, rec, n, err);
	if (!rc)
		*seq = ++w->written;
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* Runs one fdatasync for everything written so far. Called with mu held; drops it meanwhile. */
static void wal_sync_leader(ts__wal *w)
{
	uint64_t target = w->written;
	int fd = w->fd; /* stays open: wal_roll waits while syncing is set */
	w->syncing = 1;
	pthread_mutex_unlock(&w->mu);
	int rc = fdatasync(fd) != 0 ? -errno : CM_OK;
	pthread_mutex_lock(&w->mu);
	w->syncing = 0;
	if (rc) {
		wal_break(w, rc, NULL, "fsync");
	} else {
		w->fsyncs++;
		w->synced = target > w->synced ? target : w->synced;
	}
	pthread_cond_broadcast(&w->cv);
}

int ts__wal_sync(ts__wal *w, uint64_t seq, cm_err *err)
{
	int rc = CM_OK;
	if (w->no_fsync)
		return CM_OK;
	pthread_mutex_lock(&w->mu);
	while (w->synced < seq && !w->broken) {
		if (w->syncing)
			pthread_cond_wait(&w->cv, &w->mu);
		else
			wal_sync_leader(w);
	}
	if (w->synced < seq)
		rc = cm_errf(err, w->broken, "%s", w->broken_why.msg);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int ts__wal_cut(ts__wal *w, uint32_t *seg, cm_err *err)
{
	int rc = CM_OK;
	pthread_mutex_lock(&w->mu);
	while (w->syncing)
		pthread_cond_wait(&w->cv, &w->mu);
	if (w->broken)
		rc = cm_errf(err, w->broken, "%s", w->broken_why.msg);
	else if (w->size > SEG_HEADER)
		rc = wal_roll(w, err);
	if (!rc)
		*seg = w->seg;
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* Writes the checkpoint as segment n (replacing it atomically), durable. */
int ts__ckpt_open(ts__wal *w, ts__ckpt *ck, cm_err *err)
{
	char tmp[4200];
	uint8_t h[SEG_HEADER];
	memcpy(h, WAL_MAGIC, 4);
	cm_put_u32le(h + 4, CKPT_VERSION);
	snprintf(tmp, sizeof(tmp), "%s/checkpoint.tmp", w->path);
	*ck = (ts__ckpt){w, open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), SEG_HEADER};
	int rc = ck->fd < 0 ? -errno : cm_pwrite_all(ck->fd, h, SEG_HEADER, 0);
	if (rc)
		ts__ckpt_close(ck);
	return rc ? cm_errf(err, rc, "writing WAL checkpoint %s: %s", tmp, cm_strerror(rc)) : CM_OK;
}

int ts__ckpt_put(ts__ckpt *ck, const uint8_t *p, size_t n, cm_err *err)
{
	int rc = cm_pwrite_all(ck->fd, p, n, ck->len);
	ck->len += n;
	return rc ? cm_errf(err, rc, "writing the WAL checkpoint: %s", cm_strerror(rc)) : CM_OK;
}

void ts__ckpt_close(ts__ckpt *ck)
{
	if (ck->fd >= 0)
		close(ck->fd);
	ck->fd = -1;
}

/* Makes the checkpoint durable and renames it to segment n. */
static int ckpt_install(ts__ckpt *ck, uint32_t n, cm_err *err)
{
	char tmp[4200], path[4096];
	ts__wal *w = ck->w;
	snprintf(tmp, sizeof(tmp), "%s/checkpoint.tmp", w->path);
	seg_path(w, n, path, sizeof(path));
	int rc = !w->no_fsync && fdatasync(ck->fd) != 0 ? -errno : CM_OK;
	ts__ckpt_close(ck);
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (!rc && !w->no_fsync)
		rc = dir_sync(w->path);
	return rc ? cm_errf(err, rc, "writing WAL checkpoint %s: %s", path, cm_strerror(rc)) : CM_OK;
}

int ts__wal_truncate(ts__wal *w, uint32_t seg, ts__ckpt *ck, cm_err *err)
{
	uint32_t *segs = NULL, max;
	size_t n = 0;
	char path[4096];
	struct stat st;
	int full = ck->len > SEG_HEADER;
	uint32_t keep = full ? seg - 1 : seg; /* the first segment kept */
	int rc = full ? ckpt_install(ck, seg - 1, err) : CM_OK;
	ts__ckpt_close(ck); /* an empty one stays checkpoint.tmp, ignored and overwritten by the next */
	rc = rc ? rc : seg_list(w, &segs, &n, &max, err);
	for (size_t i = 0; i < n && !rc; i++) {
		if (segs[i] >= keep)
			continue;
		seg_path(w, segs[i], path, sizeof(path));
		if (stat(path, &st) == 0 && unlink(path) == 0) {
			pthread_mutex_lock(&w->mu);
			w->bytes -= (uint64_t)st.st_size < w->bytes ? (uint64_t)st.st_size : w->bytes;
			pthread_mutex_unlock(&w->mu);
		} else {
			rc = cm_errf(err, -errno, "removing WAL segment %s: %s", path, strerror(errno));
		}
	}
	free(segs);
	if (!rc && !w->no_fsync && (rc = dir_sync(w->path)))
		cm_errf(err, rc, "syncing %s: %s", w->path, cm_strerror(rc));
	return rc;
}

void ts__wal_stats(ts__wal *w, uint64_t *fsyncs, uint64_t *bytes)
{
	pthread_mutex_lock(&w->mu);
	*fsyncs = w->fsyncs;
	*bytes = w->bytes;
	pthread_mutex_unlock(&w->mu);
}

static int wal_mkdir(ts__wal *w, const char *dir, cm_err *err)
{
	if (mkdir(w->path, 0755) != 0)
		return errno == EEXIST ? CM_OK : cm_errf(err, -errno, "creating %s: %s", w->path, strerror(errno));
	int rc = w->no_fsync ? CM_OK : dir_sync(dir);
	return rc ? cm_errf(err, rc, "syncing %s: %s", dir, cm_strerror(rc)) : CM_OK;
}

int ts__wal_open(const char *dir, const ts_opts *opts, const ts__replay_ops *ops, ts_open_report *rep,
		 ts__wal **out, cm_err *err)
{
	uint32_t max = 0;
	int rc = CM_ENOMEM;
	ts__wal *w = calloc(1, sizeof(*w));
	if (!w)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	w->fd = -1;
	w->seg_bytes = opts->segment_bytes ? opts->segment_bytes : DEFAULT_SEGMENT_BYTES;
	w->no_fsync = opts->no_fsync;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	size_t len = strlen(dir) + sizeof("/wal");
	if (!(w->path = malloc(len))) {
		cm_errf(err, rc, "out of memory");
		goto fail;
	}
	snprintf(w->path, len, "%s/wal", dir);
	if ((rc = wal_mkdir(w, dir, err)) || (rc = wal_replay(w, ops, rep, &max, err)))
		goto fail;
	if (max == UINT32_MAX) {
		rc = cm_errf(err, CM_E2BIG, "WAL segment numbers exhausted in %s", w->path);
		goto fail;
	}
	if ((rc = seg_create(w, max + 1, &w->fd, err)))
		goto fail;
	w->seg = max + 1;
	w->size = SEG_HEADER;
	w->bytes += SEG_HEADER;
	*out = w;
	return CM_OK;
fail:
	ts__wal_close(w);
	return rc;
}

void ts__wal_close(ts__wal *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w->path);
	free(w);
}
