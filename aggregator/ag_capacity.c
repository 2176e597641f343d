/* ag_capacity.c -- the capacity model: per node and container requests, limits and usage over a window.
 *
 * ag_capacity_report.c asks for one model per request (ag__cap_model_build) and renders the four
 * reports from it. Inputs, all read here and nowhere else:
 *   - requests and limits per container from the agents' inventory (state_nodes in <data-dir>/state.db,
 *     written by ag_state.c; read through a connection of our own, WAL readers never wait; nodes not
 *     heard from since the window began are left out, and so are finished pods);
 *   - for containers the inventory does not describe (or describes without resources), the cgroup
 *     settings the agent ships:
 *     container_spec_cpu_shares / 1024 is the CPU request (Kubernetes' mapping; 2 = none),
 *     container_spec_cpu_quota / _period the CPU limit, container_spec_memory_limit_bytes the memory
 *     limit, container_spec_memory_reservation_limit_bytes the memory request (0 = unset everywhere);
 *   - usage from the tsdb, never through PromQL: container_cpu_usage_seconds_total as a rate per bucket,
 *     container_memory_working_set_bytes as the peak per bucket, container_oom_events_total and
 *     container_cpu_cfs_throttled_periods_total as increases over the window;
 *   - node capacity from machine_cpu_cores and machine_memory_bytes (the newest value in the window).
 * A container is a series with a `container` (or docker's `name`) label, keyed by node, namespace, pod
 * and that name, or one whose id is an inventory container's cgroup (by_cgroup); other cgroups (pod
 * and QoS slices, system services) would count twice and are left out, as `container!=""` does in
 * Prometheus rules.
 *
 * Buckets: step = window / 288 rounded up to whole seconds, at least 5 s; from 1 min up it is rounded up
 * to a multiple of 5 min (fewer buckets, down to 58 at 4.8 h) and the reads come from the 5 min tier
 * (ts_select_agg: LAST for counters and cgroup settings, MAX for memory) where compaction wrote one
 * (complete days), raw samples for the rest. Counters are made monotonic (a drop is a reset: the new
 * value is the increase) before the last value of each bucket is kept, and one bucket before the window
 * is read so the first bucket has a rate. The model lives in the request's arena; nothing here blocks
 * on anything but the tsdb read lock and a sqlite read.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define BUCKETS_TARGET 288
#define STEP_MIN_MS    5000
#define TIER_MS        300000
#define TIER_ROUND_MS  60000
#define WINDOW_MIN_MS  10000
#define MAXD(a, b)     ((a) > (b) ? (a) : (b))

struct ag__capacity {
	ts_db *db;
	sqlite3 *sdb;
	ag__capacity_opts opts;
};

/* ---- a string map into the arena ---------------------------------------------------------------------- */

typedef struct smap {
	const char **keys;
	uint32_t *vals;
	size_t cap, n;
	cm_arena *a;
} smap;

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return h;
}

static int smap_find(const smap *m, const char *k, uint32_t *v)
{
	if (!m->cap)
		return 0;
	for (size_t i = hash_str(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (!m->keys[i])
			return 0;
		if (!strcmp(m->keys[i], k)) {
			*v = m->vals[i];
			return 1;
		}
	}
}

static int smap_grow(smap *m)
{
	smap g = {.cap = m->cap ? m->cap * 2 : 256, .a = m->a};
	g.keys = cm_arena_calloc(m->a, g.cap, sizeof(*g.keys));
	g.vals = cm_arena_calloc(m->a, g.cap, sizeof(*g.vals));
	if (!g.keys || !g.vals)
		return CM_ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->keys[i])
			continue;
		size_t j = hash_str(m->keys[i]) & (g.cap - 1);
		while (g.keys[j])
			j = (j + 1) & (g.cap - 1);
		g.keys[j] = m->keys[i], g.vals[j] = m->vals[i];
	}
	g.n = m->n;
	*m = g;
	return CM_OK;
}

