/* ag_promql.c -- the PromQL parser: query text to a type-checked syntax tree (ag_pql.h).
 *
 * Two entry points. ag__selector_parse answers plain series selectors (`metric{l="v", l2=~"re"}`), as
 * the series, labels and federation APIs take them in match[]. ag__pql_parse parses a whole PromQL
 * expression as Prometheus 2.42 does: number, string and duration literals, vector and matrix
 * selectors with offset and @, subqueries, function calls, aggregations with by/without in either
 * position, unary minus and the binary operators with their precedence (or < and unless < comparisons
 * < + - < * / % atan2 < ^, ^ right-associative) and vector matching modifiers. It is a recursive-descent
 * parser with precedence climbing; each node is type-checked as it is built, with Prometheus' wording.
 * Input is untrusted: every byte is bounds-checked, the length is limited (AG_PQL_MAX_LEN) and so is
 * the nesting depth (AG_PQL_MAX_DEPTH), so a hostile query cannot overflow the stack. Regular
 * expressions use RE2 syntax; the common RE2-only escapes (\d \w \s and their negations) are
 * translated to POSIX classes before regcomp, see docs/promql.md for the rest.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ag_int.h"

typedef struct parser {
	const char *s;
	size_t pos;
	cm_arena *a;
	cm_err *err;
	int depth;
	ag__pexpr *sels;  /* every selector built so far, to close on failure */
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
		if (!rc && (t == TS_MATCH_RE || t == TS_MATCH_NRE))
			rc = ag__re2_translate(value, p->a, &value, p->err);
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

/* ---- RE2 to POSIX ERE ---------------------------------------------------------------------------- */

static const char *re2_class(char d, int in_class)
{
	switch (d) {
	case 'd': return in_class ? "0-9" : "[0-9]";
	case 'w': return in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]";
	case 's': return in_class ? " \t\n\f\r" : "[ \t\n\f\r]";
	case 'D': return in_class ? NULL : "[^0-9]";
	case 'W': return in_class ? NULL : "[^A-Za-z0-9_]";
	case 'S': return in_class ? NULL : "[^ \t\n\f\r]";
	default: return "";
	}
}

int ag__re2_translate(const char *re, cm_arena *a, const char **out, cm_err *err)
{
	size_t n = strlen(re), o = 0;
	char *b = cm_arena_alloc(a, n * 14 + 1);
	if (!b)
		return cm_errf(err, CM_ENOMEM, "query too large");
	for (size_t i = 0, in_class = 0; i < n; i++) {
		char c = re[i], d = re[i + 1];
		if (c == '\\' && d) {
			const char *cls = re2_class(d, (int)in_class);
			if (!cls)
				return cm_errf(err, CM_EPROTO, "regex \"%.80s\": \\%c inside [] is not supported", re, d);
			if (strchr("bBAzpPQEC", d))
				return cm_errf(err, CM_EPROTO, "regex \"%.80s\": RE2 escape \\%c is not supported", re, d);
			if (*cls) {
				o += (size_t)sprintf(b + o, "%s", cls);
			} else {
				b[o++] = c;
				b[o++] = d;
			}
			i++;
			continue;
		}
		if (!in_class && ((c == '(' && d == '?') || (strchr("*+?}", c) && d == '?')))
			return cm_errf(err, CM_EPROTO, "regex \"%.80s\": RE2 syntax %c%c is not supported", re, c, d);
		if (!in_class && c == '[') {
			in_class = 1;
			b[o++] = c;
			if (re[i + 1] == '^')
				b[o++] = re[++i];
			if (re[i + 1] == ']')
				b[o++] = re[++i];
			continue;
		}
		if (in_class && c == '[' && d == ':') {
			const char *end = strstr(re + i + 2, ":]");
			size_t len = end ? (size_t)(end - (re + i)) + 2 : 1;
			memcpy(b + o, re + i, len);
			o += len, i += len - 1;
			continue;
		}
		if (in_class && c == ']')
			in_class = 0;
		b[o++] = c;
	}
	b[o] = 0;
	*out = b;
	return CM_OK;
}

/* ---- the expression parser ----------------------------------------------------------------------- */

enum { PREC_OR = 1, PREC_AND, PREC_CMP, PREC_ADD, PREC_MUL, PREC_POW };

