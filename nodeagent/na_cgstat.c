/* na_cgstat.c -- the cgroup collector's metrics: cAdvisor's container_* families from kernel files.
 *
 * na_cgroup.c discovers the cgroups and keeps their files open; for each cgroup of a pass it calls
 * na__cg_stats_node, which preads the files and emits one na_emit call per series, with the cgroup's
 * labels (id, name, container, pod, namespace, image when known) plus the family's own. Parsing never
 * allocates; a file that is missing costs its metrics silently (controller not enabled, older kernel),
 * a file that does not parse costs its metrics and a rate-limited warning, and a cgroup that vanishes
 * mid-read costs the rest of that cgroup for this pass. Runs on the agent's worker thread.
 *
 * Files (as the kernel writes them) and the series made from them; "flat" = "key value\n" lines:
 *   cpu   v2 cpu.stat (flat, usec): usage_usec, user_usec, system_usec -> container_cpu_usage_seconds_total,
 *            container_cpu_user_seconds_total, container_cpu_system_seconds_total (/1e6); nr_periods,
 *            nr_throttled, throttled_usec -> container_cpu_cfs_periods_total,
 *            container_cpu_cfs_throttled_periods_total, container_cpu_cfs_throttled_seconds_total
 *         v1 cpuacct.usage (ns) -> usage /1e9; cpuacct.stat "user N\nsystem N\n" (USER_HZ ticks) ->
 *            user, system; cpu.stat (flat) nr_periods, nr_throttled, throttled_time (ns) -> cfs_*
 *   memory v2 memory.current -> container_memory_usage_bytes; memory.stat anon, file, file_mapped,
 *            inactive_file, pgfault, pgmajfault -> container_memory_rss, _cache, _mapped_file,
 *            _working_set_bytes (usage - inactive_file, clamped at 0),
 *            container_memory_failures_total{failure_type=pgfault|pgmajfault,scope=container|hierarchy}
 *            (v2 counts are hierarchical: both scopes get the same value); memory.swap.current ->
 *            container_memory_swap; memory.peak -> container_memory_max_usage_bytes; memory.events
 *            max -> container_memory_failcnt, oom_kill -> container_oom_events_total
 *         v1 memory.usage_in_bytes; memory.stat total_rss, total_cache, total_mapped_file, total_swap,
 *            total_inactive_file, pgfault/pgmajfault (scope container), total_pgfault/total_pgmajfault
 *            (scope hierarchy); memory.max_usage_in_bytes; memory.failcnt; memory.oom_control oom_kill
 *   psi   v2 cpu|memory|io.pressure "some avg10=.. avg60=.. avg300=.. total=USEC\nfull ... total=USEC\n"
 *            -> container_pressure_<r>_waiting_seconds_total (some), _stalled_seconds_total (full)
 *   io    v2 io.stat "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N\n";
 *         v1 blkio.throttle.io_service_bytes and io_serviced "MAJ:MIN Read|Write|Sync|Async|Discard|Total N\n"
 *            then "Total N\n" -> container_fs_reads_bytes_total, container_fs_writes_bytes_total,
 *            container_fs_reads_total, container_fs_writes_total {device="/dev/<name>"} (name from
 *            <proc>/partitions; "MAJ:MIN" when unknown)
 *   pids  pids.current -> container_threads; pids.max -> container_threads_max ("max" = 0, cAdvisor)
 *   hugetlb v2 hugetlb.<size>.current, .events max; v1 .usage_in_bytes, .max_usage_in_bytes, .failcnt
 *            -> container_hugetlb_usage_bytes, _max_usage_bytes, _failcnt {pagesize}
 *   spec  v2 cpu.weight -> container_spec_cpu_shares = 2 + (weight - 1) * 262142 / 9999 (integer, the
 *            inverse of the kubelet's conversion); cpu.max "QUOTA PERIOD" -> container_spec_cpu_quota
 *            (not when "max"), container_spec_cpu_period; memory.max, memory.low, memory.swap.max ->
 *            container_spec_memory_limit_bytes, _reservation_limit_bytes, _swap_limit_bytes ("max" = 0)
 *         v1 cpu.shares; cpu.cfs_quota_us (not when -1); cpu.cfs_period_us; memory.limit_in_bytes,
 *            memory.soft_limit_in_bytes, memory.memsw.limit_in_bytes (unlimited, >= 2^62, = 0)
 *         The spec files and pids.max keep the text of their last read, parsed in the passes that do
 *         not read them (na_cgroup.c): on v1 a watched file is read again after a write to it (the next
 *         pass), else in one pass out of NA__CG_SPEC_EVERY (10) per cgroup (cAdvisor reads them once,
 *         when it finds the container). On v1, cpuacct.stat, cpu.stat and blkio.throttle.* of a quiet
 *         cgroup (cpuacct.usage unchanged for 5 s, monotonic) are read one pass in 10: only its running
 *         tasks advance them (na_int.h, NA__CG_QUIET_MS; docs/agent.md says why a blkio path is taken
 *         to hold the tasks of the same cpuacct path), and so is pids.current; memory.stat and
 *         memory.max_usage_in_bytes of a cgroup whose memory is quiet (usage_in_bytes unchanged for 5 s,
 *         and its path's cpuacct cgroup quiet) too (na_int.h: NA__REUSE_MEMQUIET); memory.failcnt and
 *         memory.oom_control only when they can have moved (na_int.h: NA__REUSE_HEADROOM, NA__REUSE_OOM).
 *   time  container_start_time_seconds: the cgroup directory's ctime when first seen;
 *         container_last_seen: the pass's wall clock, seconds
 *   net   pods (once per pod, from any member process of its containers) and containers outside pods:
 *         <proc>/<pid>/net/dev "iface: rbytes rpackets rerrs rdrop 4*x tbytes tpackets terrs tdrop ..."
 *         -> container_network_{receive,transmit}_{bytes,packets,errors,packets_dropped}_total
 *         {interface}, "lo" skipped (cAdvisor)
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "na_int.h"

#define UNLIMITED_V1 (1ULL << 62)

/* ---- parsing ------------------------------------------------------------------------------------- */

