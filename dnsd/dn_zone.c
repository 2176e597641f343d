/* dn_zone.c -- builds the immutable zone snapshot from services and endpoints (Kubernetes DNS schema 1.1.0).
 *
 * The aggregator calls dn_zone_build on its own thread whenever services or endpoints change; the
 * result is read-only and shared by every serving thread until dn_server_publish retires it. Building
 * goes in three steps: every record of the schema becomes a (name, type, rdata) entry in a scratch list;
 * the list is sorted and deduplicated so each name's records are contiguous and ordered by type; then
 * one node per name, plus one empty node per empty non-terminal between a name and its zone apex (so
 * the answer path can tell NODATA from NXDOMAIN, RFC 8020), goes into an open-addressing hash table.
 *
 * Records (TTL = cfg.ttl everywhere; <z> = cluster domain, <f> = <svc>.<ns>.svc.<z>):
 *   <z>                     SOA ns.dns.<z>. hostmaster.<z>. serial 7200 1800 86400 ttl
 *   dns-version.<z>         TXT "1.1.0"
 *   ClusterIP   <f>         A / AAAA per cluster IP;  PTR of each IP -> <f>
 *               _<port>._<proto>.<f>  SRV 0 100 <port> <f>.   per named port
 *   Headless    <f>         A / AAAA per ready endpoint (no ready endpoint: the name does not exist)
 *               <host>.<f>  A / AAAA of that endpoint; PTR of its IP -> <host>.<f>
 *               _<port>._<proto>.<f>  SRV 0 <100/n> <port> <host>.<f>.  per named port x endpoint
 *   ExternalName <f>        CNAME <external name>
 *   in-addr.arpa, ip6.arpa  SOA (as above) at each reverse apex, PTR records below
 * <host> is the endpoint's hostname when it is a valid label, else its IP with '.' or ':' replaced by '-';
 * an endpoint whose IP does not parse is left out (the rest of its service is kept).
 *
 * Last, every positive answer that fits 1232 bytes is encoded once (dn__precompute in dn_answer.c), so
 * the query path copies it instead of encoding it per query.
 *
 * Memory: the snapshot is seven arrays (nodes, slots, rrs, bytes, precomputed answers and their bytes,
 * plus the struct), freed together.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dn_int.h"

typedef struct ent {
	uint32_t name, rdata;
	uint16_t name_len, type, rdlen;
} ent;

typedef struct builder {
	cm_buf bytes;
	ent *ents;
	size_t nents, cap;
	dn_zone_config cfg;
	uint8_t apex[DN__NZONES][DN_NAME_MAX];
	size_t apex_len[DN__NZONES];
} builder;

static const char *const rev_apex[2] = {"in-addr.arpa", "ip6.arpa"};

/* ---- scratch entries -------------------------------------------------------------------------------- */

static int put_bytes(builder *b, const void *p, size_t n, uint32_t *off)
{
	if (b->bytes.len + n > UINT32_MAX)
		return CM_E2BIG;
	*off = (uint32_t)b->bytes.len;
	return cm_buf_append(&b->bytes, p, n);
}

static int add(builder *b, const uint8_t *name, size_t nlen, uint16_t type, const void *rd, size_t rdlen)
{
	if (b->nents == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 1024;
		ent *ne = realloc(b->ents, nc * sizeof(*ne));
		if (!ne)
			return CM_ENOMEM;
		b->ents = ne, b->cap = nc;
	}
	uint8_t lname[DN_NAME_MAX];
	dn__name_lower(lname, name, nlen);
	ent *e = &b->ents[b->nents];
	*e = (ent){.name_len = (uint16_t)nlen, .type = type, .rdlen = (uint16_t)rdlen};
	int rc = put_bytes(b, lname, nlen, &e->name);
	rc = rc ? rc : put_bytes(b, rd, rdlen, &e->rdata);
	if (!rc)
		b->nents++;
	return rc;
}

