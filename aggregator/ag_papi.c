/* ag_papi.c -- the Prometheus HTTP API around the query engine: labels, label values, series, metadata,
 * status, exemplars, and /federate.
 *
 * ag_http.c routes these paths here (ag__papi_handle); the query and query_range handlers live in
 * ag_api.c. Every answer is Prometheus 2.42's: the JSON envelope {"status":"success","data":...} with
 * "warnings" when a limit cut the answer, 400 bad_data with Prometheus' wording for bad parameters, and
 * GET or POST with a form body alike (ag_http.c parses the form into the request's parameters).
 * Sets of names, values and series are collected in the request's arena (deduplicated by a hash set),
 * sorted, cut to the limit and written once. Runs on the HTTP worker threads; reads the tsdb under its
 * read lock through ts_select/ts_select_series and never writes.
 *
 * /federate writes the Prometheus text exposition format 0.0.4 the way Prometheus' own federation
 * handler does: for every series a match[] selects, its newest sample within the lookback (5 m) before
 * now, unless that is a stale marker; series sorted by metric name, then labels; one "# TYPE <name>
 * untyped" line before each name's first series; each line `name{l="v",...} value timestamp_ms` with
 * values in Go's strconv 'g' shortest form ("1e+06", "NaN", "+Inf") and label values escaped (\\, \",
 * \n). docs/prometheus-api.md lists the endpoints, parameters and departures.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ag_int.h"

#define STALE_NAN_BITS 0x7ff0000000000002ULL
#define API_VERSION "2.42.0" /* the Prometheus API level answered (buildinfo's version) */

/* ---- a set of strings in the request's arena ---------------------------------------------------------- */

typedef struct strset {
	const char **slot;
	size_t cap, n;
	cm_arena *a;
} strset;

static uint64_t hash_str(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 1099511628211ULL;
	return h;
}

static int strset_grow(strset *s)
{
	size_t cap = s->cap ? s->cap * 2 : 256;
	const char **slot = cm_arena_calloc(s->a, cap, sizeof(*slot));
	if (!slot)
		return CM_ENOMEM;
	for (size_t i = 0; i < s->cap; i++) {
		if (!s->slot[i])
			continue;
		size_t k = hash_str(s->slot[i], strlen(s->slot[i])) & (cap - 1);
		while (slot[k])
			k = (k + 1) & (cap - 1);
		slot[k] = s->slot[i];
	}
	s->slot = slot, s->cap = cap;
	return CM_OK;
}

/* Adds p[0..n) (copied) unless present. */
static int strset_add(strset *s, const char *p, size_t n)
{
	if ((s->n + 1) * 2 > s->cap && strset_grow(s))
		return CM_ENOMEM;
	size_t k = hash_str(p, n) & (s->cap - 1);
	for (; s->slot[k]; k = (k + 1) & (s->cap - 1))
		if (!strncmp(s->slot[k], p, n) && !s->slot[k][n])
			return CM_OK;
	if (!(s->slot[k] = cm_arena_strndup(s->a, p, n)))
		return CM_ENOMEM;
	s->n++;
	return CM_OK;
}