/* k is copied; the caller has checked it is absent. */
static int smap_put(smap *m, const char *k, uint32_t v)
{
	if ((m->n + 1) * 2 > m->cap && smap_grow(m))
		return CM_ENOMEM;
	const char *copy = cm_arena_strdup(m->a, k);
	if (!copy)
		return CM_ENOMEM;
	size_t j = hash_str(k) & (m->cap - 1);
	while (m->keys[j])
		j = (j + 1) & (m->cap - 1);
	m->keys[j] = copy, m->vals[j] = v;
	m->n++;
	return CM_OK;
}

/* ---- build state ------------------------------------------------------------------------------------------ */

typedef enum kind {
	K_CPU, K_MEM, K_OOM, K_THR, K_SHARES, K_QUOTA, K_PERIOD, K_MEMLIM, K_MEMRES, K_CORES, K_MACHMEM
} kind;

/* A monotonic counter read bucket by bucket (index 0 is the bucket before the window). */
typedef struct counter {
	uint64_t owner;   /* hash of the label set that feeds it: a second series for the same key is ignored */
	int have;
	double prev, mono;
	double *last;     /* nb + 1 slots, NaN = none */
	int64_t *t_last;
	cm_sample *tier;  /* the tier's points, fed after the raw samples before them */
	size_t ntier;
} counter;

typedef struct spec {
	double shares, quota, period, mem_limit, mem_reservation;
	int64_t t[K_MEMRES + 1]; /* when each was seen: an older read never replaces a newer value */
} spec;

typedef struct ctr_acc {
	counter cpu, oom, thr;
	uint64_t mem_owner;
	spec sp;
	int from_inventory;
} ctr_acc;

typedef struct build {
	ag__cap_model *m;
	cm_arena *a;
	smap ctr_map, node_map;
	smap cgroup_map;          /* node + inventory cgroup path -> container, for series without labels */
	ctr_acc *acc;
	size_t cap_ctrs, cap_nodes;
	int rc;
	int64_t lo_ms;           /* start of bucket 0 (the one before the window) */
	int64_t tier_from_ms;    /* what the tier covered in the current metric's read */
	int64_t tier_until_ms;
} build;

static size_t bucket_of(const build *b, int64_t t)
{
	if (t < b->lo_ms)
		return 0;
	size_t i = (size_t)((t - b->lo_ms) / b->m->step_ms);
	return i > b->m->nb ? b->m->nb : i;
}

static double *nan_array(cm_arena *a, size_t n)
{
	double *v = cm_arena_alloc(a, n * sizeof(*v));
	for (size_t i = 0; v && i < n; i++)
		v[i] = NAN;
	return v;
}

static int node_index(build *b, const char *name, uint32_t *out)
{
	char key[512];
	snprintf(key, sizeof(key), "%s", name);
	if (smap_find(&b->node_map, key, out))
		return CM_OK;
	ag__cap_model *m = b->m;
	if (m->nnodes == b->cap_nodes) {
		size_t nc = b->cap_nodes ? b->cap_nodes * 2 : 16;
		ag__cap_node *nn = cm_arena_calloc(b->a, nc, sizeof(*nn));
		if (!nn)
			return CM_ENOMEM;
		if (m->nnodes)
			memcpy(nn, m->nodes, m->nnodes * sizeof(*nn));
		m->nodes = nn, b->cap_nodes = nc;
	}
	ag__cap_node *n = &m->nodes[m->nnodes];
	memset(n, 0, sizeof(*n));
	n->name = cm_arena_strdup(b->a, name);
	n->cap_cpu = n->cap_mem = NAN;
	if (!n->name || smap_put(&b->node_map, key, (uint32_t)m->nnodes))
		return CM_ENOMEM;
	*out = (uint32_t)m->nnodes++;
	return CM_OK;
}

static int counter_init(build *b, counter *c)
{
	c->last = nan_array(b->a, b->m->nb + 1);
	c->t_last = cm_arena_calloc(b->a, b->m->nb + 1, sizeof(*c->t_last));
	return c->last && c->t_last ? CM_OK : CM_ENOMEM;
}

