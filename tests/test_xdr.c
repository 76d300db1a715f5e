/*
 * tests/test_xdr.c — bounded XDR: a tiny malicious record (a huge length
 * prefix for a string, opaque or array) must not make a decoder allocate what
 * the prefix claims (make fuzz found 5-12-byte inputs that asked for 4 GiB, and
 * arrays whose free walked every element). One test per RPC program:
 *
 *  - the request programs (kvpaxos, shardkv, shardmaster, pbservice,
 *    viewservice): the record goes to a live server over its unix socket; the
 *    server must answer GARBAGE_ARGS and then serve a well-formed call, on a new
 *    connection and on the same one;
 *  - the programs whose variable-length data is in replies only (paxosrsm's
 *    snapshot, status): a fake peer answers with the malicious reply; the
 *    caller's decode must fail and the next, well-formed reply decode.
 *
 * Each test also decodes the same bytes with xdrmem and checks the decoder
 * failed before allocating: the field's pointer is still NULL (an unbounded
 * array allocates the claimed count, then fails on the missing bytes; for
 * strings and opaques libtirpc frees its allocation on failure, so there the
 * check proves a clean failure only, and the saved allocation shows in make
 * fuzz's runs per second).
 * No timing: the outcome is judged by replies and by the pointers.
 */
#include "lib/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dkv/kvpaxos.h"
#include "dkv/pbservice.h"
#include "dkv/shardkv.h"
#include "dkv/shardmaster.h"
#include "dkv/viewservice.h"
#include "dkv_internal.h"

#include "kv_prot.h"
#include "pb_prot.h"
#include "rsm_prot.h"
#include "skv_prot.h"
#include "sm_prot.h"
#include "status_prot.h"
#include "vs_prot.h"

/* A length larger than every bound (DKV_STATE_MAX included), for strings and opaques. */
#define HUGE_LEN 0x7ffffff0u
/* An array count above every array bound (DKV_STATE_KEYS_MAX included). */
#define HUGE_COUNT 0x00fffff0u

/* Raw XDR words, written as they are (the malicious part of a message). */
typedef struct {
	uint32_t w[32];
	u_int n;
} raw_words;

static void put(raw_words *r, uint32_t v)
{
	assert_true(r->n < 32);
	r->w[r->n++] = v;
}

static bool_t xdr_raw_words(XDR *x, void *p)
{
	raw_words *r = p;
	for (u_int i = 0; i < r->n; i++) {
		uint32_t v = r->w[i];
		if (!xdr_u_int(x, &v))
			return FALSE;
	}
	return TRUE;
}

/* The malicious words decoded locally with `proc` into a zeroed struct of
 * `size` bytes: must fail, and leave the pointer at byte offset `ptr_off` NULL
 * (nothing was allocated for the claimed length). */
static void assert_rejected_before_alloc(const raw_words *r, xdrproc_t proc, size_t size, size_t ptr_off)
{
	char buf[32 * 4];
	XDR e;
	xdrmem_create(&e, buf, sizeof buf, XDR_ENCODE);
	assert_true(xdr_raw_words(&e, (void *)r));
	u_int len = xdr_getpos(&e);
	xdr_destroy(&e);
	void *obj = calloc(1, size);
	assert_non_null(obj);
	XDR d;
	xdrmem_create(&d, buf, len, XDR_DECODE);
	bool_t ok = proc(&d, obj);
	xdr_destroy(&d);
	void *p;
	memcpy(&p, (char *)obj + ptr_off, sizeof p);
	xdr_free(proc, obj);
	free(obj);
	assert_false(ok);
	assert_null(p);
}

/* The malicious words, whose array count is within its bound but whose
 * elements are missing, decoded locally: must fail having allocated at most 16
 * elements, and leave at most 16 for xdr_free to walk (the u_int count at byte
 * offset len_off) — xdr_array would allocate and walk the whole claimed count. */
static void assert_array_grows_with_input(const raw_words *r, xdrproc_t proc, size_t size,
                                          size_t len_off)
{
	char buf[32 * 4];
	XDR e;
	xdrmem_create(&e, buf, sizeof buf, XDR_ENCODE);
	assert_true(xdr_raw_words(&e, (void *)r));
	u_int len = xdr_getpos(&e);
	xdr_destroy(&e);
	void *obj = calloc(1, size);
	assert_non_null(obj);
	XDR d;
	xdrmem_create(&d, buf, len, XDR_DECODE);
	bool_t ok = proc(&d, obj);
	xdr_destroy(&d);
	u_int n;
	memcpy(&n, (char *)obj + len_off, sizeof n);
	xdr_free(proc, obj);
	free(obj);
	assert_false(ok);
	assert_true(n <= 16);
}

