/*
 * src/call.h — the one call-any-replica helper of dkv (internal): every clerk
 * (kvpaxos, pbservice, viewservice, shardmaster, shardkv) and shardkv's shard
 * fetch send their requests through dkv_call_any.
 *
 * The rule, in one place:
 *   - A call goes to one server at a time, starting at the one that gave the
 *     last final answer (srv->last, kept across calls), and moves on to the
 *     next one (in list order, wrapping) after every attempt that is not final.
 *   - An attempt is one dkv_rpc_call with a timeout of min(spec->rpc_ms, time
 *     left before the deadline). Transport failures (DKV_ERR_NET,
 *     DKV_ERR_TIMEOUT, DKV_ERR_INVAL for a bad name) mean "next server";
 *     DKV_ERR_KILLED from the pool (it was shut down: the owner is stopping)
 *     ends the call at once.
 *   - A reply is judged by its `int err` (the first field of every dkv reply
 *     struct) through spec->classify, or by dkv_call_default_verdict when
 *     classify is NULL: final are DKV_OK, DKV_ERR_NOKEY, DKV_ERR_INVAL,
 *     DKV_ERR_EXPIRED; everything else (DKV_ERR_TIMEOUT: the replica could not
 *     get the op agreed; DKV_ERR_KILLED, DKV_ERR_WRONG_SERVER,
 *     DKV_ERR_WRONG_GROUP, DKV_ERR_NOMEM, a service's "not ready" code …)
 *     means "next server".
 *   - When every server of the list failed once (a round), the call sleeps a
 *     randomised backoff — uniform in [b/2, b], b doubling from
 *     spec->backoff_min_ms to spec->backoff_max_ms (defaults 2 ms and 100 ms)
 *     — then calls spec->next_round, if set, which may replace the list (a
 *     clerk re-reads a configuration or a view) or end the call with an error,
 *     and starts the next round.
 *   - deadline 0 retries forever (the lab semantics); otherwise, at the
 *     deadline the call returns DKV_ERR_TIMEOUT (never sleeping past it).
 *     A write that timed out may or may not have been applied.
 *
 * Hooks (all optional, all called on the calling thread, with spec->ctx):
 *   prepare(ctx, rpc_ms)        before each attempt, with that attempt's RPC
 *                               timeout: a clerk sets how long the server may
 *                               wait for agreement (wait_ms) in its args.
 *   classify(ctx, &err, res)    judge a decoded reply; may rewrite err (the
 *                               value the call returns when FINAL).
 *   next_round(ctx, srv)        between rounds, after the backoff; DKV_OK to go
 *                               on (srv->names / n / last may be changed; n 0
 *                               is allowed: the round is then empty), or an
 *                               error code that the call returns.
 *
 * The result: on return `res` (res_size bytes) holds the decoded final reply,
 * or is zeroed; either way the caller releases it with xdr_free(xdr_res, res).
 * *sent (if not NULL) counts the RPCs this call issued — a clerk applying the
 * EXPIRED rule needs to know whether the request ever left before this reply.
 *
 * Not thread-safe per dkv_call_servers (one thread uses a clerk at a time);
 * the pool may be shared by threads (it locks itself). No lock is held here.
 */
#ifndef DKV_CALL_H
#define DKV_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "dkv_internal.h"

/* The servers one call may try, and which of them answered last. */
typedef struct dkv_call_servers {
	const char *const *names; /* n names, borrowed */
	int n;
	int last;                 /* index of the server that answered last */
	dkv_rng rng;              /* backoff jitter */
} dkv_call_servers;

/* dkv_call_servers_init: names (borrowed, n >= 0), last = 0, a fresh jitter seed. */
void dkv_call_servers_init(dkv_call_servers *srv, const char *const *names, int n);

typedef enum {
	DKV_CALL_FINAL = 1, /* the call returns this reply's (possibly rewritten) err */
	DKV_CALL_NEXT       /* this server cannot serve it now: try the next one */
} dkv_call_verdict;

/* The default judgement of a reply's err (see the top of this file). */
dkv_call_verdict dkv_call_default_verdict(int err);

typedef struct dkv_call_spec {
	rpcprog_t prog;
	rpcvers_t vers;
	rpcproc_t proc;
	xdrproc_t xdr_args;
	const void *args;       /* borrowed; prepare may edit it through ctx */
	xdrproc_t xdr_res;
	size_t res_size;        /* of the reply struct, whose first field is int err */
	unsigned rpc_ms;        /* cap of one attempt; 0: DKV_CALL_RPC_MS */
	unsigned backoff_min_ms;/* 0: DKV_CALL_BACKOFF_MIN_MS */
	unsigned backoff_max_ms;/* 0: DKV_CALL_BACKOFF_MAX_MS */
	void *ctx;
	void (*prepare)(void *ctx, unsigned rpc_ms);
	dkv_call_verdict (*classify)(void *ctx, int *err, void *res);
	int (*next_round)(void *ctx, dkv_call_servers *srv);
} dkv_call_spec;

#define DKV_CALL_RPC_MS 3000u
#define DKV_CALL_BACKOFF_MIN_MS 2u
#define DKV_CALL_BACKOFF_MAX_MS 100u

/* dkv_call_deadline: the absolute deadline (dkv_now_ms) of a call that may take
 * timeout_ms; 0 (forever) for timeout_ms 0. */
uint64_t dkv_call_deadline(unsigned timeout_ms);

/* dkv_call_left_ms: time left before `deadline` (at least 1 ms), capped at cap;
 * cap when deadline is 0. */
unsigned dkv_call_left_ms(uint64_t deadline, unsigned cap);

/*
 * dkv_call_any: run the call (see the top of this file). Returns the final
 * reply's err (as classify left it), DKV_ERR_TIMEOUT (deadline passed),
 * DKV_ERR_KILLED (the pool was shut down), or next_round's error.
 */
int dkv_call_any(dkv_rpc_pool *pool, dkv_call_servers *srv, uint64_t deadline,
                 const dkv_call_spec *spec, void *res, unsigned *sent);

#endif /* DKV_CALL_H */
