/*
 * viewservice/vs_server.c — the view service's RPC shell around vs_core.
 *
 * One dkv_rpc_server listens at `me` and serves VS_PING and VS_GET; each handler
 * decodes (done by libdkvrpc), locks, calls the core with the monotonic time,
 * unlocks and fills the reply — nothing else (STYLE P2). A ticker thread calls
 * vs_core_tick every VIEWSERVICE_PING_INTERVAL_MS on an absolute schedule; it
 * waits on a condition variable, so _kill wakes it at once instead of waiting out
 * a sleep.
 *
 * Locking: `mu` guards the core and `dead`. Handlers never block and make no
 * outgoing calls. Kill order: stop the listener (in-flight handlers finish, no
 * new ones start), then stop and join the ticker. `kill_mu` serialises concurrent
 * kills so every caller returns only once everything has stopped.
 * The RPC count is the listener's request counter (every call message received,
 * including those unreliable mode drops), which outlives kill.
 *
 * Durability (start_opts with a directory, vs_disk.h): after every ping or tick
 * that changed the view, its acknowledgement or the members' last pinged
 * viewnums, the state is written (and fsync'ed) under `mu` before the reply
 * goes out — a reply never reveals a view that is not on disk. A failed write
 * stops the service: from then on every reply is the empty view and the ticker
 * does nothing (the process owner sees the log line). Started again on the
 * directory, the service resumes at exactly the saved view.
 * Lost state (`restart` and no state to read — no directory, or a fresh one):
 * the core starts recovering (vs_core.c, "Lost state"); with a directory that
 * is recorded at once, so a later start on it is a restart as well.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "vs_core.h"
#include "vs_disk.h"
#include "vs_prot.h"
#include "vs_server_internal.h"

struct viewservice_server {
	pthread_mutex_t mu; /* guards every field down to `dead` */
	pthread_cond_t cv;  /* signalled on kill (wakes the ticker) */
	vs_core core;
	bool dead;
	vs_disk *disk;  /* NULL: memory only */
	vs_saved saved; /* what is on disk */
	bool failed;    /* a write failed: the service has stopped */

	/* Set once at start, read-only afterwards. */
	dkv_rpc_server *rpcs;
	pthread_t ticker;

	pthread_mutex_t kill_mu; /* serialises _kill; guards `killed` */
	bool killed;
};

/* Fill a reply view; the strings are malloc'ed because the RPC layer xdr_frees
 * the reply. On allocation failure a string stays NULL and the reply fails to
 * encode: the caller sees a failed call. */
static void fill_view(vs_view_x *x, const viewservice_view *v)
{
	x->viewnum = v->viewnum;
	x->primary = dkv_strdup(v->primary);
	x->backup = dkv_strdup(v->backup);
}

static void saved_of(const vs_core *c, vs_saved *st)
{
	memset(st, 0, sizeof(*st));
	vs_core_get(c, &st->view);
	st->acked = c->acked;
	st->recovering = c->recovering;
	st->p_last = st->view.primary[0] ? vs_core_last_viewnum(c, st->view.primary) : 0;
	st->b_last = st->view.backup[0] ? vs_core_last_viewnum(c, st->view.backup) : 0;
}

static bool saved_equal(const vs_saved *a, const vs_saved *b)
{
	return a->view.viewnum == b->view.viewnum && strcmp(a->view.primary, b->view.primary) == 0 &&
	       strcmp(a->view.backup, b->view.backup) == 0 && a->acked == b->acked &&
	       a->recovering == b->recovering && a->p_last == b->p_last && a->b_last == b->b_last;
}

/* After a change of the core: make it durable (mu held). False: the service
 * has stopped (the write failed now or before) and must reveal nothing. */
static bool persist_locked(viewservice_server *vs)
{
	if (vs->failed)
		return false;
	if (vs->disk == NULL)
		return true;
	vs_saved now;
	saved_of(&vs->core, &now);
	if (saved_equal(&now, &vs->saved))
		return true;
	int rc = vs_disk_save(vs->disk, &now);
	if (rc == ENOMEM)
		return false; /* nothing written: this reply reveals nothing, retry next time */
	if (rc != 0) {
		DKV_ERROR("viewservice: cannot write its state (%s): stopping", strerror(rc));
		vs->failed = true;
		return false;
	}
	vs->saved = now;
	return true;
}

