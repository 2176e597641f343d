/* ls_logql.c -- a LogQL subset: parser, log pipeline, and evaluation over the log store.
 *
 * The aggregator's Loki API parses the query text of every request here (untrusted bytes: the fuzz
 * harness fuzz_ls_logql feeds it anything) and runs it with ls_logql_exec over ls_store_select. Results
 * live in one arena per query. Nothing here prints; limits on entries scanned, series and steps bound
 * every query.
 *
 * Grammar (whitespace between tokens is free):
 *
 *   query      = metric | log
 *   metric     = "sum" [by] "(" range ")" [by] | range
 *   by         = "by" "(" [name {"," name}] ")"
 *   range      = ("count_over_time" | "rate" | "bytes_over_time" | "bytes_rate") "(" log "[" duration "]" ")"
 *   log        = selector {stage}
 *   selector   = "{" matcher {"," matcher} [","] "}"
 *   matcher    = name ("=" | "!=" | "=~" | "!~") string
 *   stage      = ("|=" | "!=" | "|~" | "!~") string
 *              | "|" "json" | "|" "logfmt" | "|" "line_format" string
 *              | "|" name ("=" | "!=" | "=~" | "!~") string
 *              | "|" name (">" | ">=" | "<" | "<=" | "==" | "!=") number
 *   string     = "..." with Go escapes | `...` raw
 *   duration   = one or more <number><unit>, units ms s m h d w y (e.g. 1h30m)
 *
 * Semantics follow Loki: selector regexes are anchored, line filter regexes are not; a label missing
 * from a stream has the value ""; | json flattens nested objects with "_" and ignores arrays, | logfmt
 * takes key=value pairs; an extracted label whose name a stream label already has is renamed
 * <name>_extracted; a line that does not parse gets __error__="JSONParserErr" or "LogfmtParserErr";
 * line_format substitutes {{.name}} and {{ .name }}. Metric windows are (t - range, t]; a step whose
 * window holds no entry has no point. Regexes are POSIX extended (glibc), not RE2.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ls_int.h"

enum { OP_EQ, OP_NE, OP_RE, OP_NRE, OP_GT, OP_GE, OP_LT, OP_LE, OP_EQEQ };
enum { ST_HAS, ST_HASNT, ST_RE, ST_NRE, ST_JSON, ST_LOGFMT, ST_LABEL, ST_NUM, ST_FORMAT };
enum { FN_NONE, FN_COUNT, FN_RATE, FN_BYTES, FN_BYTES_RATE };

typedef struct lmatch {
	int op;
	char *name, *value;
	double num;
	regex_t re;
	int re_ok;
} lmatch;

typedef struct stage {
	int type;
	lmatch m;  /* ST_LABEL, ST_NUM; value = the needle for line filters; ST_RE uses m.re */
} stage;

struct ls_query {
	lmatch *sel;
	size_t nsel;
	stage *st;
	size_t nst;
	int fn, sum;
	int64_t range_ns;
	char **by;
	size_t nby;
	cm_arena a;
};

/* ---- lexer ------------------------------------------------------------------------------------------------ */

typedef struct lex {
	const char *p, *end;
	cm_arena *a;
	cm_err *err;
} lex;

static void skip_ws(lex *l)
{
	while (l->p < l->end && isspace((unsigned char)*l->p))
		l->p++;
}

static int fail(lex *l, const char *what)
{
	return cm_errf(l->err, CM_EINVAL, "parse error at char %zu: %s", (size_t)(l->end - l->p), what);
}

/* Consumes tok when it comes next (after whitespace). */
static int accept(lex *l, const char *tok)
{
	skip_ws(l);
	size_t n = strlen(tok);
	if ((size_t)(l->end - l->p) >= n && !memcmp(l->p, tok, n)) {
		l->p += n;
		return 1;
	}
	return 0;
}

/* Consumes the identifier word when it comes next as a whole word. */
static int accept_word(lex *l, const char *w)
{
	skip_ws(l);
	size_t n = strlen(w);
	if ((size_t)(l->end - l->p) >= n && !memcmp(l->p, w, n) &&
	    (l->p + n == l->end || !(isalnum((unsigned char)l->p[n]) || l->p[n] == '_'))) {
		l->p += n;
		return 1;
	}
	return 0;
}

static int ident(lex *l, char **out)
{
	skip_ws(l);
	const char *s = l->p;
	if (l->p < l->end && (isalpha((unsigned char)*l->p) || *l->p == '_'))
		while (l->p < l->end && (isalnum((unsigned char)*l->p) || *l->p == '_'))
			l->p++;
	if (l->p == s)
		return fail(l, "expected a label name");
	*out = cm_arena_strndup(l->a, s, (size_t)(l->p - s));
	return *out ? 0 : CM_ENOMEM;
}

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

