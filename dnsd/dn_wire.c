/* dn_wire.c -- DNS message parsing and encoding: header, names with compression, query, EDNS0 OPT.
 *
 * Owns the bytes of RFC 1035 section 4 as dnsd reads and writes them. Called by dn_answer.c on the
 * serving threads, so nothing here allocates, locks or logs; every read is bounds-checked because every
 * byte comes from the network.
 *
 * Message layout (all integers big-endian):
 *   0  u16 ID
 *   2  u16 flags: QR(15) OPCODE(14..11) AA(10) TC(9) RD(8) RA(7) Z(6) AD(5) CD(4) RCODE(3..0)
 *   4  u16 QDCOUNT, 6 u16 ANCOUNT, 8 u16 NSCOUNT, 10 u16 ARCOUNT
 *  12  question: QNAME, u16 QTYPE, u16 QCLASS
 *      then ANCOUNT + NSCOUNT + ARCOUNT resource records: NAME, u16 TYPE, u16 CLASS, u32 TTL,
 *      u16 RDLENGTH, RDLENGTH bytes of RDATA
 * Names: a sequence of labels, each a length byte 1..63 and that many bytes, ending with the zero
 *   byte (root), at most 255 bytes in all; or ending with a 2-byte pointer 0b11 + 14-bit offset to an
 *   earlier name. Length bytes 0x40..0xBF (extended and reserved label types) are invalid.
 *   Loop safety: a pointer must point strictly before where the name started and before the
 *   target of any earlier pointer of the same name, so the jumps strictly decrease and decoding
 *   terminates; the uncompressed result is also held to 255 bytes.
 * EDNS0 (RFC 6891): an OPT RR in the additional section with the root name; CLASS = the requester's
 *   UDP payload size (values below 512 are read as 512), TTL = extended RCODE (8 bits), VERSION (8),
 *   DO (1 bit), Z (15). More than one OPT, or an OPT with a non-root name or outside the additional
 *   section, is FORMERR; VERSION > 0 is answered BADVERS (RFC 6891 6.1.3).
 * Queries: QR = 0; OPCODE 0 (QUERY) else NOTIMP; QDCOUNT = 1 else FORMERR; every counted record must
 *   parse and end exactly at the end of the packet, else FORMERR. Packets shorter than the header and
 *   responses (QR = 1) are dropped unanswered.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "dn_int.h"

/* ---- names ------------------------------------------------------------------------------------------ */

int dn_name_unpack(const uint8_t *pkt, size_t len, size_t *off, uint8_t out[DN_NAME_MAX], size_t *out_len)
{
	size_t pos = *off, n = 0, after = 0, limit = *off;
	int jumped = 0;
	for (;;) {
		if (pos >= len)
			return CM_EPROTO;
		uint8_t l = pkt[pos];
		if ((l & 0xC0) == 0xC0) {
			if (pos + 1 >= len)
				return CM_EPROTO;
			size_t target = (size_t)(l & 0x3F) << 8 | pkt[pos + 1];
			if (target >= limit)
				return CM_EPROTO; /* not strictly before the last jump: could loop */
			limit = target;
			if (!jumped)
				after = pos + 2;
			jumped = 1;
			pos = target;
			continue;
		}
		if (l & 0xC0)
			return CM_EPROTO;
		if (n + 1 + l > DN_NAME_MAX || pos + 1 + l > len)
			return CM_EPROTO;
		memcpy(out + n, pkt + pos, (size_t)l + 1);
		n += (size_t)l + 1;
		pos += (size_t)l + 1;
		if (!l)
			break;
	}
	*off = jumped ? after : pos;
	*out_len = n;
	return CM_OK;
}

int dn_name_from_text(const char *s, uint8_t out[DN_NAME_MAX], size_t *out_len)
{
	size_t n = 0;
	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);
		if (!l || l > 63 || n + 1 + l + 1 > DN_NAME_MAX)
			return CM_EINVAL;
		out[n++] = (uint8_t)l;
		memcpy(out + n, s, l);
		n += l;
		s += l;
		if (*s == '.')
			s++;
	}
	out[n++] = 0;
	*out_len = n;
	return CM_OK;
}

void dn_name_to_text(const uint8_t *name, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < len && name[i] && o + 1 < cap;) {
		size_t l = name[i++];
		for (size_t k = 0; k < l && i < len && o + 2 < cap; k++)
			out[o++] = (char)name[i++];
		out[o++] = '.';
	}
	if (!o && cap > 1)
		out[o++] = '.';
	out[o] = 0;
}

void dn__name_lower(uint8_t *dst, const uint8_t *src, size_t len)
{
	for (size_t i = 0; i < len;) {
		size_t l = src[i];
		dst[i++] = (uint8_t)l;
		for (size_t k = 0; k < l; k++, i++)
			dst[i] = dn__lc(src[i]);
		if (!l)
			break;
	}
}

uint32_t dn__name_hash(const uint8_t *lname, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ lname[i]) * 16777619u;
	return h;
}

/* ---- query ------------------------------------------------------------------------------------------ */

