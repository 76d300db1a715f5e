/*
 * tests/test_shardmaster.c — the shard master: the pure rebalancing core and
 * state machine (property tests over seeded random Join/Leave/Move sequences),
 * then the lab's §5.3 cases (Basic in its parts, Unreliable, FreshQuery) on
 * three replicas in this process, then our own service-level cases (many
 * groups, the last group leaving, deadlines, malformed requests, at-most-once
 * through unreliable replicas, lifecycle).
 *
 * The lab's TestBasic is one sequence whose later parts build on the state the
 * earlier ones left; here each part is its own test that first replays the
 * parts before it on a fresh cluster (the replay asserts too), so a failure
 * names the part. Worker threads never call cmocka asserts: they record
 * results, and the test thread checks them after joining.
 */
#include "lib/harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../shardmaster/sm_core.h"
#include "../shardmaster/sm_wire.h"
#include "dkv/paxos.h"
#include "dkv/paxosrsm.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"
#include "sm_prot.h"

enum { NS = SHARDMASTER_NSHARDS, NSM = 3 };

/* ================================================================ helpers */

static const char *const ABC[] = { "a", "b", "c" };

/* count of shards of cfg on gid */
static int count_of(const shardmaster_config *cfg, int64_t gid)
{
	int n = 0;
	for (int i = 0; i < NS; i++)
		if (cfg->shards[i] == gid)
			n++;
	return n;
}

static const shardmaster_group *group_of(const shardmaster_config *cfg, int64_t gid)
{
	for (int i = 0; i < cfg->ngroups; i++)
		if (cfg->groups[i].gid == gid)
			return &cfg->groups[i];
	return NULL;
}

/* Every shard is on a group of cfg (gid 0 everywhere when there is none); gids unique, > 0. */
static void assert_shards_on_members(const shardmaster_config *cfg)
{
	for (int i = 0; i < cfg->ngroups; i++) {
		assert_true(cfg->groups[i].gid > 0);
		for (int j = i + 1; j < cfg->ngroups; j++)
			assert_true(cfg->groups[i].gid != cfg->groups[j].gid);
	}
	for (int s = 0; s < NS; s++) {
		if (cfg->ngroups == 0)
			assert_int_equal(cfg->shards[s], 0);
		else if (group_of(cfg, cfg->shards[s]) == NULL)
			fail_msg("config %d: shard %d on gid %lld, not a member", cfg->num, s,
			         (long long)cfg->shards[s]);
	}
}

static bool is_balanced(const shardmaster_config *cfg)
{
	if (cfg->ngroups == 0)
		return true;
	int lo = NS + 1, hi = -1;
	for (int i = 0; i < cfg->ngroups; i++) {
		int c = count_of(cfg, cfg->groups[i].gid);
		lo = c < lo ? c : lo;
		hi = c > hi ? c : hi;
	}
	return hi <= lo + 1;
}

static bool shards_on_members(const shardmaster_config *cfg)
{
	for (int s = 0; s < NS; s++) {
		if (cfg->ngroups == 0 ? cfg->shards[s] != 0 : group_of(cfg, cfg->shards[s]) == NULL)
			return false;
	}
	return true;
}

/*
 * The fewest shards that must change group to go from `before` to a balanced
 * assignment over cfg's groups: a group with c shards and target t keeps at most
 * min(c, t); targets are q or q+1 with exactly r of the larger, so at most
 * sum(min(c, q)) + min(r, #groups with c > q) shards stay put.
 */
static int fewest_moves(const int64_t before[NS], const shardmaster_config *cfg)
{
	if (cfg->ngroups == 0) {
		int m = 0;
		for (int s = 0; s < NS; s++)
			m += before[s] != 0;
		return m;
	}
	int q = NS / cfg->ngroups, r = NS % cfg->ngroups, keep = 0, over = 0;
	for (int i = 0; i < cfg->ngroups; i++) {
		int c = 0;
		for (int s = 0; s < NS; s++)
			c += before[s] == cfg->groups[i].gid;
		keep += c < q ? c : q;
		over += c > q;
	}
	keep += over < r ? over : r;
	return NS - keep;
}

static int moved_between(const int64_t before[NS], const int64_t after[NS])
{
	int m = 0;
	for (int s = 0; s < NS; s++)
		m += before[s] != after[s];
	return m;
}

/*
 * Rebalance a shallow copy of cfg's groups, shuffled, from `before`, and
 * require the same shards as cfg: the result must not depend on group order.
 */
static void assert_order_independent(const int64_t before[NS], const shardmaster_config *cfg)
{
	shardmaster_config tmp = { .num = cfg->num, .ngroups = cfg->ngroups };
	memcpy(tmp.shards, before, sizeof tmp.shards);
	tmp.groups = calloc((size_t)cfg->ngroups + 1, sizeof *tmp.groups);
	assert_non_null(tmp.groups);
	if (cfg->ngroups > 0)
		memcpy(tmp.groups, cfg->groups, (size_t)cfg->ngroups * sizeof *tmp.groups);
	for (int i = cfg->ngroups - 1; i > 0; i--) {
		int j = (int)(th_rand() % (uint64_t)(i + 1));
		shardmaster_group g = tmp.groups[i];
		tmp.groups[i] = tmp.groups[j];
		tmp.groups[j] = g;
	}
	sm_rebalance(&tmp);
	free(tmp.groups);
	assert_memory_equal(tmp.shards, cfg->shards, sizeof tmp.shards);
}

/* A balanced, minimal, order-independent result over cfg's groups from `before`. */
static void assert_good_rebalance(const int64_t before[NS], const shardmaster_config *cfg)
{
	assert_shards_on_members(cfg);
	if (!is_balanced(cfg))
		fail_msg("config %d is not balanced", cfg->num);
	int moved = moved_between(before, cfg->shards), fewest = fewest_moves(before, cfg);
	if (moved != fewest)
		fail_msg("config %d: %d shards moved, %d would do", cfg->num, moved, fewest);
	assert_order_independent(before, cfg);
}

/* ================================================================ core tests */

typedef struct {
	int nseq, nsteps;
} prop_size;

static prop_size property_size(void)
{
	prop_size z = { 3000, 40 };
	if (th_under_valgrind())
		z.nseq = 300;
	return z;
}

/* One random op on st, then every property the op promises. */
static void random_step(sm_state *st, int64_t maxgid, int seqno, int step)
{
	int before_n = st->nconfigs;
	shardmaster_config prev;
	assert_int_equal(sm_config_copy(&prev, &st->configs[before_n - 1]), DKV_OK);
	bool prev_balanced = is_balanced(&prev) && shards_on_members(&prev);
	int64_t gid = 1 + (int64_t)(th_rand() % (uint64_t)maxgid);
	unsigned roll = (unsigned)(th_rand() % 100);
	const shardmaster_config *next;

	if (roll < 45) { /* Join */
		char a[32], b[32];
		snprintf(a, sizeof a, "g%lld-a", (long long)gid);
		snprintf(b, sizeof b, "g%lld-b", (long long)gid);
		const char *srv[] = { a, b };
		bool known = group_of(&prev, gid) != NULL;
		assert_int_equal(sm_state_join(st, gid, srv, 2), DKV_OK);
		next = &st->configs[st->nconfigs - 1];
		if (known) {
			assert_int_equal(st->nconfigs, before_n);
		} else {
			assert_int_equal(st->nconfigs, before_n + 1);
			assert_int_equal(next->num, before_n);
			assert_int_equal(next->ngroups, prev.ngroups + 1);
			const shardmaster_group *g = group_of(next, gid);
			assert_non_null(g);
			assert_int_equal(g->nservers, 2);
			assert_string_equal(g->servers[0], a);
			assert_string_equal(g->servers[1], b);
			assert_good_rebalance(prev.shards, next);
			/* From a balanced start, old groups only give shards away. */
			for (int s = 0; prev_balanced && s < NS; s++)
				if (next->shards[s] != gid && next->shards[s] != prev.shards[s])
					fail_msg("seq %d step %d: join %lld gave shard %d to old group %lld",
					         seqno, step, (long long)gid, s, (long long)next->shards[s]);
		}
	} else if (roll < 80) { /* Leave */
		bool known = group_of(&prev, gid) != NULL;
		assert_int_equal(sm_state_leave(st, gid), DKV_OK);
		next = &st->configs[st->nconfigs - 1];
		if (!known) {
			assert_int_equal(st->nconfigs, before_n);
		} else {
			assert_int_equal(st->nconfigs, before_n + 1);
			assert_int_equal(next->num, before_n);
			assert_int_equal(next->ngroups, prev.ngroups - 1);
			assert_null(group_of(next, gid));
			assert_good_rebalance(prev.shards, next);
			/* From a balanced start, staying groups keep every shard they had. */
			for (int s = 0; prev_balanced && s < NS; s++)
				if (prev.shards[s] != gid && next->shards[s] != prev.shards[s])
					fail_msg("seq %d step %d: leave %lld took shard %d from %lld", seqno, step,
					         (long long)gid, s, (long long)prev.shards[s]);
		}
	} else { /* Move */
		int shard = (int)(th_rand() % NS);
		bool known = group_of(&prev, gid) != NULL;
		int rc = sm_state_move(st, shard, gid);
		next = &st->configs[st->nconfigs - 1];
		if (!known) {
			assert_int_equal(rc, DKV_ERR_INVAL);
			assert_int_equal(st->nconfigs, before_n);
		} else if (prev.shards[shard] == gid) {
			assert_int_equal(rc, DKV_OK);
			assert_int_equal(st->nconfigs, before_n);
		} else {
			assert_int_equal(rc, DKV_OK);
			assert_int_equal(st->nconfigs, before_n + 1);
			assert_int_equal(next->ngroups, prev.ngroups);
			for (int s = 0; s < NS; s++)
				assert_int_equal(next->shards[s], s == shard ? gid : prev.shards[s]);
		}
	}
	/* Whatever happened: no shard on a gid outside the configuration. */
	assert_shards_on_members(next);
	sm_config_destroy(&prev);
}

