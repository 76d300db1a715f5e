/*
 * tests/test_paxos.c — the Paxos suite: every case of the lab's paxos tests
 * (MIT 6.824 Lab 3A, notes/labtests.md §3.3) with the same setup, faults,
 * timings and assertions, then our own checks.
 *
 * Invariants are checked at every poll, not only at the end: ndecided() fails
 * the test as soon as two peers decided different values for a seq, or a peer
 * decided a value that nobody proposed for that seq (every paxos_start goes
 * through start(), which records a hash of the proposed value). Background
 * threads (ManyForget, Lots) never call cmocka's fail: they record the first
 * violation and the main thread fails with it after joining them.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/paxos.h"
#include "lib/harness.h"
#include "lib/simdisk.h"
#include "../paxos/paxos_internal.h"

#define MAXP 8

/* ------------------------------------------------------------ the cluster */

typedef struct {
	uint64_t hash;
	size_t len;
} proposal;

typedef struct {
	proposal *v;
	size_t n, cap;
} proposals;

typedef struct {
	int n;
	paxos *px[MAXP];
	char ports[MAXP][DKV_NAME_MAX];
	const char *peers[MAXP];
	th_names *nm; /* partition tests: per-pair names */
	pthread_mutex_t mu; /* guards reg, nreg, violation */
	proposals *reg;     /* reg[seq]: values proposed for seq */
	int nreg;
	char violation[512]; /* first invariant violation seen by a thread */
} cluster;

static uint64_t fnv1a(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* cl_new: n peer slots; names per the lab (one name per peer, or per-pair names). */
static cluster *cl_new(const char *tag, int n, bool per_pair)
{
	cluster *cl = calloc(1, sizeof *cl);
	assert_non_null(cl);
	cl->n = n;
	pthread_mutex_init(&cl->mu, NULL);
	if (per_pair) {
		cl->nm = th_names_new("px", tag, n);
		assert_non_null(cl->nm);
	} else {
		for (int i = 0; i < n; i++) {
			th_port(cl->ports[i], "px", tag, i);
			cl->peers[i] = cl->ports[i];
		}
	}
	return cl;
}

static void cl_make(cluster *cl, int i)
{
	const char *const *peers = cl->nm ? th_peers(cl->nm, i) : cl->peers;
	cl->px[i] = paxos_make(peers, cl->n, i, NULL);
	assert_non_null(cl->px[i]);
}

static cluster *cl_start(const char *tag, int n, bool per_pair)
{
	cluster *cl = cl_new(tag, n, per_pair);
	for (int i = 0; i < n; i++) cl_make(cl, i);
	return cl;
}

static void cl_free(cluster *cl)
{
	for (int i = 0; i < cl->n; i++) paxos_kill(cl->px[i]);
	for (int i = 0; i < cl->n; i++) paxos_free(cl->px[i]);
	if (cl->nm) {
		th_cleanpp(cl->nm);
		th_names_free(cl->nm);
	}
	for (int i = 0; i < cl->nreg; i++) free(cl->reg[i].v);
	free(cl->reg);
	pthread_mutex_destroy(&cl->mu);
	free(cl);
}

/* start: paxos_start on peer i, recording the proposal for the checks. */
static void start_bytes(cluster *cl, int i, int seq, const void *v, size_t len)
{
	pthread_mutex_lock(&cl->mu);
	if (seq >= cl->nreg) {
		int nn = seq + 64;
		cl->reg = realloc(cl->reg, (size_t)nn * sizeof *cl->reg);
		memset(&cl->reg[cl->nreg], 0, (size_t)(nn - cl->nreg) * sizeof *cl->reg);
		cl->nreg = nn;
	}
	proposals *ps = &cl->reg[seq];
	if (ps->n == ps->cap) {
		ps->cap = ps->cap ? ps->cap * 2 : 8;
		ps->v = realloc(ps->v, ps->cap * sizeof *ps->v);
	}
	ps->v[ps->n].hash = fnv1a(v, len);
	ps->v[ps->n].len = len;
	ps->n++;
	pthread_mutex_unlock(&cl->mu);
	paxos_start(cl->px[i], seq, v, len);
}

static void start(cluster *cl, int i, int seq, const char *v)
{
	start_bytes(cl, i, seq, v, strlen(v));
}

static void start_int(cluster *cl, int i, int seq, long v)
{
	char buf[32];
	snprintf(buf, sizeof buf, "%ld", v);
	start(cl, i, seq, buf);
}

static bool was_proposed(cluster *cl, int seq, const void *v, size_t len)
{
	bool found = false;
	uint64_t h = fnv1a(v, len);
	pthread_mutex_lock(&cl->mu);
	if (seq < cl->nreg)
		for (size_t k = 0; k < cl->reg[seq].n && !found; k++)
			found = cl->reg[seq].v[k].hash == h && cl->reg[seq].v[k].len == len;
	pthread_mutex_unlock(&cl->mu);
	return found;
}

/*
 * ndecided_check: how many peers have decided seq; -1 (with err filled) if two
 * decided values differ or a decided value was never proposed.
 */
static int ndecided_check(cluster *cl, int seq, char *err, size_t errlen)
{
	int count = 0;
	void *first = NULL;
	size_t flen = 0;
	int rc = 0;
	for (int i = 0; i < cl->n && rc == 0; i++) {
		if (!cl->px[i]) continue;
		void *v = NULL;
		size_t len = 0;
		if (paxos_status(cl->px[i], seq, &v, &len) != PAXOS_DECIDED) continue;
		if (!v) {
			snprintf(err, errlen, "seq %d: peer %d decided but no value", seq, i);
			rc = -1;
		} else if (first && (len != flen || memcmp(v, first, len) != 0)) {
			snprintf(err, errlen, "seq %d: decided values differ: peer %d has %.40s, another %.40s",
			         seq, i, (char *)v, (char *)first);
			rc = -1;
		} else if (!first && !was_proposed(cl, seq, v, len)) {
			snprintf(err, errlen, "seq %d: peer %d decided %.40s, which nobody proposed", seq, i,
			         (char *)v);
			rc = -1;
		}
		count++;
		if (!first) {
			first = v;
			flen = len;
		} else {
			free(v);
		}
	}
	free(first);
	return rc ? -1 : count;
}

/* Record a violation seen by a background thread (the first one wins). */
static void note_violation(cluster *cl, const char *msg)
{
	pthread_mutex_lock(&cl->mu);
	if (!cl->violation[0]) snprintf(cl->violation, sizeof cl->violation, "%s", msg);
	pthread_mutex_unlock(&cl->mu);
}

static void assert_no_violation(cluster *cl)
{
	if (cl->violation[0]) fail_msg("%s", cl->violation);
}

/* ndecided: the lab's helper, failing at once on disagreement. */
static int ndecided(cluster *cl, int seq)
{
	char err[512];
	int nd = ndecided_check(cl, seq, err, sizeof err);
	if (nd < 0) fail_msg("%s", err);
	return nd;
}

/* waitn: poll up to 30 times (10 ms doubling below 1 s), then want >= wanted. */
static void waitn(cluster *cl, int seq, int wanted)
{
	unsigned to = 10;
	for (int iters = 0; iters < 30; iters++) {
		if (ndecided(cl, seq) >= wanted) break;
		th_sleep_ms(to);
		if (to < 1000) to *= 2;
	}
	int nd = ndecided(cl, seq);
	if (nd < wanted) fail_msg("too few decided; seq=%d ndecided=%d wanted=%d", seq, nd, wanted);
}

static void waitmajority(cluster *cl, int seq)
{
	waitn(cl, seq, cl->n / 2 + 1);
}

/* checkmax: after 3 s, at most `max` peers may have decided seq. */
static void checkmax(cluster *cl, int seq, int max)
{
	th_sleep_ms(3000);
	int nd = ndecided(cl, seq);
	if (nd > max) fail_msg("too many decided; seq=%d ndecided=%d max=%d", seq, nd, max);
}

static void all_unreliable(cluster *cl, bool on)
{
	for (int i = 0; i < cl->n; i++) paxos_set_unreliable(cl->px[i], on);
}

#define G(...) ((const int[]){__VA_ARGS__, -1})

/* ------------------------------------------------------------ lab tests */

/* TestBasic: one proposer, many proposers (same and different values), out-of-order instances. */
static void test_paxos_basic_proposers_agree_on_one_value(void **state)
{
	(void)state;
	cluster *cl = cl_start("basic", 3, false);

	printf("Test: Single proposer ...\n");
	start(cl, 0, 0, "hello");
	waitn(cl, 0, 3);

	printf("Test: Many proposers, same value ...\n");
	for (int i = 0; i < 3; i++) start_int(cl, i, 1, 77);
	waitn(cl, 1, 3);

	printf("Test: Many proposers, different values ...\n");
	start_int(cl, 0, 2, 100);
	start_int(cl, 1, 2, 101);
	start_int(cl, 2, 2, 102);
	waitn(cl, 2, 3);

	printf("Test: Out-of-order instances ...\n");
	start_int(cl, 0, 7, 700);
	start_int(cl, 0, 6, 600);
	start_int(cl, 1, 5, 500);
	waitn(cl, 7, 3);
	start_int(cl, 0, 4, 400);
	start_int(cl, 1, 3, 300);
	waitn(cl, 6, 3);
	waitn(cl, 5, 3);
	waitn(cl, 4, 3);
	waitn(cl, 3, 3);
	assert_int_equal(paxos_max(cl->px[0]), 7);
	cl_free(cl);
}

/* TestDeaf: a majority decides without deaf peers; a deaf proposer learns the decision itself. */
static void test_paxos_deaf_proposer_learns_decision_itself(void **state)
{
	(void)state;
	cluster *cl = cl_start("deaf", 5, false);

	printf("Test: Deaf proposer ...\n");
	start(cl, 0, 0, "hello");
	waitn(cl, 0, 5);

	th_unlink(cl->ports[0]);
	th_unlink(cl->ports[4]);

	start(cl, 1, 1, "goodbye");
	waitmajority(cl, 1);
	th_sleep_ms(1000);
	int nd = ndecided(cl, 1);
	if (nd != 3) fail_msg("a deaf peer heard about a decision (ndecided=%d)", nd);

	start(cl, 0, 1, "xxx");
	waitn(cl, 1, 4);
	th_sleep_ms(1000);
	nd = ndecided(cl, 1);
	if (nd != 4) fail_msg("a deaf peer heard about a decision (ndecided=%d)", nd);

	start(cl, 4, 1, "yyy");
	waitn(cl, 1, 5);
	cl_free(cl);
}

/* TestForget: Min() starts at 0 and advances to 1 once every peer has called Done. */
static void test_paxos_min_advances_after_every_peer_calls_done(void **state)
{
	(void)state;
	const int n = 6;
	cluster *cl = cl_start("gc", n, false);

	printf("Test: Forgetting ...\n");
	for (int i = 0; i < n; i++) {
		int m = paxos_min(cl->px[i]);
		if (m > 0) fail_msg("wrong initial Min() %d", m);
	}
	start(cl, 0, 0, "00");
	start(cl, 1, 1, "11");
	start(cl, 2, 2, "22");
	start(cl, 0, 6, "66");
	start(cl, 1, 7, "77");

	waitn(cl, 0, n);
	for (int i = 0; i < n; i++) {
		int m = paxos_min(cl->px[i]);
		if (m != 0) fail_msg("wrong Min() %d; expected 0", m);
	}
	waitn(cl, 1, n);
	for (int i = 0; i < n; i++) {
		int m = paxos_min(cl->px[i]);
		if (m != 0) fail_msg("wrong Min() %d; expected 0", m);
	}

	for (int i = 0; i < n; i++) paxos_done(cl->px[i], 0);
	for (int i = 1; i < n; i++) paxos_done(cl->px[i], 1);
	for (int i = 0; i < n; i++) start(cl, i, 8 + i, "xx");

	bool allok = false;
	for (int iters = 0; iters < 12; iters++) {
		allok = true;
		for (int i = 0; i < n; i++)
			if (paxos_min(cl->px[i]) != 1) allok = false;
		if (allok) break;
		th_sleep_ms(1000);
	}
	if (!allok) fail_msg("Min() did not advance after Done()");
	cl_free(cl);
}

typedef struct {
	cluster *cl;
	int maxseq;
	volatile int stop;
} forget_ctx;

static void *manyforget_starter(void *arg)
{
	forget_ctx *c = arg;
	int na[64];
	for (int i = 0; i < c->maxseq; i++) na[i] = i;
	for (int i = c->maxseq - 1; i > 0; i--) { /* random permutation */
		int j = (int)(th_rand() % (uint64_t)(i + 1));
		int t = na[i];
		na[i] = na[j];
		na[j] = t;
	}
	for (int i = 0; i < c->maxseq; i++) {
		int seq = na[i];
		int p = (int)(th_rand() % (uint64_t)c->cl->n);
		start_int(c->cl, p, seq, (long)(th_rand() % 1000000000));
	}
	return NULL;
}

static void *manyforget_doner(void *arg)
{
	forget_ctx *c = arg;
	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		int seq = (int)(th_rand() % (uint64_t)c->maxseq);
		int i = (int)(th_rand() % (uint64_t)c->cl->n);
		if (seq >= paxos_min(c->cl->px[i]) &&
		    paxos_status(c->cl->px[i], seq, NULL, NULL) == PAXOS_DECIDED)
			paxos_done(c->cl->px[i], seq);
	}
	return NULL;
}

