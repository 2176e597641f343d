/* test_dns_conformance.c -- the aggregator's DNS against the real dig and kdig, row by row of the
 * Kubernetes DNS schema 1.1.0: A, AAAA, SRV with glue, PTR, CNAME, TXT, headless endpoints, NXDOMAIN,
 * NODATA, REFUSED, TC with the TCP retry, EDNS sizes, case, FORMERR/NOTIMP; then the registry paths:
 * a manifest rewritten on disk and services POSTed and DELETEd through /api/v1/services.
 *
 * The aggregator runs with --services pointing at a manifest this test writes (kubectl JSON: a List
 * of Services and EndpointSlices), DNS on a loopback port picked here. Flags, sections and TTLs are
 * read from dig's and kdig's own output, whitespace squeezed.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], token[300], url[64], manifest[300];
	int dns_port;
	itest_proc agg;
} fixture;

static fixture *F;

/* ---- the manifest --------------------------------------------------------------------------------- */

static void endpoints_json(cm_buf *b, const char *ns, const char *svc, int n, int not_ready_from)
{
	cm_buf_printf(
	    b,
	    ",{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"%s-x\","
	    "\"namespace\":\"%s\",\"labels\":{\"kubernetes.io/service-name\":\"%s\"}},\"addressType\":\"IPv4\","
	    "\"endpoints\":[",
	    svc, ns, svc);
	for (int i = 0; i < n; i++)
		cm_buf_printf(b, "%s{\"addresses\":[\"10.244.%d.%d\"],%s\"conditions\":{\"ready\":%s}}", i ? "," : "",
		              n > 50 ? 7 : 1, i + 5, i == 0 && n < 50 ? "\"hostname\":\"db-0\"," : "",
		              i >= not_ready_from ? "false" : "true");
	cm_buf_puts(b, "],\"ports\":[{\"name\":\"pg\",\"protocol\":\"TCP\",\"port\":5432}]}");
}

#define HEADLESS                                                                                                       \
	",{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"prod\"},"          \
	"\"spec\":{\"clusterIP\":\"None\",\"ports\":[{\"name\":\"pg\",\"protocol\":\"TCP\",\"port\":5432}]}}"

static void write_manifest(const char *extra_svc)
{
	cm_buf b;
	cm_buf_init(&b);
	cm_buf_puts(
	    &b,
	    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
	    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"},"
	    "\"spec\":{\"type\":\"ClusterIP\",\"clusterIP\":\"10.96.0.20\",\"clusterIPs\":[\"10.96.0.20\",\"fd00::20\"]"
	    ","
	    "\"selector\":{\"app\":\"web\"},\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":80}]}}"
	    ",{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"ext\",\"namespace\":\"default\"},"
	    "\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"api.example.com\"}}");
	cm_buf_printf(&b, HEADLESS, "db");
	endpoints_json(&b, "prod", "db", 3, 2);
	cm_buf_printf(&b, HEADLESS, "mid");
	endpoints_json(&b, "prod", "mid", 40, 40);
	cm_buf_printf(&b, HEADLESS, "big");
	endpoints_json(&b, "prod", "big", 100, 100);
	if (extra_svc)
		cm_buf_printf(&b, HEADLESS, extra_svc), endpoints_json(&b, "prod", extra_svc, 1, 1);
	cm_buf_puts(&b, "]}\n");
	char tmp[320];
	snprintf(tmp, sizeof(tmp), "%s.tmp", F->manifest);
	itest_write_file(tmp, (const char *)b.data);
	assert_int_equal(rename(tmp, F->manifest), 0);
	cm_buf_close(&b);
}

/* ---- running dig and kdig ------------------------------------------------------------------------- */

static char OUT[1 << 17];

