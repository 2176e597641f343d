/* ts_block.c -- immutable blocks: zstd-compressed Gorilla chunks, an inverted index, block meta.
 *
 * ts_db.c cuts the head into blocks (ts__block_write) and opens every block at start (ts__block_open).
 * A block is a directory <dir>/blocks/<name>/, name = "<mint>-<maxt>-<level>-<resolution>-<written>" (mint
 * and maxt as 16 hex digits with the sign bit flipped so names sort by time, written = the wall clock in
 * ns, hex), holding three files (the chunks file is streamed to disk as series are encoded, into
 * "<written>.tmp"): "chunks" (one zstd frame per series),
 * "index" (symbols, series, postings) and "meta" (time range and counts). The writer builds the block in
 * "<name>.tmp", fsyncs every file, renames the directory and fsyncs the parent, so a block is either
 * complete or absent. The reader maps the index (mmap, validated once with its CRC and bounds-checked on
 * every access) and reads chunks with pread, so a block is never loaded whole into memory. A block whose
 * files fail validation is reported with the file and offset and left out; the rest of the store opens.
 *
 * ---- "meta", version 1 (56 bytes) ------------------------------------------------------------------
 *
 *   0   4  magic "CRLM"           4  4  u32le version = 1
 *   8   8  i64le mint (ms)        16 8  i64le maxt (ms), inclusive, mint <= maxt
 *   24  8  u64le series           32 8  u64le samples
 *   40  4  u32le level (1 = cut from the head, +1 per compaction)
 *   44  4  u32le resolution in ms (0 = raw samples; 300000 or 3600000 for downsampled tiers)
 *   48  4  u32le reserved, 0
 *   52  4  u32le CRC32C of bytes 0..51
 *
 * ---- "chunks", version 1 ------------------------------------------------------------------------------
 *
 *   0   4  magic "CRLC"           4  4  u32le version = 1
 *   8   ...  one zstd frame per series, in index order, back to back. A frame decompresses to one
 *            sample frame (ts_frame.c format: Gorilla or decimal) holding all of the series' samples
 *            in the block.
 *
 * ---- "index", version 1 -------------------------------------------------------------------------------
 *
 *   0   4  magic "CRLI"           4  4  u32le version = 1
 *   8      symbols: uvarint count, then count times { uvarint len, len bytes, one 0 byte }; strictly
 *          increasing (bytewise), no 0 byte inside a symbol, len <= 65536
 *   ..     series: nseries entries, sorted by label set (name, then value, label by label):
 *            uvarint nlabels (1..256), nlabels times { uvarint name symbol, uvarint value symbol }
 *              (names strictly increasing, values non-empty)
 *            uvarint chunk offset in "chunks" (>= 8), uvarint compressed length,
 *            uvarint raw length (<= 64 MiB), uvarint samples (>= 1),
 *            varint mint (zigzag), uvarint maxt - mint, u32le CRC32C of the compressed frame
 *   ..     series offsets: nseries times u32le offset of the entry (from the start of the file)
 *   ..     postings: for each (name, value) pair present, in (name symbol, value symbol) order:
 *            uvarint count (>= 1), count times uvarint delta of the series number (first from 0;
 *            strictly increasing)
 *   ..     postings table: npairs times { u32le name symbol, u32le value symbol, u32le offset of the list }
 *   end-48 table of contents: u64le symbols offset, u64le series count, u64le series offsets offset,
 *          u64le postings table offset, u64le pair count, u32le reserved (0), u32le CRC32C of every byte
 *          of the file before it
 *
 * Validity: magic, version, CRC and every offset, count and symbol number in range; the index is at most
 * 4 GiB (u32 offsets). Violations make the block unusable (CM_ECORRUPT with file and offset); a frame
 * whose CRC, size or Gorilla stream is wrong fails the read of that series only.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "ts_int.h"

#define META_SIZE 56u
#define TOC_SIZE 48u
#define MAX_RAW (64u << 20)

struct ts__block {
	char *path;
	ts__block_meta meta;
	int chunks_fd;
	uint64_t chunks_size;
	uint64_t bytes;      /* of its three files */
	const uint8_t *idx;  /* the mapped index */
	size_t idx_len;
	const char **syms;   /* into the map, NUL-terminated */
	uint32_t *sym_len;
	size_t nsyms;
	uint64_t nseries, series_offs, ptable, npairs;
	uint64_t uid;        /* FNV-1a of the directory name, which holds the time it was written in ns */
};

