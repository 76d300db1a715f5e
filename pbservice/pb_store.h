/*
 * pbservice/pb_store.h — the primary/backup server's data: a string→string map
 * (the database) and a client→sequence map (the duplicate table). Plain data
 * structures: no locks (the server serialises access), no I/O.
 */
#ifndef DKV_PB_STORE_H
#define DKV_PB_STORE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ database */

typedef struct pb_store pb_store;

/* pb_store_new: an empty map, or NULL (out of memory). Free with pb_store_free. */
pb_store *pb_store_new(void);
/* pb_store_free: release the map and every key and value in it. NULL: no-op. */
void pb_store_free(pb_store *st);

/* pb_store_get: the value of `key` (borrowed: valid until the next change of the
 * map) and its length in *len (may be NULL), or NULL when the key is absent. */
const char *pb_store_get(const pb_store *st, const char *key, size_t *len);

/* pb_store_put: set key to value (both copied). DKV_OK or DKV_ERR_NOMEM (then
 * the map is unchanged). */
int pb_store_put(pb_store *st, const char *key, const char *value);

/* pb_store_put_owned: set key to value, taking ownership of both malloc'ed
 * strings on DKV_OK (on DKV_ERR_NOMEM the caller keeps them). For building a map
 * from decoded RPC data without copying. */
int pb_store_put_owned(pb_store *st, char *key, char *value);

/* pb_store_append: value(key) = value(key) + arg ("" when absent). DKV_OK or
 * DKV_ERR_NOMEM (map unchanged). Amortised O(len(arg)). */
int pb_store_append(pb_store *st, const char *key, const char *arg);

/* pb_store_count: number of keys. */
size_t pb_store_count(const pb_store *st);

/* pb_store_foreach: call fn(ctx, key, value) for every entry (borrowed strings);
 * fn must not change the map. */
void pb_store_foreach(const pb_store *st, void (*fn)(void *ctx, const char *key, const char *value),
                      void *ctx);

/* ------------------------------------------------------------ duplicate table */

typedef struct pb_dups pb_dups;

pb_dups *pb_dups_new(void);
void pb_dups_free(pb_dups *d);
/* pb_dups_get: the last sequence number applied for `client`, 0 when none. */
uint64_t pb_dups_get(const pb_dups *d, uint64_t client);
/* pb_dups_set: record `seq` for `client` (one entry per client). DKV_OK or DKV_ERR_NOMEM. */
int pb_dups_set(pb_dups *d, uint64_t client, uint64_t seq);
/* pb_dups_reserve: make room so that the next pb_dups_set cannot fail.
 * DKV_OK or DKV_ERR_NOMEM (table unchanged). */
int pb_dups_reserve(pb_dups *d);
size_t pb_dups_count(const pb_dups *d);
void pb_dups_foreach(const pb_dups *d, void (*fn)(void *ctx, uint64_t client, uint64_t seq),
                     void *ctx);

#endif /* DKV_PB_STORE_H */
