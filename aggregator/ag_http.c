/* ag_http.c -- the aggregator's HTTP server: libmicrohttpd glue, request parsing, route table, start/stop.
 *
 * libmicrohttpd runs a pool of threads; each request is accumulated into an ag__req (method, URL,
 * query-string and form parameters, body capped at max_push_bytes) and dispatched at its end to one
 * route handler, which fills an ag__resp. Handlers may block (the tsdb fsync happens on these
 * threads, by design: the answer waits for durability). Nothing here logs per request.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_int.h"

struct ag_server {
	ag_config cfg;
	int lock_fd;
	ts_db *db;
	ag__ingest *ingest;
	ag__importer *importer;
	ag__api api;
	ag__metrics metrics;
	struct MHD_Daemon *mhd;
	ag__services *services; /* service registry (ag_services.c) */
	ag__dns *dns;           /* cluster DNS, NULL when off (ag_dns.c) */
	ag__kube *kube;         /* Kubernetes API service source, NULL when off (ag_kube.c) */
	ag__loki *loki;         /* log store + Loki API (ag_loki.c) */
	ag__state *state;       /* inventory and events (ag_state.c) */
	ag__capacity *capacity; /* capacity reports (ag_capacity.c) */
	ag__auth *auth;         /* push and read tokens (ag_auth.c) */
	ag__rate *rate;         /* --http-rate-per-ip, NULL = off (ag_rate.c) */
	ag__rwsend *rwsend;     /* --remote-write sender, NULL without (ag_rwsend.c) */
	ag__rw *rw;             /* remote write receiver (ag_rw.c) */
	char *tls_cert, *tls_key; /* PEM text of --tls-cert-file and --tls-key-file, NULL without TLS */
	char ui_dir[4096];      /* what /ui/ serves, "" = none (ag_ui.c) */
};

typedef struct conn_ctx {
	cm_arena arena;
	cm_buf body;
	int too_large;
	int rate_limited; /* over --http-rate-per-ip: the body is dropped, the answer is 429 */
	ag__import *imp;  /* a streamed bulk import (ag_import.c) */
} conn_ctx;

/* ---- parameters ------------------------------------------------------------------------------------ */

const char *ag__param_get(const ag__req *r, const char *key)
{
	for (size_t i = 0; i < r->nparams; i++)
		if (!strcmp(r->params[i].key, key))
			return r->params[i].value;
	return NULL;
}

static int add_param(ag__req *r, const char *k, size_t klen, const char *v, size_t vlen)
{
	if (r->nparams % 16 == 0) {
		ag__param *np = cm_arena_alloc(r->arena, (r->nparams + 16) * sizeof(*np));
		if (!np)
			return CM_ENOMEM;
		if (r->nparams)
			memcpy(np, r->params, r->nparams * sizeof(*np));
		r->params = np;
	}
	char *key = cm_arena_strndup(r->arena, k, klen), *val = cm_arena_strndup(r->arena, v, vlen);
	if (!key || !val)
		return CM_ENOMEM;
	r->params[r->nparams++] = (ag__param){key, val};
	return CM_OK;
}

