/* cm_opts.c -- command-line flags from a declarative table (name, type, default, offset, help, env).
 *
 * Every binary describes its configuration as a cm_opt table; this file fills the config struct from
 * defaults, then environment variables, then `--name value` / `--name=value` arguments, and prints
 * --help from the same table. Unknown flags and malformed values are errors that name the flag.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm.h"

static int parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {{"", 1},          {"K", 1000},     {"M", 1000000},   {"G", 1000000000},
		     {"Ki", 1ULL << 10}, {"Mi", 1ULL << 20}, {"Gi", 1ULL << 30}, {"B", 1}};
	char *end;
	if (!isdigit((unsigned char)*s))
		return CM_EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return CM_E2BIG;
	for (size_t i = 0; i < CM_ARRAY_LEN(units); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return CM_E2BIG;
			*out = v * units[i].mult;
			return CM_OK;
		}
	}
	return CM_EINVAL;
}

static int set_value(const cm_opt *o, void *cfg, const char *v, cm_err *err)
{
	char *field = (char *)cfg + o->offset;
	int rc = CM_OK;
	switch (o->type) {
	case CM_OPT_STR:
		*(const char **)field = v;
		break;
	case CM_OPT_BOOL:
		if (!strcmp(v, "true") || !strcmp(v, "1"))
			*(int *)field = 1;
		else if (!strcmp(v, "false") || !strcmp(v, "0"))
			*(int *)field = 0;
		else
			rc = CM_EINVAL;
		break;
	case CM_OPT_INT: {
		char *end;
		errno = 0;
		long n = strtol(v, &end, 10);
		if (errno || end == v || *end)
			rc = CM_EINVAL;
		else
			*(long *)field = n;
		break;
	}
	case CM_OPT_DURATION:
		rc = cm_parse_duration_ms(v, (int64_t *)(void *)field);
		break;
	case CM_OPT_SIZE:
		rc = parse_size(v, (uint64_t *)(void *)field);
		break;
	case CM_OPT_LOGLEVEL:
		rc = cm_log_parse_level(v, (int *)field);
		break;
	case CM_OPT_STRLIST: {
		cm_strlist *l = (cm_strlist *)(void *)field;
		if (l->n == CM_STRLIST_MAX)
			return cm_errf(err, CM_EINVAL, "--%s: at most %d times", o->name, CM_STRLIST_MAX);
		l->v[l->n++] = v;
		break;
	}
	}
	if (rc)
		return cm_errf(err, CM_EINVAL, "--%s: invalid value '%s'", o->name, v);
	return CM_OK;
}

static const cm_opt *find_opt(const cm_opt *table, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(table[i].name) == len && !strncmp(table[i].name, name, len))
			return &table[i];
	return NULL;
}

static int apply_defaults(const cm_opt *table, size_t n, void *cfg, cm_err *err)
{
	for (size_t i = 0; i < n; i++) {
		const char *env = table[i].env ? getenv(table[i].env) : NULL;
		const char *v = env && *env ? env : table[i].def;
		int rc = v ? set_value(&table[i], cfg, v, err) : CM_OK;
		if (rc)
			return rc;
	}
	return CM_OK;
}

int cm_opts_parse(const cm_opt *table, size_t n, void *cfg, int argc, char **argv, const char *usage,
		  char ***pos, int *npos, cm_err *err)
{
	int rc = apply_defaults(table, n, cfg, err);
	if (rc)
		return rc;
	int np = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			cm_opts_usage(table, n, usage);
			return CM_AGAIN;
		}
		if (strncmp(a, "--", 2) != 0 || !a[2]) {
			if (!pos)
				return cm_errf(err, CM_EINVAL, "unexpected argument '%s'", a);
			argv[np++] = argv[i]; /* compact positionals to the front; argv[0] is consumed */
			continue;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		const cm_opt *o = find_opt(table, n, name, eq ? (size_t)(eq - name) : strlen(name));
		if (!o)
			return cm_errf(err, CM_EINVAL, "unknown flag '%s' (see --help)", a);
		const char *v = eq ? eq + 1 : NULL;
		if (!v && o->type == CM_OPT_BOOL)
			v = "true";
		if (!v && i + 1 >= argc)
			return cm_errf(err, CM_EINVAL, "--%s needs a value", o->name);
		if (!v)
			v = argv[++i];
		rc = set_value(o, cfg, v, err);
		if (rc)
			return rc;
	}
	if (pos) {
		*pos = argv;
		*npos = np;
	}
	return CM_OK;
}

static const char *type_hint(cm_opt_type t)
{
	static const char *const hints[] = {"STR", "N", "DURATION", "SIZE", "", "LEVEL", "STR"};
	return hints[t];
}

void cm_opts_usage(const cm_opt *table, size_t n, const char *usage)
{
	printf("%s\n\nFlags:\n", usage);
	for (size_t i = 0; i < n; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s %s", table[i].name, type_hint(table[i].type));
		printf("  %-30s %s", left, table[i].help);
		if (table[i].def && *table[i].def)
			printf(" (default %s)", table[i].def);
		if (table[i].env)
			printf(" [env %s]", table[i].env);
		printf("\n");
	}
}
