/*
 * tests/test_daemons.c — the programs as separate processes: dkvd, dkvctl and
 * dkv-cluster (the main job).
 *
 * Each test forks and execs build/bin/dkvd daemons (found from argv[0]:
 * build/tests/../bin, so sanitizer builds test their own binaries), drives
 * them with build/bin/dkvctl and checks what a user sees: stdout, stderr and
 * exit codes. Faults are real: SIGKILL of a replica process. Daemons listen on
 * unix sockets under th_dir() (removed by the harness) or on loopback TCP
 * ports chosen by the kernel. Every child is recorded; the per-test teardown
 * SIGKILLs and reaps whatever is still running, so a failing test leaves no
 * process behind.
 */
#include "lib/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_KIDS 32
#define MAX_ARGS 32
#define RUN_LIMIT_MS 60000u /* a dkvctl call or a short program run */
#define OUT_MAX 16384

static char bin_dkvd[PATH_MAX], bin_dkvctl[PATH_MAX], bin_cluster[PATH_MAX];

/* ------------------------------------------------------------ children */

/* A daemon started by a test. */
typedef struct {
	pid_t pid;  /* 0 once reaped */
	int status; /* wait status once reaped */
	char addr[DKV_NAME_MAX];
	char log[DKV_NAME_MAX];
} kid;

static kid kids[MAX_KIDS];
static int nkids;
static int nfiles; /* counter for output file names */

/* teardown: SIGKILL and reap every child still running; runs after every test. */
static int teardown_kids(void **state)
{
	(void)state;
	for (int i = 0; i < nkids; i++) {
		if (kids[i].pid > 0) {
			kill(kids[i].pid, SIGKILL);
			while (waitpid(kids[i].pid, &kids[i].status, 0) < 0 && errno == EINTR)
				;
			kids[i].pid = 0;
		}
		th_unlink(kids[i].log);
	}
	nkids = 0;
	return 0;
}

static size_t read_file(const char *path, char *buf, size_t len)
{
	buf[0] = '\0';
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t n = 0;
	ssize_t r;
	while (n + 1 < len && (r = read(fd, buf + n, len - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	close(fd);
	return n;
}

/* fork + exec argv with stdout and stderr to the given files (NULL: /dev/null). */
static pid_t start_child(char *const argv[], const char *out, const char *err)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* If this suite dies (its time limit), its children go with it. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int in = open("/dev/null", O_RDONLY);
		int o = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = err == out ? o : open(err ? err : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (in < 0 || o < 0 || e < 0)
			_exit(126);
		dup2(in, STDIN_FILENO);
		dup2(o, STDOUT_FILENO);
		dup2(e, STDERR_FILENO);
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* wait_child: the exit code (128 + signal for a signal), or -1 after limit_ms. */
static int wait_child(pid_t pid, unsigned limit_ms, int *status)
{
	uint64_t deadline = th_now_ms() + limit_ms;
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			if (status)
				*status = st;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		if (r < 0 && errno != EINTR)
			fail_msg("waitpid %ld: %s", (long)pid, strerror(errno));
		if (th_now_ms() > deadline)
			return -1;
		th_sleep_ms(5);
	}
}

/* The result of running a program to completion. */
typedef struct {
	int code;
	char out[OUT_MAX];
	char err[OUT_MAX];
} result;

static void collect_args(char **argv, const char *prog, va_list ap)
{
	int n = 0;
	argv[n++] = (char *)prog;
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL) {
		assert_true(n < MAX_ARGS - 1);
		argv[n++] = (char *)a;
	}
	argv[n] = NULL;
}

/* run_argv: run argv (NULL-terminated) to completion; fail after RUN_LIMIT_MS. */
static void run_argv(result *r, char **argv)
{
	char out[DKV_NAME_MAX], err[DKV_NAME_MAX];
	th_port(out, "dd", "out", nfiles);
	th_port(err, "dd", "err", nfiles++);
	pid_t pid = start_child(argv, out, err);
	int status;
	r->code = wait_child(pid, RUN_LIMIT_MS, &status);
	if (r->code < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail_msg("%s %s did not finish within %u ms", argv[0], argv[1] ? argv[1] : "", RUN_LIMIT_MS);
	}
	read_file(out, r->out, sizeof r->out);
	read_file(err, r->err, sizeof r->err);
	th_unlink(out);
	th_unlink(err);
}

/* run: run prog with the NULL-terminated arguments after it, as run_argv. */
static void run(result *r, const char *prog, ...)
{
	char *argv[MAX_ARGS];
	va_list ap;
	va_start(ap, prog);
	collect_args(argv, prog, ap);
	va_end(ap);
	run_argv(r, argv);
}

/* run_list: run prog with the NULL-terminated list of arguments `args`. */
static void run_list(result *r, const char *prog, const char *const *args)
{
	char *argv[MAX_ARGS];
	int n = 0;
	argv[n++] = (char *)prog;
	for (int j = 0; args[j] != NULL; j++) {
		assert_true(n < MAX_ARGS - 1);
		argv[n++] = (char *)args[j];
	}
	argv[n] = NULL;
	run_argv(r, argv);
}

/* assert_contains(what, hay, needle): `needle` occurs in `hay` (named `what` in the failure). */
#define assert_contains(what, hay, needle) assert_contains_at((what), (hay), (needle), __LINE__)
static void assert_contains_at(const char *what, const char *hay, const char *needle, int line)
{
	if (strstr(hay, needle) == NULL) {
		fprintf(stderr, "%s:\n%s\n", what, hay);
		fail_msg("line %d: %s (above) does not contain \"%s\"", line, what, needle);
	}
}

/* assert_exit(r, code): the program exited with `code`; both streams shown otherwise. */
#define assert_exit(r, code) assert_exit_at((r), (code), __LINE__)
static void assert_exit_at(const result *r, int code, int line)
{
	if (r->code != code) {
		/* The streams go to stderr whole: fail_msg truncates long messages. */
		fprintf(stderr, "stdout:\n%s\nstderr:\n%s\n", r->out, r->err);
		fail_msg("line %d: exit %d, expected %d (the program's output is above)", line, r->code,
		         code);
	}
}

/* ------------------------------------------------------------ endpoints */

static bool accepts(const char *addr)
{
	int fd;
	int rc;
	if (strncmp(addr, "tcp:", 4) == 0) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof sa);
	} else {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", addr);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof sa);
	}
	if (fd >= 0)
		close(fd);
	return rc == 0;
}

