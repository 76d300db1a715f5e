/*
 * viewservice/vs_disk.c — see vs_disk.h.
 *
 * Files in the directory:
 *   LOCK      flock'ed while a server uses the directory (EBUSY for a second one)
 *   IDENTITY  "dkv1 service=viewservice me=<name>\n", written once when fresh
 *   STATE     "DKVVS001" | u32 payload length | u32 CRC-32C of payload | payload
 *             payload: u32 viewnum, u8 acked, u8 recovering, u32 p_last,
 *             u32 b_last, u16 len + primary, u16 len + backup (little-endian)
 * Both files are replaced atomically: NAME.tmp written, fsync'ed, renamed over
 * NAME, the directory fsync'ed (no fsyncs with no_fsync). A crash leaves the old
 * or the new file, never a mix; a leftover STATE.tmp is ignored and replaced.
 * A STATE that fails its checksum is damage (EIO): the server refuses to start
 * rather than start empty in place of a view it had handed out.
 */
#include "vs_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv_internal.h"

struct vs_disk {
	char *dir;
	int lock_fd;
	bool no_fsync;
	int sticky; /* first write error, 0 = none */
};

#define VS_MAGIC "DKVVS001"
#define VS_HDR 16u

/* CRC-32C, bitwise (the state file is a few hundred bytes). */
static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
	}
	return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static char *path_of(const vs_disk *d, const char *name)
{
	size_t n = strlen(d->dir) + strlen(name) + 2;
	char *p = dkv_malloc(n);
	if (p != NULL)
		snprintf(p, n, "%s/%s", d->dir, name);
	return p;
}

static int fsync_dir(const vs_disk *d)
{
	if (d->no_fsync)
		return 0;
	int fd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int rc = fsync(fd) == 0 ? 0 : errno;
	close(fd);
	return rc;
}

/* Atomically replace `name` with buf[0..n). */
static int write_atomic(vs_disk *d, const char *name, const void *buf, size_t n)
{
	char tmpname[64];
	snprintf(tmpname, sizeof tmpname, "%s.tmp", name);
	char *tmp = path_of(d, tmpname), *dst = path_of(d, name);
	int rc = 0;
	if (tmp == NULL || dst == NULL) {
		rc = ENOMEM;
		goto out;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = errno;
		DKV_ERROR("viewservice: %s: open: %s", tmp, strerror(rc));
		goto out;
	}
	const char *p = buf;
	size_t left = n;
	while (left > 0 && rc == 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			rc = w < 0 ? errno : EIO;
		else {
			p += w;
			left -= (size_t)w;
		}
	}
	if (rc == 0 && !d->no_fsync && fdatasync(fd) != 0)
		rc = errno;
	if (close(fd) != 0 && rc == 0)
		rc = errno;
	if (rc == 0 && rename(tmp, dst) != 0)
		rc = errno;
	if (rc == 0)
		rc = fsync_dir(d);
	if (rc != 0)
		DKV_ERROR("viewservice: %s: write failed: %s", dst, strerror(rc));
out:
	free(tmp);
	free(dst);
	return rc;
}

/* Read `name` whole: 0 with *buf (malloc'ed) and *n, ENOENT, or an error. */
static int read_file(const vs_disk *d, const char *name, uint8_t **buf, size_t *n)
{
	char *path = path_of(d, name);
	if (path == NULL)
		return ENOMEM;
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = errno;
		if (rc != ENOENT)
			DKV_ERROR("viewservice: %s: %s", path, strerror(rc));
		free(path);
		return rc;
	}
	size_t cap = 1024, len = 0;
	uint8_t *b = dkv_malloc(cap);
	if (b == NULL)
		rc = ENOMEM;
	while (rc == 0) {
		if (len == cap) {
			if (cap >= (1u << 20)) {
				rc = EIO; /* no state of ours is this large */
				break;
			}
			uint8_t *nb = dkv_realloc(b, cap * 2);
			if (nb == NULL) {
				rc = ENOMEM;
				break;
			}
			b = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, b + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = errno;
		else if (r == 0)
			break;
		else
			len += (size_t)r;
	}
	close(fd);
	if (rc != 0) {
		DKV_ERROR("viewservice: %s: read: %s", path, strerror(rc));
		free(b);
	} else {
		*buf = b;
		*n = len;
	}
	free(path);
	return rc;
}

