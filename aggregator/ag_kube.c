/* ag_kube.c -- the Kubernetes API as a service source: Services and EndpointSlices, listed on a worker thread.
 *
 * When --kube-api names an API server (by default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
 * when those are set, as in every pod; "off" never), one thread of its own lists
 *   GET <api>/api/v1/services                          (a v1 ServiceList)
 *   GET <api>/apis/discovery.k8s.io/v1/endpointslices  (a discovery.k8s.io/v1 EndpointSliceList)
 * every --kube-interval, with the service account's token as "Authorization: Bearer" (--kube-token-file,
 * read at start and again whenever the server answers 401, then the request is retried once: projected
 * tokens rotate) and the cluster CA (--kube-ca-file) for https. Only when both lists were read and parsed
 * do their items replace the registry's Kubernetes set, at once (ag__services_replace_kube); any failure
 * (server down, 401 with the re-read token too, another status, bad JSON, a body over 64 MiB) keeps the
 * last good set and logs a warning, rate-limited. The thread never runs on an HTTP or DNS thread; a stop
 * wakes its sleep and aborts a transfer in flight. Polling the lists is a departure from list+watch
 * (docs/design.md): a change is seen within one interval.
 *
 * Bodies are untrusted. ag__kube_parse_list accepts a JSON object whose "kind" is <Kind>List and whose
 * "items" is an array (or null) of objects; each item gets "kind": <Kind> (list items carry none) and
 * the lot goes to the registry as one "List", which keys items Kind/namespace/name and rejects an item
 * without metadata.name. ag_services.c type-checks every field it reads when it builds the DNS model.
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

#define MAX_BODY   (64u << 20)
#define TIMEOUT_MS 10000L

struct ag__kube {
	ag__services *reg;
	char url[512], token_file[PATH_MAX], ca_file[PATH_MAX];
	char auth[4200]; /* "Authorization: Bearer <token>"; never logged */
	int64_t interval_ms;
	CURL *curl;
	cm_buf body;
	pthread_t thread;
	int started, failing;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	cm_ratelimit rl;
};

/* ---- parsing ---------------------------------------------------------------------------------------- */

int ag__kube_parse_list(const char *body, size_t len, const char *kind, struct json_t *items_out, cm_err *err)
{
	json_error_t je;
	char list_kind[64];
	snprintf(list_kind, sizeof(list_kind), "%sList", kind);
	json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je), *items = json_object_get(doc, "items"), *it;
	if (!doc)
		return cm_errf(err, CM_EPROTO, "bad JSON at byte %d: %s", je.position, je.text);
	const char *k = json_string_value(json_object_get(doc, "kind"));
	int rc = k && !strcmp(k, list_kind) && (json_is_array(items) || json_is_null(items))
	             ? CM_OK
	             : cm_errf(err, CM_EPROTO, "not a %s", list_kind);
	size_t i;
	json_array_foreach(rc ? NULL : items, i, it)
	{
		if (!json_is_object(it)) {
			rc = cm_errf(err, CM_EPROTO, "%s: item %zu is not an object", list_kind, i);
			break;
		}
		if (json_object_set_new(it, "kind", json_string(kind)) || json_array_append(items_out, it)) {
			rc = cm_errf(err, CM_ENOMEM, "out of memory");
			break;
		}
	}
	json_decref(doc);
	return rc;
}

/* ---- HTTP ------------------------------------------------------------------------------------------- */

static size_t on_body(char *d, size_t size, size_t n, void *ctx)
{
	cm_buf *b = ctx;
	if (b->len + size * n > MAX_BODY || cm_buf_append(b, d, size * n))
		return 0;
	return size * n;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt, (void)dn, (void)ut, (void)un;
	return atomic_load(&((ag__kube *)ctx)->stop); /* non-zero aborts the transfer */
}

static int load_token(ag__kube *k, cm_err *err)
{
	char token[4096];
	int rc = cm_read_secret(k->token_file, NULL, token, sizeof(token), err);
	if (!rc)
		snprintf(k->auth, sizeof(k->auth), "Authorization: Bearer %s", token);
	memset(token, 0, sizeof(token));
	return rc;
}

/* GETs <api><path> into k->body; *status is the HTTP status. */
static int fetch(ag__kube *k, const char *path, long *status, cm_err *err)
{
	char url[1024];
	struct curl_slist *h = k->auth[0] ? curl_slist_append(NULL, k->auth) : NULL;
	snprintf(url, sizeof(url), "%s%s", k->url, path);
	k->body.len = 0;
	*status = 0;
	curl_easy_setopt(k->curl, CURLOPT_URL, url);
	curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, h);
	CURLcode cc = curl_easy_perform(k->curl);
	if (cc == CURLE_OK)
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, status);
	curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h); /* holds the token */
	return cc == CURLE_OK ? CM_OK : cm_errf(err, CM_EIO, "%s: %s", url, curl_easy_strerror(cc));
}

