/* na_int.h -- internals shared between the files of nodeagent/ (never included outside it).
 *
 * Collectors report what they read through an na_emit sink, one call per series; they never
 * allocate per sample and never know about batches, timestamps or the wire. The batch builder
 * (na_collect.c) stamps the collection time and owns the memory.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef NA_INT_H
#define NA_INT_H

#include <limits.h>
#include <sys/types.h>
#include <uv.h>

#include "cm.h"
#include "na.h"

/* Labels that many series share (a cgroup's), with their wire encoding (cm_wire_labels_pb) made once
 * when they are set, so a series copies the bytes instead of encoding the strings again. */
typedef struct na_lset {
	const cm_label *labels;
	size_t n;
	const uint8_t *pb;
	size_t pblen;
} na_lset;

typedef struct na_emit {
	/* metric is the __name__; the other labels are set's (set may be NULL) followed by labels[0,
	 * nlabels). Returns 0 or a negative CM_E* to stop. */
	int (*series)(void *ctx, const char *metric, const na_lset *set, const cm_label *labels, size_t nlabels,
		      double value);
	void *ctx;
} na_emit;

/* ---- container identity from cgroup paths (na_ident.c) ------------------------------------------ */

enum { NA_KIND_RAW = 0, NA_KIND_POD, NA_KIND_CONTAINER, NA_KIND_SERVICE };

typedef struct na__ident {
	int kind;            /* NA_KIND_* */
	const char *runtime; /* "kubepods", "docker", "containerd", "crio", "systemd" or "" */
	char qos[16];        /* kubepods: "guaranteed", "burstable", "besteffort" */
	char pod_uid[40];    /* kubepods: the pod UID with dashes ("" when not a pod or below one) */
	char container_id[72]; /* a runtime's 64-hex container id, or "" */
	char unit[128];      /* systemd: the unit name ("cron.service") */
} na__ident;

/* Recognises a cgroup id ("/kubepods/burstable/pod<uid>/<id>", "/system.slice/docker-<id>.scope", ...).
 * Never fails: an id it does not know is a raw cgroup. */
void na__ident_parse(const char *id, na__ident *out);

/* ---- metadata providers (na_meta.c) ---------------------------------------------------------------- */

/* What a provider knows about one container (or pod, when container_id is empty). Strings are
 * NUL-terminated and may be empty. */
typedef struct na__meta_labels {
	char name[128], container[128], pod[254], namespace_[64], image[256];
} na__meta_labels;

typedef struct na__meta na__meta;

/* The table providers fill (strings never NULL, possibly empty; quantities as Kubernetes writes them,
 * "250m", "64Mi"). Pod labels hold only allowlisted keys. */
typedef struct na__meta_container {
	const char *name, *id, *image, *cgroup, *req_cpu, *req_mem, *lim_cpu, *lim_mem, *runtime_name;
} na__meta_container;

typedef struct na__meta_pod {
	const char *name, *namespace_, *uid, *status;
	int ready;  /* running and every container ready */
	cm_label *labels;
	size_t nlabels;
	const char **ips;
	size_t nips;
	na__meta_container *containers;
	size_t ncontainers;
} na__meta_pod;

typedef struct na__meta_opts {
	const char *pods_dir;        /* --pods-dir, or NULL */
	const char *docker_root;     /* --docker-root (holds containers/<id>/config.v2.json), or NULL */
	const char *label_allowlist; /* comma-separated pod label keys kept, or NULL for none */
	const char *kubelet_url;     /* "https://127.0.0.1:10250" (GET <url>/pods), or NULL */
	const char *kubelet_token_file; /* bearer token (service account), or NULL for KUBELET_TOKEN */
	const char *kubelet_ca_file;    /* CA bundle for an https kubelet, or NULL for the system's */
	int64_t refresh_ms;          /* re-read sources at most this often (0 = 10 s) */
} na__meta_opts;

int na__meta_create(const na__meta_opts *o, na__meta **out, cm_err *err);
void na__meta_destroy(na__meta *m);
/* Re-reads every source when refresh_ms passed since the last read, after a lookup miss (when the last
 * read was complete), or when forced. A failing source logs a rate-limited warning and the previous table stays when nothing could
 * be read. Worker thread only, never concurrently with lookup. */
int na__meta_refresh(na__meta *m, int64_t now_ms, int force);
/* Replaces the table with what one buffer says (a kubelet PodList, one pods-dir file or one docker
 * config.v2.json): the parsers behind the providers, for the fuzzer and tests. */
