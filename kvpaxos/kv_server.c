/*
 * kvpaxos/kv_server.c — a kvpaxos replica: RPC handlers, the batcher, the
 * apply callback and the lifecycle.
 *
 * One dkv_rpc_server at servers[me] carries both the kvpaxos program and the
 * replica's Paxos peer (paxosrsm_make registers it there), so set_unreliable
 * drops both kinds of traffic, as in the lab.
 *
 * Request path (group commit, no thread of our own): a handler puts its op on
 * the pending queue and on the waiter table, then loops: while fewer than
 * KV_MAX_INFLIGHT batches are being agreed and ops are pending, it takes every
 * pending op (up to a batch limit), encodes them as one kv_logbatch and calls
 * paxosrsm_add_op_timeout with the lock released; otherwise it sleeps on its
 * own condition variable until its op is applied, it is asked to propose, its
 * deadline (the clerk's wait_ms) passes, or the replica is killed. A replica in
 * a minority thus answers DKV_ERR_TIMEOUT after wait_ms and the clerk tries
 * another. The apply callback (paxosrsm's applier thread, log order) decodes
 * each batch, applies its ops to the kv_store and completes every waiter of
 * (cid, seq) — whichever replica proposed the copy that landed first.
 * Lock order: kv->mu is never held across paxosrsm calls; apply takes kv->mu.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dkv/kvpaxos.h"
#include "dkv/paxosrsm.h"
#include "dkv_internal.h"
#include "kv_internal.h"
#include "kv_prot.h"
#include "kv_store.h"
#include "status.h"

/* How long a handler waits for agreement when the clerk does not say. */
#define KV_WAIT_DEFAULT_MS 1000u
#define KV_WAIT_MAX_MS 5000u
/* Batches being agreed at once by this replica. paxosrsm has one Paxos
 * instance of its own in flight at a time, so more buys nothing: measured with
 * bench_kvpaxos, 1 gives the largest batches and the best throughput. */
#define KV_MAX_INFLIGHT 1
/* Batch limits (a batch always takes at least one op). */
#define KV_BATCH_MAX_OPS 512u
#define KV_BATCH_MAX_BYTES (1u << 20)
/* Buckets of the waiter table (a power of two). */
#define KV_WAITER_BUCKETS 256u

/* One handler waiting for its op. Lives on the handler's stack. */
typedef struct kv_waiter {
	struct kv_waiter *pnext; /* pending queue (mu) */
	struct kv_waiter *hnext; /* waiter table chain (mu) */
	bool queued;             /* on the pending queue (mu) */
	bool done;               /* applied: err/value valid (mu) */
	int err;                 /* (mu) */
	char *value;             /* Get result, malloc'ed (mu) */
	pthread_cond_t cv;       /* signalled on done, kill, "please propose" */
	/* the op; strings borrowed from the RPC arguments */
	uint64_t cid, seq;
	int64_t born_ms;
	int kind;
	const char *key;
	const char *arg; /* "" for a Get */
} kv_waiter;

struct kvpaxos_server {
	pthread_mutex_t mu; /* guards the fields marked (mu) */
	/* Set at start, then read-only. */
	int me;
	dkv_rpc_server *rpcs;
	paxosrsm *rsm;
	dkv_status_reg *status;  /* the status program on rpcs */
	pthread_mutex_t kill_mu; /* serialises kvpaxos_server_kill */
	bool killed;             /* kill finished (kill_mu) */

