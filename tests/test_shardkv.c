/*
 * tests/test_shardkv.c — the sharded key/value store.
 *
 * The lab's §6.3 cases (Basic, Move, Limp, Concurrent, ConcurrentUnreliable)
 * on the lab's cluster: 3 shard masters and 3 groups (gids 100, 101, 102) of
 * 3 replicas, all in this process, names skv-<pid>-<tag>m-<i> (masters) and
 * skv-<pid>-<tag>s-<3g+j> (replica j of group g). Then our own cases: a shard
 * moved back and forth under concurrent Appends, a group that joins, leaves and
 * joins again, reconfigurations while one replica of each group is cut off
 * from its peers (per-pair links, as in the Paxos tests), the clerk deadline,
 * bad input, and a leak check over whole clusters.
 *
 * Worker threads never call cmocka asserts: they record what they saw, and
 * the test thread checks it after joining them. Test clerks get a generous
 * deadline (CLERK_MS), so a broken cluster fails a test instead of hanging it.
 */
#include "lib/harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../shardkv/skv_internal.h"
#include "../shardmaster/sm_session.h"
#include "dkv/paxos.h"
#include "dkv/paxosrsm.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"

enum { NS = SHARDMASTER_NSHARDS, NSM = 3, NG = 3, NR = 3, NKEYS = 10 };
#define CLERK_MS 60000u

/* ================================================================ cluster */

typedef struct {
	char tag[32];
	bool pairs;                       /* group peers named through per-pair links */
	char mnames[NSM][DKV_NAME_MAX];
	const char *mptrs[NSM];
	shardmaster_server *sm[NSM];
	int64_t gids[NG];
	char ports[NG][NR][DKV_NAME_MAX]; /* real sockets: what Join and clerks use */
	const char *gptrs[NG][NR];
	th_names *nm[NG];                 /* pairs mode only */
	shardkv_server *s[NG][NR];
	shardmaster_clerk *mck;
} cluster;

static void start_replica(cluster *c, int g, int j)
{
	const char *const *peers = c->pairs ? th_peers(c->nm[g], j) : c->gptrs[g];
	c->s[g][j] = shardkv_server_start(c->gids[g], c->mptrs, NSM, peers, NR, j);
	if (c->s[g][j] == NULL)
		fail_msg("shardkv_server_start %s: %s", c->ports[g][j], strerror(errno));
}

static cluster *cluster_new(const char *tag, bool unreliable, bool pairs)
{
	cluster *c = calloc(1, sizeof *c);
	assert_non_null(c);
	snprintf(c->tag, sizeof c->tag, "%s", tag);
	c->pairs = pairs;
	char t[64];
	snprintf(t, sizeof t, "%sm", tag);
	for (int i = 0; i < NSM; i++) {
		th_port(c->mnames[i], "skv", t, i);
		c->mptrs[i] = c->mnames[i];
	}
	for (int i = 0; i < NSM; i++) {
		c->sm[i] = shardmaster_server_start(c->mptrs, NSM, i);
		if (c->sm[i] == NULL)
			fail_msg("shardmaster_server_start: %s", strerror(errno));
	}
	for (int g = 0; g < NG; g++) {
		c->gids[g] = 100 + g;
		if (pairs) {
			snprintf(t, sizeof t, "%ss%d", tag, g);
			c->nm[g] = th_names_new("skv", t, NR);
		}
		for (int j = 0; j < NR; j++) {
			if (pairs) {
				snprintf(c->ports[g][j], DKV_NAME_MAX, "%s", c->nm[g]->ports[j]);
			} else {
				snprintf(t, sizeof t, "%ss", tag);
				th_port(c->ports[g][j], "skv", t, g * NR + j);
			}
			c->gptrs[g][j] = c->ports[g][j];
		}
	}
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++) {
			start_replica(c, g, j);
			if (unreliable)
				shardkv_server_set_unreliable(c->s[g][j], true);
		}
	if (pairs) {
		static const int all[NR] = { 0, 0, 0 };
		for (int g = 0; g < NG; g++)
			th_partition(c->nm[g], all);
	}
	c->mck = shardmaster_clerk_new(c->mptrs, NSM);
	assert_non_null(c->mck);
	shardmaster_clerk_set_timeout(c->mck, CLERK_MS);
	return c;
}

static void cluster_free(cluster *c)
{
	if (c == NULL)
		return;
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++)
			shardkv_server_kill(c->s[g][j]);
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++)
			shardkv_server_free(c->s[g][j]);
	for (int i = 0; i < NSM; i++)
		shardmaster_server_free(c->sm[i]);
	shardmaster_clerk_free(c->mck);
	for (int g = 0; g < NG; g++) {
		if (c->nm[g] != NULL) {
			th_cleanpp(c->nm[g]);
			th_names_free(c->nm[g]);
		}
	}
	free(c);
}

