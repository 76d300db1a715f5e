/*
 * tests/lib/harness.h — the shared test harness (never installed).
 *
 * Lab-style names and fault verbs: socket names under /var/tmp/dkv-<uid>/,
 * partitions made of per-pair hard links, deaf servers, a delay proxy,
 * wait-until helpers, check_appends, live-heap bytes, seeded randomness.
 * Every file the harness creates is removed by th_cleanup() (run at exit too).
 *
 * Include it after <cmocka.h>'s prerequisites (stdarg, stddef, setjmp, stdint).
 */
#ifndef DKV_TEST_HARNESS_H
#define DKV_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdbool.h>
#include <cmocka.h>

#include "dkv/common.h"

/* ------------------------------------------------------------ running suites */

/*
 * th_run_suite: the main() of every suite binary: ignores SIGPIPE, applies the
 * name filter from DKV_TEST_FILTER (a substring, turned into "*F*"), prints the
 * seed, runs the group, removes leftover files. Returns cmocka's result.
 */
#define th_run_suite(name, tests) th_run_group_impl((name), (tests), sizeof(tests) / sizeof((tests)[0]))
int th_run_group_impl(const char *name, const struct CMUnitTest *tests, size_t n);

/* th_under_valgrind: DKV_UNDER_VALGRIND is set (make valgrind): tests may scale
 * their workloads down, never their assertions. */
bool th_under_valgrind(void);

/*
 * Every test of a suite run by th_run_suite gets a harness teardown (after the
 * test's own, if any) that fails the test when a background thread reported a
 * failure (th_bg_fail) and undoes the test's th_setenv/th_unsetenv calls.
 */

/*
 * th_bg_fail: from a thread other than the test's: record a failure of the
 * current test (the first one is kept, later ones are counted). The test
 * fails at th_assert_no_bg_failure() or, at the latest, in the harness
 * teardown. fail_msg must not be called from such a thread: cmocka's jump
 * buffer belongs to the test's thread.
 */
__attribute__((format(printf, 1, 2))) void th_bg_fail(const char *fmt, ...);
/* th_assert_no_bg_failure: fail the test (from its own thread) if a
 * background thread reported a failure since the last check; clears it. */
void th_assert_no_bg_failure(void);
/* th_on_test_thread: the caller is the thread running the cmocka test. */
bool th_on_test_thread(void);

/* th_setenv / th_unsetenv: setenv/unsetenv for the current test only: the
 * variable's previous state comes back in the harness teardown, even when
 * the test fails half-way. */
void th_setenv(const char *name, const char *value);
void th_unsetenv(const char *name);

/* ------------------------------------------------------------ time */

uint64_t th_now_ms(void);
void th_sleep_ms(unsigned ms);

/*
 * WAIT_UNTIL(cond, timeout_ms): poll `cond` (every 5 ms, backing off to 50 ms)
 * until it holds or timeout_ms passes; then fail the test with the expression.
 * Returns as soon as the condition is true.
 */
#define WAIT_UNTIL(cond, timeout_ms)                                                  \
	do {                                                                              \
		uint64_t th_wu_deadline_ = th_now_ms() + (uint64_t)(timeout_ms);              \
		unsigned th_wu_step_ = 5;                                                     \
		while (!(cond)) {                                                             \
			if (th_now_ms() > th_wu_deadline_)                                        \
				fail_msg("WAIT_UNTIL(%s) timed out after %u ms", #cond,               \
				         (unsigned)(timeout_ms));                                     \
			th_sleep_ms(th_wu_step_);                                                 \
			if (th_wu_step_ < 50) th_wu_step_ *= 2;                                   \
		}                                                                             \
	} while (0)

/* ------------------------------------------------------------ names */

/* th_dir: "/var/tmp/dkv-<uid>", created (mode 0777) on first use. */
const char *th_dir(void);

/*
 * th_port: write "<dir>/<prefix>-<pid>-<tag>-<i>" into buf (DKV_NAME_MAX bytes)
 * and remember it for cleanup. Returns buf.
 */
char *th_port(char *buf, const char *prefix, const char *tag, int i);

