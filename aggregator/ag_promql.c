/* ag_promql.c -- parses PromQL series selectors into tsdb matchers.
 *
 * The foundation answers plain selectors only: `metric`, `metric{l="v", l2!="x", l3=~"re", l4!~"re"}`
 * and `{__name__="metric", ...}`, with PromQL's string syntax (double quotes with Go escapes, single
 * quotes, backquoted raw strings). Everything else is refused with a message that says where parsing
 * stopped. The query-layer issue grows this file into the PromQL parser. Input is untrusted: every
 * byte is bounds-checked and the query length is limited by the caller's arena.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "ag_int.h"

typedef struct parser {
	const char *s;
	size_t pos;
	cm_arena *a;
	cm_err *err;
} parser;

static void skip_ws(parser *p)
{
	while (isspace((unsigned char)p->s[p->pos]))
		p->pos++;
}

static int fail(parser *p, const char *what)
{
	char near[24];
	snprintf(near, sizeof(near), "%.20s", p->s + p->pos);
	if (!p->s[p->pos])
		return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s, found end of input", p->pos + 1,
			       what);
	return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s, found \"%s\"", p->pos + 1, what, near);
}

static int is_ident_char(char c, int first, int metric)
{
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9') ||
	       (metric && c == ':');
}

static const char *ident(parser *p, int metric)
{
	size_t start = p->pos;
	if (!is_ident_char(p->s[p->pos], 1, metric))
		return NULL;
	while (is_ident_char(p->s[p->pos], 0, metric))
		p->pos++;
	return cm_arena_strndup(p->a, p->s + start, p->pos - start);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80)
		return o[0] = (char)cp, 1;
	if (cp < 0x800)
		return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* One escape after a backslash (p->pos at the char after it); appends its bytes to o. */
static int escape(parser *p, char quote, char *o, size_t *olen)
{
	static const char simple[] = "a\ab\bf\fn\nr\rt\tv\v\\\\";
	char c = p->s[p->pos];
	const char *hit = c ? strchr(simple, c) : NULL;
	if (hit && (hit - simple) % 2 == 0) {
		o[(*olen)++] = hit[1];
		p->pos++;
		return CM_OK;
	}
	if (c == quote) {
		o[(*olen)++] = c;
		p->pos++;
		return CM_OK;
	}
	int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : (c >= '0' && c <= '7') ? 3 : 0;
	int base = c >= '0' && c <= '7' ? 8 : 16;
	if (!digits)
		return fail(p, "unknown escape sequence");
	if (base == 16)
		p->pos++;
	unsigned long v = 0;
	for (int i = 0; i < digits; i++) {
		int d = hexval(p->s[p->pos]);
		if (d < 0 || d >= base)
			return fail(p, "invalid escape sequence");
		v = v * (unsigned long)base + (unsigned long)d;
		p->pos++;
	}
	if ((c == 'x' || base == 8) && v > 255)
		return fail(p, "octal escape value > 255");
	if (c == 'x' || base == 8)
		o[(*olen)++] = (char)v;
	else if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return fail(p, "escape sequence is an invalid Unicode code point");
	else
		*olen += put_utf8(o + *olen, v);
	return CM_OK;
}

static int string_lit(parser *p, const char **out)
{
	char quote = p->s[p->pos];
	if (quote != '"' && quote != '\'' && quote != '`')
		return fail(p, "expected a quoted string");
	p->pos++;
	size_t start = p->pos, olen = 0;
	char *o = cm_arena_alloc(p->a, strlen(p->s + start) + 1); /* decoded is never longer */
	if (!o)
		return cm_errf(p->err, CM_ENOMEM, "query too large");
	for (;;) {
		char c = p->s[p->pos];
		if (!c || (c == '\n' && quote != '`'))
			return fail(p, "unterminated quoted string");
		if (c == quote)
			break;
		if (c == '\\' && quote != '`') {
			p->pos++;
			int rc = escape(p, quote, o, &olen);
			if (rc)
				return rc;
			continue;
		}
		o[olen++] = c;
		p->pos++;
	}
	p->pos++;
	o[olen] = 0;
	if (!cm_utf8_valid(o, olen))
		return fail(p, "string is not valid UTF-8");
	*out = o;
	return CM_OK;
}