/* free_port: a loopback port the kernel picked (bound, read, closed). */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

/* names: n unix socket names "<th_dir>/dd-<pid>-<tag>-<i>" into names[i], and "a,b,c" into list. */
static void names(char (*nm)[DKV_NAME_MAX], int n, const char *tag, char *list, size_t len)
{
	list[0] = '\0';
	for (int i = 0; i < n; i++) {
		th_port(nm[i], "dd", tag, i);
		size_t l = strlen(list);
		snprintf(list + l, len - l, "%s%s", i ? "," : "", nm[i]);
	}
}

/* ------------------------------------------------------------ daemons */

/*
 * dkvd_spawn: start dkvd with argv (argv[0] is bin_dkvd) as a server that
 * listens at `addr`, logging to a file, and wait until it is up: it logged
 * "serving on" (so the listener is its own, not another process's on the same
 * port) and addr accepts connections. If it exits first: with `in_use_ok` and
 * "address already in use" in its log, returns NULL (the port was taken
 * between probe and bind: the caller retries); otherwise fails the test with
 * the log. Fails too if it is not up within 10 s.
 */
static kid *dkvd_spawn(bool in_use_ok, const char *addr, char **argv)
{
	assert_true(nkids < MAX_KIDS);
	kid *k = &kids[nkids++];
	memset(k, 0, sizeof *k);
	snprintf(k->addr, sizeof k->addr, "%s", addr);
	th_port(k->log, "dd", "log", nkids - 1);
	k->pid = start_child(argv, k->log, k->log);
	uint64_t deadline = th_now_ms() + 10000;
	static char log[OUT_MAX];
	for (;;) {
		read_file(k->log, log, sizeof log);
		if (strstr(log, "serving on ") != NULL && accepts(addr))
			return k;
		int st;
		if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
			k->pid = 0;
			read_file(k->log, log, sizeof log);
			if (in_use_ok && strstr(log, "address already in use") != NULL)
				return NULL;
			fprintf(stderr, "dkvd's log:\n%s\n", log);
			fail_msg("dkvd %s at %s exited during start-up (status %d)", argv[1], addr, st);
		}
		if (th_now_ms() > deadline) {
			fprintf(stderr, "dkvd's log:\n%s\n", log);
			fail_msg("dkvd %s is not up at %s after 10 s", argv[1], addr);
		}
		th_sleep_ms(5);
	}
}

/* dkvd_start: dkvd_spawn of `dkvd ARGS...` (NULL-terminated), which must start. */
static kid *dkvd_start(const char *addr, ...)
{
	char *argv[MAX_ARGS];
	va_list ap;
	va_start(ap, addr);
	collect_args(argv, bin_dkvd, ap);
	va_end(ap);
	return dkvd_spawn(false, addr, argv);
}

/* kid_signal: send sig and wait for the exit; the exit code (128+n for signal n). */
static int kid_signal(kid *k, int sig)
{
	assert_true(k->pid > 0);
	kill(k->pid, sig);
	int code = wait_child(k->pid, 15000, &k->status);
	if (code < 0)
		fail_msg("dkvd at %s did not exit within 15 s of signal %d", k->addr, sig);
	k->pid = 0;
	return code;
}

static void kid_log(const kid *k, char *buf, size_t len)
{
	read_file(k->log, buf, len);
}

/* ------------------------------------------------------------ tests: flags */