	bool dead;                 /* (mu) */
	kv_store *store;           /* (mu) */
	kv_waiter *pend_head, *pend_tail; /* (mu) FIFO of ops not yet proposed */
	int inflight;              /* (mu) batches in paxosrsm_add_op_timeout */
	kv_waiter *waiters[KV_WAITER_BUCKETS]; /* (mu) by (cid, seq) */
	unsigned long nbatches, nops, napplied; /* (mu) counters */
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t waiter_bucket(uint64_t cid, uint64_t seq)
{
	uint64_t h = (cid ^ (seq * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
	return (size_t)(h >> 40) & (KV_WAITER_BUCKETS - 1);
}

/* ---------------------------------------------------------------- queues (mu held) */

static void waiter_link(kvpaxos_server *kv, kv_waiter *w)
{
	size_t b = waiter_bucket(w->cid, w->seq);
	w->hnext = kv->waiters[b];
	kv->waiters[b] = w;
	w->pnext = NULL;
	if (kv->pend_tail != NULL)
		kv->pend_tail->pnext = w;
	else
		kv->pend_head = w;
	kv->pend_tail = w;
	w->queued = true;
}

static void pending_remove(kvpaxos_server *kv, kv_waiter *w)
{
	kv_waiter *prev = NULL;
	for (kv_waiter *p = kv->pend_head; p != NULL; prev = p, p = p->pnext) {
		if (p != w)
			continue;
		if (prev != NULL)
			prev->pnext = p->pnext;
		else
			kv->pend_head = p->pnext;
		if (kv->pend_tail == p)
			kv->pend_tail = prev;
		break;
	}
	w->queued = false;
}

static void waiter_unlink(kvpaxos_server *kv, kv_waiter *w)
{
	if (w->queued)
		pending_remove(kv, w);
	kv_waiter **pp = &kv->waiters[waiter_bucket(w->cid, w->seq)];
	while (*pp != w)
		pp = &(*pp)->hnext;
	*pp = w->hnext;
}

/* Ask the oldest pending handler to propose, when a batch slot is free. */
static void poke_proposer(kvpaxos_server *kv)
{
	if (kv->pend_head != NULL && kv->inflight < KV_MAX_INFLIGHT)
		pthread_cond_signal(&kv->pend_head->cv);
}

/*
 * take_batch: dequeue pending ops (oldest first, within the batch limits) and
 * encode them as one kv_logbatch into a malloc'ed buffer (*buf, *len).
 * Returns DKV_OK or DKV_ERR_NOMEM (then nothing is dequeued).
 */
static int take_batch(kvpaxos_server *kv, char **buf, size_t *len)
{
	unsigned n = 0;
	size_t bytes = 0;
	for (kv_waiter *w = kv->pend_head; w != NULL && n < KV_BATCH_MAX_OPS; w = w->pnext) {
		size_t sz = strlen(w->key) + strlen(w->arg) + 64;
		if (n > 0 && bytes + sz > KV_BATCH_MAX_BYTES)
			break;
		bytes += sz;
		n++;
	}
	kv_logop *ops = dkv_calloc(n, sizeof *ops);
	if (ops == NULL)
		return DKV_ERR_NOMEM;
	kv_waiter *w = kv->pend_head;
	for (unsigned i = 0; i < n; i++, w = w->pnext) {
		ops[i].cid = w->cid;
		ops[i].seq = w->seq;
		ops[i].born_ms = w->born_ms;
		ops[i].kind = w->kind;
		ops[i].key = (char *)w->key;
		ops[i].value = (char *)w->arg;
	}
	kv_logbatch b = { .stamp_ms = wall_ms(), .ops = { .ops_len = n, .ops_val = ops } };
	unsigned long sz = xdr_sizeof((xdrproc_t)xdr_kv_logbatch, &b);
	char *out = dkv_malloc(sz);
	if (out == NULL) {
		free(ops);
		return DKV_ERR_NOMEM;
	}
	XDR x;
	xdrmem_create(&x, out, (u_int)sz, XDR_ENCODE);
	bool ok = xdr_kv_logbatch(&x, &b);
	xdr_destroy(&x);
	free(ops);
	if (!ok) {
		free(out);
		return DKV_ERR_NOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		w = kv->pend_head;
		kv->pend_head = w->pnext;
		w->queued = false;
	}
	if (kv->pend_head == NULL)
		kv->pend_tail = NULL;
	kv->nbatches++;
	kv->nops += n;
	*buf = out;
	*len = sz;
	return DKV_OK;
}

/*
 * submit: run `w` through the log and wait for its result, at most wait_ms
 * (a proposal this handler makes is bounded by the same deadline). Called
 * without mu.
 * Returns the op's result (w->value set for a Get), DKV_ERR_TIMEOUT or
 * DKV_ERR_KILLED.
 */
static int submit(kvpaxos_server *kv, kv_waiter *w, unsigned wait_ms)
{
	if (wait_ms == 0)
		wait_ms = KV_WAIT_DEFAULT_MS;
	if (wait_ms > KV_WAIT_MAX_MS)
		wait_ms = KV_WAIT_MAX_MS;
	uint64_t deadline = dkv_now_ms() + wait_ms;
	if (dkv_cond_init(&w->cv) != 0)
		return DKV_ERR_NOMEM;

	pthread_mutex_lock(&kv->mu);
	if (kv->dead) {
		pthread_mutex_unlock(&kv->mu);
		pthread_cond_destroy(&w->cv);
		return DKV_ERR_KILLED;
	}
	waiter_link(kv, w);
	int err = DKV_ERR_TIMEOUT;
	for (;;) {
		if (w->done) {
			err = w->err;
			break;
		}
		if (kv->dead) {
			err = DKV_ERR_KILLED;
			break;
		}
		uint64_t now = dkv_now_ms();
		if (now >= deadline)
			break;
		if (kv->pend_head != NULL && kv->inflight < KV_MAX_INFLIGHT) {
			char *buf;
			size_t len;
			if (take_batch(kv, &buf, &len) == DKV_OK) {
				kv->inflight++;
				pthread_mutex_unlock(&kv->mu);
				/* Bounded by our own deadline: the batch's other ops stay
				 * queued in paxosrsm and may still be applied afterwards. */
				int rc = paxosrsm_add_op_timeout(kv->rsm, buf, len, (unsigned)(deadline - now));
				free(buf);
				pthread_mutex_lock(&kv->mu);
				kv->inflight--;
				if (rc != DKV_OK)
					DKV_DEBUG("kvpaxos %d: batch not agreed: %s", kv->me, dkv_strerror(rc));
				poke_proposer(kv);
				continue;
			}
		}
		dkv_cond_wait_until(&w->cv, &kv->mu, deadline);
	}
	waiter_unlink(kv, w);
	poke_proposer(kv);
	pthread_mutex_unlock(&kv->mu);
	pthread_cond_destroy(&w->cv);
	if (w->value != NULL && err != DKV_OK) {
		free(w->value);
		w->value = NULL;
	}
	return err;
}

/* ---------------------------------------------------------------- apply */

/* Complete every waiter of (cid, seq, kind) with err and, for a Get, `value`
 * (taken by the first waiter, copied for the others). mu held. */
static void complete_waiters(kvpaxos_server *kv, const kv_logop *o, int err, char *value)
{
	const char *first = value;
	for (kv_waiter *w = kv->waiters[waiter_bucket(o->cid, o->seq)]; w != NULL; w = w->hnext) {
		if (w->cid != o->cid || w->seq != o->seq || w->kind != o->kind || w->done)
			continue;
		w->done = true;
		w->err = err;
		if (value != NULL) {
			w->value = value; /* the first waiter takes it */
			value = NULL;
		} else if (first != NULL) {
			/* a clerk's retry to this same replica: a second waiter */
			w->value = dkv_strdup(first);
			if (w->value == NULL)
				w->err = DKV_ERR_NOMEM;
		}
		pthread_cond_signal(&w->cv);
	}
	free(value);
}

static bool has_waiter(kvpaxos_server *kv, const kv_logop *o)
{
	for (kv_waiter *w = kv->waiters[waiter_bucket(o->cid, o->seq)]; w != NULL; w = w->hnext)
		if (w->cid == o->cid && w->seq == o->seq && w->kind == o->kind && !w->done)
			return true;
	return false;
}

/* paxosrsm apply callback: one agreed batch, in log order, one call at a time. */
static void kv_apply(void *ctx, const void *op, size_t len)
{
	kvpaxos_server *kv = ctx;
	kv_logbatch b;
	memset(&b, 0, sizeof b);
	XDR x;
	xdrmem_create(&x, (char *)op, (u_int)len, XDR_DECODE);
	bool ok = xdr_kv_logbatch(&x, &b);
	xdr_destroy(&x);
	if (!ok) {
		/* Only our own encoder writes the log: this is a bug or corruption. */
		DKV_ERROR("kvpaxos %d: undecodable log entry (%zu bytes) skipped", kv->me, len);
		xdr_free((xdrproc_t)xdr_kv_logbatch, (char *)&b);
		return;
	}
	pthread_mutex_lock(&kv->mu);
	kv_store_advance(kv->store, b.stamp_ms);
	for (u_int i = 0; i < b.ops.ops_len; i++) {
		kv_logop *o = &b.ops.ops_val[i];
		bool want = o->kind == KV_KIND_GET && has_waiter(kv, o);
		kv_store_op so = { .cid = o->cid, .seq = o->seq, .born_ms = o->born_ms,
		                   .kind = o->kind, .key = o->key, .value = o->value };
		char *value = NULL;
		int err = kv_store_apply(kv->store, &so, want ? &value : NULL);
		o->value = so.value; /* NULL if the store took it */
		if (err == DKV_ERR_NOMEM)
			DKV_ERROR("kvpaxos %d: out of memory applying an op: replica state may diverge",
			          kv->me);
		complete_waiters(kv, o, err, value);
		kv->napplied++;
	}
	pthread_mutex_unlock(&kv->mu);
	xdr_free((xdrproc_t)xdr_kv_logbatch, (char *)&b);
}

/* ---------------------------------------------------------------- handlers */

static bool valid_key(const char *key)
{
	return key != NULL && strnlen(key, DKV_KEY_MAX + 1) <= DKV_KEY_MAX;
}

static int64_t born_ms(unsigned age_ms)
{
	return wall_ms() - (int64_t)age_ms;
}

static void handle_get(void *inst, void *args, void *res)
{
	kvpaxos_server *kv = inst;
	const kv_get_args *a = args;
	kv_get_reply *r = res;
	kv_waiter w;
	memset(&w, 0, sizeof w);
	if (!valid_key(a->key)) {
		r->err = DKV_ERR_INVAL;
	} else {
		w.cid = a->cid;
		w.seq = a->seq;
		w.born_ms = born_ms(a->age_ms);
		w.kind = KV_KIND_GET;
		w.key = a->key;
		w.arg = "";
		r->err = submit(kv, &w, a->wait_ms);
	}
	r->value = w.value != NULL ? w.value : dkv_strdup("");
}

static void handle_putappend(void *inst, void *args, void *res)
{
	kvpaxos_server *kv = inst;
	const kv_putappend_args *a = args;
	kv_putappend_reply *r = res;
	if (!valid_key(a->key) || a->value == NULL ||
	    strnlen(a->value, (size_t)DKV_VALUE_MAX + 1) > DKV_VALUE_MAX ||
	    (a->kind != KV_KIND_PUT && a->kind != KV_KIND_APPEND)) {
		r->err = DKV_ERR_INVAL;
		return;
	}
	kv_waiter w;
	memset(&w, 0, sizeof w);
	w.cid = a->cid;
	w.seq = a->seq;
	w.born_ms = born_ms(a->age_ms);
	w.kind = a->kind;
	w.key = a->key;
	w.arg = a->value;
	r->err = submit(kv, &w, a->wait_ms);
}

static const dkv_rpc_proc kv_procs[] = {
	{ KV_GET, (xdrproc_t)xdr_kv_get_args, sizeof(kv_get_args), (xdrproc_t)xdr_kv_get_reply,
	  sizeof(kv_get_reply), handle_get },
	{ KV_PUTAPPEND, (xdrproc_t)xdr_kv_putappend_args, sizeof(kv_putappend_args),
	  (xdrproc_t)xdr_kv_putappend_reply, sizeof(kv_putappend_reply), handle_putappend },
};

/* ---------------------------------------------------------------- lifecycle */

/* kv_status_fill: what `dkvctl status` shows (the status program's callback). */
static void kv_status_fill(void *ctx, dkv_status *st)
{
	kvpaxos_server *kv = ctx;
	snprintf(st->service, sizeof st->service, "kvpaxos");
	st->me = kv->me;
	paxos *px = paxosrsm_paxos(kv->rsm);
	st->paxos_max = paxos_max(px);
	st->paxos_min = paxos_min(px);
	pthread_mutex_lock(&kv->mu);
	snprintf(st->role, sizeof st->role, "%s", kv->dead ? "stopped" : "voting");
	snprintf(st->detail, sizeof st->detail, "%lu ops applied in %lu batches", kv->napplied,
	         kv->nbatches);
	pthread_mutex_unlock(&kv->mu);
}

kvpaxos_server *kvpaxos_server_start_ttl(const char *const *servers, int n, int me,
                                         uint64_t ttl_ms)
{
	dkv_lib_init();
	if (servers == NULL || n <= 0 || me < 0 || me >= n || ttl_ms == 0) {
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
	pthread_mutex_init(&kv->mu, NULL);
	pthread_mutex_init(&kv->kill_mu, NULL);
	int err = ENOMEM;
	kv->store = kv_store_new(ttl_ms);
	if (kv->store == NULL)
		goto fail;
	kv->rpcs = dkv_rpc_server_listen(servers[me]);
	if (kv->rpcs == NULL) {
		err = errno;
		goto fail;
	}
	kv->rsm = paxosrsm_make(servers, n, me, kv->rpcs, kv_apply, kv);
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
	free(kv);
	errno = err;
	return NULL;
}

kvpaxos_server *kvpaxos_server_start(const char *const *servers, int n, int me)
{
	return kvpaxos_server_start_ttl(servers, n, me, KVPAXOS_CLIENT_TTL_MS);
}

void kvpaxos_server_kill(kvpaxos_server *kv)
{
	pthread_mutex_lock(&kv->kill_mu);
	if (!kv->killed) {
		/* 1. Waiting handlers answer DKV_ERR_KILLED; new ones refuse at once. */
		pthread_mutex_lock(&kv->mu);
		kv->dead = true;
		for (size_t b = 0; b < KV_WAITER_BUCKETS; b++)
			for (kv_waiter *w = kv->waiters[b]; w != NULL; w = w->hnext)
				pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&kv->mu);
		/* 2. Proposing handlers return from add_op; the applier is joined. */
		paxosrsm_kill(kv->rsm);
		/* 3. The endpoint: waits for the handlers still running, closes. */
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

void kvpaxos_server_get_stats(kvpaxos_server *kv, kvpaxos_server_stats *out)
{
	pthread_mutex_lock(&kv->mu);
	out->clients = kv_store_client_count(kv->store);
	out->keys = kv_store_key_count(kv->store);
	out->batches = kv->nbatches;
	out->ops = kv->nops;
	out->applied = kv->napplied;
	pthread_mutex_unlock(&kv->mu);
}

/* Interim: dir and restart land with the durability and replication-core work. */
kvpaxos_server *kvpaxos_server_start_opts(const char *const *servers, int n, int me,
                                          const dkv_server_opts *opts)
{
	if (!dkv_opts_plain(opts)) {
		errno = ENOTSUP;
		return NULL;
	}
	return kvpaxos_server_start(servers, n, me);
}
