/* dn_answer.c -- the query path: one query packet in, one answer packet out, from a zone snapshot.
 *
 * Called by the serving threads of dn_server.c (and by tests and the fuzz harness) for every packet.
 * It must never allocate, lock, log or block: the parsed query lives on the stack, the zone is read-only,
 * and the answer is encoded into the caller's buffer with dn_enc (name compression against the question,
 * whose case is the client's, so owner names come back in the query's case).
 *
 * Decisions, in order: drop what dn_parse_query says to drop; FORMERR / NOTIMP / BADVERS from the parser;
 * class other than IN or ANY: REFUSED; AXFR/IXFR: NOTIMP; OPT or another meta type in the question:
 * FORMERR; no snapshot: SERVFAIL; a name outside the cluster domain and the reverse zones: REFUSED (and
 * info->outside, so a server with an upstream forwards it instead; so too a reverse name that would be
 * NXDOMAIN, as CoreDNS' "fallthrough in-addr.arpa ip6.arpa" does); an existing name with a CNAME:
 * the CNAME (not chased: targets are outside our data); records of the type: NOERROR with them (SRV
 * targets' addresses as additional glue, as room allows); an existing name without them: NODATA with
 * the SOA in authority; otherwise NXDOMAIN with the SOA. AA is set on every answer from our zones.
 * Size: 512 bytes without EDNS0, else the client's size capped by max_udp (the OPT we add advertises
 * 1232); 65535 on TCP. When the answer or authority section does not fit, the answer carries the
 * question only, with TC set; glue that does not fit is left out without TC (RFC 2181 9).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "dn_int.h"

#define OPT_LEN  11
#define MAX_GLUE 32

typedef struct actx {
	const dn_zone *z;
	const dn_query *q;
	dn_enc e;
	uint16_t counts[3]; /* answer, authority, additional */
	const dn__node *glue[MAX_GLUE];
	size_t nglue;
} actx;

static int write_rdata(dn_enc *e, const dn_zone *z, const dn__rr *rr)
{
	const uint8_t *rd = z->bytes + rr->rdata;
	switch (rr->type) {
	case DN_T_PTR:
	case DN_T_CNAME:
	case DN_T_NS:
		return dn_enc_name(e, rd, rr->rdlen, 1);
	case DN_T_SOA: {
		size_t off = 0, l1, l2;
		uint8_t tmp[DN_NAME_MAX];
		dn_name_unpack(rd, rr->rdlen, &off, tmp, &l1);
		dn_name_unpack(rd, rr->rdlen, &off, tmp, &l2);
		int rc = dn_enc_name(e, rd, l1, 1);
		rc = rc ? rc : dn_enc_name(e, rd + l1, l2, 1);
		return rc ? rc : dn_enc_bytes(e, rd + l1 + l2, 20);
	}
	case DN_T_SRV: {
		int rc = dn_enc_bytes(e, rd, 6);
		return rc ? rc : dn_enc_name(e, rd + 6, rr->rdlen - 6u, 0); /* RFC 2782: never compressed */
	}
	default:
		return dn_enc_bytes(e, rd, rr->rdlen);
	}
}

/* One RR; on CM_E2BIG the encoder is left as it was. */
static int write_rr(actx *c, const uint8_t *owner, size_t olen, const dn__rr *rr)
{
	size_t mark = c->e.len, ncomp = c->e.ncomp;
	int rc = dn_enc_name(&c->e, owner, olen, 1);
	rc = rc ? rc : dn_enc_u16(&c->e, rr->type);
	rc = rc ? rc : dn_enc_u16(&c->e, DN_C_IN);
	rc = rc ? rc : dn_enc_u32(&c->e, c->z->ttl);
	rc = rc ? rc : dn_enc_u16(&c->e, 0);
	size_t rdstart = c->e.len;
	rc = rc ? rc : write_rdata(&c->e, c->z, rr);
	if (rc) {
		c->e.len = mark, c->e.ncomp = ncomp;
		return rc;
	}
	dn__put16(c->e.buf + rdstart - 2, (uint16_t)(c->e.len - rdstart));
	return CM_OK;
}

