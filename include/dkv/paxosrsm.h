/*
 * dkv/paxosrsm.h — a replicated state machine on top of Paxos.
 *
 * Each replica owns one paxos peer and one applier thread. Callers submit
 * opaque operations with paxosrsm_add_op(); the replicas agree on one log of
 * operations, and every replica hands each agreed operation, exactly once and
 * in log order, to the application's `apply` callback. Holes in a replica's
 * log (instances it did not hear about) are filled by proposing no-ops, which
 * are never passed to `apply`. The log is trimmed (paxos_done) after applying.
 *
 * Thread-safety: every function may be called from any thread. `apply` runs on
 * the replica's applier thread, one call at a time, with no paxosrsm lock held,
 * so it may take the application's locks (it must not call paxosrsm_add_op on
 * the same replica and wait for it: that would deadlock).
 */
#ifndef DKV_PAXOSRSM_H
#define DKV_PAXOSRSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkv/common.h"
#include "dkv/paxos.h"
#include "dkv/rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct paxosrsm paxosrsm;

/* apply: one agreed op (borrowed; valid during the call only). */
typedef void (*paxosrsm_apply_fn)(void *ctx, const void *op, size_t len);

/*
 * paxosrsm_make: a new replica. peers, npeers, me, rpcs: as for paxos_make
 * (copied / borrowed the same way). `apply` and `ctx` (borrowed) receive every
 * agreed op. Returns NULL and sets errno on failure.
 */
paxosrsm *paxosrsm_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                        paxosrsm_apply_fn apply, void *ctx);

/*
 * paxosrsm_add_op: submit `op` (len bytes, copied) and block until it has been
 * agreed and `apply` has run, on this replica, for it and for every op ordered
 * before it. Returns DKV_OK, DKV_ERR_KILLED (the replica was killed while the
 * call waited, or before; the op may or may not be agreed), DKV_ERR_NOMEM.
 * Concurrent calls from many threads are batched into shared Paxos instances.
 */
int paxosrsm_add_op(paxosrsm *rsm, const void *op, size_t len);

/*
 * paxosrsm_add_op_timeout: as paxosrsm_add_op, but gives up after about
 * timeout_ms (0: wait forever) and returns DKV_ERR_TIMEOUT; the op may then
 * still be agreed and applied later (at most once).
 */
int paxosrsm_add_op_timeout(paxosrsm *rsm, const void *op, size_t len, unsigned timeout_ms);

/*
 * paxosrsm_paxos: the replica's Paxos peer (borrowed; owned by the replica and
 * freed by paxosrsm_free), for inspection: paxos_min/max/rpc_count/status.
 * Do not call paxos_start, paxos_done or paxos_kill on it.
 */
paxos *paxosrsm_paxos(paxosrsm *rsm);

/*
 * paxosrsm_kill: stop the replica: kills its Paxos peer, wakes every waiting
 * add_op (they return DKV_ERR_KILLED) and waits for them to return, and joins
 * the applier (after the `apply` call in progress, if any). Idempotent.
 */
void paxosrsm_kill(paxosrsm *rsm);

/* paxosrsm_free: kill if needed, then release everything. NULL is a no-op. */
void paxosrsm_free(paxosrsm *rsm);

/* paxosrsm_set_unreliable: paxos_set_unreliable on the replica's peer. */
void paxosrsm_set_unreliable(paxosrsm *rsm, bool on);

/* ================================================================
 * The replication engine: a state machine with results, sessions,
 * snapshots and catch-up. (paxosrsm_make / paxosrsm_add_op above are kept:
 * they are this engine with a state machine that has no results and no
 * snapshot; such a replica cannot catch up past a forgotten log and stops
 * itself, with a log line, when it would have to.)
 * ================================================================ */

/*
 * Compaction and catch-up (memory mode): a replica marks an instance Done as
 * soon as it has applied it; Paxos forgets it once every peer is Done. A
 * replica whose next instance its peers forgot — or a hole that no-op
 * proposals cannot fill while a peer is Done with it, or a start with
 * opts->restart — fetches a snapshot (state, session table, position) from a
 * peer that has applied at least that far (paxosrsm's own RPC program, served
 * on the Paxos peer's RPC server), restores it and continues from its
 * position. It never skips an instance. A submit whose op was in a batch
 * covered by such a snapshot completes with DKV_ERR_TIMEOUT (no session: it
 * may have been applied) or is proposed again (with a session: the session
 * table answers a duplicate).
 */

/*
 * paxosrsm_sm: what a service hands to the engine. Every function runs on the
 * replica's applier thread, one call at a time, with no paxosrsm lock held.
 * All three must be deterministic: replicas that apply the same ops from the
 * same restored snapshot reach the same state and the same results.
 *
 *   apply     one agreed op (borrowed, valid during the call). It may set
 *             *res / *res_len to a malloc'ed result (or leave NULL / 0); the
 *             engine delivers it to the call that submitted the op, on this
 *             replica, and keeps the last one per session for duplicates.
 *             Returns DKV_OK, or an error (DKV_ERR_NOMEM, …) when it could not
 *             apply: the replica then stops itself (as paxosrsm_kill, with an
 *             error log line) rather than diverge from its peers. An op the
 *             service refuses (bad key, wrong group) is DKV_OK with a result
 *             that says so.
 *   snapshot  the whole state as one malloc'ed byte string (*buf, *len).
 *             DKV_OK or DKV_ERR_NOMEM (the snapshot is retried later).
 *   restore   replace the whole state by a snapshot's bytes. DKV_OK,
 *             DKV_ERR_INVAL (malformed: the engine stops the replica),
 *             DKV_ERR_NOMEM.
 */
