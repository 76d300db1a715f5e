/*
 * tests/test_call.c — the call-any-replica helper (src/call.h): which server
 * it asks, which replies are final, the remembered server, rounds and their
 * hook, the deadline, a shut-down pool, the count of RPCs sent.
 *
 * A tiny hand-written program (int in, {int err; int id} out) runs on a few
 * listeners; each answers with an error code the test sets, and its id.
 * Bounds are on RPCs and rounds, never on time.
 */
#include "lib/harness.h"

#include <stdatomic.h>
#include <string.h>

#include "call.h"
#include "dkv_internal.h"

#define C_PROG 0x20000F10u
#define C_VERS 1u
#define C_ASK 1u

typedef struct {
	int err;
	int id;
} c_reply;

static bool_t xdr_c_reply(XDR *x, c_reply *r)
{
	return xdr_int(x, &r->err) && xdr_int(x, &r->id);
}

typedef struct {
	int id;
	atomic_int answer; /* err to answer with */
	atomic_int served;
} cinst;

static void h_ask(void *inst, void *args, void *res)
{
	cinst *c = inst;
	(void)args;
	atomic_fetch_add(&c->served, 1);
	c_reply *r = res;
	r->err = atomic_load(&c->answer);
	r->id = c->id;
}

static const dkv_rpc_proc cprocs[] = {
	{ C_ASK, (xdrproc_t)xdr_int, sizeof(int), (xdrproc_t)xdr_c_reply, sizeof(c_reply), h_ask },
};

#define NS 3
typedef struct {
	dkv_rpc_server *srv[NS];
	cinst inst[NS];
	char names[NS][DKV_NAME_MAX];
	const char *ptrs[NS];
	dkv_rpc_pool *pool;
} cluster;

static void start(cluster *cl, const char *tag)
{
	memset(cl, 0, sizeof *cl);
	for (int i = 0; i < NS; i++) {
		th_port(cl->names[i], "call", tag, i);
		cl->ptrs[i] = cl->names[i];
		cl->inst[i].id = i;
		atomic_store(&cl->inst[i].answer, DKV_OK);
		cl->srv[i] = dkv_rpc_server_listen(cl->names[i]);
		assert_non_null(cl->srv[i]);
		assert_int_equal(dkv_rpc_server_add(cl->srv[i], C_PROG, C_VERS, cprocs, 1, &cl->inst[i]),
		                 DKV_OK);
	}
	cl->pool = dkv_rpc_pool_new();
	assert_non_null(cl->pool);
}

static void stop(cluster *cl)
{
	dkv_rpc_pool_free(cl->pool);
	for (int i = 0; i < NS; i++)
		dkv_rpc_server_free(cl->srv[i]);
}

static int arg0;

static dkv_call_spec spec_of(void *ctx)
{
	dkv_call_spec s = {
		.prog = C_PROG, .vers = C_VERS, .proc = C_ASK, .xdr_args = (xdrproc_t)xdr_int,
		.args = &arg0, .xdr_res = (xdrproc_t)xdr_c_reply, .res_size = sizeof(c_reply),
		.rpc_ms = 2000, .backoff_min_ms = 1, .backoff_max_ms = 4, .ctx = ctx,
	};
	return s;
}

static int served(cluster *cl, int i)
{
	return atomic_load(&cl->inst[i].served);
}

/* Retry-class answers move to the next server; the final one is remembered and
 * asked first next time. */
static void test_call_rotates_past_retry_answers_and_remembers_the_answerer(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "rot");
	atomic_store(&cl.inst[0].answer, DKV_ERR_TIMEOUT);
	atomic_store(&cl.inst[1].answer, DKV_ERR_WRONG_SERVER);
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, cl.ptrs, NS);
	dkv_call_spec sp = spec_of(NULL);
	c_reply r;
	unsigned sent = 0;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_OK);
	assert_int_equal(r.id, 2);
	assert_int_equal(sent, 3);
	assert_int_equal(srv.last, 2);
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_OK);
	assert_int_equal(sent, 1);
	assert_int_equal(served(&cl, 2), 2);
	assert_int_equal(served(&cl, 0), 1);
	stop(&cl);
}

/* NOKEY, INVAL and EXPIRED are final, like OK; res holds the reply. */
static void test_call_final_errors_end_the_call(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "fin");
	const int finals[] = { DKV_ERR_NOKEY, DKV_ERR_INVAL, DKV_ERR_EXPIRED };
	for (size_t k = 0; k < sizeof finals / sizeof finals[0]; k++) {
		for (int i = 0; i < NS; i++)
			atomic_store(&cl.inst[i].answer, finals[k]);
		dkv_call_servers srv;
		dkv_call_servers_init(&srv, cl.ptrs, NS);
		dkv_call_spec sp = spec_of(NULL);
		c_reply r;
		unsigned sent = 0;
		assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), finals[k]);
		assert_int_equal(r.err, finals[k]);
		assert_int_equal(sent, 1);
	}
	assert_int_equal(dkv_call_default_verdict(DKV_ERR_WRONG_GROUP), DKV_CALL_NEXT);
	assert_int_equal(dkv_call_default_verdict(DKV_ERR_KILLED), DKV_CALL_NEXT);
	assert_int_equal(dkv_call_default_verdict(1000), DKV_CALL_NEXT);
	stop(&cl);
}