/* Runs "<tool> -p PORT @127.0.0.1 <args>" and keeps its output in OUT, whitespace squeezed to one space. */
static const char *run(const char *tool, const char *args)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "%s -p %d @127.0.0.1 %s %s 2>&1", tool, F->dns_port,
	         strcmp(tool, "kdig") ? "+time=2 +tries=1" : "+timeout=2 +retry=0", args);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = 0;
	int c, sp = 0;
	while ((c = fgetc(p)) != EOF && n + 1 < sizeof(OUT)) {
		if (c == '\t' || c == ' ') {
			sp = 1;
			continue;
		}
		if (sp && n && OUT[n - 1] != '\n' && c != '\n')
			OUT[n++] = ' ';
		sp = 0;
		OUT[n++] = (char)c;
	}
	OUT[n] = 0;
	pclose(p);
	return OUT;
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

/* Repeats a dig until its output holds want (registry changes take effect within ~100 ms + build). */
static int wait_dig(const char *args, const char *want, int timeout_ms)
{
	int64_t end = itest_now_ms() + timeout_ms;
	do {
		if (strstr(run("dig", args), want))
			return 0;
		itest_sleep_ms(100);
	} while (itest_now_ms() < end);
	return -1;
}

/* ---- fixture -------------------------------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	F = calloc(1, sizeof(*F));
	itest_mkdtemp(F->dir, sizeof(F->dir));
	snprintf(F->token, sizeof(F->token), "%s/token", F->dir);
	itest_write_file(F->token, "dns-test\n");
	snprintf(F->manifest, sizeof(F->manifest), "%s/services.json", F->dir);
	write_manifest(NULL);
	F->dns_port = itest_port();
	char data[300], listen[64];
	snprintf(data, sizeof(data), "%s/data", F->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", F->dns_port);
	const char *extra[] = {"--dns-listen", listen, "--services", F->manifest, "--dns-threads", "2", NULL};
	if (itest_aggregator_start(&F->agg, F->dir, data, F->token, extra, F->url, sizeof(F->url)))
		return -1;
	return wait_dig("web.default.svc.cluster.local A", "status: NOERROR", 10000);
}

static int teardown(void **state)
{
	(void)state;
	if (F->agg.pid > 0)
		itest_stop(&F->agg, SIGTERM, 10000);
	itest_rmtree(F->dir);
	free(F);
	return 0;
}

/* ---- the schema with dig -------------------------------------------------------------------------- */

static void test_clusterip_rows(void **state)
{
	(void)state;
	run("dig", "web.default.svc.cluster.local A");
	expect("status: NOERROR"), expect("flags: qr aa rd;"), expect("ANSWER: 1, AUTHORITY: 0");
	expect("\nweb.default.svc.cluster.local. 5 IN A 10.96.0.20\n");
	expect("; EDNS: version: 0, flags:; udp: 1232");
	run("dig", "web.default.svc.cluster.local AAAA");
	expect("\nweb.default.svc.cluster.local. 5 IN AAAA fd00::20\n");
	run("dig", "_http._tcp.web.default.svc.cluster.local SRV");
	expect("\n_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.\n");
	expect("ADDITIONAL: 3"); /* A + AAAA glue + OPT */
	expect(";; ADDITIONAL SECTION:\nweb.default.svc.cluster.local. 5 IN A 10.96.0.20\n");
	run("dig", "-x 10.96.0.20");
	expect("flags: qr aa rd;"), expect("\n20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.\n");
	run("dig", "-x fd00::20");
	expect("IN PTR web.default.svc.cluster.local.\n");
	run("dig", "WEB.Default.SVC.cluster.local A"); /* the query's case comes back */
	expect("\nWEB.Default.SVC.cluster.local. 5 IN A 10.96.0.20\n");
}