static int strset_has(const strset *s, const char *p)
{
	if (!s->cap)
		return 0;
	for (size_t k = hash_str(p, strlen(p)) & (s->cap - 1); s->slot[k]; k = (k + 1) & (s->cap - 1))
		if (!strcmp(s->slot[k], p))
			return 1;
	return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The members, sorted by cmp (strcmp when NULL), in an arena array; NULL when out of memory. */
static const char **strset_sorted(const strset *s, int (*cmp)(const void *, const void *))
{
	const char **v = cm_arena_alloc(s->a, (s->n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < s->cap; i++)
		if (s->slot[i])
			v[o++] = s->slot[i];
	qsort(v, o, sizeof(*v), cmp ? cmp : cmp_str);
	return v;
}

/* ---- parameters ------------------------------------------------------------------------------------ */

static int bad_data(ag__resp *resp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_data(ag__resp *resp, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ag__resp_error(resp, 400, "bad_data", msg);
	return CM_EINVAL;
}

static int time_param(const ag__req *req, ag__resp *resp, const char *key, int64_t def, int64_t *out)
{
	const char *v = ag__param_get(req, key);
	if (!v || !*v)
		return *out = def, CM_OK;
	if (cm_parse_time_ms(v, out) == CM_OK)
		return CM_OK;
	return bad_data(resp, "invalid parameter \"%s\": cannot parse \"%.80s\" to a valid timestamp", key, v);
}

int ag__papi_limit(const char *s, size_t *out)
{
	size_t v = 0;
	if (!s || !*s)
		return *out = 0, CM_OK;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (SIZE_MAX - 9) / 10)
			return CM_EINVAL;
		v = v * 10 + (size_t)(*p - '0');
	}
	*out = v;
	return CM_OK;
}

static int limit_param(const ag__req *req, ag__resp *resp, const char *key, size_t *out)
{
	const char *v = ag__param_get(req, key);
	if (ag__papi_limit(v, out))
		return bad_data(resp, "invalid parameter \"%s\": cannot parse \"%.80s\" to a non-negative integer", key,
				v);
	return CM_OK;
}

/* Calls fn for every series that overlaps [start, end] and one of the match[] selectors selects (every
 * series when there is no match[] and all is set); 0, or CM_EINVAL after answering 400. */
static int for_matched(const ag__papi *p, const ag__req *req, ag__resp *resp, int64_t start, int64_t end, int all,
		       ts_series_fn fn, void *ctx)
{
	int any = 0, rc = CM_OK;
	for (size_t i = 0; i < req->nparams && !rc; i++) {
		if (strcmp(req->params[i].key, "match[]"))
			continue;
		ag__selector sel;
		cm_err err = {{0}};
		any = 1;
		if (ag__selector_parse(req->params[i].value, req->arena, &sel, &err))
			return bad_data(resp, "invalid parameter \"match[]\": %s", err.msg);
		rc = ts_select_series(p->db, sel.matchers, sel.nmatchers, start, end, fn, ctx);
		ag__selector_close(&sel);
	}
	if (!any && all)
		rc = ts_select_series(p->db, NULL, 0, start, end, fn, ctx);
	if (!any && !all)
		return bad_data(resp, "no match[] parameter provided");
	if (rc) {
		ag__resp_error(resp, 500, "internal", cm_strerror(rc));
		return rc;
	}
	return CM_OK;
}

/* ---- answers --------------------------------------------------------------------------------------- */

static void begin_success(ag__resp *resp)
{
	resp->status = 200;
	resp->content_type = "application/json";
	resp->body.len = 0;
	cm_buf_puts(&resp->body, "{\"status\":\"success\",\"data\":");
}

/* Closes the envelope, with the truncation warning when a limit cut the answer. */
static void end_success(ag__resp *resp, int truncated, int rc)
{
	if (!rc && truncated)
		rc = cm_buf_puts(&resp->body, ",\"warnings\":[\"results truncated due to limit\"]");
	if (!rc)
		rc = cm_buf_puts(&resp->body, "}\n");
	if (rc)
		ag__resp_error(resp, 500, "internal", "out of memory writing the answer");
}

/* A JSON array of the set's strings (raw: already JSON when json is set), at most limit (0: all). */
static void answer_list(ag__resp *resp, const strset *s, size_t limit, int json,
			int (*cmp)(const void *, const void *))
{
	const char **v = strset_sorted(s, cmp);
	if (!v) {
		ag__resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	size_t n = limit && limit < s->n ? limit : s->n;
	begin_success(resp);
	int rc = cm_buf_puts(&resp->body, "[");
	for (size_t i = 0; i < n && !rc; i++) {
		rc = cm_buf_puts(&resp->body, i ? "," : "");
		rc = rc ? rc : json ? cm_buf_puts(&resp->body, v[i]) : cm_buf_put_json_str(&resp->body, v[i]);
	}
	rc = rc ? rc : cm_buf_puts(&resp->body, "]");
	end_success(resp, n < s->n, rc);
}

/* ---- labels and label values -------------------------------------------------------------------------- */

typedef struct collect_ctx {
	strset set;
	const char *name; /* label values: of this label; labels: NULL */
} collect_ctx;

static int collect_names(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	(void)s, (void)n;
	collect_ctx *c = ctx;
	for (size_t i = 0; i < nl; i++)
		if (l[i].value[0] && strset_add(&c->set, l[i].name, strlen(l[i].name)))
			return CM_ENOMEM;
	return CM_OK;
}

static int collect_values(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	(void)s, (void)n;
	collect_ctx *c = ctx;
	for (size_t i = 0; i < nl; i++)
		if (!strcmp(l[i].name, c->name) && l[i].value[0])
			return strset_add(&c->set, l[i].value, strlen(l[i].value));
	return CM_OK;
}

static int add_value(void *ctx, const char *v)
{
	collect_ctx *c = ctx;
	return v[0] ? strset_add(&c->set, v, strlen(v)) : CM_OK;
}

static int has_match(const ag__req *req)
{
	for (size_t i = 0; i < req->nparams; i++)
		if (!strcmp(req->params[i].key, "match[]"))
			return 1;
	return 0;
}

static void labels_or_values(const ag__papi *p, const ag__req *req, ag__resp *resp, const char *name)
{
	int64_t start, end;
	size_t limit;
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MAX, &end) ||
	    limit_param(req, resp, "limit", &limit))
		return;
	collect_ctx c = {.set = {.a = req->arena}, .name = name};
	if (name && !has_match(req)) { /* every series: the tsdb answers from its postings */
		int rc = ts_label_values(p->db, name, start, end, add_value, &c);
		if (rc) {
			ag__resp_error(resp, 500, "internal", cm_strerror(rc));
			return;
		}
	} else if (for_matched(p, req, resp, start, end, 1, name ? collect_values : collect_names, &c)) {
		return;
	}
	atomic_fetch_add(&p->metrics->queries, 1);
	answer_list(resp, &c.set, limit, 0, NULL);
}

