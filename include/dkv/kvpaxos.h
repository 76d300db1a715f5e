/*
 * dkv/kvpaxos.h — a linearizable key/value store replicated with Paxos.
 *
 * n replicas each run a kvpaxos_server; every Get, Put and Append is an
 * operation in a Paxos-agreed log (through paxosrsm), so a replica that cannot
 * reach a majority completes nothing, not even a Get. A lagging replica catches
 * up from the log. Clerks retry across replicas until a call succeeds (or their
 * deadline passes); Put and Append are applied at most once across retries.
 *
 * Keys are at most DKV_KEY_MAX bytes, values at most DKV_VALUE_MAX bytes (an
 * Append counts the value it would produce); over that a call returns
 * DKV_ERR_INVAL. A Get of a key never written yields DKV_OK and "".
 *
 * Thread-safety: every server function may be called from any thread; a clerk
 * is used by one thread at a time (different clerks in parallel are fine).
 */
#ifndef DKV_KVPAXOS_H
#define DKV_KVPAXOS_H

#include "dkv/common.h"
#include "dkv/paxos.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * At-most-once. A clerk opens a session (an operation in the replicas' log,
 * which assigns its id) before its first Put or Append and numbers its writes
 * in it; the replicas keep, per session, the last write applied and its
 * answer, in a table of bounded size (PAXOSRSM_SESSIONS_MAX sessions: opening
 * one more forgets the least recently used, a decision taken in the log —
 * no clock of any replica is ever compared). A clerk whose session was
 * forgotten gets DKV_ERR_EXPIRED from the replicas: if that is the answer to
 * the first attempt of a write, the write was never applied anywhere, so the
 * clerk opens a new session and sends it again by itself; if an earlier
 * attempt had been sent, the call returns DKV_ERR_EXPIRED (it may or may not
 * have been applied; it will not be applied later).
 */

typedef struct kvpaxos_server kvpaxos_server;
typedef struct kvpaxos_clerk kvpaxos_clerk;

/* ------------------------------------------------------------------ server */

/*
 * kvpaxos_server_start: replica `me` of `n`. `servers[i]` is the name under
 * which this replica reaches replica i (servers[me] is its own endpoint, where
 * it listens and serves both the kvpaxos and the Paxos RPC programs).
 * The array and strings are copied. Returns NULL and sets errno on failure
 * (EINVAL for bad arguments, EADDRINUSE, ENOMEM, …). Does not block.
 * Release with kvpaxos_server_free().
 */
kvpaxos_server *kvpaxos_server_start(const char *const *servers, int n, int me);

/* kvpaxos_server_start_opts: kvpaxos_server_start with start options (see
 * dkv_server_opts in dkv/common.h); opts NULL = the plain start. */
kvpaxos_server *kvpaxos_server_start_opts(const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts);

/*
 * kvpaxos_server_kill: stop serving: calls waiting in this replica return
 * DKV_ERR_KILLED to their clerks, the Paxos peer is killed, every thread is
 * joined and the listening socket is closed. Blocks until then (at most about
 * one RPC timeout). Idempotent; thread-safe. kvpaxos_server_paxos() still works.
 */
void kvpaxos_server_kill(kvpaxos_server *kv);

/* kvpaxos_server_free: kill if needed, then release everything, including the
 * Paxos peer. NULL is a no-op. */
void kvpaxos_server_free(kvpaxos_server *kv);

/*
 * kvpaxos_server_set_unreliable: while on, incoming requests to this endpoint
 * (kvpaxos and Paxos alike) are dropped with probability 0.1, or served with
 * the reply dropped with probability 0.2 of the rest. Thread-safe.
 */
void kvpaxos_server_set_unreliable(kvpaxos_server *kv, bool on);

/*
 * kvpaxos_server_paxos: the replica's Paxos peer, for inspection (paxos_min,
 * paxos_max, paxos_rpc_count). Borrowed: owned by the server, valid until
 * kvpaxos_server_free(); works after kill.
 */
paxos *kvpaxos_server_paxos(kvpaxos_server *kv);

/* ------------------------------------------------------------------ clerk */

/*
 * kvpaxos_clerk_new: a clerk over `n` replicas (names copied). Calls try the
 * replica that answered last, then the others in turn. Returns NULL and sets
 * errno on failure. A clerk is used by one thread at a time.
 * Release with kvpaxos_clerk_free() (NULL is a no-op).
 */
kvpaxos_clerk *kvpaxos_clerk_new(const char *const *servers, int n);
void kvpaxos_clerk_free(kvpaxos_clerk *ck);

/*
 * kvpaxos_clerk_set_timeout: a deadline for each later call: a call that has
 * not succeeded after about `ms` returns DKV_ERR_TIMEOUT (a Put or Append that
 * timed out may or may not have been applied). 0 (the default): retry forever.
 */
void kvpaxos_clerk_set_timeout(kvpaxos_clerk *ck, unsigned ms);

/*
 * kvpaxos_clerk_get: the current value of `key` (borrowed), in *value: a fresh
 * malloc'ed string the caller frees with free(); "" if the key was never
 * written. Blocks until a replica in a majority answers or the deadline passes.
 * Returns DKV_OK, DKV_ERR_INVAL (key too long, NULL), DKV_ERR_TIMEOUT; on an
 * error *value is NULL.
 */
int kvpaxos_clerk_get(kvpaxos_clerk *ck, const char *key, char **value);

/*
 * kvpaxos_clerk_put / kvpaxos_clerk_append: set `key` to `value`, or to its
 * current value followed by `value` (both borrowed). Applied at most once.
 * Blocks like kvpaxos_clerk_get. Returns DKV_OK, DKV_ERR_INVAL (too long: an
 * Append that would make the value longer than DKV_VALUE_MAX is not applied),
 * DKV_ERR_TIMEOUT (the deadline passed: it may or may not have been applied),
 * DKV_ERR_EXPIRED (the clerk's session was forgotten after the write had been
 * sent: it may or may not have been applied; see "At-most-once" above).
 */
int kvpaxos_clerk_put(kvpaxos_clerk *ck, const char *key, const char *value);
int kvpaxos_clerk_append(kvpaxos_clerk *ck, const char *key, const char *value);

#ifdef __cplusplus
}
#endif

#endif /* DKV_KVPAXOS_H */
