/* fuzz_ls_logql.c -- libFuzzer harness: the LogQL parser on arbitrary query text, and every query that
 * parses run over a small store of JSON, logfmt and plain lines (pipeline stages, windows, limits).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static ls_store *g_store;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

static void cleanup(void)
{
	ls_store_close(g_store);
	nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static ls_store *store(void)
{
	if (g_store)
		return g_store;
	snprintf(g_dir, sizeof(g_dir), "/tmp/fuzz_ls_logql.XXXXXX");
	if (!mkdtemp(g_dir))
		abort();
	ls_store_opts o = {.dir = g_dir, .no_fsync = 1};
	cm_err err;
	if (ls_store_open(&o, &g_store, &err))
		abort();
	atexit(cleanup);
	static const char *lines[] = {"{\"level\":\"error\",\"a\":{\"b\":{\"c\":1}},\"n\":1.5,\"t\":true,\"x\":[1,{}]}",
				      "level=info msg=\"a \\\"quoted\\\" b\" k= dur=12ms bare", "plain text line",
				      "{\"broken\": ", "msg=\"unterminated"};
	cm_label l[2] = {{"app", "web"}, {"level", "info"}};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		ls_entry e = {(int64_t)(i + 1) * 1000000000, lines[i], strlen(lines[i])};
		ls_push_stream st = {l, 2, &e, 1};
		if (ls_store_append(g_store, NULL, 0, &st, 1, &err))
			abort();
	}
	return g_store;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	ls_query *q;
	cm_err err;
	if (ls_logql_parse(s, &q, &err) == 0) {
		cm_label l[1] = {{"app", "web"}};
		ls_logql_matches(q, l, 1);
		ls_qlimits lim = {.limit = 10, .max_scanned = 100, .max_series = 10, .max_points = 100};
		ls_qresult r;
		if (ls_logql_exec(store(), q, 0, 10000000000LL, 1000000000LL, &lim, &r, &err) == 0)
			ls_qresult_close(&r);
		ls_logql_free(q);
	}
	free(s);
	return 0;
}
