/* ag_auth.c -- bearer tokens of the aggregator: push tokens (optionally bound to a node), the optional read
 * token, both re-read from their files on change without a restart.
 *
 * Every route that writes (agent push, Loki push, bulk import, service registry changes, and the
 * remote_write receiver) calls ag__auth_push; ag_http.c calls ag__auth_read before every read API when a
 * read token is configured. The push tokens do not grant reads then: a node's token leaks no cluster
 * data, and a read token never grants a push. Without a read token, reads are open (as before).
 *
 * Token file format (--token-file, --read-token-file), text, one entry per line:
 *
 *     # comment                  ignored, as are blank lines
 *     TOKEN                      valid for any node
 *     NODE=TOKEN                 valid only for batches whose node is NODE (push file only)
 *
 * Blanks and '\r' around an entry are trimmed. A line is NODE=TOKEN when it has a '=' followed by at
 * least one character other than '=' (so base64 tokens with '=' padding stay whole tokens). A token is
 * 1..1023 bytes without blanks or control characters; at most 4096 entries, 1 MiB per file. A file that
 * breaks these rules, is empty or cannot be read leaves the previous tokens in force (logged, counted).
 * Without a file the token comes from the environment (CORRAL_TOKEN, CORRAL_READ_TOKEN), read once.
 *
 * Reloading: a check at most once a second (per file, on the request path) stats the file and re-reads
 * it when its device, inode, size, mtime or ctime changed: an editor's rename, a Kubernetes Secret's
 * symlink swap, or an in-place rewrite. The new set is built off the lock and swapped in under a
 * write lock. Nothing here ever logs or formats a token; comparisons are constant-time per token.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ag_int.h"

#define MAX_ENTRIES 4096
#define MAX_FILE (1 << 20)
#define MAX_TOKEN 1023
#define CHECK_NS 1000000000LL

typedef struct tok_entry {
	char *node;  /* NULL: any node */
	char *token;
	size_t len;
} tok_entry;

typedef struct tok_set {
	tok_entry *e;
	size_t n;
} tok_set;

typedef struct tok_file {
	const char *what;  /* "push" or "read", for messages */
	char *path;        /* NULL: from the environment, never reloaded */
	tok_set set;
	struct stat st;
	atomic_int_fast64_t next_check_ns;
	cm_ratelimit rl;
} tok_file;

struct ag__auth {
	pthread_rwlock_t lock;  /* guards both sets */
	pthread_mutex_t reload_lock;
	tok_file push, read;
	atomic_uint_fast64_t reloads, reload_errors, denied;
};

static void set_free(tok_set *s)
{
	for (size_t i = 0; i < s->n; i++) {
		memset(s->e[i].token, 0, s->e[i].len);
		free(s->e[i].token);
		free(s->e[i].node);
	}
	free(s->e);
	*s = (tok_set){0};
}

static int valid_token(const char *p, size_t n)
{
	if (n == 0 || n > MAX_TOKEN)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f)
			return 0;
	return 1;
}

/* Splits NODE=TOKEN (see the format above); node is NULL for a plain token. */
static void split_entry(const char *p, size_t n, const char **node, size_t *nl, const char **tok, size_t *tl)
{
	const char *eq = memchr(p, '=', n);
	size_t rest = eq ? n - (size_t)(eq - p) - 1 : 0, pad = 0;
	while (pad < rest && eq[1 + pad] == '=')
		pad++;
	if (eq && eq > p && pad < rest) {
		*node = p, *nl = (size_t)(eq - p), *tok = eq + 1, *tl = rest;
	} else {
		*node = NULL, *nl = 0, *tok = p, *tl = n;
	}
}

static int set_add(tok_set *s, const char *p, size_t n, int allow_node, cm_err *err, int line)
{
	const char *node, *tok;
	size_t nl, tl;
	split_entry(p, n, &node, &nl, &tok, &tl);
	if (node && !allow_node)
		node = NULL, tok = p, tl = n;
	if (!valid_token(tok, tl) || (node && !valid_token(node, nl)))
		return cm_errf(err, CM_EINVAL, "line %d: not a token (blanks, control characters or over %d bytes)",
			       line, MAX_TOKEN);
	if (s->n == MAX_ENTRIES)
		return cm_errf(err, CM_E2BIG, "more than %d tokens", MAX_ENTRIES);
	if (s->n % 16 == 0) {
		tok_entry *ne = realloc(s->e, (s->n + 16) * sizeof(*ne));
		if (!ne)
			return cm_errf(err, CM_ENOMEM, "out of memory");
		s->e = ne;
	}
	tok_entry *e = &s->e[s->n];
	*e = (tok_entry){.token = strndup(tok, tl), .len = tl, .node = node ? strndup(node, nl) : NULL};
	if (!e->token || (node && !e->node)) {
		free(e->token), free(e->node);
		return cm_errf(err, CM_ENOMEM, "out of memory");
	}
	s->n++;
	return CM_OK;
}

