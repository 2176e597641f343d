/* ts_db.c -- the ts.h API: open, close, append, select, stats, label matchers.
 *
 * Ties the WAL (ts_wal.c) to the head (ts_head.c). ts_open takes an exclusive flock on <dir>/LOCK (two
 * handles on one directory would interleave segments), replays the WAL into a fresh head and leaves the
 * WAL ready for appends. ts_append checks its input, finds or creates each series in the head (which
 * gives it its id), encodes a WAL series record for the series no written record defines yet and one
 * samples record by id, writes both at once, waits for the group commit to make them durable, and only
 * then publishes the samples to the head, so readers never see a
 * sample that a crash could take back. Records are published in the order they were written to the WAL
 * (a ticket wait on `published`), so the head always equals what a replay would rebuild, duplicate
 * timestamps included (the first written wins in both).
 *
 * Matchers follow Prometheus: regexes are POSIX extended, anchored as ^(re)$, and a missing label reads
 * as the empty string. Any number of threads may call everything here except ts_open/ts_close; a
 * ts_select callback runs under the head's read lock and must not call ts_append or ts_select on the
 * same db (the lock prefers writers, so even a nested select can deadlock).
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_int.h"

/* ---- open and close -------------------------------------------------------------------------------- */

static int db_mkdir(const char *dir, cm_err *err)
{
	char parent[4200];
	if (mkdir(dir, 0755) != 0)
		return errno == EEXIST ? CM_OK : cm_errf(err, -errno, "creating %s: %s", dir, strerror(errno));
	snprintf(parent, sizeof(parent), "%s/..", dir);
	int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) != 0 ? -errno : CM_OK;
	if (fd >= 0)
		close(fd);
	return rc ? cm_errf(err, rc, "syncing the parent of %s: %s", dir, cm_strerror(rc)) : CM_OK;
}

static int db_lock(ts_db *db, const char *dir, cm_err *err)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	db->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (db->lock_fd < 0)
		return cm_errf(err, -errno, "opening %s: %s", path, strerror(errno));
	if (flock(db->lock_fd, LOCK_EX | LOCK_NB) == 0)
		return CM_OK;
	if (errno == EWOULDBLOCK)
		return cm_errf(err, CM_AGAIN, "%s is already open (by this or another process)", dir);
	return cm_errf(err, -errno, "locking %s: %s", path, strerror(errno));
}

/* ---- replay ---------------------------------------------------------------------------------------- */

static int replay_batch(void *ctx, const cm_series *in)
{
	cm_label canon[TS__MAX_LABELS];
	ts__series *s;
	if (in->nsamples == 0)
		return CM_OK;
	size_t n = ts__labels_canon(in->labels, in->nlabels, canon);
	int rc = ts__head_get(ctx, canon, n, &s);
	if (!rc)
		ts__series_set_logged(s); /* the next segment is version 2: defined again there when used */
	return rc ? rc : ts__head_add(ctx, s, in->samples, in->nsamples);
}

static int replay_define(void *ctx, uint64_t id, const cm_label *l, size_t n, int dry)
{
	return ts__head_define(ctx, id, l, n, dry);
}

static int replay_samples(void *ctx, uint64_t id, const cm_sample *x, size_t n, int dry)
{
	return ts__head_add_id(ctx, id, x, n, dry);
}

/* The head's time range after replay, for the storage thread's first decision. */
static int replay_range(void *ctx, const cm_label *l, size_t nl, const cm_sample *x, size_t n)
{
	ts_db *db = ctx;
	(void)l, (void)nl;
	if (x[0].t_ms < atomic_load(&db->mint))
		atomic_store(&db->mint, x[0].t_ms);
	if (x[n - 1].t_ms > atomic_load(&db->maxt))
		atomic_store(&db->maxt, x[n - 1].t_ms);
	return 0;
}

