/* ag_api.c -- the Prometheus HTTP API over the tsdb: query, query_range and series for selectors.
 *
 * Answers use Prometheus' JSON envelope ({"status":"success","data":...}), sample values as strings in
 * Prometheus' float text and timestamps as seconds. A selector is evaluated the way Prometheus 2.x
 * evaluates one: at each step t the value is the newest sample in [t - lookback, t] (lookback 5 m),
 * stale markers end a series. Bad parameters answer 400 with errorType bad_data and Prometheus'
 * wording. The JSON is written straight into the response buffer while the tsdb read lock is held,
 * so nothing is copied per sample.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define MAX_POINTS 11000
#define STALE_NAN_BITS 0x7ff0000000000002ULL

static int is_stale(double v)
{
	uint64_t u;
	memcpy(&u, &v, 8);
	return u == STALE_NAN_BITS;
}

int ag__put_json_time(cm_buf *b, int64_t t_ms)
{
	uint64_t abs_ms = t_ms < 0 ? -(uint64_t)t_ms : (uint64_t)t_ms;
	const char *sign = t_ms < 0 ? "-" : "";
	if (abs_ms % 1000 == 0)
		return cm_buf_printf(b, "%s%llu", sign, (unsigned long long)(abs_ms / 1000));
	char frac[4];
	snprintf(frac, sizeof(frac), "%03u", (unsigned)(abs_ms % 1000));
	for (int i = 2; i > 0 && frac[i] == '0'; i--)
		frac[i] = 0;
	return cm_buf_printf(b, "%s%llu.%s", sign, (unsigned long long)(abs_ms / 1000), frac);
}

static int put_value(cm_buf *b, double v)
{
	char tmp[CM_FMT_DOUBLE_MAX];
	cm_fmt_double(tmp, sizeof(tmp), v);
	return cm_buf_put_json_str(b, tmp);
}

static int put_point(cm_buf *b, int64_t t, double v)
{
	int rc = cm_buf_puts(b, "[");
	rc = rc ? rc : ag__put_json_time(b, t);
	rc = rc ? rc : cm_buf_puts(b, ",");
	rc = rc ? rc : put_value(b, v);
	return rc ? rc : cm_buf_puts(b, "]");
}

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

/* ---- parameters ------------------------------------------------------------------------------------ */

static int time_param(const ag__req *req, ag__resp *resp, const char *key, int64_t def, int64_t *out)
{
	const char *v = ag__param_get(req, key);
	if (!v || !*v) {
		*out = def;
		return CM_OK;
	}
	if (cm_parse_time_ms(v, out) == CM_OK)
		return CM_OK;
	char msg[160];
	snprintf(msg, sizeof(msg), "invalid parameter \"%s\": cannot parse \"%.80s\" to a valid timestamp", key, v);
	ag__resp_error(resp, 400, "bad_data", msg);
	return CM_EINVAL;
}

static int parse_query(const ag__req *req, ag__resp *resp, const char *key, ag__selector *sel)
{
	const char *q = ag__param_get(req, key);
	cm_err err = {{0}};
	if (!q || !*q) {
		char msg[64];
		snprintf(msg, sizeof(msg), "invalid parameter \"%s\": empty query", key);
		ag__resp_error(resp, 400, "bad_data", msg);
		return CM_EINVAL;
	}
	if (ag__selector_parse(q, req->arena, sel, &err)) {
		char msg[320];
		snprintf(msg, sizeof(msg), "invalid parameter \"%s\": %s", key, err.msg);
		ag__resp_error(resp, 400, "bad_data", msg);
		return CM_EINVAL;
	}
	return CM_OK;
}

static void begin_success(ag__resp *resp, const char *result_type)
{
	resp->status = 200;
	resp->content_type = "application/json";
	cm_buf_puts(&resp->body, "{\"status\":\"success\",\"data\":");
	if (result_type)
		cm_buf_printf(&resp->body, "{\"resultType\":\"%s\",\"result\":[", result_type);
	else
		cm_buf_puts(&resp->body, "[");
}

static void end_success(ag__api *api, ag__resp *resp, int in_object, int rc)
{
	if (!rc)
		rc = cm_buf_puts(&resp->body, in_object ? "]}}\n" : "]}\n");
	if (rc) {
		atomic_fetch_add(&api->metrics->query_errors, 1);
		ag__resp_error(resp, 500, "internal", "out of memory writing the answer");
	}
}

/* ---- range and instant evaluation ------------------------------------------------------------------ */

typedef struct eval_ctx {
	cm_buf *out;
	int64_t start, end, step, lookback;
	int instant;
	size_t nseries;
	int rc;
} eval_ctx;

/* Index of the newest sample at or before t within the lookback, or -1; *i only moves forward. */
static long sample_at(const cm_sample *s, size_t n, size_t *i, int64_t t, int64_t lookback)
{
	while (*i < n && s[*i].t_ms <= t)
		(*i)++;
	if (*i == 0 || s[*i - 1].t_ms < t - lookback || is_stale(s[*i - 1].v))
		return -1;
	return (long)*i - 1;
}

