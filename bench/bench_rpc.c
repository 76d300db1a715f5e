/*
 * bench/bench_rpc.c — the cost of a null RPC through libdkvrpc, beside a raw
 * libtirpc call on a cached connection measured in the same run.
 *
 * Rows: transport (unix, tcp) × mode (raw libtirpc cached CLIENT; dkv pooled
 * with the stat/poll check; dkv dial-per-call) × client threads (1, 8). Each row
 * runs DKV_BENCH_SECONDS (default 1) against one in-process dkv_rpc_server and
 * prints ops/s and p50/p99 latency in µs. The last line gives the target ratio:
 * dkv pooled p50 over raw p50 (goal: within 1.3×).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "dkv/rpc.h"
#include "dkv_internal.h"
#include "bench_out.h"

#define B_PROG 0x20000F01u

static const dkv_rpc_proc no_procs[1];

enum mode { RAW, POOLED, DIAL };
static const char *mode_names[] = { "raw libtirpc, cached", "dkv pooled (checked)", "dkv dial-per-call" };

struct worker {
	enum mode mode;
	const char *name;
	double seconds;
	uint32_t *lat; /* µs samples */
	size_t n, cap;
	int errors;
};

static CLIENT *raw_connect(const char *name, int *fdp)
{
	dkv_name nm;
	if (dkv_name_parse(name, &nm) != DKV_OK)
		return NULL;
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd;
	if (nm.kind == DKV_NAME_UNIX) {
		struct sockaddr_un *sa = (struct sockaddr_un *)&ss;
		memset(sa, 0, sizeof *sa);
		sa->sun_family = AF_UNIX;
		strcpy(sa->sun_path, nm.path);
		sl = sizeof *sa;
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
	} else {
		struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
		memset(sa, 0, sizeof *sa);
		sa->sin_family = AF_INET;
		sa->sin_port = htons((uint16_t)atoi(nm.port));
		inet_pton(AF_INET, nm.host, &sa->sin_addr);
		sl = sizeof *sa;
		fd = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
		close(fd);
		return NULL;
	}
	struct netbuf nb = { .maxlen = sl, .len = sl, .buf = &ss };
	CLIENT *cl = clnt_vc_create(fd, &nb, B_PROG, 1, 0, 0);
	*fdp = fd;
	return cl;
}

static void record(struct worker *w, uint64_t us)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 65536;
		w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
	}
	w->lat[w->n++] = (uint32_t)(us > UINT32_MAX ? UINT32_MAX : us);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct timeval tv = { 5, 0 };
	int fd = -1;
	CLIENT *raw = w->mode == RAW ? raw_connect(w->name, &fd) : NULL;
	dkv_rpc_pool *pool = w->mode == POOLED ? dkv_rpc_pool_new() : NULL;
	uint64_t end = dkv_now_us() + (uint64_t)(w->seconds * 1e6);
	for (;;) {
		uint64_t t0 = dkv_now_us();
		if (t0 >= end)
			break;
		int ok;
		if (w->mode == RAW) {
			ok = clnt_call(raw, NULLPROC, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, tv) == RPC_SUCCESS;
		} else if (w->mode == POOLED) {
			ok = dkv_rpc_call(pool, w->name, B_PROG, 1, NULLPROC, (xdrproc_t)xdr_void, NULL,
			                  (xdrproc_t)xdr_void, NULL, 5000) == DKV_OK;
		} else {
			dkv_rpc_pool *p = dkv_rpc_pool_new();
			ok = dkv_rpc_call(p, w->name, B_PROG, 1, NULLPROC, (xdrproc_t)xdr_void, NULL,
			                  (xdrproc_t)xdr_void, NULL, 5000) == DKV_OK;
			dkv_rpc_pool_free(p);
		}
		if (!ok)
			w->errors++;
		record(w, dkv_now_us() - t0);
	}
	if (raw != NULL) {
		clnt_destroy(raw);
		close(fd);
	}
	dkv_rpc_pool_free(pool);
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

