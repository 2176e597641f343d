/* test_na_meta.c -- metadata providers: pods-dir, docker configs and the kubelet pods API; lookup order,
 * the label allowlist, environment never copied, generations, a broken source degrading to the previous
 * table, and the cgroup collector labelling fixture containers with what the providers know.
 *
 * Fixtures: tests/data/pods, tests/data/docker, tests/data/kubelet (see tests/data/README.md); edits go
 * to temp copies. There is no kubelet on this machine, so the kubelet tests start a fake one: a real
 * HTTP/1.1 server on a loopback port in a thread of this test, answering GET /pods with the canned
 * PodList when the bearer token matches (401 otherwise), or 500 / a cut body when told to.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "na_test.h"

#define C0      "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
#define A1      "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define D0      "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"
#define POD_UID "6f1c2a3b-0000-4000-8000-000000000001"

static na__meta *open_meta(const char *pods, const char *docker, const char *allow)
{
	na__meta *m;
	cm_err err;
	na__meta_opts o = {.pods_dir = pods, .docker_root = docker, .label_allowlist = allow, .refresh_ms = 1000};
	assert_int_equal(na__meta_create(&o, &m, &err), 0);
	return m;
}

static void lookup(na__meta *m, const char *cgroup, const char *ctr, const char *pod_uid, na__meta_labels *out)
{
	na__ident id;
	memset(&id, 0, sizeof(id));
	snprintf(id.container_id, sizeof(id.container_id), "%s", ctr);
	snprintf(id.pod_uid, sizeof(id.pod_uid), "%s", pod_uid);
	assert_int_equal(na__meta_lookup(m, cgroup, &id, out), 0);
}

static void test_lookup_order_and_fields(void **state)
{
	(void)state;
	char pods[PATH_MAX], docker[PATH_MAX];
	data_path(pods, "pods");
	data_path(docker, "docker");
	na__meta *m = open_meta(pods, docker, "app");
	assert_int_equal(na__meta_generation(m), 0);
	assert_int_equal(na__meta_refresh(m, 0, 0), CM_EPROTO); /* broken.json; the rest is read */
	assert_int_equal(na__meta_generation(m), 1);
	na__meta_labels l;
	lookup(m, "/x", C0, POD_UID, &l); /* container id first */
	assert_string_equal(l.pod, "web-7d4b9c");
	assert_string_equal(l.namespace_, "shop");
	assert_string_equal(l.container, "nginx");
	assert_string_equal(l.image, "nginx:1.25");
	assert_string_equal(l.name, "nginx");
	lookup(m, "/y", A1, "", &l);
	assert_string_equal(l.container, "sidecar");
	assert_string_equal(l.image, "envoy:1.28");
	lookup(m, "/kubepods/burstable/pod" POD_UID, "", POD_UID, &l); /* the pod cgroup: pod labels only */
	assert_string_equal(l.pod, "web-7d4b9c");
	assert_string_equal(l.container, "");
	assert_string_equal(l.image, "");
	lookup(m, "/system.slice/cron.service", "", "", &l); /* by cgroup path */
	assert_string_equal(l.pod, "cron");
	assert_string_equal(l.namespace_, "host");
	assert_string_equal(l.image, "debian:bookworm");
	lookup(m, "/docker/" D0, D0, "", &l); /* docker: name without the slash, no pod */
	assert_string_equal(l.name, "redis");
	assert_string_equal(l.image, "redis:7");
	assert_string_equal(l.pod, "");
	na__ident none;
	memset(&none, 0, sizeof(none));
	assert_int_equal(na__meta_lookup(m, "/unknown", &none, &l), CM_ENOENT);
	na__meta_destroy(m);
}

static int contains(const char *s, const char *needle)
{
	return s && strstr(s, needle);
}

