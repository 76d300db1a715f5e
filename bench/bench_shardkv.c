/*
 * bench/bench_shardkv.c — shardkv throughput and latency, beside one kvpaxos
 * group measured in the same run.
 *
 * Cluster: 3 shard masters and 3 groups × 3 replicas, all in this process on
 * unix sockets, reliable network; all three groups joined (shards 4/3/3).
 * 32 clerks (one thread each) run back-to-back calls, half Put and half Get of
 * random keys ("<d>-<n>": every shard gets load), for DKV_BENCH_SECONDS
 * (default 3) per row:
 *   steady        no reconfiguration;
 *   moving        the same while a mover thread moves a random shard to a
 *                 random group every 100 ms (the shard really migrates);
 *   kvpaxos 1 group  the same workload against one kvpaxos group of 3
 *                 replicas (the yardstick for the steady row), then
 *                 with 11 clerks: the load one shardkv group gets.
 * Each row prints ops/s, p50 and p99 latency (µs) and failed calls.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv/kvpaxos.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"
#include "bench_out.h"

#define NSM 3
#define NG 3
#define NR 3
#define NCLERKS 32
#define NKEYS 200

typedef struct {
	int kind; /* 0 shardkv, 1 kvpaxos */
	const char *const *names;
	int nnames;
	int id;
	atomic_int *stop;
	unsigned *lat;
	size_t nlat, cap;
	unsigned long errors;
} worker;

static int cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

static void record(worker *w, unsigned us)
{
	if (w->nlat == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 4096;
		unsigned *nl = realloc(w->lat, nc * sizeof *nl);
		if (nl == NULL)
			return;
		w->lat = nl;
		w->cap = nc;
	}
	w->lat[w->nlat++] = us;
}

static void *worker_main(void *p)
{
	worker *w = p;
	shardkv_clerk *sk = NULL;
	kvpaxos_clerk *kp = NULL;
	if (w->kind == 0)
		sk = shardkv_clerk_new(w->names, w->nnames);
	else
		kp = kvpaxos_clerk_new(w->names, w->nnames);
	if (sk == NULL && kp == NULL)
		return NULL;
	if (sk)
		shardkv_clerk_set_timeout(sk, 10000);
	else
		kvpaxos_clerk_set_timeout(kp, 10000);
	dkv_rng rng;
	dkv_rng_seed(&rng, dkv_random_seed());
	char key[32], val[32];
	while (!atomic_load(&w->stop[0])) {
		unsigned k = (unsigned)dkv_rng_below(&rng, NKEYS);
		snprintf(key, sizeof key, "%u-%u", k % 10, k);
		bool put = dkv_rng_below(&rng, 2) == 0;
		snprintf(val, sizeof val, "v%d-%llu", w->id, (unsigned long long)dkv_rng_next(&rng));
		uint64_t t0 = dkv_now_us();
		int rc;
		char *v = NULL;
		if (sk)
			rc = put ? shardkv_clerk_put(sk, key, val) : shardkv_clerk_get(sk, key, &v);
		else
			rc = put ? kvpaxos_clerk_put(kp, key, val) : kvpaxos_clerk_get(kp, key, &v);
		free(v);
		if (rc != DKV_OK) {
			w->errors++;
			continue;
		}
		record(w, (unsigned)(dkv_now_us() - t0));
	}
	shardkv_clerk_free(sk);
	kvpaxos_clerk_free(kp);
	return NULL;
}

typedef struct {
	shardmaster_clerk *mck;
	atomic_int *stop;
	unsigned long moves;
} mover;

static void *mover_main(void *p)
{
	mover *m = p;
	dkv_rng rng;
	dkv_rng_seed(&rng, dkv_random_seed());
	while (!atomic_load(m->stop)) {
		int shard = (int)dkv_rng_below(&rng, SHARDMASTER_NSHARDS);
		int64_t gid = 100 + (int64_t)dkv_rng_below(&rng, NG);
		if (shardmaster_clerk_move(m->mck, shard, gid) == DKV_OK)
			m->moves++;
		dkv_sleep_ms(100);
	}
	return NULL;
}

static unsigned long failed_calls; /* over every row: any makes the run fail */

