/*
 * shardkv/machine.c — the replicated state machine of one shardkv replica:
 * apply one agreed op, snapshot, restore. Pure (no lock, thread, clock, RPC or
 * randomness): replicas that apply the same log from the same snapshot hold
 * the same state and hand out the same results. Depends on store.c only; the
 * engine (paxosrsm) calls it through replica.c, under the replica's lock.
 *
 * State: the configuration applied last and the one before, per shard
 * NONE / SERVING (data here) / PULLING (ours, data still at the old owner),
 * the shards we left behind ("outs", keyed by (config, shard), kept until the
 * new owner has installed them), and the installed shards whose old owner
 * must still be told ("gcs").
 *
 * Ops (skv_prot.x):
 *   GET           the key's value, if the shard is SERVING here at this point
 *                 of the log; otherwise WRONG_GROUP. No session.
 *   PUT, APPEND   the same ownership rule; then the shard's session table:
 *                 NEW → apply and record (session, seq, err); DUP → the
 *                 recorded err, nothing applied; STALE or an expired session
 *                 → EXPIRED, nothing applied (see dkv/shardkv.h for the
 *                 clerk's rule). A value over DKV_VALUE_MAX is INVAL (recorded
 *                 too: a retry gets the same answer).
 *   RECONFIG n+1  only right after n and with no shard PULLING: lost shards
 *                 move (with their session tables) to outs, gained shards
 *                 start empty (from gid 0) or PULLING.
 *   INSTALL       a PULLING shard's data (the shard encoding of store.c)
 *                 from its previous owner: SERVING, and a pending GC.
 *   GC            (old owner) drop the out copy: OK once it is gone and we are
 *                 at or past that configuration, NOT_READY before.
 *   GC_ACK        (new owner) the old owner dropped it: forget the pending GC.
 *   NOP           nothing.
 * Duplicates of migration ops (several replicas propose the same step) find
 * nothing to do. Every step allocates what it needs before it changes
 * anything where it can; an allocation failure returns DKV_ERR_NOMEM and the
 * engine stops the replica (it never goes on with a state its peers lack).
 */
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"

enum { NS = SHARDMASTER_NSHARDS };

int shardkv_key2shard(const char *key)
{
	if (key == NULL || key[0] == '\0')
		return 0;
	return (int)((unsigned char)key[0] % SHARDMASTER_NSHARDS);
}

void skv_config_destroy(skv_config *c)
{
	xdr_free((xdrproc_t)xdr_skv_config, (char *)c);
	memset(c, 0, sizeof *c);
}

const skv_group *skv_config_group(const skv_config *c, int64_t gid)
{
	for (u_int i = 0; i < c->groups.groups_len; i++)
		if (c->groups.groups_val[i].gid == gid)
			return &c->groups.groups_val[i];
	return NULL;
}

void skv_state_init(skv_state *st, int64_t gid)
{
	memset(st, 0, sizeof *st);
	st->gid = gid;
}