static int hexdig(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes %XX and '+' in place; returns the new length. A malformed escape is kept as is. */
static size_t url_decode(char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int hi = i + 2 < n ? hexdig(s[i + 1]) : -1, lo = i + 2 < n ? hexdig(s[i + 2]) : -1;
		if (s[i] == '+') {
			s[o++] = ' ';
		} else if (s[i] == '%' && hi >= 0 && lo >= 0) {
			s[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			s[o++] = s[i];
		}
	}
	return o;
}

int ag__parse_form(ag__req *r, const char *s, size_t n)
{
	if (!n)
		return CM_OK; /* an empty body (s may be NULL) */
	char *copy = cm_arena_strndup(r->arena, s, n);
	if (!copy)
		return CM_ENOMEM;
	for (char *p = copy, *end = copy + n; p < end;) {
		char *amp = memchr(p, '&', (size_t)(end - p));
		char *stop = amp ? amp : end, *eq = memchr(p, '=', (size_t)(stop - p));
		char *v = eq ? eq + 1 : stop;
		size_t klen = url_decode(p, (size_t)((eq ? eq : stop) - p)), vlen = url_decode(v, (size_t)(stop - v));
		if (klen && add_param(r, p, klen, v, vlen))
			return CM_ENOMEM;
		p = stop + 1;
	}
	return CM_OK;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	ag__req *r = cls;
	if (!value)
		value = "";
	return add_param(r, key, strlen(key), value, strlen(value)) ? MHD_NO : MHD_YES;
}

/* ---- responses ------------------------------------------------------------------------------------- */

void ag__resp_error(ag__resp *resp, int status, const char *type, const char *msg)
{
	resp->status = status;
	resp->content_type = "application/json";
	resp->body.len = 0;
	cm_buf_puts(&resp->body, "{\"status\":\"error\",\"errorType\":");
	cm_buf_put_json_str(&resp->body, type);
	cm_buf_puts(&resp->body, ",\"error\":");
	cm_buf_put_json_str(&resp->body, msg);
	cm_buf_puts(&resp->body, "}\n");
}

void ag__resp_header(ag__resp *resp, const char *name, const char *value)
{
	if (resp->nheaders < CM_ARRAY_LEN(resp->headers))
		resp->headers[resp->nheaders].name = name, resp->headers[resp->nheaders++].value = value;
}

/* ---- connection upgrades (WebSocket) ---------------------------------------------------------------- */

typedef struct upgrade_ctx {
	ag__upgrade_fn fn;
	void *arg;
	MHD_socket sock;
	struct MHD_UpgradeResponseHandle *urh;
} upgrade_ctx;

static void *upgrade_thread(void *arg)
{
	upgrade_ctx *u = arg;
	u->fn(u->arg, u->sock);
	MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
	free(u);
	return NULL;
}

static void on_upgrade(void *cls, struct MHD_Connection *c, void *con_cls, const char *extra, size_t extra_in,
		       MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	(void)c, (void)con_cls, (void)extra, (void)extra_in;
	upgrade_ctx *u = cls;
	u->sock = sock, u->urh = urh;
	pthread_t t;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, upgrade_thread, u)) {
		u->fn(u->arg, -1);
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		free(u);
	}
	pthread_attr_destroy(&at);
}

