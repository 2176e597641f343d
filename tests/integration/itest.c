/* itest.c -- integration test helpers: processes, loopback HTTP (libcurl), JSON (jansson), temp dirs.
 *
 * See itest.h. Children run in their own process group so a stop reaches anything they started.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"

void itest_mkdtemp(char *out, size_t cap)
{
	snprintf(out, cap, "/tmp/corral-itest-XXXXXX");
	if (!mkdtemp(out)) {
		perror("mkdtemp");
		abort();
	}
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

void itest_rmtree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

int itest_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len))
		abort();
	close(fd);
	return ntohs(a.sin_port);
}

void itest_bin(char *out, size_t cap, const char *name)
{
	const char *bin = getenv("CORRAL_BIN");
	snprintf(out, cap, "%s/%s", bin ? bin : ".", name);
}

int itest_spawn(itest_proc *p, const char *logdir, const char *tag, char *const argv[])
{
	snprintf(p->log, sizeof(p->log), "%s/%s.log", logdir, tag);
	int fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(fd);
		return -1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a test that crashed or failed */
		dup2(fd, 1);
		dup2(fd, 2);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fd);
	p->pid = pid;
	return 0;
}

int itest_stop(itest_proc *p, int sig, int timeout_ms)
{
	int status = 0;
	if (p->pid <= 0)
		return 0;
	kill(p->pid, sig);
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			p->pid = 0;
			return status;
		}
		itest_sleep_ms(20);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
	p->pid = 0;
	return status;
}

static char *read_log(const itest_proc *p)
{
	FILE *f = fopen(p->log, "r");
	if (!f)
		return NULL;
	cm_buf b;
	cm_buf_init(&b);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		cm_buf_append(&b, chunk, n);
	fclose(f);
	if (!b.data)
		cm_buf_append(&b, "", 0);
	size_t len;
	return (char *)cm_buf_take(&b, &len);
}

void itest_dump_log(const itest_proc *p)
{
	char *s = read_log(p);
	fprintf(stderr, "---- %s ----\n%s---- end ----\n", p->log, s ? s : "(no log)\n");
	free(s);
}

int itest_wait_log(const itest_proc *p, const char *needle, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		char *s = read_log(p);
		int found = s && strstr(s, needle);
		free(s);
		if (found)
			return 0;
		itest_sleep_ms(50);
	}
	return -1;
}

int itest_log_line(const itest_proc *p, const char *prefix, char *out, size_t cap)
{
	char *s = read_log(p), *save, *line;
	int rc = -1;
	for (line = s ? strtok_r(s, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, prefix, strlen(prefix))) {
			snprintf(out, cap, "%s", line + strlen(prefix));
			rc = 0;
			break;
		}
	}
	free(s);
	return rc;
}

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
	return ctx && cm_buf_append(ctx, p, size * n) ? 0 : size * n;
}

long itest_http(const char *method, const char *url, const char *const *headers, const void *body, size_t blen,
		cm_buf *reply)
{
	CURL *c = curl_easy_init();
	struct curl_slist *h = curl_slist_append(NULL, "Expect:");
	for (size_t i = 0; headers && headers[i]; i++)
		h = curl_slist_append(h, headers[i]);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, reply);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
	}
	long status = -1;
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return status;
}

int itest_wait_http(const char *url, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 50) {
		if (itest_http("GET", url, NULL, NULL, 0, NULL) == 200)
			return 0;
		itest_sleep_ms(50);
	}
	return -1;
}

json_t *itest_get_json(const char *url, long *status)
{
	cm_buf b;
	cm_buf_init(&b);
	*status = itest_http("GET", url, NULL, NULL, 0, &b);
	json_t *j = b.data ? json_loadb((const char *)b.data, b.len, 0, NULL) : NULL;
	cm_buf_close(&b);
	return j;
}

void itest_urlencode(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < cap; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("-_.~", *p)) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%', out[o++] = hex[*p >> 4], out[o++] = hex[*p & 15];
		}
	}
	out[o] = 0;
}

int64_t itest_now_ms(void) { return cm_now_ms(); }

void itest_sleep_ms(int ms) { nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL); }

long itest_loki_entries(const char *url, const char *selector, long long from_ns, long long to_ns)
{
	char enc[512], path[1024];
	itest_urlencode(enc, sizeof(enc), selector);
	snprintf(path, sizeof(path), "%s/loki/api/v1/index/stats?query=%s&start=%lld&end=%lld", url, enc, from_ns,
		 to_ns);
	long status;
	json_t *j = itest_get_json(path, &status);
	long n = status == 200 ? (long)json_integer_value(json_object_get(j, "entries")) : -1;
	json_decref(j);
	return n;
}