static void free_names(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void free_gc(skv_gcpend *g)
{
	free_names(g->servers, g->nservers);
	free(g);
}

void skv_state_destroy(skv_state *st)
{
	for (int i = 0; i < NS; i++)
		skv_shard_free(st->shards[i]);
	while (st->outs != NULL) {
		skv_out *o = st->outs;
		st->outs = o->next;
		skv_shard_free(o->data);
		free(o);
	}
	while (st->gcs != NULL) {
		skv_gcpend *g = st->gcs;
		st->gcs = g->next;
		free_gc(g);
	}
	skv_config_destroy(&st->cfg);
	skv_config_destroy(&st->prev);
	int64_t gid = st->gid;
	memset(st, 0, sizeof *st);
	st->gid = gid;
}

skv_out *skv_out_find(const skv_state *st, int cfgnum, int shard)
{
	for (skv_out *o = st->outs; o != NULL; o = o->next)
		if (o->cfgnum == cfgnum && o->shard == shard)
			return o;
	return NULL;
}

size_t skv_sessions_held(const skv_state *st)
{
	size_t n = 0;
	for (int i = 0; i < NS; i++)
		if (st->shards[i] != NULL)
			n += dkv_sessions_count(st->shards[i]->sess);
	for (const skv_out *o = st->outs; o != NULL; o = o->next)
		n += dkv_sessions_count(o->data->sess);
	return n;
}

/* copy_names: a malloc'ed copy of a group's servers; DKV_OK / DKV_ERR_NOMEM. */
static int copy_names(const skv_group *g, char ***out, int *n)
{
	*out = NULL;
	*n = 0;
	if (g == NULL || g->servers.servers_len == 0)
		return DKV_OK;
	char **v = dkv_calloc(g->servers.servers_len, sizeof *v);
	if (v == NULL)
		return DKV_ERR_NOMEM;
	for (u_int i = 0; i < g->servers.servers_len; i++) {
		v[i] = dkv_strdup(g->servers.servers_val[i] ? g->servers.servers_val[i] : "");
		if (v[i] == NULL) {
			free_names(v, (int)i);
			return DKV_ERR_NOMEM;
		}
	}
	*out = v;
	*n = (int)g->servers.servers_len;
	return DKV_OK;
}

/* ---------------------------------------------------------------- client ops */

/* A recorded result: the err as 4 bytes, little-endian. */
static void err_bytes(int err, unsigned char b[4])
{
	uint32_t u = (uint32_t)err;
	for (int i = 0; i < 4; i++)
		b[i] = (unsigned char)(u >> (8 * i));
}

static int bytes_err(const void *p, size_t len)
{
	if (p == NULL || len != 4)
		return DKV_OK;
	const unsigned char *b = p;
	return (int)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	             (uint32_t)b[3] << 24);
}

static skv_shard *serving(const skv_state *st, const char *key)
{
	int shard = shardkv_key2shard(key);
	return st->state[shard] == SKV_SHARD_SERVING ? st->shards[shard] : NULL;
}

static int apply_get(const skv_state *st, const skv_get_op *op, int *err, char **value)
{
	const char *key = op->key ? op->key : "";
	skv_shard *sh = serving(st, key);
	if (sh == NULL) {
		*err = DKV_ERR_WRONG_GROUP;
		return DKV_OK;
	}
	size_t vlen = 0;
	const char *v = skv_shard_get(sh, key, &vlen);
	*value = v != NULL ? dkv_memdup(v, vlen + 1) : dkv_strdup("");
	if (*value == NULL)
		return DKV_ERR_NOMEM;
	*err = DKV_OK;
	return DKV_OK;
}

static int apply_put(skv_state *st, const skv_put_op *op, bool append, int *err)
{
	const char *key = op->key ? op->key : "";
	skv_shard *sh = serving(st, key);
	if (sh == NULL) {
		*err = DKV_ERR_WRONG_GROUP;
		return DKV_OK;
	}
	if (op->session == 0 || op->seq == 0) {
		*err = DKV_ERR_INVAL; /* the handler refuses these; never in a log */
		return DKV_OK;
	}
	const void *prev = NULL;
	size_t prev_len = 0;
	switch (dkv_sessions_check(sh->sess, op->session, op->seq, &prev, &prev_len)) {
	case DKV_SESS_DUP:
		*err = bytes_err(prev, prev_len);
		return DKV_OK;
	case DKV_SESS_STALE:
	case DKV_SESS_EXPIRED:
		*err = DKV_ERR_EXPIRED;
		return DKV_OK;
	case DKV_SESS_NEW:
	default:
		break;
	}
	const char *v = op->value ? op->value : "";
	size_t vlen = strlen(v);
	size_t have = 0;
	if (append)
		(void)skv_shard_get(sh, key, &have);
	int rc = DKV_OK;
	if ((append ? have : 0) + vlen > DKV_VALUE_MAX)
		*err = DKV_ERR_INVAL;
	else if ((rc = skv_shard_put(sh, key, v, vlen, append)) != DKV_OK)
		return rc;
	else
		*err = DKV_OK;
	unsigned char b[4];
	err_bytes(*err, b);
	return dkv_sessions_record(sh->sess, op->session, op->seq, b, sizeof b);
}

/* ---------------------------------------------------------------- migration ops */

