/*
 * tests/test_viewservice.c — the view service suite.
 *
 * Sections: the lab's Test1 ported step by step with its timings and assertions;
 * the pure core driven with made-up times (ack rule, restart detection, idle
 * volunteers, stuck service); the RPC shell (counting, kill/free, bad input,
 * clerks against a dead server).
 */
#include "lib/harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dkv/viewservice.h"
#include "dkv_internal.h"
#include "../viewservice/vs_core.h"
#include "../viewservice/vs_server_internal.h"
#include "lib/view_watch.h"

#define PI VIEWSERVICE_PING_INTERVAL_MS
#define DP VIEWSERVICE_DEAD_PINGS

/* ------------------------------------------------------------ helpers */

/* assert_view: Get() through ck gives primary p, backup b and (n != 0) viewnum n,
 * and Primary() gives p — the lab's check(). */
static void assert_view(viewservice_clerk *ck, const char *p, const char *b, unsigned n)
{
	viewservice_view v;
	assert_int_equal(viewservice_clerk_get(ck, &v), DKV_OK);
	assert_string_equal(v.primary, p);
	assert_string_equal(v.backup, b);
	if (n != 0)
		assert_int_equal(v.viewnum, n);
	char buf[DKV_NAME_MAX];
	assert_int_equal(viewservice_clerk_primary(ck, buf, sizeof buf), DKV_OK);
	assert_string_equal(buf, p);
}

static viewservice_view ping(viewservice_clerk *ck, unsigned n)
{
	viewservice_view v;
	(void)viewservice_clerk_ping(ck, n, &v);
	return v;
}

static viewservice_view get(viewservice_clerk *ck)
{
	viewservice_view v;
	(void)viewservice_clerk_get(ck, &v);
	return v;
}

/* assert_core_view: the core's view is (n, p, b). */
static void assert_core_view(const vs_core *c, unsigned n, const char *p, const char *b)
{
	viewservice_view v;
	vs_core_get(c, &v);
	assert_int_equal(v.viewnum, n);
	assert_string_equal(v.primary, p);
	assert_string_equal(v.backup, b);
}

/* A raw unix-socket connection to path, or -1. */
static int raw_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return; /* the server may close on us: that is allowed */
		p += w;
		n -= (size_t)w;
	}
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

/* ------------------------------------------------------------ the lab's Test1 */

/* The lab's Test1: first primary, first backup, failover, restart, idle backup,
 * restarted primary, dead backup, the ack rule, and no uninitialized primary. */
static void test_viewservice_passes_every_step_of_the_lab_test1(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX], n2[DKV_NAME_MAX], n3[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "v", 0);
	th_port(n1, "viewserver", "1", 0);
	th_port(n2, "viewserver", "2", 0);
	th_port(n3, "viewserver", "3", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	view_watch *watch = watch_start(vs);
	viewservice_clerk *ck1 = viewservice_clerk_new(n1, vsh);
	viewservice_clerk *ck2 = viewservice_clerk_new(n2, vsh);
	viewservice_clerk *ck3 = viewservice_clerk_new(n3, vsh);
	assert_non_null(ck1);
	assert_non_null(ck2);
	assert_non_null(ck3);

	char buf[DKV_NAME_MAX];
	assert_int_equal(viewservice_clerk_primary(ck1, buf, sizeof buf), DKV_OK);
	assert_string_equal(buf, "");

	/* Test: First primary ... */
	for (int i = 0; i < DP * 2; i++) {
		viewservice_view v = ping(ck1, 0);
		if (strcmp(v.primary, n1) == 0)
			break;
		th_sleep_ms(PI);
	}
	assert_view(ck1, n1, "", 1);

	/* Test: First backup ... */
	{
		viewservice_view vx = get(ck1);
		for (int i = 0; i < DP * 2; i++) {
			ping(ck1, 1);
			viewservice_view v = ping(ck2, 0);
			if (strcmp(v.backup, n2) == 0)
				break;
			th_sleep_ms(PI);
		}
		assert_view(ck1, n1, n2, vx.viewnum + 1);
	}

	/* Test: Backup takes over if primary fails ... */
	{
		ping(ck1, 2);
		viewservice_view vx = ping(ck2, 2);
		for (int i = 0; i < DP * 2; i++) {
			viewservice_view v = ping(ck2, vx.viewnum);
			if (strcmp(v.primary, n2) == 0 && v.backup[0] == '\0')
				break;
			th_sleep_ms(PI);
		}
		assert_view(ck2, n2, "", vx.viewnum + 1);
	}

	/* Test: Restarted server becomes backup ... */
	{
		viewservice_view vx = get(ck2);
		ping(ck2, vx.viewnum);
		for (int i = 0; i < DP * 2; i++) {
			ping(ck1, 0);
			viewservice_view v = ping(ck2, vx.viewnum);
			if (strcmp(v.primary, n2) == 0 && strcmp(v.backup, n1) == 0)
				break;
			th_sleep_ms(PI);
		}
		assert_view(ck2, n2, n1, vx.viewnum + 1);
	}

	/* Test: Idle third server becomes backup if primary fails ... */
	{
		viewservice_view vx = get(ck2);
		ping(ck2, vx.viewnum);
		for (int i = 0; i < DP * 2; i++) {
			ping(ck3, 0);
			viewservice_view v = ping(ck1, vx.viewnum);
			if (strcmp(v.primary, n1) == 0 && strcmp(v.backup, n3) == 0)
				break;
			vx = v;
			th_sleep_ms(PI);
		}
		assert_view(ck1, n1, n3, vx.viewnum + 1);
	}

	/* Test: Restarted primary treated as dead ... */
	{
		viewservice_view vx = get(ck1);
		ping(ck1, vx.viewnum);
		for (int i = 0; i < DP * 2; i++) {
			ping(ck1, 0);
			ping(ck3, vx.viewnum);
			viewservice_view v = get(ck1);
			if (strcmp(v.primary, n1) != 0)
				break;
			th_sleep_ms(PI);
		}
		viewservice_view vy = get(ck3);
		assert_string_equal(vy.primary, n3);
	}

	/* Test: Dead backup is removed from view ... */
	{
		for (int i = 0; i < DP * 3; i++) {
			viewservice_view vx = get(ck3);
			ping(ck3, vx.viewnum);
			th_sleep_ms(PI);
		}
		viewservice_view v = get(ck3);
		assert_string_equal(v.primary, n3);
		assert_string_equal(v.backup, "");
	}

	/* Test: Viewserver waits for primary to ack view ... */
	{
		viewservice_view vx = get(ck1);
		for (int i = 0; i < DP * 3; i++) {
			ping(ck1, 0);
			ping(ck3, vx.viewnum);
			viewservice_view v = get(ck1);
			if (v.viewnum > vx.viewnum)
				break;
			th_sleep_ms(PI);
		}
		assert_view(ck1, n3, n1, vx.viewnum + 1);
		viewservice_view vy = get(ck1);
		/* ck3 is the primary, but it never acked: let it die; ck1 must not be promoted. */
		for (int i = 0; i < DP * 3; i++) {
			viewservice_view v = ping(ck1, vy.viewnum);
			if (v.viewnum > vy.viewnum)
				break;
			th_sleep_ms(PI);
		}
		assert_view(ck2, n3, n1, vy.viewnum);
	}

	/* Test: Uninitialized server can't become primary ... */
	{
		for (int i = 0; i < DP * 2; i++) {
			viewservice_view v = get(ck1);
			ping(ck1, v.viewnum);
			ping(ck2, 0);
			ping(ck3, v.viewnum);
			th_sleep_ms(PI);
		}
		for (int i = 0; i < DP * 2; i++) {
			ping(ck2, 0);
			th_sleep_ms(PI);
		}
		viewservice_view vz = get(ck2);
		assert_string_not_equal(vz.primary, n2);
	}

	watch_stop(watch);
	viewservice_clerk_free(ck1);
	viewservice_clerk_free(ck2);
	viewservice_clerk_free(ck3);
	viewservice_server_free(vs);
}

