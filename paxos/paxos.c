/*
 * paxos/paxos.c — the Paxos peer: lifecycle, instance table, Done/Min/Max,
 * and the RPC handlers (PREPARE, ACCEPT, DECIDED).
 *
 * State: one mutex (px->mu) guards everything: the instance table (a sorted
 * array; appends are the common case, lookups binary-search), the Done
 * vector, max/min, the range-promise floor, the job queue and the workers.
 * Handlers: note the sender's Done vector, lock, call the acceptor core.
 * Done/Min: every message and reply carries the Done values its sender knows
 * (merged by max, so they spread transitively); min = min(dones) + 1 and
 * every instance below it is freed at once; requests below min get FORGOTTEN
 * and create nothing. Max is its own counter: forgetting never lowers it.
 * Range promises (Multi-Paxos phase 1, see proposer.c): one floor
 * (floor_seq, floor_n), applied to an instance's n_p whenever it is touched
 * (px_get_locked): the same as promising floor_n to all instances >= floor_seq.
 * Threads: paxos_start queues a job for a pool of proposer workers, adding a
 * worker when the queue outgrows the idle ones (a job stuck in a minority
 * keeps its worker); spare idle workers exit; paxos_kill makes in-flight
 * calls fail fast, then joins them all. Decisions go to an optional hook
 * (paxosrsm's wake-up) and px->cv.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "paxos_internal.h"

/* ---------------------------------------------------------------- table */

