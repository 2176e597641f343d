/* na_http.c -- the agent's small HTTP/1.x server for /metrics and /healthz, on the libuv loop.
 *
 * One request per connection: read the request head (at most 8 KiB, within 10 s), answer with
 * Content-Length and "Connection: close", close. Only GET and HEAD are served. The request parser is
 * a pure function (fuzzed); everything that reaches it comes from the network. Never blocks the loop:
 * a handler whose answer needs work on a worker parks the request (NA__HTTP_LATER) and resumes the
 * parked ones when the work is done.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "na_int.h"

#define HEAD_MAX 8192
#define CONN_TIMEOUT_MS 10000

typedef struct conn conn;

struct na__http {
	uv_tcp_t server;
	na__http_handler fn;
	void *ctx;
	void (*done)(void *);
	void *done_arg;
	conn *parked; /* requests waiting for na__http_resume, linked by next */
};

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wr;
	na__http *h;
	char buf[HEAD_MAX];
	size_t len;
	cm_buf out;
	int open_handles;
	int answered;
	int head;        /* a HEAD request */
	int parked;
	conn *next;
	char path[1024];
};

/* ---- request parsing --------------------------------------------------------------------------------- */

static int token_char(char c) { return c > 32 && c < 127; }

int na__http_parse_request(const char *buf, size_t len, char *method, size_t mcap, char *path, size_t pcap)
{
	const char *end = NULL;
	for (size_t i = 0; i + 3 < len; i++) {
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
			end = buf + i + 4;
			break;
		}
	}
	if (!end)
		return 0;
	const char *eol = memchr(buf, '\r', (size_t)(end - buf));
	const char *p = buf, *sp1 = memchr(p, ' ', (size_t)(eol - p));
	const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || (size_t)(sp1 - p) >= mcap)
		return CM_EPROTO;
	if ((size_t)(eol - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) || (sp2[8] != '0' && sp2[8] != '1'))
		return CM_EPROTO;
	const char *target = sp1 + 1, *q = target;
	while (q < sp2 && *q != '?')
		q++;
	if (*target != '/' || (size_t)(q - target) >= pcap)
		return CM_EPROTO;
	for (const char *c = p; c < sp2; c++)
		if (c != sp1 && !token_char(*c))
			return CM_EPROTO;
	memcpy(method, p, (size_t)(sp1 - p));
	method[sp1 - p] = 0;
	memcpy(path, target, (size_t)(q - target));
	path[q - target] = 0;
	return (int)(end - buf);
}

/* ---- connections ------------------------------------------------------------------------------------- */

static void on_conn_handle_closed(uv_handle_t *hd)
{
	conn *c = hd->data;
	if (--c->open_handles == 0) {
		cm_buf_close(&c->out);
		free(c);
	}
}

static void unpark(conn *c)
{
	conn **p = &c->h->parked;
	while (*p && *p != c)
		p = &(*p)->next;
	if (*p)
		*p = c->next;
	c->parked = 0;
}

static void conn_close(conn *c)
{
	if (c->parked)
		unpark(c);
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_written(uv_write_t *w, int status)
{
	(void)status;
	conn_close(w->data);
}

static void reply(conn *c, int status, const char *ctype, const char *body, size_t blen, int head_only)
{
	static const char *const reasons[] = {[200] = "OK", [400] = "Bad Request", [404] = "Not Found",
					      [405] = "Method Not Allowed", [431] = "Request Header Fields Too Large",
					      [500] = "Internal Server Error"};
	const char *reason = status < (int)CM_ARRAY_LEN(reasons) && reasons[status] ? reasons[status] : "Error";
	c->answered = 1;
	uv_read_stop((uv_stream_t *)&c->tcp);
	if (cm_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
				   "Connection: close\r\n\r\n", status, reason, ctype, blen) ||
	    (!head_only && cm_buf_append(&c->out, body, blen))) {
		conn_close(c);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
	c->wr.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written))
		conn_close(c);
}

static void serve(conn *c)
{
	cm_buf body;
	cm_buf_init(&body);
	const char *ctype = "text/plain; charset=utf-8";
	int status = c->h->fn(c->h->ctx, c->path, &body, &ctype);
	if (status == NA__HTTP_LATER) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->parked = 1;
		c->next = c->h->parked;
		c->h->parked = c;
	} else {
		reply(c, status, ctype, body.data ? (const char *)body.data : "", body.len, c->head);
	}
	cm_buf_close(&body);
}

void na__http_resume(na__http *h)
{
	conn *c = h->parked;
	h->parked = NULL;
	while (c) {
		conn *next = c->next;
		c->parked = 0;
		serve(c); /* may park it again */
		c = next;
	}
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b)
{
	(void)suggested;
	conn *c = hd->data;
	*b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	conn *c = st->data;
	if (n < 0 || c->answered) {
		if (n < 0)
			conn_close(c);
		return;
	}
	c->len += (size_t)n;
	char method[16];
	int r = na__http_parse_request(c->buf, c->len, method, sizeof(method), c->path, sizeof(c->path));
	c->head = r > 0 && !strcmp(method, "HEAD");
	if (r < 0)
		reply(c, 400, "text/plain", "bad request\n", 12, 0);
	else if (r > 0 && strcmp(method, "GET") && !c->head)
		reply(c, 405, "text/plain", "method not allowed\n", 19, 0);
	else if (r > 0)
		serve(c);
	else if (c->len == sizeof(c->buf))
		reply(c, 431, "text/plain", "request head too large\n", 23, 0);
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_connection(uv_stream_t *server, int status)
{
	na__http *h = server->data;
	conn *c = status ? NULL : calloc(1, sizeof(*c));
	if (!c)
		return;
	c->h = h;
	uv_tcp_init(server->loop, &c->tcp);
	uv_timer_init(server->loop, &c->timer);
	c->tcp.data = c->timer.data = c;
	c->open_handles = 2;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, CONN_TIMEOUT_MS, 0);
}

/* ---- server -------------------------------------------------------------------------------------------- */

int na__http_start(uv_loop_t *loop, const char *listen, na__http_handler fn, void *ctx, na__http **out,
		   cm_err *err)
{
	struct sockaddr_storage ss;
	int rc = cm_parse_listen("listen", listen, &ss, err);
	if (rc)
		return rc;
	na__http *h = calloc(1, sizeof(*h));
	if (!h)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	h->fn = fn;
	h->ctx = ctx;
	uv_tcp_init(loop, &h->server);
	h->server.data = h;
	rc = uv_tcp_bind(&h->server, (struct sockaddr *)&ss, 0);
	if (!rc)
		rc = uv_listen((uv_stream_t *)&h->server, 128, on_connection);
	if (rc) {
		cm_errf(err, rc, "cannot listen on %s: %s", listen, uv_strerror(rc));
		na__http_close(h, NULL, NULL);
		return rc;
	}
	*out = h;
	return CM_OK;
}

static void on_server_closed(uv_handle_t *hd)
{
	na__http *h = hd->data;
	if (h->done)
		h->done(h->done_arg);
	free(h);
}

void na__http_close(na__http *h, void (*done)(void *), void *arg)
{
	h->done = done;
	h->done_arg = arg;
	while (h->parked)
		conn_close(h->parked);
	uv_close((uv_handle_t *)&h->server, on_server_closed);
}
