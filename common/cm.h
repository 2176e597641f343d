/* cm.h -- corral's common library: errors, logging, buffers, arenas, time, config tables, wire batch.
 *
 * The one public header of common/. Everything the daemons and the embeddable libraries (tsdb/, later
 * logship/ and dnsd/) share lives here: the negative-errno error convention, the logger, a growable byte
 * buffer with a bounds-checked reader, a region allocator for request-shaped lifetimes, CRC32C, the
 * Prometheus float and duration formats, the flag table every binary parses its command line with, and the
 * wire batch codec (protobuf-c + zstd + frame) that is the only thing agent and aggregator share. The
 * protobuf-c generated names never leave common/.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef CM_H
#define CM_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors: 0 on success, a negative CM_E* on failure -------------------------------------------- */

#define CM_OK 0
#define CM_ENOMEM (-ENOMEM)
#define CM_EINVAL (-EINVAL)
#define CM_EIO (-EIO)
#define CM_ENOENT (-ENOENT)
#define CM_E2BIG (-E2BIG)      /* a limit was exceeded */
#define CM_EPROTO (-EPROTO)    /* bytes from outside do not follow the format */
#define CM_AGAIN (-EAGAIN)     /* try again later */
#define CM_ECORRUPT (-100000)  /* bytes we wrote ourselves fail a checksum or bound */

const char *cm_strerror(int rc);

/* A caller-owned message buffer that explains a failure in words a user can act on. */
typedef struct cm_err {
	char msg[256];
} cm_err;

