/* fuzz_ag_auth.c -- libFuzzer harness: the token file parser (ag_auth.c) on arbitrary bytes, as a token
 * file or a Secret may hold them.
 *
 * Checks what the format promises: a bound entry only in push files, never more bound entries than
 * tokens, and an accepted file holds at least one token.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int allow_node = 0; allow_node < 2; allow_node++) {
		size_t n = 0, bound = 0;
		cm_err err = {{0}};
		if (ag__auth_parse((const char *)data, size, allow_node, &n, &bound, &err))
			continue;
		if (!n || bound > n || (!allow_node && bound))
			abort();
	}
	return 0;
}
