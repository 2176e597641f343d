/* ag_user.c -- --user: the aggregator started as root runs as an unprivileged user once its ports are bound.
 *
 * ag_server_start calls the three steps in order (the TLS key is read before, as root). ag__user_prepare
 * (as root) resolves the user, creates the data dir and hands it to the user when root owns it, sets the
 * user's groups and switches the effective uid and gid only, so every file the start creates (WAL, log
 * store, sqlite) is the user's.
 * ag__user_bind regains root's effective ids for the DNS and HTTP sockets (port 53 needs them).
 * ag__user_drop then sets real, effective and saved ids to the user for good and checks that root cannot
 * be regained; the HTTP server starts serving on its bound socket only after that. glibc applies each change to every thread of the process. Without root, --user must name
 * the current user (a no-op) or start fails.
 *
 * After the drop the token files are re-read as the user: they must be readable by it for a rotation to
 * take effect (docs/security.md). The process is no longer dumpable after the drop (the kernel's rule
 * for a credential change): no core files with tokens in them.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag_int.h"

int ag__user_prepare(const char *name, const char *data_dir, ag__user *u, cm_err *err)
{
	*u = (ag__user){0};
	if (!name || !*name)
		return CM_OK;
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc = getpwnam_r(name, &pw, buf, sizeof(buf), &res);
	if (rc || !res)
		return cm_errf(err, CM_ENOENT, "--user %s: no such user", name);
	if (geteuid() != 0) {
		if (geteuid() == pw.pw_uid)
			return CM_OK;
		return cm_errf(err, -EPERM, "--user %s needs the aggregator to start as root", name);
	}
	if (pw.pw_uid == 0)
		return cm_errf(err, CM_EINVAL, "--user %s: that is root", name);
	u->active = 1, u->uid = pw.pw_uid, u->gid = pw.pw_gid;
	struct stat st;
	if (mkdir(data_dir, 0750) && errno != EEXIST)
		return cm_errf(err, -errno, "cannot create data dir %s: %s", data_dir, strerror(errno));
	if (stat(data_dir, &st) == 0 && st.st_uid == 0 && chown(data_dir, u->uid, u->gid))
		return cm_errf(err, -errno, "cannot hand %s to %s: %s", data_dir, name, strerror(errno));
	if (initgroups(name, u->gid) || setegid(u->gid) || seteuid(u->uid))
		return cm_errf(err, -errno, "cannot switch to user %s: %s", name, strerror(errno));
	return CM_OK;
}

int ag__user_bind(const ag__user *u, cm_err *err)
{
	if (u->active && (seteuid(0) || setegid(0)))
		return cm_errf(err, -errno, "cannot regain root to bind the ports: %s", strerror(errno));
	return CM_OK;
}

int ag__user_drop(const ag__user *u, cm_err *err)
{
	if (!u->active)
		return CM_OK;
	if (setresgid(u->gid, u->gid, u->gid) || setresuid(u->uid, u->uid, u->uid))
		return cm_errf(err, -errno, "cannot drop privileges: %s", strerror(errno));
	if (setuid(0) == 0 || seteuid(0) == 0)
		return cm_errf(err, -EPERM, "privileges were not dropped: root can be regained");
	CM_LOG(CM_LOG_INFO, "aggregator", "running as uid %u gid %u", (unsigned)u->uid, (unsigned)u->gid);
	return CM_OK;
}
