/* test_dns_forward.c -- --dns-upstream with the real knot as the upstream, asked with the real dig and kdig.
 *
 * The test writes a knot zone (example.org: A with TTL 123, MX, TXT, a TXT whose answer is 1226 bytes)
 * and a knot config (udp-max-payload 1220, so that answer comes back truncated over UDP while it fits
 * a 1232-byte client), starts knotd and corral-aggregator (--dns-upstream pointing at knot, one local
 * service from a manifest) on loopback ports picked here. Checked: knot's answers pass through with
 * their flags, sections and TTLs and the client's ID and question case; NXDOMAIN with knot's SOA; a TC
 * answer is retried over TCP (and a client limited to 512 bytes gets TC and retries itself); TCP clients
 * are forwarded over TCP; corral's own zone is still answered locally and not forwarded, reverse names
 * it has nothing for go to knot (a 2.0.192.in-addr.arpa zone there); with knot
 * stopped, SERVFAIL within the 2 s timeout. These run with --dns-forward-cache 0; then the aggregator
 * restarts with its cache, which answers repeats (TTLs counting down, negative answers for the SOA's
 * MINIMUM) and still answers them with knot stopped. (Without --dns-upstream: REFUSED,
 * test_dns_conformance.)
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

#include "itest.h"

typedef struct fixture {
	char dir[256], url[64];
	int dns_port, knot_port;
	itest_proc agg, knot;
} fixture;

static fixture *F;
static char OUT[1 << 16];

/* Runs "<tool> -p PORT @127.0.0.1 <args>" (port: corral's DNS, or knot's) into OUT. */
static const char *run_at(int port, const char *tool, const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "%s -p %d @127.0.0.1 %s %s 2>&1 | tr -s ' \\t' '  '", tool, port,
	         strcmp(tool, "kdig") ? "+time=5 +tries=1 +nocookie" : "+timeout=5 +retry=0", args);
	itest_capture(cmd, OUT, sizeof(OUT));
	return OUT;
}

static const char *run(const char *tool, const char *args)
{
	return run_at(F->dns_port, tool, args);
}

static void expect(const char *what)
{
	if (!strstr(OUT, what)) {
		fprintf(stderr, "expected \"%s\" in:\n%s\n", what, OUT);
		fail();
	}
}

static void expect_not(const char *what)
{
	if (strstr(OUT, what)) {
		fprintf(stderr, "did not expect \"%s\" in:\n%s\n", what, OUT);
		fail();
	}
}

static double metric(const char *name)
{
	return itest_metric(F->url, name);
}

/* ---- knot ----------------------------------------------------------------------------------------- */

static void write_knot(void)
{
	char path[400];
	cm_buf b;
	cm_buf_init(&b);
	cm_buf_printf(&b,
	              "server:\n  listen: 127.0.0.1@%d\n  rundir: %s\n  udp-max-payload: 1220\n"
	              "database:\n  storage: %s\ntemplate:\n  - id: default\n    storage: %s\n"
	              "zone:\n  - domain: example.org\n    file: example.org.zone\n"
	              "  - domain: 2.0.192.in-addr.arpa\n    file: reverse.zone\n"
	              "log:\n  - target: stderr\n    any: info\n",
	              F->knot_port, F->dir, F->dir, F->dir);
	snprintf(path, sizeof(path), "%s/knot.conf", F->dir);
	itest_write_file(path, (const char *)b.data);
	b.len = 0;
	cm_buf_puts(&b, "$ORIGIN example.org.\n$TTL 300\n"
	                "@ IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n@ IN NS ns\n"
	                "ns IN A 127.0.0.1\nwww 123 IN A 192.0.2.10\n@ IN MX 10 mail.example.org.\n"
	                "mail IN A 192.0.2.25\ntxt IN TXT \"hello from knot\"\nbig IN TXT");
	for (int i = 0; i < 5; i++) { /* rdata 4 x 256 + 146 = 1170 bytes: a 1226-byte answer with EDNS0 */
		cm_buf_puts(&b, " \"");
		for (int j = 0; j < (i < 4 ? 255 : 145); j++)
			cm_buf_puts(&b, i < 4 ? "x" : "y");
		cm_buf_puts(&b, "\"");
	}
	cm_buf_puts(&b, "\n");
	snprintf(path, sizeof(path), "%s/example.org.zone", F->dir);
	itest_write_file(path, (const char *)b.data);
	cm_buf_close(&b);
	snprintf(path, sizeof(path), "%s/reverse.zone", F->dir);
	itest_write_file(path, "$ORIGIN 2.0.192.in-addr.arpa.\n$TTL 300\n"
	                       "@ IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n@ IN NS ns.example.org.\n"
	                       "10 IN PTR www.example.org.\n");
}

