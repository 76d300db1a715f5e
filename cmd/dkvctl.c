/*
 * cmd/dkvctl.c — the dkv command-line client.
 *
 *   dkvctl [options] get KEY | put KEY VALUE | append KEY VALUE
 *   dkvctl [options] join GID ADDR,... | leave GID | move SHARD GID | query [NUM]
 *   dkvctl [options] view
 *   dkvctl [options] status [ADDR...]
 *
 * One clerk of the chosen service per run (pbservice, kvpaxos or shardkv for
 * the key/value commands, the shard master for the others), one call with
 * the deadline from --timeout (X_clerk_set_timeout), the result on stdout as
 * plain text or as one JSON object (--json), and an exit code a script can
 * test: 0 ok, 1 error, 2 bad usage, 3 timeout, 4 empty value under
 * --fail-empty.
 *
 * Not found: by the API a Get of a key never written succeeds with "" — dkv
 * keeps no separate "absent" state — so `get` prints an empty line and exits
 * 0; --fail-empty turns an empty value into exit 4 for scripts that treat
 * "" as missing.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv/kvpaxos.h"
#include "dkv/pbservice.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv/viewservice.h"
#include "lib/cli.h"
#include "lib/status_cmd.h"

#define DEFAULT_TIMEOUT_MS 10000u

static const char usage_text[] =
	"NAME\n"
	"    dkvctl - command-line client for the dkv services\n"
	"\n"
	"SYNOPSIS\n"
	"    dkvctl [OPTIONS] get KEY\n"
	"    dkvctl [OPTIONS] put KEY VALUE\n"
	"    dkvctl [OPTIONS] append KEY VALUE\n"
	"    dkvctl [OPTIONS] join GID ADDR[,ADDR...]\n"
	"    dkvctl [OPTIONS] leave GID\n"
	"    dkvctl [OPTIONS] move SHARD GID\n"
	"    dkvctl [OPTIONS] query [NUM]\n"
	"    dkvctl [OPTIONS] view\n"
	"    dkvctl [OPTIONS] status [ADDR...]\n"
	"\n"
	"DESCRIPTION\n"
	"    get, put and append talk to a key/value service: pbservice (through its\n"
	"    viewservice, --vs), kvpaxos (its replicas, --servers) or shardkv (through\n"
	"    its shard master, --shardmasters). Without --service, the service is the\n"
	"    one whose address option is given (on the command line, else in the\n"
	"    environment). join, leave, move and query talk to the shard master:\n"
	"      join GID ADDRS   add replica group GID, whose replicas listen at ADDRS\n"
	"                       (the --peers list its dkvd shardkv processes were given)\n"
	"      leave GID        remove group GID; its shards move to the others\n"
	"      move SHARD GID   give shard SHARD (0-9) to group GID\n"
	"      query [NUM]      show configuration NUM (default: the latest)\n"
	"    view asks the viewservice (--vs) for the current view of a pbservice:\n"
	"    its number, primary and backup.\n"
	"    status asks every replica how it is doing: the kvpaxos replicas\n"
	"    (--servers), the shard masters (--shardmasters) and every shardkv\n"
	"    replica of the latest configuration, the viewservice (--vs) and the\n"
	"    primary and backup of its view, and each ADDR given. One row per\n"
	"    replica: address, service, group, reachable or not (with the error),\n"
	"    role (voting, rejoining or catching-up for the Paxos services; primary,\n"
	"    backup or idle for pbservice), incarnation, log applied / Paxos max /\n"
	"    Paxos min, snapshot position, client sessions, keys and bytes held,\n"
	"    data-directory bytes (- without a directory), uptime. Each call waits\n"
	"    at most --timeout (default 2s here).\n"
	"    A key's shard is its first byte modulo 10. Values are text; a value that\n"
	"    starts with '-' goes after '--' (dkvctl put k -- -1).\n"
	"\n";
/* In two parts: ISO C promises string literals of 4095 bytes only. */
static const char usage_text2[] =
	"OPTIONS\n"
	"    -S, --service NAME       pbservice, kvpaxos or shardkv\n"
	"    -v, --vs ADDR            the pbservice's viewservice\n"
	"    -p, --servers ADDR,...   the kvpaxos replicas (also: --peers)\n"
	"    -s, --shardmasters ADDR,...  the shard master replicas\n"
	"    -t, --timeout DURATION   give up after DURATION: 500ms, 3s, 1m, or plain\n"
	"                             milliseconds (default 10s; 0 = retry forever).\n"
	"                             A put or append that timed out may or may not\n"
	"                             have been applied (never twice).\n"
	"    -j, --json               print one JSON object on stdout, failed calls\n"
	"                             included (bad usage goes to stderr only)\n"
	"    -e, --fail-empty         get: exit 4 when the value is empty\n"
	"    -h, --help               show this text and exit\n"
	"    -V, --version            show the version and exit\n"
	"    Addresses are tcp:HOST:PORT or unix socket paths, as for dkvd.\n"
	"\n"
	"OUTPUT\n"
	"    get prints the value and a newline; put, append, join, leave and move\n"
	"    print OK (join, leave and move add the latest configuration number);\n"
	"    query prints the configuration; view prints \"view N: primary P, backup B\";\n"
	"    status prints a table and \"N of M replicas answered\".\n"
	"    With --json:\n"
	"      {\"ok\":true,\"key\":\"k\",\"value\":\"v\"}\n"
	"      {\"ok\":true,\"op\":\"put\",\"key\":\"k\"}\n"
	"      {\"ok\":true,\"op\":\"join\",\"gid\":100,\"config\":3}\n"
	"      {\"ok\":true,\"num\":3,\"shards\":[100,...],\"groups\":[{\"gid\":100,\n"
	"       \"servers\":[...],\"shards\":[0,1,2,3]},...]}\n"
	"      {\"ok\":true,\"viewnum\":2,\"primary\":\"...\",\"backup\":\"...\"}\n"
	"      {\"ok\":false,\"error\":\"timeout\",\"message\":\"...\"}\n"
	"      {\"ok\":true,\"answered\":3,\"total\":3,\"replicas\":[{\"address\":\"...\",\n"
	"       \"service\":\"kvpaxos\",\"reachable\":true,\"role\":\"voting\",...},...]}\n"
	"    A key never written reads as \"\" (dkv has no separate not-found state).\n"
	"\n"
	"ENVIRONMENT\n"
	"    DKV_SERVICE, DKV_VS, DKV_SERVERS, DKV_SHARDMASTERS, DKV_TIMEOUT give\n"
	"    defaults for the options of the same name; a flag wins over its variable.\n"
	"    DKV_LOG (debug|info|warn|error|off) sets the library's log level.\n"
	"\n"
	"EXIT STATUS\n"
	"    0  success (also a get of a key never written: the value is \"\")\n"
	"    1  the service refused or failed (e.g. move to an unknown group);\n"
	"       status: a replica did not answer\n"
	"    2  bad usage\n"
	"    3  timed out: no answer before --timeout\n"
	"    4  get --fail-empty: the value is empty\n"
	"\n"
	"EXAMPLES\n"
	"    dkvctl --servers tcp:127.0.0.1:7001,tcp:127.0.0.1:7002 put color blue\n"
	"    export DKV_SHARDMASTERS=tcp:127.0.0.1:7101,tcp:127.0.0.1:7102\n"
	"    dkvctl join 100 tcp:127.0.0.1:7201,tcp:127.0.0.1:7202,tcp:127.0.0.1:7203\n"
	"    dkvctl --json query\n"
	"    dkvctl --servers tcp:127.0.0.1:7001,tcp:127.0.0.1:7002 status\n"
	"    dkvctl append log \"line 1\" && dkvctl --timeout 2s get log\n"
	"\n"
	"SEE ALSO\n"
	"    dkvd --help, dkv-cluster --help\n";

