/*
 * src/storage.h — durable storage for replicas, service-agnostic (part of
 * libdkvrpc; internal, never installed).
 *
 * Pieces, bottom up:
 *   - dkv_fs: a small file-I/O vtable (`void *impl`). dkv_fs_posix() is the
 *     real one; tests/lib/simdisk.h is an in-memory disk that can lose power.
 *     Everything below does its I/O through a dkv_fs, never through libc.
 *   - dkv_dir: a replica's data directory: created if missing (0700, files
 *     0600), locked (flock; a second opener in any process fails EBUSY),
 *     stamped with an identity string (a later open with another identity
 *     fails EINVAL), fresh or not, no_fsync mode. Leftover temp files
 *     ("*.tmp") are removed at open.
 *   - dkv_log: an append-only file of CRC-framed records with group commit
 *     (one fdatasync covers every record appended since the last one; waiters
 *     block on a condition variable, one of them leads the I/O) and
 *     compaction by atomic rewrite (see below). Recovery replays every valid
 *     record at open; a torn tail is cut off, any other damage is EIO.
 *   - snapshots: whole-file blobs written atomically (temp, fdatasync, rename
 *     over the old one, fsync the directory) and verified on read.
 *   - pure parsers of both formats (no I/O), for recovery and for fuzzing.
 *
 * Conventions. Functions of this header return 0 or a positive errno value
 * (EIO, ENOSPC, EACCES, EBUSY, EINVAL, ENOENT, ENOMEM...): the start functions
 * of the services set errno from it as API.md "Durability, restarts and
 * catch-up" prescribes. Every failure that concerns a file writes a log line
 * naming the file (DKV_ERROR). dkv_fs methods return >= 0 on success and
 * -errno on failure.
 *
 * Failure is sticky per directory: once a write, fdatasync, fsync, rename or
 * truncate of the directory or of any of its logs and snapshots failed, every
 * later call on the directory and its logs fails with that same error
 * (dkv_dir_error); a failed fsync is never retried as if it had worked. The
 * caller then stops the replica (API.md: as X_kill would, with a log line).
 *
 * Record checksum: CRC-32C (Castagnoli), dkv_crc32c() in src/crc32c.c — not
 * zlib's crc32, so that libdkvrpc needs no -lz (API.md's link line has none).
 *
 * Thread safety: a dkv_dir and its logs may be used from any thread; each log
 * has its own mutex. Snapshot calls on different names may run concurrently;
 * on the same name the caller serialises them.
 */
#ifndef DKV_STORAGE_H
#define DKV_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------- checksum */

/* dkv_crc32c: CRC-32C of buf[0..n), continuing from `crc` (start with 0).
 * dkv_crc32c(0, "123456789", 9) == 0xE3069283. SSE4.2 when the CPU has it. */
uint32_t dkv_crc32c(uint32_t crc, const void *buf, size_t n);
/* The portable table-driven version (for tests: hardware vs table). */
uint32_t dkv_crc32c_sw(uint32_t crc, const void *buf, size_t n);
/* dkv_crc32c_hw_available: whether dkv_crc32c uses the SSE4.2 instruction. */
bool dkv_crc32c_hw_available(void);

/* ---------------------------------------------------------------- file I/O */

/* Open flags of dkv_fs.open (our own bits, not O_*). */
enum {
	DKV_FS_READ = 0,        /* read only */
	DKV_FS_WRITE = 1 << 0,  /* read and write */
	DKV_FS_CREATE = 1 << 1, /* create if missing (mode 0600) */
	DKV_FS_EXCL = 1 << 2,   /* with CREATE: fail EEXIST if it exists */
	DKV_FS_TRUNC = 1 << 3,  /* truncate to 0 at open */
};

/*
 * dkv_fs: file I/O. Paths are full paths (the directory's path + "/" + name).
 * Descriptors are small ints of the implementation. Every method returns >= 0
 * on success, -errno on failure. `impl` is passed back to every method.
 *   open(path, flags)           a regular file; the descriptor
 *   close(fd)                   also releases its lock
 *   pread(fd, buf, n, off)      bytes read (short only at end of file)
 *   pwrite(fd, buf, n, off)     bytes written (all of them, or an error)
 *   fdatasync(fd)               the file's data and size are durable
 *   ftruncate(fd, len)
 *   size(fd, *out)              current size in bytes
 *   lock(fd)                    exclusive, non-blocking: -EBUSY if held by
 *                               another open file description (any process)
 *   rename(from, to)            atomic replace of `to`
 *   unlink(path)
 *   mkdir(path)                 mode 0700; -EEXIST if it exists
 *   fsync_dir(path)             the directory's entries (creates, renames,
 *                               unlinks) are durable
 *   list(path, fn, arg)         calls fn(arg, name) for each entry except "."
 *                               and ".."; stops and returns fn's value if < 0
 *   access_dir(path)            0 if the directory exists and can be read,
 *                               written and searched; -ENOENT, -ENOTDIR,
 *                               -EACCES...
 */