/* A decimal with optional blanks around it and a trailing newline: exactly [p, end) must be used. */
static int cs_u64(const char *p, const char *end, uint64_t *out)
{
	uint64_t v;
	if (cm_scan_u64(&p, end, &v))
		return CM_EPROTO;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n'))
		p++;
	if (p != end)
		return CM_EPROTO;
	*out = v;
	return CM_OK;
}

static int cs_whole(const char *text, uint64_t *out) { return cs_u64(text, text + strlen(text), out); }

/* The value of key in a flat-keyed file; CM_ENOENT when no line has that key. */
static int cs_key(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	for (const char *line = text; *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		if ((size_t)(eol - line) > klen && memcmp(line, key, klen) == 0 && line[klen] == ' ')
			return cs_u64(line + klen + 1, eol, out);
		line = *eol ? eol + 1 : eol;
	}
	return CM_ENOENT;
}

/* "max\n" (sets *is_max) or a decimal. */
static int cs_max(const char *text, uint64_t *out, int *is_max)
{
	*is_max = strncmp(text, "max", 3) == 0 && (text[3] == '\n' || text[3] == '\0' || text[3] == ' ');
	if (*is_max) {
		*out = 0;
		return CM_OK;
	}
	return cs_whole(text, out);
}

/* ---- emission -------------------------------------------------------------------------------------- */

typedef struct cs_ctx {
	na__cgroups *cg;
	na__cg_node *n;
	const na_emit *emit;
	na_lset set; /* n's labels */
	int rc;  /* the first emit error: stops the pass */
} cs_ctx;

static cs_ctx cs_open(na__cgroups *cg, na__cg_node *n, const na_emit *emit)
{
	return (cs_ctx){cg, n, emit, {n->labels, n->nlabels, n->labels_pb.data, n->labels_pb.len}, CM_OK};
}

static void cs_emitl(cs_ctx *c, const char *metric, const cm_label *extra, size_t nextra, double v)
{
	if (!c->rc)
		c->rc = c->emit->series(c->emit->ctx, metric, &c->set, extra, nextra, v);
}

static void cs_emit(cs_ctx *c, const char *metric, double v) { cs_emitl(c, metric, NULL, 0, v); }

/* Reads file f; NULL when missing, unreadable or gone (the caller skips the metric). */
static const char *cs_read(cs_ctx *c, int f)
{
	const char *t;
	int rc = na__cg_read(c->cg, c->n, f, &t);
	if (rc == CM_E2BIG)
		na__cg_parse_warn(c->cg, c->n, f, "file (too large)");
	return rc ? NULL : t;
}

/* Emits the whole-file decimal of f, scaled; CM_OK with *out set when it did. */
static int cs_value_get(cs_ctx *c, int f, const char *metric, double scale, uint64_t *out)
{
	const char *t = cs_read(c, f);
	if (!t)
		return CM_ENOENT;
	if (cs_whole(t, out)) {
		na__cg_parse_warn(c->cg, c->n, f, "value");
		return CM_EPROTO;
	}
	cs_emit(c, metric, (double)*out * scale);
	return CM_OK;
}

static void cs_value(cs_ctx *c, int f, const char *metric, double scale)
{
	uint64_t v;
	cs_value_get(c, f, metric, scale, &v);
}

