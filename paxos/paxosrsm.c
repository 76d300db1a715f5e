/*
 * paxos/paxosrsm.c — a replicated log of opaque ops on top of Paxos.
 *
 * One applier thread per replica does everything that touches the log:
 *   - applies decided instances in order (next_apply), calling `apply` for each
 *     op of the batch with no lock held, then paxos_done(seq);
 *   - proposes: ops submitted by paxosrsm_add_op wait in a queue; when no batch
 *     of ours is in flight, the queue (up to RSM_BATCH_OPS ops / RSM_BATCH_BYTES)
 *     becomes one batch, proposed at a fresh seq (above everything known). If
 *     the seq is decided with another value, the batch's ops go back to the
 *     front of the queue and are proposed again at a later seq; since a batch
 *     is only re-proposed after its seq is known lost, an op is agreed at most
 *     once. Batching is what makes 32 concurrent callers cheap;
 *   - fills holes: when next_apply stays pending for RSM_HOLE_MS while later
 *     instances exist, it proposes no-ops there (a window of them at once, and
 *     without further delay up to the log's end as it was when the timer
 *     fired), learning the real value if there is one (a prepare to a peer
 *     that knows answers "decided"). Instances newer than that get the timer
 *     again, so a replica never races other replicas' fresh proposals.
 * It sleeps on rsm->cv: paxos calls decide_hook() for each decision it learns,
 * add_op signals new ops, kill signals the end; the only timed wait is the hole
 * timer. add_op callers sleep on applied_cv until their op is applied.
 * Value format: u8 kind (0 no-op, 1 batch), then for a batch: u64 replica id,
 * u64 batch id, u32 count, count × (u32 len, bytes), little-endian.
 * Lock order: rsm->mu before px->mu (paxos calls the hook with no lock held).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/paxosrsm.h"
#include "paxos_internal.h"

#define RSM_HOLE_MS 20u
#define RSM_CATCHUP_WINDOW 16
#define RSM_BATCH_OPS 256
#define RSM_BATCH_BYTES (1u << 20)

enum { KIND_NOOP = 0, KIND_BATCH = 1 };
#define HDR_LEN (1 + 8 + 8 + 4)

typedef enum { OP_QUEUED, OP_INFLIGHT, OP_APPLIED } op_state;

typedef struct rsm_op {
	void *buf;
	size_t len;
	op_state state;
	bool waiter_gone;   /* add_op returned: whoever unlinks the op frees it */
	struct rsm_op *next;
} rsm_op;

struct paxosrsm {
	pthread_mutex_t mu;        /* guards every field down to `callers` */
	pthread_cond_t cv;         /* the applier's wake-up: kick, kill */
	pthread_cond_t applied_cv; /* add_op waiters; kill waits for callers == 0 */
	bool dead;
	bool kick;                 /* something happened since the applier looked */
	int next_apply;            /* first seq not applied yet */
	rsm_op *q_head, *q_tail;   /* ops waiting to be proposed */
	rsm_op *inflight;          /* ops of our batch in flight */
	int inflight_seq;          /* its seq, -1 when none */
	uint64_t inflight_bid;
	uint64_t next_bid;
	int next_seq;              /* our next proposal goes at or above this */
	int noop_upto;             /* no-ops started for every seq below this */
	int catchup_to;            /* catching up through this seq (pmax when the
	                            * hole timer fired), -1 */
	int hole_seq;              /* next_apply when the hole timer started, -1 */
	uint64_t hole_since;       /* when it started (ms) */
	int callers;               /* add_op calls inside */

	/* Immutable after make. */
	paxos *px;
	uint64_t rid;              /* this replica's id in batch headers */
	paxosrsm_apply_fn apply;
	void *ctx;
	pthread_t thr;
	bool thr_started;
	pthread_mutex_t kill_mu;   /* serialises kill; guards `killed` */
	bool killed;
};

