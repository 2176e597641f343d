/* ag_capacity_report.c -- GET /api/v1/capacity/{nodes,workloads,fit,summary}: JSON and CSV.
 *
 * Each handler parses its parameters (window, default 24h; time, default now; format=csv; fit's
 * cpu, memory and replicas), builds the model of the window (ag_capacity.c) in the request's arena
 * and renders it. The shapes are documented in docs/capacity.md and kept stable: the scheduler and
 * the web UI read them. Bad parameters answer 400 with the Prometheus error envelope and a message
 * naming the parameter. CPU is in cores, memory in bytes, null (JSON) or empty (CSV) where unknown.
 *
 * Node figures are exact order statistics of the node's per-bucket sums (nearest rank). Workload
 * figures follow the Kubernetes VPA recommender: decaying histograms with exponential buckets (CPU:
 * first bucket 0.01 cores, memory 10^7 bytes, each 5 % wider than the last), sample weights halving
 * every 24 h back from the window's end (CPU samples also weighted by the container's request, at
 * least 0.1 core), a percentile is the end of the bucket where the cumulative weight reaches it;
 * recommended request = p90 x 1.15 (CPU usage, memory peaks), bounds p50 x 1.15 and p95 x 1.15,
 * recommended limit = recommended request x the current limit/request ratio (none without both).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define DEFAULT_WINDOW_MS (24 * 3600 * 1000LL)
#define HALF_LIFE_MS      (24 * 3600 * 1000.0)
#define HIST_RATIO        1.05
#define HIST_BUCKETS      176
#define CPU_FIRST_BUCKET  0.01
#define MEM_FIRST_BUCKET  1e7
#define CPU_MIN_WEIGHT    0.1
#define MARGIN            1.15
#define TOP_N             10

typedef struct params {
	int64_t end_ms, window_ms;
	int csv;
} params;

/* ---- numbers ------------------------------------------------------------------------------------------ */

static int put_num(cm_buf *b, double v, int csv)
{
	if (!isfinite(v))
		return csv ? 0 : cm_buf_puts(b, "null");
	/* bytes as whole numbers, the rest to 10 significant digits (one snprintf: reports print thousands) */
	return cm_buf_printf(b, fabs(v) >= 1e6 ? "%.0f" : "%.10g", fabs(v) < 1e-12 ? 0.0 : v);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (p in (0, 1]) of the non-NaN values; NaN when there are none. */
static double order_stat(const double *v, size_t n, double p, double *scratch)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			scratch[k++] = v[i];
	if (!k)
		return NAN;
	qsort(scratch, k, sizeof(*scratch), cmp_double);
	size_t r = (size_t)ceil(p * (double)k);
	return scratch[r ? r - 1 : 0];
}

static double last_of(const double *v, size_t n)
{
	for (size_t i = n; i-- > 0;)
		if (!isnan(v[i]))
			return v[i];
	return NAN;
}

static double mean_of(const double *v, size_t n)
{
	double s = 0;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (!isnan(v[i]))
			s += v[i], k++;
	return k ? s / (double)k : NAN;
}

/* ---- the VPA-style decaying histogram ---------------------------------------------------------------- */

typedef struct hist {
	double first;
	double w[HIST_BUCKETS];
	double total;
} hist;

static double hist_start(const hist *h, int i) { return h->first * (pow(HIST_RATIO, i) - 1) / (HIST_RATIO - 1); }

static void hist_add(hist *h, double v, double weight)
{
	if (isnan(v) || v < 0 || weight <= 0)
		return;
	int i = (int)floor(log(v * (HIST_RATIO - 1) / h->first + 1) / log(HIST_RATIO));
	i = i < 0 ? 0 : i >= HIST_BUCKETS ? HIST_BUCKETS - 1 : i;
	h->w[i] += weight;
	h->total += weight;
}

