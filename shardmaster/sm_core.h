/*
 * shardmaster/sm_core.h — the shard master's pure core (internal; the tests
 * include it too): the rebalancing rule (rebalance.c) and the replicated state
 * machine that keeps the configuration history
 * (state.c), and its engine face: apply / snapshot / restore on encoded ops
 * (machine.c). No sockets, threads, clocks or randomness here; the server feeds
 * it the ops paxosrsm agreed on, in log order, under its own lock.
 */
#ifndef DKV_SM_CORE_H
#define DKV_SM_CORE_H

#include <stdbool.h>
#include <stdint.h>

#include "dkv/shardmaster.h"

/* ------------------------------------------------------------ rebalance.c */

/*
 * sm_rebalance: reassign cfg->shards among cfg->groups (any order, unique gids
 * > 0) so that every shard is on a group of cfg, the groups' shard counts
 * differ by at most one, and as few shards as possible change group. Shards on
 * a gid that is not in cfg->groups (0 included) always move; with no groups
 * every shard goes to gid 0. The result depends only on the previous shards and
 * the set of gids: the extra shards (NSHARDS mod ngroups) go to the groups that
 * hold the most shards, smaller gid first among equals; a group over its target
 * gives up its highest-numbered shards; the freed shards, lowest number first,
 * fill the groups under target in that same order.
 * Touches only cfg->shards; allocates nothing. Returns the number of shards
 * whose gid changed.
 */
int sm_rebalance(shardmaster_config *cfg);

/*
 * sm_config_find_group: the group of `cfg` with gid `gid`, or NULL. Borrowed
 * from cfg.
 */
shardmaster_group *sm_config_find_group(const shardmaster_config *cfg, int64_t gid);

/*
 * sm_config_copy: deep-copy `src` into the caller-owned *dst (whose previous
 * contents are not freed). DKV_OK or DKV_ERR_NOMEM (then *dst holds nothing).
 * Release with sm_config_destroy.
 */
int sm_config_copy(shardmaster_config *dst, const shardmaster_config *src);

/* sm_config_destroy: free what *c points to (not c itself) and zero it. */
void sm_config_destroy(shardmaster_config *c);

/* ------------------------------------------------------------ state.c */

/* Most groups in a configuration (a Join beyond it is refused: the reply to a
 * Query must stay a reasonable RPC); the wire format's bound is the same. */
#define SM_MAX_GROUPS 10000
/* Most servers per group in a Join. */
#define SM_MAX_SERVERS 64

/*
 * The replicated state. Not thread-safe: the owner serialises calls (the
 * server's mutex). configs[i].num == i for every i < nconfigs; configs[0] has
 * no groups and every shard on gid 0. last_id: the last global session id
 * handed out (SM_OP_NEW_ID; 0: none yet). At-most-once is not here: paxosrsm
 * keeps the shard-master clerks' sessions.
 */
typedef struct {
	shardmaster_config *configs;
	int nconfigs;
	int cap;
	uint64_t last_id;
} sm_state;

/* sm_state_init: config 0 only. DKV_OK or DKV_ERR_NOMEM (nothing to destroy). */
int sm_state_init(sm_state *st);
/* sm_state_destroy: free everything; NULL-safe. */
void sm_state_destroy(sm_state *st);

/*
 * The mutations. Each either changes nothing or appends exactly one
 * configuration, and changes nothing when it fails.
 * - sm_state_join: `servers` (n names, copied) as group `gid`, then rebalance.
 *   gid already present: no-op, DKV_OK.
 * - sm_state_leave: drop group `gid`, then rebalance. Unknown gid: no-op, DKV_OK.
 * - sm_state_move: shard → gid, no rebalance. Already there: no-op, DKV_OK;
 *   gid not in the latest configuration: DKV_ERR_INVAL.
 * DKV_ERR_INVAL for malformed arguments (gid <= 0, n <= 0 or > SM_MAX_SERVERS,
 * a NULL, empty or too long name, shard out of range) and for a Join when the
 * configuration already has SM_MAX_GROUPS groups; DKV_ERR_NOMEM.
 */
int sm_state_join(sm_state *st, int64_t gid, const char *const *servers, int n);
int sm_state_leave(sm_state *st, int64_t gid);
int sm_state_move(sm_state *st, int shard, int64_t gid);

/*
 * sm_state_query: configuration `num`, or the latest when num < 0 or past
 * the last. Borrowed: valid until the next mutation of st.
 */
const shardmaster_config *sm_state_query(const sm_state *st, int num);

/* ------------------------------------------------------------ machine.c */

/*
 * The state machine paxosrsm runs (pure; the server wraps each in its lock):
 * - sm_machine_apply: one agreed op (XDR sm_op bytes). *res / *res_len get a
 *   malloc'ed XDR sm_result (the op's err: DKV_OK or DKV_ERR_INVAL for a
 *   refused or undecodable op, the same on every replica; and for NEW_ID the
 *   id). Returns DKV_OK, or DKV_ERR_NOMEM with the state unchanged (the
 *   engine then stops the replica).
 * - sm_machine_snapshot: the whole state as XDR sm_snapshot bytes (*buf
 *   malloc'ed). DKV_OK, DKV_ERR_NOMEM.
 * - sm_machine_restore: replace the whole state by a snapshot's. DKV_OK,
 *   DKV_ERR_INVAL (malformed: not a snapshot, config numbers not 0..n-1, a
 *   config 0 with groups), DKV_ERR_NOMEM; on error st is unchanged.
 * - sm_result_decode: read an sm_result. DKV_OK or DKV_ERR_INVAL.
 */
int sm_machine_apply(sm_state *st, const void *op, size_t len, void **res, size_t *res_len);
int sm_machine_snapshot(const sm_state *st, void **buf, size_t *len);
int sm_machine_restore(sm_state *st, const void *buf, size_t len);
int sm_result_decode(const void *res, size_t len, int *err, uint64_t *id);

/* ------------------------------------------------------------ server.c */

/* sm_server_rsm: the replica's engine, for tests (paxosrsm_get_info).
 * Borrowed; valid until shardmaster_server_free. */
struct paxosrsm;
struct paxosrsm *sm_server_rsm(shardmaster_server *s);

#endif /* DKV_SM_CORE_H */