/* Thousands of seeded random Join/Leave/Move sequences keep every shard on a member, rebalance to within one with the fewest moves, and do not depend on group order. */
static void test_shardmaster_core_random_sequences_rebalance_evenly_and_minimally(void **state)
{
	(void)state;
	prop_size z = property_size();
	static const int64_t maxgids[] = { 3, 6, 11, 16, 30 };
	for (int q = 0; q < z.nseq; q++) {
		sm_state st;
		assert_int_equal(sm_state_init(&st), DKV_OK);
		int64_t maxgid = maxgids[th_rand() % (sizeof maxgids / sizeof maxgids[0])];
		for (int k = 0; k < z.nsteps; k++)
			random_step(&st, maxgid, q, k);
		for (int i = 0; i < st.nconfigs; i++)
			assert_int_equal(st.configs[i].num, i);
		sm_state_destroy(&st);
	}
}

/* Rebalancing random assignments (stray gids included) over random group sets is balanced, minimal and independent of group order. */
static void test_shardmaster_core_rebalance_of_random_assignments_is_minimal_and_order_independent(void **state)
{
	(void)state;
	int rounds = th_under_valgrind() ? 2000 : 20000;
	shardmaster_group groups[24];
	memset(groups, 0, sizeof groups);
	for (int r = 0; r < rounds; r++) {
		shardmaster_config cfg = { .num = r, .groups = groups };
		cfg.ngroups = (int)(th_rand() % 24);
		/* distinct gids from 1..40, in random order */
		for (int i = 0; i < cfg.ngroups; i++) {
			int64_t g;
			do
				g = 1 + (int64_t)(th_rand() % 40);
			while (group_of(&(shardmaster_config){ .ngroups = i, .groups = groups }, g) != NULL);
			groups[i].gid = g;
		}
		/* shards on members, on strangers (41..45) or on 0 */
		for (int s = 0; s < NS; s++) {
			unsigned roll = (unsigned)(th_rand() % 10);
			if (roll < 7 && cfg.ngroups > 0)
				cfg.shards[s] = groups[th_rand() % (uint64_t)cfg.ngroups].gid;
			else if (roll < 9)
				cfg.shards[s] = 41 + (int64_t)(th_rand() % 5);
			else
				cfg.shards[s] = 0;
		}
		int64_t before[NS];
		memcpy(before, cfg.shards, sizeof before);
		int moved = sm_rebalance(&cfg);
		assert_int_equal(moved, moved_between(before, cfg.shards));
		assert_good_rebalance(before, &cfg);
		/* Rebalancing a balanced assignment moves nothing. */
		int64_t again[NS];
		memcpy(again, cfg.shards, sizeof again);
		assert_int_equal(sm_rebalance(&cfg), 0);
		assert_memory_equal(again, cfg.shards, sizeof again);
	}
}

/* The same groups joined in any order end with every shard on a member and balanced, and a later leave moves only the leaver's shards. */
static void test_shardmaster_core_join_order_does_not_matter_for_balance(void **state)
{
	(void)state;
	for (int round = 0; round < 200; round++) {
		int64_t gids[7] = { 3, 9, 1, 14, 27, 5, 8 };
		for (int i = 6; i > 0; i--) {
			int j = (int)(th_rand() % (uint64_t)(i + 1));
			int64_t t = gids[i];
			gids[i] = gids[j];
			gids[j] = t;
		}
		sm_state st;
		assert_int_equal(sm_state_init(&st), DKV_OK);
		for (int i = 0; i < 7; i++)
			assert_int_equal(sm_state_join(&st, gids[i], ABC, 3), DKV_OK);
		const shardmaster_config *c = sm_state_query(&st, -1);
		assert_int_equal(c->num, 7);
		assert_true(is_balanced(c));
		assert_shards_on_members(c);
		int64_t before[NS];
		memcpy(before, c->shards, sizeof before);
		assert_int_equal(sm_state_leave(&st, gids[0]), DKV_OK);
		c = sm_state_query(&st, -1);
		for (int s = 0; s < NS; s++)
			if (before[s] != gids[0])
				assert_int_equal(c->shards[s], before[s]);
		sm_state_destroy(&st);
	}
}

/* With more groups than shards, each shard is on its own group, and the extra groups take over only when a holder leaves. */
static void test_shardmaster_core_more_groups_than_shards_get_one_shard_each(void **state)
{
	(void)state;
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	for (int64_t g = 1; g <= 14; g++)
		assert_int_equal(sm_state_join(&st, g, ABC, 3), DKV_OK);
	const shardmaster_config *c = sm_state_query(&st, -1);
	assert_int_equal(c->ngroups, 14);
	int holders = 0;
	for (int64_t g = 1; g <= 14; g++) {
		int n = count_of(c, g);
		assert_true(n <= 1);
		holders += n;
	}
	assert_int_equal(holders, NS);
	/* Joining 11..14 found every shard held once: they got nothing. */
	for (int64_t g = 11; g <= 14; g++)
		assert_int_equal(count_of(c, g), 0);
	int64_t before[NS];
	memcpy(before, c->shards, sizeof before);
	assert_int_equal(sm_state_leave(&st, 4), DKV_OK);
	c = sm_state_query(&st, -1);
	assert_int_equal(moved_between(before, c->shards), 1);
	int s4 = -1;
	for (int s = 0; s < NS; s++)
		if (before[s] == 4)
			s4 = s;
	assert_true(s4 >= 0);
	assert_int_equal(c->shards[s4], 11); /* the smallest gid without a shard */
	sm_state_destroy(&st);
}

/* When the last group leaves, every shard returns to gid 0 in a new configuration with no groups. */
static void test_shardmaster_core_leave_of_last_group_returns_shards_to_gid_zero(void **state)
{
	(void)state;
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	assert_int_equal(sm_state_join(&st, 7, ABC, 3), DKV_OK);
	for (int s = 0; s < NS; s++)
		assert_int_equal(sm_state_query(&st, -1)->shards[s], 7);
	assert_int_equal(sm_state_leave(&st, 7), DKV_OK);
	const shardmaster_config *c = sm_state_query(&st, -1);
	assert_int_equal(c->num, 2);
	assert_int_equal(c->ngroups, 0);
	for (int s = 0; s < NS; s++)
		assert_int_equal(c->shards[s], 0);
	/* and a new group takes them all */
	assert_int_equal(sm_state_join(&st, 8, ABC, 1), DKV_OK);
	for (int s = 0; s < NS; s++)
		assert_int_equal(sm_state_query(&st, -1)->shards[s], 8);
	sm_state_destroy(&st);
}

/* A duplicate Join, a Leave of an unknown group and a Move to the current owner add no configuration; bad arguments are refused. */
static void test_shardmaster_core_noop_and_malformed_mutations_change_nothing(void **state)
{
	(void)state;
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	static const char *const xyz[] = { "x", "y", "z" };
	assert_int_equal(sm_state_join(&st, 1, xyz, 3), DKV_OK);
	assert_int_equal(st.nconfigs, 2);
	assert_int_equal(sm_state_join(&st, 1, ABC, 3), DKV_OK);   /* known: kept as is */
	assert_int_equal(sm_state_leave(&st, 99), DKV_OK);         /* unknown */
	assert_int_equal(sm_state_move(&st, 3, 1), DKV_OK);        /* already there */
	assert_int_equal(sm_state_move(&st, 3, 99), DKV_ERR_INVAL); /* not a member */
	assert_int_equal(sm_state_join(&st, 0, ABC, 3), DKV_ERR_INVAL);
	assert_int_equal(sm_state_join(&st, -4, ABC, 3), DKV_ERR_INVAL);
	assert_int_equal(sm_state_join(&st, 5, ABC, 0), DKV_ERR_INVAL);
	assert_int_equal(sm_state_join(&st, 5, NULL, 3), DKV_ERR_INVAL);
	static const char *const empty[] = { "a", "" };
	assert_int_equal(sm_state_join(&st, 5, empty, 2), DKV_ERR_INVAL);
	assert_int_equal(sm_state_leave(&st, 0), DKV_ERR_INVAL);
	assert_int_equal(sm_state_move(&st, -1, 1), DKV_ERR_INVAL);
	assert_int_equal(sm_state_move(&st, NS, 1), DKV_ERR_INVAL);
	assert_int_equal(sm_state_move(&st, 0, 0), DKV_ERR_INVAL);
	assert_int_equal(st.nconfigs, 2);
	const shardmaster_config *c = sm_state_query(&st, -1);
	assert_string_equal(group_of(c, 1)->servers[0], "x");
	/* query: past the last, or negative, is the latest; history stays */
	assert_ptr_equal(sm_state_query(&st, 57), c);
	assert_int_equal(sm_state_query(&st, 0)->num, 0);
	assert_int_equal(sm_state_query(&st, 0)->ngroups, 0);
	sm_state_destroy(&st);
}

/* Snapshot equality of two configurations (same group order: both copies of one). */
static bool same_config(const shardmaster_config *a, const shardmaster_config *b)
{
	if (a->num != b->num || a->ngroups != b->ngroups ||
	    memcmp(a->shards, b->shards, sizeof a->shards) != 0)
		return false;
	for (int i = 0; i < a->ngroups; i++) {
		if (a->groups[i].gid != b->groups[i].gid || a->groups[i].nservers != b->groups[i].nservers)
			return false;
		for (int j = 0; j < a->groups[i].nservers; j++)
			if (strcmp(a->groups[i].servers[j], b->groups[i].servers[j]) != 0)
				return false;
	}
	return true;
}

/* Apply one encoded op through the machine; its result err (and id). */
static int machine_op(sm_state *st, const sm_op *op, uint64_t *id)
{
	void *buf = NULL, *res = NULL;
	size_t len = 0, rlen = 0;
	assert_int_equal(sm_op_encode(op, &buf, &len), DKV_OK);
	assert_int_equal(sm_machine_apply(st, buf, len, &res, &rlen), DKV_OK);
	free(buf);
	int err = -1;
	uint64_t got = 0;
	assert_int_equal(sm_result_decode(res, rlen, &err, &got), DKV_OK);
	free(res);
	if (id != NULL)
		*id = got;
	return err;
}

