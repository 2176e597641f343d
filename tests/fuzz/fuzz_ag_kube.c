/* fuzz_ag_kube.c -- libFuzzer harness: a Kubernetes API list body, as aggregator/ag_kube.c takes it from
 * the API server, all the way to a DNS zone: ag__kube_parse_list reads the input as a ServiceList and as
 * an EndpointSliceList, whatever parsed goes to a registry (sqlite in memory) with
 * ag__services_replace_kube, and the registry's model is built and turned into a zone, so every field
 * ag_services.c reads from these objects is read from fuzzed bytes.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cm_err err = {{0}};
	ag__services *r;
	if (ag__services_create(":memory:", NULL, &r, &err))
		return 0;
	json_t *items = json_array(), *list = json_pack("{s:s, s:o}", "kind", "List", "items", items);
	ag__kube_parse_list((const char *)data, size, "Service", items, &err);
	ag__kube_parse_list((const char *)data, size, "EndpointSlice", items, &err);
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
