/* test_dn_registry.c -- aggregator/ag_services.c: the registry that feeds dnsd. A manifest (List of
 * Services + EndpointSlices) becomes the dn_service model; the inventory hook (pods with labels, IPs,
 * ready, per node) adds matching ready pods to headless services, a pod gone from its node's report
 * leaves, and a silent node's pods are dropped after the grace period; every change moves the version
 * the DNS builder polls. The Kubernetes API's set (ag__services_replace_kube) overrides the manifest's
 * objects, takes its endpoints from EndpointSlices only (not the agents' pods), is replaced whole, and
 * a bad list leaves the previous set in place.
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

#include <jansson.h>

#include "ag_int.h"

static const char *const MANIFEST =
    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"},"
    "\"spec\":{\"clusterIP\":\"10.96.0.20\",\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":80}]}},"
    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"db\",\"namespace\":\"prod\"},"
    "\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"db\"}}},"
    "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"db-1\",\"namespace\":\"prod\","
    "\"labels\":{\"kubernetes.io/service-name\":\"db\"}},\"endpoints\":["
    "{\"addresses\":[\"10.244.0.9\"],\"hostname\":\"static\"},"
    "{\"addresses\":[\"10.244.0.10\"],\"conditions\":{\"ready\":false}}]},"
    "{\"kind\":\"Service\",\"metadata\":{\"name\":\"ext\",\"namespace\":\"default\"},"
    "\"spec\":{\"type\":\"ExternalName\",\"externalName\":\"example.org\"}}]}";

static const dn_service *find(dn_service *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].name, name))
			return &v[i];
	return NULL;
}

static size_t ready_eps(const dn_service *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nendpoints; i++)
		n += s->endpoints[i].ready != 0;
	return n;
}

static const dn_service *model_of(ag__services *r, cm_arena *a, const char *name)
{
	dn_service *v;
	size_t n;
	cm_arena_close(a);
	cm_arena_init(a, 0);
	assert_int_equal(ag__services_model(r, a, &v, &n), CM_OK);
	assert_int_equal(n, 3);
	return find(v, n, name);
}

/* A registry in a new directory (dir, a mkdtemp template) whose --services file is MANIFEST. */
static ag__services *registry_open(char *dir)
{
	char db[256], file[256];
	assert_non_null(mkdtemp(dir));
	snprintf(db, sizeof(db), "%s/state.db", dir);
	snprintf(file, sizeof(file), "%s/svc.json", dir);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fputs(MANIFEST, f);
	fclose(f);
	ag__services *r;
	cm_err err;
	if (ag__services_create(db, file, &r, &err))
		fail_msg("ag__services_create: %s", err.msg);
	return r;
}

