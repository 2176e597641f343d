/* fuzz_ls_cri.c -- libFuzzer harness: the CRI line parser and the joiner, on arbitrary bytes split into
 * lines as the tailer splits a container log file.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ls_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ls__joiner j;
	ls__join_init(&j, 64);
	const uint8_t *p = data, *end = data + size;
	while (p < end) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		char *line = malloc(n ? n : 1); /* exact size, so ASan sees any read past the line */
		if (!line)
			break;
		memcpy(line, p, n);
		ls_line l;
		ls__rec r;
		if (ls_cri_parse(line, n, &l) == 0) {
			if (l.msg < line || l.msg + l.len > line + n || (l.stream != LS_STDOUT && l.stream != LS_STDERR))
				abort();
			if (ls__join_feed(&j, &l, (uint64_t)(p - data), 0, &r) == 1 && r.len > 64)
				abort();
		}
		int64_t ns;
		ls_parse_time(line, n, &ns);
		free(line);
		p += n + 1;
	}
	ls__join_close(&j);
	return 0;
}