/* ------------------------------------------------------------ the pure core */

#define DEAD ((uint64_t)PI * DP)

/* The first server to ping becomes primary of view 1, with no backup. */
static void test_viewservice_core_makes_the_first_pinger_primary_of_view_one(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	assert_core_view(&c, 0, "", "");
	assert_int_equal(vs_core_ping(&c, "a", 0, 1000, &v), DKV_OK);
	assert_int_equal(v.viewnum, 1);
	assert_string_equal(v.primary, "a");
	assert_string_equal(v.backup, "");
	/* A second server does not become backup before the primary acks view 1. */
	vs_core_ping(&c, "b", 0, 1010, &v);
	assert_core_view(&c, 1, "a", "");
	vs_core_ping(&c, "a", 1, 1020, &v);
	assert_core_view(&c, 2, "a", "b");
	vs_core_destroy(&c);
}

/* Ack rule: no view change, whoever dies, until the primary pings the current viewnum. */
static void test_viewservice_core_waits_for_the_primary_ack_before_any_change(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 10, &v);
	vs_core_ping(&c, "b", 0, 20, &v);
	assert_core_view(&c, 2, "a", "b");
	/* a pings an older view only: not an ack. Then a dies. */
	vs_core_ping(&c, "a", 1, 30, &v);
	for (uint64_t t = 100; t <= 3000; t += 100) {
		vs_core_ping(&c, "b", 2, t, &v);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 2, "a", "b");
	/* a comes back and acks: now the view moves on (a alive, so nothing to do)... */
	vs_core_ping(&c, "a", 2, 3010, &v);
	assert_core_view(&c, 2, "a", "b");
	/* ...and when a dies after acking, b takes over. */
	for (uint64_t t = 3100; t <= 3000 + 2 * DEAD; t += 100) {
		vs_core_ping(&c, "b", 2, t, &v);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 3, "b", "");
	vs_core_destroy(&c);
}

/* A Ping(0) from the primary, after it pinged a view, is a restart: the backup takes
 * over and (UMich) the restarted server is its backup in that same view change. */
static void test_viewservice_core_treats_ping_zero_from_the_primary_as_a_restart(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 1, &v);
	vs_core_ping(&c, "b", 0, 2, &v);
	vs_core_ping(&c, "a", 2, 3, &v);
	vs_core_ping(&c, "b", 2, 4, &v);
	assert_core_view(&c, 2, "a", "b");
	/* No missed ping at all: the restart alone ends a's term as primary. */
	vs_core_ping(&c, "a", 0, 5, &v);
	assert_core_view(&c, 3, "b", "a");
	/* b acks; a's next Ping(0) (it has not learned view 3 yet) is no new restart. */
	vs_core_ping(&c, "b", 3, 6, &v);
	vs_core_ping(&c, "a", 0, 7, &v);
	vs_core_tick(&c, 8);
	assert_core_view(&c, 3, "b", "a");
	vs_core_destroy(&c);
}

/* A Ping(0) from the backup, after it pinged a view, is a restart: it leaves the view. */
static void test_viewservice_core_treats_ping_zero_from_the_backup_as_a_restart(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 1, &v);
	vs_core_ping(&c, "b", 0, 2, &v);
	vs_core_ping(&c, "b", 2, 3, &v);
	vs_core_ping(&c, "a", 2, 4, &v);
	vs_core_ping(&c, "b", 0, 5, &v);
	assert_core_view(&c, 3, "a", "");
	/* The primary acks view 3; the restarted b is taken back as a fresh backup. */
	vs_core_ping(&c, "a", 3, 6, &v);
	assert_core_view(&c, 4, "a", "b");
	vs_core_destroy(&c);
}

/* A server made backup by a tick still pings 0 once: that is not a restart. */
static void test_viewservice_core_does_not_take_a_new_backups_first_ping_zero_as_restart(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "b", 0, 1, &v); /* view 1 unacked: b stays idle */
	assert_core_view(&c, 1, "a", "");
	vs_core_ping(&c, "a", 1, 2, &v); /* ack: b becomes backup inside a's ping */
	assert_core_view(&c, 2, "a", "b");
	vs_core_ping(&c, "b", 0, 3, &v);
	vs_core_tick(&c, 4);
	assert_core_view(&c, 2, "a", "b");
	vs_core_destroy(&c);
}

