/* test_dn_wire.c -- dnsd/dn_wire.c: name decompression (loops, bounds, label types), query parsing
 * (counts, OPT, opcodes, trailing bytes) and the encoder's name compression.
 *
 * Packets are built by hand, byte by byte from RFC 1035 and RFC 6891, so the test does not use the code
 * under test to make its inputs.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "dn.h"

/* header + question "www.Example.com. A IN" */
static const uint8_t q_www[] = {0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0, 0,   0,   0,   0, 3, 'w', 'w', 'w', 7,
                                'E',  'x',  'a',  'm',  'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1,   0,   1};

static void test_parse_plain_query(void **state)
{
	(void)state;
	dn_query q;
	assert_int_equal(dn_parse_query(q_www, sizeof(q_www), &q), DN_RC_NOERROR);
	assert_int_equal(q.id, 0x1234);
	assert_int_equal(q.qtype, DN_T_A);
	assert_int_equal(q.qclass, DN_C_IN);
	assert_int_equal(q.qname_len, 17);
	assert_memory_equal(q.qname, q_www + 12, 17);
	assert_false(q.has_edns);
	assert_int_equal(q.question_end, sizeof(q_www));
}

static size_t with_opt(uint8_t *p, uint16_t size, uint8_t version, uint8_t doflag)
{
	memcpy(p, q_www, sizeof(q_www));
	p[11] = 1; /* ARCOUNT */
	uint8_t opt[] = {0, 0, 41, (uint8_t)(size >> 8), (uint8_t)size, 0, version, doflag, 0, 0, 0};
	memcpy(p + sizeof(q_www), opt, sizeof(opt));
	return sizeof(q_www) + sizeof(opt);
}

static void test_parse_edns(void **state)
{
	(void)state;
	uint8_t p[128];
	dn_query q;
	size_t n = with_opt(p, 4096, 0, 0x80);
	assert_int_equal(dn_parse_query(p, n, &q), DN_RC_NOERROR);
	assert_true(q.has_edns);
	assert_int_equal(q.edns_size, 4096);
	assert_true(q.edns_do);
	n = with_opt(p, 100, 0, 0);
	assert_int_equal(dn_parse_query(p, n, &q), DN_RC_NOERROR);
	assert_int_equal(q.edns_size, 512); /* below 512 reads as 512 */
	n = with_opt(p, 1232, 1, 0);
	assert_int_equal(dn_parse_query(p, n, &q), DN_RC_BADVERS);
	/* two OPTs */
	n = with_opt(p, 1232, 0, 0);
	memcpy(p + n, p + sizeof(q_www), 11);
	p[11] = 2;
	assert_int_equal(dn_parse_query(p, n + 11, &q), DN_RC_FORMERR);
	/* OPT in the answer section */
	n = with_opt(p, 1232, 0, 0);
	p[7] = 1, p[11] = 0;
	assert_int_equal(dn_parse_query(p, n, &q), DN_RC_FORMERR);
	/* OPT with a non-root owner */
	uint8_t r[128];
	memcpy(r, q_www, sizeof(q_www));
	r[11] = 1;
	uint8_t opt[] = {1, 'x', 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0};
	memcpy(r + sizeof(q_www), opt, sizeof(opt));
	assert_int_equal(dn_parse_query(r, sizeof(q_www) + sizeof(opt), &q), DN_RC_FORMERR);
}

static void test_parse_rejections(void **state)
{
	(void)state;
	uint8_t p[128];
	dn_query q;
	assert_true(dn_parse_query(q_www, 11, &q) < 0); /* shorter than a header: dropped */
	memcpy(p, q_www, sizeof(q_www));
	p[2] |= 0x80; /* a response */
	assert_true(dn_parse_query(p, sizeof(q_www), &q) < 0);
	memcpy(p, q_www, sizeof(q_www));
	p[2] = 0x10; /* opcode 2 (STATUS) */
	assert_int_equal(dn_parse_query(p, sizeof(q_www), &q), DN_RC_NOTIMP);
	memcpy(p, q_www, sizeof(q_www));
	p[5] = 2; /* two questions */
	assert_int_equal(dn_parse_query(p, sizeof(q_www), &q), DN_RC_FORMERR);
	p[5] = 0;
	assert_int_equal(dn_parse_query(p, sizeof(q_www), &q), DN_RC_FORMERR);
	memcpy(p, q_www, sizeof(q_www));
	p[7] = 1; /* an answer that is not there */
	assert_int_equal(dn_parse_query(p, sizeof(q_www), &q), DN_RC_FORMERR);
	memcpy(p, q_www, sizeof(q_www));
	p[sizeof(q_www)] = 0; /* trailing byte */
	assert_int_equal(dn_parse_query(p, sizeof(q_www) + 1, &q), DN_RC_FORMERR);
	assert_int_equal(dn_parse_query(q_www, sizeof(q_www) - 1, &q), DN_RC_FORMERR); /* truncated question */
	assert_int_equal(q.id, 0x1234);
	/* a record whose RDLENGTH runs past the end */
	memcpy(p, q_www, sizeof(q_www));
	p[9] = 1;
	uint8_t rr[] = {0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3};
	memcpy(p + sizeof(q_www), rr, sizeof(rr));
	assert_int_equal(dn_parse_query(p, sizeof(q_www) + sizeof(rr), &q), DN_RC_FORMERR);
	p[sizeof(q_www) + 11] = 3;
	assert_int_equal(dn_parse_query(p, sizeof(q_www) + sizeof(rr), &q), DN_RC_NOERROR);
}

static void test_name_unpack_loops_and_bounds(void **state)
{
	(void)state;
	uint8_t out[DN_NAME_MAX];
	size_t off, len;
	/* a pointer to itself */
	uint8_t self[] = {0, 0, 0xC0, 2};
	off = 2;
	assert_int_equal(dn_name_unpack(self, sizeof(self), &off, out, &len), CM_EPROTO);
	/* a forward pointer */
	uint8_t fwd[] = {0xC0, 2, 1, 'a', 0};
	off = 0;
	assert_int_equal(dn_name_unpack(fwd, sizeof(fwd), &off, out, &len), CM_EPROTO);
	/* two names pointing at each other: the second is forward from the first */
	uint8_t loop[] = {1, 'a', 0xC0, 4, 1, 'b', 0xC0, 0};
	off = 4;
	assert_int_equal(dn_name_unpack(loop, sizeof(loop), &off, out, &len), CM_EPROTO);
	/* a good backward pointer */
	uint8_t good[] = {1, 'a', 0, 1, 'b', 0xC0, 0};
	off = 3;
	assert_int_equal(dn_name_unpack(good, sizeof(good), &off, out, &len), CM_OK);
	assert_int_equal(off, 7);
	assert_int_equal(len, 5);
	assert_memory_equal(out, "\001b\001a", 5);
	/* reserved label types, a 64-byte label, a name over 255 bytes, a label past the end */
	uint8_t ext[] = {0x41, 'a', 0};
	off = 0;
	assert_int_equal(dn_name_unpack(ext, sizeof(ext), &off, out, &len), CM_EPROTO);
	uint8_t big[300];
	memset(big, 'x', sizeof(big));
	big[0] = 64, big[65] = 0;
	off = 0;
	assert_int_equal(dn_name_unpack(big, 66, &off, out, &len), CM_EPROTO);
	for (int i = 0; i < 5; i++)
		big[i * 60] = 59;
	big[299] = 0;
	off = 0;
	assert_int_equal(dn_name_unpack(big, sizeof(big), &off, out, &len), CM_EPROTO);
	uint8_t cut[] = {5, 'a', 'b'};
	off = 0;
	assert_int_equal(dn_name_unpack(cut, sizeof(cut), &off, out, &len), CM_EPROTO);
	/* many chained backward pointers still terminate and are bounded */
	uint8_t chain[2 + 2 * 100];
	chain[0] = 1, chain[1] = 'z';
	for (int i = 0; i < 100; i++)
		chain[2 + 2 * i] = 0xC0, chain[3 + 2 * i] = (uint8_t)(i ? 2 * i : 0);
	chain[1] = 'z';
	off = 2 + 2 * 99;
	assert_int_equal(dn_name_unpack(chain, sizeof(chain), &off, out, &len), CM_EPROTO);
}

static void test_encoder_compression(void **state)
{
	(void)state;
	uint8_t buf[512], a[DN_NAME_MAX], b[DN_NAME_MAX], out[DN_NAME_MAX];
	size_t al, bl, ol, off;
	dn_enc e;
	dn_enc_init(&e, buf, sizeof(buf), sizeof(buf));
	e.len = 12;
	assert_int_equal(dn_name_from_text("Web.Default.svc.cluster.local", a, &al), CM_OK);
	assert_int_equal(dn_name_from_text("_http._tcp.web.default.SVC.cluster.local.", b, &bl), CM_OK);
	assert_int_equal(dn_enc_name(&e, a, al, 1), CM_OK);
	assert_int_equal(e.len, 12 + al);
	size_t before = e.len;
	assert_int_equal(dn_enc_name(&e, b, bl, 1), CM_OK);
	assert_int_equal(e.len - before, 6 + 5 + 2); /* _http _tcp + pointer (case-insensitive match) */
	assert_int_equal(buf[e.len - 2], 0xC0);
	assert_int_equal(buf[e.len - 1], 12);
	off = before;
	assert_int_equal(dn_name_unpack(buf, e.len, &off, out, &ol), CM_OK);
	assert_int_equal(ol, bl); /* decodes to the same name, with the first writer's case */
	/* the same name again is one pointer */
	before = e.len;
	assert_int_equal(dn_enc_name(&e, b, bl, 1), CM_OK);
	assert_int_equal(e.len - before, 2);
	/* uncompressed writing still registers the name */
	before = e.len;
	assert_int_equal(dn_enc_name(&e, a, al, 0), CM_OK);
	assert_int_equal(e.len - before, al);
	/* the soft limit: nothing is written when it does not fit */
	e.limit = e.len + 3;
	before = e.len;
	uint8_t c[DN_NAME_MAX];
	size_t cl;
	dn_name_from_text("other.example", c, &cl);
	assert_int_equal(dn_enc_name(&e, c, cl, 1), CM_E2BIG);
	assert_int_equal(e.len, before);
	assert_int_equal(dn_enc_u32(&e, 1), CM_E2BIG);
	char text[300];
	dn_name_to_text(a, al, text, sizeof(text));
	assert_string_equal(text, "Web.Default.svc.cluster.local.");
	assert_int_equal(dn_name_from_text("a..b", c, &cl), CM_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_plain_query),   cmocka_unit_test(test_parse_edns),
	    cmocka_unit_test(test_parse_rejections),    cmocka_unit_test(test_name_unpack_loops_and_bounds),
	    cmocka_unit_test(test_encoder_compression),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
