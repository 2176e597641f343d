/* ls_bench.c -- logship on a gen.py container-log tree: the I/O limit (reading every file), the tailer
 * alone, and the tailer into the log store, each as its own process so RSS is its own.
 *
 *   ls_bench cat   TREE
 *   ls_bench tail  TREE RECORDS                 tail + join + commit positions, records discarded
 *   ls_bench store TREE RECORDS DIR [JSONL]     tail into ls_store_append (fsync) per batch, then count
 *                                               what the store holds; JSONL: every record as {"log":..}
 *   ls_bench steady TREE SECONDS DONE_JSON      the agent's loop: wake on inotify (or every 200 ms), read,
 *                                               commit, while gen.py append writes; ends when DONE_JSON
 *                                               (its final line) exists and that many records came, or
 *                                               after SECONDS
 *
 * Prints one JSON line: lines or records, bytes, wall and CPU seconds, CPU microseconds per record,
 * VmHWM. run.sh drives it and prints the table. Never run from ctest.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ls.h"

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long hwm_kib(void)
{
	char buf[4096];
	size_t n;
	if (cm_read_file("/proc/self/status", buf, sizeof(buf), &n))
		return -1;
	const char *p = strstr(buf, "VmHWM:");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

static void report(const char *mode, uint64_t records, uint64_t bytes, double wall, double cpu, const char *extra)
{
	printf("{\"mode\":\"%s\",\"records\":%llu,\"bytes\":%llu,\"wall_s\":%.3f,\"cpu_s\":%.3f,\"records_per_s\":%.0f,"
	       "\"cpu_us_per_record\":%.3f,\"vmhwm_kib\":%ld%s}\n",
	       mode, (unsigned long long)records, (unsigned long long)bytes, wall, cpu, records / (wall > 0 ? wall : 1e-9),
	       records ? cpu * 1e6 / (double)records : 0, hwm_kib(), extra ? extra : "");
}

/* Reads every file under TREE/var/log/pods/<pod>/<ctr>/ to its end in 1 MiB blocks; counts newlines. */
static int cat_tree(const char *tree)
{
	char dir[4096], path[8192];
	snprintf(dir, sizeof(dir), "%s/var/log/pods", tree);
	double t0 = (double)cm_mono_ns() / 1e9, c0 = cpu_s();
	uint64_t lines = 0, bytes = 0;
	static char buf[1 << 20];
	DIR *d = opendir(dir);
	struct dirent *p, *c, *f;
	while (d && (p = readdir(d))) {
		if (p->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, p->d_name);
		DIR *d2 = opendir(path);
		while (d2 && (c = readdir(d2))) {
			if (c->d_name[0] == '.')
				continue;
			char cdir[8192];
			snprintf(cdir, sizeof(cdir), "%s/%s/%s", dir, p->d_name, c->d_name);
			DIR *d3 = opendir(cdir);
			while (d3 && (f = readdir(d3))) {
				if (f->d_name[0] == '.')
					continue;
				char fp[8448];
				snprintf(fp, sizeof(fp), "%s/%s", cdir, f->d_name);
				int fd = open(fp, O_RDONLY);
				ssize_t r;
				while (fd >= 0 && (r = read(fd, buf, sizeof(buf))) > 0) {
					bytes += (uint64_t)r;
					for (char *q = buf; (q = memchr(q, '\n', (size_t)(buf + r - q))); q++)
						lines++;
				}
				if (fd >= 0)
					close(fd);
			}
			if (d3)
				closedir(d3);
		}
		if (d2)
			closedir(d2);
	}
	if (d)
		closedir(d);
	report("cat", lines, bytes, (double)cm_mono_ns() / 1e9 - t0, cpu_s() - c0, NULL);
	return 0;
}

typedef struct sink {
	ls_store *store;
	FILE *jsonl;
	cm_buf out;
} sink;

