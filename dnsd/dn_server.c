/* dn_server.c -- the DNS server: UDP threads on SO_REUSEPORT sockets, one TCP thread, snapshot swap, metrics.
 *
 * Threads: one UDP thread per CPU this process may run on (each with its own SO_REUSEPORT socket, so the
 * kernel spreads clients and no socket is shared), reading and writing in batches with recvmmsg and
 * sendmmsg; one TCP thread (epoll, non-blocking sockets) serving pipelined length-prefixed queries with
 * an idle timeout. The zone is an atomic pointer: a serving thread loads it once per batch, and reports
 * a quiescent state (the current epoch, stored in its `seen`) every time round its loop, when it holds
 * no zone. dn_server_publish swaps the pointer, bumps the epoch and frees a retired zone once every
 * thread has seen an epoch at or past the one it was retired at (QSBR; threads wake at least every
 * 100 ms, so a retired zone lives at most about that long after the swap). The query path takes no lock
 * and allocates nothing; counters are per thread (single writer, relaxed atomics) and summed when read.
 * With upstreams configured, a query dn_answer finds outside our zones is handed to the forwarder
 * (dn_forward.c) instead of being answered REFUSED; the TCP thread also runs the forwarder's event loop.
 * A TCP connection with TCP_FWD queries at the forwarder is not read until one of them is answered, so
 * one pipelining client can take neither the forwarder's slots nor our memory.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dn_int.h"

#define BATCH   32
#define UDP_BUF 4096
#define TCP_IN  4096
#define TCP_FWD 16 /* forwarded queries in flight per TCP connection; past it the connection is not read */
#define NLAT    12

static const char *const qtype_names[] = {"A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS", "ANY", "other"};
static const uint16_t qtype_codes[] = {DN_T_A,   DN_T_AAAA, DN_T_SRV, DN_T_PTR, DN_T_CNAME,
                                       DN_T_TXT, DN_T_SOA,  DN_T_NS,  DN_T_ANY};
#define NQT CM_ARRAY_LEN(qtype_names)
static const char *const rcode_names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"};
#define NRC CM_ARRAY_LEN(rcode_names)
/* latency bucket upper bounds in microseconds */
static const double lat_le_us[NLAT] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 50000};

typedef atomic_uint_fast64_t ctr;

typedef struct counters {
	ctr qtype[NQT], rcode[NRC], lat[NLAT + 1], lat_sum_ns;
	ctr dropped, truncated, rrl_dropped, rrl_slipped, tcp_queries, tcp_conns;
} counters;

typedef struct worker {
	dn_server *s;
	pthread_t thread;
	int fd, started;
	atomic_uint_fast64_t seen;
	counters c;
	dn__rrl *rrl;
} worker;

typedef struct retired {
	dn_zone *z;
	uint64_t epoch;
	struct retired *next;
} retired;

struct dn_server {
	dn_server_config cfg;
	struct sockaddr_storage addr;
	int port;
	_Atomic(dn_zone *) zone;
	atomic_uint_fast64_t epoch;
	atomic_int stop;
	_Atomic int64_t published_ms;
	atomic_uint_fast64_t generation;
	retired *retired;
	dn__fwd *fwd; /* NULL without upstreams */
	worker *w;    /* nudp UDP workers, then the TCP one */
	int nudp;
};

static void bump(ctr *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}
static void addc(ctr *c, uint64_t v)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void count(worker *w, const dn_answer_info *ai, int64_t ns)
{
	size_t t = NQT - 1, r = ai->rcode < NRC - 1 ? ai->rcode : NRC - 1, b = 0;
	for (size_t i = 0; i < NQT - 1; i++)
		if (qtype_codes[i] == ai->qtype)
			t = i;
	bump(&w->c.qtype[t]);
	bump(&w->c.rcode[r]);
	while (b < NLAT && (double)ns / 1000.0 > lat_le_us[b])
		b++;
	bump(&w->c.lat[b]);
	addc(&w->c.lat_sum_ns, (uint64_t)(ns > 0 ? ns : 0));
	if (ai->truncated)
		bump(&w->c.truncated);
}