int ts_open(const char *dir, const ts_opts *opts, ts_db **out, ts_open_report *report, cm_err *err)
{
	static const ts_opts defaults = {0};
	ts_open_report rep = {0};
	int rc;
	if (!dir || !*dir || !out)
		return cm_errf(err, CM_EINVAL, "ts_open: no directory");
	ts_db *db = calloc(1, sizeof(*db));
	if (!db)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	db->lock_fd = -1;
	pthread_mutex_init(&db->pub_mu, NULL);
	pthread_cond_init(&db->pub_cv, NULL);
	pthread_rwlockattr_t wpref; /* a waiting cut stops new appends (no starvation); see ts_cut.c */
	pthread_rwlockattr_init(&wpref);
	pthread_rwlockattr_setkind_np(&wpref, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&db->barrier, &wpref);
	pthread_rwlockattr_destroy(&wpref);
	pthread_rwlock_init(&db->blocks_lock, NULL);
	pthread_mutex_init(&db->cut_mu, NULL);
	pthread_mutex_init(&db->st_mu, NULL);
	pthread_cond_init(&db->st_cv, NULL);
	pthread_cond_init(&db->st_done, NULL);
	atomic_init(&db->appends, 0);
	atomic_init(&db->maxt, INT64_MIN);
	atomic_init(&db->mint, INT64_MAX);
	atomic_init(&db->cut_before, INT64_MIN);
	atomic_init(&db->compact_all, 0);
	db->st_cut_to = INT64_MIN;
	opts = opts ? opts : &defaults;
	db->opts = *opts;
	int64_t ooo = opts->ooo_window_ms ? opts->ooo_window_ms : TS__DEFAULT_OOO_MS;
	db->ooo_ms = ooo < 0 ? 0 : ooo;
	if (!(db->dir = strdup(dir))) {
		rc = cm_errf(err, CM_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = ts__cache_create(opts->cache_bytes, &db->cache))) {
		cm_errf(err, rc, "out of memory");
		goto fail;
	}
	if ((rc = db_mkdir(dir, err)) || (rc = db_lock(db, dir, err)) || (rc = ts__blocks_load(db, &rep, err)))
		goto fail;
	if ((rc = ts__head_create(db->ooo_ms, &db->head))) {
		cm_errf(err, rc, "out of memory");
		goto fail;
	}
	ts__replay_ops ops = {db->head, replay_batch, replay_define, replay_samples};
	if ((rc = ts__wal_open(dir, opts, &ops, &rep, &db->wal, err)))
		goto fail;
	ts__head_select(db->head, NULL, 0, INT64_MIN, INT64_MAX, replay_range, db);
	if (!opts->manual_cut && (rc = ts__storage_start(db, err)))
		goto fail;
	if (report)
		*report = rep;
	*out = db;
	return CM_OK;
fail:
	ts_close(db);
	return rc;
}

void ts_close(ts_db *db)
{
	if (!db)
		return;
	ts__storage_stop(db);
	ts__wal_close(db->wal);
	ts__head_destroy(db->head);
	ts__blocks_unload(db);
	ts__cache_destroy(db->cache);
	free(db->dir);
	pthread_rwlock_destroy(&db->barrier);
	pthread_rwlock_destroy(&db->blocks_lock);
	pthread_mutex_destroy(&db->cut_mu);
	pthread_mutex_destroy(&db->st_mu);
	pthread_cond_destroy(&db->st_cv);
	pthread_cond_destroy(&db->st_done);
	if (db->lock_fd >= 0)
		close(db->lock_fd); /* drops the flock */
	pthread_cond_destroy(&db->pub_cv);
	pthread_mutex_destroy(&db->pub_mu);
	free(db);
}

/* ---- append ---------------------------------------------------------------------------------------- */

static int append_check(const cm_series *series, size_t nseries, cm_err *err)
{
	cm_err why;
	if (!series)
		return cm_errf(err, CM_EINVAL, "ts_append: NULL series");
	for (size_t i = 0; i < nseries; i++) {
		int rc = ts__series_check(&series[i], &why);
		if (rc)
			return cm_errf(err, rc, "series %zu: %s", i, why.msg);
	}
	return CM_OK;
}

/* One series' part of a batch: its head series (NULL = nothing to store) and samples. */
typedef struct ts__app {
	ts__series *s;
	const cm_sample *x;
	size_t n;
} ts__app;

/* Hands record seq to the head once every earlier record has been handed over; app NULL skips it. */
static int publish(ts_db *db, uint64_t seq, const ts__app *app, size_t napp, cm_err *err)
{
	int rc = CM_OK;
	pthread_mutex_lock(&db->pub_mu);
	while (db->published + 1 != seq)
		pthread_cond_wait(&db->pub_cv, &db->pub_mu);
	for (size_t i = 0; app && i < napp && !rc; i++)
		if (app[i].s)
			rc = ts__head_add(db->head, app[i].s, app[i].x, app[i].n);
	db->published = seq;
	pthread_cond_broadcast(&db->pub_cv);
	pthread_mutex_unlock(&db->pub_mu);
	if (rc)
		return cm_errf(err, rc, "batch is durable in the WAL but not in memory: %s", cm_strerror(rc));
	return CM_OK;
}

