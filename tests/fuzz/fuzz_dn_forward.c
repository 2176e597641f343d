/* fuzz_dn_forward.c -- libFuzzer harness: dnsd's forwarder on arbitrary upstream answers.
 *
 * The harness owns two loopback UDP sockets, the upstream and the client. Per input it submits one
 * query (client ID 0x4242, mixed-case name) to a forwarder whose only upstream is its socket (timeout
 * 1 ms), receives what the forwarder sent upstream, and sends the input back from the upstream socket as
 * the answer, its first two bytes replaced by the forwarded query's ID so the matching goes past the
 * ID check. Then it runs the forwarder until the client has its one reply: either the answer (which
 * must carry the client's ID and question case and fit the client's 512 bytes) or, for anything that
 * does not match, SERVFAIL after the timeout. Inputs with TC set make the forwarder try TCP to the
 * upstream's port, where nothing listens. Everything stays on 127.0.0.1.
 * The input then goes through the forward cache (dn_fcache.c) as the answer to that query: when it is
 * kept, the answer read back 5 s later must be the input with the client's ID and question case. Last,
 * dn__truncate on a copy of the input: no longer than the input, TC set, at most the question and one OPT.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dn_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct harness {
	dn__fwd *f;
	int up, client;
	struct sockaddr_in client_addr;
} harness;

static const uint8_t QUERY[] = {0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'W', 'w', 'W', 7, 'E', 'x', 'a',
                                'm',  'p',  'L', 'e', 3, 'o', 'R', 'g', 0, 0, 1, 0, 1};

static int loopback_socket(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	socklen_t l = sizeof(*a);
	*a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(*a)) || getsockname(fd, (struct sockaddr *)a, &l))
		abort();
	return fd;
}

static harness *get(void)
{
	static harness h;
	if (h.f)
		return &h;
	struct sockaddr_in up;
	h.up = loopback_socket(&up);
	h.client = loopback_socket(&h.client_addr);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(up.sin_port));
	const char *ups[] = {addr};
	cm_err err;
	if (dn__fwd_create(ups, 1, 1, DN_EDNS_SIZE, 0, &h.f, &err))
		abort();
	return &h;
}

static void no_tcp_clients(void *ctx, uint64_t conn, const uint8_t *ans, size_t n)
{
	(void)ctx, (void)conn, (void)ans, (void)n;
	abort(); /* only a UDP client was submitted */
}

static void cache_check(const uint8_t *data, size_t size)
{
	const size_t qname_len = sizeof(QUERY) - 12 - 4;
	dn__fcache *fc = dn__fcache_new(2);
	uint8_t out[DN__FCACHE_MAX];
	if (!fc)
		abort();
	dn__fcache_put(fc, QUERY, qname_len, DN__FC_RD, data, size, 0);
	size_t m = dn__fcache_get(fc, QUERY, qname_len, DN__FC_RD, out, sizeof(out), 5000000000);
	if (m && (m != size || memcmp(out, QUERY, 2) || memcmp(out + 2, data + 2, 10) ||
	          memcmp(out + 12, QUERY + 12, qname_len) || dn__fcache_len(fc) != 1))
		abort();
	dn__fcache_free(fc);
}

static void truncate_check(const uint8_t *data, size_t size)
{
	static uint8_t b[65536];
	if (size > sizeof(b))
		return;
	memcpy(b, data, size);
	size_t n = dn__truncate(b, size);
	if (n && (n > size || !(b[2] & 0x02) || dn__get16(b + 4) > 1 || dn__get16(b + 6) || dn__get16(b + 8) ||
	          dn__get16(b + 10) > 1))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	harness *h = get();
	static uint8_t buf[65536];
	dn__fwd_client c = {.udp_fd = h->client, .alen = sizeof(h->client_addr)};
	memcpy(&c.addr, &h->client_addr, sizeof(h->client_addr));
	size_t hit;
	if (dn__fwd_submit(h->f, QUERY, sizeof(QUERY), &c, buf, sizeof(buf), &hit) || hit)
		abort();
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	if (recvfrom(h->up, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl) != sizeof(QUERY))
		abort();
	uint8_t id[2] = {buf[0], buf[1]};
	size = size < sizeof(buf) - 2 ? size : sizeof(buf) - 2;
	memcpy(buf, data, size);
	if (size >= 2)
		memcpy(buf, id, 2);
	sendto(h->up, buf, size, 0, (struct sockaddr *)&from, fl);
	ssize_t n = -1;
	for (int i = 0; i < 2000 && n < 0; i++) { /* one reply within the timeout (+ a TCP attempt) */
		dn__fwd_run(h->f, no_tcp_clients, NULL);
		n = recv(h->client, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0)
			usleep(100);
	}
	if (n < 12 || n > DN_UDP_MIN || buf[0] != 0x42 || buf[1] != 0x42 || !(buf[2] & 0x80))
		abort();
	if (memcmp(buf + 12, QUERY + 12, sizeof(QUERY) - 12)) /* the question, in the client's case */
		abort();
	if (recv(h->client, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		abort(); /* exactly one reply */
	cache_check(data, size);
	truncate_check(data, size);
	return 0;
}