/* ---- helpers ------------------------------------------------------------------------------------- */

static uint64_t zz(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzz(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

static void put_u64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64le(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int ts__fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : CM_OK;
	close(fd);
	return rc;
}

/* Writes buf to dir/name, fsynced unless no_fsync. */
static int file_put(const char *dir, const char *name, const cm_buf *b, int no_fsync, cm_err *err)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc = fd < 0 ? -errno : cm_write_all(fd, b->data, b->len);
	if (!rc && !no_fsync && fsync(fd) != 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	return rc ? cm_errf(err, rc, "writing %s: %s", path, cm_strerror(rc)) : CM_OK;
}

static int rm_tree_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* ---- writer: symbols ------------------------------------------------------------------------------- */

static int str_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

typedef struct writer {
	const char **syms;
	size_t nsyms;
	cm_buf chunks, index, raw;
	uint32_t *series_off;
	size_t *kept;       /* input positions of the series written (those with samples) */
	size_t nkept;
	uint64_t samples;
	int64_t mint, maxt;
	ZSTD_CCtx *zc;
	ts__bw_fetch fetch;
	void *ctx;
	int zlevel;          /* zstd level: fast for cuts, stronger for compactions */
	int cfd;             /* the chunks file, written as the series are encoded */
	uint64_t cflushed;   /* bytes of it already written */
} writer;

#define CHUNKS_FLUSH (1u << 20)

static int chunks_flush(writer *w)
{
	int rc = cm_write_all(w->cfd, w->chunks.data, w->chunks.len);
	w->cflushed += w->chunks.len;
	w->chunks.len = 0;
	return rc;
}

static int syms_build(writer *w, const ts__bw_series *s, size_t n)
{
	size_t total = 0, k = 0;
	for (size_t i = 0; i < n; i++)
		total += 2 * s[i].nlabels;
	w->syms = malloc((total ? total : 1) * sizeof(*w->syms));
	if (!w->syms)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < s[i].nlabels; j++)
			w->syms[k++] = s[i].labels[j].name, w->syms[k++] = s[i].labels[j].value;
	qsort(w->syms, k, sizeof(*w->syms), str_cmp);
	size_t u = 0;
	for (size_t i = 0; i < k; i++)
		if (u == 0 || strcmp(w->syms[u - 1], w->syms[i]) != 0)
			w->syms[u++] = w->syms[i];
	w->nsyms = u;
	return CM_OK;
}

static uint32_t sym_id(const writer *w, const char *s)
{
	size_t lo = 0, hi = w->nsyms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(w->syms[mid], s);
		if (c == 0)
			return (uint32_t)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return UINT32_MAX; /* cannot happen: every label went into the table */
}

/* ---- writer: series and chunks --------------------------------------------------------------------- */

static int series_put(writer *w, const ts__bw_series *s, const cm_sample *x, size_t nx, uint32_t idx)
{
	w->raw.len = 0;
	int rc = ts__frame_encode(x, nx, w->zc, &w->raw);
	size_t raw = w->raw.len, bound = ZSTD_compressBound(raw);
	size_t boff = w->chunks.len;
	uint64_t off = w->cflushed + boff;
	if (!rc && raw > MAX_RAW)
		rc = CM_E2BIG;
	if (!rc)
		rc = cm_buf_reserve(&w->chunks, bound);
	size_t clen = 0;
	if (!rc) {
		clen = ZSTD_compressCCtx(w->zc, w->chunks.data + boff, bound, w->raw.data, raw, w->zlevel);
		rc = ZSTD_isError(clen) ? CM_ENOMEM : CM_OK;
	}
	if (rc)
		return rc;
	w->chunks.len += clen;
	w->series_off[idx] = (uint32_t)w->index.len;
	cm_buf *b = &w->index;
	rc = cm_buf_put_uvarint(b, s->nlabels);
	for (size_t j = 0; j < s->nlabels && !rc; j++) {
		rc = cm_buf_put_uvarint(b, sym_id(w, s->labels[j].name));
		if (!rc)
			rc = cm_buf_put_uvarint(b, sym_id(w, s->labels[j].value));
	}
	rc = rc ? rc : cm_buf_put_uvarint(b, off);
	rc = rc ? rc : cm_buf_put_uvarint(b, clen);
	rc = rc ? rc : cm_buf_put_uvarint(b, raw);
	rc = rc ? rc : cm_buf_put_uvarint(b, nx);
	rc = rc ? rc : cm_buf_put_uvarint(b, zz(x[0].t_ms));
	rc = rc ? rc : cm_buf_put_uvarint(b, (uint64_t)x[nx - 1].t_ms - (uint64_t)x[0].t_ms);
	w->samples += nx;
	w->mint = x[0].t_ms < w->mint ? x[0].t_ms : w->mint;
	w->maxt = x[nx - 1].t_ms > w->maxt ? x[nx - 1].t_ms : w->maxt;
	rc = rc ? rc : cm_buf_put_u32le(b, cm_crc32c(0, w->chunks.data + boff, clen));
	return rc || w->chunks.len < CHUNKS_FLUSH ? rc : chunks_flush(w);
}

/* ---- writer: postings ------------------------------------------------------------------------------ */

typedef struct pair {
	uint32_t name, value, series;
} pair;

static int pair_cmp(const void *a, const void *b)
{
	const pair *x = a, *y = b;
	if (x->name != y->name)
		return x->name < y->name ? -1 : 1;
	if (x->value != y->value)
		return x->value < y->value ? -1 : 1;
	return x->series < y->series ? -1 : x->series > y->series;
}

static int postings_put(writer *w, const ts__bw_series *s, uint64_t *ptable, uint64_t *npairs)
{
	size_t total = 0, k = 0, n = w->nkept;
	for (size_t i = 0; i < n; i++)
		total += s[w->kept[i]].nlabels;
	pair *p = malloc((total ? total : 1) * sizeof(*p));
	cm_buf table;
	cm_buf_init(&table);
	if (!p)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const ts__bw_series *si = &s[w->kept[i]];
		for (size_t j = 0; j < si->nlabels; j++)
			p[k++] = (pair){sym_id(w, si->labels[j].name), sym_id(w, si->labels[j].value), (uint32_t)i};
	}
	qsort(p, k, sizeof(*p), pair_cmp);
	int rc = CM_OK;
	*npairs = 0;
	for (size_t i = 0; i < k && !rc;) {
		size_t j = i;
		while (j < k && p[j].name == p[i].name && p[j].value == p[i].value)
			j++;
		rc = cm_buf_put_u32le(&table, p[i].name);
		rc = rc ? rc : cm_buf_put_u32le(&table, p[i].value);
		rc = rc ? rc : cm_buf_put_u32le(&table, (uint32_t)w->index.len);
		rc = rc ? rc : cm_buf_put_uvarint(&w->index, j - i);
		for (size_t q = i; q < j && !rc; q++)
			rc = cm_buf_put_uvarint(&w->index, p[q].series - (q == i ? 0 : p[q - 1].series));
		(*npairs)++;
		i = j;
	}
	*ptable = w->index.len;
	if (!rc)
		rc = cm_buf_append(&w->index, table.data, table.len);
	cm_buf_close(&table);
	free(p);
	return rc;
}

