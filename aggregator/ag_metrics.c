/* ag_metrics.c -- the aggregator's own /metrics in Prometheus text format.
 *
 * Counters are atomics bumped by the HTTP threads; rendering reads them without a lock. Names follow
 * Prometheus conventions (corral_aggregator_*, _total for counters, base units).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include "ag_int.h"

static const char *const push_results[AG_PUSH_NRESULTS] = {"ok", "duplicate", "unauthorized", "bad_request",
							   "unavailable"};

static int family(cm_buf *b, const char *name, const char *type, const char *help)
{
	return cm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int counter(cm_buf *b, const char *name, const char *help, uint64_t v)
{
	int rc = family(b, name, "counter", help);
	return rc ? rc : cm_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static int gauge(cm_buf *b, const char *name, const char *help, double v)
{
	int rc = family(b, name, "gauge", help);
	return rc ? rc : cm_buf_printf(b, "%s %.17g\n", name, v);
}

int ag__metrics_render(ag__metrics *m, ts_db *db, cm_buf *b)
{
	ts_stats st;
	ts_get_stats(db, &st);
	int rc = family(b, "corral_aggregator_push_requests_total", "counter", "Agent pushes by result.");
	for (int i = 0; i < AG_PUSH_NRESULTS && !rc; i++)
		rc = cm_buf_printf(b, "corral_aggregator_push_requests_total{result=\"%s\"} %llu\n", push_results[i],
				   (unsigned long long)atomic_load(&m->push[i]));
	rc = rc ? rc : counter(b, "corral_aggregator_samples_ingested_total", "Samples stored from agent pushes.",
			       atomic_load(&m->samples_ingested));
	rc = rc ? rc : counter(b, "corral_aggregator_retimed_batches_total",
			       "Agent batches stored at our receive time because the node's clock was off by more than 5 min.",
			       atomic_load(&m->retimed_batches));
	rc = rc ? rc : counter(b, "corral_aggregator_queries_total", "Queries answered.", atomic_load(&m->queries));
	rc = rc ? rc : counter(b, "corral_aggregator_query_errors_total", "Queries that failed internally.",
			       atomic_load(&m->query_errors));
	rc = rc ? rc : counter(b, "corral_aggregator_http_requests_total", "HTTP requests received.",
			       atomic_load(&m->http_requests));
	rc = rc ? rc : gauge(b, "corral_tsdb_series", "Series in the tsdb head.", (double)st.series);
	rc = rc ? rc : gauge(b, "corral_tsdb_samples", "Samples in the tsdb head.", (double)st.samples);
	rc = rc ? rc : counter(b, "corral_tsdb_appends_total", "Durable appends to the tsdb.", st.appends);
	rc = rc ? rc : counter(b, "corral_tsdb_wal_fsyncs_total", "WAL fsyncs (group commits).", st.fsyncs);
	rc = rc ? rc : counter(b, "corral_tsdb_wal_written_bytes_total", "Bytes written to the WAL.", st.wal_bytes);
	rc = rc ? rc : counter(b, "corral_tsdb_cache_hits_total", "Block series queries found decoded in the cache.",
			       st.cache_hits);
	rc = rc ? rc : counter(b, "corral_tsdb_cache_misses_total", "Block series queries read and decoded.",
			       st.cache_misses);
	rc = rc ? rc : gauge(b, "corral_tsdb_cache_bytes", "Memory held by the cache of decoded block series.",
			     (double)st.cache_bytes);
	rc = rc ? rc : gauge(b, "corral_aggregator_start_time_seconds", "Start time of the process.",
			     (double)m->start_ms / 1000.0);
	return rc;
}