/* A dead server (nothing listens at its name) is skipped like a retry answer. */
static void test_call_skips_an_unreachable_server(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "dead");
	dkv_rpc_server_free(cl.srv[0]);
	cl.srv[0] = NULL;
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, cl.ptrs, NS);
	dkv_call_spec sp = spec_of(NULL);
	c_reply r;
	unsigned sent = 0;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_OK);
	assert_int_equal(r.id, 1);
	assert_int_equal(sent, 2);
	stop(&cl);
}

typedef struct {
	cluster *cl;
	int rounds;
	int switch_after; /* rounds before the hook makes server 2 answer OK */
	int stop_after;   /* rounds before the hook ends the call (0: never) */
	int prepared;
	unsigned last_rpc_ms;
} hooks;

static int h_round(void *ctx, dkv_call_servers *srv)
{
	hooks *h = ctx;
	(void)srv;
	h->rounds++;
	if (h->stop_after && h->rounds >= h->stop_after)
		return DKV_ERR_NET;
	if (h->rounds == h->switch_after)
		atomic_store(&h->cl->inst[2].answer, DKV_OK);
	return DKV_OK;
}

static void h_prepare(void *ctx, unsigned rpc_ms)
{
	hooks *h = ctx;
	h->prepared++;
	h->last_rpc_ms = rpc_ms;
}

static dkv_call_verdict h_classify(void *ctx, int *err, void *res)
{
	(void)ctx;
	(void)res;
	if (*err == 1000) { /* a service's own code, rewritten and final */
		*err = DKV_ERR_NOKEY;
		return DKV_CALL_FINAL;
	}
	return dkv_call_default_verdict(*err);
}

/* Rounds: the hook runs once per failed round, may end the call, and every
 * attempt is prepared with its RPC timeout. */
static void test_call_rounds_hooks_and_classify(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "hooks");
	for (int i = 0; i < NS; i++)
		atomic_store(&cl.inst[i].answer, DKV_ERR_TIMEOUT);
	hooks h = { .cl = &cl, .switch_after = 3 };
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, cl.ptrs, NS);
	dkv_call_spec sp = spec_of(&h);
	sp.next_round = h_round;
	sp.prepare = h_prepare;
	c_reply r;
	unsigned sent = 0;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_OK);
	assert_int_equal(h.rounds, 3);
	assert_int_equal(sent, 3 * NS + 3); /* three failed rounds, then 0, 1 fail and 2 answers */
	assert_int_equal((int)sent, h.prepared);
	assert_int_equal(h.last_rpc_ms, 2000);
	assert_int_equal(r.id, 2);

	/* The hook ends the call with its error. */
	atomic_store(&cl.inst[2].answer, DKV_ERR_TIMEOUT);
	hooks h2 = { .cl = &cl, .stop_after = 2 };
	sp.ctx = &h2;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_ERR_NET);
	assert_int_equal(sent, 2 * NS);
	assert_int_equal(r.err, 0); /* zeroed */

	/* classify rewrites a service code into a final answer. */
	atomic_store(&cl.inst[srv.last].answer, 1000);
	sp.classify = h_classify;
	sp.next_round = NULL;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, &sent), DKV_ERR_NOKEY);
	assert_int_equal(sent, 1);
	stop(&cl);
}

/* With a deadline and no server that answers, the call ends with TIMEOUT after
 * a bounded number of rounds (backoff grows to its cap, never past the deadline). */
static void test_call_deadline_ends_a_hopeless_call(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "dl");
	for (int i = 0; i < NS; i++)
		atomic_store(&cl.inst[i].answer, DKV_ERR_WRONG_GROUP);
	hooks h = { .cl = &cl, .switch_after = -1 };
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, cl.ptrs, NS);
	dkv_call_spec sp = spec_of(&h);
	sp.next_round = h_round;
	sp.backoff_min_ms = 10;
	sp.backoff_max_ms = 40;
	c_reply r;
	unsigned sent = 0;
	assert_int_equal(dkv_call_any(cl.pool, &srv, dkv_call_deadline(300), &sp, &r, &sent),
	                 DKV_ERR_TIMEOUT);
	assert_true(h.rounds >= 1);
	/* At least 5 ms of sleep per round: at most 300/5 rounds. */
	assert_true(h.rounds <= 60);
	assert_true(sent >= NS && sent <= (unsigned)(NS * (h.rounds + 1)));
	stop(&cl);
}

/* A pool that is shut down ends the call at once with KILLED. */
static void test_call_shut_down_pool_is_killed(void **state)
{
	(void)state;
	cluster cl;
	start(&cl, "kill");
	dkv_rpc_pool_shutdown(cl.pool);
	dkv_call_servers srv;
	dkv_call_servers_init(&srv, cl.ptrs, NS);
	dkv_call_spec sp = spec_of(NULL);
	c_reply r;
	assert_int_equal(dkv_call_any(cl.pool, &srv, 0, &sp, &r, NULL), DKV_ERR_KILLED);
	assert_int_equal(served(&cl, 0), 0);
	stop(&cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_call_rotates_past_retry_answers_and_remembers_the_answerer),
		cmocka_unit_test(test_call_final_errors_end_the_call),
		cmocka_unit_test(test_call_skips_an_unreachable_server),
		cmocka_unit_test(test_call_rounds_hooks_and_classify),
		cmocka_unit_test(test_call_deadline_ends_a_hopeless_call),
		cmocka_unit_test(test_call_shut_down_pool_is_killed),
	};
	return th_run_suite("call", tests);
}
