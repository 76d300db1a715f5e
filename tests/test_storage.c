/*
 * tests/test_storage.c — the storage layer (src/storage.[ch], src/crc32c.c)
 * on the real file system and on the simulated disk (tests/lib/simdisk).
 *
 * crc_*        CRC-32C check values (RFC 3720), table vs SSE4.2
 * log_*        append/replay, group commit (counted fdatasyncs, one gated
 *               schedule with an exact count), torn tails cut, middle damage EIO,
 *               compaction
 * snap_*       atomic replace under power cuts, checksum failure EIO
 * dir_*        lock EBUSY (same process and a forked one), identity EINVAL,
 *               unreadable EACCES, not-a-dkv-directory EINVAL, no_fsync
 * errors_*     write and fsync errors are sticky
 * powercut_*   a workload (appends, syncs, snapshots, compactions) cut at every
 *               write boundary: recovery finds every synced record and nothing
 *               corrupt; with fsync a no-op the same check must fail
 * fuzz_*       the regression inputs under tests/fuzz-corpus/ replayed
 *
 * No timing asserts: work is bounded by counts (records, syncs, boundaries).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/harness.h"
#include "dkv_internal.h"
#include "lib/simdisk.h"
#include "storage.h"

/* ---------------------------------------------------------------- helpers */

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh temporary directory (under th_dir()) for one test. */
static char *tmpdir_new(void)
{
	char *p = malloc(512);
	snprintf(p, 512, "%s/storage-%d-XXXXXX", th_dir(), (int)getpid());
	assert_non_null(mkdtemp(p));
	return p;
}

static void tmpdir_free(char *p)
{
	rm_rf(p);
	free(p);
}

static char *path2(const char *a, const char *b)
{
	char *p = malloc(strlen(a) + strlen(b) + 2);
	sprintf(p, "%s/%s", a, b);
	return p;
}

typedef struct {
	size_t n;
	size_t cap;
	char **recs;
	size_t *lens;
} collected;

static int collect(void *arg, uint64_t lsn, const void *rec, size_t len)
{
	collected *c = arg;
	assert_int_equal(lsn, c->n + 1);
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->recs = realloc(c->recs, c->cap * sizeof *c->recs);
		c->lens = realloc(c->lens, c->cap * sizeof *c->lens);
	}
	c->recs[c->n] = malloc(len + 1);
	memcpy(c->recs[c->n], rec, len);
	c->recs[c->n][len] = 0;
	c->lens[c->n] = len;
	c->n++;
	return 0;
}

static void collected_free(collected *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->recs[i]);
	free(c->recs);
	free(c->lens);
	memset(c, 0, sizeof *c);
}

static const char *ID = "dkv1 service=test gid=0 me=0 peers=a,b,c";

static dkv_dir *open_dir_ok(const char *path, const dkv_fs *fs)
{
	dkv_dir_opts o = { .fs = fs };
	dkv_dir *d = NULL;
	int rc = dkv_dir_open(path, ID, &o, &d);
	assert_int_equal(rc, 0);
	assert_non_null(d);
	return d;
}

static void file_flip(const char *path, long off)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char c;
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static long file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (long)st.st_size;
}

/* ---------------------------------------------------------------- crc */

static void crc_check_values(void **state)
{
	(void)state;
	uint8_t b[32];
	assert_int_equal(dkv_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(dkv_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	memset(b, 0, 32);
	assert_int_equal(dkv_crc32c(0, b, 32), 0x8A9136AAu);
	assert_int_equal(dkv_crc32c_sw(0, b, 32), 0x8A9136AAu);
	memset(b, 0xff, 32);
	assert_int_equal(dkv_crc32c(0, b, 32), 0x62A8AB43u);
	assert_int_equal(dkv_crc32c_sw(0, b, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	assert_int_equal(dkv_crc32c(0, b, 32), 0x46DD794Eu);
	assert_int_equal(dkv_crc32c_sw(0, b, 32), 0x46DD794Eu);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)(31 - i);
	assert_int_equal(dkv_crc32c(0, b, 32), 0x113FDB5Cu);
	assert_int_equal(dkv_crc32c_sw(0, b, 32), 0x113FDB5Cu);
	assert_int_equal(dkv_crc32c(0, NULL, 0), 0);
}

/* Table vs hardware (when present) over random buffers, lengths and
 * alignments, and incremental = one-shot. */
static void crc_table_vs_hw(void **state)
{
	(void)state;
	dkv_rng r;
	dkv_rng_seed(&r, th_seed());
	uint8_t *buf = malloc(5000);
	for (int i = 0; i < 5000; i++)
		buf[i] = (uint8_t)dkv_rng_next(&r);
	print_message("crc32c: hardware %s\n", dkv_crc32c_hw_available() ? "SSE4.2" : "absent");
	for (int it = 0; it < 2000; it++) {
		size_t off = (size_t)dkv_rng_below(&r, 64);
		size_t n = (size_t)dkv_rng_below(&r, 4900);
		uint32_t seed = (uint32_t)dkv_rng_next(&r);
		uint32_t a = dkv_crc32c(seed, buf + off, n), b = dkv_crc32c_sw(seed, buf + off, n);
		assert_int_equal(a, b);
		size_t cut = n ? (size_t)dkv_rng_below(&r, n) : 0;
		uint32_t c = dkv_crc32c(dkv_crc32c(seed, buf + off, cut), buf + off + cut, n - cut);
		assert_int_equal(a, c);
	}
	free(buf);
}

/* ---------------------------------------------------------------- log */

static void log_append_replay(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	char *dp = path2(t, "data");
	dkv_dir *d = open_dir_ok(dp, NULL);
	assert_true(dkv_dir_fresh(d));
	dkv_log *l;
	collected c = { 0 };
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, 0);
	char rec[3000];
	for (int i = 0; i < 200; i++) {
		int n = snprintf(rec, sizeof rec, "record-%d-", i);
		memset(rec + n, 'a' + i % 26, (size_t)(i * 13 % 2900));
		uint64_t lsn;
		assert_int_equal(dkv_log_append(l, rec, (size_t)n + (size_t)(i * 13 % 2900), &lsn), 0);
		assert_int_equal(lsn, (uint64_t)i + 1);
		if (i % 7 == 0)
			assert_int_equal(dkv_log_sync(l, lsn), 0);
	}
	/* an empty record and an iovec record */
	assert_int_equal(dkv_log_append(l, "", 0, NULL), 0);
	struct iovec iov[3] = { { "ab", 2 }, { "", 0 }, { "cde", 3 } };
	assert_int_equal(dkv_log_appendv(l, iov, 3, NULL), 0);
	assert_int_equal(dkv_log_sync(l, dkv_log_last_lsn(l)), 0);
	assert_int_equal(dkv_log_durable_lsn(l), 202);
	dkv_log_close(l);
	dkv_dir_close(d);

	d = open_dir_ok(dp, NULL);
	assert_false(dkv_dir_fresh(d));
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, 202);
	for (int i = 0; i < 200; i++) {
		int n = snprintf(rec, sizeof rec, "record-%d-", i);
		memset(rec + n, 'a' + i % 26, (size_t)(i * 13 % 2900));
		assert_int_equal(c.lens[i], (size_t)n + (size_t)(i * 13 % 2900));
		assert_memory_equal(c.recs[i], rec, c.lens[i]);
	}
	assert_int_equal(c.lens[200], 0);
	assert_string_equal(c.recs[201], "abcde");
	assert_int_equal(dkv_log_last_lsn(l), 202);
	/* appends continue after the replayed records */
	uint64_t lsn;
	assert_int_equal(dkv_log_append(l, "x", 1, &lsn), 0);
	assert_int_equal(lsn, 203);
	assert_int_equal(dkv_log_append(l, "y", 2 * 0 + 1, NULL), 0);
	dkv_log_close(l); /* close writes (does not sync) the buffered records */
	dkv_dir_close(d);
	collected_free(&c);
	d = open_dir_ok(dp, NULL);
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, 204);
	/* bad names */
	dkv_log *l2;
	assert_int_equal(dkv_log_open(d, "a/b", NULL, NULL, &l2), EINVAL);
	assert_int_equal(dkv_log_open(d, "x.tmp", NULL, NULL, &l2), EINVAL);
	assert_int_equal(dkv_log_open(d, "IDENTITY", NULL, NULL, &l2), EINVAL);
	dkv_log_close(l);
	dkv_dir_close(d);
	collected_free(&c);
	free(dp);
	tmpdir_free(t);
}

