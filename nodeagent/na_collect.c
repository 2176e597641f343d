/* na_collect.c -- one collection pass: run the collectors, build the wire batch and the /metrics text.
 *
 * Called on a libuv worker thread once per interval (never two at once). Collectors emit series
 * through na_emit; this file stamps them with the pass's time and writes each straight into the
 * batch's series section as a wire Series message: a cgroup's labels come already encoded (na_lset),
 * so a series costs the metric name, its few own labels and the sample. Two sections alternate: while
 * a pass emits the same series as the last one, in the same order, it only rewrites their samples in
 * the last pass's section; at the first that differs, what matched is copied to the spare section and
 * the pass goes on there. Each pass keeps, per series, where its label bytes are, so the next one can
 * tell which series vanished by comparing label bytes. The encoder kept across passes compresses the
 * section with the batch's other fields. The Prometheus text of the agent's own /metrics is rendered
 * from a finished pass's label bytes and values only when it is scraped (na__pass_render, on a worker
 * while the next pass may run: that pass writes only samples, never label bytes, of the one before).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

/* A series of a pass: where its message and its label bytes are in the pass's section, its value. */
typedef struct na_rec {
	uint32_t msg, lab, len;
	double v;
} na_rec;

/* One pass's series; two alternate so the next pass can tell which series vanished. */
struct na__pass {
	cm_arena arena;       /* event and inventory strings, reset (blocks kept) at the start of the pass */
	cm_buf *sb;           /* its section, one of the collector's two: Series messages (Batch field 6), */
	size_t end;           /* the collected ones up to end, then stale markers */
	int64_t t_ms;
	na_rec *rec;          /* [0, n) the collected series */
	size_t n, cap;
};
typedef struct na__pass na_gen;

struct na__collector {
	na__cgroups *cgroups;
	na__meta *meta;
	na__node *nodestat; /* /proc files of the node collectors */
	char node[256];
	char boot_id[64];
	na_gen gen[2];
	int cur;
	cm_buf sec[2];        /* the last pass's section and a spare */
	int in_place;         /* every series of this pass so far equals the last pass's at its index, in
			       * order: their samples are rewritten in the last pass's section */
	const na_gen *last;   /* the last pass that succeeded, NULL while one runs or after a failure */
	cm_wire_enc *enc;     /* zstd context, message arena and packed bytes, reused from pass to pass */
	size_t *table;        /* open addressing over the current pass: index + 1, 0 = empty */
	size_t tcap;
	int64_t now_ms;
	uint64_t events;
	/* events of this pass (strings in the pass's arena), shipped in its batch */
	cm_event *ev;
	size_t nev, evcap;
	uint64_t events_dropped;
	/* inventory: sent when the metadata changed and every inventory_ms */
	int64_t inventory_ms, inventory_sent_ms;
	uint64_t inventory_gen, inventory_live; /* metadata generation and cgroup-presence hash sent */
	int inventory_sent;
	cm_ratelimit rl_cgroup, rl_node;
	const cm_log_stream *logs; /* na_logs.c: this pass's log streams */
	size_t nlogs;
};

#define MAX_EVENTS_PER_PASS 1024
#define WIRE_ZSTD_LEVEL (-1) /* zstd --fast=1: 24 % faster than level 1 on agent batches, 28 instead of 24 KB at 200 cgroups */

