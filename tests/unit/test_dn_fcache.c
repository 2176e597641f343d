/* test_dn_fcache.c -- dnsd/dn_fcache.c: which upstream answers are kept and for how long (positive by the
 * smallest TTL, negative by the SOA per RFC 2308, the caps), the answer a hit gives (client's ID and
 * case, TTLs aged, the OPT untouched), the key's flags, the two-way replacement, and answers that are
 * not kept (SERVFAIL, TC, no SOA, another question, bad records, too large). Messages are built by hand.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "dn_int.h"

#define S 1000000000LL

/* query: ID 0x1111, RD, one question WwW.Example.ORG A IN (name at 12, 17 bytes) */
static const uint8_t Q[] = {0x11, 0x11, 1,   0,   0,   1,   0,   0, 0,   0,   0,   0, 3, 'W', 'w', 'W', 7,
                            'E',  'x',  'a', 'm', 'p', 'L', 'e', 3, 'O', 'R', 'G', 0, 0, 1,   0,   1};
#define QN 17

static const uint8_t REC_A[] = {0xC0, 12, 0, 1, 0, 1, 0, 0, 0x01, 0x2C, 0, 4, 192, 0, 2, 1};         /* TTL 300 */
static const uint8_t REC_NS[] = {0xC0, 16, 0, 2, 0, 1, 0, 0, 0, 100, 0, 2, 0xC0, 16};                /* TTL 100 */
static const uint8_t REC_SOA[] = {0xC0, 16, 0, 6, 0, 1, 0, 0, 0x03, 0x84, 0, 24, 0xC0, 16, 0xC0, 16, /* TTL 900 */
                                  0,    0,  0, 1, 0, 0, 0, 0, 0,    0,    0, 0,  0,    0,  0,    0,
                                  0,    0,  0, 60};                        /* MINIMUM 60 */
static const uint8_t REC_OPT[] = {0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0}; /* DO; its "TTL" is flags */

/* An answer to Q from upstream: ID 0xABCD, the question lowercase, rcode, then the records in order. */
static size_t answer(uint8_t *m, int rcode, int an, int ns, int ar, const uint8_t *const *recs, const size_t *lens)
{
	memcpy(m, Q, sizeof(Q));
	m[0] = 0xAB, m[1] = 0xCD, m[2] = 0x81, m[3] = (uint8_t)(0x80 | rcode);
	m[7] = (uint8_t)an, m[9] = (uint8_t)ns, m[11] = (uint8_t)ar;
	for (size_t i = 12; i < 12 + QN; i++)
		m[i] = m[i] >= 'A' && m[i] <= 'Z' ? (uint8_t)(m[i] + 32) : m[i];
	size_t n = sizeof(Q);
	for (int i = 0; i < an + ns + ar; i++) {
		memcpy(m + n, recs[i], lens[i]);
		n += lens[i];
	}
	return n;
}

static uint32_t ttl_at(const uint8_t *m, size_t off)
{
	return (uint32_t)m[off + 6] << 24 | (uint32_t)m[off + 7] << 16 | (uint32_t)m[off + 8] << 8 | m[off + 9];
}