/* Emits key of flat file text (already read from f), scaled; a missing key is silent. */
static int cs_keyed(cs_ctx *c, int f, const char *text, const char *key, const char *metric, double scale,
		    uint64_t *out)
{
	uint64_t v;
	int rc = cs_key(text, key, &v);
	if (rc == CM_EPROTO)
		na__cg_parse_warn(c->cg, c->n, f, key);
	if (rc)
		return rc;
	if (metric)
		cs_emit(c, metric, (double)v * scale);
	if (out)
		*out = v;
	return CM_OK;
}

/* ---- cpu ------------------------------------------------------------------------------------------- */

static void cs_cfs(cs_ctx *c, int f, const char *t, const char *throttled_key, double scale)
{
	cs_keyed(c, f, t, "nr_periods", "container_cpu_cfs_periods_total", 1, NULL);
	cs_keyed(c, f, t, "nr_throttled", "container_cpu_cfs_throttled_periods_total", 1, NULL);
	cs_keyed(c, f, t, throttled_key, "container_cpu_cfs_throttled_seconds_total", scale, NULL);
}

static void cs_cpu_v2(cs_ctx *c)
{
	const char *t = cs_read(c, NA__F2_CPU_STAT);
	if (!t)
		return;
	cs_keyed(c, NA__F2_CPU_STAT, t, "usage_usec", "container_cpu_usage_seconds_total", 1e-6, NULL);
	cs_keyed(c, NA__F2_CPU_STAT, t, "user_usec", "container_cpu_user_seconds_total", 1e-6, NULL);
	cs_keyed(c, NA__F2_CPU_STAT, t, "system_usec", "container_cpu_system_seconds_total", 1e-6, NULL);
	cs_cfs(c, NA__F2_CPU_STAT, t, "throttled_usec", 1e-6);
}

/* Whether v has stayed *last for NA__CG_QUIET_MS of the monotonic clock (*changed_ms: when it last moved,
 * 0 = never read). */
static int cs_unchanged(uint64_t v, uint64_t *last, int64_t *changed_ms, int64_t now)
{
	if (!*changed_ms || v != *last)
		*last = v, *changed_ms = now;
	return now - *changed_ms >= NA__CG_QUIET_MS;
}

/* cpuacct.usage, which also says whether the cgroup is quiet (na_int.h: NA__CG_QUIET_MS; timed on the
 * monotonic clock, so that a step of the wall clock cannot make a cgroup quiet early). */
static void cs_usage_v1(cs_ctx *c)
{
	int64_t now = c->cg->mono_ms;
	na__cg_node *n = c->n;
	uint64_t v;
	n->quiet = 0;
	const char *t = cs_read(c, NA__F1_CPUACCT_USAGE);
	if (!t)
		return;
	if (cs_whole(t, &v)) {
		na__cg_parse_warn(c->cg, n, NA__F1_CPUACCT_USAGE, "value");
		return;
	}
	cs_emit(c, "container_cpu_usage_seconds_total", (double)v * 1e-9);
	n->quiet = cs_unchanged(v, &n->cpu_usage, &n->cpu_changed_ms, now);
}

static void cs_cpu_v1(cs_ctx *c)
{
	long hz = sysconf(_SC_CLK_TCK);
	double tick = 1.0 / (double)(hz > 0 ? hz : 100);
	cs_usage_v1(c);
	const char *t = cs_read(c, NA__F1_CPUACCT_STAT);
	if (t) {
		cs_keyed(c, NA__F1_CPUACCT_STAT, t, "user", "container_cpu_user_seconds_total", tick, NULL);
		cs_keyed(c, NA__F1_CPUACCT_STAT, t, "system", "container_cpu_system_seconds_total", tick, NULL);
	}
	if ((t = cs_read(c, NA__F1_CPU_STAT)) != NULL)
		cs_cfs(c, NA__F1_CPU_STAT, t, "throttled_time", 1e-9);
}

/* ---- memory ---------------------------------------------------------------------------------------- */

static void cs_failures(cs_ctx *c, const char *type, const char *scope, uint64_t v)
{
	cm_label l[2] = {{"failure_type", type}, {"scope", scope}};
	cs_emitl(c, "container_memory_failures_total", l, 2, (double)v);
}

/* One pass over a flat-keyed file for the n wanted keys (NULL = none): bit i of the result and v[i] set
 * when key i has a line (the first one); a value that does not parse costs its key with a warning. */
