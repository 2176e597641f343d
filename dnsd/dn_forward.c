/* dn_forward.c -- forwarding queries for names outside corral's zones to --dns-upstream resolvers.
 *
 * With upstreams configured, dnsd works like a node-local resolver: what dn_answer marks as outside our
 * zones is sent on to an upstream instead of being REFUSED. A serving thread hands the query over with
 * dn__fwd_submit (the forward path only: it takes the forwarder's mutex and does one non-blocking send;
 * the path for our own zones never comes here). The server's TCP thread runs dn__fwd_run whenever the
 * forwarder's epoll set is readable and at least every 100 ms: it reads upstream answers, moves TCP
 * retries along and expires timeouts, sending each result to its client (UDP: sendto on the socket the
 * query came in by; TCP: the reply callback run passes). Every answer leaves from dn__fwd_run, never from
 * dn__fwd_submit. Nothing here blocks: every socket is non-blocking.
 *
 * Upstream traffic: per upstream FWD_SOCKS connected UDP sockets, each bound by the kernel to its own
 * random ephemeral port (a connected socket only receives from its upstream's address and port); every
 * attempt gets a fresh random query ID, unique among the queries in flight, and a random socket. A UDP
 * client's query goes out over UDP; a TCP client's, or one whose UDP answer came back truncated (TC), over
 * a TCP connection of its own (u16 length + message, RFC 1035 4.2.2). A query tries the upstreams in
 * turn, starting at a rotating one, each for an equal share of the timeout (default 2 s; a refused TCP
 * connection, or an ICMP port unreachable on a UDP socket, moves on at once); after the last, the client gets SERVFAIL.
 * At most FWD_SLOTS queries are in flight; past that dn__fwd_submit fails and the caller answers SERVFAIL.
 *
 * Upstream answers are bytes from outside: one is accepted only when its ID is that of a query in
 * flight which left by the same socket (or TCP connection), QR is set, QDCOUNT is 1 and its question
 * (name compared case-insensitively, type, class) is that query's; anything else is dropped and counted
 * (unmatched). An accepted answer gets the client's ID back and the client's question name bytes (the
 * question name at offset 12 is never compressed: a pointer must point backwards, and the match checked
 * its bytes), the rest passes through unchanged. One larger than a UDP client's limit (512 without EDNS0,
 * else its size capped by the server's) goes out as the question alone with TC, so the client retries
 * over TCP. The client's query itself is forwarded as it came (its ID aside); one whose question is not
 * stored uncompressed at offset 12, or longer than FWD_QMAX, is not forwarded (SERVFAIL).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dn_int.h"

#define FWD_SLOTS 1024
#define FWD_QMAX  1232
#define FWD_SOCKS 4
#define TAG_UDP   (1ull << 32)
#define TAG_TCP   (2ull << 32)

enum { P_FREE, P_UDP, P_CONNECT, P_READ, P_FAILED };

typedef struct pending {
	uint8_t state, up, sock, tcp;
	uint16_t id, client_id, qlen, qname_len;
	uint16_t gen;   /* counts TCP attempts: an event tagged with an older one is stale */
	uint8_t cflags; /* the query's DN__FC_* (its cache key) */
	int fd;         /* the TCP connection of this attempt, or -1 */
	int attempts, first_up;
	int64_t attempt_end;
	dn__fwd_client client;
	size_t limit;  /* the client's answer size limit */
	uint8_t *resp; /* TCP: u16 length + answer, read so far */
	size_t have;
	uint8_t q[FWD_QMAX]; /* the client's query, the ID rewritten per attempt */
} pending;

struct dn__fwd {
	pthread_mutex_t mu;
	int ep, nup;
	unsigned next_up; /* the first upstream of the next query, round robin */
	size_t max_udp;
	int64_t share_ns; /* each upstream's share of the timeout */
	struct sockaddr_storage up[DN__FWD_MAXUP];
	int udp[DN__FWD_MAXUP][FWD_SOCKS];
	dn__fwd_reply_fn reply;
	void *reply_ctx;
	uint64_t rng;
	uint64_t forwarded, answered, errors, timeouts, full, unmatched, tcp_retries, cache_hits;
	dn__fcache *cache;     /* NULL = none */
	uint16_t idmap[65536]; /* query ID -> slot + 1 */
	uint16_t freel[FWD_SLOTS];
	size_t nfree;
	pending slots[FWD_SLOTS];
	uint8_t buf[2 + 65535];
};

