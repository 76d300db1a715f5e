/*
 * tests/test_ops.c — what an operator sees: the status program and
 * `dkvctl status` against live dkvd processes, the bench report, the manual
 * pages.
 *
 *   /ops/status/program      in process: register, get, unregister; dir bytes
 *   /ops/status/kvpaxos      3 dkvd kvpaxos: every field, --json parses; a
 *                            SIGKILLed replica is unreachable (exit 1); a
 *                            restarted one is rejoining, then voting (when
 *                            dkvd has --restart: gated, says so when not)
 *   /ops/status/kvpaxosDir   3 dkvd kvpaxos --dir: DIR > 0, SNAPSHOT >= 0
 *                            after a few writes
 *   /ops/status/shardkv      3 shard masters + 2 groups: rows per group
 *   /ops/status/pbservice    viewservice + 2 pbservice: primary and backup
 *   /ops/status/badFlags     exit 2
 *   /ops/bench/report        bench/report.sh, a short run: report.md, PNGs
 *   /ops/man/install         make install DESTDIR=…: man pages, rendered
 *                            without warnings; make uninstall removes them
 *
 * Programs are found from argv[0] (build/tests/../bin, ../bench), so a
 * sanitizer build tests its own. Daemons listen on unix sockets under
 * th_dir() (removed by the harness); every child is recorded and the
 * per-test teardown SIGKILLs and reaps what is still running. No timing
 * assertion: waits are bounded, results are judged by content.
 */
#include "lib/harness.h"
#include "lib/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv/rpc.h"
#include "status.h"

#define MAX_KIDS 32
#define MAX_ARGS 40
#define RUN_LIMIT_MS 120000u
#define OUT_MAX 65536

static char bin_dkvd[PATH_MAX], bin_dkvctl[PATH_MAX], bench_dir[PATH_MAX], src_root[PATH_MAX];

/* ------------------------------------------------------------ children */

typedef struct {
	pid_t pid;
	char log[DKV_NAME_MAX];
} kid;

static kid kids[MAX_KIDS];
static int nkids, nfiles;

static int teardown_kids(void **state)
{
	(void)state;
	tp_kill_all();
	for (int i = 0; i < nkids; i++) {
		kids[i].pid = 0;
		th_unlink(kids[i].log);
	}
	nkids = 0;
	return 0;
}

typedef struct {
	int code;
	char out[OUT_MAX]; /* stdout */
	char err[OUT_MAX]; /* stderr */
} result;

/* run_v: run argv to completion (stdout+stderr into r->out). */
static void run_v(result *r, char **argv)
{
	char out[DKV_NAME_MAX], err[DKV_NAME_MAX];
	th_port(out, "ops", "out", nfiles);
	th_port(err, "ops", "err", nfiles++);
	pid_t pid = tp_spawn_split(argv, out, err);
	r->code = tp_wait(pid, RUN_LIMIT_MS);
	if (r->code < 0) {
		(void)tp_signal(pid, SIGKILL);
		fail_msg("%s %s did not finish within %u ms", argv[0], argv[1] ? argv[1] : "",
		         RUN_LIMIT_MS);
	}
	tp_read_file(out, r->out, sizeof r->out);
	tp_read_file(err, r->err, sizeof r->err);
	th_unlink(out);
	th_unlink(err);
}

static void run(result *r, const char *prog, ...)
{
	char *argv[MAX_ARGS];
	int n = 0;
	argv[n++] = (char *)prog;
	va_list ap;
	va_start(ap, prog);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL) {
		assert_true(n < MAX_ARGS - 1);
		argv[n++] = (char *)a;
	}
	va_end(ap);
	argv[n] = NULL;
	run_v(r, argv);
}

static void run_sh(result *r, const char *cmd)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	run_v(r, argv);
}

#define assert_contains(hay, needle)                                                        \
	do {                                                                                    \
		if (strstr((hay), (needle)) == NULL)                                                \
			fail_msg("expected '%s' in:\n%s", (needle), (hay));                             \
	} while (0)

/* start_dkvd_v: a daemon with the NULL-terminated arguments; waits for
 * "serving on". If it exits at start: fails the test, or with `may_fail`
 * returns NULL with its log in why (whylen bytes). */
static kid *start_dkvd_v(bool may_fail, char *why, size_t whylen, const char *first, va_list ap)
{
	assert_true(nkids < MAX_KIDS);
	kid *k = &kids[nkids++];
	memset(k, 0, sizeof *k);
	th_port(k->log, "ops", "log", nfiles++);
	char *argv[MAX_ARGS];
	int n = 0;
	argv[n++] = bin_dkvd;
	argv[n++] = (char *)first;
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL) {
		assert_true(n < MAX_ARGS - 1);
		argv[n++] = (char *)a;
	}
	argv[n] = NULL;
	k->pid = tp_spawn(argv, k->log);
	char buf[8192];
	uint64_t deadline = th_now_ms() + 20000;
	for (;;) {
		tp_read_file(k->log, buf, sizeof buf);
		if (strstr(buf, "serving on") != NULL)
			break;
		if (tp_exited(k->pid, NULL)) {
			k->pid = 0;
			if (may_fail) {
				size_t l = strnlen(buf, whylen - 1);
				memcpy(why, buf, l);
				why[l] = '\0';
				return NULL;
			}
			fail_msg("dkvd %s exited at start:\n%s", first, buf);
		}
		if (th_now_ms() > deadline)
			fail_msg("dkvd %s did not serve within 20 s:\n%s", first, buf);
		th_sleep_ms(10);
	}
	return k;
}