static unsigned cs_keys(cs_ctx *c, int f, const char *text, const char *const *keys, size_t n, uint64_t *v)
{
	unsigned found = 0, bad = 0;
	for (const char *line = text; *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		const char *sp = memchr(line, ' ', (size_t)(eol - line));
		size_t klen = sp ? (size_t)(sp - line) : 0;
		for (size_t i = 0; klen && i < n; i++) {
			if (!keys[i] || keys[i][0] != line[0] || ((found | bad) >> i & 1) ||
			    strncmp(line, keys[i], klen) || keys[i][klen])
				continue;
			if (cs_u64(sp + 1, eol, &v[i])) {
				bad |= 1u << i;
				na__cg_parse_warn(c->cg, c->n, f, keys[i]);
			} else {
				found |= 1u << i;
			}
			break;
		}
		line = *eol ? eol + 1 : eol;
	}
	return found;
}

/* memory.stat keys, v1 and v2 */
enum { MS_RSS, MS_CACHE, MS_MAPPED, MS_INACTIVE, MS_PGF, MS_PGMAJF, MS_TPGF, MS_TPGMAJF, MS_SWAP, MS_HLIMIT, MS_N };
_Static_assert(MS_N == NA__CG_MEMSTAT_KEYS, "na__cg_node.memstat holds every key");
#define MS_HAVE(found, k) ((found) >> (k) & 1)

/* The memory.stat part shared by both versions: keys[MS_*] (NULL where the version has none). Sets
 * *hlimit to hierarchical_memory_limit (v1), 0 when absent. */
static void cs_memstat(cs_ctx *c, int f, const char *const keys[MS_N], int have_usage, uint64_t usage,
		       uint64_t *hlimit)
{
	static const char *const metrics[] = {"container_memory_rss", "container_memory_cache",
					      "container_memory_mapped_file"};
	uint64_t v[MS_N] = {0};
	if (hlimit)
		*hlimit = 0;
	const char *t = cs_read(c, f);
	if (!t)
		return;
	na__cg_node *n = c->n;
	unsigned found;
	if (t != c->cg->text) { /* its kept text, reused: parsed when it was read */
		memcpy(v, n->memstat, sizeof(v));
		found = n->memstat_found;
	} else {
		found = cs_keys(c, f, t, keys, MS_N, v);
		memcpy(n->memstat, v, sizeof(v));
		n->memstat_found = found;
	}
	if (hlimit && MS_HAVE(found, MS_HLIMIT))
		*hlimit = v[MS_HLIMIT];
	for (int i = MS_RSS; i <= MS_MAPPED; i++)
		if (MS_HAVE(found, i))
			cs_emit(c, metrics[i], (double)v[i]);
	if (have_usage && MS_HAVE(found, MS_INACTIVE))
		cs_emit(c, "container_memory_working_set_bytes",
			(double)(usage > v[MS_INACTIVE] ? usage - v[MS_INACTIVE] : 0));
	int v2 = f == NA__F2_MEM_STAT;
	if (v2)
		v[MS_TPGF] = v[MS_PGF], v[MS_TPGMAJF] = v[MS_PGMAJF], found |= (found >> MS_PGF & 3u) << MS_TPGF;
	unsigned faults = 0xfu << MS_PGF; /* both counts, both scopes */
	if ((found & faults) != faults)
		return;
	cs_failures(c, "pgfault", "container", v[MS_PGF]);
	cs_failures(c, "pgmajfault", "container", v[MS_PGMAJF]);
	cs_failures(c, "pgfault", "hierarchy", v[MS_TPGF]);
	cs_failures(c, "pgmajfault", "hierarchy", v[MS_TPGMAJF]);
	if (!v2 && MS_HAVE(found, MS_SWAP))
		cs_emit(c, "container_memory_swap", (double)v[MS_SWAP]);
}

static void cs_oom(cs_ctx *c, const na_event_sink *ev, int f, int64_t now_ms)
{
	uint64_t v;
	const char *t = cs_read(c, f);
	if (!t || cs_keyed(c, f, t, "oom_kill", "container_oom_events_total", 1, &v))
		return;
	na__cg_node *n = c->n;
	if (ev && n->oom_known && v > n->oom_kills)
		ev->event(ev->ctx, NA_EVENT_OOM_KILLED, n->id, &n->ident, now_ms, v - n->oom_kills);
	n->oom_kills = v;
	n->oom_known = 1;
}