static enum MHD_Result send_upgrade(struct MHD_Connection *c, ag__resp *resp)
{
	upgrade_ctx *u = calloc(1, sizeof(*u));
	struct MHD_Response *r = u ? MHD_create_response_for_upgrade(on_upgrade, u) : NULL;
	if (!r) {
		resp->upgrade(resp->upgrade_arg, -1);
		free(u);
		return MHD_NO;
	}
	u->fn = resp->upgrade, u->arg = resp->upgrade_arg;
	MHD_add_response_header(r, "Upgrade", "websocket");
	MHD_add_response_header(r, "Sec-WebSocket-Accept", resp->ws_accept);
	for (size_t i = 0; i < resp->nheaders; i++) /* Sec-WebSocket-Protocol */
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_SWITCHING_PROTOCOLS, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_resp(struct MHD_Connection *c, ag__resp *resp)
{
	if (resp->upgrade)
		return send_upgrade(c, resp);
	size_t len;
	uint8_t *data = cm_buf_take(&resp->body, &len);
	struct MHD_Response *r = MHD_create_response_from_buffer(len, data ? data : (uint8_t *)"",
								 data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", resp->content_type ? resp->content_type : "text/plain");
	if (resp->status == 401)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"corral\"");
	for (size_t i = 0; i < resp->nheaders; i++)
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)resp->status, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- routes ---------------------------------------------------------------------------------------- */

static void route_healthz(ag_server *s, const ag__req *req, ag__resp *resp)
{
	(void)s, (void)req;
	resp->status = 200;
	cm_buf_puts(&resp->body, "ok\n");
}

static void route_metrics(ag_server *s, const ag__req *req, ag__resp *resp)
{
	(void)req;
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	if (ag__metrics_render(&s->metrics, s->db, &resp->body) || ag__dns_metrics(s->dns, &resp->body) ||
	    ag__loki_metrics(s->loki, &resp->body) || ag__auth_metrics(s->auth, &resp->body) ||
	    ag__rate_metrics(s->rate, &resp->body) ||
	    ag__rw_metrics(s->rw, &resp->body) || ag__rwsend_metrics(s->rwsend, &resp->body) ||
	    ag__kube_metrics(s->kube, &resp->body))
		ag__resp_error(resp, 500, "internal", "out of memory");
}

static void route_push(ag_server *s, const ag__req *req, ag__resp *resp) { ag__ingest_push(s->ingest, req, resp); }
static void route_rw(ag_server *s, const ag__req *req, ag__resp *resp) { ag__rw_write(s->rw, req, resp); }
static void route_import(ag_server *s, const ag__req *req, ag__resp *resp)
{
	(void)s, (void)req; /* reached only when the streamed import could not start */
	ag__resp_error(resp, 503, "unavailable", "out of memory");
}
static void route_flush(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__import_flush(s->importer, req, resp);
}
static void route_query(ag_server *s, const ag__req *req, ag__resp *resp) { ag__api_query(&s->api, req, resp); }
static void route_query_range(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__api_query_range(&s->api, req, resp);
}

static void route_services(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__services_handle(s->services, req, resp);
}

static void route_inventory(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__state_inventory(s->state, req, resp);
}
static void route_events(ag_server *s, const ag__req *req, ag__resp *resp) { ag__state_events(s->state, req, resp); }
static void route_loki_push(ag_server *s, const ag__req *req, ag__resp *resp) { ag__loki_push(s->loki, req, resp); }
static void route_loki_query(ag_server *s, const ag__req *req, ag__resp *resp) { ag__loki_query(s->loki, req, resp); }
static void route_loki_query_range(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__loki_query_range(s->loki, req, resp);
}
static void route_loki_labels(ag_server *s, const ag__req *req, ag__resp *resp) { ag__loki_labels(s->loki, req, resp); }
static void route_loki_values(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__loki_label_values(s->loki, req, resp);
}
static void route_loki_series(ag_server *s, const ag__req *req, ag__resp *resp) { ag__loki_series(s->loki, req, resp); }
static void route_loki_stats(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__loki_index_stats(s->loki, req, resp);
}
static void route_loki_tail(ag_server *s, const ag__req *req, ag__resp *resp) { ag__loki_tail(s->loki, req, resp); }
static void route_cap_nodes(ag_server *s, const ag__req *req, ag__resp *resp) { ag__capacity_nodes(s->capacity, req, resp); }
static void route_cap_workloads(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__capacity_workloads(s->capacity, req, resp);
}
static void route_cap_fit(ag_server *s, const ag__req *req, ag__resp *resp) { ag__capacity_fit(s->capacity, req, resp); }
static void route_cap_summary(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__capacity_summary(s->capacity, req, resp);
}
static void route_ui(ag_server *s, const ag__req *req, ag__resp *resp) { ag__ui_serve(s->ui_dir, req, resp); }
static void route_resolve(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__resolve(s->dns, &s->cfg, req, resp);
}

static void route_papi(ag_server *s, const ag__req *req, ag__resp *resp)
{
	ag__papi p = {.db = s->db, .metrics = &s->metrics, .cfg = &s->cfg, .lookback_ms = s->api.lookback_ms};
	ag__papi_handle(&p, req, resp);
}

typedef void (*route_fn)(ag_server *s, const ag__req *req, ag__resp *resp);

/* Who may call a route (docs/security.md): POST-only routes check the push token in their handler
 * (ag__auth_push); the service registry needs the push token to change and the read token (when one is
 * set) to list; every other route is a read, except these, which are open (probes, scrapes). */
static const char *const open_paths[] = {"/healthz", "/metrics"};

/* 0 when the request may reach its handler, else the answer is written. */
static int route_auth(ag_server *s, int post_only, ag__req *req, ag__resp *resp)
{
	if (post_only == 1)
		return 0;
	for (size_t i = 0; i < CM_ARRAY_LEN(open_paths); i++)
		if (!strcmp(req->url, open_paths[i]))
			return 0;
	char bound[256]; /* a token bound to one node may not change the registry */
	if (post_only == 2 && strcmp(req->method, "GET")) {
		if (ag__auth_push(s->auth, req->authorization, bound, sizeof(bound)) && !bound[0])
			return 0;
	} else if (ag__auth_read(s->auth, req->authorization)) {
		return 0;
	}
	ag__resp_error(resp, 401, "unauthorized", "missing or wrong bearer token");
	return -1;
}

static const struct route {
	const char *path;
	int post_only;  /* 1: POST only; 0: GET, or POST with a form body; 2: any method, raw body */
	route_fn fn;
} routes[] = {
	{"/healthz", 0, route_healthz},
	{"/metrics", 0, route_metrics},
	{"/api/v1/agent/push", 1, route_push},
	{"/api/v1/write", 1, route_rw},
	{"/api/v1/import/prometheus", 1, route_import},
	{"/api/v1/admin/flush", 1, route_flush},
	{"/api/v1/query", 0, route_query},
	{"/api/v1/query_range", 0, route_query_range},
	{"/api/v1/series", 0, route_papi}, /* ag_papi.c: with limit */
	{"/api/v1/labels", 0, route_papi},
	{"/api/v1/metadata", 0, route_papi},
	{"/api/v1/status/buildinfo", 0, route_papi},
	{"/api/v1/status/runtimeinfo", 0, route_papi},
	{"/api/v1/status/flags", 0, route_papi},
	{"/api/v1/query_exemplars", 0, route_papi},
	{"/federate", 0, route_papi},
	{"/api/v1/services", 2, route_services},
	{"/api/v1/inventory", 0, route_inventory},
	{"/api/v1/events", 0, route_events},
	{"/loki/api/v1/push", 1, route_loki_push},
	{"/loki/api/v1/query", 0, route_loki_query},
	{"/loki/api/v1/query_range", 0, route_loki_query_range},
	{"/loki/api/v1/labels", 0, route_loki_labels},
	{"/loki/api/v1/label", 0, route_loki_labels}, /* Loki's older alias */
	{"/loki/api/v1/series", 0, route_loki_series},
	{"/loki/api/v1/index/stats", 0, route_loki_stats},
	{"/loki/api/v1/tail", 0, route_loki_tail},
	{"/api/v1/capacity/nodes", 0, route_cap_nodes},
	{"/api/v1/capacity/workloads", 0, route_cap_workloads},
	{"/api/v1/capacity/fit", 0, route_cap_fit},
	{"/api/v1/capacity/summary", 0, route_cap_summary},
	{"/api/v1/dns/resolve", 0, route_resolve},
	{"/", 0, route_ui},   /* redirects to /ui/ */
	{"/ui", 0, route_ui}, /* redirects to /ui/; /ui/<file> below */
};

static void dispatch(ag_server *s, ag__req *req, ag__resp *resp)
{
	const struct route *rt = NULL;
	for (size_t i = 0; i < CM_ARRAY_LEN(routes); i++)
		if (!strcmp(req->url, routes[i].path))
			rt = &routes[i];
	static const struct route loki_values = {"/loki/api/v1/label/", 0, route_loki_values};
	if (!rt && !strncmp(req->url, loki_values.path, strlen(loki_values.path)))
		rt = &loki_values; /* /loki/api/v1/label/<name>/values */
	static const struct route ui_files = {"/ui/", 0, route_ui};
	if (!rt && !strncmp(req->url, ui_files.path, strlen(ui_files.path)))
		rt = &ui_files;
	static const struct route label_values = {"/api/v1/label/", 0, route_papi};
	if (!rt && !strncmp(req->url, label_values.path, strlen(label_values.path)))
		rt = &label_values; /* /api/v1/label/<name>/values */
	int is_post = !strcmp(req->method, "POST"), is_get = !strcmp(req->method, "GET");
	if (!rt) {
		ag__resp_error(resp, 404, "not_found", "no such endpoint");
	} else if (rt->fn != route_ui && route_auth(s, rt->post_only, req, resp)) { /* UI files hold no data */
		return;
	} else if (rt->post_only == 2) {
		rt->fn(s, req, resp);
	} else if (rt->post_only ? !is_post : !(is_get || is_post)) {
		ag__resp_error(resp, 405, "bad_data", "method not allowed");
	} else if (req->body_too_large && !rt->post_only) {
		ag__resp_error(resp, 413, "bad_data", "request body exceeds the size limit");
	} else {
		if (is_post && !rt->post_only && ag__parse_form(req, (const char *)req->body, req->body_len))
			ag__resp_error(resp, 500, "internal", "out of memory");
		else
			rt->fn(s, req, resp);
	}
}

/* ---- libmicrohttpd callbacks ----------------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	(void)version;
	ag_server *s = cls;
	conn_ctx *cc = *con_cls;
	if (!cc) {
		if (!(cc = calloc(1, sizeof(*cc))))
			return MHD_NO;
		cm_arena_init(&cc->arena, 0);
		*con_cls = cc;
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		cc->rate_limited = strcmp(url, "/healthz") && !ag__rate_allow(s->rate, ci ? ci->client_addr : NULL);
		if (cc->rate_limited)
			return MHD_YES;
		if (!strcmp(url, "/api/v1/import/prometheus") && !strcmp(method, "POST"))
			cc->imp = ag__import_begin(s->importer, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
											   "Authorization"));
		return MHD_YES;
	}
	if (*upload_size && cc->imp) {
		ag__import_feed(cc->imp, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (cc->rate_limited || cc->body.len + *upload_size > s->cfg.max_push_bytes)
			cc->too_large = 1; /* keep reading to answer cleanly, but store nothing more */
		else if (cm_buf_append(&cc->body, upload, *upload_size))
			return MHD_NO;
		*upload_size = 0;
		return MHD_YES;
	}
	atomic_fetch_add(&s->metrics.http_requests, 1);
	ag__req req = {.method = method, .url = url, .arena = &cc->arena, .body = cc->body.data,
		       .body_len = cc->body.len, .body_too_large = cc->too_large};
	req.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	req.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
	req.content_encoding = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
	req.ws_key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	req.if_none_match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
	ag__resp resp = {.status = 200, .content_type = "text/plain"};
	cm_buf_init(&resp.body);
	int ws_corral = req.ws_key && ag__auth_ws_protocols(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
											"Sec-WebSocket-Protocol"),
							    &cc->arena, &req.authorization);
	if (cc->rate_limited) {
		ag__resp_error(&resp, 429, "too_many_requests", "over the request rate for this client address");
		ag__resp_header(&resp, "Retry-After", "1");
	} else if (cc->imp)
		ag__import_end(cc->imp, &resp);
	else if (MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_arg, &req) < 0)
		ag__resp_error(&resp, 500, "internal", "out of memory");
	else
		dispatch(s, &req, &resp);
	if (ws_corral && resp.upgrade)
		ag__resp_header(&resp, "Sec-WebSocket-Protocol", "corral"); /* the browser needs it echoed */
	enum MHD_Result ret = send_resp(c, &resp);
	cm_buf_close(&resp.body);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
	(void)cls, (void)c, (void)t;
	conn_ctx *cc = *con_cls;
	if (!cc)
		return;
	cm_arena_close(&cc->arena);
	cm_buf_close(&cc->body);
	ag__import_free(cc->imp);
	free(cc);
	*con_cls = NULL;
}