int na__collector_create(const na_config *cfg, na__collector **out, cm_err *err)
{
	na__collector *c = calloc(1, sizeof(*c));
	if (!c)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	c->inventory_ms = cfg->inventory_interval_ms > 0 ? cfg->inventory_interval_ms : 60000;
	snprintf(c->node, sizeof(c->node), "%s", cfg->node);
	const char *id;
	int rc = na__node_open(cfg->proc_root, &c->nodestat);
	if (rc || (rc = na__node_text(c->nodestat, NA__NODE_BOOT_ID, &id, err))) {
		na__node_close(c->nodestat);
		free(c);
		return rc == CM_ENOMEM ? cm_errf(err, rc, "out of memory") : rc;
	}
	snprintf(c->boot_id, sizeof(c->boot_id), "%.*s", (int)strcspn(id, "\r\n"), id);
	if (cfg->pods_dir || cfg->docker_root || cfg->kubelet_url) {
		na__meta_opts mo = {.pods_dir = cfg->pods_dir, .docker_root = cfg->docker_root,
				    .label_allowlist = cfg->label_allowlist, .kubelet_url = cfg->kubelet_url,
				    .kubelet_token_file = cfg->kubelet_token_file, .kubelet_ca_file = cfg->kubelet_ca_file,
				    .refresh_ms = cfg->meta_refresh_ms};
		if ((rc = na__meta_create(&mo, &c->meta, err))) {
			na__node_close(c->nodestat);
			free(c);
			return rc;
		}
	}
	na__cgroups_opts co = {.root = cfg->cgroup_root, .proc_root = cfg->proc_root, .meta = c->meta};
	cm_arena_init(&c->gen[0].arena, 0);
	cm_arena_init(&c->gen[1].arena, 0);
	rc = na__cgroups_open(&co, &c->cgroups, err);
	if (!rc && cm_wire_enc_create(WIRE_ZSTD_LEVEL, &c->enc))
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	if (rc) {
		na__collector_destroy(c);
		return rc;
	}
	*out = c;
	return CM_OK;
}

void na__collector_destroy(na__collector *c)
{
	if (!c)
		return;
	na__cgroups_close(c->cgroups);
	na__meta_destroy(c->meta);
	na__node_close(c->nodestat);
	cm_wire_enc_destroy(c->enc);
	for (int i = 0; i < 2; i++) {
		cm_arena_close(&c->gen[i].arena);
		cm_buf_close(&c->sec[i]);
		free(c->gen[i].rec);
	}
	free(c->table);
	free(c->ev);
	free(c);
}

static int grow(na_gen *g, size_t want)
{
	if (want <= g->cap)
		return CM_OK;
	size_t cap = g->cap ? g->cap : 256;
	while (cap < want)
		cap *= 2;
	na_rec *r = realloc(g->rec, cap * sizeof(*r));
	if (!r)
		return CM_ENOMEM;
	g->rec = r, g->cap = cap;
	return CM_OK;
}

/* Appends one Series message to the pass's section: __name__=metric (NULL: pre holds every label), the
 * encoded labels pre, then l. */
static int put_series(na__collector *c, const char *metric, const uint8_t *pre, size_t prelen, const cm_label *l,
		      size_t n, double v, na_rec *rec)
{
	na_gen *g = &c->gen[c->cur];
	size_t at, len;
	size_t msg = g->sb->len;
	if (cm_wire_series1_pb(g->sb, metric, pre, prelen, l, n, c->now_ms, v, &at, &len))
		return CM_ENOMEM;
	if (at + len > UINT32_MAX)
		return CM_E2BIG;
	*rec = (na_rec){(uint32_t)msg, (uint32_t)at, (uint32_t)len, v};
	return CM_OK;
}

/* The last pass's section is left for a spare one: the series written in place so far are copied to it,
 * and the rest of this pass is written there. */
static int leave_in_place(na__collector *c)
{
	na_gen *g = &c->gen[c->cur], *p = &c->gen[!c->cur];
	cm_buf *spare = p->sb == &c->sec[0] ? &c->sec[1] : &c->sec[0];
	size_t upto = g->n < p->n ? p->rec[g->n].msg : p->end;
	spare->len = 0;
	if (cm_buf_append(spare, p->sb->data, upto))
		return CM_ENOMEM;
	g->sb = spare;
	c->in_place = 0;
	return CM_OK;
}

static int emit_series(void *ctx, const char *metric, const na_lset *set, const cm_label *labels, size_t nlabels,
		       double value)
{
	na__collector *c = ctx;
	na_gen *g = &c->gen[c->cur], *p = &c->gen[!c->cur];
	const uint8_t *pre = set ? set->pb : NULL;
	size_t prelen = set ? set->pblen : 0;
	if (grow(g, g->n + 1))
		return CM_ENOMEM;
	if (c->in_place && g->n < p->n) {
		const na_rec *r = &p->rec[g->n];
		if (cm_wire_series1_same(p->sb->data + r->lab, r->len, metric, pre, prelen, labels, nlabels)) {
			cm_wire_series1_set(p->sb->data + r->lab + r->len, c->now_ms, value);
			g->rec[g->n++] = (na_rec){r->msg, r->lab, r->len, value};
			return CM_OK;
		}
	}
	if (c->in_place && leave_in_place(c))
		return CM_ENOMEM;
	int rc = put_series(c, metric, pre, prelen, labels, nlabels, value, &g->rec[g->n]);
	g->n += rc == CM_OK;
	return rc;
}

