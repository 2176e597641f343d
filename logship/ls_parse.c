/* ls_parse.c -- the container log line parsers: RFC 3339 times, CRI lines, docker json-file lines.
 *
 * Called by the tailer (ls_tail.c) for every physical line it reads, and by the fuzz harness. Input is
 * untrusted bytes of a given length (no NUL terminator expected); every parser checks bounds itself,
 * never allocates (the docker parser grows only its caller's scratch buffer) and never prints.
 *
 * ---- CRI line (kubelet's CRI logging format, containerd and CRI-O) --------------------------------------
 *
 *   <time> SP <stream> SP <tag> [SP <message>]
 *
 *   time     RFC 3339 with nanoseconds, e.g. 2024-05-01T10:00:00.123456789Z (Go's RFC3339Nano drops
 *            trailing zeros of the fraction, and the fraction itself when it is zero)
 *   stream   "stdout" or "stderr"
 *   tag      "F" (full: this piece ends a record) or "P" (partial: more pieces follow on this stream);
 *            containerd may append ":"-separated further tags, which are ignored
 *   message  every byte up to the end of the line, spaces and invalid UTF-8 included; may be empty
 *
 * ---- docker json-file line --------------------------------------------------------------------------------
 *
 *   {"log":"<message>\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"[,"attrs":{...}]}
 *
 *   A JSON object; "log", "stream" and "time" must be strings and present, any other member is skipped
 *   whatever its type; a duplicate "log", "stream" or "time" is an error. A "log" that does not end in "\n" is a partial piece (docker splits at 16 KiB).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "ls_int.h"

/* ---- times -------------------------------------------------------------------------------------------- */

static int digits(const char *s, size_t n, int *out)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return CM_EPROTO;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static int month_days(int y, int m)
{
	static const int md[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return md[m - 1] + (m == 2 && leap);
}

/* "YYYY-MM-DDTHH:MM:SS" into seconds; 19 bytes. */
static int parse_date_time(const char *s, int64_t *sec)
{
	int y, mo, d, h, mi, se;
	if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
		return CM_EPROTO;
	if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) || digits(s + 11, 2, &h) ||
	    digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
		return CM_EPROTO;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59 || se > 60)
		return CM_EPROTO;
	*sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	return 0;
}

int ls_parse_time(const char *s, size_t n, int64_t *ns)
{
	int64_t sec, frac = 0;
	if (n < 20 || parse_date_time(s, &sec))
		return CM_EPROTO;
	size_t i = 19;
	if (s[i] == '.') {
		size_t nd = 0;
		for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, nd++)
			if (nd < 9)
				frac = frac * 10 + (s[i] - '0');
		if (nd == 0 || nd > 9)
			return CM_EPROTO;
		for (; nd < 9; nd++)
			frac *= 10;
	}
	if (i == n - 1 && (s[i] == 'Z' || s[i] == 'z')) {
		*ns = sec * 1000000000 + frac;
		return 0;
	}
	int oh, om;
	if (i + 6 != n || (s[i] != '+' && s[i] != '-') || s[i + 3] != ':' || digits(s + i + 1, 2, &oh) ||
	    digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
		return CM_EPROTO;
	int64_t off = (int64_t)oh * 3600 + om * 60;
	sec += s[i] == '+' ? -off : off;
	if (sec < 0)
		return CM_EPROTO;
	*ns = sec * 1000000000 + frac;
	return 0;
}

/* ---- CRI ------------------------------------------------------------------------------------------------ */

int ls_cri_parse(const char *p, size_t n, ls_line *out)
{
	const char *end = p + n;
	const char *sp = memchr(p, ' ', n);
	ls_line l;
	if (!sp || ls_parse_time(p, (size_t)(sp - p), &l.ts_ns))
		return CM_EPROTO;
	const char *s = sp + 1;
	if (end - s >= 7 && !memcmp(s, "stdout ", 7))
		l.stream = LS_STDOUT;
	else if (end - s >= 7 && !memcmp(s, "stderr ", 7))
		l.stream = LS_STDERR;
	else
		return CM_EPROTO;
	s += 7;
	if (s >= end || (*s != 'P' && *s != 'F'))
		return CM_EPROTO;
	l.partial = *s++ == 'P';
	if (s < end && *s == ':') /* further tags: up to the next space */
		while (s < end && *s != ' ')
			s++;
	if (s < end && *s != ' ')
		return CM_EPROTO;
	if (s < end)
		s++;
	l.msg = s;
	l.len = (size_t)(end - s);
	*out = l;
	return 0;
}