/* ---- start and stop -------------------------------------------------------------------------------- */

static int lock_data_dir(const char *dir, int *out, cm_err *err)
{
	if (mkdir(dir, 0750) && errno != EEXIST)
		return cm_errf(err, -errno, "cannot create data dir %s: %s", dir, strerror(errno));
	char path[4096];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return cm_errf(err, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		close(fd);
		return cm_errf(err, CM_AGAIN, "data dir %s is in use by another aggregator", dir);
	}
	*out = fd;
	return CM_OK;
}

static int open_store(ag_server *s, cm_err *err)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/tsdb", s->cfg.data_dir);
	ts_open_report rep;
	ts_opts topts = {.downsample = s->cfg.tsdb_downsample, .cache_bytes = s->cfg.tsdb_cache_bytes};
	int rc = ts_open(path, &topts, &s->db, &rep, err);
	if (rc)
		return rc;
	CM_LOG(CM_LOG_INFO, "aggregator", "tsdb %s: replayed %llu records, %llu samples", path,
	       (unsigned long long)rep.records, (unsigned long long)rep.samples);
	if (rep.truncated_segments)
		CM_LOG(CM_LOG_WARN, "aggregator", "tsdb: cut %llu bytes from %u damaged WAL segment(s), first: %s",
		       (unsigned long long)rep.truncated_bytes, rep.truncated_segments, rep.first_problem);
	rc = ag__auth_create(s->cfg.token_file, s->cfg.read_token_file, &s->auth, err);
	snprintf(path, sizeof(path), "%s/logs", s->cfg.data_dir);
	if (!rc)
		rc = ag__loki_create(path, s->auth, s->cfg.loki_push, &s->loki, err);
	if (!rc)
		rc = ag__ingest_create(s->db, &s->metrics, s->loki, s->auth, s->cfg.max_push_bytes, &s->ingest, err);
	if (!rc)
		rc = ag__importer_create(s->db, &s->metrics, s->auth, s->cfg.allow_unauth_import, &s->importer, err);
	return rc;
}