enum { NA_META_KUBELET = 0, NA_META_POD_FILE, NA_META_DOCKER_CONFIG };
int na__meta_parse(na__meta *m, int kind, const void *buf, size_t n, cm_err *err);
/* The current table, for the inventory; valid until the next refresh. */
void na__meta_pods(const na__meta *m, const na__meta_pod **pods, size_t *n);

/* ---- cgroups (na_cgroup.c, na_cgstat.c) ----------------------------------------------------------- */

typedef struct na__cgroups na__cgroups;

typedef struct na__cgroups_opts {
	const char *root;       /* v2 mount, directory of v1 mounts, or NULL for /sys/fs/cgroup */
	const char *proc_root;  /* for /proc/<pid>/net/dev and /proc/partitions; NULL = /proc */
	na__meta *meta;         /* label source, or NULL */
	size_t fd_budget;       /* file descriptors kept open at most; 0 = half of RLIMIT_NOFILE (tests set it) */
} na__cgroups_opts;

/* Container lifecycle seen by the collector, reported through an na_event sink. */
enum { NA_EVENT_STARTED = 1, NA_EVENT_STOPPED, NA_EVENT_OOM_KILLED };

typedef struct na_event_sink {
	void (*event)(void *ctx, int type, const char *id, const na__ident *ident, int64_t t_ms, uint64_t count);
	void *ctx;
} na_event_sink;

/* root: a cgroup v2 mount (has cgroup.controllers), or a directory holding v1 controller mounts
 * (cpuacct or "cpu,cpuacct", cpu, memory, blkio, pids, hugetlb), or NULL for /sys/fs/cgroup.
 * Fixture trees use the same layouts. */
int na__cgroups_open(const na__cgroups_opts *o, na__cgroups **out, cm_err *err);
void na__cgroups_close(na__cgroups *cg);
int na__cgroups_version(const na__cgroups *cg); /* 1 or 2 */
size_t na__cgroups_count(const na__cgroups *cg);  /* cgroups known after the last collection */

/* Rescans the hierarchies, then emits every metric of every cgroup (see na_cgstat.c for the list),
 * labelled id="<path from the hierarchy root>" ("/" for the root) plus name, container, pod,
 * namespace, image when known. now_ms (wall clock) stamps container_last_seen and events; mono_ms
 * (monotonic clock) times the quiet rule and the reload of the device names. Events (new, removed,
 * OOM-killed cgroups) go to ev when not NULL. A cgroup that vanishes mid-walk or a file that cannot be
 * parsed costs that metric only. */
int na__cgroups_collect(na__cgroups *cg, const na_emit *emit, const na_event_sink *ev, int64_t now_ms,
			int64_t mono_ms);

/* ---- inside the cgroup collector (na_cgroup.c: discovery and files; na_cgstat.c: metrics) ----------- */

#define NA__CG_MAX_DEPTH 32 /* cgroups nested deeper than this below a hierarchy root are skipped */
#define NA__CG_MOUNTS 8
#define NA__CG_HUGE_MAX 4
#define NA__CG_TEXT_MAX 16384 /* memory.stat is ~1.5 KiB on v1 and ~4 KiB on v2 */

/* Which controller a file belongs to; a v1 mount serves one or more roles. */
enum {
	NA__R_ANY = 1 << 0, NA__R_UNIFIED = 1 << 1, NA__R_CPUACCT = 1 << 2, NA__R_CPU = 1 << 3,
	NA__R_MEMORY = 1 << 4, NA__R_BLKIO = 1 << 5, NA__R_PIDS = 1 << 6, NA__R_HUGETLB = 1 << 7,
};