/* Formats into err (if not NULL) and returns rc, so call sites read `return cm_errf(err, rc, ...)`. */
int cm_errf(cm_err *err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- logging --------------------------------------------------------------------------------------- */

enum { CM_LOG_ERROR = 0, CM_LOG_WARN = 1, CM_LOG_INFO = 2, CM_LOG_DEBUG = 3 };

/* The level is set once at start by main() and read by every thread. */
void cm_log_set_level(int level);
int cm_log_level(void);
int cm_log_parse_level(const char *s, int *out);
void cm_log_write(int level, const char *comp, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define CM_LOG(level, comp, ...)                                                                           \
	do {                                                                                               \
		if ((level) <= cm_log_level())                                                             \
			cm_log_write((level), (comp), __VA_ARGS__);                                        \
	} while (0)

/* At most one message per interval per limiter; the count of suppressed ones rides on the next. */
typedef struct cm_ratelimit {
	int64_t next_ns;
	uint64_t suppressed;
} cm_ratelimit;

int cm_ratelimit_ok(cm_ratelimit *rl, int64_t interval_ns, uint64_t *suppressed);

#define CM_LOG_RL(rl, level, comp, fmt, ...)                                                               \
	do {                                                                                               \
		uint64_t cm__supp;                                                                         \
		if ((level) <= cm_log_level() && cm_ratelimit_ok((rl), 10 * 1000000000LL, &cm__supp))      \
			cm_log_write((level), (comp), fmt " (%llu similar suppressed)", __VA_ARGS__,       \
				     (unsigned long long)cm__supp);                                        \
	} while (0)

/* ---- time ------------------------------------------------------------------------------------------ */

int64_t cm_now_ms(void);   /* wall clock, Unix milliseconds */
int64_t cm_mono_ns(void);  /* monotonic clock */

/* Prometheus duration ("1h30m", "10s", "250ms") to milliseconds; a bare number is seconds. */
int cm_parse_duration_ms(const char *s, int64_t *out_ms);

/* Prometheus time parameter: RFC 3339 or Unix seconds with fraction, to milliseconds. */
int cm_parse_time_ms(const char *s, int64_t *out_ms);

/* Skips blanks (space, tab), then reads a decimal uint64 at *pp (before end) and advances *pp past
 * its digits; CM_EPROTO when there is no digit or it overflows. What follows is the caller's to check. */
int cm_scan_u64(const char **pp, const char *end, uint64_t *out);

/* Prometheus' float text: shortest round-trip digits, no exponent, "+Inf", "-Inf", "NaN". */
#define CM_FMT_DOUBLE_MAX 400
size_t cm_fmt_double(char *buf, size_t cap, double v);

/* ---- buffers --------------------------------------------------------------------------------------- */

typedef struct cm_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
} cm_buf;

void cm_buf_init(cm_buf *b);
void cm_buf_close(cm_buf *b);
int cm_buf_reserve(cm_buf *b, size_t extra);
int cm_buf_append(cm_buf *b, const void *p, size_t n);
int cm_buf_puts(cm_buf *b, const char *s);
int cm_buf_printf(cm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cm_buf_put_uvarint(cm_buf *b, uint64_t v);
int cm_buf_put_u32le(cm_buf *b, uint32_t v);
int cm_buf_put_f64le(cm_buf *b, double v);
/* A JSON string literal, quotes included, with every control and non-ASCII-safe byte escaped. */
int cm_buf_put_json_str(cm_buf *b, const char *s);
/* Hands the bytes to the caller (who frees them) and leaves the buffer empty. */
uint8_t *cm_buf_take(cm_buf *b, size_t *len);

/* A bounds-checked cursor over bytes we did not write or do not trust; every read fails cleanly. */
typedef struct cm_rd {
	const uint8_t *p;
	const uint8_t *end;
} cm_rd;

static inline void cm_rd_init(cm_rd *r, const void *p, size_t n)
{
	r->p = p;
	r->end = r->p + n;
}
static inline size_t cm_rd_left(const cm_rd *r) { return (size_t)(r->end - r->p); }
int cm_rd_uvarint(cm_rd *r, uint64_t *v);
int cm_rd_u32le(cm_rd *r, uint32_t *v);
int cm_rd_f64le(cm_rd *r, double *v);
int cm_rd_bytes(cm_rd *r, size_t n, const uint8_t **out);

static inline void cm_put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t cm_get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Writes v as a uvarint (LEB128) at p, which has room for 10 bytes; returns the bytes written. */
static inline size_t cm_put_uvarint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	for (; v >= 0x80; v >>= 7)
		p[n++] = (uint8_t)(v | 0x80);
	p[n++] = (uint8_t)v;
	return n;
}

uint32_t cm_crc32c(uint32_t crc, const void *p, size_t n);

/* ---- arena: one region per request-shaped lifetime ------------------------------------------------- */

typedef struct cm_arena_block cm_arena_block;
typedef struct cm_arena {
	cm_arena_block *head;
	size_t used;   /* bytes handed out, for limits */
	size_t limit;  /* 0 = none; past it allocations fail */
	cm_arena_block *spare;  /* blocks kept by cm_arena_reset for the next round */
} cm_arena;

void cm_arena_init(cm_arena *a, size_t limit);
void cm_arena_close(cm_arena *a);
/* Forgets every allocation but keeps the blocks, so a loop that resets per round stops calling malloc. */
void cm_arena_reset(cm_arena *a);
void *cm_arena_alloc(cm_arena *a, size_t n);
void *cm_arena_calloc(cm_arena *a, size_t count, size_t size);
char *cm_arena_strndup(cm_arena *a, const char *s, size_t n);
char *cm_arena_strdup(cm_arena *a, const char *s);

/* ---- label sets and samples ------------------------------------------------------------------------ */

typedef struct cm_label {
	const char *name;
	const char *value;
} cm_label;

typedef struct cm_sample {
	int64_t t_ms;
	double v;
} cm_sample;

typedef struct cm_series {
	cm_label *labels;  /* __name__ first by convention, the rest in any order */
	size_t nlabels;
	cm_sample *samples;
	size_t nsamples;
} cm_series;

int cm_label_name_valid(const char *s);
/* 0 when a user's regular expression could make glibc's regcomp/regexec blow up (stacked or huge
 * counted repetitions, back-references, empty groups, over 4 KiB): refuse it before compiling. */
int cm_regex_safe(const char *pattern);
int cm_utf8_valid(const char *s, size_t n);
void cm_labels_sort(cm_label *labels, size_t n);

/* ---- wire batch (see cm_wire.c for the frame layout) ------------------------------------------------ */

/* Inventory and events (wire fields 11 and 12; corral.proto documents each field). Strings never NULL
 * after decoding. */
typedef struct cm_container {
	const char *name, *id, *image, *cgroup, *req_cpu, *req_mem, *lim_cpu, *lim_mem;
} cm_container;

typedef struct cm_pod {
	const char *name, *namespace_, *uid, *status;
	int ready;
	const cm_label *labels;
	size_t nlabels;
	const char *const *ips;
	size_t nips;
	const cm_container *containers;
	size_t ncontainers;
} cm_pod;

typedef struct cm_inventory {
	int64_t collected_ms;
	const cm_pod *pods;
	size_t npods;
	const cm_label *node;
	size_t nnode;
} cm_inventory;

typedef struct cm_event {
	int64_t t_ms;
	const char *type; /* "started", "stopped", "oom_killed" */
	const char *cgroup, *container_id, *container, *pod, *namespace_;
	uint64_t count;
} cm_event;

/* Container log records (wire field 10, docs/logs.md): one stream per (source file, stdout|stderr),
 * parallel arrays of nrecords entries. Lines are bytes (not NUL-terminated, may be invalid UTF-8);
 * flags bit 0 = truncated (CM_LOG_TRUNCATED). On encode flags may be NULL (all 0). */
#define CM_LOG_TRUNCATED 1u

typedef struct cm_log_stream {
	const cm_label *labels;
	size_t nlabels;
	const int64_t *timestamps_ns;
	const char *const *lines;
	const size_t *line_lens;
	const uint32_t *flags;
	size_t nrecords;
} cm_log_stream;

typedef struct cm_batch {
	const char *node;           /* node name, non-empty */
	const char *boot_id;        /* the node's /proc/sys/kernel/random/boot_id */
	const char *agent_version;
	uint64_t seq;               /* strictly increasing per (node, boot_id) */
	int64_t created_ms;
	cm_series *series;
	size_t nseries;
	const uint8_t *series_pb;   /* more series, already encoded (cm_wire_series1_pb), sent after those */
	size_t series_pblen;
	const cm_inventory *inventory; /* NULL: not in this batch */
	const cm_event *events;
	size_t nevents;
	const cm_log_stream *log_streams;
	size_t nlog_streams;
} cm_batch;

typedef struct cm_wire_limits {
	size_t max_frame;         /* bytes on the wire, header included */
	size_t max_decompressed;  /* protobuf bytes after zstd */
	size_t max_series;
	size_t max_samples;       /* over the whole batch */
	size_t max_labels;        /* per series */
	size_t max_label_bytes;   /* per name or value */
	size_t max_pods;          /* in the inventory */
	size_t max_pod_items;     /* labels, IPs or containers per pod */
	size_t max_events;
	size_t max_log_streams;
	size_t max_log_records;   /* over the whole batch */
	size_t max_log_line;      /* bytes per log line */
} cm_wire_limits;

extern const cm_wire_limits cm_wire_default_limits;

#define CM_WIRE_HEADER 20

int cm_wire_encode(const cm_batch *b, int zstd_level, cm_buf *out, cm_err *err);
/* The same frames from an encoder that keeps its zstd context and buffers between batches (for big
 * batches back to back: no allocation or page fault per batch once warm). *frame stays valid until
 * the next call or destroy. */
typedef struct cm_wire_enc cm_wire_enc;
int cm_wire_enc_create(int zstd_level, cm_wire_enc **out);
void cm_wire_enc_destroy(cm_wire_enc *e);
int cm_wire_enc_encode(cm_wire_enc *e, const cm_batch *b, const uint8_t **frame, size_t *len, cm_err *err);
/* Series encoded ahead of a batch, for an encoder that keeps them between batches (the agent):
 * cm_wire_labels_pb appends Label messages (Series field 1) for l; cm_wire_series1_pb appends one
 * Series (Batch field 6) of one sample whose labels are __name__=metric (when metric is not NULL), the
 * Label messages pre as they are, then l, and says where in out its label bytes are;
 * cm_wire_label_next walks such label bytes (1 with *out set and *pos moved on, 0 at the end, CM_EPROTO
 * on bytes that are not Label messages). Label strings of a walk point into p, not NUL-terminated. */
typedef struct cm_label_ref {
	const char *name;
	size_t nlen;
	const char *value;
	size_t vlen;
} cm_label_ref;
int cm_wire_labels_pb(cm_buf *out, const cm_label *l, size_t n);
int cm_wire_series1_pb(cm_buf *out, const char *metric, const uint8_t *pre, size_t prelen, const cm_label *l,
		       size_t n, int64_t t_ms, double v, size_t *labels_at, size_t *labels_len);
int cm_wire_label_next(const uint8_t *p, size_t n, size_t *pos, cm_label_ref *out);
/* Whether the len label bytes at lab are those cm_wire_series1_pb writes for metric (not NULL), pre and
 * l. And the sample of a Series it wrote, rewritten in place (labels_end: where its label bytes end)
 * for a timestamp whose varint is as long as the one there (cm_wire_varint_len). */
int cm_wire_series1_same(const uint8_t *lab, size_t len, const char *metric, const uint8_t *pre, size_t prelen,
			 const cm_label *l, size_t n);
void cm_wire_series1_set(uint8_t *labels_end, int64_t t_ms, double v);
size_t cm_wire_varint_len(uint64_t v);
/* Decodes into arena-owned memory; on failure *out is untouched and err says why. */
int cm_wire_decode(const void *frame, size_t n, const cm_wire_limits *lim, cm_arena *a, cm_batch *out,
		   cm_err *err);

/* ---- batch seq dedupe window (cm_seqwin.c) ------------------------------------------------------------ */

/* The seqs of one origin (an agent's node and boot) that a store holds: the last CM_SEQWIN_N stored, in
 * store order, and a floor, the highest seq pushed out of them. A seq is a duplicate if it is in the
 * window or at most the floor. Exact as long as a sender never has CM_SEQWIN_N batches newer than an
 * unacknowledged one stored (the agent keeps at most NA_SEND_WINDOW in flight, in spool order). */
#define CM_SEQWIN_N 64
typedef struct cm_seqwin {
	uint64_t floor;
	uint64_t seq[CM_SEQWIN_N]; /* a ring: seq[(head + i) % N] is the i-th oldest of n */
	unsigned head, n;
} cm_seqwin;
int cm_seqwin_has(const cm_seqwin *w, uint64_t seq);
void cm_seqwin_add(cm_seqwin *w, uint64_t seq);  /* stored: remembered (the oldest may go to the floor) */
uint64_t cm_seqwin_at(const cm_seqwin *w, unsigned i); /* the i-th oldest in the window, i < n */

/* ---- config tables ---------------------------------------------------------------------------------- */

typedef enum cm_opt_type {
	CM_OPT_STR,       /* const char *, points into argv or the default */
	CM_OPT_INT,       /* long */
	CM_OPT_DURATION,  /* int64_t milliseconds */
	CM_OPT_SIZE,      /* uint64_t bytes, with K/M/G/Ki/Mi/Gi suffixes */
	CM_OPT_BOOL,      /* int, flag without a value */
	CM_OPT_LOGLEVEL,  /* int, error|warn|info|debug */
	CM_OPT_STRLIST,   /* cm_strlist: the flag may repeat, each occurrence adds one value */
} cm_opt_type;

#define CM_STRLIST_MAX 16
typedef struct cm_strlist {
	const char *v[CM_STRLIST_MAX];  /* point into argv */
	size_t n;
} cm_strlist;

typedef struct cm_opt {
	const char *name;  /* without the leading "--" */
	cm_opt_type type;
	const char *def;   /* default in the same text form as on the command line; NULL = none */
	size_t offset;     /* into the component's config struct */
	const char *help;
	const char *env;   /* environment variable consulted when the flag is absent, or NULL */
} cm_opt;

/* Fills cfg from defaults, environment and argv. Positional arguments are returned through
 * pos/npos (pointers into argv). --help prints usage and returns CM_AGAIN so main() exits 0. */
int cm_opts_parse(const cm_opt *table, size_t n, void *cfg, int argc, char **argv, const char *usage,
		  char ***pos, int *npos, cm_err *err);
void cm_opts_usage(const cm_opt *table, size_t n, const char *usage);

/* Parses a listen address: "127.0.0.1:9300", "[::1]:9300" or ":9300" (all IPv4 addresses); the
 * flag name is only for the message. */
struct sockaddr_storage;
int cm_parse_listen(const char *flag, const char *s, struct sockaddr_storage *out, cm_err *err);

/* Whole-buffer I/O that retries EINTR and short transfers: 0, -errno, or (pread) CM_ECORRUPT when the
 * file ends before n bytes, i.e. it is shorter than what it says of itself. */
int cm_write_all(int fd, const void *p, size_t n);
int cm_pwrite_all(int fd, const void *p, size_t n, uint64_t off);
int cm_pread_all(int fd, void *p, size_t n, uint64_t off);

/* Reads a whole small file (token files, /proc and cgroup files) into buf, NUL-terminated. */
int cm_read_file(const char *path, char *buf, size_t cap, size_t *len);
/* Reads a secret: a file's first line, or the environment variable when path is NULL/empty. */
int cm_read_secret(const char *path, const char *env, char *buf, size_t cap, cm_err *err);
/* Compares secrets in time independent of where they differ. */
int cm_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CM_VERSION "0.1.0"

#endif