static const char *row_mode = "memory"; /* "durable" while the groups have data directories */

static void run_row(const char *label, int kind, const char *const *names, int nnames,
                    shardmaster_clerk *mck, unsigned secs, int nclerks)
{
	worker w[NCLERKS];
	pthread_t th[NCLERKS];
	atomic_int stop = 0;
	memset(w, 0, sizeof w);
	for (int i = 0; i < nclerks; i++) {
		w[i] = (worker){ .kind = kind, .names = names, .nnames = nnames, .id = i, .stop = &stop };
		if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
			fprintf(stderr, "pthread_create failed\n");
			exit(1);
		}
	}
	mover m = { mck, &stop, 0 };
	pthread_t mth;
	bool moving = mck != NULL;
	if (moving && pthread_create(&mth, NULL, mover_main, &m) != 0)
		moving = false;
	uint64_t t0 = dkv_now_ms();
	dkv_sleep_ms(secs * 1000);
	atomic_store(&stop, 1);
	for (int i = 0; i < nclerks; i++)
		pthread_join(th[i], NULL);
	uint64_t dt = dkv_now_ms() - t0;
	if (moving)
		pthread_join(mth, NULL);

	size_t n = 0;
	unsigned long errors = 0;
	for (int i = 0; i < nclerks; i++) {
		n += w[i].nlat;
		errors += w[i].errors;
	}
	unsigned *all = malloc((n ? n : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < nclerks; i++) {
		if (all != NULL)
			memcpy(all + k, w[i].lat, w[i].nlat * sizeof *all);
		k += w[i].nlat;
		free(w[i].lat);
	}
	unsigned p50 = 0, p99 = 0;
	if (all != NULL && n > 0) {
		qsort(all, n, sizeof *all, cmp_uint);
		p50 = all[n / 2];
		p99 = all[(n * 99) / 100];
	}
	free(all);
	printf("%-22s %6d %10.0f %10u %10u %8lu", label, nclerks, (double)n * 1000.0 / (double)dt,
	       p50, p99, errors);
	failed_calls += errors;
	if (moving)
		printf("   (%lu moves)", m.moves);
	printf("\n");
	fflush(stdout);
	bench_out("bench=shardkv\trow=%s\top=Put/Get\tmode=%s\tclients=%d\tops_s=%.0f\t"
	          "p50_us=%u\tp99_us=%u\terrors=%lu",
	          label, row_mode, nclerks, (double)n * 1000.0 / (double)dt, p50, p99, errors);
}

static char *mkname(const char *dir, const char *what, int i)
{
	char *s = malloc(DKV_NAME_MAX);
	if (s == NULL)
		exit(1);
	snprintf(s, DKV_NAME_MAX, "%s/bskv-%d-%s-%d", dir, (int)getpid(), what, i);
	return s;
}

/*
 * run_cluster: 3 shard masters and NG groups of NR shardkv replicas (each
 * replica on its own data directory under `datadir` when it is not NULL),
 * the steady row and, when `moving`, the row with shard moves.
 */
