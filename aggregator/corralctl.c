/* corralctl.c -- command-line client for the aggregator's HTTP API, with table output.
 *
 *   corralctl [--url URL] [--token-file F] [--ca-file F] query-range '<selector>' [--since 15m] [--step 10s]
 *   corralctl [flags] query EXPR [--time T] | series SELECTOR... | labels [NAME] [--match SELECTOR]
 *   corralctl [flags] capacity nodes|workloads|summary [--window 24h] | capacity fit CPU [MEMORY [REPLICAS]]
 *   corralctl [flags] services [--namespace NS]
 *
 * Talks HTTP with libcurl, parses the Prometheus JSON envelope with jansson and prints a table: one row
 * per point (TIME, VALUE, then a column per label name). An error answer from the server is printed as it came and the exit status is 1.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm.h"

typedef struct ctl_config {
	const char *url;
	int64_t since_ms;
	int64_t step_ms;
	const char *token_file; /* the read token (docs/security.md), or CORRAL_READ_TOKEN */
	const char *ca_file;    /* CA bundle for an https:// --url */
	char auth[1100];        /* "Authorization: Bearer ...", "" without a token */
	const char *time;       /* query: evaluation time, NULL = now */
	const char *match;      /* labels: series selector, NULL = every series */
	const char *window;     /* capacity: report window */
	const char *namespace_; /* capacity workloads, services: only this namespace */
} ctl_config;

static const cm_opt ctl_opts[] = {
	{"url", CM_OPT_STR, "http://127.0.0.1:9300", offsetof(ctl_config, url), "aggregator base URL", "CORRAL_URL"},
	{"since", CM_OPT_DURATION, "15m", offsetof(ctl_config, since_ms), "how far back a range query reaches", NULL},
	{"step", CM_OPT_DURATION, "0", offsetof(ctl_config, step_ms), "range query step (0: about 60 points)", NULL},
	{"token-file", CM_OPT_STR, NULL, offsetof(ctl_config, token_file),
	 "file holding the read token (default CORRAL_READ_TOKEN; none: no token sent)", NULL},
	{"ca-file", CM_OPT_STR, NULL, offsetof(ctl_config, ca_file), "CA bundle (PEM) for an https:// --url", NULL},
	{"time", CM_OPT_STR, NULL, offsetof(ctl_config, time), "query: evaluation time (RFC 3339 or Unix seconds; default now)",
	 NULL},
	{"match", CM_OPT_STR, NULL, offsetof(ctl_config, match), "labels: only series this selector selects", NULL},
	{"window", CM_OPT_STR, "24h", offsetof(ctl_config, window), "capacity: the window the reports cover", NULL},
	{"namespace", CM_OPT_STR, NULL, offsetof(ctl_config, namespace_), "capacity workloads, services: only this namespace",
	 NULL},
};

static const char usage[] = "usage: corralctl [flags] COMMAND ARGS\n\nCommands:\n"
			    "  query EXPR             PromQL at --time (default now): one row per sample, a column per label\n"
			    "  query-range EXPR       PromQL over --since at --step: one row per point\n"
			    "  series SELECTOR...     series with data within --since, a column per label\n"
			    "  labels [NAME]          label names, or NAME's values, of the --match series within --since\n"
			    "  capacity nodes|workloads|summary   capacity reports over --window (ending at --time)\n"
			    "  capacity fit CPU [MEMORY [REPLICAS]]  how many more pods of that shape fit (e.g. 500m 512Mi 3)\n"
			    "  services               the service registry: type, cluster IPs, ports, selector, endpoints";

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
	return cm_buf_append(ctx, p, size * n) ? 0 : size * n;
}

