/* ls_store.c -- the log store: per-stream heads, a write-ahead log, zstd blocks in chunk files, a
 * sqlite3 index of streams and blocks, retention, idempotent appends.
 *
 * Owns a directory. The aggregator's ingest (agent batches) and its Loki push handler call
 * ls_store_append from request threads; it returns once the entries are in the WAL and fsynced. Each
 * stream's newest entries sit in an in-memory head; a head past block_bytes becomes a zstd block
 * appended to the current chunk file, indexed in sqlite together with the WAL position it covers. When
 * the WAL passes wal_bytes every head is cut and the WAL starts over (written again from its start, over
 * the old records: truncating 64 MiB took 16-22 ms under the mutex). Queries read the blocks of the
 * matching streams from the index and then the heads. Every call takes the store's mutex. Nothing here
 * prints; errors are returned with a message.
 *
 * ---- directory, version 1 ------------------------------------------------------------------------------
 *
 *   <dir>/wal             the write-ahead log
 *   <dir>/index.db        sqlite3: streams, blocks, dedupe positions
 *   <dir>/chunks/NNNNNNNN chunk files, numbered from 1 in decimal, 8 digits
 *
 * ---- WAL --------------------------------------------------------------------------------------------------
 *
 *   offset 0  4 bytes  magic "CRLS"
 *   offset 4  4 bytes  u32le version = 1
 *   offset 8  records back to back:
 *     4 bytes  u32le payload length n (at most 256 MiB)
 *     4 bytes  u32le CRC32C of the payload
 *     n bytes  payload:
 *       uvarint lsn            strictly increasing over the store's life (not reset by a restart)
 *       uvarint origin length, origin bytes   "" = no dedupe
 *       uvarint seq
 *       uvarint nstreams
 *       nstreams times:
 *         uvarint nlabels (1..64), nlabels times: uvarint len + name, uvarint len + value
 *         uvarint nentries
 *         nentries times: varint zigzag(ts_ns - previous ts_ns of this stream in this record, the first
 *                         minus 0), uvarint len, len bytes of the line
 *
 *   A restart writes the next records from offset 8 again, over the old ones, without truncating the
 *   file: records of earlier cycles may follow the last one written. Replay at open applies records in
 *   order; a stream's entries from a record whose lsn is at or below the stream's flushed_lsn are
 *   already in blocks and are skipped. The first record that is cut short, fails its CRC, does not
 *   decode exactly, or has an lsn below meta's next_lsn (the cycle's first) or not above the record
 *   before it (an older cycle's) ends the log: the file is truncated there (counted in wal_truncated).
 *   A close cuts the file after the last record, so after a clean shutdown wal_truncated counts torn
 *   tails only; after a crash it also counts the older cycle's bytes past the last record.
 *   A missing or empty WAL is a new one; a wrong magic or version fails the open.
 *
 * ---- chunk file ------------------------------------------------------------------------------------------
 *
 *   offset 0  4 bytes  magic "CRLC";  offset 4  4 bytes  u32le version = 1;  then blocks back to back:
 *     4 bytes u32le compressed length c    4 bytes u32le raw length r (at most 64 MiB)
 *     4 bytes u32le entry count            4 bytes u32le CRC32C of the c compressed bytes
 *     8 bytes u64le stream id              8 bytes i64le min ts_ns     8 bytes i64le max ts_ns
 *     c bytes one zstd frame of r bytes: the entries as in the WAL (delta from the block's previous entry)
 *
 *   A block is used only through an index row (so a block written before a crash and never indexed is
 *   dead space); its CRC, lengths and entry count are checked on every read.
 *
 * ---- index.db (PRAGMA user_version = 1) -------------------------------------------------------------------
 *
 *   streams(id INTEGER PRIMARY KEY, key TEXT UNIQUE, labels BLOB, flushed_lsn INTEGER)
 *       key = {a="b", c="d"} (names sorted, values with \ " and newline escaped); labels = name NUL
 *       value NUL ...; flushed_lsn: WAL records at or below it are in blocks for this stream
 *   blocks(stream INTEGER, file INTEGER, off INTEGER, len INTEGER, n INTEGER, min_t INTEGER, max_t INTEGER)
 *   origins(origin TEXT PRIMARY KEY, seq INTEGER)   dedupe floors as of the last WAL restart
 *   origin_seqs(origin TEXT, seq INTEGER)           dedupe windows as of the last WAL restart, each
 *       origin's seqs in store order (rowid order); with the floor they rebuild its cm_seqwin, and the
 *       WAL's records (origin, seq) after it complete it (an index without this table: empty windows)
 *   meta(k TEXT PRIMARY KEY, v INTEGER)             next_lsn as of the last WAL restart: the first lsn
 *       of the records written since
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "ls_int.h"

#define WAL_HDR 8
#define BLK_HDR 40
#define MAX_RECORD (256u << 20)
#define MAX_BLOCK_RAW (64u << 20)
#define MAX_LABELS 64
#define ENTRY_MAX 20 /* an entry's two varints at most: zigzag ts delta and length */

typedef struct sstream {
	ls_stream_info info;
	cm_label *labels;    /* owned, sorted by name */
	char *key;
	cm_buf head;         /* entries since the last block, block encoding */
	size_t head_n;
	int64_t head_prev, head_min, head_max;
	uint64_t head_lsn;   /* highest WAL lsn with entries in the head */
	uint64_t flushed_lsn;
	int cut;             /* the next flush makes the head a block: the append in hand would overfill it */
	struct sstream *next;
} sstream;

typedef struct dedupe_pos {
	char *name;
	cm_seqwin seqs; /* the seqs stored from this origin */
	struct dedupe_pos *next;
} dedupe_pos;

struct ls_store {
	ls_store_opts o;
	char dir[900];
	pthread_mutex_t mu;
	sqlite3 *db;
	sqlite3_stmt *ins_stream, *ins_block, *set_flushed, *sel_blocks;
	sstream **tab;
	size_t tabcap, nstreams;
	dedupe_pos *origins;
	int wal_fd, chunk_fd;
	uint64_t wal_size, next_lsn, chunk_no, chunk_size;
	uint64_t wal_first_lsn; /* meta's next_lsn: records in the WAL file below it are an older cycle's */
	/* group commit: records are written under mu, synced without it, applied in lsn order */
	pthread_cond_t cv;   /* signals synced, apply_next and pending moving */
	uint64_t written;    /* WAL record bytes written over the store's open life (not reset by a restart) */
	uint64_t synced;     /* how many of them are known durable */
	int syncing;         /* one thread runs fdatasync */
	int wal_err;         /* a failed WAL write or sync, or a durable record that did not reach its heads:
			      * every later append fails (and the WAL is never restarted) until a reopen replays it */
	uint64_t apply_next; /* the lsn whose entries go into heads next */
	size_t pending;      /* records written, not yet applied */
	cm_buf rec;  /* WAL record scratch */
	ZSTD_CCtx *cctx; /* block compression, kept warm between blocks (created at the first one) */
	cm_buf blk;  /* block scratch */
	ls_store_stats st;
};

