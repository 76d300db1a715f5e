/*
 * src/dkv_internal.h — the internal interface of libdkvrpc, for the service
 * libraries only (never installed, never included by a public header).
 *
 * Pieces:
 *   - server side: register an RPC program (a table of procedures) on a
 *     dkv_rpc_server; the layer decodes arguments, calls the handler, sends
 *     the reply and frees both. Handlers run one thread per connection.
 *   - client side: a pool of cached, checked connections per object, and one
 *     call function with a timeout.
 *   - time, condition variables on CLOCK_MONOTONIC, a per-object PRNG, a
 *     levelled logger, allocation wrappers whose failure tests can inject.
 */
#ifndef DKV_INTERNAL_H
#define DKV_INTERNAL_H

#include <pthread.h>
#include <rpc/rpc.h>
#include <stdarg.h>
#include <stdint.h>

#include "dkv/common.h"
#include "dkv/rpc.h"

/* ---------------------------------------------------------------- init */

/* dkv_lib_init: once per process: SIGPIPE → SIG_IGN if still SIG_DFL, logger
 * level from DKV_LOG. Every constructor calls it; cheap after the first call. */
void dkv_lib_init(void);

/* ---------------------------------------------------------------- server */

/*
 * One procedure of a program. The layer decodes into a zeroed `args_size`
 * buffer with `xdr_args`, zeroes a `res_size` buffer, calls
 * handler(inst, args, res), sends `res` with `xdr_res`, then frees both with
 * xdr_free (so every pointer the handler stores in `res` must be malloc'ed, or
 * be set back to NULL by... no: must be malloc'ed; the layer frees it).
 * args_size and res_size are at most DKV_RPC_MAX_STRUCT bytes.
 * The handler must not keep `args` or `res` after it returns.
 * Procedure 0 (NULLPROC) is answered by the layer for every program.
 */
#define DKV_RPC_MAX_STRUCT 512
typedef void (*dkv_rpc_handler)(void *inst, void *args, void *res);
typedef struct {
	rpcproc_t proc;
	xdrproc_t xdr_args;
	size_t args_size;
	xdrproc_t xdr_res;
	size_t res_size;
	dkv_rpc_handler handler;
} dkv_rpc_proc;

/*
 * dkv_rpc_server_add: serve program (prog, vers) on `s` with the given
 * procedure table (borrowed: it must outlive the registration; use a static
 * const array) and instance pointer (borrowed). At most DKV_RPC_MAX_PROGS
 * programs per server; a program number may be registered once.
 * Returns DKV_OK, DKV_ERR_INVAL (full, duplicate), DKV_ERR_KILLED.
 */
#define DKV_RPC_MAX_PROGS 8
int dkv_rpc_server_add(dkv_rpc_server *s, rpcprog_t prog, rpcvers_t vers,
                       const dkv_rpc_proc *procs, size_t nprocs, void *inst);

/*
 * dkv_rpc_server_remove: stop serving `prog` on `s`. Requests for it get
 * PROG_UNAVAIL from now on; waits until every handler of `prog` already running
 * has returned. Unknown program: no-op. Must not be called from a handler of
 * that program.
 */
void dkv_rpc_server_remove(dkv_rpc_server *s, rpcprog_t prog);

/* dkv_rpc_server_name: the name the server listens at (for tcp:HOST:0, with the
 * real port). Borrowed; valid until dkv_rpc_server_free. */
const char *dkv_rpc_server_name(const dkv_rpc_server *s);

/* dkv_rpc_server_is_unreliable: the current unreliable flag. */
bool dkv_rpc_server_is_unreliable(const dkv_rpc_server *s);

/* ---------------------------------------------------------------- client */

/*
 * A pool of idle connections, keyed by name. Owned by one object (a clerk or a
 * server) and used from any of its threads. Before a cached connection is reused
 * the name is resolved again (stat of the unix path: same device and inode?) and
 * the connection is polled for a close by the peer; otherwise it is dropped and a
 * new one dialed. A connection is destroyed after any error or timeout.
 */
typedef struct dkv_rpc_pool dkv_rpc_pool;

/* dkv_rpc_pool_new: NULL + errno on failure. */
dkv_rpc_pool *dkv_rpc_pool_new(void);

/* dkv_rpc_pool_shutdown: calls in flight fail at once (their sockets are shut
 * down) and later calls return DKV_ERR_KILLED without dialing. Idempotent. */
void dkv_rpc_pool_shutdown(dkv_rpc_pool *p);

/* dkv_rpc_pool_free: shutdown, close every connection, free. No call may be in
 * flight. NULL is a no-op. */
void dkv_rpc_pool_free(dkv_rpc_pool *p);

/*
 * dkv_rpc_call: one call of (prog, vers, proc) at `name`, waiting at most
 * `timeout_ms` for the reply (0 means DKV_RPC_DEFAULT_TIMEOUT_MS).
 * `args` is borrowed; `res` must point to a zeroed result struct. On DKV_OK the
 * result is decoded into `res` and the caller releases it with
 * xdr_free(xdr_res, res). On any error `res` holds nothing to free.
 * Returns DKV_OK, DKV_ERR_NET (could not connect, connection failed, RPC-level
 * error such as PROG_UNAVAIL), DKV_ERR_TIMEOUT, DKV_ERR_KILLED (pool shut
 * down), DKV_ERR_INVAL (bad name).
 */
#define DKV_RPC_DEFAULT_TIMEOUT_MS 10000u
int dkv_rpc_call(dkv_rpc_pool *p, const char *name, rpcprog_t prog, rpcvers_t vers,
                 rpcproc_t proc, xdrproc_t xdr_args, const void *args, xdrproc_t xdr_res,
                 void *res, unsigned timeout_ms);

