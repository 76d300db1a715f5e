/*
 * tests/lib/linearizability.h — a linearizability checker for dkv histories
 * (test-only; never installed).
 *
 * The model is a map of string registers: Put(k, v) sets k to v, Append(k, v)
 * sets k to k's value followed by v, Get(k) reads k's value; a key never
 * written reads "". A history (history.h) is linearizable when every op can
 * be given one point between its invoke and its return such that the ops, run
 * in the order of their points against the model, return what was recorded.
 * Ops with an unknown outcome may take effect at any point after their invoke,
 * or never (a Get with an unknown outcome constrains nothing and is dropped);
 * failed ops are dropped.
 *
 * Verdicts: TH_LIN_OK, TH_LIN_ILLEGAL (the result carries the offending key,
 * a small failing sub-history and a printable report), TH_LIN_UNKNOWN (the
 * deadline or the memory bound was hit before an answer). A test must treat
 * both ILLEGAL and UNKNOWN as failures (th_lin_assert_ok does).
 *
 * The checker only reads the history: it must not be recorded into meanwhile.
 */
#ifndef DKV_TEST_LINEARIZABILITY_H
#define DKV_TEST_LINEARIZABILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "history.h"

typedef enum { TH_LIN_OK = 0, TH_LIN_ILLEGAL, TH_LIN_UNKNOWN } th_lin_verdict;

typedef struct {
	unsigned timeout_ms;   /* deadline for the whole check; 0 = none */
	int nthreads;          /* keys checked in parallel (>= 1); 0 = 2 */
	bool minimize;         /* shrink the failing sub-history (costs ≤ 2 s more) */
	size_t max_memo_bytes; /* per-key memory bound of the search; 0 = 1 GiB */
	int engine;            /* tests only: 0 = both (DFS, then the frontier engine on
	                          ILLEGAL or give-up), 1 = DFS only, 2 = frontier only */
	uint64_t hash_mask;    /* tests only: state hashes are ANDed with it, so a small
	                          mask forces collisions (exact comparison must save us);
	                          0 = all 64 bits */
	uint64_t max_steps;    /* tests only: search steps per key and engine after which
	                          the check gives up (UNKNOWN, "step budget"), counted in
	                          blocks of 1024; 0 = none */
	int64_t (*clock_us)(void); /* tests only: the clock (µs) the deadline is measured
	                          on; NULL = CLOCK_MONOTONIC */
} th_lin_options;

typedef struct {
	th_lin_verdict verdict;
	double elapsed_ms;     /* wall time of the check (including minimization) */
	double cpu_ms;         /* CPU time of the checking threads (a loaded machine
	                          inflates elapsed_ms, not this) */
	size_t nops;           /* ops checked (failed ops and unknown Gets excluded) */
	size_t nopen;          /* of which open-ended (unknown Put/Append) */
	size_t npruned;        /* open-ended writes left out: no Get could have seen them */
	size_t nkeys;
	size_t max_key_ops;    /* ops on the busiest key */
	size_t memo_entries;   /* memoized (linearized set, value) pairs, summed over keys */
	char *bad_key;         /* ILLEGAL: the key (malloc'd), else NULL */
	int *witness;          /* ILLEGAL: ids of a failing sub-history of that key, by invoke
	                          time: started from the value witness_value, these ops
	                          cannot be linearized */
	size_t nwitness;
	char *witness_value;   /* ILLEGAL: "" or the value at the last point where the state
	                          was certain (the witness's ops all come after it) */
	char *report;          /* ILLEGAL / UNKNOWN: a printable multi-line explanation; else NULL */
} th_lin_result;

/* th_lin_options_init: defaults (no deadline, 2 threads, minimize, 1 GiB). */
void th_lin_options_init(th_lin_options *o);

/*
 * th_lin_check: check `h` with the default options and the given deadline
 * (0 = none). `res` may be NULL; otherwise it is filled and must be released
 * with th_lin_result_destroy. Blocks for at most about timeout_ms (plus up to
 * 2 s of minimization after an ILLEGAL verdict).
 */
th_lin_verdict th_lin_check(const th_history *h, unsigned timeout_ms, th_lin_result *res);

/* th_lin_check_opts: the same with explicit options (`o` is borrowed). */
th_lin_verdict th_lin_check_opts(const th_history *h, const th_lin_options *o,
                                 th_lin_result *res);

/* th_lin_result_destroy: release what th_lin_check put in `res`. */
void th_lin_result_destroy(th_lin_result *res);

/* th_lin_verdict_name: "OK", "ILLEGAL" or "UNKNOWN". */
const char *th_lin_verdict_name(th_lin_verdict v);

/*
 * th_lin_assert_ok: check `h` (deadline timeout_ms) and print one line of
 * figures to stderr; on ILLEGAL or UNKNOWN print the report, dump the whole
 * history as TSV to <th_dir()>/history-<pid>-<label>.tsv and fail the current
 * cmocka test. `label` names the run in messages and the file name.
 */
void th_lin_assert_ok(const th_history *h, unsigned timeout_ms, const char *label);

#endif /* DKV_TEST_LINEARIZABILITY_H */
