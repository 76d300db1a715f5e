/*
 * shardkv/clerk.c — the shardkv client.
 *
 * A clerk caches the latest configuration it got from the shard master. A call
 * finds the key's shard and its group, and tries the group's servers, starting
 * with the one that answered last (one remembered per gid). It stops on DKV_OK
 * or DKV_ERR_INVAL; a server that answers DKV_ERR_WRONG_GROUP or fails makes it
 * try the next one (a replica cut off from its peers lags behind its group and
 * may disown a shard the group owns). When no server of the group served the
 * call, it backs off (randomised, 10 ms doubling to 100 ms: src/call.h), asks the shard master for
 * the latest configuration and goes again, until the call succeeds or the
 * deadline passes.
 *
 * At most once: the clerk's Puts and Appends run under a session whose id the
 * shard master's log hands out (global and increasing); every call takes the
 * next sequence number and keeps it across all its retries, to any group, so a
 * Put or Append that was applied before its shard moved is recognised by the
 * new owner (the shard's session table moves with the shard). Gets need no
 * session. Expired sessions: see clerk_call and dkv/shardkv.h.
 * A clerk is used by one thread at a time, so it has no lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../shardmaster/sm_session.h"
#include "call.h"
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
	uint64_t session;        /* global id from the shard master (0: none yet) */
	uint64_t seq;            /* last Put/Append number in it */
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

static void refresh_config(shardkv_clerk *c, uint64_t deadline)
{
	shardmaster_clerk_set_timeout(c->smck, deadline ? dkv_call_left_ms(deadline, ~0u) : 0);
	shardmaster_config *nc = NULL;
	if (shardmaster_clerk_query(c->smck, -1, &nc) == DKV_OK && nc != NULL) {
		shardmaster_config_free(c->cfg);
		c->cfg = nc;
	}
}

typedef enum { CALL_GET, CALL_PUT, CALL_APPEND } call_kind;

/* One clerk call in progress: what the helper's hooks need. */
typedef struct {
	shardkv_clerk *c;
	int shard;
	uint64_t deadline;
	int64_t gid;                /* the group srv points into (0: none) */
	dkv_call_servers srv;
	skv_get_args get;
	skv_putappend_args pa;
	unsigned not_applied;       /* replies that prove their attempt was not applied */
} call_ctx;

/* Point srv at the group that owns the shard in c->cfg, from its hint. */
static void aim(call_ctx *x)
{
	shardkv_clerk *c = x->c;
	x->gid = 0;
	x->srv.names = NULL;
	x->srv.n = 0;
	if (c->cfg == NULL || c->cfg->shards[x->shard] == 0)
		return;
	for (int i = 0; i < c->cfg->ngroups; i++) {
		const shardmaster_group *g = &c->cfg->groups[i];
		if (g->gid == c->cfg->shards[x->shard] && g->nservers > 0) {
			x->gid = g->gid;
			x->srv.names = (const char *const *)g->servers;
			x->srv.n = g->nservers;
			x->srv.last = *hint_slot(c, g->gid);
			return;
		}
	}
}

static void keep_hint(call_ctx *x)
{
	if (x->gid != 0)
		*hint_slot(x->c, x->gid) = x->srv.last;
}

/* Before each RPC: how long the server may wait for agreement, and the
 * configuration we route by. */
static void prepare(void *ctx, unsigned rpc_ms)
{
	call_ctx *x = ctx;
	unsigned wait = rpc_ms > 1000 ? rpc_ms - 1000 : rpc_ms / 2;
	if (wait > SKV_CLERK_WAIT_MS)
		wait = SKV_CLERK_WAIT_MS;
	int cfgnum = x->c->cfg ? x->c->cfg->num : 0;
	x->get.wait_ms = x->pa.wait_ms = wait;
	x->get.cfgnum = x->pa.cfgnum = cfgnum;
}

/* WRONG_GROUP may come from a replica that lags behind its group (cut off from
 * its peers): ask the others before re-reading the configuration — the
 * helper's default (NEXT for everything but OK, NOKEY, INVAL, EXPIRED). A
 * WRONG_GROUP reply also proves that attempt applied nothing (the EXPIRED
 * rule counts those). */
static dkv_call_verdict classify(void *ctx, int *err, void *res)
{
	call_ctx *x = ctx;
	(void)res;
	if (*err == DKV_ERR_WRONG_GROUP)
		x->not_applied++;
	return dkv_call_default_verdict(*err);
}