static int start_knot(void)
{
	char conf[300];
	snprintf(conf, sizeof(conf), "%s/knot.conf", F->dir);
	char *argv[] = {"/usr/sbin/knotd", "-c", conf, NULL};
	if (itest_spawn(&F->knot, F->dir, "knotd", argv))
		return -1;
	for (int i = 0; i < 100; i++) {
		if (strstr(run_at(F->knot_port, "dig", "www.example.org A"), "status: NOERROR"))
			return 0;
		itest_sleep_ms(100);
	}
	itest_dump_log(&F->knot);
	return -1;
}

/* ---- fixture -------------------------------------------------------------------------------------- */

/* Starts the aggregator on F's ports, with a forward cache of that many entries; waits for its DNS. */
static int start_aggregator(const char *cache)
{
	char token[300], manifest[300], data[300], listen[64], upstream[64];
	snprintf(token, sizeof(token), "%s/token", F->dir);
	snprintf(manifest, sizeof(manifest), "%s/services.json", F->dir);
	snprintf(data, sizeof(data), "%s/data", F->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", F->dns_port);
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", F->knot_port);
	const char *extra[] = {"--dns-listen",   listen,   "--services",          manifest,
	                       "--dns-upstream", upstream, "--dns-forward-cache", cache,
	                       NULL};
	if (itest_aggregator_start(&F->agg, F->dir, data, token, extra, F->url, sizeof(F->url)))
		return -1;
	for (int i = 0; i < 100; i++) {
		if (strstr(run("dig", "web.default.svc.cluster.local A"), "10.96.0.20"))
			return 0;
		itest_sleep_ms(100);
	}
	return -1;
}

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	F->knot_port = itest_port();
	F->dns_port = itest_port();
	write_knot();
	if (start_knot())
		return -1;
	char path[300];
	snprintf(path, sizeof(path), "%s/token", F->dir);
	itest_write_file(path, "fwd-test\n");
	snprintf(path, sizeof(path), "%s/services.json", F->dir);
	itest_write_file(path, "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\","
	                       "\"namespace\":\"default\"},\"spec\":{\"clusterIP\":\"10.96.0.20\"}}\n");
	return start_aggregator("0"); /* the tests before test_cache see every query reach knot */
}

static int teardown(void **state)
{
	(void)state;
	if (F->agg.pid > 0)
		itest_aggregator_stop(&F->agg);
	if (F->knot.pid > 0)
		itest_stop(&F->knot, SIGTERM, 5000);
	itest_rmtree(F->dir);
	free(F);
	return 0;
}

/* ---- tests ---------------------------------------------------------------------------------------- */

static void test_answers_pass_through(void **state)
{
	(void)state;
	run("dig", "www.example.org A");
	expect("status: NOERROR"), expect("flags: qr aa rd;"), expect("ANSWER: 1, AUTHORITY: 0");
	expect("\nwww.example.org. 123 IN A 192.0.2.10\n"), expect("udp: 1220"); /* knot's OPT */
	run("dig", "example.org MX");
	expect("\nexample.org. 300 IN MX 10 mail.example.org.\n");
	run("dig", "txt.example.org TXT");
	expect("\ntxt.example.org. 300 IN TXT \"hello from knot\"\n");
	run("dig", "WWW.Example.ORG A"); /* the client's case comes back, in the question and the owner */
	expect("\n;WWW.Example.ORG. IN A\n"), expect("\nWWW.Example.ORG. 123 IN A 192.0.2.10\n");
	run("kdig", "www.example.org A");
	expect("status: NOERROR"), expect("Flags: qr aa rd;"), expect("www.example.org. 123 IN A 192.0.2.10");
	run("kdig", "+tcp example.org MX"); /* a TCP client goes upstream over TCP */
	expect("example.org. 300 IN MX 10 mail.example.org."), expect("(TCP)");
	assert_true(metric("corral_dns_forwarded_total") >= 6);
	assert_true(metric("corral_dns_forward_answers_total") >= 6);
}

static void test_nxdomain_passes_through(void **state)
{
	(void)state;
	run("dig", "nope.example.org A");
	expect("status: NXDOMAIN"), expect("flags: qr aa rd;"), expect("ANSWER: 0, AUTHORITY: 1");
	expect("\nexample.org. 60 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n");
	run("kdig", "nope.example.org A");
	expect("status: NXDOMAIN");
}

static void test_truncated_retried_over_tcp(void **state)
{
	(void)state;
	run_at(F->knot_port, "dig", "+ignore big.example.org TXT"); /* knot itself truncates it over UDP */
	expect("flags: qr aa tc rd;");
	double retries = metric("corral_dns_forward_tcp_retries_total");
	run("dig", "big.example.org TXT"); /* corral fetched it over TCP; it fits the client's 1232 bytes */
	expect("flags: qr aa rd;"), expect("ANSWER: 1,"), expect("MSG SIZE rcvd: 1226"), expect("(UDP)");
	expect_not("Truncated"), expect("yyyyy\"\n");
	assert_true(metric("corral_dns_forward_tcp_retries_total") >= retries + 1);
	run("dig", "+noedns big.example.org TXT"); /* over 512: TC to the client, which retries over TCP */
	expect("Truncated, retrying in TCP mode."), expect("ANSWER: 1,"), expect("(TCP)");
}

