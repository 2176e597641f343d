/* fuzz_dn_packet.c -- libFuzzer harness: dnsd's packet parser and answer path on arbitrary bytes.
 *
 * Every input goes through dn_parse_query and then dn_answer over a small zone with every record kind
 * (ClusterIP with SRV, headless with endpoints, ExternalName, reverse names), over UDP limits and TCP.
 * An answer must be a well-formed message: it is parsed back and its header and question are checked.
 * The zone is built once per process (libFuzzer calls the harness millions of times).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "dn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static dn_zone *zone(void)
{
	static dn_zone *z;
	if (z)
		return z;
	static const char *const ips[] = {"10.96.0.20", "fd00::20"};
	static const dn_port ports[] = {{"http", "TCP", 80}, {"dns", "UDP", 53}};
	static const dn_endpoint eps[] = {{"10.244.1.5", "db-0", 1}, {"10.244.1.6", NULL, 1}, {"fd00::6", NULL, 1}};
	const dn_service s[] = {
	    {.name = "web",
	     .ns = "default",
	     .kind = DN_SVC_CLUSTERIP,
	     .cluster_ips = ips,
	     .ncluster_ips = 2,
	     .ports = ports,
	     .nports = 2},
	    {.name = "db",
	     .ns = "prod",
	     .kind = DN_SVC_HEADLESS,
	     .ports = ports,
	     .nports = 2,
	     .endpoints = eps,
	     .nendpoints = 3},
	    {.name = "ext", .ns = "default", .kind = DN_SVC_EXTERNAL, .external_name = "api.example.com"},
	};
	dn_zone_config cfg = {.domain = "cluster.local", .ttl = 5, .serial = 1};
	cm_err err;
	if (dn_zone_build(&cfg, s, CM_ARRAY_LEN(s), &z, NULL, &err))
		abort();
	return z;
}

static void check_answer(const uint8_t *q, size_t qlen, const uint8_t *a, size_t n, size_t limit)
{
	dn_query pq;
	if (n > limit || n < 12 || memcmp(a, q, 2) || !(a[2] & 0x80))
		abort();
	int rc = dn_parse_query(q, qlen, &pq);
	if (rc == DN_RC_NOERROR && (a[4] << 8 | a[5]) != 1)
		abort(); /* a parsed query gets its question back */
	size_t off = 12;
	uint8_t name[DN_NAME_MAX];
	size_t nl;
	if ((a[4] | a[5]) && dn_name_unpack(a, n, &off, name, &nl))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[65536];
	dn_query q;
	dn_parse_query(data, size, &q);
	const size_t limits[][2] = {{0, 0}, {4096, 0}, {0, 1}};
	for (size_t i = 0; i < CM_ARRAY_LEN(limits); i++) {
		dn_answer_info ai;
		size_t n = dn_answer(zone(), data, size, out, sizeof(out), limits[i][0], (int)limits[i][1], &ai);
		if (n)
			check_answer(data, size, out, n, limits[i][1] ? 65535 : limits[i][0] ? 4096 : 1232);
	}
	return 0;
}
