/*
 * tests/lib/simdisk.c — the simulated disk (see simdisk.h for what it models).
 *
 * Model: inodes hold two images, `cur` (what reads see) and `dur` (what a power
 * cut keeps); directories hold two entry tables, `cur` and `dur`, mapping
 * names to inodes. fdatasync copies an inode's cur to dur; fsync_dir copies a
 * directory's entries. A power cut copies every dur back over cur, after
 * applying a random prefix of the most recent pwrite if no fdatasync of its
 * inode followed it. Small linear tables: test workloads are small.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "simdisk.h"

typedef struct {
	uint8_t *p;
	size_t len, cap;
} sbuf;

typedef struct {
	sbuf cur, dur;
	int lock_fd; /* fd holding the lock, 0 = none */
} inode;

typedef struct {
	char *name;
	int ino;
} entry;

typedef struct {
	entry *v;
	size_t n, cap;
} entries;

typedef struct {
	char *path;
	entries cur, dur;
} sdir;

typedef struct {
	int ino; /* -1 = closed or invalidated */
} sfd;

struct simdisk {
	pthread_mutex_t mu;
	dkv_fs fs;
	dkv_rng rng;
	inode *inodes;
	size_t ninodes, capinodes;
	sdir *dirs;
	size_t ndirs, capdirs;
	sfd *fds; /* index = fd - 3 */
	size_t nfds, capfds;
	uint64_t boundaries, cut_at;
	bool dead, fsync_noop;
	struct {
		bool valid;
		int ino;
		uint64_t off;
		uint8_t *data;
		size_t len;
	} last;
	int fail_op, fail_err;
	unsigned fail_count, fail_hits;
	char *deny_path;
	int deny_err;
	simdisk_stats st;
};

/* ---------------------------------------------------------------- helpers */

static int sbuf_set_len(sbuf *b, size_t len)
{
	if (len > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc < len)
			nc *= 2;
		uint8_t *np = realloc(b->p, nc);
		if (np == NULL)
			return -ENOMEM;
		b->p = np;
		b->cap = nc;
	}
	if (len > b->len)
		memset(b->p + b->len, 0, len - b->len);
	b->len = len;
	return 0;
}

static int sbuf_copy(sbuf *dst, const sbuf *src)
{
	dst->len = 0;
	if (sbuf_set_len(dst, src->len) != 0)
		return -ENOMEM;
	if (src->len)
		memcpy(dst->p, src->p, src->len);
	return 0;
}

static void entries_free(entries *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].name);
	free(e->v);
	e->v = NULL;
	e->n = e->cap = 0;
}

static int entries_copy(entries *dst, const entries *src)
{
	entries_free(dst);
	if (src->n == 0)
		return 0;
	dst->v = calloc(src->n, sizeof *dst->v);
	if (dst->v == NULL)
		return -ENOMEM;
	dst->cap = src->n;
	for (size_t i = 0; i < src->n; i++) {
		dst->v[i].name = strdup(src->v[i].name);
		dst->v[i].ino = src->v[i].ino;
		dst->n++;
	}
	return 0;
}

static entry *entries_find(entries *e, const char *name)
{
	for (size_t i = 0; i < e->n; i++)
		if (strcmp(e->v[i].name, name) == 0)
			return &e->v[i];
	return NULL;
}

static int entries_put(entries *e, const char *name, int ino)
{
	entry *x = entries_find(e, name);
	if (x != NULL) {
		x->ino = ino;
		return 0;
	}
	if (e->n == e->cap) {
		size_t nc = e->cap ? e->cap * 2 : 8;
		entry *nv = realloc(e->v, nc * sizeof *nv);
		if (nv == NULL)
			return -ENOMEM;
		e->v = nv;
		e->cap = nc;
	}
	e->v[e->n].name = strdup(name);
	e->v[e->n].ino = ino;
	e->n++;
	return 0;
}

static void entries_del(entries *e, const char *name)
{
	for (size_t i = 0; i < e->n; i++)
		if (strcmp(e->v[i].name, name) == 0) {
			free(e->v[i].name);
			e->v[i] = e->v[e->n - 1];
			e->n--;
			return;
		}
}

static bool entries_equal(const entries *a, const entries *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		bool found = false;
		for (size_t j = 0; j < b->n; j++)
			if (strcmp(a->v[i].name, b->v[j].name) == 0 && a->v[i].ino == b->v[j].ino)
				found = true;
		if (!found)
			return false;
	}
	return true;
}

