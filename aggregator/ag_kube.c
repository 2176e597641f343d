/* ag_kube.c -- the Kubernetes API as a service source: Services and EndpointSlices by list + watch.
 *
 * When --kube-api names an API server (by default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
 * when those are set, as in every pod; "off" never), two threads of their own, one per resource,
 *   GET <api>/api/v1/services                          (a v1 ServiceList)
 *   GET <api>/apis/discovery.k8s.io/v1/endpointslices  (a discovery.k8s.io/v1 EndpointSliceList)
 * each list their resource in pages (?limit=500, then &continue=<metadata.continue> until a page has
 * none; a 410 on a page, the token having expired, starts the list again), then watch it from the
 * list's metadata.resourceVersion
 *   GET <path>?watch=1&allowWatchBookmarks=true&resourceVersion=RV&timeoutSeconds=300
 * whose body is a stream of lines {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": {...}}: the
 * three changes update that resource's objects, every object's metadata.resourceVersion (bookmarks'
 * too) becomes the one the next watch starts from, and when a watch ends (timeoutSeconds, the server
 * closing it) the next one starts from there: at once, or after --kube-retry when it lasted less than a
 * second (a server or proxy that closes watches at once must not make it spin). "410 Gone" (an HTTP
 * status, or an ERROR event with code 410: the version is too old) forgets the version and the resource
 * is listed again.
 * Requests carry "Authorization: Bearer" with the service account token (--kube-token-file, read at
 * start and again whenever the server answers 401, then the request is retried once: projected tokens
 * rotate) and trust the cluster CA (--kube-ca-file) for https.
 *
 * After every list and every chunk of events that changed something, once both resources have been
 * listed, their objects together replace the registry's Kubernetes set at once
 * (ag__services_replace_kube). A failure (server down, 401 with the re-read token too, another status,
 * bad JSON, a list or an event line over 64 MiB) changes nothing: the registry keeps the last good set,
 * a warning is logged (rate-limited, per resource) and the resource tries again after --kube-retry.
 * Nothing here runs on an HTTP or DNS thread; a stop wakes the sleeps and aborts transfers in flight.
 * k->mu guards the token, both resources' objects and the sleeps.
 *
 * Bodies are untrusted. A list must be a JSON object of kind <Kind>List with "items" an array (or null)
 * of objects that have metadata.name; an event line a JSON object with one of the five types and an
 * object (with metadata.name, except for BOOKMARK and ERROR). Objects are kept keyed "namespace/name"
 * with "kind": <Kind> added (list items and events carry none); ag_services.c type-checks every field it
 * reads when it builds the DNS model.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ag_int.h"

#define MAX_BODY        (64u << 20) /* a list page, or one event line */
#define LIST_LIMIT      500         /* items per list page, as client-go asks */
#define WATCH_S         300         /* timeoutSeconds of a watch */
#define LIST_TIMEOUT_MS 60000L
#define CONNECT_TIMEOUT 10L

typedef struct resource {
	ag__kube *k;
	const char *path, *kind;
	CURL *curl;
	cm_buf body;   /* a list's body, or the unfinished line of a watch stream */
	json_t *items; /* "namespace/name" -> object; under k->mu */
	char rv[128];  /* resourceVersion the next watch starts from; "" = list first */
	int synced;    /* listed at least once (under k->mu) */
	int stream_rc; /* why the write callback stopped a watch */
	cm_err stream_err;
	pthread_t thread;
	int started, failing;
	cm_ratelimit rl;
	const char *metric;                         /* its label on /metrics */
	atomic_uint_fast64_t lists, events, errors; /* successful lists, events applied, failed requests */
	atomic_size_t objects;
} resource;

struct ag__kube {
	ag__services *reg;
	char url[512], token_file[PATH_MAX], ca_file[PATH_MAX];
	char auth[4200]; /* "Authorization: Bearer <token>"; never logged */
	int64_t retry_ms;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	resource res[2];
};

/* ---- parsing ---------------------------------------------------------------------------------------- */

/* "namespace/name" of an object, which is given "kind": kind; CM_EPROTO without metadata.name. */
static int obj_key(json_t *o, const char *kind, char *key, size_t cap, cm_err *err)
{
	json_t *md = json_object_get(o, "metadata");
	const char *ns = json_string_value(json_object_get(md, "namespace"));
	const char *name = json_string_value(json_object_get(md, "name"));
	if (!json_is_object(o) || !name)
		return cm_errf(err, CM_EPROTO, "a %s without metadata.name", kind);
	snprintf(key, cap, "%s/%s", ns ? ns : "", name);
	return json_object_set_new(o, "kind", json_string(kind)) ? cm_errf(err, CM_ENOMEM, "out of memory") : CM_OK;
}