/* Between rounds: no server of the group served the call; re-read the
 * configuration (the helper has backed off already). */
static int next_round(void *ctx, dkv_call_servers *srv)
{
	call_ctx *x = ctx;
	(void)srv;
	keep_hint(x);
	refresh_config(x->c, x->deadline);
	aim(x);
	return DKV_OK;
}

/* One attempt at the whole call (routing, retries, deadline: dkv_call_any).
 * *maybe: some RPC of it other than the final one may have been applied. */
static int run(shardkv_clerk *c, call_ctx *x, call_kind kind, char **out, bool *maybe)
{
	dkv_call_spec spec = {
		.prog = SKV_PROG, .vers = SKV_VERS, .rpc_ms = SKV_CLERK_RPC_MS,
		.backoff_min_ms = SKV_BACKOFF_MIN_MS, .backoff_max_ms = SKV_BACKOFF_MAX_MS,
		.ctx = x, .prepare = prepare, .classify = classify, .next_round = next_round,
	};
	int rc;
	unsigned sent = 0;
	x->not_applied = 0;
	if (kind == CALL_GET) {
		skv_get_reply r;
		spec.proc = SKV_GET;
		spec.xdr_args = (xdrproc_t)xdr_skv_get_args;
		spec.args = &x->get;
		spec.xdr_res = (xdrproc_t)xdr_skv_get_reply;
		spec.res_size = sizeof r;
		rc = dkv_call_any(c->pool, &x->srv, x->deadline, &spec, &r, &sent);
		if (rc == DKV_OK) {
			*out = r.value ? r.value : strdup("");
			r.value = NULL;
			if (*out == NULL)
				rc = DKV_ERR_NOMEM;
		}
		xdr_free((xdrproc_t)xdr_skv_get_reply, (char *)&r);
	} else {
		skv_putappend_reply r;
		spec.proc = SKV_PUTAPPEND;
		spec.xdr_args = (xdrproc_t)xdr_skv_putappend_args;
		spec.args = &x->pa;
		spec.xdr_res = (xdrproc_t)xdr_skv_putappend_reply;
		spec.res_size = sizeof r;
		rc = dkv_call_any(c->pool, &x->srv, x->deadline, &spec, &r, &sent);
		xdr_free((xdrproc_t)xdr_skv_putappend_reply, (char *)&r);
	}
	*maybe = sent > x->not_applied + 1;
	keep_hint(x);
	return rc;
}

/*
 * clerk_call: route, call, retry (dkv/shardkv.h). Put and Append run under the
 * clerk's session (a global id from the shard master, opened on first use).
 * The EXPIRED rule: DKV_ERR_EXPIRED when no earlier attempt of this call can
 * have been applied (every earlier reply was WRONG_GROUP) means the request was
 * never applied: open a new session and send it again; otherwise the call
 * returns DKV_ERR_EXPIRED (it may have been applied under the old session;
 * never twice).
 */
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
	call_ctx x;
	memset(&x, 0, sizeof x);
	x.c = c;
	x.shard = shardkv_key2shard(key);
	x.deadline = dkv_call_deadline(c->timeout_ms);
	x.get = (skv_get_args){ .key = (char *)key };
	x.pa = (skv_putappend_args){ .append = kind == CALL_APPEND, .key = (char *)key,
	                             .value = (char *)value };
	dkv_call_servers_init(&x.srv, NULL, 0);
	if (c->cfg == NULL)
		refresh_config(c, x.deadline);
	aim(&x);
	for (int fresh = 0;; fresh++) {
		if (kind != CALL_GET) {
			if (c->session == 0) {
				shardmaster_clerk_set_timeout(
					c->smck, x.deadline ? dkv_call_left_ms(x.deadline, ~0u) : 0);
				int rc = sm_clerk_global_session(c->smck, &c->session);
				if (rc != DKV_OK) {
					c->session = 0;
					return rc;
				}
				c->seq = 0;
			}
			x.pa.session = c->session;
			x.pa.seq = ++c->seq;
		}
		bool maybe = false;
		int rc = run(c, &x, kind, out, &maybe);
		if (rc != DKV_ERR_EXPIRED || kind == CALL_GET)
			return rc;
		c->session = 0; /* expired: the next Put/Append opens a new one */
		if (maybe || fresh >= 3)
			return DKV_ERR_EXPIRED;
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
