/*
 * shardkv/replica.c — the replica object around the pure machine: the
 * engine's callbacks, submitting an op and reading its result, waking the
 * poller. Depends on machine.c; used by migrate.c and server.c.
 *
 * The callbacks run on paxosrsm's applier thread and take s->mu, so handlers
 * and the poller can read the state between two ops. After an op that changed
 * what the poller acts on (a new configuration, an installed shard, a
 * restored snapshot), the poller is woken at once. An op that cannot be
 * applied (out of memory) makes apply fail: the engine stops the replica,
 * with a log line, instead of letting it go on with a state its peers do not
 * have.
 */
#include <stdlib.h>
#include <string.h>

#include "skv_internal.h"

void skv_kick_locked(shardkv_server *s)
{
	s->kick = true;
	pthread_cond_signal(&s->tick_cv);
}

static int cb_apply(void *ctx, const void *op, size_t len, void **res, size_t *res_len)
{
	shardkv_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	unsigned long before = s->st.changes;
	int rc = skv_machine_apply(&s->st, op, len, res, res_len);
	if (s->st.changes != before)
		skv_kick_locked(s); /* pull at once, or look for the next config */
	pthread_mutex_unlock(&s->mu);
	if (rc != DKV_OK)
		DKV_ERROR("shardkv %s: cannot apply an agreed op (%s): stopping this replica", s->name,
		          dkv_strerror(rc));
	return rc;
}

static int cb_snapshot(void *ctx, void **buf, size_t *len)
{
	shardkv_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	int rc = skv_machine_snapshot(&s->st, buf, len);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static int cb_restore(void *ctx, const void *buf, size_t len)
{
	shardkv_server *s = ctx;
	pthread_mutex_lock(&s->mu);
	int rc = skv_machine_restore(&s->st, buf, len);
	if (rc == DKV_OK)
		skv_kick_locked(s);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

const paxosrsm_sm skv_machine = { cb_apply, cb_snapshot, cb_restore };

int skv_submit(shardkv_server *s, const skv_op *op, unsigned wait_ms, int *err, char **value)
{
	if (value != NULL)
		*value = NULL;
	void *buf = NULL, *res = NULL;
	size_t len = 0, res_len = 0;
	int rc = skv_xdr_encode((xdrproc_t)xdr_skv_op, (void *)op, &buf, &len);
	if (rc != DKV_OK)
		return rc;
	rc = paxosrsm_submit(s->rsm, NULL, buf, len, wait_ms, &res, &res_len);
	free(buf);
	if (rc != DKV_OK)
		return rc;
	skv_result r;
	rc = skv_xdr_decode((xdrproc_t)xdr_skv_result, res, res_len, &r, sizeof r);
	free(res);
	if (rc != DKV_OK)
		return DKV_ERR_NOMEM; /* no usable result: the caller cannot tell; it retries */
	*err = r.err;
	if (value != NULL && r.err == DKV_OK) {
		*value = r.value;
		r.value = NULL;
	}
	xdr_free((xdrproc_t)xdr_skv_result, (char *)&r);
	return DKV_OK;
}
