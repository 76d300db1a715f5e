/*
 * shardkv/server.c — one replica of a shardkv group: lifecycle, the client
 * RPCs (SKV_GET, SKV_PUTAPPEND) and the apply callback of its paxosrsm log.
 *
 * Every client operation becomes an skv_op in the group's log; the handler adds
 * it with paxosrsm_add_op_timeout, then reads the result that the apply
 * callback left in a waiter matched by the op's nonce (drawn by this replica).
 * The result is what the op saw at its point in the log: a key whose shard the
 * group does not own there gets DKV_ERR_WRONG_GROUP, even right after a
 * reconfiguration. Put/Append consult the shard's at-most-once table (cid ->
 * last seq), which moves with the shard. A handler may answer WRONG_GROUP
 * without logging anything when the replica's applied state does not serve the
 * shard: nothing was applied, and the clerk retries elsewhere.
 *
 * Threads: connection threads (handlers), paxosrsm's applier (skv_apply), the
 * poller (migrate.c). s->mu guards all replica state and is never held across
 * an RPC or paxosrsm call. Kill: mark dead, shut the migration pool down, kill
 * paxosrsm (waiting handlers return KILLED), kill the listener, join the poller.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"
#include "status.h"

int shardkv_key2shard(const char *key)
{
	if (key == NULL || key[0] == '\0')
		return 0;
	return (int)((unsigned char)key[0] % SHARDMASTER_NSHARDS);
}

/* ---------------------------------------------------------------- helpers */

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

uint64_t skv_new_nonce(shardkv_server *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t n = dkv_rng_next(&s->rng) | 1u;
	pthread_mutex_unlock(&s->mu);
	return n;
}

int skv_submit(shardkv_server *s, const skv_op *op, unsigned wait_ms)
{
	unsigned long sz = xdr_sizeof((xdrproc_t)xdr_skv_op, (void *)op);
	char *buf = dkv_malloc(sz ? sz : 1);
	if (buf == NULL)
		return DKV_ERR_NOMEM;
	XDR x;
	xdrmem_create(&x, buf, (u_int)sz, XDR_ENCODE);
	bool ok = xdr_skv_op(&x, (skv_op *)op);
	size_t len = xdr_getpos(&x);
	xdr_destroy(&x);
	if (!ok) {
		free(buf);
		return DKV_ERR_INVAL;
	}
	int rc = paxosrsm_add_op_timeout(s->rsm, buf, len, wait_ms);
	free(buf);
	return rc;
}

/* Waiters: registered before the op is submitted, filled by apply. mu held. */
static skv_waiter *waiter_find_locked(shardkv_server *s, uint64_t nonce)
{
	for (skv_waiter *w = s->waiters; w != NULL; w = w->next)
		if (w->nonce == nonce)
			return w;
	return NULL;
}

static void waiter_unlink_locked(shardkv_server *s, skv_waiter *w)
{
	for (skv_waiter **pp = &s->waiters; *pp != NULL; pp = &(*pp)->next)
		if (*pp == w) {
			*pp = w->next;
			return;
		}
}

/* ---------------------------------------------------------------- apply */

/* A client op at its point in the log. mu held. */
static void apply_kv_locked(shardkv_server *s, skv_op_kind kind, const skv_kv_op *op)
{
	int err = DKV_OK;
	char *value = NULL;
	const char *key = op->key ? op->key : "";
	int shard = shardkv_key2shard(key);
	skv_shard *sh = s->shards[shard];
	if (s->state[shard] != SKV_SHARD_SERVING || sh == NULL) {
		err = DKV_ERR_WRONG_GROUP;
	} else if (kind == SKV_OP_GET) {
		const skv_entry *e = skv_map_get(&sh->kv, key);
		value = e ? dkv_memdup(e->val, e->vlen + 1) : dkv_strdup("");
		if (value == NULL)
			err = DKV_ERR_NOMEM;
	} else if (skv_dups_get(&sh->dups, op->cid) >= op->seq) {
		err = DKV_OK; /* applied before: at most once */
	} else {
		const char *v = op->value ? op->value : "";
		size_t vlen = strlen(v);
		const skv_entry *e = skv_map_get(&sh->kv, key);
		bool append = kind == SKV_OP_APPEND;
		if ((append && e != NULL ? e->vlen : 0) + vlen > DKV_VALUE_MAX)
			err = DKV_ERR_INVAL;
		else
			err = skv_map_put(&sh->kv, key, v, vlen, append);
		if (err == DKV_OK)
			err = skv_dups_set(&sh->dups, op->cid, op->seq);
		/* NOMEM here would make replicas diverge; the process is then in trouble anyway. */
		if (err == DKV_ERR_NOMEM)
			DKV_ERROR("shardkv %s: out of memory applying an op", s->name);
	}
	skv_waiter *w = waiter_find_locked(s, op->nonce);
	if (w != NULL && !w->done) {
		w->done = true;
		w->err = err;
		w->value = value;
		value = NULL;
	}
	free(value);
}

