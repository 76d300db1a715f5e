/*
 * tests/lib/simdisk.h — a simulated disk under the storage interface (dkv_fs,
 * src/storage.h), in memory, that can lose power.
 *
 * Per file it keeps what is durable (as of the last fdatasync) and what is only
 * written; per directory, which entries (creates, renames, unlinks) are durable
 * (as of the last fsync of that directory) and which only happened. A power cut
 * (simdisk_power_cut) drops everything not durable and tears the last write:
 * if the most recent pwrite was not yet covered by an fdatasync, a random
 * (seeded) prefix of it survives on top of the durable image. Directories
 * themselves (mkdir) are durable at once (a simplification: dkv creates its
 * data directory once and fsyncs the parent anyway).
 *
 * Write boundaries: every mutating call (pwrite, ftruncate, fdatasync,
 * fsync_dir, rename, unlink, a create, mkdir) counts one. simdisk_cut_after(k)
 * makes the disk die right after the k-th boundary (the k-th call itself
 * succeeds): every later call fails with EIO until simdisk_power_cut, which
 * then computes the post-crash image. So "cut at boundary k" = run the
 * workload with cut_after(k), then power_cut, then recover.
 *
 * Faults: simdisk_fail_op (the n-th next call of a kind fails with an errno),
 * simdisk_deny (a directory answers EACCES or another errno), and
 * simdisk_set_fsync_noop (fdatasync and fsync_dir succeed but make nothing
 * durable: the switch that proves the cut tests bite).
 *
 * Descriptors are never reused; after a power cut every old descriptor fails
 * EBADF and every lock is released. Thread-safe (one mutex).
 */
#ifndef DKV_TEST_SIMDISK_H
#define DKV_TEST_SIMDISK_H

#include <stdbool.h>
#include <stdint.h>

#include "storage.h"

typedef struct simdisk simdisk;

/* simdisk_new: an empty disk (only "/" exists). NULL on ENOMEM. */
simdisk *simdisk_new(uint64_t seed);
/* simdisk_free: NULL-safe. No descriptor may be in use. */
void simdisk_free(simdisk *sd);
/* simdisk_fs: the dkv_fs of this disk (borrowed, valid until simdisk_free). */
const dkv_fs *simdisk_fs(simdisk *sd);

/* Write boundaries counted so far. */
uint64_t simdisk_boundaries(simdisk *sd);
/* simdisk_cut_after: die right after boundary number k (counted from the
 * disk's creation; 0 = never). */
void simdisk_cut_after(simdisk *sd, uint64_t k);
/* simdisk_dead: the disk died (cut_after reached) and was not power-cut yet. */
bool simdisk_dead(simdisk *sd);
/* simdisk_power_cut: lose what is not durable, tear the last write, forget
 * descriptors and locks, and come back alive (boundaries keep counting). */
void simdisk_power_cut(simdisk *sd);
/* Bytes of the last write that a power cut kept (for tests: torn or not). */
typedef struct {
	uint64_t cuts;        /* power cuts so far */
	uint64_t torn_writes; /* cuts that kept a strict prefix of a write (0 < kept < len) */
	uint64_t dropped;     /* cuts that dropped at least one non-durable byte or entry */
	uint64_t fdatasyncs;  /* fdatasync calls */
	uint64_t dir_syncs;   /* fsync_dir calls */
} simdisk_stats;
void simdisk_get_stats(simdisk *sd, simdisk_stats *out);

/* simdisk_set_fsync_noop: fdatasync and fsync_dir return 0 and do nothing. */
void simdisk_set_fsync_noop(simdisk *sd, bool on);

/* Kinds of calls for simdisk_fail_op. */
enum {
	SIMDISK_OP_OPEN = 1,
	SIMDISK_OP_PWRITE,
	SIMDISK_OP_FDATASYNC,
	SIMDISK_OP_FSYNC_DIR,
	SIMDISK_OP_RENAME,
	SIMDISK_OP_FTRUNCATE,
	SIMDISK_OP_PREAD,
};
/* simdisk_fail_op: the nth (1 = the next) call of kind `op` fails with -err
 * (once). One pending injection at a time; 0 for nth cancels. */
void simdisk_fail_op(simdisk *sd, int op, unsigned nth, int err);
/* simdisk_fault_hits: how many injected faults fired so far. */
unsigned simdisk_fault_hits(simdisk *sd);

/* simdisk_deny: access_dir(path), list(path) and open of files directly in
 * `path` fail with -err (e.g. EACCES); err 0 removes the rule. One rule. */
void simdisk_deny(simdisk *sd, const char *path, int err);

/* simdisk_corrupt: xor byte `off` of the file `path` with `x`, in its durable
 * and its current image (a bit rot). 0, or -ENOENT / -EINVAL (off past end). */
int simdisk_corrupt(simdisk *sd, const char *path, uint64_t off, uint8_t x);
/* simdisk_file_size: current size of `path`, or -ENOENT. */
int64_t simdisk_file_size(simdisk *sd, const char *path);
/* simdisk_file_read: copy up to n bytes of the current image of `path` into
 * buf; bytes copied, or -ENOENT. */
int64_t simdisk_file_read(simdisk *sd, const char *path, void *buf, uint64_t n);
/* simdisk_file_write: replace the current and durable image of `path` (which
 * must exist) with buf[0..n) (for crafting damaged files). 0 or -ENOENT. */
int simdisk_file_write(simdisk *sd, const char *path, const void *buf, uint64_t n);

#endif /* DKV_TEST_SIMDISK_H */
