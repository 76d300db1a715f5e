/*
 * pbservice/pb_store.c — open-addressing hash maps for the database and the
 * duplicate table.
 *
 * Both maps use linear probing over a power-of-two table kept at most 1/2 full
 * and never delete (pbservice has no Delete; a Put of "" keeps the key), so no
 * tombstones are needed. Keys hash with 64-bit FNV-1a; clients (already random
 * 64-bit ids) with a splitmix finaliser.
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

/* ------------------------------------------------------------ duplicate table */

typedef struct {
	uint64_t client;
	uint64_t seq; /* 0: empty slot (sequence numbers start at 1) */
} pb_dup_entry;

struct pb_dups {
	pb_dup_entry *slots;
	size_t cap;
	size_t n;
};

static uint64_t hash_u64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

pb_dups *pb_dups_new(void)
{
	pb_dups *d = dkv_calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->cap = 16;
	d->slots = dkv_calloc(d->cap, sizeof(pb_dup_entry));
	if (d->slots == NULL) {
		free(d);
		return NULL;
	}
	return d;
}

void pb_dups_free(pb_dups *d)
{
	if (d == NULL)
		return;
	free(d->slots);
	free(d);
}

static pb_dup_entry *dup_slot(pb_dup_entry *slots, size_t cap, uint64_t client)
{
	size_t i = (size_t)hash_u64(client) & (cap - 1);
	for (;;) {
		pb_dup_entry *e = &slots[i];
		if (e->seq == 0 || e->client == client)
			return e;
		i = (i + 1) & (cap - 1);
	}
}

uint64_t pb_dups_get(const pb_dups *d, uint64_t client)
{
	return dup_slot(d->slots, d->cap, client)->seq;
}

int pb_dups_reserve(pb_dups *d)
{
	if ((d->n + 1) * 2 <= d->cap)
		return DKV_OK;
	size_t ncap = d->cap * 2;
	pb_dup_entry *ns = dkv_calloc(ncap, sizeof(pb_dup_entry));
	if (ns == NULL)
		return DKV_ERR_NOMEM;
	for (size_t i = 0; i < d->cap; i++)
		if (d->slots[i].seq != 0)
			*dup_slot(ns, ncap, d->slots[i].client) = d->slots[i];
	free(d->slots);
	d->slots = ns;
	d->cap = ncap;
	return DKV_OK;
}

int pb_dups_set(pb_dups *d, uint64_t client, uint64_t seq)
{
	if (seq == 0)
		return DKV_OK;
	pb_dup_entry *e = dup_slot(d->slots, d->cap, client);
	if (e->seq != 0) {
		e->seq = seq;
		return DKV_OK;
	}
	if (pb_dups_reserve(d) != DKV_OK)
		return DKV_ERR_NOMEM;
	e = dup_slot(d->slots, d->cap, client);
	e->client = client;
	e->seq = seq;
	d->n++;
	return DKV_OK;
}

size_t pb_dups_count(const pb_dups *d)
{
	return d->n;
}

void pb_dups_foreach(const pb_dups *d, void (*fn)(void *ctx, uint64_t client, uint64_t seq),
                     void *ctx)
{
	for (size_t i = 0; i < d->cap; i++)
		if (d->slots[i].seq != 0)
			fn(ctx, d->slots[i].client, d->slots[i].seq);
}
