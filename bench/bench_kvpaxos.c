/*
 * bench/bench_kvpaxos.c — kvpaxos throughput and latency.
 *
 * Three replicas in this process on unix sockets, reliable network. For each
 * operation (Put, Append, Get) and each number of clerks (1, 8, 32, one thread
 * each, all starting at replica 0), the clerks run back-to-back calls for a
 * fixed time; the table gives ops/s and p50/p99 latency, and p50 in units of
 * the null-RPC round trip measured just before the row (a cached connection
 * to replica 0, procedure 0; the machine is shared, so load varies). Targets (DESIGN.md): one clerk's Put p50 ≤ 6 null
 * RTTs; ≥ 10,000 ops/s with 32 clerks. Also printed: client ops per Paxos log
 * entry (batching) on replica 0, and the latency of a bare paxosrsm add_op
 * (three replicas, one caller) for the breakdown of a Put.
 *
 * Durable mode (issue 13): the same rows with every replica on a data
 * directory (/var/tmp/dkv-<uid>/bench-kvdisk-*, fdatasync on), after the
 * fdatasync latency of that file system (4 KiB write + fdatasync, median);
 * then the restart of one replica holding DKV_BENCH_RESTART_KEYS keys
 * (default 100,000) to serving (start on its directory until its first Get
 * answered through it alone), and the disk bytes per live byte once idle.
 * Targets: durable 1-clerk Put p50 <= memory p50 + 1.5 x fdatasync; durable
 * 32-clerk Put throughput >= 50% of memory; restart <= 1 s for 100,000 keys.
 *
 * Environment: DKV_BENCH_SECONDS (default 2) per row; DKV_BENCH_DURABLE=0
 * skips the durable rows.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv/kvpaxos.h"
#include "dkv/paxosrsm.h"
#include "dkv_internal.h"
#include "kv_prot.h"
#include "../kvpaxos/kv_internal.h"
#include "bench_out.h"

#define NREP 3
#define MAX_CLERKS 32
#define MAX_SAMPLES 2000000

typedef struct {
	const char *const *servers;
	int kind; /* 0 put, 1 append, 2 get */
	int id;
	volatile int *stop;
	unsigned *lat_us; /* samples */
	size_t nlat, cap;
	unsigned long errors;
} worker;