static void quiescent(worker *w)
{
	atomic_store(&w->seen, atomic_load(&w->s->epoch));
}

/* Hands a query dn_answer marked outside to the forwarder. Returns 0 when the forwarder took it (the
 * answer goes out later), else the length of the answer in ans (capacity cap) the caller sends now: the
 * forwarder's cached one, or dn_answer's (n bytes: a reverse name's NXDOMAIN as it is, REFUSED turned
 * into SERVFAIL). */
static size_t forward(dn__fwd *f, const uint8_t *q, size_t len, const dn__fwd_client *c, uint8_t *ans, size_t cap,
                      size_t n, dn_answer_info *ai)
{
	size_t hit;
	if (!dn__fwd_submit(f, q, len, c, ans, cap, &hit)) {
		if (hit)
			ai->rcode = ans[3] & 15, ai->truncated = (ans[2] & 0x02) != 0;
		return hit;
	}
	if (ai->rcode == DN_RC_REFUSED) {
		ans[3] = (uint8_t)((ans[3] & 0xF0) | DN_RC_SERVFAIL);
		ai->rcode = DN_RC_SERVFAIL;
	}
	return n;
}

/* ---- UDP -------------------------------------------------------------------------------------------- */

typedef struct udp_bufs {
	struct mmsghdr in[BATCH], out[BATCH];
	struct iovec iin[BATCH], iout[BATCH];
	struct sockaddr_storage from[BATCH];
	uint8_t q[BATCH][UDP_BUF], a[BATCH][UDP_BUF];
} udp_bufs;

static void udp_prepare(udp_bufs *u)
{
	for (int i = 0; i < BATCH; i++) {
		u->iin[i] = (struct iovec){u->q[i], UDP_BUF};
		u->in[i].msg_hdr = (struct msghdr){
		    .msg_name = &u->from[i], .msg_namelen = sizeof(u->from[i]), .msg_iov = &u->iin[i], .msg_iovlen = 1};
	}
}

/* Answers one received datagram into slot m of the out vector; returns 1 if there is something to send. */
static int udp_one(worker *w, udp_bufs *u, const dn_zone *z, int i, int m, int64_t t0)
{
	dn_answer_info ai;
	size_t n = dn_answer(z, u->q[i], u->in[i].msg_len, u->a[m], UDP_BUF, w->s->cfg.max_udp, 0, &ai);
	int64_t t1 = mono_ns();
	if (!n) {
		bump(&w->c.dropped);
		return 0;
	}
	if (ai.outside && w->s->fwd) {
		dn__fwd_client c = {.udp_fd = w->fd, .alen = u->in[i].msg_hdr.msg_namelen, .addr = u->from[i]};
		if (!(n = forward(w->s->fwd, u->q[i], u->in[i].msg_len, &c, u->a[m], UDP_BUF, n, &ai)))
			return 0;
	}
	int v = dn__rrl_check(w->rrl, (struct sockaddr *)&u->from[i], t1);
	if (v == DN__RRL_DROP) {
		bump(&w->c.rrl_dropped);
		return 0;
	}
	if (v == DN__RRL_SLIP) {
		bump(&w->c.rrl_slipped);
		n = dn__truncate(u->a[m], n);
	}
	count(w, &ai, t1 - t0);
	u->iout[m] = (struct iovec){u->a[m], n};
	u->out[m].msg_hdr = (struct msghdr){.msg_name = &u->from[i],
	                                    .msg_namelen = u->in[i].msg_hdr.msg_namelen,
	                                    .msg_iov = &u->iout[m],
	                                    .msg_iovlen = 1};
	return 1;
}

