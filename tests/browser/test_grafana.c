/* test_grafana.c -- every query in dashboards/grafana/ (every .json) is answered by a live aggregator (issue 10,
 * acceptance 3).
 *
 * Starts corral-aggregator on a picked loopback port, imports a few samples of the series the
 * dashboards use (so selectors match something), then for each dashboard: checks that it declares the
 * datasource variables ${datasource} (type prometheus) and ${loki} (type loki) and that every panel
 * target names one of them; substitutes Grafana's variables the way Grafana would for a one-hour view
 * ($__rate_interval, $__interval -> 1m, $__range -> 1h, $node, $namespace, $pod, $search -> values of
 * the imported data); runs each panel query as a range query over the last hour through the Prometheus
 * (query_range) or Loki (query_range) API; and runs each template variable's label_values() through the
 * series or label values API. Every answer must be HTTP 200 with "status":"success". Each query and its
 * result is printed; the test fails listing those that did not succeed.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

typedef struct fixture {
	char dir[256], token[300], url[64], src[4096];
	itest_proc agg;
	int run, failed;
} fixture;

static const char *const subst[][2] = {
	{"${__rate_interval}", "1m"}, {"$__rate_interval", "1m"}, {"${__interval}", "1m"}, {"$__interval", "1m"},
	{"${__range}", "1h"},         {"$__range", "1h"},         {"${namespace}", "demo"}, {"$namespace", "demo"},
	{"${node}", "node-a"},        {"$node", "node-a"},        {"${pod}", "web"},        {"$pod", "web"},
	{"${search}", "error"},       {"$search", "error"},
};

/* Grafana's variable substitution for our variables, into out. */
static void substitute(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	while (*in && o + 1 < cap) {
		size_t i = 0, n = CM_ARRAY_LEN(subst);
		for (; i < n && strncmp(in, subst[i][0], strlen(subst[i][0])); i++)
			;
		if (i < n) {
			o += (size_t)snprintf(out + o, cap - o, "%s", subst[i][1]);
			in += strlen(subst[i][0]);
		} else {
			out[o++] = *in++;
		}
	}
	out[o < cap ? o : cap - 1] = 0;
}

/* GETs path (already encoded) and records whether it answered success. */
static void run(fixture *f, const char *what, const char *q, const char *path)
{
	char url[16384];
	snprintf(url, sizeof(url), "%s%s", f->url, path);
	long st;
	json_t *j = itest_get_json(url, &st);
	const char *status = j ? json_string_value(json_object_get(j, "status")) : NULL;
	int ok = st == 200 && status && !strcmp(status, "success");
	f->run++;
	f->failed += !ok;
	printf("  %s %s: %s", ok ? "ok  " : "FAIL", what, q);
	if (!ok)
		printf("  -> HTTP %ld %s", st, j ? json_string_value(json_object_get(j, "error")) : "(no JSON)");
	printf("\n");
	json_decref(j);
}

static void run_query(fixture *f, int loki, const char *expr)
{
	char q[8192], enc[16384], path[16800];
	substitute(expr, q, sizeof(q));
	itest_urlencode(enc, sizeof(enc), q);
	long long now = (long long)(itest_now_ms() / 1000);
	if (loki)
		snprintf(path, sizeof(path), "/loki/api/v1/query_range?query=%s&start=%lld&end=%lld&step=60&limit=100", enc,
		         now - 3600, now);
	else
		snprintf(path, sizeof(path), "/api/v1/query_range?query=%s&start=%lld&end=%lld&step=60", enc, now - 3600,
		         now);
	run(f, loki ? "logql " : "promql", q, path);
}

/* label_values(label) or label_values(selector, label), as Grafana's data sources run them. */
static void run_variable(fixture *f, int loki, const char *query)
{
	char q[4096], sel[4096] = "", label[256] = "", enc[8192], path[9000];
	substitute(query, q, sizeof(q));
	const char *open = strchr(q, '('), *close = strrchr(q, ')'), *comma = strrchr(q, ',');
	assert_true(!strncmp(q, "label_values(", 13) && open && close);
	if (comma && comma > open) {
		snprintf(sel, sizeof(sel), "%.*s", (int)(comma - open - 1), open + 1);
		snprintf(label, sizeof(label), "%.*s", (int)(close - comma - 1), comma + 1);
	} else {
		snprintf(label, sizeof(label), "%.*s", (int)(close - open - 1), open + 1);
	}
	char *l = label;
	while (*l == ' ')
		l++;
	itest_urlencode(enc, sizeof(enc), sel);
	if (*sel)
		snprintf(path, sizeof(path), "%s/series?match[]=%s", loki ? "/loki/api/v1" : "/api/v1", enc);
	else
		snprintf(path, sizeof(path), "%s/label/%s/values", loki ? "/loki/api/v1" : "/api/v1", l);
	run(f, "var   ", q, path);
}