/* ---- events ------------------------------------------------------------------------------------- */

/* Keeps one event for this pass's batch, with the names the metadata gives; past
 * MAX_EVENTS_PER_PASS they are counted and dropped. */
static void keep_event(na__collector *c, const char *type, const char *id, const na__ident *ident, int64_t t_ms,
		       uint64_t count)
{
	cm_arena *a = &c->gen[c->cur].arena;
	na__meta_labels ml;
	memset(&ml, 0, sizeof(ml));
	if (c->meta && na__meta_lookup(c->meta, id, ident, &ml))
		memset(&ml, 0, sizeof(ml));
	if (c->nev == MAX_EVENTS_PER_PASS) {
		c->events_dropped++;
		return;
	}
	if (c->nev == c->evcap) {
		size_t cap = c->evcap ? 2 * c->evcap : 16;
		cm_event *e = realloc(c->ev, cap * sizeof(*e));
		if (!e) {
			c->events_dropped++;
			return;
		}
		c->ev = e, c->evcap = cap;
	}
	cm_event e = {t_ms, type, cm_arena_strdup(a, id), cm_arena_strdup(a, ident->container_id),
		      cm_arena_strdup(a, ml.container), cm_arena_strdup(a, ml.pod), cm_arena_strdup(a, ml.namespace_),
		      count};
	if (!e.cgroup || !e.container_id || !e.container || !e.pod || !e.namespace_) {
		c->events_dropped++;
		return;
	}
	c->ev[c->nev++] = e;
}

/* Container lifecycle as the cgroup collector saw it; logged (rare by nature: one line per container
 * start, stop or OOM kill), counted and shipped in the batch (wire field 12). */
static void on_event(void *ctx, int type, const char *id, const na__ident *ident, int64_t t_ms, uint64_t count)
{
	na__collector *c = ctx;
	static const char *const what[] = {"?", "started", "stopped", "OOM-killed"};
	static const char *const wire[] = {"started", "started", "stopped", "oom_killed"};
	int k = type > 0 && type < 4 ? type : 0;
	c->events++;
	CM_LOG(CM_LOG_INFO, "event", "container %s %s (runtime %s%s%s, count %llu)", id, what[k],
	       *ident->runtime ? ident->runtime : "none", ident->pod_uid[0] ? ", pod " : "", ident->pod_uid,
	       (unsigned long long)count);
	if (k)
		keep_event(c, wire[k], id, ident, t_ms, count);
}

/* ---- inventory ---------------------------------------------------------------------------------- */

/* A pod is ready only while every container that names its cgroup ("cgroup" in a pods-dir file) has
 * that cgroup on this node: a removed cgroup takes the pod out of service endpoints in the next batch,
 * whatever the (polled) metadata source still says. */
static int pod_live(const na__collector *c, const na__meta_pod *p)
{
	for (size_t i = 0; i < p->ncontainers; i++)
		if (p->containers[i].cgroup[0] && !na__cg_find(c->cgroups, p->containers[i].cgroup))
			return 0;
	return 1;
}

/* Hash over the pods' presence bits, so a change of presence alone makes the inventory due. */
static uint64_t live_hash(const na__collector *c, const na__meta_pod *mp, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint64_t)pod_live(c, &mp[i])) * 1099511628211ULL;
	return h;
}

