/* fuzz_wal.c -- libFuzzer harness for WAL replay (tsdb/ts_wal.c): segment files are untrusted bytes.
 *
 * The first input byte picks how the rest becomes <dir>/wal/; modulo 8, values 4-7 write version 2
 * segment headers (series and samples-by-id records) and 0-3 version 1 ones, and modulo 4: 0 = one segment, a valid header followed
 * by the bytes as the record stream; 1 = one segment, the bytes raw (header included); 2 = two
 * segments with valid headers, split where the second byte says (with bit 3 of the first byte set and
 * version 2, the second is a checkpoint, version 3, which supersedes the first); 3 = like 0, but with the CRC of every
 * record whose length fits recomputed, so mutations reach the payload decoder. The harness opens the store, selects
 * everything (plain and through a regex matcher), appends one probe sample and reopens: the second
 * replay must find nothing to repair and exactly what the first left plus the probe, or it aborts.
 * Each input gets its own mkdtemp directory, removed afterwards.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t seg_header[8] = {'C', 'R', 'L', 'W', 1, 0, 0, 0};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void put_file(const char *dir, unsigned n, int header, const uint8_t *p, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/wal/%08u", dir, n);
	FILE *f = fopen(path, "wb");
	if (!f)
		abort();
	if ((header && fwrite(seg_header, 1, sizeof(seg_header), f) != sizeof(seg_header)) ||
	    (len && fwrite(p, 1, len, f) != len))
		abort();
	fclose(f);
}

/* Rewrites the CRC field of each record in the stream whose header and payload fit. */
static void fix_crcs(uint8_t *p, size_t n)
{
	size_t off = 0;
	while (n - off >= 9) {
		uint32_t len = cm_get_u32le(p + off);
		if (len > n - off - 9)
			break;
		cm_put_u32le(p + off + 4, cm_crc32c(0, p + off + 8, (size_t)len + 1));
		off += 9 + (size_t)len;
	}
}

static void put_segments(const char *dir, const uint8_t *data, size_t size)
{
	uint8_t mode = size ? data[0] % 8 : 0, ckpt = size && mode >= 4 && (data[0] & 8);
	seg_header[4] = mode >= 4 ? 2 : 1; /* WAL format version */
	mode %= 4;
	data += size != 0, size -= size != 0;
	if (mode == 0) {
		put_file(dir, 1, 1, data, size);
	} else if (mode == 3) {
		uint8_t *copy = malloc(size ? size : 1);
		if (!copy)
			abort();
		memcpy(copy, data, size);
		fix_crcs(copy, size);
		put_file(dir, 1, 1, copy, size);
		free(copy);
	} else if (mode == 1) {
		put_file(dir, 1, 0, data, size);
	} else {
		size_t cut = size ? data[0] : 0;
		data += size != 0, size -= size != 0;
		cut = cut < size ? cut : size;
		put_file(dir, 1, 1, data, cut);
		seg_header[4] = ckpt ? 3 : seg_header[4];
		put_file(dir, 2, 1, data + cut, size - cut);
	}
}

static int count(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t ns)
{
	(void)l, (void)nl, (void)s;
	*(size_t *)ctx += ns;
	return 0;
}

static void probe(ts_db *db)
{
	ts_matcher m;
	size_t n = 0;
	ts_select(db, NULL, 0, INT64_MIN, INT64_MAX, count, &n);
	if (ts_matcher_init(&m, TS_MATCH_RE, "__name__", "a.*|b+", NULL) == 0)
		ts_select(db, &m, 1, -1000, 1000, count, &n);
	ts_matcher_close(&m);
	cm_label l = {"__name__", "fuzz_probe_series"};
	cm_sample smp = {12345, 1.0};
	cm_series ser = {&l, 1, &smp, 1};
	if (ts_append(db, &ser, 1, NULL) != 0)
		abort();
}

/* Opens twice: the second replay must see a clean WAL holding the first state plus the probe. */
static void check(const char *dir)
{
	ts_opts opts = {.no_fsync = 1, .manual_cut = 1}; /* no background cut between the two replays */
	ts_open_report r1, r2;
	ts_stats s1, s2;
	ts_db *db;
	if (ts_open(dir, &opts, &db, &r1, NULL) != 0)
		return;
	probe(db);
	ts_get_stats(db, &s1);
	ts_close(db);
	if (ts_open(dir, &opts, &db, &r2, NULL) != 0)
		abort();
	ts_get_stats(db, &s2);
	ts_close(db);
	if (r2.truncated_bytes || r2.truncated_segments || r2.records != r1.records + 1 || s2.series != s1.series ||
	    s2.samples != s1.samples)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[] = "/tmp/fuzz_wal-XXXXXX", wal[64];
	if (!mkdtemp(dir))
		abort();
	snprintf(wal, sizeof(wal), "%s/wal", dir);
	if (mkdir(wal, 0755) != 0)
		abort();
	put_segments(dir, data, size);
	check(dir);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
