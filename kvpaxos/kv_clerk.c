/*
 * kvpaxos/kv_clerk.c — the kvpaxos clerk.
 *
 * Sessions: before its first Put/Append a clerk opens a session (KV_OPEN: an
 * op in the replicas' log, which assigns the id), then numbers its writes 1,
 * 2, … in it; a retry repeats (session, seq), which is what lets the replicas
 * apply a write at most once. A Get has no session. Every request goes
 * through dkv_call_any (src/call.h: the replica that answered last first, the
 * next one after a failed RPC or a replica that could not get the op agreed
 * within wait_ms, a randomised backoff after each full round, the clerk's
 * deadline — 0, the lab's, retries forever — then DKV_ERR_TIMEOUT).
 * DKV_ERR_EXPIRED (the replicas no longer know the session): if no earlier
 * attempt of this op was sent, the op was never applied anywhere, so the clerk
 * opens a new session and tries again; otherwise an earlier attempt may have
 * been applied and the call returns DKV_ERR_EXPIRED.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/kvpaxos.h"
#include "dkv_internal.h"
#include "call.h"
#include "kv_prot.h"

/* Server-side wait for agreement, and the slack our RPC timeout adds to it. */
#define KV_CLERK_WAIT_MS 1000u
#define KV_CLERK_RPC_SLACK_MS 1000u
#define KV_CLERK_BACKOFF_MAX_MS 100u


struct kvpaxos_clerk {
	int n;
	char **servers;     /* n names, owned */
	dkv_rpc_pool *pool;
	uint64_t session;   /* 0: none opened yet */
	uint64_t seq;       /* last seq used in it */
	unsigned timeout_ms;/* 0: retry forever */
	dkv_call_servers srv; /* rotation over servers, the one that answered last */
};

kvpaxos_clerk *kvpaxos_clerk_new(const char *const *servers, int n)
{
	dkv_lib_init();
	if (servers == NULL || n <= 0) {
		errno = EINVAL;
		return NULL;
	}
	kvpaxos_clerk *ck = dkv_calloc(1, sizeof *ck);
	if (ck == NULL)
		return NULL;
	ck->servers = dkv_calloc((size_t)n, sizeof *ck->servers);
	if (ck->servers == NULL)
		goto nomem;
	ck->n = n;
	for (int i = 0; i < n; i++) {
		if (servers[i] == NULL) {
			kvpaxos_clerk_free(ck);
			errno = EINVAL;
			return NULL;
		}
		ck->servers[i] = dkv_strdup(servers[i]);
		if (ck->servers[i] == NULL)
			goto nomem;
	}
	ck->pool = dkv_rpc_pool_new();
	if (ck->pool == NULL)
		goto nomem;
	dkv_call_servers_init(&ck->srv, (const char *const *)ck->servers, n);
	return ck;
nomem:
	kvpaxos_clerk_free(ck);
	errno = ENOMEM;
	return NULL;
}

void kvpaxos_clerk_free(kvpaxos_clerk *ck)
{
	if (ck == NULL)
		return;
	dkv_rpc_pool_free(ck->pool);
	for (int i = 0; ck->servers != NULL && i < ck->n; i++)
		free(ck->servers[i]);
	free(ck->servers);
	free(ck);
}

void kvpaxos_clerk_set_timeout(kvpaxos_clerk *ck, unsigned ms)
{
	ck->timeout_ms = ms;
}

/* prepare hook: how long the server may wait for agreement within this
 * attempt's RPC timeout (the rest is slack for the reply). */
typedef struct {
	unsigned *wait_ms;
} prep_ctx;

static void prepare(void *ctx, unsigned rpc_ms)
{
	prep_ctx *p = ctx;
	*p->wait_ms = rpc_ms >= KV_CLERK_WAIT_MS + KV_CLERK_RPC_SLACK_MS
	                  ? KV_CLERK_WAIT_MS
	                  : (rpc_ms / 2 ? rpc_ms / 2 : 1);
}

static int one(kvpaxos_clerk *ck, uint64_t deadline, rpcproc_t proc, xdrproc_t xa, void *args,
               unsigned *wait_ms, xdrproc_t xr, void *res, size_t res_size, unsigned *sent)
{
	prep_ctx pc = { wait_ms };
	dkv_call_spec spec = {
		.prog = KVPAXOS_PROG, .vers = KVPAXOS_VERS, .proc = proc, .xdr_args = xa,
		.args = args, .xdr_res = xr, .res_size = res_size,
		.rpc_ms = KV_CLERK_WAIT_MS + KV_CLERK_RPC_SLACK_MS,
		.backoff_min_ms = 1, .backoff_max_ms = KV_CLERK_BACKOFF_MAX_MS,
		.ctx = &pc, .prepare = prepare,
	};
	return dkv_call_any(ck->pool, &ck->srv, deadline, &spec, res, sent);
}

