/*
 * tests/test_rpc.c — libdkvrpc itself: listeners, dispatch, the checked pool,
 * partitions through hard links, deaf servers, unreliable mode, kill, bad
 * input, TCP names, timeouts, the error table.
 *
 * A small test program (hand-written XDR with libtirpc's primitives, no rpcgen)
 * runs on several listeners in this one process; each instance answers with its
 * own id so a test can tell which server a name reached.
 */
#include "lib/harness.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dkv/rpc.h"
#include "dkv_internal.h"

#define T_PROG 0x20000F00u
#define T_VERS 1u
#define P_ECHO 1u   /* int -> id*1000 + int */
#define P_SLEEP 2u  /* int ms -> id, after sleeping */
#define P_NESTED 3u /* string "a,b,c" -> calls a with "b,c" ...; the last answers its id */
#define P_STR 4u    /* string -> same string */

typedef struct {
	int id;
	dkv_rpc_pool *pool;
	atomic_int served;
	atomic_int sleeping;
} tinst;

static void h_echo(void *inst, void *args, void *res)
{
	tinst *t = inst;
	atomic_fetch_add(&t->served, 1);
	*(int *)res = t->id * 1000 + *(int *)args;
}

static void h_sleep(void *inst, void *args, void *res)
{
	tinst *t = inst;
	atomic_fetch_add(&t->sleeping, 1);
	th_sleep_ms((unsigned)*(int *)args);
	atomic_fetch_sub(&t->sleeping, 1);
	*(int *)res = t->id;
}

static void h_nested(void *inst, void *args, void *res)
{
	tinst *t = inst;
	char *path = *(char **)args;
	if (path == NULL || *path == '\0') {
		*(int *)res = t->id;
		return;
	}
	char next[DKV_NAME_MAX];
	const char *comma = strchr(path, ',');
	size_t n = comma ? (size_t)(comma - path) : strlen(path);
	memcpy(next, path, n);
	next[n] = '\0';
	char *rest = (char *)(comma ? comma + 1 : "");
	int r = 0;
	int rc = dkv_rpc_call(t->pool, next, T_PROG, T_VERS, P_NESTED, (xdrproc_t)xdr_wrapstring,
	                      &rest, (xdrproc_t)xdr_int, &r, 5000);
	*(int *)res = rc == DKV_OK ? r * 10 + t->id : -1;
}

static void h_str(void *inst, void *args, void *res)
{
	(void)inst;
	char *s = *(char **)args;
	*(char **)res = strdup(s ? s : "");
}

static const dkv_rpc_proc tprocs[] = {
	{ P_ECHO, (xdrproc_t)xdr_int, sizeof(int), (xdrproc_t)xdr_int, sizeof(int), h_echo },
	{ P_SLEEP, (xdrproc_t)xdr_int, sizeof(int), (xdrproc_t)xdr_int, sizeof(int), h_sleep },
	{ P_NESTED, (xdrproc_t)xdr_wrapstring, sizeof(char *), (xdrproc_t)xdr_int, sizeof(int), h_nested },
	{ P_STR, (xdrproc_t)xdr_wrapstring, sizeof(char *), (xdrproc_t)xdr_wrapstring, sizeof(char *), h_str },
};

typedef struct {
	dkv_rpc_server *srv;
	tinst inst;
	char name[DKV_NAME_MAX];
} tserver;

static void tserver_start(tserver *ts, const char *name, int id)
{
	memset(ts, 0, sizeof *ts);
	ts->inst.id = id;
	ts->inst.pool = dkv_rpc_pool_new();
	assert_non_null(ts->inst.pool);
	ts->srv = dkv_rpc_server_listen(name);
	if (ts->srv == NULL)
		fail_msg("listen %s: %s", name, strerror(errno));
	assert_int_equal(dkv_rpc_server_add(ts->srv, T_PROG, T_VERS, tprocs, 4, &ts->inst), DKV_OK);
	snprintf(ts->name, sizeof ts->name, "%s", dkv_rpc_server_name(ts->srv));
}

