/* na.h -- corral-agent as a library: configuration table, start and stop on a libuv loop.
 *
 * The one public header of nodeagent/. main.c parses flags with na_opts into an na_config, starts
 * the agent on a loop and runs it; na_agent_stop closes every handle so uv_run returns, after which
 * na_agent_free releases the rest. Collectors, sender and HTTP server are internal (na_int.h).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef NA_H
#define NA_H

#include <stdint.h>
#include <uv.h>

#include "cm.h"

typedef struct na_config {
	const char *node;         /* node name; default: NODE_NAME or the host name */
	const char *cgroup_root;  /* cgroup v2 mount or directory of v1 mounts; default autodetect */
	const char *proc_root;    /* /proc, or a fixture tree */
	const char *aggregator;   /* base URL of corral-aggregator */
	const char *token_file;   /* push token file (or CORRAL_TOKEN) */
	const char *ca_file;      /* CA bundle that verifies an https:// aggregator, NULL = the system's */
	const char *listen;       /* ADDR:PORT for /metrics and /healthz */
	int64_t interval_ms;      /* collection and shipping interval */
	long max_pending;         /* batches kept while the aggregator is unreachable */
	const char *state_dir;    /* spool and seq file; NULL keeps batches in memory only */
	uint64_t spool_max_bytes; /* bound on the spooled payload bytes, 0 = none */
	const char *pods_dir;     /* JSON pod manifests (metadata), or NULL */
	const char *docker_root;  /* docker's data root for container configs, or NULL */
	const char *label_allowlist; /* pod label keys copied (comma-separated) */
	int64_t meta_refresh_ms;  /* how often metadata sources are re-read */
	int64_t inventory_interval_ms; /* full inventory at least this often (and on every change) */
	const char *kubelet_url;  /* kubelet base URL for GET /pods, or NULL */
	const char *kubelet_token_file;
	const char *kubelet_ca_file;
	const char *log_root;     /* prefix of /var/log/{pods,containers} to tail; NULL/"" = no log tailing */
	int log_level;
} na_config;

extern const cm_opt na_opts[];
extern const size_t na_nopts;

typedef struct na_agent na_agent;

int na_agent_start(uv_loop_t *loop, const na_config *cfg, na_agent **out, cm_err *err);
void na_agent_stop(na_agent *a);
void na_agent_free(na_agent *a);

#endif
