/*
 * cmd/dkvd.c — the dkv daemon: runs one server of one service in the
 * foreground until SIGTERM, SIGINT or SIGHUP.
 *
 *   dkvd viewservice|pbservice|kvpaxos|shardmaster|shardkv [options]
 *
 * Design: main parses the flags (environment variables DKV_* first, flags
 * over them), checks every name before anything starts so a typo gives a
 * message and exit 2, then blocks the stop signals — before the library
 * starts a thread, so every thread inherits the mask and only main ever sees
 * them — starts the server through the public API and waits in sigwait().
 * On a signal it frees the server (X_free kills it: threads joined, socket
 * closed) and exits 0. A second signal during that shutdown exits 1 at once.
 * While it waits it asks the server's status every STOP_POLL_MS: a replica
 * that stopped itself (a failed write or fsync of its directory) makes dkvd
 * exit 1, as API.md says.
 *
 * Durability: --dir DIR (DKV_DIR), --restart (DKV_RESTART=1) and
 * --unsafe-no-fsync become a dkv_server_opts for the *_start_opts function of
 * kvpaxos, shardmaster, shardkv and viewservice (API.md "Durability, restarts
 * and catch-up"); pbservice takes none of them (exit 2). A start that fails
 * with a directory reports the directory and the reason from errno (EBUSY,
 * EINVAL, EIO, EACCES, ENOTSUP) and exits 1.
 *
 * The library removes a unix socket file it finds at the listening path as
 * stale; dkvd first checks that no live process accepts on it, so a second
 * daemon on the same path fails with "address already in use" as it does on
 * TCP, instead of silently taking the name from the first.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dkv/kvpaxos.h"
#include "dkv/pbservice.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv/viewservice.h"
#include "lib/cli.h"
#include "status.h"

enum service { SVC_VIEWSERVICE, SVC_PBSERVICE, SVC_KVPAXOS, SVC_SHARDMASTER, SVC_SHARDKV, SVC__COUNT };

static const char *const service_names[SVC__COUNT] = { "viewservice", "pbservice", "kvpaxos",
	                                               "shardmaster", "shardkv" };

/* Which flags each service takes (bits of enum flag). */
enum flag {
	F_LISTEN = 1, F_PEERS = 2, F_ME = 4, F_VS = 8, F_SMS = 16, F_GID = 32, F_UNRELIABLE = 64,
	F_DIR = 128, F_RESTART = 256, F_NOFSYNC = 512
};
#define F_DURABLE (F_DIR | F_RESTART | F_NOFSYNC)
static const unsigned service_flags[SVC__COUNT] = {
	[SVC_VIEWSERVICE] = F_LISTEN | F_DURABLE,
	[SVC_PBSERVICE] = F_LISTEN | F_VS | F_UNRELIABLE,
	[SVC_KVPAXOS] = F_LISTEN | F_PEERS | F_ME | F_UNRELIABLE | F_DURABLE,
	[SVC_SHARDMASTER] = F_LISTEN | F_PEERS | F_ME | F_UNRELIABLE | F_DURABLE,
	[SVC_SHARDKV] = F_LISTEN | F_PEERS | F_ME | F_SMS | F_GID | F_UNRELIABLE | F_DURABLE,
};

