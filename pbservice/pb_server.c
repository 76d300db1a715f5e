/*
 * pbservice/pb_server.c — the primary/backup server.
 *
 * Roles come from the view service. A ticker thread pings it every PingInterval
 * (never per request) and records the view. The primary serves clerks; every
 * operation runs in the *lane*: a token (lane_busy, under mu) that one operation
 * holds at a time while it talks to the backup and changes the store, so the
 * backup applies operations in exactly the primary's order. `mu` itself is never
 * held across an RPC; the lane is, by design.
 *
 * An operation in the lane: (1) re-check that we are primary; (2) when the view has
 * a backup that lacks our state for this view, send it the whole database and
 * duplicate table (PB_TRANSFER); (3) forward the operation (PB_FWD_*) and wait for
 * the backup's OK, retrying a few times on network errors; (4) apply it locally.
 * A primary applies a write only after its backup did. If a forward finally fails,
 * the backup may or may not have applied it, so the primary forgets that the
 * backup is in sync and re-sends the full state before the next forward.
 *
 * The backup accepts forwards and transfers only for the view it is backup of,
 * from that view's primary; a sender with a newer view than ours tells us of it
 * (views come from the view service, so we adopt it). A primary acknowledges a
 * view to the view service (pings its number) only once its backup has the state.
 * A server that has not got its data legitimately (first primary of view 1, or a
 * transfer) never serves and keeps pinging 0, so a restarted server is not taken
 * for the old one; to tell "first primary" from "restarted lone primary" (both are
 * told "view 1, primary: you"), the ping reply says whether the view is already
 * acknowledged.
 *
 * At-most-once: the one session table (src/session.h), bounded at
 * PB_SESSION_CAP sessions (least recently used evicted; an evicted session's
 * later request gets DKV_ERR_EXPIRED, never a second application). Session ids
 * increase in the order sessions are opened: the primary assigns next_session+1
 * in the lane, forwards the opening to the backup first (PB_FWD_OPEN), and the
 * counter travels with every state transfer, so a promoted backup continues
 * above every id ever assigned. A write under an id that was never opened here
 * (a caller that numbers its own requests) opens it implicitly and raises the
 * counter above it, so later ids still increase past everything held.
 * The table and the counter change only in the lane, identically on the primary
 * and its backup (same calls, same order: the table is deterministic).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/pbservice.h"
#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "pb_internal.h"
#include "pb_prot.h"
#include "pb_store.h"
#include "session.h"
#include "vs_prot.h"
#include "status.h"

/* How long a forward to the backup may take before it counts as failed. */
#define PB_FWD_TIMEOUT_MS 2000u
/* How long a full state transfer may take. */
#define PB_XFER_TIMEOUT_MS 20000u
/* How long a ping to the view service may take. */
#define PB_PING_TIMEOUT_MS 1000u
/* Forward attempts before giving up on a backup that does not answer. */
#define PB_FWD_ATTEMPTS 5

struct pbservice_server {
	pthread_mutex_t mu;      /* guards every field down to `dead` */
	pthread_cond_t lane_cv;  /* lane released, or kill */
	pthread_cond_t tick_cv;  /* kill or ping_now (wakes the ticker); backoff waits use it too */
	viewservice_view view;   /* latest view known: from the view service or a primary */
	unsigned pinged;         /* viewnum sent in our last ping */
	bool has_state;          /* our data is legitimate (first primary, or a transfer) */
	unsigned synced_view;    /* as backup: the view whose transfer we received */
	unsigned xfer_view;      /* as primary: the view in which our backup got our state */
	bool lane_busy;          /* some operation holds the lane */
	bool ping_now;           /* a transfer completed: ping (acknowledge) without waiting */
	bool dead;
	/* The store: only the lane holder reads or changes these (no mu needed to
	 * read; a transfer swaps the pointers under mu as well). */
	pb_store *kv;
	dkv_sessions *sess;
	uint64_t next_session; /* the last session id assigned (or held) */

	/* Set at start, read-only afterwards. */
	char me[DKV_NAME_MAX];
	char vshost[DKV_NAME_MAX];
	dkv_rpc_server *rpcs;
	dkv_status_reg *status; /* the status program on rpcs */
	dkv_rpc_pool *pool; /* our outgoing calls: pings, forwards, transfers */
	pthread_t ticker;

	pthread_mutex_t kill_mu; /* serialises _kill; guards `killed` */
	bool killed;
};