/* ---------------------------------------------------------------- encoding */

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
	return v;
}
static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Is the decided value `v` our batch `bid`? */
static bool is_our_batch(const paxosrsm *rsm, const unsigned char *v, size_t len, uint64_t bid)
{
	return len >= HDR_LEN && v[0] == KIND_BATCH && get_u64(v + 1) == rsm->rid &&
	       get_u64(v + 9) == bid;
}

/* ---------------------------------------------------------------- op lists */

static void free_op(rsm_op *op)
{
	free(op->buf);
	free(op);
}

/* Our batch lost its seq: its ops go back to the queue front (mu held). */
static void requeue_inflight_locked(paxosrsm *rsm)
{
	rsm_op *keep = NULL, *last = NULL;
	for (rsm_op *op = rsm->inflight, *nx; op; op = nx) {
		nx = op->next;
		if (op->waiter_gone) {
			free_op(op);
			continue;
		}
		op->state = OP_QUEUED;
		op->next = NULL;
		if (last)
			last->next = op;
		else
			keep = op;
		last = op;
	}
	if (keep) {
		last->next = rsm->q_head;
		if (!rsm->q_head) rsm->q_tail = last;
		rsm->q_head = keep;
	}
	rsm->inflight = NULL;
	rsm->inflight_seq = -1;
}

/* Our batch was applied (mu held). */
static void complete_inflight_locked(paxosrsm *rsm)
{
	for (rsm_op *op = rsm->inflight, *nx; op; op = nx) {
		nx = op->next;
		op->next = NULL;
		if (op->waiter_gone)
			free_op(op);
		else
			op->state = OP_APPLIED;
	}
	rsm->inflight = NULL;
	rsm->inflight_seq = -1;
	pthread_cond_broadcast(&rsm->applied_cv);
}

/* Take a batch off the queue and encode it (mu held). NULL on ENOMEM. */
static unsigned char *take_batch_locked(paxosrsm *rsm, size_t *out_len)
{
	size_t total = HDR_LEN;
	uint32_t count = 0;
	rsm_op *op = rsm->q_head;
	while (op && count < RSM_BATCH_OPS && (count == 0 || total + 4 + op->len <= RSM_BATCH_BYTES)) {
		total += 4 + op->len;
		count++;
		op = op->next;
	}
	unsigned char *v = dkv_malloc(total);
	if (!v) return NULL;
	uint64_t bid = rsm->next_bid++;
	v[0] = KIND_BATCH;
	put_u64(v + 1, rsm->rid);
	put_u64(v + 9, bid);
	put_u32(v + 17, count);
	size_t off = HDR_LEN;
	rsm_op **tail = &rsm->inflight;
	for (uint32_t i = 0; i < count; i++) {
		op = rsm->q_head;
		rsm->q_head = op->next;
		put_u32(v + off, (uint32_t)op->len);
		memcpy(v + off + 4, op->buf, op->len);
		off += 4 + op->len;
		op->state = OP_INFLIGHT;
		op->next = NULL;
		*tail = op;
		tail = &op->next;
	}
	if (!rsm->q_head) rsm->q_tail = NULL;
	rsm->inflight_bid = bid;
	*out_len = total;
	return v;
}

/* ---------------------------------------------------------------- applier */

static void apply_value(paxosrsm *rsm, int seq, const unsigned char *v, size_t len)
{
	if (len < 1 || v[0] == KIND_NOOP) return;
	if (v[0] != KIND_BATCH || len < HDR_LEN) {
		DKV_WARN("paxosrsm: seq %d: malformed log entry (%zu bytes)", seq, len);
		return;
	}
	uint32_t count = get_u32(v + 17);
	size_t off = HDR_LEN;
	for (uint32_t i = 0; i < count; i++) {
		if (len - off < 4) break;
		uint32_t n = get_u32(v + off);
		if (len - off - 4 < n) break;
		rsm->apply(rsm->ctx, v + off + 4, n);
		off += 4 + n;
	}
}

