/* test_kube_source.c -- the Kubernetes API as a service source (issue 8): real aggregator, real dig.
 *
 * Debian ships no kube-apiserver, so tests/integration/kube_api.py (started here on a loopback port,
 * stopped by PID) answers GET /api/v1/services and GET /apis/discovery.k8s.io/v1/endpointslices with the
 * List bodies this test writes, streams watch events as those files change (410 for a version it has
 * not served), and answers 401 unless the bearer token is the one in its token file. The
 * bodies below are shaped as the API server returns them (Kubernetes API reference, "Service v1" and
 * "EndpointSlice v1", operation list: a ServiceList / EndpointSliceList with apiVersion, kind, metadata
 * {resourceVersion} and items that carry no kind; items with metadata {name, namespace, uid,
 * resourceVersion, creationTimestamp, labels}, Service spec {type, clusterIP, clusterIPs, ports
 * [{name, protocol, port, targetPort}], selector, externalName, ...}, EndpointSlice {addressType,
 * endpoints [{addresses, conditions {ready, serving, terminating}, hostname, targetRef, nodeName}],
 * ports [{name, protocol, port}]} labelled kubernetes.io/service-name).
 * It speaks HTTPS with a certificate from a test CA (itest_make_certs), which the aggregator trusts
 * through --kube-ca-file, as in a pod. The aggregator retries failures after 200 ms. Checked with dig,
 * in order:
 *   1. ClusterIP, headless (only the ready endpoint; <hostname>.<svc> too), ExternalName and the
 *      default/kubernetes service appear (the Services come in two pages); a --services manifest
 *      service is there as well;
 *   2. a changed endpoint and a deleted Service are followed through the watch (no second list);
 *   3. the watch of the EndpointSlices gets 410 Gone: they are listed again and a change the watch never
 *      carried is seen;
 *   4. the API server goes down: the last good state stays, a warning per resource (rate-limited) for
 *      many failures; it comes back on the same port knowing no old version: 410, list, the next change
 *      is seen;
 *   5. the server's token rotates but the aggregator's file still holds the old one: 401 even after the
 *      re-read, last good state kept; then the file rotates too: the next change is seen;
 *   and the manifest service stayed through all of it.
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
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"

#define WAIT_MS 10000

typedef struct fixture {
	char dir[256], api[300], token[320], kube_token[300], url[64];
	int dns_port, api_port;
	itest_proc agg, server;
} fixture;

/* ---- the recorded API bodies ------------------------------------------------------------------------ */

static const char SVC_HEAD[] =
    "{\"kind\":\"ServiceList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"%d\"},\"items\":["
    "{\"metadata\":{\"name\":\"kubernetes\",\"namespace\":\"default\",\"uid\":\"5f1c0e2a-0001\","
    "\"resourceVersion\":\"194\",\"creationTimestamp\":\"2026-11-20T09:00:00Z\",\"labels\":{\"component\":"
    "\"apiserver\",\"provider\":\"kubernetes\"}},\"spec\":{\"ports\":[{\"name\":\"https\",\"protocol\":\"TCP\","
    "\"port\":443,\"targetPort\":6443}],\"clusterIP\":\"10.96.0.1\",\"clusterIPs\":[\"10.96.0.1\"],\"type\":"
    "\"ClusterIP\",\"sessionAffinity\":\"None\",\"ipFamilies\":[\"IPv4\"],\"ipFamilyPolicy\":\"SingleStack\","
    "\"internalTrafficPolicy\":\"Cluster\"},\"status\":{\"loadBalancer\":{}}},"
    "{\"metadata\":{\"name\":\"db\",\"namespace\":\"shop\",\"uid\":\"5f1c0e2a-0003\",\"resourceVersion\":"
    "\"811\",\"creationTimestamp\":\"2026-11-20T09:10:00Z\"},\"spec\":{\"ports\":[{\"name\":\"pg\","
    "\"protocol\":\"TCP\",\"port\":5432,\"targetPort\":5432}],\"selector\":{\"app\":\"db\"},\"clusterIP\":"
    "\"None\",\"clusterIPs\":[\"None\"],\"type\":\"ClusterIP\",\"sessionAffinity\":\"None\"},\"status\":"
    "{\"loadBalancer\":{}}},"
    "{\"metadata\":{\"name\":\"ext\",\"namespace\":\"shop\",\"uid\":\"5f1c0e2a-0004\",\"resourceVersion\":"
    "\"812\",\"creationTimestamp\":\"2026-11-20T09:11:00Z\"},\"spec\":{\"type\":\"ExternalName\","
    "\"externalName\":\"db.example.org\",\"sessionAffinity\":\"None\"},\"status\":{\"loadBalancer\":{}}}";