static int convert_pod(cm_arena *a, const na__meta_pod *in, int live, cm_pod *out)
{
	cm_container *ct = cm_arena_calloc(a, in->ncontainers ? in->ncontainers : 1, sizeof(*ct));
	if (!ct)
		return CM_ENOMEM;
	for (size_t i = 0; i < in->ncontainers; i++) {
		const na__meta_container *x = &in->containers[i];
		ct[i] = (cm_container){x->name, x->id, x->image, x->cgroup, x->req_cpu, x->req_mem, x->lim_cpu, x->lim_mem};
	}
	*out = (cm_pod){in->name, in->namespace_, in->uid, in->status, in->ready && live, in->labels, in->nlabels,
			(const char *const *)in->ips, in->nips, ct, in->ncontainers};
	return CM_OK;
}

/* The inventory for this pass's batch when it is due: first pass, metadata changed, a pod's cgroup
 * appeared or vanished, or every inventory_ms. Points into the metadata table (valid for this pass)
 * and the pass's arena. */
static int build_inventory(na__collector *c, cm_inventory *inv, int *due)
{
	uint64_t mg = na__meta_generation(c->meta);
	const na__meta_pod *mp = NULL;
	size_t n = 0;
	if (c->meta)
		na__meta_pods(c->meta, &mp, &n);
	uint64_t lh = live_hash(c, mp, n);
	*due = !c->inventory_sent || mg != c->inventory_gen || lh != c->inventory_live ||
	       c->now_ms - c->inventory_sent_ms >= c->inventory_ms;
	if (!*due)
		return CM_OK;
	cm_arena *a = &c->gen[c->cur].arena;
	cm_pod *pods = cm_arena_calloc(a, n ? n : 1, sizeof(*pods));
	cm_label *node = cm_arena_calloc(a, 2, sizeof(*node));
	if (!pods || !node)
		return CM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (convert_pod(a, &mp[i], pod_live(c, &mp[i]), &pods[i]))
			return CM_ENOMEM;
	node[0] = (cm_label){"agent_version", CM_VERSION};
	node[1] = (cm_label){"boot_id", c->boot_id};
	*inv = (cm_inventory){c->now_ms, pods, n, node, 2};
	c->inventory_gen = mg, c->inventory_live = lh;
	return CM_OK;
}

/* ---- staleness ------------------------------------------------------------------------------------ */

static int same_series(const na_gen *a, const na_rec *ra, const na_gen *b, const na_rec *rb)
{
	return ra->len == rb->len && !memcmp(a->sb->data + ra->lab, b->sb->data + rb->lab, ra->len);
}

static uint32_t series_hash(const na_gen *g, const na_rec *r) { return cm_crc32c(0, g->sb->data + r->lab, r->len); }

static int index_current(na__collector *c, const na_gen *g)
{
	size_t cap = 64;
	while (cap < 2 * g->n)
		cap *= 2;
	if (cap > c->tcap) {
		size_t *t = realloc(c->table, cap * sizeof(*t));
		if (!t)
			return CM_ENOMEM;
		c->table = t, c->tcap = cap;
	}
	memset(c->table, 0, c->tcap * sizeof(*c->table));
	for (size_t i = 0; i < g->n; i++) {
		size_t j = series_hash(g, &g->rec[i]) & (c->tcap - 1);
		while (c->table[j])
			j = (j + 1) & (c->tcap - 1);
		c->table[j] = i + 1;
	}
	return CM_OK;
}

static int in_current(const na__collector *c, const na_gen *g, const na_gen *p, const na_rec *r)
{
	for (size_t j = series_hash(p, r) & (c->tcap - 1); c->table[j]; j = (j + 1) & (c->tcap - 1))
		if (same_series(g, &g->rec[c->table[j] - 1], p, r))
			return 1;
	return 0;
}

/* Appends to the current pass's section, after its collected series, one Prometheus stale marker (NaN
 * with the bits 0x7ff0000000000002) for each series of the previous pass that this pass did not see.
 * Passes mostly repeat the one before in the same order, so the series at the same index is tried
 * first; a table over this pass (by the CRC32C of label bytes) is built at the first that differs.
 * Returns how many. */