static kid *start_dkvd(const char *first, ...)
{
	va_list ap;
	va_start(ap, first);
	kid *k = start_dkvd_v(false, NULL, 0, first, ap);
	va_end(ap);
	return k;
}

/* try_start_dkvd: as start_dkvd, but NULL (log in why) if it exits at start. */
static kid *try_start_dkvd(char *why, size_t whylen, const char *first, ...)
{
	va_list ap;
	va_start(ap, first);
	kid *k = start_dkvd_v(true, why, whylen, first, ap);
	va_end(ap);
	return k;
}

static void sigkill_kid(kid *k)
{
	assert_true(k->pid > 0);
	(void)tp_signal(k->pid, SIGKILL);
	k->pid = 0;
}

/* ------------------------------------------------------------ a small JSON checker */

/* The fields every reachable replica row has, and an unreachable one. */
static const char *const reach_keys[] = { "address", "service", "group", "reachable", "role",
	                                  "detail", "incarnation", "applied", "paxos_max",
	                                  "paxos_min", "snapshot", "sessions", "keys", "bytes",
	                                  "dir_bytes", "uptime_ms", "pid" };
#define NREACH (sizeof reach_keys / sizeof reach_keys[0])
static const char *const unreach_keys[] = { "address", "service", "reachable", "error" };

typedef struct {
	const char *p;
	bool bad;
	int rows, rows_complete, rows_unreachable;
	int top_keys; /* ok, answered, total, replicas */
	int depth;
} jp;

static void jws(jp *j)
{
	while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')
		j->p++;
}

static void jvalue(jp *j, char *str, size_t len);

static void jstring(jp *j, char *out, size_t len)
{
	size_t n = 0;
	if (*j->p != '"') {
		j->bad = true;
		return;
	}
	j->p++;
	while (*j->p && *j->p != '"') {
		char c = *j->p++;
		if ((unsigned char)c < 0x20) {
			j->bad = true;
			return;
		}
		if (c == '\\') {
			c = *j->p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++)
					if (!strchr("0123456789abcdefABCDEF", *j->p++) || j->p[-1] == '\0') {
						j->bad = true;
						return;
					}
				c = '?';
			} else if (!strchr("\"\\/bfnrt", c) || c == '\0') {
				j->bad = true;
				return;
			}
		}
		if (out && n + 1 < len)
			out[n++] = c;
	}
	if (*j->p != '"') {
		j->bad = true;
		return;
	}
	j->p++;
	if (out)
		out[n] = '\0';
}

static void jobject(jp *j)
{
	j->p++; /* { */
	j->depth++;
	char keys[32][32];
	int nkeys = 0;
	char reachable[16] = "";
	jws(j);
	if (*j->p == '}') {
		j->p++;
		j->depth--;
		return;
	}
	for (;;) {
		jws(j);
		char k[32];
		jstring(j, k, sizeof k);
		if (j->bad)
			return;
		if (nkeys < 32)
			snprintf(keys[nkeys++], sizeof keys[0], "%s", k);
		jws(j);
		if (*j->p++ != ':') {
			j->bad = true;
			return;
		}
		jws(j);
		char v[32] = "";
		jvalue(j, v, sizeof v);
		if (j->bad)
			return;
		if (strcmp(k, "reachable") == 0)
			snprintf(reachable, sizeof reachable, "%s", v);
		jws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p == '}') {
			j->p++;
			break;
		}
		j->bad = true;
		return;
	}
	j->depth--;
	bool is_row = false;
	for (int i = 0; i < nkeys; i++)
		is_row |= strcmp(keys[i], "address") == 0;
	if (j->depth == 0) {
		for (int i = 0; i < nkeys; i++)
			j->top_keys += strcmp(keys[i], "ok") == 0 || strcmp(keys[i], "answered") == 0 ||
			               strcmp(keys[i], "total") == 0 || strcmp(keys[i], "replicas") == 0;
		return;
	}
	if (!is_row)
		return;
	j->rows++;
	bool up = strcmp(reachable, "true") == 0;
	const char *const *want = up ? reach_keys : unreach_keys;
	size_t nwant = up ? NREACH : sizeof unreach_keys / sizeof unreach_keys[0];
	size_t have = 0;
	for (size_t w = 0; w < nwant; w++)
		for (int i = 0; i < nkeys; i++)
			if (strcmp(keys[i], want[w]) == 0) {
				have++;
				break;
			}
	if (have == nwant)
		j->rows_complete++;
	if (!up)
		j->rows_unreachable++;
}