static int index_build(writer *w, const ts__bw_series *s, size_t n)
{
	static const uint8_t head[8] = {'C', 'R', 'L', 'I', 1, 0, 0, 0};
	uint8_t toc[TOC_SIZE] = {0};
	uint64_t ptable = 0, npairs = 0, series_offs;
	int rc = cm_buf_append(&w->index, head, 8);
	uint64_t syms_off = w->index.len;
	rc = rc ? rc : cm_buf_put_uvarint(&w->index, w->nsyms);
	for (size_t i = 0; i < w->nsyms && !rc; i++) {
		size_t len = strlen(w->syms[i]);
		rc = cm_buf_put_uvarint(&w->index, len);
		rc = rc ? rc : cm_buf_append(&w->index, w->syms[i], len + 1);
	}
	for (size_t i = 0; i < n && !rc; i++) {
		const cm_sample *x;
		size_t nx;
		rc = w->fetch(w->ctx, &s[i], &x, &nx);
		if (!rc && nx) {
			w->kept[w->nkept] = i;
			rc = series_put(w, &s[i], x, nx, (uint32_t)w->nkept++);
		}
	}
	series_offs = w->index.len;
	for (size_t i = 0; i < w->nkept && !rc; i++)
		rc = cm_buf_put_u32le(&w->index, w->series_off[i]);
	rc = rc ? rc : postings_put(w, s, &ptable, &npairs);
	if (rc)
		return rc;
	put_u64le(toc, syms_off), put_u64le(toc + 8, w->nkept), put_u64le(toc + 16, series_offs);
	put_u64le(toc + 24, ptable), put_u64le(toc + 32, npairs);
	rc = cm_buf_append(&w->index, toc, TOC_SIZE - 4);
	if (!rc && w->index.len + 4 > UINT32_MAX)
		rc = CM_E2BIG;
	return rc ? rc : cm_buf_put_u32le(&w->index, cm_crc32c(0, w->index.data, w->index.len));
}

