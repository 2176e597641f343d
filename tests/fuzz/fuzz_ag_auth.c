/* fuzz_ag_auth.c -- libFuzzer harness: the token file parser (ag_auth.c) on arbitrary bytes, as a token
 * file or a Secret may hold them, and the same bytes as a Sec-WebSocket-Protocol header
 * (ag__auth_ws_protocols).
 *
 * Checks what the formats promise: a bound entry only in push files, never more bound entries than
 * tokens, and an accepted file holds at least one token; a bearer taken from the header is
 * "Bearer " and a non-empty token without blanks or control characters.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

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
	char *hdr = malloc(size + 1);
	if (!hdr)
		return 0;
	memcpy(hdr, data, size);
	hdr[size] = 0;
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	const char *auth = NULL;
	ag__auth_ws_protocols(hdr, &a, &auth);
	if (auth && (strncmp(auth, "Bearer ", 7) || !auth[7]))
		abort();
	for (const char *p = auth ? auth + 7 : ""; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			abort();
	cm_arena_close(&a);
	free(hdr);
	return 0;
}
