/* fuzz_ag_resolve.c -- libFuzzer harness: the bytes the web UI's endpoints take from outside: a DNS reply
 * as /api/v1/dns/resolve parses it (ag__dns_reply_json), and a request path as /ui/ checks it before
 * opening anything (ag__ui_serve on a directory that does not exist, so only the checks run).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cm_buf out;
	cm_buf_init(&out);
	ag__dns_reply_json(data, size, &out);
	cm_buf_close(&out);
	char *url = malloc(size + 5);
	if (!url)
		return 0;
	memcpy(url, "/ui/", 4);
	memcpy(url + 4, data, size);
	url[size + 4] = 0;
	cm_arena a;
	cm_arena_init(&a, 0);
	ag__req req = {.method = "GET", .url = url, .arena = &a};
	ag__resp resp = {.status = 200};
	cm_buf_init(&resp.body);
	ag__ui_serve("/nonexistent/corral-ui-fuzz", &req, &resp);
	cm_buf_close(&resp.body);
	cm_arena_close(&a);
	free(url);
	return 0;
}
