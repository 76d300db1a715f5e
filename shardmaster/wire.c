/*
 * shardmaster/wire.c — the shard master's translations to and from XDR.
 *
 * Two jobs, shared by the server and the clerk:
 *   - configurations: the public shardmaster_config (arrays the caller frees
 *     with shardmaster_config_free) against sm_wire_config (rpcgen's form, which
 *     the RPC layer frees with xdr_free). Both directions deep-copy, so neither
 *     side ever points into the other's memory.
 *   - log entries: an sm_op is XDR-encoded into the byte string that paxosrsm
 *     agrees on, and decoded again in the apply callback. XDR gives a canonical
 *     encoding, so equal ops give equal bytes on every replica.
 * Every allocation failure is reported as DKV_ERR_NOMEM with nothing leaked and
 * every output left in a state its release function accepts.
 */
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"
#include "sm_core.h"
#include "sm_wire.h"

_Static_assert(SM_MAX_GROUPS == SM_WIRE_MAX_GROUPS, "sm_prot.x and sm_core.h disagree");
_Static_assert(SM_MAX_SERVERS == SM_WIRE_MAX_SERVERS, "sm_prot.x and sm_core.h disagree");
_Static_assert(SHARDMASTER_NSHARDS == SM_WIRE_NSHARDS, "sm_prot.x and shardmaster.h disagree");
_Static_assert(DKV_NAME_MAX - 1 == SM_WIRE_NAME_MAX, "sm_prot.x and common.h disagree");

int sm_wire_from_config(sm_wire_config *w, const shardmaster_config *c)
{
	w->num = c->num;
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
		w->shards[i] = c->shards[i];
	w->groups.groups_len = 0;
	w->groups.groups_val = NULL;
	if (c->ngroups == 0)
		return DKV_OK;
	w->groups.groups_val = dkv_calloc((size_t)c->ngroups, sizeof *w->groups.groups_val);
	if (w->groups.groups_val == NULL)
		return DKV_ERR_NOMEM;
	/* groups_len grows with what has been filled, so xdr_free sees only that. */
	for (int i = 0; i < c->ngroups; i++) {
		const shardmaster_group *g = &c->groups[i];
		sm_wire_group *wg = &w->groups.groups_val[i];
		wg->gid = g->gid;
		w->groups.groups_len = (u_int)i + 1;
		wg->servers.servers_val = dkv_calloc((size_t)g->nservers, sizeof(char *));
		if (wg->servers.servers_val == NULL)
			return DKV_ERR_NOMEM;
		for (int j = 0; j < g->nservers; j++) {
			wg->servers.servers_val[j] = dkv_strdup(g->servers[j]);
			if (wg->servers.servers_val[j] == NULL)
				return DKV_ERR_NOMEM;
			wg->servers.servers_len = (u_int)j + 1;
		}
	}
	return DKV_OK;
}

shardmaster_config *sm_config_from_wire(const sm_wire_config *w)
{
	shardmaster_config *c = dkv_calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->num = w->num;
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
		c->shards[i] = w->shards[i];
	if (w->groups.groups_len == 0)
		return c;
	c->groups = dkv_calloc(w->groups.groups_len, sizeof *c->groups);
	if (c->groups == NULL)
		goto nomem;
	for (u_int i = 0; i < w->groups.groups_len; i++) {
		const sm_wire_group *wg = &w->groups.groups_val[i];
		shardmaster_group *g = &c->groups[i];
		g->gid = wg->gid;
		c->ngroups = (int)i + 1;
		if (wg->servers.servers_len == 0)
			continue;
		g->servers = dkv_calloc(wg->servers.servers_len, sizeof *g->servers);
		if (g->servers == NULL)
			goto nomem;
		for (u_int j = 0; j < wg->servers.servers_len; j++) {
			g->servers[j] = dkv_strdup(wg->servers.servers_val[j]);
			if (g->servers[j] == NULL)
				goto nomem;
			g->nservers = (int)j + 1;
		}
	}
	return c;
nomem:
	shardmaster_config_free(c);
	return NULL;
}

int sm_op_encode(const sm_op *op, void **buf, size_t *len)
{
	return dkv_xdr_encode((xdrproc_t)xdr_sm_op, op, buf, len);
}

int sm_op_decode(const void *buf, size_t len, sm_op *op)
{
	XDR x;
	xdrmem_create(&x, (char *)buf, (u_int)len, XDR_DECODE);
	bool ok = xdr_sm_op(&x, op);
	xdr_destroy(&x);
	if (!ok) {
		xdr_free((xdrproc_t)xdr_sm_op, (char *)op);
		memset(op, 0, sizeof *op);
		return DKV_ERR_INVAL;
	}
	return DKV_OK;
}