int itest_capture(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	size_t n = p ? fread(out, 1, cap - 1, p) : 0;
	out[n] = 0;
	int st = p ? pclose(p) : -1;
	return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- test cgroups ------------------------------------------------------------------------------------ */

static int ctrl_wanted(const char *list)
{
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s", list);
	for (char *save = NULL, *c = strtok_r(tmp, ",", &save); c; c = strtok_r(NULL, ",", &save))
		if (!strcmp(c, "cpu") || !strcmp(c, "cpuacct") || !strcmp(c, "memory"))
			return 1;
	return 0;
}

static int cgtree_link(itest_cgtree *t, const char *ctrls, const char *dir)
{
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s", ctrls);
	for (char *save = NULL, *c = strtok_r(tmp, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
		char link[700];
		snprintf(link, sizeof(link), "%s/%s", t->root, c);
		if (symlink(dir, link))
			return fprintf(stderr, "itest: symlink %s: %s\n", link, strerror(errno)), -1;
	}
	return 0;
}

/* v2: the tree's root is the directory itself, with cpu and memory enabled for the children (best effort:
 * a hierarchy without them still gets its cgroups). */
static int cgtree_delegate(itest_cgtree *t, const char *dir)
{
	char p[4200];
	snprintf(t->root, sizeof(t->root), "%s", dir);
	snprintf(p, sizeof(p), "%s/cgroup.subtree_control", dir);
	FILE *sc = fopen(p, "w");
	if (sc)
		fputs("+cpu +memory", sc), fclose(sc);
	return 0;
}

int itest_cgtree_make(itest_cgtree *t, const char *links_dir, const char *name)
{
	struct stat sb;
	int v2 = stat("/sys/fs/cgroup/cgroup.controllers", &sb) == 0;
	memset(t, 0, sizeof(*t));
	snprintf(t->root, sizeof(t->root), "%s/cgroot-%s", links_dir, name);
	if (!v2 && mkdir(t->root, 0755))
		return fprintf(stderr, "itest: mkdir %s: %s\n", t->root, strerror(errno)), -1;
	FILE *fp = fopen("/proc/self/cgroup", "r");
	char line[4096];
	int rc = fp ? 0 : -1;
	while (!rc && fp && fgets(line, sizeof(line), fp) && t->nparents < 3) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		char *ctrls = c1 + 1, *own = c2 + 1;
		own[strcspn(own, "\n")] = 0;
		if (v2 ? *ctrls != 0 : !ctrl_wanted(ctrls))
			continue;
		char *dir = t->parent[t->nparents];
		snprintf(dir, sizeof(t->parent[0]), "/sys/fs/cgroup%s%s%s/%s", v2 ? "" : "/", v2 ? "" : ctrls,
		         strcmp(own, "/") ? own : "", name);
		if (mkdir(dir, 0755)) {
			fprintf(stderr, "itest: mkdir %s: %s\n", dir, strerror(errno));
			rc = -1;
			break;
		}
		t->nparents++;
		if (v2)
			rc = cgtree_delegate(t, dir);
		else
			rc = cgtree_link(t, ctrls, dir);
	}
	if (fp)
		fclose(fp);
	return rc || !t->nparents ? -1 : 0;
}

int itest_cgtree_child(const itest_cgtree *t, const char *child, int mk)
{
	for (int i = 0; i < t->nparents; i++) {
		char dir[4400];
		snprintf(dir, sizeof(dir), "%s/%s", t->parent[i], child);
		if (mk ? mkdir(dir, 0755) : rmdir(dir))
			return fprintf(stderr, "itest: %s %s: %s\n", mk ? "mkdir" : "rmdir", dir, strerror(errno)), -1;
	}
	return 0;
}

void itest_cgtree_remove(itest_cgtree *t)
{
	for (int i = 0; i < t->nparents; i++)
		if (rmdir(t->parent[i]))
			fprintf(stderr, "itest: rmdir %s: %s\n", t->parent[i], strerror(errno));
	t->nparents = 0;
}

int itest_load_start(itest_load *w, const char *logdir, const char *tag, char *const argv[])
{
	memset(w, 0, sizeof(*w));
	if (itest_spawn(&w->p, logdir, tag, argv))
		return -1;
	if (itest_wait_log(&w->p, "ready", 10000)) {
		itest_dump_log(&w->p);
		return -1;
	}
	FILE *fp = fopen(w->p.log, "r");
	char line[8300];
	while (fp && fgets(line, sizeof(line), fp) && w->ndirs < 4) {
		if (sscanf(line, "cgroup %4095s %4095s", w->ids[w->ndirs], w->dirs[w->ndirs]) == 2)
			w->ndirs++;
	}
	if (fp)
		fclose(fp);
	if (!w->ndirs)
		return -1;
	snprintf(w->id, sizeof(w->id), "%s", w->ids[0]);
	return 0;
}

double itest_metric(const char *base_url, const char *name)
{
	char url[512], needle[256];
	cm_buf b;
	cm_buf_init(&b);
	snprintf(url, sizeof(url), "%s/metrics", base_url);
	double v = -1;
	if (itest_http("GET", url, NULL, NULL, 0, &b) == 200 && !cm_buf_append(&b, "", 1)) {
		snprintf(needle, sizeof(needle), "\n%s ", name);
		const char *p = strstr((const char *)b.data, needle);
		v = p ? strtod(p + strlen(needle), NULL) : -1;
	}
	cm_buf_close(&b);
	return v;
}

long itest_rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *fp = fopen(path, "r");
	long kib = 0;
	while (fp && fgets(line, sizeof(line), fp))
		if (!strncmp(line, "VmRSS:", 6))
			kib = atol(line + 6);
	if (fp)
		fclose(fp);
	return kib;
}

