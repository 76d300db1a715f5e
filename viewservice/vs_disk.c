/*
 * viewservice/vs_disk.c — see vs_disk.h. On src/storage.h: the directory
 * (dkv_dir_open: created 0700, LOCK, IDENTITY "dkv1 service=viewservice gid=0
 * me=0 peers=<name>", leftover temp files removed) and one snapshot file STATE
 * (dkv_snap_write: temp, fdatasync, rename, fsync the directory; checksummed).
 * STATE's payload: "DKVVS001" | u32 viewnum | u8 acked | u8 recovering |
 * u32 p_last | u32 b_last | u16 len + primary | u16 len + backup (little-endian).
 * A STATE that fails its checksum or does not parse is damage (EIO): the server
 * refuses to start rather than start empty in place of a view it handed out.
 */
#include "vs_disk.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "storage.h"

struct vs_disk {
	dkv_dir *dir;
};

#define VS_MAGIC "DKVVS001"
#define VS_HDR 8u

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int encode(const vs_saved *st, uint8_t **out, size_t *outlen)
{
	size_t pl = strlen(st->view.primary), bl = strlen(st->view.backup);
	size_t n = VS_HDR + 4 + 1 + 1 + 4 + 4 + 2 + pl + 2 + bl;
	uint8_t *b = dkv_malloc(n);
	if (b == NULL)
		return ENOMEM;
	memcpy(b, VS_MAGIC, VS_HDR);
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
	*out = b;
	*outlen = n;
	return 0;
}

/* The pure parser of the payload (the snapshot layer checked the checksum). */
static int decode(const uint8_t *b, size_t n, vs_saved *st)
{
	if (n < VS_HDR + 18 || memcmp(b, VS_MAGIC, VS_HDR) != 0)
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

int vs_disk_open(const char *dir, const char *me, bool no_fsync, vs_disk **out, vs_saved *st,
                 bool *found)
{
	*out = NULL;
	*found = false;
	if (dir == NULL || dir[0] == '\0' || me == NULL)
		return EINVAL;
	vs_disk *d = dkv_calloc(1, sizeof(*d));
	if (d == NULL)
		return ENOMEM;
	const char *peers[1] = {me};
	char *ident = dkv_dir_identity_new("viewservice", 0, peers, 1, 0);
	if (ident == NULL) {
		free(d);
		return ENOMEM;
	}
	dkv_dir_opts o = {.fs = NULL, .no_fsync = no_fsync};
	int rc = dkv_dir_open(dir, ident, &o, &d->dir); /* logs its failures */
	free(ident);
	if (rc != 0) {
		free(d);
		return rc;
	}
	void *buf = NULL;
	size_t n = 0;
	rc = dkv_snap_read(d->dir, "STATE", &buf, &n);
	if (rc == ENOENT) {
		rc = 0;
	} else if (rc == 0) {
		rc = decode(buf, n, st);
		if (rc != 0)
			DKV_ERROR("viewservice: %s/STATE: not a view service state", dir);
		else
			*found = true;
	}
	free(buf);
	if (rc != 0) {
		vs_disk_close(d);
		return rc;
	}
	*out = d;
	return 0;
}

int vs_disk_save(vs_disk *d, const vs_saved *st)
{
	uint8_t *buf;
	size_t n;
	int rc = encode(st, &buf, &n);
	if (rc != 0)
		return rc; /* ENOMEM: nothing written */
	rc = dkv_snap_write(d->dir, "STATE", buf, n); /* an I/O error is sticky there */
	free(buf);
	return rc;
}

void vs_disk_close(vs_disk *d)
{
	if (d == NULL)
		return;
	dkv_dir_close(d->dir);
	free(d);
}