/* Counters of a pool, for tests and benchmarks. */
typedef struct {
	unsigned long calls;   /* dkv_rpc_call invocations */
	unsigned long dials;   /* new connections made */
	unsigned long reuses;  /* calls on a cached connection */
	unsigned long failures;/* calls that returned an error */
} dkv_rpc_pool_stats;
void dkv_rpc_pool_get_stats(dkv_rpc_pool *p, dkv_rpc_pool_stats *out);

/* ---------------------------------------------------------------- names */

typedef enum { DKV_NAME_UNIX = 1, DKV_NAME_TCP } dkv_name_kind;
typedef struct {
	dkv_name_kind kind;
	char path[DKV_NAME_MAX]; /* unix: the path */
	char host[DKV_NAME_MAX]; /* tcp: host */
	char port[16];           /* tcp: port */
} dkv_name;

/* dkv_name_parse: DKV_OK or DKV_ERR_INVAL (empty, too long, bad tcp form). */
int dkv_name_parse(const char *name, dkv_name *out);

/* ---------------------------------------------------------------- time */

uint64_t dkv_now_ms(void); /* CLOCK_MONOTONIC */
uint64_t dkv_now_us(void);
/* dkv_sleep_ms: for periodic timers and retry backoff only, never to wait for a result. */
void dkv_sleep_ms(unsigned ms);
/* dkv_cond_init: a condition variable on CLOCK_MONOTONIC. 0 or an errno value. */
int dkv_cond_init(pthread_cond_t *cv);
/* dkv_cond_wait_ms: wait on cv (mu held) for at most ms. Returns true if
 * signalled (or spurious), false on timeout. */
bool dkv_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, unsigned ms);
/* dkv_cond_wait_until: wait until the absolute monotonic deadline (ms). false on timeout. */
bool dkv_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ms);

/* ---------------------------------------------------------------- randomness */

/* Per-object PRNG (xoshiro256**). Not thread-safe: guard it with the owner's lock. */
typedef struct {
	uint64_t s[4];
} dkv_rng;
void dkv_rng_seed(dkv_rng *r, uint64_t seed);
uint64_t dkv_rng_next(dkv_rng *r);
/* uniform in [0, n), n > 0 */
uint64_t dkv_rng_below(dkv_rng *r, uint64_t n);
/* dkv_random_seed: a fresh seed from getrandom() (falls back to time and a counter). */
uint64_t dkv_random_seed(void);

/* ---------------------------------------------------------------- wire bounds */

/* Whole-state transfers (pbservice state transfer, paxosrsm snapshots, a
 * shardkv shard as it moves) carry at most DKV_STATE_MAX bytes in one field and
 * at most DKV_STATE_KEYS_MAX keys (64 MiB of decoded array): the .x files bound
 * their fields by these numbers (src/wire_bounds.c checks they agree), and a
 * sender whose state is larger refuses, with a log line, to send it. */
#define DKV_STATE_MAX (1u << 30)
#define DKV_STATE_KEYS_MAX (1u << 22)

/* dkv_xdr_encode: `v` encoded with `proc` into a malloc'ed buffer (*buf, *len).
 * DKV_OK; DKV_ERR_INVAL when it does not encode (a field over its .x bound) or
 * would be longer than DKV_STATE_MAX bytes (logged: no field may carry it);
 * DKV_ERR_NOMEM. */
int dkv_xdr_encode(xdrproc_t proc, const void *v, void **buf, size_t *len);

/* ---------------------------------------------------------------- byte order */

/* Little-endian fixed-width integers in hand-made wire forms (session table,
 * kvpaxos snapshot, log records). */
static inline void dkv_put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void dkv_put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t dkv_get_le32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
	return v;
}
static inline uint64_t dkv_get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---------------------------------------------------------------- log */

enum dkv_log_level { DKV_LOG_DEBUG = 0, DKV_LOG_INFO, DKV_LOG_WARN, DKV_LOG_ERROR, DKV_LOG_OFF };
/* The level comes from the environment variable DKV_LOG (debug|info|warn|error|off;
 * default warn) at dkv_lib_init, or from dkv_log_set_level. */
void dkv_log_set_level(int level);
int dkv_log_get_level(void);
void dkv_log_write(int level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define DKV_LOG_AT(lvl, ...)                                                        \
	do {                                                                            \
		if ((lvl) >= dkv_log_get_level())                                           \
			dkv_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                  \
	} while (0)
#define DKV_DEBUG(...) DKV_LOG_AT(DKV_LOG_DEBUG, __VA_ARGS__)
#define DKV_INFO(...) DKV_LOG_AT(DKV_LOG_INFO, __VA_ARGS__)
#define DKV_WARN(...) DKV_LOG_AT(DKV_LOG_WARN, __VA_ARGS__)
#define DKV_ERROR(...) DKV_LOG_AT(DKV_LOG_ERROR, __VA_ARGS__)

/* ---------------------------------------------------------------- memory */

/* Allocation wrappers. A test can make the Nth call from now fail
 * (dkv_alloc_fail_after(N), N >= 1; 0 turns injection off). */
void *dkv_malloc(size_t n);
void *dkv_calloc(size_t nmemb, size_t size);
void *dkv_realloc(void *p, size_t n);
char *dkv_strdup(const char *s);
void *dkv_memdup(const void *p, size_t n);
void dkv_alloc_fail_after(unsigned long n);

/* ---------------------------------------------------------------- options */

/* dkv_opts_plain: opts asks for nothing beyond a plain start (NULL, or no dir
 * and no restart). */
bool dkv_opts_plain(const dkv_server_opts *opts);

#endif /* DKV_INTERNAL_H */
