/* test_security.c -- the aggregator's HTTP API over TLS with push, per-node and read tokens: real agents
 * push over https, everything without the right token is refused, tokens rotate without a restart,
 * connection and header limits hold, --user drops root, and no secret shows up anywhere.
 *
 * A CA and a server certificate for 127.0.0.1 are made with openssl in the test's temp dir. The
 * aggregator runs with --tls-cert-file/--tls-key-file, a push token file (one token for any node, one
 * bound to node "bound-node") and a read token file. Agents run on the fixture trees (tests/data) at a
 * 200 ms interval: one with the push token and --ca-file (stored), one with a wrong token, one whose
 * bound token names another node, one without --ca-file (the self-signed chain must fail verification);
 * none of the last three may store anything. At the end every log file in the temp dir, the /metrics of
 * the aggregator and of every agent and every error body seen are searched for the token values.
 * As root (as CI runs it): --user on a port below 1024, and an agent in a mount namespace where all but
 * its --state-dir is read-only.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], url[128], ca[320], cert[320], key[320], push_file[320], read_file[320], data[320];
	char push[80], push2[80], bound[80], wrong[80], readtok[80];
	itest_proc agg;
	itest_proc extra;  /* the --user or rate-limit aggregator, stopped by the teardown if a test failed */
	cm_buf seen;  /* every error body and /metrics text, searched for secrets at the end */
} fixture;

static fixture F;

static void random_token(char *out, const char *prefix)
{
	FILE *f = fopen("/dev/urandom", "r");
	unsigned char r[16];
	assert_non_null(f);
	assert_int_equal(fread(r, 1, sizeof(r), f), sizeof(r));
	fclose(f);
	int n = sprintf(out, "%s", prefix);
	for (size_t i = 0; i < sizeof(r); i++)
		n += sprintf(out + n, "%02x", r[i]);
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
	cm_buf_append(ctx, p, size * n);
	return size * n;
}

/* One request to the TLS API, verified against the test CA; -1 when no HTTP answer came. */
static long https(const char *method, const char *path, const char *token, const char *body, cm_buf *reply)
{
	char url[512], auth[160];
	snprintf(url, sizeof(url), "%s%s", F.url, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
	CURL *c = curl_easy_init();
	struct curl_slist *h = token ? curl_slist_append(NULL, auth) : NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_CAINFO, F.ca);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	long status = -1;
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (status != 200)
		cm_buf_append(&F.seen, reply->data ? (char *)reply->data : "", reply->len);
	return status;
}

static long status_of(const char *method, const char *path, const char *token, const char *body)
{
	cm_buf b;
	cm_buf_init(&b);
	long st = https(method, path, token, body, &b);
	cm_buf_close(&b);
	return st;
}

/* Series of metric corral_agent_batch_seq stored for node (read with the read token). */
static size_t stored_series(const char *node)
{
	char path[256];
	snprintf(path, sizeof(path), "/api/v1/series?match[]=corral_agent_batch_seq%%7Bnode%%3D%%22%s%%22%%7D", node);
	cm_buf b;
	cm_buf_init(&b);
	assert_int_equal(https("GET", path, F.readtok, NULL, &b), 200);
	cm_buf_append(&b, "", 1);
	json_t *j = json_loads((char *)b.data, 0, NULL);
	assert_non_null(j);
	size_t n = json_array_size(json_object_get(j, "data"));
	json_decref(j);
	cm_buf_close(&b);
	return n;
}

static void write_tokens(const char *push_line1)
{
	char text[512], tmp[400];
	snprintf(text, sizeof(text), "# push tokens\n%s\nbound-node=%s\n", push_line1, F.bound);
	snprintf(tmp, sizeof(tmp), "%s.tmp", F.push_file);
	itest_write_file(tmp, text);
	assert_int_equal(rename(tmp, F.push_file), 0); /* the way an editor or a Secret update replaces it */
}