/* With no backup, an idle server becomes backup; with a backup, idle servers wait. */
static void test_viewservice_core_uses_idle_volunteers_only_for_an_empty_backup_slot(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 1, &v);
	vs_core_ping(&c, "b", 0, 2, &v);
	vs_core_ping(&c, "c", 0, 3, &v);
	vs_core_ping(&c, "d", 0, 4, &v);
	assert_core_view(&c, 2, "a", "b");
	vs_core_ping(&c, "a", 2, 5, &v);
	vs_core_tick(&c, 6);
	assert_core_view(&c, 2, "a", "b");
	/* b dies: the earliest live idle server (c) replaces it in one step. */
	uint64_t t = 100;
	for (; t <= 100 + DEAD; t += 50) {
		vs_core_ping(&c, "a", 2, t, &v);
		vs_core_ping(&c, "c", 0, t, &v);
		vs_core_ping(&c, "d", 0, t, &v);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 3, "a", "c");
	/* the primary dies: c takes over and d fills the backup slot in the same step */
	vs_core_ping(&c, "a", 3, t, &v);
	uint64_t t0 = t;
	for (; t <= t0 + DEAD + 100; t += 50) {
		vs_core_ping(&c, "c", 3, t, &v);
		vs_core_ping(&c, "d", 0, t, &v);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 4, "c", "d");
	vs_core_destroy(&c);
}

/* With the primary and backup dead, an idle server is never made primary: the service waits. */
static void test_viewservice_core_never_makes_an_idle_server_primary(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 1, &v);
	vs_core_ping(&c, "b", 0, 2, &v);
	vs_core_ping(&c, "a", 2, 3, &v);
	vs_core_ping(&c, "c", 0, 4, &v);
	for (uint64_t t = 100; t <= 10 * DEAD; t += 100) {
		vs_core_ping(&c, "c", 0, t, &v);
		vs_core_tick(&c, t);
		assert_string_not_equal(v.primary, "c");
	}
	vs_core_get(&c, &v);
	assert_string_not_equal(v.primary, "c");
	/* A primary without a backup that dies leaves the service stuck too. */
	vs_core d;
	vs_core_init(&d, DEAD);
	vs_core_ping(&d, "a", 0, 0, &v);
	vs_core_ping(&d, "a", 1, 1, &v);
	for (uint64_t t = 2 * DEAD; t <= 10 * DEAD; t += 100) {
		vs_core_ping(&d, "x", 0, t, &v);
		vs_core_tick(&d, t);
	}
	assert_core_view(&d, 1, "a", "");
	vs_core_destroy(&c);
	vs_core_destroy(&d);
}

/* Servers silent for long and in no role are forgotten; the view's members are kept. */
static void test_viewservice_core_forgets_long_silent_idle_servers(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	vs_core_ping(&c, "a", 0, 0, &v);
	vs_core_ping(&c, "a", 1, 1, &v);
	vs_core_ping(&c, "b", 0, 2, &v);
	char name[32];
	for (int i = 0; i < 100; i++) {
		snprintf(name, sizeof name, "idle-%d", i);
		vs_core_ping(&c, name, 0, 3, &v);
	}
	assert_int_equal(c.nservers, 102);
	for (uint64_t t = 100; t <= 20 * DEAD; t += 100) {
		vs_core_ping(&c, "a", 2, t, &v);
		vs_core_ping(&c, "b", 2, t, &v);
		vs_core_tick(&c, t);
	}
	assert_int_equal(c.nservers, 2);
	assert_core_view(&c, 2, "a", "b");
	assert_int_equal(vs_core_ping(&c, "", 0, 0, &v), DKV_ERR_INVAL);
	vs_core_destroy(&c);
}

/* The step checker accepts legal view sequences and rejects each kind of illegal step. */
static void test_viewservice_core_step_checker_rejects_impossible_view_steps(void **state)
{
	(void)state;
	char why[128];
	viewservice_view v0 = {0, "", ""}, v1 = {1, "a", ""}, v2 = {2, "a", "b"}, v3 = {3, "b", "c"};
	assert_true(vs_core_check_step(&v0, &v1, why, sizeof why));
	assert_true(vs_core_check_step(&v1, &v2, why, sizeof why));
	assert_true(vs_core_check_step(&v2, &v3, why, sizeof why));
	assert_true(vs_core_check_step(&v1, &v3, why, sizeof why)); /* steps unseen between */
	assert_true(vs_core_check_step(&v3, &v3, why, sizeof why));
	assert_false(vs_core_check_step(&v3, &v2, why, sizeof why)); /* back */
	viewservice_view same_num = {3, "c", "b"};
	assert_false(vs_core_check_step(&v3, &same_num, why, sizeof why));
	viewservice_view dup = {4, "b", "b"};
	assert_false(vs_core_check_step(&v3, &dup, why, sizeof why));
	viewservice_view stranger = {4, "x", "b"};
	assert_false(vs_core_check_step(&v3, &stranger, why, sizeof why));
	viewservice_view nobody = {4, "", "b"};
	assert_false(vs_core_check_step(&v3, &nobody, why, sizeof why));
	viewservice_view ok = {4, "c", "x"};
	assert_true(vs_core_check_step(&v3, &ok, why, sizeof why));
}

/* ------------------------------------------------------------ UMich timing rules */

/* One ping interval of the core's life: every server in `live` pings (with the
 * viewnum it knows) and the ticker runs at the end of the interval. */
static void interval(vs_core *c, uint64_t *t, const char *const *live, const unsigned *nums,
                     int n)
{
	viewservice_view v;
	for (int i = 0; i < n; i++)
		vs_core_ping(c, live[i], nums[i], *t + (uint64_t)i, &v);
	*t += PI;
	vs_core_tick(c, *t);
}

/* The UMich EECS 491 sequence, each step with its exact view: view 1 from one
 * Ping(0); views change on the Ping itself; a restarted primary becomes the backup
 * in the same view change; a silent backup or primary is replaced after more than
 * DeadPings - 1 and at most DeadPings + 1 intervals. */