/* GETs base + path with the given URL-encoded query; returns the parsed JSON body or NULL. */
static json_t *http_get_json(const ctl_config *cfg, const char *path, const char *query, long *status)
{
	CURL *c = curl_easy_init();
	cm_buf body, url;
	cm_buf_init(&body);
	cm_buf_init(&url);
	json_t *j = NULL;
	struct curl_slist *h = cfg->auth[0] ? curl_slist_append(NULL, cfg->auth) : NULL;
	if (!c || cm_buf_printf(&url, "%s%s?%s", cfg->url, path, query))
		goto out;
	curl_easy_setopt(c, CURLOPT_URL, (char *)url.data);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (cfg->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		fprintf(stderr, "corralctl: %s: %s\n", (char *)url.data, curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	json_error_t je;
	j = json_loadb((const char *)body.data, body.len, 0, &je);
	if (!j)
		fprintf(stderr, "corralctl: HTTP %ld, unreadable answer: %.200s\n", *status, body.data ? (char *)body.data : "");
out:
	curl_slist_free_all(h);
	cm_buf_close(&body);
	cm_buf_close(&url);
	if (c)
		curl_easy_cleanup(c);
	return j;
}

static int check_answer(json_t *j, long status)
{
	const char *st = json_string_value(json_object_get(j, "status"));
	if (st && !strcmp(st, "success"))
		return 0;
	fprintf(stderr, "corralctl: HTTP %ld: %s: %s\n", status, json_string_value(json_object_get(j, "errorType")),
		json_string_value(json_object_get(j, "error")));
	return 1;
}

/* ---- tables: query, query-range, series, labels ------------------------------------------------------ */

#define MAX_COLS 64

typedef struct table {
	const char *head[MAX_COLS];
	size_t ncols, nrows, cap;
	char **cells; /* row-major, ncols a row; NULL prints as "" */
} table;

static int table_row(table *t, char ***row)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
		if (!c)
			return CM_ENOMEM;
		t->cells = c, t->cap = cap;
	}
	*row = t->cells + t->nrows++ * t->ncols;
	memset(*row, 0, t->ncols * sizeof(**row));
	return CM_OK;
}

/* Prints the table with columns padded to their widest cell, then frees it. */
static void table_print(table *t)
{
	size_t w[MAX_COLS];
	for (size_t c = 0; c < t->ncols; c++) {
		w[c] = strlen(t->head[c]);
		for (size_t r = 0; r < t->nrows; r++) {
			const char *s = t->cells[r * t->ncols + c];
			w[c] = s && strlen(s) > w[c] ? strlen(s) : w[c];
		}
	}
	cm_buf line;
	cm_buf_init(&line);
	for (size_t r = 0; r <= t->nrows; r++) {
		line.len = 0;
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = r ? t->cells[(r - 1) * t->ncols + c] : t->head[c];
			cm_buf_printf(&line, "%-*s  ", (int)w[c], s ? s : "");
		}
		while (line.len && line.data[line.len - 1] == ' ')
			line.len--; /* no trailing blanks, also where the last cells are empty */
		printf("%.*s\n", (int)line.len, line.data ? (char *)line.data : "");
	}
	cm_buf_close(&line);
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
}

static int cmp_label_name(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	int nx = !strcmp(x, "__name__"), ny = !strcmp(y, "__name__");
	return nx != ny ? ny - nx : strcmp(x, y); /* __name__ first */
}

/* Adds a column per label name any series of result has, sorted (__name__ first); returns the first. */
static size_t label_columns(table *t, json_t *result)
{
	size_t first = t->ncols, i;
	json_t *s, *v;
	const char *k;
	json_array_foreach(result, i, s)
	{
		json_t *metric = json_object_get(s, "metric") ? json_object_get(s, "metric") : s;
		json_object_foreach(metric, k, v)
		{
			size_t c = first;
			while (c < t->ncols && strcmp(t->head[c], k))
				c++;
			if (c == t->ncols && t->ncols < MAX_COLS)
				t->head[t->ncols++] = k;
		}
	}
	qsort(t->head + first, t->ncols - first, sizeof(*t->head), cmp_label_name);
	return first;
}

/* A copy of s for a cell, with newlines and tabs escaped so that a row stays one line. */
static char *cell(const char *s)
{
	cm_buf b;
	cm_buf_init(&b);
	for (; s && *s; s++)
		cm_buf_puts(&b, *s == '\n' ? "\\n" : *s == '\t' ? "\\t" : (char[]){*s, 0});
	cm_buf_append(&b, "", 0);
	size_t n;
	return (char *)cm_buf_take(&b, &n);
}

static void fill_labels(const table *t, size_t first, json_t *metric, char **row)
{
	for (size_t c = first; c < t->ncols; c++) {
		const char *v = json_string_value(json_object_get(metric, t->head[c]));
		row[c] = v ? cell(v) : NULL;
	}
}

