/*
 * tests/test_paxosrsm.c — the replicated state machine on Paxos.
 *
 * Each replica's apply callback appends the op to that replica's log (a copy).
 * The checks, run while the workload runs and at the end: every replica's log
 * is a prefix of one common log (identical order), no op appears twice, every
 * applied op was submitted (no-ops never reach apply), and an add_op that
 * returned DKV_OK finds its op already in its own replica's log.
 * Faults: unreliable RPC, per-pair-link partitions (the lab's scheme), kill.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h" /* dkv_rpc_call: a request to a shared server */
#include "dkv/paxosrsm.h"
#include "lib/harness.h"

#define MAXR 5

typedef struct {
	pthread_mutex_t mu; /* guards ops, n, cap */
	char **ops;
	size_t n, cap;
	unsigned long bad; /* apply called with something we never submitted */
} rlog;

typedef struct {
	int n;
	paxosrsm *r[MAXR];
	rlog log[MAXR];
	th_names *nm;
} rcluster;

static void apply_cb(void *ctx, const void *op, size_t len)
{
	rlog *l = ctx;
	pthread_mutex_lock(&l->mu);
	if (len < 3 || memcmp(op, "op ", 3) != 0) l->bad++;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->ops = realloc(l->ops, l->cap * sizeof *l->ops);
	}
	char *c = malloc(len + 1);
	memcpy(c, op, len);
	c[len] = '\0';
	l->ops[l->n++] = c;
	pthread_mutex_unlock(&l->mu);
}

static rcluster *rc_start(const char *tag, int n)
{
	rcluster *rc = calloc(1, sizeof *rc);
	assert_non_null(rc);
	rc->n = n;
	rc->nm = th_names_new("rsm", tag, n);
	assert_non_null(rc->nm);
	for (int i = 0; i < n; i++) {
		pthread_mutex_init(&rc->log[i].mu, NULL);
		rc->r[i] = paxosrsm_make(th_peers(rc->nm, i), n, i, NULL, apply_cb, &rc->log[i]);
		assert_non_null(rc->r[i]);
	}
	th_partition(rc->nm, (const int[]){0, 0, 0, 0, 0});
	return rc;
}

static void rc_free(rcluster *rc)
{
	for (int i = 0; i < rc->n; i++) paxosrsm_free(rc->r[i]);
	for (int i = 0; i < rc->n; i++) {
		for (size_t k = 0; k < rc->log[i].n; k++) free(rc->log[i].ops[k]);
		free(rc->log[i].ops);
		pthread_mutex_destroy(&rc->log[i].mu);
	}
	th_cleanpp(rc->nm);
	th_names_free(rc->nm);
	free(rc);
}

static size_t log_len(rcluster *rc, int i)
{
	pthread_mutex_lock(&rc->log[i].mu);
	size_t n = rc->log[i].n;
	pthread_mutex_unlock(&rc->log[i].mu);
	return n;
}

static bool log_has(rcluster *rc, int i, const char *op)
{
	bool found = false;
	pthread_mutex_lock(&rc->log[i].mu);
	for (size_t k = rc->log[i].n; k-- > 0 && !found;) found = strcmp(rc->log[i].ops[k], op) == 0;
	pthread_mutex_unlock(&rc->log[i].mu);
	return found;
}

/*
 * check_logs: every log is a prefix of the longest, and no op repeats in it.
 * Returns false with a message in err on a violation.
 */
static bool check_logs(rcluster *rc, char *err, size_t errlen)
{
	int longest = 0;
	for (int i = 0; i < rc->n; i++) pthread_mutex_lock(&rc->log[i].mu);
	for (int i = 1; i < rc->n; i++)
		if (rc->log[i].n > rc->log[longest].n) longest = i;
	bool ok = true;
	rlog *L = &rc->log[longest];
	for (int i = 0; i < rc->n && ok; i++) {
		if (rc->log[i].bad) {
			snprintf(err, errlen, "replica %d applied an op nobody submitted", i);
			ok = false;
		}
		for (size_t k = 0; k < rc->log[i].n && ok; k++) {
			if (strcmp(rc->log[i].ops[k], L->ops[k]) != 0) {
				snprintf(err, errlen, "replica %d applied %s at %zu, replica %d applied %s", i,
				         rc->log[i].ops[k], k, longest, L->ops[k]);
				ok = false;
			}
		}
	}
	/* no duplicates in the longest log (quadratic; logs are small) */
	for (size_t a = 0; a < L->n && ok; a++)
		for (size_t b = a + 1; b < L->n && ok; b++)
			if (strcmp(L->ops[a], L->ops[b]) == 0) {
				snprintf(err, errlen, "op %s applied twice (at %zu and %zu)", L->ops[a], a, b);
				ok = false;
			}
	for (int i = rc->n - 1; i >= 0; i--) pthread_mutex_unlock(&rc->log[i].mu);
	return ok;
}

static void assert_logs_ok(rcluster *rc)
{
	char err[512];
	if (!check_logs(rc, err, sizeof err)) fail_msg("%s", err);
}

static bool all_logs_at_least(rcluster *rc, size_t n)
{
	for (int i = 0; i < rc->n; i++)
		if (log_len(rc, i) < n) return false;
	return true;
}

static bool all_logs_equal_len(rcluster *rc)
{
	size_t n0 = log_len(rc, 0);
	for (int i = 1; i < rc->n; i++)
		if (log_len(rc, i) != n0) return false;
	return true;
}

#define G(...) ((const int[]){__VA_ARGS__, -1})

/* ------------------------------------------------------------ workload threads */

typedef struct {
	rcluster *rc;
	int id;
	int nops;
	unsigned timeout_ms;   /* add_op_timeout's; 0 = add_op */
	int ok, timeouts;
	char err[256];         /* first violation seen */
} worker;