/* The <name> of /api/v1/label/<name>/values, copied into the arena; NULL when the path is not that. */
const char *ag__papi_label_from_path(const char *url, cm_arena *a)
{
	static const char pre[] = "/api/v1/label/", post[] = "/values";
	size_t n = strlen(url), lp = sizeof(pre) - 1, ls = sizeof(post) - 1;
	if (n <= lp + ls || strncmp(url, pre, lp) || strcmp(url + n - ls, post))
		return NULL;
	const char *name = url + lp;
	size_t len = n - lp - ls;
	if (memchr(name, '/', len))
		return NULL;
	return cm_arena_strndup(a, name, len);
}

static void label_values(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	const char *name = ag__papi_label_from_path(req->url, req->arena);
	if (!name) {
		ag__resp_error(resp, 404, "not_found", "no such endpoint");
		return;
	}
	if (!cm_label_name_valid(name)) {
		bad_data(resp, "invalid label name: \"%.200s\"", name);
		return;
	}
	labels_or_values(p, req, resp, name);
}

/* ---- series ------------------------------------------------------------------------------------------ */

static int put_labels(cm_buf *b, const cm_label *l, size_t n)
{
	int rc = cm_buf_puts(b, "{");
	for (size_t i = 0; i < n && !rc; i++) {
		rc = cm_buf_puts(b, i ? "," : "");
		rc = rc ? rc : cm_buf_put_json_str(b, l[i].name);
		rc = rc ? rc : cm_buf_puts(b, ":");
		rc = rc ? rc : cm_buf_put_json_str(b, l[i].value);
	}
	return rc ? rc : cm_buf_puts(b, "}");
}

typedef struct series_ctx {
	strset set;
	cm_buf tmp;
} series_ctx;