static int meta_build(cm_buf *b, const ts__block_meta *m)
{
	uint8_t p[META_SIZE] = {'C', 'R', 'L', 'M', 1, 0, 0, 0};
	put_u64le(p + 8, (uint64_t)m->mint), put_u64le(p + 16, (uint64_t)m->maxt);
	put_u64le(p + 24, m->series), put_u64le(p + 32, m->samples);
	cm_put_u32le(p + 40, m->level), cm_put_u32le(p + 44, m->resolution_ms);
	cm_put_u32le(p + 52, cm_crc32c(0, p, 52));
	return cm_buf_append(b, p, META_SIZE);
}

static void writer_close(writer *w)
{
	free(w->syms);
	free(w->series_off);
	free(w->kept);
	if (w->cfd >= 0)
		close(w->cfd);
	cm_buf_close(&w->chunks);
	cm_buf_close(&w->index);
	cm_buf_close(&w->raw);
	ZSTD_freeCCtx(w->zc);
}

static int writer_files(writer *w, const char *tmp, const ts__block_meta *m, int no_fsync, cm_err *err)
{
	cm_buf meta;
	cm_buf_init(&meta);
	int rc = meta_build(&meta, m);
	if (rc)
		return cm_errf(err, rc, "out of memory");
	rc = chunks_flush(w);
	if (!rc && !no_fsync && fsync(w->cfd) != 0)
		rc = -errno;
	if (rc)
		rc = cm_errf(err, rc, "writing %s/chunks: %s", tmp, cm_strerror(rc));
	rc = rc ? rc : file_put(tmp, "index", &w->index, no_fsync, err);
	rc = rc ? rc : file_put(tmp, "meta", &meta, no_fsync, err);
	cm_buf_close(&meta);
	return rc;
}

static int writer_start(writer *w, const char *tmp, cm_err *err)
{
	static const uint8_t chead[8] = {'C', 'R', 'L', 'C', 1, 0, 0, 0};
	char path[4300];
	if (mkdir(tmp, 0755) != 0)
		return cm_errf(err, -errno, "creating %s: %s", tmp, strerror(errno));
	snprintf(path, sizeof(path), "%s/chunks", tmp);
	w->cfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->cfd < 0)
		return cm_errf(err, -errno, "creating %s: %s", path, strerror(errno));
	return cm_buf_append(&w->chunks, chead, 8) ? cm_errf(err, CM_ENOMEM, "out of memory") : CM_OK;
}

static void block_name(const ts__block_meta *m, const struct timespec *now, char *name, size_t cap)
{
	snprintf(name, cap, "%016llx-%016llx-%u-%u-%llx", (unsigned long long)m->mint ^ (1ull << 63),
		 (unsigned long long)m->maxt ^ (1ull << 63), m->level, m->resolution_ms,
		 (unsigned long long)now->tv_sec * 1000000000ull + (unsigned long long)now->tv_nsec);
}

