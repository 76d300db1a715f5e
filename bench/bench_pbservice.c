/*
 * bench/bench_pbservice.c — Put and Get throughput and latency of pbservice.
 *
 * One process: a view service, a primary and a backup on unix sockets under
 * /var/tmp/dkv-<uid>/. First a null RPC (procedure 0 of the pbservice program,
 * answered by libdkvrpc on a cached connection) measures the transport floor of
 * this run; then, for 1, 8 and 32 clerks (one thread each), Puts and then Gets
 * for DKV_BENCH_SECONDS (default 1.5) each. Each Put or Get costs two round trips:
 * clerk→primary and primary→backup. Prints ops/s, p50 and p99, and the ratio of
 * one clerk's Put p50 to the null-RPC p50 (target: ≤ 3).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv/pbservice.h"
#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "pb_prot.h"
#include "../viewservice/vs_server_internal.h"
#include "bench_out.h"

typedef struct {
	uint64_t *lat; /* microseconds */
	size_t n, cap;
} lat_vec;

static void lat_push(lat_vec *v, uint64_t us)
{
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 4096;
		v->lat = realloc(v->lat, v->cap * sizeof(*v->lat));
		if (v->lat == NULL) {
			perror("realloc");
			exit(1);
		}
	}
	v->lat[v->n++] = us;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

typedef struct {
	double ops_per_s;
	double p50_us, p99_us;
	unsigned long errors;
} result;

static void summarize(lat_vec *all, double secs, unsigned long errors, result *r)
{
	qsort(all->lat, all->n, sizeof(uint64_t), cmp_u64);
	r->ops_per_s = (double)all->n / secs;
	r->p50_us = all->n ? (double)all->lat[all->n / 2] : 0;
	r->p99_us = all->n ? (double)all->lat[(size_t)((double)all->n * 0.99)] : 0;
	r->errors = errors;
}

typedef struct {
	const char *vsh;
	const char *primary;
	int id;
	int op; /* 0 null, 1 put, 2 get */
	atomic_bool *go, *stop;
	lat_vec lat;
	unsigned long errors;
} worker;

static void *worker_main(void *arg)
{
	worker *w = arg;
	pbservice_clerk *ck = NULL;
	dkv_rpc_pool *pool = NULL;
	if (w->op == 0)
		pool = dkv_rpc_pool_new();
	else
		ck = pbservice_clerk_new(w->vsh, "bench");
	char key[32], val[32];
	snprintf(key, sizeof key, "bench-key-%d", w->id);
	/* Warm up: learn the primary, open the connections, create the key. */
	if (ck != NULL)
		pbservice_clerk_put(ck, key, "v");
	while (!atomic_load(w->go))
		dkv_sleep_ms(1);
	unsigned long i = 0;
	while (!atomic_load(w->stop)) {
		uint64_t t0 = dkv_now_us();
		int rc;
		if (w->op == 0) {
			char dummy = 0;
			rc = dkv_rpc_call(pool, w->primary, PB_PROG, PB_VERS, 0, (xdrproc_t)xdr_void, NULL,
			                  (xdrproc_t)xdr_void, &dummy, 5000);
		} else if (w->op == 1) {
			snprintf(val, sizeof val, "%lu", i);
			rc = pbservice_clerk_put(ck, key, val);
		} else {
			char *v = NULL;
			rc = pbservice_clerk_get(ck, key, &v);
			free(v);
		}
		uint64_t t1 = dkv_now_us();
		if (rc == DKV_OK)
			lat_push(&w->lat, t1 - t0);
		else
			w->errors++;
		i++;
	}
	pbservice_clerk_free(ck);
	dkv_rpc_pool_free(pool);
	return NULL;
}

static unsigned long failed_calls; /* over every row: any makes the run fail */

static void run(const char *vsh, const char *primary, int nthreads, int op, double secs,
                result *r)
{
	atomic_bool go, stop;
	atomic_init(&go, false);
	atomic_init(&stop, false);
	worker *ws = calloc((size_t)nthreads, sizeof(*ws));
	pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
	for (int i = 0; i < nthreads; i++) {
		ws[i] = (worker){.vsh = vsh, .primary = primary, .id = i, .op = op, .go = &go, .stop = &stop};
		pthread_create(&th[i], NULL, worker_main, &ws[i]);
	}
	dkv_sleep_ms(200); /* warm-up */
	uint64_t t0 = dkv_now_us();
	atomic_store(&go, true);
	dkv_sleep_ms((unsigned)(secs * 1000));
	atomic_store(&stop, true);
	uint64_t t1 = dkv_now_us();
	lat_vec all = {0};
	unsigned long errors = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		for (size_t j = 0; j < ws[i].lat.n; j++)
			lat_push(&all, ws[i].lat.lat[j]);
		errors += ws[i].errors;
		free(ws[i].lat.lat);
	}
	summarize(&all, (double)(t1 - t0) / 1e6, errors, r);
	failed_calls += errors;
	free(all.lat);
	free(ws);
	free(th);
}