static const char usage_text[] =
	"NAME\n"
	"    dkvd - run one server of a dkv service\n"
	"\n"
	"SYNOPSIS\n"
	"    dkvd viewservice --listen ADDR [DURABILITY]\n"
	"    dkvd pbservice   --listen ADDR --vs ADDR\n"
	"    dkvd kvpaxos     --peers ADDR,ADDR,... (--me N | --listen ADDR) [DURABILITY]\n"
	"    dkvd shardmaster --peers ADDR,ADDR,... (--me N | --listen ADDR) [DURABILITY]\n"
	"    dkvd shardkv     --gid GID --shardmasters ADDR,... --peers ADDR,ADDR,...\n"
	"                     (--me N | --listen ADDR) [DURABILITY]\n"
	"    DURABILITY: [--dir DIR] [--restart] [--unsafe-no-fsync]\n"
	"    dkvd --help | --version\n"
	"\n"
	"DESCRIPTION\n"
	"    dkvd runs one server of one dkv service in the foreground, logging to\n"
	"    stderr, until it receives SIGTERM, SIGINT or SIGHUP. A replicated service\n"
	"    (kvpaxos, shardmaster, one shardkv group) is several dkvd processes that\n"
	"    are given the same --peers list and each its own --me. A pbservice pair is\n"
	"    two dkvd pbservice processes that share one viewservice.\n"
	"\n"
	"    Without --dir a server keeps its state in memory only: a replica that is\n"
	"    stopped loses it, and must be started again with --restart so that it\n"
	"    rejoins without voting until its peers have given it their state (the\n"
	"    others keep serving meanwhile). With --dir DIR it keeps its state in DIR\n"
	"    and acknowledges nothing before it is on disk (fdatasync): stopped at any\n"
	"    instant (SIGKILL, power cut) and started again on DIR, it keeps every\n"
	"    write it acknowledged and serves and votes again at once; a whole group\n"
	"    stopped and started again on its directories loses nothing. pbservice\n"
	"    keeps its state in memory only (the backup holds the copy).\n"
	"\n"
	"    Once it accepts connections, dkvd logs a line with \"serving on ADDR\"\n"
	"    (level info), which scripts may wait for.\n"
	"\n";

/* The rest of --help (two strings: C99 compilers need take only 4095 bytes each). */
static const char usage_text2[] =
	"ADDRESSES\n"
	"    tcp:HOST:PORT    e.g. tcp:127.0.0.1:7000 (port 0 is refused: peers and\n"
	"                     clients must know the port)\n"
	"    PATH, unix:PATH  a unix-domain socket, e.g. /var/tmp/dkv/sm0; a stale\n"
	"                     socket file left by a killed server is replaced\n"
	"\n"
	"OPTIONS\n"
	"    -l, --listen ADDR        where this server listens. Replicated services:\n"
	"                             must be one of --peers (it then implies --me).\n"
	"    -p, --peers ADDR,...     every replica of this service or group, in the\n"
	"                             same order on every replica (and, for shardkv,\n"
	"                             in `dkvctl join`)\n"
	"    -m, --me N               this replica's index in --peers (from 0)\n"
	"    -v, --vs ADDR            pbservice: the viewservice\n"
	"    -s, --shardmasters ADDR,...  shardkv: the shard master replicas\n"
	"    -g, --gid GID            shardkv: this replica group's id (> 0)\n"
	"    -u, --unreliable         drop 10% of requests and 20% of replies (testing)\n"
	"    -d, --dir DIR            this replica's own data directory (created if\n"
	"                             missing, mode 0700; one live server per\n"
	"                             directory). It records whose it is: another\n"
	"                             service, gid, --peers or --me is refused.\n"
	"    -r, --restart            this replica has run in this group before. Give\n"
	"                             it at every start but the first, with its\n"
	"                             directory kept, wiped (rm -rf DIR; mkdir DIR) or\n"
	"                             without --dir. A replica whose state is lost\n"
	"                             does not vote until a majority of the others\n"
	"                             gave it their state. Never on a first start: a\n"
	"                             false first start can let two values be chosen.\n"
	"        --unsafe-no-fsync    with --dir: write but never fsync; survives a\n"
	"                             killed process, not a power cut (tests only)\n"
	"        --log-level LEVEL    debug, info, warn, error or off (default info);\n"
	"                             applies to the library's messages too\n"
	"    -h, --help               show this text and exit\n"
	"    -V, --version            show the version and exit\n"
	"\n"
	"ENVIRONMENT\n"
	"    DKV_LISTEN, DKV_PEERS, DKV_ME, DKV_VS, DKV_SHARDMASTERS, DKV_GID,\n"
	"    DKV_UNRELIABLE (1 = on), DKV_DIR, DKV_RESTART (1 = on) and DKV_LOG give\n"
	"    defaults for the options of the same name; a flag wins over its\n"
	"    variable.\n"
	"\n"
	"EXIT STATUS\n"
	"    0  stopped by SIGTERM, SIGINT or SIGHUP (a second signal during the\n"
	"       shutdown exits 1 at once)\n"
	"    1  could not start, e.g. the address is already in use, or the data\n"
	"       directory cannot be used: in use by another process, belongs to\n"
	"       another replica, damaged, not accessible, or this build lacks it (the\n"
	"       message names the directory and the reason)\n"
	"    2  bad usage: unknown service or option, a missing or malformed value\n"
	"\n"
	"EXAMPLES\n"
	"    A three-replica kvpaxos service on one machine, then a client:\n"
	"      P=tcp:127.0.0.1:7001,tcp:127.0.0.1:7002,tcp:127.0.0.1:7003\n"
	"      dkvd kvpaxos --peers $P --me 0 &\n"
	"      dkvd kvpaxos --peers $P --me 1 &\n"
	"      dkvd kvpaxos --peers $P --me 2 &\n"
	"      dkvctl --servers $P put greeting hello && dkvctl --servers $P get greeting\n"
	"    The same with data directories, and replica 0 killed and started again:\n"
	"      dkvd kvpaxos --peers $P --me 0 --dir /var/lib/dkv/kv0 &\n"
	"      kill -9 %1; dkvd kvpaxos --peers $P --me 0 --dir /var/lib/dkv/kv0 --restart &\n"
	"\n"
	"SEE ALSO\n"
	"    dkvctl --help, dkv-cluster --help\n";

