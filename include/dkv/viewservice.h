/*
 * dkv/viewservice.h — the view service (MIT 6.824 lab 2A): decides which server
 * is the primary and which the backup of a primary/backup pair, in numbered views.
 *
 * Servers ping the view service every VIEWSERVICE_PING_INTERVAL_MS with the number
 * of the view they know; a server that misses VIEWSERVICE_DEAD_PINGS intervals, or
 * pings 0 while it is primary or backup (it restarted), is dead. The service moves
 * to view n+1 only after the primary of view n has pinged n (the ack rule), so a
 * primary that dies before acknowledging leaves the service stuck, as in the lab.
 *
 * Lifecycle: viewservice_server_start / _kill / _free; viewservice_clerk_new /
 * _free. Servers are thread-safe; a clerk is used by one thread at a time.
 */
#ifndef DKV_VIEWSERVICE_H
#define DKV_VIEWSERVICE_H

#include "dkv/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A server pings this often. */
#define VIEWSERVICE_PING_INTERVAL_MS 100
/* A server that sent no ping for this many intervals is dead. */
#define VIEWSERVICE_DEAD_PINGS 5

/* A view. The strings are endpoint names; "" means none. viewnum 0: no view yet. */
typedef struct {
	unsigned viewnum;
	char primary[DKV_NAME_MAX];
	char backup[DKV_NAME_MAX];
} viewservice_view;

typedef struct viewservice_server viewservice_server;
typedef struct viewservice_clerk viewservice_clerk;

/*
 * viewservice_server_start: listen at `me` (copied; a stale unix socket file is
 * removed first) and start the ticker thread, which runs every
 * VIEWSERVICE_PING_INTERVAL_MS. Returns NULL and sets errno on failure (EINVAL for
 * a bad name or NULL, ENOMEM, or the listen error). Release with
 * viewservice_server_free().
 */
viewservice_server *viewservice_server_start(const char *me);

/*
 * viewservice_server_start_opts: viewservice_server_start with start options
 * (dkv_server_opts, dkv/common.h); opts NULL = the plain start.
 *   dir      the view (number, primary, backup, acknowledged) is on disk
 *            before any reply reveals it; started again on the directory the
 *            service continues at exactly that view. no_fsync: written, not
 *            fsync'ed. A directory that cannot be used: NULL, errno EBUSY (in
 *            use), EINVAL (another server's, or not dkv's), EIO (damaged),
 *            EACCES, ENOTDIR, with a log line naming the file.
 *   restart  (without state to read: no dir, or a fresh one) the service has
 *            run before and lost its state: it hands out no view (replies
 *            carry view 0) until the primary of the last view and that view's
 *            backup, if any, report holding it; it then continues at that
 *            view's number + 2 with the same primary. Availability waits for
 *            them (for ever if one of them is dead or restarted); answers are
 *            never stale or empty because of the restart.
 * Any service that is pinged with a view number above its own treats itself
 * as restarted the same way (views come only from it).
 */
viewservice_server *viewservice_server_start_opts(const char *me, const dkv_server_opts *opts);

/*
 * viewservice_server_kill: stop serving. On return no RPC reaches the server, the
 * ticker thread has been joined and the listening socket is closed. Idempotent;
 * safe to call from several threads. Blocks at most as long as the slowest RPC
 * handler in flight (handlers never block).
 */
void viewservice_server_kill(viewservice_server *vs);

/* viewservice_server_free: kill if needed, then release everything. NULL: no-op. */
void viewservice_server_free(viewservice_server *vs);

/*
 * viewservice_server_rpc_count: RPCs the server has received so far: every call
 * message that arrived whole (pings, gets, and calls for unknown procedures or
 * with undecodable arguments); bytes that are not an RPC call do not count.
 * Works after kill. Thread-safe.
 */
unsigned long viewservice_server_rpc_count(const viewservice_server *vs);

/*
 * viewservice_clerk_new: a clerk talking to the view service at `server`. `me` is
 * the name this clerk pings as (the name of the p/b server it stands for); it may
 * be "" or NULL when the clerk only calls get/primary. Both strings are copied.
 * No RPC is made here. Returns NULL and sets errno (EINVAL: server NULL or a name
 * too long; ENOMEM). Release with viewservice_clerk_free().
 */
viewservice_clerk *viewservice_clerk_new(const char *me, const char *server);

/* viewservice_clerk_free: release the clerk and its connections. NULL: no-op. */
void viewservice_clerk_free(viewservice_clerk *ck);

/*
 * viewservice_clerk_ping: one Ping(me, viewnum) RPC; the reply (the current view)
 * is written to *out. Blocks for one RPC (bounded by a timeout of a few seconds).
 * Returns DKV_OK, or DKV_ERR_NET (the call failed; *out is then the empty view:
 * viewnum 0, no primary, no backup). DKV_ERR_INVAL when `me` is empty.
 */
int viewservice_clerk_ping(viewservice_clerk *ck, unsigned viewnum, viewservice_view *out);

/*
 * viewservice_clerk_get: fetch the current view into *out without pinging.
 * Returns DKV_OK, or DKV_ERR_NET with *out set to the empty view.
 */
int viewservice_clerk_get(viewservice_clerk *ck, viewservice_view *out);

/*
 * viewservice_clerk_primary: write the current primary's name ("" when there is
 * none or the call failed) into buf (len bytes, NUL-terminated). Returns DKV_OK,
 * DKV_ERR_NET (buf gets ""), or DKV_ERR_INVAL when buf is NULL/len 0 or the name
 * does not fit (buf then gets "" when len > 0).
 */
int viewservice_clerk_primary(viewservice_clerk *ck, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* DKV_VIEWSERVICE_H */