typedef struct dkv_fs {
	void *impl;
	int (*open)(void *impl, const char *path, int flags);
	int (*close)(void *impl, int fd);
	ssize_t (*pread)(void *impl, int fd, void *buf, size_t n, uint64_t off);
	ssize_t (*pwrite)(void *impl, int fd, const void *buf, size_t n, uint64_t off);
	int (*fdatasync)(void *impl, int fd);
	int (*ftruncate)(void *impl, int fd, uint64_t len);
	int (*size)(void *impl, int fd, uint64_t *out);
	int (*lock)(void *impl, int fd);
	int (*rename)(void *impl, const char *from, const char *to);
	int (*unlink)(void *impl, const char *path);
	int (*mkdir)(void *impl, const char *path);
	int (*fsync_dir)(void *impl, const char *path);
	int (*list)(void *impl, const char *path, int (*fn)(void *arg, const char *name), void *arg);
	int (*access_dir)(void *impl, const char *path);
} dkv_fs;

/* dkv_fs_posix: the real file system (static; never freed). */
const dkv_fs *dkv_fs_posix(void);

/*
 * dkv_fs_set_default: TEST HOOK. The dkv_fs that dkv_dir_open uses when its
 * opts give none (NULL = back to dkv_fs_posix()). Process-wide on purpose: it
 * lets a test put a simulated disk under services started through the public
 * *_start_opts functions. Borrowed: it must outlive every directory opened
 * through it. Set it before starting servers; never in production code.
 */
void dkv_fs_set_default(const dkv_fs *fs);
const dkv_fs *dkv_fs_get_default(void);

/* ---------------------------------------------------------------- directory */

typedef struct dkv_dir dkv_dir;

typedef struct {
	const dkv_fs *fs; /* NULL = dkv_fs_get_default() */
	bool no_fsync;    /* write, never fsync (dkv_server_opts.no_fsync) */
} dkv_dir_opts;

/*
 * dkv_dir_open: open (creating it if missing) the data directory `path` for
 * the replica `identity` (copied; e.g. from dkv_dir_identity_new). Takes the
 * directory's lock (file "LOCK"), removes leftover "*.tmp" files, and either
 * checks the recorded identity (file "IDENTITY", checksummed) or, in a fresh
 * directory, records it durably before returning.
 * A fresh directory: none existed, or it was empty (apart from LOCK and temp
 * files). A non-empty directory without IDENTITY is refused (EINVAL): it is
 * not dkv's.
 * Returns 0 and *out, or: EACCES (cannot read/write/create), EBUSY (locked by
 * another opener, in this process or another), EINVAL (another identity, not
 * a dkv directory, bad arguments), EIO (IDENTITY fails its checksum), ENOTDIR,
 * ENOMEM. Each failure writes a log line naming the path.
 * `opts` NULL = defaults.
 */
int dkv_dir_open(const char *path, const char *identity, const dkv_dir_opts *opts, dkv_dir **out);

/* dkv_dir_close: release the lock and free. Every log of the directory must be
 * closed first. NULL is a no-op. */
void dkv_dir_close(dkv_dir *d);

/* dkv_dir_fresh: the directory held no dkv state when it was opened (so a
 * replica with `restart` must rejoin without voting). */
bool dkv_dir_fresh(const dkv_dir *d);

/* dkv_dir_path: the directory's path (borrowed, valid until close). */
const char *dkv_dir_path(const dkv_dir *d);

/* dkv_dir_error: 0, or the sticky error that stopped this directory. */
int dkv_dir_error(const dkv_dir *d);

/* dkv_dir_fail: record `err` (> 0) as the sticky error if none is set yet
 * (for callers that detect damage themselves). Returns the sticky error. */
int dkv_dir_fail(dkv_dir *d, int err);

/* dkv_dir_no_fsync: whether this directory was opened with no_fsync. */
bool dkv_dir_no_fsync(const dkv_dir *d);

/* Counters (for tests and benchmarks), cumulative over the directory's life. */
typedef struct {
	uint64_t fdatasyncs;   /* fdatasync calls on logs (group-commit syncs) */
	uint64_t records;      /* log records appended */
	uint64_t bytes;        /* log bytes written (framing included) */
	uint64_t compactions;  /* log rewrites committed */
	uint64_t snapshots;    /* snapshot files written */
} dkv_dir_stats;
void dkv_dir_get_stats(const dkv_dir *d, dkv_dir_stats *out);

