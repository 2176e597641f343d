/* ag_services.c -- the service registry: Services and EndpointSlices from a manifest file or directory,
 * from the Kubernetes API (ag_kube.c), from /api/v1/services (persisted in sqlite3), and endpoints from
 * the agents' pod inventory.
 *
 * Objects are kept as the Kubernetes JSON they came in (kubectl's `v1 Service` and
 * `discovery.k8s.io/v1 EndpointSlice`), keyed "Kind/namespace/name", in three sets: the manifest's
 * (replaced whole on every reload of --services), the Kubernetes API's (replaced whole by
 * ag__services_replace_kube after every successful read) and the API's (written through to the table
 * dns_registry(key TEXT PRIMARY KEY, body TEXT) in <data-dir>/state.db, WAL mode, busy timeout; the
 * file may hold other components' tables). For the same key the API's object wins over the Kubernetes
 * API's, which wins over the manifest's.
 * ag__services_model turns the merged view into dnsd's dn_service model: type ExternalName ->
 * CNAME, clusterIP "None" -> headless, else ClusterIP (clusterIPs, or clusterIP); endpoints (of
 * headless services, and of ClusterIP ones for the listing only) are the addresses of the EndpointSlices
 * labelled kubernetes.io/service-name=<svc> (ready unless conditions.ready is false, as Kubernetes
 * reads it) plus, for services with a selector that did not come from the Kubernetes API, the ready pods
 * of the same namespace whose labels include the selector, from the inventory hook
 * ag__services_set_node_pods (one call per batch that carries an inventory). Every batch of a node
 * touches it (ag__services_touch_node); a node silent for longer than the grace period is marked
 * expired by ag__services_expire_nodes and its pods leave the endpoints until its next batch, and
 * forgotten after a day. Every change bumps a version that
 * ag_dns.c polls to rebuild the zone. One mutex guards everything; nothing here is on the DNS query path.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ag_int.h"

#define FORGET_MS (24 * 3600 * 1000LL) /* an expired node's pods are freed after this much silence */

typedef struct node_pods {
	char *node;
	int64_t last_ms;
	int expired;  /* silent past the grace period: its pods are not endpoints */
	json_t *pods; /* [{"ns","name","ip","hostname","ready","labels":{}}] */
} node_pods;

struct ag__services {
	pthread_mutex_t mu;
	sqlite3 *db;
	char *file;
	int64_t file_stamp;
	json_t *file_items, *kube_items, *api_items; /* objects: key -> Kubernetes object */
	node_pods *nodes;
	size_t nnodes;
	atomic_uint_fast64_t version;
};

/* ---- objects ---------------------------------------------------------------------------------------- */

static const char *jstr(json_t *o, const char *path)
{
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", path);
	json_t *cur = o;
	for (char *save = NULL, *t = strtok_r(buf, ".", &save); t && cur; t = strtok_r(NULL, ".", &save))
		cur = json_object_get(cur, t);
	return json_is_string(cur) ? json_string_value(cur) : NULL;
}

/* "Kind/ns/name" of a Service or EndpointSlice; 0 when the object is one of those and well-formed. */
static int item_key(json_t *o, char *key, size_t cap)
{
	const char *kind = jstr(o, "kind"), *ns = jstr(o, "metadata.namespace"), *name = jstr(o, "metadata.name");
	if (!kind || !name || (strcmp(kind, "Service") && strcmp(kind, "EndpointSlice")))
		return CM_EINVAL;
	snprintf(key, cap, "%s/%s/%s", kind, ns && *ns ? ns : "default", name);
	return CM_OK;
}

/* Adds one object, or every item of a List, to set; the number of objects added or CM_EINVAL. */
static int add_items(json_t *set, json_t *doc, cm_err *err)
{
	const char *kind = jstr(doc, "kind");
	if (kind && !strcmp(kind, "List")) {
		json_t *items = json_object_get(doc, "items"), *it;
		size_t i;
		int n = 0;
		json_array_foreach(items, i, it)
		{
			int rc = add_items(set, it, err);
			if (rc < 0)
				return rc;
			n += rc;
		}
		return n;
	}
	char key[512];
	if (item_key(doc, key, sizeof(key)))
		return cm_errf(err, CM_EINVAL, "not a Service, EndpointSlice or List of them (kind %s)",
		               kind ? kind : "?");
	json_object_set(set, key, doc);
	return 1;
}