/* metadata.<field> of o into out (unchanged when o has none). */
static int take_meta(json_t *o, const char *field, char *out, size_t cap, cm_err *err)
{
	const char *v = json_string_value(json_object_get(json_object_get(o, "metadata"), field));
	if (v && strlen(v) >= cap)
		return cm_errf(err, CM_EPROTO, "%s longer than %zu bytes", field, cap - 1);
	if (v)
		memcpy(out, v, strlen(v) + 1);
	return CM_OK;
}

int ag__kube_parse_list(const char *body, size_t len, const char *kind, json_t *items_out, ag__kube_page *page,
                        cm_err *err)
{
	json_error_t je;
	char list_kind[64], key[1024];
	snprintf(list_kind, sizeof(list_kind), "%sList", kind);
	json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je), *items = json_object_get(doc, "items"), *it;
	if (!doc)
		return cm_errf(err, CM_EPROTO, "bad JSON at byte %d: %s", je.position, je.text);
	const char *k = json_string_value(json_object_get(doc, "kind"));
	page->cont[0] = 0;
	int rc = k && !strcmp(k, list_kind) && (json_is_array(items) || json_is_null(items))
	             ? take_meta(doc, "resourceVersion", page->rv, sizeof(page->rv), err)
	             : cm_errf(err, CM_EPROTO, "not a %s", list_kind);
	rc = rc ? rc : take_meta(doc, "continue", page->cont, sizeof(page->cont), err);
	size_t i;
	json_array_foreach(rc ? NULL : items, i, it)
	{
		if ((rc = obj_key(it, kind, key, sizeof(key), err)))
			break;
		if (json_object_set(items_out, key, it)) {
			rc = cm_errf(err, CM_ENOMEM, "out of memory");
			break;
		}
	}
	json_decref(doc);
	return rc;
}

/* An ERROR event's Status: CM_AGAIN for 410 Gone, else an error with its message. */
static int watch_error(json_t *st, cm_err *err)
{
	json_int_t code = json_integer_value(json_object_get(st, "code"));
	const char *msg = json_string_value(json_object_get(st, "message"));
	if (code == 410)
		return cm_errf(err, CM_AGAIN, "watch expired (410): %s", msg ? msg : "");
	return cm_errf(err, CM_EIO, "watch error %lld: %s", (long long)code, msg ? msg : "");
}

int ag__kube_apply_event(json_t *items, const char *kind, const char *line, size_t len, char *rv, size_t rvcap,
                         cm_err *err)
{
	static const char *const types[] = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"};
	json_error_t je;
	char key[1024];
	json_t *ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je), *o = json_object_get(ev, "object");
	const char *type = json_string_value(json_object_get(ev, "type"));
	int t = 0, rc;
	while (type && t < 5 && strcmp(type, types[t]))
		t++;
	if (!ev)
		rc = cm_errf(err, CM_EPROTO, "bad watch event at byte %d: %s", je.position, je.text);
	else if (!type || t == 5 || !json_is_object(o))
		rc = cm_errf(err, CM_EPROTO, "not a watch event (type %s)", type ? type : "?");
	else if (t == 4)
		rc = watch_error(o, err);
	else
		rc = take_meta(o, "resourceVersion", rv, rvcap, err);
	if (!rc && t < 3)
		rc = obj_key(o, kind, key, sizeof(key), err);
	if (!rc && t < 3)
		rc = t == 2 ? (json_object_del(items, key) ? 0 : 1) : json_object_set(items, key, o) ? CM_ENOMEM : 1;
	json_decref(ev);
	return rc;
}

/* ---- publishing ------------------------------------------------------------------------------------- */

/* Both resources' objects replace the registry's Kubernetes set; called with k->mu held. */
static void publish(ag__kube *k, resource *r)
{
	if (!k->res[0].synced || !k->res[1].synced)
		return;
	cm_err err = {{0}};
	json_t *items = json_array(), *list = json_pack("{s:s, s:o}", "kind", "List", "items", items), *o;
	const char *key;
	int oom = !list;
	for (int i = 0; !oom && i < 2; i++)
		json_object_foreach(k->res[i].items, key, o) oom |= json_array_append(items, o) != 0;
	if (oom || ag__services_replace_kube(k->reg, list, &err)) /* never a partial set */
		CM_LOG_RL(&r->rl, CM_LOG_WARN, "kube", "kubernetes API: %s", err.msg[0] ? err.msg : "out of memory");
	json_decref(list);
}

