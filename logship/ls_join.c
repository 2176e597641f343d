/* ls_join.c -- joins partial pieces (CRI "P", docker lines without a newline) into whole records.
 *
 * One joiner per file, one open record per stream (stdout and stderr pieces may interleave). A record
 * over max_line keeps its first max_line bytes and is marked truncated; the rest is dropped, never the
 * file. Used by ls_tail.c; never prints, allocates only its own per-stream buffers.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "ls_int.h"

void ls__join_init(ls__joiner *j, size_t max_line)
{
	memset(j, 0, sizeof(*j));
	cm_buf_init(&j->s[0].buf);
	cm_buf_init(&j->s[1].buf);
	j->max_line = max_line;
}

void ls__join_close(ls__joiner *j)
{
	cm_buf_close(&j->s[0].buf);
	cm_buf_close(&j->s[1].buf);
}

void ls__join_reset(ls__joiner *j)
{
	for (int i = 0; i < 2; i++)
		j->s[i].active = 0, j->s[i].buf.len = 0;
}

/* Appends up to the line limit; what does not fit marks the record truncated. */
static int piece_append(ls__joiner *j, ls__piece *p, const char *msg, size_t len)
{
	size_t room = p->buf.len < j->max_line ? j->max_line - p->buf.len : 0;
	if (len > room)
		p->truncated = 1, len = room;
	return len ? cm_buf_append(&p->buf, msg, len) : 0;
}

int ls__join_feed(ls__joiner *j, const ls_line *l, uint64_t off, int truncated, ls__rec *out)
{
	ls__piece *p = &j->s[l->stream & 1];
	if (!p->active && !l->partial) { /* the common case: a whole record in one line, no copy */
		size_t len = l->len;
		int cut = truncated || len > j->max_line;
		*out = (ls__rec){l->ts_ns, l->stream & 1, cut, l->msg, len > j->max_line ? j->max_line : len};
		return 1;
	}
	if (!p->active) {
		p->active = 1, p->truncated = 0, p->ts_ns = l->ts_ns, p->start_off = off;
		p->buf.len = 0;
	}
	p->truncated |= truncated;
	if (piece_append(j, p, l->msg, l->len))
		return CM_ENOMEM;
	if (l->partial)
		return 0;
	p->active = 0;
	*out = (ls__rec){p->ts_ns, l->stream & 1, p->truncated, p->buf.data ? (const char *)p->buf.data : "",
			 p->buf.len};
	return 1;
}

uint64_t ls__join_resume(const ls__joiner *j, uint64_t off)
{
	for (int i = 0; i < 2; i++)
		if (j->s[i].active && j->s[i].start_off < off)
			off = j->s[i].start_off;
	return off;
}
