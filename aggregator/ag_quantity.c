/* ag_quantity.c -- Kubernetes resource quantities ("500m", "512Mi", "1.5", "2e3") to numbers.
 *
 * Used by the capacity reports (ag_capacity*.c) for the requests and limits of the inventory, the
 * /api/v1/capacity/fit shape and the --capacity-reserved-* flags. Bytes from outside: every input is
 * checked and rejected with a message, never asserted on (tests/fuzz/fuzz_quantity.c).
 *
 * Grammar (Kubernetes apimachinery resource.Quantity, the text form):
 *   quantity  = [sign] number [suffix]            at most 64 bytes, no blanks
 *   sign      = "+" | "-"
 *   number    = digits | digits "." [digits] | "." digits
 *   suffix    = binary | decimal | exponent
 *   binary    = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"             (powers of 1024)
 *   decimal   = "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"  (10^-9 .. 10^18)
 *   exponent  = ("e" | "E") [sign] digits                            (at most 3 digits)
 * "E" alone is exa, "E" followed by digits is an exponent, as in Kubernetes. The value is a double
 * (52 bits of mantissa are plenty for cores and bytes); a result that is not finite is rejected.
 * Negative values parse (the grammar has a sign); callers that need a size reject them.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ag_int.h"

#define QUANTITY_MAX 64

static const struct suffix {
	const char *text;
	double mult;
} suffixes[] = {
	{"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
	{"Pi", 1125899906842624.0}, {"Ei", 1152921504606846976.0}, {"n", 1e-9}, {"u", 1e-6},
	{"m", 1e-3}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
};

/* Reads digits at *pp into *v (as a decimal mantissa); returns how many there were. */
static int scan_digits(const char **pp, double *v, int *nfrac, int frac)
{
	int n = 0;
	for (; **pp >= '0' && **pp <= '9'; (*pp)++, n++) {
		*v = *v * 10 + (**pp - '0');
		if (frac)
			(*nfrac)++;
	}
	return n;
}

/* The number part: [sign] digits [. digits]. */
static int scan_number(const char **pp, double *out, cm_err *err, const char *s)
{
	double v = 0;
	int nfrac = 0, neg = **pp == '-';
	if (**pp == '+' || **pp == '-')
		(*pp)++;
	int nd = scan_digits(pp, &v, &nfrac, 0);
	if (**pp == '.') {
		(*pp)++;
		nd += scan_digits(pp, &v, &nfrac, 1);
	}
	if (!nd)
		return cm_errf(err, CM_EPROTO, "quantity %s: no digits", s);
	*out = (neg ? -v : v) / pow(10, nfrac);
	return CM_OK;
}

static int scan_suffix(const char *p, double *mult, cm_err *err, const char *s)
{
	if (!*p) {
		*mult = 1;
		return CM_OK;
	}
	if ((*p == 'e' || *p == 'E') && p[1] && strchr("+-0123456789", p[1])) {
		const char *q = p + 1 + (p[1] == '+' || p[1] == '-');
		int e = 0, n = 0;
		for (; *q >= '0' && *q <= '9' && n < 4; q++, n++)
			e = e * 10 + (*q - '0');
		if (!n || n > 3 || *q)
			return cm_errf(err, CM_EPROTO, "quantity %s: bad exponent", s);
		*mult = pow(10, p[1] == '-' ? -e : e);
		return CM_OK;
	}
	for (size_t i = 0; i < CM_ARRAY_LEN(suffixes); i++)
		if (!strcmp(p, suffixes[i].text)) {
			*mult = suffixes[i].mult;
			return CM_OK;
		}
	return cm_errf(err, CM_EPROTO, "quantity %s: unknown unit \"%s\" (use n u m k M G T P E, Ki Mi Gi Ti Pi Ei "
			   "or an exponent)", s, p);
}

int ag__quantity_parse(const char *s, double *out, cm_err *err)
{
	if (!s || !*s)
		return cm_errf(err, CM_EPROTO, "empty quantity");
	if (strlen(s) > QUANTITY_MAX)
		return cm_errf(err, CM_EPROTO, "quantity longer than %d bytes", QUANTITY_MAX);
	const char *p = s;
	double v = 0, mult = 1;
	int rc = scan_number(&p, &v, err, s);
	rc = rc ? rc : scan_suffix(p, &mult, err, s);
	if (rc)
		return rc;
	v *= mult;
	if (!isfinite(v))
		return cm_errf(err, CM_EPROTO, "quantity %s is out of range", s);
	*out = v == 0 ? 0 : v; /* no -0 */
	return CM_OK;
}

int ag__quantity_size(const char *what, const char *s, double *out, cm_err *err)
{
	double v;
	cm_err e2 = {{0}};
	if (ag__quantity_parse(s, &v, &e2))
		return cm_errf(err, CM_EPROTO, "%s: %s", what, e2.msg);
	if (v < 0)
		return cm_errf(err, CM_EPROTO, "%s: %s is negative", what, s);
	*out = v;
	return CM_OK;
}