enum {
	NA__F_PROCS,
	NA__F2_CPU_STAT, NA__F2_CPU_MAX, NA__F2_CPU_WEIGHT, NA__F2_CPU_PRESSURE, NA__F2_MEM_CURRENT,
	NA__F2_MEM_STAT, NA__F2_MEM_EVENTS, NA__F2_MEM_MAX, NA__F2_MEM_LOW, NA__F2_MEM_PEAK,
	NA__F2_SWAP_CURRENT, NA__F2_SWAP_MAX, NA__F2_MEM_PRESSURE, NA__F2_IO_STAT, NA__F2_IO_PRESSURE,
	NA__F2_PIDS_CURRENT, NA__F2_PIDS_MAX,
	NA__F1_CPUACCT_USAGE, NA__F1_CPUACCT_STAT, NA__F1_CPU_STAT, NA__F1_CPU_SHARES, NA__F1_CPU_QUOTA,
	NA__F1_CPU_PERIOD, NA__F1_MEM_USAGE, NA__F1_MEM_STAT, NA__F1_MEM_MAX_USAGE, NA__F1_MEM_FAILCNT,
	NA__F1_MEM_LIMIT, NA__F1_MEM_SOFT_LIMIT, NA__F1_MEMSW_LIMIT, NA__F1_MEM_OOM_CONTROL,
	NA__F1_BLKIO_BYTES, NA__F1_BLKIO_OPS, NA__F1_PIDS_CURRENT, NA__F1_PIDS_MAX,
	NA__F_HUGE0, /* then 3 per page size: usage, max usage (v2: limit, unused), failures */
	NA__F_COUNT = NA__F_HUGE0 + 3 * NA__CG_HUGE_MAX
};

/* When the kept text of a file may stand in for a read (na_cgroup.c: cg_kept). */
enum {
	NA__REUSE_LIMIT = 0, /* limit files: until a write to the file (v1, watched), else in every pass but
			      * the node's re-read pass */
	NA__REUSE_QUIET,     /* activity files: as limits, and only while the cgroup is quiet */
	NA__REUSE_MEMQUIET,  /* v1 memory.stat, max_usage_in_bytes: as limits, only while memory is quiet */
	NA__REUSE_HEADROOM,  /* v1 memory.failcnt: as limits, and only while the node has headroom */
	NA__REUSE_OOM,       /* v1 memory.oom_control: in every pass that does not poll OOM counts */
};

typedef struct na__cg_fdef {
	int role;
	const char *name;
	int keep;  /* the text of its last read is kept (slot in na__cg_node.kept + 1); 0 = read every pass */
	int reuse; /* NA__REUSE_*: when the kept text is reused */
} na__cg_fdef;

/* Files whose text is kept, re-read in one pass out of NA__CG_SPEC_EVERY (which one depends on the
 * node's id, so the reads are spread over the passes) and reused in the others:
 *   limit files (container_spec_*, pids.max): change rarely (cAdvisor reads them once, when it finds
 *     the container). On v1 only a write to the file itself changes what it reads, and every write(2)
 *     to a file raises IN_MODIFY on it: a limit file with an inotify watch (IN_MODIFY, on the file, so
 *     reads of its neighbours stay off inotify's path) is re-read only after such an event. (v2's
 *     cpu.weight also changes through cpu.weight.nice: v2 keeps the one-pass-in-10 rule.)
 *   activity files (v1 cpuacct.stat, cpu.stat, blkio.throttle.*): counters that only the cgroup's own
 *     running tasks advance, reused only while the cgroup is quiet: its cpuacct.usage (read every pass)
 *     has not changed for NA__CG_QUIET_MS. The CFS period timer counts at most two periods (<= 1 s
 *     each) after the last runtime, so 5 s covers it.
 *     v1 pids.current follows the same rule: a quiet cgroup's tasks cannot fork (nor exit: the exit
 *     runs in the task); a zombie reaped by a parent elsewhere or a task moved in can leave it up to 10
 *     passes late.
 *   memory detail files (v1 memory.stat, max_usage_in_bytes) of a cgroup whose memory is quiet: its
 *     memory.usage_in_bytes (read every pass) unchanged for NA__CG_QUIET_MS and, where the same path
 *     has a cpuacct cgroup, that one quiet too. Every charge and uncharge past the per-cpu charge stock
 *     (64 pages) moves usage; what can move without it (LRU aging of the inactive lists, that is the
 *     working set; faults on pages already charged; a spike that returns to the same usage, for the
 *     watermark) is at most 10 passes late. cAdvisor's dynamic housekeeping samples an unchanging
 *     container's every value less often (up to --max_housekeeping_interval, 15 s under kubelet).
 *   v1 memory.failcnt: the memory page counter counts a failure only when a charge would take its
 *     usage past its limit, and usage never got past the watermark (memory.max_usage_in_bytes) without
 *     raising it; so while hierarchical_memory_limit (memory.stat, <= the cgroup's own limit) is at
 *     least NA__CG_CHARGE_MAX_PAGES pages above the watermark, both read this pass, and unchanged
 *     since the last pass, failcnt cannot have moved since that pass. (While the memory is quiet both
 *     are the kept texts, and failcnt shares their lag of at most 10 passes.)
 *   v1 memory.oom_control: its oom_kill moves only when the kernel OOM-kills a task, which logs
 *     "Killed process" to the kernel log after counting it; with /dev/kmsg open (na_cgroup.c) a
 *     pass polls every oom_control only when the log says so (or lost records), not every pass. */