static void *udp_main(void *arg)
{
	worker *w = arg;
	udp_bufs *u = malloc(sizeof(*u));
	if (!u)
		return NULL;
	udp_prepare(u);
	while (!atomic_load(&w->s->stop)) {
		quiescent(w);
		for (int i = 0; i < BATCH; i++)
			u->in[i].msg_hdr.msg_namelen = sizeof(u->from[i]);
		int n = recvmmsg(w->fd, u->in, BATCH, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;
		int64_t t0 = mono_ns();
		const dn_zone *z = atomic_load(&w->s->zone);
		int m = 0;
		for (int i = 0; i < n; i++)
			m += udp_one(w, u, z, i, m, t0);
		for (int sent = 0; sent < m;) {
			int r = sendmmsg(w->fd, u->out + sent, (unsigned)(m - sent), 0);
			if (r <= 0)
				break; /* a full socket buffer drops the rest, as a lost datagram would */
			sent += r;
		}
	}
	free(u);
	return NULL;
}

/* ---- TCP -------------------------------------------------------------------------------------------- */

typedef struct conn {
	int fd;
	uint64_t id; /* forwarded answers find their connection by it */
	int fwd;     /* its queries the forwarder holds */
	int resume;  /* fwd fell below TCP_FWD: serve what is buffered after the forwarder's turn */
	int64_t last_ns;
	size_t inlen;
	uint8_t in[2 + TCP_IN];
	uint8_t *out; /* pending answer bytes when the socket was full */
	size_t outlen, outoff;
} conn;

typedef struct tcp_state {
	int ep, lfd, nconns;
	uint64_t next_id;
	conn **conns;
	uint8_t ans[2 + 65535];
} tcp_state;

static void conn_close(tcp_state *t, int idx)
{
	conn *c = t->conns[idx];
	close(c->fd);
	free(c->out);
	free(c);
	t->conns[idx] = t->conns[--t->nconns];
}

static int conn_flush(conn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t r = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
		if (r < 0)
			return errno == EAGAIN ? 0 : -1;
		c->outoff += (size_t)r;
	}
	free(c->out);
	c->out = NULL, c->outlen = c->outoff = 0;
	return 0;
}

/* Sends or queues (behind what is pending) an answer. */
static int conn_send(conn *c, const uint8_t *p, size_t n)
{
	size_t done = 0;
	if (!c->out) {
		ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno != EAGAIN)
			return -1;
		done = r < 0 ? 0 : (size_t)r;
		if (done == n)
			return 0;
	}
	uint8_t *o = realloc(c->out, c->outlen + n - done);
	if (!o)
		return -1;
	memcpy(o + c->outlen, p + done, n - done);
	c->out = o, c->outlen += n - done;
	return 0;
}

/* Answers every complete query in c->in, stopping when output backs up. -1 closes the connection. */
static int conn_serve(worker *w, tcp_state *t, conn *c)
{
	size_t off = 0;
	while (!c->out && c->fwd < TCP_FWD && c->inlen - off >= 2) {
		size_t qlen = (size_t)c->in[off] << 8 | c->in[off + 1];
		if (qlen > TCP_IN)
			return -1;
		if (c->inlen - off < 2 + qlen)
			break;
		int64_t t0 = mono_ns();
		dn_answer_info ai;
		const uint8_t *q = c->in + off + 2;
		size_t n = dn_answer(atomic_load(&w->s->zone), q, qlen, t->ans + 2, 65535, 0, 1, &ai);
		off += 2 + qlen;
		if (!n) {
			bump(&w->c.dropped);
			continue;
		}
		dn__fwd_client fc = {.udp_fd = -1, .conn = c->id};
		if (ai.outside && w->s->fwd && !(n = forward(w->s->fwd, q, qlen, &fc, t->ans + 2, 65535, n, &ai))) {
			c->fwd++;
			continue;
		}
		t->ans[0] = (uint8_t)(n >> 8), t->ans[1] = (uint8_t)n;
		count(w, &ai, mono_ns() - t0);
		bump(&w->c.tcp_queries);
		if (conn_send(c, t->ans, n + 2))
			return -1;
	}
	memmove(c->in, c->in + off, c->inlen - off);
	c->inlen -= off;
	return 0;
}