int ts__block_write(const char *blocks_dir, const ts__bw_series *s, size_t n, ts__bw_fetch fetch, void *ctx,
		    ts__block_meta *m, int no_fsync, char *name, size_t name_cap, cm_err *err)
{
	char tmp[4200], final[4200];
	struct timespec now;
	writer w = {.fetch = fetch, .ctx = ctx, .mint = INT64_MAX, .maxt = INT64_MIN, .cfd = -1,
		    .zlevel = m->level > 1 ? TS__ZSTD_LEVEL_COMPACT : TS__ZSTD_LEVEL};
	clock_gettime(CLOCK_REALTIME, &now); /* blocks of one window written at different times differ */
	snprintf(tmp, sizeof(tmp), "%s/%llx.tmp", blocks_dir,
		 (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec);
	int rc = (w.zc = ZSTD_createCCtx()) && (w.series_off = malloc((n ? n : 1) * sizeof(uint32_t))) &&
			 (w.kept = malloc((n ? n : 1) * sizeof(size_t)))
		     ? CM_OK
		     : cm_errf(err, CM_ENOMEM, "out of memory");
	rc = rc ? rc : writer_start(&w, tmp, err);
	int brc = rc ? rc : syms_build(&w, s, n);
	brc = brc ? brc : index_build(&w, s, n);
	if (!rc && brc)
		rc = cm_errf(err, brc, "building a block: %s", cm_strerror(brc));
	name[0] = 0;
	if (!rc && w.nkept) {
		m->series = w.nkept, m->samples = w.samples, m->mint = w.mint, m->maxt = w.maxt;
		block_name(m, &now, name, name_cap);
		snprintf(final, sizeof(final), "%s/%s", blocks_dir, name);
		rc = writer_files(&w, tmp, m, no_fsync, err);
		if (!rc && rename(tmp, final) != 0)
			rc = cm_errf(err, -errno, "renaming %s: %s", tmp, strerror(errno));
		if (!rc && !no_fsync && (rc = ts__fsync_dir(blocks_dir)))
			cm_errf(err, rc, "syncing %s: %s", blocks_dir, cm_strerror(rc));
	}
	writer_close(&w);
	if (rc || !name[0]) { /* nothing to keep */
		nftw(tmp, rm_tree_one, 16, FTW_DEPTH | FTW_PHYS);
		name[0] = 0;
	}
	return rc;
}

/* ---- reader ---------------------------------------------------------------------------------------- */

static int corrupt(cm_err *err, const char *path, const char *file, uint64_t off, const char *why)
{
	return cm_errf(err, CM_ECORRUPT, "file %s/%s offset %llu: %s", path, file, (unsigned long long)off, why);
}

static int meta_read(ts__block *b, cm_err *err)
{
	char p[4200];
	uint8_t m[META_SIZE];
	snprintf(p, sizeof(p), "%s/meta", b->path);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	int rc = fd < 0 ? -errno : cm_pread_all(fd, m, META_SIZE, 0);
	if (fd >= 0)
		close(fd);
	if (rc == CM_ECORRUPT)
		return corrupt(err, b->path, "meta", 0, "shorter than 56 bytes");
	if (rc)
		return cm_errf(err, rc, "reading %s: %s", p, cm_strerror(rc));
	if (memcmp(m, "CRLM", 4) || cm_get_u32le(m + 4) != 1)
		return corrupt(err, b->path, "meta", 0, "bad magic or version");
	if (cm_crc32c(0, m, 52) != cm_get_u32le(m + 52))
		return corrupt(err, b->path, "meta", 52, "checksum mismatch");
	b->meta = (ts__block_meta){(int64_t)get_u64le(m + 8), (int64_t)get_u64le(m + 16), get_u64le(m + 24),
				   get_u64le(m + 32), cm_get_u32le(m + 40), cm_get_u32le(m + 44)};
	if (b->meta.mint > b->meta.maxt)
		return corrupt(err, b->path, "meta", 8, "mint after maxt");
	return CM_OK;
}

static int index_map(ts__block *b, cm_err *err)
{
	char p[4200];
	struct stat st;
	snprintf(p, sizeof(p), "%s/index", b->path);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		int rc = -errno;
		if (fd >= 0)
			close(fd);
		return cm_errf(err, rc, "opening %s: %s", p, cm_strerror(rc));
	}
	if (st.st_size < 8 + TOC_SIZE || (uint64_t)st.st_size > UINT32_MAX) {
		close(fd);
		return corrupt(err, b->path, "index", 0, "size out of range");
	}
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return cm_errf(err, -errno, "mapping %s: %s", p, strerror(errno));
	b->idx = m;
	b->idx_len = (size_t)st.st_size;
	return CM_OK;
}

static int syms_read(ts__block *b, uint64_t off, cm_err *err)
{
	cm_rd r;
	uint64_t n, len;
	if (off >= b->idx_len)
		return corrupt(err, b->path, "index", off, "symbols offset out of range");
	cm_rd_init(&r, b->idx + off, b->idx_len - TOC_SIZE - off);
	if (cm_rd_uvarint(&r, &n) || n > cm_rd_left(&r) / 2)
		return corrupt(err, b->path, "index", off, "bad symbol count");
	b->syms = malloc((n ? n : 1) * sizeof(*b->syms));
	b->sym_len = malloc((n ? n : 1) * sizeof(*b->sym_len));
	if (!b->syms || !b->sym_len)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *s;
		size_t at = (size_t)(r.p - b->idx);
		if (cm_rd_uvarint(&r, &len) || len > TS__MAX_LABEL_BYTES || cm_rd_bytes(&r, (size_t)len + 1, &s) ||
		    s[len] != 0 || memchr(s, 0, (size_t)len))
			return corrupt(err, b->path, "index", at, "bad symbol");
		b->syms[i] = (const char *)s;
		b->sym_len[i] = (uint32_t)len;
		if (i && strcmp(b->syms[i - 1], b->syms[i]) >= 0)
			return corrupt(err, b->path, "index", at, "symbols out of order");
	}
	b->nsyms = (size_t)n;
	return CM_OK;
}

