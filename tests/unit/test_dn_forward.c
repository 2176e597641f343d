/* test_dn_forward.c -- dnsd/dn_forward.c through a running dn_server: what it sends upstream, which
 * upstream answers it accepts (anti-spoofing), the client's ID and question case on the way back, the
 * timeout's SERVFAIL, the bound on queries in flight and the one per TCP connection.
 *
 * The test plays the upstream (and the spoofer) with its own UDP socket on a loopback port, and the
 * client with another; the server runs one UDP thread with a 300 ms upstream timeout. Knot as the real
 * upstream is in tests/integration/test_dns_forward.c.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dn.h"

typedef struct fix {
	dn_server *s;
	int up, client; /* the test's upstream and client sockets */
	struct sockaddr_in srv;
} fix;

static int udp_socket(struct sockaddr_in *bound)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	struct timeval tv = {0, 200000};
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(fd, (struct sockaddr *)&a, &l);
	if (bound)
		*bound = a;
	return fd;
}

/* Starts g->s with one upstream at 127.0.0.1:port, a forward cache of that many entries and an empty
 * cluster zone. */
static int start_server(fix *g, int port, int timeout_ms, size_t cache)
{
	char upstream[64];
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%d", port);
	const char *ups[] = {upstream};
	dn_server_config cfg = {.listen = "127.0.0.1:0", .udp_threads = 1, .upstreams = ups, .nupstreams = 1,
	                        .upstream_timeout_ms = timeout_ms, .forward_cache = cache};
	cm_err err;
	dn_zone_config zc = {.domain = "cluster.local", .ttl = 5, .serial = 1};
	dn_zone *z;
	if (dn_server_start(&cfg, &g->s, &err) || dn_zone_build(&zc, NULL, 0, &z, NULL, &err)) {
		fprintf(stderr, "start_server: %s\n", err.msg);
		return -1;
	}
	dn_server_publish(g->s, z);
	g->srv = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)dn_server_port(g->s)),
	                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	return 0;
}

static int setup(void **state)
{
	fix *f = calloc(1, sizeof(*f));
	struct sockaddr_in up;
	f->up = udp_socket(&up);
	f->client = udp_socket(NULL);
	*state = f;
	return start_server(f, ntohs(up.sin_port), 300, 0);
}

static int teardown(void **state)
{
	fix *f = *state;
	dn_server_stop(f->s);
	close(f->up);
	close(f->client);
	free(f);
	return 0;
}

/* A query for name (wire form via dn_name_from_text) of type A with id; returns its length. */
static size_t query(uint8_t *q, uint16_t id, const char *name)
{
	size_t nl;
	memset(q, 0, 12);
	q[0] = (uint8_t)(id >> 8), q[1] = (uint8_t)id, q[2] = 0x01, q[5] = 1; /* RD, QDCOUNT 1 */
	assert_int_equal(dn_name_from_text(name, q + 12, &nl), 0);
	memcpy(q + 12 + nl, (const uint8_t[]){0, DN_T_A, 0, DN_C_IN}, 4);
	return 12 + nl + 4;
}

static double metric(fix *f, const char *name)
{
	cm_buf b;
	cm_buf_init(&b);
	assert_int_equal(dn_server_metrics(f->s, &b), 0);
	cm_buf_append(&b, "", 1);
	char key[128];
	snprintf(key, sizeof(key), "\n%s ", name);
	const char *p = strstr((const char *)b.data, key);
	double v = p ? atof(p + strlen(key)) : -1;
	cm_buf_close(&b);
	return v;
}