/* ---- helpers ----------------------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

/* A uvarint at p, which has room for it; returns the byte after it. */
static uint8_t *put_uv(uint8_t *p, uint64_t v)
{
	for (; v >= 0x80; v >>= 7)
		*p++ = (uint8_t)(v | 0x80);
	*p++ = (uint8_t)v;
	return p;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static int rd_varint(cm_rd *r, int64_t *v)
{
	uint64_t u;
	int rc = cm_rd_uvarint(r, &u);
	if (!rc)
		*v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
	return rc;
}

static int sync_fd(ls_store *s, int fd) { return s->o.no_fsync || fdatasync(fd) == 0 ? 0 : -errno; }

static int label_cmp(const void *a, const void *b)
{
	return strcmp(((const cm_label *)a)->name, ((const cm_label *)b)->name);
}

static int put_escaped(cm_buf *b, const char *v)
{
	int rc = 0;
	for (; *v && !rc; v++)
		rc = *v == '\\' ? cm_buf_puts(b, "\\\\") : *v == '"' ? cm_buf_puts(b, "\\\"")
			: *v == '\n' ? cm_buf_puts(b, "\\n") : cm_buf_append(b, v, 1);
	return rc;
}

/* {a="b", c="d"} of labels sorted by name; malloc'd. */
static char *make_key(const cm_label *l, size_t n)
{
	cm_buf b;
	cm_buf_init(&b);
	int rc = cm_buf_puts(&b, "{");
	for (size_t i = 0; i < n && !rc; i++)
		rc = cm_buf_printf(&b, "%s%s=\"", i ? ", " : "", l[i].name) || put_escaped(&b, l[i].value) ||
		     cm_buf_puts(&b, "\"");
	if (rc || cm_buf_append(&b, "}", 2)) {
		cm_buf_close(&b);
		return NULL;
	}
	size_t len;
	return (char *)cm_buf_take(&b, &len);
}

/* Checks and sorts a copy of the labels (names valid and unique, values UTF-8); 0 or CM_EINVAL. */
static int labels_check(const cm_label *in, size_t n, cm_label *out)
{
	if (n == 0 || n > MAX_LABELS)
		return CM_EINVAL;
	memcpy(out, in, n * sizeof(*in));
	qsort(out, n, sizeof(*out), label_cmp);
	for (size_t i = 0; i < n; i++) {
		if (!out[i].name || !out[i].value || !cm_label_name_valid(out[i].name) ||
		    !cm_utf8_valid(out[i].value, strlen(out[i].value)))
			return CM_EINVAL;
		if (i && !strcmp(out[i - 1].name, out[i].name))
			return CM_EINVAL;
	}
	return 0;
}

/* ---- streams ---------------------------------------------------------------------------------------------- */

static sstream *stream_find(ls_store *s, const char *key)
{
	if (!s->tabcap)
		return NULL;
	for (sstream *x = s->tab[hash_str(key) & (s->tabcap - 1)]; x; x = x->next)
		if (!strcmp(x->key, key))
			return x;
	return NULL;
}

static int tab_insert(ls_store *s, sstream *x)
{
	if (s->nstreams + 1 > s->tabcap / 2) {
		size_t nc = s->tabcap ? s->tabcap * 2 : 256;
		sstream **nt = calloc(nc, sizeof(*nt));
		if (!nt)
			return CM_ENOMEM;
		for (size_t i = 0; i < s->tabcap; i++)
			for (sstream *y = s->tab[i], *n; y; y = n) {
				n = y->next;
				y->next = nt[hash_str(y->key) & (nc - 1)];
				nt[hash_str(y->key) & (nc - 1)] = y;
			}
		free(s->tab);
		s->tab = nt, s->tabcap = nc;
	}
	size_t h = hash_str(x->key) & (s->tabcap - 1);
	x->next = s->tab[h], s->tab[h] = x;
	s->nstreams++;
	return 0;
}

static void stream_free(sstream *x)
{
	if (!x)
		return;
	for (size_t i = 0; i < x->info.nlabels; i++)
		free((void *)x->labels[i].name), free((void *)x->labels[i].value);
	free(x->labels);
	free(x->key);
	cm_buf_close(&x->head);
	free(x);
}

/* A stream object for sorted, checked labels; id assigned by the caller. */
static sstream *stream_new(const cm_label *l, size_t n, char *key)
{
	sstream *x = calloc(1, sizeof(*x));
	if (!x || !(x->labels = calloc(n, sizeof(cm_label)))) {
		free(x);
		free(key);
		return NULL;
	}
	x->key = key;
	for (size_t i = 0; i < n; i++) {
		x->labels[i].name = strdup(l[i].name);
		x->labels[i].value = strdup(l[i].value);
		x->info.nlabels = i + 1;
		if (!x->labels[i].name || !x->labels[i].value) {
			stream_free(x);
			return NULL;
		}
	}
	x->info.labels = x->labels, x->info.key = key;
	x->info.min_ns = INT64_MAX, x->info.max_ns = INT64_MIN;
	cm_buf_init(&x->head);
	return x;
}

static int labels_blob(const cm_label *l, size_t n, cm_buf *b)
{
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++)
		rc = cm_buf_append(b, l[i].name, strlen(l[i].name) + 1) || cm_buf_append(b, l[i].value, strlen(l[i].value) + 1);
	return rc ? CM_ENOMEM : 0;
}

/* The stream for labels (sorted, checked), created in memory and in the index when new. */
static int stream_get(ls_store *s, const cm_label *l, size_t n, sstream **out)
{
	char *key = make_key(l, n);
	if (!key)
		return CM_ENOMEM;
	sstream *x = stream_find(s, key);
	if (x) {
		free(key);
		*out = x;
		return 0;
	}
	if (!(x = stream_new(l, n, key)))
		return CM_ENOMEM;
	cm_buf blob;
	cm_buf_init(&blob);
	int rc = labels_blob(l, n, &blob);
	sqlite3_reset(s->ins_stream);
	sqlite3_bind_text(s->ins_stream, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s->ins_stream, 2, blob.data, (int)blob.len, SQLITE_STATIC);
	if (!rc && sqlite3_step(s->ins_stream) != SQLITE_DONE)
		rc = CM_EIO;
	cm_buf_close(&blob);
	x->info.id = (uint64_t)sqlite3_last_insert_rowid(s->db);
	if (rc || (rc = tab_insert(s, x))) {
		stream_free(x);
		return rc;
	}
	s->st.streams++;
	*out = x;
	return 0;
}