static double hist_percentile(const hist *h, double p)
{
	if (h->total <= 0)
		return NAN;
	double sum = 0, want = p * h->total;
	int i = 0;
	for (; i < HIST_BUCKETS; i++) {
		sum += h->w[i];
		if (sum >= want * (1 - 1e-12))
			break;
	}
	if (i >= HIST_BUCKETS - 1)
		return hist_start(h, HIST_BUCKETS - 1);
	return hist_start(h, i + 1);
}

/* ---- parameters ------------------------------------------------------------------------------------------ */

static int parse_params(const ag__req *req, params *p, cm_err *err)
{
	const char *w = ag__param_get(req, "window"), *t = ag__param_get(req, "time"),
		   *f = ag__param_get(req, "format");
	p->window_ms = DEFAULT_WINDOW_MS;
	p->end_ms = cm_now_ms();
	if (w && (cm_parse_duration_ms(w, &p->window_ms) || p->window_ms <= 0))
		return cm_errf(err, CM_EINVAL, "window: \"%.64s\" is not a positive duration (e.g. 24h, 90m)", w);
	if (t && cm_parse_time_ms(t, &p->end_ms))
		return cm_errf(err, CM_EINVAL, "time: \"%.64s\" is not a Unix time or RFC 3339", t);
	if (f && strcmp(f, "csv") && strcmp(f, "json"))
		return cm_errf(err, CM_EINVAL, "format: \"%.32s\" is neither json nor csv", f);
	p->csv = f && !strcmp(f, "csv");
	return CM_OK;
}

/* Parameters and model; answers the error itself and returns non-zero when there is none. */
static int prepare(ag__capacity *c, const ag__req *req, ag__resp *resp, params *p, ag__cap_model *m)
{
	cm_err err = {{0}};
	int rc = parse_params(req, p, &err);
	if (!rc && (rc = ag__cap_model_build(c, p->end_ms, p->window_ms, req->arena, m, &err)) != CM_OK &&
	    rc != CM_EINVAL) {
		ag__resp_error(resp, 503, "unavailable", err.msg);
		return rc;
	}
	if (rc)
		ag__resp_error(resp, 400, "bad_data", err.msg);
	return rc;
}

static void begin(ag__resp *resp, const params *p, const ag__cap_model *m)
{
	resp->status = 200;
	resp->content_type = p->csv ? "text/csv; charset=utf-8" : "application/json";
	if (p->csv)
		return;
	cm_buf_printf(&resp->body, "{\"status\":\"success\",\"data\":{\"start\":%lld.%03lld,\"end\":%lld.%03lld,"
		      "\"window_seconds\":%lld,\"step_seconds\":%lld,",
		      (long long)(m->start_ms / 1000), (long long)(m->start_ms % 1000), (long long)(m->end_ms / 1000),
		      (long long)(m->end_ms % 1000), (long long)((m->end_ms - m->start_ms) / 1000),
		      (long long)(m->step_ms / 1000));
}

static void end(ag__resp *resp, const params *p)
{
	if (!p->csv)
		cm_buf_puts(&resp->body, "}}\n");
}

static void put_str_csv(cm_buf *b, const char *s)
{
	if (!strpbrk(s, ",\"\n\r")) {
		cm_buf_puts(b, s);
		return;
	}
	cm_buf_puts(b, "\"");
	for (; *s; s++)
		cm_buf_append(b, *s == '"' ? "\"\"" : s, *s == '"' ? 2 : 1);
	cm_buf_puts(b, "\"");
}

/* A list of named numbers: JSON members or CSV columns. */
static void put_fields(cm_buf *b, const char *const *names, const double *v, size_t n, int csv)
{
	for (size_t i = 0; i < n; i++) {
		if (csv)
			cm_buf_puts(b, ",");
		else
			cm_buf_printf(b, "%s\"%s\":", i ? "," : "", names[i]);
		put_num(b, v[i], csv);
	}
}