static char *fmt_time(json_t *t)
{
	double secs = json_number_value(t);
	time_t tt = (time_t)secs;
	struct tm tm;
	char buf[48];
	localtime_r(&tt, &tm);
	size_t n = strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	if (secs != (double)tt)
		snprintf(buf + n, sizeof(buf) - n, ".%03d", (int)((secs - (double)tt) * 1000 + 0.5));
	return strdup(buf);
}

/* A query answer as a table: TIME (ranges and scalars), VALUE, then one column per label. */
static int print_result(json_t *data)
{
	const char *type = json_string_value(json_object_get(data, "resultType"));
	json_t *result = json_object_get(data, "result"), *s, *p;
	table t = {.ncols = 0};
	int matrix = type && !strcmp(type, "matrix"), scalar = type && (!strcmp(type, "scalar") || !strcmp(type, "string"));
	if (matrix || scalar)
		t.head[t.ncols++] = "TIME";
	t.head[t.ncols++] = "VALUE";
	size_t first = scalar ? t.ncols : label_columns(&t, result), i, k;
	char **row;
	if (scalar) {
		if (table_row(&t, &row))
			return 1;
		row[0] = fmt_time(json_array_get(result, 0));
		row[1] = strdup(json_string_value(json_array_get(result, 1)) ? json_string_value(json_array_get(result, 1)) : "");
	}
	json_array_foreach(scalar ? NULL : result, i, s) /* a scalar has no series */
	{
		json_t *points = matrix ? json_object_get(s, "values") : json_array(), *one = json_object_get(s, "value");
		if (!matrix)
			json_array_append(points, one);
		json_array_foreach(points, k, p)
		{
			if (table_row(&t, &row))
				break;
			if (matrix)
				row[0] = fmt_time(json_array_get(p, 0));
			row[matrix] = strdup(json_string_value(json_array_get(p, 1)) ? json_string_value(json_array_get(p, 1)) : "");
			fill_labels(&t, first, json_object_get(s, "metric"), row);
		}
		if (!matrix)
			json_decref(points);
	}
	table_print(&t);
	printf("(%zu %s)\n", scalar ? 1 : json_array_size(result), matrix ? "series" : scalar ? type : "samples");
	return 0;
}

/* GETs path with the query and checks the envelope; the answer's data (a new reference) or NULL. */
static json_t *api_data(const ctl_config *cfg, const char *path, const char *query)
{
	long status = 0;
	json_t *j = http_get_json(cfg, path, query, &status), *d = NULL;
	if (j && !check_answer(j, status))
		d = json_incref(json_object_get(j, "data"));
	json_decref(j);
	return d;
}

/* "name=<escaped value>&" appended to q. */
static void add_arg(cm_buf *q, const char *name, const char *value)
{
	char *e = curl_easy_escape(NULL, value, 0);
	cm_buf_printf(q, "%s%s=%s", q->len ? "&" : "", name, e ? e : "");
	curl_free(e);
}

static int cmd_query(const ctl_config *cfg, const char *expr)
{
	cm_buf q;
	cm_buf_init(&q);
	add_arg(&q, "query", expr);
	if (cfg->time)
		add_arg(&q, "time", cfg->time);
	json_t *d = api_data(cfg, "/api/v1/query", q.data ? (char *)q.data : "");
	cm_buf_close(&q);
	int rc = d ? print_result(d) : 1;
	json_decref(d);
	return rc;
}

static void add_range(cm_buf *q, const ctl_config *cfg)
{
	int64_t end = cm_now_ms();
	cm_buf_printf(q, "%sstart=%.3f&end=%.3f", q->len ? "&" : "", (end - cfg->since_ms) / 1000.0, end / 1000.0);
}

static int cmd_series(const ctl_config *cfg, char **sel, int n)
{
	cm_buf q;
	cm_buf_init(&q);
	for (int i = 0; i < n; i++)
		add_arg(&q, "match[]", sel[i]);
	add_range(&q, cfg);
	json_t *d = api_data(cfg, "/api/v1/series", (char *)q.data);
	cm_buf_close(&q);
	if (!d)
		return 1;
	table t = {.ncols = 0};
	size_t first = label_columns(&t, d), i;
	json_t *s;
	char **row;
	json_array_foreach(d, i, s)
	{
		if (table_row(&t, &row))
			break;
		fill_labels(&t, first, s, row);
	}
	table_print(&t);
	printf("(%zu series)\n", json_array_size(d));
	json_decref(d);
	return 0;
}

