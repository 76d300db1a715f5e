/*
 * paxos/paxos.c — the Paxos peer: lifecycle, instance table, Done/Min/Max,
 * and the RPC handlers (PREPARE, ACCEPT, DECIDED, INFO, FORWARD). Every
 * handler is short: none waits for another peer (px_sync waits for our own
 * disk only), so no RPC is a channel that outlives a partition change.
 *
 * State: one mutex (px->mu) guards everything: the instance table (a sorted
 * array; appends are the common case, lookups binary-search), the Done
 * vector, max/min, the range-promise floor, the job queue and the workers.
 * Handlers: note the sender's Done vector, lock, call the acceptor core.
 * Done/Min: every message and reply carries the Done values its sender knows
 * (merged by max, so they spread transitively); min = min(dones) + 1 and
 * every instance below it is freed at once; requests below min get FORGOTTEN
 * and create nothing. Max is its own counter: forgetting never lowers it.
 * Range promises (Multi-Paxos phase 1, see proposer.c): one floor
 * (floor_seq, floor_n), applied to an instance's n_p whenever it is touched
 * (px_get_locked): the same as promising floor_n to all instances >= floor_seq.
 * Threads: paxos_start queues a job for a pool of proposer workers, adding a
 * worker when the queue outgrows the idle ones (a job stuck in a minority
 * keeps its worker); spare idle workers exit; paxos_kill makes in-flight
 * calls fail fast, then joins them all. Decisions go to an optional hook
 * (paxosrsm's wake-up) and px->cv.
 * Incarnations and restarts: see "Restarts" below (the rule and its safety
 * argument); INFO serves a rejoining peer. FORWARD hands a paxos_start to
 * the lease holder (proposer.c). Durability with a directory: "Durability".
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

/* px_prot.x's bounds: a value holds a service's largest op, a peer index
 * fits a proposal number's low bits. */
_Static_assert(PX_VALUE_MAX >= DKV_VALUE_MAX + DKV_KEY_MAX + 64 * 1024, "PX_VALUE_MAX too small");
_Static_assert(PX_PEERS_MAX < (1 << PX_ROUND_SHIFT), "PX_PEERS_MAX too large");

/* ---------------------------------------------------------------- table */