static void *worker_main(void *arg)
{
	worker *w = arg;
	for (int k = 0; k < w->nops; k++) {
		char op[64];
		int r = (int)(th_rand() % (uint64_t)w->rc->n);
		snprintf(op, sizeof op, "op %d %d", w->id, k);
		int rc = paxosrsm_add_op_timeout(w->rc->r[r], op, strlen(op) + 1 - 1, w->timeout_ms);
		if (rc == DKV_OK) {
			w->ok++;
			if (!log_has(w->rc, r, op) && !w->err[0])
				snprintf(w->err, sizeof w->err, "add_op(%s) returned before replica %d applied it", op, r);
		} else if (rc == DKV_ERR_TIMEOUT) {
			w->timeouts++;
		} else if (!w->err[0]) {
			snprintf(w->err, sizeof w->err, "add_op(%s) at replica %d: %s", op, r, dkv_strerror(rc));
		}
	}
	return NULL;
}

static void run_workers(rcluster *rc, worker *ws, int nw)
{
	pthread_t t[16];
	for (int i = 0; i < nw; i++) assert_int_equal(pthread_create(&t[i], NULL, worker_main, &ws[i]), 0);
	for (int i = 0; i < nw; i++) pthread_join(t[i], NULL);
	for (int i = 0; i < nw; i++)
		if (ws[i].err[0]) fail_msg("%s", ws[i].err);
	(void)rc;
}

/* ------------------------------------------------------------ tests */

/* One op submitted at one replica is applied, once, on every replica. */
static void test_paxosrsm_op_is_applied_once_on_every_replica(void **state)
{
	(void)state;
	rcluster *rc = rc_start("one", 3);
	assert_int_equal(paxosrsm_add_op(rc->r[1], "op a", 4), DKV_OK);
	assert_true(log_has(rc, 1, "op a"));
	WAIT_UNTIL(all_logs_at_least(rc, 1), 10000);
	assert_int_equal(paxosrsm_add_op(rc->r[2], "op b", 4), DKV_OK);
	WAIT_UNTIL(all_logs_at_least(rc, 2), 10000);
	assert_logs_ok(rc);
	for (int i = 0; i < 3; i++) assert_int_equal(log_len(rc, i), 2);
	rc_free(rc);
}

/* Many threads submitting at every replica concurrently: every replica applies one identical order. */
static void test_paxosrsm_concurrent_add_op_gives_identical_order(void **state)
{
	(void)state;
	rcluster *rc = rc_start("conc", 3);
	worker ws[8];
	const int per = th_under_valgrind() ? 10 : 40;
	memset(ws, 0, sizeof ws);
	for (int i = 0; i < 8; i++) ws[i] = (worker){.rc = rc, .id = i, .nops = per};
	run_workers(rc, ws, 8);
	WAIT_UNTIL(all_logs_at_least(rc, (size_t)(8 * per)), 30000);
	assert_logs_ok(rc);
	for (int i = 0; i < 3; i++) assert_int_equal(log_len(rc, i), 8 * per);
	rc_free(rc);
}

/* The same under unreliable RPC on every replica. */
static void test_paxosrsm_identical_order_on_unreliable_network(void **state)
{
	(void)state;
	rcluster *rc = rc_start("unrel", 3);
	for (int i = 0; i < 3; i++) paxosrsm_set_unreliable(rc->r[i], true);
	worker ws[6];
	const int per = th_under_valgrind() ? 5 : 25;
	memset(ws, 0, sizeof ws);
	for (int i = 0; i < 6; i++) ws[i] = (worker){.rc = rc, .id = i, .nops = per};
	run_workers(rc, ws, 6);
	assert_logs_ok(rc);
	for (int i = 0; i < 3; i++) paxosrsm_set_unreliable(rc->r[i], false);
	/* one more op tells a lagging replica how far the log goes */
	assert_int_equal(paxosrsm_add_op(rc->r[0], "op last", 7), DKV_OK);
	WAIT_UNTIL(all_logs_at_least(rc, (size_t)(6 * per + 1)), 30000);
	assert_logs_ok(rc);
	for (int i = 0; i < 3; i++) assert_int_equal(log_len(rc, i), 6 * per + 1);
	rc_free(rc);
}

typedef struct {
	rcluster *rc;
	volatile int stop;
	char err[512];
} chaos_ctx;

static void *partitioner_main(void *arg)
{
	chaos_ctx *c = arg;
	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		int group_of[MAXR];
		for (int i = 0; i < c->rc->n; i++) group_of[i] = (int)(th_rand() % 2);
		th_partition(c->rc->nm, group_of);
		if (!c->err[0]) check_logs(c->rc, c->err, sizeof c->err);
		th_sleep_ms(50 + (unsigned)(th_rand() % 250));
	}
	return NULL;
}

/* Concurrent add_ops with changing partitions and unreliable RPC: one order, each op at most once. */
static void test_paxosrsm_identical_order_under_partitions(void **state)
{
	(void)state;
	rcluster *rc = rc_start("part", 5);
	for (int i = 0; i < 5; i++) paxosrsm_set_unreliable(rc->r[i], true);
	chaos_ctx c = {.rc = rc};
	pthread_t pt;
	assert_int_equal(pthread_create(&pt, NULL, partitioner_main, &c), 0);
	worker ws[6];
	const int per = th_under_valgrind() ? 4 : 15;
	memset(ws, 0, sizeof ws);
	for (int i = 0; i < 6; i++) ws[i] = (worker){.rc = rc, .id = i, .nops = per, .timeout_ms = 2000};
	run_workers(rc, ws, 6);
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
	pthread_join(pt, NULL);
	if (c.err[0]) fail_msg("%s", c.err);
	int ok = 0, to = 0;
	for (int i = 0; i < 6; i++) {
		ok += ws[i].ok;
		to += ws[i].timeouts;
	}
	printf("  %d ops applied, %d timed out\n", ok, to);
	assert_true(ok > 0); /* a run where nothing succeeded shows no order at all */

	/* heal: everyone converges on one log containing every op that returned OK */
	for (int i = 0; i < 5; i++) paxosrsm_set_unreliable(rc->r[i], false);
	th_part3(rc->nm, G(0, 1, 2, 3, 4), NULL, NULL);
	for (int i = 0; i < 5; i++) {
		char op[32];
		snprintf(op, sizeof op, "op heal %d", i);
		assert_int_equal(paxosrsm_add_op(rc->r[i], op, strlen(op)), DKV_OK);
	}
	WAIT_UNTIL(log_len(rc, 0) >= (size_t)(ok + 5) && all_logs_equal_len(rc), 60000);
	assert_logs_ok(rc);
	rc_free(rc);
}