static int conn_event(worker *w, tcp_state *t, conn *c, uint32_t ev)
{
	c->last_ns = mono_ns();
	if ((ev & EPOLLOUT) && conn_flush(c))
		return -1;
	if (c->fwd >= TCP_FWD && (ev & (EPOLLHUP | EPOLLERR)))
		return -1; /* not being read, and the answers could not go out */
	while (!c->out && c->fwd < TCP_FWD && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		ssize_t r = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
		if (r == 0 || (r < 0 && errno != EAGAIN))
			return -1;
		if (r < 0)
			break;
		c->inlen += (size_t)r;
		if (conn_serve(w, t, c))
			return -1;
	}
	if (!c->out && conn_serve(w, t, c))
		return -1;
	/* full output or the forwarder holding TCP_FWD of its queries: not read until that changes */
	struct epoll_event e = {.events = c->out ? EPOLLOUT : c->fwd < TCP_FWD ? EPOLLIN : 0, .data.ptr = c};
	return epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void tcp_accept(worker *w, tcp_state *t)
{
	for (;;) {
		int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		conn *c = t->nconns < w->s->cfg.tcp_max_conns ? calloc(1, sizeof(*c)) : NULL;
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
		if (!c || epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &e)) {
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd, c->last_ns = mono_ns(), c->id = ++t->next_id;
		t->conns[t->nconns++] = c;
		bump(&w->c.tcp_conns);
	}
}

static void tcp_sweep(tcp_state *t, int64_t idle_ns)
{
	int64_t now = mono_ns();
	for (int i = t->nconns - 1; i >= 0; i--)
		if (now - t->conns[i]->last_ns > idle_ns || t->conns[i]->fd < 0)
			conn_close(t, i);
}

static void conn_fail(conn *c)
{
	close(c->fd);
	c->fd = -1; /* freed by the sweep, after this batch of events */
	c->last_ns = 0;
}

/* The forwarder's answer for a TCP client: to its connection if it is still open. */
static void tcp_reply(void *ctx, uint64_t id, const uint8_t *ans, size_t n)
{
	tcp_state *t = ctx;
	for (int i = 0; i < t->nconns; i++) {
		conn *c = t->conns[i];
		if (c->id != id || c->fd < 0)
			continue;
		if (c->fwd-- == TCP_FWD)
			c->resume = 1;
		t->ans[0] = (uint8_t)(n >> 8), t->ans[1] = (uint8_t)n; /* one send: no Nagle wait between */
		memcpy(t->ans + 2, ans, n);
		struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
		if (conn_send(c, t->ans, n + 2) || (c->out && epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &e)))
			conn_fail(c);
		return;
	}
}

static void tcp_loop(worker *w, tcp_state *t)
{
	struct epoll_event ev[64];
	int64_t idle_ns = (int64_t)w->s->cfg.tcp_idle_ms * 1000000;
	while (!atomic_load(&w->s->stop)) {
		quiescent(w);
		int n = epoll_wait(t->ep, ev, 64, 100);
		for (int i = 0; i < n; i++) {
			conn *c = ev[i].data.ptr;
			if (!c)
				tcp_accept(w, t);
			else if ((void *)c != w->s->fwd && conn_event(w, t, c, ev[i].events))
				conn_fail(c);
		}
		if (w->s->fwd)
			dn__fwd_run(w->s->fwd, tcp_reply, t);
		for (int i = 0; i < t->nconns; i++) { /* not from tcp_reply: dn__fwd_run holds the forwarder */
			conn *c = t->conns[i];
			if (!c->resume || c->fd < 0)
				continue;
			c->resume = 0;
			if (conn_event(w, t, c, EPOLLIN))
				conn_fail(c);
		}
		tcp_sweep(t, idle_ns);
	}
	for (int i = t->nconns - 1; i >= 0; i--)
		conn_close(t, i);
}