/* index of the first instance with seq >= `seq` */
static size_t lower_bound(const paxos *px, int seq)
{
	size_t lo = 0, hi = px->ninst;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (px->insts[mid]->seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

px_inst *px_find_locked(paxos *px, int seq)
{
	size_t i = lower_bound(px, seq);
	if (i < px->ninst && px->insts[i]->seq == seq) return px->insts[i];
	return NULL;
}

/* The range promise applies to every instance at or above floor_seq. */
static px_inst *floored(paxos *px, px_inst *in)
{
	if (in->seq >= px->floor_seq && in->n_p < px->floor_n) in->n_p = px->floor_n;
	return in;
}

px_inst *px_get_locked(paxos *px, int seq)
{
	if (seq < px->min_seq || seq < 0) return NULL;
	size_t i = lower_bound(px, seq);
	if (i < px->ninst && px->insts[i]->seq == seq) return floored(px, px->insts[i]);
	if (px->ninst == px->cap) {
		size_t ncap = px->cap ? px->cap * 2 : 64;
		px_inst **ni = dkv_realloc(px->insts, ncap * sizeof *ni);
		if (!ni) return NULL;
		px->insts = ni;
		px->cap = ncap;
	}
	px_inst *in = dkv_calloc(1, sizeof *in);
	if (!in) return NULL;
	in->seq = seq;
	memmove(&px->insts[i + 1], &px->insts[i], (px->ninst - i) * sizeof *px->insts);
	px->insts[i] = in;
	px->ninst++;
	px_note_seq_locked(px, seq);
	return floored(px, in);
}

bool px_range_promise_locked(paxos *px, int from, uint64_t n, int **busy, u_int *nbusy)
{
	*busy = NULL;
	*nbusy = 0;
	if (n <= px->floor_n || from < px->min_seq || !px_votes_at_locked(px, from)) return false;
	size_t k = lower_bound(px, from + 1), cnt = 0;
	for (size_t i = k; i < px->ninst; i++) {
		px_inst *in = px->insts[i];
		if (in->n_a || in->v_d || in->n_p > n) cnt++;
	}
	if (cnt > PX_BUSY_MAX) return false; /* the list would not fit busy<> */
	if (cnt) {
		*busy = malloc(cnt * sizeof **busy);
		if (!*busy) return false;
		for (size_t i = k; i < px->ninst; i++) {
			px_inst *in = px->insts[i];
			if (in->n_a || in->v_d || in->n_p > n) (*busy)[(*nbusy)++] = in->seq;
		}
	}
	/* Promising more than asked (down to an older floor) is safe: it only
	 * makes lower-numbered proposals there fail and retry higher. */
	px->floor_n = n;
	if (from < px->floor_seq) px->floor_seq = from;
	px_log_locked(px, 'F', px->floor_seq, n, NULL);
	return true;
}

static void inst_free(px_inst *in)
{
	px_blob_unref(in->v_a);
	px_blob_unref(in->v_d);
	free(in);
}

void px_note_seq_locked(paxos *px, int seq)
{
	if (seq > px->max_seq) px->max_seq = seq;
}

/* Free every instance below min_seq. */
static void forget_locked(paxos *px)
{
	size_t k = lower_bound(px, px->min_seq);
	if (k == 0) return;
	for (size_t i = 0; i < k; i++) inst_free(px->insts[i]);
	memmove(px->insts, &px->insts[k], (px->ninst - k) * sizeof *px->insts);
	px->ninst -= k;
	if (px->ninst == 0 && px->cap > 256) {
		free(px->insts);
		px->insts = NULL;
		px->cap = 0;
	}
	pthread_cond_broadcast(&px->cv);
}

/* Recompute min from the Done vector and forget what fell below it. */
static void update_min_locked(paxos *px)
{
	int m = px->dones[0];
	for (int i = 1; i < px->npeers; i++)
		if (px->dones[i] < m) m = px->dones[i];
	if (m + 1 > px->min_seq) {
		px->min_seq = m + 1;
		forget_locked(px);
	}
}

void px_note_done_locked(paxos *px, int from, int done)
{
	if (from < 0 || from >= px->npeers || done <= px->dones[from]) return;
	px->dones[from] = done;
	if (from == px->me) px_log_locked(px, 'N', done, 0, NULL);
	update_min_locked(px);
}

void px_note_inc_locked(paxos *px, int from, uint64_t inc)
{
	if (from < 0 || from >= px->npeers || from == px->me || inc == 0) return;
	if (px->peer_inc[from] == inc) return;
	if (px->peer_inc[from] != 0)
		DKV_INFO("paxos %d: peer %d has a new incarnation %016llx (was %016llx)", px->me, from,
		         (unsigned long long)inc, (unsigned long long)px->peer_inc[from]);
	px->peer_inc[from] = inc;
	if (px->dincs[from] != inc) {
		/* a new peer: what we knew of its Done was its old self's (Min
		 * never moves back: update_min_locked only raises it) */
		px->dones[from] = -1;
		px->dincs[from] = inc;
		/* our lease may rest on its range promise: drop it */
		px->lead_n = 0;
	}
}

void px_note_dones_locked(paxos *px, const int *d, const uint64_t *di, unsigned n)
{
	if (!d || !di || n != (unsigned)px->npeers) return; /* not from our group: ignore */
	bool changed = false;
	for (int i = 0; i < px->npeers; i++) {
		if (i == px->me || di[i] == 0) continue; /* never told our own Done */
		uint64_t cur = px->peer_inc[i] ? px->peer_inc[i] : px->dincs[i];
		if (cur != 0 && cur != di[i]) continue; /* another incarnation's */
		px->dincs[i] = di[i];
		if (d[i] > px->dones[i]) {
			px->dones[i] = d[i];
			changed = true;
		}
	}
	if (changed) update_min_locked(px);
}

bool px_votes_at_locked(paxos *px, int seq)
{
	return px->voting && seq > px->vote_floor;
}

void px_hdr_fill_locked(paxos *px, px_hdr *h, int to, int *dv, uint64_t *di)
{
	memcpy(dv, px->dones, (size_t)px->npeers * sizeof *dv);
	memcpy(di, px->dincs, (size_t)px->npeers * sizeof *di);
	h->from = px->me;
	h->from_inc = px->inc;
	h->to_inc = to >= 0 && to < px->npeers ? px->peer_inc[to] : 0;
	h->dones.dones_val = dv;
	h->dones.dones_len = (u_int)px->npeers;
	h->dincs.dincs_val = di;
	h->dincs.dincs_len = (u_int)px->npeers;
	h->leading = px->lead_n != 0;
}

static void note_leading_locked(paxos *px, int from, bool leading)
{
	if (leading)
		px->hint = from;
	else if (px->hint == from)
		px->hint = -1;
}

bool px_fenced_locked(paxos *px, int from, uint64_t inc)
{
	return from >= 0 && from < px->npeers && from != px->me && px->fence_inc[from] != 0 &&
	       inc != px->fence_inc[from];
}

void px_rhdr_note_locked(paxos *px, int from, const px_rhdr *h)
{
	if (px_fenced_locked(px, from, h->inc)) return; /* R5: an old incarnation's reply */
	px_note_inc_locked(px, from, h->inc);
	note_leading_locked(px, from, h->leading);
	if (h->dincs.dincs_len == h->dones.dones_len)
		px_note_dones_locked(px, h->dones.dones_val, h->dincs.dincs_val, h->dones.dones_len);
}

/* A reply header (malloc'ed arrays, freed by the RPC layer). */
static void rhdr_fill_locked(paxos *px, px_rhdr *h)
{
	h->inc = px->inc;
	h->leading = px->lead_n != 0;
	h->dones.dones_val = malloc((size_t)px->npeers * sizeof *h->dones.dones_val);
	h->dincs.dincs_val = malloc((size_t)px->npeers * sizeof *h->dincs.dincs_val);
	if (!h->dones.dones_val || !h->dincs.dincs_val) {
		free(h->dones.dones_val);
		free(h->dincs.dincs_val);
		h->dones.dones_val = NULL;
		h->dincs.dincs_val = NULL;
		return;
	}
	memcpy(h->dones.dones_val, px->dones, (size_t)px->npeers * sizeof *h->dones.dones_val);
	memcpy(h->dincs.dincs_val, px->dincs, (size_t)px->npeers * sizeof *h->dincs.dincs_val);
	h->dones.dones_len = h->dincs.dincs_len = (u_int)px->npeers;
}

static void start_rejoin_locked(paxos *px);

/* R5: a request from an incarnation of its sender other than the one whose
 * INFO we answered last: refused, nothing of it taken in (not even its
 * header). */
static bool stale_locked(paxos *px, const px_hdr *h)
{
	if (!px_fenced_locked(px, h->from, h->from_inc)) return false;
	px->stale_refused++;
	return true;
}

/* Take in a request header: the sender's incarnation and Done values, and
 * whether it knows us under another incarnation (then we voted before). */
static void hdr_note_locked(paxos *px, const px_hdr *h)
{
	if (h->from < 0 || h->from >= px->npeers || h->from == px->me) return;
	px_note_inc_locked(px, h->from, h->from_inc);
	note_leading_locked(px, h->from, h->leading);
	if (h->dincs.dincs_len == h->dones.dones_len)
		px_note_dones_locked(px, h->dones.dones_val, h->dincs.dincs_val, h->dones.dones_len);
	if (h->to_inc != 0 && h->to_inc != px->inc && px->voting && !px->rejoined && !px->dead) {
		DKV_WARN("paxos %d: peer %d knows this peer as incarnation %016llx (this is %016llx): "
		         "it voted before and lost its state; rejoining without voting",
		         px->me, h->from, (unsigned long long)h->to_inc, (unsigned long long)px->inc);
		start_rejoin_locked(px);
	}
}

bool px_learn_locked(paxos *px, int seq, px_blob *v)
{
	px_note_seq_locked(px, seq);
	px_inst *in = px_get_locked(px, seq);
	if (!in || in->v_d) return false;
	in->v_d = px_blob_ref(v);
	px_log_locked(px, 'D', seq, 0, v);
	pthread_cond_broadcast(&px->cv);
	return true;
}

void px_fire_hook(paxos *px, int seq)
{
	if (px->hook) px->hook(px->hook_ctx, seq);
}

/* ---------------------------------------------------------------- handlers */

/* A malloc'ed copy of b for an XDR reply (freed by the RPC layer). */
static bool copy_out(px_value *out, const px_blob *b)
{
	out->px_value_val = malloc(b->len ? b->len : 1);
	if (!out->px_value_val) return false;
	if (b->len) memcpy(out->px_value_val, b->data, b->len);
	out->px_value_len = (u_int)b->len;
	return true;
}

static void handle_prepare(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	const px_prepare_args *a = argp;
	px_prepare_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	bool stale = stale_locked(px, &a->h);
	if (!stale) hdr_note_locked(px, &a->h);
	r->status = stale ? PX_ST_NOVOTE : PX_ST_REJECT;
	if (!px->dead && a->seq >= 0 && !stale) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (a->seq < px->min_seq) {
			r->status = PX_ST_FORGOTTEN;
		} else if (in && in->v_d) {
			if (copy_out(&r->v, in->v_d)) {
				r->status = PX_ST_DECIDED;
				r->has_value = TRUE;
			}
		} else if (!px_votes_at_locked(px, a->seq)) {
			r->status = PX_ST_NOVOTE;
			px->novote_sent++;
		} else if (in) {
			px_promise pr;
			px_acceptor_prepare(in, a->n, &pr);
			if (pr.status == PX_ST_OK) px_log_locked(px, 'P', a->seq, a->n, NULL);
			r->status = pr.status;
			r->n = pr.n;
			if (pr.status == PX_ST_OK && pr.v) {
				if (copy_out(&r->v, pr.v))
					r->has_value = TRUE;
				else
					r->status = PX_ST_REJECT; /* ENOMEM: a lost reply, in effect */
			}
			if (r->status == PX_ST_OK && a->range)
				r->range_ok = px_range_promise_locked(px, a->seq, a->n, &r->busy.busy_val,
				                                      &r->busy.busy_len);
		}
	}
	rhdr_fill_locked(px, &r->h);
	uint64_t lsn = px_last_lsn_locked(px);
	pthread_mutex_unlock(&px->mu);
	/* persist before you speak */
	if (!px_sync(px, lsn)) {
		r->status = PX_ST_REJECT;
		r->range_ok = FALSE;
	}
}

static void handle_accept(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	px_accept_args *a = argp;
	px_accept_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	bool stale = stale_locked(px, &a->h);
	if (!stale) hdr_note_locked(px, &a->h);
	r->status = stale ? PX_ST_NOVOTE : PX_ST_REJECT;
	if (!px->dead && a->seq >= 0 && !stale) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (a->seq < px->min_seq) {
			r->status = PX_ST_FORGOTTEN;
		} else if (!px_votes_at_locked(px, a->seq)) {
			r->status = PX_ST_NOVOTE;
			px->novote_sent++;
		} else if (in && !px_acceptor_can_accept(in, a->n)) {
			r->n = in->n_p;
		} else if (in) {
			/* Share the decided/accepted copy when the value is the same;
			 * else take the decoded buffer over (the layer then frees NULL). */
			px_blob *b = NULL;
			if (in->v_d && px_blob_equal(in->v_d, a->v.px_value_val, a->v.px_value_len))
				b = px_blob_ref(in->v_d);
			else if (in->v_a && px_blob_equal(in->v_a, a->v.px_value_val, a->v.px_value_len))
				b = px_blob_ref(in->v_a);
			else if ((b = px_blob_adopt(a->v.px_value_val, a->v.px_value_len)) != NULL) {
				a->v.px_value_val = NULL;
				a->v.px_value_len = 0;
			}
			if (b) {
				r->status = px_acceptor_accept(in, a->n, b, &r->n);
				if (r->status == PX_ST_OK) px_log_locked(px, 'A', a->seq, a->n, b);
				px_blob_unref(b);
			}
		}
	}
	rhdr_fill_locked(px, &r->h);
	uint64_t lsn = px_last_lsn_locked(px);
	pthread_mutex_unlock(&px->mu);
	if (!px_sync(px, lsn)) r->status = PX_ST_REJECT;
}