static void test_viewservice_core_follows_the_umich_sequence_view_by_view(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view v;
	uint64_t t = 1000;
	/* A single Ping(0): view 1 at once, and still view 1 after one interval. */
	vs_core_ping(&c, "a", 0, t, &v);
	assert_int_equal(v.viewnum, 1);
	assert_core_view(&c, 1, "a", "");
	t += PI;
	vs_core_tick(&c, t);
	assert_core_view(&c, 1, "a", "");
	/* a acks; b's Ping(0) makes it backup on that very ping (no tick needed). */
	vs_core_ping(&c, "a", 1, t, &v);
	assert_core_view(&c, 1, "a", "");
	vs_core_ping(&c, "b", 0, t + 1, &v);
	assert_int_equal(v.viewnum, 2);
	assert_core_view(&c, 2, "a", "b");
	vs_core_ping(&c, "b", 2, t + 2, &v);
	vs_core_ping(&c, "a", 2, t + 3, &v);
	assert_core_view(&c, 2, "a", "b");
	/* The primary restarts: after that one ping round the view is exactly
	 * (old backup, restarted server, n + 1), decided on the Ping(0) itself. */
	vs_core_ping(&c, "a", 0, t + 4, &v);
	assert_int_equal(v.viewnum, 3);
	assert_string_equal(v.primary, "b");
	assert_string_equal(v.backup, "a");
	vs_core_ping(&c, "b", 2, t + 5, &v); /* b has not seen view 3 yet: no ack */
	assert_core_view(&c, 3, "b", "a");
	t += PI;
	vs_core_tick(&c, t);
	assert_core_view(&c, 3, "b", "a");
	/* b acks view 3 (its last ping); a, still pinging 0 until it learns view 3,
	 * is no new restart. */
	uint64_t b_last = t;
	vs_core_ping(&c, "b", 3, t, &v);
	vs_core_ping(&c, "a", 0, t + 1, &v);
	assert_core_view(&c, 3, "b", "a");

	/* The primary b is silent from now on; a pings every interval. Not replaced
	 * DeadPings - 1 intervals after b's last ping, replaced by DeadPings + 1:
	 * view 4 = (a, ""). */
	const char *only_a[] = {"a"};
	unsigned n3[] = {3};
	while (t + PI <= b_last + (uint64_t)(DP - 1) * PI)
		interval(&c, &t, only_a, n3, 1);
	assert_core_view(&c, 3, "b", "a");
	while (t + PI <= b_last + (uint64_t)(DP + 1) * PI)
		interval(&c, &t, only_a, n3, 1);
	assert_core_view(&c, 4, "a", "");

	/* a acks 4; c's Ping(0) makes it backup on the ping: view 5 = (a, c). */
	vs_core_ping(&c, "a", 4, t, &v);
	vs_core_ping(&c, "c", 0, t + 1, &v);
	assert_core_view(&c, 5, "a", "c");
	vs_core_ping(&c, "a", 5, t + 2, &v);
	uint64_t c_last = t + 3;
	vs_core_ping(&c, "c", 5, c_last, &v);
	/* The backup c goes silent: removed after more than DP - 1, at most DP + 1 intervals. */
	unsigned n5[] = {5};
	while (t + PI <= c_last + (uint64_t)(DP - 1) * PI)
		interval(&c, &t, only_a, n5, 1);
	assert_core_view(&c, 5, "a", "c");
	while (t + PI <= c_last + (uint64_t)(DP + 1) * PI)
		interval(&c, &t, only_a, n5, 1);
	assert_core_view(&c, 6, "a", "");
	vs_core_destroy(&c);
}

/* ------------------------------------------------------------ lost state */

/* A report: "I hold view (n, p, b)" with or without its data. */
static vs_report rep(unsigned n, const char *p, const char *b, bool data)
{
	vs_report r;
	memset(&r, 0, sizeof r);
	r.view.viewnum = n;
	snprintf(r.view.primary, sizeof r.view.primary, "%s", p);
	snprintf(r.view.backup, sizeof r.view.backup, "%s", b);
	r.data = data;
	return r;
}

static void rping(vs_core *c, const char *me, unsigned viewnum, vs_report r, uint64_t t)
{
	viewservice_view v;
	vs_core_ping_report(c, me, viewnum, &r, t, &v);
}

/* Issue 14, schedule 1: the old primary and backup ping a restarted (state lost)
 * service first. It does not start again at view 1 (which both would ignore, and
 * failover would silently stop): it adopts the last view's primary at L + 2 once
 * the backup confirms L, and failover then works. */
static void test_viewservice_core_lost_state_adopts_the_old_pair_and_fails_over(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init_lost(&c, DEAD);
	uint64_t t = 0;
	rping(&c, "p", 7, rep(7, "p", "b", true), t++);
	assert_core_view(&c, 0, "", ""); /* the backup has not confirmed view 7 */
	rping(&c, "p", 7, rep(7, "p", "b", true), t++);
	assert_core_view(&c, 0, "", "");
	rping(&c, "b", 7, rep(7, "p", "b", true), t++);
	assert_core_view(&c, 9, "p", "");
	assert_false(c.acked);
	/* p learns view 9 and acks it; b (idle now) becomes backup on that ping. */
	rping(&c, "b", 7, rep(7, "p", "b", true), t++);
	rping(&c, "p", 9, rep(9, "p", "", true), t++);
	assert_core_view(&c, 10, "p", "b");
	rping(&c, "p", 10, rep(10, "p", "b", true), t++);
	rping(&c, "b", 10, rep(10, "p", "b", true), t++);
	/* p dies: b takes over — failover did not stop. */
	for (uint64_t end = t + DEAD + 2 * PI; t < end; t += PI) {
		rping(&c, "b", 10, rep(10, "p", "b", true), t);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 11, "b", "");
	vs_core_destroy(&c);
}

/* Issue 14, schedule 2: a fresh server pings a restarted service first. It is not
 * made primary (it would serve an empty store next to the old primary); the old
 * lone primary is adopted when it pings, and the fresh server becomes its backup. */
static void test_viewservice_core_lost_state_never_makes_a_fresh_server_primary(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init_lost(&c, DEAD);
	uint64_t t = 0;
	for (int i = 0; i < 20; i++, t += PI) {
		rping(&c, "f", 0, rep(0, "", "", false), t);
		vs_core_tick(&c, t);
		assert_core_view(&c, 0, "", "");
	}
	/* A lab clerk's ping (no report) changes nothing either. */
	viewservice_view v;
	vs_core_ping(&c, "g", 0, t, &v);
	assert_int_equal(v.viewnum, 0);
	/* The old lone primary of view 5 pings: adopted at 7, and f joins after the ack. */
	rping(&c, "p", 5, rep(5, "p", "", true), t);
	assert_core_view(&c, 7, "p", "");
	rping(&c, "f", 0, rep(0, "", "", false), t + 1);
	assert_core_view(&c, 7, "p", "");
	rping(&c, "p", 7, rep(7, "p", "", true), t + 2);
	assert_core_view(&c, 8, "p", "f");
	vs_core_destroy(&c);
}