static void cs_mem_v2(cs_ctx *c, const na_event_sink *ev, int64_t now_ms)
{
	static const char *const keys[MS_N] = {"anon", "file", "file_mapped", "inactive_file", "pgfault", "pgmajfault"};
	uint64_t usage = 0;
	const char *t = cs_read(c, NA__F2_MEM_CURRENT);
	int have = t && cs_whole(t, &usage) == CM_OK;
	if (t && !have)
		na__cg_parse_warn(c->cg, c->n, NA__F2_MEM_CURRENT, "value");
	if (have)
		cs_emit(c, "container_memory_usage_bytes", (double)usage);
	cs_memstat(c, NA__F2_MEM_STAT, keys, have, usage, NULL);
	cs_value(c, NA__F2_SWAP_CURRENT, "container_memory_swap", 1);
	cs_value(c, NA__F2_MEM_PEAK, "container_memory_max_usage_bytes", 1);
	if ((t = cs_read(c, NA__F2_MEM_EVENTS)) != NULL)
		cs_keyed(c, NA__F2_MEM_EVENTS, t, "max", "container_memory_failcnt", 1, NULL);
	cs_oom(c, ev, NA__F2_MEM_EVENTS, now_ms);
}

/* Whether v1 memory.failcnt may be reused this pass (na_int.h, NA__REUSE_HEADROOM): the limit over
 * the cgroup and its ancestors, from this pass's memory.stat, unchanged since the last pass and a
 * largest charge or more above the watermark read this pass. */
static void cs_headroom(cs_ctx *c, uint64_t hlimit, int have_watermark, uint64_t watermark)
{
	na__cg_node *n = c->n;
	uint64_t charge = (uint64_t)NA__CG_CHARGE_MAX_PAGES * (uint64_t)sysconf(_SC_PAGESIZE);
	n->headroom = have_watermark && hlimit && hlimit == n->mem_hlimit && watermark < hlimit &&
		      hlimit - watermark >= charge;
	n->mem_hlimit = hlimit;
}

/* Whether v1 memory.stat and max_usage_in_bytes may be reused this pass (na_int.h: NA__REUSE_MEMQUIET):
 * usage unchanged for NA__CG_QUIET_MS (monotonic) and the cpuacct cgroup of the path, if any, quiet. */
static void cs_mem_quiet(cs_ctx *c, int have, uint64_t usage)
{
	int64_t now = c->cg->mono_ms;
	na__cg_node *n = c->n;
	if (!have) {
		n->mem_quiet = 0, n->mem_changed_ms = 0;
		return;
	}
	n->mem_quiet = cs_unchanged(usage, &n->mem_usage, &n->mem_changed_ms, now) && (!n->cpu_changed_ms || n->quiet);
}

static void cs_mem_v1(cs_ctx *c, const na_event_sink *ev, int64_t now_ms)
{
	static const char *const keys[MS_N] = {"total_rss", "total_cache", "total_mapped_file",
					       "total_inactive_file", "pgfault", "pgmajfault",
					       "total_pgfault", "total_pgmajfault", "total_swap",
					       "hierarchical_memory_limit"};
	uint64_t usage = 0, hlimit, wm = 0;
	const char *t = cs_read(c, NA__F1_MEM_USAGE);
	int have = t && cs_whole(t, &usage) == CM_OK;
	if (t && !have)
		na__cg_parse_warn(c->cg, c->n, NA__F1_MEM_USAGE, "value");
	if (have)
		cs_emit(c, "container_memory_usage_bytes", (double)usage);
	cs_mem_quiet(c, have, usage);
	cs_memstat(c, NA__F1_MEM_STAT, keys, have, usage, &hlimit);
	int have_wm = cs_value_get(c, NA__F1_MEM_MAX_USAGE, "container_memory_max_usage_bytes", 1, &wm) == CM_OK;
	cs_headroom(c, hlimit, have_wm, wm);
	cs_value(c, NA__F1_MEM_FAILCNT, "container_memory_failcnt", 1);
	cs_oom(c, ev, NA__F1_MEM_OOM_CONTROL, now_ms);
}

/* ---- pressure (v2) ----------------------------------------------------------------------------------- */

static void cs_psi(cs_ctx *c, int f, const char *waiting, const char *stalled)
{
	const char *t = cs_read(c, f);
	if (!t)
		return;
	for (const char *line = t; *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		const char *tot = strstr(line, " total=");
		uint64_t v;
		int some = !strncmp(line, "some ", 5), full = !strncmp(line, "full ", 5);
		if ((some || full) && tot && tot < eol) {
			if (cs_u64(tot + 7, eol, &v))
				na__cg_parse_warn(c->cg, c->n, f, "total");
			else
				cs_emit(c, some ? waiting : stalled, (double)v * 1e-6);
		}
		line = *eol ? eol + 1 : eol;
	}
}

/* ---- block I/O ------------------------------------------------------------------------------------- */