static void put_header(cm_buf *b, const char *first, const char *const *prefixes, size_t np,
		       const char *const *names, size_t n)
{
	cm_buf_puts(b, first);
	for (size_t p = 0; p < np; p++)
		for (size_t i = 0; i < n; i++)
			cm_buf_printf(b, ",%s_%s", prefixes[p], names[i]);
	cm_buf_puts(b, "\n");
}

/* ---- nodes ----------------------------------------------------------------------------------------------- */

enum { N_CAP, N_ALLOC, N_REQ, N_LIM, N_NOW, N_P50, N_P95, N_MAX, N_RECLAIM, N_FREE_REQ, N_FREE_USE, N_NFIELDS };
static const char *const node_fields[N_NFIELDS] = {
	"capacity", "allocatable", "requests", "limits", "used_now", "used_p50", "used_p95", "used_max",
	"reclaimable", "free_by_requests", "free_by_usage"};
static const char *const dims[] = {"cpu", "memory"};

static void node_dim(const ag__cap_model *m, double cap, double alloc, double req, double lim, const double *u,
		     double *scratch, double *o)
{
	o[N_CAP] = cap, o[N_ALLOC] = alloc, o[N_REQ] = req, o[N_LIM] = lim;
	o[N_NOW] = last_of(u, m->nb);
	o[N_P50] = order_stat(u, m->nb, 0.50, scratch);
	o[N_P95] = order_stat(u, m->nb, 0.95, scratch);
	o[N_MAX] = order_stat(u, m->nb, 1.0, scratch);
	double p95 = isnan(o[N_P95]) ? 0 : o[N_P95];
	o[N_RECLAIM] = req - p95 > 0 ? req - p95 : 0;
	o[N_FREE_REQ] = alloc - req;
	o[N_FREE_USE] = alloc - p95;
}

static void node_figures(const ag__cap_model *m, const ag__cap_node *n, double *scratch, double out[2][N_NFIELDS])
{
	node_dim(m, n->cap_cpu, n->alloc_cpu, n->req_cpu, n->lim_cpu, n->cpu, scratch, out[0]);
	node_dim(m, n->cap_mem, n->alloc_mem, n->req_mem, n->lim_mem, n->mem, scratch, out[1]);
}

void ag__capacity_nodes(ag__capacity *c, const ag__req *req, ag__resp *resp)
{
	params p;
	ag__cap_model m;
	if (prepare(c, req, resp, &p, &m))
		return;
	double *scratch = cm_arena_alloc(req->arena, (m.nb + 1) * sizeof(double)), f[2][N_NFIELDS];
	cm_buf *b = &resp->body;
	begin(resp, &p, &m);
	const ag__capacity_opts *o = ag__cap_opts(c);
	if (p.csv)
		put_header(b, "node,pods", dims, 2, node_fields, N_NFIELDS);
	else
		cm_buf_printf(b, "\"reserved\":{\"cpu\":%.6g,\"memory\":%.0f},\"nodes\":[", o->reserved_cpu,
			      o->reserved_mem);
	for (size_t i = 0; scratch && i < m.nnodes; i++) {
		const ag__cap_node *n = &m.nodes[i];
		node_figures(&m, n, scratch, f);
		if (p.csv) {
			put_str_csv(b, n->name);
			cm_buf_printf(b, ",%zu", n->pods);
			put_fields(b, node_fields, f[0], N_NFIELDS, 1);
			put_fields(b, node_fields, f[1], N_NFIELDS, 1);
			cm_buf_puts(b, "\n");
			continue;
		}
		cm_buf_puts(b, i ? ",{\"node\":" : "{\"node\":");
		cm_buf_put_json_str(b, n->name);
		cm_buf_printf(b, ",\"pods\":%zu,\"cpu\":{", n->pods);
		put_fields(b, node_fields, f[0], N_NFIELDS, 0);
		cm_buf_puts(b, "},\"memory\":{");
		put_fields(b, node_fields, f[1], N_NFIELDS, 0);
		cm_buf_puts(b, "}}");
	}
	if (!p.csv)
		cm_buf_puts(b, "]");
	end(resp, &p);
}