/* Parses a whole file's text into out (empty on failure). */
static int set_parse(const char *text, size_t len, int allow_node, tok_set *out, cm_err *err)
{
	tok_set s = {0};
	int rc = CM_OK, line = 0;
	for (const char *p = text, *end = text + len; p < end && !rc;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl ? nl : end;
		const char *a = p, *b = stop;
		line++;
		while (a < b && isspace((unsigned char)*a))
			a++;
		while (b > a && isspace((unsigned char)b[-1]))
			b--;
		if (a < b && *a != '#')
			rc = set_add(&s, a, (size_t)(b - a), allow_node, err, line);
		p = stop + 1;
	}
	if (!rc && !s.n)
		rc = cm_errf(err, CM_EINVAL, "no token in it");
	if (rc) {
		set_free(&s);
		return rc;
	}
	*out = s;
	return CM_OK;
}

int ag__auth_parse(const char *text, size_t len, int allow_node, size_t *ntokens, size_t *nbound, cm_err *err)
{
	tok_set s;
	int rc = set_parse(text, len, allow_node, &s, err);
	if (rc)
		return rc;
	*ntokens = s.n, *nbound = 0;
	for (size_t i = 0; i < s.n; i++)
		*nbound += s.e[i].node != NULL;
	set_free(&s);
	return CM_OK;
}

static int read_set(const char *path, int allow_node, tok_set *out, struct stat *st, cm_err *err)
{
	char *buf = malloc(MAX_FILE + 1);
	size_t n = 0;
	if (!buf)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	int rc = stat(path, st) ? -errno : cm_read_file(path, buf, MAX_FILE + 1, &n);
	if (rc)
		cm_errf(err, rc, "%s", cm_strerror(rc));
	else
		rc = set_parse(buf, n, allow_node, out, err);
	memset(buf, 0, n);
	free(buf);
	return rc;
}

static int file_init(tok_file *f, const char *what, const char *path, const char *env, int allow_node, cm_err *err)
{
	f->what = what;
	if (!path || !*path) {
		const char *v = getenv(env);
		return v && *v ? set_parse(v, strlen(v), allow_node, &f->set, err) : CM_OK;
	}
	if (!(f->path = strdup(path)))
		return cm_errf(err, CM_ENOMEM, "out of memory");
	cm_err e = {{0}};
	int rc = read_set(path, allow_node, &f->set, &f->st, &e);
	if (rc)
		return cm_errf(err, rc, "%s token file %s: %s", what, path, e.msg);
	atomic_store(&f->next_check_ns, cm_mono_ns() + CHECK_NS);
	return CM_OK;
}

int ag__auth_create(const char *push_file, const char *read_file, ag__auth **out, cm_err *err)
{
	ag__auth *a = calloc(1, sizeof(*a));
	if (!a)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	pthread_rwlock_init(&a->lock, NULL);
	pthread_mutex_init(&a->reload_lock, NULL);
	int rc = file_init(&a->push, "push", push_file, "CORRAL_TOKEN", 1, err);
	if (!rc && !a->push.set.n)
		rc = cm_errf(err, CM_ENOENT, "no push token: give --token-file or set CORRAL_TOKEN");
	if (!rc)
		rc = file_init(&a->read, "read", read_file, "CORRAL_READ_TOKEN", 0, err);
	if (rc) {
		ag__auth_destroy(a);
		return rc;
	}
	*out = a;
	return CM_OK;
}

void ag__auth_destroy(ag__auth *a)
{
	if (!a)
		return;
	set_free(&a->push.set);
	set_free(&a->read.set);
	free(a->push.path);
	free(a->read.path);
	pthread_rwlock_destroy(&a->lock);
	pthread_mutex_destroy(&a->reload_lock);
	free(a);
}

static int same_file(const struct stat *x, const struct stat *y)
{
	return x->st_dev == y->st_dev && x->st_ino == y->st_ino && x->st_size == y->st_size &&
	       x->st_mtim.tv_sec == y->st_mtim.tv_sec && x->st_mtim.tv_nsec == y->st_mtim.tv_nsec &&
	       x->st_ctim.tv_sec == y->st_ctim.tv_sec && x->st_ctim.tv_nsec == y->st_ctim.tv_nsec;
}

static void reload(ag__auth *a, tok_file *f)
{
	struct stat st;
	if (stat(f->path, &st) == 0 && same_file(&st, &f->st))
		return;
	tok_set s = {0};
	cm_err err = {{0}};
	int rc = read_set(f->path, f == &a->push, &s, &st, &err);
	if (rc) {
		atomic_fetch_add(&a->reload_errors, 1);
		CM_LOG_RL(&f->rl, CM_LOG_WARN, "auth", "%s token file %s: %s; the previous tokens stay in force", f->what,
			  f->path, err.msg);
		return;
	}
	pthread_rwlock_wrlock(&a->lock);
	tok_set old = f->set;
	f->set = s;
	f->st = st;
	pthread_rwlock_unlock(&a->lock);
	set_free(&old);
	atomic_fetch_add(&a->reloads, 1);
	CM_LOG(CM_LOG_INFO, "auth", "%s token file %s reloaded: %zu token(s)", f->what, f->path, s.n);
}