static void note_glue(actx *c, const dn__rr *rr)
{
	const uint8_t *t = c->z->bytes + rr->rdata + 6;
	const dn__node *n = dn__zone_find(c->z, t, rr->rdlen - 6u);
	if (!n || c->nglue == MAX_GLUE)
		return;
	for (size_t i = 0; i < c->nglue; i++)
		if (c->glue[i] == n)
			return;
	c->glue[c->nglue++] = n;
}

/* The node's records of type t (all of them for ANY) into section s. */
static int write_rrset(actx *c, const dn__node *n, uint16_t t, int s, const uint8_t *owner, size_t olen)
{
	for (uint32_t i = 0; i < n->rr_count; i++) {
		const dn__rr *rr = &c->z->rrs[n->rr_first + i];
		if (rr->type != t && t != DN_T_ANY)
			continue;
		int rc = write_rr(c, owner, olen, rr);
		if (rc)
			return rc;
		c->counts[s]++;
		if (rr->type == DN_T_SRV && s == 0)
			note_glue(c, rr);
	}
	return CM_OK;
}

static int has_type(const dn_zone *z, const dn__node *n, uint16_t t)
{
	for (uint32_t i = 0; i < n->rr_count; i++)
		if (z->rrs[n->rr_first + i].type == t || t == DN_T_ANY)
			return 1;
	return 0;
}

static void write_glue(actx *c)
{
	for (size_t g = 0; g < c->nglue; g++) {
		const dn__node *n = c->glue[g];
		const uint8_t *name = c->z->bytes + n->name;
		size_t mark = c->e.len, ncomp = c->e.ncomp;
		uint16_t before = c->counts[2];
		if (write_rrset(c, n, DN_T_A, 2, name, n->name_len) ||
		    write_rrset(c, n, DN_T_AAAA, 2, name, n->name_len)) {
			c->e.len = mark, c->e.ncomp = ncomp, c->counts[2] = before; /* whole RRsets or none */
			return;
		}
	}
}

/* Authoritative answer for a name in zone index zi (n: its node, NULL when it does not exist); returns the
 * rcode. */
static int answer_zone(actx *c, const dn__node *n, int zi)
{
	const dn_query *q = c->q;
	if (n && n->rr_count && q->qtype != DN_T_CNAME && has_type(c->z, n, DN_T_CNAME))
		return write_rrset(c, n, DN_T_CNAME, 0, q->qname, q->qname_len) ? -1 : DN_RC_NOERROR;
	if (n && has_type(c->z, n, q->qtype)) {
		if (write_rrset(c, n, q->qtype, 0, q->qname, q->qname_len))
			return -1;
		write_glue(c);
		return DN_RC_NOERROR;
	}
	const dn__node *apex = &c->z->nodes[c->z->apex[zi]];
	const uint8_t *aname = q->qname + q->qname_len - apex->name_len; /* the query's case */
	if (write_rrset(c, apex, DN_T_SOA, 1, aname, apex->name_len))
		return -1;
	return n ? DN_RC_NOERROR : DN_RC_NXDOMAIN;
}

static int find_zone(const dn_zone *z, const uint8_t *lname, size_t len)
{
	for (int i = 0; i < DN__NZONES; i++) {
		const dn__node *a = &z->nodes[z->apex[i]];
		for (size_t off = 0; len - off >= a->name_len; off += lname[off] + 1u) {
			if (len - off == a->name_len && !memcmp(lname + off, z->bytes + a->name, a->name_len))
				return i;
			if (!lname[off])
				break;
		}
	}
	return -1;
}

/* ---- the packet ------------------------------------------------------------------------------------- */

static size_t limit_for(const dn_query *q, size_t max_udp, int tcp)
{
	if (tcp)
		return 65535;
	if (!q->has_edns)
		return DN_UDP_MIN;
	size_t cap = max_udp ? max_udp : DN_EDNS_SIZE;
	return q->edns_size < cap ? q->edns_size : cap;
}

static void write_header(actx *c, int rcode, int aa, int tc)
{
	uint16_t f = (uint16_t)(0x8000 | (c->q->flags & 0x7910) | (rcode & 0xF)); /* QR; keep OPCODE, RD, CD */
	if (aa)
		f |= 0x0400;
	if (tc)
		f |= 0x0200;
	uint8_t *h = c->e.buf;
	dn__put16(h, c->q->id);
	dn__put16(h + 2, f);
	dn__put16(h + 4, c->q->qname_len ? 1 : 0);
	dn__put16(h + 6, c->counts[0]);
	dn__put16(h + 8, c->counts[1]);
	dn__put16(h + 10, (uint16_t)(c->counts[2] + (c->q->has_edns ? 1 : 0)));
}