/* A replica cut off while the others make progress catches up after the heal. */
static void test_paxosrsm_lagging_replica_catches_up_after_heal(void **state)
{
	(void)state;
	rcluster *rc = rc_start("lag", 3);
	th_part3(rc->nm, G(0, 1), G(2), NULL);
	const int n = 60;
	for (int k = 0; k < n; k++) {
		char op[32];
		snprintf(op, sizeof op, "op lag %d", k);
		assert_int_equal(paxosrsm_add_op(rc->r[k % 2], op, strlen(op)), DKV_OK);
	}
	assert_int_equal(log_len(rc, 2), 0);
	th_part3(rc->nm, G(0, 1, 2), NULL, NULL);
	/* an op submitted at the lagging replica returns only after everything before it applied there */
	assert_int_equal(paxosrsm_add_op(rc->r[2], "op from the laggard", 19), DKV_OK);
	assert_true(log_len(rc, 2) >= (size_t)n + 1);
	WAIT_UNTIL(all_logs_at_least(rc, (size_t)n + 1), 30000);
	assert_logs_ok(rc);
	rc_free(rc);
}

/* A replica that only hears the decisions (no op of its own) also catches up. */
static void test_paxosrsm_idle_replica_catches_up_from_later_traffic(void **state)
{
	(void)state;
	rcluster *rc = rc_start("idle", 3);
	th_part3(rc->nm, G(0, 1), G(2), NULL);
	for (int k = 0; k < 20; k++) {
		char op[32];
		snprintf(op, sizeof op, "op idle %d", k);
		assert_int_equal(paxosrsm_add_op(rc->r[0], op, strlen(op)), DKV_OK);
	}
	th_part3(rc->nm, G(0, 1, 2), NULL, NULL);
	assert_int_equal(paxosrsm_add_op(rc->r[1], "op after", 8), DKV_OK);
	WAIT_UNTIL(all_logs_at_least(rc, 21), 30000);
	assert_logs_ok(rc);
	rc_free(rc);
}

/* add_op_timeout gives up in a minority; the op is applied at most once after the heal. */
static void test_paxosrsm_add_op_timeout_expires_in_minority(void **state)
{
	(void)state;
	rcluster *rc = rc_start("tmo", 3);
	th_part3(rc->nm, G(0, 1), G(2), NULL);
	assert_int_equal(paxosrsm_add_op_timeout(rc->r[2], "op minority", 11, 300), DKV_ERR_TIMEOUT);
	th_part3(rc->nm, G(0, 1, 2), NULL, NULL);
	assert_int_equal(paxosrsm_add_op_timeout(rc->r[2], "op majority", 11, 30000), DKV_OK);
	WAIT_UNTIL(all_logs_at_least(rc, log_len(rc, 2)), 30000);
	assert_logs_ok(rc);
	rc_free(rc);
}

/* Applied instances are trimmed: Min() advances on every replica's Paxos peer. */
static void test_paxosrsm_log_is_trimmed_after_apply(void **state)
{
	(void)state;
	rcluster *rc = rc_start("trim", 3);
	for (int k = 0; k < 30; k++) {
		char op[32];
		snprintf(op, sizeof op, "op trim %d", k);
		assert_int_equal(paxosrsm_add_op(rc->r[k % 3], op, strlen(op)), DKV_OK);
	}
	WAIT_UNTIL(all_logs_at_least(rc, 30), 30000);
	/* Done values travel on later messages: a few more ops carry them around */
	for (int k = 0; k < 3; k++) assert_int_equal(paxosrsm_add_op(rc->r[k], "op carry", 8), DKV_OK);
	WAIT_UNTIL(paxos_min(paxosrsm_paxos(rc->r[0])) >= 20 && paxos_min(paxosrsm_paxos(rc->r[1])) >= 20 &&
	               paxos_min(paxosrsm_paxos(rc->r[2])) >= 20,
	           30000);
	rc_free(rc);
}

typedef struct {
	paxosrsm *r;
	int id;
	int rc;
} blocked_call;

static void *blocked_main(void *arg)
{
	blocked_call *b = arg;
	char op[32];
	snprintf(op, sizeof op, "op blocked %d", b->id);
	b->rc = paxosrsm_add_op(b->r, op, strlen(op));
	return NULL;
}

/* Kill while add_ops wait for a majority that never comes: they return KILLED; free leaks nothing. */
static void test_paxosrsm_kill_mid_agreement_returns_killed_and_frees_all(void **state)
{
	(void)state;
	int threads0 = th_thread_count();
	rcluster *rc = rc_start("kill", 3);
	th_part3(rc->nm, G(0), G(1), G(2)); /* nobody can agree */
	blocked_call b[6];
	pthread_t t[6];
	for (int i = 0; i < 6; i++) {
		b[i] = (blocked_call){.r = rc->r[i % 3], .id = i, .rc = -1};
		assert_int_equal(pthread_create(&t[i], NULL, blocked_main, &b[i]), 0);
	}
	th_sleep_ms(300);
	for (int i = 0; i < 3; i++) {
		paxosrsm_kill(rc->r[i]);
		paxosrsm_kill(rc->r[i]); /* idempotent */
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(b[i].rc, DKV_ERR_KILLED);
	}
	assert_int_equal(paxosrsm_add_op(rc->r[0], "op late", 7), DKV_ERR_KILLED);
	for (int i = 0; i < 3; i++) assert_int_equal(log_len(rc, i), 0);
	rc_free(rc);
	WAIT_UNTIL(th_thread_count() <= threads0, 10000);
	paxosrsm_free(NULL);
}

