/*
 * paxos/paxosrsm.c — the replication engine: a state machine on a Paxos log,
 * with results, client sessions, snapshots and catch-up.
 *
 * One applier thread per replica does everything that touches the log:
 *   - applies decided instances in order (next_apply): each entry of a batch
 *     goes to sm->apply with no lock held; its result goes back to the submit
 *     call that proposed it (on this replica), then paxos_done(seq);
 *   - proposes (the one batcher): submitted ops wait in a queue; when no batch
 *     of ours is in flight, the queue (up to RSM_BATCH_OPS ops / RSM_BATCH_BYTES)
 *     becomes one batch at a fresh seq (above everything known). If the seq is
 *     decided with another value, the batch's ops go back to the queue front
 *     and are proposed again later; a batch is only re-proposed once its seq is
 *     known lost, so an op is agreed at most once per submit;
 *   - fills holes: when next_apply stays pending for RSM_HOLE_MS while later
 *     instances exist, it proposes no-ops there (a window at once), learning
 *     the real value if there is one;
 *   - makes snapshots on demand (a peer's RSM_SNAPSHOT handler asks for one)
 *     and catches up (below).
 *
 * Sessions (at-most-once). An entry is PLAIN (no dedup), SESSION (session id,
 * seq) or OPEN. An OPEN applied at log position (seq, index i) creates the
 * session id (seq << 20) | (i + 1): ids grow in log order, every replica
 * assigns the same one, and no clock is involved anywhere. The table is
 * dkv_sessions (src/session.c) with cap PAXOSRSM_SESSIONS_MAX: opening beyond
 * it evicts the least recently used session and raises the horizon. A SESSION
 * entry: NEW (known, higher seq) → apply and record the result; DUP → the
 * stored result again, not applied; STALE, EXPIRED or unknown → not applied,
 * DKV_ERR_EXPIRED. The table is part of every snapshot.
 *
 * Compaction rule (memory mode). A replica calls paxos_done(seq) as soon as it
 * has applied seq; paxos forgets an instance once every peer is Done with it.
 * Nothing is lost by that: a snapshot of the live state can be made at any
 * time on demand, and it covers every forgotten instance. With a directory
 * (paxos/rsm_disk.c: the snapshot file, its policy, replay, the Done gossip)
 * Done goes only as far as a durable snapshot covers: paxos_done(pos - 1)
 * once the snapshot at pos is on disk, so the Paxos log in the same
 * directory holds every decided op after it.
 *
 * Catch-up rule. A replica never skips an instance. When next_apply is
 * forgotten here (FORGOTTEN: below paxos_min, e.g. a replica that started
 * empty and learnt its old Done from its peers), or stays a hole for
 * RSM_STUCK_MS while some peer is known Done with it (the peers may have
 * forgotten it; no-ops cannot learn it), or at a start with opts->restart, the
 * applier asks its peers in turn for a snapshot covering at least next_apply
 * (RSM_SNAPSHOT, paxos/rsm_prot.x, on the Paxos peer's RPC server). A peer
 * that has applied that far makes one from its live state at its own
 * next_apply; the replica restores the state machine and the session table,
 * sets next_apply to the snapshot's position and continues from there. A
 * snapshot is always a state of the one agreed log, so restoring it is safe
 * whenever its position is above next_apply. Our own batch in flight below
 * that position has an unknown fate: its session ops are proposed again (the
 * session table answers DUP if they were applied), its plain ops complete
 * with DKV_ERR_TIMEOUT ("may have been applied"). Waiting on a forgotten seq
 * (the old wedge: inflight_seq below next_apply) cannot happen: a batch whose
 * seq is below next_apply is resolved at once.
 *
 * Failure rule. If sm->apply, sm->restore (malformed), or recording a result
 * fails, the replica stops itself (error log line, as paxosrsm_kill: its
 * Paxos peer stops too), so it never diverges from its peers. A replica made
 * with paxosrsm_make (no snapshot function) that would need a snapshot stops
 * the same way.
 *
 * Value format (little-endian): u8 kind (0 no-op, 1 batch); a batch: u64
 * replica id, u64 batch id, u32 count, count × (u8 type, u64 session, u64 seq,
 * u32 len, bytes).
 * Lock order: rsm->mu before px->mu (paxos calls the hook with no lock held).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/paxosrsm.h"
#include "paxos_internal.h"
#include "rsm_disk.h"
#include "rsm_ident.h"
#include "rsm_prot.h"
#include "session.h"

#define RSM_HOLE_MS 20u
#define RSM_STUCK_MS 250u
#define RSM_CATCHUP_WINDOW 16
#define RSM_BATCH_OPS 256
#define RSM_BATCH_BYTES (1u << 20)
#define RSM_SNAP_CALL_MS 2000u
#define RSM_SNAP_WAIT_MS 1500u
#define RSM_SESSION_SHIFT 20

enum { KIND_NOOP = 0, KIND_BATCH = 1 };
enum { ENT_PLAIN = 0, ENT_SESSION = 1, ENT_OPEN = 2 };
#define HDR_LEN (1 + 8 + 8 + 4)
#define ENT_LEN (1 + 8 + 8 + 4)
#define SNAP_MAGIC 0x31534e52u /* "RNS1" */

typedef enum { OP_QUEUED, OP_INFLIGHT, OP_DONE } op_state;

typedef struct rsm_op {
	uint8_t type;
	uint64_t session, cseq;
	void *buf;
	size_t len;
	op_state state;
	bool waiter_gone;   /* the submit returned: whoever unlinks the op frees it */
	int rc;             /* OP_DONE: the outcome */
	void *res;          /* OP_DONE: apply's result (owned) */
	size_t res_len;
	pthread_cond_t cv;  /* the submitter waits here: done, kill */
	struct rsm_op *next;
} rsm_op;

