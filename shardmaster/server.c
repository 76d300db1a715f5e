/*
 * shardmaster/server.c — a shard-master replica: RPC handlers on paxosrsm,
 * feeding the pure state machine of state.c.
 *
 * One dkv_rpc_server at servers[me] carries the shard-master program and this
 * replica's Paxos peer, so set_unreliable drops both kinds of traffic (the lab).
 * Every request, Query included, goes through the log: a handler validates its
 * arguments, encodes an sm_op and waits in paxosrsm_add_op_timeout until the op
 * and everything before it are applied here (paxosrsm's applier calls sm_apply,
 * which applies it under `mu`, then paxos_done). The handler then reads, under
 * `mu`, the result the at-most-once table recorded for its (client id, seq) —
 * a retried request finds the first result and changes nothing — or, for a
 * Query, the configuration as it is now, which reflects every op completed
 * before the Query was sent (a Query of a number this replica already has is
 * answered at once: numbered configurations never change). A replica that cannot get its op agreed within
 * SM_AGREE_TIMEOUT_MS (a minority, say) answers DKV_ERR_TIMEOUT and the clerk
 * tries another. Query ops carry a per-replica nonce and counter, so no two
 * are equal. Replicas must not diverge, so running out of memory while applying
 * an agreed op is fatal (logged, then abort()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/paxosrsm.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"
#include "sm_core.h"
#include "sm_wire.h"
#include "status.h"

struct shardmaster_server {
	/* Set at start, then read-only. */
	dkv_rpc_server *rpcs;   /* our endpoint: shard-master program + Paxos */
	paxosrsm *rsm;
	dkv_status_reg *status; /* the status program on rpcs */
	int me;
	uint64_t replica_nonce; /* random, tells our Query ops from other replicas' */

	pthread_mutex_t mu;     /* guards every field below */
	sm_state st;            /* the replicated state (history + at-most-once table) */
	uint64_t query_counter; /* Query ops proposed by this replica */
	bool killed;
};

/* ------------------------------------------------------------ apply */

/* sm_apply: paxosrsm's callback, one agreed op at a time, in log order. */
static void sm_apply(void *ctx, const void *buf, size_t len)
{
	shardmaster_server *s = ctx;
	sm_op op;
	memset(&op, 0, sizeof op);
	if (sm_op_decode(buf, len, &op) != DKV_OK) {
		/* Same bytes on every replica, so skipping it keeps them equal. */
		DKV_WARN("shardmaster: undecodable log entry (%zu bytes) skipped", len);
		return;
	}
	pthread_mutex_lock(&s->mu);
	uint64_t client = 0, seq = 0;
	int err = DKV_OK;
	bool mutation = true;
	switch (op.kind) {
	case SM_OP_JOIN:
		client = op.sm_op_u.join.client_id;
		seq = op.sm_op_u.join.seq;
		if (!sm_state_seen(&s->st, client, seq, NULL))
			err = sm_state_join(&s->st, op.sm_op_u.join.gid,
			                    (const char *const *)op.sm_op_u.join.servers.servers_val,
			                    (int)op.sm_op_u.join.servers.servers_len);
		else
			mutation = false;
		break;
	case SM_OP_LEAVE:
		client = op.sm_op_u.leave.client_id;
		seq = op.sm_op_u.leave.seq;
		if (!sm_state_seen(&s->st, client, seq, NULL))
			err = sm_state_leave(&s->st, op.sm_op_u.leave.gid);
		else
			mutation = false;
		break;
	case SM_OP_MOVE:
		client = op.sm_op_u.move.client_id;
		seq = op.sm_op_u.move.seq;
		if (!sm_state_seen(&s->st, client, seq, NULL))
			err = sm_state_move(&s->st, op.sm_op_u.move.shard, op.sm_op_u.move.gid);
		else
			mutation = false;
		break;
	case SM_OP_QUERY:
	default:
		mutation = false; /* a Query only marks a point in the log */
		break;
	}
	if (err == DKV_ERR_NOMEM) {
		DKV_ERROR("shardmaster: out of memory applying an agreed op; replicas would diverge");
		abort();
	}
	if (mutation)
		sm_state_record(&s->st, client, seq, err);
	pthread_mutex_unlock(&s->mu);
	xdr_free((xdrproc_t)xdr_sm_op, (char *)&op);
}

/* ------------------------------------------------------------ handlers */