/* ---- workloads ---------------------------------------------------------------------------------------------- */

enum { W_REQ, W_LIM, W_P50, W_P90, W_P95, W_MAX, W_REC_REQ, W_REC_LIM, W_LOWER, W_UPPER, W_OVER, W_NFIELDS };
static const char *const wl_fields[W_NFIELDS] = {
	"request", "limit", "usage_p50", "usage_p90", "usage_p95", "usage_max", "recommended_request",
	"recommended_limit", "recommended_lower", "recommended_upper", "over_provisioned"};

typedef struct workload {
	const char *ns, *name, *container;
	size_t first, n;      /* a run of the sorted container index */
	int spec_derived;
	double f[2][W_NFIELDS];
	double ooms, throttled, score;
} workload;

static int cmp_ctr_group(const ag__cap_ctr *a, const ag__cap_ctr *b)
{
	int r = strcmp(a->ns, b->ns);
	r = r ? r : strcmp(a->workload, b->workload);
	return r ? r : strcmp(a->name, b->name);
}

static int cmp_ctr_ptr(const void *a, const void *b)
{
	return cmp_ctr_group(*(const ag__cap_ctr *const *)a, *(const ag__cap_ctr *const *)b);
}

static void recommend(double *f, double req, double lim, const hist *h, double max)
{
	f[W_REQ] = req > 0 ? req : NAN, f[W_LIM] = lim > 0 ? lim : NAN;
	f[W_P50] = hist_percentile(h, 0.50), f[W_P90] = hist_percentile(h, 0.90), f[W_P95] = hist_percentile(h, 0.95);
	f[W_MAX] = max;
	f[W_REC_REQ] = f[W_P90] * MARGIN, f[W_LOWER] = f[W_P50] * MARGIN, f[W_UPPER] = f[W_P95] * MARGIN;
	f[W_REC_LIM] = req > 0 && lim > 0 ? f[W_REC_REQ] * lim / req : NAN;
	f[W_OVER] = (req > 0 ? req : 0) - f[W_REC_REQ];
}

/* The decay weight of each bucket: 2^((bucket end - window end) / half-life). */
static void bucket_weights(const ag__cap_model *m, double *dw)
{
	for (size_t k = 0; k < m->nb; k++) {
		int64_t t = m->start_ms + (int64_t)(k + 1) * m->step_ms;
		dw[k] = exp2((double)(t - m->end_ms) / HALF_LIFE_MS);
	}
}

static void workload_figures(const ag__cap_model *m, ag__cap_ctr *const *cs, workload *w, const double *dws)
{
	hist hc = {.first = CPU_FIRST_BUCKET}, hm = {.first = MEM_FIRST_BUCKET};
	double req_cpu = 0, req_mem = 0, lim_cpu = 0, lim_mem = 0, max_cpu = NAN, max_mem = NAN;
	for (size_t i = 0; i < w->n; i++) {
		const ag__cap_ctr *x = cs[w->first + i];
		req_cpu = fmax(req_cpu, x->req_cpu), req_mem = fmax(req_mem, x->req_mem);
		lim_cpu = fmax(lim_cpu, x->lim_cpu), lim_mem = fmax(lim_mem, x->lim_mem);
		w->ooms += x->ooms, w->throttled += x->throttled;
		w->spec_derived |= x->spec_derived;
		double cw = fmax(x->req_cpu, CPU_MIN_WEIGHT);
		for (size_t k = 0; k < m->nb; k++) {
			double dw = dws[k];
			hist_add(&hc, x->cpu[k], cw * dw);
			hist_add(&hm, x->mem[k], dw);
			max_cpu = isnan(x->cpu[k]) || x->cpu[k] <= max_cpu ? max_cpu : x->cpu[k];
			max_mem = isnan(x->mem[k]) || x->mem[k] <= max_mem ? max_mem : x->mem[k];
		}
	}
	recommend(w->f[0], req_cpu, lim_cpu, &hc, max_cpu);
	recommend(w->f[1], req_mem, lim_mem, &hm, max_mem);
}

