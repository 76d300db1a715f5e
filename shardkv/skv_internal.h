/*
 * shardkv/skv_internal.h — what the files of libshardkv share (never installed).
 *
 * Files, each depending only on the ones above it (no circle):
 *   store.c    one shard: a string map (uthash) and its session table
 *              (src/session.h), and the one encoding of a shard (snapshots and
 *              shard transfer alike). Pure.
 *   machine.c  the replicated state machine of a group replica: apply one
 *              agreed op, snapshot, restore; the state (configuration, shards,
 *              shards kept for their new owner, pending GCs). Pure.
 *   replica.c  the replica object around the machine: the engine callbacks
 *              (machine under the replica's lock), submitting an op and reading
 *              its result, waking the poller.
 *   migrate.c  the poller thread: next configuration, shard pulls (through the
 *              call helper, src/call.h), GC of old copies. Submits ops.
 *   server.c   the RPC handlers (client and migration) and the lifecycle.
 *   clerk.c    the client library (shard master for routing and session ids).
 */
#ifndef SKV_INTERNAL_H
#define SKV_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dkv/paxosrsm.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"
#include "session.h"
#include "skv_prot.h"

/* ---------------------------------------------------------------- store.c */

/*
 * Sessions remembered per shard. The table is bounded (src/session.h): a
 * session beyond it evicts the least recently used one; a later op of that
 * session gets DKV_ERR_EXPIRED. Tests may lower it (before starting servers;
 * every replica of a run must use the same value).
 */
#define SKV_SESSIONS_PER_SHARD 4096u
extern size_t skv_sessions_cap;

typedef struct skv_entry skv_entry; /* one key (uthash) */

/* One shard's state at a replica. */
typedef struct {
	skv_entry *kv;      /* uthash head */
	size_t nkeys;
	dkv_sessions *sess; /* never NULL */
} skv_shard;

skv_shard *skv_shard_new(void); /* NULL on NOMEM */
void skv_shard_free(skv_shard *sh); /* NULL-safe */

/* skv_shard_get: the value of key (borrowed, NUL-terminated; *len its length),
 * or NULL. */
const char *skv_shard_get(const skv_shard *sh, const char *key, size_t *len);
/* skv_shard_put: set (append == false) or append; copies. DKV_OK,
 * DKV_ERR_NOMEM (unchanged). */
int skv_shard_put(skv_shard *sh, const char *key, const char *val, size_t vlen, bool append);

/* The one encoding of a shard (an XDR skv_shard_wire): encode into a fresh
 * buffer (DKV_OK / DKV_ERR_NOMEM); decode into a new shard (DKV_OK,
 * DKV_ERR_INVAL malformed, DKV_ERR_NOMEM). Canonical: keys sorted, so equal
 * shards encode to equal bytes on every replica. */
int skv_shard_encode(const skv_shard *sh, void **buf, size_t *len);
int skv_shard_decode(const void *buf, size_t len, skv_shard **out);
/* Rough bytes held (for logs and tests). */
size_t skv_shard_bytes(const skv_shard *sh);

/* skv_xdr_encode: XDR-encode v into a fresh buffer of exactly its size.
 * DKV_OK, DKV_ERR_NOMEM, DKV_ERR_INVAL (not encodable). */
int skv_xdr_encode(xdrproc_t proc, void *v, void **buf, size_t *len);
/* skv_xdr_decode: decode all `len` bytes into the zeroed *v. DKV_OK or
 * DKV_ERR_INVAL (then *v holds nothing). */
int skv_xdr_decode(xdrproc_t proc, const void *buf, size_t len, void *v, size_t vsize);

/* ---------------------------------------------------------------- machine.c */

/* Per shard, at the replica's current configuration. */
typedef enum {
	SKV_SHARD_NONE = 0, /* not ours */
	SKV_SHARD_SERVING,  /* ours, data here */
	SKV_SHARD_PULLING   /* ours, waiting for the data from the previous owner */
} skv_shard_state;

/* A shard we left at configuration `cfgnum`, kept until its new owner has it. */
typedef struct skv_out {
	int cfgnum;
	int shard;
	skv_shard *data;
	struct skv_out *next;
} skv_out;

/* A shard we installed at `cfgnum`: its old owner must still be told to free it. */
typedef struct skv_gcpend {
	int cfgnum;
	int shard;
	int64_t src_gid;
	int nservers;
	char **servers;
	struct skv_gcpend *next;
} skv_gcpend;