/* One batch into the store: a push stream per (source, stream), labels as the aggregator will use. */
static int store_batch(sink *k, const ls_batch *b)
{
	size_t ns = b->nsources * 2;
	ls_push_stream *st = calloc(ns ? ns : 1, sizeof(*st));
	ls_entry *e = calloc(b->nrecords ? b->nrecords : 1, sizeof(*e));
	cm_label *l = calloc(ns ? ns * 5 : 1, sizeof(*l));
	size_t *fill = calloc(ns ? ns : 1, sizeof(size_t)), *start = calloc(ns ? ns : 1, sizeof(size_t));
	int rc = !st || !e || !l || !fill || !start ? CM_ENOMEM : 0;
	for (size_t i = 0; !rc && i < b->nrecords; i++)
		fill[b->records[i].source * 2 + b->records[i].stream]++;
	for (size_t i = 0, off = 0; !rc && i < ns; i++)
		start[i] = off, off += fill[i], fill[i] = 0;
	for (size_t i = 0; !rc && i < b->nrecords; i++) {
		const ls_record *r = &b->records[i];
		size_t s = r->source * 2 + r->stream;
		e[start[s] + fill[s]++] = (ls_entry){r->ts_ns, r->line, r->len};
	}
	size_t n = 0;
	for (size_t i = 0; !rc && i < ns; i++) {
		if (!fill[i])
			continue;
		const ls_source *src = &b->sources[i / 2];
		cm_label *ll = &l[n * 5];
		ll[0] = (cm_label){"namespace", src->namespace_}, ll[1] = (cm_label){"pod", src->pod};
		ll[2] = (cm_label){"container", src->container}, ll[3] = (cm_label){"stream", i % 2 ? "stderr" : "stdout"};
		ll[4] = (cm_label){"node", "bench"};
		st[n++] = (ls_push_stream){ll, 5, &e[start[i]], fill[i]};
	}
	cm_err err;
	if (!rc && n)
		rc = ls_store_append(k->store, "bench", b->id, st, n, &err);
	if (rc)
		fprintf(stderr, "append: %s\n", err.msg);
	free(st), free(e), free(l), free(fill), free(start);
	return rc;
}

static int count_entry(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	(void)st, (void)ts;
	sink *k = arg;
	k->out.len = 0;
	if (k->jsonl) {
		char *s = strndup(line, len);
		cm_buf_puts(&k->out, "{\"log\":");
		cm_buf_put_json_str(&k->out, s ? s : "");
		cm_buf_puts(&k->out, "}\n");
		fwrite(k->out.data, 1, k->out.len, k->jsonl);
		free(s);
	}
	return 0;
}

static int want_all(void *arg, const ls_stream_info *st)
{
	(void)arg, (void)st;
	return 1;
}

typedef struct tally {
	uint64_t n, bytes;
	sink *k;
} tally;

static int tally_entry(void *arg, const ls_stream_info *st, int64_t ts, const char *line, size_t len)
{
	tally *t = arg;
	t->n++, t->bytes += len;
	return t->k->jsonl ? count_entry(t->k, st, ts, line, len) : 0;
}