/* One cluster freed with ops in flight. */
static void free_with_ops_in_flight(const char *tag)
{
	rcluster *rc = rc_start(tag, 3);
	blocked_call b[6];
	pthread_t t[6];
	for (int i = 0; i < 6; i++) {
		b[i] = (blocked_call){.r = rc->r[i % 3], .id = i, .rc = -1};
		assert_int_equal(pthread_create(&t[i], NULL, blocked_main, &b[i]), 0);
	}
	th_sleep_ms(1); /* some ops are in flight, some applied, some queued */
	for (int i = 0; i < 3; i++) paxosrsm_kill(rc->r[i]);
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		assert_true(b[i].rc == DKV_OK || b[i].rc == DKV_ERR_KILLED);
	}
	assert_logs_ok(rc);
	rc_free(rc);
}

/* Free right after agreement work, with ops in flight at a healthy cluster, leaks nothing:
 * the live heap and the thread count come back. */
static void test_paxosrsm_free_with_ops_in_flight_leaks_nothing(void **state)
{
	(void)state;
	free_with_ops_in_flight("freefly0"); /* warm up one-time library state */
	int threads0 = th_thread_count();
	size_t heap0 = th_live_heap();
	for (int k = 1; k <= 3; k++) {
		char tag[16];
		snprintf(tag, sizeof tag, "freefly%d", k);
		free_with_ops_in_flight(tag);
	}
	WAIT_UNTIL(th_thread_count() <= threads0, 10000); /* the count lags a join */
	size_t heap1 = th_live_heap();
	printf("  live heap %zu -> %zu bytes, threads %d\n", heap0, heap1, threads0);
	assert_true(heap1 < heap0 + 256 * 1024);
}

/* A replica registered on a shared rpc server works and leaves the server alive after kill. */
static void test_paxosrsm_on_shared_server(void **state)
{
	(void)state;
	char ports[3][DKV_NAME_MAX];
	const char *peers[3];
	dkv_rpc_server *srv[3];
	rlog logs[3];
	paxosrsm *r[3];
	memset(logs, 0, sizeof logs);
	for (int i = 0; i < 3; i++) {
		peers[i] = th_port(ports[i], "rsm", "shared", i);
		pthread_mutex_init(&logs[i].mu, NULL);
	}
	for (int i = 0; i < 3; i++) {
		srv[i] = dkv_rpc_server_listen(peers[i]);
		assert_non_null(srv[i]);
		r[i] = paxosrsm_make(peers, 3, i, srv[i], apply_cb, &logs[i]);
		assert_non_null(r[i]);
	}
	assert_int_equal(paxosrsm_add_op(r[0], "op s", 4), DKV_OK);
	assert_int_equal(paxosrsm_add_op(r[1], "op t", 4), DKV_OK);
	paxos *p = paxosrsm_paxos(r[0]);
	assert_non_null(p);
	assert_true(paxos_max(p) >= 1);
	for (int i = 0; i < 3; i++) paxosrsm_free(r[i]);
	/* the shared servers outlive their replicas: each still takes requests */
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);
	for (int i = 0; i < 3; i++) {
		unsigned long before = dkv_rpc_server_count(srv[i]);
		(void)dkv_rpc_call(pool, peers[i], 0x3dd70fffu, 1, 0, (xdrproc_t)xdr_void, NULL,
		                   (xdrproc_t)xdr_void, NULL, 2000); /* a program nobody serves */
		WAIT_UNTIL(dkv_rpc_server_count(srv[i]) > before, 10000);
	}
	dkv_rpc_pool_free(pool);
	for (int i = 0; i < 3; i++) {
		dkv_rpc_server_free(srv[i]);
		for (size_t k = 0; k < logs[i].n; k++) free(logs[i].ops[k]);
		free(logs[i].ops);
		pthread_mutex_destroy(&logs[i].mu);
	}
}

/* paxosrsm_make rejects a missing apply callback. */
static void test_paxosrsm_make_rejects_bad_arguments(void **state)
{
	(void)state;
	char port[DKV_NAME_MAX];
	const char *peers[1] = {th_port(port, "rsm", "bad", 0)};
	errno = 0;
	assert_null(paxosrsm_make(peers, 1, 0, NULL, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(paxosrsm_make(peers, 1, 3, NULL, apply_cb, NULL));
}

/* ================================================================ the engine:
 * a state machine with results, sessions, snapshots and catch-up. Each
 * replica's state is the list of ops it applied (strings); apply's result is
 * "r<position>:<op>"; the snapshot is the list. */

typedef struct {
	pthread_mutex_t mu;
	char **ops;
	size_t n, cap;
	unsigned long applies;  /* sm apply calls */
	unsigned long restores;
	bool fail;              /* apply of an op starting with "fail" → DKV_ERR_NOMEM */
	unsigned long failures;
} smst;

static int push_op(smst *s, const void *op, size_t len)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->ops = realloc(s->ops, s->cap * sizeof *s->ops);
	}
	char *c = malloc(len + 1);
	memcpy(c, op, len);
	c[len] = '\0';
	s->ops[s->n++] = c;
	return 0;
}

static int sm_apply(void *ctx, const void *op, size_t len, void **res, size_t *res_len)
{
	smst *s = ctx;
	pthread_mutex_lock(&s->mu);
	if (s->fail && len >= 4 && memcmp(op, "fail", 4) == 0) {
		s->failures++;
		pthread_mutex_unlock(&s->mu);
		return DKV_ERR_NOMEM;
	}
	s->applies++;
	if (!(len >= 7 && memcmp(op, "nostore", 7) == 0)) push_op(s, op, len);
	char buf[128];
	int n = snprintf(buf, sizeof buf, "r%zu:%.*s", s->n - 1, (int)(len > 64 ? 64 : len),
	                 (const char *)op);
	pthread_mutex_unlock(&s->mu);
	*res = malloc((size_t)n);
	memcpy(*res, buf, (size_t)n);
	*res_len = (size_t)n;
	return DKV_OK;
}

static int sm_snapshot(void *ctx, void **buf, size_t *len)
{
	smst *s = ctx;
	pthread_mutex_lock(&s->mu);
	size_t total = 0;
	for (size_t i = 0; i < s->n; i++) total += strlen(s->ops[i]) + 1;
	char *b = malloc(total ? total : 1), *p = b;
	for (size_t i = 0; i < s->n; i++) {
		size_t l = strlen(s->ops[i]) + 1;
		memcpy(p, s->ops[i], l);
		p += l;
	}
	pthread_mutex_unlock(&s->mu);
	*buf = b;
	*len = total;
	return DKV_OK;
}

