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
#include <sys/socket.h>

#include "ag.h"
#include "cm.h"
#include "dn.h"
#include "ls.h"
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
	atomic_uint_fast64_t retimed_batches; /* batches whose node clock disagreed with ours (ag_ingest.c) */
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
	const char *content_type;   /* the Content-Type header, or NULL */
	const char *content_encoding; /* the Content-Encoding header, or NULL (ag_rw.c) */
	const char *ws_key;         /* the Sec-WebSocket-Key header, or NULL */
	const char *if_none_match;  /* the If-None-Match header, or NULL (ag_ui.c) */
	cm_arena *arena;            /* lives as long as the request */
} ag__req;

/* A handler that takes the connection over (WebSocket) sets upgrade: ag_http.c answers 101 with
 * Upgrade: websocket and Sec-WebSocket-Accept: ws_accept, then calls upgrade(upgrade_arg, fd) once on a
 * thread of its own and closes the connection when it returns; fd is -1 when the upgrade failed (the
 * callee still frees its argument). */
typedef void (*ag__upgrade_fn)(void *arg, int fd);

typedef struct ag__resp {
	int status;
	const char *content_type;
	cm_buf body;
	ag__upgrade_fn upgrade;
	void *upgrade_arg;
	char ws_accept[32];
	struct { const char *name, *value; } headers[6]; /* extra response headers; values outlive the send */
	size_t nheaders;
} ag__resp;

const char *ag__param_get(const ag__req *r, const char *key);
/* Parses a=b&c=d (URL-encoded) into r->params, appending. */
int ag__parse_form(ag__req *r, const char *s, size_t n);

/* Writes the Prometheus error envelope: {"status":"error","errorType":type,"error":msg}. */
void ag__resp_error(ag__resp *resp, int status, const char *type, const char *msg);
/* Adds a response header (name and value must outlive the response); ignored past the table's size. */
void ag__resp_header(ag__resp *resp, const char *name, const char *value);

/* ---- bearer tokens (ag_auth.c) ------------------------------------------------------------------ */

typedef struct ag__auth ag__auth;

/* push_file: --token-file (else CORRAL_TOKEN; one is required); read_file: --read-token-file (else
 * CORRAL_READ_TOKEN; none = reads are open). File format and reload rules atop ag_auth.c. */
int ag__auth_create(const char *push_file, const char *read_file, ag__auth **out, cm_err *err);
void ag__auth_destroy(ag__auth *a);
/* The check of every writing route: 1 when authorization is "Bearer <a push token>". node (cap > 0)
 * receives the node that token is bound to, "" when it is valid for any node; the caller refuses
 * data of another node (403). Re-reads a changed token file at most once a second. */
int ag__auth_push(ag__auth *a, const char *authorization, char *node, size_t cap);
/* 1 when reads are open or authorization carries a read token (push tokens do not read). */
int ag__auth_read(ag__auth *a, const char *authorization);
/* A browser cannot set Authorization on a WebSocket; like Kubernetes' API server, the web UI offers the
 * subprotocols "corral" and "bearer.<the token in base64url, no padding>" (docs/security.md). When
 * *authorization is NULL, a well-formed bearer.<...> sets it to "Bearer <token>" (in the arena); anything
 * malformed is ignored (the request then meets the usual 401). 1 when "corral" was offered: the 101
 * answer must echo it. */
int ag__auth_ws_protocols(const char *protocols, cm_arena *a, const char **authorization);
/* corral_auth_* counters (never a token). */
int ag__auth_metrics(ag__auth *a, cm_buf *out);
/* The token file parser alone (for the fuzzer and tests): how many tokens text holds, how many bound. */
int ag__auth_parse(const char *text, size_t len, int allow_node, size_t *ntokens, size_t *nbound, cm_err *err);

/* ---- --http-rate-per-ip (ag_rate.c) ----------------------------------------------------------------- */

typedef struct ag__rate ag__rate;
/* *out is NULL (no limit) when per_sec is 0. */
int ag__rate_create(long per_sec, ag__rate **out, cm_err *err);
void ag__rate_destroy(ag__rate *r);
/* 1 when the client at sa may make one more request now (always with r NULL). */
int ag__rate_allow(ag__rate *r, const struct sockaddr *sa);
int ag__rate_metrics(ag__rate *r, cm_buf *out);

