/*
 * kvpaxos/kv_store.c — the kvpaxos state machine: key/value map plus the
 * at-most-once table, fed by the agreed log only.
 *
 * Lab rule (6.824 Lab 3B): "at-most-once semantics hold across retries to
 * different replicas; duplicate state must be freed quickly". A clerk names
 * each call (cid, seq), seq growing by one per call and repeated on retries,
 * and has one call outstanding at a time. So a replica only needs, per clerk,
 * the last applied Put/Append seq and its result (no reply values: Put/Append
 * replies carry only an error code, and Gets are not deduplicated: re-running a
 * Get at a later log position is still inside the call's interval).
 *
 * Bounding the table: a record expires `ttl` of log time after its client's
 * last Put/Append (log time = the largest proposer wall-clock stamp applied so
 * far, identical on every replica). To make forgetting safe, a Put/Append born
 * more than ttl/2 before the log clock is refused (KV_ERR_EXPIRED) unless its
 * record proves it a duplicate: any copy that lands after the record expired is
 * necessarily that old. Records sit on a list in touch order (the log clock
 * never goes back), so expiry pops from the head: O(1) per record.
 * Maps are chained hash tables that double at load factor 1.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "kv_prot.h"
#include "kv_store.h"

typedef struct kv_item {
	struct kv_item *next; /* hash chain */
	uint64_t hash;
	char *key;            /* owned */
	char *val;            /* owned, NUL-terminated */
	size_t len;           /* strlen(val) */
	size_t cap;           /* bytes allocated at val */
} kv_item;

typedef struct kv_client {
	struct kv_client *hnext;       /* hash chain */
	struct kv_client *older, *newer; /* touch-order list */
	uint64_t cid;
	uint64_t last_seq;   /* last applied Put/Append */
	int last_err;        /* its result */
	int64_t touch_ms;    /* log time of the last Put/Append (or duplicate) */
} kv_client;

