/* corral-load.c -- a demo and test workload: burns a share of a CPU, holds memory, writes log lines,
 * optionally inside a cgroup of its own that it creates and removes.
 *
 *   corral-load [--cgroup NAME] [--cgroup-root DIR] [--cpu FRACTION] [--mem BYTES] [--log-every MS]
 *               [--cri-log FILE] [--duration SECONDS]
 *
 * With --cgroup, NAME is created below this process's own cgroup in every hierarchy that matters
 * (cgroup v2: the unified tree; v1: the cpu, cpuacct and memory controllers), the process moves
 * itself in, and prints one line per created directory ("cgroup <id> <dir>", id relative to the
 * hierarchy root, as the agent reports it) and then "ready". On SIGTERM or SIGINT, or when
 * --duration ends, it moves itself back and removes the directories, so nothing is left behind.
 * With --cri-log the log lines are also appended to FILE in the CRI format kubelet writes
 * ("<RFC 3339 nano> stdout F <line>"), so the agent can tail them as a container's log.
 * Used by `make demo` and by the integration tests; never by the daemons.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DIRS 4

static volatile sig_atomic_t stop;

typedef struct created {
	char mount[4096];   /* the hierarchy's mount, resolved */
	char dir[4096];     /* the new cgroup */
	char parent[4096];  /* where we were: moved back here before rmdir */
} created;

/* snprintf that reports truncation as failure */
#define FMT(buf, ...) (snprintf((buf), sizeof(buf), __VA_ARGS__) >= (int)sizeof(buf) ? -1 : 0)

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int write_str(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	int ok = fputs(s, f) >= 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Looks up this process's path in the hierarchy whose /proc/self/cgroup controller field is ctrl
 * ("" for v2), e.g. "cpu,cpuacct" lines match ctrl "cpuacct". */
static int own_path(const char *ctrl, char *out, size_t cap)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[4096];
	int found = -1;
	while (f && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = 0;
		line[strcspn(line, "\n")] = 0;
		char *path = c2 + 1, *list = c1 + 1, *save, *tok;
		path[strcspn(path, "\n")] = 0;
		int match = !*ctrl ? !*list : 0;
		for (tok = strtok_r(list, ",", &save); tok && *ctrl; tok = strtok_r(NULL, ",", &save))
			match |= !strcmp(tok, ctrl);
		if (match) {
			snprintf(out, cap, "%s", strcmp(path, "/") ? path : "");
			found = 0;
			break;
		}
	}
	if (f)
		fclose(f);
	return found;
}

static int join(created *c, const char *mount, const char *own, const char *name)
{
	char procs[4200], pid[32];
	if (!realpath(mount, c->mount) || FMT(c->parent, "%s%s", mount, own) || FMT(c->dir, "%s/%s", c->parent, name) ||
	    FMT(procs, "%s/cgroup.procs", c->dir) || FMT(pid, "%d\n", (int)getpid())) {
		fprintf(stderr, "corral-load: path too long under %s\n", mount);
		return -1;
	}
	if (mkdir(c->dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "corral-load: mkdir %s: %s\n", c->dir, strerror(errno));
		return -1;
	}
	if (write_str(procs, pid)) {
		fprintf(stderr, "corral-load: join %s: %s\n", c->dir, strerror(errno));
		rmdir(c->dir);
		return -1;
	}
	printf("cgroup %s/%s %s\n", own, name, c->dir);
	return 0;
}

static int joined(const created *c, int n, const char *mount)
{
	char real[4096];
	for (int k = 0; realpath(mount, real) && k < n; k++)
		if (!strcmp(c[k].mount, real))
			return 1; /* "cpu" and "cpuacct" may both lead to one "cpu,cpuacct" mount */
	return 0;
}