/* ---- manifest file or directory --------------------------------------------------------------------- */

static int64_t stamp_of(const char *path)
{
	struct stat st;
	if (stat(path, &st))
		return -1;
	int64_t s = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec + (int64_t)st.st_size;
	if (!S_ISDIR(st.st_mode))
		return s;
	DIR *d = opendir(path);
	for (struct dirent *e; d && (e = readdir(d));) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		if (e->d_name[0] != '.' && !stat(p, &st))
			s = s * 31 + (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec + (int64_t)st.st_size;
	}
	if (d)
		closedir(d);
	return s;
}

static int load_one(json_t *set, const char *path, cm_err *err)
{
	json_error_t je;
	json_t *doc = json_load_file(path, 0, &je);
	if (!doc)
		return cm_errf(err, CM_EPROTO, "%s:%d: %s", path, je.line, je.text);
	int rc = add_items(set, doc, err);
	json_decref(doc);
	return rc < 0 ? rc : CM_OK;
}

static int load_path(json_t *set, const char *path, cm_err *err)
{
	struct stat st;
	if (stat(path, &st))
		return cm_errf(err, CM_ENOENT, "--services %s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return load_one(set, path, err);
	struct dirent **list;
	int n = scandir(path, &list, NULL, alphasort), rc = CM_OK;
	for (int i = 0; i < n; i++) {
		size_t l = strlen(list[i]->d_name);
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", path, list[i]->d_name);
		if (!rc && l > 5 && !strcmp(list[i]->d_name + l - 5, ".json"))
			rc = load_one(set, p, err);
		free(list[i]);
	}
	free(list);
	return n < 0 ? cm_errf(err, CM_EIO, "--services %s: cannot list", path) : rc;
}

int ag__services_reload_file(ag__services *r, cm_err *err)
{
	if (!r->file)
		return 0;
	int64_t st = stamp_of(r->file);
	if (st == r->file_stamp)
		return 0;
	json_t *set = json_object();
	int rc = set ? load_path(set, r->file, err) : CM_ENOMEM;
	if (rc) {
		json_decref(set);
		r->file_stamp = st; /* report a broken file once, keep serving the last good one */
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	json_decref(r->file_items);
	r->file_items = set;
	r->file_stamp = st;
	atomic_fetch_add(&r->version, 1);
	pthread_mutex_unlock(&r->mu);
	return 1;
}

/* ---- sqlite ----------------------------------------------------------------------------------------- */

static int db_open(ag__services *r, const char *path, cm_err *err)
{
	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL))
		return cm_errf(err, CM_EIO, "%s: %s", path, sqlite3_errmsg(r->db));
	sqlite3_busy_timeout(r->db, 5000);
	char *msg = NULL;
	if (sqlite3_exec(r->db,
	                 "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS dns_registry("
	                 "key TEXT PRIMARY KEY, body TEXT NOT NULL)",
	                 NULL, NULL, &msg)) {
		cm_errf(err, CM_EIO, "%s: %s", path, msg ? msg : "?");
		sqlite3_free(msg);
		return CM_EIO;
	}
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(r->db, "SELECT body FROM dns_registry", -1, &st, NULL))
		return cm_errf(err, CM_EIO, "%s: %s", path, sqlite3_errmsg(r->db));
	while (sqlite3_step(st) == SQLITE_ROW) {
		json_t *o = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
		if (o)
			add_items(r->api_items, o, NULL);
		json_decref(o);
	}
	sqlite3_finalize(st);
	return CM_OK;
}

