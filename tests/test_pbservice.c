/*
 * tests/test_pbservice.c — the primary/backup suite.
 *
 * First the lab's test cases (6.824 2015 lab 2B, notes/labtests.md §2.3), each
 * with the lab's setup (view service started, 1 s pause), faults, timings and
 * assertions. Differences, all forced by the port: clerk threads report failures
 * back to the main thread (cmocka cannot fail from another thread); threads are
 * joined; the teardown pauses of the Go tests (there for goroutines to notice
 * `dead`) are dropped because our kill is synchronous; and in the partition tests
 * the delayed Get runs in a fresh clerk, because Go dialed per call while our
 * clerk caches connections and the delay proxy delays new connections only.
 * Then our own: a 10,000-key state transfer, duplicate detection across a
 * failover, the clerk deadline, size limits, and kill/free hygiene.
 */
#include "lib/harness.h"
#include "lib/history.h"
#include "lib/linearizability.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dkv/pbservice.h"
#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "pb_prot.h"
#include "../pbservice/pb_internal.h"
#include "../pbservice/pb_store.h"
#include "../viewservice/vs_core.h"
#include "../viewservice/vs_server_internal.h"
#include "lib/view_watch.h"

#define PI VIEWSERVICE_PING_INTERVAL_MS
#define DP VIEWSERVICE_DEAD_PINGS
#define DEADTIME (PI * DP)


/* ------------------------------------------------------------ helpers */

/* check: Get(key) through ck returns exactly `want` — the lab's check(). */
#define check(ck, key, want) check_at(__FILE__, __LINE__, (ck), (key), (want))
static void check_at(const char *file, int line, pbservice_clerk *ck, const char *key,
                     const char *want)
{
	char *v = NULL;
	int rc = pbservice_clerk_get(ck, key, &v);
	if (rc != DKV_OK || v == NULL || strcmp(v, want) != 0) {
		print_error("Get(%.60s): rc %d, got \"%.60s\", wanted \"%.60s\"\n", key, rc,
		            v ? v : "(null)", want);
		free(v);
		_fail(file, line);
	}
	free(v);
}

/* A test's view service: started, then the lab's 1 s pause, and a clerk. */
typedef struct {
	char vsh[DKV_NAME_MAX];
	viewservice_server *vs;
	viewservice_clerk *vck;
	char tag[32];
	view_watch *watch; /* checks every view step while the test runs */
} pb_env;

static void env_start(pb_env *e, const char *tag)
{
	char vtag[40];
	snprintf(e->tag, sizeof e->tag, "%s", tag);
	snprintf(vtag, sizeof vtag, "%sv", tag);
	th_port(e->vsh, "pb", vtag, 1);
	e->vs = viewservice_server_start(e->vsh);
	assert_non_null(e->vs);
	e->watch = watch_start(e->vs);
	th_sleep_ms(1000);
	e->vck = viewservice_clerk_new("", e->vsh);
	assert_non_null(e->vck);
}

static void env_stop(pb_env *e)
{
	watch_stop(e->watch);
	viewservice_clerk_free(e->vck);
	viewservice_server_free(e->vs);
}

/* port i of this test's tag */
static char *pb_port(pb_env *e, char *buf, int i)
{
	return th_port(buf, "pb", e->tag, i);
}

static pbservice_server *start_server(pb_env *e, int i)
{
	char p[DKV_NAME_MAX];
	pbservice_server *s = pbservice_server_start(e->vsh, pb_port(e, p, i));
	assert_non_null(s);
	return s;
}

static viewservice_view vget(pb_env *e)
{
	viewservice_view v;
	(void)viewservice_clerk_get(e->vck, &v);
	return v;
}

static void vprimary(pb_env *e, char *buf)
{
	(void)viewservice_clerk_primary(e->vck, buf, DKV_NAME_MAX);
}

/* Poll up to n intervals for a view with both a primary and a backup. */
static void poll_pb(pb_env *e, int n)
{
	for (int i = 0; i < n; i++) {
		viewservice_view v = vget(e);
		if (v.primary[0] != '\0' && v.backup[0] != '\0')
			break;
		th_sleep_ms(PI);
	}
}

static pbservice_clerk *new_clerk(pb_env *e)
{
	pbservice_clerk *ck = pbservice_clerk_new(e->vsh, "");
	assert_non_null(ck);
	return ck;
}

/* Failures seen by worker threads, reported by the main thread. */
typedef struct {
	atomic_bool failed;
	char msg[256];
	pthread_mutex_t mu;
} thread_fail;

static void tf_init(thread_fail *f)
{
	atomic_init(&f->failed, false);
	f->msg[0] = '\0';
	pthread_mutex_init(&f->mu, NULL);
}

static void tf_set(thread_fail *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tf_set(thread_fail *f, const char *fmt, ...)
{
	pthread_mutex_lock(&f->mu);
	if (!atomic_load(&f->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->msg, sizeof f->msg, fmt, ap);
		va_end(ap);
		atomic_store(&f->failed, true);
	}
	pthread_mutex_unlock(&f->mu);
}

static void tf_assert_ok(thread_fail *f)
{
	if (atomic_load(&f->failed))
		fail_msg("worker thread: %s", f->msg);
	pthread_mutex_destroy(&f->mu);
}

/* Sleep ms, waking early once *done is set. */
static void sleep_unless(atomic_bool *done, unsigned ms)
{
	uint64_t end = th_now_ms() + ms;
	while (!atomic_load(done) && th_now_ms() < end)
		th_sleep_ms(20);
}

/* A background Get: the result, and whether it has returned. */
typedef struct {
	pbservice_clerk *ck;
	char key[32];
	atomic_bool returned;
	int rc;
	char *value;
	pthread_t th;
} bg_get;

static void *bg_get_main(void *arg)
{
	bg_get *b = arg;
	b->rc = pbservice_clerk_get(b->ck, b->key, &b->value);
	atomic_store(&b->returned, true);
	return NULL;
}

static void bg_get_start(bg_get *b, pbservice_clerk *ck, const char *key)
{
	b->ck = ck;
	snprintf(b->key, sizeof b->key, "%s", key);
	atomic_init(&b->returned, false);
	b->rc = -1;
	b->value = NULL;
	assert_int_equal(pthread_create(&b->th, NULL, bg_get_main, b), 0);
}

/* Wait up to ms for the background Get; true if it returned. */
static bool bg_get_wait(bg_get *b, unsigned ms)
{
	uint64_t end = th_now_ms() + ms;
	while (!atomic_load(&b->returned) && th_now_ms() < end)
		th_sleep_ms(10);
	return atomic_load(&b->returned);
}

/* The thread count once it has settled: threads joined just before may still be
 * counted in /proc for a moment after pthread_join returns. */
static int settled_thread_count(void)
{
	int last = th_thread_count(), same = 0;
	for (int i = 0; i < 100 && same < 3; i++) {
		th_sleep_ms(10);
		int now = th_thread_count();
		same = now == last ? same + 1 : 0;
		last = now;
	}
	return last;
}

/* ------------------------------------------------------------ TestBasicFail */

/* Lab TestBasicFail: single primary, adding a backup, the view-service RPC budget,
 * primary failure, and a fresh server that must not serve after the last one dies. */
static void test_pbservice_basic_fail_follows_the_lab(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "basic");
	pbservice_clerk *ck = new_clerk(&e);
	char p[DKV_NAME_MAX], n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);

	/* Test: Single primary, no backup ... */
	pbservice_server *s1 = start_server(&e, 1);
	th_sleep_ms(DEADTIME * 2);
	vprimary(&e, p);
	assert_string_equal(p, n1);
	pbservice_clerk_put(ck, "111", "v1");
	check(ck, "111", "v1");
	pbservice_clerk_put(ck, "2", "v2");
	check(ck, "2", "v2");
	pbservice_clerk_put(ck, "1", "v1a");
	check(ck, "1", "v1a");
	pbservice_clerk_append(ck, "ak", "hello");
	check(ck, "ak", "hello");
	pbservice_clerk_put(ck, "ak", "xx");
	pbservice_clerk_append(ck, "ak", "yy");
	check(ck, "ak", "xxyy");

	/* Test: Add a backup ... */
	pbservice_server *s2 = start_server(&e, 2);
	for (int i = 0; i < DP * 2; i++) {
		viewservice_view v = vget(&e);
		if (strcmp(v.backup, n2) == 0)
			break;
		th_sleep_ms(PI);
	}
	viewservice_view v = vget(&e);
	assert_string_equal(v.backup, n2);
	pbservice_clerk_put(ck, "3", "33");
	check(ck, "3", "33");
	/* give the backup time to initialize */
	th_sleep_ms(3 * PI);
	pbservice_clerk_put(ck, "4", "44");
	check(ck, "4", "44");

	/* Test: Count RPCs to viewserver ... */
	uint64_t t0 = th_now_ms();
	unsigned long c1 = viewservice_server_rpc_count(e.vs);
	for (int i = 0; i < 100; i++) {
		char k[16], val[16];
		snprintf(k, sizeof k, "xk%d", i);
		snprintf(val, sizeof val, "%d", i);
		assert_int_equal(pbservice_clerk_put(ck, k, val), DKV_OK);
	}
	unsigned long c2 = viewservice_server_rpc_count(e.vs);
	uint64_t t1 = th_now_ms();
	unsigned long allowed = 2 * ((t1 - t0) / PI); /* two servers tick()ing 10/second */
	if (c2 - c1 > allowed + 20)
		fail_msg("too many viewservice RPCs: %lu > %lu + 20", c2 - c1, allowed);

	/* Test: Primary failure ... */
	pbservice_server_kill(s1);
	for (int i = 0; i < DP * 2; i++) {
		v = vget(&e);
		if (strcmp(v.primary, n2) == 0)
			break;
		th_sleep_ms(PI);
	}
	v = vget(&e);
	assert_string_equal(v.primary, n2);
	check(ck, "1", "v1a");
	check(ck, "3", "33");
	check(ck, "4", "44");

	/* Test: Kill last server, new one should not be active ... */
	pbservice_server_kill(s2);
	pbservice_server *s3 = start_server(&e, 3);
	th_sleep_ms(1000);
	bg_get b;
	pbservice_clerk_set_timeout(ck, 3000); /* lets the thread end after the check */
	bg_get_start(&b, ck, "1");
	bool returned = bg_get_wait(&b, 2000);
	pthread_join(b.th, NULL);
	if (returned)
		fail_msg("ck.Get() returned even though no initialized primary");
	assert_int_equal(b.rc, DKV_ERR_TIMEOUT);
	assert_null(b.value);

	pbservice_server_free(s1);
	pbservice_server_free(s2);
	pbservice_server_free(s3);
	pbservice_clerk_free(ck);
	env_stop(&e);
}