static void decide_hook(void *ctx, int seq)
{
	paxosrsm *rsm = ctx;
	(void)seq;
	pthread_mutex_lock(&rsm->mu);
	rsm->kick = true;
	pthread_cond_signal(&rsm->cv);
	pthread_mutex_unlock(&rsm->mu);
}

/* Start no-ops at every seq in [from, to] (mu held). Paxos ignores the seqs
 * it already proposes for here (our batch's included) or knows decided. */
static void start_noops_locked(paxosrsm *rsm, int from, int to)
{
	static const unsigned char noop = KIND_NOOP;
	for (int s = from; s <= to; s++) paxos_start(rsm->px, s, &noop, 1);
	if (to + 1 > rsm->noop_upto) rsm->noop_upto = to + 1;
}

/* One look at the log; returns true if it made progress (look again at once),
 * else sets *wait_ms (0: until kicked). mu held on entry and exit. */
static bool step_locked(paxosrsm *rsm, unsigned *wait_ms)
{
	int seq = rsm->next_apply;
	void *val = NULL;
	size_t len = 0;
	paxos_fate f = paxos_status(rsm->px, seq, &val, &len);
	if (f == PAXOS_DECIDED && val) {
		pthread_mutex_unlock(&rsm->mu);
		apply_value(rsm, seq, val, len);
		paxos_done(rsm->px, seq);
		pthread_mutex_lock(&rsm->mu);
		rsm->next_apply = seq + 1;
		if (rsm->inflight_seq == seq) {
			if (is_our_batch(rsm, val, len, rsm->inflight_bid))
				complete_inflight_locked(rsm);
			else
				requeue_inflight_locked(rsm);
		}
		free(val);
		return true;
	}
	free(val);
	if (f == PAXOS_DECIDED) return false; /* ENOMEM copying: retry later */
	if (f == PAXOS_FORGOTTEN) {
		/* Every peer is done with it, us included: cannot happen unless the
		 * log was trimmed by someone else; skip ahead rather than spin. */
		int m = paxos_min(rsm->px);
		DKV_WARN("paxosrsm: seq %d forgotten before applied; skipping to %d", seq, m);
		rsm->next_apply = m > seq ? m : seq + 1;
		return true;
	}

	/* Our batch lost its seq before we got there? Propose it again now. */
	if (rsm->inflight_seq > seq) {
		f = paxos_status(rsm->px, rsm->inflight_seq, &val, &len);
		if (f == PAXOS_DECIDED && val && !is_our_batch(rsm, val, len, rsm->inflight_bid)) {
			free(val);
			requeue_inflight_locked(rsm);
			return true;
		}
		free(val);
	}

	int pmax = paxos_max(rsm->px);
	if (rsm->inflight_seq < 0 && rsm->q_head) {
		size_t vlen = 0;
		unsigned char *v = take_batch_locked(rsm, &vlen);
		if (v) {
			int s = rsm->next_seq;
			if (s < pmax + 1) s = pmax + 1;
			if (s < rsm->next_apply) s = rsm->next_apply;
			rsm->inflight_seq = s;
			rsm->next_seq = s + 1;
			paxos_start(rsm->px, s, v, vlen);
			free(v);
			return true;
		}
		*wait_ms = RSM_HOLE_MS; /* ENOMEM: try again later */
		return false;
	}

	/* Holes: next_apply pending while later instances exist. */
	if (seq <= pmax) {
		uint64_t now = dkv_now_ms();
		if (rsm->hole_seq != seq) {
			rsm->hole_seq = seq;
			rsm->hole_since = now;
		}
		int hi = seq + RSM_CATCHUP_WINDOW - 1;
		if (rsm->catchup_to >= seq) {
			/* catching up to where the log was when the hole was found:
			 * keep the window full without waiting */
			int from = rsm->noop_upto > seq ? rsm->noop_upto : seq;
			int to = rsm->catchup_to < hi ? rsm->catchup_to : hi;
			if (from <= to) start_noops_locked(rsm, from, to);
		}
		if (now - rsm->hole_since >= RSM_HOLE_MS) {
			/* from seq again: a start that failed (ENOMEM) is retried */
			rsm->catchup_to = pmax;
			start_noops_locked(rsm, seq, pmax < hi ? pmax : hi);
			rsm->hole_since = now; /* re-arm: paxos retries by itself meanwhile */
		}
		uint64_t left = rsm->hole_since + RSM_HOLE_MS > now ? rsm->hole_since + RSM_HOLE_MS - now : 1;
		*wait_ms = (unsigned)left;
		return false;
	}
	*wait_ms = 0;
	return false;
}

