/*
 * shardkv/server.c — one replica of a shardkv group: the RPC handlers (client
 * SKV_GET / SKV_PUTAPPEND, migration SKV_FETCH / SKV_GC) and the lifecycle.
 * Depends on replica.c (submit), machine.c (reading the state) and migrate.c
 * (the poller's entry point); nothing calls back into this file.
 *
 * Every client operation becomes an skv_op in the group's log, submitted
 * through paxosrsm with no engine session (shardkv keeps its sessions per
 * shard, so they move with the shard); the engine hands back apply's result.
 * The result is what the op saw at its point in the log: a key whose shard
 * the group does not own there gets DKV_ERR_WRONG_GROUP, even right after a
 * reconfiguration. A handler may answer WRONG_GROUP without logging anything
 * when the replica's applied state does not serve the shard: nothing was
 * applied, and the clerk retries elsewhere. SKV_FETCH answers from local
 * state (the copy kept for the new owner, in the one shard encoding);
 * SKV_GC logs a GC op and answers its result.
 *
 * Threads: connection threads (handlers), paxosrsm's applier (replica.c), the
 * poller (migrate.c). s->mu guards the replica state and is never held across
 * an RPC or paxosrsm call. Kill: mark dead, shut the migration pool down, kill
 * paxosrsm (waiting handlers return KILLED), kill the listener, join the poller.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsm_ident.h"
#include "skv_internal.h"
#include "status.h"

/* ---------------------------------------------------------------- client RPCs */

/* wait_of: the server-side wait the clerk asked for, bounded. */
static unsigned wait_of(unsigned wait_ms)
{
	return wait_ms == 0 || wait_ms > 4 * SKV_WAIT_MS ? SKV_WAIT_MS : wait_ms;
}

/* precheck: DKV_OK when this replica serves key's shard now (kicks the poller
 * when the clerk knows a newer configuration). */
