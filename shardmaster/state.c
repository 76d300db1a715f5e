/*
 * shardmaster/state.c — the shard master's replicated state machine, pure.
 *
 * State: the configuration history (configs[i].num == i; config 0 has no groups
 * and every shard on gid 0) and the last global session id handed out. Every replica applies the same ops in the same order, so
 * every function here must be a function of the state and the op alone: no
 * clock, no randomness, no dependence on addresses or allocation order. Memory
 * failures leave the state unchanged (the caller decides what that means).
 *
 * Each mutation builds the next configuration as a deep copy of the latest
 * (so a configuration handed out stays valid until the next mutation, and the
 * history never changes once written), edits it and, for Join and Leave, runs
 * sm_rebalance. A mutation that changes nothing appends nothing: a Join of a
 * known gid, a Leave of an unknown one, a Move to the shard's current group.
 *
 */
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "sm_core.h"

enum { NS = SHARDMASTER_NSHARDS };

/* ------------------------------------------------------------ configurations */

static void group_destroy(shardmaster_group *g)
{
	if (g->servers != NULL) {
		for (int j = 0; j < g->nservers; j++)
			free(g->servers[j]);
		free(g->servers);
	}
	g->servers = NULL;
	g->nservers = 0;
}

/* group_init: copy n names into *g; DKV_OK or DKV_ERR_NOMEM (then *g is empty). */
static int group_init(shardmaster_group *g, int64_t gid, const char *const *servers, int n)
{
	g->gid = gid;
	g->nservers = 0;
	g->servers = dkv_calloc((size_t)n, sizeof *g->servers);
	if (g->servers == NULL)
		return DKV_ERR_NOMEM;
	for (int j = 0; j < n; j++) {
		g->servers[j] = dkv_strdup(servers[j]);
		if (g->servers[j] == NULL) {
			group_destroy(g);
			return DKV_ERR_NOMEM;
		}
		g->nservers = j + 1;
	}
	return DKV_OK;
}

void sm_config_destroy(shardmaster_config *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < c->ngroups; i++)
		group_destroy(&c->groups[i]);
	free(c->groups);
	memset(c, 0, sizeof *c);
}

int sm_config_copy(shardmaster_config *dst, const shardmaster_config *src)
{
	memset(dst, 0, sizeof *dst);
	dst->num = src->num;
	memcpy(dst->shards, src->shards, sizeof dst->shards);
	if (src->ngroups == 0)
		return DKV_OK;
	dst->groups = dkv_calloc((size_t)src->ngroups, sizeof *dst->groups);
	if (dst->groups == NULL)
		return DKV_ERR_NOMEM;
	for (int i = 0; i < src->ngroups; i++) {
		const shardmaster_group *g = &src->groups[i];
		if (group_init(&dst->groups[i], g->gid, (const char *const *)g->servers,
		               g->nservers) != DKV_OK) {
			sm_config_destroy(dst);
			return DKV_ERR_NOMEM;
		}
		dst->ngroups = i + 1;
	}
	return DKV_OK;
}

/* ------------------------------------------------------------ state */

int sm_state_init(sm_state *st)
{
	memset(st, 0, sizeof *st);
	st->cap = 16;
	st->configs = dkv_calloc((size_t)st->cap, sizeof *st->configs);
	if (st->configs == NULL) {
		memset(st, 0, sizeof *st);
		return DKV_ERR_NOMEM;
	}
	st->nconfigs = 1; /* configs[0]: num 0, no groups, all shards on gid 0 (zeroed) */
	return DKV_OK;
}

void sm_state_destroy(sm_state *st)
{
	if (st == NULL)
		return;
	for (int i = 0; i < st->nconfigs; i++)
		sm_config_destroy(&st->configs[i]);
	free(st->configs);
	memset(st, 0, sizeof *st);
}

static const shardmaster_config *latest(const sm_state *st)
{
	return &st->configs[st->nconfigs - 1];
}

/*
 * begin_next: room for one more configuration in the history, and *next a deep
 * copy of the latest numbered as the next one. DKV_OK or DKV_ERR_NOMEM (state
 * unchanged, *next empty).
 */
