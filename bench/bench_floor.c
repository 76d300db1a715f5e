/*
 * bench/bench_floor.c — the disk floor beside which durable writes are read:
 * the latency of one small append (64 bytes, O_APPEND) followed by
 * fdatasync, in the benches' data directory (/var/tmp/dkv-UID), one writer.
 * A durable Put can be no faster than this (group commit shares one
 * fdatasync among many Puts, so throughput can be higher than 1/latency).
 * Also: the same append without fdatasync, for the cost of the write itself.
 *
 * Runs DKV_BENCH_SECONDS (default 2) split between the two rows, at most
 * 20000 appends a row; the file is removed at the end. Each row also goes to
 * DKV_BENCH_OUT (bench_out.h) as bench=floor.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_out.h"

#define MAX_N 20000

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* One row: appends for `secs`, fdatasync after each if `sync`. 0 or -1. */
static int row(const char *path, bool sync, double secs, const char *label, const char *kind)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "bench_floor: %s: %s\n", path, strerror(errno));
		return -1;
	}
	static uint32_t lat[MAX_N];
	char rec[64];
	memset(rec, 'r', sizeof rec);
	rec[sizeof rec - 1] = '\n';
	size_t n = 0;
	uint64_t start = now_us(), end = start + (uint64_t)(secs * 1e6);
	while (n < MAX_N && now_us() < end) {
		uint64_t t0 = now_us();
		if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec || (sync && fdatasync(fd) != 0)) {
			fprintf(stderr, "bench_floor: %s: %s\n", path, strerror(errno));
			close(fd);
			return -1;
		}
		lat[n++] = (uint32_t)(now_us() - t0);
	}
	double el = (double)(now_us() - start) / 1e6;
	close(fd);
	qsort(lat, n, sizeof lat[0], cmp_u32);
	double p50 = n ? lat[n / 2] : 0, p99 = n ? lat[n * 99 / 100] : 0;
	printf("%-34s %8zu %10.0f %10.1f %10.1f\n", label, n, el > 0 ? (double)n / el : 0, p50, p99);
	bench_out("bench=floor\tkind=%s\trow=%s\tclients=1\tops_s=%.0f\tp50_us=%.1f\tp99_us=%.1f", kind,
	          label, el > 0 ? (double)n / el : 0, p50, p99);
	return 0;
}

int main(void)
{
	double secs = 2;
	const char *e = getenv("DKV_BENCH_SECONDS");
	if (e != NULL && atof(e) > 0)
		secs = atof(e);
	char dir[64], path[128];
	snprintf(dir, sizeof dir, "/var/tmp/dkv-%u", (unsigned)getuid());
	if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	snprintf(path, sizeof path, "%s/bench-floor-%d", dir, (int)getpid());
	printf("disk floor: 64-byte appends in %s, one writer, %.1f s per row\n", dir, secs / 2);
	printf("%-34s %8s %10s %10s %10s\n", "row", "appends", "per s", "p50 us", "p99 us");
	int rc = row(path, true, secs / 2, "append + fdatasync", "fdatasync");
	if (rc == 0)
		rc = row(path, false, secs / 2, "append, no sync (page cache)", "write");
	unlink(path);
	return rc == 0 ? 0 : 1;
}