static const char SVC_API[] =
    ",{\"metadata\":{\"name\":\"api\",\"namespace\":\"shop\",\"uid\":\"5f1c0e2a-0002\",\"resourceVersion\":"
    "\"810\",\"creationTimestamp\":\"2026-11-20T09:09:00Z\",\"labels\":{\"app\":\"api\"}},\"spec\":{\"ports\":"
    "[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080}],\"selector\":{\"app\":\"api\"},"
    "\"clusterIP\":\"10.96.0.20\",\"clusterIPs\":[\"10.96.0.20\"],\"type\":\"ClusterIP\",\"sessionAffinity\":"
    "\"None\",\"ipFamilies\":[\"IPv4\"],\"ipFamilyPolicy\":\"SingleStack\"},\"status\":{\"loadBalancer\":{}}}";

/* One endpoint of the db slice: address, ready, hostname. */
static const char SLICE_EP[] =
    "{\"addresses\":[\"%s\"],\"conditions\":{\"ready\":%s,\"serving\":%s,\"terminating\":false},\"hostname\":"
    "\"%s\",\"targetRef\":{\"kind\":\"Pod\",\"namespace\":\"shop\",\"name\":\"%s\",\"uid\":\"9a7e-%s\"},"
    "\"nodeName\":\"node-1\"}";

static const char SLICE_LIST[] =
    "{\"kind\":\"EndpointSliceList\",\"apiVersion\":\"discovery.k8s.io/v1\",\"metadata\":{\"resourceVersion\":"
    "\"%d\"},\"items\":["
    "{\"metadata\":{\"name\":\"kubernetes\",\"namespace\":\"default\",\"uid\":\"77aa-0001\",\"resourceVersion\":"
    "\"196\",\"creationTimestamp\":\"2026-11-20T09:00:00Z\",\"labels\":{\"kubernetes.io/service-name\":"
    "\"kubernetes\"}},\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"172.18.0.2\"],\"conditions\":"
    "{\"ready\":true}}],\"ports\":[{\"name\":\"https\",\"protocol\":\"TCP\",\"port\":6443}]},"
    "{\"metadata\":{\"name\":\"db-x7k2p\",\"generateName\":\"db-\",\"namespace\":\"shop\",\"uid\":\"77aa-0003\","
    "\"resourceVersion\":\"%d\",\"creationTimestamp\":\"2026-11-20T09:10:00Z\",\"labels\":{"
    "\"endpointslice.kubernetes.io/managed-by\":\"endpointslice-controller.k8s.io\","
    "\"kubernetes.io/service-name\":\"db\"},\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"Service\","
    "\"name\":\"db\",\"uid\":\"5f1c0e2a-0003\",\"controller\":true,\"blockOwnerDeletion\":true}]},"
    "\"addressType\":\"IPv4\",\"endpoints\":[%s,%s],\"ports\":[{\"name\":\"pg\",\"protocol\":\"TCP\","
    "\"port\":5432}]}]}";

/* Writes path atomically (temp file + rename), so the server never reads half a body. */
static void put(const char *path, const char *body)
{
	char tmp[512];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	itest_write_file(tmp, body);
	assert_int_equal(rename(tmp, path), 0);
}

