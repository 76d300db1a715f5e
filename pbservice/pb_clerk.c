/*
 * pbservice/pb_clerk.c — the primary/backup clerk.
 *
 * Every call goes through the one call helper (src/call.h, dkv_call_any) with a
 * list of one server: the cached primary. The clerk talks to the view service
 * only between rounds, i.e. after a failed attempt (an error reply, a timeout,
 * a refused connection), never per request: the helper sleeps its backoff
 * (1 ms doubling up to VIEWSERVICE_PING_INTERVAL_MS, jittered) and the
 * next_round hook asks the view service for the primary. Forever (the lab
 * semantics) or until the deadline set with pbservice_clerk_set_timeout.
 *
 * At-most-once: a clerk's Puts and Appends run in a session that the primary
 * opens for it (PB_OPEN, lazily, before its first write; ids are assigned in
 * increasing order by the primary and replicated), numbered 1, 2, 3, … in that
 * session; a retry re-sends the same number, and servers keep the last number
 * applied per session in the bounded session table. Gets are not numbered.
 * EXPIRED (the servers evicted our session): on the op's first attempt in the
 * session it cannot have been applied, so the clerk opens a new session and
 * sends it again; on a retried attempt it may have been applied before the
 * eviction, so the call returns DKV_ERR_EXPIRED.
 *
 * One attempt waits at most PB_CALL_TIMEOUT_MS for its reply: a primary answers
 * promptly unless the network delays it, and a late answer must not be mistaken
 * for a lost one too early (the lab's clients had no timeout at all).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "dkv/pbservice.h"
#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "pb_prot.h"

#define PB_CALL_TIMEOUT_MS 10000u

struct pbservice_clerk {
	char vshost[DKV_NAME_MAX];
	char me[DKV_NAME_MAX];   /* log label */
	char primary[DKV_NAME_MAX]; /* cached primary; "" = ask the view service */
	uint64_t sid;            /* session id; 0 = none opened yet */
	uint64_t seq;            /* last sequence number used in the session */
	unsigned timeout_ms;     /* 0: retry forever */
	viewservice_clerk *vs;
	dkv_rpc_pool *pool;
	const char *names[1];    /* {primary}: the call helper's list */
	dkv_call_servers srv;
};

