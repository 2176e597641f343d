/* fuzz_na_ident.c -- libFuzzer harness: container identity from a cgroup path (na_ident.c) on arbitrary
 * bytes, as cgroup directory names arrive from whoever may create cgroups (runtimes, users with a
 * delegated subtree). Checked: every field is NUL-terminated inside its buffer, the kind is one of
 * NA_KIND_*, a container id is 64 lowercase hex digits, a pod UID is 36 characters, and a pod or a
 * container below a pod always has its UID.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	na__ident o;
	na__ident_parse(s, &o);
	check(o.kind >= NA_KIND_RAW && o.kind <= NA_KIND_SERVICE && o.runtime != NULL);
	check(memchr(o.qos, 0, sizeof(o.qos)) && memchr(o.pod_uid, 0, sizeof(o.pod_uid)) &&
	      memchr(o.container_id, 0, sizeof(o.container_id)) && memchr(o.unit, 0, sizeof(o.unit)));
	size_t cid = strlen(o.container_id), uid = strlen(o.pod_uid);
	check(cid == 0 || (cid == 64 && strspn(o.container_id, "0123456789abcdef") == 64));
	check(uid == 0 || uid == 36);
	check(o.kind != NA_KIND_POD || uid == 36);
	check(o.kind != NA_KIND_CONTAINER || cid == 64);
	check(o.kind != NA_KIND_SERVICE || strlen(o.unit) >= 8); /* ends in ".service" */
	free(s);
	return 0;
}