/*
 * dkv_dir_identity_new: the identity string of a replica, in one format for
 * every service: "dkv1 service=S gid=G me=I peers=P0,P1,...". `peers` may be
 * NULL when npeers is 0 (a lone viewservice: pass its own name as peers[0]).
 * Returns a malloc'ed string (caller frees with free) or NULL (ENOMEM).
 */
char *dkv_dir_identity_new(const char *service, int64_t gid, const char *const *peers,
                           int npeers, int me);

/* dkv_dir_file_exists: whether `name` exists in the directory (0 = no,
 * 1 = yes, or -errno). */
int dkv_dir_file_exists(dkv_dir *d, const char *name);

/* dkv_dir_remove: unlink `name` in the directory and fsync the directory
 * (unless no_fsync). ENOENT is not an error. */
int dkv_dir_remove(dkv_dir *d, const char *name);

/* ---------------------------------------------------------------- log */

/*
 * The log file `name` in a directory: a sequence of records, each framed as
 *   u32 length | u32 masked CRC-32C of the 4 length bytes | u32 masked CRC-32C
 *   of the payload | payload          (little-endian)
 * The header's own checksum tells a damaged length (EIO) from a short last
 * record (torn).
 * No file header. LSNs are process-local: at open the replayed records are
 * numbered 1..n in file order, appends continue from n+1; they are not stored.
 *
 * Recovery (at open): every valid record, in order, goes to `replay`. A torn
 * tail — the last record short (its length runs past the end of the file), a
 * checksum failure of a record that ends exactly at the end of the file, a
 * partial frame header, or an all-zero tail — is cut off (ftruncate +
 * fdatasync) with a log line (DKV_WARN: file, offset, bytes cut). Any other
 * checksum failure (a bad header or payload checksum with more bytes after
 * the record) refuses the open with EIO and a log line naming the file and
 * the offset. A length above DKV_LOG_MAX_RECORD is damage (EIO).
 *
 * Compaction: dkv_log_compact_begin / _add / _commit rewrites the log as a new
 * file holding only the live records given by the caller followed by every
 * record appended since begin, then atomically replaces the old file with it
 * (write "NAME.tmp", fdatasync, rename over NAME, fsync the directory). One
 * file per log, no segments: the live set is small after a snapshot (it is
 * what the snapshot does not cover), and a rewrite keeps recovery trivial.
 */
#define DKV_LOG_MAX_RECORD (256u * 1024u * 1024u)
#define DKV_LOG_FRAME 12u /* header bytes per record */

typedef struct dkv_log dkv_log;

/* replay callback: one valid record (borrowed, valid during the call). Return
 * 0 to go on, or a positive errno value to fail the open with it. */
typedef int (*dkv_log_replay_fn)(void *arg, uint64_t lsn, const void *rec, size_t len);

/*
 * dkv_log_open: open (creating if missing) the log `name` of `d`, replay it
 * through `replay` (NULL: skip the records), and return the log, positioned
 * for appends. Returns 0, the replay callback's error, EIO (damage), ENOMEM,
 * EINVAL (bad name), or the directory's sticky error.
 */
int dkv_log_open(dkv_dir *d, const char *name, dkv_log_replay_fn replay, void *arg,
                 dkv_log **out);

/* dkv_log_close: free the log. Records appended but not synced are written
 * (not fsynced) first, so a killed-process restart keeps them; a failure there
 * is logged. No other call on the log may be in progress. NULL is a no-op. */
void dkv_log_close(dkv_log *l);

/*
 * dkv_log_append: append one record (copied into the log's buffer: no I/O,
 * never blocks on the disk, except that while a compaction commits it waits
 * for the lock). *lsn (may be NULL) = its LSN. Returns 0, EINVAL (len >
 * DKV_LOG_MAX_RECORD), ENOMEM, or the sticky error. dkv_log_appendv: the
 * record is the concatenation of iov[0..iovcnt).
 */
int dkv_log_append(dkv_log *l, const void *rec, size_t len, uint64_t *lsn);
int dkv_log_appendv(dkv_log *l, const struct iovec *iov, int iovcnt, uint64_t *lsn);

/*
 * dkv_log_sync: return once every record up to `lsn` is durable (written and
 * fdatasynced; with no_fsync, written). Group commit: if no sync is running,
 * this caller leads: it writes everything buffered so far, fdatasyncs once,
 * and wakes every waiter it covered; otherwise it waits on the log's condition
 * variable for the running sync and then leads the next one if still needed.
 * lsn 0 or below the durable LSN returns at once; lsn above the last
 * appended is clamped to it. Returns 0 or the sticky error.
 */
int dkv_log_sync(dkv_log *l, uint64_t lsn);