static int cmp_uint(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

static void *worker_main(void *p)
{
	worker *w = p;
	kvpaxos_clerk *ck = kvpaxos_clerk_new(w->servers, NREP);
	if (ck == NULL)
		return NULL;
	char key[32];
	snprintf(key, sizeof key, "key-%d", w->id);
	unsigned long n = 0;
	/* Appends to a per-clerk key would grow without bound; restart it now and then. */
	while (!*w->stop) {
		uint64_t t0 = dkv_now_us();
		int rc;
		char val[32];
		snprintf(val, sizeof val, "v%lu", n);
		if (w->kind == 0) {
			rc = kvpaxos_clerk_put(ck, key, val);
		} else if (w->kind == 1) {
			rc = (n % 1000 == 0) ? kvpaxos_clerk_put(ck, key, "")
			                     : kvpaxos_clerk_append(ck, key, "x");
		} else {
			char *v = NULL;
			rc = kvpaxos_clerk_get(ck, key, &v);
			free(v);
		}
		uint64_t dt = dkv_now_us() - t0;
		if (rc != DKV_OK)
			w->errors++;
		else if (w->nlat < w->cap)
			w->lat_us[w->nlat++] = (unsigned)dt;
		n++;
	}
	kvpaxos_clerk_free(ck);
	return NULL;
}

/* null_rtt_us: median of `n` null RPCs to `name` on a cached connection. */
static double null_rtt_us(const char *name, int n)
{
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	unsigned *lat = calloc((size_t)n, sizeof *lat);
	int ok = 0;
	for (int i = 0; pool != NULL && lat != NULL && i < n; i++) {
		uint64_t t0 = dkv_now_us();
		int rc = dkv_rpc_call(pool, name, KVPAXOS_PROG, KVPAXOS_VERS, 0, (xdrproc_t)xdr_void,
		                      NULL, (xdrproc_t)xdr_void, NULL, 2000);
		if (rc == DKV_OK)
			lat[ok++] = (unsigned)(dkv_now_us() - t0);
	}
	double med = 0;
	if (ok > 0) {
		qsort(lat, (size_t)ok, sizeof *lat, cmp_uint);
		med = lat[ok / 2];
	}
	free(lat);
	dkv_rpc_pool_free(pool);
	return med;
}

static double null_rtt_us_last;

static void noop_apply(void *ctx, const void *op, size_t len)
{
	(void)ctx;
	(void)op;
	(void)len;
}

/* rsm_add_op_us: median latency of `n` sequential 48-byte paxosrsm_add_op calls
 * on replica 0 of three bare paxosrsm replicas: the log's share of a Put. */
static double rsm_add_op_us(const char *dir, int n)
{
	char names[NREP][DKV_NAME_MAX];
	const char *peers[NREP];
	paxosrsm *rsm[NREP] = { NULL };
	double med = 0;
	for (int i = 0; i < NREP; i++) {
		snprintf(names[i], DKV_NAME_MAX, "%s/bench-kvrsm-%d-%d", dir, (int)getpid(), i);
		peers[i] = names[i];
	}
	for (int i = 0; i < NREP; i++)
		if ((rsm[i] = paxosrsm_make(peers, NREP, i, NULL, noop_apply, NULL)) == NULL)
			goto out;
	unsigned *lat = calloc((size_t)n, sizeof *lat);
	if (lat == NULL)
		goto out;
	char op[48];
	memset(op, 'o', sizeof op);
	int ok = 0;
	for (int i = 0; i < n; i++) {
		uint64_t t0 = dkv_now_us();
		if (paxosrsm_add_op(rsm[0], op, sizeof op) == DKV_OK && i >= n / 10)
			lat[ok++] = (unsigned)(dkv_now_us() - t0);
	}
	if (ok > 0) {
		qsort(lat, (size_t)ok, sizeof *lat, cmp_uint);
		med = lat[ok / 2];
	}
	free(lat);
out:
	for (int i = 0; i < NREP; i++) {
		paxosrsm_free(rsm[i]);
		unlink(names[i]);
	}
	return med;
}

static uint64_t du_total;
static int du_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p;
	(void)ftw;
	if (flag == FTW_F && S_ISREG(sb->st_mode)) du_total += (uint64_t)sb->st_size;
	return 0;
}
static uint64_t disk_use(const char *path)
{
	du_total = 0;
	nftw(path, du_cb, 16, FTW_PHYS);
	return du_total;
}
static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}
static void rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* fdatasync_us: median of n (4 KiB pwrite + fdatasync) in dir. */
static double fdatasync_us(const char *dir, int n)
{
	char path[256];
	snprintf(path, sizeof path, "%s/bench-fsync-%d", dir, (int)getpid());
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	if (fd < 0) return 0;
	unsigned *lat = calloc((size_t)n, sizeof *lat);
	char buf[4096];
	memset(buf, 'f', sizeof buf);
	int ok = 0;
	for (int i = 0; lat && i < n; i++) {
		uint64_t t0 = dkv_now_us();
		if (pwrite(fd, buf, sizeof buf, (off_t)(i % 64) * 4096) == (ssize_t)sizeof buf &&
		    fdatasync(fd) == 0)
			lat[ok++] = (unsigned)(dkv_now_us() - t0);
	}
	close(fd);
	unlink(path);
	double med = 0;
	if (ok) {
		qsort(lat, (size_t)ok, sizeof *lat, cmp_uint);
		med = lat[ok / 2];
	}
	free(lat);
	return med;
}

