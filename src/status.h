/*
 * src/status.h — the status program: one small RPC program (status_prot.x) that
 * every dkv server registers on its own existing dkv_rpc_server, so that an
 * operator (`dkvctl status`) or a test can ask any replica what it is doing:
 * its role (voting / rejoining / catching-up; primary / backup / idle), how
 * far its log is applied and forgotten, what it holds in memory and on disk,
 * how long it has been up. Not a second listener: the program shares the
 * service's endpoint (and its unreliable mode).
 *
 * Server side: a service calls dkv_status_register once at start with a
 * fill callback; the layer answers DKV_STATUS_GET by calling it on a
 * zero-filled record (dkv_status_init), then adds uptime and pid itself.
 * The callback runs on the connection's thread with no lock of this layer
 * held; it takes the service's own lock to copy its counters, and must not
 * make an outgoing RPC. Client side: dkv_status_get.
 *
 * Internal to dkv (the libraries, cmd/ and tests); not an installed header.
 */
#ifndef DKV_STATUS_H
#define DKV_STATUS_H

#include <stdint.h>

#include "dkv_internal.h"

#define DKV_STATUS_PROGRAM 0x20000107u

/* What one replica reports. Integers that do not apply are -1 (gid: 0). */
typedef struct dkv_status {
	char service[32];   /* "kvpaxos", "shardmaster", "shardkv", "pbservice", "viewservice" */
	char role[32];      /* "voting", "rejoining", "catching-up", "stopped", "primary",
	                       "backup", "idle", "serving" (viewservice) */
	char detail[256];   /* free text for humans, may be "" */
	int64_t gid;        /* shardkv replica group, else 0 */
	int me, npeers;     /* index in the peer list and its size, -1 */
	uint64_t incarnation;
	int64_t applied;    /* every log seq below this is applied */
	int64_t paxos_max, paxos_min;
	int64_t snapshot_seq; /* last snapshot taken or restored */
	int64_t sessions;   /* client sessions held */
	int64_t keys;       /* keys held */
	int64_t bytes;      /* bytes of keys and values held */
	int64_t dir_bytes;  /* bytes of the files in the data directory */
	uint64_t uptime_ms; /* filled by the layer: since dkv_status_register */
	uint64_t pid;       /* filled by the layer */
} dkv_status;

/* dkv_status_init: strings "", every integer -1, gid 0, incarnation 0. */
void dkv_status_init(dkv_status *st);

/* The service's callback: fill what it knows into *out (already initialised).
 * `ctx` is the pointer given to dkv_status_register. */
typedef void (*dkv_status_fill_fn)(void *ctx, dkv_status *out);

typedef struct dkv_status_reg dkv_status_reg;

/*
 * dkv_status_register: serve the status program on `rpcs` (borrowed: it must
 * outlive the registration), answering with fill(ctx, …). ctx is borrowed.
 * Returns the registration, or NULL with errno set (ENOMEM; EINVAL when rpcs
 * already serves it or is full; ESHUTDOWN when rpcs was killed).
 * Uptime is counted from this call.
 */
dkv_status_reg *dkv_status_register(dkv_rpc_server *rpcs, dkv_status_fill_fn fill, void *ctx);

/*
 * dkv_status_unregister: stop serving (waits for a status call in progress)
 * and free the registration. Call it while `rpcs` is alive or after
 * dkv_rpc_server_kill, and before dkv_rpc_server_free. NULL is a no-op.
 */
void dkv_status_unregister(dkv_status_reg *reg);

/*
 * dkv_status_get: ask the server at `name` for its status, through `pool`
 * (borrowed), waiting at most timeout_ms (0: the default). On DKV_OK *out is
 * filled. Errors: as dkv_rpc_call (DKV_ERR_NET also when the server answers
 * but serves no status program).
 */
int dkv_status_get(dkv_rpc_pool *pool, const char *name, unsigned timeout_ms, dkv_status *out);

/*
 * dkv_status_dir_bytes: the total size of the regular files under `dir`
 * (recursively, not following symbolic links), or -1 when dir is NULL, ""
 * or cannot be read.
 */
int64_t dkv_status_dir_bytes(const char *dir);

/*
 * dkv_status_rsm_role: the role word of a paxosrsm_role value (the numbers
 * of include/dkv/paxosrsm.h): "voting", "rejoining", "catching-up",
 * "stopped", else "unknown". A static string.
 */
const char *dkv_status_rsm_role(int role);

/*
 * dkv_status_set_rsm: copy what paxosrsm_get_info reported (`info` points to
 * a paxosrsm_info; borrowed) into *st: role, incarnation, applied, Paxos
 * max/min, snapshot position, client sessions.
 */
struct paxosrsm_info;
void dkv_status_set_rsm(dkv_status *st, const struct paxosrsm_info *info);

#endif /* DKV_STATUS_H */