typedef struct {
	dkv_log *l;
	int id, n;
	int errors;
} gc_arg;

static void *gc_writer(void *p)
{
	gc_arg *a = p;
	char rec[64];
	for (int i = 0; i < a->n; i++) {
		int k = snprintf(rec, sizeof rec, "w%d-%d", a->id, i);
		uint64_t lsn;
		if (dkv_log_append(a->l, rec, (size_t)k, &lsn) != 0 || dkv_log_sync(a->l, lsn) != 0)
			a->errors++;
		else if (dkv_log_durable_lsn(a->l) < lsn)
			a->errors++;
	}
	return NULL;
}

/* Many writers on the real disk: every record durable when its sync returns,
 * and fewer fdatasyncs than records (group commit). */
static void log_group_commit_threads(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	dkv_dir *d = open_dir_ok(t, NULL);
	dkv_log *l;
	assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
	enum { W = 16, N = 60 };
	pthread_t th[W];
	gc_arg a[W];
	for (int i = 0; i < W; i++) {
		a[i] = (gc_arg){ .l = l, .id = i, .n = N };
		pthread_create(&th[i], NULL, gc_writer, &a[i]);
	}
	for (int i = 0; i < W; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(a[i].errors, 0);
	}
	dkv_dir_stats st;
	dkv_dir_get_stats(d, &st);
	print_message("group commit: %d records, %llu fdatasyncs\n", W * N,
	              (unsigned long long)st.fdatasyncs);
	assert_int_equal(st.records, W * N);
	assert_true(st.fdatasyncs >= 1);
	assert_true(st.fdatasyncs < st.records);
	dkv_log_close(l);
	dkv_dir_close(d);
	/* every record is there, each once */
	d = open_dir_ok(t, NULL);
	collected c = { 0 };
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, W * N);
	static bool seen[W][N];
	memset(seen, 0, sizeof seen);
	for (size_t i = 0; i < c.n; i++) {
		int w, k;
		assert_int_equal(sscanf(c.recs[i], "w%d-%d", &w, &k), 2);
		assert_false(seen[w][k]);
		seen[w][k] = true;
	}
	dkv_log_close(l);
	dkv_dir_close(d);
	collected_free(&c);
	tmpdir_free(t);
}

/* A dkv_fs that forwards to the simulated disk, but whose fdatasync blocks
 * while the gate is closed: a deterministic group-commit schedule. */
typedef struct {
	dkv_fs fs;
	const dkv_fs *inner;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool closed;
	int in_sync; /* fdatasyncs waiting at the gate */
} gate_fs;

