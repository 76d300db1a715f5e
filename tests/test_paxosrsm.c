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
	};
	return th_run_suite("paxosrsm", tests);
}
