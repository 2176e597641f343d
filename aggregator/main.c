/* main.c -- corral-aggregator: parse flags, start the server, wait for SIGINT/SIGTERM, stop.
 *
 * Only wiring lives here; see ag.h for the server and ag_opts for every flag.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "ag.h"

const cm_opt ag_opts[] = {
	{"listen", CM_OPT_STR, "127.0.0.1:9300", offsetof(ag_config, listen), "HTTP API address", NULL},
	{"data-dir", CM_OPT_STR, "./corral-data", offsetof(ag_config, data_dir), "directory for the tsdb and state",
	 NULL},
	{"token-file", CM_OPT_STR, NULL, offsetof(ag_config, token_file),
	 "file holding the bearer token agents must push with", NULL},
	{"http-threads", CM_OPT_INT, "4", offsetof(ag_config, threads), "HTTP worker threads", NULL},
	{"max-push-bytes", CM_OPT_SIZE, "16Mi", offsetof(ag_config, max_push_bytes), "largest accepted push body",
	 NULL},
	{"log-level", CM_OPT_LOGLEVEL, "info", offsetof(ag_config, log_level), "error, warn, info or debug", NULL},
	{"allow-unauthenticated-import", CM_OPT_BOOL, NULL, offsetof(ag_config, allow_unauth_import),
	 "benchmarks only: accept bulk import and admin flush without the bearer token", NULL},
	{"dns-listen", CM_OPT_STR, NULL, offsetof(ag_config, dns_listen),
	 "DNS address for UDP and TCP (default 127.0.0.1:1053, skipped with a warning when taken; off = no DNS)", NULL},
	{"cluster-domain", CM_OPT_STR, "cluster.local", offsetof(ag_config, cluster_domain), "DNS zone of the services",
	 NULL},
	{"services", CM_OPT_STR, NULL, offsetof(ag_config, services),
	 "Kubernetes Service/EndpointSlice JSON file or directory (kubectl -o json), reloaded on change", NULL},
	{"dns-threads", CM_OPT_INT, "0", offsetof(ag_config, dns_threads), "DNS UDP threads, 0 = one per CPU", NULL},
	{"dns-rrl-rate", CM_OPT_INT, "0", offsetof(ag_config, dns_rrl_rate),
	 "DNS responses per second per client /24 (/56 for IPv6), 0 = unlimited", NULL},
	{"kube-api", CM_OPT_STR, NULL, offsetof(ag_config, kube_api),
	 "Kubernetes API server to read Services and EndpointSlices from (default https://$KUBERNETES_SERVICE_HOST:"
	 "$KUBERNETES_SERVICE_PORT when set; off = never)", NULL},
	{"kube-token-file", CM_OPT_STR, "/var/run/secrets/kubernetes.io/serviceaccount/token",
	 offsetof(ag_config, kube_token_file), "bearer token for --kube-api, re-read when it answers 401", NULL},
	{"kube-ca-file", CM_OPT_STR, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
	 offsetof(ag_config, kube_ca_file), "CA bundle (PEM) of an https --kube-api", NULL},
	{"kube-retry", CM_OPT_DURATION, "5s", offsetof(ag_config, kube_retry_ms),
	 "wait after a failed list or watch of --kube-api before trying again", NULL},
	{"dns-upstream", CM_OPT_STRLIST, NULL, offsetof(ag_config, dns_upstream),
	 "resolver ADDR:PORT for names outside the cluster zones, instead of REFUSED (repeatable or comma list)", NULL},
	{"dns-forward-cache", CM_OPT_INT, "10000", offsetof(ag_config, dns_forward_cache),
	 "upstream answers kept for their TTL and answered from memory, 0 = no cache", NULL},
	{"node-grace", CM_OPT_DURATION, "30s", offsetof(ag_config, node_grace_ms),
	 "a node whose agent has not pushed for this long is not ready: its pods leave DNS and service endpoints",
	 NULL},
	{"loki-push", CM_OPT_STR, NULL, offsetof(ag_config, loki_push),
	 "forward every stored log line to this Loki push URL (bearer token from CORRAL_LOKI_PUSH_TOKEN)", NULL},
	{"remote-write", CM_OPT_STRLIST, NULL, offsetof(ag_config, remote_write),
	 "forward every stored sample to this Prometheus remote write URL (repeatable; docs/remote-write.md)", NULL},
	{"remote-write-token-file", CM_OPT_STR, NULL, offsetof(ag_config, remote_write_token_file),
	 "file holding the bearer token sent with --remote-write requests", NULL},
	{"remote-write-shards", CM_OPT_INT, "4", offsetof(ag_config, remote_write_shards),
	 "parallel remote write senders per URL (a series always uses the same one)", NULL},
	{"remote-write-max-samples", CM_OPT_INT, "2000", offsetof(ag_config, remote_write_max_samples),
	 "samples per remote write request", NULL},
	{"remote-write-max-wait", CM_OPT_DURATION, "500ms", offsetof(ag_config, remote_write_max_wait_ms),
	 "longest wait to fill a remote write request", NULL},
	{"remote-write-max-queue", CM_OPT_SIZE, "1Gi", offsetof(ag_config, remote_write_max_queue),
	 "disk queue per remote write URL; past it the oldest samples are dropped (counted)", NULL},
	{"read-token-file", CM_OPT_STR, NULL, offsetof(ag_config, read_token_file),
	 "file of bearer tokens the read APIs require (or CORRAL_READ_TOKEN; default: reads are open)", NULL},
	{"tls-cert-file", CM_OPT_STR, NULL, offsetof(ag_config, tls_cert_file),
	 "PEM certificate chain: the HTTP API speaks HTTPS only (needs --tls-key-file)", NULL},
	{"tls-key-file", CM_OPT_STR, NULL, offsetof(ag_config, tls_key_file), "PEM private key of --tls-cert-file",
	 NULL},
	{"user", CM_OPT_STR, NULL, offsetof(ag_config, user),
	 "when started as root: run as this user (and its groups) once the ports are bound", NULL},
	{"http-max-connections", CM_OPT_INT, "1000", offsetof(ag_config, http_max_conns),
	 "HTTP connections at once (more are refused)", NULL},
	{"http-max-connections-per-ip", CM_OPT_INT, "64", offsetof(ag_config, http_max_conns_per_ip),
	 "HTTP connections at once from one client address, 0 = no per-address limit", NULL},
	{"http-timeout", CM_OPT_DURATION, "60s", offsetof(ag_config, http_timeout_ms),
	 "close an HTTP connection idle (or stalled mid-request) this long", NULL},
	{"http-max-header-bytes", CM_OPT_SIZE, "32Ki", offsetof(ag_config, http_max_header_bytes),
	 "largest request line plus headers (answered 431 beyond)", NULL},
	{"http-rate-per-ip", CM_OPT_INT, "0", offsetof(ag_config, http_rate_per_ip),
	 "requests per second per client address, bursts up to one second's worth (429 beyond; not /healthz); 0 = no limit",
	 NULL},
	{"ui-dir", CM_OPT_STR, NULL, offsetof(ag_config, ui_dir),
	 "static files of the web UI at /ui/ (default: the ui directory next to this binary)", NULL},
	{"capacity-reserved-cpu", CM_OPT_STR, "100m", offsetof(ag_config, capacity_reserved_cpu),
	 "CPU per node reserved for the system: allocatable = machine_cpu_cores - this (Kubernetes quantity)", NULL},
	{"capacity-reserved-memory", CM_OPT_STR, "256Mi", offsetof(ag_config, capacity_reserved_memory),
	 "memory per node reserved for the system: allocatable = machine_memory_bytes - this", NULL},
	{"capacity-max-window", CM_OPT_DURATION, "8d", offsetof(ag_config, capacity_max_window_ms),
	 "longest window of the capacity reports (the history the store keeps); longer ones answer 400", NULL},
	{"tsdb-downsample", CM_OPT_BOOL, NULL, offsetof(ag_config, tsdb_downsample),
	 "write 5 min and 1 h tiers of each compacted day (long capacity windows read them; more disk)", NULL},
	{"tsdb-cache-bytes", CM_OPT_SIZE, "128Mi", offsetof(ag_config, tsdb_cache_bytes),
	 "decoded block series kept in memory for repeated queries (least recently used leave first; 0 = none)", NULL},
	{"query-timeout", CM_OPT_DURATION, "2m", offsetof(ag_config, query_timeout_ms),
	 "longest PromQL evaluation (503 timeout beyond; the timeout parameter may only lower it)", NULL},
	{"query-max-samples", CM_OPT_INT, "50000000", offsetof(ag_config, query_max_samples),
	 "samples one PromQL query may load plus points it may compute (422 beyond)", NULL},
	{"query-max-concurrency", CM_OPT_INT, "20", offsetof(ag_config, query_max_concurrency),
	 "PromQL queries at once; more wait up to 5 s, then 503", NULL},
};
const size_t ag_nopts = CM_ARRAY_LEN(ag_opts);

int main(int argc, char **argv)
{
	ag_config cfg = {0};
	cm_err err = {{0}};
	int rc = cm_opts_parse(ag_opts, ag_nopts, &cfg, argc, argv,
			       "usage: corral-aggregator [flags]\n\nStores what corral agents push and answers the "
			       "Prometheus HTTP API.\nThe push token comes from --token-file or CORRAL_TOKEN.",
			       NULL, NULL, &err);
	if (rc == CM_AGAIN)
		return 0;
	if (rc) {
		fprintf(stderr, "corral-aggregator: %s\n", err.msg);
		return 2;
	}
	cm_log_set_level(cfg.log_level);
	cfg.opts = ag_opts, cfg.nopts = ag_nopts; /* shown by /api/v1/status/flags */
	if (cfg.threads < 1 || cfg.threads > 256) {
		fprintf(stderr, "corral-aggregator: --http-threads must be 1..256\n");
		return 2;
	}
	/* a push allocates and frees a few MiB (body, decompressed batch, decoded records): kept in the heap,
	 * not mmapped and unmapped per request, whose page faults were a tenth of a log push's CPU */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits this; only sigwait sees them */
	ag_server *s;
	if ((rc = ag_server_start(&cfg, &s, &err))) {
		CM_LOG(CM_LOG_ERROR, "aggregator", "%s", err.msg);
		return 1;
	}
	CM_LOG(CM_LOG_INFO, "aggregator", "listening on %s://%s, data in %s", cfg.tls_cert_file ? "https" : "http",
	       cfg.listen, cfg.data_dir);
	int sig;
	do
		sigwait(&set, &sig);
	while (sig == SIGPIPE);
	CM_LOG(CM_LOG_INFO, "aggregator", "signal %d: stopping", sig);
	ag_server_stop(s);
	return 0;
}
