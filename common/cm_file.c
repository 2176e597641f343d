/* cm_file.c -- whole-buffer I/O, small whole-file reads (cgroup, /proc, token files) and secrets.
 *
 * cm_read_file is for files of a few KiB that the kernel or an operator writes; it reads until EOF and
 * fails with CM_E2BIG rather than returning a silently cut file. Secrets are compared in constant time
 * and never logged by this code.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm.h"

int cm_read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t n = 0;
	int rc = CM_OK;
	for (;;) {
		if (n + 1 >= cap) {
			rc = CM_E2BIG;
			break;
		}
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (rc)
		return rc;
	buf[n] = 0;
	if (len)
		*len = n;
	return CM_OK;
}

int cm_read_secret(const char *path, const char *env, char *buf, size_t cap, cm_err *err)
{
	size_t n;
	if (path && *path) {
		int rc = cm_read_file(path, buf, cap, &n);
		if (rc)
			return cm_errf(err, rc, "cannot read token file %s: %s", path, cm_strerror(rc));
	} else {
		const char *v = env ? getenv(env) : NULL;
		if (!v || !*v)
			return cm_errf(err, CM_ENOENT, "no token: give a token file or set %s", env ? env : "it");
		n = strlen(v);
		if (n + 1 > cap)
			return cm_errf(err, CM_E2BIG, "token in %s is too long", env);
		memcpy(buf, v, n + 1);
	}
	buf[strcspn(buf, "\r\n")] = 0;
	if (!*buf)
		return cm_errf(err, CM_EINVAL, "token is empty");
	return CM_OK;
}

int cm_secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char diff = alen != blen;
	size_t n = alen < blen ? alen : blen;
	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

int cm_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t r = write(fd, b, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		b += r, n -= (size_t)r;
	}
	return CM_OK;
}

int cm_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t r = pwrite(fd, b, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return CM_EIO;
		b += r, n -= (size_t)r, off += (uint64_t)r;
	}
	return CM_OK;
}

int cm_pread_all(int fd, void *p, size_t n, uint64_t off)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = pread(fd, b, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return CM_ECORRUPT;
		b += r, n -= (size_t)r, off += (uint64_t)r;
	}
	return CM_OK;
}
