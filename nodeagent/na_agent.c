/* na_agent.c -- corral-agent's loop: collect every interval, hand batches to the sender, serve /metrics.
 *
 * Owns the timer, the collector (used only on a worker thread, one pass at a time), the spool, the
 * sender and the HTTP server. A pass runs on a worker and puts its frame in the spool there (disk
 * writes never touch the loop thread); back on the loop thread the sender is kicked and the pass becomes
 * the /metrics snapshot. Its text is rendered only when /metrics is asked for: the request is parked, a
 * worker renders the snapshot (while the next pass may run, which only reads it) and the parked
 * requests are answered; later scrapes of the same snapshot reuse the text. No metrics pass starts
 * while a render runs (the pass after next would overwrite the snapshot). A tick that finds the previous pass still running is skipped
 * and counted. Batch sequence numbers start at the larger of the wall clock in microseconds and the
 * last seq the spool remembers plus one, so they keep increasing across agent restarts (the aggregator
 * dedupes on them) even if the clock steps back.
 *
 * With --log-root, container logs go in batches of their own (na_logs.c: commit what left the spool,
 * read, encode, stage, spool; no metrics, no /metrics re-render). A logs pass follows every metrics pass
 * and, while the tailer's last read stopped at its byte cap (a backlog), follows itself back to back;
 * either only while fewer than LOGS_PIPELINE batches wait in the spool, and again each time the sender
 * empties a slot. So reading and encoding overlap sending and the aggregator's store, and when the
 * aggregator is slow or away the tailer stops reading (the log files are the buffer). Passes never run
 * two at once (na_logs.c is single-threaded): a tick that finds a logs pass running is remembered and
 * its metrics pass runs next.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

#define LOGS_PIPELINE (NA_SEND_WINDOW + 2) /* logs-only passes start while fewer batches than this wait in the spool */

enum { PASS_METRICS = 1, PASS_LOGS };

struct na_agent {
	na_config cfg;
	uv_loop_t *loop;
	uv_timer_t tick;
	uv_work_t work;
	na__collector *collector;
	na__spool *spool;
	na__sender *sender;
	na__http *http;
	na__logs *logs; /* NULL without --log-root */
	uint64_t next_seq;
	int collecting, stopping, closing_parts;
	int tick_due;    /* a tick came during a logs pass: the metrics pass goes next */
	int logs_due;    /* a metrics pass ran since the last logs pass: read the logs once */
	/* the pass in flight (worker side) */
	int kind;        /* PASS_METRICS or PASS_LOGS */
	int logs_spooled; /* the logs-only pass used next_seq */
	cm_buf frame;
	na__collect_stats st;
	int rc, put_rc;
	cm_err err;
	/* the /metrics render in flight (worker side) */
	uv_work_t render;
	const na__pass *render_of;
	uint64_t render_id;
	cm_buf text;
	int rendering, render_rc;
	/* loop side */
	const na__pass *snap; /* the last pass, if it succeeded; snap_id counts passes */
	uint64_t snap_id, text_id; /* metrics_text holds the text of pass text_id */
	cm_buf metrics_text;
	uint64_t passes, pass_errors, skipped_ticks, logs_passes, logs_pass_errors;
	uint64_t err_cgroup, err_node, err_meta, events, inventories;
	double last_duration_s;
	size_t last_series;
	cm_ratelimit rl;
};

static void collect_work(uv_work_t *w)
{
	na_agent *a = w->data;
	a->frame.len = 0;
	a->rc = na__collect(a->collector, a->next_seq, &a->frame, &a->st, &a->err);
	if (a->rc)
		return;
	size_t len;
	uint8_t *frame = cm_buf_take(&a->frame, &len);
	a->put_rc = na__spool_put(a->spool, a->next_seq, frame, len, 0);
}

static void next_pass(na_agent *a);