#define usage_error(...) cli_usage_error("dkvd", __VA_ARGS__)

static const char *signame(int sig)
{
	switch (sig) {
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGHUP: return "SIGHUP";
	default: return "a signal";
	}
}

/* After the first stop signal: a second one ends the process at once. */
static void *second_signal(void *arg)
{
	const sigset_t *set = arg;
	int sig = 0;
	if (sigwait(set, &sig) == 0) {
		cli_log(CLI_LOG_WARN, "%s during shutdown: exiting now", signame(sig));
		_exit(CLI_EXIT_ERR);
	}
	return NULL;
}

/*
 * stopped_itself: did the server stop itself (a write or fsync error of its
 * data directory, an op it could not apply: API.md says dkvd then exits 1)?
 * Asked through the server's own status program on its own endpoint — the one
 * place that reports a replica's role — once per STOP_POLL_MS while dkvd
 * waits for a signal. A call that fails says nothing (a loaded server may be
 * slow to answer): only an answer "stopped"/"failed" counts.
 */
#define STOP_POLL_MS 500
static bool stopped_itself(enum service svc, dkv_rpc_pool *pool, const char *addr)
{
	if (svc == SVC_PBSERVICE || pool == NULL)
		return false;
	dkv_status st;
	if (dkv_status_get(pool, addr, 2000, &st) != DKV_OK)
		return false;
	return strcmp(st.role, "stopped") == 0 || strcmp(st.role, "failed") == 0;
}

/* The settings after environment and flags. Strings are borrowed from argv/environ. */
struct settings {
	enum service svc;
	const char *listen, *peers, *me, *vs, *sms, *gid, *level, *dir;
	bool unreliable, restart, no_fsync;
	unsigned given; /* flags given on the command line (enum flag bits) */
};