/* What the recovering service must not adopt: a primary whose backup is silent or
 * restarted or holds another view, a primary that someone knows to be stale, an idle
 * server that reports the current view, a primary without data. */
static void test_viewservice_core_lost_state_adopts_nobody_it_cannot_vouch_for(void **state)
{
	(void)state;
	uint64_t t = 0;
	/* 1. the backup never pings: wait, however long */
	vs_core c;
	vs_core_init_lost(&c, DEAD);
	for (int i = 0; i < 100; i++, t += PI) {
		rping(&c, "p", 7, rep(7, "p", "b", true), t);
		vs_core_tick(&c, t);
	}
	assert_core_view(&c, 0, "", "");
	/* 2. the backup pings, but restarted (no memory of view 7): still nothing */
	rping(&c, "b", 0, rep(0, "", "", false), t);
	rping(&c, "p", 7, rep(7, "p", "b", true), t + 1);
	assert_core_view(&c, 0, "", "");
	vs_core_destroy(&c);

	/* 3. the backup holds a later view (it became primary of 8 with c): p is stale */
	vs_core_init_lost(&c, DEAD);
	rping(&c, "p", 7, rep(7, "p", "b", true), 0);
	rping(&c, "b", 8, rep(8, "b", "c", true), 1);
	assert_core_view(&c, 0, "", "");
	/* ...and b is not adopted until c confirms view 8 */
	rping(&c, "x", 8, rep(8, "b", "c", false), 2); /* an idle server: not a holder */
	assert_core_view(&c, 0, "", "");
	rping(&c, "c", 8, rep(8, "b", "c", true), 3);
	assert_core_view(&c, 10, "b", "");
	vs_core_destroy(&c);

	/* 4. a lone primary of view 5, but someone has seen view 7: p may be stale */
	vs_core_init_lost(&c, DEAD);
	rping(&c, "i", 7, rep(7, "q", "r", false), 0);
	rping(&c, "p", 5, rep(5, "p", "", true), 1);
	assert_core_view(&c, 0, "", "");
	viewservice_view v;
	vs_core_ping(&c, "p", 5, 2, &v); /* a ping without a report is no claim either */
	assert_core_view(&c, 0, "", "");
	vs_core_destroy(&c);

	/* 5. a primary without its data (restarted after the view was made) */
	vs_core_init_lost(&c, DEAD);
	rping(&c, "p", 5, rep(5, "p", "", false), 0);
	assert_core_view(&c, 0, "", "");
	vs_core_destroy(&c);

	/* 6. a fresh (plain) service whose first ping names a view: it lost its state */
	vs_core_init(&c, DEAD);
	vs_core_ping(&c, "p", 4, 0, &v);
	assert_int_equal(v.viewnum, 0);
	assert_true(c.recovering);
	rping(&c, "f", 0, rep(0, "", "", false), 1);
	assert_core_view(&c, 0, "", "");
	rping(&c, "p", 4, rep(4, "p", "", true), 2);
	assert_core_view(&c, 6, "p", "");
	vs_core_destroy(&c);
}

/* A view restored from disk is exactly the one saved, and its members get dead_ms
 * to ping before they count as dead; a restored primary's Ping(0) is a restart. */
static void test_viewservice_core_restore_resumes_at_the_saved_view(void **state)
{
	(void)state;
	vs_core c;
	vs_core_init(&c, DEAD);
	viewservice_view saved = {6, "p", "b"};
	vs_core_restore(&c, &saved, true, 6, 6, 5000);
	assert_core_view(&c, 6, "p", "b");
	assert_true(c.acked);
	vs_core_tick(&c, 5000 + DEAD - 1);
	assert_core_view(&c, 6, "p", "b");
	viewservice_view v;
	vs_core_ping(&c, "p", 0, 5000 + DEAD - 1, &v); /* p restarted meanwhile */
	assert_core_view(&c, 7, "b", "p");
	vs_core_destroy(&c);
}

/* ------------------------------------------------------------ the RPC shell */

/* Restart detection over RPC: a backup's Ping(0) drops it; a primary's Ping(0) promotes the backup. */
static void test_viewservice_detects_restarts_of_primary_and_backup_over_rpc(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "rv", 0);
	th_port(n1, "viewserver", "r1", 0);
	th_port(n2, "viewserver", "r2", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	viewservice_clerk *ck1 = viewservice_clerk_new(n1, vsh);
	viewservice_clerk *ck2 = viewservice_clerk_new(n2, vsh);
	viewservice_view v = ping(ck1, 0);
	assert_int_equal(v.viewnum, 1);
	ping(ck1, 1);
	v = ping(ck2, 0);
	assert_int_equal(v.viewnum, 2);
	ping(ck2, 2);
	ping(ck1, 2);
	/* backup restart */
	v = ping(ck2, 0);
	assert_int_equal(v.viewnum, 3);
	assert_string_equal(v.primary, n1);
	assert_string_equal(v.backup, "");
	v = ping(ck1, 3); /* ack: the restarted server comes back as backup */
	assert_int_equal(v.viewnum, 4);
	assert_string_equal(v.backup, n2);
	ping(ck2, 4);
	ping(ck1, 4);
	/* primary restart: the backup takes over, the restarted server is its backup */
	v = ping(ck1, 0);
	assert_int_equal(v.viewnum, 5);
	assert_string_equal(v.primary, n2);
	assert_string_equal(v.backup, n1);
	assert_view(ck1, n2, n1, 5);
	viewservice_clerk_free(ck1);
	viewservice_clerk_free(ck2);
	viewservice_server_free(vs);
}

/* Every RPC received is counted, and the count still reads after kill. */
static void test_viewservice_counts_every_rpc_it_receives(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "cv", 0);
	th_port(n1, "viewserver", "c1", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	assert_int_equal(viewservice_server_rpc_count(vs), 0);
	viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
	for (int i = 0; i < 30; i++)
		ping(ck, 0);
	for (int i = 0; i < 20; i++)
		get(ck);
	char buf[DKV_NAME_MAX];
	for (int i = 0; i < 10; i++)
		viewservice_clerk_primary(ck, buf, sizeof buf);
	assert_int_equal(viewservice_server_rpc_count(vs), 60);
	viewservice_server_kill(vs);
	assert_int_equal(viewservice_server_rpc_count(vs), 60);
	viewservice_clerk_free(ck);
	viewservice_server_free(vs);
}