int main(void)
{
	double secs = 1.5;
	const char *e = getenv("DKV_BENCH_SECONDS");
	if (e != NULL && atof(e) > 0)
		secs = atof(e);
	char dir[128], vsh[DKV_NAME_MAX], p1[DKV_NAME_MAX], p2[DKV_NAME_MAX];
	snprintf(dir, sizeof dir, "/var/tmp/dkv-%u", (unsigned)getuid());
	mkdir(dir, 0777);
	snprintf(vsh, sizeof vsh, "%s/bench-pb-%d-v", dir, (int)getpid());
	snprintf(p1, sizeof p1, "%s/bench-pb-%d-1", dir, (int)getpid());
	snprintf(p2, sizeof p2, "%s/bench-pb-%d-2", dir, (int)getpid());

	viewservice_server *vs = viewservice_server_start(vsh);
	pbservice_server *s1 = vs ? pbservice_server_start(vsh, p1) : NULL;
	if (s1 == NULL) {
		fprintf(stderr, "bench_pbservice: start: %s\n", strerror(errno));
		return 1;
	}
	/* s1 first primary, then s2 its backup, acknowledged (state transferred). */
	viewservice_view v;
	bool acked = false;
	do {
		dkv_sleep_ms(10);
		viewservice_server_peek(vs, &v, &acked);
	} while (!(acked && strcmp(v.primary, p1) == 0));
	pbservice_server *s2 = pbservice_server_start(vsh, p2);
	if (s2 == NULL) {
		fprintf(stderr, "bench_pbservice: start: %s\n", strerror(errno));
		return 1;
	}
	uint64_t deadline = dkv_now_ms() + 10000;
	do {
		dkv_sleep_ms(10);
		viewservice_server_peek(vs, &v, &acked);
	} while (!(acked && strcmp(v.backup, p2) == 0) && dkv_now_ms() < deadline);
	if (strcmp(v.backup, p2) != 0) {
		fprintf(stderr, "bench_pbservice: the backup never joined\n");
		return 1;
	}

	printf("pbservice: primary + backup in one process, unix sockets, %.1f s per row\n", secs);
	printf("%-22s %8s %12s %10s %10s %8s\n", "operation", "clerks", "ops/s", "p50 us", "p99 us",
	       "errors");
	result null1, r;
	run(vsh, p1, 1, 0, secs, &null1);
	printf("%-22s %8d %12.0f %10.1f %10.1f %8lu\n", "null RPC (transport)", 1, null1.ops_per_s,
	       null1.p50_us, null1.p99_us, null1.errors);
	bench_out("bench=pbservice\trow=null RPC\tclients=1\tops_s=%.0f\tp50_us=%.1f\tp99_us=%.1f",
	          null1.ops_per_s, null1.p50_us, null1.p99_us);
	double put1_p50 = 0;
	const int clerks[] = {1, 8, 32};
	for (size_t c = 0; c < sizeof clerks / sizeof clerks[0]; c++) {
		for (int op = 1; op <= 2; op++) {
			run(vsh, p1, clerks[c], op, secs, &r);
			printf("%-22s %8d %12.0f %10.1f %10.1f %8lu\n", op == 1 ? "Put" : "Get", clerks[c],
			       r.ops_per_s, r.p50_us, r.p99_us, r.errors);
			bench_out("bench=pbservice\top=%s\tmode=memory\tclients=%d\tops_s=%.0f\t"
			          "p50_us=%.1f\tp99_us=%.1f\terrors=%lu",
			          op == 1 ? "Put" : "Get", clerks[c], r.ops_per_s, r.p50_us, r.p99_us, r.errors);
			if (op == 1 && clerks[c] == 1)
				put1_p50 = r.p50_us;
		}
	}
	if (null1.p50_us > 0)
		printf("one clerk's Put p50 = %.2f x null-RPC p50 (target <= 3)\n",
		       put1_p50 / null1.p50_us);

	pbservice_server_free(s2);
	pbservice_server_free(s1);
	viewservice_server_free(vs);
	unlink(vsh);
	unlink(p1);
	unlink(p2);
	if (failed_calls > 0) {
		fprintf(stderr, "bench_pbservice: FAILED: %lu calls failed\n", failed_calls);
		return 1;
	}
	return 0;
}