static int toc_read(ts__block *b, cm_err *err)
{
	const uint8_t *t = b->idx + b->idx_len - TOC_SIZE;
	uint64_t toc_off = b->idx_len - TOC_SIZE;
	if (memcmp(b->idx, "CRLI", 4) || cm_get_u32le(b->idx + 4) != 1)
		return corrupt(err, b->path, "index", 0, "bad magic or version");
	if (cm_crc32c(0, b->idx, b->idx_len - 4) != cm_get_u32le(b->idx + b->idx_len - 4))
		return corrupt(err, b->path, "index", b->idx_len - 4, "checksum mismatch");
	b->nseries = get_u64le(t + 8);
	b->series_offs = get_u64le(t + 16);
	b->ptable = get_u64le(t + 24);
	b->npairs = get_u64le(t + 32);
	if (b->series_offs > toc_off || b->nseries > (toc_off - b->series_offs) / 4)
		return corrupt(err, b->path, "index", toc_off + 8, "series table out of range");
	if (b->ptable > toc_off || b->npairs > (toc_off - b->ptable) / 12)
		return corrupt(err, b->path, "index", toc_off + 24, "postings table out of range");
	return syms_read(b, get_u64le(t), err);
}

int ts__block_open(const char *path, ts__block **out, cm_err *err)
{
	char p[4200];
	struct stat st;
	ts__block *b = calloc(1, sizeof(*b));
	if (!b || !(b->path = strdup(path))) {
		free(b);
		return cm_errf(err, CM_ENOMEM, "out of memory");
	}
	b->chunks_fd = -1;
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	b->uid = 0xcbf29ce484222325ULL;
	for (; *name; name++)
		b->uid = (b->uid ^ (uint8_t)*name) * 0x100000001b3ULL;
	int rc = meta_read(b, err);
	rc = rc ? rc : index_map(b, err);
	rc = rc ? rc : toc_read(b, err);
	if (!rc) {
		snprintf(p, sizeof(p), "%s/chunks", path);
		b->chunks_fd = open(p, O_RDONLY | O_CLOEXEC);
		if (b->chunks_fd < 0 || fstat(b->chunks_fd, &st) != 0)
			rc = cm_errf(err, -errno, "opening %s: %s", p, strerror(errno));
		else if (st.st_size < 8 || (b->chunks_size = (uint64_t)st.st_size, 0))
			rc = corrupt(err, path, "chunks", 0, "shorter than its header");
		b->bytes = b->chunks_size + b->idx_len + META_SIZE;
	}
	if (rc) {
		ts__block_close(b);
		return rc;
	}
	*out = b;
	return CM_OK;
}

void ts__block_close(ts__block *b)
{
	if (!b)
		return;
	if (b->idx)
		munmap((void *)b->idx, b->idx_len);
	if (b->chunks_fd >= 0)
		close(b->chunks_fd);
	free(b->syms);
	free(b->sym_len);
	free(b->path);
	free(b);
}

const ts__block_meta *ts__block_meta_get(const ts__block *b) { return &b->meta; }
const char *ts__block_path(const ts__block *b) { return b->path; }
uint64_t ts__block_nseries(const ts__block *b) { return b->nseries; }
uint64_t ts__block_bytes(const ts__block *b) { return b->bytes; }
uint64_t ts__block_uid(const ts__block *b) { return b->uid; }

/* ---- reader: series -------------------------------------------------------------------------------- */

static int rd_sym(ts__block *b, cm_rd *r, const char **out)
{
	uint64_t v;
	if (cm_rd_uvarint(r, &v) || v >= b->nsyms)
		return CM_ECORRUPT;
	*out = b->syms[v];
	return CM_OK;
}

