/* fuzz_papi.c -- libFuzzer harness: the Prometheus API handlers of ag_papi.c on arbitrary requests.
 *
 * Input: a path line (the URL as libmicrohttpd hands it over), then the form body (parameters such as
 * match[], start, end, limit, metric). Each input runs through ag__parse_form and ag__papi_handle over a
 * small real store (a mkdtemp directory, fsync off, removed at exit), with the request arena as in a
 * server; the fuzzer finds crashes, leaks and out-of-bounds reads in the parameter and path parsers, the
 * set collection and the answer writers.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static ts_db *g_db;

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(p);
}

static void cleanup(void)
{
	ts_close(g_db);
	nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static ts_db *db(void)
{
	if (g_db)
		return g_db;
	snprintf(g_dir, sizeof(g_dir), "/tmp/fuzz_papi.XXXXXX");
	ts_opts o = {.no_fsync = 1, .manual_cut = 1};
	if (!mkdtemp(g_dir) || ts_open(g_dir, &o, &g_db, NULL, NULL))
		abort();
	atexit(cleanup);
	int64_t now = cm_now_ms();
	cm_label a[] = {{"__name__", "reqs_total"}, {"code", "200"}, {"job", "api\n\"x\""}};
	cm_label b[] = {{"__name__", "lat_bucket"}, {"job", "api"}, {"le", "+Inf"}};
	cm_label c[] = {{"__name__", "rpc"}, {"quantile", "0.9"}};
	cm_sample s1[] = {{now - 20000, 1}, {now - 10000, -0.0}};
	cm_sample s2[] = {{1000, 7}, {now - 1000, 1e300}};
	cm_sample s3[] = {{now - 5000, 0.000012}};
	cm_series ser[] = {{a, 3, s1, 2}, {b, 3, s2, 2}, {c, 2, s3, 1}};
	if (ts_append(g_db, ser, 3, NULL))
		abort();
	return g_db;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t plen = nl ? (size_t)(nl - data) : size;
	cm_arena a;
	cm_arena_init(&a, 1 << 22);
	char *url = cm_arena_strndup(&a, (const char *)data, plen);
	ag__req req = {.method = "GET", .url = url ? url : "/", .arena = &a};
	ag__metrics m = {.start_ms = 0};
	ag_config cfg = {.listen = "127.0.0.1:0", .threads = 1};
	ag__papi p = {.db = db(), .metrics = &m, .cfg = &cfg, .lookback_ms = 300000};
	ag__resp resp = {.status = 200};
	cm_buf_init(&resp.body);
	if (url && !ag__parse_form(&req, nl ? (const char *)nl + 1 : "", nl ? size - plen - 1 : 0))
		ag__papi_handle(&p, &req, &resp);
	size_t v;
	ag__papi_limit(url, &v);
	cm_buf_close(&resp.body);
	cm_arena_close(&a);
	return 0;
}