/* Groups containers by (namespace, workload, container name), sorted; *out in the arena. */
static size_t group_workloads(const ag__cap_model *m, cm_arena *a, workload **out, ag__cap_ctr ***sorted)
{
	ag__cap_ctr **cs = cm_arena_alloc(a, (m->nctrs + 1) * sizeof(*cs));
	workload *ws = cm_arena_calloc(a, m->nctrs + 1, sizeof(*ws));
	double *dw = cm_arena_alloc(a, (m->nb + 1) * sizeof(*dw));
	if (!cs || !ws || !dw)
		return 0;
	bucket_weights(m, dw);
	for (size_t i = 0; i < m->nctrs; i++)
		cs[i] = &m->ctrs[i];
	qsort(cs, m->nctrs, sizeof(*cs), cmp_ctr_ptr);
	size_t n = 0;
	for (size_t i = 0; i < m->nctrs; i++) {
		if (i && !cmp_ctr_group(cs[i - 1], cs[i])) {
			ws[n - 1].n++;
			continue;
		}
		ws[n++] = (workload){.ns = cs[i]->ns, .name = cs[i]->workload, .container = cs[i]->name, .first = i, .n = 1};
	}
	for (size_t i = 0; i < n; i++)
		workload_figures(m, cs, &ws[i], dw);
	*out = ws, *sorted = cs;
	return n;
}

static void put_workload(cm_buf *b, const workload *w, int csv, int first)
{
	if (csv) {
		put_str_csv(b, w->ns), cm_buf_puts(b, ","), put_str_csv(b, w->name), cm_buf_puts(b, ",");
		put_str_csv(b, w->container);
		cm_buf_printf(b, ",%zu,%s", w->n, w->spec_derived ? "cgroup" : "pod_spec");
		put_fields(b, wl_fields, w->f[0], W_NFIELDS, 1);
		put_fields(b, wl_fields, w->f[1], W_NFIELDS, 1);
		cm_buf_printf(b, ",%.0f,%.0f\n", w->ooms, w->throttled);
		return;
	}
	cm_buf_puts(b, first ? "{\"namespace\":" : ",{\"namespace\":");
	cm_buf_put_json_str(b, w->ns);
	cm_buf_puts(b, ",\"workload\":");
	cm_buf_put_json_str(b, w->name);
	cm_buf_puts(b, ",\"container\":");
	cm_buf_put_json_str(b, w->container);
	cm_buf_printf(b, ",\"pods\":%zu,\"requests_from\":\"%s\",\"cpu\":{", w->n,
		      w->spec_derived ? "cgroup" : "pod_spec");
	put_fields(b, wl_fields, w->f[0], W_NFIELDS, 0);
	cm_buf_puts(b, "},\"memory\":{");
	put_fields(b, wl_fields, w->f[1], W_NFIELDS, 0);
	cm_buf_printf(b, "},\"oom_kills\":%.0f,\"throttled_periods\":%.0f}", w->ooms, w->throttled);
}

void ag__capacity_workloads(ag__capacity *c, const ag__req *req, ag__resp *resp)
{
	params p;
	ag__cap_model m;
	if (prepare(c, req, resp, &p, &m))
		return;
	workload *ws = NULL;
	ag__cap_ctr **cs = NULL;
	size_t n = group_workloads(&m, req->arena, &ws, &cs);
	const char *ns = ag__param_get(req, "namespace");
	cm_buf *b = &resp->body;
	begin(resp, &p, &m);
	if (p.csv)
		put_header(b, "namespace,workload,container,pods,requests_from", dims, 2, wl_fields, W_NFIELDS);
	else
		cm_buf_printf(b, "\"half_life_seconds\":%.0f,\"margin\":%g,\"workloads\":[", HALF_LIFE_MS / 1000, MARGIN);
	if (p.csv)
		b->len--, cm_buf_puts(b, ",oom_kills,throttled_periods\n");
	int first = 1;
	for (size_t i = 0; i < n; i++) {
		if (ns && strcmp(ns, ws[i].ns))
			continue;
		put_workload(b, &ws[i], p.csv, first);
		first = 0;
	}
	if (!p.csv)
		cm_buf_puts(b, "]");
	end(resp, &p);
}

