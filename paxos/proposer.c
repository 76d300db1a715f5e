/*
 * paxos/proposer.c — proposer workers: each runs a queued instance's rounds
 * until it is decided here, forgotten, or the peer is killed.
 *
 * A full round (Paxos Made Simple, 1a/2a), n = (round << 16) | me above every
 * number seen: (1) PREPARE(n) to the local acceptor (a direct call, never an
 * RPC), then to the others one at a time (order rotates with seq; recently
 * failed peers last) until a majority promised; a "decided" reply ends it:
 * the value is learned and passed on with DECIDED. (2) ACCEPT(n, v) likewise,
 * v the highest-numbered accepted value among the promises, else ours.
 * (3) Decide here, then DECIDED(v) once to every other peer. 3 peers, no
 * failures: 1 PREPARE + 1 ACCEPT + 2 DECIDED, 2 round trips to decide.
 * Multi-Paxos: a round at this peer's log tip also asks for a range promise
 * (px_prot.x); with a majority of them this peer holds a lease, and its later
 * instances skip (1): 1 round trip, 3 RPCs (instances reported busy excepted).
 * Any refusal drops the lease and a full round follows. Safety is plain
 * Paxos: a range promise is a phase-1 promise for each instance it covers.
 * Failed full rounds back off 1 ms doubling to PX_BACKOFF_MAX_MS on px->cv,
 * so a decision learned meanwhile, forgetting or kill ends the wait at once.
 * Restarts (paxos.c "Restarts"): a round counts no vote after its deadline
 * (PX_ROUND_MAX_MS from its phase 1; a lease is a phase 1, so leases expire
 * and are renewed by a range round); NOVOTE replies are refusals; a reply
 * from a peer whose incarnation changed since its promise does not count;
 * a rejoining peer runs no round, and numbers stay above round_floor.
 * Forwarding: a peer without the lease first hands the job to the holder
 * (FORWARD; the holder is named by the `leading` bit of message headers, or
 * by our acceptor's range promise), waits PX_FORWARD_WAIT_MS for its
 * DECIDED, then runs its own rounds. Range rounds happen at the log tip or
 * to renew our own expired lease, so fallbacks do not steal the range.
 * Durability: our own promise/accept record is handed to the syncer thread
 * as our first message goes out and the phase succeeds only once it is
 * durable.
 */
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

typedef enum { ROUND_DONE, ROUND_FAILED } round_result;

/* The instance a worker is proposing for. */
typedef struct {
	int seq;
	px_blob *v; /* our value (borrowed from the job) */
	int *dv;    /* the worker's buffers for outgoing Done vectors */
	uint64_t *di;
	uint64_t *pinc;   /* per peer: its incarnation in this round's phase 1, 0 */
	uint64_t deadline; /* count no vote after this (R2 of paxos.c "Restarts") */
	uint64_t gen;      /* px->fence_gen when the round's phase 1 began (R5) */
	uint64_t own_lsn;  /* our own vote's record: counts once durable */
	/* a range round's outcome (prepare_phase with range) */
	bool range_all;   /* every promise counted came with the range promise */
	int *busy;        /* union of the promisers' busy lists (malloc'ed) */
	int nbusy, capbusy;
} px_prop;

/* Add a promiser's busy list to the round's union (duplicates are fine). */
static void add_busy(px_prop *pr, const int *b, unsigned nb)
{
	if (!nb || !pr->range_all) return;
	if ((unsigned)(pr->capbusy - pr->nbusy) < nb) {
		int ncap = pr->nbusy + (int)nb + 16;
		int *nbv = realloc(pr->busy, (size_t)ncap * sizeof *nbv);
		if (!nbv) {
			pr->range_all = false; /* cannot record it: no lease */
			return;
		}
		pr->busy = nbv;
		pr->capbusy = ncap;
	}
	memcpy(pr->busy + pr->nbusy, b, nb * sizeof *b);
	pr->nbusy += (int)nb;
}

