/*
 * shardmaster/rebalance.c — the rebalancing rule, pure (no allocation, no I/O).
 *
 * The lab's rule: after a Join or Leave, "divide the shards as evenly as
 * possible among the groups, and move as few shards as possible".
 *
 * With n groups and S shards, a balanced assignment gives every group q = S/n
 * or q+1 shards, and exactly r = S%n groups get q+1 (n > S: q = 0, so S groups
 * get one shard and the rest none). A group with c shards and target t keeps
 * min(c, t) of them, so the number kept is maximal when the r larger targets go
 * to the groups holding the most shards. Order the groups by (shards held,
 * descending; gid, ascending): the first min(n, S) form the set that will hold
 * shards — it contains every group holding a shard, since at most S of them
 * can — and the first r of those get q+1. Shards on a gid outside the
 * configuration, and the highest-numbered shards of groups over target, are
 * freed; freed shards, lowest first, fill groups under target in that order.
 * Every choice is made by shard number or by gid, never by array position, so
 * every replica computes the same result from the same set of groups.
 *
 * Cost: O(S·n) time, O(S) stack — no sort of the (possibly many) groups.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "sm_core.h"

enum { NS = SHARDMASTER_NSHARDS };

/* One member of the set of groups that will hold shards. */
typedef struct {
	int64_t gid;
	int count;  /* shards held before rebalancing */
	int target; /* shards it holds afterwards */
} holder;

shardmaster_group *sm_config_find_group(const shardmaster_config *cfg, int64_t gid)
{
	for (int i = 0; i < cfg->ngroups; i++)
		if (cfg->groups[i].gid == gid)
			return &cfg->groups[i];
	return NULL;
}

static int shards_held(const shardmaster_config *cfg, int64_t gid)
{
	int c = 0;
	for (int i = 0; i < NS; i++)
		if (cfg->shards[i] == gid)
			c++;
	return c;
}

/* true when (ca, ga) comes before (cb, gb): more shards first, then smaller gid. */
static bool ranks_before(int ca, int64_t ga, int cb, int64_t gb)
{
	return ca != cb ? ca > cb : ga < gb;
}

/*
 * pick_holders: the first min(n, NS) groups in rank order, into h[], in that
 * order. Each round picks the best group ranked strictly after the previous
 * pick (ranks are distinct since gids are). Returns how many.
 */
static int pick_holders(const shardmaster_config *cfg, holder h[NS])
{
	int nh = 0;
	int want = cfg->ngroups < NS ? cfg->ngroups : NS;
	while (nh < want) {
		int best = -1, best_count = 0;
		for (int i = 0; i < cfg->ngroups; i++) {
			int64_t g = cfg->groups[i].gid;
			int c = shards_held(cfg, g);
			if (nh > 0 && !ranks_before(h[nh - 1].count, h[nh - 1].gid, c, g))
				continue; /* already picked, or ranked before the last pick */
			if (best < 0 || ranks_before(c, g, best_count, cfg->groups[best].gid)) {
				best = i;
				best_count = c;
			}
		}
		assert(best >= 0);
		h[nh].gid = cfg->groups[best].gid;
		h[nh].count = best_count;
		nh++;
	}
	return nh;
}

static int holder_index(const holder *h, int nh, int64_t gid)
{
	for (int k = 0; k < nh; k++)
		if (h[k].gid == gid)
			return k;
	return -1;
}

int sm_rebalance(shardmaster_config *cfg)
{
	assert(cfg != NULL);
	int64_t before[NS];
	memcpy(before, cfg->shards, sizeof before);

	holder h[NS];
	int nh = pick_holders(cfg, h);
	if (nh == 0) {
		for (int i = 0; i < NS; i++)
			cfg->shards[i] = 0;
	} else {
		/* n > NS gives q == 0, r == NS: one shard to each of the NS holders. */
		int q = NS / cfg->ngroups, r = NS % cfg->ngroups;
		for (int k = 0; k < nh; k++)
			h[k].target = q + (k < r ? 1 : 0);

		/* Free shards on unknown gids, and the highest shards of groups over target. */
		bool is_free[NS] = { false };
		int held[NS];
		for (int k = 0; k < nh; k++)
			held[k] = h[k].count;
		for (int i = NS - 1; i >= 0; i--) {
			int k = holder_index(h, nh, cfg->shards[i]);
			if (k < 0) {
				is_free[i] = true; /* gid 0, or a group not in cfg */
			} else if (held[k] > h[k].target) {
				is_free[i] = true;
				held[k]--;
			}
		}
		/* Fill the groups under target, in rank order, lowest free shard first. */
		int k = 0;
		for (int i = 0; i < NS; i++) {
			if (!is_free[i])
				continue;
			while (k < nh && held[k] >= h[k].target)
				k++;
			assert(k < nh); /* the targets sum to NS */
			cfg->shards[i] = h[k].gid;
			held[k]++;
		}
	}

	int moved = 0;
	for (int i = 0; i < NS; i++)
		if (cfg->shards[i] != before[i])
			moved++;
	return moved;
}