static int grow_ctrs(build *b)
{
	ag__cap_model *m = b->m;
	size_t nc = b->cap_ctrs ? b->cap_ctrs * 2 : 64;
	ag__cap_ctr *nn = cm_arena_calloc(b->a, nc, sizeof(*nn));
	ctr_acc *na = cm_arena_calloc(b->a, nc, sizeof(*na));
	if (!nn || !na)
		return CM_ENOMEM;
	if (m->nctrs) {
		memcpy(nn, m->ctrs, m->nctrs * sizeof(*nn));
		memcpy(na, b->acc, m->nctrs * sizeof(*na));
	}
	m->ctrs = nn, b->acc = na, b->cap_ctrs = nc;
	return CM_OK;
}

/* The container (node, ns, pod, name), made when new; *out is its index. */
static int ctr_index(build *b, const char *node, const char *ns, const char *pod, const char *name, uint32_t *out)
{
	char key[2048];
	if ((size_t)snprintf(key, sizeof(key), "%s\x1f%s\x1f%s\x1f%s", node, ns, pod, name) >= sizeof(key))
		return CM_EINVAL;
	if (smap_find(&b->ctr_map, key, out))
		return CM_OK;
	ag__cap_model *m = b->m;
	uint32_t ni;
	if (node_index(b, node, &ni) || (m->nctrs == b->cap_ctrs && grow_ctrs(b)))
		return CM_ENOMEM;
	ag__cap_ctr *c = &m->ctrs[m->nctrs];
	ctr_acc *acc = &b->acc[m->nctrs];
	memset(c, 0, sizeof(*c));
	memset(acc, 0, sizeof(*acc));
	c->node = m->nodes[ni].name;
	c->ns = cm_arena_strdup(b->a, ns), c->pod = cm_arena_strdup(b->a, pod), c->name = cm_arena_strdup(b->a, name);
	c->mem = nan_array(b->a, m->nb + 1);
	if (!c->ns || !c->pod || !c->name || !c->mem || smap_put(&b->ctr_map, key, (uint32_t)m->nctrs))
		return CM_ENOMEM;
	*out = (uint32_t)m->nctrs++;
	return CM_OK;
}

/* ---- workload names ------------------------------------------------------------------------------------- */

static int is_alnum_lower(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9')))
			return 0;
	return n > 0;
}

/* The pod's owner guessed from its name: "<deploy>-<rs hash>-<5>", "<ds or job>-<5>", "<sts>-<ordinal>". */
static char *owner_from_pod(cm_arena *a, const char *pod)
{
	size_t n = strlen(pod);
	const char *d1 = strrchr(pod, '-');
	if (!d1 || d1 == pod)
		return cm_arena_strdup(a, pod);
	size_t tail = n - (size_t)(d1 - pod) - 1;
	int ordinal = tail > 0 && strspn(d1 + 1, "0123456789") == tail;
	if (ordinal || !(tail == 5 && is_alnum_lower(d1 + 1, 5)))
		return cm_arena_strndup(a, pod, ordinal ? (size_t)(d1 - pod) : n);
	size_t cut = (size_t)(d1 - pod);
	const char *d2 = cut ? memrchr(pod, '-', cut) : NULL;
	if (d2 && d2 != pod && cut - (size_t)(d2 - pod) - 1 >= 6 && is_alnum_lower(d2 + 1, cut - (size_t)(d2 - pod) - 1))
		cut = (size_t)(d2 - pod);
	return cm_arena_strndup(a, pod, cut);
}

/* The workload: the pod's app.kubernetes.io/name or app label, else its owner from the name. */
static const char *workload_of(cm_arena *a, json_t *labels, const char *pod)
{
	const char *keys[] = {"app.kubernetes.io/name", "app"};
	for (int i = 0; i < 2; i++) {
		const char *v = json_string_value(json_object_get(labels, keys[i]));
		if (v && *v)
			return cm_arena_strdup(a, v);
	}
	return owner_from_pod(a, pod);
}

/* ---- inventory (sqlite) ------------------------------------------------------------------------------------ */

static double quantity_or_zero(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	double v = 0;
	if (!s || !*s || ag__quantity_parse(s, &v, NULL) || v < 0)
		return 0;
	return v;
}