/* Our wire report → the core's (false: a name does not fit). */
static bool report_from_x(vs_report *r, const vs_report_x *x)
{
	const char *p = x->view.primary ? x->view.primary : "";
	const char *b = x->view.backup ? x->view.backup : "";
	if (strlen(p) >= DKV_NAME_MAX || strlen(b) >= DKV_NAME_MAX)
		return false;
	memset(r, 0, sizeof(*r));
	r->view.viewnum = x->view.viewnum;
	strcpy(r->view.primary, p);
	strcpy(r->view.backup, b);
	r->data = x->data;
	return true;
}

static void handle_ping(void *inst, void *argp, void *resp)
{
	viewservice_server *vs = inst;
	const vs_ping_args *args = argp;
	vs_view_reply *res = resp;
	viewservice_view v;
	vs_report rep;
	bool has_rep = args->report != NULL && report_from_x(&rep, args->report);

	pthread_mutex_lock(&vs->mu);
	if (!vs->failed)
		(void)vs_core_ping_report(&vs->core, args->me, args->viewnum, has_rep ? &rep : NULL,
		                          dkv_now_ms(), &v);
	if (persist_locked(vs)) {
		res->acked = vs->core.acked;
	} else {
		memset(&v, 0, sizeof v);
		res->acked = false;
	}
	pthread_mutex_unlock(&vs->mu);
	fill_view(&res->view, &v);
}

static void handle_get(void *inst, void *argp, void *resp)
{
	viewservice_server *vs = inst;
	vs_view_reply *res = resp;
	viewservice_view v;
	(void)argp;

	pthread_mutex_lock(&vs->mu);
	vs_core_get(&vs->core, &v);
	res->acked = vs->core.acked;
	if (!persist_locked(vs)) {
		memset(&v, 0, sizeof v);
		res->acked = false;
	}
	pthread_mutex_unlock(&vs->mu);
	fill_view(&res->view, &v);
}

static const dkv_rpc_proc vs_procs[] = {
	{VS_PING, (xdrproc_t)xdr_vs_ping_args, sizeof(vs_ping_args),
	 (xdrproc_t)xdr_vs_view_reply, sizeof(vs_view_reply), handle_ping},
	{VS_GET, (xdrproc_t)xdr_vs_get_args, sizeof(vs_get_args),
	 (xdrproc_t)xdr_vs_view_reply, sizeof(vs_view_reply), handle_get},
};

static void *ticker_main(void *arg)
{
	viewservice_server *vs = arg;
	uint64_t next = dkv_now_ms() + VIEWSERVICE_PING_INTERVAL_MS;

	pthread_mutex_lock(&vs->mu);
	while (!vs->dead) {
		if (dkv_cond_wait_until(&vs->cv, &vs->mu, next))
			continue; /* woken (kill) or spurious: re-check */
		if (!vs->failed) {
			vs_core_tick(&vs->core, dkv_now_ms());
			(void)persist_locked(vs);
		}
		next += VIEWSERVICE_PING_INTERVAL_MS;
		uint64_t now = dkv_now_ms();
		if (next < now) /* we fell behind (a loaded machine): don't burst */
			next = now + VIEWSERVICE_PING_INTERVAL_MS;
	}
	pthread_mutex_unlock(&vs->mu);
	return NULL;
}

