/*
 * bench/bench_paxos.c — Paxos and PaxosRSM among 3 in-process peers on unix
 * sockets, beside the null-RPC cost measured in the same run.
 *
 * Rows:
 *   null RPC          one thread, pooled connection, procedure 0 of the Paxos
 *                     program on a peer: the transport floor (p50 µs).
 *   paxos sequential  peer 0 proposes seq after seq, waiting for each decision
 *                     at the proposer (signalled by the internal decide hook,
 *                     no polling): agreements/s, p50/p99 latency, RPCs served
 *                     per agreement (sum of paxos_rpc_count), and the latency
 *                     in null-RPC round trips.
 *   paxos 10 in flight  the same, keeping 10 instances in flight.
 *   paxos 10 in flight seq%3  10 in flight, instance seq proposed on peer
 *                     seq % 3 (every peer proposes: duels unless non-leaders
 *                     forward to the stable proposer); decisions counted at
 *                     peer 0.
 *   paxosrsm add_op   one caller, then 10 concurrent callers, on replica 0:
 *                     ops/s, p50/p99 latency.
 * DKV_BENCH_SECONDS (default 2) bounds each row.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dkv/paxos.h"
#include "dkv/paxosrsm.h"
#include "dkv_internal.h"
#include "../paxos/paxos_internal.h"

#define NP 3

static double bench_seconds(void)
{
	const char *s = getenv("DKV_BENCH_SECONDS");
	double d = s ? atof(s) : 2.0;
	return d > 0 ? d : 2.0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
	if (n == 0) return 0;
	qsort(v, n, sizeof *v, cmp_u64);
	size_t i = (size_t)(p * (double)(n - 1));
	return v[i];
}

/* ---------------------------------------------------------------- decisions */

typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned long decided; /* decisions learned at peer 0 */
} watch;