/* agree: put *op in the log and wait until it has been applied here. */
static int agree(shardmaster_server *s, const sm_op *op)
{
	void *buf;
	size_t len;
	int rc = sm_op_encode(op, &buf, &len);
	if (rc != DKV_OK)
		return rc;
	rc = paxosrsm_add_op_timeout(s->rsm, buf, len, SM_AGREE_TIMEOUT_MS);
	free(buf);
	return rc;
}

/* agree_mutation: agree on a Join/Leave/Move and fetch its recorded result. */
static int agree_mutation(shardmaster_server *s, const sm_op *op, uint64_t client, uint64_t seq)
{
	int rc = agree(s, op);
	if (rc != DKV_OK)
		return rc;
	int err = DKV_OK;
	pthread_mutex_lock(&s->mu);
	/* Not found only if the entry was evicted since: it was applied, say OK. */
	if (!sm_state_seen(&s->st, client, seq, &err))
		err = DKV_OK;
	pthread_mutex_unlock(&s->mu);
	return err;
}

/* valid_name: a server name in a Join: non-empty, shorter than DKV_NAME_MAX
 * (opaque to the shard master: shardkv dials it). */
static bool valid_name(const char *name)
{
	return name != NULL && name[0] != '\0' && strlen(name) < DKV_NAME_MAX;
}

/* valid_endpoint: a replica's name: also one that dkv can dial. */
static bool valid_endpoint(const char *name)
{
	dkv_name parsed;
	return valid_name(name) && dkv_name_parse(name, &parsed) == DKV_OK;
}

static void handle_join(void *inst, void *argp, void *resp)
{
	const sm_join_args *a = argp;
	sm_reply *r = resp;
	bool ok = a->gid > 0 && a->servers.servers_len > 0;
	for (u_int i = 0; ok && i < a->servers.servers_len; i++)
		ok = valid_name(a->servers.servers_val[i]);
	if (!ok) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	sm_op op = { .kind = SM_OP_JOIN };
	op.sm_op_u.join = *a; /* shallow: borrowed for encoding only */
	r->err = agree_mutation(inst, &op, a->client_id, a->seq);
}

static void handle_leave(void *inst, void *argp, void *resp)
{
	const sm_leave_args *a = argp;
	sm_reply *r = resp;
	if (a->gid <= 0) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	sm_op op = { .kind = SM_OP_LEAVE };
	op.sm_op_u.leave = *a;
	r->err = agree_mutation(inst, &op, a->client_id, a->seq);
}

static void handle_move(void *inst, void *argp, void *resp)
{
	const sm_move_args *a = argp;
	sm_reply *r = resp;
	if (a->gid <= 0 || a->shard < 0 || a->shard >= SHARDMASTER_NSHARDS) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	sm_op op = { .kind = SM_OP_MOVE };
	op.sm_op_u.move = *a;
	r->err = agree_mutation(inst, &op, a->client_id, a->seq);
}

static void handle_query(void *inst, void *argp, void *resp)
{
	shardmaster_server *s = inst;
	const sm_query_args *a = argp;
	sm_query_reply *r = resp;
	if (a->num < -1) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	sm_op op = { .kind = SM_OP_QUERY };
	op.sm_op_u.query.replica_nonce = s->replica_nonce;
	pthread_mutex_lock(&s->mu);
	if (a->num >= 0 && a->num < s->st.nconfigs) {
		/* A numbered configuration never changes once it exists: no need to
		 * ask the log. Only "the latest" (or one not seen here yet) does. */
		r->err = sm_wire_from_config(&r->config, sm_state_query(&s->st, a->num));
		pthread_mutex_unlock(&s->mu);
		return;
	}
	op.sm_op_u.query.counter = ++s->query_counter;
	pthread_mutex_unlock(&s->mu);
	int rc = agree(s, &op);
	if (rc != DKV_OK) {
		r->err = rc;
		return;
	}
	pthread_mutex_lock(&s->mu);
	/* Deep copy under mu: the layer frees r after sending it. */
	r->err = sm_wire_from_config(&r->config, sm_state_query(&s->st, a->num));
	pthread_mutex_unlock(&s->mu);
}

static const dkv_rpc_proc sm_procs[] = {
	{ SM_JOIN, (xdrproc_t)xdr_sm_join_args, sizeof(sm_join_args), (xdrproc_t)xdr_sm_reply,
	  sizeof(sm_reply), handle_join },
	{ SM_LEAVE, (xdrproc_t)xdr_sm_leave_args, sizeof(sm_leave_args), (xdrproc_t)xdr_sm_reply,
	  sizeof(sm_reply), handle_leave },
	{ SM_MOVE, (xdrproc_t)xdr_sm_move_args, sizeof(sm_move_args), (xdrproc_t)xdr_sm_reply,
	  sizeof(sm_reply), handle_move },
	{ SM_QUERY, (xdrproc_t)xdr_sm_query_args, sizeof(sm_query_args),
	  (xdrproc_t)xdr_sm_query_reply, sizeof(sm_query_reply), handle_query },
};