/* Kill is idempotent, free accepts NULL, and start/kill/free cycles leave no thread or heap behind. */
static void test_viewservice_kill_and_free_leave_no_threads_or_memory(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "kv", 0);
	th_port(n1, "viewserver", "k1", 0);
	viewservice_server_free(NULL);
	viewservice_clerk_free(NULL);
	viewservice_server_kill(NULL);

	/* Warm up: libtirpc's one-time globals. */
	for (int i = 0; i < 3; i++) {
		viewservice_server *vs = viewservice_server_start(vsh);
		assert_non_null(vs);
		viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
		ping(ck, 0);
		viewservice_clerk_free(ck);
		viewservice_server_free(vs);
	}
	int threads0 = settled_thread_count();
	size_t heap0 = th_live_heap();
	int cycles = th_under_valgrind() ? 5 : 30;
	for (int i = 0; i < cycles; i++) {
		viewservice_server *vs = viewservice_server_start(vsh);
		assert_non_null(vs);
		viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
		viewservice_view v = ping(ck, 0);
		assert_string_equal(v.primary, n1);
		assert_true(th_thread_count() > threads0);
		viewservice_server_kill(vs);
		viewservice_server_kill(vs);
		/* A joined thread leaves /proc's count a moment after pthread_join returns. */
		WAIT_UNTIL(th_thread_count() <= threads0, 5000);
		/* After kill: calls fail with the empty view. */
		assert_int_equal(viewservice_clerk_ping(ck, 1, &v), DKV_ERR_NET);
		assert_int_equal(v.viewnum, 0);
		viewservice_clerk_free(ck);
		viewservice_server_free(vs);
	}
	WAIT_UNTIL(th_thread_count() <= threads0, 5000);
	size_t heap1 = th_live_heap();
	/* A leak of even one server struct per cycle would exceed this. */
	assert_true(heap1 <= heap0 + 16 * 1024);
}

/* Garbage bytes, a truncated record, an oversized record and a stalled half record
 * do not crash the server or stop it serving others. */
static void test_viewservice_keeps_serving_after_garbage_on_its_socket(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "gv", 0);
	th_port(n1, "viewserver", "g1", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
	viewservice_view v = ping(ck, 0);
	assert_int_equal(v.viewnum, 1);

	/* 1. plain junk, then close */
	int fd = raw_connect(vsh);
	assert_true(fd >= 0);
	const char junk[] = "GET / HTTP/1.0\r\n\r\nthis is not an RPC at all \x01\x02\x03\xff\xfe";
	write_all(fd, junk, sizeof junk);
	close(fd);

	/* 2. a record header announcing 100 bytes, 12 sent, then close */
	fd = raw_connect(vsh);
	assert_true(fd >= 0);
	unsigned char trunc[16] = {0x80, 0, 0, 100, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2};
	write_all(fd, trunc, sizeof trunc);
	close(fd);

	/* 3. a complete record of garbage (a call message that does not decode) */
	fd = raw_connect(vsh);
	assert_true(fd >= 0);
	unsigned char rec[4 + 24] = {0x80, 0, 0, 24};
	for (size_t i = 4; i < sizeof rec; i++)
		rec[i] = (unsigned char)(0xa5 ^ i);
	write_all(fd, rec, sizeof rec);
	close(fd);

	/* 4. a header announcing an oversized (2 GiB - 1) fragment, a little data, close */
	fd = raw_connect(vsh);
	assert_true(fd >= 0);
	unsigned char big[12] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8};
	write_all(fd, big, sizeof big);
	close(fd);

	/* 5. half a record, then stall (kept open) while others are served */
	int stall = raw_connect(vsh);
	assert_true(stall >= 0);
	unsigned char half[10] = {0x80, 0, 0, 40, 0, 0, 0, 7, 0, 0};
	write_all(stall, half, sizeof half);

	for (int i = 0; i < 20; i++) {
		assert_int_equal(viewservice_clerk_get(ck, &v), DKV_OK);
		assert_string_equal(v.primary, n1);
	}
	viewservice_clerk *ck2 = viewservice_clerk_new("", vsh);
	assert_int_equal(viewservice_clerk_get(ck2, &v), DKV_OK);
	assert_string_equal(v.primary, n1);
	viewservice_clerk_free(ck2);

	/* Kill must not hang on the stalled connection. */
	viewservice_server_kill(vs);
	close(stall);
	viewservice_clerk_free(ck);
	viewservice_server_free(vs);
}

/* Clerk calls to a dead or absent server return DKV_ERR_NET and the empty view. */
static void test_viewservice_clerk_calls_to_a_dead_server_return_net_error_and_empty_view(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX], none[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "dv", 0);
	th_port(n1, "viewserver", "d1", 0);
	th_port(none, "viewserver", "nobody", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
	viewservice_view v = ping(ck, 0);
	assert_string_equal(v.primary, n1);
	viewservice_server_kill(vs);

	memset(&v, 'z', sizeof v);
	assert_int_equal(viewservice_clerk_ping(ck, 1, &v), DKV_ERR_NET);
	assert_int_equal(v.viewnum, 0);
	assert_string_equal(v.primary, "");
	assert_string_equal(v.backup, "");
	memset(&v, 'z', sizeof v);
	assert_int_equal(viewservice_clerk_get(ck, &v), DKV_ERR_NET);
	assert_int_equal(v.viewnum, 0);
	assert_string_equal(v.primary, "");
	assert_string_equal(v.backup, "");
	char buf[DKV_NAME_MAX] = "junk";
	assert_int_equal(viewservice_clerk_primary(ck, buf, sizeof buf), DKV_ERR_NET);
	assert_string_equal(buf, "");

	viewservice_clerk *ck2 = viewservice_clerk_new("x", none);
	assert_non_null(ck2);
	strcpy(buf, "junk");
	assert_int_equal(viewservice_clerk_primary(ck2, buf, sizeof buf), DKV_ERR_NET);
	assert_string_equal(buf, "");
	assert_int_equal(viewservice_clerk_get(ck2, &v), DKV_ERR_NET);
	assert_int_equal(v.viewnum, 0);
	viewservice_clerk_free(ck2);
	viewservice_clerk_free(ck);
	viewservice_server_free(vs);
}

