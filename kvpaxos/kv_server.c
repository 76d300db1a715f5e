/*
 * kvpaxos/kv_server.c — a kvpaxos replica: one handler per RPC over the
 * paxosrsm engine, and the state machine's three callbacks.
 *
 * One dkv_rpc_server at servers[me] carries the kvpaxos program, the
 * replica's Paxos peer and paxosrsm's snapshot program, so set_unreliable
 * drops every kind of traffic, as in the lab.
 *
 * Request path: a handler encodes its op (kv_store.h) and calls
 * paxosrsm_submit — the engine batches concurrent submits into shared Paxos
 * instances (the one batcher), applies the log in order through kv_apply, and
 * hands apply's result back to this very call. Put/Append carry the clerk's
 * (session, seq): the engine's session table applies each at most once and
 * answers a retry with the stored result; an unknown or expired session is
 * DKV_ERR_EXPIRED. A Get goes through the log without a session, so it sees
 * every write before it. No clock is read anywhere on this path.
 * A replica in a minority answers DKV_ERR_TIMEOUT after the clerk's wait_ms
 * and the clerk tries another. Lock order: kv->mu is taken only inside the
 * state-machine callbacks and for stats, never across an engine call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/kvpaxos.h"
#include "dkv/paxosrsm.h"
#include "dkv_internal.h"
#include "kv_internal.h"
#include "kv_prot.h"
#include "kv_store.h"
#include "rsm_ident.h"
#include "status.h"

/* How long a handler waits for agreement when the clerk does not say. */
#define KV_WAIT_DEFAULT_MS 1000u
#define KV_WAIT_MAX_MS 5000u

struct kvpaxos_server {
	pthread_mutex_t mu;      /* guards store and the counters */
	kv_store *store;
	unsigned long napplied, nsubmits;
	/* Set at start, then read-only. */
	int me;
	dkv_rpc_server *rpcs;
	paxosrsm *rsm;
	dkv_status_reg *status;  /* the status program on rpcs */
	char *dir;               /* opts->dir (malloc'ed; NULL: none), for status */
	pthread_mutex_t kill_mu; /* serialises kvpaxos_server_kill */
	bool killed;             /* kill finished (kill_mu) */
};

/* ---------------------------------------------------------------- state machine */

static int kv_apply(void *ctx, const void *op, size_t len, void **res, size_t *res_len)
{
	kvpaxos_server *kv = ctx;
	pthread_mutex_lock(&kv->mu);
	int rc = kv_store_apply(kv->store, op, len, res, res_len);
	if (rc == DKV_OK) kv->napplied++;
	pthread_mutex_unlock(&kv->mu);
	return rc;
}

static int kv_snapshot(void *ctx, void **buf, size_t *len)
{
	kvpaxos_server *kv = ctx;
	pthread_mutex_lock(&kv->mu);
	int rc = kv_store_snapshot(kv->store, buf, len);
	pthread_mutex_unlock(&kv->mu);
	return rc;
}

static int kv_restore(void *ctx, const void *buf, size_t len)
{
	kvpaxos_server *kv = ctx;
	pthread_mutex_lock(&kv->mu);
	int rc = kv_store_restore(kv->store, buf, len);
	pthread_mutex_unlock(&kv->mu);
	return rc;
}

static const paxosrsm_sm kv_sm = {kv_apply, kv_snapshot, kv_restore};

/* ---------------------------------------------------------------- handlers */

static bool valid_key(const char *key)
{
	return key != NULL && strnlen(key, DKV_KEY_MAX + 1) <= DKV_KEY_MAX;
}

static unsigned wait_of(unsigned w)
{
	if (w == 0) return KV_WAIT_DEFAULT_MS;
	return w > KV_WAIT_MAX_MS ? KV_WAIT_MAX_MS : w;
}