typedef struct paxosrsm_sm {
	int (*apply)(void *ctx, const void *op, size_t len, void **res, size_t *res_len);
	int (*snapshot)(void *ctx, void **buf, size_t *len);
	int (*restore)(void *ctx, const void *buf, size_t len);
} paxosrsm_sm;

/*
 * paxosrsm_start: a new replica of a state machine. peers, npeers, me, rpcs:
 * as for paxos_make. `sm` (borrowed; a static const table) and `ctx`
 * (borrowed). `opts`: as for paxos_make_opts (NULL: memory only, first start).
 * With opts->restart (or a directory that holds state) the replica rejoins:
 * its Paxos peer does not vote until it cannot contradict an earlier vote, and
 * the engine catches up from its peers (a snapshot where their log is gone)
 * before it applies anything new. Returns NULL and sets errno on failure.
 */
paxosrsm *paxosrsm_start(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                         const paxosrsm_sm *sm, void *ctx, const dkv_server_opts *opts);

/*
 * Client sessions (at-most-once). A session id is assigned by the log
 * (paxosrsm_open_session), so ids grow in the order sessions were opened, and
 * every replica keeps the same table: per session the highest seq applied and
 * that op's result. The table is bounded (PAXOSRSM_SESSIONS_MAX): opening a
 * session beyond it expires the least recently used one, a decision taken in
 * the log, never from a clock. An op of an unknown or expired session is not
 * applied and completes with DKV_ERR_EXPIRED (a clerk that gets it on the
 * first attempt of an op knows the op was never applied anywhere; on a retry it
 * may have been).
 */
#define PAXOSRSM_SESSIONS_MAX 8192u
typedef struct paxosrsm_client {
	uint64_t session; /* from paxosrsm_open_session; 0 = no session (no dedup) */
	uint64_t seq;     /* 1, 2, … per session; one op outstanding at a time */
} paxosrsm_client;

/* paxosrsm_open_session: agree on a new session; *session gets its id (> 0).
 * DKV_OK, DKV_ERR_TIMEOUT, DKV_ERR_KILLED, DKV_ERR_NOMEM. */
int paxosrsm_open_session(paxosrsm *rsm, unsigned timeout_ms, uint64_t *session);

/*
 * paxosrsm_submit: submit op (len bytes, copied) and wait until it has been
 * agreed and applied on this replica (with every op before it), then hand back
 * apply's result (*res malloc'ed or NULL, *res_len; res may be NULL to drop
 * it). `cl` NULL or cl->session 0: no duplicate detection (reads, internal
 * ops). With a session: if (session, seq) was applied already, the op is not
 * applied again and the stored result is returned (a seq below the last
 * applied one: DKV_ERR_EXPIRED, its result is gone). timeout_ms 0 = wait
 * forever. Concurrent submits are batched into shared Paxos instances (the one
 * batcher). Returns DKV_OK, DKV_ERR_TIMEOUT (the op may still be applied
 * later, at most once), DKV_ERR_EXPIRED, DKV_ERR_KILLED, DKV_ERR_NOMEM,
 * DKV_ERR_INVAL (op too large).
 */
int paxosrsm_submit(paxosrsm *rsm, const paxosrsm_client *cl, const void *op, size_t len,
                    unsigned timeout_ms, void **res, size_t *res_len);

/* What a replica is doing, for operators (dkvctl status) and tests. */
typedef enum {
	PAXOSRSM_VOTING = 1,   /* caught up (as far as it knows) and voting */
	PAXOSRSM_REJOINING,    /* restarted without its state: not voting yet */
	PAXOSRSM_CATCHING_UP,  /* voting, but restoring a peer's snapshot / behind */
	PAXOSRSM_STOPPED       /* killed, or stopped itself (see the log) */
} paxosrsm_role;

typedef struct paxosrsm_info {
	paxosrsm_role role;
	uint64_t incarnation;  /* this peer's incarnation (new at every start without state) */
	int applied;           /* every seq below this is applied (or covered by a snapshot) */
	int paxos_max, paxos_min;
	int snapshot_seq;      /* position of the last snapshot taken or restored, -1 */
	unsigned long sessions;/* client sessions held */
	unsigned long snapshots_sent, snapshots_restored;
} paxosrsm_info;

/* paxosrsm_get_info: fill *out. Works on a killed replica. */
void paxosrsm_get_info(paxosrsm *rsm, paxosrsm_info *out);

#ifdef __cplusplus
}
#endif

#endif /* DKV_PAXOSRSM_H */
