/*
 * cmd/dkv-cluster.c — the main job (`make run`): a local shardkv cluster of
 * separate dkvd processes on loopback TCP, driven by a live workload.
 *
 * What it does, in order:
 *   1. picks free loopback ports (the kernel chooses them: bind port 0,
 *      read the port, close; a daemon that still finds its port taken makes
 *      the whole start-up retry with fresh ports);
 *   2. starts 3 shard masters and 3 shardkv groups of 3 replicas, each a
 *      `dkvd` process (found next to this program) logging to its own file
 *      in a fresh temporary directory, and waits until each accepts
 *      connections;
 *   3. joins the groups with `dkvctl join` and shows `dkvctl query`;
 *   4. runs a mixed workload (Get 50%, Put 25%, Append 25%) from several
 *      client threads, each with its own shardkv clerk, with a live one-line
 *      progress display: ops/s, latency p50/p99/max, errors, timeouts;
 *   5. moves shards between groups, SIGKILLs one replica of each group and
 *      one shard master (every group and the shard master keep serving with
 *      two replicas of three), then restarts each of them on its data
 *      directory (--restart); SIGKILLs one more replica, wipes its directory
 *      (rm -rf; mkdir) and starts it with --restart, so that it rebuilds its
 *      state from its peers; SIGKILLs every replica of one group at once and
 *      starts them all again on their directories (a power cut of a group:
 *      nothing it acknowledged may be lost); and moves shards again;
 *   6. reads back every client's Append log (each acknowledged append exactly
 *      once, in order — across every restart), prints a summary and the
 *      status of every replica (`dkvctl status`);
 *   7. stops every daemon it started, by pid (SIGTERM, then SIGKILL after a
 *      grace period), reaps them and removes the run directory.
 *
 * Every daemon keeps its state in its own data directory, <run dir>/data/
 * <label>, next to its log, <run dir>/<label>.log; each start after its first
 * gets --restart. The phase on the live line names the fault of the moment.
 *
 * Ctrl-C (or SIGTERM/SIGHUP) at any point skips to step 7; a second one
 * kills the daemons at once. Each daemon also gets PR_SET_PDEATHSIG, so even
 * a SIGKILLed dkv-cluster leaves no daemon behind. Daemons run in their own
 * process group so that the terminal's Ctrl-C reaches only this program,
 * which then stops them in order.
 *
 * Exit status: 0 the run completed and every check passed; 1 a check or the
 * start-up failed; 2 bad usage; 130 interrupted.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "lib/cli.h"
#include "lib/status_cmd.h"

#define MAX_DAEMONS 64
#define OP_TIMEOUT_MS 5000u
#define FIRST_GID 100
#define NBUCKETS 256 /* latency histogram: 8 sub-buckets per power of two of µs */

static const char usage_text[] =
	"NAME\n"
	"    dkv-cluster - run a local dkv shardkv cluster under a live workload\n"
	"\n"
	"SYNOPSIS\n"
	"    dkv-cluster [OPTIONS]\n"
	"\n"
	"DESCRIPTION\n"
	"    Starts a shardkv cluster of separate dkvd processes on 127.0.0.1 (free\n"
	"    ports chosen by the kernel): 3 shard masters and 3 replica groups of 3.\n"
	"    It joins the groups (dkvctl join), runs a mixed Get/Put/Append workload\n"
	"    from several clients with a live one-line display (ops/s, latency,\n"
	"    errors), moves shards, SIGKILLs one replica of each group and one shard\n"
	"    master and restarts them on their data directories, SIGKILLs a replica\n"
	"    and restarts it with its directory wiped (it rebuilds its state from\n"
	"    its peers), SIGKILLs a whole group at once and starts it again on its\n"
	"    directories, moves shards again, checks every client's appends (each\n"
	"    acknowledged one exactly once, in order), prints a summary and stops\n"
	"    every process it started. Each daemon keeps its state in a data\n"
	"    directory (--dir) under a temporary run directory, with its log; the\n"
	"    run directory is removed at the end unless --keep-logs is given or\n"
	"    something failed. dkvd and dkvctl are taken from the directory of this\n"
	"    program. `make run` runs it.\n"
	"\n"
	"OPTIONS\n"
	"    -d, --duration SECS   workload length in seconds (default 30, min 8)\n"
	"    -c, --clients N       client threads, one clerk each (default 8)\n"
	"    -k, --keys N          shared keys for Get and Put (default 100)\n"
	"    -g, --groups N        shardkv replica groups (default 3)\n"
	"    -r, --replicas N      replicas per group (default 3)\n"
	"    -m, --masters N       shard master replicas (default 3)\n"
	"        --seed N          seed for the workload and the choice of victims\n"
	"        --keep-logs       keep the run directory (logs and data directories)\n"
	"        --ack-log FILE    write a machine-readable log to FILE, a line per event:\n"
	"                          'shardmasters A,B,C', 'daemon LABEL PID' (each start),\n"
	"                          'sigkill LABEL PID',\n"
	"                          'append CLIENT J KEY ok|unknown' (the value appended\n"
	"                          is 'x CLIENT J y'), 'stopped' (the workload ended)\n"
	"        --hold            after the workload, write 'hold' to the --ack-log and\n"
	"                          wait for SIGUSR1 before checking and stopping (an outside\n"
	"                          checker reads the cluster meanwhile)\n"
	"        --memory          no data directories: state in memory only; killed\n"
	"                          replicas restart with --restart and rebuild their\n"
	"                          state from their peers (no whole-group restart)\n"
	"    -h, --help            show this text and exit\n"
	"    -V, --version         show the version and exit\n"
	"\n"
	"SIGNALS\n"
	"    Ctrl-C, SIGTERM or SIGHUP stop the workload and every daemon, then exit\n"
	"    130; a second one kills the daemons at once.\n"
	"\n"
	"EXIT STATUS\n"
	"    0 completed and every check passed, 1 a check or the start-up failed,\n"
	"    2 bad usage, 130 interrupted.\n";

/* ---------------------------------------------------------------- settings */

static struct {
	unsigned duration_s;
	int clients, keys, groups, replicas, masters;
	unsigned seed;
	bool keep_logs;
	const char *ack_log; /* --ack-log FILE, or NULL */
	bool hold;           /* --hold */
	bool memory; /* --memory: no data directories */
	bool tty;
	char bindir[PATH_MAX];
	char dkvd[PATH_MAX + 8], dkvctl[PATH_MAX + 8];
	char logdir[PATH_MAX];
	char user_log[16]; /* DKV_LOG as the user set it ("" if not) */
} cfg;

static volatile sig_atomic_t interrupted; /* count of stop signals received */

static void on_signal(int sig)
{
	(void)sig;
	interrupted++;
}

static bool stopping(void)
{
	return interrupted > 0;
}

/* --ack-log: one line per event, for an outside checker (written whole, flushed). */
static FILE *ack_file;
static volatile sig_atomic_t hold_released; /* SIGUSR1 received (--hold) */

static void on_usr1(int sig)
{
	(void)sig;
	hold_released = 1;
}

