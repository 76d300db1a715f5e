/*
 * pbservice/pb_store.c — the database: a uthash map from key to value (the
 * same map as kvpaxos's and shardkv's stores; the at-most-once table is
 * src/session.h's).
 *
 * Values keep a capacity next to their length so that repeated Appends to one
 * key (the lab's append tests) cost amortised O(len(arg)) instead of copying the
 * whole value each time. pbservice has no Delete (a Put of "" keeps the key).
 * All memory comes from dkv_malloc/dkv_realloc (uthash's too, non-fatal), so a
 * failure leaves the map unchanged and is reported as DKV_ERR_NOMEM.
 */
#include "pb_store.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/common.h"
#include "dkv_internal.h"

#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) dkv_malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_nonfatal_oom(obj) (pb_oom = 1)
static _Thread_local int pb_oom;
#include <uthash.h>

/* ------------------------------------------------------------ database */

typedef struct pb_entry {
	char *key;
	char *val;
	size_t vlen, vcap; /* vcap includes the NUL */
	UT_hash_handle hh;
} pb_entry;

struct pb_store {
	pb_entry *map;
	size_t n;
};

pb_store *pb_store_new(void)
{
	return dkv_calloc(1, sizeof(pb_store));
}

void pb_store_free(pb_store *st)
{
	if (st == NULL)
		return;
	pb_entry *e, *tmp;
	HASH_ITER(hh, st->map, e, tmp) {
		HASH_DEL(st->map, e);
		free(e->key);
		free(e->val);
		free(e);
	}
	free(st);
}

static pb_entry *find(const pb_store *st, const char *key)
{
	pb_entry *e = NULL;
	HASH_FIND_STR(st->map, key, e);
	return e;
}

const char *pb_store_get(const pb_store *st, const char *key, size_t *len)
{
	pb_entry *e = find(st, key);
	if (e == NULL)
		return NULL;
	if (len != NULL)
		*len = e->vlen;
	return e->val;
}

/* Insert or replace, taking ownership of k (when k_owned; on DKV_OK) and v (on DKV_OK). */
static int put_owned(pb_store *st, char *k, bool k_owned, char *v, size_t vlen)
{
	pb_entry *e = find(st, k);
	if (e != NULL) {
		free(e->val);
		e->val = v;
		e->vlen = vlen;
		e->vcap = vlen + 1;
		if (k_owned)
			free(k);
		return DKV_OK;
	}
	e = dkv_calloc(1, sizeof *e);
	char *key = k_owned ? k : dkv_strdup(k);
	if (e == NULL || key == NULL) {
		free(e);
		if (!k_owned)
			free(key);
		return DKV_ERR_NOMEM;
	}
	e->key = key;
	e->val = v;
	e->vlen = vlen;
	e->vcap = vlen + 1;
	pb_oom = 0;
	HASH_ADD_KEYPTR(hh, st->map, e->key, strlen(e->key), e);
	if (pb_oom) { /* uthash could not grow: the map is as it was */
		if (!k_owned)
			free(key);
		free(e);
		return DKV_ERR_NOMEM;
	}
	st->n++;
	return DKV_OK;
}

int pb_store_put(pb_store *st, const char *key, const char *value)
{
	size_t vlen = strlen(value);
	char *v = dkv_memdup(value, vlen + 1);
	if (v == NULL)
		return DKV_ERR_NOMEM;
	int rc = put_owned(st, (char *)key, false, v, vlen);
	if (rc != DKV_OK)
		free(v);
	return rc;
}

int pb_store_put_owned(pb_store *st, char *key, char *value)
{
	return put_owned(st, key, true, value, strlen(value));
}

int pb_store_append(pb_store *st, const char *key, const char *arg)
{
	pb_entry *e = find(st, key);
	if (e == NULL)
		return pb_store_put(st, key, arg);
	size_t alen = strlen(arg);
	size_t need = e->vlen + alen + 1;
	if (need > e->vcap) {
		size_t ncap = e->vcap * 2 > need ? e->vcap * 2 : need;
		char *nv = dkv_realloc(e->val, ncap);
		if (nv == NULL)
			return DKV_ERR_NOMEM;
		e->val = nv;
		e->vcap = ncap;
	}
	memcpy(e->val + e->vlen, arg, alen + 1);
	e->vlen += alen;
	return DKV_OK;
}

size_t pb_store_count(const pb_store *st)
{
	return st->n;
}

void pb_store_foreach(const pb_store *st, void (*fn)(void *ctx, const char *key, const char *value),
                      void *ctx)
{
	for (const pb_entry *e = st->map; e != NULL; e = e->hh.next)
		fn(ctx, e->key, e->val);
}
