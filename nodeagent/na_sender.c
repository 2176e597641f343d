/* na_sender.c -- ships wire frames to the aggregator in order, one at a time, with retry and backoff.
 *
 * Frames wait in a FIFO in memory (the disk spool is a later issue). The head frame is POSTed to
 * <aggregator>/api/v1/agent/push on a libuv worker thread with one reused libcurl handle (so the
 * connection is kept alive); the loop thread never blocks. 200 removes the frame; 400 or 413 means
 * the aggregator will never take it, so it is dropped and counted as rejected; anything else (no
 * connection, 401, 5xx) keeps it and retries after an exponential backoff with jitter (0.5 s doubling
 * to 30 s). Past max_pending waiting frames the oldest one not in flight is dropped and counted.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

typedef struct frame {
	struct frame *next;
	uint8_t *data;
	size_t len;
} frame;

struct na__sender {
	uv_loop_t *loop;
	CURL *curl;
	struct curl_slist *headers;
	char *url;
	frame *head, *tail;
	size_t max_pending;
	na__sender_stats stats;
	uv_work_t work;
	uv_timer_t retry;
	int inflight, closing, handles_open;
	int64_t backoff_ms;
	unsigned seed;
	/* result of the last attempt, written by the worker */
	CURLcode cc;
	long status;
	char curl_err[CURL_ERROR_SIZE];
	cm_buf reply;
	cm_ratelimit rl;
	void (*done)(void *);
	void *done_arg;
};

static void kick(na__sender *s);

static size_t on_reply(char *p, size_t size, size_t n, void *ctx)
{
	cm_buf *b = ctx;
	if (b->len < 512)
		cm_buf_append(b, p, size * n < 512 ? size * n : 512);
	return size * n;
}

int na__sender_create(uv_loop_t *loop, const char *base_url, const char *token, size_t max_pending,
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
	s->headers = curl_slist_append(NULL, "Content-Type: application/x-corral-batch");
	s->headers = curl_slist_append(s->headers, (char *)auth.data);
	s->headers = curl_slist_append(s->headers, "Expect:");
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
	s->max_pending = max_pending ? max_pending : 1;
	s->backoff_ms = BACKOFF_MIN_MS;
	s->seed = (unsigned)cm_mono_ns();
	uv_timer_init(loop, &s->retry);
	s->retry.data = s;
	s->handles_open = 1;
	*out = s;
	return CM_OK;
}

void na__sender_free(na__sender *s)
{
	if (!s)
		return;
	for (frame *f = s->head, *next; f; f = next) {
		next = f->next;
		free(f->data);
		free(f);
	}
	if (s->curl)
		curl_easy_cleanup(s->curl);
	curl_slist_free_all(s->headers); /* holds the token: freed, not logged */
	cm_buf_close(&s->reply);
	free(s->url);
	free(s);
}

static void drop_oldest_waiting(na__sender *s)
{
	frame **pp = s->inflight ? &s->head->next : &s->head, *f = *pp;
	if (!f)
		return;
	*pp = f->next;
	if (s->tail == f)
		s->tail = s->inflight ? s->head : NULL;
	s->stats.pending--;
	s->stats.pending_bytes -= f->len;
	s->stats.dropped++;
	free(f->data);
	free(f);
}

void na__sender_enqueue(na__sender *s, uint8_t *data, size_t len)
{
	frame *f = malloc(sizeof(*f));
	if (!f) {
		free(data);
		s->stats.dropped++;
		return;
	}
	*f = (frame){NULL, data, len};
	if (s->tail)
		s->tail->next = f;
	else
		s->head = f;
	s->tail = f;
	s->stats.pending++;
	s->stats.pending_bytes += len;
	while (s->stats.pending > s->max_pending)
		drop_oldest_waiting(s);
	kick(s);
}

void na__sender_stats_get(const na__sender *s, na__sender_stats *out) { *out = s->stats; }

static void post_work(uv_work_t *w)
{
	na__sender *s = w->data;
	s->reply.len = 0;
	s->curl_err[0] = 0;
	s->status = 0;
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, s->head->data);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->head->len);
	s->cc = curl_easy_perform(s->curl);
	if (s->cc == CURLE_OK)
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &s->status);
}

static void pop_head(na__sender *s)
{
	frame *f = s->head;
	s->head = f->next;
	if (!s->head)
		s->tail = NULL;
	s->stats.pending--;
	s->stats.pending_bytes -= f->len;
	free(f->data);
	free(f);
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
	if (status == 0 && s->cc == CURLE_OK && s->status == 200) {
		pop_head(s);
		s->stats.sent++;
		s->backoff_ms = BACKOFF_MIN_MS;
	} else if (status == 0 && s->cc == CURLE_OK && (s->status == 400 || s->status == 413)) {
		CM_LOG(CM_LOG_ERROR, "agent", "aggregator rejected a batch (HTTP %ld), dropping it: %.300s", s->status,
		       reply);
		pop_head(s);
		s->stats.rejected++;
	} else {
		char why[320];
		if (s->cc != CURLE_OK)
			snprintf(why, sizeof(why), "%s", s->curl_err[0] ? s->curl_err : curl_easy_strerror(s->cc));
		else
			snprintf(why, sizeof(why), "HTTP %ld %.200s", s->status, reply);
		s->stats.failed_attempts++;
		CM_LOG_RL(&s->rl, CM_LOG_WARN, "agent", "push to %s failed: %s; %zu batch(es) waiting", s->url, why,
			  (size_t)s->stats.pending);
		if (!s->closing)
			schedule_retry(s);
	}
	if (s->closing)
		finish_close(s);
	else
		kick(s);
}

static void kick(na__sender *s)
{
	if (s->inflight || s->closing || !s->head || uv_is_active((uv_handle_t *)&s->retry))
		return;
	s->inflight = 1;
	s->work.data = s;
	if (uv_queue_work(s->loop, &s->work, post_work, post_done))
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