/* One escape after a backslash in a "..." string; appends to b. */
static int escape(lex *l, cm_buf *b)
{
	if (l->p >= l->end)
		return fail(l, "unterminated string");
	char c = *l->p++;
	const char *simple = strchr("abfnrtv\\\"'", c);
	if (simple && c) {
		static const char map[] = "\a\b\f\n\r\t\v\\\"'";
		return cm_buf_append(b, &map[simple - "abfnrtv\\\"'"], 1);
	}
	if (c == 'x' && l->end - l->p >= 2 && hexval(l->p[0]) >= 0 && hexval(l->p[1]) >= 0) {
		char v = (char)(hexval(l->p[0]) * 16 + hexval(l->p[1]));
		l->p += 2;
		return cm_buf_append(b, &v, 1);
	}
	return fail(l, "unknown escape in string");
}

static int string(lex *l, char **out)
{
	skip_ws(l);
	if (l->p >= l->end || (*l->p != '"' && *l->p != '`'))
		return fail(l, "expected a string");
	char q = *l->p++;
	cm_buf b;
	cm_buf_init(&b);
	int rc = 0;
	while (!rc && l->p < l->end && *l->p != q)
		rc = q == '"' && *l->p == '\\' ? (l->p++, escape(l, &b)) : cm_buf_append(&b, l->p++, 1);
	if (!rc && l->p >= l->end)
		rc = fail(l, "unterminated string");
	if (!rc) {
		l->p++;
		if (memchr(b.data ? (const char *)b.data : "", 0, b.len))
			rc = fail(l, "NUL in string");
	}
	if (!rc && !(*out = cm_arena_strndup(l->a, b.data ? (const char *)b.data : "", b.len)))
		rc = CM_ENOMEM;
	cm_buf_close(&b);
	return rc;
}

static int duration(lex *l, int64_t *out)
{
	skip_ws(l);
	int64_t total = 0;
	int parts = 0;
	while (l->p < l->end && isdigit((unsigned char)*l->p)) {
		int64_t v = 0;
		while (l->p < l->end && isdigit((unsigned char)*l->p) && v < 1000000000)
			v = v * 10 + (*l->p++ - '0');
		static const struct { const char *u; int64_t ns; } units[] = {
			{"ms", 1000000}, {"s", 1000000000LL}, {"m", 60000000000LL}, {"h", 3600000000000LL},
			{"d", 86400000000000LL}, {"w", 604800000000000LL}, {"y", 31536000000000000LL}};
		size_t i;
		for (i = 0; i < CM_ARRAY_LEN(units); i++) {
			size_t n = strlen(units[i].u);
			if ((size_t)(l->end - l->p) >= n && !memcmp(l->p, units[i].u, n) &&
			    !(n == 1 && units[i].u[0] == 'm' && l->end - l->p >= 2 && l->p[1] == 's'))
				break;
		}
		if (i == CM_ARRAY_LEN(units) || v > INT64_MAX / units[i].ns || total > INT64_MAX - v * units[i].ns)
			return fail(l, "bad duration");
		l->p += strlen(units[i].u);
		total += v * units[i].ns;
		parts++;
	}
	if (!parts || total <= 0)
		return fail(l, "expected a duration such as 5m");
	*out = total;
	return 0;
}

/* ---- parser ----------------------------------------------------------------------------------------------- */

static int compile(lex *l, lmatch *m, int anchored)
{
	char *pat = m->value;
	if (!cm_regex_safe(pat))
		return fail(l, "regular expression too long, with a count over 1000, or with stacked repetitions");
	if (anchored) {
		size_t n = strlen(m->value);
		if (!(pat = cm_arena_alloc(l->a, n + 5)))
			return CM_ENOMEM;
		snprintf(pat, n + 5, "^(%s)$", m->value);
	}
	if (regcomp(&m->re, pat, REG_EXTENDED | REG_NOSUB))
		return fail(l, "bad regular expression");
	m->re_ok = 1;
	return 0;
}

static int match_op(lex *l, int *op)
{
	if (accept(l, "=~"))
		*op = OP_RE;
	else if (accept(l, "!~"))
		*op = OP_NRE;
	else if (accept(l, "!="))
		*op = OP_NE;
	else if (accept(l, "=="))
		*op = OP_EQEQ;
	else if (accept(l, ">="))
		*op = OP_GE;
	else if (accept(l, "<="))
		*op = OP_LE;
	else if (accept(l, "="))
		*op = OP_EQ;
	else if (accept(l, ">"))
		*op = OP_GT;
	else if (accept(l, "<"))
		*op = OP_LT;
	else
		return fail(l, "expected an operator");
	return 0;
}

static int grow_arr(lex *l, void **arr, size_t n, size_t size)
{
	if (n & (n - 1)) /* capacity doubles at powers of two */
		return 0;
	void *na = cm_arena_alloc(l->a, (n ? n * 2 : 1) * size);
	if (!na)
		return CM_ENOMEM;
	if (n)
		memcpy(na, *arr, n * size);
	*arr = na;
	return 0;
}

