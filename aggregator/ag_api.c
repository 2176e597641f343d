/* ag_api.c -- the Prometheus HTTP API over the tsdb: query and query_range (PromQL).
 *
 * Answers use Prometheus' JSON envelope ({"status":"success","data":...}), sample values as strings in
 * Prometheus' float text and timestamps as seconds. query and query_range parse PromQL (ag_promql.c)
 * and hand the tree to the evaluator (ag_peval.c), which writes the data object; the guards are here:
 * the timeout parameter (capped by the default of 2 min), at most 20 queries at once (a query waits up
 * to 5 s for a place, then 503), 11,000 points per series. Bad parameters answer 400 with errorType
 * bad_data and Prometheus' wording; evaluation errors map to execution (422), timeout (503).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ag_int.h"

#define MAX_POINTS 11000
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

/* ---- PromQL queries (ag_peval.c evaluates) ------------------------------------------------------- */

/* A place among the running queries: waits up to 5 s for one, then 503 as Prometheus' query gate. */
static int query_slot(ag__api *api, ag__resp *resp)
{
	int max = api->max_queries > 0 ? api->max_queries : 20;
	int64_t wait_ms = api->query_wait_ms > 0 ? api->query_wait_ms : 5000;
	for (int64_t waited_ms = 0;; waited_ms += 10) {
		int cur = atomic_load(&api->active_queries);
		if (cur < max && atomic_compare_exchange_weak(&api->active_queries, &cur, cur + 1))
			return CM_OK;
		if (waited_ms >= wait_ms) {
			ag__resp_error(resp, 503, "unavailable", "too many concurrent queries, try again later");
			return CM_AGAIN;
		}
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
}

static int query_opts(ag__api *api, const ag__req *req, ag__resp *resp, ag__pql_opts *o)
{
	*o = (ag__pql_opts){.lookback_ms = api->lookback_ms,
			    .timeout_ms = api->query_timeout_ms > 0 ? api->query_timeout_ms : 120000,
			    .max_samples = api->max_samples ? api->max_samples : 50000000,
			    .subquery_step_ms = 60000};
	const char *tv = ag__param_get(req, "timeout");
	int64_t t;
	if (tv && *tv) {
		if (cm_parse_duration_ms(tv, &t) || t <= 0) {
			ag__resp_error(resp, 400, "bad_data", "invalid parameter \"timeout\": cannot parse it to a valid duration");
			return CM_EINVAL;
		}
		if (t < o->timeout_ms)
			o->timeout_ms = t;
	}
	return CM_OK;
}

static void run_query(ag__api *api, const ag__req *req, ag__resp *resp, int64_t start, int64_t end, int64_t step,
		      int instant)
{
	static const struct {
		int status;
		const char *type;
	} kinds[] = {{500, "internal"}, {400, "bad_data"}, {422, "execution"}, {503, "timeout"}, {500, "internal"}};
	const char *qs = ag__param_get(req, "query");
	ag__pql_opts o;
	ag__pquery q;
	cm_err err = {{0}};
	char msg[320];
	if (!qs || !*qs) {
		ag__resp_error(resp, 400, "bad_data", "invalid parameter \"query\": empty query");
		return;
	}
	if (query_opts(api, req, resp, &o))
		return;
	if (ag__pql_parse(qs, req->arena, &q, &err)) {
		snprintf(msg, sizeof(msg), "invalid parameter \"query\": %s", err.msg);
		ag__resp_error(resp, 400, "bad_data", msg);
		return;
	}
	if (query_slot(api, resp) == CM_OK) {
		int kind = 0;
		atomic_fetch_add(&api->metrics->queries, 1);
		begin_success(resp, NULL);
		resp->body.len--; /* begin_success opened an array: the data object comes from the evaluator */
		int rc = ag__pql_exec(api->db, &q, start, end, step, instant, &o, &resp->body, &kind, &err);
		if (rc) {
			atomic_fetch_add(&api->metrics->query_errors, 1);
			ag__resp_error(resp, kinds[kind < 5 && kind > 0 ? kind : 0].status,
				       kinds[kind < 5 && kind > 0 ? kind : 0].type, err.msg);
		} else if (cm_buf_puts(&resp->body, "}\n")) {
			ag__resp_error(resp, 500, "internal", "out of memory writing the answer");
		}
		atomic_fetch_sub(&api->active_queries, 1);
	}
	ag__pql_close(&q);
}

void ag__api_query_range(ag__api *api, const ag__req *req, ag__resp *resp)
{
	int64_t start, end, step;
	if (time_param(req, resp, "start", INT64_MIN, &start) || time_param(req, resp, "end", INT64_MIN, &end))
		return;
	const char *bad = range_params(req, start, end, &step);
	if (bad) {
		ag__resp_error(resp, 400, "bad_data", bad);
		return;
	}
	run_query(api, req, resp, start, end, step, 0);
}

void ag__api_query(ag__api *api, const ag__req *req, ag__resp *resp)
{
	int64_t t;
	if (time_param(req, resp, "time", cm_now_ms(), &t))
		return;
	run_query(api, req, resp, t, t, 1, 1);
}