static int collect_series(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	(void)s, (void)n;
	series_ctx *c = ctx;
	c->tmp.len = 0;
	if (put_labels(&c->tmp, l, nl))
		return CM_ENOMEM;
	return strset_add(&c->set, (const char *)c->tmp.data, c->tmp.len);
}

static void series(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	int64_t start, end;
	size_t limit;
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MAX, &end) ||
	    limit_param(req, resp, "limit", &limit))
		return;
	series_ctx c = {.set = {.a = req->arena}};
	cm_buf_init(&c.tmp);
	if (!for_matched(p, req, resp, start, end, 0, collect_series, &c)) {
		atomic_fetch_add(&p->metrics->queries, 1);
		answer_list(resp, &c.set, limit, 1, NULL);
	}
	cm_buf_close(&c.tmp);
}

/* ---- metadata (derived from names: see the top of docs/prometheus-api.md) ------------------------------ */

typedef struct meta_ctx {
	strset names, hist, summ; /* every metric name; bases of _bucket series with le; bases with quantile */
} meta_ctx;

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n > k && !strcmp(s + n - k, suffix);
}

static int collect_meta(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	(void)s, (void)n;
	meta_ctx *c = ctx;
	const char *name = NULL;
	int le = 0, quantile = 0;
	for (size_t i = 0; i < nl; i++) {
		name = strcmp(l[i].name, "__name__") ? name : l[i].value;
		le |= !strcmp(l[i].name, "le");
		quantile |= !strcmp(l[i].name, "quantile");
	}
	if (!name)
		return CM_OK;
	if (le && ends_with(name, "_bucket") && strset_add(&c->hist, name, strlen(name) - 7))
		return CM_ENOMEM;
	if (quantile && strset_add(&c->summ, name, strlen(name)))
		return CM_ENOMEM;
	return strset_add(&c->names, name, strlen(name));
}

/* The family a series name belongs to and its type; NULL when it is part of another family. */
static const char *meta_type(const meta_ctx *c, const char *name, char *base, size_t cap)
{
	static const char *parts[] = {"_bucket", "_sum", "_count"};
	for (size_t i = 0; i < CM_ARRAY_LEN(parts); i++) {
		if (!ends_with(name, parts[i]))
			continue;
		snprintf(base, cap, "%.*s", (int)(strlen(name) - strlen(parts[i])), name);
		if (strset_has(&c->hist, base))
			return i ? NULL : "histogram"; /* the family is named once, for its _bucket series */
		if (i && strset_has(&c->summ, base))
			return NULL;
	}
	snprintf(base, cap, "%s", name);
	if (strset_has(&c->hist, name))
		return "histogram";
	if (strset_has(&c->summ, name))
		return "summary";
	return ends_with(name, "_total") ? "counter" : "unknown";
}

static int put_meta(cm_buf *b, int first, const char *name, const char *type)
{
	int rc = cm_buf_puts(b, first ? "" : ",");
	rc = rc ? rc : cm_buf_put_json_str(b, name);
	return rc ? rc : cm_buf_printf(b, ":[{\"type\":\"%s\",\"help\":\"\",\"unit\":\"\"}]", type);
}

static void metadata(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	size_t limit, per_metric;
	if (limit_param(req, resp, "limit", &limit) || limit_param(req, resp, "limit_per_metric", &per_metric))
		return;
	const char *only = ag__param_get(req, "metric");
	meta_ctx c = {.names = {.a = req->arena}, .hist = {.a = req->arena}, .summ = {.a = req->arena}};
	int rc = ts_select_series(p->db, NULL, 0, INT64_MIN, INT64_MAX, collect_meta, &c);
	const char **v = rc ? NULL : strset_sorted(&c.names, NULL);
	if (!v) {
		ag__resp_error(resp, 500, "internal", cm_strerror(rc ? rc : CM_ENOMEM));
		return;
	}
	atomic_fetch_add(&p->metrics->queries, 1);
	begin_success(resp);
	rc = cm_buf_puts(&resp->body, "{");
	size_t written = 0;
	for (size_t i = 0; i < c.names.n && !rc && (!limit || written < limit); i++) {
		char base[1024];
		const char *type = meta_type(&c, v[i], base, sizeof(base));
		if (type && (!only || !strcmp(only, base)))
			rc = put_meta(&resp->body, !written++, base, type);
	}
	rc = rc ? rc : cm_buf_puts(&resp->body, "}");
	end_success(resp, 0, rc);
}

