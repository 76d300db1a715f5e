/*
 * src/rsm_ident.h — paxosrsm_start with the identity a data directory records
 * (internal; never installed). kvpaxos, shardmaster and shardkv start their
 * engine through it so that their directories name their service and gid
 * (dkv_dir_identity_new); the public paxosrsm_start uses "paxosrsm", gid 0.
 */
#ifndef DKV_RSM_IDENT_H
#define DKV_RSM_IDENT_H

#include <stdint.h>

#include "dkv/paxosrsm.h"

paxosrsm *paxosrsm_start_ident(const char *const *peers, int npeers, int me,
                               dkv_rpc_server *rpcs, const paxosrsm_sm *sm, void *ctx,
                               const dkv_server_opts *opts, const char *service, int64_t gid);

#endif /* DKV_RSM_IDENT_H */
