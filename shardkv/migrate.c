/*
 * shardkv/migrate.c — the poller thread: following the shard master's
 * configurations one at a time and pulling shards between groups. Reads the
 * replica's state under s->mu, makes RPCs and submits ops (replica.c) with no
 * lock held; the ops themselves are applied by machine.c. Nothing here is
 * called back by the other files but the thread's entry point.
 *
 * Each replica's poller (every SHARDKV_TICK_MS, or at once when kicked) works
 * through the group's log:
 *   1. Holding every shard it owns in configuration n, it fetches n+1 from the
 *      shard master and logs RECONFIG. Applying it is the switch point: lost
 *      shards move, with their session tables, to the "out" list keyed
 *      (n+1, shard); gained shards start empty (from gid 0) or become PULLING.
 *   2. For each PULLING shard it fetches (SKV_FETCH, through the call helper
 *      of src/call.h) the old owner's copy — the shard encoding of store.c —
 *      from any replica that has applied n+1 (the copy is immutable, so it
 *      answers from local state) and logs INSTALL; the first INSTALL serves
 *      the shard.
 *   3. For each installed shard it asks the old owner to drop its copy (SKV_GC:
 *      the old group logs GC and frees it), then logs GC_ACK.
 * An old owner never waits to hand a shard over, and frees it only once the new
 * owner has it. Duplicates in the log are ignored at apply.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "skv_internal.h"

/* How long to wait before retrying pulls that are still pending. */
#define SKV_PULL_RETRY_MS 50u
/* Per-RPC timeout of a migration call (the answer comes from local state). */
#define SKV_FETCH_TIMEOUT_MS 2000u
/* How long an old owner may take to log a GC (it frees memory only). */
#define SKV_GC_WAIT_MS 1000u

