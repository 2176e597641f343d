/* ts_frame.c -- the encoding of one series' samples inside a block: Gorilla, or exact decimal integers.
 *
 * ts_block.c stores each series of a block as one frame (then zstd-compressed). Metrics are mostly
 * decimal numbers (byte counts, pages, seconds with ns precision): such a series is stored as integers
 * m_i with one decimal exponent k (v_i = m_i / 10^k exactly), as deltas or deltas of deltas divided by
 * their greatest common divisor, in varints that zstd compresses further. Anything else (NaN, infinities,
 * -0, more than 15 significant digits) keeps the Gorilla stream of ts_chunk.c. The decoder treats the
 * frame as untrusted bytes.
 *
 * ---- frame format, version 1 -----------------------------------------------------------------------
 *
 * The sample count n (>= 1) is kept in the block index, not in the frame.
 *
 *   1 byte   encoding: 1 = Gorilla, 2 = decimal
 *   encoding 1: a Gorilla chunk (ts_chunk.c) of the n samples, to the end of the frame
 *   encoding 2:
 *     varint    t_0 (zigzag)
 *     n-1 times varint (zigzag) dod_i = (t_i - t_(i-1)) - (t_(i-1) - t_(i-2)), with t_(-1) = t_0;
 *               times must strictly increase
 *     1 byte    k, the decimal exponent, 0..18
 *     1 byte    order: 1 = deltas, 2 = deltas of deltas
 *     uvarint   g >= 1, the divisor of the residuals
 *     varint    m_0 (zigzag)
 *     n-1 times varint (zigzag) r_i; the residual times g is m_i - m_(i-1) (order 1) or
 *               (m_i - m_(i-1)) - (m_(i-1) - m_(i-2)) with m_(-1) = m_0 (order 2)
 *     value_i = (double)m_i / 10^k, with |m_i| < 2^53; arithmetic on m wraps at 64 bits
 *   encoding 3: like 2, but after m_0 the n-1 residuals are bit-packed in groups of 128 (the last may be
 *     shorter): per group varint (zigzag) rmin, 1 byte width w (0..64), then one w-bit value per
 *     residual (most significant bit first, zero-padded to a byte); r_i = rmin + value (wrapping)
 *   Nothing may follow the last field.
 *
 * The encoder uses an integer form whenever every value is an exact decimal, Gorilla otherwise; of the
 * two integer forms it packs bits unless a quarter or more of the residuals are zero (zstd squeezes
 * zero varints) or the varints are smaller.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "ts_int.h"

#define ENC_GORILLA 1
#define ENC_DECIMAL 2
#define ENC_PACKED 3
#define MAX_K 18
#define MAX_EXACT (1LL << 53)

static const double p10[MAX_K + 1] = {1e0,  1e1,  1e2,	1e3,  1e4,  1e5,  1e6,	1e7,  1e8, 1e9,
				      1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18};

static uint64_t zz(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzz(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;
		a = b, b = t;
	}
	return a;
}

static size_t uv_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80)
		v >>= 7, n++;
	return n;
}

/* ---- decimal conversion ---------------------------------------------------------------------------- */

/* m with v == m / 10^k exactly, or 0 when there is none. */
static int to_decimal(double v, int k, int64_t *m)
{
	double s = v * p10[k];
	if (!(fabs(s) < (double)MAX_EXACT))
		return 0;
	int64_t r = llround(s);
	double back = (double)r / p10[k];
	if (memcmp(&back, &v, 8) != 0)
		return 0;
	*m = r;
	return 1;
}

/* The smallest exponent that makes every value an exact integer, or -1. */
static int find_k(const cm_sample *x, size_t n)
{
	int k = 0;
	int64_t m;
	for (size_t i = 0; i < n; i++) {
		while (k <= MAX_K && !to_decimal(x[i].v, k, &m))
			k++;
		if (k > MAX_K)
			return -1;
	}
	return k;
}

