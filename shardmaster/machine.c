/*
 * shardmaster/machine.c — the shard master as the state machine that
 * paxosrsm runs: apply / snapshot / restore on byte strings (sm_core.h).
 *
 * Pure: a function of the state and the bytes, so every replica that applies
 * the same log from the same snapshot holds the same state and hands out the
 * same results. Depends on state.c (the mutations) and wire.c (XDR); nothing
 * here knows about threads, RPCs or the engine.
 *
 * apply decodes an sm_op and runs the mutation. A refused op (bad gid, a Move
 * to an unknown group, an undecodable entry — equal bytes everywhere, so
 * refusing it everywhere keeps replicas equal) is DKV_OK with result err
 * DKV_ERR_INVAL; only running out of memory fails apply, with the state as it
 * was, and the engine stops the replica rather than let it diverge. The
 * result is a fixed-size encoding whose buffer is allocated before the state
 * is touched, so nothing can fail after a mutation.
 *
 * At-most-once is the engine's (paxosrsm sessions): apply never sees a
 * duplicate of a clerk's request.
 */
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "sm_core.h"
#include "sm_wire.h"

int sm_result_decode(const void *res, size_t len, int *err, uint64_t *id)
{
	sm_result r = { 0, 0 };
	XDR x;
	xdrmem_create(&x, (char *)res, (u_int)len, XDR_DECODE);
	bool ok = res != NULL && xdr_sm_result(&x, &r);
	xdr_destroy(&x);
	if (!ok)
		return DKV_ERR_INVAL;
	if (err != NULL)
		*err = r.err;
	if (id != NULL)
		*id = r.id;
	return DKV_OK;
}

int sm_machine_apply(sm_state *st, const void *buf, size_t len, void **res, size_t *res_len)
{
	*res = NULL;
	*res_len = 0;
	/* The result's buffer first: once the state has changed nothing may fail. */
	sm_result r = { DKV_OK, 0 };
	size_t rlen = xdr_sizeof((xdrproc_t)xdr_sm_result, &r);
	char *rb = dkv_malloc(rlen);
	if (rb == NULL)
		return DKV_ERR_NOMEM;

	sm_op op;
	memset(&op, 0, sizeof op);
	int rc = sm_op_decode(buf, len, &op);
	if (rc == DKV_ERR_INVAL) {
		r.err = DKV_ERR_INVAL;
	} else {
		switch (op.kind) {
		case SM_OP_JOIN:
			r.err = sm_state_join(st, op.sm_op_u.join.gid,
			                      (const char *const *)op.sm_op_u.join.servers.servers_val,
			                      (int)op.sm_op_u.join.servers.servers_len);
			break;
		case SM_OP_LEAVE:
			r.err = sm_state_leave(st, op.sm_op_u.leave_gid);
			break;
		case SM_OP_MOVE:
			r.err = sm_state_move(st, op.sm_op_u.move.shard, op.sm_op_u.move.gid);
			break;
		case SM_OP_NEW_ID:
			r.id = ++st->last_id;
			break;
		case SM_OP_QUERY:
		default:
			break; /* a Query only marks a point in the log */
		}
		xdr_free((xdrproc_t)xdr_sm_op, (char *)&op);
	}
	if (r.err == DKV_ERR_NOMEM) {
		free(rb);
		return DKV_ERR_NOMEM; /* the mutation changed nothing */
	}
	XDR x;
	xdrmem_create(&x, rb, (u_int)rlen, XDR_ENCODE);
	(void)xdr_sm_result(&x, &r); /* fixed size: cannot fail */
	xdr_destroy(&x);
	*res = rb;
	*res_len = rlen;
	return DKV_OK;
}

int sm_machine_snapshot(const sm_state *st, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	sm_snapshot snap;
	memset(&snap, 0, sizeof snap);
	snap.last_id = st->last_id;
	if ((unsigned long)st->nconfigs > SM_WIRE_MAX_CONFIGS) {
		DKV_ERROR("shardmaster: no snapshot: %d configurations, more than %u (sm_prot.x)",
		          st->nconfigs, (unsigned)SM_WIRE_MAX_CONFIGS);
		return DKV_ERR_NOMEM;
	}
	snap.configs.configs_val = dkv_calloc((size_t)st->nconfigs, sizeof(sm_wire_config));
	if (snap.configs.configs_val == NULL)
		return DKV_ERR_NOMEM;
	int rc = DKV_OK;
	for (int i = 0; i < st->nconfigs && rc == DKV_OK; i++) {
		snap.configs.configs_len = (u_int)i + 1; /* what xdr_free must see */
		rc = sm_wire_from_config(&snap.configs.configs_val[i], &st->configs[i]);
	}
	if (rc == DKV_OK)
		rc = dkv_xdr_encode((xdrproc_t)xdr_sm_snapshot, &snap, buf, len);
	xdr_free((xdrproc_t)xdr_sm_snapshot, (char *)&snap);
	return rc == DKV_ERR_INVAL ? DKV_ERR_NOMEM : rc;
}

int sm_machine_restore(sm_state *st, const void *buf, size_t len)
{
	sm_snapshot snap;
	memset(&snap, 0, sizeof snap);
	XDR x;
	xdrmem_create(&x, (char *)buf, (u_int)len, XDR_DECODE);
	bool ok = buf != NULL && xdr_sm_snapshot(&x, &snap);
	bool whole = ok && xdr_getpos(&x) == len;
	xdr_destroy(&x);
	if (!whole) {
		/* A decode that failed half-way may have allocated: xdr_free is safe. */
		xdr_free((xdrproc_t)xdr_sm_snapshot, (char *)&snap);
		return DKV_ERR_INVAL;
	}
	int rc = DKV_OK;
	u_int n = snap.configs.configs_len;
	if (n == 0 || snap.configs.configs_val[0].groups.groups_len != 0)
		rc = DKV_ERR_INVAL;
	for (u_int i = 0; i < n && rc == DKV_OK; i++)
		if (snap.configs.configs_val[i].num != (int)i)
			rc = DKV_ERR_INVAL;
	sm_state ns;
	memset(&ns, 0, sizeof ns);
	if (rc == DKV_OK) {
		ns.cap = n < 16 ? 16 : (int)n;
		ns.configs = dkv_calloc((size_t)ns.cap, sizeof *ns.configs);
		if (ns.configs == NULL)
			rc = DKV_ERR_NOMEM;
	}
	for (u_int i = 0; i < n && rc == DKV_OK; i++) {
		shardmaster_config *c = sm_config_from_wire(&snap.configs.configs_val[i]);
		if (c == NULL) {
			rc = DKV_ERR_NOMEM;
			break;
		}
		ns.configs[i] = *c;
		free(c);
		ns.nconfigs = (int)i + 1;
	}
	ns.last_id = snap.last_id;
	xdr_free((xdrproc_t)xdr_sm_snapshot, (char *)&snap);
	if (rc != DKV_OK) {
		sm_state_destroy(&ns);
		return rc;
	}
	sm_state_destroy(st);
	*st = ns;
	return DKV_OK;
}
