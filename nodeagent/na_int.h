/* na_int.h -- internals shared between the files of nodeagent/ (never included outside it).
 *
 * Collectors report what they read through an na_emit sink, one call per series; they never
 * allocate per sample and never know about batches, timestamps or the wire. The batch builder
 * (na_collect.c) stamps the collection time and owns the memory.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef NA_INT_H
#define NA_INT_H

#include <uv.h>

#include "cm.h"
#include "na.h"

typedef struct na_emit {
	/* metric is the __name__; labels exclude it. Returns 0 or a negative CM_E* to stop. */
	int (*series)(void *ctx, const char *metric, const cm_label *labels, size_t nlabels, double value);
	void *ctx;
} na_emit;

/* ---- cgroups (na_cgroup.c) ---------------------------------------------------------------------- */

typedef struct na__cgroups na__cgroups;

/* root: a cgroup v2 mount (has cgroup.controllers), or a directory holding v1 controller mounts
 * (cpuacct or "cpu,cpuacct", memory, ...), or NULL for /sys/fs/cgroup. Fixture trees use the same
 * layouts. */
int na__cgroups_open(const char *root, na__cgroups **out, cm_err *err);
void na__cgroups_close(na__cgroups *cg);
int na__cgroups_version(const na__cgroups *cg); /* 1 or 2 */

/* Walks every cgroup and emits, labelled id="<path from the hierarchy root>" ("/" for the root):
 *   container_cpu_usage_seconds_total   v2 cpu.stat usage_usec / 1e6; v1 cpuacct.usage / 1e9
 *   container_memory_usage_bytes        v2 memory.current; v1 memory.usage_in_bytes
 *   container_memory_working_set_bytes  usage - inactive_file (v2 memory.stat inactive_file,
 *                                       v1 memory.stat total_inactive_file), clamped at 0
 * A cgroup that vanishes mid-walk or a file that cannot be parsed costs that metric only. */
int na__cgroups_collect(na__cgroups *cg, const na_emit *emit);

/* ---- node (na_node.c) --------------------------------------------------------------------------- */

/* Reads <proc_root>/stat and <proc_root>/meminfo (proc_root NULL = /proc) and emits, with
 * node_exporter's names: node_cpu_seconds_total{cpu,mode} and node_memory_<Field>_bytes (no _bytes
 * suffix for fields without a unit, such as HugePages_Total, as node_exporter does). */
int na__node_collect(const char *proc_root, const na_emit *emit, cm_err *err);

/* ---- batch building (na_collect.c) ---------------------------------------------------------------- */

typedef struct na__collector na__collector;

typedef struct na__collect_stats {
	size_t series;
	int64_t duration_ns;
	int cgroup_errors;  /* collector failures this pass (the rest was still collected) */
	int node_errors;
} na__collect_stats;

int na__collector_create(const na_config *cfg, na__collector **out, cm_err *err);
void na__collector_destroy(na__collector *c);
/* One pass over every collector: appends the wire frame for batch seq to frame and the Prometheus
 * text exposition of the same samples to text. Runs on a worker thread. */
int na__collect(na__collector *c, uint64_t seq, cm_buf *frame, cm_buf *text, na__collect_stats *st,
		cm_err *err);

/* ---- shipping (na_sender.c) ----------------------------------------------------------------------- */

typedef struct na__sender na__sender;

typedef struct na__sender_stats {
	uint64_t sent, failed_attempts, rejected, dropped, pending, pending_bytes;
} na__sender_stats;

int na__sender_create(uv_loop_t *loop, const char *base_url, const char *token, size_t max_pending,
		      na__sender **out, cm_err *err);
/* Takes ownership of the malloc'd frame and ships batches in order, one at a time, retrying with
 * backoff; past max_pending the oldest waiting batch is dropped and counted. */
void na__sender_enqueue(na__sender *s, uint8_t *frame, size_t len);
void na__sender_stats_get(const na__sender *s, na__sender_stats *out);
/* Stops retrying; calls done once no send is in flight and every handle is closed. */
void na__sender_close(na__sender *s, void (*done)(void *), void *arg);
void na__sender_free(na__sender *s);

/* ---- /metrics and /healthz (na_http.c) -------------------------------------------------------------- */

typedef struct na__http na__http;

/* Fills body and content type for GET path; returns the HTTP status. Runs on the loop thread. */
typedef int (*na__http_handler)(void *ctx, const char *path, cm_buf *body, const char **ctype);

int na__http_start(uv_loop_t *loop, const char *listen, na__http_handler fn, void *ctx, na__http **out,
		   cm_err *err);
void na__http_close(na__http *h, void (*done)(void *), void *arg);

/* Parses a request head. Returns its length when complete (method and path, query stripped, are
 * copied out), 0 when more bytes are needed, CM_EPROTO when it is not HTTP/1.x. */
int na__http_parse_request(const char *buf, size_t len, char *method, size_t mcap, char *path, size_t pcap);

#endif
