/*
 * shardmaster/server.c — a shard-master replica: one handler per RPC on the
 * paxosrsm engine, which runs the pure state machine of machine.c.
 *
 * One dkv_rpc_server at servers[me] carries the shard-master program and this
 * replica's Paxos peer, so set_unreliable drops both kinds of traffic (the lab).
 * Every request, Query included, goes through the log: a handler validates its
 * arguments, encodes an sm_op and waits in paxosrsm_submit until the op and
 * everything before it are applied here; the engine hands back apply's result
 * (an sm_result). Join, Leave and Move carry the clerk's session and seq: the
 * engine applies each at most once and answers a retry with the first result,
 * or DKV_ERR_EXPIRED when the session is gone (bounded table, expiry decided in
 * the log). A Query reads, under `mu`, the configuration as it is once its op
 * is applied, which reflects every op completed before the Query was sent (a
 * Query of a number this replica already has is answered at once: numbered
 * configurations never change). SM_OPEN_SESSION opens a clerk session in the
 * engine, or hands out a global id from the state's counter (shardkv's
 * sessions, shardmaster/sm_session.h). A replica that cannot get its op agreed
 * within SM_AGREE_TIMEOUT_MS (a minority, say) answers DKV_ERR_TIMEOUT and the
 * clerk tries another. A replica that cannot apply an agreed op (out of
 * memory) stops itself (the engine kills it; it never diverges).
 *
 * Locks: `mu` guards the state; apply/snapshot/restore take it on the engine's
 * applier thread, handlers take it to read. No lock across paxosrsm or an RPC.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/paxosrsm.h"
#include "dkv/shardmaster.h"
#include "dkv_internal.h"
#include "rsm_ident.h"
#include "sm_core.h"
#include "sm_wire.h"
#include "status.h"

struct shardmaster_server {
	/* Set at start, then read-only. */
	dkv_rpc_server *rpcs;   /* our endpoint: shard-master program + Paxos */
	paxosrsm *rsm;
	dkv_status_reg *status; /* the status program on rpcs */
	char *dir;              /* opts->dir (malloc'ed; NULL: none), for status */
	int me;

	pthread_mutex_t mu;     /* guards every field below */
	sm_state st;            /* the replicated state (history, id counter) */
	bool killed;
};

/* ------------------------------------------------------------ the machine */

/* paxosrsm's callbacks: the pure machine (machine.c) under our lock, so that
 * handlers can read the state between two ops. */
static int sm_apply_cb(void *ctx, const void *op, size_t len, void **res, size_t *res_len)
{
	shardmaster_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	int rc = sm_machine_apply(&s->st, op, len, res, res_len);
	pthread_mutex_unlock(&s->mu);
	if (rc != DKV_OK)
		DKV_ERROR("shardmaster: cannot apply an agreed op (%s): stopping this replica",
		          dkv_strerror(rc));
	return rc;
}