static void registry_close(ag__services *r, const char *dir)
{
	ag__services_destroy(r);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_manifest_and_inventory(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_dn_registry-XXXXXX";
	ag__services *r = registry_open(dir);
	cm_err err;
	cm_arena a;
	cm_arena_init(&a, 0);
	const dn_service *s = model_of(r, &a, "web");
	assert_int_equal(s->kind, DN_SVC_CLUSTERIP);
	assert_int_equal(s->ncluster_ips, 1);
	assert_string_equal(s->cluster_ips[0], "10.96.0.20");
	assert_int_equal(s->nports, 1);
	assert_int_equal(s->ports[0].port, 80);
	assert_int_equal(model_of(r, &a, "ext")->kind, DN_SVC_EXTERNAL);
	s = model_of(r, &a, "db");
	assert_int_equal(s->kind, DN_SVC_HEADLESS);
	assert_int_equal(s->nendpoints, 2);
	assert_int_equal(ready_eps(s), 1);

	/* two nodes report pods; only ready ones with matching labels in the namespace count */
	uint64_t v0 = ag__services_version(r);
	cm_label db_l[] = {{"app", "db"}, {"tier", "x"}}, web_l[] = {{"app", "web"}};
	ag__pod n1[] = {{"prod", "db-a", "10.244.1.1", "db-a", 1, db_l, 2},
	                {"prod", "web-a", "10.244.1.2", NULL, 1, web_l, 1},
	                {"prod", "db-b", "10.244.1.3", NULL, 0, db_l, 2},
	                {"other", "db-c", "10.244.1.4", NULL, 1, db_l, 2}};
	ag__pod n2[] = {{"prod", "db-d", "10.244.2.1", NULL, 1, db_l, 1}};
	assert_int_equal(ag__services_set_node_pods(r, "node-1", n1, 4, 1000), CM_OK);
	assert_int_equal(ag__services_set_node_pods(r, "node-2", n2, 1, 1000), CM_OK);
	assert_true(ag__services_version(r) > v0);
	s = model_of(r, &a, "db");
	assert_int_equal(ready_eps(s), 3); /* static + db-a + db-d */
	/* the same report again changes nothing */
	uint64_t v1 = ag__services_version(r);
	assert_int_equal(ag__services_set_node_pods(r, "node-1", n1, 4, 2000), CM_OK);
	assert_int_equal(ag__services_version(r), v1);
	/* db-a stops on node-1: it leaves with the next report */
	assert_int_equal(ag__services_set_node_pods(r, "node-1", n1 + 1, 3, 3000), CM_OK);
	assert_int_equal(ready_eps(model_of(r, &a, "db")), 2);
	/* node-2 goes silent: dropped after the grace period, not before */
	ag__services_expire_nodes(r, 1000 + 30000, 30000);
	assert_int_equal(ready_eps(model_of(r, &a, "db")), 2);
	ag__services_expire_nodes(r, 1000 + 30001, 30000);
	assert_int_equal(ready_eps(model_of(r, &a, "db")), 1);

	/* the zone built from the model answers for them */
	dn_service *v;
	size_t n;
	cm_arena_close(&a);
	cm_arena_init(&a, 0);
	assert_int_equal(ag__services_model(r, &a, &v, &n), CM_OK);
	dn_zone *z;
	dn_zone_config cfg = {0};
	assert_int_equal(dn_zone_build(&cfg, v, n, &z, NULL, &err), CM_OK);
	assert_true(dn_zone_names(z) > 5);
	dn_zone_destroy(z);
	cm_arena_close(&a);
	registry_close(r, dir);
}

static json_t *kube_list(const char *items)
{
	char buf[2048];
	snprintf(buf, sizeof(buf), "{\"kind\":\"List\",\"items\":[%s]}", items);
	json_t *j = json_loads(buf, 0, NULL);
	assert_non_null(j);
	return j;
}

static void test_kube_set(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_dn_registry-XXXXXX";
	ag__services *r = registry_open(dir);
	cm_err err;
	cm_arena a;
	cm_arena_init(&a, 0);
	cm_label db_l[] = {{"app", "db"}};
	ag__pod pods[] = {{"prod", "db-a", "10.244.1.1", NULL, 1, db_l, 1}};
	assert_int_equal(ag__services_set_node_pods(r, "node-1", pods, 1, 1000), CM_OK);
	assert_int_equal(ready_eps(model_of(r, &a, "db")), 2); /* the manifest's slice + the pod */
	/* the API's prod/db (same selector) replaces the manifest's: slices only, no pods */
	json_t *l = kube_list("{\"kind\":\"Service\",\"metadata\":{\"name\":\"db\",\"namespace\":\"prod\"},"
	                      "\"spec\":{\"clusterIP\":\"None\",\"selector\":{\"app\":\"db\"}}},"
	                      "{\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"db-k\",\"namespace\":\"prod\","
	                      "\"labels\":{\"kubernetes.io/service-name\":\"db\"}},\"endpoints\":["
	                      "{\"addresses\":[\"10.9.0.1\"],\"conditions\":{\"ready\":true}}]}");
	uint64_t v0 = ag__services_version(r);
	assert_int_equal(ag__services_replace_kube(r, l, &err), CM_OK);
	assert_true(ag__services_version(r) > v0);
	const dn_service *s = model_of(r, &a, "db");
	assert_int_equal(s->nendpoints, 3); /* 10.244.0.9, 10.244.0.10 (not ready), 10.9.0.1 */
	assert_int_equal(ready_eps(s), 2);
	for (size_t i = 0; i < s->nendpoints; i++)
		assert_string_not_equal(s->endpoints[i].ip, "10.244.1.1");
	/* the same set again changes nothing; a bad list changes nothing either */
	v0 = ag__services_version(r);
	assert_int_equal(ag__services_replace_kube(r, l, &err), CM_OK);
	json_decref(l);
	l = kube_list("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"x\"}}");
	assert_int_equal(ag__services_replace_kube(r, l, &err), CM_EINVAL);
	json_decref(l);
	assert_int_equal(ag__services_version(r), v0);
	assert_int_equal(model_of(r, &a, "db")->nendpoints, 3);
	/* an empty set: the manifest's db is back, with the pod */
	l = kube_list("");
	assert_int_equal(ag__services_replace_kube(r, l, &err), CM_OK);
	json_decref(l);
	assert_int_equal(ready_eps(model_of(r, &a, "db")), 2);
	cm_arena_close(&a);
	registry_close(r, dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_manifest_and_inventory),
	                                   cmocka_unit_test(test_kube_set)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