/* Encodes a series record for the series no written record defines yet (if any), then the samples. */
static int append_encode(const ts__app *app, size_t napp, cm_buf *rec, cm_err *err)
{
	size_t start, n, defs = 0, samples = 0;
	for (size_t i = 0; i < napp; i++)
		samples += app[i].s ? app[i].n : 0;
	int rc = cm_buf_reserve(rec, 2 * 9 + napp * 20 + samples * 18); /* the samples record at most */
	if (!rc)
		rc = ts__wal_begin(rec, TS__REC_SERIES, &start);
	for (size_t i = 0; i < napp && !rc; i++) {
		if (!app[i].s || ts__series_logged(app[i].s))
			continue;
		const cm_label *l = ts__series_labels(app[i].s, &n);
		rc = ts__wal_put_series(rec, ts__series_id(app[i].s), l, n);
		defs++;
	}
	if (!rc && defs && (rc = ts__wal_end(rec, start, err)))
		return rc;
	if (!rc && !defs)
		rec->len = start;
	size_t body = rec->len;
	if (!rc)
		rc = ts__wal_begin(rec, TS__REC_SAMPLES, &start);
	for (size_t i = 0; i < napp && !rc; i++)
		if (app[i].s)
			rc = ts__wal_put_samples(rec, ts__series_id(app[i].s), app[i].x, app[i].n);
	if (rc)
		return cm_errf(err, rc, "encoding WAL record: %s", cm_strerror(rc));
	if (rec->len == body + 9) {
		rec->len = 0; /* no samples at all: nothing to write */
		return CM_OK;
	}
	return ts__wal_end(rec, start, err);
}

static int append_locked(ts_db *db, const ts__app *app, size_t napp, cm_err *err)
{
	cm_buf rec;
	uint64_t seq = 0;
	cm_buf_init(&rec);
	int rc = append_encode(app, napp, &rec, err);
	if (!rc && rec.len)
		rc = ts__wal_write(db->wal, rec.data, rec.len, &seq, err);
	cm_buf_close(&rec);
	for (size_t i = 0; !rc && seq && i < napp; i++)
		if (app[i].s)
			ts__series_set_logged(app[i].s);
	if (!rc && seq) {
		rc = ts__wal_sync(db->wal, seq, err);
		int prc = publish(db, seq, rc ? NULL : app, napp, rc ? NULL : err);
		rc = rc ? rc : prc;
	}
	atomic_fetch_add(&db->appends, 1);
	return rc;
}

static void apps_range(const ts__app *app, size_t napp, int64_t *mint, int64_t *maxt)
{
	*mint = INT64_MAX, *maxt = INT64_MIN;
	for (size_t i = 0; i < napp; i++) {
		for (size_t j = 0; app[i].s && j < app[i].n; j++) {
			int64_t t = app[i].x[j].t_ms;
			*maxt = t > *maxt ? t : *maxt;
			*mint = t < *mint ? t : *mint;
		}
	}
}

/* Writes the batch to the WAL, waits until it is durable and publishes it to the head; holds the cut
 * barrier shared throughout, so a cut's snapshot never falls between the WAL and the head. */
static int append_apps(ts_db *db, const ts__app *app, size_t napp, cm_err *err)
{
	pthread_rwlock_rdlock(&db->barrier);
	int rc = append_locked(db, app, napp, err);
	pthread_rwlock_unlock(&db->barrier);
	int64_t mint, maxt;
	apps_range(app, napp, &mint, &maxt);
	if (!rc) {
		ts__storage_poke(db, mint, maxt);
		ts__storage_throttle(db);
	}
	return rc;
}

/* Finds (or creates) the head series of every series with samples. */
static int append_resolve(ts_db *db, const cm_series *series, size_t nseries, ts__app *app, cm_err *err)
{
	cm_label canon[TS__MAX_LABELS];
	for (size_t i = 0; i < nseries; i++) {
		app[i] = (ts__app){NULL, series[i].samples, series[i].nsamples};
		if (series[i].nsamples == 0)
			continue;
		size_t n = ts__labels_canon(series[i].labels, series[i].nlabels, canon);
		int rc = ts__head_get(db->head, canon, n, &app[i].s);
		if (rc)
			return cm_errf(err, rc, "out of memory");
	}
	return CM_OK;
}

int ts_append(ts_db *db, const cm_series *series, size_t nseries, cm_err *err)
{
	if (nseries == 0)
		return CM_OK;
	int rc = append_check(series, nseries, err);
	if (rc)
		return rc;
	ts__app *app = malloc(nseries * sizeof(*app));
	if (!app)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	rc = append_resolve(db, series, nseries, app, err);
	if (!rc)
		rc = append_apps(db, app, nseries, err);
	free(app);
	return rc;
}

int ts_series_ref(ts_db *db, const cm_label *labels, size_t nlabels, uint64_t *ref, cm_err *err)
{
	cm_label canon[TS__MAX_LABELS];
	ts__series *s;
	cm_series one = {(cm_label *)labels, nlabels, NULL, 0};
	int rc = append_check(&one, 1, err);
	if (rc)
		return rc;
	size_t n = ts__labels_canon(labels, nlabels, canon);
	if ((rc = ts__head_get(db->head, canon, n, &s)))
		return cm_errf(err, rc, "out of memory");
	*ref = ts__series_id(s);
	return CM_OK;
}

