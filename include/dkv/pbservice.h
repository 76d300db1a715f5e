/*
 * dkv/pbservice.h — the primary/backup key/value service (MIT 6.824 lab 2B).
 *
 * Servers take the roles the view service (dkv/viewservice.h) gives them. The
 * primary serves clerks and forwards every operation — Gets too — to the backup,
 * answering only once the backup has agreed; a new backup first receives the
 * whole database and session table. Put and Append are applied at most once
 * per clerk request, across retries and failovers: a clerk's writes run in a
 * session the primary opens for it; servers remember a bounded number of
 * sessions (the least recently used is forgotten). A restarted server starts
 * empty and never acts as primary on its own; a server never acts on a view
 * numbered below one it has seen.
 *
 * Servers ping the view service every VIEWSERVICE_PING_INTERVAL_MS, never per
 * request. Clerks cache the primary and ask the view service only after a failure.
 * Keys are at most DKV_KEY_MAX bytes, values DKV_VALUE_MAX (dkv/common.h).
 */
#ifndef DKV_PBSERVICE_H
#define DKV_PBSERVICE_H

#include <stdbool.h>

#include "dkv/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pbservice_server pbservice_server;
typedef struct pbservice_clerk pbservice_clerk;

/*
 * pbservice_server_start: a server listening at `me` (a stale unix socket file is
 * removed first), pinging the view service at `vshost`. Both names are copied;
 * `me` is also the name this server has in views, so clerks and the other server
 * must reach it under that name. It starts empty. Returns NULL and sets errno
 * (EINVAL: NULL or over-long names; ENOMEM; the listen error).
 * Release with pbservice_server_free().
 */
pbservice_server *pbservice_server_start(const char *vshost, const char *me);

/*
 * pbservice_server_kill: stop serving. On return no RPC reaches the server, it
 * sends none, its threads have ended and its listening socket is closed (the
 * socket file may remain). Calls it had in flight fail at once. Idempotent and
 * thread-safe.
 */
void pbservice_server_kill(pbservice_server *srv);

/* pbservice_server_free: kill if needed, then release everything. NULL: no-op. */
void pbservice_server_free(pbservice_server *srv);

/*
 * pbservice_server_set_unreliable: while on, each request arriving at this server
 * (clerk calls and forwards from the primary alike) is dropped unread with
 * probability 0.1, or processed with its reply dropped with probability 0.2 of the
 * rest. Thread-safe; works on a killed server (no effect).
 */
void pbservice_server_set_unreliable(pbservice_server *srv, bool on);

/*
 * pbservice_clerk_new: a clerk for the service whose view service is at `vshost`
 * (copied). `me` is a label for logs only ("" or NULL allowed). No RPC is made
 * here: the clerk opens its session at the primary before its first write. Returns NULL and sets errno (EINVAL,
 * ENOMEM). Release with pbservice_clerk_free(). One thread at a time.
 */
pbservice_clerk *pbservice_clerk_new(const char *vshost, const char *me);

/* pbservice_clerk_free: release the clerk and its connections. NULL: no-op. */
void pbservice_clerk_free(pbservice_clerk *ck);

/*
 * pbservice_clerk_set_timeout: give every later call a deadline of about `ms`
 * milliseconds (0, the default: retry until success, the lab semantics).
 */
void pbservice_clerk_set_timeout(pbservice_clerk *ck, unsigned ms);

/*
 * pbservice_clerk_get: the current value of `key` into *value (a fresh malloc'ed
 * string the caller frees with free(); "" for a key never written). Blocks until
 * the primary answers, or until the deadline. Returns DKV_OK, DKV_ERR_TIMEOUT,
 * DKV_ERR_INVAL (NULL arguments, key longer than DKV_KEY_MAX) or DKV_ERR_NOMEM;
 * on error *value is NULL.
 */
int pbservice_clerk_get(pbservice_clerk *ck, const char *key, char **value);

/*
 * pbservice_clerk_put: set key to value (both copied). Applied exactly once when
 * DKV_OK is returned. Returns DKV_OK, DKV_ERR_TIMEOUT (may or may not have been
 * applied), DKV_ERR_INVAL (NULL arguments, key over DKV_KEY_MAX or value over
 * DKV_VALUE_MAX bytes: nothing is sent), DKV_ERR_EXPIRED (the servers forgot
 * this clerk's session while the call was being retried: it may or may not
 * have been applied; the next call opens a new session). When the session is
 * found forgotten on a call's first attempt, nothing was applied: the clerk
 * opens a new session and sends the call again by itself.
 */
int pbservice_clerk_put(pbservice_clerk *ck, const char *key, const char *value);

/*
 * pbservice_clerk_append: value(key) = value(key) + value ("" when absent),
 * applied at most once. Returns as pbservice_clerk_put; DKV_ERR_INVAL also when
 * the resulting value would exceed DKV_VALUE_MAX bytes (then nothing changes).
 */
int pbservice_clerk_append(pbservice_clerk *ck, const char *key, const char *value);

#ifdef __cplusplus
}
#endif

#endif /* DKV_PBSERVICE_H */
