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

#ifdef __cplusplus
}
#endif

#endif /* DKV_PAXOSRSM_H */
