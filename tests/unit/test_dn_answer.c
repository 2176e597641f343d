/* test_dn_answer.c -- dnsd/dn_zone.c + dn_answer.c: every row of the Kubernetes DNS schema 1.1.0 answered
 * from a snapshot built from a small model, plus NXDOMAIN vs NODATA, SOA in negative answers, case,
 * REFUSED, NOTIMP, FORMERR, EDNS sizes and truncation; and that every precomputed answer is byte for byte
 * what encoding the query gives (dn_int.h: the test turns a node's precomputed answers off and back on).
 *
 * Answers are decoded by a small reader here (sections, flags, TTLs, rdata as text) and compared with
 * what the schema says.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "dn_int.h"

/* ---- the model --------------------------------------------------------------------------------------- */

static const char *const web_ips[] = {"10.96.0.20", "fd00::20"};
static const dn_port web_ports[] = {{"http", "TCP", 80}, {"", "TCP", 81}, {"dns", "UDP", 53}};
static const dn_port db_ports[] = {{"pg", "TCP", 5432}};
static const dn_endpoint db_eps[] = {{"10.244.1.5", "db-0", 1}, {"10.244.1.6", NULL, 1}, {"10.244.1.7", "db-2", 0}};
static const dn_endpoint idle_eps[] = {{"10.244.2.1", NULL, 0}};
static const dn_endpoint mixed_eps[] = {{"bogus", NULL, 1}, {"10.244.3.1", "Bad_Host", 1}};

static dn_zone *build(size_t nbig)
{
	static dn_endpoint big[200];
	static char ips[200][32];
	for (size_t i = 0; i < nbig; i++) {
		snprintf(ips[i], sizeof(ips[i]), "10.244.9.%zu", i + 1);
		big[i] = (dn_endpoint){ips[i], NULL, 1};
	}
	dn_service s[] = {
	    {.name = "web",
	     .ns = "default",
	     .kind = DN_SVC_CLUSTERIP,
	     .cluster_ips = web_ips,
	     .ncluster_ips = 2,
	     .ports = web_ports,
	     .nports = 3},
	    {.name = "db",
	     .ns = "prod",
	     .kind = DN_SVC_HEADLESS,
	     .ports = db_ports,
	     .nports = 1,
	     .endpoints = db_eps,
	     .nendpoints = 3},
	    {.name = "idle", .ns = "prod", .kind = DN_SVC_HEADLESS, .endpoints = idle_eps, .nendpoints = 1},
	    {.name = "ext", .ns = "default", .kind = DN_SVC_EXTERNAL, .external_name = "api.example.com"},
	    {.name = "big",
	     .ns = "prod",
	     .kind = DN_SVC_HEADLESS,
	     .ports = db_ports,
	     .nports = 1,
	     .endpoints = big,
	     .nendpoints = nbig},
	    {.name = "mixed", .ns = "prod", .kind = DN_SVC_HEADLESS, .endpoints = mixed_eps, .nendpoints = 2},
	    {.name = "Bad_Name", .ns = "default", .kind = DN_SVC_CLUSTERIP, .cluster_ips = web_ips, .ncluster_ips = 1},
	};
	dn_zone_config cfg = {.domain = "cluster.local", .ttl = 5, .serial = 42};
	dn_zone *z = NULL;
	size_t skipped = 0;
	cm_err err;
	assert_int_equal(dn_zone_build(&cfg, s, CM_ARRAY_LEN(s), &z, &skipped, &err), CM_OK);
	assert_int_equal(skipped, 1);
	return z;
}

/* ---- queries and a reader for answers ---------------------------------------------------------------- */

static size_t mkquery(uint8_t *p, const char *name, uint16_t type, int edns, uint16_t size)
{
	uint8_t wire[DN_NAME_MAX];
	size_t wl;
	assert_int_equal(dn_name_from_text(name, wire, &wl), CM_OK);
	uint8_t h[12] = {0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns ? 1 : 0};
	memcpy(p, h, 12);
	memcpy(p + 12, wire, wl);
	size_t n = 12 + wl;
	p[n++] = (uint8_t)(type >> 8), p[n++] = (uint8_t)type, p[n++] = 0, p[n++] = 1;
	if (edns) {
		uint8_t opt[] = {0, 0, 41, (uint8_t)(size >> 8), (uint8_t)size, 0, 0, 0, 0, 0, 0};
		memcpy(p + n, opt, sizeof(opt));
		n += sizeof(opt);
	}
	return n;
}

