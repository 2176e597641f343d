/* dn.h -- corral's cluster DNS library: wire parse/encode, immutable zone snapshot, UDP/TCP server, RRL.
 *
 * The one public header of dnsd/. A caller (the aggregator) describes services and their endpoints as
 * plain structs, builds an immutable zone snapshot from them with dn_zone_build (off the serving
 * threads), and hands it to a running server with dn_server_publish, which swaps it in atomically and
 * frees the old one once no serving thread can still see it. dn_answer is the query path: it reads a
 * snapshot and writes the response into a caller buffer; it takes no lock and allocates nothing.
 * Answers follow the Kubernetes DNS-based service discovery schema 1.1.0 (docs/dns.md). This library
 * never includes the daemons, tsdb or logship.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef DN_H
#define DN_H

#include <stddef.h>
#include <stdint.h>

#include "cm.h"

/* ---- wire (dn_wire.c) ---------------------------------------------------------------------------- */

enum {
	DN_T_A = 1,
	DN_T_NS = 2,
	DN_T_CNAME = 5,
	DN_T_SOA = 6,
	DN_T_PTR = 12,
	DN_T_TXT = 16,
	DN_T_AAAA = 28,
	DN_T_SRV = 33,
	DN_T_OPT = 41,
	DN_T_IXFR = 251,
	DN_T_AXFR = 252,
	DN_T_ANY = 255,
};
enum { DN_C_IN = 1, DN_C_ANY = 255 };
enum {
	DN_RC_NOERROR = 0,
	DN_RC_FORMERR = 1,
	DN_RC_SERVFAIL = 2,
	DN_RC_NXDOMAIN = 3,
	DN_RC_NOTIMP = 4,
	DN_RC_REFUSED = 5,
	DN_RC_BADVERS = 16,
};

#define DN_NAME_MAX  255  /* wire bytes of a name, root label included */
#define DN_UDP_MIN   512  /* without EDNS0 */
#define DN_EDNS_SIZE 1232 /* what we advertise and the default cap on UDP answers */

/* A parsed query: everything the answer path needs, with no pointer into anything but the packet. */
typedef struct dn_query {
	uint16_t id;
	uint16_t flags; /* header flags word as received */
	uint16_t qtype, qclass;
	uint8_t qname[DN_NAME_MAX]; /* uncompressed wire form, case as received */
	uint8_t qname_len;
	uint16_t question_end; /* offset just past the question in the packet */
	int has_edns;
	uint16_t edns_size; /* the client's UDP payload size (>= 512 when has_edns) */
	uint8_t edns_version;
	int edns_do;
} dn_query;

/* Parses a query packet. Returns DN_RC_NOERROR on success, or the rcode the server should answer with
 * (FORMERR, NOTIMP, BADVERS), or a negative CM_E* when the packet must be dropped (shorter than a header,
 * or a response). On an rcode other than NOERROR q->id and q->flags are set, and the question when it
 * parsed (q->qname_len > 0). */
int dn_parse_query(const uint8_t *pkt, size_t len, dn_query *q);

/* Reads the possibly compressed name at *off in pkt into out (uncompressed wire form) and moves *off past
 * it. Loop-safe: each pointer must point before the name start and before any earlier jump. CM_EPROTO on a bad
 * name. */
int dn_name_unpack(const uint8_t *pkt, size_t len, size_t *off, uint8_t out[DN_NAME_MAX], size_t *out_len);

/* Presentation text ("a.b.c." or "a.b.c") to wire form; CM_EINVAL when a label is empty or too long. */
int dn_name_from_text(const char *s, uint8_t out[DN_NAME_MAX], size_t *out_len);
/* Wire form to presentation text (case kept) with the trailing dot; cap >= 1. */
void dn_name_to_text(const uint8_t *name, size_t len, char *out, size_t cap);

/* An encoder into a fixed buffer with RFC 1035 name compression; no allocation. */
#define DN_COMP_MAX 48
typedef struct dn_enc {
	uint8_t *buf;
	size_t cap;   /* hard limit of the buffer */
	size_t limit; /* soft limit (UDP size); writes beyond it fail with CM_E2BIG */
	size_t len;
	uint16_t comp[DN_COMP_MAX]; /* offsets of names (or name suffixes) already in buf */
	size_t ncomp;
} dn_enc;

void dn_enc_init(dn_enc *e, uint8_t *buf, size_t cap, size_t limit);
/* Writes name, compressed against earlier names (matching case-insensitively) when compress is set, and
 * remembers its suffixes for later names either way. CM_E2BIG when it does not fit (e->len unchanged). */
