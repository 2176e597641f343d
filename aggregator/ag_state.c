/* ag_state.c -- cluster state from the agents' batches: the latest inventory per node and the events.
 *
 * ag_ingest.c calls ag__state_record for every batch it stored durably (never for a duplicate, so an
 * event is kept once). On that HTTP thread the batch's inventory (wire field 11) becomes one JSON
 * document and its events (field 12) a JSON array; both go to a bounded queue that one writer thread
 * drains into sqlite (<data-dir>/state.db, WAL mode, 5 s busy timeout, one transaction per wake-up),
 * so no push waits for a sqlite write. A full queue drops the item and counts it. The inventory's pods
 * also go to the service registry's hook (ag__services_set_node_pods) right away, for cluster DNS.
 *
 * Tables (shared file with ag_services.c's dns_registry; names here are this file's):
 *   state_nodes(node TEXT PRIMARY KEY, boot_id TEXT, last_seen_ms INTEGER, collected_ms INTEGER,
 *               inventory TEXT)  -- inventory: {"facts":{...},"pods":[...]} as GET /api/v1/inventory shows
 *   state_events(id INTEGER PRIMARY KEY, node TEXT, time_ms INTEGER, type TEXT, cgroup TEXT,
 *                container_id TEXT, container TEXT, pod TEXT, namespace TEXT, count INTEGER)
 * state_events keeps the newest max_events rows (older ones are deleted by the writer).
 *
 * GET /api/v1/inventory[?node=N] and GET /api/v1/events[?node=&type=&namespace=&pod=&since=MS&limit=N]
 * read through a second connection (WAL readers never wait for the writer). docs/agent.md shows both.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag_int.h"

#define QUEUE_MAX            4096
#define MAX_EVENTS           100000
#define EVENTS_LIMIT_DEFAULT 1000
#define EVENTS_LIMIT_MAX     10000

typedef struct item {
	struct item *next;
	char *node, *boot_id;
	int64_t seen_ms, collected_ms;
	char *inventory; /* JSON, or NULL when the batch had none */
	char *events;    /* JSON array, or NULL */
} item;

struct ag__state {
	sqlite3 *wdb, *rdb;
	ag__services *services;
	int64_t grace_ms;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t writer;
	int stop, started;
	item *head, *tail;
	size_t queued;
	uint64_t dropped, write_errors, inserted;
	cm_ratelimit rl;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS state_nodes(node TEXT PRIMARY KEY, boot_id TEXT, last_seen_ms INTEGER,"
    " collected_ms INTEGER, inventory TEXT);"
    "CREATE TABLE IF NOT EXISTS state_events(id INTEGER PRIMARY KEY, node TEXT, time_ms INTEGER, type TEXT,"
    " cgroup TEXT, container_id TEXT, container TEXT, pod TEXT, namespace TEXT, count INTEGER);"
    "CREATE INDEX IF NOT EXISTS state_events_time ON state_events(time_ms);";

/* ---- batch to JSON (HTTP thread) -------------------------------------------------------------------- */

static json_t *kv_object(const cm_label *l, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < n; i++)
		json_object_set_new(o, l[i].name, json_string(l[i].value));
	return o;
}

static json_t *pod_json(const cm_pod *p)
{
	json_t *ips = json_array(), *cs = json_array();
	for (size_t i = 0; i < p->nips; i++)
		json_array_append_new(ips, json_string(p->ips[i]));
	for (size_t i = 0; i < p->ncontainers; i++) {
		const cm_container *c = &p->containers[i];
		json_array_append_new(cs, json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s}}", "name", c->name,
		                                    "id", c->id, "image", c->image, "cgroup", c->cgroup, "requests",
		                                    "cpu", c->req_cpu, "memory", c->req_mem, "limits", "cpu",
		                                    c->lim_cpu, "memory", c->lim_mem));
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:o}", "name", p->name, "namespace", p->namespace_, "uid",
	                 p->uid, "status", p->status, "ready", p->ready, "labels", kv_object(p->labels, p->nlabels),
	                 "ips", ips, "containers", cs);
}

static char *inventory_json(const cm_inventory *inv)
{
	json_t *pods = json_array();
	for (size_t i = 0; pods && i < inv->npods; i++)
		json_array_append_new(pods, pod_json(&inv->pods[i]));
	json_t *o = json_pack("{s:o, s:o}", "facts", kv_object(inv->node, inv->nnode), "pods", pods);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static char *events_json(const cm_event *e, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "time_ms",
		                                   (json_int_t)e[i].t_ms, "type", e[i].type, "cgroup", e[i].cgroup,
		                                   "container_id", e[i].container_id, "container", e[i].container,
		                                   "pod", e[i].pod, "namespace", e[i].namespace_, "count",
		                                   (json_int_t)e[i].count));
	char *s = a ? json_dumps(a, JSON_COMPACT) : NULL;
	json_decref(a);
	return s;
}