/* The machine: ops through their encoding give the mutations' results, refused
 * and undecodable ops change nothing, NEW_ID hands out 1, 2, 3 … */
static void test_shardmaster_machine_apply_results_and_ids(void **state)
{
	(void)state;
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	sm_op j = { .kind = SM_OP_JOIN };
	j.sm_op_u.join.gid = 4;
	j.sm_op_u.join.servers.servers_len = 3;
	j.sm_op_u.join.servers.servers_val = (char **)ABC;
	assert_int_equal(machine_op(&st, &j, NULL), DKV_OK);
	assert_int_equal(st.nconfigs, 2);
	sm_op m = { .kind = SM_OP_MOVE };
	m.sm_op_u.move.shard = 1;
	m.sm_op_u.move.gid = 99;
	assert_int_equal(machine_op(&st, &m, NULL), DKV_ERR_INVAL); /* not a member */
	j.sm_op_u.join.gid = 0;
	assert_int_equal(machine_op(&st, &j, NULL), DKV_ERR_INVAL);
	assert_int_equal(st.nconfigs, 2);
	sm_op q = { .kind = SM_OP_QUERY };
	assert_int_equal(machine_op(&st, &q, NULL), DKV_OK);
	sm_op nid = { .kind = SM_OP_NEW_ID };
	for (uint64_t want = 1; want <= 5; want++) {
		uint64_t id = 0;
		assert_int_equal(machine_op(&st, &nid, &id), DKV_OK);
		assert_int_equal(id, want);
	}
	sm_op l = { .kind = SM_OP_LEAVE };
	l.sm_op_u.leave_gid = 4;
	assert_int_equal(machine_op(&st, &l, NULL), DKV_OK);
	assert_int_equal(st.nconfigs, 3);
	/* Garbage in the log: refused, the same everywhere, nothing changes. */
	void *res = NULL;
	size_t rlen = 0;
	int err = -1;
	assert_int_equal(sm_machine_apply(&st, "\xff\xff\xff\x7f", 4, &res, &rlen), DKV_OK);
	assert_int_equal(sm_result_decode(res, rlen, &err, NULL), DKV_OK);
	assert_int_equal(err, DKV_ERR_INVAL);
	free(res);
	assert_int_equal(st.nconfigs, 3);
	sm_state_destroy(&st);
}

/* Snapshot then restore gives an equal state (history and id counter); a
 * restore replaces what was there; malformed snapshots are refused and change
 * nothing; allocation failures in either leave the state as it was. */
static void test_shardmaster_machine_snapshot_restore_round_trip(void **state)
{
	(void)state;
	sm_state a;
	assert_int_equal(sm_state_init(&a), DKV_OK);
	for (int64_t g = 1; g <= 20; g++)
		assert_int_equal(sm_state_join(&a, g, ABC, 3), DKV_OK);
	for (int64_t g = 1; g <= 20; g += 3)
		assert_int_equal(sm_state_leave(&a, g), DKV_OK);
	a.last_id = 777;
	void *snap = NULL;
	size_t len = 0;
	assert_int_equal(sm_machine_snapshot(&a, &snap, &len), DKV_OK);

	sm_state b;
	assert_int_equal(sm_state_init(&b), DKV_OK);
	assert_int_equal(sm_state_join(&b, 55, ABC, 1), DKV_OK); /* replaced by the restore */
	assert_int_equal(sm_machine_restore(&b, snap, len), DKV_OK);
	assert_int_equal(b.nconfigs, a.nconfigs);
	assert_int_equal(b.last_id, 777);
	for (int i = 0; i < a.nconfigs; i++)
		assert_true(same_config(&a.configs[i], &b.configs[i]));
	/* The restored state goes on like the original. */
	assert_int_equal(sm_state_join(&a, 100, ABC, 2), DKV_OK);
	assert_int_equal(sm_state_join(&b, 100, ABC, 2), DKV_OK);
	assert_true(same_config(sm_state_query(&a, -1), sm_state_query(&b, -1)));
	void *snap2 = NULL;
	size_t len2 = 0;
	assert_int_equal(sm_machine_snapshot(&b, &snap2, &len2), DKV_OK);
	free(snap2);

	/* Malformed: truncated, trailing bytes, garbage. */
	int before = b.nconfigs;
	assert_int_equal(sm_machine_restore(&b, snap, len - 1), DKV_ERR_INVAL);
	char *longer = malloc(len + 4);
	memcpy(longer, snap, len);
	memset(longer + len, 0, 4);
	assert_int_equal(sm_machine_restore(&b, longer, len + 4), DKV_ERR_INVAL);
	free(longer);
	assert_int_equal(sm_machine_restore(&b, "nope", 4), DKV_ERR_INVAL);
	assert_int_equal(b.nconfigs, before);

	/* Allocation failures: snapshot and restore fail cleanly, then succeed. */
	for (unsigned long n = 1;; n++) {
		void *s2 = NULL;
		size_t l2 = 0;
		dkv_alloc_fail_after(n);
		int rc = sm_machine_snapshot(&a, &s2, &l2);
		dkv_alloc_fail_after(0);
		if (rc == DKV_OK) {
			free(s2);
			break;
		}
		assert_int_equal(rc, DKV_ERR_NOMEM);
		assert_null(s2);
		assert_true(n < 10000);
	}
	for (unsigned long n = 1;; n++) {
		dkv_alloc_fail_after(n);
		int rc = sm_machine_restore(&b, snap, len);
		dkv_alloc_fail_after(0);
		if (rc == DKV_OK)
			break;
		assert_int_equal(rc, DKV_ERR_NOMEM);
		assert_int_equal(b.nconfigs, before); /* unchanged */
		assert_true(n < 10000);
	}
	assert_int_equal(b.last_id, 777);
	free(snap);
	sm_state_destroy(&a);
	sm_state_destroy(&b);
}

/* An allocation failure while applying an agreed op fails apply (the engine
 * then stops the replica) and leaves the state as it was: it never half-applies. */
static void test_shardmaster_machine_apply_out_of_memory_changes_nothing(void **state)
{
	(void)state;
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	for (int64_t g = 1; g <= 3; g++)
		assert_int_equal(sm_state_join(&st, g, ABC, 3), DKV_OK);
	sm_op j = { .kind = SM_OP_JOIN };
	j.sm_op_u.join.gid = 9;
	j.sm_op_u.join.servers.servers_len = 3;
	j.sm_op_u.join.servers.servers_val = (char **)ABC;
	void *buf = NULL;
	size_t len = 0;
	assert_int_equal(sm_op_encode(&j, &buf, &len), DKV_OK);
	int failures = 0;
	for (unsigned long n = 1;; n++) {
		int before = st.nconfigs;
		void *res = NULL;
		size_t rlen = 0;
		dkv_alloc_fail_after(n);
		int rc = sm_machine_apply(&st, buf, len, &res, &rlen);
		dkv_alloc_fail_after(0);
		if (rc == DKV_OK) {
			assert_int_equal(st.nconfigs, before + 1);
			free(res);
			break;
		}
		failures++;
		assert_int_equal(rc, DKV_ERR_NOMEM);
		assert_null(res);
		assert_int_equal(st.nconfigs, before);
		assert_true(n < 1000);
	}
	assert_true(failures > 0);
	free(buf);
	sm_state_destroy(&st);
}

/* One mutation of the NOMEM walk: 0 join 9, 1 leave 2, 2 move 0 -> 3. */
static int nomem_mutation(sm_state *st, int which)
{
	static const char *const srv[] = { "p", "q", "r", "s" };
	switch (which) {
	case 0:
		return sm_state_join(st, 9, srv, 4);
	case 1:
		return sm_state_leave(st, 2);
	default:
		return sm_state_move(st, 0, 3);
	}
}