pbservice_clerk *pbservice_clerk_new(const char *vshost, const char *me)
{
	dkv_lib_init();
	if (me == NULL)
		me = "";
	if (vshost == NULL || vshost[0] == '\0' || strlen(vshost) >= DKV_NAME_MAX ||
	    strlen(me) >= DKV_NAME_MAX) {
		errno = EINVAL;
		return NULL;
	}
	pbservice_clerk *ck = dkv_calloc(1, sizeof(*ck));
	if (ck == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	strcpy(ck->vshost, vshost);
	strcpy(ck->me, me);
	ck->vs = viewservice_clerk_new("", vshost);
	ck->pool = dkv_rpc_pool_new();
	if (ck->vs == NULL || ck->pool == NULL) {
		viewservice_clerk_free(ck->vs);
		dkv_rpc_pool_free(ck->pool);
		free(ck);
		errno = ENOMEM;
		return NULL;
	}
	ck->names[0] = ck->primary;
	dkv_call_servers_init(&ck->srv, ck->names, 0);
	return ck;
}

void pbservice_clerk_free(pbservice_clerk *ck)
{
	if (ck == NULL)
		return;
	viewservice_clerk_free(ck->vs);
	dkv_rpc_pool_free(ck->pool);
	free(ck);
}

void pbservice_clerk_set_timeout(pbservice_clerk *ck, unsigned ms)
{
	if (ck != NULL)
		ck->timeout_ms = ms;
}

/* Between rounds: ask the view service for the primary (the only place the
 * clerk talks to it). An empty answer makes the next round empty. */
static int next_round(void *ctx, dkv_call_servers *srv)
{
	pbservice_clerk *ck = ctx;
	if (ck->primary[0] != '\0')
		DKV_DEBUG("pbservice clerk %s: %s failed; asking the view service", ck->me,
		          ck->primary);
	(void)viewservice_clerk_primary(ck->vs, ck->primary, sizeof ck->primary);
	srv->n = ck->primary[0] != '\0' ? 1 : 0;
	srv->last = 0;
	return DKV_OK;
}

/* An open is final only when it gave an id; the server's NOMEM/INVAL: retry. */
static dkv_call_verdict classify_open(void *ctx, int *err, void *res)
{
	(void)ctx;
	const pb_open_reply *r = res;
	return *err == DKV_OK && r->id != 0 ? DKV_CALL_FINAL : DKV_CALL_NEXT;
}

/* One call at the primary, retried as the helper does. */
static int call(pbservice_clerk *ck, uint64_t deadline, rpcproc_t proc, xdrproc_t xargs,
                const void *args, xdrproc_t xres, void *res, size_t res_size,
                dkv_call_verdict (*classify)(void *, int *, void *), unsigned *sent)
{
	dkv_call_spec sp;
	memset(&sp, 0, sizeof sp);
	sp.prog = PB_PROG;
	sp.vers = PB_VERS;
	sp.proc = proc;
	sp.xdr_args = xargs;
	sp.args = args;
	sp.xdr_res = xres;
	sp.res_size = res_size;
	sp.rpc_ms = PB_CALL_TIMEOUT_MS;
	sp.backoff_min_ms = 1;
	sp.backoff_max_ms = VIEWSERVICE_PING_INTERVAL_MS;
	sp.ctx = ck;
	sp.classify = classify;
	sp.next_round = next_round;
	ck->srv.n = ck->primary[0] != '\0' ? 1 : 0;
	ck->srv.last = 0;
	return dkv_call_any(ck->pool, &ck->srv, deadline, &sp, res, sent);
}

/* Open a session at the primary. */
static int open_session(pbservice_clerk *ck, uint64_t deadline)
{
	pb_open_args a = {0};
	pb_open_reply res;
	int rc = call(ck, deadline, PB_OPEN, (xdrproc_t)xdr_pb_open_args, &a,
	              (xdrproc_t)xdr_pb_open_reply, &res, sizeof res, classify_open, NULL);
	if (rc == DKV_OK) {
		ck->sid = res.id;
		ck->seq = 0;
	}
	xdr_free((xdrproc_t)xdr_pb_open_reply, (char *)&res);
	return rc;
}

int pbservice_clerk_get(pbservice_clerk *ck, const char *key, char **value)
{
	if (value != NULL)
		*value = NULL;
	if (ck == NULL || key == NULL || value == NULL || strlen(key) > DKV_KEY_MAX)
		return DKV_ERR_INVAL;
	pb_get_args g;
	g.key = (char *)key;
	g.client = ck->sid;
	g.seq = 0;
	pb_get_reply res;
	int rc = call(ck, dkv_call_deadline(ck->timeout_ms), PB_GET, (xdrproc_t)xdr_pb_get_args, &g,
	              (xdrproc_t)xdr_pb_get_reply, &res, sizeof res, NULL, NULL);
	if (rc == DKV_OK || rc == DKV_ERR_NOKEY) {
		/* The decoded string is malloc'ed: hand it over. */
		*value = res.value != NULL ? res.value : strdup("");
		res.value = NULL;
		rc = *value != NULL ? DKV_OK : DKV_ERR_NOMEM;
	}
	xdr_free((xdrproc_t)xdr_pb_get_reply, (char *)&res);
	return rc;
}

static int putappend(pbservice_clerk *ck, const char *key, const char *value, int op)
{
	if (ck == NULL || key == NULL || value == NULL || strlen(key) > DKV_KEY_MAX ||
	    strlen(value) > DKV_VALUE_MAX)
		return DKV_ERR_INVAL;
	pb_putappend_args pa;
	pa.key = (char *)key;
	pa.value = (char *)value;
	pa.op = op;
	uint64_t deadline = dkv_call_deadline(ck->timeout_ms);
	for (int session = 0;; session++) {
		if (ck->sid == 0) {
			int rc = open_session(ck, deadline);
			if (rc != DKV_OK)
				return rc;
		}
		pa.client = ck->sid;
		pa.seq = ++ck->seq;
		unsigned sent = 0;
		pb_reply res;
		int rc = call(ck, deadline, PB_PUTAPPEND, (xdrproc_t)xdr_pb_putappend_args, &pa,
		              (xdrproc_t)xdr_pb_reply, &res, sizeof res, NULL, &sent);
		xdr_free((xdrproc_t)xdr_pb_reply, (char *)&res);
		if (rc != DKV_ERR_EXPIRED)
			return rc;
		ck->sid = 0; /* the next call (or the retry below) opens a new session */
		if (sent > 1 || session >= 2)
			return rc; /* a retried attempt: it may have been applied */
		/* The first attempt: the servers never had it under this session. */
	}
}

int pbservice_clerk_put(pbservice_clerk *ck, const char *key, const char *value)
{
	return putappend(ck, key, value, PB_OP_PUT);
}

int pbservice_clerk_append(pbservice_clerk *ck, const char *key, const char *value)
{
	return putappend(ck, key, value, PB_OP_APPEND);
}
