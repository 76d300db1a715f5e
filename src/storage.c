/*
 * src/storage.c — data directory, group-commit log, atomic snapshots (see
 * storage.h for the contract; this comment is the design).
 *
 * Directory. "LOCK" holds an flock for the directory's life (flock conflicts
 * between open file descriptions, so a second opener in the same process is
 * refused too). "IDENTITY" is a snapshot file (same framing, same atomic
 * write) holding the identity string; it is written, synced and the
 * directory synced before dkv_dir_open returns on a fresh directory, so no
 * state can ever be durable in a directory whose identity is not.
 *
 * Log and group commit. Appends only copy the framed record into the log's
 * buffer (under the log's mutex). dkv_log_sync(lsn) elects a leader: the first
 * caller that finds no sync running swaps the buffer out, drops the mutex,
 * pwrites the whole batch at the end of the file and fdatasyncs once, then
 * retakes the mutex, advances durable_lsn to the last LSN of its batch and
 * broadcasts. Callers that find a sync running wait on the condition
 * variable; when woken they either are covered or lead the next batch (which
 * holds everything appended meanwhile). One I/O in flight per log; no
 * timers, no sleeps. Appends never wait for the disk.
 *
 * Compaction rewrites the log (no segments): begin marks the buffer offset and
 * holds off leaders; commit writes NAME.tmp = live records + the buffer tail
 * appended since begin, fdatasyncs it, renames it over NAME and fsyncs the
 * directory. A power cut before the rename leaves the old log (and a .tmp
 * that the next open removes), after it the new one.
 *
 * Errors. Any write/sync/rename/truncate failure is stored in the directory
 * (d->err, first one wins) and every later call on the directory or its logs
 * returns it; a sync leader that failed wakes every waiter with the error.
 *
 * Recovery cuts a torn tail and refuses other damage (rules in storage.h and
 * in dkv_log_parse below).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv_internal.h"
#include "storage.h"

/* ---------------------------------------------------------------- helpers */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* LevelDB's mask: a CRC stored next to the data it covers is rotated and
 * offset, so a CRC of bytes containing CRCs does not degenerate. */
