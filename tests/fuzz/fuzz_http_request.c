/* fuzz_http_request.c -- libFuzzer harness: the agent HTTP server's request-head parser. */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "na_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char method[16], path[1024];
	int r = na__http_parse_request((const char *)data, size, method, sizeof(method), path, sizeof(path));
	if (r > 0 && ((size_t)r > size || strlen(method) >= sizeof(method) || path[0] != '/'))
		__builtin_trap();
	return 0;
}
