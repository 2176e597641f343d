/* fuzz_quantity.c -- libFuzzer harness: the Kubernetes quantity parser (ag_quantity.c) on arbitrary
 * bytes, as they arrive in /api/v1/capacity/fit parameters and in the agents' inventory. A value it
 * accepts must be finite, and a size it accepts must not be negative.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
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
	double v;
	cm_err err;
	if (ag__quantity_parse(s, &v, &err) == 0 && !isfinite(v))
		abort();
	if (ag__quantity_size("cpu", s, &v, &err) == 0 && !(v >= 0 && isfinite(v)))
		abort();
	free(s);
	return 0;
}