struct paxosrsm {
	pthread_mutex_t mu;        /* guards every field down to `callers` */
	pthread_cond_t cv;         /* the applier's wake-up: kick, kill, snapshot wanted */
	pthread_cond_t applied_cv; /* submit waiters; kill waits for callers == 0 */
	pthread_cond_t snap_cv;    /* snapshot handlers: a snapshot was made */
	bool dead;
	bool stopped;              /* stopped itself (apply/restore failure) */
	bool kick;                 /* something happened since the applier looked */
	int next_apply;            /* first seq not applied yet */
	rsm_op *q_head, *q_tail;   /* ops waiting to be proposed */
	rsm_op *inflight;          /* ops of our batch in flight */
	int inflight_seq;          /* its seq, -1 when none */
	uint64_t inflight_bid;
	uint64_t next_bid;
	int next_seq;              /* our next proposal goes at or above this */
	int noop_upto;             /* no-ops started for every seq below this */
	int catchup_to;            /* catching up through this seq, -1 */
	int hole_seq;              /* next_apply when the hole timer started, -1 */
	uint64_t hole_since;       /* when it started (ms) */
	uint64_t stuck_since;      /* the hole at hole_seq exists since (ms) */
	bool need_snapshot;        /* catch up by snapshot before applying more */
	bool probe;                /* ... only from a peer that forgot next_apply */
	uint64_t snap_retry_at;    /* no fetch before this (ms) after a failed round */
	int snap_peer;             /* next peer to ask */
	/* serving snapshots */
	bool snap_wanted;          /* a handler waits for a fresh snapshot */
	uint64_t snap_gen;         /* bumped at each snapshot made (or failed) */
	bool snap_ok;              /* the last one succeeded */
	int snap_pos;
	void *snap_state;
	size_t snap_state_len;
	void *snap_ses;
	size_t snap_ses_len;
	/* info */
	int snapshot_seq;
	unsigned long sessions_held;
	unsigned long snapshots_sent, snapshots_restored;
	int callers;               /* submit calls inside */

	/* Applier-owned (no lock): the session table. */
	dkv_sessions *sessions;
	rsm_disk *disk;            /* opts->dir (rsm_disk.c); NULL in memory mode */

	/* Immutable after start. */
	paxos *px;
	uint64_t rid;              /* this replica's id in batch headers */
	const paxosrsm_sm *sm;
	void *ctx;
	paxosrsm_apply_fn legacy_apply; /* paxosrsm_make: the old callback */
	void *legacy_ctx;
	bool restart;
	dkv_rpc_pool *pool;        /* snapshot fetches */
	bool prog_added;
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
	free(op->res);
	pthread_cond_destroy(&op->cv);
	free(op);
}

/* Wake every submitter (kill, stop): their ops are on the queue or in flight. */
static void wake_all_locked(paxosrsm *rsm)
{
	for (rsm_op *op = rsm->q_head; op; op = op->next) pthread_cond_signal(&op->cv);
	for (rsm_op *op = rsm->inflight; op; op = op->next) pthread_cond_signal(&op->cv);
	pthread_cond_broadcast(&rsm->applied_cv);
}

static void finish_op_locked(rsm_op *op, int rc)
{
	op->next = NULL;
	if (op->waiter_gone) {
		free_op(op);
		return;
	}
	op->rc = rc;
	op->state = OP_DONE;
	pthread_cond_signal(&op->cv);
}

