/* ag_resolve.c -- GET /api/v1/dns/resolve: the web UI's "resolve" box, answered by the real cluster DNS.
 *
 * The handler builds one DNS query (dnsd's encoder, EDNS0 with 1232 bytes, RD clear) and sends it over
 * UDP to the aggregator's own DNS server (ag__dns_addr: the --dns-listen address, loopback for a
 * wildcard), waits at most one second for the reply with the same id, and returns the reply as JSON. So
 * what the box shows is exactly what `dig` would get, rate limiting included. Runs on an HTTP worker
 * thread (handlers may block; this one for at most a second); never on a DNS serving thread.
 *
 *   GET /api/v1/dns/resolve?name=web.demo.svc.cluster.local&type=A      (type default A)
 *   {"status":"success","data":{"name":"web.demo.svc.cluster.local.","type":"A","server":"127.0.0.1:1053",
 *    "ms":0.21,"rcode":"NOERROR","aa":true,"tc":false,
 *    "answers":[{"name":"web.demo.svc.cluster.local.","type":"A","ttl":5,"data":"127.0.0.11"}],
 *    "authority":[]}}
 * 400 for a bad name or type, 503 when DNS is off or no reply came. ag__dns_reply_json parses a reply
 * packet (bytes from a socket, so it checks every length and is fuzzed: fuzz_ag_dnsreply); record data
 * is shown for A, AAAA, CNAME, NS, PTR, SRV ("prio weight port target"), TXT (strings joined by
 * spaces) and SOA ("mname rname serial"), other types as "<n bytes>".
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ag_int.h"

#define RESOLVE_TIMEOUT_MS 1000

static const struct {
	const char *name;
	uint16_t type;
} qtypes[] = {
	{"A", DN_T_A},     {"AAAA", DN_T_AAAA}, {"SRV", DN_T_SRV}, {"PTR", DN_T_PTR}, {"TXT", DN_T_TXT},
	{"CNAME", DN_T_CNAME}, {"SOA", DN_T_SOA}, {"NS", DN_T_NS}, {"ANY", DN_T_ANY},
};

static const char *const rcodes[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"};

static const char *type_name(uint16_t t, char *buf, size_t cap)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(qtypes); i++)
		if (qtypes[i].type == t)
			return qtypes[i].name;
	snprintf(buf, cap, "TYPE%u", t);
	return buf;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }

/* A name at *off as text into out; 0 or CM_EPROTO. */
static int read_name(const uint8_t *pkt, size_t len, size_t *off, char *out, size_t cap)
{
	uint8_t wire[DN_NAME_MAX];
	size_t wlen;
	if (dn_name_unpack(pkt, len, off, wire, &wlen))
		return CM_EPROTO;
	dn_name_to_text(wire, wlen, out, cap);
	return CM_OK;
}

/* TXT rdata: character-strings joined by spaces, each as its bytes (the JSON writer escapes them). */
static int txt_text(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t l = p[i++];
		if (l > n - i)
			return CM_EPROTO;
		for (size_t k = 0; k < l && o + 2 < cap; k++)
			out[o++] = p[i + k] ? (char)p[i + k] : '?';
		if (o + 2 < cap && i + l < n)
			out[o++] = ' ';
		i += l;
	}
	out[o] = 0;
	return CM_OK;
}

/* The rdata of one record (type t, rdata at pkt[off..off+rdlen)) as text; names in it may point back
 * into the packet before it, never past the rdata. */
static int rdata_text(const uint8_t *pkt, uint16_t t, size_t off, size_t rdlen, char *out, size_t cap)
{
	const uint8_t *p = pkt + off;
	char a[DN_NAME_MAX * 4 + 8], b[DN_NAME_MAX * 4 + 8];
	size_t o = off;
	if (t == DN_T_A && rdlen == 4)
		return inet_ntop(AF_INET, p, out, (socklen_t)cap) ? CM_OK : CM_EPROTO;
	if (t == DN_T_AAAA && rdlen == 16)
		return inet_ntop(AF_INET6, p, out, (socklen_t)cap) ? CM_OK : CM_EPROTO;
	if (t == DN_T_CNAME || t == DN_T_NS || t == DN_T_PTR)
		return read_name(pkt, off + rdlen, &o, out, cap);
	if (t == DN_T_SRV && rdlen > 6) {
		o += 6;
		int rc = read_name(pkt, off + rdlen, &o, a, sizeof(a));
		if (!rc)
			snprintf(out, cap, "%u %u %u %s", get16(p), get16(p + 2), get16(p + 4), a);
		return rc;
	}
	if (t == DN_T_SOA) {
		int rc = read_name(pkt, off + rdlen, &o, a, sizeof(a));
		rc = rc ? rc : read_name(pkt, off + rdlen, &o, b, sizeof(b));
		if (!rc && o + 4 <= off + rdlen)
			snprintf(out, cap, "%s %s %u", a, b, get32(pkt + o));
		return rc || o + 20 != off + rdlen ? CM_EPROTO : CM_OK;
	}
	if (t == DN_T_TXT)
		return txt_text(p, rdlen, out, cap);
	snprintf(out, cap, "<%zu bytes>", rdlen);
	return CM_OK;
}