#define NA__CG_SPEC_EVERY 10
#define NA__CG_KEEP_SLOTS 16
#define NA__CG_KEEP_MAX 4096 /* longer texts are read every pass */
#define NA__CG_QUIET_MS 5000
#define NA__CG_MEMSTAT_KEYS 10 /* memory.stat keys na_cgstat.c parses (MS_N) */
/* Pages one charge can take at most: a folio or allocation of order 13 (the largest MAX_PAGE_ORDER any
 * architecture configures; 32 MiB with 4 KiB pages), well above the per-cpu charge batch (64 pages)
 * and a PMD-sized THP. */
#define NA__CG_CHARGE_MAX_PAGES 8192
#define NA__CG_KMSG_MAX 1024 /* kernel log records read per pass at most (past it: skip and poll) */

extern const na__cg_fdef na__cg_files[NA__F_COUNT];

typedef struct na__cg_mount {
	int fd;     /* the hierarchy root directory */
	int roles;  /* NA__R_* served by this mount */
	dev_t dev;
	ino_t ino;
	int ino_fd; /* inotify watching every directory walked, -1 = none (walk every pass) */
	int ino_ok; /* every directory of the last walk is watched */
	int walked; /* walked at least once */
} na__cg_mount;

typedef struct na__cg_node {
	uint64_t hash;
	uint64_t mgen[NA__CG_MOUNTS]; /* pass in which each mount last listed this cgroup */
	uint64_t born_gen;            /* pass that discovered it */
	int dfd[NA__CG_MOUNTS];       /* directory per mount, -1 = not in that mount */
	int dwd[NA__CG_MOUNTS];       /* inotify watch of dfd[m] (added once, not per walk), 0 = none */
	int fd[NA__F_COUNT];          /* -1 = not opened yet, -2 = absent */
	signed char fmount[NA__F_COUNT]; /* mount file f was opened in, -1 = never opened */
	unsigned short kept_len[NA__CG_KEEP_SLOTS]; /* bytes of the last read of each kept file, 0 = none */
	unsigned short kept_cap[NA__CG_KEEP_SLOTS];
	char *kept[NA__CG_KEEP_SLOTS];              /* malloc'd, NUL-terminated, grown to the longest text seen */
	int kept_wd[NA__CG_KEEP_SLOTS]; /* inotify watch (IN_MODIFY) on a v1 limit file, 0 = none */
	int quiet;                    /* activity files may be reused this pass (set by na_cgstat.c) */
	int mem_quiet;                /* memory detail files may be reused this pass (na_cgstat.c) */
	int headroom;                 /* v1 failcnt may be reused this pass (set by na_cgstat.c) */
	uint64_t mem_hlimit;          /* hierarchical_memory_limit of the last pass, 0 = none */
	uint64_t cpu_usage;           /* v1 cpuacct.usage of the last read, and when it last changed */
	int64_t cpu_changed_ms;       /* monotonic */
	uint64_t memstat[NA__CG_MEMSTAT_KEYS]; /* memory.stat's values as parsed from its kept text */
	unsigned memstat_found;       /* which of them it had (bit per key) */
	uint64_t mem_usage;           /* v1 memory.usage_in_bytes of the last read, and when it last changed */
	int64_t mem_changed_ms;       /* monotonic */
	int stale;                    /* a read said the directory is gone */
	na__ident ident;
	na__meta_labels meta;
	cm_label labels[6];
	size_t nlabels;
	cm_buf labels_pb;             /* their wire encoding (na_lset.pb) */
	uint64_t labels_gen;
	int labels_set;
	double start_s;               /* container_start_time_seconds, 0 until known */
	uint64_t oom_kills;           /* last oom_kill count seen */
	int oom_known;
	int net_pid;                  /* pods: a member process found this pass, 0 = none */
	uint64_t net_gen;
	char id[];
} na__cg_node;