static sdir *dir_find(simdisk *sd, const char *path)
{
	for (size_t i = 0; i < sd->ndirs; i++)
		if (strcmp(sd->dirs[i].path, path) == 0)
			return &sd->dirs[i];
	return NULL;
}

static sdir *dir_add(simdisk *sd, const char *path)
{
	if (sd->ndirs == sd->capdirs) {
		size_t nc = sd->capdirs ? sd->capdirs * 2 : 8;
		sdir *nd = realloc(sd->dirs, nc * sizeof *nd);
		if (nd == NULL)
			return NULL;
		sd->dirs = nd;
		sd->capdirs = nc;
	}
	sdir *d = &sd->dirs[sd->ndirs++];
	memset(d, 0, sizeof *d);
	d->path = strdup(path);
	return d;
}

/* split: dir part into dbuf (caller's buffer of PATH_MAX-ish), name pointer into path. */
static const char *split(const char *path, char *dbuf, size_t dn)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL) {
		snprintf(dbuf, dn, ".");
		return path;
	}
	if (slash == path)
		snprintf(dbuf, dn, "/");
	else
		snprintf(dbuf, dn, "%.*s", (int)(slash - path), path);
	return slash + 1;
}

static int inode_new(simdisk *sd)
{
	if (sd->ninodes == sd->capinodes) {
		size_t nc = sd->capinodes ? sd->capinodes * 2 : 16;
		inode *ni = realloc(sd->inodes, nc * sizeof *ni);
		if (ni == NULL)
			return -ENOMEM;
		sd->inodes = ni;
		sd->capinodes = nc;
	}
	memset(&sd->inodes[sd->ninodes], 0, sizeof(inode));
	return (int)sd->ninodes++;
}

static int fd_new(simdisk *sd, int ino)
{
	if (sd->nfds == sd->capfds) {
		size_t nc = sd->capfds ? sd->capfds * 2 : 16;
		sfd *nf = realloc(sd->fds, nc * sizeof *nf);
		if (nf == NULL)
			return -ENOMEM;
		sd->fds = nf;
		sd->capfds = nc;
	}
	sd->fds[sd->nfds].ino = ino;
	return (int)(sd->nfds++) + 3;
}

static inode *fd_inode(simdisk *sd, int fd)
{
	if (fd < 3 || (size_t)(fd - 3) >= sd->nfds || sd->fds[fd - 3].ino < 0)
		return NULL;
	return &sd->inodes[sd->fds[fd - 3].ino];
}

/* injected: a pending fault of kind `op` fires now? */
static int injected(simdisk *sd, int op)
{
	if (sd->fail_count > 0 && sd->fail_op == op && --sd->fail_count == 0) {
		sd->fail_hits++;
		return -sd->fail_err;
	}
	return 0;
}

static void count_boundary(simdisk *sd)
{
	sd->boundaries++;
	if (sd->cut_at != 0 && sd->boundaries >= sd->cut_at)
		sd->dead = true;
}

static bool denied_dir(simdisk *sd, const char *dir)
{
	return sd->deny_path != NULL && strcmp(sd->deny_path, dir) == 0;
}

/* ---------------------------------------------------------------- methods */

#define LOCKED_BEGIN(sd)                                                                           \
	simdisk *sd = impl;                                                                            \
	pthread_mutex_lock(&sd->mu);                                                                   \
	int rc_ = 0;                                                                                   \
	if (sd->dead) {                                                                                \
		rc_ = -EIO;                                                                                \
		goto out_;                                                                                 \
	}

#define LOCKED_END(sd)                                                                             \
	out_:                                                                                          \
	pthread_mutex_unlock(&sd->mu);                                                                 \
	return rc_;