static int begin_next(sm_state *st, shardmaster_config *next)
{
	memset(next, 0, sizeof *next);
	if (st->nconfigs == st->cap) {
		int ncap = st->cap * 2;
		shardmaster_config *nc = dkv_realloc(st->configs, (size_t)ncap * sizeof *nc);
		if (nc == NULL)
			return DKV_ERR_NOMEM;
		st->configs = nc;
		st->cap = ncap;
	}
	if (sm_config_copy(next, latest(st)) != DKV_OK)
		return DKV_ERR_NOMEM;
	next->num = st->nconfigs;
	return DKV_OK;
}

static void commit_next(sm_state *st, shardmaster_config *next)
{
	st->configs[st->nconfigs++] = *next;
	memset(next, 0, sizeof *next);
}

int sm_state_join(sm_state *st, int64_t gid, const char *const *servers, int n)
{
	if (gid <= 0 || servers == NULL || n <= 0 || n > SM_MAX_SERVERS)
		return DKV_ERR_INVAL;
	for (int j = 0; j < n; j++)
		if (servers[j] == NULL || servers[j][0] == '\0' || strlen(servers[j]) >= DKV_NAME_MAX)
			return DKV_ERR_INVAL;
	if (sm_config_find_group(latest(st), gid) != NULL)
		return DKV_OK; /* a known group keeps its first server list */
	if (latest(st)->ngroups >= SM_MAX_GROUPS)
		return DKV_ERR_INVAL;

	shardmaster_config next;
	if (begin_next(st, &next) != DKV_OK)
		return DKV_ERR_NOMEM;
	shardmaster_group *ng = dkv_realloc(next.groups, (size_t)(next.ngroups + 1) * sizeof *ng);
	if (ng == NULL) {
		sm_config_destroy(&next);
		return DKV_ERR_NOMEM;
	}
	next.groups = ng;
	if (group_init(&next.groups[next.ngroups], gid, servers, n) != DKV_OK) {
		sm_config_destroy(&next);
		return DKV_ERR_NOMEM;
	}
	next.ngroups++;
	sm_rebalance(&next);
	commit_next(st, &next);
	return DKV_OK;
}

int sm_state_leave(sm_state *st, int64_t gid)
{
	if (gid <= 0)
		return DKV_ERR_INVAL;
	if (sm_config_find_group(latest(st), gid) == NULL)
		return DKV_OK; /* not a member: nothing to do */

	shardmaster_config next;
	if (begin_next(st, &next) != DKV_OK)
		return DKV_ERR_NOMEM;
	shardmaster_group *g = sm_config_find_group(&next, gid);
	int at = (int)(g - next.groups);
	group_destroy(g);
	memmove(&next.groups[at], &next.groups[at + 1],
	        (size_t)(next.ngroups - at - 1) * sizeof *next.groups);
	next.ngroups--;
	if (next.ngroups == 0) {
		free(next.groups);
		next.groups = NULL;
	}
	sm_rebalance(&next);
	commit_next(st, &next);
	return DKV_OK;
}

int sm_state_move(sm_state *st, int shard, int64_t gid)
{
	if (shard < 0 || shard >= NS || gid <= 0)
		return DKV_ERR_INVAL;
	if (sm_config_find_group(latest(st), gid) == NULL)
		return DKV_ERR_INVAL; /* never hand a shard to a group that is not there */
	if (latest(st)->shards[shard] == gid)
		return DKV_OK;

	shardmaster_config next;
	if (begin_next(st, &next) != DKV_OK)
		return DKV_ERR_NOMEM;
	next.shards[shard] = gid;
	commit_next(st, &next);
	return DKV_OK;
}

const shardmaster_config *sm_state_query(const sm_state *st, int num)
{
	if (num < 0 || num >= st->nconfigs)
		return latest(st);
	return &st->configs[num];
}

/* ------------------------------------------------------------ public */

void shardmaster_config_free(shardmaster_config *c)
{
	if (c == NULL)
		return;
	sm_config_destroy(c);
	free(c);
}