static CLIENT *raw_client(const char *path, rpcprog_t prog, rpcvers_t vers, int *fdp)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	struct netbuf nb = { .maxlen = sizeof sa, .len = sizeof sa, .buf = &sa };
	CLIENT *cl = clnt_vc_create(fd, &nb, prog, vers, 0, 0);
	assert_non_null(cl);
	*fdp = fd;
	return cl;
}

/*
 * Send the malicious arguments `bad` as procedure bad_proc of (prog, vers) to
 * the server at `path` and expect GARBAGE_ARGS; then a well-formed call
 * good_proc(good_args) must get a reply, on the same connection and on a
 * fresh one (another client).
 */
typedef struct {
	rpcproc_t proc;
	xdrproc_t xdr_args;
	void *args;
	xdrproc_t xdr_res;
	size_t res_size;
} good_call;

static void attack(const char *path, rpcprog_t prog, rpcvers_t vers, rpcproc_t bad_proc,
                   raw_words *bad, const good_call *good)
{
	struct timeval tv = { 30, 0 };
	int fd;
	CLIENT *cl = raw_client(path, prog, vers, &fd);
	enum clnt_stat st = clnt_call(cl, bad_proc, (xdrproc_t)xdr_raw_words, (char *)bad,
	                              (xdrproc_t)xdr_void, NULL, tv);
	assert_int_equal(st, RPC_CANTDECODEARGS);
	int replies = 0;
	for (int round = 0; round < 2; round++) {
		if (round == 1) {
			clnt_destroy(cl);
			close(fd);
			cl = raw_client(path, prog, vers, &fd);
		}
		void *res = calloc(1, good->res_size);
		assert_non_null(res);
		st = clnt_call(cl, good->proc, good->xdr_args, good->args, good->xdr_res, res, tv);
		if (st == RPC_SUCCESS)
			replies++;
		xdr_free(good->xdr_res, res);
		free(res);
	}
	clnt_destroy(cl);
	close(fd);
	assert_int_equal(replies, 2);
}

/* ------------------------------------------------------------ kvpaxos */

static void test_xdr_kvpaxos_huge_key_or_value_is_garbage_args(void **state)
{
	(void)state;
	th_names *nm = th_names_new("xdr", "kv", 1);
	kvpaxos_server *kv = kvpaxos_server_start(th_peers(nm, 0), 1, 0);
	assert_non_null(kv);
	/* KV_PUTAPPEND: session, seq (hypers), wait_ms, kind, key "k", value of HUGE_LEN bytes */
	raw_words bad = { .n = 0 };
	put(&bad, 0); put(&bad, 1); put(&bad, 0); put(&bad, 1); put(&bad, 100); put(&bad, KV_KIND_PUT);
	put(&bad, 1); put(&bad, 0x6b000000u); put(&bad, HUGE_LEN);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_kv_putappend_args, sizeof(kv_putappend_args),
	                             offsetof(kv_putappend_args, value));
	/* KV_GET: wait_ms, key of HUGE_LEN bytes (a key is bounded by DKV_KEY_MAX) */
	raw_words badkey = { .n = 0 };
	put(&badkey, 100); put(&badkey, DKV_KEY_MAX + 1);
	assert_rejected_before_alloc(&badkey, (xdrproc_t)xdr_kv_get_args, sizeof(kv_get_args),
	                             offsetof(kv_get_args, key));
	kv_get_args g = { .wait_ms = 2000, .key = "k" };
	good_call gc = { KV_GET, (xdrproc_t)xdr_kv_get_args, &g, (xdrproc_t)xdr_kv_get_reply,
	                 sizeof(kv_get_reply) };
	attack(nm->ports[0], KVPAXOS_PROG, KVPAXOS_VERS, KV_PUTAPPEND, &bad, &gc);
	attack(nm->ports[0], KVPAXOS_PROG, KVPAXOS_VERS, KV_GET, &badkey, &gc);
	kvpaxos_server_kill(kv);
	kvpaxos_server_free(kv);
	th_names_free(nm);
}