/* --help and --version of every program print on stdout and exit 0. */
static void test_daemons_help_and_version_exit_0_on_stdout(void **state)
{
	(void)state;
	result r;
	const char *progs[] = { bin_dkvd, bin_dkvctl, bin_cluster };
	const char *names_[] = { "dkvd", "dkvctl", "dkv-cluster" };
	for (int i = 0; i < 3; i++) {
		run(&r, progs[i], "--help", NULL);
		assert_exit(&r, 0);
		assert_contains("--help output", r.out, "SYNOPSIS");
		assert_contains("--help output", r.out, "EXIT STATUS");
		assert_string_equal(r.err, "");
		run(&r, progs[i], "--version", NULL);
		assert_exit(&r, 0);
		char want[64];
		snprintf(want, sizeof want, "%s (dkv) ", names_[i]);
		assert_contains("--version output", r.out, want);
	}
	run(&r, bin_dkvd, "-h", NULL);
	assert_exit(&r, 0);
	assert_contains("dkvd -h", r.out, "--shardmasters");
}

/* dkvd refuses bad flags with exit 2, a message naming the problem and a --help hint. */
static void test_dkvd_refuses_bad_flags_with_exit_2_and_a_message(void **state)
{
	(void)state;
	struct {
		const char *args[10];
		const char *msg;
	} cases[] = {
		{ { NULL }, "which service?" },
		{ { "kvstore", NULL }, "unknown service 'kvstore'" },
		{ { "kvpaxos", "--frobnicate", NULL }, "unknown option '--frobnicate'" },
		{ { "kvpaxos", "-x", NULL }, "unknown option '-x'" },
		{ { "kvpaxos", "--me", NULL }, "option '--me' needs a value" },
		{ { "kvpaxos", "--me", "0", NULL }, "kvpaxos needs --peers" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/b", NULL }, "needs --me N or --listen" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/b", "--me", "2", NULL }, "--me '2': expected a number from 0 to 1" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/b", "--me", "one", NULL }, "--me 'one'" },
		{ { "kvpaxos", "--peers", "/tmp/a,,/tmp/b", "--me", "0", NULL }, "empty item" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/a", "--me", "0", NULL }, "appears twice" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/b", "--listen", "/tmp/c", NULL }, "is not one of --peers" },
		{ { "kvpaxos", "--peers", "/tmp/a,/tmp/b", "--listen", "/tmp/b", "--me", "0", NULL }, "is peer 1, but --me is 0" },
		{ { "kvpaxos", "--peers", "tcp:127.0.0.1:x,/tmp/b", "--me", "0", NULL }, "the port must be a number" },
		{ { "kvpaxos", "--peers", "tcp:127.0.0.1:0,/tmp/b", "--me", "0", NULL }, "port 0 is not allowed" },
		{ { "kvpaxos", "--peers", "/tmp/a", "--me", "0", "--log-level", "loud", NULL }, "--log-level 'loud'" },
		{ { "shardkv", "--peers", "/tmp/a", "--me", "0", "--shardmasters", "/tmp/s", NULL }, "shardkv needs --gid" },
		{ { "shardkv", "--peers", "/tmp/a", "--me", "0", "--gid", "0", "--shardmasters", "/tmp/s", NULL }, "--gid '0': expected a number > 0" },
		{ { "shardkv", "--peers", "/tmp/a", "--me", "0", "--gid", "7", NULL }, "shardkv needs --shardmasters" },
		{ { "viewservice", NULL }, "viewservice needs --listen" },
		{ { "viewservice", "--listen", "/tmp/v", "--gid", "3", NULL }, "--gid does not apply to viewservice" },
		{ { "viewservice", "--listen", "/tmp/v", "--unreliable", NULL }, "--unreliable does not apply" },
		{ { "pbservice", "--listen", "/tmp/p", NULL }, "pbservice needs --vs" },
		{ { "shardmaster", "extra", NULL }, "unexpected argument 'extra'" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		static result r;
		run_list(&r, bin_dkvd, cases[i].args);
		if (r.code != 2)
			fail_msg("case %zu: exit %d, expected 2; stderr: %s", i, r.code, r.err);
		assert_contains("dkvd's stderr", r.err, cases[i].msg);
		assert_contains("dkvd's stderr", r.err, "Try 'dkvd --help'");
		assert_string_equal(r.out, "");
	}
}

/* A dkvd whose TCP address is taken exits 1 and says "address already in use". */
static void test_dkvd_exits_1_when_the_tcp_address_is_in_use(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	char addr[64];
	snprintf(addr, sizeof addr, "tcp:127.0.0.1:%d", ntohs(sa.sin_port));

	result r;
	run(&r, bin_dkvd, "viewservice", "--listen", addr, NULL);
	close(fd);
	assert_exit(&r, 1);
	assert_contains("dkvd's stderr", r.err, "address already in use");
	assert_contains("dkvd's stderr", r.err, addr);

	/* A replicated service too: its listen address is peers[me]. */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_port = 0;
	sl = sizeof sa;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	char peers[256];
	snprintf(peers, sizeof peers, "tcp:127.0.0.1:%d,tcp:127.0.0.1:%d", free_port(), ntohs(sa.sin_port));
	run(&r, bin_dkvd, "kvpaxos", "--peers", peers, "--me", "1", NULL);
	close(fd);
	assert_exit(&r, 1);
	assert_contains("dkvd's stderr", r.err, "address already in use");
}