/* Adopt an XDR-decoded value as a blob (sharing `same` when equal). */
static px_blob *adopt_value(px_value *v, px_blob *same)
{
	if (same && px_blob_equal(same, v->px_value_val, v->px_value_len)) return px_blob_ref(same);
	px_blob *b = px_blob_adopt(v->px_value_val, v->px_value_len);
	if (b) {
		v->px_value_val = NULL;
		v->px_value_len = 0;
	}
	return b;
}

static void handle_decided(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	px_decided_args *a = argp;
	px_decided_reply *r = resp;
	bool news = false;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	bool stale = stale_locked(px, &a->h);
	if (!stale) hdr_note_locked(px, &a->h);
	/* a learner learns whether it votes or not */
	if (!px->dead && a->seq >= px->min_seq && a->seq >= 0 && !stale) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (in && !in->v_d) {
			px_blob *b = adopt_value(&a->v, in->v_a);
			if (b) {
				news = px_learn_locked(px, a->seq, b);
				px_blob_unref(b);
			}
		}
	}
	rhdr_fill_locked(px, &r->h);
	pthread_mutex_unlock(&px->mu);
	if (news) px_fire_hook(px, a->seq);
}

/* The highest proposal number promised anywhere here (INFO's hi_n). */
static uint64_t hi_n_locked(paxos *px)
{
	uint64_t hi = px->floor_n;
	for (size_t i = 0; i < px->ninst; i++)
		if (px->insts[i]->n_p > hi) hi = px->insts[i]->n_p;
	return hi;
}

static void handle_info(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	const px_info_args *a = argp;
	px_info_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	int from = a->h.from;
	if (from >= 0 && from < px->npeers && from != px->me && a->h.from_inc != 0 &&
	    px->fence_inc[from] != a->h.from_inc) {
		/* R5: the sender announces a new incarnation. From this answer on,
		 * no request of another incarnation of it is served, no reply of
		 * one taken in, and no round of ours that began before counts a
		 * vote (fence_gen); the lease may rest on its old range promise. */
		px->fence_inc[from] = a->h.from_inc;
		px->fence_gen++;
		px->lead_n = 0;
	}
	hdr_note_locked(px, &a->h);
	r->max = px->max_seq;
	r->hi_n = hi_n_locked(px);
	r->voting = px->voting && !px->dead;
	rhdr_fill_locked(px, &r->h);
	pthread_mutex_unlock(&px->mu);
}

/* Do we hold the stable-proposer range, as far as forwarding goes? Our own
 * acceptor's latest range promise went to us (a lease, or its renewal). */
static bool lease_holder_locked(paxos *px)
{
	return px->voting && (px->lead_n != 0 || (px->floor_n != 0 &&
	                      (int)(px->floor_n & ((1u << PX_ROUND_SHIFT) - 1)) == px->me));
}

static void handle_forward(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	px_forward_args *a = argp;
	px_forward_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	bool stale = stale_locked(px, &a->h);
	if (!stale) hdr_note_locked(px, &a->h);
	r->taken = FALSE;
	if (!stale && !px->dead && a->seq >= px->min_seq && a->seq >= 0 && lease_holder_locked(px)) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (in && !in->v_d) {
			if (in->proposing) {
				r->taken = TRUE; /* our round tells everyone */
			} else {
				px_blob *b = adopt_value(&a->v, NULL);
				if (b) {
					r->taken = px_start_locked(px, a->seq, b);
					px_blob_unref(b);
				}
			}
			if (r->taken) px->forwards_taken++;
		}
	}
	rhdr_fill_locked(px, &r->h);
	pthread_mutex_unlock(&px->mu);
}

static const dkv_rpc_proc px_procs[] = {
	{PX_PREPARE, (xdrproc_t)xdr_px_prepare_args, sizeof(px_prepare_args),
	 (xdrproc_t)xdr_px_prepare_reply, sizeof(px_prepare_reply), handle_prepare},
	{PX_ACCEPT, (xdrproc_t)xdr_px_accept_args, sizeof(px_accept_args),
	 (xdrproc_t)xdr_px_accept_reply, sizeof(px_accept_reply), handle_accept},
	{PX_DECIDED, (xdrproc_t)xdr_px_decided_args, sizeof(px_decided_args),
	 (xdrproc_t)xdr_px_decided_reply, sizeof(px_decided_reply), handle_decided},
	{PX_INFO, (xdrproc_t)xdr_px_info_args, sizeof(px_info_args),
	 (xdrproc_t)xdr_px_info_reply, sizeof(px_info_reply), handle_info},
	{PX_FORWARD, (xdrproc_t)xdr_px_forward_args, sizeof(px_forward_args),
	 (xdrproc_t)xdr_px_forward_reply, sizeof(px_forward_reply), handle_forward},
};

/* ---------------------------------------------------------------- restarts */