/* ---- status ------------------------------------------------------------------------------------------ */

static void buildinfo(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	(void)p, (void)req;
	begin_success(resp);
	int rc = cm_buf_puts(&resp->body, "{\"version\":\"" API_VERSION "\",\"revision\":\"\",\"branch\":\"\","
					  "\"buildUser\":\"\",\"buildDate\":\"\",\"goVersion\":\"\","
					  "\"application\":\"corral\",\"corralVersion\":\"" CM_VERSION "\"}");
	end_success(resp, 0, rc);
}

static int put_rfc3339(cm_buf *b, int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[40];
	gmtime_r(&t, &tm);
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	return cm_buf_printf(b, "\"%s.%03dZ\"", s, (int)(ms % 1000));
}

static void runtimeinfo(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	(void)req;
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "?");
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	begin_success(resp);
	cm_buf *b = &resp->body;
	int rc = cm_buf_puts(b, "{\"startTime\":");
	rc = rc ? rc : put_rfc3339(b, p->metrics->start_ms);
	rc = rc ? rc : cm_buf_puts(b, ",\"CWD\":");
	rc = rc ? rc : cm_buf_put_json_str(b, cwd);
	rc = rc ? rc : cm_buf_puts(b, ",\"reloadConfigSuccess\":true,\"lastConfigTime\":");
	rc = rc ? rc : put_rfc3339(b, p->metrics->start_ms);
	rc = rc ? rc : cm_buf_printf(b, ",\"corruptionCount\":0,\"goroutineCount\":%ld,\"GOMAXPROCS\":%ld,"
				       "\"GOGC\":\"\",\"GODEBUG\":\"\",\"storageRetention\":\"unlimited\"}",
				       p->cfg ? p->cfg->threads : 0, cpus > 0 ? cpus : 1);
	end_success(resp, 0, rc);
}

/* One flag's value as text (what Prometheus' flags endpoint shows: a string for every flag). */
static void flag_value(const cm_opt *o, const void *cfg, char *out, size_t cap)
{
	const char *f = (const char *)cfg + o->offset;
	const char *s;
#ifdef CM_STRLIST_MAX
	const cm_strlist *l;
#endif
	switch (o->type) {
	case CM_OPT_STR:
		memcpy(&s, f, sizeof(s));
		snprintf(out, cap, "%s", s ? s : "");
		break;
	case CM_OPT_INT:
		snprintf(out, cap, "%ld", *(const long *)(const void *)f);
		break;
	case CM_OPT_DURATION:
		snprintf(out, cap, "%lldms", (long long)*(const int64_t *)(const void *)f);
		break;
	case CM_OPT_SIZE:
		snprintf(out, cap, "%llu", (unsigned long long)*(const uint64_t *)(const void *)f);
		break;
	case CM_OPT_BOOL:
		snprintf(out, cap, "%s", *(const int *)(const void *)f ? "true" : "false");
		break;
	case CM_OPT_LOGLEVEL:
		snprintf(out, cap, "%d", *(const int *)(const void *)f);
		break;
#ifdef CM_STRLIST_MAX
	case CM_OPT_STRLIST:
		l = (const cm_strlist *)(const void *)f;
		out[0] = 0;
		for (size_t i = 0, o2 = 0; i < l->n && o2 < cap; i++)
			o2 += (size_t)snprintf(out + o2, cap - o2, "%s%s", i ? "," : "", l->v[i]);
		break;
#endif
	default:
		out[0] = 0;
		break;
	}
}