static void collect_done(uv_work_t *w, int status)
{
	na_agent *a = w->data;
	a->collecting = 0;
	a->passes++;
	a->logs_due = 1;
	a->snap = status ? NULL : na__collector_last(a->collector);
	a->snap_id = a->passes;
	if (status || a->rc) {
		a->pass_errors++;
		CM_LOG_RL(&a->rl, CM_LOG_ERROR, "agent", "collection failed: %s", status ? "cancelled" : a->err.msg);
		if (!a->stopping)
			next_pass(a);
		return;
	}
	a->next_seq++;
	a->err_cgroup += (uint64_t)a->st.cgroup_errors;
	a->err_node += (uint64_t)a->st.node_errors;
	a->err_meta += (uint64_t)a->st.meta_errors;
	a->events += a->st.events;
	a->inventories += (uint64_t)a->st.inventory;
	a->last_duration_s = (double)a->st.duration_ns / 1e9;
	a->last_series = a->st.series;
	if (a->put_rc)
		CM_LOG_RL(&a->rl, CM_LOG_ERROR, "agent", "cannot spool batch %llu: %s (batch lost)",
			  (unsigned long long)(a->next_seq - 1), cm_strerror(a->put_rc));
	if (a->stopping)
		return;
	na__sender_kick(a->sender);
	next_pass(a);
}

static void logs_work(uv_work_t *w)
{
	na_agent *a = w->data;
	a->rc = na__logs_pass(a->logs, a->spool, a->next_seq, &a->logs_spooled, &a->err);
}

static void logs_done(uv_work_t *w, int status)
{
	na_agent *a = w->data;
	a->collecting = 0;
	a->logs_passes++;
	if (!status && a->logs_spooled)
		a->next_seq++;
	if (status || a->rc) {
		a->logs_pass_errors++;
		CM_LOG_RL(&a->rl, CM_LOG_ERROR, "agent", "log pass failed: %s", status ? "cancelled" : a->err.msg);
	}
	if (a->stopping)
		return;
	na__sender_kick(a->sender); /* a new batch, or batches staged before a restart (those leave
	                               * logs_spooled 0) */
	if (a->tick_due || (!status && !a->rc))
		next_pass(a); /* after a failure the next tick retries */
}

static void start_pass(na_agent *a, int kind)
{
	a->collecting = 1;
	a->kind = kind;
	a->logs_spooled = 0;
	a->work.data = a;
	if (uv_queue_work(a->loop, &a->work, kind == PASS_LOGS ? logs_work : collect_work,
			  kind == PASS_LOGS ? logs_done : collect_done))
		a->collecting = 0;
}

/* Loop thread, whenever the worker or a spool slot frees up: a due metrics pass, else a logs-only pass
 * while the tailer has more and the spool has room. */
static void next_pass(na_agent *a)
{
	if (a->collecting || a->stopping || (a->tick_due && a->rendering))
		return;
	if (a->tick_due) {
		a->tick_due = 0;
		start_pass(a, PASS_METRICS);
	} else if (a->logs && (a->logs_due || na__logs_more(a->logs)) && na__spool_pending(a->spool) < LOGS_PIPELINE) {
		a->logs_due = 0;
		start_pass(a, PASS_LOGS);
	}
}

static void on_sent(void *arg) { next_pass(arg); }

static void on_tick(uv_timer_t *t)
{
	na_agent *a = t->data;
	if ((a->collecting && a->kind == PASS_LOGS) || (!a->collecting && a->rendering)) {
		a->tick_due = 1;
	} else if (a->collecting) {
		a->skipped_ticks++;
	} else {
		start_pass(a, PASS_METRICS);
	}
}