static void write_opt(actx *c, int rcode)
{
	if (!c->q->has_edns)
		return;
	uint8_t opt[OPT_LEN] = {
	    0, 0, DN_T_OPT, DN_EDNS_SIZE >> 8, DN_EDNS_SIZE & 0xFF, (uint8_t)(rcode >> 4), 0, c->q->edns_do ? 0x80 : 0,
	    0, 0, 0};
	c->e.limit = c->e.cap;
	dn_enc_bytes(&c->e, opt, OPT_LEN);
}

/* Header + question (when there is one); the encoder's limit keeps room for the OPT. */
static int begin(actx *c, uint8_t *out, size_t cap, size_t limit)
{
	if (cap < 12 + DN_NAME_MAX + 4 + OPT_LEN || limit < DN_UDP_MIN)
		return CM_E2BIG;
	dn_enc_init(&c->e, out, cap, limit - (c->q->has_edns ? OPT_LEN : 0));
	c->e.len = 12;
	if (!c->q->qname_len)
		return CM_OK;
	dn_enc_name(&c->e, c->q->qname, c->q->qname_len, 0);
	dn_enc_u16(&c->e, c->q->qtype);
	return dn_enc_u16(&c->e, c->q->qclass);
}

static size_t finish(actx *c, int rcode, int aa, int tc)
{
	write_header(c, rcode, aa, tc);
	write_opt(c, rcode);
	return c->e.len;
}

/* The node's precomputed answer to the query when it has one that fits: question as the client sent it,
 * the stored bytes, the OPT; 0 otherwise (the caller encodes the answer). */
static size_t answer_pre(actx *c, const dn__node *n, size_t cap, size_t limit)
{
	size_t opt = c->q->has_edns ? OPT_LEN : 0;
	for (uint32_t i = 0; i < n->pre_count; i++) {
		const dn__pre *p = &c->z->pre[n->pre_first + i];
		if (p->type != c->q->qtype)
			continue;
		if (c->e.len + p->len + opt > (limit < cap ? limit : cap))
			return 0;
		memcpy(c->e.buf + c->e.len, c->z->pre_bytes + p->off, p->len);
		c->e.len += p->len;
		memcpy(c->counts, p->counts, sizeof(c->counts));
		return finish(c, DN_RC_NOERROR, 1, 0);
	}
	return 0;
}

static int precheck(const dn_zone *z, const dn_query *q)
{
	if (q->qclass != DN_C_IN && q->qclass != DN_C_ANY)
		return DN_RC_REFUSED;
	if (q->qtype == DN_T_AXFR || q->qtype == DN_T_IXFR)
		return DN_RC_NOTIMP;
	if (q->qtype == DN_T_OPT || (q->qtype >= 128 && q->qtype < 255))
		return DN_RC_FORMERR;
	return z ? DN_RC_NOERROR : DN_RC_SERVFAIL;
}

size_t dn_answer(const dn_zone *z, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap, size_t max_udp, int tcp,
                 dn_answer_info *info)
{
	dn_query q;
	actx c = {.z = z, .q = &q};
	memset(info, 0, sizeof(*info));
	int rc = dn_parse_query(pkt, len, &q);
	if (rc < 0)
		return 0;
	info->qtype = q.qtype;
	if (begin(&c, out, cap, limit_for(&q, max_udp, tcp)))
		return 0;
	if (rc == DN_RC_NOERROR)
		rc = precheck(z, &q);
	if (rc != DN_RC_NOERROR) {
		info->rcode = (uint8_t)rc;
		return finish(&c, rc, 0, 0);
	}
	uint8_t lname[DN_NAME_MAX];
	dn__name_lower(lname, q.qname, q.qname_len);
	int zi = find_zone(z, lname, q.qname_len);
	if (zi < 0) {
		info->outside = 1, info->rcode = DN_RC_REFUSED;
		return finish(&c, DN_RC_REFUSED, 0, 0);
	}
	const dn__node *n = dn__zone_find(z, lname, q.qname_len);
	size_t pre = n ? answer_pre(&c, n, cap, limit_for(&q, max_udp, tcp)) : 0;
	if (pre) {
		info->rcode = DN_RC_NOERROR;
		return pre;
	}
	size_t qend = c.e.len;
	rc = answer_zone(&c, n, zi);
	if (rc < 0) { /* answer or authority did not fit: question only, TC */
		c.e.len = qend;
		memset(c.counts, 0, sizeof(c.counts));
		info->truncated = 1;
		info->rcode = DN_RC_NOERROR;
		return finish(&c, DN_RC_NOERROR, 1, 1);
	}
	info->rcode = (uint8_t)rc;
	info->outside = zi > 0 && rc == DN_RC_NXDOMAIN; /* a reverse name not ours: an upstream may know it */
	return finish(&c, rc, 1, 0);
}