/* ------------------------------------------------------------ TestAtMostOnce */

/* Lab TestAtMostOnce: 100 Appends through an unreliable lone primary apply exactly once each. */
static void test_pbservice_applies_appends_at_most_once_on_an_unreliable_server(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "tamo");
	pbservice_server *s = start_server(&e, 1);
	pbservice_server_set_unreliable(s, true);
	poll_pb(&e, DP * 2);
	/* give p+b time to ack, initialize */
	th_sleep_ms(PI * DP);

	pbservice_clerk *ck = new_clerk(&e);
	char val[512] = "";
	for (int i = 0; i < 100; i++) {
		char d[8];
		snprintf(d, sizeof d, "%d", i);
		assert_int_equal(pbservice_clerk_append(ck, "counter", d), DKV_OK);
		strcat(val, d);
	}
	check(ck, "counter", val);
	pbservice_clerk_free(ck);
	pbservice_server_free(s);
	env_stop(&e);
}

/* ------------------------------------------------------------ TestFailPut */

/* Lab TestFailPut: Puts right after a backup failure and right after a primary failure. */
static void test_pbservice_puts_right_after_backup_or_primary_failure_succeed(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "failput");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX], n3[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pb_port(&e, n3, 3);
	pbservice_server *s1 = start_server(&e, 1);
	th_sleep_ms(1000);
	pbservice_server *s2 = start_server(&e, 2);
	th_sleep_ms(1000);
	pbservice_server *s3 = start_server(&e, 3);

	poll_pb(&e, DP * 3);
	th_sleep_ms(1000); /* wait for backup initialization */
	viewservice_view v1 = vget(&e);
	assert_string_equal(v1.primary, n1);
	assert_string_equal(v1.backup, n2);

	pbservice_clerk *ck = new_clerk(&e);
	pbservice_clerk_put(ck, "a", "aa");
	pbservice_clerk_put(ck, "b", "bb");
	pbservice_clerk_put(ck, "c", "cc");
	check(ck, "a", "aa");
	check(ck, "b", "bb");
	check(ck, "c", "cc");

	/* Test: Put() immediately after backup failure ... */
	pbservice_server_kill(s2);
	pbservice_clerk_put(ck, "a", "aaa");
	check(ck, "a", "aaa");
	for (int i = 0; i < DP * 3; i++) {
		viewservice_view v = vget(&e);
		if (v.viewnum > v1.viewnum && v.primary[0] != '\0' && v.backup[0] != '\0')
			break;
		th_sleep_ms(PI);
	}
	th_sleep_ms(1000); /* wait for backup initialization */
	viewservice_view v2 = vget(&e);
	assert_string_equal(v2.primary, n1);
	assert_string_equal(v2.backup, n3);
	check(ck, "a", "aaa");

	/* Test: Put() immediately after primary failure ... */
	pbservice_server_kill(s1);
	pbservice_clerk_put(ck, "b", "bbb");
	check(ck, "b", "bbb");
	for (int i = 0; i < DP * 3; i++) {
		viewservice_view v = vget(&e);
		if (v.viewnum > v2.viewnum && v.primary[0] != '\0')
			break;
		th_sleep_ms(PI);
	}
	th_sleep_ms(1000);
	check(ck, "a", "aaa");
	check(ck, "b", "bbb");
	check(ck, "c", "cc");

	pbservice_server_free(s1);
	pbservice_server_free(s2);
	pbservice_server_free(s3);
	th_sleep_ms(PI * 2);
	pbservice_clerk_free(ck);
	env_stop(&e);
}

/* ------------------------------------------------------------ concurrent clients */

typedef struct {
	pb_env *e;
	int i;
	atomic_bool *done;
	thread_fail *tf;
	int nappends; /* ConcurrentSameAppend */
	bool ok;
} client_arg;

/* Put random values to keys "0" and "1" until done. */
static void *put_random_main(void *arg)
{
	client_arg *a = arg;
	pbservice_clerk *ck = pbservice_clerk_new(a->e->vsh, "");
	if (ck == NULL) {
		tf_set(a->tf, "clerk_new failed");
		return NULL;
	}
	while (!atomic_load(a->done)) {
		char k[8], v[32];
		snprintf(k, sizeof k, "%d", (int)(th_rand() % 2));
		snprintf(v, sizeof v, "%llu", (unsigned long long)(th_rand() >> 1));
		int rc = pbservice_clerk_put(ck, k, v);
		if (rc != DKV_OK) {
			tf_set(a->tf, "client %d: Put: %s", a->i, dkv_strerror(rc));
			break;
		}
	}
	a->ok = true;
	pbservice_clerk_free(ck);
	return NULL;
}

/* Kill the primary of view1 and wait until its backup is primary. */
static void fail_over(pb_env *e, pbservice_server **sa, int n, const viewservice_view *view1)
{
	for (int i = 0; i < n; i++) {
		char p[DKV_NAME_MAX];
		if (strcmp(view1->primary, pb_port(e, p, i + 1)) == 0) {
			pbservice_server_kill(sa[i]);
			break;
		}
	}
	for (int i = 0; i < DP * 2; i++) {
		viewservice_view v = vget(e);
		if (strcmp(v.primary, view1->backup) == 0)
			break;
		th_sleep_ms(PI);
	}
	viewservice_view v2 = vget(e);
	assert_string_equal(v2.primary, view1->backup);
}

/* The body of ConcurrentSame and ConcurrentSameUnreliable. */
static void concurrent_same(const char *tag, bool unreliable)
{
	pb_env e;
	env_start(&e, tag);
	enum { nservers = 2, nclients = 3, nkeys = 2 };
	pbservice_server *sa[nservers];
	for (int i = 0; i < nservers; i++) {
		sa[i] = start_server(&e, i + 1);
		if (unreliable)
			pbservice_server_set_unreliable(sa[i], true);
	}
	poll_pb(&e, DP * 2);
	/* give p+b time to ack, initialize */
	th_sleep_ms(PI * DP);
	if (unreliable) {
		pbservice_clerk *ck = new_clerk(&e);
		assert_int_equal(pbservice_clerk_put(ck, "0", "x"), DKV_OK);
		assert_int_equal(pbservice_clerk_put(ck, "1", "x"), DKV_OK);
		pbservice_clerk_free(ck);
	}

	atomic_bool done;
	atomic_init(&done, false);
	thread_fail tf;
	tf_init(&tf);
	viewservice_view view1 = vget(&e);
	pthread_t th[nclients];
	client_arg args[nclients];
	for (int i = 0; i < nclients; i++) {
		args[i] = (client_arg){.e = &e, .i = i, .done = &done, .tf = &tf};
		assert_int_equal(pthread_create(&th[i], NULL, put_random_main, &args[i]), 0);
	}
	th_sleep_ms(5000);
	atomic_store(&done, true);
	if (!unreliable)
		th_sleep_ms(1000);
	for (int i = 0; i < nclients; i++) {
		pthread_join(th[i], NULL);
		if (!args[i].ok)
			tf_set(&tf, "child %d failed", i);
	}
	tf_assert_ok(&tf);

	/* read from primary */
	pbservice_clerk *ck = new_clerk(&e);
	char *vals[nkeys];
	for (int i = 0; i < nkeys; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		assert_int_equal(pbservice_clerk_get(ck, k, &vals[i]), DKV_OK);
		if (vals[i][0] == '\0')
			fail_msg("Get(%d) failed from primary", i);
	}
	/* kill the primary; read from the old backup */
	fail_over(&e, sa, nservers, &view1);
	for (int i = 0; i < nkeys; i++) {
		char k[8];
		snprintf(k, sizeof k, "%d", i);
		check(ck, k, vals[i]);
		free(vals[i]);
	}
	pbservice_clerk_free(ck);
	for (int i = 0; i < nservers; i++)
		pbservice_server_free(sa[i]);
	env_stop(&e);
}