static int sm_restore(void *ctx, const void *buf, size_t len)
{
	smst *s = ctx;
	const char *p = buf, *end = p + len;
	if (len && end[-1] != '\0') return DKV_ERR_INVAL;
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->n; i++) free(s->ops[i]);
	s->n = 0;
	while (p < end) {
		size_t l = strlen(p);
		push_op(s, p, l);
		p += l + 1;
	}
	s->restores++;
	pthread_mutex_unlock(&s->mu);
	return DKV_OK;
}

static const paxosrsm_sm test_sm = {sm_apply, sm_snapshot, sm_restore};

typedef struct {
	int n;
	paxosrsm *r[MAXR];
	smst st[MAXR];
	th_names *nm;
} ecluster;

static void st_clear(smst *s)
{
	for (size_t i = 0; i < s->n; i++) free(s->ops[i]);
	free(s->ops);
	s->ops = NULL;
	s->n = s->cap = 0;
	s->applies = s->restores = s->failures = 0;
	s->fail = false;
}

static void ec_start_one(ecluster *ec, int i)
{
	ec->r[i] = paxosrsm_start(th_peers(ec->nm, i), ec->n, i, NULL, &test_sm, &ec->st[i], NULL);
	assert_non_null(ec->r[i]);
}

static ecluster *ec_start(const char *tag, int n)
{
	ecluster *ec = calloc(1, sizeof *ec);
	ec->n = n;
	ec->nm = th_names_new("rsme", tag, n);
	assert_non_null(ec->nm);
	for (int i = 0; i < n; i++) pthread_mutex_init(&ec->st[i].mu, NULL);
	for (int i = 0; i < n; i++) ec_start_one(ec, i);
	th_partition(ec->nm, (const int[]){0, 0, 0, 0, 0});
	return ec;
}

static void ec_free(ecluster *ec)
{
	for (int i = 0; i < ec->n; i++) paxosrsm_free(ec->r[i]);
	for (int i = 0; i < ec->n; i++) {
		st_clear(&ec->st[i]);
		pthread_mutex_destroy(&ec->st[i].mu);
	}
	th_cleanpp(ec->nm);
	th_names_free(ec->nm);
	free(ec);
}

static size_t st_len(ecluster *ec, int i)
{
	pthread_mutex_lock(&ec->st[i].mu);
	size_t n = ec->st[i].n;
	pthread_mutex_unlock(&ec->st[i].mu);
	return n;
}

/* every state a prefix of the longest, no op twice in it */
static void assert_states_ok(ecluster *ec)
{
	int longest = 0;
	for (int i = 0; i < ec->n; i++) pthread_mutex_lock(&ec->st[i].mu);
	for (int i = 1; i < ec->n; i++)
		if (ec->st[i].n > ec->st[longest].n) longest = i;
	smst *L = &ec->st[longest];
	char err[512] = "";
	for (int i = 0; i < ec->n && !err[0]; i++)
		for (size_t k = 0; k < ec->st[i].n && !err[0]; k++)
			if (strcmp(ec->st[i].ops[k], L->ops[k]) != 0)
				snprintf(err, sizeof err, "replica %d has %s at %zu, replica %d %s", i,
				         ec->st[i].ops[k], k, longest, L->ops[k]);
	for (size_t a = 0; a < L->n && !err[0]; a++)
		for (size_t b = a + 1; b < L->n && !err[0]; b++)
			if (strcmp(L->ops[a], L->ops[b]) == 0)
				snprintf(err, sizeof err, "op %s applied twice (%zu, %zu)", L->ops[a], a, b);
	for (int i = ec->n - 1; i >= 0; i--) pthread_mutex_unlock(&ec->st[i].mu);
	if (err[0]) fail_msg("%s", err);
}

static void submit_ok(paxosrsm *r, const char *op)
{
	void *res = NULL;
	size_t rl = 0;
	int rc = paxosrsm_submit(r, NULL, op, strlen(op), 10000, &res, &rl);
	if (rc != DKV_OK) fail_msg("submit(%s): %s", op, dkv_strerror(rc));
	free(res);
}

/* apply's result goes back to the call that submitted the op, on its replica:
 * "r<k>:<op>" where k is the op's position in that replica's state. */
static void test_paxosrsm_engine_results_go_to_the_submitter(void **state)
{
	(void)state;
	ecluster *ec = ec_start("res", 3);
	for (int k = 0; k < 30; k++) {
		char op[32], want[64];
		int r = k % 3;
		snprintf(op, sizeof op, "op %d", k);
		void *res = NULL;
		size_t rl = 0;
		assert_int_equal(paxosrsm_submit(ec->r[r], NULL, op, strlen(op), 10000, &res, &rl), DKV_OK);
		assert_non_null(res);
		pthread_mutex_lock(&ec->st[r].mu);
		size_t pos = SIZE_MAX;
		for (size_t i = 0; i < ec->st[r].n; i++)
			if (strcmp(ec->st[r].ops[i], op) == 0) pos = i;
		pthread_mutex_unlock(&ec->st[r].mu);
		assert_true(pos != SIZE_MAX);
		int n = snprintf(want, sizeof want, "r%zu:%s", pos, op);
		assert_int_equal(rl, (size_t)n);
		assert_memory_equal(res, want, rl);
		free(res);
	}
	assert_states_ok(ec);
	ec_free(ec);
}

/* Sessions: a retried (session, seq) returns the stored result and is not
 * applied again; a seq below the last one, an unknown session: EXPIRED. */