static void test_answer_matching(void **state)
{
	fix *f = *state;
	uint8_t q[512], fq[512], a[512], got[512];
	size_t ql = query(q, 0x1234, "WwW.Example.ORG");
	assert_int_equal(sendto(f->client, q, ql, 0, (struct sockaddr *)&f->srv, sizeof(f->srv)), (ssize_t)ql);
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(f->up, fq, sizeof(fq), 0, (struct sockaddr *)&from, &fl);
	assert_int_equal(n, (ssize_t)ql);
	assert_memory_equal(fq + 2, q + 2, ql - 2); /* the client's query as it came, with an ID of ours */
	/* the answer the upstream means: lowercase question, one A record */
	size_t al = query(a, (uint16_t)(fq[0] << 8 | fq[1]), "www.example.org");
	a[2] = 0x81, a[3] = 0x80, a[7] = 1; /* QR RD RA, ANCOUNT 1 */
	const uint8_t rr[] = {0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 42, 0, 4, 192, 0, 2, 10};
	memcpy(a + al, rr, sizeof(rr));
	al += sizeof(rr);
	uint8_t bad[4][512];
	for (int i = 0; i < 4; i++)
		memcpy(bad[i], a, al);
	bad[0][1] ^= 1;                /* another ID */
	bad[1][2] &= 0x7F;             /* not a response */
	bad[2][27] ^= 4;               /* example.org -> example.orc: another question */
	bad[3][ql - 3] = DN_T_AAAA;    /* another type */
	for (int i = 0; i < 4; i++)
		sendto(f->up, bad[i], al, 0, (struct sockaddr *)&from, fl);
	int spoofer = udp_socket(NULL); /* the right answer from another port: the connected socket ignores it */
	sendto(spoofer, a, al, 0, (struct sockaddr *)&from, fl);
	close(spoofer);
	usleep(50000);
	sendto(f->up, a, al, 0, (struct sockaddr *)&from, fl);
	n = recv(f->client, got, sizeof(got), 0);
	assert_int_equal(n, (ssize_t)al);
	assert_int_equal(got[0] << 8 | got[1], 0x1234);
	assert_memory_equal(got + 12, q + 12, ql - 12 - 4); /* the client's case */
	assert_memory_equal(got + ql, rr, sizeof(rr));
	assert_true(recv(f->client, got, sizeof(got), 0) < 0); /* nothing else came through */
	assert_true(metric(f, "corral_dns_forward_unmatched_total") == 4);
	assert_true(metric(f, "corral_dns_forward_answers_total") == 1);
}

static void test_fresh_ids(void **state)
{
	fix *f = *state;
	uint8_t q[512], fq[512];
	int same = 0;
	for (int i = 0; i < 4; i++) { /* the same client ID four times: the IDs sent upstream are random */
		size_t ql = query(q, 7, "a.example.org");
		sendto(f->client, q, ql, 0, (struct sockaddr *)&f->srv, sizeof(f->srv));
		assert_true(recv(f->up, fq, sizeof(fq), 0) > 12);
		same += fq[0] == 0 && fq[1] == 7;
	}
	assert_true(same < 4);
	uint8_t a[512];
	for (int i = 0; i < 4; i++) { /* unanswered: SERVFAIL after the 300 ms timeout, with the client's ID */
		ssize_t n = -1;
		for (int t = 0; t < 5 && n < 0; t++) /* 200 ms each */
			n = recv(f->client, a, sizeof(a), 0);
		assert_true(n >= 12);
		assert_int_equal(a[0] << 8 | a[1], 7);
		assert_int_equal(a[3] & 15, DN_RC_SERVFAIL);
	}
	assert_true(metric(f, "corral_dns_forward_timeouts_total") == 4);
}