static void test_headless_cname_txt(void **state)
{
	(void)state;
	run("dig", "db.prod.svc.cluster.local A");
	expect("ANSWER: 2,"), expect("db.prod.svc.cluster.local. 5 IN A 10.244.1.5\n");
	expect("db.prod.svc.cluster.local. 5 IN A 10.244.1.6\n"), expect_not("10.244.1.7"); /* not ready */
	run("dig", "db-0.db.prod.svc.cluster.local A");
	expect("\ndb-0.db.prod.svc.cluster.local. 5 IN A 10.244.1.5\n");
	run("dig", "10-244-1-6.db.prod.svc.cluster.local A");
	expect("\n10-244-1-6.db.prod.svc.cluster.local. 5 IN A 10.244.1.6\n");
	run("dig", "_pg._tcp.db.prod.svc.cluster.local SRV");
	expect("ANSWER: 2,"), expect("IN SRV 0 50 5432 db-0.db.prod.svc.cluster.local.\n");
	expect(";; ADDITIONAL SECTION:\n"), expect("\ndb-0.db.prod.svc.cluster.local. 5 IN A 10.244.1.5\n");
	run("dig", "-x 10.244.1.5");
	expect("IN PTR db-0.db.prod.svc.cluster.local.\n");
	run("dig", "ext.default.svc.cluster.local A");
	expect("status: NOERROR"), expect("\next.default.svc.cluster.local. 5 IN CNAME api.example.com.\n");
	run("dig", "dns-version.cluster.local TXT");
	expect("\ndns-version.cluster.local. 5 IN TXT \"1.1.0\"\n");
}

static void test_negative_answers(void **state)
{
	(void)state;
	run("dig", "nope.default.svc.cluster.local A");
	expect("status: NXDOMAIN"), expect("flags: qr aa rd;"), expect("ANSWER: 0, AUTHORITY: 1");
	expect(";; AUTHORITY SECTION:\ncluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. ");
	run("dig", "web.default.svc.cluster.local TXT"); /* NODATA */
	expect("status: NOERROR"), expect("ANSWER: 0, AUTHORITY: 1"), expect("cluster.local. 5 IN SOA");
	run("dig", "prod.svc.cluster.local A"); /* an empty non-terminal: NODATA, not NXDOMAIN (RFC 8020) */
	expect("status: NOERROR"), expect("ANSWER: 0, AUTHORITY: 1");
	run("dig", "_tcp.db.prod.svc.cluster.local SRV");
	expect("status: NOERROR");
	run("dig", "x.db-0.db.prod.svc.cluster.local A");
	expect("status: NXDOMAIN");
	run("dig", "www.example.com A");
	expect("status: REFUSED"), expect_not(" aa"), expect("ANSWER: 0, AUTHORITY: 0");
	run("dig", "+opcode=2 web.default.svc.cluster.local A");
	expect("status: NOTIMP");
	run("dig", "web.default.svc.cluster.local AXFR"); /* transfers are not served */
	expect("; Transfer failed.");
}

static void test_truncation_and_edns(void **state)
{
	(void)state;
	run("dig", "big.prod.svc.cluster.local A"); /* 100 records: over 1232, dig retries over TCP */
	expect("Truncated, retrying in TCP mode."), expect("ANSWER: 100,"), expect("(TCP)");
	run("dig", "+ignore big.prod.svc.cluster.local A");
	expect("flags: qr aa tc rd;"), expect("ANSWER: 0,");
	run("dig", "+ignore +bufsize=4096 big.prod.svc.cluster.local A"); /* the server caps at 1232 */
	expect("flags: qr aa tc rd;"), expect("udp: 1232");
	run("dig", "mid.prod.svc.cluster.local A"); /* 40 records: fit 1232, not 512 */
	expect("flags: qr aa rd;"), expect("ANSWER: 40,"), expect("(UDP)");
	run("dig", "+ignore +noedns mid.prod.svc.cluster.local A");
	expect("flags: qr aa tc rd;"), expect_not("OPT PSEUDOSECTION");
	run("dig", "+ignore +bufsize=512 mid.prod.svc.cluster.local A");
	expect("flags: qr aa tc rd;");
	run("dig", "+tcp big.prod.svc.cluster.local A");
	expect("ANSWER: 100,"), expect("(TCP)");
	run("dig", "+edns=1 web.default.svc.cluster.local A");
	expect(";; BADVERS, retrying with EDNS version 0.");
}

