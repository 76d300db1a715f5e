/*
 * tests/test_chaos.c — seeded fault schedules against the KV services, checked
 * for linearizability (issue 8, "Fault schedules").
 *
 * A run: start the service; 10 clients with a clerk deadline issue random
 * Gets, Puts and Appends (unique values) on 4 keys, each recorded in a
 * th_history (timeouts recorded as unknown outcomes); meanwhile a nemesis
 * thread draws faults from the run's seed — partitions (random halves, bridges, a
 * lone minority, three random groups), heals, unreliable mode on random
 * replicas, a replica killed — or, for pbservice, servers killed and
 * restarted one at a time and unreliable mode; for shardkv, shard moves, a
 * group joining and leaving, replicas cut off within their group. After the run time: heal
 * everything, let every client finish its op, read every key once more, and
 * check the whole history (ILLEGAL or UNKNOWN fails). A run with fewer than
 * CHAOS_MIN_OK completed ops fails: a quiet run proves nothing.
 *
 * Each run prints its seed, the ops ok/failed/unknown, the faults injected by
 * type and the checker's verdict. `make test` runs fixed seeds; with
 * DKV_TEST_SEED set, one run uses that seed (replay). DKV_CHAOS_RUNS=N runs N
 * seeds from there, DKV_CHAOS_SECONDS=S sets the fault phase (default 8 s), for
 * soak runs outside CI.
 */
#include "lib/harness.h"
#include "lib/history.h"
#include "lib/linearizability.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/kvpaxos.h"
#include "dkv/pbservice.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv/viewservice.h"

#define NCLIENTS 10
#define NKEYS 4
#define CHAOS_MIN_OK 300
#define MAXN 5
#define FINAL_TIMEOUT_MS 30000

/* ------------------------------------------------------------ seeded randomness */