/* A directory made or removed below a watched cgroup directory (inotify IN_CREATE / IN_DELETE). */
typedef struct na__cg_direv {
	int wd;      /* the parent's watch */
	int created; /* else removed */
	char name[256];
} na__cg_direv;

#define NA__CG_DIREVS 64 /* directory events applied one by one per pass at most; more: walk it all */

typedef struct na__cg_dev {
	unsigned major, minor;
	char name[32];
} na__cg_dev;

struct na__cgroups {
	int version;
	char proc_root[PATH_MAX];
	na__meta *meta;
	na__cg_mount mounts[NA__CG_MOUNTS];
	int nmounts;
	char huge[NA__CG_HUGE_MAX][16]; /* hugetlb page sizes ("2MB") */
	int nhuge;
	na__cg_node **nodes;
	size_t nnodes, ncap;
	na__cg_node **table; /* open addressing on id */
	size_t tcap;
	uint64_t gen;
	char idbuf[PATH_MAX];
	char text[NA__CG_TEXT_MAX];
	na__cg_dev devs[64]; /* from <proc>/partitions */
	size_t ndevs;
	int64_t devs_loaded_ms; /* monotonic, as mono_ms */
	int64_t mono_ms;        /* of this pass */
	int any_stale;  /* a read found a cgroup gone last pass: walk everything this pass */
	uint64_t walks; /* whole hierarchy walks done (a pass with no inotify event walks none) */
	uint64_t dir_walks; /* directories walked one by one instead (a cgroup made or removed) */
	na__cg_direv direv[NA__CG_DIREVS]; /* this pass's, for the mount being looked at */
	int ndirev;
	int kmsg_fd;    /* /dev/kmsg (v1 on real cgroup mounts), -1 = poll memory.oom_control every pass */
	int oom_poll;   /* this pass reads every memory.oom_control */
	size_t file_watches, file_watch_max; /* inotify watches on limit files, and their bound: a quarter
					      * of max_user_watches, the rest left to directories */
	size_t kept_fds, fd_budget; /* file descriptors kept open across passes, and their bound */
	cm_ratelimit rl_read, rl_parse, rl_walk, rl_oom;
};

na__cg_node *na__cg_find(const na__cgroups *cg, const char *id);
const char *na__cg_file_name(const na__cgroups *cg, int f, char *buf, size_t cap);
/* pread of file f into cg->text, or n's kept text of f when it may be reused (na_cgroup.c); CM_ENOENT
 * when the node has no such file. */
int na__cg_read(na__cgroups *cg, na__cg_node *n, int f, const char **text);
void na__cg_parse_warn(na__cgroups *cg, const na__cg_node *n, int f, const char *what);
int na__cg_labels(na__cgroups *cg, na__cg_node *n);
int na__cg_stats_begin(na__cgroups *cg, int64_t mono_ms);
int na__cg_stats_node(na__cgroups *cg, na__cg_node *n, const na_emit *emit, const na_event_sink *ev,
		      int64_t now_ms);
int na__cg_stats_end(na__cgroups *cg, const na_emit *emit);

/* Metadata (na_meta.c): a generation that changes when any provider's data changed, and lookup by
 * cgroup path (a pods-dir container's "cgroup"), then runtime container id, then pod UID (pod and
 * namespace only); CM_ENOENT when no provider knows it. */
uint64_t na__meta_generation(const na__meta *m);
int na__meta_lookup(na__meta *m, const char *cgroup, const na__ident *id, na__meta_labels *out);

/* ---- node (na_node.c) --------------------------------------------------------------------------- */

/* The node collector's files, each opened once and read again from offset 0 every pass (a /proc file
 * is made anew by each read from its start), and its texts of this pass. */
enum { NA__NODE_STAT, NA__NODE_MEMINFO, NA__NODE_LOADAVG, NA__NODE_NETDEV, NA__NODE_DISKSTATS,
       NA__NODE_MOUNTS, NA__NODE_BOOT_ID, NA__NODE_FILES };
typedef struct na__node na__node;
/* proc_root NULL = /proc; opens nothing yet. */
int na__node_open(const char *proc_root, na__node **out);
void na__node_close(na__node *nd);
/* Reads <proc_root>/stat and <proc_root>/meminfo and emits, with node_exporter's names:
 * node_cpu_seconds_total{cpu,mode} and node_memory_<Field>_bytes (no _bytes suffix for fields without
 * a unit, such as HugePages_Total, as node_exporter does), then the devices below. Starts a pass. */
