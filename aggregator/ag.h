/* ag.h -- corral-aggregator as a library: configuration table, start and stop of the server.
 *
 * The one public header of aggregator/. main.c parses the command line with ag_opts into an
 * ag_config, calls ag_server_start and waits for a signal; tests embed the same calls. Everything
 * else (HTTP routes, ingest, query) is internal (ag_int.h).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef AG_H
#define AG_H

#include <stdint.h>

#include "cm.h"

typedef struct ag_config {
	const char *listen;      /* ADDR:PORT of the HTTP API */
	const char *data_dir;    /* tsdb and state live here */
	const char *token_file;  /* bearer token for /api/v1/agent/push (or CORRAL_TOKEN) */
	long threads;            /* HTTP worker threads */
	uint64_t max_push_bytes; /* largest accepted push body */
	int log_level;
	int allow_unauth_import; /* benchmarks only: /api/v1/import/prometheus and admin/flush without a token */
	const char *dns_listen;     /* DNS ADDR:PORT (UDP+TCP); NULL = 127.0.0.1:1053 best effort; "off" */
	const char *cluster_domain; /* DNS zone of the services, NULL = cluster.local */
	const char *services;       /* Service/EndpointSlice manifest file or directory, reloaded on change */
	long dns_threads;           /* UDP serving threads, 0 = one per CPU */
	long dns_rrl_rate;          /* DNS responses per second per client /24 (/56), 0 = no limit */
	const char *kube_api;        /* Kubernetes API for Services + EndpointSlices; NULL = in-cluster default; "off" */
	const char *kube_token_file; /* its bearer token (re-read on 401) */
	const char *kube_ca_file;    /* its CA bundle (https) */
	int64_t kube_retry_ms;       /* wait after a failed list or watch */
	cm_strlist dns_upstream;    /* --dns-upstream ADDR:PORT: forward names outside the zones (docs/dns.md) */
	long dns_forward_cache;     /* forwarded answers kept for their TTL, 0 = none */
	const char *loki_push;      /* forward every stored log line to this Loki push URL, NULL = no */
	cm_strlist remote_write;    /* --remote-write URLs: every stored sample is forwarded (ag_rwsend.c) */
	const char *remote_write_token_file; /* bearer token sent to them, NULL = none */
	long remote_write_shards;            /* parallel senders per URL */
	long remote_write_max_samples;       /* samples per request */
	int64_t remote_write_max_wait_ms;    /* longest wait to fill a request */
	uint64_t remote_write_max_queue;     /* disk queue per URL; past it the oldest is dropped */
	/* security (docs/security.md) */
	const char *read_token_file; /* bearer token(s) the read APIs require (or CORRAL_READ_TOKEN), NULL = open */
	const char *tls_cert_file;   /* PEM certificate (chain) of the HTTP API; with tls_key_file: HTTPS only */
	const char *tls_key_file;    /* PEM private key */
	const char *user;            /* drop to this user after binding the ports (when started as root) */
	long http_max_conns;         /* HTTP connections at once */
	long http_max_conns_per_ip;  /* HTTP connections at once from one address, 0 = no per-address limit */
	int64_t http_timeout_ms;     /* an idle HTTP connection is closed after this long */
	uint64_t http_max_header_bytes; /* request line + headers (libmicrohttpd's per-connection memory) */
	long http_rate_per_ip;       /* requests per second per client address (429 beyond), 0 = no limit */
	const char *ui_dir;         /* static files of /ui/, NULL = "ui" next to the executable */
	const char *capacity_reserved_cpu;    /* per node, kept from capacity: allocatable (Kubernetes quantity) */
	const char *capacity_reserved_memory; /* per node, bytes as a Kubernetes quantity */
	int64_t capacity_max_window_ms;       /* longest window the capacity reports accept (the history kept) */
	int tsdb_downsample;                  /* write the tsdb's 5 min and 1 h tiers of each compacted day */
	uint64_t tsdb_cache_bytes;            /* decoded block series kept for repeated queries, 0 = none */
	int64_t node_grace_ms;      /* a node silent this long is not ready and its pods leave endpoints */
	int64_t query_timeout_ms;   /* PromQL: longest evaluation (docs/promql.md) */
	long query_max_samples;     /* PromQL: samples loaded plus points computed per query */
	long query_max_concurrency; /* PromQL: queries at once */
	const cm_opt *opts;        /* the flag table cfg was parsed with, for /api/v1/status/flags (NULL = none) */
	size_t nopts;
} ag_config;

extern const cm_opt ag_opts[];
extern const size_t ag_nopts;

typedef struct ag_server ag_server;

int ag_server_start(const ag_config *cfg, ag_server **out, cm_err *err);
void ag_server_stop(ag_server *s);

#endif