static int add_stale(na__collector *c, size_t *nstale)
{
	na_gen *g = &c->gen[c->cur], *p = &c->gen[!c->cur];
	uint64_t bits = 0x7ff0000000000002ULL;
	double stale;
	memcpy(&stale, &bits, sizeof(stale));
	int indexed = 0;
	*nstale = 0;
	for (size_t i = 0; i < p->n; i++) {
		const na_rec *r = &p->rec[i];
		if (i < g->n && same_series(g, &g->rec[i], p, r))
			continue;
		if (!indexed && index_current(c, g))
			return CM_ENOMEM;
		indexed = 1;
		if (in_current(c, g, p, r))
			continue;
		na_rec marker;
		int rc = put_series(c, NULL, p->sb->data + r->lab, r->len, NULL, 0, stale, &marker);
		if (rc)
			return rc;
		(*nstale)++;
	}
	return CM_OK;
}

/* ---- Prometheus text exposition --------------------------------------------------------------------- */

static const struct {
	const char *name, *type, *help;
} families[] = {
	/* cAdvisor's help texts */
	{"container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds."},
	{"container_cpu_user_seconds_total", "counter", "Cumulative user cpu time consumed in seconds."},
	{"container_cpu_system_seconds_total", "counter", "Cumulative system cpu time consumed in seconds."},
	{"container_cpu_cfs_periods_total", "counter", "Number of elapsed enforcement period intervals."},
	{"container_cpu_cfs_throttled_periods_total", "counter", "Number of throttled period intervals."},
	{"container_cpu_cfs_throttled_seconds_total", "counter", "Total time duration the container has been throttled."},
	{"container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless of "
						  "when it was accessed"},
	{"container_memory_working_set_bytes", "gauge", "Current working set in bytes."},
	{"container_memory_rss", "gauge", "Size of RSS in bytes."},
	{"container_memory_cache", "gauge", "Number of bytes of page cache memory."},
	{"container_memory_mapped_file", "gauge", "Size of memory mapped files in bytes."},
	{"container_memory_swap", "gauge", "Container swap usage in bytes."},
	{"container_memory_max_usage_bytes", "gauge", "Maximum memory usage recorded in bytes"},
	{"container_memory_failcnt", "gauge", "Number of memory usage hits limits"},
	{"container_memory_failures_total", "counter", "Cumulative count of memory allocation failures."},
	{"container_oom_events_total", "counter", "Count of out of memory events observed for the container"},
	{"container_pressure_cpu_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to CPU congestion."},
	{"container_pressure_cpu_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to CPU congestion."},
	{"container_pressure_memory_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to memory congestion."},
	{"container_pressure_memory_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to memory congestion."},
	{"container_pressure_io_waiting_seconds_total", "counter", "Total time duration tasks in the container have waited due to IO congestion."},
	{"container_pressure_io_stalled_seconds_total", "counter", "Total time duration no tasks in the container could make progress due to IO congestion."},
	{"container_fs_reads_bytes_total", "counter", "Cumulative count of bytes read"},
	{"container_fs_writes_bytes_total", "counter", "Cumulative count of bytes written"},
	{"container_fs_reads_total", "counter", "Cumulative count of reads completed"},
	{"container_fs_writes_total", "counter", "Cumulative count of writes completed"},
	{"container_threads", "gauge", "Number of threads running inside the container"},
	{"container_threads_max", "gauge", "Maximum number of threads allowed inside the container, infinity if value is zero"},
	{"container_hugetlb_usage_bytes", "gauge", "Hugepage usage in bytes, per page size."},
	{"container_hugetlb_max_usage_bytes", "gauge", "Maximum hugepage usage in bytes, per page size (cgroup v1)."},
	{"container_hugetlb_failcnt", "gauge", "Number of hugepage allocations refused at the limit, per page size."},
	{"container_spec_cpu_shares", "gauge", "CPU share of the container."},
	{"container_spec_cpu_quota", "gauge", "CPU quota of the container."},
	{"container_spec_cpu_period", "gauge", "CPU period of the container."},
	{"container_spec_memory_limit_bytes", "gauge", "Memory limit for the container."},
	{"container_spec_memory_reservation_limit_bytes", "gauge", "Memory reservation limit for the container."},
	{"container_spec_memory_swap_limit_bytes", "gauge", "Memory swap limit for the container."},
	{"container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds."},
	{"container_last_seen", "gauge", "Last time a container was seen by the exporter"},
	{"container_network_receive_bytes_total", "counter", "Cumulative count of bytes received"},
	{"container_network_receive_packets_total", "counter", "Cumulative count of packets received"},
	{"container_network_receive_errors_total", "counter", "Cumulative count of errors encountered while receiving"},
	{"container_network_receive_packets_dropped_total", "counter", "Cumulative count of packets dropped while receiving"},
	{"container_network_transmit_bytes_total", "counter", "Cumulative count of bytes transmitted"},
	{"container_network_transmit_packets_total", "counter", "Cumulative count of packets transmitted"},
	{"container_network_transmit_errors_total", "counter", "Cumulative count of errors encountered while transmitting"},
	{"container_network_transmit_packets_dropped_total", "counter", "Cumulative count of packets dropped while transmitting"},
	{"machine_cpu_cores", "gauge", "Number of logical CPU cores."},
	{"machine_memory_bytes", "gauge", "Amount of memory installed on the machine."},
	{"node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode."},
	/* node_exporter's help texts */
	{"node_load1", "gauge", "1m load average."},
	{"node_load5", "gauge", "5m load average."},
	{"node_load15", "gauge", "15m load average."},
	{"node_boot_time_seconds", "gauge", "Node boot time, in unixtime."},
	{"node_time_seconds", "gauge", "System time in seconds since epoch (1970)."},
	{"corral_node_boot_info", "gauge", "The node's boot id (/proc/sys/kernel/random/boot_id) as a label."},
	{"node_disk_reads_completed_total", "counter", "The total number of reads completed successfully."},
	{"node_disk_reads_merged_total", "counter", "The total number of reads merged."},
	{"node_disk_read_bytes_total", "counter", "The total number of bytes read successfully."},
	{"node_disk_read_time_seconds_total", "counter", "The total number of seconds spent by all reads."},
	{"node_disk_writes_completed_total", "counter", "The total number of writes completed successfully."},
	{"node_disk_writes_merged_total", "counter", "The number of writes merged."},
	{"node_disk_written_bytes_total", "counter", "The total number of bytes written successfully."},
	{"node_disk_write_time_seconds_total", "counter", "This is the total number of seconds spent by all writes."},
	{"node_disk_io_now", "gauge", "The number of I/Os currently in progress."},
	{"node_disk_io_time_seconds_total", "counter", "Total seconds spent doing I/Os."},
	{"node_disk_io_time_weighted_seconds_total", "counter", "The weighted # of seconds spent doing I/Os."},
	{"node_filesystem_size_bytes", "gauge", "Filesystem size in bytes."},
	{"node_filesystem_free_bytes", "gauge", "Filesystem free space in bytes."},
	{"node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users in bytes."},
	{"node_filesystem_files", "gauge", "Filesystem total file nodes."},
	{"node_filesystem_files_free", "gauge", "Filesystem total free file nodes."},
	{"node_filesystem_readonly", "gauge", "Filesystem read-only status."},
	{"node_filesystem_device_error", "gauge", "Whether an error occurred while getting statistics for the given device."},
};