/* The pods, one IP each (the first), to the service registry's inventory hook. */
static void feed_services(ag__state *st, const cm_batch *b, int64_t now_ms)
{
	const cm_inventory *inv = b->inventory;
	ag__pod *pods = calloc(inv->npods ? inv->npods : 1, sizeof(*pods));
	size_t n = 0;
	if (!pods)
		return;
	for (size_t i = 0; i < inv->npods; i++) {
		const cm_pod *p = &inv->pods[i];
		if (p->nips)
			pods[n++] = (ag__pod){p->namespace_, p->name, p->ips[0], NULL, p->ready, p->labels, p->nlabels};
	}
	ag__services_set_node_pods(st->services, b->node, pods, n, now_ms);
	free(pods);
}

static void item_free(item *it)
{
	if (!it)
		return;
	free(it->node);
	free(it->boot_id);
	free(it->inventory);
	free(it->events);
	free(it);
}

void ag__state_record(ag__state *st, const cm_batch *b)
{
	if (!st)
		return;
	int64_t now = cm_now_ms();
	if (b->inventory && st->services)
		feed_services(st, b, now);
	else if (st->services)
		ag__services_touch_node(st->services, b->node, now);
	item *it = calloc(1, sizeof(*it));
	if (it) {
		it->node = strdup(b->node), it->boot_id = strdup(b->boot_id ? b->boot_id : "");
		it->seen_ms = now;
		it->collected_ms = b->inventory ? b->inventory->collected_ms : 0;
		it->inventory = b->inventory ? inventory_json(b->inventory) : NULL;
		it->events = b->nevents ? events_json(b->events, b->nevents) : NULL;
	}
	int bad = !it || !it->node || !it->boot_id || (b->inventory && !it->inventory) || (b->nevents && !it->events);
	pthread_mutex_lock(&st->mu);
	if (bad || st->queued >= QUEUE_MAX) {
		st->dropped++;
		pthread_mutex_unlock(&st->mu);
		CM_LOG_RL(&st->rl, CM_LOG_WARN, "state", "%s", "state write queue full or out of memory: item dropped");
		item_free(it);
		return;
	}
	if (st->tail)
		st->tail->next = it;
	else
		st->head = it;
	st->tail = it;
	st->queued++;
	pthread_cond_signal(&st->cv);
	pthread_mutex_unlock(&st->mu);
}

/* ---- writer thread ------------------------------------------------------------------------------------ */

static int write_node(sqlite3 *db, const item *it)
{
	sqlite3_stmt *s;
	const char *sql =
	    it->inventory
	        ? "INSERT INTO state_nodes(node, boot_id, last_seen_ms, collected_ms, inventory) VALUES(?1,?2,?3,?4,?5)"
	          " ON CONFLICT(node) DO UPDATE SET boot_id=?2, last_seen_ms=?3, collected_ms=?4, inventory=?5"
	        : "INSERT INTO state_nodes(node, boot_id, last_seen_ms, collected_ms, inventory) "
	          "VALUES(?1,?2,?3,0,NULL)"
	          " ON CONFLICT(node) DO UPDATE SET boot_id=?2, last_seen_ms=?3";
	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL))
		return CM_EIO;
	sqlite3_bind_text(s, 1, it->node, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, it->boot_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, it->seen_ms);
	if (it->inventory) {
		sqlite3_bind_int64(s, 4, it->collected_ms);
		sqlite3_bind_text(s, 5, it->inventory, -1, SQLITE_STATIC);
	}
	int rc = sqlite3_step(s) == SQLITE_DONE ? CM_OK : CM_EIO;
	sqlite3_finalize(s);
	return rc;
}