struct kv_store {
	uint64_t ttl_ms;
	int64_t clock_ms;       /* log clock */
	kv_item **items;        /* nitem_buckets chains */
	size_t nitem_buckets, nitems;
	kv_client **clients;    /* nclient_buckets chains */
	size_t nclient_buckets, nclients;
	kv_client *oldest, *newest; /* touch-order list */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

kv_store *kv_store_new(uint64_t ttl_ms)
{
	kv_store *s = dkv_calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	s->ttl_ms = ttl_ms;
	s->nitem_buckets = 64;
	s->nclient_buckets = 64;
	s->items = dkv_calloc(s->nitem_buckets, sizeof *s->items);
	s->clients = dkv_calloc(s->nclient_buckets, sizeof *s->clients);
	if (s->items == NULL || s->clients == NULL) {
		kv_store_free(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

void kv_store_free(kv_store *s)
{
	if (s == NULL)
		return;
	for (size_t b = 0; s->items != NULL && b < s->nitem_buckets; b++) {
		kv_item *it = s->items[b];
		while (it != NULL) {
			kv_item *next = it->next;
			free(it->key);
			free(it->val);
			free(it);
			it = next;
		}
	}
	kv_client *c = s->oldest;
	while (c != NULL) {
		kv_client *next = c->newer;
		free(c);
		c = next;
	}
	free(s->items);
	free(s->clients);
	free(s);
}

/* ---------------------------------------------------------------- the map */

static kv_item *item_find(const kv_store *s, const char *key, uint64_t h)
{
	for (kv_item *it = s->items[h & (s->nitem_buckets - 1)]; it != NULL; it = it->next)
		if (it->hash == h && strcmp(it->key, key) == 0)
			return it;
	return NULL;
}

/* Double the item table; on allocation failure keep the old one (still correct). */
static void items_grow(kv_store *s)
{
	size_t nb = s->nitem_buckets * 2;
	kv_item **t = dkv_calloc(nb, sizeof *t);
	if (t == NULL)
		return;
	for (size_t b = 0; b < s->nitem_buckets; b++) {
		kv_item *it = s->items[b];
		while (it != NULL) {
			kv_item *next = it->next;
			it->next = t[it->hash & (nb - 1)];
			t[it->hash & (nb - 1)] = it;
			it = next;
		}
	}
	free(s->items);
	s->items = t;
	s->nitem_buckets = nb;
}

/* item_insert: a new empty item for `key` (copied). NULL on ENOMEM. */
static kv_item *item_insert(kv_store *s, const char *key, uint64_t h)
{
	kv_item *it = dkv_calloc(1, sizeof *it);
	if (it == NULL)
		return NULL;
	it->key = dkv_strdup(key);
	it->val = dkv_strdup("");
	if (it->key == NULL || it->val == NULL) {
		free(it->key);
		free(it->val);
		free(it);
		return NULL;
	}
	it->hash = h;
	it->cap = 1;
	if (s->nitems >= s->nitem_buckets)
		items_grow(s);
	it->next = s->items[h & (s->nitem_buckets - 1)];
	s->items[h & (s->nitem_buckets - 1)] = it;
	s->nitems++;
	return it;
}

static int do_get(kv_store *s, const char *key, char **value_out)
{
	if (value_out == NULL)
		return DKV_OK;
	kv_item *it = item_find(s, key, hash_str(key));
	*value_out = dkv_memdup(it != NULL ? it->val : "", it != NULL ? it->len + 1 : 1);
	return *value_out != NULL ? DKV_OK : DKV_ERR_NOMEM;
}

static int do_put(kv_store *s, const char *key, char **value)
{
	uint64_t h = hash_str(key);
	kv_item *it = item_find(s, key, h);
	if (it == NULL && (it = item_insert(s, key, h)) == NULL)
		return DKV_ERR_NOMEM;
	free(it->val);
	it->val = *value; /* taken */
	*value = NULL;
	it->len = strlen(it->val);
	it->cap = it->len + 1;
	return DKV_OK;
}

static int do_append(kv_store *s, const char *key, const char *arg)
{
	size_t alen = strlen(arg);
	uint64_t h = hash_str(key);
	kv_item *it = item_find(s, key, h);
	size_t old = it != NULL ? it->len : 0;
	if (alen > DKV_VALUE_MAX || old > DKV_VALUE_MAX - alen)
		return DKV_ERR_INVAL;
	if (it == NULL && (it = item_insert(s, key, h)) == NULL)
		return DKV_ERR_NOMEM;
	size_t need = old + alen + 1;
	if (need > it->cap) {
		/* Grow by half again so that many small Appends stay linear. */
		size_t ncap = it->cap + it->cap / 2;
		if (ncap < need)
			ncap = need;
		if (ncap > (size_t)DKV_VALUE_MAX + 1)
			ncap = (size_t)DKV_VALUE_MAX + 1;
		char *nv = dkv_realloc(it->val, ncap);
		if (nv == NULL)
			return DKV_ERR_NOMEM;
		it->val = nv;
		it->cap = ncap;
	}
	memcpy(it->val + old, arg, alen + 1);
	it->len = old + alen;
	return DKV_OK;
}

/* ---------------------------------------------------------------- clients */

static kv_client *client_find(const kv_store *s, uint64_t cid)
{
	for (kv_client *c = s->clients[hash_u64(cid) & (s->nclient_buckets - 1)]; c != NULL;
	     c = c->hnext)
		if (c->cid == cid)
			return c;
	return NULL;
}

static void list_unlink(kv_store *s, kv_client *c)
{
	if (c->older != NULL)
		c->older->newer = c->newer;
	else
		s->oldest = c->newer;
	if (c->newer != NULL)
		c->newer->older = c->older;
	else
		s->newest = c->older;
	c->older = c->newer = NULL;
}

static void list_push_newest(kv_store *s, kv_client *c)
{
	c->older = s->newest;
	c->newer = NULL;
	if (s->newest != NULL)
		s->newest->newer = c;
	else
		s->oldest = c;
	s->newest = c;
}

static void client_touch(kv_store *s, kv_client *c)
{
	c->touch_ms = s->clock_ms;
	list_unlink(s, c);
	list_push_newest(s, c);
}

static void clients_grow(kv_store *s)
{
	size_t nb = s->nclient_buckets * 2;
	kv_client **t = dkv_calloc(nb, sizeof *t);
	if (t == NULL)
		return;
	for (size_t b = 0; b < s->nclient_buckets; b++) {
		kv_client *c = s->clients[b];
		while (c != NULL) {
			kv_client *next = c->hnext;
			size_t nbk = hash_u64(c->cid) & (nb - 1);
			c->hnext = t[nbk];
			t[nbk] = c;
			c = next;
		}
	}
	free(s->clients);
	s->clients = t;
	s->nclient_buckets = nb;
}

static void client_remove(kv_store *s, kv_client *c)
{
	kv_client **pp = &s->clients[hash_u64(c->cid) & (s->nclient_buckets - 1)];
	while (*pp != c)
		pp = &(*pp)->hnext;
	*pp = c->hnext;
	list_unlink(s, c);
	s->nclients--;
	free(c);
}

void kv_store_advance(kv_store *s, int64_t now_ms)
{
	if (now_ms > s->clock_ms)
		s->clock_ms = now_ms;
	while (s->oldest != NULL && s->oldest->touch_ms + (int64_t)s->ttl_ms <= s->clock_ms)
		client_remove(s, s->oldest);
}

int kv_store_apply(kv_store *s, kv_store_op *op, char **value_out)
{
	if (value_out != NULL)
		*value_out = NULL;
	if (op->key == NULL || strlen(op->key) > DKV_KEY_MAX)
		return DKV_ERR_INVAL;
	if (op->kind == KV_KIND_GET)
		return do_get(s, op->key, value_out);
	if ((op->kind != KV_KIND_PUT && op->kind != KV_KIND_APPEND) || op->value == NULL)
		return DKV_ERR_INVAL;

	kv_client *c = client_find(s, op->cid);
	if (c != NULL && op->seq <= c->last_seq) {
		/* A duplicate: answer as the first time. A retrying clerk keeps its
		 * record alive. Older seqs were answered long ago: any reply will do. */
		client_touch(s, c);
		return op->seq == c->last_seq ? c->last_err : DKV_OK;
	}
	if (op->born_ms + (int64_t)(s->ttl_ms / 2) < s->clock_ms)
		return KV_ERR_EXPIRED; /* its record, if it ever had one, may be gone */

	if (c == NULL) {
		c = dkv_calloc(1, sizeof *c);
		if (c == NULL)
			return DKV_ERR_NOMEM;
		c->cid = op->cid;
		if (s->nclients >= s->nclient_buckets)
			clients_grow(s);
		size_t b = hash_u64(c->cid) & (s->nclient_buckets - 1);
		c->hnext = s->clients[b];
		s->clients[b] = c;
		s->nclients++;
		list_push_newest(s, c);
	}
	int err;
	if (strlen(op->value) > DKV_VALUE_MAX)
		err = DKV_ERR_INVAL;
	else if (op->kind == KV_KIND_PUT)
		err = do_put(s, op->key, &op->value);
	else
		err = do_append(s, op->key, op->value);
	c->last_seq = op->seq;
	c->last_err = err;
	client_touch(s, c);
	return err;
}

size_t kv_store_client_count(const kv_store *s)
{
	return s->nclients;
}

size_t kv_store_key_count(const kv_store *s)
{
	return s->nitems;
}