/* Every allocation failure (the Nth, N = 1, 2, …) in a mutation, a copy or a wire conversion reports DKV_ERR_NOMEM, leaves the state as it was and leaks nothing. */
static void test_shardmaster_core_out_of_memory_changes_nothing(void **state)
{
	(void)state;
	for (int which = 0; which < 3; which++) {
		sm_state st;
		assert_int_equal(sm_state_init(&st), DKV_OK);
		for (int64_t g = 1; g <= 3; g++)
			assert_int_equal(sm_state_join(&st, g, ABC, 3), DKV_OK);
		/* fill the history to capacity so that the realloc path is walked too */
		while (st.nconfigs < st.cap)
			assert_int_equal(sm_state_move(&st, 0, st.configs[st.nconfigs - 1].shards[0] % 3 + 1),
			                 DKV_OK);
		int rc = DKV_ERR_NOMEM;
		for (unsigned long n = 1; rc == DKV_ERR_NOMEM; n++) {
			shardmaster_config snap;
			assert_int_equal(sm_config_copy(&snap, sm_state_query(&st, -1)), DKV_OK);
			int before = st.nconfigs;
			dkv_alloc_fail_after(n);
			rc = nomem_mutation(&st, which);
			dkv_alloc_fail_after(0);
			if (rc == DKV_ERR_NOMEM) {
				assert_int_equal(st.nconfigs, before);
				assert_true(same_config(&snap, sm_state_query(&st, -1)));
			} else {
				assert_int_equal(rc, DKV_OK);
				assert_int_equal(st.nconfigs, before + 1);
			}
			sm_config_destroy(&snap);
			assert_true(n < 1000);
		}
		sm_state_destroy(&st);
	}

	/* Wire conversions and log encoding. */
	sm_state st;
	assert_int_equal(sm_state_init(&st), DKV_OK);
	for (int64_t g = 1; g <= 4; g++)
		assert_int_equal(sm_state_join(&st, g, ABC, 3), DKV_OK);
	const shardmaster_config *latest = sm_state_query(&st, -1);
	for (unsigned long n = 1;; n++) {
		sm_wire_config w;
		memset(&w, 0, sizeof w);
		dkv_alloc_fail_after(n);
		int rc = sm_wire_from_config(&w, latest);
		shardmaster_config *back = rc == DKV_OK ? sm_config_from_wire(&w) : NULL;
		dkv_alloc_fail_after(0);
		xdr_free((xdrproc_t)xdr_sm_wire_config, (char *)&w);
		if (back != NULL) {
			assert_true(same_config(back, latest));
			shardmaster_config_free(back);
			break;
		}
		assert_true(n < 1000);
	}
	sm_op op = { .kind = SM_OP_JOIN };
	op.sm_op_u.join.gid = 5;
	op.sm_op_u.join.servers.servers_len = 3;
	op.sm_op_u.join.servers.servers_val = (char **)ABC;
	void *buf = NULL;
	size_t len = 0;
	dkv_alloc_fail_after(1);
	assert_int_equal(sm_op_encode(&op, &buf, &len), DKV_ERR_NOMEM);
	assert_null(buf);
	assert_int_equal(sm_op_encode(&op, &buf, &len), DKV_OK);
	sm_op back;
	memset(&back, 0, sizeof back);
	assert_int_equal(sm_op_decode(buf, len, &back), DKV_OK);
	assert_int_equal(back.kind, SM_OP_JOIN);
	assert_int_equal(back.sm_op_u.join.gid, 5);
	assert_string_equal(back.sm_op_u.join.servers.servers_val[2], "c");
	xdr_free((xdrproc_t)xdr_sm_op, (char *)&back);
	/* a truncated entry does not decode */
	memset(&back, 0, sizeof back);
	assert_int_equal(sm_op_decode(buf, len - 4, &back), DKV_ERR_INVAL);
	free(buf);
	sm_state_destroy(&st);

	/* The clerk constructor: NULL and ENOMEM, nothing leaked. */
	const char *names[] = { "/var/tmp/none-1", "/var/tmp/none-2" };
	for (unsigned long n = 1;; n++) {
		dkv_alloc_fail_after(n);
		errno = 0;
		shardmaster_clerk *ck = shardmaster_clerk_new(names, 2);
		int e = errno;
		dkv_alloc_fail_after(0);
		if (ck != NULL) {
			shardmaster_clerk_free(ck);
			break;
		}
		assert_int_equal(e, ENOMEM);
		assert_true(n < 1000);
	}
}

/* ================================================================ cluster */

typedef struct {
	int n;
	char port[NSM][DKV_NAME_MAX];
	const char *names[NSM];
	shardmaster_server *sm[NSM];
	shardmaster_clerk *ck;          /* all replicas */
	shardmaster_clerk *cka[NSM];    /* replica i only */
	char renamed[DKV_NAME_MAX + 32];/* FreshQuery's moved socket, removed at teardown */
} cluster;

static int cluster_setup(void **state)
{
	static int seq;
	cluster *c = calloc(1, sizeof *c);
	if (c == NULL)
		return -1;
	char tag[32];
	snprintf(tag, sizeof tag, "t%d", seq++);
	c->n = NSM;
	for (int i = 0; i < NSM; i++) {
		th_port(c->port[i], "sm", tag, i);
		c->names[i] = c->port[i];
	}
	for (int i = 0; i < NSM; i++) {
		c->sm[i] = shardmaster_server_start(c->names, NSM, i);
		if (c->sm[i] == NULL) {
			fprintf(stderr, "shardmaster_server_start %s: %s\n", c->names[i], strerror(errno));
			return -1;
		}
	}
	c->ck = shardmaster_clerk_new(c->names, NSM);
	if (c->ck == NULL)
		return -1;
	for (int i = 0; i < NSM; i++) {
		c->cka[i] = shardmaster_clerk_new(&c->names[i], 1);
		if (c->cka[i] == NULL)
			return -1;
	}
	*state = c;
	return 0;
}

static int cluster_teardown(void **state)
{
	cluster *c = *state;
	if (c == NULL)
		return 0;
	shardmaster_clerk_free(c->ck);
	for (int i = 0; i < NSM; i++) {
		shardmaster_clerk_free(c->cka[i]);
		shardmaster_server_free(c->sm[i]);
	}
	if (c->renamed[0] != '\0')
		th_unlink(c->renamed);
	free(c);
	*state = NULL;
	return 0;
}

static shardmaster_config *query(shardmaster_clerk *ck, int num)
{
	shardmaster_config *cf = NULL;
	int rc = shardmaster_clerk_query(ck, num, &cf);
	if (rc != DKV_OK)
		fail_msg("query(%d): %s", num, dkv_strerror(rc));
	assert_non_null(cf);
	return cf;
}

/*
 * The lab's check(groups, ck): the latest configuration has exactly these
 * groups, every shard on one of them (when there are any), counts within one.
 */
static void check(shardmaster_clerk *ck, const int64_t *gids, int n)
{
	shardmaster_config *c = query(ck, -1);
	if (c->ngroups != n)
		fail_msg("wanted %d groups, got %d", n, c->ngroups);
	for (int i = 0; i < n; i++)
		if (group_of(c, gids[i]) == NULL)
			fail_msg("missing group %lld", (long long)gids[i]);
	if (n > 0)
		for (int s = 0; s < NS; s++)
			if (group_of(c, c->shards[s]) == NULL)
				fail_msg("shard %d -> invalid group %lld", s, (long long)c->shards[s]);
	if (!is_balanced(c))
		fail_msg("max > min + 1");
	shardmaster_config_free(c);
}

static void check_range(shardmaster_clerk *ck, int64_t lo, int64_t hi)
{
	int64_t gids[64];
	int n = 0;
	for (int64_t g = lo; g <= hi; g++)
		gids[n++] = g;
	check(ck, gids, n);
}

static void join_ok(shardmaster_clerk *ck, int64_t gid, const char *const *servers, int n)
{
	int rc = shardmaster_clerk_join(ck, gid, servers, n);
	if (rc != DKV_OK)
		fail_msg("join(%lld): %s", (long long)gid, dkv_strerror(rc));
}

static void leave_ok(shardmaster_clerk *ck, int64_t gid)
{
	int rc = shardmaster_clerk_leave(ck, gid);
	if (rc != DKV_OK)
		fail_msg("leave(%lld): %s", (long long)gid, dkv_strerror(rc));
}

static void assert_same_config(const shardmaster_config *a, const shardmaster_config *b)
{
	assert_int_equal(a->num, b->num);
	assert_memory_equal(a->shards, b->shards, sizeof a->shards);
	assert_int_equal(a->ngroups, b->ngroups);
	for (int i = 0; i < a->ngroups; i++) {
		const shardmaster_group *ga = &a->groups[i], *gb = group_of(b, ga->gid);
		assert_non_null(gb);
		assert_int_equal(ga->nservers, gb->nservers);
		for (int j = 0; j < ga->nservers; j++)
			assert_string_equal(ga->servers[j], gb->servers[j]);
	}
}

/* Every replica returns the same configuration for every number up to the latest. */
static void assert_replicas_agree(cluster *c)
{
	shardmaster_config *last = query(c->ck, -1);
	for (int n = 0; n <= last->num; n++) {
		shardmaster_config *x = query(c->cka[0], n);
		for (int r = 1; r < NSM; r++) {
			shardmaster_config *y = query(c->cka[r], n);
			assert_same_config(x, y);
			shardmaster_config_free(y);
		}
		shardmaster_config_free(x);
	}
	shardmaster_config_free(last);
}

/* ---------------------------------------------------------------- TestBasic parts */

static const char *const XYZ[] = { "x", "y", "z" };
#define NCFA 6

/* Basic leave/join, recording cfa[0..5]. */
static void basic_leave_join(cluster *c, shardmaster_config *cfa[NCFA])
{
	cfa[0] = query(c->ck, -1);
	check(c->ck, NULL, 0);

	join_ok(c->ck, 1, XYZ, 3);
	check(c->ck, (const int64_t[]){ 1 }, 1);
	cfa[1] = query(c->ck, -1);

	join_ok(c->ck, 2, ABC, 3);
	check(c->ck, (const int64_t[]){ 1, 2 }, 2);
	cfa[2] = query(c->ck, -1);

	join_ok(c->ck, 2, ABC, 3);
	check(c->ck, (const int64_t[]){ 1, 2 }, 2);
	cfa[3] = query(c->ck, -1);

	shardmaster_config *cfx = query(c->ck, -1);
	const shardmaster_group *g1 = group_of(cfx, 1), *g2 = group_of(cfx, 2);
	assert_non_null(g1);
	assert_non_null(g2);
	assert_int_equal(g1->nservers, 3);
	assert_int_equal(g2->nservers, 3);
	for (int j = 0; j < 3; j++) {
		assert_string_equal(g1->servers[j], XYZ[j]);
		assert_string_equal(g2->servers[j], ABC[j]);
	}
	shardmaster_config_free(cfx);

	leave_ok(c->ck, 1);
	check(c->ck, (const int64_t[]){ 2 }, 1);
	cfa[4] = query(c->ck, -1);

	leave_ok(c->ck, 1);
	check(c->ck, (const int64_t[]){ 2 }, 1);
	cfa[5] = query(c->ck, -1);
}

static void free_cfa(shardmaster_config *cfa[NCFA])
{
	for (int i = 0; i < NCFA; i++)
		shardmaster_config_free(cfa[i]);
}

/* Historical queries, through each replica. */
static void basic_historical(cluster *c, shardmaster_config *cfa[NCFA])
{
	for (int s = 0; s < NSM; s++)
		for (int i = 0; i < NCFA; i++) {
			shardmaster_config *h = query(c->cka[s], cfa[i]->num);
			assert_same_config(h, cfa[i]);
			shardmaster_config_free(h);
		}
}