static int render_self(na_agent *a, cm_buf *b)
{
	na__sender_stats s;
	na__spool_stats sp;
	na__sender_stats_get(a->sender, &s);
	na__spool_stats_get(a->spool, &sp);
	return cm_buf_printf(b,
		"# HELP corral_agent_collections_total Collection passes run.\n"
		"# TYPE corral_agent_collections_total counter\ncorral_agent_collections_total %llu\n"
		"# HELP corral_agent_collection_errors_total Collection passes that failed.\n"
		"# TYPE corral_agent_collection_errors_total counter\ncorral_agent_collection_errors_total %llu\n"
		"# HELP corral_agent_skipped_ticks_total Intervals skipped because a pass was still running.\n"
		"# TYPE corral_agent_skipped_ticks_total counter\ncorral_agent_skipped_ticks_total %llu\n"
		"# HELP corral_agent_collection_duration_seconds Duration of the last collection pass.\n"
		"# TYPE corral_agent_collection_duration_seconds gauge\ncorral_agent_collection_duration_seconds %.9f\n"
		"# HELP corral_agent_series Series collected in the last pass.\n"
		"# TYPE corral_agent_series gauge\ncorral_agent_series %zu\n"
		"# HELP corral_agent_batches_sent_total Batches acknowledged by the aggregator.\n"
		"# TYPE corral_agent_batches_sent_total counter\ncorral_agent_batches_sent_total %llu\n"
		"# HELP corral_agent_send_failures_total Push attempts that failed and will be retried.\n"
		"# TYPE corral_agent_send_failures_total counter\ncorral_agent_send_failures_total %llu\n"
		"# HELP corral_agent_batches_rejected_total Batches the aggregator refused as invalid.\n"
		"# TYPE corral_agent_batches_rejected_total counter\ncorral_agent_batches_rejected_total %llu\n"
		"# HELP corral_agent_batches_dropped_total Batches dropped because too many were waiting.\n"
		"# TYPE corral_agent_batches_dropped_total counter\ncorral_agent_batches_dropped_total %llu\n"
		"# HELP corral_agent_pending_batches Batches waiting to be sent.\n"
		"# TYPE corral_agent_pending_batches gauge\ncorral_agent_pending_batches %llu\n"
		"# HELP corral_agent_pending_bytes Bytes of batches waiting to be sent.\n"
		"# TYPE corral_agent_pending_bytes gauge\ncorral_agent_pending_bytes %llu\n"
		"# HELP corral_agent_spool_dropped_bytes_total Bytes of batches dropped because the spool was full.\n"
		"# TYPE corral_agent_spool_dropped_bytes_total counter\ncorral_agent_spool_dropped_bytes_total %llu\n"
		"# HELP corral_agent_spool_corrupt_total Spool files found invalid and deleted.\n"
		"# TYPE corral_agent_spool_corrupt_total counter\ncorral_agent_spool_corrupt_total %llu\n"
		"# HELP corral_agent_spool_errors_total Batches lost because they could not be spooled.\n"
		"# TYPE corral_agent_spool_errors_total counter\ncorral_agent_spool_errors_total %llu\n"
		"# HELP corral_agent_next_seq Sequence number of the next batch.\n"
		"# TYPE corral_agent_next_seq gauge\ncorral_agent_next_seq %llu\n",
		(unsigned long long)a->passes, (unsigned long long)a->pass_errors,
		(unsigned long long)a->skipped_ticks, a->last_duration_s, a->last_series,
		(unsigned long long)s.sent, (unsigned long long)s.failed_attempts, (unsigned long long)s.rejected,
		(unsigned long long)s.dropped, (unsigned long long)s.pending, (unsigned long long)s.pending_bytes,
		(unsigned long long)sp.dropped_bytes, (unsigned long long)sp.corrupt, (unsigned long long)sp.errors,
		(unsigned long long)a->next_seq);
}

static int render_collectors(na_agent *a, cm_buf *b)
{
	return cm_buf_printf(b,
		"# HELP corral_agent_collector_errors_total Collection passes in which a collector lost part of its data.\n"
		"# TYPE corral_agent_collector_errors_total counter\n"
		"corral_agent_collector_errors_total{collector=\"cgroup\"} %llu\n"
		"corral_agent_collector_errors_total{collector=\"node\"} %llu\n"
		"corral_agent_collector_errors_total{collector=\"meta\"} %llu\n"
		"# HELP corral_agent_events_total Container events (started, stopped, OOM-killed) put in batches.\n"
		"# TYPE corral_agent_events_total counter\ncorral_agent_events_total %llu\n"
		"# HELP corral_agent_inventories_total Batches that carried the full inventory.\n"
		"# TYPE corral_agent_inventories_total counter\ncorral_agent_inventories_total %llu\n"
		"# HELP corral_agent_log_passes_total Container log passes run (each spools at most one batch).\n"
		"# TYPE corral_agent_log_passes_total counter\ncorral_agent_log_passes_total %llu\n"
		"# HELP corral_agent_log_pass_errors_total Container log passes that failed (retried).\n"
		"# TYPE corral_agent_log_pass_errors_total counter\ncorral_agent_log_pass_errors_total %llu\n",
		(unsigned long long)a->err_cgroup, (unsigned long long)a->err_node, (unsigned long long)a->err_meta,
		(unsigned long long)a->events, (unsigned long long)a->inventories, (unsigned long long)a->logs_passes,
		(unsigned long long)a->logs_pass_errors);
}

static void render_work(uv_work_t *w)
{
	na_agent *a = w->data;
	a->text.len = 0;
	a->render_rc = na__pass_render(a->render_of, &a->text);
}