static void tserver_stop(tserver *ts)
{
	dkv_rpc_pool_shutdown(ts->inst.pool);
	dkv_rpc_server_free(ts->srv);
	dkv_rpc_pool_free(ts->inst.pool);
	ts->srv = NULL;
}

static int echo(dkv_rpc_pool *p, const char *name, int v, int *out)
{
	*out = -1;
	return dkv_rpc_call(p, name, T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v,
	                    (xdrproc_t)xdr_int, out, 2000);
}

/* The id of the server that `name` reaches, or -1 when the call fails. */
static int who(dkv_rpc_pool *p, const char *name)
{
	int r;
	return echo(p, name, 0, &r) == DKV_OK ? r / 1000 : -1;
}

/* ------------------------------------------------------------ tests */

/* Seven listeners of one program (five unix, two tcp) each answer as themselves. */
static void test_rpc_many_listeners_of_one_program_answer_as_themselves(void **state)
{
	(void)state;
	tserver ts[7];
	char name[DKV_NAME_MAX];
	for (int i = 0; i < 5; i++)
		tserver_start(&ts[i], th_port(name, "rpc", "many", i), i + 1);
	tserver_start(&ts[5], "tcp:127.0.0.1:0", 6);
	tserver_start(&ts[6], "tcp:127.0.0.1:0", 7);
	assert_true(strncmp(ts[5].name, "tcp:127.0.0.1:", 14) == 0);
	assert_string_not_equal(ts[5].name, "tcp:127.0.0.1:0");
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 7; i++) {
			int r;
			assert_int_equal(echo(p, ts[i].name, round, &r), DKV_OK);
			assert_int_equal(r, (i + 1) * 1000 + round);
		}
	dkv_rpc_pool_stats st;
	dkv_rpc_pool_get_stats(p, &st);
	assert_int_equal(st.dials, 7);
	assert_int_equal(st.reuses, 14);
	dkv_rpc_pool_free(p);
	for (int i = 0; i < 7; i++)
		tserver_stop(&ts[i]);
}

/* A "unix:" prefix names the same socket as the bare path. */
static void test_rpc_unix_prefix_names_the_same_socket(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX], pref[DKV_NAME_MAX + 8];
	th_port(name, "rpc", "pref", 0);
	snprintf(pref, sizeof pref, "unix:%s", name);
	tserver_start(&ts, pref, 3);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	assert_int_equal(who(p, name), 3);
	assert_int_equal(who(p, pref), 3);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

/* Raw libtirpc client on a unix socket, to see the exact RPC error codes. */
static CLIENT *raw_client(const char *path, rpcprog_t prog, rpcvers_t vers, int *fdp)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	struct netbuf nb = { .maxlen = sizeof sa, .len = sizeof sa, .buf = &sa };
	CLIENT *cl = clnt_vc_create(fd, &nb, prog, vers, 0, 0);
	assert_non_null(cl);
	*fdp = fd;
	return cl;
}

static enum clnt_stat raw_call(const char *path, rpcprog_t prog, rpcvers_t vers, rpcproc_t proc,
                               xdrproc_t xa, void *a)
{
	int fd;
	CLIENT *cl = raw_client(path, prog, vers, &fd);
	int res = 0;
	struct timeval tv = { 2, 0 };
	xdrproc_t xr = proc == NULLPROC ? (xdrproc_t)xdr_void : (xdrproc_t)xdr_int;
	enum clnt_stat st = clnt_call(cl, proc, xa, a, xr, (char *)&res, tv);
	clnt_destroy(cl);
	close(fd);
	return st;
}