static int skip_rr(const uint8_t *pkt, size_t len, size_t *off, int section, dn_query *q, int *nopt)
{
	uint8_t name[DN_NAME_MAX];
	size_t nl;
	if (dn_name_unpack(pkt, len, off, name, &nl) || *off + 10 > len)
		return DN_RC_FORMERR;
	const uint8_t *h = pkt + *off;
	uint16_t type = dn__get16(h), rdlen = dn__get16(h + 8);
	*off += 10;
	if (*off + rdlen > len)
		return DN_RC_FORMERR;
	if (type == DN_T_OPT) {
		if (section != 3 || nl != 1 || ++*nopt > 1)
			return DN_RC_FORMERR;
		q->has_edns = 1;
		q->edns_size = dn__get16(h + 2) < DN_UDP_MIN ? DN_UDP_MIN : dn__get16(h + 2);
		q->edns_version = h[5];
		q->edns_do = (h[6] & 0x80) != 0;
	}
	*off += rdlen;
	return DN_RC_NOERROR;
}

static int parse_question(const uint8_t *pkt, size_t len, dn_query *q, size_t *off)
{
	uint8_t name[DN_NAME_MAX];
	size_t nl;
	if (dn_name_unpack(pkt, len, off, name, &nl) || *off + 4 > len)
		return DN_RC_FORMERR;
	q->qtype = dn__get16(pkt + *off);
	q->qclass = dn__get16(pkt + *off + 2);
	*off += 4;
	memcpy(q->qname, name, nl);
	q->qname_len = (uint8_t)nl;
	q->question_end = (uint16_t)*off;
	return DN_RC_NOERROR;
}

int dn_parse_query(const uint8_t *pkt, size_t len, dn_query *q)
{
	memset(q, 0, sizeof(*q));
	if (len < 12)
		return CM_EPROTO;
	q->id = dn__get16(pkt);
	q->flags = dn__get16(pkt + 2);
	if (q->flags & 0x8000)
		return CM_EPROTO;
	if (len > 65535)
		return DN_RC_FORMERR;
	uint16_t qd = dn__get16(pkt + 4), counts[3] = {dn__get16(pkt + 6), dn__get16(pkt + 8), dn__get16(pkt + 10)};
	if ((q->flags >> 11 & 0xF) != 0)
		return DN_RC_NOTIMP;
	if (qd != 1)
		return DN_RC_FORMERR;
	size_t off = 12;
	int rc = parse_question(pkt, len, q, &off), nopt = 0;
	for (int s = 0; s < 3 && !rc; s++)
		for (unsigned i = 0; i < counts[s] && !rc; i++)
			rc = skip_rr(pkt, len, &off, s + 1, q, &nopt);
	if (!rc && off != len)
		rc = DN_RC_FORMERR;
	if (!rc && q->has_edns && q->edns_version > 0)
		rc = DN_RC_BADVERS;
	return rc;
}

/* ---- encoder ---------------------------------------------------------------------------------------- */

void dn_enc_init(dn_enc *e, uint8_t *buf, size_t cap, size_t limit)
{
	e->buf = buf;
	e->cap = cap;
	e->limit = limit < cap ? limit : cap;
	e->len = 0;
	e->ncomp = 0;
}

static int room(const dn_enc *e, size_t n)
{
	return e->len + n <= e->limit ? CM_OK : CM_E2BIG;
}

int dn_enc_u16(dn_enc *e, uint16_t v)
{
	if (room(e, 2))
		return CM_E2BIG;
	e->buf[e->len++] = (uint8_t)(v >> 8);
	e->buf[e->len++] = (uint8_t)v;
	return CM_OK;
}

int dn_enc_u32(dn_enc *e, uint32_t v)
{
	int rc = dn_enc_u16(e, (uint16_t)(v >> 16));
	return rc ? rc : dn_enc_u16(e, (uint16_t)v);
}

int dn_enc_bytes(dn_enc *e, const void *p, size_t n)
{
	if (room(e, n))
		return CM_E2BIG;
	memcpy(e->buf + e->len, p, n);
	e->len += n;
	return CM_OK;
}

/* Does the (possibly compressed) name at buf[off] equal the uncompressed name, ignoring case? Names in
 * the buffer were written by us, so pointers go backwards; the hop bound is belt and braces. */
static int same_name(const uint8_t *buf, size_t off, const uint8_t *name)
{
	for (int hops = 0; hops < 128; hops++) {
		uint8_t l = buf[off];
		if ((l & 0xC0) == 0xC0) {
			off = (size_t)(l & 0x3F) << 8 | buf[off + 1];
			continue;
		}
		if (l != *name)
			return 0;
		if (!l)
			return 1;
		for (size_t k = 1; k <= l; k++)
			if (dn__lc(buf[off + k]) != dn__lc(name[k]))
				return 0;
		off += (size_t)l + 1;
		name += l + 1;
	}
	return 0;
}

static int comp_find(const dn_enc *e, const uint8_t *name)
{
	for (size_t i = 0; i < e->ncomp; i++)
		if (same_name(e->buf, e->comp[i], name))
			return e->comp[i];
	return -1;
}

int dn_enc_name(dn_enc *e, const uint8_t *name, size_t len, int compress)
{
	size_t start = e->len, i = 0, ncomp0 = e->ncomp;
	while (i < len && name[i]) {
		int ptr = compress ? comp_find(e, name + i) : -1;
		if (ptr >= 0) {
			if (dn_enc_u16(e, (uint16_t)(0xC000 | ptr)))
				goto fail;
			return CM_OK;
		}
		if (e->len < 0x4000 && e->ncomp < DN_COMP_MAX)
			e->comp[e->ncomp++] = (uint16_t)e->len;
		if (dn_enc_bytes(e, name + i, (size_t)name[i] + 1))
			goto fail;
		i += (size_t)name[i] + 1;
	}
	if (!dn_enc_bytes(e, "", 1))
		return CM_OK;
fail:
	e->len = start;
	e->ncomp = ncomp0;
	return CM_E2BIG;
}
