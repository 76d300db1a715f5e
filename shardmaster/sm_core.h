/*
 * shardmaster/sm_core.h — the shard master's pure core (internal; the tests
 * include it too): the rebalancing rule (rebalance.c) and the replicated state
 * machine that keeps the configuration history and the at-most-once table
 * (state.c). No sockets, threads, clocks or randomness here; the server feeds
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

/* Most clerks remembered for at-most-once; the least recently used is forgotten. */
#define SM_DUP_MAX 1024

typedef struct {
	uint64_t client_id;
	uint64_t seq;      /* the clerk's last applied Join/Leave/Move */
	int err;           /* and its result */
	uint64_t last_use; /* sm_state.nops when it was applied (for LRU eviction) */
} sm_dup_entry;

/*
 * The replicated state. Not thread-safe: the owner serialises calls (the
 * server's mutex). configs[i].num == i for every i < nconfigs; configs[0] has
 * no groups and every shard on gid 0.
 */
typedef struct {
	shardmaster_config *configs;
	int nconfigs;
	int cap;
	sm_dup_entry *dups; /* SM_DUP_MAX slots, ndups in use */
	int ndups;
	uint64_t nops;      /* mutations applied (Join, Leave, Move), the LRU clock */
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

/*
 * At-most-once. sm_state_seen: true when the clerk's request `seq` (or a
 * later one) was already applied; then *err (may be NULL) is the recorded
 * result (DKV_OK when a later request replaced it). sm_state_record: remember
 * that `seq` was applied with result `err` (evicting the least recently used
 * clerk when the table is full), and advance the LRU clock.
 */
bool sm_state_seen(const sm_state *st, uint64_t client_id, uint64_t seq, int *err);
void sm_state_record(sm_state *st, uint64_t client_id, uint64_t seq, int err);

#endif /* DKV_SM_CORE_H */
