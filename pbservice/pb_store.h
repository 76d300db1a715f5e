/*
 * pbservice/pb_store.h — the primary/backup server's data: a string→string map
 * (the database; the at-most-once table is src/session.h). A plain data
 * structure: no locks (the server serialises access), no I/O.
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

#endif /* DKV_PB_STORE_H */