/* The replicated state of one replica of group `gid`. */
typedef struct {
	int64_t gid;
	skv_config cfg;         /* the configuration applied last (num 0: none) */
	skv_config prev;        /* the one before it (where PULLING shards come from) */
	skv_shard_state state[SHARDMASTER_NSHARDS];
	skv_shard *shards[SHARDMASTER_NSHARDS]; /* non-NULL iff SERVING */
	skv_out *outs;          /* shards left behind, until GC */
	skv_gcpend *gcs;        /* shards installed, old owner not yet told */
	unsigned long applied;  /* ops applied (not replicated: stats) */
	unsigned long changes;  /* bumped by every op the poller must react to */
} skv_state;

void skv_state_init(skv_state *st, int64_t gid);
void skv_state_destroy(skv_state *st);

/*
 * skv_machine_apply: one agreed op (XDR skv_op). *res: a malloc'ed XDR
 * skv_result (err: DKV_OK, DKV_ERR_WRONG_GROUP, DKV_ERR_INVAL, DKV_ERR_EXPIRED
 * for a Put/Append; SKV_ERR_NOT_READY for a GC that came too early; value: a
 * Get's). DKV_OK, or DKV_ERR_NOMEM: the engine stops the replica (its state
 * must not be used any more).
 * skv_machine_snapshot / skv_machine_restore: the whole state as XDR
 * skv_snapshot bytes. restore: DKV_OK, DKV_ERR_INVAL, DKV_ERR_NOMEM (state
 * unchanged on error).
 */
int skv_machine_apply(skv_state *st, const void *op, size_t len, void **res, size_t *res_len);
int skv_machine_snapshot(const skv_state *st, void **buf, size_t *len);
int skv_machine_restore(skv_state *st, const void *buf, size_t len);

/* skv_out_find: the copy of `shard` left at cfgnum, or NULL. */
skv_out *skv_out_find(const skv_state *st, int cfgnum, int shard);
const skv_group *skv_config_group(const skv_config *c, int64_t gid);
void skv_config_destroy(skv_config *c); /* xdr_free; leaves a zeroed config */
/* skv_sessions_held: sessions over the shards this replica holds (serving
 * and kept for a new owner), for tests. */
size_t skv_sessions_held(const skv_state *st);

/* ---------------------------------------------------------------- replica.c */

struct shardkv_server {
	pthread_mutex_t mu;     /* guards `st`, `dead`, `kick` */
	pthread_cond_t tick_cv; /* the poller sleeps here: tick, kick, kill */
	bool dead;
	bool kick;              /* poll now (a client or group saw a newer config) */
	skv_state st;

	/* Immutable after start (pointers; the objects have their own locks). */
	int64_t gid;
	int me;
	char name[DKV_NAME_MAX];
	dkv_rpc_server *srv;
	paxosrsm *rsm;
	struct dkv_status_reg *status; /* the status program on srv */
	char *dir;                   /* opts->dir (malloc'ed; NULL: none), for status */
	dkv_rpc_pool *pool;          /* migration RPCs to other groups */
	shardmaster_clerk *smck;     /* used by the poller thread only */
	pthread_t poller;
	bool poller_started;
	uint64_t last_sync_ms;       /* poller thread only: last NOP it logged */
	dkv_rng rng;                 /* poller thread only */
	pthread_mutex_t kill_mu;     /* serialises kill; guards `killed` */
	bool killed;
};

/* The engine's view of the machine (callbacks take s->mu). */
extern const paxosrsm_sm skv_machine;

/* How long a handler waits for agreement when the client names no bound. */
#define SKV_WAIT_MS 3000u

/*
 * skv_submit: encode `op`, submit it (no session: shardkv keeps its own, per
 * shard), wait until applied here. DKV_OK with the op's result err in *err
 * and, if value is not NULL, its value (malloc'ed) in *value; otherwise the
 * engine's error (TIMEOUT, KILLED, NOMEM, INVAL).
 */
int skv_submit(shardkv_server *s, const skv_op *op, unsigned wait_ms, int *err, char **value);

/* skv_kick_locked: wake the poller now (s->mu held). */
void skv_kick_locked(shardkv_server *s);

/* shardkv_server_rsm (server.c): the replica's engine (borrowed), for tests
 * (paxosrsm_get_info); NULL for NULL. */
paxosrsm *shardkv_server_rsm(shardkv_server *s);

/* ---------------------------------------------------------------- migrate.c */

/* The poller thread. */
void *skv_poller_main(void *arg);

#endif /* SKV_INTERNAL_H */