/* At most one stat per second per file, by whichever request comes first. */
static void maybe_reload(ag__auth *a, tok_file *f)
{
	int64_t now = cm_mono_ns(), due = atomic_load(&f->next_check_ns);
	if (!f->path || now < due || !atomic_compare_exchange_strong(&f->next_check_ns, &due, now + CHECK_NS))
		return;
	pthread_mutex_lock(&a->reload_lock);
	reload(a, f);
	pthread_mutex_unlock(&a->reload_lock);
}

static const char *bearer(const char *authorization)
{
	static const char prefix[] = "Bearer ";
	if (!authorization || strncasecmp(authorization, prefix, sizeof(prefix) - 1))
		return NULL;
	return authorization + sizeof(prefix) - 1;
}

/* Index of the entry t matches, or -1; looks at every entry whatever matches. */
static long match(const tok_set *s, const char *t)
{
	size_t tl = strlen(t);
	long hit = -1;
	for (size_t i = 0; i < s->n; i++)
		if (cm_secret_equal(t, tl, s->e[i].token, s->e[i].len) && hit < 0)
			hit = (long)i;
	return hit;
}

int ag__auth_push(ag__auth *a, const char *authorization, char *node, size_t cap)
{
	const char *t = bearer(authorization);
	if (cap)
		node[0] = 0;
	if (!t) {
		atomic_fetch_add(&a->denied, 1);
		return 0;
	}
	maybe_reload(a, &a->push);
	pthread_rwlock_rdlock(&a->lock);
	long i = match(&a->push.set, t);
	if (i >= 0 && a->push.set.e[i].node && cap)
		snprintf(node, cap, "%s", a->push.set.e[i].node);
	pthread_rwlock_unlock(&a->lock);
	if (i < 0)
		atomic_fetch_add(&a->denied, 1);
	return i >= 0;
}

int ag__auth_read(ag__auth *a, const char *authorization)
{
	if (!a->read.path && !a->read.set.n)
		return 1; /* no read token configured: reads are open */
	maybe_reload(a, &a->read);
	const char *t = bearer(authorization);
	pthread_rwlock_rdlock(&a->lock);
	int ok = t && match(&a->read.set, t) >= 0;
	pthread_rwlock_unlock(&a->lock);
	if (!ok)
		atomic_fetch_add(&a->denied, 1);
	return ok;
}

/* ---- bearer tokens over WebSocket ------------------------------------------------------------------ */

static int b64url_val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	return ch == '-' ? 62 : ch == '_' ? 63 : -1;
}

/* "Bearer <the decoded token>" in the arena, or NULL when p is not base64url of a valid token. */
static const char *b64url_bearer(cm_arena *a, const char *p, size_t n)
{
	char *out = n <= 4 * MAX_TOKEN / 3 + 4 ? cm_arena_alloc(a, 8 + n) : NULL;
	if (!out)
		return NULL;
	size_t o = 7;
	memcpy(out, "Bearer ", 7);
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_val((unsigned char)p[i]);
		if (v < 0)
			return NULL;
		acc = acc << 6 | (uint32_t)v, bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(acc >> bits & 0xff);
		}
	}
	out[o] = 0;
	return valid_token(out + 7, o - 7) ? out : NULL;
}

int ag__auth_ws_protocols(const char *protocols, cm_arena *a, const char **authorization)
{
	int corral = 0;
	for (const char *p = protocols; p && *p;) {
		p += strspn(p, " \t,");
		size_t n = strcspn(p, " \t,");
		const char *tok;
		if (n == 6 && !strncmp(p, "corral", 6))
			corral = 1;
		else if (n > 7 && !strncmp(p, "bearer.", 7) && !*authorization && (tok = b64url_bearer(a, p + 7, n - 7)))
			*authorization = tok;
		p += n;
	}
	return corral;
}

int ag__auth_metrics(ag__auth *a, cm_buf *out)
{
	if (!a)
		return CM_OK;
	pthread_rwlock_rdlock(&a->lock);
	size_t np = a->push.set.n, nr = a->read.set.n;
	pthread_rwlock_unlock(&a->lock);
	return cm_buf_printf(out,
			     "# HELP corral_auth_tokens Tokens in force, by kind.\n# TYPE corral_auth_tokens gauge\n"
			     "corral_auth_tokens{kind=\"push\"} %zu\ncorral_auth_tokens{kind=\"read\"} %zu\n"
			     "# HELP corral_auth_reloads_total Token files re-read after a change.\n"
			     "# TYPE corral_auth_reloads_total counter\ncorral_auth_reloads_total %llu\n"
			     "# HELP corral_auth_reload_errors_total Token file changes refused (previous tokens kept).\n"
			     "# TYPE corral_auth_reload_errors_total counter\ncorral_auth_reload_errors_total %llu\n"
			     "# HELP corral_auth_denied_total Requests refused for a missing or wrong token.\n"
			     "# TYPE corral_auth_denied_total counter\ncorral_auth_denied_total %llu\n",
			     np, nr, (unsigned long long)atomic_load(&a->reloads),
			     (unsigned long long)atomic_load(&a->reload_errors), (unsigned long long)atomic_load(&a->denied));
}
