/* na_nodedev.c -- node_exporter's load, network, disk, filesystem and boot collectors, from /proc.
 *
 * Called by na__node_collect (na_node.c) after CPU and memory; each source is independent: one that
 * is missing or unreadable is reported through err and the others are still collected. Reads whole
 * /proc files (na__node_text: kept open, the mount table re-read only when it changed, the boot id
 * once), never writes. Names, labels and units are node_exporter's:
 *
 * <proc>/loadavg "L1 L5 L15 running/total lastpid" -> node_load1, node_load5, node_load15.
 * <proc>/stat "btime N" -> node_boot_time_seconds; with the pass's clock, node_time_seconds.
 * <proc>/sys/kernel/random/boot_id -> corral_node_boot_info{boot_id} = 1 (node_exporter has none).
 * <proc>/net/dev, after two header lines, "IFACE: 8 receive counters 8 transmit counters" ->
 *   node_network_receive_{bytes,packets,errs,drop,fifo,frame,compressed,multicast}_total and
 *   node_network_transmit_{bytes,packets,errs,drop,fifo,colls,carrier,compressed}_total {device}.
 * <proc>/diskstats "MAJ MIN NAME" + at least 11 counters (reads, reads merged, sectors read, ms reading,
 *   writes, writes merged, sectors written, ms writing, I/Os in progress, ms doing I/O, weighted ms) ->
 *   node_disk_{reads_completed,reads_merged,read_bytes,read_time_seconds,writes_completed,
 *   writes_merged,written_bytes,write_time_seconds}_total, node_disk_io_now,
 *   node_disk_io_time_seconds_total, node_disk_io_time_weighted_seconds_total {device}; sectors are 512
 *   bytes. Skipped as node_exporter does: ram*, zram*, loop*, fd* and partitions (sdaN, vdaN, hdaN,
 *   xvdaN, nvmeXnYpZ, mmcblkXpY).
 * <proc>/mounts "DEVICE MOUNTPOINT FSTYPE OPTIONS 0 0" (octal escapes such as \040 decoded) -> for each
 *   real filesystem, statvfs(MOUNTPOINT): node_filesystem_{size,free,avail}_bytes, node_filesystem_files,
 *   node_filesystem_files_free, node_filesystem_readonly {device,fstype,mountpoint}; a statvfs failure
 *   gives node_filesystem_device_error = 1 instead. Not real: node_exporter's default pseudo types
 *   (proc, sysfs, cgroup, tmpfs on /dev, overlay, ...) and mount points below /dev, /proc, /sys,
 *   /run/credentials, /var/lib/docker/, /var/lib/containers/storage/; network filesystems (nfs*, cifs,
 *   smb3, fuse.*) are skipped too so that a hung server can never block the pass in statvfs.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "na_int.h"

static int emit0(const na_emit *e, const char *name, double v)
{
	cm_label none = {NULL, NULL};
	return e->series(e->ctx, name, NULL, &none, 0, v);
}

/* The next blank-separated word of [*p, end) into w (NUL-terminated, truncated to cap). */
static size_t next_word(const char **p, const char *end, char *w, size_t cap)
{
	const char *s = *p;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	size_t n = 0;
	for (; s < end && *s != ' ' && *s != '\t'; s++)
		if (n + 1 < cap)
			w[n++] = *s;
	w[n] = 0;
	*p = s;
	return n;
}

/* ---- load, boot ---------------------------------------------------------------------------------- */