static int encode(const vs_saved *st, uint8_t **out, size_t *outlen)
{
	size_t pl = strlen(st->view.primary), bl = strlen(st->view.backup);
	size_t n = 4 + 1 + 1 + 4 + 4 + 2 + pl + 2 + bl;
	uint8_t *b = dkv_malloc(VS_HDR + n);
	if (b == NULL)
		return ENOMEM;
	uint8_t *p = b + VS_HDR;
	put32(p, st->view.viewnum);
	p[4] = st->acked;
	p[5] = st->recovering;
	put32(p + 6, st->p_last);
	put32(p + 10, st->b_last);
	p += 14;
	p[0] = (uint8_t)pl;
	p[1] = (uint8_t)(pl >> 8);
	memcpy(p + 2, st->view.primary, pl);
	p += 2 + pl;
	p[0] = (uint8_t)bl;
	p[1] = (uint8_t)(bl >> 8);
	memcpy(p + 2, st->view.backup, bl);
	memcpy(b, VS_MAGIC, 8);
	put32(b + 8, (uint32_t)n);
	put32(b + 12, crc32c(b + VS_HDR, n));
	*out = b;
	*outlen = VS_HDR + n;
	return 0;
}

/* The pure parser: 0 and *st, or EIO. */
static int decode(const uint8_t *b, size_t n, vs_saved *st)
{
	if (n < VS_HDR || memcmp(b, VS_MAGIC, 8) != 0)
		return EIO;
	size_t pl = get32(b + 8);
	if (pl != n - VS_HDR || crc32c(b + VS_HDR, pl) != get32(b + 12) || pl < 18)
		return EIO;
	const uint8_t *p = b + VS_HDR, *end = b + n;
	memset(st, 0, sizeof(*st));
	st->view.viewnum = get32(p);
	st->acked = p[4] != 0;
	st->recovering = p[5] != 0;
	st->p_last = get32(p + 6);
	st->b_last = get32(p + 10);
	p += 14;
	char *names[2] = {st->view.primary, st->view.backup};
	for (int i = 0; i < 2; i++) {
		if (end - p < 2)
			return EIO;
		size_t l = (size_t)p[0] | (size_t)p[1] << 8;
		p += 2;
		if (l >= DKV_NAME_MAX || (size_t)(end - p) < l)
			return EIO;
		memcpy(names[i], p, l);
		names[i][l] = '\0';
		p += l;
	}
	return p == end ? 0 : EIO;
}

typedef struct {
	bool other;    /* an entry that is not ours */
	bool identity; /* IDENTITY present */
} dir_scan;

static int scan_dir(const char *dir, dir_scan *sc)
{
	DIR *dp = opendir(dir);
	if (dp == NULL)
		return errno;
	struct dirent *e;
	while ((e = readdir(dp)) != NULL) {
		const char *n = e->d_name;
		if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, "LOCK") == 0)
			continue;
		size_t l = strlen(n);
		if (l > 4 && strcmp(n + l - 4, ".tmp") == 0)
			continue;
		if (strcmp(n, "IDENTITY") == 0)
			sc->identity = true;
		else if (strcmp(n, "STATE") != 0)
			sc->other = true;
	}
	closedir(dp);
	return 0;
}