typedef struct rr {
	char owner[300];
	uint16_t type;
	uint32_t ttl;
	char data[300];
} rr;

typedef struct resp {
	uint16_t flags, counts[4];
	int rcode;
	rr rrs[256];
	size_t n;
	size_t len;
	int opt_size;
	int outside; /* dn_answer_info.outside: what a server with an upstream forwards */
} resp;

static void rdata_text(const uint8_t *p, size_t len, size_t off, const rr *r, size_t rdlen, char *out, size_t cap)
{
	uint8_t nm[DN_NAME_MAX];
	size_t o = off, nl;
	char t1[128], t2[128];
	switch (r->type) {
	case DN_T_A:
		inet_ntop(AF_INET, p + off, out, (socklen_t)cap);
		break;
	case DN_T_AAAA:
		inet_ntop(AF_INET6, p + off, out, (socklen_t)cap);
		break;
	case DN_T_PTR:
	case DN_T_CNAME:
		assert_int_equal(dn_name_unpack(p, len, &o, nm, &nl), CM_OK);
		dn_name_to_text(nm, nl, out, cap);
		break;
	case DN_T_SRV:
		o += 6;
		assert_true(p[o] < 0xC0); /* SRV targets are never compressed */
		assert_int_equal(dn_name_unpack(p, len, &o, nm, &nl), CM_OK);
		dn_name_to_text(nm, nl, t1, sizeof(t1));
		snprintf(out, cap, "%u %u %u %.100s", p[off] << 8 | p[off + 1], p[off + 2] << 8 | p[off + 3],
		         p[off + 4] << 8 | p[off + 5], t1);
		break;
	case DN_T_SOA:
		assert_int_equal(dn_name_unpack(p, len, &o, nm, &nl), CM_OK);
		dn_name_to_text(nm, nl, t1, sizeof(t1));
		assert_int_equal(dn_name_unpack(p, len, &o, nm, &nl), CM_OK);
		dn_name_to_text(nm, nl, t2, sizeof(t2));
		snprintf(out, cap, "%.100s %.100s %u", t1, t2,
		         (unsigned)(p[o] << 24 | p[o + 1] << 16 | p[o + 2] << 8 | p[o + 3]));
		break;
	case DN_T_TXT:
		snprintf(out, cap, "%.*s", (int)p[off], (const char *)p + off + 1);
		break;
	default:
		snprintf(out, cap, "%zu bytes", rdlen);
	}
}

static void parse_resp(const uint8_t *p, size_t len, resp *r)
{
	memset(r, 0, sizeof(*r));
	r->len = len;
	assert_true(len >= 12);
	r->flags = (uint16_t)(p[2] << 8 | p[3]);
	r->rcode = p[3] & 15;
	for (int i = 0; i < 4; i++)
		r->counts[i] = (uint16_t)(p[4 + 2 * i] << 8 | p[5 + 2 * i]);
	size_t off = 12, nl;
	uint8_t nm[DN_NAME_MAX];
	for (int i = 0; i < r->counts[0]; i++) {
		assert_int_equal(dn_name_unpack(p, len, &off, nm, &nl), CM_OK);
		off += 4;
	}
	r->opt_size = -1;
	for (int i = 0; i < r->counts[1] + r->counts[2] + r->counts[3]; i++) {
		rr *x = &r->rrs[r->n];
		assert_int_equal(dn_name_unpack(p, len, &off, nm, &nl), CM_OK);
		dn_name_to_text(nm, nl, x->owner, sizeof(x->owner));
		assert_true(off + 10 <= len);
		x->type = (uint16_t)(p[off] << 8 | p[off + 1]);
		x->ttl = (uint32_t)(p[off + 4] << 24 | p[off + 5] << 16 | p[off + 6] << 8 | p[off + 7]);
		size_t rdlen = (size_t)(p[off + 8] << 8 | p[off + 9]);
		off += 10;
		assert_true(off + rdlen <= len);
		if (x->type == DN_T_OPT) {
			r->opt_size = p[off - 8] << 8 | p[off - 7];
		} else {
			rdata_text(p, len, off, x, rdlen, x->data, sizeof(x->data));
			r->n++;
		}
		off += rdlen;
	}
	assert_int_equal(off, len);
}