static void *tcp_main(void *arg)
{
	worker *w = arg;
	tcp_state *t = calloc(1, sizeof(*t));
	if (t)
		t->conns = calloc((size_t)w->s->cfg.tcp_max_conns, sizeof(*t->conns));
	if (t && t->conns && (t->ep = epoll_create1(EPOLL_CLOEXEC)) >= 0) {
		t->lfd = w->fd;
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
		struct epoll_event fe = {.events = EPOLLIN, .data.ptr = w->s->fwd};
		if (!epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &e) &&
		    (!w->s->fwd || !epoll_ctl(t->ep, EPOLL_CTL_ADD, dn__fwd_fd(w->s->fwd), &fe)))
			tcp_loop(w, t);
		close(t->ep);
	}
	if (t)
		free(t->conns);
	free(t);
	return NULL;
}

/* ---- sockets, start and stop ------------------------------------------------------------------------ */

static int open_socket(dn_server *s, int type, cm_err *err)
{
	socklen_t alen = s->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int fd = socket(s->addr.ss_family, type | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0)
		return cm_errf(err, -errno, "dns socket: %s", strerror(errno));
	struct timeval tv = {0, 100000};
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (type == SOCK_DGRAM) {
		int sz = 4 << 20;
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	if (bind(fd, (struct sockaddr *)&s->addr, alen) || (type == SOCK_STREAM && listen(fd, 256))) {
		int e = errno;
		close(fd);
		return cm_errf(err, -e, "dns: cannot listen on %s: %s", s->cfg.listen, strerror(e));
	}
	if (!s->port) { /* port 0: every later socket binds the port the first one got */
		struct sockaddr_storage got;
		socklen_t gl = sizeof(got);
		getsockname(fd, (struct sockaddr *)&got, &gl);
		s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
		((struct sockaddr_in *)&s->addr)->sin_port = htons((uint16_t)s->port);
	}
	return fd;
}

static int cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set))
		return 1;
	int n = CPU_COUNT(&set);
	return n < 1 ? 1 : n > 64 ? 64 : n;
}

static void config_defaults(dn_server_config *c)
{
	if (c->udp_threads <= 0)
		c->udp_threads = cpus();
	if (!c->max_udp || c->max_udp > UDP_BUF)
		c->max_udp = DN_EDNS_SIZE;
	if (c->tcp_idle_ms <= 0)
		c->tcp_idle_ms = 10000;
	if (c->tcp_max_conns <= 0)
		c->tcp_max_conns = 512;
}

static int open_once(dn_server *s, cm_err *err)
{
	for (int k = 0; k <= s->nudp; k++) {
		int i = (k + s->nudp) % (s->nudp + 1); /* TCP first */
		worker *w = &s->w[i];
		w->s = s;
		w->fd = open_socket(s, i < s->nudp ? SOCK_DGRAM : SOCK_STREAM, err);
		if (w->fd < 0)
			return w->fd;
		if (i == s->nudp) {
			if (fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK))
				return cm_errf(err, CM_EIO, "dns: cannot make the TCP socket non-blocking");
		} else if (!(w->rrl = calloc(1, sizeof(*w->rrl)))) {
			return cm_errf(err, CM_ENOMEM, "out of memory");
		} else {
			w->rrl->rate = s->cfg.rrl_rate, w->rrl->slip = s->cfg.rrl_slip;
		}
	}
	return CM_OK;
}

/* Opens the TCP socket and then the UDP ones on its port. With port 0 the kernel picks a port free for
 * TCP (outgoing connections in TIME_WAIT hold many), and when some UDP socket holds that port too, all
 * are closed and another is picked, a few times. */
static int open_all(dn_server *s, cm_err *err)
{
	int auto_port = !s->port;
	for (int tries = 1;; tries++) {
		int rc = open_once(s, err);
		if (rc != -EADDRINUSE || !auto_port || tries == 16)
			return rc;
		for (int i = 0; i <= s->nudp; i++) {
			if (s->w[i].fd >= 0)
				close(s->w[i].fd);
			free(s->w[i].rrl);
			s->w[i].fd = -1, s->w[i].rrl = NULL;
		}
		s->port = 0;
		((struct sockaddr_in *)&s->addr)->sin_port = 0; /* sin6_port is at the same offset */
	}
}

