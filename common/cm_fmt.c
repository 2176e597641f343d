/* cm_fmt.c -- number text: Prometheus' float format (the shortest digits that read back to the same
 * double) and a strict decimal scanner for kernel files.
 *
 * Prometheus renders sample values with Go's strconv.FormatFloat(v, 'f', -1, 64): the fewest
 * significant digits that round-trip, in positional notation (never an exponent), and "+Inf", "-Inf",
 * "NaN". Clients compare these strings, so we produce exactly the same text.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm.h"

/* Shortest round-trip mantissa digits (no dot) and decimal exponent of |v| (v finite, non-zero). */
static int shortest_digits(double v, char *digits, int *exp10)
{
	char tmp[40];
	/* Binary search: once p digits read back, p + 1 do too (the nearest p + 1-digit decimal is at
	 * least as near as the p-digit one), so the shortest is found in 5 tries instead of up to 17. */
	int lo = 1, hi = 17;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		snprintf(tmp, sizeof(tmp), "%.*e", mid - 1, v);
		if (strtod(tmp, NULL) == v)
			hi = mid;
		else
			lo = mid + 1;
	}
	snprintf(tmp, sizeof(tmp), "%.*e", lo - 1, v);
	/* tmp is d[.ddd]e[+-]xx */
	int n = 0;
	const char *p = tmp;
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			digits[n++] = *p;
	while (n > 1 && digits[n - 1] == '0')
		n--;
	digits[n] = 0;
	*exp10 = atoi(p + 1);
	return n;
}

size_t cm_fmt_double(char *buf, size_t cap, double v)
{
	if (isnan(v))
		return (size_t)snprintf(buf, cap, "NaN");
	if (isinf(v))
		return (size_t)snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
	if (v == 0)
		return (size_t)snprintf(buf, cap, signbit(v) ? "-0" : "0");
	char digits[24], out[CM_FMT_DOUBLE_MAX];
	int e, n = shortest_digits(fabs(v), digits, &e);
	size_t o = 0;
	if (v < 0)
		out[o++] = '-';
	if (e < 0) {
		out[o++] = '0', out[o++] = '.';
		for (int i = 0; i < -e - 1; i++)
			out[o++] = '0';
		memcpy(out + o, digits, (size_t)n), o += (size_t)n;
	} else {
		for (int i = 0; i <= e || i < n; i++) {
			if (i == e + 1)
				out[o++] = '.';
			out[o++] = i < n ? digits[i] : '0';
		}
	}
	out[o] = 0;
	return (size_t)snprintf(buf, cap, "%s", out);
}

int cm_scan_u64(const char **pp, const char *end, uint64_t *out)
{
	const char *p = *pp;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p < '0' || *p > '9')
		return CM_EPROTO;
	uint64_t v = 0;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return CM_EPROTO;
		v = v * 10 + d;
	}
	*pp = p;
	*out = v;
	return CM_OK;
}
