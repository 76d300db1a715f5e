/*
 * shardkv/clerk.c — the shardkv client.
 *
 * A clerk caches the latest configuration it got from the shard master. A call
 * finds the key's shard and its group, and tries the group's servers, starting
 * with the one that answered last (one remembered per gid). It stops on DKV_OK
 * or DKV_ERR_INVAL; a server that answers DKV_ERR_WRONG_GROUP or fails makes it
 * try the next one (a replica cut off from its peers lags behind its group and
 * may disown a shard the group owns). When no server of the group served the
 * call, it backs off (10 ms doubling to 100 ms), asks the shard master for
 * the latest configuration and goes again, until the call succeeds or the
 * deadline passes.
 *
 * At most once: the clerk has a random non-zero 64-bit id; every call takes the
 * next sequence number and keeps it across all its retries, to any group, so a
 * Put or Append that was applied before its shard moved is recognised by the
 * new owner (the at-most-once table moves with the shard).
 * A clerk is used by one thread at a time, so it has no lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"

/* Each RPC waits at most SKV_CLERK_RPC_MS or the time left before the deadline;
 * a server in a minority answers DKV_ERR_TIMEOUT after wait_ms, so the clerk
 * moves on to another replica. */
#define SKV_CLERK_WAIT_MS 2500u   /* how long a server may wait for agreement */
#define SKV_CLERK_RPC_MS 3500u    /* one RPC, reply included */
#define SKV_BACKOFF_MIN_MS 10u
#define SKV_BACKOFF_MAX_MS 100u
#define SKV_HINTS 16

struct shardkv_clerk {
	shardmaster_clerk *smck;
	shardmaster_config *cfg; /* latest known, or NULL */
	dkv_rpc_pool *pool;
	uint64_t cid;
	uint64_t seq;
	unsigned timeout_ms;     /* 0: forever */
	struct {
		int64_t gid;
		int idx;
	} hints[SKV_HINTS];      /* last server that answered, per gid */
	int nhints;
};