/* ---- HTTP ------------------------------------------------------------------------------------------- */

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	return atomic_load(&((resource *)ctx)->k->stop); /* non-zero aborts the transfer */
}

static size_t on_list(char *d, size_t size, size_t n, void *ctx)
{
	cm_buf *b = &((resource *)ctx)->body;
	return b->len + size * n > MAX_BODY || cm_buf_append(b, d, size * n) ? 0 : size * n;
}

/* Applies every complete line of r->body; the rest stays for the next chunk. */
static int apply_lines(resource *r)
{
	ag__kube *k = r->k;
	size_t off = 0;
	int rc = CM_OK, changed = 0;
	pthread_mutex_lock(&k->mu);
	for (char *nl; !rc && (nl = memchr(r->body.data + off, '\n', r->body.len - off));) {
		size_t len = (size_t)(nl - (char *)r->body.data) - off;
		rc = len ? ag__kube_apply_event(r->items, r->kind, (char *)r->body.data + off, len, r->rv,
		                                sizeof(r->rv), &r->stream_err)
		         : 0;
		changed |= rc > 0;
		if (rc >= 0)
			atomic_fetch_add(&r->events, 1);
		rc = rc > 0 ? CM_OK : rc;
		off += len + 1;
	}
	if (changed)
		publish(k, r);
	atomic_store(&r->objects, json_object_size(r->items));
	pthread_mutex_unlock(&k->mu);
	memmove(r->body.data, r->body.data + off, r->body.len - off);
	r->body.len -= off;
	return rc;
}

static size_t on_stream(char *d, size_t size, size_t n, void *ctx)
{
	resource *r = ctx;
	long status = 0;
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
	if (r->body.len + size * n > MAX_BODY || cm_buf_append(&r->body, d, size * n)) {
		r->stream_rc = cm_errf(&r->stream_err, CM_E2BIG, "a watch event over %u bytes", MAX_BODY);
		return 0;
	}
	if (status == 200 && (r->stream_rc = apply_lines(r)))
		return 0;
	return size * n;
}

static int load_token(ag__kube *k, cm_err *err)
{
	char token[4096];
	int rc = cm_read_secret(k->token_file, NULL, token, sizeof(token), err);
	pthread_mutex_lock(&k->mu);
	if (!rc)
		snprintf(k->auth, sizeof(k->auth), "Authorization: Bearer %s", token);
	pthread_mutex_unlock(&k->mu);
	memset(token, 0, sizeof(token));
	return rc;
}

/* GETs <api><path><query> (a list, or a watch when watch is set); *status is the HTTP status. */
static int fetch(resource *r, const char *query, int watch, long *status, cm_err *err)
{
	ag__kube *k = r->k;
	char url[sizeof(k->url) + 128 + 3 * sizeof(((ag__kube_page *)0)->cont)]; /* a relist query at most */
	if ((size_t)snprintf(url, sizeof(url), "%s%s%s", k->url, r->path, query) >= sizeof(url))
		return cm_errf(err, CM_E2BIG, "%s%s: request URL too long", k->url, r->path);
	pthread_mutex_lock(&k->mu);
	struct curl_slist *h = k->auth[0] ? curl_slist_append(NULL, k->auth) : NULL;
	pthread_mutex_unlock(&k->mu);
	r->body.len = 0, r->stream_rc = 0, *status = 0;
	curl_easy_setopt(r->curl, CURLOPT_URL, url);
	curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, watch ? on_stream : on_list);
	curl_easy_setopt(r->curl, CURLOPT_TIMEOUT_MS, watch ? (WATCH_S + 30) * 1000L : LIST_TIMEOUT_MS);
	CURLcode cc = curl_easy_perform(r->curl);
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, status);
	curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h); /* holds the token */
	if (r->stream_rc) {
		*err = r->stream_err;
		return r->stream_rc;
	}
	return cc == CURLE_OK ? CM_OK : cm_errf(err, CM_EIO, "%s: %s", url, curl_easy_strerror(cc));
}

/* fetch, and on 401 the token is read again and the request made once more; CM_AGAIN for 410. */
static int request(resource *r, const char *query, int watch, cm_err *err)
{
	long status;
	int rc = fetch(r, query, watch, &status, err);
	if (!rc && status == 401) {
		CM_LOG(CM_LOG_INFO, "kube", "%s%s: 401, re-reading the token from %s", r->k->url, r->path,
		       r->k->token_file);
		rc = load_token(r->k, err);
		rc = rc ? rc : fetch(r, query, watch, &status, err);
	}
	if (!rc && status == 410)
		return cm_errf(err, CM_AGAIN, "%s%s: 410 Gone", r->k->url, r->path);
	if (!rc && status != 200)
		rc = cm_errf(err, CM_EIO, "%s%s: HTTP %ld", r->k->url, r->path, status);
	return rc;
}