/* One entry onto the head, whose room the caller reserved (ENTRY_MAX + len). */
static void head_add(sstream *x, int64_t ts, const char *line, size_t len, uint64_t lsn)
{
	uint8_t *p = put_uv(put_uv(x->head.data + x->head.len, zigzag(ts - x->head_prev)), len);
	if (len) /* an empty line may come without a pointer (protobuf-c) */
		memcpy(p, line, len);
	x->head.len = (size_t)(p + len - x->head.data);
	x->head_prev = ts;
	if (!x->head_n || ts < x->head_min)
		x->head_min = ts;
	if (!x->head_n || ts > x->head_max)
		x->head_max = ts;
	x->head_n++;
	x->head_lsn = lsn;
	if (ts < x->info.min_ns)
		x->info.min_ns = ts;
	if (ts > x->info.max_ns)
		x->info.max_ns = ts;
}

/* ---- blocks ----------------------------------------------------------------------------------------------- */

static int chunk_open(ls_store *s, uint64_t no)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/chunks/%08llu", s->dir, (unsigned long long)no);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st)) {
		close(fd);
		return CM_EIO;
	}
	if (st.st_size < 8) {
		uint8_t h[8] = {'C', 'R', 'L', 'C', 1, 0, 0, 0};
		if (ftruncate(fd, 0) || cm_write_all(fd, h, 8)) {
			close(fd);
			return CM_EIO;
		}
		st.st_size = 8;
	}
	if (s->chunk_fd >= 0)
		close(s->chunk_fd);
	s->chunk_fd = fd, s->chunk_no = no, s->chunk_size = (uint64_t)st.st_size;
	return 0;
}

static void put_u64le(uint8_t *p, uint64_t v)
{
	cm_put_u32le(p, (uint32_t)v);
	cm_put_u32le(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get_u64le(const uint8_t *p) { return cm_get_u32le(p) | (uint64_t)cm_get_u32le(p + 4) << 32; }

/* Writes x's head as a block (not yet synced) and indexes it (inside the caller's transaction). */
static int block_write(ls_store *s, sstream *x)
{
	if (s->chunk_size >= s->o.chunk_file_bytes && chunk_open(s, s->chunk_no + 1))
		return CM_EIO;
	size_t bound = ZSTD_compressBound(x->head.len);
	s->blk.len = 0;
	if (!s->cctx && !(s->cctx = ZSTD_createCCtx()))
		return CM_ENOMEM;
	if (cm_buf_reserve(&s->blk, BLK_HDR + bound))
		return CM_ENOMEM;
	uint8_t *buf = s->blk.data;
	size_t c = ZSTD_compressCCtx(s->cctx, buf + BLK_HDR, bound, x->head.data, x->head.len, s->o.zstd_level);
	int rc = ZSTD_isError(c) ? CM_EIO : 0;
	if (!rc) {
		cm_put_u32le(buf, (uint32_t)c);
		cm_put_u32le(buf + 4, (uint32_t)x->head.len);
		cm_put_u32le(buf + 8, (uint32_t)x->head_n);
		cm_put_u32le(buf + 12, cm_crc32c(0, buf + BLK_HDR, c));
		put_u64le(buf + 16, x->info.id);
		put_u64le(buf + 24, (uint64_t)x->head_min);
		put_u64le(buf + 32, (uint64_t)x->head_max);
		rc = cm_write_all(s->chunk_fd, buf, BLK_HDR + c);
	}
	if (rc)
		return rc;
	sqlite3_stmt *q = s->ins_block;
	sqlite3_reset(q);
	sqlite3_bind_int64(q, 1, (sqlite3_int64)x->info.id);
	sqlite3_bind_int64(q, 2, (sqlite3_int64)s->chunk_no);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)s->chunk_size);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)(BLK_HDR + c));
	sqlite3_bind_int64(q, 5, (sqlite3_int64)x->head_n);
	sqlite3_bind_int64(q, 6, x->head_min);
	sqlite3_bind_int64(q, 7, x->head_max);
	if (sqlite3_step(q) != SQLITE_DONE)
		return CM_EIO;
	sqlite3_reset(s->set_flushed);
	sqlite3_bind_int64(s->set_flushed, 1, (sqlite3_int64)x->head_lsn);
	sqlite3_bind_int64(s->set_flushed, 2, (sqlite3_int64)x->info.id);
	if (sqlite3_step(s->set_flushed) != SQLITE_DONE)
		return CM_EIO;
	s->chunk_size += BLK_HDR + c;
	s->st.blocks++;
	return 0;
}

/* An empty head; one that a single append grew past twice the block size gives its memory back. */
static void head_clear(ls_store *s, sstream *x)
{
	x->flushed_lsn = x->head_lsn;
	x->head.len = 0, x->head_n = 0, x->head_prev = 0, x->cut = 0;
	if (x->head.cap > 2 * s->o.block_bytes)
		cm_buf_close(&x->head);
}

static int flush_wanted(const ls_store *s, const sstream *x, int all)
{
	return x->head_n && (all || x->cut || x->head.len >= s->o.block_bytes);
}

/* Cuts every head over block_bytes or marked cut (all non-empty heads when all is set) into blocks:
 * blocks written, chunk file synced, index rows committed, then the heads cleared. */
