/*
 * bench/bench_out.h — the benches' machine-readable output, for the report
 * that `make bench` writes (bench/report.sh): when DKV_BENCH_OUT names a
 * file, each table row is also appended to it as one line of tab-separated
 * key=value fields, e.g.
 *   bench=kvpaxos  op=Put  mode=memory  clients=8  ops_s=5120  p50_us=1480  p99_us=3900
 * Keys the report reads: bench, op (or row), mode (memory | durable),
 * clients, ops_s, p50_us, p99_us, null_us; others are kept as they are.
 * Without DKV_BENCH_OUT nothing changes: the human tables stay on stdout.
 * Header-only (each bench is one .c file); one open/write/close per row, so
 * rows from several processes appending to one file do not interleave.
 */
#ifndef DKV_BENCH_OUT_H
#define DKV_BENCH_OUT_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void bench_out(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void bench_out(const char *fmt, ...)
{
	const char *path = getenv("DKV_BENCH_OUT");
	if (path == NULL || path[0] == '\0')
		return;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	ssize_t w = write(fd, line, (size_t)n);
	(void)w;
	close(fd);
}

#endif /* DKV_BENCH_OUT_H */