/* Open a session (any replica). DKV_OK, DKV_ERR_TIMEOUT, DKV_ERR_KILLED. */
static int open_session(kvpaxos_clerk *ck, uint64_t deadline)
{
	for (;;) {
		kv_open_args a = { 0 };
		kv_open_reply r;
		memset(&r, 0, sizeof r);
		int err = one(ck, deadline, KV_OPEN, (xdrproc_t)xdr_kv_open_args, &a, &a.wait_ms,
		              (xdrproc_t)xdr_kv_open_reply, &r, sizeof r, NULL);
		uint64_t s = r.session;
		xdr_free((xdrproc_t)xdr_kv_open_reply, (char *)&r);
		if (err != DKV_OK) return err;
		if (s != 0) {
			ck->session = s;
			ck->seq = 0;
			return DKV_OK;
		}
	}
}

/*
 * call: one operation, through dkv_call_any (src/call.h: rotation, backoff,
 * deadline). For a Get, *value receives the malloc'ed result. Returns DKV_OK,
 * DKV_ERR_INVAL, DKV_ERR_TIMEOUT, DKV_ERR_EXPIRED.
 */
static int call(kvpaxos_clerk *ck, int kind, const char *key, const char *arg, char **value)
{
	uint64_t deadline = dkv_call_deadline(ck->timeout_ms);
	if (kind == KV_KIND_GET) {
		kv_get_args a = { .key = (char *)key };
		kv_get_reply r;
		memset(&r, 0, sizeof r);
		int err = one(ck, deadline, KV_GET, (xdrproc_t)xdr_kv_get_args, &a, &a.wait_ms,
		              (xdrproc_t)xdr_kv_get_reply, &r, sizeof r, NULL);
		if (err == DKV_OK) {
			*value = r.value; /* taken */
			r.value = NULL;
		}
		xdr_free((xdrproc_t)xdr_kv_get_reply, (char *)&r);
		return err == DKV_ERR_KILLED ? DKV_ERR_TIMEOUT : err;
	}
	if (ck->session == 0) {
		int e = open_session(ck, deadline);
		if (e != DKV_OK) return e == DKV_ERR_KILLED ? DKV_ERR_TIMEOUT : e;
	}
	uint64_t seq = ++ck->seq;
	unsigned sent_before = 0; /* RPCs of this op sent before the current call */
	for (;;) {
		kv_putappend_args a = { .session = ck->session, .seq = seq, .kind = kind,
		                        .key = (char *)key, .value = (char *)arg };
		kv_putappend_reply r;
		memset(&r, 0, sizeof r);
		unsigned sent = 0;
		int err = one(ck, deadline, KV_PUTAPPEND, (xdrproc_t)xdr_kv_putappend_args, &a,
		              &a.wait_ms, (xdrproc_t)xdr_kv_putappend_reply, &r, sizeof r, &sent);
		xdr_free((xdrproc_t)xdr_kv_putappend_reply, (char *)&r);
		if (err != DKV_ERR_EXPIRED)
			return err == DKV_ERR_KILLED ? DKV_ERR_TIMEOUT : err;
		if (sent_before + sent > 1)
			return DKV_ERR_EXPIRED; /* an earlier copy may have been applied */
		/* the first attempt: never applied anywhere; a new session, a fresh first attempt */
		ck->session = 0;
		int e = open_session(ck, deadline);
		if (e != DKV_OK) return e == DKV_ERR_KILLED ? DKV_ERR_TIMEOUT : e;
		seq = ++ck->seq;
		sent_before = 0;
	}
}

static bool valid(const char *key, const char *value)
{
	return key != NULL && value != NULL && strnlen(key, DKV_KEY_MAX + 1) <= DKV_KEY_MAX &&
	       strnlen(value, (size_t)DKV_VALUE_MAX + 1) <= DKV_VALUE_MAX;
}

int kvpaxos_clerk_get(kvpaxos_clerk *ck, const char *key, char **value)
{
	*value = NULL;
	if (!valid(key, ""))
		return DKV_ERR_INVAL;
	return call(ck, KV_KIND_GET, key, "", value);
}

int kvpaxos_clerk_put(kvpaxos_clerk *ck, const char *key, const char *value)
{
	if (!valid(key, value))
		return DKV_ERR_INVAL;
	return call(ck, KV_KIND_PUT, key, value, NULL);
}

int kvpaxos_clerk_append(kvpaxos_clerk *ck, const char *key, const char *value)
{
	if (!valid(key, value))
		return DKV_ERR_INVAL;
	return call(ck, KV_KIND_APPEND, key, value, NULL);
}