/* One op through the log; its result's error and (Get) value. */
static int run_op(kvpaxos_server *kv, const paxosrsm_client *cl, int kind, const char *key,
                  const char *value, unsigned wait_ms, char **out)
{
	void *op = NULL, *res = NULL;
	size_t len = 0, res_len = 0;
	int rc = kv_op_encode(kind, key, value, &op, &len);
	if (rc != DKV_OK) return rc;
	__atomic_add_fetch(&kv->nsubmits, 1, __ATOMIC_RELAXED);
	rc = paxosrsm_submit(kv->rsm, cl, op, len, wait_of(wait_ms), &res, &res_len);
	free(op);
	if (rc == DKV_OK) rc = kv_result_decode(res, res_len, out);
	free(res);
	return rc;
}

static void handle_get(void *inst, void *args, void *res)
{
	kvpaxos_server *kv = inst;
	const kv_get_args *a = args;
	kv_get_reply *r = res;
	char *v = NULL;
	r->err = valid_key(a->key) ? run_op(kv, NULL, KV_KIND_GET, a->key, "", a->wait_ms, &v)
	                           : DKV_ERR_INVAL;
	r->value = v != NULL ? v : dkv_strdup("");
}

static void handle_putappend(void *inst, void *args, void *res)
{
	kvpaxos_server *kv = inst;
	const kv_putappend_args *a = args;
	kv_putappend_reply *r = res;
	if (!valid_key(a->key) || a->value == NULL || a->session == 0 || a->seq == 0 ||
	    strnlen(a->value, (size_t)DKV_VALUE_MAX + 1) > DKV_VALUE_MAX ||
	    (a->kind != KV_KIND_PUT && a->kind != KV_KIND_APPEND)) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	paxosrsm_client cl = {.session = a->session, .seq = a->seq};
	r->err = run_op(kv, &cl, a->kind, a->key, a->value, a->wait_ms, NULL);
}

static void handle_open(void *inst, void *args, void *res)
{
	kvpaxos_server *kv = inst;
	const kv_open_args *a = args;
	kv_open_reply *r = res;
	uint64_t s = 0;
	r->err = paxosrsm_open_session(kv->rsm, wait_of(a->wait_ms), &s);
	r->session = s;
}

static const dkv_rpc_proc kv_procs[] = {
	{ KV_GET, (xdrproc_t)xdr_kv_get_args, sizeof(kv_get_args), (xdrproc_t)xdr_kv_get_reply,
	  sizeof(kv_get_reply), handle_get },
	{ KV_PUTAPPEND, (xdrproc_t)xdr_kv_putappend_args, sizeof(kv_putappend_args),
	  (xdrproc_t)xdr_kv_putappend_reply, sizeof(kv_putappend_reply), handle_putappend },
	{ KV_OPEN, (xdrproc_t)xdr_kv_open_args, sizeof(kv_open_args), (xdrproc_t)xdr_kv_open_reply,
	  sizeof(kv_open_reply), handle_open },
};

/* ---------------------------------------------------------------- status */

/* kv_status_fill: what `dkvctl status` shows (the status program's callback). */
static void kv_status_fill(void *ctx, dkv_status *st)
{
	kvpaxos_server *kv = ctx;
	paxosrsm_info in;
	paxosrsm_get_info(kv->rsm, &in); /* before kv->mu: the engine takes its own lock */
	dkv_status_set_rsm(st, &in);
	snprintf(st->service, sizeof st->service, "kvpaxos");
	st->me = kv->me;
	st->dir_bytes = dkv_status_dir_bytes(kv->dir);
	pthread_mutex_lock(&kv->mu);
	st->keys = (int64_t)kv_store_key_count(kv->store);
	snprintf(st->detail, sizeof st->detail, "%lu ops applied here, %lu snapshots sent, %lu restored",
	         kv->napplied, in.snapshots_sent, in.snapshots_restored);
	pthread_mutex_unlock(&kv->mu);
}

/* ---------------------------------------------------------------- lifecycle */

