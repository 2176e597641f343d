/* test_crash.c -- kill -9 of the aggregator loses no acknowledged sample.
 *
 * A pusher thread sends batches with increasing sequence numbers, each carrying the sample
 * itest_crash_value = seq at t = base + seq seconds, and remembers which ones were acknowledged.
 * The aggregator is killed with SIGKILL, first between two pushes, then at random moments while
 * pushes are in flight, and restarted on the same data directory each time. At the end every
 * acknowledged sample must be there with its value, and a retry of the last acknowledged batch must
 * be recognised as a duplicate (the dedupe state survives the crashes too).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

#define TOKEN "crash-test-token"
#define ITERATIONS 8
#define MAX_PER_ITERATION 1000
#define MAX_SEQ (ITERATIONS * MAX_PER_ITERATION + 1)

typedef struct crash {
	char dir[256], token[300], data[320], url[64];
	itest_proc agg;
	int64_t base;
	uint64_t next_seq;
	unsigned char acked[MAX_SEQ + 1];
	atomic_int stop;
} crash;

static void make_frame(crash *c, uint64_t seq, cm_buf *out)
{
	cm_label l1[] = {{"__name__", "itest_crash_value"}};
	cm_label l2[] = {{"__name__", "itest_crash_pad"}, {"kind", "a"}};
	cm_label l3[] = {{"__name__", "itest_crash_pad"}, {"kind", "b"}};
	int64_t t = c->base + (int64_t)seq * 1000;
	cm_sample s1 = {t, (double)seq}, s2 = {t, 1.5}, s3 = {t, -2.25};
	cm_series series[] = {{l1, 1, &s1, 1}, {l2, 2, &s2, 1}, {l3, 2, &s3, 1}};
	cm_batch b = {.node = "crash-node", .boot_id = "boot", .agent_version = "test", .seq = seq,
		      .created_ms = t, .series = series, .nseries = 3};
	cm_err err;
	out->len = 0;
	assert_int_equal(cm_wire_encode(&b, 1, out, &err), 0);
}

/* Pushes until the aggregator stops answering or the iteration's budget is spent. */
static int push_until_failure(crash *c, int max)
{
	cm_buf f;
	cm_buf_init(&f);
	int acked = 0;
	for (int i = 0; i < max && !atomic_load(&c->stop) && c->next_seq <= MAX_SEQ; i++) {
		uint64_t seq = c->next_seq++;
		make_frame(c, seq, &f);
		long st = itest_push(c->url, TOKEN, f.data, f.len, NULL);
		if (st != 200)
			break;
		c->acked[seq] = 1;
		acked++;
	}
	cm_buf_close(&f);
	return acked;
}

static void *pusher(void *arg)
{
	push_until_failure(arg, MAX_PER_ITERATION);
	return NULL;
}

static void start(crash *c)
{
	c->url[0] = 0; /* a fresh port each time */
	assert_int_equal(itest_aggregator_start(&c->agg, c->dir, c->data, c->token, NULL, c->url, sizeof(c->url)), 0);
}

/* A retry of an acknowledged batch is acknowledged as a duplicate and not stored again. */
static void expect_duplicate(crash *c, uint64_t seq)
{
	cm_buf f, reply;
	cm_buf_init(&f);
	cm_buf_init(&reply);
	make_frame(c, seq, &f);
	assert_int_equal(itest_push(c->url, TOKEN, f.data, f.len, &reply), 200);
	assert_non_null(strstr((char *)reply.data, "\"duplicate\":true"));
	cm_buf_close(&f);
	cm_buf_close(&reply);
}

/* Back-to-back pushes land in the same millisecond; the dedupe state must still survive kill -9
 * (it once kept only the first seq of each millisecond). */
static void crash_between_pushes(crash *c)
{
	start(c);
	assert_int_equal(push_until_failure(c, 50), 50);
	itest_stop(&c->agg, SIGKILL, 1000);
	start(c);
	expect_duplicate(c, c->next_seq - 1);
	itest_stop(&c->agg, SIGKILL, 1000);
}

static void crash_during_pushes(crash *c, unsigned *seed)
{
	start(c);
	pthread_t th;
	atomic_store(&c->stop, 0);
	pthread_create(&th, NULL, pusher, c);
	itest_sleep_ms(30 + (int)(rand_r(seed) % 400));
	itest_stop(&c->agg, SIGKILL, 1000);
	atomic_store(&c->stop, 1);
	pthread_join(th, NULL);
}

static void verify(crash *c)
{
	start(c);
	uint64_t last = c->next_seq - 1;
	char url[512];
	snprintf(url, sizeof(url), "%s/api/v1/query_range?query=itest_crash_value&start=%.3f&end=%.3f&step=1",
		 c->url, (c->base + 1000) / 1000.0, (c->base + (int64_t)last * 1000) / 1000.0);
	long status;
	json_t *j = itest_get_json(url, &status);
	assert_int_equal(status, 200);
	json_t *values = json_object_get(json_array_get(json_object_get(json_object_get(j, "data"), "result"), 0),
					 "values"), *pt;
	size_t i;
	int found = 0, acked = 0;
	json_array_foreach(values, i, pt)
	{
		double t = json_number_value(json_array_get(pt, 0));
		double v = strtod(json_string_value(json_array_get(pt, 1)), NULL);
		uint64_t seq = (uint64_t)((t * 1000 - (double)c->base) / 1000 + 0.5);
		if (seq <= MAX_SEQ && c->acked[seq] && v == (double)seq)
			found++;
	}
	for (uint64_t s = 1; s <= last; s++)
		acked += c->acked[s];
	fprintf(stderr, "acknowledged %d batches over %d crashes, found %d of them\n", acked, ITERATIONS, found);
	assert_true(acked > ITERATIONS);
	assert_int_equal(found, acked);
	json_decref(j);
	uint64_t s = last; /* the last acknowledged batch, retried, is a duplicate */
	while (s && !c->acked[s])
		s--;
	expect_duplicate(c, s);
	assert_int_equal(itest_stop(&c->agg, SIGTERM, 10000), 0);
}

static void test_kill9_loses_nothing_acknowledged(void **state)
{
	crash *c = *state;
	unsigned seed = (unsigned)itest_now_ms();
	fprintf(stderr, "seed %u\n", seed);
	crash_between_pushes(c);
	for (int i = 1; i < ITERATIONS; i++)
		crash_during_pushes(c, &seed);
	verify(c);
}

static int setup(void **state)
{
	crash *c = calloc(1, sizeof(*c));
	itest_mkdtemp(c->dir, sizeof(c->dir));
	snprintf(c->token, sizeof(c->token), "%s/token", c->dir);
	snprintf(c->data, sizeof(c->data), "%s/agg", c->dir);
	itest_write_file(c->token, TOKEN "\n");
	c->base = (itest_now_ms() / 1000) * 1000 - (int64_t)MAX_SEQ * 1000;
	c->next_seq = 1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	crash *c = *state;
	itest_stop(&c->agg, SIGKILL, 1000);
	itest_rmtree(c->dir);
	free(c);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_kill9_loses_nothing_acknowledged, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