/*
 * Restarts: rejoining without voting (the rule, and why it is safe).
 *
 * A peer that lost its acceptor state (started with opts->restart, or told by
 * a peer's to_inc that it voted before under another incarnation) must not
 * vote where its old self may have voted: a forgotten promise or accept can
 * let a second value be chosen (issue 12 item 1). The rule, as implemented:
 *
 *  R1 Until it has rejoined, it answers every PREPARE and ACCEPT with
 *     PX_ST_NOVOTE (proposers count it as a refusal at once, never as a vote)
 *     and runs no proposer round of its own; it still learns decisions
 *     (DECIDED messages; DECIDED replies) and answers INFO.
 *  R2 Every proposer counts no vote of a round whose phase 1 began more than
 *     PX_ROUND_MAX_MS ago; a round under a lease counts from the lease's range
 *     prepare, so a lease lasts PX_ROUND_MAX_MS (proposer.c).
 *  R3 Rejoin, two phases. Phase A: ask every other peer (INFO, a few ms
 *     between rounds) until each has answered once (voting or not: R5 fenced
 *     it), or until PX_ROUND_MAX_MS + PX_REJOIN_SLACK_MS after the restart was
 *     noticed, whichever comes first: the fence point. Phase B: ask again
 *     until floor((n-1)/2)+1 distinct other peers, each voting itself, have
 *     answered INFOs sent after the fence point. With every other peer up
 *     (n = 3: always, as phase B needs both anyway) there is no wait; with
 *     one down (n >= 5) it is the old rule: answers given after the wait.
 *     vote_floor = the largest Max reported (phase A answers included: a
 *     higher floor is always safe); round_floor = the largest proposal number
 *     promised anywhere, likewise. Then: Max := max(Max,
 *     vote_floor); vote for every seq > vote_floor; answer NOVOTE for every
 *     seq <= vote_floor for the rest of this object's life; never grant a
 *     range promise starting at or below vote_floor; propose only with numbers
 *     above round_floor. A completed rejoin covers every earlier incarnation
 *     (a later stale to_inc does not start another).
 *  R4 Peers tell incarnations apart: a new incarnation of p is a new peer (its
 *     Done is forgotten, our lease is dropped), and nobody accepts what others
 *     say about its own Done.
 *  R5 Fences. A peer that answers an INFO from incarnation I of p (I not the
 *     one whose INFO it answered last) first, under px->mu: sets fence_inc[p]
 *     = I, bumps fence_gen, drops its lease. From then on it serves no
 *     request of p carrying another incarnation (PREPARE/ACCEPT: NOVOTE;
 *     DECIDED ignored; FORWARD not taken; the header not taken in either) and
 *     takes in no reply of one (not noted, never counted). A round counts its
 *     votes at one instant under px->mu, only if fence_gen is still the value
 *     it had when the round's phase 1 began (a lease: when its range prepare
 *     began); so a round that holds a promise or accept of p's older self
 *     and has not counted before the answer never counts. A peer that never
 *     restarts never sends INFO: this costs nothing in normal operation.
 *
 * Why no two values are decided. A value is decided only when a proposer
 * counted a majority Q of votes in one round (accepts; and the promises of
 * its phase 1, whose quorum also matters). Let p's old incarnation have a
 * vote counted in such a round at instance s. Then:
 *  (a) Every other member of Q handled a message of that round for s before
 *      it was counted, hence (px_note_seq_locked; Max never decreases) has
 *      Max >= s from then on, or has itself lost its state since.
 *  (b) Every vote of Q was given before any phase B answer p uses, and no
 *      round counts an old vote of p after the fence point. Either by the
 *      wait: the round began before p's old incarnation died (it holds a vote
 *      of it), so by R2 it counted nothing later than PX_ROUND_MAX_MS after
 *      that death; p's rejoin starts after the death (one process per peer at
 *      a time) and its fence point is that long after (the slack covers
 *      clock-rate drift between the two hosts over 1.5 s). Or by the fences
 *      (R5), when every other peer answered in phase A: the proposer q of the
 *      round is one of them (q != p: p's old rounds died with it); the
 *      process of q that answered fenced first, so a round of it counts an
 *      old vote of p only before that answer (a round begun earlier that had
 *      not counted fails the fence_gen test; one begun later cannot get a
 *      vote of a dead process: its calls reach p's new self); an earlier
 *      process of q counted before it died, so before the answer; a later
 *      one starts after the answer, when p's old self is dead already.
 *      Either way the count, and so every vote of Q, came before the fence
 *      point, which comes before every phase B INFO is sent. Then (c)-(e) as
 *      before, with phase B's answers. (A single round of INFO would not do:
 *      a member of Q may have answered before it voted, and q's Max, which
 *      would then carry s, is not durable when q's own acceptor refused s.)
 *  (c) Call a peer a knower of s if it votes and has Max >= s. The set K∪L
 *      (knowers, and peers that were knowers and lost their state without
 *      rejoining yet) has >= floor(n/2)+1 members once Q was counted, and
 *      stays so: a knower that restarts moves to L; a member of L rejoins only
 *      with answers from floor((n-1)/2)+1 voting others, and since the others
 *      outside K∪L number at most (n-1) - floor(n/2) = floor((n-1)/2), one of
 *      them is a knower, so the rejoined peer gets vote_floor >= s and (Max :=
 *      vote_floor) is a knower again. The same count applied to p itself shows
 *      p's vote_floor >= s: p never votes at s again (R3).
 *  (d) So at s, the only peers that vote are peers whose state is intact
 *      since before Q was counted, or whose vote_floor < s because s was not
 *      decided with a vote of an earlier incarnation of theirs; any promise
 *      quorum for s meets Q in a peer with intact state (two majorities meet,
 *      and the lost members of Q refuse s), which reports its accept: plain
 *      Paxos (proposer.c) again.
 *  (e) A hole in the rule as first written, closed here: a restarted peer
 *      could reuse one of its old proposal numbers n with another value
 *      (numbers are (round << 16) | me and its counters restart), and two
 *      proposals with one number break the "highest accepted" choice.
 *      round_floor removes it: its old proposal n was promised by a majority
 *      (a lease: a range promise, i.e. floor_n), so by the count of (c) some
 *      INFO answer reports a promise >= n, and p's new numbers are above it
 *      (after a fenced phase A, every promise of n that survives is reported
 *      in a phase A answer: no peer serves p's old requests after its own).
 *      That is also why it proposes nothing before it rejoined (R1).
 *      Likewise a lease resting on a range promise of p's old incarnation
 *      would cover instances above vote_floor: R2 makes leases expire.
 * What it assumes: peers follow the protocol (no Byzantine faults); one live
 * process per peer; a restart=false start is a peer that never voted in the
 * group, or one that learns via to_inc before it answers a proposer that knew
 * its old self (API.md: a false word can let two values be chosen); local
 * monotonic clocks run at about the same rate (no synchronised clocks);
 * Max reported in INFO is this peer's px->max_seq, which never decreases.
 * Liveness: instances <= vote_floor that were not decided need the other
 * peers; with fewer than a majority of voting others up it never votes.
 * Fence ordering: incarnations are random, so "the INFO answered last" stands
 * for "the newest". An INFO of a dead incarnation handled after its
 * successor's (a handler delayed past a restart) would move the fence back:
 * safety does not depend on it (the fence_gen test and dead processes'
 * silence do), but the live one's requests are then refused as stale until
 * it sends another INFO (it does so only while rejoining).
 */

typedef struct {
	bool fenced;   /* it answered an INFO of ours: it has fenced our old selves */
	bool answered; /* it answered, voting, an INFO sent after the fence point */
} rejoin_answer;