static int sd_open(void *impl, const char *path, int flags)
{
	LOCKED_BEGIN(sd)
	char dbuf[1024];
	const char *name = split(path, dbuf, sizeof dbuf);
	if ((rc_ = injected(sd, SIMDISK_OP_OPEN)) != 0)
		goto out_;
	if (denied_dir(sd, dbuf)) {
		rc_ = -sd->deny_err;
		goto out_;
	}
	if (dir_find(sd, path) != NULL) {
		rc_ = -EISDIR;
		goto out_;
	}
	sdir *d = dir_find(sd, dbuf);
	if (d == NULL) {
		rc_ = -ENOENT;
		goto out_;
	}
	entry *e = entries_find(&d->cur, name);
	int ino;
	if (e != NULL) {
		if ((flags & DKV_FS_CREATE) && (flags & DKV_FS_EXCL)) {
			rc_ = -EEXIST;
			goto out_;
		}
		ino = e->ino;
		if ((flags & DKV_FS_TRUNC) && (flags & DKV_FS_WRITE)) {
			sd->inodes[ino].cur.len = 0;
			count_boundary(sd);
		}
	} else {
		if (!(flags & DKV_FS_CREATE)) {
			rc_ = -ENOENT;
			goto out_;
		}
		ino = inode_new(sd);
		if (ino < 0 || entries_put(&d->cur, name, ino) != 0) {
			rc_ = -ENOMEM;
			goto out_;
		}
		count_boundary(sd);
	}
	rc_ = fd_new(sd, ino);
	LOCKED_END(sd)
}

static int sd_close(void *impl, int fd)
{
	simdisk *sd = impl;
	pthread_mutex_lock(&sd->mu);
	int rc = 0;
	inode *in = fd_inode(sd, fd);
	if (in == NULL)
		rc = -EBADF;
	else {
		if (in->lock_fd == fd)
			in->lock_fd = 0;
		sd->fds[fd - 3].ino = -1;
	}
	pthread_mutex_unlock(&sd->mu);
	return rc;
}

static ssize_t sd_pread(void *impl, int fd, void *buf, size_t n, uint64_t off)
{
	simdisk *sd = impl;
	pthread_mutex_lock(&sd->mu);
	ssize_t rc;
	inode *in = fd_inode(sd, fd);
	if (sd->dead)
		rc = -EIO;
	else if (in == NULL)
		rc = -EBADF;
	else if ((rc = injected(sd, SIMDISK_OP_PREAD)) != 0) {
	} else if (off >= in->cur.len)
		rc = 0;
	else {
		size_t k = in->cur.len - (size_t)off;
		if (k > n)
			k = n;
		memcpy(buf, in->cur.p + off, k);
		rc = (ssize_t)k;
	}
	pthread_mutex_unlock(&sd->mu);
	return rc;
}

static ssize_t sd_pwrite(void *impl, int fd, const void *buf, size_t n, uint64_t off)
{
	simdisk *sd = impl;
	pthread_mutex_lock(&sd->mu);
	ssize_t rc;
	inode *in = fd_inode(sd, fd);
	if (sd->dead)
		rc = -EIO;
	else if (in == NULL)
		rc = -EBADF;
	else if ((rc = injected(sd, SIMDISK_OP_PWRITE)) != 0) {
	} else {
		size_t end = (size_t)off + n;
		if (end > in->cur.len && sbuf_set_len(&in->cur, end) != 0)
			rc = -ENOMEM;
		else {
			if (n)
				memcpy(in->cur.p + off, buf, n);
			free(sd->last.data);
			sd->last.data = malloc(n ? n : 1);
			if (n)
				memcpy(sd->last.data, buf, n);
			sd->last.valid = true;
			sd->last.ino = sd->fds[fd - 3].ino;
			sd->last.off = off;
			sd->last.len = n;
			rc = (ssize_t)n;
			count_boundary(sd);
		}
	}
	pthread_mutex_unlock(&sd->mu);
	return rc;
}