static void parse(int argc, char **argv, struct settings *st)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "peers", required_argument, NULL, 'p' },
		{ "me", required_argument, NULL, 'm' },
		{ "vs", required_argument, NULL, 'v' },
		{ "shardmasters", required_argument, NULL, 's' },
		{ "gid", required_argument, NULL, 'g' },
		{ "unreliable", no_argument, NULL, 'u' },
		{ "dir", required_argument, NULL, 'd' },
		{ "restart", no_argument, NULL, 'r' },
		{ "unsafe-no-fsync", no_argument, NULL, 'F' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	memset(st, 0, sizeof *st);
	st->listen = cli_env("DKV_LISTEN");
	st->peers = cli_env("DKV_PEERS");
	st->me = cli_env("DKV_ME");
	st->vs = cli_env("DKV_VS");
	st->sms = cli_env("DKV_SHARDMASTERS");
	st->gid = cli_env("DKV_GID");
	st->level = cli_env("DKV_LOG");
	const char *u = cli_env("DKV_UNRELIABLE");
	st->unreliable = u != NULL && strcmp(u, "0") != 0;
	st->dir = cli_env("DKV_DIR");
	const char *rs = cli_env("DKV_RESTART");
	st->restart = rs != NULL && strcmp(rs, "0") != 0;

	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":l:p:m:v:s:g:ud:rhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'l': st->listen = optarg; st->given |= F_LISTEN; break;
		case 'p': st->peers = optarg; st->given |= F_PEERS; break;
		case 'm': st->me = optarg; st->given |= F_ME; break;
		case 'v': st->vs = optarg; st->given |= F_VS; break;
		case 's': st->sms = optarg; st->given |= F_SMS; break;
		case 'g': st->gid = optarg; st->given |= F_GID; break;
		case 'u': st->unreliable = true; st->given |= F_UNRELIABLE; break;
		case 'd': st->dir = optarg; st->given |= F_DIR; break;
		case 'r': st->restart = true; st->given |= F_RESTART; break;
		case 'F': st->no_fsync = true; st->given |= F_NOFSYNC; break;
		case 'L': st->level = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			fputs(usage_text2, stdout);
			exit(CLI_EXIT_OK);
		case 'V':
			printf("dkvd (dkv) %s\n", CLI_VERSION);
			exit(CLI_EXIT_OK);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt != 0)
				usage_error("unknown option '-%c'", optopt);
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		usage_error("which service? (viewservice, pbservice, kvpaxos, shardmaster or shardkv)");
	int svc = -1;
	for (int i = 0; i < SVC__COUNT; i++)
		if (strcmp(argv[optind], service_names[i]) == 0)
			svc = i;
	if (svc < 0)
		usage_error("unknown service '%s' (viewservice, pbservice, kvpaxos, shardmaster or "
		            "shardkv)",
		            argv[optind]);
	if (optind + 1 < argc)
		usage_error("unexpected argument '%s'", argv[optind + 1]);
	st->svc = (enum service)svc;

	static const char *const flag_names[] = { "--listen",     "--peers",  "--me",
		                                  "--vs",         "--shardmasters", "--gid",
		                                  "--unreliable", "--dir",    "--restart",
		                                  "--unsafe-no-fsync" };
	for (int b = 0; b < 10; b++)
		if ((st->given & (1u << b)) && !(service_flags[svc] & (1u << b))) {
			if ((1u << b) & F_DURABLE)
				usage_error("%s does not apply to %s (a pbservice server keeps its state in "
				            "memory only; its backup holds the copy)",
				            flag_names[b], service_names[svc]);
			usage_error("%s does not apply to %s", flag_names[b], service_names[svc]);
		}
	if (!(service_flags[svc] & F_DURABLE)) {
		/* Variables are defaults for whole scripts: ignored where they do not apply. */
		st->dir = NULL;
		st->restart = false;
	}
	if (st->dir != NULL && *st->dir == '\0')
		usage_error("--dir: empty directory name");
	if (st->no_fsync && st->dir == NULL)
		usage_error("--unsafe-no-fsync needs --dir");
}

/* The checked configuration of a replicated server. */
struct replica {
	cli_list peers;
	int me;
	cli_list sms;
	int64_t gid;
};

static void check_listen_name(const char *name, const char *what)
{
	char err[320];
	if (!cli_name_check(name, err, sizeof err))
		usage_error("%s: %s", what, err);
	if (strncmp(name, "tcp:", 4) == 0) {
		const char *port = strrchr(name, ':') + 1;
		if (strcmp(port, "0") == 0)
			usage_error("%s '%s': port 0 is not allowed (peers and clients must know the "
			            "port)",
			            what, name);
	}
}

static void check_replica(const struct settings *st, struct replica *r)
{
	char err[320];
	memset(r, 0, sizeof *r);
	r->me = -1;
	if (st->peers == NULL)
		usage_error("%s needs --peers (every replica's address, comma-separated)",
		            service_names[st->svc]);
	if (!cli_list_parse(st->peers, &r->peers, err, sizeof err))
		usage_error("--peers: %s", err);
	if (st->me != NULL) {
		int64_t me;
		if (!cli_parse_i64(st->me, 0, r->peers.n - 1, &me))
			usage_error("--me '%s': expected a number from 0 to %d (an index in --peers)", st->me,
			            r->peers.n - 1);
		r->me = (int)me;
	}
	if (st->listen != NULL) {
		int at = cli_list_find(&r->peers, st->listen);
		if (at < 0)
			usage_error("--listen '%s' is not one of --peers", st->listen);
		if (r->me >= 0 && r->me != at)
			usage_error("--listen '%s' is peer %d, but --me is %d", st->listen, at, r->me);
		r->me = at;
	}
	if (r->me < 0)
		usage_error("%s needs --me N or --listen ADDR (which of --peers this replica is)",
		            service_names[st->svc]);
	check_listen_name(r->peers.v[r->me], "--peers");
	if (st->svc == SVC_SHARDKV) {
		if (st->gid == NULL)
			usage_error("shardkv needs --gid (this replica group's id, > 0)");
		if (!cli_parse_i64(st->gid, 1, INT64_MAX, &r->gid))
			usage_error("--gid '%s': expected a number > 0", st->gid);
		if (st->sms == NULL)
			usage_error("shardkv needs --shardmasters (the shard master replicas)");
		if (!cli_list_parse(st->sms, &r->sms, err, sizeof err))
			usage_error("--shardmasters: %s", err);
	}
}