static void *applier_main(void *arg)
{
	paxosrsm *rsm = arg;
	pthread_mutex_lock(&rsm->mu);
	while (!rsm->dead) {
		rsm->kick = false;
		unsigned wait_ms = 0;
		if (step_locked(rsm, &wait_ms)) continue;
		if (rsm->kick || rsm->dead) continue;
		if (wait_ms)
			dkv_cond_wait_ms(&rsm->cv, &rsm->mu, wait_ms);
		else
			pthread_cond_wait(&rsm->cv, &rsm->mu);
	}
	pthread_mutex_unlock(&rsm->mu);
	return NULL;
}

/* ---------------------------------------------------------------- API */

static void rsm_release(paxosrsm *rsm)
{
	rsm_op *lists[2] = {rsm->q_head, rsm->inflight};
	for (int i = 0; i < 2; i++) {
		for (rsm_op *op = lists[i], *nx; op; op = nx) {
			nx = op->next;
			free_op(op);
		}
	}
	paxos_free(rsm->px);
	pthread_cond_destroy(&rsm->cv);
	pthread_cond_destroy(&rsm->applied_cv);
	pthread_mutex_destroy(&rsm->mu);
	pthread_mutex_destroy(&rsm->kill_mu);
	free(rsm);
}

paxosrsm *paxosrsm_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                        paxosrsm_apply_fn apply, void *ctx)
{
	dkv_lib_init();
	if (!apply) {
		errno = EINVAL;
		return NULL;
	}
	paxosrsm *rsm = dkv_calloc(1, sizeof *rsm);
	if (!rsm) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&rsm->mu, NULL);
	pthread_mutex_init(&rsm->kill_mu, NULL);
	int e1 = dkv_cond_init(&rsm->cv);
	int e2 = dkv_cond_init(&rsm->applied_cv);
	rsm->inflight_seq = -1;
	rsm->hole_seq = -1;
	rsm->catchup_to = -1;
	rsm->rid = dkv_random_seed();
	rsm->next_bid = 1;
	rsm->apply = apply;
	rsm->ctx = ctx;
	if (e1 || e2) {
		if (!e1) pthread_cond_destroy(&rsm->cv);
		if (!e2) pthread_cond_destroy(&rsm->applied_cv);
		pthread_mutex_destroy(&rsm->mu);
		pthread_mutex_destroy(&rsm->kill_mu);
		free(rsm);
		errno = e1 ? e1 : e2;
		return NULL;
	}
	rsm->px = px_make(peers, npeers, me, rpcs, decide_hook, rsm);
	if (!rsm->px) {
		int err = errno;
		rsm_release(rsm);
		errno = err;
		return NULL;
	}
	int err = pthread_create(&rsm->thr, NULL, applier_main, rsm);
	if (err) {
		rsm_release(rsm);
		errno = err;
		return NULL;
	}
	rsm->thr_started = true;
	return rsm;
}

