/* test_remote_write.c -- POST /api/v1/write, the remote write 1.0 receiver, against a real Prometheus.
 *
 * Refusals first: no or wrong token (401), a bad snappy block, a body that is not a WriteRequest,
 * broken label rules (400 with a message), a foreign Content-Encoding (415), a body over
 * --max-push-bytes (413); the aggregator keeps serving after each. A hand-encoded request with a stale
 * marker is stored as sent (checked in the tsdb itself after the aggregator stopped: the NaN's bits).
 * Then the real Prometheus 2.42 from Debian scrapes the aggregator's own /metrics every second and
 * remote-writes to it with the bearer token: every sample Prometheus has of two series that change at
 * every scrape (a counter of HTTP requests and scrape_duration_seconds) must be answered by corral's
 * query API at its timestamp with its value, within 15 s of the scrape (issue 6, acceptance 3a).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"
#include "ts.h"

#define TOKEN "rw-test-token"
#define STALE_BITS 0x7ff0000000000002ULL
#define SCRAPES 8
#define MAX_SAMPLES 256

typedef struct fixture {
	char dir[256], token[300], data[300], url[64];
	itest_proc agg;
	int64_t t0;
} fixture;

static fixture *F;

/* ---- a remote write request, encoded by hand (protobuf field by field, then snappy) ------------------- */

static void pb_tag(cm_buf *b, unsigned field, unsigned wire) { cm_buf_put_uvarint(b, field << 3 | wire); }

static void pb_bytes(cm_buf *b, unsigned field, const void *p, size_t n)
{
	pb_tag(b, field, 2);
	cm_buf_put_uvarint(b, n);
	cm_buf_append(b, p, n);
}

/* One TimeSeries: labels as "name", "value" pairs (NULL-terminated), samples. */
static void pb_series(cm_buf *wr, const char *const *labels, const cm_sample *x, size_t n)
{
	cm_buf ts, one;
	cm_buf_init(&ts), cm_buf_init(&one);
	for (size_t i = 0; labels[i]; i += 2) {
		one.len = 0;
		pb_bytes(&one, 1, labels[i], strlen(labels[i]));
		pb_bytes(&one, 2, labels[i + 1], strlen(labels[i + 1]));
		pb_bytes(&ts, 1, one.data, one.len);
	}
	for (size_t i = 0; i < n; i++) {
		one.len = 0;
		pb_tag(&one, 1, 1);
		cm_buf_put_f64le(&one, x[i].v);
		pb_tag(&one, 2, 0);
		cm_buf_put_uvarint(&one, (uint64_t)x[i].t_ms);
		pb_bytes(&ts, 2, one.data, one.len);
	}
	pb_bytes(wr, 1, ts.data, ts.len);
	cm_buf_close(&ts), cm_buf_close(&one);
}

static void snappy_of(const cm_buf *raw, cm_buf *out)
{
	size_t n = snappy_max_compressed_length(raw->len);
	out->len = 0;
	assert_int_equal(cm_buf_reserve(out, n), 0);
	assert_int_equal(snappy_compress((const char *)raw->data, raw->len, (char *)out->data, &n), SNAPPY_OK);
	out->len = n;
}

static long rw_post(const void *body, size_t len, const char *token, const char *encoding, cm_buf *reply)
{
	char url[128], auth[128], enc[128];
	snprintf(url, sizeof(url), "%s/api/v1/write", F->url);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
	snprintf(enc, sizeof(enc), "Content-Encoding: %s", encoding);
	const char *h[] = {enc, "Content-Type: application/x-protobuf", "X-Prometheus-Remote-Write-Version: 0.1.0",
			   auth, NULL};
	if (!token)
		h[3] = NULL;
	return itest_http("POST", url, h, body, len, reply);
}