/* Bad arguments: NULL or over-long names fail with EINVAL; a short buffer is refused. */
static void test_viewservice_rejects_bad_names_and_short_buffers(void **state)
{
	(void)state;
	errno = 0;
	assert_null(viewservice_server_start(NULL));
	assert_int_equal(errno, EINVAL);
	char longname[DKV_NAME_MAX + 10];
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	errno = 0;
	assert_null(viewservice_server_start(longname));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(viewservice_clerk_new("me", NULL));
	assert_int_equal(errno, EINVAL);

	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "bv", 0);
	th_port(n1, "viewserver", "b1", 0);
	viewservice_server *vs = viewservice_server_start(vsh);
	assert_non_null(vs);
	viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
	ping(ck, 0);
	char small[4] = "abc";
	assert_int_equal(viewservice_clerk_primary(ck, small, sizeof small), DKV_ERR_INVAL);
	assert_string_equal(small, "");
	/* A clerk without a name may get, not ping. */
	viewservice_clerk *anon = viewservice_clerk_new(NULL, vsh);
	viewservice_view v;
	assert_int_equal(viewservice_clerk_ping(anon, 0, &v), DKV_ERR_INVAL);
	assert_int_equal(viewservice_clerk_get(anon, &v), DKV_OK);
	assert_string_equal(v.primary, n1);
	viewservice_clerk_free(anon);
	viewservice_clerk_free(ck);
	viewservice_server_free(vs);
}

/* Start and clerk_new fail cleanly (NULL, ENOMEM, nothing leaked) at every allocation, then succeed. */
static void test_viewservice_constructors_survive_allocation_failure_at_every_step(void **state)
{
	(void)state;
	char vsh[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "oom", 0);
	bool started = false;
	for (unsigned long n = 1; n < 200 && !started; n++) {
		dkv_alloc_fail_after(n);
		errno = 0;
		viewservice_server *vs = viewservice_server_start(vsh);
		int err = errno;
		dkv_alloc_fail_after(0);
		if (vs == NULL) {
			assert_int_equal(err, ENOMEM);
			continue;
		}
		started = true;
		viewservice_clerk *ck = NULL;
		for (unsigned long m = 1; m < 200 && ck == NULL; m++) {
			dkv_alloc_fail_after(m);
			errno = 0;
			ck = viewservice_clerk_new("x", vsh);
			err = errno;
			dkv_alloc_fail_after(0);
			if (ck == NULL)
				assert_int_equal(err, ENOMEM);
		}
		assert_non_null(ck);
		viewservice_view v;
		assert_int_equal(viewservice_clerk_ping(ck, 0, &v), DKV_OK);
		assert_string_equal(v.primary, "x");
		viewservice_clerk_free(ck);
		viewservice_server_free(vs);
	}
	assert_true(started);
}

/* ------------------------------------------------------------ the data directory */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A fresh per-test temporary directory (removed by rm_tree). */
static char *tmp_tree(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/dkv-vstest-XXXXXX");
	assert_non_null(mkdtemp(buf));
	return buf;
}