/* TestManyForget: random Starts and Dones on unreliable peers never crash. */
static void test_paxos_lots_of_forgetting_on_unreliable_network_is_safe(void **state)
{
	(void)state;
	cluster *cl = cl_start("manygc", 3, false);
	all_unreliable(cl, true);

	printf("Test: Lots of forgetting ...\n");
	forget_ctx c = {.cl = cl, .maxseq = 20, .stop = 0};
	pthread_t a, b;
	assert_int_equal(pthread_create(&a, NULL, manyforget_starter, &c), 0);
	assert_int_equal(pthread_create(&b, NULL, manyforget_doner, &c), 0);
	th_sleep_ms(5000);
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	all_unreliable(cl, false);
	th_sleep_ms(2000);

	for (int seq = 0; seq < c.maxseq; seq++) {
		for (int i = 0; i < cl->n; i++) {
			if (seq >= paxos_min(cl->px[i])) paxos_status(cl->px[i], seq, NULL, NULL);
		}
		ndecided(cl, seq); /* and whatever is decided agrees */
	}
	cl_free(cl);
}

/* TestForgetMem: forgotten instances release their memory and are not re-created. */
static void test_paxos_forgotten_instances_release_memory(void **state)
{
	(void)state;
	cluster *cl = cl_start("gcmem", 3, false);

	printf("Test: Paxos frees forgotten instance memory ...\n");
	start(cl, 0, 0, "x");
	waitn(cl, 0, 3);

	malloc_trim(0);
	size_t m0 = th_live_heap();
	for (int i = 1; i <= 10; i++) {
		size_t sz = 1000000;
		char *big = malloc(sz + 1);
		assert_non_null(big);
		th_randstr(big, sz);
		start_bytes(cl, 0, i, big, sz);
		free(big);
		waitn(cl, i, 3);
	}
	malloc_trim(0);
	size_t m1 = th_live_heap();

	for (int i = 0; i < 3; i++) paxos_done(cl->px[i], 10);
	for (int i = 0; i < 3; i++) start(cl, i, 11 + i, "z");
	th_sleep_ms(3000);
	for (int i = 0; i < 3; i++) {
		int m = paxos_min(cl->px[i]);
		if (m != 11) fail_msg("expected Min() %d, got %d", 11, m);
	}

	malloc_trim(0);
	size_t m2 = th_live_heap();
	printf("  live heap: m0 %zu, m1 %zu, m2 %zu bytes\n", m0, m1, m2);
	if (m2 > m1 / 2) fail_msg("memory use did not shrink enough (m1 %zu, m2 %zu)", m1, m2);

	char fresh[3][3][21];
	for (int i = 0; i < 3; i++) {
		for (int seq = 0; seq <= 2; seq++) {
			if (paxos_status(cl->px[i], seq, NULL, NULL) != PAXOS_FORGOTTEN)
				fail_msg("seq %d < Min() is not forgotten", seq);
			th_randstr(fresh[i][seq], 20);
			start(cl, i, seq, fresh[i][seq]);
		}
	}
	th_sleep_ms(1000);
	for (int i = 0; i < 3; i++) {
		for (int seq = 0; seq <= 2; seq++) {
			void *v = NULL;
			if (paxos_status(cl->px[i], seq, &v, NULL) != PAXOS_FORGOTTEN)
				fail_msg("seq %d < Min() is not forgotten", seq);
			if (v && strcmp(v, fresh[i][seq]) == 0) fail_msg("forgotten seq %d was re-created", seq);
			free(v);
		}
	}
	cl_free(cl);
}

/* TestDoneMax: Max() still reports the highest seq after every peer called Done on it. */
static void test_paxos_max_survives_done(void **state)
{
	(void)state;
	cluster *cl = cl_start("donemax", 3, false);

	printf("Test: Paxos Max() after Done()s ...\n");
	start(cl, 0, 0, "x");
	waitn(cl, 0, 3);
	for (int i = 1; i <= 10; i++) {
		start(cl, 0, i, "y");
		waitn(cl, i, 3);
	}
	for (int i = 0; i < 3; i++) paxos_done(cl->px[i], 10);
	for (int i = 0; i < 3; i++) start(cl, i, 10, "z");
	th_sleep_ms(2000);
	for (int i = 0; i < 3; i++) {
		int m = paxos_max(cl->px[i]);
		if (m != 10) fail_msg("Max() did not return correct result %d after calling Done(); returned %d", 10, m);
	}
	cl_free(cl);
}

static unsigned long total_rpcs(cluster *cl)
{
	unsigned long t = 0;
	for (int i = 0; i < cl->n; i++) t += paxos_rpc_count(cl->px[i]);
	return t;
}

/* TestRPCCount: serial and concurrent agreements stay within the lab's RPC budgets. */
static void test_paxos_rpc_counts_stay_within_lab_budget(void **state)
{
	(void)state;
	const int n = 3;
	cluster *cl = cl_start("count", n, false);

	printf("Test: Paxos RPC counts aren't too high ...\n");
	const int ninst1 = 5;
	int seq = 0;
	for (int i = 0; i < ninst1; i++) {
		start(cl, 0, seq, "x");
		waitn(cl, seq, n);
		seq++;
	}
	th_sleep_ms(2000);
	unsigned long total1 = total_rpcs(cl);
	unsigned long expected1 = (unsigned long)(ninst1 * n * n);
	printf("  serial: %lu RPCs for %d agreements (budget %lu)\n", total1, ninst1, expected1);
	if (total1 > expected1) fail_msg("too many RPCs for serial Start()s; %d instances, got %lu, expected %lu",
	                                 ninst1, total1, expected1);

	const int ninst2 = 5;
	for (int i = 0; i < ninst2; i++) {
		for (int j = 0; j < n; j++) start_int(cl, j, seq, j + (i * 10));
		waitn(cl, seq, n);
		seq++;
	}
	th_sleep_ms(2000);
	unsigned long total2 = total_rpcs(cl) - total1;
	unsigned long expected2 = (unsigned long)(ninst2 * n * 15);
	printf("  concurrent: %lu RPCs for %d agreements (budget %lu)\n", total2, ninst2, expected2);
	if (total2 > expected2) fail_msg("too many RPCs for concurrent Start()s; %d instances, got %lu, expected %lu",
	                                 ninst2, total2, expected2);
	cl_free(cl);
}

/* The body of TestMany and TestManyUnreliable: 50 instances, `window` in flight. */
static void many_instances(cluster *cl, int window)
{
	const int ninst = 50;
	for (int i = 0; i < cl->n; i++) start_int(cl, i, 0, 0);
	uint64_t deadline = th_now_ms() + 120000; /* the lab has none: it would hang */
	for (int seq = 1; seq < ninst; seq++) {
		while (seq >= window && ndecided(cl, seq - window) < cl->n) {
			if (th_now_ms() > deadline) fail_msg("seq %d never decided everywhere", seq - window);
			th_sleep_ms(20);
		}
		for (int i = 0; i < cl->n; i++) start_int(cl, i, seq, seq * 10 + i);
	}
	for (;;) {
		bool done = true;
		for (int seq = 1; seq < ninst; seq++)
			if (ndecided(cl, seq) < cl->n) done = false;
		if (done) break;
		if (th_now_ms() > deadline) fail_msg("not every instance decided everywhere");
		th_sleep_ms(100);
	}
}

/* TestMany: many instances, five in flight at a time, all decide everywhere. */
static void test_paxos_many_instances_all_decide(void **state)
{
	(void)state;
	cluster *cl = cl_start("many", 3, false);
	printf("Test: Many instances ...\n");
	many_instances(cl, 5);
	cl_free(cl);
}

