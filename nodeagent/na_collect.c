/* na_collect.c -- one collection pass: run the collectors, build the wire batch and the /metrics text.
 *
 * Called on a libuv worker thread once per interval (never two at once). Collectors emit series
 * through na_emit; this file stamps them with the pass's time, keeps them in a vector that is reused
 * from pass to pass (strings in an arena reset per pass; a string equal to the one the previous series
 * had at the same position is shared, not copied) and encodes the batch for the sender with an encoder
 * kept across passes. The Prometheus text of the agent's own /metrics is rendered from a finished pass
 * only when it is scraped (na__pass_render, on a worker while the next pass may run: that pass only
 * reads the one before it).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

/* One pass's series; two alternate so the next pass can tell which series vanished. */
struct na__pass {
	cm_arena arena;       /* label strings, reset (blocks kept) at the start of the pass that reuses it */
	cm_series *series;    /* [0, n) collected, then stale markers appended for the batch */
	cm_sample *samples;
	uint64_t *hash;       /* per collected series, over its labels */
	size_t n, cap;
};
typedef struct na__pass na_gen;

struct na__collector {
	na__cgroups *cgroups;
	na__meta *meta;
	const char *proc_root;
	char node[256];
	char boot_id[64];
	na_gen gen[2];
	int cur;
	const na_gen *last;   /* the last pass that succeeded, NULL while one runs or after a failure */
	const char *recent[25]; /* per name/value position: the string the last series copied there */
	uint64_t prefix[12];    /* per label position: the hash over recent[1 .. 2 * i + 2] */
	size_t nprefix;         /* prefix[0, nprefix) hold the last series' labels (it may have had fewer
				 * than recent[] remembers: a shorter series leaves the positions after it) */
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
#define WIRE_ZSTD_LEVEL 1 /* as small as 3 on agent batches (24 vs 27 KB at 200 cgroups), half the context */

static int read_boot_id(const char *proc_root, char *out, size_t cap)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/sys/kernel/random/boot_id", proc_root);
	int rc = cm_read_file(path, out, cap, NULL);
	if (!rc)
		out[strcspn(out, "\r\n")] = 0;
	return rc;
}