int ts__block_series(ts__block *b, uint64_t i, cm_label *labels, size_t *nlabels, ts__bseries *info, cm_err *err)
{
	cm_rd r;
	uint64_t n, off, v[6];
	uint32_t crc;
	if (i >= b->nseries)
		return cm_errf(err, CM_EINVAL, "series %llu out of range", (unsigned long long)i);
	off = cm_get_u32le(b->idx + b->series_offs + 4 * i);
	if (off < 8 || off >= b->idx_len - TOC_SIZE)
		return corrupt(err, b->path, "index", b->series_offs + 4 * i, "series offset out of range");
	cm_rd_init(&r, b->idx + off, b->idx_len - TOC_SIZE - off);
	if (cm_rd_uvarint(&r, &n) || n == 0 || n > TS__MAX_LABELS)
		return corrupt(err, b->path, "index", off, "bad label count");
	for (size_t j = 0; j < n; j++)
		if (rd_sym(b, &r, &labels[j].name) || rd_sym(b, &r, &labels[j].value))
			return corrupt(err, b->path, "index", off, "bad label symbol");
	for (int j = 0; j < 6; j++)
		if (cm_rd_uvarint(&r, &v[j]))
			return corrupt(err, b->path, "index", off, "truncated series entry");
	if (cm_rd_u32le(&r, &crc) || v[0] < 8 || v[0] > b->chunks_size || v[1] > b->chunks_size - v[0] ||
	    v[2] > MAX_RAW || v[3] == 0 || v[3] > UINT32_MAX)
		return corrupt(err, b->path, "index", off, "bad chunk reference");
	*nlabels = (size_t)n;
	*info = (ts__bseries){v[0], (uint32_t)v[1], (uint32_t)v[2], (uint32_t)v[3], unzz(v[4]),
			      (int64_t)((uint64_t)unzz(v[4]) + v[5]), crc};
	return CM_OK;
}

static int grow_bytes(uint8_t **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return CM_OK;
	uint8_t *q = realloc(*p, need);
	if (!q)
		return CM_ENOMEM;
	*p = q, *cap = need;
	return CM_OK;
}

void ts__rdbuf_free(ts__rdbuf *rb)
{
	ZSTD_freeDCtx(rb->dz);
	free(rb->z);
	free(rb->raw);
	*rb = (ts__rdbuf){0};
}

/* Reads, checks and decompresses the frame of a series into rb->raw. */
static int frame_read(ts__block *b, const ts__bseries *info, ts__rdbuf *rb, cm_err *err)
{
	int rc = grow_bytes(&rb->z, &rb->zcap, info->clen ? info->clen : 1);
	rc = rc ? rc : grow_bytes(&rb->raw, &rb->rawcap, info->rawlen ? info->rawlen : 1);
	if (!rc && !rb->dz && !(rb->dz = ZSTD_createDCtx()))
		rc = CM_ENOMEM;
	if (rc)
		return cm_errf(err, rc, "out of memory");
	if ((rc = cm_pread_all(b->chunks_fd, rb->z, info->clen, info->off)))
		return cm_errf(err, rc, "reading %s/chunks: %s", b->path, cm_strerror(rc));
	if (cm_crc32c(0, rb->z, info->clen) != info->crc)
		return corrupt(err, b->path, "chunks", info->off, "chunk checksum mismatch");
	size_t got = ZSTD_decompressDCtx(rb->dz, rb->raw, info->rawlen, rb->z, info->clen);
	if (ZSTD_isError(got) || got != info->rawlen)
		return corrupt(err, b->path, "chunks", info->off, "bad zstd frame");
	return CM_OK;
}

int ts__block_samples(ts__block *b, const ts__bseries *info, ts__rdbuf *rb, cm_sample **buf, size_t *len,
		      size_t *cap, cm_err *err)
{
	ts__rdbuf tmp = {0};
	ts__rdbuf *r = rb ? rb : &tmp;
	int rc = frame_read(b, info, r, err);
	if (!rc && *len + info->n > *cap) {
		size_t ncap = (*len + info->n) * 2;
		cm_sample *p = realloc(*buf, ncap * sizeof(*p));
		rc = p ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
		if (p)
			*buf = p, *cap = ncap;
	}
	if (!rc && ts__frame_decode(r->raw, info->rawlen, info->n, *buf + *len))
		rc = corrupt(err, b->path, "chunks", info->off, "bad sample frame");
	else if (!rc)
		*len += info->n;
	if (!rb)
		ts__rdbuf_free(&tmp);
	return rc;
}

/* ---- reader: postings ------------------------------------------------------------------------------ */