/* TestOld: a late peer's proposal cannot override the majority's decision. */
static void test_paxos_minority_proposal_is_ignored(void **state)
{
	(void)state;
	cluster *cl = cl_new("old", 5, false);
	printf("Test: Minority proposal ignored ...\n");
	cl_make(cl, 1);
	cl_make(cl, 2);
	cl_make(cl, 3);
	start_int(cl, 1, 1, 111);
	waitmajority(cl, 1);

	cl_make(cl, 0);
	start_int(cl, 0, 1, 222);
	waitn(cl, 1, 4);
	void *v = NULL;
	assert_int_equal(paxos_status(cl->px[0], 1, &v, NULL), PAXOS_DECIDED);
	assert_string_equal(v, "111");
	free(v);
	cl_free(cl);
}

/* TestManyUnreliable: many instances on unreliable peers, three in flight, all decide. */
static void test_paxos_many_instances_decide_on_unreliable_network(void **state)
{
	(void)state;
	cluster *cl = cl_start("manyun", 3, false);
	printf("Test: Many instances, unreliable RPC ...\n");
	all_unreliable(cl, true);
	many_instances(cl, 3);
	cl_free(cl);
}

/* TestPartition: no decision without a majority; the majority decides; heals converge. */
static void test_paxos_partitions_decide_only_with_a_majority(void **state)
{
	(void)state;
	const int n = 5;
	cluster *cl = cl_start("partition", n, true);
	int seq = 0;

	printf("Test: No decision if partitioned ...\n");
	th_part3(cl->nm, G(0, 2), G(1, 3), G(4));
	start_int(cl, 1, seq, 111);
	checkmax(cl, seq, 0);

	printf("Test: Decision in majority partition ...\n");
	th_part3(cl->nm, G(0), G(1, 2, 3), G(4));
	th_sleep_ms(2000);
	waitmajority(cl, seq);

	printf("Test: All agree after full heal ...\n");
	start_int(cl, 0, seq, 1000); /* poke them */
	start_int(cl, 4, seq, 1004);
	th_part3(cl->nm, G(0, 1, 2, 3, 4), NULL, NULL);
	waitn(cl, seq, n);

	printf("Test: One peer switches partitions ...\n");
	for (int iters = 0; iters < 20; iters++) {
		seq++;
		th_part3(cl->nm, G(0, 1, 2), G(3, 4), NULL);
		start_int(cl, 0, seq, seq * 10);
		start_int(cl, 3, seq, (seq * 10) + 1);
		waitmajority(cl, seq);
		if (ndecided(cl, seq) > 3) fail_msg("too many decided");
		th_part3(cl->nm, G(0, 1), G(2, 3, 4), NULL);
		waitn(cl, seq, n);
	}

	printf("Test: One peer switches partitions, unreliable ...\n");
	for (int iters = 0; iters < 20; iters++) {
		seq++;
		all_unreliable(cl, true);
		th_part3(cl->nm, G(0, 1, 2), G(3, 4), NULL);
		for (int i = 0; i < n; i++) start_int(cl, i, seq, (seq * 10) + i);
		waitn(cl, seq, 3);
		if (ndecided(cl, seq) > 3) fail_msg("too many decided");
		th_part3(cl->nm, G(0, 1), G(2, 3, 4), NULL);
		all_unreliable(cl, false);
		waitn(cl, seq, 5);
	}
	cl_free(cl);
}

typedef struct {
	cluster *cl;
	volatile int done;
	int seq; /* atomic */
} lots_ctx;

static void *lots_partitioner(void *arg)
{
	lots_ctx *c = arg;
	while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
		int group_of[MAXP];
		for (int i = 0; i < c->cl->n; i++) group_of[i] = (int)(th_rand() % 3);
		th_partition(c->cl->nm, group_of);
		th_sleep_ms((unsigned)(th_rand() % 200));
	}
	return NULL;
}

static void *lots_starter(void *arg)
{
	lots_ctx *c = arg;
	char err[512];
	while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
		int sq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		int nd = 0;
		for (int i = 0; i < sq; i++) {
			int k = ndecided_check(c->cl, i, err, sizeof err);
			if (k < 0) note_violation(c->cl, err);
			if (k == c->cl->n) nd++;
		}
		if (sq - nd < 10) {
			for (int i = 0; i < c->cl->n; i++) start_int(c->cl, i, sq, (long)(th_rand() % 10));
			__atomic_store_n(&c->seq, sq + 1, __ATOMIC_RELEASE);
		}
		th_sleep_ms((unsigned)(th_rand() % 300));
	}
	return NULL;
}

static void *lots_checker(void *arg)
{
	lots_ctx *c = arg;
	char err[512];
	while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
		int sq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
		for (int i = 0; i < sq; i++)
			if (ndecided_check(c->cl, i, err, sizeof err) < 0) note_violation(c->cl, err);
		th_sleep_ms((unsigned)(th_rand() % 300));
	}
	return NULL;
}

/* TestLots: many requests under random partitions and unreliable RPC; all decide after repair. */
static void test_paxos_many_requests_with_changing_partitions_all_decide(void **state)
{
	(void)state;
	const int n = 5;
	cluster *cl = cl_start("lots", n, true);
	printf("Test: Many requests, changing partitions ...\n");
	all_unreliable(cl, true);

	lots_ctx c = {.cl = cl, .done = 0, .seq = 0};
	pthread_t t1, t2, t3;
	assert_int_equal(pthread_create(&t1, NULL, lots_partitioner, &c), 0);
	assert_int_equal(pthread_create(&t2, NULL, lots_starter, &c), 0);
	assert_int_equal(pthread_create(&t3, NULL, lots_checker, &c), 0);
	th_sleep_ms(20000);
	__atomic_store_n(&c.done, 1, __ATOMIC_RELEASE);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	pthread_join(t3, NULL);
	assert_no_violation(cl);

	all_unreliable(cl, false);
	th_part3(cl->nm, G(0, 1, 2, 3, 4), NULL, NULL);
	th_sleep_ms(5000);
	printf("  %d instances started\n", c.seq);
	for (int i = 0; i < c.seq; i++) waitmajority(cl, i);
	cl_free(cl);
}

/* ------------------------------------------------------------ our own tests */

/* A failure-free agreement among 3 peers costs at most 9 RPCs (the design target). */
static void test_paxos_failure_free_agreement_costs_at_most_nine_rpcs(void **state)
{
	(void)state;
	cluster *cl = cl_start("cheap", 3, false);
	const int k = 20;
	for (int seq = 0; seq < k; seq++) {
		start(cl, seq % 3, seq, "v");
		waitn(cl, seq, 3);
	}
	unsigned long t = total_rpcs(cl);
	printf("  %lu RPCs for %d agreements (%.1f each)\n", t, k, (double)t / k);
	if (t > (unsigned long)(9 * k)) fail_msg("%lu RPCs for %d agreements", t, k);
	cl_free(cl);
}

typedef struct {
	cluster *cl;
	int me;
	int count;
	char err[512];
} tip_ctx;

/* Propose at this peer's log tip again and again, like a would-be leader. */
static void *tip_proposer(void *arg)
{
	tip_ctx *c = arg;
	for (int k = 0; k < c->count; k++) {
		int seq = paxos_max(c->cl->px[c->me]) + 1;
		start_int(c->cl, c->me, seq, 1000000L * (c->me + 1) + k);
		uint64_t deadline = th_now_ms() + 30000;
		while (paxos_status(c->cl->px[c->me], seq, NULL, NULL) != PAXOS_DECIDED) {
			int nd = ndecided_check(c->cl, seq, c->err, sizeof c->err);
			if (nd < 0) return NULL;
			if (th_now_ms() > deadline) {
				snprintf(c->err, sizeof c->err, "peer %d: seq %d not decided in 30 s", c->me, seq);
				return NULL;
			}
			th_sleep_ms(1);
		}
	}
	return NULL;
}

/* Peers competing for the log tip (Multi-Paxos leases fighting) on an unreliable network still agree. */
static void test_paxos_competing_tip_proposers_agree_on_unreliable_network(void **state)
{
	(void)state;
	cluster *cl = cl_start("tips", 3, false);
	all_unreliable(cl, true);
	tip_ctx c[3];
	pthread_t t[3];
	const int count = th_under_valgrind() ? 10 : 40;
	for (int i = 0; i < 3; i++) {
		c[i] = (tip_ctx){.cl = cl, .me = i, .count = count};
		assert_int_equal(pthread_create(&t[i], NULL, tip_proposer, &c[i]), 0);
	}
	for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		if (c[i].err[0]) fail_msg("%s", c[i].err);
	all_unreliable(cl, false);
	int top = 0;
	for (int i = 0; i < 3; i++)
		if (paxos_max(cl->px[i]) > top) top = paxos_max(cl->px[i]);
	/* every instance anyone decided agrees everywhere it is decided; the
	 * peers that missed a decision learn it by proposing there themselves */
	for (int seq = 0; seq <= top; seq++) {
		if (ndecided(cl, seq) == 0) continue;
		for (int i = 0; i < 3; i++) start(cl, i, seq, "late");
		waitn(cl, seq, 3);
	}
	cl_free(cl);
}

/* A stable proposer skips phase 1: its agreements cost at most 9 RPCs, in fact about 3. */
static void test_paxos_stable_proposer_agreements_are_cheap(void **state)
{
	(void)state;
	cluster *cl = cl_start("stable", 3, false);
	start(cl, 0, 0, "first");
	waitn(cl, 0, 3);
	unsigned long t0 = total_rpcs(cl);
	const int k = 20;
	for (int seq = 1; seq <= k; seq++) {
		start(cl, 0, seq, "v");
		waitn(cl, seq, 3);
	}
	unsigned long t = total_rpcs(cl) - t0;
	printf("  %lu RPCs for %d agreements by one proposer (%.1f each)\n", t, k, (double)t / k);
	if (t > (unsigned long)(9 * k)) fail_msg("%lu RPCs for %d agreements", t, k);
	cl_free(cl);
}