static int selector(lex *l, ls_query *q)
{
	if (!accept(l, "{"))
		return fail(l, "expected a stream selector {...}");
	while (!accept(l, "}")) {
		lmatch m = {0};
		int rc = ident(l, &m.name) || match_op(l, &m.op) ? CM_EINVAL : string(l, &m.value);
		if (rc || m.op > OP_NRE)
			return rc ? rc : fail(l, "a selector takes = != =~ !~");
		if ((m.op == OP_RE || m.op == OP_NRE) && (rc = compile(l, &m, 1)))
			return rc;
		if ((rc = grow_arr(l, (void **)&q->sel, q->nsel, sizeof(lmatch))))
			return rc;
		q->sel[q->nsel++] = m;
		if (!accept(l, ",") && (skip_ws(l), l->p >= l->end || *l->p != '}'))
			return fail(l, "expected , or }");
	}
	return q->nsel ? 0 : fail(l, "a stream selector needs at least one matcher");
}

static int number(lex *l, double *out)
{
	skip_ws(l);
	char buf[64];
	size_t n = 0;
	while (l->p + n < l->end && n < sizeof(buf) - 1 && strchr("0123456789+-.eE", l->p[n]))
		n++;
	memcpy(buf, l->p, n);
	buf[n] = 0;
	char *end;
	*out = strtod(buf, &end);
	if (!n || end != buf + n)
		return fail(l, "expected a number");
	l->p += n;
	return 0;
}

static int label_stage(lex *l, stage *s)
{
	int rc = ident(l, &s->m.name) || match_op(l, &s->m.op) ? CM_EINVAL : 0;
	if (rc)
		return rc;
	skip_ws(l);
	if (l->p < l->end && (*l->p == '"' || *l->p == '`')) {
		if (s->m.op > OP_NRE)
			return fail(l, "a string comparison takes = != =~ !~");
		s->type = ST_LABEL;
		rc = string(l, &s->m.value);
		return !rc && (s->m.op == OP_RE || s->m.op == OP_NRE) ? compile(l, &s->m, 1) : rc;
	}
	if (s->m.op == OP_RE || s->m.op == OP_NRE)
		return fail(l, "=~ and !~ take a string");
	s->type = ST_NUM;
	return number(l, &s->m.num);
}

static int one_stage(lex *l, stage *s)
{
	int rc;
	if (accept(l, "|=") || accept(l, "!=") || accept(l, "|~") || accept(l, "!~")) {
		char a = l->p[-2], b = l->p[-1];
		s->type = b == '=' ? (a == '|' ? ST_HAS : ST_HASNT) : (a == '|' ? ST_RE : ST_NRE);
		if ((rc = string(l, &s->m.value)))
			return rc;
		return s->type == ST_RE || s->type == ST_NRE ? compile(l, &s->m, 0) : 0;
	}
	if (!accept(l, "|"))
		return fail(l, "expected a pipeline stage");
	if (accept_word(l, "json"))
		return s->type = ST_JSON, 0;
	if (accept_word(l, "logfmt"))
		return s->type = ST_LOGFMT, 0;
	if (accept_word(l, "line_format"))
		return s->type = ST_FORMAT, string(l, &s->m.value);
	return label_stage(l, s);
}

static int log_query(lex *l, ls_query *q)
{
	int rc = selector(l, q);
	for (;;) {
		skip_ws(l);
		if (rc || l->p >= l->end || (*l->p != '|' && *l->p != '!'))
			return rc;
		if ((rc = grow_arr(l, (void **)&q->st, q->nst, sizeof(stage))))
			return rc;
		stage *s = &q->st[q->nst];
		memset(s, 0, sizeof(*s));
		rc = one_stage(l, s);
		q->nst++; /* counted even on failure so its regex is freed */
	}
}

static int by_clause(lex *l, ls_query *q)
{
	if (!accept_word(l, "by"))
		return 0;
	if (q->by)
		return fail(l, "two by clauses");
	if (!accept(l, "("))
		return fail(l, "expected ( after by");
	q->by = cm_arena_alloc(l->a, sizeof(char *)); /* non-NULL even when empty */
	if (!q->by)
		return CM_ENOMEM;
	while (!accept(l, ")")) {
		char *name;
		int rc = ident(l, &name) || grow_arr(l, (void **)&q->by, q->nby, sizeof(char *));
		if (rc)
			return CM_EINVAL;
		q->by[q->nby++] = name;
		if (!accept(l, ",") && (skip_ws(l), l->p >= l->end || *l->p != ')'))
			return fail(l, "expected , or )");
	}
	return 0;
}