static int apply_reconfig(skv_state *st, skv_config *cfg, int *err)
{
	*err = DKV_OK;
	if (cfg->num != st->cfg.num + 1)
		return DKV_OK; /* a duplicate, or (never) a gap: configs go one at a time */
	for (int i = 0; i < NS; i++)
		if (st->state[i] == SKV_SHARD_PULLING)
			return DKV_OK; /* not before every shard of this config is here */
	/* Allocate first: an out record per lost shard, a shard per new one. */
	skv_out *outs[NS] = { 0 };
	skv_shard *fresh[NS] = { 0 };
	int rc = DKV_OK;
	for (int i = 0; i < NS && rc == DKV_OK; i++) {
		bool had = st->cfg.shards[i] == st->gid, has = cfg->shards[i] == st->gid;
		if (had && !has && st->shards[i] != NULL) {
			if ((outs[i] = dkv_calloc(1, sizeof *outs[i])) == NULL)
				rc = DKV_ERR_NOMEM;
		} else if (!had && has && st->cfg.shards[i] == 0) {
			if ((fresh[i] = skv_shard_new()) == NULL)
				rc = DKV_ERR_NOMEM;
		}
	}
	if (rc != DKV_OK) {
		for (int i = 0; i < NS; i++) {
			free(outs[i]);
			skv_shard_free(fresh[i]);
		}
		return rc;
	}
	for (int i = 0; i < NS; i++) {
		bool had = st->cfg.shards[i] == st->gid, has = cfg->shards[i] == st->gid;
		if (had && !has) {
			if (outs[i] != NULL) {
				outs[i]->cfgnum = cfg->num;
				outs[i]->shard = i;
				outs[i]->data = st->shards[i];
				outs[i]->next = st->outs;
				st->outs = outs[i];
			}
			st->shards[i] = NULL;
			st->state[i] = SKV_SHARD_NONE;
		} else if (!had && has) {
			if (fresh[i] != NULL) {
				st->shards[i] = fresh[i];
				st->state[i] = SKV_SHARD_SERVING;
			} else {
				st->state[i] = SKV_SHARD_PULLING;
			}
		}
	}
	skv_config_destroy(&st->prev);
	st->prev = st->cfg;
	st->cfg = *cfg;
	memset(cfg, 0, sizeof *cfg); /* stolen from the op */
	st->changes++;
	return DKV_OK;
}

static int apply_install(skv_state *st, const skv_install_op *in, int *err)
{
	*err = DKV_OK;
	int i = in->shard;
	if (i < 0 || i >= NS || in->cfgnum != st->cfg.num || st->state[i] != SKV_SHARD_PULLING ||
	    st->prev.shards[i] != in->src_gid)
		return DKV_OK; /* a duplicate */
	skv_shard *sh = NULL;
	int rc = skv_shard_decode(in->data.data_val, in->data.data_len, &sh);
	if (rc == DKV_ERR_INVAL) {
		*err = DKV_ERR_INVAL; /* malformed: the same on every replica; stays PULLING */
		return DKV_OK;
	}
	if (rc != DKV_OK)
		return rc;
	skv_gcpend *g = dkv_calloc(1, sizeof *g);
	if (g == NULL ||
	    copy_names(skv_config_group(&st->prev, in->src_gid), &g->servers, &g->nservers) != DKV_OK) {
		free(g);
		skv_shard_free(sh);
		return DKV_ERR_NOMEM;
	}
	g->cfgnum = in->cfgnum;
	g->shard = i;
	g->src_gid = in->src_gid;
	g->next = st->gcs;
	st->gcs = g;
	st->shards[i] = sh;
	st->state[i] = SKV_SHARD_SERVING;
	st->changes++;
	return DKV_OK;
}

static void apply_gc(skv_state *st, const skv_shard_ref *ref, int *err)
{
	for (skv_out **pp = &st->outs; *pp != NULL; pp = &(*pp)->next) {
		skv_out *o = *pp;
		if (o->cfgnum == ref->cfgnum && o->shard == ref->shard) {
			*pp = o->next;
			skv_shard_free(o->data);
			free(o);
			break;
		}
	}
	/* Done only once we have switched to cfgnum (a GC logged before our switch
	 * finds nothing to free, and the copy made at the switch must still go). */
	*err = st->cfg.num >= ref->cfgnum ? DKV_OK : SKV_ERR_NOT_READY;
}

static void apply_gc_ack(skv_state *st, const skv_shard_ref *ref)
{
	for (skv_gcpend **pp = &st->gcs; *pp != NULL; pp = &(*pp)->next) {
		skv_gcpend *g = *pp;
		if (g->cfgnum == ref->cfgnum && g->shard == ref->shard) {
			*pp = g->next;
			free_gc(g);
			return;
		}
	}
}

