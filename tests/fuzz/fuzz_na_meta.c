/* fuzz_na_meta.c -- libFuzzer harness: the agent's metadata parsers (kubelet PodList, pods-dir file,
 * docker config.v2.json) on arbitrary bytes, then a lookup and a walk over the resulting table.
 *
 * The first byte picks the parser (mod 3); the rest is the document. Bytes from the kubelet and from
 * files other programs write are outside input: every parser must take any of them without a crash,
 * a leak or an out-of-bounds read.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	na__meta *m;
	cm_err err;
	na__meta_opts o = {.label_allowlist = "app,team"};
	if (na__meta_create(&o, &m, &err))
		return 0;
	if (na__meta_parse(m, data[0] % 3, data + 1, size - 1, &err) == 0) {
		const na__meta_pod *p;
		size_t n, total = 0;
		na__meta_pods(m, &p, &n);
		for (size_t i = 0; i < n; i++) {
			total += strlen(p[i].name) + strlen(p[i].namespace_) + p[i].nips + p[i].nlabels;
			for (size_t k = 0; k < p[i].ncontainers; k++)
				total += strlen(p[i].containers[k].id) + strlen(p[i].containers[k].cgroup);
		}
		na__ident id;
		memset(&id, 0, sizeof(id));
		memcpy(id.container_id, "c0c0", 5);
		na__meta_labels l;
		na__meta_lookup(m, "/system.slice/cron.service", &id, &l);
		if (total == (size_t)-1)
			abort();
	}
	na__meta_destroy(m);
	return 0;
}