typedef struct {
	uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int runif(rng *r, int n)
{
	return (int)(rnext(r) % (uint64_t)n);
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
	const char *e = getenv(name);
	return e != NULL && *e != '\0' ? (unsigned)strtoul(e, NULL, 0) : dflt;
}

/* key_name: key k of the workload; first bytes differ, so that for shardkv
 * (shard = first byte mod 10) the keys live in different shards. */
static void key_name(char *buf, size_t n, int k)
{
	snprintf(buf, n, "%c-key", 'a' + k);
}

/* ------------------------------------------------------------ the service seam */

/* A KV service as the workload sees it: a clerk factory and the three ops. */
typedef struct {
	void *(*clerk_new)(void *svc); /* with the workload's deadline */
	void (*clerk_free)(void *ck);
	void (*set_timeout)(void *ck, unsigned ms);
	int (*get)(void *ck, const char *key, char **value);
	int (*put)(void *ck, const char *key, const char *value);
	int (*append)(void *ck, const char *key, const char *value);
} kv_ops;

/* ------------------------------------------------------------ the workload */

enum {
	F_HALVES, F_LONE, F_GROUPS3, F_HEAL, F_UNRELIABLE, F_RELIABLE, F_KILL, F_RESTART,
	F_MOVE, F_JOIN, F_LEAVE, F_BRIDGE, F_KINDS
};
static const char *const fault_names[F_KINDS] = {
	"partition-halves", "partition-lone", "partition-3-groups", "heal", "unreliable-on",
	"unreliable-off", "kill", "restart", "shard-move", "join", "leave", "partition-bridge"
};

typedef struct {
	const kv_ops *ops;
	void *svc;
	th_history *h;
	uint64_t seed;
	atomic_bool done;
	atomic_int running;
	int faults[F_KINDS];
} run_env;

typedef struct {
	run_env *env;
	int me;
} client_arg;

static void *client_main(void *p)
{
	client_arg *a = p;
	run_env *env = a->env;
	rng r = { env->seed * 1000003u + (uint64_t)a->me };
	void *ck = env->ops->clerk_new(env->svc);
	if (ck == NULL) {
		atomic_fetch_sub(&env->running, 1);
		return NULL;
	}
	for (int i = 0; !atomic_load(&env->done); i++) {
		char key[8], val[32];
		key_name(key, sizeof key, runif(&r, NKEYS));
		snprintf(val, sizeof val, "(%d.%d)", a->me, i);
		int d = runif(&r, 100);
		th_op_kind kind = d < 45 ? TH_OP_APPEND : d < 55 ? TH_OP_PUT : TH_OP_GET;
		int id = th_history_invoke(env->h, a->me, kind, key, val);
		char *v = NULL;
		int rc = kind == TH_OP_GET   ? env->ops->get(ck, key, &v)
		         : kind == TH_OP_PUT ? env->ops->put(ck, key, val)
		                             : env->ops->append(ck, key, val);
		if (rc == DKV_OK)
			th_history_return(env->h, id, v);
		else if (rc == DKV_ERR_INVAL)
			th_history_fail(env->h, id); /* rejected before it was sent */
		else
			th_history_unknown(env->h, id);
		free(v);
	}
	env->ops->clerk_free(ck);
	atomic_fetch_sub(&env->running, 1);
	return NULL;
}

/*
 * run_workload: clients for `seconds` while nemesis(env, arg) runs in this
 * thread; then heal(arg), wait for the clients, read every key through a
 * fresh clerk, check the history, print the figures.
 */
static void run_workload(run_env *env, const char *label, unsigned seconds,
                         void (*nemesis)(run_env *, void *, uint64_t deadline_ms),
                         void (*heal)(run_env *, void *), void *arg)
{
	env->h = th_history_new();
	assert_non_null(env->h);
	atomic_init(&env->done, false);
	atomic_init(&env->running, NCLIENTS);
	pthread_t t[NCLIENTS];
	client_arg ca[NCLIENTS];
	uint64_t start = th_now_ms();
	for (int i = 0; i < NCLIENTS; i++) {
		ca[i] = (client_arg){ env, i };
		assert_int_equal(pthread_create(&t[i], NULL, client_main, &ca[i]), 0);
	}
	nemesis(env, arg, start + seconds * 1000u);
	heal(env, arg);
	env->faults[F_HEAL]++;
	atomic_store(&env->done, true);
	for (int i = 0; i < NCLIENTS; i++)
		pthread_join(t[i], NULL);

	/* final reads of every key, after the heal (the Jepsen final generator) */
	void *ck = env->ops->clerk_new(env->svc);
	assert_non_null(ck);
	env->ops->set_timeout(ck, FINAL_TIMEOUT_MS); /* the service had time to heal */
	for (int k = 0; k < NKEYS; k++) {
		char key[8];
		key_name(key, sizeof key, k);
		int id = th_history_invoke(env->h, NCLIENTS, TH_OP_GET, key, NULL);
		char *v = NULL;
		int rc = env->ops->get(ck, key, &v);
		if (rc != DKV_OK) {
			th_history_unknown(env->h, id);
			fail_msg("chaos[%s] seed %llu: final Get(%s) failed after the heal: %s", label,
			         (unsigned long long)env->seed, key, dkv_strerror(rc));
		}
		th_history_return(env->h, id, v);
		free(v);
	}
	env->ops->clerk_free(ck);

	size_t ok, unknown, failed;
	th_history_counts(env->h, &ok, &unknown, &failed);
	fprintf(stderr, "chaos[%s] seed %llu: %.1f s, %d clients, %d keys: ops ok %zu, failed %zu, "
	        "unknown %zu; faults:", label, (unsigned long long)env->seed,
	        (double)(th_now_ms() - start) / 1000.0, NCLIENTS, NKEYS, ok, failed, unknown);
	for (int f = 0; f < F_KINDS; f++)
		if (env->faults[f])
			fprintf(stderr, " %s %d", fault_names[f], env->faults[f]);
	fprintf(stderr, "\n");
	char full[128];
	snprintf(full, sizeof full, "%s-%llu", label, (unsigned long long)env->seed);
	th_lin_assert_ok(env->h, 60000, full);
	if (ok < CHAOS_MIN_OK)
		fail_msg("chaos[%s] seed %llu: only %zu ops completed (< %d): a quiet run proves "
		         "nothing", label, (unsigned long long)env->seed, ok, CHAOS_MIN_OK);
	th_history_free(env->h);
	env->h = NULL;
}

/* The seeds of a test: fixed ones, or DKV_TEST_SEED (and the next ones). */
static int chaos_seeds(uint64_t *seeds, int max, const uint64_t *fixed, int nfixed)
{
	const char *e = getenv("DKV_TEST_SEED");
	int runs = (int)env_unsigned("DKV_CHAOS_RUNS", 0);
	if (e != NULL && *e != '\0') {
		if (runs <= 0)
			runs = 1;
		if (runs > max)
			runs = max;
		for (int i = 0; i < runs; i++)
			seeds[i] = th_seed() + (uint64_t)i;
		return runs;
	}
	if (runs <= 0 || runs > nfixed)
		runs = nfixed;
	for (int i = 0; i < runs; i++)
		seeds[i] = fixed[i];
	return runs;
}

static void sleep_until_or(uint64_t until_ms, unsigned ms)
{
	uint64_t now = th_now_ms();
	if (now >= until_ms)
		return;
	if (now + ms > until_ms)
		ms = (unsigned)(until_ms - now);
	th_sleep_ms(ms);
}

/* ------------------------------------------------------------ kvpaxos */

typedef struct {
	int n;
	th_names *nm;
	kvpaxos_server *kva[MAXN];
	bool killed[MAXN];
	bool unreliable[MAXN];
	const char *portp[MAXN];
} kvp_cluster;

static void *kvp_clerk_new(void *svc)
{
	kvp_cluster *c = svc;
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c->portp, c->n);
	if (ck != NULL)
		kvpaxos_clerk_set_timeout(ck, 1000);
	return ck;
}

