/* na_sender.c -- ships wire frames to the aggregator oldest first, a few at once, with retry and backoff.
 *
 * Frames wait in the spool (na_spool.c: on disk under --state-dir, else in memory), which also
 * bounds them and drops the oldest. Up to NA_SEND_WINDOW slots each take a batch from the front of the
 * spool (na__spool_take: among the first NA_SEND_WINDOW, and a batch that is not logs-only goes alone)
 * and POST it to <aggregator>/api/v1/agent/push on a libuv worker thread, each with its own reused
 * libcurl handle (so each keeps its connection alive); the loop thread never blocks. So several log
 * batches are stored at once instead of one round trip after another, and the aggregator's dedupe
 * window (cm_seqwin) stays exact: a batch done stays in the spool until every older one is done. 200
 * marks the frame done; 400 or 413 means the aggregator will never take it, so it is done too and
 * counted as rejected; anything else (no connection, 401, 5xx) leaves it to be taken again after an
 * exponential backoff with jitter (0.5 s doubling to 30 s; no slot starts while it runs).
 * na__sender_kick is called after each put and wakes idle slots. After a 401 or 403 every slot
 * re-reads --token-file before its next attempt (a rotated token, no restart needed).
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

/* One POST at a time; its fields below `busy` are written by its worker. */
typedef struct slot {
	na__sender *s;
	uv_work_t work;
	CURL *curl;
	struct curl_slist *headers;
	int busy;
	int reauth;   /* set by the loop before the worker runs: re-read the token file first */
	unsigned token_gen; /* the sender's token_gen this slot's headers follow */
	cm_buf body;  /* the frame read back from the spool */
	uint64_t seq;
	int have;     /* the spool had a frame */
	CURLcode cc;
	long status;
	char curl_err[CURL_ERROR_SIZE];
	cm_buf reply;
} slot;