static int group_setup(void **state)
{
	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	cm_buf_init(&F.seen);
	itest_mkdtemp(F.dir, sizeof(F.dir));
	chmod(F.dir, 0755); /* the --user case's unprivileged user walks into it */
	snprintf(F.ca, sizeof(F.ca), "%s/ca.crt", F.dir);
	snprintf(F.cert, sizeof(F.cert), "%s/server.crt", F.dir);
	snprintf(F.key, sizeof(F.key), "%s/server.key", F.dir);
	snprintf(F.push_file, sizeof(F.push_file), "%s/push-tokens", F.dir);
	snprintf(F.read_file, sizeof(F.read_file), "%s/read-token", F.dir);
	snprintf(F.data, sizeof(F.data), "%s/data", F.dir);
	if (itest_make_certs(F.dir))
		fail_msg("cannot make the test certificates");
	random_token(F.push, "push-");
	random_token(F.push2, "rotated-");
	random_token(F.bound, "bound-");
	random_token(F.wrong, "wrong-");
	random_token(F.readtok, "read-");
	write_tokens(F.push);
	itest_write_file(F.read_file, F.readtok);
	char bin[4096], listen[64], health[160];
	itest_bin(bin, sizeof(bin), "corral-aggregator");
	int port = itest_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(F.url, sizeof(F.url), "https://127.0.0.1:%d", port);
	char *argv[] = {bin, "--listen", listen, "--data-dir", F.data, "--token-file", F.push_file,
			"--read-token-file", F.read_file, "--tls-cert-file", F.cert, "--tls-key-file", F.key,
			"--dns-listen", "off", "--http-max-connections-per-ip", "8", "--http-max-header-bytes", "8Ki",
			"--http-timeout", "3s", NULL};
	assert_int_equal(itest_spawn(&F.agg, F.dir, "aggregator", argv), 0);
	snprintf(health, sizeof(health), "/healthz");
	for (int i = 0; i < 150 && status_of("GET", health, NULL, NULL) != 200; i++)
		itest_sleep_ms(100);
	if (status_of("GET", health, NULL, NULL) != 200) {
		itest_dump_log(&F.agg);
		fail_msg("the TLS aggregator did not come up");
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_stop(&F.extra, SIGKILL, 1000);
	int st = itest_aggregator_stop(&F.agg);
	cm_buf_close(&F.seen);
	curl_global_cleanup();
	if (st == 0)
		itest_rmtree(F.dir);
	return st;
}

/* ---- agents -------------------------------------------------------------------------------------- */

typedef struct agent {
	itest_proc p;
	char url[128];
} agent;

static void agent_start(agent *a, const char *node, const char *token, int with_ca)
{
	char bin[4096], listen[64], cgroot[4096], procroot[4096], tokfile[400], health[200];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(tokfile, sizeof(tokfile), "%s/token-%s", F.dir, node);
	itest_write_file(tokfile, token);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	snprintf(a->url, sizeof(a->url), "http://%s", listen);
	char *argv[] = {bin, "--node", (char *)node, "--aggregator", F.url, "--token-file", tokfile, "--interval",
			"200ms", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot,
			with_ca ? "--ca-file" : NULL, F.ca, NULL};
	assert_int_equal(itest_spawn(&a->p, F.dir, node, argv), 0);
	snprintf(health, sizeof(health), "%s/healthz", a->url);
	assert_int_equal(itest_wait_http(health, 10000), 0);
}

static double agent_metric(agent *a, const char *name)
{
	char url[200], needle[128];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(url, sizeof(url), "%s/metrics", a->url);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, &b), 200);
	cm_buf_append(&F.seen, b.data, b.len);
	cm_buf_append(&b, "", 1);
	snprintf(needle, sizeof(needle), "\n%s ", name);
	const char *p = strstr((char *)b.data, needle);
	assert_non_null(p);
	double v = strtod(p + strlen(needle), NULL);
	cm_buf_close(&b);
	return v;
}

static void agent_stop(agent *a)
{
	int st = itest_stop(&a->p, SIGTERM, 10000);
	if (st)
		itest_dump_log(&a->p);
	assert_int_equal(st, 0);
}

/* A real agent over https with the push token is stored; with a wrong token, with a token bound to
 * another node, or without the CA it is not (and keeps retrying). */