/* ---------------------------------------------------------------- apply */

int skv_machine_apply(skv_state *st, const void *buf, size_t len, void **res, size_t *res_len)
{
	*res = NULL;
	*res_len = 0;
	skv_op op;
	int err = DKV_OK, rc = DKV_OK;
	char *value = NULL;
	st->applied++;
	if (skv_xdr_decode((xdrproc_t)xdr_skv_op, buf, len, &op, sizeof op) != DKV_OK) {
		err = DKV_ERR_INVAL; /* the same bytes everywhere: refused everywhere */
	} else {
		switch (op.kind) {
		case SKV_OP_GET:
			rc = apply_get(st, &op.skv_op_u.get, &err, &value);
			break;
		case SKV_OP_PUT:
		case SKV_OP_APPEND:
			rc = apply_put(st, &op.skv_op_u.put, op.kind == SKV_OP_APPEND, &err);
			break;
		case SKV_OP_RECONFIG:
			rc = apply_reconfig(st, &op.skv_op_u.config, &err);
			break;
		case SKV_OP_INSTALL:
			rc = apply_install(st, &op.skv_op_u.install, &err);
			break;
		case SKV_OP_GC:
			apply_gc(st, &op.skv_op_u.ref, &err);
			break;
		case SKV_OP_GC_ACK:
			apply_gc_ack(st, &op.skv_op_u.ref);
			break;
		case SKV_OP_NOP:
		default:
			break;
		}
		xdr_free((xdrproc_t)xdr_skv_op, (char *)&op);
	}
	if (rc == DKV_OK) {
		skv_result r = { .err = err, .value = value ? value : (char *)"" };
		rc = skv_xdr_encode((xdrproc_t)xdr_skv_result, &r, res, res_len);
		if (rc != DKV_OK)
			rc = DKV_ERR_NOMEM;
	}
	free(value);
	return rc;
}

/* ---------------------------------------------------------------- snapshots */

int skv_machine_snapshot(const skv_state *st, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	skv_snapshot w;
	memset(&w, 0, sizeof w);
	w.gid = st->gid;
	w.cfg = st->cfg;   /* borrowed for encoding */
	w.prev = st->prev;
	int rc = DKV_OK;
	size_t nouts = 0, ngcs = 0;
	for (const skv_out *o = st->outs; o != NULL; o = o->next)
		nouts++;
	for (const skv_gcpend *g = st->gcs; g != NULL; g = g->next)
		ngcs++;
	if (nouts > SKV_PENDING_MAX || ngcs > SKV_PENDING_MAX) {
		DKV_ERROR("shardkv %lld: no snapshot: %zu left-behind shards, %zu pending GCs "
		          "(at most %u each, skv_prot.x)", (long long)st->gid, nouts, ngcs,
		          (unsigned)SKV_PENDING_MAX);
		return DKV_ERR_NOMEM;
	}
	skv_out_wire *outs = nouts ? dkv_calloc(nouts, sizeof *outs) : NULL;
	skv_gc_wire *gcs = ngcs ? dkv_calloc(ngcs, sizeof *gcs) : NULL;
	if ((nouts && outs == NULL) || (ngcs && gcs == NULL))
		rc = DKV_ERR_NOMEM;
	for (int i = 0; i < NS && rc == DKV_OK; i++) {
		w.slots[i].state = st->state[i];
		if (st->shards[i] != NULL) {
			void *b;
			size_t l;
			rc = skv_shard_encode(st->shards[i], &b, &l);
			if (rc == DKV_OK) {
				w.slots[i].present = TRUE;
				w.slots[i].data.data_val = b;
				w.slots[i].data.data_len = (u_int)l;
			}
		}
	}
	/* outs and gcs in list order (the same on every replica: built by the log). */
	size_t k = 0;
	for (const skv_out *o = st->outs; o != NULL && rc == DKV_OK; o = o->next, k++) {
		void *b;
		size_t l;
		rc = skv_shard_encode(o->data, &b, &l);
		if (rc == DKV_OK) {
			outs[k].cfgnum = o->cfgnum;
			outs[k].shard = o->shard;
			outs[k].data.data_val = b;
			outs[k].data.data_len = (u_int)l;
		}
	}
	w.outs.outs_val = outs;
	w.outs.outs_len = (u_int)k;
	k = 0;
	for (const skv_gcpend *g = st->gcs; g != NULL; g = g->next, k++) {
		gcs[k].cfgnum = g->cfgnum;
		gcs[k].shard = g->shard;
		gcs[k].src_gid = g->src_gid;
		gcs[k].servers.servers_len = (u_int)g->nservers;
		gcs[k].servers.servers_val = g->servers; /* borrowed */
	}
	w.gcs.gcs_val = gcs;
	w.gcs.gcs_len = (u_int)k;
	if (rc == DKV_OK) {
		rc = skv_xdr_encode((xdrproc_t)xdr_skv_snapshot, &w, buf, len);
		if (rc == DKV_ERR_INVAL)
			rc = DKV_ERR_NOMEM;
	}
	for (int i = 0; i < NS; i++)
		free(w.slots[i].data.data_val);
	for (u_int i = 0; i < w.outs.outs_len; i++)
		free(outs[i].data.data_val);
	free(outs);
	free(gcs);
	return rc;
}

