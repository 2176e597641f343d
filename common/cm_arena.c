/* cm_arena.c -- a region allocator: many small allocations, one free.
 *
 * Used for request-shaped lifetimes (a decoded batch, an HTTP request, a collection pass). Blocks grow
 * geometrically from 4 KiB; an optional limit caps the bytes handed out so that input from outside
 * cannot make a request allocate without bound. Memory is 16-byte aligned.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "cm.h"

struct cm_arena_block {
	cm_arena_block *next;
	size_t cap;
	size_t used;
	_Alignas(16) unsigned char data[];
};

void cm_arena_init(cm_arena *a, size_t limit)
{
	a->head = NULL;
	a->used = 0;
	a->limit = limit;
	a->spare = NULL;
}

static void arena_free_list(cm_arena_block *b)
{
	for (cm_arena_block *next; b; b = next) {
		next = b->next;
		free(b);
	}
}

void cm_arena_close(cm_arena *a)
{
	arena_free_list(a->head);
	arena_free_list(a->spare);
	a->head = a->spare = NULL;
	a->used = 0;
}

void cm_arena_reset(cm_arena *a)
{
	for (cm_arena_block *b = a->head, *next; b; b = next) {
		next = b->next;
		b->used = 0;
		b->next = a->spare;
		a->spare = b;
	}
	a->head = NULL;
	a->used = 0;
}

/* A spare block with room for n bytes, unlinked, or NULL. */
static cm_arena_block *arena_take_spare(cm_arena *a, size_t n)
{
	for (cm_arena_block **pp = &a->spare; *pp; pp = &(*pp)->next) {
		cm_arena_block *b = *pp;
		if (b->cap >= n) {
			*pp = b->next;
			return b;
		}
	}
	return NULL;
}

void *cm_arena_alloc(cm_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	if (a->limit && (n > a->limit || a->used > a->limit - n))
		return NULL;
	cm_arena_block *b = a->head;
	if (!b || b->cap - b->used < n) {
		size_t cap = b ? b->cap * 2 : 4096;
		if (cap > (1u << 20))
			cap = 1u << 20;
		if (cap < n)
			cap = n;
		cm_arena_block *spare = arena_take_spare(a, n);
		b = spare ? spare : malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		if (!spare)
			b->cap = cap;
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->data + b->used;
	b->used += n;
	a->used += n;
	return p;
}

void *cm_arena_calloc(cm_arena *a, size_t count, size_t size)
{
	if (size && count > SIZE_MAX / size)
		return NULL;
	void *p = cm_arena_alloc(a, count * size);
	if (p)
		memset(p, 0, count * size);
	return p;
}

char *cm_arena_strndup(cm_arena *a, const char *s, size_t n)
{
	char *p = cm_arena_alloc(a, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

char *cm_arena_strdup(cm_arena *a, const char *s) { return cm_arena_strndup(a, s, strlen(s)); }