/* ---- fit ---------------------------------------------------------------------------------------------------- */

/* How many pods of (cpu, mem) fit into free (fc, fm); a dimension the shape leaves at 0 does not bind. */
static double pods_fitting(double cpu, double mem, double fc, double fm)
{
	if (isnan(fc) || isnan(fm))
		return 0;
	double k = INFINITY;
	if (cpu > 0)
		k = fmin(k, floor(fmax(fc, 0) / cpu + 1e-9));
	if (mem > 0)
		k = fmin(k, floor(fmax(fm, 0) / mem + 1e-9));
	return k;
}

static int fit_params(const ag__req *req, double *cpu, double *mem, long *replicas, cm_err *err)
{
	const char *c = ag__param_get(req, "cpu"), *m = ag__param_get(req, "memory"), *r = ag__param_get(req, "replicas");
	*cpu = *mem = 0, *replicas = 1;
	if (!c && !m)
		return cm_errf(err, CM_EINVAL, "give the pod's shape: cpu (e.g. 500m) and/or memory (e.g. 512Mi)");
	if (c && ag__quantity_size("cpu", c, cpu, err))
		return CM_EINVAL;
	if (m && ag__quantity_size("memory", m, mem, err))
		return CM_EINVAL;
	if (*cpu <= 0 && *mem <= 0)
		return cm_errf(err, CM_EINVAL, "the pod's shape is empty: cpu or memory must be above 0");
	char *e;
	if (r && ((*replicas = strtol(r, &e, 10)) < 1 || *e || *replicas > 1000000))
		return cm_errf(err, CM_EINVAL, "replicas: \"%.32s\" is not a count from 1 to 1000000", r);
	return CM_OK;
}

void ag__capacity_fit(ag__capacity *c, const ag__req *req, ag__resp *resp)
{
	double cpu, mem;
	long replicas;
	cm_err err = {{0}};
	if (fit_params(req, &cpu, &mem, &replicas, &err)) {
		ag__resp_error(resp, 400, "bad_data", err.msg);
		return;
	}
	params p;
	ag__cap_model m;
	if (prepare(c, req, resp, &p, &m))
		return;
	double *scratch = cm_arena_alloc(req->arena, (m.nb + 1) * sizeof(double)), f[2][N_NFIELDS], tr = 0, tu = 0;
	cm_buf *b = &resp->body;
	begin(resp, &p, &m);
	if (p.csv)
		cm_buf_puts(b, "node,by_requests,by_usage,cpu_free_by_requests,memory_free_by_requests,cpu_free_by_usage,"
			       "memory_free_by_usage\n");
	else
		cm_buf_printf(b, "\"shape\":{\"cpu\":%.9g,\"memory\":%.0f},\"replicas\":%ld,\"nodes\":[", cpu, mem,
			      replicas);
	for (size_t i = 0; scratch && i < m.nnodes; i++) {
		node_figures(&m, &m.nodes[i], scratch, f);
		double kr = pods_fitting(cpu, mem, f[0][N_FREE_REQ], f[1][N_FREE_REQ]),
		       ku = pods_fitting(cpu, mem, f[0][N_FREE_USE], f[1][N_FREE_USE]);
		tr += kr, tu += ku;
		double v[4] = {f[0][N_FREE_REQ], f[1][N_FREE_REQ], f[0][N_FREE_USE], f[1][N_FREE_USE]};
		static const char *const names[4] = {"cpu", "memory", "cpu", "memory"};
		if (p.csv) {
			put_str_csv(b, m.nodes[i].name);
			cm_buf_printf(b, ",%.0f,%.0f", kr, ku);
			put_fields(b, names, v, 4, 1);
			cm_buf_puts(b, "\n");
			continue;
		}
		cm_buf_puts(b, i ? ",{\"node\":" : "{\"node\":");
		cm_buf_put_json_str(b, m.nodes[i].name);
		cm_buf_printf(b, ",\"by_requests\":%.0f,\"by_usage\":%.0f,\"free_by_requests\":{", kr, ku);
		put_fields(b, names, v, 2, 0);
		cm_buf_puts(b, "},\"free_by_usage\":{");
		put_fields(b, names + 2, v + 2, 2, 0);
		cm_buf_puts(b, "}}");
	}
	if (!p.csv)
		cm_buf_printf(b, "],\"total\":{\"by_requests\":%.0f,\"by_usage\":%.0f},\"fits\":{\"by_requests\":%s,"
			      "\"by_usage\":%s}", tr, tu, tr >= (double)replicas ? "true" : "false",
			      tu >= (double)replicas ? "true" : "false");
	else
		cm_buf_printf(b, "total,%.0f,%.0f,,,,\n", tr, tu);
	end(resp, &p);
}