/* First postings-table entry whose name symbol is >= name. */
static uint64_t ptable_lower(const ts__block *b, uint32_t name)
{
	uint64_t lo = 0, hi = b->npairs;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (cm_get_u32le(b->idx + b->ptable + 12 * mid) < name)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int sym_find(const ts__block *b, const char *s, uint32_t *out)
{
	size_t lo = 0, hi = b->nsyms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(b->syms[mid], s);
		if (c == 0) {
			*out = (uint32_t)mid;
			return 1;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

int ts__block_label_values(ts__block *b, const char *name, ts_value_fn fn, void *ctx, cm_err *err)
{
	uint32_t sym;
	if (!sym_find(b, name, &sym))
		return CM_OK;
	for (uint64_t i = ptable_lower(b, sym); i < b->npairs; i++) {
		const uint8_t *e = b->idx + b->ptable + 12 * i;
		uint32_t v = cm_get_u32le(e + 4);
		if (cm_get_u32le(e) != sym)
			break;
		if (v >= b->nsyms)
			return corrupt(err, b->path, "index", b->ptable + 12 * i, "bad value symbol");
		int rc = fn(ctx, b->syms[v]);
		if (rc)
			return rc;
	}
	return CM_OK;
}

/* ORs the postings list at off into bits. */
static int postings_or(ts__block *b, uint64_t off, uint64_t *bits, cm_err *err)
{
	cm_rd r;
	uint64_t n, id = 0, d;
	if (off < 8 || off >= b->idx_len - TOC_SIZE)
		return corrupt(err, b->path, "index", off, "postings offset out of range");
	cm_rd_init(&r, b->idx + off, b->idx_len - TOC_SIZE - off);
	if (cm_rd_uvarint(&r, &n) || n == 0 || n > b->nseries)
		return corrupt(err, b->path, "index", off, "bad postings count");
	for (uint64_t i = 0; i < n; i++) {
		if (cm_rd_uvarint(&r, &d) || (i && d == 0) || d >= b->nseries)
			return corrupt(err, b->path, "index", off, "bad postings entry");
		id += d;
		if (id >= b->nseries)
			return corrupt(err, b->path, "index", off, "postings entry out of range");
		bits[id / 64] |= 1ull << (id % 64);
	}
	return CM_OK;
}

/* Sets bits to the series matching one matcher: the union of the matching (name, value) lists, or, when
 * the matcher accepts the empty value (a missing label), everything except the non-matching lists. */
static int matcher_bits(ts__block *b, const ts_matcher *m, uint64_t *bits, size_t words, cm_err *err)
{
	uint32_t name;
	int empty_ok = ts_matcher_matches(m, "");
	memset(bits, 0, words * 8);
	if (sym_find(b, m->name, &name)) {
		for (uint64_t i = ptable_lower(b, name); i < b->npairs; i++) {
			const uint8_t *e = b->idx + b->ptable + 12 * i;
			uint32_t v = cm_get_u32le(e + 4);
			if (cm_get_u32le(e) != name)
				break;
			if (v >= b->nsyms)
				return corrupt(err, b->path, "index", b->ptable + 12 * i, "bad value symbol");
			if (ts_matcher_matches(m, b->syms[v]) != empty_ok) {
				int rc = postings_or(b, cm_get_u32le(e + 8), bits, err);
				if (rc)
					return rc;
			}
		}
	}
	if (empty_ok)
		for (size_t w = 0; w < words; w++)
			bits[w] = ~bits[w];
	return CM_OK;
}

int ts__block_select(ts__block *b, const ts_matcher *m, size_t nm, uint64_t **out, size_t *nout, cm_err *err)
{
	size_t words = (size_t)(b->nseries + 63) / 64, n = 0;
	uint64_t *all = malloc((words ? words : 1) * 8), *one = malloc((words ? words : 1) * 8);
	uint64_t *ids = NULL;
	int rc = all && one ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
	if (!rc)
		memset(all, 0xff, words * 8);
	for (size_t i = 0; i < nm && !rc; i++) {
		rc = matcher_bits(b, &m[i], one, words, err);
		for (size_t w = 0; w < words && !rc; w++)
			all[w] &= one[w];
	}
	for (size_t w = 0; w < words && !rc; w++)
		n += (size_t)__builtin_popcountll(all[w]);
	if (!rc && !(ids = malloc((n ? n : 1) * sizeof(*ids))))
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	n = 0;
	for (uint64_t i = 0; !rc && i < b->nseries; i++)
		if (all[i / 64] >> (i % 64) & 1)
			ids[n++] = i;
	free(all);
	free(one);
	if (rc) {
		free(ids);
		return rc;
	}
	*out = ids;
	*nout = n;
	return CM_OK;
}