/* The LSN our own vote of this phase depends on (0: none, or memory mode);
 * the range promise's record (if any) was appended just after it. */
static uint64_t px_last_lsn_own(paxos *px, px_prop *pr)
{
	uint64_t l = pr->own_lsn;
	pr->own_lsn = 0;
	if (!l) return 0;
	pthread_mutex_lock(&px->mu);
	uint64_t last = px_last_lsn_locked(px);
	pthread_mutex_unlock(&px->mu);
	return last > l ? last : l;
}

/* Fill order[] with the peers to contact: me first, then the others. */
static void peer_order(paxos *px, int seq, int *order)
{
	int n = px->npeers, k = 0;
	uint64_t now = dkv_now_ms();
	order[k++] = px->me;
	/* healthy peers first, rotating with seq; then recently failed ones */
	for (int pass = 0; pass < 2; pass++) {
		for (int j = 0; j < n; j++) {
			int p = (int)(((unsigned)seq + (unsigned)px->me + 1u + (unsigned)j) % (unsigned)n);
			if (p == px->me) continue;
			bool failed = px->fail_until[p] > now;
			if ((pass == 0) == !failed) order[k++] = p;
		}
	}
}

static void note_call(paxos *px, int peer, bool ok)
{
	px->fail_until[peer] = ok ? 0 : dkv_now_ms() + PX_PEER_PENALTY_MS;
}

/* Learn (seq, v) locally and tell the hook. Consumes nothing. */
static void learn(paxos *px, int seq, px_blob *v)
{
	pthread_mutex_lock(&px->mu);
	bool news = px_learn_locked(px, seq, v);
	pthread_mutex_unlock(&px->mu);
	if (news) px_fire_hook(px, seq);
}

/* R5: has no fence moved since the round's phase 1 began? Decided under
 * px->mu: an INFO answer that fences comes wholly before or after it. */
static bool fence_holds(paxos *px, px_prop *pr)
{
	pthread_mutex_lock(&px->mu);
	bool ok = px->fence_gen == pr->gen;
	if (!ok) px->fenced_rounds++;
	pthread_mutex_unlock(&px->mu);
	return ok;
}

/* Phase 1. On success (*ok) *chosen is the value to propose (a new
 * reference). If a peer answered "decided", *chosen is that value and
 * *decided_by that peer (else -1). With `range`, also asks every peer for
 * the range promise; pr->range_all and pr->busy say how that went. */
