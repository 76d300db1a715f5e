/*
 * dkv/rpc.h — endpoints: names and listening servers.
 *
 * A name is a unix-domain socket path ("/var/tmp/x", or "unix:/var/tmp/x") or
 * "tcp:HOST:PORT". A name is resolved at every call: removing the socket file
 * behind a unix name makes calls through it fail, and replacing it by a hard link
 * to another server's socket makes the next call reach that server, even when a
 * connection was cached (dkv checks the file's device and inode before reuse).
 *
 * A dkv_rpc_server is one listening endpoint that can serve several RPC programs
 * (a kvpaxos replica and its Paxos peer share one). Each connection is served by
 * its own thread, so handlers may block and make nested calls.
 */
#ifndef DKV_RPC_H
#define DKV_RPC_H

#include "dkv/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dkv_rpc_server dkv_rpc_server;

/*
 * dkv_rpc_server_listen: start listening at `name` (copied). A stale unix socket
 * file at the path is removed first. For "tcp:HOST:0" the kernel picks the port.
 * Returns NULL and sets errno on failure (EINVAL: bad name; EADDRINUSE; ENOMEM …).
 * The caller releases it with dkv_rpc_server_free().
 */
dkv_rpc_server *dkv_rpc_server_listen(const char *name);

/*
 * dkv_rpc_server_set_unreliable: while on, each incoming request is, with
 * probability 0.1, dropped unprocessed (the caller sees a failed call) and, with
 * probability 0.2 of the rest, processed with its reply dropped. Applies to every
 * program served on this endpoint. Thread-safe.
 */
void dkv_rpc_server_set_unreliable(dkv_rpc_server *s, bool on);

/* dkv_rpc_server_count: requests received so far, dropped ones included. Works after kill. */
unsigned long dkv_rpc_server_count(const dkv_rpc_server *s);

/*
 * dkv_rpc_server_kill: stop serving. When it returns no request reaches a handler,
 * every connection and thread of the server has ended and the listening socket is
 * closed. Idempotent. It waits for handlers already running to return.
 */
void dkv_rpc_server_kill(dkv_rpc_server *s);

/* dkv_rpc_server_free: kill if needed, then release everything. NULL is a no-op. */
void dkv_rpc_server_free(dkv_rpc_server *s);

#ifdef __cplusplus
}
#endif

#endif /* DKV_RPC_H */
