/* ag_int.h -- internals shared by the files of aggregator/ (never included outside it).
 *
 * ag_http.c owns libmicrohttpd and turns each request into an ag__req (method, path, parameters,
 * body) that a route handler answers with an ag__resp. ag_ingest.c decodes and stores pushes;
 * ag_promql.c parses selectors; ag_api.c answers the Prometheus HTTP API; ag_metrics.c counts.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AG_INT_H
#define AG_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "ag.h"
#include "cm.h"
#include "ts.h"

/* ---- metrics (ag_metrics.c) --------------------------------------------------------------------- */

enum {
	AG_PUSH_OK,
	AG_PUSH_DUPLICATE,
	AG_PUSH_UNAUTHORIZED,
	AG_PUSH_BAD_REQUEST,
	AG_PUSH_UNAVAILABLE,
	AG_PUSH_NRESULTS
};

typedef struct ag__metrics {
	atomic_uint_fast64_t push[AG_PUSH_NRESULTS];
	atomic_uint_fast64_t samples_ingested;
	atomic_uint_fast64_t queries;
	atomic_uint_fast64_t query_errors;
	atomic_uint_fast64_t http_requests;
	int64_t start_ms;
} ag__metrics;

int ag__metrics_render(ag__metrics *m, ts_db *db, cm_buf *out);

/* ---- requests and responses (ag_http.c) ---------------------------------------------------------- */

typedef struct ag__param {
	const char *key;
	const char *value;
} ag__param;

typedef struct ag__req {
	const char *method;
	const char *url;
	const char *authorization;  /* the Authorization header, or NULL */
	ag__param *params;          /* query string and form body, in order */
	size_t nparams;
	const uint8_t *body;
	size_t body_len;
	int body_too_large;
	cm_arena *arena;            /* lives as long as the request */
} ag__req;

typedef struct ag__resp {
	int status;
	const char *content_type;
	cm_buf body;
} ag__resp;

const char *ag__param_get(const ag__req *r, const char *key);
/* Parses a=b&c=d (URL-encoded) into r->params, appending. */
int ag__parse_form(ag__req *r, const char *s, size_t n);

/* Writes the Prometheus error envelope: {"status":"error","errorType":type,"error":msg}. */
void ag__resp_error(ag__resp *resp, int status, const char *type, const char *msg);

/* ---- ingest (ag_ingest.c) ----------------------------------------------------------------------- */

typedef struct ag__ingest ag__ingest;

/* token is the bearer token pushes must carry; copied. */
int ag__ingest_create(ts_db *db, ag__metrics *m, const char *token, size_t max_push, ag__ingest **out,
		      cm_err *err);
void ag__ingest_destroy(ag__ingest *in);
/* Decodes, dedupes on (node, boot id, seq) and durably appends one wire batch. */
void ag__ingest_push(ag__ingest *in, const ag__req *req, ag__resp *resp);

/* ---- selectors (ag_promql.c) -------------------------------------------------------------------- */

typedef struct ag__selector {
	ts_matcher *matchers;
	size_t nmatchers;
} ag__selector;

/* Parses `metric{label="v", l2=~"re", ...}` (or `{__name__="m", ...}`) into compiled matchers
 * allocated from the arena. Anything else is CM_EPROTO with a message in err. */
int ag__selector_parse(const char *q, cm_arena *a, ag__selector *out, cm_err *err);
void ag__selector_close(ag__selector *s);

/* ---- Prometheus API (ag_api.c) ------------------------------------------------------------------ */

typedef struct ag__api {
	ts_db *db;
	ag__metrics *metrics;
	int64_t lookback_ms;
} ag__api;

void ag__api_query(ag__api *api, const ag__req *req, ag__resp *resp);
void ag__api_query_range(ag__api *api, const ag__req *req, ag__resp *resp);
void ag__api_series(ag__api *api, const ag__req *req, ag__resp *resp);
/* Prometheus' JSON timestamp: seconds with up to three decimals, trailing zeros dropped. */
int ag__put_json_time(cm_buf *b, int64_t t_ms);

#endif
