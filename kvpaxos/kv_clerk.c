/*
 * kvpaxos/kv_clerk.c — the kvpaxos clerk.
 *
 * A clerk has a random 64-bit id and numbers its calls; a retry repeats the
 * (cid, seq) pair, which is what lets replicas apply a Put or Append at most
 * once. Each call goes to the replica that answered last and, on a failed RPC
 * or a replica that could not get the op agreed within wait_ms (it is in a
 * minority, or killed), to the next one in turn; after each full round of
 * failures it backs off (1 ms doubling to 100 ms). The lab clerk retries
 * forever; with a deadline (kvpaxos_clerk_set_timeout) the server wait and the
 * RPC timeout are cut to what is left, and the call returns DKV_ERR_TIMEOUT.
 * Every request carries age_ms, the time since the op was first sent, so that
 * replicas can refuse copies too old for their at-most-once records
 * (KV_ERR_EXPIRED: a Get just starts afresh; a Put/Append returns
 * DKV_ERR_TIMEOUT since it may have been applied).
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
	uint64_t cid;
	uint64_t seq;       /* last seq used */
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
	ck->cid = dkv_random_seed();
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

/*
 * call: one operation, retried until a replica answers it. For a Get, *value
 * receives the malloc'ed result. Returns DKV_OK, DKV_ERR_INVAL, DKV_ERR_TIMEOUT.
 */
static int call(kvpaxos_clerk *ck, int kind, const char *key, const char *arg, char **value)
{
	uint64_t start = dkv_now_ms();
	uint64_t deadline = ck->timeout_ms != 0 ? start + ck->timeout_ms : 0;
	uint64_t born = start;
	uint64_t seq = ++ck->seq;
	unsigned backoff = 1;
	int failures = 0;
	for (;;) {
		uint64_t now = dkv_now_ms();
		unsigned wait = KV_CLERK_WAIT_MS;
		unsigned rpc_timeout = KV_CLERK_WAIT_MS + KV_CLERK_RPC_SLACK_MS;
		if (deadline != 0) {
			if (now >= deadline)
				return DKV_ERR_TIMEOUT;
			uint64_t left = deadline - now;
			if (left < wait)
				wait = (unsigned)left;
			if (left + 50 < rpc_timeout)
				rpc_timeout = (unsigned)left + 50;
		}
		unsigned age = (unsigned)(now - born);
		const char *name = ck->servers[ck->last];
		int rc, err = DKV_ERR_NET;
		if (kind == KV_KIND_GET) {
			kv_get_args a = { .cid = ck->cid, .seq = seq, .age_ms = age, .wait_ms = wait,
			                  .key = (char *)key };
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
			kv_putappend_args a = { .cid = ck->cid, .seq = seq, .age_ms = age,
			                        .wait_ms = wait, .kind = kind, .key = (char *)key,
			                        .value = (char *)arg };
			kv_putappend_reply r;
			memset(&r, 0, sizeof r);
			rc = dkv_rpc_call(ck->pool, name, KVPAXOS_PROG, KVPAXOS_VERS, KV_PUTAPPEND,
			                  (xdrproc_t)xdr_kv_putappend_args, &a,
			                  (xdrproc_t)xdr_kv_putappend_reply, &r, rpc_timeout);
			if (rc == DKV_OK) {
				err = r.err;
				xdr_free((xdrproc_t)xdr_kv_putappend_reply, (char *)&r);
			}
		}
		if (err == DKV_OK || err == DKV_ERR_INVAL)
			return err;
		if (err == KV_ERR_EXPIRED) {
			if (kind != KV_KIND_GET)
				return DKV_ERR_TIMEOUT; /* may have been applied: cannot tell */
			seq = ++ck->seq;           /* a Get can simply start over */
			born = dkv_now_ms();
			continue;
		}
		DKV_DEBUG("kvpaxos clerk: %s: %s", name, dkv_strerror(err));
		ck->last = (ck->last + 1) % ck->n;
		if (++failures % ck->n == 0) {
			dkv_sleep_ms(backoff);
			if (backoff < KV_CLERK_BACKOFF_MAX_MS)
				backoff *= 2;
		}
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