/* ---- the same with kdig --------------------------------------------------------------------------- */

static void test_kdig(void **state)
{
	(void)state;
	run("kdig", "web.default.svc.cluster.local A");
	expect("status: NOERROR"), expect("Flags: qr aa rd;"),
	    expect("web.default.svc.cluster.local. 5 IN A 10.96.0.20");
	run("kdig", "+edns _pg._tcp.db.prod.svc.cluster.local SRV");
	expect("ANSWER: 2;"), expect("ADDITIONAL: 3\n"), expect("Version: 0; flags: ; UDP size: 1232 B");
	run("kdig", "nope.prod.svc.cluster.local A");
	expect("status: NXDOMAIN"), expect("AUTHORITY SECTION:\ncluster.local. 5 IN SOA ns.dns.cluster.local.");
	run("kdig", "+tcp big.prod.svc.cluster.local A");
	expect("ANSWER: 100;"), expect("(TCP)");
	run("kdig", "+ignore big.prod.svc.cluster.local A");
	expect("Flags: qr aa tc rd;");
	run("kdig", "-t TXT dns-version.cluster.local");
	expect("\"1.1.0\"");
	run("kdig", "www.example.com A");
	expect("status: REFUSED");
	run("kdig", "+tcp +keepopen web.default.svc.cluster.local A ext.default.svc.cluster.local A");
	expect("10.96.0.20"), expect("CNAME api.example.com."); /* two queries on one connection */
}

/* ---- malformed packets ---------------------------------------------------------------------------- */