static void test_agents_over_tls(void **state)
{
	(void)state;
	agent good, wrong, other, noca, bound;
	agent_start(&good, "tls-node", F.push, 1);
	agent_start(&wrong, "wrong-node", F.wrong, 1);
	agent_start(&other, "other-node", F.bound, 1);     /* bound to bound-node */
	agent_start(&bound, "bound-node", F.bound, 1);     /* its own node: accepted */
	agent_start(&noca, "noca-node", F.push, 0);        /* system CAs do not know the test CA */
	int ok = 0;
	for (int i = 0; i < 100 && !ok; i++) {
		ok = stored_series("tls-node") == 1 && stored_series("bound-node") == 1 &&
		     agent_metric(&wrong, "corral_agent_send_failures_total") >= 3 &&
		     agent_metric(&other, "corral_agent_send_failures_total") >= 3 &&
		     agent_metric(&noca, "corral_agent_send_failures_total") >= 3;
		if (!ok)
			itest_sleep_ms(100);
	}
	assert_true(ok);
	assert_int_equal(stored_series("wrong-node"), 0);
	assert_int_equal(stored_series("other-node"), 0);
	assert_int_equal(stored_series("noca-node"), 0);
	assert_true(agent_metric(&good, "corral_agent_batches_sent_total") >= 1);
	assert_int_equal(agent_metric(&wrong, "corral_agent_batches_sent_total"), 0);
	assert_int_equal(agent_metric(&noca, "corral_agent_batches_sent_total"), 0);
	assert_int_equal(itest_wait_log(&noca.p, "certificate", 5000), 0); /* why it fails, from libcurl */
	agent_stop(&good), agent_stop(&wrong), agent_stop(&other), agent_stop(&bound), agent_stop(&noca);
}

/* Pushes: no token, a wrong token, the read token: 401; the push token gets past authentication (the
 * body is not a batch: 400). Plain HTTP to the TLS port gets no HTTP answer at all. */
static void test_push_refused(void **state)
{
	(void)state;
	const char *push = "/api/v1/agent/push", *body = "not a batch";
	assert_int_equal(status_of("POST", push, NULL, body), 401);
	assert_int_equal(status_of("POST", push, F.wrong, body), 401);
	assert_int_equal(status_of("POST", push, F.readtok, body), 401);
	assert_int_equal(status_of("POST", push, F.push, body), 400);
	assert_int_equal(status_of("POST", "/loki/api/v1/push", F.readtok, "{}"), 401);
	assert_int_equal(status_of("POST", "/api/v1/services", F.readtok, "{}"), 401);
	/* a token bound to one node pushes that node's batches and nothing else */
	assert_int_equal(status_of("POST", "/loki/api/v1/push", F.bound, "{}"), 403);
	assert_int_equal(status_of("POST", "/api/v1/services", F.bound, "{}"), 401);
	assert_int_equal(status_of("POST", "/api/v1/import/prometheus", F.bound, "up 1\n"), 401);
	assert_int_equal(status_of("POST", "/api/v1/services", F.push, "{}"), 400); /* past auth: not a Service */
	char plain[160];
	snprintf(plain, sizeof(plain), "http://%.100s/api/v1/agent/push", F.url + 8);
	cm_buf b;
	cm_buf_init(&b);
	const char *h[] = {"Authorization: Bearer x", NULL};
	assert_int_equal(itest_http("POST", plain, h, body, strlen(body), &b), -1); /* no HTTP answer */
	cm_buf_close(&b);
}

/* Reads: only the read token; the push token does not read. Open: /healthz and /metrics. */
static void test_read_token(void **state)
{
	(void)state;
	const char *reads[] = {"/api/v1/query?query=up", "/api/v1/series?match[]=up", "/api/v1/inventory",
			       "/api/v1/events", "/api/v1/services", "/loki/api/v1/labels",
			       "/loki/api/v1/query_range?query=%7Bjob%3D%22x%22%7D"};
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		assert_int_equal(status_of("GET", reads[i], NULL, NULL), 401);
		assert_int_equal(status_of("GET", reads[i], F.push, NULL), 401);
		assert_int_equal(status_of("GET", reads[i], F.wrong, NULL), 401);
		long st = status_of("GET", reads[i], F.readtok, NULL);
		if (st != 200)
			fail_msg("%s with the read token: %ld", reads[i], st);
	}
	assert_int_equal(status_of("GET", "/healthz", NULL, NULL), 200);
	assert_int_equal(status_of("GET", "/metrics", NULL, NULL), 200);
}

/* ---- the tail's WebSocket ---------------------------------------------------------------------------- */

