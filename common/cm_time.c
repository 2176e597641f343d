/* cm_time.c -- clocks and the Prometheus duration and time parameter formats.
 *
 * Durations follow Prometheus' model.ParseDuration: one or more <number><unit> with units
 * y w d h m s ms, largest first ("1h30m"); a bare number is seconds (as the HTTP API's step is).
 * Times are RFC 3339 ("2026-11-26T12:00:00.5Z", offsets allowed) or Unix seconds with a fraction.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm.h"

int64_t cm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cm_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A plain decimal number (no exponent, no sign, no hex): what strtod would accept too widely. */
static int parse_plain_number(const char *s, double *out)
{
	const char *p = s;
	int digits = 0;
	while (isdigit((unsigned char)*p))
		p++, digits++;
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p))
			p++, digits++;
	}
	if (!digits || *p)
		return CM_EINVAL;
	*out = strtod(s, NULL);
	return CM_OK;
}

static const struct {
	const char *unit;
	int64_t ms;
} duration_units[] = {
	{"y", 365LL * 24 * 3600 * 1000}, {"w", 7LL * 24 * 3600 * 1000}, {"d", 24LL * 3600 * 1000},
	{"h", 3600LL * 1000},            {"ms", 1},                     {"m", 60LL * 1000},
	{"s", 1000},
};

int cm_parse_duration_ms(const char *s, int64_t *out_ms)
{
	double secs;
	if (!*s)
		return CM_EINVAL;
	if (parse_plain_number(s, &secs) == CM_OK) {
		if (secs > 9.2e15)
			return CM_E2BIG;
		*out_ms = (int64_t)llround(secs * 1000.0);
		return CM_OK;
	}
	int64_t total = 0;
	int last_unit = -1;
	const char *p = s;
	while (*p) {
		if (!isdigit((unsigned char)*p))
			return CM_EINVAL;
		char *end;
		errno = 0;
		unsigned long long n = strtoull(p, &end, 10);
		if (errno || n > (1ULL << 40))
			return CM_E2BIG;
		int u;
		for (u = 0; u < (int)CM_ARRAY_LEN(duration_units); u++) {
			size_t ul = strlen(duration_units[u].unit);
			if (strncmp(end, duration_units[u].unit, ul) == 0 && !isalpha((unsigned char)end[ul]))
				break;
		}
		if (u == (int)CM_ARRAY_LEN(duration_units))
			return CM_EINVAL;
		/* units must come largest first and each only once ("ms" sits between h and m in the
		 * table for matching, so compare sizes, not positions) */
		if (last_unit >= 0 && duration_units[u].ms >= duration_units[last_unit].ms)
			return CM_EINVAL;
		if ((int64_t)n > (INT64_MAX - total) / duration_units[u].ms)
			return CM_E2BIG;
		total += (int64_t)n * duration_units[u].ms;
		last_unit = u;
		p = end + strlen(duration_units[u].unit);
	}
	*out_ms = total;
	return CM_OK;
}

static int parse_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return CM_EINVAL;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return CM_OK;
}

static int expect(const char **p, char c)
{
	if (**p != c && !(c == 'T' && **p == 't'))
		return CM_EINVAL;
	(*p)++;
	return CM_OK;
}

static int parse_rfc3339(const char *s, int64_t *out_ms)
{
	struct tm tm = {0};
	const char *p = s;
	int year, mon, day, hh, mm, ss, frac_ms = 0;
	if (parse_digits(&p, 4, &year) || expect(&p, '-') || parse_digits(&p, 2, &mon) || expect(&p, '-') ||
	    parse_digits(&p, 2, &day) || expect(&p, 'T') || parse_digits(&p, 2, &hh) || expect(&p, ':') ||
	    parse_digits(&p, 2, &mm) || expect(&p, ':') || parse_digits(&p, 2, &ss))
		return CM_EINVAL;
	if (*p == '.') {
		p++;
		int scale = 100, nd = 0;
		while (isdigit((unsigned char)*p)) {
			if (nd++ < 3)
				frac_ms += (*p - '0') * scale, scale /= 10;
			p++;
		}
		if (!nd)
			return CM_EINVAL;
	}
	int offset_min = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om;
		if (parse_digits(&p, 2, &oh) || expect(&p, ':') || parse_digits(&p, 2, &om))
			return CM_EINVAL;
		offset_min = sign * (oh * 60 + om);
	} else {
		return CM_EINVAL;
	}
	if (*p || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return CM_EINVAL;
	tm.tm_year = year - 1900, tm.tm_mon = mon - 1, tm.tm_mday = day;
	tm.tm_hour = hh, tm.tm_min = mm, tm.tm_sec = ss;
	time_t t = timegm(&tm);
	*out_ms = ((int64_t)t - offset_min * 60) * 1000 + frac_ms;
	return CM_OK;
}

int cm_parse_time_ms(const char *s, int64_t *out_ms)
{
	const char *p = s;
	int neg = 0;
	if (*p == '-')
		neg = 1, p++;
	double secs;
	if (parse_plain_number(p, &secs) == CM_OK) {
		if (secs > 9.2e15)
			return CM_E2BIG;
		int64_t ms = (int64_t)llround(secs * 1000.0);
		*out_ms = neg ? -ms : ms;
		return CM_OK;
	}
	return neg ? CM_EINVAL : parse_rfc3339(s, out_ms);
}
