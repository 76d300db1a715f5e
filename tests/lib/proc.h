/*
 * tests/lib/proc.h — child processes and scratch directories for tests that
 * run the programs (build/bin/dkvd …) as separate processes (never installed).
 *
 * Every child started with tp_spawn is recorded; tp_kill_all() SIGKILLs and
 * reaps whatever is still running (call it from each test's teardown; it also
 * runs at exit), and each child gets PR_SET_PDEATHSIG(SIGKILL), so a suite
 * killed by its time limit leaves no daemon behind. Start children from the
 * test's main thread only: the death signal follows the thread that forked.
 * Scratch directories made with tp_mkdtemp are removed (rm -rf) by
 * tp_rm_tempdirs() and at exit.
 *
 * Include after lib/harness.h (cmocka: failures end the test).
 */
#ifndef DKV_TEST_PROC_H
#define DKV_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * tp_bin: the program `prog` next to this test's build: "<dir of the test
 * binary>/../bin/<prog>" (so a sanitizer build tests its own programs), into
 * buf (len bytes). Exits the suite with a message if it is missing.
 */
void tp_bin(char *buf, size_t len, const char *prog);

/*
 * tp_spawn: fork and exec argv (argv[0] a path; NULL-terminated) with stdin
 * /dev/null and stdout and stderr appended to `log` (NULL: /dev/null), no
 * other descriptor inherited. The child is recorded. Returns its pid; fails
 * the test if fork fails. An exec failure shows as exit 127.
 */
pid_t tp_spawn(char *const argv[], const char *log);
/* tp_spawn_split: tp_spawn with stdout appended to `log` and stderr to `errlog`
 * (NULL: to `log` as well). */
pid_t tp_spawn_split(char *const argv[], const char *log, const char *errlog);

/*
 * tp_signal: send `sig` to a recorded, running child and wait for it to exit
 * (fails the test after 15 s). Returns its exit code, or 128 + n when signal
 * n ended it; the child is no longer recorded (no zombie is left).
 */
int tp_signal(pid_t pid, int sig);

/* tp_sigkill: tp_signal(pid, SIGKILL), failing the test unless SIGKILL ended it. */
void tp_sigkill(pid_t pid);

/*
 * tp_exited: if the recorded child `pid` has exited, reap it, put its exit
 * code (128 + n for signal n) in *code (may be NULL) and return true; else
 * false (it runs, or was never recorded). Never blocks.
 */
bool tp_exited(pid_t pid, int *code);

/* tp_wait: wait up to limit_ms for the recorded child to exit: its code, or -1. */
int tp_wait(pid_t pid, unsigned limit_ms);

/* tp_running: how many recorded children run now (reaps those that exited). */
int tp_running(void);

/* tp_kill_all: SIGKILL and reap every recorded child. Returns how many ran. */
int tp_kill_all(void);

/* tp_no_children: this process has no child at all, running or zombie. */
bool tp_no_children(void);

/*
 * tp_mkdtemp: a fresh directory "<th_dir()>/<tag>-<pid>-XXXXXX" (mode 0777)
 * into buf (len bytes), removed by tp_rm_tempdirs() and at exit. Fails the
 * test on error.
 */
char *tp_mkdtemp(char *buf, size_t len, const char *tag);

/* tp_rm_tempdirs: rm -rf every directory tp_mkdtemp made, now. */
void tp_rm_tempdirs(void);

/* tp_rmrf: remove `path` and everything under it (no error if it is absent). 0 or -1. */
int tp_rmrf(const char *path);

/* tp_wipe_dir: the lab's lost disk: rm -rf path, then mkdir path 0777; fails the test on error. */
void tp_wipe_dir(const char *path);

/* tp_mkdir: mkdir path 0777 (the lab's mode); fails the test on error. */
void tp_mkdir(const char *path);

/*
 * tp_du: the lab's space(): the sum of the sizes of every entry under `path`
 * that is not a directory (sockets count 0); errors while walking are ignored.
 */
uint64_t tp_du(const char *path);

/* tp_tail: the last `lines` lines of file `path` on stderr, each after `prefix`. */
void tp_tail(const char *path, int lines, const char *prefix);

/* tp_read_file: up to len-1 bytes of `path` into buf (NUL-terminated); bytes read. */
size_t tp_read_file(const char *path, char *buf, size_t len);

#endif /* DKV_TEST_PROC_H */