/* Only allowlisted label keys are kept; environment values appear nowhere in the table. */
static void test_allowlist_and_no_env(void **state)
{
	(void)state;
	char pods[PATH_MAX], docker[PATH_MAX];
	data_path(pods, "pods");
	data_path(docker, "docker");
	na__meta *m = open_meta(pods, docker, "app,app.kubernetes.io/name");
	na__meta_refresh(m, 0, 0);
	const na__meta_pod *p;
	size_t n, found = 0;
	na__meta_pods(m, &p, &n);
	assert_int_equal(n, 3); /* web, cron, redis */
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < p[i].nlabels; k++) {
			assert_true(!strcmp(p[i].labels[k].name, "app") ||
			            !strcmp(p[i].labels[k].name, "app.kubernetes.io/name"));
			assert_false(contains(p[i].labels[k].value, "hunter2"));
		}
		for (size_t k = 0; k < p[i].ncontainers; k++) {
			const na__meta_container *c = &p[i].containers[k];
			const char *f[] = {c->name,    c->id,      c->image,   c->cgroup,      c->req_cpu,
			                   c->req_mem, c->lim_cpu, c->lim_mem, c->runtime_name};
			for (size_t x = 0; x < CM_ARRAY_LEN(f); x++)
				assert_false(contains(f[x], "hunter2") || contains(f[x], "PASSWORD"));
		}
		if (!strcmp(p[i].name, "web-7d4b9c")) {
			found++;
			assert_int_equal(p[i].nlabels, 2); /* team dropped */
			assert_int_equal(p[i].nips, 2);
			assert_string_equal(p[i].ips[1], "fd00::17");
			assert_string_equal(p[i].status, "Running");
			assert_string_equal(p[i].containers[0].req_cpu, "250m");
			assert_string_equal(p[i].containers[0].req_mem, "64Mi");
			assert_string_equal(p[i].containers[0].lim_cpu, "1");
			assert_string_equal(p[i].containers[0].lim_mem, "128Mi");
		}
	}
	assert_int_equal(found, 1);
	na__meta_destroy(m);
}

/* The generation moves only when content changed; a source that vanishes keeps the previous table. */
static void test_generation_and_degradation(void **state)
{
	(void)state;
	char src[PATH_MAX], dir[PATH_MAX], pods[PATH_MAX + 8], path[PATH_MAX + 32];
	data_path(src, "pods");
	temp_dir(dir, "meta");
	snprintf(pods, sizeof(pods), "%s/pods", dir);
	copy_tree(src, pods);
	na__meta *m = open_meta(pods, NULL, "app");
	na__meta_refresh(m, 0, 0);
	assert_int_equal(na__meta_generation(m), 1);
	assert_int_equal(na__meta_refresh(m, 500, 0), 0); /* within the refresh interval: not read */
	na__meta_refresh(m, 1000, 0);
	assert_int_equal(na__meta_generation(m), 1); /* read again, same content */
	snprintf(path, sizeof(path), "%s/cron.json", pods);
	write_file(path, "{\"name\": \"cron2\", \"namespace\": \"host\", \"containers\": [{\"name\": \"cron\", "
	                 "\"cgroup\": \"/system.slice/cron.service\"}]}");
	na__meta_refresh(m, 2000, 0);
	assert_int_equal(na__meta_generation(m), 2);
	na__meta_labels l;
	lookup(m, "/system.slice/cron.service", "", "", &l);
	assert_string_equal(l.pod, "cron2");
	rm_tree(pods); /* the whole source goes away: labels stay as they were */
	assert_int_not_equal(na__meta_refresh(m, 3000, 0), 0);
	assert_int_equal(na__meta_generation(m), 2);
	lookup(m, "/x", C0, "", &l);
	assert_string_equal(l.pod, "web-7d4b9c");
	na__meta_destroy(m);
	rm_tree(dir);
}

