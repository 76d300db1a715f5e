/*
 * dkv/paxos.h — a Paxos library: agreement on a sequence of instances.
 *
 * A set of peers (one paxos object each, usually in different processes)
 * agrees, for each instance number `seq` >= 0, on one value (a byte string).
 * Instances are independent and may run concurrently, in any order. The
 * application proposes with paxos_start(), learns with paxos_status() (local,
 * no RPC), and says with paxos_done() which instances it no longer needs; once
 * every peer has said so, the instances are forgotten and their memory freed.
 *
 * Thread-safety: every function may be called from any thread at any time, on a
 * live or a killed object (except after paxos_free). No function blocks on the
 * network; paxos_kill waits for the object's own threads.
 */
#ifndef DKV_PAXOS_H
#define DKV_PAXOS_H

#include <stdbool.h>
#include <stddef.h>

#include "dkv/common.h"
#include "dkv/rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct paxos paxos;

typedef enum { PAXOS_DECIDED = 1, PAXOS_PENDING, PAXOS_FORGOTTEN } paxos_fate;

/*
 * paxos_make: a new Paxos peer. `peers` (npeers names; copied) lists every peer
 * of the group in the same order for everyone; peers[me] is this peer's own
 * name. With rpcs == NULL the peer listens at peers[me] itself (a stale socket
 * file there is removed); otherwise it registers its RPC program on `rpcs`
 * (borrowed; it must listen at peers[me] and outlive the peer), which keeps
 * serving its other programs after paxos_kill. The same peer may be known to
 * different peers under different names. At most 64 peers (the wire format
 * bounds every list it carries). A value given to paxos_start may be up to
 * DKV_VALUE_MAX plus 1 MiB; a longer one is refused (logged, never proposed).
 * Returns NULL and sets errno on failure (EINVAL: bad arguments, more than 64
 * peers; EADDRINUSE; ENOMEM …).
 */
paxos *paxos_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs);

/*
 * paxos_make_opts: paxos_make with start options (API.md "Durability, restarts
 * and catch-up"); opts NULL = paxos_make. opts->dir: the peer's acceptor state
 * is kept there; opts->restart: rejoin without voting where state was lost.
 */
paxos *paxos_make_opts(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                       const dkv_server_opts *opts);

/*
 * paxos_start: propose `value` (len bytes, copied) for instance `seq`. Returns
 * at once; agreement runs in the background until the instance is decided, is
 * forgotten or the peer is killed. Ignored when seq < paxos_min(), when this peer
 * already proposes for seq or knows it decided, or after kill. Several peers may
 * propose different values for the same seq: one of the proposed values wins.
 */
void paxos_start(paxos *px, int seq, const void *value, size_t len);

/*
 * paxos_status: what this peer knows of instance `seq`, without any RPC.
 * PAXOS_DECIDED: *value (if value != NULL) is a fresh malloc'ed copy of the
 * decided value (plus a NUL byte after it, not counted in *len) that the caller
 * frees with free(); PAXOS_PENDING / PAXOS_FORGOTTEN (seq < paxos_min()):
 * *value = NULL, *len = 0. value and len may be NULL. On allocation failure of
 * the copy, PAXOS_DECIDED is returned with *value = NULL.
 */
paxos_fate paxos_status(paxos *px, int seq, void **value, size_t *len);

/*
 * paxos_done: the application no longer needs instances <= seq. Only moves
 * forward: a lower seq than an earlier call changes nothing. The value reaches
 * the other peers on the next protocol messages.
 */
void paxos_done(paxos *px, int seq);

/* paxos_max: the highest instance number this peer has heard of, or -1. */
int paxos_max(paxos *px);

/*
 * paxos_min: one more than the smallest Done value over all peers as known here
 * (-1 for a peer never heard from, so 0 until then). Instances below it are
 * forgotten and their memory released. It may lag until the next agreement.
 */
int paxos_min(paxos *px);

/*
 * paxos_kill: stop the peer. When it returns no Paxos RPC reaches it, it sends
 * none, all its threads have been joined, and (rpcs == NULL) its listening socket
 * is closed; with a shared rpcs only its program is removed. Idempotent.
 */
void paxos_kill(paxos *px);

/* paxos_free: kill if needed, then release everything. NULL is a no-op. */
void paxos_free(paxos *px);

/*
 * paxos_set_unreliable: turn the lab's unreliable mode on or off for the
 * endpoint this peer is served on (with a shared rpcs: for every program on it).
 */
void paxos_set_unreliable(paxos *px, bool on);

/*
 * paxos_rpc_count: Paxos RPCs received and served by this peer (those whose
 * reply is dropped included, those dropped unread not). Works after kill.
 */
unsigned long paxos_rpc_count(const paxos *px);

#ifdef __cplusplus
}
#endif

#endif /* DKV_PAXOS_H */
