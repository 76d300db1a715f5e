/*
 * tests/lib/proc.c — child processes and scratch directories (see proc.h).
 *
 * The table of children is guarded by a mutex (a test's worker thread may
 * ask tp_exited), but forks happen on the main thread. Between fork and exec
 * the child calls only async-signal-safe functions (the parent is
 * multi-threaded): every string it needs is prepared before the fork.
 */
#include "harness.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TP_MAX_KIDS 128
#define TP_MAX_DIRS 32

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t kids[TP_MAX_KIDS];
static int nkids;
static char *dirs[TP_MAX_DIRS];
static int ndirs;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void at_exit(void)
{
	tp_kill_all();
	tp_rm_tempdirs();
}

static void install(void)
{
	atexit(at_exit);
}

void tp_bin(char *buf, size_t len, const char *prog)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		fprintf(stderr, "proc: cannot find my own path\n");
		exit(1);
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	*slash = '\0';
	snprintf(buf, len, "%.3900s/../bin/%s", self, prog);
	if (access(buf, X_OK) != 0) {
		fprintf(stderr, "proc: %s is missing (run make)\n", buf);
		exit(1);
	}
}

static int code_of(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void forget(pid_t pid)
{
	pthread_mutex_lock(&mu);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid) {
			kids[i] = kids[--nkids];
			break;
		}
	pthread_mutex_unlock(&mu);
}

static bool recorded(pid_t pid)
{
	bool found = false;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < nkids && !found; i++)
		found = kids[i] == pid;
	pthread_mutex_unlock(&mu);
	return found;
}

pid_t tp_spawn(char *const argv[], const char *log)
{
	return tp_spawn_split(argv, log, NULL);
}

pid_t tp_spawn_split(char *const argv[], const char *log, const char *errlog)
{
	pthread_once(&once, install);
	pthread_mutex_lock(&mu);
	bool room = nkids < TP_MAX_KIDS;
	pthread_mutex_unlock(&mu);
	if (!room)
		fail_msg("proc: more than %d children", TP_MAX_KIDS);
	const char *out = log != NULL ? log : "/dev/null";
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		fail_msg("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(126);
		int in = open("/dev/null", O_RDONLY);
		int o = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int e = errlog == NULL ? o : open(errlog, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (in < 0 || o < 0 || e < 0)
			_exit(126);
		dup2(in, STDIN_FILENO);
		dup2(o, STDOUT_FILENO);
		dup2(e, STDERR_FILENO);
		close_range(3, ~0u, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], argv);
		_exit(127);
	}
	pthread_mutex_lock(&mu);
	kids[nkids++] = pid;
	pthread_mutex_unlock(&mu);
	return pid;
}

bool tp_exited(pid_t pid, int *code)
{
	if (pid <= 0 || !recorded(pid))
		return false;
	int st;
	pid_t r = waitpid(pid, &st, WNOHANG);
	if (r != pid)
		return false;
	forget(pid);
	if (code != NULL)
		*code = code_of(st);
	return true;
}

int tp_wait(pid_t pid, unsigned limit_ms)
{
	uint64_t deadline = th_now_ms() + limit_ms;
	int code;
	for (;;) {
		if (tp_exited(pid, &code))
			return code;
		if (th_now_ms() >= deadline)
			return -1;
		th_sleep_ms(2);
	}
}

int tp_signal(pid_t pid, int sig)
{
	if (pid <= 0 || !recorded(pid))
		fail_msg("proc: %ld is not a running child", (long)pid);
	kill(pid, sig);
	int code = tp_wait(pid, 15000);
	if (code < 0)
		fail_msg("proc: child %ld did not exit within 15 s of signal %d", (long)pid, sig);
	return code;
}

void tp_sigkill(pid_t pid)
{
	int code = tp_signal(pid, SIGKILL);
	if (code != 128 + SIGKILL)
		fail_msg("proc: child %ld had already exited (code %d) before its SIGKILL", (long)pid,
		         code);
}