/* ------------------------------------------------------------ helpers (mu held) */

static bool is_primary_locked(const pbservice_server *s)
{
	return s->has_state && strcmp(s->view.primary, s->me) == 0;
}

/* pb_status_fill: what `dkvctl status` shows (the status program's callback):
 * the role in the latest view this server knows. */
static void pb_status_fill(void *ctx, dkv_status *st)
{
	pbservice_server *s = ctx;
	snprintf(st->service, sizeof st->service, "pbservice");
	pthread_mutex_lock(&s->mu);
	const char *role = s->dead                                ? "stopped"
	                   : strcmp(s->view.primary, s->me) == 0 ? "primary"
	                   : strcmp(s->view.backup, s->me) == 0  ? "backup"
	                                                          : "idle";
	snprintf(st->role, sizeof st->role, "%s", role);
	snprintf(st->detail, sizeof st->detail, "view %u%s", s->view.viewnum,
	         s->has_state ? "" : ", no state yet");
	pthread_mutex_unlock(&s->mu);
}

/* Adopt a view the view service issued, if it is newer than ours. */
static void adopt_view_locked(pbservice_server *s, const viewservice_view *v)
{
	if (v->viewnum > s->view.viewnum)
		s->view = *v;
}

/* Decode a wire view; false when a name does not fit. */
static bool view_from_x(viewservice_view *v, const pb_view_x *x)
{
	const char *p = x->primary ? x->primary : "";
	const char *b = x->backup ? x->backup : "";
	if (strlen(p) >= DKV_NAME_MAX || strlen(b) >= DKV_NAME_MAX)
		return false;
	v->viewnum = x->viewnum;
	strcpy(v->primary, p);
	strcpy(v->backup, b);
	return true;
}

/* Is `v` (sent by its primary) the view we are backup of? */
static bool backup_of_locked(const pbservice_server *s, const viewservice_view *v)
{
	return s->view.viewnum == v->viewnum && strcmp(s->view.backup, s->me) == 0 &&
	       strcmp(s->view.primary, v->primary) == 0;
}

/* ------------------------------------------------------------ the lane */