static void kvp_clerk_free(void *ck)
{
	kvpaxos_clerk_free(ck);
}

static void kvp_set_timeout(void *ck, unsigned ms)
{
	kvpaxos_clerk_set_timeout(ck, ms);
}

static int kvp_get(void *ck, const char *key, char **v)
{
	return kvpaxos_clerk_get(ck, key, v);
}

static int kvp_put(void *ck, const char *key, const char *v)
{
	return kvpaxos_clerk_put(ck, key, v);
}

static int kvp_append(void *ck, const char *key, const char *v)
{
	return kvpaxos_clerk_append(ck, key, v);
}

static const kv_ops kvp_ops = { kvp_clerk_new, kvp_clerk_free, kvp_set_timeout,
	                             kvp_get,       kvp_put,        kvp_append };

static void kvp_all_connected(kvp_cluster *c)
{
	int g[MAXN] = { 0 };
	th_partition(c->nm, g);
}

/* The kvpaxos nemesis: a fault every 0.3–1.5 s; at most one replica killed
 * (kvpaxos keeps no state on disk, so a killed replica never comes back). */
static void kvp_nemesis(run_env *env, void *arg, uint64_t deadline)
{
	kvp_cluster *c = arg;
	rng r = { env->seed ^ 0x6e656d65736973ULL };
	int nkilled = 0;
	while (th_now_ms() < deadline) {
		int g[MAXN];
		int f = runif(&r, 14);
		if (f >= 12) { /* a bridge: two sides that only one replica connects */
			int bridge = runif(&r, c->n);
			for (int i = 0; i < c->n; i++)
				g[i] = runif(&r, 2);
			th_bridge(c->nm, g, bridge);
			env->faults[F_BRIDGE]++;
		} else if (f < 3) { /* random halves: a minority of 2, a majority of 3 */
			int perm[MAXN];
			for (int i = 0; i < c->n; i++)
				perm[i] = i;
			for (int i = c->n - 1; i > 0; i--) {
				int j = runif(&r, i + 1), t = perm[i];
				perm[i] = perm[j];
				perm[j] = t;
			}
			for (int i = 0; i < c->n; i++)
				g[perm[i]] = i < c->n / 2 ? 0 : 1;
			th_partition(c->nm, g);
			env->faults[F_HALVES]++;
		} else if (f < 5) { /* a lone replica cut off */
			int lone = runif(&r, c->n);
			for (int i = 0; i < c->n; i++)
				g[i] = i == lone ? -1 : 0;
			th_partition(c->nm, g);
			env->faults[F_LONE]++;
		} else if (f < 7) { /* the lab's three random groups */
			for (int i = 0; i < c->n; i++)
				g[i] = runif(&r, 3);
			th_partition(c->nm, g);
			env->faults[F_GROUPS3]++;
		} else if (f < 9) {
			kvp_all_connected(c);
			env->faults[F_HEAL]++;
		} else if (f < 11) {
			int i = runif(&r, c->n);
			if (!c->killed[i]) {
				c->unreliable[i] = !c->unreliable[i];
				kvpaxos_server_set_unreliable(c->kva[i], c->unreliable[i]);
				env->faults[c->unreliable[i] ? F_UNRELIABLE : F_RELIABLE]++;
			}
		} else if (nkilled < 1) {
			int i = runif(&r, c->n);
			kvpaxos_server_kill(c->kva[i]);
			c->killed[i] = true;
			nkilled++;
			env->faults[F_KILL]++;
		}
		sleep_until_or(deadline, 300 + (unsigned)runif(&r, 1200));
	}
}

