/* na_collect.c -- one collection pass: run the collectors, build the wire batch and the /metrics text.
 *
 * Called on a libuv worker thread once per interval (never two at once). Collectors emit series
 * through na_emit; this file stamps them with the pass's time, keeps them in a vector that is reused
 * from pass to pass (strings in an arena reset per pass), encodes the batch for the sender and renders
 * the same samples as Prometheus text for the agent's own /metrics.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

struct na__collector {
	na__cgroups *cgroups;
	const char *proc_root;
	char node[256];
	char boot_id[64];
	cm_arena arena;       /* labels of the current pass */
	cm_series *series;    /* reused between passes */
	cm_sample *samples;
	size_t n, cap;
	int64_t now_ms;
	cm_ratelimit rl_cgroup, rl_node;
};

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
	snprintf(c->node, sizeof(c->node), "%s", cfg->node);
	int rc = read_boot_id(cfg->proc_root, c->boot_id, sizeof(c->boot_id));
	if (rc) {
		free(c);
		return cm_errf(err, rc, "cannot read %s/sys/kernel/random/boot_id: %s", cfg->proc_root,
			       cm_strerror(rc));
	}
	rc = na__cgroups_open(cfg->cgroup_root, &c->cgroups, err);
	if (rc) {
		free(c);
		return rc;
	}
	cm_arena_init(&c->arena, 0);
	*out = c;
	return CM_OK;
}

void na__collector_destroy(na__collector *c)
{
	if (!c)
		return;
	na__cgroups_close(c->cgroups);
	cm_arena_close(&c->arena);
	free(c->series);
	free(c->samples);
	free(c);
}

static int grow(na__collector *c)
{
	size_t cap = c->cap ? c->cap * 2 : 256;
	cm_series *s = realloc(c->series, cap * sizeof(*s));
	if (!s)
		return CM_ENOMEM;
	c->series = s;
	cm_sample *smp = realloc(c->samples, cap * sizeof(*smp));
	if (!smp)
		return CM_ENOMEM;
	c->samples = smp;
	c->cap = cap;
	return CM_OK;
}

static int emit_series(void *ctx, const char *metric, const cm_label *labels, size_t nlabels, double value)
{
	na__collector *c = ctx;
	if (c->n == c->cap && grow(c))
		return CM_ENOMEM;
	cm_label *l = cm_arena_alloc(&c->arena, (nlabels + 1) * sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	l[0] = (cm_label){"__name__", cm_arena_strdup(&c->arena, metric)};
	for (size_t i = 0; i < nlabels; i++)
		l[i + 1] = (cm_label){cm_arena_strdup(&c->arena, labels[i].name),
				      cm_arena_strdup(&c->arena, labels[i].value)};
	for (size_t i = 0; i <= nlabels; i++)
		if (!l[i].name || !l[i].value)
			return CM_ENOMEM;
	c->samples[c->n] = (cm_sample){c->now_ms, value};
	c->series[c->n] = (cm_series){l, nlabels + 1, NULL, 1};
	c->n++;
	return CM_OK;
}

/* ---- Prometheus text exposition --------------------------------------------------------------------- */

static const struct {
	const char *name, *type, *help;
} families[] = {
	{"container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds."},
	{"container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless of "
						  "when it was accessed"},
	{"container_memory_working_set_bytes", "gauge", "Current working set in bytes."},
	{"node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode."},
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
	for (const char *p = v; *p && !rc; p++) {
		if (*p == '\\' || *p == '"')
			rc = cm_buf_printf(out, "\\%c", *p);
		else if (*p == '\n')
			rc = cm_buf_puts(out, "\\n");
		else
			rc = cm_buf_append(out, p, 1);
	}
	return rc;
}

static int render_one(const cm_series *s, cm_buf *out)
{
	int rc = cm_buf_puts(out, s->labels[0].value);
	for (size_t i = 1; i < s->nlabels && !rc; i++) {
		rc = cm_buf_printf(out, "%s%s=\"", i == 1 ? "{" : ",", s->labels[i].name);
		rc = rc ? rc : put_text_value(out, s->labels[i].value);
		rc = rc ? rc : cm_buf_puts(out, "\"");
	}
	char v[CM_FMT_DOUBLE_MAX];
	cm_fmt_double(v, sizeof(v), s->samples[0].v);
	return rc ? rc : cm_buf_printf(out, "%s %s\n", s->nlabels > 1 ? "}" : "", v);
}

static int render_text(na__collector *c, cm_buf *out)
{
	cm_series **order = malloc((c->n ? c->n : 1) * sizeof(*order));
	if (!order)
		return CM_ENOMEM;
	for (size_t i = 0; i < c->n; i++)
		order[i] = &c->series[i];
	qsort(order, c->n, sizeof(*order), cmp_by_name);
	int rc = CM_OK;
	for (size_t i = 0; i < c->n && !rc; i++) {
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

/* ---- the pass --------------------------------------------------------------------------------------- */

int na__collect(na__collector *c, uint64_t seq, cm_buf *frame, cm_buf *text, na__collect_stats *st,
		cm_err *err)
{
	int64_t t0 = cm_mono_ns();
	cm_arena_close(&c->arena);
	c->n = 0;
	c->now_ms = cm_now_ms();
	na_emit emit = {emit_series, c};
	cm_err cerr = {{0}};
	memset(st, 0, sizeof(*st));
	if (na__cgroups_collect(c->cgroups, &emit)) {
		st->cgroup_errors++;
		CM_LOG_RL(&c->rl_cgroup, CM_LOG_WARN, "agent", "%s", "cgroup collection incomplete");
	}
	if (na__node_collect(c->proc_root, &emit, &cerr)) {
		st->node_errors++;
		CM_LOG_RL(&c->rl_node, CM_LOG_WARN, "agent", "node collection: %s", cerr.msg);
	}
	for (size_t i = 0; i < c->n; i++)
		c->series[i].samples = &c->samples[i]; /* after the last realloc */
	cm_batch b = {.node = c->node, .boot_id = c->boot_id, .agent_version = CM_VERSION, .seq = seq,
		      .created_ms = c->now_ms, .series = c->series, .nseries = c->n};
	int rc = cm_wire_encode(&b, 3, frame, err);
	if (!rc && render_text(c, text))
		rc = cm_errf(err, CM_ENOMEM, "out of memory rendering /metrics");
	st->series = c->n;
	st->duration_ns = cm_mono_ns() - t0;
	return rc;
}