static const struct {
	const char *tok;
	int op, prec, word;
} binops[] = {
	{"==", AG_OP_EQ, PREC_CMP, 0},  {"!=", AG_OP_NE, PREC_CMP, 0},   {">=", AG_OP_GE, PREC_CMP, 0},
	{"<=", AG_OP_LE, PREC_CMP, 0},  {">", AG_OP_GT, PREC_CMP, 0},    {"<", AG_OP_LT, PREC_CMP, 0},
	{"+", AG_OP_ADD, PREC_ADD, 0},  {"-", AG_OP_SUB, PREC_ADD, 0},   {"*", AG_OP_MUL, PREC_MUL, 0},
	{"/", AG_OP_DIV, PREC_MUL, 0},  {"%", AG_OP_MOD, PREC_MUL, 0},   {"^", AG_OP_POW, PREC_POW, 0},
	{"and", AG_OP_AND, PREC_AND, 1}, {"or", AG_OP_OR, PREC_OR, 1},   {"unless", AG_OP_UNLESS, PREC_AND, 1},
	{"atan2", AG_OP_ATAN2, PREC_MUL, 1},
};

static const char *const agg_names[] = {"sum",  "avg",  "min",  "max",     "count",    "group",
					"stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"};

static const char *const keywords[] = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
				       "offset", "and", "or", "unless", "atan2"};

static int parse_expr(parser *p, int min_prec, ag__pexpr **out);

static void skip_blank(parser *p)
{
	for (;;) {
		skip_ws(p);
		if (p->s[p->pos] != '#')
			return;
		while (p->s[p->pos] && p->s[p->pos] != '\n')
			p->pos++;
	}
}

static int peek(parser *p)
{
	skip_blank(p);
	return (unsigned char)p->s[p->pos];
}

static size_t word_len(const parser *p)
{
	size_t n = 0;
	if (!is_ident_char(p->s[p->pos], 1, 1))
		return 0;
	while (is_ident_char(p->s[p->pos + n], 0, 1))
		n++;
	return n;
}

/* Is the next word w (case-insensitively, as Prometheus' keywords)? Consumes it when it is. */
static int take_word(parser *p, const char *w)
{
	skip_blank(p);
	size_t n = word_len(p);
	if (n != strlen(w) || strncasecmp(p->s + p->pos, w, n))
		return 0;
	p->pos += n;
	return 1;
}

static int expect(parser *p, char c, const char *what)
{
	if (peek(p) != (unsigned char)c)
		return fail(p, what);
	p->pos++;
	return CM_OK;
}

static ag__pexpr *new_node(parser *p, ag__pkind k, ag__ptype t, size_t pos)
{
	ag__pexpr *e = cm_arena_calloc(p->a, 1, sizeof(*e));
	if (e)
		e->kind = k, e->type = t, e->pos = pos + 1;
	return e;
}

static int oom(parser *p)
{
	return cm_errf(p->err, CM_ENOMEM, "query too large");
}

const char *ag__ptype_name(ag__ptype t)
{
	static const char *const names[] = {"scalar", "instant vector", "range vector", "string", "none"};
	return names[t];
}

/* A Prometheus duration: units y w d h m s ms, each at most once, in that order. */
static int duration(parser *p, int64_t *out)
{
	static const struct {
		const char *u;
		int64_t ms;
	} units[] = {{"y", 365 * 86400000LL}, {"w", 7 * 86400000LL}, {"d", 86400000LL}, {"h", 3600000LL},
		     {"ms", 1}, {"m", 60000}, {"s", 1000}};
	static const int order[] = {0, 1, 2, 3, 6, 4, 5}; /* rank of each unit: ms comes after s */
	skip_blank(p);
	size_t start = p->pos;
	int64_t total = 0;
	int last = -1;
	while (isdigit((unsigned char)p->s[p->pos])) {
		int64_t v = 0;
		while (isdigit((unsigned char)p->s[p->pos])) {
			if (v > INT64_MAX / 100)
				return fail(p, "duration out of range");
			v = v * 10 + (p->s[p->pos++] - '0');
		}
		size_t u = 0;
		while (u < CM_ARRAY_LEN(units) && strncmp(p->s + p->pos, units[u].u, strlen(units[u].u)))
			u++;
		if (u == CM_ARRAY_LEN(units) || order[u] <= last)
			return p->pos = start, fail(p, "bad duration syntax");
		last = order[u];
		p->pos += strlen(units[u].u);
		if (v > INT64_MAX / units[u].ms || total > INT64_MAX - v * units[u].ms)
			return fail(p, "duration out of range");
		total += v * units[u].ms;
	}
	if (p->pos == start || isalnum((unsigned char)p->s[p->pos]))
		return p->pos = start, fail(p, "bad duration syntax");
	if (total > AG_PQL_MAX_DURATION)
		return p->pos = start, fail(p, "duration out of range");
	*out = total;
	return CM_OK;
}

