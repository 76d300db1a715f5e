/*
 * paxos/acceptor.c — the acceptor core and the value blobs.
 *
 * The acceptor is pure: functions of one instance's state, no locks, no I/O,
 * no clock. The caller (paxos.c for remote requests, proposer.c for the local
 * acceptor, which is always called directly and never through RPC) holds the
 * object's mutex around each call.
 *
 * Paxos Made Simple, phase 1(b): "If an acceptor receives a prepare request
 * with number n greater than that of any prepare request to which it has
 * already responded, then it responds to the request with a promise not to
 * accept any more proposals numbered less than n and with the highest-numbered
 * proposal (if any) that it has accepted."
 * Phase 2(b): "If an acceptor receives an accept request for a proposal
 * numbered n, it accepts the proposal unless it has already responded to a
 * prepare request having a number greater than n."
 * Our deviation: a rejection carries n_p so the proposer can jump past it.
 *
 * Blobs: values are immutable byte strings shared by reference count, so an
 * instance's accepted and decided values (and the proposer's) cost one copy.
 */
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

px_blob *px_blob_copy(const void *p, size_t len)
{
	void *data = dkv_malloc(len ? len : 1);
	if (!data) return NULL;
	if (len) memcpy(data, p, len);
	px_blob *b = px_blob_adopt(data, len);
	if (!b) free(data);
	return b;
}

px_blob *px_blob_adopt(void *data, size_t len)
{
	px_blob *b = dkv_malloc(sizeof *b);
	if (!b) return NULL;
	b->refs = 1;
	b->len = len;
	b->data = data;
	return b;
}

px_blob *px_blob_ref(px_blob *b)
{
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

void px_blob_unref(px_blob *b)
{
	if (!b) return;
	if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		free(b->data);
		free(b);
	}
}

bool px_blob_equal(const px_blob *b, const void *p, size_t len)
{
	return b->len == len && (len == 0 || memcmp(b->data, p, len) == 0);
}

void px_acceptor_prepare(px_inst *in, uint64_t n, px_promise *out)
{
	if (n > in->n_p) {
		in->n_p = n;
		out->status = PX_ST_OK;
		out->n = in->n_a;
		out->v = in->v_a;
	} else {
		out->status = PX_ST_REJECT;
		out->n = in->n_p;
		out->v = NULL;
	}
}

bool px_acceptor_can_accept(const px_inst *in, uint64_t n)
{
	return n >= in->n_p;
}

px_status px_acceptor_accept(px_inst *in, uint64_t n, px_blob *v, uint64_t *n_p_out)
{
	if (!px_acceptor_can_accept(in, n)) {
		*n_p_out = in->n_p;
		return PX_ST_REJECT;
	}
	in->n_p = n;
	in->n_a = n;
	if (in->v_a != v) {
		px_blob_unref(in->v_a);
		in->v_a = px_blob_ref(v);
	}
	return PX_ST_OK;
}

uint64_t px_next_number(const px_inst *in, int me)
{
	uint64_t hi = in->n_p > in->n_seen ? in->n_p : in->n_seen;
	uint64_t round = (hi >> PX_ROUND_SHIFT) + 1;
	return (round << PX_ROUND_SHIFT) | (uint64_t)me;
}