static void rm_tree(const char *path)
{
	(void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void assert_peek(viewservice_server *vs, unsigned n, const char *p, const char *b,
                        bool acked)
{
	viewservice_view v;
	bool a;
	viewservice_server_peek(vs, &v, &a);
	assert_int_equal(v.viewnum, n);
	assert_string_equal(v.primary, p);
	assert_string_equal(v.backup, b);
	assert_int_equal(a, acked);
}

/* Started again on its directory (fsync'ed or not), the service resumes at exactly
 * the view it had handed out and whether it was acknowledged; restart detection of
 * the restored primary works across the restart. */
static void test_viewservice_resumes_at_the_exact_view_from_its_directory(void **state)
{
	(void)state;
	char root[64], dir[128];
	tmp_tree(root, sizeof root);
	snprintf(dir, sizeof dir, "%s/vs", root); /* created by the start */
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "dirv", 0);
	th_port(n1, "viewserver", "dir1", 0);
	th_port(n2, "viewserver", "dir2", 0);
	for (int no_fsync = 0; no_fsync <= 1; no_fsync++) {
		rm_tree(dir);
		dkv_server_opts o = {.dir = dir, .no_fsync = no_fsync};
		viewservice_server *vs = viewservice_server_start_opts(vsh, &o);
		assert_non_null(vs);
		viewservice_clerk *ck1 = viewservice_clerk_new(n1, vsh);
		viewservice_clerk *ck2 = viewservice_clerk_new(n2, vsh);
		ping(ck1, 0);
		ping(ck1, 1);
		viewservice_view v = ping(ck2, 0);
		assert_int_equal(v.viewnum, 2);
		assert_peek(vs, 2, n1, n2, false); /* revealed, not acknowledged: on disk */
		viewservice_server_free(vs);
		vs = viewservice_server_start_opts(vsh, &o);
		assert_non_null(vs);
		assert_peek(vs, 2, n1, n2, false);
		ping(ck2, 2);
		ping(ck1, 2);
		assert_peek(vs, 2, n1, n2, true);
		viewservice_server_free(vs);

		/* restart flag with a directory that holds state: the directory wins */
		o.restart = true;
		vs = viewservice_server_start_opts(vsh, &o);
		assert_non_null(vs);
		assert_peek(vs, 2, n1, n2, true);
		assert_view(ck1, n1, n2, 2);
		/* n1 restarted while the service was down: its Ping(0) is a restart */
		v = ping(ck1, 0);
		assert_int_equal(v.viewnum, 3);
		assert_string_equal(v.primary, n2);
		assert_string_equal(v.backup, n1);
		viewservice_server_free(vs);
		vs = viewservice_server_start_opts(vsh, &o);
		assert_non_null(vs);
		assert_peek(vs, 3, n2, n1, false);
		viewservice_server_free(vs);
		viewservice_clerk_free(ck1);
		viewservice_clerk_free(ck2);
	}
	rm_tree(root);
}

/* A directory that cannot be used: NULL and errno — EBUSY (in use, released by
 * kill), EINVAL (another server's, or not dkv's), EIO (damaged state), ENOTDIR. */
static void test_viewservice_refuses_a_directory_it_cannot_use(void **state)
{
	(void)state;
	char root[64], dir[128], path[256];
	tmp_tree(root, sizeof root);
	snprintf(dir, sizeof dir, "%s/vs", root);
	char vsh[DKV_NAME_MAX], vsh2[DKV_NAME_MAX], n1[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "badv", 0);
	th_port(vsh2, "viewserver", "badw", 0);
	th_port(n1, "viewserver", "bad1", 0);
	dkv_server_opts o = {.dir = dir};
	viewservice_server *vs = viewservice_server_start_opts(vsh, &o);
	assert_non_null(vs);
	viewservice_clerk *ck = viewservice_clerk_new(n1, vsh);
	ping(ck, 0);
	errno = 0;
	assert_null(viewservice_server_start_opts(vsh, &o));
	assert_int_equal(errno, EBUSY);
	viewservice_server_kill(vs); /* releases the directory */
	viewservice_server *vs2 = viewservice_server_start_opts(vsh, &o);
	assert_non_null(vs2);
	assert_peek(vs2, 1, n1, "", false);
	viewservice_server_free(vs2);
	viewservice_server_free(vs);

	/* another server's directory */
	errno = 0;
	assert_null(viewservice_server_start_opts(vsh2, &o));
	assert_int_equal(errno, EINVAL);

	/* damaged state: one byte flipped */
	snprintf(path, sizeof path, "%s/STATE", dir);
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	assert_int_equal(fseek(f, 20, SEEK_SET), 0);
	int c = fgetc(f);
	assert_int_equal(fseek(f, 20, SEEK_SET), 0);
	fputc(c ^ 0x40, f);
	fclose(f);
	errno = 0;
	assert_null(viewservice_server_start_opts(vsh, &o));
	assert_int_equal(errno, EIO);

	/* not a dkv directory; a file where the directory should be */
	char other[128];
	snprintf(other, sizeof other, "%s/other", root);
	assert_int_equal(mkdir(other, 0700), 0);
	snprintf(path, sizeof path, "%s/notes.txt", other);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	dkv_server_opts o2 = {.dir = other};
	errno = 0;
	assert_null(viewservice_server_start_opts(vsh, &o2));
	assert_int_equal(errno, EINVAL);
	dkv_server_opts o3 = {.dir = path};
	errno = 0;
	assert_null(viewservice_server_start_opts(vsh, &o3));
	assert_int_equal(errno, ENOTDIR);
	viewservice_clerk_free(ck);
	rm_tree(root);
}

/* Restarted without its state (restart, no directory; or a fresh directory), the
 * service hands out no view to pings without a report, however long; a fresh
 * directory records that, so a later start on it without the flag still knows. */
static void test_viewservice_restarted_without_state_hands_out_no_view(void **state)
{
	(void)state;
	char root[64], dir[128];
	tmp_tree(root, sizeof root);
	snprintf(dir, sizeof dir, "%s/vs", root);
	char vsh[DKV_NAME_MAX], n1[DKV_NAME_MAX], n2[DKV_NAME_MAX];
	th_port(vsh, "viewserver", "lostv", 0);
	th_port(n1, "viewserver", "lost1", 0);
	th_port(n2, "viewserver", "lost2", 0);
	dkv_server_opts mem = {.restart = true};
	dkv_server_opts disk = {.dir = dir, .restart = true};
	dkv_server_opts disk_plain = {.dir = dir};
	const dkv_server_opts *starts[] = {&mem, &disk, &disk_plain};
	for (int k = 0; k < 3; k++) {
		viewservice_server *vs = viewservice_server_start_opts(vsh, starts[k]);
		assert_non_null(vs);
		viewservice_clerk *ck1 = viewservice_clerk_new(n1, vsh);
		viewservice_clerk *ck2 = viewservice_clerk_new(n2, vsh);
		for (int i = 0; i < 2 * DP; i++) {
			viewservice_view v = ping(ck1, 0);
			assert_int_equal(v.viewnum, 0);
			v = ping(ck2, 0);
			assert_int_equal(v.viewnum, 0);
			th_sleep_ms(PI / 2);
		}
		assert_view(ck1, "", "", 0);
		assert_peek(vs, 0, "", "", false);
		viewservice_clerk_free(ck1);
		viewservice_clerk_free(ck2);
		viewservice_server_free(vs);
	}
	rm_tree(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_viewservice_passes_every_step_of_the_lab_test1),
		cmocka_unit_test(test_viewservice_core_makes_the_first_pinger_primary_of_view_one),
		cmocka_unit_test(test_viewservice_core_waits_for_the_primary_ack_before_any_change),
		cmocka_unit_test(test_viewservice_core_treats_ping_zero_from_the_primary_as_a_restart),
		cmocka_unit_test(test_viewservice_core_treats_ping_zero_from_the_backup_as_a_restart),
		cmocka_unit_test(test_viewservice_core_does_not_take_a_new_backups_first_ping_zero_as_restart),
		cmocka_unit_test(test_viewservice_core_uses_idle_volunteers_only_for_an_empty_backup_slot),
		cmocka_unit_test(test_viewservice_core_never_makes_an_idle_server_primary),
		cmocka_unit_test(test_viewservice_core_forgets_long_silent_idle_servers),
		cmocka_unit_test(test_viewservice_core_step_checker_rejects_impossible_view_steps),
		cmocka_unit_test(test_viewservice_core_follows_the_umich_sequence_view_by_view),
		cmocka_unit_test(test_viewservice_core_lost_state_adopts_the_old_pair_and_fails_over),
		cmocka_unit_test(test_viewservice_core_lost_state_never_makes_a_fresh_server_primary),
		cmocka_unit_test(test_viewservice_core_lost_state_adopts_nobody_it_cannot_vouch_for),
		cmocka_unit_test(test_viewservice_core_restore_resumes_at_the_saved_view),
		cmocka_unit_test(test_viewservice_detects_restarts_of_primary_and_backup_over_rpc),
		cmocka_unit_test(test_viewservice_counts_every_rpc_it_receives),
		cmocka_unit_test(test_viewservice_kill_and_free_leave_no_threads_or_memory),
		cmocka_unit_test(test_viewservice_keeps_serving_after_garbage_on_its_socket),
		cmocka_unit_test(test_viewservice_clerk_calls_to_a_dead_server_return_net_error_and_empty_view),
		cmocka_unit_test(test_viewservice_rejects_bad_names_and_short_buffers),
		cmocka_unit_test(test_viewservice_constructors_survive_allocation_failure_at_every_step),
		cmocka_unit_test(test_viewservice_resumes_at_the_exact_view_from_its_directory),
		cmocka_unit_test(test_viewservice_refuses_a_directory_it_cannot_use),
		cmocka_unit_test(test_viewservice_restarted_without_state_hands_out_no_view),
	};
	return th_run_suite("viewservice", tests);
}