static uint32_t crc_mask(uint32_t c)
{
	return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = dkv_malloc(a + b + 2);
	if (p == NULL)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

static bool name_ok(const char *name)
{
	return name != NULL && name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0 && strlen(name) < 200;
}

static bool ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/* ---------------------------------------------------------------- posix fs */

static int px_open(void *impl, const char *path, int flags)
{
	(void)impl;
	int f = O_CLOEXEC | ((flags & DKV_FS_WRITE) ? O_RDWR : O_RDONLY);
	if (flags & DKV_FS_CREATE)
		f |= O_CREAT;
	if (flags & DKV_FS_EXCL)
		f |= O_EXCL;
	if (flags & DKV_FS_TRUNC)
		f |= O_TRUNC;
	int fd;
	do
		fd = open(path, f, 0600);
	while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

static int px_close(void *impl, int fd)
{
	(void)impl;
	return close(fd) == 0 ? 0 : -errno;
}

static ssize_t px_pread(void *impl, int fd, void *buf, size_t n, uint64_t off)
{
	(void)impl;
	size_t done = 0;
	while (done < n) {
		ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static ssize_t px_pwrite(void *impl, int fd, const void *buf, size_t n, uint64_t off)
{
	(void)impl;
	size_t done = 0;
	while (done < n) {
		ssize_t r = pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

static int px_fdatasync(void *impl, int fd)
{
	(void)impl;
	return fdatasync(fd) == 0 ? 0 : -errno;
}

static int px_ftruncate(void *impl, int fd, uint64_t len)
{
	(void)impl;
	return ftruncate(fd, (off_t)len) == 0 ? 0 : -errno;
}

static int px_size(void *impl, int fd, uint64_t *out)
{
	(void)impl;
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -errno;
	*out = (uint64_t)st.st_size;
	return 0;
}

static int px_lock(void *impl, int fd)
{
	(void)impl;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

static int px_rename(void *impl, const char *from, const char *to)
{
	(void)impl;
	return rename(from, to) == 0 ? 0 : -errno;
}

static int px_unlink(void *impl, const char *path)
{
	(void)impl;
	return unlink(path) == 0 ? 0 : -errno;
}

static int px_mkdir(void *impl, const char *path)
{
	(void)impl;
	return mkdir(path, 0700) == 0 ? 0 : -errno;
}

static int px_fsync_dir(void *impl, const char *path)
{
	(void)impl;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

static int px_list(void *impl, const char *path, int (*fn)(void *arg, const char *name), void *arg)
{
	(void)impl;
	DIR *dp = opendir(path);
	if (dp == NULL)
		return -errno;
	int rc = 0;
	struct dirent *e;
	errno = 0;
	while ((e = readdir(dp)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		rc = fn(arg, e->d_name);
		if (rc < 0)
			break;
		errno = 0;
	}
	if (rc == 0 && errno != 0)
		rc = -errno;
	closedir(dp);
	return rc < 0 ? rc : 0;
}

static int px_access_dir(void *impl, const char *path)
{
	(void)impl;
	struct stat st;
	if (stat(path, &st) != 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return access(path, R_OK | W_OK | X_OK) == 0 ? 0 : -errno;
}

static const dkv_fs posix_fs = {
	.impl = NULL,
	.open = px_open,
	.close = px_close,
	.pread = px_pread,
	.pwrite = px_pwrite,
	.fdatasync = px_fdatasync,
	.ftruncate = px_ftruncate,
	.size = px_size,
	.lock = px_lock,
	.rename = px_rename,
	.unlink = px_unlink,
	.mkdir = px_mkdir,
	.fsync_dir = px_fsync_dir,
	.list = px_list,
	.access_dir = px_access_dir,
};

const dkv_fs *dkv_fs_posix(void)
{
	return &posix_fs;
}

static _Atomic(const dkv_fs *) default_fs;

void dkv_fs_set_default(const dkv_fs *fs)
{
	atomic_store(&default_fs, fs);
}

const dkv_fs *dkv_fs_get_default(void)
{
	const dkv_fs *fs = atomic_load(&default_fs);
	return fs != NULL ? fs : &posix_fs;
}

/* ---------------------------------------------------------------- parsers */

void dkv_log_frame(uint8_t hdr[DKV_LOG_FRAME], const void *rec, size_t len)
{
	put32(hdr, (uint32_t)len);
	put32(hdr + 4, crc_mask(dkv_crc32c(0, hdr, 4)));
	put32(hdr + 8, crc_mask(dkv_crc32c(0, rec, len)));
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/*
 * The rules, at the first record that is not valid, at offset `off`:
 *   fewer than DKV_LOG_FRAME bytes left            torn (partial header)
 *   every byte from off to the end is zero         torn (zero-filled tail)
 *   header checksum fails                          EIO
 *   length > DKV_LOG_MAX_RECORD                    EIO
 *   length runs past the end                       torn (short last record)
 *   payload checksum fails, record ends at the end torn
 *   payload checksum fails, bytes follow           EIO
 */
int dkv_log_parse(const void *buf, size_t n, dkv_log_replay_fn fn, void *arg, size_t *valid_end,
                  size_t *bad_off, bool *torn)
{
	const uint8_t *b = buf;
	size_t off = 0;
	uint64_t lsn = 0;
	int rc = 0;
	bool t = false;
	while (off < n) {
		size_t rem = n - off;
		if (rem < DKV_LOG_FRAME || all_zero(b + off, rem)) {
			t = true;
			break;
		}
		uint32_t len = get32(b + off);
		if (crc_mask(dkv_crc32c(0, b + off, 4)) != get32(b + off + 4) || len > DKV_LOG_MAX_RECORD) {
			rc = EIO;
			break;
		}
		if ((size_t)len > rem - DKV_LOG_FRAME) {
			t = true;
			break;
		}
		const uint8_t *p = b + off + DKV_LOG_FRAME;
		if (crc_mask(dkv_crc32c(0, p, len)) != get32(b + off + 8)) {
			if ((size_t)len == rem - DKV_LOG_FRAME)
				t = true;
			else
				rc = EIO;
			break;
		}
		lsn++;
		if (fn != NULL) {
			int e = fn(arg, lsn, p, len);
			if (e != 0) {
				rc = e;
				break;
			}
		}
		off += DKV_LOG_FRAME + len;
	}
	if (valid_end)
		*valid_end = off;
	if (bad_off)
		*bad_off = (off < n) ? off : n;
	if (torn)
		*torn = (rc == 0 && t);
	return rc;
}

static const char snap_magic[8] = { 'D', 'K', 'V', 'S', 'N', 'A', 'P', '1' };

void dkv_snap_header(uint8_t hdr[DKV_SNAP_HEADER], uint64_t len, uint32_t crc)
{
	memcpy(hdr, snap_magic, 8);
	put64(hdr + 8, len);
	put32(hdr + 16, crc);
	put32(hdr + 20, dkv_crc32c(0, hdr, 20));
}

int dkv_snap_parse(const void *buf, size_t n, const void **payload, size_t *plen)
{
	const uint8_t *b = buf;
	if (n < DKV_SNAP_HEADER || memcmp(b, snap_magic, 8) != 0)
		return EIO;
	if (dkv_crc32c(0, b, 20) != get32(b + 20))
		return EIO;
	uint64_t len = get64(b + 8);
	if (len != (uint64_t)(n - DKV_SNAP_HEADER))
		return EIO;
	if (dkv_crc32c(0, b + DKV_SNAP_HEADER, (size_t)len) != get32(b + 16))
		return EIO;
	if (payload)
		*payload = b + DKV_SNAP_HEADER;
	if (plen)
		*plen = (size_t)len;
	return 0;
}

/* ---------------------------------------------------------------- directory */

struct dkv_dir {
	const dkv_fs *fs;
	char *path;
	bool fresh;
	bool no_fsync;
	int lock_fd;
	_Atomic int err; /* sticky: first I/O failure */
	_Atomic uint64_t n_fdatasyncs, n_records, n_bytes, n_compactions, n_snapshots;
};

int dkv_dir_error(const dkv_dir *d)
{
	return atomic_load(&((dkv_dir *)d)->err);
}

int dkv_dir_fail(dkv_dir *d, int err)
{
	int expected = 0;
	if (err > 0 && atomic_compare_exchange_strong(&d->err, &expected, err))
		DKV_ERROR("storage %s: stopped by error: %s", d->path, strerror(err));
	return atomic_load(&d->err);
}

/* io_fail: an I/O call on `what` (a path) failed with -rc: make it sticky, log. */
static int io_fail(dkv_dir *d, const char *op, const char *what, int rc)
{
	int e = rc < 0 ? -rc : (rc > 0 ? rc : EIO);
	DKV_ERROR("storage: %s %s: %s", op, what, strerror(e));
	return dkv_dir_fail(d, e);
}

bool dkv_dir_fresh(const dkv_dir *d)
{
	return d->fresh;
}

const char *dkv_dir_path(const dkv_dir *d)
{
	return d->path;
}

bool dkv_dir_no_fsync(const dkv_dir *d)
{
	return d->no_fsync;
}

void dkv_dir_get_stats(const dkv_dir *d, dkv_dir_stats *out)
{
	dkv_dir *m = (dkv_dir *)d;
	out->fdatasyncs = atomic_load(&m->n_fdatasyncs);
	out->records = atomic_load(&m->n_records);
	out->bytes = atomic_load(&m->n_bytes);
	out->compactions = atomic_load(&m->n_compactions);
	out->snapshots = atomic_load(&m->n_snapshots);
}

char *dkv_dir_identity_new(const char *service, int64_t gid, const char *const *peers, int npeers,
                           int me)
{
	size_t n = strlen(service ? service : "") + 96;
	for (int i = 0; i < npeers; i++)
		n += strlen(peers[i]) + 1;
	char *s = dkv_malloc(n);
	if (s == NULL)
		return NULL;
	int w = snprintf(s, n, "dkv1 service=%s gid=%" PRId64 " me=%d peers=", service ? service : "",
	                 gid, me);
	size_t at = (size_t)w;
	for (int i = 0; i < npeers; i++)
		at += (size_t)snprintf(s + at, n - at, "%s%s", i ? "," : "", peers[i]);
	return s;
}

/* read_whole: the file `path` in memory (malloc'ed, +1 byte, NUL-terminated). */
static int read_fd_whole(const dkv_fs *fs, int fd, uint8_t **out, size_t *n)
{
	uint64_t sz;
	int rc = fs->size(fs->impl, fd, &sz);
	if (rc < 0)
		return -rc;
	if (sz > (uint64_t)SIZE_MAX / 2)
		return EFBIG;
	uint8_t *b = dkv_malloc((size_t)sz + 1);
	if (b == NULL)
		return ENOMEM;
	ssize_t r = fs->pread(fs->impl, fd, b, (size_t)sz, 0);
	if (r < 0) {
		free(b);
		return (int)-r;
	}
	b[r] = 0;
	*out = b;
	*n = (size_t)r;
	return 0;
}

static int fsync_dir(dkv_dir *d)
{
	if (d->no_fsync)
		return 0;
	int rc = d->fs->fsync_dir(d->fs->impl, d->path);
	if (rc < 0)
		return io_fail(d, "fsync directory", d->path, rc);
	return 0;
}

int dkv_dir_file_exists(dkv_dir *d, const char *name)
{
	if (!name_ok(name))
		return -EINVAL;
	char *p = join(d->path, name);
	if (p == NULL)
		return -ENOMEM;
	int fd = d->fs->open(d->fs->impl, p, DKV_FS_READ);
	free(p);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	d->fs->close(d->fs->impl, fd);
	return 1;
}

int dkv_dir_remove(dkv_dir *d, const char *name)
{
	int e = dkv_dir_error(d);
	if (e)
		return e;
	if (!name_ok(name))
		return EINVAL;
	char *p = join(d->path, name);
	if (p == NULL)
		return ENOMEM;
	int rc = d->fs->unlink(d->fs->impl, p);
	if (rc < 0 && rc != -ENOENT) {
		e = io_fail(d, "unlink", p, rc);
		free(p);
		return e;
	}
	free(p);
	return rc == -ENOENT ? 0 : fsync_dir(d);
}

typedef struct {
	char **names;
	size_t n, cap;
} name_list;

static int collect_name(void *arg, const char *name)
{
	name_list *l = arg;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 16;
		char **nn = dkv_realloc(l->names, nc * sizeof *nn);
		if (nn == NULL)
			return -ENOMEM;
		l->names = nn;
		l->cap = nc;
	}
	l->names[l->n] = dkv_strdup(name);
	if (l->names[l->n] == NULL)
		return -ENOMEM;
	l->n++;
	return 0;
}

static void name_list_free(name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
}

static char *parent_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		return dkv_strdup(".");
	if (slash == path)
		return dkv_strdup("/");
	char *p = dkv_malloc((size_t)(slash - path) + 1);
	if (p) {
		memcpy(p, path, (size_t)(slash - path));
		p[slash - path] = 0;
	}
	return p;
}

int dkv_dir_open(const char *path, const char *identity, const dkv_dir_opts *opts, dkv_dir **out)
{
	dkv_lib_init();
	*out = NULL;
	if (path == NULL || path[0] == '\0' || identity == NULL || identity[0] == '\0')
		return EINVAL;
	dkv_dir *d = dkv_calloc(1, sizeof *d);
	if (d == NULL)
		return ENOMEM;
	d->fs = (opts && opts->fs) ? opts->fs : dkv_fs_get_default();
	d->no_fsync = opts ? opts->no_fsync : false;
	d->lock_fd = -1;
	/* Strip trailing slashes (but keep "/"). */
	size_t pl = strlen(path);
	while (pl > 1 && path[pl - 1] == '/')
		pl--;
	d->path = dkv_malloc(pl + 1);
	if (d->path == NULL) {
		free(d);
		return ENOMEM;
	}
	memcpy(d->path, path, pl);
	d->path[pl] = 0;
	const dkv_fs *fs = d->fs;
	int rc = 0;
	name_list names = { 0 };
	char *lockp = NULL;
	uint8_t *idbuf = NULL;

	int mk = fs->mkdir(fs->impl, d->path);
	if (mk < 0 && mk != -EEXIST) {
		rc = -mk;
		DKV_ERROR("storage: cannot create data directory %s: %s", d->path, strerror(rc));
		goto fail;
	}
	if (mk == 0 && !d->no_fsync) {
		char *parent = parent_of(d->path);
		if (parent == NULL) {
			rc = ENOMEM;
			goto fail;
		}
		int r = fs->fsync_dir(fs->impl, parent);
		if (r < 0) {
			rc = -r;
			DKV_ERROR("storage: fsync directory %s: %s", parent, strerror(rc));
			free(parent);
			goto fail;
		}
		free(parent);
	}
	int ac = fs->access_dir(fs->impl, d->path);
	if (ac < 0) {
		rc = -ac;
		DKV_ERROR("storage: data directory %s cannot be used: %s", d->path, strerror(rc));
		goto fail;
	}
	lockp = join(d->path, "LOCK");
	if (lockp == NULL) {
		rc = ENOMEM;
		goto fail;
	}
	d->lock_fd = fs->open(fs->impl, lockp, DKV_FS_WRITE | DKV_FS_CREATE);
	if (d->lock_fd < 0) {
		rc = -d->lock_fd;
		d->lock_fd = -1;
		DKV_ERROR("storage: %s: %s", lockp, strerror(rc));
		goto fail;
	}
	int lk = fs->lock(fs->impl, d->lock_fd);
	if (lk < 0) {
		rc = -lk;
		DKV_ERROR("storage: data directory %s is in use by another server (lock %s: %s)", d->path,
		          lockp, strerror(rc));
		goto fail;
	}
	int ls = fs->list(fs->impl, d->path, collect_name, &names);
	if (ls < 0) {
		rc = -ls;
		DKV_ERROR("storage: cannot list data directory %s: %s", d->path, strerror(rc));
		goto fail;
	}
	bool has_id = false, others = false, removed = false;
	for (size_t i = 0; i < names.n; i++) {
		const char *nm = names.names[i];
		if (ends_with(nm, ".tmp")) {
			char *p = join(d->path, nm);
			if (p == NULL) {
				rc = ENOMEM;
				goto fail;
			}
			int u = fs->unlink(fs->impl, p);
			if (u < 0 && u != -ENOENT) {
				rc = -u;
				DKV_ERROR("storage: cannot remove leftover %s: %s", p, strerror(rc));
				free(p);
				goto fail;
			}
			DKV_INFO("storage: removed leftover temporary file %s", p);
			free(p);
			removed = true;
		} else if (strcmp(nm, "IDENTITY") == 0) {
			has_id = true;
		} else if (strcmp(nm, "LOCK") != 0) {
			others = true;
		}
	}
	if (removed && !d->no_fsync) {
		int r = fs->fsync_dir(fs->impl, d->path);
		if (r < 0) {
			rc = -r;
			DKV_ERROR("storage: fsync directory %s: %s", d->path, strerror(rc));
			goto fail;
		}
	}
	if (has_id) {
		void *b;
		size_t bl;
		rc = dkv_snap_read(d, "IDENTITY", &b, &bl);
		if (rc != 0) {
			if (rc == ENOENT)
				rc = EIO;
			goto fail; /* dkv_snap_read logged it */
		}
		idbuf = b;
		if (bl != strlen(identity) || memcmp(b, identity, bl) != 0) {
			rc = EINVAL;
			DKV_ERROR("storage: data directory %s belongs to another replica: it is \"%.*s\", "
			          "this is \"%s\"",
			          d->path, (int)(bl > 300 ? 300 : bl), (const char *)b, identity);
			goto fail;
		}
		d->fresh = false;
	} else if (others) {
		rc = EINVAL;
		DKV_ERROR("storage: %s is not a dkv data directory (files but no IDENTITY); refusing it",
		          d->path);
		goto fail;
	} else {
		d->fresh = true;
		rc = dkv_snap_write(d, "IDENTITY", identity, strlen(identity));
		if (rc != 0)
			goto fail;
	}
	free(idbuf);
	free(lockp);
	name_list_free(&names);
	*out = d;
	return 0;
fail:
	free(idbuf);
	free(lockp);
	name_list_free(&names);
	if (d->lock_fd >= 0)
		fs->close(fs->impl, d->lock_fd);
	free(d->path);
	free(d);
	return rc;
}

void dkv_dir_close(dkv_dir *d)
{
	if (d == NULL)
		return;
	if (d->lock_fd >= 0)
		d->fs->close(d->fs->impl, d->lock_fd);
	free(d->path);
	free(d);
}

/* ---------------------------------------------------------------- snapshots */

int dkv_snap_writev(dkv_dir *d, const char *name, const struct iovec *iov, int iovcnt)
{
	int e = dkv_dir_error(d);
	if (e)
		return e;
	if (!name_ok(name) || iovcnt < 0)
		return EINVAL;
	const dkv_fs *fs = d->fs;
	char *path = join(d->path, name);
	size_t tl = strlen(name) + 5;
	char *tname = dkv_malloc(tl);
	if (path == NULL || tname == NULL) {
		free(path);
		free(tname);
		return ENOMEM;
	}
	snprintf(tname, tl, "%s.tmp", name);
	char *tmp = join(d->path, tname);
	free(tname);
	if (tmp == NULL) {
		free(path);
		return ENOMEM;
	}
	uint64_t len = 0;
	uint32_t crc = 0;
	for (int i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		crc = dkv_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
	}
	uint8_t hdr[DKV_SNAP_HEADER];
	dkv_snap_header(hdr, len, crc);
	int rc = 0;
	int fd = fs->open(fs->impl, tmp, DKV_FS_WRITE | DKV_FS_CREATE | DKV_FS_TRUNC);
	if (fd < 0) {
		rc = io_fail(d, "create", tmp, fd);
		goto out;
	}
	ssize_t w = fs->pwrite(fs->impl, fd, hdr, sizeof hdr, 0);
	uint64_t off = sizeof hdr;
	for (int i = 0; w >= 0 && i < iovcnt; i++) {
		if (iov[i].iov_len == 0)
			continue;
		w = fs->pwrite(fs->impl, fd, iov[i].iov_base, iov[i].iov_len, off);
		off += iov[i].iov_len;
	}
	if (w < 0) {
		rc = io_fail(d, "write", tmp, (int)w);
		fs->close(fs->impl, fd);
		goto out;
	}
	if (!d->no_fsync) {
		int s = fs->fdatasync(fs->impl, fd);
		if (s < 0) {
			rc = io_fail(d, "fdatasync", tmp, s);
			fs->close(fs->impl, fd);
			goto out;
		}
	}
	fs->close(fs->impl, fd);
	int r = fs->rename(fs->impl, tmp, path);
	if (r < 0) {
		rc = io_fail(d, "rename to", path, r);
		goto out;
	}
	rc = fsync_dir(d);
	if (rc == 0)
		atomic_fetch_add(&d->n_snapshots, 1);
out:
	free(tmp);
	free(path);
	return rc;
}

int dkv_snap_write(dkv_dir *d, const char *name, const void *buf, size_t len)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	return dkv_snap_writev(d, name, &v, 1);
}

int dkv_snap_read(dkv_dir *d, const char *name, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	if (!name_ok(name))
		return EINVAL;
	const dkv_fs *fs = d->fs;
	char *path = join(d->path, name);
	if (path == NULL)
		return ENOMEM;
	int fd = fs->open(fs->impl, path, DKV_FS_READ);
	if (fd < 0) {
		int rc = -fd;
		if (rc != ENOENT)
			DKV_ERROR("storage: cannot open snapshot %s: %s", path, strerror(rc));
		free(path);
		return rc;
	}
	uint8_t *b;
	size_t n;
	int rc = read_fd_whole(fs, fd, &b, &n);
	fs->close(fs->impl, fd);
	if (rc != 0) {
		DKV_ERROR("storage: cannot read snapshot %s: %s", path, strerror(rc));
		free(path);
		return rc;
	}
	const void *p;
	size_t pl;
	if (dkv_snap_parse(b, n, &p, &pl) != 0) {
		DKV_ERROR("storage: snapshot %s is damaged (%zu bytes: bad header, length or checksum); "
		          "refusing to start from it",
		          path, n);
		free(b);
		free(path);
		return EIO;
	}
	memmove(b, p, pl);
	*buf = b;
	*len = pl;
	free(path);
	return 0;
}

/* ---------------------------------------------------------------- log */

typedef struct {
	uint8_t *p;
	size_t len, cap;
} bytes;

static int bytes_reserve(bytes *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t nc = b->cap ? b->cap : 4096;
	while (nc < b->len + more)
		nc *= 2;
	uint8_t *np = dkv_realloc(b->p, nc);
	if (np == NULL)
		return ENOMEM;
	b->p = np;
	b->cap = nc;
	return 0;
}

struct dkv_log {
	dkv_dir *d;
	char *path;
	char *tmp_path;
	pthread_mutex_t mu; /* guards every field below */
	pthread_cond_t cv;  /* a sync finished, or a compaction ended */
	int fd;
	uint64_t file_end;    /* bytes in the file (written by a leader) */
	bytes buf;            /* records appended, not yet handed to a leader */
	bytes spare;          /* the other buffer (the one a leader is writing) */
	uint64_t last_lsn;    /* last appended */
	uint64_t durable_lsn; /* everything up to it is durable */
	bool syncing;         /* a leader is doing I/O without the mutex */
	size_t inflight;      /* bytes the leader is writing */
	bool compacting;      /* between compact_begin and commit/abort */
	size_t compact_off;   /* buf.len at compact_begin */
	bytes live;           /* the rewrite's live records (compacting thread only) */
};

typedef struct {
	dkv_log_replay_fn fn;
	void *arg;
} replay_ctx;

int dkv_log_open(dkv_dir *d, const char *name, dkv_log_replay_fn replay, void *arg, dkv_log **out)
{
	*out = NULL;
	int e = dkv_dir_error(d);
	if (e)
		return e;
	if (!name_ok(name) || ends_with(name, ".tmp") || strcmp(name, "LOCK") == 0 ||
	    strcmp(name, "IDENTITY") == 0)
		return EINVAL;
	const dkv_fs *fs = d->fs;
	dkv_log *l = dkv_calloc(1, sizeof *l);
	if (l == NULL)
		return ENOMEM;
	l->d = d;
	l->fd = -1;
	l->path = join(d->path, name);
	size_t tl = strlen(name) + 5;
	char *tname = dkv_malloc(tl);
	if (tname != NULL) {
		snprintf(tname, tl, "%s.tmp", name);
		l->tmp_path = join(d->path, tname);
		free(tname);
	}
	int rc = 0;
	uint8_t *data = NULL;
	if (l->path == NULL || l->tmp_path == NULL) {
		rc = ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&l->mu, NULL);
	dkv_cond_init(&l->cv);
	l->fd = fs->open(fs->impl, l->path, DKV_FS_WRITE);
	if (l->fd == -ENOENT) {
		l->fd = fs->open(fs->impl, l->path, DKV_FS_WRITE | DKV_FS_CREATE | DKV_FS_EXCL);
		if (l->fd >= 0) {
			/* A new file: its directory entry must be durable before any
			 * record in it counts as durable. */
			rc = fsync_dir(d);
			if (rc != 0)
				goto fail_locks;
		}
	}
	if (l->fd < 0) {
		rc = -l->fd;
		l->fd = -1;
		DKV_ERROR("storage: cannot open log %s: %s", l->path, strerror(rc));
		goto fail_locks;
	}
	size_t n = 0;
	rc = read_fd_whole(fs, l->fd, &data, &n);
	if (rc != 0) {
		DKV_ERROR("storage: cannot read log %s: %s", l->path, strerror(rc));
		goto fail_locks;
	}
	size_t valid_end, bad_off;
	bool torn;
	rc = dkv_log_parse(data, n, NULL, NULL, &valid_end, &bad_off, &torn);
	if (rc != 0) {
		DKV_ERROR("storage: log %s is damaged at offset %zu (of %zu bytes): a record before the "
		          "end fails its checksum; refusing to start",
		          l->path, bad_off, n);
		rc = EIO;
		goto fail_locks;
	}
	rc = dkv_log_parse(data, valid_end, replay, arg, NULL, NULL, NULL);
	if (rc != 0)
		goto fail_locks;
	uint64_t nrec = 0;
	{
		/* count records (the replay above may have had no callback) */
		size_t off = 0;
		while (off < valid_end) {
			off += DKV_LOG_FRAME + get32(data + off);
			nrec++;
		}
	}
	if (torn) {
		DKV_WARN("storage: log %s: cutting a torn tail at offset %zu (%zu bytes after the last "
		         "valid record, written after the last sync)",
		         l->path, valid_end, n - valid_end);
		int t = fs->ftruncate(fs->impl, l->fd, valid_end);
		if (t < 0) {
			rc = io_fail(d, "truncate", l->path, t);
			goto fail_locks;
		}
		if (!d->no_fsync) {
			t = fs->fdatasync(fs->impl, l->fd);
			if (t < 0) {
				rc = io_fail(d, "fdatasync", l->path, t);
				goto fail_locks;
			}
		}
	}
	free(data);
	l->file_end = valid_end;
	l->last_lsn = l->durable_lsn = nrec;
	*out = l;
	return 0;
fail_locks:
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
fail:
	free(data);
	if (l->fd >= 0)
		fs->close(fs->impl, l->fd);
	free(l->path);
	free(l->tmp_path);
	free(l);
	return rc;
}

static int append_locked(dkv_log *l, const struct iovec *iov, int iovcnt, uint64_t *lsn)
{
	size_t len = 0;
	uint32_t crc = 0;
	for (int i = 0; i < iovcnt; i++) {
		len += iov[i].iov_len;
		crc = dkv_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
	}
	if (len > DKV_LOG_MAX_RECORD)
		return EINVAL;
	if (bytes_reserve(&l->buf, DKV_LOG_FRAME + len) != 0)
		return ENOMEM;
	uint8_t *h = l->buf.p + l->buf.len;
	put32(h, (uint32_t)len);
	put32(h + 4, crc_mask(dkv_crc32c(0, h, 4)));
	put32(h + 8, crc_mask(crc));
	size_t at = l->buf.len + DKV_LOG_FRAME;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len)
			memcpy(l->buf.p + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	l->buf.len = at;
	l->last_lsn++;
	if (lsn)
		*lsn = l->last_lsn;
	atomic_fetch_add(&l->d->n_records, 1);
	return 0;
}

int dkv_log_appendv(dkv_log *l, const struct iovec *iov, int iovcnt, uint64_t *lsn)
{
	if (iovcnt < 0)
		return EINVAL;
	pthread_mutex_lock(&l->mu);
	int rc = dkv_dir_error(l->d);
	if (rc == 0)
		rc = append_locked(l, iov, iovcnt, lsn);
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int dkv_log_append(dkv_log *l, const void *rec, size_t len, uint64_t *lsn)
{
	struct iovec v = { .iov_base = (void *)rec, .iov_len = len };
	return dkv_log_appendv(l, &v, 1, lsn);
}

/* lead_sync: mu held, !syncing, !compacting, buf non-empty. Writes and syncs
 * the buffer; returns with mu held. */
static int lead_sync(dkv_log *l)
{
	dkv_dir *d = l->d;
	const dkv_fs *fs = d->fs;
	bytes batch = l->buf;
	l->buf = l->spare;
	l->buf.len = 0;
	l->spare = (bytes){ 0 };
	uint64_t target = l->last_lsn, off = l->file_end;
	int fd = l->fd;
	l->syncing = true;
	l->inflight = batch.len;
	pthread_mutex_unlock(&l->mu);

	int rc = 0;
	ssize_t w = fs->pwrite(fs->impl, fd, batch.p, batch.len, off);
	if (w < 0)
		rc = io_fail(d, "write", l->path, (int)w);
	else {
		atomic_fetch_add(&d->n_bytes, batch.len);
		if (!d->no_fsync) {
			int s = fs->fdatasync(fs->impl, fd);
			atomic_fetch_add(&d->n_fdatasyncs, 1);
			if (s < 0)
				rc = io_fail(d, "fdatasync", l->path, s);
		}
	}

	pthread_mutex_lock(&l->mu);
	l->syncing = false;
	l->inflight = 0;
	if (rc == 0) {
		l->file_end = off + batch.len;
		l->durable_lsn = target;
	}
	batch.len = 0;
	l->spare = batch;
	pthread_cond_broadcast(&l->cv);
	return rc;
}

int dkv_log_sync(dkv_log *l, uint64_t lsn)
{
	pthread_mutex_lock(&l->mu);
	if (lsn > l->last_lsn)
		lsn = l->last_lsn;
	int rc;
	for (;;) {
		rc = dkv_dir_error(l->d);
		if (rc != 0 || l->durable_lsn >= lsn)
			break;
		if (l->syncing || l->compacting) {
			pthread_cond_wait(&l->cv, &l->mu);
			continue;
		}
		rc = lead_sync(l);
		if (rc != 0)
			break;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

uint64_t dkv_log_last_lsn(dkv_log *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t v = l->last_lsn;
	pthread_mutex_unlock(&l->mu);
	return v;
}

uint64_t dkv_log_durable_lsn(dkv_log *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t v = l->durable_lsn;
	pthread_mutex_unlock(&l->mu);
	return v;
}

uint64_t dkv_log_size(dkv_log *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t v = l->file_end + l->buf.len + l->inflight;
	pthread_mutex_unlock(&l->mu);
	return v;
}

void dkv_log_close(dkv_log *l)
{
	if (l == NULL)
		return;
	const dkv_fs *fs = l->d->fs;
	if (dkv_dir_error(l->d) == 0 && l->buf.len > 0 && !l->compacting) {
		ssize_t w = fs->pwrite(fs->impl, l->fd, l->buf.p, l->buf.len, l->file_end);
		if (w < 0)
			io_fail(l->d, "write", l->path, (int)w);
	}
	fs->close(fs->impl, l->fd);
	free(l->buf.p);
	free(l->spare.p);
	free(l->live.p);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l->path);
	free(l->tmp_path);
	free(l);
}

int dkv_log_compact_begin(dkv_log *l)
{
	pthread_mutex_lock(&l->mu);
	int rc = dkv_dir_error(l->d);
	if (rc == 0 && l->compacting)
		rc = EINVAL;
	while (rc == 0 && l->syncing) {
		pthread_cond_wait(&l->cv, &l->mu);
		rc = dkv_dir_error(l->d);
	}
	if (rc == 0 && l->compacting) /* another thread began meanwhile */
		rc = EINVAL;
	if (rc == 0) {
		l->compacting = true;
		l->compact_off = l->buf.len;
		l->live.len = 0;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int dkv_log_compact_add(dkv_log *l, const void *rec, size_t len)
{
	int rc = dkv_dir_error(l->d);
	if (rc)
		return rc;
	if (!l->compacting)
		return EINVAL;
	if (len > DKV_LOG_MAX_RECORD)
		return EINVAL;
	if (bytes_reserve(&l->live, DKV_LOG_FRAME + len) != 0)
		return ENOMEM;
	dkv_log_frame(l->live.p + l->live.len, rec, len);
	if (len)
		memcpy(l->live.p + l->live.len + DKV_LOG_FRAME, rec, len);
	l->live.len += DKV_LOG_FRAME + len;
	return 0;
}

void dkv_log_compact_abort(dkv_log *l)
{
	pthread_mutex_lock(&l->mu);
	l->compacting = false;
	l->live.len = 0;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

int dkv_log_compact_commit(dkv_log *l)
{
	dkv_dir *d = l->d;
	const dkv_fs *fs = d->fs;
	pthread_mutex_lock(&l->mu);
	if (!l->compacting) {
		pthread_mutex_unlock(&l->mu);
		return EINVAL;
	}
	int rc = dkv_dir_error(d);
	if (rc != 0) {
		l->compacting = false;
		pthread_cond_broadcast(&l->cv);
		pthread_mutex_unlock(&l->mu);
		return rc;
	}
	/* Take the whole buffer; only its tail (appended since begin) is kept. */
	bytes batch = l->buf;
	l->buf = l->spare;
	l->buf.len = 0;
	l->spare = (bytes){ 0 };
	size_t tail_off = l->compact_off;
	uint64_t target = l->last_lsn;
	l->syncing = true;
	pthread_mutex_unlock(&l->mu);

	int nfd = fs->open(fs->impl, l->tmp_path, DKV_FS_WRITE | DKV_FS_CREATE | DKV_FS_TRUNC);
	if (nfd < 0) {
		rc = io_fail(d, "create", l->tmp_path, nfd);
		goto done;
	}
	ssize_t w = 0;
	if (l->live.len)
		w = fs->pwrite(fs->impl, nfd, l->live.p, l->live.len, 0);
	if (w >= 0 && batch.len > tail_off)
		w = fs->pwrite(fs->impl, nfd, batch.p + tail_off, batch.len - tail_off, l->live.len);
	if (w < 0) {
		rc = io_fail(d, "write", l->tmp_path, (int)w);
		goto done;
	}
	if (!d->no_fsync) {
		int s = fs->fdatasync(fs->impl, nfd);
		atomic_fetch_add(&d->n_fdatasyncs, 1);
		if (s < 0) {
			rc = io_fail(d, "fdatasync", l->tmp_path, s);
			goto done;
		}
	}
	int r = fs->rename(fs->impl, l->tmp_path, l->path);
	if (r < 0) {
		rc = io_fail(d, "rename to", l->path, r);
		goto done;
	}
	rc = fsync_dir(d);
done:
	pthread_mutex_lock(&l->mu);
	l->syncing = false;
	l->compacting = false;
	if (rc == 0) {
		fs->close(fs->impl, l->fd);
		l->fd = nfd;
		l->file_end = l->live.len + (batch.len - tail_off);
		l->durable_lsn = target;
		atomic_fetch_add(&d->n_compactions, 1);
		atomic_fetch_add(&d->n_bytes, l->file_end);
	} else if (nfd >= 0) {
		fs->close(fs->impl, nfd);
	}
	batch.len = 0;
	l->spare = batch;
	l->live.len = 0;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return rc;
}