/* ---- summary ------------------------------------------------------------------------------------------------ */

enum { S_ALLOC, S_REQ, S_LIM, S_NOW, S_AVG, S_P95, S_UTIL_NOW, S_UTIL_AVG, S_UTIL_P95, S_REQ_RATIO, S_IDLE,
       S_IDLE_REQ, S_NFIELDS };
static const char *const sum_fields[S_NFIELDS] = {
	"allocatable", "requests", "limits", "used_now", "used_avg", "used_p95", "utilization_now",
	"utilization_avg", "utilization_p95", "requested_ratio", "idle", "idle_requested"};

static void summary_dim(const ag__cap_model *m, int mem, double *scratch, double *used, double *o)
{
	double alloc = 0, req = 0, lim = 0;
	for (size_t k = 0; k < m->nb; k++)
		used[k] = NAN;
	for (size_t i = 0; i < m->nnodes; i++) {
		const ag__cap_node *n = &m->nodes[i];
		double a = mem ? n->alloc_mem : n->alloc_cpu;
		alloc += isnan(a) ? 0 : a;
		req += mem ? n->req_mem : n->req_cpu, lim += mem ? n->lim_mem : n->lim_cpu;
		const double *u = mem ? n->mem : n->cpu;
		for (size_t k = 0; k < m->nb; k++)
			if (!isnan(u[k]))
				used[k] = isnan(used[k]) ? u[k] : used[k] + u[k];
	}
	o[S_ALLOC] = alloc, o[S_REQ] = req, o[S_LIM] = lim;
	o[S_NOW] = last_of(used, m->nb), o[S_AVG] = mean_of(used, m->nb), o[S_P95] = order_stat(used, m->nb, 0.95, scratch);
	double da = alloc > 0 ? alloc : NAN;
	o[S_UTIL_NOW] = o[S_NOW] / da, o[S_UTIL_AVG] = o[S_AVG] / da, o[S_UTIL_P95] = o[S_P95] / da;
	o[S_REQ_RATIO] = req / da;
	double avg = isnan(o[S_AVG]) ? 0 : o[S_AVG];
	o[S_IDLE] = alloc - avg, o[S_IDLE_REQ] = req - avg > 0 ? req - avg : 0;
}

static int cmp_score(const void *a, const void *b)
{
	const workload *x = a, *y = b;
	return x->score > y->score ? -1 : x->score < y->score;
}

