/*
 * src/session.c — the one at-most-once table (see session.h for the contract).
 *
 * Design:
 *   - one node per session in a uthash table keyed by id, and the same nodes on
 *     a doubly linked LRU list (head = least recently used). check is a hash
 *     lookup; record/open move the node to the tail; eviction pops the head.
 *   - the table never holds more than `cap` nodes: an insert beyond that evicts
 *     the head first, and the horizon becomes max(horizon, evicted id). Because
 *     ids are handed out in increasing order by one authority, an unknown id
 *     above the horizon cannot have been evicted: it is NEW; one at or below it
 *     may have been: EXPIRED. No clock, no randomness: replicas that make the
 *     same calls in the same order hold bit-identical tables (the encoding
 *     below is the proof used by the tests).
 *   - record/open are all-or-nothing: every allocation is made before the
 *     table is touched, so DKV_ERR_NOMEM leaves it unchanged.
 *
 * Wire form (little-endian): "DKVS" magic, u8 version (1), u64 horizon,
 * u64 count, then count entries oldest-first: u64 id, u64 seq, u32 len, len
 * bytes of result. Decoding replays the entries in that order, so the LRU order
 * survives; a table larger than the decoder's cap is trimmed by evicting the
 * oldest, as record would have. Malformed input (bad magic/version, truncated,
 * trailing bytes, id 0, a duplicate id) is EINVAL.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "session.h"

/* uthash allocates its buckets itself: route it through the injectable allocator
 * so allocation-failure tests reach it, and make its failure non-fatal (the
 * add is rolled back and uthash_nonfatal_oom is called). */
#define HASH_NONFATAL_OOM 1
#define uthash_malloc(sz) dkv_malloc(sz)
#define uthash_free(ptr, sz) free(ptr)
#define uthash_nonfatal_oom(obj) (sess_oom = 1)
#include <uthash.h>

static _Thread_local int sess_oom;

typedef struct sess {
	uint64_t id;
	uint64_t seq;
	void *res;
	size_t res_len;
	struct sess *prev, *next; /* LRU list */
	UT_hash_handle hh;
} sess;

struct dkv_sessions {
	sess *map;          /* uthash head */
	sess *lru, *mru;    /* list ends */
	size_t count, cap;
	uint64_t horizon;
};


#define MAGIC "DKVS"
#define VERSION 1
#define HDR (4 + 1 + 8 + 8)
#define ENT (8 + 8 + 4)

/* ---------------------------------------------------------------- list */

static void lru_unlink(dkv_sessions *t, sess *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		t->lru = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		t->mru = s->prev;
	s->prev = s->next = NULL;
}

static void lru_append(dkv_sessions *t, sess *s)
{
	s->prev = t->mru;
	s->next = NULL;
	if (t->mru)
		t->mru->next = s;
	else
		t->lru = s;
	t->mru = s;
}

static void sess_free(sess *s)
{
	if (!s) return;
	free(s->res);
	free(s);
}

static void evict_one(dkv_sessions *t)
{
	sess *s = t->lru;
	if (!s) return;
	lru_unlink(t, s);
	HASH_DEL(t->map, s);
	if (s->id > t->horizon) t->horizon = s->id;
	t->count--;
	sess_free(s);
}

/* ---------------------------------------------------------------- API */

dkv_sessions *dkv_sessions_new(size_t cap)
{
	if (cap == 0) {
		errno = EINVAL;
		return NULL;
	}
	dkv_sessions *t = dkv_calloc(1, sizeof *t);
	if (!t) {
		errno = ENOMEM;
		return NULL;
	}
	t->cap = cap;
	return t;
}

void dkv_sessions_free(dkv_sessions *t)
{
	if (!t) return;
	HASH_CLEAR(hh, t->map);
	for (sess *s = t->lru, *nx; s; s = nx) {
		nx = s->next;
		sess_free(s);
	}
	free(t);
}

static sess *find(const dkv_sessions *t, uint64_t id)
{
	sess *s = NULL;
	HASH_FIND(hh, t->map, &id, sizeof id, s);
	return s;
}

dkv_sess_verdict dkv_sessions_check(const dkv_sessions *t, uint64_t id, uint64_t seq,
                                    const void **res, size_t *res_len)
{
	if (res) *res = NULL;
	if (res_len) *res_len = 0;
	sess *s = find(t, id);
	if (!s) return id <= t->horizon ? DKV_SESS_EXPIRED : DKV_SESS_NEW;
	if (seq > s->seq) return DKV_SESS_NEW;
	if (seq < s->seq) return DKV_SESS_STALE;
	if (res) *res = s->res;
	if (res_len) *res_len = s->res_len;
	return DKV_SESS_DUP;
}

/* Insert or update (id, seq, res). `own` true: res is already a malloc'ed copy
 * that the table takes over (even on failure, it is freed). */