/* 1 when the pod counts (not finished), 0 when it does not, negative on failure. */
static int add_inventory_pod(build *b, const char *node, json_t *pod)
{
	const char *name = json_string_value(json_object_get(pod, "name")),
		   *ns = json_string_value(json_object_get(pod, "namespace")),
		   *status = json_string_value(json_object_get(pod, "status"));
	if (!name || !ns || (status && (!strcmp(status, "Succeeded") || !strcmp(status, "Failed"))))
		return 0;
	const char *wl = workload_of(b->a, json_object_get(pod, "labels"), name);
	json_t *c;
	size_t i;
	json_array_foreach(json_object_get(pod, "containers"), i, c)
	{
		const char *cn = json_string_value(json_object_get(c, "name"));
		uint32_t ci;
		if (!cn || !*cn)
			continue;
		int rc = ctr_index(b, node, ns, name, cn, &ci);
		if (rc)
			return rc;
		ag__cap_ctr *x = &b->m->ctrs[ci];
		json_t *req = json_object_get(c, "requests"), *lim = json_object_get(c, "limits");
		x->req_cpu = quantity_or_zero(req, "cpu"), x->req_mem = quantity_or_zero(req, "memory");
		x->lim_cpu = quantity_or_zero(lim, "cpu"), x->lim_mem = quantity_or_zero(lim, "memory");
		x->workload = wl;
		const char *cg = json_string_value(json_object_get(c, "cgroup"));
		char key[4200];
		uint32_t old;
		if (cg && *cg && (size_t)snprintf(key, sizeof(key), "%s\x1f%s", node, cg) < sizeof(key) &&
		    !smap_find(&b->cgroup_map, key, &old) && smap_put(&b->cgroup_map, key, ci))
			return CM_ENOMEM;
		b->acc[ci].from_inventory = 1;
	}
	return 1;
}

static int load_inventory(ag__capacity *c, build *b, cm_err *err)
{
	sqlite3_stmt *s;
	/* a node not heard from since the window began is gone: its last inventory does not count */
	if (sqlite3_prepare_v2(c->sdb, "SELECT node, inventory FROM state_nodes WHERE last_seen_ms >= ?1 ORDER BY node",
			       -1, &s, NULL))
		return cm_errf(err, CM_EIO, "state db: %s", sqlite3_errmsg(c->sdb));
	sqlite3_bind_int64(s, 1, b->m->start_ms);
	int rc = CM_OK, step;
	while (!rc && (step = sqlite3_step(s)) == SQLITE_ROW) {
		const char *node = (const char *)sqlite3_column_text(s, 0), *inv = (const char *)sqlite3_column_text(s, 1);
		uint32_t ni;
		if (!node || (rc = node_index(b, node, &ni)) || !inv)
			continue;
		json_t *j = json_loads(inv, 0, NULL), *pod;
		size_t i;
		json_array_foreach(json_object_get(j, "pods"), i, pod)
		{
			int counted = rc ? 0 : add_inventory_pod(b, node, pod);
			if (counted > 0)
				b->m->nodes[ni].pods++;
			rc = counted < 0 ? counted : rc;
		}
		json_decref(j);
	}
	sqlite3_finalize(s);
	return rc ? cm_errf(err, rc, "out of memory reading the inventory") : CM_OK;
}

/* ---- series from the tsdb ------------------------------------------------------------------------------------ */


typedef struct read_ctx {
	build *b;
	kind k;
	int tier;
} read_ctx;

typedef struct ids {
	const char *node, *ns, *pod, *name, *id;
	uint64_t h;
} ids;

static void label_ids(const cm_label *l, size_t n, ids *o)
{
	memset(o, 0, sizeof(*o));
	o->ns = o->pod = "";
	const char *docker_name = NULL;
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h = (h ^ hash_str(l[i].name)) * 1099511628211ULL;
		h = (h ^ hash_str(l[i].value)) * 1099511628211ULL;
		if (!strcmp(l[i].name, "node"))
			o->node = l[i].value;
		else if (!strcmp(l[i].name, "namespace"))
			o->ns = l[i].value;
		else if (!strcmp(l[i].name, "pod"))
			o->pod = l[i].value;
		else if (!strcmp(l[i].name, "container"))
			o->name = l[i].value;
		else if (!strcmp(l[i].name, "id"))
			o->id = l[i].value;
		else if (!strcmp(l[i].name, "name"))
			docker_name = l[i].value;
	}
	if (!o->name || !*o->name || !strcmp(o->name, "POD"))
		o->name = docker_name && *docker_name ? docker_name : NULL;
	o->h = h | 1; /* never 0, which means "no owner yet" */
}