static void test_paxosrsm_engine_sessions_dedup_and_expire(void **state)
{
	(void)state;
	ecluster *ec = ec_start("sess", 3);
	uint64_t s1 = 0, s2 = 0;
	assert_int_equal(paxosrsm_open_session(ec->r[0], 10000, &s1), DKV_OK);
	assert_int_equal(paxosrsm_open_session(ec->r[1], 10000, &s2), DKV_OK);
	assert_true(s1 > 0 && s2 > s1); /* ids grow in opening order */
	paxosrsm_client c = {.session = s1, .seq = 1};
	void *res1 = NULL, *res2 = NULL;
	size_t l1 = 0, l2 = 0;
	assert_int_equal(paxosrsm_submit(ec->r[0], &c, "op x", 4, 10000, &res1, &l1), DKV_OK);
	/* the same (session, seq) again, through another replica */
	assert_int_equal(paxosrsm_submit(ec->r[2], &c, "op x", 4, 10000, &res2, &l2), DKV_OK);
	assert_int_equal(l1, l2);
	assert_memory_equal(res1, res2, l1);
	free(res1);
	free(res2);
	c.seq = 2;
	submit_ok(ec->r[1], "op y"); /* plain op */
	assert_int_equal(paxosrsm_submit(ec->r[1], &c, "op z", 4, 10000, NULL, NULL), DKV_OK);
	c.seq = 1; /* below the last applied: its result is gone */
	assert_int_equal(paxosrsm_submit(ec->r[1], &c, "op x", 4, 10000, NULL, NULL), DKV_ERR_EXPIRED);
	paxosrsm_client bogus = {.session = 999999999, .seq = 1};
	assert_int_equal(paxosrsm_submit(ec->r[0], &bogus, "op w", 4, 10000, NULL, NULL),
	                 DKV_ERR_EXPIRED);
	WAIT_UNTIL(st_len(ec, 0) == 3 && st_len(ec, 1) == 3 && st_len(ec, 2) == 3, 10000);
	assert_states_ok(ec);
	paxosrsm_info in;
	paxosrsm_get_info(ec->r[2], &in);
	assert_int_equal(in.sessions, 2);
	assert_int_equal(in.role, PAXOSRSM_VOTING);
	ec_free(ec);
}

typedef struct {
	paxosrsm *r;
	int n;
	uint64_t first;
	int errors;
} opener;

static void *opener_main(void *arg)
{
	opener *o = arg;
	for (int k = 0; k < o->n; k++) {
		uint64_t s = 0;
		if (paxosrsm_open_session(o->r, 30000, &s) != DKV_OK) {
			o->errors++;
			continue;
		}
		if (!o->first) o->first = s;
		paxosrsm_client c = {.session = s, .seq = 1};
		if (paxosrsm_submit(o->r, &c, "nostore", 7, 30000, NULL, NULL) != DKV_OK) o->errors++;
	}
	return NULL;
}

/* 100,000 clients, each opening a session and writing once: the table stays at
 * PAXOSRSM_SESSIONS_MAX and the heap stays flat; the oldest sessions expire
 * (EXPIRED, never a duplicate). */
static void test_paxosrsm_engine_session_memory_flat_over_100000_clients(void **state)
{
	(void)state;
	ecluster *ec = ec_start("flat", 3);
	const int nthr = 16;
	const int total = th_under_valgrind() ? 20000 : 100000;
	opener o[16];
	pthread_t t[16];
	size_t heap_mid = 0;
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < nthr; i++) {
			o[i] = (opener){.r = ec->r[i % 3], .n = total / 5 / nthr};
			assert_int_equal(pthread_create(&t[i], NULL, opener_main, &o[i]), 0);
		}
		for (int i = 0; i < nthr; i++) pthread_join(t[i], NULL);
		for (int i = 0; i < nthr; i++) assert_int_equal(o[i].errors, 0);
		if (round == 1) heap_mid = th_live_heap();
	}
	size_t heap_end = th_live_heap();
	paxosrsm_info in;
	for (int i = 0; i < 3; i++) {
		paxosrsm_get_info(ec->r[i], &in);
		assert_true(in.sessions <= PAXOSRSM_SESSIONS_MAX);
	}
	print_message("  sessions held %lu, heap after 40%%: %zu, at the end: %zu\n", in.sessions,
	              heap_mid, heap_end);
	/* from 40k to 100k clients: no growth beyond noise (4 MiB) */
	if (heap_mid) assert_true(heap_end <= heap_mid + 4u * 1024 * 1024);
	/* the very first session was evicted long ago: EXPIRED, not applied */
	paxosrsm_client c = {.session = o[0].first, .seq = 2};
	size_t before = st_len(ec, 0);
	assert_int_equal(paxosrsm_submit(ec->r[0], &c, "op late", 7, 10000, NULL, NULL),
	                 DKV_ERR_EXPIRED);
	assert_int_equal(st_len(ec, 0), before);
	ec_free(ec);
}

/*
 * Catch-up by snapshot. Replica 2 dies; the others go far past it and forget
 * their log (paxos_done after apply; Min rises to replica 2's last Done); a
 * fresh replica 2 starts empty at the same names and learns its old Done
 * from its peers, so its next instance is forgotten. It must restore a peer's
 * snapshot — never skip — and end with the identical state, nothing applied
 * twice. (The old paxosrsm skipped: "seq 0 forgotten before applied; skipping".)
 */