static void test_in_flight_bound(void **state)
{
	fix *f = *state;
	uint8_t q[512], a[512];
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct timeval tv = {1, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	double timeouts = metric(f, "corral_dns_forward_timeouts_total");
	for (int i = 0; i < 1100; i++) { /* nobody answers: the table (1024) fills, 76 get SERVFAIL at once */
		size_t ql = query(q, (uint16_t)i, "b.example.org");
		sendto(fd, q, ql, 0, (struct sockaddr *)&f->srv, sizeof(f->srv));
	}
	int servfail = 0;
	while (recv(fd, a, sizeof(a), 0) >= 12) /* the rest after the timeout (some may overflow our buffer) */
		servfail += (a[3] & 15) == DN_RC_SERVFAIL;
	close(fd);
	assert_true(servfail >= 1100 - 1024);
	assert_true(metric(f, "corral_dns_forward_full_total") == 1100 - 1024);
	assert_true(metric(f, "corral_dns_forward_timeouts_total") == timeouts + 1024);
	assert_true(metric(f, "corral_dns_forwarded_total") == 1 + 4 + 1024);
}

/* One TCP client pipelining 40 queries to an upstream that holds them: the forwarder gets 16 (TCP_FWD) of
 * them, and the next only when one is answered. A TCP client's queries go upstream over TCP, one
 * connection each, so the test's upstream is a TCP listener and counts connections. A second server with
 * a 3 s timeout, so nothing times out while the test looks. */
static void test_tcp_pipeline_bound(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in up = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t ul = sizeof(up);
	struct timeval tv = {0, 200000};
	setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)); /* accept gives up after 200 ms */
	assert_int_equal(bind(lfd, (struct sockaddr *)&up, sizeof(up)), 0);
	assert_int_equal(listen(lfd, 64), 0);
	getsockname(lfd, (struct sockaddr *)&up, &ul);
	fix g = {0};
	assert_int_equal(start_server(&g, ntohs(up.sin_port), 3000, 0), 0);

	int tcp = socket(AF_INET, SOCK_STREAM, 0);
	tv.tv_sec = 2;
	setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(tcp, (struct sockaddr *)&g.srv, sizeof(g.srv)), 0);
	uint8_t buf[40 * 64];
	size_t off = 0;
	for (int i = 0; i < 40; i++) {
		size_t ql = query(buf + off + 2, (uint16_t)i, "c.example.org");
		buf[off] = 0, buf[off + 1] = (uint8_t)ql;
		off += 2 + ql;
	}
	assert_int_equal(send(tcp, buf, off, 0), (ssize_t)off);
	int conns[40], n = 0;
	for (int c; n < 40 && (c = accept(lfd, NULL, NULL)) >= 0;) /* until 200 ms pass with none */
		conns[n++] = c;
	assert_int_equal(n, 16);
	assert_true(metric(&g, "corral_dns_forwarded_total") == 16);
	assert_true(metric(&g, "corral_dns_forward_full_total") == 0);

	/* the upstream answers one: its answer reaches the client, and the connection is read again */
	uint8_t q[2 + 512];
	assert_int_equal(recv(conns[0], q, 2, MSG_WAITALL), 2);
	assert_int_equal(recv(conns[0], q + 2, q[1], MSG_WAITALL), q[1]);
	q[4] |= 0x80, q[5] = 0x83; /* QR, NXDOMAIN */
	assert_int_equal(send(conns[0], q, 2u + q[1], 0), 2 + q[1]);
	uint8_t ans[2 + 512];
	assert_int_equal(recv(tcp, ans, 2, MSG_WAITALL), 2);
	assert_int_equal(recv(tcp, ans + 2, ans[1], MSG_WAITALL), ans[1]);
	assert_int_equal(ans[5] & 15, DN_RC_NXDOMAIN);
	assert_true((conns[n++] = accept(lfd, NULL, NULL)) >= 0); /* the 17th */
	assert_true(accept(lfd, NULL, NULL) < 0);
	assert_true(metric(&g, "corral_dns_forwarded_total") == 17);
	close(tcp);
	dn_server_stop(g.s);
	for (int i = 0; i < n; i++)
		close(conns[i]);
	close(lfd);
}

/* An upstream refusing TCP connections: SERVFAIL long before the timeout, counted as an upstream error, not
 * a timeout. */
static void test_tcp_refused(void **state)
{
	(void)state;
	int closed = socket(AF_INET, SOCK_STREAM, 0); /* bound, not listening: connections are refused */
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	assert_int_equal(bind(closed, (struct sockaddr *)&a, sizeof(a)), 0);
	getsockname(closed, (struct sockaddr *)&a, &al);
	fix g = {0};
	assert_int_equal(start_server(&g, ntohs(a.sin_port), 3000, 0), 0);
	int tcp = socket(AF_INET, SOCK_STREAM, 0);
	struct timeval tv = {1, 0}; /* a third of the timeout */
	setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(tcp, (struct sockaddr *)&g.srv, sizeof(g.srv)), 0);
	uint8_t q[2 + 512], ans[2 + 512];
	size_t ql = query(q + 2, 9, "d.example.org");
	q[0] = 0, q[1] = (uint8_t)ql;
	assert_int_equal(send(tcp, q, ql + 2, 0), (ssize_t)ql + 2);
	assert_int_equal(recv(tcp, ans, 2, MSG_WAITALL), 2);
	assert_int_equal(recv(tcp, ans + 2, ans[1], MSG_WAITALL), ans[1]);
	assert_int_equal(ans[5] & 15, DN_RC_SERVFAIL);
	assert_true(metric(&g, "corral_dns_forward_upstream_errors_total") >= 1);
	assert_true(metric(&g, "corral_dns_forward_timeouts_total") == 0);
	close(tcp);
	dn_server_stop(g.s);
	close(closed);
}