static void kvp_heal(run_env *env, void *arg)
{
	(void)env;
	kvp_cluster *c = arg;
	for (int i = 0; i < c->n; i++)
		if (!c->killed[i] && c->unreliable[i]) {
			kvpaxos_server_set_unreliable(c->kva[i], false);
			c->unreliable[i] = false;
		}
	kvp_all_connected(c);
}

/* Ten clients on four keys stay linearizable while five kvpaxos replicas are
 * partitioned, made unreliable and killed on a seeded schedule. */
static void test_chaos_kvpaxos_stays_linearizable_under_a_fault_schedule(void **state)
{
	(void)state;
	static const uint64_t fixed[] = { 101, 102 };
	uint64_t seeds[64];
	int runs = chaos_seeds(seeds, 64, fixed, 2);
	unsigned secs = env_unsigned("DKV_CHAOS_SECONDS", 8);
	for (int run = 0; run < runs; run++) {
		kvp_cluster c;
		memset(&c, 0, sizeof c);
		c.n = 5;
		char tag[32];
		snprintf(tag, sizeof tag, "chaos%d", run);
		c.nm = th_names_new("kvc", tag, c.n);
		assert_non_null(c.nm);
		for (int i = 0; i < c.n; i++)
			c.portp[i] = c.nm->ports[i];
		for (int i = 0; i < c.n; i++) {
			c.kva[i] = kvpaxos_server_start(th_peers(c.nm, i), c.n, i);
			assert_non_null(c.kva[i]);
		}
		kvp_all_connected(&c);
		run_env env;
		memset(&env, 0, sizeof env);
		env.ops = &kvp_ops;
		env.svc = &c;
		env.seed = seeds[run];
		run_workload(&env, "kvpaxos", secs, kvp_nemesis, kvp_heal, &c);
		for (int i = 0; i < c.n; i++)
			kvpaxos_server_free(c.kva[i]);
		th_cleanpp(c.nm);
		th_names_free(c.nm);
	}
}

/* ------------------------------------------------------------ pbservice */

#define PB_NSERVERS 3
#define PB_DEADTIME (VIEWSERVICE_PING_INTERVAL_MS * VIEWSERVICE_DEAD_PINGS)

typedef struct {
	char vsh[DKV_NAME_MAX];
	viewservice_server *vs;
	char ports[PB_NSERVERS][DKV_NAME_MAX];
	pbservice_server *sa[PB_NSERVERS];
	bool unreliable[PB_NSERVERS];
} pb_cluster;

static void *pb_clerk_new(void *svc)
{
	pb_cluster *c = svc;
	pbservice_clerk *ck = pbservice_clerk_new(c->vsh, "");
	if (ck != NULL)
		pbservice_clerk_set_timeout(ck, 2000);
	return ck;
}

static void pb_clerk_free(void *ck)
{
	pbservice_clerk_free(ck);
}