static void counter_feed(build *b, counter *c, const cm_sample *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		double v = s[i].v;
		if (isnan(v))
			continue;
		if (!c->have) {
			c->have = 1, c->mono = 0;
		} else {
			c->mono += v >= c->prev ? v - c->prev : v;
		}
		c->prev = v;
		size_t k = bucket_of(b, s[i].t_ms);
		c->last[k] = c->mono, c->t_last[k] = s[i].t_ms;
	}
}

static double last_value(const cm_sample *s, size_t n)
{
	for (size_t i = n; i-- > 0;)
		if (!isnan(s[i].v))
			return s[i].v;
	return NAN;
}

static int on_machine(build *b, kind k, const ids *id, const cm_sample *s, size_t n)
{
	uint32_t ni;
	double v = last_value(s, n);
	if (!id->node || isnan(v))
		return CM_OK;
	int rc = node_index(b, id->node, &ni);
	if (!rc)
		*(k == K_CORES ? &b->m->nodes[ni].cap_cpu : &b->m->nodes[ni].cap_mem) = v;
	return rc;
}

/* The newest value of a cgroup setting; tier points (LAST of 5 min) count as at their bucket's end. */
static void on_spec(ctr_acc *acc, kind k, const cm_sample *s, size_t n, int tier)
{
	size_t i = n;
	while (i > 0 && isnan(s[i - 1].v))
		i--;
	if (!i)
		return;
	int64_t t = s[i - 1].t_ms + (tier ? TIER_MS - 1 : 0);
	double *dst[] = {[K_SHARES] = &acc->sp.shares, [K_QUOTA] = &acc->sp.quota, [K_PERIOD] = &acc->sp.period,
			 [K_MEMLIM] = &acc->sp.mem_limit, [K_MEMRES] = &acc->sp.mem_reservation};
	if (acc->sp.t[k] && acc->sp.t[k] > t)
		return;
	*dst[k] = s[i - 1].v, acc->sp.t[k] = t;
}

static void on_mem(build *b, ag__cap_ctr *c, ctr_acc *acc, uint64_t h, const cm_sample *s, size_t n)
{
	if (acc->mem_owner && acc->mem_owner != h)
		return;
	acc->mem_owner = h;
	for (size_t i = 0; i < n; i++) {
		size_t k = bucket_of(b, s[i].t_ms);
		if (!isnan(s[i].v) && (isnan(c->mem[k]) || s[i].v > c->mem[k]))
			c->mem[k] = s[i].v;
	}
}

/* A series without container labels whose cgroup is an inventory container's: its id equals the
 * container's cgroup, or ends with it after a '/' (cgroup v1 hierarchies where the agent's own cgroup
 * differs per controller: the memory series of /a is /<prefix>/a, only the cpu ones get the labels). */
static int by_cgroup(build *b, const ids *id, uint32_t *ci)
{
	if (!id->id || !b->cgroup_map.n)
		return 0;
	char key[4200];
	for (const char *p = id->id; p; p = strchr(p + 1, '/')) {
		if ((size_t)snprintf(key, sizeof(key), "%s\x1f%s", id->node, p) >= sizeof(key))
			return 0;
		if (smap_find(&b->cgroup_map, key, ci))
			return 1;
	}
	return 0;
}