static int db_put(ag__services *r, const char *key, json_t *o)
{
	char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(r->db,
	                            o ? "INSERT OR REPLACE INTO dns_registry(key, body) VALUES(?1, ?2)"
	                              : "DELETE FROM dns_registry WHERE key = ?1",
	                            -1, &st, NULL);
	if (!rc) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
		if (o)
			sqlite3_bind_text(st, 2, body, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : 1;
		sqlite3_finalize(st);
	}
	free(body);
	return rc ? CM_EIO : CM_OK;
}

int ag__services_create(const char *db_path, const char *file, ag__services **out, cm_err *err)
{
	ag__services *r = calloc(1, sizeof(*r));
	if (!r)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	pthread_mutex_init(&r->mu, NULL);
	r->file_items = json_object(), r->kube_items = json_object(), r->api_items = json_object();
	r->file_stamp = -2;
	int rc = r->file_items && r->kube_items && r->api_items ? CM_OK : cm_errf(err, CM_ENOMEM, "out of memory");
	if (!rc && file && *file && !(r->file = strdup(file)))
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
	rc = rc ? rc : db_open(r, db_path, err);
	if (!rc && r->file && (rc = ag__services_reload_file(r, err)) > 0)
		rc = CM_OK;
	if (rc)
		goto fail;
	*out = r;
	return CM_OK;
fail:
	ag__services_destroy(r);
	return rc;
}

void ag__services_destroy(ag__services *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nnodes; i++) {
		free(r->nodes[i].node);
		json_decref(r->nodes[i].pods);
	}
	free(r->nodes);
	json_decref(r->file_items);
	json_decref(r->kube_items);
	json_decref(r->api_items);
	if (r->db)
		sqlite3_close(r->db);
	free(r->file);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

uint64_t ag__services_version(ag__services *r)
{
	return atomic_load(&r->version);
}

/* ---- the Kubernetes API's objects (ag_kube.c) -------------------------------------------------------- */

int ag__services_replace_kube(ag__services *r, json_t *list, cm_err *err)
{
	json_t *set = json_object();
	int rc = set ? add_items(set, list, err) : cm_errf(err, CM_ENOMEM, "out of memory");
	if (rc < 0) {
		json_decref(set);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	if (!json_equal(r->kube_items, set))
		atomic_fetch_add(&r->version, 1);
	json_decref(r->kube_items);
	r->kube_items = set;
	pthread_mutex_unlock(&r->mu);
	return CM_OK;
}

/* ---- inventory hook (issue 4: the agents' pods) ------------------------------------------------------ */

static node_pods *node_find(ag__services *r, const char *node)
{
	for (size_t i = 0; i < r->nnodes; i++)
		if (!strcmp(r->nodes[i].node, node))
			return &r->nodes[i];
	return NULL;
}

int ag__services_set_node_pods(ag__services *r, const char *node, const ag__pod *pods, size_t n, int64_t now_ms)
{
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *labels = json_object();
		for (size_t k = 0; k < pods[i].nlabels; k++)
			json_object_set_new(labels, pods[i].labels[k].name, json_string(pods[i].labels[k].value));
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s?, s:b, s:o}", "ns", pods[i].ns, "name",
		                                     pods[i].name, "ip", pods[i].ip, "hostname", pods[i].hostname,
		                                     "ready", pods[i].ready, "labels", labels));
	}
	if (!arr)
		return CM_ENOMEM;
	pthread_mutex_lock(&r->mu);
	node_pods *np = node_find(r, node);
	if (!np) {
		node_pods *nn = realloc(r->nodes, (r->nnodes + 1) * sizeof(*nn));
		char *name = strdup(node);
		if (!nn || !name) {
			free(name);
			if (nn)
				r->nodes = nn;
			pthread_mutex_unlock(&r->mu);
			json_decref(arr);
			return CM_ENOMEM;
		}
		r->nodes = nn;
		np = &r->nodes[r->nnodes++];
		*np = (node_pods){.node = name};
	}
	int changed = !json_equal(np->pods, arr);
	json_decref(np->pods);
	np->pods = arr;
	np->last_ms = now_ms;
	if (changed || np->expired)
		atomic_fetch_add(&r->version, 1);
	np->expired = 0;
	pthread_mutex_unlock(&r->mu);
	return CM_OK;
}

