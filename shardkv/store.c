/*
 * shardkv/store.c — one shard's data at a replica, and its one encoding.
 *
 * A shard is a string map (key -> value, uthash: the project's one hash map)
 * plus its session table (src/session.h: per client session the last Put or
 * Append applied and its result, bounded, expiring the least recently used).
 * The two travel together when the shard moves, so a Put or Append retried at
 * the new owner is recognised there, and memory stays bounded however many
 * clerks come and go.
 *
 * Values keep a capacity, so a long run of Appends to one key costs amortised
 * O(appended bytes), not O(value) each.
 *
 * The encoding (an XDR skv_shard_wire: keys sorted, then the session table's
 * own canonical bytes) is used for snapshots and for shard transfer alike:
 * equal shards give equal bytes on every replica.
 *
 * Nothing here locks: a shard belongs to one replica state and is touched
 * under that replica's mutex. Pure: no clock, no randomness.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"

/* uthash through the injectable allocator; an allocation failure in its
 * bucket table is reported (not fatal) and the add is rolled back. */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) dkv_malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_nonfatal_oom(obj) (skv_oom = 1)
#include <uthash.h>

static _Thread_local int skv_oom;

size_t skv_sessions_cap = SKV_SESSIONS_PER_SHARD;

struct skv_entry {
	char *key;
	char *val;      /* NUL-terminated, vlen bytes, vcap bytes allocated */
	size_t vlen;
	size_t vcap;
	UT_hash_handle hh;
};

skv_shard *skv_shard_new(void)
{
	skv_shard *sh = dkv_calloc(1, sizeof *sh);
	if (sh == NULL)
		return NULL;
	sh->sess = dkv_sessions_new(skv_sessions_cap);
	if (sh->sess == NULL) {
		free(sh);
		return NULL;
	}
	return sh;
}

void skv_shard_free(skv_shard *sh)
{
	if (sh == NULL)
		return;
	skv_entry *e, *tmp;
	HASH_ITER(hh, sh->kv, e, tmp) {
		HASH_DEL(sh->kv, e);
		free(e->key);
		free(e->val);
		free(e);
	}
	dkv_sessions_free(sh->sess);
	free(sh);
}

static skv_entry *find(const skv_shard *sh, const char *key)
{
	skv_entry *e = NULL;
	HASH_FIND_STR(sh->kv, key, e);
	return e;
}

const char *skv_shard_get(const skv_shard *sh, const char *key, size_t *len)
{
	const skv_entry *e = find(sh, key);
	if (e == NULL)
		return NULL;
	if (len != NULL)
		*len = e->vlen;
	return e->val;
}

/* insert: a new entry taking malloc'ed key and val. DKV_OK, or DKV_ERR_NOMEM
 * with both freed and the map unchanged. */
static int insert(skv_shard *sh, char *key, char *val, size_t vlen)
{
	skv_entry *e = dkv_calloc(1, sizeof *e);
	if (e == NULL) {
		free(key);
		free(val);
		return DKV_ERR_NOMEM;
	}
	e->key = key;
	e->val = val;
	e->vlen = vlen;
	e->vcap = vlen + 1;
	skv_oom = 0;
	HASH_ADD_KEYPTR(hh, sh->kv, e->key, strlen(e->key), e);
	if (skv_oom) {
		free(key);
		free(val);
		free(e);
		return DKV_ERR_NOMEM;
	}
	sh->nkeys++;
	return DKV_OK;
}

int skv_shard_put(skv_shard *sh, const char *key, const char *val, size_t vlen, bool append)
{
	skv_entry *e = find(sh, key);
	if (e == NULL) {
		char *k = dkv_strdup(key);
		char *v = dkv_malloc(vlen + 1);
		if (k == NULL || v == NULL) {
			free(k);
			free(v);
			return DKV_ERR_NOMEM;
		}
		memcpy(v, val, vlen);
		v[vlen] = '\0';
		return insert(sh, k, v, vlen);
	}
	size_t need = (append ? e->vlen : 0) + vlen + 1;
	if (need > e->vcap) {
		size_t cap = append ? (need < 64 ? 64 : need + need / 2) : need;
		char *nv = dkv_realloc(e->val, cap);
		if (nv == NULL)
			return DKV_ERR_NOMEM;
		e->val = nv;
		e->vcap = cap;
	} else if (!append && e->vcap > 4 * need && e->vcap > 4096) {
		/* A Put that shrinks a big value: give the memory back. */
		char *nv = dkv_realloc(e->val, need);
		if (nv != NULL) {
			e->val = nv;
			e->vcap = need;
		}
	}
	size_t at = append ? e->vlen : 0;
	memcpy(e->val + at, val, vlen);
	e->vlen = at + vlen;
	e->val[e->vlen] = '\0';
	return DKV_OK;
}