static int on_series(void *ctx, const cm_label *l, size_t nl, const cm_sample *s, size_t n)
{
	read_ctx *r = ctx;
	build *b = r->b;
	ids id;
	label_ids(l, nl, &id);
	if (r->tier && n) {
		b->tier_from_ms = s[0].t_ms < b->tier_from_ms ? s[0].t_ms : b->tier_from_ms;
		b->tier_until_ms = MAXD(b->tier_until_ms, s[n - 1].t_ms + TIER_MS);
	}
	if (r->k == K_CORES || r->k == K_MACHMEM)
		return (b->rc = on_machine(b, r->k, &id, s, n));
	uint32_t ci;
	if (!id.node || (!id.name && !by_cgroup(b, &id, &ci)))
		return 0;
	if (id.name && (b->rc = ctr_index(b, id.node, id.ns, id.pod, id.name, &ci)))
		return b->rc;
	ag__cap_ctr *c = &b->m->ctrs[ci];
	ctr_acc *acc = &b->acc[ci];
	counter *cn = r->k == K_CPU ? &acc->cpu : r->k == K_OOM ? &acc->oom : r->k == K_THR ? &acc->thr : NULL;
	if (cn) {
		if (cn->owner && cn->owner != id.h)
			return 0;
		cn->owner = id.h;
		if (!cn->last && (b->rc = counter_init(b, cn))) /* made on first use: most containers lack some */
			return b->rc;
		if (!r->tier)
			counter_feed(b, cn, s, n);
		else if (n && !(cn->tier = cm_arena_alloc(b->a, n * sizeof(*s))))
			return (b->rc = CM_ENOMEM);
		for (size_t i = 0; r->tier && i < n; i++) /* LAST of [t, t + 5 min): taken as at its end */
			cn->tier[i] = (cm_sample){s[i].t_ms + TIER_MS - 1, s[i].v};
		if (r->tier)
			cn->ntier = n;
	} else if (r->k == K_MEM) {
		on_mem(b, c, acc, id.h, s, n);
	} else {
		on_spec(acc, r->k, s, n, r->tier);
	}
	return 0;
}

static const char *const metric_names[] = {
	[K_CPU] = "container_cpu_usage_seconds_total",
	[K_MEM] = "container_memory_working_set_bytes",
	[K_OOM] = "container_oom_events_total",
	[K_THR] = "container_cpu_cfs_throttled_periods_total",
	[K_SHARES] = "container_spec_cpu_shares",
	[K_QUOTA] = "container_spec_cpu_quota",
	[K_PERIOD] = "container_spec_cpu_period",
	[K_MEMLIM] = "container_spec_memory_limit_bytes",
	[K_MEMRES] = "container_spec_memory_reservation_limit_bytes",
	[K_CORES] = "machine_cpu_cores",
	[K_MACHMEM] = "machine_memory_bytes",
};

/* The counters' buffered tier points, after the raw samples before the tier and before those after it. */
static void feed_tier(build *b, kind k)
{
	for (size_t i = 0; i < b->m->nctrs; i++) {
		ctr_acc *acc = &b->acc[i];
		counter *cn = k == K_CPU ? &acc->cpu : k == K_OOM ? &acc->oom : &acc->thr;
		counter_feed(b, cn, cn->tier, cn->ntier);
		cn->tier = NULL, cn->ntier = 0;
	}
}

/* One metric over [lo, end]: the 5 min tier where the step allows and compaction wrote one (whole
 * days), raw samples before and after what it covers. */
static int read_metric(ag__capacity *c, build *b, kind k)
{
	ts_matcher mt;
	int rc = ts_matcher_init(&mt, TS_MATCH_EQ, "__name__", metric_names[k], NULL);
	if (rc)
		return rc;
	read_ctx r = {b, k, 0};
	int64_t lo = b->lo_ms, hi = b->m->end_ms;
	int tiered = k != K_CORES && k != K_MACHMEM;
	b->tier_from_ms = INT64_MAX, b->tier_until_ms = lo;
	if (tiered && b->m->step_ms % TIER_MS == 0) {
		r.tier = 1;
		rc = ts_select_agg(c->db, &mt, 1, lo, hi, TIER_MS, k == K_MEM ? TS_AGG_MAX : TS_AGG_LAST, on_series, &r);
		/* counters are fed in time order: their tier points wait for the raw samples before them */
		r.tier = 0;
	}
	int64_t raw_to = b->tier_from_ms == INT64_MAX ? hi : b->tier_from_ms - 1;
	if (!rc && !b->rc && lo <= raw_to)
		rc = ts_select(c->db, &mt, 1, lo, raw_to, on_series, &r);
	if (!rc && !b->rc && (k == K_CPU || k == K_OOM || k == K_THR) && b->tier_from_ms != INT64_MAX)
		feed_tier(b, k);
	if (!rc && !b->rc && b->tier_from_ms != INT64_MAX && b->tier_until_ms <= hi)
		rc = ts_select(c->db, &mt, 1, b->tier_until_ms, hi, on_series, &r);
	ts_matcher_close(&mt);
	return b->rc ? b->rc : rc;
}

