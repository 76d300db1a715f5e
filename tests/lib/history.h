/*
 * tests/lib/history.h — a recorder of client operations for linearizability
 * checking (see linearizability.h). Test-only; never installed.
 *
 * Each operation is a Get, Put or Append on one key, with the client that ran
 * it, its argument, its result and two times from CLOCK_MONOTONIC in µs: the
 * invoke time (taken before the call starts) and the return time (taken after
 * it finished). Both are taken conservatively — invoke a little early, return
 * a little late — which can only widen an interval, so a recorder delay never
 * turns a legal history into an illegal one.
 *
 * An operation ends in one of three ways:
 *   ok      (th_history_return)  it took effect once, between invoke and return,
 *           and a Get saw `result`;
 *   unknown (th_history_unknown) timed out or the client died: a Put/Append may
 *           take effect at any time after its invoke, or never; a Get is ignored;
 *   failed  (th_history_fail)    it certainly did not take effect (rejected
 *           before being sent, DKV_ERR_INVAL, …); the checker ignores it.
 * An operation still open when the history is checked counts as unknown.
 *
 * Thread-safety: invoke/return/unknown/fail may be called from any thread at
 * once (one short mutex section each; strings are copied outside the lock).
 * The read functions (th_history_size, th_history_op, th_history_dump) and the
 * checker must not run concurrently with writers to the same history.
 */
#ifndef DKV_TEST_HISTORY_H
#define DKV_TEST_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { TH_OP_GET = 0, TH_OP_PUT, TH_OP_APPEND } th_op_kind;

typedef enum {
	TH_OP_PENDING = 0, /* invoked, not yet returned (counts as unknown when checked) */
	TH_OP_OK,          /* returned; for a Get, `result` is what it read */
	TH_OP_UNKNOWN,     /* outcome unknown: timed out, client killed */
	TH_OP_FAILED,      /* certainly not applied */
} th_op_status;

/* The return time of an operation whose outcome is unknown or still pending. */
#define TH_HISTORY_OPEN INT64_MAX

/* One recorded operation. Strings are owned by the history. */
typedef struct {
	int id;              /* index in the history: 0, 1, 2, … in recording order */
	int client;          /* caller's label (any int) */
	th_op_kind kind;
	th_op_status status;
	char *key;           /* never NULL */
	char *arg;           /* Put/Append value; NULL for a Get */
	char *result;        /* a Get's value when status == TH_OP_OK, else NULL */
	int64_t invoke_us;   /* CLOCK_MONOTONIC µs */
	int64_t return_us;   /* CLOCK_MONOTONIC µs; TH_HISTORY_OPEN unless ok/failed */
} th_op;

typedef struct th_history th_history;

/* th_history_new: an empty history; NULL (errno ENOMEM) on failure. Free with
 * th_history_free. */
th_history *th_history_new(void);

/* th_history_free: release the history and every string in it. NULL is a no-op. */
void th_history_free(th_history *h);

/* th_history_now_us: the recorder's clock (CLOCK_MONOTONIC) in µs. */
int64_t th_history_now_us(void);

/*
 * th_history_invoke: record the start of an operation now. `key` and `arg` are
 * copied (`arg` is ignored for a Get and may be NULL; NULL for a Put/Append
 * means ""). Returns the operation's id, which the caller passes to exactly one
 * of th_history_return / _unknown / _fail; -1 if out of memory.
 */
int th_history_invoke(th_history *h, int client, th_op_kind kind, const char *key,
                      const char *arg);

/* th_history_return: the operation finished now and took effect; `result` is a
 * Get's value (copied; NULL means "") and is ignored for Put/Append. */
void th_history_return(th_history *h, int id, const char *result);

/* th_history_unknown: the operation's outcome is unknown (timeout, killed client). */
void th_history_unknown(th_history *h, int id);

/* th_history_fail: the operation certainly did not take effect. */
void th_history_fail(th_history *h, int id);

/*
 * th_history_add: append a finished operation with explicit times (for
 * hand-made and generated histories). `return_us` TH_HISTORY_OPEN with status
 * TH_OP_UNKNOWN records an open-ended op. Strings are copied. Returns the id or -1.
 */
int th_history_add(th_history *h, int client, th_op_kind kind, const char *key,
                   const char *arg, const char *result, th_op_status status,
                   int64_t invoke_us, int64_t return_us);

/* th_history_size: the number of operations recorded. */
size_t th_history_size(const th_history *h);

/* th_history_op: operation `id` (borrowed; valid until the history is freed). */
const th_op *th_history_op(const th_history *h, int id);

/* th_history_counts: how many ops are ok, unknown (incl. pending) and failed;
 * any pointer may be NULL. */
void th_history_counts(const th_history *h, size_t *ok, size_t *unknown, size_t *failed);

/* th_op_kind_name: "Get", "Put" or "Append". */
const char *th_op_kind_name(th_op_kind kind);

/*
 * th_history_dump: write the history as TSV (id, client, kind, status, key,
 * invoke_us, return_us, arg, result; "-" for none, times relative to the
 * first invoke) to `out`. th_history_dump_file writes it to `path`; returns 0
 * or -1 (errno set).
 */
void th_history_dump(const th_history *h, FILE *out);
int th_history_dump_file(const th_history *h, const char *path);

#endif /* DKV_TEST_HISTORY_H */
