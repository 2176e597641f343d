/* dn_rrl.c -- response rate limiting per client prefix (a token bucket per /24 or /56), and truncation.
 *
 * Each UDP serving thread owns one dn__rrl table, so there is no lock and no sharing; with SO_REUSEPORT
 * one client's packets usually land on one thread, so the effective limit per prefix is between rate and
 * rate x threads (docs/dns.md). The table is direct-mapped: a new prefix takes over its slot, which at
 * worst lets a flood start over with a full bucket; it never blocks an unrelated client. Limited answers
 * are dropped, except every slip-th one goes out truncated (TC) so a real client behind the prefix can
 * retry over TCP, which is not limited (the BIND and Knot behaviour). A truncated answer keeps only the
 * question and the OPT record, if the answer had one.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "dn_int.h"

static uint64_t prefix_key(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		return 1ull << 63 | (uint64_t)a[0] << 16 | (uint64_t)a[1] << 8 | a[2];
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		uint64_t k = 0;
		for (int i = 0; i < 7; i++)
			k = k << 8 | a[i];
		return 1ull << 62 | k;
	}
	return 1;
}

int dn__rrl_check(dn__rrl *r, const struct sockaddr *sa, int64_t now_ns)
{
	if (!r->rate)
		return DN__RRL_PASS;
	uint64_t key = prefix_key(sa);
	dn__rrl_slot *s = &r->slots[(key * 0x9E3779B97F4A7C15ull) >> 52 & (DN__RRL_SLOTS - 1)];
	uint32_t full = r->rate * 1000u;
	if (s->key != key) {
		*s = (dn__rrl_slot){.key = key, .last_ns = now_ns, .tokens = full};
	} else if (now_ns > s->last_ns) {
		uint64_t add = (uint64_t)(now_ns - s->last_ns) * r->rate / 1000000u; /* tokens x 1000 */
		s->tokens = add >= full - s->tokens ? full : s->tokens + (uint32_t)add;
		s->last_ns = now_ns;
	}
	if (s->tokens >= 1000) {
		s->tokens -= 1000;
		s->limited = 0;
		return DN__RRL_PASS;
	}
	s->limited++;
	return r->slip && s->limited % r->slip == 0 ? DN__RRL_SLIP : DN__RRL_DROP;
}

size_t dn__truncate(uint8_t *buf, size_t len)
{
	uint8_t name[DN_NAME_MAX];
	size_t off = 12, nl;
	if (len < 12)
		return 0;
	if (dn__get16(buf + 4)) {
		if (dn_name_unpack(buf, len, &off, name, &nl) || off + 4 > len)
			return 0;
		off += 4;
	}
	size_t qend = off, opt = 0, opt_len = 0;
	unsigned nrr = (unsigned)dn__get16(buf + 6) + dn__get16(buf + 8) + dn__get16(buf + 10);
	for (unsigned i = 0; i < nrr; i++) { /* find the OPT record: an EDNS client gets it back (RFC 6891 7) */
		size_t start = off;
		if (dn_name_unpack(buf, len, &off, name, &nl) || off + 10 > len ||
		    off + 10 + dn__get16(buf + off + 8) > len)
			break;
		size_t end = off + 10 + dn__get16(buf + off + 8);
		if (nl == 1 && dn__get16(buf + off) == DN_T_OPT)
			opt = start, opt_len = end - start;
		off = end;
	}
	buf[2] |= 0x02;
	memset(buf + 4, 0, 8);
	buf[5] = qend > 12;
	if (opt_len) {
		memmove(buf + qend, buf + opt, opt_len);
		buf[11] = 1;
	}
	return qend + opt_len;
}