/* Unknown program, version and procedure, and undecodable arguments get the standard replies. */
static void test_rpc_unknown_program_version_procedure_get_standard_errors(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "err", 0), 1);
	int v = 5;
	assert_int_equal(raw_call(name, T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v), RPC_SUCCESS);
	assert_int_equal(raw_call(name, T_PROG, T_VERS, NULLPROC, (xdrproc_t)xdr_void, NULL), RPC_SUCCESS);
	assert_int_equal(raw_call(name, T_PROG + 1, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v), RPC_PROGUNAVAIL);
	assert_int_equal(raw_call(name, T_PROG, T_VERS + 1, P_ECHO, (xdrproc_t)xdr_int, &v), RPC_PROGVERSMISMATCH);
	assert_int_equal(raw_call(name, T_PROG, T_VERS, 99, (xdrproc_t)xdr_int, &v), RPC_PROCUNAVAIL);
	/* ECHO wants an int; send no argument at all. */
	assert_int_equal(raw_call(name, T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_void, NULL), RPC_CANTDECODEARGS);
	/* The server still serves normally afterwards, and dkv_rpc_call maps the errors to NET. */
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	assert_int_equal(who(p, name), 1);
	int r;
	assert_int_equal(dkv_rpc_call(p, name, T_PROG + 1, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v,
	                              (xdrproc_t)xdr_int, &r, 1000), DKV_ERR_NET);
	assert_int_equal(who(p, name), 1);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

struct sleeper {
	dkv_rpc_pool *pool;
	const char *name;
	int ms;
	int rc;
	int res;
	atomic_bool done;
};

static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	s->rc = dkv_rpc_call(s->pool, s->name, T_PROG, T_VERS, P_SLEEP, (xdrproc_t)xdr_int, &s->ms,
	                     (xdrproc_t)xdr_int, &s->res, 30000);
	atomic_store(&s->done, true);
	return NULL;
}

/* A handler that blocks does not stop the same server from serving others. */
static void test_rpc_blocked_handler_does_not_stall_other_calls(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "block", 0), 4);
	struct sleeper s = { .pool = dkv_rpc_pool_new(), .name = name, .ms = 20000 };
	pthread_t t;
	pthread_create(&t, NULL, sleeper_main, &s);
	WAIT_UNTIL(atomic_load(&ts.inst.sleeping) == 1, 10000);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	for (int i = 0; i < 50; i++)
		assert_int_equal(who(p, name), 4);
	/* The sleeper is still inside its handler: the 50 calls did not wait for it. */
	assert_false(atomic_load(&s.done));
	assert_int_equal(atomic_load(&ts.inst.sleeping), 1);
	/* Kill makes the blocked caller fail without waiting for the handler's reply. */
	dkv_rpc_pool_shutdown(s.pool);
	pthread_join(t, NULL);
	assert_int_equal(s.rc, DKV_ERR_KILLED);
	dkv_rpc_pool_free(s.pool);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

/* Nested calls re-enter a server whose first handler is still running. */
static void test_rpc_nested_calls_reenter_the_first_server(void **state)
{
	(void)state;
	tserver ts[4];
	char name[DKV_NAME_MAX];
	for (int i = 0; i < 3; i++)
		tserver_start(&ts[i], th_port(name, "rpc", "nest", i), i + 1);
	tserver_start(&ts[3], "tcp:127.0.0.1:0", 4);
	char path[6 * DKV_NAME_MAX];
	/* 1 -> 2 -> 4(tcp) -> 3 -> 1 (re-entry) -> 2 */
	snprintf(path, sizeof path, "%s,%s,%s,%s,%s", ts[1].name, ts[3].name, ts[2].name, ts[0].name,
	         ts[1].name);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	char *arg = path;
	int r = 0;
	assert_int_equal(dkv_rpc_call(p, ts[0].name, T_PROG, T_VERS, P_NESTED, (xdrproc_t)xdr_wrapstring,
	                              &arg, (xdrproc_t)xdr_int, &r, 10000), DKV_OK);
	/* innermost first: 2, then 1, 3, 4, 2, 1 */
	assert_int_equal(r, 213421);
	dkv_rpc_pool_free(p);
	for (int i = 0; i < 4; i++)
		tserver_stop(&ts[i]);
}