static int range_query(lex *l, ls_query *q)
{
	static const struct { const char *name; int fn; } fns[] = {
		{"count_over_time", FN_COUNT}, {"rate", FN_RATE}, {"bytes_over_time", FN_BYTES}, {"bytes_rate", FN_BYTES_RATE}};
	for (size_t i = 0; i < CM_ARRAY_LEN(fns); i++)
		if (accept_word(l, fns[i].name)) {
			q->fn = fns[i].fn;
			int rc = !accept(l, "(") ? fail(l, "expected (") : log_query(l, q);
			if (!rc && !accept(l, "["))
				rc = fail(l, "expected [range]");
			if (!rc)
				rc = duration(l, &q->range_ns);
			if (!rc && (!accept(l, "]") || !accept(l, ")")))
				rc = fail(l, "expected ])");
			return rc;
		}
	return fail(l, "expected count_over_time, rate, bytes_over_time or bytes_rate");
}

static int query(lex *l, ls_query *q)
{
	skip_ws(l);
	if (l->p < l->end && *l->p == '{')
		return log_query(l, q);
	if (!accept_word(l, "sum"))
		return range_query(l, q);
	q->sum = 1;
	int rc = by_clause(l, q);
	if (!rc)
		rc = !accept(l, "(") ? fail(l, "expected (") : range_query(l, q);
	if (!rc && !accept(l, ")"))
		rc = fail(l, "expected )");
	return rc ? rc : by_clause(l, q);
}

void ls_logql_free(ls_query *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->nsel; i++)
		if (q->sel[i].re_ok)
			regfree(&q->sel[i].re);
	for (size_t i = 0; i < q->nst; i++)
		if (q->st[i].m.re_ok)
			regfree(&q->st[i].m.re);
	cm_arena a = q->a;
	cm_arena_close(&a);
}

int ls_logql_parse(const char *text, ls_query **out, cm_err *err)
{
	cm_arena a;
	cm_arena_init(&a, 1 << 20);
	ls_query *q = cm_arena_calloc(&a, 1, sizeof(*q));
	if (!q) {
		cm_arena_close(&a);
		return cm_errf(err, CM_ENOMEM, "out of memory");
	}
	lex l = {text, text + strlen(text), &a, err};
	int rc = query(&l, q);
	skip_ws(&l);
	if (!rc && l.p != l.end)
		rc = fail(&l, "unexpected text after the query");
	q->a = a;
	if (rc) {
		ls_logql_free(q);
		return rc == CM_ENOMEM ? cm_errf(err, rc, "query too large") : rc;
	}
	*out = q;
	return 0;
}

int ls_logql_is_metric(const ls_query *q) { return q->fn != FN_NONE; }

int ls_labels_parse(const char *text, cm_arena *a, cm_label **out, size_t *n, cm_err *err)
{
	lex l = {text, text + strlen(text), a, err};
	ls_query q = {0};
	int rc = selector(&l, &q);
	skip_ws(&l);
	if (!rc && l.p != l.end)
		rc = fail(&l, "unexpected text after the labels");
	cm_label *labels = rc ? NULL : cm_arena_calloc(a, q.nsel, sizeof(cm_label));
	if (!rc && !labels)
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	for (size_t i = 0; i < q.nsel; i++) {
		if (!rc && q.sel[i].op != OP_EQ)
			rc = cm_errf(err, CM_EINVAL, "labels take only =");
		if (!rc)
			labels[i] = (cm_label){q.sel[i].name, q.sel[i].value};
		if (q.sel[i].re_ok)
			regfree(&q.sel[i].re);
	}
	if (!rc)
		*out = labels, *n = q.nsel;
	return rc;
}

/* ---- matching and the pipeline ---------------------------------------------------------------------------- */

static const char *label_get(const cm_label *l, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(l[i].name, name))
			return l[i].value;
	return "";
}

static int str_match(const lmatch *m, const char *v)
{
	switch (m->op) {
	case OP_EQ: return !strcmp(v, m->value);
	case OP_NE: return strcmp(v, m->value) != 0;
	case OP_RE: return regexec(&m->re, v, 0, NULL, 0) == 0;
	default: return regexec(&m->re, v, 0, NULL, 0) != 0;
	}
}

int ls_logql_matches(const ls_query *q, const cm_label *labels, size_t n)
{
	for (size_t i = 0; i < q->nsel; i++)
		if (!str_match(&q->sel[i], label_get(labels, n, q->sel[i].name)))
			return 0;
	return 1;
}

#define PL_MAX_LABELS 128
#define PL_SCRATCH (64 * 1024)

/* The working state of one entry going through the pipeline. */
typedef struct pline {
	cm_label l[PL_MAX_LABELS];
	size_t n, nstream;
	char scratch[PL_SCRATCH];
	size_t used;
	const char *line;
	size_t len;
	cm_buf fmt;  /* line_format output */
	cm_buf tmp;
} pline;

static char *pl_dup(pline *p, const char *s, size_t n)
{
	if (p->used + n + 1 > PL_SCRATCH)
		return NULL;
	char *d = p->scratch + p->used;
	memcpy(d, s, n);
	d[n] = 0;
	p->used += n + 1;
	return d;
}

