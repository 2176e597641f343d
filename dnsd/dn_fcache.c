/* dn_fcache.c -- the cache of forwarded answers: names outside our zones answered again without a trip.
 *
 * A node-local resolver is asked the same outside names (registries, cloud APIs, databases) many times a
 * second; the cache answers repeats from memory for as long as the upstream's TTLs allow, as CoreDNS's
 * cache plugin does in front of its forward plugin. Only the forwarder uses it, under its mutex (no lock
 * here).
 *
 * Key: the question as the client sent it (name lowercased, type, class) and one byte of the query's
 * flags that change the answer: RD, CD, whether it has EDNS0 (an answer to a query without it must not
 * carry an OPT record) and DO. What is kept: answers of at most DN__FCACHE_MAX bytes without TC, and
 * - NOERROR with answer records: for the smallest TTL of its records (the OPT aside), at most 3600 s;
 * - NXDOMAIN, or NOERROR without answer records (NODATA): for the smallest of the authority SOA's TTL,
 *   its MINIMUM field (RFC 2308 section 5) and the other records' TTLs, at most 1800 s, which also becomes
 *   the SOA's TTL; without an SOA, not kept.
 * A hit is the stored answer with the client's ID and question name bytes (its letter case), and every
 * record's TTL (the OPT aside) lowered by the whole seconds since it was stored; an entry that old is
 * gone. The table is two-way set associative with a fixed number of entries (the power of two at most
 * the number asked for, at least 2, at most 2^20): a new answer replaces the entry of its set that
 * expires first, so memory is bounded by entries x (DN__FCACHE_MAX + key), about 1.5 KB each. An expired
 * entry stays until it is asked for or replaced.
 * Answers are bytes from outside: one whose question is not the query's, or whose records do not parse,
 * is not kept.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dn_int.h"

#define TTL_MAX_POS 3600
#define TTL_MAX_NEG 1800
#define KEY_MAX     (DN_NAME_MAX + 5)

typedef struct entry {
	uint8_t *bytes; /* key, then the answer; NULL = empty */
	uint32_t hash, ttl;
	int64_t stored_ns;
	uint16_t klen, len;
} entry;

struct dn__fcache {
	entry *e;     /* nsets x 2 */
	size_t nsets; /* power of two */
	size_t n;     /* entries in use */
};

dn__fcache *dn__fcache_new(size_t entries)
{
	dn__fcache *c = calloc(1, sizeof(*c));
	size_t sets = 1;
	while (sets * 4 <= entries && sets < (size_t)1 << 19)
		sets *= 2;
	if (c && !(c->e = calloc(sets * 2, sizeof(entry)))) {
		free(c);
		return NULL;
	}
	if (c)
		c->nsets = sets;
	return c;
}

void dn__fcache_free(dn__fcache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nsets * 2; i++)
		free(c->e[i].bytes);
	free(c->e);
	free(c);
}

size_t dn__fcache_len(const dn__fcache *c)
{
	return c ? c->n : 0;
}

/* The key of query q (its question uncompressed at 12, qname_len bytes of name) into k; its length. */
static size_t make_key(uint8_t k[KEY_MAX], const uint8_t *q, size_t qname_len, uint8_t flags, uint32_t *hash)
{
	dn__name_lower(k, q + 12, qname_len);
	memcpy(k + qname_len, q + 12 + qname_len, 4);
	k[qname_len + 4] = flags;
	*hash = dn__name_hash(k, qname_len + 5);
	return qname_len + 5;
}

typedef struct ttls {
	uint32_t min;     /* the smallest TTL of the records (the OPT aside) */
	uint32_t soa;     /* an authority SOA's negative-caching TTL: min(its TTL, MINIMUM); UINT32_MAX = none */
	uint8_t *soa_ttl; /* that SOA's TTL field */
} ttls;

/* Walks the records after the question (one) of answer a: lowers each TTL (the OPT aside) by age, down to
 * 0, and fills t. CM_EPROTO when the records do not parse. */
static int walk(uint8_t *a, size_t n, uint32_t age, ttls *t)
{
	uint8_t name[DN_NAME_MAX];
	size_t nl, off = 12;
	*t = (ttls){UINT32_MAX, UINT32_MAX, NULL};
	if (n < 12 || dn__get16(a + 4) != 1 || dn_name_unpack(a, n, &off, name, &nl) || (off += 4) > n)
		return CM_EPROTO;
	for (int s = 0; s < 3; s++)
		for (unsigned i = 0, cnt = dn__get16(a + 6 + 2 * s); i < cnt; i++) {
			if (dn_name_unpack(a, n, &off, name, &nl) || off + 10 > n ||
			    off + 10 + dn__get16(a + off + 8) > n)
				return CM_EPROTO;
			uint8_t *h = a + off;
			uint16_t type = dn__get16(h), rdlen = dn__get16(h + 8);
			off += 10u + rdlen;
			if (type == DN_T_OPT)
				continue;
			uint32_t ttl = dn__get32(h + 4);
			if (ttl > INT32_MAX)
				ttl = 0; /* RFC 2181 section 8 */
			dn__put32(h + 4, ttl > age ? ttl - age : 0);
			if (ttl < t->min)
				t->min = ttl;
			if (s == 1 && type == DN_T_SOA && rdlen >= 20) {
				uint32_t m = dn__get32(h + 10 + rdlen - 4);
				t->soa = ttl < m ? ttl : m;
				t->soa_ttl = h + 4;
			}
		}
	return off == n ? CM_OK : CM_EPROTO;
}