/* Hard-link partitions hold with pooled connections: a name reaches whatever it points at now. */
static void test_rpc_pooled_connections_follow_hard_link_partitions(void **state)
{
	(void)state;
	tserver ts[2];
	char n0[DKV_NAME_MAX], n1[DKV_NAME_MAX], link_name[DKV_NAME_MAX];
	tserver_start(&ts[0], th_port(n0, "rpc", "part", 0), 10);
	tserver_start(&ts[1], th_port(n1, "rpc", "part", 1), 11);
	th_pair_name(link_name, "rpc", "part", 2, 0);
	dkv_rpc_pool *p = dkv_rpc_pool_new();

	assert_int_equal(link(n0, link_name), 0);
	assert_int_equal(who(p, link_name), 10);
	assert_int_equal(who(p, link_name), 10);
	dkv_rpc_pool_stats st;
	dkv_rpc_pool_get_stats(p, &st);
	assert_int_equal(st.dials, 1);
	assert_int_equal(st.reuses, 1);

	th_unlink(link_name); /* partitioned */
	assert_int_equal(who(p, link_name), -1);
	assert_int_equal(who(p, link_name), -1);

	assert_int_equal(link(n1, link_name), 0); /* re-pointed at the other server */
	assert_int_equal(who(p, link_name), 11);

	th_unlink(link_name);
	assert_int_equal(link(n0, link_name), 0); /* healed back */
	assert_int_equal(who(p, link_name), 10);
	for (int i = 0; i < 20; i++) {
		th_unlink(link_name);
		assert_int_equal(link(i % 2 ? n0 : n1, link_name), 0);
		assert_int_equal(who(p, link_name), i % 2 ? 10 : 11);
	}
	th_unlink(link_name);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts[0]);
	tserver_stop(&ts[1]);
}

/* A deaf server (socket file removed) is unreachable even over a cached connection, but can still call out. */
static void test_rpc_deaf_server_is_unreachable_but_can_call_out(void **state)
{
	(void)state;
	tserver ts[2];
	char n0[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	tserver_start(&ts[0], th_port(n0, "rpc", "deaf", 0), 1);
	tserver_start(&ts[1], th_port(n1, "rpc", "deaf", 1), 2);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	assert_int_equal(who(p, n0), 1);
	th_unlink(n0);
	assert_int_equal(who(p, n0), -1);
	/* The deaf server still reaches others (nested call from inside it is not
	 * possible without a name to reach it; use its own pool directly). */
	assert_int_equal(who(ts[0].inst.pool, n1), 2);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts[0]);
	tserver_stop(&ts[1]);
}

/* Unreliable mode drops 10% of requests unread and 18% of replies; the counter sees all. */
static void test_rpc_unreliable_mode_drops_within_statistical_bounds(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "unrel", 0), 1);
	dkv_rpc_server_set_unreliable(ts.srv, true);
	assert_true(dkv_rpc_server_is_unreliable(ts.srv));
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	const int n = th_under_valgrind() ? 400 : 2000;
	int failed = 0;
	for (int i = 0; i < n; i++) {
		int r;
		if (echo(p, name, i, &r) != DKV_OK)
			failed++;
		else
			assert_int_equal(r, 1000 + i);
	}
	/* Expected failure rate 0.28, served 0.9; bounds are 6 standard deviations. */
	double sd_f = __builtin_sqrt(0.28 * 0.72 / n), sd_s = __builtin_sqrt(0.9 * 0.1 / n);
	double ff = (double)failed / n, fs = (double)atomic_load(&ts.inst.served) / n;
	printf("unreliable: %d calls, %.3f failed (expect 0.28), %.3f served (expect 0.90)\n", n, ff, fs);
	assert_true(ff > 0.28 - 6 * sd_f && ff < 0.28 + 6 * sd_f);
	assert_true(fs > 0.9 - 6 * sd_s && fs < 0.9 + 6 * sd_s);
	assert_int_equal(dkv_rpc_server_count(ts.srv), (unsigned long)n);
	/* Reliable again: every call succeeds. */
	dkv_rpc_server_set_unreliable(ts.srv, false);
	for (int i = 0; i < 100; i++)
		assert_int_equal(who(p, name), 1);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