static int eval_series(void *ctx, const cm_label *labels, size_t nlabels, const cm_sample *s, size_t n)
{
	eval_ctx *e = ctx;
	size_t mark = e->out->len, i = 0;
	int points = 0, rc = cm_buf_puts(e->out, e->nseries ? ",{\"metric\":" : "{\"metric\":");
	rc = rc ? rc : put_labels(e->out, labels, nlabels);
	rc = rc ? rc : cm_buf_puts(e->out, e->instant ? ",\"value\":" : ",\"values\":[");
	for (int64_t t = e->start; t <= e->end && !rc; t += e->step) {
		long k = sample_at(s, n, &i, t, e->lookback);
		if (k < 0)
			continue;
		rc = cm_buf_puts(e->out, points++ ? "," : "");
		rc = rc ? rc : put_point(e->out, t, s[k].v);
	}
	rc = rc ? rc : cm_buf_puts(e->out, e->instant ? "}" : "]}");
	if (!points && !rc) {
		e->out->len = mark; /* a series with no point in range is not part of the answer */
		e->out->data[mark] = 0;
	} else if (!rc) {
		e->nseries++;
	}
	e->rc = rc;
	return rc;
}

static void eval(ag__api *api, ag__resp *resp, const ag__selector *sel, eval_ctx *e)
{
	atomic_fetch_add(&api->metrics->queries, 1);
	e->out = &resp->body;
	e->lookback = api->lookback_ms;
	begin_success(resp, e->instant ? "vector" : "matrix");
	ts_select(api->db, sel->matchers, sel->nmatchers, e->start - e->lookback, e->end, eval_series, e);
	end_success(api, resp, 1, e->rc);
}

/* The range parameters, or the message Prometheus gives for what is wrong with them. */
static const char *range_params(const ag__req *req, int64_t start, int64_t end, int64_t *step)
{
	const char *sv = ag__param_get(req, "step");
	if (start == INT64_MIN || end == INT64_MIN || !sv)
		return "query_range needs start, end and step parameters";
	if (cm_parse_duration_ms(sv, step))
		return "invalid parameter \"step\": cannot parse it to a valid duration";
	if (end < start)
		return "end timestamp must not be before start time";
	if (*step <= 0)
		return "zero or negative query resolution step widths are not accepted. Try a positive integer";
	if ((end - start) / *step >= MAX_POINTS)
		return "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query "
		       "resolution (?step=XX)";
	return NULL;
}

void ag__api_query_range(ag__api *api, const ag__req *req, ag__resp *resp)
{
	ag__selector sel;
	int64_t start, end, step;
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MIN, &end))
		return;
	const char *bad = range_params(req, start, end, &step);
	if (bad) {
		ag__resp_error(resp, 400, "bad_data", bad);
		return;
	}
	if (parse_query(req, resp, "query", &sel))
		return;
	eval_ctx e = {.start = start, .end = end, .step = step};
	eval(api, resp, &sel, &e);
	ag__selector_close(&sel);
}

void ag__api_query(ag__api *api, const ag__req *req, ag__resp *resp)
{
	ag__selector sel;
	int64_t t;
	if (time_param(req, resp, "time", cm_now_ms(), &t) || parse_query(req, resp, "query", &sel))
		return;
	eval_ctx e = {.start = t, .end = t, .step = 1, .instant = 1};
	eval(api, resp, &sel, &e);
	ag__selector_close(&sel);
}

/* ---- series ---------------------------------------------------------------------------------------- */

/* Label sets are collected as JSON objects, then sorted and written once each: several match[] may
 * select the same series. */
typedef struct span {
	size_t off, len;
} span;

typedef struct series_ctx {
	cm_buf json;  /* the objects, back to back */
	span *objs;
	size_t n, cap;
	int rc;
} series_ctx;

static int series_one(void *ctx, const cm_label *labels, size_t nlabels, const cm_sample *s, size_t n)
{
	(void)s, (void)n;
	series_ctx *c = ctx;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		span *o = realloc(c->objs, cap * sizeof(*o));
		if (!o)
			return c->rc = CM_ENOMEM;
		c->objs = o, c->cap = cap;
	}
	size_t off = c->json.len;
	c->rc = put_labels(&c->json, labels, nlabels);
	c->objs[c->n++] = (span){off, c->json.len - off};
	return c->rc;
}

static int cmp_span(const void *a, const void *b, void *base)
{
	const span *x = a, *y = b;
	int c = memcmp((const uint8_t *)base + x->off, (const uint8_t *)base + y->off, x->len < y->len ? x->len : y->len);
	return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int write_unique(series_ctx *c, cm_buf *out)
{
	qsort_r(c->objs, c->n, sizeof(span), cmp_span, c->json.data);
	int rc = CM_OK;
	for (size_t i = 0, written = 0; i < c->n && !rc; i++) {
		if (i && !cmp_span(&c->objs[i - 1], &c->objs[i], c->json.data))
			continue;
		rc = cm_buf_puts(out, written++ ? "," : "");
		rc = rc ? rc : cm_buf_append(out, c->json.data + c->objs[i].off, c->objs[i].len);
	}
	return rc;
}

void ag__api_series(ag__api *api, const ag__req *req, ag__resp *resp)
{
	int64_t start, end;
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MAX, &end))
		return;
	if (!ag__param_get(req, "match[]")) {
		ag__resp_error(resp, 400, "bad_data", "no match[] parameter provided");
		return;
	}
	series_ctx c = {.rc = 0};
	cm_buf_init(&c.json);
	for (size_t i = 0; i < req->nparams && !c.rc; i++) {
		if (strcmp(req->params[i].key, "match[]"))
			continue;
		ag__selector sel;
		ag__req one = *req;
		one.params = &req->params[i], one.nparams = 1;
		if (parse_query(&one, resp, "match[]", &sel))
			goto out;
		ts_select_series(api->db, sel.matchers, sel.nmatchers, start, end, series_one, &c);
		ag__selector_close(&sel);
	}
	atomic_fetch_add(&api->metrics->queries, 1);
	begin_success(resp, NULL);
	end_success(api, resp, 0, c.rc ? c.rc : write_unique(&c, &resp->body));
out:
	cm_buf_close(&c.json);
	free(c.objs);
}