static void jarray(jp *j)
{
	j->p++;
	jws(j);
	if (*j->p == ']') {
		j->p++;
		return;
	}
	for (;;) {
		jws(j);
		jvalue(j, NULL, 0);
		if (j->bad)
			return;
		jws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p == ']') {
			j->p++;
			return;
		}
		j->bad = true;
		return;
	}
}

/* jvalue: any JSON value; a scalar's text (or a string's content) into str. */
static void jvalue(jp *j, char *str, size_t len)
{
	jws(j);
	char c = *j->p;
	if (c == '{') {
		jobject(j);
	} else if (c == '[') {
		jarray(j);
	} else if (c == '"') {
		jstring(j, str, len);
	} else if (strncmp(j->p, "true", 4) == 0 || strncmp(j->p, "null", 4) == 0) {
		if (str)
			snprintf(str, len, "%.4s", j->p);
		j->p += 4;
	} else if (strncmp(j->p, "false", 5) == 0) {
		if (str)
			snprintf(str, len, "false");
		j->p += 5;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		char *end;
		strtod(j->p, &end);
		if (end == j->p)
			j->bad = true;
		j->p = end;
	} else {
		j->bad = true;
	}
}

/* check_json: the whole text is one JSON object (then a newline); counts rows. */
static jp check_json(const char *text)
{
	jp j = { .p = text };
	jws(&j);
	if (*j.p != '{')
		j.bad = true;
	else
		jvalue(&j, NULL, 0);
	jws(&j);
	if (*j.p != '\0')
		j.bad = true;
	if (j.bad)
		fail_msg("not one JSON object (at '%.40s'):\n%s", j.p, text);
	assert_int_equal(j.top_keys, 4);
	return j;
}

/* ------------------------------------------------------------ helpers */

/* count: occurrences of needle in hay. */
static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* row_of: the table line that starts with addr (copied into line), or false. */
static bool row_of(const char *table, const char *addr, char *line, size_t len)
{
	size_t al = strlen(addr);
	for (const char *p = table; *p; ) {
		const char *e = strchr(p, '\n');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l > al && strncmp(p, addr, al) == 0 && p[al] == ' ') {
			snprintf(line, len, "%.*s", (int)l, p);
			return true;
		}
		p += l + (e != NULL);
	}
	return false;
}

static void join_names(char *buf, size_t len, char names[][DKV_NAME_MAX], int n)
{
	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		size_t l = strlen(buf);
		snprintf(buf + l, len - l, "%s%s", i ? "," : "", names[i]);
	}
}

/* ------------------------------------------------------------ tests: the program */

struct fake {
	int calls;
};

static void fake_fill(void *ctx, dkv_status *st)
{
	struct fake *f = ctx;
	f->calls++;
	snprintf(st->service, sizeof st->service, "kvpaxos");
	snprintf(st->role, sizeof st->role, "rejoining");
	snprintf(st->detail, sizeof st->detail, "detail\twith a tab");
	st->gid = 7;
	st->me = 1;
	st->npeers = 3;
	st->incarnation = 0x1234567890ULL;
	st->applied = 10;
	st->paxos_max = 12;
	st->paxos_min = 3;
	st->snapshot_seq = 8;
	st->sessions = 4;
	st->keys = 5;
	st->bytes = 600;
	st->dir_bytes = 7000;
}

/* The status program on a plain dkv_rpc_server: every field crosses the wire;
 * unregistering makes the call fail; a second registration is refused. */
static void test_status_program_round_trip_and_unregister(void **state)
{
	(void)state;
	char name[DKV_NAME_MAX];
	th_port(name, "ops", "prog", 0);
	dkv_rpc_server *rpcs = dkv_rpc_server_listen(name);
	assert_non_null(rpcs);
	struct fake f = { 0 };
	dkv_status_reg *reg = dkv_status_register(rpcs, fake_fill, &f);
	assert_non_null(reg);
	assert_null(dkv_status_register(rpcs, fake_fill, &f));
	assert_int_equal(errno, EINVAL);

	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);
	dkv_status st;
	assert_int_equal(dkv_status_get(pool, name, 5000, &st), DKV_OK);
	assert_int_equal(f.calls, 1);
	assert_string_equal(st.service, "kvpaxos");
	assert_string_equal(st.role, "rejoining");
	assert_string_equal(st.detail, "detail?with a tab"); /* unprintable bytes replaced */
	assert_int_equal(st.gid, 7);
	assert_int_equal(st.me, 1);
	assert_int_equal(st.npeers, 3);
	assert_true(st.incarnation == 0x1234567890ULL);
	assert_int_equal(st.applied, 10);
	assert_int_equal(st.paxos_max, 12);
	assert_int_equal(st.paxos_min, 3);
	assert_int_equal(st.snapshot_seq, 8);
	assert_int_equal(st.sessions, 4);
	assert_int_equal(st.keys, 5);
	assert_int_equal(st.bytes, 600);
	assert_int_equal(st.dir_bytes, 7000);
	assert_int_equal(st.pid, (uint64_t)getpid());

	dkv_status_unregister(reg);
	assert_int_equal(dkv_status_get(pool, name, 5000, &st), DKV_ERR_NET);
	assert_int_equal(f.calls, 1);
	/* Registered again after the removal: served again. */
	reg = dkv_status_register(rpcs, fake_fill, &f);
	assert_non_null(reg);
	assert_int_equal(dkv_status_get(pool, name, 5000, &st), DKV_OK);
	assert_int_equal(f.calls, 2);
	/* After the server's kill (as a service's _free does it): unregister is safe. */
	dkv_rpc_server_kill(rpcs);
	dkv_status_unregister(reg);
	dkv_rpc_server_free(rpcs);
	dkv_rpc_pool_free(pool);
	th_unlink(name);

	dkv_status_init(&st);
	assert_int_equal(st.applied, -1);
	assert_int_equal(st.dir_bytes, -1);
	assert_int_equal(st.gid, 0);
}

