/* cm_seqwin.c -- which batch seqs of one origin a store already holds, with several batches in flight.
 *
 * An agent may have a few batches in flight at once, so the aggregator can store seq 12 before 11; a
 * high-water mark would then take 11 for a duplicate and lose it. A window keeps the last CM_SEQWIN_N
 * seqs stored, in store order, and a floor: the highest seq that left the window. A seq is held if it is
 * in the window or at most the floor. Every stored seq is held (no duplicate ever gets in); an unstored
 * seq is taken for held only if CM_SEQWIN_N newer ones were stored while it was not, which the sender's
 * window (at most NA_SEND_WINDOW batches in flight, popped in order) rules out. Callers make the window
 * durable with the data (ag_ingest.c: the seq series; ls_store.c: the WAL and the index) and rebuild it
 * by adding the stored seqs in store order. Plain data, no locking: the caller's lock guards it.
 */
/* SPDX-License-Identifier: Apache-2.0 */
#include "cm.h"

int cm_seqwin_has(const cm_seqwin *w, uint64_t seq)
{
	if (seq <= w->floor)
		return 1;
	for (unsigned i = 0; i < w->n; i++)
		if (w->seq[i] == seq)
			return 1;
	return 0;
}

void cm_seqwin_add(cm_seqwin *w, uint64_t seq)
{
	if (cm_seqwin_has(w, seq))
		return;
	if (w->n == CM_SEQWIN_N) {
		uint64_t old = w->seq[w->head];
		if (old > w->floor)
			w->floor = old;
		w->seq[w->head] = seq;
		w->head = (w->head + 1) % CM_SEQWIN_N;
		return;
	}
	w->seq[(w->head + w->n++) % CM_SEQWIN_N] = seq;
}

uint64_t cm_seqwin_at(const cm_seqwin *w, unsigned i) { return w->seq[(w->head + i) % CM_SEQWIN_N]; }