static void test_paxosrsm_engine_catch_up_by_snapshot_after_peers_forgot(void **state)
{
	(void)state;
	ecluster *ec = ec_start("snap", 3);
	char op[32];
	for (int k = 0; k < 20; k++) {
		snprintf(op, sizeof op, "op a%d", k);
		submit_ok(ec->r[k % 3], op);
	}
	WAIT_UNTIL(st_len(ec, 2) == 20, 10000);
	paxosrsm_free(ec->r[2]);
	ec->r[2] = NULL;
	for (int k = 0; k < 100; k++) {
		snprintf(op, sizeof op, "op b%d", k);
		submit_ok(ec->r[k % 2], op);
	}
	paxosrsm_info in0;
	paxosrsm_get_info(ec->r[0], &in0);
	assert_true(in0.paxos_min > 0); /* the peers forgot (part of) what replica 2 had applied */
	st_clear(&ec->st[2]);
	ec_start_one(ec, 2);
	th_partition(ec->nm, (const int[]){0, 0, 0}); /* the links to its new socket */
	/* it catches up by itself (traffic tells it how far the log goes) */
	for (int k = 0; k < 5; k++) {
		snprintf(op, sizeof op, "op c%d", k);
		submit_ok(ec->r[k % 2], op);
	}
	for (int tries = 0; st_len(ec, 2) != 125; tries++) {
		if (tries == 400) {
			paxosrsm_info d;
			paxosrsm_get_info(ec->r[2], &d);
			fail_msg("replica 2: %zu ops, role %d applied %d min %d max %d restored %lu",
			         st_len(ec, 2), d.role, d.applied, d.paxos_min, d.paxos_max,
			         d.snapshots_restored);
		}
		th_sleep_ms(50);
	}
	assert_states_ok(ec);
	paxosrsm_info in2;
	paxosrsm_get_info(ec->r[2], &in2);
	assert_true(in2.snapshots_restored >= 1);
	/* its peers knew it voted before: it rejoins without voting, then votes */
	for (int tries = 0; in2.role != PAXOSRSM_VOTING; tries++) {
		assert_true(tries < 2000);
		th_sleep_ms(10);
		paxosrsm_get_info(ec->r[2], &in2);
	}
	pthread_mutex_lock(&ec->st[2].mu);
	assert_true(ec->st[2].restores >= 1);
	/* only what came after the snapshot was applied here */
	assert_true(ec->st[2].applies < 125);
	pthread_mutex_unlock(&ec->st[2].mu);
	unsigned long sent = 0;
	for (int i = 0; i < 2; i++) {
		paxosrsm_get_info(ec->r[i], &in0);
		sent += in0.snapshots_sent;
	}
	assert_true(sent >= 1);
	/* and it serves: an op submitted at it is applied everywhere */
	submit_ok(ec->r[2], "op d");
	WAIT_UNTIL(st_len(ec, 0) == 126 && st_len(ec, 1) == 126, 10000);
	assert_states_ok(ec);
	ec_free(ec);
}

/* Restart (memory mode, opts->restart): the replica starts empty, reports
 * REJOINING while its Paxos peer does not vote, catches up from a snapshot
 * before applying anything, then votes again: with another replica killed,
 * it and the third make the majority. */
static void test_paxosrsm_engine_restart_catches_up_and_votes_again(void **state)
{
	(void)state;
	ecluster *ec = ec_start("rst", 3);
	char op[32];
	for (int k = 0; k < 20; k++) {
		snprintf(op, sizeof op, "op a%d", k);
		submit_ok(ec->r[k % 3], op);
	}
	WAIT_UNTIL(st_len(ec, 2) == 20, 10000);
	paxosrsm_free(ec->r[2]);
	ec->r[2] = NULL;
	for (int k = 0; k < 40; k++) {
		snprintf(op, sizeof op, "op b%d", k);
		submit_ok(ec->r[k % 2], op);
	}
	st_clear(&ec->st[2]);
	dkv_server_opts o = {.restart = true};
	ec->r[2] = paxosrsm_start(th_peers(ec->nm, 2), 3, 2, NULL, &test_sm, &ec->st[2], &o);
	assert_non_null(ec->r[2]);
	th_partition(ec->nm, (const int[]){0, 0, 0});
	paxosrsm_info in;
	paxosrsm_get_info(ec->r[2], &in);
	assert_true(in.role == PAXOSRSM_REJOINING || in.role == PAXOSRSM_CATCHING_UP ||
	            in.role == PAXOSRSM_VOTING);
	for (int tries = 0; in.role != PAXOSRSM_VOTING; tries++) {
		assert_true(tries < 3000);
		th_sleep_ms(10);
		paxosrsm_get_info(ec->r[2], &in);
	}
	assert_true(in.snapshots_restored >= 1);
	pthread_mutex_lock(&ec->st[2].mu);
	assert_true(ec->st[2].restores >= 1);
	pthread_mutex_unlock(&ec->st[2].mu);
	WAIT_UNTIL(st_len(ec, 2) == 60, 10000);
	paxosrsm_free(ec->r[1]);
	ec->r[1] = NULL;
	submit_ok(ec->r[0], "op c");
	submit_ok(ec->r[2], "op d");
	WAIT_UNTIL(st_len(ec, 0) == 62 && st_len(ec, 2) == 62, 10000);
	assert_states_ok(ec);
	ec_free(ec);
}

/*
 * The wedge of issue 12: a fresh replica whose very first proposal goes to a
 * seq its peers forgot. Its submit must complete (the old engine kept
 * inflight_seq below next_apply and never proposed again); with a session the
 * op is applied exactly once.
 */
static void test_paxosrsm_engine_first_proposal_meets_forgotten_no_wedge(void **state)
{
	(void)state;
	ecluster *ec = ec_start("wedge", 3);
	char op[32];
	for (int k = 0; k < 10; k++) {
		snprintf(op, sizeof op, "op a%d", k);
		submit_ok(ec->r[k % 3], op);
	}
	WAIT_UNTIL(st_len(ec, 2) == 10, 10000);
	uint64_t s = 0;
	assert_int_equal(paxosrsm_open_session(ec->r[0], 10000, &s), DKV_OK);
	paxosrsm_free(ec->r[2]);
	for (int k = 0; k < 30; k++) {
		snprintf(op, sizeof op, "op b%d", k);
		submit_ok(ec->r[k % 2], op);
	}
	st_clear(&ec->st[2]);
	ec_start_one(ec, 2);
	th_partition(ec->nm, (const int[]){0, 0, 0}); /* the links to its new socket */
	/* at once, before it heard anything: its proposal goes to seq 0 */
	paxosrsm_client c = {.session = s, .seq = 1};
	void *res = NULL;
	size_t rl = 0;
	int rc = paxosrsm_submit(ec->r[2], &c, "op w", 4, 20000, &res, &rl);
	if (rc != DKV_OK) {
		paxosrsm_info d;
		paxosrsm_get_info(ec->r[2], &d);
		fail_msg("submit at the fresh replica: %s (role %d applied %d min %d max %d)",
		         dkv_strerror(rc), d.role, d.applied, d.paxos_min, d.paxos_max);
	}
	assert_non_null(res);
	free(res);
	WAIT_UNTIL(st_len(ec, 0) == 41 && st_len(ec, 2) == 41, 10000);
	assert_states_ok(ec);
	ec_free(ec);
}

