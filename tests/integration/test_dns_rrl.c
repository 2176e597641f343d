/* test_dns_rrl.c -- response rate limiting: a bounded loopback flood from one source (127.0.0.1) is held
 * near the configured rate (measured: answers counted against queries sent), while a client in
 * another /24 (127.0.1.1) querying in the middle of the flood is answered every time, and the drops
 * show in /metrics.
 *
 * The aggregator runs with --dns-rrl-rate 50 and one UDP thread. The flood is 4,000 queries over about
 * two seconds at most; every loop is bounded in count and time.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

#define RATE  50
#define FLOOD 4000

static const char *const MANIFEST =
    "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\"},"
    "\"spec\":{\"clusterIP\":\"10.96.0.20\",\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":80}]}}\n";

static int udp_socket(const char *src, int timeout_ms)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	inet_pton(AF_INET, src, &a.sin_addr);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	struct timeval tv = {0, timeout_ms * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static size_t query(uint8_t *q, uint16_t id)
{
	static const uint8_t name[] = "\003web\007default\003svc\007cluster\005local";
	uint8_t h[12] = {(uint8_t)(id >> 8), (uint8_t)id, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q, h, 12);
	memcpy(q + 12, name, sizeof(name));
	size_t n = 12 + sizeof(name);
	q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1;
	return n;
}

static void send_q(int fd, int port, uint16_t id)
{
	uint8_t q[128];
	struct sockaddr_in to = {
	    .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	size_t n = query(q, id);
	sendto(fd, q, n, 0, (struct sockaddr *)&to, sizeof(to));
}

/* Reads every answer waiting on fd; counts full ones and truncated (slipped) ones. */
static void drain(int fd, int *full, int *tc)
{
	uint8_t a[1500];
	ssize_t r;
	while ((r = recv(fd, a, sizeof(a), MSG_DONTWAIT)) >= 12)
		(a[2] & 0x02) ? (*tc)++ : (*full)++;
}

static void test_flood_is_limited_others_answered(void **state)
{
	(void)state;
	char dir[256], token[300], data[300], url[64], listen[64], manifest[300], rate[16];
	itest_mkdtemp(dir, sizeof(dir));
	snprintf(token, sizeof(token), "%s/token", dir);
	itest_write_file(token, "rrl\n");
	snprintf(manifest, sizeof(manifest), "%s/svc.json", dir);
	itest_write_file(manifest, MANIFEST);
	snprintf(data, sizeof(data), "%s/data", dir);
	int port = itest_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(rate, sizeof(rate), "%d", RATE);
	const char *extra[] = {"--dns-listen",   listen, "--services", manifest, "--dns-threads", "1",
	                       "--dns-rrl-rate", rate,   NULL};
	itest_proc agg;
	assert_int_equal(itest_aggregator_start(&agg, dir, data, token, extra, url, sizeof(url)), 0);
	int flood = udp_socket("127.0.0.1", 50), other = udp_socket("127.0.1.1", 500);
	int full = 0, tc = 0, other_sent = 0, other_ok = 0;
	for (int i = 0; i < 50 && !full; i++) { /* the zone is loaded (bounded wait) */
		send_q(flood, port, 1);
		itest_sleep_ms(100);
		drain(flood, &full, &tc);
	}
	assert_int_equal(full, 1);
	itest_sleep_ms(1100); /* the bucket refills */
	full = tc = 0;
	int64_t t0 = itest_now_ms();
	int sent = 0;
	for (; sent < FLOOD && itest_now_ms() - t0 < 2000; sent++) {
		send_q(flood, port, (uint16_t)sent);
		if (sent % 8 == 0) {
			drain(flood, &full, &tc);
			usleep(2000); /* ~4,000 qps: within what the loopback and one thread absorb */
		}
		if (sent % 500 == 250) { /* another /24 in the middle of the flood */
			uint8_t a[1500];
			other_sent++;
			ssize_t r = -1;
			for (int try = 0; try < 2 && r < 12; try++) { /* a datagram lost to a full queue is resent once */
				send_q(other, port, 7);
				r = recv(other, a, sizeof(a), 0);
			}
			other_ok += r >= 12 && !(a[2] & 0x02) && (a[3] & 15) == 0;
		}
	}
	int64_t elapsed = itest_now_ms() - t0;
	itest_sleep_ms(200);
	drain(flood, &full, &tc);
	double allowed = RATE * (1.0 + (double)elapsed / 1000.0); /* a full bucket plus the refill */
	fprintf(stderr, "rrl: sent %d in %lld ms, answered %d, truncated (slip) %d, allowed ~%.0f; other /24 %d/%d\n",
	        sent, (long long)elapsed, full, tc, allowed, other_ok, other_sent);
	assert_true(sent >= 1000);
	assert_true(full > 0);
	assert_true(full <= allowed * 1.2 + 10);
	assert_true(tc > 0 && tc < sent / 2 + 10); /* slip 2: about half of the limited ones */
	assert_true(full + tc < sent);             /* the rest was dropped */
	assert_int_equal(other_ok, other_sent);
	cm_buf m;
	cm_buf_init(&m);
	char murl[128];
	snprintf(murl, sizeof(murl), "%s/metrics", url);
	assert_int_equal(itest_http("GET", murl, NULL, NULL, 0, &m), 200);
	cm_buf_append(&m, "", 1);
	const char *d = strstr((char *)m.data, "\ncorral_dns_rrl_dropped_total ");
	assert_non_null(d);
	assert_true(strtoull(d + 30, NULL, 10) > 0);
	cm_buf_close(&m);
	close(flood);
	close(other);
	itest_stop(&agg, SIGTERM, 10000);
	itest_rmtree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_flood_is_limited_others_answered)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