/* ---- precomputed answers (at build time) ------------------------------------------------------------ */

/* A query for the node's name and type t with EDNS0 (1232 bytes), as a client sends it; returns its length. */
static size_t synth_query(const dn_zone *z, const dn__node *n, uint16_t t, uint8_t *q)
{
	const uint8_t tail[4 + OPT_LEN] = {(uint8_t)(t >> 8), (uint8_t)t, 0, DN_C_IN, 0, 0, DN_T_OPT,
	                                   DN_EDNS_SIZE >> 8, DN_EDNS_SIZE & 0xFF, 0, 0, 0, 0, 0, 0};
	memset(q, 0, 12);
	q[5] = 1, q[11] = 1; /* QDCOUNT, ARCOUNT (the OPT) */
	memcpy(q + 12, z->bytes + n->name, n->name_len);
	memcpy(q + 12 + n->name_len, tail, sizeof(tail));
	return 12u + n->name_len + sizeof(tail);
}

/* Answers the query for (n, t) with nothing left out (TCP limits) and keeps it when it is positive and
 * fits DN_EDNS_SIZE; 1 when kept. */
static int pre_one(dn_zone *z, const dn__node *n, uint16_t t, uint8_t *a, size_t cap, cm_buf *bytes)
{
	uint8_t q[12 + DN_NAME_MAX + 4 + OPT_LEN];
	dn_answer_info ai;
	size_t len = dn_answer(z, q, synth_query(z, n, t, q), a, cap, 0, 1, &ai);
	size_t qend = 12u + n->name_len + 4;
	if (!len || ai.rcode != DN_RC_NOERROR || ai.truncated || len > DN_EDNS_SIZE || !(a[6] | a[7]))
		return 0;
	dn__pre *p = &z->pre[z->npre];
	*p = (dn__pre){.type = t, .len = (uint16_t)(len - qend - OPT_LEN), .off = (uint32_t)bytes->len};
	for (int s = 0; s < 3; s++)
		p->counts[s] = (uint16_t)(a[6 + 2 * s] << 8 | a[7 + 2 * s]);
	p->counts[2]--; /* the OPT */
	return cm_buf_append(bytes, a + qend, p->len) ? CM_ENOMEM : 1;
}

int dn__precompute(dn_zone *z)
{
	cm_buf bytes;
	cm_buf_init(&bytes);
	size_t cap = 65535;
	uint8_t *a = malloc(cap);
	z->pre = calloc(z->nrrs ? z->nrrs : 1, sizeof(*z->pre)); /* at most one per record */
	int rc = a && z->pre ? CM_OK : CM_ENOMEM;
	for (size_t i = 0; i < z->nnodes && !rc; i++) {
		dn__node *n = &z->nodes[i];
		n->pre_first = (uint32_t)z->npre;
		if (has_type(z, n, DN_T_CNAME))
			continue; /* any type gets the CNAME: the encoding path has the rule */
		for (uint32_t r = 0; r < n->rr_count && !rc; r++) {
			uint16_t t = z->rrs[n->rr_first + r].type;
			if (r && t == z->rrs[n->rr_first + r - 1].type)
				continue;
			int kept = pre_one(z, n, t, a, cap, &bytes);
			rc = kept < 0 ? kept : CM_OK;
			z->npre += kept > 0;
		}
		n->pre_count = (uint32_t)z->npre - n->pre_first; /* from here on, queries for n use them */
	}
	free(a);
	size_t nbytes;
	z->pre_bytes = cm_buf_take(&bytes, &nbytes);
	return rc;
}