static int flush_heads(ls_store *s, int all)
{
	int rc = 0, any = 0;
	for (size_t i = 0; i < s->tabcap && !rc; i++)
		for (sstream *x = s->tab[i]; x && !rc; x = x->next)
			if (flush_wanted(s, x, all)) {
				if (!any && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
					return CM_EIO;
				any = 1;
				rc = block_write(s, x);
			}
	if (!any)
		return 0;
	if (rc || (rc = sync_fd(s, s->chunk_fd)) || sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return rc ? rc : CM_EIO;
	}
	for (size_t i = 0; i < s->tabcap; i++)
		for (sstream *x = s->tab[i]; x; x = x->next)
			if (flush_wanted(s, x, all))
				head_clear(s, x);
	return 0;
}

/* Before an append's entries go to the heads: every head they would push past block_bytes becomes a
 * block first, so a head holds at most about one block (not a block plus a whole append's share, which
 * with a hundred streams and 4 MiB agent batches kept ~200 MiB in heads). */
static int cut_full_heads(ls_store *s, const ls_push_stream *st, size_t n)
{
	int any = 0;
	for (size_t i = 0; i < n; i++) {
		cm_label sorted[MAX_LABELS];
		sstream *x;
		labels_check(st[i].labels, st[i].nlabels, sorted);
		int rc = stream_get(s, sorted, st[i].nlabels, &x);
		if (rc)
			return rc;
		size_t need = 0;
		for (size_t k = 0; k < st[i].nentries; k++)
			need += st[i].entries[k].len + 6; /* two varints, as short as they mostly are */
		if (x->head_n && x->head.len + need > s->o.block_bytes)
			x->cut = any = 1;
	}
	return any ? flush_heads(s, 0) : 0;
}

/* ---- origins (dedupe) ------------------------------------------------------------------------------------- */

static dedupe_pos *origin_find(ls_store *s, const char *name)
{
	for (dedupe_pos *o = s->origins; o; o = o->next)
		if (!strcmp(o->name, name))
			return o;
	return NULL;
}

static dedupe_pos *origin_get(ls_store *s, const char *name)
{
	dedupe_pos *o = origin_find(s, name);
	if (o)
		return o;
	if (!(o = calloc(1, sizeof(*o))) || !(o->name = strdup(name))) {
		free(o);
		return NULL;
	}
	o->next = s->origins, s->origins = o;
	return o;
}

/* seq of origin is stored (floor: every seq up to it is). */
static int origin_set(ls_store *s, const char *name, uint64_t seq, int floor)
{
	dedupe_pos *o = origin_get(s, name);
	if (!o)
		return CM_ENOMEM;
	if (!floor)
		cm_seqwin_add(&o->seqs, seq);
	else if (seq > o->seqs.floor)
		o->seqs.floor = seq;
	return 0;
}

/* ---- WAL -------------------------------------------------------------------------------------------------- */

static int wal_encode(cm_buf *b, uint64_t lsn, const char *origin, uint64_t seq, const ls_push_stream *st,
		      size_t n)
{
	size_t olen = origin ? strlen(origin) : 0;
	int rc = cm_buf_put_u32le(b, 0) || cm_buf_put_u32le(b, 0) || cm_buf_put_uvarint(b, lsn) ||
		 cm_buf_put_uvarint(b, olen) || cm_buf_append(b, origin ? origin : "", olen) ||
		 cm_buf_put_uvarint(b, seq) || cm_buf_put_uvarint(b, n);
	for (size_t i = 0; i < n && !rc; i++) {
		rc = cm_buf_put_uvarint(b, st[i].nlabels);
		for (size_t k = 0; k < st[i].nlabels && !rc; k++) {
			size_t nl = strlen(st[i].labels[k].name), vl = strlen(st[i].labels[k].value);
			rc = cm_buf_put_uvarint(b, nl) || cm_buf_append(b, st[i].labels[k].name, nl) ||
			     cm_buf_put_uvarint(b, vl) || cm_buf_append(b, st[i].labels[k].value, vl);
		}
		rc = rc || cm_buf_put_uvarint(b, st[i].nentries);
		size_t need = 0;
		for (size_t k = 0; k < st[i].nentries; k++)
			need += ENTRY_MAX + st[i].entries[k].len;
		if (rc || (rc = cm_buf_reserve(b, need + 1)))
			break;
		int64_t prev = 0;
		uint8_t *p = b->data + b->len;
		for (size_t k = 0; k < st[i].nentries; k++) {
			const ls_entry *e = &st[i].entries[k];
			p = put_uv(put_uv(p, zigzag(e->ts_ns - prev)), e->len);
			if (e->len)
				memcpy(p, e->line, e->len);
			p += e->len;
			prev = e->ts_ns;
		}
		b->len = (size_t)(p - b->data);
	}
	if (rc)
		return CM_ENOMEM;
	if (b->len - 8 > MAX_RECORD)
		return CM_E2BIG;
	cm_put_u32le(b->data, (uint32_t)(b->len - 8));
	cm_put_u32le(b->data + 4, cm_crc32c(0, b->data + 8, b->len - 8));
	return 0;
}

/* Applies one stream's entries (already checked) to its head, unless its blocks cover lsn. */
static int apply_stream(ls_store *s, const cm_label *sorted, size_t nl, const ls_entry *e, size_t n, uint64_t lsn,
			int replay)
{
	sstream *x;
	int rc = stream_get(s, sorted, nl, &x);
	if (rc)
		return rc;
	if (replay && lsn <= x->flushed_lsn)
		return 0;
	size_t need = 0;
	for (size_t i = 0; i < n; i++)
		need += ENTRY_MAX + e[i].len;
	if (cm_buf_reserve(&x->head, need + 1))
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		head_add(x, e[i].ts_ns, e[i].line, e[i].len, lsn);
		s->st.bytes += e[i].len;
	}
	s->st.entries += n;
	s->st.wal_replayed += replay ? n : 0;
	return 0;
}

/* Decodes one stream of a WAL payload into arena memory. */
static int decode_stream(cm_rd *r, cm_arena *a, cm_label *labels, size_t *nl, ls_entry **entries, size_t *ne)
{
	uint64_t n, len;
	if (cm_rd_uvarint(r, &n) || n == 0 || n > MAX_LABELS)
		return CM_ECORRUPT;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p;
		char *str[2];
		for (int k = 0; k < 2; k++) {
			if (cm_rd_uvarint(r, &len) || len > cm_rd_left(r) || cm_rd_bytes(r, len, &p) ||
			    memchr(p, 0, len) || !(str[k] = cm_arena_strndup(a, (const char *)p, len)))
				return CM_ECORRUPT;
		}
		labels[i] = (cm_label){str[0], str[1]};
	}
	*nl = n;
	if (cm_rd_uvarint(r, &n) || n > cm_rd_left(r) / 2)
		return CM_ECORRUPT;
	ls_entry *e = cm_arena_calloc(a, n ? n : 1, sizeof(*e));
	if (!e)
		return CM_ENOMEM;
	int64_t prev = 0, d;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *p;
		if (rd_varint(r, &d) || cm_rd_uvarint(r, &len) || len > cm_rd_left(r) || cm_rd_bytes(r, len, &p))
			return CM_ECORRUPT;
		e[i] = (ls_entry){prev + d, (const char *)p, len};
		prev = e[i].ts_ns;
	}
	*entries = e, *ne = n;
	return 0;
}

static int replay_record(ls_store *s, const uint8_t *p, size_t n)
{
	cm_rd r;
	cm_rd_init(&r, p, n);
	uint64_t lsn, olen, seq, ns;
	const uint8_t *o;
	if (cm_rd_uvarint(&r, &lsn) || cm_rd_uvarint(&r, &olen) || olen > cm_rd_left(&r) || cm_rd_bytes(&r, olen, &o) ||
	    memchr(o, 0, olen) || cm_rd_uvarint(&r, &seq) || cm_rd_uvarint(&r, &ns) || ns > cm_rd_left(&r))
		return CM_ECORRUPT;
	cm_arena a;
	cm_arena_init(&a, 0);
	int rc = 0;
	for (uint64_t i = 0; i < ns && !rc; i++) {
		cm_label in[MAX_LABELS], sorted[MAX_LABELS];
		size_t nl, ne;
		ls_entry *e;
		rc = decode_stream(&r, &a, in, &nl, &e, &ne);
		if (!rc && labels_check(in, nl, sorted))
			rc = CM_ECORRUPT;
		if (!rc)
			rc = apply_stream(s, sorted, nl, e, ne, lsn, 1);
	}
	if (!rc && cm_rd_left(&r))
		rc = CM_ECORRUPT;
	char *name = rc ? NULL : cm_arena_strndup(&a, (const char *)o, olen);
	if (!rc && olen)
		rc = name ? origin_set(s, name, seq, 0) : CM_ENOMEM;
	cm_arena_close(&a);
	if (!rc && lsn >= s->next_lsn)
		s->next_lsn = lsn + 1;
	return rc;
}