static void family_of(const char *name, size_t len, const char **type, const char **help)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(families); i++) {
		if (strlen(families[i].name) == len && !memcmp(families[i].name, name, len)) {
			*type = families[i].type, *help = families[i].help;
			return;
		}
	}
	*type = "gauge";
	*help = len >= 12 && !memcmp(name, "node_memory_", 12) ? "Memory information field from /proc/meminfo."
							       : "Collected by corral-agent.";
	if (len >= 13 && !memcmp(name, "node_network_", 13)) {
		*type = "counter";
		*help = "Network device statistic from /proc/net/dev.";
	}
}

/* A series of the pass being rendered: its name (the first label's value) and where its labels go on. */
typedef struct render_row {
	const char *name;
	size_t nlen, pos, i;
} render_row;

static int cmp_by_name(const void *a, const void *b)
{
	const render_row *x = a, *y = b;
	int c = memcmp(x->name, y->name, x->nlen < y->nlen ? x->nlen : y->nlen);
	if (!c)
		c = (x->nlen > y->nlen) - (x->nlen < y->nlen);
	return c ? c : (x->i > y->i) - (x->i < y->i); /* stable: emission order within a family */
}

/* Label values in the text format escape backslash, double quote and newline. */
static int put_text_value(cm_buf *out, const char *v, size_t n)
{
	int rc = CM_OK;
	for (size_t i = 0; i < n && !rc;) {
		size_t run = 0;
		while (i + run < n && v[i + run] != '\\' && v[i + run] != '"' && v[i + run] != '\n')
			run++;
		rc = run ? cm_buf_append(out, v + i, run) : CM_OK;
		i += run;
		if (!rc && i < n) {
			rc = cm_buf_append(out, v[i] == '\n' ? "\\n" : v[i] == '"' ? "\\\"" : "\\\\", 2);
			i++;
		}
	}
	return rc;
}