int tp_running(void)
{
	pthread_mutex_lock(&mu);
	pid_t copy[TP_MAX_KIDS];
	int n = nkids;
	memcpy(copy, kids, (size_t)n * sizeof *copy);
	pthread_mutex_unlock(&mu);
	int running = 0;
	for (int i = 0; i < n; i++)
		running += !tp_exited(copy[i], NULL);
	return running;
}

int tp_kill_all(void)
{
	pthread_mutex_lock(&mu);
	pid_t copy[TP_MAX_KIDS];
	int n = nkids;
	memcpy(copy, kids, (size_t)n * sizeof *copy);
	nkids = 0;
	pthread_mutex_unlock(&mu);
	int ran = 0;
	for (int i = 0; i < n; i++) {
		if (waitpid(copy[i], NULL, WNOHANG) == copy[i])
			continue;
		ran++;
		kill(copy[i], SIGKILL);
		while (waitpid(copy[i], NULL, 0) < 0 && errno == EINTR)
			;
	}
	return ran;
}

bool tp_no_children(void)
{
	siginfo_t si;
	memset(&si, 0, sizeof si);
	/* WNOWAIT: look without reaping. ECHILD: no child at all. */
	int r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
	if (r < 0)
		return errno == ECHILD;
	(void)si;
	return false; /* a zombie (si_pid != 0) or a running child (si_pid == 0) */
}

/* ------------------------------------------------------------ directories */

char *tp_mkdtemp(char *buf, size_t len, const char *tag)
{
	pthread_once(&once, install);
	snprintf(buf, len, "%s/%s-%d-XXXXXX", th_dir(), tag, (int)getpid());
	if (mkdtemp(buf) == NULL)
		fail_msg("mkdtemp %s: %s", buf, strerror(errno));
	chmod(buf, 0777);
	pthread_mutex_lock(&mu);
	if (ndirs < TP_MAX_DIRS)
		dirs[ndirs++] = strdup(buf);
	pthread_mutex_unlock(&mu);
	return buf;
}

void tp_rm_tempdirs(void)
{
	pthread_mutex_lock(&mu);
	for (int i = 0; i < ndirs; i++) {
		if (dirs[i] != NULL && tp_rmrf(dirs[i]) != 0)
			fprintf(stderr, "proc: rm -rf %s: %s\n", dirs[i], strerror(errno));
		free(dirs[i]);
	}
	ndirs = 0;
	pthread_mutex_unlock(&mu);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		return -1;
	return 0;
}

int tp_rmrf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tp_mkdir(const char *path)
{
	if (mkdir(path, 0777) != 0)
		fail_msg("mkdir %s: %s", path, strerror(errno));
	chmod(path, 0777);
}

void tp_wipe_dir(const char *path)
{
	if (tp_rmrf(path) != 0)
		fail_msg("rm -rf %s: %s", path, strerror(errno));
	tp_mkdir(path);
}

static _Thread_local uint64_t du_sum;

static int du_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F || flag == FTW_SL)
		du_sum += (uint64_t)st->st_size;
	return 0;
}

uint64_t tp_du(const char *path)
{
	du_sum = 0;
	nftw(path, du_one, 16, FTW_PHYS);
	return du_sum;
}

size_t tp_read_file(const char *path, char *buf, size_t len)
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

void tp_tail(const char *path, int lines, const char *prefix)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	enum { W = 400 };
	char (*ring)[W] = calloc((size_t)lines, W);
	if (ring == NULL) {
		fclose(f);
		return;
	}
	int n = 0;
	char line[W];
	while (fgets(line, sizeof line, f) != NULL) {
		memcpy(ring[n % lines], line, W);
		n++;
	}
	fclose(f);
	for (int i = n > lines ? n - lines : 0; i < n; i++) {
		const char *l = ring[i % lines];
		fprintf(stderr, "%s%s%s", prefix, l, l[strlen(l) - 1] == '\n' ? "" : "\n");
	}
	free(ring);
}
