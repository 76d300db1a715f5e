/*
 * shardmaster/sm_session.h — the shard master's internal session call (never
 * installed): how another dkv service (shardkv) gets session ids that are
 * global and increasing.
 *
 * The id comes from a counter in the shard master's replicated state, bumped
 * by an op in its log (SM_OP_NEW_ID), so ids are > 0, unique, and increase in
 * the order they were handed out, across every clerk of every group — which is
 * what a bounded session table (src/session.h) needs to expire safely.
 */
#ifndef DKV_SM_SESSION_H
#define DKV_SM_SESSION_H

#include <stdint.h>

#include "dkv/shardmaster.h"

/*
 * sm_clerk_global_session: a fresh global id into *id, through the clerk (its
 * replicas, retries and deadline: shardmaster_clerk_set_timeout). DKV_OK,
 * DKV_ERR_TIMEOUT, DKV_ERR_INVAL (NULL arguments), DKV_ERR_NOMEM.
 */
int sm_clerk_global_session(shardmaster_clerk *c, uint64_t *id);

#endif /* DKV_SM_SESSION_H */