static void test_status_dir_bytes_sums_the_files(void **state)
{
	(void)state;
	char dir[DKV_NAME_MAX], sub[DKV_NAME_MAX + 8], f1[DKV_NAME_MAX + 8], f2[DKV_NAME_MAX + 16];
	th_port(dir, "ops", "dir", 0);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(dkv_status_dir_bytes(dir), 0);
	snprintf(sub, sizeof sub, "%s/sub", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(f1, sizeof f1, "%s/a", dir);
	snprintf(f2, sizeof f2, "%s/sub/b", dir);
	FILE *a = fopen(f1, "w"), *b = fopen(f2, "w");
	assert_non_null(a);
	assert_non_null(b);
	fwrite("0123456789", 1, 10, a);
	fwrite("abc", 1, 3, b);
	fclose(a);
	fclose(b);
	assert_int_equal(dkv_status_dir_bytes(dir), 13);
	assert_int_equal(dkv_status_dir_bytes(NULL), -1);
	assert_int_equal(dkv_status_dir_bytes(""), -1);
	assert_int_equal(unlink(f2), 0);
	assert_int_equal(rmdir(sub), 0);
	assert_int_equal(unlink(f1), 0);
	assert_int_equal(dkv_status_dir_bytes(dir), 0);
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(dkv_status_dir_bytes(dir), -1);
}

/* ------------------------------------------------------------ tests: dkvctl status */

static bool dkvd_has_restart(void)
{
	result r;
	run(&r, bin_dkvd, "--help", NULL);
	return strstr(r.out, "--restart") != NULL;
}

static void test_status_kvpaxos_fields_kill_and_restart(void **state)
{
	(void)state;
	char names[3][DKV_NAME_MAX], peers[3 * DKV_NAME_MAX + 8];
	for (int i = 0; i < 3; i++)
		th_port(names[i], "ops", "kv", i);
	join_names(peers, sizeof peers, names, 3);
	kid *k[3];
	for (int i = 0; i < 3; i++) {
		char me[8];
		snprintf(me, sizeof me, "%d", i);
		k[i] = start_dkvd("kvpaxos", "--peers", peers, "--me", me, NULL);
	}
	result r;
	run(&r, bin_dkvctl, "--servers", peers, "put", "color", "blue", NULL);
	assert_int_equal(r.code, 0);

	run(&r, bin_dkvctl, "--servers", peers, "status", NULL);
	if (r.code != 0)
		fail_msg("status exit %d:\n%s", r.code, r.out);
	static const char *const headers[] = { "ADDRESS", "SERVICE", "GROUP", "UP", "ROLE",
		                               "INCARNATION", "APPLIED", "MAX", "MIN", "SNAPSHOT",
		                               "SESSIONS", "KEYS", "BYTES", "DIR", "UPTIME" };
	for (size_t h = 0; h < sizeof headers / sizeof headers[0]; h++)
		assert_contains(r.out, headers[h]);
	assert_contains(r.out, "3 of 3 replicas answered");
	for (int i = 0; i < 3; i++) {
		char line[1024];
		if (!row_of(r.out, names[i], line, sizeof line))
			fail_msg("no row for %s:\n%s", names[i], r.out);
		assert_contains(line, " kvpaxos ");
		assert_contains(line, " yes ");
		assert_contains(line, " voting ");
	}

	run(&r, bin_dkvctl, "--json", "--servers", peers, "status", NULL);
	assert_int_equal(r.code, 0);
	jp j = check_json(r.out);
	assert_int_equal(j.rows, 3);
	assert_int_equal(j.rows_complete, 3);
	assert_int_equal(j.rows_unreachable, 0);
	assert_contains(r.out, "\"ok\":true");

	/* A SIGKILLed replica: unreachable, with why; exit 1. */
	sigkill_kid(k[2]);
	run(&r, bin_dkvctl, "--servers", peers, "status", NULL);
	assert_int_equal(r.code, 1);
	assert_contains(r.out, "2 of 3 replicas answered");
	char line[1024];
	assert_true(row_of(r.out, names[2], line, sizeof line));
	assert_contains(line, " no ");
	assert_contains(line, "unreachable");
	assert_contains(line, "connect: ");
	run(&r, bin_dkvctl, "--json", "--servers", peers, "status", NULL);
	assert_int_equal(r.code, 1);
	j = check_json(r.out);
	assert_int_equal(j.rows, 3);
	assert_int_equal(j.rows_complete, 3);
	assert_int_equal(j.rows_unreachable, 1);
	assert_contains(r.out, "\"ok\":false");

	/* Restarted without its state: rejoining, then voting. */
	if (!dkvd_has_restart()) {
		fprintf(stderr, "[ SKIPPED  ] restart part: this dkvd has no --restart yet (the "
		                "restart work has not landed)\n");
		return;
	}
	char why[4096];
	k[2] = try_start_dkvd(why, sizeof why, "kvpaxos", "--peers", peers, "--me", "2", "--restart",
	                      NULL);
	if (k[2] == NULL) {
		fprintf(stderr, "[ SKIPPED  ] restart part: dkvd kvpaxos --restart does not start in "
		                "this build (the restart work has not landed):\n%s", why);
		return;
	}
	bool saw_rejoining = false, voting = false;
	uint64_t deadline = th_now_ms() + 30000;
	while (!voting && th_now_ms() < deadline) {
		run(&r, bin_dkvctl, "--servers", peers, "status", names[2], NULL);
		if (row_of(r.out, names[2], line, sizeof line)) {
			saw_rejoining |= strstr(line, " rejoining ") != NULL;
			voting = strstr(line, " voting ") != NULL;
		}
		if (!voting) {
			/* Traffic lets the group give the replica its state. */
			result w;
			run(&w, bin_dkvctl, "--servers", peers, "--timeout", "2s", "put", "k", "v", NULL);
		}
	}
	if (!voting)
		fail_msg("the restarted replica never voted again:\n%s", r.out);
	if (!saw_rejoining)
		fprintf(stderr, "note: the restarted replica was voting at its first status call "
		                "(rejoining too short to see)\n");
	assert_int_equal(r.code, 0);
}

/* json_field: the integer `field` of the JSON row of `addr` in a dkvctl
 * --json status output; false if absent or null. */
static bool json_field(const char *out, const char *addr, const char *field, long long *v)
{
	char key[DKV_NAME_MAX + 16], f[64];
	snprintf(key, sizeof key, "\"address\":\"%s\"", addr);
	snprintf(f, sizeof f, "\"%s\":", field);
	const char *row = strstr(out, key);
	if (row == NULL)
		return false;
	const char *end = strchr(row, '}');
	const char *at = strstr(row, f);
	if (at == NULL || (end != NULL && at > end))
		return false;
	char *e;
	*v = strtoll(at + strlen(f), &e, 10);
	return e != at + strlen(f);
}

/* With --dir, the status of each replica shows the directory's bytes (DIR)
 * and, once the writes stopped (the engine snapshots ~0.5 s after the last
 * apply), the snapshot position (SNAPSHOT). */
static void test_status_kvpaxos_with_dir_shows_dir_and_snapshot(void **state)
{
	(void)state;
	char names[3][DKV_NAME_MAX], dirs[3][DKV_NAME_MAX], peers[3 * DKV_NAME_MAX + 8];
	for (int i = 0; i < 3; i++) {
		th_port(names[i], "ops", "kvd", i);
		th_port(dirs[i], "ops", "kvdir", i);
		assert_int_equal(mkdir(dirs[i], 0700), 0);
	}
	join_names(peers, sizeof peers, names, 3);
	for (int i = 0; i < 3; i++) {
		char me[8];
		snprintf(me, sizeof me, "%d", i);
		start_dkvd("kvpaxos", "--peers", peers, "--me", me, "--dir", dirs[i], NULL);
	}
	result r;
	for (int w = 0; w < 5; w++) {
		char v[8];
		snprintf(v, sizeof v, "v%d", w);
		run(&r, bin_dkvctl, "--servers", peers, "put", "k", v, NULL);
		assert_int_equal(r.code, 0);
	}
	/* Bounded wait for the snapshots (not a timing assert: 20 s is far past
	 * the engine's idle delay). */
	int good = 0;
	uint64_t deadline = th_now_ms() + 20000;
	do {
		th_sleep_ms(500);
		run(&r, bin_dkvctl, "--json", "--servers", peers, "status", NULL);
		assert_int_equal(r.code, 0);
		good = 0;
		for (int i = 0; i < 3; i++) {
			long long snap, dir;
			good += json_field(r.out, names[i], "snapshot", &snap) && snap >= 0 &&
			        json_field(r.out, names[i], "dir_bytes", &dir) && dir > 0;
		}
	} while (good < 3 && th_now_ms() < deadline);
	if (good < 3)
		fail_msg("with --dir, %d of 3 rows show DIR > 0 and SNAPSHOT >= 0:\n%s", good, r.out);
}

static void test_status_shardkv_lists_the_groups_of_the_latest_config(void **state)
{
	(void)state;
	char sm[3][DKV_NAME_MAX], smlist[3 * DKV_NAME_MAX + 8];
	char g[2][3][DKV_NAME_MAX], glist[2][3 * DKV_NAME_MAX + 8];
	for (int i = 0; i < 3; i++)
		th_port(sm[i], "ops", "sm", i);
	join_names(smlist, sizeof smlist, sm, 3);
	for (int i = 0; i < 3; i++) {
		char me[8];
		snprintf(me, sizeof me, "%d", i);
		start_dkvd("shardmaster", "--peers", smlist, "--me", me, NULL);
	}
	for (int x = 0; x < 2; x++) {
		char gid[8];
		snprintf(gid, sizeof gid, "%d", 100 + x);
		for (int i = 0; i < 3; i++)
			th_port(g[x][i], "ops", x ? "gb" : "ga", i);
		join_names(glist[x], sizeof glist[x], g[x], 3);
		for (int i = 0; i < 3; i++) {
			char me[8];
			snprintf(me, sizeof me, "%d", i);
			start_dkvd("shardkv", "--gid", gid, "--shardmasters", smlist, "--peers", glist[x],
			           "--me", me, NULL);
		}
	}
	result r;
	run(&r, bin_dkvctl, "--shardmasters", smlist, "join", "100", glist[0], NULL);
	assert_int_equal(r.code, 0);
	run(&r, bin_dkvctl, "--shardmasters", smlist, "join", "101", glist[1], NULL);
	assert_int_equal(r.code, 0);
	run(&r, bin_dkvctl, "--shardmasters", smlist, "put", "a", "1", NULL);
	assert_int_equal(r.code, 0);

	run(&r, bin_dkvctl, "--shardmasters", smlist, "status", NULL);
	if (r.code != 0)
		fail_msg("status exit %d:\n%s", r.code, r.out);
	assert_contains(r.out, "9 of 9 replicas answered");
	char line[1024];
	for (int i = 0; i < 3; i++) {
		assert_true(row_of(r.out, sm[i], line, sizeof line));
		assert_contains(line, " shardmaster ");
		assert_contains(line, " voting ");
	}
	for (int x = 0; x < 2; x++)
		for (int i = 0; i < 3; i++) {
			char gid[16];
			snprintf(gid, sizeof gid, " %d ", 100 + x);
			if (!row_of(r.out, g[x][i], line, sizeof line))
				fail_msg("no row for %s:\n%s", g[x][i], r.out);
			assert_contains(line, " shardkv ");
			assert_contains(line, gid);
			assert_contains(line, " voting ");
		}
	run(&r, bin_dkvctl, "--json", "--shardmasters", smlist, "status", NULL);
	assert_int_equal(r.code, 0);
	jp j = check_json(r.out);
	assert_int_equal(j.rows, 9);
	assert_int_equal(j.rows_complete, 9);
	assert_int_equal(count(r.out, "\"service\":\"shardkv\""), 6);
	assert_int_equal(count(r.out, "\"group\":101"), 3);
}

static void test_status_pbservice_shows_primary_and_backup(void **state)
{
	(void)state;
	char vs[DKV_NAME_MAX], p[2][DKV_NAME_MAX];
	th_port(vs, "ops", "vs", 0);
	th_port(p[0], "ops", "pb", 0);
	th_port(p[1], "ops", "pb", 1);
	start_dkvd("viewservice", "--listen", vs, NULL);
	start_dkvd("pbservice", "--listen", p[0], "--vs", vs, NULL);
	start_dkvd("pbservice", "--listen", p[1], "--vs", vs, NULL);
	result r;
	/* Wait (bounded) for a view with a backup that has its state. */
	uint64_t deadline = th_now_ms() + 20000;
	for (;;) {
		run(&r, bin_dkvctl, "--vs", vs, "status", NULL);
		char l0[1024], l1[1024];
		if (r.code == 0 && row_of(r.out, p[0], l0, sizeof l0) && row_of(r.out, p[1], l1, sizeof l1) &&
		    (strstr(l0, " backup ") || strstr(l1, " backup ")) && !strstr(r.out, "no state yet"))
			break;
		if (th_now_ms() > deadline)
			fail_msg("no primary and backup within 20 s:\n%s", r.out);
		th_sleep_ms(100);
	}
	assert_contains(r.out, "3 of 3 replicas answered");
	char line[1024];
	assert_true(row_of(r.out, vs, line, sizeof line));
	assert_contains(line, " viewservice ");
	int primaries = 0, backups = 0;
	for (int i = 0; i < 2; i++) {
		assert_true(row_of(r.out, p[i], line, sizeof line));
		assert_contains(line, " pbservice ");
		primaries += strstr(line, " primary ") != NULL;
		backups += strstr(line, " backup ") != NULL;
	}
	assert_int_equal(primaries, 1);
	assert_int_equal(backups, 1);
	run(&r, bin_dkvctl, "--json", "--vs", vs, "status", NULL);
	assert_int_equal(r.code, 0);
	jp j = check_json(r.out);
	assert_int_equal(j.rows, 3);
	assert_int_equal(j.rows_complete, 3);
	assert_int_equal(count(r.out, "\"role\":\"primary\""), 1);
	assert_int_equal(count(r.out, "\"role\":\"backup\""), 1);
}

static void test_status_bad_flags_exit_2(void **state)
{
	(void)state;
	result r;
	run(&r, bin_dkvctl, "status", "--bogus", NULL);
	assert_int_equal(r.code, 2);
	assert_contains(r.err, "unknown option");
	run(&r, bin_dkvctl, "status", NULL);
	assert_int_equal(r.code, 2);
	assert_contains(r.err, "which service?");
	run(&r, bin_dkvctl, "--servers", "", "status", NULL);
	assert_int_equal(r.code, 2);
	run(&r, bin_dkvctl, "--servers", "tcp:127.0.0.1:notaport", "status", NULL);
	assert_int_equal(r.code, 2);
	run(&r, bin_dkvctl, "--timeout", "soon", "--servers", "/tmp/x", "status", NULL);
	assert_int_equal(r.code, 2);
	run(&r, bin_dkvctl, "--service", "kvpaxos", "--servers", "/tmp/x", "status", NULL);
	assert_int_equal(r.code, 2);
	run(&r, bin_dkvctl, "status", "tcp:bad", NULL);
	assert_int_equal(r.code, 2);
}

/* ------------------------------------------------------------ tests: bench report */

static bool png_file(const char *path)
{
	unsigned char b[8];
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return false;
	size_t n = fread(b, 1, 8, f);
	fclose(f);
	return n == 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0;
}

static void test_bench_report_short_run_writes_report_and_plots(void **state)
{
	(void)state;
	char out[DKV_NAME_MAX], cmd[4 * PATH_MAX], path[DKV_NAME_MAX + 32];
	th_port(out, "ops", "report", 0);
	/* A short run: a second a row, the benches the plots need. */
	snprintf(cmd, sizeof cmd,
	         "DKV_BENCH_SECONDS=1 '%s/bench/report.sh' '%s' '%s' bench_floor bench_kvpaxos "
	         "bench_shardkv",
	         src_root, bench_dir, out);
	result r;
	run_sh(&r, cmd);
	if (r.code != 0)
		fail_msg("report.sh exit %d:\n%s\n%s", r.code, r.out, r.err);
	static char md[OUT_MAX];
	snprintf(path, sizeof path, "%s/report.md", out);
	assert_true(tp_read_file(path, md, sizeof md) > 0);
	assert_contains(md, "# dkv bench report");
	assert_contains(md, "| machine |");
	assert_contains(md, "| date |");
	assert_contains(md, "load average");
	assert_contains(md, "## Floors");
	assert_contains(md, "null RPC");
	assert_contains(md, "fdatasync");
	assert_contains(md, "![kvpaxos](kvpaxos.png)");
	assert_contains(md, "![shardkv](shardkv.png)");
	assert_contains(md, "### bench_kvpaxos (exit 0)");
	assert_contains(md, "### bench_shardkv (exit 0)");
	assert_contains(md, "### bench_floor (exit 0)");
	assert_null(strstr(md, "| FAILED |"));
	assert_null(strstr(md, "| n/a |")); /* both floors measured */
	snprintf(path, sizeof path, "%s/kvpaxos.png", out);
	assert_true(png_file(path));
	snprintf(path, sizeof path, "%s/shardkv.png", out);
	assert_true(png_file(path));
	static char tsv[OUT_MAX];
	snprintf(path, sizeof path, "%s/results.tsv", out);
	tp_read_file(path, tsv, sizeof tsv);
	/* 9 in-memory rows (Put, Append, Get × 1, 8, 32 clerks), more with the durable mode */
	assert_true(count(tsv, "bench=kvpaxos\t") >= 9);
	assert_true(count(tsv, "bench=shardkv\t") >= 2);
	assert_int_equal(count(tsv, "kind=fdatasync"), 1);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
	run_sh(&r, cmd);
	assert_int_equal(r.code, 0);
}

/* ------------------------------------------------------------ tests: man pages */

static void test_man_pages_install_render_and_uninstall(void **state)
{
	(void)state;
	char dest[DKV_NAME_MAX], cmd[4 * PATH_MAX];
	th_port(dest, "ops", "destdir", 0);
	result r;
	/* SAN=… reaches this make through MAKEFLAGS, as make test was run. */
	snprintf(cmd, sizeof cmd, "cd '%s' && make -s --no-print-directory install DESTDIR='%s' PREFIX=/usr",
	         src_root, dest);
	run_sh(&r, cmd);
	if (r.code != 0)
		fail_msg("make install exit %d:\n%s\n%s", r.code, r.out, r.err);
	static const char *const pages[] = { "dkvd", "dkvctl", "dkv-cluster" };
	for (int i = 0; i < 3; i++) {
		char page[DKV_NAME_MAX + 64];
		snprintf(page, sizeof page, "%s/usr/share/man/man1/%s.1", dest, pages[i]);
		struct stat st;
		if (stat(page, &st) != 0)
			fail_msg("%s not installed", page);
		/* Rendered without a warning; the page says what the program is. */
		snprintf(cmd, sizeof cmd,
		         "MANWIDTH=80 man -l '%s' 2>&1 >/dev/null; groff -ww -z -man '%s' 2>&1", page,
		         page);
		run_sh(&r, cmd);
		assert_int_equal(r.code, 0);
		if (r.out[0] != '\0')
			fail_msg("%s renders with warnings:\n%s", page, r.out);
		snprintf(cmd, sizeof cmd, "MANWIDTH=80 man -l '%s' 2>/dev/null", page);
		run_sh(&r, cmd);
		assert_int_equal(r.code, 0);
		assert_contains(r.out, "NAME");
		assert_contains(r.out, "SYNOPSIS");
		assert_contains(r.out, "OPTIONS");
		assert_contains(r.out, pages[i]);
	}
	snprintf(cmd, sizeof cmd, "MANWIDTH=80 man -l '%s/usr/share/man/man1/dkvctl.1' 2>/dev/null",
	         dest);
	run_sh(&r, cmd);
	assert_contains(r.out, "status");
	snprintf(cmd, sizeof cmd,
	         "cd '%s' && make -s --no-print-directory uninstall DESTDIR='%s' PREFIX=/usr && "
	         "! ls '%s'/usr/share/man/man1/*.1 2>/dev/null && rm -rf '%s'",
	         src_root, dest, dest, dest);
	run_sh(&r, cmd);
	if (r.code != 0)
		fail_msg("make uninstall left man pages or failed (%d):\n%s", r.code, r.out);
}

/* ------------------------------------------------------------ main */

static void find_paths(const char *argv0)
{
	char self[PATH_MAX];
	if (realpath(argv0, self) == NULL) {
		ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n <= 0) {
			fprintf(stderr, "test_ops: cannot find my own path\n");
			exit(1);
		}
		self[n] = '\0';
	}
	*strrchr(self, '/') = '\0'; /* …/build[/san-x]/tests */
	snprintf(bin_dkvd, sizeof bin_dkvd, "%.4000s/../bin/dkvd", self);
	snprintf(bin_dkvctl, sizeof bin_dkvctl, "%.4000s/../bin/dkvctl", self);
	snprintf(bench_dir, sizeof bench_dir, "%.4000s/../bench", self);
	/* The source tree: where make runs the suites (its current directory). */
	if (getcwd(src_root, sizeof src_root) == NULL || access("bench/report.sh", X_OK) != 0) {
		fprintf(stderr, "test_ops: run from the source tree (make test T=ops)\n");
		exit(1);
	}
	const char *need[] = { bin_dkvd, bin_dkvctl };
	for (int i = 0; i < 2; i++)
		if (access(need[i], X_OK) != 0) {
			fprintf(stderr, "test_ops: %s is missing (run make)\n", need[i]);
			exit(1);
		}
}