/* One resource record at *off as a JSON object appended to out (OPT records are skipped). */
static int put_rr(const uint8_t *pkt, size_t len, size_t *off, int *first, cm_buf *out)
{
	char name[DN_NAME_MAX * 4 + 8], data[4200], tbuf[16];
	if (read_name(pkt, len, off, name, sizeof(name)) || len - *off < 10)
		return CM_EPROTO;
	uint16_t type = get16(pkt + *off);
	uint32_t ttl = get32(pkt + *off + 4);
	size_t rdlen = get16(pkt + *off + 8), rd = *off + 10;
	if (rdlen > len - rd)
		return CM_EPROTO;
	*off = rd + rdlen;
	if (type == DN_T_OPT)
		return CM_OK;
	if (rdata_text(pkt, type, rd, rdlen, data, sizeof(data)))
		return CM_EPROTO;
	int rc = cm_buf_puts(out, *first ? "{\"name\":" : ",{\"name\":");
	*first = 0;
	rc = rc ? rc : cm_buf_put_json_str(out, name);
	rc = rc ? rc : cm_buf_puts(out, ",\"type\":");
	rc = rc ? rc : cm_buf_put_json_str(out, type_name(type, tbuf, sizeof(tbuf)));
	rc = rc ? rc : cm_buf_printf(out, ",\"ttl\":%u,\"data\":", ttl);
	rc = rc ? rc : cm_buf_put_json_str(out, data);
	return rc ? rc : cm_buf_puts(out, "}");
}

/* count records from *off as a JSON array named key. */
static int put_section(const uint8_t *pkt, size_t len, size_t *off, unsigned count, const char *key, cm_buf *out)
{
	int first = 1, rc = cm_buf_printf(out, ",\"%s\":[", key);
	for (unsigned i = 0; !rc && i < count; i++)
		rc = put_rr(pkt, len, off, &first, out);
	return rc ? rc : cm_buf_puts(out, "]");
}

int ag__dns_reply_json(const uint8_t *pkt, size_t len, cm_buf *out)
{
	if (len < 12)
		return CM_EPROTO;
	uint16_t flags = get16(pkt + 2), qd = get16(pkt + 4), an = get16(pkt + 6), ns = get16(pkt + 8);
	size_t off = 12, start = out->len;
	char name[DN_NAME_MAX * 4 + 8];
	for (unsigned i = 0; i < qd; i++)
		if (read_name(pkt, len, &off, name, sizeof(name)) || len - off < 4 || (off += 4) > len)
			return CM_EPROTO;
	unsigned rc_num = flags & 0xf;
	int rc = cm_buf_puts(out, "\"rcode\":");
	char tbuf[16];
	snprintf(tbuf, sizeof(tbuf), "RCODE%u", rc_num);
	rc = rc ? rc : cm_buf_put_json_str(out, rc_num < CM_ARRAY_LEN(rcodes) ? rcodes[rc_num] : tbuf);
	rc = rc ? rc : cm_buf_printf(out, ",\"aa\":%s,\"tc\":%s", flags & 0x0400 ? "true" : "false",
	                             flags & 0x0200 ? "true" : "false");
	rc = rc ? rc : put_section(pkt, len, &off, an, "answers", out);
	rc = rc ? rc : put_section(pkt, len, &off, ns, "authority", out);
	if (rc)
		out->len = start;
	return rc;
}

/* The query packet for name/type into buf; its length, or 0 when the name is not a DNS name. */
static size_t build_query(const char *name, uint16_t type, uint16_t id, uint8_t *buf, size_t cap)
{
	uint8_t wire[DN_NAME_MAX];
	size_t wlen;
	dn_enc e;
	if (dn_name_from_text(name, wire, &wlen))
		return 0;
	dn_enc_init(&e, buf, cap, cap);
	const uint16_t head[6] = {id, 0, 1, 0, 0, 1}; /* id, flags, qd, an, ns, ar (the OPT record) */
	int rc = 0;
	for (int i = 0; i < 6; i++)
		rc = rc ? rc : dn_enc_u16(&e, head[i]);
	rc = rc ? rc : dn_enc_name(&e, wire, wlen, 0);
	rc = rc ? rc : dn_enc_u16(&e, type);
	rc = rc ? rc : dn_enc_u16(&e, DN_C_IN);
	static const uint8_t opt[] = {0, 0, DN_T_OPT, DN_EDNS_SIZE >> 8, DN_EDNS_SIZE & 0xff, 0, 0, 0, 0, 0, 0};
	rc = rc ? rc : dn_enc_bytes(&e, opt, sizeof(opt));
	return rc ? 0 : e.len;
}