/* Lists path and appends its items (of kind) to items; a 401 re-reads the token and tries once more. */
static int get_list(ag__kube *k, const char *path, const char *kind, json_t *items, cm_err *err)
{
	long status;
	int rc = fetch(k, path, &status, err);
	if (!rc && status == 401) {
		CM_LOG(CM_LOG_INFO, "kube", "%s%s: 401, re-reading the token from %s", k->url, path, k->token_file);
		rc = load_token(k, err);
		rc = rc ? rc : fetch(k, path, &status, err);
	}
	if (!rc && status != 200)
		rc = cm_errf(err, CM_EIO, "%s%s: HTTP %ld", k->url, path, status);
	return rc ? rc : ag__kube_parse_list((const char *)k->body.data, k->body.len, kind, items, err);
}

/* One round: both lists, then the registry's Kubernetes set is replaced; on failure it is kept. */
static void poll_once(ag__kube *k)
{
	cm_err err = {{0}};
	json_t *items = json_array(), *list = json_pack("{s:s, s:o}", "kind", "List", "items", items);
	int rc = list ? CM_OK : cm_errf(&err, CM_ENOMEM, "out of memory");
	rc = rc ? rc : get_list(k, "/api/v1/services", "Service", items, &err);
	rc = rc ? rc : get_list(k, "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice", items, &err);
	rc = rc ? rc : ag__services_replace_kube(k->reg, list, &err);
	json_decref(list);
	if (rc) {
		CM_LOG_RL(&k->rl, CM_LOG_WARN, "kube", "kubernetes API: %s (keeping the last good services)", err.msg);
	} else if (k->failing) {
		CM_LOG(CM_LOG_INFO, "kube", "kubernetes API %s: read again", k->url);
	}
	k->failing = rc != 0;
}

static void *kube_main(void *arg)
{
	ag__kube *k = arg;
	pthread_mutex_lock(&k->mu);
	while (!atomic_load(&k->stop)) {
		pthread_mutex_unlock(&k->mu);
		poll_once(k);
		pthread_mutex_lock(&k->mu);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		int64_t ns = ts.tv_nsec + (k->interval_ms % 1000) * 1000000;
		ts.tv_sec += (time_t)(k->interval_ms / 1000 + ns / 1000000000), ts.tv_nsec = ns % 1000000000;
		while (!atomic_load(&k->stop) && pthread_cond_timedwait(&k->cv, &k->mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&k->mu);
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

static int kube_init(ag__kube *k, const ag_config *cfg, cm_err *err)
{
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&k->mu, NULL);
	cm_buf_init(&k->body);
	snprintf(k->token_file, sizeof(k->token_file), "%s", cfg->kube_token_file ? cfg->kube_token_file : "");
	snprintf(k->ca_file, sizeof(k->ca_file), "%s", cfg->kube_ca_file ? cfg->kube_ca_file : "");
	k->interval_ms = cfg->kube_interval_ms > 0 ? cfg->kube_interval_ms : 5000;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) || !(k->curl = curl_easy_init()))
		return cm_errf(err, CM_ENOMEM, "cannot start libcurl");
	curl_easy_setopt(k->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k->curl, CURLOPT_TIMEOUT_MS, TIMEOUT_MS);
	curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, &k->body);
	curl_easy_setopt(k->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(k->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(k->curl, CURLOPT_XFERINFODATA, k);
	curl_easy_setopt(k->curl, CURLOPT_ACCEPT_ENCODING, ""); /* gzip when the server offers it */
	if (k->ca_file[0])
		curl_easy_setopt(k->curl, CURLOPT_CAINFO, k->ca_file);
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
	if (!rc && pthread_create(&k->thread, NULL, kube_main, k))
		rc = cm_errf(err, CM_ENOMEM, "cannot start the Kubernetes API reader");
	k->started = !rc;
	if (rc) {
		ag__kube_stop(k);
		return rc;
	}
	CM_LOG(CM_LOG_INFO, "kube", "services and endpointslices from %s every %lld ms", k->url,
	       (long long)k->interval_ms);
	*out = k;
	return CM_OK;
}

void ag__kube_stop(ag__kube *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->mu);
	atomic_store(&k->stop, 1);
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	if (k->started)
		pthread_join(k->thread, NULL);
	if (k->curl) {
		curl_easy_cleanup(k->curl);
		curl_global_cleanup();
	}
	cm_buf_close(&k->body);
	memset(k->auth, 0, sizeof(k->auth));
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mu);
	free(k);
}
