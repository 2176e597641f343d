/* na_meta.c -- container metadata providers behind one interface: a pods directory and docker's configs.
 *
 * Each provider reads its source into one table of pods and their containers (strings in an arena);
 * the cgroup collector asks na__meta_lookup for the labels of a cgroup (by cgroup path, then runtime
 * container id, then pod UID) and re-labels only when na__meta_generation changed. Refresh runs on
 * the collection worker at the start of a pass every refresh interval, and right after the cgroup walk
 * when a lookup found nothing and the last refresh read every source (a source that is down would cost
 * its timeout twice a pass), so a container started between refreshes is in that pass's inventory and
 * labelled from the next pass on (blocking file reads are fine there, never on the loop thread); a provider that fails keeps its previous data and logs
 * one rate-limited warning, so a broken source loses labels, never metrics. Pod labels are kept only
 * when their key is in the allowlist; environment variables are never read into the table.
 *
 * Providers:
 *  - pods-dir (--pods-dir): one JSON file per pod, "*.json" (format in docs/agent.md):
 *      {"name": "web", "namespace": "demo", "uid": "...", "labels": {"app": "web"}, "ips": ["10.1.0.5"],
 *       "status": "Running", "containers": [{"name": "nginx", "id": "<runtime id>", "image": "nginx:1",
 *       "cgroup": "/corral-demo/web", "requests": {"cpu": "250m", "memory": "64Mi"},
 *       "limits": {"cpu": "1", "memory": "128Mi"}}]}
 *  - docker (--docker-root): <root>/containers/<id>/config.v2.json, its "ID", "Name", "Config.Image"
 *    and the kubelet's "Config.Labels" io.kubernetes.{pod.name,pod.namespace,pod.uid,container.name}.
 *  - kubelet (--kubelet-url): GET <url>/pods, the kubelet's PodList JSON, with "Authorization: Bearer"
 *    from the service-account token file (--kubelet-token-file) and the cluster CA (--kubelet-ca-file)
 *    when the URL is https: metadata.{name,namespace,uid,labels}, status.{phase,podIPs,podIP},
 *    spec.containers[].{name,image,resources.requests,resources.limits} and
 *    status.containerStatuses[].{name,containerID ("containerd://<id>"),ready}. spec.containers[].env
 *    is never read. Fetched with libcurl (5 s timeout, 16 MiB cap) on the collection worker.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "na_int.h"

#define MAX_FILE  (1u << 20) /* one pod file or docker config */
#define MAX_PODS  4096
#define MAX_ALLOW 32

typedef struct table {
	cm_arena arena;
	int oom; /* a string did not fit: the table is incomplete */
	na__meta_pod *pods;
	size_t npods, cap;
} table;

#define KUBELET_MAX (16u << 20)

struct na__meta {
	char pods_dir[PATH_MAX], docker_root[PATH_MAX], kubelet_url[512], kubelet_token[PATH_MAX], kubelet_ca[PATH_MAX];
	CURL *curl;
	cm_buf body;
	const char *allow[MAX_ALLOW];
	char allow_buf[1024];
	size_t nallow;
	int64_t every_ms, last_ms;
	int missed; /* a lookup found nothing: a new container may wait for its pod in the sources */
	int last_ok; /* the last refresh read every source: only then is an early one worth its cost */
	table t[2];
	int cur;
	uint64_t gen, hash;
	cm_ratelimit rl;
};

/* ---- reading one JSON file ---------------------------------------------------------------------------- */