/* Posts the snappy form of raw and expects status (and words in the answer, when given). */
static void expect(const cm_buf *raw, int compress, const char *token, const char *enc, long status,
		   const char *words)
{
	cm_buf body, reply;
	cm_buf_init(&body), cm_buf_init(&reply);
	if (compress)
		snappy_of(raw, &body);
	else
		cm_buf_append(&body, raw->data, raw->len);
	long st = rw_post(body.data, body.len, token, enc, &reply);
	if (st != status || (words && (!reply.data || !strstr((char *)reply.data, words))))
		fprintf(stderr, "HTTP %ld: %.*s (wanted %ld with '%s')\n", st, (int)reply.len,
			reply.data ? (char *)reply.data : "", status, words ? words : "");
	assert_int_equal(st, status);
	if (words)
		assert_non_null(strstr((char *)reply.data, words));
	cm_buf_close(&body), cm_buf_close(&reply);
	char health[128];
	snprintf(health, sizeof(health), "%s/healthz", F->url);
	assert_int_equal(itest_http("GET", health, NULL, NULL, 0, NULL), 200);
}

static void test_refusals(void **state)
{
	(void)state;
	cm_buf raw;
	cm_buf_init(&raw);
	cm_sample x = {F->t0, 1};
	const char *ok[] = {"__name__", "rw_refused", NULL};
	pb_series(&raw, ok, &x, 1);
	expect(&raw, 1, NULL, "snappy", 401, "bearer token");
	expect(&raw, 1, "wrong-token", "snappy", 401, "bearer token");
	expect(&raw, 1, TOKEN, "gzip", 415, "snappy");
	expect(&raw, 0, TOKEN, "snappy", 400, "snappy"); /* protobuf bytes, not compressed */
	cm_buf junk;
	cm_buf_init(&junk);
	cm_buf_puts(&junk, "\x0a\xff\xff\xff\x0f not a protobuf");
	expect(&junk, 1, TOKEN, "snappy", 400, "protobuf");
	raw.len = 0;
	const char *bad_name[] = {"__name__", "rw_refused", "0bad", "v", NULL};
	pb_series(&raw, bad_name, &x, 1);
	expect(&raw, 1, TOKEN, "snappy", 400, "invalid label name");
	raw.len = 0;
	const char *twice[] = {"__name__", "rw_refused", "a", "1", "a", "2", NULL};
	pb_series(&raw, twice, &x, 1);
	expect(&raw, 1, TOKEN, "snappy", 400, "twice");
	raw.len = 0;
	const char *bad_utf8[] = {"__name__", "rw_refused", "a", "\xff\xfe", NULL};
	pb_series(&raw, bad_utf8, &x, 1);
	expect(&raw, 1, TOKEN, "snappy", 400, "UTF-8");
	junk.len = 0; /* 1.5 MiB of incompressible bytes over the 1 MiB limit */
	for (uint32_t i = 0, r = 1; i < 3u << 19; i++)
		r = r * 1103515245u + 12345u, cm_buf_append(&junk, &(uint8_t){(uint8_t)(r >> 16)}, 1);
	expect(&junk, 0, TOKEN, "snappy", 413, "exceeds");
	cm_buf_close(&junk), cm_buf_close(&raw);
}

/* A request with a stale marker between two samples and an empty label: 204. */
static void test_store(void **state)
{
	(void)state;
	cm_buf raw;
	cm_buf_init(&raw);
	double stale;
	uint64_t bits = STALE_BITS;
	memcpy(&stale, &bits, 8);
	cm_sample x[] = {{F->t0, 1.5}, {F->t0 + 1000, stale}, {F->t0 + 2000, 2.5}};
	const char *labels[] = {"job", "rw", "__name__", "rw_stored", "empty", "", NULL};
	pb_series(&raw, labels, x, 3);
	expect(&raw, 1, TOKEN, "snappy", 204, NULL);
	char url[512];
	snprintf(url, sizeof(url), "%s/api/v1/query?query=rw_stored%%7Bjob%%3D%%22rw%%22%%7D&time=%.3f", F->url,
		 (double)(F->t0 + 2000) / 1000.0);
	long st;
	json_t *j = itest_get_json(url, &st);
	assert_int_equal(st, 200);
	json_t *r = json_object_get(json_object_get(j, "data"), "result");
	assert_int_equal(json_array_size(r), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1)), "2.5");
	assert_null(json_object_get(json_object_get(json_array_get(r, 0), "metric"), "empty"));
	json_decref(j);
	cm_buf_close(&raw);
}