/* Values are byte strings: embedded NULs and the empty value survive, and equality is by bytes. */
static void test_paxos_values_are_byte_strings(void **state)
{
	(void)state;
	cluster *cl = cl_start("bytes", 3, false);
	static const char bin[] = {'a', 0, 'b', 0, 0, 'c'};
	start_bytes(cl, 1, 0, bin, sizeof bin);
	start_bytes(cl, 2, 1, "", 0);
	waitn(cl, 0, 3);
	waitn(cl, 1, 3);
	for (int i = 0; i < 3; i++) {
		void *v = NULL;
		size_t len = 99;
		assert_int_equal(paxos_status(cl->px[i], 0, &v, &len), PAXOS_DECIDED);
		assert_int_equal(len, sizeof bin);
		assert_memory_equal(v, bin, sizeof bin);
		free(v);
		assert_int_equal(paxos_status(cl->px[i], 1, &v, &len), PAXOS_DECIDED);
		assert_int_equal(len, 0);
		assert_non_null(v);
		free(v);
		assert_int_equal(paxos_status(cl->px[i], 2, &v, &len), PAXOS_PENDING);
		assert_null(v);
	}
	cl_free(cl);
}

/* Done only moves forward, and Start below Min() is ignored. */
static void test_paxos_done_only_moves_forward(void **state)
{
	(void)state;
	cluster *cl = cl_start("fwd", 3, false);
	for (int seq = 0; seq < 4; seq++) {
		start(cl, 0, seq, "v");
		waitn(cl, seq, 3);
	}
	for (int i = 0; i < 3; i++) {
		paxos_done(cl->px[i], 2);
		paxos_done(cl->px[i], 0); /* no effect */
	}
	start(cl, 0, 4, "w"); /* carries the Done values around */
	waitn(cl, 4, 3);
	WAIT_UNTIL(paxos_min(cl->px[0]) == 3 && paxos_min(cl->px[1]) == 3 && paxos_min(cl->px[2]) == 3, 10000);
	start(cl, 1, 1, "again");
	assert_int_equal(paxos_status(cl->px[1], 1, NULL, NULL), PAXOS_FORGOTTEN);
	assert_int_equal(paxos_status(cl->px[1], 3, NULL, NULL), PAXOS_DECIDED);
	cl_free(cl);
}

/* A peer registered on a shared server leaves the server serving after paxos_kill. */
static void test_paxos_on_shared_server_kill_removes_only_its_program(void **state)
{
	(void)state;
	cluster *cl = cl_new("shared", 3, false);
	dkv_rpc_server *srv[3];
	for (int i = 0; i < 3; i++) {
		srv[i] = dkv_rpc_server_listen(cl->ports[i]);
		assert_non_null(srv[i]);
		cl->px[i] = paxos_make(cl->peers, 3, i, srv[i]);
		assert_non_null(cl->px[i]);
	}
	start(cl, 0, 0, "shared");
	waitn(cl, 0, 3);
	/* kill peer 2's Paxos but keep its server: the others still agree */
	paxos_kill(cl->px[2]);
	start(cl, 1, 1, "two");
	waitmajority(cl, 1);
	assert_int_equal(paxos_status(cl->px[2], 1, NULL, NULL), PAXOS_PENDING);
	assert_true(paxos_rpc_count(cl->px[2]) > 0); /* still readable after kill */
	/* the server itself still accepts connections (other programs stay) */
	unsigned long before = dkv_rpc_server_count(srv[2]);
	start(cl, 0, 2, "three");
	waitmajority(cl, 2);
	WAIT_UNTIL(dkv_rpc_server_count(srv[2]) > before, 10000);
	cl_free(cl);
	for (int i = 0; i < 3; i++) dkv_rpc_server_free(srv[i]);
}

/* Kill while proposers run against a partition: returns, joins every thread, frees everything. */
static void test_paxos_kill_mid_agreement_joins_every_thread(void **state)
{
	(void)state;
	int threads0 = th_thread_count();
	cluster *cl = cl_start("killmid", 5, true);
	th_part3(cl->nm, G(0, 1), G(2, 3), G(4)); /* nobody has a majority */
	for (int seq = 0; seq < 10; seq++)
		for (int i = 0; i < 5; i++) start_int(cl, i, seq, seq * 10 + i);
	th_sleep_ms(300);
	/* mid-agreement: the proposers are at work (peers 0 and 1, 2 and 3 hear each other) */
	WAIT_UNTIL(paxos_rpc_count(cl->px[0]) + paxos_rpc_count(cl->px[1]) > 0 &&
	               paxos_rpc_count(cl->px[2]) + paxos_rpc_count(cl->px[3]) > 0,
	           10000);
	for (int i = 0; i < 5; i++) {
		paxos_kill(cl->px[i]);
		paxos_kill(cl->px[i]); /* idempotent */
	}
	/* after kill: queries work, Start is ignored */
	start(cl, 0, 20, "late");
	assert_int_equal(paxos_status(cl->px[0], 20, NULL, NULL), PAXOS_PENDING);
	assert_true(paxos_max(cl->px[0]) >= 9);
	cl_free(cl);
	WAIT_UNTIL(th_thread_count() <= threads0, 10000);
	paxos_free(NULL);
}

/* The pure acceptor core: promises only above n_p, accepts at or above it, reports what it accepted. */
static void test_paxos_acceptor_core_follows_paxos_made_simple(void **state)
{
	(void)state;
	px_inst in;
	memset(&in, 0, sizeof in);
	px_blob *a = px_blob_copy("a", 1), *b = px_blob_copy("b", 1);
	assert_non_null(a);
	assert_non_null(b);
	px_promise pm;
	uint64_t np = 0;

	px_acceptor_prepare(&in, 10, &pm);
	assert_int_equal(pm.status, PX_ST_OK);
	assert_int_equal(pm.n, 0);
	assert_null(pm.v);
	px_acceptor_prepare(&in, 10, &pm); /* not above n_p */
	assert_int_equal(pm.status, PX_ST_REJECT);
	assert_int_equal(pm.n, 10);
	assert_int_equal(px_acceptor_accept(&in, 9, a, &np), PX_ST_REJECT);
	assert_int_equal(np, 10);
	assert_int_equal(px_acceptor_accept(&in, 10, a, &np), PX_ST_OK);
	px_acceptor_prepare(&in, 20, &pm);
	assert_int_equal(pm.status, PX_ST_OK);
	assert_int_equal(pm.n, 10);
	assert_ptr_equal(pm.v, a);
	assert_false(px_acceptor_can_accept(&in, 15));
	assert_int_equal(px_acceptor_accept(&in, 25, b, &np), PX_ST_OK);
	assert_int_equal(in.n_a, 25);
	assert_true(px_blob_equal(in.v_a, "b", 1));

	/* proposal numbers: above everything seen, unique per peer */
	in.n_seen = (uint64_t)7 << PX_ROUND_SHIFT;
	uint64_t n1 = px_next_number(&in, 1), n2 = px_next_number(&in, 2);
	assert_true(n1 > in.n_seen && n1 > in.n_p);
	assert_true(n1 != n2);
	assert_int_equal(n1 & ((1u << PX_ROUND_SHIFT) - 1), 1);

	px_blob_unref(in.v_a);
	px_blob_unref(a);
	px_blob_unref(b);
}