static void test_positive(void **state)
{
	(void)state;
	dn__fcache *c = dn__fcache_new(16);
	uint8_t a[512], out[512];
	const uint8_t *recs[] = {REC_A, REC_NS, REC_OPT};
	size_t lens[] = {sizeof(REC_A), sizeof(REC_NS), sizeof(REC_OPT)};
	size_t n = answer(a, 0, 1, 1, 1, recs, lens);
	dn__fcache_put(c, Q, QN, DN__FC_RD | DN__FC_EDNS | DN__FC_DO, a, n, 10 * S);
	assert_int_equal(dn__fcache_len(c), 1);
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_RD | DN__FC_EDNS, out, sizeof(out), 10 * S), 0); /* no DO */
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_EDNS | DN__FC_DO, out, sizeof(out), 10 * S), 0); /* no RD */
	uint8_t fl = DN__FC_RD | DN__FC_EDNS | DN__FC_DO;
	assert_int_equal(dn__fcache_get(c, Q, QN, fl, out, sizeof(out), 52 * S + S / 2), n); /* 42.5 s later */
	assert_memory_equal(out, Q, 2);                                                      /* the client's ID */
	assert_memory_equal(out + 12, Q + 12, QN);                                           /* its case */
	assert_memory_equal(out + 2, a + 2, 10); /* flags and counts as the upstream's */
	size_t off_a = sizeof(Q), off_ns = off_a + sizeof(REC_A), off_opt = off_ns + sizeof(REC_NS);
	assert_int_equal(ttl_at(out, off_a), 300 - 42);
	assert_int_equal(ttl_at(out, off_ns), 100 - 42);
	assert_memory_equal(out + off_opt, REC_OPT, sizeof(REC_OPT));                /* the OPT is not aged */
	assert_int_equal(dn__fcache_get(c, Q, QN, fl, out, sizeof(out), 10 * S), n); /* the entry is unchanged */
	assert_int_equal(ttl_at(out, off_a), 300);
	assert_int_equal(dn__fcache_get(c, Q, QN, fl, out, 20, 10 * S), 0);           /* does not fit */
	assert_int_equal(dn__fcache_get(c, Q, QN, fl, out, sizeof(out), 110 * S), 0); /* the NS's 100 s are over */
	assert_int_equal(dn__fcache_len(c), 0);
	dn__fcache_free(c);
}

static void test_negative_and_caps(void **state)
{
	(void)state;
	dn__fcache *c = dn__fcache_new(16);
	uint8_t a[512], out[512];
	const uint8_t *soa[] = {REC_SOA}, *ns[] = {REC_NS};
	size_t soa_len[] = {sizeof(REC_SOA)}, ns_len[] = {sizeof(REC_NS)};
	size_t n = answer(a, DN_RC_NXDOMAIN, 0, 1, 0, soa, soa_len); /* SOA TTL 900, MINIMUM 60: 60 s */
	dn__fcache_put(c, Q, QN, DN__FC_RD, a, n, 0);
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_RD, out, sizeof(out), 59 * S), n);
	assert_int_equal(out[3] & 15, DN_RC_NXDOMAIN);
	assert_int_equal(ttl_at(out, sizeof(Q)), 60 - 59); /* the SOA's TTL is the time left to keep the denial */
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_RD, out, sizeof(out), 60 * S), 0);

	uint8_t cname[] = {0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 5, 0, 2, 0xC0, 16}; /* TTL 5, to example.org */
	const uint8_t *chain[] = {cname, REC_SOA};
	size_t chain_len[] = {sizeof(cname), sizeof(REC_SOA)};
	n = answer(a, DN_RC_NXDOMAIN, 1, 1, 0, chain, chain_len); /* a CNAME, then the denial of its target */
	dn__fcache_put(c, Q, QN, DN__FC_RD, a, n, 0);
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_RD, out, sizeof(out), 4 * S), n);
	assert_int_equal(ttl_at(out, sizeof(Q)), 1);                 /* the CNAME: 5 - 4 */
	assert_int_equal(ttl_at(out, sizeof(Q) + sizeof(cname)), 1); /* the SOA: kept 5 s, not 60 */
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_RD, out, sizeof(out), 5 * S), 0);

	n = answer(a, DN_RC_NOERROR, 0, 1, 0, soa, soa_len); /* NODATA with an SOA: kept */
	dn__fcache_put(c, Q, QN, DN__FC_RD, a, n, 0);
	assert_int_equal(dn__fcache_len(c), 1);
	n = answer(a, DN_RC_NOERROR, 0, 1, 0, ns, ns_len); /* NODATA without an SOA: not kept */
	dn__fcache_put(c, Q, QN, DN__FC_CD, a, n, 0);
	assert_int_equal(dn__fcache_get(c, Q, QN, DN__FC_CD, out, sizeof(out), 0), 0);

	uint8_t day[sizeof(REC_A)]; /* TTL 86400: kept for the 3600 s cap */
	memcpy(day, REC_A, sizeof(day));
	day[6] = 0, day[7] = 1, day[8] = 0x51, day[9] = 0x80;
	const uint8_t *pos[] = {day};
	size_t pos_len[] = {sizeof(day)};
	n = answer(a, 0, 1, 0, 0, pos, pos_len);
	dn__fcache_put(c, Q, QN, 0, a, n, 0);
	assert_int_equal(dn__fcache_get(c, Q, QN, 0, out, sizeof(out), 3599 * S), n);
	assert_int_equal(ttl_at(out, sizeof(Q)), 86400 - 3599);
	assert_int_equal(dn__fcache_get(c, Q, QN, 0, out, sizeof(out), 3600 * S), 0);
	dn__fcache_free(c);
}