static void on_decide(void *ctx, int seq)
{
	watch *w = ctx;
	(void)seq;
	pthread_mutex_lock(&w->mu);
	w->decided++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static char names[NP][DKV_NAME_MAX];
static const char *peers[NP];

static void make_names(const char *tag)
{
	for (int i = 0; i < NP; i++) {
		snprintf(names[i], sizeof names[i], "/var/tmp/dkv-bench-%d-%s-%d", (int)getpid(), tag, i);
		peers[i] = names[i];
	}
}

static void unlink_names(void)
{
	for (int i = 0; i < NP; i++) unlink(names[i]);
}

static double null_rpc_us(void)
{
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	uint64_t *lat = malloc(200000 * sizeof *lat);
	size_t n = 0;
	uint64_t end = dkv_now_us() + (uint64_t)(bench_seconds() * 1e6 / 2);
	while (dkv_now_us() < end && n < 200000) {
		uint64_t t0 = dkv_now_us();
		if (dkv_rpc_call(pool, peers[1], PX_PROG, PX_VERS, NULLPROC, (xdrproc_t)xdr_void, NULL,
		                 (xdrproc_t)xdr_void, NULL, 1000) == DKV_OK)
			lat[n++] = dkv_now_us() - t0;
	}
	double p50 = (double)pct(lat, n, 0.5);
	printf("%-24s %10.0f calls/s  p50 %7.1f us  p99 %7.1f us\n", "null RPC (pooled)",
	       (double)n / (bench_seconds() / 2), p50, (double)pct(lat, n, 0.99));
	free(lat);
	dkv_rpc_pool_free(pool);
	return p50;
}

static void bench_paxos(int inflight, bool rr, double null_us)
{
	char tag[16];
	snprintf(tag, sizeof tag, "px%d%s", inflight, rr ? "r" : "");
	make_names(tag);
	watch w = {.decided = 0};
	pthread_mutex_init(&w.mu, NULL);
	dkv_cond_init(&w.cv);
	paxos *px[NP];
	for (int i = 0; i < NP; i++) {
		px[i] = i == 0 ? px_make(peers, NP, 0, NULL, on_decide, &w) : paxos_make(peers, NP, i, NULL);
		if (!px[i]) {
			perror("paxos_make");
			exit(1);
		}
	}
	unsigned long rpc0 = 0;
	for (int i = 0; i < NP; i++) rpc0 += paxos_rpc_count(px[i]);

	size_t cap = 1 << 20, n = 0;
	uint64_t *lat = malloc(cap * sizeof *lat);
	uint64_t *t_start = calloc(cap, sizeof *t_start);
	int next = 0;
	uint64_t t0 = dkv_now_us(), end = t0 + (uint64_t)(bench_seconds() * 1e6);
	char val[32];
	/* fill the window */
	for (; next < inflight; next++) {
		snprintf(val, sizeof val, "v%d", next);
		t_start[next] = dkv_now_us();
		paxos_start(px[rr ? next % NP : 0], next, val, strlen(val));
	}
	int applied = 0; /* seqs below this are accounted for */
	unsigned long seen = 0;
	pthread_mutex_lock(&w.mu);
	while (dkv_now_us() < end && (size_t)next < cap) {
		while (w.decided == seen) dkv_cond_wait_ms(&w.cv, &w.mu, 100);
		seen = w.decided;
		pthread_mutex_unlock(&w.mu);
		while (applied < next && paxos_status(px[0], applied, NULL, NULL) == PAXOS_DECIDED) {
			lat[n++] = dkv_now_us() - t_start[applied];
			applied++;
			paxos_done(px[0], applied - 1);
			snprintf(val, sizeof val, "v%d", next);
			t_start[next] = dkv_now_us();
			paxos_start(px[rr ? next % NP : 0], next, val, strlen(val));
			next++;
		}
		pthread_mutex_lock(&w.mu);
	}
	pthread_mutex_unlock(&w.mu);
	double secs = (double)(dkv_now_us() - t0) / 1e6;
	/* let the decided broadcasts land before counting RPCs */
	dkv_sleep_ms(200);
	unsigned long rpcs = 0;
	for (int i = 0; i < NP; i++) rpcs += paxos_rpc_count(px[i]);
	rpcs -= rpc0;
	for (int i = 0; i < NP; i++) paxos_done(px[i], applied - 1);
	uint64_t p50 = pct(lat, n, 0.5), p99 = pct(lat, n, 0.99);
	char label[64];
	if (inflight == 1)
		snprintf(label, sizeof label, "paxos sequential%s", rr ? " seq%3" : "");
	else
		snprintf(label, sizeof label, "paxos %d in flight%s", inflight, rr ? " seq%3" : "");
	printf("%-24s %10.0f agreements/s  p50 %7llu us  p99 %7llu us  %.2f RPCs/agreement",
	       label, (double)n / secs, (unsigned long long)p50, (unsigned long long)p99,
	       n ? (double)rpcs / (double)n : 0.0);
	if (inflight == 1 && null_us > 0) printf("  (p50 = %.1f null RPCs)", (double)p50 / null_us);
	printf("\n");
	for (int i = 0; i < NP; i++) paxos_free(px[i]);
	free(lat);
	free(t_start);
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	unlink_names();
}

/* ---------------------------------------------------------------- paxosrsm */

static void noop_apply(void *ctx, const void *op, size_t len)
{
	(void)op;
	(void)len;
	__atomic_add_fetch((unsigned long *)ctx, 1, __ATOMIC_RELAXED);
}

typedef struct {
	paxosrsm *r;
	uint64_t end;
	uint64_t *lat;
	size_t n, cap;
} rsm_worker;

static void *rsm_worker_main(void *arg)
{
	rsm_worker *w = arg;
	char op[64];
	while (dkv_now_us() < w->end && w->n < w->cap) {
		snprintf(op, sizeof op, "op %zu", w->n);
		uint64_t t0 = dkv_now_us();
		if (paxosrsm_add_op(w->r, op, strlen(op)) != DKV_OK) break;
		w->lat[w->n++] = dkv_now_us() - t0;
	}
	return NULL;
}

static void bench_rsm(int nthreads, double null_us)
{
	char tag[16];
	snprintf(tag, sizeof tag, "rsm%d", nthreads);
	make_names(tag);
	unsigned long applied[NP] = {0};
	paxosrsm *r[NP];
	for (int i = 0; i < NP; i++) {
		r[i] = paxosrsm_make(peers, NP, i, NULL, noop_apply, &applied[i]);
		if (!r[i]) {
			perror("paxosrsm_make");
			exit(1);
		}
	}
	rsm_worker ws[16];
	pthread_t t[16];
	uint64_t t0 = dkv_now_us(), end = t0 + (uint64_t)(bench_seconds() * 1e6);
	for (int i = 0; i < nthreads; i++) {
		ws[i] = (rsm_worker){.r = r[0], .end = end, .cap = 1 << 18};
		ws[i].lat = malloc(ws[i].cap * sizeof *ws[i].lat);
		pthread_create(&t[i], NULL, rsm_worker_main, &ws[i]);
	}
	size_t total = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(t[i], NULL);
		total += ws[i].n;
	}
	double secs = (double)(dkv_now_us() - t0) / 1e6;
	uint64_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < nthreads; i++) {
		memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
		k += ws[i].n;
		free(ws[i].lat);
	}
	unsigned long inst = (unsigned long)paxos_max(paxosrsm_paxos(r[0])) + 1;
	uint64_t p50 = pct(all, total, 0.5), p99 = pct(all, total, 0.99);
	char label[64];
	snprintf(label, sizeof label, "paxosrsm add_op x%d", nthreads);
	printf("%-24s %10.0f ops/s  p50 %7llu us  p99 %7llu us  %.1f ops/instance",
	       label, (double)total / secs, (unsigned long long)p50, (unsigned long long)p99,
	       inst ? (double)total / (double)inst : 0.0);
	if (null_us > 0) printf("  (p50 = %.1f null RPCs)", (double)p50 / null_us);
	printf("\n");
	free(all);
	for (int i = 0; i < NP; i++) paxosrsm_free(r[i]);
	unlink_names();
}

int main(void)
{
	dkv_lib_init();
	printf("bench_paxos: 3 peers in one process, unix sockets, %.1f s per row\n", bench_seconds());
	double null_us = 0;
	make_names("null");
	{
		paxos *px[NP];
		for (int i = 0; i < NP; i++) px[i] = paxos_make(peers, NP, i, NULL);
		null_us = null_rpc_us();
		for (int i = 0; i < NP; i++) paxos_free(px[i]);
		unlink_names();
	}
	bench_paxos(1, false, null_us);
	bench_paxos(10, false, null_us);
	bench_paxos(10, true, null_us);
	bench_rsm(1, null_us);
	bench_rsm(10, null_us);
	return 0;
}