/* Adds an extracted label: name sanitised, renamed when a stream label has it, later values win. */
static void pl_add(pline *p, const char *name, size_t nn, const char *val, size_t vn)
{
	char nbuf[256];
	size_t k = 0;
	if (nn && isdigit((unsigned char)name[0]))
		nbuf[k++] = '_';
	for (size_t i = 0; i < nn && k < 200; i++)
		nbuf[k++] = isalnum((unsigned char)name[i]) || name[i] == '_' ? name[i] : '_';
	nbuf[k] = 0;
	if (!k || memchr(val, 0, vn) || !cm_utf8_valid(val, vn))
		return;
	for (size_t i = 0; i < p->nstream; i++)
		if (!strcmp(p->l[i].name, nbuf)) {
			snprintf(nbuf + k, sizeof(nbuf) - k, "_extracted");
			break;
		}
	const char *v = pl_dup(p, val, vn);
	for (size_t i = p->nstream; i < p->n && v; i++)
		if (!strcmp(p->l[i].name, nbuf)) {
			p->l[i].value = v;
			return;
		}
	const char *nm = v ? pl_dup(p, nbuf, strlen(nbuf)) : NULL;
	if (nm && p->n < PL_MAX_LABELS)
		p->l[p->n++] = (cm_label){nm, v};
}

static int json_object(pline *p, const char **c, const char *end, char *prefix, size_t plen, int depth);

static int json_member(pline *p, const char **c, const char *end, char *prefix, size_t plen, int depth)
{
	p->tmp.len = 0;
	if (ls__json_string(c, end, &p->tmp))
		return CM_EPROTO;
	size_t klen = p->tmp.len;
	if (plen + klen + 2 > 256)
		klen = 0;
	size_t np = plen;
	if (klen) {
		if (plen)
			prefix[np++] = '_';
		memcpy(prefix + np, p->tmp.data, klen);
		np += klen;
	}
	while (*c < end && isspace((unsigned char)**c))
		(*c)++;
	if (*c >= end || *(*c)++ != ':')
		return CM_EPROTO;
	while (*c < end && isspace((unsigned char)**c))
		(*c)++;
	if (*c < end && **c == '{')
		return depth > 16 ? CM_EPROTO : json_object(p, c, end, prefix, np, depth + 1);
	if (*c < end && **c == '"') {
		p->tmp.len = 0;
		if (ls__json_string(c, end, &p->tmp))
			return CM_EPROTO;
		pl_add(p, prefix, np, p->tmp.data ? (const char *)p->tmp.data : "", p->tmp.len);
		return 0;
	}
	const char *v = *c;
	if (ls__json_skip(c, end))
		return CM_EPROTO;
	if (*v != '[')
		pl_add(p, prefix, np, v, (size_t)(*c - v));
	return 0;
}

static int json_object(pline *p, const char **c, const char *end, char *prefix, size_t plen, int depth)
{
	(*c)++; /* { */
	for (;;) {
		while (*c < end && isspace((unsigned char)**c))
			(*c)++;
		if (*c < end && **c == '}')
			return (*c)++, 0;
		if (json_member(p, c, end, prefix, plen, depth))
			return CM_EPROTO;
		while (*c < end && isspace((unsigned char)**c))
			(*c)++;
		if (*c < end && **c == ',')
			(*c)++;
		else if (*c >= end || **c != '}')
			return CM_EPROTO;
	}
}

static void stage_json(pline *p)
{
	const char *c = p->line, *end = p->line + p->len;
	char prefix[256];
	while (c < end && isspace((unsigned char)*c))
		c++;
	if (c >= end || *c != '{' || json_object(p, &c, end, prefix, 0, 0))
		pl_add(p, "__error__", 9, "JSONParserErr", 13);
}

static void stage_logfmt(pline *p)
{
	const char *c = p->line, *end = p->line + p->len;
	while (c < end) {
		while (c < end && *c == ' ')
			c++;
		const char *k = c;
		while (c < end && *c != '=' && *c != ' ')
			c++;
		size_t kn = (size_t)(c - k);
		if (c >= end || *c != '=') {
			if (kn)
				pl_add(p, k, kn, "", 0);
			continue;
		}
		c++;
		p->tmp.len = 0;
		if (c < end && *c == '"') {
			for (c++; c < end && *c != '"'; c++) {
				if (*c == '\\' && c + 1 < end)
					c++;
				cm_buf_append(&p->tmp, c, 1);
			}
			if (c >= end) {
				pl_add(p, "__error__", 9, "LogfmtParserErr", 15);
				return;
			}
			c++;
		} else {
			const char *v = c;
			while (c < end && *c != ' ')
				c++;
			cm_buf_append(&p->tmp, v, (size_t)(c - v));
		}
		if (kn)
			pl_add(p, k, kn, p->tmp.data ? (const char *)p->tmp.data : "", p->tmp.len);
	}
}