static void pb_set_timeout(void *ck, unsigned ms)
{
	pbservice_clerk_set_timeout(ck, ms);
}

static int pb_get(void *ck, const char *key, char **v)
{
	return pbservice_clerk_get(ck, key, v);
}

static int pb_put(void *ck, const char *key, const char *v)
{
	return pbservice_clerk_put(ck, key, v);
}

static int pb_append(void *ck, const char *key, const char *v)
{
	return pbservice_clerk_append(ck, key, v);
}

static const kv_ops pb_ops = { pb_clerk_new, pb_clerk_free, pb_set_timeout,
	                            pb_get,       pb_put,        pb_append };

/*
 * The pbservice nemesis: one server at a time is killed and, 2 dead-times
 * later, restarted empty at the same name (the view service moves it to
 * backup and the primary copies its state over); unreliable mode is toggled
 * on random servers. Kills are 2 dead-times apart so that a new backup is
 * always initialized before the next crash — primary/backup cannot survive
 * losing both copies at once, which is not a bug.
 */
static void pb_nemesis(run_env *env, void *arg, uint64_t deadline)
{
	pb_cluster *c = arg;
	rng r = { env->seed ^ 0x70626e656d65ULL };
	while (th_now_ms() < deadline) {
		int f = runif(&r, 3);
		int i = runif(&r, PB_NSERVERS);
		if (f == 0) {
			pbservice_server_free(c->sa[i]);
			c->sa[i] = NULL;
			env->faults[F_KILL]++;
			sleep_until_or(deadline + 10u * PB_DEADTIME, 2 * PB_DEADTIME);
			c->sa[i] = pbservice_server_start(c->vsh, c->ports[i]);
			assert_non_null(c->sa[i]);
			c->unreliable[i] = false;
			env->faults[F_RESTART]++;
			sleep_until_or(deadline, 2 * PB_DEADTIME);
		} else {
			c->unreliable[i] = !c->unreliable[i];
			pbservice_server_set_unreliable(c->sa[i], c->unreliable[i]);
			env->faults[c->unreliable[i] ? F_UNRELIABLE : F_RELIABLE]++;
			sleep_until_or(deadline, 300 + (unsigned)runif(&r, 1200));
		}
	}
}

static void pb_heal(run_env *env, void *arg)
{
	(void)env;
	pb_cluster *c = arg;
	for (int i = 0; i < PB_NSERVERS; i++)
		if (c->unreliable[i]) {
			pbservice_server_set_unreliable(c->sa[i], false);
			c->unreliable[i] = false;
		}
}

/* Ten clients on four keys stay linearizable while pbservice servers crash and
 * restart one at a time and turn unreliable on a seeded schedule. */
static void test_chaos_pbservice_stays_linearizable_under_a_fault_schedule(void **state)
{
	(void)state;
	static const uint64_t fixed[] = { 201, 202 };
	uint64_t seeds[64];
	int runs = chaos_seeds(seeds, 64, fixed, 2);
	unsigned secs = env_unsigned("DKV_CHAOS_SECONDS", 8);
	for (int run = 0; run < runs; run++) {
		pb_cluster c;
		memset(&c, 0, sizeof c);
		char tag[32];
		snprintf(tag, sizeof tag, "chaosv%d", run);
		th_port(c.vsh, "pbc", tag, 0);
		c.vs = viewservice_server_start(c.vsh);
		assert_non_null(c.vs);
		snprintf(tag, sizeof tag, "chaos%d", run);
		for (int i = 0; i < PB_NSERVERS; i++) {
			th_port(c.ports[i], "pbc", tag, i + 1);
			c.sa[i] = pbservice_server_start(c.vsh, c.ports[i]);
			assert_non_null(c.sa[i]);
		}
		/* a primary and a backup before the clients start */
		viewservice_clerk *vck = viewservice_clerk_new("", c.vsh);
		assert_non_null(vck);
		viewservice_view v;
		WAIT_UNTIL(viewservice_clerk_get(vck, &v) == DKV_OK && v.primary[0] != '\0' &&
		               v.backup[0] != '\0',
		           10 * PB_DEADTIME);
		viewservice_clerk_free(vck);
		run_env env;
		memset(&env, 0, sizeof env);
		env.ops = &pb_ops;
		env.svc = &c;
		env.seed = seeds[run];
		run_workload(&env, "pbservice", secs, pb_nemesis, pb_heal, &c);
		for (int i = 0; i < PB_NSERVERS; i++)
			pbservice_server_free(c.sa[i]);
		viewservice_server_free(c.vs);
	}
}

