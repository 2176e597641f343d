/* na_sender.c -- ships wire frames to the aggregator in order, one at a time, with retry and backoff.
 *
 * Frames wait in the spool (na_spool.c: on disk under --state-dir, else in memory), which also
 * bounds them and drops the oldest. The oldest frame is read and POSTed to
 * <aggregator>/api/v1/agent/push on a libuv worker thread with one reused libcurl handle (so the
 * connection is kept alive); the loop thread never blocks. 200 removes the frame from the spool; 400
 * or 413 means the aggregator will never take it, so it is removed and counted as rejected; anything
 * else (no connection, 401, 5xx) keeps it and retries after an exponential backoff with jitter (0.5 s
 * doubling to 30 s). na__sender_kick is called after each put and wakes an idle sender. After a 401 or
 * 403 the worker re-reads --token-file before the next attempt (a rotated token, no restart needed).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "na_int.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

struct na__sender {
	uv_loop_t *loop;
	CURL *curl;
	struct curl_slist *headers;
	char *url;
	char *token_file;  /* re-read after a 401/403 (NULL: the token came from the environment) */
	int reauth;        /* set by the loop after a 401/403, cleared by the worker */
	na__spool *spool;
	na__sender_stats stats;
	uv_work_t work;
	uv_timer_t retry;
	int inflight, closing, handles_open;
	int64_t backoff_ms;
	unsigned seed;
	/* the last attempt, written by the worker */
	cm_buf body;  /* the frame read back from the spool */
	uint64_t seq;
	int have;     /* the spool had a frame */
	CURLcode cc;
	long status;
	char curl_err[CURL_ERROR_SIZE];
	cm_buf reply;
	cm_ratelimit rl;
	void (*done)(void *);
	void *done_arg;
	void (*on_sent)(void *); /* a batch left the spool */
	void *on_sent_arg;
};

static void kick(na__sender *s);

static size_t on_reply(char *p, size_t size, size_t n, void *ctx)
{
	cm_buf *b = ctx;
	if (b->len < 512)
		cm_buf_append(b, p, size * n < 512 ? size * n : 512);
	return size * n;
}

static struct curl_slist *make_headers(const char *auth)
{
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/x-corral-batch");
	h = curl_slist_append(h, auth);
	return curl_slist_append(h, "Expect:");
}

/* Worker: a new Authorization header from --token-file; the old one stays when the file is unusable. */
static void reload_token(na__sender *s)
{
	char token[1024], auth[1100];
	cm_err err = {{0}};
	if (cm_read_secret(s->token_file, NULL, token, sizeof(token), &err)) {
		CM_LOG_RL(&s->rl, CM_LOG_WARN, "agent", "%s", err.msg);
		return;
	}
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	struct curl_slist *h = make_headers(auth);
	memset(token, 0, sizeof(token));
	memset(auth, 0, sizeof(auth));
	if (!h)
		return;
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, h);
	curl_slist_free_all(s->headers);
	s->headers = h;
}

int na__sender_create(uv_loop_t *loop, const char *base_url, const char *token, na__spool *spool,
		      na__sender **out, cm_err *err)
{
	na__sender *s = calloc(1, sizeof(*s));
	cm_buf auth;
	cm_buf_init(&auth);
	if (!s || !(s->curl = curl_easy_init()) || cm_buf_printf(&auth, "Authorization: Bearer %s", token) ||
	    !(s->url = malloc(strlen(base_url) + 32))) {
		na__sender_free(s);
		cm_buf_close(&auth);
		return cm_errf(err, CM_ENOMEM, "cannot set up the HTTP client");
	}
	sprintf(s->url, "%s/api/v1/agent/push", base_url);
	s->headers = make_headers((char *)auth.data);
	memset(auth.data, 0, auth.len);
	cm_buf_close(&auth);
	curl_easy_setopt(s->curl, CURLOPT_URL, s->url);
	curl_easy_setopt(s->curl, CURLOPT_HTTPHEADER, s->headers);
	curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(s->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(s->curl, CURLOPT_ERRORBUFFER, s->curl_err);
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &s->reply);
	s->loop = loop;
	s->spool = spool;
	s->backoff_ms = BACKOFF_MIN_MS;
	s->seed = (unsigned)cm_mono_ns();
	uv_timer_init(loop, &s->retry);
	s->retry.data = s;
	s->handles_open = 1;
	*out = s;
	return CM_OK;
}

