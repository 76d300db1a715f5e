/*
 * shardmaster/clerk.c — the shard-master clerk.
 *
 * Lab semantics, through the one call-any-replica helper (src/call.h): a call
 * tries the replicas in turn until one answers it, with a short randomised
 * backoff after each full round (2 ms, doubling to 100 ms: the lab slept
 * 100 ms between rounds), forever — or, with a deadline set, until the
 * deadline, then DKV_ERR_TIMEOUT. A replica that answers DKV_ERR_TIMEOUT (it
 * could not get the request agreed: a minority, say) or DKV_ERR_KILLED counts
 * as a failed try. The clerk starts each call at the replica that answered the
 * last one.
 *
 * At-most-once: the clerk opens a session in the shard master's log (on its
 * first Join, Leave or Move) and numbers its requests in it; a retry carries
 * the same number, so the replicas (paxosrsm's sessions) apply it once. Query
 * needs no number. A session the log has expired gives DKV_ERR_EXPIRED: see
 * mutate() and dkv/shardmaster.h.
 *
 * Arguments are checked here first (DKV_ERR_INVAL without a round trip), and
 * again by the replicas, which also refuse a Move to an unknown group.
 * One thread at a time uses a clerk; nothing here is shared between clerks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/shardmaster.h"
#include "call.h"
#include "dkv_internal.h"
#include "sm_session.h"
#include "sm_wire.h"

#define SM_BACKOFF_START_MS 2u
#define SM_BACKOFF_MAX_MS 100u

struct shardmaster_clerk {
	int n;
	char **servers;      /* n names, owned */
	dkv_rpc_pool *pool;
	uint64_t session;    /* from SM_OPEN_SESSION (0: none yet) */
	uint64_t seq;        /* last Join/Leave/Move number used in it */
	unsigned timeout_ms; /* 0: retry forever */
	dkv_call_servers srv;/* the replicas, and which answered last */
};

/* valid_name: a server name in a Join: non-empty, shorter than DKV_NAME_MAX
 * (opaque to the shard master: shardkv dials it). */
static bool valid_name(const char *name)
{
	return name != NULL && name[0] != '\0' && strlen(name) < DKV_NAME_MAX;
}

/* valid_endpoint: a replica's name: also one that dkv can dial. */
static bool valid_endpoint(const char *name)
{
	dkv_name parsed;
	return valid_name(name) && dkv_name_parse(name, &parsed) == DKV_OK;
}

shardmaster_clerk *shardmaster_clerk_new(const char *const *servers, int n)
{
	dkv_lib_init();
	if (servers == NULL || n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		if (!valid_endpoint(servers[i])) {
			errno = EINVAL;
			return NULL;
		}
	}
	shardmaster_clerk *c = dkv_calloc(1, sizeof *c);
	if (c == NULL)
		goto nomem;
	c->servers = dkv_calloc((size_t)n, sizeof *c->servers);
	if (c->servers == NULL)
		goto nomem;
	for (int i = 0; i < n; i++) {
		c->servers[i] = dkv_strdup(servers[i]);
		if (c->servers[i] == NULL)
			goto nomem;
		c->n = i + 1;
	}
	c->pool = dkv_rpc_pool_new();
	if (c->pool == NULL)
		goto nomem;
	dkv_call_servers_init(&c->srv, (const char *const *)c->servers, c->n);
	return c;
nomem:
	shardmaster_clerk_free(c);
	errno = ENOMEM;
	return NULL;
}

void shardmaster_clerk_free(shardmaster_clerk *c)
{
	if (c == NULL)
		return;
	dkv_rpc_pool_free(c->pool);
	if (c->servers != NULL)
		for (int i = 0; i < c->n; i++)
			free(c->servers[i]);
	free(c->servers);
	free(c);
}

void shardmaster_clerk_set_timeout(shardmaster_clerk *c, unsigned ms)
{
	if (c != NULL)
		c->timeout_ms = ms;
}

/*
 * call: dkv_call_any over the replicas (src/call.h: which replica, backoff,
 * deadline). DKV_OK, DKV_ERR_INVAL and DKV_ERR_EXPIRED are final; a replica's
 * DKV_ERR_TIMEOUT (it could not get the request agreed) or DKV_ERR_KILLED
 * means the next one. `res` is a reply struct of res_size bytes whose first
 * field is `int err`. On DKV_OK the caller releases *res with
 * xdr_free(xdr_res, res); otherwise it holds nothing. *sent: RPCs issued.
 */
static int call(shardmaster_clerk *c, uint64_t deadline, rpcproc_t proc, xdrproc_t xdr_args,
                const void *args, xdrproc_t xdr_res, void *res, size_t res_size, unsigned *sent)
{
	dkv_call_spec spec = {
		.prog = SHARDMASTER_PROG, .vers = SHARDMASTER_V1, .proc = proc,
		.xdr_args = xdr_args, .args = args, .xdr_res = xdr_res, .res_size = res_size,
		.rpc_ms = SM_CALL_TIMEOUT_MS,
		.backoff_min_ms = SM_BACKOFF_START_MS, .backoff_max_ms = SM_BACKOFF_MAX_MS,
	};
	int err = dkv_call_any(c->pool, &c->srv, deadline, &spec, res, sent);
	if (err != DKV_OK)
		xdr_free(xdr_res, res);
	return err;
}