static round_result prepare_phase(paxos *px, px_prop *pr, uint64_t n, bool range,
                                  const int *order, px_blob **chosen, bool *ok, int *decided_by)
{
	int maj = px->npeers / 2 + 1, promises = 0, refusals = 0;
	uint64_t best_n = 0;
	px_blob *best = NULL;
	*ok = false;
	for (int k = 0; k < px->npeers && promises < maj && refusals <= px->npeers - maj; k++) {
		int p = order[k];
		if (p == px->me) {
			pthread_mutex_lock(&px->mu);
			px_inst *in = px_get_locked(px, pr->seq);
			if (!in || px->dead) {
				pthread_mutex_unlock(&px->mu);
				px_blob_unref(best);
				return ROUND_DONE;
			}
			if (in->v_d) { /* learned meanwhile */
				pthread_mutex_unlock(&px->mu);
				px_blob_unref(best);
				return ROUND_DONE;
			}
			px_promise pm;
			if (px_votes_at_locked(px, pr->seq)) {
				px_acceptor_prepare(in, n, &pm);
			} else {
				pm.status = PX_ST_NOVOTE; /* our own acceptor does not vote here */
				pm.n = 0;
			}
			if (pm.status == PX_ST_OK) {
				promises++;
				pr->own_lsn = px_log_locked(px, 'P', pr->seq, n, NULL);
				if (pm.v && pm.n > best_n) {
					px_blob_unref(best);
					best = px_blob_ref(pm.v);
					best_n = pm.n;
				}
				if (range) {
					int *b = NULL;
					u_int nb = 0;
					if (px_range_promise_locked(px, pr->seq, n, &b, &nb))
						add_busy(pr, b, nb);
					else
						pr->range_all = false;
					free(b);
				}
			} else {
				refusals++;
				if (pm.n > in->n_seen) in->n_seen = pm.n;
			}
			pthread_mutex_unlock(&px->mu);
			continue;
		}
		px_prepare_args a;
		px_prepare_reply r;
		memset(&a, 0, sizeof a);
		memset(&r, 0, sizeof r);
		a.seq = pr->seq;
		a.n = n;
		a.range = range;
		pthread_mutex_lock(&px->mu);
		px_hdr_fill_locked(px, &a.h, p, pr->dv, pr->di);
		/* our own vote is written while our messages are out */
		if (pr->own_lsn) px_sync_start_locked(px, px_last_lsn_locked(px));
		pthread_mutex_unlock(&px->mu);
		int rc = dkv_rpc_call(px->pool, px->peers[p], PX_PROG, PX_VERS, PX_PREPARE,
		                      (xdrproc_t)xdr_px_prepare_args, &a,
		                      (xdrproc_t)xdr_px_prepare_reply, &r, PX_CALL_TIMEOUT_MS);
		pthread_mutex_lock(&px->mu);
		note_call(px, p, rc == DKV_OK);
		if (rc != DKV_OK) {
			pthread_mutex_unlock(&px->mu);
			refusals++;
			if (rc == DKV_ERR_KILLED) break;
			continue;
		}
		px_rhdr_note_locked(px, p, &r.h);
		if (px_fenced_locked(px, p, r.h.inc)) {
			/* R5: an old incarnation's promise: a refusal */
			pthread_mutex_unlock(&px->mu);
			xdr_free((xdrproc_t)xdr_px_prepare_reply, (char *)&r);
			refusals++;
			continue;
		}
		if (r.status == PX_ST_OK) {
			promises++;
			pr->pinc[p] = r.h.inc;
			if (range) {
				if (r.range_ok)
					add_busy(pr, r.busy.busy_val, r.busy.busy_len);
				else
					pr->range_all = false;
			}
			if (r.has_value && r.n > best_n) {
				px_blob *b = px_blob_adopt(r.v.px_value_val, r.v.px_value_len);
				if (b) {
					r.v.px_value_val = NULL;
					r.v.px_value_len = 0;
					px_blob_unref(best);
					best = b;
					best_n = r.n;
				} else {
					promises--; /* cannot use it: count as a refusal */
					refusals++;
				}
			}
		} else if (r.status == PX_ST_REJECT) {
			refusals++;
			px_inst *in = px_find_locked(px, pr->seq);
			if (in && r.n > in->n_seen) in->n_seen = r.n;
		} else if (r.status == PX_ST_NOVOTE) {
			refusals++;
			px->novote_seen++;
		}
		pthread_mutex_unlock(&px->mu);
		if (r.status == PX_ST_DECIDED) {
			px_blob *b = px_blob_adopt(r.v.px_value_val, r.v.px_value_len);
			if (b) {
				/* Already chosen: learn it and pass it on (the peers cut
				 * off from the deciding proposer hear it from us). */
				r.v.px_value_val = NULL;
				r.v.px_value_len = 0;
				xdr_free((xdrproc_t)xdr_px_prepare_reply, (char *)&r);
				px_blob_unref(best);
				*chosen = b;
				*decided_by = p;
				return ROUND_DONE;
			}
			refusals++;
		}
		xdr_free((xdrproc_t)xdr_px_prepare_reply, (char *)&r);
		if (r.status == PX_ST_FORGOTTEN) {
			px_blob_unref(best);
			return ROUND_DONE;
		}
	}
	/* R2: a round counts nothing after its deadline (every vote counted
	 * arrived before now); R5: nor after a fence moved */
	if (promises < maj || dkv_now_ms() > pr->deadline || !fence_holds(px, pr)) {
		px_blob_unref(best);
		return ROUND_FAILED;
	}
	/* our own promise counts once durable (written while our PREPAREs were out) */
	if (!px_sync(px, px_last_lsn_own(px, pr))) {
		px_blob_unref(best);
		return ROUND_DONE;
	}
	*chosen = best ? best : px_blob_ref(pr->v);
	*ok = true;
	return ROUND_DONE;
}