static int load_avg(na__node *nd, const na_emit *e, cm_err *err)
{
	const char *t;
	int rc = na__node_text(nd, NA__NODE_LOADAVG, &t, err);
	if (rc)
		return rc;
	double l[3];
	if (sscanf(t, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
		return cm_errf(err, CM_EPROTO, "loadavg: not three loads");
	static const char *const names[] = {"node_load1", "node_load5", "node_load15"};
	for (int i = 0; i < 3 && !rc; i++)
		rc = emit0(e, names[i], l[i]);
	return rc;
}

static int boot(na__node *nd, const na_emit *e, cm_err *err)
{
	const char *t;
	uint64_t v = 0;
	int64_t now_ms = cm_now_ms();
	int rc = na__node_text(nd, NA__NODE_STAT, &t, err);
	if (rc)
		return rc;
	const char *b = strstr(t, "\nbtime ");
	const char *p = b ? b + 7 : NULL;
	if (!p || cm_scan_u64(&p, p + strlen(p), &v))
		return cm_errf(err, CM_EPROTO, "stat: no btime line");
	rc = emit0(e, "node_boot_time_seconds", (double)v);
	rc = rc ? rc : emit0(e, "node_time_seconds", (double)now_ms / 1000.0);
	if (!rc && !na__node_text(nd, NA__NODE_BOOT_ID, &t, NULL)) {
		char id[64];
		snprintf(id, sizeof(id), "%.*s", (int)strcspn(t, "\r\n"), t);
		cm_label l = {"boot_id", id};
		rc = e->series(e->ctx, "corral_node_boot_info", NULL, &l, 1, 1);
	}
	return rc;
}

/* ---- network --------------------------------------------------------------------------------------- */

static const char *const net_names[16] = {
    "node_network_receive_bytes_total",      "node_network_receive_packets_total",
    "node_network_receive_errs_total",       "node_network_receive_drop_total",
    "node_network_receive_fifo_total",       "node_network_receive_frame_total",
    "node_network_receive_compressed_total", "node_network_receive_multicast_total",
    "node_network_transmit_bytes_total",     "node_network_transmit_packets_total",
    "node_network_transmit_errs_total",      "node_network_transmit_drop_total",
    "node_network_transmit_fifo_total",      "node_network_transmit_colls_total",
    "node_network_transmit_carrier_total",   "node_network_transmit_compressed_total",
};

static int net_line(const char *line, const char *eol, const na_emit *e)
{
	const char *colon = memchr(line, ':', (size_t)(eol - line)), *p;
	char dev[64];
	uint64_t v[16];
	if (!colon)
		return CM_OK;
	p = line;
	while (p < colon && *p == ' ')
		p++;
	size_t n = (size_t)(colon - p);
	if (!n || n >= sizeof(dev))
		return CM_OK;
	memcpy(dev, p, n);
	dev[n] = 0;
	p = colon + 1;
	for (int i = 0; i < 16; i++)
		if (cm_scan_u64(&p, eol, &v[i]))
			return CM_OK; /* a line that does not parse is skipped */
	cm_label l = {"device", dev};
	int rc = CM_OK;
	for (int i = 0; i < 16 && !rc; i++)
		rc = e->series(e->ctx, net_names[i], NULL, &l, 1, (double)v[i]);
	return rc;
}

/* ---- disks ----------------------------------------------------------------------------------------- */

/* Whole-disk devices only, as node_exporter's default device exclude. */
static int disk_skipped(const char *d)
{
	size_t n = strlen(d);
	if (!strncmp(d, "ram", 3) || !strncmp(d, "zram", 4) || !strncmp(d, "loop", 4) || !strncmp(d, "fd", 2))
		return 1;
	if (!n || !isdigit((unsigned char)d[n - 1]))
		return 0;
	size_t k = n;
	while (k && isdigit((unsigned char)d[k - 1]))
		k--;
	if (k >= 2 && d[k - 1] == 'p' && isdigit((unsigned char)d[k - 2]) &&
	    (!strncmp(d, "nvme", 4) || !strncmp(d, "mmcblk", 6)))
		return 1; /* nvme0n1p1, mmcblk0p1 */
	int letters = k >= 3 && isalpha((unsigned char)d[k - 1]);
	return letters &&
	       (!strncmp(d, "sd", 2) || !strncmp(d, "vd", 2) || !strncmp(d, "hd", 2) || !strncmp(d, "xvd", 3));
}

static int disk_line(const char *line, const char *eol, const na_emit *e)
{
	static const struct {
		const char *name;
		double scale;
	} f[11] = {
	    {"node_disk_reads_completed_total", 1},
	    {"node_disk_reads_merged_total", 1},
	    {"node_disk_read_bytes_total", 512},
	    {"node_disk_read_time_seconds_total", 0.001},
	    {"node_disk_writes_completed_total", 1},
	    {"node_disk_writes_merged_total", 1},
	    {"node_disk_written_bytes_total", 512},
	    {"node_disk_write_time_seconds_total", 0.001},
	    {"node_disk_io_now", 1},
	    {"node_disk_io_time_seconds_total", 0.001},
	    {"node_disk_io_time_weighted_seconds_total", 0.001},
	};
	char w[64], dev[64];
	const char *p = line;
	uint64_t v[11];
	if (!next_word(&p, eol, w, sizeof(w)) || !next_word(&p, eol, w, sizeof(w)) ||
	    !next_word(&p, eol, dev, sizeof(dev)) || disk_skipped(dev))
		return CM_OK;
	for (int i = 0; i < 11; i++)
		if (cm_scan_u64(&p, eol, &v[i]))
			return CM_OK;
	cm_label l = {"device", dev};
	int rc = CM_OK;
	for (int i = 0; i < 11 && !rc; i++)
		rc = e->series(e->ctx, f[i].name, NULL, &l, 1, (double)v[i] * f[i].scale);
	return rc;
}

/* ---- filesystems ------------------------------------------------------------------------------------- */

static int fs_type_skipped(const char *t)
{
	static const char *const pseudo[] = {
	    "autofs",   "binfmt_misc", "bpf",     "cgroup",    "cgroup2",    "configfs",   "debugfs",
	    "devpts",   "devtmpfs",    "fusectl", "hugetlbfs", "iso9660",    "mqueue",     "nsfs",
	    "overlay",  "proc",        "procfs",  "pstore",    "rpc_pipefs", "securityfs", "selinuxfs",
	    "squashfs", "sysfs",       "tracefs", "nfs",       "nfs4",       "cifs",       "smb3",
	    "smbfs",    "9p",          "ceph",    "glusterfs", "sshfs"};
	for (size_t i = 0; i < CM_ARRAY_LEN(pseudo); i++)
		if (!strcmp(t, pseudo[i]))
			return 1;
	return !strncmp(t, "fuse.", 5);
}

static int under(const char *mp, const char *dir)
{
	size_t n = strlen(dir);
	return !strncmp(mp, dir, n) && (mp[n] == 0 || mp[n] == '/');
}

static int fs_point_skipped(const char *mp)
{
	return under(mp, "/dev") || under(mp, "/proc") || under(mp, "/sys") || !strncmp(mp, "/run/credentials/", 17) ||
	       !strncmp(mp, "/var/lib/docker/", 16) || !strncmp(mp, "/var/lib/containers/storage/", 28);
}

/* /proc/mounts escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
		    p[3] <= '7') {
			*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
}

static int mount_line(const char *line, const char *eol, const na_emit *e)
{
	char dev[256], mp[PATH_MAX], type[64], opts[512];
	const char *p = line;
	if (!next_word(&p, eol, dev, sizeof(dev)) || !next_word(&p, eol, mp, sizeof(mp)) ||
	    !next_word(&p, eol, type, sizeof(type)) || !next_word(&p, eol, opts, sizeof(opts)))
		return CM_OK;
	unescape(dev);
	unescape(mp);
	if (fs_type_skipped(type) || fs_point_skipped(mp))
		return CM_OK;
	cm_label l[3] = {{"device", dev}, {"fstype", type}, {"mountpoint", mp}};
	struct statvfs s;
	if (statvfs(mp, &s))
		return e->series(e->ctx, "node_filesystem_device_error", NULL, l, 3, 1);
	double bs = (double)s.f_frsize;
	int ro = (s.f_flag & ST_RDONLY) != 0;
	const struct {
		const char *name;
		double v;
	} out[] = {
	    {"node_filesystem_size_bytes", (double)s.f_blocks * bs},
	    {"node_filesystem_free_bytes", (double)s.f_bfree * bs},
	    {"node_filesystem_avail_bytes", (double)s.f_bavail * bs},
	    {"node_filesystem_files", (double)s.f_files},
	    {"node_filesystem_files_free", (double)s.f_ffree},
	    {"node_filesystem_readonly", ro},
	    {"node_filesystem_device_error", 0},
	};
	int rc = CM_OK;
	for (size_t i = 0; i < CM_ARRAY_LEN(out) && !rc; i++)
		rc = e->series(e->ctx, out[i].name, NULL, l, 3, out[i].v);
	return rc;
}

/* ---- the sources ---------------------------------------------------------------------------------------- */

typedef int (*dev_line_fn)(const char *line, const char *eol, const na_emit *e);

static int dev_lines(na__node *nd, int f, int skip, dev_line_fn fn, const na_emit *e, cm_err *err)
{
	const char *t;
	int rc = na__node_text(nd, f, &t, err);
	if (rc)
		return rc;
	for (const char *line = t; !rc && *line;) {
		const char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		if (skip > 0)
			skip--;
		else
			rc = fn(line, eol, e);
		line = *eol ? eol + 1 : eol;
	}
	return rc;
}

/* Tells a sink's refusal (which ends the pass) from a source that could not be read (which does not). */
typedef struct dev_guard {
	const na_emit *inner;
	int rc;
} dev_guard;

static int guard_series(void *ctx, const char *metric, const na_lset *set, const cm_label *labels, size_t n, double v)
{
	dev_guard *g = ctx;
	int rc = g->inner->series(g->inner->ctx, metric, set, labels, n, v);
	if (rc && !g->rc)
		g->rc = rc;
	return rc;
}

int na__node_devices(na__node *nd, const na_emit *emit, cm_err *err)
{
	dev_guard g = {emit, CM_OK};
	na_emit e = {guard_series, &g};
	int first = CM_OK;
	for (int i = 0; i < 5 && !g.rc; i++) {
		cm_err one = {{0}};
		int rc = i == 0   ? load_avg(nd, &e, &one)
		         : i == 1 ? boot(nd, &e, &one)
		         : i == 2 ? dev_lines(nd, NA__NODE_NETDEV, 2, net_line, &e, &one)
		         : i == 3 ? dev_lines(nd, NA__NODE_DISKSTATS, 0, disk_line, &e, &one)
		                  : dev_lines(nd, NA__NODE_MOUNTS, 0, mount_line, &e, &one);
		if (rc && !first) {
			first = rc;
			*err = one;
		}
	}
	if (g.rc)
		return cm_errf(err, g.rc, "node devices: collection stopped: %s", cm_strerror(g.rc));
	return first;
}