static void replica_destroy(struct replica *r)
{
	cli_list_destroy(&r->peers);
	cli_list_destroy(&r->sms);
}

/* The running server, whichever service it is. */
struct server {
	enum service svc;
	void *p;
};

static void server_free(struct server *s)
{
	switch (s->svc) {
	case SVC_VIEWSERVICE: viewservice_server_free(s->p); break;
	case SVC_PBSERVICE: pbservice_server_free(s->p); break;
	case SVC_KVPAXOS: kvpaxos_server_free(s->p); break;
	case SVC_SHARDMASTER: shardmaster_server_free(s->p); break;
	case SVC_SHARDKV: shardkv_server_free(s->p); break;
	default: break;
	}
	s->p = NULL;
}

/* dir_reason: what a start's errno means for its data directory (API.md). */
static const char *dir_reason(int e)
{
	switch (e) {
	case EBUSY: return "in use by another process (one live server per directory)";
	case EINVAL:
		return "belongs to another replica (another service, --gid, --peers or --me), or "
		       "the arguments are invalid";
	case EIO: return "damaged: data that had been synced fails its checks (see the log line "
		         "above naming the file); refusing to start empty in its place";
	case EACCES:
	case EPERM: return "permission denied";
	case ENOSPC: return "no space left on the device";
	case ENOTDIR: return "not a directory";
	case EROFS: return "on a read-only file system";
	default: return NULL;
	}
}

static void start_failed(const struct settings *st, const char *addr)
{
	int e = errno;
	const char *svc = service_names[st->svc];
	if (e == EADDRINUSE) {
		cli_log(CLI_LOG_ERROR, "cannot listen on %s: address already in use", addr);
	} else if (e == ENOTSUP && (st->dir != NULL || st->restart)) {
		cli_log(CLI_LOG_ERROR, "cannot start %s on %s: %s: this build of %s lacks it", svc, addr,
		        st->dir != NULL ? "--dir" : "--restart", svc);
	} else if (st->dir != NULL) {
		const char *why = dir_reason(e);
		cli_log(CLI_LOG_ERROR, "cannot start %s on %s: data directory %s: %s", svc, addr, st->dir,
		        why != NULL ? why : strerror(e));
	} else {
		cli_log(CLI_LOG_ERROR, "cannot start on %s: %s", addr, strerror(e));
	}
}