/* An upstream whose UDP port is closed: the ICMP port unreachable moves the query on at once, so the client
 * gets SERVFAIL long before the 3 s timeout; and the next query is sent, not lost to that error. */
static void test_udp_refused(void **state)
{
	fix *f = *state;
	struct sockaddr_in a;
	int closed = udp_socket(&a);
	close(closed); /* the port is free again: datagrams to it get ICMP port unreachable */
	fix g = {0};
	assert_int_equal(start_server(&g, ntohs(a.sin_port), 3000, 0), 0);
	uint8_t q[512], ans[512];
	for (int i = 0; i < 2; i++) {
		size_t ql = query(q, (uint16_t)(20 + i), "e.example.org");
		assert_int_equal(sendto(f->client, q, ql, 0, (struct sockaddr *)&g.srv, sizeof(g.srv)), (ssize_t)ql);
		ssize_t n = -1;
		for (int t = 0; t < 5 && n < 0; t++) /* 200 ms each: a third of the timeout */
			n = recv(f->client, ans, sizeof(ans), 0);
		assert_true(n >= 12);
		assert_int_equal(ans[0] << 8 | ans[1], 20 + i);
		assert_int_equal(ans[3] & 15, DN_RC_SERVFAIL);
	}
	assert_true(metric(&g, "corral_dns_forwarded_total") == 2);
	assert_true(metric(&g, "corral_dns_forward_timeouts_total") == 0);
	dn_server_stop(g.s);
}

/* With a cache: the upstream's answer is kept, and the same question from another client ID, in other
 * letter case, is answered without asking the upstream again. */
static void test_cache(void **state)
{
	fix *f = *state;
	struct sockaddr_in up;
	int ups = udp_socket(&up);
	fix g = {0};
	assert_int_equal(start_server(&g, ntohs(up.sin_port), 3000, 64), 0);
	uint8_t q[512], fq[512], a[512];
	size_t ql = query(q, 0x0101, "f.Example.org");
	sendto(f->client, q, ql, 0, (struct sockaddr *)&g.srv, sizeof(g.srv));
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(ups, fq, sizeof(fq), 0, (struct sockaddr *)&from, &fl);
	assert_int_equal(n, (ssize_t)ql);
	const uint8_t rr[] = {0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 192, 0, 2, 7}; /* TTL 3600 */
	memcpy(a, fq, ql);
	a[2] = 0x81, a[3] = 0x80, a[7] = 1;
	memcpy(a + ql, rr, sizeof(rr));
	sendto(ups, a, ql + sizeof(rr), 0, (struct sockaddr *)&from, fl);
	assert_int_equal(recv(f->client, a, sizeof(a), 0), (ssize_t)(ql + sizeof(rr)));

	ql = query(q, 0x0202, "F.EXAMPLE.ORG");
	sendto(f->client, q, ql, 0, (struct sockaddr *)&g.srv, sizeof(g.srv));
	assert_int_equal(recv(f->client, a, sizeof(a), 0), (ssize_t)(ql + sizeof(rr)));
	assert_int_equal(a[0] << 8 | a[1], 0x0202);
	assert_memory_equal(a + 12, q + 12, ql - 12 - 4);
	assert_memory_equal(a + ql + 12, rr + 12, 4); /* the address */
	assert_true(recv(ups, fq, sizeof(fq), 0) < 0); /* the upstream was not asked */
	assert_true(metric(&g, "corral_dns_forwarded_total") == 1);
	assert_true(metric(&g, "corral_dns_forward_cache_hits_total") == 1);
	assert_true(metric(&g, "corral_dns_forward_cache_entries") == 1);
	dn_server_stop(g.s);
	close(ups);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answer_matching),
	    cmocka_unit_test(test_fresh_ids),
	    cmocka_unit_test(test_in_flight_bound),
	    cmocka_unit_test(test_tcp_pipeline_bound),
	    cmocka_unit_test(test_tcp_refused),
	    cmocka_unit_test(test_udp_refused),
	    cmocka_unit_test(test_cache),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
