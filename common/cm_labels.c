/* cm_labels.c -- label names, UTF-8 validity and label-set ordering, by Prometheus' rules.
 *
 * A label name is [a-zA-Z_][a-zA-Z0-9_]*; a value is any valid UTF-8. Sorting by name gives the
 * canonical form used for series identity.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "cm.h"

int cm_label_name_valid(const char *s)
{
	if (!s || !*s)
		return 0;
	for (const char *p = s; *p; p++) {
		char c = *p;
		int ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (p != s && c >= '0' && c <= '9');
		if (!ok)
			return 0;
	}
	return 1;
}

int cm_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p;
		size_t len;
		unsigned min;
		if (c < 0x80) {
			p++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2, min = 0x80, c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, min = 0x800, c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, min = 0x10000, c &= 0x07;
		} else {
			return 0;
		}
		if ((size_t)(end - p) < len)
			return 0;
		for (size_t i = 1; i < len; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			c = c << 6 | (p[i] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return 0;
		p += len;
	}
	return 1;
}

static int label_cmp(const void *a, const void *b)
{
	return strcmp(((const cm_label *)a)->name, ((const cm_label *)b)->name);
}

void cm_labels_sort(cm_label *labels, size_t n) { qsort(labels, n, sizeof(*labels), label_cmp); }