static void cs_load_devs(na__cgroups *cg)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/partitions", cg->proc_root);
	cg->ndevs = 0;
	cg->devs_loaded_ms = cg->mono_ms;
	if (cm_read_file(path, cg->text, sizeof(cg->text), NULL))
		return;
	for (char *line = cg->text; *line && cg->ndevs < CM_ARRAY_LEN(cg->devs);) {
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		na__cg_dev *d = &cg->devs[cg->ndevs];
		unsigned long long blocks;
		if (sscanf(line, " %u %u %llu %31s", &d->major, &d->minor, &blocks, d->name) == 4)
			cg->ndevs++;
		line = eol ? eol + 1 : line + strlen(line);
	}
}

static void cs_device(na__cgroups *cg, unsigned maj, unsigned min, char *out, size_t cap)
{
	for (size_t i = 0; i < cg->ndevs; i++) {
		if (cg->devs[i].major == maj && cg->devs[i].minor == min) {
			snprintf(out, cap, "/dev/%s", cg->devs[i].name);
			return;
		}
	}
	snprintf(out, cap, "%u:%u", maj, min);
}

static void cs_io_emit(cs_ctx *c, unsigned maj, unsigned min, const char *metric, uint64_t v)
{
	char dev[48];
	cs_device(c->cg, maj, min, dev, sizeof(dev));
	cm_label l = {"device", dev};
	cs_emitl(c, metric, &l, 1, (double)v);
}

/* A "key=value" field of an io.stat line. */
static int cs_field(const char *line, const char *eol, const char *key, uint64_t *out)
{
	size_t k = strlen(key);
	for (const char *p = line; p && p < eol; p = memchr(p, ' ', (size_t)(eol - p)), p = p ? p + 1 : p) {
		if ((size_t)(eol - p) > k + 1 && !memcmp(p, key, k) && p[k] == '=') {
			const char *q = p + k + 1, *e = memchr(q, ' ', (size_t)(eol - q));
			return cs_u64(q, e ? e : eol, out);
		}
	}
	return CM_ENOENT;
}

static void cs_io_v2(cs_ctx *c)
{
	static const char *const keys[] = {"rbytes", "wbytes", "rios", "wios"};
	static const char *const metrics[] = {"container_fs_reads_bytes_total", "container_fs_writes_bytes_total",
					      "container_fs_reads_total", "container_fs_writes_total"};
	const char *t = cs_read(c, NA__F2_IO_STAT);
	for (const char *line = t; line && *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		unsigned maj, min;
		uint64_t v[4];
		int ok = sscanf(line, "%u:%u ", &maj, &min) == 2;
		for (int i = 0; i < 4 && ok; i++)
			ok = cs_field(line, eol, keys[i], &v[i]) == CM_OK;
		if (!ok && eol > line)
			na__cg_parse_warn(c->cg, c->n, NA__F2_IO_STAT, "line");
		for (int i = 0; i < 4 && ok; i++)
			cs_io_emit(c, maj, min, metrics[i], v[i]);
		line = *eol ? eol + 1 : eol;
	}
}

static void cs_blkio_v1(cs_ctx *c, int f, const char *rmetric, const char *wmetric)
{
	const char *t = cs_read(c, f);
	for (const char *line = t; line && *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		unsigned maj, min;
		char op[16];
		unsigned long long v;
		if (sscanf(line, "%u:%u %15s %llu", &maj, &min, op, &v) == 4) {
			if (!strcmp(op, "Read"))
				cs_io_emit(c, maj, min, rmetric, v);
			else if (!strcmp(op, "Write"))
				cs_io_emit(c, maj, min, wmetric, v);
		} else if (strncmp(line, "Total ", 6) && eol > line) {
			na__cg_parse_warn(c->cg, c->n, f, "line");
		}
		line = *eol ? eol + 1 : eol;
	}
}

/* ---- pids, hugetlb ------------------------------------------------------------------------------------ */

static void cs_pids(cs_ctx *c, int fcur, int fmax)
{
	uint64_t v;
	int is_max;
	cs_value(c, fcur, "container_threads", 1);
	const char *t = cs_read(c, fmax);
	if (t && cs_max(t, &v, &is_max) == CM_OK)
		cs_emit(c, "container_threads_max", (double)v);
	else if (t)
		na__cg_parse_warn(c->cg, c->n, fmax, "value");
}

static void cs_huge(cs_ctx *c)
{
	for (int i = 0; i < c->cg->nhuge; i++) {
		cm_label l = {"pagesize", c->cg->huge[i]};
		int f = NA__F_HUGE0 + 3 * i;
		uint64_t v;
		const char *t = cs_read(c, f);
		if (t && !cs_whole(t, &v))
			cs_emitl(c, "container_hugetlb_usage_bytes", &l, 1, (double)v);
		if (c->cg->version == 1 && (t = cs_read(c, f + 1)) != NULL && !cs_whole(t, &v))
			cs_emitl(c, "container_hugetlb_max_usage_bytes", &l, 1, (double)v);
		t = cs_read(c, f + 2);
		if (t && !(c->cg->version == 2 ? cs_key(t, "max", &v) : cs_whole(t, &v)))
			cs_emitl(c, "container_hugetlb_failcnt", &l, 1, (double)v);
	}
}

