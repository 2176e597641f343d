/* ts_db.c -- the ts.h API: open, close, append, select, stats, label matchers.
 *
 * Ties the WAL (ts_wal.c) to the head (ts_head.c). ts_open takes an exclusive flock on <dir>/LOCK (two
 * handles on one directory would interleave segments), replays the WAL into a fresh head and leaves the
 * WAL ready for appends. ts_append checks its input, encodes it as one WAL record, writes it, waits for
 * the group commit to make it durable, and only then publishes it to the head, so readers never see a
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

struct ts_db {
	ts__head *head;
	ts__wal *wal;
	int lock_fd;
	pthread_mutex_t pub_mu;
	pthread_cond_t pub_cv;
	uint64_t published;  /* highest WAL record number handed to the head (or given up on) */
	atomic_uint_least64_t appends;
};

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

static int replay_one(void *ctx, const cm_series *s) { return ts__head_append(ctx, s, 1); }

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
	atomic_init(&db->appends, 0);
	if ((rc = db_mkdir(dir, err)) || (rc = db_lock(db, dir, err)))
		goto fail;
	if ((rc = ts__head_create(&db->head))) {
		cm_errf(err, rc, "out of memory");
		goto fail;
	}
	if ((rc = ts__wal_open(dir, opts ? opts : &defaults, replay_one, db->head, &rep, &db->wal, err)))
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
	ts__wal_close(db->wal);
	ts__head_destroy(db->head);
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

/* Hands record seq to the head once every earlier record has been handed over; series NULL skips it. */
static int publish(ts_db *db, uint64_t seq, const cm_series *series, size_t nseries, cm_err *err)
{
	int rc = CM_OK;
	pthread_mutex_lock(&db->pub_mu);
	while (db->published + 1 != seq)
		pthread_cond_wait(&db->pub_cv, &db->pub_mu);
	if (series)
		rc = ts__head_append(db->head, series, nseries);
	db->published = seq;
	pthread_cond_broadcast(&db->pub_cv);
	pthread_mutex_unlock(&db->pub_mu);
	if (rc)
		return cm_errf(err, rc, "batch is durable in the WAL but not in memory: %s", cm_strerror(rc));
	return CM_OK;
}

int ts_append(ts_db *db, const cm_series *series, size_t nseries, cm_err *err)
{
	cm_buf rec;
	uint64_t seq;
	if (nseries == 0)
		return CM_OK;
	int rc = append_check(series, nseries, err);
	if (rc)
		return rc;
	cm_buf_init(&rec);
	rc = ts__wal_encode(series, nseries, &rec, err);
	if (!rc)
		rc = ts__wal_write(db->wal, rec.data, rec.len, &seq, err);
	cm_buf_close(&rec);
	if (rc)
		return rc;
	rc = ts__wal_sync(db->wal, seq, err);
	int prc = publish(db, seq, rc ? NULL : series, nseries, rc ? NULL : err);
	atomic_fetch_add(&db->appends, 1);
	return rc ? rc : prc;
}

/* ---- select and stats ------------------------------------------------------------------------------ */

int ts_select(ts_db *db, const ts_matcher *m, size_t nm, int64_t mint, int64_t maxt, ts_series_fn fn,
	      void *ctx)
{
	if (!fn || (nm && !m))
		return CM_EINVAL;
	return ts__head_select(db->head, m, nm, mint, maxt, fn, ctx);
}

void ts_get_stats(ts_db *db, ts_stats *out)
{
	ts_stats st = {0};
	ts__head_stats(db->head, &st.series, &st.samples);
	ts__wal_stats(db->wal, &st.fsyncs, &st.wal_bytes);
	st.appends = atomic_load(&db->appends);
	*out = st;
}

/* ---- matchers -------------------------------------------------------------------------------------- */

static int matcher_compile(ts_matcher *m, cm_err *err)
{
	char msg[128];
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