/* The remote write receiver, and the sender when --remote-write names a URL (ag_rw.c, ag_rwsend.c). */
static int start_remote_write(ag_server *s, cm_err *err)
{
	const ag_config *c = &s->cfg;
	char dir[4096], token[1024] = "";
	int rc = CM_OK;
	if (c->remote_write.n && c->remote_write_token_file)
		rc = cm_read_secret(c->remote_write_token_file, NULL, token, sizeof(token), err);
	ag__rwsend_opts o = {c->remote_write.v, c->remote_write.n, token, c->remote_write_shards,
			     c->remote_write_max_samples, c->remote_write_max_wait_ms, c->remote_write_max_queue};
	snprintf(dir, sizeof(dir), "%s/remote-write", c->data_dir);
	if (!rc && c->remote_write.n)
		rc = ag__rwsend_create(dir, &o, &s->rwsend, err);
	memset(token, 0, sizeof(token));
	if (!rc) {
		ag__ingest_set_forward(s->ingest, s->rwsend);
		ag__importer_set_forward(s->importer, s->rwsend);
	}
	return rc ? rc : ag__rw_create(s->db, s->auth, s->rwsend, &s->rw, err);
}

/* Reads --tls-cert-file and --tls-key-file into memory (libmicrohttpd takes PEM text). */
static int load_tls(ag_server *s, cm_err *err)
{
	const ag_config *c = &s->cfg;
	if (!c->tls_cert_file && !c->tls_key_file)
		return CM_OK;
	if (!c->tls_cert_file || !c->tls_key_file)
		return cm_errf(err, CM_EINVAL, "--tls-cert-file and --tls-key-file go together");
	if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
		return cm_errf(err, CM_EINVAL, "this libmicrohttpd is built without TLS");
	const size_t cap = 1 << 20;
	s->tls_cert = malloc(cap), s->tls_key = malloc(cap);
	if (!s->tls_cert || !s->tls_key)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	int rc = cm_read_file(c->tls_cert_file, s->tls_cert, cap, NULL);
	if (rc)
		return cm_errf(err, rc, "cannot read %s: %s", c->tls_cert_file, cm_strerror(rc));
	if ((rc = cm_read_file(c->tls_key_file, s->tls_key, cap, NULL)))
		return cm_errf(err, rc, "cannot read %s: %s", c->tls_key_file, cm_strerror(rc));
	return CM_OK;
}

