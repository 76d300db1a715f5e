/*
 * shardkv/store.c — one shard's data at a replica, and its wire form.
 *
 * A shard is a string map (key -> value) plus an at-most-once table
 * (client id -> highest seq applied). The two travel together when the shard
 * moves, so a Put or Append retried at the new owner is recognised there.
 *
 * The map is a chained hash table (FNV-1a) that doubles when its load passes
 * 1; values keep a capacity so that a long run of Appends to one key costs
 * amortised O(appended bytes), not O(value) each. The at-most-once table is
 * open addressing on the client id (cid 0 marks a free slot: clerks draw
 * non-zero ids) and holds one entry per client that ever wrote the shard,
 * i.e. it is bounded by the number of clients.
 *
 * Nothing here locks: a shard belongs to one replica and is touched under that
 * replica's mutex (or, once moved out, only by its owner list).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* ---------------------------------------------------------------- map */

static int map_grow(skv_map *m)
{
	size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
	skv_entry **b = dkv_calloc(nb, sizeof *b);
	if (b == NULL)
		return DKV_ERR_NOMEM;
	for (size_t i = 0; i < m->nbuckets; i++) {
		skv_entry *e = m->buckets[i];
		while (e != NULL) {
			skv_entry *next = e->next;
			size_t j = (size_t)(e->hash & (nb - 1));
			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
	return DKV_OK;
}

skv_entry *skv_map_get(const skv_map *m, const char *key)
{
	if (m->nbuckets == 0)
		return NULL;
	uint64_t h = hash_str(key);
	for (skv_entry *e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* A new entry for key (not present), linked in. Takes key. */
static skv_entry *map_insert(skv_map *m, char *key)
{
	if (m->count >= m->nbuckets && map_grow(m) != DKV_OK)
		return NULL;
	skv_entry *e = dkv_calloc(1, sizeof *e);
	if (e == NULL)
		return NULL;
	e->key = key;
	e->hash = hash_str(key);
	size_t j = (size_t)(e->hash & (m->nbuckets - 1));
	e->next = m->buckets[j];
	m->buckets[j] = e;
	m->count++;
	return e;
}

int skv_map_put(skv_map *m, const char *key, const char *val, size_t vlen, bool append)
{
	skv_entry *e = skv_map_get(m, key);
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
		return skv_map_take(m, k, v, vlen);
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

int skv_map_take(skv_map *m, char *key, char *val, size_t vlen)
{
	skv_entry *e = skv_map_get(m, key);
	if (e != NULL) {
		free(key);
		free(e->val);
	} else {
		e = map_insert(m, key);
		if (e == NULL) {
			free(key);
			free(val);
			return DKV_ERR_NOMEM;
		}
	}
	e->val = val;
	e->vlen = vlen;
	e->vcap = vlen + 1;
	return DKV_OK;
}

void skv_map_destroy(skv_map *m)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		skv_entry *e = m->buckets[i];
		while (e != NULL) {
			skv_entry *next = e->next;
			free(e->key);
			free(e->val);
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- dups */

static skv_dup *dups_slot(const skv_dups *d, uint64_t cid)
{
	size_t i = (size_t)(hash_u64(cid) & (d->cap - 1));
	for (;;) {
		skv_dup *sl = &d->slots[i];
		if (sl->cid == cid || sl->cid == 0)
			return sl;
		i = (i + 1) & (d->cap - 1);
	}
}

uint64_t skv_dups_get(const skv_dups *d, uint64_t cid)
{
	if (d->cap == 0 || cid == 0)
		return 0;
	skv_dup *sl = dups_slot(d, cid);
	return sl->cid == cid ? sl->seq : 0;
}

int skv_dups_set(skv_dups *d, uint64_t cid, uint64_t seq)
{
	if (cid == 0)
		return DKV_OK;
	if (2 * (d->count + 1) > d->cap) {
		size_t ncap = d->cap ? d->cap * 2 : 8;
		skv_dup *ns = dkv_calloc(ncap, sizeof *ns);
		if (ns == NULL)
			return DKV_ERR_NOMEM;
		skv_dups nd = { ns, ncap, 0 };
		for (size_t i = 0; i < d->cap; i++)
			if (d->slots[i].cid != 0) {
				*dups_slot(&nd, d->slots[i].cid) = d->slots[i];
				nd.count++;
			}
		free(d->slots);
		*d = nd;
	}
	skv_dup *sl = dups_slot(d, cid);
	if (sl->cid == 0) {
		sl->cid = cid;
		sl->seq = seq;
		d->count++;
	} else if (seq > sl->seq) {
		sl->seq = seq;
	}
	return DKV_OK;
}

void skv_dups_destroy(skv_dups *d)
{
	free(d->slots);
	memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- shard */

skv_shard *skv_shard_new(void)
{
	return dkv_calloc(1, sizeof(skv_shard));
}

void skv_shard_free(skv_shard *sh)
{
	if (sh == NULL)
		return;
	skv_map_destroy(&sh->kv);
	skv_dups_destroy(&sh->dups);
	free(sh);
}

int skv_shard_export(const skv_shard *sh, int shard, skv_shard_data *out)
{
	memset(out, 0, sizeof *out);
	out->shard = shard;
	if (sh->kv.count > 0) {
		out->kvs.kvs_val = dkv_calloc(sh->kv.count, sizeof(skv_kv));
		if (out->kvs.kvs_val == NULL)
			goto nomem;
		for (size_t i = 0; i < sh->kv.nbuckets; i++)
			for (skv_entry *e = sh->kv.buckets[i]; e != NULL; e = e->next) {
				skv_kv *kv = &out->kvs.kvs_val[out->kvs.kvs_len++];
				kv->key = dkv_strdup(e->key);
				kv->value = dkv_memdup(e->val, e->vlen + 1);
				if (kv->key == NULL || kv->value == NULL)
					goto nomem;
			}
	}
	if (sh->dups.count > 0) {
		out->dups.dups_val = dkv_calloc(sh->dups.count, sizeof(skv_dup));
		if (out->dups.dups_val == NULL)
			goto nomem;
		for (size_t i = 0; i < sh->dups.cap; i++)
			if (sh->dups.slots[i].cid != 0)
				out->dups.dups_val[out->dups.dups_len++] = sh->dups.slots[i];
	}
	return DKV_OK;
nomem:
	xdr_free((xdrproc_t)xdr_skv_shard_data, (char *)out);
	memset(out, 0, sizeof *out);
	return DKV_ERR_NOMEM;
}

skv_shard *skv_shard_import(skv_shard_data *in)
{
	skv_shard *sh = skv_shard_new();
	if (sh == NULL)
		return NULL;
	for (u_int i = 0; i < in->kvs.kvs_len; i++) {
		skv_kv *kv = &in->kvs.kvs_val[i];
		if (kv->key == NULL)
			continue;
		char *v = kv->value;
		if (v == NULL && (v = dkv_strdup("")) == NULL)
			goto nomem;
		size_t vlen = strlen(v);
		char *k = kv->key;
		kv->key = NULL;
		kv->value = NULL;
		if (skv_map_take(&sh->kv, k, v, vlen) != DKV_OK)
			goto nomem;
	}
	for (u_int i = 0; i < in->dups.dups_len; i++)
		if (skv_dups_set(&sh->dups, in->dups.dups_val[i].cid, in->dups.dups_val[i].seq) != DKV_OK)
			goto nomem;
	return sh;
nomem:
	skv_shard_free(sh);
	return NULL;
}

size_t skv_shard_bytes(const skv_shard *sh)
{
	size_t n = sizeof *sh + sh->kv.nbuckets * sizeof(skv_entry *) + sh->dups.cap * sizeof(skv_dup);
	for (size_t i = 0; i < sh->kv.nbuckets; i++)
		for (const skv_entry *e = sh->kv.buckets[i]; e != NULL; e = e->next)
			n += sizeof *e + strlen(e->key) + 1 + e->vcap;
	return n;
}