/* "label" + "." + parent (wire), into out. */
static int prepend(const char *label, const uint8_t *parent, size_t plen, uint8_t out[DN_NAME_MAX], size_t *olen)
{
	size_t l = strlen(label);
	if (!l || l > 63 || 1 + l + plen > DN_NAME_MAX)
		return CM_EINVAL;
	out[0] = (uint8_t)l;
	memcpy(out + 1, label, l);
	memcpy(out + 1 + l, parent, plen);
	*olen = 1 + l + plen;
	return CM_OK;
}

static int valid_label(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

/* ---- records ---------------------------------------------------------------------------------------- */

typedef struct ipaddr {
	int family;
	uint8_t a[16];
} ipaddr;

static int parse_ip(const char *s, ipaddr *ip)
{
	if (inet_pton(AF_INET, s, ip->a) == 1)
		return ip->family = AF_INET, CM_OK;
	if (inet_pton(AF_INET6, s, ip->a) == 1)
		return ip->family = AF_INET6, CM_OK;
	return CM_EINVAL;
}

static int add_addr(builder *b, const uint8_t *name, size_t nlen, const ipaddr *ip)
{
	return ip->family == AF_INET ? add(b, name, nlen, DN_T_A, ip->a, 4) : add(b, name, nlen, DN_T_AAAA, ip->a, 16);
}

static int add_ptr(builder *b, const ipaddr *ip, const uint8_t *target, size_t tlen)
{
	char text[128];
	size_t o = 0;
	if (ip->family == AF_INET) {
		snprintf(text, sizeof(text), "%u.%u.%u.%u.in-addr.arpa", ip->a[3], ip->a[2], ip->a[1], ip->a[0]);
	} else {
		for (int i = 15; i >= 0; i--)
			o += (size_t)snprintf(text + o, sizeof(text) - o, "%x.%x.", ip->a[i] & 15, ip->a[i] >> 4);
		snprintf(text + o, sizeof(text) - o, "ip6.arpa");
	}
	uint8_t name[DN_NAME_MAX];
	size_t nlen;
	int rc = dn_name_from_text(text, name, &nlen);
	return rc ? rc : add(b, name, nlen, DN_T_PTR, target, tlen);
}

static int add_srv(builder *b, const uint8_t *fqdn, size_t flen, const dn_port *p, uint16_t weight,
                   const uint8_t *target, size_t tlen)
{
	char plabel[80], proto[16];
	if (!p->name || !*p->name)
		return CM_OK;
	snprintf(plabel, sizeof(plabel), "_%s", p->name);
	snprintf(proto, sizeof(proto), "_%s", p->protocol && *p->protocol ? p->protocol : "tcp");
	for (char *c = proto; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'Z' ? *c | 0x20 : *c);
	uint8_t pname[DN_NAME_MAX], name[DN_NAME_MAX], rd[6 + DN_NAME_MAX];
	size_t plen, nlen;
	int rc = prepend(proto, fqdn, flen, pname, &plen);
	rc = rc ? rc : prepend(plabel, pname, plen, name, &nlen);
	if (rc)
		return rc;
	rd[0] = 0, rd[1] = 0, rd[2] = (uint8_t)(weight >> 8), rd[3] = (uint8_t)weight;
	rd[4] = (uint8_t)(p->port >> 8), rd[5] = (uint8_t)p->port;
	memcpy(rd + 6, target, tlen);
	return add(b, name, nlen, DN_T_SRV, rd, 6 + tlen);
}

static void dashed(const char *ip, char *out, size_t cap)
{
	snprintf(out, cap, "%s", ip);
	for (char *c = out; *c; c++)
		if (*c == '.' || *c == ':')
			*c = '-';
}

static int add_endpoint(builder *b, const dn_service *s, const uint8_t *fqdn, size_t flen, const dn_endpoint *ep,
                        uint16_t weight)
{
	ipaddr ip;
	char host[64];
	if (parse_ip(ep->ip, &ip))
		return CM_EINVAL;
	dashed(ep->ip, host, sizeof(host));
	const char *h = ep->hostname && valid_label(ep->hostname) ? ep->hostname : host;
	uint8_t hname[DN_NAME_MAX];
	size_t hlen;
	int rc = valid_label(h) ? prepend(h, fqdn, flen, hname, &hlen) : CM_EINVAL;
	rc = rc ? rc : add_addr(b, fqdn, flen, &ip);
	rc = rc ? rc : add_addr(b, hname, hlen, &ip);
	rc = rc ? rc : add_ptr(b, &ip, hname, hlen);
	for (size_t i = 0; i < s->nports && !rc; i++)
		rc = add_srv(b, fqdn, flen, &s->ports[i], weight, hname, hlen);
	return rc;
}

static int add_service(builder *b, const dn_service *s)
{
	uint8_t nsn[DN_NAME_MAX], svcn[DN_NAME_MAX], fqdn[DN_NAME_MAX], t[DN_NAME_MAX];
	size_t nslen, svclen, flen, tlen;
	if (!s->name || !s->ns || !valid_label(s->name) || !valid_label(s->ns))
		return CM_EINVAL;
	int rc = prepend("svc", b->apex[0], b->apex_len[0], svcn, &svclen);
	rc = rc ? rc : prepend(s->ns, svcn, svclen, nsn, &nslen);
	rc = rc ? rc : prepend(s->name, nsn, nslen, fqdn, &flen);
	if (rc)
		return rc;
	if (s->kind == DN_SVC_EXTERNAL) {
		rc = s->external_name ? dn_name_from_text(s->external_name, t, &tlen) : CM_EINVAL;
		return rc ? rc : add(b, fqdn, flen, DN_T_CNAME, t, tlen);
	}
	if (s->kind == DN_SVC_HEADLESS) {
		size_t ready = 0;
		for (size_t i = 0; i < s->nendpoints; i++)
			ready += s->endpoints[i].ready != 0;
		uint16_t w = ready ? (uint16_t)(100 / ready ? 100 / ready : 1) : 0;
		for (size_t i = 0; i < s->nendpoints && !rc; i++)
			if (s->endpoints[i].ready)
				if ((rc = add_endpoint(b, s, fqdn, flen, &s->endpoints[i], w)) == CM_EINVAL)
					rc = CM_OK; /* a bad address leaves that endpoint out, not the service */
		return rc;
	}
	for (size_t i = 0; i < s->ncluster_ips && !rc; i++) {
		ipaddr ip;
		rc = parse_ip(s->cluster_ips[i], &ip);
		rc = rc ? rc : add_addr(b, fqdn, flen, &ip);
		rc = rc ? rc : add_ptr(b, &ip, fqdn, flen);
	}
	for (size_t i = 0; i < s->nports && !rc; i++)
		rc = add_srv(b, fqdn, flen, &s->ports[i], 100, fqdn, flen);
	return rc;
}

static int add_apexes(builder *b)
{
	uint8_t rd[2 * DN_NAME_MAX + 20], name[DN_NAME_MAX];
	size_t l1, l2, nlen;
	int rc = prepend("dns", b->apex[0], b->apex_len[0], name, &nlen);
	rc = rc ? rc : prepend("ns", name, nlen, rd, &l1);
	rc = rc ? rc : prepend("hostmaster", b->apex[0], b->apex_len[0], rd + l1, &l2);
	if (rc)
		return rc;
	uint32_t v[5] = {b->cfg.serial, 7200, 1800, 86400, b->cfg.ttl};
	for (int i = 0; i < 5; i++)
		for (int k = 0; k < 4; k++)
			rd[l1 + l2 + 4 * i + k] = (uint8_t)(v[i] >> (24 - 8 * k));
	for (int i = 0; i < DN__NZONES && !rc; i++)
		rc = add(b, b->apex[i], b->apex_len[i], DN_T_SOA, rd, l1 + l2 + 20);
	rc = rc ? rc : prepend("dns-version", b->apex[0], b->apex_len[0], name, &nlen);
	return rc ? rc : add(b, name, nlen, DN_T_TXT, "\0051.1.0", 6);
}

/* ---- sort, dedupe, index ---------------------------------------------------------------------------- */

static int cmp_ent(const void *pa, const void *pb, void *arg)
{
	const ent *a = pa, *b = pb;
	const uint8_t *bytes = arg;
	size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
	int c = memcmp(bytes + a->name, bytes + b->name, n);
	if (c || a->name_len != b->name_len)
		return c ? c : (a->name_len < b->name_len ? -1 : 1);
	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	n = a->rdlen < b->rdlen ? a->rdlen : b->rdlen;
	c = memcmp(bytes + a->rdata, bytes + b->rdata, n);
	return c ? c : (a->rdlen > b->rdlen) - (a->rdlen < b->rdlen);
}

const dn__node *dn__zone_find(const dn_zone *z, const uint8_t *lname, size_t len)
{
	uint32_t h = dn__name_hash(lname, len);
	for (size_t i = h & (z->nslots - 1);; i = (i + 1) & (z->nslots - 1)) {
		uint32_t s = z->slots[i];
		if (!s)
			return NULL;
		const dn__node *n = &z->nodes[s - 1];
		if (n->hash == h && n->name_len == len && !memcmp(z->bytes + n->name, lname, len))
			return n;
	}
}

/* Finds or inserts the node for the name at bytes[off]; returns its index. */
static uint32_t node_get(dn_zone *z, uint32_t off, size_t len, uint32_t zone)
{
	const uint8_t *name = z->bytes + off;
	uint32_t h = dn__name_hash(name, len);
	size_t i = h & (z->nslots - 1);
	for (; z->slots[i]; i = (i + 1) & (z->nslots - 1)) {
		dn__node *n = &z->nodes[z->slots[i] - 1];
		if (n->hash == h && n->name_len == len && !memcmp(z->bytes + n->name, name, len))
			return z->slots[i] - 1;
	}
	z->nodes[z->nnodes] = (dn__node){.name = off, .name_len = (uint16_t)len, .hash = h, .zone = zone};
	z->slots[i] = (uint32_t)++z->nnodes;
	return (uint32_t)(z->nnodes - 1);
}

static int zone_of(const builder *b, const uint8_t *name, size_t len)
{
	for (int i = 0; i < DN__NZONES; i++)
		if (len >= b->apex_len[i] && !memcmp(name + len - b->apex_len[i], b->apex[i], b->apex_len[i]))
			return i;
	return -1;
}

/* Adds the ancestors of the node's name up to its apex as (possibly empty) nodes. */
static void add_ancestors(dn_zone *z, const builder *b, uint32_t off, size_t len, uint32_t zone)
{
	size_t apex_len = b->apex_len[zone];
	for (size_t i = z->bytes[off] + 1u; len - i >= apex_len; i += z->bytes[off + i] + 1u) {
		node_get(z, off + (uint32_t)i, len - i, zone);
		if (len - i == apex_len)
			break;
	}
}

static int cmp_name(const uint8_t *bytes, const ent *x, const ent *y)
{
	return x->name_len != y->name_len || memcmp(bytes + x->name, bytes + y->name, x->name_len);
}

static size_t count_labels(const uint8_t *name)
{
	size_t n = 0;
	for (size_t i = 0; name[i]; i += name[i] + 1u)
		n++;
	return n;
}

static int index_zone(dn_zone *z, builder *b)
{
	size_t maxnodes = DN__NZONES;
	for (size_t i = 0; i < b->nents; i++)
		maxnodes += count_labels(z->bytes + b->ents[i].name);
	for (z->nslots = 64; z->nslots < 2 * maxnodes; z->nslots *= 2)
		;
	z->nodes = calloc(maxnodes, sizeof(*z->nodes));
	z->slots = calloc(z->nslots, sizeof(*z->slots));
	z->rrs = calloc(b->nents ? b->nents : 1, sizeof(*z->rrs));
	if (!z->nodes || !z->slots || !z->rrs)
		return CM_ENOMEM;
	for (size_t i = 0; i < b->nents;) {
		const ent *e = &b->ents[i];
		int zone = zone_of(b, z->bytes + e->name, e->name_len);
		uint32_t ni = node_get(z, e->name, e->name_len, (uint32_t)zone);
		z->nodes[ni].rr_first = (uint32_t)z->nrrs;
		for (; i < b->nents && !cmp_name(z->bytes, e, &b->ents[i]); i++)
			if (z->nrrs == z->nodes[ni].rr_first || cmp_ent(&b->ents[i - 1], &b->ents[i], z->bytes))
				z->rrs[z->nrrs++] = (dn__rr){b->ents[i].type, b->ents[i].rdlen, b->ents[i].rdata};
		z->nodes[ni].rr_count = (uint32_t)z->nrrs - z->nodes[ni].rr_first;
		add_ancestors(z, b, e->name, e->name_len, (uint32_t)zone);
	}
	for (int i = 0; i < DN__NZONES; i++) {
		const dn__node *n = dn__zone_find(z, b->apex[i], b->apex_len[i]);
		if (!n)
			return CM_EINVAL;
		z->apex[i] = (uint32_t)(n - z->nodes);
		z->nodes[z->apex[i]].flags |= DN__NODE_APEX;
	}
	return CM_OK;
}

/* ---- build and destroy ------------------------------------------------------------------------------ */

static int builder_init(builder *b, const dn_zone_config *cfg, cm_err *err)
{
	memset(b, 0, sizeof(*b));
	cm_buf_init(&b->bytes);
	b->cfg.domain = cfg && cfg->domain && *cfg->domain ? cfg->domain : "cluster.local";
	b->cfg.ttl = cfg && cfg->ttl ? cfg->ttl : 5;
	b->cfg.serial = cfg ? cfg->serial : 0;
	if (dn_name_from_text(b->cfg.domain, b->apex[0], &b->apex_len[0]) || b->apex_len[0] > 128)
		return cm_errf(err, CM_EINVAL, "cluster domain %s is not a valid DNS name", b->cfg.domain);
	dn__name_lower(b->apex[0], b->apex[0], b->apex_len[0]);
	for (int i = 1; i < DN__NZONES; i++)
		dn_name_from_text(rev_apex[i - 1], b->apex[i], &b->apex_len[i]);
	return CM_OK;
}

int dn_zone_build(const dn_zone_config *cfg, const dn_service *svcs, size_t n, dn_zone **out, size_t *skipped,
                  cm_err *err)
{
	builder b;
	size_t nskip = 0;
	dn_zone *z = NULL;
	int rc = builder_init(&b, cfg, err);
	if (!rc && (rc = add_apexes(&b)))
		cm_errf(err, rc, "cannot build the zone apex records");
	for (size_t i = 0; i < n && !rc; i++) {
		size_t mark = b.nents;
		int src = add_service(&b, &svcs[i]);
		if (src == CM_ENOMEM) {
			rc = cm_errf(err, src, "out of memory");
		} else if (src) {
			b.nents = mark;
			if (!nskip++)
				cm_errf(err, src, "service %s/%s: invalid name, address or port name",
				        svcs[i].ns ? svcs[i].ns : "", svcs[i].name ? svcs[i].name : "");
		}
	}
	if (rc)
		goto fail;
	qsort_r(b.ents, b.nents, sizeof(*b.ents), cmp_ent, b.bytes.data);
	if (!(z = calloc(1, sizeof(*z)))) {
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
		goto fail;
	}
	z->ttl = b.cfg.ttl, z->serial = b.cfg.serial;
	z->bytes = cm_buf_take(&b.bytes, &z->nbytes);
	if ((rc = index_zone(z, &b)) || (rc = dn__precompute(z))) {
		cm_errf(err, rc, "cannot index the zone");
		goto fail;
	}
	free(b.ents);
	if (skipped)
		*skipped = nskip;
	*out = z;
	return CM_OK;
fail:
	dn_zone_destroy(z);
	free(b.ents);
	cm_buf_close(&b.bytes);
	return rc;
}

void dn_zone_destroy(dn_zone *z)
{
	if (!z)
		return;
	free(z->nodes);
	free(z->slots);
	free(z->rrs);
	free(z->bytes);
	free(z->pre);
	free(z->pre_bytes);
	free(z);
}

size_t dn_zone_names(const dn_zone *z)
{
	return z->nnodes;
}
size_t dn_zone_records(const dn_zone *z)
{
	return z->nrrs;
}