/* Prometheus' text for v: integers below 2^53 (most cgroup and /proc values) directly, the rest through
 * cm_fmt_double (the shortest round-trip digits); both give Go's FormatFloat(v, 'f', -1, 64). */
static size_t fmt_value(char *buf, size_t cap, double v)
{
	if (v == v && fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v && !(v == 0 && signbit(v))) {
		char tmp[24];
		size_t n = 0;
		uint64_t u = (uint64_t)(v < 0 ? -v : v);
		do
			tmp[n++] = (char)('0' + u % 10);
		while ((u /= 10));
		size_t o = 0;
		if (v < 0)
			buf[o++] = '-';
		while (n && o + 1 < cap)
			buf[o++] = tmp[--n];
		buf[o] = 0;
		return o;
	}
	return cm_fmt_double(buf, cap, v);
}

static int render_one(const na__pass *g, const render_row *row, cm_buf *out)
{
	const na_rec *r = &g->rec[row->i];
	const uint8_t *lab = g->sb->data + r->lab;
	cm_label_ref l;
	int rc = cm_buf_append(out, row->name, row->nlen), k = 0, more;
	for (size_t pos = row->pos; !rc && (more = cm_wire_label_next(lab, r->len, &pos, &l)) > 0; k++) {
		rc = cm_buf_append(out, k ? "," : "{", 1);
		rc = rc ? rc : cm_buf_append(out, l.name, l.nlen);
		rc = rc ? rc : cm_buf_append(out, "=\"", 2);
		rc = rc ? rc : put_text_value(out, l.value, l.vlen);
		rc = rc ? rc : cm_buf_append(out, "\"", 1);
	}
	if (!rc && more < 0)
		rc = more;
	char v[CM_FMT_DOUBLE_MAX];
	size_t n = fmt_value(v, sizeof(v), r->v);
	rc = rc ? rc : cm_buf_puts(out, k ? "} " : " ");
	rc = rc ? rc : cm_buf_append(out, v, n);
	return rc ? rc : cm_buf_append(out, "\n", 1);
}

int na__pass_render(const na__pass *g, cm_buf *out)
{
	render_row *order = malloc((g->n ? g->n : 1) * sizeof(*order));
	if (!order)
		return CM_ENOMEM;
	int rc = CM_OK;
	for (size_t i = 0; i < g->n && !rc; i++) {
		cm_label_ref l;
		size_t pos = 0;
		if (cm_wire_label_next(g->sb->data + g->rec[i].lab, g->rec[i].len, &pos, &l) != 1 || l.nlen != 8 ||
		    memcmp(l.name, "__name__", 8))
			rc = CM_EPROTO; /* not a series of emit_series */
		order[i] = (render_row){l.value, l.vlen, pos, i};
	}
	if (!rc)
		qsort(order, g->n, sizeof(*order), cmp_by_name);
	for (size_t i = 0; i < g->n && !rc; i++) {
		const render_row *row = &order[i];
		if (!i || row->nlen != order[i - 1].nlen || memcmp(row->name, order[i - 1].name, row->nlen)) {
			const char *type, *help;
			family_of(row->name, row->nlen, &type, &help);
			int nl = (int)row->nlen;
			rc = cm_buf_printf(out, "# HELP %.*s %s\n# TYPE %.*s %s\n", nl, row->name, help, nl, row->name, type);
		}
		rc = rc ? rc : render_one(g, row, out);
	}
	free(order);
	return rc;
}