/* The cgroup collector labels the v2 fixture's containerd container with the pods-dir's names. */
static void test_cgroup_labels(void **state)
{
	(void)state;
	char root[PATH_MAX], proc[PATH_MAX], pods[PATH_MAX];
	data_path(root, "cgroup-v2");
	data_path(proc, "proc");
	data_path(pods, "pods");
	na__meta *m = open_meta(pods, NULL, "app");
	na__meta_refresh(m, 0, 0);
	na__cgroups *cg;
	cm_err err;
	na__cgroups_opts o = {root, proc, m};
	assert_int_equal(na__cgroups_open(&o, &cg, &err), 0);
	static const char *const only[] = {"container_cpu_usage_seconds_total", NULL};
	sink s = {.only = only};
	na_emit e = sink_emit(&s);
	assert_int_equal(na__cgroups_collect(cg, &e, NULL, 1000, 1000), 0);
	const char *ctr = "container_cpu_usage_seconds_total{id=\"/kubepods.slice/kubepods-burstable.slice/"
	                  "kubepods-burstable-pod6f1c2a3b_0000_4000_8000_000000000001.slice/cri-containerd-" C0
	                  ".scope\",name=\"nginx\",container=\"nginx\",pod=\"web-7d4b9c\",namespace=\"shop\","
	                  "image=\"nginx:1.25\"}";
	const char *cron = "container_cpu_usage_seconds_total{id=\"/system.slice/cron.service\",name=\"cron\","
	                   "container=\"cron\",pod=\"cron\",namespace=\"host\",image=\"debian:bookworm\"}";
	if (!sink_find(&s, ctr) || !sink_find(&s, cron))
		sink_dump(&s);
	assert_non_null(sink_find(&s, ctr));
	assert_non_null(sink_find(&s, cron));
	assert_int_equal(sink_find(&s, cron)->v, 50);
	assert_non_null(
	    sink_find(&s, "container_cpu_usage_seconds_total{id=\"/system.slice\"}")); /* unknown: id only */
	sink_clear(&s);
	na__cgroups_close(cg);
	na__meta_destroy(m);
}

/* ---- fake kubelet --------------------------------------------------------------------------------------- */

enum { KUBE_OK, KUBE_500, KUBE_CUT };

typedef struct kubelet {
	int lfd, port, mode, requests, authorized;
	char body[8192];
	pthread_t th;
} kubelet;

static void kube_answer(kubelet *k, int fd)
{
	char req[4096], head[256];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(req) - 1 && (r = read(fd, req + n, sizeof(req) - 1 - n)) > 0) {
		n += (size_t)r;
		req[n] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[n] = 0;
	k->requests++;
	int auth = strstr(req, "GET /pods HTTP/1.1\r\n") && strstr(req, "\r\nAuthorization: Bearer kube-token\r\n");
	k->authorized += auth;
	const char *body = k->mode == KUBE_500 ? "oops" : auth ? k->body : "Unauthorized";
	size_t blen = strlen(body);
	int code = k->mode == KUBE_500 ? 500 : auth ? 200 : 401;
	snprintf(head, sizeof(head),
	         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	         "Connection: close\r\n\r\n",
	         code, blen);
	if (write(fd, head, strlen(head)) < 0 || write(fd, body, k->mode == KUBE_CUT ? blen / 2 : blen) < 0)
		return;
}

static void *kube_serve(void *arg)
{
	kubelet *k = arg;
	for (int fd; (fd = accept(k->lfd, NULL, NULL)) >= 0;) {
		kube_answer(k, fd);
		close(fd);
	}
	return NULL;
}

static void kube_start(kubelet *k)
{
	char path[PATH_MAX];
	data_path(path, "kubelet/pods.json");
	assert_int_equal(cm_read_file(path, k->body, sizeof(k->body), NULL), 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	k->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(k->lfd >= 0);
	assert_int_equal(bind(k->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(k->lfd, 8), 0);
	assert_int_equal(getsockname(k->lfd, (struct sockaddr *)&a, &al), 0);
	k->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&k->th, NULL, kube_serve, k), 0);
}

static void kube_stop(kubelet *k)
{
	shutdown(k->lfd, SHUT_RDWR);
	pthread_join(k->th, NULL);
	close(k->lfd);
}

static na__meta *kube_meta(const kubelet *k, const char *token_file)
{
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", k->port);
	na__meta *m;
	cm_err err;
	na__meta_opts o = {
	    .kubelet_url = url, .kubelet_token_file = token_file, .label_allowlist = "app", .refresh_ms = 1000};
	assert_int_equal(na__meta_create(&o, &m, &err), 0);
	return m;
}