/* ---- --user: privileges dropped after binding (ag_user.c) ---------------------------------------- */

typedef struct ag__user {
	int active;  /* started as root with --user */
	unsigned uid, gid;
} ag__user;

/* Resolves name (NULL = no --user), hands data_dir to it and switches effective ids to it. */
int ag__user_prepare(const char *name, const char *data_dir, ag__user *u, cm_err *err);
/* Effective root again, to bind the ports. */
int ag__user_bind(const ag__user *u, cm_err *err);
/* Real, effective and saved ids to the user for good. */
int ag__user_drop(const ag__user *u, cm_err *err);

/* ---- ingest (ag_ingest.c) ----------------------------------------------------------------------- */

typedef struct ag__ingest ag__ingest;

/* auth: the push tokens (outlives the ingest). loki: where batches' log streams go (NULL: dropped). */
struct ag__loki;
int ag__ingest_create(ts_db *db, ag__metrics *m, struct ag__loki *loki, ag__auth *auth, size_t max_push,
		      ag__ingest **out, cm_err *err);
void ag__ingest_destroy(ag__ingest *in);
/* Batches stored from now on also go to the cluster state (inventory, events); NULL = none. */
struct ag__state;
void ag__ingest_set_state(ag__ingest *in, struct ag__state *st);
/* Decodes, dedupes on (node, boot id, seq) and durably appends one wire batch. */
void ag__ingest_push(ag__ingest *in, const ag__req *req, ag__resp *resp);

/* ---- bulk import (ag_import.c) ----------------------------------------------------------------- */

typedef struct ag__importer ag__importer;  /* server-wide: store, token, policy */
typedef struct ag__import ag__import;      /* one streamed POST /api/v1/import/prometheus */

int ag__importer_create(ts_db *db, ag__metrics *m, ag__auth *auth, int allow_unauth, ag__importer **out,
			cm_err *err);
void ag__importer_destroy(ag__importer *imp);
/* Starts an import request (authorization is the header or NULL); NULL when out of memory. */
ag__import *ag__import_begin(ag__importer *imp, const char *authorization);
/* Takes the next piece of the body, as it arrives; lines may be split anywhere. */
void ag__import_feed(ag__import *im, const char *p, size_t n);
/* Stores what is pending and answers: 204, 400 (lines skipped), 401 or 503. */
void ag__import_end(ag__import *im, ag__resp *resp);
void ag__import_free(ag__import *im);
/* POST /api/v1/admin/flush. */
void ag__import_flush(ag__importer *imp, const ag__req *req, ag__resp *resp);
/* The line parser, exposed for the fuzzer: splits `series value [ts]` (key_len = series text length,
 * not checked here); ag__prom_series_parse checks the series text and parses it into labels (strings
 * unescaped into buf, at least n + 16 bytes). */
int ag__prom_line_split(const char *p, size_t n, int64_t now_ms, size_t *key_len, cm_sample *out, cm_err *err);
int ag__prom_series_parse(const char *p, size_t n, cm_label *labels, size_t max, size_t *nlabels, char *buf,
			  cm_err *err);

/* ---- selectors (ag_promql.c) -------------------------------------------------------------------- */

typedef struct ag__selector {
	ts_matcher *matchers;
	size_t nmatchers;
} ag__selector;

/* Parses `metric{label="v", l2=~"re", ...}` (or `{__name__="m", ...}`) into compiled matchers
 * allocated from the arena. Anything else is CM_EPROTO with a message in err. */
int ag__selector_parse(const char *q, cm_arena *a, ag__selector *out, cm_err *err);
void ag__selector_close(ag__selector *s);

#include "ag_pql.h" /* the PromQL parser and evaluator */

/* ---- Prometheus API (ag_api.c) ------------------------------------------------------------------ */