/* ---- spec ------------------------------------------------------------------------------------------- */

static void cs_limit(cs_ctx *c, int f, const char *metric, int v1)
{
	uint64_t v;
	int is_max;
	const char *t = cs_read(c, f);
	if (!t)
		return;
	if (cs_max(t, &v, &is_max)) {
		na__cg_parse_warn(c->cg, c->n, f, "limit");
		return;
	}
	if (v1 && v >= UNLIMITED_V1)
		v = 0;
	cs_emit(c, metric, (double)v);
}

static void cs_spec_v2(cs_ctx *c)
{
	uint64_t w, q, p;
	const char *t = cs_read(c, NA__F2_CPU_WEIGHT);
	if (t && !cs_whole(t, &w) && w >= 1 && w <= 10000)
		cs_emit(c, "container_spec_cpu_shares", (double)(2 + (w - 1) * 262142 / 9999));
	if ((t = cs_read(c, NA__F2_CPU_MAX)) != NULL) {
		const char *sp = strchr(t, ' ');
		int is_max = !strncmp(t, "max ", 4);
		if (!sp || cs_whole(sp + 1, &p) || (!is_max && cs_u64(t, sp, &q))) {
			na__cg_parse_warn(c->cg, c->n, NA__F2_CPU_MAX, "quota and period");
		} else {
			if (!is_max)
				cs_emit(c, "container_spec_cpu_quota", (double)q);
			cs_emit(c, "container_spec_cpu_period", (double)p);
		}
	}
	cs_limit(c, NA__F2_MEM_MAX, "container_spec_memory_limit_bytes", 0);
	cs_limit(c, NA__F2_MEM_LOW, "container_spec_memory_reservation_limit_bytes", 0);
	cs_limit(c, NA__F2_SWAP_MAX, "container_spec_memory_swap_limit_bytes", 0);
}

static void cs_spec_v1(cs_ctx *c)
{
	cs_value(c, NA__F1_CPU_SHARES, "container_spec_cpu_shares", 1);
	const char *t = cs_read(c, NA__F1_CPU_QUOTA);
	if (t && strncmp(t, "-1", 2))
		cs_value(c, NA__F1_CPU_QUOTA, "container_spec_cpu_quota", 1);
	cs_value(c, NA__F1_CPU_PERIOD, "container_spec_cpu_period", 1);
	cs_limit(c, NA__F1_MEM_LIMIT, "container_spec_memory_limit_bytes", 1);
	cs_limit(c, NA__F1_MEM_SOFT_LIMIT, "container_spec_memory_reservation_limit_bytes", 1);
	cs_limit(c, NA__F1_MEMSW_LIMIT, "container_spec_memory_swap_limit_bytes", 1);
}

/* ---- times ------------------------------------------------------------------------------------------ */

static void cs_times(cs_ctx *c, int64_t now_ms)
{
	na__cg_node *n = c->n;
	if (n->start_s == 0) {
		struct stat st;
		for (int m = 0; m < c->cg->nmounts; m++) {
			if (n->dfd[m] >= 0 && fstat(n->dfd[m], &st) == 0) {
				n->start_s = (double)st.st_ctim.tv_sec + (double)st.st_ctim.tv_nsec * 1e-9;
				break;
			}
		}
	}
	if (n->start_s > 0)
		cs_emit(c, "container_start_time_seconds", n->start_s);
	cs_emit(c, "container_last_seen", (double)now_ms / 1000.0);
}

/* ---- network ---------------------------------------------------------------------------------------- */

/* The first pid in the node's cgroup.procs, 0 when none. */
static int cs_first_pid(cs_ctx *c)
{
	uint64_t pid;
	const char *t = cs_read(c, NA__F_PROCS);
	if (!t || !*t)
		return 0;
	const char *p = t;
	if (cm_scan_u64(&p, t + strlen(t), &pid) || pid == 0 || pid > 1u << 30)
		return 0;
	return (int)pid;
}