int dn_enc_name(dn_enc *e, const uint8_t *name, size_t len, int compress);
int dn_enc_u16(dn_enc *e, uint16_t v);
int dn_enc_u32(dn_enc *e, uint32_t v);
int dn_enc_bytes(dn_enc *e, const void *p, size_t n);

/* ---- zone model and snapshot (dn_zone.c) --------------------------------------------------------- */

typedef enum dn_svc_kind { DN_SVC_CLUSTERIP, DN_SVC_HEADLESS, DN_SVC_EXTERNAL } dn_svc_kind;

typedef struct dn_port {
	const char *name;     /* "" or NULL = unnamed: no SRV record */
	const char *protocol; /* "TCP", "UDP", "SCTP" (case-insensitive) */
	uint16_t port;
} dn_port;

typedef struct dn_endpoint {
	const char *ip;       /* IPv4 or IPv6 text */
	const char *hostname; /* NULL or "" = the dashed IP */
	int ready;            /* only ready endpoints are published */
} dn_endpoint;

typedef struct dn_service {
	const char *name, *ns;
	dn_svc_kind kind;
	const char *const *cluster_ips; /* ClusterIP: one per family */
	size_t ncluster_ips;
	const char *external_name; /* ExternalName target */
	const dn_port *ports;
	size_t nports;
	const dn_endpoint *endpoints; /* headless */
	size_t nendpoints;
} dn_service;

typedef struct dn_zone_config {
	const char *domain; /* cluster domain, default "cluster.local" */
	uint32_t ttl;       /* of every record and of negative answers, default 5 */
	uint32_t serial;    /* SOA serial (the snapshot generation) */
} dn_zone_config;

typedef struct dn_zone dn_zone;

/* Builds an immutable snapshot. Services with invalid names or addresses are skipped and counted in
 * *skipped (may be NULL); err explains the first one. Runs on any thread but the serving ones. */
int dn_zone_build(const dn_zone_config *cfg, const dn_service *svcs, size_t n, dn_zone **out, size_t *skipped,
                  cm_err *err);
void dn_zone_destroy(dn_zone *z);
size_t dn_zone_names(const dn_zone *z);
size_t dn_zone_records(const dn_zone *z);

/* ---- the answer path (dn_answer.c) --------------------------------------------------------------- */

typedef struct dn_answer_info {
	uint16_t qtype;
	uint8_t rcode;
	uint8_t truncated;
	uint8_t outside; /* the name is outside our zones (REFUSED), or a reverse name we have nothing for
	                  * (NXDOMAIN): a server with an upstream forwards it instead */
} dn_answer_info;

/* Answers the query in pkt[0..len) from zone z (NULL = no snapshot yet: SERVFAIL) into out. max_udp is the
 * server's cap on UDP answers (0 = DN_EDNS_SIZE); tcp selects the 65535-byte limit. Returns the answer's
 * length, 0 when the packet is dropped. Takes no lock and allocates nothing. */
size_t dn_answer(const dn_zone *z, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap, size_t max_udp, int tcp,
                 dn_answer_info *info);

/* ---- server (dn_server.c) ------------------------------------------------------------------------ */

typedef struct dn_server_config {
	const char *listen; /* ADDR:PORT for UDP and TCP */
	int udp_threads;    /* 0 = one per CPU this process may run on */
	size_t max_udp;     /* cap on UDP answers, 0 = 1232 */
	int tcp_idle_ms;    /* close idle TCP connections after this, 0 = 10000 */
	int tcp_max_conns;  /* 0 = 512 */
	uint32_t rrl_rate;  /* responses per second per client prefix (/24, /56), 0 = off */
	uint32_t rrl_slip;  /* every Nth limited answer goes out truncated (TC), 0 = never */
	const char *const *upstreams; /* ADDR:PORT (each may be a comma list): forward names outside the
	                               * zones there instead of REFUSED; NULL = no forwarding */
	size_t nupstreams;
	int upstream_timeout_ms; /* SERVFAIL after this, 0 = 2000 */
	size_t forward_cache;    /* upstream answers kept for their TTL (dn_fcache.c), 0 = none */
} dn_server_config;

typedef struct dn_server dn_server;

int dn_server_start(const dn_server_config *cfg, dn_server **out, cm_err *err);
/* Takes ownership of z (may be NULL) and makes it the zone new queries see; the previous one is freed
 * once no serving thread can hold it. Any thread, not concurrently with itself. */
void dn_server_publish(dn_server *s, dn_zone *z);
/* The bound port (useful with port 0). */
int dn_server_port(const dn_server *s);
/* Appends the server's metrics in Prometheus text format (corral_dns_*). */
int dn_server_metrics(dn_server *s, cm_buf *out);
void dn_server_stop(dn_server *s);

#endif
