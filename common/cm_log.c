/* cm_log.c -- the one logger: level checked before formatting, one write(2) per line, rate limits.
 *
 * Lines go to stderr as `2026-11-26T12:00:00.123Z LEVEL comp: message`. The level is process-wide
 * configuration set once by main(); reading it is a relaxed atomic load so any thread may log.
 * Never called per record on a hot path; repeated warnings go through CM_LOG_RL.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cm.h"

static atomic_int log_level = CM_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void cm_log_set_level(int level) { atomic_store_explicit(&log_level, level, memory_order_relaxed); }

int cm_log_level(void) { return atomic_load_explicit(&log_level, memory_order_relaxed); }

int cm_log_parse_level(const char *s, int *out)
{
	for (int i = 0; i < (int)CM_ARRAY_LEN(level_names); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = i;
			return CM_OK;
		}
	}
	return CM_EINVAL;
}

void cm_log_write(int level, const char *comp, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
			 level_names[level < 0 ? 0 : level > 3 ? 3 : level], comp);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

int cm_ratelimit_ok(cm_ratelimit *rl, int64_t interval_ns, uint64_t *suppressed)
{
	int64_t now = cm_mono_ns();
	if (now < rl->next_ns) {
		rl->suppressed++;
		return 0;
	}
	rl->next_ns = now + interval_ns;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return 1;
}