/* ------------------------------------------------------------ shardkv */

enum { SK_NSM = 3, SK_NG = 3, SK_NR = 3 };

typedef struct {
	char mnames[SK_NSM][DKV_NAME_MAX];
	const char *mptrs[SK_NSM];
	shardmaster_server *sm[SK_NSM];
	int64_t gids[SK_NG];
	th_names *nm[SK_NG];
	const char *gptrs[SK_NG][SK_NR];
	shardkv_server *s[SK_NG][SK_NR];
	bool unreliable[SK_NG][SK_NR];
	bool joined[SK_NG];
	shardmaster_clerk *mck;
} sk_cluster;

static void *sk_clerk_new(void *svc)
{
	sk_cluster *c = svc;
	shardkv_clerk *ck = shardkv_clerk_new(c->mptrs, SK_NSM);
	if (ck != NULL)
		shardkv_clerk_set_timeout(ck, 2000);
	return ck;
}

static void sk_clerk_free(void *ck)
{
	shardkv_clerk_free(ck);
}

static void sk_set_timeout(void *ck, unsigned ms)
{
	shardkv_clerk_set_timeout(ck, ms);
}

static int sk_get(void *ck, const char *key, char **v)
{
	return shardkv_clerk_get(ck, key, v);
}

static int sk_put(void *ck, const char *key, const char *v)
{
	return shardkv_clerk_put(ck, key, v);
}

static int sk_append(void *ck, const char *key, const char *v)
{
	return shardkv_clerk_append(ck, key, v);
}

static const kv_ops sk_ops = { sk_clerk_new, sk_clerk_free, sk_set_timeout,
	                           sk_get,       sk_put,        sk_append };

static void sk_group_connected(sk_cluster *c, int g)
{
	int all[SK_NR] = { 0 };
	th_partition(c->nm[g], all);
}

/*
 * The shardkv nemesis: shard moves between joined groups, the third group
 * joining and leaving, one replica of a group cut off (and healed), and
 * unreliable mode on random replicas. Shard-master calls that fail (they have
 * a deadline) are simply not counted.
 */
static void sk_nemesis(run_env *env, void *arg, uint64_t deadline)
{
	sk_cluster *c = arg;
	rng r = { env->seed ^ 0x73686172646bULL };
	while (th_now_ms() < deadline) {
		int f = runif(&r, 10), g = runif(&r, SK_NG);
		if (f < 3) {
			int to;
			do
				to = runif(&r, SK_NG);
			while (!c->joined[to]);
			if (shardmaster_clerk_move(c->mck, runif(&r, SHARDMASTER_NSHARDS), c->gids[to]) ==
			    DKV_OK)
				env->faults[F_MOVE]++;
		} else if (f < 4) {
			if (!c->joined[2]) {
				if (shardmaster_clerk_join(c->mck, c->gids[2], c->gptrs[2], SK_NR) == DKV_OK) {
					c->joined[2] = true;
					env->faults[F_JOIN]++;
				}
			} else if (shardmaster_clerk_leave(c->mck, c->gids[2]) == DKV_OK) {
				c->joined[2] = false;
				env->faults[F_LEAVE]++;
			}
		} else if (f < 6) {
			int grp[SK_NR] = { 0 };
			grp[runif(&r, SK_NR)] = -1;
			th_partition(c->nm[g], grp);
			env->faults[F_LONE]++;
		} else if (f < 8) {
			sk_group_connected(c, g);
			env->faults[F_HEAL]++;
		} else {
			int j = runif(&r, SK_NR);
			c->unreliable[g][j] = !c->unreliable[g][j];
			shardkv_server_set_unreliable(c->s[g][j], c->unreliable[g][j]);
			env->faults[c->unreliable[g][j] ? F_UNRELIABLE : F_RELIABLE]++;
		}
		sleep_until_or(deadline, 300 + (unsigned)runif(&r, 1200));
	}
}

