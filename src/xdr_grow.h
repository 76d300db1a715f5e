/*
 * xdr_grow.h — an XDR array decoder whose allocation grows with the elements
 * actually decoded, for the large whole-state arrays of the .x files (pulled
 * into the rpcgen output by %#include; static inline, so the generated code
 * and the fuzz targets need nothing else to link).
 *
 * libtirpc's xdr_array allocates (and zeroes) the count a message claims
 * before reading one element, and freeing the result walks that many elements:
 * under a bound of millions of elements, 12 bytes still cost a large
 * allocation and a long walk. dkv_xdr_growing_array checks the same bound, then
 * starts with 16 elements and doubles as elements arrive; when an element
 * fails, *sizep counts only the elements allocated so far, so xdr_free walks
 * only those. Encoding and freeing are xdr_array's.
 */
#ifndef DKV_XDR_GROW_H
#define DKV_XDR_GROW_H

#include <rpc/rpc.h>
#include <stdlib.h>
#include <string.h>

static inline bool_t dkv_xdr_growing_array(XDR *x, char **addrp, u_int *sizep, u_int maxsize,
                                           u_int elsize, xdrproc_t elproc)
{
	if (x->x_op != XDR_DECODE || *addrp != NULL)
		return xdr_array(x, addrp, sizep, maxsize, elsize, elproc);
	u_int c;
	if (!xdr_u_int(x, &c) || c > maxsize)
		return FALSE;
	*sizep = 0;
	u_int cap = 0;
	for (u_int n = 0; n < c; n++) {
		if (n == cap) {
			u_int ncap = cap != 0 ? (cap > c / 2 ? c : cap * 2) : (c < 16 ? c : 16);
			char *na = realloc(*addrp, (size_t)ncap * elsize);
			if (na == NULL)
				return FALSE;
			memset(na + (size_t)cap * elsize, 0, (size_t)(ncap - cap) * elsize);
			*addrp = na;
			cap = ncap;
		}
		*sizep = n + 1; /* a partly decoded element is freed with the others */
		if (!elproc(x, *addrp + (size_t)n * elsize))
			return FALSE;
	}
	return TRUE;
}

#endif /* DKV_XDR_GROW_H */