/* Lab TestConcurrentSame: after concurrent Puts to two keys, the backup holds what the primary held. */
static void test_pbservice_backup_matches_primary_after_concurrent_puts_to_same_keys(void **state)
{
	(void)state;
	concurrent_same("cs", false);
}

/* Lab TestConcurrentSameUnreliable: the same with both servers unreliable. */
static void test_pbservice_backup_matches_primary_after_concurrent_puts_unreliable(void **state)
{
	(void)state;
	concurrent_same("csu", true);
}

/* Append "x <i> <n> y" nappends times to key "k". */
static void *append_main(void *arg)
{
	client_arg *a = arg;
	pbservice_clerk *ck = pbservice_clerk_new(a->e->vsh, "");
	if (ck == NULL) {
		tf_set(a->tf, "clerk_new failed");
		return NULL;
	}
	for (int j = 0; j < a->nappends; j++) {
		char v[64];
		snprintf(v, sizeof v, "x %d %d y", a->i, j);
		int rc = pbservice_clerk_append(ck, "k", v);
		if (rc != DKV_OK) {
			tf_set(a->tf, "client %d: Append: %s", a->i, dkv_strerror(rc));
			break;
		}
	}
	a->ok = true;
	pbservice_clerk_free(ck);
	return NULL;
}

/* Lab TestConcurrentSameAppend: concurrent Appends to one key, each once and in order, same on the backup. */
static void test_pbservice_backup_matches_primary_after_concurrent_appends(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "csa");
	enum { nservers = 2, nclients = 3, nappends = 50 };
	pbservice_server *sa[nservers];
	for (int i = 0; i < nservers; i++)
		sa[i] = start_server(&e, i + 1);
	poll_pb(&e, DP * 2);
	th_sleep_ms(PI * DP);

	viewservice_view view1 = vget(&e);
	thread_fail tf;
	tf_init(&tf);
	atomic_bool done;
	atomic_init(&done, false);
	pthread_t th[nclients];
	client_arg args[nclients];
	for (int i = 0; i < nclients; i++) {
		args[i] = (client_arg){.e = &e, .i = i, .done = &done, .tf = &tf, .nappends = nappends};
		assert_int_equal(pthread_create(&th[i], NULL, append_main, &args[i]), 0);
	}
	for (int i = 0; i < nclients; i++)
		pthread_join(th[i], NULL);
	tf_assert_ok(&tf);

	int counts[nclients];
	for (int i = 0; i < nclients; i++)
		counts[i] = nappends;
	pbservice_clerk *ck = new_clerk(&e);
	char *primaryv = NULL;
	assert_int_equal(pbservice_clerk_get(ck, "k", &primaryv), DKV_OK);
	th_check_appends(primaryv, counts, nclients);

	fail_over(&e, sa, nservers, &view1);
	char *backupv = NULL;
	assert_int_equal(pbservice_clerk_get(ck, "k", &backupv), DKV_OK);
	th_check_appends(backupv, counts, nclients);
	assert_string_equal(backupv, primaryv);
	free(primaryv);
	free(backupv);
	pbservice_clerk_free(ck);
	for (int i = 0; i < nservers; i++)
		pbservice_server_free(sa[i]);
	env_stop(&e);
}

/* ------------------------------------------------------------ repeated crashes */

enum { RC_NSERVERS = 3, RC_NTH = 2 };

typedef struct {
	pb_env *e;
	pthread_mutex_t mu; /* guards sa */
	pbservice_server *sa[RC_NSERVERS];
	atomic_bool done;
	thread_fail tf;
} crash_env;

/* Kill a random server, wait 1 s, start a fresh one on its path, wait 1 s, repeat. */
static void *killer_main(void *arg)
{
	crash_env *c = arg;
	while (!atomic_load(&c->done)) {
		int i = (int)(th_rand() % RC_NSERVERS);
		pthread_mutex_lock(&c->mu);
		pbservice_server *old = c->sa[i];
		c->sa[i] = NULL;
		pthread_mutex_unlock(&c->mu);
		pbservice_server_free(old);
		/* wait long enough for new view to form, backup to be initialized */
		sleep_unless(&c->done, 2 * PI * DP);
		char p[DKV_NAME_MAX];
		pbservice_server *s = pbservice_server_start(c->e->vsh, pb_port(c->e, p, i + 1));
		if (s == NULL)
			tf_set(&c->tf, "restart of server %d failed", i + 1);
		pthread_mutex_lock(&c->mu);
		c->sa[i] = s;
		pthread_mutex_unlock(&c->mu);
		sleep_unless(&c->done, 2 * PI * DP);
	}
	return NULL;
}

typedef struct {
	crash_env *c;
	int i;
	int n; /* appends done */
	bool ok;
} crash_client;

/* Random Puts to ten keys of our own; a key written before must read back its last value. */
static void *crash_put_main(void *arg)
{
	crash_client *a = arg;
	pbservice_clerk *ck = pbservice_clerk_new(a->c->e->vsh, "");
	char *data[10] = {0};
	while (ck != NULL && !atomic_load(&a->c->done)) {
		int r = (int)(th_rand() % 10);
		char k[32];
		snprintf(k, sizeof k, "%d", a->i * 1000000 + r);
		if (data[r] != NULL) {
			char *v = NULL;
			int rc = pbservice_clerk_get(ck, k, &v);
			if (rc != DKV_OK || strcmp(v, data[r]) != 0) {
				tf_set(&a->c->tf, "key=%s wanted=%s got=%s (rc %d)", k, data[r],
				       v ? v : "(null)", rc);
				free(v);
				goto out;
			}
			free(v);
		}
		char nv[32];
		snprintf(nv, sizeof nv, "%llu", (unsigned long long)(th_rand() >> 1));
		if (pbservice_clerk_put(ck, k, nv) != DKV_OK) {
			tf_set(&a->c->tf, "Put failed");
			goto out;
		}
		free(data[r]);
		data[r] = strdup(nv);
		/* if no sleep here, then server tick() threads do not get enough time to Ping */
		th_sleep_ms(10);
	}
	a->ok = ck != NULL;
out:
	for (int i = 0; i < 10; i++)
		free(data[i]);
	pbservice_clerk_free(ck);
	return NULL;
}

/* Append "x <i> <n> y" to key "0" until done. */
static void *crash_append_main(void *arg)
{
	crash_client *a = arg;
	pbservice_clerk *ck = pbservice_clerk_new(a->c->e->vsh, "");
	int n = 0;
	while (ck != NULL && !atomic_load(&a->c->done)) {
		char v[64];
		snprintf(v, sizeof v, "x %d %d y", a->i, n);
		if (pbservice_clerk_append(ck, "0", v) != DKV_OK) {
			tf_set(&a->c->tf, "Append failed");
			break;
		}
		th_sleep_ms(10);
		n++;
	}
	a->n = n;
	a->ok = ck != NULL && !atomic_load(&a->c->tf.failed);
	pbservice_clerk_free(ck);
	return NULL;
}

/* The body of RepeatedCrash (appends = false) and RepeatedCrashUnreliable. */
static void repeated_crash(const char *tag, bool appends)
{
	pb_env e;
	env_start(&e, tag);
	crash_env c = {.e = &e};
	pthread_mutex_init(&c.mu, NULL);
	atomic_init(&c.done, false);
	tf_init(&c.tf);
	for (int i = 0; i < RC_NSERVERS; i++) {
		c.sa[i] = start_server(&e, i + 1);
		if (appends)
			pbservice_server_set_unreliable(c.sa[i], true);
	}
	poll_pb(&e, DP);
	/* wait a bit for primary to initialize backup */
	th_sleep_ms(DP * PI);

	pthread_t killer;
	assert_int_equal(pthread_create(&killer, NULL, killer_main, &c), 0);
	pthread_t th[RC_NTH];
	crash_client args[RC_NTH];
	for (int i = 0; i < RC_NTH; i++) {
		args[i] = (crash_client){.c = &c, .i = i};
		assert_int_equal(pthread_create(&th[i], NULL,
		                                appends ? crash_append_main : crash_put_main, &args[i]),
		                 0);
	}
	th_sleep_ms(20000);
	atomic_store(&c.done, true);
	for (int i = 0; i < RC_NTH; i++) {
		pthread_join(th[i], NULL);
		if (!args[i].ok)
			tf_set(&c.tf, "child %d failed", i);
	}
	pthread_join(killer, NULL);
	tf_assert_ok(&c.tf);

	pbservice_clerk *ck = new_clerk(&e);
	if (appends) {
		int counts[RC_NTH];
		for (int i = 0; i < RC_NTH; i++)
			counts[i] = args[i].n;
		char *v = NULL;
		assert_int_equal(pbservice_clerk_get(ck, "0", &v), DKV_OK);
		th_check_appends(v, counts, RC_NTH);
		free(v);
	}
	assert_int_equal(pbservice_clerk_put(ck, "aaa", "bbb"), DKV_OK);
	check(ck, "aaa", "bbb");
	pbservice_clerk_free(ck);
	for (int i = 0; i < RC_NSERVERS; i++)
		pbservice_server_free(c.sa[i]);
	pthread_mutex_destroy(&c.mu);
	env_stop(&e);
}

/* Lab TestRepeatedCrash: servers killed and restarted every second; clients read their own writes. */
static void test_pbservice_survives_repeated_crashes_and_restarts(void **state)
{
	(void)state;
	repeated_crash("rc", false);
}