static void flags(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	(void)req;
	begin_success(resp);
	int rc = cm_buf_puts(&resp->body, "{");
	for (size_t i = 0; p->cfg && i < p->cfg->nopts && !rc; i++) {
		char v[4096];
		flag_value(&p->cfg->opts[i], p->cfg, v, sizeof(v));
		rc = cm_buf_puts(&resp->body, i ? "," : "");
		rc = rc ? rc : cm_buf_put_json_str(&resp->body, p->cfg->opts[i].name);
		rc = rc ? rc : cm_buf_puts(&resp->body, ":");
		rc = rc ? rc : cm_buf_put_json_str(&resp->body, v);
	}
	rc = rc ? rc : cm_buf_puts(&resp->body, "}");
	end_success(resp, 0, rc);
}

/* corral keeps no exemplars: a valid request gets an empty list. */
static void exemplars(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	(void)p;
	int64_t start, end;
	const char *q = ag__param_get(req, "query");
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MAX, &end))
		return;
	if (!q || !*q) {
		bad_data(resp, "invalid parameter \"query\": empty query");
		return;
	}
	if (end < start) {
		bad_data(resp, "end timestamp must not be before start time");
		return;
	}
	begin_success(resp);
	end_success(resp, 0, cm_buf_puts(&resp->body, "[]"));
}

/* ---- /federate --------------------------------------------------------------------------------------- */

/* Go's strconv.FormatFloat(v, 'g', -1, 64), as Prometheus' text exposition writes sample values. */
size_t ag__fmt_go_g(char *out, size_t cap, double v)
{
	if (isnan(v))
		return (size_t)snprintf(out, cap, "NaN");
	if (isinf(v))
		return (size_t)snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
	if (v == 0)
		return (size_t)snprintf(out, cap, "%s", signbit(v) ? "-0" : "0");
	char e[40];
	int prec = 1;
	for (; prec < 17; prec++) { /* the fewest digits that read back as v */
		snprintf(e, sizeof(e), "%.*e", prec - 1, v);
		if (strtod(e, NULL) == v)
			break;
	}
	snprintf(e, sizeof(e), "%.*e", prec - 1, v);
	int exp = atoi(strchr(e, 'e') + 1);
	if (exp < -4 || exp >= 6) /* Go decides by precision 6 for the shortest form */
		return (size_t)snprintf(out, cap, "%s", e);
	return (size_t)snprintf(out, cap, "%.*f", prec - 1 - exp > 0 ? prec - 1 - exp : 0, v);
}

typedef struct fed_ctx {
	strset lines;
	cm_buf tmp;
} fed_ctx;

static int put_escaped(cm_buf *b, const char *s)
{
	int rc = CM_OK;
	for (; *s && !rc; s++)
		rc = *s == '\\' ? cm_buf_puts(b, "\\\\") : *s == '"' ? cm_buf_puts(b, "\\\"") :
		     *s == '\n' ? cm_buf_puts(b, "\\n") : cm_buf_append(b, s, 1);
	return rc;
}

/* `name{l="v",...} value ts` into tmp. */
static int fed_line(cm_buf *b, const cm_label *l, size_t nl, const cm_sample *x)
{
	const char *name = "";
	for (size_t i = 0; i < nl; i++)
		name = strcmp(l[i].name, "__name__") ? name : l[i].value;
	int rc = cm_buf_puts(b, name), nout = 0;
	for (size_t i = 0; i < nl && !rc; i++) {
		if (!strcmp(l[i].name, "__name__"))
			continue;
		rc = cm_buf_printf(b, "%s%s=\"", nout++ ? "," : "{", l[i].name);
		rc = rc ? rc : put_escaped(b, l[i].value);
		rc = rc ? rc : cm_buf_puts(b, "\"");
	}
	char v[64];
	ag__fmt_go_g(v, sizeof(v), x->v == 0 ? 0.0 : x->v); /* expfmt writes -0 as 0 */
	rc = rc ? rc : cm_buf_puts(b, nout ? "}" : "");
	return rc ? rc : cm_buf_printf(b, " %s %lld", v, (long long)x->t_ms);
}