static int sm_snapshot_cb(void *ctx, void **buf, size_t *len)
{
	shardmaster_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	int rc = sm_machine_snapshot(&s->st, buf, len);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static int sm_restore_cb(void *ctx, const void *buf, size_t len)
{
	shardmaster_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	int rc = sm_machine_restore(&s->st, buf, len);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static const paxosrsm_sm sm_machine = { sm_apply_cb, sm_snapshot_cb, sm_restore_cb };

/* ------------------------------------------------------------ handlers */

/*
 * submit: put *op in the log (with the clerk's session, or none) and wait
 * until it has been applied here. DKV_OK with the op's own err in *err (and
 * the id of a NEW_ID in *id), or the engine's error (TIMEOUT, KILLED,
 * EXPIRED, NOMEM) — the clerk tries another replica, or applies the EXPIRED
 * rule.
 */
static int submit(shardmaster_server *s, const paxosrsm_client *cl, const sm_op *op, int *err,
                  uint64_t *id)
{
	void *buf, *res = NULL;
	size_t len, res_len = 0;
	int rc = sm_op_encode(op, &buf, &len);
	if (rc != DKV_OK)
		return rc;
	rc = paxosrsm_submit(s->rsm, cl, buf, len, SM_AGREE_TIMEOUT_MS, &res, &res_len);
	free(buf);
	if (rc == DKV_OK && sm_result_decode(res, res_len, err, id) != DKV_OK)
		rc = DKV_ERR_NOMEM; /* no result: cannot say what happened; the clerk retries */
	free(res);
	return rc;
}

/* mutate: a Join/Leave/Move under the clerk's session. */
static int mutate(shardmaster_server *s, uint64_t session, uint64_t seq, const sm_op *op)
{
	if (session == 0 || seq == 0)
		return DKV_ERR_INVAL;
	paxosrsm_client cl = { .session = session, .seq = seq };
	int err = DKV_OK;
	int rc = submit(s, &cl, op, &err, NULL);
	return rc == DKV_OK ? err : rc;
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
	op.sm_op_u.join.gid = a->gid;
	op.sm_op_u.join.servers.servers_len = a->servers.servers_len;
	op.sm_op_u.join.servers.servers_val = a->servers.servers_val; /* borrowed */
	r->err = mutate(inst, a->session, a->seq, &op);
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
	op.sm_op_u.leave_gid = a->gid;
	r->err = mutate(inst, a->session, a->seq, &op);
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
	op.sm_op_u.move.shard = a->shard;
	op.sm_op_u.move.gid = a->gid;
	r->err = mutate(inst, a->session, a->seq, &op);
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
	pthread_mutex_lock(&s->mu);
	if (a->num >= 0 && a->num < s->st.nconfigs) {
		/* A numbered configuration never changes once it exists: no need to
		 * ask the log. Only "the latest" (or one not seen here yet) does. */
		r->err = sm_wire_from_config(&r->config, sm_state_query(&s->st, a->num));
		pthread_mutex_unlock(&s->mu);
		return;
	}
	pthread_mutex_unlock(&s->mu);
	sm_op op = { .kind = SM_OP_QUERY };
	int err = DKV_OK;
	int rc = submit(s, NULL, &op, &err, NULL);
	if (rc != DKV_OK) {
		r->err = rc;
		return;
	}
	pthread_mutex_lock(&s->mu);
	/* The state now is at or after the Query's point in the log, and before
	 * our reply: linearizable. Deep copy under mu (the layer frees r). */
	r->err = sm_wire_from_config(&r->config, sm_state_query(&s->st, a->num));
	pthread_mutex_unlock(&s->mu);
}

static void handle_open_session(void *inst, void *argp, void *resp)
{
	shardmaster_server *s = inst;
	const sm_session_args *a = argp;
	sm_session_reply *r = resp;
	r->session = 0;
	if (a->kind == SM_SESSION_CLERK) {
		r->err = paxosrsm_open_session(s->rsm, SM_AGREE_TIMEOUT_MS, &r->session);
	} else if (a->kind == SM_SESSION_GLOBAL) {
		sm_op op = { .kind = SM_OP_NEW_ID };
		int err = DKV_OK;
		r->err = submit(s, NULL, &op, &err, &r->session);
		if (r->err == DKV_OK)
			r->err = err;
	} else {
		r->err = DKV_ERR_INVAL;
	}
	if (r->err != DKV_OK)
		r->session = 0;
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
	{ SM_OPEN_SESSION, (xdrproc_t)xdr_sm_session_args, sizeof(sm_session_args),
	  (xdrproc_t)xdr_sm_session_reply, sizeof(sm_session_reply), handle_open_session },
};

/* ------------------------------------------------------------ lifecycle */

shardmaster_server *shardmaster_server_start(const char *const *servers, int n, int me)
{
	return shardmaster_server_start_opts(servers, n, me, NULL);
}

/* opts: paxosrsm's (a data directory holds the engine's snapshot of the
 * configurations and the Paxos log; restart without state rejoins without
 * voting and catches up from the peers' snapshot). */
/* sm_status_fill: what `dkvctl status` shows (the status program's callback). */
static void sm_status_fill(void *ctx, dkv_status *st)
{
	shardmaster_server *s = ctx;
	paxosrsm_info in;
	paxosrsm_get_info(s->rsm, &in); /* before s->mu: the engine takes its own lock */
	dkv_status_set_rsm(st, &in);
	snprintf(st->service, sizeof st->service, "shardmaster");
	st->me = s->me;
	st->dir_bytes = dkv_status_dir_bytes(s->dir);
	pthread_mutex_lock(&s->mu);
	snprintf(st->detail, sizeof st->detail, "latest config %d (%d kept)",
	         s->st.nconfigs > 0 ? s->st.configs[s->st.nconfigs - 1].num : -1, s->st.nconfigs);
	pthread_mutex_unlock(&s->mu);
}

shardmaster_server *shardmaster_server_start_opts(const char *const *servers, int n, int me,
                                                  const dkv_server_opts *opts)
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
	s->dir = opts && opts->dir ? strdup(opts->dir) : NULL; /* NULL: no DIR column */

	int saved;
	s->rpcs = dkv_rpc_server_listen(servers[me]);
	if (s->rpcs == NULL)
		goto fail;
	s->rsm = paxosrsm_start_ident(servers, n, me, s->rpcs, &sm_machine, s, opts, "shardmaster", 0);
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
	free(s->dir);
	free(s);
}

void shardmaster_server_set_unreliable(shardmaster_server *s, bool on)
{
	if (s != NULL && s->rpcs != NULL)
		dkv_rpc_server_set_unreliable(s->rpcs, on);
}

struct paxosrsm *sm_server_rsm(shardmaster_server *s)
{
	return s != NULL ? s->rsm : NULL;
}

paxos *shardmaster_server_paxos(shardmaster_server *s)
{
	return s != NULL && s->rsm != NULL ? paxosrsm_paxos(s->rsm) : NULL;
}
