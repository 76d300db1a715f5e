/*
 * kvpaxos/kv_store.h — the pure state machine of a kvpaxos replica (internal):
 * the key/value map, its log-op encoding, apply, snapshot and restore.
 *
 * No locks, no clock, no I/O: every replica that applies the same ops from the
 * same snapshot holds the same map and returns the same results. At-most-once
 * is not here: paxosrsm's sessions decide whether an op is applied at all.
 * Not thread-safe: the owner serialises calls (kv_server.c: under its mutex).
 */
#ifndef DKV_KV_STORE_H
#define DKV_KV_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_store kv_store;

/* kv_store_new: an empty store. NULL (errno ENOMEM). kv_store_free: NULL-safe. */
kv_store *kv_store_new(void);
void kv_store_free(kv_store *s);

/*
 * kv_op_encode: one log op: u8 kind, the key and its NUL, the value bytes
 * (nothing for a Get). *buf malloc'ed. DKV_OK, DKV_ERR_NOMEM.
 */
int kv_op_encode(int kind, const char *key, const char *value, void **buf, size_t *len);

/*
 * kv_store_apply: apply one encoded op. *res (malloc'ed) / *res_len: u8 error
 * (DKV_OK; DKV_ERR_INVAL for a malformed op, a bad key, an Append past
 * DKV_VALUE_MAX: nothing applied), then for a Get the value bytes (none when
 * absent). Returns DKV_OK, or DKV_ERR_NOMEM (nothing changed: the replica
 * must stop rather than diverge).
 */
int kv_store_apply(kv_store *s, const void *op, size_t len, void **res, size_t *res_len);

/* kv_result_decode: split a result: its error, and for DKV_OK a malloc'ed,
 * NUL-terminated copy of the value in *value (if value non-NULL). */
int kv_result_decode(const void *res, size_t len, char **value);

/* Snapshot: u64 count, count × (u32 klen, key, u32 vlen, value), little-endian. */
int kv_store_snapshot(const kv_store *s, void **buf, size_t *len);
/* kv_store_restore: replace the content. DKV_OK, DKV_ERR_INVAL (malformed:
 * unchanged), DKV_ERR_NOMEM (unchanged). */
int kv_store_restore(kv_store *s, const void *buf, size_t len);

/* kv_store_key_count: keys in the map. */
size_t kv_store_key_count(const kv_store *s);

#endif /* DKV_KV_STORE_H */