static uint32_t min3(uint32_t a, uint32_t b, uint32_t c)
{
	uint32_t m = a < b ? a : b;
	return m < c ? m : c;
}

/* How long answer a may be kept, 0 = not at all. A negative answer's SOA gets that time as its TTL (RFC
 * 2308 section 5), so a cache behind ours keeps the denial no longer than we do. */
static uint32_t keep_for(uint8_t *a, size_t n)
{
	ttls t;
	if (n > DN__FCACHE_MAX || n < 12 || (a[2] & 0x02) || walk(a, n, 0, &t))
		return 0;
	int rcode = a[3] & 15;
	if (rcode == DN_RC_NOERROR && dn__get16(a + 6))
		return t.min < TTL_MAX_POS ? t.min : TTL_MAX_POS;
	if ((rcode != DN_RC_NXDOMAIN && rcode != DN_RC_NOERROR) || !t.soa_ttl)
		return 0;
	uint32_t ttl = min3(t.min, t.soa, TTL_MAX_NEG); /* a CNAME before the denial may be shorter */
	dn__put32(t.soa_ttl, ttl);
	return ttl;
}

/* Whether the question of answer a (at least 12 + qname_len + 4 bytes) is key k's. Byte by byte: a's bytes
 * are not trusted to be a name, but equal to k's lowercase name (whose label lengths are under 64, never
 * letters) they are one. */
static int same_question(const uint8_t *a, const uint8_t *k, size_t qname_len)
{
	for (size_t i = 0; i < qname_len; i++)
		if (dn__lc(a[12 + i]) != k[i])
			return 0;
	return !memcmp(a + 12 + qname_len, k + qname_len, 4);
}

static entry *find(entry *set, const uint8_t *k, size_t klen, uint32_t hash)
{
	for (int i = 0; i < 2; i++)
		if (set[i].bytes && set[i].hash == hash && set[i].klen == klen && !memcmp(set[i].bytes, k, klen))
			return &set[i];
	return NULL;
}

static int64_t expires(const entry *e)
{
	return e->stored_ns + (int64_t)e->ttl * 1000000000;
}

static void drop(dn__fcache *c, entry *e)
{
	free(e->bytes);
	e->bytes = NULL;
	c->n--;
}

void dn__fcache_put(dn__fcache *c, const uint8_t *q, size_t qname_len, uint8_t flags, const uint8_t *a, size_t n,
                    int64_t now_ns)
{
	uint8_t k[KEY_MAX];
	uint32_t hash;
	size_t klen = make_key(k, q, qname_len, flags, &hash);
	if (n > DN__FCACHE_MAX || n < 12 + qname_len + 4 || !same_question(a, k, qname_len))
		return; /* not an answer to this question */
	uint8_t *b = malloc(klen + n);
	if (!b)
		return;
	memcpy(b, k, klen);
	memcpy(b + klen, a, n);
	uint32_t ttl = keep_for(b + klen, n);
	if (!ttl) {
		free(b);
		return;
	}
	entry *set = &c->e[(hash & (c->nsets - 1)) * 2], *e = find(set, k, klen, hash);
	if (!e) /* an empty way, else the one that expires first */
		e = !set[0].bytes ? &set[0] : !set[1].bytes || expires(&set[1]) < expires(&set[0]) ? &set[1] : &set[0];
	if (e->bytes)
		drop(c, e);
	*e = (entry){
	    .bytes = b, .hash = hash, .ttl = ttl, .stored_ns = now_ns, .klen = (uint16_t)klen, .len = (uint16_t)n};
	c->n++;
}

size_t dn__fcache_get(dn__fcache *c, const uint8_t *q, size_t qname_len, uint8_t flags, uint8_t *out, size_t cap,
                      int64_t now_ns)
{
	uint8_t k[KEY_MAX];
	uint32_t hash;
	ttls t;
	size_t klen = make_key(k, q, qname_len, flags, &hash);
	entry *e = find(&c->e[(hash & (c->nsets - 1)) * 2], k, klen, hash);
	if (!e)
		return 0;
	int64_t age = (now_ns - e->stored_ns) / 1000000000;
	if (age < 0 || age >= e->ttl) {
		drop(c, e);
		return 0;
	}
	if (e->len > cap)
		return 0;
	memcpy(out, e->bytes + e->klen, e->len);
	memcpy(out, q, 2);                    /* the client's ID */
	memcpy(out + 12, q + 12, qname_len);  /* and its letter case */
	walk(out, e->len, (uint32_t)age, &t); /* parsed when it was stored */
	return e->len;
}