/* index of the first instance with seq >= `seq` */
static size_t lower_bound(const paxos *px, int seq)
{
	size_t lo = 0, hi = px->ninst;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (px->insts[mid]->seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

px_inst *px_find_locked(paxos *px, int seq)
{
	size_t i = lower_bound(px, seq);
	if (i < px->ninst && px->insts[i]->seq == seq) return px->insts[i];
	return NULL;
}

/* The range promise applies to every instance at or above floor_seq. */
static px_inst *floored(paxos *px, px_inst *in)
{
	if (in->seq >= px->floor_seq && in->n_p < px->floor_n) in->n_p = px->floor_n;
	return in;
}

px_inst *px_get_locked(paxos *px, int seq)
{
	if (seq < px->min_seq || seq < 0) return NULL;
	size_t i = lower_bound(px, seq);
	if (i < px->ninst && px->insts[i]->seq == seq) return floored(px, px->insts[i]);
	if (px->ninst == px->cap) {
		size_t ncap = px->cap ? px->cap * 2 : 64;
		px_inst **ni = dkv_realloc(px->insts, ncap * sizeof *ni);
		if (!ni) return NULL;
		px->insts = ni;
		px->cap = ncap;
	}
	px_inst *in = dkv_calloc(1, sizeof *in);
	if (!in) return NULL;
	in->seq = seq;
	memmove(&px->insts[i + 1], &px->insts[i], (px->ninst - i) * sizeof *px->insts);
	px->insts[i] = in;
	px->ninst++;
	px_note_seq_locked(px, seq);
	return floored(px, in);
}

bool px_range_promise_locked(paxos *px, int from, uint64_t n, int **busy, u_int *nbusy)
{
	*busy = NULL;
	*nbusy = 0;
	if (n <= px->floor_n || from < px->min_seq) return false;
	size_t k = lower_bound(px, from + 1), cnt = 0;
	for (size_t i = k; i < px->ninst; i++) {
		px_inst *in = px->insts[i];
		if (in->n_a || in->v_d || in->n_p > n) cnt++;
	}
	if (cnt) {
		*busy = malloc(cnt * sizeof **busy);
		if (!*busy) return false;
		for (size_t i = k; i < px->ninst; i++) {
			px_inst *in = px->insts[i];
			if (in->n_a || in->v_d || in->n_p > n) (*busy)[(*nbusy)++] = in->seq;
		}
	}
	/* Promising more than asked (down to an older floor) is safe: it only
	 * makes lower-numbered proposals there fail and retry higher. */
	px->floor_n = n;
	if (from < px->floor_seq) px->floor_seq = from;
	return true;
}

static void inst_free(px_inst *in)
{
	px_blob_unref(in->v_a);
	px_blob_unref(in->v_d);
	free(in);
}

void px_note_seq_locked(paxos *px, int seq)
{
	if (seq > px->max_seq) px->max_seq = seq;
}

/* Free every instance below min_seq. */
static void forget_locked(paxos *px)
{
	size_t k = lower_bound(px, px->min_seq);
	if (k == 0) return;
	for (size_t i = 0; i < k; i++) inst_free(px->insts[i]);
	memmove(px->insts, &px->insts[k], (px->ninst - k) * sizeof *px->insts);
	px->ninst -= k;
	if (px->ninst == 0 && px->cap > 256) {
		free(px->insts);
		px->insts = NULL;
		px->cap = 0;
	}
	pthread_cond_broadcast(&px->cv);
}

/* Recompute min from the Done vector and forget what fell below it. */
static void update_min_locked(paxos *px)
{
	int m = px->dones[0];
	for (int i = 1; i < px->npeers; i++)
		if (px->dones[i] < m) m = px->dones[i];
	if (m + 1 > px->min_seq) {
		px->min_seq = m + 1;
		forget_locked(px);
	}
}

void px_note_done_locked(paxos *px, int from, int done)
{
	if (from < 0 || from >= px->npeers || done <= px->dones[from]) return;
	px->dones[from] = done;
	update_min_locked(px);
}

void px_note_dones_locked(paxos *px, const int *d, unsigned n)
{
	if (!d || n != (unsigned)px->npeers) return; /* not from our group: ignore */
	bool changed = false;
	for (int i = 0; i < px->npeers; i++) {
		if (d[i] > px->dones[i]) {
			px->dones[i] = d[i];
			changed = true;
		}
	}
	if (changed) update_min_locked(px);
}

bool px_dones_copy_locked(paxos *px, int **val, u_int *len)
{
	*val = malloc((size_t)px->npeers * sizeof **val);
	if (!*val) {
		*len = 0;
		return false;
	}
	memcpy(*val, px->dones, (size_t)px->npeers * sizeof **val);
	*len = (u_int)px->npeers;
	return true;
}

bool px_learn_locked(paxos *px, int seq, px_blob *v)
{
	px_note_seq_locked(px, seq);
	px_inst *in = px_get_locked(px, seq);
	if (!in || in->v_d) return false;
	in->v_d = px_blob_ref(v);
	pthread_cond_broadcast(&px->cv);
	return true;
}

void px_fire_hook(paxos *px, int seq)
{
	if (px->hook) px->hook(px->hook_ctx, seq);
}

/* ---------------------------------------------------------------- handlers */

/* A malloc'ed copy of b for an XDR reply (freed by the RPC layer). */
static bool copy_out(px_value *out, const px_blob *b)
{
	out->px_value_val = malloc(b->len ? b->len : 1);
	if (!out->px_value_val) return false;
	if (b->len) memcpy(out->px_value_val, b->data, b->len);
	out->px_value_len = (u_int)b->len;
	return true;
}

static void handle_prepare(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	const px_prepare_args *a = argp;
	px_prepare_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	px_note_dones_locked(px, a->dones.dones_val, a->dones.dones_len);
	r->status = PX_ST_REJECT;
	if (!px->dead && a->seq >= 0) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (a->seq < px->min_seq) {
			r->status = PX_ST_FORGOTTEN;
		} else if (in && in->v_d) {
			if (copy_out(&r->v, in->v_d)) {
				r->status = PX_ST_DECIDED;
				r->has_value = TRUE;
			}
		} else if (in) {
			px_promise pr;
			px_acceptor_prepare(in, a->n, &pr);
			r->status = pr.status;
			r->n = pr.n;
			if (pr.status == PX_ST_OK && pr.v) {
				if (copy_out(&r->v, pr.v))
					r->has_value = TRUE;
				else
					r->status = PX_ST_REJECT; /* ENOMEM: a lost reply, in effect */
			}
			if (r->status == PX_ST_OK && a->range)
				r->range_ok = px_range_promise_locked(px, a->seq, a->n, &r->busy.busy_val,
				                                      &r->busy.busy_len);
		}
	}
	px_dones_copy_locked(px, &r->dones.dones_val, &r->dones.dones_len);
	pthread_mutex_unlock(&px->mu);
}

static void handle_accept(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	px_accept_args *a = argp;
	px_accept_reply *r = resp;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	px_note_dones_locked(px, a->dones.dones_val, a->dones.dones_len);
	r->status = PX_ST_REJECT;
	if (!px->dead && a->seq >= 0) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (a->seq < px->min_seq) {
			r->status = PX_ST_FORGOTTEN;
		} else if (in && !px_acceptor_can_accept(in, a->n)) {
			r->n = in->n_p;
		} else if (in) {
			/* Share the decided/accepted copy when the value is the same;
			 * else take the decoded buffer over (the layer then frees NULL). */
			px_blob *b = NULL;
			if (in->v_d && px_blob_equal(in->v_d, a->v.px_value_val, a->v.px_value_len))
				b = px_blob_ref(in->v_d);
			else if (in->v_a && px_blob_equal(in->v_a, a->v.px_value_val, a->v.px_value_len))
				b = px_blob_ref(in->v_a);
			else if ((b = px_blob_adopt(a->v.px_value_val, a->v.px_value_len)) != NULL) {
				a->v.px_value_val = NULL;
				a->v.px_value_len = 0;
			}
			if (b) {
				r->status = px_acceptor_accept(in, a->n, b, &r->n);
				px_blob_unref(b);
			}
		}
	}
	px_dones_copy_locked(px, &r->dones.dones_val, &r->dones.dones_len);
	pthread_mutex_unlock(&px->mu);
}

