/* fuzz_promql.c -- libFuzzer harness: PromQL parsing and evaluation, and the query-parameter parsers
 * (time, duration, form body), on arbitrary bytes as they arrive in HTTP requests.
 *
 * Every input that parses is evaluated as an instant query and as a small range query against a tiny
 * tsdb written once per process (counters with a reset, a histogram, a stale marker, NaN and infinities),
 * with a short timeout and a small sample limit, so hangs and blow-ups show as guard errors, not time.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void remove_dir(void)
{
	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void add(ts_db *db, const char *name, const char *k, const char *v, const char *k2, const char *v2, int kind)
{
	cm_label l[3] = {{"__name__", name}, {k, v}, {k2, v2}};
	cm_sample s[21];
	uint64_t stale_bits = 0x7ff0000000000002ULL;
	double stale;
	memcpy(&stale, &stale_bits, 8);
	for (int i = 0; i <= 20; i++) {
		double x = kind == 0 ? (i < 12 ? i * 3.0 : i - 12.0) : kind == 1 ? sin(i) : kind == 2 ? (i % 5 ? i : NAN)
			   : (i % 7 ? i * 0.5 : INFINITY);
		s[i] = (cm_sample){i * 30000, i == 15 && kind == 1 ? stale : x};
	}
	cm_series se = {l, k2 ? 3 : 2, s, 21};
	cm_err err;
	ts_append(db, &se, 1, &err);
}

/* The tiny tsdb, written on first use and kept for the process (removed at exit). */
static ts_db *tiny_db(void)
{
	static ts_db *db;
	if (db)
		return db;
	snprintf(dir, sizeof(dir), "/tmp/fuzz_promql.XXXXXX");
	ts_opts o = {.no_fsync = 1, .manual_cut = 1};
	cm_err err;
	if (!mkdtemp(dir) || ts_open(dir, &o, &db, NULL, &err))
		abort();
	atexit(remove_dir);
	add(db, "up", "job", "a", NULL, NULL, 1);
	add(db, "up", "job", "b", "instance", "x:1", 3);
	add(db, "reqs_total", "job", "a", "code", "200", 0);
	add(db, "reqs_total", "job", "a", "code", "500", 2);
	static const char *le[] = {"0.1", "1", "10", "+Inf"};
	for (int i = 0; i < 4; i++)
		add(db, "lat_bucket", "job", "a", "le", le[i], 0);
	return db;
}

static void eval(ag__pquery *q)
{
	static const ag__pql_opts o = {.lookback_ms = 300000, .timeout_ms = 2000, .max_samples = 200000,
				       .subquery_step_ms = 60000};
	cm_buf b;
	cm_err err;
	int kind;
	cm_buf_init(&b);
	ag__pql_exec(tiny_db(), q, 300000, 300000, 1, 1, &o, &b, &kind, &err);
	b.len = 0;
	ag__pql_exec(tiny_db(), q, 0, 600000, 60000, 0, &o, &b, &kind, &err);
	cm_buf_close(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	cm_arena a;
	cm_arena_init(&a, 4 << 20);
	ag__selector sel;
	cm_err err;
	if (ag__selector_parse(s, &a, &sel, &err) == 0) {
		for (size_t i = 0; i < sel.nmatchers; i++)
			ts_matcher_matches(&sel.matchers[i], s);
		ag__selector_close(&sel);
	}
	ag__pquery q;
	if (ag__pql_parse(s, &a, &q, &err) == 0) {
		eval(&q);
		ag__pql_close(&q);
	}
	int64_t v;
	cm_parse_time_ms(s, &v);
	cm_parse_duration_ms(s, &v);
	ag__req req = {.arena = &a};
	ag__parse_form(&req, (const char *)data, size);
	ag__param_get(&req, "query");
	cm_arena_close(&a);
	free(s);
	return 0;
}