/* Teardown of every cluster test: the cluster the test left in *state (also
 * when the test failed half-way). */
static int cluster_teardown(void **state)
{
	cluster_free(*state);
	*state = NULL;
	return 0;
}

static void join(cluster *c, int g)
{
	assert_int_equal(shardmaster_clerk_join(c->mck, c->gids[g], c->gptrs[g], NR), DKV_OK);
}

static void leave(cluster *c, int g)
{
	assert_int_equal(shardmaster_clerk_leave(c->mck, c->gids[g]), DKV_OK);
}

static shardkv_clerk *new_clerk(cluster *c)
{
	shardkv_clerk *ck = shardkv_clerk_new(c->mptrs, NSM);
	assert_non_null(ck);
	shardkv_clerk_set_timeout(ck, CLERK_MS);
	return ck;
}

/* ================================================================ asserts */

#define assert_get(ck, key, expect) assert_get_at((ck), (key), (expect), __FILE__, __LINE__)
static void assert_get_at(shardkv_clerk *ck, const char *key, const char *expect,
                          const char *file, int line)
{
	char *v = NULL;
	int rc = shardkv_clerk_get(ck, key, &v);
	if (rc != DKV_OK)
		fail_msg("%s:%d: Get(%s): %s", file, line, key, dkv_strerror(rc));
	if (strcmp(v, expect) != 0) {
		char got[64];
		snprintf(got, sizeof got, "%.60s", v);
		free(v);
		fail_msg("%s:%d: Get(%s) = \"%s\", expected \"%.60s\"", file, line, key, got, expect);
	}
	free(v);
}

#define assert_put(ck, key, value) assert_int_equal(shardkv_clerk_put((ck), (key), (value)), DKV_OK)
#define assert_append(ck, key, value) \
	assert_int_equal(shardkv_clerk_append((ck), (key), (value)), DKV_OK)

/* The lab's keys and values: decimal renderings of random numbers. */
static void rand_num(char *buf, size_t n)
{
	snprintf(buf, n, "%llu", (unsigned long long)(th_rand() >> 1));
}

typedef struct {
	char keys[NKEYS][32];
	char vals[NKEYS][32];
} keyset;

static void put_random_keys(shardkv_clerk *ck, keyset *ks)
{
	for (int i = 0; i < NKEYS; i++) {
		rand_num(ks->keys[i], sizeof ks->keys[i]);
		rand_num(ks->vals[i], sizeof ks->vals[i]);
		assert_put(ck, ks->keys[i], ks->vals[i]);
	}
}

/* Every key reads its last value; then each gets a new one. */
static void check_then_rewrite(shardkv_clerk *ck, keyset *ks)
{
	for (int i = 0; i < NKEYS; i++) {
		assert_get(ck, ks->keys[i], ks->vals[i]);
		rand_num(ks->vals[i], sizeof ks->vals[i]);
		assert_put(ck, ks->keys[i], ks->vals[i]);
	}
}

/* ================================================================ lab §6.3 */