static int write_events(ag__state *st, const item *it)
{
	json_t *a = json_loads(it->events, 0, NULL), *e;
	sqlite3_stmt *s;
	if (!a ||
	    sqlite3_prepare_v2(st->wdb,
	                       "INSERT INTO state_events(node, time_ms, type, cgroup, container_id, container, pod,"
	                       " namespace, count) VALUES(?,?,?,?,?,?,?,?,?)",
	                       -1, &s, NULL)) {
		json_decref(a);
		return CM_EIO;
	}
	size_t i;
	int rc = CM_OK;
	static const char *const keys[] = {"type", "cgroup", "container_id", "container", "pod", "namespace"};
	json_array_foreach(a, i, e)
	{
		sqlite3_bind_text(s, 1, it->node, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, json_integer_value(json_object_get(e, "time_ms")));
		for (int k = 0; k < 6; k++)
			sqlite3_bind_text(s, 3 + k, json_string_value(json_object_get(e, keys[k])), -1,
			                  SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 9, json_integer_value(json_object_get(e, "count")));
		if (sqlite3_step(s) != SQLITE_DONE)
			rc = CM_EIO;
		sqlite3_reset(s);
		st->inserted++;
	}
	sqlite3_finalize(s);
	json_decref(a);
	return rc;
}

static void write_items(ag__state *st, item *list)
{
	int rc = sqlite3_exec(st->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) ? CM_EIO : CM_OK;
	for (item *it = list; it && !rc; it = it->next) {
		rc = write_node(st->wdb, it);
		if (!rc && it->events)
			rc = write_events(st, it);
	}
	if (!rc && st->inserted > MAX_EVENTS / 10) { /* trim now and then, not per insert */
		st->inserted = 0;
		char sql[160];
		snprintf(sql, sizeof(sql),
		         "DELETE FROM state_events WHERE id <= (SELECT MAX(id) FROM state_events) - %d", MAX_EVENTS);
		rc = sqlite3_exec(st->wdb, sql, NULL, NULL, NULL) ? CM_EIO : CM_OK;
	}
	if (rc || sqlite3_exec(st->wdb, "COMMIT", NULL, NULL, NULL)) {
		sqlite3_exec(st->wdb, "ROLLBACK", NULL, NULL, NULL);
		pthread_mutex_lock(&st->mu);
		st->write_errors++;
		pthread_mutex_unlock(&st->mu);
		CM_LOG_RL(&st->rl, CM_LOG_WARN, "state", "state.db write failed: %s", sqlite3_errmsg(st->wdb));
	}
}

static void *writer_main(void *arg)
{
	ag__state *st = arg;
	pthread_mutex_lock(&st->mu);
	for (;;) {
		while (!st->head && !st->stop)
			pthread_cond_wait(&st->cv, &st->mu);
		item *list = st->head;
		st->head = st->tail = NULL;
		st->queued = 0;
		if (!list && st->stop)
			break;
		pthread_mutex_unlock(&st->mu);
		write_items(st, list);
		while (list) {
			item *next = list->next;
			item_free(list);
			list = next;
		}
		pthread_mutex_lock(&st->mu);
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* ---- open and close ------------------------------------------------------------------------------------ */

static int open_db(const char *path, sqlite3 **db, cm_err *err)
{
	if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL))
		return cm_errf(err, CM_EIO, "%s: %s", path, *db ? sqlite3_errmsg(*db) : "cannot open");
	sqlite3_busy_timeout(*db, 5000);
	return CM_OK;
}

int ag__state_create(const char *db_path, ag__services *services, int64_t grace_ms, ag__state **out,
		     cm_err *err)
{
	ag__state *st = calloc(1, sizeof(*st));
	if (!st)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	st->services = services;
	st->grace_ms = grace_ms;
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->cv, NULL);
	char *msg = NULL;
	int rc = open_db(db_path, &st->wdb, err);
	if (!rc && sqlite3_exec(st->wdb, SCHEMA, NULL, NULL, &msg))
		rc = cm_errf(err, CM_EIO, "%s: %s", db_path, msg ? msg : "schema");
	sqlite3_free(msg);
	rc = rc ? rc : open_db(db_path, &st->rdb, err);
	if (!rc && pthread_create(&st->writer, NULL, writer_main, st))
		rc = cm_errf(err, CM_ENOMEM, "cannot start the state writer");
	if (rc) {
		ag__state_destroy(st);
		return rc;
	}
	st->started = 1;
	*out = st;
	return CM_OK;
}

void ag__state_destroy(ag__state *st)
{
	if (!st)
		return;
	if (st->started) {
		pthread_mutex_lock(&st->mu);
		st->stop = 1;
		pthread_cond_signal(&st->cv);
		pthread_mutex_unlock(&st->mu);
		pthread_join(st->writer, NULL); /* drains what is queued first */
	}
	sqlite3_close(st->wdb);
	sqlite3_close(st->rdb);
	pthread_cond_destroy(&st->cv);
	pthread_mutex_destroy(&st->mu);
	free(st);
}