/* ---- a real Prometheus remote-writing to the aggregator ---------------------------------------------- */

typedef struct psample {
	int64_t t;
	double v;
	int64_t seen_ms;  /* when corral first answered it, 0 = not yet */
} psample;

typedef struct pseries {
	const char *sel;  /* selector, URL-encoded by us */
	psample x[MAX_SAMPLES];
	size_t n;
} pseries;

/* Adds Prometheus' raw samples of s (a range query over the last 5 minutes) not seen before. */
static void prom_samples(const char *prom, pseries *s)
{
	char q[512], enc[1024], url[1400];
	snprintf(q, sizeof(q), "%s[5m]", s->sel);
	itest_urlencode(enc, sizeof(enc), q);
	snprintf(url, sizeof(url), "%s/api/v1/query?query=%s", prom, enc);
	long st;
	json_t *j = itest_get_json(url, &st), *r = json_object_get(json_object_get(j, "data"), "result");
	json_t *vals = json_object_get(json_array_get(r, 0), "values");
	for (size_t i = 0; i < json_array_size(vals); i++) {
		json_t *p = json_array_get(vals, i);
		int64_t t = (int64_t)llround(json_number_value(json_array_get(p, 0)) * 1000.0);
		int known = 0;
		for (size_t k = 0; k < s->n; k++)
			known |= s->x[k].t == t;
		if (!known && s->n < MAX_SAMPLES)
			s->x[s->n++] = (psample){t, strtod(json_string_value(json_array_get(p, 1)), NULL), 0};
	}
	json_decref(j);
}

/* 1 when corral's instant query at t answers exactly v for the selector. */
static int corral_has(const char *sel, int64_t t, double v)
{
	char enc[1024], url[1400];
	itest_urlencode(enc, sizeof(enc), sel);
	snprintf(url, sizeof(url), "%s/api/v1/query?query=%s&time=%.3f", F->url, enc, (double)t / 1000.0);
	long st;
	json_t *j = itest_get_json(url, &st), *r = json_object_get(json_object_get(j, "data"), "result");
	const char *got = json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1));
	int ok = st == 200 && json_array_size(r) == 1 && got && strtod(got, NULL) == v;
	json_decref(j);
	return ok;
}

static size_t check_seen(pseries *s)
{
	size_t seen = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (!s->x[i].seen_ms && corral_has(s->sel, s->x[i].t, s->x[i].v))
			s->x[i].seen_ms = itest_now_ms();
		seen += s->x[i].seen_ms != 0;
	}
	return seen;
}

static void write_prom_config(const char *path, const char *agg_hostport, const char *token_file)
{
	char cfg[2048];
	snprintf(cfg, sizeof(cfg),
		 "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
		 "scrape_configs:\n  - job_name: corral\n    scrape_interval: 1s\n    static_configs:\n"
		 "      - targets: ['%s']\n"
		 "remote_write:\n  - url: http://%s/api/v1/write\n    authorization:\n      credentials_file: %s\n"
		 "    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n",
		 agg_hostport, agg_hostport, token_file);
	itest_write_file(path, cfg);
}