static void stage_format(pline *p, const char *tpl)
{
	p->fmt.len = 0;
	for (const char *c = tpl; *c;) {
		const char *open = strstr(c, "{{");
		const char *close = open ? strstr(open, "}}") : NULL;
		if (!close) {
			cm_buf_puts(&p->fmt, c);
			break;
		}
		cm_buf_append(&p->fmt, c, (size_t)(open - c));
		const char *n = open + 2;
		while (*n == ' ')
			n++;
		const char *ne = close;
		while (ne > n && ne[-1] == ' ')
			ne--;
		if (*n == '.' && ne > n + 1) {
			char name[256];
			snprintf(name, sizeof(name), "%.*s", (int)(ne - n - 1), n + 1);
			cm_buf_puts(&p->fmt, label_get(p->l, p->n, name));
		} else {
			cm_buf_append(&p->fmt, open, (size_t)(close + 2 - open));
		}
		c = close + 2;
	}
	p->line = p->fmt.data ? (const char *)p->fmt.data : "";
	p->len = p->fmt.len;
}

static int num_match(const lmatch *m, const char *v)
{
	char *end;
	double x = strtod(v, &end);
	if (!*v || *end)
		return 0;
	switch (m->op) {
	case OP_GT: return x > m->num;
	case OP_GE: return x >= m->num;
	case OP_LT: return x < m->num;
	case OP_LE: return x <= m->num;
	case OP_NE: return x != m->num;
	default: return x == m->num;
	}
}

static int line_has(const pline *p, const char *needle)
{
	size_t n = strlen(needle);
	return !n || memmem(p->line, p->len, needle, n) != NULL;
}

static int line_re(pline *p, const regex_t *re)
{
	p->tmp.len = 0;
	if (cm_buf_append(&p->tmp, p->line, p->len) || cm_buf_append(&p->tmp, "", 1))
		return 0;
	return regexec(re, (const char *)p->tmp.data, 0, NULL, 0) == 0;
}

/* Runs the pipeline; 1 = keep (p->l, p->line hold the result), 0 = dropped. */
static int pipeline(const ls_query *q, pline *p)
{
	for (size_t i = 0; i < q->nst; i++) {
		const stage *s = &q->st[i];
		int keep = 1;
		switch (s->type) {
		case ST_HAS: keep = line_has(p, s->m.value); break;
		case ST_HASNT: keep = !line_has(p, s->m.value); break;
		case ST_RE: keep = line_re(p, &s->m.re); break;
		case ST_NRE: keep = !line_re(p, &s->m.re); break;
		case ST_JSON: stage_json(p); break;
		case ST_LOGFMT: stage_logfmt(p); break;
		case ST_LABEL: keep = str_match(&s->m, label_get(p->l, p->n, s->m.name)); break;
		case ST_NUM: keep = num_match(&s->m, label_get(p->l, p->n, s->m.name)); break;
		case ST_FORMAT: stage_format(p, s->m.value); break;
		}
		if (!keep)
			return 0;
	}
	return 1;
}

/* ---- evaluation ------------------------------------------------------------------------------------------- */

typedef struct item {
	int64_t ts;
	uint32_t group;
	uint32_t len;
	const char *line;  /* log queries only (arena copy) */
} item;

typedef struct group {
	char *key;
	cm_label *labels;
	size_t nlabels;
	uint32_t idx;  /* in exec.glist */
	struct group *next;
} group;

typedef struct exec {
	const ls_query *q;
	ls_qlimits lim;
	ls_qresult *r;
	pline *p;
	item *items;
	size_t nitems, capitems;
	group **gtab;      /* hash of groups by key */
	group **glist;
	size_t ngroups, capgroups;
	int rc;
	int64_t lo, hi;    /* entries kept for a log query */
} exec;

static int label_cmp(const void *a, const void *b)
{
	return strcmp(((const cm_label *)a)->name, ((const cm_label *)b)->name);
}

#define GTAB 4096

static uint64_t fnv(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
	return h;
}

/* The result group of a label set (sorted copy made on first sight). */
static int group_of(exec *x, cm_label *l, size_t n, uint32_t *out)
{
	qsort(l, n, sizeof(*l), label_cmp);
	cm_buf *k = &x->p->tmp;
	k->len = 0;
	for (size_t i = 0; i < n; i++)
		if (cm_buf_puts(k, l[i].name) || cm_buf_append(k, "\x01", 1) || cm_buf_puts(k, l[i].value) ||
		    cm_buf_append(k, "\x02", 1))
			return CM_ENOMEM;
	const char *key = k->data ? (const char *)k->data : "";
	uint64_t h = fnv(key, k->len) % GTAB;
	for (group *g = x->gtab[h]; g; g = g->next)
		if (strlen(g->key) == k->len && !memcmp(g->key, key, k->len)) {
			*out = g->idx;
			return 0;
		}
	if (x->ngroups >= x->lim.max_series)
		return CM_E2BIG;
	cm_arena *a = &x->r->arena;
	group *g = cm_arena_calloc(a, 1, sizeof(*g));
	if (!g || !(g->key = cm_arena_strndup(a, key, k->len)) || !(g->labels = cm_arena_calloc(a, n ? n : 1, sizeof(cm_label))))
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!(g->labels[i].name = cm_arena_strdup(a, l[i].name)) || !(g->labels[i].value = cm_arena_strdup(a, l[i].value)))
			return CM_ENOMEM;
	g->nlabels = n;
	if (x->ngroups == x->capgroups) {
		size_t nc = x->capgroups ? x->capgroups * 2 : 64;
		group **ng = realloc(x->glist, nc * sizeof(*ng));
		if (!ng)
			return CM_ENOMEM;
		x->glist = ng, x->capgroups = nc;
	}
	g->next = x->gtab[h], x->gtab[h] = g;
	*out = g->idx = (uint32_t)x->ngroups;
	x->glist[x->ngroups++] = g;
	return 0;
}