/* paxos_make rejects bad arguments with EINVAL. */
static void test_paxos_make_rejects_bad_arguments(void **state)
{
	(void)state;
	char port[DKV_NAME_MAX];
	const char *peers[1] = {th_port(port, "px", "bad", 0)};
	errno = 0;
	assert_null(paxos_make(peers, 1, 1, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(paxos_make(peers, 0, 0, NULL));
	assert_null(paxos_make(NULL, 1, 0, NULL));
	/* a single peer is its own majority */
	paxos *px = paxos_make(peers, 1, 0, NULL);
	assert_non_null(px);
	paxos_start(px, 0, "solo", 4);
	WAIT_UNTIL(paxos_status(px, 0, NULL, NULL) == PAXOS_DECIDED, 10000);
	paxos_free(px);
}

/* ------------------------------------------------------------ restarts (issue 12) */

/* cl_restart: kill peer i and start it again at the same name, its state lost
 * (memory mode), with or without opts.restart. */
static void cl_restart(cluster *cl, int i, bool flag)
{
	paxos_free(cl->px[i]);
	cl->px[i] = NULL;
	const char *const *peers = cl->nm ? th_peers(cl->nm, i) : cl->peers;
	dkv_server_opts o;
	memset(&o, 0, sizeof o);
	o.restart = flag;
	errno = 0;
	cl->px[i] = paxos_make_opts(peers, cl->n, i, NULL, &o);
	if (!cl->px[i]) fail_msg("paxos_make_opts(restart=%d): %s", flag, strerror(errno));
}

/* fate of seq at peer i, with the value compared to want (NULL: any) */
static bool decided_as(cluster *cl, int i, int seq, const char *want)
{
	void *v = NULL;
	size_t len = 0;
	if (paxos_status(cl->px[i], seq, &v, &len) != PAXOS_DECIDED) return false;
	bool same = !want || (v && len == strlen(want) && memcmp(v, want, len) == 0);
	free(v);
	return same;
}

/*
 * Issue 12 item 1, the amnesia schedule: A (0) and B (1) accept v1 (chosen),
 * C (2) hears nothing of it; B restarts empty (restart); A is cut off; C
 * prepares the same seq with v2. With B voting again at once, B and C would
 * choose v2 beside A's v1. B must not vote there: nothing is decided while A
 * is away, and after heal every peer decides v1.
 */
static void test_paxos_restarted_peer_cannot_choose_a_second_value(void **state)
{
	(void)state;
	cluster *cl = cl_start("amnesia", 3, true);
	/* A <-> B only: A's accepts reach B, nothing reaches C */
	const bool ab[9] = {true, true, false, true, true, false, false, false, true};
	th_links(cl->nm, ab);
	start(cl, 0, 0, "v1");
	WAIT_UNTIL(decided_as(cl, 0, 0, "v1"), 10000);
	assert_false(decided_as(cl, 2, 0, NULL));
	/* B loses everything (its own decision included) and comes back */
	cl_restart(cl, 1, true);
	/* A cut off; B <-> C (the restarted socket needs its links again) */
	const bool bc[9] = {true, false, false, false, true, true, false, true, true};
	th_links(cl->nm, bc);
	unsigned long nv0 = px_novote_count(cl->px[2], false);
	start(cl, 2, 0, "v2");
	/* C's rounds are refused by B (NOVOTE) round after round; B keeps asking
	 * for INFO and never gets A's answer. Bounded by steps, not time. */
	WAIT_UNTIL(px_novote_count(cl->px[2], false) >= nv0 + 3 && px_rejoin_asks(cl->px[1]) >= 6, 30000);
	for (int i = 0; i < 3; i++) (void)ndecided(cl, 0); /* fails on two values */
	assert_false(decided_as(cl, 1, 0, NULL));
	assert_false(decided_as(cl, 2, 0, NULL));
	assert_false(px_is_voting(cl->px[1]));
	/* heal: everyone decides v1 */
	const bool all[9] = {true, true, true, true, true, true, true, true, true};
	th_links(cl->nm, all);
	start(cl, 1, 0, "v3");
	WAIT_UNTIL(decided_as(cl, 0, 0, "v1") && decided_as(cl, 1, 0, "v1") && decided_as(cl, 2, 0, "v1"),
	           30000);
	assert_int_equal(ndecided(cl, 0), 3);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	assert_true(px_vote_floor(cl->px[1]) >= 0);
	cl_free(cl);
}

/* Issue 12 item 1, the Done-vector hand-back: a restarted peer is not handed
 * its old incarnation's Done (it would forget what its new self never
 * applied); the others forget its old Done, and their Min does not go back. */
static void test_paxos_restarted_peer_is_not_handed_its_old_done(void **state)
{
	(void)state;
	cluster *cl = cl_start("handback", 3, false);
	for (int seq = 0; seq < 4; seq++) {
		start(cl, 0, seq, "v");
		waitn(cl, seq, 3);
	}
	for (int i = 0; i < 3; i++) paxos_done(cl->px[i], 3);
	start(cl, 0, 4, "w"); /* carries the Done values around */
	waitn(cl, 4, 3);
	WAIT_UNTIL(paxos_min(cl->px[0]) == 4 && paxos_min(cl->px[1]) == 4 && paxos_min(cl->px[2]) == 4, 10000);
	cl_restart(cl, 1, true);
	assert_int_equal(paxos_min(cl->px[1]), 0);
	/* messages from A and C (carrying dones[B] = 3 of B's old self) reach B */
	start(cl, 0, 5, "x");
	WAIT_UNTIL(decided_as(cl, 1, 5, "x"), 10000);
	start(cl, 2, 6, "y");
	WAIT_UNTIL(decided_as(cl, 1, 6, "y"), 10000);
	assert_int_equal(paxos_min(cl->px[1]), 0);
	assert_int_equal(paxos_status(cl->px[1], 4, NULL, NULL), PAXOS_PENDING);
	assert_int_equal(paxos_min(cl->px[0]), 4); /* never backwards */
	/* B's new Done counts once it says it */
	paxos_done(cl->px[1], 5);
	paxos_done(cl->px[0], 5);
	paxos_done(cl->px[2], 5);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	start(cl, 0, 7, "z");
	waitn(cl, 7, 3);
	start(cl, 2, 8, "z");
	waitn(cl, 8, 3);
	WAIT_UNTIL(paxos_min(cl->px[0]) == 6 && paxos_min(cl->px[1]) == 6, 10000);
	cl_free(cl);
}

/* A peer started without the flag whose peers know it under another
 * incarnation (to_inc) treats itself as restarted: it stops voting, rejoins,
 * and never votes where its old self may have. */
static void test_paxos_restart_without_flag_is_detected_by_to_inc(void **state)
{
	(void)state;
	cluster *cl = cl_start("toinc", 3, false);
	for (int seq = 0; seq < 3; seq++) {
		start(cl, seq % 3, seq, "v");
		waitn(cl, seq, 3);
	}
	uint64_t old = px_incarnation(cl->px[1]);
	cl_restart(cl, 1, false);
	assert_true(px_incarnation(cl->px[1]) != old && px_incarnation(cl->px[1]) != 0);
	assert_true(px_is_voting(cl->px[1])); /* nothing told it yet */
	assert_int_equal(px_vote_floor(cl->px[1]), -1);
	/* the next agreement's messages (PREPARE/ACCEPT/DECIDED) carry to_inc =
	 * B's old incarnation */
	start(cl, 0, 3, "w");
	waitmajority(cl, 3);
	WAIT_UNTIL(px_vote_floor(cl->px[1]) >= 2 && px_is_voting(cl->px[1]), 10000);
	start(cl, 0, 4, "u");
	waitn(cl, 4, 3);
	cl_free(cl);
}

/* A restarted peer is refused with NOVOTE, a reply: A reaches only the
 * restarted B (C cut off, so B cannot rejoin); every round of A is refused by
 * a NOVOTE reply that both count (old code: B promises and accepts). */
static void test_paxos_restarted_peer_answers_novote(void **state)
{
	(void)state;
	cluster *cl = cl_start("novote", 3, true);
	const bool all[9] = {true, true, true, true, true, true, true, true, true};
	th_links(cl->nm, all);
	start(cl, 0, 0, "a");
	waitn(cl, 0, 3);
	cl_restart(cl, 1, true);
	const bool ab[9] = {true, true, false, true, true, false, false, false, true};
	th_links(cl->nm, ab);
	unsigned long rb0 = paxos_rpc_count(cl->px[1]);
	start(cl, 0, 1, "b");
	WAIT_UNTIL(px_novote_count(cl->px[0], false) >= 5, 30000);
	unsigned long seen = px_novote_count(cl->px[0], false), given = px_novote_count(cl->px[1], true);
	printf("  %lu NOVOTE seen by the proposer, %lu given, %lu RPCs served by B\n", seen, given,
	       paxos_rpc_count(cl->px[1]) - rb0);
	assert_true(given >= 5);
	assert_true(paxos_rpc_count(cl->px[1]) - rb0 >= 5);
	assert_false(px_is_voting(cl->px[1]));
	assert_false(decided_as(cl, 0, 1, NULL));
	assert_false(decided_as(cl, 1, 1, NULL));
	/* heal: B rejoins (above seq 1, which A told it of), seq 1 is decided by A and C */
	th_links(cl->nm, all);
	waitn(cl, 1, 3);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	assert_true(px_vote_floor(cl->px[1]) >= 1);
	cl_free(cl);
}

/* A restarted peer votes again once a majority of the others answered; then
 * the other one can die and agreement continues with the restarted peer. */
static void test_paxos_restarted_peer_votes_again_and_carries_a_majority(void **state)
{
	(void)state;
	cluster *cl = cl_start("revote", 3, false);
	for (int seq = 0; seq < 5; seq++) {
		start(cl, seq % 3, seq, "v");
		waitn(cl, seq, 3);
	}
	cl_restart(cl, 1, true);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	int floor = px_vote_floor(cl->px[1]);
	assert_true(floor >= 4);
	paxos_kill(cl->px[2]);
	for (int seq = floor + 1; seq < floor + 6; seq++) {
		start(cl, seq % 2, seq, "after");
		WAIT_UNTIL(decided_as(cl, 0, seq, "after") && decided_as(cl, 1, seq, "after"), 10000);
	}
	cl_free(cl);
}

/* With fewer than a majority of voting others, a restarted peer never votes:
 * it asks again and again, and no agreement happens with it. */
static void test_paxos_restarted_peer_without_a_voting_majority_never_votes(void **state)
{
	(void)state;
	cluster *cl = cl_start("novmaj", 3, false);
	start(cl, 0, 0, "a");
	waitn(cl, 0, 3);
	paxos_kill(cl->px[2]);
	cl_restart(cl, 1, true);
	start(cl, 0, 1, "b");
	WAIT_UNTIL(px_rejoin_asks(cl->px[1]) >= 10, 30000);
	assert_false(px_is_voting(cl->px[1]));
	assert_false(decided_as(cl, 0, 1, NULL));
	assert_false(decided_as(cl, 1, 1, NULL));
	/* a second restarted peer does not count as voting either */
	cl_restart(cl, 2, true);
	unsigned long a0 = px_rejoin_asks(cl->px[1]);
	WAIT_UNTIL(px_rejoin_asks(cl->px[1]) >= a0 + 10 && px_rejoin_asks(cl->px[2]) >= 10, 30000);
	assert_false(px_is_voting(cl->px[1]));
	assert_false(px_is_voting(cl->px[2]));
	assert_false(decided_as(cl, 0, 1, NULL));
	cl_free(cl);
}

/* R5 (paxos.c "Restarts"): with every other peer up, a restarted peer
 * rejoins after exactly two INFO rounds (phase A fences, phase B reads) and
 * never waits PX_ROUND_MAX_MS (the old rule always waited: counted as a flag,
 * not a time). */
static void test_paxos_restarted_peer_rejoins_without_the_wait_when_all_answer(void **state)
{
	(void)state;
	cluster *cl = cl_start("nowait", 3, false);
	for (int seq = 0; seq < 3; seq++) {
		start(cl, seq % 3, seq, "v");
		waitn(cl, seq, 3);
	}
	cl_restart(cl, 1, true);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	printf("  rejoined after %lu INFO calls, waited: %d\n", px_rejoin_asks(cl->px[1]),
	       (int)px_rejoin_waited(cl->px[1]));
	assert_false(px_rejoin_waited(cl->px[1]));
	assert_int_equal(px_rejoin_asks(cl->px[1]), 4); /* 2 others x (phase A + phase B) */
	assert_true(px_vote_floor(cl->px[1]) >= 2);
	/* and it carries a majority with one of the others gone */
	paxos_kill(cl->px[2]);
	int f = px_vote_floor(cl->px[1]);
	start(cl, 1, f + 1, "after");
	WAIT_UNTIL(decided_as(cl, 0, f + 1, "after") && decided_as(cl, 1, f + 1, "after"), 10000);
	cl_free(cl);
}

/* With a peer down in a group of 5, the fences cannot all be had: the rejoin
 * falls back to the wait (and still completes with 3 voting others). */
static void test_paxos_rejoin_with_a_peer_down_falls_back_to_the_wait(void **state)
{
	(void)state;
	cluster *cl = cl_start("waitfb", 5, false);
	start(cl, 0, 0, "v");
	waitn(cl, 0, 5);
	paxos_kill(cl->px[4]);
	cl_restart(cl, 1, true);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	assert_true(px_rejoin_waited(cl->px[1]));
	assert_true(px_vote_floor(cl->px[1]) >= 0);
	cl_free(cl);
}

/* A PREPARE or ACCEPT header from peer `from` with incarnation `inc`. */
static void fill_hdr(px_hdr *h, int from, uint64_t inc, int *dv, uint64_t *di, int n)
{
	memset(h, 0, sizeof *h);
	for (int i = 0; i < n; i++) {
		dv[i] = -1;
		di[i] = 0;
	}
	h->from = from;
	h->from_inc = inc;
	h->dones.dones_val = dv;
	h->dones.dones_len = (u_int)n;
	h->dincs.dincs_val = di;
	h->dincs.dincs_len = (u_int)n;
}

static px_status raw_prepare(dkv_rpc_pool *pool, const char *to, int from, uint64_t inc, int seq,
                             uint64_t n)
{
	int dv[3];
	uint64_t di[3];
	px_prepare_args a;
	px_prepare_reply r;
	memset(&a, 0, sizeof a);
	memset(&r, 0, sizeof r);
	fill_hdr(&a.h, from, inc, dv, di, 3);
	a.seq = seq;
	a.n = n;
	int rc = dkv_rpc_call(pool, to, PX_PROG, PX_VERS, PX_PREPARE, (xdrproc_t)xdr_px_prepare_args,
	                      &a, (xdrproc_t)xdr_px_prepare_reply, &r, 10000);
	assert_int_equal(rc, DKV_OK);
	px_status st = r.status;
	xdr_free((xdrproc_t)xdr_px_prepare_reply, (char *)&r);
	return st;
}

static px_status raw_accept(dkv_rpc_pool *pool, const char *to, int from, uint64_t inc, int seq,
                            uint64_t n)
{
	int dv[3];
	uint64_t di[3];
	px_accept_args a;
	px_accept_reply r;
	memset(&a, 0, sizeof a);
	memset(&r, 0, sizeof r);
	fill_hdr(&a.h, from, inc, dv, di, 3);
	a.seq = seq;
	a.n = n;
	a.v.px_value_val = "old";
	a.v.px_value_len = 3;
	int rc = dkv_rpc_call(pool, to, PX_PROG, PX_VERS, PX_ACCEPT, (xdrproc_t)xdr_px_accept_args,
	                      &a, (xdrproc_t)xdr_px_accept_reply, &r, 10000);
	assert_int_equal(rc, DKV_OK);
	px_status st = r.status;
	xdr_free((xdrproc_t)xdr_px_accept_reply, (char *)&r);
	return st;
}

/* instance seq's (n_p, n_a) at peer i (0, 0 when absent) */
static void inst_state(cluster *cl, int i, int seq, uint64_t *np, uint64_t *na)
{
	pthread_mutex_lock(&cl->px[i]->mu);
	px_inst *in = px_find_locked(cl->px[i], seq);
	*np = in ? in->n_p : 0;
	*na = in ? in->n_a : 0;
	pthread_mutex_unlock(&cl->px[i]->mu);
}

/* R5, the acceptor's fence: once A answered the INFO of B's new incarnation,
 * a PREPARE or ACCEPT that carries B's old incarnation (a message of the old
 * process delivered late) is refused and changes nothing, header included;
 * the same requests with the new incarnation are served. Before the INFO,
 * an unknown incarnation is served (normal operation costs nothing). */
static void test_paxos_old_incarnation_requests_are_refused_after_the_info(void **state)
{
	(void)state;
	cluster *cl = cl_start("fence", 3, false);
	start(cl, 0, 0, "v");
	waitn(cl, 0, 3);
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);
	uint64_t old = px_incarnation(cl->px[1]);
	const uint64_t n1 = (5ull << PX_ROUND_SHIFT) | 1, n2 = (6ull << PX_ROUND_SHIFT) | 1;
	/* before any INFO: served */
	assert_int_equal(raw_prepare(pool, cl->peers[0], 1, old, 10, n1), PX_ST_OK);
	cl_restart(cl, 1, true);
	uint64_t inc = px_incarnation(cl->px[1]);
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	unsigned long st0 = px_stale_refused(cl->px[0]);
	uint64_t np, na;
	/* the old incarnation, delivered after the INFO: refused, nothing changes */
	assert_int_equal(raw_prepare(pool, cl->peers[0], 1, old, 11, n2), PX_ST_NOVOTE);
	assert_int_equal(raw_accept(pool, cl->peers[0], 1, old, 10, n1), PX_ST_NOVOTE);
	assert_int_equal(raw_prepare(pool, cl->peers[0], 1, old, 10, n2), PX_ST_NOVOTE);
	inst_state(cl, 0, 11, &np, &na);
	assert_true(np == 0 && na == 0);
	inst_state(cl, 0, 10, &np, &na);
	assert_true(np == n1 && na == 0);
	assert_int_equal(px_stale_refused(cl->px[0]), st0 + 3);
	pthread_mutex_lock(&cl->px[0]->mu);
	assert_true(cl->px[0]->peer_inc[1] == inc); /* its header was not taken in */
	pthread_mutex_unlock(&cl->px[0]->mu);
	/* the new incarnation: served */
	assert_int_equal(raw_accept(pool, cl->peers[0], 1, inc, 10, n1), PX_ST_OK);
	inst_state(cl, 0, 10, &np, &na);
	assert_true(na == n1);
	assert_int_equal(px_stale_refused(cl->px[0]), st0 + 3);
	dkv_rpc_pool_free(pool);
	cl_free(cl);
}

/* R5, the proposer's fence: A's round at s holds a vote of B's old
 * incarnation (A's own acceptor refused s) and waits for C's (C's handlers
 * are held on C's lock); B restarts and A answers its INFO; A's acceptor
 * votes again; then C answers. B (old) and C make a majority, but the round
 * counts nothing: it fails (counted), and s is decided by a later round with
 * a higher number (old code: that round went on with B's forgotten vote and
 * C accepted its number n1). */
static void test_paxos_round_holding_an_old_incarnation_vote_does_not_count_it(void **state)
{
	(void)state;
	cluster *cl = cl_start("fencer", 3, false);
	start(cl, 0, 0, "v");
	waitn(cl, 0, 3);
	const int s = 3; /* A's order at seq 3: A, B, C */
	/* A's own acceptor refuses at s, so its round needs both B and C */
	pthread_mutex_lock(&cl->px[0]->mu);
	cl->px[0]->vote_floor = s;
	pthread_mutex_unlock(&cl->px[0]->mu);
	unsigned long f0 = px_fenced_rounds(cl->px[0]);
	unsigned long c0 = paxos_rpc_count(cl->px[2]);
	pthread_mutex_lock(&cl->px[2]->mu); /* hold C's handlers */
	start(cl, 0, s, "x");
	/* A's request is in C's handler: B (before C in A's order) voted n1 */
	WAIT_UNTIL(paxos_rpc_count(cl->px[2]) > c0, 10000);
	uint64_t n1, na;
	inst_state(cl, 1, s, &n1, &na);
	assert_true(n1 != 0);
	cl_restart(cl, 1, true);
	uint64_t inc = px_incarnation(cl->px[1]);
	/* B's rejoin asks A first: A fences B's old incarnation */
	bool fenced = false;
	for (int k = 0; k < 2000 && !fenced; k++) {
		pthread_mutex_lock(&cl->px[0]->mu);
		fenced = cl->px[0]->fence_inc[1] == inc;
		pthread_mutex_unlock(&cl->px[0]->mu);
		if (!fenced) th_sleep_ms(5);
	}
	pthread_mutex_lock(&cl->px[0]->mu);
	cl->px[0]->vote_floor = -1; /* A's acceptor votes at s again */
	pthread_mutex_unlock(&cl->px[0]->mu);
	pthread_mutex_unlock(&cl->px[2]->mu); /* C answers now */
	assert_true(fenced);
	WAIT_UNTIL(decided_as(cl, 0, s, "x") && decided_as(cl, 2, s, "x"), 10000);
	uint64_t np;
	inst_state(cl, 2, s, &np, &na);
	printf("  C at seq %d: n_a %llu (the fenced round's n1 %llu); rounds failed by a fence: %lu\n",
	       s, (unsigned long long)na, (unsigned long long)n1, px_fenced_rounds(cl->px[0]) - f0);
	assert_true(na > n1);
	assert_true(px_fenced_rounds(cl->px[0]) > f0);
	cl_free(cl);
}

/* ------------------------------------------------------------ durability (issue 13) */

/* a per-test data directory path (not created) */
static char *test_dir(char *buf, size_t n, const char *tag, int i)
{
	snprintf(buf, n, "%s/pxdir-%d-%s-%d", th_dir(), (int)getpid(), tag, i);
	return buf;
}

static void rm_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d) return;
	struct dirent *e;
	char f[1024];
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		snprintf(f, sizeof f, "%s/%s", path, e->d_name);
		unlink(f);
	}
	closedir(d);
	rmdir(path);
}