enum service { SVC_NONE = -1, SVC_PBSERVICE, SVC_KVPAXOS, SVC_SHARDKV };
static const char *const service_names[] = { "pbservice", "kvpaxos", "shardkv" };

static struct {
	bool json;
	const char *cmd;
} g;

#define usage_error(...) cli_usage_error("dkvctl", __VA_ARGS__)

static const char *err_name(int rc)
{
	switch (rc) {
	case DKV_ERR_NOKEY: return "nokey";
	case DKV_ERR_WRONG_SERVER: return "wrong_server";
	case DKV_ERR_WRONG_GROUP: return "wrong_group";
	case DKV_ERR_TIMEOUT: return "timeout";
	case DKV_ERR_NET: return "net";
	case DKV_ERR_INVAL: return "invalid";
	case DKV_ERR_NOMEM: return "nomem";
	case DKV_ERR_KILLED: return "killed";
	default: return "error";
	}
}

/* fail: report a failed call `what` (e.g. "get 'k'") and return its exit code. */
static int fail(int rc, unsigned timeout_ms, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(int rc, unsigned timeout_ms, const char *fmt, ...)
{
	char what[512], msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (rc == DKV_ERR_TIMEOUT)
		snprintf(msg, sizeof msg, "%s: no answer within %u ms (is the service running and "
		                          "reachable at the given addresses?)",
		         what, timeout_ms);
	else
		snprintf(msg, sizeof msg, "%s: %s", what, dkv_strerror(rc));
	if (g.json) {
		printf("{\"ok\":false,\"error\":\"%s\",\"message\":", err_name(rc));
		cli_json_str(stdout, msg);
		printf("}\n");
	}
	fprintf(stderr, "dkvctl: %s\n", msg);
	return rc == DKV_ERR_TIMEOUT ? CLI_EXIT_TIMEOUT : CLI_EXIT_ERR;
}

static void parse_list(const char *opt, const char *s, cli_list *out)
{
	char err[320];
	if (!cli_list_parse(s, out, err, sizeof err))
		usage_error("%s: %s", opt, err);
}

/* ---------------------------------------------------------------- key/value */

struct kv {
	enum service svc;
	void *ck;
};

static int kv_get(struct kv *kv, const char *key, char **v)
{
	switch (kv->svc) {
	case SVC_PBSERVICE: return pbservice_clerk_get(kv->ck, key, v);
	case SVC_KVPAXOS: return kvpaxos_clerk_get(kv->ck, key, v);
	default: return shardkv_clerk_get(kv->ck, key, v);
	}
}

static int kv_put(struct kv *kv, bool append, const char *key, const char *val)
{
	switch (kv->svc) {
	case SVC_PBSERVICE:
		return append ? pbservice_clerk_append(kv->ck, key, val) : pbservice_clerk_put(kv->ck, key, val);
	case SVC_KVPAXOS:
		return append ? kvpaxos_clerk_append(kv->ck, key, val) : kvpaxos_clerk_put(kv->ck, key, val);
	default:
		return append ? shardkv_clerk_append(kv->ck, key, val) : shardkv_clerk_put(kv->ck, key, val);
	}
}

static void kv_free(struct kv *kv)
{
	switch (kv->svc) {
	case SVC_PBSERVICE: pbservice_clerk_free(kv->ck); break;
	case SVC_KVPAXOS: kvpaxos_clerk_free(kv->ck); break;
	default: shardkv_clerk_free(kv->ck); break;
	}
}

/* ---------------------------------------------------------------- shard master */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = ((const shardmaster_group *)a)->gid, y = ((const shardmaster_group *)b)->gid;
	return (x > y) - (x < y);
}