shardkv_clerk *shardkv_clerk_new(const char *const *shardmasters, int nsm)
{
	if (shardmasters == NULL || nsm <= 0) {
		errno = EINVAL;
		return NULL;
	}
	dkv_lib_init();
	shardkv_clerk *c = dkv_calloc(1, sizeof *c);
	if (c == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	c->smck = shardmaster_clerk_new(shardmasters, nsm);
	if (c->smck == NULL) {
		int e = errno;
		free(c);
		errno = e ? e : ENOMEM;
		return NULL;
	}
	c->pool = dkv_rpc_pool_new();
	if (c->pool == NULL) {
		shardmaster_clerk_free(c->smck);
		free(c);
		errno = ENOMEM;
		return NULL;
	}
	do
		c->cid = dkv_random_seed();
	while (c->cid == 0);
	return c;
}

void shardkv_clerk_free(shardkv_clerk *c)
{
	if (c == NULL)
		return;
	shardmaster_config_free(c->cfg);
	shardmaster_clerk_free(c->smck);
	dkv_rpc_pool_free(c->pool);
	free(c);
}

void shardkv_clerk_set_timeout(shardkv_clerk *c, unsigned ms)
{
	if (c != NULL)
		c->timeout_ms = ms;
}

static int *hint_slot(shardkv_clerk *c, int64_t gid)
{
	for (int i = 0; i < c->nhints; i++)
		if (c->hints[i].gid == gid)
			return &c->hints[i].idx;
	int i = c->nhints < SKV_HINTS ? c->nhints++ : (int)(c->seq % SKV_HINTS);
	c->hints[i].gid = gid;
	c->hints[i].idx = 0;
	return &c->hints[i].idx;
}

/* Time left before the deadline (ms, at least 1), or `cap` without a deadline. */
static unsigned left_ms(uint64_t deadline, unsigned cap)
{
	if (deadline == 0)
		return cap;
	uint64_t now = dkv_now_ms();
	if (now >= deadline)
		return 1;
	uint64_t left = deadline - now;
	return left < cap ? (unsigned)left : cap;
}

static void refresh_config(shardkv_clerk *c, uint64_t deadline)
{
	shardmaster_clerk_set_timeout(c->smck, deadline ? left_ms(deadline, ~0u) : 0);
	shardmaster_config *nc = NULL;
	if (shardmaster_clerk_query(c->smck, -1, &nc) == DKV_OK && nc != NULL) {
		shardmaster_config_free(c->cfg);
		c->cfg = nc;
	}
}

typedef enum { CALL_GET, CALL_PUT, CALL_APPEND } call_kind;

/* One RPC to one server. Returns the transport error or the server's answer. */
static int call_one(shardkv_clerk *c, const char *name, call_kind kind, const char *key,
                    const char *value, uint64_t seq, unsigned rpc_ms, char **out)
{
	unsigned wait = rpc_ms > 1000 ? rpc_ms - 1000 : rpc_ms / 2;
	if (wait > SKV_CLERK_WAIT_MS)
		wait = SKV_CLERK_WAIT_MS;
	int cfgnum = c->cfg ? c->cfg->num : 0;
	if (kind == CALL_GET) {
		skv_get_args a = { .cid = c->cid, .seq = seq, .cfgnum = cfgnum, .wait_ms = wait,
		                   .key = (char *)key };
		skv_get_reply r;
		memset(&r, 0, sizeof r);
		int rc = dkv_rpc_call(c->pool, name, SKV_PROG, SKV_VERS, SKV_GET,
		                      (xdrproc_t)xdr_skv_get_args, &a, (xdrproc_t)xdr_skv_get_reply, &r,
		                      rpc_ms);
		if (rc != DKV_OK)
			return rc;
		rc = r.err;
		if (rc == DKV_OK) {
			*out = strdup(r.value ? r.value : "");
			if (*out == NULL)
				rc = DKV_ERR_NOMEM;
		}
		xdr_free((xdrproc_t)xdr_skv_get_reply, (char *)&r);
		return rc;
	}
	skv_putappend_args a = { .cid = c->cid, .seq = seq, .cfgnum = cfgnum, .wait_ms = wait,
	                         .append = kind == CALL_APPEND, .key = (char *)key,
	                         .value = (char *)value };
	skv_putappend_reply r;
	memset(&r, 0, sizeof r);
	int rc = dkv_rpc_call(c->pool, name, SKV_PROG, SKV_VERS, SKV_PUTAPPEND,
	                      (xdrproc_t)xdr_skv_putappend_args, &a,
	                      (xdrproc_t)xdr_skv_putappend_reply, &r, rpc_ms);
	if (rc != DKV_OK)
		return rc;
	rc = r.err;
	xdr_free((xdrproc_t)xdr_skv_putappend_reply, (char *)&r);
	return rc;
}

static int clerk_call(shardkv_clerk *c, call_kind kind, const char *key, const char *value,
                      char **out)
{
	if (out != NULL)
		*out = NULL;
	if (c == NULL || key == NULL || (kind != CALL_GET && value == NULL) ||
	    (kind == CALL_GET && out == NULL))
		return DKV_ERR_INVAL;
	if (strlen(key) > DKV_KEY_MAX || (value != NULL && strlen(value) > DKV_VALUE_MAX))
		return DKV_ERR_INVAL;
	uint64_t seq = ++c->seq;
	uint64_t deadline = c->timeout_ms ? dkv_now_ms() + c->timeout_ms : 0;
	unsigned backoff = SKV_BACKOFF_MIN_MS;
	int shard = shardkv_key2shard(key);
	if (c->cfg == NULL)
		refresh_config(c, deadline);
	for (;;) {
		const shardmaster_group *g = NULL;
		if (c->cfg != NULL && c->cfg->shards[shard] != 0)
			for (int i = 0; i < c->cfg->ngroups; i++)
				if (c->cfg->groups[i].gid == c->cfg->shards[shard])
					g = &c->cfg->groups[i];
		if (g != NULL && g->nservers > 0) {
			int *hint = hint_slot(c, g->gid);
			for (int k = 0; k < g->nservers; k++) {
				if (deadline != 0 && dkv_now_ms() >= deadline)
					return DKV_ERR_TIMEOUT;
				int idx = (*hint + k) % g->nservers;
				int rc = call_one(c, g->servers[idx], kind, key, value, seq,
				                  left_ms(deadline, SKV_CLERK_RPC_MS), out);
				if (rc == DKV_OK) {
					*hint = idx;
					return DKV_OK;
				}
				if (rc == DKV_ERR_INVAL || rc == DKV_ERR_NOKEY)
					return rc;
				/* WRONG_GROUP may come from a replica that lags behind its group
				 * (cut off from its peers): ask the others before re-reading the
				 * configuration. NET, TIMEOUT, KILLED, NOMEM: the next server. */
			}
		}
		if (deadline != 0 && dkv_now_ms() >= deadline)
			return DKV_ERR_TIMEOUT;
		dkv_sleep_ms(left_ms(deadline, backoff));
		backoff = backoff * 2 > SKV_BACKOFF_MAX_MS ? SKV_BACKOFF_MAX_MS : backoff * 2;
		if (deadline != 0 && dkv_now_ms() >= deadline)
			return DKV_ERR_TIMEOUT;
		refresh_config(c, deadline);
	}
}

int shardkv_clerk_get(shardkv_clerk *c, const char *key, char **value)
{
	if (value == NULL)
		return DKV_ERR_INVAL;
	return clerk_call(c, CALL_GET, key, NULL, value);
}

int shardkv_clerk_put(shardkv_clerk *c, const char *key, const char *value)
{
	return clerk_call(c, CALL_PUT, key, value, NULL);
}

int shardkv_clerk_append(shardkv_clerk *c, const char *key, const char *value)
{
	return clerk_call(c, CALL_APPEND, key, value, NULL);
}