static void ack(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ack(const char *fmt, ...)
{
	if (ack_file == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	flockfile(ack_file);
	vfprintf(ack_file, fmt, ap);
	fputc('\n', ack_file);
	fflush(ack_file);
	funlockfile(ack_file);
	va_end(ap);
}

/* ---------------------------------------------------------------- output */

static uint64_t t_start_ms;
static unsigned seed0; /* --seed as given (cfg.seed is consumed by rand_r) */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static bool progress_shown; /* a progress line without newline is on screen (tty only) */

static double elapsed_s(void)
{
	return (double)(cli_now_ms() - t_start_ms) / 1000.0;
}

/* event: one timestamped line, clearing the progress line first on a tty. */
static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void event(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&out_mu);
	if (progress_shown)
		fputs("\r\033[K", stdout);
	progress_shown = false;
	printf("[%5.1fs] %s\n", elapsed_s(), msg);
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&out_mu);
	vprintf(fmt, ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
	va_end(ap);
}

/* ---------------------------------------------------------------- daemons */

struct daemon {
	char label[32];   /* "sm0", "g100-2" */
	char addr[64];    /* tcp:127.0.0.1:PORT */
	int port;
	char log[PATH_MAX + 40];
	char dir[PATH_MAX + 40]; /* its data directory */
	pid_t pid;        /* 0 once reaped */
	int status;       /* wait status once reaped */
	bool killed;      /* SIGKILLed on purpose (and not restarted since) */
	int starts;       /* every start after the first gets --restart */
};

static struct daemon daemons[MAX_DAEMONS];
static int ndaemons;
static char sm_list[MAX_DAEMONS * 64];

/* probe_ports: n distinct free loopback ports, chosen by the kernel. */
static bool probe_ports(int n, int *ports)
{
	int fds[MAX_DAEMONS];
	bool ok = true;
	int k = 0;
	for (; k < n; k++) {
		fds[k] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t sl = sizeof sa;
		if (fds[k] < 0 || bind(fds[k], (struct sockaddr *)&sa, sizeof sa) != 0 ||
		    getsockname(fds[k], (struct sockaddr *)&sa, &sl) != 0) {
			fprintf(stderr, "dkv-cluster: cannot probe a free port: %s\n", strerror(errno));
			if (fds[k] >= 0)
				close(fds[k]);
			ok = false;
			break;
		}
		ports[k] = ntohs(sa.sin_port);
	}
	for (int i = 0; i < k; i++)
		close(fds[i]);
	return ok;
}

/* spawn: fork and exec argv with stdout/stderr to `log` (NULL: inherit). */
static pid_t spawn(char *const argv[], const char *log, bool daemon_child)
{
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		return pid;
	/* child */
	if (daemon_child) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		/* The daemons log at their default level, info (which start_cluster
		 * reads), or at debug if the user asked for it. */
		if (strcasecmp(cfg.user_log, "debug") == 0)
			setenv("DKV_LOG", "debug", 1);
		else
			unsetenv("DKV_LOG");
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	int in = open("/dev/null", O_RDONLY);
	if (in >= 0) {
		dup2(in, STDIN_FILENO);
		close(in);
	}
	if (log != NULL) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd < 0)
			_exit(127);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	execv(argv[0], argv);
	fprintf(stderr, "dkv-cluster: exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static bool reap(struct daemon *d, bool block)
{
	if (d->pid <= 0)
		return true;
	int st;
	pid_t r;
	do
		r = waitpid(d->pid, &st, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	if (r == d->pid || (r < 0 && errno == ECHILD)) {
		d->status = r == d->pid ? st : 0;
		d->pid = 0;
		return true;
	}
	return false;
}

static bool port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

static void show_log_tail(const struct daemon *d)
{
	FILE *f = fopen(d->log, "r");
	if (f == NULL)
		return;
	char lines[5][512];
	int n = 0;
	char buf[512];
	while (fgets(buf, sizeof buf, f) != NULL) {
		memcpy(lines[n % 5], buf, sizeof buf);
		n++;
	}
	fclose(f);
	int from = n > 5 ? n - 5 : 0;
	for (int i = from; i < n; i++)
		fprintf(stderr, "    %s: %s", d->label, lines[i % 5]);
}

static bool log_contains(const struct daemon *d, const char *needle)
{
	FILE *f = fopen(d->log, "r");
	if (f == NULL)
		return false;
	char buf[1024];
	bool found = false;
	while (!found && fgets(buf, sizeof buf, f) != NULL)
		found = strstr(buf, needle) != NULL;
	fclose(f);
	return found;
}

/*
 * stop_all: SIGTERM every live daemon, wait up to grace_ms for all, then
 * SIGKILL and reap the rest. Returns how many did not exit 0 on SIGTERM
 * (the ones killed on purpose excepted).
 */
static int stop_all(unsigned grace_ms, bool report)
{
	for (int i = 0; i < ndaemons; i++)
		if (daemons[i].pid > 0)
			kill(daemons[i].pid, SIGTERM);
	uint64_t deadline = cli_now_ms() + grace_ms;
	for (;;) {
		bool all = true;
		for (int i = 0; i < ndaemons; i++)
			if (!reap(&daemons[i], false))
				all = false;
		if (all || cli_now_ms() > deadline || interrupted > 1)
			break;
		cli_sleep_ms(20);
	}
	int bad = 0;
	for (int i = 0; i < ndaemons; i++) {
		struct daemon *d = &daemons[i];
		if (d->pid > 0) {
			kill(d->pid, SIGKILL);
			reap(d, true);
			d->status = -1;
		}
		if (d->killed)
			continue;
		if (d->status == -1 || !WIFEXITED(d->status) || WEXITSTATUS(d->status) != 0) {
			bad++;
			if (!report)
				continue;
			if (d->status == -1)
				fprintf(stderr, "dkv-cluster: %s did not stop within %u ms: SIGKILLed\n",
				        d->label, grace_ms);
			else if (WIFSIGNALED(d->status))
				fprintf(stderr, "dkv-cluster: %s died of signal %d\n", d->label,
				        WTERMSIG(d->status));
			else
				fprintf(stderr, "dkv-cluster: %s exited %d\n", d->label, WEXITSTATUS(d->status));
		}
	}
	return bad;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rmrf: rm -rf path (nothing if it is absent); 0 or -1 with errno. */
static int rmrf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_logdir(void)
{
	if (rmrf(cfg.logdir) != 0)
		fprintf(stderr, "dkv-cluster: rm -rf %s: %s\n", cfg.logdir, strerror(errno));
}

static void add_daemon(const char *label, int port)
{
	struct daemon *d = &daemons[ndaemons++];
	memset(d, 0, sizeof *d);
	snprintf(d->label, sizeof d->label, "%s", label);
	d->port = port;
	snprintf(d->addr, sizeof d->addr, "tcp:127.0.0.1:%d", port);
	snprintf(d->log, sizeof d->log, "%s/%s.log", cfg.logdir, label);
	snprintf(d->dir, sizeof d->dir, "%s/data/%s", cfg.logdir, label);
	d->starts = 0;
}

static struct daemon *group_replica(int g, int r)
{
	return &daemons[cfg.masters + g * cfg.replicas + r];
}

static void group_list(int g, char *buf, size_t len)
{
	buf[0] = '\0';
	for (int r = 0; r < cfg.replicas; r++) {
		size_t l = strlen(buf);
		snprintf(buf + l, len - l, "%s%s", r ? "," : "", group_replica(g, r)->addr);
	}
}

/*
 * spawn_daemon: start daemon i (a shard master or a shardkv replica) on its
 * address and data directory; every start after its first gets --restart.
 * Sets d->pid (-1 if fork failed).
 */
static void spawn_daemon(int i)
{
	struct daemon *d = &daemons[i];
	char me[16], gid[32], glist[MAX_DAEMONS * 64];
	char *argv[20];
	int n = 0;
	argv[n++] = cfg.dkvd;
	if (i < cfg.masters) {
		snprintf(me, sizeof me, "%d", i);
		argv[n++] = "shardmaster";
		argv[n++] = "--peers";
		argv[n++] = sm_list;
	} else {
		int g = (i - cfg.masters) / cfg.replicas, r = (i - cfg.masters) % cfg.replicas;
		snprintf(me, sizeof me, "%d", r);
		snprintf(gid, sizeof gid, "%d", FIRST_GID + g);
		group_list(g, glist, sizeof glist);
		argv[n++] = "shardkv";
		argv[n++] = "--gid";
		argv[n++] = gid;
		argv[n++] = "--shardmasters";
		argv[n++] = sm_list;
		argv[n++] = "--peers";
		argv[n++] = glist;
	}
	argv[n++] = "--me";
	argv[n++] = me;
	if (!cfg.memory) {
		argv[n++] = "--dir";
		argv[n++] = d->dir;
	}
	if (d->starts > 0)
		argv[n++] = "--restart";
	argv[n] = NULL;
	d->pid = spawn(argv, d->log, true);
	d->starts++;
	if (d->pid > 0)
		ack("daemon %s %ld", d->label, (long)d->pid);
}

/*
 * start_cluster: one attempt to start every daemon on fresh ports. Returns 0
 * when all accept connections, 1 when one found its address in use (the
 * caller retries), 2 when this build's dkvd lacks --dir (the caller retries
 * with --memory), -1 on any other failure or an interrupt.
 */
static int start_cluster(void)
{
	int n = cfg.masters + cfg.groups * cfg.replicas;
	int ports[MAX_DAEMONS];
	ndaemons = 0;
	if (!probe_ports(n, ports))
		return -1;
	char label[32];
	for (int i = 0; i < cfg.masters; i++) {
		snprintf(label, sizeof label, "sm%d", i);
		add_daemon(label, ports[i]);
	}
	for (int g = 0; g < cfg.groups; g++)
		for (int r = 0; r < cfg.replicas; r++) {
			snprintf(label, sizeof label, "g%d-%d", FIRST_GID + g, r);
			add_daemon(label, ports[cfg.masters + g * cfg.replicas + r]);
		}
	sm_list[0] = '\0';
	for (int i = 0; i < cfg.masters; i++) {
		size_t l = strlen(sm_list);
		snprintf(sm_list + l, sizeof sm_list - l, "%s%s", i ? "," : "", daemons[i].addr);
	}
	char data[PATH_MAX + 8];
	snprintf(data, sizeof data, "%s/data", cfg.logdir);
	if (rmrf(data) != 0 || mkdir(data, 0700) != 0) {
		fprintf(stderr, "dkv-cluster: mkdir %s: %s\n", data, strerror(errno));
		return -1;
	}
	for (int i = 0; i < ndaemons; i++) {
		struct daemon *d = &daemons[i];
		unlink(d->log);
		spawn_daemon(i);
		if (d->pid < 0) {
			fprintf(stderr, "dkv-cluster: fork: %s\n", strerror(errno));
			d->pid = 0;
			return -1;
		}
	}
	/* Wait until each is up: it logged "serving on" (so the port is its own,
	 * not another process's) and accepts connections; or until it exits. */
	uint64_t deadline = cli_now_ms() + 10000;
	for (int i = 0; i < ndaemons; i++) {
		struct daemon *d = &daemons[i];
		while (!log_contains(d, "serving on ") || !port_accepts(d->port)) {
			if (stopping())
				return -1;
			if (reap(d, false)) {
				if (log_contains(d, "address already in use"))
					return 1;
				if (!cfg.memory && log_contains(d, "--dir: this build"))
					return 2;
				fprintf(stderr, "dkv-cluster: %s (dkvd) exited during start-up; its log:\n",
				        d->label);
				show_log_tail(d);
				return -1;
			}
			if (cli_now_ms() > deadline) {
				fprintf(stderr, "dkv-cluster: %s does not accept connections after 10 s\n",
				        d->label);
				show_log_tail(d);
				return -1;
			}
			cli_sleep_ms(10);
		}
	}
	return 0;
}

/* run_ctl: print "$ dkvctl ARGS" and run it with our stdout; its exit status (or -1). */
static int run_ctl(const char *shown, char *const argv[])
{
	say("$ dkvctl %s\n", shown);
	pid_t pid = spawn(argv, NULL, false);
	if (pid < 0)
		return -1;
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---------------------------------------------------------------- workload */

static atomic_bool load_stop;
static atomic_ulong n_ok, n_err, n_timeout;
static atomic_ulong n_get, n_put, n_append;
static atomic_ulong hist[NBUCKETS];
static atomic_ulong lat_max_us;

static int bucket_of(uint64_t us)
{
	if (us < 8)
		return (int)us;
	int e = 63 - __builtin_clzll(us); /* us in [2^e, 2^(e+1)) */
	int sub = (int)((us >> (e - 3)) & 7);
	int b = (e - 2) * 8 + sub;
	return b < NBUCKETS ? b : NBUCKETS - 1;
}

static uint64_t bucket_upper_us(int b)
{
	if (b < 8)
		return (uint64_t)b + 1;
	int e = b / 8 + 2, sub = b % 8;
	return ((uint64_t)(8 + sub + 1)) << (e - 3);
}

/* A quantile of a histogram, in ms (upper bound of the bucket). */
static double quantile_ms(const unsigned long *h, unsigned long total, double q)
{
	if (total == 0)
		return 0.0;
	unsigned long want = (unsigned long)((double)total * q);
	if (want >= total)
		want = total - 1;
	unsigned long acc = 0;
	for (int b = 0; b < NBUCKETS; b++) {
		acc += h[b];
		if (acc > want)
			return (double)bucket_upper_us(b) / 1000.0;
	}
	return (double)bucket_upper_us(NBUCKETS - 1) / 1000.0;
}

static void account(uint64_t t0, int rc)
{
	uint64_t dt = cli_now_us() - t0;
	if (rc == DKV_OK)
		atomic_fetch_add(&n_ok, 1);
	else if (rc == DKV_ERR_TIMEOUT)
		atomic_fetch_add(&n_timeout, 1);
	else
		atomic_fetch_add(&n_err, 1);
	atomic_fetch_add(&hist[bucket_of(dt)], 1);
	unsigned long m = atomic_load(&lat_max_us);
	while (dt > m && !atomic_compare_exchange_weak(&lat_max_us, &m, dt))
		;
}

/* Letters whose byte values cover every shard (byte % 10): 'a'..'j'. */
static char shard_letter(int i)
{
	return (char)('a' + i % SHARDMASTER_NSHARDS);
}

struct client {
	int id;
	pthread_t tid;
	unsigned seed;
	char logkey[32];
	int next_j;       /* next append index */
	unsigned char *acked; /* acked[j]: 1 acknowledged, 2 outcome unknown (error/timeout) */
	int cap;
	bool started;
};

static struct client *clients;
static bool load_abandoned; /* threads left running after a second Ctrl-C */

static void *client_main(void *arg)
{
	struct client *c = arg;
	const char *sms[MAX_DAEMONS];
	for (int i = 0; i < cfg.masters; i++)
		sms[i] = daemons[i].addr;
	shardkv_clerk *ck = shardkv_clerk_new(sms, cfg.masters);
	if (ck == NULL) {
		atomic_fetch_add(&n_err, 1);
		return NULL;
	}
	shardkv_clerk_set_timeout(ck, OP_TIMEOUT_MS);
	char key[32], val[64];
	while (!atomic_load(&load_stop)) {
		unsigned r = (unsigned)rand_r(&c->seed) % 100;
		int k = rand_r(&c->seed) % cfg.keys;
		snprintf(key, sizeof key, "%c-key-%d", shard_letter(k), k);
		uint64_t t0 = cli_now_us();
		int rc;
		if (r < 50) {
			char *v = NULL;
			rc = shardkv_clerk_get(ck, key, &v);
			free(v);
			atomic_fetch_add(&n_get, 1);
		} else if (r < 75) {
			snprintf(val, sizeof val, "v-%d-%u", c->id, (unsigned)rand_r(&c->seed));
			rc = shardkv_clerk_put(ck, key, val);
			atomic_fetch_add(&n_put, 1);
		} else {
			if (c->next_j == c->cap) {
				int ncap = c->cap ? c->cap * 2 : 1024;
				unsigned char *na = realloc(c->acked, (size_t)ncap);
				if (na == NULL)
					break;
				memset(na + c->cap, 0, (size_t)(ncap - c->cap));
				c->acked = na;
				c->cap = ncap;
			}
			snprintf(val, sizeof val, "x %d %d y", c->id, c->next_j);
			rc = shardkv_clerk_append(ck, c->logkey, val);
			c->acked[c->next_j++] = rc == DKV_OK ? 1 : 2;
			ack("append %d %d %s %s", c->id, c->next_j - 1, c->logkey, rc == DKV_OK ? "ok" : "unknown");
			atomic_fetch_add(&n_append, 1);
		}
		account(t0, rc);
	}
	shardkv_clerk_free(ck);
	return NULL;
}

/*
 * check_log: v is client c's log: tokens "x <id> <j> y". Every acknowledged j
 * must occur exactly once, j must grow strictly along v, and no token may be
 * foreign or malformed. An append whose outcome is unknown may occur at most once.
 */
static bool check_log(const struct client *c, const char *v, char *why, size_t len)
{
	int last = -1;
	unsigned char *seen = calloc((size_t)(c->next_j + 1), 1);
	if (seen == NULL) {
		snprintf(why, len, "out of memory");
		return false;
	}
	const char *p = v;
	bool ok = true;
	while (*p != '\0') {
		int id, j, n = 0;
		if (sscanf(p, "x %d %d y%n", &id, &j, &n) != 2 || n == 0) {
			snprintf(why, len, "malformed log at offset %ld", (long)(p - v));
			ok = false;
			break;
		}
		if (id != c->id || j < 0 || j >= c->next_j) {
			snprintf(why, len, "foreign entry 'x %d %d y'", id, j);
			ok = false;
			break;
		}
		if (j <= last) {
			snprintf(why, len, "append %d %s", j, seen[j] ? "applied twice" : "out of order");
			ok = false;
			break;
		}
		seen[j] = 1;
		last = j;
		p += n;
	}
	for (int j = 0; ok && j < c->next_j; j++)
		if (c->acked[j] == 1 && !seen[j]) {
			snprintf(why, len, "acknowledged append %d is missing", j);
			ok = false;
		}
	free(seen);
	return ok;
}

/* ---------------------------------------------------------------- progress */

struct snap {
	uint64_t t_ms;
	unsigned long ok, err, to;
	unsigned long h[NBUCKETS];
};

static void take_snap(struct snap *s)
{
	s->t_ms = cli_now_ms();
	s->ok = atomic_load(&n_ok);
	s->err = atomic_load(&n_err);
	s->to = atomic_load(&n_timeout);
	for (int b = 0; b < NBUCKETS; b++)
		s->h[b] = atomic_load(&hist[b]);
}

#define RING 5 /* snapshots every 250 ms: rates over the last second */
static struct snap ring[RING];
static int ring_n;
static const char *phase = "starting";
static unsigned n_killed, n_sm_killed;
static unsigned n_restarted, n_wiped, n_group_restarts, n_group_replicas;
static int group_off = -1; /* the group powered off and on, -1 if none */

/* fmt_ms: a latency in at most 6 characters: "0.83ms", "14.3ms", "295ms". */
static void fmt_ms(char *buf, size_t len, double ms)
{
	if (ms < 10.0)
		snprintf(buf, len, "%.2fms", ms);
	else if (ms < 100.0)
		snprintf(buf, len, "%.1fms", ms);
	else
		snprintf(buf, len, "%.0fms", ms);
}

static void progress_tick(bool force_line)
{
	struct snap *cur = &ring[ring_n % RING];
	take_snap(cur);
	struct snap *old = &ring[ring_n >= RING - 1 ? (ring_n - (RING - 1)) % RING : 0];
	ring_n++;
	double dt = (double)(cur->t_ms - old->t_ms) / 1000.0;
	unsigned long h[NBUCKETS], tot = 0;
	for (int b = 0; b < NBUCKETS; b++) {
		h[b] = cur->h[b] - old->h[b];
		tot += h[b];
	}
	double rate = dt > 0 ? (double)(cur->ok + cur->err + cur->to - old->ok - old->err - old->to) / dt : 0;
	char line[256], p50[16], p99[16];
	fmt_ms(p50, sizeof p50, quantile_ms(h, tot, 0.5));
	fmt_ms(p99, sizeof p99, quantile_ms(h, tot, 0.99));
	/* Most important first: a narrow terminal cuts the end. */
	snprintf(line, sizeof line, "[%5.1fs] %-14s %5.0f ops/s  p50 %-6s p99 %-6s  errors %lu timeouts %lu  ok %lu",
	         elapsed_s(), phase, rate, p50, p99, cur->err, cur->to, cur->ok);
	pthread_mutex_lock(&out_mu);
	if (cfg.tty) {
		/* A line that wraps could not be redrawn with \r: cut it to the width. */
		struct winsize ws;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && ws.ws_col < sizeof line)
			line[ws.ws_col - 1] = '\0';
		printf("\r\033[K%s", line);
		progress_shown = true;
	} else if (force_line) {
		printf("%s\n", line);
	}
	fflush(stdout);
	pthread_mutex_unlock(&out_mu);
}

/* Per-phase totals for the summary. */
struct phase_stat {
	const char *name;
	uint64_t t0, t1;
	unsigned long ops0, ops1, err0, err1;
};
static struct phase_stat phases[12];
static int nphases;

static unsigned long total_ops(void)
{
	return atomic_load(&n_ok) + atomic_load(&n_err) + atomic_load(&n_timeout);
}

static unsigned long total_bad(void)
{
	return atomic_load(&n_err) + atomic_load(&n_timeout);
}

static void enter_phase(const char *name)
{
	uint64_t now = cli_now_ms();
	if (nphases > 0) {
		phases[nphases - 1].t1 = now;
		phases[nphases - 1].ops1 = total_ops();
		phases[nphases - 1].err1 = total_bad();
	}
	if (name == NULL || nphases == (int)(sizeof phases / sizeof phases[0]))
		return;
	phases[nphases].name = name;
	phases[nphases].t0 = now;
	phases[nphases].ops0 = total_ops();
	phases[nphases].err0 = total_bad();
	nphases++;
	phase = name;
}

/* wait_until: run the progress display until elapsed >= s (or a stop). */
static uint64_t last_line;

static void run_until(double s)
{
	while (!stopping() && elapsed_s() < s) {
		uint64_t now = cli_now_ms();
		bool line = now - last_line >= 2000;
		if (line)
			last_line = now;
		progress_tick(line);
		cli_sleep_ms(250);
	}
}

/* ---------------------------------------------------------------- actions */

static shardmaster_clerk *smck;
static int n_moves;

static int64_t owner_of(int shard, int *num)
{
	shardmaster_config *c = NULL;
	int64_t gid = 0;
	if (shardmaster_clerk_query(smck, -1, &c) == DKV_OK) {
		gid = c->shards[shard];
		if (num)
			*num = c->num;
	}
	shardmaster_config_free(c);
	return gid;
}

/* move_shard: give `shard` to the next live-numbered group after its owner. */
static void move_shard(int shard)
{
	int64_t from = owner_of(shard, NULL);
	if (from == 0) {
		event("move shard %d: cannot read the configuration", shard);
		return;
	}
	int64_t to = FIRST_GID + ((from - FIRST_GID + 1) % cfg.groups);
	uint64_t t0 = cli_now_ms();
	int rc = shardmaster_clerk_move(smck, shard, to);
	int num = -1;
	owner_of(shard, &num);
	if (rc == DKV_OK)
		n_moves++;
	if (rc == DKV_OK)
		event("move shard %d: group %lld -> %lld (config %d, %llu ms)", shard, (long long)from,
		      (long long)to, num, (unsigned long long)(cli_now_ms() - t0));
	else
		event("move shard %d -> %lld failed: %s", shard, (long long)to, dkv_strerror(rc));
}

/* sigkill: kill one daemon on purpose and reap it. */
static void sigkill(struct daemon *d, const char *what)
{
	if (d->pid <= 0)
		return;
	pid_t pid = d->pid;
	kill(pid, SIGKILL);
	reap(d, true);
	d->killed = true;
	ack("sigkill %s %ld", d->label, (long)pid);
	event("SIGKILL %s (pid %ld, %s)", what, (long)pid, d->addr);
}

/* count_in_log: how many lines of the daemon's log contain `needle`. */
static int count_in_log(const struct daemon *d, const char *needle)
{
	FILE *f = fopen(d->log, "r");
	if (f == NULL)
		return 0;
	char buf[1024];
	int n = 0;
	while (fgets(buf, sizeof buf, f) != NULL)
		n += strstr(buf, needle) != NULL;
	fclose(f);
	return n;
}

/*
 * wait_serving: wait (showing progress) until daemon d's latest start logged
 * "serving on" and its port accepts; false if it exited or is not up in 15 s.
 */
static bool wait_serving(struct daemon *d)
{
	uint64_t deadline = cli_now_ms() + 15000, next_tick = 0;
	while (count_in_log(d, "serving on ") < d->starts || !port_accepts(d->port)) {
		if (stopping())
			return false;
		if (reap(d, false) || cli_now_ms() > deadline) {
			event("%s did not come back up; the end of its log:", d->label);
			show_log_tail(d);
			return false;
		}
		if (cli_now_ms() >= next_tick) {
			progress_tick(false);
			next_tick = cli_now_ms() + 250;
		}
		cli_sleep_ms(20);
	}
	return true;
}

/*
 * restart: start a daemon SIGKILLed before on its data directory, with
 * --restart; `wiped`: its directory was emptied first (it rebuilds its state
 * from its peers). Returns false if it does not come back.
 */
static bool restart(struct daemon *d, const char *what, bool wiped)
{
	if (d->pid > 0 || stopping())
		return d->pid > 0;
	uint64_t t0 = cli_now_ms();
	spawn_daemon((int)(d - daemons));
	if (d->pid < 0) {
		d->pid = 0;
		event("restart %s: fork: %s", what, strerror(errno));
		return false;
	}
	d->killed = false;
	bool up = wait_serving(d);
	if (up && cfg.memory)
		event("restart %s with --restart, state from its peers (pid %ld, serving after %llu ms)",
		      what, (long)d->pid, (unsigned long long)(cli_now_ms() - t0));
	else if (up)
		event("restart %s on its %s directory with --restart (pid %ld, serving after %llu ms)",
		      what, wiped ? "wiped" : "data", (long)d->pid,
		      (unsigned long long)(cli_now_ms() - t0));
	return up;
}

static void replica_name(char *buf, size_t len, int g, int r)
{
	snprintf(buf, len, "group %d replica %d", FIRST_GID + g, r);
}

/* restart_killed: restart every daemon SIGKILLed so far on its directory. */
static bool restart_killed(void)
{
	bool ok = true;
	char what[64];
	for (int i = 0; i < ndaemons && !stopping(); i++) {
		struct daemon *d = &daemons[i];
		if (!d->killed || d->pid > 0)
			continue;
		if (i < cfg.masters)
			snprintf(what, sizeof what, "shard master %d", i);
		else
			replica_name(what, sizeof what, (i - cfg.masters) / cfg.replicas,
			             (i - cfg.masters) % cfg.replicas);
		if (restart(d, what, false)) {
			if (i >= cfg.masters)
				n_restarted++;
		} else {
			ok = false;
		}
	}
	return ok;
}

static void sigkill(struct daemon *d, const char *what);

/* lose_disk: SIGKILL one replica of the first group, wipe its directory, start it with --restart. */
static bool lose_disk(void)
{
	if (cfg.replicas < 3) {
		event("not wiping a replica: a group of %d would lose its majority", cfg.replicas);
		return true;
	}
	if (cfg.memory) {
		event("--memory: no directory to wipe (every restart rebuilds from the peers)");
		return true;
	}
	int r = rand_r(&cfg.seed) % cfg.replicas;
	struct daemon *d = group_replica(0, r);
	char what[64];
	replica_name(what, sizeof what, 0, r);
	sigkill(d, what);
	if (rmrf(d->dir) != 0 || mkdir(d->dir, 0700) != 0) {
		event("wipe %s: %s", d->dir, strerror(errno));
		return false;
	}
	event("wiped the data directory of %s (rm -rf; mkdir)", what);
	n_wiped++;
	return restart(d, what, true);
}

/* power_cycle_group: SIGKILL every replica of one group at once, then start them all again. */
static bool power_cycle_group(void)
{
	if (cfg.memory) {
		event("--memory: not stopping a whole group (its state would be gone)");
		return true;
	}
	int g = cfg.groups > 1 ? 1 : 0;
	group_off = g;
	char what[64];
	for (int r = 0; r < cfg.replicas; r++) {
		replica_name(what, sizeof what, g, r);
		sigkill(group_replica(g, r), what);
	}
	event("group %d is down: every replica SIGKILLed", FIRST_GID + g);
	cli_sleep_ms(500);
	bool ok = true;
	for (int r = 0; r < cfg.replicas && !stopping(); r++) {
		struct daemon *d = group_replica(g, r);
		spawn_daemon((int)(d - daemons));
		if (d->pid < 0) {
			d->pid = 0;
			ok = false;
			continue;
		}
		d->killed = false;
	}
	for (int r = 0; r < cfg.replicas && ok && !stopping(); r++)
		ok = wait_serving(group_replica(g, r));
	if (ok) {
		event("group %d restarted: all %d replicas on their data directories with --restart",
		      FIRST_GID + g, cfg.replicas);
		n_group_restarts++;
		n_group_replicas += (unsigned)cfg.replicas;
	}
	return ok;
}

/*
 * kill_one_per_group: SIGKILL one random replica of every group and one shard
 * master, when each keeps a majority without it (3 or more replicas).
 */
static void kill_one_per_group(void)
{
	char what[64];
	if (cfg.replicas < 3) {
		event("not killing replicas: a group of %d would lose its majority", cfg.replicas);
	} else {
		for (int g = 0; g < cfg.groups; g++) {
			int r = rand_r(&cfg.seed) % cfg.replicas;
			snprintf(what, sizeof what, "group %d replica %d", FIRST_GID + g, r);
			sigkill(group_replica(g, r), what);
			n_killed++;
		}
	}
	if (cfg.masters >= 3) {
		int m = rand_r(&cfg.seed) % cfg.masters;
		snprintf(what, sizeof what, "shard master %d", m);
		sigkill(&daemons[m], what);
		n_sm_killed++;
	}
}

/* ---------------------------------------------------------------- main */

static void parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "duration", required_argument, NULL, 'd' }, { "clients", required_argument, NULL, 'c' },
		{ "keys", required_argument, NULL, 'k' },     { "groups", required_argument, NULL, 'g' },
		{ "replicas", required_argument, NULL, 'r' }, { "masters", required_argument, NULL, 'm' },
		{ "seed", required_argument, NULL, 'S' },     { "keep-logs", no_argument, NULL, 'K' },
		{ "ack-log", required_argument, NULL, 'A' },  { "hold", no_argument, NULL, 'H' },
		{ "memory", no_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },           { "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	cfg.duration_s = 30;
	cfg.clients = 8;
	cfg.keys = 100;
	cfg.groups = 3;
	cfg.replicas = 3;
	cfg.masters = 3;
	cfg.seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	opterr = 0;
	int c;
	int64_t v;
	while ((c = getopt_long(argc, argv, ":d:c:k:g:r:m:hV", longopts, NULL)) != -1) {
		const char *what = NULL;
		switch (c) {
		case 'd':
			if (!cli_parse_i64(optarg, 8, 86400, &v))
				what = "--duration: expected seconds from 8 to 86400";
			else
				cfg.duration_s = (unsigned)v;
			break;
		case 'c':
			if (!cli_parse_i64(optarg, 1, 256, &v))
				what = "--clients: expected 1 to 256";
			else
				cfg.clients = (int)v;
			break;
		case 'k':
			if (!cli_parse_i64(optarg, 1, 1000000, &v))
				what = "--keys: expected 1 to 1000000";
			else
				cfg.keys = (int)v;
			break;
		case 'g':
			if (!cli_parse_i64(optarg, 1, 8, &v))
				what = "--groups: expected 1 to 8";
			else
				cfg.groups = (int)v;
			break;
		case 'r':
			if (!cli_parse_i64(optarg, 1, 5, &v))
				what = "--replicas: expected 1 to 5";
			else
				cfg.replicas = (int)v;
			break;
		case 'm':
			if (!cli_parse_i64(optarg, 1, 5, &v))
				what = "--masters: expected 1 to 5";
			else
				cfg.masters = (int)v;
			break;
		case 'S':
			if (!cli_parse_i64(optarg, 0, UINT_MAX, &v))
				what = "--seed: expected a number";
			else
				cfg.seed = (unsigned)v;
			break;
		case 'K': cfg.keep_logs = true; break;
		case 'A': cfg.ack_log = optarg; break;
		case 'H': cfg.hold = true; break;
		case 'M': cfg.memory = true; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		case 'V': printf("dkv-cluster (dkv) %s\n", CLI_VERSION); exit(0);
		case ':':
			fprintf(stderr, "dkv-cluster: option '%s' needs a value\n", argv[optind - 1]);
			exit(CLI_EXIT_USAGE);
		default:
			fprintf(stderr, "dkv-cluster: unknown option '%s'\nTry 'dkv-cluster --help'.\n",
			        argv[optind - 1]);
			exit(CLI_EXIT_USAGE);
		}
		if (what != NULL) {
			fprintf(stderr, "dkv-cluster: '%s': %s\n", optarg, what);
			exit(CLI_EXIT_USAGE);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dkv-cluster: unexpected argument '%s'\n", argv[optind]);
		exit(CLI_EXIT_USAGE);
	}
	if (cfg.hold && cfg.ack_log == NULL) {
		fprintf(stderr, "dkv-cluster: --hold needs --ack-log\nTry 'dkv-cluster --help'.\n");
		exit(CLI_EXIT_USAGE);
	}
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	cfg.tty = isatty(STDOUT_FILENO);
	if (!cli_self_dir(argv[0], cfg.bindir, sizeof cfg.bindir)) {
		fprintf(stderr, "dkv-cluster: cannot find my own directory\n");
		return CLI_EXIT_ERR;
	}
	snprintf(cfg.dkvd, sizeof cfg.dkvd, "%s/dkvd", cfg.bindir);
	snprintf(cfg.dkvctl, sizeof cfg.dkvctl, "%s/dkvctl", cfg.bindir);
	if (access(cfg.dkvd, X_OK) != 0 || access(cfg.dkvctl, X_OK) != 0) {
		fprintf(stderr, "dkv-cluster: dkvd and dkvctl must be next to this program (%s); run make\n",
		        cfg.bindir);
		return CLI_EXIT_ERR;
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	if (cfg.ack_log != NULL && (ack_file = fopen(cfg.ack_log, "w")) == NULL) {
		fprintf(stderr, "dkv-cluster: --ack-log %s: %s\n", cfg.ack_log, strerror(errno));
		return CLI_EXIT_ERR;
	}
	/* The library's messages in this process (clerks) would break the progress
	 * line: errors only, unless the user asked. The daemons get the user's. */
	const char *ul = cli_env("DKV_LOG");
	snprintf(cfg.user_log, sizeof cfg.user_log, "%s", ul ? ul : "");
	setenv("DKV_LOG", "error", 0);

	const char *tmp = cli_env("TMPDIR");
	snprintf(cfg.logdir, sizeof cfg.logdir, "%s/dkv-cluster.XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(cfg.logdir) == NULL) {
		fprintf(stderr, "dkv-cluster: mkdtemp %s: %s\n", cfg.logdir, strerror(errno));
		return CLI_EXIT_ERR;
	}

	seed0 = cfg.seed;
	t_start_ms = cli_now_ms();
	printf("dkv-cluster %s: %d shard masters, %d shardkv groups x %d replicas, %d clients, %u s "
	       "(seed %u)\n",
	       CLI_VERSION, cfg.masters, cfg.groups, cfg.replicas, cfg.clients, cfg.duration_s, cfg.seed);
	int rc = 1;
	for (int attempt = 0; attempt < 4 && (rc == 1 || rc == 2); attempt++) {
		if (rc == 2) {
			/* Say so loudly: this run then shows no durability. */
			event("this build's dkvd has no data directories (--dir): running in memory "
			      "instead (--memory)");
			cfg.memory = true;
			stop_all(3000, false);
		} else if (attempt > 0) {
			event("a port was taken meanwhile; restarting on fresh ports");
			stop_all(3000, false);
		}
		rc = start_cluster();
	}
	bool failed = false;
	int exit_code = CLI_EXIT_OK;
	if (rc != 0) {
		if (!stopping())
			fprintf(stderr, "dkv-cluster: the cluster did not start\n");
		failed = !stopping();
		goto shutdown;
	}
	event("started %d dkvd processes (logs in %s)", ndaemons, cfg.logdir);
	ack("shardmasters %s", sm_list);
	for (int i = 0; i < ndaemons; i++) {
		if (i < cfg.masters)
			say("          shard master %d        %-22s pid %ld\n", i, daemons[i].addr,
			    (long)daemons[i].pid);
		else
			say("          group %d replica %d   %-22s pid %ld\n",
			    FIRST_GID + (i - cfg.masters) / cfg.replicas, (i - cfg.masters) % cfg.replicas,
			    daemons[i].addr, (long)daemons[i].pid);
	}

	/* Join the groups with the command-line client, as a user would. */
	setenv("DKV_SHARDMASTERS", sm_list, 1);
	say("$ export DKV_SHARDMASTERS=%s\n", sm_list);
	for (int g = 0; g < cfg.groups && !stopping(); g++) {
		char gid[32], glist[MAX_DAEMONS * 64], shown[MAX_DAEMONS * 64 + 64];
		snprintf(gid, sizeof gid, "%d", FIRST_GID + g);
		group_list(g, glist, sizeof glist);
		snprintf(shown, sizeof shown, "join %s %s", gid, glist);
		char *jargv[] = { cfg.dkvctl, "join", gid, glist, NULL };
		int jrc = run_ctl(shown, jargv);
		if (jrc != 0 && !stopping()) {
			fprintf(stderr, "dkv-cluster: dkvctl join %s failed (exit %d)\n", gid, jrc);
			failed = true;
			goto shutdown;
		}
	}
	if (stopping())
		goto shutdown;
	{
		char *qargv[] = { cfg.dkvctl, "query", NULL };
		run_ctl("query", qargv);
	}

	const char *sms[MAX_DAEMONS];
	for (int i = 0; i < cfg.masters; i++)
		sms[i] = daemons[i].addr;
	smck = shardmaster_clerk_new(sms, cfg.masters);
	if (smck == NULL) {
		fprintf(stderr, "dkv-cluster: shard master clerk: %s\n", strerror(errno));
		failed = true;
		goto shutdown;
	}
	shardmaster_clerk_set_timeout(smck, OP_TIMEOUT_MS);

	/* The workload. Client threads do not take the stop signals: main does. */
	clients = calloc((size_t)cfg.clients, sizeof *clients);
	if (clients == NULL) {
		failed = true;
		goto shutdown;
	}
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	double t0 = elapsed_s();
	event("workload: %d clients, Get 50%% / Put 25%% / Append 25%%, %d shared keys, %u ms op timeout",
	      cfg.clients, cfg.keys, OP_TIMEOUT_MS);
	enter_phase("steady");
	last_line = cli_now_ms();
	for (int i = 0; i < cfg.clients; i++) {
		struct client *c = &clients[i];
		c->id = i;
		c->seed = cfg.seed * 7919u + (unsigned)i;
		snprintf(c->logkey, sizeof c->logkey, "%c-log-%d", shard_letter(i), i);
		c->started = pthread_create(&c->tid, NULL, client_main, c) == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	double D = cfg.duration_s;
	bool restarts_ok = true;
	run_until(t0 + D * 0.15);
	if (!stopping()) {
		enter_phase("moving shards");
		for (int s = 0; s < 3 && !stopping(); s++) {
			move_shard(s * 3 + 1);
			run_until(elapsed_s() + D / 30.0);
		}
	}
	run_until(t0 + D * 0.25);
	if (!stopping()) {
		enter_phase("degraded");
		kill_one_per_group();
	}
	run_until(t0 + D * 0.35);
	if (!stopping()) {
		enter_phase("restarting");
		restarts_ok &= restart_killed();
	}
	run_until(t0 + D * 0.45);
	if (!stopping()) {
		enter_phase("lost disk");
		restarts_ok &= lose_disk();
	}
	run_until(t0 + D * 0.6);
	if (!stopping()) {
		enter_phase("group restart");
		restarts_ok &= power_cycle_group();
	}
	run_until(t0 + D * 0.75);
	if (!stopping()) {
		enter_phase("moves");
		for (int s = 0; s < 3 && !stopping(); s++) {
			move_shard(s * 3 + 2);
			run_until(elapsed_s() + D / 30.0);
		}
	}
	run_until(t0 + D);
	if (!restarts_ok && !stopping()) {
		fprintf(stderr, "dkv-cluster: a restarted daemon did not come back up\n");
		failed = true;
	}
	enter_phase(NULL);
	progress_tick(true);
	if (cfg.tty && progress_shown) {
		pthread_mutex_lock(&out_mu);
		putchar('\n');
		progress_shown = false;
		pthread_mutex_unlock(&out_mu);
	}
	atomic_store(&load_stop, true);
	event("stopping the workload%s", stopping() ? " (interrupted)" : "");
	/* Each thread ends within one op timeout; a second Ctrl-C stops waiting. */
	for (int i = 0; i < cfg.clients; i++) {
		while (clients[i].started && pthread_tryjoin_np(clients[i].tid, NULL) != 0) {
			if (interrupted >= 2) {
				load_abandoned = true;
				goto shutdown;
			}
			cli_sleep_ms(10);
		}
	}
	double secs = elapsed_s() - t0;
	ack("stopped");
	if (cfg.hold && !stopping()) {
		ack("hold");
		while (!hold_released && !stopping())
			cli_sleep_ms(20);
	}

	/* Check each client's append log, with the cluster still serving. */
	unsigned long checked = 0, acked = 0, unknown = 0;
	int bad_logs = 0;
	if (!stopping()) {
		shardkv_clerk *ck = shardkv_clerk_new(sms, cfg.masters);
		if (ck != NULL)
			shardkv_clerk_set_timeout(ck, 10000);
		for (int i = 0; ck != NULL && i < cfg.clients && !stopping(); i++) {
			struct client *c = &clients[i];
			for (int j = 0; j < c->next_j; j++) {
				acked += c->acked[j] == 1;
				unknown += c->acked[j] == 2;
			}
			char *v = NULL;
			int grc = shardkv_clerk_get(ck, c->logkey, &v);
			char why[256];
			if (grc != DKV_OK) {
				event("check %s: get failed: %s", c->logkey, dkv_strerror(grc));
				bad_logs++;
			} else if (!check_log(c, v, why, sizeof why)) {
				event("check %s: FAILED: %s", c->logkey, why);
				bad_logs++;
			} else {
				checked++;
			}
			free(v);
		}
		shardkv_clerk_free(ck);
		if (ck == NULL)
			bad_logs = cfg.clients;
		char *qargv[] = { cfg.dkvctl, "query", NULL };
		if (!stopping())
			run_ctl("query", qargv);
	}

	/* Summary. */
	{
		unsigned long ok = atomic_load(&n_ok), er = atomic_load(&n_err), to = atomic_load(&n_timeout);
		unsigned long h[NBUCKETS], tot = 0;
		for (int b = 0; b < NBUCKETS; b++) {
			h[b] = atomic_load(&hist[b]);
			tot += h[b];
		}
		say("\n== summary%s\n", stopping() ? " (interrupted)" : "");
		say("  ops         %lu in %.1f s = %.0f ops/s (get %lu, put %lu, append %lu)\n", ok + er + to,
		    secs, secs > 0 ? (double)(ok + er + to) / secs : 0.0, atomic_load(&n_get),
		    atomic_load(&n_put), atomic_load(&n_append));
		say("  results     ok %lu, errors %lu, timeouts %lu\n", ok, er, to);
		say("  latency     p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.1f ms\n",
		    quantile_ms(h, tot, 0.5), quantile_ms(h, tot, 0.9), quantile_ms(h, tot, 0.99),
		    (double)atomic_load(&lat_max_us) / 1000.0);
		for (int i = 0; i < nphases; i++) {
			struct phase_stat *p = &phases[i];
			double ps = (double)(p->t1 - p->t0) / 1000.0;
			say("  phase       %-22s %5.1f s  %7.0f ops/s  errors+timeouts %lu\n", p->name, ps,
			    ps > 0 ? (double)(p->ops1 - p->ops0) / ps : 0.0, p->err1 - p->err0);
		}
		say("  faults      SIGKILLed %u shardkv replicas (one per group) and %u shard master; "
		    "%d shard moves\n",
		    n_killed, n_sm_killed, n_moves);
		if (cfg.memory)
			say("  restarts    %u replicas (and %u shard master) with --restart, their state from "
			    "their peers (--memory); ",
			    n_restarted, n_sm_killed);
		else
			say("  restarts    %u replicas (and %u shard master) on their data directories; %u "
			    "with its directory wiped; ",
			    n_restarted, n_sm_killed, n_wiped);
		if (group_off >= 0 && n_group_restarts > 0)
			say("group %d SIGKILLed whole and restarted (%u replicas)\n", FIRST_GID + group_off,
			    n_group_replicas);
		else
			say("no whole group restarted\n");
		say("  seed        %u (--seed %u repeats each client's operations and the victims)\n",
		    seed0, seed0);
		if (!stopping()) {
			say("  appends     %lu acknowledged (+%lu with unknown outcome) in %d logs, across "
			    "every restart: %s\n",
			    acked, unknown, cfg.clients,
			    bad_logs == 0 ? "each exactly once, in order" : "CHECK FAILED");
			if (bad_logs > 0)
				failed = true;
			if (ok == 0) {
				fprintf(stderr, "dkv-cluster: no operation succeeded\n");
				failed = true;
			}
			/* Keeps serving: the last phase (replicas down) must make progress. */
			if (nphases > 0 && phases[nphases - 1].ops1 - phases[nphases - 1].ops0 -
			                               (phases[nphases - 1].err1 - phases[nphases - 1].err0) == 0) {
				fprintf(stderr, "dkv-cluster: no progress after the replicas were killed\n");
				failed = true;
			}
		}
	}

	/* What an operator would see now: every replica's status (in process). */
	if (!stopping() && ndaemons > 0) {
		cli_list sml;
		char err[320];
		if (cli_list_parse(sm_list, &sml, err, sizeof err)) {
			say("\n$ dkvctl status\n");
			cli_status_req rq = { .shardmasters = &sml, .timeout_ms = 2000, .out = stdout };
			pthread_mutex_lock(&out_mu);
			cli_status_run(&rq);
			pthread_mutex_unlock(&out_mu);
			cli_list_destroy(&sml);
		}
	}

shutdown:
	shardmaster_clerk_free(smck);
	smck = NULL;
	{
		int alive = 0;
		for (int i = 0; i < ndaemons; i++)
			alive += daemons[i].pid > 0;
		uint64_t ts = cli_now_ms();
		int bad = stop_all(interrupted > 1 ? 0 : 5000, true);
		if (ndaemons > 0)
			say("stopped %d dkvd processes in %llu ms (%s)\n", alive,
			    (unsigned long long)(cli_now_ms() - ts),
			    bad == 0 ? "each exited 0 on SIGTERM" : "SOME DID NOT EXIT CLEANLY");
		if (bad > 0 && !stopping())
			failed = true;
	}
	if (clients != NULL && !load_abandoned) {
		for (int i = 0; i < cfg.clients; i++)
			free(clients[i].acked);
		free(clients);
	}
	if (failed || cfg.keep_logs) {
		say("logs kept in %s\n", cfg.logdir);
	} else {
		remove_logdir();
	}
	if (failed)
		exit_code = CLI_EXIT_ERR;
	else if (stopping())
		exit_code = 130;
	else
		say("dkv-cluster: OK\n");
	if (ack_file != NULL)
		fclose(ack_file);
	return exit_code;
}
