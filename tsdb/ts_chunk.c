/* ts_chunk.c -- Gorilla chunk encoding: delta-of-delta timestamps and XOR-compressed float values.
 *
 * The head (ts_head.c) keeps every series as a list of chunks built here; a chunk holds up to 120
 * samples or 2 h, strictly increasing in time. The encoder appends one sample at a time into a growable
 * byte buffer; the decoder walks a chunk as untrusted bytes (it may come from a file): every read is
 * bounds-checked and a chunk that ends early or encodes an impossible field fails with CM_ECORRUPT.
 * This file allocates only the encoder's buffer, never locks and never touches the disk.
 *
 * ---- chunk format, version 1 (a bit stream, most significant bit of each byte first) ------------------
 *
 * The number of samples n is kept outside the stream (in the head, or in the chunk's index entry).
 *
 *   sample 0:   64 bits  t_ms (two's complement)
 *               64 bits  value (IEEE 754 bits as given: NaN payloads such as the Prometheus stale
 *                        marker 0x7ff0000000000002, infinities and -0 are kept exactly)
 *   sample i>0: timestamp, then value
 *     timestamp: delta_i = t_i - t_(i-1), dod = delta_i - delta_(i-1) with delta_0 = 0, in wrapping
 *                64-bit arithmetic, written as
 *                  '0'                   dod = 0
 *                  '10'   + 14 bits      -2^13 <= dod < 2^13   (two's complement, sign-extended on read)
 *                  '110'  + 17 bits      -2^16 <= dod < 2^16
 *                  '1110' + 20 bits      -2^19 <= dod < 2^19
 *                  '1111' + 64 bits      anything else
 *     value:     x = bits(v_i) XOR bits(v_(i-1))
 *                  '0'                   x = 0
 *                  '10'   + m bits       x's meaningful bits fit the previous window (lead, trail):
 *                                        m = 64 - lead - trail, the bits are x >> trail
 *                  '11'   + 5 bits lead (leading zero bits of x, capped at 31)
 *                         + 6 bits m (meaningful bits, 64 written as 0) + m bits x >> (64 - lead - m)
 *                                        and (lead, 64 - lead - m) becomes the window
 *                A '10' before any '11' has set a window is invalid, as is lead + m > 64.
 *
 * Times strictly increase inside a chunk; a decoded time at or before the previous one is invalid.
 * The stream is padded with zero bits to a whole byte. Trailing bytes after sample n-1 are ignored by the
 * decoder; they never occur in chunks written by the encoder.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "ts_int.h"

#define NO_WINDOW 0xff

/* ---- encoder --------------------------------------------------------------------------------------- */

void ts__enc_init(ts__enc *e)
{
	memset(e, 0, sizeof(*e));
	e->lead = NO_WINDOW;
}

void ts__enc_close(ts__enc *e)
{
	free(e->buf);
	ts__enc_init(e);
}

static int enc_room(ts__enc *e, unsigned bits)
{
	size_t need = ((size_t)e->nbits + bits + 7) / 8;
	if (need <= e->cap)
		return CM_OK;
	size_t cap = e->cap ? (size_t)e->cap * 2 : 32;
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(e->buf, cap);
	if (!p)
		return CM_ENOMEM;
	memset(p + e->cap, 0, cap - e->cap);
	e->buf = p;
	e->cap = (uint32_t)cap;
	return CM_OK;
}

/* Converts between host order and big-endian. */
static uint64_t be64(uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return __builtin_bswap64(v);
#else
	return v;
#endif
}

/* Writes the low k bits of v (k <= 64), most significant first, ORed into the zeroed bytes past nbits
 * as one big-endian 8-byte word (up to 56 bits at a time); enc_room must have reserved 8 bytes past
 * the last bit written. */
static void put_bits(ts__enc *e, uint64_t v, unsigned k)
{
	if (k > 56) {
		put_bits(e, v >> 32, k - 32);
		k = 32;
	}
	uint8_t *p = e->buf + (e->nbits >> 3);
	uint64_t w;
	memcpy(&w, p, 8);
	w = be64(w) | (v & (((uint64_t)1 << k) - 1)) << (64 - (e->nbits & 7) - k);
	w = be64(w);
	memcpy(p, &w, 8);
	e->nbits += k;
}

static int fits(int64_t d, unsigned bits)
{
	return d >= -((int64_t)1 << (bits - 1)) && d < ((int64_t)1 << (bits - 1));
}

static void put_dod(ts__enc *e, uint64_t dod)
{
	int64_t d = (int64_t)dod;
	if (d == 0)
		put_bits(e, 0, 1);
	else if (fits(d, 14))
		put_bits(e, 2, 2), put_bits(e, dod, 14);
	else if (fits(d, 17))
		put_bits(e, 6, 3), put_bits(e, dod, 17);
	else if (fits(d, 20))
		put_bits(e, 14, 4), put_bits(e, dod, 20);
	else
		put_bits(e, 15, 4), put_bits(e, dod, 64);
}