static void *rejoin_main(void *arg)
{
	paxos *px = arg;
	int n = px->npeers, need = (n - 1) / 2 + 1, got = 0, fenced = 0, floor = -1;
	uint64_t hi = 0;
	int *dv = dkv_malloc((size_t)n * sizeof *dv);
	uint64_t *di = dkv_malloc((size_t)n * sizeof *di);
	rejoin_answer *ans = dkv_calloc((size_t)n, sizeof *ans);
	pthread_mutex_lock(&px->mu);
	/* R3 phase A until every other peer answered (fenced) or the wait is
	 * over; then phase B: answers to INFOs sent from then on */
	uint64_t until = px->rejoin_t0 + PX_ROUND_MAX_MS + PX_REJOIN_SLACK_MS;
	bool phase_b = false;
	unsigned pause = 5;
	px->rejoin_waited = false;
	while (!px->dead && dv && di && ans && n > 1) { /* alone: nobody else can have counted a vote */
		if (!phase_b && (fenced == n - 1 || dkv_now_ms() >= until)) {
			phase_b = true;
			px->rejoin_waited = fenced < n - 1;
			pause = 5;
		}
		for (int p = 0; p < n && !px->dead; p++) {
			if (p == px->me || (phase_b ? ans[p].answered : ans[p].fenced)) continue;
			px_info_args a;
			px_info_reply r;
			memset(&a, 0, sizeof a);
			memset(&r, 0, sizeof r);
			px_hdr_fill_locked(px, &a.h, p, dv, di);
			px->rejoin_asks++;
			pthread_mutex_unlock(&px->mu);
			int rc = dkv_rpc_call(px->pool, px->peers[p], PX_PROG, PX_VERS, PX_INFO,
			                      (xdrproc_t)xdr_px_info_args, &a, (xdrproc_t)xdr_px_info_reply,
			                      &r, PX_CALL_TIMEOUT_MS);
			pthread_mutex_lock(&px->mu);
			if (rc != DKV_OK) continue;
			px_rhdr_note_locked(px, p, &r.h);
			/* every answer's floors are kept (higher floors are always safe) */
			if (r.max > floor) floor = r.max;
			if (r.hi_n > hi) hi = r.hi_n;
			if (!ans[p].fenced) {
				ans[p].fenced = true; /* voting or not: it fenced before answering */
				fenced++;
			}
			if (phase_b && r.voting) {
				ans[p].answered = true;
				got++;
			}
			xdr_free((xdrproc_t)xdr_px_info_reply, (char *)&r);
		}
		if (phase_b && got >= need) break;
		if (!phase_b && fenced == n - 1) continue; /* phase B at once */
		uint64_t t = dkv_now_ms() + pause;
		if (!phase_b && t > until) t = until;
		while (!px->dead && dkv_now_ms() < t) dkv_cond_wait_until(&px->cv, &px->mu, t);
		if (pause < 40) pause *= 2;
	}
	if (!px->dead && (n == 1 || got >= need)) {
		if (floor > px->vote_floor) px->vote_floor = floor;
		if (hi > px->round_floor) px->round_floor = hi;
		px_note_seq_locked(px, px->vote_floor);
		/* with a directory, the floors are durable before we vote */
		uint64_t lsn = px_log_locked(px, 'V', px->vote_floor, px->round_floor, NULL);
		pthread_mutex_unlock(&px->mu);
		bool ok = px_sync(px, lsn);
		pthread_mutex_lock(&px->mu);
		px->voting = ok && !px->dead;
		px->rejoined = true;
		DKV_INFO("paxos %d: rejoined after %llu ms (%s): votes above seq %d", px->me,
		         (unsigned long long)(dkv_now_ms() - px->rejoin_t0),
		         px->rejoin_waited ? "waited" : "fenced by every other peer", px->vote_floor);
		pthread_cond_broadcast(&px->cv);
	}
	pthread_mutex_unlock(&px->mu);
	free(dv);
	free(di);
	free(ans);
	return NULL;
}

/* Stop voting and start the rejoin (R1, R3). The lease and what we promised
 * as a range are of no use now. */
static void start_rejoin_locked(paxos *px)
{
	if (px->rejoin_running || px->dead) {
		px->voting = false;
		return;
	}
	if (px->log && px->voting) px_log_locked(px, 'J', 0, 0, NULL);
	px->voting = false;
	px->lead_n = 0;
	px->rejoin_t0 = dkv_now_ms();
	int err = pthread_create(&px->rejoin_tid, NULL, rejoin_main, px);
	if (err) {
		DKV_WARN("paxos %d: no rejoin thread: %s (never votes)", px->me, strerror(err));
		return;
	}
	px->rejoin_running = true;
}

/* ---------------------------------------------------------------- durability */

/*
 * Durability (opts->dir): the acceptor's state is a log of records in
 * "paxos.log" of the directory (src/storage.h: CRC-framed, group commit):
 *   I inc        our incarnation (first record of a fresh directory)
 *   P seq n      promised n at seq            A seq n v  accepted (n, v) at seq
 *   D seq v      learned v decided at seq     F seq n    range promise n from seq
 *   N done       our paxos_done               M max      our Max (compaction)
 *   J            a rejoin began (we lost state: do not vote)
 *   V floor hi   the rejoin completed: vote_floor, round_floor (for good)
 * So a peer restarted on a directory that holds J without a later V rejoins
 * again, and one that rejoined keeps refusing every seq <= vote_floor.
 * Records are appended under px->mu (no I/O) when the state changes; every
 * reply waits (px_sync, group-committed fdatasync, no lock held) until every
 * record appended before it was built is durable, so nothing is said that a
 * crash could take back. A proposer's own promise/accept counts only once
 * its record is durable (synced before the phase reports success). Replay is
 * idempotent (max/monotone), as compaction needs. Compaction: when the log
 * outgrows twice its live records (plus 256 KiB), paxos_done rewrites it with
 * the live state only (instances >= Min). A write or fsync error stops the
 * peer (dead: every request refused, proposers stop) with a log line; the
 * storage layer makes the error sticky, so it is never taken for success.
 */
typedef struct {
	char type;
	char pad[3];
	int32_t seq;
	uint64_t n;
} px_rec;

uint64_t px_log_locked(paxos *px, char type, int seq, uint64_t n, const px_blob *v)
{
	if (!px->log || px->dead) return 0;
	px_rec r;
	memset(&r, 0, sizeof r);
	r.type = type;
	r.seq = seq;
	r.n = n;
	struct iovec iov[2] = {{&r, sizeof r}, {v ? v->data : NULL, v ? v->len : 0}};
	uint64_t lsn = 0;
	int err = dkv_log_appendv(px->log, iov, v && v->len ? 2 : 1, &lsn);
	if (err) {
		DKV_ERROR("paxos %d: %s/paxos.log: append: %s; stopping", px->me, dkv_dir_path(px->dir),
		          strerror(err));
		px->dead = true;
		pthread_cond_broadcast(&px->cv);
		pthread_cond_broadcast(&px->work_cv);
		return 0;
	}
	return lsn;
}

uint64_t px_last_lsn_locked(paxos *px)
{
	return px->log ? dkv_log_last_lsn(px->log) : 0;
}

bool px_sync(paxos *px, uint64_t lsn)
{
	if (!lsn) {
		if (!px->log) return true;
		pthread_mutex_lock(&px->mu);
		bool dead = px->dead;
		pthread_mutex_unlock(&px->mu);
		return !dead;
	}
	int err = dkv_log_sync(px->log, lsn);
	if (!err) return true;
	pthread_mutex_lock(&px->mu);
	if (!px->dead)
		DKV_ERROR("paxos %d: %s/paxos.log: fdatasync: %s; stopping", px->me,
		          dkv_dir_path(px->dir), strerror(err));
	px->dead = true;
	pthread_cond_broadcast(&px->cv);
	pthread_cond_broadcast(&px->work_cv);
	pthread_mutex_unlock(&px->mu);
	return false;
}

void px_sync_start_locked(paxos *px, uint64_t lsn)
{
	if (!lsn || !px->syncer_running || lsn <= px->sync_want) return;
	px->sync_want = lsn;
	pthread_cond_signal(&px->sync_cv);
}

static void *syncer_main(void *arg)
{
	paxos *px = arg;
	uint64_t done = 0;
	pthread_mutex_lock(&px->mu);
	while (!px->dead) {
		if (px->sync_want > done) {
			uint64_t w = px->sync_want;
			pthread_mutex_unlock(&px->mu);
			bool ok = px_sync(px, w);
			pthread_mutex_lock(&px->mu);
			done = w;
			if (!ok) break;
			continue;
		}
		pthread_cond_wait(&px->sync_cv, &px->mu);
	}
	pthread_mutex_unlock(&px->mu);
	return NULL;
}

