/* corralctl.c -- command-line client for the aggregator's HTTP API, with table output.
 *
 *   corralctl [--url URL] query-range '<selector>' [--since 15m] [--step 10s]
 *
 * Talks HTTP with libcurl, parses the Prometheus JSON envelope with jansson and prints one row per
 * point. An error answer from the server is printed as it came and the exit status is 1.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <jansson.h>
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
} ctl_config;

static const cm_opt ctl_opts[] = {
	{"url", CM_OPT_STR, "http://127.0.0.1:9300", offsetof(ctl_config, url), "aggregator base URL", "CORRAL_URL"},
	{"since", CM_OPT_DURATION, "15m", offsetof(ctl_config, since_ms), "how far back a range query reaches", NULL},
	{"step", CM_OPT_DURATION, "0", offsetof(ctl_config, step_ms), "range query step (0: about 60 points)", NULL},
};

static const char usage[] = "usage: corralctl [flags] COMMAND ARGS\n\nCommands:\n"
			    "  query-range SELECTOR   series and their points over --since, one row per point";

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
	return cm_buf_append(ctx, p, size * n) ? 0 : size * n;
}

/* GETs base + path with the given URL-encoded query; returns the parsed JSON body or NULL. */
static json_t *http_get_json(const char *base, const char *path, const char *query, long *status)
{
	CURL *c = curl_easy_init();
	cm_buf body, url;
	cm_buf_init(&body);
	cm_buf_init(&url);
	json_t *j = NULL;
	if (!c || cm_buf_printf(&url, "%s%s?%s", base, path, query))
		goto out;
	curl_easy_setopt(c, CURLOPT_URL, (char *)url.data);
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
	cm_buf_close(&body);
	cm_buf_close(&url);
	if (c)
		curl_easy_cleanup(c);
	return j;
}

static void format_labels(json_t *metric, char *out, size_t cap)
{
	const char *name = json_string_value(json_object_get(metric, "__name__"));
	size_t o = (size_t)snprintf(out, cap, "%s{", name ? name : "");
	const char *k;
	json_t *v;
	int first = 1;
	json_object_foreach(metric, k, v)
	{
		if (!strcmp(k, "__name__") || o >= cap)
			continue;
		o += (size_t)snprintf(out + o, cap - o, "%s%s=\"%s\"", first ? "" : ", ", k, json_string_value(v));
		first = 0;
	}
	if (o < cap)
		snprintf(out + o, cap - o, "}");
}

static void print_time(double secs)
{
	time_t t = (time_t)secs;
	struct tm tm;
	char buf[32];
	localtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	printf("%-20s", buf);
}

static int print_matrix(json_t *result)
{
	size_t i, k;
	json_t *series, *pt;
	printf("%-20s %-20s %s\n", "TIME", "VALUE", "SERIES");
	json_array_foreach(result, i, series)
	{
		char labels[1024];
		format_labels(json_object_get(series, "metric"), labels, sizeof(labels));
		json_array_foreach(json_object_get(series, "values"), k, pt)
		{
			print_time(json_number_value(json_array_get(pt, 0)));
			printf(" %-20s %s\n", json_string_value(json_array_get(pt, 1)), labels);
		}
	}
	printf("(%zu series)\n", json_array_size(result));
	return 0;
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
	json_t *j = http_get_json(cfg->url, "/api/v1/query_range", query, &status);
	if (!j)
		return 1;
	int rc = check_answer(j, status);
	if (!rc)
		rc = print_matrix(json_object_get(json_object_get(j, "data"), "result"));
	json_decref(j);
	return rc;
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
	if (npos == 2 && !strcmp(pos[0], "query-range")) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		rc = cmd_query_range(&cfg, pos[1]);
		curl_global_cleanup();
		return rc;
	}
	cm_opts_usage(ctl_opts, CM_ARRAY_LEN(ctl_opts), usage);
	return 2;
}