/* ---- finishing ------------------------------------------------------------------------------------------ */

static void derive_from_spec(ag__cap_ctr *c, const spec *sp)
{
	if (sp->shares > 2)
		c->req_cpu = sp->shares / 1024.0;
	if (sp->quota > 0 && sp->period > 0)
		c->lim_cpu = sp->quota / sp->period;
	if (sp->mem_limit > 0)
		c->lim_mem = sp->mem_limit;
	if (sp->mem_reservation > 0)
		c->req_mem = sp->mem_reservation;
	c->spec_derived = 1;
}

/* cores per bucket from the counter's last values; index i + 1 of the counter is bucket i. */
static void cpu_rates(const ag__cap_model *m, const counter *cn, double *out)
{
	int64_t pt = 0;
	double pv = NAN;
	for (size_t k = 0; cn->last && k <= m->nb; k++) {
		if (isnan(cn->last[k]))
			continue;
		if (k > 0 && !isnan(pv) && cn->t_last[k] > pt)
			out[k - 1] = (cn->last[k] - pv) * 1000.0 / (double)(cn->t_last[k] - pt);
		pv = cn->last[k], pt = cn->t_last[k];
	}
}

static double increase(const ag__cap_model *m, const counter *cn)
{
	double first = NAN, last = NAN;
	for (size_t k = 0; cn->last && k <= m->nb; k++)
		if (!isnan(cn->last[k])) {
			if (isnan(first))
				first = cn->last[k];
			last = cn->last[k];
		}
	return isnan(first) ? 0 : last - first;
}

static void add_into(double *sum, const double *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			sum[i] = isnan(sum[i]) ? v[i] : sum[i] + v[i];
}

static int finish_ctr(build *b, uint32_t i)
{
	ag__cap_model *m = b->m;
	ag__cap_ctr *c = &m->ctrs[i];
	ctr_acc *acc = &b->acc[i];
	if (!acc->from_inventory || !(c->req_cpu || c->req_mem || c->lim_cpu || c->lim_mem))
		derive_from_spec(c, &acc->sp);
	if (!c->workload && !(c->workload = *c->pod ? owner_from_pod(b->a, c->pod) : c->name))
		return CM_ENOMEM;
	double *cpu = nan_array(b->a, m->nb);
	if (!cpu)
		return CM_ENOMEM;
	cpu_rates(m, &acc->cpu, cpu);
	c->cpu = cpu;
	c->mem++; /* drop the bucket before the window */
	c->ooms = increase(m, &acc->oom), c->throttled = increase(m, &acc->thr);
	uint32_t ni;
	node_index(b, c->node, &ni);
	ag__cap_node *n = &m->nodes[ni];
	n->req_cpu += c->req_cpu, n->req_mem += c->req_mem, n->lim_cpu += c->lim_cpu, n->lim_mem += c->lim_mem;
	add_into(n->cpu, c->cpu, m->nb);
	add_into(n->mem, c->mem, m->nb);
	return CM_OK;
}

/* Pods seen only in the tsdb count on their node too. */
static int count_series_pods(build *b)
{
	smap seen = {.a = b->a};
	for (size_t i = 0; i < b->m->nctrs; i++) {
		const ag__cap_ctr *c = &b->m->ctrs[i];
		char key[1600];
		uint32_t v, ni;
		snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", c->node, c->ns, c->pod);
		if (b->acc[i].from_inventory || smap_find(&seen, key, &v))
			continue;
		if (smap_put(&seen, key, 0) || node_index(b, c->node, &ni))
			return CM_ENOMEM;
		b->m->nodes[ni].pods++;
	}
	return CM_OK;
}

