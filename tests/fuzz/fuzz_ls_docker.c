/* fuzz_ls_docker.c -- libFuzzer harness: the docker json-file line parser on arbitrary bytes (one line),
 * and the kubelet path parsers on the same bytes as a path.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ls_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cm_buf b;
	cm_buf_init(&b);
	ls_line l;
	if (ls_docker_parse((const char *)data, size, &b, &l) == 0) {
		if (l.len > b.len || (l.stream != LS_STDOUT && l.stream != LS_STDERR))
			abort();
	}
	cm_buf_close(&b);
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	ls__meta m;
	ls__meta_from_pods_path(s, &m);
	ls__meta_from_containers_path(s, &m);
	free(s);
	return 0;
}
