/* cm_net.c -- listen addresses: "ADDR:PORT" text to a socket address, for every daemon's --listen.
 *
 * IPv6 addresses are bracketed ("[::1]:9300"); an empty host means all IPv4 addresses. Names are not
 * resolved: a daemon binds to an address, not to what DNS says today.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cm.h"

int cm_parse_listen(const char *flag, const char *s, struct sockaddr_storage *out, cm_err *err)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	const char *colon = strrchr(s, ':');
	char host[64];
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return cm_errf(err, CM_EINVAL, "--%s %s: expected ADDR:PORT", flag, s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return cm_errf(err, CM_EINVAL, "--%s %s: bad port", flag, s);
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		host[hl - 1] = 0;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
			return cm_errf(err, CM_EINVAL, "--%s %s: bad IPv6 address", flag, s);
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		if (*host && inet_pton(AF_INET, host, &in4->sin_addr) != 1)
			return cm_errf(err, CM_EINVAL, "--%s %s: bad IPv4 address", flag, s);
	}
	*out = ss;
	return CM_OK;
}
