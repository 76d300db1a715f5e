/*
 * kvpaxos/kv_store.c — the kvpaxos state machine (see kv_store.h).
 *
 * A uthash map from key (NUL-terminated string, owned) to value (owned,
 * NUL-terminated, with its length). Apply is all-or-nothing: an Append
 * reallocates the value before it changes anything, a Put allocates the new
 * entry or value first, so DKV_ERR_NOMEM leaves the map as it was. Restore
 * builds a whole new map and swaps it in only when the snapshot decoded.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) dkv_malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_nonfatal_oom(obj) (kv_oom = 1)
static _Thread_local int kv_oom;
#include <uthash.h>

#include "kv_prot.h"
#include "kv_store.h"

typedef struct kv_ent {
	char *key;
	char *val;
	size_t vlen;
	UT_hash_handle hh;
} kv_ent;

struct kv_store {
	kv_ent *map;
	size_t count;
};

kv_store *kv_store_new(void)
{
	kv_store *s = dkv_calloc(1, sizeof *s);
	if (!s) errno = ENOMEM;
	return s;
}

static void clear_map(kv_ent **map)
{
	kv_ent *e, *tmp;
	HASH_ITER(hh, *map, e, tmp) {
		HASH_DEL(*map, e);
		free(e->key);
		free(e->val);
		free(e);
	}
}

void kv_store_free(kv_store *s)
{
	if (!s) return;
	clear_map(&s->map);
	free(s);
}

size_t kv_store_key_count(const kv_store *s)
{
	return s ? s->count : 0;
}

int kv_op_encode(int kind, const char *key, const char *value, void **buf, size_t *len)
{
	size_t kl = strlen(key), vl = kind == KV_KIND_GET || !value ? 0 : strlen(value);
	unsigned char *p = dkv_malloc(1 + kl + 1 + vl);
	if (!p) return DKV_ERR_NOMEM;
	p[0] = (unsigned char)kind;
	memcpy(p + 1, key, kl + 1);
	if (vl) memcpy(p + 2 + kl, value, vl);
	*buf = p;
	*len = 1 + kl + 1 + vl;
	return DKV_OK;
}

static int result(int err, const char *v, size_t vl, void **res, size_t *res_len)
{
	unsigned char *p = dkv_malloc(1 + vl);
	if (!p) return DKV_ERR_NOMEM;
	p[0] = (unsigned char)err;
	if (vl) memcpy(p + 1, v, vl);
	*res = p;
	*res_len = 1 + vl;
	return DKV_OK;
}

/* Insert a new entry (copies). DKV_OK / DKV_ERR_NOMEM (map unchanged). */
static int insert(kv_ent **map, const char *key, size_t kl, const char *v, size_t vl)
{
	kv_ent *e = dkv_calloc(1, sizeof *e);
	char *k = dkv_malloc(kl + 1), *val = dkv_malloc(vl + 1);
	if (!e || !k || !val) {
		free(e);
		free(k);
		free(val);
		return DKV_ERR_NOMEM;
	}
	memcpy(k, key, kl);
	k[kl] = '\0';
	if (vl) memcpy(val, v, vl);
	val[vl] = '\0';
	e->key = k;
	e->val = val;
	e->vlen = vl;
	kv_oom = 0;
	HASH_ADD_KEYPTR(hh, *map, e->key, kl, e);
	if (kv_oom) {
		free(k);
		free(val);
		free(e);
		return DKV_ERR_NOMEM;
	}
	return DKV_OK;
}