/* Lists the resource, page by page: its objects are replaced whole and published. */
static int relist(resource *r, cm_err *err)
{
	ag__kube_page pg = {.rv = ""};
	char query[sizeof(pg.cont) * 3 + 64];
	json_t *items = json_object();
	int rc = items ? CM_OK : CM_ENOMEM;
	snprintf(query, sizeof(query), "?limit=%d", LIST_LIMIT);
	do {
		rc = rc ? rc : request(r, query, 0, err);
		rc = rc ? rc : ag__kube_parse_list((const char *)r->body.data, r->body.len, r->kind, items, &pg, err);
		char *e = !rc && pg.cont[0] ? curl_easy_escape(r->curl, pg.cont, 0) : NULL;
		if (e)
			snprintf(query, sizeof(query), "?limit=%d&continue=%s", LIST_LIMIT, e);
		curl_free(e);
	} while (!rc && pg.cont[0]);
	if (rc) {
		json_decref(items);
		return rc;
	}
	const char *rv = pg.rv;
	pthread_mutex_lock(&r->k->mu);
	json_decref(r->items);
	r->items = items;
	snprintf(r->rv, sizeof(r->rv), "%s", rv);
	r->synced = 1;
	publish(r->k, r);
	pthread_mutex_unlock(&r->k->mu);
	atomic_fetch_add(&r->lists, 1);
	atomic_store(&r->objects, json_object_size(items));
	CM_LOG(CM_LOG_DEBUG, "kube", "%s: %zu listed at resourceVersion %s", r->path, json_object_size(items), rv);
	return CM_OK;
}

static int watch(resource *r, cm_err *err)
{
	char query[3 * sizeof(r->rv) + 96], *e = curl_easy_escape(r->curl, r->rv, 0);
	snprintf(query, sizeof(query), "?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d",
	         e ? e : "", WATCH_S);
	curl_free(e);
	int rc = request(r, query, 1, err);
	/* too old (410), or an event that cannot be applied (the same one would come again from this
	 * version): list again */
	if (rc == CM_AGAIN || rc == CM_EPROTO || rc == CM_E2BIG)
		r->rv[0] = 0;
	return rc;
}

/* ---- the threads ------------------------------------------------------------------------------------ */

static void sleep_retry(ag__kube *k)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (k->retry_ms % 1000) * 1000000;
	ts.tv_sec += (time_t)(k->retry_ms / 1000 + ns / 1000000000), ts.tv_nsec = ns % 1000000000;
	pthread_mutex_lock(&k->mu);
	while (!atomic_load(&k->stop) && pthread_cond_timedwait(&k->cv, &k->mu, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&k->mu);
}

static void *resource_main(void *arg)
{
	resource *r = arg;
	while (!atomic_load(&r->k->stop)) {
		cm_err err = {{0}};
		int watching = r->rv[0] != 0;
		int64_t t0 = cm_now_ms();
		int rc = watching ? watch(r, &err) : relist(r, &err);
		if (atomic_load(&r->k->stop))
			break;
		int failed = rc && rc != CM_AGAIN;
		if (rc == CM_AGAIN) {
			CM_LOG(CM_LOG_INFO, "kube", "%s; listing %s again", err.msg, r->path);
		} else if (failed) {
			atomic_fetch_add(&r->errors, 1);
			CM_LOG_RL(&r->rl, CM_LOG_WARN, "kube", "kubernetes API: %s (keeping the last good services)",
			          err.msg);
		} else if (r->failing) {
			CM_LOG(CM_LOG_INFO, "kube", "kubernetes API %s%s: read again", r->k->url, r->path);
		}
		r->failing = failed;
		/* after a list: watch at once; a watch that ended within a second, or a 410 that came within a
		 * second, waits too, so that a server or proxy that closes watches (or expires lists) at once
		 * cannot make this spin */
		if (failed || ((watching || rc == CM_AGAIN) && cm_now_ms() - t0 < 1000))
			sleep_retry(r->k);
	}
	return NULL;
}

/* ---- start and stop --------------------------------------------------------------------------------- */

/* The API's base URL into out (no trailing '/'); 0 when the source is off. */
static int api_url(const ag_config *cfg, char *out, size_t cap)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
	if (cfg->kube_api)
		snprintf(out, cap, "%s", strcmp(cfg->kube_api, "off") ? cfg->kube_api : "");
	else if (host && *host && port && *port)
		snprintf(out, cap, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
	else
		out[0] = 0;
	size_t n = strlen(out);
	while (n && out[n - 1] == '/')
		out[--n] = 0;
	return n != 0;
}