static uint32_t rnd(dn__fwd *f)
{
	f->rng ^= f->rng << 13, f->rng ^= f->rng >> 7, f->rng ^= f->rng << 17;
	return (uint32_t)(f->rng >> 16);
}

static socklen_t sa_len(const struct sockaddr_storage *a)
{
	return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* ---- sending results -------------------------------------------------------------------------------- */

static void reply(dn__fwd *f, pending *p, uint8_t *a, size_t n)
{
	dn__put16(a, p->client_id);
	if (p->client.udp_fd < 0) {
		f->reply(f->reply_ctx, p->client.conn, a, n);
		return;
	}
	if (n > p->limit)
		n = dn__truncate(a, n);
	sendto(p->client.udp_fd, a, n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&p->client.addr,
	       p->client.alen);
}

static void unmap(dn__fwd *f, pending *p)
{
	if (f->idmap[p->id] == p - f->slots + 1)
		f->idmap[p->id] = 0;
}

static void release(dn__fwd *f, pending *p)
{
	if (p->fd >= 0)
		close(p->fd); /* also leaves the epoll set */
	unmap(f, p);
	free(p->resp);
	p->resp = NULL, p->fd = -1, p->state = P_FREE;
	f->freel[f->nfree++] = (uint16_t)(p - f->slots);
}

static void servfail(dn__fwd *f, pending *p)
{
	size_t n = 12u + p->qname_len + 4u;
	memcpy(f->buf, p->q, n);
	f->buf[2] = (uint8_t)(0x80 | (p->q[2] & 0x79));           /* QR; keep OPCODE, RD */
	f->buf[3] = (uint8_t)((p->q[3] & 0x10) | DN_RC_SERVFAIL); /* keep CD */
	memset(f->buf + 4, 0, 8);
	f->buf[5] = 1;
	reply(f, p, f->buf, n);
	release(f, p);
}

/* ---- attempts --------------------------------------------------------------------------------------- */

/* TCP events carry the slot and its attempt's generation, so one for an earlier attempt is ignored even
 * when the new connection got the same descriptor. */
static uint64_t tcp_tag(const pending *p, int slot)
{
	return TAG_TCP | (uint64_t)p->gen << 16 | (uint64_t)slot;
}

static int tcp_start(dn__fwd *f, pending *p, int slot)
{
	const struct sockaddr_storage *a = &f->up[p->up];
	p->fd = socket(a->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	p->state = P_CONNECT;
	p->have = 0;
	p->gen++;
	if (p->fd < 0)
		return CM_EIO;
	struct epoll_event e = {.events = EPOLLOUT, .data.u64 = tcp_tag(p, slot)};
	if ((connect(p->fd, (const struct sockaddr *)a, sa_len(a)) && errno != EINPROGRESS) ||
	    epoll_ctl(f->ep, EPOLL_CTL_ADD, p->fd, &e))
		return CM_EIO;
	return CM_OK;
}

static void next_attempt(dn__fwd *f, pending *p, int64_t now);

/* Every query but `except` that left by this socket goes on to its next upstream: the socket's upstream
 * port is closed (an ICMP port unreachable came back). */
static void udp_refused(dn__fwd *f, int up, int sock, const pending *except, int64_t now)
{
	for (int i = 0; i < FWD_SLOTS; i++) {
		pending *p = &f->slots[i];
		if (p != except && p->state == P_UDP && p->up == up && p->sock == sock)
			next_attempt(f, p, now);
	}
}

/* Sends the query to the next upstream with a fresh ID; CM_EIO when a TCP attempt failed at once. */
static int attempt(dn__fwd *f, pending *p, int64_t now)
{
	int slot = (int)(p - f->slots);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	unmap(f, p);
	do
		p->id = (uint16_t)rnd(f);
	while (f->idmap[p->id]);
	f->idmap[p->id] = (uint16_t)(slot + 1);
	dn__put16(p->q, p->id);
	p->up = (uint8_t)((p->first_up + p->attempts++) % f->nup);
	p->attempt_end = now + f->share_ns;
	if (p->tcp)
		return tcp_start(f, p, slot);
	p->state = P_UDP;
	p->sock = (uint8_t)(rnd(f) % FWD_SOCKS);
	int fd = f->udp[p->up][p->sock];
	ssize_t r = send(fd, p->q, p->qlen, MSG_DONTWAIT);
	if (r < 0 && errno == ECONNREFUSED) { /* an earlier query's ICMP error, reported once */
		udp_refused(f, p->up, p->sock, p, now);
		r = send(fd, p->q, p->qlen, MSG_DONTWAIT);
	}
	if (r < 0)
		f->errors++; /* a full buffer, or refused again: the timeout or the ICMP error moves it on */
	return CM_OK;
}

/* The current attempt failed or ran out of time: the next upstream, or SERVFAIL after the last. */
static void next_attempt(dn__fwd *f, pending *p, int64_t now)
{
	while (p->attempts < f->nup)
		if (!attempt(f, p, now))
			return;
		else
			f->errors++;
	servfail(f, p);
}

int dn__fwd_submit(dn__fwd *f, const uint8_t *q, size_t len, const dn__fwd_client *c, uint8_t *out, size_t cap,
                   size_t *hit)
{
	dn_query pq;
	*hit = 0;
	if (len > FWD_QMAX || dn_parse_query(q, len, &pq) != DN_RC_NOERROR || memcmp(q + 12, pq.qname, pq.qname_len))
		return CM_EPROTO;
	uint8_t cflags = (uint8_t)((pq.flags & 0x0100 ? DN__FC_RD : 0) | (pq.flags & 0x0010 ? DN__FC_CD : 0) |
	                           (pq.has_edns ? DN__FC_EDNS : 0) | (pq.edns_do ? DN__FC_DO : 0));
	size_t cap_udp = f->max_udp < pq.edns_size ? f->max_udp : pq.edns_size;
	size_t limit = c->udp_fd < 0 ? 65535 : pq.has_edns ? cap_udp : DN_UDP_MIN;
	pthread_mutex_lock(&f->mu);
	if (f->cache && (*hit = dn__fcache_get(f->cache, q, pq.qname_len, cflags, out, cap, cm_mono_ns()))) {
		f->cache_hits++;
		pthread_mutex_unlock(&f->mu);
		if (*hit > limit)
			*hit = dn__truncate(out, *hit);
		return CM_OK;
	}
	if (!f->nfree) {
		f->full++;
		pthread_mutex_unlock(&f->mu);
		return CM_AGAIN;
	}
	pending *p = &f->slots[f->freel[--f->nfree]];
	*p = (pending){.fd = -1,
	               .gen = p->gen,
	               .client = *c,
	               .tcp = c->udp_fd < 0,
	               .client_id = pq.id,
	               .qlen = (uint16_t)len,
	               .qname_len = pq.qname_len,
	               .first_up = (int)(f->next_up++ % (unsigned)f->nup),
	               .cflags = cflags,
	               .limit = limit};
	memcpy(p->q, q, len);
	f->forwarded++;
	int64_t now = cm_mono_ns();
	if (attempt(f, p, now)) { /* answers go out from dn__fwd_run only: it moves on at its next turn */
		f->errors++;
		p->state = P_FAILED;
	}
	pthread_mutex_unlock(&f->mu);
	return CM_OK;
}

/* ---- answers ---------------------------------------------------------------------------------------- */

static int same_name(const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (dn__lc(a[i]) != dn__lc(b[i]))
			return 0;
	return 1;
}

/* The query in flight an upstream answer belongs to, or NULL. */
static pending *match(dn__fwd *f, const uint8_t *a, size_t n)
{
	if (n < 12 || !(a[2] & 0x80) || dn__get16(a + 4) != 1)
		return NULL;
	uint16_t s = f->idmap[dn__get16(a)];
	if (!s)
		return NULL;
	pending *p = &f->slots[s - 1];
	size_t ql = p->qname_len;
	if (n < 12 + ql + 4 || !same_name(a + 12, p->q + 12, ql) || memcmp(a + 12 + ql, p->q + 12 + ql, 4))
		return NULL;
	return p;
}

static void accept_answer(dn__fwd *f, pending *p, uint8_t *a, size_t n, int64_t now)
{
	if (p->state == P_UDP && (a[2] & 0x02)) { /* truncated: again over TCP, same upstream */
		f->tcp_retries++;
		p->tcp = 1;
		p->attempts--;
		next_attempt(f, p, now);
		return;
	}
	memcpy(a + 12, p->q + 12, p->qname_len); /* the client's case */
	f->answered++;
	if (f->cache)
		dn__fcache_put(f->cache, p->q, p->qname_len, p->cflags, a, n, now);
	reply(f, p, a, n);
	release(f, p);
}

static void udp_readable(dn__fwd *f, int up, int sock, int64_t now)
{
	for (;;) {
		ssize_t r = recv(f->udp[up][sock], f->buf, sizeof(f->buf), MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (r < 0) {
			f->errors++;
			if (errno == ECONNREFUSED) /* ICMP: nobody listens at that upstream's port */
				udp_refused(f, up, sock, NULL, now);
			continue;
		}
		pending *p = match(f, f->buf, (size_t)r);
		if (!p || p->state != P_UDP || p->up != up || p->sock != sock)
			f->unmatched++;
		else
			accept_answer(f, p, f->buf, (size_t)r, now);
	}
}

/* Connected: send the length-prefixed query in one go (it is small); then read. */
static int tcp_send(dn__fwd *f, pending *p)
{
	int err = 0;
	socklen_t el = sizeof(err);
	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &el) || err)
		return CM_EIO;
	dn__put16(f->buf, p->qlen);
	memcpy(f->buf + 2, p->q, p->qlen);
	if (send(p->fd, f->buf, p->qlen + 2u, MSG_NOSIGNAL) != p->qlen + 2)
		return CM_EIO;
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = tcp_tag(p, (int)(p - f->slots))};
	p->state = P_READ;
	return epoll_ctl(f->ep, EPOLL_CTL_MOD, p->fd, &e) ? CM_EIO : CM_OK;
}