/* th_pair_name: "<dir>/<prefix>-<tag>-<pid>-<i>-<j>" (the lab's per-pair name). */
char *th_pair_name(char *buf, const char *prefix, const char *tag, int i, int j);

/*
 * A cluster's names for partition tests: names[i][j] is the name server i uses
 * for server j: its real port when i == j, else the per-pair link name.
 * th_names_new allocates the table; th_names_free frees it.
 */
typedef struct {
	int n;
	char prefix[32];
	char tag[64];
	char (*ports)[DKV_NAME_MAX];      /* n real socket paths */
	char (*pairs)[DKV_NAME_MAX];      /* n*n names: pairs[i*n+j] */
	const char **peer_lists;          /* n*n pointers: row i is server i's peer list */
} th_names;
th_names *th_names_new(const char *prefix, const char *tag, int n);
void th_names_free(th_names *nm);
/* th_peers: the peer list of server i (n pointers into nm). */
const char *const *th_peers(th_names *nm, int i);

/*
 * th_partition: group_of[i] is server i's group (>= 0), or -1 for isolated.
 * Removes every pair link, then links (i,j) -> port j for all i, j (i == j
 * included) in the same group. A failed link fails the test.
 */
void th_partition(th_names *nm, const int *group_of);
/*
 * th_links: the general, possibly non-transitive, form: reach[i*n+j] says
 * whether server i can reach server j (i == j is always linked). Removes every
 * pair link first. A bridge: two sides that cannot reach each other, and one
 * server that reaches, and is reached by, both. A failed link fails the test:
 * at once on the test's thread; from a background thread (a partitioner)
 * through th_bg_fail, and the remaining links are still made.
 */
void th_links(th_names *nm, const bool *reach);
/* th_bridge: `bridge` joins side A (side_of[i] == 0) and side B (== 1); the
 * sides cannot reach each other; side_of[bridge] is ignored. */
void th_bridge(th_names *nm, const int *side_of, int bridge);
/* th_part3: the lab's part(p1, p2, p3): arrays terminated by -1 (NULL = empty). */
void th_part3(th_names *nm, const int *p1, const int *p2, const int *p3);
/* th_cleanpp: remove every pair link. */
void th_cleanpp(th_names *nm);
/* th_deafen: remove server i's real socket file: nobody can connect to it. */
void th_deafen(th_names *nm, int i);

/* th_unlink: remove a path, ignoring ENOENT. */
void th_unlink(const char *path);

/* ------------------------------------------------------------ delay proxy */

/*
 * The pbservice partition tests' delay proxy: renames the server socket at
 * `path` to path+"x", listens at `path`; every accepted connection first sleeps
 * th_proxy_set_delay() ms, then dials path+"x" and relays bytes both ways.
 */
typedef struct th_proxy th_proxy;
th_proxy *th_proxy_start(const char *path);
void th_proxy_set_delay(th_proxy *p, unsigned ms);
void th_proxy_stop(th_proxy *p);

/* ------------------------------------------------------------ checks */

/*
 * th_check_appends: for every client i < nclients and j < counts[i], the
 * substring "x <i> <j> y" occurs in v exactly once, and its offsets grow with j.
 * Fails the test otherwise.
 */
void th_check_appends(const char *v, const int *counts, int nclients);

/* th_live_heap: bytes in use in the malloc heap (mallinfo2 uordblks + hblkhd). */
size_t th_live_heap(void);

/* th_thread_count: threads of this process now (from /proc/self/status). */
int th_thread_count(void);

/* ------------------------------------------------------------ randomness */

/* th_seed: the suite's seed: DKV_TEST_SEED if set, else time-based; printed once. */
uint64_t th_seed(void);
/* th_rand: a thread-safe draw from the suite's PRNG (seeded by th_seed). */
uint64_t th_rand(void);
/* th_randstr: n random lowercase letters (plus NUL) into buf. */
void th_randstr(char *buf, size_t n);

/* th_cleanup: remove every file the harness created (ports, links, proxies). */
void th_cleanup(void);

#endif /* DKV_TEST_HARNESS_H */
