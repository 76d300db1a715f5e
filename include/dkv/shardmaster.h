/*
 * dkv/shardmaster.h — the shard master: a Paxos-replicated service that keeps
 * the numbered history of shard configurations (which replica group serves
 * which of the SHARDMASTER_NSHARDS shards) for shardkv.
 *
 * Configuration 0 has no groups and every shard on gid 0 ("no group"). Every
 * Join, Leave or Move that changes something makes configuration num+1.
 * Join and Leave rebalance: afterwards the groups' shard counts differ by at
 * most one, and as few shards as possible have changed group. The result is
 * deterministic: it depends only on the previous assignment and the set of
 * group ids (ties are broken by smaller gid first), never on the order in which
 * groups joined. Move assigns one shard and does not rebalance (a later Join or
 * Leave may move the shard again).
 *
 * Idempotence: a Join of a gid already in the latest configuration and a
 * Leave of a gid not in it change nothing (no new configuration; the known
 * group keeps its first server list); so does a Move of a shard to the group
 * that already has it. A Move to a gid that is not in the latest configuration
 * is refused (DKV_ERR_INVAL, no new configuration). A clerk's retried Join,
 * Leave or Move is applied at most once (a session kept in the shard master's
 * log + a sequence number).
 *
 * Sessions expire: the replicas remember a bounded number of clerk sessions
 * (PAXOSRSM_SESSIONS_MAX, dkv/paxosrsm.h); opening one beyond that expires the
 * least recently used, a decision taken in the log. A clerk whose session
 * expired follows one rule: if the expiry is reported to the first attempt of
 * a request (nothing of it can have been applied), the clerk opens a new
 * session and sends the request again, transparently; if it is reported to a
 * retry (an earlier attempt may have been applied), the call returns
 * DKV_ERR_EXPIRED — the request may or may not have been applied, and it is
 * never applied twice.
 */
#ifndef DKV_SHARDMASTER_H
#define DKV_SHARDMASTER_H

#include <stdint.h>

#include "dkv/common.h"
#include "dkv/paxos.h"
#include "dkv/rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHARDMASTER_NSHARDS 10

/* One replica group: its gid (> 0) and its servers' names, in Join order. */
typedef struct {
	int64_t gid;
	int nservers;
	char **servers;
} shardmaster_group;

/*
 * One configuration. shards[i] is the gid serving shard i (0: none). `groups`
 * (ngroups entries) has no defined order: look a group up by gid. A
 * configuration returned by shardmaster_clerk_query is owned by the caller and
 * released with shardmaster_config_free.
 */
typedef struct {
	int num;
	int64_t shards[SHARDMASTER_NSHARDS];
	int ngroups;
	shardmaster_group *groups;
} shardmaster_config;

/* shardmaster_config_free: release `c` and everything it points to. NULL is a no-op. */
void shardmaster_config_free(shardmaster_config *c);

/* ------------------------------------------------------------ server */

typedef struct shardmaster_server shardmaster_server;

/*
 * shardmaster_server_start: start replica `me` of the shard master whose
 * replicas are servers[0..n-1] (names, copied; servers[me] is where this one
 * listens, and the others are how it reaches its Paxos peers). The shard-master
 * RPCs and Paxos share that one endpoint. Returns NULL and sets errno on
 * failure (EINVAL: servers NULL, me outside [0, n), a name that is not a dkv
 * endpoint name; EADDRINUSE; ENOMEM …). Does not block.
 * Release with shardmaster_server_free. Every server function may be called
 * from any thread.
 */
shardmaster_server *shardmaster_server_start(const char *const *servers, int n, int me);

/* shardmaster_server_start_opts: shardmaster_server_start with start options
 * (dkv_server_opts, dkv/common.h); opts NULL = the plain start. */
shardmaster_server *shardmaster_server_start_opts(const char *const *servers, int n, int me,
                                                  const dkv_server_opts *opts);

/*
 * shardmaster_server_kill: stop serving; requests waiting for agreement fail
 * with DKV_ERR_KILLED. When it returns no RPC reaches the replica, it sends
 * none, its threads have ended and its socket is closed. Idempotent.
 */
void shardmaster_server_kill(shardmaster_server *s);

/* shardmaster_server_free: kill if needed, release everything. NULL is a no-op. */
void shardmaster_server_free(shardmaster_server *s);

/*
 * shardmaster_server_set_unreliable: drop requests / replies on this replica's
 * endpoint (shard-master and Paxos RPCs alike), as dkv_rpc_server_set_unreliable.
 * No effect after kill.
 */
void shardmaster_server_set_unreliable(shardmaster_server *s, bool on);

/*
 * shardmaster_server_paxos: the replica's Paxos peer, for inspection
 * (paxos_min, paxos_max, paxos_rpc_count). Borrowed: owned by the server,
 * valid until shardmaster_server_free; still readable after kill.
 */
paxos *shardmaster_server_paxos(shardmaster_server *s);

/* ------------------------------------------------------------ clerk */

typedef struct shardmaster_clerk shardmaster_clerk;

/*
 * shardmaster_clerk_new: a clerk for the shard master at servers[0..n-1]
 * (copied). Returns NULL and sets errno on failure (EINVAL: servers NULL,
 * n <= 0, or a name that is not a dkv endpoint name; ENOMEM). Does not dial.
 * One thread at a time may use a clerk.
 */
shardmaster_clerk *shardmaster_clerk_new(const char *const *servers, int n);

/* shardmaster_clerk_free: release the clerk. NULL is a no-op. */
void shardmaster_clerk_free(shardmaster_clerk *c);

/*
 * shardmaster_clerk_set_timeout: give every later call a deadline of about
 * `ms` milliseconds; 0 (the default) retries forever. A Join, Leave or Move
 * that timed out may or may not have been applied.
 */
void shardmaster_clerk_set_timeout(shardmaster_clerk *c, unsigned ms);

/*
 * The calls below block until a replica that is part of a majority has applied
 * the request (trying the replicas in turn, with a short backoff between
 * rounds), or the deadline passes (DKV_ERR_TIMEOUT). Arguments are borrowed.
 * DKV_ERR_INVAL: c NULL, gid <= 0, shard outside [0, SHARDMASTER_NSHARDS),
 * servers NULL, n <= 0 or n > 64, a server name NULL, empty or longer than
 * DKV_NAME_MAX - 1, num < -1, out NULL — or, decided by the replicas, a Move
 * to a gid that is not in the latest configuration, or a Join when the
 * configuration already has 10000 groups. DKV_ERR_EXPIRED (Join, Leave, Move):
 * the clerk's session expired while it retried (see the top of this file).
 */
int shardmaster_clerk_join(shardmaster_clerk *c, int64_t gid, const char *const *servers, int n);
int shardmaster_clerk_leave(shardmaster_clerk *c, int64_t gid);
int shardmaster_clerk_move(shardmaster_clerk *c, int shard, int64_t gid);

/*
 * shardmaster_clerk_query: configuration `num`, or the latest when num is -1 or
 * past the last one. The latest reflects every Join, Leave and Move that
 * completed before the call began. On DKV_OK *out is a fresh configuration the
 * caller releases with shardmaster_config_free; on error *out is NULL.
 */
int shardmaster_clerk_query(shardmaster_clerk *c, int num, shardmaster_config **out);

#ifdef __cplusplus
}
#endif

#endif /* DKV_SHARDMASTER_H */