/* ------------------------------------------------------------ shardmaster */

static void test_xdr_shardmaster_huge_server_list_is_garbage_args(void **state)
{
	(void)state;
	th_names *nm = th_names_new("xdr", "sm", 1);
	shardmaster_server *sm = shardmaster_server_start(th_peers(nm, 0), 1, 0);
	assert_non_null(sm);
	/* SM_JOIN: session, seq, gid (hypers), servers<HUGE_COUNT> */
	raw_words bad = { .n = 0 };
	put(&bad, 0); put(&bad, 1); put(&bad, 0); put(&bad, 1); put(&bad, 0); put(&bad, 7);
	put(&bad, HUGE_COUNT);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_sm_join_args, sizeof(sm_join_args),
	                             offsetof(sm_join_args, servers.servers_val));
	sm_query_args q = { .num = -1 };
	good_call gc = { SM_QUERY, (xdrproc_t)xdr_sm_query_args, &q, (xdrproc_t)xdr_sm_query_reply,
	                 sizeof(sm_query_reply) };
	attack(nm->ports[0], SHARDMASTER_PROG, SHARDMASTER_V1, SM_JOIN, &bad, &gc);
	/* the snapshot's history is bounded too */
	raw_words snap = { .n = 0 };
	put(&snap, 0); put(&snap, 1); put(&snap, HUGE_COUNT);
	assert_rejected_before_alloc(&snap, (xdrproc_t)xdr_sm_snapshot, sizeof(sm_snapshot),
	                             offsetof(sm_snapshot, configs.configs_val));
	raw_words snap_at_max = { .n = 0 };
	put(&snap_at_max, 0); put(&snap_at_max, 1); put(&snap_at_max, SM_WIRE_MAX_CONFIGS);
	assert_array_grows_with_input(&snap_at_max, (xdrproc_t)xdr_sm_snapshot, sizeof(sm_snapshot),
	                              offsetof(sm_snapshot, configs.configs_len));
	shardmaster_server_kill(sm);
	shardmaster_server_free(sm);
	th_names_free(nm);
}

/* ------------------------------------------------------------ shardkv */

static void test_xdr_shardkv_huge_key_or_shard_is_garbage_args(void **state)
{
	(void)state;
	th_names *sm_nm = th_names_new("xdr", "skvsm", 1);
	th_names *nm = th_names_new("xdr", "skv", 1);
	shardkv_server *s = shardkv_server_start(100, th_peers(sm_nm, 0), 1, th_peers(nm, 0), 1, 0);
	assert_non_null(s);
	/* SKV_PUTAPPEND: session, seq, cfgnum, wait_ms, append, key of HUGE_LEN bytes */
	raw_words bad = { .n = 0 };
	put(&bad, 0); put(&bad, 1); put(&bad, 0); put(&bad, 1); put(&bad, 0); put(&bad, 100); put(&bad, 0);
	put(&bad, HUGE_LEN);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_skv_putappend_args, sizeof(skv_putappend_args),
	                             offsetof(skv_putappend_args, key));
	/* a moving shard: kvs<HUGE_COUNT>; an install op's data of HUGE_LEN bytes */
	raw_words shard = { .n = 0 };
	put(&shard, HUGE_COUNT);
	assert_rejected_before_alloc(&shard, (xdrproc_t)xdr_skv_shard_wire, sizeof(skv_shard_wire),
	                             offsetof(skv_shard_wire, kvs.kvs_val));
	raw_words shard_at_max = { .n = 0 };
	put(&shard_at_max, SKV_SHARD_KEYS);
	assert_array_grows_with_input(&shard_at_max, (xdrproc_t)xdr_skv_shard_wire,
	                              sizeof(skv_shard_wire), offsetof(skv_shard_wire, kvs.kvs_len));
	raw_words fetch = { .n = 0 };
	put(&fetch, 0); put(&fetch, HUGE_LEN);
	assert_rejected_before_alloc(&fetch, (xdrproc_t)xdr_skv_fetch_reply, sizeof(skv_fetch_reply),
	                             offsetof(skv_fetch_reply, data.data_val));
	skv_get_args g = { .cfgnum = 0, .wait_ms = 100, .key = "k" };
	good_call gc = { SKV_GET, (xdrproc_t)xdr_skv_get_args, &g, (xdrproc_t)xdr_skv_get_reply,
	                 sizeof(skv_get_reply) };
	attack(nm->ports[0], SKV_PROG, SKV_VERS, SKV_PUTAPPEND, &bad, &gc);
	shardkv_server_kill(s);
	shardkv_server_free(s);
	th_names_free(nm);
	th_names_free(sm_nm);
}