/* On a unix path a live server keeps its socket (exit 1), but a stale socket file is replaced. */
static void test_dkvd_keeps_a_live_unix_socket_and_replaces_a_stale_one(void **state)
{
	(void)state;
	char vs[DKV_NAME_MAX];
	th_port(vs, "dd", "vs", 0);
	kid *first = dkvd_start(vs, "viewservice", "--listen", vs, NULL);
	result r;
	run(&r, bin_dkvd, "viewservice", "--listen", vs, NULL);
	assert_exit(&r, 1);
	assert_contains("dkvd's stderr", r.err, "address already in use");
	assert_true(accepts(vs)); /* the first one still serves */
	run(&r, bin_dkvctl, "--vs", vs, "view", NULL);
	assert_exit(&r, 0);
	assert_contains("dkvctl view", r.out, "view 0");

	assert_int_equal(kid_signal(first, SIGKILL), 128 + SIGKILL);
	struct stat st;
	assert_int_equal(lstat(vs, &st), 0); /* the stale socket file remains */
	kid *second = dkvd_start(vs, "viewservice", "--listen", vs, NULL);
	run(&r, bin_dkvctl, "--vs", vs, "view", NULL);
	assert_exit(&r, 0);
	assert_int_equal(kid_signal(second, SIGTERM), 0);
}

/* dkvd exits 0 after SIGTERM and after SIGINT, logging that it stopped. */
static void test_dkvd_exits_0_on_sigterm_and_on_sigint(void **state)
{
	(void)state;
	char vs[DKV_NAME_MAX];
	th_port(vs, "dd", "vs", 0);
	kid *k = dkvd_start(vs, "viewservice", "--listen", vs, NULL);
	assert_int_equal(kid_signal(k, SIGTERM), 0);
	char log[OUT_MAX];
	kid_log(k, log, sizeof log);
	assert_contains("dkvd's log", log, "viewservice serving on");
	assert_contains("dkvd's log", log, "SIGTERM received: stopping");
	assert_contains("dkvd's log", log, "stopped");

	char nm[3][DKV_NAME_MAX], list[1024];
	names(nm, 3, "kv", list, sizeof list);
	kid *rep[3];
	for (int i = 0; i < 3; i++)
		rep[i] = dkvd_start(nm[i], "kvpaxos", "--peers", list, "--listen", nm[i], NULL);
	result r;
	run(&r, bin_dkvctl, "--servers", list, "put", "k", "v", NULL);
	assert_exit(&r, 0);
	assert_int_equal(kid_signal(rep[0], SIGINT), 0);
	assert_int_equal(kid_signal(rep[1], SIGTERM), 0);
	assert_int_equal(kid_signal(rep[2], SIGHUP), 0);
	kid_log(rep[0], log, sizeof log);
	assert_contains("dkvd's log", log, "SIGINT received");
	assert_false(accepts(nm[0]));
}

/* ------------------------------------------------------------ tests: dkvctl */

