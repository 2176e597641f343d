/* test_ag_auth.c -- the aggregator's tokens (ag_auth.c): the token file format, push and read checks,
 * per-node binding, the reload on change (and the refusal of a broken file), the environment fallback.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

static char dir[64];

static void path_of(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

/* Replaces a file by rename, as editors and Kubernetes do. */
static void put(const char *name, const char *text)
{
	char p[128], tmp[140];
	path_of(p, sizeof(p), name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	FILE *f = fopen(tmp, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(rename(tmp, p), 0);
}

static int parse(const char *text, int allow_node, size_t *n, size_t *bound)
{
	cm_err err = {{0}};
	return ag__auth_parse(text, strlen(text), allow_node, n, bound, &err);
}

static void test_format(void **state)
{
	(void)state;
	size_t n, b;
	assert_int_equal(parse("tok\n", 1, &n, &b), 0);
	assert_int_equal(n, 1), assert_int_equal(b, 0);
	assert_int_equal(parse("# comment\n\n  any  \r\nnode-1=one\nnode-2=two", 1, &n, &b), 0);
	assert_int_equal(n, 3), assert_int_equal(b, 2);
	assert_int_equal(parse("node-1=one\n", 0, &n, &b), 0); /* the read file has no bindings */
	assert_int_equal(n, 1), assert_int_equal(b, 0);
	/* '=' padding, a leading '=' and a trailing '=' keep the line one token */
	assert_int_equal(parse("QUJDRA==\nYWJj=\n=lead\nnode=\n", 1, &n, &b), 0);
	assert_int_equal(n, 4), assert_int_equal(b, 0);
	assert_int_equal(parse("a=b=c\n", 1, &n, &b), 0); /* node a, token "b=c" */
	assert_int_equal(b, 1);
	assert_int_equal(parse("", 1, &n, &b), CM_EINVAL);
	assert_int_equal(parse("# only a comment\n\n", 1, &n, &b), CM_EINVAL);
	assert_int_equal(parse("two words\n", 1, &n, &b), CM_EINVAL);
	assert_int_equal(parse("ctl\001x\n", 1, &n, &b), CM_EINVAL);
	assert_int_equal(parse("node one=tok\n", 1, &n, &b), CM_EINVAL);
	char big[1100];
	memset(big, 'x', 1024);
	big[1024] = 0;
	assert_int_equal(parse(big, 1, &n, &b), CM_EINVAL); /* 1,024 bytes: one too many */
	big[1023] = 0;
	assert_int_equal(parse(big, 1, &n, &b), 0);
	size_t cap = 4097 * 3 + 1;
	char *many = malloc(cap), *p = many;
	for (int i = 0; i < 4097; i++)
		*p++ = 't', *p++ = (char)('a' + i % 26), *p++ = '\n';
	*p = 0;
	assert_int_equal(parse(many, 1, &n, &b), CM_E2BIG);
	many[4096 * 3] = 0;
	assert_int_equal(parse(many, 1, &n, &b), 0);
	assert_int_equal(n, 4096);
	free(many);
}

static void test_push_and_read(void **state)
{
	(void)state;
	char push[128], rd[128], node[64];
	put("push", "any-token\nnode-a=bound-token\n");
	put("read", "read-token\n");
	path_of(push, sizeof(push), "push");
	path_of(rd, sizeof(rd), "read");
	ag__auth *a;
	cm_err err = {{0}};
	assert_int_equal(ag__auth_create(push, NULL, &a, &err), 0);
	assert_true(ag__auth_push(a, "Bearer any-token", node, sizeof(node)));
	assert_string_equal(node, "");
	assert_true(ag__auth_push(a, "bearer bound-token", node, sizeof(node)));
	assert_string_equal(node, "node-a");
	assert_false(ag__auth_push(a, "Bearer any-toke", node, sizeof(node)));
	assert_false(ag__auth_push(a, "Bearer any-token2", NULL, 0));
	assert_false(ag__auth_push(a, "Basic any-token", NULL, 0));
	assert_false(ag__auth_push(a, "Bearer ", NULL, 0));
	assert_false(ag__auth_push(a, NULL, NULL, 0));
	assert_true(ag__auth_read(a, NULL)); /* no read token: reads are open */
	ag__auth_destroy(a);
	assert_int_equal(ag__auth_create(push, rd, &a, &err), 0);
	assert_true(ag__auth_read(a, "Bearer read-token"));
	assert_false(ag__auth_read(a, NULL));
	assert_false(ag__auth_read(a, "Bearer any-token")); /* a push token does not read */
	assert_false(ag__auth_push(a, "Bearer read-token", NULL, 0)); /* a read token does not push */
	cm_buf m;
	cm_buf_init(&m);
	assert_int_equal(ag__auth_metrics(a, &m), 0);
	cm_buf_append(&m, "", 1);
	assert_non_null(strstr((char *)m.data, "corral_auth_tokens{kind=\"push\"} 2\n"));
	assert_non_null(strstr((char *)m.data, "corral_auth_denied_total 3\n"));
	assert_null(strstr((char *)m.data, "read-token"));
	assert_null(strstr((char *)m.data, "any-token"));
	cm_buf_close(&m);
	ag__auth_destroy(a);
	char missing[128];
	path_of(missing, sizeof(missing), "missing");
	assert_int_equal(ag__auth_create(missing, NULL, &a, &err), CM_ENOENT);
	assert_non_null(strstr(err.msg, "missing")); /* the file is named, nothing else */
}

/* A changed file is read within a second; a broken or vanished one keeps the tokens in force. */
static void test_reload(void **state)
{
	(void)state;
	char push[128];
	put("rot", "old-token\n");
	path_of(push, sizeof(push), "rot");
	ag__auth *a;
	cm_err err = {{0}};
	assert_int_equal(ag__auth_create(push, NULL, &a, &err), 0);
	put("rot", "new-token\n");
	assert_true(ag__auth_push(a, "Bearer old-token", NULL, 0)); /* checked at most once a second */
	usleep(1100 * 1000);
	assert_true(ag__auth_push(a, "Bearer new-token", NULL, 0));
	assert_false(ag__auth_push(a, "Bearer old-token", NULL, 0));
	put("rot", "# emptied by mistake\n");
	usleep(1100 * 1000);
	assert_true(ag__auth_push(a, "Bearer new-token", NULL, 0));
	assert_int_equal(unlink(push), 0);
	usleep(1100 * 1000);
	assert_true(ag__auth_push(a, "Bearer new-token", NULL, 0));
	put("rot", "third-token\nnew-token\n");
	usleep(1100 * 1000);
	assert_true(ag__auth_push(a, "Bearer third-token", NULL, 0));
	assert_true(ag__auth_push(a, "Bearer new-token", NULL, 0));
	cm_buf m;
	cm_buf_init(&m);
	assert_int_equal(ag__auth_metrics(a, &m), 0);
	cm_buf_append(&m, "", 1);
	assert_non_null(strstr((char *)m.data, "corral_auth_reloads_total 2\n"));
	assert_non_null(strstr((char *)m.data, "corral_auth_reload_errors_total 2\n"));
	cm_buf_close(&m);
	ag__auth_destroy(a);
}

static void test_environment(void **state)
{
	(void)state;
	ag__auth *a;
	cm_err err = {{0}};
	unsetenv("CORRAL_TOKEN");
	assert_int_equal(ag__auth_create(NULL, NULL, &a, &err), CM_ENOENT);
	setenv("CORRAL_TOKEN", "env-push", 1);
	setenv("CORRAL_READ_TOKEN", "env-read", 1);
	assert_int_equal(ag__auth_create(NULL, NULL, &a, &err), 0);
	assert_true(ag__auth_push(a, "Bearer env-push", NULL, 0));
	assert_true(ag__auth_read(a, "Bearer env-read"));
	assert_false(ag__auth_read(a, "Bearer env-push"));
	ag__auth_destroy(a);
	unsetenv("CORRAL_TOKEN");
	unsetenv("CORRAL_READ_TOKEN");
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/ag-auth-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_push_and_read),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_environment),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
