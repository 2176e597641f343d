/* fuzz_ts_import.c -- libFuzzer harness for the bulk-import parser (aggregator/ag_import.c).
 *
 * The body of POST /api/v1/import/prometheus is untrusted bytes streamed in pieces. The first input byte
 * picks where the rest is split into two uploads (so lines cross piece boundaries); the bytes go through
 * the real streaming import into a real store (a mkdtemp directory, fsync off), and every line is also
 * handed to the two parser entry points on an exact-size copy, so ASan sees any read past a line. A
 * parsed series must parse to at least its name, and the store must hold no more samples than lines.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* Runs both parser entry points on each line, each on its own exact-size heap copy. */
static size_t parse_lines(const char *p, size_t n)
{
	size_t lines = 0;
	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t len = nl ? (size_t)(nl - p) : n;
		char *copy = malloc(len ? len : 1), *buf = malloc(len + 16);
		cm_label labels[300];
		size_t key, nl2;
		cm_sample x;
		cm_err err;
		if (!copy || !buf)
			abort();
		memcpy(copy, p, len);
		if (ag__prom_line_split(copy, len, 0, &key, &x, &err) == 0 && key <= len &&
		    ag__prom_series_parse(copy, key, labels, 300, &nl2, buf, &err) == 0 && nl2 == 0)
			abort();
		free(copy);
		free(buf);
		lines++;
		p += len + (nl != NULL), n -= len + (nl != NULL);
	}
	return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char dir[] = "/tmp/fuzz_ts_import-XXXXXX";
	ts_opts opts = {.no_fsync = 1};
	ag__metrics m = {0};
	ag__importer *imp;
	ts_db *db;
	ts_stats st;
	if (size == 0 || !mkdtemp(dir))
		return 0;
	size_t cut = data[0] < size - 1 ? data[0] : size - 1;
	const char *body = (const char *)data + 1;
	size_t blen = size - 1;
	size_t lines = parse_lines(body, blen);
	if (ts_open(dir, &opts, &db, NULL, NULL) || ag__importer_create(db, &m, NULL, 1, &imp, NULL))
		abort();
	ag__import *im = ag__import_begin(imp, NULL);
	ag__resp resp = {.status = 200};
	cm_buf_init(&resp.body);
	char *a = malloc(cut ? cut : 1), *b = malloc(blen - cut ? blen - cut : 1);
	if (!im || !a || !b)
		abort();
	memcpy(a, body, cut);
	memcpy(b, body + cut, blen - cut);
	ag__import_feed(im, a, cut);
	ag__import_feed(im, b, blen - cut);
	ag__import_end(im, &resp);
	ag__import_free(im);
	ts_get_stats(db, &st);
	if (st.samples > lines || (resp.status != 204 && resp.status != 400))
		abort();
	free(a);
	free(b);
	cm_buf_close(&resp.body);
	ag__importer_destroy(imp);
	ts_close(db);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