int na__node_collect(na__node *nd, const na_emit *emit, cm_err *err);
/* Load, network, disks, filesystems, boot (na_nodedev.c, names listed there). Every source is tried;
 * the first one that could not be read is returned (with err) after the others were collected; a
 * sink error stops at once. */
int na__node_devices(na__node *nd, const na_emit *emit, cm_err *err);
/* File f's whole text (NUL-terminated, grows to 16 MiB), read once per pass; valid until the node is
 * closed or f is read in a later pass. /proc/self/mounts is read again only when poll(2) says the
 * mount table changed (a fixture's plain file, every pass); the boot id only once. */
int na__node_text(na__node *nd, int f, const char **text, cm_err *err);

/* ---- batch building (na_collect.c) ---------------------------------------------------------------- */

typedef struct na__collector na__collector;

typedef struct na__collect_stats {
	size_t series;
	size_t stale;       /* stale markers sent for series that vanished since the last pass */
	int64_t duration_ns;
	int cgroup_errors;  /* collector failures this pass (the rest was still collected) */
	int node_errors;
	int meta_errors;    /* a metadata source failed this pass (labels from it may be missing) */
	size_t events;      /* container events in this pass's batch */
	int inventory;      /* the batch carries the inventory */
} na__collect_stats;

typedef struct na__pass na__pass; /* one pass's series */

int na__collector_create(const na_config *cfg, na__collector **out, cm_err *err);
void na__collector_destroy(na__collector *c);
/* One pass over every collector: appends the wire frame for batch seq to frame. Runs on a worker
 * thread. */
int na__collect(na__collector *c, uint64_t seq, cm_buf *frame, na__collect_stats *st, cm_err *err);
/* Between passes: the series of the last pass if it succeeded, else NULL. They stay valid (and are only
 * read) during the next pass and change when the pass after it starts. */
const na__pass *na__collector_last(const na__collector *c);
/* Appends the Prometheus text exposition of p (families sorted, # HELP and # TYPE) to out. */
int na__pass_render(const na__pass *p, cm_buf *out);
/* Log streams (na_logs.c) the next na__collect puts in its batch; NULL, 0 = none. */
void na__collector_set_logs(na__collector *c, const cm_log_stream *streams, size_t n);

/* ---- the spool of unacknowledged batches (na_spool.c; format documented there) ----------------------- */

typedef struct na__spool na__spool;

typedef struct na__spool_stats {
	uint64_t batches, bytes;          /* waiting now */
	uint64_t dropped, dropped_bytes;  /* oldest dropped past a bound */
	uint64_t corrupt;                 /* files found invalid and deleted */
	uint64_t errors;                  /* batches that could not be written */
} na__spool_stats;

/* dir: the --state-dir (created if missing; batches in dir/spool/), or NULL to keep batches in memory.
 * Past max_batches batches or max_bytes payload bytes (0 = no byte bound) the oldest not being sent
 * are dropped. *last_seq gets the newest seq a previous run put (0 if none). */
int na__spool_open(const char *dir, size_t max_batches, uint64_t max_bytes, na__spool **out, uint64_t *last_seq,
		   cm_err *err);
void na__spool_close(na__spool *sp);
/* Any thread. Takes the malloc'd frame; written (and synced) before it returns in disk mode, unless logs.
 * logs: a logs-only batch, kept in memory (the tailer re-reads it after a crash) and sent overlapping
 * others; any other batch goes alone (nothing else in flight: its inventory and events apply in order),
 * as do the batches found on disk at open. */
int na__spool_put(na__spool *sp, uint64_t seq, uint8_t *frame, size_t len, int logs);
size_t na__spool_pending(na__spool *sp);
/* Sender worker: the oldest batch among the first window that is neither being sent nor done, marked as
 * being sent (never dropped) until na__spool_done. *data points into buf (disk mode) or the spool
 * (memory mode). Unreadable files are deleted and counted. CM_ENOENT if there is none. */
int na__spool_take(na__spool *sp, size_t window, cm_buf *buf, uint64_t *seq, const uint8_t **data, size_t *len);
/* delivered (acknowledged or refused for good): done, deleted once every older batch is done too;
 * else idle again, to be taken again. */
void na__spool_done(na__spool *sp, uint64_t seq, int delivered);
/* How many batches na__spool_take would give out now, one after the other (a batch that goes alone
 * counts only when nothing is out): the sender starts that many slots, so an agent whose batches go
 * alone keeps one connection, not one per slot. */