/* Phase 2. */
static round_result accept_phase(paxos *px, px_prop *pr, uint64_t n, const int *order,
                                 px_blob *v, bool *ok)
{
	int maj = px->npeers / 2 + 1, accepts = 0, refusals = 0;
	*ok = false;
	for (int k = 0; k < px->npeers && accepts < maj && refusals <= px->npeers - maj; k++) {
		int p = order[k];
		if (p == px->me) {
			pthread_mutex_lock(&px->mu);
			px_inst *in = px_get_locked(px, pr->seq);
			if (!in || px->dead || in->v_d) {
				pthread_mutex_unlock(&px->mu);
				return ROUND_DONE;
			}
			uint64_t np = 0;
			if (!px_votes_at_locked(px, pr->seq)) {
				refusals++;
			} else if (px_acceptor_accept(in, n, v, &np) == PX_ST_OK) {
				accepts++;
				pr->own_lsn = px_log_locked(px, 'A', pr->seq, n, v);
			} else {
				refusals++;
				if (np > in->n_seen) in->n_seen = np;
			}
			pthread_mutex_unlock(&px->mu);
			continue;
		}
		px_accept_args a;
		px_accept_reply r;
		memset(&a, 0, sizeof a);
		memset(&r, 0, sizeof r);
		a.seq = pr->seq;
		a.n = n;
		a.v.px_value_len = (u_int)v->len;
		a.v.px_value_val = v->data;
		pthread_mutex_lock(&px->mu);
		px_hdr_fill_locked(px, &a.h, p, pr->dv, pr->di);
		/* our own vote is written while our messages are out */
		if (pr->own_lsn) px_sync_start_locked(px, px_last_lsn_locked(px));
		pthread_mutex_unlock(&px->mu);
		int rc = dkv_rpc_call(px->pool, px->peers[p], PX_PROG, PX_VERS, PX_ACCEPT,
		                      (xdrproc_t)xdr_px_accept_args, &a,
		                      (xdrproc_t)xdr_px_accept_reply, &r, PX_CALL_TIMEOUT_MS);
		pthread_mutex_lock(&px->mu);
		note_call(px, p, rc == DKV_OK);
		if (rc != DKV_OK) {
			pthread_mutex_unlock(&px->mu);
			refusals++;
			if (rc == DKV_ERR_KILLED) break;
			continue;
		}
		px_rhdr_note_locked(px, p, &r.h);
		if (r.status == PX_ST_OK && (!pr->pinc[p] || pr->pinc[p] == r.h.inc) &&
		    !px_fenced_locked(px, p, r.h.inc)) {
			accepts++;
		} else {
			/* a refusal; or the peer restarted since its promise in phase 1:
			 * that promise is gone, its accept must not count */
			if (r.status == PX_ST_NOVOTE) px->novote_seen++;
			refusals++;
			px_inst *in = px_find_locked(px, pr->seq);
			if (r.status == PX_ST_REJECT && in && r.n > in->n_seen) in->n_seen = r.n;
		}
		pthread_mutex_unlock(&px->mu);
		xdr_free((xdrproc_t)xdr_px_accept_reply, (char *)&r);
		if (r.status == PX_ST_FORGOTTEN) return ROUND_DONE;
	}
	/* the count: under px->mu, so it is before or after any INFO answer */
	if (accepts < maj || dkv_now_ms() > pr->deadline || !fence_holds(px, pr)) return ROUND_FAILED;
	if (!px_sync(px, px_last_lsn_own(px, pr))) return ROUND_DONE;
	*ok = true;
	return ROUND_DONE;
}