typedef struct ws_reply {
	long status;
	char headers[2048];
	size_t len;
} ws_reply;

/* Keeps the header lines; stops the transfer at the end of a 101's headers (what follows is WebSocket). */
static size_t on_ws_header(char *p, size_t size, size_t n, void *ctx)
{
	ws_reply *r = ctx;
	size_t len = size * n, room = sizeof(r->headers) - 1 - r->len;
	if (!strncmp(p, "HTTP/", 5))
		r->status = strtol(p + 9, NULL, 10), r->len = 0;
	memcpy(r->headers + r->len, p, len < room ? len : room);
	r->len += len < room ? len : room;
	r->headers[r->len] = 0;
	return r->status == 101 && len <= 2 ? 0 : len;
}

/* A WebSocket upgrade of /loki/api/v1/tail offering protocols (NULL: none); the status answered. */
static long ws_handshake(const char *protocols, ws_reply *r)
{
	char url[512], proto[400];
	snprintf(url, sizeof(url), "%s/loki/api/v1/tail?query=%%7Bjob%%3D%%22x%%22%%7D", F.url);
	snprintf(proto, sizeof(proto), "Sec-WebSocket-Protocol: %s", protocols ? protocols : "");
	struct curl_slist *h = curl_slist_append(NULL, "Connection: Upgrade");
	h = curl_slist_append(h, "Upgrade: websocket");
	h = curl_slist_append(h, "Sec-WebSocket-Version: 13");
	h = curl_slist_append(h, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==");
	if (protocols)
		h = curl_slist_append(h, proto);
	memset(r, 0, sizeof(*r));
	CURL *c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, F.ca);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_ws_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	cm_buf body;
	cm_buf_init(&body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_perform(c);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	cm_buf_close(&body);
	return r->status;
}

/* base64url without padding, as the web UI sends a token in the subprotocol "bearer.<...>". */
static void b64url(const char *in, char *out)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(in), o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16 | (i + 1 < n ? (uint32_t)(unsigned char)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? (unsigned char)in[i + 2] : 0);
		for (size_t k = 0; k < 4 && k <= n - i; k++)
			out[o++] = al[v >> (18 - 6 * k) & 63];
	}
	out[o] = 0;
}

/* The UI files need no token (they hold no data); the tail's WebSocket takes the read token as the
 * subprotocol bearer.<base64url> (a browser cannot set Authorization there) and echoes "corral"; no
 * token, a wrong one, the push token or a malformed one is 401. */
static void test_ws_read_token(void **state)
{
	(void)state;
	assert_int_not_equal(status_of("GET", "/ui/", NULL, NULL), 401);
	char enc[200], proto[300];
	ws_reply r;
	assert_int_equal(ws_handshake(NULL, &r), 401);
	const char *refused[] = {F.wrong, F.push, "*not base64*"};
	for (size_t i = 0; i < CM_ARRAY_LEN(refused); i++) {
		b64url(refused[i], enc);
		snprintf(proto, sizeof(proto), "corral, bearer.%s", i == 2 ? refused[i] : enc);
		if (ws_handshake(proto, &r) != 401)
			fail_msg("tail upgrade offering %s: %ld", proto, r.status);
	}
	b64url(F.readtok, enc);
	snprintf(proto, sizeof(proto), "corral, bearer.%s", enc);
	if (ws_handshake(proto, &r) != 101)
		fail_msg("tail upgrade with the read token: %ld\n%s", r.status, r.headers);
	assert_non_null(strcasestr(r.headers, "Sec-WebSocket-Protocol: corral\r\n"));
}

/* The push token file is replaced: within two seconds the old token is refused and the new one works,
 * with no restart; a running agent refused with the old token picks the new one up from its own token
 * file, also without a restart. A broken file (no token in it) keeps the tokens in force. */
