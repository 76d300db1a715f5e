/*
 * dkv/shardkv.h — a sharded key/value store: replica groups, each a Paxos-
 * replicated state machine, serve the SHARDMASTER_NSHARDS shards that the shard
 * master assigns to them, and hand shards over as the configuration changes.
 *
 * Each replica of a group polls the shard master every SHARDKV_TICK_MS. The
 * group writes every client operation and every reconfiguration into its Paxos
 * log, so all replicas agree on which operations came before a reconfiguration
 * and which after. Configurations are processed one at a time, in order: the
 * group moves to configuration n+1 only when it holds every shard it owns in n.
 * A key whose shard the group does not own at that point of its log is answered
 * with DKV_ERR_WRONG_GROUP. A new owner pulls a shard, with its at-most-once
 * table, from the group that owned it in the previous configuration; the old
 * owner keeps a copy until the new owner confirms it has installed the shard,
 * then frees it.
 *
 * Keys are at most DKV_KEY_MAX bytes and values at most DKV_VALUE_MAX bytes (an
 * Append counts the value it would produce): over that a call returns
 * DKV_ERR_INVAL. A Get of a key never written yields DKV_OK and "".
 * Client operations are linearizable, also across reconfigurations; Put and
 * Append are applied at most once even when the clerk retries or the shard moves.
 *
 * Sessions: a clerk's Puts and Appends run under a session whose id the shard
 * master hands out (global, increasing). Each shard remembers a bounded number
 * of sessions (the least recently used is expired when more arrive), and the
 * table moves with the shard. A clerk whose session expired follows one rule:
 * if no earlier attempt of the call can have been applied, it opens a new
 * session and sends the call again, transparently; otherwise the call returns
 * DKV_ERR_EXPIRED — the Put or Append may or may not have been applied, and it
 * is never applied twice. Gets carry no session.
 */
#ifndef DKV_SHARDKV_H
#define DKV_SHARDKV_H

#include <stdbool.h>
#include <stdint.h>

#include "dkv/common.h"
#include "dkv/paxos.h"
#include "dkv/shardmaster.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How often a replica polls the shard master for a newer configuration. */
#define SHARDKV_TICK_MS 250

typedef struct shardkv_server shardkv_server;
typedef struct shardkv_clerk shardkv_clerk;

/*
 * shardkv_key2shard: the shard of `key`: its first byte modulo
 * SHARDMASTER_NSHARDS, 0 for "" (and for NULL). Pure; thread-safe.
 */
int shardkv_key2shard(const char *key);

/* ------------------------------------------------------------------ server */

/*
 * shardkv_server_start: replica `me` of group `gid` (> 0), whose replicas are
 * servers[0..n-1]; servers[me] is where this replica listens and serves both the
 * shardkv and the Paxos RPC programs, servers[i] (i != me) is how it reaches
 * replica i's Paxos peer. Other groups and clerks reach the group under the
 * names given to the shard master's Join. `shardmasters` (nsm names) is the
 * shard master it polls; it never calls Join itself. Every array and string is
 * copied. Returns NULL and sets errno on failure (EINVAL: bad arguments;
 * EADDRINUSE; ENOMEM …). Does not block. Release with shardkv_server_free().
 */
shardkv_server *shardkv_server_start(int64_t gid, const char *const *shardmasters, int nsm,
                                     const char *const *servers, int n, int me);

/* shardkv_server_start_opts: shardkv_server_start with start options
 * (dkv_server_opts, dkv/common.h); opts NULL = the plain start. */
shardkv_server *shardkv_server_start_opts(int64_t gid, const char *const *shardmasters, int nsm,
                                          const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts);

/*
 * shardkv_server_kill: stop serving: calls waiting in this replica return
 * DKV_ERR_KILLED to their clerks, the Paxos peer is killed, the poller thread
 * is joined and the listening socket is closed. Blocks until then (at most
 * about one shard-master call timeout, ~1 s). Idempotent; thread-safe.
 * shardkv_server_paxos() still works afterwards.
 */
void shardkv_server_kill(shardkv_server *s);

/* shardkv_server_free: kill if needed, then release everything, including the
 * Paxos peer and every shard the replica still holds. NULL is a no-op. */
void shardkv_server_free(shardkv_server *s);

/*
 * shardkv_server_set_unreliable: while on, incoming requests to this endpoint
 * (shardkv, migration and Paxos alike) are dropped with probability 0.1, or
 * served with the reply dropped with probability 0.2 of the rest. Thread-safe.
 */
void shardkv_server_set_unreliable(shardkv_server *s, bool on);

/*
 * shardkv_server_paxos: the replica's Paxos peer, for inspection (paxos_min,
 * paxos_max, paxos_rpc_count). Borrowed: owned by the server, valid until
 * shardkv_server_free(); works after kill.
 */
paxos *shardkv_server_paxos(shardkv_server *s);

/* ------------------------------------------------------------------ clerk */

/*
 * shardkv_clerk_new: a clerk over the shard master at shardmasters[0..nsm-1]
 * (names copied). It routes each call by the latest configuration it has seen,
 * and asks the shard master again after DKV_ERR_WRONG_GROUP or when no replica
 * of the owning group answers. Returns NULL and sets errno on failure
 * (EINVAL, ENOMEM). A clerk is used by one thread at a time.
 */
shardkv_clerk *shardkv_clerk_new(const char *const *shardmasters, int nsm);

/* shardkv_clerk_free: release the clerk. NULL is a no-op. */
void shardkv_clerk_free(shardkv_clerk *c);

/*
 * shardkv_clerk_set_timeout: give every later call a deadline of about `ms`
 * milliseconds (0, the default: retry forever). A call that has not succeeded
 * by then returns DKV_ERR_TIMEOUT; a Put or Append that timed out may or may
 * not have been applied (and is then applied at most once).
 */
void shardkv_clerk_set_timeout(shardkv_clerk *c, unsigned ms);

/*
 * shardkv_clerk_get: the value of `key` (borrowed). On DKV_OK *value is a fresh
 * malloc'ed string ("" for a key never written) that the caller frees with
 * free(); on any error *value is NULL. Blocks until a group that owns the
 * key's shard answers, or the deadline passes (DKV_ERR_TIMEOUT).
 * DKV_ERR_INVAL: key or value NULL, key longer than DKV_KEY_MAX.
 */
int shardkv_clerk_get(shardkv_clerk *c, const char *key, char **value);

/*
 * shardkv_clerk_put / shardkv_clerk_append: set `key` to `value`, or append
 * `value` to it (both borrowed). Blocks like shardkv_clerk_get. DKV_ERR_INVAL:
 * key or value NULL, key over DKV_KEY_MAX, value (for Append: the value it
 * would produce) over DKV_VALUE_MAX. DKV_ERR_EXPIRED: the clerk's session
 * expired while the call was retried (see the top of this file).
 */
int shardkv_clerk_put(shardkv_clerk *c, const char *key, const char *value);
int shardkv_clerk_append(shardkv_clerk *c, const char *key, const char *value);

#ifdef __cplusplus
}
#endif

#endif /* DKV_SHARDKV_H */