static int replay_rec(void *arg, uint64_t lsn, const void *rec, size_t len)
{
	paxos *px = arg;
	(void)lsn;
	px_rec r;
	if (len < sizeof r) return EIO;
	memcpy(&r, rec, sizeof r);
	const char *vp = (const char *)rec + sizeof r;
	size_t vl = len - sizeof r;
	pthread_mutex_lock(&px->mu);
	int err = 0;
	px_inst *in = NULL;
	if (strchr("PAD", r.type) && r.seq >= 0 && !(in = px_get_locked(px, r.seq)) &&
	    r.seq >= px->min_seq)
		err = ENOMEM;
	switch (err ? 0 : r.type) {
	case 'I': px->inc = r.n; px->dincs[px->me] = r.n; px->replay_inc = true; break;
	case 'P': if (in && r.n > in->n_p) in->n_p = r.n; break;
	case 'A':
		if (in && r.n >= in->n_a) {
			px_blob *b = px_blob_copy(vp, vl);
			if (!b) { err = ENOMEM; break; }
			px_blob_unref(in->v_a);
			in->v_a = b;
			in->n_a = r.n;
			if (r.n > in->n_p) in->n_p = r.n;
		}
		break;
	case 'D':
		if (in && !in->v_d) {
			in->v_d = px_blob_copy(vp, vl);
			if (!in->v_d) err = ENOMEM;
		}
		break;
	case 'F':
		if (r.n > px->floor_n) px->floor_n = r.n;
		if (r.seq < px->floor_seq) px->floor_seq = r.seq;
		break;
	case 'N': if (r.seq > px->dones[px->me]) px->dones[px->me] = r.seq; break;
	case 'M': px_note_seq_locked(px, r.seq); break;
	case 'J': px->replay_rejoin = true; break;
	case 'V':
		if (r.seq > px->vote_floor) px->vote_floor = r.seq;
		if (r.n > px->round_floor) px->round_floor = r.n;
		px->replay_rejoin = false;
		px->rejoined = true;
		break;
	case 0: break;
	default: err = EIO; break;
	}
	pthread_mutex_unlock(&px->mu);
	if (err == EIO) DKV_ERROR("paxos %d: paxos.log: unknown record type %d", px->me, r.type);
	return err;
}

static void close_disk(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	dkv_log *l = px->log;
	dkv_dir *d = px->own_dir ? px->dir : NULL;
	px->log = NULL;
	px->dir = NULL;
	pthread_mutex_unlock(&px->mu);
	dkv_log_close(l);
	dkv_dir_close(d);
}

/* Rewrite the log with the live state (caller: paxos_done, holding kill_mu
 * so the log stays open; px->mu not held). */
static void maybe_compact(paxos *px, uint64_t min_bytes)
{
	pthread_mutex_lock(&px->mu);
	if (!px->log || px->dead || dkv_log_size(px->log) < min_bytes ||
	    (min_bytes == 0 && dkv_log_size(px->log) < 2 * px->log_live + 256 * 1024)) {
		pthread_mutex_unlock(&px->mu);
		return;
	}
	int err = dkv_log_compact_begin(px->log);
	uint64_t live = 0;
#define ADD(t, sq, nn, bl)                                                            \
	do {                                                                          \
		if (err) break;                                                       \
		const px_blob *b_ = (bl);                                             \
		size_t vl_ = b_ ? b_->len : 0;                                        \
		char *buf_ = malloc(sizeof(px_rec) + vl_ + 1);                        \
		if (!buf_) { err = ENOMEM; break; }                                   \
		px_rec r_;                                                            \
		memset(&r_, 0, sizeof r_);                                            \
		r_.type = (t); r_.seq = (sq); r_.n = (nn);                            \
		memcpy(buf_, &r_, sizeof r_);                                         \
		if (vl_) memcpy(buf_ + sizeof r_, b_->data, vl_);                     \
		err = dkv_log_compact_add(px->log, buf_, sizeof r_ + vl_);            \
		live += sizeof r_ + vl_ + DKV_LOG_FRAME;                              \
		free(buf_);                                                           \
	} while (0)
	ADD('I', 0, px->inc, NULL);
	if (px->floor_n) ADD('F', px->floor_seq, px->floor_n, NULL);
	if (px->dones[px->me] >= 0) ADD('N', px->dones[px->me], 0, NULL);
	ADD('M', px->max_seq, 0, NULL);
	if (px->rejoined) ADD('V', px->vote_floor, px->round_floor, NULL);
	if (!px->voting) ADD('J', 0, 0, NULL);
	for (size_t i = 0; i < px->ninst && !err; i++) {
		px_inst *in = px->insts[i];
		if (in->n_p) ADD('P', in->seq, in->n_p, NULL);
		if (in->n_a) ADD('A', in->seq, in->n_a, in->v_a);
		if (in->v_d) ADD('D', in->seq, 0, in->v_d);
	}
#undef ADD
	dkv_log *l = px->log;
	pthread_mutex_unlock(&px->mu);
	if (!err) err = dkv_log_compact_commit(l);
	else dkv_log_compact_abort(l);
	pthread_mutex_lock(&px->mu);
	if (!err) px->log_live = live;
	else if (err != ENOMEM) {
		DKV_ERROR("paxos %d: %s/paxos.log: compaction: %s; stopping", px->me,
		          dkv_dir_path(px->dir), strerror(err));
		px->dead = true;
		pthread_cond_broadcast(&px->cv);
		pthread_cond_broadcast(&px->work_cv);
	}
	pthread_mutex_unlock(&px->mu);
}

/* ---------------------------------------------------------------- lifecycle */

/* Free the queued jobs (after kill). */
static void drop_jobs_locked(paxos *px)
{
	while (px->jobs) {
		px_job *j = px->jobs;
		px->jobs = j->next;
		px_blob_unref(j->v);
		free(j);
	}
	px->jobs_tail = NULL;
	px->njobs = 0;
}

static void px_release(paxos *px)
{
	if (px->syncer_running) { /* a start that failed after the log was open */
		pthread_mutex_lock(&px->mu);
		px->dead = true;
		pthread_cond_broadcast(&px->sync_cv);
		pthread_mutex_unlock(&px->mu);
		pthread_join(px->syncer, NULL);
		px->syncer_running = false;
	}
	for (size_t i = 0; i < px->ninst; i++) inst_free(px->insts[i]);
	free(px->insts);
	if (px->peers)
		for (int i = 0; i < px->npeers; i++) free(px->peers[i]);
	free(px->peers);
	free(px->dones);
	free(px->dincs);
	free(px->peer_inc);
	free(px->fence_inc);
	free(px->fail_until);
	free(px->unsafe);
	close_disk(px);
	dkv_rpc_pool_free(px->pool);
	if (px->own_srv) dkv_rpc_server_free(px->srv);
	drop_jobs_locked(px);
	pthread_cond_destroy(&px->cv);
	pthread_cond_destroy(&px->work_cv);
	pthread_cond_destroy(&px->sync_cv);
	pthread_mutex_destroy(&px->mu);
	pthread_mutex_destroy(&px->kill_mu);
	free(px);
}

static paxos *px_make_impl(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                              px_decide_hook hook, void *hook_ctx, bool restart, dkv_dir *dir,
                              bool own_dir);

paxos *px_make_dir(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                   px_decide_hook hook, void *hook_ctx, dkv_dir *dir, bool restart)
{
	return px_make_impl(peers, npeers, me, rpcs, hook, hook_ctx, restart, dir, false);
}

paxos *px_make_restart(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                       px_decide_hook hook, void *hook_ctx, bool restart)
{
	return px_make_impl(peers, npeers, me, rpcs, hook, hook_ctx, restart, NULL, false);
}

paxos *px_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
               px_decide_hook hook, void *hook_ctx)
{
	return px_make_impl(peers, npeers, me, rpcs, hook, hook_ctx, false, NULL, false);
}