/* Reads the whole WAL and replays it; cuts a torn tail. */
static int wal_replay(ls_store *s, cm_err *err)
{
	struct stat st;
	if (fstat(s->wal_fd, &st))
		return cm_errf(err, CM_EIO, "log store wal: %s", strerror(errno));
	size_t size = (size_t)st.st_size;
	uint8_t *buf = size ? malloc(size) : NULL;
	if (size && !buf)
		return cm_errf(err, CM_ENOMEM, "log store wal: out of memory");
	if (size && pread(s->wal_fd, buf, size, 0) != (ssize_t)size) {
		free(buf);
		return cm_errf(err, CM_EIO, "log store wal: short read");
	}
	if (size >= 4 && (memcmp(buf, "CRLS", 4) || (size >= 8 && cm_get_u32le(buf + 4) != 1))) {
		free(buf);
		return cm_errf(err, CM_ECORRUPT, "log store wal: not a version 1 log store WAL");
	}
	size_t off = WAL_HDR;
	int rc = 0;
	uint64_t lsn, prev = 0;
	while (size >= WAL_HDR && off + 8 <= size) {
		uint32_t n = cm_get_u32le(buf + off), crc = cm_get_u32le(buf + off + 4);
		if (n > MAX_RECORD || n > size - off - 8 || cm_crc32c(0, buf + off + 8, n) != crc)
			break;
		cm_rd r;
		cm_rd_init(&r, buf + off + 8, n);
		if (cm_rd_uvarint(&r, &lsn) || lsn < s->wal_first_lsn || lsn <= prev)
			break; /* an older cycle's record */
		prev = lsn;
		if ((rc = replay_record(s, buf + off + 8, n)) == CM_ECORRUPT) {
			rc = 0;
			break;
		}
		if (rc)
			break;
		off += 8 + n;
	}
	free(buf);
	if (rc)
		return cm_errf(err, rc, "log store wal: replay: %s", cm_strerror(rc));
	if (size < WAL_HDR) {
		uint8_t h[8] = {'C', 'R', 'L', 'S', 1, 0, 0, 0};
		if (ftruncate(s->wal_fd, 0) || pwrite(s->wal_fd, h, 8, 0) != 8 || sync_fd(s, s->wal_fd))
			return cm_errf(err, CM_EIO, "log store wal: cannot write header");
		off = WAL_HDR;
	} else if (off < size) {
		s->st.wal_truncated += size - off;
		if (ftruncate(s->wal_fd, (off_t)off) || sync_fd(s, s->wal_fd))
			return cm_errf(err, CM_EIO, "log store wal: cannot truncate torn tail");
	}
	s->wal_size = off;
	return 0;
}

static int put_origin(sqlite3_stmt *q, const char *name, uint64_t seq)
{
	sqlite3_reset(q);
	sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 2, (sqlite3_int64)seq);
	return sqlite3_step(q) == SQLITE_DONE ? 0 : CM_EIO;
}

/* Each origin's floor and window into the index (inside the caller's transaction). */
static int save_origins(ls_store *s)
{
	sqlite3_stmt *fl = NULL, *win = NULL;
	int rc = sqlite3_exec(s->db, "DELETE FROM origin_seqs", NULL, NULL, NULL) != SQLITE_OK ||
		 sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO origins VALUES(?1,?2)", -1, &fl, NULL) != SQLITE_OK ||
		 sqlite3_prepare_v2(s->db, "INSERT INTO origin_seqs VALUES(?1,?2)", -1, &win, NULL) != SQLITE_OK
		 ? CM_EIO : 0;
	for (dedupe_pos *o = s->origins; o && !rc; o = o->next) {
		rc = put_origin(fl, o->name, o->seqs.floor);
		for (unsigned i = 0; i < o->seqs.n && !rc; i++)
			rc = put_origin(win, o->name, cm_seqwin_at(&o->seqs, i));
	}
	sqlite3_finalize(fl);
	sqlite3_finalize(win);
	return rc;
}

/* Every head into blocks, dedupe windows and next_lsn into the index, then the WAL written again from its
 * start (the old records left behind have lsns below next_lsn: replay stops at them). */
static int wal_restart(ls_store *s)
{
	int rc = flush_heads(s, 1);
	if (rc)
		return rc;
	rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ? CM_EIO : save_origins(s);
	char sql[128];
	snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta VALUES('next_lsn',%llu)", (unsigned long long)s->next_lsn);
	if (rc || sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return CM_EIO;
	}
	s->wal_size = WAL_HDR; /* the next record overwrites the first old one */
	s->wal_first_lsn = s->next_lsn;
	return 0;
}

/* ---- open / close ----------------------------------------------------------------------------------------- */