static void test_not_kept(void **state)
{
	(void)state;
	dn__fcache *c = dn__fcache_new(16);
	uint8_t a[2048], b[2048];
	const uint8_t *recs[] = {REC_A};
	size_t lens[] = {sizeof(REC_A)};
	size_t n = answer(a, 0, 1, 0, 0, recs, lens);
	memcpy(b, a, n);
	b[3] = (uint8_t)(b[3] & 0xF0) | DN_RC_SERVFAIL;
	dn__fcache_put(c, Q, QN, 0, b, n, 0);
	memcpy(b, a, n);
	b[2] |= 0x02; /* TC */
	dn__fcache_put(c, Q, QN, 0, b, n, 0);
	memcpy(b, a, n);
	b[14] = 'v'; /* another question name */
	dn__fcache_put(c, Q, QN, 0, b, n, 0);
	memcpy(b, a, n);
	b[n - 5] = 9; /* rdlength past the end */
	dn__fcache_put(c, Q, QN, 0, b, n, 0);
	dn__fcache_put(c, Q, QN, 0, a, n - 1, 0); /* cut short */
	memcpy(b, a, n);
	b[sizeof(Q) + 6] = 0x80; /* TTL over 2^31: zero (RFC 2181) */
	dn__fcache_put(c, Q, QN, 0, b, n, 0);
	memcpy(b, a, n); /* one byte over the size kept */
	memset(b + n, 0, DN__FCACHE_MAX + 1 - n);
	dn__fcache_put(c, Q, QN, 0, b, DN__FCACHE_MAX + 1, 0);
	assert_int_equal(dn__fcache_len(c), 0);
	dn__fcache_put(c, Q, QN, 0, a, n, 0);
	assert_int_equal(dn__fcache_len(c), 1);
	dn__fcache_free(c);
}

static void test_replacement(void **state)
{
	(void)state;
	dn__fcache *c = dn__fcache_new(3); /* one set of two ways: never more entries than asked for */
	uint8_t a[512], out[512];
	uint8_t rec[sizeof(REC_A)];
	const uint8_t *recs[] = {rec};
	size_t lens[] = {sizeof(rec)};
	memcpy(rec, REC_A, sizeof(rec));
	for (int f = 0; f < 3; f++) { /* flags 0, 1, 2 are three keys; TTLs 300, 100, 200 */
		rec[9] = (uint8_t)(f == 0 ? 44 : f == 1 ? 100 : 200), rec[8] = f == 0 ? 1 : 0;
		size_t n = answer(a, 0, 1, 0, 0, recs, lens);
		dn__fcache_put(c, Q, QN, (uint8_t)f, a, n, 0);
	}
	assert_int_equal(dn__fcache_len(c), 2);
	assert_true(dn__fcache_get(c, Q, QN, 0, out, sizeof(out), S) > 0);
	assert_int_equal(dn__fcache_get(c, Q, QN, 1, out, sizeof(out), S), 0); /* expired first: replaced */
	assert_true(dn__fcache_get(c, Q, QN, 2, out, sizeof(out), S) > 0);
	dn__fcache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_positive),
	    cmocka_unit_test(test_negative_and_caps),
	    cmocka_unit_test(test_not_kept),
	    cmocka_unit_test(test_replacement),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