/* The listening socket of --listen, made here so that --user can drop privileges between the bind
 * (a port below 1024 needs root) and the first request (which must not be served as root). */
static int bind_http(ag_server *s, int *out, cm_err *err)
{
	struct sockaddr_storage ss;
	int rc = cm_parse_listen("listen", s->cfg.listen, &ss, err), one = 1;
	if (rc)
		return rc;
	socklen_t len = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one))) ||
	    bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 256)) {
		rc = cm_errf(err, -errno, "cannot listen on %s: %s", s->cfg.listen, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	*out = fd;
	return CM_OK;
}

/* Serves on fd (from bind_http): MHD_stop_daemon closes it; the caller does when this fails. */
static int start_http(ag_server *s, int fd, cm_err *err)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
	if (s->tls_cert)
		flags |= MHD_USE_TLS;
	const ag_config *c = &s->cfg;
	size_t mem = c->http_max_header_bytes < 4096 ? 4096 : (size_t)c->http_max_header_bytes;
	unsigned timeout_s = c->http_timeout_ms < 1000 ? 1u : (unsigned)(c->http_timeout_ms / 1000);
	struct MHD_OptionItem tls[] = {
		{s->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->tls_cert},
		{MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key},
		{MHD_OPTION_END, 0, NULL},
	};
	s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				  MHD_OPTION_THREAD_POOL_SIZE, (unsigned)c->threads, MHD_OPTION_NOTIFY_COMPLETED,
				  on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_CONNECTION_LIMIT,
				  (unsigned)c->http_max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
				  (unsigned)c->http_max_conns_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem,
				  MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
	if (!s->mhd)
		return cm_errf(err, CM_EIO, "cannot serve HTTP on %s%s", c->listen,
			       s->tls_cert ? " (a bad TLS certificate or key?)" : "");
	return CM_OK;
}

