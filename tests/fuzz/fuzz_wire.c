/* fuzz_wire.c -- libFuzzer harness: cm_wire_decode on arbitrary bytes (the aggregator's push body).
 *
 * Inputs that start with a valid-looking header get their CRC fixed up half of the time, so the
 * fuzzer also reaches the zstd, protobuf and batch-rule checks behind the checksum.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "cm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (size >= CM_WIRE_HEADER && (copy[7] & 1)) {
		copy[7] &= (uint8_t)~1;
		cm_put_u32le(copy + 16, cm_crc32c(cm_crc32c(0, copy, 16), copy + CM_WIRE_HEADER, size - CM_WIRE_HEADER));
	}
	cm_wire_limits lim = cm_wire_default_limits;
	lim.max_decompressed = 1 << 20;
	cm_arena a;
	cm_arena_init(&a, 0);
	cm_batch b;
	cm_err err;
	if (cm_wire_decode(copy, size, &lim, &a, &b, &err) == 0) {
		/* touch everything the decoder promised */
		size_t sum = strlen(b.node) + strlen(b.boot_id) + strlen(b.agent_version);
		for (size_t i = 0; i < b.nseries; i++) {
			for (size_t j = 0; j < b.series[i].nlabels; j++)
				sum += strlen(b.series[i].labels[j].name) + strlen(b.series[i].labels[j].value);
			for (size_t j = 0; j < b.series[i].nsamples; j++)
				sum += (size_t)b.series[i].samples[j].t_ms;
		}
		for (size_t i = 0; i < b.nlog_streams; i++) { /* lines point into the decompressed body */
			const cm_log_stream *s = &b.log_streams[i];
			for (size_t j = 0; j < s->nlabels; j++)
				sum += strlen(s->labels[j].name) + strlen(s->labels[j].value);
			for (size_t j = 0; j < s->nrecords; j++)
				sum += (size_t)s->timestamps_ns[j] + s->flags[j] +
				       (s->line_lens[j] ? (uint8_t)s->lines[j][s->line_lens[j] - 1] : 0);
		}
		(void)sum;
	}
	cm_arena_close(&a);
	free(copy);
	return 0;
}
