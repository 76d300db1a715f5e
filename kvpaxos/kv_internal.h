/*
 * kvpaxos/kv_internal.h — test and benchmark hooks of libkvpaxos (internal:
 * never installed; tests include it by relative path).
 */
#ifndef DKV_KV_INTERNAL_H
#define DKV_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dkv/kvpaxos.h"

/*
 * kvpaxos_server_start_ttl: kvpaxos_server_start with at-most-once records kept
 * `ttl_ms` of log time instead of KVPAXOS_CLIENT_TTL_MS (every replica of a
 * group must use the same value). For tests of the table's bound.
 */
kvpaxos_server *kvpaxos_server_start_ttl(const char *const *servers, int n, int me,
                                         uint64_t ttl_ms);

/* Counters of a replica. Thread-safe; work after kill. */
typedef struct {
	size_t clients;        /* at-most-once records held now */
	size_t keys;           /* keys in the map */
	unsigned long batches; /* log entries this replica proposed */
	unsigned long ops;     /* client ops in those entries */
	unsigned long applied; /* client ops applied (from every replica's entries) */
} kvpaxos_server_stats;
void kvpaxos_server_get_stats(kvpaxos_server *kv, kvpaxos_server_stats *out);

#endif /* DKV_KV_INTERNAL_H */