/* Move: shards 0-4 to 503, 5-9 to 504, each a new configuration unless already there. */
static void basic_move(cluster *c)
{
	static const char *const g3[] = { "3a", "3b", "3c" };
	static const char *const g4[] = { "4a", "4b", "4c" };
	join_ok(c->ck, 503, g3, 3);
	join_ok(c->ck, 504, g4, 3);
	for (int i = 0; i < NS; i++) {
		shardmaster_config *cf = query(c->ck, -1);
		int64_t target = i < NS / 2 ? 503 : 504;
		assert_int_equal(shardmaster_clerk_move(c->ck, i, target), DKV_OK);
		if (cf->shards[i] != target) {
			shardmaster_config *cf1 = query(c->ck, -1);
			if (cf1->num <= cf->num)
				fail_msg("Move should increase Config.Num");
			shardmaster_config_free(cf1);
		}
		shardmaster_config_free(cf);
	}
	shardmaster_config *cf2 = query(c->ck, -1);
	for (int i = 0; i < NS; i++)
		if (cf2->shards[i] != (i < NS / 2 ? 503 : 504))
			fail_msg("expected shard %d on group %d, got %lld", i, i < NS / 2 ? 503 : 504,
			         (long long)cf2->shards[i]);
	shardmaster_config_free(cf2);
	leave_ok(c->ck, 503);
	leave_ok(c->ck, 504);
}

/* Concurrent leave/join: thread i joins gid+1000 and gid through replica i%3, leaves gid+1000 through (i+1)%3. */
typedef struct {
	cluster *c;
	int i;
	int rc;
} conc_arg;

static void *concurrent_worker(void *p)
{
	conc_arg *a = p;
	int64_t gid = a->i + 1;
	shardmaster_clerk *x = shardmaster_clerk_new(&a->c->names[a->i % NSM], 1);
	shardmaster_clerk *y = shardmaster_clerk_new(&a->c->names[(a->i + 1) % NSM], 1);
	a->rc = x == NULL || y == NULL ? DKV_ERR_NOMEM : DKV_OK;
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_join(x, gid + 1000, ABC, 3);
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_join(x, gid, ABC, 3);
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_leave(y, gid + 1000);
	shardmaster_clerk_free(x);
	shardmaster_clerk_free(y);
	return NULL;
}

static void basic_concurrent(cluster *c)
{
	enum { NPARA = 10 };
	pthread_t th[NPARA];
	conc_arg args[NPARA];
	for (int i = 0; i < NPARA; i++) {
		args[i] = (conc_arg){ .c = c, .i = i };
		assert_int_equal(pthread_create(&th[i], NULL, concurrent_worker, &args[i]), 0);
	}
	for (int i = 0; i < NPARA; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NPARA; i++)
		if (args[i].rc != DKV_OK)
			fail_msg("worker %d: %s", i, dkv_strerror(args[i].rc));
	check_range(c->ck, 1, NPARA);
}

static bool all_min_advanced(cluster *c)
{
	for (int i = 0; i < NSM; i++)
		if (paxos_min(shardmaster_server_paxos(c->sm[i])) <= 0)
			return false;
	return true;
}

/* Minimal transfers after joins: c1 before, joins 11..15, returns c2 (owned by caller) with c1. */
static void basic_minimal_joins(cluster *c, shardmaster_config **c1p, shardmaster_config **c2p)
{
	shardmaster_config *c1 = query(c->ck, -1);
	for (int64_t g = 11; g <= 15; g++)
		join_ok(c->ck, g, ABC, 3);
	shardmaster_config *c2 = query(c->ck, -1);
	for (int64_t g = 1; g <= 10; g++)
		for (int j = 0; j < NS; j++)
			if (c2->shards[j] == g && c1->shards[j] != g)
				fail_msg("non-minimal transfer after Join()s");
	*c1p = c1;
	*c2p = c2;
}

static void basic_minimal_leaves(cluster *c, const shardmaster_config *c2)
{
	for (int64_t g = 11; g <= 15; g++)
		leave_ok(c->ck, g);
	shardmaster_config *c3 = query(c->ck, -1);
	for (int64_t g = 1; g <= 10; g++)
		for (int j = 0; j < NS; j++)
			if (c2->shards[j] == g && c3->shards[j] != g)
				fail_msg("non-minimal transfer after Leave()s");
	shardmaster_config_free(c3);
}

/* Lab Basic, "Basic leave/join": groups come and go, counts stay within one, server lists are kept in order; duplicate joins and leaves are harmless. */
static void test_shardmaster_basic_leave_join_balances_and_keeps_server_lists(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	free_cfa(cfa);
}

/* Lab Basic, "Historical queries": every replica returns each recorded configuration unchanged by number. */
static void test_shardmaster_basic_historical_queries_return_recorded_configs(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	basic_historical(c, cfa);
	free_cfa(cfa);
}

/* Lab Basic, "Move": each effective Move makes a new configuration, and the moved shards stay where they were put. */
static void test_shardmaster_basic_move_assigns_shards_without_rebalancing(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	basic_historical(c, cfa);
	free_cfa(cfa);
	basic_move(c);
}

/* Lab Basic, "Concurrent leave/join": ten threads joining and leaving through different replicas end with groups 1..10 balanced. */
static void test_shardmaster_basic_concurrent_leave_join_ends_balanced(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	free_cfa(cfa);
	basic_move(c);
	basic_concurrent(c);
	assert_replicas_agree(c); /* ours: the replicas computed the same history */
}

/* Lab Basic, "Min advances after joins": every replica calls Done after applying, so every Paxos peer's Min() exceeds 0. */
static void test_shardmaster_basic_min_advances_after_joins(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	free_cfa(cfa);
	basic_move(c);
	basic_concurrent(c);
	assert_true(all_min_advanced(c)); /* at once, as the lab checks */
}

/* Lab Basic, "Minimal transfers after joins": joining 11..15 never gives a shard to an old group. */
static void test_shardmaster_basic_joins_move_shards_only_away_from_old_groups(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	free_cfa(cfa);
	basic_move(c);
	basic_concurrent(c);
	shardmaster_config *c1, *c2;
	basic_minimal_joins(c, &c1, &c2);
	shardmaster_config_free(c1);
	shardmaster_config_free(c2);
}

/* Lab Basic, "Minimal transfers after leaves": groups that stay keep every shard they had. */
static void test_shardmaster_basic_leaves_keep_staying_groups_shards(void **state)
{
	cluster *c = *state;
	shardmaster_config *cfa[NCFA] = { NULL };
	basic_leave_join(c, cfa);
	free_cfa(cfa);
	basic_move(c);
	basic_concurrent(c);
	shardmaster_config *c1, *c2;
	basic_minimal_joins(c, &c1, &c2);
	basic_minimal_leaves(c, c2);
	shardmaster_config_free(c1);
	shardmaster_config_free(c2);
}

/* ---------------------------------------------------------------- TestUnreliable */

typedef struct {
	cluster *c;
	int i;
	int replica; /* 1 or 2, drawn by the test thread */
	int rc;
} unrel_arg;

static void *unreliable_worker(void *p)
{
	unrel_arg *a = p;
	int64_t gid = a->i + 1;
	shardmaster_clerk *ck = shardmaster_clerk_new(&a->c->names[a->replica], 1);
	a->rc = ck == NULL ? DKV_ERR_NOMEM : DKV_OK;
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_join(ck, gid + 1000, ABC, 3);
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_join(ck, gid, ABC, 3);
	if (a->rc == DKV_OK)
		a->rc = shardmaster_clerk_leave(ck, gid + 1000);
	/* server 0 won't be able to hear any RPCs */
	th_unlink(a->c->port[0]);
	shardmaster_clerk_free(ck);
	return NULL;
}

/* Lab Unreliable ("Concurrent leave/join, failure"): twenty threads through replicas 1 and 2 while replica 0 goes deaf end with groups 1..20. */
static void test_shardmaster_unreliable_concurrent_leave_join_with_deaf_replica(void **state)
{
	cluster *c = *state;
	enum { NPARA = 20 };
	pthread_t th[NPARA];
	unrel_arg args[NPARA];
	for (int i = 0; i < NPARA; i++) {
		args[i] = (unrel_arg){ .c = c, .i = i, .replica = 1 + (int)(th_rand() % 2) };
		assert_int_equal(pthread_create(&th[i], NULL, unreliable_worker, &args[i]), 0);
	}
	for (int i = 0; i < NPARA; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NPARA; i++)
		if (args[i].rc != DKV_OK)
			fail_msg("worker %d: %s", i, dkv_strerror(args[i].rc));
	check_range(c->ck, 1, NPARA);
}

/* ---------------------------------------------------------------- TestFreshQuery */

/* Lab FreshQuery: a replica deaf to its peers still answers Query(-1) with a Join made through another replica, because Query goes through the log. */
static void test_shardmaster_fresh_query_sees_join_made_through_another_replica(void **state)
{
	cluster *c = *state;
	snprintf(c->renamed, sizeof c->renamed, "%s%d", c->port[0], (int)(th_rand() % 1000000));
	if (rename(c->port[0], c->renamed) != 0)
		fail_msg("rename %s: %s", c->port[0], strerror(errno));
	const char *p0[] = { c->renamed };
	shardmaster_clerk *ck0 = shardmaster_clerk_new(p0, 1);
	assert_non_null(ck0);
	join_ok(c->cka[1], 1001, ABC, 3);
	shardmaster_config *cf = NULL;
	int rc = shardmaster_clerk_query(ck0, -1, &cf);
	shardmaster_clerk_free(ck0);
	assert_int_equal(rc, DKV_OK);
	bool found = group_of(cf, 1001) != NULL;
	shardmaster_config_free(cf);
	if (!found)
		fail_msg("Query(-1) produced a stale configuration");
}

/* ================================================================ our service tests */