/* Reads what has arrived; 1 when the whole answer is in, 0 for more to come, CM_EIO when it failed. */
static int tcp_read(pending *p)
{
	if (!p->resp && !(p->resp = malloc(2 + 65535)))
		return CM_EIO;
	for (;;) {
		ssize_t r = recv(p->fd, p->resp + p->have, 2 + 65535 - p->have, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (r <= 0)
			return CM_EIO;
		p->have += (size_t)r;
		if (p->have >= 2 && p->have >= 2u + dn__get16(p->resp))
			return 1;
	}
}

static void tcp_event(dn__fwd *f, uint64_t tag, uint32_t ev, int64_t now)
{
	int slot = (int)(tag & 0xFFFF);
	pending *p = &f->slots[slot];
	int rc = CM_EIO;
	if (p->fd < 0 || p->state == P_FAILED || tcp_tag(p, slot) != tag)
		return;
	if (p->state == P_CONNECT)
		rc = (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ? tcp_send(f, p) : CM_OK;
	else if (p->state == P_READ)
		rc = tcp_read(p);
	if (rc < 0) {
		f->errors++;
		next_attempt(f, p, now);
	} else if (rc == 1) {
		size_t n = dn__get16(p->resp);
		pending *m = match(f, p->resp + 2, n);
		if (m == p)
			accept_answer(f, p, p->resp + 2, n, now);
		else
			f->unmatched++, next_attempt(f, p, now);
	}
}

void dn__fwd_run(dn__fwd *f, dn__fwd_reply_fn reply_fn, void *ctx)
{
	struct epoll_event ev[64];
	pthread_mutex_lock(&f->mu);
	f->reply = reply_fn, f->reply_ctx = ctx;
	int64_t now = cm_mono_ns();
	int n = epoll_wait(f->ep, ev, 64, 0);
	for (int i = 0; i < n; i++) {
		uint64_t d = ev[i].data.u64;
		if (d & TAG_UDP)
			udp_readable(f, (int)(d & 0xFFFF) / FWD_SOCKS, (int)(d & 0xFFFF) % FWD_SOCKS, now);
		else
			tcp_event(f, d, ev[i].events, now);
	}
	for (int i = 0; i < FWD_SLOTS; i++) {
		pending *p = &f->slots[i];
		if (p->state == P_FAILED || (p->state != P_FREE && now >= p->attempt_end)) {
			if (p->state != P_FAILED && p->attempts >= f->nup)
				f->timeouts++;
			next_attempt(f, p, now);
		}
	}
	pthread_mutex_unlock(&f->mu);
}

/* ---- setup ------------------------------------------------------------------------------------------ */

static int add_upstreams(dn__fwd *f, const char *const *ups, size_t n, cm_err *err)
{
	for (size_t i = 0; i < n; i++) {
		char one[128];
		for (const char *s = ups[i]; *s;) {
			size_t l = strcspn(s, ",");
			if (l >= sizeof(one) || f->nup == DN__FWD_MAXUP)
				return cm_errf(err, CM_EINVAL, "--dns-upstream %s: too long or too many", ups[i]);
			memcpy(one, s, l), one[l] = 0;
			s += l + (s[l] == ',');
			int rc = cm_parse_listen("dns-upstream", one, &f->up[f->nup], err);
			if (rc)
				return rc;
			f->nup++;
		}
	}
	return f->nup ? CM_OK : cm_errf(err, CM_EINVAL, "--dns-upstream: no address");
}

static int open_udp(dn__fwd *f, int up, int sock, cm_err *err)
{
	const struct sockaddr_storage *a = &f->up[up];
	int fd = socket(a->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	f->udp[up][sock] = fd;
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = TAG_UDP | (uint64_t)(up * FWD_SOCKS + sock)};
	if (fd < 0 || connect(fd, (const struct sockaddr *)a, sa_len(a)) || epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &e))
		return cm_errf(err, CM_EIO, "--dns-upstream: cannot open a socket to upstream %d: %s", up + 1,
		               strerror(errno));
	return CM_OK;
}

int dn__fwd_create(const char *const *ups, size_t n, int timeout_ms, size_t max_udp, size_t cache_entries,
                   dn__fwd **out, cm_err *err)
{
	dn__fwd *f = calloc(1, sizeof(*f));
	if (!f)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	pthread_mutex_init(&f->mu, NULL);
	memset(f->udp, -1, sizeof(f->udp));
	f->max_udp = max_udp;
	for (int i = FWD_SLOTS - 1; i >= 0; i--)
		f->slots[i].fd = -1, f->freel[f->nfree++] = (uint16_t)i;
	if (getrandom(&f->rng, sizeof(f->rng), 0) != sizeof(f->rng) || !f->rng)
		f->rng = (uint64_t)cm_mono_ns() | 1;
	int rc = add_upstreams(f, ups, n, err);
	f->share_ns = (int64_t)(timeout_ms > 0 ? timeout_ms : 2000) * 1000000 / (f->nup ? f->nup : 1);
	f->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!rc && f->ep < 0)
		rc = cm_errf(err, CM_EIO, "epoll: %s", strerror(errno));
	if (!rc && cache_entries && !(f->cache = dn__fcache_new(cache_entries)))
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	for (int u = 0; u < f->nup && !rc; u++)
		for (int s = 0; s < FWD_SOCKS && !rc; s++)
			rc = open_udp(f, u, s, err);
	if (rc)
		goto fail;
	*out = f;
	return CM_OK;
fail:
	dn__fwd_destroy(f);
	return rc;
}