void na__collector_set_logs(na__collector *c, const cm_log_stream *streams, size_t n)
{
	c->logs = streams, c->nlogs = n;
}

/* ---- the pass --------------------------------------------------------------------------------------- */

const na__pass *na__collector_last(const na__collector *c) { return c->last; }

int na__collect(na__collector *c, uint64_t seq, cm_buf *frame, na__collect_stats *st, cm_err *err)
{
	int64_t t0 = cm_mono_ns();
	c->last = NULL;
	c->cur = !c->cur;
	na_gen *g = &c->gen[c->cur];
	na_gen *p = &c->gen[!c->cur];
	cm_arena_reset(&g->arena);
	g->n = 0;
	g->t_ms = c->now_ms = cm_now_ms();
	/* in place while the series repeat the last pass's (same timestamp length: the samples fit) */
	c->in_place = p->sb && cm_wire_varint_len((uint64_t)p->t_ms) == cm_wire_varint_len((uint64_t)g->t_ms);
	g->sb = c->in_place ? p->sb : p->sb == &c->sec[0] ? &c->sec[1] : &c->sec[0];
	if (!c->in_place)
		g->sb->len = 0;
	na_emit emit = {emit_series, c};
	cm_err cerr = {{0}};
	size_t nstale = 0;
	memset(st, 0, sizeof(*st));
	na_event_sink ev = {on_event, c};
	c->nev = 0;
	if (c->meta && na__meta_refresh(c->meta, c->now_ms, 0))
		st->meta_errors++;
	if (na__cgroups_collect(c->cgroups, &emit, &ev, c->now_ms, cm_mono_ns() / 1000000)) {
		st->cgroup_errors++;
		CM_LOG_RL(&c->rl_cgroup, CM_LOG_WARN, "agent", "%s", "cgroup collection incomplete");
	}
	/* a cgroup the walk found has no pod yet: re-read the sources now, so this pass's inventory (and the
	 * DNS endpoints built from it) has the new pod; its series get the labels next pass */
	if (c->meta && na__meta_refresh(c->meta, c->now_ms, 0))
		st->meta_errors++;
	if (na__node_collect(c->nodestat, &emit, &cerr)) {
		st->node_errors++;
		CM_LOG_RL(&c->rl_node, CM_LOG_WARN, "agent", "node collection: %s", cerr.msg);
	}
	if (c->in_place) { /* the series so far, without what came after them in the last pass */
		g->end = g->n < p->n ? p->rec[g->n].msg : p->end;
		g->sb->len = g->end;
	}
	/* the same series as the last pass: nothing vanished; else markers, in a section of this pass's own */
	if (c->in_place && g->n < p->n && leave_in_place(c))
		return cm_errf(err, CM_ENOMEM, "out of memory marking vanished series");
	if (!c->in_place) {
		g->end = g->sb->len;
		if (add_stale(c, &nstale))
			return cm_errf(err, CM_ENOMEM, "out of memory marking vanished series");
	}
	cm_inventory inv;
	int inv_due = 0;
	if (build_inventory(c, &inv, &inv_due))
		return cm_errf(err, CM_ENOMEM, "out of memory building the inventory");
	cm_batch b = {.node = c->node, .boot_id = c->boot_id, .agent_version = CM_VERSION, .seq = seq,
		      .created_ms = c->now_ms, .series_pb = g->sb->data, .series_pblen = g->sb->len,
		      .inventory = inv_due ? &inv : NULL, .events = c->ev, .nevents = c->nev,
		      .log_streams = c->logs, .nlog_streams = c->nlogs};
	const uint8_t *f;
	size_t flen;
	int rc = cm_wire_enc_encode(c->enc, &b, &f, &flen, err);
	if (!rc && cm_buf_append(frame, f, flen))
		rc = cm_errf(err, CM_ENOMEM, "out of memory for the batch frame");
	if (!rc && inv_due)
		c->inventory_sent = 1, c->inventory_sent_ms = c->now_ms;
	st->events = c->nev;
	st->inventory = inv_due;
	if (!rc)
		c->last = g;
	st->series = g->n;
	st->stale = nstale;
	st->duration_ns = cm_mono_ns() - t0;
	return rc;
}