/* Put a list of ops back at the queue front (mu held). */
static void requeue_list_locked(paxosrsm *rsm, rsm_op *list)
{
	rsm_op *keep = NULL, *last = NULL;
	for (rsm_op *op = list, *nx; op; op = nx) {
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
}

/* Our batch lost its seq: its ops go back to the queue front (mu held). */
static void requeue_inflight_locked(paxosrsm *rsm)
{
	requeue_list_locked(rsm, rsm->inflight);
	rsm->inflight = NULL;
	rsm->inflight_seq = -1;
}

/* Our batch was applied; each op holds its rc/res already (mu held). */
static void complete_inflight_locked(paxosrsm *rsm)
{
	for (rsm_op *op = rsm->inflight, *nx; op; op = nx) {
		nx = op->next;
		finish_op_locked(op, op->rc);
	}
	rsm->inflight = NULL;
	rsm->inflight_seq = -1;
}

/* Our batch's seq is below next_apply and its fate unknown (covered by a
 * restored snapshot): session ops (and opens) are proposed again — the
 * session table makes a second copy harmless — plain ops complete with
 * DKV_ERR_TIMEOUT (they may have been applied). (mu held) */
static void resolve_unknown_inflight_locked(paxosrsm *rsm)
{
	rsm_op *again = NULL, **tail = &again;
	for (rsm_op *op = rsm->inflight, *nx; op; op = nx) {
		nx = op->next;
		op->next = NULL;
		if (op->type == ENT_PLAIN) {
			finish_op_locked(op, DKV_ERR_TIMEOUT);
		} else {
			*tail = op;
			tail = &op->next;
		}
	}
	rsm->inflight = NULL;
	rsm->inflight_seq = -1;
	requeue_list_locked(rsm, again);
}

/* Take a batch off the queue and encode it (mu held). NULL on ENOMEM. */
static unsigned char *take_batch_locked(paxosrsm *rsm, size_t *out_len)
{
	size_t total = HDR_LEN;
	uint32_t count = 0;
	rsm_op *op = rsm->q_head;
	while (op && count < RSM_BATCH_OPS &&
	       (count == 0 || total + ENT_LEN + op->len <= RSM_BATCH_BYTES)) {
		total += ENT_LEN + op->len;
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
		v[off] = op->type;
		put_u64(v + off + 1, op->session);
		put_u64(v + off + 9, op->cseq);
		put_u32(v + off + 17, (uint32_t)op->len);
		if (op->len) memcpy(v + off + ENT_LEN, op->buf, op->len);
		off += ENT_LEN + op->len;
		op->state = OP_INFLIGHT;
		op->rc = DKV_ERR_TIMEOUT;
		op->next = NULL;
		*tail = op;
		tail = &op->next;
	}
	if (!rsm->q_head) rsm->q_tail = NULL;
	rsm->inflight_bid = bid;
	*out_len = total;
	return v;
}

/* ---------------------------------------------------------------- stopping */

static void remove_prog(paxosrsm *rsm)
{
	if (rsm->prog_added) dkv_rpc_server_remove(rsm->px->srv, RSM_PROG);
	rsm->prog_added = false; /* applier (stop_self) or kill after joining it */
}

/* The replica cannot go on without diverging: stop it (applier thread, mu not
 * held). The applier exits its loop afterwards. */
static void stop_self(paxosrsm *rsm, int seq, const char *why, int err)
{
	DKV_ERROR("paxosrsm: replica stops itself at seq %d: %s (%s)", seq, why, dkv_strerror(err));
	pthread_mutex_lock(&rsm->mu);
	rsm->dead = true;
	rsm->stopped = true;
	pthread_cond_broadcast(&rsm->cv);
	wake_all_locked(rsm);
	pthread_cond_broadcast(&rsm->snap_cv);
	pthread_mutex_unlock(&rsm->mu);
	remove_prog(rsm);
	paxos_kill(rsm->px);
}

/* ---------------------------------------------------------------- applying */

/* Apply one decided value at seq (applier, mu NOT held). `ours`: the inflight
 * list when the value is our batch (its structure is the applier's; the
 * results are stored into the ops under mu), else NULL. Returns DKV_OK, or
 * the error that must stop the replica. */
static int apply_value(paxosrsm *rsm, int seq, const unsigned char *v, size_t len, rsm_op *ours)
{
	if (len < 1 || v[0] == KIND_NOOP) return DKV_OK;
	if (v[0] != KIND_BATCH || len < HDR_LEN) {
		DKV_WARN("paxosrsm: seq %d: malformed log entry (%zu bytes), ignored", seq, len);
		return DKV_OK;
	}
	uint32_t count = get_u32(v + 17);
	size_t off = HDR_LEN;
	rsm_op *op = ours;
	for (uint32_t i = 0; i < count; i++) {
		if (len - off < ENT_LEN) break;
		uint8_t type = v[off];
		uint64_t sid = get_u64(v + off + 1);
		uint64_t cseq = get_u64(v + off + 9);
		uint32_t n = get_u32(v + off + 17);
		if (len - off - ENT_LEN < n) break;
		const unsigned char *data = v + off + ENT_LEN;
		off += ENT_LEN + n;

		int rc = DKV_OK;
		void *res = NULL;
		size_t res_len = 0;
		if (type == ENT_OPEN) {
			uint64_t id = ((uint64_t)seq << RSM_SESSION_SHIFT) | (uint64_t)(i + 1);
			int e = dkv_sessions_open(rsm->sessions, id);
			if (e != DKV_OK) return e;
			if (op && (res = dkv_malloc(8)) != NULL) {
				put_u64(res, id);
				res_len = 8;
			} else if (op) {
				rc = DKV_ERR_NOMEM; /* the session exists; this caller loses it */
			}
		} else if (type == ENT_SESSION) {
			const void *stored = NULL;
			size_t slen = 0;
			dkv_sess_verdict vd = DKV_SESS_EXPIRED;
			if (sid && cseq && dkv_sessions_known(rsm->sessions, sid))
				vd = dkv_sessions_check(rsm->sessions, sid, cseq, &stored, &slen);
			if (vd == DKV_SESS_NEW) {
				int e = rsm->sm->apply(rsm->ctx, data, n, &res, &res_len);
				if (e != DKV_OK) {
					free(res);
					return e;
				}
				e = dkv_sessions_record(rsm->sessions, sid, cseq, res, res_len);
				if (e != DKV_OK) {
					free(res);
					return e;
				}
			} else if (vd == DKV_SESS_DUP) {
				if (op && slen) {
					res = dkv_memdup(stored, slen);
					res_len = res ? slen : 0;
					if (!res) rc = DKV_ERR_NOMEM;
				}
			} else {
				rc = DKV_ERR_EXPIRED;
			}
		} else {
			int e = rsm->sm->apply(rsm->ctx, data, n, &res, &res_len);
			if (e != DKV_OK) {
				free(res);
				return e;
			}
		}
		if (op) {
			pthread_mutex_lock(&rsm->mu);
			free(op->res);
			op->res = res;
			op->res_len = res ? res_len : 0;
			op->rc = rc;
			pthread_mutex_unlock(&rsm->mu);
			op = op->next;
		} else {
			free(res);
		}
	}
	return DKV_OK;
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

static bool can_snapshot(const paxosrsm *rsm)
{
	return rsm->sm->snapshot && rsm->sm->restore;
}

/* Is some other peer known to be Done with seq? (mu held; takes px->mu) */
static bool peer_done_with_locked(paxosrsm *rsm, int seq)
{
	paxos *px = rsm->px;
	bool yes = false;
	pthread_mutex_lock(&px->mu);
	for (int i = 0; i < px->npeers && !yes; i++)
		if (i != px->me && px->dones[i] >= seq) yes = true;
	pthread_mutex_unlock(&px->mu);
	return yes;
}

/* ---------------------------------------------------------------- snapshots */

/* Make a snapshot for the handlers (applier, mu held on entry and exit). */
static void make_snapshot_locked(paxosrsm *rsm)
{
	int pos = rsm->next_apply;
	rsm->snap_wanted = false;
	pthread_mutex_unlock(&rsm->mu);
	void *st = NULL, *ses = NULL;
	size_t st_len = 0, ses_len = 0;
	int rc = rsm->sm->snapshot(rsm->ctx, &st, &st_len);
	if (rc == DKV_OK) rc = dkv_sessions_encode(rsm->sessions, &ses, &ses_len);
	pthread_mutex_lock(&rsm->mu);
	free(rsm->snap_state);
	free(rsm->snap_ses);
	rsm->snap_state = rsm->snap_ses = NULL;
	rsm->snap_state_len = rsm->snap_ses_len = 0;
	rsm->snap_ok = rc == DKV_OK;
	if (rsm->snap_ok) {
		rsm->snap_state = st;
		rsm->snap_state_len = st ? st_len : 0;
		rsm->snap_ses = ses;
		rsm->snap_ses_len = ses_len;
		rsm->snap_pos = pos;
		rsm->snapshot_seq = pos;
	} else {
		free(st);
		free(ses);
	}
	rsm->snap_gen++;
	pthread_cond_broadcast(&rsm->snap_cv);
}

static void handle_snapshot(void *inst, void *args, void *res)
{
	paxosrsm *rsm = inst;
	const rsm_snap_args *a = args;
	rsm_snap_reply *r = res;
	r->status = RSM_SNAP_NONE;
	r->min = paxos_min(rsm->px);
	pthread_mutex_lock(&rsm->mu);
	if (rsm->dead || !can_snapshot(rsm) || rsm->need_snapshot) goto out;
	if (a->only_forgotten && r->min <= a->want) goto out; /* still has it: NONE + min */
	if (rsm->next_apply < a->want) {
		r->status = RSM_SNAP_BEHIND;
		r->pos = rsm->next_apply;
		goto out;
	}
	/* a fresh one, made at our next_apply now (>= want) */
	uint64_t gen = rsm->snap_gen;
	rsm->snap_wanted = true;
	rsm->kick = true;
	pthread_cond_signal(&rsm->cv);
	uint64_t deadline = dkv_now_ms() + RSM_SNAP_WAIT_MS;
	while (rsm->snap_gen == gen && !rsm->dead && dkv_now_ms() < deadline)
		dkv_cond_wait_until(&rsm->snap_cv, &rsm->mu, deadline);
	if (rsm->snap_gen == gen || rsm->dead || !rsm->snap_ok || rsm->snap_pos < a->want) goto out;
	void *st = rsm->snap_state_len ? dkv_memdup(rsm->snap_state, rsm->snap_state_len) : NULL;
	void *ses = dkv_memdup(rsm->snap_ses, rsm->snap_ses_len);
	if ((rsm->snap_state_len && !st) || !ses) {
		free(st);
		free(ses);
		goto out;
	}
	r->status = RSM_SNAP_OK;
	r->pos = rsm->snap_pos;
	r->state.state_val = st;
	r->state.state_len = (u_int)rsm->snap_state_len;
	r->sessions.sessions_val = ses;
	r->sessions.sessions_len = (u_int)rsm->snap_ses_len;
	rsm->snapshots_sent++;
out:
	pthread_mutex_unlock(&rsm->mu);
}

static const dkv_rpc_proc rsm_procs[] = {
	{RSM_SNAPSHOT, (xdrproc_t)xdr_rsm_snap_args, sizeof(rsm_snap_args),
	 (xdrproc_t)xdr_rsm_snap_reply, sizeof(rsm_snap_reply), handle_snapshot},
};

/* ---------------------------------------------------------------- on disk */

/* A write to the directory failed (applier, mu not held): stop the replica. */
static void disk_failed(paxosrsm *rsm, int seq, int err)
{
	DKV_ERROR("paxosrsm: %s/%s: %s; the replica stops", dkv_dir_path(rsm_disk_dir(rsm->disk)),
	          RSM_DISK_SNAP_NAME, strerror(err));
	stop_self(rsm, seq, "its data directory failed", DKV_ERR_KILLED);
}

/* A durable snapshot at next_apply, then Done up to it (applier, mu held on
 * entry and exit; released around the I/O). */
static void disk_snapshot_locked(paxosrsm *rsm)
{
	int pos = rsm->next_apply;
	pthread_mutex_unlock(&rsm->mu);
	void *st = NULL, *ses = NULL;
	size_t st_len = 0, ses_len = 0;
	int rc = rsm->sm->snapshot(rsm->ctx, &st, &st_len);
	if (rc == DKV_OK) rc = dkv_sessions_encode(rsm->sessions, &ses, &ses_len);
	if (rc != DKV_OK) { /* ENOMEM: again after the idle delay */
		free(st);
		free(ses);
		rsm_disk_note_apply(rsm->disk, 0, dkv_now_ms());
		pthread_mutex_lock(&rsm->mu);
		return;
	}
	int err = rsm_disk_save(rsm->disk, pos, st, st ? st_len : 0, ses, ses_len);
	free(st);
	free(ses);
	if (err) {
		disk_failed(rsm, pos, err);
		pthread_mutex_lock(&rsm->mu);
		return;
	}
	paxos_done(rsm->px, pos - 1);
	rsm_disk_poke(rsm->disk);
	pthread_mutex_lock(&rsm->mu);
	rsm->snapshot_seq = pos;
}

/* The directory failed under Paxos (sticky error): stop (mu held; true if
 * stopped). */
static bool disk_check_locked(paxosrsm *rsm)
{
	int err = dkv_dir_error(rsm_disk_dir(rsm->disk));
	if (!err) return false;
	int seq = rsm->next_apply;
	pthread_mutex_unlock(&rsm->mu);
	DKV_ERROR("paxosrsm: %s: %s; the replica stops", dkv_dir_path(rsm_disk_dir(rsm->disk)),
	          strerror(err));
	stop_self(rsm, seq, "its data directory failed", DKV_ERR_KILLED);
	pthread_mutex_lock(&rsm->mu);
	return true;
}

/* Wake up for the next snapshot due, and look at the directory now and then. */
static void disk_wait_clamp(paxosrsm *rsm, unsigned *wait_ms)
{
	uint32_t due = rsm_disk_due(rsm->disk, rsm->next_apply, dkv_now_ms());
	if (due > 250) due = 250;
	if (due == 0) due = 1;
	if (*wait_ms == 0 || due < *wait_ms) *wait_ms = due;
}

/* Catch up by snapshot (applier, mu held on entry and exit; released around
 * the RPCs and the restore). Returns true if it restored one. */
static bool catch_up_locked(paxosrsm *rsm)
{
	int want = rsm->next_apply;
	int m = paxos_min(rsm->px);
	if (m > want && can_snapshot(rsm)) want = m;
	paxos *px = rsm->px;
	int start = rsm->snap_peer;
	pthread_mutex_unlock(&rsm->mu);

	rsm_snap_reply r;
	bool got = false;
	for (int k = 0; k < px->npeers && !got; k++) {
		int j = (start + k) % px->npeers;
		if (j == px->me) continue;
		rsm_snap_args a = {.want = want, .only_forgotten = rsm->probe};
		memset(&r, 0, sizeof r);
		int rc = dkv_rpc_call(rsm->pool, px->peers[j], RSM_PROG, RSM_VERS, RSM_SNAPSHOT,
		                      (xdrproc_t)xdr_rsm_snap_args, &a, (xdrproc_t)xdr_rsm_snap_reply,
		                      &r, RSM_SNAP_CALL_MS);
		DKV_DEBUG("paxosrsm: snapshot %s of peer %d at %d: rc %d status %d pos %d min %d",
		          rsm->probe ? "probe" : "fetch", j, want, rc, rc == DKV_OK ? r.status : -1,
		          rc == DKV_OK ? r.pos : -1, rc == DKV_OK ? r.min : -1);
		if (rc != DKV_OK) continue;
		if (!can_snapshot(rsm)) {
			int pm = r.min;
			xdr_free((xdrproc_t)xdr_rsm_snap_reply, (char *)&r);
			if (pm > rsm->next_apply) { /* next_apply only moves on this thread */
				stop_self(rsm, want, "forgotten by a peer before applied, and no snapshot to "
				                     "catch up from (paxosrsm_make)", DKV_ERR_KILLED);
				pthread_mutex_lock(&rsm->mu);
				rsm->need_snapshot = false;
				return false;
			}
			continue;
		}
		if (r.status == RSM_SNAP_OK && r.pos >= want && r.pos > 0) {
			got = true;
			start = j;
			break;
		}
		xdr_free((xdrproc_t)xdr_rsm_snap_reply, (char *)&r);
	}
	if (!got) {
		pthread_mutex_lock(&rsm->mu);
		if (!can_snapshot(rsm) || rsm->probe) rsm->need_snapshot = false; /* probed: not forgotten */
		rsm->probe = false;
		rsm->snap_peer = (start + 1) % px->npeers;
		rsm->snap_retry_at = dkv_now_ms() + RSM_STUCK_MS;
		return false;
	}

	int pos = r.pos;
	dkv_sessions *ses = dkv_sessions_decode(r.sessions.sessions_val, r.sessions.sessions_len,
	                                        PAXOSRSM_SESSIONS_MAX);
	int err = ses ? DKV_OK : (errno == ENOMEM ? DKV_ERR_NOMEM : DKV_ERR_INVAL);
	if (ses) err = rsm->sm->restore(rsm->ctx, r.state.state_val, r.state.state_len);
	int derr = 0;
	if (err == DKV_OK && rsm->disk) /* durable before Done moves past it */
		derr = rsm_disk_save(rsm->disk, pos, r.state.state_val, r.state.state_len,
		                     r.sessions.sessions_val, r.sessions.sessions_len);
	xdr_free((xdrproc_t)xdr_rsm_snap_reply, (char *)&r);
	if (derr) {
		dkv_sessions_free(ses);
		disk_failed(rsm, pos, derr);
		pthread_mutex_lock(&rsm->mu);
		return false;
	}
	if (err != DKV_OK) {
		dkv_sessions_free(ses);
		if (err == DKV_ERR_NOMEM) { /* nothing changed: try again later */
			pthread_mutex_lock(&rsm->mu);
			rsm->snap_retry_at = dkv_now_ms() + RSM_STUCK_MS;
			return false;
		}
		stop_self(rsm, want, "cannot restore a peer's snapshot", err);
		pthread_mutex_lock(&rsm->mu);
		return false;
	}
	dkv_sessions_free(rsm->sessions);
	rsm->sessions = ses;
	DKV_INFO("paxosrsm: restored a snapshot from peer %d: position %d (was at %d)", start, pos,
	         want);
	paxos_done(px, pos - 1);
	if (rsm->disk) rsm_disk_poke(rsm->disk);

	pthread_mutex_lock(&rsm->mu);
	rsm->next_apply = pos;
	rsm->snapshot_seq = pos;
	rsm->snapshots_restored++;
	rsm->sessions_held = (unsigned long)dkv_sessions_count(ses);
	rsm->need_snapshot = false;
	rsm->probe = false;
	rsm->snap_peer = start;
	if (rsm->next_seq < pos) rsm->next_seq = pos;
	if (rsm->noop_upto < pos) rsm->noop_upto = pos;
	rsm->hole_seq = -1;
	if (rsm->inflight_seq >= 0 && rsm->inflight_seq < pos) resolve_unknown_inflight_locked(rsm);
	return true;
}

/* ---------------------------------------------------------------- the loop */

/* Propose the queue as our next batch, when none is in flight (mu held).
 * Called by the applier, and by a submit that finds the proposer idle (one
 * thread hand-off less on the request path). false: nothing to do, or ENOMEM. */
static bool propose_locked(paxosrsm *rsm)
{
	if (rsm->inflight_seq >= 0 || !rsm->q_head || rsm->need_snapshot || rsm->dead) return false;
	size_t vlen = 0;
	unsigned char *v = take_batch_locked(rsm, &vlen);
	if (!v) return false;
	int pmax = paxos_max(rsm->px);
	int s = rsm->next_seq;
	if (s < pmax + 1) s = pmax + 1;
	if (s < rsm->next_apply) s = rsm->next_apply;
	rsm->inflight_seq = s;
	rsm->next_seq = s + 1;
	paxos_start(rsm->px, s, v, vlen);
	free(v);
	return true;
}

/* One look at the log; returns true if it made progress (look again at once),
 * else sets *wait_ms (0: until kicked). mu held on entry and exit. */
static bool step_locked(paxosrsm *rsm, unsigned *wait_ms)
{
	if (rsm->snap_wanted && !rsm->need_snapshot) {
		make_snapshot_locked(rsm);
		return true;
	}
	if (rsm->disk && !rsm->need_snapshot &&
	    rsm_disk_due(rsm->disk, rsm->next_apply, dkv_now_ms()) == 0) {
		disk_snapshot_locked(rsm);
		return true;
	}
	if (rsm->need_snapshot) {
		uint64_t now = dkv_now_ms();
		if (now < rsm->snap_retry_at) {
			*wait_ms = (unsigned)(rsm->snap_retry_at - now);
			return false;
		}
		if (catch_up_locked(rsm)) return true;
		if (rsm->dead) return false;
		*wait_ms = RSM_STUCK_MS;
		return false;
	}

	int seq = rsm->next_apply;
	/* A batch of ours below next_apply can never be decided here (the wedge). */
	if (rsm->inflight_seq >= 0 && rsm->inflight_seq < seq) {
		resolve_unknown_inflight_locked(rsm);
		return true;
	}
	void *val = NULL;
	size_t len = 0;
	paxos_fate f = paxos_status(rsm->px, seq, &val, &len);
	if (f == PAXOS_DECIDED && val) {
		bool ours = rsm->inflight_seq == seq && is_our_batch(rsm, val, len, rsm->inflight_bid);
		rsm_op *list = ours ? rsm->inflight : NULL;
		pthread_mutex_unlock(&rsm->mu);
		int err = apply_value(rsm, seq, val, len, list);
		if (err != DKV_OK) {
			free(val);
			stop_self(rsm, seq, "cannot apply an agreed op", err);
			pthread_mutex_lock(&rsm->mu);
			return false;
		}
		if (rsm->disk)
			rsm_disk_note_apply(rsm->disk, len, dkv_now_ms()); /* Done: at its snapshot */
		else
			paxos_done(rsm->px, seq);
		pthread_mutex_lock(&rsm->mu);
		rsm->next_apply = seq + 1;
		rsm->sessions_held = (unsigned long)dkv_sessions_count(rsm->sessions);
		if (rsm->inflight_seq == seq) {
			if (ours)
				complete_inflight_locked(rsm);
			else
				requeue_inflight_locked(rsm);
		}
		free(val);
		return true;
	}
	free(val);
	if (f == PAXOS_DECIDED) { /* ENOMEM copying: retry later */
		*wait_ms = RSM_HOLE_MS;
		return false;
	}
	if (f == PAXOS_FORGOTTEN) {
		if (!can_snapshot(rsm)) {
			pthread_mutex_unlock(&rsm->mu);
			stop_self(rsm, seq, "forgotten by its peers before applied, and no snapshot to "
			                    "catch up from (paxosrsm_make)", DKV_ERR_EXPIRED);
			pthread_mutex_lock(&rsm->mu);
			return false;
		}
		rsm->need_snapshot = true;
		rsm->probe = false;
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
		if (f == PAXOS_FORGOTTEN) { /* cannot be ours any more: resolved at catch-up */
			if (can_snapshot(rsm)) rsm->need_snapshot = true;
		}
	}

	int pmax = paxos_max(rsm->px);
	if (rsm->inflight_seq < 0 && rsm->q_head) {
		if (propose_locked(rsm)) return true;
		*wait_ms = RSM_HOLE_MS; /* ENOMEM: try again later */
		return false;
	}

	/* Holes: next_apply pending while later instances exist (our own batch's
	 * seq counts even before paxos notes it). */
	if (rsm->inflight_seq > pmax) pmax = rsm->inflight_seq;
	if (seq <= pmax) {
		uint64_t now = dkv_now_ms();
		if (rsm->hole_seq != seq) {
			rsm->hole_seq = seq;
			rsm->hole_since = now;
			rsm->stuck_since = now;
		}
		/* Stuck: the peers may have forgotten it (no-ops cannot learn it:
		 * a peer answers FORGOTTEN). Ask them (a probe): one that forgot it
		 * sends a snapshot; a replica without snapshots stops. A peer known
		 * Done with it may well have forgotten it: ask for a snapshot outright. */
		if (now - rsm->stuck_since >= RSM_STUCK_MS && now >= rsm->snap_retry_at) {
			rsm->need_snapshot = true;
			rsm->probe = !can_snapshot(rsm) || !peer_done_with_locked(rsm, seq);
			rsm->stuck_since = now;
			return true;
		}
		int hi = seq + RSM_CATCHUP_WINDOW - 1;
		if (rsm->catchup_to >= seq) {
			int from = rsm->noop_upto > seq ? rsm->noop_upto : seq;
			int to = rsm->catchup_to < hi ? rsm->catchup_to : hi;
			if (from <= to) start_noops_locked(rsm, from, to);
		}
		if (now - rsm->hole_since >= RSM_HOLE_MS) {
			rsm->catchup_to = pmax;
			start_noops_locked(rsm, seq, pmax < hi ? pmax : hi);
			rsm->hole_since = now;
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
		if (rsm->disk && disk_check_locked(rsm)) break;
		if (step_locked(rsm, &wait_ms)) continue;
		if (rsm->kick || rsm->dead) continue;
		if (rsm->disk) disk_wait_clamp(rsm, &wait_ms);
		if (wait_ms)
			dkv_cond_wait_ms(&rsm->cv, &rsm->mu, wait_ms);
		else
			pthread_cond_wait(&rsm->cv, &rsm->mu);
	}
	pthread_mutex_unlock(&rsm->mu);
	return NULL;
}

/* ---------------------------------------------------------------- lifecycle */

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
	rsm_disk_close(rsm->disk); /* after Paxos closed its log */
	dkv_rpc_pool_free(rsm->pool);
	dkv_sessions_free(rsm->sessions);
	free(rsm->snap_state);
	free(rsm->snap_ses);
	pthread_cond_destroy(&rsm->cv);
	pthread_cond_destroy(&rsm->applied_cv);
	pthread_cond_destroy(&rsm->snap_cv);
	pthread_mutex_destroy(&rsm->mu);
	pthread_mutex_destroy(&rsm->kill_mu);
	free(rsm);
}

/* Open the directory and restore its snapshot, if any (before the applier
 * and Paxos start). 0 or an errno value, with a log line. */
static int disk_open(paxosrsm *rsm, const dkv_server_opts *opts, const char *service,
                     int64_t gid, const char *const *peers, int npeers, int me)
{
	int err = rsm_disk_open(opts, service, gid, peers, npeers, me, &rsm->disk);
	if (err) {
		DKV_ERROR("paxosrsm: cannot use the data directory %s: %s", opts->dir, strerror(err));
		return err;
	}
	void *blob = NULL;
	const void *st = NULL, *sesb = NULL;
	size_t st_len = 0, ses_len = 0;
	int pos = 0;
	err = rsm_disk_load(rsm->disk, &pos, &blob, &st, &st_len, &sesb, &ses_len);
	if (err == ENOENT) return 0; /* no snapshot yet: the log starts at 0 */
	if (err) {
		DKV_ERROR("paxosrsm: cannot read %s/%s: %s", opts->dir, RSM_DISK_SNAP_NAME,
		          strerror(err));
		return err;
	}
	dkv_sessions *ses = dkv_sessions_decode(sesb, ses_len, PAXOSRSM_SESSIONS_MAX);
	int rc = ses ? rsm->sm->restore(rsm->ctx, st, st_len) : DKV_ERR_INVAL;
	free(blob);
	if (!ses && errno == ENOMEM) rc = DKV_ERR_NOMEM;
	if (rc != DKV_OK) {
		dkv_sessions_free(ses);
		DKV_ERROR("paxosrsm: %s/%s: the state machine cannot restore it: %s", opts->dir,
		          RSM_DISK_SNAP_NAME, dkv_strerror(rc));
		return rc == DKV_ERR_NOMEM ? ENOMEM : EIO;
	}
	dkv_sessions_free(rsm->sessions);
	rsm->sessions = ses;
	rsm->sessions_held = (unsigned long)dkv_sessions_count(ses);
	rsm->next_apply = pos;
	rsm->snapshot_seq = pos;
	rsm->next_seq = pos;
	rsm->noop_upto = pos;
	DKV_INFO("paxosrsm: %s: restored the snapshot at position %d", opts->dir, pos);
	return 0;
}

static paxosrsm *rsm_new(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                         const paxosrsm_sm *sm, void *ctx, const dkv_server_opts *opts,
                         const char *service, int64_t gid)
{
	dkv_lib_init();
	if (!sm || !sm->apply) {
		errno = EINVAL;
		return NULL;
	}
	bool with_dir = opts && opts->dir && opts->dir[0];
	if (with_dir && (!sm->snapshot || !sm->restore)) {
		DKV_ERROR("paxosrsm: %s: a data directory needs a state machine with snapshots",
		          opts->dir);
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
	int e3 = dkv_cond_init(&rsm->snap_cv);
	rsm->inflight_seq = -1;
	rsm->hole_seq = -1;
	rsm->catchup_to = -1;
	rsm->snapshot_seq = -1;
	rsm->rid = dkv_random_seed();
	rsm->next_bid = 1;
	rsm->sm = sm;
	rsm->ctx = ctx;
	rsm->restart = opts && opts->restart;
	rsm->need_snapshot = rsm->restart;
	rsm->snap_peer = (me + 1) % (npeers > 0 ? npeers : 1);
	if (e1 || e2 || e3) {
		if (!e1) pthread_cond_destroy(&rsm->cv);
		if (!e2) pthread_cond_destroy(&rsm->applied_cv);
		if (!e3) pthread_cond_destroy(&rsm->snap_cv);
		pthread_mutex_destroy(&rsm->mu);
		pthread_mutex_destroy(&rsm->kill_mu);
		free(rsm);
		errno = e1 ? e1 : e2 ? e2 : e3;
		return NULL;
	}
	rsm->sessions = dkv_sessions_new(PAXOSRSM_SESSIONS_MAX);
	rsm->pool = dkv_rpc_pool_new();
	if (!rsm->sessions || !rsm->pool) {
		rsm_release(rsm);
		errno = ENOMEM;
		return NULL;
	}
	if (with_dir) {
		int err = disk_open(rsm, opts, service, gid, peers, npeers, me);
		if (err) {
			rsm_release(rsm);
			errno = err;
			return NULL;
		}
		/* a directory that holds state: restart, but it votes at once
		 * (paxos replays its promises); an empty one with restart: the
		 * lost-disk case (rejoin without voting, catch up by snapshot) */
		rsm->need_snapshot = rsm->restart && rsm_disk_fresh(rsm->disk);
		rsm->px = px_make_dir(peers, npeers, me, rpcs, decide_hook, rsm,
		                      rsm_disk_dir(rsm->disk), rsm->restart);
	} else {
		rsm->px = px_make_restart(peers, npeers, me, rpcs, decide_hook, rsm, rsm->restart);
	}
	if (!rsm->px) {
		int err = errno;
		rsm_release(rsm);
		errno = err;
		return NULL;
	}
	return rsm;
}

static paxosrsm *rsm_run(paxosrsm *rsm)
{
	int err = dkv_rpc_server_add(rsm->px->srv, RSM_PROG, RSM_VERS, rsm_procs,
	                             sizeof rsm_procs / sizeof rsm_procs[0], rsm);
	if (err != DKV_OK) {
		rsm_release(rsm);
		errno = err == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		return NULL;
	}
	rsm->prog_added = true;
	if (rsm->disk && (err = rsm_disk_gossip_start(rsm->disk, rsm->px)) != 0) {
		remove_prog(rsm);
		rsm_release(rsm);
		errno = err;
		return NULL;
	}
	err = pthread_create(&rsm->thr, NULL, applier_main, rsm);
	if (err) {
		remove_prog(rsm);
		rsm_release(rsm);
		errno = err;
		return NULL;
	}
	rsm->thr_started = true;
	return rsm;
}

paxosrsm *paxosrsm_start_ident(const char *const *peers, int npeers, int me,
                               dkv_rpc_server *rpcs, const paxosrsm_sm *sm, void *ctx,
                               const dkv_server_opts *opts, const char *service, int64_t gid)
{
	paxosrsm *rsm = rsm_new(peers, npeers, me, rpcs, sm, ctx, opts, service ? service : "paxosrsm", gid);
	return rsm ? rsm_run(rsm) : NULL;
}

paxosrsm *paxosrsm_start(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                         const paxosrsm_sm *sm, void *ctx, const dkv_server_opts *opts)
{
	return paxosrsm_start_ident(peers, npeers, me, rpcs, sm, ctx, opts, "paxosrsm", 0);
}

/* paxosrsm_make: the engine with a state machine of no results, no snapshot. */
static int legacy_apply(void *ctx, const void *op, size_t len, void **res, size_t *res_len)
{
	paxosrsm *rsm = ctx;
	(void)res;
	(void)res_len;
	rsm->legacy_apply(rsm->legacy_ctx, op, len);
	return DKV_OK;
}
static const paxosrsm_sm legacy_sm = {legacy_apply, NULL, NULL};

paxosrsm *paxosrsm_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                        paxosrsm_apply_fn apply, void *ctx)
{
	if (!apply) {
		errno = EINVAL;
		return NULL;
	}
	paxosrsm *rsm = rsm_new(peers, npeers, me, rpcs, &legacy_sm, NULL, NULL, "paxosrsm", 0);
	if (!rsm) return NULL;
	rsm->ctx = rsm;
	rsm->legacy_apply = apply;
	rsm->legacy_ctx = ctx;
	return rsm_run(rsm);
}

/* ---------------------------------------------------------------- submitting */

static int submit(paxosrsm *rsm, uint8_t type, uint64_t session, uint64_t cseq, const void *op,
                  size_t len, unsigned timeout_ms, void **res, size_t *res_len)
{
	if (res) *res = NULL;
	if (res_len) *res_len = 0;
	/* a batch of one op must fit a Paxos value (px_prot.x PX_VALUE_MAX) */
	if (!rsm || (len && !op) || len > PX_VALUE_MAX - HDR_LEN - ENT_LEN) return DKV_ERR_INVAL;
	rsm_op *o = dkv_calloc(1, sizeof *o);
	void *buf = len ? dkv_malloc(len) : NULL;
	if (!o || (len && !buf) || dkv_cond_init(&o->cv) != 0) {
		free(o);
		free(buf);
		return DKV_ERR_NOMEM;
	}
	if (len) memcpy(buf, op, len);
	o->type = type;
	o->session = session;
	o->cseq = cseq;
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
	propose_locked(rsm); /* idle proposer: propose now, from this thread */
	rsm->kick = true;     /* the applier watches the batch (or proposes it next) */
	pthread_cond_signal(&rsm->cv);

	uint64_t deadline = timeout_ms ? dkv_now_ms() + timeout_ms : 0;
	bool timed_out = false;
	while (o->state != OP_DONE && !rsm->dead && !timed_out) {
		if (deadline)
			timed_out = !dkv_cond_wait_until(&o->cv, &rsm->mu, deadline) &&
			            dkv_now_ms() >= deadline;
		else
			pthread_cond_wait(&o->cv, &rsm->mu);
	}
	int rc;
	if (o->state == OP_DONE) {
		rc = o->rc;
		if (res && rc == DKV_OK) {
			*res = o->res;
			if (res_len) *res_len = o->res_len;
			o->res = NULL;
		}
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

int paxosrsm_add_op_timeout(paxosrsm *rsm, const void *op, size_t len, unsigned timeout_ms)
{
	return submit(rsm, ENT_PLAIN, 0, 0, op, len, timeout_ms, NULL, NULL);
}

int paxosrsm_add_op(paxosrsm *rsm, const void *op, size_t len)
{
	return paxosrsm_add_op_timeout(rsm, op, len, 0);
}

int paxosrsm_submit(paxosrsm *rsm, const paxosrsm_client *cl, const void *op, size_t len,
                    unsigned timeout_ms, void **res, size_t *res_len)
{
	if (cl && cl->session) {
		if (!cl->seq) return DKV_ERR_INVAL;
		return submit(rsm, ENT_SESSION, cl->session, cl->seq, op, len, timeout_ms, res, res_len);
	}
	return submit(rsm, ENT_PLAIN, 0, 0, op, len, timeout_ms, res, res_len);
}

int paxosrsm_open_session(paxosrsm *rsm, unsigned timeout_ms, uint64_t *session)
{
	if (!session) return DKV_ERR_INVAL;
	void *res = NULL;
	size_t len = 0;
	int rc = submit(rsm, ENT_OPEN, 0, 0, NULL, 0, timeout_ms, &res, &len);
	if (rc == DKV_OK) {
		if (len == 8 && res)
			*session = get_u64(res);
		else
			rc = DKV_ERR_NOMEM;
	}
	free(res);
	return rc;
}

paxos *paxosrsm_paxos(paxosrsm *rsm)
{
	return rsm ? rsm->px : NULL;
}

void paxosrsm_get_info(paxosrsm *rsm, paxosrsm_info *out)
{
	if (!out) return;
	memset(out, 0, sizeof *out);
	if (!rsm) return;
	pthread_mutex_lock(&rsm->mu);
	bool voting = px_is_voting(rsm->px);
	if (rsm->dead)
		out->role = PAXOSRSM_STOPPED;
	else if (!voting)
		out->role = PAXOSRSM_REJOINING;
	else if (rsm->need_snapshot)
		out->role = PAXOSRSM_CATCHING_UP;
	else
		out->role = PAXOSRSM_VOTING;
	out->applied = rsm->next_apply;
	out->snapshot_seq = rsm->snapshot_seq;
	out->sessions = rsm->sessions_held;
	out->snapshots_sent = rsm->snapshots_sent;
	out->snapshots_restored = rsm->snapshots_restored;
	pthread_mutex_unlock(&rsm->mu);
	out->incarnation = px_incarnation(rsm->px);
	out->paxos_max = paxos_max(rsm->px);
	out->paxos_min = paxos_min(rsm->px);
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
	wake_all_locked(rsm);
	pthread_cond_broadcast(&rsm->snap_cv);
	pthread_mutex_unlock(&rsm->mu);
	dkv_rpc_pool_shutdown(rsm->pool); /* a snapshot fetch in flight fails at once */
	if (rsm->thr_started) pthread_join(rsm->thr, NULL);
	remove_prog(rsm);
	rsm_disk_stop(rsm->disk);
	paxos_kill(rsm->px); /* no decide_hook call after this; closes paxos.log */
	pthread_mutex_lock(&rsm->mu);
	while (rsm->callers > 0) pthread_cond_wait(&rsm->applied_cv, &rsm->mu);
	rsm_disk *disk = rsm->disk;
	rsm->disk = NULL;
	pthread_mutex_unlock(&rsm->mu);
	rsm_disk_close(disk); /* X_kill releases the directory */
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