kvpaxos_server *kvpaxos_server_start_opts(const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts)
{
	dkv_lib_init();
	if (servers == NULL || n <= 0 || me < 0 || me >= n) {
		errno = EINVAL;
		return NULL;
	}
	for (int i = 0; i < n; i++) {
		if (servers[i] == NULL) {
			errno = EINVAL;
			return NULL;
		}
	}
	kvpaxos_server *kv = dkv_calloc(1, sizeof *kv);
	if (kv == NULL)
		return NULL;
	kv->me = me;
	kv->dir = opts && opts->dir ? strdup(opts->dir) : NULL; /* NULL: no DIR column */
	pthread_mutex_init(&kv->mu, NULL);
	pthread_mutex_init(&kv->kill_mu, NULL);
	int err = ENOMEM;
	kv->store = kv_store_new();
	if (kv->store == NULL)
		goto fail;
	kv->rpcs = dkv_rpc_server_listen(servers[me]);
	if (kv->rpcs == NULL) {
		err = errno;
		goto fail;
	}
	kv->rsm = paxosrsm_start_ident(servers, n, me, kv->rpcs, &kv_sm, kv, opts, "kvpaxos", 0);
	if (kv->rsm == NULL) {
		err = errno;
		goto fail;
	}
	if (dkv_rpc_server_add(kv->rpcs, KVPAXOS_PROG, KVPAXOS_VERS, kv_procs,
	                       sizeof kv_procs / sizeof kv_procs[0], kv) != DKV_OK) {
		err = EINVAL;
		goto fail;
	}
	if ((kv->status = dkv_status_register(kv->rpcs, kv_status_fill, kv)) == NULL) {
		err = errno;
		goto fail;
	}
	return kv;
fail:
	if (kv->rsm != NULL)
		paxosrsm_free(kv->rsm);
	dkv_rpc_server_free(kv->rpcs);
	kv_store_free(kv->store);
	pthread_mutex_destroy(&kv->mu);
	pthread_mutex_destroy(&kv->kill_mu);
	free(kv->dir);
	free(kv);
	errno = err;
	return NULL;
}

kvpaxos_server *kvpaxos_server_start(const char *const *servers, int n, int me)
{
	return kvpaxos_server_start_opts(servers, n, me, NULL);
}

void kvpaxos_server_kill(kvpaxos_server *kv)
{
	pthread_mutex_lock(&kv->kill_mu);
	if (!kv->killed) {
		/* 1. Waiting submits return DKV_ERR_KILLED; the applier is joined. */
		paxosrsm_kill(kv->rsm);
		/* 2. The endpoint: waits for the handlers still running, closes. */
		dkv_rpc_server_kill(kv->rpcs);
		kv->killed = true;
	}
	pthread_mutex_unlock(&kv->kill_mu);
}

void kvpaxos_server_free(kvpaxos_server *kv)
{
	if (kv == NULL)
		return;
	kvpaxos_server_kill(kv);
	dkv_status_unregister(kv->status);
	paxosrsm_free(kv->rsm);
	dkv_rpc_server_free(kv->rpcs);
	kv_store_free(kv->store);
	pthread_mutex_destroy(&kv->mu);
	pthread_mutex_destroy(&kv->kill_mu);
	free(kv->dir);
	free(kv);
}

void kvpaxos_server_set_unreliable(kvpaxos_server *kv, bool on)
{
	dkv_rpc_server_set_unreliable(kv->rpcs, on);
}

paxos *kvpaxos_server_paxos(kvpaxos_server *kv)
{
	return paxosrsm_paxos(kv->rsm);
}

paxosrsm *kvpaxos_server_rsm(kvpaxos_server *kv)
{
	return kv->rsm;
}

void kvpaxos_server_get_stats(kvpaxos_server *kv, kvpaxos_server_stats *out)
{
	paxosrsm_info in;
	paxosrsm_get_info(kv->rsm, &in);
	pthread_mutex_lock(&kv->mu);
	out->clients = in.sessions;
	out->keys = kv_store_key_count(kv->store);
	out->batches = 0;
	out->ops = __atomic_load_n(&kv->nsubmits, __ATOMIC_RELAXED);
	out->applied = kv->napplied;
	pthread_mutex_unlock(&kv->mu);
}
