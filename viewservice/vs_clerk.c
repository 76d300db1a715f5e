/*
 * viewservice/vs_clerk.c — the view service clerk.
 *
 * One RPC per call, through the clerk's own connection pool (cached, checked
 * connections: a removed or re-linked socket name is seen at the next call, as if
 * every call dialed anew). No retries: a failed call returns DKV_ERR_NET and the
 * empty view, the lab's ("" from Primary() when the RPC fails). Every call is
 * bounded by VS_CLERK_TIMEOUT_MS.
 *
 * A clerk is used by one thread at a time (API.md); it holds no lock of its own.
 * The reply strings are copied into the caller's fixed-size view and the decoded
 * reply released with xdr_free in the one place each call makes it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "vs_prot.h"

/* Longest wait for one view service reply. */
#define VS_CLERK_TIMEOUT_MS 3000u

struct viewservice_clerk {
	char me[DKV_NAME_MAX];
	char server[DKV_NAME_MAX];
	dkv_rpc_pool *pool;
};

viewservice_clerk *viewservice_clerk_new(const char *me, const char *server)
{
	dkv_lib_init();
	if (me == NULL)
		me = "";
	if (server == NULL || server[0] == '\0' || strlen(server) >= DKV_NAME_MAX ||
	    strlen(me) >= DKV_NAME_MAX) {
		errno = EINVAL;
		return NULL;
	}
	viewservice_clerk *ck = dkv_calloc(1, sizeof(*ck));
	if (ck == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	ck->pool = dkv_rpc_pool_new();
	if (ck->pool == NULL) {
		free(ck);
		errno = ENOMEM;
		return NULL;
	}
	strcpy(ck->me, me);
	strcpy(ck->server, server);
	return ck;
}

void viewservice_clerk_free(viewservice_clerk *ck)
{
	if (ck == NULL)
		return;
	dkv_rpc_pool_free(ck->pool);
	free(ck);
}

static void empty_view(viewservice_view *out)
{
	memset(out, 0, sizeof(*out));
}

/* Copy a decoded view; names that would not fit make the reply invalid. */
static int copy_view(viewservice_view *out, const vs_view_x *x)
{
	const char *p = x->primary ? x->primary : "";
	const char *b = x->backup ? x->backup : "";
	if (strlen(p) >= DKV_NAME_MAX || strlen(b) >= DKV_NAME_MAX)
		return DKV_ERR_NET;
	out->viewnum = x->viewnum;
	strcpy(out->primary, p);
	strcpy(out->backup, b);
	return DKV_OK;
}

static int call_view(viewservice_clerk *ck, rpcproc_t proc, xdrproc_t xargs,
                     const void *args, viewservice_view *out)
{
	vs_view_reply res;
	memset(&res, 0, sizeof(res));
	int rc = dkv_rpc_call(ck->pool, ck->server, VS_PROG, VS_VERS, proc, xargs, args,
	                      (xdrproc_t)xdr_vs_view_reply, &res, VS_CLERK_TIMEOUT_MS);
	if (rc != DKV_OK) {
		empty_view(out);
		return DKV_ERR_NET;
	}
	rc = copy_view(out, &res.view);
	xdr_free((xdrproc_t)xdr_vs_view_reply, (char *)&res);
	if (rc != DKV_OK)
		empty_view(out);
	return rc;
}

int viewservice_clerk_ping(viewservice_clerk *ck, unsigned viewnum, viewservice_view *out)
{
	if (ck == NULL || out == NULL) {
		if (out != NULL)
			empty_view(out);
		return DKV_ERR_INVAL;
	}
	if (ck->me[0] == '\0') {
		empty_view(out);
		return DKV_ERR_INVAL;
	}
	vs_ping_args args;
	args.me = ck->me;
	args.viewnum = viewnum;
	args.report = NULL;
	return call_view(ck, VS_PING, (xdrproc_t)xdr_vs_ping_args, &args, out);
}

int viewservice_clerk_get(viewservice_clerk *ck, viewservice_view *out)
{
	if (ck == NULL || out == NULL) {
		if (out != NULL)
			empty_view(out);
		return DKV_ERR_INVAL;
	}
	vs_get_args args = {0};
	return call_view(ck, VS_GET, (xdrproc_t)xdr_vs_get_args, &args, out);
}

int viewservice_clerk_primary(viewservice_clerk *ck, char *buf, size_t len)
{
	if (buf == NULL || len == 0)
		return DKV_ERR_INVAL;
	buf[0] = '\0';
	viewservice_view v;
	int rc = viewservice_clerk_get(ck, &v);
	if (rc != DKV_OK)
		return rc;
	if (strlen(v.primary) >= len)
		return DKV_ERR_INVAL;
	strcpy(buf, v.primary);
	return DKV_OK;
}