/* Phase 3: decide here, then tell every other peer (but `skip`) once. */
static void decide(paxos *px, px_prop *pr, px_blob *v, int skip)
{
	learn(px, pr->seq, v);
	for (int p = 0; p < px->npeers; p++) {
		if (p == px->me || p == skip) continue;
		px_decided_args a;
		px_decided_reply r;
		memset(&a, 0, sizeof a);
		memset(&r, 0, sizeof r);
		a.seq = pr->seq;
		a.v.px_value_len = (u_int)v->len;
		a.v.px_value_val = v->data;
		pthread_mutex_lock(&px->mu);
		bool dead = px->dead;
		px_hdr_fill_locked(px, &a.h, p, pr->dv, pr->di);
		pthread_mutex_unlock(&px->mu);
		if (dead) return;
		int rc = dkv_rpc_call(px->pool, px->peers[p], PX_PROG, PX_VERS, PX_DECIDED,
		                      (xdrproc_t)xdr_px_decided_args, &a,
		                      (xdrproc_t)xdr_px_decided_reply, &r, PX_CALL_TIMEOUT_MS);
		pthread_mutex_lock(&px->mu);
		note_call(px, p, rc == DKV_OK);
		if (rc == DKV_OK) px_rhdr_note_locked(px, p, &r.h);
		pthread_mutex_unlock(&px->mu);
		if (rc == DKV_OK) xdr_free((xdrproc_t)xdr_px_decided_reply, (char *)&r);
	}
}

/* Wait (px->mu held) for up to ms, or until seq is decided/forgotten or kill. */
static void backoff_wait_locked(paxos *px, int seq, unsigned ms)
{
	uint64_t deadline = dkv_now_ms() + ms;
	for (;;) {
		if (px->dead || seq < px->min_seq) return;
		px_inst *in = px_find_locked(px, seq);
		if (in && in->v_d) return;
		if (!dkv_cond_wait_until(&px->cv, &px->mu, deadline)) return;
	}
}

/* May instance `in` skip phase 1 under our lease? (mu held) */
static bool lease_covers_locked(paxos *px, const px_inst *in)
{
	if (!px->lead_n) return false;
	/* R2: a lease is a phase 1; rounds under it end PX_ROUND_MAX_MS after
	 * it began. Leave a fast round time to finish. */
	if (dkv_now_ms() + PX_ROUND_MAX_MS / 4 > px->lead_t0 + PX_ROUND_MAX_MS) {
		px->lead_n = 0;
		return false;
	}
	if (px->lead_gen != px->fence_gen) { /* R5: it may rest on an old incarnation's promise */
		px->lead_n = 0;
		return false;
	}
	if (px->floor_n != px->lead_n) { /* a higher range promise was given here */
		px->lead_n = 0;
		return false;
	}
	if (in->seq <= px->lead_from || in->seq <= px->dones[px->me]) return false;
	if (in->n_a || in->n_p > px->lead_n) return false;
	for (int i = 0; i < px->nunsafe; i++)
		if (px->unsafe[i] == in->seq) return false;
	return true;
}

/* A range round got a majority of range promises: take the lease (mu held).
 * Ownership of pr->busy passes to px. */
static void take_lease_locked(paxos *px, px_prop *pr, uint64_t n, uint64_t t0)
{
	if (px->floor_n != n || n <= px->lead_n) return; /* superseded meanwhile */
	free(px->unsafe);
	px->unsafe = pr->busy;
	px->nunsafe = pr->nbusy;
	pr->busy = NULL;
	pr->nbusy = pr->capbusy = 0;
	px->lead_n = n;
	px->lead_from = pr->seq;
	px->lead_t0 = t0;
	px->lead_gen = pr->gen;
}

/*
 * Forwarding: a peer that does not hold the stable-proposer range hands the
 * instance to the peer that does (the one our acceptor last gave a range
 * promise to), which proposes it under its lease; we wait for its DECIDED up
 * to PX_FORWARD_WAIT_MS, then run our own rounds. The FORWARD call itself
 * returns at once (the holder only queues the job, handle_forward): the wait
 * is local, on px->cv, so no call stays open across a partition change made
 * after it started, and the decision reaches us only as a DECIDED message or
 * a PREPARE reply, both subject to the partition. A refusal (or a failed
 * call) marks that holder's range as useless for forwarding until another
 * range promise is given here. Returns true if seq got decided meanwhile.
 * mu held on entry and exit.
 */
