/* ag_dns.c -- the aggregator's cluster DNS: runs dnsd's server and keeps its zone in step with the registry.
 *
 * One builder thread (never a serving or HTTP thread) wakes every 100 ms: it reloads the --services
 * manifest when its modification stamp changed (checked every second), drops the pods of nodes whose
 * agents went silent for longer than the grace period, and when the registry's version moved, turns
 * the registry into dnsd's model (ag__services_model), builds an immutable zone and publishes it
 * (dn_server_publish swaps it in atomically). So a change is served within about 100 ms plus the build.
 * The default listen address is best effort (a warning when taken); an explicit --dns-listen that
 * cannot bind is fatal; "off" disables DNS. --dns-upstream makes dnsd forward names outside the zones.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag_int.h"

#define DEFAULT_LISTEN "127.0.0.1:1053"

struct ag__dns {
	ag__services *reg;
	dn_server *srv;
	const char *domain;
	int64_t grace_ms;
	pthread_t thread;
	int started;
	atomic_int stop;
	uint64_t built_version;
	uint32_t serial;
	cm_ratelimit rl;
};

static void rebuild(ag__dns *d, uint64_t version)
{
	cm_arena a;
	cm_arena_init(&a, 0);
	dn_service *svcs = NULL;
	size_t n = 0, skipped = 0;
	dn_zone *z = NULL;
	cm_err err = {{0}};
	dn_zone_config cfg = {.domain = d->domain, .ttl = 5, .serial = ++d->serial};
	int rc = ag__services_model(d->reg, &a, &svcs, &n);
	rc = rc ? rc : dn_zone_build(&cfg, svcs, n, &z, &skipped, &err);
	cm_arena_close(&a);
	if (rc) {
		CM_LOG_RL(&d->rl, CM_LOG_WARN, "dns", "zone build failed: %s", err.msg[0] ? err.msg : cm_strerror(rc));
		return;
	}
	if (skipped)
		CM_LOG_RL(&d->rl, CM_LOG_WARN, "dns", "%zu service(s) left out of the zone; first: %s", skipped,
		          err.msg);
	CM_LOG(CM_LOG_DEBUG, "dns", "zone %u: %zu services, %zu names, %zu records", d->serial, n, dn_zone_names(z),
	       dn_zone_records(z));
	dn_server_publish(d->srv, z);
	d->built_version = version;
}

static void *builder_main(void *arg)
{
	ag__dns *d = arg;
	for (unsigned tick = 0; !atomic_load(&d->stop); tick++) {
		cm_err err = {{0}};
		if (tick % 10 == 0 && ag__services_reload_file(d->reg, &err) < 0)
			CM_LOG_RL(&d->rl, CM_LOG_WARN, "dns", "--services: %s (keeping the last good manifest)",
			          err.msg);
		ag__services_expire_nodes(d->reg, cm_now_ms(), d->grace_ms);
		uint64_t v = ag__services_version(d->reg);
		if (v != d->built_version || !d->serial)
			rebuild(d, v);
		usleep(100 * 1000);
	}
	return NULL;
}

static int start_server(ag__dns *d, const ag_config *cfg, cm_err *err)
{
	const char *listen = cfg->dns_listen ? cfg->dns_listen : DEFAULT_LISTEN;
	dn_server_config sc = {.listen = listen,
	                       .udp_threads = (int)cfg->dns_threads,
	                       .rrl_rate = (uint32_t)cfg->dns_rrl_rate,
	                       .rrl_slip = 2,
	                       .upstreams = cfg->dns_upstream.v,
	                       .nupstreams = cfg->dns_upstream.n,
	                       .forward_cache = cfg->dns_forward_cache > 0 ? (size_t)cfg->dns_forward_cache : 0};
	int rc = dn_server_start(&sc, &d->srv, err);
	if (rc && !cfg->dns_listen) {
		CM_LOG(CM_LOG_WARN, "dns", "%s; DNS is off (pass --dns-listen to make this fatal)", err->msg);
		return CM_OK;
	}
	if (!rc)
		CM_LOG(CM_LOG_INFO, "dns", "dns on %s (udp+tcp), zone %s%s", listen, d->domain,
		       cfg->dns_upstream.n ? ", other names forwarded upstream" : "");
	return rc;
}

int ag__dns_start(const ag_config *cfg, ag__services *reg, ag__dns **out, cm_err *err)
{
	*out = NULL;
	if (cfg->dns_listen && (!strcmp(cfg->dns_listen, "off") || !*cfg->dns_listen))
		return CM_OK;
	ag__dns *d = calloc(1, sizeof(*d));
	if (!d)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	d->reg = reg;
	d->domain = cfg->cluster_domain ? cfg->cluster_domain : "cluster.local";
	d->grace_ms = cfg->node_grace_ms > 0 ? cfg->node_grace_ms : AG__NODE_GRACE_MS;
	int rc = start_server(d, cfg, err);
	if (!rc && !d->srv) {
		free(d);
		return CM_OK;
	}
	if (!rc && pthread_create(&d->thread, NULL, builder_main, d))
		rc = cm_errf(err, CM_ENOMEM, "cannot start the DNS zone builder");
	d->started = !rc;
	if (rc) {
		ag__dns_stop(d);
		return rc;
	}
	*out = d;
	return CM_OK;
}

void ag__dns_stop(ag__dns *d)
{
	if (!d)
		return;
	atomic_store(&d->stop, 1);
	if (d->started)
		pthread_join(d->thread, NULL);
	dn_server_stop(d->srv);
	free(d);
}

int ag__dns_metrics(ag__dns *d, cm_buf *out)
{
	return d ? dn_server_metrics(d->srv, out) : CM_OK;
}

int ag__dns_addr(const ag__dns *d, const ag_config *cfg, struct sockaddr_storage *out)
{
	cm_err err = {{0}};
	if (!d || cm_parse_listen("dns-listen", cfg->dns_listen ? cfg->dns_listen : DEFAULT_LISTEN, out, &err))
		return CM_ENOENT;
	uint16_t port = htons((uint16_t)dn_server_port(d->srv));
	if (out->ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
		if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
			a->sin6_addr = in6addr_loopback;
		a->sin6_port = port;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)out;
		if (a->sin_addr.s_addr == htonl(INADDR_ANY))
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = port;
	}
	return CM_OK;
}