static gate_fs *gate_of(void *impl)
{
	return impl;
}
#define FWD(name, ...) g->inner->name(g->inner->impl, __VA_ARGS__)
static int g_open(void *i, const char *p, int f)
{
	gate_fs *g = gate_of(i);
	return FWD(open, p, f);
}
static int g_close(void *i, int fd)
{
	gate_fs *g = gate_of(i);
	return FWD(close, fd);
}
static ssize_t g_pread(void *i, int fd, void *b, size_t n, uint64_t o)
{
	gate_fs *g = gate_of(i);
	return FWD(pread, fd, b, n, o);
}
static ssize_t g_pwrite(void *i, int fd, const void *b, size_t n, uint64_t o)
{
	gate_fs *g = gate_of(i);
	return FWD(pwrite, fd, b, n, o);
}
static int g_fdatasync(void *i, int fd)
{
	gate_fs *g = gate_of(i);
	pthread_mutex_lock(&g->mu);
	g->in_sync++;
	pthread_cond_broadcast(&g->cv);
	while (g->closed)
		pthread_cond_wait(&g->cv, &g->mu);
	g->in_sync--;
	pthread_mutex_unlock(&g->mu);
	return FWD(fdatasync, fd);
}
static int g_ftruncate(void *i, int fd, uint64_t len)
{
	gate_fs *g = gate_of(i);
	return FWD(ftruncate, fd, len);
}
static int g_size(void *i, int fd, uint64_t *o)
{
	gate_fs *g = gate_of(i);
	return FWD(size, fd, o);
}
static int g_lock(void *i, int fd)
{
	gate_fs *g = gate_of(i);
	return FWD(lock, fd);
}
static int g_rename(void *i, const char *a, const char *b)
{
	gate_fs *g = gate_of(i);
	return FWD(rename, a, b);
}
static int g_unlink(void *i, const char *p)
{
	gate_fs *g = gate_of(i);
	return FWD(unlink, p);
}
static int g_mkdir(void *i, const char *p)
{
	gate_fs *g = gate_of(i);
	return FWD(mkdir, p);
}
static int g_fsync_dir(void *i, const char *p)
{
	gate_fs *g = gate_of(i);
	return FWD(fsync_dir, p);
}
static int g_list(void *i, const char *p, int (*fn)(void *, const char *), void *a)
{
	gate_fs *g = gate_of(i);
	return FWD(list, p, fn, a);
}
static int g_access_dir(void *i, const char *p)
{
	gate_fs *g = gate_of(i);
	return FWD(access_dir, p);
}
#undef FWD

static void gate_init(gate_fs *g, const dkv_fs *inner)
{
	memset(g, 0, sizeof *g);
	g->inner = inner;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->fs = (dkv_fs){ .impl = g,           .open = g_open,         .close = g_close,
		          .pread = g_pread,     .pwrite = g_pwrite,     .fdatasync = g_fdatasync,
		          .ftruncate = g_ftruncate, .size = g_size,     .lock = g_lock,
		          .rename = g_rename,   .unlink = g_unlink,     .mkdir = g_mkdir,
		          .fsync_dir = g_fsync_dir, .list = g_list,     .access_dir = g_access_dir };
}

static void gate_set(gate_fs *g, bool closed)
{
	pthread_mutex_lock(&g->mu);
	g->closed = closed;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

static void gate_wait_in_sync(gate_fs *g, int n)
{
	pthread_mutex_lock(&g->mu);
	while (g->in_sync < n)
		pthread_cond_wait(&g->cv, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

typedef struct {
	dkv_log *l;
	uint64_t lsn;
	int rc;
} sync_arg;

static void *sync_thread(void *p)
{
	sync_arg *a = p;
	a->rc = dkv_log_sync(a->l, a->lsn);
	return NULL;
}

/* Writer 1 leads a sync that blocks at the gate; writers 2..K append and
 * sync meanwhile (they wait: a sync is running). Opening the gate: the first
 * fdatasync covers record 1, one more covers records 2..K — 2 in all. */
static void log_group_commit_gated(void **state)
{
	(void)state;
	simdisk *sd = simdisk_new(th_seed());
	gate_fs g;
	gate_init(&g, simdisk_fs(sd));
	dkv_dir *d = open_dir_ok("/data", &g.fs);
	dkv_log *l;
	assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
	dkv_dir_stats st0, st;
	dkv_dir_get_stats(d, &st0);
	enum { K = 12 };
	gate_set(&g, true);
	pthread_t th[K];
	sync_arg a[K];
	for (int i = 0; i < K; i++) {
		a[i].l = l;
		assert_int_equal(dkv_log_append(l, "r", 1, &a[i].lsn), 0);
		a[i].rc = -1;
		pthread_create(&th[i], NULL, sync_thread, &a[i]);
		if (i == 0)
			gate_wait_in_sync(&g, 1); /* the leader holds record 1 at the gate */
	}
	/* Every writer has appended; the leader is still at the gate. */
	assert_int_equal(dkv_log_durable_lsn(l), 0);
	gate_set(&g, false);
	for (int i = 0; i < K; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(a[i].rc, 0);
	}
	dkv_dir_get_stats(d, &st);
	assert_int_equal(st.fdatasyncs - st0.fdatasyncs, 2);
	assert_int_equal(dkv_log_durable_lsn(l), K);
	dkv_log_close(l);
	dkv_dir_close(d);
	simdisk_free(sd);
}

/* Torn tails on the real disk: short last record, bad checksum of the last
 * record, partial header, zero-filled tail — each cut, then appends go on. */
static void log_torn_tail_cut(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	char *wal = path2(t, "wal");
	for (int kind = 0; kind < 4; kind++) {
		dkv_dir *d = open_dir_ok(t, NULL);
		dkv_log *l;
		assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
		/* start each kind from 5 good records */
		assert_int_equal(dkv_log_compact_begin(l), 0);
		for (int i = 0; i < 5; i++)
			assert_int_equal(dkv_log_compact_add(l, "hello-record", 12), 0);
		assert_int_equal(dkv_log_compact_commit(l), 0);
		assert_int_equal(dkv_log_append(l, "the-last-one", 12, NULL), 0);
		assert_int_equal(dkv_log_sync(l, 6), 0);
		dkv_log_close(l);
		dkv_dir_close(d);
		long sz = file_size(wal);
		assert_int_equal(sz, 6 * (DKV_LOG_FRAME + 12));
		if (kind == 0)
			assert_int_equal(truncate(wal, sz - 5), 0); /* short last record */
		else if (kind == 1)
			file_flip(wal, sz - 3); /* last record's payload checksum fails */
		else if (kind == 2)
			assert_int_equal(truncate(wal, sz - 12 - (long)DKV_LOG_FRAME + 7), 0); /* partial header */
		else {
			assert_int_equal(truncate(wal, sz - 12 - (long)DKV_LOG_FRAME), 0);
			assert_int_equal(truncate(wal, sz + 4096), 0); /* zero-filled tail */
		}
		d = open_dir_ok(t, NULL);
		collected c = { 0 };
		assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
		assert_int_equal(c.n, 5);
		assert_int_equal(file_size(wal), 5 * (DKV_LOG_FRAME + 12));
		assert_int_equal(dkv_log_append(l, "after", 5, NULL), 0);
		assert_int_equal(dkv_log_sync(l, 6), 0);
		dkv_log_close(l);
		dkv_dir_close(d);
		collected_free(&c);
		d = open_dir_ok(t, NULL);
		assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
		assert_int_equal(c.n, 6);
		assert_string_equal(c.recs[5], "after");
		dkv_log_close(l);
		dkv_dir_close(d);
		collected_free(&c);
	}
	free(wal);
	tmpdir_free(t);
}

/* Damage before the tail — payload, header, length — refuses the open (EIO)
 * and replays nothing. */
static void log_middle_corruption_eio(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	char *wal = path2(t, "wal");
	long rec = DKV_LOG_FRAME + 10;
	long offs[] = { 2 * rec + DKV_LOG_FRAME + 3, 2 * rec + 1, 3 * rec + 5, 0 };
	for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
		unlink(wal);
		dkv_dir *d = open_dir_ok(t, NULL);
		dkv_log *l;
		assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
		for (int i = 0; i < 6; i++)
			assert_int_equal(dkv_log_append(l, "0123456789", 10, NULL), 0);
		assert_int_equal(dkv_log_sync(l, 6), 0);
		dkv_log_close(l);
		dkv_dir_close(d);
		file_flip(wal, offs[k]);
		d = open_dir_ok(t, NULL);
		collected c = { 0 };
		assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), EIO);
		assert_int_equal(c.n, 0); /* nothing replayed from a log that is refused */
		assert_int_equal(file_size(wal), 6 * rec); /* and nothing cut */
		dkv_dir_close(d);
	}
	free(wal);
	tmpdir_free(t);
}