static void sk_heal(run_env *env, void *arg)
{
	(void)env;
	sk_cluster *c = arg;
	for (int g = 0; g < SK_NG; g++) {
		for (int j = 0; j < SK_NR; j++)
			if (c->unreliable[g][j]) {
				shardkv_server_set_unreliable(c->s[g][j], false);
				c->unreliable[g][j] = false;
			}
		sk_group_connected(c, g);
	}
}

/* Ten clients on four keys (four shards) stay linearizable while shards move
 * between three-replica groups, a group joins and leaves, replicas are cut off
 * and turn unreliable on a seeded schedule. */
static void test_chaos_shardkv_stays_linearizable_under_a_fault_schedule(void **state)
{
	(void)state;
	static const uint64_t fixed[] = { 301 };
	uint64_t seeds[64];
	int runs = chaos_seeds(seeds, 64, fixed, 1);
	unsigned secs = env_unsigned("DKV_CHAOS_SECONDS", 8);
	for (int run = 0; run < runs; run++) {
		sk_cluster *c = calloc(1, sizeof *c);
		assert_non_null(c);
		char tag[32];
		snprintf(tag, sizeof tag, "chaosm%d", run);
		for (int i = 0; i < SK_NSM; i++) {
			th_port(c->mnames[i], "skc", tag, i);
			c->mptrs[i] = c->mnames[i];
		}
		for (int i = 0; i < SK_NSM; i++) {
			c->sm[i] = shardmaster_server_start(c->mptrs, SK_NSM, i);
			assert_non_null(c->sm[i]);
		}
		for (int g = 0; g < SK_NG; g++) {
			c->gids[g] = 100 + g;
			snprintf(tag, sizeof tag, "chaos%dg%d", run, g);
			c->nm[g] = th_names_new("skc", tag, SK_NR);
			assert_non_null(c->nm[g]);
			for (int j = 0; j < SK_NR; j++)
				c->gptrs[g][j] = c->nm[g]->ports[j];
			for (int j = 0; j < SK_NR; j++) {
				c->s[g][j] = shardkv_server_start(c->gids[g], c->mptrs, SK_NSM,
				                                  th_peers(c->nm[g], j), SK_NR, j);
				assert_non_null(c->s[g][j]);
			}
			sk_group_connected(c, g);
		}
		c->mck = shardmaster_clerk_new(c->mptrs, SK_NSM);
		assert_non_null(c->mck);
		shardmaster_clerk_set_timeout(c->mck, 5000);
		for (int g = 0; g < 2; g++) {
			assert_int_equal(shardmaster_clerk_join(c->mck, c->gids[g], c->gptrs[g], SK_NR),
			                 DKV_OK);
			c->joined[g] = true;
		}
		run_env env;
		memset(&env, 0, sizeof env);
		env.ops = &sk_ops;
		env.svc = c;
		env.seed = seeds[run];
		run_workload(&env, "shardkv", secs, sk_nemesis, sk_heal, c);
		shardmaster_clerk_free(c->mck);
		for (int g = 0; g < SK_NG; g++)
			for (int j = 0; j < SK_NR; j++)
				shardkv_server_kill(c->s[g][j]);
		for (int g = 0; g < SK_NG; g++) {
			for (int j = 0; j < SK_NR; j++)
				shardkv_server_free(c->s[g][j]);
			th_cleanpp(c->nm[g]);
			th_names_free(c->nm[g]);
		}
		for (int i = 0; i < SK_NSM; i++)
			shardmaster_server_free(c->sm[i]);
		free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chaos_kvpaxos_stays_linearizable_under_a_fault_schedule),
		cmocka_unit_test(test_chaos_pbservice_stays_linearizable_under_a_fault_schedule),
		cmocka_unit_test(test_chaos_shardkv_stays_linearizable_under_a_fault_schedule),
	};
	return th_run_suite("chaos", tests);
}