static paxos *make_on_dir(cluster *cl, int i, const char *dir, bool restart)
{
	const char *const *peers = cl->nm ? th_peers(cl->nm, i) : cl->peers;
	dkv_server_opts o;
	memset(&o, 0, sizeof o);
	o.dir = dir;
	o.restart = restart;
	errno = 0;
	return paxos_make_opts(peers, cl->n, i, NULL, &o);
}

/*
 * The amnesia schedule with B on its directory: B remembers its accept of
 * v1 across the restart, votes at once (no rejoin wait, same incarnation),
 * and C's round at the same seq finds v1 through B and decides it.
 */
static void test_paxos_durable_peer_remembers_its_accept_across_restart(void **state)
{
	(void)state;
	char dirs[3][512];
	cluster *cl = cl_new("durable", 3, true);
	for (int i = 0; i < 3; i++) {
		rm_dir(test_dir(dirs[i], sizeof dirs[i], "durable", i));
		cl->px[i] = make_on_dir(cl, i, dirs[i], false);
		if (!cl->px[i]) fail_msg("paxos_make_opts(dir): %s", strerror(errno));
	}
	const bool ab[9] = {true, true, false, true, true, false, false, false, true};
	th_links(cl->nm, ab);
	start(cl, 0, 0, "v1");
	WAIT_UNTIL(decided_as(cl, 0, 0, "v1"), 10000);
	uint64_t inc = px_incarnation(cl->px[1]);
	paxos_free(cl->px[1]);
	cl->px[1] = make_on_dir(cl, 1, dirs[1], true);
	if (!cl->px[1]) fail_msg("restart on dir: %s", strerror(errno));
	assert_true(px_is_voting(cl->px[1])); /* at once */
	assert_int_equal(px_vote_floor(cl->px[1]), -1);
	assert_true(px_incarnation(cl->px[1]) == inc);
	const bool bc[9] = {true, false, false, false, true, true, false, true, true};
	th_links(cl->nm, bc);
	start(cl, 2, 0, "v2");
	WAIT_UNTIL(decided_as(cl, 2, 0, NULL), 10000);
	assert_true(decided_as(cl, 2, 0, "v1"));
	(void)ndecided(cl, 0);
	assert_int_equal(px_novote_count(cl->px[2], false), 0); /* B voted at once */
	cl_free(cl);
	for (int i = 0; i < 3; i++) rm_dir(dirs[i]);
}