static void test_kubelet_pods(void **state)
{
	(void)state;
	char dir[PATH_MAX], token[PATH_MAX + 8];
	kubelet k = {0};
	kube_start(&k);
	temp_dir(dir, "kube");
	snprintf(token, sizeof(token), "%s/token", dir);
	write_file(token, "kube-token\n");
	na__meta *m = kube_meta(&k, token);
	assert_int_equal(na__meta_refresh(m, 0, 0), 0);
	assert_int_equal(k.authorized, 1);
	na__meta_labels l;
	lookup(m, "/x", C0, POD_UID, &l); /* "containerd://" stripped */
	assert_string_equal(l.pod, "api-5c9f");
	assert_string_equal(l.namespace_, "prod");
	assert_string_equal(l.container, "api");
	assert_string_equal(l.image, "registry.local/api:2.1");
	assert_string_equal(l.name, C0);
	const na__meta_pod *p;
	size_t n;
	na__meta_pods(m, &p, &n);
	assert_int_equal(n, 2);
	assert_int_equal(p[0].ready, 1);
	assert_int_equal(p[0].nips, 1);
	assert_string_equal(p[0].ips[0], "10.244.2.5");
	assert_int_equal(p[0].nlabels, 1); /* pod-template-hash is not allowlisted */
	assert_string_equal(p[0].labels[0].value, "api");
	assert_string_equal(p[0].containers[0].req_cpu, "500m");
	assert_string_equal(p[0].containers[0].lim_mem, "512Mi");
	assert_false(strstr(p[0].containers[0].image, "hunter2"));
	assert_int_equal(p[1].ready, 0); /* Pending, no statuses */
	assert_string_equal(p[1].status, "Pending");
	assert_string_equal(p[1].containers[0].id, "");
	uint64_t gen = na__meta_generation(m);
	/* a wrong token: 401, one warning, the labels stay */
	write_file(token, "wrong\n");
	assert_int_equal(na__meta_refresh(m, 1000, 0), CM_EIO);
	assert_int_equal(na__meta_generation(m), gen);
	lookup(m, "/x", C0, "", &l);
	assert_string_equal(l.pod, "api-5c9f");
	write_file(token, "kube-token\n");
	k.mode = KUBE_500;
	assert_int_equal(na__meta_refresh(m, 2000, 0), CM_EIO);
	k.mode = KUBE_CUT;
	assert_int_not_equal(na__meta_refresh(m, 3000, 0), 0);
	assert_int_equal(na__meta_generation(m), gen);
	k.mode = KUBE_OK;
	assert_int_equal(na__meta_refresh(m, 4000, 0), 0);
	assert_int_equal(na__meta_generation(m), gen); /* same content again */
	assert_int_equal(k.requests, 5);
	na__meta_destroy(m);
	kube_stop(&k);
	rm_tree(dir);
}

/* Nobody listening: the kubelet source fails, the pods-dir labels still come. */
static void test_kubelet_down_other_sources_stay(void **state)
{
	(void)state;
	char pods[PATH_MAX];
	data_path(pods, "pods");
	kubelet k = {0};
	kube_start(&k);
	kube_stop(&k); /* the port is now closed */
	char url[64];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", k.port);
	na__meta *m;
	cm_err err;
	setenv("KUBELET_TOKEN", "kube-token", 1);
	na__meta_opts o = {.pods_dir = pods, .kubelet_url = url, .label_allowlist = "app", .refresh_ms = 1000};
	assert_int_equal(na__meta_create(&o, &m, &err), 0);
	assert_int_not_equal(na__meta_refresh(m, 0, 0), 0);
	na__meta_labels l;
	lookup(m, "/system.slice/cron.service", "", "", &l);
	assert_string_equal(l.pod, "cron");
	na__meta_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lookup_order_and_fields),
	    cmocka_unit_test(test_allowlist_and_no_env),
	    cmocka_unit_test(test_generation_and_degradation),
	    cmocka_unit_test(test_cgroup_labels),
	    cmocka_unit_test(test_kubelet_pods),
	    cmocka_unit_test(test_kubelet_down_other_sources_stay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