/* Wait for the lane; false when the server is killed meanwhile. */
static bool lane_enter(pbservice_server *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->lane_busy && !s->dead)
		pthread_cond_wait(&s->lane_cv, &s->mu);
	bool ok = !s->dead;
	if (ok)
		s->lane_busy = true;
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static bool lane_try_enter(pbservice_server *s)
{
	pthread_mutex_lock(&s->mu);
	bool ok = !s->dead && !s->lane_busy;
	if (ok)
		s->lane_busy = true;
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static void lane_exit(pbservice_server *s)
{
	pthread_mutex_lock(&s->mu);
	s->lane_busy = false;
	pthread_cond_signal(&s->lane_cv);
	pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ applying */

/* Private verdict of session_verdict: applied already (reply OK, change nothing). */
#define PB_DONE (-1)

/* What to do with this write (lane held): DKV_OK (apply it), PB_DONE,
 * DKV_ERR_EXPIRED (its session was evicted: it may have been applied) or
 * DKV_ERR_INVAL (no session id or sequence number). */
static int session_verdict(const pbservice_server *s, const pb_putappend_args *a)
{
	if (a->client == 0 || a->seq == 0 || a->client >= PB_SESSION_ID_MAX)
		return DKV_ERR_INVAL;
	switch (dkv_sessions_check(s->sess, a->client, a->seq, NULL, NULL)) {
	case DKV_SESS_NEW:
		return DKV_OK;
	case DKV_SESS_DUP:
	case DKV_SESS_STALE: /* an older request of a clerk that has moved on */
		return PB_DONE;
	case DKV_SESS_EXPIRED:
	default:
		return DKV_ERR_EXPIRED;
	}
}

/* Apply a Put/Append unless its session says it was applied already. Lane held. */
static int apply_putappend(pbservice_server *s, const pb_putappend_args *a)
{
	int rc = session_verdict(s, a);
	if (rc == PB_DONE)
		return DKV_OK;
	if (rc != DKV_OK)
		return rc;
	/* Make the session known first: once the store has changed, recording the
	 * request must not fail (for a known id without a result it cannot), or a
	 * retry would apply it twice. */
	if (!dkv_sessions_known(s->sess, a->client)) {
		rc = dkv_sessions_open(s->sess, a->client);
		if (rc != DKV_OK)
			return rc;
		if (a->client > s->next_session)
			s->next_session = a->client;
	}
	rc = a->op == PB_OP_PUT ? pb_store_put(s->kv, a->key, a->value)
	                        : pb_store_append(s->kv, a->key, a->value);
	if (rc == DKV_OK)
		(void)dkv_sessions_record(s->sess, a->client, a->seq, NULL, 0);
	return rc;
}

/* Open session `id` (assigned by the primary). Lane held. */
static int apply_open(pbservice_server *s, uint64_t id)
{
	int rc = dkv_sessions_open(s->sess, id);
	if (rc == DKV_OK && id > s->next_session)
		s->next_session = id;
	return rc;
}

/* Would this request make a value longer than DKV_VALUE_MAX? Lane held. */
static bool too_long(pbservice_server *s, const pb_putappend_args *a)
{
	size_t vlen = strlen(a->value);
	if (a->op == PB_OP_PUT)
		return vlen > DKV_VALUE_MAX;
	size_t cur = 0;
	(void)pb_store_get(s->kv, a->key, &cur);
	return cur + vlen > DKV_VALUE_MAX;
}

/* ------------------------------------------------------------ primary → backup */

static void view_to_x(pb_view_x *x, viewservice_view *v)
{
	x->viewnum = v->viewnum;
	x->primary = v->primary;
	x->backup = v->backup;
}

typedef struct {
	pb_kv *kvs;
	size_t nkv;
} xfer_build;

static void add_kv(void *ctx, const char *key, const char *value)
{
	xfer_build *b = ctx;
	b->kvs[b->nkv].key = (char *)key;     /* borrowed: the lane is held */
	b->kvs[b->nkv].value = (char *)value; /* borrowed */
	b->nkv++;
}

/* Send our whole state to the backup of view v. Lane held. */
static int transfer(pbservice_server *s, viewservice_view *v)
{
	xfer_build b = {0};
	size_t nkv = pb_store_count(s->kv);
	void *sbuf = NULL;
	size_t slen = 0;
	if (nkv > PB_TRANSFER_KEYS) {
		/* pb_prot.x bounds a transfer: the backup would reject it. */
		DKV_ERROR("pbservice %s: cannot transfer state to %s: %zu keys, more than %u",
		          s->me, v->backup, nkv, (unsigned)PB_TRANSFER_KEYS);
		return DKV_ERR_NOMEM;
	}
	b.kvs = dkv_malloc((nkv ? nkv : 1) * sizeof(pb_kv));
	if (b.kvs == NULL || dkv_sessions_encode(s->sess, &sbuf, &slen) != DKV_OK) {
		free(b.kvs);
		return DKV_ERR_NOMEM;
	}
	if (slen > PB_STATE_MAX) {
		DKV_ERROR("pbservice %s: cannot transfer state to %s: session table of %zu bytes, "
		          "more than %u", s->me, v->backup, slen, (unsigned)PB_STATE_MAX);
		free(b.kvs);
		free(sbuf);
		return DKV_ERR_NOMEM;
	}
	pb_store_foreach(s->kv, add_kv, &b);

	pb_transfer_args args;
	view_to_x(&args.view, v);
	args.kvs.kvs_len = (u_int)b.nkv;
	args.kvs.kvs_val = b.kvs;
	args.sessions.sessions_len = (u_int)slen;
	args.sessions.sessions_val = sbuf;
	args.next_session = s->next_session;
	pb_reply res = {0};
	int rc = dkv_rpc_call(s->pool, v->backup, PB_PROG, PB_VERS, PB_TRANSFER,
	                      (xdrproc_t)xdr_pb_transfer_args, &args, (xdrproc_t)xdr_pb_reply, &res,
	                      PB_XFER_TIMEOUT_MS);
	free(b.kvs);
	free(sbuf);
	if (rc == DKV_OK) {
		rc = res.err;
		xdr_free((xdrproc_t)xdr_pb_reply, (char *)&res);
	}
	if (rc == DKV_OK) {
		pthread_mutex_lock(&s->mu);
		s->xfer_view = v->viewnum;
		/* Acknowledge the view now rather than at the next tick: until then the
		 * view service cannot replace a primary that fails. */
		s->ping_now = true;
		pthread_cond_broadcast(&s->tick_cv);
		pthread_mutex_unlock(&s->mu);
		DKV_DEBUG("pbservice %s: sent %zu keys to backup %s (view %u)", s->me, b.nkv,
		          v->backup, v->viewnum);
	}
	return rc;
}

/* Forward one client operation to the backup of v. Lane held. */
static int forward(pbservice_server *s, viewservice_view *v, const pb_get_args *g,
                   const pb_putappend_args *pa, const uint64_t *open_id)
{
	pb_reply res = {0};
	int rc;
	if (open_id != NULL) {
		pb_fwd_open_args fa;
		view_to_x(&fa.view, v);
		fa.id = *open_id;
		rc = dkv_rpc_call(s->pool, v->backup, PB_PROG, PB_VERS, PB_FWD_OPEN,
		                  (xdrproc_t)xdr_pb_fwd_open_args, &fa, (xdrproc_t)xdr_pb_reply, &res,
		                  PB_FWD_TIMEOUT_MS);
	} else if (g != NULL) {
		pb_fwd_get_args fa;
		view_to_x(&fa.view, v);
		fa.a = *g;
		rc = dkv_rpc_call(s->pool, v->backup, PB_PROG, PB_VERS, PB_FWD_GET,
		                  (xdrproc_t)xdr_pb_fwd_get_args, &fa, (xdrproc_t)xdr_pb_reply, &res,
		                  PB_FWD_TIMEOUT_MS);
	} else {
		pb_fwd_putappend_args fa;
		view_to_x(&fa.view, v);
		fa.a = *pa;
		rc = dkv_rpc_call(s->pool, v->backup, PB_PROG, PB_VERS, PB_FWD_PUTAPPEND,
		                  (xdrproc_t)xdr_pb_fwd_putappend_args, &fa, (xdrproc_t)xdr_pb_reply,
		                  &res, PB_FWD_TIMEOUT_MS);
	}
	if (rc != DKV_OK)
		return rc == DKV_ERR_KILLED ? DKV_ERR_KILLED : DKV_ERR_NET;
	rc = res.err;
	xdr_free((xdrproc_t)xdr_pb_reply, (char *)&res);
	return rc;
}

/* Sleep for retry backoff unless killed; false when killed. */
static bool backoff(pbservice_server *s, unsigned ms)
{
	pthread_mutex_lock(&s->mu);
	if (!s->dead)
		dkv_cond_wait_ms(&s->tick_cv, &s->mu, ms);
	bool alive = !s->dead;
	pthread_mutex_unlock(&s->mu);
	return alive;
}

/*
 * Run one client operation as primary: exactly one of g (Get), pa (Put or
 * Append) and open_id (open a session: the id assigned is written there). For a
 * Get, *value receives a malloc'ed copy. Lane held.
 */
static int op_in_lane(pbservice_server *s, const pb_get_args *g, const pb_putappend_args *pa,
                      uint64_t *open_id, char **value)
{
	unsigned delay = 1;
	for (int attempt = 0;; attempt++) {
		viewservice_view v;
		pthread_mutex_lock(&s->mu);
		if (s->dead) {
			pthread_mutex_unlock(&s->mu);
			return DKV_ERR_KILLED;
		}
		if (!is_primary_locked(s)) {
			pthread_mutex_unlock(&s->mu);
			return DKV_ERR_WRONG_SERVER;
		}
		v = s->view;
		bool need_xfer = v.backup[0] != '\0' && s->xfer_view != v.viewnum;
		pthread_mutex_unlock(&s->mu);

		if (pa != NULL) {
			int verdict = session_verdict(s, pa);
			if (verdict == PB_DONE)
				return DKV_OK; /* a retry of a request already applied */
			if (verdict != DKV_OK)
				return verdict;
			if (too_long(s, pa))
				return DKV_ERR_INVAL;
		}
		if (open_id != NULL)
			*open_id = s->next_session + 1;

		int rc = DKV_OK;
		if (v.backup[0] != '\0') {
			if (need_xfer)
				rc = transfer(s, &v);
			if (rc == DKV_OK)
				rc = forward(s, &v, g, pa, open_id);
		}
		if (rc == DKV_OK && open_id != NULL) {
			rc = apply_open(s, *open_id);
			if (rc != DKV_OK) {
				pthread_mutex_lock(&s->mu);
				s->xfer_view = 0; /* the backup opened it, we could not: re-sync */
				pthread_mutex_unlock(&s->mu);
			}
			return rc;
		}
		if (rc == DKV_OK) {
			if (pa != NULL) {
				rc = apply_putappend(s, pa);
				if (rc != DKV_OK) {
					/* The backup applied it, we could not: re-sync it first next time. */
					pthread_mutex_lock(&s->mu);
					s->xfer_view = 0;
					pthread_mutex_unlock(&s->mu);
				}
				return rc;
			}
			const char *cur = pb_store_get(s->kv, g->key, NULL);
			*value = dkv_strdup(cur != NULL ? cur : "");
			return *value != NULL ? DKV_OK : DKV_ERR_NOMEM;
		}
		if (rc == PB_ERR_NEED_STATE) {
			pthread_mutex_lock(&s->mu);
			s->xfer_view = 0;
			pthread_mutex_unlock(&s->mu);
		} else if (rc == DKV_ERR_WRONG_SERVER || rc == DKV_ERR_KILLED ||
		           rc == DKV_ERR_NOMEM || rc == DKV_ERR_INVAL || rc == DKV_ERR_EXPIRED) {
			return rc;
		}
		/* A network error, or the backup needs our state: try again, briefly. */
		if (attempt + 1 >= PB_FWD_ATTEMPTS) {
			if (pa != NULL || open_id != NULL) {
				/* The backup may hold this write: re-sync it before the next forward. */
				pthread_mutex_lock(&s->mu);
				s->xfer_view = 0;
				pthread_mutex_unlock(&s->mu);
			}
			return DKV_ERR_NET;
		}
		if (!backoff(s, delay))
			return DKV_ERR_KILLED;
		delay *= 2;
	}
}

/* Run a client operation: quick rejection when not primary, else in the lane. */
static int primary_op(pbservice_server *s, const pb_get_args *g, const pb_putappend_args *pa,
                      uint64_t *open_id, char **value)
{
	pthread_mutex_lock(&s->mu);
	bool ok = is_primary_locked(s);
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		return DKV_ERR_WRONG_SERVER;
	if (!lane_enter(s))
		return DKV_ERR_KILLED;
	int rc = op_in_lane(s, g, pa, open_id, value);
	lane_exit(s);
	return rc;
}

/* ------------------------------------------------------------ RPC handlers */

static void handle_get(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_get_args *args = argp;
	pb_get_reply *res = resp;
	char *value = NULL;
	res->err = primary_op(s, args, NULL, NULL, &value);
	res->value = value != NULL ? value : dkv_strdup("");
}

static void handle_putappend(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_putappend_args *args = argp;
	pb_reply *res = resp;
	if (args->op != PB_OP_PUT && args->op != PB_OP_APPEND) {
		res->err = DKV_ERR_INVAL;
		return;
	}
	res->err = primary_op(s, NULL, args, NULL, NULL);
}

static void handle_open(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_open_reply *res = resp;
	(void)argp;
	uint64_t id = 0;
	res->err = primary_op(s, NULL, NULL, &id, NULL);
	res->id = res->err == DKV_OK ? id : 0;
}

/*
 * Check a forward or transfer from the primary of `x`: adopt the view if newer,
 * then are we its backup (and, when need_sync, do we hold its state)?
 */
static int check_from_primary(pbservice_server *s, const pb_view_x *x, bool need_sync)
{
	viewservice_view v;
	if (!view_from_x(&v, x))
		return DKV_ERR_INVAL;
	int rc = DKV_OK;
	pthread_mutex_lock(&s->mu);
	if (s->dead)
		rc = DKV_ERR_KILLED;
	else {
		if (strcmp(v.primary, s->me) != 0)
			adopt_view_locked(s, &v);
		if (!backup_of_locked(s, &v))
			rc = DKV_ERR_WRONG_SERVER;
		else if (need_sync && s->synced_view != v.viewnum)
			rc = PB_ERR_NEED_STATE;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static void handle_fwd_get(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_fwd_get_args *args = argp;
	pb_reply *res = resp;
	/* Nothing to change: agreeing that the sender is still primary is the point. */
	res->err = check_from_primary(s, &args->view, true);
}

static void handle_fwd_putappend(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_fwd_putappend_args *args = argp;
	pb_reply *res = resp;
	if (args->a.op != PB_OP_PUT && args->a.op != PB_OP_APPEND) {
		res->err = DKV_ERR_INVAL;
		return;
	}
	int rc = check_from_primary(s, &args->view, true);
	if (rc != DKV_OK) {
		res->err = rc;
		return;
	}
	if (!lane_enter(s)) {
		res->err = DKV_ERR_KILLED;
		return;
	}
	/* The view may have moved while we waited for the lane. */
	rc = check_from_primary(s, &args->view, true);
	if (rc == DKV_OK)
		rc = apply_putappend(s, &args->a);
	lane_exit(s);
	res->err = rc;
}

static void handle_fwd_open(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_fwd_open_args *args = argp;
	pb_reply *res = resp;
	int rc = check_from_primary(s, &args->view, true);
	if (rc != DKV_OK) {
		res->err = rc;
		return;
	}
	if (args->id == 0 || args->id >= PB_SESSION_ID_MAX) {
		res->err = DKV_ERR_INVAL;
		return;
	}
	if (!lane_enter(s)) {
		res->err = DKV_ERR_KILLED;
		return;
	}
	rc = check_from_primary(s, &args->view, true);
	if (rc == DKV_OK)
		rc = apply_open(s, args->id);
	lane_exit(s);
	res->err = rc;
}

static void handle_transfer(void *inst, void *argp, void *resp)
{
	pbservice_server *s = inst;
	pb_transfer_args *args = argp;
	pb_reply *res = resp;
	int rc = check_from_primary(s, &args->view, false);
	if (rc != DKV_OK) {
		res->err = rc;
		return;
	}
	/* Build the new store from the decoded strings, taking them over. */
	pb_store *kv = pb_store_new();
	dkv_sessions *sess = dkv_sessions_decode(args->sessions.sessions_val,
	                                         args->sessions.sessions_len, PB_SESSION_CAP);
	rc = kv == NULL ? DKV_ERR_NOMEM
	     : sess == NULL ? (errno == ENOMEM ? DKV_ERR_NOMEM : DKV_ERR_INVAL)
	                    : DKV_OK;
	for (u_int i = 0; rc == DKV_OK && i < args->kvs.kvs_len; i++) {
		pb_kv *e = &args->kvs.kvs_val[i];
		if (e->key == NULL || e->value == NULL)
			continue;
		rc = pb_store_put_owned(kv, e->key, e->value);
		if (rc == DKV_OK)
			e->key = e->value = NULL; /* ours now: xdr_free skips NULLs */
	}
	if (rc == DKV_OK && !lane_enter(s))
		rc = DKV_ERR_KILLED;
	if (rc == DKV_OK) {
		rc = check_from_primary(s, &args->view, false);
		if (rc == DKV_OK) {
			pb_store *okv = s->kv;
			dkv_sessions *osess = s->sess;
			pthread_mutex_lock(&s->mu);
			s->kv = kv;
			s->sess = sess;
			s->next_session = args->next_session;
			s->synced_view = args->view.viewnum;
			s->has_state = true;
			pthread_mutex_unlock(&s->mu);
			kv = okv;
			sess = osess;
		}
		lane_exit(s);
	}
	pb_store_free(kv);
	dkv_sessions_free(sess);
	res->err = rc;
}

static const dkv_rpc_proc pb_procs[] = {
	{PB_GET, (xdrproc_t)xdr_pb_get_args, sizeof(pb_get_args), (xdrproc_t)xdr_pb_get_reply,
	 sizeof(pb_get_reply), handle_get},
	{PB_PUTAPPEND, (xdrproc_t)xdr_pb_putappend_args, sizeof(pb_putappend_args),
	 (xdrproc_t)xdr_pb_reply, sizeof(pb_reply), handle_putappend},
	{PB_FWD_GET, (xdrproc_t)xdr_pb_fwd_get_args, sizeof(pb_fwd_get_args),
	 (xdrproc_t)xdr_pb_reply, sizeof(pb_reply), handle_fwd_get},
	{PB_FWD_PUTAPPEND, (xdrproc_t)xdr_pb_fwd_putappend_args, sizeof(pb_fwd_putappend_args),
	 (xdrproc_t)xdr_pb_reply, sizeof(pb_reply), handle_fwd_putappend},
	{PB_TRANSFER, (xdrproc_t)xdr_pb_transfer_args, sizeof(pb_transfer_args),
	 (xdrproc_t)xdr_pb_reply, sizeof(pb_reply), handle_transfer},
	{PB_OPEN, (xdrproc_t)xdr_pb_open_args, sizeof(pb_open_args), (xdrproc_t)xdr_pb_open_reply,
	 sizeof(pb_open_reply), handle_open},
	{PB_FWD_OPEN, (xdrproc_t)xdr_pb_fwd_open_args, sizeof(pb_fwd_open_args),
	 (xdrproc_t)xdr_pb_reply, sizeof(pb_reply), handle_fwd_open},
};

/* ------------------------------------------------------------ the ticker */

/* The viewnum to ping with. A primary acknowledges a view only once its backup
 * holds its state; a server without legitimate data pings 0 (it restarted). */
static unsigned ping_viewnum_locked(const pbservice_server *s)
{
	if (strcmp(s->view.primary, s->me) == 0) {
		if (!s->has_state)
			return 0;
		if (s->view.backup[0] != '\0' && s->xfer_view != s->view.viewnum)
			return s->pinged;
	}
	return s->view.viewnum;
}

/* Ping the view service once and record the view. */
static void tick_ping(pbservice_server *s)
{
	vs_ping_args args;
	vs_view_reply res;
	vs_report_x rep;
	viewservice_view held;
	pthread_mutex_lock(&s->mu);
	args.viewnum = ping_viewnum_locked(s);
	s->pinged = args.viewnum;
	/* The report (vs_core.c, "Lost state"): the view we hold and whether we hold
	 * its data — as its primary, legitimate state; as its backup, the primary's
	 * state for exactly this view. */
	held = s->view;
	if (strcmp(held.primary, s->me) == 0)
		rep.data = s->has_state;
	else if (strcmp(held.backup, s->me) == 0)
		rep.data = s->has_state && s->synced_view == held.viewnum;
	else
		rep.data = false;
	pthread_mutex_unlock(&s->mu);
	rep.view.viewnum = held.viewnum;
	rep.view.primary = held.primary;
	rep.view.backup = held.backup;
	args.report = &rep;
	args.me = s->me;
	memset(&res, 0, sizeof(res));
	int rc = dkv_rpc_call(s->pool, s->vshost, VS_PROG, VS_VERS, VS_PING,
	                      (xdrproc_t)xdr_vs_ping_args, &args, (xdrproc_t)xdr_vs_view_reply, &res,
	                      PB_PING_TIMEOUT_MS);
	if (rc != DKV_OK)
		return;
	viewservice_view v;
	pb_view_x x = {res.view.viewnum, res.view.primary, res.view.backup};
	if (view_from_x(&v, &x)) {
		pthread_mutex_lock(&s->mu);
		if (v.viewnum > s->view.viewnum)
			DKV_DEBUG("pbservice %s: view %u (%s, %s)", s->me, v.viewnum, v.primary,
			          v.backup);
		adopt_view_locked(s, &v);
		/* The first primary starts the service: its empty store is the truth. A
		 * restarted lone primary is told "view 1, primary: you" as well, but by then
		 * its earlier incarnation has acknowledged view 1. */
		if (v.viewnum == 1 && strcmp(v.primary, s->me) == 0 && !res.acked &&
		    s->view.viewnum == 1)
			s->has_state = true;
		pthread_mutex_unlock(&s->mu);
	}
	xdr_free((xdrproc_t)xdr_vs_view_reply, (char *)&res);
}

/* As primary with a backup that lacks our state, send it now (when the lane is
 * free; otherwise the operation holding it will). */
static void tick_sync(pbservice_server *s)
{
	pthread_mutex_lock(&s->mu);
	bool need = is_primary_locked(s) && s->view.backup[0] != '\0' &&
	            s->xfer_view != s->view.viewnum;
	pthread_mutex_unlock(&s->mu);
	if (!need || !lane_try_enter(s))
		return;
	pthread_mutex_lock(&s->mu);
	viewservice_view v = s->view;
	need = is_primary_locked(s) && v.backup[0] != '\0' && s->xfer_view != v.viewnum;
	pthread_mutex_unlock(&s->mu);
	if (need)
		(void)transfer(s, &v);
	lane_exit(s);
}

static void *ticker_main(void *arg)
{
	pbservice_server *s = arg;
	uint64_t next = dkv_now_ms();
	for (;;) {
		tick_ping(s);
		tick_sync(s);
		pthread_mutex_lock(&s->mu);
		next += VIEWSERVICE_PING_INTERVAL_MS;
		uint64_t now = dkv_now_ms();
		if (next < now)
			next = now + VIEWSERVICE_PING_INTERVAL_MS;
		while (!s->dead && !s->ping_now && dkv_cond_wait_until(&s->tick_cv, &s->mu, next))
			;
		s->ping_now = false;
		bool dead = s->dead;
		pthread_mutex_unlock(&s->mu);
		if (dead)
			break;
	}
	return NULL;
}

/* ------------------------------------------------------------ lifecycle */

pbservice_server *pbservice_server_start(const char *vshost, const char *me)
{
	dkv_lib_init();
	if (vshost == NULL || me == NULL || me[0] == '\0' || vshost[0] == '\0' ||
	    strlen(me) >= DKV_NAME_MAX || strlen(vshost) >= DKV_NAME_MAX) {
		errno = EINVAL;
		return NULL;
	}
	pbservice_server *s = dkv_calloc(1, sizeof(*s));
	if (s == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	strcpy(s->me, me);
	strcpy(s->vshost, vshost);
	int err = ENOMEM;
	s->kv = pb_store_new();
	s->sess = dkv_sessions_new(PB_SESSION_CAP);
	s->pool = dkv_rpc_pool_new();
	if (s->kv == NULL || s->sess == NULL || s->pool == NULL)
		goto fail_alloc;
	if ((err = pthread_mutex_init(&s->mu, NULL)) != 0)
		goto fail_alloc;
	if ((err = pthread_mutex_init(&s->kill_mu, NULL)) != 0)
		goto fail_kill_mu;
	if ((err = dkv_cond_init(&s->lane_cv)) != 0)
		goto fail_lane_cv;
	if ((err = dkv_cond_init(&s->tick_cv)) != 0)
		goto fail_tick_cv;
	s->rpcs = dkv_rpc_server_listen(me);
	if (s->rpcs == NULL) {
		err = errno ? errno : EIO;
		goto fail_listen;
	}
	int rc = dkv_rpc_server_add(s->rpcs, PB_PROG, PB_VERS, pb_procs,
	                            sizeof(pb_procs) / sizeof(pb_procs[0]), s);
	if (rc != DKV_OK) {
		err = rc == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		goto fail_add;
	}
	if ((s->status = dkv_status_register(s->rpcs, pb_status_fill, s)) == NULL) {
		err = errno;
		goto fail_add;
	}
	if ((err = pthread_create(&s->ticker, NULL, ticker_main, s)) != 0) {
		dkv_status_unregister(s->status);
		goto fail_add;
	}
	DKV_DEBUG("pbservice %s: started (view service %s)", me, vshost);
	return s;

fail_add:
	dkv_rpc_server_free(s->rpcs);
fail_listen:
	pthread_cond_destroy(&s->tick_cv);
fail_tick_cv:
	pthread_cond_destroy(&s->lane_cv);
fail_lane_cv:
	pthread_mutex_destroy(&s->kill_mu);
fail_kill_mu:
	pthread_mutex_destroy(&s->mu);
fail_alloc:
	dkv_rpc_pool_free(s->pool);
	pb_store_free(s->kv);
	dkv_sessions_free(s->sess);
	free(s);
	errno = err;
	return NULL;
}

void pbservice_server_kill(pbservice_server *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->kill_mu);
	if (!s->killed) {
		pthread_mutex_lock(&s->mu);
		s->dead = true;
		pthread_cond_broadcast(&s->lane_cv);
		pthread_cond_broadcast(&s->tick_cv);
		pthread_mutex_unlock(&s->mu);
		/* Our calls in flight fail at once; new ones fail without dialing. */
		dkv_rpc_pool_shutdown(s->pool);
		/* Waits for the handlers in flight, which all see `dead` or a failed call. */
		dkv_rpc_server_kill(s->rpcs);
		pthread_join(s->ticker, NULL);
		s->killed = true;
		DKV_DEBUG("pbservice %s: killed", s->me);
	}
	pthread_mutex_unlock(&s->kill_mu);
}

void pbservice_server_free(pbservice_server *s)
{
	if (s == NULL)
		return;
	pbservice_server_kill(s);
	dkv_status_unregister(s->status);
	dkv_rpc_server_free(s->rpcs);
	dkv_rpc_pool_free(s->pool);
	pb_store_free(s->kv);
	dkv_sessions_free(s->sess);
	pthread_cond_destroy(&s->tick_cv);
	pthread_cond_destroy(&s->lane_cv);
	pthread_mutex_destroy(&s->kill_mu);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void pbservice_server_set_unreliable(pbservice_server *s, bool on)
{
	if (s != NULL)
		dkv_rpc_server_set_unreliable(s->rpcs, on);
}

size_t pbservice_server_session_count(pbservice_server *s)
{
	if (s == NULL || !lane_enter(s))
		return 0;
	size_t n = dkv_sessions_count(s->sess);
	lane_exit(s);
	return n;
}