/* A replica whose apply fails (allocation failure) stops itself, logged; the
 * others keep going and agree; the stopped one never applies past it. */
static void test_paxosrsm_engine_apply_failure_stops_the_replica(void **state)
{
	(void)state;
	ecluster *ec = ec_start("fail", 3);
	submit_ok(ec->r[0], "op a");
	WAIT_UNTIL(st_len(ec, 1) == 1, 10000);
	pthread_mutex_lock(&ec->st[1].mu);
	ec->st[1].fail = true;
	pthread_mutex_unlock(&ec->st[1].mu);
	submit_ok(ec->r[0], "fail b");
	paxosrsm_info in;
	for (int tries = 0;; tries++) {
		paxosrsm_get_info(ec->r[1], &in);
		if (in.role == PAXOSRSM_STOPPED) break;
		assert_true(tries < 2000);
		th_sleep_ms(5);
	}
	assert_int_equal(ec->st[1].failures, 1);
	assert_int_equal(in.applied, 1);
	assert_int_equal(paxosrsm_submit(ec->r[1], NULL, "op x", 4, 1000, NULL, NULL), DKV_ERR_KILLED);
	for (int k = 0; k < 10; k++) {
		char op[32];
		snprintf(op, sizeof op, "op c%d", k);
		submit_ok(ec->r[k % 2 ? 2 : 0], op);
	}
	WAIT_UNTIL(st_len(ec, 0) == 12 && st_len(ec, 2) == 12, 10000);
	assert_int_equal(st_len(ec, 1), 1);
	assert_states_ok(ec);
	ec_free(ec);
}

/* A paxosrsm_make replica (no snapshot) that would need one stops itself
 * rather than skip. */
static void test_paxosrsm_legacy_replica_stops_instead_of_skipping(void **state)
{
	(void)state;
	rcluster *rc = rc_start("legacy", 3);
	char op[32];
	for (int k = 0; k < 10; k++) {
		snprintf(op, sizeof op, "op a%d", k);
		assert_int_equal(paxosrsm_add_op(rc->r[k % 3], op, strlen(op)), DKV_OK);
	}
	WAIT_UNTIL(log_len(rc, 2) == 10, 10000);
	paxosrsm_free(rc->r[2]);
	for (int k = 0; k < 20; k++) {
		snprintf(op, sizeof op, "op b%d", k);
		assert_int_equal(paxosrsm_add_op(rc->r[k % 2], op, strlen(op)), DKV_OK);
	}
	pthread_mutex_lock(&rc->log[2].mu);
	for (size_t k = 0; k < rc->log[2].n; k++) free(rc->log[2].ops[k]);
	rc->log[2].n = 0;
	pthread_mutex_unlock(&rc->log[2].mu);
	rc->r[2] = paxosrsm_make(th_peers(rc->nm, 2), 3, 2, NULL, apply_cb, &rc->log[2]);
	assert_non_null(rc->r[2]);
	th_partition(rc->nm, (const int[]){0, 0, 0});
	assert_int_equal(paxosrsm_add_op(rc->r[0], "op c", 4), DKV_OK);
	paxosrsm_info in;
	for (int tries = 0;; tries++) {
		paxosrsm_get_info(rc->r[2], &in);
		if (in.role == PAXOSRSM_STOPPED) break;
		assert_true(tries < 4000);
		th_sleep_ms(5);
	}
	/* it applied nothing out of order: its log is a prefix (empty or more) */
	assert_logs_ok(rc);
	rc_free(rc);
}

static void test_paxosrsm_start_rejects_bad_arguments(void **state)
{
	(void)state;
	const char *peers[] = {"/nonexistent/x"};
	errno = 0;
	assert_null(paxosrsm_start(peers, 1, 0, NULL, NULL, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	dkv_server_opts o = {.dir = "/proc/nonexistent-dkv/x"}; /* cannot be created */
	errno = 0;
	assert_null(paxosrsm_start(peers, 1, 0, NULL, &test_sm, NULL, &o));
	assert_int_not_equal(errno, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paxosrsm_op_is_applied_once_on_every_replica),
		cmocka_unit_test(test_paxosrsm_concurrent_add_op_gives_identical_order),
		cmocka_unit_test(test_paxosrsm_identical_order_on_unreliable_network),
		cmocka_unit_test(test_paxosrsm_identical_order_under_partitions),
		cmocka_unit_test(test_paxosrsm_lagging_replica_catches_up_after_heal),
		cmocka_unit_test(test_paxosrsm_idle_replica_catches_up_from_later_traffic),
		cmocka_unit_test(test_paxosrsm_add_op_timeout_expires_in_minority),
		cmocka_unit_test(test_paxosrsm_log_is_trimmed_after_apply),
		cmocka_unit_test(test_paxosrsm_kill_mid_agreement_returns_killed_and_frees_all),
		cmocka_unit_test(test_paxosrsm_free_with_ops_in_flight_leaks_nothing),
		cmocka_unit_test(test_paxosrsm_on_shared_server),
		cmocka_unit_test(test_paxosrsm_make_rejects_bad_arguments),
		cmocka_unit_test(test_paxosrsm_engine_results_go_to_the_submitter),
		cmocka_unit_test(test_paxosrsm_engine_sessions_dedup_and_expire),
		cmocka_unit_test(test_paxosrsm_engine_session_memory_flat_over_100000_clients),
		cmocka_unit_test(test_paxosrsm_engine_catch_up_by_snapshot_after_peers_forgot),
		cmocka_unit_test(test_paxosrsm_engine_restart_catches_up_and_votes_again),
		cmocka_unit_test(test_paxosrsm_engine_first_proposal_meets_forgotten_no_wedge),
		cmocka_unit_test(test_paxosrsm_engine_apply_failure_stops_the_replica),
		cmocka_unit_test(test_paxosrsm_legacy_replica_stops_instead_of_skipping),
		cmocka_unit_test(test_paxosrsm_start_rejects_bad_arguments),
	};
	return th_run_suite("paxosrsm", tests);
}
