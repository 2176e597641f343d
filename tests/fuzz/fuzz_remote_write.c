/* fuzz_remote_write.c -- libFuzzer harness: the remote write 1.0 receiver's decoder (ag_rw.c) on any body.
 *
 * The first byte picks the form: 0 the rest is a protobuf WriteRequest, snappy-compressed here so the
 * fuzzer reaches the protobuf decoder and the label rules; anything else: the rest is the body as sent
 * (a snappy block). Whatever decodes must hold what ag__rw_decode promises: every series has labels,
 * sorted, names valid and unique, values non-empty UTF-8, and its samples.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const cm_series *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!s[i].nlabels || !s[i].nsamples || !s[i].samples)
			abort();
		for (size_t j = 0; j < s[i].nlabels; j++) {
			const cm_label *l = &s[i].labels[j];
			if (!cm_label_name_valid(l->name) || !l->value[0] || !cm_utf8_valid(l->value, strlen(l->value)))
				abort();
			if (j && strcmp(s[i].labels[j - 1].name, l->name) >= 0)
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *body = data + 1;
	size_t blen = size - 1;
	char *packed = NULL;
	if (data[0] == 0) {
		size_t cap = snappy_max_compressed_length(blen);
		if (!(packed = malloc(cap)) || snappy_compress((const char *)body, blen, packed, &cap) != SNAPPY_OK) {
			free(packed);
			return 0;
		}
		body = (const uint8_t *)packed, blen = cap;
	}
	cm_arena a;
	cm_arena_init(&a, 64u << 20);
	cm_series *s;
	size_t n;
	cm_err err;
	if (ag__rw_decode(body, blen, &a, &s, &n, &err) == 0)
		check(s, n);
	cm_arena_close(&a);
	free(packed);
	return 0;
}