/* Compaction: the new log holds the live records then every record appended
 * since begin; an abort leaves the log as it was. */
static void log_compaction(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	dkv_dir *d = open_dir_ok(t, NULL);
	dkv_log *l;
	assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(dkv_log_append(l, "old-record", 10, NULL), 0);
	assert_int_equal(dkv_log_sync(l, 50), 0);
	uint64_t before = dkv_log_size(l);
	assert_int_equal(dkv_log_compact_begin(l), 0);
	assert_int_equal(dkv_log_compact_begin(l), EINVAL);
	assert_int_equal(dkv_log_append(l, "tail-1", 6, NULL), 0); /* after begin: kept */
	assert_int_equal(dkv_log_compact_add(l, "live-a", 6), 0);
	assert_int_equal(dkv_log_compact_add(l, "live-b", 6), 0);
	assert_int_equal(dkv_log_append(l, "tail-2", 6, NULL), 0);
	assert_int_equal(dkv_log_compact_commit(l), 0);
	assert_int_equal(dkv_log_durable_lsn(l), 102);
	assert_true(dkv_log_size(l) < before);
	assert_int_equal(dkv_log_compact_commit(l), EINVAL);
	/* abort */
	assert_int_equal(dkv_log_compact_begin(l), 0);
	assert_int_equal(dkv_log_compact_add(l, "never", 5), 0);
	dkv_log_compact_abort(l);
	assert_int_equal(dkv_log_append(l, "end", 3, NULL), 0);
	assert_int_equal(dkv_log_sync(l, 103), 0);
	dkv_dir_stats st;
	dkv_dir_get_stats(d, &st);
	assert_int_equal(st.compactions, 1);
	dkv_log_close(l);
	dkv_dir_close(d);
	d = open_dir_ok(t, NULL);
	collected c = { 0 };
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, 5);
	assert_string_equal(c.recs[0], "live-a");
	assert_string_equal(c.recs[1], "live-b");
	assert_string_equal(c.recs[2], "tail-1");
	assert_string_equal(c.recs[3], "tail-2");
	assert_string_equal(c.recs[4], "end");
	dkv_log_close(l);
	dkv_dir_close(d);
	collected_free(&c);
	tmpdir_free(t);
}

/* ---------------------------------------------------------------- snapshots */

static void snap_roundtrip_and_bad_checksum(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	char *sp = path2(t, "state.snap");
	dkv_dir *d = open_dir_ok(t, NULL);
	void *b;
	size_t n;
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), ENOENT);
	assert_int_equal(dkv_snap_write(d, "state.snap", "version-1", 9), 0);
	assert_int_equal(dkv_snap_write(d, "state.snap", "version-two", 11), 0);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), 0);
	assert_int_equal(n, 11);
	assert_memory_equal(b, "version-two", 11);
	free(b);
	assert_int_equal(dkv_snap_write(d, "empty.snap", "", 0), 0);
	assert_int_equal(dkv_snap_read(d, "empty.snap", &b, &n), 0);
	assert_non_null(b);
	assert_int_equal(n, 0);
	free(b);
	/* damage: payload byte, header byte, truncation, extension */
	file_flip(sp, DKV_SNAP_HEADER + 4);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), EIO);
	file_flip(sp, DKV_SNAP_HEADER + 4);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), 0);
	free(b);
	file_flip(sp, 9);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), EIO);
	file_flip(sp, 9);
	assert_int_equal(truncate(sp, file_size(sp) - 1), 0);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), EIO);
	assert_int_equal(truncate(sp, file_size(sp) + 2), 0);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), EIO);
	/* a damaged snapshot is never silently replaced at open */
	dkv_dir_close(d);
	d = open_dir_ok(t, NULL);
	assert_int_equal(dkv_snap_read(d, "state.snap", &b, &n), EIO);
	dkv_dir_close(d);
	free(sp);
	tmpdir_free(t);
}

/* Replace v1 by v2 with a power cut at every write boundary of the
 * replacement: afterwards the snapshot reads as v1 or v2, never damaged, and
 * v2 once dkv_snap_write returned 0. */