static void print_config(shardmaster_config *c)
{
	qsort(c->groups, (size_t)c->ngroups, sizeof c->groups[0], cmp_i64);
	if (g.json) {
		printf("{\"ok\":true,\"num\":%d,\"shards\":[", c->num);
		for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
			printf("%s%lld", i ? "," : "", (long long)c->shards[i]);
		printf("],\"groups\":[");
		for (int k = 0; k < c->ngroups; k++) {
			shardmaster_group *gr = &c->groups[k];
			printf("%s{\"gid\":%lld,\"servers\":[", k ? "," : "", (long long)gr->gid);
			for (int j = 0; j < gr->nservers; j++) {
				if (j)
					putchar(',');
				cli_json_str(stdout, gr->servers[j]);
			}
			printf("],\"shards\":[");
			int n = 0;
			for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
				if (c->shards[i] == gr->gid)
					printf("%s%d", n++ ? "," : "", i);
			printf("]}");
		}
		printf("]}\n");
		return;
	}
	printf("config %d: %d group%s\n", c->num, c->ngroups, c->ngroups == 1 ? "" : "s");
	printf("shards:");
	for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
		printf(" %d:%lld", i, (long long)c->shards[i]);
	printf("\n");
	for (int k = 0; k < c->ngroups; k++) {
		shardmaster_group *gr = &c->groups[k];
		int n = 0;
		char list[64] = "";
		for (int i = 0; i < SHARDMASTER_NSHARDS; i++)
			if (c->shards[i] == gr->gid) {
				size_t l = strlen(list);
				snprintf(list + l, sizeof list - l, "%s%d", n ? " " : "", i);
				n++;
			}
		printf("group %lld: %d shard%s [%s] servers ", (long long)gr->gid, n, n == 1 ? "" : "s",
		       list);
		for (int j = 0; j < gr->nservers; j++)
			printf("%s%s", j ? "," : "", gr->servers[j]);
		printf("\n");
	}
}

