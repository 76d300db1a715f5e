/*
 * fuzz/fuzz_snap.c — the snapshot reader: dkv_snap_parse on untrusted bytes;
 * a valid one must be exactly header + payload with the header we would write;
 * and dkv_snap_read of the same bytes as a file on the simulated disk agrees.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "simdisk.h"
#include "storage.h"

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
	const void *p;
	size_t plen;
	int rc = dkv_snap_parse(data, size, &p, &plen);
	if (rc != 0 && rc != EIO)
		abort();
	if (rc == 0) {
		uint8_t hdr[DKV_SNAP_HEADER];
		if (plen + DKV_SNAP_HEADER != size || p != data + DKV_SNAP_HEADER)
			abort();
		dkv_snap_header(hdr, plen, dkv_crc32c(0, p, plen));
		if (memcmp(hdr, data, DKV_SNAP_HEADER) != 0)
			abort();
	}
	simdisk *sd = simdisk_new(1);
	dkv_dir_opts o = { .fs = simdisk_fs(sd) };
	dkv_dir *d;
	if (dkv_dir_open("/f", "fuzz", &o, &d) != 0)
		abort();
	const dkv_fs *fs = simdisk_fs(sd);
	int fd = fs->open(fs->impl, "/f/s", DKV_FS_WRITE | DKV_FS_CREATE);
	if (fd < 0 || fs->pwrite(fs->impl, fd, data, size, 0) != (ssize_t)size)
		abort();
	fs->close(fs->impl, fd);
	void *b;
	size_t bl;
	int rc2 = dkv_snap_read(d, "s", &b, &bl);
	if (rc2 != rc)
		abort();
	if (rc2 == 0) {
		if (bl != plen || (bl && memcmp(b, p, bl) != 0))
			abort();
		free(b);
	}
	dkv_dir_close(d);
	simdisk_free(sd);
	return 0;
}