static char **copy_names(const skv_group *g, int *n)
{
	*n = 0;
	if (g == NULL || g->servers.servers_len == 0)
		return NULL;
	char **v = dkv_calloc(g->servers.servers_len, sizeof *v);
	if (v == NULL)
		return NULL;
	for (u_int i = 0; i < g->servers.servers_len; i++) {
		v[i] = dkv_strdup(g->servers.servers_val[i] ? g->servers.servers_val[i] : "");
		if (v[i] == NULL) {
			for (u_int j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return NULL;
		}
	}
	*n = (int)g->servers.servers_len;
	return v;
}

static void free_names(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ---------------------------------------------------------------- the poller */

typedef struct {
	int shard;
	int cfgnum;
	int64_t gid;
	int nservers;
	char **servers;
} skv_task;

/* One round is enough for the poller (it comes back on its next tick). */
static int one_round(void *ctx, dkv_call_servers *srv)
{
	(void)ctx;
	(void)srv;
	return SKV_ERR_NOT_READY;
}

/* Call `proc` on the servers of a group, one round (src/call.h), starting at a
 * random one, until one answers DKV_OK. The reply is left in `res` only on
 * DKV_OK. */
static int call_group(shardkv_server *s, const skv_task *t, rpcproc_t proc, xdrproc_t xa,
                      const void *args, xdrproc_t xr, void *res, size_t res_size)
{
	if (t->nservers == 0)
		return DKV_ERR_NET;
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, (const char *const *)t->servers, t->nservers);
	srv.last = (int)dkv_rng_below(&s->rng, (uint64_t)t->nservers); /* poller only */
	pthread_mutex_lock(&s->mu);
	bool dead = s->dead;
	pthread_mutex_unlock(&s->mu);
	if (dead)
		return DKV_ERR_KILLED;
	dkv_call_spec spec = {
		.prog = SKV_PROG, .vers = SKV_VERS, .proc = proc, .xdr_args = xa, .args = args,
		.xdr_res = xr, .res_size = res_size,
		.rpc_ms = SKV_FETCH_TIMEOUT_MS + (proc == SKV_GC ? SKV_GC_WAIT_MS : 0),
		.backoff_min_ms = 1, .backoff_max_ms = 1, .next_round = one_round,
	};
	int rc = dkv_call_any(s->pool, &srv, 0, &spec, res, NULL);
	if (rc != DKV_OK)
		xdr_free(xr, res);
	return rc;
}

/* Step 1: look for configuration num+1 and log it. True if one was applied. */
static bool step_config(shardkv_server *s, int num)
{
	shardmaster_config *c = NULL;
	if (shardmaster_clerk_query(s->smck, num + 1, &c) != DKV_OK || c == NULL)
		return false;
	bool progress = false;
	if (c->num == num + 1) {
		skv_op op;
		memset(&op, 0, sizeof op);
		op.kind = SKV_OP_RECONFIG;
		skv_config *sc = &op.skv_op_u.config;
		sc->num = c->num;
		memcpy(sc->shards, c->shards, sizeof sc->shards);
		skv_group *gs = c->ngroups > 0 ? dkv_calloc((size_t)c->ngroups, sizeof *gs) : NULL;
		if (c->ngroups == 0 || gs != NULL) {
			for (int i = 0; i < c->ngroups; i++) {
				gs[i].gid = c->groups[i].gid;
				gs[i].servers.servers_len = (u_int)c->groups[i].nservers;
				gs[i].servers.servers_val = c->groups[i].servers;
			}
			sc->groups.groups_len = (u_int)c->ngroups;
			sc->groups.groups_val = gs;
			int err;
			progress = skv_submit(s, &op, SKV_WAIT_MS, &err, NULL) == DKV_OK;
			free(gs);
		}
	}
	shardmaster_config_free(c);
	return progress;
}

/* Step 2: fetch one PULLING shard and log it. True if it was applied. */
static bool step_pull(shardkv_server *s, const skv_task *t)
{
	skv_fetch_args a = { .cfgnum = t->cfgnum, .shard = t->shard };
	skv_fetch_reply r;
	int rc = call_group(s, t, SKV_FETCH, (xdrproc_t)xdr_skv_fetch_args, &a,
	                    (xdrproc_t)xdr_skv_fetch_reply, &r, sizeof r);
	if (rc != DKV_OK) {
		DKV_DEBUG("shardkv %s: fetch of shard %d (config %d) from gid %lld: %d", s->name,
		          t->shard, t->cfgnum, (long long)t->gid, rc);
		return false;
	}
	skv_op op;
	memset(&op, 0, sizeof op);
	op.kind = SKV_OP_INSTALL;
	op.skv_op_u.install.cfgnum = t->cfgnum;
	op.skv_op_u.install.shard = t->shard;
	op.skv_op_u.install.src_gid = t->gid;
	op.skv_op_u.install.data.data_len = r.data.data_len; /* borrowed; freed with r */
	op.skv_op_u.install.data.data_val = r.data.data_val;
	int err;
	rc = skv_submit(s, &op, SKV_WAIT_MS, &err, NULL);
	xdr_free((xdrproc_t)xdr_skv_fetch_reply, (char *)&r);
	if (rc != DKV_OK)
		DKV_DEBUG("shardkv %s: install of shard %d (config %d): %d", s->name, t->shard,
		          t->cfgnum, rc);
	return rc == DKV_OK;
}

/* Step 3: tell an old owner to drop its copy, then log that it did. */
static void step_gc(shardkv_server *s, const skv_task *t)
{
	skv_gc_args a = { .cfgnum = t->cfgnum, .shard = t->shard, .wait_ms = SKV_GC_WAIT_MS };
	skv_gc_reply r;
	if (call_group(s, t, SKV_GC, (xdrproc_t)xdr_skv_gc_args, &a, (xdrproc_t)xdr_skv_gc_reply,
	               &r, sizeof r) != DKV_OK)
		return;
	skv_op op;
	memset(&op, 0, sizeof op);
	op.kind = SKV_OP_GC_ACK;
	op.skv_op_u.ref.cfgnum = t->cfgnum;
	op.skv_op_u.ref.shard = t->shard;
	int err;
	(void)skv_submit(s, &op, SKV_WAIT_MS, &err, NULL);
}

static void free_tasks(skv_task *t, int n)
{
	for (int i = 0; i < n; i++)
		free_names(t[i].servers, t[i].nservers);
}

/*
 * One round of the poller. Returns true when it made progress (look again at
 * once); *pending is set when shards are still being pulled.
 */
static bool poll_once(shardkv_server *s, bool *pending)
{
	skv_task pulls[SHARDMASTER_NSHARDS];
	skv_task gcs[16];
	int npulls = 0, ngcs = 0;
	*pending = false;

	pthread_mutex_lock(&s->mu);
	int num = s->st.cfg.num;
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++) {
		if (s->st.state[i] != SKV_SHARD_PULLING)
			continue;
		skv_task *t = &pulls[npulls];
		t->shard = i;
		t->cfgnum = num;
		t->gid = s->st.prev.shards[i];
		t->servers = copy_names(skv_config_group(&s->st.prev, t->gid), &t->nservers);
		npulls++;
	}
	for (skv_gcpend *g = s->st.gcs; g != NULL && ngcs < (int)(sizeof gcs / sizeof gcs[0]); g = g->next) {
		skv_task *t = &gcs[ngcs++];
		t->shard = g->shard;
		t->cfgnum = g->cfgnum;
		t->gid = g->src_gid;
		skv_group tmp = { .gid = g->src_gid };
		tmp.servers.servers_len = (u_int)g->nservers;
		tmp.servers.servers_val = g->servers;
		t->servers = copy_names(&tmp, &t->nservers);
	}
	pthread_mutex_unlock(&s->mu);

	bool progress = false;
	if (npulls == 0) {
		progress = step_config(s, num);
	} else {
		for (int i = 0; i < npulls; i++)
			if (step_pull(s, &pulls[i]))
				progress = true;
		*pending = true;
		/* A replica that lagged (cut off from its peers) may wait for a copy its
		 * group installed long ago, and learn the log only when it takes part in
		 * an agreement: once a second, log a no-op. */
		uint64_t now = dkv_now_ms();
		if (!progress && now - s->last_sync_ms >= 1000) {
			s->last_sync_ms = now;
			skv_op op;
			memset(&op, 0, sizeof op);
			op.kind = SKV_OP_NOP;
			int err;
			(void)skv_submit(s, &op, SKV_WAIT_MS, &err, NULL);
		}
	}
	/* Telling old owners can wait for a quiet round: it only frees memory. */
	if (!progress && !*pending)
		for (int i = 0; i < ngcs; i++)
			step_gc(s, &gcs[i]);
	free_tasks(pulls, npulls);
	free_tasks(gcs, ngcs);
	return progress;
}

void *skv_poller_main(void *arg)
{
	shardkv_server *s = arg;
	pthread_mutex_lock(&s->mu);
	unsigned wait = 0;
	while (!s->dead) {
		if (!s->kick && wait > 0)
			dkv_cond_wait_ms(&s->tick_cv, &s->mu, wait);
		if (s->dead)
			break;
		s->kick = false;
		pthread_mutex_unlock(&s->mu);
		bool pending = false;
		bool progress = poll_once(s, &pending);
		pthread_mutex_lock(&s->mu);
		wait = progress ? 0 : pending ? SKV_PULL_RETRY_MS : SHARDKV_TICK_MS;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}