/* A peer that lost its directory rejoins (restart); its rejoin is durable:
 * killed before it completed, it rejoins again on restart; once completed,
 * it votes at once after a restart and keeps its vote floor. */
static void test_paxos_lost_directory_rejoin_is_durable(void **state)
{
	(void)state;
	char dirs[3][512];
	cluster *cl = cl_new("lostdir", 3, false);
	for (int i = 0; i < 3; i++) {
		rm_dir(test_dir(dirs[i], sizeof dirs[i], "lostdir", i));
		cl->px[i] = make_on_dir(cl, i, dirs[i], false);
		assert_non_null(cl->px[i]);
	}
	for (int seq = 0; seq < 4; seq++) {
		start(cl, seq % 3, seq, "v");
		waitn(cl, seq, 3);
	}
	/* B's disk is wiped: it starts with restart on an empty directory */
	paxos_free(cl->px[1]);
	rm_dir(dirs[1]);
	cl->px[1] = make_on_dir(cl, 1, dirs[1], true);
	assert_non_null(cl->px[1]);
	assert_false(px_is_voting(cl->px[1]));
	/* killed mid-rejoin (before the wait is over): still rejoining after restart */
	paxos_free(cl->px[1]);
	cl->px[1] = make_on_dir(cl, 1, dirs[1], false);
	assert_non_null(cl->px[1]);
	assert_false(px_is_voting(cl->px[1]));
	WAIT_UNTIL(px_is_voting(cl->px[1]), 10000);
	int floor = px_vote_floor(cl->px[1]);
	assert_true(floor >= 3);
	/* restarted on its directory: votes at once, same floor */
	paxos_free(cl->px[1]);
	cl->px[1] = make_on_dir(cl, 1, dirs[1], false);
	assert_non_null(cl->px[1]);
	assert_true(px_is_voting(cl->px[1]));
	assert_int_equal(px_vote_floor(cl->px[1]), floor);
	paxos_kill(cl->px[2]);
	start(cl, 1, floor + 1, "after");
	WAIT_UNTIL(decided_as(cl, 0, floor + 1, "after") && decided_as(cl, 1, floor + 1, "after"), 10000);
	cl_free(cl);
	for (int i = 0; i < 3; i++) rm_dir(dirs[i]);
}

/* A directory records whose it is: another peer's start fails EINVAL, a
 * second live start EBUSY; paxos_kill releases it. */
static void test_paxos_directory_identity_and_lock(void **state)
{
	(void)state;
	char dir[512];
	cluster *cl = cl_new("dirid", 3, false);
	rm_dir(test_dir(dir, sizeof dir, "dirid", 0));
	cl->px[0] = make_on_dir(cl, 0, dir, false);
	assert_non_null(cl->px[0]);
	assert_null(make_on_dir(cl, 0, dir, false));
	assert_int_equal(errno, EBUSY);
	paxos_kill(cl->px[0]);
	assert_null(make_on_dir(cl, 1, dir, false)); /* peer 1 on peer 0's directory */
	assert_int_equal(errno, EINVAL);
	paxos_free(cl->px[0]);
	cl->px[0] = make_on_dir(cl, 0, dir, false); /* released by kill: starts again */
	assert_non_null(cl->px[0]);
	cl_free(cl);
	rm_dir(dir);
}

/* The acceptor log is compacted as Min advances: after 600 agreements on
 * 1 KiB values (about 1.2 MiB of records per peer), each log holds little
 * more than the live instances (bounded by the compaction threshold). */
static void test_paxos_durable_log_follows_the_live_state(void **state)
{
	(void)state;
	char dirs[3][512];
	cluster *cl = cl_new("compact", 3, false);
	for (int i = 0; i < 3; i++) {
		rm_dir(test_dir(dirs[i], sizeof dirs[i], "compact", i));
		const char *const *peers = cl->peers;
		dkv_server_opts o;
		memset(&o, 0, sizeof o);
		o.dir = dirs[i];
		o.no_fsync = true; /* honoured: this test is about bytes, not syncs */
		cl->px[i] = paxos_make_opts(peers, 3, i, NULL, &o);
		assert_non_null(cl->px[i]);
	}
	char v[1024];
	const int k = th_under_valgrind() ? 150 : 600;
	for (int seq = 0; seq < k; seq++) {
		memset(v, 'a' + seq % 26, sizeof v);
		start_bytes(cl, 0, seq, v, sizeof v);
		WAIT_UNTIL(paxos_status(cl->px[0], seq, NULL, NULL) == PAXOS_DECIDED, 10000);
		for (int i = 0; i < 3; i++) paxos_done(cl->px[i], seq - 1);
	}
	WAIT_UNTIL(paxos_min(cl->px[0]) >= k - 3 && paxos_min(cl->px[1]) >= k - 3 &&
	               paxos_min(cl->px[2]) >= k - 3, 10000);
	for (int i = 0; i < 3; i++) paxos_done(cl->px[i], k - 1); /* compaction runs in paxos_done */
	long total = 0;
	for (int i = 0; i < 3; i++) {
		char f[600];
		snprintf(f, sizeof f, "%s/paxos.log", dirs[i]);
		struct stat st;
		assert_int_equal(stat(f, &st), 0);
		printf("  peer %d: paxos.log %lld bytes after %d agreements\n", i, (long long)st.st_size, k);
		total += (long)st.st_size;
		if (st.st_size > 400 * 1024) fail_msg("peer %d log %lld bytes: not compacted", i, (long long)st.st_size);
	}
	cl_free(cl);
	for (int i = 0; i < 3; i++) rm_dir(dirs[i]);
	(void)total;
}

/*
 * Power cuts: 3 peers on a simulated disk run a short workload; the disk
 * dies after write boundary k; everything not fsynced is lost, the last
 * write torn; all restart on their directories (restart = false: a peer
 * whose directory is fresh never acknowledged anything). Every value decided
 * before the cut stays decided after it, and no two values are decided.
 * Returns the number of cut points at which a decision changed.
 */
#define CUT_SEQS 4

static int run_cut(uint64_t seed, uint64_t k, bool fsync_noop, uint64_t *boundaries)
{
	simdisk *sd = simdisk_new(seed);
	assert_non_null(sd);
	simdisk_set_fsync_noop(sd, fsync_noop);
	dkv_fs_set_default(simdisk_fs(sd));
	char tag[32];
	snprintf(tag, sizeof tag, "cut%llu", (unsigned long long)k);
	cluster *cl = cl_new(tag, 3, false);
	const char *dirs[3] = {"/d0", "/d1", "/d2"};
	int bad = 0;
	if (k) simdisk_cut_after(sd, k);
	bool up = true;
	for (int i = 0; i < 3; i++)
		if (!(cl->px[i] = make_on_dir(cl, i, dirs[i], false))) up = false;
	char before[CUT_SEQS][32];
	memset(before, 0, sizeof before);
	for (int seq = 0; up && seq < CUT_SEQS; seq++) {
		char v[32];
		snprintf(v, sizeof v, "a%d", seq);
		start(cl, seq % 3, seq, v);
		uint64_t until = th_now_ms() + 5000;
		while (!decided_as(cl, seq % 3, seq, NULL) && !simdisk_dead(sd) && th_now_ms() < until)
			th_sleep_ms(1);
		if (simdisk_dead(sd)) break;
	}
	for (int seq = 0; seq < CUT_SEQS; seq++)
		for (int i = 0; i < 3; i++) {
			void *v = NULL;
			size_t len = 0;
			if (cl->px[i] && paxos_status(cl->px[i], seq, &v, &len) == PAXOS_DECIDED && v)
				snprintf(before[seq], sizeof before[seq], "%s", (char *)v);
			free(v);
		}
	if (boundaries) *boundaries = simdisk_boundaries(sd);
	for (int i = 0; i < 3; i++) {
		paxos_free(cl->px[i]);
		cl->px[i] = NULL;
	}
	simdisk_power_cut(sd);
	simdisk_cut_after(sd, 0);
	for (int i = 0; i < 3; i++) {
		cl->px[i] = make_on_dir(cl, i, dirs[i], false);
		if (!cl->px[i]) fail_msg("cut %llu: restart of %d on its directory: %s",
		                         (unsigned long long)k, i, strerror(errno));
	}
	for (int seq = 0; seq < CUT_SEQS; seq++) {
		for (int i = 0; i < 3; i++) start(cl, i, seq, i == 0 ? "late0" : i == 1 ? "late1" : "late2");
		waitn(cl, seq, 3); /* fails on two values */
		if (before[seq][0] && !decided_as(cl, 0, seq, before[seq])) bad++;
	}
	cl_free(cl);
	dkv_fs_set_default(NULL);
	simdisk_free(sd);
	return bad;
}

static void test_paxos_power_cuts_forget_no_acknowledged_vote(void **state)
{
	(void)state;
	uint64_t total = 0;
	assert_int_equal(run_cut(th_seed(), 0, false, &total), 0);
	/* the boundaries of the workload itself (each run starts the disk anew) */
	printf("  %llu write boundaries in the workload\n", (unsigned long long)total);
	/* every boundary in turn (a seeded sample under valgrind) */
	int bad = 0;
	uint64_t step = th_under_valgrind() ? total / 4 + 1 : 1;
	for (uint64_t k = 1; k <= total; k += step) {
		int b = run_cut(th_seed() + k, k, false, NULL);
		if (b) printf("  cut after boundary %llu: %d decisions changed\n", (unsigned long long)k, b);
		bad += b;
	}
	assert_int_equal(bad, 0);
}

/* The control: with fsync a no-op the same cuts do change decisions. */
static void test_paxos_power_cut_test_bites_without_fsync(void **state)
{
	(void)state;
	uint64_t total = 0;
	run_cut(th_seed(), 0, true, &total);
	int bad = 0;
	for (int r = 0; r < 16 && !bad; r++) {
		uint64_t k = total / 2 + th_rand() % (total / 2 + 1);
		bad += run_cut(th_seed() + 100 + (uint64_t)r, k, true, NULL);
	}
	printf("  fsync no-op: decisions changed (%d)\n", bad);
	assert_true(bad > 0);
}


/* ------------------------------------------------------------ bounded XDR */

/* A raw request body: 32-bit words, sent as they are. */
typedef struct {
	const uint32_t *w;
	int n;
} raw_words;

static bool_t xdr_raw_words(XDR *x, void *p)
{
	raw_words *r = p;
	for (int i = 0; i < r->n; i++) {
		u_int v = r->w[i];
		if (!xdr_u_int(x, &v)) return FALSE;
	}
	return TRUE;
}