static void test_rotation(void **state)
{
	(void)state;
	const char *push = "/api/v1/agent/push", *body = "x";
	agent a;
	agent_start(&a, "rot-node", F.push, 1);
	for (int i = 0; i < 100 && agent_metric(&a, "corral_agent_batches_sent_total") < 2; i++)
		itest_sleep_ms(100);
	assert_true(agent_metric(&a, "corral_agent_batches_sent_total") >= 2);
	write_tokens(F.push2);
	int done = 0;
	for (int i = 0; i < 40 && !done; i++) {
		done = status_of("POST", push, F.push2, body) == 400 && status_of("POST", push, F.push, body) == 401;
		if (!done)
			itest_sleep_ms(100);
	}
	assert_true(done);
	/* the agent's pushes are refused now; its token file gets the new token and it goes on, unrestarted */
	double failed = 0;
	for (int i = 0; i < 50 && failed < 1; i++, itest_sleep_ms(100))
		failed = agent_metric(&a, "corral_agent_send_failures_total");
	assert_true(failed >= 1);
	double sent = agent_metric(&a, "corral_agent_batches_sent_total");
	char tokfile[400];
	snprintf(tokfile, sizeof(tokfile), "%s/token-rot-node", F.dir);
	itest_write_file(tokfile, F.push2);
	double now = sent;
	for (int i = 0; i < 150 && now < sent + 2; i++, itest_sleep_ms(100))
		now = agent_metric(&a, "corral_agent_batches_sent_total");
	if (now < sent + 2)
		itest_dump_log(&a.p);
	assert_true(now >= sent + 2);
	agent_stop(&a);
	char tmp[400];
	snprintf(tmp, sizeof(tmp), "%s.tmp", F.push_file);
	itest_write_file(tmp, "# nothing\n");
	assert_int_equal(rename(tmp, F.push_file), 0);
	itest_sleep_ms(1500);
	assert_int_equal(status_of("POST", push, F.push2, body), 400);
	assert_int_equal(itest_wait_log(&F.agg, "the previous tokens stay in force", 3000), 0);
	write_tokens(F.push); /* back for the other tests */
	for (int i = 0; i < 40 && status_of("POST", push, F.push, body) != 400; i++)
		itest_sleep_ms(100);
	assert_int_equal(status_of("POST", push, F.push, body), 400);
}

/* --http-max-connections-per-ip 8: a 9th open connection from 127.0.0.1 is closed at once; an idle one
 * is closed after --http-timeout; a request head over --http-max-header-bytes is refused (431). */
static void test_limits(void **state)
{
	(void)state;
	int port = atoi(strrchr(F.url, ':') + 1), fds[9];
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	for (int i = 0; i < 9; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		assert_int_equal(connect(fds[i], (struct sockaddr *)&a, sizeof(a)), 0);
		itest_sleep_ms(20);
	}
	struct pollfd p = {.fd = fds[8], .events = POLLIN};
	char c;
	assert_int_equal(poll(&p, 1, 3000), 1);
	assert_true(read(fds[8], &c, 1) <= 0); /* closed by the server */
	p.fd = fds[0];
	assert_int_equal(poll(&p, 1, 300), 0); /* the first ones stay open */
	for (int i = 1; i < 9; i++)
		close(fds[i]);
	/* --http-timeout 3s: the idle first connection is closed after about three seconds, not before */
	int64_t t0 = itest_now_ms();
	char alert[256]; /* a TLS close_notify may come before the end */
	ssize_t r = 1;
	while (r > 0 && itest_now_ms() - t0 < 8000 && poll(&p, 1, 8000) == 1)
		r = read(fds[0], alert, sizeof(alert));
	assert_true(r <= 0);
	int64_t idle = itest_now_ms() - t0;
	close(fds[0]);
	if (idle < 1500 || idle > 7000)
		fail_msg("an idle connection was closed after %lld ms, want about 3 s", (long long)idle);
	char big[12000], hdr[12100];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	snprintf(hdr, sizeof(hdr), "X-Big: %s", big);
	char url[200];
	snprintf(url, sizeof(url), "%s/healthz", F.url);
	CURL *cu = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, hdr);
	curl_easy_setopt(cu, CURLOPT_URL, url);
	curl_easy_setopt(cu, CURLOPT_CAINFO, F.ca);
	curl_easy_setopt(cu, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(cu, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(cu, CURLOPT_WRITEDATA, &F.seen);
	long st = -1;
	if (curl_easy_perform(cu) == CURLE_OK)
		curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &st);
	curl_slist_free_all(h);
	curl_easy_cleanup(cu);
	assert_int_equal(st, 431);
	assert_int_equal(status_of("GET", "/healthz", NULL, NULL), 200);
}