static int sd_fdatasync(void *impl, int fd)
{
	LOCKED_BEGIN(sd)
	inode *in = fd_inode(sd, fd);
	if (in == NULL) {
		rc_ = -EBADF;
		goto out_;
	}
	if ((rc_ = injected(sd, SIMDISK_OP_FDATASYNC)) != 0)
		goto out_;
	sd->st.fdatasyncs++;
	if (!sd->fsync_noop) {
		if (sbuf_copy(&in->dur, &in->cur) != 0) {
			rc_ = -ENOMEM;
			goto out_;
		}
		if (sd->last.valid && sd->last.ino == sd->fds[fd - 3].ino)
			sd->last.valid = false;
	}
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_ftruncate(void *impl, int fd, uint64_t len)
{
	LOCKED_BEGIN(sd)
	inode *in = fd_inode(sd, fd);
	if (in == NULL) {
		rc_ = -EBADF;
		goto out_;
	}
	if ((rc_ = injected(sd, SIMDISK_OP_FTRUNCATE)) != 0)
		goto out_;
	if (sbuf_set_len(&in->cur, (size_t)len) != 0) {
		rc_ = -ENOMEM;
		goto out_;
	}
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_size(void *impl, int fd, uint64_t *out)
{
	LOCKED_BEGIN(sd)
	inode *in = fd_inode(sd, fd);
	if (in == NULL)
		rc_ = -EBADF;
	else
		*out = in->cur.len;
	LOCKED_END(sd)
}

static int sd_lock(void *impl, int fd)
{
	LOCKED_BEGIN(sd)
	inode *in = fd_inode(sd, fd);
	if (in == NULL)
		rc_ = -EBADF;
	else if (in->lock_fd != 0 && in->lock_fd != fd)
		rc_ = -EBUSY;
	else
		in->lock_fd = fd;
	LOCKED_END(sd)
}

static int sd_rename(void *impl, const char *from, const char *to)
{
	LOCKED_BEGIN(sd)
	char fb[1024], tb[1024];
	const char *fname = split(from, fb, sizeof fb);
	const char *tname = split(to, tb, sizeof tb);
	if ((rc_ = injected(sd, SIMDISK_OP_RENAME)) != 0)
		goto out_;
	sdir *fd = dir_find(sd, fb), *td = dir_find(sd, tb);
	entry *e = fd ? entries_find(&fd->cur, fname) : NULL;
	if (e == NULL || td == NULL) {
		rc_ = -ENOENT;
		goto out_;
	}
	int ino = e->ino;
	if (fd == td && strcmp(fname, tname) == 0)
		goto out_;
	if (entries_put(&td->cur, tname, ino) != 0) {
		rc_ = -ENOMEM;
		goto out_;
	}
	entries_del(&fd->cur, fname);
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_unlink(void *impl, const char *path)
{
	LOCKED_BEGIN(sd)
	char db[1024];
	const char *name = split(path, db, sizeof db);
	sdir *d = dir_find(sd, db);
	if (d == NULL || entries_find(&d->cur, name) == NULL) {
		rc_ = -ENOENT;
		goto out_;
	}
	entries_del(&d->cur, name);
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_mkdir(void *impl, const char *path)
{
	LOCKED_BEGIN(sd)
	char db[1024];
	const char *name = split(path, db, sizeof db);
	if (dir_find(sd, path) != NULL) {
		rc_ = -EEXIST;
		goto out_;
	}
	if (denied_dir(sd, db)) {
		rc_ = -sd->deny_err;
		goto out_;
	}
	sdir *parent = dir_find(sd, db);
	if (parent == NULL) {
		rc_ = -ENOENT;
		goto out_;
	}
	if (entries_find(&parent->cur, name) != NULL) {
		rc_ = -EEXIST;
		goto out_;
	}
	if (dir_add(sd, path) == NULL) {
		rc_ = -ENOMEM;
		goto out_;
	}
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_fsync_dir(void *impl, const char *path)
{
	LOCKED_BEGIN(sd)
	sdir *d = dir_find(sd, path);
	if (d == NULL) {
		rc_ = -ENOENT;
		goto out_;
	}
	if ((rc_ = injected(sd, SIMDISK_OP_FSYNC_DIR)) != 0)
		goto out_;
	sd->st.dir_syncs++;
	if (!sd->fsync_noop && entries_copy(&d->dur, &d->cur) != 0) {
		rc_ = -ENOMEM;
		goto out_;
	}
	count_boundary(sd);
	LOCKED_END(sd)
}

static int sd_list(void *impl, const char *path, int (*fn)(void *arg, const char *name), void *arg)
{
	simdisk *sd = impl;
	pthread_mutex_lock(&sd->mu);
	int rc = 0;
	char **names = NULL;
	size_t n = 0;
	if (sd->dead)
		rc = -EIO;
	else if (denied_dir(sd, path))
		rc = -sd->deny_err;
	else {
		sdir *d = dir_find(sd, path);
		if (d == NULL)
			rc = -ENOENT;
		else {
			names = calloc(d->cur.n + sd->ndirs + 1, sizeof *names);
			for (size_t i = 0; i < d->cur.n; i++)
				names[n++] = strdup(d->cur.v[i].name);
			for (size_t i = 0; i < sd->ndirs; i++) {
				char db[1024];
				const char *nm = split(sd->dirs[i].path, db, sizeof db);
				if (strcmp(db, path) == 0 && strcmp(sd->dirs[i].path, path) != 0)
					names[n++] = strdup(nm);
			}
		}
	}
	pthread_mutex_unlock(&sd->mu);
	/* Call back without the mutex: fn may call into the disk. */
	for (size_t i = 0; i < n; i++) {
		if (rc == 0) {
			int r = fn(arg, names[i]);
			if (r < 0)
				rc = r;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

static int sd_access_dir(void *impl, const char *path)
{
	LOCKED_BEGIN(sd)
	if (denied_dir(sd, path)) {
		rc_ = -sd->deny_err;
		goto out_;
	}
	if (dir_find(sd, path) != NULL)
		goto out_;
	char db[1024];
	const char *name = split(path, db, sizeof db);
	sdir *p = dir_find(sd, db);
	rc_ = (p != NULL && entries_find(&p->cur, name) != NULL) ? -ENOTDIR : -ENOENT;
	LOCKED_END(sd)
}

/* ---------------------------------------------------------------- control */

simdisk *simdisk_new(uint64_t seed)
{
	simdisk *sd = calloc(1, sizeof *sd);
	if (sd == NULL)
		return NULL;
	pthread_mutex_init(&sd->mu, NULL);
	dkv_rng_seed(&sd->rng, seed);
	sd->fs = (dkv_fs){
		.impl = sd,
		.open = sd_open,
		.close = sd_close,
		.pread = sd_pread,
		.pwrite = sd_pwrite,
		.fdatasync = sd_fdatasync,
		.ftruncate = sd_ftruncate,
		.size = sd_size,
		.lock = sd_lock,
		.rename = sd_rename,
		.unlink = sd_unlink,
		.mkdir = sd_mkdir,
		.fsync_dir = sd_fsync_dir,
		.list = sd_list,
		.access_dir = sd_access_dir,
	};
	dir_add(sd, "/");
	return sd;
}

void simdisk_free(simdisk *sd)
{
	if (sd == NULL)
		return;
	for (size_t i = 0; i < sd->ninodes; i++) {
		free(sd->inodes[i].cur.p);
		free(sd->inodes[i].dur.p);
	}
	free(sd->inodes);
	for (size_t i = 0; i < sd->ndirs; i++) {
		free(sd->dirs[i].path);
		entries_free(&sd->dirs[i].cur);
		entries_free(&sd->dirs[i].dur);
	}
	free(sd->dirs);
	free(sd->fds);
	free(sd->last.data);
	free(sd->deny_path);
	pthread_mutex_destroy(&sd->mu);
	free(sd);
}

const dkv_fs *simdisk_fs(simdisk *sd)
{
	return &sd->fs;
}

uint64_t simdisk_boundaries(simdisk *sd)
{
	pthread_mutex_lock(&sd->mu);
	uint64_t v = sd->boundaries;
	pthread_mutex_unlock(&sd->mu);
	return v;
}

void simdisk_cut_after(simdisk *sd, uint64_t k)
{
	pthread_mutex_lock(&sd->mu);
	sd->cut_at = k;
	if (k != 0 && sd->boundaries >= k)
		sd->dead = true;
	pthread_mutex_unlock(&sd->mu);
}

bool simdisk_dead(simdisk *sd)
{
	pthread_mutex_lock(&sd->mu);
	bool v = sd->dead;
	pthread_mutex_unlock(&sd->mu);
	return v;
}

void simdisk_power_cut(simdisk *sd)
{
	pthread_mutex_lock(&sd->mu);
	bool dropped = false;
	/* Tear the last write: a random prefix of it reaches the platter. */
	if (sd->last.valid && sd->last.ino >= 0 && (size_t)sd->last.ino < sd->ninodes) {
		inode *in = &sd->inodes[sd->last.ino];
		size_t keep = (size_t)dkv_rng_below(&sd->rng, (uint64_t)sd->last.len + 1);
		if (keep > 0) {
			size_t end = (size_t)sd->last.off + keep;
			if (end > in->dur.len)
				sbuf_set_len(&in->dur, end);
			memcpy(in->dur.p + sd->last.off, sd->last.data, keep);
		}
		if (keep > 0 && keep < sd->last.len)
			sd->st.torn_writes++;
	}
	sd->last.valid = false;
	for (size_t i = 0; i < sd->ninodes; i++) {
		inode *in = &sd->inodes[i];
		if (in->cur.len != in->dur.len ||
		    (in->cur.len && memcmp(in->cur.p, in->dur.p, in->cur.len) != 0))
			dropped = true;
		sbuf_copy(&in->cur, &in->dur);
		in->lock_fd = 0;
	}
	for (size_t i = 0; i < sd->ndirs; i++) {
		if (!entries_equal(&sd->dirs[i].cur, &sd->dirs[i].dur))
			dropped = true;
		entries_copy(&sd->dirs[i].cur, &sd->dirs[i].dur);
	}
	for (size_t i = 0; i < sd->nfds; i++)
		sd->fds[i].ino = -1;
	if (dropped)
		sd->st.dropped++;
	sd->st.cuts++;
	sd->dead = false;
	sd->cut_at = 0;
	pthread_mutex_unlock(&sd->mu);
}

void simdisk_get_stats(simdisk *sd, simdisk_stats *out)
{
	pthread_mutex_lock(&sd->mu);
	*out = sd->st;
	pthread_mutex_unlock(&sd->mu);
}

void simdisk_set_fsync_noop(simdisk *sd, bool on)
{
	pthread_mutex_lock(&sd->mu);
	sd->fsync_noop = on;
	pthread_mutex_unlock(&sd->mu);
}

void simdisk_fail_op(simdisk *sd, int op, unsigned nth, int err)
{
	pthread_mutex_lock(&sd->mu);
	sd->fail_op = op;
	sd->fail_count = nth;
	sd->fail_err = err;
	pthread_mutex_unlock(&sd->mu);
}

unsigned simdisk_fault_hits(simdisk *sd)
{
	pthread_mutex_lock(&sd->mu);
	unsigned v = sd->fail_hits;
	pthread_mutex_unlock(&sd->mu);
	return v;
}

void simdisk_deny(simdisk *sd, const char *path, int err)
{
	pthread_mutex_lock(&sd->mu);
	free(sd->deny_path);
	sd->deny_path = (err != 0 && path != NULL) ? strdup(path) : NULL;
	sd->deny_err = err;
	pthread_mutex_unlock(&sd->mu);
}

static inode *path_inode(simdisk *sd, const char *path)
{
	char db[1024];
	const char *name = split(path, db, sizeof db);
	sdir *d = dir_find(sd, db);
	entry *e = d ? entries_find(&d->cur, name) : NULL;
	return e ? &sd->inodes[e->ino] : NULL;
}

int simdisk_corrupt(simdisk *sd, const char *path, uint64_t off, uint8_t x)
{
	pthread_mutex_lock(&sd->mu);
	int rc = 0;
	inode *in = path_inode(sd, path);
	if (in == NULL)
		rc = -ENOENT;
	else if (off >= in->cur.len)
		rc = -EINVAL;
	else {
		in->cur.p[off] ^= x;
		if (off < in->dur.len)
			in->dur.p[off] ^= x;
	}
	pthread_mutex_unlock(&sd->mu);
	return rc;
}

int64_t simdisk_file_size(simdisk *sd, const char *path)
{
	pthread_mutex_lock(&sd->mu);
	inode *in = path_inode(sd, path);
	int64_t v = in ? (int64_t)in->cur.len : -ENOENT;
	pthread_mutex_unlock(&sd->mu);
	return v;
}

int64_t simdisk_file_read(simdisk *sd, const char *path, void *buf, uint64_t n)
{
	pthread_mutex_lock(&sd->mu);
	inode *in = path_inode(sd, path);
	int64_t v = -ENOENT;
	if (in) {
		size_t k = in->cur.len < n ? in->cur.len : (size_t)n;
		memcpy(buf, in->cur.p, k);
		v = (int64_t)k;
	}
	pthread_mutex_unlock(&sd->mu);
	return v;
}

int simdisk_file_write(simdisk *sd, const char *path, const void *buf, uint64_t n)
{
	pthread_mutex_lock(&sd->mu);
	inode *in = path_inode(sd, path);
	int rc = -ENOENT;
	if (in) {
		in->cur.len = 0;
		sbuf_set_len(&in->cur, (size_t)n);
		if (n)
			memcpy(in->cur.p, buf, (size_t)n);
		sbuf_copy(&in->dur, &in->cur);
		rc = 0;
	}
	pthread_mutex_unlock(&sd->mu);
	return rc;
}
