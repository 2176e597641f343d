/* fuzz_ls_push.c -- libFuzzer harness: the Loki push decoders of the aggregator (ag_loki.c) on arbitrary
 * bodies. The first byte picks the form: 0 JSON; 1 protobuf, snappy-compressed here so the fuzzer reaches
 * the protobuf decoder; 2 the bytes as a snappy block. Decoded streams' labels then go through the
 * labels check the store applies.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	cm_arena a;
	cm_arena_init(&a, 256u << 20);
	ls_push_stream *st;
	size_t n;
	cm_err err;
	const uint8_t *body = data + 1;
	size_t blen = size - 1;
	char *packed = NULL;
	int rc;
	if (data[0] == 0) {
		rc = ag__loki_decode_json(body, blen, &a, &st, &n, &err);
	} else {
		if (data[0] == 1) {
			size_t cap = snappy_max_compressed_length(blen);
			if (!(packed = malloc(cap)) || snappy_compress((const char *)body, blen, packed, &cap) != SNAPPY_OK)
				goto out;
			body = (const uint8_t *)packed, blen = cap;
		}
		rc = ag__loki_decode_proto(body, blen, &a, &st, &n, &err);
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		for (size_t k = 0; k < st[i].nentries; k++)
			if (st[i].entries[k].len && !st[i].entries[k].line)
				abort();
out:
	free(packed);
	cm_arena_close(&a);
	return 0;
}
