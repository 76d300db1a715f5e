/*
 * fuzz/fuzz_log.c — the log reader: dkv_log_parse on untrusted bytes, then the
 * same bytes as a log file on the simulated disk through recovery
 * (dkv_log_open), which must agree with the parser: EIO iff the parser says
 * damage; otherwise the same records replayed and the file cut to the end of
 * the last valid record.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "simdisk.h"
#include "storage.h"

typedef struct {
	uint64_t n;
	uint32_t crc; /* of every record, in order */
} tally;

static int count(void *arg, uint64_t lsn, const void *rec, size_t len)
{
	tally *t = arg;
	if (lsn != t->n + 1)
		abort();
	t->n++;
	t->crc = dkv_crc32c(t->crc, rec, len);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	dkv_log_set_level(DKV_LOG_OFF);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tally a = { 0 }, b = { 0 };
	size_t ve, bo;
	bool torn;
	int rc = dkv_log_parse(data, size, count, &a, &ve, &bo, &torn);
	if (ve > size || bo > size || (rc != 0 && rc != EIO))
		abort();
	if (rc == 0 && !torn && ve != size)
		abort();
	if (rc == 0 && torn && ve >= size)
		abort();
	if (rc == EIO && bo != ve)
		abort();

	simdisk *sd = simdisk_new(1);
	dkv_dir_opts o = { .fs = simdisk_fs(sd) };
	dkv_dir *d;
	if (dkv_dir_open("/f", "fuzz", &o, &d) != 0)
		abort();
	const dkv_fs *fs = simdisk_fs(sd);
	int fd = fs->open(fs->impl, "/f/wal", DKV_FS_WRITE | DKV_FS_CREATE);
	if (fd < 0 || fs->pwrite(fs->impl, fd, data, size, 0) != (ssize_t)size)
		abort();
	fs->fdatasync(fs->impl, fd);
	fs->close(fs->impl, fd);
	dkv_log *l;
	int rc2 = dkv_log_open(d, "wal", count, &b, &l);
	if (rc == EIO) {
		if (rc2 != EIO || b.n != 0)
			abort();
	} else {
		if (rc2 != 0 || b.n != a.n || b.crc != a.crc)
			abort();
		if (simdisk_file_size(sd, "/f/wal") != (int64_t)ve)
			abort();
		/* the recovered log takes an append and replays it after the others */
		if (dkv_log_append(l, "z", 1, NULL) != 0 || dkv_log_sync(l, a.n + 1) != 0)
			abort();
		dkv_log_close(l);
		tally c = { 0 };
		if (dkv_log_open(d, "wal", count, &c, &l) != 0 || c.n != a.n + 1)
			abort();
		dkv_log_close(l);
	}
	dkv_dir_close(d);
	simdisk_free(sd);
	return 0;
}