void dn__fwd_destroy(dn__fwd *f)
{
	if (!f)
		return;
	for (int i = 0; i < FWD_SLOTS; i++) {
		if (f->slots[i].fd >= 0)
			close(f->slots[i].fd);
		free(f->slots[i].resp);
	}
	for (int u = 0; u < DN__FWD_MAXUP; u++)
		for (int s = 0; s < FWD_SOCKS; s++)
			if (f->udp[u][s] >= 0)
				close(f->udp[u][s]);
	if (f->ep >= 0)
		close(f->ep);
	dn__fcache_free(f->cache);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

int dn__fwd_fd(const dn__fwd *f)
{
	return f->ep;
}

static int counter(cm_buf *b, const char *name, const char *help, uint64_t v)
{
	return cm_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
	                     (unsigned long long)v);
}

int dn__fwd_metrics(dn__fwd *f, cm_buf *b)
{
	if (!f)
		return CM_OK;
	pthread_mutex_lock(&f->mu);
	uint64_t v[] = {f->forwarded,   f->answered,   f->errors,
	                f->timeouts,    f->full,       f->unmatched,
	                f->tcp_retries, f->cache_hits, dn__fcache_len(f->cache)};
	pthread_mutex_unlock(&f->mu);
	int rc = counter(b, "corral_dns_forwarded_total", "Queries for names outside the zones sent upstream.", v[0]);
	rc = rc ? rc : counter(b, "corral_dns_forward_answers_total", "Upstream answers passed to clients.", v[1]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_upstream_errors_total",
	                  "Upstream socket errors and failed TCP attempts.", v[2]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_timeouts_total",
	                  "Forwarded queries answered SERVFAIL after the timeout.", v[3]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_full_total", "Queries answered SERVFAIL: too many in flight.", v[4]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_unmatched_total",
	                  "Upstream answers dropped: no query in flight with that ID and question.", v[5]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_tcp_retries_total", "Truncated upstream answers retried over TCP.",
	                  v[6]);
	rc = rc ? rc
	        : counter(b, "corral_dns_forward_cache_hits_total", "Queries answered from the forward cache.", v[7]);
	return rc ? rc
	          : cm_buf_printf(
	                b,
	                "# HELP corral_dns_forward_cache_entries Upstream answers in the forward cache.\n"
	                "# TYPE corral_dns_forward_cache_entries gauge\ncorral_dns_forward_cache_entries %llu\n",
	                (unsigned long long)v[8]);
}
