/* dn_int.h -- internals shared by the files of dnsd/ (never included outside it).
 *
 * dn_zone.c lays a snapshot out as one block: a hash table of nodes keyed by lowercase wire names, each
 * node with its records sorted by type, and every name and rdata in one byte area. dn_answer.c reads
 * it through dn__zone_find. dn_rrl.c is the per-thread response rate limiter used by dn_server.c.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef DN_INT_H
#define DN_INT_H

#include <stdint.h>
#include <sys/socket.h>

#include "dn.h"

typedef struct dn__rr {
	uint16_t type;
	uint16_t rdlen;
	uint32_t rdata; /* offset into z->bytes; names inside are uncompressed wire form */
} dn__rr;

enum { DN__NODE_APEX = 1 };

typedef struct dn__node {
	uint32_t name; /* offset into z->bytes of the lowercase wire name */
	uint16_t name_len;
	uint16_t flags;
	uint32_t hash;
	uint32_t rr_first, rr_count; /* into z->rrs, sorted by type; count 0 = empty non-terminal */
	uint32_t zone;               /* index of the zone (apex) this node belongs to */
	uint32_t pre_first, pre_count; /* into z->pre: its precomputed answers */
} dn__node;

/* A precomputed answer to a query for a node's name and one type: the bytes that follow the question
 * when the query has EDNS0, without the OPT. Every query for that name has a question of the same length,
 * so the compression pointers in them (into the question, or into themselves) hold for any query; names
 * taken from the question are pointers, so they come out in the query's case. */
typedef struct dn__pre {
	uint16_t type, len;
	uint16_t counts[3]; /* answer, authority, additional (the OPT not counted) */
	uint32_t off;       /* into z->pre_bytes */
} dn__pre;

#define DN__NZONES 3 /* the cluster domain, in-addr.arpa, ip6.arpa */

struct dn_zone {
	uint32_t ttl, serial;
	dn__node *nodes;
	size_t nnodes;
	uint32_t *slots; /* open addressing: node index + 1, 0 = empty */
	size_t nslots;   /* power of two */
	dn__rr *rrs;
	size_t nrrs;
	uint8_t *bytes;
	size_t nbytes;
	uint32_t apex[DN__NZONES]; /* node index of each zone apex */
	dn__pre *pre;
	size_t npre;
	uint8_t *pre_bytes;
};

/* Big-endian (network order) fields of DNS messages. */
static inline uint16_t dn__get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t dn__get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void dn__put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}

