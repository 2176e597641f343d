/* test_remote_write_vm.c -- --remote-write to a real VictoriaMetrics (Debian's victoria-metrics): every
 * sample the aggregator stores arrives exactly once, through an outage of VictoriaMetrics and a restart
 * of the aggregator during it.
 *
 * Agent batches (the wire push, STEPS_UP of them), a remote write request and a bulk import go to an
 * aggregator that forwards to VictoriaMetrics; VictoriaMetrics' /api/v1/export must then hold every
 * sample. VictoriaMetrics is stopped (SIGTERM by
 * pid), batches keep coming for OUTAGE_MS while the aggregator's queue retries, the aggregator itself is
 * restarted halfway (its disk queue must replay from the acknowledged offset), then VictoriaMetrics
 * starts again on the same data directory: every sample must arrive, each series' timestamps exactly
 * the pushed ones (no gap, no duplicate: VictoriaMetrics runs without deduplication so a resent sample
 * would show). The outage is a minute; ctest keeps it at OUTAGE_MS to stay fast.
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

#define TOKEN "rw-vm-token"
#define NSERIES 5
#define STEPS_UP 20
#define OUTAGE_MS 12000 /* CORRAL_RW_OUTAGE_MS overrides it (bench/remote-write/outage.sh: a minute) */
#define PUSH_EVERY_MS 250
#define MAX_STEPS 1000

typedef struct fixture {
	char dir[256], token[300], data[300], vmdata[300], url[64], vm[64];
	itest_proc agg, vmp;
	int64_t t0;
	int steps; /* pushed so far: steps 0 .. steps-1 */
	int outage_ms;
} fixture;

static fixture *F;

static int vm_start(void)
{
	char data[400], listen[100], health[128];
	snprintf(data, sizeof(data), "-storageDataPath=%s", F->vmdata);
	snprintf(listen, sizeof(listen), "-httpListenAddr=%s", F->vm + 7);
	char *argv[] = {"/usr/bin/victoria-metrics", data, listen, "-retentionPeriod=10y", "-loggerLevel=ERROR", NULL};
	if (itest_spawn(&F->vmp, F->dir, "victoria-metrics", argv))
		return -1;
	snprintf(health, sizeof(health), "%s/health", F->vm);
	return itest_wait_http(health, 30000);
}

static int agg_start(void)
{
	char rw[128];
	snprintf(rw, sizeof(rw), "%s/api/v1/write", F->vm);
	const char *extra[] = {"--remote-write", rw, "--remote-write-shards", "2", "--remote-write-max-wait", "100ms",
			       "--remote-write-max-samples", "7", "--dns-listen", "off", NULL};
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, extra, F->url, sizeof(F->url));
}

/* Sample of series k at step j: t0 + j s, value j * 10 + k. */
static void push_step(int j)
{
	cm_label l[NSERIES][2];
	cm_sample x[NSERIES];
	cm_series s[NSERIES];
	char names[NSERIES][8];
	for (int k = 0; k < NSERIES; k++) {
		snprintf(names[k], sizeof(names[k]), "%d", k);
		l[k][0] = (cm_label){"__name__", "rw_fwd"}, l[k][1] = (cm_label){"s", names[k]};
		x[k] = (cm_sample){F->t0 + (int64_t)j * 1000, j * 10.0 + k};
		s[k] = (cm_series){l[k], 2, &x[k], 1};
	}
	cm_batch b = {.node = "rw-node", .boot_id = "boot-1", .agent_version = "test", .seq = (uint64_t)j + 1,
		      .created_ms = F->t0, .series = s, .nseries = NSERIES};
	cm_buf frame, reply;
	cm_err err;
	cm_buf_init(&frame), cm_buf_init(&reply);
	assert_int_equal(cm_wire_encode(&b, 1, &frame, &err), 0);
	long st = itest_push(F->url, TOKEN, frame.data, frame.len, &reply);
	if (st != 200)
		fprintf(stderr, "push of step %d: HTTP %ld %.*s\n", j, st, (int)reply.len, (char *)reply.data);
	assert_int_equal(st, 200);
	cm_buf_close(&frame), cm_buf_close(&reply);
}

/* What VictoriaMetrics holds: per series the timestamps in order. 1 when it is exactly steps 0..n-1
 * with the right values (and *bad gets a description of the first difference otherwise). */