static int run_cluster(const char *dir, const char *datadir, bool moving, unsigned secs)
{
	char *mnames[NSM];
	shardmaster_server *sm[NSM];
	for (int i = 0; i < NSM; i++)
		mnames[i] = mkname(dir, "m", i);
	for (int i = 0; i < NSM; i++)
		if ((sm[i] = shardmaster_server_start((const char *const *)mnames, NSM, i)) == NULL) {
			fprintf(stderr, "shardmaster_server_start: %s\n", strerror(errno));
			return 1;
		}
	char *gnames[NG][NR];
	char ddirs[NG][NR][DKV_NAME_MAX + 32];
	shardkv_server *s[NG][NR];
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++)
			gnames[g][j] = mkname(dir, "s", g * NR + j);
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++) {
			dkv_server_opts o = {0};
			if (datadir != NULL) {
				snprintf(ddirs[g][j], sizeof ddirs[g][j], "%s/g%d-r%d", datadir, g, j);
				o.dir = ddirs[g][j];
			}
			if ((s[g][j] = shardkv_server_start_opts(100 + g, (const char *const *)mnames, NSM,
			                                         (const char *const *)gnames[g], NR, j,
			                                         &o)) == NULL) {
				fprintf(stderr, "shardkv_server_start_opts: %s\n", strerror(errno));
				return 1;
			}
		}
	shardmaster_clerk *mck = shardmaster_clerk_new((const char *const *)mnames, NSM);
	for (int g = 0; g < NG; g++)
		if (shardmaster_clerk_join(mck, 100 + g, (const char *const *)gnames[g], NR) != DKV_OK) {
			fprintf(stderr, "join failed\n");
			return 1;
		}
	dkv_sleep_ms(1500); /* let the groups take their shards */

	row_mode = datadir != NULL ? "durable" : "memory";
	run_row(datadir != NULL ? "shardkv durable steady" : "shardkv steady", 0,
	        (const char *const *)mnames, NSM, NULL, secs, NCLERKS);
	if (moving)
		run_row("shardkv moving", 0, (const char *const *)mnames, NSM, mck, secs, NCLERKS);
	row_mode = "memory";

	shardmaster_clerk_free(mck);
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++)
			shardkv_server_kill(s[g][j]);
	for (int g = 0; g < NG; g++)
		for (int j = 0; j < NR; j++) {
			shardkv_server_free(s[g][j]);
			unlink(gnames[g][j]);
			free(gnames[g][j]);
		}
	for (int i = 0; i < NSM; i++) {
		shardmaster_server_free(sm[i]);
		unlink(mnames[i]);
		free(mnames[i]);
	}
	return 0;
}

int main(void)
{
	unsigned secs = 3;
	const char *e = getenv("DKV_BENCH_SECONDS");
	if (e != NULL && atoi(e) > 0)
		secs = (unsigned)atoi(e);
	char dir[64];
	snprintf(dir, sizeof dir, "/var/tmp/dkv-%d", (int)getuid());
	mkdir(dir, 0777);

	printf("shardkv: 3 groups x 3 replicas, 3 shard masters; Put/Get 50/50 over %d keys, %u s per row\n",
	       NKEYS, secs);
	printf("%-22s %6s %10s %10s %10s %8s\n", "row", "clerks", "ops/s", "p50 us", "p99 us",
	       "errors");
	if (run_cluster(dir, NULL, true, secs) != 0)
		return 1;
	/* The same groups with data directories (group-committed fdatasync). */
	char datadir[DKV_NAME_MAX];
	snprintf(datadir, sizeof datadir, "%s/bskv-%d-data", dir, (int)getpid());
	if (mkdir(datadir, 0700) != 0) {
		fprintf(stderr, "mkdir %s: %s\n", datadir, strerror(errno));
		return 1;
	}
	int rc = run_cluster(dir, datadir, false, secs);
	char cmd[DKV_NAME_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", datadir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_shardkv: could not remove %s\n", datadir);
	if (rc != 0)
		return 1;

	/* The yardstick: one kvpaxos group, same workload, same run. */
	char *knames[NR];
	kvpaxos_server *kv[NR];
	for (int i = 0; i < NR; i++)
		knames[i] = mkname(dir, "kv", i);
	for (int i = 0; i < NR; i++)
		if ((kv[i] = kvpaxos_server_start((const char *const *)knames, NR, i)) == NULL) {
			fprintf(stderr, "kvpaxos_server_start: %s\n", strerror(errno));
			return 1;
		}
	run_row("kvpaxos 1 group", 1, (const char *const *)knames, NR, NULL, secs, NCLERKS);
	/* What one shardkv group sees of the 32 clerks: a third of them. */
	run_row("kvpaxos 1 group, 1/3", 1, (const char *const *)knames, NR, NULL, secs,
	        (NCLERKS + NG - 1) / NG);
	for (int i = 0; i < NR; i++)
		kvpaxos_server_kill(kv[i]);
	for (int i = 0; i < NR; i++) {
		kvpaxos_server_free(kv[i]);
		unlink(knames[i]);
		free(knames[i]);
	}
	if (failed_calls > 0) {
		fprintf(stderr, "bench_shardkv: FAILED: %lu calls failed\n", failed_calls);
		return 1;
	}
	return 0;
}