static int is_number_start(const parser *p)
{
	const char *s = p->s + p->pos;
	return isdigit((unsigned char)s[0]) || (s[0] == '.' && isdigit((unsigned char)s[1]));
}

/* Decimal (with fraction and exponent) or 0x hex; Inf and NaN are words. */
static int number(parser *p, double *out)
{
	const char *s = p->s + p->pos;
	size_t n = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && isxdigit((unsigned char)s[2])) {
		n = 2;
		while (isxdigit((unsigned char)s[n]))
			n++;
	} else {
		while (isdigit((unsigned char)s[n]))
			n++;
		if (s[n] == '.')
			for (n++; isdigit((unsigned char)s[n]); n++)
				;
		if ((s[n] == 'e' || s[n] == 'E') &&
		    (isdigit((unsigned char)s[n + 1]) ||
		     ((s[n + 1] == '+' || s[n + 1] == '-') && isdigit((unsigned char)s[n + 2])))) {
			n += 2;
			while (isdigit((unsigned char)s[n]))
				n++;
		}
	}
	if (is_ident_char(s[n], 0, 1))
		return fail(p, "bad number or duration syntax");
	char tmp[64];
	if (n >= sizeof(tmp))
		return fail(p, "number too long");
	memcpy(tmp, s, n);
	tmp[n] = 0;
	*out = strtod(tmp, NULL);
	p->pos += n;
	return CM_OK;
}

static int label_list(parser *p, const char ***out, size_t *n)
{
	if (expect(p, '(', "expected \"(\" before the label list"))
		return CM_EPROTO;
	const char **v = cm_arena_calloc(p->a, MAX_MATCHERS, sizeof(*v));
	size_t k = 0;
	if (!v)
		return oom(p);
	while (peek(p) != ')') {
		const char *name = ident(p, 0);
		if (!name)
			return fail(p, "expected a label name in the grouping list");
		if (k == MAX_MATCHERS)
			return fail(p, "too many labels in the grouping list");
		v[k++] = name;
		if (peek(p) == ',')
			p->pos++;
		else if (peek(p) != ')')
			return fail(p, "expected \",\" or \")\" in the grouping list");
	}
	p->pos++;
	*out = v, *n = k;
	return CM_OK;
}

/* Comma-separated expressions up to the closing parenthesis (the "(" is consumed). */
static int arg_list(parser *p, ag__pexpr ***out, size_t *n)
{
	ag__pexpr **v = NULL;
	size_t k = 0, cap = 0;
	if (peek(p) == ')') {
		p->pos++;
		*out = NULL, *n = 0;
		return CM_OK;
	}
	for (;;) {
		ag__pexpr *e = NULL;
		int rc = parse_expr(p, 0, &e);
		if (rc)
			return rc;
		if (k == cap) {
			ag__pexpr **nv = cm_arena_alloc(p->a, (cap = cap ? cap * 2 : 4) * sizeof(*nv));
			if (!nv)
				return oom(p);
			if (k)
				memcpy(nv, v, k * sizeof(*v));
			v = nv;
		}
		v[k++] = e;
		int c = peek(p);
		p->pos++;
		if (c == ')')
			break;
		if (c != ',')
			return p->pos--, fail(p, "expected \",\" or \")\" in the argument list");
	}
	*out = v, *n = k;
	return CM_OK;
}