void ag__services_touch_node(ag__services *r, const char *node, int64_t now_ms)
{
	pthread_mutex_lock(&r->mu);
	node_pods *np = node_find(r, node);
	if (np) {
		np->last_ms = now_ms;
		if (np->expired)
			np->expired = 0, atomic_fetch_add(&r->version, 1);
	}
	pthread_mutex_unlock(&r->mu);
}

void ag__services_expire_nodes(ag__services *r, int64_t now_ms, int64_t grace_ms)
{
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < r->nnodes;) {
		node_pods *np = &r->nodes[i];
		int64_t silent = now_ms - np->last_ms;
		if (silent > FORGET_MS) {
			free(np->node);
			json_decref(np->pods);
			*np = r->nodes[--r->nnodes];
			continue;
		}
		if (silent > grace_ms && !np->expired)
			np->expired = 1, atomic_fetch_add(&r->version, 1);
		i++;
	}
	pthread_mutex_unlock(&r->mu);
}

/* ---- the model -------------------------------------------------------------------------------------- */

typedef struct model {
	cm_arena *a;
	dn_service *svcs;
	size_t n, cap;
	json_t *slices;    /* "ns/svc" -> [EndpointSlice] */
	int clusterip_eps; /* endpoints of ClusterIP services too (the listing; DNS does not use them) */
} model;

static const char *adup(cm_arena *a, const char *s)
{
	return s ? cm_arena_strdup(a, s) : NULL;
}

static int index_slices(json_t *set, json_t *idx)
{
	const char *key;
	json_t *o;
	json_object_foreach(set, key, o)
	{
		json_t *labels = json_object_get(json_object_get(o, "metadata"), "labels");
		const char *svc = json_string_value(json_object_get(labels, "kubernetes.io/service-name"));
		if (strncmp(key, "EndpointSlice/", 14) || !svc)
			continue;
		char k[512];
		const char *ns = jstr(o, "metadata.namespace");
		snprintf(k, sizeof(k), "%s/%s", ns && *ns ? ns : "default", svc);
		json_t *arr = json_object_get(idx, k);
		if (!arr)
			json_object_set_new(idx, k, arr = json_array());
		json_array_append(arr, o);
	}
	return CM_OK;
}

typedef struct ep_list {
	dn_endpoint *v;
	size_t n, cap;
} ep_list;

static int ep_add(cm_arena *a, ep_list *l, const char *ip, const char *host, int ready)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 8;
		dn_endpoint *nv = cm_arena_alloc(a, nc * sizeof(*nv));
		if (!nv)
			return CM_ENOMEM;
		if (l->n)
			memcpy(nv, l->v, l->n * sizeof(*nv));
		l->v = nv, l->cap = nc;
	}
	l->v[l->n++] = (dn_endpoint){adup(a, ip), adup(a, host), ready};
	return l->v[l->n - 1].ip ? CM_OK : CM_ENOMEM;
}

static int slice_endpoints(model *m, json_t *arr, ep_list *l)
{
	size_t i, k, j;
	json_t *sl, *ep, *addr;
	json_array_foreach(arr, i, sl)
	{
		const char *type = jstr(sl, "addressType");
		if (type && !strcmp(type, "FQDN"))
			continue; /* only IPv4 and IPv6 slices are addresses */
		json_array_foreach(json_object_get(sl, "endpoints"), k, ep)
		{
			json_t *ready = json_object_get(json_object_get(ep, "conditions"), "ready");
			const char *host = json_string_value(json_object_get(ep, "hostname"));
			json_array_foreach(json_object_get(ep, "addresses"), j, addr)
			{
				if (json_is_string(addr) &&
				    ep_add(m->a, l, json_string_value(addr), host, !json_is_false(ready)))
					return CM_ENOMEM;
			}
		}
	}
	return CM_OK;
}