size_t na__spool_sendable(na__spool *sp, size_t window);
void na__spool_stats_get(na__spool *sp, na__spool_stats *out);
/* Any thread: the smallest seq waiting (UINT64_MAX when empty), and whether seq is waiting. */
uint64_t na__spool_oldest_seq(na__spool *sp);
int na__spool_has(na__spool *sp, uint64_t seq);

/* ---- container logs (na_logs.c): the tailer's records in batches, exactly once ------------------- */

typedef struct na__logs na__logs;

/* *out = NULL (no log tailing) when cfg->log_root is unset or empty; needs cfg->state_dir. */
int na__logs_open(const na_config *cfg, na__logs **out, cm_err *err);
void na__logs_close(na__logs *l);
/* Collection worker, before the pass: commits batches that left the spool, spools replays of batches
 * staged before a restart, and reads new records into *streams (valid until the next call; n = 0: none). */
int na__logs_begin(na__logs *l, na__spool *sp, const cm_log_stream **streams, size_t *n);
/* Collection worker, after the pass's frame was encoded as seq and before it is spooled. */
int na__logs_stage(na__logs *l, uint64_t seq);
/* Worker, one pass at a time: a logs pass (commit, replays, na__logs_begin's read) whose records, if any,
 * go into the spool as a batch of their own with seq, staged first. *spooled: seq was used. */
int na__logs_pass(na__logs *l, na__spool *sp, uint64_t seq, int *spooled, cm_err *err);
/* Whether the last read stopped at its budget or at back-pressure (more is waiting to be read). */
int na__logs_more(const na__logs *l);

/* ---- shipping (na_sender.c) ----------------------------------------------------------------------- */

typedef struct na__sender na__sender;

typedef struct na__sender_stats {
	uint64_t sent, failed_attempts, rejected, dropped, pending, pending_bytes;
} na__sender_stats;

/* Ships the spool's batches oldest first, up to NA_SEND_WINDOW at once (na__spool_take's window and its
 * alone rule), retrying with backoff. The spool outlives it. */
#define NA_SEND_WINDOW 4
int na__sender_create(uv_loop_t *loop, const char *base_url, const char *token, na__spool *spool,
		      na__sender **out, cm_err *err);
/* TLS towards an https:// aggregator: ca_file (NULL = the system's CAs) verifies its certificate, and
 * only http and https are spoken. token_file (NULL = the token came from the environment): re-read
 * before the next attempt after a 401 or 403, so a rotated token is picked up without a restart. Call
 * before the first kick. */
int na__sender_config(na__sender *s, const char *ca_file, const char *token_file, cm_err *err);
/* Loop thread: something was put in the spool; starts a send in each idle slot that has a batch to take,
 * unless a retry waits. */
void na__sender_kick(na__sender *s);
void na__sender_stats_get(const na__sender *s, na__sender_stats *out);
/* Loop thread: fn(arg) is called each time a batch left the spool (acknowledged or refused for good). */
void na__sender_on_sent(na__sender *s, void (*fn)(void *), void *arg);
/* Stops retrying; calls done once no send is in flight and every handle is closed. */
void na__sender_close(na__sender *s, void (*done)(void *), void *arg);
void na__sender_free(na__sender *s);

/* ---- /metrics and /healthz (na_http.c) -------------------------------------------------------------- */

typedef struct na__http na__http;

/* Fills body and content type for GET path; returns the HTTP status, or NA__HTTP_LATER to park the
 * request until the next na__http_resume, which calls the handler for it again (a parked request is
 * closed at the connection timeout or when the server closes). Runs on the loop thread. */
typedef int (*na__http_handler)(void *ctx, const char *path, cm_buf *body, const char **ctype);
#define NA__HTTP_LATER 0

int na__http_start(uv_loop_t *loop, const char *listen, na__http_handler fn, void *ctx, na__http **out,
		   cm_err *err);
void na__http_close(na__http *h, void (*done)(void *), void *arg);
void na__http_resume(na__http *h);

/* Parses a request head. Returns its length when complete (method and path, query stripped, are
 * copied out), 0 when more bytes are needed, CM_EPROTO when it is not HTTP/1.x. */
int na__http_parse_request(const char *buf, size_t len, char *method, size_t mcap, char *path, size_t pcap);

#endif
