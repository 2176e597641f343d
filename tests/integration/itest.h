/* itest.h -- helpers for integration tests: real binaries as child processes, HTTP, JSON, temp dirs.
 *
 * Daemons come from $CORRAL_BIN (the build tree under test, set by ctest); every server listens on a
 * loopback port picked here; children are stopped by PID. Nothing here talks to any other address.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#ifndef ITEST_H
#define ITEST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cm.h"

typedef struct itest_proc {
	pid_t pid;
	char log[4096];  /* stdout+stderr of the child */
} itest_proc;

/* A fresh directory under /tmp, removed (recursively) by itest_rmtree. */
void itest_mkdtemp(char *out, size_t cap);
void itest_rmtree(const char *dir);
/* A free TCP port on 127.0.0.1. */
int itest_port(void);
/* Path of a binary in the build tree under test, e.g. "corral-aggregator" or "tests/corral-load". */
void itest_bin(char *out, size_t cap, const char *name);

/* Starts argv (argv[0] a path) with output to <logdir>/<tag>.log; returns 0 or -1. */
int itest_spawn(itest_proc *p, const char *logdir, const char *tag, char *const argv[]);
/* Sends sig and waits up to timeout_ms; SIGKILL after that. Returns the exit status word. */
int itest_stop(itest_proc *p, int sig, int timeout_ms);
/* Prints the child's log to stderr (on failure, to see why). */
void itest_dump_log(const itest_proc *p);
/* Waits until the log contains needle; 0 when found within timeout_ms. */
int itest_wait_log(const itest_proc *p, const char *needle, int timeout_ms);
/* Copies the first log line starting with prefix (prefix stripped, newline dropped) into out. */
int itest_log_line(const itest_proc *p, const char *prefix, char *out, size_t cap);

/* One HTTP exchange on loopback. headers: NULL-terminated "Name: value" strings, or NULL.
 * Returns the status code, or -1 when no answer came. */
long itest_http(const char *method, const char *url, const char *const *headers, const void *body, size_t blen,
		cm_buf *reply);
/* GETs url until it answers 200 or timeout_ms passes; 0 on success. */
int itest_wait_http(const char *url, int timeout_ms);
/* GETs url and parses the JSON answer (NULL on failure); *status gets the HTTP status. */
json_t *itest_get_json(const char *url, long *status);

/* Starts corral-aggregator on a free loopback port with the given data dir and token file, plus
 * extra flags (NULL-terminated, or NULL), and waits for /healthz. url gets "http://127.0.0.1:PORT".
 * On an existing data dir it keeps the port given in *url when one is there. 0 on success. */
int itest_aggregator_start(itest_proc *p, const char *logdir, const char *data_dir, const char *token_file,
			   const char *const *extra, char *url, size_t cap);
/* Stops the aggregator with SIGTERM (SIGKILL after 10 s); prints its log unless it exited 0. Returns
 * the exit status word, 0 for a clean exit (no sanitizer report). */
int itest_aggregator_stop(itest_proc *p);
/* Pages forward through a Loki query_range answer for query (LogQL, not yet URL-encoded) from start_ns
 * to end_ns, 5,000 entries a request, and calls fn for each entry in time order until a page is empty.
 * Returns the number of entries seen. */
size_t itest_loki_forward(const char *url, const char *query, long long start_ns, long long end_ns,
			  void (*fn)(void *ctx, const char *line), void *ctx);
/* POSTs a wire frame to <url>/api/v1/agent/push with the bearer token (none when token is NULL). */
long itest_push(const char *url, const char *token, const void *frame, size_t len, cm_buf *reply);
/* Writes s to path (truncating). */
void itest_write_file(const char *path, const char *s);
/* A CA (dir/ca.crt, dir/ca.key) and a server certificate for 127.0.0.1 and localhost signed by it
 * (dir/server.crt, dir/server.key), made with openssl, its output in dir/openssl.out; 0, or -1 with the
 * failed command on stderr. */
int itest_make_certs(const char *dir);

/* A subtree of real test cgroups below this process's own cgroup, seen by an agent as a whole host: v1
 * makes <name> in the cpu, cpuacct and memory hierarchies and a directory of symlinks to them (root,
 * the agent's --cgroup-root, as a cgroup namespace would show it); v2 makes <name> in the unified
 * hierarchy and root is that directory. Cgroup ids below it start at "/". Needs root. */
typedef struct itest_cgtree {
	char parent[3][4096]; /* <name> in each hierarchy */
	int nparents;
	char root[512];
} itest_cgtree;

/* links_dir: where the symlink directory goes (v1). 0, or -1 with a message on stderr. */
int itest_cgtree_make(itest_cgtree *t, const char *links_dir, const char *name);
/* Makes (mk 1) or removes (mk 0) the cgroup <child> ("a" or "a/b") in every hierarchy of the tree. */
int itest_cgtree_child(const itest_cgtree *t, const char *child, int mk);
/* Removes the tree's directories (its children must be gone). */
void itest_cgtree_remove(itest_cgtree *t);

/* The entries the aggregator at url holds for a LogQL stream selector between from_ns and to_ns (Loki's
 * index/stats), -1 when it does not answer 200. */
long itest_loki_entries(const char *url, const char *selector, long long from_ns, long long to_ns);

/* Runs cmd through the shell with its standard output in out (up to cap - 1 bytes, NUL-terminated); the
 * command's exit status, or -1 when it could not run or did not exit. */
int itest_capture(const char *cmd, char *out, size_t cap);

/* URL-encodes s into out. */
void itest_urlencode(char *out, size_t cap, const char *s);

/* A tests/corral-load workload (tests/tools/corral-load.c): its process and the cgroups it made, in the
 * order it printed them ("cgroup <id> <dir>" lines: one per hierarchy on v1). */
typedef struct itest_load {
	itest_proc p;
	char id[4096];      /* the first id it printed */
	char ids[4][4096], dirs[4][4096];
	int ndirs;
} itest_load;

/* Starts argv (argv[0] the corral-load binary, or a shell that execs it) with output to <logdir>/<tag>.log
 * and waits up to 10 s for its "ready"; 0, or -1 with its log printed. */
int itest_load_start(itest_load *w, const char *logdir, const char *tag, char *const argv[]);

/* A sample of a /metrics page: the value of the first line "<name> <value>" at base_url/metrics, -1 when
 * there is none or no answer. */
double itest_metric(const char *base_url, const char *name);
/* VmRSS of a process in KiB (0 when it is gone). */
long itest_rss_kib(pid_t pid);
/* The distinct corral_agent_batch_seq values the aggregator at url stored between from_ms and to_ms (its
 * own clock), in order, up to cap: one per stored agent batch. Asked in 10 s windows at 1 ms steps, below
 * the API's 11,000 points per series. */
int itest_batch_seqs(const char *url, int64_t from_ms, int64_t to_ms, double *out, int cap);

/* 1 when this tree is built with AddressSanitizer (its daemons too): RSS bounds do not apply there, the
 * allocator's quarantine and shadow memory dominate. */
int itest_sanitized(void);

int64_t itest_now_ms(void);
void itest_sleep_ms(int ms);

#endif