/* --http-rate-per-ip 5: a burst of requests from one address gets 429 with Retry-After past five, /healthz
 * never does, and a second later the client is served again. */
static void test_rate_limit(void **state)
{
	(void)state;
	char logdir[320], data[340], url[128] = "", q[200], health[200];
	snprintf(logdir, sizeof(logdir), "%s/rate", F.dir);
	snprintf(data, sizeof(data), "%s/data", logdir);
	assert_int_equal(mkdir(logdir, 0755), 0);
	char tokfile[400];
	snprintf(tokfile, sizeof(tokfile), "%s/token", logdir);
	itest_write_file(tokfile, F.push);
	const char *extra[] = {"--dns-listen", "off", "--http-rate-per-ip", "5", NULL};
	itest_proc *p = &F.extra;
	assert_int_equal(itest_aggregator_start(p, logdir, data, tokfile, extra, url, sizeof(url)), 0);
	snprintf(q, sizeof(q), "%s/api/v1/query?query=up", url);
	snprintf(health, sizeof(health), "%s/healthz", url);
	itest_sleep_ms(1100); /* a full bucket, whatever the start's /healthz polling did */
	int ok = 0, limited = 0;
	cm_buf b;
	cm_buf_init(&b);
	int64_t t0 = itest_now_ms();
	for (int i = 0; i < 20; i++) {
		b.len = 0;
		long st = itest_http("GET", q, NULL, NULL, 0, &b);
		ok += st == 200, limited += st == 429;
		assert_true(st == 200 || st == 429);
		assert_int_equal(itest_http("GET", health, NULL, NULL, 0, &b), 200);
	}
	double refill = (double)(itest_now_ms() - t0) / 1000.0 * 5; /* what refilled while the loop ran */
	if (ok < 5 || ok > 5 + refill + 1 || limited != 20 - ok)
		fail_msg("%d served, %d refused in %.1f s at 5/s with a burst of 5", ok, limited, refill / 5);
	itest_sleep_ms(1100);
	b.len = 0;
	assert_int_equal(itest_http("GET", q, NULL, NULL, 0, &b), 200);
	char murl[200];
	snprintf(murl, sizeof(murl), "%s/metrics", url);
	b.len = 0;
	assert_int_equal(itest_http("GET", murl, NULL, NULL, 0, &b), 200);
	cm_buf_append(&b, "", 1);
	const char *m = strstr((char *)b.data, "\ncorral_http_rate_limited_total ");
	assert_non_null(m);
	assert_int_equal(atoi(m + strlen("\ncorral_http_rate_limited_total ")), limited);
	cm_buf_close(&b);
	assert_int_equal(itest_aggregator_stop(p), 0);
}

/* ---- --user ---------------------------------------------------------------------------------------- */

/* A free port below 1024, starting at a point of its own per process (the two trees run at once). */
static int free_low_port(void)
{
	for (int i = 0, start = 700 + (int)(getpid() % 280); i < 280; i++) {
		int port = 700 + (start - 700 + i) % 280;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return port;
	}
	return -1;
}

/* Started as root with --user nobody on a port below 1024: every id of the process is nobody's, the
 * data dir files are nobody's, pushes authenticate and a token rotation is still read. */
