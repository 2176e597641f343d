/* ag_ui.c -- serves the web UI's static files at /ui/ (dashboards/web, installed next to the binary).
 *
 * The build copies dashboards/web/src and uPlot's module into <build>/ui (cmake target corral-ui), so
 * the aggregator finds them as "ui" next to its own executable; --ui-dir overrides that. Called on an
 * HTTP worker thread by ag_http.c's route table for "/", "/ui" and every "/ui/..." path.
 *
 * What it answers:
 *   GET /, GET /ui          301 to /ui/
 *   GET /ui/                index.html
 *   GET /ui/<path>          the file, if <path> is made of [A-Za-z0-9._-] segments separated by single
 *                           slashes, no segment starts with a dot (so no "..", no hidden files), the
 *                           extension is one we know (html js css svg json png ico map), and it is a
 *                           regular file of at most 4 MiB (symlinks are not followed: O_NOFOLLOW on the
 *                           last component, and no segment may be a symlink since every segment is
 *                           opened relative to the previous one).
 *   anything else           404 (or 503 when no UI directory exists)
 * Caching: an ETag from (size, mtime ns, inode); If-None-Match answers 304. Every answer says
 * Cache-Control: no-cache (revalidate each time: modules change with the binary and are small) plus
 * X-Content-Type-Options: nosniff and a Content-Security-Policy that allows only same-origin scripts
 * and connections, so data rendered by the UI can never load or run code.
 * It never writes, and reads only below the UI directory.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_int.h"

#define UI_MAX_FILE (4u << 20)
#define UI_MAX_DEPTH 8

static const char CSP[] = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                          "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                          "frame-ancestors 'none'";

static const struct {
	const char *ext, *type;
} types[] = {
	{".html", "text/html; charset=utf-8"},  {".js", "text/javascript; charset=utf-8"},
	{".css", "text/css; charset=utf-8"},    {".svg", "image/svg+xml"},
	{".json", "application/json"},          {".png", "image/png"},
	{".ico", "image/x-icon"},               {".map", "application/json"},
};

void ag__ui_dir(const ag_config *cfg, char *out, size_t cap)
{
	struct stat st;
	out[0] = 0;
	if (cfg->ui_dir) {
		snprintf(out, cap, "%s", cfg->ui_dir);
		return;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = 0;
	char *slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = 0;
	snprintf(out, cap, "%s/ui", exe);
	if (stat(out, &st) || !S_ISDIR(st.st_mode))
		out[0] = 0;
}

static const char *content_type(const char *path)
{
	const char *dot = strrchr(path, '.');
	for (size_t i = 0; dot && i < CM_ARRAY_LEN(types); i++)
		if (!strcmp(dot, types[i].ext))
			return types[i].type;
	return NULL;
}

/* 1 when rel ("a/b.js") is a path we are willing to open: see the rules at the top of the file. */
static int path_ok(const char *rel)
{
	size_t seg = 0, depth = 1;
	if (!*rel)
		return 0;
	for (const char *p = rel; *p; p++) {
		char c = *p;
		if (c == '/') {
			if (!seg || ++depth > UI_MAX_DEPTH)
				return 0;
			seg = 0;
			continue;
		}
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		         c == '_' || (c == '.' && seg > 0);
		if (!ok)
			return 0;
		seg++;
	}
	return seg > 0 && content_type(rel) != NULL;
}

/* Opens rel below dir one segment at a time, never following a symlink; -1 with errno on failure. */
static int open_below(const char *dir, const char *rel)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char seg[256];
	while (fd >= 0) {
		const char *slash = strchr(rel, '/');
		size_t n = slash ? (size_t)(slash - rel) : strlen(rel);
		if (n >= sizeof(seg)) {
			close(fd);
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(seg, rel, n);
		seg[n] = 0;
		int next = openat(fd, seg, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : 0));
		close(fd);
		fd = next;
		if (!slash)
			break;
		rel = slash + 1;
	}
	return fd;
}

static void not_found(ag__resp *resp)
{
	ag__resp_error(resp, 404, "not_found", "no such file in the web UI");
}

static void redirect(ag__resp *resp)
{
	resp->status = 301;
	resp->content_type = "text/plain";
	ag__resp_header(resp, "Location", "/ui/");
	cm_buf_puts(&resp->body, "see /ui/\n");
}

/* Reads the opened file fd (stat st) into the body; 0 or a CM_E* code. */
static int read_body(int fd, const struct stat *st, ag__resp *resp)
{
	size_t size = (size_t)st->st_size;
	if (cm_buf_reserve(&resp->body, size + 1))
		return CM_ENOMEM;
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, resp->body.data + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return CM_EIO;
		got += (size_t)n;
	}
	resp->body.len = got;
	return CM_OK;
}

static void send_file(int fd, const char *rel, const ag__req *req, ag__resp *resp)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > UI_MAX_FILE)
		return not_found(resp);
	char etag[80];
	snprintf(etag, sizeof(etag), "\"%llx-%llx-%lx-%llx\"", (unsigned long long)st.st_size,
	         (unsigned long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
	const char *tag = cm_arena_strdup(req->arena, etag);
	if (!tag)
		return ag__resp_error(resp, 500, "internal", "out of memory");
	ag__resp_header(resp, "ETag", tag);
	if (req->if_none_match && strstr(req->if_none_match, etag)) {
		resp->status = 304;
		return;
	}
	if (read_body(fd, &st, resp)) {
		resp->body.len = 0;
		return ag__resp_error(resp, 500, "internal", "cannot read the file");
	}
	resp->status = 200;
	resp->content_type = content_type(rel);
}

void ag__ui_serve(const char *dir, const ag__req *req, ag__resp *resp)
{
	ag__resp_header(resp, "Cache-Control", "no-cache");
	ag__resp_header(resp, "X-Content-Type-Options", "nosniff");
	ag__resp_header(resp, "Content-Security-Policy", CSP);
	if (strcmp(req->method, "GET"))
		return ag__resp_error(resp, 405, "bad_data", "method not allowed");
	if (!strcmp(req->url, "/") || !strcmp(req->url, "/ui"))
		return redirect(resp);
	if (!dir || !*dir)
		return ag__resp_error(resp, 503, "unavailable",
		                      "the web UI is not installed (no ui directory next to the binary; see --ui-dir)");
	const char *rel = req->url + strlen("/ui/");
	if (!*rel)
		rel = "index.html";
	if (!path_ok(rel))
		return not_found(resp);
	int fd = open_below(dir, rel);
	if (fd < 0)
		return not_found(resp);
	send_file(fd, rel, req, resp);
	close(fd);
}