int kv_store_apply(kv_store *s, const void *op, size_t len, void **res, size_t *res_len)
{
	const unsigned char *p = op;
	*res = NULL;
	*res_len = 0;
	const char *key = (const char *)p + 1;
	size_t kl = len >= 2 ? strnlen(key, len - 1) : 0;
	if (len < 2 || kl == len - 1 || kl > DKV_KEY_MAX ||
	    (p[0] != KV_KIND_GET && p[0] != KV_KIND_PUT && p[0] != KV_KIND_APPEND))
		return result(DKV_ERR_INVAL, NULL, 0, res, res_len);
	const char *v = key + kl + 1;
	size_t vl = len - 2 - kl;
	if (memchr(v, '\0', vl)) return result(DKV_ERR_INVAL, NULL, 0, res, res_len);
	kv_ent *e = NULL;
	HASH_FIND(hh, s->map, key, kl, e);
	if (p[0] == KV_KIND_GET) return result(DKV_OK, e ? e->val : NULL, e ? e->vlen : 0, res, res_len);
	if (vl > DKV_VALUE_MAX || (p[0] == KV_KIND_APPEND && e && vl > DKV_VALUE_MAX - e->vlen))
		return result(DKV_ERR_INVAL, NULL, 0, res, res_len);
	/* the result first: after the change nothing may fail */
	int rc = result(DKV_OK, NULL, 0, res, res_len);
	if (rc != DKV_OK) return rc;
	if (!e) {
		rc = insert(&s->map, key, kl, v, vl);
		if (rc == DKV_OK) s->count++;
	} else if (p[0] == KV_KIND_PUT) {
		char *nv = dkv_malloc(vl + 1);
		if (!nv) {
			rc = DKV_ERR_NOMEM;
		} else {
			if (vl) memcpy(nv, v, vl);
			nv[vl] = '\0';
			free(e->val);
			e->val = nv;
			e->vlen = vl;
		}
	} else if (vl) {
		char *nv = dkv_realloc(e->val, e->vlen + vl + 1);
		if (!nv) {
			rc = DKV_ERR_NOMEM;
		} else {
			memcpy(nv + e->vlen, v, vl);
			e->vlen += vl;
			nv[e->vlen] = '\0';
			e->val = nv;
		}
	}
	if (rc != DKV_OK) {
		free(*res);
		*res = NULL;
		*res_len = 0;
	}
	return rc;
}

int kv_result_decode(const void *res, size_t len, char **value)
{
	const unsigned char *p = res;
	if (value) *value = NULL;
	if (!res || len < 1) return DKV_ERR_INVAL;
	int err = p[0];
	if (err == DKV_OK && value) {
		char *v = dkv_malloc(len);
		if (!v) return DKV_ERR_NOMEM;
		if (len > 1) memcpy(v, p + 1, len - 1);
		v[len - 1] = '\0';
		*value = v;
	}
	return err;
}

int kv_store_snapshot(const kv_store *s, void **buf, size_t *len)
{
	size_t total = 8;
	kv_ent *e, *tmp;
	HASH_ITER(hh, s->map, e, tmp) total += 8 + strlen(e->key) + e->vlen;
	if (total > DKV_STATE_MAX) {
		/* rsm_prot.x: a snapshot travels in at most DKV_STATE_MAX bytes. */
		DKV_ERROR("kvpaxos: no snapshot: %zu bytes of state, more than %u",
		          total, (unsigned)DKV_STATE_MAX);
		return DKV_ERR_NOMEM;
	}
	unsigned char *p = dkv_malloc(total);
	if (!p) return DKV_ERR_NOMEM;
	dkv_put_le64(p, (uint64_t)s->count);
	size_t off = 8;
	HASH_ITER(hh, s->map, e, tmp) {
		size_t kl = strlen(e->key);
		dkv_put_le32(p + off, (uint32_t)kl);
		memcpy(p + off + 4, e->key, kl);
		off += 4 + kl;
		dkv_put_le32(p + off, (uint32_t)e->vlen);
		if (e->vlen) memcpy(p + off + 4, e->val, e->vlen);
		off += 4 + e->vlen;
	}
	*buf = p;
	*len = total;
	return DKV_OK;
}

int kv_store_restore(kv_store *s, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	if (len < 8) return DKV_ERR_INVAL;
	uint64_t count = dkv_get_le64(p);
	if (count > (len - 8) / 8) return DKV_ERR_INVAL;
	kv_ent *map = NULL;
	size_t off = 8;
	int rc = DKV_OK;
	for (uint64_t i = 0; i < count && rc == DKV_OK; i++) {
		if (len - off < 4) { rc = DKV_ERR_INVAL; break; }
		uint32_t kl = dkv_get_le32(p + off);
		off += 4;
		if (len - off < kl || kl > DKV_KEY_MAX) { rc = DKV_ERR_INVAL; break; }
		const char *k = (const char *)p + off;
		off += kl;
		if (len - off < 4) { rc = DKV_ERR_INVAL; break; }
		uint32_t vl = dkv_get_le32(p + off);
		off += 4;
		if (len - off < vl) { rc = DKV_ERR_INVAL; break; }
		const char *v = (const char *)p + off;
		off += vl;
		kv_ent *dup = NULL;
		HASH_FIND(hh, map, k, kl, dup);
		if (dup || memchr(k, '\0', kl) || memchr(v, '\0', vl)) { rc = DKV_ERR_INVAL; break; }
		rc = insert(&map, k, kl, v, vl);
	}
	if (rc == DKV_OK && off != len) rc = DKV_ERR_INVAL;
	if (rc != DKV_OK) {
		clear_map(&map);
		return rc;
	}
	clear_map(&s->map);
	s->map = map;
	s->count = (size_t)count;
	return DKV_OK;
}
