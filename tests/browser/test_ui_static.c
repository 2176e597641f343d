/* test_ui_static.c -- /ui/ serves the UI directory and nothing else (ag_ui.c).
 *
 * A real corral-aggregator with --ui-dir pointing at a directory made here: index.html, app.js,
 * style.css, sub/x.js, plus what must never be served: a symlink to a file outside, a symlinked
 * directory, a hidden file, a file with an unknown extension, and a secret outside the directory
 * reached with an encoded "..". Checks status, Content-Type, Cache-Control, ETag and 304, the
 * security headers, the redirects of / and /ui, and 405 for other methods. Also the real installed UI
 * of the build tree (<build>/ui): index.html and every module it imports answer 200.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], ui[300], url[64];
	itest_proc agg;
} fixture;

typedef struct reply {
	long status;
	char headers[4096], body[8192];
	size_t hlen, blen;
} reply;

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	reply *r = arg;
	size_t len = sz * n, room = sizeof(r->headers) - 1 - r->hlen;
	memcpy(r->headers + r->hlen, p, len < room ? len : room);
	r->hlen += len < room ? len : room;
	r->headers[r->hlen] = 0;
	return len;
}

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	reply *r = arg;
	size_t len = sz * n, room = sizeof(r->body) - 1 - r->blen;
	memcpy(r->body + r->blen, p, len < room ? len : room);
	r->blen += len < room ? len : room;
	r->body[r->blen] = 0;
	return len;
}

/* One request with headers and body captured; no redirect following, path sent as is. */
static void req(fixture *f, const char *method, const char *path, const char *extra_header, reply *r)
{
	char url[512];
	snprintf(url, sizeof(url), "%s%s", f->url, path);
	memset(r, 0, sizeof(*r));
	CURL *c = curl_easy_init();
	struct curl_slist *h = extra_header ? curl_slist_append(NULL, extra_header) : NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK)
		fail_msg("%s %s: %s (did the aggregator die?)", method, path, curl_easy_strerror(rc));
}

