/* test_clock_jump.c -- a node's wall clock steps an hour ahead, then an hour behind, then back.
 *
 * Issue 11, faults. The agent runs under libfaketime (Debian `faketime`) with its offset read from a
 * file on every call, so this test moves the agent's CLOCK_REALTIME while it runs (its monotonic clock,
 * which drives libuv's timers, is left alone). Phases of PHASE_MS each: +0, +1h, -1h (the agent is
 * also killed with SIGKILL and restarted in this one: its seq must continue from its --state-dir, not
 * from the wall clock), +0. The agent reads the fixture trees (no root needed) every 200 ms.
 *
 * Promised (ag_ingest.c, docs/design.md): no batch is lost or stored twice whatever the node's clock
 * says (the stored corral_agent_batch_seq values are consecutive); a batch created in our future or
 * far behind the node's newest is stored at the aggregator's receive time, so service goes on in
 * every phase: container_last_seen (whose value is the node's clock) read at real time t in a phase
 * equals t plus that phase's offset, and nothing was stored an hour ahead.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define PHASE_MS 3000
#define NPHASES  4
#define FAKETIME_LIB "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

typedef struct fixture {
	char dir[256], token[300], data[320], state[320], offset[320], url[128];
	itest_proc agg, agent;
} fixture;

static void set_offset(fixture *f, const char *o)
{
	char tmp[340];
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->offset);
	itest_write_file(tmp, o);
	assert_int_equal(rename(tmp, f->offset), 0);
}

static void start_agent(fixture *f)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096], asan[1024];
	const char *src = getenv("CORRAL_SRC"), *old = getenv("ASAN_OPTIONS");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	/* libfaketime comes first in the library list: the sanitizer runtime must not insist on it */
	snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", old ? old : "", old ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	setenv("LD_PRELOAD", FAKETIME_LIB, 1);
	setenv("FAKETIME_TIMESTAMP_FILE", f->offset, 1);
	setenv("FAKETIME_NO_CACHE", "1", 1);
	setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
	char *argv[] = {bin,         "--node",     "clock-node", "--aggregator", f->url,   "--token-file",
	                f->token,    "--interval", "200ms",      "--listen",     listen,   "--cgroup-root",
	                cgroot,      "--proc-root", procroot,    "--state-dir",  f->state, NULL};
	int rc = itest_spawn(&f->agent, f->dir, "agent", argv);
	unsetenv("LD_PRELOAD");
	if (old)
		setenv("ASAN_OPTIONS", old, 1);
	else
		unsetenv("ASAN_OPTIONS");
	assert_int_equal(rc, 0);
}

static json_t *get(fixture *f, const char *path_and_query)
{
	char url[1024];
	snprintf(url, sizeof(url), "%s%s", f->url, path_and_query);
	long st = 0;
	json_t *j = itest_get_json(url, &st);
	assert_int_equal(st, 200);
	return j;
}

/* container_last_seen of the fixture's root cgroup at time t (ms), NAN when there is none. */
static double last_seen_at(fixture *f, int64_t t)
{
	char q[256];
	snprintf(q, sizeof(q), "/api/v1/query?query=container_last_seen%%7Bnode%%3D%%22clock-node%%22%%2Cid%%3D%%22%%2F%%22%%7D"
	         "&time=%.3f", t / 1000.0);
	json_t *j = get(f, q), *r = json_object_get(json_object_get(j, "data"), "result");
	double v = NAN;
	if (json_array_size(r) == 1)
		v = atof(json_string_value(json_array_get(json_object_get(json_array_get(r, 0), "value"), 1)));
	json_decref(j);
	return v;
}

static void test_clock_jumps(void **state)
{
	fixture *f = *state;
	static const char *const offsets[NPHASES] = {"+0", "+1h", "-1h", "+0"};
	static const int shift_s[NPHASES] = {0, 3600, -3600, 0};
	int64_t mid[NPHASES], t0 = itest_now_ms();
	start_agent(f);
	for (int p = 0; p < NPHASES; p++) {
		set_offset(f, offsets[p]);
		int64_t start = itest_now_ms();
		if (p == 2) { /* killed while its clock is an hour behind: seqs go on from the state dir */
			itest_sleep_ms(PHASE_MS / 4);
			itest_stop(&f->agent, SIGKILL, 5000);
			start_agent(f);
		}
		itest_sleep_ms((int)(start + PHASE_MS - itest_now_ms()));
		mid[p] = start + PHASE_MS * 3 / 4;
	}
	itest_sleep_ms(1000); /* the last batches arrive */
	int64_t t1 = itest_now_ms();
	for (int p = 0; p < NPHASES; p++) {
		double v = last_seen_at(f, mid[p]);
		double want = mid[p] / 1000.0 + shift_s[p];
		print_message("phase %s: container_last_seen at real %.3f = %.3f (node clock expected %.3f)\n",
		              offsets[p], mid[p] / 1000.0, v, want);
		assert_true(fabs(v - want) < 2.0);
	}
	/* nothing landed an hour ahead */
	double ahead = last_seen_at(f, mid[1] + 3600 * 1000LL);
	assert_true(isnan(ahead));
	assert_true(itest_metric(f->url, "corral_aggregator_retimed_batches_total") >= 2);

	static double seqs[4096];
	int n = itest_batch_seqs(f->url, t0, t1, seqs, 4096);
	print_message("%d batches stored, seq %.0f .. %.0f\n", n, n ? seqs[0] : 0, n ? seqs[n - 1] : 0);
	assert_true(n >= NPHASES * PHASE_MS / 200 / 2);
	for (int i = 1; i < n; i++)
		if (seqs[i] != seqs[i - 1] + 1)
			fail_msg("batch seq %.0f follows %.0f: lost or reordered", seqs[i], seqs[i - 1]);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	*state = f;
	if (access(FAKETIME_LIB, R_OK)) {
		print_message("no %s (apt-get install faketime): skipped\n", FAKETIME_LIB);
		return 0;
	}
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	snprintf(f->data, sizeof(f->data), "%s/data", f->dir);
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	snprintf(f->offset, sizeof(f->offset), "%s/offset", f->dir);
	itest_write_file(f->token, "clock-token\n");
	set_offset(f, "+0");
	return itest_aggregator_start(&f->agg, f->dir, f->data, f->token, NULL, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	int bad = 0;
	if (f->agent.pid > 0 && itest_stop(&f->agent, SIGTERM, 10000)) {
		itest_dump_log(&f->agent);
		bad = 1;
	}
	if (f->agg.pid > 0 && itest_aggregator_stop(&f->agg))
		bad = 1;
	if (f->dir[0])
		itest_rmtree(f->dir);
	free(f);
	return bad;
}

static void run(void **state)
{
	fixture *f = *state;
	if (!f->dir[0])
		skip();
	test_clock_jumps(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(run, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