static bool forward_locked(paxos *px, px_prop *pr)
{
	const uint64_t mask = (1u << PX_ROUND_SHIFT) - 1;
	uint64_t fn = px->floor_n;
	if (px->lead_n || px->npeers == 1) return false;
	/* the holder: the last peer whose messages said it leads, else the one
	 * our acceptor last gave a range promise to */
	int to = px->hint;
	if (to < 0 || to == px->me) {
		if (!fn || fn == px->fwd_bad_n) return false;
		to = (int)(fn & mask);
	}
	if (to == px->me || to >= px->npeers) return false;
	px_forward_args a;
	px_forward_reply r;
	memset(&a, 0, sizeof a);
	memset(&r, 0, sizeof r);
	a.seq = pr->seq;
	a.v.px_value_len = (u_int)pr->v->len;
	a.v.px_value_val = pr->v->data;
	px_hdr_fill_locked(px, &a.h, to, pr->dv, pr->di);
	px->forwards_sent++;
	pthread_mutex_unlock(&px->mu);
	int rc = dkv_rpc_call(px->pool, px->peers[to], PX_PROG, PX_VERS, PX_FORWARD,
	                      (xdrproc_t)xdr_px_forward_args, &a, (xdrproc_t)xdr_px_forward_reply, &r,
	                      PX_CALL_TIMEOUT_MS);
	pthread_mutex_lock(&px->mu);
	note_call(px, to, rc == DKV_OK);
	bool taken = false;
	if (rc == DKV_OK) {
		px_rhdr_note_locked(px, to, &r.h);
		taken = r.taken;
		xdr_free((xdrproc_t)xdr_px_forward_reply, (char *)&r);
	}
	if (!taken) {
		px->fwd_bad_n = fn;
		if (px->hint == to) px->hint = -1;
		return false;
	}
	uint64_t until = dkv_now_ms() + PX_FORWARD_WAIT_MS;
	for (;;) {
		if (px->dead || pr->seq < px->min_seq) return true;
		px_inst *in = px_find_locked(px, pr->seq);
		if (in && in->v_d) return true;
		if (!dkv_cond_wait_until(&px->cv, &px->mu, until)) break;
	}
	px->fwd_bad_n = fn; /* too slow: propose ourselves, and next time too */
	if (px->hint == to) px->hint = -1;
	return false;
}

/*
 * Run one job to its end (decided here, forgotten, or kill). px->mu held on
 * entry and exit. Each round is one of:
 *   fast   under our lease: ACCEPT(lead_n) at once (one round trip); on any
 *          refusal the lease is dropped and a full round follows at once;
 *   range  at the log's tip: a full round whose PREPARE also asks for the
 *          range promise; a majority of them gives us the lease;
 *   plain  a full round for this instance only (holes, older instances).
 */