static int vm_exact(int n, char *bad, size_t cap)
{
	char url[256];
	cm_buf reply;
	cm_buf_init(&reply);
	snprintf(url, sizeof(url), "%s/api/v1/export?match%%5B%%5D=rw_fwd", F->vm);
	long st = itest_http("GET", url, NULL, NULL, 0, &reply);
	int seen[NSERIES] = {0}, ok = st == 200;
	snprintf(bad, cap, "HTTP %ld", st);
	for (char *line = reply.data ? (char *)reply.data : "", *nl; ok && *line; line = nl + 1) {
		if (!(nl = strchr(line, '\n')))
			break;
		*nl = 0;
		json_t *j = json_loads(line, 0, NULL);
		const char *sk = json_string_value(json_object_get(json_object_get(j, "metric"), "s"));
		json_t *ts = json_object_get(j, "timestamps"), *vs = json_object_get(j, "values");
		int k = sk ? atoi(sk) : -1;
		if (k < 0 || k >= NSERIES || (int)json_array_size(ts) != n) {
			snprintf(bad, cap, "series s=%s: %zu samples, want %d", sk ? sk : "?", json_array_size(ts), n);
			ok = 0;
		}
		for (int i = 0; ok && i < n; i++) {
			int64_t t = (int64_t)json_integer_value(json_array_get(ts, (size_t)i));
			double v = json_number_value(json_array_get(vs, (size_t)i));
			if (t != F->t0 + i * 1000LL || v != i * 10.0 + k) {
				snprintf(bad, cap, "series s=%d sample %d: t=%lld v=%g", k, i, (long long)t, v);
				ok = 0;
			}
		}
		seen[k < 0 || k >= NSERIES ? 0 : k] = 1;
		json_decref(j);
	}
	for (int k = 0; ok && k < NSERIES; k++)
		if (!seen[k])
			snprintf(bad, cap, "series s=%d missing", k), ok = 0;
	cm_buf_close(&reply);
	return ok;
}

static void wait_vm_exact(int n, int timeout_ms)
{
	char bad[256] = "";
	int64_t end = itest_now_ms() + timeout_ms;
	int ok;
	while (!(ok = vm_exact(n, bad, sizeof(bad))) && itest_now_ms() < end)
		itest_sleep_ms(300);
	if (!ok) {
		fprintf(stderr, "victoria-metrics after %d steps: %s\n", n, bad);
		itest_dump_log(&F->agg);
	}
	assert_true(ok);
}

/* A value of the aggregator's /metrics (the first line starting with name), -1 when absent. */
static double agg_metric(const char *name)
{
	char url[128];
	cm_buf reply;
	cm_buf_init(&reply);
	snprintf(url, sizeof(url), "%s/metrics", F->url);
	itest_http("GET", url, NULL, NULL, 0, &reply);
	cm_buf_append(&reply, "", 1);
	double v = -1;
	for (char *p = (char *)reply.data; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, name, strlen(name))) {
			v = strtod(strchr(p, ' ') + 1, NULL);
			break;
		}
	cm_buf_close(&reply);
	return v;
}

/* 1 when VictoriaMetrics' export of selector (URL-encoded) contains want. */
static int vm_has(const char *selector, const char *want)
{
	char url[256];
	cm_buf reply;
	cm_buf_init(&reply);
	snprintf(url, sizeof(url), "%s/api/v1/export?match%%5B%%5D=%s", F->vm, selector);
	itest_http("GET", url, NULL, NULL, 0, &reply);
	cm_buf_append(&reply, "", 1);
	int ok = strstr((char *)reply.data, want) != NULL;
	cm_buf_close(&reply);
	return ok;
}

static void wait_vm_has(const char *selector, const char *want)
{
	int64_t end = itest_now_ms() + 30000;
	while (!vm_has(selector, want) && itest_now_ms() < end)
		itest_sleep_ms(300);
	assert_true(vm_has(selector, want));
}

/* A remote write request of one sample rw_rcv{via="rw"} = 42 at t0, encoded by hand (snappy block). */
static void post_remote_write(void)
{
	uint8_t pb[128], body[256];
	size_t n = 0, blen = sizeof(body);
	const char *l[] = {"__name__", "rw_rcv", "via", "rw"};
	uint8_t ts[96];
	size_t t = 0;
	for (int i = 0; i < 4; i += 2) {
		size_t a = strlen(l[i]), b = strlen(l[i + 1]);
		ts[t++] = 0x0a, ts[t++] = (uint8_t)(a + b + 4);
		ts[t++] = 0x0a, ts[t++] = (uint8_t)a, memcpy(ts + t, l[i], a), t += a;
		ts[t++] = 0x12, ts[t++] = (uint8_t)b, memcpy(ts + t, l[i + 1], b), t += b;
	}
	uint8_t smp[32] = {0x09};
	size_t k = 1;
	double v = 42;
	memcpy(smp + k, &v, 8), k += 8, smp[k++] = 0x10;
	for (uint64_t x = (uint64_t)F->t0;; x >>= 7) {
		smp[k++] = (uint8_t)((x & 0x7f) | (x >> 7 ? 0x80 : 0));
		if (!(x >> 7))
			break;
	}
	ts[t++] = 0x12, ts[t++] = (uint8_t)k, memcpy(ts + t, smp, k), t += k;
	pb[n++] = 0x0a, pb[n++] = (uint8_t)t, memcpy(pb + n, ts, t), n += t;
	assert_int_equal(snappy_compress((const char *)pb, n, (char *)body, &blen), SNAPPY_OK);
	char url[128], auth[64] = "Authorization: Bearer " TOKEN;
	snprintf(url, sizeof(url), "%s/api/v1/write", F->url);
	const char *h[] = {"Content-Encoding: snappy", "Content-Type: application/x-protobuf", auth, NULL};
	assert_int_equal(itest_http("POST", url, h, body, blen, NULL), 204);
}