/* ---- docker json-file ----------------------------------------------------------------------------------- */

typedef struct jcur {
	const char *p, *end;
} jcur;

static void ws(jcur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
		c->p++;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char ch = p[i];
		int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
			: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
		if (d < 0)
			return CM_EPROTO;
		v = v << 4 | (unsigned)d;
	}
	*out = v;
	return 0;
}

static int put_utf8(cm_buf *b, unsigned cp)
{
	uint8_t u[4];
	size_t n;
	if (cp < 0x80)
		u[0] = (uint8_t)cp, n = 1;
	else if (cp < 0x800)
		u[0] = (uint8_t)(0xc0 | cp >> 6), u[1] = (uint8_t)(0x80 | (cp & 0x3f)), n = 2;
	else if (cp < 0x10000)
		u[0] = (uint8_t)(0xe0 | cp >> 12), u[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f)),
		u[2] = (uint8_t)(0x80 | (cp & 0x3f)), n = 3;
	else
		u[0] = (uint8_t)(0xf0 | cp >> 18), u[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f)),
		u[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f)), u[3] = (uint8_t)(0x80 | (cp & 0x3f)), n = 4;
	return cm_buf_append(b, u, n);
}

/* \uXXXX, with a following \uXXXX low surrogate when the first is a high one; c->p is past "\u". */
static int unicode_escape(jcur *c, cm_buf *b)
{
	unsigned cp, lo;
	if (c->end - c->p < 4 || hex4(c->p, &cp))
		return CM_EPROTO;
	c->p += 4;
	if (cp >= 0xd800 && cp < 0xdc00) {
		if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &lo) || lo < 0xdc00 ||
		    lo > 0xdfff)
			return CM_EPROTO;
		c->p += 6;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	} else if (cp >= 0xdc00 && cp <= 0xdfff) {
		return CM_EPROTO;
	}
	return put_utf8(b, cp);
}

/* A JSON string at c->p (the opening quote); decoded into b when b is not NULL. */
static int jstring(jcur *c, cm_buf *b)
{
	if (c->p >= c->end || *c->p != '"')
		return CM_EPROTO;
	c->p++;
	for (;;) {
		const char *run = c->p;
		while (c->p < c->end && *c->p != '"' && *c->p != '\\' && (unsigned char)*c->p >= 0x20)
			c->p++;
		if (b && c->p > run && cm_buf_append(b, run, (size_t)(c->p - run)))
			return CM_ENOMEM;
		if (c->p >= c->end || (unsigned char)*c->p < 0x20)
			return CM_EPROTO;
		if (*c->p++ == '"')
			return 0;
		if (c->p >= c->end)
			return CM_EPROTO;
		char e = *c->p++, o;
		switch (e) {
		case '"': o = '"'; break;
		case '\\': o = '\\'; break;
		case '/': o = '/'; break;
		case 'b': o = '\b'; break;
		case 'f': o = '\f'; break;
		case 'n': o = '\n'; break;
		case 'r': o = '\r'; break;
		case 't': o = '\t'; break;
		case 'u': {
			cm_buf dummy;
			cm_buf_init(&dummy);
			int rc = unicode_escape(c, b ? b : &dummy);
			cm_buf_close(&dummy);
			if (rc)
				return rc;
			continue;
		}
		default: return CM_EPROTO;
		}
		if (b && cm_buf_append(b, &o, 1))
			return CM_ENOMEM;
	}
}

/* Skips any JSON value; nesting is bounded so hostile input cannot recurse deeply. */
static int jskip(jcur *c, int depth)
{
	ws(c);
	if (c->p >= c->end || depth > 64)
		return CM_EPROTO;
	if (*c->p == '"')
		return jstring(c, NULL);
	if (*c->p == '{' || *c->p == '[') {
		char close = *c->p == '{' ? '}' : ']';
		int obj = close == '}';
		c->p++;
		ws(c);
		if (c->p < c->end && *c->p == close)
			return c->p++, 0;
		for (;;) {
			if (obj) {
				ws(c);
				if (jstring(c, NULL))
					return CM_EPROTO;
				ws(c);
				if (c->p >= c->end || *c->p++ != ':')
					return CM_EPROTO;
			}
			if (jskip(c, depth + 1))
				return CM_EPROTO;
			ws(c);
			if (c->p >= c->end)
				return CM_EPROTO;
			if (*c->p == close)
				return c->p++, 0;
			if (*c->p++ != ',')
				return CM_EPROTO;
		}
	}
	const char *s = c->p; /* number, true, false, null: a run of their characters */
	while (c->p < c->end && strchr("0123456789+-.eEtrufalsn", *c->p))
		c->p++;
	return c->p > s ? 0 : CM_EPROTO;
}