int main(int argc, char **argv)
{
	struct settings st;
	parse(argc, argv, &st);

	int level = CLI_LOG_INFO;
	if (st.level != NULL && (level = cli_level_parse(st.level)) < 0)
		usage_error("--log-level '%s': expected debug, info, warn, error or off", st.level);
	cli_log_init("dkvd", level);
	/* The library reads its level from DKV_LOG at its first call: same level. */
	static const char *const level_names[] = { "debug", "info", "warn", "error", "off" };
	setenv("DKV_LOG", level_names[level], 1);

	struct replica r;
	memset(&r, 0, sizeof r);
	const char *addr = NULL;
	switch (st.svc) {
	case SVC_VIEWSERVICE:
	case SVC_PBSERVICE:
		if (st.listen == NULL)
			usage_error("%s needs --listen ADDR", service_names[st.svc]);
		check_listen_name(st.listen, "--listen");
		addr = st.listen;
		if (st.svc == SVC_PBSERVICE) {
			char err[320];
			if (st.vs == NULL)
				usage_error("pbservice needs --vs ADDR (the viewservice)");
			if (!cli_name_check(st.vs, err, sizeof err))
				usage_error("--vs: %s", err);
		}
		break;
	default:
		check_replica(&st, &r);
		addr = r.peers.v[r.me];
		break;
	}

	/* Block the stop signals before any thread exists: all threads inherit the mask. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);

	if (cli_unix_in_use(addr)) {
		cli_log(CLI_LOG_ERROR, "cannot listen on %s: address already in use", addr);
		replica_destroy(&r);
		return CLI_EXIT_ERR;
	}

	struct server srv = { .svc = st.svc, .p = NULL };
	const char *const *peers = (const char *const *)r.peers.v;
	dkv_server_opts o = { 0 };
	o.dir = st.dir;
	o.restart = st.restart;
	o.no_fsync = st.no_fsync;
	switch (st.svc) {
	case SVC_VIEWSERVICE:
		srv.p = viewservice_server_start_opts(addr, &o);
		break;
	case SVC_PBSERVICE:
		srv.p = pbservice_server_start(st.vs, addr);
		if (srv.p != NULL && st.unreliable)
			pbservice_server_set_unreliable(srv.p, true);
		break;
	case SVC_KVPAXOS:
		srv.p = kvpaxos_server_start_opts(peers, r.peers.n, r.me, &o);
		if (srv.p != NULL && st.unreliable)
			kvpaxos_server_set_unreliable(srv.p, true);
		break;
	case SVC_SHARDMASTER:
		srv.p = shardmaster_server_start_opts(peers, r.peers.n, r.me, &o);
		if (srv.p != NULL && st.unreliable)
			shardmaster_server_set_unreliable(srv.p, true);
		break;
	case SVC_SHARDKV:
		srv.p = shardkv_server_start_opts(r.gid, (const char *const *)r.sms.v, r.sms.n, peers,
		                                  r.peers.n, r.me, &o);
		if (srv.p != NULL && st.unreliable)
			shardkv_server_set_unreliable(srv.p, true);
		break;
	default:
		break;
	}
	if (srv.p == NULL) {
		start_failed(&st, addr);
		replica_destroy(&r);
		return CLI_EXIT_ERR;
	}

	/* Logged before "serving on", which tells scripts the server is up. */
	if (st.unreliable)
		cli_log(CLI_LOG_WARN, "unreliable mode: dropping 10%% of requests and 20%% of replies");
	switch (st.svc) {
	case SVC_VIEWSERVICE:
		cli_log(CLI_LOG_INFO, "viewservice serving on %s", addr);
		break;
	case SVC_PBSERVICE:
		cli_log(CLI_LOG_INFO, "pbservice serving on %s (viewservice %s)", addr, st.vs);
		break;
	case SVC_SHARDKV:
		cli_log(CLI_LOG_INFO, "shardkv group %lld replica %d of %d serving on %s (shard masters %s)",
		        (long long)r.gid, r.me, r.peers.n, addr, st.sms);
		break;
	default:
		cli_log(CLI_LOG_INFO, "%s replica %d of %d serving on %s", service_names[st.svc], r.me,
		        r.peers.n, addr);
		break;
	}
	if (st.dir != NULL)
		cli_log(CLI_LOG_INFO, "data directory %s%s%s", st.dir, st.restart ? " (restart)" : "",
		        st.no_fsync ? "; --unsafe-no-fsync: a power cut may lose acknowledged writes" : "");
	else if (st.restart)
		cli_log(CLI_LOG_INFO, "restarted without a data directory: not voting until the peers "
		                      "have given their state");

	int sig = 0;
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	const struct timespec poll = { .tv_sec = 0, .tv_nsec = STOP_POLL_MS * 1000000L };
	for (;;) {
		sig = sigtimedwait(&stop, NULL, &poll);
		if (sig > 0)
			break;
		if (stopped_itself(st.svc, pool, addr)) {
			cli_log(CLI_LOG_ERROR, "the %s replica on %s stopped itself (see the error above): "
			                       "exiting", service_names[st.svc], addr);
			dkv_rpc_pool_free(pool);
			server_free(&srv);
			replica_destroy(&r);
			return CLI_EXIT_ERR;
		}
	}
	dkv_rpc_pool_free(pool);
	cli_log(CLI_LOG_INFO, "%s received: stopping", signame(sig));
	pthread_t t;
	if (pthread_create(&t, NULL, second_signal, &stop) == 0)
		pthread_detach(t);
	server_free(&srv);
	replica_destroy(&r);
	cli_log(CLI_LOG_INFO, "stopped");
	return CLI_EXIT_OK;
}