static json_t *load_json(const char *path, cm_err *err)
{
	json_error_t je;
	struct stat st;
	if (stat(path, &st) || st.st_size > MAX_FILE) {
		cm_errf(err, CM_E2BIG, "%s: missing or larger than 1 MiB", path);
		return NULL;
	}
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		cm_errf(err, CM_EPROTO, "%s:%d: %s", path, je.line, je.text);
	else if (!json_is_object(j)) {
		json_decref(j);
		j = NULL;
		cm_errf(err, CM_EPROTO, "%s: not a JSON object", path);
	}
	return j;
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static int allowed(const na__meta *m, const char *key)
{
	for (size_t i = 0; i < m->nallow; i++)
		if (!strcmp(m->allow[i], key))
			return 1;
	return 0;
}

/* Never NULL: past the arena's limit it gives "" and marks the table, which is then not used. */
static char *tdup(table *t, const char *s)
{
	char *d = cm_arena_strdup(&t->arena, s ? s : "");
	if (!d)
		t->oom = 1;
	return d ? d : (char *)"";
}

/* ---- the table ------------------------------------------------------------------------------------------ */

static na__meta_pod *add_pod(table *t)
{
	if (t->npods == MAX_PODS)
		return NULL;
	if (t->npods == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		na__meta_pod *p = realloc(t->pods, cap * sizeof(*p));
		if (!p)
			return NULL;
		t->pods = p, t->cap = cap;
	}
	na__meta_pod *p = &t->pods[t->npods++];
	memset(p, 0, sizeof(*p));
	return p;
}

static int copy_kv(const na__meta *m, table *t, json_t *obj, cm_label **out, size_t *n, int filter)
{
	const char *k;
	json_t *v;
	size_t cnt = 0;
	cm_label *l = cm_arena_alloc(&t->arena, (json_object_size(obj) + 1) * sizeof(*l));
	if (!l)
		return CM_ENOMEM;
	json_object_foreach(obj, k, v)
	{
		if (json_is_string(v) && (!filter || allowed(m, k)))
			l[cnt++] = (cm_label){tdup(t, k), tdup(t, json_string_value(v))};
	}
	*out = l, *n = cnt;
	return CM_OK;
}

static int pod_from_json(na__meta *m, table *t, json_t *j)
{
	na__meta_pod *p = add_pod(t);
	if (!p)
		return CM_E2BIG;
	p->name = tdup(t, jstr(j, "name"));
	p->namespace_ = tdup(t, jstr(j, "namespace"));
	p->uid = tdup(t, jstr(j, "uid"));
	p->status = tdup(t, jstr(j, "status"));
	p->ready = json_is_boolean(json_object_get(j, "ready")) ? json_is_true(json_object_get(j, "ready"))
	                                                        : !strcmp(p->status, "Running");
	int rc = copy_kv(m, t, json_object_get(j, "labels"), &p->labels, &p->nlabels, 1);
	json_t *ips = json_object_get(j, "ips"), *cs = json_object_get(j, "containers"), *v;
	size_t i;
	p->ips = cm_arena_alloc(&t->arena, (json_array_size(ips) + 1) * sizeof(*p->ips));
	p->containers = cm_arena_alloc(&t->arena, (json_array_size(cs) + 1) * sizeof(*p->containers));
	if (rc || !p->ips || !p->containers)
		return CM_ENOMEM;
	json_array_foreach(ips, i, v) if (json_is_string(v)) p->ips[p->nips++] = tdup(t, json_string_value(v));
	json_array_foreach(cs, i, v)
	{
		na__meta_container *c = &p->containers[p->ncontainers++];
		json_t *req = json_object_get(v, "requests"), *lim = json_object_get(v, "limits");
		*c = (na__meta_container){
		    tdup(t, jstr(v, "name")),   tdup(t, jstr(v, "id")),       tdup(t, jstr(v, "image")),
		    tdup(t, jstr(v, "cgroup")), tdup(t, jstr(req, "cpu")),    tdup(t, jstr(req, "memory")),
		    tdup(t, jstr(lim, "cpu")),  tdup(t, jstr(lim, "memory")), tdup(t, jstr(v, "name"))};
	}
	return CM_OK;
}

/* ---- providers ---------------------------------------------------------------------------------------- */

typedef int (*each_fn)(na__meta *m, table *t, const char *path, cm_err *err);

static int each_entry(na__meta *m, table *t, const char *dir, const char *suffix, each_fn fn, cm_err *err)
{
	char path[PATH_MAX];
	DIR *d = opendir(dir);
	if (!d)
		return cm_errf(err, CM_EIO, "cannot list %s", dir);
	int rc = CM_OK, bad = 0;
	for (struct dirent *de; (de = readdir(d)) && rc != CM_ENOMEM;) {
		size_t n = strlen(de->d_name), sl = strlen(suffix);
		if (de->d_name[0] == '.' || n < sl || strcmp(de->d_name + n - sl, suffix))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		cm_err e1 = {{0}};
		int r = fn(m, t, path, &e1);
		if (r && !bad++)
			*err = e1; /* first failure reported; the other files still count */
		if (r == CM_ENOMEM)
			rc = r;
	}
	closedir(d);
	return rc ? rc : bad ? CM_EPROTO : CM_OK;
}

static int pods_file(na__meta *m, table *t, const char *path, cm_err *err)
{
	json_t *j = load_json(path, err);
	if (!j)
		return CM_EPROTO;
	int rc = pod_from_json(m, t, j);
	json_decref(j);
	return rc;
}

/* A docker container is a one-container pod: pod fields from the kubelet's labels when present. */
static int docker_from_json(na__meta *m, table *t, json_t *j)
{
	json_t *cfg = json_object_get(j, "Config"), *lab = json_object_get(cfg, "Labels");
	na__meta_pod *p = add_pod(t);
	na__meta_container *c = p ? cm_arena_alloc(&t->arena, sizeof(*c)) : NULL;
	if (!p || !c)
		return CM_ENOMEM;
	const char *name = jstr(j, "Name");
	p->name = tdup(t, jstr(lab, "io.kubernetes.pod.name"));
	p->namespace_ = tdup(t, jstr(lab, "io.kubernetes.pod.namespace"));
	p->uid = tdup(t, jstr(lab, "io.kubernetes.pod.uid"));
	p->status = tdup(t, json_is_true(json_object_get(json_object_get(j, "State"), "Running")) ? "Running" : "");
	p->ready = !strcmp(p->status, "Running");
	p->ips = NULL;
	*c = (na__meta_container){tdup(t, jstr(lab, "io.kubernetes.container.name")),
	                          tdup(t, jstr(j, "ID")),
	                          tdup(t, jstr(cfg, "Image")),
	                          tdup(t, ""),
	                          tdup(t, ""),
	                          tdup(t, ""),
	                          tdup(t, ""),
	                          tdup(t, ""),
	                          tdup(t, name[0] == '/' ? name + 1 : name)};
	p->containers = c, p->ncontainers = 1;
	return copy_kv(m, t, lab, &p->labels, &p->nlabels, 1);
}

static int docker_one(na__meta *m, table *t, const char *dir, cm_err *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/config.v2.json", dir);
	json_t *j = load_json(path, err);
	if (!j)
		return CM_EPROTO;
	int rc = docker_from_json(m, t, j);
	json_decref(j);
	return rc;
}

static int docker_entry(na__meta *m, table *t, const char *path, cm_err *err)
{
	return docker_one(m, t, path, err);
}

/* ---- kubelet ------------------------------------------------------------------------------------------- */

static const char *strip_runtime(const char *cid)
{
	const char *p = strstr(cid, "://");
	return p ? p + 3 : cid;
}

static void kubelet_container(table *t, na__meta_container *c, json_t *spec, json_t *statuses)
{
	json_t *res = json_object_get(spec, "resources"), *req = json_object_get(res, "requests"),
	       *lim = json_object_get(res, "limits"), *st, *found = NULL;
	size_t i;
	const char *name = jstr(spec, "name");
	json_array_foreach(statuses, i, st) if (!strcmp(jstr(st, "name"), name)) found = st;
	const char *id = strip_runtime(jstr(found, "containerID"));
	*c = (na__meta_container){tdup(t, name),
	                          tdup(t, id),
	                          tdup(t, jstr(spec, "image")),
	                          tdup(t, ""),
	                          tdup(t, jstr(req, "cpu")),
	                          tdup(t, jstr(req, "memory")),
	                          tdup(t, jstr(lim, "cpu")),
	                          tdup(t, jstr(lim, "memory")),
	                          tdup(t, id)};
}

static int kubelet_pod(na__meta *m, table *t, json_t *item)
{
	json_t *md = json_object_get(item, "metadata"), *spec = json_object_get(item, "spec"),
	       *status = json_object_get(item, "status"), *cs = json_object_get(spec, "containers"),
	       *statuses = json_object_get(status, "containerStatuses"), *ips = json_object_get(status, "podIPs"), *v;
	na__meta_pod *p = add_pod(t);
	if (!p)
		return CM_E2BIG;
	p->name = tdup(t, jstr(md, "name"));
	p->namespace_ = tdup(t, jstr(md, "namespace"));
	p->uid = tdup(t, jstr(md, "uid"));
	p->status = tdup(t, jstr(status, "phase"));
	p->ready = !strcmp(p->status, "Running") && json_array_size(statuses) > 0;
	size_t i;
	json_array_foreach(statuses, i, v) p->ready &= json_is_true(json_object_get(v, "ready"));
	int rc = copy_kv(m, t, json_object_get(md, "labels"), &p->labels, &p->nlabels, 1);
	p->ips = cm_arena_alloc(&t->arena, (json_array_size(ips) + 2) * sizeof(*p->ips));
	p->containers = cm_arena_alloc(&t->arena, (json_array_size(cs) + 1) * sizeof(*p->containers));
	if (rc || !p->ips || !p->containers)
		return CM_ENOMEM;
	json_array_foreach(ips, i, v) if (*jstr(v, "ip")) p->ips[p->nips++] = tdup(t, jstr(v, "ip"));
	if (!p->nips && *jstr(status, "podIP"))
		p->ips[p->nips++] = tdup(t, jstr(status, "podIP"));
	json_array_foreach(cs, i, v) kubelet_container(t, &p->containers[p->ncontainers++], v, statuses);
	return CM_OK;
}

static size_t on_body(char *d, size_t size, size_t n, void *ctx)
{
	cm_buf *b = ctx;
	if (b->len + size * n > KUBELET_MAX || cm_buf_append(b, d, size * n))
		return 0;
	return size * n;
}

static int kubelet_fetch(na__meta *m, cm_err *err)
{
	char token[4096], auth[4200];
	long status = 0;
	struct curl_slist *h = NULL;
	if (!m->curl && !(m->curl = curl_easy_init()))
		return cm_errf(err, CM_ENOMEM, "cannot set up the kubelet client");
	int rc =
	    cm_read_secret(m->kubelet_token[0] ? m->kubelet_token : NULL, "KUBELET_TOKEN", token, sizeof(token), err);
	if (rc)
		return rc;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	memset(token, 0, sizeof(token));
	h = curl_slist_append(NULL, auth);
	memset(auth, 0, sizeof(auth));
	m->body.len = 0;
	curl_easy_setopt(m->curl, CURLOPT_URL, m->kubelet_url);
	curl_easy_setopt(m->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(m->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(m->curl, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(m->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(m->curl, CURLOPT_WRITEDATA, &m->body);
	if (m->kubelet_ca[0] && !access(m->kubelet_ca, R_OK))
		curl_easy_setopt(m->curl, CURLOPT_CAINFO, m->kubelet_ca);
	CURLcode cc = curl_easy_perform(m->curl);
	if (cc == CURLE_OK)
		curl_easy_getinfo(m->curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_setopt(m->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h); /* holds the token: freed, not logged */
	if (cc != CURLE_OK)
		return cm_errf(err, CM_EIO, "kubelet %s: %s", m->kubelet_url, curl_easy_strerror(cc));
	if (status != 200)
		return cm_errf(err, CM_EIO, "kubelet %s: HTTP %ld", m->kubelet_url, status);
	return CM_OK;
}

static int kubelet_parse(na__meta *m, table *t, const void *buf, size_t n, cm_err *err)
{
	json_error_t je;
	json_t *j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je), *items = json_object_get(j, "items"), *v;
	if (!json_is_array(items)) {
		json_decref(j);
		return cm_errf(err, CM_EPROTO, "kubelet %s: not a PodList (%s)", m->kubelet_url,
		               j ? "no items" : je.text);
	}
	size_t i;
	int rc = CM_OK;
	json_array_foreach(items, i, v) if (!rc) rc = kubelet_pod(m, t, v);
	json_decref(j);
	return rc ? cm_errf(err, rc, "kubelet %s: %s", m->kubelet_url, cm_strerror(rc)) : CM_OK;
}

static int kubelet_read(na__meta *m, table *t, cm_err *err)
{
	int rc = kubelet_fetch(m, err);
	return rc ? rc : kubelet_parse(m, t, m->body.data, m->body.len, err);
}

static int refresh_into(na__meta *m, table *t, cm_err *err)
{
	char dir[PATH_MAX + 16];
	int rc = CM_OK, r;
	if (m->pods_dir[0] && (r = each_entry(m, t, m->pods_dir, ".json", pods_file, err)))
		rc = r;
	if (m->docker_root[0]) {
		cm_err e2 = {{0}};
		snprintf(dir, sizeof(dir), "%s/containers", m->docker_root);
		if ((r = each_entry(m, t, dir, "", docker_entry, rc ? &e2 : err)) && !rc)
			rc = r;
	}
	if (m->kubelet_url[0]) {
		cm_err e3 = {{0}};
		if ((r = kubelet_read(m, t, rc ? &e3 : err)) && !rc)
			rc = r;
	}
	return rc;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
	for (; s && *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (h ^ 0xff) * 1099511628211ULL;
}

static uint64_t hash_table(const table *t)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < t->npods; i++) {
		const na__meta_pod *p = &t->pods[i];
		h = hash_str(hash_str(hash_str(hash_str(h, p->name), p->namespace_), p->uid), p->status) +
		    (uint64_t)p->ready;
		for (size_t k = 0; k < p->nlabels; k++)
			h = hash_str(hash_str(h, p->labels[k].name), p->labels[k].value);
		for (size_t k = 0; k < p->nips; k++)
			h = hash_str(h, p->ips[k]);
		for (size_t k = 0; k < p->ncontainers; k++) {
			const na__meta_container *c = &p->containers[k];
			const char *f[] = {c->name,    c->id,      c->image,   c->cgroup,      c->req_cpu,
			                   c->req_mem, c->lim_cpu, c->lim_mem, c->runtime_name};
			for (size_t x = 0; x < CM_ARRAY_LEN(f); x++)
				h = hash_str(h, f[x]);
		}
	}
	return h;
}

/* ---- interface ------------------------------------------------------------------------------------------ */

int na__meta_create(const na__meta_opts *o, na__meta **out, cm_err *err)
{
	na__meta *m = calloc(1, sizeof(*m));
	if (!m)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(m->pods_dir, sizeof(m->pods_dir), "%s", o->pods_dir ? o->pods_dir : "");
	snprintf(m->docker_root, sizeof(m->docker_root), "%s", o->docker_root ? o->docker_root : "");
	if (o->kubelet_url)
		snprintf(m->kubelet_url, sizeof(m->kubelet_url), "%s/pods", o->kubelet_url);
	snprintf(m->kubelet_token, sizeof(m->kubelet_token), "%s", o->kubelet_token_file ? o->kubelet_token_file : "");
	snprintf(m->kubelet_ca, sizeof(m->kubelet_ca), "%s", o->kubelet_ca_file ? o->kubelet_ca_file : "");
	snprintf(m->allow_buf, sizeof(m->allow_buf), "%s", o->label_allowlist ? o->label_allowlist : "");
	for (char *save, *tok = strtok_r(m->allow_buf, ",", &save); tok && m->nallow < MAX_ALLOW;
	     tok = strtok_r(NULL, ",", &save))
		m->allow[m->nallow++] = tok;
	m->every_ms = o->refresh_ms > 0 ? o->refresh_ms : 10000;
	m->last_ms = INT64_MIN / 2;
	cm_arena_init(&m->t[0].arena, 64u << 20);
	cm_arena_init(&m->t[1].arena, 64u << 20);
	*out = m;
	return CM_OK;
}

void na__meta_destroy(na__meta *m)
{
	if (!m)
		return;
	for (int i = 0; i < 2; i++) {
		cm_arena_close(&m->t[i].arena);
		free(m->t[i].pods);
	}
	if (m->curl)
		curl_easy_cleanup(m->curl);
	cm_buf_close(&m->body);
	free(m);
}

int na__meta_refresh(na__meta *m, int64_t now_ms, int force)
{
	if (!force && !(m->missed && m->last_ok) && now_ms - m->last_ms < m->every_ms)
		return CM_OK;
	m->last_ms = now_ms;
	m->missed = 0;
	table *t = &m->t[!m->cur];
	cm_arena_reset(&t->arena);
	t->npods = 0;
	cm_err err = {{0}};
	t->oom = 0;
	int rc = refresh_into(m, t, &err);
	if (t->oom && rc != CM_ENOMEM)
		rc = cm_errf(&err, CM_ENOMEM, "metadata larger than its 64 MiB arena");
	m->last_ok = rc == CM_OK;
	if (rc)
		CM_LOG_RL(&m->rl, CM_LOG_WARN, "meta", "metadata incomplete, other sources still used: %s", err.msg);
	if (rc == CM_ENOMEM || (rc && !t->npods && m->t[m->cur].npods))
		return rc; /* keep the previous table rather than lose every label */
	uint64_t h = hash_table(t);
	m->cur = !m->cur;
	if (h != m->hash || !m->gen)
		m->gen++, m->hash = h;
	return rc;
}

int na__meta_parse(na__meta *m, int kind, const void *buf, size_t n, cm_err *err)
{
	table *t = &m->t[!m->cur];
	cm_arena_reset(&t->arena);
	t->npods = 0;
	t->oom = 0;
	int rc = CM_OK;
	if (kind == NA_META_KUBELET) {
		rc = kubelet_parse(m, t, buf, n, err);
	} else {
		json_error_t je;
		json_t *j = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
		if (!json_is_object(j))
			rc = cm_errf(err, CM_EPROTO, "not a JSON object: %s", j ? "" : je.text);
		else
			rc = kind == NA_META_POD_FILE ? pod_from_json(m, t, j) : docker_from_json(m, t, j);
		json_decref(j);
	}
	if (!rc && t->oom)
		rc = cm_errf(err, CM_ENOMEM, "metadata larger than its arena");
	if (rc)
		return rc;
	m->cur = !m->cur;
	m->gen++;
	return CM_OK;
}

uint64_t na__meta_generation(const na__meta *m)
{
	return m ? m->gen : 0;
}

void na__meta_pods(const na__meta *m, const na__meta_pod **pods, size_t *n)
{
	*pods = m->t[m->cur].pods;
	*n = m->t[m->cur].npods;
}

static void fill(na__meta_labels *out, const na__meta_pod *p, const na__meta_container *c)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->pod, sizeof(out->pod), "%s", p->name);
	snprintf(out->namespace_, sizeof(out->namespace_), "%s", p->namespace_);
	if (!c)
		return;
	snprintf(out->container, sizeof(out->container), "%s", c->name);
	snprintf(out->image, sizeof(out->image), "%s", c->image);
	snprintf(out->name, sizeof(out->name), "%s", c->runtime_name[0] ? c->runtime_name : c->id);
}

int na__meta_lookup(na__meta *m, const char *cgroup, const na__ident *id, na__meta_labels *out)
{
	const table *t = &m->t[m->cur];
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < t->npods; i++) {
			const na__meta_pod *p = &t->pods[i];
			for (size_t k = 0; k < p->ncontainers; k++) {
				const na__meta_container *c = &p->containers[k];
				if (pass == 0 ? cgroup && c->cgroup[0] && !strcmp(c->cgroup, cgroup)
				              : id->container_id[0] && c->id[0] && !strcmp(c->id, id->container_id)) {
					fill(out, p, c);
					return CM_OK;
				}
			}
		}
	}
	for (size_t i = 0; id->pod_uid[0] && i < t->npods; i++) {
		if (!strcmp(t->pods[i].uid, id->pod_uid)) {
			fill(out, &t->pods[i], NULL);
			return CM_OK;
		}
	}
	m->missed = 1;
	return CM_ENOENT;
}