static int match_op(parser *p, ts_match_type *t)
{
	const char *s = p->s + p->pos;
	if (s[0] == '=' && s[1] == '~')
		*t = TS_MATCH_RE, p->pos += 2;
	else if (s[0] == '!' && s[1] == '~')
		*t = TS_MATCH_NRE, p->pos += 2;
	else if (s[0] == '!' && s[1] == '=')
		*t = TS_MATCH_NE, p->pos += 2;
	else if (s[0] == '=' && s[1] != '=')
		*t = TS_MATCH_EQ, p->pos += 1;
	else
		return fail(p, "expected one of = != =~ !~");
	return CM_OK;
}

#define MAX_MATCHERS 64

static int add_matcher(parser *p, ag__selector *sel, ts_match_type t, const char *name, const char *value)
{
	if (sel->nmatchers == MAX_MATCHERS)
		return cm_errf(p->err, CM_E2BIG, "more than %d label matchers", MAX_MATCHERS);
	int rc = ts_matcher_init(&sel->matchers[sel->nmatchers], t, name, value, p->err);
	if (rc)
		return rc;
	sel->nmatchers++;
	return CM_OK;
}

static int label_matchers(parser *p, ag__selector *sel, int have_name)
{
	p->pos++; /* '{' */
	for (;;) {
		skip_ws(p);
		if (p->s[p->pos] == '}')
			break;
		const char *name = ident(p, 0), *value = NULL;
		if (!name)
			return fail(p, "expected a label name");
		ts_match_type t = TS_MATCH_EQ;
		skip_ws(p);
		int rc = match_op(p, &t);
		skip_ws(p);
		if (!rc)
			rc = string_lit(p, &value);
		if (!rc && have_name && !strcmp(name, "__name__"))
			rc = cm_errf(p->err, CM_EPROTO, "metric name must not be set twice: %s", p->s);
		if (!rc)
			rc = add_matcher(p, sel, t, name, value);
		if (rc)
			return rc;
		skip_ws(p);
		if (p->s[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->s[p->pos] != '}')
			return fail(p, "expected \",\" or \"}\" in label matching");
	}
	p->pos++;
	return CM_OK;
}

static int needs_nonempty_matcher(parser *p, const ag__selector *sel)
{
	for (size_t i = 0; i < sel->nmatchers; i++)
		if (!ts_matcher_matches(&sel->matchers[i], ""))
			return CM_OK;
	return cm_errf(p->err, CM_EPROTO, "vector selector must contain at least one non-empty matcher");
}

int ag__selector_parse(const char *q, cm_arena *a, ag__selector *out, cm_err *err)
{
	parser p = {q, 0, a, err};
	ag__selector sel = {cm_arena_calloc(a, MAX_MATCHERS, sizeof(ts_matcher)), 0};
	if (!sel.matchers)
		return cm_errf(err, CM_ENOMEM, "query too large");
	skip_ws(&p);
	const char *metric = ident(&p, 1);
	int rc = metric ? add_matcher(&p, &sel, TS_MATCH_EQ, "__name__", metric) : CM_OK;
	skip_ws(&p);
	if (!rc && p.s[p.pos] == '{')
		rc = label_matchers(&p, &sel, metric != NULL);
	else if (!rc && !metric)
		rc = fail(&p, "expected a metric name or \"{\" (only series selectors are supported so far)");
	skip_ws(&p);
	if (!rc && p.s[p.pos])
		rc = fail(&p, "unexpected input after the selector (only series selectors are supported so far)");
	if (!rc)
		rc = needs_nonempty_matcher(&p, &sel);
	if (rc) {
		ag__selector_close(&sel);
		return rc;
	}
	*out = sel;
	return CM_OK;
}

void ag__selector_close(ag__selector *s)
{
	for (size_t i = 0; i < s->nmatchers; i++)
		ts_matcher_close(&s->matchers[i]);
	s->nmatchers = 0;
}