/* The value of header name (case-insensitive) into out; 0 when present. */
static int header(const reply *r, const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	for (const char *p = r->headers; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
		if (!strncasecmp(p, name, n) && p[n] == ':') {
			const char *v = p + n + 1, *e = strpbrk(v, "\r\n");
			while (*v == ' ')
				v++;
			snprintf(out, cap, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
			return 0;
		}
	}
	return -1;
}

static void expect(fixture *f, const char *path, long status, const char *type)
{
	reply r;
	char v[512];
	req(f, "GET", path, NULL, &r);
	if (r.status != status)
		fail_msg("GET %s: %ld, want %ld", path, r.status, status);
	if (type) {
		assert_int_equal(header(&r, "Content-Type", v, sizeof(v)), 0);
		assert_string_equal(v, type);
	}
}

static void test_static_files(void **state)
{
	fixture *f = *state;
	reply r;
	char v[512], etag[128];
	req(f, "GET", "/ui/", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "<!doctype html><title>t</title>\n");
	assert_int_equal(header(&r, "Content-Type", v, sizeof(v)), 0);
	assert_string_equal(v, "text/html; charset=utf-8");
	assert_int_equal(header(&r, "Cache-Control", v, sizeof(v)), 0);
	assert_string_equal(v, "no-cache");
	assert_int_equal(header(&r, "X-Content-Type-Options", v, sizeof(v)), 0);
	assert_string_equal(v, "nosniff");
	assert_int_equal(header(&r, "Content-Security-Policy", v, sizeof(v)), 0);
	assert_non_null(strstr(v, "script-src 'self'"));
	expect(f, "/ui/app.js", 200, "text/javascript; charset=utf-8");
	expect(f, "/ui/style.css", 200, "text/css; charset=utf-8");
	expect(f, "/ui/sub/x.js", 200, "text/javascript; charset=utf-8");
	/* revalidation */
	req(f, "GET", "/ui/app.js", NULL, &r);
	assert_int_equal(header(&r, "ETag", etag, sizeof(etag)), 0);
	char inm[200];
	snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
	req(f, "GET", "/ui/app.js", inm, &r);
	assert_int_equal(r.status, 304);
	assert_int_equal(r.blen, 0);
	req(f, "GET", "/ui/app.js", "If-None-Match: \"other\"", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "export const x = 1;\n");
}

static void test_nothing_else(void **state)
{
	fixture *f = *state;
	static const char *const never[] = {
	    "/ui/leak.js",                  /* symlink to a file outside */
	    "/ui/linkdir/secret.js",        /* through a symlinked directory */
	    "/ui/.hidden.js",               /* hidden */
	    "/ui/notes.txt",                /* unknown extension */
	    "/ui/sub",                      /* a directory */
	    "/ui/sub//x.js",                /* empty segment */
	    "/ui/../outside/secret.js",     /* dot-dot, sent as is */
	    "/ui/%2e%2e/outside/secret.js", /* dot-dot, encoded */
	    "/ui/sub/%2e%2e/%2e%2e/outside/secret.js",
	    "/ui/%2Fetc%2Fpasswd.js",
	    "/ui/missing.js",
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(never); i++) {
		reply r;
		req(f, "GET", never[i], NULL, &r);
		if (r.status != 404 || strstr(r.body, "SECRET"))
			fail_msg("GET %s: %ld %s", never[i], r.status, r.body);
	}
	reply r;
	char v[256];
	req(f, "GET", "/", NULL, &r);
	assert_int_equal(r.status, 301);
	assert_int_equal(header(&r, "Location", v, sizeof(v)), 0);
	assert_string_equal(v, "/ui/");
	req(f, "GET", "/ui", NULL, &r);
	assert_int_equal(r.status, 301);
	req(f, "POST", "/ui/app.js", NULL, &r);
	assert_int_equal(r.status, 405);
	req(f, "DELETE", "/ui/app.js", NULL, &r);
	assert_true(r.status == 405);
}

/* The UI the build installed: index.html and the modules the pages import. */
static void test_installed_ui(void **state)
{
	(void)state;
	char bin[4096], data[300], url[64], dir[256];
	itest_bin(bin, sizeof(bin), "ui/index.html");
	struct stat sb;
	if (stat(bin, &sb))
		fail_msg("%s is missing: the corral-ui target installs it", bin);
	itest_mkdtemp(dir, sizeof(dir));
	char token[300];
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(token, sizeof(token), "%s/token", dir);
	itest_write_file(token, "t\n");
	itest_proc agg;
	const char *extra[] = {"--dns-listen", "off", NULL};
	assert_int_equal(itest_aggregator_start(&agg, dir, data, token, extra, url, sizeof(url)), 0);
	fixture f2 = {0};
	snprintf(f2.url, sizeof(f2.url), "%s", url);
	static const char *const files[] = {"/ui/", "/ui/app.js", "/ui/style.css", "/ui/vendor/uPlot.esm.js",
	                                    "/ui/vendor/uPlot.min.css", "/ui/pages/cluster.js", "/ui/pages/logs.js",
	                                    "/ui/pages/explore.js", "/ui/pages/capacity.js"};
	for (size_t i = 0; i < CM_ARRAY_LEN(files); i++)
		expect(&f2, files[i], 200, NULL);
	assert_int_equal(itest_aggregator_stop(&agg), 0);
	itest_rmtree(dir);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	char p[600], q[600], token[300], data[300];
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->ui, sizeof(f->ui), "%s/ui", f->dir);
	snprintf(p, sizeof(p), "%s/outside", f->dir);
	mkdir(f->ui, 0755), mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/sub", f->ui), mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/outside/secret.js", f->dir), itest_write_file(p, "SECRET\n");
	snprintf(p, sizeof(p), "%s/index.html", f->ui), itest_write_file(p, "<!doctype html><title>t</title>\n");
	snprintf(p, sizeof(p), "%s/app.js", f->ui), itest_write_file(p, "export const x = 1;\n");
	snprintf(p, sizeof(p), "%s/style.css", f->ui), itest_write_file(p, "body{}\n");
	snprintf(p, sizeof(p), "%s/sub/x.js", f->ui), itest_write_file(p, "export const y = 2;\n");
	snprintf(p, sizeof(p), "%s/.hidden.js", f->ui), itest_write_file(p, "SECRET\n");
	snprintf(p, sizeof(p), "%s/notes.txt", f->ui), itest_write_file(p, "SECRET\n");
	snprintf(p, sizeof(p), "%s/leak.js", f->ui), snprintf(q, sizeof(q), "%s/outside/secret.js", f->dir);
	assert_int_equal(symlink(q, p), 0);
	snprintf(p, sizeof(p), "%s/linkdir", f->ui), snprintf(q, sizeof(q), "%s/outside", f->dir);
	assert_int_equal(symlink(q, p), 0);
	snprintf(token, sizeof(token), "%s/token", f->dir);
	itest_write_file(token, "t\n");
	snprintf(data, sizeof(data), "%s/data", f->dir);
	const char *extra[] = {"--dns-listen", "off", "--ui-dir", f->ui, NULL};
	*state = f;
	return itest_aggregator_start(&f->agg, f->dir, data, token, extra, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_installed_ui),
	    cmocka_unit_test(test_static_files),
	    cmocka_unit_test(test_nothing_else),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