/* After a successful join/leave/move: OK and the latest configuration number. */
static void print_changed(shardmaster_clerk *ck, const char *op, const char *field, int64_t v)
{
	shardmaster_config *c = NULL;
	int num = -1;
	if (shardmaster_clerk_query(ck, -1, &c) == DKV_OK && c != NULL)
		num = c->num;
	shardmaster_config_free(c);
	if (g.json) {
		printf("{\"ok\":true,\"op\":\"%s\",\"%s\":%lld", op, field, (long long)v);
		if (num >= 0)
			printf(",\"config\":%d", num);
		printf("}\n");
	} else if (num >= 0) {
		printf("OK (config %d)\n", num);
	} else {
		printf("OK\n");
	}
}

static int64_t parse_gid(const char *s)
{
	int64_t gid;
	if (!cli_parse_i64(s, 1, INT64_MAX, &gid))
		usage_error("%s: GID '%s': expected a number > 0", g.cmd, s);
	return gid;
}

static int run_sm(cli_list *sms, unsigned timeout, int nargs, char **args)
{
	shardmaster_clerk *ck = shardmaster_clerk_new((const char *const *)sms->v, sms->n);
	if (ck == NULL) {
		fprintf(stderr, "dkvctl: cannot create a shard master clerk: %s\n", strerror(errno));
		return CLI_EXIT_ERR;
	}
	shardmaster_clerk_set_timeout(ck, timeout);
	int rc, code = CLI_EXIT_OK;
	if (strcmp(g.cmd, "join") == 0) {
		int64_t gid = parse_gid(args[0]);
		/* ADDR,ADDR or ADDR ADDR: one list either way. */
		size_t len = 1;
		for (int i = 1; i < nargs; i++)
			len += strlen(args[i]) + 1;
		char *joined = calloc(1, len);
		if (joined == NULL) {
			shardmaster_clerk_free(ck);
			return fail(DKV_ERR_NOMEM, timeout, "join");
		}
		for (int i = 1; i < nargs; i++) {
			if (i > 1)
				strcat(joined, ",");
			strcat(joined, args[i]);
		}
		cli_list servers;
		char err[320];
		if (!cli_list_parse(joined, &servers, err, sizeof err)) {
			free(joined);
			usage_error("join: %s", err);
		}
		free(joined);
		rc = shardmaster_clerk_join(ck, gid, (const char *const *)servers.v, servers.n);
		cli_list_destroy(&servers);
		if (rc == DKV_OK)
			print_changed(ck, "join", "gid", gid);
		else
			code = fail(rc, timeout, "join %lld", (long long)gid);
	} else if (strcmp(g.cmd, "leave") == 0) {
		int64_t gid = parse_gid(args[0]);
		rc = shardmaster_clerk_leave(ck, gid);
		if (rc == DKV_OK)
			print_changed(ck, "leave", "gid", gid);
		else
			code = fail(rc, timeout, "leave %lld", (long long)gid);
	} else if (strcmp(g.cmd, "move") == 0) {
		int64_t shard;
		if (!cli_parse_i64(args[0], 0, SHARDMASTER_NSHARDS - 1, &shard))
			usage_error("move: SHARD '%s': expected a number from 0 to %d", args[0],
			            SHARDMASTER_NSHARDS - 1);
		int64_t gid = parse_gid(args[1]);
		rc = shardmaster_clerk_move(ck, (int)shard, gid);
		if (rc == DKV_OK)
			print_changed(ck, "move", "shard", shard);
		else
			code = fail(rc, timeout, "move %lld %lld", (long long)shard, (long long)gid);
		if (rc == DKV_ERR_INVAL)
			fprintf(stderr, "dkvctl: (a shard moves only to a group of the latest configuration: "
			                "see dkvctl query)\n");
	} else { /* query */
		int64_t num = -1;
		if (nargs > 0 && !cli_parse_i64(args[0], -1, INT32_MAX, &num))
			usage_error("query: NUM '%s': expected a configuration number (-1: the latest)",
			            args[0]);
		shardmaster_config *c = NULL;
		rc = shardmaster_clerk_query(ck, (int)num, &c);
		if (rc == DKV_OK)
			print_config(c);
		else
			code = fail(rc, timeout, "query");
		shardmaster_config_free(c);
	}
	shardmaster_clerk_free(ck);
	return code;
}