static void snap_atomic_under_power_cuts(void **state)
{
	(void)state;
	dkv_log_set_level(DKV_LOG_OFF);
	uint64_t seed = th_seed();
	uint64_t first = 0, total = 0;
	int saw_v1 = 0, saw_v2 = 0;
	for (uint64_t k = 1;; k++) {
		simdisk *sd = simdisk_new(seed + k);
		dkv_dir *d = open_dir_ok("/d", simdisk_fs(sd));
		assert_int_equal(dkv_snap_write(d, "s", "v1-the-first-version", 20), 0);
		first = simdisk_boundaries(sd);
		simdisk_cut_after(sd, first + k);
		char v2[3000];
		memset(v2, 'z', sizeof v2);
		int rc = dkv_snap_write(d, "s", v2, sizeof v2);
		total = simdisk_boundaries(sd);
		dkv_dir_close(d);
		simdisk_power_cut(sd);
		d = open_dir_ok("/d", simdisk_fs(sd));
		void *b;
		size_t n;
		assert_int_equal(dkv_snap_read(d, "s", &b, &n), 0);
		if (n == 20) {
			assert_memory_equal(b, "v1-the-first-version", 20);
			assert_int_not_equal(rc, 0); /* v2 was not acknowledged */
			saw_v1++;
		} else {
			assert_int_equal(n, sizeof v2);
			assert_memory_equal(b, v2, n);
			saw_v2++;
		}
		free(b);
		dkv_dir_close(d);
		simdisk_free(sd);
		if (rc == 0)
			break; /* the cut came after the whole replacement */
	}
	dkv_log_set_level(DKV_LOG_WARN);
	print_message("snapshot replace: %llu boundaries; after cuts v1 %d times, v2 %d times\n",
	              (unsigned long long)(total - first), saw_v1, saw_v2);
	assert_true(saw_v1 > 0);
	assert_true(saw_v2 > 0);
}

/* ---------------------------------------------------------------- directory */

static void dir_lock_busy(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	dkv_dir *d = open_dir_ok(t, NULL);
	dkv_dir *d2 = NULL;
	assert_int_equal(dkv_dir_open(t, ID, NULL, &d2), EBUSY); /* same process */
	assert_null(d2);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dkv_dir *c = NULL;
		int rc = dkv_dir_open(t, ID, NULL, &c);
		_exit(rc == EBUSY ? 0 : 10 + rc);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	dkv_dir_close(d);
	/* released: another process can take it now */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dkv_dir *c = NULL;
		int rc = dkv_dir_open(t, ID, NULL, &c);
		dkv_dir_close(c);
		_exit(rc == 0 ? 0 : 10 + rc);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	tmpdir_free(t);
}

static void dir_identity_mismatch(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	const char *peers[] = { "tcp:a:1", "tcp:b:2", "tcp:c:3" };
	char *id0 = dkv_dir_identity_new("kvpaxos", 0, peers, 3, 0);
	char *id1 = dkv_dir_identity_new("kvpaxos", 0, peers, 3, 1);
	char *idg = dkv_dir_identity_new("shardkv", 7, peers, 3, 0);
	assert_string_equal(id0, "dkv1 service=kvpaxos gid=0 me=0 peers=tcp:a:1,tcp:b:2,tcp:c:3");
	dkv_dir *d;
	assert_int_equal(dkv_dir_open(t, id0, NULL, &d), 0);
	assert_true(dkv_dir_fresh(d));
	dkv_dir_close(d);
	assert_int_equal(dkv_dir_open(t, id1, NULL, &d), EINVAL);
	assert_int_equal(dkv_dir_open(t, idg, NULL, &d), EINVAL);
	assert_int_equal(dkv_dir_open(t, id0, NULL, &d), 0);
	assert_false(dkv_dir_fresh(d));
	dkv_dir_close(d);
	/* a damaged IDENTITY is EIO, not a fresh start */
	char *idp = path2(t, "IDENTITY");
	file_flip(idp, DKV_SNAP_HEADER + 2);
	assert_int_equal(dkv_dir_open(t, id0, NULL, &d), EIO);
	free(idp);
	/* a directory with files but no IDENTITY is not dkv's */
	char *other = path2(t, "other");
	mkdir(other, 0700);
	char *f = path2(other, "notes.txt");
	FILE *fp = fopen(f, "w");
	fputs("hello", fp);
	fclose(fp);
	assert_int_equal(dkv_dir_open(other, id0, NULL, &d), EINVAL);
	/* bad arguments */
	assert_int_equal(dkv_dir_open("", id0, NULL, &d), EINVAL);
	assert_int_equal(dkv_dir_open(t, "", NULL, &d), EINVAL);
	/* a regular file in place of the directory */
	assert_int_equal(dkv_dir_open(f, id0, NULL, &d), ENOTDIR);
	free(f);
	free(other);
	free(id0);
	free(id1);
	free(idg);
	tmpdir_free(t);
}