static void put_xor(ts__enc *e, uint64_t x)
{
	if (x == 0) {
		put_bits(e, 0, 1);
		return;
	}
	unsigned lead = (unsigned)__builtin_clzll(x), trail = (unsigned)__builtin_ctzll(x);
	if (lead > 31)
		lead = 31;
	if (e->lead != NO_WINDOW && lead >= e->lead && trail >= e->trail) {
		put_bits(e, 2, 2);
		put_bits(e, x >> e->trail, 64u - e->lead - e->trail);
		return;
	}
	unsigned m = 64 - lead - trail;
	put_bits(e, 3, 2);
	put_bits(e, lead, 5);
	put_bits(e, m & 63, 6);
	put_bits(e, x >> trail, m);
	e->lead = (uint8_t)lead;
	e->trail = (uint8_t)trail;
}

int ts__enc_append(ts__enc *e, int64_t t, double v)
{
	uint64_t vb;
	memcpy(&vb, &v, 8);
	if (enc_room(e, 128 + 13 + 64)) /* the worst case of one sample, and put_bits' word */
		return CM_ENOMEM;
	if (e->n == 0) {
		put_bits(e, (uint64_t)t, 64);
		put_bits(e, vb, 64);
		e->mint = t;
	} else {
		uint64_t delta = (uint64_t)t - (uint64_t)e->t;
		put_dod(e, delta - e->delta);
		put_xor(e, vb ^ e->v);
		e->delta = delta;
	}
	e->t = t;
	e->v = vb;
	e->n++;
	return CM_OK;
}

/* ---- decoder --------------------------------------------------------------------------------------- */

void ts__dec_init(ts__dec *d, const uint8_t *p, size_t nbytes, uint32_t n)
{
	memset(d, 0, sizeof(*d));
	d->p = p;
	d->nbits = (uint64_t)nbytes * 8;
	d->n = n;
	d->lead = NO_WINDOW;
}

/* Reads k bits (k <= 64) into *v; CM_ECORRUPT past the end. */
static int get_bits(ts__dec *d, unsigned k, uint64_t *v)
{
	uint64_t r = 0;
	if (d->nbits - d->pos < k)
		return CM_ECORRUPT;
	while (k) {
		unsigned used = (unsigned)(d->pos & 7), take = 8 - used < k ? 8 - used : k;
		uint8_t byte = d->p[d->pos >> 3];
		r = (r << take) | ((uint64_t)(byte >> (8 - used - take)) & ((1u << take) - 1));
		d->pos += take;
		k -= take;
	}
	*v = r;
	return CM_OK;
}

static uint64_t sign_extend(uint64_t v, unsigned bits)
{
	uint64_t m = (uint64_t)1 << (bits - 1);
	return (v ^ m) - m;
}

static int get_dod(ts__dec *d, uint64_t *dod)
{
	static const unsigned widths[4] = {14, 17, 20, 64};
	uint64_t b = 0;
	unsigned i = 0;
	int rc = get_bits(d, 1, &b);
	if (rc || b == 0) {
		*dod = 0;
		return rc;
	}
	while (i < 3 && !(rc = get_bits(d, 1, &b)) && b == 1)
		i++;
	if (rc || (rc = get_bits(d, widths[i], &b)))
		return rc;
	*dod = widths[i] == 64 ? b : sign_extend(b, widths[i]);
	return CM_OK;
}

static int get_xor(ts__dec *d, uint64_t *x)
{
	uint64_t b, lead, m;
	int rc = get_bits(d, 1, &b);
	if (rc || b == 0) {
		*x = 0;
		return rc;
	}
	if ((rc = get_bits(d, 1, &b)))
		return rc;
	if (b == 0) {
		if (d->lead == NO_WINDOW)
			return CM_ECORRUPT;
		if ((rc = get_bits(d, 64u - d->lead - d->trail, &b)))
			return rc;
		*x = b << d->trail;
		return CM_OK;
	}
	if ((rc = get_bits(d, 5, &lead)) || (rc = get_bits(d, 6, &m)))
		return rc;
	m = m ? m : 64;
	if (lead + m > 64 || (rc = get_bits(d, (unsigned)m, &b)))
		return CM_ECORRUPT;
	d->lead = (uint8_t)lead;
	d->trail = (uint8_t)(64 - lead - m);
	*x = b << d->trail;
	return CM_OK;
}

int ts__dec_next(ts__dec *d, cm_sample *out)
{
	uint64_t a, b;
	int rc;
	if (d->i >= d->n)
		return 0;
	if (d->i == 0) {
		if ((rc = get_bits(d, 64, &a)) || (rc = get_bits(d, 64, &b)))
			return rc;
		d->t = a;
	} else {
		if ((rc = get_dod(d, &a)) || (rc = get_xor(d, &b)))
			return rc;
		d->delta += a;
		if ((int64_t)(d->t + d->delta) <= (int64_t)d->t)
			return CM_ECORRUPT; /* times must strictly increase */
		d->t += d->delta;
		b ^= d->v;
	}
	d->v = b;
	d->i++;
	out->t_ms = (int64_t)d->t;
	memcpy(&out->v, &b, 8);
	return 1;
}