static void cs_net_line(cs_ctx *c, char *line)
{
	static const char *const rx[] = {"container_network_receive_bytes_total",
					 "container_network_receive_packets_total",
					 "container_network_receive_errors_total",
					 "container_network_receive_packets_dropped_total"};
	static const char *const tx[] = {"container_network_transmit_bytes_total",
					 "container_network_transmit_packets_total",
					 "container_network_transmit_errors_total",
					 "container_network_transmit_packets_dropped_total"};
	char *colon = strchr(line, ':');
	if (!colon)
		return;
	*colon = '\0';
	char *name = line + strspn(line, " ");
	unsigned long long v[16];
	int k = sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
		       &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11]);
	if (k != 12 || !strcmp(name, "lo"))
		return;
	cm_label l = {"interface", name};
	for (int i = 0; i < 4; i++) {
		cs_emitl(c, rx[i], &l, 1, (double)v[i]);
		cs_emitl(c, tx[i], &l, 1, (double)v[8 + i]);
	}
}

static void cs_net(cs_ctx *c, int pid)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%d/net/dev", c->cg->proc_root, pid);
	if (cm_read_file(path, c->cg->text, sizeof(c->cg->text), NULL))
		return; /* the process exited: next pass finds another */
	char *line = strchr(c->cg->text, '\n');
	line = line ? strchr(line + 1, '\n') : NULL; /* two header lines */
	while (line && *++line) {
		char *eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		cs_net_line(c, line);
		line = eol;
	}
}

/* The pod node above a container (its parent directory), or NULL. */
static na__cg_node *cs_pod_of(na__cgroups *cg, const na__cg_node *n)
{
	const char *slash = strrchr(n->id, '/');
	if (!slash || slash == n->id || (size_t)(slash - n->id) >= sizeof(cg->idbuf))
		return NULL;
	char id[PATH_MAX];
	memcpy(id, n->id, (size_t)(slash - n->id));
	id[slash - n->id] = '\0';
	return na__cg_find(cg, id);
}

/* ---- per pass -------------------------------------------------------------------------------------- */

int na__cg_stats_begin(na__cgroups *cg, int64_t mono_ms)
{
	cg->mono_ms = mono_ms;
	if (!cg->devs_loaded_ms || mono_ms - cg->devs_loaded_ms > 60000)
		cs_load_devs(cg);
	return CM_OK;
}

int na__cg_stats_node(na__cgroups *cg, na__cg_node *n, const na_emit *emit, const na_event_sink *ev,
		      int64_t now_ms)
{
	cs_ctx c = cs_open(cg, n, emit);
	if (cg->version == 2) {
		cs_cpu_v2(&c);
		cs_mem_v2(&c, ev, now_ms);
		cs_psi(&c, NA__F2_CPU_PRESSURE, "container_pressure_cpu_waiting_seconds_total",
		       "container_pressure_cpu_stalled_seconds_total");
		cs_psi(&c, NA__F2_MEM_PRESSURE, "container_pressure_memory_waiting_seconds_total",
		       "container_pressure_memory_stalled_seconds_total");
		cs_psi(&c, NA__F2_IO_PRESSURE, "container_pressure_io_waiting_seconds_total",
		       "container_pressure_io_stalled_seconds_total");
		cs_io_v2(&c);
		cs_pids(&c, NA__F2_PIDS_CURRENT, NA__F2_PIDS_MAX);
		cs_spec_v2(&c);
	} else {
		cs_cpu_v1(&c);
		cs_mem_v1(&c, ev, now_ms);
		cs_blkio_v1(&c, NA__F1_BLKIO_BYTES, "container_fs_reads_bytes_total", "container_fs_writes_bytes_total");
		cs_blkio_v1(&c, NA__F1_BLKIO_OPS, "container_fs_reads_total", "container_fs_writes_total");
		cs_pids(&c, NA__F1_PIDS_CURRENT, NA__F1_PIDS_MAX);
		cs_spec_v1(&c);
	}
	cs_huge(&c);
	cs_times(&c, now_ms);
	if (n->ident.kind == NA_KIND_CONTAINER && !c.rc) {
		na__cg_node *pod = n->ident.pod_uid[0] ? cs_pod_of(cg, n) : NULL;
		int pid = (!pod || pod->net_gen != cg->gen) ? cs_first_pid(&c) : 0;
		if (pid && pod)
			pod->net_pid = pid, pod->net_gen = cg->gen;
		else if (pid && !n->ident.pod_uid[0])
			cs_net(&c, pid);
	}
	return c.rc;
}

/* Network per pod, once each, from the member process its containers gave this pass. */
int na__cg_stats_end(na__cgroups *cg, const na_emit *emit)
{
	for (size_t i = 0; i < cg->nnodes; i++) {
		na__cg_node *n = cg->nodes[i];
		if (n->ident.kind != NA_KIND_POD || n->net_gen != cg->gen)
			continue;
		cs_ctx c = cs_open(cg, n, emit);
		cs_net(&c, n->net_pid);
		if (c.rc)
			return c.rc;
	}
	return CM_OK;
}