static int put(dkv_sessions *t, uint64_t id, uint64_t seq, void *rescopy, size_t res_len)
{
	sess *s = find(t, id);
	if (s) {
		free(s->res);
		s->res = rescopy;
		s->res_len = rescopy ? res_len : 0;
		s->seq = seq;
		lru_unlink(t, s);
		lru_append(t, s);
		return DKV_OK;
	}
	s = dkv_calloc(1, sizeof *s);
	if (!s) {
		free(rescopy);
		return DKV_ERR_NOMEM;
	}
	s->id = id;
	s->seq = seq;
	s->res = rescopy;
	s->res_len = rescopy ? res_len : 0;
	sess_oom = 0;
	HASH_ADD(hh, t->map, id, sizeof s->id, s);
	if (sess_oom) { /* uthash could not grow: the node is not in the table */
		sess_free(s);
		return DKV_ERR_NOMEM;
	}
	/* Evict only now, after everything that can fail: NOMEM leaves the table
	 * unchanged. (Momentarily cap + 1 nodes.) */
	lru_append(t, s);
	t->count++;
	while (t->count > t->cap) evict_one(t);
	return DKV_OK;
}

int dkv_sessions_record(dkv_sessions *t, uint64_t id, uint64_t seq, const void *res,
                        size_t res_len)
{
	void *copy = NULL;
	if (res && res_len) {
		copy = dkv_memdup(res, res_len);
		if (!copy) return DKV_ERR_NOMEM;
	}
	return put(t, id, seq, copy, res_len);
}

int dkv_sessions_open(dkv_sessions *t, uint64_t id)
{
	sess *s = find(t, id);
	if (s) { /* reopening a known id: keep what it has, refresh its use */
		lru_unlink(t, s);
		lru_append(t, s);
		return DKV_OK;
	}
	return put(t, id, 0, NULL, 0);
}

int dkv_sessions_known(const dkv_sessions *t, uint64_t id)
{
	return t && find(t, id) != NULL;
}

size_t dkv_sessions_count(const dkv_sessions *t)
{
	return t ? t->count : 0;
}

uint64_t dkv_sessions_horizon(const dkv_sessions *t)
{
	return t ? t->horizon : 0;
}

/* ---------------------------------------------------------------- wire form */

int dkv_sessions_encode(const dkv_sessions *t, void **buf, size_t *len)
{
	if (!t || !buf || !len) return DKV_ERR_INVAL;
	size_t total = HDR;
	for (const sess *s = t->lru; s; s = s->next) {
		if (s->res_len > UINT32_MAX) return DKV_ERR_INVAL;
		total += ENT + s->res_len;
	}
	unsigned char *p = dkv_malloc(total);
	if (!p) return DKV_ERR_NOMEM;
	memcpy(p, MAGIC, 4);
	p[4] = VERSION;
	dkv_put_le64(p + 5, t->horizon);
	dkv_put_le64(p + 13, (uint64_t)t->count);
	size_t off = HDR;
	for (const sess *s = t->lru; s; s = s->next) {
		dkv_put_le64(p + off, s->id);
		dkv_put_le64(p + off + 8, s->seq);
		dkv_put_le32(p + off + 16, (uint32_t)s->res_len);
		off += ENT;
		if (s->res_len) memcpy(p + off, s->res, s->res_len);
		off += s->res_len;
	}
	*buf = p;
	*len = total;
	return DKV_OK;
}

dkv_sessions *dkv_sessions_decode(const void *buf, size_t len, size_t cap)
{
	const unsigned char *p = buf;
	if (!buf || len < HDR || memcmp(p, MAGIC, 4) != 0 || p[4] != VERSION) {
		errno = EINVAL;
		return NULL;
	}
	uint64_t horizon = dkv_get_le64(p + 5);
	uint64_t count = dkv_get_le64(p + 13);
	if (count > (len - HDR) / ENT) {
		errno = EINVAL;
		return NULL;
	}
	dkv_sessions *t = dkv_sessions_new(cap);
	if (!t) return NULL;
	t->horizon = horizon;
	size_t off = HDR;
	int err = 0;
	for (uint64_t i = 0; i < count; i++) {
		if (len - off < ENT) {
			err = EINVAL;
			break;
		}
		uint64_t id = dkv_get_le64(p + off);
		uint64_t seq = dkv_get_le64(p + off + 8);
		uint32_t n = dkv_get_le32(p + off + 16);
		off += ENT;
		if (id == 0 || len - off < n || find(t, id)) {
			err = EINVAL;
			break;
		}
		void *copy = NULL;
		if (n) {
			copy = dkv_memdup(p + off, n);
			if (!copy) {
				err = ENOMEM;
				break;
			}
		}
		off += n;
		if (put(t, id, seq, copy, n) != DKV_OK) {
			err = ENOMEM;
			break;
		}
	}
	if (!err && off != len) err = EINVAL;
	if (err) {
		dkv_sessions_free(t);
		errno = err;
		return NULL;
	}
	return t;
}

int dkv_sessions_merge(dkv_sessions *into, const dkv_sessions *from)
{
	if (!into || !from) return DKV_ERR_INVAL;
	if (from->horizon > into->horizon) into->horizon = from->horizon;
	for (const sess *s = from->lru; s; s = s->next) {
		sess *mine = find(into, s->id);
		if (mine && mine->seq >= s->seq) continue;
		int rc = dkv_sessions_record(into, s->id, s->seq, s->res, s->res_len);
		if (rc != DKV_OK) return rc;
	}
	return DKV_OK;
}