/* ---------------------------------------------------------------- view */

static int run_view(const char *vs)
{
	char err[320];
	if (!cli_name_check(vs, err, sizeof err))
		usage_error("--vs: %s", err);
	viewservice_clerk *ck = viewservice_clerk_new("", vs);
	if (ck == NULL) {
		fprintf(stderr, "dkvctl: cannot create a viewservice clerk: %s\n", strerror(errno));
		return CLI_EXIT_ERR;
	}
	viewservice_view v;
	int rc = viewservice_clerk_get(ck, &v);
	viewservice_clerk_free(ck);
	if (rc != DKV_OK)
		return fail(rc, 0, "view (viewservice %s)", vs);
	if (g.json) {
		printf("{\"ok\":true,\"viewnum\":%u,\"primary\":", v.viewnum);
		cli_json_str(stdout, v.primary);
		printf(",\"backup\":");
		cli_json_str(stdout, v.backup);
		printf("}\n");
	} else {
		printf("view %u: primary %s, backup %s\n", v.viewnum, v.primary[0] ? v.primary : "(none)",
		       v.backup[0] ? v.backup : "(none)");
	}
	return CLI_EXIT_OK;
}

/* ---------------------------------------------------------------- status */

/* status: the flags given, else the environment (every service address set). */
static int run_status(const char *service, const char *vs, const char *servers, const char *sms,
                      unsigned timeout, int nargs, char **args)
{
	if (service != NULL)
		usage_error("status: --service does not apply (give the address options instead)");
	if (vs == NULL && servers == NULL && sms == NULL) {
		vs = cli_env("DKV_VS");
		servers = cli_env("DKV_SERVERS");
		sms = cli_env("DKV_SHARDMASTERS");
	}
	cli_list lsrv = { 0, NULL }, lsms = { 0, NULL }, lextra = { 0, NULL };
	char err[320];
	if (servers != NULL)
		parse_list("--servers", servers, &lsrv);
	if (sms != NULL)
		parse_list("--shardmasters", sms, &lsms);
	if (vs != NULL && !cli_name_check(vs, err, sizeof err))
		usage_error("--vs: %s", err);
	if (nargs > 0) {
		size_t len = 1;
		for (int i = 0; i < nargs; i++)
			len += strlen(args[i]) + 1;
		char *joined = calloc(1, len);
		if (joined == NULL)
			return fail(DKV_ERR_NOMEM, 0, "status");
		for (int i = 0; i < nargs; i++) {
			if (i > 0)
				strcat(joined, ",");
			strcat(joined, args[i]);
		}
		bool ok = cli_list_parse(joined, &lextra, err, sizeof err);
		free(joined);
		if (!ok)
			usage_error("status: %s", err);
	}
	if (lsrv.n == 0 && lsms.n == 0 && vs == NULL && lextra.n == 0)
		usage_error("status: which service? give --servers (kvpaxos), --shardmasters "
		            "(shardmaster, shardkv), --vs (pbservice) or addresses");
	cli_status_req rq = { .servers = &lsrv, .shardmasters = &lsms, .vs = vs, .extra = &lextra,
		              .timeout_ms = timeout, .json = g.json, .out = stdout };
	int code = cli_status_run(&rq);
	cli_list_destroy(&lsrv);
	cli_list_destroy(&lsms);
	cli_list_destroy(&lextra);
	return code;
}