static int is_loki(json_t *ds)
{
	const char *uid = json_string_value(json_object_get(ds, "uid"));
	const char *type = json_string_value(json_object_get(ds, "type"));
	if (uid && !strcmp(uid, "${loki}"))
		return 1;
	assert_non_null(uid);
	if (strcmp(uid, "${datasource}"))
		fail_msg("a target uses datasource %s, not ${datasource} or ${loki}", uid);
	assert_string_equal(type, "prometheus");
	return 0;
}

static void run_panels(fixture *f, json_t *panels)
{
	size_t i, k;
	json_t *p, *t;
	json_array_foreach(panels, i, p)
	{
		run_panels(f, json_object_get(p, "panels")); /* rows */
		json_array_foreach(json_object_get(p, "targets"), k, t)
		{
			json_t *ds = json_object_get(t, "datasource");
			const char *expr = json_string_value(json_object_get(t, "expr"));
			assert_non_null(expr);
			run_query(f, is_loki(ds ? ds : json_object_get(p, "datasource")), expr);
		}
	}
}

static void check_dashboard(fixture *f, const char *path)
{
	json_error_t je;
	json_t *d = json_load_file(path, 0, &je), *v;
	if (!d)
		fail_msg("%s: %s (line %d)", path, je.text, je.line);
	printf("%s: %s\n", path, json_string_value(json_object_get(d, "title")));
	int prom = 0, loki = 0;
	size_t i;
	json_array_foreach(json_object_get(json_object_get(d, "templating"), "list"), i, v)
	{
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *type = json_string_value(json_object_get(v, "type"));
		const char *query = json_string_value(json_object_get(v, "query"));
		prom |= !strcmp(name, "datasource") && !strcmp(type, "datasource") && !strcmp(query, "prometheus");
		loki |= !strcmp(name, "loki") && !strcmp(type, "datasource") && !strcmp(query, "loki");
		if (!strcmp(type, "query"))
			run_variable(f, is_loki(json_object_get(v, "datasource")), query);
	}
	if (!prom || !loki)
		fail_msg("%s: the ${datasource} (prometheus) and ${loki} (loki) variables must be declared", path);
	run_panels(f, json_object_get(d, "panels"));
	json_decref(d);
}

/* A few samples of what the dashboards read, so their selectors match series. */
static void import_samples(fixture *f)
{
	char url[128], body[4096];
	snprintf(url, sizeof(url), "%s/api/v1/import/prometheus", f->url);
	const char *hdr[] = {"Authorization: Bearer graf-token", NULL};
	long long t = (long long)itest_now_ms();
	size_t o = 0;
	for (int i = 0; i < 4; i++) {
		long long ts = t - (3 - i) * 30000;
		o += (size_t)snprintf(body + o, sizeof(body) - o,
		                      "container_cpu_usage_seconds_total{node=\"node-a\",namespace=\"demo\",pod=\"web\","
		                      "container=\"web\"} %d %lld\n"
		                      "container_memory_working_set_bytes{node=\"node-a\",namespace=\"demo\",pod=\"web\","
		                      "container=\"web\"} 1048576 %lld\n"
		                      "machine_cpu_cores{node=\"node-a\"} 4 %lld\n"
		                      "node_cpu_seconds_total{node=\"node-a\",cpu=\"0\",mode=\"idle\"} %d %lld\n",
		                      i * 3, ts, ts, ts, i * 20, ts);
	}
	cm_buf b;
	cm_buf_init(&b);
	long st = itest_http("POST", url, hdr, body, o, &b);
	cm_buf_close(&b);
	assert_true(st == 204 || st == 200);
}

static void test_grafana_queries(void **state)
{
	fixture *f = *state;
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/dashboards/grafana", f->src);
	import_samples(f);
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort), dashboards = 0;
	assert_true(n > 0);
	for (int i = 0; i < n; i++) {
		size_t l = strlen(list[i]->d_name);
		if (l > 5 && !strcmp(list[i]->d_name + l - 5, ".json")) {
			char path[4500];
			snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
			check_dashboard(f, path);
			dashboards++;
		}
		free(list[i]);
	}
	free(list);
	printf("grafana: %d dashboards, %d queries, %d answered success, %d did not\n", dashboards, f->run,
	       f->run - f->failed, f->failed);
	assert_true(dashboards >= 6);
	assert_int_equal(f->failed, 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	const char *src = getenv("CORRAL_SRC");
	snprintf(f->src, sizeof(f->src), "%s", src ? src : ".");
	itest_mkdtemp(f->dir, sizeof(f->dir));
	snprintf(f->token, sizeof(f->token), "%s/token", f->dir);
	itest_write_file(f->token, "graf-token\n");
	char data[300];
	snprintf(data, sizeof(data), "%s/data", f->dir);
	const char *extra[] = {"--dns-listen", "off", NULL};
	*state = f;
	return itest_aggregator_start(&f->agg, f->dir, data, f->token, extra, f->url, sizeof(f->url));
}

static int teardown(void **state)
{
	fixture *f = *state;
	int st = f->agg.pid > 0 ? itest_aggregator_stop(&f->agg) : 0;
	itest_rmtree(f->dir);
	free(f);
	return st != 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_grafana_queries, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