int paxosrsm_add_op_timeout(paxosrsm *rsm, const void *op, size_t len, unsigned timeout_ms)
{
	if (!rsm || (len && !op) || len > UINT32_MAX - HDR_LEN - 4) return DKV_ERR_INVAL;
	rsm_op *o = dkv_calloc(1, sizeof *o);
	void *buf = dkv_malloc(len ? len : 1);
	if (!o || !buf) {
		free(o);
		free(buf);
		return DKV_ERR_NOMEM;
	}
	if (len) memcpy(buf, op, len);
	o->buf = buf;
	o->len = len;
	o->state = OP_QUEUED;

	pthread_mutex_lock(&rsm->mu);
	if (rsm->dead) {
		pthread_mutex_unlock(&rsm->mu);
		free_op(o);
		return DKV_ERR_KILLED;
	}
	rsm->callers++;
	if (rsm->q_tail)
		rsm->q_tail->next = o;
	else
		rsm->q_head = o;
	rsm->q_tail = o;
	rsm->kick = true;
	pthread_cond_signal(&rsm->cv);

	uint64_t deadline = timeout_ms ? dkv_now_ms() + timeout_ms : 0;
	bool timed_out = false;
	while (o->state != OP_APPLIED && !rsm->dead && !timed_out) {
		if (deadline)
			timed_out = !dkv_cond_wait_until(&rsm->applied_cv, &rsm->mu, deadline) &&
			            dkv_now_ms() >= deadline;
		else
			pthread_cond_wait(&rsm->applied_cv, &rsm->mu);
	}
	int rc;
	if (o->state == OP_APPLIED) {
		rc = DKV_OK;
		free_op(o);
	} else {
		rc = rsm->dead ? DKV_ERR_KILLED : DKV_ERR_TIMEOUT;
		if (o->state == OP_QUEUED) {
			/* unlink from the queue: nobody proposed it */
			rsm_op **pp = &rsm->q_head, *prev = NULL;
			while (*pp && *pp != o) {
				prev = *pp;
				pp = &(*pp)->next;
			}
			if (*pp) {
				*pp = o->next;
				if (rsm->q_tail == o) rsm->q_tail = prev;
			}
			free_op(o);
		} else {
			o->waiter_gone = true; /* in flight: freed when its fate is known */
		}
	}
	if (--rsm->callers == 0 && rsm->dead) pthread_cond_broadcast(&rsm->applied_cv);
	pthread_mutex_unlock(&rsm->mu);
	return rc;
}

int paxosrsm_add_op(paxosrsm *rsm, const void *op, size_t len)
{
	return paxosrsm_add_op_timeout(rsm, op, len, 0);
}

paxos *paxosrsm_paxos(paxosrsm *rsm)
{
	return rsm ? rsm->px : NULL;
}

void paxosrsm_kill(paxosrsm *rsm)
{
	if (!rsm) return;
	pthread_mutex_lock(&rsm->kill_mu);
	if (rsm->killed) {
		pthread_mutex_unlock(&rsm->kill_mu);
		return;
	}
	pthread_mutex_lock(&rsm->mu);
	rsm->dead = true;
	pthread_cond_broadcast(&rsm->cv);
	pthread_cond_broadcast(&rsm->applied_cv);
	pthread_mutex_unlock(&rsm->mu);
	paxos_kill(rsm->px); /* no decide_hook call after this */
	if (rsm->thr_started) pthread_join(rsm->thr, NULL);
	pthread_mutex_lock(&rsm->mu);
	while (rsm->callers > 0) pthread_cond_wait(&rsm->applied_cv, &rsm->mu);
	pthread_mutex_unlock(&rsm->mu);
	rsm->killed = true;
	pthread_mutex_unlock(&rsm->kill_mu);
}

void paxosrsm_free(paxosrsm *rsm)
{
	if (!rsm) return;
	paxosrsm_kill(rsm);
	rsm_release(rsm);
}

void paxosrsm_set_unreliable(paxosrsm *rsm, bool on)
{
	if (rsm) paxos_set_unreliable(rsm->px, on);
}