static void render_done(uv_work_t *w, int status)
{
	na_agent *a = w->data;
	a->rendering = 0;
	a->text_id = a->render_id; /* after a failure too: the old text is served, the next pass retries */
	if (status || a->render_rc) {
		CM_LOG_RL(&a->rl, CM_LOG_ERROR, "agent", "cannot render /metrics: %s",
			  cm_strerror(status ? status : a->render_rc));
	} else {
		cm_buf tmp = a->metrics_text;
		a->metrics_text = a->text;
		a->text = tmp;
	}
	if (a->stopping)
		return;
	na__http_resume(a->http);
	next_pass(a);
}

/* Renders the snapshot on a worker; 0 when that could not start. */
static int start_render(na_agent *a)
{
	a->render.data = a;
	a->render_of = a->snap;
	a->render_id = a->snap_id;
	a->rendering = !uv_queue_work(a->loop, &a->render, render_work, render_done);
	return a->rendering;
}

static int on_http(void *ctx, const char *path, cm_buf *body, const char **ctype)
{
	na_agent *a = ctx;
	if (!strcmp(path, "/healthz"))
		return cm_buf_puts(body, "ok\n") ? 500 : 200;
	if (strcmp(path, "/metrics"))
		return cm_buf_puts(body, "not found\n") ? 500 : 404;
	if (a->snap && a->text_id != a->snap_id && (a->rendering || start_render(a)))
		return NA__HTTP_LATER;
	*ctype = "text/plain; version=0.0.4; charset=utf-8";
	if (cm_buf_append(body, a->metrics_text.data, a->metrics_text.len) || render_self(a, body) ||
	    render_collectors(a, body))
		return 500;
	return 200;
}

int na_agent_start(uv_loop_t *loop, const na_config *cfg, na_agent **out, cm_err *err)
{
	char token[1024];
	na_agent *a = calloc(1, sizeof(*a));
	if (!a)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	a->cfg = *cfg;
	a->loop = loop;
	uint64_t last_seq = 0;
	int rc = cm_read_secret(cfg->token_file, "CORRAL_TOKEN", token, sizeof(token), err);
	if (!rc)
		rc = na__spool_open(cfg->state_dir, (size_t)cfg->max_pending, cfg->spool_max_bytes, &a->spool, &last_seq,
				    err);
	a->next_seq = (uint64_t)cm_now_ms() * 1000;
	if (a->next_seq <= last_seq)
		a->next_seq = last_seq + 1;
	if (!rc)
		rc = na__collector_create(cfg, &a->collector, err);
	if (!rc)
		rc = na__logs_open(cfg, &a->logs, err);
	if (!rc)
		rc = na__sender_create(loop, cfg->aggregator, token, a->spool, &a->sender, err);
	memset(token, 0, sizeof(token));
	if (!rc)
		rc = na__sender_config(a->sender, cfg->ca_file, cfg->token_file, err);
	if (!rc)
		rc = na__http_start(loop, cfg->listen, on_http, a, &a->http, err);
	if (rc) {
		if (a->sender) {
			na__sender_close(a->sender, NULL, NULL);
			uv_run(loop, UV_RUN_NOWAIT); /* let the sender's timer close before freeing it */
		}
		na_agent_free(a);
		return rc;
	}
	uv_timer_init(loop, &a->tick);
	a->tick.data = a;
	uv_timer_start(&a->tick, on_tick, 0, (uint64_t)cfg->interval_ms);
	na__sender_on_sent(a->sender, on_sent, a);
	na__sender_kick(a->sender); /* batches a previous run left in the spool */
	*out = a;
	return CM_OK;
}

static void part_closed(void *arg)
{
	na_agent *a = arg;
	a->closing_parts--;
}

static void tick_closed(uv_handle_t *h) { part_closed(h->data); }

void na_agent_stop(na_agent *a)
{
	if (a->stopping)
		return;
	a->stopping = 1;
	a->closing_parts = 3;
	uv_close((uv_handle_t *)&a->tick, tick_closed);
	na__http_close(a->http, part_closed, a);
	na__sender_close(a->sender, part_closed, a);
}

void na_agent_free(na_agent *a)
{
	if (!a)
		return;
	na__collector_destroy(a->collector);
	na__logs_close(a->logs);
	na__sender_free(a->sender);
	na__spool_close(a->spool);
	cm_buf_close(&a->frame);
	cm_buf_close(&a->text);
	cm_buf_close(&a->metrics_text);
	free(a);
}
