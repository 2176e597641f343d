/* fuzz_ts_block.c -- libFuzzer harness for block open, index lookups and chunk decoding (tsdb/ts_block.c,
 * ts_chunk.c) on damaged files.
 *
 * On first use the harness writes a small valid block (three series with a few samples each) and keeps
 * its three files in memory. Each input's first byte picks what the rest becomes: 0 = the index file,
 * 1 = the chunks file, 2 = the meta file, 3 = XORed over the valid index from its start, 4 = XORed over
 * the valid chunks, 5 = a raw Gorilla chunk decoded directly (the second byte gives the sample count).
 * The other files stay valid. The block is opened; when that succeeds every series is selected with
 * four matchers and read. Nothing may crash, hang or read out of bounds; results are not checked.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ts_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cm_buf files[3]; /* index, chunks, meta of the template block */
static const char *fnames[3] = {"index", "chunks", "meta"};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static cm_sample tmpl_x[3][4] = {{{1000, 1}, {2000, 2}, {3000, 2}, {4500, 2.5}},
				 {{1000, 0}, {11000, NAN}, {21000, 1e300}, {31000, -1}},
				 {{-5, 7}, {0, 7}, {5, 7}, {10, 7}}};

static int tmpl_fetch(void *ctx, const ts__bw_series *s, const cm_sample **x, size_t *n)
{
	(void)ctx;
	*x = s->src;
	*n = 4;
	return 0;
}

static void slurp(const char *dir, int i)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, fnames[i]);
	FILE *f = fopen(path, "rb");
	uint8_t b[4096];
	size_t n;
	if (!f)
		abort();
	cm_buf_init(&files[i]);
	while ((n = fread(b, 1, sizeof(b), f)) > 0)
		cm_buf_append(&files[i], b, n);
	fclose(f);
}

static void make_template(void)
{
	static cm_label l[3][2] = {{{"__name__", "a"}, {"job", "x"}}, {{"__name__", "a"}, {"job", "y"}},
				   {{"__name__", "b"}, {"zone", "z"}}};
	ts__bw_series s[3];
	ts__block_meta m = {.level = 1};
	char dir[] = "/tmp/fuzz_ts_block-tmpl-XXXXXX", name[128], path[400];
	if (!mkdtemp(dir))
		abort();
	for (int i = 0; i < 3; i++)
		s[i] = (ts__bw_series){l[i], 2, tmpl_x[i]};
	if (ts__block_write(dir, s, 3, tmpl_fetch, NULL, &m, 1, name, sizeof(name), NULL))
		abort();
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	for (int i = 0; i < 3; i++)
		slurp(path, i);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void put(const char *dir, int i, const uint8_t *p, size_t n)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, fnames[i]);
	FILE *f = fopen(path, "wb");
	if (!f || (n && fwrite(p, 1, n, f) != n))
		abort();
	fclose(f);
}

static void read_all(ts__block *b)
{
	static const char *res[] = {"a", "x|y", ".*", "b"};
	for (int k = 0; k < 4; k++) {
		ts_matcher m;
		uint64_t *ids = NULL;
		size_t n = 0;
		if (ts_matcher_init(&m, (ts_match_type)k, k < 2 ? "__name__" : "job", res[k], NULL))
			continue;
		if (ts__block_select(b, &m, 1, &ids, &n, NULL) == 0) {
			for (size_t i = 0; i < n; i++) {
				cm_label l[TS__MAX_LABELS];
				size_t nl, len = 0, cap = 0;
				ts__bseries info;
				cm_sample *x = NULL;
				if (ts__block_series(b, ids[i], l, &nl, &info, NULL) == 0)
					ts__block_samples(b, &info, NULL, &x, &len, &cap, NULL);
				free(x);
			}
		}
		free(ids);
		ts_matcher_close(&m);
	}
}

static void decode_raw(const uint8_t *p, size_t n)
{
	ts__dec d;
	cm_sample s;
	if (n < 1)
		return;
	uint8_t *copy = malloc(n - 1 ? n - 1 : 1);
	if (!copy)
		abort();
	memcpy(copy, p + 1, n - 1);
	ts__dec_init(&d, copy, n - 1, p[0]);
	while (ts__dec_next(&d, &s) == 1)
		;
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[] = "/tmp/fuzz_ts_block-XXXXXX";
	ts__block *b;
	if (!files[0].len)
		make_template();
	if (size == 0)
		return 0;
	uint8_t mode = data[0] % 6;
	data++, size--;
	if (mode == 5) {
		decode_raw(data, size);
		return 0;
	}
	if (!mkdtemp(dir))
		abort();
	for (int i = 0; i < 3; i++) {
		if (mode == i) {
			put(dir, i, data, size);
			continue;
		}
		cm_buf c;
		cm_buf_init(&c);
		cm_buf_append(&c, files[i].data, files[i].len);
		for (size_t j = 0; (mode == 3 + i) && j < size && j < c.len; j++)
			c.data[j] ^= data[j];
		put(dir, i, c.data, c.len);
		cm_buf_close(&c);
	}
	if (ts__block_open(dir, &b, NULL) == 0) {
		read_all(b);
		ts__block_close(b);
	}
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