static int want_stream(void *arg, const ls_stream_info *st)
{
	exec *x = arg;
	return ls_logql_matches(x->q, st->labels, st->nlabels);
}

/* The labels an entry counts under: all of them, or the by labels of a sum. */
static size_t output_labels(exec *x, cm_label *out)
{
	const ls_query *q = x->q;
	if (!q->sum) {
		memcpy(out, x->p->l, x->p->n * sizeof(cm_label));
		return x->p->n;
	}
	size_t n = 0;
	for (size_t i = 0; i < q->nby; i++) {
		const char *v = label_get(x->p->l, x->p->n, q->by[i]);
		if (*v)
			out[n++] = (cm_label){q->by[i], v};
	}
	return n;
}

static int on_entry(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	exec *x = arg;
	pline *p = x->p;
	if (++x->r->scanned_entries > x->lim.max_scanned)
		return CM_E2BIG;
	x->r->scanned_bytes += len;
	size_t ns = st->nlabels < PL_MAX_LABELS ? st->nlabels : PL_MAX_LABELS;
	memcpy(p->l, st->labels, ns * sizeof(cm_label));
	p->n = p->nstream = ns, p->used = 0, p->line = line, p->len = len;
	if (!pipeline(x->q, p))
		return 0;
	cm_label out[PL_MAX_LABELS];
	uint32_t g;
	int rc = group_of(x, out, output_labels(x, out), &g);
	if (rc)
		return rc;
	if (x->nitems == x->capitems) {
		size_t nc = x->capitems ? x->capitems * 2 : 1024;
		item *ni = realloc(x->items, nc * sizeof(*ni));
		if (!ni)
			return CM_ENOMEM;
		x->items = ni, x->capitems = nc;
	}
	item *it = &x->items[x->nitems++];
	*it = (item){ts, g, (uint32_t)(p->len > UINT32_MAX ? UINT32_MAX : p->len), NULL};
	if (!ls_logql_is_metric(x->q) && !(it->line = cm_arena_strndup(&x->r->arena, p->line, it->len)))
		return CM_ENOMEM;
	return 0;
}

static int item_cmp_fwd(const void *a, const void *b)
{
	const item *x = a, *y = b;
	return x->ts < y->ts ? -1 : x->ts > y->ts ? 1 : 0;
}

static int item_cmp_bwd(const void *a, const void *b) { return item_cmp_fwd(b, a); }

static int group_then_time(const void *a, const void *b)
{
	const item *x = a, *y = b;
	return x->group != y->group ? (x->group < y->group ? -1 : 1) : item_cmp_fwd(a, b);
}

/* Log query: the limit newest (or oldest) entries, grouped into streams in that order. */
static int build_streams(exec *x)
{
	if (x->nitems)
		qsort(x->items, x->nitems, sizeof(item), x->lim.forward ? item_cmp_fwd : item_cmp_bwd);
	size_t n = x->nitems < x->lim.limit ? x->nitems : x->lim.limit;
	ls_qresult *r = x->r;
	size_t *count = calloc(x->ngroups ? x->ngroups : 1, sizeof(size_t));
	if (!count)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		count[x->items[i].group]++;
	r->streams = cm_arena_calloc(&r->arena, x->ngroups ? x->ngroups : 1, sizeof(ls_qstream));
	int rc = r->streams ? 0 : CM_ENOMEM;
	size_t *slot = calloc(x->ngroups ? x->ngroups : 1, sizeof(size_t));
	for (size_t g = 0; g < x->ngroups && !rc && slot; g++) {
		if (!count[g])
			continue;
		slot[g] = r->nstreams;
		ls_qstream *s = &r->streams[r->nstreams++];
		s->labels = x->glist[g]->labels, s->nlabels = x->glist[g]->nlabels;
		if (!(s->entries = cm_arena_calloc(&r->arena, count[g], sizeof(ls_qentry))))
			rc = CM_ENOMEM;
	}
	for (size_t i = 0; i < n && !rc && slot; i++) {
		ls_qstream *s = &r->streams[slot[x->items[i].group]];
		s->entries[s->nentries++] = (ls_qentry){x->items[i].ts, x->items[i].line, x->items[i].len};
	}
	if (!slot)
		rc = CM_ENOMEM;
	free(slot);
	free(count);
	return rc;
}