/* The API's state: with or without shop/api, db's endpoints db-0 (ready) at ip0 and db-1 (not ready). */
static void api_state(fixture *f, int rv, int with_api, const char *ip0)
{
	static char buf[16384];
	char path[400], ep0[1024], ep1[1024];
	int n = snprintf(buf, sizeof(buf), SVC_HEAD, rv);
	snprintf(buf + n, sizeof(buf) - (size_t)n, "%s]}", with_api ? SVC_API : "");
	snprintf(path, sizeof(path), "%s/services.json", f->api);
	put(path, buf);
	snprintf(ep0, sizeof(ep0), SLICE_EP, ip0, "true", "true", "db-0", "db-0", "0");
	snprintf(ep1, sizeof(ep1), SLICE_EP, "10.1.0.2", "false", "false", "db-1", "db-1", "1");
	snprintf(buf, sizeof(buf), SLICE_LIST, rv, rv, ep0, ep1);
	snprintf(path, sizeof(path), "%s/endpointslices.json", f->api);
	put(path, buf);
}

/* ---- processes ------------------------------------------------------------------------------------ */

static void start_server(fixture *f)
{
	char script[4096], port[16], cert[300], key[300];
	const char *src = getenv("CORRAL_SRC");
	snprintf(script, sizeof(script), "%s/tests/integration/kube_api.py", src ? src : ".");
	snprintf(port, sizeof(port), "%d", f->api_port);
	snprintf(cert, sizeof(cert), "%s/server.crt", f->dir);
	snprintf(key, sizeof(key), "%s/server.key", f->dir);
	char *argv[] = {"/usr/bin/python3", script, port, f->api, cert, key, NULL};
	assert_int_equal(itest_spawn(&f->server, f->dir, "kube-api", argv), 0);
	assert_int_equal(itest_wait_log(&f->server, "ready", 10000), 0);
}

/* ---- dig ------------------------------------------------------------------------------------------ */

static char OUT[1 << 16];

static const char *dig(fixture *f, const char *name, const char *type, const char *opts)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "dig -p %d @127.0.0.1 +time=1 +tries=1 %s %s %s 2>&1", f->dns_port, opts, name,
	         type);
	itest_capture(cmd, OUT, sizeof(OUT));
	return OUT;
}

/* Polls until "dig +short name type" prints exactly want ("" for nothing with NXDOMAIN). */
static void wait_answer(fixture *f, const char *name, const char *type, const char *want)
{
	int64_t t0 = itest_now_ms();
	for (;;) {
		int ok = *want ? !strcmp(dig(f, name, type, "+short"), want)
		               : strstr(dig(f, name, type, "+noall +comments"), "status: NXDOMAIN") != NULL;
		if (ok)
			return;
		if (itest_now_ms() - t0 > WAIT_MS) {
			itest_dump_log(&f->agg);
			fail_msg("%s %s: want \"%s\", last answer:\n%s", name, type, want, OUT);
		}
		itest_sleep_ms(50);
	}
}

/* Lines of the aggregator's log that hold s. */
static int log_count(fixture *f, const char *s)
{
	char line[4096];
	int n = 0;
	FILE *fp = fopen(f->agg.log, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp))
		n += strstr(line, s) != NULL;
	fclose(fp);
	return n;
}

/* Lines of the API server's log that are exactly s. */
static int server_count(fixture *f, const char *s)
{
	char line[4096];
	int n = 0;
	FILE *fp = fopen(f->server.log, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp))
		n += !strncmp(line, s, strlen(s)) && line[strlen(s)] == '\n';
	fclose(fp);
	return n;
}

/* The "source" /api/v1/services gives shop/<name>, or "" when it lists no such service. */
static const char *source_of(fixture *f, const char *name)
{
	static char src[32];
	char url[128];
	long status = 0;
	snprintf(url, sizeof(url), "%s/api/v1/services?namespace=shop", f->url);
	json_t *j = itest_get_json(url, &status), *s;
	size_t i;
	src[0] = 0;
	json_array_foreach(json_object_get(j, "data"), i, s)
	{
		if (!strcmp(json_string_value(json_object_get(s, "name")), name))
			snprintf(src, sizeof(src), "%s", json_string_value(json_object_get(s, "source")));
	}
	json_decref(j);
	return src;
}