/* ------------------------------------------------------------ lifecycle */

/* sm_status_fill: what `dkvctl status` shows (the status program's callback). */
static void sm_status_fill(void *ctx, dkv_status *st)
{
	shardmaster_server *s = ctx;
	snprintf(st->service, sizeof st->service, "shardmaster");
	st->me = s->me;
	paxos *px = paxosrsm_paxos(s->rsm);
	st->paxos_max = paxos_max(px);
	st->paxos_min = paxos_min(px);
	pthread_mutex_lock(&s->mu);
	snprintf(st->role, sizeof st->role, "%s", s->killed ? "stopped" : "voting");
	st->sessions = s->st.ndups;
	snprintf(st->detail, sizeof st->detail, "latest config %d (%d kept)",
	         s->st.nconfigs > 0 ? s->st.configs[s->st.nconfigs - 1].num : -1, s->st.nconfigs);
	pthread_mutex_unlock(&s->mu);
}

shardmaster_server *shardmaster_server_start(const char *const *servers, int n, int me)
{
	dkv_lib_init();
	if (servers == NULL || n <= 0 || me < 0 || me >= n) {
		errno = EINVAL;
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		if (!valid_endpoint(servers[i])) {
			errno = EINVAL;
			return NULL;
		}
	}
	shardmaster_server *s = dkv_calloc(1, sizeof *s);
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	if (sm_state_init(&s->st) != DKV_OK) {
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->mu, NULL);
	s->replica_nonce = dkv_random_seed();

	int saved;
	s->rpcs = dkv_rpc_server_listen(servers[me]);
	if (s->rpcs == NULL)
		goto fail;
	s->rsm = paxosrsm_make(servers, n, me, s->rpcs, sm_apply, s);
	if (s->rsm == NULL)
		goto fail;
	int rc = dkv_rpc_server_add(s->rpcs, SHARDMASTER_PROG, SHARDMASTER_V1, sm_procs,
	                            sizeof sm_procs / sizeof sm_procs[0], s);
	if (rc != DKV_OK) {
		errno = rc == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		goto fail;
	}
	s->me = me;
	if ((s->status = dkv_status_register(s->rpcs, sm_status_fill, s)) == NULL)
		goto fail;
	DKV_DEBUG("shardmaster %d/%d: serving at %s", me, n, servers[me]);
	return s;
fail:
	saved = errno;
	DKV_WARN("shardmaster_server_start %s: %s", servers[me], strerror(saved));
	shardmaster_server_free(s);
	errno = saved;
	return NULL;
}

void shardmaster_server_kill(shardmaster_server *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	bool was = s->killed;
	s->killed = true;
	pthread_mutex_unlock(&s->mu);
	if (was)
		return;
	/* First paxosrsm: handlers waiting in add_op return at once (KILLED), and
	 * the applier stops. Then the endpoint: waits for the handlers to finish. */
	if (s->rsm != NULL)
		paxosrsm_kill(s->rsm);
	if (s->rpcs != NULL)
		dkv_rpc_server_kill(s->rpcs);
}

void shardmaster_server_free(shardmaster_server *s)
{
	if (s == NULL)
		return;
	shardmaster_server_kill(s);
	dkv_status_unregister(s->status);
	paxosrsm_free(s->rsm);
	dkv_rpc_server_free(s->rpcs);
	sm_state_destroy(&s->st);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void shardmaster_server_set_unreliable(shardmaster_server *s, bool on)
{
	if (s != NULL && s->rpcs != NULL)
		dkv_rpc_server_set_unreliable(s->rpcs, on);
}

paxos *shardmaster_server_paxos(shardmaster_server *s)
{
	return s != NULL && s->rsm != NULL ? paxosrsm_paxos(s->rsm) : NULL;
}

/* Interim: dir and restart land with the durability and replication-core work. */
shardmaster_server *shardmaster_server_start_opts(const char *const *servers, int n, int me,
                                                  const dkv_server_opts *opts)
{
	if (!dkv_opts_plain(opts)) {
		errno = ENOTSUP;
		return NULL;
	}
	return shardmaster_server_start(servers, n, me);
}