/* ------------------------------------------------------------ viewservice, pbservice */

static void test_xdr_viewservice_huge_name_is_garbage_args(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX];
	th_port(vsh, "xdr", "vs", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	raw_words bad = { .n = 0 };
	put(&bad, HUGE_LEN);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_vs_ping_args, sizeof(vs_ping_args),
	                             offsetof(vs_ping_args, me));
	vs_get_args g = { 0 };
	good_call gc = { VS_GET, (xdrproc_t)xdr_vs_get_args, &g, (xdrproc_t)xdr_vs_view_reply,
	                 sizeof(vs_view_reply) };
	attack(vsh, VS_PROG, VS_VERS, VS_PING, &bad, &gc);
	viewservice_server_kill(vs);
	viewservice_server_free(vs);
}

static void test_xdr_pbservice_huge_transfer_is_garbage_args(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], me[DKV_NAME_MAX];
	th_port(vsh, "xdr", "pbvs", 0);
	th_port(me, "xdr", "pb", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	pbservice_server *pb = pbservice_server_start(vsh, me);
	assert_non_null(pb);
	/* PB_TRANSFER: view {viewnum, "", ""}, kvs<HUGE_COUNT> */
	raw_words bad = { .n = 0 };
	put(&bad, 1); put(&bad, 0); put(&bad, 0); put(&bad, HUGE_COUNT);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_pb_transfer_args, sizeof(pb_transfer_args),
	                             offsetof(pb_transfer_args, kvs.kvs_val));
	/* ... or a session table of HUGE_LEN bytes */
	raw_words bad2 = { .n = 0 };
	put(&bad2, 1); put(&bad2, 0); put(&bad2, 0); put(&bad2, 0); put(&bad2, HUGE_LEN);
	assert_rejected_before_alloc(&bad2, (xdrproc_t)xdr_pb_transfer_args, sizeof(pb_transfer_args),
	                             offsetof(pb_transfer_args, sessions.sessions_val));
	/* a count at the bound, no elements: allocation follows the input */
	raw_words atmax = { .n = 0 };
	put(&atmax, 1); put(&atmax, 0); put(&atmax, 0); put(&atmax, PB_TRANSFER_KEYS);
	put(&atmax, 1); put(&atmax, 0x6b000000u); put(&atmax, 1); put(&atmax, 0x76000000u);
	assert_array_grows_with_input(&atmax, (xdrproc_t)xdr_pb_transfer_args, sizeof(pb_transfer_args),
	                              offsetof(pb_transfer_args, kvs.kvs_len));
	pb_get_args g = { .key = "k", .client = 0, .seq = 0 };
	good_call gc = { PB_GET, (xdrproc_t)xdr_pb_get_args, &g, (xdrproc_t)xdr_pb_get_reply,
	                 sizeof(pb_get_reply) };
	attack(me, PB_PROG, PB_VERS, PB_TRANSFER, &bad, &gc);
	attack(me, PB_PROG, PB_VERS, PB_TRANSFER, &bad2, &gc);
	attack(me, PB_PROG, PB_VERS, PB_TRANSFER, &atmax, &gc);
	pbservice_server_kill(pb);
	pbservice_server_free(pb);
	viewservice_server_kill(vs);
	viewservice_server_free(vs);
}

/* ------------------------------------------------------------ reply-only programs */

/* A fake peer that answers every call with the raw words it holds now. */
typedef struct {
	raw_words reply;
} fake_peer;

static void h_fake(void *inst, void *args, void *res)
{
	(void)args;
	*(raw_words *)res = ((fake_peer *)inst)->reply;
}

static bool_t xdr_ignore_args(XDR *x, void *p)
{
	(void)x;
	(void)p;
	return TRUE;
}

