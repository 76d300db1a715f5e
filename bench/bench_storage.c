/*
 * bench/bench_storage.c — the durable floor and group commit.
 *
 * Rows, in a fresh data directory under DKV_BENCH_DIR (default /var/tmp):
 *   - the floor: pwrite of a 64-byte append + fdatasync, raw POSIX (p50/p99 µs);
 *   - the same through dkv_log (append + sync, one writer);
 *   - group commit: W writers (1, 8, 32), each looping append(64 B) + sync for
 *     DKV_BENCH_SECONDS (default 1): records/s, fdatasyncs/s, records per
 *     fdatasync, p50/p99 of append+sync in µs;
 *   - the same with no_fsync (written, never synced) for comparison.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dkv_internal.h"
#include "storage.h"

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(uint32_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1));
	return v[i];
}

typedef struct {
	dkv_log *l;
	double seconds;
	uint32_t *lat;
	size_t n, cap;
	int errors;
} worker;

static void *writer(void *p)
{
	worker *w = p;
	char rec[64];
	memset(rec, 'r', sizeof rec);
	uint64_t end = dkv_now_us() + (uint64_t)(w->seconds * 1e6);
	while (dkv_now_us() < end) {
		uint64_t t0 = dkv_now_us(), lsn;
		if (dkv_log_append(w->l, rec, sizeof rec, &lsn) != 0 || dkv_log_sync(w->l, lsn) != 0) {
			w->errors++;
			break;
		}
		if (w->n == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 4096;
			w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
		}
		w->lat[w->n++] = (uint32_t)(dkv_now_us() - t0);
	}
	return NULL;
}

static int row(const char *base, int nw, double seconds, bool no_fsync, int idx)
{
	char path[512];
	snprintf(path, sizeof path, "%s/gc-%d", base, idx);
	dkv_dir_opts o = { .no_fsync = no_fsync };
	dkv_dir *d;
	int rc = dkv_dir_open(path, "dkv1 service=bench", &o, &d);
	if (rc != 0) {
		fprintf(stderr, "bench_storage: %s: %s\n", path, strerror(rc));
		return 1;
	}
	dkv_log *l;
	if ((rc = dkv_log_open(d, "wal", NULL, NULL, &l)) != 0) {
		fprintf(stderr, "bench_storage: log: %s\n", strerror(rc));
		return 1;
	}
	dkv_dir_stats s0, s1;
	dkv_dir_get_stats(d, &s0);
	worker *w = calloc((size_t)nw, sizeof *w);
	pthread_t *th = calloc((size_t)nw, sizeof *th);
	uint64_t t0 = dkv_now_us();
	for (int i = 0; i < nw; i++) {
		w[i].l = l;
		w[i].seconds = seconds;
		pthread_create(&th[i], NULL, writer, &w[i]);
	}
	size_t total = 0;
	int errors = 0;
	for (int i = 0; i < nw; i++) {
		pthread_join(th[i], NULL);
		total += w[i].n;
		errors += w[i].errors;
	}
	double el = (double)(dkv_now_us() - t0) / 1e6;
	dkv_dir_get_stats(d, &s1);
	uint32_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < nw; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
		k += w[i].n;
		free(w[i].lat);
	}
	qsort(all, total, sizeof *all, cmp_u32);
	uint64_t syncs = s1.fdatasyncs - s0.fdatasyncs;
	printf("%-26s %4d %10.0f %10.0f %9.1f %9.0f %9.0f\n",
	       no_fsync ? "dkv_log no_fsync" : "dkv_log group commit", nw, (double)total / el,
	       (double)syncs / el, syncs ? (double)total / (double)syncs : 0.0, pct(all, total, 0.5),
	       pct(all, total, 0.99));
	free(all);
	free(w);
	free(th);
	dkv_log_close(l);
	dkv_dir_close(d);
	if (errors) {
		fprintf(stderr, "bench_storage: %d errors\n", errors);
		return 1;
	}
	return 0;
}

static int rm_tree(const char *base)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	return system(cmd);
}

int main(void)
{
	dkv_lib_init();
	const char *bd = getenv("DKV_BENCH_DIR");
	const char *sec = getenv("DKV_BENCH_SECONDS");
	double seconds = sec ? atof(sec) : 1.0;
	if (seconds <= 0)
		seconds = 1.0;
	char base[512];
	snprintf(base, sizeof base, "%s/dkv-bench-storage-XXXXXX", bd ? bd : "/var/tmp");
	if (mkdtemp(base) == NULL) {
		fprintf(stderr, "bench_storage: mkdtemp %s: %s\n", base, strerror(errno));
		return 1;
	}

	/* the floor: raw pwrite + fdatasync of a 64-byte append */
	char fpath[600];
	snprintf(fpath, sizeof fpath, "%s/floor", base);
	int fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "bench_storage: %s: %s\n", fpath, strerror(errno));
		return 1;
	}
	enum { NF = 2000 };
	uint32_t *lat = malloc(NF * sizeof *lat);
	char rec[64];
	memset(rec, 'f', sizeof rec);
	size_t n = 0;
	uint64_t end = dkv_now_us() + (uint64_t)(seconds * 1e6);
	for (off_t off = 0; n < NF && dkv_now_us() < end; off += 64) {
		uint64_t t0 = dkv_now_us();
		if (pwrite(fd, rec, sizeof rec, off) != (ssize_t)sizeof rec || fdatasync(fd) != 0) {
			fprintf(stderr, "bench_storage: floor: %s\n", strerror(errno));
			return 1;
		}
		lat[n++] = (uint32_t)(dkv_now_us() - t0);
	}
	close(fd);
	qsort(lat, n, sizeof *lat, cmp_u32);
	printf("storage, %.1f s per row (DKV_BENCH_SECONDS), directory %s\n", seconds, base);
	printf("fdatasync floor (pwrite 64 B + fdatasync, raw): p50 %.0f µs, p99 %.0f µs (%zu samples)\n",
	       pct(lat, n, 0.5), pct(lat, n, 0.99), n);
	free(lat);
	printf("%-26s %4s %10s %10s %9s %9s %9s\n", "mode", "thr", "records/s", "syncs/s", "rec/sync",
	       "p50 µs", "p99 µs");
	int rc = 0, idx = 0;
	int ws[] = { 1, 8, 32 };
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = row(base, ws[i], seconds, false, idx++);
	for (int i = 0; i < 3 && rc == 0; i++)
		rc = row(base, ws[i], seconds, true, idx++);
	rm_tree(base);
	return rc;
}