int na__sender_config(na__sender *s, const char *ca_file, const char *token_file, cm_err *err)
{
	if (token_file && *token_file && !(s->token_file = strdup(token_file)))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	if (curl_easy_setopt(s->curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
		return cm_errf(err, CM_EINVAL, "libcurl refuses to limit protocols to http and https");
	if (!ca_file || !*ca_file)
		return CM_OK;
	if (strncmp(s->url, "https://", 8))
		return cm_errf(err, CM_EINVAL, "--ca-file needs an https:// --aggregator");
	if (access(ca_file, R_OK))
		return cm_errf(err, -errno, "cannot read --ca-file %s: %s", ca_file, strerror(errno));
	if (curl_easy_setopt(s->curl, CURLOPT_CAINFO, ca_file) != CURLE_OK)
		return cm_errf(err, CM_EINVAL, "libcurl has no TLS support for --ca-file");
	return CM_OK;
}

void na__sender_free(na__sender *s)
{
	if (!s)
		return;
	if (s->curl)
		curl_easy_cleanup(s->curl);
	curl_slist_free_all(s->headers); /* holds the token: freed, not logged */
	cm_buf_close(&s->reply);
	cm_buf_close(&s->body);
	free(s->url);
	free(s->token_file);
	free(s);
}

void na__sender_stats_get(const na__sender *s, na__sender_stats *out)
{
	na__spool_stats sp;
	na__spool_stats_get(s->spool, &sp);
	*out = s->stats;
	out->dropped = sp.dropped;
	out->pending = sp.batches;
	out->pending_bytes = sp.bytes;
}

void na__sender_kick(na__sender *s) { kick(s); }

void na__sender_on_sent(na__sender *s, void (*fn)(void *), void *arg)
{
	s->on_sent = fn;
	s->on_sent_arg = arg;
}

static void post(na__sender *s, const uint8_t *data, size_t len)
{
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, data);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	s->cc = curl_easy_perform(s->curl);
	if (s->cc == CURLE_OK)
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
}

static int final_status(const na__sender *s)
{
	return s->cc == CURLE_OK && (s->status == 200 || s->status == 400 || s->status == 413);
}

/* Worker: the oldest spooled frame, POSTed; acknowledged or refused for good, it leaves the spool. */
static void send_work(uv_work_t *w)
{
	na__sender *s = w->data;
	const uint8_t *data;
	size_t len;
	s->reply.len = 0;
	s->curl_err[0] = 0;
	s->status = 0;
	s->have = !na__spool_head(s->spool, &s->body, &s->seq, &data, &len);
	if (!s->have)
		return;
	if (s->reauth && s->token_file)
		reload_token(s);
	s->reauth = 0;
	post(s, data, len);
	if (final_status(s))
		na__spool_pop(s->spool, s->seq);
	else
		na__spool_unhold(s->spool);
}

static void on_retry(uv_timer_t *t) { kick(t->data); }

static void schedule_retry(na__sender *s)
{
	int64_t jitter = s->backoff_ms / 5, delay = s->backoff_ms - jitter + (int64_t)(rand_r(&s->seed) % (2 * jitter + 1));
	uv_timer_start(&s->retry, on_retry, (uint64_t)delay, 0);
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

static void finish_close(na__sender *s);

static void post_done(uv_work_t *w, int status)
{
	na__sender *s = w->data;
	s->inflight = 0;
	const char *reply = s->reply.len ? (const char *)s->reply.data : "";
	if (status == 0 && !s->have) {
		/* the spool was empty */
	} else if (status == 0 && s->cc == CURLE_OK && s->status == 200) {
		s->stats.sent++;
		s->backoff_ms = BACKOFF_MIN_MS;
	} else if (status == 0 && s->cc == CURLE_OK && (s->status == 400 || s->status == 413)) {
		CM_LOG(CM_LOG_ERROR, "agent", "aggregator rejected a batch (HTTP %ld), dropping it: %.300s", s->status,
		       reply);
		s->stats.rejected++;
	} else {
		char why[320];
		if (s->cc != CURLE_OK)
			snprintf(why, sizeof(why), "%s", s->curl_err[0] ? s->curl_err : curl_easy_strerror(s->cc));
		else
			snprintf(why, sizeof(why), "HTTP %ld %.200s", s->status, reply);
		s->stats.failed_attempts++;
		s->reauth = s->cc == CURLE_OK && (s->status == 401 || s->status == 403);
		CM_LOG_RL(&s->rl, CM_LOG_WARN, "agent", "push to %s failed: %s; %zu batch(es) waiting", s->url, why,
			  na__spool_pending(s->spool));
		if (!s->closing)
			schedule_retry(s);
	}
	int left = status == 0 && s->have && final_status(s);
	if (s->closing)
		finish_close(s);
	else if (s->have)
		kick(s);
	if (left && !s->closing && s->on_sent)
		s->on_sent(s->on_sent_arg);
}

static void kick(na__sender *s)
{
	if (s->inflight || s->closing || !na__spool_pending(s->spool) || uv_is_active((uv_handle_t *)&s->retry))
		return;
	s->inflight = 1;
	s->work.data = s;
	if (uv_queue_work(s->loop, &s->work, send_work, post_done))
		s->inflight = 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	na__sender *s = h->data;
	s->handles_open = 0;
	finish_close(s);
}

static void finish_close(na__sender *s)
{
	if (s->inflight || s->handles_open)
		return;
	if (s->done)
		s->done(s->done_arg);
}

void na__sender_close(na__sender *s, void (*done)(void *), void *arg)
{
	s->closing = 1;
	s->done = done;
	s->done_arg = arg;
	uv_close((uv_handle_t *)&s->retry, on_timer_closed);
}
