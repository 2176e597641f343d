/* main.c -- corral-agent: parse flags, start the agent on the default libuv loop, stop on a signal.
 *
 * Only wiring lives here; see na.h for the agent and na_opts for every flag.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "na.h"

const cm_opt na_opts[] = {
	{"node", CM_OPT_STR, NULL, offsetof(na_config, node), "node name (default: the host name)", "NODE_NAME"},
	{"aggregator", CM_OPT_STR, "http://127.0.0.1:9300", offsetof(na_config, aggregator),
	 "base URL of corral-aggregator", "CORRAL_AGGREGATOR"},
	{"token-file", CM_OPT_STR, NULL, offsetof(na_config, token_file), "file holding the push token",
	 NULL},
	{"interval", CM_OPT_DURATION, "10s", offsetof(na_config, interval_ms), "collection and push interval", NULL},
	{"cgroup-root", CM_OPT_STR, NULL, offsetof(na_config, cgroup_root),
	 "cgroup v2 mount or directory of v1 controller mounts (default: autodetect under /sys/fs/cgroup)", NULL},
	{"proc-root", CM_OPT_STR, "/proc", offsetof(na_config, proc_root), "procfs mount", NULL},
	{"listen", CM_OPT_STR, "127.0.0.1:9301", offsetof(na_config, listen), "address for /metrics and /healthz",
	 NULL},
	{"max-pending", CM_OPT_INT, "360", offsetof(na_config, max_pending),
	 "batches kept while the aggregator is unreachable (oldest dropped first)", NULL},
	{"state-dir", CM_OPT_STR, NULL, offsetof(na_config, state_dir),
	 "directory for the on-disk spool of unacknowledged batches and the batch seq (default: memory only)",
	 NULL},
	{"pods-dir", CM_OPT_STR, NULL, offsetof(na_config, pods_dir),
	 "directory of JSON pod manifests giving pod, namespace, labels, IPs, images, requests (docs/agent.md)",
	 NULL},
	{"docker-root", CM_OPT_STR, NULL, offsetof(na_config, docker_root),
	 "docker data root whose containers/<id>/config.v2.json name docker containers (e.g. /var/lib/docker)",
	 NULL},
	{"label-allowlist", CM_OPT_STR, "app,app.kubernetes.io/name,app.kubernetes.io/component", offsetof(na_config, label_allowlist),
	 "comma-separated pod label keys kept in the inventory (others are dropped)", NULL},
	{"kubelet-url", CM_OPT_STR, NULL, offsetof(na_config, kubelet_url),
	 "kubelet base URL whose /pods gives pod metadata (e.g. https://127.0.0.1:10250)", NULL},
	{"kubelet-token-file", CM_OPT_STR, "/var/run/secrets/kubernetes.io/serviceaccount/token",
	 offsetof(na_config, kubelet_token_file), "bearer token for the kubelet", NULL},
	{"ca-file", CM_OPT_STR, NULL, offsetof(na_config, ca_file),
	 "CA bundle (PEM) that verifies an https:// --aggregator (default: the system's CAs)", NULL},
	{"kubelet-ca-file", CM_OPT_STR, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
	 offsetof(na_config, kubelet_ca_file), "CA bundle for an https kubelet", NULL},
	{"inventory-interval", CM_OPT_DURATION, "1m", offsetof(na_config, inventory_interval_ms),
	 "send the full inventory at least this often (it is also sent on every change)", NULL},
	{"meta-refresh", CM_OPT_DURATION, "10s", offsetof(na_config, meta_refresh_ms),
	 "how often metadata sources are re-read", NULL},
	{"spool-max-bytes", CM_OPT_SIZE, "256Mi", offsetof(na_config, spool_max_bytes),
	 "bound on spooled batch bytes (oldest dropped first)", NULL},
	{"log-root", CM_OPT_STR, NULL, offsetof(na_config, log_root),
	 "tail container logs under <dir>/var/log/{pods,containers} (\"/\" = the host; needs --state-dir; "
	 "default: no log tailing)", NULL},
	{"log-level", CM_OPT_LOGLEVEL, "info", offsetof(na_config, log_level), "error, warn, info or debug", NULL},
};
const size_t na_nopts = CM_ARRAY_LEN(na_opts);

typedef struct signals {
	na_agent *agent;
	uv_signal_t sig[2];
} signals;

static void on_signal(uv_signal_t *s, int signum)
{
	signals *sg = s->data;
	CM_LOG(CM_LOG_INFO, "agent", "signal %d: stopping", signum);
	na_agent_stop(sg->agent);
	for (int i = 0; i < 2; i++)
		uv_close((uv_handle_t *)&sg->sig[i], NULL);
}

int main(int argc, char **argv)
{
	na_config cfg = {0};
	cm_err err = {{0}};
	char host[256];
	/* One malloc arena: the pass runs on whichever libuv worker is free, and an arena per worker kept
	 * ~1 MiB more resident (each holding freed pass buffers); passes never run two at once. */
	mallopt(M_ARENA_MAX, 1);
	int rc = cm_opts_parse(na_opts, na_nopts, &cfg, argc, argv,
			       "usage: corral-agent [flags]\n\nCollects cgroup and node metrics and pushes them to "
			       "corral-aggregator.\nThe push token comes from --token-file or CORRAL_TOKEN.",
			       NULL, NULL, &err);
	if (rc == CM_AGAIN)
		return 0;
	if (rc) {
		fprintf(stderr, "corral-agent: %s\n", err.msg);
		return 2;
	}
	if (cfg.interval_ms < 100 || cfg.max_pending < 1) {
		fprintf(stderr, "corral-agent: --interval must be at least 100ms and --max-pending at least 1\n");
		return 2;
	}
	if (!cfg.node && gethostname(host, sizeof(host)) == 0)
		host[sizeof(host) - 1] = 0, cfg.node = host;
	cm_log_set_level(cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl; /* the cgroup collector keeps about 20 files open per cgroup */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	setenv("UV_THREADPOOL_SIZE", "8", 0); /* NA_SEND_WINDOW sends besides the collection pass and renders */
	uv_loop_t *loop = uv_default_loop();
	na_agent *a;
	if (na_agent_start(loop, &cfg, &a, &err)) {
		CM_LOG(CM_LOG_ERROR, "agent", "%s", err.msg);
		curl_global_cleanup();
		return 1;
	}
	CM_LOG(CM_LOG_INFO, "agent", "node %s: pushing to %s every %lld ms, /metrics on http://%s", cfg.node,
	       cfg.aggregator, (long long)cfg.interval_ms, cfg.listen);
	signals sg = {.agent = a};
	const int signums[2] = {SIGINT, SIGTERM};
	for (int i = 0; i < 2; i++) {
		uv_signal_init(loop, &sg.sig[i]);
		sg.sig[i].data = &sg;
		uv_signal_start(&sg.sig[i], on_signal, signums[i]);
	}
	uv_run(loop, UV_RUN_DEFAULT);
	na_agent_free(a);
	uv_loop_close(loop);
	curl_global_cleanup();
	return 0;
}