int itest_batch_seqs(const char *url, int64_t from_ms, int64_t to_ms, double *out, int cap)
{
	int n = 0;
	for (int64_t a = from_ms; a <= to_ms; a += 10000) {
		int64_t b = a + 9999 < to_ms ? a + 9999 : to_ms;
		char q[512];
		snprintf(q, sizeof(q), "%s/api/v1/query_range?query=corral_agent_batch_seq&start=%.3f&end=%.3f&step=0.001",
		         url, a / 1000.0, b / 1000.0);
		long st = 0;
		json_t *j = itest_get_json(q, &st), *r = json_object_get(json_object_get(j, "data"), "result"), *pt;
		size_t i;
		json_array_foreach(json_object_get(json_array_get(r, 0), "values"), i, pt)
		{
			double v = strtod(json_string_value(json_array_get(pt, 1)), NULL);
			if ((!n || v != out[n - 1]) && n < cap)
				out[n++] = v;
		}
		json_decref(j);
	}
	return n;
}

int itest_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return 1;
#endif
#endif
	return 0;
}

void itest_write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(s, f) < 0 || fclose(f)) {
		perror(path);
		abort();
	}
}

int itest_make_certs(const char *dir)
{
	static const char *const cmds[] = {
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt "
	    "-days 2 -subj /CN=corral-test-ca",
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr "
	    "-subj /CN=127.0.0.1",
	    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && "
	    "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf "
	    "-out server.crt"};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		char full[2048];
		snprintf(full, sizeof(full), "cd '%s' && (%s) >>openssl.out 2>&1", dir, cmds[i]);
		if (system(full) != 0) {
			fprintf(stderr, "command failed: %s (see %s/openssl.out)\n", cmds[i], dir);
			return -1;
		}
	}
	return 0;
}

int itest_aggregator_start(itest_proc *p, const char *logdir, const char *data_dir, const char *token_file,
			   const char *const *extra, char *url, size_t cap)
{
	char bin[4096], listen[64], health[128];
	const char *argv[32];
	int n = 0;
	itest_bin(bin, sizeof(bin), "corral-aggregator");
	if (strncmp(url, "http://", 7) != 0)
		snprintf(url, cap, "http://127.0.0.1:%d", itest_port());
	snprintf(listen, sizeof(listen), "%s", url + 7);
	argv[n++] = bin, argv[n++] = "--listen", argv[n++] = listen, argv[n++] = "--data-dir", argv[n++] = data_dir;
	argv[n++] = "--token-file", argv[n++] = token_file;
	for (size_t i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (itest_spawn(p, logdir, "aggregator", (char *const *)argv))
		return -1;
	snprintf(health, sizeof(health), "%s/healthz", url);
	if (itest_wait_http(health, 15000)) {
		itest_dump_log(p);
		return -1;
	}
	return 0;
}

long itest_push(const char *url, const char *token, const void *frame, size_t len, cm_buf *reply)
{
	char full[256], auth[256];
	snprintf(full, sizeof(full), "%s/api/v1/agent/push", url);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
	const char *headers[] = {auth, "Content-Type: application/x-corral-batch", NULL};
	return itest_http("POST", full, token ? headers : headers + 1, frame, len, reply);
}

int itest_aggregator_stop(itest_proc *p)
{
	int st = itest_stop(p, SIGTERM, 10000);
	if (st)
		itest_dump_log(p);
	return st;
}

size_t itest_loki_forward(const char *url, const char *query, long long start_ns, long long end_ns,
			  void (*fn)(void *ctx, const char *line), void *ctx)
{
	char enc[1024], path[2048];
	size_t total = 0, got;
	itest_urlencode(enc, sizeof(enc), query);
	do {
		snprintf(path, sizeof(path),
			 "%s/loki/api/v1/query_range?query=%s&start=%lld&end=%lld&limit=5000&direction=forward", url,
			 enc, start_ns, end_ns);
		long status;
		json_t *j = itest_get_json(path, &status), *s, *v;
		size_t i, x;
		got = 0;
		json_array_foreach(json_object_get(json_object_get(j, "data"), "result"), i, s)
		{
			json_array_foreach(json_object_get(s, "values"), x, v)
			{
				fn(ctx, json_string_value(json_array_get(v, 1)));
				start_ns = atoll(json_string_value(json_array_get(v, 0))) + 1;
				got++;
			}
		}
		json_decref(j);
		total += got;
	} while (got);
	return total;
}