static void handle_decided(void *inst, void *argp, void *resp)
{
	paxos *px = inst;
	px_decided_args *a = argp;
	px_decided_reply *r = resp;
	bool news = false;
	__atomic_add_fetch(&px->rpc_count, 1, __ATOMIC_RELAXED);

	pthread_mutex_lock(&px->mu);
	px_note_dones_locked(px, a->dones.dones_val, a->dones.dones_len);
	if (!px->dead && a->seq >= px->min_seq && a->seq >= 0) {
		px_note_seq_locked(px, a->seq);
		px_inst *in = px_get_locked(px, a->seq);
		if (in && !in->v_d) {
			px_blob *b = NULL;
			if (in->v_a && px_blob_equal(in->v_a, a->v.px_value_val, a->v.px_value_len))
				b = px_blob_ref(in->v_a);
			else if ((b = px_blob_adopt(a->v.px_value_val, a->v.px_value_len)) != NULL) {
				a->v.px_value_val = NULL;
				a->v.px_value_len = 0;
			}
			if (b) {
				news = px_learn_locked(px, a->seq, b);
				px_blob_unref(b);
			}
		}
	}
	px_dones_copy_locked(px, &r->dones.dones_val, &r->dones.dones_len);
	pthread_mutex_unlock(&px->mu);
	if (news) px_fire_hook(px, a->seq);
}

static const dkv_rpc_proc px_procs[] = {
	{PX_PREPARE, (xdrproc_t)xdr_px_prepare_args, sizeof(px_prepare_args),
	 (xdrproc_t)xdr_px_prepare_reply, sizeof(px_prepare_reply), handle_prepare},
	{PX_ACCEPT, (xdrproc_t)xdr_px_accept_args, sizeof(px_accept_args),
	 (xdrproc_t)xdr_px_accept_reply, sizeof(px_accept_reply), handle_accept},
	{PX_DECIDED, (xdrproc_t)xdr_px_decided_args, sizeof(px_decided_args),
	 (xdrproc_t)xdr_px_decided_reply, sizeof(px_decided_reply), handle_decided},
};

/* ---------------------------------------------------------------- lifecycle */

/* Free the queued jobs (after kill). */
static void drop_jobs_locked(paxos *px)
{
	while (px->jobs) {
		px_job *j = px->jobs;
		px->jobs = j->next;
		px_blob_unref(j->v);
		free(j);
	}
	px->jobs_tail = NULL;
	px->njobs = 0;
}

static void px_release(paxos *px)
{
	for (size_t i = 0; i < px->ninst; i++) inst_free(px->insts[i]);
	free(px->insts);
	if (px->peers)
		for (int i = 0; i < px->npeers; i++) free(px->peers[i]);
	free(px->peers);
	free(px->dones);
	free(px->fail_until);
	free(px->unsafe);
	dkv_rpc_pool_free(px->pool);
	if (px->own_srv) dkv_rpc_server_free(px->srv);
	drop_jobs_locked(px);
	pthread_cond_destroy(&px->cv);
	pthread_cond_destroy(&px->work_cv);
	pthread_mutex_destroy(&px->mu);
	pthread_mutex_destroy(&px->kill_mu);
	free(px);
}

