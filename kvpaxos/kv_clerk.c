/*
 * kvpaxos/kv_clerk.c — the kvpaxos clerk.
 *
 * Sessions: before its first Put/Append a clerk opens a session (KV_OPEN: an
 * op in the replicas' log, which assigns the id), then numbers its writes 1,
 * 2, … in it; a retry repeats (session, seq), which is what lets the replicas
 * apply a write at most once. A Get has no session. Each call goes to the
 * replica that answered last and, on a failed RPC or a replica that could not
 * get the op agreed within wait_ms (it is in a minority, or killed), to the
 * next one in turn; after each full round of failures it backs off (1 ms
 * doubling to 100 ms). The lab clerk retries forever; with a deadline
 * (kvpaxos_clerk_set_timeout) the server wait and the RPC timeout are cut to
 * what is left, and the call returns DKV_ERR_TIMEOUT.
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
	int last;           /* replica that answered last */
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

/* The server wait and the RPC timeout for an attempt at `now`; false when the
 * deadline has passed. */
static bool budget(const kvpaxos_clerk *ck, uint64_t deadline, unsigned *wait, unsigned *rpc)
{
	*wait = KV_CLERK_WAIT_MS;
	*rpc = KV_CLERK_WAIT_MS + KV_CLERK_RPC_SLACK_MS;
	if (deadline == 0) return true;
	uint64_t now = dkv_now_ms();
	(void)ck;
	if (now >= deadline) return false;
	uint64_t left = deadline - now;
	if (left < *wait) *wait = (unsigned)left;
	if (left + 50 < *rpc) *rpc = (unsigned)left + 50;
	return true;
}

static void next_replica(kvpaxos_clerk *ck, int *failures, unsigned *backoff)
{
	ck->last = (ck->last + 1) % ck->n;
	if (++*failures % ck->n == 0) {
		dkv_sleep_ms(*backoff);
		if (*backoff < KV_CLERK_BACKOFF_MAX_MS) *backoff *= 2;
	}
}

/* Open a session (any replica). DKV_OK or DKV_ERR_TIMEOUT. */
static int open_session(kvpaxos_clerk *ck, uint64_t deadline)
{
	unsigned backoff = 1;
	int failures = 0;
	for (;;) {
		unsigned wait, rpc_timeout;
		if (!budget(ck, deadline, &wait, &rpc_timeout)) return DKV_ERR_TIMEOUT;
		const char *name = ck->servers[ck->last];
		kv_open_args a = { .wait_ms = wait };
		kv_open_reply r;
		memset(&r, 0, sizeof r);
		int rc = dkv_rpc_call(ck->pool, name, KVPAXOS_PROG, KVPAXOS_VERS, KV_OPEN,
		                      (xdrproc_t)xdr_kv_open_args, &a, (xdrproc_t)xdr_kv_open_reply, &r,
		                      rpc_timeout);
		if (rc == DKV_OK && r.err == DKV_OK && r.session != 0) {
			ck->session = r.session;
			ck->seq = 0;
			return DKV_OK;
		}
		next_replica(ck, &failures, &backoff);
	}
}

/*
 * call: one operation, retried until a replica answers it. For a Get, *value
 * receives the malloc'ed result. Returns DKV_OK, DKV_ERR_INVAL,
 * DKV_ERR_TIMEOUT, DKV_ERR_EXPIRED.
 */
static int call(kvpaxos_clerk *ck, int kind, const char *key, const char *arg, char **value)
{
	uint64_t deadline = ck->timeout_ms != 0 ? dkv_now_ms() + ck->timeout_ms : 0;
	unsigned backoff = 1;
	int failures = 0;
	bool sent = false; /* an attempt of this op may have reached a replica */
	uint64_t seq = 0;
	if (kind != KV_KIND_GET) {
		if (ck->session == 0 && open_session(ck, deadline) != DKV_OK) return DKV_ERR_TIMEOUT;
		seq = ++ck->seq;
	}
	for (;;) {
		unsigned wait, rpc_timeout;
		if (!budget(ck, deadline, &wait, &rpc_timeout)) return DKV_ERR_TIMEOUT;
		const char *name = ck->servers[ck->last];
		int rc, err = DKV_ERR_NET;
		if (kind == KV_KIND_GET) {
			kv_get_args a = { .wait_ms = wait, .key = (char *)key };
			kv_get_reply r;
			memset(&r, 0, sizeof r);
			rc = dkv_rpc_call(ck->pool, name, KVPAXOS_PROG, KVPAXOS_VERS, KV_GET,
			                  (xdrproc_t)xdr_kv_get_args, &a, (xdrproc_t)xdr_kv_get_reply, &r,
			                  rpc_timeout);
			if (rc == DKV_OK) {
				err = r.err;
				if (err == DKV_OK) {
					*value = r.value; /* taken */
					r.value = NULL;
				}
				xdr_free((xdrproc_t)xdr_kv_get_reply, (char *)&r);
			}
		} else {
			kv_putappend_args a = { .session = ck->session, .seq = seq, .wait_ms = wait,
			                        .kind = kind, .key = (char *)key, .value = (char *)arg };
			kv_putappend_reply r;
			memset(&r, 0, sizeof r);
			rc = dkv_rpc_call(ck->pool, name, KVPAXOS_PROG, KVPAXOS_VERS, KV_PUTAPPEND,
			                  (xdrproc_t)xdr_kv_putappend_args, &a,
			                  (xdrproc_t)xdr_kv_putappend_reply, &r, rpc_timeout);
			if (rc == DKV_OK) {
				err = r.err;
				xdr_free((xdrproc_t)xdr_kv_putappend_reply, (char *)&r);
			}
			if (rc != DKV_ERR_INVAL) {
				if (err == DKV_ERR_EXPIRED) {
					if (sent) return DKV_ERR_EXPIRED; /* an earlier copy may have been applied */
					/* never applied anywhere: a new session, a fresh first attempt */
					ck->session = 0;
					if (open_session(ck, deadline) != DKV_OK) return DKV_ERR_TIMEOUT;
					seq = ++ck->seq;
					continue;
				}
				sent = true;
			}
		}
		if (err == DKV_OK || err == DKV_ERR_INVAL)
			return err;
		DKV_DEBUG("kvpaxos clerk: %s: %s", name, dkv_strerror(err));
		next_replica(ck, &failures, &backoff);
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