/* Killing a server with a call in flight fails the caller and leaves no threads behind. */
static void test_rpc_kill_with_calls_in_flight_fails_callers_and_leaks_nothing(void **state)
{
	(void)state;
	int threads0 = th_thread_count();
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "kill", 0), 1);
	struct sleeper s[3];
	pthread_t t[3];
	for (int i = 0; i < 3; i++) {
		s[i] = (struct sleeper){ .pool = dkv_rpc_pool_new(), .name = name, .ms = 1000 };
		pthread_create(&t[i], NULL, sleeper_main, &s[i]);
	}
	/* and some idle cached connections */
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	assert_int_equal(who(p, name), 1);
	WAIT_UNTIL(atomic_load(&ts.inst.sleeping) == 3, 10000);
	dkv_rpc_server_kill(ts.srv);
	dkv_rpc_server_kill(ts.srv); /* idempotent */
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_not_equal(s[i].rc, DKV_OK);
		dkv_rpc_pool_free(s[i].pool);
	}
	/* After kill nothing reaches it (the socket file may remain). */
	assert_int_equal(who(p, name), -1);
	assert_int_equal(dkv_rpc_server_add(ts.srv, T_PROG + 5, 1, tprocs, 1, NULL), DKV_ERR_KILLED);
	tserver_stop(&ts);
	dkv_rpc_pool_free(p);
	WAIT_UNTIL(th_thread_count() <= threads0, 10000); /* the count lags a join */
}

/* A server restarted at the path of a killed one (stale socket file) listens and serves. */
static void test_rpc_restart_at_stale_socket_path_works(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	th_port(name, "rpc", "restart", 0);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	for (int gen = 1; gen <= 3; gen++) {
		tserver_start(&ts, name, gen);
		/* the cached connection to the previous generation is detected as closed */
		assert_int_equal(who(p, name), gen);
		dkv_rpc_server_kill(ts.srv);
		tserver_stop(&ts);
	}
	dkv_rpc_pool_free(p);
}

static int raw_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* Garbage bytes, truncated and stalled records, huge record marks: the server keeps serving. */
static void test_rpc_garbage_and_truncated_records_do_not_stop_the_server(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "garb", 0), 7);
	dkv_rpc_pool *p = dkv_rpc_pool_new();

	/* 1. pure junk, then close */
	int fd = raw_connect(name);
	char junk[4096];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (char)th_rand();
	assert_true(write(fd, junk, sizeof junk) > 0);
	close(fd);
	assert_int_equal(who(p, name), 7);

	/* 2. a valid last-fragment mark with a junk body that is not an RPC call */
	fd = raw_connect(name);
	unsigned char rec[4 + 64];
	uint32_t mark = htonl(0x80000000u | 64u);
	memcpy(rec, &mark, 4);
	memset(rec + 4, 0xAB, 64);
	assert_true(write(fd, rec, sizeof rec) > 0);
	assert_int_equal(who(p, name), 7);

	/* 3. a record mark announcing 2 GiB, then a few bytes, then a stall */
	int fd2 = raw_connect(name);
	mark = htonl(0x80000000u | 0x7fffffffu);
	assert_true(write(fd2, &mark, 4) == 4);
	assert_true(write(fd2, junk, 100) == 100);
	assert_int_equal(who(p, name), 7);

	/* 4. half of a real call, then a stall */
	int fd3 = raw_connect(name);
	mark = htonl(0x80000000u | 200u);
	assert_true(write(fd3, &mark, 4) == 4);
	assert_true(write(fd3, junk, 20) == 20);
	for (int i = 0; i < 20; i++)
		assert_int_equal(who(p, name), 7);

	/* Kill still completes with stalled connections open. */
	tserver_stop(&ts);
	close(fd);
	close(fd2);
	close(fd3);
	dkv_rpc_pool_free(p);
}