/* Lab TestRepeatedCrashUnreliable: the same with concurrent Appends to one key, initial servers unreliable. */
static void test_pbservice_survives_repeated_crashes_with_unreliable_appends(void **state)
{
	(void)state;
	repeated_crash("rcu", true);
}

/* ------------------------------------------------------------ partitions */

/* The set-up of both partition tests: s1 pings through a hard link to the view
 * service that will be removed, and sits behind a delay proxy; s2 is its backup. */
typedef struct {
	pb_env e;
	char vsha[DKV_NAME_MAX + 2];
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pbservice_server *s1, *s2;
	th_proxy *px;
	pbservice_clerk *ck1;
} part_env;

static void partition_setup(part_env *pe, const char *tag)
{
	pb_env *e = &pe->e;
	env_start(e, tag);
	pe->ck1 = new_clerk(e);
	snprintf(pe->vsha, sizeof pe->vsha, "%sa", e->vsh);
	th_unlink(pe->vsha);
	assert_int_equal(link(e->vsh, pe->vsha), 0);
	pb_port(e, pe->n1, 1);
	pb_port(e, pe->n2, 2);
	pe->s1 = pbservice_server_start(pe->vsha, pe->n1);
	assert_non_null(pe->s1);
	pe->px = th_proxy_start(pe->n1);
	assert_non_null(pe->px);

	th_sleep_ms(DEADTIME * 2);
	char p[DKV_NAME_MAX];
	vprimary(e, p);
	if (strcmp(p, pe->n1) != 0)
		fail_msg("primary never formed initial view");
	pe->s2 = start_server(e, 2);
	th_sleep_ms(DEADTIME * 2);
	viewservice_view v1 = vget(e);
	if (strcmp(v1.primary, pe->n1) != 0 || strcmp(v1.backup, pe->n2) != 0)
		fail_msg("backup did not join view");
	pbservice_clerk_put(pe->ck1, "a", "1");
	check(pe->ck1, "a", "1");
}

/* Cut s1 off from the view service, delay its clients by `delay_ms` and start a
 * Get in a fresh clerk (a fresh connection through the proxy, delayed). */
static pbservice_clerk *partition_cut(part_env *pe, unsigned delay_ms, bg_get *b)
{
	th_unlink(pe->vsha);
	th_proxy_set_delay(pe->px, delay_ms);
	pbservice_clerk *ckd = new_clerk(&pe->e);
	pbservice_clerk_set_timeout(ckd, 20000); /* bounded, so the thread can be joined */
	bg_get_start(b, ckd, "a");
	return ckd;
}

static void partition_wait_primary_s2(part_env *pe)
{
	char p[DKV_NAME_MAX];
	for (int i = 0; i < DP * 3; i++) {
		vprimary(&pe->e, p);
		if (strcmp(p, pe->n2) == 0)
			break;
		th_sleep_ms(PI);
	}
	vprimary(&pe->e, p);
	if (strcmp(p, pe->n2) != 0)
		fail_msg("primary never changed");
}

static void partition_teardown(part_env *pe, bg_get *b, pbservice_clerk *ckd)
{
	pbservice_server_free(pe->s1);
	pbservice_server_free(pe->s2);
	pthread_join(b->th, NULL);
	free(b->value);
	pbservice_clerk_free(ckd);
	th_proxy_stop(pe->px);
	pbservice_clerk_free(pe->ck1);
	env_stop(&pe->e);
}

/* Lab TestPartition1: an old primary cut off from the view service does not serve a stale Get. */
static void test_pbservice_old_primary_does_not_serve_gets(void **state)
{
	(void)state;
	part_env pe = {0};
	partition_setup(&pe, "part1");
	bg_get b;
	pbservice_clerk *ckd = partition_cut(&pe, 4000, &b);

	/* now s1 cannot talk to the view service, so the view will change */
	partition_wait_primary_s2(&pe);
	/* wait long enough that s2 must know about the new view */
	th_sleep_ms(2 * PI);
	/* change the value (on s2) so it's no longer "1" */
	pbservice_clerk *ck2 = new_clerk(&pe.e);
	pbservice_clerk_put(ck2, "a", "111");
	check(ck2, "a", "111");
	/* wait for the background Get to s1 to be delivered */
	if (bg_get_wait(&b, 5000) && b.rc == DKV_OK && strcmp(b.value, "1") == 0)
		fail_msg("Get to old primary succeeded and produced stale value");
	check(ck2, "a", "111");

	pbservice_clerk_free(ck2);
	partition_teardown(&pe, &b, ckd);
}

/* Lab TestPartition2: a partitioned old primary does not complete a Get after its backup died. */
static void test_pbservice_partitioned_old_primary_does_not_complete_gets(void **state)
{
	(void)state;
	part_env pe = {0};
	partition_setup(&pe, "part2");
	bg_get b;
	pbservice_clerk *ckd = partition_cut(&pe, 5000, &b);

	partition_wait_primary_s2(&pe);
	char n3[DKV_NAME_MAX];
	pb_port(&pe.e, n3, 3);
	pbservice_server *s3 = start_server(&pe.e, 3);
	for (int i = 0; i < DP * 3; i++) {
		viewservice_view v = vget(&pe.e);
		if (strcmp(v.backup, n3) == 0 && strcmp(v.primary, pe.n2) == 0)
			break;
		th_sleep_ms(PI);
	}
	viewservice_view v2 = vget(&pe.e);
	if (strcmp(v2.primary, pe.n2) != 0 || strcmp(v2.backup, n3) != 0)
		fail_msg("new backup never joined");
	th_sleep_ms(2000);

	pbservice_clerk *ck2 = new_clerk(&pe.e);
	pbservice_clerk_put(ck2, "a", "2");
	check(ck2, "a", "2");
	pbservice_server_kill(pe.s2);
	/* wait for the delayed Get to s1 to complete */
	if (bg_get_wait(&b, 6000) && b.rc == DKV_OK && strcmp(b.value, "1") == 0)
		fail_msg("partitioned primary replied to a Get with a stale value");
	check(ck2, "a", "2");

	pbservice_clerk_free(ck2);
	pbservice_server_free(s3);
	partition_teardown(&pe, &b, ckd);
}

/* ------------------------------------------------------------ our own */

/* Is the view service's view (p, b), acknowledged by its primary? */
static bool view_is(pb_env *e, const char *p, const char *b)
{
	viewservice_view v;
	bool acked;
	viewservice_server_peek(e->vs, &v, &acked);
	return acked && strcmp(v.primary, p) == 0 && strcmp(v.backup, b) == 0;
}

/* Wait until the view is (p, b) and acknowledged (so the backup has our state). */
#define wait_view(e, p, b) WAIT_UNTIL(view_is((e), (p), (b)), 10000)

/* A new backup receives 10,000 keys in its state transfer and serves them all after failover. */
static void test_pbservice_new_backup_receives_ten_thousand_keys(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "xfer");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_clerk *ck = new_clerk(&e);
	int nkeys = th_under_valgrind() ? 1000 : 10000;
	char k[32], v[64];
	for (int i = 0; i < nkeys; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		snprintf(v, sizeof v, "value-%d-%llu", i, ((unsigned long long)i * 2654435761ull));
		assert_int_equal(pbservice_clerk_put(ck, k, v), DKV_OK);
	}
	pbservice_server *s2 = start_server(&e, 2);
	wait_view(&e, n1, n2);
	/* One more write goes through the new backup, which requires the transfer first. */
	assert_int_equal(pbservice_clerk_put(ck, "last", "one"), DKV_OK);
	pbservice_server_kill(s1);
	wait_view(&e, n2, "");
	for (int i = 0; i < nkeys; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		snprintf(v, sizeof v, "value-%d-%llu", i, ((unsigned long long)i * 2654435761ull));
		check(ck, k, v);
	}
	check(ck, "last", "one");
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	env_stop(&e);
}

/* Send one raw PutAppend (client, seq) to `name`; the reply's error code or a transport error. */
static int raw_append(dkv_rpc_pool *pool, const char *name, const char *key, const char *val,
                      uint64_t client, uint64_t seq)
{
	pb_putappend_args a = {.key = (char *)key, .value = (char *)val, .op = PB_OP_APPEND,
	                       .client = client, .seq = seq};
	pb_reply r = {0};
	int rc = dkv_rpc_call(pool, name, PB_PROG, PB_VERS, PB_PUTAPPEND,
	                      (xdrproc_t)xdr_pb_putappend_args, &a, (xdrproc_t)xdr_pb_reply, &r, 5000);
	if (rc != DKV_OK)
		return rc;
	rc = r.err;
	xdr_free((xdrproc_t)xdr_pb_reply, (char *)&r);
	return rc;
}

