/*
 * shardkv/skv_internal.h — what the files of libshardkv share (never installed).
 *
 *   store.c    a shard's data: a string map (key -> value) and an at-most-once
 *              table (client id -> last applied seq), and their wire form.
 *   server.c   the replica: lifecycle, client RPCs, the apply callback, the
 *              table of handlers waiting for their op's result.
 *   migrate.c  reconfiguration: the poller thread (shard master, pulls, GC),
 *              the migration RPCs and the apply steps of RECONFIG, INSTALL, GC.
 *   clerk.c    the client library.
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
#include "skv_prot.h"

/* ---------------------------------------------------------------- store.c */

typedef struct skv_entry {
	char *key;
	char *val;      /* NUL-terminated, vlen bytes, vcap bytes allocated */
	size_t vlen;
	size_t vcap;
	uint64_t hash;
	struct skv_entry *next;
} skv_entry;

/* A string map; all strings owned by the map. Zero-initialised = empty. */
typedef struct {
	skv_entry **buckets;
	size_t nbuckets;
	size_t count;
} skv_map;

/* An at-most-once table: open addressing over cids (cid 0 marks a free slot;
 * clerks never use 0). Zero-initialised = empty. */
typedef struct {
	skv_dup *slots;
	size_t cap;
	size_t count;
} skv_dups;

/* One shard's state at a replica. */
typedef struct {
	skv_map kv;
	skv_dups dups;
} skv_shard;

skv_shard *skv_shard_new(void); /* NULL on NOMEM */
void skv_shard_free(skv_shard *sh); /* NULL-safe */

/* skv_map_get: the entry for key, or NULL. Borrowed. */
skv_entry *skv_map_get(const skv_map *m, const char *key);
/* skv_map_put: set (append == false) or append. Key and value are copied.
 * DKV_OK, DKV_ERR_NOMEM (the map is unchanged). */
int skv_map_put(skv_map *m, const char *key, const char *val, size_t vlen, bool append);
/* skv_map_take: insert taking ownership of malloc'ed key and val (vlen bytes +
 * NUL). On DKV_ERR_NOMEM they are freed. A key already present is replaced. */
int skv_map_take(skv_map *m, char *key, char *val, size_t vlen);
void skv_map_destroy(skv_map *m);

uint64_t skv_dups_get(const skv_dups *d, uint64_t cid); /* 0 when unknown */
int skv_dups_set(skv_dups *d, uint64_t cid, uint64_t seq); /* keeps the max */
void skv_dups_destroy(skv_dups *d);

/* skv_shard_export: fill `out` (zeroed) with fresh malloc'ed copies of the
 * shard's keys and duplicate table; release with xdr_free(xdr_skv_shard_data).
 * DKV_OK or DKV_ERR_NOMEM (then `out` holds nothing to free). */
int skv_shard_export(const skv_shard *sh, int shard, skv_shard_data *out);
/* skv_shard_import: a new shard from wire data; takes the strings out of `in`
 * (leaving NULLs, so xdr_free of `in` stays correct). NULL on NOMEM. */
skv_shard *skv_shard_import(skv_shard_data *in);
/* Rough bytes held (for logs and tests). */
size_t skv_shard_bytes(const skv_shard *sh);

/* ---------------------------------------------------------------- server.c */

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

/* A handler waiting for the result of its op (matched by nonce). */
typedef struct skv_waiter {
	uint64_t nonce;
	bool done;
	int err;
	char *value; /* Get: malloc'ed result, handed to the reply */
	struct skv_waiter *next;
} skv_waiter;

struct shardkv_server {
	pthread_mutex_t mu;     /* guards every field down to `stats_*` */
	pthread_cond_t tick_cv; /* the poller sleeps here: tick, kick, kill */
	bool dead;
	bool kick;              /* poll now (a client or group saw a newer config) */
	skv_config cfg;         /* the configuration applied last (num 0: none) */
	skv_config prev;        /* the one before it (where PULLING shards come from) */
	skv_shard_state state[SHARDMASTER_NSHARDS];
	skv_shard *shards[SHARDMASTER_NSHARDS]; /* non-NULL iff SERVING */
	skv_out *outs;          /* shards left behind, until GC */
	skv_gcpend *gcs;        /* shards installed, old owner not yet told */
	skv_waiter *waiters;
	dkv_rng rng;
	unsigned long stats_applied;

	/* Immutable after start (pointers; the objects have their own locks). */
	int64_t gid;
	int me;
	char name[DKV_NAME_MAX];
	dkv_rpc_server *srv;
	paxosrsm *rsm;
	struct dkv_status_reg *status; /* the status program on srv */
	dkv_rpc_pool *pool;          /* migration RPCs to other groups */
	shardmaster_clerk *smck;     /* used by the poller thread only */
	pthread_t poller;
	bool poller_started;
	uint64_t last_sync_ms;       /* poller thread only: last NOP it logged */
	pthread_mutex_t kill_mu;     /* serialises kill; guards `killed` */
	bool killed;
};

/* How long a handler waits for agreement when the client names no bound. */
#define SKV_WAIT_MS 3000u

/* skv_submit: encode `op`, add it to the log, wait. DKV_OK once applied here;
 * DKV_ERR_TIMEOUT / DKV_ERR_KILLED / DKV_ERR_NOMEM otherwise. */
int skv_submit(shardkv_server *s, const skv_op *op, unsigned wait_ms);
uint64_t skv_new_nonce(shardkv_server *s);

/* Config helpers. */
void skv_config_destroy(skv_config *c); /* xdr_free; leaves a zeroed config */
const skv_group *skv_config_group(const skv_config *c, int64_t gid);

/* ---------------------------------------------------------------- migrate.c */

/* Apply steps, called from the apply callback with s->mu held. The op is
 * borrowed; a step may steal pointers out of it (setting them to NULL). */
void skv_apply_reconfig(shardkv_server *s, skv_config *cfg);
void skv_apply_install(shardkv_server *s, skv_install_op *in);
void skv_apply_gc(shardkv_server *s, const skv_shard_ref *ref);
void skv_apply_gc_ack(shardkv_server *s, const skv_shard_ref *ref);

/* RPC handlers (registered by server.c). */
void skv_handle_fetch(void *inst, void *args, void *res);
void skv_handle_gc(void *inst, void *args, void *res);

/* The poller thread. */
void *skv_poller_main(void *arg);
/* skv_kick_locked: wake the poller now (s->mu held). */
void skv_kick_locked(shardkv_server *s);

#endif /* SKV_INTERNAL_H */
