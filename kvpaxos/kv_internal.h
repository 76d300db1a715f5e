/*
 * kvpaxos/kv_internal.h — test and benchmark hooks of libkvpaxos (internal:
 * never installed; tests include it by relative path).
 */
#ifndef DKV_KV_INTERNAL_H
#define DKV_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dkv/kvpaxos.h"
#include "dkv/paxosrsm.h"

/* Counters of a replica. Thread-safe; work after kill. */
typedef struct {
	size_t clients;        /* client sessions held (paxosrsm's table) */
	size_t keys;           /* keys in the map */
	unsigned long batches; /* unused (the engine batches): 0 */
	unsigned long ops;     /* client ops submitted at this replica */
	unsigned long applied; /* client ops applied (from every replica's entries) */
} kvpaxos_server_stats;
void kvpaxos_server_get_stats(kvpaxos_server *kv, kvpaxos_server_stats *out);

/* kvpaxos_server_rsm: the replica's engine (borrowed), for paxosrsm_get_info. */
paxosrsm *kvpaxos_server_rsm(kvpaxos_server *kv);

#endif /* DKV_KV_INTERNAL_H */