/* Thirteen groups on ten shards: each shard on a distinct group; when a holder leaves, its shard goes to a group that had none and nothing else moves. */
static void test_shardmaster_more_groups_than_shards_hold_one_shard_each(void **state)
{
	cluster *c = *state;
	for (int64_t g = 1; g <= 13; g++)
		join_ok(c->ck, g, ABC, 3);
	check_range(c->ck, 1, 13);
	shardmaster_config *before = query(c->ck, -1);
	int64_t holder = before->shards[0];
	leave_ok(c->ck, holder);
	shardmaster_config *after = query(c->ck, -1);
	assert_int_equal(after->num, before->num + 1);
	assert_int_equal(moved_between(before->shards, after->shards), 1);
	assert_int_equal(count_of(before, after->shards[0]), 0);
	assert_int_equal(after->ngroups, 12);
	assert_true(is_balanced(after));
	for (int64_t g = 1; g <= 13; g++)
		assert_true(count_of(after, g) <= 1);
	shardmaster_config_free(before);
	shardmaster_config_free(after);
}

/* When the last group leaves, the latest configuration has no groups and every shard on gid 0. */
static void test_shardmaster_leave_of_last_group_puts_every_shard_on_gid_zero(void **state)
{
	cluster *c = *state;
	join_ok(c->ck, 42, ABC, 3);
	leave_ok(c->ck, 42);
	shardmaster_config *cf = query(c->ck, -1);
	assert_int_equal(cf->num, 2);
	assert_int_equal(cf->ngroups, 0);
	assert_null(cf->groups);
	for (int s = 0; s < NS; s++)
		assert_int_equal(cf->shards[s], 0);
	shardmaster_config_free(cf);
	check(c->ck, NULL, 0);
}

/* A duplicate Join, a Leave of an unknown group and a Move to the current owner succeed without a new configuration; a Move to an unknown group is refused. */
static void test_shardmaster_noop_requests_add_no_configuration(void **state)
{
	cluster *c = *state;
	join_ok(c->ck, 1, XYZ, 3);
	shardmaster_config *a = query(c->ck, -1);
	join_ok(c->ck, 1, ABC, 3);
	leave_ok(c->ck, 77);
	assert_int_equal(shardmaster_clerk_move(c->ck, 4, 1), DKV_OK);
	assert_int_equal(shardmaster_clerk_move(c->ck, 4, 77), DKV_ERR_INVAL);
	shardmaster_config *b = query(c->cka[2], -1);
	assert_same_config(a, b);
	assert_string_equal(group_of(b, 1)->servers[0], "x");
	/* past the last: the latest */
	shardmaster_config *d = query(c->cka[1], a->num + 50);
	assert_same_config(a, d);
	shardmaster_config_free(a);
	shardmaster_config_free(b);
	shardmaster_config_free(d);
}

/* Malformed requests (gid 0 or negative, shard out of range, no or empty servers, num < -1, NULL) are refused with DKV_ERR_INVAL, by the clerk and by the replicas themselves. */
static void test_shardmaster_malformed_requests_are_invalid(void **state)
{
	cluster *c = *state;
	shardmaster_clerk *ck = c->ck;
	char longname[DKV_NAME_MAX + 8];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	const char *bad1[] = { "a", NULL };
	const char *bad2[] = { "" };
	const char *bad3[] = { longname };
	assert_int_equal(shardmaster_clerk_join(ck, 0, ABC, 3), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, -3, ABC, 3), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, 5, NULL, 3), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, 5, ABC, 0), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, 5, bad1, 2), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, 5, bad2, 1), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(ck, 5, bad3, 1), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_join(NULL, 5, ABC, 3), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_leave(ck, 0), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_leave(NULL, 5), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_move(ck, -1, 5), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_move(ck, NS, 5), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_move(ck, 0, 0), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_move(NULL, 0, 5), DKV_ERR_INVAL);
	shardmaster_config *cf = (shardmaster_config *)&cf;
	assert_int_equal(shardmaster_clerk_query(ck, -2, &cf), DKV_ERR_INVAL);
	assert_null(cf);
	assert_int_equal(shardmaster_clerk_query(ck, -1, NULL), DKV_ERR_INVAL);
	assert_int_equal(shardmaster_clerk_query(NULL, -1, &cf), DKV_ERR_INVAL);
	shardmaster_config_free(NULL);

	/* The replicas check too: raw RPCs that skip the clerk's checks. */
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);
	sm_reply r;
	sm_join_args ja = { .session = 1, .seq = 1, .gid = 0 };
	ja.servers.servers_len = 3;
	ja.servers.servers_val = (char **)ABC;
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[0], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN,
	                              (xdrproc_t)xdr_sm_join_args, &ja, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_INVAL);
	ja.gid = 5;
	ja.servers.servers_len = 0;
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[1], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN,
	                              (xdrproc_t)xdr_sm_join_args, &ja, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_INVAL);
	char *empty_name[] = { (char *)"" };
	ja.servers.servers_len = 1;
	ja.servers.servers_val = empty_name;
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[1], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN,
	                              (xdrproc_t)xdr_sm_join_args, &ja, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_INVAL);
	sm_leave_args la = { .session = 1, .seq = 2, .gid = -1 };
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[2], SHARDMASTER_PROG, SHARDMASTER_V1, SM_LEAVE,
	                              (xdrproc_t)xdr_sm_leave_args, &la, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_INVAL);
	sm_move_args ma = { .session = 1, .seq = 3, .shard = NS, .gid = 5 };
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[0], SHARDMASTER_PROG, SHARDMASTER_V1, SM_MOVE,
	                              (xdrproc_t)xdr_sm_move_args, &ma, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_INVAL);
	sm_query_args qa = { .num = -7 };
	sm_query_reply qr;
	memset(&qr, 0, sizeof qr);
	assert_int_equal(dkv_rpc_call(pool, c->names[0], SHARDMASTER_PROG, SHARDMASTER_V1, SM_QUERY,
	                              (xdrproc_t)xdr_sm_query_args, &qa, (xdrproc_t)xdr_sm_query_reply,
	                              &qr, 0),
	                 DKV_OK);
	assert_int_equal(qr.err, DKV_ERR_INVAL);
	xdr_free((xdrproc_t)xdr_sm_query_reply, (char *)&qr);
	dkv_rpc_pool_free(pool);

	/* Nothing of that reached the log as a change. */
	check(c->ck, NULL, 0);
	cf = query(c->ck, -1);
	assert_int_equal(cf->num, 0);
	shardmaster_config_free(cf);

	/* Constructors refuse bad arguments. */
	errno = 0;
	assert_null(shardmaster_clerk_new(NULL, 3));
	assert_int_equal(errno, EINVAL);
	assert_null(shardmaster_clerk_new(c->names, 0));
	const char *holes[] = { c->names[0], "" };
	assert_null(shardmaster_clerk_new(holes, 2));
	const char *undialable[] = { c->names[0], "tcp:localhost" }; /* no port */
	errno = 0;
	assert_null(shardmaster_clerk_new(undialable, 2));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(shardmaster_server_start(c->names, NSM, NSM));
	assert_int_equal(errno, EINVAL);
	assert_null(shardmaster_server_start(NULL, 1, 0));
}

/* With a deadline, a clerk whose replicas cannot form a majority gets DKV_ERR_TIMEOUT instead of retrying forever. */
static void test_shardmaster_clerk_deadline_times_out_without_majority(void **state)
{
	cluster *c = *state;
	shardmaster_clerk_set_timeout(c->ck, 30000);
	join_ok(c->ck, 1, ABC, 3); /* a deadline does not hurt a healthy cluster */
	shardmaster_server_kill(c->sm[1]);
	shardmaster_server_kill(c->sm[2]);
	shardmaster_clerk_set_timeout(c->ck, 700);
	assert_int_equal(shardmaster_clerk_join(c->ck, 2, ABC, 3), DKV_ERR_TIMEOUT);
	assert_int_equal(shardmaster_clerk_leave(c->ck, 1), DKV_ERR_TIMEOUT);
	assert_int_equal(shardmaster_clerk_move(c->ck, 0, 1), DKV_ERR_TIMEOUT);
	shardmaster_config *cf = (shardmaster_config *)&cf;
	assert_int_equal(shardmaster_clerk_query(c->ck, -1, &cf), DKV_ERR_TIMEOUT);
	assert_null(cf);
	/* and with every replica gone too */
	shardmaster_server_kill(c->sm[0]);
	shardmaster_clerk_set_timeout(c->cka[0], 200);
	assert_int_equal(shardmaster_clerk_query(c->cka[0], -1, &cf), DKV_ERR_TIMEOUT);
}

typedef struct {
	cluster *c;
	int i;
	int rc;
} amo_arg;

static void *at_most_once_worker(void *p)
{
	amo_arg *a = p;
	int64_t gid = a->i + 1;
	shardmaster_clerk *ck = shardmaster_clerk_new(a->c->names, NSM);
	a->rc = ck == NULL ? DKV_ERR_NOMEM : DKV_OK;
	for (int round = 0; a->rc == DKV_OK && round < 3; round++) {
		a->rc = shardmaster_clerk_join(ck, gid + 1000, ABC, 3);
		if (a->rc == DKV_OK)
			a->rc = shardmaster_clerk_join(ck, gid, ABC, 3);
		if (a->rc == DKV_OK)
			a->rc = shardmaster_clerk_leave(ck, gid + 1000);
		if (a->rc == DKV_OK && round < 2)
			a->rc = shardmaster_clerk_leave(ck, gid);
	}
	shardmaster_clerk_free(ck);
	return NULL;
}

/* Through unreliable replicas (requests and replies dropped, Paxos included), retried requests are applied once: a retried Join never re-adds a group that left. */
static void test_shardmaster_unreliable_replicas_apply_each_request_once(void **state)
{
	cluster *c = *state;
	enum { NPARA = 5 };
	for (int i = 0; i < NSM; i++)
		shardmaster_server_set_unreliable(c->sm[i], true);
	pthread_t th[NPARA];
	amo_arg args[NPARA];
	for (int i = 0; i < NPARA; i++) {
		args[i] = (amo_arg){ .c = c, .i = i };
		assert_int_equal(pthread_create(&th[i], NULL, at_most_once_worker, &args[i]), 0);
	}
	for (int i = 0; i < NPARA; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NSM; i++)
		shardmaster_server_set_unreliable(c->sm[i], false);
	for (int i = 0; i < NPARA; i++)
		if (args[i].rc != DKV_OK)
			fail_msg("worker %d: %s", i, dkv_strerror(args[i].rc));
	check_range(c->ck, 1, NPARA);
	assert_replicas_agree(c);
}