/* ---------------------------------------------------------------- main */

struct cmd {
	const char *name;
	int min_args, max_args; /* max -1: any */
	bool sm;
};

static const struct cmd commands[] = {
	{ "get", 1, 1, false },     { "put", 2, 2, false },   { "append", 2, 2, false },
	{ "join", 2, -1, true },    { "leave", 1, 1, true },  { "move", 2, 2, true },
	{ "query", 0, 1, true },    { "view", 0, 0, false },
	{ "status", 0, -1, false },
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "service", required_argument, NULL, 'S' },
		{ "vs", required_argument, NULL, 'v' },
		{ "servers", required_argument, NULL, 'p' },
		{ "peers", required_argument, NULL, 'p' },
		{ "shardmasters", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "fail-empty", no_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *service = NULL, *vs = NULL, *servers = NULL, *sms = NULL, *timeout_s = NULL;
	bool fail_empty = false;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":S:v:p:s:t:jehV", longopts, NULL)) != -1) {
		switch (c) {
		case 'S': service = optarg; break;
		case 'v': vs = optarg; break;
		case 'p': servers = optarg; break;
		case 's': sms = optarg; break;
		case 't': timeout_s = optarg; break;
		case 'j': g.json = true; break;
		case 'e': fail_empty = true; break;
		case 'h':
			fputs(usage_text, stdout);
			fputs(usage_text2, stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("dkvctl (dkv) %s\n", CLI_VERSION);
			return CLI_EXIT_OK;
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt != 0)
				usage_error("unknown option '-%c'", optopt);
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		usage_error("which command? (get, put, append, join, leave, move, query, view, status)");
	g.cmd = argv[optind];
	const struct cmd *cmd = NULL;
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(g.cmd, commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		usage_error("unknown command '%s' (get, put, append, join, leave, move, query, view, "
		            "status)",
		            g.cmd);
	int nargs = argc - optind - 1;
	char **args = argv + optind + 1;
	if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
		static const char *const synopsis[] = { "get KEY", "put KEY VALUE", "append KEY VALUE",
			                                "join GID ADDR[,ADDR...]", "leave GID",
			                                "move SHARD GID", "query [NUM]", "view",
			                                "status [ADDR...]" };
		usage_error("usage: dkvctl [OPTIONS] %s", synopsis[cmd - commands]);
	}

	unsigned timeout = DEFAULT_TIMEOUT_MS;
	if (timeout_s == NULL)
		timeout_s = cli_env("DKV_TIMEOUT");
	if (timeout_s != NULL && !cli_parse_ms(timeout_s, &timeout))
		usage_error("--timeout '%s': expected a duration such as 500ms, 3s or 1m", timeout_s);
	if (strcmp(g.cmd, "status") == 0)
		return run_status(service, vs, servers, sms, timeout_s != NULL ? timeout : 0, nargs, args);

	/* Flags first; the environment only for what no flag gave. */
	bool flag_vs = vs != NULL, flag_servers = servers != NULL, flag_sms = sms != NULL;
	if (service == NULL)
		service = cli_env("DKV_SERVICE");
	if (vs == NULL)
		vs = cli_env("DKV_VS");
	if (servers == NULL)
		servers = cli_env("DKV_SERVERS");
	if (sms == NULL)
		sms = cli_env("DKV_SHARDMASTERS");

	if (cmd->sm) {
		if (sms == NULL)
			usage_error("%s talks to the shard master: give --shardmasters ADDR,...", g.cmd);
		cli_list l;
		parse_list("--shardmasters", sms, &l);
		int code = run_sm(&l, timeout, nargs, args);
		cli_list_destroy(&l);
		return code;
	}

	if (strcmp(g.cmd, "view") == 0) {
		if (vs == NULL)
			usage_error("view talks to the viewservice: give --vs ADDR");
		return run_view(vs);
	}

	enum service svc = SVC_NONE;
	if (service != NULL) {
		for (int i = 0; i < 3; i++)
			if (strcmp(service, service_names[i]) == 0)
				svc = (enum service)i;
		if (svc == SVC_NONE)
			usage_error("--service '%s': expected pbservice, kvpaxos or shardkv", service);
	} else {
		int nflags = flag_vs + flag_servers + flag_sms;
		bool use_vs = nflags ? flag_vs : vs != NULL;
		bool use_servers = nflags ? flag_servers : servers != NULL;
		bool use_sms = nflags ? flag_sms : sms != NULL;
		if (use_vs + use_servers + use_sms > 1)
			usage_error("more than one service address is set: say which with --service");
		svc = use_vs ? SVC_PBSERVICE : use_servers ? SVC_KVPAXOS : use_sms ? SVC_SHARDKV : SVC_NONE;
		if (svc == SVC_NONE)
			usage_error("no service address: give --shardmasters (shardkv), --servers "
			            "(kvpaxos) or --vs (pbservice)");
	}

	struct kv kv = { .svc = svc, .ck = NULL };
	cli_list l = { 0, NULL };
	char err[320];
	switch (svc) {
	case SVC_PBSERVICE:
		if (vs == NULL)
			usage_error("pbservice needs --vs ADDR (its viewservice)");
		if (!cli_name_check(vs, err, sizeof err))
			usage_error("--vs: %s", err);
		kv.ck = pbservice_clerk_new(vs, "dkvctl");
		if (kv.ck != NULL)
			pbservice_clerk_set_timeout(kv.ck, timeout);
		break;
	case SVC_KVPAXOS:
		if (servers == NULL)
			usage_error("kvpaxos needs --servers ADDR,... (its replicas)");
		parse_list("--servers", servers, &l);
		kv.ck = kvpaxos_clerk_new((const char *const *)l.v, l.n);
		if (kv.ck != NULL)
			kvpaxos_clerk_set_timeout(kv.ck, timeout);
		break;
	default:
		if (sms == NULL)
			usage_error("shardkv needs --shardmasters ADDR,... (its shard master)");
		parse_list("--shardmasters", sms, &l);
		kv.ck = shardkv_clerk_new((const char *const *)l.v, l.n);
		if (kv.ck != NULL)
			shardkv_clerk_set_timeout(kv.ck, timeout);
		break;
	}
	cli_list_destroy(&l);
	if (kv.ck == NULL) {
		fprintf(stderr, "dkvctl: cannot create a %s clerk: %s\n", service_names[svc], strerror(errno));
		return CLI_EXIT_ERR;
	}

	int code = CLI_EXIT_OK;
	const char *key = args[0];
	if (strlen(key) > DKV_KEY_MAX) {
		kv_free(&kv);
		usage_error("%s: the key is longer than %d bytes", g.cmd, DKV_KEY_MAX);
	}
	if (strcmp(g.cmd, "get") == 0) {
		char *v = NULL;
		int rc = kv_get(&kv, key, &v);
		if (rc != DKV_OK) {
			code = fail(rc, timeout, "get '%s'", key);
		} else {
			if (g.json) {
				printf("{\"ok\":true,\"key\":");
				cli_json_str(stdout, key);
				printf(",\"value\":");
				cli_json_str(stdout, v);
				printf("}\n");
			} else {
				printf("%s\n", v);
			}
			if (fail_empty && *v == '\0')
				code = CLI_EXIT_EMPTY;
		}
		free(v);
	} else {
		bool append = strcmp(g.cmd, "append") == 0;
		int rc = kv_put(&kv, append, key, args[1]);
		if (rc != DKV_OK) {
			code = fail(rc, timeout, "%s '%s'", g.cmd, key);
		} else if (g.json) {
			printf("{\"ok\":true,\"op\":\"%s\",\"key\":", g.cmd);
			cli_json_str(stdout, key);
			printf("}\n");
		} else {
			printf("OK\n");
		}
	}
	kv_free(&kv);
	return code;
}