typedef struct ag__api {
	ts_db *db;
	ag__metrics *metrics;
	int64_t lookback_ms;
	atomic_int active_queries;   /* PromQL queries running (ag_api.c) */
	int max_queries;             /* 0 = 20 */
	int64_t query_timeout_ms;    /* 0 = 2 min */
	uint64_t max_samples;        /* 0 = 50,000,000 */
	int64_t query_wait_ms;       /* how long a query waits for a place; 0 = 5 s */
} ag__api;

void ag__api_query(ag__api *api, const ag__req *req, ag__resp *resp);
void ag__api_query_range(ag__api *api, const ag__req *req, ag__resp *resp);
/* Prometheus' JSON timestamp: seconds with up to three decimals, trailing zeros dropped. */
int ag__put_json_time(cm_buf *b, int64_t t_ms);

/* ---- Prometheus API: labels, series, metadata, status, exemplars, /federate (ag_papi.c) ---------- */

typedef struct ag__papi {
	ts_db *db;
	ag__metrics *metrics;
	const ag_config *cfg;  /* for status/flags and status/runtimeinfo */
	int64_t lookback_ms;
} ag__papi;

/* Answers /api/v1/labels, /api/v1/label/<name>/values, /api/v1/series, /api/v1/metadata,
 * /api/v1/status/{buildinfo,runtimeinfo,flags}, /api/v1/query_exemplars and /federate. */
void ag__papi_handle(const ag__papi *p, const ag__req *req, ag__resp *resp);
/* The limit parameter: absent or "" is 0 (no limit), else decimal digits; CM_EINVAL otherwise. */
int ag__papi_limit(const char *s, size_t *out);
/* <name> of /api/v1/label/<name>/values (arena copy), NULL for any other path. */
const char *ag__papi_label_from_path(const char *url, cm_arena *a);
/* Go's strconv.FormatFloat(v, 'g', -1, 64): the sample values of the text exposition format. */
size_t ag__fmt_go_g(char *out, size_t cap, double v);

/* ---- Loki API over the log store (ag_loki.c) -------------------------------------------------------- */

typedef struct ag__loki ag__loki;

/* dir: the log store's directory; auth: the push tokens pushes must carry (outlives l); push_url: a Loki
 * push URL every stored line is forwarded to (NULL = none; CORRAL_LOKI_PUSH_TOKEN = its bearer token). */
int ag__loki_create(const char *dir, ag__auth *auth, const char *push_url, ag__loki **out, cm_err *err);
/* Durable append (dedupe on origin/seq, see ls_store_append) and forwarding: the hook for ingest. */
int ag__loki_append(ag__loki *l, const char *origin, uint64_t seq, const ls_push_stream *st, size_t n, cm_err *err);
/* Prometheus text of the log store and forwarder counters (l may be NULL). */
int ag__loki_metrics(ag__loki *l, cm_buf *out);
void ag__loki_destroy(ag__loki *l);
ls_store *ag__loki_store(ag__loki *l);
void ag__loki_push(ag__loki *l, const ag__req *req, ag__resp *resp);
void ag__loki_query(ag__loki *l, const ag__req *req, ag__resp *resp);
void ag__loki_query_range(ag__loki *l, const ag__req *req, ag__resp *resp);
void ag__loki_labels(ag__loki *l, const ag__req *req, ag__resp *resp);
/* /loki/api/v1/label/<name>/values */
void ag__loki_label_values(ag__loki *l, const ag__req *req, ag__resp *resp);
void ag__loki_series(ag__loki *l, const ag__req *req, ag__resp *resp);
void ag__loki_index_stats(ag__loki *l, const ag__req *req, ag__resp *resp);
/* /loki/api/v1/tail: a WebSocket that streams new entries of a log query. */
void ag__loki_tail(ag__loki *l, const ag__req *req, ag__resp *resp);
/* Ends every tail and waits for them (before the HTTP server stops). */
void ag__loki_stop_tails(ag__loki *l);
/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455), base64 of 20 bytes. */
int ag__ws_accept(const char *key, char out[32]);
/* Push body decoders (exposed for the fuzzer): streams built in the arena, labels not yet checked. */
int ag__loki_decode_json(const uint8_t *body, size_t n, cm_arena *a, ls_push_stream **out, size_t *nout,
			 cm_err *err);