/* A random sequence of Join/Leave/Move from one clerk through unreliable replicas yields exactly the history of the pure state machine fed the same sequence: every request applied once, with the same result. */
static void test_shardmaster_unreliable_history_matches_the_model(void **state)
{
	cluster *c = *state;
	int nops = th_under_valgrind() ? 25 : 60;
	sm_state model;
	assert_int_equal(sm_state_init(&model), DKV_OK);
	for (int i = 0; i < NSM; i++)
		shardmaster_server_set_unreliable(c->sm[i], true);
	for (int k = 0; k < nops; k++) {
		int64_t gid = 1 + (int64_t)(th_rand() % 12);
		unsigned roll = (unsigned)(th_rand() % 100);
		int want, got;
		if (roll < 45) {
			want = sm_state_join(&model, gid, ABC, 3);
			got = shardmaster_clerk_join(c->ck, gid, ABC, 3);
		} else if (roll < 80) {
			want = sm_state_leave(&model, gid);
			got = shardmaster_clerk_leave(c->ck, gid);
		} else {
			int shard = (int)(th_rand() % NS);
			want = sm_state_move(&model, shard, gid);
			got = shardmaster_clerk_move(c->ck, shard, gid);
		}
		if (want != got)
			fail_msg("op %d: service said %s, model %s", k, dkv_strerror(got), dkv_strerror(want));
	}
	for (int i = 0; i < NSM; i++)
		shardmaster_server_set_unreliable(c->sm[i], false);
	shardmaster_config *last = query(c->ck, -1);
	assert_int_equal(last->num, model.nconfigs - 1);
	shardmaster_config_free(last);
	for (int n = 0; n < model.nconfigs; n++) {
		shardmaster_config *x = query(c->cka[n % NSM], n);
		assert_same_config(x, &model.configs[n]);
		shardmaster_config_free(x);
	}
	sm_state_destroy(&model);
}

/* Kill is idempotent, the Paxos peer stays readable after it, free takes NULL, and a killed replica's clerk calls fail over to the others. */
static void test_shardmaster_kill_is_idempotent_and_others_keep_serving(void **state)
{
	cluster *c = *state;
	join_ok(c->ck, 9, ABC, 3);
	shardmaster_server_kill(c->sm[0]);
	shardmaster_server_kill(c->sm[0]);
	assert_non_null(shardmaster_server_paxos(c->sm[0]));
	(void)paxos_max(shardmaster_server_paxos(c->sm[0]));
	shardmaster_server_free(NULL);
	shardmaster_server_kill(NULL);
	shardmaster_clerk_free(NULL);
	join_ok(c->ck, 10, ABC, 3);
	check(c->ck, (const int64_t[]){ 9, 10 }, 2);
	check(c->cka[2], (const int64_t[]){ 9, 10 }, 2);
}

/* ---------------------------------------------------------------- partitions */

/* A cluster whose replicas reach each other through the lab's per-pair links. */
typedef struct {
	th_names *nm;
	shardmaster_server *sm[NSM];
	shardmaster_clerk *ck[3];
} pcluster;

static int pcluster_setup(void **state)
{
	static int seq;
	pcluster *p = calloc(1, sizeof *p);
	if (p == NULL)
		return -1;
	char tag[32];
	snprintf(tag, sizeof tag, "p%d", seq++);
	p->nm = th_names_new("smp", tag, NSM);
	if (p->nm == NULL)
		return -1;
	*state = p;
	for (int i = 0; i < NSM; i++) {
		p->sm[i] = shardmaster_server_start(th_peers(p->nm, i), NSM, i);
		if (p->sm[i] == NULL)
			return -1;
	}
	return 0;
}

static int pcluster_teardown(void **state)
{
	pcluster *p = *state;
	if (p == NULL)
		return 0;
	for (int i = 0; i < 3; i++)
		shardmaster_clerk_free(p->ck[i]);
	for (int i = 0; i < NSM; i++)
		shardmaster_server_free(p->sm[i]);
	th_cleanpp(p->nm);
	th_names_free(p->nm);
	free(p);
	*state = NULL;
	return 0;
}

/* A replica cut off in a minority answers DKV_ERR_TIMEOUT instead of blocking (except for configurations it already has), so a clerk that asks it first still completes through the majority; once healed, it catches up. */
static void test_shardmaster_minority_replica_does_not_block_clerks(void **state)
{
	pcluster *p = *state;
	const char *ports[NSM];
	for (int i = 0; i < NSM; i++)
		ports[i] = p->nm->ports[i];
	th_part3(p->nm, (const int[]){ 0, 1, 2, -1 }, NULL, NULL);
	p->ck[0] = shardmaster_clerk_new(ports, NSM); /* asks replica 0 first */
	p->ck[1] = shardmaster_clerk_new(&ports[0], 1);
	assert_non_null(p->ck[0]);
	assert_non_null(p->ck[1]);
	join_ok(p->ck[0], 1, ABC, 3);
	check(p->ck[1], (const int64_t[]){ 1 }, 1); /* replica 0 has applied config 1 */

	th_part3(p->nm, (const int[]){ 0, -1 }, (const int[]){ 1, 2, -1 }, NULL);
	join_ok(p->ck[0], 2, XYZ, 3);
	check(p->ck[0], (const int64_t[]){ 1, 2 }, 2);
	shardmaster_clerk_set_timeout(p->ck[1], 1000);
	shardmaster_config *cf = NULL;
	assert_int_equal(shardmaster_clerk_query(p->ck[1], -1, &cf), DKV_ERR_TIMEOUT);
	assert_null(cf);
	/* a configuration it already has never changes: it can still answer for it */
	cf = query(p->ck[1], 1);
	assert_int_equal(cf->num, 1);
	assert_non_null(group_of(cf, 1));
	shardmaster_config_free(cf);
	cf = NULL;

	th_part3(p->nm, (const int[]){ 0, 1, 2, -1 }, NULL, NULL);
	shardmaster_clerk_set_timeout(p->ck[1], 0);
	check(p->ck[1], (const int64_t[]){ 1, 2 }, 2);
	cf = query(p->ck[1], -1);
	assert_string_equal(group_of(cf, 2)->servers[0], "x");
	shardmaster_config_free(cf);
}

/* ---------------------------------------------------------------- restarts, sessions, failures */

static paxosrsm_role role_of(shardmaster_server *s)
{
	paxosrsm_info info;
	paxosrsm_get_info(sm_server_rsm(s), &info);
	return info.role;
}

/* A replica restarted in memory mode (restart) after its peers forgot the log
 * catches up from a peer's snapshot and serves the latest configuration
 * through a clerk that knows only it; then another replica dies and the
 * service goes on (the restarted one votes again). */
static void test_shardmaster_restarted_replica_catches_up_after_peers_forgot_the_log(void **state)
{
	cluster *c = *state;
	for (int64_t g = 1; g <= 6; g++)
		join_ok(c->ck, g, ABC, 3);
	assert_int_equal(shardmaster_clerk_move(c->ck, 0, 2), DKV_OK);
	leave_ok(c->ck, 3);
	/* Every replica applies (and is Done with) everything: the peers forget. */
	for (int r = 0; r < NSM; r++) {
		shardmaster_config *x = query(c->cka[r], -1);
		shardmaster_config_free(x);
	}
	WAIT_UNTIL(paxos_min(shardmaster_server_paxos(c->sm[1])) > 3 &&
	               paxos_min(shardmaster_server_paxos(c->sm[2])) > 3,
	           20000);
	shardmaster_config *before = query(c->ck, -1);

	shardmaster_server_free(c->sm[0]);
	dkv_server_opts o = { .restart = true };
	c->sm[0] = shardmaster_server_start_opts(c->names, NSM, 0, &o);
	if (c->sm[0] == NULL)
		fail_msg("restart: %s", strerror(errno));
	/* A clerk that knows only the restarted replica sees the latest state. */
	shardmaster_config *got = query(c->cka[0], -1);
	assert_same_config(got, before);
	shardmaster_config_free(got);
	for (int n = 0; n <= before->num; n++) {
		shardmaster_config *x = query(c->cka[0], n), *y = query(c->cka[1], n);
		assert_same_config(x, y);
		shardmaster_config_free(x);
		shardmaster_config_free(y);
	}
	paxosrsm_info info;
	paxosrsm_get_info(sm_server_rsm(c->sm[0]), &info);
	assert_true(info.snapshots_restored >= 1);

	/* Another replica dies: replicas 0 (restarted) and 2 are the majority now. */
	shardmaster_server_kill(c->sm[1]);
	shardmaster_clerk_set_timeout(c->ck, 30000);
	join_ok(c->ck, 77, XYZ, 3);
	shardmaster_config *after = query(c->cka[0], -1);
	assert_int_equal(after->num, before->num + 1);
	assert_non_null(group_of(after, 77));
	shardmaster_config *after2 = query(c->cka[2], -1);
	assert_same_config(after, after2);
	shardmaster_config_free(after);
	shardmaster_config_free(after2);
	shardmaster_config_free(before);
	assert_int_equal(role_of(c->sm[0]), PAXOSRSM_VOTING);
}

/* A data directory that cannot be created: the start fails (errno set),
 * nothing started (the name is free for a plain start). */
static void test_shardmaster_start_opts_with_an_unusable_directory_fails(void **state)
{
	(void)state;
	char name[DKV_NAME_MAX];
	th_port(name, "sm", "dir", 0);
	const char *names[] = { name };
	dkv_server_opts o = { .dir = "/proc/nonexistent-dkv/d" };
	errno = 0;
	assert_null(shardmaster_server_start_opts(names, 1, 0, &o));
	assert_int_not_equal(errno, 0);
	shardmaster_server *s = shardmaster_server_start_opts(names, 1, 0, NULL);
	assert_non_null(s);
	shardmaster_server_free(s);
}

