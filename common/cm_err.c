/* cm_err.c -- error codes to text and the caller-owned error message buffer.
 *
 * Errors are negative errno values plus a few of our own (cm.h). Libraries never print: they return a
 * code and, where a user needs to know why, fill a cm_err that the caller logs or sends back.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "cm.h"

const char *cm_strerror(int rc)
{
	if (rc == CM_OK)
		return "success";
	if (rc == CM_ECORRUPT)
		return "data corrupt";
	if (rc == CM_EPROTO)
		return "malformed input";
	if (rc == CM_E2BIG)
		return "limit exceeded";
	if (rc < 0 && rc > -4096)
		return strerror(-rc);
	return "unknown error";
}

int cm_errf(cm_err *err, int rc, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}