/* Metric query: per group, the windowed count or bytes at each step. */
static int build_series(exec *x, int64_t start, int64_t end, int64_t step)
{
	const ls_query *q = x->q;
	ls_qresult *r = x->r;
	if (x->nitems)
		qsort(x->items, x->nitems, sizeof(item), group_then_time);
	size_t nsteps = step ? (size_t)((end - start) / step) + 1 : 1;
	r->series = cm_arena_calloc(&r->arena, x->ngroups ? x->ngroups : 1, sizeof(ls_qseries));
	if (!r->series)
		return CM_ENOMEM;
	double secs = (double)q->range_ns / 1e9;
	for (size_t i = 0; i < x->nitems;) {
		size_t j = i;
		while (j < x->nitems && x->items[j].group == x->items[i].group)
			j++;
		ls_qseries *s = &r->series[r->nseries++];
		group *g = x->glist[x->items[i].group];
		s->labels = g->labels, s->nlabels = g->nlabels;
		if (!(s->points = cm_arena_calloc(&r->arena, nsteps, sizeof(ls_qpoint))))
			return CM_ENOMEM;
		size_t lo = i, hi = i;
		double bytes = 0;
		for (size_t k = 0; k < nsteps; k++) {
			int64_t t = step ? start + (int64_t)k * step : end;
			while (hi < j && x->items[hi].ts <= t)
				bytes += x->items[hi++].len;
			while (lo < hi && x->items[lo].ts <= t - q->range_ns)
				bytes -= x->items[lo++].len;
			if (hi == lo)
				continue;
			double v = q->fn == FN_COUNT ? (double)(hi - lo) : q->fn == FN_RATE ? (double)(hi - lo) / secs
				 : q->fn == FN_BYTES ? bytes : bytes / secs;
			s->points[s->npoints++] = (ls_qpoint){t, v};
		}
		if (!s->npoints)
			r->nseries--;
		i = j;
	}
	return 0;
}

static int exec_check(const ls_query *q, int64_t start, int64_t end, int64_t step, ls_qlimits *lim, cm_err *err)
{
	if (!lim->limit)
		lim->limit = 100;
	if (!lim->max_scanned)
		lim->max_scanned = 5000000;
	if (!lim->max_series)
		lim->max_series = 10000;
	if (!lim->max_points)
		lim->max_points = 11000;
	if (end < start || step < 0)
		return cm_errf(err, CM_EINVAL, "end before start, or a negative step");
	if (q->fn && step && (uint64_t)(end - start) / (uint64_t)step + 1 > lim->max_points)
		return cm_errf(err, CM_E2BIG, "more than %zu steps: use a larger step", lim->max_points);
	return 0;
}

int ls_logql_exec(ls_store *s, const ls_query *q, int64_t start_ns, int64_t end_ns, int64_t step_ns,
		  const ls_qlimits *lim, ls_qresult *out, cm_err *err)
{
	exec x = {.q = q, .lim = lim ? *lim : (ls_qlimits){0}, .r = out};
	int rc = exec_check(q, start_ns, end_ns, step_ns, &x.lim, err);
	if (rc)
		return rc;
	memset(out, 0, sizeof(*out));
	cm_arena_init(&out->arena, 0);
	out->metric = ls_logql_is_metric(q);
	x.p = calloc(1, sizeof(*x.p));
	x.gtab = calloc(GTAB, sizeof(*x.gtab));
	if (!x.p || !x.gtab) {
		rc = CM_ENOMEM;
		goto fail;
	}
	cm_buf_init(&x.p->fmt);
	cm_buf_init(&x.p->tmp);
	int64_t from = out->metric ? (step_ns ? start_ns : end_ns) - q->range_ns + 1 : start_ns;
	rc = ls_store_select(s, from, end_ns, want_stream, &x, on_entry, &x);
	if (!rc)
		rc = out->metric ? build_series(&x, start_ns, end_ns, step_ns) : build_streams(&x);
fail:
	if (x.p) {
		cm_buf_close(&x.p->fmt);
		cm_buf_close(&x.p->tmp);
	}
	free(x.p);
	free(x.gtab);
	free(x.glist);
	free(x.items);
	if (rc) {
		cm_arena_close(&out->arena);
		memset(out, 0, sizeof(*out));
		return rc == CM_E2BIG ? cm_errf(err, rc, "the query reads more than %zu entries or makes more than %zu series",
						x.lim.max_scanned, x.lim.max_series)
				      : cm_errf(err, rc, "query failed: %s", cm_strerror(rc));
	}
	return 0;
}

void ls_qresult_close(ls_qresult *r)
{
	cm_arena_close(&r->arena);
	memset(r, 0, sizeof(*r));
}