/* dkv_log_last_lsn: LSN of the last record appended (0: none). */
uint64_t dkv_log_last_lsn(dkv_log *l);
/* dkv_log_durable_lsn: every record up to this LSN is durable. Never blocks. */
uint64_t dkv_log_durable_lsn(dkv_log *l);
/* dkv_log_size: bytes of the log file plus bytes buffered. */
uint64_t dkv_log_size(dkv_log *l);

/*
 * Compaction (rewrite). The caller:
 *   dkv_log_compact_begin(l)          waits for a running sync; from now on
 *                                     syncs wait until commit or abort; appends
 *                                     go on (they land after the live records).
 *   dkv_log_compact_add(l, rec, len)  a live record (copied), any number.
 *   dkv_log_compact_commit(l)         writes NAME.tmp = live records + records
 *                                     appended since begin, fdatasync, rename,
 *                                     fsync dir; everything appended so far is
 *                                     then durable (waiters are woken).
 *   dkv_log_compact_abort(l)          drops the rewrite (the log is unchanged).
 * The live records must carry every effect of the records appended before
 * begin that still matters: those records are dropped (even if not yet
 * synced). A record appended after begin is kept verbatim, so it may appear
 * both in the live set and after it: replay must be idempotent for it. Only
 * one compaction at a time per log; begin, add, commit/abort from one thread.
 * Returns 0, EINVAL (a compaction is already running / none running), ENOMEM,
 * or the sticky error (a failure of commit's I/O is sticky).
 */
int dkv_log_compact_begin(dkv_log *l);
int dkv_log_compact_add(dkv_log *l, const void *rec, size_t len);
int dkv_log_compact_commit(dkv_log *l);
void dkv_log_compact_abort(dkv_log *l);

/* ---------------------------------------------------------------- snapshots */

/*
 * A snapshot file `name`: one blob, framed as
 *   "DKVSNAP1" | u64 length (LE) | u32 CRC-32C of payload (LE) | u32 CRC-32C of
 *   the 20 bytes before it (LE) | payload
 * dkv_snap_write: atomically replace `name` with buf[0..len): write
 * "NAME.tmp", fdatasync it, rename it over NAME, fsync the directory (no
 * fsync with no_fsync). After a power cut the file is the old one or the new
 * one, never a mix. Returns 0, ENOMEM, or the (sticky) I/O error.
 * dkv_snap_writev: the blob is the concatenation of iov[0..iovcnt).
 */
int dkv_snap_write(dkv_dir *d, const char *name, const void *buf, size_t len);
int dkv_snap_writev(dkv_dir *d, const char *name, const struct iovec *iov, int iovcnt);

/*
 * dkv_snap_read: read and verify `name`. Returns 0 with *buf (malloc'ed, never
 * NULL, even for an empty blob; the caller frees it with free) and *len;
 * ENOENT (no such snapshot; no log line); EIO (bad magic, length or checksum:
 * a log line naming the file); ENOMEM; or an I/O error (EACCES...).
 */
int dkv_snap_read(dkv_dir *d, const char *name, void **buf, size_t *len);

/* ---------------------------------------------------------------- parsers */

/*
 * dkv_log_parse: the pure log reader (no I/O) that recovery runs.
 * Calls fn(arg, lsn, rec, len) for each valid record of buf[0..n) (lsn from
 * 1), stopping at the first error the callback returns (that error is
 * returned). On return: *valid_end = offset just after the last valid record;
 * *bad_off = offset of the first invalid byte (== n when none).
 * Returns 0 (all valid, or a torn tail from *valid_end to n: the caller cuts
 * it), EIO (damage before the tail: *bad_off says where), or fn's error.
 * *torn = there is a torn tail to cut (valid_end < n and the result is 0).
 */
int dkv_log_parse(const void *buf, size_t n, dkv_log_replay_fn fn, void *arg,
                  size_t *valid_end, size_t *bad_off, bool *torn);

/* dkv_log_frame: write the DKV_LOG_FRAME-byte frame header of a record into hdr. */
void dkv_log_frame(uint8_t hdr[DKV_LOG_FRAME], const void *rec, size_t len);

/*
 * dkv_snap_parse: the pure snapshot reader. On 0, *payload points into buf
 * (borrowed) and *plen is its length; EIO if buf[0..n) is not exactly one
 * valid snapshot.
 */
#define DKV_SNAP_HEADER 24u
int dkv_snap_parse(const void *buf, size_t n, const void **payload, size_t *plen);
/* dkv_snap_header: fill the 24-byte header of a snapshot of `len` bytes whose
 * payload CRC-32C is `crc`. */
void dkv_snap_header(uint8_t hdr[DKV_SNAP_HEADER], uint64_t len, uint32_t crc);

#endif /* DKV_STORAGE_H */