static paxos *px_make_impl(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                              px_decide_hook hook, void *hook_ctx, bool restart, dkv_dir *dir,
                              bool own_dir)
{
	dkv_lib_init();
	if (!peers || npeers <= 0 || npeers > PX_PEERS_MAX || me < 0 || me >= npeers) {
		errno = EINVAL;
		return NULL;
	}
	for (int i = 0; i < npeers; i++) {
		if (!peers[i] || strlen(peers[i]) >= DKV_NAME_MAX) {
			errno = EINVAL;
			return NULL;
		}
	}
	paxos *px = dkv_calloc(1, sizeof *px);
	if (!px) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&px->mu, NULL);
	pthread_mutex_init(&px->kill_mu, NULL);
	int err = dkv_cond_init(&px->cv);
	if (!err && (err = dkv_cond_init(&px->work_cv)) != 0) pthread_cond_destroy(&px->cv);
	if (!err && (err = dkv_cond_init(&px->sync_cv)) != 0) {
		pthread_cond_destroy(&px->cv);
		pthread_cond_destroy(&px->work_cv);
	}
	if (err) {
		pthread_mutex_destroy(&px->mu);
		pthread_mutex_destroy(&px->kill_mu);
		free(px);
		errno = err;
		return NULL;
	}
	px->npeers = npeers;
	px->me = me;
	px->max_seq = -1;
	px->min_seq = 0;
	px->floor_seq = INT_MAX;
	px->hint = -1;
	px->hook = hook;
	px->hook_ctx = hook_ctx;
	dkv_rng_seed(&px->rng, dkv_random_seed());
	do
		px->inc = dkv_random_seed() ^ dkv_rng_next(&px->rng);
	while (px->inc == 0);
	px->voting = true;
	px->vote_floor = -1;
	px->peer_inc = dkv_calloc((size_t)npeers, sizeof *px->peer_inc);
	px->dincs = dkv_calloc((size_t)npeers, sizeof *px->dincs);
	px->peers = dkv_calloc((size_t)npeers, sizeof *px->peers);
	px->dones = dkv_malloc((size_t)npeers * sizeof *px->dones);
	px->fail_until = dkv_calloc((size_t)npeers, sizeof *px->fail_until);
	px->fence_inc = dkv_calloc((size_t)npeers, sizeof *px->fence_inc);
	px->pool = dkv_rpc_pool_new();
	if (!px->peers || !px->dones || !px->fail_until || !px->pool || !px->peer_inc || !px->dincs ||
	    !px->fence_inc)
		goto nomem;
	px->dincs[me] = px->inc;
	for (int i = 0; i < npeers; i++) {
		px->dones[i] = -1;
		if (!(px->peers[i] = dkv_strdup(peers[i]))) goto nomem;
	}
	if (dir) {
		/* before serving: replay the acceptor's records */
		px->dir = dir;
		px->own_dir = own_dir;
		bool fresh = dkv_dir_fresh(dir);
		err = dkv_log_open(dir, "paxos.log", replay_rec, px, &px->log);
		/* The first record of our state is the incarnation ('I'), synced before
		 * any vote. A directory that holds other files (IDENTITY, say: a start
		 * that crashed before its first sync — a lost-disk restart among them)
		 * but no incarnation record holds no vote of ours: it is fresh, and
		 * `restart` decides as for an empty directory. Counting it as state
		 * would let an amnesiac lost-disk replica vote at once. */
		if (!err && !fresh && !px->replay_inc) {
			DKV_INFO("paxos %d: %s holds no acceptor state yet: treated as new", me,
			         dkv_dir_path(dir));
			fresh = true;
		}
		if (!err && fresh) {
			/* a new directory: our incarnation is the first record */
			pthread_mutex_lock(&px->mu);
			uint64_t lsn = px_log_locked(px, 'I', 0, px->inc, NULL);
			if (restart) lsn = px_log_locked(px, 'J', 0, 0, NULL);
			pthread_mutex_unlock(&px->mu);
			if (!px_sync(px, lsn)) err = dkv_dir_error(dir) ? dkv_dir_error(dir) : EIO;
		} else if (!err) {
			px->dincs[me] = px->inc;
			/* it kept its promises: votes at once, unless it had not
			 * finished a rejoin (J without V) */
			restart = px->replay_rejoin;
		}
		if (!err) {
			int e = pthread_create(&px->syncer, NULL, syncer_main, px);
			if (e == 0)
				px->syncer_running = true;
			else
				DKV_WARN("paxos %d: no syncer thread (%s): own votes sync after the calls", me,
				         strerror(e));
		}
		if (err) {
			DKV_ERROR("paxos %d: cannot use %s/paxos.log: %s", me, dkv_dir_path(dir), strerror(err));
			px_release(px);
			errno = err;
			return NULL;
		}
	}
	if (rpcs) {
		px->srv = rpcs;
	} else {
		px->srv = dkv_rpc_server_listen(peers[me]);
		if (!px->srv) {
			err = errno ? errno : EIO;
			px_release(px);
			errno = err;
			return NULL;
		}
		px->own_srv = true;
	}
	err = dkv_rpc_server_add(px->srv, PX_PROG, PX_VERS, px_procs,
	                         sizeof px_procs / sizeof px_procs[0], px);
	if (err != DKV_OK) {
		px_release(px);
		errno = err == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		return NULL;
	}
	if (restart) {
		pthread_mutex_lock(&px->mu);
		start_rejoin_locked(px);
		bool ok = px->rejoin_running;
		pthread_mutex_unlock(&px->mu);
		if (!ok) {
			paxos_free(px);
			errno = EAGAIN;
			return NULL;
		}
	}
	return px;

nomem:
	px_release(px);
	errno = ENOMEM;
	return NULL;
}

paxos *paxos_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs)
{
	return px_make(peers, npeers, me, rpcs, NULL, NULL);
}