/* dkvctl refuses bad usage with exit 2 and a message. */
static void test_dkvctl_refuses_bad_usage_with_exit_2(void **state)
{
	(void)state;
	struct {
		const char *args[8];
		const char *msg;
	} cases[] = {
		{ { NULL }, "which command?" },
		{ { "fetch", "k", NULL }, "unknown command 'fetch'" },
		{ { "--servers", "/tmp/a", "get", NULL }, "usage: dkvctl [OPTIONS] get KEY" },
		{ { "--servers", "/tmp/a", "put", "k", NULL }, "put KEY VALUE" },
		{ { "get", "k", NULL }, "no service address" },
		{ { "--servers", "/tmp/a", "--vs", "/tmp/v", "get", "k", NULL }, "say which with --service" },
		{ { "--service", "memcached", "get", "k", NULL }, "--service 'memcached'" },
		{ { "--servers", "/tmp/a", "--timeout", "soon", "get", "k", NULL }, "--timeout 'soon'" },
		{ { "--servers", "/tmp/a,", "get", "k", NULL }, "empty item" },
		{ { "query", NULL }, "give --shardmasters" },
		{ { "--shardmasters", "/tmp/s", "join", "zero", "/tmp/a", NULL }, "GID 'zero'" },
		{ { "--shardmasters", "/tmp/s", "move", "10", "100", NULL }, "SHARD '10'" },
		{ { "--shardmasters", "/tmp/s", "query", "x", NULL }, "NUM 'x'" },
		{ { "--bogus", NULL }, "unknown option '--bogus'" },
		{ { "view", NULL }, "give --vs" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		static result r;
		run_list(&r, bin_dkvctl, cases[i].args);
		if (r.code != 2)
			fail_msg("case %zu: exit %d, expected 2; stderr: %s", i, r.code, r.err);
		assert_contains("dkvctl's stderr", r.err, cases[i].msg);
		assert_contains("dkvctl's stderr", r.err, "Try 'dkvctl --help'");
	}
}

/* With nobody listening, dkvctl gives up after --timeout with exit 3 (and a JSON error). */
static void test_dkvctl_times_out_with_exit_3_when_no_server_answers(void **state)
{
	(void)state;
	char nm[3][DKV_NAME_MAX], list[1024], sm[1][DKV_NAME_MAX], smlist[256];
	names(nm, 3, "gone", list, sizeof list);
	names(sm, 1, "gonesm", smlist, sizeof smlist);
	result r;
	/* That it gives up at all is the check (run() fails a hang); how soon is make bench's. */
	run(&r, bin_dkvctl, "--servers", list, "--timeout", "300ms", "get", "k", NULL);
	assert_exit(&r, 3);
	assert_contains("dkvctl's stderr", r.err, "no answer within 300 ms");

	run(&r, bin_dkvctl, "--servers", list, "-t", "1s", "--json", "put", "k", "v", NULL);
	assert_exit(&r, 3);
	assert_contains("dkvctl --json", r.out, "{\"ok\":false,\"error\":\"timeout\",\"message\":");

	run(&r, bin_dkvctl, "--shardmasters", smlist, "--timeout", "300", "query", NULL);
	assert_exit(&r, 3);
	run(&r, bin_dkvctl, "--shardmasters", smlist, "--timeout", "300", "append", "k", "v", NULL);
	assert_exit(&r, 3);
	th_setenv("DKV_TIMEOUT", "200ms");
	run(&r, bin_dkvctl, "--shardmasters", smlist, "join", "100", nm[0], NULL);
	th_unsetenv("DKV_TIMEOUT");
	assert_exit(&r, 3);
	assert_contains("dkvctl's stderr", r.err, "within 200 ms");
}

/* ------------------------------------------------------------ tests: services */

/* A kvpaxos service of three dkvd processes keeps its data and answers after one is SIGKILLed. */
static void test_kvpaxos_daemons_keep_data_after_a_replica_is_sigkilled(void **state)
{
	(void)state;
	char nm[3][DKV_NAME_MAX], list[1024];
	names(nm, 3, "kv", list, sizeof list);
	kid *rep[3];
	for (int i = 0; i < 3; i++) {
		char me[8];
		snprintf(me, sizeof me, "%d", i);
		rep[i] = dkvd_start(nm[i], "kvpaxos", "--peers", list, "--me", me, NULL);
	}
	result r;
	run(&r, bin_dkvctl, "--servers", list, "put", "color", "blue", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "OK\n");
	run(&r, bin_dkvctl, "--servers", list, "append", "color", " green", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "--servers", list, "get", "color", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "blue green\n");
	/* JSON escapes what needs it. */
	run(&r, bin_dkvctl, "--servers", list, "put", "q", "say \"hi\"\n\\", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "--servers", list, "--json", "get", "q", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "{\"ok\":true,\"key\":\"q\",\"value\":\"say \\\"hi\\\"\\n\\\\\"}\n");
	run(&r, bin_dkvctl, "--servers", list, "--json", "append", "q", "!", NULL);
	assert_string_equal(r.out, "{\"ok\":true,\"op\":\"append\",\"key\":\"q\"}\n");
	/* A key never written reads as "" with exit 0, or exit 4 under --fail-empty. */
	run(&r, bin_dkvctl, "--servers", list, "get", "never", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "\n");
	run(&r, bin_dkvctl, "--servers", list, "--fail-empty", "get", "never", NULL);
	assert_exit(&r, 4);
	/* A value that starts with '-' goes after "--". */
	run(&r, bin_dkvctl, "--servers", list, "put", "n", "--", "-1", NULL);
	assert_exit(&r, 0);

	assert_int_equal(kid_signal(rep[0], SIGKILL), 128 + SIGKILL);
	run(&r, bin_dkvctl, "--servers", list, "get", "color", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "blue green\n");
	run(&r, bin_dkvctl, "--servers", list, "get", "n", NULL);
	assert_string_equal(r.out, "-1\n");
	run(&r, bin_dkvctl, "--servers", list, "append", "color", " red", NULL);
	assert_exit(&r, 0);
	/* The environment variable works as --servers does. */
	th_setenv("DKV_SERVERS", list);
	run(&r, bin_dkvctl, "get", "color", NULL);
	th_unsetenv("DKV_SERVERS");
	assert_exit(&r, 0);
	assert_string_equal(r.out, "blue green red\n");

	/* Two of three down: no majority, so a bounded call times out. */
	assert_int_equal(kid_signal(rep[1], SIGKILL), 128 + SIGKILL);
	run(&r, bin_dkvctl, "--servers", list, "--timeout", "500ms", "put", "x", "y", NULL);
	assert_exit(&r, 3);
	assert_int_equal(kid_signal(rep[2], SIGTERM), 0);
}

/* pbservice: the backup takes over with the data after the primary's dkvd is SIGKILLed. */
static void test_pbservice_daemons_fail_over_after_the_primary_is_sigkilled(void **state)
{
	(void)state;
	char vs[DKV_NAME_MAX], p[2][DKV_NAME_MAX];
	th_port(vs, "dd", "vs", 0);
	th_port(p[0], "dd", "pb", 0);
	th_port(p[1], "dd", "pb", 1);
	dkvd_start(vs, "viewservice", "--listen", vs, NULL);
	kid *primary = dkvd_start(p[0], "pbservice", "--listen", p[0], "--vs", vs, NULL);
	result r;
	char want[3 * DKV_NAME_MAX];
	snprintf(want, sizeof want, "primary %s, backup (none)", p[0]);
	WAIT_UNTIL((run(&r, bin_dkvctl, "--vs", vs, "view", NULL), strstr(r.out, want) != NULL), 10000);
	dkvd_start(p[1], "pbservice", "--listen", p[1], "--vs", vs, NULL);
	snprintf(want, sizeof want, "primary %s, backup %s", p[0], p[1]);
	WAIT_UNTIL((run(&r, bin_dkvctl, "--vs", vs, "view", NULL), strstr(r.out, want) != NULL), 10000);

	run(&r, bin_dkvctl, "--vs", vs, "put", "a", "1", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "--vs", vs, "append", "a", "2", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "--vs", vs, "--json", "view", NULL);
	assert_contains("dkvctl --json view", r.out, "\"backup\":\"");

	assert_int_equal(kid_signal(primary, SIGKILL), 128 + SIGKILL);
	snprintf(want, sizeof want, "primary %s,", p[1]);
	WAIT_UNTIL((run(&r, bin_dkvctl, "--vs", vs, "view", NULL), strstr(r.out, want) != NULL), 10000);
	run(&r, bin_dkvctl, "--vs", vs, "--service", "pbservice", "get", "a", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "12\n");
	run(&r, bin_dkvctl, "--vs", vs, "put", "b", "3", NULL);
	assert_exit(&r, 0);
}

/* shardkv: groups joined with dkvctl serve every shard, move shards, and keep
 * their data and answers after one replica per group is SIGKILLed. */
static void test_shardkv_daemons_join_move_and_serve_after_replicas_are_sigkilled(void **state)
{
	(void)state;
	char sm[3][DKV_NAME_MAX], smlist[1024];
	names(sm, 3, "sm", smlist, sizeof smlist);
	char g[2][3][DKV_NAME_MAX], glist[2][1024];
	names(g[0], 3, "ga", glist[0], sizeof glist[0]);
	names(g[1], 3, "gb", glist[1], sizeof glist[1]);
	for (int i = 0; i < 3; i++)
		dkvd_start(sm[i], "shardmaster", "--peers", smlist, "--listen", sm[i], NULL);
	kid *rep[2][3];
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 3; i++) {
			char me[8];
			snprintf(me, sizeof me, "%d", i);
			rep[k][i] = dkvd_start(g[k][i], "shardkv", "--gid", k ? "101" : "100", "--shardmasters",
			                       smlist, "--peers", glist[k], "--me", me, NULL);
		}
	th_setenv("DKV_SHARDMASTERS", smlist);
	result r;
	run(&r, bin_dkvctl, "join", "100", glist[0], NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "OK (config 1)\n");
	/* ADDR ADDR ADDR works as ADDR,ADDR,ADDR. */
	run(&r, bin_dkvctl, "--json", "join", "101", g[1][0], g[1][1], g[1][2], NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "{\"ok\":true,\"op\":\"join\",\"gid\":101,\"config\":2}\n");
	run(&r, bin_dkvctl, "query", NULL);
	assert_exit(&r, 0);
	assert_contains("dkvctl query", r.out, "config 2: 2 groups");
	assert_contains("dkvctl query", r.out, "group 100: 5 shards");
	assert_contains("dkvctl query", r.out, "group 101: 5 shards");
	run(&r, bin_dkvctl, "--json", "query", "1", NULL);
	assert_exit(&r, 0);
	assert_contains("dkvctl --json query 1", r.out,
	                "{\"ok\":true,\"num\":1,\"shards\":[100,100,100,100,100,100,100,100,100,100],");

	/* One key per shard ('a'..'j' cover first byte % 10). */
	char key[8], val[16];
	for (int s = 0; s < 10; s++) {
		snprintf(key, sizeof key, "%c", 'a' + s);
		snprintf(val, sizeof val, "v%d", s);
		run(&r, bin_dkvctl, "put", key, val, NULL);
		assert_exit(&r, 0);
	}
	run(&r, bin_dkvctl, "move", "0", "101", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "move", "9", "100", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "move", "1", "555", NULL);
	assert_exit(&r, 1);
	assert_contains("dkvctl's stderr", r.err, "move 1 555: invalid argument");

	assert_int_equal(kid_signal(rep[0][1], SIGKILL), 128 + SIGKILL);
	assert_int_equal(kid_signal(rep[1][2], SIGKILL), 128 + SIGKILL);
	for (int s = 0; s < 10; s++) {
		snprintf(key, sizeof key, "%c", 'a' + s);
		snprintf(val, sizeof val, "v%d\n", s);
		run(&r, bin_dkvctl, "get", key, NULL);
		assert_exit(&r, 0);
		assert_string_equal(r.out, val);
		run(&r, bin_dkvctl, "append", key, "+", NULL);
		assert_exit(&r, 0);
	}
	/* Reconfiguration still works with two replicas per group. */
	run(&r, bin_dkvctl, "leave", "100", NULL);
	assert_exit(&r, 0);
	run(&r, bin_dkvctl, "--json", "query", NULL);
	assert_contains("dkvctl --json query", r.out,
	                "\"shards\":[101,101,101,101,101,101,101,101,101,101]");
	run(&r, bin_dkvctl, "--fail-empty", "get", "e", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "v4+\n");
	th_unsetenv("DKV_SHARDMASTERS");
}