/* The string value of a member we want, as a span into the input (no escapes expected, checked). */
static int jspan(jcur *c, const char **s, size_t *n)
{
	const char *start = c->p + 1;
	if (jstring(c, NULL))
		return CM_EPROTO;
	*s = start;
	*n = (size_t)(c->p - 1 - start);
	return memchr(start, '\\', *n) ? CM_EPROTO : 0;
}

typedef struct dmembers {
	int have_log, have_stream, have_time;
	const char *stream, *time;
	size_t stream_len, time_len;
} dmembers;

static int docker_member(jcur *c, cm_buf *scratch, dmembers *m)
{
	const char *k = c->p + 1;
	if (jstring(c, NULL))
		return CM_EPROTO;
	size_t kn = (size_t)(c->p - 1 - k);
	ws(c);
	if (c->p >= c->end || *c->p++ != ':')
		return CM_EPROTO;
	ws(c);
	int is_log = kn == 3 && !memcmp(k, "log", 3), is_stream = kn == 6 && !memcmp(k, "stream", 6);
	int is_time = kn == 4 && !memcmp(k, "time", 4);
	if ((is_log && m->have_log) || (is_stream && m->have_stream) || (is_time && m->have_time))
		return CM_EPROTO; /* a duplicate member: which one docker meant is unclear */
	if (is_log) {
		m->have_log = 1;
		return jstring(c, scratch);
	}
	if (is_stream) {
		m->have_stream = 1;
		return jspan(c, &m->stream, &m->stream_len);
	}
	if (is_time) {
		m->have_time = 1;
		return jspan(c, &m->time, &m->time_len);
	}
	return jskip(c, 1);
}

static int docker_object(jcur *c, cm_buf *scratch, dmembers *m)
{
	ws(c);
	if (c->p >= c->end || *c->p++ != '{')
		return CM_EPROTO;
	for (;;) {
		ws(c);
		int rc = docker_member(c, scratch, m);
		if (rc)
			return rc;
		ws(c);
		if (c->p >= c->end)
			return CM_EPROTO;
		if (*c->p == '}')
			break;
		if (*c->p++ != ',')
			return CM_EPROTO;
	}
	c->p++;
	ws(c);
	return c->p == c->end ? 0 : CM_EPROTO;
}

int ls_docker_parse(const char *p, size_t n, cm_buf *scratch, ls_line *out)
{
	jcur c = {p, p + n};
	dmembers m = {0};
	scratch->len = 0;
	int rc = docker_object(&c, scratch, &m);
	if (rc)
		return rc;
	if (!m.have_log || !m.have_stream || !m.have_time)
		return CM_EPROTO;
	ls_line l;
	if (m.stream_len == 6 && !memcmp(m.stream, "stdout", 6))
		l.stream = LS_STDOUT;
	else if (m.stream_len == 6 && !memcmp(m.stream, "stderr", 6))
		l.stream = LS_STDERR;
	else
		return CM_EPROTO;
	if (ls_parse_time(m.time, m.time_len, &l.ts_ns))
		return CM_EPROTO;
	l.msg = (const char *)scratch->data;
	l.len = scratch->len;
	l.partial = !(l.len && l.msg[l.len - 1] == '\n');
	if (!l.partial)
		l.len--;
	if (!l.msg)
		l.msg = "";
	*out = l;
	return 0;
}

/* ---- JSON helpers for LogQL's | json stage (ls_logql.c) ---------------------------------------------------- */

int ls__json_string(const char **p, const char *end, cm_buf *out)
{
	jcur c = {*p, end};
	int rc = jstring(&c, out);
	if (!rc)
		*p = c.p;
	return rc;
}

int ls__json_skip(const char **p, const char *end)
{
	jcur c = {*p, end};
	int rc = jskip(&c, 1);
	if (!rc)
		*p = c.p;
	return rc;
}