static int resource_init(ag__kube *k, resource *r, const char *path, const char *kind, const char *metric)
{
	*r = (resource){
	    .k = k, .path = path, .kind = kind, .metric = metric, .items = json_object(), .curl = curl_easy_init()};
	cm_buf_init(&r->body);
	if (!r->items || !r->curl)
		return CM_ENOMEM;
	curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT);
	curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(r->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(r->curl, CURLOPT_XFERINFODATA, r);
	curl_easy_setopt(r->curl, CURLOPT_ACCEPT_ENCODING, ""); /* gzip when the server offers it */
	if (k->ca_file[0])
		curl_easy_setopt(r->curl, CURLOPT_CAINFO, k->ca_file);
	return CM_OK;
}

static int kube_init(ag__kube *k, const ag_config *cfg, cm_err *err)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&k->mu, NULL);
	snprintf(k->token_file, sizeof(k->token_file), "%s", cfg->kube_token_file ? cfg->kube_token_file : "");
	snprintf(k->ca_file, sizeof(k->ca_file), "%s", cfg->kube_ca_file ? cfg->kube_ca_file : "");
	k->retry_ms = cfg->kube_retry_ms > 0 ? cfg->kube_retry_ms : 5000;
	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		return cm_errf(err, CM_ENOMEM, "cannot start libcurl");
	if (resource_init(k, &k->res[0], "/api/v1/services", "Service", "services") ||
	    resource_init(k, &k->res[1], "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", "endpointslices"))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	return CM_OK;
}

int ag__kube_start(const ag_config *cfg, ag__services *reg, ag__kube **out, cm_err *err)
{
	char url[512];
	*out = NULL;
	if (!api_url(cfg, url, sizeof(url)))
		return CM_OK;
	ag__kube *k = calloc(1, sizeof(*k));
	if (!k)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(k->url, sizeof(k->url), "%s", url);
	k->reg = reg;
	int rc = kube_init(k, cfg, err);
	if (!rc && load_token(k, err)) /* not fatal: it is read again on the first 401 */
		CM_LOG(CM_LOG_WARN, "kube", "%s; asking the API without a token", err->msg);
	for (int i = 0; !rc && i < 2; i++) {
		if (pthread_create(&k->res[i].thread, NULL, resource_main, &k->res[i]))
			rc = cm_errf(err, CM_ENOMEM, "cannot start the Kubernetes API readers");
		k->res[i].started = !rc;
	}
	if (rc) {
		ag__kube_stop(k);
		return rc;
	}
	CM_LOG(CM_LOG_INFO, "kube", "services and endpointslices from %s (list + watch)", k->url);
	*out = k;
	return CM_OK;
}

int ag__kube_metrics(ag__kube *k, cm_buf *b)
{
	static const char *const names[] = {"corral_kube_objects", "corral_kube_lists_total",
	                                    "corral_kube_watch_events_total", "corral_kube_errors_total"};
	static const char *const help[] = {
	    "objects held from the Kubernetes API", "successful lists (the first, and one per 410 Gone)",
	    "watch events applied (bookmarks included)", "failed lists and watches (the last good objects were kept)"};
	int rc = CM_OK;
	for (int m = 0; k && !rc && m < 4; m++) {
		rc = cm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", names[m], help[m], names[m],
		                   m ? "counter" : "gauge");
		for (int i = 0; !rc && i < 2; i++) {
			resource *r = &k->res[i];
			uint64_t v = m == 0   ? atomic_load(&r->objects)
			             : m == 1 ? atomic_load(&r->lists)
			             : m == 2 ? atomic_load(&r->events)
			                      : atomic_load(&r->errors);
			rc = cm_buf_printf(b, "%s{resource=\"%s\"} %llu\n", names[m], r->metric, (unsigned long long)v);
		}
	}
	return rc;
}

void ag__kube_stop(ag__kube *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	atomic_store(&k->stop, 1);
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
	for (int i = 0; i < 2; i++) {
		resource *r = &k->res[i];
		if (r->started)
			pthread_join(r->thread, NULL);
		if (r->curl)
			curl_easy_cleanup(r->curl);
		cm_buf_close(&r->body);
		json_decref(r->items);
	}
	if (k->res[0].k) /* kube_init got as far as curl_global_init */
		curl_global_cleanup();
	memset(k->auth, 0, sizeof(k->auth));
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mu);
	free(k);
}