/* A request applied by the old primary and retried at the new one after failover is not applied twice. */
static void test_pbservice_duplicate_detection_survives_failover(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "dup");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_server *s2 = start_server(&e, 2);
	wait_view(&e, n1, n2);
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);
	uint64_t client = 0x1234567890abcdefull;
	/* The first attempt may meet a backup still waiting for its state: retry as a clerk would. */
	WAIT_UNTIL(raw_append(pool, n1, "k", "x", client, 1) == DKV_OK, 10000);
	/* A retry of the same request at the same primary changes nothing. */
	assert_int_equal(raw_append(pool, n1, "k", "x", client, 1), DKV_OK);
	pbservice_clerk *ck = new_clerk(&e);
	check(ck, "k", "x");

	pbservice_server_kill(s1);
	wait_view(&e, n2, "");
	/* The retry reaches the new primary: already applied, so nothing changes. */
	WAIT_UNTIL(raw_append(pool, n2, "k", "x", client, 1) == DKV_OK, 10000);
	check(ck, "k", "x");
	/* The next request of that client is applied. */
	assert_int_equal(raw_append(pool, n2, "k", "y", client, 2), DKV_OK);
	check(ck, "k", "xy");
	/* A non-primary refuses clients. */
	pbservice_server *s3 = start_server(&e, 3);
	char n3[DKV_NAME_MAX];
	pb_port(&e, n3, 3);
	wait_view(&e, n2, n3);
	assert_int_equal(raw_append(pool, n3, "k", "z", client, 3), DKV_ERR_WRONG_SERVER);
	check(ck, "k", "xy");

	dkv_rpc_pool_free(pool);
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	pbservice_server_free(s3);
	env_stop(&e);
}

/* With a deadline set and no primary, clerk calls return DKV_ERR_TIMEOUT (and Get a NULL value). */
static void test_pbservice_clerk_deadline_returns_timeout_without_a_primary(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "tmo");
	pbservice_clerk *ck = new_clerk(&e);
	pbservice_clerk_set_timeout(ck, 300);
	char *v = (char *)"sentinel";
	assert_int_equal(pbservice_clerk_get(ck, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);
	assert_int_equal(pbservice_clerk_put(ck, "a", "b"), DKV_ERR_TIMEOUT);
	assert_int_equal(pbservice_clerk_append(ck, "a", "b"), DKV_ERR_TIMEOUT);

	/* The same clerk works once a primary exists, then times out again when it is gone. */
	char n1[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_clerk_set_timeout(ck, 0);
	assert_int_equal(pbservice_clerk_put(ck, "a", "b"), DKV_OK);
	check(ck, "a", "b");
	pbservice_server_kill(s1);
	pbservice_clerk_set_timeout(ck, 300);
	assert_int_equal(pbservice_clerk_get(ck, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);

	/* No view service at all. */
	env_stop(&e);
	assert_int_equal(pbservice_clerk_put(ck, "a", "c"), DKV_ERR_TIMEOUT);
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
}

/* Keys over DKV_KEY_MAX and values over DKV_VALUE_MAX (also an Append's result) give DKV_ERR_INVAL. */
static void test_pbservice_rejects_oversized_keys_and_values(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "size");
	char n1[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_clerk *ck = new_clerk(&e);

	char *key = malloc(DKV_KEY_MAX + 2);
	assert_non_null(key);
	memset(key, 'k', DKV_KEY_MAX + 1);
	key[DKV_KEY_MAX + 1] = '\0';
	char *v = (char *)"sentinel";
	assert_int_equal(pbservice_clerk_put(ck, key, "v"), DKV_ERR_INVAL);
	assert_int_equal(pbservice_clerk_append(ck, key, "v"), DKV_ERR_INVAL);
	assert_int_equal(pbservice_clerk_get(ck, key, &v), DKV_ERR_INVAL);
	assert_null(v);
	key[DKV_KEY_MAX] = '\0'; /* exactly the limit is fine */
	assert_int_equal(pbservice_clerk_put(ck, key, "v"), DKV_OK);
	check(ck, key, "v");
	free(key);

	assert_int_equal(pbservice_clerk_put(ck, NULL, "v"), DKV_ERR_INVAL);
	assert_int_equal(pbservice_clerk_put(ck, "k", NULL), DKV_ERR_INVAL);
	assert_int_equal(pbservice_clerk_get(ck, "k", NULL), DKV_ERR_INVAL);

	size_t big = DKV_VALUE_MAX + 1;
	char *val = malloc(big + 1);
	assert_non_null(val);
	memset(val, 'v', big);
	val[big] = '\0';
	assert_int_equal(pbservice_clerk_put(ck, "big", val), DKV_ERR_INVAL);
	/* An Append whose result would exceed the limit is refused by the primary. */
	val[DKV_VALUE_MAX / 2 + 1] = '\0';
	assert_int_equal(pbservice_clerk_put(ck, "big", val), DKV_OK);
	assert_int_equal(pbservice_clerk_append(ck, "big", val), DKV_ERR_INVAL);
	val[DKV_VALUE_MAX / 2 + 1] = 'v';
	val[10] = '\0';
	assert_int_equal(pbservice_clerk_append(ck, "big", val), DKV_OK);
	char *got = NULL;
	assert_int_equal(pbservice_clerk_get(ck, "big", &got), DKV_OK);
	assert_int_equal(strlen(got), DKV_VALUE_MAX / 2 + 1 + 10);
	free(got);
	free(val);
	/* the service still works */
	assert_int_equal(pbservice_clerk_put(ck, "small", "ok"), DKV_OK);
	check(ck, "small", "ok");
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
	env_stop(&e);
}

/* Start/kill/free of a primary, a backup and a clerk leaves no thread and no heap behind. */
static void test_pbservice_kill_and_free_leave_no_threads_or_memory(void **state)
{
	(void)state;
	pbservice_server_free(NULL);
	pbservice_clerk_free(NULL);
	pbservice_server_kill(NULL);
	pb_env e;
	env_start(&e, "mem");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	int threads0 = 0;
	size_t heap0 = 0;
	int cycles = th_under_valgrind() ? 3 : 8;
	for (int c = 0; c < cycles + 2; c++) {
		if (c == 2) { /* after warm-up: libtirpc's one-time globals */
			threads0 = settled_thread_count();
			heap0 = th_live_heap();
		}
		pbservice_server *s1 = start_server(&e, 1);
		pbservice_server *s2 = start_server(&e, 2);
		pbservice_clerk *ck = new_clerk(&e);
		char key[16];
		snprintf(key, sizeof key, "k%d", c);
		assert_int_equal(pbservice_clerk_put(ck, key, "v"), DKV_OK);
		check(ck, key, "v");
		pbservice_server_kill(s1);
		pbservice_server_kill(s1);
		pbservice_server_free(s2);
		pbservice_server_free(s1);
		pbservice_clerk_free(ck);
		/* Let the view service forget both (a fresh pair forms the next view). */
		watch_stop(e.watch);
		viewservice_server_free(e.vs);
		e.vs = viewservice_server_start(e.vsh);
		assert_non_null(e.vs);
		e.watch = watch_start(e.vs);
	}
	/* A joined thread leaves /proc's count a moment after pthread_join returns. */
	WAIT_UNTIL(th_thread_count() <= threads0, 5000);
	size_t heap1 = th_live_heap();
	if (heap1 > heap0 + 32 * 1024)
		fail_msg("live heap grew by %zu bytes over %d cycles", heap1 - heap0, cycles);
	env_stop(&e);
}

/* Constructors fail cleanly (NULL, ENOMEM, nothing leaked) at every allocation, then succeed. */
static void test_pbservice_constructors_survive_allocation_failure_at_every_step(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "pb", "oomv", 1);
	th_port(n1, "pb", "oom", 1);
	pbservice_server *s = NULL;
	for (unsigned long n = 1; n < 300 && s == NULL; n++) {
		dkv_alloc_fail_after(n);
		errno = 0;
		s = pbservice_server_start(vsh, n1);
		int err = errno;
		dkv_alloc_fail_after(0);
		if (s == NULL)
			assert_int_equal(err, ENOMEM);
	}
	assert_non_null(s);
	pbservice_clerk *ck = NULL;
	for (unsigned long n = 1; n < 300 && ck == NULL; n++) {
		dkv_alloc_fail_after(n);
		errno = 0;
		ck = pbservice_clerk_new(vsh, "");
		int err = errno;
		dkv_alloc_fail_after(0);
		if (ck == NULL)
			assert_int_equal(err, ENOMEM);
	}
	assert_non_null(ck);
	pbservice_clerk_free(ck);
	pbservice_server_free(s);
}

/* The store keeps every key and value across table growth, and appends build the right value. */
static void test_pbservice_store_keeps_every_key_across_growth(void **state)
{
	(void)state;
	pb_store *st = pb_store_new();
	assert_non_null(st);
	char k[32], v[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(k, sizeof k, "k%d", i);
		snprintf(v, sizeof v, "v%d", i);
		assert_int_equal(pb_store_put(st, k, v), DKV_OK);
	}
	assert_int_equal(pb_store_count(st), 5000);
	for (int i = 0; i < 5000; i++) {
		snprintf(k, sizeof k, "k%d", i);
		snprintf(v, sizeof v, "v%d", i);
		size_t len = 0;
		const char *got = pb_store_get(st, k, &len);
		assert_non_null(got);
		assert_string_equal(got, v);
		assert_int_equal(len, strlen(v));
	}
	assert_null(pb_store_get(st, "absent", NULL));
	for (int i = 0; i < 1000; i++)
		assert_int_equal(pb_store_append(st, "app", "ab"), DKV_OK);
	size_t len = 0;
	const char *app = pb_store_get(st, "app", &len);
	assert_int_equal(len, 2000);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(app[i], i % 2 ? 'b' : 'a');
	assert_int_equal(pb_store_put(st, "app", ""), DKV_OK);
	assert_string_equal(pb_store_get(st, "app", NULL), "");
	assert_int_equal(pb_store_count(st), 5001);
	pb_store_free(st);
}

/* An allocation failure anywhere in a Put or Append leaves the store as it was. */
static void test_pbservice_store_out_of_memory_changes_nothing(void **state)
{
	(void)state;
	pb_store *st = pb_store_new();
	assert_non_null(st);
	assert_int_equal(pb_store_put(st, "a", "1"), DKV_OK);
	int failed = 0;
	for (unsigned long n = 1; n < 20; n++) {
		char k[16];
		snprintf(k, sizeof k, "new%lu", n);
		dkv_alloc_fail_after(n);
		int rc = pb_store_put(st, k, "v");
		dkv_alloc_fail_after(0);
		if (rc == DKV_OK) {
			assert_string_equal(pb_store_get(st, k, NULL), "v");
			break;
		}
		assert_int_equal(rc, DKV_ERR_NOMEM);
		failed++;
		assert_null(pb_store_get(st, k, NULL));
		assert_int_equal(pb_store_count(st), 1);
	}
	assert_true(failed >= 2); /* the value, the entry, the key: some failed */
	assert_int_equal(pb_store_count(st), 2);
	dkv_alloc_fail_after(1);
	int rc = pb_store_append(st, "a", "a long suffix that needs a bigger buffer");
	dkv_alloc_fail_after(0);
	assert_int_equal(rc, DKV_ERR_NOMEM);
	assert_string_equal(pb_store_get(st, "a", NULL), "1");
	pb_store_free(st);
}

/* A lone primary killed and restarted on the same path comes back empty and never serves. */
static void test_pbservice_restarted_lone_primary_on_the_same_path_never_serves(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "restart");
	char n1[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_clerk *ck = new_clerk(&e);
	assert_int_equal(pbservice_clerk_put(ck, "a", "1"), DKV_OK);
	pbservice_server_free(s1);
	s1 = start_server(&e, 1);
	th_sleep_ms(1000);
	/* The view still names n1 primary, but the new server has no data: no answer. */
	pbservice_clerk_set_timeout(ck, 2000);
	char *v = NULL;
	assert_int_equal(pbservice_clerk_get(ck, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);
	assert_int_equal(pbservice_clerk_put(ck, "a", "2"), DKV_ERR_TIMEOUT);
	viewservice_view view;
	bool acked;
	viewservice_server_peek(e.vs, &view, &acked);
	assert_int_equal(view.viewnum, 1);
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
	env_stop(&e);
}

/* ------------------------------------------------------------ view service restarts */

/* The view service's current view and whether it is acknowledged. */
static viewservice_view vpeek(pb_env *e, bool *acked)
{
	viewservice_view v;
	bool a;
	viewservice_server_peek(e->vs, &v, &a);
	if (acked != NULL)
		*acked = a;
	return v;
}

static bool acked_primary_is_not(pb_env *e, const char *p)
{
	bool a;
	viewservice_view v = vpeek(e, &a);
	return a && v.primary[0] != '\0' && strcmp(v.primary, p) != 0;
}

/* Kill the view service and start it again (opts NULL: the plain start). */
static void vs_restart(pb_env *e, const dkv_server_opts *o)
{
	watch_stop(e->watch);
	viewservice_server_free(e->vs);
	e->vs = o != NULL ? viewservice_server_start_opts(e->vsh, o) : viewservice_server_start(e->vsh);
	assert_non_null(e->vs);
	e->watch = watch_start(e->vs);
}

/* Issue 14, schedule 1: the old primary and backup are the first to ping a view
 * service restarted without its state. Today it starts again at view 1, which
 * both ignore, and failover silently stops. Now it adopts the last view's primary
 * at L + 2, the old backup rejoins at L + 3, and when the primary dies the backup
 * takes over with every write. */
static void test_pbservice_view_service_restart_keeps_failover_working(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "vsra");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_server *s2 = start_server(&e, 2);
	wait_view(&e, n1, n2);
	pbservice_clerk *ck = new_clerk(&e);
	assert_int_equal(pbservice_clerk_put(ck, "a", "1"), DKV_OK);
	assert_int_equal(pbservice_clerk_append(ck, "a", "2"), DKV_OK);
	unsigned l = vpeek(&e, NULL).viewnum;

	/* The plain start — all that today's code offers. The first ping names
	 * view l: the service knows it lost its state. */
	vs_restart(&e, NULL);
	WAIT_UNTIL(view_is(&e, n1, n2), 10000);
	assert_int_equal(vpeek(&e, NULL).viewnum, l + 3);
	pbservice_clerk *ck2 = new_clerk(&e);
	check(ck2, "a", "12");
	pbservice_server_kill(s1);
	wait_view(&e, n2, "");
	assert_int_equal(vpeek(&e, NULL).viewnum, l + 4);
	check(ck2, "a", "12");
	assert_int_equal(pbservice_clerk_append(ck2, "a", "3"), DKV_OK);
	check(ck, "a", "123");

	pbservice_clerk_free(ck);
	pbservice_clerk_free(ck2);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	env_stop(&e);
}

/* Issue 14, schedule 2: a fresh server is the first (and for a while the only)
 * one to ping a view service restarted without its state, while the old pair
 * still serves. Today it becomes primary of view 1 with an empty store (two
 * primaries; a fresh clerk reads ""). Now it is not made primary: no view until
 * the old pair reports, clerks that know the old primary keep being served, a new
 * clerk waits, and after adoption every read sees the last write. */
static void test_pbservice_view_service_restart_never_makes_a_fresh_server_primary(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "vsrb");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX], n3[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pb_port(&e, n3, 3);
	/* s1 and s2 reach the view service through a hard link, which the restart
	 * leaves pointing at the dead socket until the test re-links it. */
	char vsha[DKV_NAME_MAX + 2];
	snprintf(vsha, sizeof vsha, "%sa", e.vsh);
	th_unlink(vsha);
	assert_int_equal(link(e.vsh, vsha), 0);
	pbservice_server *s1 = pbservice_server_start(vsha, n1);
	assert_non_null(s1);
	wait_view(&e, n1, "");
	pbservice_server *s2 = pbservice_server_start(vsha, n2);
	assert_non_null(s2);
	wait_view(&e, n1, n2);
	pbservice_clerk *ck = new_clerk(&e);
	assert_int_equal(pbservice_clerk_put(ck, "a", "1"), DKV_OK);
	unsigned l = vpeek(&e, NULL).viewnum;

	th_unlink(vsha);
	dkv_server_opts lost = {.restart = true};
	vs_restart(&e, &lost);
	pbservice_server *s3 = start_server(&e, 3);
	/* Only s3 pings: never a view, however long. */
	for (int i = 0; i < DP * 3; i++) {
		assert_int_equal(vpeek(&e, NULL).viewnum, 0);
		th_sleep_ms(PI);
	}
	assert_int_equal(vpeek(&e, NULL).viewnum, 0);
	/* The old pair keeps serving clerks that know it... */
	assert_int_equal(pbservice_clerk_put(ck, "a", "2"), DKV_OK);
	/* ...and a new clerk waits instead of reading "" from s3. */
	pbservice_clerk *ckf = new_clerk(&e);
	pbservice_clerk_set_timeout(ckf, 1000);
	char *v = NULL;
	assert_int_equal(pbservice_clerk_get(ckf, "a", &v), DKV_ERR_TIMEOUT);
	assert_null(v);

	/* The old pair reaches the new service: s1 is adopted at l + 2. */
	assert_int_equal(link(e.vsh, vsha), 0);
	WAIT_UNTIL(vpeek(&e, NULL).viewnum >= l + 2, 10000);
	viewservice_view a = vpeek(&e, NULL);
	assert_string_equal(a.primary, n1);
	pbservice_clerk_set_timeout(ckf, 0);
	check(ckf, "a", "2");
	/* s3 (first to ping) becomes the backup and takes over with the data. */
	wait_view(&e, n1, n3);
	pbservice_server_kill(s1);
	WAIT_UNTIL(acked_primary_is_not(&e, n1), 10000);
	check(ckf, "a", "2");

	pbservice_clerk_free(ck);
	pbservice_clerk_free(ckf);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	pbservice_server_free(s3);
	th_unlink(vsha);
	env_stop(&e);
}

