/*
 * shardmaster/sm_wire.h — conversions between the public configuration type
 * and its rpcgen (XDR) form, and the encoding of log entries (internal).
 */
#ifndef DKV_SM_WIRE_H
#define DKV_SM_WIRE_H

#include <stddef.h>

#include "dkv/shardmaster.h"
#include "sm_prot.h"

/* Timeouts shared by server and clerk. A replica waits at most
 * SM_AGREE_TIMEOUT_MS for its request to be agreed and applied (then answers
 * DKV_ERR_TIMEOUT, and the clerk tries another replica); a clerk waits a little
 * longer than that for any one reply. */
#define SM_AGREE_TIMEOUT_MS 2000u
#define SM_CALL_TIMEOUT_MS (SM_AGREE_TIMEOUT_MS + 1000u)

/*
 * sm_wire_from_config: fill the zeroed *w with a deep copy of *c (malloc'ed,
 * released with xdr_free(xdr_sm_wire_config, w)). DKV_OK or DKV_ERR_NOMEM; in
 * both cases *w can be passed to xdr_free.
 */
int sm_wire_from_config(sm_wire_config *w, const shardmaster_config *c);

/*
 * sm_config_from_wire: a fresh configuration copied from *w, released with
 * shardmaster_config_free; NULL when out of memory.
 */
shardmaster_config *sm_config_from_wire(const sm_wire_config *w);

/*
 * sm_op_encode: XDR-encode *op into a fresh buffer (*buf, released with free)
 * of *len bytes. DKV_OK, DKV_ERR_NOMEM or DKV_ERR_INVAL (not encodable).
 */
int sm_op_encode(const sm_op *op, void **buf, size_t *len);

/*
 * sm_op_decode: decode `len` bytes into the zeroed *op. On DKV_OK release it
 * with xdr_free(xdr_sm_op, op); on DKV_ERR_INVAL *op holds nothing.
 */
int sm_op_decode(const void *buf, size_t len, sm_op *op);

#endif /* DKV_SM_WIRE_H */