static inline void dn__put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* ASCII lowercase of one byte, as DNS compares names. */
static inline uint8_t dn__lc(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

uint32_t dn__name_hash(const uint8_t *lname, size_t len);
/* Lowercases an uncompressed wire name (ASCII only, as DNS specifies). */
void dn__name_lower(uint8_t *dst, const uint8_t *src, size_t len);
/* The node for a lowercase wire name, or NULL. */
const dn__node *dn__zone_find(const dn_zone *z, const uint8_t *lname, size_t len);
/* Fills z->pre: for every name without a CNAME and every type it has records of, the answer dn_answer
 * gives, when it is complete within DN_EDNS_SIZE bytes (dn_answer.c; the last step of dn_zone_build). */
int dn__precompute(dn_zone *z);

/* ---- response rate limiting (dn_rrl.c): one table per serving thread, no lock ----------------------- */

#define DN__RRL_SLOTS 4096
typedef struct dn__rrl_slot {
	uint64_t key; /* client prefix + 1, 0 = empty */
	int64_t last_ns;
	uint32_t tokens;  /* scaled by 1000 */
	uint32_t limited; /* limited answers since the slot last had tokens, for slip */
} dn__rrl_slot;

typedef struct dn__rrl {
	uint32_t rate, slip;
	dn__rrl_slot slots[DN__RRL_SLOTS];
} dn__rrl;

enum { DN__RRL_PASS, DN__RRL_DROP, DN__RRL_SLIP };
/* Charges one response to the client's prefix (/24 for IPv4, /56 for IPv6). */
int dn__rrl_check(dn__rrl *r, const struct sockaddr *sa, int64_t now_ns);
/* A truncated (TC) version of the answer in buf, in place: header, question and the OPT record if it had
 * one; returns its length (0 for bytes that are not an answer). */
size_t dn__truncate(uint8_t *buf, size_t len);

/* ---- the cache of forwarded answers (dn_fcache.c): the forwarder's, used under its mutex -------------- */

#define DN__FCACHE_MAX 1232 /* larger answers are not kept */
typedef struct dn__fcache dn__fcache;

/* A cache of about `entries` answers; NULL when out of memory. */
dn__fcache *dn__fcache_new(size_t entries);
void dn__fcache_free(dn__fcache *c);
/* Keeps upstream answer a to query q (its question uncompressed at 12, a name of qname_len bytes) asked
 * with flags (DN__FC_*), if it may be kept. */
void dn__fcache_put(dn__fcache *c, const uint8_t *q, size_t qname_len, uint8_t flags, const uint8_t *a, size_t n,
                    int64_t now_ns);
/* The kept answer to query q, made the client's (ID, name case, aged TTLs), into out; 0 when none. */
size_t dn__fcache_get(dn__fcache *c, const uint8_t *q, size_t qname_len, uint8_t flags, uint8_t *out, size_t cap,
                      int64_t now_ns);
size_t dn__fcache_len(const dn__fcache *c);
enum { DN__FC_RD = 1, DN__FC_CD = 2, DN__FC_EDNS = 4, DN__FC_DO = 8 };

/* ---- forwarding to upstreams (dn_forward.c): any serving thread submits, the TCP thread runs it ------ */

#define DN__FWD_MAXUP 8
typedef struct dn__fwd dn__fwd;

/* Where a forwarded answer goes: sendto on udp_fd, or (udp_fd < 0) the server's TCP connection conn. */
typedef struct dn__fwd_client {
	int udp_fd;
	socklen_t alen;
	struct sockaddr_storage addr;
	uint64_t conn;
} dn__fwd_client;

/* Delivers an answer (ID and question already the client's) to TCP connection conn; on the TCP thread. */
typedef void (*dn__fwd_reply_fn)(void *ctx, uint64_t conn, const uint8_t *ans, size_t n);

/* ups: ADDR:PORT strings, each possibly a comma list. timeout_ms 0 = 2000; max_udp caps UDP answers;
 * cache_entries 0 = no cache. */
int dn__fwd_create(const char *const *ups, size_t n, int timeout_ms, size_t max_udp, size_t cache_entries,
                   dn__fwd **out, cm_err *err);
void dn__fwd_destroy(dn__fwd *f);
/* Answers the query (one dn_answer found outside the zones) from the cache into out (*hit its length, to
 * be sent by the caller; cut to the client's UDP limit), or else sends it upstream (*hit 0). CM_AGAIN when
 * too many are in flight, CM_EPROTO when it cannot be forwarded: the caller answers SERVFAIL. */
int dn__fwd_submit(dn__fwd *f, const uint8_t *q, size_t len, const dn__fwd_client *c, uint8_t *out, size_t cap,
                   size_t *hit);
/* An epoll descriptor, readable when dn__fwd_run has upstream traffic to handle. */
int dn__fwd_fd(const dn__fwd *f);
/* Handles upstream answers and TCP attempts, and expires timeouts, answering TCP clients through reply;
 * on the TCP thread, at least every 100 ms. Every answer to a client is sent from here. */
void dn__fwd_run(dn__fwd *f, dn__fwd_reply_fn reply, void *ctx);
/* corral_dns_forward* counters in Prometheus text; nothing when f is NULL. */
int dn__fwd_metrics(dn__fwd *f, cm_buf *b);

#endif
