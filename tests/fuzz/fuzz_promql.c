/* fuzz_promql.c -- libFuzzer harness: the PromQL selector parser and the query-parameter parsers
 * (time, duration, form body) on arbitrary bytes, as they arrive in HTTP requests.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ag__selector sel;
	cm_err err;
	if (ag__selector_parse(s, &a, &sel, &err) == 0) {
		for (size_t i = 0; i < sel.nmatchers; i++)
			ts_matcher_matches(&sel.matchers[i], s);
		ag__selector_close(&sel);
	}
	int64_t v;
	cm_parse_time_ms(s, &v);
	cm_parse_duration_ms(s, &v);
	ag__req req = {.arena = &a};
	ag__parse_form(&req, (const char *)data, size);
	ag__param_get(&req, "query");
	cm_arena_close(&a);
	free(s);
	return 0;
}
