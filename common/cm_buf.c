/* cm_buf.c -- a growable byte buffer for building output, and a bounds-checked reader for input.
 *
 * cm_buf doubles its capacity and never shrinks; every append can fail with CM_ENOMEM and leaves the
 * buffer as it was. cm_rd reads varints and fixed-width little-endian values from bytes that came from
 * outside: each read checks the remaining length first and fails with CM_EPROTO, never reads past end.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm.h"

void cm_buf_init(cm_buf *b) { memset(b, 0, sizeof(*b)); }

void cm_buf_close(cm_buf *b)
{
	free(b->data);
	cm_buf_init(b);
}

int cm_buf_reserve(cm_buf *b, size_t extra)
{
	if (extra <= b->cap - b->len)
		return CM_OK;
	if (extra > SIZE_MAX / 2 - b->len)
		return CM_ENOMEM;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len < extra)
		cap *= 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return CM_ENOMEM;
	b->data = p;
	b->cap = cap;
	return CM_OK;
}

int cm_buf_append(cm_buf *b, const void *p, size_t n)
{
	int rc = cm_buf_reserve(b, n + 1);
	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0; /* always NUL-terminated for text users; not counted in len */
	return CM_OK;
}

int cm_buf_puts(cm_buf *b, const char *s) { return cm_buf_append(b, s, strlen(s)); }

int cm_buf_printf(cm_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return CM_EINVAL;
	int rc = cm_buf_reserve(b, (size_t)n + 1);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return CM_OK;
}

int cm_buf_put_uvarint(cm_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	return cm_buf_append(b, tmp, cm_put_uvarint(tmp, v));
}

int cm_buf_put_u32le(cm_buf *b, uint32_t v)
{
	uint8_t tmp[4];
	cm_put_u32le(tmp, v);
	return cm_buf_append(b, tmp, 4);
}

int cm_buf_put_f64le(cm_buf *b, double v)
{
	uint64_t u;
	memcpy(&u, &v, 8);
	uint8_t tmp[8];
	for (int i = 0; i < 8; i++)
		tmp[i] = (uint8_t)(u >> (8 * i));
	return cm_buf_append(b, tmp, 8);
}

int cm_buf_put_json_str(cm_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	int rc = cm_buf_reserve(b, strlen(s) + 3);
	if (rc)
		return rc;
	rc = cm_buf_append(b, "\"", 1);
	const unsigned char *p = (const unsigned char *)s, *run = p; /* bytes that need no escape go in runs */
	for (; *p && !rc; p++) {
		if (*p == '"' || *p == '\\') {
			char esc[2] = {'\\', (char)*p};
			rc = cm_buf_append(b, run, (size_t)(p - run));
			rc = rc ? rc : cm_buf_append(b, esc, 2);
			run = p + 1;
		} else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&' || *p == 0x7f) {
			/* escape HTML-significant bytes too, as Go's encoding/json does */
			char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
			rc = cm_buf_append(b, run, (size_t)(p - run));
			rc = rc ? rc : cm_buf_append(b, esc, 6);
			run = p + 1;
		}
	}
	rc = rc ? rc : cm_buf_append(b, run, (size_t)(p - run));
	return rc ? rc : cm_buf_append(b, "\"", 1);
}

uint8_t *cm_buf_take(cm_buf *b, size_t *len)
{
	uint8_t *p = b->data;
	*len = b->len;
	cm_buf_init(b);
	return p;
}

int cm_rd_uvarint(cm_rd *r, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->end)
			return CM_EPROTO;
		uint8_t c = *r->p++;
		if (shift == 63 && c > 1)
			return CM_EPROTO;
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return CM_OK;
		}
	}
	return CM_EPROTO;
}

int cm_rd_u32le(cm_rd *r, uint32_t *v)
{
	if (cm_rd_left(r) < 4)
		return CM_EPROTO;
	*v = cm_get_u32le(r->p);
	r->p += 4;
	return CM_OK;
}

int cm_rd_f64le(cm_rd *r, double *v)
{
	if (cm_rd_left(r) < 8)
		return CM_EPROTO;
	uint64_t u = 0;
	for (int i = 0; i < 8; i++)
		u |= (uint64_t)r->p[i] << (8 * i);
	memcpy(v, &u, 8);
	r->p += 8;
	return CM_OK;
}

int cm_rd_bytes(cm_rd *r, size_t n, const uint8_t **out)
{
	if (cm_rd_left(r) < n)
		return CM_EPROTO;
	*out = r->p;
	r->p += n;
	return CM_OK;
}