static void test_user(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: --user needs the test to run as root\n");
		return;
	}
	struct passwd *pw = getpwnam("nobody");
	assert_non_null(pw);
	char data[320], listen[64], url[128], bin[4096], status[64], line[256];
	snprintf(data, sizeof(data), "%s/data-user", F.dir);
	int port = free_low_port();
	assert_true(port > 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(url, sizeof(url), "http://%s", listen);
	char tokfile[400];
	snprintf(tokfile, sizeof(tokfile), "%s/user-token", F.dir);
	itest_write_file(tokfile, F.push);
	chmod(tokfile, 0644);
	itest_bin(bin, sizeof(bin), "corral-aggregator");
	/* LeakSanitizer cannot stop the threads of a process that changed its credentials (not dumpable) */
	const char *asan = getenv("ASAN_OPTIONS");
	char saved[512];
	snprintf(saved, sizeof(saved), "%s", asan ? asan : "");
	setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0", 1);
	char *argv[] = {bin, "--listen", listen, "--data-dir", data, "--token-file", tokfile, "--dns-listen", "off",
			"--user", "nobody", NULL};
	itest_proc *p = &F.extra;
	assert_int_equal(itest_spawn(p, F.dir, "aggregator-user", argv), 0);
	setenv("ASAN_OPTIONS", saved, 1);
	char health[160];
	snprintf(health, sizeof(health), "%s/healthz", url);
	if (itest_wait_http(health, 15000) || itest_wait_log(p, "listening on", 5000)) {
		itest_dump_log(p);
		fail_msg("the aggregator with --user did not come up"); /* (or another one has the port) */
	}
	snprintf(status, sizeof(status), "/proc/%d/status", (int)p->pid);
	FILE *f = fopen(status, "r");
	assert_non_null(f);
	int seen = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned r, e, s, fs;
		if (sscanf(line, "Uid: %u %u %u %u", &r, &e, &s, &fs) == 4)
			seen++, assert_true(r == pw->pw_uid && e == pw->pw_uid && s == pw->pw_uid);
		if (sscanf(line, "Gid: %u %u %u %u", &r, &e, &s, &fs) == 4)
			seen++, assert_true(r == pw->pw_gid && e == pw->pw_gid && s == pw->pw_gid);
	}
	fclose(f);
	assert_int_equal(seen, 2);
	struct stat st;
	char wal[400];
	snprintf(wal, sizeof(wal), "%s/state.db", data);
	assert_int_equal(stat(wal, &st), 0);
	assert_int_equal(st.st_uid, pw->pw_uid);
	assert_int_equal(stat(data, &st), 0);
	assert_int_equal(st.st_uid, pw->pw_uid);
	cm_buf b;
	cm_buf_init(&b);
	assert_int_equal(itest_push(url, F.push, "x", 1, &b), 400);
	itest_write_file(tokfile, F.push2); /* rotation, read as nobody */
	long got = 0;
	for (int i = 0; i < 40 && got != 400; i++) {
		b.len = 0;
		got = itest_push(url, F.push2, "x", 1, &b);
		if (got != 400)
			itest_sleep_ms(100);
	}
	assert_int_equal(got, 400);
	cm_buf_close(&b);
	assert_int_equal(itest_aggregator_stop(p), 0);
}

/* ---- the agent writes only its state dir -------------------------------------------------------- */

/* In a mount namespace of its own where every mount is read-only but its --state-dir, the agent ships
 * metrics and a container log (spool, seq and log positions all live in the state dir). Needs root. */
static const char ro_script[] =
	"set -e; state=$1; shift; mount --bind \"$state\" \"$state\"\n"
	"awk '{print $2}' /proc/self/mounts | sort -r | while read -r m; do\n"
	"  mount -o remount,bind,ro \"$m\" 2>/dev/null || true; done\n"
	"mount -o remount,bind,rw \"$state\"\n"
	"if touch \"$state/../ro-probe\" 2>/dev/null; then echo 'the rest is still writable'; exit 3; fi\n"
	"exec \"$@\"\n";