static viewservice_server *start_common(const char *me, const dkv_server_opts *opts)
{
	dkv_lib_init();
	if (me == NULL || me[0] == '\0' || strlen(me) >= DKV_NAME_MAX) {
		errno = EINVAL;
		return NULL;
	}
	viewservice_server *vs = dkv_calloc(1, sizeof(*vs));
	if (vs == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	int err = 0;
	uint64_t dead_ms = (uint64_t)VIEWSERVICE_PING_INTERVAL_MS * VIEWSERVICE_DEAD_PINGS;
	bool use_dir = opts != NULL && opts->dir != NULL && opts->dir[0] != '\0';
	bool restart = opts != NULL && opts->restart;
	bool found = false;
	vs_saved st;
	memset(&st, 0, sizeof st);
	if (use_dir) {
		err = vs_disk_open(opts->dir, me, opts->no_fsync, &vs->disk, &st, &found);
		if (err != 0) {
			DKV_ERROR("viewservice %s: cannot use directory %s: %s", me, opts->dir,
			          strerror(err));
			free(vs);
			errno = err;
			return NULL;
		}
	}
	if (found && !st.recovering) {
		vs_core_init(&vs->core, dead_ms);
		vs_core_restore(&vs->core, &st.view, st.acked, st.p_last, st.b_last, dkv_now_ms());
		DKV_INFO("viewservice %s: resumed at view %u (%s, %s)%s", me, st.view.viewnum,
		         st.view.primary, st.view.backup, st.acked ? "" : ", not acknowledged");
	} else if (restart || (found && st.recovering)) {
		vs_core_init_lost(&vs->core, dead_ms);
		DKV_WARN("viewservice %s: restarted without its state: no view until the last "
		         "view's primary and backup report it", me);
	} else {
		vs_core_init(&vs->core, dead_ms);
	}
	saved_of(&vs->core, &vs->saved);
	if (vs->disk != NULL && (!found || !saved_equal(&vs->saved, &st))) {
		/* Record a fresh or lost start at once: a later start on this
		 * directory then knows whether it had lost its state. */
		if ((err = vs_disk_save(vs->disk, &vs->saved)) != 0) {
			vs_disk_close(vs->disk);
			vs_core_destroy(&vs->core);
			free(vs);
			errno = err;
			return NULL;
		}
	}
	if ((err = pthread_mutex_init(&vs->mu, NULL)) != 0)
		goto fail_mu;
	if ((err = pthread_mutex_init(&vs->kill_mu, NULL)) != 0)
		goto fail_kill_mu;
	if ((err = dkv_cond_init(&vs->cv)) != 0)
		goto fail_cv;
	vs->rpcs = dkv_rpc_server_listen(me);
	if (vs->rpcs == NULL) {
		err = errno ? errno : EIO;
		goto fail_listen;
	}
	int rc = dkv_rpc_server_add(vs->rpcs, VS_PROG, VS_VERS, vs_procs,
	                            sizeof(vs_procs) / sizeof(vs_procs[0]), vs);
	if (rc != DKV_OK) {
		err = rc == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		goto fail_add;
	}
	if ((err = pthread_create(&vs->ticker, NULL, ticker_main, vs)) != 0)
		goto fail_add;
	DKV_DEBUG("viewservice %s: started", me);
	return vs;

fail_add:
	dkv_rpc_server_free(vs->rpcs);
fail_listen:
	pthread_cond_destroy(&vs->cv);
fail_cv:
	pthread_mutex_destroy(&vs->kill_mu);
fail_kill_mu:
	pthread_mutex_destroy(&vs->mu);
fail_mu:
	vs_core_destroy(&vs->core);
	vs_disk_close(vs->disk);
	free(vs);
	errno = err;
	return NULL;
}

viewservice_server *viewservice_server_start(const char *me)
{
	return start_common(me, NULL);
}

void viewservice_server_kill(viewservice_server *vs)
{
	if (vs == NULL)
		return;
	pthread_mutex_lock(&vs->kill_mu);
	if (!vs->killed) {
		/* No handler runs after this returns. */
		dkv_rpc_server_kill(vs->rpcs);
		pthread_mutex_lock(&vs->mu);
		vs->dead = true;
		pthread_cond_broadcast(&vs->cv);
		pthread_mutex_unlock(&vs->mu);
		pthread_join(vs->ticker, NULL);
		/* Release the directory: a new server may start on it now. */
		vs_disk_close(vs->disk);
		vs->disk = NULL;
		vs->killed = true;
	}
	pthread_mutex_unlock(&vs->kill_mu);
}

void viewservice_server_free(viewservice_server *vs)
{
	if (vs == NULL)
		return;
	viewservice_server_kill(vs);
	dkv_rpc_server_free(vs->rpcs);
	vs_core_destroy(&vs->core);
	pthread_cond_destroy(&vs->cv);
	pthread_mutex_destroy(&vs->kill_mu);
	pthread_mutex_destroy(&vs->mu);
	free(vs);
}

unsigned long viewservice_server_rpc_count(const viewservice_server *vs)
{
	return vs == NULL ? 0 : dkv_rpc_server_count(vs->rpcs);
}

void viewservice_server_peek(viewservice_server *vs, viewservice_view *out, bool *acked)
{
	pthread_mutex_lock(&vs->mu);
	vs_core_get(&vs->core, out);
	if (acked != NULL)
		*acked = vs->core.acked;
	pthread_mutex_unlock(&vs->mu);
}

viewservice_server *viewservice_server_start_opts(const char *me, const dkv_server_opts *opts)
{
	return start_common(me, opts);
}