/* Leftover temporary files are removed at open; files are 0600, the directory 0700. */
static void dir_tmp_cleanup_and_modes(void **state)
{
	(void)state;
	char *t = tmpdir_new();
	char *dp = path2(t, "new");
	dkv_dir *d = open_dir_ok(dp, NULL);
	assert_int_equal(dkv_snap_write(d, "s", "x", 1), 0);
	dkv_dir_close(d);
	struct stat st;
	assert_int_equal(stat(dp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	char *sp = path2(dp, "s");
	assert_int_equal(stat(sp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char *tp = path2(dp, "s.tmp");
	FILE *fp = fopen(tp, "w");
	fputs("junk", fp);
	fclose(fp);
	d = open_dir_ok(dp, NULL);
	assert_int_equal(stat(tp, &st), -1);
	assert_int_equal(dkv_dir_file_exists(d, "s"), 1);
	assert_int_equal(dkv_dir_remove(d, "s"), 0);
	assert_int_equal(dkv_dir_file_exists(d, "s"), 0);
	assert_int_equal(dkv_dir_remove(d, "s"), 0);
	dkv_dir_close(d);
	free(sp);
	free(tp);
	free(dp);
	tmpdir_free(t);
}

/* Unreadable directory: EACCES. As root mode bits do not bite, so the
 * simulated disk answers EACCES; the real one is checked when not root. */
static void dir_unreadable_eacces(void **state)
{
	(void)state;
	simdisk *sd = simdisk_new(th_seed());
	const dkv_fs *fs = simdisk_fs(sd);
	dkv_dir *d = open_dir_ok("/data", fs);
	dkv_dir_close(d);
	simdisk_deny(sd, "/data", EACCES);
	dkv_dir_opts o = { .fs = fs };
	assert_int_equal(dkv_dir_open("/data", ID, &o, &d), EACCES);
	/* cannot create it either */
	simdisk_deny(sd, "/", EACCES);
	assert_int_equal(dkv_dir_open("/other", ID, &o, &d), EACCES);
	simdisk_deny(sd, NULL, 0);
	d = open_dir_ok("/data", fs);
	dkv_dir_close(d);
	simdisk_free(sd);

	if (geteuid() != 0) {
		char *t = tmpdir_new();
		char *dp = path2(t, "locked");
		d = open_dir_ok(dp, NULL);
		dkv_dir_close(d);
		chmod(dp, 0);
		assert_int_equal(dkv_dir_open(dp, ID, NULL, &d), EACCES);
		chmod(dp, 0700);
		free(dp);
		tmpdir_free(t);
	} else {
		print_message("running as root: real-disk EACCES case skipped (mode bits do not bite)\n");
	}
}

/* no_fsync: everything written, nothing fsynced; a reopen without a power cut
 * sees it all. */
static void dir_no_fsync(void **state)
{
	(void)state;
	simdisk *sd = simdisk_new(th_seed());
	dkv_dir_opts o = { .fs = simdisk_fs(sd), .no_fsync = true };
	dkv_dir *d;
	assert_int_equal(dkv_dir_open("/nf", ID, &o, &d), 0);
	assert_true(dkv_dir_no_fsync(d));
	dkv_log *l;
	assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
	for (int i = 0; i < 10; i++) {
		uint64_t lsn;
		assert_int_equal(dkv_log_append(l, "r", 1, &lsn), 0);
		assert_int_equal(dkv_log_sync(l, lsn), 0);
	}
	assert_int_equal(dkv_snap_write(d, "s", "abc", 3), 0);
	dkv_log_close(l);
	dkv_dir_close(d);
	simdisk_stats st;
	simdisk_get_stats(sd, &st);
	assert_int_equal(st.fdatasyncs, 0);
	assert_int_equal(st.dir_syncs, 0);
	assert_int_equal(dkv_dir_open("/nf", ID, &o, &d), 0);
	collected c = { 0 };
	assert_int_equal(dkv_log_open(d, "wal", collect, &c, &l), 0);
	assert_int_equal(c.n, 10);
	dkv_log_close(l);
	dkv_dir_close(d);
	collected_free(&c);
	simdisk_free(sd);
}

/* ---------------------------------------------------------------- errors */

static void errors_sticky(void **state)
{
	(void)state;
	dkv_log_set_level(DKV_LOG_OFF);
	int kinds[] = { SIMDISK_OP_FDATASYNC, SIMDISK_OP_PWRITE };
	int errs[] = { EIO, ENOSPC };
	for (int k = 0; k < 2; k++) {
		simdisk *sd = simdisk_new(th_seed());
		dkv_dir *d = open_dir_ok("/e", simdisk_fs(sd));
		dkv_log *l;
		assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
		uint64_t lsn;
		assert_int_equal(dkv_log_append(l, "a", 1, &lsn), 0);
		assert_int_equal(dkv_log_sync(l, lsn), 0);
		simdisk_fail_op(sd, kinds[k], 1, errs[k]);
		assert_int_equal(dkv_log_append(l, "b", 1, &lsn), 0);
		assert_int_equal(dkv_log_sync(l, lsn), errs[k]);
		assert_int_equal(simdisk_fault_hits(sd), 1);
		assert_int_equal(dkv_dir_error(d), errs[k]);
		/* the disk works again, but the error stays: nothing is retried */
		assert_int_equal(dkv_log_sync(l, lsn), errs[k]);
		assert_true(dkv_log_durable_lsn(l) < lsn);
		assert_int_equal(dkv_log_append(l, "c", 1, &lsn), errs[k]);
		assert_int_equal(dkv_snap_write(d, "s", "x", 1), errs[k]);
		assert_int_equal(dkv_log_compact_begin(l), errs[k]);
		dkv_log *l2;
		assert_int_equal(dkv_log_open(d, "other", NULL, NULL, &l2), errs[k]);
		dkv_log_close(l);
		dkv_dir_close(d);
		simdisk_free(sd);
	}
	/* a failure in a snapshot write and in a compaction commit is sticky too */
	int ops[] = { SIMDISK_OP_RENAME, SIMDISK_OP_FSYNC_DIR };
	for (int k = 0; k < 2; k++) {
		simdisk *sd = simdisk_new(th_seed());
		dkv_dir *d = open_dir_ok("/e", simdisk_fs(sd));
		dkv_log *l;
		assert_int_equal(dkv_log_open(d, "wal", NULL, NULL, &l), 0);
		simdisk_fail_op(sd, ops[k], 1, EIO);
		if (k == 0)
			assert_int_equal(dkv_snap_write(d, "s", "x", 1), EIO);
		else {
			assert_int_equal(dkv_log_compact_begin(l), 0);
			assert_int_equal(dkv_log_compact_add(l, "x", 1), 0);
			assert_int_equal(dkv_log_compact_commit(l), EIO);
		}
		assert_int_equal(dkv_dir_error(d), EIO);
		assert_int_equal(dkv_log_append(l, "c", 1, NULL), EIO);
		dkv_log_close(l);
		dkv_dir_close(d);
		simdisk_free(sd);
	}
	dkv_log_set_level(DKV_LOG_WARN);
}

/* ---------------------------------------------------------------- power cuts */

/*
 * The workload: 8 keys; each record "k=<key> s=<seq>" sets key to seq (seq
 * increases globally). Syncs after some appends (several threads' worth of
 * batching is covered elsewhere); every 10 records a snapshot "snap=<n>"; every
 * 25 records a compaction whose live set is the current value of every key
 * (plus one record appended between begin and commit). The workload stops at
 * the first error (the disk died).
 *
 * `ack[key]` = the highest seq of that key covered by a sync (or compaction
 * commit) that returned 0; `snap_ack` = the last snapshot number acknowledged.
 * After the cut, recovery must open cleanly, and for every key: the recovered
 * value >= ack[key] and was really written for that key; snapshot >= snap_ack
 * and one that was written.
 */
enum { PC_KEYS = 8, PC_RECS = 100 };

typedef struct {
	uint64_t ack[PC_KEYS];
	uint64_t cur[PC_KEYS];
	uint64_t key_of_seq[PC_RECS + 200];
	int snap_ack;
	int snaps_written;
	bool completed;
} pc_model;

static int pc_append(dkv_log *l, pc_model *m, uint64_t *seq, int key, uint64_t *lsn)
{
	char rec[64];
	++*seq;
	m->key_of_seq[*seq] = (uint64_t)key;
	m->cur[key] = *seq;
	int n = snprintf(rec, sizeof rec, "k=%d s=%llu", key, (unsigned long long)*seq);
	return dkv_log_append(l, rec, (size_t)n, lsn);
}

static void pc_workload(const dkv_fs *fs, pc_model *m, uint64_t seed)
{
	memset(m, 0, sizeof *m);
	dkv_rng r;
	dkv_rng_seed(&r, seed);
	dkv_dir_opts o = { .fs = fs };
	dkv_dir *d;
	if (dkv_dir_open("/pc", ID, &o, &d) != 0)
		return;
	dkv_log *l;
	if (dkv_log_open(d, "wal", NULL, NULL, &l) != 0) {
		dkv_dir_close(d);
		return;
	}
	uint64_t seq = 0;
	uint64_t pending_seq[PC_KEYS] = { 0 };
	int rc = 0;
	for (int i = 0; i < PC_RECS && rc == 0; i++) {
		int key = (int)dkv_rng_below(&r, PC_KEYS);
		uint64_t lsn;
		rc = pc_append(l, m, &seq, key, &lsn);
		pending_seq[key] = seq;
		if (rc == 0 && dkv_rng_below(&r, 3) == 0) {
			rc = dkv_log_sync(l, lsn);
			if (rc == 0)
				for (int k = 0; k < PC_KEYS; k++)
					if (pending_seq[k] > m->ack[k])
						m->ack[k] = pending_seq[k];
		}
		if (rc == 0 && i % 10 == 9) {
			char s[32];
			int n = snprintf(s, sizeof s, "snap=%d", m->snaps_written + 1);
			m->snaps_written++;
			rc = dkv_snap_write(d, "state.snap", s, (size_t)n);
			if (rc == 0)
				m->snap_ack = m->snaps_written;
		}
		if (rc == 0 && i % 25 == 24) {
			rc = dkv_log_compact_begin(l);
			uint64_t live[PC_KEYS];
			memcpy(live, m->cur, sizeof live);
			/* one append between begin and commit: kept after the live set */
			int k2 = (int)dkv_rng_below(&r, PC_KEYS);
			if (rc == 0)
				rc = pc_append(l, m, &seq, k2, &lsn);
			pending_seq[k2] = seq;
			for (int k = 0; k < PC_KEYS && rc == 0; k++) {
				if (live[k] == 0)
					continue;
				char rec[64];
				int n = snprintf(rec, sizeof rec, "k=%d s=%llu", k, (unsigned long long)live[k]);
				rc = dkv_log_compact_add(l, rec, (size_t)n);
			}
			if (rc == 0) {
				rc = dkv_log_compact_commit(l);
				if (rc == 0)
					for (int k = 0; k < PC_KEYS; k++)
						if (pending_seq[k] > m->ack[k])
							m->ack[k] = pending_seq[k];
			} else if (dkv_dir_error(d) == 0) {
				dkv_log_compact_abort(l);
			}
		}
	}
	if (rc == 0) {
		rc = dkv_log_sync(l, dkv_log_last_lsn(l));
		if (rc == 0) {
			for (int k = 0; k < PC_KEYS; k++)
				if (pending_seq[k] > m->ack[k])
					m->ack[k] = pending_seq[k];
			m->completed = true;
		}
	}
	dkv_log_close(l);
	dkv_dir_close(d);
}

typedef struct {
	uint64_t val[PC_KEYS];
	const pc_model *m;
	int bad;
} pc_state;

static int pc_replay(void *arg, uint64_t lsn, const void *rec, size_t len)
{
	(void)lsn;
	pc_state *s = arg;
	char buf[64];
	if (len >= sizeof buf) {
		s->bad++;
		return 0;
	}
	memcpy(buf, rec, len);
	buf[len] = 0;
	int key;
	unsigned long long seq;
	if (sscanf(buf, "k=%d s=%llu", &key, &seq) != 2 || key < 0 || key >= PC_KEYS ||
	    seq > PC_RECS + 100 || s->m->key_of_seq[seq] != (uint64_t)key) {
		s->bad++; /* corrupt: not a record the workload wrote */
		return 0;
	}
	if (seq > s->val[key])
		s->val[key] = seq;
	return 0;
}

/* pc_check: recover after the cut; returns the number of violations. */
static int pc_check(const dkv_fs *fs, const pc_model *m, char *why, size_t whyn)
{
	int v = 0;
	why[0] = 0;
	dkv_dir_opts o = { .fs = fs };
	dkv_dir *d;
	int rc = dkv_dir_open("/pc", ID, &o, &d);
	if (rc != 0) {
		snprintf(why, whyn, "dir open: %s", strerror(rc));
		return 1;
	}
	pc_state s = { .m = m };
	dkv_log *l;
	rc = dkv_log_open(d, "wal", pc_replay, &s, &l);
	if (rc != 0) {
		snprintf(why, whyn, "log open: %s", strerror(rc));
		dkv_dir_close(d);
		return 1;
	}
	if (s.bad) {
		snprintf(why, whyn, "%d corrupt records", s.bad);
		v += s.bad;
	}
	for (int k = 0; k < PC_KEYS; k++)
		if (s.val[k] < m->ack[k]) {
			snprintf(why, whyn, "key %d: recovered seq %llu < acknowledged %llu", k,
			         (unsigned long long)s.val[k], (unsigned long long)m->ack[k]);
			v++;
		}
	void *b;
	size_t n;
	rc = dkv_snap_read(d, "state.snap", &b, &n);
	if (rc == 0) {
		int sn = -1;
		char buf[32] = { 0 };
		memcpy(buf, b, n < 31 ? n : 31);
		if (sscanf(buf, "snap=%d", &sn) != 1 || sn < m->snap_ack || sn > m->snaps_written) {
			snprintf(why, whyn, "snapshot %s, acknowledged %d", buf, m->snap_ack);
			v++;
		}
		free(b);
	} else if (rc != ENOENT || m->snap_ack > 0) {
		snprintf(why, whyn, "snapshot read: %s (acknowledged %d)", strerror(rc), m->snap_ack);
		v++;
	}
	/* and the recovered log takes appends again */
	if (dkv_log_append(l, "k=0 s=1", 7, NULL) != 0 || dkv_log_sync(l, dkv_log_last_lsn(l)) != 0) {
		snprintf(why, whyn, "cannot append after recovery");
		v++;
	}
	dkv_log_close(l);
	dkv_dir_close(d);
	return v;
}

/* Run the workload with a cut after boundary k, for every k; returns the
 * number of cut points with a violation. */
static int pc_all_cuts(bool fsync_noop, uint64_t seed, uint64_t *boundaries, uint64_t *torn)
{
	dkv_log_set_level(DKV_LOG_OFF);
	/* the uncut run counts the boundaries */
	simdisk *sd = simdisk_new(seed);
	pc_model m;
	pc_workload(simdisk_fs(sd), &m, seed);
	assert_true(m.completed);
	uint64_t total = simdisk_boundaries(sd);
	simdisk_free(sd);
	int failing = 0;
	char why[256], first_why[256] = "";
	uint64_t first_k = 0;
	*torn = 0;
	for (uint64_t k = 1; k <= total + 1; k++) {
		sd = simdisk_new(seed * 1000003u + k);
		simdisk_set_fsync_noop(sd, fsync_noop);
		simdisk_cut_after(sd, k);
		pc_workload(simdisk_fs(sd), &m, seed); /* same workload: same seed */
		simdisk_power_cut(sd);
		simdisk_set_fsync_noop(sd, false);
		int v = pc_check(simdisk_fs(sd), &m, why, sizeof why);
		if (v > 0) {
			if (failing == 0) {
				first_k = k;
				snprintf(first_why, sizeof first_why, "%s", why);
			}
			failing++;
		}
		simdisk_stats st;
		simdisk_get_stats(sd, &st);
		*torn += st.torn_writes;
		simdisk_free(sd);
	}
	dkv_log_set_level(DKV_LOG_WARN);
	*boundaries = total;
	if (failing)
		print_message("power cuts%s: %d of %llu cut points fail (first at %llu: %s)\n",
		              fsync_noop ? " with fsync a no-op" : "", failing,
		              (unsigned long long)total + 1, (unsigned long long)first_k, first_why);
	return failing;
}

static void powercut_every_boundary(void **state)
{
	(void)state;
	uint64_t seed = th_seed();
	for (int rep = 0; rep < 3; rep++) {
		uint64_t total, torn;
		int failing = pc_all_cuts(false, seed + (uint64_t)rep, &total, &torn);
		print_message("power cuts: workload seed %llu, %llu write boundaries, cut at each: %d "
		              "failing, %llu torn writes\n",
		              (unsigned long long)(seed + (uint64_t)rep), (unsigned long long)total, failing,
		              (unsigned long long)torn);
		assert_true(total > 80);  /* the workload really has this many boundaries */
		assert_true(torn > 0);    /* and the cuts really tore writes */
		assert_int_equal(failing, 0);
	}
}

/* The harness bites: with fsync a no-op, the very same check must fail. */
static void powercut_fsync_noop_must_fail(void **state)
{
	(void)state;
	uint64_t total, torn;
	int failing = pc_all_cuts(true, th_seed(), &total, &torn);
	assert_true(failing > 0);
}

/* ---------------------------------------------------------------- fuzz corpus */

/* Each file under tests/fuzz-corpus/{log,snap}/ goes through the readers: they
 * must not crash (ASan run), and the log parser's verdict must be consistent. */
static int replay_dir(const char *dir, int kind)
{
	DIR *dp = opendir(dir);
	if (dp == NULL)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(dp)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char *p = path2(dir, e->d_name);
		FILE *fp = fopen(p, "rb");
		free(p);
		if (fp == NULL)
			continue;
		static uint8_t buf[1 << 20];
		size_t len = fread(buf, 1, sizeof buf, fp);
		fclose(fp);
		uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees overreads */
		memcpy(copy, buf, len);
		if (kind == 0) {
			size_t ve, bo;
			bool torn;
			int rc = dkv_log_parse(copy, len, NULL, NULL, &ve, &bo, &torn);
			assert_true(ve <= len && bo <= len);
			if (rc == 0 && !torn)
				assert_int_equal(ve, len);
		} else {
			const void *pl;
			size_t plen;
			if (dkv_snap_parse(copy, len, &pl, &plen) == 0)
				assert_int_equal(plen + DKV_SNAP_HEADER, len);
		}
		free(copy);
		n++;
	}
	closedir(dp);
	return n;
}

static void fuzz_corpus_readers(void **state)
{
	(void)state;
	int n = replay_dir("tests/fuzz-corpus/log", 0) + replay_dir("tests/fuzz-corpus/snap", 1);
	print_message("fuzz corpus: %d inputs replayed through the log and snapshot readers\n", n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(crc_check_values),
		cmocka_unit_test(crc_table_vs_hw),
		cmocka_unit_test(log_append_replay),
		cmocka_unit_test(log_group_commit_threads),
		cmocka_unit_test(log_group_commit_gated),
		cmocka_unit_test(log_torn_tail_cut),
		cmocka_unit_test(log_middle_corruption_eio),
		cmocka_unit_test(log_compaction),
		cmocka_unit_test(snap_roundtrip_and_bad_checksum),
		cmocka_unit_test(snap_atomic_under_power_cuts),
		cmocka_unit_test(dir_lock_busy),
		cmocka_unit_test(dir_identity_mismatch),
		cmocka_unit_test(dir_tmp_cleanup_and_modes),
		cmocka_unit_test(dir_unreadable_eacces),
		cmocka_unit_test(dir_no_fsync),
		cmocka_unit_test(errors_sticky),
		cmocka_unit_test(powercut_every_boundary),
		cmocka_unit_test(powercut_fsync_noop_must_fail),
		cmocka_unit_test(fuzz_corpus_readers),
	};
	return th_run_suite("storage", tests);
}
