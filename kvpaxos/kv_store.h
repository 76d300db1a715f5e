/*
 * kvpaxos/kv_store.h — the pure state machine of a kvpaxos replica (internal).
 *
 * The key/value map and the at-most-once table, driven only by the agreed log:
 * no locks, no clock, no I/O. Time is the log clock the caller passes in (the
 * largest proposer stamp applied so far), so every replica that applies the
 * same log reaches the same state, the same replies and the same evictions.
 * Not thread-safe: the owner serialises calls (kv_server.c: under its mutex).
 */
#ifndef DKV_KV_STORE_H
#define DKV_KV_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_store kv_store;

/* One logged operation as the store sees it. */
typedef struct {
	uint64_t cid;     /* clerk id */
	uint64_t seq;     /* clerk sequence number */
	int64_t born_ms;  /* when the clerk first sent it (proposer's estimate) */
	int kind;         /* KV_KIND_GET / _PUT / _APPEND */
	const char *key;  /* borrowed */
	char *value;      /* malloc'ed, NUL-terminated; a Put may take it (sets NULL) */
} kv_store_op;

/*
 * kv_store_new: an empty store whose at-most-once records live `ttl_ms` of log
 * time after their client's last Put/Append. NULL (errno ENOMEM) on failure.
 * kv_store_free releases everything (NULL: no-op).
 */
kv_store *kv_store_new(uint64_t ttl_ms);
void kv_store_free(kv_store *s);

/*
 * kv_store_advance: move the log clock to max(clock, now_ms) and forget the
 * at-most-once records that expired by then.
 */
void kv_store_advance(kv_store *s, int64_t now_ms);

/*
 * kv_store_apply: apply `op` at the current log clock.
 * Get: *value_out (if value_out is not NULL) receives a malloc'ed copy of the
 * value ("" when absent), released by the caller with free().
 * Put/Append: applied unless (cid, seq) was already applied (then the first
 * application's result is returned again) or the op was born more than ttl/2
 * before the log clock and is not known (KV_ERR_EXPIRED: not applied).
 * Returns DKV_OK, DKV_ERR_INVAL (an Append past DKV_VALUE_MAX, a bad kind or
 * key: not applied), KV_ERR_EXPIRED, DKV_ERR_NOMEM.
 */
int kv_store_apply(kv_store *s, kv_store_op *op, char **value_out);

/* kv_store_client_count: at-most-once records held now. */
size_t kv_store_client_count(const kv_store *s);
/* kv_store_key_count: keys in the map. */
size_t kv_store_key_count(const kv_store *s);

#endif /* DKV_KV_STORE_H */