/* With --unreliable replicas (10% requests, 20% replies dropped) every append still lands once, in order. */
static void test_kvpaxos_daemons_apply_appends_once_when_unreliable(void **state)
{
	(void)state;
	char nm[3][DKV_NAME_MAX], list[1024];
	names(nm, 3, "ukv", list, sizeof list);
	for (int i = 0; i < 3; i++) {
		char me[8];
		snprintf(me, sizeof me, "%d", i);
		if (i == 2)
			th_setenv("DKV_UNRELIABLE", "1"); /* the variable works as the flag does */
		kid *k = i < 2 ? dkvd_start(nm[i], "kvpaxos", "--peers", list, "--me", me, "--unreliable", NULL)
		               : dkvd_start(nm[i], "kvpaxos", "--peers", list, "--me", me, NULL);
		th_unsetenv("DKV_UNRELIABLE");
		char log[OUT_MAX];
		kid_log(k, log, sizeof log);
		assert_contains("dkvd's log", log, "unreliable mode");
	}
	char want[512] = "", v[16];
	result r;
	for (int j = 0; j < 20; j++) {
		snprintf(v, sizeof v, "[%d]", j);
		run(&r, bin_dkvctl, "--servers", list, "append", "log", v, NULL);
		assert_exit(&r, 0);
		strcat(want, v);
	}
	strcat(want, "\n");
	run(&r, bin_dkvctl, "--servers", list, "get", "log", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, want);
}