/* TCP names: listen on port 0, call through the reported name; bad names are rejected. */
static void test_rpc_tcp_names_work_and_bad_names_are_rejected(void **state)
{
	(void)state;
	tserver ts;
	tserver_start(&ts, "tcp:127.0.0.1:0", 9);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	char *s = "hello over tcp", *r = NULL;
	assert_int_equal(dkv_rpc_call(p, ts.name, T_PROG, T_VERS, P_STR, (xdrproc_t)xdr_wrapstring, &s,
	                              (xdrproc_t)xdr_wrapstring, &r, 2000), DKV_OK);
	assert_string_equal(r, s);
	xdr_free((xdrproc_t)xdr_wrapstring, (char *)&r);
	const char *bad[] = { "", "tcp:", "tcp:127.0.0.1", "tcp::80", "tcp:h:", "tcp:h:12x", "tcp:h:99999", "unix:" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		assert_null(dkv_rpc_server_listen(bad[i]));
		assert_int_equal(errno, EINVAL);
		int v = 0, out;
		assert_int_equal(dkv_rpc_call(p, bad[i], T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v,
		                              (xdrproc_t)xdr_int, &out, 100), DKV_ERR_INVAL);
	}
	char longname[DKV_NAME_MAX + 10];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	assert_null(dkv_rpc_server_listen(longname));
	/* Same port twice: address in use. */
	errno = 0;
	assert_null(dkv_rpc_server_listen(ts.name));
	assert_int_equal(errno, EADDRINUSE);
	/* Nobody listening: a failed call, not a hang. */
	tserver_stop(&ts);
	int v = 0, out;
	assert_int_equal(dkv_rpc_call(p, ts.name, T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v,
	                              (xdrproc_t)xdr_int, &out, 1000), DKV_ERR_NET);
	dkv_rpc_pool_free(p);
}

/* A call that outlives its timeout returns DKV_ERR_TIMEOUT; the pool recovers. */
static void test_rpc_call_timeout_returns_timeout_and_pool_recovers(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "tmo", 0), 5);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	int ms = 1500, r;
	assert_int_equal(dkv_rpc_call(p, name, T_PROG, T_VERS, P_SLEEP, (xdrproc_t)xdr_int, &ms,
	                              (xdrproc_t)xdr_int, &r, 100), DKV_ERR_TIMEOUT);
	assert_int_equal(who(p, name), 5);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

/* Removing a program waits for its running handlers, then the program is unavailable. */
static void test_rpc_remove_program_waits_for_running_handlers(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "rm", 0), 6);
	struct sleeper s = { .pool = dkv_rpc_pool_new(), .name = name, .ms = 300 };
	pthread_t t;
	pthread_create(&t, NULL, sleeper_main, &s);
	WAIT_UNTIL(atomic_load(&ts.inst.sleeping) == 1, 10000);
	dkv_rpc_server_remove(ts.srv, T_PROG);
	assert_int_equal(atomic_load(&ts.inst.sleeping), 0);
	pthread_join(t, NULL);
	assert_int_equal(s.rc, DKV_OK);
	int v = 5;
	assert_int_equal(raw_call(name, T_PROG, T_VERS, P_ECHO, (xdrproc_t)xdr_int, &v), RPC_PROGUNAVAIL);
	/* registered again, it serves again; duplicates are refused */
	assert_int_equal(dkv_rpc_server_add(ts.srv, T_PROG, T_VERS, tprocs, 4, &ts.inst), DKV_OK);
	assert_int_equal(dkv_rpc_server_add(ts.srv, T_PROG, T_VERS, tprocs, 4, &ts.inst), DKV_ERR_INVAL);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	assert_int_equal(who(p, name), 6);
	dkv_rpc_pool_free(p);
	dkv_rpc_pool_free(s.pool);
	tserver_stop(&ts);
}

/* Every error code has its own message; unknown codes get a generic one. */
static void test_rpc_strerror_covers_every_code(void **state)
{
	(void)state;
	for (int e = DKV_OK; e < DKV_ERR__COUNT; e++) {
		assert_non_null(dkv_strerror(e));
		assert_string_not_equal(dkv_strerror(e), "unknown dkv error");
		for (int f = DKV_OK; f < e; f++)
			assert_string_not_equal(dkv_strerror(e), dkv_strerror(f));
	}
	assert_string_equal(dkv_strerror(-1), "unknown dkv error");
	assert_string_equal(dkv_strerror(DKV_ERR__COUNT), "unknown dkv error");
	assert_int_equal(DKV_ERR_KILLED, 8);
}

/* Child mode of the SIGPIPE test: runs in a fresh process (exec'd), so the
 * library's one-time set-up has not happened yet. */
static void on_sigpipe(int sig)
{
	(void)sig;
}