/* The capacity reports' settings from the flags (ag__capacity_opts). */
static int start_capacity(ag_server *s, const char *state_db, cm_err *err)
{
	ag__capacity_opts o = {.max_window_ms = s->cfg.capacity_max_window_ms};
	const char *cpu = s->cfg.capacity_reserved_cpu, *mem = s->cfg.capacity_reserved_memory;
	if (ag__quantity_size("--capacity-reserved-cpu", cpu ? cpu : "100m", &o.reserved_cpu, err) ||
	    ag__quantity_size("--capacity-reserved-memory", mem ? mem : "256Mi", &o.reserved_mem, err))
		return CM_EINVAL;
	if (o.max_window_ms <= 0)
		o.max_window_ms = 8 * 24 * 3600 * 1000LL;
	return ag__capacity_create(s->db, state_db, &o, &s->capacity, err);
}

int ag_server_start(const ag_config *cfg, ag_server **out, cm_err *err)
{
	ag_server *s = calloc(1, sizeof(*s));
	if (!s)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	s->cfg = *cfg;
	s->lock_fd = -1;
	s->metrics.start_ms = cm_now_ms();
	ag__user user = {0};
	int rc = load_tls(s, err); /* before --user: the key may be readable by root only */
	rc = rc ? rc : ag__rate_create(cfg->http_rate_per_ip, &s->rate, err);
	rc = rc ? rc : ag__user_prepare(cfg->user, cfg->data_dir, &user, err);
	rc = rc ? rc : lock_data_dir(cfg->data_dir, &s->lock_fd, err);
	if (!rc)
		rc = open_store(s, err);
	if (!rc)
		rc = start_remote_write(s, err);
	if (!rc) {
		char db[4096];
		snprintf(db, sizeof(db), "%s/state.db", cfg->data_dir);
		rc = ag__services_create(db, cfg->services, &s->services, err);
		rc = rc ? rc : ag__state_create(db, s->services,
		                              cfg->node_grace_ms > 0 ? cfg->node_grace_ms : AG__NODE_GRACE_MS,
		                              &s->state, err);
		if (!rc)
			ag__ingest_set_state(s->ingest, s->state);
		rc = rc ? rc : start_capacity(s, db, err);
	}
	rc = rc ? rc : ag__user_bind(&user, err);
	rc = rc ? rc : ag__dns_start(cfg, s->services, &s->dns, err);
	rc = rc ? rc : ag__kube_start(cfg, s->services, &s->kube, err);
	if (rc)
		goto fail;
	s->api = (ag__api){.db = s->db, .metrics = &s->metrics, .lookback_ms = 5 * 60 * 1000,
			   .query_timeout_ms = cfg->query_timeout_ms,
			   .max_samples = cfg->query_max_samples > 0 ? (uint64_t)cfg->query_max_samples : 0,
			   .max_queries = (int)cfg->query_max_concurrency};
	ag__ui_dir(cfg, s->ui_dir, sizeof(s->ui_dir));
	int http_fd = -1;
	rc = bind_http(s, &http_fd, err);
	rc = rc ? rc : ag__user_drop(&user, err);
	rc = rc ? rc : start_http(s, http_fd, err);
	if (rc) {
		if (http_fd >= 0 && !s->mhd)
			close(http_fd);
		goto fail;
	}
	*out = s;
	return CM_OK;
fail:
	ag_server_stop(s);
	return rc;
}

void ag_server_stop(ag_server *s)
{
	if (!s)
		return;
	if (s->loki)
		ag__loki_stop_tails(s->loki); /* upgraded connections end before the daemon stops */
	if (s->mhd)
		MHD_stop_daemon(s->mhd);
	ag__dns_stop(s->dns);
	ag__kube_stop(s->kube);
	ag__rw_destroy(s->rw);
	ag__rwsend_destroy(s->rwsend); /* after the HTTP threads: nothing enqueues any more */
	if (s->ingest)
		ag__ingest_set_state(s->ingest, NULL);
	ag__state_destroy(s->state);
	ag__capacity_destroy(s->capacity);
	ag__services_destroy(s->services);
	if (s->ingest)
		ag__ingest_destroy(s->ingest);
	ag__importer_destroy(s->importer);
	ag__loki_destroy(s->loki);
	if (s->db)
		ts_close(s->db);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	ag__auth_destroy(s->auth); /* after every user of it */
	ag__rate_destroy(s->rate);
	if (s->tls_key)
		memset(s->tls_key, 0, strlen(s->tls_key));
	free(s->tls_key);
	free(s->tls_cert);
	free(s);
}