int vs_disk_open(const char *dir, const char *me, bool no_fsync, vs_disk **out, vs_saved *st,
                 bool *found)
{
	*out = NULL;
	*found = false;
	if (dir == NULL || dir[0] == '\0' || me == NULL)
		return EINVAL;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		int err = errno;
		DKV_ERROR("viewservice: %s: mkdir: %s", dir, strerror(err));
		return err;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0) {
		int err = errno;
		DKV_ERROR("viewservice: %s: %s", dir, strerror(err));
		return err;
	}
	if (!S_ISDIR(sb.st_mode)) {
		DKV_ERROR("viewservice: %s: not a directory", dir);
		return ENOTDIR;
	}
	if (access(dir, R_OK | W_OK | X_OK) != 0) {
		int err = errno;
		DKV_ERROR("viewservice: %s: %s", dir, strerror(err));
		return err == EROFS ? EACCES : err;
	}
	vs_disk *d = dkv_calloc(1, sizeof(*d));
	if (d == NULL)
		return ENOMEM;
	d->dir = dkv_strdup(dir);
	d->no_fsync = no_fsync;
	d->lock_fd = -1;
	char *lock = d->dir ? path_of(d, "LOCK") : NULL;
	char *ident = NULL;
	uint8_t *buf = NULL;
	size_t n = 0;
	int rc = 0;
	if (lock == NULL) {
		rc = ENOMEM;
		goto fail;
	}
	d->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd < 0) {
		rc = errno;
		DKV_ERROR("viewservice: %s: %s", lock, strerror(rc));
		goto fail;
	}
	/* flock locks belong to the open file description: a second open in this
	 * process conflicts too. */
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? EBUSY : errno;
		DKV_ERROR("viewservice: %s: directory in use by another server", dir);
		goto fail;
	}
	dir_scan sc = {0};
	if ((rc = scan_dir(dir, &sc)) != 0) {
		DKV_ERROR("viewservice: %s: %s", dir, strerror(rc));
		goto fail;
	}
	size_t il = strlen(me) + 64;
	ident = dkv_malloc(il);
	if (ident == NULL) {
		rc = ENOMEM;
		goto fail;
	}
	snprintf(ident, il, "dkv1 service=viewservice me=%s\n", me);
	if (!sc.identity) {
		if (sc.other) {
			DKV_ERROR("viewservice: %s: not empty and not a dkv directory", dir);
			rc = EINVAL;
			goto fail;
		}
		if ((rc = write_atomic(d, "IDENTITY", ident, strlen(ident))) != 0)
			goto fail;
	} else {
		if ((rc = read_file(d, "IDENTITY", &buf, &n)) != 0)
			goto fail;
		if (n != strlen(ident) || memcmp(buf, ident, n) != 0) {
			DKV_ERROR("viewservice: %s/IDENTITY: the directory of another server (%.*s)",
			          dir, (int)(n > 200 ? 200 : n), (const char *)buf);
			rc = EINVAL;
			goto fail;
		}
		free(buf);
		buf = NULL;
	}
	rc = read_file(d, "STATE", &buf, &n);
	if (rc == ENOENT) {
		rc = 0;
	} else if (rc == 0) {
		rc = decode(buf, n, st);
		if (rc != 0) {
			DKV_ERROR("viewservice: %s/STATE: damaged (bad magic, length or checksum)", dir);
			goto fail;
		}
		*found = true;
	} else {
		goto fail;
	}
	free(buf);
	free(lock);
	free(ident);
	*out = d;
	return 0;

fail:
	free(buf);
	free(lock);
	free(ident);
	vs_disk_close(d);
	return rc;
}

int vs_disk_save(vs_disk *d, const vs_saved *st)
{
	if (d->sticky != 0)
		return d->sticky;
	uint8_t *buf;
	size_t n;
	int rc = encode(st, &buf, &n);
	if (rc != 0)
		return rc; /* ENOMEM: nothing written, not sticky */
	rc = write_atomic(d, "STATE", buf, n);
	free(buf);
	if (rc != 0)
		d->sticky = rc;
	return rc;
}

void vs_disk_close(vs_disk *d)
{
	if (d == NULL)
		return;
	if (d->lock_fd >= 0)
		close(d->lock_fd); /* releases the flock */
	free(d->dir);
	free(d);
}