static int run_tail(const char *tree, uint64_t want, const char *store_dir, const char *jsonl)
{
	char db[4096];
	snprintf(db, sizeof(db), "%s/.ls_bench_positions.%d.db", store_dir ? store_dir : "/tmp", (int)getpid());
	if (store_dir)
		mkdir(store_dir, 0755);
	ls_tail_opts o = {.log_root = tree, .db_path = db, .rescan_ms = 1000};
	ls_tail *t;
	cm_err err;
	sink k = {0};
	cm_buf_init(&k.out);
	if (ls_tail_open(&o, &t, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	ls_store_opts so = {.dir = store_dir, .zstd_level = getenv("ZSTD_LEVEL") ? atoi(getenv("ZSTD_LEVEL")) : 0};
	if (store_dir && ls_store_open(&so, &k.store, &err)) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	double t0 = (double)cm_mono_ns() / 1e9, c0 = cpu_s();
	uint64_t got = 0, bytes = 0;
	int idle = 0;
	ls_batch b;
	ls_batch_init(&b);
	while (got < want && idle < 2000) {
		int rc = ls_tail_read(t, &b, 4u << 20, 0);
		if (rc && rc != CM_AGAIN)
			return fprintf(stderr, "read: %s\n", cm_strerror(rc)), 1;
		got += b.nrecords, bytes += b.bytes;
		if (k.store && store_batch(&k, &b))
			return 1;
		if (ls_tail_commit(t, b.id))
			return fprintf(stderr, "commit failed\n"), 1;
		idle = b.nrecords ? 0 : idle + 1;
		if (!b.nrecords)
			usleep(1000);
	}
	double wall = (double)cm_mono_ns() / 1e9 - t0, cpu = cpu_s() - c0;
	char extra[512] = "";
	if (k.store) {
		ls_store_stats st;
		ls_store_stats_get(k.store, &st);
		tally ta = {.k = &k};
		k.jsonl = jsonl ? fopen(jsonl, "w") : NULL;
		ls_store_select(k.store, INT64_MIN, INT64_MAX, want_all, NULL, tally_entry, &ta);
		if (k.jsonl)
			fclose(k.jsonl);
		snprintf(extra, sizeof(extra),
			 ",\"store_entries\":%llu,\"store_bytes\":%llu,\"disk_bytes\":%llu,\"disk_bytes_per_record\":%.2f,\"blocks\":%llu",
			 (unsigned long long)ta.n, (unsigned long long)ta.bytes, (unsigned long long)st.disk_bytes,
			 ta.n ? (double)st.disk_bytes / (double)ta.n : 0, (unsigned long long)st.blocks);
	}
	ls_tail_stats ts;
	ls_tail_stats_get(t, &ts);
	size_t el = strlen(extra);
	snprintf(extra + el, sizeof(extra) - el, ",\"truncated\":%llu,\"bad_lines\":%llu",
		 (unsigned long long)ts.truncated, (unsigned long long)ts.bad_lines);
	report(store_dir ? "store" : "tail", got, bytes, wall, cpu, extra);
	ls_batch_close(&b);
	ls_tail_close(t);
	ls_store_close(k.store);
	cm_buf_close(&k.out);
	unlink(db);
	return got == want ? 0 : 2;
}

/* The "records" of gen.py append's final JSON line, once it is written; UINT64_MAX before. */
static uint64_t appended(const char *done_json)
{
	char buf[4096];
	size_t n;
	if (cm_read_file(done_json, buf, sizeof(buf), &n))
		return UINT64_MAX;
	const char *p = strstr(buf, "\"records\":");
	return p && strstr(buf, "\"done\"") ? strtoull(p + 10, NULL, 10) : UINT64_MAX;
}

static int run_steady(const char *tree, double seconds, const char *done_json)
{
	char db[256];
	snprintf(db, sizeof(db), "/tmp/.ls_bench_steady.%d.db", (int)getpid());
	ls_tail_opts o = {.log_root = tree, .db_path = db, .rescan_ms = 10000};
	ls_tail *t;
	cm_err err;
	if (ls_tail_open(&o, &t, &err))
		return fprintf(stderr, "%s\n", err.msg), 1;
	ls_batch b;
	ls_batch_init(&b);
	double t0 = (double)cm_mono_ns() / 1e9, c0 = cpu_s();
	uint64_t got = 0, bytes = 0, reads = 0;
	uint64_t want = UINT64_MAX;
	while ((double)cm_mono_ns() / 1e9 - t0 < seconds && got < want) {
		if (want == UINT64_MAX)
			want = appended(done_json);
		struct pollfd p = {ls_tail_fd(t), POLLIN, 0};
		poll(&p, p.fd >= 0 ? 1 : 0, 200);
		usleep(100000); /* the agent batches: at most ten reads a second */
		if (ls_tail_read(t, &b, 4u << 20, 0) == 0) {
			got += b.nrecords, bytes += b.bytes, reads++;
			ls_tail_commit(t, b.id);
		}
	}
	char extra[64];
	snprintf(extra, sizeof(extra), ",\"reads\":%llu", (unsigned long long)reads);
	report("steady", got, bytes, (double)cm_mono_ns() / 1e9 - t0, cpu_s() - c0, extra);
	ls_batch_close(&b);
	ls_tail_close(t);
	unlink(db);
	return got == want ? 0 : 2;
}

int main(int argc, char **argv)
{
	if (argc >= 5 && !strcmp(argv[1], "steady"))
		return run_steady(argv[2], atof(argv[3]), argv[4]);
	if (argc >= 3 && !strcmp(argv[1], "cat"))
		return cat_tree(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "tail"))
		return run_tail(argv[2], strtoull(argv[3], NULL, 10), NULL, NULL);
	if (argc >= 5 && !strcmp(argv[1], "store"))
		return run_tail(argv[2], strtoull(argv[3], NULL, 10), argv[4], argc > 5 ? argv[5] : NULL);
	fprintf(stderr, "usage: ls_bench cat TREE | tail TREE RECORDS | store TREE RECORDS DIR [JSONL] | steady TREE S DONE_JSON\n");
	return 2;
}