static int selector_matches(json_t *sel, json_t *labels)
{
	const char *k;
	json_t *v;
	if (!json_is_object(sel) || !json_object_size(sel))
		return 0;
	json_object_foreach(sel, k, v)
	{
		json_t *have = json_object_get(labels, k);
		if (!json_is_string(v) || !json_is_string(have) ||
		    strcmp(json_string_value(v), json_string_value(have)))
			return 0;
	}
	return 1;
}

static int pod_endpoints(ag__services *r, model *m, const char *ns, json_t *sel, ep_list *l)
{
	for (size_t i = 0; i < r->nnodes; i++) {
		size_t k;
		json_t *p;
		if (r->nodes[i].expired)
			continue;
		json_array_foreach(r->nodes[i].pods, k, p)
		{
			if (strcmp(jstr(p, "ns"), ns) || !json_is_true(json_object_get(p, "ready")) ||
			    !selector_matches(sel, json_object_get(p, "labels")))
				continue;
			if (ep_add(m->a, l, jstr(p, "ip"), jstr(p, "hostname"), 1))
				return CM_ENOMEM;
		}
	}
	return CM_OK;
}

static int svc_ports(model *m, json_t *spec, dn_service *s)
{
	json_t *ports = json_object_get(spec, "ports"), *p;
	size_t i, n = json_array_size(ports);
	dn_port *v = n ? cm_arena_calloc(m->a, n, sizeof(*v)) : NULL;
	if (n && !v)
		return CM_ENOMEM;
	json_array_foreach(ports, i, p)
	{
		json_int_t num = json_integer_value(json_object_get(p, "port"));
		v[i] = (dn_port){adup(m->a, jstr(p, "name")), adup(m->a, jstr(p, "protocol")),
		                 (uint16_t)(num > 0 && num < 65536 ? num : 0)};
	}
	s->ports = v, s->nports = n;
	return CM_OK;
}

static int svc_ips(model *m, json_t *spec, dn_service *s)
{
	json_t *ips = json_object_get(spec, "clusterIPs"), *ip;
	const char **v = cm_arena_calloc(m->a, json_array_size(ips) + 1, sizeof(*v));
	size_t i, n = 0;
	if (!v)
		return CM_ENOMEM;
	json_array_foreach(ips, i, ip) if (json_is_string(ip)) v[n++] = adup(m->a, json_string_value(ip));
	if (!n && jstr(spec, "clusterIP"))
		v[n++] = adup(m->a, jstr(spec, "clusterIP"));
	s->cluster_ips = v, s->ncluster_ips = n;
	return CM_OK;
}

/* The EndpointSlices' endpoints of s, and the matching pods' unless s came from the Kubernetes API (the
 * endpoint controller has turned its selector into slices already). */
static int svc_endpoints(ag__services *r, model *m, json_t *spec, int from_kube, dn_service *s)
{
	ep_list l = {0};
	char k[512];
	snprintf(k, sizeof(k), "%s/%s", s->ns, s->name);
	int rc = slice_endpoints(m, json_object_get(m->slices, k), &l);
	if (!from_kube)
		rc = rc ? rc : pod_endpoints(r, m, s->ns, json_object_get(spec, "selector"), &l);
	s->endpoints = l.v, s->nendpoints = l.n;
	return rc;
}

