/*
 * fuzz/fuzz_xdr.h — the one XDR fuzz harness: every type of an RPC program's
 * .x file (the table comes from fuzz/xdr-types.sh), decoded from untrusted
 * bytes the way the servers decode requests (src/server.c: svc_getargs into a
 * zeroed struct, then svc_freeargs, also after a partial decode) and the way
 * the services decode log entries and snapshots (xdrmem + xdr_free).
 *
 * Input: byte 0 picks the type (mod the table size), the rest is the XDR
 * stream. Checks beyond "no crash, no leak, no sanitizer report": a value
 * that decoded re-encodes to at most as many bytes as it consumed (fewer when
 * a string held a NUL), and the re-encoding decodes again and encodes to the
 * same bytes (XDR is canonical up to booleans, padding and embedded NULs,
 * which the first re-encoding normalises).
 * Also included by tests/test_storage.c to replay the regression inputs.
 */
#ifndef DKV_FUZZ_XDR_H
#define DKV_FUZZ_XDR_H

#include <rpc/rpc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	const char *name;
	xdrproc_t proc;
	size_t size;
} fuzz_xdr_type;

typedef struct {
	const char *name;
	const fuzz_xdr_type *types;
	size_t n;
} fuzz_xdr_prog;

static inline void fuzz_xdr_fail(const fuzz_xdr_type *t, const char *what)
{
	fprintf(stderr, "fuzz_xdr: %s: %s\n", t->name, what);
	abort();
}

/* fuzz_xdr_encode: encode obj; returns a malloc'ed buffer of *len bytes (at most cap). */
static inline char *fuzz_xdr_encode(const fuzz_xdr_type *t, void *obj, u_int cap, u_int *len)
{
	char *buf = malloc(cap ? cap : 1);
	XDR e;
	xdrmem_create(&e, buf, cap, XDR_ENCODE);
	if (!t->proc(&e, obj))
		fuzz_xdr_fail(t, "a decoded value does not encode");
	*len = xdr_getpos(&e);
	xdr_destroy(&e);
	return buf;
}

static inline void fuzz_xdr_one(const fuzz_xdr_type *types, size_t n, const uint8_t *data, size_t size)
{
	if (size < 1 || n == 0)
		return;
	const fuzz_xdr_type *t = &types[data[0] % n];
	void *obj = calloc(1, t->size);
	XDR x;
	xdrmem_create(&x, (char *)(uintptr_t)(data + 1), (u_int)(size - 1), XDR_DECODE);
	bool_t ok = t->proc(&x, obj);
	u_int used = xdr_getpos(&x);
	xdr_destroy(&x);
	if (ok) {
		u_int l1, l2;
		char *e1 = fuzz_xdr_encode(t, obj, used, &l1);
		/* Shorter is possible: a C string stops at an embedded NUL that the
		 * wire format allowed (xdr_string decodes "a\0b" and encodes "a"). */
		if (l1 > used)
			fuzz_xdr_fail(t, "re-encoding is longer than the input");
		void *obj2 = calloc(1, t->size);
		XDR y;
		xdrmem_create(&y, e1, l1, XDR_DECODE);
		if (!t->proc(&y, obj2))
			fuzz_xdr_fail(t, "a re-encoded value does not decode");
		xdr_destroy(&y);
		char *e2 = fuzz_xdr_encode(t, obj2, l1, &l2);
		if (l2 != l1 || memcmp(e1, e2, l1) != 0)
			fuzz_xdr_fail(t, "decode/encode is not stable");
		free(e1);
		free(e2);
		xdr_free(t->proc, obj2);
		free(obj2);
	}
	/* as svc_freeargs: frees what was decoded, also after a partial decode */
	xdr_free(t->proc, obj);
	free(obj);
}

#endif /* DKV_FUZZ_XDR_H */