static const char schema[] =
	"PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	"CREATE TABLE IF NOT EXISTS streams(id INTEGER PRIMARY KEY, key TEXT UNIQUE, labels BLOB,"
	" flushed_lsn INTEGER DEFAULT 0);"
	"CREATE TABLE IF NOT EXISTS blocks(stream INTEGER, file INTEGER, off INTEGER, len INTEGER, n INTEGER,"
	" min_t INTEGER, max_t INTEGER);"
	"CREATE INDEX IF NOT EXISTS blocks_stream ON blocks(stream, max_t);"
	"CREATE TABLE IF NOT EXISTS origins(origin TEXT PRIMARY KEY, seq INTEGER);"
	"CREATE TABLE IF NOT EXISTS origin_seqs(origin TEXT, seq INTEGER);"
	"CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER);"
	"PRAGMA user_version=1;";

static int prepare(ls_store *s)
{
	return sqlite3_prepare_v2(s->db, "INSERT INTO streams(key, labels) VALUES(?1, ?2)", -1, &s->ins_stream,
				  NULL) != SQLITE_OK ||
	       sqlite3_prepare_v2(s->db, "INSERT INTO blocks VALUES(?1,?2,?3,?4,?5,?6,?7)", -1, &s->ins_block, NULL) !=
		       SQLITE_OK ||
	       sqlite3_prepare_v2(s->db, "UPDATE streams SET flushed_lsn=?1 WHERE id=?2", -1, &s->set_flushed, NULL) !=
		       SQLITE_OK ||
	       sqlite3_prepare_v2(s->db,
				  "SELECT file, off, len, n FROM blocks WHERE stream=?1 AND max_t>=?2 AND min_t<=?3"
				  " ORDER BY rowid",
				  -1, &s->sel_blocks, NULL) != SQLITE_OK;
}

/* One stored stream row into memory. */
static int load_stream(ls_store *s, sqlite3_stmt *q)
{
	const char *blob = sqlite3_column_blob(q, 2);
	int n = sqlite3_column_bytes(q, 2);
	cm_label l[MAX_LABELS];
	size_t nl = 0;
	for (int i = 0; i < n && nl < MAX_LABELS;) {
		const char *name = blob + i, *end = memchr(name, 0, (size_t)(n - i));
		const char *value = end ? end + 1 : NULL;
		const char *vend = value && value < blob + n ? memchr(value, 0, (size_t)(blob + n - value)) : NULL;
		if (!vend)
			return CM_ECORRUPT;
		l[nl++] = (cm_label){name, value};
		i = (int)(vend + 1 - blob);
	}
	char *key = make_key(l, nl);
	sstream *x = key ? stream_new(l, nl, key) : NULL;
	if (!x)
		return CM_ENOMEM;
	x->info.id = (uint64_t)sqlite3_column_int64(q, 0);
	x->flushed_lsn = (uint64_t)sqlite3_column_int64(q, 3);
	if (x->flushed_lsn >= s->next_lsn)
		s->next_lsn = x->flushed_lsn + 1;
	int rc = tab_insert(s, x);
	if (rc)
		stream_free(x);
	return rc;
}

static sstream *stream_by_id(ls_store *s, uint64_t id)
{
	for (size_t i = 0; i < s->tabcap; i++)
		for (sstream *x = s->tab[i]; x; x = x->next)
			if (x->info.id == id)
				return x;
	return NULL;
}

static int load_ranges(ls_store *s)
{
	sqlite3_stmt *q;
	if (sqlite3_prepare_v2(s->db, "SELECT stream, min(min_t), max(max_t) FROM blocks GROUP BY stream", -1, &q,
			       NULL) != SQLITE_OK)
		return CM_EIO;
	while (sqlite3_step(q) == SQLITE_ROW) {
		sstream *x = stream_by_id(s, (uint64_t)sqlite3_column_int64(q, 0));
		int64_t lo = sqlite3_column_int64(q, 1), hi = sqlite3_column_int64(q, 2);
		if (x && lo < x->info.min_ns)
			x->info.min_ns = lo;
		if (x && hi > x->info.max_ns)
			x->info.max_ns = hi;
	}
	sqlite3_finalize(q);
	return 0;
}

static int load_origins(ls_store *s, const char *sql, int floor)
{
	sqlite3_stmt *q;
	int rc = 0;
	if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
		return CM_EIO;
	while (!rc && sqlite3_step(q) == SQLITE_ROW)
		rc = origin_set(s, (const char *)sqlite3_column_text(q, 0), (uint64_t)sqlite3_column_int64(q, 1), floor);
	sqlite3_finalize(q);
	return rc;
}

static int load_index(ls_store *s)
{
	sqlite3_stmt *q;
	int rc = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT id, key, labels, flushed_lsn FROM streams", -1, &q, NULL) != SQLITE_OK)
		return CM_EIO;
	while (!rc && sqlite3_step(q) == SQLITE_ROW)
		rc = load_stream(s, q);
	sqlite3_finalize(q);
	if (!rc)
		rc = load_origins(s, "SELECT origin, seq FROM origins", 1);
	if (!rc)
		rc = load_origins(s, "SELECT origin, seq FROM origin_seqs ORDER BY rowid", 0);
	if (rc || sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k='next_lsn'", -1, &q, NULL) != SQLITE_OK)
		return rc ? rc : CM_EIO;
	if (sqlite3_step(q) == SQLITE_ROW)
		s->wal_first_lsn = (uint64_t)sqlite3_column_int64(q, 0);
	if (s->wal_first_lsn > s->next_lsn)
		s->next_lsn = s->wal_first_lsn;
	sqlite3_finalize(q);
	if (!rc)
		rc = load_ranges(s);
	return rc;
}

static uint64_t last_chunk_no(const char *dir)
{
	DIR *d = opendir(dir);
	uint64_t max = 0;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char *end;
		unsigned long long v = strtoull(e->d_name, &end, 10);
		if (strlen(e->d_name) == 8 && !*end && v > max)
			max = v;
	}
	if (d)
		closedir(d);
	return max;
}

static void store_defaults(ls_store_opts *o)
{
	if (!o->block_bytes)
		o->block_bytes = 256 * 1024;
	if (!o->wal_bytes)
		o->wal_bytes = 64u << 20;
	if (!o->chunk_file_bytes)
		o->chunk_file_bytes = 64u << 20;
	if (!o->zstd_level)
		o->zstd_level = 1; /* on log blocks as small as level 3 and a third less CPU (bench/logs) */
}

static int open_files(ls_store *s, cm_err *err)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/chunks", s->dir);
	if ((mkdir(s->dir, 0755) && errno != EEXIST) || (mkdir(path, 0755) && errno != EEXIST))
		return cm_errf(err, -errno, "log store %s: %s", path, strerror(errno));
	uint64_t last = last_chunk_no(path);
	if (chunk_open(s, last ? last : 1))
		return cm_errf(err, CM_EIO, "log store %s: cannot open a chunk file", path);
	snprintf(path, sizeof(path), "%s/index.db", s->dir);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
		    SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK || prepare(s))
		return cm_errf(err, CM_EIO, "log store %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
	snprintf(path, sizeof(path), "%s/wal", s->dir);
	if ((s->wal_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
		return cm_errf(err, -errno, "log store %s: %s", path, strerror(errno));
	return 0;
}

int ls_store_open(const ls_store_opts *opts, ls_store **out, cm_err *err)
{
	ls_store *s = calloc(1, sizeof(*s));
	if (!s)
		return cm_errf(err, CM_ENOMEM, "log store: out of memory");
	s->o = *opts;
	store_defaults(&s->o);
	s->wal_fd = s->chunk_fd = -1;
	s->next_lsn = 1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	cm_buf_init(&s->rec);
	cm_buf_init(&s->blk);
	snprintf(s->dir, sizeof(s->dir), "%s", opts->dir);
	int rc = open_files(s, err);
	if (!rc && (rc = load_index(s)))
		cm_errf(err, rc, "log store %s: index: %s", s->dir, cm_strerror(rc));
	if (!rc)
		rc = wal_replay(s, err);
	if (rc) {
		ls_store_close(s);
		return rc;
	}
	s->st.streams = s->nstreams;
	s->apply_next = s->next_lsn;
	*out = s;
	return 0;
}

void ls_store_close(ls_store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->tabcap; i++)
		for (sstream *x = s->tab[i], *n; x; x = n) {
			n = x->next;
			stream_free(x);
		}
	free(s->tab);
	for (dedupe_pos *o = s->origins, *n; o; o = n) {
		n = o->next;
		free(o->name);
		free(o);
	}
	sqlite3_finalize(s->ins_stream);
	sqlite3_finalize(s->ins_block);
	sqlite3_finalize(s->set_flushed);
	sqlite3_finalize(s->sel_blocks);
	sqlite3_close(s->db);
	if (s->wal_fd >= 0) {
		/* an older cycle's records past the last one go, so the next open has no tail to count */
		if (!s->wal_err && ftruncate(s->wal_fd, (off_t)s->wal_size)) {
			/* left for the next open to cut */
		}
		close(s->wal_fd);
	}
	if (s->chunk_fd >= 0)
		close(s->chunk_fd);
	cm_buf_close(&s->rec);
	cm_buf_close(&s->blk);
	ZSTD_freeCCtx(s->cctx);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* ---- append ----------------------------------------------------------------------------------------------- */

static int check_streams(const ls_push_stream *st, size_t n, cm_err *err)
{
	cm_label sorted[MAX_LABELS];
	for (size_t i = 0; i < n; i++)
		if (labels_check(st[i].labels, st[i].nlabels, sorted))
			return cm_errf(err, CM_EINVAL, "stream %zu: labels must be 1-%d valid, unique names with UTF-8 values",
				       i, MAX_LABELS);
	return 0;
}

/* Waits until the WAL is durable up to end (counted as written is): one fdatasync, without the mutex,
 * covers every record written before it started (group commit). A failed one breaks the store for good:
 * what it covered may or may not be on disk, so nothing after it may be acknowledged. mu held. */
static int wal_sync_to(ls_store *s, uint64_t end)
{
	while (!s->wal_err && s->synced < end) {
		if (s->syncing) {
			pthread_cond_wait(&s->cv, &s->mu);
			continue;
		}
		uint64_t target = s->written;
		s->syncing = 1;
		pthread_mutex_unlock(&s->mu);
		int rc = sync_fd(s, s->wal_fd);
		pthread_mutex_lock(&s->mu);
		s->syncing = 0;
		if (rc)
			s->wal_err = rc;
		else if (target > s->synced) /* a WAL restart meanwhile may have synced more */
			s->synced = target;
		pthread_cond_broadcast(&s->cv);
	}
	return s->wal_err;
}

/* A WAL restart if one is due, which waits until no record is between its write and its apply. Called
 * before the dedupe check: the mutex must not be released between that check and the seq's window add,
 * or two copies of one seq would both miss the window and both be stored. mu held. */
static int wal_room(ls_store *s)
{
	while (s->wal_size >= s->o.wal_bytes && s->pending && !s->wal_err)
		pthread_cond_wait(&s->cv, &s->mu);
	int rc = s->wal_err;
	if (!rc && s->wal_size >= s->o.wal_bytes && !(rc = wal_restart(s)))
		s->synced = s->written; /* the restart synced everything before it */
	return rc;
}

/* The record written (not yet synced) with the next lsn. mu held, never released. */
static int wal_write(ls_store *s, const char *origin, uint64_t seq, const ls_push_stream *st, size_t n,
		     uint64_t *lsn)
{
	s->rec.len = 0;
	int rc = wal_encode(&s->rec, s->next_lsn, origin, seq, st, n);
	if (rc)
		return rc;
	if ((rc = cm_pwrite_all(s->wal_fd, s->rec.data, s->rec.len, s->wal_size))) {
		if (ftruncate(s->wal_fd, (off_t)s->wal_size)) /* leave no half record behind */
			s->wal_err = rc = CM_EIO;
		return rc;
	}
	*lsn = s->next_lsn++;
	s->wal_size += s->rec.len;
	s->written += s->rec.len;
	s->pending++;
	return 0;
}

/* A durable record's entries into their heads, in lsn order (a stream's flushed_lsn covers every lsn
 * below it, so a lower lsn must never reach a head after a higher one was cut into a block). Entries
 * that fail to go in (no memory, a new stream sqlite cannot insert) are only in the WAL, and their seq
 * is in the window: the failure is sticky (wal_err), so no WAL restart drops them, no retry is
 * acknowledged as a duplicate and no later record reaches a head before them; a reopen replays them.
 * A failed block cut is not: the entries stay in the heads. mu held. */
static int apply_in_order(ls_store *s, uint64_t lsn, const ls_push_stream *st, size_t n)
{
	while (s->apply_next != lsn)
		pthread_cond_wait(&s->cv, &s->mu);
	int rc = s->wal_err, cut = rc ? 0 : cut_full_heads(s, st, n); /* its failure must not keep the entries out */
	for (size_t i = 0; i < n && !rc; i++) {
		cm_label sorted[MAX_LABELS];
		labels_check(st[i].labels, st[i].nlabels, sorted);
		if ((rc = apply_stream(s, sorted, st[i].nlabels, st[i].entries, st[i].nentries, lsn, 0)))
			s->wal_err = rc;
	}
	if (!rc)
		rc = cut ? cut : flush_heads(s, 0);
	s->apply_next++;
	s->pending--;
	pthread_cond_broadcast(&s->cv);
	return rc;
}

int ls_store_append(ls_store *s, const char *origin, uint64_t seq, const ls_push_stream *streams, size_t n,
		    cm_err *err)
{
	int rc = check_streams(streams, n, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->mu);
	dedupe_pos *o = origin && *origin ? origin_get(s, origin) : NULL;
	uint64_t lsn = 0;
	if (origin && *origin && !o) {
		rc = cm_errf(err, CM_ENOMEM, "log store: out of memory");
	} else if ((rc = wal_room(s))) {
		cm_errf(err, rc, "log store wal: %s%s", cm_strerror(rc),
			s->wal_err ? " (an earlier failure: appends fail until a restart replays the WAL)" : "");
	} else if (o && cm_seqwin_has(&o->seqs, seq)) { /* stored, or being stored: acknowledged once durable */
		s->st.duplicates++;
		if ((rc = wal_sync_to(s, s->written)))
			cm_errf(err, rc, "log store wal: %s", cm_strerror(rc));
	} else if ((rc = wal_write(s, origin, seq, streams, n, &lsn))) {
		cm_errf(err, rc, "log store wal: %s", rc == CM_E2BIG ? "append too large" : cm_strerror(rc));
	} else {
		if (o)
			cm_seqwin_add(&o->seqs, seq);
		int sync = wal_sync_to(s, s->written);
		rc = apply_in_order(s, lsn, streams, n);
		if (sync)
			rc = cm_errf(err, sync, "log store wal: %s", cm_strerror(sync));
		else if (rc)
			cm_errf(err, rc, "log store: %s (the entries are in the WAL)", cm_strerror(rc));
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* ---- queries ---------------------------------------------------------------------------------------------- */

static int overlaps(const ls_stream_info *i, int64_t start, int64_t end)
{
	return i->max_ns >= start && i->min_ns <= end;
}

int ls_store_streams(ls_store *s, int64_t start_ns, int64_t end_ns, ls_stream_fn fn, void *arg)
{
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->tabcap && !rc; i++)
		for (sstream *x = s->tab[i]; x && !rc; x = x->next)
			if (overlaps(&x->info, start_ns, end_ns))
				rc = fn(arg, &x->info);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* Calls fn for the entries of an encoded run within [start, end]. */
static int each_entry(const ls_stream_info *info, const uint8_t *p, size_t n, size_t count, int64_t start,
		      int64_t end, ls_entry_fn fn, void *arg)
{
	cm_rd r;
	cm_rd_init(&r, p, n);
	int64_t ts = 0, d;
	for (size_t i = 0; i < count; i++) {
		uint64_t len;
		const uint8_t *line;
		if (rd_varint(&r, &d) || cm_rd_uvarint(&r, &len) || len > cm_rd_left(&r) || cm_rd_bytes(&r, len, &line))
			return CM_ECORRUPT;
		ts += d;
		int rc = ts >= start && ts <= end ? fn(arg, info, ts, (const char *)line, len) : 0;
		if (rc)
			return rc;
	}
	return cm_rd_left(&r) ? CM_ECORRUPT : 0;
}

static int read_block(ls_store *s, const sstream *x, uint64_t file, uint64_t off, uint64_t len, int64_t start,
		      int64_t end, ls_entry_fn fn, void *arg)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/chunks/%08llu", s->dir, (unsigned long long)file);
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = CM_ECORRUPT;
	if (fd < 0)
		return 0; /* removed by retention since the index was read */
	uint8_t *buf = len >= BLK_HDR && len <= MAX_BLOCK_RAW ? malloc(len) : NULL, *raw = NULL;
	if (buf && pread(fd, buf, len, (off_t)off) == (ssize_t)len && cm_get_u32le(buf) == len - BLK_HDR &&
	    cm_get_u32le(buf + 12) == cm_crc32c(0, buf + BLK_HDR, len - BLK_HDR) && get_u64le(buf + 16) == x->info.id) {
		size_t r = cm_get_u32le(buf + 4);
		raw = r <= MAX_BLOCK_RAW ? malloc(r ? r : 1) : NULL;
		if (raw && ZSTD_decompress(raw, r, buf + BLK_HDR, len - BLK_HDR) == r)
			rc = each_entry(&x->info, raw, r, cm_get_u32le(buf + 8), start, end, fn, arg);
	}
	free(raw);
	free(buf);
	close(fd);
	return rc;
}

static int select_stream(ls_store *s, const sstream *x, int64_t start, int64_t end, ls_entry_fn fn, void *arg)
{
	sqlite3_stmt *q = s->sel_blocks;
	sqlite3_reset(q);
	sqlite3_bind_int64(q, 1, (sqlite3_int64)x->info.id);
	sqlite3_bind_int64(q, 2, start);
	sqlite3_bind_int64(q, 3, end);
	int rc = 0;
	while (!rc && sqlite3_step(q) == SQLITE_ROW)
		rc = read_block(s, x, (uint64_t)sqlite3_column_int64(q, 0), (uint64_t)sqlite3_column_int64(q, 1),
				(uint64_t)sqlite3_column_int64(q, 2), start, end, fn, arg);
	sqlite3_reset(q);
	if (!rc && x->head_n && x->head_max >= start && x->head_min <= end)
		rc = each_entry(&x->info, x->head.data, x->head.len, x->head_n, start, end, fn, arg);
	return rc;
}

int ls_store_select(ls_store *s, int64_t start_ns, int64_t end_ns, ls_want_fn want, void *warg, ls_entry_fn fn,
		    void *farg)
{
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->tabcap && !rc; i++)
		for (sstream *x = s->tab[i]; x && !rc; x = x->next)
			if (overlaps(&x->info, start_ns, end_ns) && want(warg, &x->info))
				rc = select_stream(s, x, start_ns, end_ns, fn, farg);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* ---- retention -------------------------------------------------------------------------------------------- */

static int drop_file(ls_store *s, uint64_t file)
{
	char sql[128], path[1024];
	snprintf(sql, sizeof(sql), "DELETE FROM blocks WHERE file=%llu", (unsigned long long)file);
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return CM_EIO;
	snprintf(path, sizeof(path), "%s/chunks/%08llu", s->dir, (unsigned long long)file);
	unlink(path);
	return 0;
}

static uint64_t chunk_bytes(ls_store *s, uint64_t *oldest)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/chunks", s->dir);
	DIR *d = opendir(path);
	uint64_t total = 0, min = UINT64_MAX;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		struct stat st;
		char *end;
		unsigned long long v = strtoull(e->d_name, &end, 10);
		if (strlen(e->d_name) != 8 || *end || fstatat(dirfd(d), e->d_name, &st, 0))
			continue;
		total += (uint64_t)st.st_size;
		if (v < min)
			min = v;
	}
	if (d)
		closedir(d);
	*oldest = min;
	return total;
}

static int retain_locked(ls_store *s, int64_t now_ms)
{
	int rc = 0;
	if (s->o.retention_ms) {
		int64_t cutoff = (now_ms - s->o.retention_ms) * 1000000;
		sqlite3_stmt *q;
		if (sqlite3_prepare_v2(s->db, "SELECT file FROM blocks GROUP BY file HAVING max(max_t) < ?1", -1, &q, NULL) !=
		    SQLITE_OK)
			return CM_EIO;
		sqlite3_bind_int64(q, 1, cutoff);
		uint64_t files[256];
		size_t n = 0;
		while (n < 256 && sqlite3_step(q) == SQLITE_ROW)
			files[n++] = (uint64_t)sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
		for (size_t i = 0; i < n && !rc; i++)
			if (files[i] != s->chunk_no)
				rc = drop_file(s, files[i]);
	}
	uint64_t oldest;
	while (!rc && s->o.retention_bytes && chunk_bytes(s, &oldest) > s->o.retention_bytes) {
		if (oldest == s->chunk_no && (rc = chunk_open(s, s->chunk_no + 1)))
			break;
		rc = drop_file(s, oldest);
	}
	for (size_t i = 0; i < s->tabcap; i++) /* ranges from what is left, heads included below */
		for (sstream *x = s->tab[i]; x; x = x->next)
			x->info.min_ns = x->head_n ? x->head_min : INT64_MAX, x->info.max_ns = x->head_n ? x->head_max : INT64_MIN;
	return rc ? rc : load_ranges(s);
}

int ls_store_retain(ls_store *s, int64_t now_ms)
{
	pthread_mutex_lock(&s->mu);
	int rc = retain_locked(s, now_ms);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void ls_store_stats_get(ls_store *s, ls_store_stats *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->st;
	uint64_t oldest;
	out->disk_bytes = chunk_bytes(s, &oldest);
	pthread_mutex_unlock(&s->mu);
}