static enum clnt_stat raw_px_call(const char *path, rpcproc_t proc, const uint32_t *w, int n)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(path) < sizeof sa.sun_path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	struct netbuf nb = {.maxlen = sizeof sa, .len = sizeof sa, .buf = &sa};
	CLIENT *c = clnt_vc_create(fd, &nb, PX_PROG, PX_VERS, 0, 0);
	assert_non_null(c);
	raw_words rw = {w, n};
	struct timeval tv = {30, 0}; /* a bound on a hang, not a measure */
	enum clnt_stat st = clnt_call(c, proc, (xdrproc_t)xdr_raw_words, (char *)&rw,
	                              (xdrproc_t)xdr_void, NULL, tv);
	clnt_destroy(c);
	close(fd);
	return st;
}

/* Bounded XDR (px_prot.x): records of a few bytes that announce huge arrays
 * or values get GARBAGE_ARGS without the decoder allocating what they
 * announce (counted: bytes the value decoder allocated), no handler runs, and
 * the peer keeps serving. The senders keep to the bounds: an oversized value
 * is not proposed, an oversized group is refused. */
static void test_paxos_tiny_records_announcing_huge_lengths_are_refused(void **state)
{
	(void)state;
	cluster *cl = cl_start("xdrbound", 3, false);
	/* hdr: from, from_inc (2 words), to_inc (2 words), then dones<> */
	const uint32_t huge_dones[] = {1, 0, 7, 0, 0, 0x3fffffffu};
	const uint32_t huge_dincs[] = {1, 0, 7, 0, 0, 0, 0x20000000u};
	/* hdr with empty vectors, leading, seq, then the value's length */
	const uint32_t value_over[] = {1, 0, 7, 0, 0, 0, 0, 0, 5, 0xfffffff0u};
	const uint32_t value_max[] = {1, 0, 7, 0, 0, 0, 0, 0, 5, PX_VALUE_MAX, 0x41414141u, 0x42424242u};
	/* ACCEPT: hdr, seq, n (2 words), value */
	const uint32_t accept_max[] = {1, 0, 7, 0, 0, 0, 0, 0, 5, 0, 1 << 16, PX_VALUE_MAX - 3, 1};
	/* PREPARE's reply type is not a request, but INFO carries a header only */
	struct {
		rpcproc_t proc;
		const uint32_t *w;
		int n;
	} bad[] = {
		{PX_INFO, huge_dones, 6},       {PX_PREPARE, huge_dincs, 7},
		{PX_DECIDED, value_over, 10},   {PX_DECIDED, value_max, 12},
		{PX_FORWARD, value_max, 12},    {PX_ACCEPT, accept_max, 13},
	};
	const int nbad = (int)(sizeof bad / sizeof bad[0]), rounds = 10;
	unsigned long served0 = paxos_rpc_count(cl->px[0]);
	unsigned long alloc0 = __atomic_load_n(&px_value_decode_alloc, __ATOMIC_RELAXED);
	int garbage = 0, value_records = 0;
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < nbad; k++) {
			enum clnt_stat st = raw_px_call(cl->ports[0], bad[k].proc, bad[k].w, bad[k].n);
			if (st == RPC_CANTDECODEARGS) garbage++;
			else printf("  record %d: %s\n", k, clnt_sperrno(st));
			if (bad[k].w == value_max || bad[k].w == accept_max) value_records++;
		}
	unsigned long alloc = __atomic_load_n(&px_value_decode_alloc, __ATOMIC_RELAXED) - alloc0;
	printf("  %d of %d tiny records answered GARBAGE_ARGS; value decoder allocated %lu bytes "
	       "for %d records announcing ~%u MiB each\n",
	       garbage, rounds * nbad, alloc, value_records, (unsigned)(PX_VALUE_MAX >> 20));
	assert_int_equal(garbage, rounds * nbad);
	assert_true(alloc <= (unsigned long)value_records * PX_VALUE_STEP);
	assert_int_equal(paxos_rpc_count(cl->px[0]), served0); /* no handler ran */

	/* records that announce a 65 MiB value and stall: each decode holds one
	 * step (the old unbounded decoder held the whole announced length) */
	enum { NSTALL = 8 };
	int fds[NSTALL];
	unsigned long st0 = __atomic_load_n(&px_value_decode_alloc, __ATOMIC_RELAXED);
	for (int k = 0; k < NSTALL; k++) {
		fds[k] = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_true(fds[k] >= 0);
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		memcpy(sa.sun_path, cl->ports[0], strlen(cl->ports[0]) + 1);
		assert_int_equal(connect(fds[k], (struct sockaddr *)&sa, sizeof sa), 0);
		/* record mark, call header (xid, CALL, v2, prog, vers, DECIDED, no
		 * auth), then the DECIDED args up to the value's length */
		uint32_t w[] = {0, 100u + (uint32_t)k, 0, 2, PX_PROG, PX_VERS, PX_DECIDED, 0, 0, 0, 0,
		                1, 0, 7, 0, 0, 0, 0, 0, 5, PX_VALUE_MAX};
		w[0] = 0x80000000u | (uint32_t)(sizeof w - 4 + 8); /* 8 value bytes never come */
		for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) w[i] = htonl(w[i]);
		assert_int_equal(write(fds[k], w, sizeof w), (ssize_t)sizeof w);
	}
	uint64_t until = th_now_ms() + 30000; /* a bound on a hang, not a measure */
	while (__atomic_load_n(&px_value_decode_alloc, __ATOMIC_RELAXED) - st0 <
	       (unsigned long)NSTALL * PX_VALUE_STEP && th_now_ms() < until)
		th_sleep_ms(5);
	unsigned long held = __atomic_load_n(&px_value_decode_alloc, __ATOMIC_RELAXED) - st0;
	printf("  %d stalled records announcing %u MiB each: the decoders hold %lu bytes\n", NSTALL,
	       (unsigned)(PX_VALUE_MAX >> 20), held);
	assert_int_equal(held, (unsigned long)NSTALL * PX_VALUE_STEP);
	for (int k = 0; k < NSTALL; k++) close(fds[k]);
	assert_int_equal(paxos_rpc_count(cl->px[0]), served0);

	/* it keeps serving: an agreement through peer 0's acceptor */
	start_int(cl, 1, 0, 42);
	waitn(cl, 0, 3);
	assert_true(paxos_rpc_count(cl->px[0]) > served0);

	/* a value over the bound is not proposed (no job, no instance) */
	size_t big = (size_t)PX_VALUE_MAX + 1;
	char *v = calloc(1, big);
	assert_non_null(v);
	paxos_start(cl->px[2], 1, v, big);
	free(v);
	pthread_mutex_lock(&cl->px[2]->mu);
	assert_null(px_find_locked(cl->px[2], 1));
	assert_int_equal(cl->px[2]->njobs, 0);
	pthread_mutex_unlock(&cl->px[2]->mu);
	/* nor is a group the headers could not carry */
	const char *many[PX_PEERS_MAX + 1];
	for (int i = 0; i <= PX_PEERS_MAX; i++) many[i] = cl->ports[0];
	errno = 0;
	assert_null(paxos_make(many, PX_PEERS_MAX + 1, 0, NULL));
	assert_int_equal(errno, EINVAL);
	cl_free(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paxos_basic_proposers_agree_on_one_value),
		cmocka_unit_test(test_paxos_deaf_proposer_learns_decision_itself),
		cmocka_unit_test(test_paxos_min_advances_after_every_peer_calls_done),
		cmocka_unit_test(test_paxos_lots_of_forgetting_on_unreliable_network_is_safe),
		cmocka_unit_test(test_paxos_forgotten_instances_release_memory),
		cmocka_unit_test(test_paxos_max_survives_done),
		cmocka_unit_test(test_paxos_rpc_counts_stay_within_lab_budget),
		cmocka_unit_test(test_paxos_many_instances_all_decide),
		cmocka_unit_test(test_paxos_minority_proposal_is_ignored),
		cmocka_unit_test(test_paxos_many_instances_decide_on_unreliable_network),
		cmocka_unit_test(test_paxos_partitions_decide_only_with_a_majority),
		cmocka_unit_test(test_paxos_many_requests_with_changing_partitions_all_decide),
		cmocka_unit_test(test_paxos_failure_free_agreement_costs_at_most_nine_rpcs),
		cmocka_unit_test(test_paxos_competing_tip_proposers_agree_on_unreliable_network),
		cmocka_unit_test(test_paxos_stable_proposer_agreements_are_cheap),
		cmocka_unit_test(test_paxos_values_are_byte_strings),
		cmocka_unit_test(test_paxos_done_only_moves_forward),
		cmocka_unit_test(test_paxos_on_shared_server_kill_removes_only_its_program),
		cmocka_unit_test(test_paxos_kill_mid_agreement_joins_every_thread),
		cmocka_unit_test(test_paxos_acceptor_core_follows_paxos_made_simple),
		cmocka_unit_test(test_paxos_make_rejects_bad_arguments),
		cmocka_unit_test(test_paxos_restarted_peer_cannot_choose_a_second_value),
		cmocka_unit_test(test_paxos_restarted_peer_is_not_handed_its_old_done),
		cmocka_unit_test(test_paxos_restart_without_flag_is_detected_by_to_inc),
		cmocka_unit_test(test_paxos_restarted_peer_answers_novote),
		cmocka_unit_test(test_paxos_restarted_peer_votes_again_and_carries_a_majority),
		cmocka_unit_test(test_paxos_restarted_peer_without_a_voting_majority_never_votes),
		cmocka_unit_test(test_paxos_restarted_peer_rejoins_without_the_wait_when_all_answer),
		cmocka_unit_test(test_paxos_rejoin_with_a_peer_down_falls_back_to_the_wait),
		cmocka_unit_test(test_paxos_old_incarnation_requests_are_refused_after_the_info),
		cmocka_unit_test(test_paxos_round_holding_an_old_incarnation_vote_does_not_count_it),
		cmocka_unit_test(test_paxos_durable_peer_remembers_its_accept_across_restart),
		cmocka_unit_test(test_paxos_lost_directory_rejoin_is_durable),
		cmocka_unit_test(test_paxos_directory_identity_and_lock),
		cmocka_unit_test(test_paxos_durable_log_follows_the_live_state),
		cmocka_unit_test(test_paxos_power_cuts_forget_no_acknowledged_vote),
		cmocka_unit_test(test_paxos_power_cut_test_bites_without_fsync),
		cmocka_unit_test(test_paxos_tiny_records_announcing_huge_lengths_are_refused),
	};
	return th_run_suite("paxos", tests);
}