struct row {
	double ops, p50, p99;
};

static unsigned long failed_calls; /* over every row: any makes the run fail */

static struct row run(enum mode mode, const char *name, int threads, double seconds)
{
	struct worker *w = calloc((size_t)threads, sizeof *w);
	pthread_t *t = calloc((size_t)threads, sizeof *t);
	for (int i = 0; i < threads; i++) {
		w[i] = (struct worker){ .mode = mode, .name = name, .seconds = seconds };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	size_t total = 0;
	int errors = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		total += w[i].n;
		errors += w[i].errors;
	}
	uint32_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < threads; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
		k += w[i].n;
		free(w[i].lat);
	}
	qsort(all, total, sizeof *all, cmp_u32);
	struct row r = { total / seconds, total ? all[total / 2] : 0, total ? all[total * 99 / 100] : 0 };
	if (errors)
		fprintf(stderr, "bench_rpc: %d errors in %s\n", errors, mode_names[mode]);
	failed_calls += (unsigned long)errors;
	free(all);
	free(w);
	free(t);
	return r;
}

int main(void)
{
	const char *e = getenv("DKV_BENCH_SECONDS");
	double seconds = e ? atof(e) : 1.0;
	if (seconds <= 0)
		seconds = 1.0;
	char upath[DKV_NAME_MAX];
	snprintf(upath, sizeof upath, "/var/tmp/dkv-bench-rpc-%d", (int)getpid());
	dkv_rpc_server *us = dkv_rpc_server_listen(upath);
	dkv_rpc_server *ts = dkv_rpc_server_listen("tcp:127.0.0.1:0");
	if (us == NULL || ts == NULL) {
		fprintf(stderr, "bench_rpc: listen: %s\n", strerror(errno));
		return 1;
	}
	dkv_rpc_server_add(us, B_PROG, 1, no_procs, 0, NULL);
	dkv_rpc_server_add(ts, B_PROG, 1, no_procs, 0, NULL);
	const char *names[2] = { dkv_rpc_server_name(us), dkv_rpc_server_name(ts) };
	const char *tn[2] = { "unix", "tcp" };

	printf("null RPC, %.1f s per row (DKV_BENCH_SECONDS), in-process server\n", seconds);
	printf("%-5s %-22s %4s %10s %9s %9s\n", "net", "mode", "thr", "ops/s", "p50 µs", "p99 µs");
	double raw_p50[2] = { 0, 0 }, pooled_p50[2] = { 0, 0 };
	for (int n = 0; n < 2; n++)
		for (int m = RAW; m <= DIAL; m++)
			for (int thr = 1; thr <= 8; thr += 7) {
				if (m == DIAL && n == 1 && thr == 8)
					continue; /* TIME_WAIT churn on loopback TCP; see notes/tirpc.md §4 */
				struct row r = run((enum mode)m, names[n], thr, seconds);
				printf("%-5s %-22s %4d %10.0f %9.1f %9.1f\n", tn[n], mode_names[m], thr, r.ops, r.p50, r.p99);
				bench_out("bench=rpc\tnet=%s\trow=%s\tclients=%d\tops_s=%.0f\tp50_us=%.1f\t"
				          "p99_us=%.1f",
				          tn[n], mode_names[m], thr, r.ops, r.p50, r.p99);
				if (thr == 1 && m == RAW)
					raw_p50[n] = r.p50;
				if (thr == 1 && m == POOLED)
					pooled_p50[n] = r.p50;
			}
	for (int n = 0; n < 2; n++)
		printf("%s: dkv pooled p50 / raw libtirpc p50 = %.2f (target <= 1.30)\n", tn[n],
		       raw_p50[n] > 0 ? pooled_p50[n] / raw_p50[n] : 0.0);
	dkv_rpc_server_free(us);
	dkv_rpc_server_free(ts);
	unlink(upath);
	if (failed_calls > 0) {
		fprintf(stderr, "bench_rpc: FAILED: %lu calls failed\n", failed_calls);
		return 1;
	}
	return 0;
}