struct na__sender {
	uv_loop_t *loop;
	char *url;
	char *token_file;  /* re-read after a 401/403 (NULL: the token came from the environment) */
	na__spool *spool;
	na__sender_stats stats;
	slot slots[NA_SEND_WINDOW];
	uv_timer_t retry;
	int inflight, closing, handles_open;
	unsigned token_gen; /* counts 401/403 answers: each slot re-reads the token once per step */
	int64_t backoff_ms;
	unsigned seed;
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
static void reload_token(slot *sl)
{
	char token[1024], auth[1100];
	cm_err err = {{0}};
	if (cm_read_secret(sl->s->token_file, NULL, token, sizeof(token), &err)) {
		CM_LOG(CM_LOG_WARN, "agent", "%s", err.msg); /* once per 401/403, which the loop rate-limits */
		return;
	}
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	struct curl_slist *h = make_headers(auth);
	memset(token, 0, sizeof(token));
	memset(auth, 0, sizeof(auth));
	if (!h)
		return;
	curl_easy_setopt(sl->curl, CURLOPT_HTTPHEADER, h);
	curl_slist_free_all(sl->headers);
	sl->headers = h;
}

static int slot_init(na__sender *s, slot *sl, const char *auth)
{
	sl->s = s;
	sl->work.data = sl;
	if (!(sl->curl = curl_easy_init()) || !(sl->headers = make_headers(auth)))
		return CM_ENOMEM;
	curl_easy_setopt(sl->curl, CURLOPT_URL, s->url);
	curl_easy_setopt(sl->curl, CURLOPT_HTTPHEADER, sl->headers);
	curl_easy_setopt(sl->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(sl->curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(sl->curl, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(sl->curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(sl->curl, CURLOPT_ERRORBUFFER, sl->curl_err);
	curl_easy_setopt(sl->curl, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(sl->curl, CURLOPT_WRITEDATA, &sl->reply);
	return CM_OK;
}

int na__sender_create(uv_loop_t *loop, const char *base_url, const char *token, na__spool *spool,
		      na__sender **out, cm_err *err)
{
	na__sender *s = calloc(1, sizeof(*s));
	cm_buf auth;
	cm_buf_init(&auth);
	int rc = !s || cm_buf_printf(&auth, "Authorization: Bearer %s", token) ||
		 !(s->url = malloc(strlen(base_url) + 32)) ? CM_ENOMEM : CM_OK;
	if (!rc)
		sprintf(s->url, "%s/api/v1/agent/push", base_url);
	for (int i = 0; i < NA_SEND_WINDOW && !rc; i++)
		rc = slot_init(s, &s->slots[i], (char *)auth.data);
	if (auth.data)
		memset(auth.data, 0, auth.len);
	cm_buf_close(&auth);
	if (rc) {
		na__sender_free(s);
		return cm_errf(err, CM_ENOMEM, "cannot set up the HTTP client");
	}
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
	for (int i = 0; i < NA_SEND_WINDOW; i++)
		if (curl_easy_setopt(s->slots[i].curl, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK)
			return cm_errf(err, CM_EINVAL, "libcurl refuses to limit protocols to http and https");
	if (!ca_file || !*ca_file)
		return CM_OK;
	if (strncmp(s->url, "https://", 8))
		return cm_errf(err, CM_EINVAL, "--ca-file needs an https:// --aggregator");
	if (access(ca_file, R_OK))
		return cm_errf(err, -errno, "cannot read --ca-file %s: %s", ca_file, strerror(errno));
	for (int i = 0; i < NA_SEND_WINDOW; i++)
		if (curl_easy_setopt(s->slots[i].curl, CURLOPT_CAINFO, ca_file) != CURLE_OK)
			return cm_errf(err, CM_EINVAL, "libcurl has no TLS support for --ca-file");
	return CM_OK;
}

void na__sender_free(na__sender *s)
{
	if (!s)
		return;
	for (int i = 0; i < NA_SEND_WINDOW; i++) {
		slot *sl = &s->slots[i];
		if (sl->curl)
			curl_easy_cleanup(sl->curl);
		curl_slist_free_all(sl->headers); /* holds the token: freed, not logged */
		cm_buf_close(&sl->reply);
		cm_buf_close(&sl->body);
	}
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

static void post(slot *sl, const uint8_t *data, size_t len)
{
	curl_easy_setopt(sl->curl, CURLOPT_POSTFIELDS, data);
	curl_easy_setopt(sl->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	sl->cc = curl_easy_perform(sl->curl);
	if (sl->cc == CURLE_OK)
		curl_easy_getinfo(sl->curl, CURLINFO_RESPONSE_CODE, &sl->status);
}

static int final_status(const slot *sl)
{
	return sl->cc == CURLE_OK && (sl->status == 200 || sl->status == 400 || sl->status == 413);
}

/* Worker: the oldest spooled frame no other slot has, POSTed; acknowledged or refused for good, it is
 * done. */
static void send_work(uv_work_t *w)
{
	slot *sl = w->data;
	na__sender *s = sl->s;
	const uint8_t *data;
	size_t len;
	sl->reply.len = 0;
	sl->curl_err[0] = 0;
	sl->status = 0;
	sl->have = !na__spool_take(s->spool, NA_SEND_WINDOW, &sl->body, &sl->seq, &data, &len);
	if (!sl->have)
		return;
	if (sl->reauth && s->token_file)
		reload_token(sl);
	post(sl, data, len);
	na__spool_done(s->spool, sl->seq, final_status(sl));
}

static void on_retry(uv_timer_t *t) { kick(t->data); }

static void schedule_retry(na__sender *s)
{
	if (uv_is_active((uv_handle_t *)&s->retry))
		return; /* several slots failing at once back off once */
	int64_t jitter = s->backoff_ms / 5, delay = s->backoff_ms - jitter + (int64_t)(rand_r(&s->seed) % (2 * jitter + 1));
	uv_timer_start(&s->retry, on_retry, (uint64_t)delay, 0);
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

static void finish_close(na__sender *s);

static void failed(na__sender *s, slot *sl)
{
	const char *reply = sl->reply.len ? (const char *)sl->reply.data : "";
	char why[320];
	if (sl->cc != CURLE_OK)
		snprintf(why, sizeof(why), "%s", sl->curl_err[0] ? sl->curl_err : curl_easy_strerror(sl->cc));
	else
		snprintf(why, sizeof(why), "HTTP %ld %.200s", sl->status, reply);
	s->stats.failed_attempts++;
	if (sl->cc == CURLE_OK && (sl->status == 401 || sl->status == 403))
		s->token_gen++;
	CM_LOG_RL(&s->rl, CM_LOG_WARN, "agent", "push to %s failed: %s; %zu batch(es) waiting", s->url, why,
		  na__spool_pending(s->spool));
	if (!s->closing)
		schedule_retry(s);
}

static void post_done(uv_work_t *w, int status)
{
	slot *sl = w->data;
	na__sender *s = sl->s;
	sl->busy = 0;
	s->inflight--;
	if (status == 0 && !sl->have) {
		/* nothing to take */
	} else if (status == 0 && sl->cc == CURLE_OK && sl->status == 200) {
		s->stats.sent++;
		s->backoff_ms = BACKOFF_MIN_MS;
	} else if (status == 0 && final_status(sl)) {
		CM_LOG(CM_LOG_ERROR, "agent", "aggregator rejected a batch (HTTP %ld), dropping it: %.300s", sl->status,
		       sl->reply.len ? (const char *)sl->reply.data : "");
		s->stats.rejected++;
	} else {
		failed(s, sl);
	}
	int left = status == 0 && sl->have && final_status(sl);
	if (s->closing)
		finish_close(s);
	else if (sl->have)
		kick(s);
	if (left && !s->closing && s->on_sent)
		s->on_sent(s->on_sent_arg);
}

/* Starts a slot for each batch that may be taken now (one that finds none is harmless). */
static void kick(na__sender *s)
{
	if (s->closing || uv_is_active((uv_handle_t *)&s->retry))
		return;
	size_t want = na__spool_sendable(s->spool, NA_SEND_WINDOW);
	for (int i = 0; i < NA_SEND_WINDOW && want; i++) {
		slot *sl = &s->slots[i];
		if (sl->busy)
			continue;
		sl->reauth = sl->token_gen != s->token_gen;
		sl->token_gen = s->token_gen;
		if (uv_queue_work(s->loop, &sl->work, send_work, post_done))
			return;
		sl->busy = 1;
		s->inflight++;
		want--;
	}
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