static void ask(const dn_zone *z, const char *name, uint16_t type, resp *r)
{
	uint8_t q[512], a[65536];
	size_t ql = mkquery(q, name, type, 1, 1232);
	dn_answer_info ai;
	size_t n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	assert_true(n > 0);
	assert_true(n <= 1232);
	assert_int_equal(a[0], 0xAB);
	parse_resp(a, n, r);
	assert_int_equal(r->opt_size, 1232);
	assert_int_equal(ai.rcode, r->rcode);
	r->outside = ai.outside;
}

static int has(const resp *r, const char *owner, uint16_t type, const char *data)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->rrs[i].owner, owner) && r->rrs[i].type == type &&
		    (!data || !strcmp(r->rrs[i].data, data)))
			return 1;
	return 0;
}

#define AA 0x0400

/* ---- the schema --------------------------------------------------------------------------------------- */

static void test_clusterip(void **state)
{
	(void)state;
	dn_zone *z = build(0);
	resp r;
	ask(z, "web.default.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.rcode, DN_RC_NOERROR);
	assert_true(r.flags & AA);
	assert_int_equal(r.counts[1], 1);
	assert_true(has(&r, "web.default.svc.cluster.local.", DN_T_A, "10.96.0.20"));
	assert_int_equal(r.rrs[0].ttl, 5);
	ask(z, "web.default.svc.cluster.local", DN_T_AAAA, &r);
	assert_true(has(&r, "web.default.svc.cluster.local.", DN_T_AAAA, "fd00::20"));
	/* SRV per named port, glue A and AAAA of the target once */
	ask(z, "_http._tcp.web.default.svc.cluster.local", DN_T_SRV, &r);
	assert_int_equal(r.counts[1], 1);
	assert_true(
	    has(&r, "_http._tcp.web.default.svc.cluster.local.", DN_T_SRV, "0 100 80 web.default.svc.cluster.local."));
	assert_int_equal(r.counts[3], 2 + 1);
	assert_true(has(&r, "web.default.svc.cluster.local.", DN_T_A, "10.96.0.20"));
	ask(z, "_dns._udp.web.default.svc.cluster.local", DN_T_SRV, &r);
	assert_true(
	    has(&r, "_dns._udp.web.default.svc.cluster.local.", DN_T_SRV, "0 100 53 web.default.svc.cluster.local."));
	/* PTR for both families */
	ask(z, "20.0.96.10.in-addr.arpa", DN_T_PTR, &r);
	assert_true(r.flags & AA);
	assert_true(has(&r, "20.0.96.10.in-addr.arpa.", DN_T_PTR, "web.default.svc.cluster.local."));
	ask(z, "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", DN_T_PTR, &r);
	assert_true(has(&r, "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", DN_T_PTR,
	                "web.default.svc.cluster.local."));
	dn_zone_destroy(z);
}

static void test_headless(void **state)
{
	(void)state;
	dn_zone *z = build(0);
	resp r;
	ask(z, "db.prod.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.counts[1], 2); /* ready endpoints only */
	assert_true(has(&r, "db.prod.svc.cluster.local.", DN_T_A, "10.244.1.5"));
	assert_true(has(&r, "db.prod.svc.cluster.local.", DN_T_A, "10.244.1.6"));
	ask(z, "db-0.db.prod.svc.cluster.local", DN_T_A, &r);
	assert_true(has(&r, "db-0.db.prod.svc.cluster.local.", DN_T_A, "10.244.1.5"));
	ask(z, "10-244-1-6.db.prod.svc.cluster.local", DN_T_A, &r); /* no hostname: the dashed IP */
	assert_true(has(&r, "10-244-1-6.db.prod.svc.cluster.local.", DN_T_A, "10.244.1.6"));
	ask(z, "db-2.db.prod.svc.cluster.local", DN_T_A, &r); /* not ready */
	assert_int_equal(r.rcode, DN_RC_NXDOMAIN);
	ask(z, "_pg._tcp.db.prod.svc.cluster.local", DN_T_SRV, &r);
	assert_int_equal(r.counts[1], 2);
	assert_true(
	    has(&r, "_pg._tcp.db.prod.svc.cluster.local.", DN_T_SRV, "0 50 5432 db-0.db.prod.svc.cluster.local."));
	assert_true(has(&r, "db-0.db.prod.svc.cluster.local.", DN_T_A, "10.244.1.5")); /* glue */
	assert_int_equal(r.counts[3], 2 + 1);
	ask(z, "5.1.244.10.in-addr.arpa", DN_T_PTR, &r);
	assert_true(has(&r, "5.1.244.10.in-addr.arpa.", DN_T_PTR, "db-0.db.prod.svc.cluster.local."));
	/* a bad address leaves out the endpoint, a bad hostname falls back to the dashed IP */
	ask(z, "mixed.prod.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.counts[1], 1);
	ask(z, "10-244-3-1.mixed.prod.svc.cluster.local", DN_T_A, &r);
	assert_true(has(&r, "10-244-3-1.mixed.prod.svc.cluster.local.", DN_T_A, "10.244.3.1"));
	/* no ready endpoint: the name does not exist */
	ask(z, "idle.prod.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.rcode, DN_RC_NXDOMAIN);
	dn_zone_destroy(z);
}

static void test_cname_txt_negative(void **state)
{
	(void)state;
	dn_zone *z = build(0);
	resp r;
	ask(z, "ext.default.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.rcode, DN_RC_NOERROR);
	assert_true(has(&r, "ext.default.svc.cluster.local.", DN_T_CNAME, "api.example.com."));
	assert_int_equal(r.counts[1], 1);
	ask(z, "dns-version.cluster.local", DN_T_TXT, &r);
	assert_true(has(&r, "dns-version.cluster.local.", DN_T_TXT, "1.1.0"));
	/* NXDOMAIN: SOA in authority, TTL, AA */
	ask(z, "nope.default.svc.cluster.local", DN_T_A, &r);
	assert_int_equal(r.rcode, DN_RC_NXDOMAIN);
	assert_true(r.flags & AA);
	assert_int_equal(r.counts[1], 0);
	assert_int_equal(r.counts[2], 1);
	assert_true(has(&r, "cluster.local.", DN_T_SOA, "ns.dns.cluster.local. hostmaster.cluster.local. 42"));
	assert_int_equal(r.rrs[0].ttl, 5);
	/* NODATA: the name exists, not the type; empty non-terminals exist (RFC 8020) */
	const char *nodata[][2] = {{"web.default.svc.cluster.local", "TXT"},
	                           {"default.svc.cluster.local", "A"},
	                           {"svc.cluster.local", "A"},
	                           {"_tcp.web.default.svc.cluster.local", "SRV"},
	                           {"cluster.local", "A"},
	                           {"in-addr.arpa", "A"}};
	for (size_t i = 0; i < CM_ARRAY_LEN(nodata); i++) {
		ask(z, nodata[i][0],
		    !strcmp(nodata[i][1], "TXT")   ? DN_T_TXT
		    : !strcmp(nodata[i][1], "SRV") ? DN_T_SRV
		                                   : DN_T_A,
		    &r);
		assert_int_equal(r.rcode, DN_RC_NOERROR);
		assert_int_equal(r.counts[1], 0);
		assert_int_equal(r.counts[2], 1);
		assert_int_equal(r.rrs[0].type, DN_T_SOA);
	}
	ask(z, "1.2.3.4.in-addr.arpa", DN_T_PTR, &r);
	assert_int_equal(r.rcode, DN_RC_NXDOMAIN);
	assert_true(has(&r, "in-addr.arpa.", DN_T_SOA, NULL));
	assert_true(r.outside); /* not ours: forwarded when there is an upstream */
	ask(z, "other.svc.cluster.local", DN_T_A, &r); /* a namespace without services */
	assert_int_equal(r.rcode, DN_RC_NXDOMAIN);
	assert_false(r.outside);
	ask(z, "96.10.in-addr.arpa", DN_T_PTR, &r); /* an empty non-terminal of ours: NODATA, kept */
	assert_int_equal(r.rcode, DN_RC_NOERROR);
	assert_false(r.outside);
	dn_zone_destroy(z);
}

static void test_case_refused_errors(void **state)
{
	(void)state;
	dn_zone *z = build(0);
	resp r;
	ask(z, "WEB.Default.SVC.cluster.LOCAL", DN_T_A, &r);
	assert_true(has(&r, "WEB.Default.SVC.cluster.LOCAL.", DN_T_A, "10.96.0.20")); /* the query's case */
	ask(z, "NOPE.svc.Cluster.Local", DN_T_A, &r);
	assert_true(has(&r, "Cluster.Local.", DN_T_SOA, NULL));
	ask(z, "www.example.com", DN_T_A, &r);
	assert_int_equal(r.rcode, DN_RC_REFUSED);
	assert_false(r.flags & AA);
	assert_true(r.outside);
	ask(z, "xcluster.local", DN_T_A, &r); /* a suffix that is not a label boundary */
	assert_int_equal(r.rcode, DN_RC_REFUSED);
	ask(z, "cluster.local", DN_T_AXFR, &r);
	assert_int_equal(r.rcode, DN_RC_NOTIMP);
	ask(z, "cluster.local", DN_T_OPT, &r);
	assert_int_equal(r.rcode, DN_RC_FORMERR);
	/* CH class */
	uint8_t q[512], a[4096];
	size_t ql = mkquery(q, "version.bind", DN_T_TXT, 0, 0);
	q[ql - 1] = 3;
	dn_answer_info ai;
	size_t n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_int_equal(r.rcode, DN_RC_REFUSED);
	/* no snapshot yet */
	ql = mkquery(q, "web.default.svc.cluster.local", DN_T_A, 0, 0);
	n = dn_answer(NULL, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_int_equal(r.rcode, DN_RC_SERVFAIL);
	/* a bad packet is FORMERR with the same ID; a response is dropped */
	q[5] = 2;
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_int_equal(r.rcode, DN_RC_FORMERR);
	assert_int_equal(a[1], 0xCD);
	q[2] |= 0x80;
	assert_int_equal(dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai), 0);
	dn_zone_destroy(z);
}

static void test_sizes_and_truncation(void **state)
{
	(void)state;
	dn_zone *z = build(120);
	uint8_t q[512], a[65536];
	dn_answer_info ai;
	resp r;
	/* 120 A records = 12 + 32 + 120 * 16 bytes: over 512 and 1232, fits TCP */
	size_t ql = mkquery(q, "big.prod.svc.cluster.local", DN_T_A, 0, 0);
	size_t n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_true(r.flags & 0x0200);
	assert_true(ai.truncated);
	assert_int_equal(r.counts[1], 0);
	assert_true(n <= 512);
	ql = mkquery(q, "big.prod.svc.cluster.local", DN_T_A, 1, 4096);
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_true(r.flags & 0x0200); /* capped at 1232 by the server */
	n = dn_answer(z, q, ql, a, sizeof(a), 4096, 0, &ai);
	parse_resp(a, n, &r);
	assert_false(r.flags & 0x0200); /* a server allowing 4096 honours the client's 4096 */
	assert_int_equal(r.counts[1], 120);
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 1, &ai);
	parse_resp(a, n, &r);
	assert_false(r.flags & 0x0200);
	assert_int_equal(r.counts[1], 120);
	/* 17 records fit 1232 with EDNS but not 512 without */
	dn_zone_destroy(z);
	z = build(17);
	ql = mkquery(q, "big.prod.svc.cluster.local", DN_T_A, 1, 1232);
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_false(r.flags & 0x0200);
	assert_int_equal(r.counts[1], 17);
	/* SRV with glue that does not all fit: answer complete, glue partial, no TC */
	ql = mkquery(q, "_pg._tcp.big.prod.svc.cluster.local", DN_T_SRV, 1, 1232);
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 0, &ai);
	parse_resp(a, n, &r);
	assert_false(r.flags & 0x0200);
	assert_int_equal(r.counts[1], 17);
	assert_true(r.counts[3] > 1 && r.counts[3] < 18);
	assert_true(n <= 1232);
	dn_zone_destroy(z);
}

/* Every precomputed answer, asked in mixed case with EDNS 1232 and 512, without EDNS and over TCP, is
 * the same bytes as the encoded answer (the node's precomputed answers switched off). */
static void test_precomputed_identical(void **state)
{
	(void)state;
	dn_zone *z = build(40);
	size_t used = 0;
	assert_true(z->npre > 20);
	for (size_t i = 0; i < z->nnodes; i++) {
		dn__node *n = &z->nodes[i];
		for (uint32_t k = 0; k < n->pre_count; k++) {
			char name[300];
			dn_name_to_text(z->bytes + n->name, n->name_len, name, sizeof(name));
			for (size_t j = 0; name[j]; j += 2)
				if (name[j] >= 'a' && name[j] <= 'z')
					name[j] = (char)(name[j] - 32);
			const int variants[][3] = {{1, 1232, 0}, {1, 512, 0}, {0, 0, 0}, {0, 0, 1}};
			for (size_t v = 0; v < 4; v++) {
				uint8_t q[512], a1[4096], a2[4096];
				size_t ql = mkquery(q, name, z->pre[n->pre_first + k].type, variants[v][0], (uint16_t)variants[v][1]);
				dn_answer_info ai;
				size_t l1 = dn_answer(z, q, ql, a1, sizeof(a1), 0, variants[v][2], &ai);
				uint32_t keep = n->pre_count;
				n->pre_count = 0;
				size_t l2 = dn_answer(z, q, ql, a2, sizeof(a2), 0, variants[v][2], &ai);
				n->pre_count = keep;
				assert_true(l1 > 12);
				assert_int_equal(l1, l2);
				assert_memory_equal(a1, a2, l1);
				used++;
			}
		}
	}
	assert_int_equal(used, 4 * z->npre);
	dn_zone_destroy(z);
}

/* dn__truncate (RRL slip, forwarded answers over the client's size) keeps the question and the OPT record. */
static void test_truncate_keeps_opt(void **state)
{
	(void)state;
	dn_zone *z = build(120);
	uint8_t q[512], a[65536];
	dn_answer_info ai;
	resp r;
	size_t ql = mkquery(q, "big.prod.svc.cluster.local", DN_T_A, 1, 1232);
	size_t n = dn_answer(z, q, ql, a, sizeof(a), 0, 1, &ai); /* TCP: all 120 records and the OPT */
	parse_resp(a, n, &r);
	assert_int_equal(r.counts[1], 120);
	assert_int_equal(r.opt_size, 1232);
	assert_int_equal(dn__truncate(a, 20), 0); /* the question runs past the end */
	size_t t = dn__truncate(a, n);
	assert_int_equal(t, ql); /* a query with EDNS is header, question and an 11-byte OPT, as this answer now */
	parse_resp(a, t, &r);
	assert_true(r.flags & 0x0200);
	assert_int_equal(r.counts[0], 1);
	assert_int_equal(r.counts[1] + r.counts[2], 0);
	assert_int_equal(r.counts[3], 1);
	assert_int_equal(r.opt_size, 1232);
	/* without EDNS: header and question only; cut short inside the records: the same */
	ql = mkquery(q, "big.prod.svc.cluster.local", DN_T_A, 0, 0);
	n = dn_answer(z, q, ql, a, sizeof(a), 0, 1, &ai);
	assert_int_equal(dn__truncate(a, n - 7), ql);
	parse_resp(a, ql, &r);
	assert_true(r.flags & 0x0200);
	assert_int_equal(r.counts[3], 0);
	assert_int_equal(r.opt_size, -1);
	dn_zone_destroy(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clusterip),
	    cmocka_unit_test(test_headless),
	    cmocka_unit_test(test_cname_txt_negative),
	    cmocka_unit_test(test_case_refused_errors),
	    cmocka_unit_test(test_sizes_and_truncation),
	    cmocka_unit_test(test_truncate_keeps_opt),
	    cmocka_unit_test(test_precomputed_identical),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