static int precheck(shardkv_server *s, const char *key, int cfgnum)
{
	int shard = shardkv_key2shard(key);
	pthread_mutex_lock(&s->mu);
	int rc = DKV_OK;
	if (s->dead)
		rc = DKV_ERR_KILLED;
	else if (s->st.state[shard] != SKV_SHARD_SERVING)
		rc = DKV_ERR_WRONG_GROUP; /* not ours at this replica's point of the log */
	if (cfgnum > s->st.cfg.num)
		skv_kick_locked(s);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static void handle_get(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_get_args *a = args;
	skv_get_reply *r = res;
	char *value = NULL;
	if (a->key == NULL || strlen(a->key) > DKV_KEY_MAX) {
		r->err = DKV_ERR_INVAL;
	} else if ((r->err = precheck(s, a->key, a->cfgnum)) == DKV_OK) {
		skv_op op = { .kind = SKV_OP_GET };
		op.skv_op_u.get.key = a->key;
		int err = DKV_OK;
		r->err = skv_submit(s, &op, wait_of(a->wait_ms), &err, &value);
		if (r->err == DKV_OK)
			r->err = err;
	}
	if (r->err != DKV_OK) {
		free(value);
		value = NULL;
	}
	r->value = value ? value : strdup("");
}

static void handle_putappend(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_putappend_args *a = args;
	skv_putappend_reply *r = res;
	if (a->key == NULL || a->value == NULL || strlen(a->key) > DKV_KEY_MAX ||
	    strlen(a->value) > DKV_VALUE_MAX || a->session == 0 || a->seq == 0) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	if ((r->err = precheck(s, a->key, a->cfgnum)) != DKV_OK)
		return;
	skv_op op = { .kind = a->append ? SKV_OP_APPEND : SKV_OP_PUT };
	op.skv_op_u.put.session = a->session;
	op.skv_op_u.put.seq = a->seq;
	op.skv_op_u.put.key = a->key;
	op.skv_op_u.put.value = a->value;
	int err = DKV_OK;
	r->err = skv_submit(s, &op, wait_of(a->wait_ms), &err, NULL);
	if (r->err == DKV_OK)
		r->err = err;
}

/* ---------------------------------------------------------------- migration RPCs */

static void handle_fetch(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_fetch_args *a = args;
	skv_fetch_reply *r = res;
	void *buf = NULL;
	size_t len = 0;
	pthread_mutex_lock(&s->mu);
	if (s->dead) {
		r->err = DKV_ERR_KILLED;
	} else if (s->st.cfg.num < a->cfgnum) {
		r->err = SKV_ERR_NOT_READY;
		skv_kick_locked(s); /* someone is ahead of us: poll now */
	} else {
		skv_out *o = skv_out_find(&s->st, a->cfgnum, a->shard);
		r->err = o == NULL ? SKV_ERR_NOT_READY : skv_shard_encode(o->data, &buf, &len);
	}
	pthread_mutex_unlock(&s->mu);
	if (r->err == DKV_OK) {
		r->data.data_val = buf; /* the layer frees it */
		r->data.data_len = (u_int)len;
	}
}

static void handle_gc(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_gc_args *a = args;
	skv_gc_reply *r = res;
	skv_op op = { .kind = SKV_OP_GC };
	op.skv_op_u.ref.cfgnum = a->cfgnum;
	op.skv_op_u.ref.shard = a->shard;
	unsigned wait = a->wait_ms == 0 || a->wait_ms > SKV_WAIT_MS ? SKV_WAIT_MS : a->wait_ms;
	int err = DKV_OK;
	r->err = skv_submit(s, &op, wait, &err, NULL);
	if (r->err == DKV_OK)
		r->err = err; /* NOT_READY when the GC came before our switch to cfgnum */
}

static const dkv_rpc_proc skv_procs[] = {
	{ SKV_GET, (xdrproc_t)xdr_skv_get_args, sizeof(skv_get_args),
	  (xdrproc_t)xdr_skv_get_reply, sizeof(skv_get_reply), handle_get },
	{ SKV_PUTAPPEND, (xdrproc_t)xdr_skv_putappend_args, sizeof(skv_putappend_args),
	  (xdrproc_t)xdr_skv_putappend_reply, sizeof(skv_putappend_reply), handle_putappend },
	{ SKV_FETCH, (xdrproc_t)xdr_skv_fetch_args, sizeof(skv_fetch_args),
	  (xdrproc_t)xdr_skv_fetch_reply, sizeof(skv_fetch_reply), handle_fetch },
	{ SKV_GC, (xdrproc_t)xdr_skv_gc_args, sizeof(skv_gc_args),
	  (xdrproc_t)xdr_skv_gc_reply, sizeof(skv_gc_reply), handle_gc },
};

/* ---------------------------------------------------------------- lifecycle */

static bool names_ok(const char *const *names, int n)
{
	if (names == NULL || n <= 0)
		return false;
	for (int i = 0; i < n; i++)
		if (names[i] == NULL || names[i][0] == '\0' || strlen(names[i]) >= DKV_NAME_MAX)
			return false;
	return true;
}

/* skv_status_fill: what `dkvctl status` shows (the status program's callback):
 * the engine's view (role, log, snapshot) and the shards this replica holds. */
static void skv_status_fill(void *ctx, dkv_status *st)
{
	shardkv_server *s = ctx;
	paxosrsm_info in;
	paxosrsm_get_info(s->rsm, &in); /* before s->mu: the engine takes its own lock */
	dkv_status_set_rsm(st, &in);
	snprintf(st->service, sizeof st->service, "shardkv");
	st->dir_bytes = dkv_status_dir_bytes(s->dir);
	st->gid = s->gid;
	st->me = s->me;
	pthread_mutex_lock(&s->mu);
	char shards[64] = "";
	int serving = 0, pulling = 0;
	int64_t keys = 0, bytes = 0;
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++) {
		if (s->st.state[i] == SKV_SHARD_SERVING && s->st.shards[i] != NULL) {
			size_t l = strlen(shards);
			snprintf(shards + l, sizeof shards - l, "%s%d", serving++ ? " " : "", i);
			keys += (int64_t)s->st.shards[i]->nkeys;
			bytes += (int64_t)skv_shard_bytes(s->st.shards[i]);
		}
		pulling += s->st.state[i] == SKV_SHARD_PULLING;
	}
	st->keys = keys;
	st->bytes = bytes;
	st->sessions = (int64_t)skv_sessions_held(&s->st);
	snprintf(st->detail, sizeof st->detail, "config %d, serving shards [%s]%s", s->st.cfg.num,
	         shards, pulling ? ", pulling some" : "");
	pthread_mutex_unlock(&s->mu);
}

/* Release everything but the kill machinery; every thread is gone. */
static void release(shardkv_server *s)
{
	dkv_status_unregister(s->status);
	paxosrsm_free(s->rsm);
	dkv_rpc_server_free(s->srv);
	dkv_rpc_pool_free(s->pool);
	shardmaster_clerk_free(s->smck);
	skv_state_destroy(&s->st);
	free(s->dir);
	pthread_cond_destroy(&s->tick_cv);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->kill_mu);
	free(s);
}