int main(int argc, char **argv)
{
	(void)argc;
	find_paths(argv[0]);
	const char *vars[] = { "DKV_LISTEN", "DKV_PEERS", "DKV_ME", "DKV_VS", "DKV_SHARDMASTERS",
		               "DKV_GID", "DKV_UNRELIABLE", "DKV_SERVICE", "DKV_SERVERS", "DKV_TIMEOUT",
		               "DKV_DIR", "DKV_RESTART", "DKV_BENCH_OUT" };
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		unsetenv(vars[i]);
	/* dkvd logs at info by default (start_dkvd reads "serving on"); the
	 * clients' library messages go to stderr, apart from what is checked. */
	unsetenv("DKV_LOG");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_program_round_trip_and_unregister),
		cmocka_unit_test(test_status_dir_bytes_sums_the_files),
		cmocka_unit_test_teardown(test_status_kvpaxos_fields_kill_and_restart, teardown_kids),
		cmocka_unit_test_teardown(test_status_kvpaxos_with_dir_shows_dir_and_snapshot,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_status_shardkv_lists_the_groups_of_the_latest_config,
		                          teardown_kids),
		cmocka_unit_test_teardown(test_status_pbservice_shows_primary_and_backup, teardown_kids),
		cmocka_unit_test_teardown(test_status_bad_flags_exit_2, teardown_kids),
		cmocka_unit_test(test_bench_report_short_run_writes_report_and_plots),
		cmocka_unit_test(test_man_pages_install_render_and_uninstall),
	};
	return th_run_suite("ops", tests);
}