static int add_service(ag__services *r, model *m, json_t *o, int from_kube)
{
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 256;
		dn_service *nv = cm_arena_alloc(m->a, nc * sizeof(*nv));
		if (!nv)
			return CM_ENOMEM;
		if (m->n)
			memcpy(nv, m->svcs, m->n * sizeof(*nv));
		m->svcs = nv, m->cap = nc;
	}
	json_t *spec = json_object_get(o, "spec");
	const char *ns = jstr(o, "metadata.namespace"), *type = jstr(spec, "type"), *cip = jstr(spec, "clusterIP");
	dn_service *s = &m->svcs[m->n];
	*s = (dn_service){.name = adup(m->a, jstr(o, "metadata.name")), .ns = adup(m->a, ns && *ns ? ns : "default")};
	int rc = svc_ports(m, spec, s);
	if (type && !strcmp(type, "ExternalName")) {
		s->kind = DN_SVC_EXTERNAL;
		s->external_name = adup(m->a, jstr(spec, "externalName"));
	} else {
		s->kind = cip && !strcmp(cip, "None") ? DN_SVC_HEADLESS : DN_SVC_CLUSTERIP;
		if (s->kind == DN_SVC_CLUSTERIP)
			rc = rc ? rc : svc_ips(m, spec, s);
		if (s->kind == DN_SVC_HEADLESS || m->clusterip_eps)
			rc = rc ? rc : svc_endpoints(r, m, spec, from_kube, s);
	}
	if (!rc)
		m->n++;
	return rc;
}

static int build_model(ag__services *r, cm_arena *a, int clusterip_eps, dn_service **out, size_t *n)
{
	model m = {.a = a, .slices = json_object(), .clusterip_eps = clusterip_eps};
	pthread_mutex_lock(&r->mu);
	json_t *merged = json_copy(r->file_items);
	int rc = merged && m.slices && !json_object_update(merged, r->kube_items) &&
	                 !json_object_update(merged, r->api_items)
	             ? CM_OK
	             : CM_ENOMEM;
	rc = rc ? rc : index_slices(merged, m.slices);
	const char *key;
	json_t *o;
	json_object_foreach(merged, key, o)
	{
		if (!rc && !strncmp(key, "Service/", 8))
			rc = add_service(r, &m, o, json_object_get(r->kube_items, key) == o);
	}
	pthread_mutex_unlock(&r->mu);
	json_decref(merged);
	json_decref(m.slices);
	if (rc)
		return rc;
	*out = m.svcs, *n = m.n;
	return CM_OK;
}

int ag__services_model(ag__services *r, cm_arena *a, dn_service **out, size_t *n)
{
	return build_model(r, a, 0, out, n);
}

/* ---- /api/v1/services ------------------------------------------------------------------------------- */

/* The source ("api", "kubernetes" or "manifest") and a copy of the selector (NULL: none) of the Service
 * object the merged view took for s. */
static const char *svc_origin(ag__services *r, const dn_service *s, json_t **selector)
{
	static const char *const names[] = {"api", "kubernetes", "manifest"};
	char key[512];
	size_t i = 0;
	json_t *o;
	snprintf(key, sizeof(key), "Service/%s/%s", s->ns, s->name);
	pthread_mutex_lock(&r->mu);
	json_t *sets[] = {r->api_items, r->kube_items, r->file_items};
	while (!(o = json_object_get(sets[i], key)) && i < 2)
		i++;
	*selector = json_deep_copy(json_object_get(json_object_get(o, "spec"), "selector"));
	pthread_mutex_unlock(&r->mu);
	return names[i];
}

static json_t *svc_json(ag__services *r, const dn_service *s)
{
	static const char *const kinds[] = {"ClusterIP", "Headless", "ExternalName"};
	json_t *sel;
	const char *source = svc_origin(r, s, &sel);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o*}", "namespace", s->ns, "name", s->name, "type",
	                      kinds[s->kind], "source", source, "selector", sel);
	json_t *ips = json_array(), *ports = json_array(), *eps = json_array();
	for (size_t i = 0; i < s->ncluster_ips; i++)
		json_array_append_new(ips, json_string(s->cluster_ips[i]));
	for (size_t i = 0; i < s->nports; i++)
		json_array_append_new(
		    ports, json_pack("{s:s, s:s, s:i}", "name", s->ports[i].name ? s->ports[i].name : "", "protocol",
		                     s->ports[i].protocol ? s->ports[i].protocol : "TCP", "port", s->ports[i].port));
	for (size_t i = 0; i < s->nendpoints; i++)
		json_array_append_new(eps, json_pack("{s:s, s:s?, s:b}", "ip", s->endpoints[i].ip, "hostname",
		                                     s->endpoints[i].hostname, "ready", s->endpoints[i].ready));
	json_object_set_new(o, "clusterIPs", ips);
	json_object_set_new(o, "ports", ports);
	json_object_set_new(o, "endpoints", eps);
	if (s->external_name)
		json_object_set_new(o, "externalName", json_string(s->external_name));
	return o;
}