static void test_own_zone_stays_local(void **state)
{
	(void)state;
	double fwd = metric("corral_dns_forwarded_total");
	run("dig", "web.default.svc.cluster.local A");
	expect("flags: qr aa rd;"), expect("\nweb.default.svc.cluster.local. 5 IN A 10.96.0.20\n");
	run("dig", "nope.default.svc.cluster.local A");
	expect("status: NXDOMAIN"), expect("cluster.local. 5 IN SOA ns.dns.cluster.local.");
	run("dig", "-x 10.96.0.20");
	expect("IN PTR web.default.svc.cluster.local.");
	assert_true(metric("corral_dns_forwarded_total") == fwd);
}

/* Reverse names we have nothing for fall through to the upstream (NXDOMAIN without one). */
static void test_reverse_fallthrough(void **state)
{
	(void)state;
	double fwd = metric("corral_dns_forwarded_total");
	run("dig", "96.10.in-addr.arpa PTR"); /* an empty non-terminal of ours: NODATA, here */
	expect("status: NOERROR"), expect("\nin-addr.arpa. 5 IN SOA ns.dns.cluster.local.");
	assert_true(metric("corral_dns_forwarded_total") == fwd);
	run("dig", "-x 192.0.2.10");
	expect("flags: qr aa rd;"), expect("\n10.2.0.192.in-addr.arpa. 300 IN PTR www.example.org.\n");
	run("dig", "-x 10.96.0.21"); /* knot has no zone for it */
	expect("status: REFUSED");
	assert_true(metric("corral_dns_forwarded_total") == fwd + 2);
}

/* The aggregator again, with its default cache: a repeated question is answered from memory, its TTL
 * counting down. */
static void test_cache(void **state)
{
	(void)state;
	assert_int_equal(itest_aggregator_stop(&F->agg), 0);
	assert_int_equal(start_aggregator("10000"), 0);
	run("dig", "www.example.org A");
	expect("\nwww.example.org. 123 IN A 192.0.2.10\n");
	itest_sleep_ms(1100);
	run("dig", "WWW.example.ORG A");
	expect("status: NOERROR"), expect("flags: qr aa rd;"), expect(" IN A 192.0.2.10\n");
	const char *owner = strstr(OUT, "\nWWW.example.ORG. ");
	assert_non_null(owner);
	int ttl = atoi(owner + 18); /* 123 less the whole seconds it has been kept: 1, or more on a slow machine */
	assert_true(ttl < 123 && ttl > 113);
	run("dig", "nope.example.org A");
	run("dig", "nope.example.org A"); /* negative: SOA MINIMUM 60 */
	expect("status: NXDOMAIN"), expect("\nexample.org. 60 IN SOA ns.example.org.");
	assert_true(metric("corral_dns_forwarded_total") == 2);
	assert_true(metric("corral_dns_forward_cache_hits_total") == 2);
	assert_true(metric("corral_dns_forward_cache_entries") == 2);
}

/* knot stopped: SERVFAIL for what the cache does not hold, in time; what it holds is still answered. */
static void test_upstream_down_servfail(void **state)
{
	(void)state;
	assert_int_equal(itest_stop(&F->knot, SIGTERM, 5000), 0);
	F->knot.pid = 0;
	const char *ways[] = {"mail.example.org A", "+tcp mail.example.org A"};
	for (int i = 0; i < 2; i++) {
		int64_t t0 = itest_now_ms();
		run("dig", ways[i]);
		int64_t ms = itest_now_ms() - t0;
		expect("status: SERVFAIL"), expect("ANSWER: 0,");
		if (ms > 3500) {
			fprintf(stderr, "SERVFAIL after %lld ms\n", (long long)ms);
			fail();
		}
	}
	assert_true(metric("corral_dns_forward_upstream_errors_total") + metric("corral_dns_forward_timeouts_total") >=
	            2);
	run("dig", "web.default.svc.cluster.local A"); /* still serving its own zone */
	expect("10.96.0.20");
	run("dig", "www.example.org A");
	expect("status: NOERROR"), expect("192.0.2.10");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answers_pass_through), cmocka_unit_test(test_nxdomain_passes_through),
	    cmocka_unit_test(test_truncated_retried_over_tcp), cmocka_unit_test(test_own_zone_stays_local),
	    cmocka_unit_test(test_reverse_fallthrough), cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_upstream_down_servfail),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
