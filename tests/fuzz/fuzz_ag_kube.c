/* fuzz_ag_kube.c -- libFuzzer harness: Kubernetes API bodies, as aggregator/ag_kube.c takes them from the
 * API server, all the way to a DNS zone. The input is read as a ServiceList and as an EndpointSliceList
 * (ag__kube_parse_list), then line by line as a watch stream of each kind (ag__kube_apply_event); the
 * objects that result go to a registry (sqlite in memory) with ag__services_replace_kube, and the
 * registry's model is built and turned into a zone, so every field ag_services.c reads from these
 * objects is read from fuzzed bytes.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void stream(json_t *items, const char *kind, const char *data, size_t size)
{
	char rv[128] = "";
	cm_err err = {{0}};
	for (size_t off = 0; off < size;) {
		const char *nl = memchr(data + off, '\n', size - off);
		size_t len = nl ? (size_t)(nl - data) - off : size - off;
		ag__kube_apply_event(items, kind, data + off, len, rv, sizeof(rv), &err);
		off += len + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cm_err err = {{0}};
	ag__kube_page page;
	ag__services *r;
	if (ag__services_create(":memory:", NULL, &r, &err))
		return 0;
	json_t *sets[2] = {json_object(), json_object()}, *items = json_array(), *o;
	json_t *list = json_pack("{s:s, s:o}", "kind", "List", "items", items);
	const char *kinds[2] = {"Service", "EndpointSlice"}, *key;
	for (int i = 0; i < 2; i++) {
		ag__kube_parse_list((const char *)data, size, kinds[i], sets[i], &page, &err);
		stream(sets[i], kinds[i], (const char *)data, size);
		json_object_foreach(sets[i], key, o) json_array_append(items, o);
		json_decref(sets[i]);
	}
	ag__services_replace_kube(r, list, &err);
	json_decref(list);
	cm_arena a;
	cm_arena_init(&a, 0);
	dn_service *svcs;
	size_t n;
	dn_zone *z;
	dn_zone_config cfg = {0};
	if (!ag__services_model(r, &a, &svcs, &n) && !dn_zone_build(&cfg, svcs, n, &z, NULL, &err))
		dn_zone_destroy(z);
	cm_arena_close(&a);
	ag__services_destroy(r);
	return 0;
}
