/*
 * src/session.h — the one at-most-once table of dkv (internal): per client
 * session the highest seq applied and that op's result. Used by paxosrsm (for
 * every Paxos service), by shardkv per shard (the table moves with the shard),
 * and by pbservice (replicated to the backup).
 *
 * Pure and deterministic: no clock, no lock (the owner locks), no randomness.
 * Replicas that feed the same calls in the same order hold the same table, so
 * it can live inside a replicated state and inside snapshots.
 *
 * Session ids are assigned by an authority in increasing order (a log
 * position, a primary's counter), never drawn at random, which makes expiry
 * safe with bounded memory: the table holds at most `cap` sessions; recording
 * a new one beyond that evicts the least recently used and raises the
 * table's horizon to the largest id ever evicted. An unknown id at or below
 * the horizon may have been evicted, so its op must not run (EXPIRED); an
 * unknown id above it was never here (NEW).
 */
#ifndef DKV_SESSION_H
#define DKV_SESSION_H

#include <stddef.h>
#include <stdint.h>

typedef struct dkv_sessions dkv_sessions;

typedef enum {
	DKV_SESS_NEW = 1,  /* not applied yet: apply it, then dkv_sessions_record */
	DKV_SESS_DUP,      /* this very seq was the last applied: *res is its result */
	DKV_SESS_STALE,    /* seq below the last applied: the result is gone */
	DKV_SESS_EXPIRED   /* unknown id at or below the horizon */
} dkv_sess_verdict;

/* dkv_sessions_new: an empty table holding at most cap (> 0) sessions. NULL on ENOMEM. */
dkv_sessions *dkv_sessions_new(size_t cap);
void dkv_sessions_free(dkv_sessions *t); /* NULL-safe */

/* dkv_sessions_check: what to do with (id, seq), id > 0, seq > 0. For DUP,
 * *res / *res_len (if res non-NULL) borrow the stored result. Changes nothing. */
dkv_sess_verdict dkv_sessions_check(const dkv_sessions *t, uint64_t id, uint64_t seq,
                                    const void **res, size_t *res_len);

/* dkv_sessions_record: (id, seq) was applied with this result (copied; NULL/0
 * for none); the session becomes the most recently used. May evict the least
 * recently used session (raising the horizon). DKV_OK or DKV_ERR_NOMEM (then
 * the table is unchanged). */
int dkv_sessions_record(dkv_sessions *t, uint64_t id, uint64_t seq, const void *res,
                        size_t res_len);

/* dkv_sessions_open: make `id` known with nothing applied (seq 0), most
 * recently used; evicts as record does. DKV_OK or DKV_ERR_NOMEM. */
int dkv_sessions_open(dkv_sessions *t, uint64_t id);

/* dkv_sessions_known: `id` is held now (opened or recorded, not evicted). For
 * an owner that only accepts ids it opened itself (paxosrsm: an unknown id
 * above the horizon was never opened, so it is refused too). */
int dkv_sessions_known(const dkv_sessions *t, uint64_t id);

size_t dkv_sessions_count(const dkv_sessions *t);
uint64_t dkv_sessions_horizon(const dkv_sessions *t);

/* Wire form, for snapshots and shard transfer: a self-delimiting byte string
 * (little-endian, versioned). dkv_sessions_encode: *buf malloc'ed. decode:
 * a new table of capacity cap (NULL and errno EINVAL on malformed bytes,
 * ENOMEM). */
int dkv_sessions_encode(const dkv_sessions *t, void **buf, size_t *len);
dkv_sessions *dkv_sessions_decode(const void *buf, size_t len, size_t cap);

/* dkv_sessions_merge: fold `from` into `into` (per id the higher seq wins, the
 * horizon is the larger), for a shard that arrives at a new owner. DKV_OK or
 * DKV_ERR_NOMEM. */
int dkv_sessions_merge(dkv_sessions *into, const dkv_sessions *from);

#endif /* DKV_SESSION_H */