static void test_forward(void **state)
{
	(void)state;
	for (; F->steps < STEPS_UP; F->steps++)
		push_step(F->steps);
	/* the two other ingest paths are forwarded too: a remote write request and a bulk import */
	post_remote_write();
	char line[128], url[128], auth[64] = "Authorization: Bearer " TOKEN, want[64];
	snprintf(line, sizeof(line), "rw_imp{via=\"import\"} 7 %lld\n", (long long)F->t0);
	snprintf(url, sizeof(url), "%s/api/v1/import/prometheus", F->url);
	const char *h[] = {auth, NULL};
	assert_int_equal(itest_http("POST", url, h, line, strlen(line), NULL), 204);
	wait_vm_exact(F->steps, 30000);
	assert_true(agg_metric("corral_remote_write_samples_total{url=") >= NSERIES * STEPS_UP + 2);
	snprintf(want, sizeof(want), "\"values\":[42],\"timestamps\":[%lld]", (long long)F->t0);
	wait_vm_has("rw_rcv", want);
	snprintf(want, sizeof(want), "\"values\":[7],\"timestamps\":[%lld]", (long long)F->t0);
	wait_vm_has("rw_imp", want);
}

static void test_outage(void **state)
{
	(void)state;
	assert_int_equal(itest_stop(&F->vmp, SIGTERM, 15000), 0);
	int64_t start = itest_now_ms();
	int restarted = 0;
	while (itest_now_ms() - start < F->outage_ms && F->steps < MAX_STEPS) {
		push_step(F->steps++);
		if (!restarted && itest_now_ms() - start > F->outage_ms / 2) {
			assert_true(agg_metric("corral_remote_write_pending_samples{url=") > 0);
			assert_true(agg_metric("corral_remote_write_failures_total{url=") > 0);
			assert_int_equal(itest_aggregator_stop(&F->agg), 0);
			assert_int_equal(agg_start(), 0);
			restarted = 1;
		}
		itest_sleep_ms(PUSH_EVERY_MS);
	}
	assert_true(restarted);
	assert_true(agg_metric("corral_remote_write_lag_seconds{url=") > 0);
	assert_int_equal(vm_start(), 0);
	wait_vm_exact(F->steps, 60000);
	int64_t end = itest_now_ms() + 10000;
	while (agg_metric("corral_remote_write_pending_samples{url=") != 0 && itest_now_ms() < end)
		itest_sleep_ms(200);
	assert_true(agg_metric("corral_remote_write_pending_samples{url=") == 0);
	fprintf(stderr, "victoria-metrics: %d steps x %d series, every sample once after a %d ms outage\n", F->steps,
		NSERIES, F->outage_ms);
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	snprintf(F->data, sizeof(F->data), "%s/agg", F->dir);
	snprintf(F->vmdata, sizeof(F->vmdata), "%s/vm", F->dir);
	snprintf(F->vm, sizeof(F->vm), "http://127.0.0.1:%d", itest_port());
	itest_write_file(F->token, TOKEN "\n");
	F->t0 = (itest_now_ms() / 1000 - 3600) * 1000;
	const char *o = getenv("CORRAL_RW_OUTAGE_MS");
	F->outage_ms = o && atoi(o) > 0 ? atoi(o) : OUTAGE_MS;
	if (vm_start())
		return -1;
	return agg_start();
}

static int teardown(void **state)
{
	(void)state;
	int rc = F->agg.pid ? itest_aggregator_stop(&F->agg) : 0;
	if (F->vmp.pid)
		itest_stop(&F->vmp, SIGTERM, 15000);
	itest_rmtree(F->dir);
	free(F);
	return rc ? -1 : 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_forward), cmocka_unit_test(test_outage)};
	return cmocka_run_group_tests(tests, setup, teardown);
}