static void propose_locked(paxos *px, px_prop *pr, int *order)
{
	unsigned cap = 1;
	bool tried_fast = false;
	if (forward_locked(px, pr)) goto out;
	for (;;) {
		px_inst *in = px_get_locked(px, pr->seq);
		if (px->dead || !in || in->v_d) break;
		if (!px->voting) { /* R1: no round of our own until rejoined */
			pthread_cond_wait(&px->cv, &px->mu);
			continue;
		}
		if (in->n_seen < px->round_floor) in->n_seen = px->round_floor; /* R3 */
		bool fast = !tried_fast && lease_covers_locked(px, in);
		/* range rounds at the tip, or to renew our own expired lease (our
		 * acceptor's latest range promise is ours); not elsewhere, so that
		 * forwarders falling back do not steal the range from each other */
		bool own_range = px->floor_n &&
		                 (int)(px->floor_n & ((1u << PX_ROUND_SHIFT) - 1)) == px->me;
		bool range = !fast && pr->seq > px->dones[px->me] &&
		             (pr->seq >= px->max_seq || (own_range && px->lead_n == 0));
		uint64_t n = fast ? px->lead_n : px_next_number(in, px->me);
		uint64_t t0 = dkv_now_ms();
		pr->deadline = (fast ? px->lead_t0 : t0) + PX_ROUND_MAX_MS;
		pr->gen = fast ? px->lead_gen : px->fence_gen;
		memset(pr->pinc, 0, (size_t)px->npeers * sizeof *pr->pinc);
		tried_fast = true;
		peer_order(px, pr->seq, order);
		pthread_mutex_unlock(&px->mu);

		px_blob *v = NULL;
		round_result rr;
		if (fast) {
			bool accepted = false;
			v = px_blob_ref(pr->v);
			rr = accept_phase(px, pr, n, order, v, &accepted);
			if (rr == ROUND_DONE && accepted) decide(px, pr, v, -1);
		} else {
			bool ok = false;
			int decided_by = -1;
			pr->range_all = range;
			pr->nbusy = 0;
			rr = prepare_phase(px, pr, n, range, order, &v, &ok, &decided_by);
			if (rr == ROUND_DONE && decided_by >= 0) {
				decide(px, pr, v, decided_by);
			} else if (rr == ROUND_DONE && ok) {
				if (range && pr->range_all) {
					pthread_mutex_lock(&px->mu);
					take_lease_locked(px, pr, n, t0);
					pthread_mutex_unlock(&px->mu);
				}
				bool accepted = false;
				rr = accept_phase(px, pr, n, order, v, &accepted);
				if (rr == ROUND_DONE && accepted) decide(px, pr, v, -1);
			}
		}
		px_blob_unref(v);

		pthread_mutex_lock(&px->mu);
		if (rr == ROUND_DONE) break;
		if (fast) {
			if (px->lead_n == n) px->lead_n = 0;
			continue; /* straight to a full round */
		}
		unsigned ms = 1 + (unsigned)dkv_rng_below(&px->rng, cap);
		if (cap < PX_BACKOFF_MAX_MS) cap = cap * 2 > PX_BACKOFF_MAX_MS ? PX_BACKOFF_MAX_MS : cap * 2;
		backoff_wait_locked(px, pr->seq, ms);
	}
out:;
	px_inst *in = px_find_locked(px, pr->seq);
	if (in) in->proposing = false;
}

void *px_worker_main(void *arg)
{
	px_worker *w = arg;
	paxos *px = w->px;
	int *order = dkv_malloc((size_t)px->npeers * sizeof *order);
	int *dv = dkv_malloc((size_t)px->npeers * sizeof *dv);
	uint64_t *di = dkv_malloc((size_t)px->npeers * sizeof *di);
	uint64_t *pinc = dkv_malloc((size_t)px->npeers * sizeof *pinc);

	pthread_mutex_lock(&px->mu);
	while (!px->dead) {
		px_job *j = px->jobs;
		if (j && order && dv && di && pinc) {
			px->jobs = j->next;
			if (!px->jobs) px->jobs_tail = NULL;
			px->njobs--;
			px_prop pr = {.seq = j->seq, .v = j->v, .dv = dv, .di = di, .pinc = pinc};
			propose_locked(px, &pr, order);
			free(pr.busy);
			px_blob_unref(j->v);
			free(j);
			continue;
		}
		if (j) break; /* ENOMEM: leave the job to another worker */
		px->nidle++;
		bool woken = dkv_cond_wait_ms(&px->work_cv, &px->mu, PX_WORKER_IDLE_MS);
		px->nidle--;
		if (!woken && !px->jobs && px->nidle >= PX_WORKERS_KEEP) break;
	}
	w->finished = true;
	pthread_mutex_unlock(&px->mu);
	free(order);
	free(dv);
	free(di);
	free(pinc);
	return NULL;
}