/* Join the worker threads that have finished (all of them if `all`). */
static void reap(paxos *px, bool all)
{
	px_worker *done = NULL;
	pthread_mutex_lock(&px->mu);
	px_worker **pp = &px->workers;
	while (*pp) {
		px_worker *w = *pp;
		if (all || w->finished) {
			*pp = w->next;
			w->next = done;
			done = w;
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&px->mu);
	while (done) {
		px_worker *w = done;
		done = w->next;
		pthread_join(w->tid, NULL);
		free(w);
	}
}

bool px_start_locked(paxos *px, int seq, px_blob *v)
{
	px_inst *in = NULL;
	if (!px->dead && seq >= px->min_seq) {
		px_note_seq_locked(px, seq);
		in = px_get_locked(px, seq);
	}
	if (!in || in->v_d || in->proposing) return false;
	px_job *j = dkv_calloc(1, sizeof *j);
	if (!j) {
		DKV_WARN("paxos_start(%d): out of memory", seq);
		return false;
	}
	j->seq = seq;
	j->v = px_blob_ref(v);
	in->proposing = true;
	if (px->jobs_tail)
		px->jobs_tail->next = j;
	else
		px->jobs = j;
	px->jobs_tail = j;
	px->njobs++;
	if (px->njobs > px->nidle) {
		/* every idle worker is spoken for: add one (under the lock, so that
		 * paxos_kill always finds a joinable tid) */
		px_worker *w = dkv_calloc(1, sizeof *w);
		if (w) w->px = px;
		int err = w ? pthread_create(&w->tid, NULL, px_worker_main, w) : ENOMEM;
		if (err) {
			free(w);
			DKV_WARN("paxos_start(%d): no worker thread: %s", seq, strerror(err));
		} else {
			w->next = px->workers;
			px->workers = w;
		}
	} else {
		pthread_cond_signal(&px->work_cv);
	}
	return true;
}

void paxos_start(paxos *px, int seq, const void *value, size_t len)
{
	if (!px || seq < 0) return;
	if (len > PX_VALUE_MAX) {
		/* it would never pass the peers' decoders (px_prot.x) */
		DKV_WARN("paxos_start(%d): a value of %zu bytes is over PX_VALUE_MAX (%u): not proposed",
		         seq, len, (unsigned)PX_VALUE_MAX);
		return;
	}
	reap(px, false);
	px_blob *v = px_blob_copy(value, len);
	if (!v) {
		DKV_WARN("paxos_start(%d): out of memory", seq);
		return;
	}
	pthread_mutex_lock(&px->mu);
	px_start_locked(px, seq, v);
	pthread_mutex_unlock(&px->mu);
	px_blob_unref(v);
}

paxos_fate paxos_status(paxos *px, int seq, void **value, size_t *len)
{
	if (value) *value = NULL;
	if (len) *len = 0;
	if (!px) return PAXOS_PENDING;
	paxos_fate f = PAXOS_PENDING;
	pthread_mutex_lock(&px->mu);
	if (seq < px->min_seq) {
		f = PAXOS_FORGOTTEN;
	} else {
		px_inst *in = px_find_locked(px, seq);
		if (in && in->v_d) {
			f = PAXOS_DECIDED;
			if (value) {
				char *c = malloc(in->v_d->len + 1);
				if (c) {
					if (in->v_d->len) memcpy(c, in->v_d->data, in->v_d->len);
					c[in->v_d->len] = '\0';
					*value = c;
					if (len) *len = in->v_d->len;
				}
			} else if (len) {
				*len = in->v_d->len;
			}
		}
	}
	pthread_mutex_unlock(&px->mu);
	return f;
}

void paxos_done(paxos *px, int seq)
{
	if (!px) return;
	pthread_mutex_lock(&px->mu);
	px_note_done_locked(px, px->me, seq);
	uint64_t lsn = px_last_lsn_locked(px);
	pthread_mutex_unlock(&px->mu);
	/* the log may be closed by a paxos_kill meanwhile: hold kill_mu (never
	 * wait for a kill in progress; a killed peer needs no more records) */
	if (lsn && pthread_mutex_trylock(&px->kill_mu) == 0) {
		if (!px->killed) {
			px_sync(px, lsn);
			maybe_compact(px, 0);
		}
		pthread_mutex_unlock(&px->kill_mu);
	}
}

void px_compact(paxos *px, uint64_t min_bytes)
{
	if (!px || pthread_mutex_trylock(&px->kill_mu) != 0) return;
	if (!px->killed) maybe_compact(px, min_bytes ? min_bytes : 1);
	pthread_mutex_unlock(&px->kill_mu);
}

uint64_t px_log_bytes(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	uint64_t n = px->log ? dkv_log_size(px->log) : 0;
	pthread_mutex_unlock(&px->mu);
	return n;
}

int paxos_max(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	int m = px->max_seq;
	pthread_mutex_unlock(&px->mu);
	return m;
}

int paxos_min(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	int m = px->min_seq;
	pthread_mutex_unlock(&px->mu);
	return m;
}

void paxos_kill(paxos *px)
{
	if (!px) return;
	pthread_mutex_lock(&px->kill_mu);
	if (px->killed) {
		pthread_mutex_unlock(&px->kill_mu);
		return;
	}
	pthread_mutex_lock(&px->mu);
	px->dead = true;
	pthread_cond_broadcast(&px->cv);
	pthread_cond_broadcast(&px->work_cv);
	pthread_mutex_unlock(&px->mu);
	/* No handler runs after this; then no proposer call lingers. */
	if (px->own_srv)
		dkv_rpc_server_kill(px->srv);
	else
		dkv_rpc_server_remove(px->srv, PX_PROG);
	dkv_rpc_pool_shutdown(px->pool);
	reap(px, true);
	pthread_mutex_lock(&px->mu);
	bool rj = px->rejoin_running;
	pthread_mutex_unlock(&px->mu);
	if (rj) pthread_join(px->rejoin_tid, NULL);
	pthread_mutex_lock(&px->mu);
	bool sy = px->syncer_running;
	px->syncer_running = false;
	pthread_cond_broadcast(&px->sync_cv);
	pthread_mutex_unlock(&px->mu);
	if (sy) pthread_join(px->syncer, NULL);
	close_disk(px); /* releases the directory */
	pthread_mutex_lock(&px->mu);
	drop_jobs_locked(px);
	pthread_mutex_unlock(&px->mu);
	px->killed = true;
	pthread_mutex_unlock(&px->kill_mu);
}

void paxos_free(paxos *px)
{
	if (!px) return;
	paxos_kill(px);
	px_release(px);
}

void paxos_set_unreliable(paxos *px, bool on)
{
	if (px) dkv_rpc_server_set_unreliable(px->srv, on);
}

unsigned long paxos_rpc_count(const paxos *px)
{
	return __atomic_load_n(&px->rpc_count, __ATOMIC_RELAXED);
}

paxos *paxos_make_opts(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                       const dkv_server_opts *opts)
{
	dkv_lib_init();
	if (opts && opts->dir && opts->dir[0]) {
		if (!peers || npeers <= 0 || npeers > PX_PEERS_MAX || me < 0 || me >= npeers) {
			errno = EINVAL;
			return NULL;
		}
		char *id = dkv_dir_identity_new("paxos", 0, peers, npeers, me);
		if (!id) {
			errno = ENOMEM;
			return NULL;
		}
		dkv_dir_opts dop;
		memset(&dop, 0, sizeof dop);
		dop.no_fsync = opts->no_fsync;
		dkv_dir *d = NULL;
		int err = dkv_dir_open(opts->dir, id, &dop, &d);
		free(id);
		if (err) {
			errno = err;
			return NULL;
		}
		paxos *px = px_make_impl(peers, npeers, me, rpcs, NULL, NULL, opts->restart, d, false);
		if (!px) {
			err = errno;
			dkv_dir_close(d);
			errno = err;
			return NULL;
		}
		pthread_mutex_lock(&px->mu);
		px->own_dir = true; /* paxos_kill releases it */
		pthread_mutex_unlock(&px->mu);
		return px;
	}
	return px_make_impl(peers, npeers, me, rpcs, NULL, NULL, opts && opts->restart, NULL,
	                       false);
}

/* ---------------------------------------------------------------- restart state */

bool px_is_voting(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	bool v = px->voting;
	pthread_mutex_unlock(&px->mu);
	return v;
}

uint64_t px_incarnation(paxos *px)
{
	return px->inc; /* immutable after make */
}

int px_vote_floor(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	int f = px->vote_floor;
	pthread_mutex_unlock(&px->mu);
	return f;
}

unsigned long px_novote_count(paxos *px, bool sent)
{
	pthread_mutex_lock(&px->mu);
	unsigned long n = sent ? px->novote_sent : px->novote_seen;
	pthread_mutex_unlock(&px->mu);
	return n;
}

unsigned long px_rejoin_asks(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	unsigned long n = px->rejoin_asks;
	pthread_mutex_unlock(&px->mu);
	return n;
}

bool px_rejoin_waited(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	bool w = px->rejoin_waited;
	pthread_mutex_unlock(&px->mu);
	return w;
}

unsigned long px_stale_refused(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	unsigned long n = px->stale_refused;
	pthread_mutex_unlock(&px->mu);
	return n;
}

unsigned long px_fenced_rounds(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	unsigned long n = px->fenced_rounds;
	pthread_mutex_unlock(&px->mu);
	return n;
}