paxos *px_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
               px_decide_hook hook, void *hook_ctx)
{
	dkv_lib_init();
	if (!peers || npeers <= 0 || npeers >= (1 << PX_ROUND_SHIFT) || me < 0 || me >= npeers) {
		errno = EINVAL;
		return NULL;
	}
	for (int i = 0; i < npeers; i++) {
		if (!peers[i] || strlen(peers[i]) >= DKV_NAME_MAX) {
			errno = EINVAL;
			return NULL;
		}
	}
	paxos *px = dkv_calloc(1, sizeof *px);
	if (!px) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&px->mu, NULL);
	pthread_mutex_init(&px->kill_mu, NULL);
	int err = dkv_cond_init(&px->cv);
	if (!err && (err = dkv_cond_init(&px->work_cv)) != 0) pthread_cond_destroy(&px->cv);
	if (err) {
		pthread_mutex_destroy(&px->mu);
		pthread_mutex_destroy(&px->kill_mu);
		free(px);
		errno = err;
		return NULL;
	}
	px->npeers = npeers;
	px->me = me;
	px->max_seq = -1;
	px->min_seq = 0;
	px->floor_seq = INT_MAX;
	px->hook = hook;
	px->hook_ctx = hook_ctx;
	dkv_rng_seed(&px->rng, dkv_random_seed());
	px->peers = dkv_calloc((size_t)npeers, sizeof *px->peers);
	px->dones = dkv_malloc((size_t)npeers * sizeof *px->dones);
	px->fail_until = dkv_calloc((size_t)npeers, sizeof *px->fail_until);
	px->pool = dkv_rpc_pool_new();
	if (!px->peers || !px->dones || !px->fail_until || !px->pool) goto nomem;
	for (int i = 0; i < npeers; i++) {
		px->dones[i] = -1;
		if (!(px->peers[i] = dkv_strdup(peers[i]))) goto nomem;
	}
	if (rpcs) {
		px->srv = rpcs;
	} else {
		px->srv = dkv_rpc_server_listen(peers[me]);
		if (!px->srv) {
			err = errno ? errno : EIO;
			px_release(px);
			errno = err;
			return NULL;
		}
		px->own_srv = true;
	}
	err = dkv_rpc_server_add(px->srv, PX_PROG, PX_VERS, px_procs,
	                         sizeof px_procs / sizeof px_procs[0], px);
	if (err != DKV_OK) {
		px_release(px);
		errno = err == DKV_ERR_NOMEM ? ENOMEM : EINVAL;
		return NULL;
	}
	return px;

nomem:
	px_release(px);
	errno = ENOMEM;
	return NULL;
}

paxos *paxos_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs)
{
	return px_make(peers, npeers, me, rpcs, NULL, NULL);
}