/* The workload of the restart tests: clients on a few keys, recorded. */
#define VR_CLIENTS 4
#define VR_KEYS 3
typedef struct {
	pb_env *e;
	th_history *h;
	atomic_bool done;
	int me;
} vr_client;

static void *vr_client_main(void *arg)
{
	vr_client *c = arg;
	pbservice_clerk *ck = pbservice_clerk_new(c->e->vsh, "");
	if (ck == NULL)
		return NULL;
	pbservice_clerk_set_timeout(ck, 2000);
	uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)(c->me + 1);
	for (int i = 0; !atomic_load(&c->done); i++) {
		r = r * 6364136223846793005ull + 1442695040888963407ull;
		char key[8], val[32];
		snprintf(key, sizeof key, "k%d", (int)((r >> 33) % VR_KEYS));
		snprintf(val, sizeof val, "(%d.%d)", c->me, i);
		int d = (int)((r >> 20) % 100);
		th_op_kind kind = d < 45 ? TH_OP_APPEND : d < 55 ? TH_OP_PUT : TH_OP_GET;
		int id = th_history_invoke(c->h, c->me, kind, key, val);
		char *v = NULL;
		int rc = kind == TH_OP_GET   ? pbservice_clerk_get(ck, key, &v)
		         : kind == TH_OP_PUT ? pbservice_clerk_put(ck, key, val)
		                             : pbservice_clerk_append(ck, key, val);
		if (rc == DKV_OK)
			th_history_return(c->h, id, v);
		else
			th_history_unknown(c->h, id);
		free(v);
	}
	pbservice_clerk_free(ck);
	return NULL;
}

