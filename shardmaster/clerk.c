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
 * At-most-once: the clerk has a random 64-bit id and numbers its Join, Leave
 * and Move requests; a retry carries the same number, so the replicas apply it
 * once (sm_state_seen). Query needs no number.
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
#include "sm_wire.h"

#define SM_BACKOFF_START_MS 2u
#define SM_BACKOFF_MAX_MS 100u

struct shardmaster_clerk {
	int n;
	char **servers;      /* n names, owned */
	dkv_rpc_pool *pool;
	uint64_t client_id;  /* random, for at-most-once */
	uint64_t seq;        /* last Join/Leave/Move number used */
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
	c->client_id = dkv_random_seed();
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
 * deadline). DKV_OK and DKV_ERR_INVAL are final; a replica's DKV_ERR_TIMEOUT
 * (it could not get the request agreed) or DKV_ERR_KILLED means the next one.
 * `res` is a reply struct of res_size bytes whose first field is `int err`. On
 * DKV_OK the caller releases *res with xdr_free(xdr_res, res); otherwise it
 * holds nothing.
 */
static int call(shardmaster_clerk *c, rpcproc_t proc, xdrproc_t xdr_args, const void *args,
                xdrproc_t xdr_res, void *res, size_t res_size)
{
	dkv_call_spec spec = {
		.prog = SHARDMASTER_PROG, .vers = SHARDMASTER_V1, .proc = proc,
		.xdr_args = xdr_args, .args = args, .xdr_res = xdr_res, .res_size = res_size,
		.rpc_ms = SM_CALL_TIMEOUT_MS,
		.backoff_min_ms = SM_BACKOFF_START_MS, .backoff_max_ms = SM_BACKOFF_MAX_MS,
	};
	int err = dkv_call_any(c->pool, &c->srv, dkv_call_deadline(c->timeout_ms), &spec, res, NULL);
	if (err != DKV_OK)
		xdr_free(xdr_res, res);
	return err;
}

static int call_simple(shardmaster_clerk *c, rpcproc_t proc, xdrproc_t xdr_args, const void *args)
{
	sm_reply r;
	return call(c, proc, xdr_args, args, (xdrproc_t)xdr_sm_reply, &r, sizeof r);
}

int shardmaster_clerk_join(shardmaster_clerk *c, int64_t gid, const char *const *servers, int n)
{
	if (c == NULL || gid <= 0 || servers == NULL || n <= 0 || n > SM_WIRE_MAX_SERVERS)
		return DKV_ERR_INVAL;
	for (int i = 0; i < n; i++)
		if (!valid_name(servers[i]))
			return DKV_ERR_INVAL;
	sm_join_args a = { .client_id = c->client_id, .seq = ++c->seq, .gid = gid };
	a.servers.servers_len = (u_int)n;
	a.servers.servers_val = (char **)servers; /* borrowed for encoding only */
	return call_simple(c, SM_JOIN, (xdrproc_t)xdr_sm_join_args, &a);
}

int shardmaster_clerk_leave(shardmaster_clerk *c, int64_t gid)
{
	if (c == NULL || gid <= 0)
		return DKV_ERR_INVAL;
	sm_leave_args a = { .client_id = c->client_id, .seq = ++c->seq, .gid = gid };
	return call_simple(c, SM_LEAVE, (xdrproc_t)xdr_sm_leave_args, &a);
}

int shardmaster_clerk_move(shardmaster_clerk *c, int shard, int64_t gid)
{
	if (c == NULL || gid <= 0 || shard < 0 || shard >= SHARDMASTER_NSHARDS)
		return DKV_ERR_INVAL;
	sm_move_args a = { .client_id = c->client_id, .seq = ++c->seq, .shard = shard, .gid = gid };
	return call_simple(c, SM_MOVE, (xdrproc_t)xdr_sm_move_args, &a);
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
	int rc = call(c, SM_QUERY, (xdrproc_t)xdr_sm_query_args, &a, (xdrproc_t)xdr_sm_query_reply,
	              &r, sizeof r);
	if (rc != DKV_OK)
		return rc;
	*out = sm_config_from_wire(&r.config);
	xdr_free((xdrproc_t)xdr_sm_query_reply, (char *)&r);
	return *out != NULL ? DKV_OK : DKV_ERR_NOMEM;
}
