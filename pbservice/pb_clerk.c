/*
 * pbservice/pb_clerk.c — the primary/backup clerk.
 *
 * The clerk caches the primary's name and talks to the view service only after a
 * failed call (an error reply, a timeout, a refused connection), never per
 * request. A failed attempt clears the cache, sleeps a backoff that starts at
 * 1 ms and doubles up to VIEWSERVICE_PING_INTERVAL_MS, and tries again — forever
 * (the lab semantics) or until the deadline set with pbservice_clerk_set_timeout.
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

/* One attempt at the cached primary. */
static int attempt(pbservice_clerk *ck, const pb_get_args *g, const pb_putappend_args *pa,
                   char **value, unsigned timeout_ms)
{
	int rc;
	if (g != NULL) {
		pb_get_reply res;
		memset(&res, 0, sizeof(res));
		rc = dkv_rpc_call(ck->pool, ck->primary, PB_PROG, PB_VERS, PB_GET,
		                  (xdrproc_t)xdr_pb_get_args, g, (xdrproc_t)xdr_pb_get_reply, &res,
		                  timeout_ms);
		if (rc != DKV_OK)
			return rc;
		rc = res.err == DKV_ERR_NOMEM ? DKV_ERR_NET : res.err; /* the server's: retry */
		if (rc == DKV_OK || rc == DKV_ERR_NOKEY) {
			/* The decoded string is malloc'ed: hand it over. */
			*value = res.value != NULL ? res.value : strdup("");
			res.value = NULL;
			rc = *value != NULL ? DKV_OK : DKV_ERR_NOMEM;
		}
		xdr_free((xdrproc_t)xdr_pb_get_reply, (char *)&res);
		return rc;
	}
	pb_reply res = {0};
	rc = dkv_rpc_call(ck->pool, ck->primary, PB_PROG, PB_VERS, PB_PUTAPPEND,
	                  (xdrproc_t)xdr_pb_putappend_args, pa, (xdrproc_t)xdr_pb_reply, &res,
	                  timeout_ms);
	if (rc != DKV_OK)
		return rc;
	rc = res.err == DKV_ERR_NOMEM ? DKV_ERR_NET : res.err; /* the server's: retry */
	xdr_free((xdrproc_t)xdr_pb_reply, (char *)&res);
	return rc;
}

/* Open a session at the cached primary. */
static int open_session(pbservice_clerk *ck, unsigned timeout_ms)
{
	pb_open_args a = {0};
	pb_open_reply res;
	memset(&res, 0, sizeof(res));
	int rc = dkv_rpc_call(ck->pool, ck->primary, PB_PROG, PB_VERS, PB_OPEN,
	                      (xdrproc_t)xdr_pb_open_args, &a, (xdrproc_t)xdr_pb_open_reply, &res,
	                      timeout_ms);
	if (rc != DKV_OK)
		return rc;
	rc = res.err == DKV_ERR_NOMEM || res.err == DKV_ERR_INVAL ? DKV_ERR_NET : res.err;
	if (rc == DKV_OK && res.id == 0)
		rc = DKV_ERR_NET;
	if (rc == DKV_OK) {
		ck->sid = res.id;
		ck->seq = 0;
	}
	xdr_free((xdrproc_t)xdr_pb_open_reply, (char *)&res);
	return rc;
}

/* Retry one operation until it succeeds, fails for good, or the deadline passes.
 * A write (pa) with pa->client 0 is numbered here, in the clerk's session. */
static int run(pbservice_clerk *ck, const pb_get_args *g, pb_putappend_args *pa,
               char **value)
{
	uint64_t deadline = ck->timeout_ms ? dkv_now_ms() + ck->timeout_ms : 0;
	unsigned delay = 1;
	int tries = 0; /* attempts of this write in its current session */
	for (;;) {
		unsigned call_ms = PB_CALL_TIMEOUT_MS;
		if (deadline != 0) {
			uint64_t now = dkv_now_ms();
			if (now >= deadline)
				return DKV_ERR_TIMEOUT;
			if (deadline - now < call_ms)
				call_ms = (unsigned)(deadline - now);
		}
		if (ck->primary[0] == '\0')
			(void)viewservice_clerk_primary(ck->vs, ck->primary, sizeof ck->primary);
		if (ck->primary[0] != '\0') {
			int rc = DKV_OK;
			if (pa != NULL && pa->client == 0) {
				if (ck->sid == 0)
					rc = open_session(ck, call_ms);
				if (rc == DKV_OK) {
					pa->client = ck->sid;
					pa->seq = ++ck->seq;
					tries = 0;
				}
			}
			if (rc == DKV_OK) {
				if (pa != NULL)
					tries++;
				rc = attempt(ck, g, pa, value, call_ms);
			}
			if (rc == DKV_OK || rc == DKV_ERR_INVAL || rc == DKV_ERR_NOMEM)
				return rc;
			if (rc == DKV_ERR_EXPIRED && pa != NULL) {
				if (tries > 1)
					return rc; /* a retry: it may have been applied */
				ck->sid = 0; /* never applied: a new session, at once */
				pa->client = 0;
				continue;
			}
			DKV_DEBUG("pbservice clerk %s: %s at %s: %s", ck->me, g ? "get" : "putappend",
			          ck->primary, dkv_strerror(rc));
			ck->primary[0] = '\0';
		}
		unsigned sleep_ms = delay;
		if (deadline != 0) {
			uint64_t now = dkv_now_ms();
			if (now >= deadline)
				return DKV_ERR_TIMEOUT;
			if (deadline - now < sleep_ms)
				sleep_ms = (unsigned)(deadline - now);
		}
		dkv_sleep_ms(sleep_ms);
		if (delay < VIEWSERVICE_PING_INTERVAL_MS)
			delay = delay * 2 < VIEWSERVICE_PING_INTERVAL_MS ? delay * 2
			                                                 : VIEWSERVICE_PING_INTERVAL_MS;
	}
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
	int rc = run(ck, &g, NULL, value);
	if (rc != DKV_OK) {
		free(*value);
		*value = NULL;
	}
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
	pa.client = 0; /* numbered in run(), in the clerk's session */
	pa.seq = 0;
	return run(ck, NULL, &pa, NULL);
}

int pbservice_clerk_put(pbservice_clerk *ck, const char *key, const char *value)
{
	return putappend(ck, key, value, PB_OP_PUT);
}

int pbservice_clerk_append(pbservice_clerk *ck, const char *key, const char *value)
{
	return putappend(ck, key, value, PB_OP_APPEND);
}