/* Basic: shards follow joins and leaves; every value survives each reconfiguration. */
static void test_shardkv_basic_join_leave_keeps_every_value(void **state)
{
	cluster *c = cluster_new("basic", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	assert_put(ck, "a", "x");
	assert_append(ck, "a", "b");
	assert_get(ck, "a", "xb");

	keyset ks;
	put_random_keys(ck, &ks);
	for (int g = 1; g < NG; g++) {
		join(c, g);
		th_sleep_ms(1000);
		check_then_rewrite(ck, &ks);
	}
	for (int g = 0; g < NG - 1; g++) {
		leave(c, g);
		th_sleep_ms(1000);
		check_then_rewrite(ck, &ks);
	}
	shardkv_clerk_free(ck);
}

typedef struct {
	cluster *c;
	int key;
	atomic_int *count;
	atomic_int *wrong;
} move_reader;

static void *move_reader_main(void *arg)
{
	move_reader *r = arg;
	shardkv_clerk *ck = shardkv_clerk_new(r->c->mptrs, NSM);
	if (ck == NULL) {
		atomic_fetch_add(r->wrong, 1);
		return NULL;
	}
	/* The lab abandons readers that stay blocked; ours give up after 12 s. */
	shardkv_clerk_set_timeout(ck, 12000);
	char key[8];
	snprintf(key, sizeof key, "%d", r->key);
	char *v = NULL;
	if (shardkv_clerk_get(ck, key, &v) == DKV_OK) {
		if (strcmp(v, key) == 0)
			atomic_fetch_add(r->count, 1);
		else
			atomic_fetch_add(r->wrong, 1);
	}
	free(v);
	shardkv_clerk_free(ck);
	return NULL;
}

/* Move: after a join half the shards really live in the new group: with the old one deaf, 4 or 5 keys answer. */
static void test_shardkv_shards_really_move(void **state)
{
	cluster *c = cluster_new("move", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	for (int i = 0; i < NS; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		assert_put(ck, k, k);
	}
	join(c, 1);
	th_sleep_ms(5000);
	for (int i = 0; i < NS; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		assert_get(ck, k, k);
	}
	/* Make group 0 unreachable by clients, other groups and its own peers. */
	for (int j = 0; j < NR; j++)
		th_unlink(c->ports[0][j]);

	atomic_int count = 0, wrong = 0;
	move_reader rd[NS];
	pthread_t th[NS];
	for (int i = 0; i < NS; i++) {
		rd[i] = (move_reader){ c, i, &count, &wrong };
		assert_int_equal(pthread_create(&th[i], NULL, move_reader_main, &rd[i]), 0);
	}
	th_sleep_ms(10000);
	int ccount = atomic_load(&count);
	for (int i = 0; i < NS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&wrong), 0);
	if (!(ccount > NS / 3 && ccount < 2 * (NS / 3)))
		fail_msg("%d keys worked after killing 1/2 of groups; wanted %d", ccount, NS / 2);
	shardkv_clerk_free(ck);
}

/* Limp: reconfigurations with one dead replica per group; a leaving group may die 2 s after its Leave. */
static void test_shardkv_reconfiguration_with_some_dead_replicas(void **state)
{
	cluster *c = cluster_new("limp", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	assert_put(ck, "a", "b");
	assert_get(ck, "a", "b");
	for (int g = 0; g < NG; g++)
		shardkv_server_kill(c->s[g][th_rand() % NR]);

	keyset ks;
	put_random_keys(ck, &ks);
	for (int g = 1; g < NG; g++) {
		join(c, g);
		th_sleep_ms(1000);
		check_then_rewrite(ck, &ks);
	}
	for (int g = 0; g < NG - 1; g++) {
		leave(c, g);
		th_sleep_ms(2000);
		for (int j = 0; j < NR; j++)
			shardkv_server_kill(c->s[g][j]);
		check_then_rewrite(ck, &ks);
	}
	shardkv_clerk_free(ck);
}

typedef struct {
	cluster *c;
	int me;
	int iters;
	bool ok;
	char why[160];
} conc_client;

static void *conc_client_main(void *arg)
{
	conc_client *cl = arg;
	shardkv_clerk *ck = shardkv_clerk_new(cl->c->mptrs, NSM);
	shardmaster_clerk *mck = shardmaster_clerk_new(cl->c->mptrs, NSM);
	cl->ok = ck != NULL && mck != NULL;
	if (!cl->ok) {
		snprintf(cl->why, sizeof cl->why, "clerk_new failed");
		goto out;
	}
	shardkv_clerk_set_timeout(ck, CLERK_MS);
	shardmaster_clerk_set_timeout(mck, CLERK_MS);
	char key[8];
	snprintf(key, sizeof key, "%d", cl->me);
	char last[512] = "";
	for (int it = 0; it < cl->iters && cl->ok; it++) {
		char nv[32];
		rand_num(nv, sizeof nv);
		int rc = shardkv_clerk_append(ck, key, nv);
		if (rc != DKV_OK) {
			snprintf(cl->why, sizeof cl->why, "Append(%s): %s", key, dkv_strerror(rc));
			cl->ok = false;
			break;
		}
		strncat(last, nv, sizeof last - strlen(last) - 1);
		char *v = NULL;
		rc = shardkv_clerk_get(ck, key, &v);
		if (rc != DKV_OK || strcmp(v, last) != 0) {
			snprintf(cl->why, sizeof cl->why, "Get(%s): %s, \"%.40s\" != \"%.40s\"", key,
			         dkv_strerror(rc), v ? v : "(null)", last);
			cl->ok = false;
		}
		free(v);
		int64_t gid = 100 + (int64_t)(th_rand() % NG);
		rc = shardmaster_clerk_move(mck, (int)(th_rand() % NS), gid);
		if (rc != DKV_OK) {
			snprintf(cl->why, sizeof cl->why, "Move: %s", dkv_strerror(rc));
			cl->ok = false;
		}
		th_sleep_ms((unsigned)(th_rand() % 30));
	}
out:
	shardkv_clerk_free(ck);
	shardmaster_clerk_free(mck);
	return NULL;
}

static void do_concurrent(void **state, const char *tag, bool unreliable)
{
	cluster *c = cluster_new(tag, unreliable, false);
	*state = c;
	for (int g = 0; g < NG; g++)
		join(c, g);
	enum { NPARA = 11 };
	conc_client cl[NPARA];
	pthread_t th[NPARA];
	for (int i = 0; i < NPARA; i++) {
		cl[i] = (conc_client){ .c = c, .me = i, .iters = 3 };
		assert_int_equal(pthread_create(&th[i], NULL, conc_client_main, &cl[i]), 0);
	}
	for (int i = 0; i < NPARA; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NPARA; i++)
		if (!cl[i].ok)
			fail_msg("client %d: %s", i, cl[i].why);
}

/* Concurrent: 11 clients Append, Get and Move shards at once; every Get sees every earlier Append. */
static void test_shardkv_concurrent_put_get_move(void **state)
{
	(void)state;
	do_concurrent(state, "conc", false);
}

/* ConcurrentUnreliable: the same with every shardkv replica dropping requests and replies. */
static void test_shardkv_concurrent_put_get_move_unreliable(void **state)
{
	(void)state;
	do_concurrent(state, "concu", true);
}

/* ================================================================ our own */

/* key2shard is the first byte modulo NShards, 0 for the empty key. */
static void test_shardkv_key2shard_uses_the_first_byte(void **state)
{
	(void)state;
	assert_int_equal(shardkv_key2shard(""), 0);
	assert_int_equal(shardkv_key2shard(NULL), 0);
	for (int d = 0; d < 10; d++) {
		char k[4] = { (char)('0' + d), 'x', 0, 0 };
		assert_int_equal(shardkv_key2shard(k), (48 + d) % NS);
	}
	assert_int_equal(shardkv_key2shard("\xff"), 255 % NS);
}

typedef struct {
	cluster *c;
	int me;
	int n;
	int done;
	int rc;
} appender;

static void *appender_main(void *arg)
{
	appender *a = arg;
	shardkv_clerk *ck = shardkv_clerk_new(a->c->mptrs, NSM);
	if (ck == NULL) {
		a->rc = DKV_ERR_NOMEM;
		return NULL;
	}
	shardkv_clerk_set_timeout(ck, CLERK_MS);
	for (int j = 0; j < a->n; j++) {
		char v[64];
		snprintf(v, sizeof v, "x %d %d y", a->me, j);
		a->rc = shardkv_clerk_append(ck, "k", v);
		if (a->rc != DKV_OK)
			break;
		a->done = j + 1;
	}
	shardkv_clerk_free(ck);
	return NULL;
}

/* A shard moved back and forth many times, on unreliable replicas, keeps every Append exactly once and in order. */
static void test_shardkv_shard_moved_back_and_forth_keeps_every_append_exactly_once(void **state)
{
	cluster *c = cluster_new("flip", true, false);
	*state = c;
	for (int g = 0; g < NG; g++)
		join(c, g);
	shardkv_clerk *ck = new_clerk(c);
	assert_put(ck, "k", "");
	enum { NCLI = 3, NAPP = 20, NMOVES = 15 };
	appender ap[NCLI];
	pthread_t th[NCLI];
	for (int i = 0; i < NCLI; i++) {
		ap[i] = (appender){ .c = c, .me = i, .n = NAPP };
		assert_int_equal(pthread_create(&th[i], NULL, appender_main, &ap[i]), 0);
	}
	int shard = shardkv_key2shard("k");
	for (int m = 0; m < NMOVES; m++) {
		assert_int_equal(shardmaster_clerk_move(c->mck, shard, c->gids[m % NG]), DKV_OK);
		th_sleep_ms(50 + (unsigned)(th_rand() % 150));
	}
	for (int i = 0; i < NCLI; i++)
		pthread_join(th[i], NULL);
	int counts[NCLI];
	for (int i = 0; i < NCLI; i++) {
		if (ap[i].rc != DKV_OK)
			fail_msg("appender %d: %s after %d", i, dkv_strerror(ap[i].rc), ap[i].done);
		counts[i] = NAPP;
	}
	char *v = NULL;
	assert_int_equal(shardkv_clerk_get(ck, "k", &v), DKV_OK);
	th_check_appends(v, counts, NCLI);
	free(v);
	shardkv_clerk_free(ck);
}

/* A group that joins, leaves and joins again gets shards back and serves them with the latest values. */
static void test_shardkv_group_that_joins_leaves_and_joins_again_serves_its_shards(void **state)
{
	cluster *c = cluster_new("rejoin", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	keyset ks;
	put_random_keys(ck, &ks);
	join(c, 1);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	leave(c, 1);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	join(c, 1);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	leave(c, 0);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	/* Group 0 comes back too, after group 1 alone held everything. */
	join(c, 0);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	shardkv_clerk_free(ck);
}

/* Reconfigurations go on while one replica of each group is cut off from its peers; after healing it catches up. */
static void test_shardkv_reconfiguration_while_one_replica_of_each_group_is_partitioned(void **state)
{
	cluster *c = cluster_new("part", false, true);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	keyset ks;
	put_random_keys(ck, &ks);

	static const int cut2[NR] = { 0, 0, -1 };
	for (int g = 0; g < NG; g++)
		th_partition(c->nm[g], cut2);
	join(c, 1);
	join(c, 2);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	leave(c, 0);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);

	/* Heal, then cut replica 0 off instead: replica 2 must have caught up. */
	static const int cut0[NR] = { -1, 0, 0 };
	for (int g = 0; g < NG; g++)
		th_partition(c->nm[g], cut0);
	join(c, 0);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	leave(c, 1);
	th_sleep_ms(1000);
	check_then_rewrite(ck, &ks);
	shardkv_clerk_free(ck);
}

/* Once the new owners have installed the shards, the old owner frees its copies (the live heap shows it). */
static void test_shardkv_old_owner_frees_shards_once_the_new_owner_has_them(void **state)
{
	cluster *c = cluster_new("gc", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	enum { VLEN = 1000000 };
	char *big = malloc(VLEN + 1);
	assert_non_null(big);
	join(c, 0);
	for (int i = 0; i < NS; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		memset(big, 'a' + i, VLEN);
		big[VLEN] = '\0';
		assert_put(ck, k, big);
	}
	/* Small ops through every replica's group so that Done reaches every peer. */
	for (int r = 0; r < 2; r++)
		for (int i = 0; i < NS; i++) {
			char k[8];
			snprintf(k, sizeof k, "%d", i);
			assert_put(ck, "a", k);
		}
	th_sleep_ms(1000);
	size_t m0 = th_live_heap();

	join(c, 1);
	join(c, 2);
	th_sleep_ms(2000);
	leave(c, 0);
	th_sleep_ms(2000);
	for (int i = 0; i < NS; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		char *v = NULL;
		assert_int_equal(shardkv_clerk_get(ck, k, &v), DKV_OK);
		assert_int_equal(strlen(v), VLEN);
		assert_true(v[0] == 'a' + i && v[VLEN - 1] == 'a' + i);
		free(v);
	}
	/* 10 MB of values live in 3 replicas either way; an old copy kept by group 0
	 * would add up to 30 MB. Keep every group busy with small ops (so Done
	 * reaches every Paxos peer) until the heap is within bounds, for up to 30 s. */
	size_t bound = m0 + 10u * VLEN;
	uint64_t until = th_now_ms() + 30000;
	while (th_live_heap() >= bound && th_now_ms() < until) {
		for (int i = 0; i < NS; i++) {
			char k[8];
			snprintf(k, sizeof k, "%dz", i);
			assert_put(ck, k, "x");
		}
		th_sleep_ms(200);
	}
	size_t m1 = th_live_heap();
	print_message("live heap before moves %zu, after %zu\n", m0, m1);
	assert_true(m1 < bound);
	free(big);
	shardkv_clerk_free(ck);
}

/* A clerk with a deadline returns DKV_ERR_TIMEOUT (and a NULL value) when no group can serve its key; a key never written reads "". */
static void test_shardkv_clerk_deadline_returns_timeout(void **state)
{
	cluster *c = cluster_new("deadline", false, false);
	*state = c;
	shardkv_clerk *ck = shardkv_clerk_new(c->mptrs, NSM);
	assert_non_null(ck);
	shardkv_clerk_set_timeout(ck, 300);
	/* No group has joined: every shard is on gid 0. */
	char *v = (char *)"junk";
	assert_int_equal(shardkv_clerk_get(ck, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);
	assert_int_equal(shardkv_clerk_put(ck, "a", "1"), DKV_ERR_TIMEOUT);

	/* The owning group is dead. */
	join(c, 0);
	shardkv_clerk_set_timeout(ck, CLERK_MS);
	assert_put(ck, "a", "1");
	assert_get(ck, "never-written", ""); /* lab semantics: OK and "" */
	for (int j = 0; j < NR; j++)
		shardkv_server_kill(c->s[0][j]);
	shardkv_clerk_set_timeout(ck, 500);
	v = (char *)"junk";
	assert_int_equal(shardkv_clerk_get(ck, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);
	assert_int_equal(shardkv_clerk_append(ck, "a", "2"), DKV_ERR_TIMEOUT);
	shardkv_clerk_free(ck);
}

/* Oversized keys and values, and NULL arguments, are refused with DKV_ERR_INVAL without any RPC. */
static void test_shardkv_clerk_refuses_bad_arguments(void **state)
{
	(void)state;
	char m[DKV_NAME_MAX];
	const char *mp[1] = { th_port(m, "skv", "badm", 0) };
	shardkv_clerk *ck = shardkv_clerk_new(mp, 1);
	assert_non_null(ck);
	char *big = malloc(DKV_KEY_MAX + 2);
	assert_non_null(big);
	memset(big, 'k', DKV_KEY_MAX + 1);
	big[DKV_KEY_MAX + 1] = '\0';
	char *v = (char *)"junk";
	assert_int_equal(shardkv_clerk_get(ck, big, &v), DKV_ERR_INVAL);
	assert_null(v);
	assert_int_equal(shardkv_clerk_put(ck, big, "v"), DKV_ERR_INVAL);
	assert_int_equal(shardkv_clerk_put(ck, "k", NULL), DKV_ERR_INVAL);
	assert_int_equal(shardkv_clerk_get(ck, NULL, &v), DKV_ERR_INVAL);
	assert_int_equal(shardkv_clerk_get(ck, "k", NULL), DKV_ERR_INVAL);
	free(big);
	shardkv_clerk_free(ck);
	shardkv_clerk_free(NULL);
	shardkv_server_free(NULL);
	errno = 0;
	assert_null(shardkv_server_start(0, mp, 1, mp, 1, 0));
	assert_int_equal(errno, EINVAL);
	assert_null(shardkv_clerk_new(NULL, 0));
}

/* One cluster's life: joins, some ops, a move, then kill and free of everything. */
static void cluster_cycle(const char *tag)
{
	cluster *c = cluster_new(tag, false, false);
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	join(c, 1);
	keyset ks;
	put_random_keys(ck, &ks);
	join(c, 2);
	check_then_rewrite(ck, &ks);
	assert_int_equal(shardmaster_clerk_move(c->mck, shardkv_key2shard(ks.keys[0]), 100), DKV_OK);
	check_then_rewrite(ck, &ks);
	shardkv_clerk_free(ck);
	/* Kill twice: idempotent. */
	for (int g = 0; g < NG; g++)
		shardkv_server_kill(c->s[g][0]);
	assert_non_null(shardkv_server_paxos(c->s[0][0]));
	(void)paxos_max(shardkv_server_paxos(c->s[0][0]));
	cluster_free(c);
}

/* Kill and free of whole clusters leak nothing: live heap and thread count come back. */
static void test_shardkv_kill_and_free_of_a_whole_cluster_leaks_nothing(void **state)
{
	(void)state;
	cluster_cycle("leak0"); /* warm up one-time library state */
	size_t heap0 = th_live_heap();
	int threads0 = th_thread_count();
	int cycles = th_under_valgrind() ? 1 : 3;
	for (int i = 0; i < cycles; i++) {
		char tag[16];
		snprintf(tag, sizeof tag, "leak%d", i + 1);
		cluster_cycle(tag);
	}
	WAIT_UNTIL(th_thread_count() <= threads0, 10000); /* the count lags a join */
	size_t heap1 = th_live_heap();
	int threads1 = th_thread_count();
	print_message("live heap %zu -> %zu bytes, threads %d -> %d\n", heap0, heap1, threads0,
	              threads1);
	assert_true(heap1 < heap0 + 512 * 1024);
}

/* ================================================================ restarts, sessions, failures */

/* A raw Get / Append at one replica (no clerk, no routing): what it serves. */
static int raw_get(const char *name, const char *key, char **value)
{
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	skv_get_args a = { .wait_ms = 3000, .key = (char *)key };
	skv_get_reply r;
	memset(&r, 0, sizeof r);
	int rc = dkv_rpc_call(pool, name, SKV_PROG, SKV_VERS, SKV_GET, (xdrproc_t)xdr_skv_get_args,
	                      &a, (xdrproc_t)xdr_skv_get_reply, &r, 10000);
	if (rc == DKV_OK) {
		rc = r.err;
		*value = strdup(r.value ? r.value : "");
		xdr_free((xdrproc_t)xdr_skv_get_reply, (char *)&r);
	}
	dkv_rpc_pool_free(pool);
	return rc;
}

static int raw_append(const char *name, uint64_t session, uint64_t seq, const char *key,
                      const char *value)
{
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	skv_putappend_args a = { .session = session, .seq = seq, .wait_ms = 3000, .append = true,
	                         .key = (char *)key, .value = (char *)value };
	skv_putappend_reply r;
	memset(&r, 0, sizeof r);
	int rc = dkv_rpc_call(pool, name, SKV_PROG, SKV_VERS, SKV_PUTAPPEND,
	                      (xdrproc_t)xdr_skv_putappend_args, &a,
	                      (xdrproc_t)xdr_skv_putappend_reply, &r, 10000);
	if (rc == DKV_OK)
		rc = r.err;
	dkv_rpc_pool_free(pool);
	return rc;
}

/* raw_append_any: the first replica of group g that applies it (or its final answer). */
static int raw_append_group(cluster *c, int g, uint64_t session, uint64_t seq, const char *key,
                            const char *value)
{
	int rc = DKV_ERR_NET;
	for (int round = 0; round < 50; round++) {
		for (int j = 0; j < NR; j++) {
			rc = raw_append(c->ports[g][j], session, seq, key, value);
			if (rc == DKV_OK || rc == DKV_ERR_EXPIRED || rc == DKV_ERR_INVAL)
				return rc;
		}
		th_sleep_ms(100);
	}
	return rc;
}

static paxosrsm_role skv_role(shardkv_server *s)
{
	paxosrsm_info info;
	paxosrsm_get_info(s->rsm, &info);
	return info.role;
}

/* A replica restarted in memory mode (restart) after its peers forgot the log
 * catches up from a peer's snapshot — shards, values and session tables — and
 * serves the latest values itself; then another replica of its group dies and
 * the group keeps working (the restarted one votes again). */
static void test_shardkv_restarted_replica_catches_up_after_peers_forgot_the_log(void **state)
{
	cluster *c = cluster_new("rst", false, false);
	*state = c;
	shardkv_clerk *ck = new_clerk(c);
	join(c, 0);
	keyset ks;
	put_random_keys(ck, &ks);
	for (int r = 0; r < 3; r++)
		check_then_rewrite(ck, &ks);
	for (int j = 1; j < NR; j++)
		WAIT_UNTIL(paxos_min(shardkv_server_paxos(c->s[0][j])) > 5, 20000);
	shardkv_server_free(c->s[0][0]);
	dkv_server_opts o = { .restart = true };
	c->s[0][0] = shardkv_server_start_opts(c->gids[0], c->mptrs, NSM, c->gptrs[0], NR, 0, &o);
	if (c->s[0][0] == NULL)
		fail_msg("restart: %s", strerror(errno));
	/* The restarted replica itself answers every key with its latest value. */
	for (int i = 0; i < NKEYS; i++) {
		char *v = NULL;
		int rc = DKV_ERR_NET;
		for (int t = 0; t < 100 && rc != DKV_OK; t++) {
			free(v);
			v = NULL;
			rc = raw_get(c->ports[0][0], ks.keys[i], &v);
			if (rc != DKV_OK)
				th_sleep_ms(50);
		}
		if (rc != DKV_OK)
			fail_msg("restarted replica: Get(%s): %s", ks.keys[i], dkv_strerror(rc));
		assert_string_equal(v, ks.vals[i]);
		free(v);
	}
	paxosrsm_info info;
	paxosrsm_get_info(c->s[0][0]->rsm, &info);
	assert_true(info.snapshots_restored >= 1);
	/* Another replica dies: 0 (restarted) and 2 carry the group. */
	shardkv_server_kill(c->s[0][1]);
	check_then_rewrite(ck, &ks);
	for (int i = 0; i < NKEYS; i++)
		assert_get(ck, ks.keys[i], ks.vals[i]);
	assert_int_equal(skv_role(c->s[0][0]), PAXOSRSM_VOTING);
	shardkv_clerk_free(ck);
}

/* Session records are bounded per shard however many clerks write, travel
 * with the shard (a retried Append after a move is applied once), and a
 * session pushed out by newer ones is refused (EXPIRED), never applied twice. */
static void test_shardkv_sessions_are_bounded_and_travel_with_the_shard(void **state)
{
	size_t saved = skv_sessions_cap;
	skv_sessions_cap = 32; /* before any server starts: every replica agrees */
	cluster *c = cluster_new("sess", false, false);
	*state = c;
	join(c, 0);
	/* An Append under a session of our own, applied by group 0. */
	uint64_t s1 = 0;
	assert_int_equal(sm_clerk_global_session(c->mck, &s1), DKV_OK);
	const char *key = "a";
	int shard = shardkv_key2shard(key);
	assert_int_equal(raw_append_group(c, 0, s1, 1, key, "x"), DKV_OK);
	/* The shard moves to group 1; the retry of that Append reaches the new owner. */
	join(c, 1);
	assert_int_equal(shardmaster_clerk_move(c->mck, shard, c->gids[1]), DKV_OK);
	shardkv_clerk *ck = new_clerk(c);
	assert_get(ck, key, "x"); /* served by group 1 once it has the shard */
	assert_int_equal(raw_append_group(c, 1, s1, 1, key, "x"), DKV_OK); /* DUP */
	assert_get(ck, key, "x");
	assert_int_equal(raw_append_group(c, 1, s1, 2, key, "y"), DKV_OK);
	assert_get(ck, key, "xy");

	/* 100 clerks (100 sessions) append to the same shard. */
	char want[256] = "xy";
	for (int i = 0; i < 100; i++) {
		shardkv_clerk *k2 = new_clerk(c);
		assert_append(k2, key, "z");
		strcat(want, "z");
		shardkv_clerk_free(k2);
	}
	assert_get(ck, key, want);
	for (int j = 0; j < NR; j++) {
		shardkv_server *s = c->s[1][j];
		pthread_mutex_lock(&s->mu);
		size_t held = skv_sessions_held(&s->st);
		size_t in_shard = s->st.shards[shard] ? dkv_sessions_count(s->st.shards[shard]->sess) : 0;
		pthread_mutex_unlock(&s->mu);
		print_message("replica %d of group 1: %zu sessions held, %zu in shard %d\n", j, held,
		              in_shard, shard);
		assert_true(in_shard <= 32);
		assert_true(held <= 32 * NS);
	}
	/* s1 was pushed out: its late retry is refused and changes nothing. */
	assert_int_equal(raw_append_group(c, 1, s1, 2, key, "y"), DKV_ERR_EXPIRED);
	assert_int_equal(raw_append_group(c, 1, s1, 3, key, "w"), DKV_ERR_EXPIRED);
	assert_get(ck, key, want);
	/* A clerk whose session expired between two calls goes on transparently. */
	assert_append(ck, key, "1"); /* ck's session was opened... */
	for (int i = 0; i < 40; i++) {
		shardkv_clerk *k2 = new_clerk(c);
		assert_append(k2, key, "z");
		strcat(want, "z");
		shardkv_clerk_free(k2);
	}
	(void)want;
	assert_append(ck, key, "2"); /* ...and expired since: reopened, applied once */
	char *v = NULL;
	assert_int_equal(shardkv_clerk_get(ck, key, &v), DKV_OK);
	assert_int_equal(strchr(v, '2') - v, (long)strlen(v) - 1);
	assert_non_null(strchr(v, '1'));
	assert_null(strchr(strchr(v, '2') + 1, '2'));
	free(v);
	shardkv_clerk_free(ck);
	skv_sessions_cap = saved;
}

/* An allocation failure while a replica applies an agreed op stops that
 * replica (it never diverges); its group keeps serving. */
static void test_shardkv_apply_failure_stops_the_replica(void **state)
{
	cluster *c = cluster_new("afail", false, false);
	*state = c;
	join(c, 0);
	shardkv_clerk *ck = new_clerk(c);
	assert_put(ck, "k", "v");
	shardkv_clerk_set_timeout(ck, 5000);
	int stopped = -1;
	for (unsigned long n = 1; stopped < 0; n++) {
		assert_true(n < 5000);
		char val[32];
		snprintf(val, sizeof val, "%lu", n);
		dkv_alloc_fail_after(n % 61 + 1);
		(void)shardkv_clerk_put(ck, "k", val);
		dkv_alloc_fail_after(0);
		for (int j = 0; j < NR; j++)
			if (skv_role(c->s[0][j]) == PAXOSRSM_STOPPED)
				stopped = j;
	}
	print_message("replica %d stopped itself\n", stopped);
	shardkv_clerk_set_timeout(ck, CLERK_MS);
	assert_put(ck, "k", "after");
	assert_get(ck, "k", "after");
	shardkv_clerk_free(ck);
}

#define CLUSTER_TEST(f) cmocka_unit_test_teardown(f, cluster_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shardkv_key2shard_uses_the_first_byte),
		cmocka_unit_test(test_shardkv_clerk_refuses_bad_arguments),
		CLUSTER_TEST(test_shardkv_basic_join_leave_keeps_every_value),
		CLUSTER_TEST(test_shardkv_shards_really_move),
		CLUSTER_TEST(test_shardkv_reconfiguration_with_some_dead_replicas),
		CLUSTER_TEST(test_shardkv_concurrent_put_get_move),
		CLUSTER_TEST(test_shardkv_concurrent_put_get_move_unreliable),
		CLUSTER_TEST(test_shardkv_shard_moved_back_and_forth_keeps_every_append_exactly_once),
		CLUSTER_TEST(test_shardkv_group_that_joins_leaves_and_joins_again_serves_its_shards),
		CLUSTER_TEST(test_shardkv_reconfiguration_while_one_replica_of_each_group_is_partitioned),
		CLUSTER_TEST(test_shardkv_old_owner_frees_shards_once_the_new_owner_has_them),
		CLUSTER_TEST(test_shardkv_clerk_deadline_returns_timeout),
		CLUSTER_TEST(test_shardkv_restarted_replica_catches_up_after_peers_forgot_the_log),
		CLUSTER_TEST(test_shardkv_sessions_are_bounded_and_travel_with_the_shard),
		CLUSTER_TEST(test_shardkv_apply_failure_stops_the_replica),
		cmocka_unit_test(test_shardkv_kill_and_free_of_a_whole_cluster_leaks_nothing),
	};
	return th_run_suite("shardkv", tests);
}