static int type_err(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int type_err(parser *p, size_t pos, const char *fmt, ...)
{
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s", pos, msg);
}

static int call(parser *p, const ag__pfunc *f, size_t pos, ag__pexpr **out)
{
	ag__pexpr *e = new_node(p, AG_P_CALL, f->ret, pos);
	if (!e)
		return oom(p);
	p->pos++; /* '(' */
	int rc = arg_list(p, &e->args, &e->nargs);
	if (rc)
		return rc;
	e->func = f;
	int n = (int)e->nargs;
	if (n < f->nargs || (f->maxargs >= 0 && n > f->maxargs)) {
		char msg[160];
		const char *how = f->maxargs == f->nargs ? "" : n < f->nargs ? "at least " : "at most ";
		snprintf(msg, sizeof(msg), "expected %s%d argument(s) in call to \"%s\", got %d", how,
			 n < f->nargs ? f->nargs : f->maxargs, f->name, n);
		return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s", e->pos, msg);
	}
	int last = (f->maxargs >= 0 ? f->maxargs : f->nargs + 1) - 1;
	for (int i = 0; i < n; i++) {
		ag__ptype want = f->args[i < last ? i : last];
		if (e->args[i]->type != want) {
			char msg[160];
			snprintf(msg, sizeof(msg), "expected type %s in call to function \"%s\", got %s",
				 ag__ptype_name(want), f->name, ag__ptype_name(e->args[i]->type));
			return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s", e->args[i]->pos, msg);
		}
	}
	*out = e;
	return CM_OK;
}

static int grouping(parser *p, ag__pexpr *e)
{
	if (take_word(p, "by"))
		return e->without = 0, e->labels ? fail(p, "grouping given twice") : label_list(p, &e->labels, &e->nlabels);
	if (take_word(p, "without"))
		return e->without = 1, e->labels ? fail(p, "grouping given twice") : label_list(p, &e->labels, &e->nlabels);
	return CM_OK;
}

static int agg_check(parser *p, ag__pexpr *e)
{
	int has_param = e->op == AG_AGG_TOPK || e->op == AG_AGG_BOTTOMK || e->op == AG_AGG_QUANTILE ||
			e->op == AG_AGG_COUNT_VALUES;
	size_t want = has_param ? 2 : 1;
	if (e->nargs != want) {
		char msg[128];
		snprintf(msg, sizeof(msg), "wrong number of arguments for aggregate expression provided, expected %zu, got %zu",
			 want, e->nargs);
		return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: %s", e->pos, msg);
	}
	e->lhs = e->args[want - 1];
	e->param = has_param ? e->args[0] : NULL;
	if (e->lhs->type != AG_PT_VECTOR)
		return type_err(p, e->lhs->pos, "expected type instant vector in aggregation expression, got %s",
				ag__ptype_name(e->lhs->type));
	ag__ptype pt = e->op == AG_AGG_COUNT_VALUES ? AG_PT_STRING : AG_PT_SCALAR;
	if (e->param && e->param->type != pt)
		return type_err(p, e->param->pos, "expected type %s in aggregation parameter, got %s", ag__ptype_name(pt),
				ag__ptype_name(e->param->type));
	return CM_OK;
}

static int aggregation(parser *p, int op, size_t pos, ag__pexpr **out)
{
	ag__pexpr *e = new_node(p, AG_P_AGG, AG_PT_VECTOR, pos);
	if (!e)
		return oom(p);
	e->op = op;
	int rc = grouping(p, e);
	if (!rc && peek(p) != '(')
		rc = fail(p, "expected \"(\" after the aggregation");
	if (rc)
		return rc;
	p->pos++;
	rc = arg_list(p, &e->args, &e->nargs);
	if (!rc && !e->labels)
		rc = grouping(p, e);
	if (!rc)
		rc = agg_check(p, e);
	if (!rc)
		*out = e;
	return rc;
}

static int selector(parser *p, const char *metric, size_t pos, ag__pexpr **out)
{
	ag__pexpr *e = new_node(p, AG_P_SEL, AG_PT_VECTOR, pos);
	ag__selector *sel = e ? &e->sel : NULL;
	if (!e || !(sel->matchers = cm_arena_calloc(p->a, MAX_MATCHERS, sizeof(ts_matcher))))
		return oom(p);
	e->next_sel = p->sels; /* linked first: closed on failure from here on */
	p->sels = e;
	int rc = metric ? add_matcher(p, sel, TS_MATCH_EQ, "__name__", metric) : CM_OK;
	if (!rc && peek(p) == '{')
		rc = label_matchers(p, sel, metric != NULL);
	if (!rc)
		rc = needs_nonempty_matcher(p, sel);
	if (!rc)
		*out = e;
	return rc;
}

static int ident_expr(parser *p, size_t pos, ag__pexpr **out)
{
	size_t n = word_len(p);
	char *w = cm_arena_strndup(p->a, p->s + p->pos, n);
	if (!w)
		return oom(p);
	if (!strcasecmp(w, "inf") || !strcasecmp(w, "nan")) {
		ag__pexpr *e = new_node(p, AG_P_NUM, AG_PT_SCALAR, pos);
		if (!e)
			return oom(p);
		p->pos += n;
		e->num = !strcasecmp(w, "inf") ? INFINITY : NAN;
		return *out = e, CM_OK;
	}
	for (size_t i = 0; i < CM_ARRAY_LEN(agg_names); i++) {
		if (strcasecmp(w, agg_names[i]))
			continue;
		p->pos += n;
		int c = peek(p);
		size_t save = p->pos;
		if (c == '(' || take_word(p, "by") || take_word(p, "without"))
			return p->pos = save, aggregation(p, (int)i, pos, out);
		p->pos = pos; /* a metric that happens to be called sum */
	}
	for (size_t i = 0; i < CM_ARRAY_LEN(keywords); i++)
		if (!strcasecmp(w, keywords[i]))
			return fail(p, "unexpected keyword");
	p->pos += n;
	if (peek(p) == '(') {
		const ag__pfunc *f = ag__pfunc_find(w);
		if (!f)
			return p->pos = pos, cm_errf(p->err, CM_EPROTO, "parse error at char %zu: unknown function with name \"%.64s\"",
						    pos + 1, w);
		return call(p, f, pos, out);
	}
	return selector(p, w, pos, out);
}

static int primary(parser *p, ag__pexpr **out)
{
	int c = peek(p);
	size_t pos = p->pos;
	ag__pexpr *e = NULL;
	int rc;
	if (c == '(') {
		p->pos++;
		if (!(e = new_node(p, AG_P_PAREN, AG_PT_NONE, pos)))
			return oom(p);
		rc = parse_expr(p, 0, &e->lhs);
		rc = rc ? rc : expect(p, ')', "expected \")\"");
		e->type = rc ? AG_PT_NONE : e->lhs->type;
	} else if (c == '"' || c == '\'' || c == '`') {
		if (!(e = new_node(p, AG_P_STR, AG_PT_STRING, pos)))
			return oom(p);
		rc = string_lit(p, &e->str);
	} else if (is_number_start(p)) {
		if (!(e = new_node(p, AG_P_NUM, AG_PT_SCALAR, pos)))
			return oom(p);
		rc = number(p, &e->num);
	} else if (c == '{') {
		rc = selector(p, NULL, pos, &e);
	} else if (is_ident_char((char)c, 1, 1)) {
		rc = ident_expr(p, pos, &e);
	} else {
		rc = fail(p, "expected an expression");
	}
	if (!rc)
		*out = e;
	return rc;
}

static int range_suffix(parser *p, ag__pexpr **e)
{
	size_t pos = p->pos;
	p->pos++; /* '[' */
	int64_t range, step = 0;
	int rc = duration(p, &range);
	if (rc)
		return rc;
	if (peek(p) == ':') {
		p->pos++;
		if (peek(p) != ']' && (rc = duration(p, &step)))
			return rc;
		if (expect(p, ']', "expected \"]\" after the subquery"))
			return CM_EPROTO;
		if ((*e)->type != AG_PT_VECTOR)
			return type_err(p, pos + 1, "subquery is only allowed on instant vector, got %s",
					ag__ptype_name((*e)->type));
		ag__pexpr *s = new_node(p, AG_P_SUBQ, AG_PT_MATRIX, (*e)->pos - 1);
		if (!s)
			return oom(p);
		s->lhs = *e, s->range = range, s->step = step;
		*e = s;
		return CM_OK;
	}
	if (expect(p, ']', "expected \"]\" or \":\" after the range"))
		return CM_EPROTO;
	if ((*e)->kind != AG_P_SEL || (*e)->type != AG_PT_VECTOR)
		return type_err(p, pos + 1, "ranges only allowed for vector selectors");
	if ((*e)->offset || (*e)->at)
		return type_err(p, pos + 1, "no offset or @ modifiers allowed before range");
	(*e)->range = range;
	(*e)->type = AG_PT_MATRIX;
	return CM_OK;
}

static int offset_suffix(parser *p, ag__pexpr *e, size_t pos)
{
	if (e->kind != AG_P_SEL && e->kind != AG_P_SUBQ)
		return type_err(p, pos + 1, "offset modifier must be preceded by an instant vector selector or range "
				"vector selector or a subquery");
	if (e->offset)
		return type_err(p, pos + 1, "offset may not be set multiple times");
	int neg = peek(p) == '-';
	p->pos += neg;
	int64_t d;
	int rc = duration(p, &d);
	if (!rc)
		e->offset = neg ? -d : d;
	return rc;
}

static int at_suffix(parser *p, ag__pexpr *e, size_t pos)
{
	if (e->kind != AG_P_SEL && e->kind != AG_P_SUBQ)
		return type_err(p, pos + 1, "@ modifier must be preceded by an instant vector selector or range vector "
				"selector or a subquery");
	if (e->at)
		return type_err(p, pos + 1, "@ <timestamp> may not be set multiple times");
	p->pos++; /* '@' */
	int which = take_word(p, "start") ? AG_AT_START : take_word(p, "end") ? AG_AT_END : 0;
	if (which) {
		int rc = expect(p, '(', "expected \"(\" after start/end");
		rc = rc ? rc : expect(p, ')', "expected \")\" after start(/end(");
		return rc ? rc : (e->at = which, CM_OK);
	}
	int neg = peek(p) == '-';
	p->pos += neg || peek(p) == '+';
	double v;
	if (!is_number_start(p) || number(p, &v))
		return fail(p, "expected a timestamp, start() or end() after @");
	v = (neg ? -v : v) * 1000;
	if (!(v > -(double)AG_PQL_MAX_TIME && v < (double)AG_PQL_MAX_TIME))
		return type_err(p, pos + 1, "timestamp out of bounds for @ modifier");
	e->at = AG_AT_TIME;
	e->at_ms = (int64_t)llround(v);
	return CM_OK;
}

static int postfix(parser *p, ag__pexpr **e)
{
	for (;;) {
		int c = peek(p), rc;
		size_t pos = p->pos;
		if (c == '[')
			rc = range_suffix(p, e);
		else if (take_word(p, "offset"))
			rc = offset_suffix(p, *e, pos);
		else if (c == '@')
			rc = at_suffix(p, *e, pos);
		else
			return CM_OK;
		if (rc)
			return rc;
	}
}

static int unary(parser *p, ag__pexpr **out)
{
	int c = peek(p);
	size_t pos = p->pos;
	if (c != '-' && c != '+') {
		int rc = primary(p, out);
		return rc ? rc : postfix(p, out);
	}
	p->pos++;
	ag__pexpr *x = NULL;
	int rc = parse_expr(p, PREC_POW, &x);
	if (rc)
		return rc;
	if (x->type != AG_PT_SCALAR && x->type != AG_PT_VECTOR)
		return type_err(p, pos + 1, "unary expression only allowed on expressions of type scalar or instant "
				"vector, got %s", ag__ptype_name(x->type));
	if (c == '+' || x->kind == AG_P_NUM) {
		x->num = c == '-' ? -x->num : x->num;
		return *out = x, CM_OK;
	}
	ag__pexpr *e = new_node(p, AG_P_NEG, x->type, pos);
	if (!e)
		return oom(p);
	e->lhs = x;
	return *out = e, CM_OK;
}

/* The binary operator at the cursor, or -1; *len is its length. */
static int peek_binop(parser *p, size_t *len)
{
	skip_blank(p);
	const char *s = p->s + p->pos;
	size_t wl = word_len(p);
	for (size_t i = 0; i < CM_ARRAY_LEN(binops); i++) {
		size_t n = strlen(binops[i].tok);
		if (binops[i].word ? (wl == n && !strncasecmp(s, binops[i].tok, n)) : !strncmp(s, binops[i].tok, n)) {
			*len = n;
			return (int)i;
		}
	}
	return -1;
}

static int is_cmp(int op)
{
	return op >= AG_OP_EQ && op <= AG_OP_LE;
}

static int is_set(int op)
{
	return op == AG_OP_AND || op == AG_OP_OR || op == AG_OP_UNLESS;
}

static int bin_modifiers(parser *p, ag__pexpr *e)
{
	int rc = CM_OK, matching = 0;
	e->ret_bool = take_word(p, "bool");
	if (take_word(p, "on") || (matching = take_word(p, "ignoring")) != 0) {
		e->on = !matching;
		matching = 1;
		if ((rc = label_list(p, &e->labels, &e->nlabels)))
			return rc;
	}
	int left = take_word(p, "group_left"), right = !left && take_word(p, "group_right");
	if (left || right) {
		e->card = left ? AG_CARD_MANY_ONE : AG_CARD_ONE_MANY;
		if (peek(p) == '(')
			rc = label_list(p, &e->include, &e->ninclude);
		matching = 1;
	}
	e->num = matching; /* remembered for the type check */
	return rc;
}

static int bin_check(parser *p, ag__pexpr *e, const char *tok)
{
	ag__ptype l = e->lhs->type, r = e->rhs->type;
	size_t pos = e->pos;
	if (e->ret_bool && !is_cmp(e->op))
		return type_err(p, pos, "bool modifier can only be used on comparison operators");
	if ((l != AG_PT_SCALAR && l != AG_PT_VECTOR) || (r != AG_PT_SCALAR && r != AG_PT_VECTOR))
		return type_err(p, pos, "binary expression must contain only scalar and instant vector types");
	if (is_cmp(e->op) && l == AG_PT_SCALAR && r == AG_PT_SCALAR && !e->ret_bool)
		return type_err(p, pos, "comparisons between scalars must use BOOL modifier");
	if (is_set(e->op) && (l != AG_PT_VECTOR || r != AG_PT_VECTOR))
		return type_err(p, pos, "set operator \"%s\" not allowed in binary scalar expression%s", tok, "");
	if (e->num && (l != AG_PT_VECTOR || r != AG_PT_VECTOR))
		return type_err(p, pos, "vector matching only allowed between instant vectors");
	if (is_set(e->op) && e->card != AG_CARD_ONE_ONE)
		return type_err(p, pos, "no grouping allowed for \"%s\" operation%s", tok, "");
	if (is_set(e->op))
		e->card = AG_CARD_MANY_MANY;
	for (size_t i = 0; e->on && i < e->ninclude; i++)
		for (size_t j = 0; j < e->nlabels; j++)
			if (!strcmp(e->include[i], e->labels[j]))
				return type_err(p, pos, "label \"%s\" must not occur in ON and GROUP clause at once%s",
						e->include[i], "");
	e->num = 0;
	e->type = l == AG_PT_VECTOR || r == AG_PT_VECTOR ? AG_PT_VECTOR : AG_PT_SCALAR;
	return CM_OK;
}

static int parse_expr(parser *p, int min_prec, ag__pexpr **out)
{
	if (++p->depth > AG_PQL_MAX_DEPTH)
		return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: expression nested deeper than %d levels",
			       p->pos + 1, AG_PQL_MAX_DEPTH);
	ag__pexpr *lhs = NULL;
	int rc = unary(p, &lhs), ops = 0;
	for (size_t len; !rc; ops++) {
		size_t pos = p->pos;
		int i = peek_binop(p, &len);
		if (i < 0 || binops[i].prec < min_prec)
			break;
		p->pos += len;
		ag__pexpr *e = new_node(p, AG_P_BIN, AG_PT_NONE, pos);
		if (!e)
			return oom(p);
		e->op = binops[i].op;
		e->lhs = lhs;
		if (++p->depth > AG_PQL_MAX_DEPTH) /* a chain of operators is a tree as deep as it is long */
			return cm_errf(p->err, CM_EPROTO, "parse error at char %zu: expression nested deeper than %d levels",
				       pos + 1, AG_PQL_MAX_DEPTH);
		rc = bin_modifiers(p, e);
		rc = rc ? rc : parse_expr(p, binops[i].op == AG_OP_POW ? PREC_POW : binops[i].prec + 1, &e->rhs);
		rc = rc ? rc : bin_check(p, e, binops[i].tok);
		lhs = e;
	}
	p->depth -= 1 + ops;
	if (!rc)
		*out = lhs;
	return rc;
}

void ag__pql_close(ag__pquery *q)
{
	for (ag__pexpr *e = q->sels; e; e = e->next_sel)
		ag__selector_close(&e->sel);
	q->sels = NULL;
}

int ag__pql_parse(const char *q, cm_arena *a, ag__pquery *out, cm_err *err)
{
	parser p = {q, 0, a, err, 0, NULL};
	if (strlen(q) > AG_PQL_MAX_LEN)
		return cm_errf(err, CM_EPROTO, "query is longer than %d bytes", AG_PQL_MAX_LEN);
	ag__pexpr *root = NULL;
	int rc = parse_expr(&p, 0, &root);
	if (!rc && peek(&p))
		rc = fail(&p, "unexpected input after the expression");
	ag__pquery res = {root, p.sels};
	if (rc) {
		ag__pql_close(&res);
		return rc;
	}
	*out = res;
	return CM_OK;
}