static int open_session(shardmaster_clerk *c, uint64_t deadline, int kind, uint64_t *id)
{
	sm_session_args a = { .kind = kind };
	sm_session_reply r;
	int rc = call(c, deadline, SM_OPEN_SESSION, (xdrproc_t)xdr_sm_session_args, &a,
	              (xdrproc_t)xdr_sm_session_reply, &r, sizeof r, NULL);
	if (rc != DKV_OK)
		return rc;
	*id = r.session;
	xdr_free((xdrproc_t)xdr_sm_session_reply, (char *)&r);
	return *id != 0 ? DKV_OK : DKV_ERR_NOMEM;
}

int sm_clerk_global_session(shardmaster_clerk *c, uint64_t *id)
{
	if (c == NULL || id == NULL)
		return DKV_ERR_INVAL;
	*id = 0;
	return open_session(c, dkv_call_deadline(c->timeout_ms), SM_SESSION_GLOBAL, id);
}

/* A mutation's args: session and seq are filled in by mutate. */
typedef union {
	sm_join_args join;
	sm_leave_args leave;
	sm_move_args move;
} mut_args;

/*
 * mutate: one Join/Leave/Move under the clerk's session (opened on first use).
 * The EXPIRED rule (dkv/shardmaster.h): EXPIRED in answer to the very first
 * RPC of a request means the request was never applied — open a new session
 * and send it again; EXPIRED after a retry means it may have been applied under
 * the expired session, so the call returns DKV_ERR_EXPIRED.
 */
static int mutate(shardmaster_clerk *c, rpcproc_t proc, xdrproc_t xdr_args, mut_args *a,
                  uint64_t *session, uint64_t *seq)
{
	uint64_t deadline = dkv_call_deadline(c->timeout_ms);
	for (int fresh = 0;; fresh++) {
		if (c->session == 0) {
			int rc = open_session(c, deadline, SM_SESSION_CLERK, &c->session);
			if (rc != DKV_OK) {
				c->session = 0;
				return rc;
			}
			c->seq = 0;
		}
		*session = c->session;
		*seq = ++c->seq;
		sm_reply r;
		unsigned sent = 0;
		int rc = call(c, deadline, proc, xdr_args, a, (xdrproc_t)xdr_sm_reply, &r, sizeof r,
		              &sent);
		if (rc == DKV_OK)
			xdr_free((xdrproc_t)xdr_sm_reply, (char *)&r);
		if (rc != DKV_ERR_EXPIRED)
			return rc;
		c->session = 0; /* gone: the next request opens a new one */
		if (sent != 1 || fresh >= 3)
			return DKV_ERR_EXPIRED;
	}
}

int shardmaster_clerk_join(shardmaster_clerk *c, int64_t gid, const char *const *servers, int n)
{
	if (c == NULL || gid <= 0 || servers == NULL || n <= 0 || n > SM_WIRE_MAX_SERVERS)
		return DKV_ERR_INVAL;
	for (int i = 0; i < n; i++)
		if (!valid_name(servers[i]))
			return DKV_ERR_INVAL;
	mut_args a = { .join = { .gid = gid } };
	a.join.servers.servers_len = (u_int)n;
	a.join.servers.servers_val = (char **)servers; /* borrowed for encoding only */
	return mutate(c, SM_JOIN, (xdrproc_t)xdr_sm_join_args, &a, &a.join.session, &a.join.seq);
}

int shardmaster_clerk_leave(shardmaster_clerk *c, int64_t gid)
{
	if (c == NULL || gid <= 0)
		return DKV_ERR_INVAL;
	mut_args a = { .leave = { .gid = gid } };
	return mutate(c, SM_LEAVE, (xdrproc_t)xdr_sm_leave_args, &a, &a.leave.session, &a.leave.seq);
}

int shardmaster_clerk_move(shardmaster_clerk *c, int shard, int64_t gid)
{
	if (c == NULL || gid <= 0 || shard < 0 || shard >= SHARDMASTER_NSHARDS)
		return DKV_ERR_INVAL;
	mut_args a = { .move = { .shard = shard, .gid = gid } };
	return mutate(c, SM_MOVE, (xdrproc_t)xdr_sm_move_args, &a, &a.move.session, &a.move.seq);
}

int shardmaster_clerk_query(shardmaster_clerk *c, int num, shardmaster_config **out)
{
	if (out == NULL)
		return DKV_ERR_INVAL;
	*out = NULL;
	if (c == NULL || num < -1)
		return DKV_ERR_INVAL;
	sm_query_args a = { .num = num };
	sm_query_reply r;
	int rc = call(c, dkv_call_deadline(c->timeout_ms), SM_QUERY, (xdrproc_t)xdr_sm_query_args,
	              &a, (xdrproc_t)xdr_sm_query_reply, &r, sizeof r, NULL);
	if (rc != DKV_OK)
		return rc;
	*out = sm_config_from_wire(&r.config);
	xdr_free((xdrproc_t)xdr_sm_query_reply, (char *)&r);
	return *out != NULL ? DKV_OK : DKV_ERR_NOMEM;
}