int ts_append_ref(ts_db *db, const ts_ref_series *series, size_t nseries, cm_err *err)
{
	if (nseries == 0)
		return CM_OK;
	ts__app *app = malloc(nseries * sizeof(*app));
	if (!app)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	int rc = CM_OK;
	for (size_t i = 0; i < nseries && !rc; i++) {
		app[i] = (ts__app){NULL, series[i].samples, series[i].nsamples};
		if (series[i].nsamples && !series[i].samples)
			rc = cm_errf(err, CM_EINVAL, "series %zu has samples but no sample array", i);
		else if (series[i].nsamples && !(app[i].s = ts__head_find(db->head, series[i].ref)))
			rc = cm_errf(err, CM_EINVAL, "series %zu: unknown reference", i);
	}
	if (!rc)
		rc = append_apps(db, app, nseries, err);
	free(app);
	return rc;
}

int ts_flush(ts_db *db, cm_err *err)
{
	int rc = ts__cut(db, INT64_MAX, err);
	if (!rc)
		atomic_store(&db->compact_all, 1);
	if (!rc && !db->storage_started && !(rc = ts__compact(db, err)))
		ts__retain(db);
	if (rc || !db->storage_started)
		return rc;
	ts__storage_wake(db); /* compaction runs off the caller's path */
	return CM_OK;
}

/* ---- select and stats ------------------------------------------------------------------------------ */

void ts_get_stats(ts_db *db, ts_stats *out)
{
	ts_stats st = {0};
	ts__head_stats(db->head, &st);
	ts__wal_stats(db->wal, &st.fsyncs, &st.wal_bytes);
	st.appends = atomic_load(&db->appends);
	st.cuts = atomic_load(&db->cuts);
	st.compactions = atomic_load(&db->compactions);
	st.blocks_dropped = atomic_load(&db->blocks_dropped);
	ts__cache_stats(db->cache, &st);
	pthread_rwlock_rdlock(&db->blocks_lock);
	for (size_t i = 0; i < db->nblocks; i++) {
		const ts__block_meta *m = ts__block_meta_get(db->blocks[i]);
		st.blocks += !m->resolution_ms;
		st.tier_blocks += m->resolution_ms != 0;
		st.block_samples += m->resolution_ms ? 0 : m->samples;
	}
	pthread_rwlock_unlock(&db->blocks_lock);
	*out = st;
}

/* ---- matchers -------------------------------------------------------------------------------------- */

static int matcher_compile(ts_matcher *m, cm_err *err)
{
	char msg[128];
	if (!cm_regex_safe(m->value))
		return cm_errf(err, CM_EINVAL, "regex for label %.64s is too long, has a count over 1000, stacked "
			       "repetitions, a back-reference or an empty group", m->name);
	size_t len = strlen(m->value) + sizeof("^()$");
	char *pat = malloc(len);
	if (!pat)
		return cm_errf(err, CM_ENOMEM, "out of memory");
	snprintf(pat, len, "^(%s)$", m->value);
	int rc = regcomp(&m->re, pat, REG_EXTENDED | REG_NOSUB);
	free(pat);
	if (rc == 0) {
		m->re_ok = 1;
		return CM_OK;
	}
	regerror(rc, &m->re, msg, sizeof(msg));
	return cm_errf(err, rc == REG_ESPACE ? CM_ENOMEM : CM_EINVAL, "bad regex \"%.100s\" for label %.64s: %s",
		       m->value, m->name, msg);
}

int ts_matcher_init(ts_matcher *m, ts_match_type type, const char *name, const char *value, cm_err *err)
{
	memset(m, 0, sizeof(*m));
	if (!name || !value)
		return cm_errf(err, CM_EINVAL, "matcher without a label name or value");
	m->type = type;
	m->name = name;
	m->value = value;
	switch (type) {
	case TS_MATCH_EQ:
	case TS_MATCH_NE:
		return CM_OK;
	case TS_MATCH_RE:
	case TS_MATCH_NRE:
		return matcher_compile(m, err);
	}
	return cm_errf(err, CM_EINVAL, "unknown matcher type %d", (int)type);
}

void ts_matcher_close(ts_matcher *m)
{
	if (m->re_ok)
		regfree(&m->re);
	m->re_ok = 0;
}

int ts_matcher_matches(const ts_matcher *m, const char *value)
{
	if (!value)
		value = "";
	switch (m->type) {
	case TS_MATCH_EQ:
		return strcmp(m->value, value) == 0;
	case TS_MATCH_NE:
		return strcmp(m->value, value) != 0;
	case TS_MATCH_RE:
		return m->re_ok && regexec(&m->re, value, 0, NULL, 0) == 0;
	case TS_MATCH_NRE:
		return m->re_ok && regexec(&m->re, value, 0, NULL, 0) != 0;
	}
	return 0;
}