static void *load_main(void *p)
{
	void **a = p;
	const char *const *servers = a[0];
	int id = (int)(intptr_t)a[1], nth = (int)(intptr_t)a[2], nkeys = (int)(intptr_t)a[3];
	kvpaxos_clerk *ck = kvpaxos_clerk_new(servers, NREP);
	char key[32], val[32];
	for (int k = id; ck && k < nkeys; k += nth) {
		snprintf(key, sizeof key, "key-%07d", k);
		snprintf(val, sizeof val, "value-%07d", k);
		kvpaxos_clerk_put(ck, key, val);
	}
	kvpaxos_clerk_free(ck);
	return NULL;
}

/* restart_bench: 3 durable replicas loaded with nkeys keys; replica 0 freed
 * and started again on its directory; prints the time to serving and the
 * disk bytes per live byte. */
static void restart_bench(const char *dir, int nkeys)
{
	char root[192], names[NREP][DKV_NAME_MAX], dirs[NREP][256];
	const char *servers[NREP];
	snprintf(root, sizeof root, "%s/bench-kvrestart-%d", dir, (int)getpid());
	rm_rf(root);
	mkdir(root, 0700);
	kvpaxos_server *kva[NREP];
	for (int i = 0; i < NREP; i++) {
		snprintf(names[i], DKV_NAME_MAX, "%s/bench-kvr-%d-%d", dir, (int)getpid(), i);
		snprintf(dirs[i], sizeof dirs[i], "%s/r%d", root, i);
		servers[i] = names[i];
	}
	for (int i = 0; i < NREP; i++) {
		dkv_server_opts o = {0};
		o.dir = dirs[i];
		if (!(kva[i] = kvpaxos_server_start_opts(servers, NREP, i, &o))) {
			perror("kvpaxos_server_start_opts");
			return;
		}
	}
	enum { NT = 32 };
	pthread_t t[NT];
	void *args[NT][4];
	uint64_t l0 = dkv_now_us();
	for (int i = 0; i < NT; i++) {
		args[i][0] = (void *)servers;
		args[i][1] = (void *)(intptr_t)i;
		args[i][2] = (void *)(intptr_t)NT;
		args[i][3] = (void *)(intptr_t)nkeys;
		pthread_create(&t[i], NULL, load_main, args[i]);
	}
	for (int i = 0; i < NT; i++) pthread_join(t[i], NULL);
	double load_s = (double)(dkv_now_us() - l0) / 1e6;
	/* idle: snapshots, Done, compaction */
	dkv_sleep_ms(2500);
	uint64_t live = (uint64_t)nkeys * (11 + 13); /* key + value bytes */
	uint64_t du = disk_use(root);
	kvpaxos_server_free(kva[0]);
	dkv_server_opts o = {0};
	o.dir = dirs[0];
	o.restart = true;
	uint64_t t0 = dkv_now_us();
	kva[0] = kvpaxos_server_start_opts(servers, NREP, 0, &o);
	double start_ms = (double)(dkv_now_us() - t0) / 1e3;
	kvpaxos_clerk *ck = kvpaxos_clerk_new(&servers[0], 1);
	char *v = NULL;
	int rc = kva[0] && ck ? kvpaxos_clerk_get(ck, "key-0000000", &v) : DKV_ERR_INVAL;
	double serve_ms = (double)(dkv_now_us() - t0) / 1e3;
	printf("\nrestart of a replica holding %d keys (loaded in %.1f s by 32 clerks): start "
	       "returned after %.0f ms, serving (first Get through it alone: %s) after %.0f ms\n",
	       nkeys, load_s, start_ms, rc == DKV_OK && v && !strcmp(v, "value-0000000") ? "ok" : "FAILED",
	       serve_ms);
	printf("disk use when idle: %llu bytes for 3 replicas = %.2f bytes per live byte "
	       "(live: %llu bytes of keys+values per replica)\n",
	       (unsigned long long)du, (double)du / (3.0 * (double)live), (unsigned long long)live);
	bench_out("bench=kvpaxos\top=restart\tmode=durable\tkeys=%d\tstart_ms=%.0f\tserve_ms=%.0f\t"
	          "disk_per_live=%.2f", nkeys, start_ms, serve_ms, (double)du / (3.0 * (double)live));
	free(v);
	kvpaxos_clerk_free(ck);
	for (int i = 0; i < NREP; i++) {
		kvpaxos_server_free(kva[i]);
		unlink(names[i]);
	}
	rm_rf(root);
}