/* The daemons work over loopback TCP too (ports chosen by the kernel). */
static void test_kvpaxos_daemons_serve_over_loopback_tcp(void **state)
{
	(void)state;
	char nm[3][64], list[256];
	kid *rep[3];
	bool up = false;
	/* A probed port may be taken before dkvd binds it: then try fresh ports. */
	for (int attempt = 0; attempt < 5 && !up; attempt++) {
		teardown_kids(NULL);
		list[0] = '\0';
		for (int i = 0; i < 3; i++) {
			snprintf(nm[i], sizeof nm[i], "tcp:127.0.0.1:%d", free_port());
			size_t l = strlen(list);
			snprintf(list + l, sizeof list - l, "%s%s", i ? "," : "", nm[i]);
		}
		/* Everything from the environment: DKV_PEERS and DKV_ME. */
		th_setenv("DKV_PEERS", list);
		up = true;
		for (int i = 0; i < 3 && up; i++) {
			char me[8];
			snprintf(me, sizeof me, "%d", i);
			th_setenv("DKV_ME", me);
			char *argv[] = { bin_dkvd, "kvpaxos", NULL };
			rep[i] = dkvd_spawn(true, nm[i], argv);
			up = rep[i] != NULL;
		}
		th_unsetenv("DKV_PEERS");
		th_unsetenv("DKV_ME");
	}
	assert_true(up);
	result r;
	run(&r, bin_dkvctl, "-p", list, "put", "k", "tcp", NULL);
	assert_exit(&r, 0);
	assert_int_equal(kid_signal(rep[2], SIGKILL), 128 + SIGKILL);
	run(&r, bin_dkvctl, "-p", list, "-j", "get", "k", NULL);
	assert_exit(&r, 0);
	assert_string_equal(r.out, "{\"ok\":true,\"key\":\"k\",\"value\":\"tcp\"}\n");
	assert_int_equal(kid_signal(rep[0], SIGTERM), 0);
	assert_int_equal(kid_signal(rep[1], SIGTERM), 0);
}

/* ------------------------------------------------------------ tests: main job */

/* dkv-cluster (make run) completes its checks and leaves no process or file behind. */
static void test_dkv_cluster_completes_and_leaves_nothing_behind(void **state)
{
	(void)state;
	result r;
	run(&r, bin_cluster, "--duration", "8", "--clients", "3", "--seed", "7", NULL);
	assert_exit(&r, 0);
	assert_contains("dkv-cluster output", r.out, "started 12 dkvd processes");
	assert_contains("dkv-cluster output", r.out, "SIGKILL group 100 replica");
	assert_contains("dkv-cluster output", r.out, "move shard");
	assert_contains("dkv-cluster output", r.out, "each exactly once, in order");
	assert_contains("dkv-cluster output", r.out, "each exited 0 on SIGTERM");
	assert_contains("dkv-cluster output", r.out, "dkv-cluster: OK");
	/* The log directory is gone, and so is every daemon it listed. */
	const char *d = strstr(r.out, "(logs in ");
	assert_non_null(d);
	char dir[PATH_MAX];
	assert_int_equal(sscanf(d, "(logs in %4095[^)])", dir), 1);
	struct stat st;
	assert_int_equal(stat(dir, &st), -1);
	int npids = 0;
	for (const char *p = strstr(r.out, " pid "); p != NULL; p = strstr(p + 1, " pid ")) {
		long pid = atol(p + 5);
		assert_true(pid > 0);
		assert_int_equal(kill((pid_t)pid, 0), -1);
		npids++;
	}
	assert_int_equal(npids, 12);
}