static int raw_open(dkv_rpc_pool *pool, const char *name, int kind, uint64_t *id)
{
	sm_session_args a = { .kind = kind };
	sm_session_reply r;
	memset(&r, 0, sizeof r);
	int rc = dkv_rpc_call(pool, name, SHARDMASTER_PROG, SHARDMASTER_V1, SM_OPEN_SESSION,
	                      (xdrproc_t)xdr_sm_session_args, &a, (xdrproc_t)xdr_sm_session_reply,
	                      &r, 10000);
	if (rc != DKV_OK)
		return rc;
	*id = r.session;
	rc = r.err;
	xdr_free((xdrproc_t)xdr_sm_session_reply, (char *)&r);
	return rc;
}

typedef struct {
	const char *name;
	int n;
	int errors;
	uint64_t max_id;
} opener_arg;

static void *opener(void *p)
{
	opener_arg *a = p;
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	for (int i = 0; i < a->n; i++) {
		uint64_t id = 0;
		if (raw_open(pool, a->name, SM_SESSION_CLERK, &id) != DKV_OK)
			a->errors++;
		else if (id > a->max_id)
			a->max_id = id;
	}
	dkv_rpc_pool_free(pool);
	return NULL;
}

/* A clerk session that the log expired (more than PAXOSRSM_SESSIONS_MAX
 * sessions opened since) is refused with DKV_ERR_EXPIRED — a late retry of
 * its Join is never applied a second time — and a clerk whose session expired
 * between two requests goes on transparently with a new one. */
static void test_shardmaster_expired_session_gets_expired_never_a_duplicate(void **state)
{
	cluster *c = *state;
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	uint64_t sess = 0;
	assert_int_equal(raw_open(pool, c->names[0], SM_SESSION_CLERK, &sess), DKV_OK);
	assert_true(sess > 0);
	sm_join_args ja = { .session = sess, .seq = 1, .gid = 5 };
	ja.servers.servers_len = 3;
	ja.servers.servers_val = (char **)ABC;
	sm_reply r;
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[1], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN,
	                              (xdrproc_t)xdr_sm_join_args, &ja, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_OK);
	/* A retry while the session is alive: the first result, nothing applied. */
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, c->names[2], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN,
	                              (xdrproc_t)xdr_sm_join_args, &ja, (xdrproc_t)xdr_sm_reply, &r, 0),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_OK);
	leave_ok(c->ck, 5); /* the clerk's session is opened here */
	shardmaster_config *mid = query(c->ck, -1);
	assert_null(group_of(mid, 5));

	/* Expire both: open more sessions than the table holds, from 8 threads. */
	enum { NT = 8 };
	pthread_t th[NT];
	opener_arg args[NT];
	int per = (int)(PAXOSRSM_SESSIONS_MAX / NT) + 8;
	for (int i = 0; i < NT; i++) {
		args[i] = (opener_arg){ .name = c->names[i % NSM], .n = per };
		assert_int_equal(pthread_create(&th[i], NULL, opener, &args[i]), 0);
	}
	int errors = 0;
	for (int i = 0; i < NT; i++) {
		pthread_join(th[i], NULL);
		errors += args[i].errors;
	}
	assert_int_equal(errors, 0);
	paxosrsm_info info;
	paxosrsm_get_info(sm_server_rsm(c->sm[0]), &info);
	assert_true(info.sessions <= PAXOSRSM_SESSIONS_MAX);

	/* The late retry of the expired session's Join: EXPIRED, not applied again. */
	for (int i = 0; i < NSM; i++) {
		memset(&r, 0, sizeof r);
		assert_int_equal(dkv_rpc_call(pool, c->names[i], SHARDMASTER_PROG, SHARDMASTER_V1,
		                              SM_JOIN, (xdrproc_t)xdr_sm_join_args, &ja,
		                              (xdrproc_t)xdr_sm_reply, &r, 0),
		                 DKV_OK);
		assert_int_equal(r.err, DKV_ERR_EXPIRED);
	}
	shardmaster_config *now = query(c->ck, -1);
	assert_int_equal(now->num, mid->num);
	assert_null(group_of(now, 5));
	shardmaster_config_free(now);

	/* The clerk's own session expired too: its next Join is refused on the
	 * first attempt (never applied), so it reopens and succeeds, once. */
	join_ok(c->ck, 6, XYZ, 3);
	now = query(c->ck, -1);
	assert_int_equal(now->num, mid->num + 1);
	assert_non_null(group_of(now, 6));
	shardmaster_config_free(now);
	shardmaster_config_free(mid);

	/* Global ids (shardkv's sessions) increase. */
	uint64_t a = 0, b = 0;
	assert_int_equal(raw_open(pool, c->names[0], SM_SESSION_GLOBAL, &a), DKV_OK);
	assert_int_equal(raw_open(pool, c->names[2], SM_SESSION_GLOBAL, &b), DKV_OK);
	assert_true(a > 0 && b > a);
	dkv_rpc_pool_free(pool);
}

/* An allocation failure while a replica applies an agreed op stops that
 * replica (it never diverges); the others keep serving and agree. */
static void test_shardmaster_apply_failure_stops_the_replica(void **state)
{
	cluster *c = *state;
	join_ok(c->ck, 1, ABC, 3);
	shardmaster_clerk_set_timeout(c->ck, 5000);
	int stopped = -1;
	int64_t gid = 100;
	for (unsigned long n = 1; stopped < 0; n++) {
		assert_true(n < 5000);
		dkv_alloc_fail_after(n % 97 + 1);
		(void)shardmaster_clerk_join(c->ck, gid++, ABC, 3);
		dkv_alloc_fail_after(0);
		for (int r = 0; r < NSM; r++)
			if (role_of(c->sm[r]) == PAXOSRSM_STOPPED)
				stopped = r;
	}
	print_message("replica %d stopped itself\n", stopped);
	/* The two others serve and agree. */
	shardmaster_clerk_set_timeout(c->ck, 30000);
	join_ok(c->ck, 9999, XYZ, 3);
	int a = (stopped + 1) % NSM, b = (stopped + 2) % NSM;
	shardmaster_config *x = query(c->cka[a], -1), *y = query(c->cka[b], -1);
	assert_same_config(x, y);
	assert_non_null(group_of(x, 9999));
	shardmaster_config_free(x);
	shardmaster_config_free(y);
	/* The stopped one answers nothing. */
	shardmaster_clerk_set_timeout(c->cka[stopped], 500);
	shardmaster_config *z = NULL;
	assert_int_equal(shardmaster_clerk_query(c->cka[stopped], -1, &z), DKV_ERR_TIMEOUT);
}

/* ================================================================ main */

#define CLUSTER_TEST(f) cmocka_unit_test_setup_teardown(f, cluster_setup, cluster_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shardmaster_core_random_sequences_rebalance_evenly_and_minimally),
		cmocka_unit_test(test_shardmaster_core_rebalance_of_random_assignments_is_minimal_and_order_independent),
		cmocka_unit_test(test_shardmaster_core_join_order_does_not_matter_for_balance),
		cmocka_unit_test(test_shardmaster_core_more_groups_than_shards_get_one_shard_each),
		cmocka_unit_test(test_shardmaster_core_leave_of_last_group_returns_shards_to_gid_zero),
		cmocka_unit_test(test_shardmaster_core_noop_and_malformed_mutations_change_nothing),
		cmocka_unit_test(test_shardmaster_machine_apply_results_and_ids),
		cmocka_unit_test(test_shardmaster_machine_snapshot_restore_round_trip),
		cmocka_unit_test(test_shardmaster_machine_apply_out_of_memory_changes_nothing),
		cmocka_unit_test(test_shardmaster_core_out_of_memory_changes_nothing),
		CLUSTER_TEST(test_shardmaster_basic_leave_join_balances_and_keeps_server_lists),
		CLUSTER_TEST(test_shardmaster_basic_historical_queries_return_recorded_configs),
		CLUSTER_TEST(test_shardmaster_basic_move_assigns_shards_without_rebalancing),
		CLUSTER_TEST(test_shardmaster_basic_concurrent_leave_join_ends_balanced),
		CLUSTER_TEST(test_shardmaster_basic_min_advances_after_joins),
		CLUSTER_TEST(test_shardmaster_basic_joins_move_shards_only_away_from_old_groups),
		CLUSTER_TEST(test_shardmaster_basic_leaves_keep_staying_groups_shards),
		CLUSTER_TEST(test_shardmaster_unreliable_concurrent_leave_join_with_deaf_replica),
		CLUSTER_TEST(test_shardmaster_fresh_query_sees_join_made_through_another_replica),
		CLUSTER_TEST(test_shardmaster_more_groups_than_shards_hold_one_shard_each),
		CLUSTER_TEST(test_shardmaster_leave_of_last_group_puts_every_shard_on_gid_zero),
		CLUSTER_TEST(test_shardmaster_noop_requests_add_no_configuration),
		CLUSTER_TEST(test_shardmaster_malformed_requests_are_invalid),
		CLUSTER_TEST(test_shardmaster_clerk_deadline_times_out_without_majority),
		CLUSTER_TEST(test_shardmaster_unreliable_replicas_apply_each_request_once),
		CLUSTER_TEST(test_shardmaster_unreliable_history_matches_the_model),
		CLUSTER_TEST(test_shardmaster_kill_is_idempotent_and_others_keep_serving),
		CLUSTER_TEST(test_shardmaster_restarted_replica_catches_up_after_peers_forgot_the_log),
		cmocka_unit_test(test_shardmaster_start_opts_with_an_unusable_directory_fails),
		CLUSTER_TEST(test_shardmaster_expired_session_gets_expired_never_a_duplicate),
		CLUSTER_TEST(test_shardmaster_apply_failure_stops_the_replica),
		cmocka_unit_test_setup_teardown(test_shardmaster_minority_replica_does_not_block_clerks,
		                                pcluster_setup, pcluster_teardown),
	};
	return th_run_suite("shardmaster", tests);
}
