/*
 * pbservice/pb_store.c — the open-addressing hash map of the database. (The
 * at-most-once table is src/session.h's.)
 *
 * Linear probing over a power-of-two table kept at most 1/2 full, never
 * deleting (pbservice has no Delete; a Put of "" keeps the key), so no
 * tombstones are needed. Keys hash with 64-bit FNV-1a.
 *
 * Values keep a capacity next to their length so that repeated Appends to one
 * key (the lab's append tests) cost amortised O(len(arg)) instead of copying the
 * whole value each time. All memory comes from dkv_malloc/dkv_realloc, so a
 * failure leaves the map unchanged and is reported as DKV_ERR_NOMEM.
 */
#include "pb_store.h"

#include <stdlib.h>
#include <string.h>

#include "dkv/common.h"
#include "dkv_internal.h"

/* ------------------------------------------------------------ database */

typedef struct {
	char *key; /* NULL: empty slot */
	char *val;
	size_t vlen, vcap; /* vcap includes the NUL */
	uint64_t hash;
} pb_entry;

struct pb_store {
	pb_entry *slots;
	size_t cap; /* power of two */
	size_t n;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return h;
}

pb_store *pb_store_new(void)
{
	pb_store *st = dkv_calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->cap = 16;
	st->slots = dkv_calloc(st->cap, sizeof(pb_entry));
	if (st->slots == NULL) {
		free(st);
		return NULL;
	}
	return st;
}

void pb_store_free(pb_store *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->cap; i++) {
		free(st->slots[i].key);
		free(st->slots[i].val);
	}
	free(st->slots);
	free(st);
}

static pb_entry *find_slot(pb_entry *slots, size_t cap, const char *key, uint64_t h)
{
	size_t i = (size_t)h & (cap - 1);
	for (;;) {
		pb_entry *e = &slots[i];
		if (e->key == NULL || (e->hash == h && strcmp(e->key, key) == 0))
			return e;
		i = (i + 1) & (cap - 1);
	}
}

/* Make room for one more key. */
static int grow(pb_store *st)
{
	if ((st->n + 1) * 2 <= st->cap)
		return DKV_OK;
	size_t ncap = st->cap * 2;
	pb_entry *ns = dkv_calloc(ncap, sizeof(pb_entry));
	if (ns == NULL)
		return DKV_ERR_NOMEM;
	for (size_t i = 0; i < st->cap; i++) {
		pb_entry *e = &st->slots[i];
		if (e->key != NULL)
			*find_slot(ns, ncap, e->key, e->hash) = *e;
	}
	free(st->slots);
	st->slots = ns;
	st->cap = ncap;
	return DKV_OK;
}

const char *pb_store_get(const pb_store *st, const char *key, size_t *len)
{
	pb_entry *e = find_slot(st->slots, st->cap, key, hash_str(key));
	if (e->key == NULL)
		return NULL;
	if (len != NULL)
		*len = e->vlen;
	return e->val;
}

/* Insert or replace, taking ownership of k (when inserted) and v. */
static int put_owned(pb_store *st, char *k, bool k_owned, char *v, size_t vlen)
{
	uint64_t h = hash_str(k);
	pb_entry *e = find_slot(st->slots, st->cap, k, h);
	if (e->key != NULL) {
		free(e->val);
		e->val = v;
		e->vlen = vlen;
		e->vcap = vlen + 1;
		if (k_owned)
			free(k);
		return DKV_OK;
	}
	if (grow(st) != DKV_OK)
		return DKV_ERR_NOMEM;
	e = find_slot(st->slots, st->cap, k, h);
	if (!k_owned) {
		k = dkv_strdup(k);
		if (k == NULL)
			return DKV_ERR_NOMEM;
	}
	e->key = k;
	e->hash = h;
	e->val = v;
	e->vlen = vlen;
	e->vcap = vlen + 1;
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
	uint64_t h = hash_str(key);
	pb_entry *e = find_slot(st->slots, st->cap, key, h);
	if (e->key == NULL)
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
	for (size_t i = 0; i < st->cap; i++)
		if (st->slots[i].key != NULL)
			fn(ctx, st->slots[i].key, st->slots[i].val);
}