static void test_prometheus(void **state)
{
	(void)state;
	char cfg[400], tsdb[400], listen[64], prom[96], ready[128], flag_cfg[450], flag_tsdb[450], flag_listen[96];
	snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", F->dir);
	snprintf(tsdb, sizeof(tsdb), "%s/prom-data", F->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(prom, sizeof(prom), "http://%s", listen);
	write_prom_config(cfg, F->url + 7, F->token);
	snprintf(flag_cfg, sizeof(flag_cfg), "--config.file=%s", cfg);
	snprintf(flag_tsdb, sizeof(flag_tsdb), "--storage.tsdb.path=%s", tsdb);
	snprintf(flag_listen, sizeof(flag_listen), "--web.listen-address=%s", listen);
	char *argv[] = {"/usr/bin/prometheus", flag_cfg, flag_tsdb, flag_listen, "--log.level=warn", NULL};
	itest_proc p;
	assert_int_equal(itest_spawn(&p, F->dir, "prometheus", argv), 0);
	snprintf(ready, sizeof(ready), "%s/-/ready", prom);
	if (itest_wait_http(ready, 30000))
		itest_dump_log(&p);
	pseries s[2] = {{.sel = "corral_aggregator_http_requests_total{job=\"corral\"}"},
			{.sel = "scrape_duration_seconds{job=\"corral\"}"}};
	int64_t end = itest_now_ms() + 60000;
	size_t seen = 0, total = 0;
	while (itest_now_ms() < end && (s[0].n < SCRAPES || seen < total)) {
		int enough = s[0].n >= SCRAPES; /* then the set is fixed: newer scrapes would always be in transit */
		itest_sleep_ms(500);
		seen = total = 0;
		for (int k = 0; k < 2; k++) {
			if (!enough)
				prom_samples(prom, &s[k]);
			seen += check_seen(&s[k]), total += s[k].n;
		}
	}
	int64_t worst = 0;
	for (int k = 0; k < 2; k++) {
		for (size_t i = 0; i < s[k].n; i++) {
			int64_t d = s[k].x[i].seen_ms ? s[k].x[i].seen_ms - s[k].x[i].t : INT64_MAX;
			if (d > 15000)
				fprintf(stderr, "%s at %lld = %g: %s\n", s[k].sel, (long long)s[k].x[i].t, s[k].x[i].v,
					s[k].x[i].seen_ms ? "late" : "missing in corral");
			worst = d > worst ? d : worst;
		}
	}
	fprintf(stderr, "prometheus: %zu + %zu samples (%lld .. %lld), all in corral, worst %lld ms after the scrape\n", s[0].n, s[1].n, (long long)s[0].x[0].t, (long long)s[0].x[s[0].n - 1].t,
		(long long)worst);
	if (seen < total || worst > 15000)
		itest_dump_log(&p);
	assert_int_equal(itest_stop(&p, SIGTERM, 10000), 0);
	assert_true(s[0].n >= SCRAPES);
	assert_int_equal(seen, total);
	assert_true(worst <= 15000);
}

/* ---- the tsdb holds what was sent, stale marker bits included ----------------------------------------- */

typedef struct raw_seen {
	cm_sample x[8];
	size_t n;
} raw_seen;

static int collect(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	(void)l, (void)nl;
	raw_seen *r = ctx;
	for (size_t i = 0; i < n && r->n < 8; i++)
		r->x[r->n++] = x[i];
	return 0;
}

static void test_stored_raw(void **state)
{
	(void)state;
	assert_int_equal(itest_aggregator_stop(&F->agg), 0);
	F->agg.pid = 0;
	char path[400];
	snprintf(path, sizeof(path), "%s/tsdb", F->data);
	ts_db *db;
	ts_open_report rep;
	cm_err err;
	assert_int_equal(ts_open(path, NULL, &db, &rep, &err), 0);
	ts_matcher m;
	assert_int_equal(ts_matcher_init(&m, TS_MATCH_EQ, "__name__", "rw_stored", &err), 0);
	raw_seen r = {0};
	ts_select(db, &m, 1, INT64_MIN, INT64_MAX, collect, &r);
	ts_matcher_close(&m);
	ts_close(db);
	assert_int_equal(r.n, 3);
	uint64_t bits;
	memcpy(&bits, &r.x[1].v, 8);
	assert_true(r.x[0].v == 1.5 && r.x[2].v == 2.5);
	assert_true(bits == STALE_BITS);
	assert_true(r.x[1].t_ms == F->t0 + 1000);
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	snprintf(F->data, sizeof(F->data), "%s/agg", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	F->t0 = itest_now_ms() - 60000;
	const char *extra[] = {"--max-push-bytes", "1Mi", "--dns-listen", "off", NULL};
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, extra, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	if (F->agg.pid)
		itest_aggregator_stop(&F->agg);
	itest_rmtree(F->dir);
	free(F);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_store),
		cmocka_unit_test(test_prometheus),
		cmocka_unit_test(test_stored_raw),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