int ag__loki_decode_proto(const uint8_t *body, size_t n, cm_arena *a, ls_push_stream **out, size_t *nout,
			  cm_err *err);

/* ---- service registry (ag_services.c) and cluster DNS (ag_dns.c) --------------------------------- */

typedef struct ag__services ag__services;

/* One pod of a node's inventory, as the inventory hook takes it (strings are copied). */
typedef struct ag__pod {
	const char *ns, *name, *ip, *hostname;  /* hostname may be NULL */
	int ready;                              /* running and ready */
	const cm_label *labels;
	size_t nlabels;
} ag__pod;

/* db_path: sqlite file (table dns_registry); file: --services FILE|DIR or NULL. */
int ag__services_create(const char *db_path, const char *file, ag__services **out, cm_err *err);
void ag__services_destroy(ag__services *r);
/* Reloads the manifest if it changed: 1 reloaded, 0 unchanged, negative when it is broken. */
int ag__services_reload_file(ag__services *r, cm_err *err);
/* GET (list with endpoints), POST/PUT (Service, EndpointSlice or List JSON), DELETE ?namespace=&name= */
void ag__services_handle(ag__services *r, const ag__req *req, ag__resp *resp);
/* Inventory hook: the pods one node reports now replace what it reported before. */
int ag__services_set_node_pods(ag__services *r, const char *node, const ag__pod *pods, size_t n, int64_t now_ms);
struct json_t; /* jansson's json_t */
/* The Kubernetes API's Services and EndpointSlices (a "List" of them, not taken) replace its previous ones
 * at once; on error (an item that is not one of them) the previous ones stay. */
int ag__services_replace_kube(ag__services *r, struct json_t *list, cm_err *err);

/* ---- the Kubernetes API as a service source (ag_kube.c) ------------------------------------------ */

typedef struct ag__kube ag__kube;
/* *out is NULL when the source is off (no --kube-api and not in a pod). */
int ag__kube_start(const ag_config *cfg, ag__services *reg, ag__kube **out, cm_err *err);
void ag__kube_stop(ag__kube *k);
/* corral_kube_* on /metrics (nothing when k is NULL). */
int ag__kube_metrics(ag__kube *k, cm_buf *out);
/* A list page's metadata. */
typedef struct ag__kube_page {
	char rv[128];    /* resourceVersion */
	char cont[4096]; /* continue: "" on the last page */
} ag__kube_page;
/* The items of a <kind>List page (kind "Service" or "EndpointSlice"), each given that kind, into the JSON
 * object items keyed "namespace/name", and its metadata into page; CM_EPROTO for anything else.
 * Exposed for the fuzzer, as is the next one. */
int ag__kube_parse_list(const char *body, size_t len, const char *kind, struct json_t *items, ag__kube_page *page,
                        cm_err *err);
/* Applies one watch event line to items (as ag__kube_parse_list keys them), and takes its object's
 * resourceVersion into rv: 1 when items changed, 0 when not (BOOKMARK, deleting what is not there),
 * CM_AGAIN for an ERROR event with code 410 (list again), other negative codes for other ERROR events
 * and for lines that are not watch events. */
int ag__kube_apply_event(struct json_t *items, const char *kind, const char *line, size_t len, char *rv, size_t rvcap,
                         cm_err *err);

/* ---- cluster state: inventory and events from the agents (ag_state.c) ------------------------------ */

typedef struct ag__state ag__state;

#define AG__NODE_GRACE_MS 30000 /* --node-grace when a config leaves it 0 */

/* db_path: sqlite file (tables state_nodes, state_events); services: the inventory hook's target or NULL;
 * grace_ms: a node last seen longer ago than this is listed "ready": false. */
int ag__state_create(const char *db_path, ag__services *services, int64_t grace_ms, ag__state **out,
		     cm_err *err);