/* Waits on the connected socket fd for the reply with id; its length, or CM_AGAIN after the timeout. */
static ssize_t await_reply(int fd, uint16_t id, uint8_t *reply, size_t cap)
{
	for (int64_t until = cm_now_ms() + RESOLVE_TIMEOUT_MS, left; (left = until - cm_now_ms()) > 0;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t n = recv(fd, reply, cap, 0);
		if (n >= 12 && get16(reply) == id)
			return n; /* anything else (a stray or late datagram) is skipped */
	}
	return CM_AGAIN;
}

/* Sends q to addr and waits for the reply with id; its length, or a negative CM_E* code. */
static ssize_t exchange(const struct sockaddr_storage *addr, const uint8_t *q, size_t qlen, uint16_t id,
                        uint8_t *reply, size_t cap)
{
	socklen_t alen = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ssize_t n = CM_EIO;
	if (!connect(fd, (const struct sockaddr *)addr, alen) && send(fd, q, qlen, 0) == (ssize_t)qlen)
		n = await_reply(fd, id, reply, cap);
	close(fd);
	return n;
}

static int addr_text(const struct sockaddr_storage *a, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	const void *src = a->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr
	                                           : (const void *)&((const struct sockaddr_in *)a)->sin_addr;
	unsigned port = ntohs(a->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
	                                               : ((const struct sockaddr_in *)a)->sin_port);
	if (!inet_ntop(a->ss_family, src, ip, sizeof(ip)))
		return CM_EINVAL;
	snprintf(out, cap, a->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
	return CM_OK;
}

static int parse_type(const char *s, uint16_t *out)
{
	for (size_t i = 0; i < CM_ARRAY_LEN(qtypes); i++)
		if (!strcasecmp(s, qtypes[i].name))
			return *out = qtypes[i].type, CM_OK;
	return CM_EINVAL;
}

void ag__resolve(ag__dns *d, const ag_config *cfg, const ag__req *req, ag__resp *resp)
{
	const char *name = ag__param_get(req, "name"), *tname = ag__param_get(req, "type");
	uint16_t type = DN_T_A, id = (uint16_t)(cm_now_ms() ^ (int64_t)(uintptr_t)req);
	uint8_t q[DN_NAME_MAX + 64], reply[4096];
	struct sockaddr_storage addr;
	char server[80];
	if (!name || !*name || (tname && *tname && parse_type(tname, &type)))
		return ag__resp_error(resp, 400, "bad_data", "name is required; type is one of A AAAA SRV PTR TXT "
		                                             "CNAME SOA NS ANY");
	size_t qlen = build_query(name, type, id, q, sizeof(q));
	if (!qlen)
		return ag__resp_error(resp, 400, "bad_data", "name is not a valid DNS name");
	if (ag__dns_addr(d, cfg, &addr) || addr_text(&addr, server, sizeof(server)))
		return ag__resp_error(resp, 503, "unavailable", "the cluster DNS is off (--dns-listen)");
	int64_t t0 = cm_mono_ns();
	ssize_t n = exchange(&addr, q, qlen, id, reply, sizeof(reply));
	double ms = (double)(cm_mono_ns() - t0) / 1e6;
	if (n < 0)
		return ag__resp_error(resp, 503, "unavailable", n == CM_AGAIN ? "no reply from the cluster DNS within 1 s"
		                                                                   : "cannot reach the cluster DNS");
	char text[DN_NAME_MAX * 4 + 8], tbuf[16];
	size_t wlen;
	uint8_t wire[DN_NAME_MAX];
	dn_name_from_text(name, wire, &wlen);
	dn_name_to_text(wire, wlen, text, sizeof(text));
	resp->content_type = "application/json";
	int rc = cm_buf_puts(&resp->body, "{\"status\":\"success\",\"data\":{\"name\":");
	rc = rc ? rc : cm_buf_put_json_str(&resp->body, text);
	rc = rc ? rc : cm_buf_puts(&resp->body, ",\"type\":");
	rc = rc ? rc : cm_buf_put_json_str(&resp->body, type_name(type, tbuf, sizeof(tbuf)));
	rc = rc ? rc : cm_buf_printf(&resp->body, ",\"server\":\"%s\",\"ms\":%.3f,", server, ms);
	rc = rc ? rc : ag__dns_reply_json(reply, (size_t)n, &resp->body);
	rc = rc ? rc : cm_buf_puts(&resp->body, "}}\n");
	if (rc) {
		resp->body.len = 0;
		ag__resp_error(resp, 502, "bad_response", "the DNS reply did not parse");
	}
}
