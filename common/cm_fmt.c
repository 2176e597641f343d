/* cm_fmt.c -- number text: Prometheus' float format (the shortest digits that read back to the same
 * double) and a strict decimal scanner for kernel files.
 *
 * Prometheus renders sample values with Go's strconv.FormatFloat(v, 'f', -1, 64): the fewest
 * significant digits that round-trip, in positional notation (never an exponent), and "+Inf", "-Inf",
 * "NaN". Clients compare these strings, so we produce exactly the same text.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm.h"

/* ---- exact integer path -----------------------------------------------------------------------------
 *
 * For a normal v = M * 2^E with -70 <= E <= -1 (about 4e-6 <= v < 2^53, nearly every sample value) the
 * p-digit decimal nearest v, and whether it reads back to v, are found with 128-bit integers instead of
 * printf and strtod. With e = floor(log10 v) and s = p - 1 - e, v * 10^s = N / D exactly, where
 * N = M * 10^max(s, 0) and D = 2^-E * 10^max(-s, 0) (all below 2^127 in this range); the digits are
 * q = N / D rounded half to even (as glibc's printf rounds), and q * 10^-s reads back to v when it lies
 * within half a spacing of the doubles around v: 2 |qD - N| < U with U = 10^max(s, 0) (the spacing of
 * doubles at v is U / D), a tie going to v when M is even; below a power of two the spacing is half. */

typedef unsigned __int128 u128;

#define FAST_MIN_E (-70)

#define P10(k) ((u128)1e##k##L)
static const u128 pow10_tab[23] = {P10(0),  P10(1),  P10(2),  P10(3),  P10(4),  P10(5),  P10(6),	 P10(7),
				   P10(8),  P10(9),  P10(10), P10(11), P10(12), P10(13), P10(14), P10(15),
				   P10(16), P10(17), P10(18), P10(19), P10(20), P10(21), P10(22)};

static u128 pow10_128(int k) { return pow10_tab[k]; }

typedef struct exact {
	uint64_t m;  /* the 53-bit mantissa with its leading bit */
	int e2;      /* v = m * 2^e2 */
	int e10;     /* floor(log10(v)) */
} exact;

/* Fills x for v > 0 when v is in the range of the integer path; 0 otherwise. */
static int exact_init(double v, exact *x)
{
	int e2;
	double f = frexp(v, &e2); /* v = f * 2^e2, 0.5 <= f < 1 */
	x->m = (uint64_t)ldexp(f, 53);
	x->e2 = e2 - 53;
	if (x->e2 < FAST_MIN_E || x->e2 > -1)
		return 0;
	int e = (int)floor((x->e2 + 52) * 0.30102999566398120); /* log10(2^floor(log2 v)): low by at most 1 */
	u128 d = (u128)1 << -x->e2;
	for (int tries = 0; tries < 3; tries++) { /* the estimate is off by one at most */
		int s = 16 - e;
		if (s < 0 || s > 22)
			return 0;
		u128 n = (u128)x->m * pow10_128(s);
		if (n < pow10_128(16) * d)
			e--;
		else if (n >= pow10_128(17) * d)
			e++;
		else {
			x->e10 = e;
			return 1;
		}
	}
	return 0;
}

/* The p-digit decimal nearest v (*q, to be read as q * 10^-s with s = p - 1 - e10); whether it reads back
 * to v. */
static int exact_digits(const exact *x, int p, uint64_t *q)
{
	int s = p - 1 - x->e10;
	u128 n = (u128)x->m * (s > 0 ? pow10_128(s) : 1), u = s > 0 ? pow10_128(s) : 1;
	u128 d = ((u128)1 << -x->e2) * (s < 0 ? pow10_128(-s) : 1);
	u128 r = n % d, qq = n / d;
	if (2 * r > d || (2 * r == d && (qq & 1)))
		qq++;
	*q = (uint64_t)qq;
	u128 qd = qq * d;
	if (qd >= n) {
		u128 diff2 = 2 * (qd - n);
		return diff2 < u || (diff2 == u && !(x->m & 1));
	}
	u128 diff = n - qd, lim = x->m == (1ULL << 52) ? 2 * diff : diff; /* half spacing below 2^k */
	return 2 * lim < u || (2 * lim == u && !(x->m & 1));
}

/* ---- shortest digits ----------------------------------------------------------------------------- */

/* Whether the nearest p-digit decimal reads back to v, by printf and strtod. */
static int slow_roundtrips(double v, int p)
{
	char tmp[40];
	snprintf(tmp, sizeof(tmp), "%.*e", p - 1, v);
	return strtod(tmp, NULL) == v;
}

/* Shortest round-trip mantissa digits (no dot) and decimal exponent of |v| (v finite, non-zero). */
/* The decimal digits of q (no leading zeros), and how many. */
static int u64_digits(uint64_t q, char *digits)
{
	char rev[24];
	int n = 0;
	do
		rev[n++] = (char)('0' + q % 10);
	while ((q /= 10) > 0);
	for (int i = 0; i < n; i++)
		digits[i] = rev[n - 1 - i];
	return n;
}

static int shortest_digits(double v, char *digits, int *exp10)
{
	char tmp[40];
	exact x;
	uint64_t q;
	if (v < 9007199254740992.0 && v == floor(v)) { /* an integer below 2^53: its own digits are shortest */
		int n = u64_digits((uint64_t)v, digits);
		*exp10 = n - 1;
		while (n > 1 && digits[n - 1] == '0')
			n--;
		digits[n] = 0;
		return n;
	}
	int fast = exact_init(v, &x);
	/* Binary search: once p digits read back, p + 1 do too (the nearest p + 1-digit decimal is at
	 * least as near as the p-digit one), so the shortest is found in 5 tries instead of up to 17. */
	int lo = 1, hi = 17;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (fast ? exact_digits(&x, mid, &q) : slow_roundtrips(v, mid))
			hi = mid;
		else
			lo = mid + 1;
	}
	if (fast) {
		exact_digits(&x, lo, &q);
		int n = u64_digits(q, digits);
		*exp10 = x.e10 + (n > lo); /* 9.99... rounded up to 10.0 */
		while (n > 1 && digits[n - 1] == '0')
			n--;
		digits[n] = 0;
		return n;
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
	if (cap) {
		size_t c = o < cap ? o : cap - 1;
		memcpy(buf, out, c);
		buf[c] = 0;
	}
	return o;
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