/* ---------------------------------------------------------------- XDR */

int skv_xdr_encode(xdrproc_t proc, void *v, void **buf, size_t *len)
{
	return dkv_xdr_encode(proc, v, buf, len);
}

int skv_xdr_decode(xdrproc_t proc, const void *buf, size_t len, void *v, size_t vsize)
{
	memset(v, 0, vsize);
	if (buf == NULL && len > 0)
		return DKV_ERR_INVAL;
	XDR x;
	xdrmem_create(&x, (char *)buf, (u_int)len, XDR_DECODE);
	bool ok = proc(&x, v) && xdr_getpos(&x) == len;
	xdr_destroy(&x);
	if (!ok) {
		xdr_free(proc, (char *)v);
		memset(v, 0, vsize);
		return DKV_ERR_INVAL;
	}
	return DKV_OK;
}

/* ---------------------------------------------------------------- encoding */

static int by_key(const void *a, const void *b)
{
	const skv_kv *x = a, *y = b;
	return strcmp(x->key, y->key);
}

int skv_shard_encode(const skv_shard *sh, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	skv_shard_wire w;
	memset(&w, 0, sizeof w);
	int rc = DKV_OK;
	void *sb = NULL;
	size_t slen = 0;
	if (sh->nkeys > SKV_SHARD_KEYS) {
		DKV_ERROR("shardkv: cannot encode a shard of %zu keys (more than %u, skv_prot.x)",
		          (size_t)sh->nkeys, (unsigned)SKV_SHARD_KEYS);
		return DKV_ERR_NOMEM;
	}
	if (sh->nkeys > 0) {
		/* Borrowed pointers: the wire struct is only encoded, never freed deep. */
		w.kvs.kvs_val = dkv_calloc(sh->nkeys, sizeof(skv_kv));
		if (w.kvs.kvs_val == NULL)
			return DKV_ERR_NOMEM;
		skv_entry *e, *tmp;
		HASH_ITER(hh, sh->kv, e, tmp) {
			skv_kv *kv = &w.kvs.kvs_val[w.kvs.kvs_len++];
			kv->key = e->key;
			kv->value = e->val;
		}
		qsort(w.kvs.kvs_val, w.kvs.kvs_len, sizeof(skv_kv), by_key);
	}
	rc = dkv_sessions_encode(sh->sess, &sb, &slen);
	if (rc == DKV_OK) {
		w.sessions.sessions_val = sb;
		w.sessions.sessions_len = (u_int)slen;
		rc = skv_xdr_encode((xdrproc_t)xdr_skv_shard_wire, &w, buf, len);
		if (rc == DKV_ERR_INVAL)
			rc = DKV_ERR_NOMEM;
	}
	free(sb);
	free(w.kvs.kvs_val);
	return rc;
}

int skv_shard_decode(const void *buf, size_t len, skv_shard **out)
{
	*out = NULL;
	skv_shard_wire w;
	if (skv_xdr_decode((xdrproc_t)xdr_skv_shard_wire, buf, len, &w, sizeof w) != DKV_OK)
		return DKV_ERR_INVAL;
	int rc = DKV_OK;
	skv_shard *sh = dkv_calloc(1, sizeof *sh);
	if (sh == NULL) {
		rc = DKV_ERR_NOMEM;
		goto out;
	}
	errno = 0;
	sh->sess = dkv_sessions_decode(w.sessions.sessions_val, w.sessions.sessions_len,
	                               skv_sessions_cap);
	if (sh->sess == NULL) {
		rc = errno == ENOMEM ? DKV_ERR_NOMEM : DKV_ERR_INVAL;
		goto out;
	}
	for (u_int i = 0; i < w.kvs.kvs_len && rc == DKV_OK; i++) {
		skv_kv *kv = &w.kvs.kvs_val[i];
		if (kv->key == NULL || kv->value == NULL || find(sh, kv->key) != NULL) {
			rc = DKV_ERR_INVAL;
			break;
		}
		size_t vlen = strlen(kv->value);
		char *k = kv->key, *v = kv->value;
		kv->key = kv->value = NULL; /* taken */
		rc = insert(sh, k, v, vlen);
	}
out:
	xdr_free((xdrproc_t)xdr_skv_shard_wire, (char *)&w);
	if (rc != DKV_OK) {
		skv_shard_free(sh);
		return rc;
	}
	*out = sh;
	return DKV_OK;
}

size_t skv_shard_bytes(const skv_shard *sh)
{
	size_t n = sizeof *sh + HASH_OVERHEAD(hh, sh->kv);
	skv_entry *e, *tmp;
	HASH_ITER(hh, sh->kv, e, tmp)
		n += sizeof *e + strlen(e->key) + 1 + e->vcap;
	return n;
}