static int setup(const char *root, const char *name, created *out, int *n)
{
	static const char *const ctrls[] = {"cpuacct", "cpu", "memory"};
	char own[4096], mount[4096], probe[4200];
	if (FMT(probe, "%s/cgroup.controllers", root))
		return -1;
	if (access(probe, F_OK) == 0) {
		if (own_path("", own, sizeof(own)))
			return fprintf(stderr, "corral-load: no cgroup v2 line in /proc/self/cgroup\n"), -1;
		return join(&out[(*n)++], root, own, name);
	}
	for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
		if (FMT(mount, "%s/%s", root, ctrls[i]) || !is_dir(mount) || own_path(ctrls[i], own, sizeof(own)) ||
		    joined(out, *n, mount))
			continue;
		if (join(&out[(*n)++], mount, own, name))
			return -1;
	}
	return *n ? 0 : (fprintf(stderr, "corral-load: no cgroup hierarchy under %s\n", root), -1);
}

static void teardown(created *c, int n)
{
	char procs[4200], pid[32];
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	for (int i = n - 1; i >= 0; i--) {
		if (FMT(procs, "%s/cgroup.procs", c[i].parent) || write_str(procs, pid))
			fprintf(stderr, "corral-load: leave %s: %s\n", c[i].dir, strerror(errno));
		if (rmdir(c[i].dir))
			fprintf(stderr, "corral-load: rmdir %s: %s\n", c[i].dir, strerror(errno));
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Appends one CRI record ("<time> stdout F <msg>") to f. */
static void cri_line(FILE *f, const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "%s.%09ldZ stdout F %s\n", when, ts.tv_nsec, msg);
	fflush(f);
}

/* Burns cpu * 100 ms of every 100 ms slice until stop or the deadline; logs every log_ms. */
static void run(double cpu, long log_ms, double deadline, const char *name, FILE *cri)
{
	double next_log = now_s();
	unsigned long n = 0;
	while (!stop && (deadline <= 0 || now_s() < deadline)) {
		double slice = now_s();
		volatile double x = 1;
		while (now_s() - slice < cpu * 0.1)
			for (int i = 0; i < 1000; i++)
				x = x * 1.000001 + 0.000001;
		if (log_ms > 0 && now_s() >= next_log) {
			char msg[160];
			snprintf(msg, sizeof(msg), "%s: line %lu, working", name, ++n);
			printf("%s\n", msg);
			fflush(stdout);
			if (cri)
				cri_line(cri, msg);
			next_log += log_ms / 1000.0;
		}
		double rest = 0.1 - (now_s() - slice);
		if (rest > 0)
			nanosleep(&(struct timespec){0, (long)(rest * 1e9)}, NULL);
	}
}

int main(int argc, char **argv)
{
	const char *name = NULL, *root = "/sys/fs/cgroup", *cri_path = NULL;
	double cpu = 0.1, duration = 0;
	long log_ms = 0;
	size_t mem = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--cgroup")) name = argv[i + 1];
		else if (!strcmp(argv[i], "--cgroup-root")) root = argv[i + 1];
		else if (!strcmp(argv[i], "--cpu")) cpu = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--mem")) mem = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--log-every")) log_ms = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--cri-log")) cri_path = argv[i + 1];
		else return fprintf(stderr, "corral-load: unknown flag %s\n", argv[i]), 2;
	}
	if ((argc - 1) % 2 || cpu < 0 || cpu > 1)
		return fprintf(stderr, "usage: corral-load [--cgroup NAME] [--cgroup-root DIR] [--cpu 0..1] "
				       "[--mem BYTES] [--log-every MS] [--cri-log FILE] [--duration S]\n"), 2;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);
	created dirs[MAX_DIRS];
	int ndirs = 0;
	if (name && setup(root, name, dirs, &ndirs)) {
		teardown(dirs, ndirs);
		return 1;
	}
	volatile char *hold = mem ? malloc(mem) : NULL;
	for (size_t i = 0; hold && i < mem; i += 4096)
		hold[i] = 0x5a; /* touch every page so it counts as used (volatile: not optimised away) */
	FILE *cri = cri_path ? fopen(cri_path, "a") : NULL;
	if (cri_path && !cri)
		fprintf(stderr, "corral-load: %s: %s\n", cri_path, strerror(errno));
	printf("ready\n");
	run(cpu, log_ms, duration > 0 ? now_s() + duration : 0, name ? name : "corral-load", cri);
	if (cri)
		fclose(cri);
	free((void *)hold);
	teardown(dirs, ndirs);
	return 0;
}