/* Join the worker threads that have finished (all of them if `all`). */
static void reap(paxos *px, bool all)
{
	px_worker *done = NULL;
	pthread_mutex_lock(&px->mu);
	px_worker **pp = &px->workers;
	while (*pp) {
		px_worker *w = *pp;
		if (all || w->finished) {
			*pp = w->next;
			w->next = done;
			done = w;
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&px->mu);
	while (done) {
		px_worker *w = done;
		done = w->next;
		pthread_join(w->tid, NULL);
		free(w);
	}
}

void paxos_start(paxos *px, int seq, const void *value, size_t len)
{
	if (!px || seq < 0) return;
	reap(px, false);
	px_blob *v = px_blob_copy(value, len);
	px_job *j = dkv_calloc(1, sizeof *j);
	if (!v || !j) {
		DKV_WARN("paxos_start(%d): out of memory", seq);
		px_blob_unref(v);
		free(j);
		return;
	}
	j->seq = seq;
	j->v = v;

	pthread_mutex_lock(&px->mu);
	px_inst *in = NULL;
	if (!px->dead && seq >= px->min_seq) {
		px_note_seq_locked(px, seq);
		in = px_get_locked(px, seq);
	}
	if (!in || in->v_d || in->proposing) {
		pthread_mutex_unlock(&px->mu);
		px_blob_unref(v);
		free(j);
		return;
	}
	in->proposing = true;
	if (px->jobs_tail)
		px->jobs_tail->next = j;
	else
		px->jobs = j;
	px->jobs_tail = j;
	px->njobs++;
	if (px->njobs > px->nidle) {
		/* every idle worker is spoken for: add one (under the lock, so that
		 * paxos_kill always finds a joinable tid) */
		px_worker *w = dkv_calloc(1, sizeof *w);
		if (w) w->px = px;
		int err = w ? pthread_create(&w->tid, NULL, px_worker_main, w) : ENOMEM;
		if (err) {
			free(w);
			DKV_WARN("paxos_start(%d): no worker thread: %s", seq, strerror(err));
		} else {
			w->next = px->workers;
			px->workers = w;
		}
	} else {
		pthread_cond_signal(&px->work_cv);
	}
	pthread_mutex_unlock(&px->mu);
}

paxos_fate paxos_status(paxos *px, int seq, void **value, size_t *len)
{
	if (value) *value = NULL;
	if (len) *len = 0;
	if (!px) return PAXOS_PENDING;
	paxos_fate f = PAXOS_PENDING;
	pthread_mutex_lock(&px->mu);
	if (seq < px->min_seq) {
		f = PAXOS_FORGOTTEN;
	} else {
		px_inst *in = px_find_locked(px, seq);
		if (in && in->v_d) {
			f = PAXOS_DECIDED;
			if (value) {
				char *c = malloc(in->v_d->len + 1);
				if (c) {
					if (in->v_d->len) memcpy(c, in->v_d->data, in->v_d->len);
					c[in->v_d->len] = '\0';
					*value = c;
					if (len) *len = in->v_d->len;
				}
			} else if (len) {
				*len = in->v_d->len;
			}
		}
	}
	pthread_mutex_unlock(&px->mu);
	return f;
}

void paxos_done(paxos *px, int seq)
{
	if (!px) return;
	pthread_mutex_lock(&px->mu);
	px_note_done_locked(px, px->me, seq);
	pthread_mutex_unlock(&px->mu);
}

int paxos_max(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	int m = px->max_seq;
	pthread_mutex_unlock(&px->mu);
	return m;
}

int paxos_min(paxos *px)
{
	pthread_mutex_lock(&px->mu);
	int m = px->min_seq;
	pthread_mutex_unlock(&px->mu);
	return m;
}

void paxos_kill(paxos *px)
{
	if (!px) return;
	pthread_mutex_lock(&px->kill_mu);
	if (px->killed) {
		pthread_mutex_unlock(&px->kill_mu);
		return;
	}
	pthread_mutex_lock(&px->mu);
	px->dead = true;
	pthread_cond_broadcast(&px->cv);
	pthread_cond_broadcast(&px->work_cv);
	pthread_mutex_unlock(&px->mu);
	/* No handler runs after this; then no proposer call lingers. */
	if (px->own_srv)
		dkv_rpc_server_kill(px->srv);
	else
		dkv_rpc_server_remove(px->srv, PX_PROG);
	dkv_rpc_pool_shutdown(px->pool);
	reap(px, true);
	pthread_mutex_lock(&px->mu);
	drop_jobs_locked(px);
	pthread_mutex_unlock(&px->mu);
	px->killed = true;
	pthread_mutex_unlock(&px->kill_mu);
}

void paxos_free(paxos *px)
{
	if (!px) return;
	paxos_kill(px);
	px_release(px);
}

void paxos_set_unreliable(paxos *px, bool on)
{
	if (px) dkv_rpc_server_set_unreliable(px->srv, on);
}

unsigned long paxos_rpc_count(const paxos *px)
{
	return __atomic_load_n(&px->rpc_count, __ATOMIC_RELAXED);
}

/* Interim: dir and restart land with the durability and replication-core work. */
paxos *paxos_make_opts(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                       const dkv_server_opts *opts)
{
	if (!dkv_opts_plain(opts)) {
		errno = ENOTSUP;
		return NULL;
	}
	return paxos_make(peers, npeers, me, rpcs);
}