/* Label names, or with a name the values of that label, of the series --match selects. */
static int cmd_labels(const ctl_config *cfg, const char *name)
{
	cm_buf q, path;
	cm_buf_init(&q);
	cm_buf_init(&path);
	if (cfg->match)
		add_arg(&q, "match[]", cfg->match);
	add_range(&q, cfg);
	char *e = name ? curl_easy_escape(NULL, name, 0) : NULL;
	cm_buf_printf(&path, name ? "/api/v1/label/%s/values" : "/api/v1/labels", e ? e : "");
	curl_free(e);
	json_t *d = api_data(cfg, (char *)path.data, (char *)q.data), *v;
	cm_buf_close(&q);
	cm_buf_close(&path);
	if (!d)
		return 1;
	table t = {.head = {name ? name : "LABEL"}, .ncols = 1};
	size_t i;
	char **row;
	json_array_foreach(d, i, v)
	{
		if (table_row(&t, &row))
			break;
		row[0] = strdup(json_string_value(v) ? json_string_value(v) : "");
	}
	table_print(&t);
	printf("(%zu %s)\n", json_array_size(d), name ? "values" : "labels");
	json_decref(d);
	return 0;
}

/* query, series and labels (query-range is above); -1 when cmd is none of them. */
static int run_prom_command(const ctl_config *cfg, char **pos, int npos)
{
	if (npos == 2 && !strcmp(pos[0], "query"))
		return cmd_query(cfg, pos[1]);
	if (npos >= 2 && !strcmp(pos[0], "series"))
		return cmd_series(cfg, pos + 1, npos - 1);
	if ((npos == 1 || npos == 2) && !strcmp(pos[0], "labels"))
		return cmd_labels(cfg, npos == 2 ? pos[1] : NULL);
	return -1;
}

static int cmd_query_range(const ctl_config *cfg, const char *selector)
{
	int64_t end = cm_now_ms(), start = end - cfg->since_ms;
	int64_t step = cfg->step_ms > 0 ? cfg->step_ms : (cfg->since_ms / 60 > 1000 ? cfg->since_ms / 60 : 1000);
	char *q = curl_easy_escape(NULL, selector, 0);
	char query[8192];
	snprintf(query, sizeof(query), "query=%s&start=%.3f&end=%.3f&step=%.3f", q ? q : "", start / 1000.0,
		 end / 1000.0, step / 1000.0);
	curl_free(q);
	long status = 0;
	json_t *j = http_get_json(cfg, "/api/v1/query_range", query, &status);
	if (!j)
		return 1;
	int rc = check_answer(j, status);
	if (!rc)
		rc = print_result(json_object_get(j, "data"));
	json_decref(j);
	return rc;
}

/* ---- capacity reports (docs/capacity.md), kube-capacity-like tables ------------------------------------ */