/* Residuals of order 1 or 2 of m[0..n) into r[1..n); returns the sum of their varint lengths. */
static size_t residuals(const int64_t *m, size_t n, int order, uint64_t *r, uint64_t *g)
{
	uint64_t prev_d = 0, div = 0;
	for (size_t i = 1; i < n; i++) {
		uint64_t d = (uint64_t)m[i] - (uint64_t)m[i - 1];
		uint64_t v = order == 1 ? d : d - prev_d;
		prev_d = d;
		r[i] = v;
		int64_t sv = (int64_t)v;
		div = gcd(div, sv < 0 ? (uint64_t)0 - (uint64_t)sv : (uint64_t)sv);
	}
	*g = div ? div : 1;
	size_t len = 0;
	for (size_t i = 1; i < n; i++)
		len += uv_len(zz((int64_t)r[i] / (int64_t)*g));
	return len;
}

#define GROUP 128

/* Bit-packs one group of residuals r[1..n) / g (n - 1 <= GROUP) as min, width, bits. */
static int put_group(cm_buf *out, const uint64_t *r, size_t n, uint64_t g)
{
	int64_t min = INT64_MAX, max = INT64_MIN;
	for (size_t i = 1; i < n; i++) {
		int64_t v = (int64_t)r[i] / (int64_t)g;
		min = v < min ? v : min;
		max = v > max ? v : max;
	}
	uint64_t span = (uint64_t)max - (uint64_t)min;
	unsigned w = span ? 64u - (unsigned)__builtin_clzll(span) : 0;
	int rc = cm_buf_put_uvarint(out, zz(min));
	rc = rc ? rc : cm_buf_append(out, (uint8_t[]){(uint8_t)w}, 1);
	size_t bytes = ((n - 1) * w + 7) / 8, at = out->len;
	rc = rc ? rc : cm_buf_reserve(out, bytes);
	if (rc)
		return rc;
	memset(out->data + at, 0, bytes);
	uint64_t bit = 0;
	for (size_t i = 1; i < n; i++) {
		uint64_t v = (uint64_t)((int64_t)r[i] / (int64_t)g) - (uint64_t)min;
		for (unsigned b = w; b-- > 0; bit++)
			if (v >> b & 1)
				out->data[at + bit / 8] |= (uint8_t)(0x80u >> (bit % 8));
	}
	out->len += bytes;
	return CM_OK;
}

/* Bit-packs residuals r[1..n) / g in groups of GROUP, each in its own narrowest width. */
static int put_packed(cm_buf *out, const uint64_t *r, size_t n, uint64_t g)
{
	int rc = CM_OK;
	for (size_t i = 1; i < n && !rc; i += GROUP) {
		size_t len = n - i < GROUP ? n - i : GROUP;
		rc = put_group(out, r + i - 1, len + 1, g);
	}
	return rc;
}

/* Writes the integer form; r holds the residuals of the order (1 or 2) with the smaller varints. */
static int put_decimal(cm_buf *out, const cm_sample *x, size_t n, int k, const int64_t *m, uint64_t *r,
		       int packed)
{
	uint64_t g1, g2, g;
	size_t l1 = residuals(m, n, 1, r, &g1), l2 = residuals(m, n, 2, r, &g2);
	int order = l2 < l1 ? 2 : 1;
	if (order == 1)
		residuals(m, n, 1, r, &g);
	else
		g = g2;
	uint8_t hdr[2] = {(uint8_t)k, (uint8_t)order};
	uint64_t prev_t = (uint64_t)x[0].t_ms, prev_d = 0;
	int rc = cm_buf_put_uvarint(out, zz(x[0].t_ms));
	for (size_t i = 1; i < n && !rc; i++) {
		uint64_t d = (uint64_t)x[i].t_ms - prev_t;
		rc = cm_buf_put_uvarint(out, zz((int64_t)(d - prev_d)));
		prev_t = (uint64_t)x[i].t_ms, prev_d = d;
	}
	rc = rc ? rc : cm_buf_append(out, hdr, 2);
	rc = rc ? rc : cm_buf_put_uvarint(out, g);
	rc = rc ? rc : cm_buf_put_uvarint(out, zz(m[0]));
	if (packed)
		return rc ? rc : put_packed(out, r, n, g);
	for (size_t i = 1; i < n && !rc; i++)
		rc = cm_buf_put_uvarint(out, zz((int64_t)r[i] / (int64_t)g));
	return rc;
}

/* ---- encode ---------------------------------------------------------------------------------------- */