static int start_threads(dn_server *s, cm_err *err)
{
	for (int i = 0; i <= s->nudp; i++) {
		worker *w = &s->w[i];
		if (pthread_create(&w->thread, NULL, i < s->nudp ? udp_main : tcp_main, w))
			return cm_errf(err, CM_ENOMEM, "dns: cannot start a serving thread");
		w->started = 1;
	}
	return CM_OK;
}

int dn_server_start(const dn_server_config *cfg, dn_server **out, cm_err *err)
{
	dn_server *s = calloc(1, sizeof(*s));
	if (!s)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	s->cfg = *cfg;
	config_defaults(&s->cfg);
	s->nudp = s->cfg.udp_threads;
	atomic_init(&s->zone, NULL);
	atomic_init(&s->epoch, 1);
	int rc = cm_parse_listen("dns-listen", cfg->listen, &s->addr, err);
	if (!rc) {
		s->port = ntohs(((struct sockaddr_in *)&s->addr)->sin_port);
		s->w = calloc((size_t)s->nudp + 1, sizeof(*s->w));
		for (int i = 0; s->w && i <= s->nudp; i++)
			s->w[i].fd = -1;
		rc = s->w ? open_all(s, err) : cm_errf(err, CM_ENOMEM, "out of memory");
	}
	if (!rc && cfg->nupstreams)
		rc = dn__fwd_create(cfg->upstreams, cfg->nupstreams, cfg->upstream_timeout_ms, s->cfg.max_udp,
		                    cfg->forward_cache, &s->fwd, err);
	rc = rc ? rc : start_threads(s, err);
	if (rc)
		goto fail;
	*out = s;
	return CM_OK;
fail:
	dn_server_stop(s);
	return rc;
}

int dn_server_port(const dn_server *s)
{
	return s->port;
}

static uint64_t min_seen(dn_server *s)
{
	uint64_t m = UINT64_MAX;
	for (int i = 0; i <= s->nudp; i++) {
		uint64_t v = s->w[i].started ? atomic_load(&s->w[i].seen) : UINT64_MAX;
		m = v < m ? v : m;
	}
	return m;
}

static void reclaim(dn_server *s, int all)
{
	uint64_t seen = all ? UINT64_MAX : min_seen(s);
	for (retired **pp = &s->retired; *pp;) {
		retired *r = *pp;
		if (r->epoch <= seen) {
			*pp = r->next;
			dn_zone_destroy(r->z);
			free(r);
		} else {
			pp = &r->next;
		}
	}
}

void dn_server_publish(dn_server *s, dn_zone *z)
{
	dn_zone *old = atomic_exchange(&s->zone, z);
	uint64_t e = atomic_fetch_add(&s->epoch, 1) + 1;
	atomic_store(&s->published_ms, cm_now_ms());
	atomic_fetch_add(&s->generation, 1);
	retired *r = old ? malloc(sizeof(*r)) : NULL;
	if (old && !r) { /* cannot queue it: wait for every thread to pass a quiescent state */
		while (min_seen(s) < e)
			usleep(1000);
		dn_zone_destroy(old);
	} else if (r) {
		*r = (retired){old, e, s->retired};
		s->retired = r;
	}
	reclaim(s, 0);
}

void dn_server_stop(dn_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, 1);
	for (int i = 0; s->w && i <= s->nudp; i++) {
		if (s->w[i].started)
			pthread_join(s->w[i].thread, NULL);
		if (s->w[i].fd >= 0)
			close(s->w[i].fd);
		free(s->w[i].rrl);
	}
	dn__fwd_destroy(s->fwd);
	reclaim(s, 1);
	dn_zone_destroy(atomic_load(&s->zone));
	free(s->w);
	free(s);
}

/* ---- metrics ---------------------------------------------------------------------------------------- */

