/* ls_path.c -- container metadata from a log file's path, as the kubelet lays the files out.
 *
 *   /var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log       (the real files)
 *   /var/log/containers/<pod>_<namespace>_<container>-<container id>.log            (symlinks to them)
 *
 * Kubernetes names (DNS labels and subdomains, UIDs) never hold "_", so the fields split on it; a
 * container name may hold "-", so the id is what follows the last one. Called by ls_tail.c's discovery.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "ls_int.h"

static int copy_field(char *dst, size_t cap, const char *s, size_t n)
{
	if (n == 0 || n >= cap || memchr(s, '/', n))
		return CM_EINVAL;
	memcpy(dst, s, n);
	dst[n] = 0;
	return 0;
}

/* Splits "a_b_c" (exactly two underscores, no empty part) into the three fields. */
static int split3(const char *s, size_t n, char *a, size_t ca, char *b, size_t cb, char *c, size_t cc)
{
	const char *u1 = memchr(s, '_', n);
	if (!u1)
		return CM_EINVAL;
	const char *u2 = memchr(u1 + 1, '_', (size_t)(s + n - u1 - 1));
	if (!u2 || memchr(u2 + 1, '_', (size_t)(s + n - u2 - 1)))
		return CM_EINVAL;
	if (copy_field(a, ca, s, (size_t)(u1 - s)) || copy_field(b, cb, u1 + 1, (size_t)(u2 - u1 - 1)) ||
	    copy_field(c, cc, u2 + 1, (size_t)(s + n - u2 - 1)))
		return CM_EINVAL;
	return 0;
}

static int ends_with(const char *s, size_t n, const char *suf)
{
	size_t k = strlen(suf);
	return n >= k && !memcmp(s + n - k, suf, k);
}

int ls__meta_from_pods_path(const char *path, ls__meta *m)
{
	size_t n = strlen(path);
	const char *comp[3]; /* starts of the last three components */
	const char *end = path + n;
	const char *p = end;
	for (int i = 2; i >= 0; i--) {
		while (p > path && p[-1] != '/')
			p--;
		comp[i] = p;
		if (p == path)
			return CM_EINVAL;
		p--;
	}
	if (!ends_with(comp[2], (size_t)(end - comp[2]), ".log"))
		return CM_EINVAL;
	ls__meta r = {{0}};
	if (split3(comp[0], (size_t)(comp[1] - 1 - comp[0]), r.ns, sizeof(r.ns), r.pod, sizeof(r.pod), r.uid,
		   sizeof(r.uid)) ||
	    copy_field(r.container, sizeof(r.container), comp[1], (size_t)(comp[2] - 1 - comp[1])))
		return CM_EINVAL;
	*m = r;
	return 0;
}

int ls__meta_from_containers_path(const char *path, ls__meta *m)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	size_t n = strlen(base);
	if (!ends_with(base, n, ".log"))
		return CM_EINVAL;
	n -= 4;
	const char *dash = NULL;
	for (size_t i = n; i > 0; i--)
		if (base[i - 1] == '-') {
			dash = base + i - 1;
			break;
		}
	ls__meta r = {{0}};
	if (!dash || copy_field(r.container_id, sizeof(r.container_id), dash + 1, (size_t)(base + n - dash - 1)))
		return CM_EINVAL;
	if (split3(base, (size_t)(dash - base), r.pod, sizeof(r.pod), r.ns, sizeof(r.ns), r.container,
		   sizeof(r.container)))
		return CM_EINVAL;
	*m = r;
	return 0;
}