static int vr_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/*
 * The view service is killed and started again twice in the middle of a
 * workload — with its directory, or without (restart) — and a primary is killed
 * between the two restarts (so a failover must happen under the restarted
 * service). No read is stale or empty: the history is linearizable. With the
 * directory the service continues at exactly its saved view; without, it adopts
 * the old primary at L + 2.
 */
static void vs_restart_workload(const char *tag, bool with_dir)
{
	char root[64] = "/tmp/dkv-pbtest-XXXXXX", dir[128];
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof dir, "%s/vs", root);
	dkv_server_opts o = {.dir = with_dir ? dir : NULL, .restart = !with_dir};
	dkv_server_opts first = {.dir = with_dir ? dir : NULL};
	pb_env e;
	snprintf(e.tag, sizeof e.tag, "%s", tag);
	char vtag[40];
	snprintf(vtag, sizeof vtag, "%sv", tag);
	th_port(e.vsh, "pb", vtag, 1);
	e.vs = viewservice_server_start_opts(e.vsh, &first);
	assert_non_null(e.vs);
	e.watch = watch_start(e.vs);
	e.vck = viewservice_clerk_new("", e.vsh);
	char n[3][DKV_NAME_MAX];
	pbservice_server *sv[3];
	for (int i = 0; i < 3; i++) {
		pb_port(&e, n[i], i + 1);
		sv[i] = start_server(&e, i + 1);
		if (i == 0)
			wait_view(&e, n[0], "");
		if (i == 1)
			wait_view(&e, n[0], n[1]);
	}

	th_history *h = th_history_new();
	assert_non_null(h);
	vr_client c[VR_CLIENTS];
	pthread_t t[VR_CLIENTS];
	for (int i = 0; i < VR_CLIENTS; i++) {
		c[i].e = &e;
		c[i].h = h;
		c[i].me = i;
		atomic_init(&c[i].done, false);
		assert_int_equal(pthread_create(&t[i], NULL, vr_client_main, &c[i]), 0);
	}
	int restarts = 0, failovers = 0;
	for (int round = 0; round < 2; round++) {
		th_sleep_ms(700);
		bool acked;
		viewservice_view before = vpeek(&e, &acked);
		vs_restart(&e, &o);
		restarts++;
		if (with_dir) {
			bool a2;
			viewservice_view after = vpeek(&e, &a2);
			assert_int_equal(after.viewnum, before.viewnum);
			assert_string_equal(after.primary, before.primary);
			assert_string_equal(after.backup, before.backup);
			assert_int_equal(a2, acked);
		} else {
			WAIT_UNTIL(vpeek(&e, NULL).viewnum != 0, 10000);
			viewservice_view after = vpeek(&e, NULL);
			assert_int_equal(after.viewnum, before.viewnum + 2);
			assert_string_equal(after.primary, before.primary);
		}
		if (round == 0) {
			/* a failover under the restarted service */
			th_sleep_ms(500);
			int p = -1;
			for (int i = 0; i < 3; i++)
				if (strcmp(vpeek(&e, NULL).primary, n[i]) == 0)
					p = i;
			assert_true(p >= 0);
			pbservice_server_free(sv[p]);
			WAIT_UNTIL(acked_primary_is_not(&e, n[p]), 10000);
			failovers++;
			sv[p] = start_server(&e, p + 1); /* back, empty */
			/* wait for a full pair again before the next restart */
			WAIT_UNTIL(vpeek(&e, &acked).backup[0] != '\0' && acked, 10000);
		}
	}
	th_sleep_ms(700);
	for (int i = 0; i < VR_CLIENTS; i++)
		atomic_store(&c[i].done, true);
	for (int i = 0; i < VR_CLIENTS; i++)
		pthread_join(t[i], NULL);
	/* final reads */
	pbservice_clerk *ck = new_clerk(&e);
	pbservice_clerk_set_timeout(ck, 10000);
	for (int k = 0; k < VR_KEYS; k++) {
		char key[8];
		snprintf(key, sizeof key, "k%d", k);
		int id = th_history_invoke(h, VR_CLIENTS, TH_OP_GET, key, NULL);
		char *v = NULL;
		int rc = pbservice_clerk_get(ck, key, &v);
		if (rc != DKV_OK)
			fail_msg("%s: final Get(%s): %s", tag, key, dkv_strerror(rc));
		th_history_return(h, id, v);
		free(v);
	}
	size_t ok, unknown, failed;
	th_history_counts(h, &ok, &unknown, &failed);
	fprintf(stderr, "%s: ops ok %zu, unknown %zu; view service restarts %d, failovers %d\n",
	        tag, ok, unknown, restarts, failovers);
	th_lin_assert_ok(h, 60000, tag);
	if (ok < 100)
		fail_msg("%s: only %zu ops completed: a quiet run proves nothing", tag, ok);
	assert_int_equal(restarts, 2);
	assert_int_equal(failovers, 1);
	th_history_free(h);
	pbservice_clerk_free(ck);
	for (int i = 0; i < 3; i++)
		pbservice_server_free(sv[i]);
	env_stop(&e);
	(void)nftw(root, vr_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_pbservice_view_service_restarted_on_its_directory_mid_workload(void **state)
{
	(void)state;
	vs_restart_workload("vsrdir", true);
}

static void test_pbservice_view_service_restarted_without_state_mid_workload(void **state)
{
	(void)state;
	vs_restart_workload("vsrmem", false);
}

/* ------------------------------------------------------------ sessions */

/* Open a session at `name` with a raw PB_OPEN; its id, or 0. */
static uint64_t raw_open(dkv_rpc_pool *pool, const char *name)
{
	pb_open_args a = {0};
	pb_open_reply r;
	memset(&r, 0, sizeof r);
	int rc = dkv_rpc_call(pool, name, PB_PROG, PB_VERS, PB_OPEN, (xdrproc_t)xdr_pb_open_args,
	                      &a, (xdrproc_t)xdr_pb_open_reply, &r, 5000);
	if (rc != DKV_OK)
		return 0;
	uint64_t id = r.err == DKV_OK ? r.id : 0;
	xdr_free((xdrproc_t)xdr_pb_open_reply, (char *)&r);
	return id;
}

/* Wait until the view is (a, b) or (b, a), acknowledged. */
static void wait_view_any_pair(pb_env *e, const char *a, const char *b)
{
	WAIT_UNTIL(view_is(e, a, b) || view_is(e, b, a), 10000);
}

/* One short-lived clerk: one Append, freed. */
static void one_clerk_append(pb_env *e, const char *key, const char *val)
{
	pbservice_clerk *ck = new_clerk(e);
	assert_int_equal(pbservice_clerk_append(ck, key, val), DKV_OK);
	pbservice_clerk_free(ck);
}

/* A raw Append at whoever the view service says is the primary: a server that
 * is not (or no longer) the primary, or cannot be reached, is asked again after
 * the view settles, at most 100 times. Under load a failover can happen at any
 * moment of a test; this sends the same (client, seq) again, which is what the
 * at-most-once rule must survive. The first other answer is returned. */
static int raw_append_at_primary(pb_env *e, dkv_rpc_pool *pool, const char *a, const char *b,
                                 const char *key, const char *val, uint64_t client, uint64_t seq)
{
	int rc = DKV_ERR_NET;
	for (int i = 0; i < 100; i++) {
		wait_view_any_pair(e, a, b);
		char p[DKV_NAME_MAX];
		vprimary(e, p);
		rc = raw_append(pool, p, key, val, client, seq);
		if (rc != DKV_ERR_WRONG_SERVER && rc != DKV_ERR_NET && rc != DKV_ERR_TIMEOUT &&
		    rc != DKV_ERR_KILLED)
			return rc;
	}
	return rc;
}

/* Session memory stays flat over many clients (at most PB_SESSION_CAP sessions on
 * the primary and the backup, live heap flat); the oldest clerk, whose session was
 * evicted, has its next write applied once through a new session; session ids
 * increase across a failover; a duplicate after failover is still detected; and a
 * retry under an evicted session gets DKV_ERR_EXPIRED, never a second application. */
static void test_pbservice_session_memory_stays_flat_over_many_clients(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "sess");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_server *s2 = start_server(&e, 2);
	wait_view(&e, n1, n2);
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);

	pbservice_clerk *oldest = new_clerk(&e);
	assert_int_equal(pbservice_clerk_append(oldest, "c", "f"), DKV_OK);
	uint64_t early = raw_open(pool, n1); /* a raw session, evicted below */
	assert_true(early > 0);
	assert_int_equal(raw_append(pool, n1, "r", "1", early, 1), DKV_OK);

	int warm = PB_SESSION_CAP + 100, more = th_under_valgrind() ? 200 : 2000;
	for (int i = 0; i < warm; i++)
		one_clerk_append(&e, "c", "x");
	size_t heap0 = th_live_heap();
	for (int i = 0; i < more; i++)
		one_clerk_append(&e, "c", "x");
	size_t heap1 = th_live_heap();
	assert_true(pbservice_server_session_count(s1) <= PB_SESSION_CAP);
	assert_true(pbservice_server_session_count(s2) <= PB_SESSION_CAP);
	/* A leak of even 32 bytes per client would exceed this. */
	if (heap1 > heap0 + 64 * 1024)
		fail_msg("live heap grew by %zu bytes over %d more clients", heap1 - heap0, more);

	/* The evicted raw session: a retry of its applied request is refused, not
	 * re-applied, at whichever server is primary (a loaded machine may fail
	 * over at any moment: raw_append_at_primary asks again). */
	assert_int_equal(raw_append_at_primary(&e, pool, n1, n2, "r", "1", early, 1), DKV_ERR_EXPIRED);
	assert_int_equal(raw_append_at_primary(&e, pool, n1, n2, "r", "2", early, 2), DKV_ERR_EXPIRED);
	pbservice_clerk *ck = new_clerk(&e);
	check(ck, "r", "1");
	/* The oldest clerk's session is gone too: its next write opens a new one by
	 * itself. Documented outcomes (dkv/pbservice.h): DKV_OK, applied exactly
	 * once; or, when a failover or a lost reply made the clerk retry and the
	 * retry met EXPIRED, DKV_ERR_EXPIRED, applied at most once — the value
	 * shows which, and never twice. After EXPIRED the clerk's following write
	 * must succeed in a new session of its own. */
	char *v = NULL;
	int rc = pbservice_clerk_append(oldest, "c", "g");
	if (rc != DKV_OK && rc != DKV_ERR_EXPIRED)
		fail_msg("the oldest clerk's write: %s", dkv_strerror(rc));
	assert_int_equal(pbservice_clerk_get(ck, "c", &v), DKV_OK);
	size_t len = strlen(v), base = 1 + (size_t)warm + (size_t)more;
	size_t gs = len - base; /* copies of "g" at the end */
	assert_true(len >= base);
	assert_int_equal(v[0], 'f');
	for (size_t i = 1; i < base; i++)
		assert_int_equal(v[i], 'x');
	for (size_t i = base; i < len; i++)
		assert_int_equal(v[i], 'g');
	if (rc == DKV_OK)
		assert_int_equal(gs, 1);
	else
		assert_true(gs <= 1);
	free(v);
	v = NULL;
	if (rc == DKV_ERR_EXPIRED) {
		fprintf(stderr, "sess: the oldest clerk's write met EXPIRED on a retry (applied %zu time)\n", gs);
		assert_int_equal(pbservice_clerk_append(oldest, "c", "h"), DKV_OK);
		assert_int_equal(pbservice_clerk_get(ck, "c", &v), DKV_OK);
		assert_int_equal(strlen(v), base + gs + 1);
		assert_int_equal(v[base + gs], 'h');
		for (size_t i = base; i < base + gs; i++)
			assert_int_equal(v[i], 'g');
		free(v);
		v = NULL;
	}

	/* A duplicate after failover, under an opened session; ids keep increasing. */
	char p[DKV_NAME_MAX];
	uint64_t id = 0;
	for (int i = 0; i < 100 && id == 0; i++) { /* as raw_append_at_primary */
		wait_view_any_pair(&e, n1, n2);
		vprimary(&e, p);
		id = raw_open(pool, p);
	}
	assert_true(id > early);
	assert_int_equal(raw_append_at_primary(&e, pool, n1, n2, "d", "x", id, 1), DKV_OK);
	wait_view_any_pair(&e, n1, n2);
	vprimary(&e, p);
	bool one = strcmp(p, n1) == 0;
	const char *q = one ? n2 : n1; /* the backup, primary after the failover */
	pbservice_server_kill(one ? s1 : s2);
	wait_view(&e, q, "");
	WAIT_UNTIL(raw_append(pool, q, "d", "x", id, 1) == DKV_OK, 10000);
	check(ck, "d", "x");
	assert_int_equal(raw_append(pool, q, "d", "y", id, 2), DKV_OK);
	check(ck, "d", "xy");
	uint64_t id2 = raw_open(pool, q);
	assert_true(id2 > id);

	dkv_rpc_pool_free(pool);
	pbservice_clerk_free(ck);
	pbservice_clerk_free(oldest);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	env_stop(&e);
}