static void skv_apply(void *ctx, const void *opbuf, size_t len)
{
	shardkv_server *s = ctx;
	skv_op op;
	memset(&op, 0, sizeof op);
	XDR x;
	xdrmem_create(&x, (char *)opbuf, (u_int)len, XDR_DECODE);
	bool ok = xdr_skv_op(&x, &op);
	xdr_destroy(&x);
	if (!ok) {
		DKV_WARN("shardkv %s: undecodable log op (%zu bytes) skipped", s->name, len);
		xdr_free((xdrproc_t)xdr_skv_op, (char *)&op);
		return;
	}
	pthread_mutex_lock(&s->mu);
	s->stats_applied++;
	switch (op.kind) {
	case SKV_OP_GET:
	case SKV_OP_PUT:
	case SKV_OP_APPEND:
		apply_kv_locked(s, op.kind, &op.skv_op_u.kv);
		break;
	case SKV_OP_RECONFIG:
		skv_apply_reconfig(s, &op.skv_op_u.config);
		break;
	case SKV_OP_INSTALL:
		skv_apply_install(s, &op.skv_op_u.install);
		break;
	case SKV_OP_GC:
		skv_apply_gc(s, &op.skv_op_u.ref);
		break;
	case SKV_OP_GC_ACK:
		skv_apply_gc_ack(s, &op.skv_op_u.ref);
		break;
	case SKV_OP_NOP:
		break;
	}
	pthread_mutex_unlock(&s->mu);
	xdr_free((xdrproc_t)xdr_skv_op, (char *)&op);
}

/* ---------------------------------------------------------------- client RPCs */

/*
 * Log a client op and wait for its result. Returns the op's dkv_err; for a Get
 * on DKV_OK, *value is the malloc'ed value.
 */
static int run_client_op(shardkv_server *s, skv_op_kind kind, const char *key, const char *value,
                         uint64_t cid, uint64_t seq, int cfgnum, unsigned wait_ms, char **out)
{
	int shard = shardkv_key2shard(key);
	skv_waiter w;
	memset(&w, 0, sizeof w);

	pthread_mutex_lock(&s->mu);
	if (s->dead) {
		pthread_mutex_unlock(&s->mu);
		return DKV_ERR_KILLED;
	}
	if (cfgnum > s->cfg.num)
		skv_kick_locked(s);
	if (s->state[shard] != SKV_SHARD_SERVING) {
		/* Not ours at this replica's point of the log: nothing is applied. */
		pthread_mutex_unlock(&s->mu);
		return DKV_ERR_WRONG_GROUP;
	}
	w.nonce = dkv_rng_next(&s->rng) | 1u;
	w.next = s->waiters;
	s->waiters = &w;
	pthread_mutex_unlock(&s->mu);

	skv_op op;
	memset(&op, 0, sizeof op);
	op.kind = kind;
	op.skv_op_u.kv.cid = cid;
	op.skv_op_u.kv.seq = seq;
	op.skv_op_u.kv.nonce = w.nonce;
	op.skv_op_u.kv.key = (char *)key;
	op.skv_op_u.kv.value = (char *)(value ? value : "");
	if (wait_ms == 0 || wait_ms > 4 * SKV_WAIT_MS)
		wait_ms = SKV_WAIT_MS;
	int rc = skv_submit(s, &op, wait_ms);

	pthread_mutex_lock(&s->mu);
	waiter_unlink_locked(s, &w);
	pthread_mutex_unlock(&s->mu);
	if (rc == DKV_OK && !w.done)
		rc = DKV_ERR_TIMEOUT; /* cannot happen: add_op returns after apply */
	if (rc == DKV_OK)
		rc = w.err;
	if (rc == DKV_OK && out != NULL) {
		*out = w.value;
		w.value = NULL;
	}
	free(w.value);
	return rc;
}