/* The caller of `proc` decoding a malicious, then a good reply from a live fake peer. */
static void reply_attack(const char *tag, rpcprog_t prog, rpcvers_t vers, rpcproc_t proc,
                         xdrproc_t xdr_args, void *args, xdrproc_t xdr_res, size_t res_size,
                         size_t ptr_off, const raw_words *bad, const raw_words *good)
{
	char name[DKV_NAME_MAX];
	th_port(name, "xdr", tag, 0);
	dkv_rpc_server *s = dkv_rpc_server_listen(name);
	assert_non_null(s);
	fake_peer fp = { .reply = *bad };
	const dkv_rpc_proc procs[] = {
		{ proc, (xdrproc_t)xdr_ignore_args, 8, (xdrproc_t)xdr_raw_words, sizeof(raw_words), h_fake },
	};
	assert_int_equal(dkv_rpc_server_add(s, prog, vers, procs, 1, &fp), DKV_OK);
	dkv_rpc_pool *p = dkv_rpc_pool_new();
	void *res = calloc(1, res_size);
	assert_non_null(res);
	assert_int_not_equal(dkv_rpc_call(p, name, prog, vers, proc, xdr_args, args, xdr_res, res, 10000),
	                     DKV_OK);
	void *ptr;
	memcpy(&ptr, (char *)res + ptr_off, sizeof ptr);
	assert_null(ptr);
	fp.reply = *good;
	memset(res, 0, res_size);
	assert_int_equal(dkv_rpc_call(p, name, prog, vers, proc, xdr_args, args, xdr_res, res, 10000),
	                 DKV_OK);
	xdr_free(xdr_res, res);
	free(res);
	dkv_rpc_pool_free(p);
	dkv_rpc_server_kill(s);
	dkv_rpc_server_free(s);
}

static void test_xdr_rsm_huge_snapshot_reply_is_rejected(void **state)
{
	(void)state;
	/* rsm_snap_reply: status, pos, min, state<HUGE_LEN> */
	raw_words bad = { .n = 0 };
	put(&bad, RSM_SNAP_OK); put(&bad, 5); put(&bad, 0); put(&bad, HUGE_LEN);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_rsm_snap_reply, sizeof(rsm_snap_reply),
	                             offsetof(rsm_snap_reply, state.state_val));
	raw_words good = { .n = 0 };
	put(&good, RSM_SNAP_BEHIND); put(&good, 0); put(&good, 0); put(&good, 0); put(&good, 0);
	rsm_snap_args a = { .want = 5, .only_forgotten = FALSE };
	reply_attack("rsm", RSM_PROG, RSM_VERS, RSM_SNAPSHOT, (xdrproc_t)xdr_rsm_snap_args, &a,
	             (xdrproc_t)xdr_rsm_snap_reply, sizeof(rsm_snap_reply),
	             offsetof(rsm_snap_reply, state.state_val), &bad, &good);
}

static void test_xdr_status_huge_string_reply_is_rejected(void **state)
{
	(void)state;
	raw_words bad = { .n = 0 };
	put(&bad, HUGE_LEN);
	assert_rejected_before_alloc(&bad, (xdrproc_t)xdr_dkv_status_x, sizeof(dkv_status_x),
	                             offsetof(dkv_status_x, service));
	raw_words g2 = { .n = 0 };
	put(&g2, 0); put(&g2, 0); put(&g2, 0);
	put(&g2, 0); put(&g2, 0);   /* gid */
	put(&g2, 0);                /* me */
	put(&g2, 0);                /* npeers */
	for (int i = 0; i < 11; i++) { put(&g2, 0); put(&g2, 0); } /* incarnation ... pid */
	reply_attack("st", DKV_STATUS_PROG, DKV_STATUS_VERS, DKV_STATUS_GET, (xdrproc_t)xdr_void, NULL,
	             (xdrproc_t)xdr_dkv_status_x, sizeof(dkv_status_x), offsetof(dkv_status_x, service),
	             &bad, &g2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xdr_kvpaxos_huge_key_or_value_is_garbage_args),
		cmocka_unit_test(test_xdr_shardmaster_huge_server_list_is_garbage_args),
		cmocka_unit_test(test_xdr_shardkv_huge_key_or_shard_is_garbage_args),
		cmocka_unit_test(test_xdr_viewservice_huge_name_is_garbage_args),
		cmocka_unit_test(test_xdr_pbservice_huge_transfer_is_garbage_args),
		cmocka_unit_test(test_xdr_rsm_huge_snapshot_reply_is_rejected),
		cmocka_unit_test(test_xdr_status_huge_string_reply_is_rejected),
	};
	return th_run_suite("xdr", tests);
}