static int put_gorilla(cm_buf *out, const cm_sample *x, size_t n)
{
	ts__enc e;
	int rc = CM_OK;
	ts__enc_init(&e);
	for (size_t i = 0; i < n && !rc; i++)
		rc = ts__enc_append(&e, x[i].t_ms, x[i].v);
	rc = rc ? rc : cm_buf_append(out, (uint8_t[]){ENC_GORILLA}, 1);
	rc = rc ? rc : cm_buf_append(out, e.buf, ts__enc_bytes(&e));
	ts__enc_close(&e);
	return rc;
}

/* Whether bit-packing beats varints for residuals r[1..n) / g: not when many are zero (zstd squeezes
 * runs of zero varints), else when the packed bits are fewer than the varint bytes. */
static int prefer_packed(const uint64_t *r, size_t n, uint64_t g)
{
	int64_t min = INT64_MAX, max = INT64_MIN;
	size_t zeros = 0, vlen = 0;
	for (size_t i = 1; i < n; i++) {
		int64_t v = (int64_t)r[i] / (int64_t)g;
		min = v < min ? v : min;
		max = v > max ? v : max;
		zeros += v == 0;
		vlen += uv_len(zz(v));
	}
	uint64_t span = (uint64_t)max - (uint64_t)min;
	size_t w = span ? 64u - (size_t)__builtin_clzll(span) : 0; /* groups can only be narrower */
	return zeros * 4 < n && (n - 1) * w < vlen * 8;
}

/* The integer form, when every value is an exact decimal with one exponent; *ok = 0 otherwise. */
static int decimal_form(const cm_sample *x, size_t n, cm_buf *out, int *ok)
{
	int k = n < 2 ? -1 : find_k(x, n);
	*ok = 0;
	if (k < 0)
		return CM_OK;
	int64_t *m = malloc(n * sizeof(*m));
	uint64_t *r = malloc(n * sizeof(*r));
	int rc = m && r ? CM_OK : CM_ENOMEM, exact = 1;
	for (size_t i = 0; i < n && !rc && exact; i++)
		exact = to_decimal(x[i].v, k, &m[i]); /* k fits every value alone; check them together */
	if (!rc && exact) {
		uint64_t g1, g2;
		size_t l1 = residuals(m, n, 1, r, &g1), l2 = residuals(m, n, 2, r, &g2);
		if (l1 <= l2)
			residuals(m, n, 1, r, &g1);
		int packed = prefer_packed(r, n, l1 <= l2 ? g1 : g2);
		rc = cm_buf_append(out, (uint8_t[]){packed ? ENC_PACKED : ENC_DECIMAL}, 1);
		rc = rc ? rc : put_decimal(out, x, n, k, m, r, packed);
	}
	*ok = exact;
	free(m);
	free(r);
	return rc;
}

int ts__frame_encode(const cm_sample *x, size_t n, ZSTD_CCtx *zc, cm_buf *out)
{
	size_t start = out->len;
	int ok;
	(void)zc;
	int rc = decimal_form(x, n, out, &ok);
	if (!rc && !ok) {
		out->len = start;
		rc = put_gorilla(out, x, n);
	}
	return rc;
}

/* ---- decode ---------------------------------------------------------------------------------------- */

/* A varint from r, the one-byte case inline (regular times and small residuals are one byte). */
static inline int rd_uv(cm_rd *r, uint64_t *v)
{
	if (r->p < r->end && *r->p < 0x80) {
		*v = *r->p++;
		return CM_OK;
	}
	return cm_rd_uvarint(r, v);
}