/* A figure of a report object: o[dim][key], NAN when absent or null. */
static double cap_num(json_t *o, const char *dim, const char *key)
{
	json_t *v = json_object_get(dim ? json_object_get(o, dim) : o, key);
	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* "1500m" for cores, "768Mi" for bytes, with "(37%)" of base when base is given. */
static char *cap_fmt(double v, int mem, double base)
{
	char buf[64];
	if (isnan(v))
		return strdup("-");
	int n = mem ? snprintf(buf, sizeof(buf), "%.0fMi", v / 1048576.0) : snprintf(buf, sizeof(buf), "%.0fm", v * 1000);
	if (!isnan(base) && base > 0)
		snprintf(buf + n, sizeof(buf) - (size_t)n, " (%.0f%%)", 100 * v / base);
	return strdup(buf);
}

static char *cap_count(double v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%.0f", v);
	return strdup(isnan(v) ? "-" : buf);
}

static void cap_nodes(json_t *d)
{
	table t = {.head = {"NODE", "PODS", "CPU ALLOC", "CPU REQUESTS", "CPU LIMITS", "CPU USED P95", "CPU RECLAIMABLE",
			    "MEM ALLOC", "MEM REQUESTS", "MEM LIMITS", "MEM USED P95", "MEM RECLAIMABLE"},
		   .ncols = 12};
	static const char *const keys[] = {"allocatable", "requests", "limits", "used_p95", "reclaimable"};
	json_t *n;
	size_t i;
	char **row;
	json_array_foreach(json_object_get(d, "nodes"), i, n)
	{
		if (table_row(&t, &row))
			break;
		row[0] = cell(json_string_value(json_object_get(n, "node")));
		row[1] = cap_count(cap_num(n, NULL, "pods"));
		for (int m = 0; m < 2; m++) {
			const char *dim = m ? "memory" : "cpu";
			double alloc = cap_num(n, dim, "allocatable");
			for (int k = 0; k < 5; k++)
				row[2 + m * 5 + k] = cap_fmt(cap_num(n, dim, keys[k]), m, k ? alloc : NAN);
		}
	}
	table_print(&t);
}

static void cap_workloads(json_t *d)
{
	table t = {.head = {"NAMESPACE", "WORKLOAD", "CONTAINER", "PODS", "CPU REQUEST", "CPU P90", "CPU RECOMMENDED",
			    "MEM REQUEST", "MEM P90", "MEM RECOMMENDED", "OOM KILLS", "THROTTLED"},
		   .ncols = 12};
	static const char *const keys[] = {"request", "usage_p90", "recommended_request"};
	json_t *w;
	size_t i;
	char **row;
	json_array_foreach(json_object_get(d, "workloads"), i, w)
	{
		if (table_row(&t, &row))
			break;
		row[0] = cell(json_string_value(json_object_get(w, "namespace")));
		row[1] = cell(json_string_value(json_object_get(w, "workload")));
		row[2] = cell(json_string_value(json_object_get(w, "container")));
		row[3] = cap_count(cap_num(w, NULL, "pods"));
		for (int m = 0; m < 2; m++)
			for (int k = 0; k < 3; k++)
				row[4 + m * 3 + k] = cap_fmt(cap_num(w, m ? "memory" : "cpu", keys[k]), m, NAN);
		row[10] = cap_count(cap_num(w, NULL, "oom_kills"));
		row[11] = cap_count(cap_num(w, NULL, "throttled_periods"));
	}
	table_print(&t);
}

static void cap_fit(json_t *d)
{
	table t = {.head = {"NODE", "FIT BY REQUESTS", "FIT BY USAGE", "CPU FREE (REQUESTS)", "MEM FREE (REQUESTS)"},
		   .ncols = 5};
	json_t *n, *total = json_object_get(d, "total"), *fits = json_object_get(d, "fits");
	size_t i;
	char **row;
	json_array_foreach(json_object_get(d, "nodes"), i, n)
	{
		if (table_row(&t, &row))
			break;
		row[0] = cell(json_string_value(json_object_get(n, "node")));
		row[1] = cap_count(cap_num(n, NULL, "by_requests"));
		row[2] = cap_count(cap_num(n, NULL, "by_usage"));
		row[3] = cap_fmt(cap_num(n, "free_by_requests", "cpu"), 0, NAN);
		row[4] = cap_fmt(cap_num(n, "free_by_requests", "memory"), 1, NAN);
	}
	if (!table_row(&t, &row)) {
		row[0] = strdup("*");
		row[1] = cap_count(cap_num(total, NULL, "by_requests"));
		row[2] = cap_count(cap_num(total, NULL, "by_usage"));
	}
	table_print(&t);
	printf("%.0f replica(s): %s by requests, %s by usage\n", cap_num(d, NULL, "replicas"),
	       json_is_true(json_object_get(fits, "by_requests")) ? "fit" : "do not fit",
	       json_is_true(json_object_get(fits, "by_usage")) ? "fit" : "do not fit");
}

static void cap_summary(json_t *d)
{
	json_t *c = json_object_get(d, "cluster");
	table t = {.head = {"CLUSTER", "CPU", "MEMORY"}, .ncols = 3};
	static const char *const keys[] = {"allocatable", "requests", "limits", "used_now", "used_avg", "used_p95",
					   "idle", "idle_requested"};
	char **row;
	for (int k = 0; k < 8 && !table_row(&t, &row); k++) {
		row[0] = strdup(keys[k]);
		for (int m = 0; m < 2; m++) {
			const char *dim = m ? "memory" : "cpu";
			row[1 + m] = cap_fmt(cap_num(c, dim, keys[k]), m, k ? cap_num(c, dim, "allocatable") : NAN);
		}
	}
	printf("%.0f nodes, %.0f pods\n", cap_num(c, NULL, "nodes"), cap_num(c, NULL, "pods"));
	table_print(&t);
	table top = {.head = {"TOP OVER-PROVISIONED", "CONTAINER", "PODS", "CPU OVER", "MEM OVER"}, .ncols = 5};
	json_t *w;
	size_t i;
	json_array_foreach(json_object_get(d, "top_overprovisioned"), i, w)
	{
		if (table_row(&top, &row))
			break;
		const char *ns = json_string_value(json_object_get(w, "namespace")), *wl = json_string_value(json_object_get(w, "workload"));
		char name[512];
		snprintf(name, sizeof(name), "%s/%s", ns ? ns : "", wl ? wl : "");
		row[0] = cell(name);
		row[1] = cell(json_string_value(json_object_get(w, "container")));
		row[2] = cap_count(cap_num(w, NULL, "pods"));
		row[3] = cap_fmt(cap_num(w, NULL, "cpu_over_provisioned"), 0, NAN);
		row[4] = cap_fmt(cap_num(w, NULL, "memory_over_provisioned"), 1, NAN);
	}
	printf("\n");
	table_print(&top);
}

/* corralctl capacity nodes|workloads|summary, or fit CPU [MEMORY [REPLICAS]]. */
static int cmd_capacity(const ctl_config *cfg, char **args, int n)
{
	const char *what = args[0];
	int fit = !strcmp(what, "fit");
	if ((fit ? n < 2 || n > 4 : n != 1) ||
	    (!fit && strcmp(what, "nodes") && strcmp(what, "workloads") && strcmp(what, "summary")))
		return -1;
	cm_buf q, path;
	cm_buf_init(&q);
	cm_buf_init(&path);
	add_arg(&q, "window", cfg->window);
	if (cfg->time)
		add_arg(&q, "time", cfg->time);
	if (cfg->namespace_ && !strcmp(what, "workloads"))
		add_arg(&q, "namespace", cfg->namespace_);
	if (fit && strcmp(args[1], "-"))
		add_arg(&q, "cpu", args[1]);
	if (fit && n >= 3)
		add_arg(&q, "memory", args[2]);
	if (fit && n == 4)
		add_arg(&q, "replicas", args[3]);
	cm_buf_printf(&path, "/api/v1/capacity/%s", what);
	json_t *d = api_data(cfg, (char *)path.data, (char *)q.data);
	cm_buf_close(&q);
	cm_buf_close(&path);
	if (!d)
		return 1;
	if (fit)
		cap_fit(d);
	else if (!strcmp(what, "nodes"))
		cap_nodes(d);
	else if (!strcmp(what, "workloads"))
		cap_workloads(d);
	else
		cap_summary(d);
	json_decref(d);
	return 0;
}

/* ---- services ----------------------------------------------------------------------------------------- */

/* The strings fmt makes of each element of arr, joined with ","; "<none>" for none. */
static char *joined(json_t *arr, void (*fmt)(cm_buf *b, const char *key, json_t *v))
{
	cm_buf b;
	cm_buf_init(&b);
	const char *k = NULL;
	json_t *v;
	size_t i;
	if (json_is_object(arr)) {
		json_object_foreach(arr, k, v)
		{
			cm_buf_puts(&b, b.len ? "," : "");
			fmt(&b, k, v);
		}
	}
	json_array_foreach(arr, i, v)
	{
		cm_buf_puts(&b, b.len ? "," : "");
		fmt(&b, NULL, v);
	}
	char *c = cell(b.len ? (char *)b.data : "<none>");
	cm_buf_close(&b);
	return c;
}

static void fmt_ip(cm_buf *b, const char *k, json_t *v)
{
	(void)k;
	cm_buf_puts(b, json_is_string(v) ? json_string_value(v) : "");
}

static void fmt_port(cm_buf *b, const char *k, json_t *p)
{
	const char *name = json_string_value(json_object_get(p, "name"));
	(void)k;
	cm_buf_printf(b, "%s%s%lld/%s", name && *name ? name : "", name && *name ? ":" : "",
	              (long long)json_integer_value(json_object_get(p, "port")),
	              json_string_value(json_object_get(p, "protocol")) ? json_string_value(json_object_get(p, "protocol"))
	                                                                  : "TCP");
}

static void fmt_label(cm_buf *b, const char *k, json_t *v)
{
	cm_buf_printf(b, "%s=%s", k, json_is_string(v) ? json_string_value(v) : "");
}

static void fmt_endpoint(cm_buf *b, const char *k, json_t *e)
{
	const char *ip = json_string_value(json_object_get(e, "ip"));
	(void)k;
	cm_buf_printf(b, "%s%s", ip ? ip : "", json_is_false(json_object_get(e, "ready")) ? "(not ready)" : "");
}

/* corralctl services [--namespace NS]: one row per service of the registry, as DNS sees it. */
static int cmd_services(const ctl_config *cfg)
{
	cm_buf q;
	cm_buf_init(&q);
	if (cfg->namespace_)
		add_arg(&q, "namespace", cfg->namespace_);
	json_t *d = api_data(cfg, "/api/v1/services", q.data ? (char *)q.data : ""), *s;
	cm_buf_close(&q);
	if (!d)
		return 1;
	table t = {.head = {"NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORTS", "SELECTOR", "ENDPOINTS", "SOURCE"},
	           .ncols = 8};
	size_t i;
	char **row;
	json_array_foreach(d, i, s)
	{
		const char *ext = json_string_value(json_object_get(s, "externalName"));
		if (table_row(&t, &row))
			break;
		row[0] = cell(json_string_value(json_object_get(s, "namespace")));
		row[1] = cell(json_string_value(json_object_get(s, "name")));
		row[2] = cell(json_string_value(json_object_get(s, "type")));
		row[3] = ext ? cell(ext) : joined(json_object_get(s, "clusterIPs"), fmt_ip);
		row[4] = joined(json_object_get(s, "ports"), fmt_port);
		row[5] = joined(json_object_get(s, "selector"), fmt_label);
		row[6] = joined(json_object_get(s, "endpoints"), fmt_endpoint);
		row[7] = cell(json_string_value(json_object_get(s, "source")));
	}
	table_print(&t);
	printf("(%zu services)\n", json_array_size(d));
	json_decref(d);
	return 0;
}

int main(int argc, char **argv)
{
	ctl_config cfg = {0};
	cm_err err = {{0}};
	char **pos;
	int npos, rc = cm_opts_parse(ctl_opts, CM_ARRAY_LEN(ctl_opts), &cfg, argc, argv, usage, &pos, &npos, &err);
	if (rc == CM_AGAIN)
		return 0;
	if (rc) {
		fprintf(stderr, "corralctl: %s\n", err.msg);
		return 2;
	}
	char token[1024];
	if ((cfg.token_file || getenv("CORRAL_READ_TOKEN")) &&
	    cm_read_secret(cfg.token_file, "CORRAL_READ_TOKEN", token, sizeof(token), &err)) {
		fprintf(stderr, "corralctl: %s\n", err.msg);
		return 2;
	}
	if (cfg.token_file || getenv("CORRAL_READ_TOKEN"))
		snprintf(cfg.auth, sizeof(cfg.auth), "Authorization: Bearer %s", token);
	memset(token, 0, sizeof(token));
	if (npos == 2 && !strcmp(pos[0], "query-range")) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = cmd_query_range(&cfg, pos[1]);
		curl_global_cleanup();
		return rc;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = run_prom_command(&cfg, pos, npos);
	if (rc < 0 && npos >= 2 && !strcmp(pos[0], "capacity"))
		rc = cmd_capacity(&cfg, pos + 1, npos - 1);
	if (rc < 0 && npos == 1 && !strcmp(pos[0], "services"))
		rc = cmd_services(&cfg);
	curl_global_cleanup();
	if (rc >= 0)
		return rc;
	cm_opts_usage(ctl_opts, CM_ARRAY_LEN(ctl_opts), usage);
	return 2;
}