int na__collector_create(const na_config *cfg, na__collector **out, cm_err *err)
{
	na__collector *c = calloc(1, sizeof(*c));
	if (!c)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	c->proc_root = cfg->proc_root;
	c->inventory_ms = cfg->inventory_interval_ms > 0 ? cfg->inventory_interval_ms : 60000;
	snprintf(c->node, sizeof(c->node), "%s", cfg->node);
	int rc = read_boot_id(cfg->proc_root, c->boot_id, sizeof(c->boot_id));
	if (rc) {
		free(c);
		return cm_errf(err, rc, "cannot read %s/sys/kernel/random/boot_id: %s", cfg->proc_root,
			       cm_strerror(rc));
	}
	if (cfg->pods_dir || cfg->docker_root || cfg->kubelet_url) {
		na__meta_opts mo = {.pods_dir = cfg->pods_dir, .docker_root = cfg->docker_root,
				    .label_allowlist = cfg->label_allowlist, .kubelet_url = cfg->kubelet_url,
				    .kubelet_token_file = cfg->kubelet_token_file, .kubelet_ca_file = cfg->kubelet_ca_file,
				    .refresh_ms = cfg->meta_refresh_ms};
		if ((rc = na__meta_create(&mo, &c->meta, err))) {
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
	cm_wire_enc_destroy(c->enc);
	for (int i = 0; i < 2; i++) {
		cm_arena_close(&c->gen[i].arena);
		free(c->gen[i].series);
		free(c->gen[i].samples);
		free(c->gen[i].hash);
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
	cm_series *s = realloc(g->series, cap * sizeof(*s));
	if (!s)
		return CM_ENOMEM;
	g->series = s;
	cm_sample *smp = realloc(g->samples, cap * sizeof(*smp));
	if (!smp)
		return CM_ENOMEM;
	g->samples = smp;
	uint64_t *h = realloc(g->hash, cap * sizeof(*h));
	if (!h)
		return CM_ENOMEM;
	g->hash = h;
	g->cap = cap;
	return CM_OK;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (h ^ 0xff) * 1099511628211ULL;
}

/* s copied into the pass's arena, or the copy the previous series made at the same position when equal
 * (a cgroup's series share its label strings, so most are copied once per cgroup); *same says which. */
static const char *pass_str(na__collector *c, size_t pos, const char *s, int *same)
{
	*same = pos < CM_ARRAY_LEN(c->recent) && c->recent[pos] && !strcmp(c->recent[pos], s);
	if (*same)
		return c->recent[pos];
	const char *copy = cm_arena_strdup(&c->gen[c->cur].arena, s);
	if (pos < CM_ARRAY_LEN(c->recent))
		c->recent[pos] = copy;
	return copy;
}

/* Copies the labels after __name__ into l[1..] and sets *hash over them in order (the series hash adds
 * the name last, so that the hash over the labels a series shares with the one before is reused). */
static int copy_labels(na__collector *c, const cm_label *labels, size_t n, cm_label *l, uint64_t *hash)
{
	uint64_t h = 1469598103934665603ULL;
	int same = 1;
	for (size_t i = 0; i < n; i++) {
		int sn, sv;
		l[i + 1].name = pass_str(c, 2 * i + 1, labels[i].name, &sn);
		l[i + 1].value = pass_str(c, 2 * i + 2, labels[i].value, &sv);
		if (!l[i + 1].name || !l[i + 1].value) {
			c->nprefix = 0;
			return CM_ENOMEM;
		}
		same = same && sn && sv && i < c->nprefix;
		if (same) {
			h = c->prefix[i];
			continue;
		}
		h = hash_str(hash_str(h, l[i + 1].name), l[i + 1].value);
		if (i < CM_ARRAY_LEN(c->prefix))
			c->prefix[i] = h;
	}
	c->nprefix = n < CM_ARRAY_LEN(c->prefix) ? n : CM_ARRAY_LEN(c->prefix);
	*hash = h;
	return CM_OK;
}

static int emit_series(void *ctx, const char *metric, const cm_label *labels, size_t nlabels, double value)
{
	na__collector *c = ctx;
	na_gen *g = &c->gen[c->cur];
	if (grow(g, g->n + 1))
		return CM_ENOMEM;
	cm_label *l = cm_arena_alloc(&g->arena, (nlabels + 1) * sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	int same;
	uint64_t h;
	l[0] = (cm_label){"__name__", pass_str(c, 0, metric, &same)};
	if (!l[0].value || copy_labels(c, labels, nlabels, l, &h))
		return CM_ENOMEM;
	g->samples[g->n] = (cm_sample){c->now_ms, value};
	g->series[g->n] = (cm_series){l, nlabels + 1, NULL, 1};
	g->hash[g->n] = hash_str(h, l[0].value);
	g->n++;
	return CM_OK;
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

static int same_labels(const cm_series *a, const cm_series *b)
{
	if (a->nlabels != b->nlabels)
		return 0;
	for (size_t i = 0; i < a->nlabels; i++)
		if (strcmp(a->labels[i].name, b->labels[i].name) || strcmp(a->labels[i].value, b->labels[i].value))
			return 0;
	return 1;
}

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
		size_t j = g->hash[i] & (c->tcap - 1);
		while (c->table[j])
			j = (j + 1) & (c->tcap - 1);
		c->table[j] = i + 1;
	}
	return CM_OK;
}

static int in_current(const na__collector *c, const na_gen *g, const cm_series *s, uint64_t h)
{
	for (size_t j = h & (c->tcap - 1); c->table[j]; j = (j + 1) & (c->tcap - 1)) {
		size_t i = c->table[j] - 1;
		if (g->hash[i] == h && same_labels(&g->series[i], s))
			return 1;
	}
	return 0;
}

/* Appends to the current pass, after its collected series, one Prometheus stale marker (NaN with
 * the bits 0x7ff0000000000002) for each series of the previous pass that this pass did not see; the
 * labels stay in the previous pass's arena, untouched until the next pass. Returns how many. */
static int add_stale(na__collector *c, size_t *nstale)
{
	na_gen *g = &c->gen[c->cur], *p = &c->gen[!c->cur];
	uint64_t bits = 0x7ff0000000000002ULL;
	double stale;
	memcpy(&stale, &bits, sizeof(stale));
	*nstale = 0;
	if (index_current(c, g))
		return CM_ENOMEM;
	for (size_t i = 0; i < p->n; i++) {
		if (in_current(c, g, &p->series[i], p->hash[i]))
			continue;
		size_t k = g->n + *nstale;
		if (grow(g, k + 1))
			return CM_ENOMEM;
		g->samples[k] = (cm_sample){c->now_ms, stale};
		g->series[k] = (cm_series){p->series[i].labels, p->series[i].nlabels, NULL, 1};
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

static void family_of(const char *name, const char **type, const char **help)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(families); i++) {
		if (!strcmp(families[i].name, name)) {
			*type = families[i].type, *help = families[i].help;
			return;
		}
	}
	*type = "gauge";
	*help = strncmp(name, "node_memory_", 12) ? "Collected by corral-agent." : "Memory information field from "
											  "/proc/meminfo.";
	if (!strncmp(name, "node_network_", 13)) {
		*type = "counter";
		*help = "Network device statistic from /proc/net/dev.";
	}
}

static int cmp_by_name(const void *a, const void *b)
{
	const cm_series *x = *(cm_series *const *)a, *y = *(cm_series *const *)b;
	int c = strcmp(x->labels[0].value, y->labels[0].value);
	return c ? c : (x > y) - (x < y); /* stable: emission order within a family */
}

/* Label values in the text format escape backslash, double quote and newline. */
static int put_text_value(cm_buf *out, const char *v)
{
	int rc = CM_OK;
	for (const char *p = v; *p && !rc;) {
		size_t run = strcspn(p, "\\\"\n");
		rc = run ? cm_buf_append(out, p, run) : CM_OK;
		p += run;
		if (!rc && *p) {
			rc = cm_buf_append(out, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\", 2);
			p++;
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

static int render_one(const cm_series *s, cm_buf *out)
{
	int rc = cm_buf_puts(out, s->labels[0].value);
	for (size_t i = 1; i < s->nlabels && !rc; i++) {
		rc = cm_buf_append(out, i == 1 ? "{" : ",", 1);
		rc = rc ? rc : cm_buf_puts(out, s->labels[i].name);
		rc = rc ? rc : cm_buf_append(out, "=\"", 2);
		rc = rc ? rc : put_text_value(out, s->labels[i].value);
		rc = rc ? rc : cm_buf_append(out, "\"", 1);
	}
	char v[CM_FMT_DOUBLE_MAX];
	size_t n = fmt_value(v, sizeof(v), s->samples[0].v);
	rc = rc ? rc : cm_buf_puts(out, s->nlabels > 1 ? "} " : " ");
	rc = rc ? rc : cm_buf_append(out, v, n);
	return rc ? rc : cm_buf_append(out, "\n", 1);
}

int na__pass_render(const na__pass *g, cm_buf *out)
{
	cm_series **order = malloc((g->n ? g->n : 1) * sizeof(*order));
	if (!order)
		return CM_ENOMEM;
	for (size_t i = 0; i < g->n; i++)
		order[i] = &g->series[i];
	qsort(order, g->n, sizeof(*order), cmp_by_name);
	int rc = CM_OK;
	for (size_t i = 0; i < g->n && !rc; i++) {
		const char *name = order[i]->labels[0].value, *type, *help;
		if (!i || strcmp(name, order[i - 1]->labels[0].value)) {
			family_of(name, &type, &help);
			rc = cm_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
		}
		rc = rc ? rc : render_one(order[i], out);
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
	cm_arena_reset(&g->arena);
	memset(c->recent, 0, sizeof(c->recent));
	c->nprefix = 0;
	g->n = 0;
	c->now_ms = cm_now_ms();
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
	if (na__node_collect(c->proc_root, &emit, &cerr)) {
		st->node_errors++;
		CM_LOG_RL(&c->rl_node, CM_LOG_WARN, "agent", "node collection: %s", cerr.msg);
	}
	if (add_stale(c, &nstale))
		return cm_errf(err, CM_ENOMEM, "out of memory marking vanished series");
	for (size_t i = 0; i < g->n + nstale; i++)
		g->series[i].samples = &g->samples[i]; /* after the last realloc */
	cm_inventory inv;
	int inv_due = 0;
	if (build_inventory(c, &inv, &inv_due))
		return cm_errf(err, CM_ENOMEM, "out of memory building the inventory");
	cm_batch b = {.node = c->node, .boot_id = c->boot_id, .agent_version = CM_VERSION, .seq = seq,
		      .created_ms = c->now_ms, .series = g->series, .nseries = g->n + nstale,
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