/* Waits for the queued writes, then closes. */
void ag__state_destroy(ag__state *st);
/* A durably stored batch: its inventory and events are queued for the writer (never blocks on sqlite). */
void ag__state_record(ag__state *st, const cm_batch *b);
void ag__state_stats(ag__state *st, uint64_t *dropped, uint64_t *errors);
/* GET /api/v1/inventory and GET /api/v1/events (parameters at the top of ag_state.c). */
void ag__state_inventory(ag__state *st, const ag__req *req, ag__resp *resp);
void ag__state_events(ag__state *st, const ag__req *req, ag__resp *resp);
/* A batch from node arrived: it is alive (an expired node's pods are endpoints again). */
void ag__services_touch_node(ag__services *r, const char *node, int64_t now_ms);
/* Takes the pods of nodes not heard from within grace_ms out of the endpoints (forgets them after a
 * day of silence). */
void ag__services_expire_nodes(ag__services *r, int64_t now_ms, int64_t grace_ms);
uint64_t ag__services_version(ag__services *r);
/* The merged registry as dnsd's model, every string copied into the arena. */
int ag__services_model(ag__services *r, cm_arena *a, dn_service **out, size_t *n);

typedef struct ag__dns ag__dns;
/* *out is NULL when DNS is off (or the default address was taken). */
int ag__dns_start(const ag_config *cfg, ag__services *reg, ag__dns **out, cm_err *err);
void ag__dns_stop(ag__dns *d);
int ag__dns_metrics(ag__dns *d, cm_buf *out);
/* The address the DNS server answers on, loopback when it listens on a wildcard; CM_ENOENT when off. */
int ag__dns_addr(const ag__dns *d, const ag_config *cfg, struct sockaddr_storage *out);

/* ---- web UI and the DNS resolve box (ag_ui.c, ag_resolve.c) -------------------------------------- */

/* The directory /ui/ serves: --ui-dir, else "ui" next to the executable; "" when there is none. */
void ag__ui_dir(const ag_config *cfg, char *out, size_t cap);
/* GET /ui/<path> from dir (index.html for /ui/); GET /ui redirects to /ui/. */
void ag__ui_serve(const char *dir, const ag__req *req, ag__resp *resp);
/* GET /api/v1/dns/resolve?name=&type=: one UDP query to the aggregator's own DNS server. */
void ag__resolve(ag__dns *d, const ag_config *cfg, const ag__req *req, ag__resp *resp);
/* A DNS response packet as the resolve endpoint's JSON data object (exposed for the fuzzer). */
int ag__dns_reply_json(const uint8_t *pkt, size_t len, cm_buf *out);

/* ---- remote write 1.0: receiver (ag_rw.c) and sender (ag_rwsend.c) ------------------------------- */

typedef struct ag__rwsend ag__rwsend;

typedef struct ag__rwsend_opts {
	const char *const *urls;  /* receivers, each with its own queue */
	size_t nurls;
	const char *token;        /* bearer token sent to every URL ("" = none); copied */
	long shards;              /* parallel senders per URL; a series always goes to the same one */
	long max_samples;         /* samples per request */
	int64_t max_wait_ms;      /* how long a shard waits to fill a request */
	uint64_t max_queue_bytes; /* per URL, on disk; past it the oldest unsent segment is dropped */
} ag__rwsend_opts;

/* dir: the queues' directory (created); replays what the last run left unsent. */
int ag__rwsend_create(const char *dir, const ag__rwsend_opts *o, ag__rwsend **out, cm_err *err);
/* Stops the senders (an in-flight request is abandoned and resent on the next start). */
void ag__rwsend_destroy(ag__rwsend *s);
/* Queues durably stored samples for every URL (s may be NULL: then nothing). Never blocks on the network. */
void ag__rwsend_enqueue(ag__rwsend *s, const cm_series *series, size_t n);
/* The same for series given as exposition text `name{l="v",...}` (bulk import), with their samples. */
void ag__rwsend_enqueue_text(ag__rwsend *s, const char *const *keys, const size_t *key_lens,
			     const cm_sample *const *samples, const size_t *nsamples, size_t n);
int ag__rwsend_metrics(ag__rwsend *s, cm_buf *out);
/* Samples stored from now on are also queued for remote write (NULL = none): the ingest hooks. */
void ag__ingest_set_forward(ag__ingest *in, ag__rwsend *fwd);
void ag__importer_set_forward(ag__importer *imp, ag__rwsend *fwd);

typedef struct ag__rw ag__rw;