static int get_times(cm_rd *r, uint32_t n, cm_sample *out)
{
	uint64_t z, t, d = 0;
	if (rd_uv(r, &z))
		return CM_ECORRUPT;
	t = (uint64_t)unzz(z);
	out[0].t_ms = (int64_t)t;
	for (uint32_t i = 1; i < n; i++) {
		if (rd_uv(r, &z))
			return CM_ECORRUPT;
		d += (uint64_t)unzz(z);
		if ((int64_t)(t + d) <= (int64_t)t)
			return CM_ECORRUPT;
		t += d;
		out[i].t_ms = (int64_t)t;
	}
	return CM_OK;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

/* Unpacks the next group of len <= GROUP residuals (rmin + w-bit values) into res. The group's bits are
 * copied into a zero-padded buffer first, so every value is two loads and shifts, whatever its width. */
static int unpack_group(cm_rd *r, uint32_t len, uint64_t *res)
{
	uint8_t buf[GROUP * 8 + 9];
	const uint8_t *p, *bits;
	uint64_t z;
	if (rd_uv(r, &z) || cm_rd_bytes(r, 1, &p) || p[0] > 64)
		return CM_ECORRUPT;
	unsigned w = p[0];
	uint64_t min = (uint64_t)unzz(z);
	size_t nbytes = ((size_t)len * w + 7) / 8;
	if (cm_rd_bytes(r, nbytes, &bits))
		return CM_ECORRUPT;
	if (!w) {
		for (uint32_t i = 0; i < len; i++)
			res[i] = min;
		return CM_OK;
	}
	memcpy(buf, bits, nbytes);
	memset(buf + nbytes, 0, sizeof(buf) - nbytes);
	for (uint32_t i = 0; i < len; i++) {
		size_t bit = (size_t)i * w, sh = bit % 8;
		uint64_t x = be64(buf + bit / 8);
		if (sh)
			x = x << sh | buf[bit / 8 + 8] >> (8 - sh);
		res[i] = min + (x >> (64 - w));
	}
	return CM_OK;
}

/* The next len residuals, as varints or one packed group. */
static int get_residuals(cm_rd *r, uint32_t len, int packed, uint64_t *res)
{
	if (packed)
		return unpack_group(r, len, res);
	for (uint32_t i = 0; i < len; i++) {
		uint64_t z;
		if (rd_uv(r, &z))
			return CM_ECORRUPT;
		res[i] = (uint64_t)unzz(z);
	}
	return CM_OK;
}

static int get_values(cm_rd *r, uint32_t n, int packed, cm_sample *out)
{
	const uint8_t *h;
	uint64_t g, z, m, d = 0, res[GROUP];
	if (cm_rd_bytes(r, 2, &h) || h[0] > MAX_K || h[1] < 1 || h[1] > 2 || rd_uv(r, &g) || g == 0 ||
	    rd_uv(r, &z))
		return CM_ECORRUPT;
	double scale = p10[h[0]];
	int order2 = h[1] == 2;
	m = (uint64_t)unzz(z);
	for (uint32_t i = 0; i < n;) {
		int64_t sm = (int64_t)m;
		if (sm <= -MAX_EXACT || sm >= MAX_EXACT)
			return CM_ECORRUPT;
		out[i++].v = (double)sm / scale;
		uint32_t len = n - i < GROUP ? n - i : GROUP;
		if (!len || get_residuals(r, len, packed, res))
			return len ? CM_ECORRUPT : CM_OK;
		for (uint32_t j = 0; j + 1 < len; j++) {
			d = order2 ? d + res[j] * g : res[j] * g;
			m += d;
			sm = (int64_t)m;
			if (sm <= -MAX_EXACT || sm >= MAX_EXACT)
				return CM_ECORRUPT;
			out[i++].v = (double)sm / scale;
		}
		d = order2 ? d + res[len - 1] * g : res[len - 1] * g;
		m += d;
	}
	return CM_OK;
}

int ts__frame_decode(const uint8_t *p, size_t len, uint32_t n, cm_sample *out)
{
	cm_rd r;
	if (len < 1 || n == 0)
		return CM_ECORRUPT;
	if (p[0] == ENC_GORILLA) {
		ts__dec d;
		uint32_t k = 0;
		int rc;
		ts__dec_init(&d, p + 1, len - 1, n);
		while ((rc = ts__dec_next(&d, out + k)) == 1)
			k++;
		return rc < 0 || k != n ? CM_ECORRUPT : CM_OK;
	}
	if (p[0] != ENC_DECIMAL && p[0] != ENC_PACKED)
		return CM_ECORRUPT;
	cm_rd_init(&r, p + 1, len - 1);
	if (get_times(&r, n, out) || get_values(&r, n, p[0] == ENC_PACKED, out) || cm_rd_left(&r))
		return CM_ECORRUPT;
	return CM_OK;
}