static int run_rows(const char *dir, bool durable, double seconds);

int main(void)
{
	double seconds = 2;
	const char *env = getenv("DKV_BENCH_SECONDS");
	if (env != NULL && atof(env) > 0)
		seconds = atof(env);
	char dir[128];
	snprintf(dir, sizeof dir, "/var/tmp/dkv-%u", (unsigned)getuid());
	if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	int rc = run_rows(dir, false, seconds);
	const char *de = getenv("DKV_BENCH_DURABLE");
	if (!de || strcmp(de, "0") != 0) {
		double fs = fdatasync_us(dir, 200);
		printf("\nfdatasync of %s (4 KiB pwrite + fdatasync): p50 %.0f us\n", dir, fs);
		bench_out("bench=kvpaxos\top=fdatasync\tmode=durable\tp50_us=%.0f", fs);
		rc |= run_rows(dir, true, seconds);
		const char *ke = getenv("DKV_BENCH_RESTART_KEYS");
		int nkeys = ke && atoi(ke) > 0 ? atoi(ke) : 100000;
		if (seconds < 0.5 && !ke) nkeys = 2000; /* the smoke run */
		restart_bench(dir, nkeys);
	}
	/* The log's share of a Put: kvpaxos adds one clerk RPC and the batch codec. */
	double rtt = null_rtt_us_last;
	double rsm = rsm_add_op_us(dir, 3000);
	printf("\nbare paxosrsm add_op (1 caller, 3 replicas): p50 %.1f us = %.1f of the lowest null "
	       "RPC p50\n", rsm,
	       rtt > 0 ? rsm / rtt : 0);
	return rc;
}