void ag__state_stats(ag__state *st, uint64_t *dropped, uint64_t *errors)
{
	pthread_mutex_lock(&st->mu);
	*dropped = st->dropped, *errors = st->write_errors;
	pthread_mutex_unlock(&st->mu);
}

/* ---- GET handlers -------------------------------------------------------------------------------------- */

static void answer(ag__resp *resp, json_t *data)
{
	json_t *o = json_pack("{s:s, s:o}", "status", "success", "data", data);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s) {
		ag__resp_error(resp, 500, "internal", "out of memory");
		return;
	}
	resp->status = 200;
	resp->content_type = "application/json";
	cm_buf_puts(&resp->body, s);
	cm_buf_puts(&resp->body, "\n");
	free(s);
}

static const char *col(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? (const char *)t : "";
}

void ag__state_inventory(ag__state *st, const ag__req *req, ag__resp *resp)
{
	const char *node = ag__param_get(req, "node");
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(st->rdb,
	                       "SELECT node, boot_id, last_seen_ms, collected_ms, inventory FROM state_nodes"
	                       " WHERE ?1 IS NULL OR node = ?1 ORDER BY node",
	                       -1, &s, NULL)) {
		ag__resp_error(resp, 503, "unavailable", sqlite3_errmsg(st->rdb));
		return;
	}
	sqlite3_bind_text(s, 1, node, -1, SQLITE_STATIC);
	json_t *data = json_array();
	int64_t now = cm_now_ms();
	while (sqlite3_step(s) == SQLITE_ROW) {
		json_t *inv = json_loads(col(s, 4), 0, NULL);
		int64_t seen = sqlite3_column_int64(s, 2);
		json_t *n = json_pack("{s:s, s:s, s:I, s:I, s:b}", "node", col(s, 0), "boot_id", col(s, 1),
		                      "last_seen_ms", (json_int_t)seen, "collected_ms",
		                      (json_int_t)sqlite3_column_int64(s, 3), "ready", now - seen <= st->grace_ms);
		json_t *facts = json_object_get(inv, "facts"), *pods = json_object_get(inv, "pods");
		json_object_set_new(n, "facts", facts ? json_incref(facts) : json_object());
		json_object_set_new(n, "pods", pods ? json_incref(pods) : json_array());
		json_array_append_new(data, n);
		json_decref(inv);
	}
	sqlite3_finalize(s);
	answer(resp, data);
}

static long param_long(const ag__req *req, const char *key, long def, long max)
{
	const char *v = ag__param_get(req, key);
	char *end;
	long n = v ? strtol(v, &end, 10) : def;
	if (v && (*end || n < 0))
		return -1;
	return n > max ? max : n;
}

void ag__state_events(ag__state *st, const ag__req *req, ag__resp *resp)
{
	long limit = param_long(req, "limit", EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX),
	     since = param_long(req, "since", 0, LONG_MAX);
	if (limit < 0 || since < 0) {
		ag__resp_error(resp, 400, "bad_data",
		               "limit and since must be non-negative integers (since in Unix ms)");
		return;
	}
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(
	        st->rdb,
	        "SELECT node, time_ms, type, cgroup, container_id, container, pod, namespace, count"
	        " FROM state_events WHERE time_ms >= ?1 AND (?2 IS NULL OR node = ?2) AND"
	        " (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR namespace = ?4) AND (?5 IS NULL OR pod = ?5)"
	        " ORDER BY time_ms, id LIMIT ?6",
	        -1, &s, NULL)) {
		ag__resp_error(resp, 503, "unavailable", sqlite3_errmsg(st->rdb));
		return;
	}
	sqlite3_bind_int64(s, 1, since);
	const char *keys[] = {"node", "type", "namespace", "pod"};
	for (int i = 0; i < 4; i++)
		sqlite3_bind_text(s, 2 + i, ag__param_get(req, keys[i]), -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, limit);
	json_t *data = json_array();
	while (sqlite3_step(s) == SQLITE_ROW)
		json_array_append_new(data, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "node",
		                                      col(s, 0), "time_ms", (json_int_t)sqlite3_column_int64(s, 1),
		                                      "type", col(s, 2), "cgroup", col(s, 3), "container_id", col(s, 4),
		                                      "container", col(s, 5), "pod", col(s, 6), "namespace", col(s, 7),
		                                      "count", (json_int_t)sqlite3_column_int64(s, 8)));
	sqlite3_finalize(s);
	answer(resp, data);
}