/* A server never acts on a view numbered below one it has seen: a transfer or a
 * forward that names an older view (say, from a server a restarted view service
 * made primary of view 1) is refused, and the backup's data stays as it was. */
static void test_pbservice_server_never_acts_on_an_older_view(void **state)
{
	(void)state;
	pb_env e;
	env_start(&e, "older");
	char n1[DKV_NAME_MAX], n2[DKV_NAME_MAX], nx[DKV_NAME_MAX];
	pb_port(&e, n1, 1);
	pb_port(&e, n2, 2);
	pb_port(&e, nx, 9);
	pbservice_server *s1 = start_server(&e, 1);
	wait_view(&e, n1, "");
	pbservice_server *s2 = start_server(&e, 2);
	wait_view(&e, n1, n2);
	pbservice_clerk *ck = new_clerk(&e);
	assert_int_equal(pbservice_clerk_put(ck, "a", "1"), DKV_OK);
	assert_true(vpeek(&e, NULL).viewnum >= 2);
	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	assert_non_null(pool);

	/* An empty transfer "for view 1, primary nx, backup n2". */
	pb_transfer_args t;
	memset(&t, 0, sizeof t);
	t.view.viewnum = 1;
	t.view.primary = nx;
	t.view.backup = n2;
	pb_reply r = {0};
	assert_int_equal(dkv_rpc_call(pool, n2, PB_PROG, PB_VERS, PB_TRANSFER,
	                              (xdrproc_t)xdr_pb_transfer_args, &t, (xdrproc_t)xdr_pb_reply,
	                              &r, 5000),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_WRONG_SERVER);
	/* A forwarded Put under view 1. */
	pb_fwd_putappend_args f;
	memset(&f, 0, sizeof f);
	f.view = t.view;
	f.a.key = (char *)"a";
	f.a.value = (char *)"stale";
	f.a.op = PB_OP_PUT;
	f.a.client = 77;
	f.a.seq = 1;
	memset(&r, 0, sizeof r);
	assert_int_equal(dkv_rpc_call(pool, n2, PB_PROG, PB_VERS, PB_FWD_PUTAPPEND,
	                              (xdrproc_t)xdr_pb_fwd_putappend_args, &f,
	                              (xdrproc_t)xdr_pb_reply, &r, 5000),
	                 DKV_OK);
	assert_int_equal(r.err, DKV_ERR_WRONG_SERVER);

	/* n2 still holds the data: after a failover it serves "1". */
	pbservice_server_kill(s1);
	wait_view(&e, n2, "");
	check(ck, "a", "1");

	dkv_rpc_pool_free(pool);
	pbservice_clerk_free(ck);
	pbservice_server_free(s1);
	pbservice_server_free(s2);
	env_stop(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pbservice_basic_fail_follows_the_lab),
		cmocka_unit_test(test_pbservice_applies_appends_at_most_once_on_an_unreliable_server),
		cmocka_unit_test(test_pbservice_puts_right_after_backup_or_primary_failure_succeed),
		cmocka_unit_test(test_pbservice_backup_matches_primary_after_concurrent_puts_to_same_keys),
		cmocka_unit_test(test_pbservice_backup_matches_primary_after_concurrent_appends),
		cmocka_unit_test(test_pbservice_backup_matches_primary_after_concurrent_puts_unreliable),
		cmocka_unit_test(test_pbservice_survives_repeated_crashes_and_restarts),
		cmocka_unit_test(test_pbservice_survives_repeated_crashes_with_unreliable_appends),
		cmocka_unit_test(test_pbservice_old_primary_does_not_serve_gets),
		cmocka_unit_test(test_pbservice_partitioned_old_primary_does_not_complete_gets),
		cmocka_unit_test(test_pbservice_new_backup_receives_ten_thousand_keys),
		cmocka_unit_test(test_pbservice_duplicate_detection_survives_failover),
		cmocka_unit_test(test_pbservice_clerk_deadline_returns_timeout_without_a_primary),
		cmocka_unit_test(test_pbservice_restarted_lone_primary_on_the_same_path_never_serves),
		cmocka_unit_test(test_pbservice_rejects_oversized_keys_and_values),
		cmocka_unit_test(test_pbservice_kill_and_free_leave_no_threads_or_memory),
		cmocka_unit_test(test_pbservice_constructors_survive_allocation_failure_at_every_step),
		cmocka_unit_test(test_pbservice_store_keeps_every_key_across_growth),
		cmocka_unit_test(test_pbservice_store_out_of_memory_changes_nothing),
		cmocka_unit_test(test_pbservice_session_memory_stays_flat_over_many_clients),
		cmocka_unit_test(test_pbservice_server_never_acts_on_an_older_view),
		cmocka_unit_test(test_pbservice_view_service_restart_keeps_failover_working),
		cmocka_unit_test(test_pbservice_view_service_restart_never_makes_a_fresh_server_primary),
		cmocka_unit_test(test_pbservice_view_service_restarted_on_its_directory_mid_workload),
		cmocka_unit_test(test_pbservice_view_service_restarted_without_state_mid_workload),
	};
	return th_run_suite("pbservice", tests);
}