static int collect_fed(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	fed_ctx *c = ctx;
	uint64_t bits;
	if (!n)
		return CM_OK;
	memcpy(&bits, &s[n - 1].v, 8);
	if (bits == STALE_NAN_BITS)
		return CM_OK;
	c->tmp.len = 0;
	if (fed_line(&c->tmp, l, nl, &s[n - 1]))
		return CM_ENOMEM;
	return strset_add(&c->lines, (const char *)c->tmp.data, c->tmp.len);
}

static size_t name_len(const char *line) { return strcspn(line, "{ "); }

/* Metric name first (a name is a prefix of longer names), then the rest of the line. */
static int cmp_fed(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t nx = name_len(x), ny = name_len(y);
	int c = memcmp(x, y, nx < ny ? nx : ny);
	if (c || nx != ny)
		return c ? c : nx < ny ? -1 : 1;
	return strcmp(x + nx, y + ny);
}

static void federate(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	int64_t now = cm_now_ms();
	fed_ctx c = {.lines = {.a = req->arena}};
	cm_buf_init(&c.tmp);
	int rc = CM_OK;
	for (size_t i = 0; i < req->nparams && !rc; i++) {
		if (strcmp(req->params[i].key, "match[]"))
			continue;
		ag__selector sel;
		cm_err err = {{0}};
		if (ag__selector_parse(req->params[i].value, req->arena, &sel, &err)) {
			ag__resp_error(resp, 400, "bad_data", err.msg);
			resp->content_type = "text/plain; charset=utf-8";
			goto out;
		}
		rc = ts_select(p->db, sel.matchers, sel.nmatchers, now - p->lookback_ms, now, collect_fed, &c);
		ag__selector_close(&sel);
	}
	const char **v = rc ? NULL : strset_sorted(&c.lines, cmp_fed);
	if (!v) {
		ag__resp_error(resp, 500, "internal", cm_strerror(rc ? rc : CM_ENOMEM));
		goto out;
	}
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	for (size_t i = 0; i < c.lines.n && !rc; i++) {
		size_t n = name_len(v[i]);
		if (!i || name_len(v[i - 1]) != n || strncmp(v[i - 1], v[i], n))
			rc = cm_buf_printf(&resp->body, "# TYPE %.*s untyped\n", (int)n, v[i]);
		rc = rc ? rc : cm_buf_printf(&resp->body, "%s\n", v[i]);
	}
	if (rc)
		ag__resp_error(resp, 500, "internal", "out of memory writing the answer");
out:
	cm_buf_close(&c.tmp);
}

/* ---- routing ----------------------------------------------------------------------------------------- */

typedef void (*papi_fn)(const ag__papi *p, const ag__req *req, ag__resp *resp);

static const struct {
	const char *path;
	papi_fn fn;
} papi_routes[] = {
	{"/api/v1/labels", NULL},
	{"/api/v1/series", series},
	{"/api/v1/metadata", metadata},
	{"/api/v1/status/buildinfo", buildinfo},
	{"/api/v1/status/runtimeinfo", runtimeinfo},
	{"/api/v1/status/flags", flags},
	{"/api/v1/query_exemplars", exemplars},
	{"/federate", federate},
};

void ag__papi_handle(const ag__papi *p, const ag__req *req, ag__resp *resp)
{
	if (!strcmp(req->url, "/api/v1/labels")) {
		labels_or_values(p, req, resp, NULL);
		return;
	}
	for (size_t i = 1; i < CM_ARRAY_LEN(papi_routes); i++)
		if (!strcmp(req->url, papi_routes[i].path)) {
			papi_routes[i].fn(p, req, resp);
			return;
		}
	label_values(p, req, resp); /* /api/v1/label/<name>/values, or 404 */
}