static void reply_json(ag__resp *resp, int status, json_t *data)
{
	json_t *env = json_pack("{s:s, s:o}", "status", "success", "data", data);
	char *txt = env ? json_dumps(env, JSON_COMPACT) : NULL;
	json_decref(env);
	if (!txt)
		return ag__resp_error(resp, 500, "internal", "out of memory");
	resp->status = status;
	resp->content_type = "application/json";
	cm_buf_puts(&resp->body, txt);
	cm_buf_puts(&resp->body, "\n");
	free(txt);
}

static void do_list(ag__services *r, const ag__req *req, ag__resp *resp)
{
	dn_service *svcs;
	size_t n;
	const char *ns = ag__param_get(req, "namespace");
	if (build_model(r, req->arena, 1, &svcs, &n))
		return ag__resp_error(resp, 500, "internal", "out of memory");
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		if (!ns || !strcmp(ns, svcs[i].ns))
			json_array_append_new(arr, svc_json(r, &svcs[i]));
	reply_json(resp, 200, arr);
}

static void do_put(ag__services *r, const ag__req *req, ag__resp *resp)
{
	json_error_t je;
	cm_err err = {{0}};
	json_t *doc = json_loadb((const char *)req->body, req->body_len, 0, &je), *set = json_object();
	int n = doc && set ? add_items(set, doc, &err) : cm_errf(&err, CM_EPROTO, "bad JSON: %s", je.text);
	json_decref(doc);
	if (n < 0) {
		json_decref(set);
		return ag__resp_error(resp, 400, "bad_data", err.msg);
	}
	const char *key;
	json_t *o;
	int rc = CM_OK;
	pthread_mutex_lock(&r->mu);
	json_object_foreach(set, key, o)
	{
		if (!rc && !(rc = db_put(r, key, o)))
			json_object_set(r->api_items, key, o);
	}
	atomic_fetch_add(&r->version, 1);
	pthread_mutex_unlock(&r->mu);
	json_decref(set);
	if (rc)
		return ag__resp_error(resp, 500, "internal", "cannot store the service");
	reply_json(resp, 200, json_pack("{s:i}", "stored", n));
}

static void do_delete(ag__services *r, const ag__req *req, ag__resp *resp)
{
	const char *ns = ag__param_get(req, "namespace"), *name = ag__param_get(req, "name");
	if (!name)
		return ag__resp_error(resp, 400, "bad_data", "name is required (and namespace, default \"default\")");
	char key[512];
	snprintf(key, sizeof(key), "Service/%s/%s", ns ? ns : "default", name);
	pthread_mutex_lock(&r->mu);
	int found = json_object_get(r->api_items, key) != NULL;
	if (found && !db_put(r, key, NULL)) {
		json_object_del(r->api_items, key);
		atomic_fetch_add(&r->version, 1);
	}
	pthread_mutex_unlock(&r->mu);
	if (!found)
		return ag__resp_error(resp, 404, "not_found", "no such service registered through the API");
	reply_json(resp, 200, json_pack("{s:s}", "deleted", key));
}

void ag__services_handle(ag__services *r, const ag__req *req, ag__resp *resp)
{
	if (!r)
		return ag__resp_error(resp, 503, "unavailable", "the service registry is not running");
	if (!strcmp(req->method, "GET"))
		do_list(r, req, resp);
	else if (!strcmp(req->method, "POST") || !strcmp(req->method, "PUT"))
		do_put(r, req, resp);
	else if (!strcmp(req->method, "DELETE"))
		do_delete(r, req, resp);
	else
		ag__resp_error(resp, 405, "bad_data", "method not allowed");
}
