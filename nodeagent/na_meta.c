/* na_meta.c -- container metadata providers behind one interface (pods-dir, docker, kubelet).
 *
 * Placeholder until the providers land: knows nothing, so cgroups carry the labels their paths give.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include "na_int.h"

uint64_t na__meta_generation(const na__meta *m)
{
	(void)m;
	return 0;
}

int na__meta_lookup(na__meta *m, const na__ident *id, na__meta_labels *out)
{
	(void)m, (void)id, (void)out;
	return CM_ENOENT;
}