int skv_machine_restore(skv_state *st, const void *buf, size_t len)
{
	skv_snapshot w;
	if (skv_xdr_decode((xdrproc_t)xdr_skv_snapshot, buf, len, &w, sizeof w) != DKV_OK)
		return DKV_ERR_INVAL;
	skv_state ns;
	skv_state_init(&ns, st->gid);
	int rc = w.gid == st->gid ? DKV_OK : DKV_ERR_INVAL;
	for (int i = 0; i < NS && rc == DKV_OK; i++) {
		int state = w.slots[i].state;
		if (state < SKV_SHARD_NONE || state > SKV_SHARD_PULLING ||
		    (state == SKV_SHARD_SERVING) != (bool)w.slots[i].present) {
			rc = DKV_ERR_INVAL;
			break;
		}
		ns.state[i] = (skv_shard_state)state;
		if (w.slots[i].present)
			rc = skv_shard_decode(w.slots[i].data.data_val, w.slots[i].data.data_len,
			                      &ns.shards[i]);
	}
	/* Rebuild the lists in the snapshot's order: prepend from the back. */
	for (u_int k = w.outs.outs_len; k-- > 0 && rc == DKV_OK;) {
		skv_out *o = dkv_calloc(1, sizeof *o);
		if (o == NULL) {
			rc = DKV_ERR_NOMEM;
			break;
		}
		rc = skv_shard_decode(w.outs.outs_val[k].data.data_val, w.outs.outs_val[k].data.data_len,
		                      &o->data);
		if (rc != DKV_OK) {
			free(o);
			break;
		}
		o->cfgnum = w.outs.outs_val[k].cfgnum;
		o->shard = w.outs.outs_val[k].shard;
		o->next = ns.outs;
		ns.outs = o;
	}
	for (u_int k = w.gcs.gcs_len; k-- > 0 && rc == DKV_OK;) {
		const skv_gc_wire *gw = &w.gcs.gcs_val[k];
		skv_gcpend *g = dkv_calloc(1, sizeof *g);
		skv_group tmp = { .gid = gw->src_gid, .servers = { gw->servers.servers_len,
		                                                   gw->servers.servers_val } };
		if (g == NULL || copy_names(&tmp, &g->servers, &g->nservers) != DKV_OK) {
			free(g);
			rc = DKV_ERR_NOMEM;
			break;
		}
		g->cfgnum = gw->cfgnum;
		g->shard = gw->shard;
		g->src_gid = gw->src_gid;
		g->next = ns.gcs;
		ns.gcs = g;
	}
	if (rc == DKV_OK) {
		ns.cfg = w.cfg; /* stolen */
		ns.prev = w.prev;
		memset(&w.cfg, 0, sizeof w.cfg);
		memset(&w.prev, 0, sizeof w.prev);
	}
	xdr_free((xdrproc_t)xdr_skv_snapshot, (char *)&w);
	if (rc != DKV_OK) {
		skv_state_destroy(&ns);
		return rc;
	}
	ns.applied = st->applied;
	ns.changes = st->changes + 1;
	skv_state_destroy(st);
	*st = ns;
	return DKV_OK;
}
