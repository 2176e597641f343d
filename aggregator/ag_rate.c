/* ag_rate.c -- --http-rate-per-ip: a token bucket per client address in front of every HTTP request.
 *
 * ag_http.c asks ag__rate_allow once per request (never for /healthz, so probes are not starved) and
 * answers 429 with Retry-After: 1 when the client's bucket is empty. A bucket holds up to one second of
 * requests (at least 1) and refills continuously. Clients are IPv4 addresses and IPv6 /64 prefixes
 * (one host usually owns a whole /64).
 *
 * The table has a fixed 4,096 slots: a client hashes to one; a different client in the slot replaces it
 * with a full bucket, so memory never grows with the number of clients, and a collision can only loosen
 * the limit, never refuse a client that stays under it. Slots are guarded by 64 striped mutexes (held for
 * a few instructions). Off (NULL) when the rate is 0.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define NSLOTS 4096
#define NLOCKS 64

typedef struct slot {
	uint64_t key;  /* 0: empty */
	double tokens;
	int64_t last_ns;
} slot;

struct ag__rate {
	double per_sec, burst;
	pthread_mutex_t locks[NLOCKS];
	slot slots[NSLOTS];
	atomic_uint_fast64_t limited;
};

int ag__rate_create(long per_sec, ag__rate **out, cm_err *err)
{
	*out = NULL;
	if (per_sec < 0)
		return cm_errf(err, CM_EINVAL, "--http-rate-per-ip must be 0 (off) or more");
	if (per_sec == 0)
		return CM_OK;
	ag__rate *r = calloc(1, sizeof(*r));
	if (!r)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	r->per_sec = (double)per_sec;
	r->burst = r->per_sec < 1 ? 1 : r->per_sec;
	for (size_t i = 0; i < NLOCKS; i++)
		pthread_mutex_init(&r->locks[i], NULL);
	*out = r;
	return CM_OK;
}

void ag__rate_destroy(ag__rate *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < NLOCKS; i++)
		pthread_mutex_destroy(&r->locks[i]);
	free(r);
}

/* The client's key: the IPv4 address or the IPv6 /64, never 0. */
static uint64_t client_key(const struct sockaddr *sa)
{
	uint64_t k = 0;
	if (sa && sa->sa_family == AF_INET) {
		k = ((const struct sockaddr_in *)sa)->sin_addr.s_addr | (1ULL << 40);
	} else if (sa && sa->sa_family == AF_INET6) {
		memcpy(&k, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, 8);
		k ^= 2ULL << 60;
	}
	k *= 0x9E3779B97F4A7C15ULL; /* spread the bits over the table index */
	return k ? k : 1;
}

int ag__rate_allow(ag__rate *r, const struct sockaddr *sa)
{
	if (!r)
		return 1;
	uint64_t key = client_key(sa);
	size_t i = (size_t)(key >> 52) % NSLOTS;
	int64_t now = cm_mono_ns();
	pthread_mutex_t *mu = &r->locks[i % NLOCKS];
	pthread_mutex_lock(mu);
	slot *s = &r->slots[i];
	if (s->key != key)
		*s = (slot){.key = key, .tokens = r->burst, .last_ns = now};
	s->tokens += (double)(now - s->last_ns) / 1e9 * r->per_sec;
	if (s->tokens > r->burst)
		s->tokens = r->burst;
	s->last_ns = now;
	int ok = s->tokens >= 1;
	if (ok)
		s->tokens -= 1;
	pthread_mutex_unlock(mu);
	if (!ok)
		atomic_fetch_add(&r->limited, 1);
	return ok;
}

int ag__rate_metrics(ag__rate *r, cm_buf *out)
{
	return cm_buf_printf(out,
			     "# HELP corral_http_rate_limited_total Requests answered 429 by --http-rate-per-ip.\n"
			     "# TYPE corral_http_rate_limited_total counter\ncorral_http_rate_limited_total %llu\n",
			     r ? (unsigned long long)atomic_load(&r->limited) : 0ULL);
}