static int sigpipe_child(const char *mode)
{
	if (strcmp(mode, "handler") == 0)
		signal(SIGPIPE, on_sigpipe);
	else
		signal(SIGPIPE, SIG_DFL);
	dkv_rpc_pool *p = dkv_rpc_pool_new(); /* first call into the library */
	dkv_rpc_pool_free(p);
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	if (strcmp(mode, "handler") == 0)
		return sa.sa_handler == on_sigpipe ? 0 : 1;
	return sa.sa_handler == SIG_IGN ? 0 : 1;
}

static const char *self_path; /* argv[0]: /proc/self/exe is valgrind's own under memcheck */

static int run_child(const char *mode)
{
	pid_t pid = fork();
	if (pid == 0) {
		setenv("DKV_TEST_SIGPIPE_CHILD", mode, 1);
		execl(self_path, "test_rpc", (char *)NULL);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The first call into the library ignores SIGPIPE, unless the program set a handler. */
static void test_rpc_library_ignores_sigpipe_but_keeps_a_program_handler(void **state)
{
	(void)state;
	assert_int_equal(run_child("default"), 0);
	assert_int_equal(run_child("handler"), 0);
}

/* Many threads share one pool and one server; every reply matches its request. */
static void *hammer_main(void *arg)
{
	void **a = arg;
	dkv_rpc_pool *p = a[0];
	const char *name = a[1];
	for (int i = 0; i < 300; i++) {
		int r;
		if (echo(p, name, i, &r) != DKV_OK || r != 2000 + i)
			return (void *)1;
	}
	return NULL;
}

static void test_rpc_shared_pool_serves_concurrent_threads_correctly(void **state)
{
	(void)state;
	tserver ts;
	char name[DKV_NAME_MAX];
	tserver_start(&ts, th_port(name, "rpc", "hammer", 0), 2);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	pthread_t t[8];
	void *args[2] = { p, name };
	for (int i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, hammer_main, args);
	for (int i = 0; i < 8; i++) {
		void *rv;
		pthread_join(t[i], &rv);
		assert_null(rv);
	}
	dkv_rpc_pool_stats st;
	dkv_rpc_pool_get_stats(p, &st);
	assert_int_equal(st.calls, 2400);
	assert_true(st.dials <= 8);
	dkv_rpc_pool_free(p);
	tserver_stop(&ts);
}

int main(int argc, char **argv)
{
	(void)argc;
	self_path = argv[0];
	const char *child = getenv("DKV_TEST_SIGPIPE_CHILD");
	if (child != NULL)
		return sigpipe_child(child);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rpc_many_listeners_of_one_program_answer_as_themselves),
		cmocka_unit_test(test_rpc_unix_prefix_names_the_same_socket),
		cmocka_unit_test(test_rpc_unknown_program_version_procedure_get_standard_errors),
		cmocka_unit_test(test_rpc_blocked_handler_does_not_stall_other_calls),
		cmocka_unit_test(test_rpc_nested_calls_reenter_the_first_server),
		cmocka_unit_test(test_rpc_pooled_connections_follow_hard_link_partitions),
		cmocka_unit_test(test_rpc_deaf_server_is_unreachable_but_can_call_out),
		cmocka_unit_test(test_rpc_unreliable_mode_drops_within_statistical_bounds),
		cmocka_unit_test(test_rpc_kill_with_calls_in_flight_fails_callers_and_leaks_nothing),
		cmocka_unit_test(test_rpc_restart_at_stale_socket_path_works),
		cmocka_unit_test(test_rpc_garbage_and_truncated_records_do_not_stop_the_server),
		cmocka_unit_test(test_rpc_tcp_names_work_and_bad_names_are_rejected),
		cmocka_unit_test(test_rpc_call_timeout_returns_timeout_and_pool_recovers),
		cmocka_unit_test(test_rpc_remove_program_waits_for_running_handlers),
		cmocka_unit_test(test_rpc_strerror_covers_every_code),
		cmocka_unit_test(test_rpc_library_ignores_sigpipe_but_keeps_a_program_handler),
		cmocka_unit_test(test_rpc_shared_pool_serves_concurrent_threads_correctly),
	};
	return th_run_suite("rpc", tests);
}