static uint64_t sum(dn_server *s, size_t off)
{
	uint64_t v = 0;
	for (int i = 0; i <= s->nudp; i++)
		v += atomic_load_explicit((ctr *)((char *)&s->w[i].c + off), memory_order_relaxed);
	return v;
}

#define SUM(field) sum(s, offsetof(counters, field))

static int family(cm_buf *b, const char *name, const char *type, const char *help)
{
	return cm_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int render_latency(dn_server *s, cm_buf *b)
{
	int rc = family(b, "corral_dns_request_duration_seconds", "histogram",
	                "Time from receiving a query to its answer being ready.");
	uint64_t acc = 0;
	for (int i = 0; i <= NLAT && !rc; i++) {
		acc += sum(s, offsetof(counters, lat) + (size_t)i * sizeof(ctr));
		if (i < NLAT)
			rc = cm_buf_printf(b, "corral_dns_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
			                   lat_le_us[i] / 1e6, (unsigned long long)acc);
	}
	rc = rc ? rc
	        : cm_buf_printf(b, "corral_dns_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
	                        (unsigned long long)acc);
	rc =
	    rc ? rc : cm_buf_printf(b, "corral_dns_request_duration_seconds_sum %.9f\n", (double)SUM(lat_sum_ns) / 1e9);
	return rc ? rc : cm_buf_printf(b, "corral_dns_request_duration_seconds_count %llu\n", (unsigned long long)acc);
}

static int counter(cm_buf *b, const char *name, const char *help, uint64_t v)
{
	int rc = family(b, name, "counter", help);
	return rc ? rc : cm_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

int dn_server_metrics(dn_server *s, cm_buf *b)
{
	int rc = family(b, "corral_dns_queries_total", "counter", "DNS queries answered, by query type.");
	for (size_t i = 0; i < NQT && !rc; i++)
		rc = cm_buf_printf(b, "corral_dns_queries_total{type=\"%s\"} %llu\n", qtype_names[i],
		                   (unsigned long long)sum(s, offsetof(counters, qtype) + i * sizeof(ctr)));
	rc = rc ? rc : family(b, "corral_dns_responses_total", "counter", "DNS responses, by rcode.");
	for (size_t i = 0; i < NRC && !rc; i++)
		rc = cm_buf_printf(b, "corral_dns_responses_total{rcode=\"%s\"} %llu\n", rcode_names[i],
		                   (unsigned long long)sum(s, offsetof(counters, rcode) + i * sizeof(ctr)));
	rc = rc ? rc : render_latency(s, b);
	rc = rc ? rc
	        : counter(b, "corral_dns_rrl_dropped_total", "Answers dropped by response rate limiting.",
	                  SUM(rrl_dropped));
	rc = rc ? rc
	        : counter(b, "corral_dns_rrl_slipped_total", "Rate-limited answers sent truncated.", SUM(rrl_slipped));
	rc =
	    rc ? rc : counter(b, "corral_dns_dropped_total", "Packets dropped unanswered (not a query).", SUM(dropped));
	rc = rc ? rc : counter(b, "corral_dns_truncated_total", "Answers sent with TC set.", SUM(truncated));
	rc = rc ? rc : counter(b, "corral_dns_tcp_queries_total", "Queries answered over TCP.", SUM(tcp_queries));
	rc = rc ? rc : counter(b, "corral_dns_tcp_connections_total", "TCP connections accepted.", SUM(tcp_conns));
	rc = rc ? rc : dn__fwd_metrics(s->fwd, b);
	rc = rc ? rc
	        : counter(b, "corral_dns_zone_generation", "Zone snapshots published.", atomic_load(&s->generation));
	int64_t pub = atomic_load(&s->published_ms);
	rc = rc ? rc : family(b, "corral_dns_zone_age_seconds", "gauge", "Age of the zone snapshot being served.");
	return rc ? rc
	          : cm_buf_printf(b, "corral_dns_zone_age_seconds %.3f\n",
	                          pub ? (double)(cm_now_ms() - pub) / 1e3 : 0.0);
}