static int udp_ask(const void *q, size_t n, uint8_t *ans, size_t cap)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {
	    .sin_family = AF_INET, .sin_port = htons((uint16_t)F->dns_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {0, 300000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	sendto(fd, q, n, 0, (struct sockaddr *)&a, sizeof(a));
	int r = (int)recv(fd, ans, cap, 0);
	close(fd);
	return r;
}

static void test_malformed_packets(void **state)
{
	(void)state;
	uint8_t ans[4096];
	const uint8_t loop[] = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1};
	const uint8_t counts[] = {0, 2, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1};
	const uint8_t twoq[] = {0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1};
	uint8_t huge[300] = {0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x7F};
	const uint8_t *pk[] = {loop, counts, twoq, huge};
	const size_t len[] = {sizeof(loop), sizeof(counts), sizeof(twoq), 12 + 1 + 127 + 5};
	for (int i = 0; i < 4; i++) {
		int r = udp_ask(pk[i], len[i], ans, sizeof(ans));
		assert_true(r >= 12);
		assert_int_equal(ans[1], pk[i][1]);
		assert_int_equal(ans[3] & 15, 1); /* FORMERR */
	}
	const uint8_t response[] = {0, 5, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_true(udp_ask(response, sizeof(response), ans, sizeof(ans)) < 0); /* dropped */
	run("dig", "web.default.svc.cluster.local A");
	expect("status: NOERROR"); /* still serving */
}

/* ---- the registry: manifest reload and the API ---------------------------------------------------- */

static void test_manifest_reload(void **state)
{
	(void)state;
	run("dig", "late.prod.svc.cluster.local A");
	expect("status: NXDOMAIN");
	itest_sleep_ms(1100); /* a new mtime second for filesystems with coarse stamps */
	write_manifest("late");
	assert_int_equal(wait_dig("late.prod.svc.cluster.local A", "status: NOERROR", 5000), 0);
	expect("10.244.1.5");
	write_manifest(NULL);
	assert_int_equal(wait_dig("late.prod.svc.cluster.local A", "status: NXDOMAIN", 5000), 0);
}

static void test_api(void **state)
{
	(void)state;
	char url[128];
	snprintf(url, sizeof(url), "%s/api/v1/services", F->url);
	const char *svc =
	    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"api-svc\",\"namespace\":\"team\"},"
	    "\"spec\":{\"clusterIP\":\"10.96.5.5\",\"ports\":[{\"name\":\"grpc\",\"protocol\":\"TCP\",\"port\":9000}]}"
	    "}";
	cm_buf reply;
	cm_buf_init(&reply);
	const char *auth[] = {"Authorization: Bearer dns-test", NULL}; /* registry changes need the push token */
	assert_int_equal(itest_http("POST", url, NULL, svc, strlen(svc), &reply), 401);
	reply.len = 0;
	assert_int_equal(itest_http("POST", url, auth, svc, strlen(svc), &reply), 200);
	assert_int_equal(wait_dig("api-svc.team.svc.cluster.local A", "10.96.5.5", 5000), 0);
	run("dig", "_grpc._tcp.api-svc.team.svc.cluster.local SRV");
	expect("IN SRV 0 100 9000 api-svc.team.svc.cluster.local.");
	reply.len = 0;
	assert_int_equal(itest_http("POST", url, auth, "{\"kind\":\"Pod\"}", 14, &reply), 400);
	long st;
	json_t *j = itest_get_json(url, &st);
	assert_int_equal(st, 200);
	size_t i;
	json_t *s;
	int seen = 0;
	json_array_foreach(json_object_get(j, "data"), i, s)
	{
		if (!strcmp(json_string_value(json_object_get(s, "name")), "db"))
			seen += json_array_size(json_object_get(s, "endpoints")) == 3;
		if (!strcmp(json_string_value(json_object_get(s, "name")), "api-svc"))
			seen++;
	}
	json_decref(j);
	assert_int_equal(seen, 2);
	/* it survives a restart (sqlite) */
	itest_stop(&F->agg, SIGTERM, 10000);
	char data[300], listen[64];
	snprintf(data, sizeof(data), "%s/data", F->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", F->dns_port);
	const char *extra[] = {"--dns-listen", listen, "--services", F->manifest, NULL};
	assert_int_equal(itest_aggregator_start(&F->agg, F->dir, data, F->token, extra, F->url, sizeof(F->url)), 0);
	assert_int_equal(wait_dig("api-svc.team.svc.cluster.local A", "10.96.5.5", 5000), 0);
	snprintf(url, sizeof(url), "%s/api/v1/services?namespace=team&name=api-svc", F->url);
	reply.len = 0;
	assert_int_equal(itest_http("DELETE", url, auth, NULL, 0, &reply), 200);
	assert_int_equal(wait_dig("api-svc.team.svc.cluster.local A", "status: NXDOMAIN", 5000), 0);
	reply.len = 0;
	assert_int_equal(itest_http("DELETE", url, auth, NULL, 0, &reply), 404);
	cm_buf_close(&reply);
	snprintf(url, sizeof(url), "%s/metrics", F->url);
	reply.len = 0;
	cm_buf_init(&reply);
	assert_int_equal(itest_http("GET", url, NULL, NULL, 0, &reply), 200);
	cm_buf_append(&reply, "", 1);
	assert_non_null(strstr((char *)reply.data, "corral_dns_queries_total{type=\"A\"} "));
	assert_non_null(strstr((char *)reply.data, "corral_dns_responses_total{rcode=\"NXDOMAIN\"} "));
	assert_non_null(strstr((char *)reply.data, "corral_dns_zone_generation "));
	cm_buf_close(&reply);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clusterip_rows),
	    cmocka_unit_test(test_headless_cname_txt),
	    cmocka_unit_test(test_negative_answers),
	    cmocka_unit_test(test_truncation_and_edns),
	    cmocka_unit_test(test_kdig),
	    cmocka_unit_test(test_malformed_packets),
	    cmocka_unit_test(test_manifest_reload),
	    cmocka_unit_test(test_api),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