shardkv_server *shardkv_server_start(int64_t gid, const char *const *shardmasters, int nsm,
                                     const char *const *servers, int n, int me)
{
	return shardkv_server_start_opts(gid, shardmasters, nsm, servers, n, me, NULL);
}

/* opts: paxosrsm's. A data directory holds the engine's snapshot — the whole
 * machine: configuration reached (cfg, prev), shard states, the shards with
 * their session tables, shards kept for other groups (outs), pending GCs —
 * and the Paxos log after it. Restart without state rejoins without voting
 * and catches up from a peer's snapshot. */
shardkv_server *shardkv_server_start_opts(int64_t gid, const char *const *shardmasters, int nsm,
                                          const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts)
{
	if (gid <= 0 || !names_ok(shardmasters, nsm) || !names_ok(servers, n) || me < 0 || me >= n) {
		errno = EINVAL;
		return NULL;
	}
	dkv_lib_init();
	shardkv_server *s = dkv_calloc(1, sizeof *s);
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->kill_mu, NULL);
	int e = dkv_cond_init(&s->tick_cv);
	if (e != 0) {
		pthread_mutex_destroy(&s->mu);
		pthread_mutex_destroy(&s->kill_mu);
		free(s);
		errno = e;
		return NULL;
	}
	s->gid = gid;
	skv_state_init(&s->st, gid);
	s->me = me;
	s->dir = opts && opts->dir ? strdup(opts->dir) : NULL; /* NULL: no DIR column */
	snprintf(s->name, sizeof s->name, "%s", servers[me]);
	dkv_rng_seed(&s->rng, dkv_random_seed());

	int err = 0;
	s->srv = dkv_rpc_server_listen(servers[me]);
	if (s->srv == NULL) {
		err = errno;
		goto fail;
	}
	s->pool = dkv_rpc_pool_new();
	s->smck = shardmaster_clerk_new(shardmasters, nsm);
	if (s->pool == NULL || s->smck == NULL) {
		err = errno ? errno : ENOMEM;
		goto fail;
	}
	/* The poller must never block for long on the shard master (kill joins it). */
	shardmaster_clerk_set_timeout(s->smck, 1000);
	s->rsm = paxosrsm_start_ident(servers, n, me, s->srv, &skv_machine, s, opts, "shardkv", gid);
	if (s->rsm == NULL) {
		err = errno ? errno : ENOMEM;
		goto fail;
	}
	if (dkv_rpc_server_add(s->srv, SKV_PROG, SKV_VERS, skv_procs,
	                       sizeof skv_procs / sizeof skv_procs[0], s) != DKV_OK) {
		err = EINVAL;
		goto fail;
	}
	if ((s->status = dkv_status_register(s->srv, skv_status_fill, s)) == NULL) {
		err = errno;
		goto fail;
	}
	err = pthread_create(&s->poller, NULL, skv_poller_main, s);
	if (err != 0)
		goto fail;
	s->poller_started = true;
	return s;
fail:
	pthread_mutex_lock(&s->mu);
	s->dead = true;
	pthread_mutex_unlock(&s->mu);
	if (s->pool != NULL)
		dkv_rpc_pool_shutdown(s->pool);
	if (s->rsm != NULL)
		paxosrsm_kill(s->rsm);
	if (s->srv != NULL)
		dkv_rpc_server_kill(s->srv);
	release(s);
	errno = err ? err : ENOMEM;
	return NULL;
}

void shardkv_server_kill(shardkv_server *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->kill_mu);
	if (s->killed) {
		pthread_mutex_unlock(&s->kill_mu);
		return;
	}
	pthread_mutex_lock(&s->mu);
	s->dead = true;
	pthread_cond_broadcast(&s->tick_cv);
	pthread_mutex_unlock(&s->mu);
	dkv_rpc_pool_shutdown(s->pool);
	paxosrsm_kill(s->rsm);
	dkv_rpc_server_kill(s->srv);
	if (s->poller_started)
		pthread_join(s->poller, NULL);
	s->poller_started = false;
	s->killed = true;
	pthread_mutex_unlock(&s->kill_mu);
}

void shardkv_server_free(shardkv_server *s)
{
	if (s == NULL)
		return;
	shardkv_server_kill(s);
	release(s);
}

void shardkv_server_set_unreliable(shardkv_server *s, bool on)
{
	if (s != NULL)
		dkv_rpc_server_set_unreliable(s->srv, on);
}

paxos *shardkv_server_paxos(shardkv_server *s)
{
	return s ? paxosrsm_paxos(s->rsm) : NULL;
}

paxosrsm *shardkv_server_rsm(shardkv_server *s)
{
	return s ? s->rsm : NULL;
}