/* auth: the push tokens (outlives rw); fwd: where stored samples go (or NULL). */
int ag__rw_create(ts_db *db, ag__auth *auth, ag__rwsend *fwd, ag__rw **out, cm_err *err);
void ag__rw_destroy(ag__rw *rw);
/* POST /api/v1/write: 204 once durable; 400 bad data, 401/403 token, 413 too large, 415, 503 store. */
void ag__rw_write(ag__rw *rw, const ag__req *req, ag__resp *resp);
int ag__rw_metrics(ag__rw *rw, cm_buf *out);
/* Decodes a snappy-compressed WriteRequest into series in the arena, labels checked (exposed for the
 * fuzzer). CM_E2BIG past the size limits, CM_EPROTO for anything malformed, err says what. */
int ag__rw_decode(const uint8_t *body, size_t n, cm_arena *a, cm_series **out, size_t *nout, cm_err *err);


/* ---- capacity and utilization reports (ag_quantity.c, ag_capacity.c, ag_capacity_report.c) -------- */

/* A Kubernetes quantity ("500m", "512Mi", "2e3") to a number; grammar atop ag_quantity.c. */
int ag__quantity_parse(const char *s, double *out, cm_err *err);
/* The same for a size: negative is an error too; messages start with what ("cpu", "memory"). */
int ag__quantity_size(const char *what, const char *s, double *out, cm_err *err);

typedef struct ag__capacity ag__capacity;

typedef struct ag__capacity_opts {
	double reserved_cpu;   /* cores kept from each node's capacity (allocatable = capacity - reserved) */
	double reserved_mem;   /* bytes */
	int64_t max_window_ms; /* the history kept: longer windows are refused */
} ag__capacity_opts;

/* state_db: the sqlite file ag_state.c writes (read through a connection of its own). */
int ag__capacity_create(ts_db *db, const char *state_db, const ag__capacity_opts *o, ag__capacity **out,
			cm_err *err);
void ag__capacity_destroy(ag__capacity *c);
/* GET /api/v1/capacity/{nodes,workloads,fit,summary}: JSON (docs/capacity.md) or format=csv. */
void ag__capacity_nodes(ag__capacity *c, const ag__req *req, ag__resp *resp);
void ag__capacity_workloads(ag__capacity *c, const ag__req *req, ag__resp *resp);
void ag__capacity_fit(ag__capacity *c, const ag__req *req, ag__resp *resp);
void ag__capacity_summary(ag__capacity *c, const ag__req *req, ag__resp *resp);

/* The model the reports share (ag_capacity.c builds it, ag_capacity_report.c renders it). Buckets
 * are [start + i*step, start + (i+1)*step), i < nb; a value is NaN where a bucket has no data. */
typedef struct ag__cap_ctr {
	const char *node, *ns, *pod, *name, *workload;
	double req_cpu, req_mem, lim_cpu, lim_mem; /* 0 = not set */
	int spec_derived;                          /* requests/limits from cgroup settings, not a pod spec */
	double *cpu;                               /* cores per bucket (rate of the usage counter) */
	double *mem;                               /* peak working set bytes per bucket */
	double ooms, throttled;                    /* increases over the window */
} ag__cap_ctr;

typedef struct ag__cap_node {
	const char *name;
	double cap_cpu, cap_mem, alloc_cpu, alloc_mem;
	double req_cpu, req_mem, lim_cpu, lim_mem;
	size_t pods;
	double *cpu, *mem; /* sums of the node's containers per bucket */
} ag__cap_node;

typedef struct ag__cap_model {
	int64_t start_ms, end_ms, step_ms;
	size_t nb;
	ag__cap_node *nodes;
	size_t nnodes;
	ag__cap_ctr *ctrs;
	size_t nctrs;
} ag__cap_model;

/* Builds the model of [end - window, end] into the arena. CM_EINVAL with a message for a window the
 * history does not cover; CM_EIO when the state db cannot be read. */
int ag__cap_model_build(ag__capacity *c, int64_t end_ms, int64_t window_ms, cm_arena *a, ag__cap_model *out,
			cm_err *err);
const ag__capacity_opts *ag__cap_opts(const ag__capacity *c);

#endif
