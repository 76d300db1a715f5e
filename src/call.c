/*
 * src/call.c — dkv_call_any, the one call-any-replica loop (see call.h for the
 * rule: which server, which errors are final, backoff, deadline, hooks).
 *
 * Shape: rounds of at most n attempts. An attempt that ends with a FINAL
 * verdict returns; anything else moves to the next server. After a round in
 * which no attempt was final, sleep the jittered backoff (cut at the
 * deadline), call next_round, go again. The deadline is checked before every
 * attempt and every sleep, so a call never starts an RPC or a nap it cannot
 * finish in time (an attempt's RPC timeout is cut to the time left).
 */
#include <string.h>

#include "call.h"

void dkv_call_servers_init(dkv_call_servers *srv, const char *const *names, int n)
{
	srv->names = names;
	srv->n = n > 0 ? n : 0;
	srv->last = 0;
	dkv_rng_seed(&srv->rng, dkv_random_seed());
}

dkv_call_verdict dkv_call_default_verdict(int err)
{
	switch (err) {
	case DKV_OK:
	case DKV_ERR_NOKEY:
	case DKV_ERR_INVAL:
	case DKV_ERR_EXPIRED:
		return DKV_CALL_FINAL;
	default:
		return DKV_CALL_NEXT;
	}
}

uint64_t dkv_call_deadline(unsigned timeout_ms)
{
	return timeout_ms ? dkv_now_ms() + timeout_ms : 0;
}

unsigned dkv_call_left_ms(uint64_t deadline, unsigned cap)
{
	if (deadline == 0)
		return cap;
	uint64_t now = dkv_now_ms();
	if (now >= deadline)
		return 1;
	uint64_t left = deadline - now;
	return left < cap ? (unsigned)left : cap;
}

static bool passed(uint64_t deadline)
{
	return deadline != 0 && dkv_now_ms() >= deadline;
}

int dkv_call_any(dkv_rpc_pool *pool, dkv_call_servers *srv, uint64_t deadline,
                 const dkv_call_spec *spec, void *res, unsigned *sent)
{
	unsigned rpc_cap = spec->rpc_ms ? spec->rpc_ms : DKV_CALL_RPC_MS;
	unsigned bmin = spec->backoff_min_ms ? spec->backoff_min_ms : DKV_CALL_BACKOFF_MIN_MS;
	unsigned bmax = spec->backoff_max_ms ? spec->backoff_max_ms : DKV_CALL_BACKOFF_MAX_MS;
	if (bmax < bmin)
		bmax = bmin;
	unsigned backoff = bmin;
	unsigned nsent = 0;
	int rc = DKV_ERR_TIMEOUT;
	memset(res, 0, spec->res_size);
	for (;;) {
		int n = srv->n;
		if (n > 0 && (srv->last < 0 || srv->last >= n))
			srv->last = 0;
		for (int k = 0; k < n; k++) {
			if (passed(deadline)) {
				rc = DKV_ERR_TIMEOUT;
				goto out;
			}
			int i = (srv->last + k) % n;
			unsigned rpc_ms = dkv_call_left_ms(deadline, rpc_cap);
			if (spec->prepare != NULL)
				spec->prepare(spec->ctx, rpc_ms);
			memset(res, 0, spec->res_size);
			nsent++;
			int t = dkv_rpc_call(pool, srv->names[i], spec->prog, spec->vers, spec->proc,
			                     spec->xdr_args, spec->args, spec->xdr_res, res, rpc_ms);
			if (t == DKV_ERR_KILLED) {
				rc = DKV_ERR_KILLED;
				goto out;
			}
			if (t != DKV_OK) {
				DKV_DEBUG("call %s proc %u: %s", srv->names[i], (unsigned)spec->proc,
				          dkv_strerror(t));
				continue; /* NET, TIMEOUT, bad name: the next server */
			}
			int err = *(const int *)res; /* every reply starts with int err */
			dkv_call_verdict v = spec->classify != NULL
			                         ? spec->classify(spec->ctx, &err, res)
			                         : dkv_call_default_verdict(err);
			if (v == DKV_CALL_FINAL) {
				srv->last = i;
				if (sent != NULL)
					*sent = nsent;
				return err; /* res holds the reply */
			}
			DKV_DEBUG("call %s proc %u: answered %d, next server", srv->names[i],
			          (unsigned)spec->proc, err);
			xdr_free(spec->xdr_res, res);
			memset(res, 0, spec->res_size);
		}
		/* A round without a final answer: back off, then maybe a new list. */
		if (passed(deadline)) {
			rc = DKV_ERR_TIMEOUT;
			goto out;
		}
		unsigned nap = backoff / 2 + (unsigned)dkv_rng_below(&srv->rng, backoff - backoff / 2 + 1);
		if (nap > 0)
			dkv_sleep_ms(dkv_call_left_ms(deadline, nap));
		backoff = backoff * 2 < bmax ? backoff * 2 : bmax;
		if (passed(deadline)) {
			rc = DKV_ERR_TIMEOUT;
			goto out;
		}
		if (spec->next_round != NULL) {
			int e = spec->next_round(spec->ctx, srv);
			if (e != DKV_OK) {
				rc = e;
				goto out;
			}
		}
	}
out:
	memset(res, 0, spec->res_size);
	if (sent != NULL)
		*sent = nsent;
	return rc;
}