static int finish(ag__capacity *c, build *b)
{
	ag__cap_model *m = b->m;
	for (size_t i = 0; i < m->nnodes; i++) {
		ag__cap_node *n = &m->nodes[i];
		if (!(n->cpu = nan_array(b->a, m->nb)) || !(n->mem = nan_array(b->a, m->nb)))
			return CM_ENOMEM;
	}
	int rc = count_series_pods(b);
	for (uint32_t i = 0; !rc && i < m->nctrs; i++)
		rc = finish_ctr(b, i);
	for (size_t i = 0; !rc && i < m->nnodes; i++) {
		ag__cap_node *n = &m->nodes[i];
		n->alloc_cpu = isnan(n->cap_cpu) ? NAN : MAXD(0.0, n->cap_cpu - c->opts.reserved_cpu);
		n->alloc_mem = isnan(n->cap_mem) ? NAN : MAXD(0.0, n->cap_mem - c->opts.reserved_mem);
	}
	return rc;
}

static int64_t pick_step(int64_t window_ms)
{
	int64_t step = (window_ms + BUCKETS_TARGET - 1) / BUCKETS_TARGET;
	step = (step + 999) / 1000 * 1000;
	if (step < STEP_MIN_MS)
		step = STEP_MIN_MS;
	if (step >= TIER_ROUND_MS) /* windows from 4.8 h: whole 5 min buckets, so the tier can be read */
		step = (step + TIER_MS - 1) / TIER_MS * TIER_MS;
	return step;
}

int ag__cap_model_build(ag__capacity *c, int64_t end_ms, int64_t window_ms, cm_arena *a, ag__cap_model *out,
			cm_err *err)
{
	if (window_ms < WINDOW_MIN_MS)
		return cm_errf(err, CM_EINVAL, "window must be at least 10s");
	if (window_ms > c->opts.max_window_ms)
		return cm_errf(err, CM_EINVAL, "window is beyond the retention of the history (%lld s; "
			       "--capacity-max-window)", (long long)(c->opts.max_window_ms / 1000));
	ag__cap_model m = {.end_ms = end_ms, .step_ms = pick_step(window_ms)};
	m.nb = (size_t)((window_ms + m.step_ms - 1) / m.step_ms);
	m.start_ms = end_ms - (int64_t)m.nb * m.step_ms;
	build b = {.m = &m, .a = a, .ctr_map = {.a = a}, .node_map = {.a = a}, .cgroup_map = {.a = a},
		   .lo_ms = m.start_ms - m.step_ms};
	int rc = load_inventory(c, &b, err);
	if (rc)
		return rc;
	static const kind order[] = {K_CORES, K_MACHMEM, K_SHARES, K_QUOTA, K_PERIOD, K_MEMLIM,
				     K_MEMRES, K_CPU,   K_MEM,    K_OOM,   K_THR};
	for (size_t i = 0; !rc && i < CM_ARRAY_LEN(order); i++)
		rc = read_metric(c, &b, order[i]);
	rc = rc ? rc : finish(c, &b);
	if (rc)
		return cm_errf(err, rc, "cannot read the store: %s", cm_strerror(rc));
	*out = m;
	return CM_OK;
}

/* ---- create and destroy ------------------------------------------------------------------------------------ */

int ag__capacity_create(ts_db *db, const char *state_db, const ag__capacity_opts *o, ag__capacity **out,
			cm_err *err)
{
	ag__capacity *c = calloc(1, sizeof(*c));
	if (!c)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	c->db = db, c->opts = *o;
	if (sqlite3_open_v2(state_db, &c->sdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
			    NULL)) {
		int rc = cm_errf(err, CM_EIO, "%s: %s", state_db, c->sdb ? sqlite3_errmsg(c->sdb) : "cannot open");
		ag__capacity_destroy(c);
		return rc;
	}
	sqlite3_busy_timeout(c->sdb, 5000);
	*out = c;
	return CM_OK;
}

void ag__capacity_destroy(ag__capacity *c)
{
	if (!c)
		return;
	sqlite3_close(c->sdb);
	free(c);
}

const ag__capacity_opts *ag__cap_opts(const ag__capacity *c) { return &c->opts; }