/* Ctrl-C (SIGINT) stops dkv-cluster early: every daemon stops, exit 130. */
static void test_dkv_cluster_stops_everything_on_sigint(void **state)
{
	(void)state;
	char out[DKV_NAME_MAX];
	th_port(out, "dd", "out", nfiles++);
	char *argv[] = { bin_cluster, "--duration", "60", "--clients", "2", NULL };
	pid_t pid = start_child(argv, out, out);
	static char text[OUT_MAX];
	WAIT_UNTIL((read_file(out, text, sizeof text), strstr(text, "ops/s") != NULL), 30000);
	kill(pid, SIGINT);
	int code = wait_child(pid, 30000, NULL);
	if (code < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail_msg("dkv-cluster did not stop within 30 s of SIGINT");
	}
	read_file(out, text, sizeof text);
	th_unlink(out);
	if (code != 130)
		fail_msg("exit %d, expected 130; output:\n%s", code, text);
	assert_contains("dkv-cluster output", text, "summary (interrupted)");
	assert_contains("dkv-cluster output", text, "each exited 0 on SIGTERM");
	for (const char *p = strstr(text, " pid "); p != NULL; p = strstr(p + 1, " pid "))
		assert_int_equal(kill((pid_t)atol(p + 5), 0), -1);
}

/* ------------------------------------------------------------ main */

static void find_bins(const char *argv0)
{
	char self[PATH_MAX];
	if (realpath(argv0, self) == NULL) {
		ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n <= 0) {
			fprintf(stderr, "test_daemons: cannot find my own path\n");
			exit(1);
		}
		self[n] = '\0';
	}
	char *slash = strrchr(self, '/');
	*slash = '\0';
	snprintf(bin_dkvd, sizeof bin_dkvd, "%.4000s/../bin/dkvd", self);
	snprintf(bin_dkvctl, sizeof bin_dkvctl, "%.4000s/../bin/dkvctl", self);
	snprintf(bin_cluster, sizeof bin_cluster, "%.4000s/../bin/dkv-cluster", self);
	const char *bins[] = { bin_dkvd, bin_dkvctl, bin_cluster };
	for (int i = 0; i < 3; i++)
		if (access(bins[i], X_OK) != 0) {
			fprintf(stderr, "test_daemons: %s is missing (run make)\n", bins[i]);
			exit(1);
		}
}

int main(int argc, char **argv)
{
	(void)argc;
	find_bins(argv[0]);
	/* The programs' environment is the test's: start from a clean one. */
	const char *vars[] = { "DKV_LISTEN", "DKV_PEERS", "DKV_ME", "DKV_VS", "DKV_SHARDMASTERS",
		               "DKV_GID", "DKV_UNRELIABLE", "DKV_SERVICE", "DKV_SERVERS", "DKV_TIMEOUT" };
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		unsetenv(vars[i]);
	/* The suite reads dkvd's info lines ("serving on"): keep DKV_LOG at info or below. */
	const char *lv = getenv("DKV_LOG");
	if (lv != NULL && strcasecmp(lv, "debug") != 0 && strcasecmp(lv, "info") != 0)
		setenv("DKV_LOG", "info", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_daemons_help_and_version_exit_0_on_stdout, teardown_kids),
		cmocka_unit_test_teardown(test_dkvd_refuses_bad_flags_with_exit_2_and_a_message, teardown_kids),
		cmocka_unit_test_teardown(test_dkvd_exits_1_when_the_tcp_address_is_in_use, teardown_kids),
		cmocka_unit_test_teardown(test_dkvd_keeps_a_live_unix_socket_and_replaces_a_stale_one,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_dkvd_exits_0_on_sigterm_and_on_sigint, teardown_kids),
		cmocka_unit_test_teardown(test_dkvctl_refuses_bad_usage_with_exit_2, teardown_kids),
		cmocka_unit_test_teardown(test_dkvctl_times_out_with_exit_3_when_no_server_answers,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_kvpaxos_daemons_keep_data_after_a_replica_is_sigkilled,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_pbservice_daemons_fail_over_after_the_primary_is_sigkilled,
		                          teardown_kids),
		cmocka_unit_test_teardown(
			test_shardkv_daemons_join_move_and_serve_after_replicas_are_sigkilled, teardown_kids),
		cmocka_unit_test_teardown(test_kvpaxos_daemons_apply_appends_once_when_unreliable,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_kvpaxos_daemons_serve_over_loopback_tcp, teardown_kids),
		cmocka_unit_test_teardown(test_dkv_cluster_completes_and_leaves_nothing_behind, teardown_kids),
		cmocka_unit_test_teardown(test_dkv_cluster_stops_everything_on_sigint, teardown_kids),
	};
	return th_run_suite("daemons", tests);
}