static int run_rows(const char *dir, bool durable, double seconds)
{
	const char *mode = durable ? "durable" : "memory";
	char names[NREP][DKV_NAME_MAX], dirs[NREP][256], root[192];
	const char *servers[NREP];
	snprintf(root, sizeof root, "%s/bench-kvdisk-%d", dir, (int)getpid());
	if (durable) {
		rm_rf(root);
		mkdir(root, 0700);
	}
	for (int i = 0; i < NREP; i++) {
		snprintf(names[i], DKV_NAME_MAX, "%s/bench-kv-%d-%d", dir, (int)getpid(), i);
		snprintf(dirs[i], sizeof dirs[i], "%s/r%d", root, i);
		servers[i] = names[i];
	}
	kvpaxos_server *kva[NREP];
	for (int i = 0; i < NREP; i++) {
		dkv_server_opts o = {0};
		o.dir = dirs[i];
		kva[i] = durable ? kvpaxos_server_start_opts(servers, NREP, i, &o)
		                 : kvpaxos_server_start(servers, NREP, i);
		if (kva[i] == NULL) {
			perror("kvpaxos_server_start");
			return 1;
		}
	}
	/* warm up: connections, first instances */
	kvpaxos_clerk *ck = kvpaxos_clerk_new(servers, NREP);
	for (int i = 0; ck != NULL && i < 200; i++)
		kvpaxos_clerk_put(ck, "warm", "up");
	kvpaxos_clerk_free(ck);

	double rtt = null_rtt_us(servers[0], 5000);
	printf("\nkvpaxos (%s): 3 replicas, unix sockets, one process, %.1f s per row\n", mode,
	       seconds);
	printf("null RPC (cached connection to replica 0, procedure 0): p50 %.1f us\n", rtt);
	printf("\n");
	printf("(the machine is shared: each row measures the null RPC again just before it)\n\n");
	printf("%-7s %6s %10s %9s %9s %9s %10s %9s %7s\n", "op", "clerks", "ops/s", "p50(us)",
	       "p99(us)", "null(us)", "p50/null", "ops/entry", "errors");

	static const char *opname[] = { "Put", "Append", "Get" };
	static const int nclerks[] = { 1, 8, 32 };
	int rc = 0;
	for (int kind = 0; kind < 3; kind++) {
		for (size_t ci = 0; ci < sizeof nclerks / sizeof nclerks[0]; ci++) {
			int nc = nclerks[ci];
			double row_rtt = null_rtt_us(servers[0], 2000);
			if (row_rtt > 0 && row_rtt < rtt)
				rtt = row_rtt; /* the quietest figure, for the paxosrsm line */
			volatile int stop = 0;
			worker w[MAX_CLERKS];
			pthread_t t[MAX_CLERKS];
			kvpaxos_server_stats s0, s1;
			kvpaxos_server_get_stats(kva[0], &s0);
			int pmax0 = paxos_max(kvpaxos_server_paxos(kva[0]));
			for (int i = 0; i < nc; i++) {
				w[i] = (worker){ .servers = servers, .kind = kind, .id = i, .stop = &stop,
				                 .cap = MAX_SAMPLES / (size_t)nc };
				w[i].lat_us = malloc(w[i].cap * sizeof(unsigned));
				if (w[i].lat_us == NULL)
					return 1;
			}
			uint64_t t0 = dkv_now_us();
			for (int i = 0; i < nc; i++)
				pthread_create(&t[i], NULL, worker_main, &w[i]);
			dkv_sleep_ms((unsigned)(seconds * 1000));
			stop = 1;
			size_t total = 0;
			unsigned long errors = 0;
			for (int i = 0; i < nc; i++) {
				pthread_join(t[i], NULL);
				total += w[i].nlat;
				errors += w[i].errors;
			}
			double el = (double)(dkv_now_us() - t0) / 1e6;
			kvpaxos_server_get_stats(kva[0], &s1);
			unsigned *all = malloc((total + 1) * sizeof *all);
			size_t k = 0;
			for (int i = 0; i < nc; i++) {
				memcpy(all + k, w[i].lat_us, w[i].nlat * sizeof *all);
				k += w[i].nlat;
				free(w[i].lat_us);
			}
			qsort(all, total, sizeof *all, cmp_uint);
			double p50 = total ? all[total / 2] : 0, p99 = total ? all[total * 99 / 100] : 0;
			free(all);
			/* log entries: Paxos instances (the engine batches; no-ops are rare) */
			int pmax1 = paxos_max(kvpaxos_server_paxos(kva[0]));
			double per_entry = pmax1 > pmax0 ? (double)(s1.applied - s0.applied) /
			                                       (double)(pmax1 - pmax0)
			                                 : 0;
			printf("%-7s %6d %10.0f %9.0f %9.0f %9.1f %10.1f %9.1f %7lu\n", opname[kind], nc,
			       (double)total / el, p50, p99, row_rtt, row_rtt > 0 ? p50 / row_rtt : 0,
			       per_entry, errors);
			fflush(stdout);
			bench_out("bench=kvpaxos\top=%s\tmode=%s\tclients=%d\tops_s=%.0f\tp50_us=%.0f\t"
			          "p99_us=%.0f\tnull_us=%.1f\tops_per_entry=%.1f\terrors=%lu",
			          opname[kind], mode, nc, (double)total / el, p50, p99, row_rtt, per_entry, errors);
			if (errors != 0)
				rc = 1;
		}
	}
	for (int i = 0; i < NREP; i++)
		kvpaxos_server_free(kva[i]);
	for (int i = 0; i < NREP; i++)
		unlink(names[i]);
	if (durable) rm_rf(root);
	if (!durable) null_rtt_us_last = rtt;
	return rc;
}
