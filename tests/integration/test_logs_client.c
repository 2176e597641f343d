/* test_logs_client.c -- a real Loki push client against the aggregator: winston-loki (npm, installed by
 * scripts/install-deps.sh into tests/integration/loki-client) in its JSON and its protobuf + snappy
 * modes. Every line it logged is queryable, once, with its labels; the client must really have used the
 * encoding asked for (it falls back to JSON silently), and a client without the token is refused.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define TOKEN "client-test-token"
#define LINES 500

typedef struct fixture {
	char dir[256], data[300], token[300], url[64], client[512];
	itest_proc agg;
} fixture;

static fixture *F;

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	const char *src = getenv("CORRAL_SRC");
	snprintf(F->client, sizeof(F->client), "%s/tests/integration/loki-client", src ? src : ".");
	char mod[700];
	snprintf(mod, sizeof(mod), "%s/node_modules/winston-loki/package.json", F->client);
	if (access(mod, R_OK)) {
		fprintf(stderr, "%s is missing: run scripts/install-deps.sh (it runs npm install there)\n", mod);
		return -1;
	}
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->data, sizeof(F->data), "%s/data", F->dir);
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	itest_write_file(F->token, TOKEN "\n");
	return itest_aggregator_start(&F->agg, F->dir, F->data, F->token, NULL, F->url, sizeof(F->url));
}

static int teardown(void **state)
{
	(void)state;
	int st = itest_stop(&F->agg, SIGTERM, 10000);
	itest_rmtree(F->dir);
	free(F);
	return st == 0 ? 0 : -1;
}

/* Runs push.js; returns its exit status, its stdout in out. */
static int run_client(const char *mode, const char *app, const char *token, char *out, size_t cap)
{
	char script[700], count[16];
	snprintf(script, sizeof(script), "%s/push.js", F->client);
	snprintf(count, sizeof(count), "%d", LINES);
	char *argv[] = {"/usr/bin/node", script, F->url, (char *)mode, (char *)app, count, (char *)token, NULL};
	itest_proc p;
	assert_int_equal(itest_spawn(&p, F->dir, app, argv), 0);
	itest_wait_log(&p, "content_type", 60000);
	int st = itest_stop(&p, 0, 30000);
	if (itest_log_line(&p, "{\"content_type\":", out, cap)) /* out: the rest of the line */
		out[0] = 0;
	return st;
}

static void check_lines(const char *mode, const char *app)
{
	char enc[128], path[1024];
	snprintf(path, sizeof(path), "{app=\"%s\"}", app);
	itest_urlencode(enc, sizeof(enc), path);
	int64_t now = itest_now_ms() * 1000000;
	snprintf(path, sizeof(path), "%s/loki/api/v1/query_range?query=%s&start=%lld&end=%lld&limit=5000&direction=forward",
		 F->url, enc, (long long)(now - 600000000000LL), (long long)(now + 60000000000LL));
	long status;
	json_t *j = itest_get_json(path, &status);
	assert_int_equal(status, 200);
	json_t *res = json_object_get(json_object_get(j, "data"), "result");
	assert_int_equal(json_array_size(res), 1); /* one stream: {app, level} */
	json_t *labels = json_object_get(json_array_get(res, 0), "stream");
	assert_string_equal(json_string_value(json_object_get(labels, "app")), app);
	assert_string_equal(json_string_value(json_object_get(labels, "level")), "info");
	json_t *values = json_object_get(json_array_get(res, 0), "values");
	assert_int_equal(json_array_size(values), LINES);
	char *seen = calloc(LINES, 1);
	size_t i;
	json_t *v;
	json_array_foreach(values, i, v) {
		char want[128];
		const char *line = json_string_value(json_array_get(v, 1));
		int k = -1;
		char m[16];
		if (sscanf(line, "%15s line %d", m, &k) != 2 || strcmp(m, mode) || k < 0 || k >= LINES || seen[k]++)
			fail_msg("unexpected or repeated line '%s'", line);
		snprintf(want, sizeof(want), "%s line %d {\"seq\":%d,\"level\":\"info\"}", mode, k, k);
		assert_string_equal(line, want);
	}
	free(seen);
	json_decref(j);
}

static void test_winston_loki(void **state)
{
	(void)state;
	char out[256];
	assert_int_equal(run_client("json", "winston-json", TOKEN, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"application/json\""));
	check_lines("json", "winston-json");
	assert_int_equal(run_client("protobuf", "winston-proto", TOKEN, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"application/x-protobuf\""));
	check_lines("protobuf", "winston-proto");
	/* a wrong token: the client reports the refusal, nothing is stored */
	assert_int_not_equal(run_client("json", "winston-refused", "wrong", out, sizeof(out)), 0);
	char path[512];
	snprintf(path, sizeof(path), "%s/loki/api/v1/label/app/values", F->url);
	long status;
	json_t *j = itest_get_json(path, &status);
	assert_int_equal(json_array_size(json_object_get(j, "data")), 2);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test_setup_teardown(test_winston_loki, setup, teardown)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