static void handle_get(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_get_args *a = args;
	skv_get_reply *r = res;
	char *value = NULL;
	if (a->key == NULL || strlen(a->key) > DKV_KEY_MAX)
		r->err = DKV_ERR_INVAL;
	else
		r->err = run_client_op(s, SKV_OP_GET, a->key, NULL, a->cid, a->seq, a->cfgnum,
		                       a->wait_ms, &value);
	r->value = value ? value : strdup("");
}

static void handle_putappend(void *inst, void *args, void *res)
{
	shardkv_server *s = inst;
	skv_putappend_args *a = args;
	skv_putappend_reply *r = res;
	if (a->key == NULL || a->value == NULL || strlen(a->key) > DKV_KEY_MAX ||
	    strlen(a->value) > DKV_VALUE_MAX || a->cid == 0)
		r->err = DKV_ERR_INVAL;
	else
		r->err = run_client_op(s, a->append ? SKV_OP_APPEND : SKV_OP_PUT, a->key, a->value,
		                       a->cid, a->seq, a->cfgnum, a->wait_ms, NULL);
}

static const dkv_rpc_proc skv_procs[] = {
	{ SKV_GET, (xdrproc_t)xdr_skv_get_args, sizeof(skv_get_args),
	  (xdrproc_t)xdr_skv_get_reply, sizeof(skv_get_reply), handle_get },
	{ SKV_PUTAPPEND, (xdrproc_t)xdr_skv_putappend_args, sizeof(skv_putappend_args),
	  (xdrproc_t)xdr_skv_putappend_reply, sizeof(skv_putappend_reply), handle_putappend },
	{ SKV_FETCH, (xdrproc_t)xdr_skv_fetch_args, sizeof(skv_fetch_args),
	  (xdrproc_t)xdr_skv_fetch_reply, sizeof(skv_fetch_reply), skv_handle_fetch },
	{ SKV_GC, (xdrproc_t)xdr_skv_gc_args, sizeof(skv_gc_args),
	  (xdrproc_t)xdr_skv_gc_reply, sizeof(skv_gc_reply), skv_handle_gc },
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

/* skv_status_fill: what `dkvctl status` shows (the status program's callback). */
static void skv_status_fill(void *ctx, dkv_status *st)
{
	shardkv_server *s = ctx;
	snprintf(st->service, sizeof st->service, "shardkv");
	st->gid = s->gid;
	st->me = s->me;
	paxos *px = paxosrsm_paxos(s->rsm);
	st->paxos_max = paxos_max(px);
	st->paxos_min = paxos_min(px);
	pthread_mutex_lock(&s->mu);
	snprintf(st->role, sizeof st->role, "%s", s->dead ? "stopped" : "voting");
	char shards[64] = "";
	int serving = 0, pulling = 0;
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++) {
		if (s->state[i] == SKV_SHARD_SERVING) {
			size_t l = strlen(shards);
			snprintf(shards + l, sizeof shards - l, "%s%d", serving++ ? " " : "", i);
		}
		pulling += s->state[i] == SKV_SHARD_PULLING;
	}
	snprintf(st->detail, sizeof st->detail, "config %d, serving shards [%s]%s", s->cfg.num,
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
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
		skv_shard_free(s->shards[i]);
	while (s->outs != NULL) {
		skv_out *o = s->outs;
		s->outs = o->next;
		skv_shard_free(o->data);
		free(o);
	}
	while (s->gcs != NULL) {
		skv_gcpend *g = s->gcs;
		s->gcs = g->next;
		for (int i = 0; i < g->nservers; i++)
			free(g->servers[i]);
		free(g->servers);
		free(g);
	}
	skv_config_destroy(&s->cfg);
	skv_config_destroy(&s->prev);
	pthread_cond_destroy(&s->tick_cv);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->kill_mu);
	free(s);
}

shardkv_server *shardkv_server_start(int64_t gid, const char *const *shardmasters, int nsm,
                                     const char *const *servers, int n, int me)
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
	s->me = me;
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
	s->rsm = paxosrsm_make(servers, n, me, s->srv, skv_apply, s);
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

/* Interim: dir and restart land with the durability and replication-core work. */
shardkv_server *shardkv_server_start_opts(int64_t gid, const char *const *shardmasters, int nsm,
                                          const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts)
{
	if (!dkv_opts_plain(opts)) {
		errno = ENOTSUP;
		return NULL;
	}
	return shardkv_server_start(gid, shardmasters, nsm, servers, n, me);
}