static void test_agent_readonly(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: a mount namespace needs root\n");
		return;
	}
	char root[400], logdir[600], logfile[700], link[800], st[400], cmd[1600];
	snprintf(root, sizeof(root), "%s/ro-host", F.dir);
	snprintf(logdir, sizeof(logdir), "%s/var/log/pods/sec_ro-pod_uid-1/main", root);
	snprintf(st, sizeof(st), "%s/ro-state", F.dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' '%s/var/log/containers' '%s'", logdir, root, st);
	assert_int_equal(system(cmd), 0);
	snprintf(logfile, sizeof(logfile), "%s/0.log", logdir);
	snprintf(link, sizeof(link), "%s/var/log/containers/ro-pod_sec_main-%064d.log", root, 1);
	itest_write_file(logfile, "2026-01-01T00:00:00.000000001Z stdout F readonly-line-1\n"
				  "2026-01-01T00:00:00.000000002Z stdout F readonly-line-2\n");
	assert_int_equal(symlink(logfile, link), 0);
	char bin[4096], listen[64], cgroot[4096], procroot[4096], tokfile[400], health[200];
	const char *src = getenv("CORRAL_SRC");
	itest_bin(bin, sizeof(bin), "corral-agent");
	snprintf(cgroot, sizeof(cgroot), "%s/tests/data/cgroup-v2", src ? src : ".");
	snprintf(procroot, sizeof(procroot), "%s/tests/data/proc", src ? src : ".");
	snprintf(tokfile, sizeof(tokfile), "%s/token-ro", F.dir);
	itest_write_file(tokfile, F.push);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", itest_port());
	char *argv[] = {"/usr/bin/unshare", "-m", "--propagation", "private", "sh", "-c", (char *)ro_script, "sh",
			st, bin, "--node", "ro-node", "--aggregator", F.url, "--ca-file", F.ca, "--token-file", tokfile,
			"--interval", "200ms", "--listen", listen, "--cgroup-root", cgroot, "--proc-root", procroot,
			"--state-dir", st, "--log-root", root, NULL};
	agent a = {0};
	snprintf(a.url, sizeof(a.url), "http://%s", listen);
	assert_int_equal(itest_spawn(&a.p, F.dir, "agent-readonly", argv), 0);
	snprintf(health, sizeof(health), "%s/healthz", a.url);
	if (itest_wait_http(health, 10000)) {
		itest_dump_log(&a.p);
		fail_msg("the agent in a read-only mount namespace did not come up");
	}
	cm_buf b;
	cm_buf_init(&b);
	int got = 0;
	for (int i = 0; i < 100 && !got; i++) {
		b.len = 0;
		got = stored_series("ro-node") == 1 && agent_metric(&a, "corral_agent_batches_sent_total") >= 3 &&
		      https("GET", "/loki/api/v1/query_range?query=%7Bnode%3D%22ro-node%22%7D&start=1767225600000000000"
				   "&end=1767225601000000000",
			    F.readtok, NULL, &b) == 200 &&
		      !cm_buf_append(&b, "", 1) && strstr((char *)b.data, "readonly-line-2") != NULL;
		if (!got)
			itest_sleep_ms(100);
	}
	cm_buf_close(&b);
	if (!got)
		itest_dump_log(&a.p);
	assert_true(got);
	agent_stop(&a);
	assert_int_not_equal(itest_wait_log(&a.p, "Read-only file system", 0), 0);
	char probe[500];
	snprintf(probe, sizeof(probe), "%s/ro-probe", F.dir);
	assert_int_not_equal(access(probe, F_OK), 0);
}

/* ---- no secret anywhere ------------------------------------------------------------------------ */

static int contains(const char *hay, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(hay + i, needle, k))
			return 1;
	return 0;
}

static void check_text(const char *what, const char *p, size_t n)
{
	const char *secrets[] = {F.push, F.push2, F.bound, F.wrong, F.readtok};
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (contains(p, n, secrets[i]))
			fail_msg("a token appears in %s", what);
}

static void test_no_secret_leaks(void **state)
{
	(void)state;
	cm_buf m;
	cm_buf_init(&m);
	assert_int_equal(https("GET", "/metrics", NULL, NULL, &m), 200);
	assert_non_null(strstr((char *)m.data, "corral_auth_denied_total"));
	check_text("the aggregator's /metrics", (char *)m.data, m.len);
	cm_buf_close(&m);
	check_text("an error body or an agent's /metrics", (char *)F.seen.data, F.seen.len);
	assert_true(F.seen.len > 1000); /* the bodies were collected */
	DIR *d = opendir(F.dir);
	assert_non_null(d);
	struct dirent *e;
	int logs = 0;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 4, ".log"))
			continue;
		char path[600];
		snprintf(path, sizeof(path), "%s/%s", F.dir, e->d_name);
		static char text[1 << 22];
		size_t len = 0;
		assert_int_equal(cm_read_file(path, text, sizeof(text), &len), 0);
		check_text(e->d_name, text, len);
		logs++;
	}
	closedir(d);
	assert_true(logs >= 6); /* the aggregator and the five agents */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_push_refused),  cmocka_unit_test(test_read_token),
		cmocka_unit_test(test_ws_read_token),
		cmocka_unit_test(test_agents_over_tls), cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_limits),        cmocka_unit_test(test_rate_limit),        cmocka_unit_test(test_user),
		cmocka_unit_test(test_agent_readonly),
		cmocka_unit_test(test_no_secret_leaks),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