/* ---- the test ------------------------------------------------------------------------------------- */

static void check_last_good(fixture *f, const char *db_ip)
{
	char want[64];
	snprintf(want, sizeof(want), "%s\n", db_ip);
	assert_string_equal(dig(f, "db.shop.svc.cluster.local", "A", "+short"), want);
	assert_string_equal(dig(f, "static.shop.svc.cluster.local", "A", "+short"), "10.96.0.99\n");
	assert_string_equal(dig(f, "kubernetes.default.svc.cluster.local", "A", "+short"), "10.96.0.1\n");
}

static void test_kube_source(void **state)
{
	fixture *f = *state;
	/* 1. everything appears */
	wait_answer(f, "api.shop.svc.cluster.local", "A", "10.96.0.20\n");
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.1\n"); /* db-1 is not ready */
	wait_answer(f, "db-0.db.shop.svc.cluster.local", "A", "10.1.0.1\n");
	wait_answer(f, "_pg._tcp.db.shop.svc.cluster.local", "SRV", "0 100 5432 db-0.db.shop.svc.cluster.local.\n");
	wait_answer(f, "ext.shop.svc.cluster.local", "CNAME", "db.example.org.\n");
	check_last_good(f, "10.1.0.1");
	assert_string_equal(source_of(f, "db"), "kubernetes");
	assert_string_equal(source_of(f, "static"), "manifest");
	/* 2. an endpoint changes, a Service is deleted: through the watch */
	api_state(f, 2, 0, "10.1.0.3");
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.3\n");
	wait_answer(f, "api.shop.svc.cluster.local", "A", "");
	assert_string_equal(source_of(f, "api"), "");
	assert_int_equal(server_count(f, "200 /api/v1/services"), 2); /* one list of 4 in pages of 2 */
	assert_true(itest_metric(f->url, "corral_kube_lists_total{resource=\"services\"}") == 1);
	assert_int_equal(server_count(f, "200 /apis/discovery.k8s.io/v1/endpointslices"), 1);
	assert_true(server_count(f, "200 /apis/discovery.k8s.io/v1/endpointslices watch") >= 1);
	/* 3. 410 Gone on the slices' watch: listed again, with a change no event carried */
	char expire[400];
	snprintf(expire, sizeof(expire), "%s/expire-endpointslices.json", f->api);
	put(expire, "");
	struct stat sb;
	for (int64_t t0 = itest_now_ms(); !stat(expire, &sb); itest_sleep_ms(20)) /* the 410 went out */
		assert_true(itest_now_ms() - t0 < WAIT_MS);
	api_state(f, 3, 0, "10.1.0.6");
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.6\n");
	assert_int_equal(server_count(f, "200 /apis/discovery.k8s.io/v1/endpointslices"), 2);
	assert_int_equal(server_count(f, "200 /api/v1/services"), 2);
	assert_true(itest_metric(f->url, "corral_kube_lists_total{resource=\"endpointslices\"}") == 2);
	assert_true(itest_metric(f->url, "corral_kube_watch_events_total{resource=\"services\"}") >= 1);
	assert_true(itest_metric(f->url, "corral_kube_objects{resource=\"services\"}") == 3);
	assert_true(itest_metric(f->url, "corral_kube_errors_total{resource=\"services\"}") == 0);
	/* 3b. a watch line that is not JSON: the same version would bring it again, so the slices are listed
	 * again, and a change no event carried arrives */
	char garbage[400];
	snprintf(garbage, sizeof(garbage), "%s/garbage-endpointslices.json", f->api);
	put(garbage, "");
	for (int64_t t0 = itest_now_ms(); !stat(garbage, &sb); itest_sleep_ms(20))
		assert_true(itest_now_ms() - t0 < WAIT_MS);
	api_state(f, 3, 0, "10.1.0.7");
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.7\n");
	assert_true(itest_metric(f->url, "corral_kube_lists_total{resource=\"endpointslices\"}") == 3);
	assert_int_equal(log_count(f, "kubernetes API:"), 1); /* the bad line, warned */
	/* 4. the server goes down: the last good state stays, warned once per resource (the slices'
	 * warning above still holds theirs back) */
	itest_stop(&f->server, SIGTERM, 5000);
	itest_sleep_ms(1500); /* about 7 failed rounds per resource */
	check_last_good(f, "10.1.0.7");
	int warned = log_count(f, "kubernetes API:");
	assert_true(warned >= 1 && warned <= 2);
	assert_true(itest_metric(f->url, "corral_kube_errors_total{resource=\"services\"}") >= 3);
	api_state(f, 4, 0, "10.1.0.4");
	start_server(f); /* it knows no old version: 410, then a list */
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.4\n");
	/* 5. the server's token rotates first: 401 even after the re-read, last good state kept */
	put(f->token, "kube-token-2\n");
	api_state(f, 5, 1, "10.1.0.5");
	itest_sleep_ms(1000);
	check_last_good(f, "10.1.0.4");
	assert_true(server_count(f, "401 /api/v1/services") + server_count(f, "401 /api/v1/services watch") >= 2);
	assert_true(log_count(f, "re-reading the token") >= 2);
	/* ...then the aggregator's file rotates too (as the kubelet rewrites a projected token) */
	put(f->kube_token, "kube-token-2\n");
	wait_answer(f, "db.shop.svc.cluster.local", "A", "10.1.0.5\n");
	wait_answer(f, "api.shop.svc.cluster.local", "A", "10.96.0.20\n");
	check_last_good(f, "10.1.0.5");
	warned = log_count(f, "kubernetes API:");
	printf("kube source: %d warning line(s) for the down server and the stale token\n", warned);
	assert_true(warned >= 1 && warned <= 4); /* one per resource per 10 s at most; the test spans a few s */
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->api, sizeof(f->api), "%s/api", f->dir);
	snprintf(f->token, sizeof(f->token), "%s/token", f->api);
	snprintf(f->kube_token, sizeof(f->kube_token), "%s/kube-token", f->dir);
	mkdir(f->api, 0755);
	*state = f;
	if (itest_make_certs(f->dir))
		return -1;
	put(f->token, "kube-token-1\n");
	put(f->kube_token, "kube-token-1\n");
	api_state(f, 1, 1, "10.1.0.1");
	f->api_port = itest_port();
	start_server(f);
	char push_token[300], manifest[300], data[300], listen[64], api_url[64], ca[300];
	snprintf(push_token, sizeof(push_token), "%s/push-token", f->dir);
	itest_write_file(push_token, "push-token\n");
	snprintf(manifest, sizeof(manifest), "%s/services.json", f->dir);
	itest_write_file(manifest, "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"static\","
	                           "\"namespace\":\"shop\"},\"spec\":{\"clusterIP\":\"10.96.0.99\"}}\n");
	f->dns_port = itest_port();
	snprintf(data, sizeof(data), "%s/data", f->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", f->dns_port);
	snprintf(api_url, sizeof(api_url), "https://127.0.0.1:%d/", f->api_port);
	snprintf(ca, sizeof(ca), "%s/ca.crt", f->dir);
	const char *extra[] = {"--dns-listen",    listen,        "--services",      manifest,
	                       "--dns-threads",   "1",           "--kube-api",      api_url,
	                       "--kube-retry",    "200ms",       "--kube-token-file", f->kube_token,
	                       "--kube-ca-file",  ca,            NULL};
	return itest_aggregator_start(&f->agg, f->dir, data, push_token, extra, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->server.pid > 0)
		itest_stop(&f->server, SIGTERM, 5000);
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_kube_source, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