static void put_top(cm_buf *b, workload *ws, size_t n, const double s[2][S_NFIELDS], int csv)
{
	for (size_t i = 0; i < n; i++) {
		double oc = ws[i].f[0][W_OVER] * (double)ws[i].n, om = ws[i].f[1][W_OVER] * (double)ws[i].n;
		ws[i].score = (isnan(oc) || s[0][S_ALLOC] <= 0 ? 0 : oc / s[0][S_ALLOC]) +
			      (isnan(om) || s[1][S_ALLOC] <= 0 ? 0 : om / s[1][S_ALLOC]);
	}
	qsort(ws, n, sizeof(*ws), cmp_score);
	for (size_t i = 0; i < n && i < TOP_N && ws[i].score > 0; i++) {
		double v[3] = {ws[i].f[0][W_OVER] * (double)ws[i].n, ws[i].f[1][W_OVER] * (double)ws[i].n, ws[i].score};
		static const char *const names[3] = {"cpu_over_provisioned", "memory_over_provisioned", "score"};
		if (csv) {
			cm_buf_puts(b, "top,");
			put_str_csv(b, ws[i].ns), cm_buf_puts(b, ","), put_str_csv(b, ws[i].name), cm_buf_puts(b, ",");
			put_str_csv(b, ws[i].container);
			put_fields(b, names, v, 3, 1);
			cm_buf_puts(b, "\n");
			continue;
		}
		cm_buf_puts(b, i ? ",{\"namespace\":" : "{\"namespace\":");
		cm_buf_put_json_str(b, ws[i].ns);
		cm_buf_puts(b, ",\"workload\":");
		cm_buf_put_json_str(b, ws[i].name);
		cm_buf_puts(b, ",\"container\":");
		cm_buf_put_json_str(b, ws[i].container);
		cm_buf_printf(b, ",\"pods\":%zu,", ws[i].n);
		put_fields(b, names, v, 3, 0);
		cm_buf_puts(b, "}");
	}
}

void ag__capacity_summary(ag__capacity *c, const ag__req *req, ag__resp *resp)
{
	params p;
	ag__cap_model m;
	if (prepare(c, req, resp, &p, &m))
		return;
	double *scratch = cm_arena_alloc(req->arena, (m.nb + 1) * sizeof(double)),
	       *used = cm_arena_alloc(req->arena, (m.nb + 1) * sizeof(double)), s[2][S_NFIELDS];
	workload *ws = NULL;
	ag__cap_ctr **cs = NULL;
	size_t nw = group_workloads(&m, req->arena, &ws, &cs), pods = 0;
	if (!scratch || !used) {
		ag__resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	for (size_t i = 0; i < m.nnodes; i++)
		pods += m.nodes[i].pods;
	summary_dim(&m, 0, scratch, used, s[0]);
	summary_dim(&m, 1, scratch, used, s[1]);
	cm_buf *b = &resp->body;
	begin(resp, &p, &m);
	if (p.csv) {
		put_header(b, "row,nodes,pods", dims, 2, sum_fields, S_NFIELDS);
		cm_buf_printf(b, "cluster,%zu,%zu", m.nnodes, pods);
		put_fields(b, sum_fields, s[0], S_NFIELDS, 1);
		put_fields(b, sum_fields, s[1], S_NFIELDS, 1);
		cm_buf_puts(b, "\nrow,namespace,workload,container,cpu_over_provisioned,memory_over_provisioned,score\n");
		put_top(b, ws, nw, s, 1);
	} else {
		cm_buf_printf(b, "\"cluster\":{\"nodes\":%zu,\"pods\":%zu,\"cpu\":{", m.nnodes, pods);
		put_fields(b, sum_fields, s[0], S_NFIELDS, 0);
		cm_buf_puts(b, "},\"memory\":{");
		put_fields(b, sum_fields, s[1], S_NFIELDS, 0);
		cm_buf_puts(b, "}},\"top_overprovisioned\":[");
		put_top(b, ws, nw, s, 0);
		cm_buf_puts(b, "]");
	}
	end(resp, &p);
}
