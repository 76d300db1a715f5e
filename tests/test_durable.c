/*
 * tests/test_durable.c — kvpaxos replicas with data directories (issue 13):
 * paxosrsm's snapshots, Done rule, replay and compaction, through the public
 * kvpaxos_server_start_opts.
 *
 *   - the whole group freed and started again on its directories keeps every
 *     acknowledged write;
 *   - one replica restarted on its directory votes at once (no rejoin);
 *   - a lost disk (rm -rf + mkdir, restart) rejoins without voting and
 *     catches up;
 *   - bad directories: locked (EBUSY), another replica's (EINVAL), a
 *     corrupted snapshot (EIO) — never an empty start;
 *   - disk use after the lab's 100–119 overwrites of a 1 KB value stays
 *     within the lab's bound (3 replicas ≤ 20,000 bytes);
 *   - power cuts in process (tests/lib/simdisk.h under every directory via
 *     dkv_fs_set_default): a short workload cut at seeded write boundaries,
 *     all replicas restarted, and checked: every acknowledged op survived,
 *     the replicas agree, the history is linearizable; and the control: with
 *     fsync a no-op the same check fails (the harness bites).
 * Directories live under a per-test temporary directory that the test removes.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/harness.h"
#include "lib/history.h"
#include "lib/linearizability.h"
#include "lib/simdisk.h"

#include "dkv/kvpaxos.h"
#include "dkv/paxos.h"
#include "dkv/paxosrsm.h"
#include "dkv_internal.h"
#include "storage.h"
#include "../kvpaxos/kv_internal.h"
#include "../paxos/paxos_internal.h"
#include "../paxos/rsm_disk.h"

#define N 3

/* ------------------------------------------------------------ files */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_total;
static int du_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p;
	(void)ftw;
	if (flag == FTW_F && S_ISREG(sb->st_mode)) du_total += (uint64_t)sb->st_size;
	return 0;
}

/* bytes of every regular file under path (the lab's space()) */
static uint64_t disk_use(const char *path)
{
	du_total = 0;
	nftw(path, du_cb, 16, FTW_PHYS);
	return du_total;
}

/* ------------------------------------------------------------ cluster */

typedef struct {
	char root[DKV_NAME_MAX];
	char ports[N][DKV_NAME_MAX];
	const char *portp[N];
	char dirs[N][DKV_NAME_MAX + 16];
	kvpaxos_server *kv[N];
	bool sim;               /* dirs are on the simulated disk */
} dcluster;

static void dc_init(dcluster *c, const char *tag, bool sim)
{
	memset(c, 0, sizeof *c);
	c->sim = sim;
	snprintf(c->root, sizeof c->root, "%s/durable-%d-%s", th_dir(), (int)getpid(), tag);
	if (!sim) {
		rm_rf(c->root);
		assert_int_equal(mkdir(c->root, 0700), 0);
	}
	for (int i = 0; i < N; i++) {
		th_port(c->ports[i], "dur", tag, i);
		c->portp[i] = c->ports[i];
		if (sim)
			snprintf(c->dirs[i], sizeof c->dirs[i], "/d%d", i);
		else
			snprintf(c->dirs[i], sizeof c->dirs[i], "%s/r%d", c->root, i);
	}
}

static kvpaxos_server *dc_try_start(dcluster *c, int i, bool restart)
{
	dkv_server_opts o = {0};
	o.dir = c->dirs[i];
	o.restart = restart;
	return kvpaxos_server_start_opts(c->portp, N, i, &o);
}

static void dc_start(dcluster *c, int i, bool restart)
{
	c->kv[i] = dc_try_start(c, i, restart);
	if (!c->kv[i]) fail_msg("replica %d did not start on %s: %s", i, c->dirs[i], strerror(errno));
}

static void dc_stop(dcluster *c, int i)
{
	kvpaxos_server_free(c->kv[i]);
	c->kv[i] = NULL;
}

static void dc_free(dcluster *c)
{
	for (int i = 0; i < N; i++) dc_stop(c, i);
	if (!c->sim) rm_rf(c->root);
}

static paxosrsm_info info_of(kvpaxos_server *kv)
{
	paxosrsm_info in;
	paxosrsm_get_info(kvpaxos_server_rsm(kv), &in);
	return in;
}

static bool role_is(kvpaxos_server *kv, paxosrsm_role r)
{
	return info_of(kv).role == r;
}

static void must_put(kvpaxos_clerk *ck, const char *k, const char *v)
{
	int rc = kvpaxos_clerk_put(ck, k, v);
	if (rc != DKV_OK) fail_msg("Put(%s): %s", k, dkv_strerror(rc));
}

static void must_append(kvpaxos_clerk *ck, const char *k, const char *v)
{
	int rc = kvpaxos_clerk_append(ck, k, v);
	if (rc != DKV_OK) fail_msg("Append(%s): %s", k, dkv_strerror(rc));
}

#define check(ck, k, want) check_at(__FILE__, __LINE__, (ck), (k), (want))
static void check_at(const char *file, int line, kvpaxos_clerk *ck, const char *k,
                     const char *want)
{
	char *v = NULL;
	int rc = kvpaxos_clerk_get(ck, k, &v);
	if (rc != DKV_OK) fail_msg("%s:%d: Get(%s): %s", file, line, k, dkv_strerror(rc));
	if (strcmp(v, want) != 0) {
		char head[64];
		snprintf(head, sizeof head, "%s", v);
		free(v);
		fail_msg("%s:%d: Get(%s) = \"%s\"... (len %zu), want len %zu", file, line, k, head,
		         strlen(head), strlen(want));
	}
	free(v);
}

static kvpaxos_clerk *clerk_one(dcluster *c, int i)
{
	kvpaxos_clerk *ck = kvpaxos_clerk_new(&c->portp[i], 1);
	assert_non_null(ck);
	return ck;
}

/* ------------------------------------------------------------ restarts */

/* All three freed (as SIGKILL would leave them: nothing flushed beyond what
 * was acknowledged matters) and started again on their directories: every
 * acknowledged write is there, and the group serves new ones. */
static void test_durable_whole_group_restart_keeps_acknowledged_writes(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "whole", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	char key[16], val[32], app[256] = "";
	for (int k = 0; k < 40; k++) {
		snprintf(key, sizeof key, "k%d", k);
		snprintf(val, sizeof val, "v%d", k);
		must_put(ck, key, val);
		if (k % 4 == 0) {
			must_append(ck, "log", val);
			strcat(app, val);
		}
	}
	/* some replicas snapshot (idle), the last writes are in the log only */
	th_sleep_ms(700);
	must_put(ck, "late", "1");
	must_append(ck, "log", "z");
	strcat(app, "z");
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	for (int i = 0; i < N; i++) dc_start(&c, i, true);
	/* a directory that holds state votes at once */
	for (int i = 0; i < N; i++) assert_true(px_is_voting(kvpaxos_server_paxos(c.kv[i])));
	kvpaxos_clerk *ck2 = kvpaxos_clerk_new(c.portp, N);
	for (int k = 0; k < 40; k++) {
		snprintf(key, sizeof key, "k%d", k);
		snprintf(val, sizeof val, "v%d", k);
		check(ck2, key, val);
	}
	check(ck2, "late", "1");
	check(ck2, "log", app);
	must_append(ck2, "log", "after");
	strcat(app, "after");
	for (int i = 0; i < N; i++) {
		kvpaxos_clerk *c1 = clerk_one(&c, i);
		check(c1, "log", app);
		kvpaxos_clerk_free(c1);
	}
	/* and once more, after the snapshots of the second life */
	th_sleep_ms(700);
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	for (int i = 0; i < N; i++) dc_start(&c, i, true);
	check(ck2, "log", app);
	check(ck2, "k39", "v39");
	kvpaxos_clerk_free(ck);
	kvpaxos_clerk_free(ck2);
	dc_free(&c);
}

/* One replica stopped, the others go on, it restarts on its directory: it
 * votes at once (no rejoin asks), catches up, and with another replica down
 * it makes the majority. */
static void test_durable_replica_restarted_on_its_directory_votes_at_once(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "one", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	must_put(ck, "a", "1");
	must_append(ck, "b", "x");
	dc_stop(&c, 0);
	must_append(ck, "b", "y");
	must_put(ck, "c", "3");
	dc_start(&c, 0, true);
	paxos *px0 = kvpaxos_server_paxos(c.kv[0]);
	assert_true(px_is_voting(px0));
	assert_int_equal(px_rejoin_asks(px0), 0);
	assert_true(role_is(c.kv[0], PAXOSRSM_VOTING));
	dc_stop(&c, 1);
	must_append(ck, "b", "z"); /* needs 0 and 2 */
	kvpaxos_clerk *ck0 = clerk_one(&c, 0);
	check(ck0, "a", "1");
	check(ck0, "b", "xyz");
	check(ck0, "c", "3");
	assert_int_equal(px_rejoin_asks(px0), 0);
	kvpaxos_clerk_free(ck0);
	kvpaxos_clerk_free(ck);
	dc_free(&c);
}

/* A replica that lost its disk (rm -rf, mkdir, restart) rejoins without
 * voting, catches up from its peers, and then counts for a majority; its new
 * directory holds the state afterwards (it survives a second restart). */
static void test_durable_lost_disk_rejoins_and_catches_up(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "lost", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	must_put(ck, "a", "1");
	for (int k = 0; k < 10; k++) must_append(ck, "b", "x");
	dc_stop(&c, 0);
	rm_rf(c.dirs[0]);
	assert_int_equal(mkdir(c.dirs[0], 0777), 0);
	must_put(ck, "c", "3");
	dc_start(&c, 0, true);
	assert_false(px_is_voting(kvpaxos_server_paxos(c.kv[0])));
	WAIT_UNTIL(role_is(c.kv[0], PAXOSRSM_VOTING), 20000);
	kvpaxos_clerk *ck0 = clerk_one(&c, 0);
	check(ck0, "a", "1");
	check(ck0, "b", "xxxxxxxxxx");
	check(ck0, "c", "3");
	assert_true(info_of(c.kv[0]).snapshots_restored >= 1 || info_of(c.kv[0]).applied > 0);
	dc_stop(&c, 1);
	must_put(ck0, "d", "4"); /* 0 and 2 */
	check(ck0, "d", "4");
	/* its new directory holds what it caught up (wait for its snapshot) */
	WAIT_UNTIL(info_of(c.kv[0]).snapshot_seq > 0, 10000);
	dc_stop(&c, 0);
	dc_start(&c, 0, true);
	assert_true(px_is_voting(kvpaxos_server_paxos(c.kv[0])));
	dc_start(&c, 1, true);
	dc_stop(&c, 2);
	check(ck0, "d", "4");
	check(ck0, "b", "xxxxxxxxxx");
	kvpaxos_clerk_free(ck0);
	kvpaxos_clerk_free(ck);
	dc_free(&c);
}

/*
 * A lost-disk restart that dies after the directory's IDENTITY file is written
 * but before Paxos synced its first record leaves a directory that holds a
 * file and no vote. Started again (restart), it must rejoin without voting,
 * not count the IDENTITY file as state and vote at once with no promises.
 * The peers are down while it starts, so "not voting" cannot be a race with a
 * rejoin that completes.
 */
static void test_durable_lost_disk_restart_cut_before_its_first_sync_still_rejoins(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "lostcut", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	must_put(ck, "a", "1");
	dc_stop(&c, 0);
	rm_rf(c.dirs[0]);
	assert_int_equal(mkdir(c.dirs[0], 0777), 0);
	dc_start(&c, 0, true);
	dc_stop(&c, 0);
	/* the crash: every file but IDENTITY lost (paxos.log as if never synced) */
	char path[DKV_NAME_MAX + 64];
	snprintf(path, sizeof path, "%s/paxos.log", c.dirs[0]);
	assert_int_equal(truncate(path, 0), 0);
	snprintf(path, sizeof path, "%s/rsm.snap", c.dirs[0]);
	(void)unlink(path);
	dc_stop(&c, 1);
	dc_stop(&c, 2);
	dc_start(&c, 0, true);
	assert_false(px_is_voting(kvpaxos_server_paxos(c.kv[0])));
	assert_false(role_is(c.kv[0], PAXOSRSM_VOTING));
	dc_start(&c, 1, true);
	dc_start(&c, 2, true);
	WAIT_UNTIL(role_is(c.kv[0], PAXOSRSM_VOTING), 20000);
	kvpaxos_clerk *ck0 = clerk_one(&c, 0);
	check(ck0, "a", "1");
	kvpaxos_clerk_free(ck0);
	kvpaxos_clerk_free(ck);
	dc_free(&c);
}

/*
 * The snapshot policy (paxos/rsm_disk.c) as a pure rule of the apply times: a
 * snapshot is due RSM_DISK_IDLE_MS after the last apply, and — for a replica
 * that is never idle, applying an op every 100 ms — at the latest
 * RSM_DISK_MAX_AGE_MS after the first apply not in a snapshot, so its log is
 * compacted under constant load too.
 */
static void test_durable_snapshot_is_due_under_constant_load(void **state)
{
	(void)state;
	char root[DKV_NAME_MAX];
	snprintf(root, sizeof root, "%s/durable-%d-policy", th_dir(), (int)getpid());
	rm_rf(root);
	const char *peers[1] = {"/nonexistent/p0"};
	dkv_server_opts o = {0};
	o.dir = root;
	rsm_disk *d = NULL;
	assert_int_equal(rsm_disk_open(&o, "test", 0, peers, 1, 0, &d), 0);
	uint64_t t0 = 1000000;
	assert_int_equal(rsm_disk_due(d, 0, t0), UINT32_MAX); /* nothing applied */
	rsm_disk_note_apply(d, 10, t0);
	assert_int_equal(rsm_disk_due(d, 1, t0), RSM_DISK_IDLE_MS);
	assert_int_equal(rsm_disk_due(d, 1, t0 + RSM_DISK_IDLE_MS), 0); /* idle */
	uint64_t t = t0, due_at = 0;
	for (int i = 1; t < t0 + 2 * RSM_DISK_MAX_AGE_MS; i++) {
		t = t0 + 100u * (uint64_t)i;
		rsm_disk_note_apply(d, 10, t);
		if (rsm_disk_due(d, i + 1, t) == 0) {
			due_at = t;
			break;
		}
	}
	assert_int_equal(due_at, t0 + RSM_DISK_MAX_AGE_MS);
	rsm_disk_close(d);
	rm_rf(root);
}

/* ------------------------------------------------------------ bad directories */

static void test_durable_bad_directories_are_refused(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "bad", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	must_put(ck, "a", "1");

	/* in use by a live server (another name, the same identity otherwise) */
	char other[DKV_NAME_MAX];
	th_port(other, "dur", "bad-x", 0);
	const char *peers2[N] = {other, c.portp[1], c.portp[2]};
	dkv_server_opts o = {0};
	o.dir = c.dirs[1];
	errno = 0;
	kvpaxos_server *x = kvpaxos_server_start_opts(peers2, N, 1, &o);
	assert_null(x);
	assert_int_equal(errno, EBUSY);

	/* wait until replica 0 has a snapshot on disk, then stop everyone */
	WAIT_UNTIL(info_of(c.kv[0]).snapshot_seq > 0, 10000);
	for (int i = 0; i < N; i++) dc_stop(&c, i);

	/* another replica's directory: replica 1 on replica 0's */
	o.dir = c.dirs[0];
	errno = 0;
	x = kvpaxos_server_start_opts(c.portp, N, 1, &o);
	assert_null(x);
	assert_int_equal(errno, EINVAL);

	/* a corrupted snapshot: EIO, never an empty start */
	char snap[DKV_NAME_MAX + 32];
	snprintf(snap, sizeof snap, "%s/rsm.snap", c.dirs[0]);
	int fd = open(snap, O_RDWR);
	assert_true(fd >= 0);
	struct stat sb;
	assert_int_equal(fstat(fd, &sb), 0);
	assert_true(sb.st_size > 30);
	unsigned char b;
	assert_int_equal(pread(fd, &b, 1, sb.st_size - 3), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, sb.st_size - 3), 1);
	close(fd);
	errno = 0;
	x = dc_try_start(&c, 0, true);
	assert_null(x);
	assert_int_equal(errno, EIO);
	/* the others still hold the state, and a fixed directory works again */
	dc_start(&c, 1, true);
	dc_start(&c, 2, true);
	kvpaxos_clerk *ck1 = clerk_one(&c, 1);
	check(ck1, "a", "1");
	kvpaxos_clerk_free(ck1);
	kvpaxos_clerk_free(ck);
	dc_free(&c);
}

/* ------------------------------------------------------------ disk use */

static void randstr(char *buf, size_t n)
{
	th_randstr(buf, n);
}

/* The lab's DiskUse case (notes/labtests.md §7.4 item 8) on kvpaxos: the bound
 * must hold with the group running, after all are stopped, and after all
 * restart. The wait for compaction is bounded, not timed (it reports). */
static void test_durable_disk_use_follows_the_live_state(void **state)
{
	(void)state;
	dcluster c;
	dc_init(&c, "du", false);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	char k1[11], k2[11], k3[11], k4[11], v[1001];
	randstr(k1, 10);
	randstr(k2, 10);
	randstr(k3, 10);
	randstr(k4, 10);
	char v1[11], v2[11], v3[11], v4[11];
	randstr(v1, 10);
	randstr(v2, 10);
	randstr(v3, 10);
	randstr(v4, 10);
	must_append(ck, k1, v1);
	must_put(ck, k2, v2);
	must_put(ck, k3, v3);
	must_append(ck, k4, v4);
	char e3[200];
	snprintf(e3, sizeof e3, "%s", v3);
	int n = 100 + (int)(th_rand() % 20);
	for (int i = 0; i < n; i++) {
		randstr(v, 1000);
		must_put(ck, k2, v);
		char one[2];
		randstr(one, 1);
		must_append(ck, k3, one);
		strcat(e3, one);
		char *g = NULL;
		assert_int_equal(kvpaxos_clerk_get(ck, k4, &g), DKV_OK);
		free(g);
	}
	char e2[1001];
	randstr(e2, 1000);
	must_put(ck, k2, e2);
	char one[2];
	randstr(one, 1);
	must_append(ck, k3, one);
	strcat(e3, one);
	char *g = NULL;
	assert_int_equal(kvpaxos_clerk_get(ck, k4, &g), DKV_OK);
	free(g);
	uint64_t t0 = th_now_ms();
	WAIT_UNTIL(disk_use(c.root) <= 20000, 15000);
	fprintf(stderr, "disk use %llu bytes after %llu ms (n=%d)\n",
	        (unsigned long long)disk_use(c.root), (unsigned long long)(th_now_ms() - t0), n);
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	assert_true(disk_use(c.root) <= 20000);
	for (int i = 0; i < N; i++) dc_start(&c, i, true);
	check(ck, k1, v1);
	check(ck, k2, e2);
	check(ck, k3, e3);
	assert_true(disk_use(c.root) <= 20000);
	kvpaxos_clerk_free(ck);
	dc_free(&c);
}

/* ------------------------------------------------------------ power cuts */

#define CUT_KEYS 3
#define CUT_OPS 10
#define RSM_IDLE_PAUSE_MS 700u

/* One clerk op recorded in the history. */
static int rec_op(th_history *h, kvpaxos_clerk *ck, int client, th_op_kind kind, const char *k,
                  const char *arg)
{
	int id = th_history_invoke(h, client, kind, k, arg);
	char *v = NULL;
	int rc = kind == TH_OP_GET ? kvpaxos_clerk_get(ck, k, &v)
	         : kind == TH_OP_PUT ? kvpaxos_clerk_put(ck, k, arg)
	                             : kvpaxos_clerk_append(ck, k, arg);
	if (rc == DKV_OK)
		th_history_return(h, id, v);
	else
		th_history_unknown(h, id);
	free(v);
	return rc;
}

/* The workload: writes, an idle pause (snapshots, Done, compaction), more
 * writes. Stops early once the disk died (calls time out). */
static int cut_workload(dcluster *c, th_history *h, simdisk *sd, int round)
{
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c->portp, N);
	kvpaxos_clerk_set_timeout(ck, 1500);
	int acked = 0;
	for (int i = 0; i < CUT_OPS; i++) {
		char k[8], a[16];
		snprintf(k, sizeof k, "k%d", i % CUT_KEYS);
		snprintf(a, sizeof a, "%d.%d,", round, i);
		if (i == CUT_OPS / 2) th_sleep_ms(RSM_IDLE_PAUSE_MS);
		int rc = rec_op(h, ck, 0, i % 3 == 0 ? TH_OP_PUT : TH_OP_APPEND, k, a);
		if (rc == DKV_OK) acked++;
		if (sd && simdisk_dead(sd)) break;
	}
	kvpaxos_clerk_free(ck);
	return acked;
}

/* Stop every replica, power-cut the disk, start them all again (restart: they
 * voted before) and read every key through each replica into the history.
 * false + why when a replica cannot start or a read does not come back. */
static bool cut_recover_and_read(dcluster *c, simdisk *sd, th_history *h, char *why,
                                 size_t whylen)
{
	for (int i = 0; i < N; i++) dc_stop(c, i);
	simdisk_power_cut(sd);
	for (int i = 0; i < N; i++) {
		c->kv[i] = dc_try_start(c, i, true);
		if (!c->kv[i]) {
			snprintf(why, whylen, "replica %d cannot start after the cut: %s", i,
			         strerror(errno));
			return false;
		}
	}
	for (int i = 0; i < N; i++) {
		kvpaxos_clerk *ck = clerk_one(c, i);
		kvpaxos_clerk_set_timeout(ck, 4000);
		for (int k = 0; k < CUT_KEYS; k++) {
			char key[8];
			snprintf(key, sizeof key, "k%d", k);
			if (rec_op(h, ck, 1 + i, TH_OP_GET, key, NULL) != DKV_OK) {
				snprintf(why, whylen, "Get(%s) through replica %d after the cut: no answer",
				         key, i);
				kvpaxos_clerk_free(ck);
				return false;
			}
		}
		kvpaxos_clerk_free(ck);
	}
	return true;
}

/* One run cut at boundary `cut` (counted from the end of the start; 0 = at
 * the end of the workload). Returns true if every check passed (else why).
 * *used: boundaries the workload made (when it ran to its end). */
static bool cut_once(uint64_t seed, uint64_t cut, bool fsync_noop, uint64_t *used, char *why,
                     size_t whylen)
{
	simdisk *sd = simdisk_new(seed);
	assert_non_null(sd);
	dkv_fs_set_default(simdisk_fs(sd));
	dcluster c;
	dc_init(&c, "cut", true);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	if (fsync_noop) simdisk_set_fsync_noop(sd, true);
	uint64_t base = simdisk_boundaries(sd);
	if (cut) simdisk_cut_after(sd, base + cut);
	th_history *h = th_history_new();
	assert_non_null(h);
	cut_workload(&c, h, sd, 0);
	if (used) *used = simdisk_boundaries(sd) - base;
	bool died = simdisk_dead(sd);
	if (!died) simdisk_cut_after(sd, simdisk_boundaries(sd)); /* dies now */
	bool ok = cut_recover_and_read(&c, sd, h, why, whylen);
	if (ok) {
		th_lin_result res;
		memset(&res, 0, sizeof res);
		th_lin_verdict v = th_lin_check(h, 20000, &res);
		if (v != TH_LIN_OK) {
			ok = false;
			snprintf(why, whylen, "history %s: %s", th_lin_verdict_name(v),
			         res.report ? res.report : "");
		}
		th_lin_result_destroy(&res);
	}
	size_t nok = 0, nunk = 0;
	th_history_counts(h, &nok, &nunk, NULL);
	DKV_DEBUG("cut %llu: %zu ok, %zu unknown, %s", (unsigned long long)cut, nok, nunk,
	          ok ? "pass" : why);
	th_history_free(h);
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	dkv_fs_set_default(NULL);
	simdisk_free(sd);
	return ok;
}

/* A failed fdatasync (ENOSPC) stops the replica that got it (STOPPED, as
 * X_kill; never retried as if it had worked); the other two go on. */
static void test_durable_fsync_error_stops_the_replica(void **state)
{
	(void)state;
	simdisk *sd = simdisk_new(th_seed());
	assert_non_null(sd);
	dkv_fs_set_default(simdisk_fs(sd));
	dcluster c;
	dc_init(&c, "enospc", true);
	for (int i = 0; i < N; i++) dc_start(&c, i, false);
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	must_put(ck, "a", "1");
	simdisk_fail_op(sd, SIMDISK_OP_FDATASYNC, 1, ENOSPC);
	must_put(ck, "b", "2");
	WAIT_UNTIL(simdisk_fault_hits(sd) == 1, 10000);
	int stopped = -1;
	for (int tries = 0; stopped < 0 && tries < 400; tries++) {
		for (int i = 0; i < N; i++)
			if (role_is(c.kv[i], PAXOSRSM_STOPPED)) stopped = i;
		if (stopped < 0) th_sleep_ms(10);
	}
	assert_true(stopped >= 0);
	must_put(ck, "c", "3");
	check(ck, "b", "2");
	check(ck, "c", "3");
	kvpaxos_clerk_free(ck);
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	dkv_fs_set_default(NULL);
	simdisk_free(sd);
}

/* no_fsync: the directories are written but never fsynced; a whole-group
 * stop and start (no power cut) keeps every acknowledged write. */
static void test_durable_no_fsync_writes_without_syncing(void **state)
{
	(void)state;
	simdisk *sd = simdisk_new(th_seed());
	assert_non_null(sd);
	dkv_fs_set_default(simdisk_fs(sd));
	dcluster c;
	dc_init(&c, "nofsync", true);
	dkv_server_opts o = {0};
	o.no_fsync = true;
	for (int i = 0; i < N; i++) {
		o.dir = c.dirs[i];
		o.restart = false;
		c.kv[i] = kvpaxos_server_start_opts(c.portp, N, i, &o);
		assert_non_null(c.kv[i]);
	}
	kvpaxos_clerk *ck = kvpaxos_clerk_new(c.portp, N);
	for (int k = 0; k < 20; k++) must_append(ck, "a", "x");
	th_sleep_ms(700); /* snapshots too */
	must_append(ck, "a", "y");
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	simdisk_stats st;
	simdisk_get_stats(sd, &st);
	assert_int_equal(st.fdatasyncs, 0);
	assert_int_equal(st.dir_syncs, 0);
	for (int i = 0; i < N; i++) {
		o.dir = c.dirs[i];
		o.restart = true;
		c.kv[i] = kvpaxos_server_start_opts(c.portp, N, i, &o);
		assert_non_null(c.kv[i]);
	}
	check(ck, "a", "xxxxxxxxxxxxxxxxxxxxy");
	kvpaxos_clerk_free(ck);
	for (int i = 0; i < N; i++) dc_stop(&c, i);
	dkv_fs_set_default(NULL);
	simdisk_free(sd);
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
	const char *s = getenv(name);
	return s && *s ? (unsigned)strtoul(s, NULL, 10) : dflt;
}

/* Cut at the write boundaries of the workload, each in turn when there are
 * few, else a seeded stratified sample (DKV_DURABLE_CUTS of them, default
 * 40): every run must pass every check. */
static void test_durable_power_cut_at_write_boundaries_loses_no_acknowledged_op(void **state)
{
	(void)state;
	char why[4096] = "";
	uint64_t used = 0;
	uint64_t seed = th_seed();
	if (!cut_once(seed, 0, false, &used, why, sizeof why))
		fail_msg("the run without a cut fails: %s", why);
	assert_true(used > 10);
	unsigned ncuts = env_unsigned("DKV_DURABLE_CUTS", 40);
	if (ncuts > used) ncuts = (unsigned)used;
	unsigned failed = 0;
	for (unsigned j = 0; j < ncuts; j++) {
		uint64_t lo = 1 + (uint64_t)j * used / ncuts;
		uint64_t hi = (uint64_t)(j + 1) * used / ncuts;
		uint64_t k = hi > lo ? lo + th_rand() % (hi - lo + 1) : lo;
		if (!cut_once(seed + j + 1, k, false, NULL, why, sizeof why)) {
			fprintf(stderr, "cut at boundary %llu of %llu (seed %llu): %s\n",
			        (unsigned long long)k, (unsigned long long)used,
			        (unsigned long long)(seed + j + 1), why);
			failed++;
		}
	}
	fprintf(stderr, "power cuts: %u of %u runs failed (%llu boundaries in the workload)\n",
	        failed, ncuts, (unsigned long long)used);
	assert_int_equal(failed, 0);
}

/* The control: with fsync a no-op nothing is durable, and the same check must
 * fail (at least once over a few cuts): the harness bites. */
static void test_durable_power_cut_check_fails_when_fsync_is_a_noop(void **state)
{
	(void)state;
	char why[4096] = "";
	uint64_t seed = th_seed();
	unsigned failed = 0, runs = 3;
	uint64_t cuts[3] = {0, 40, 120};
	for (unsigned j = 0; j < runs; j++)
		if (!cut_once(seed + 100 + j, cuts[j], true, NULL, why, sizeof why)) failed++;
	fprintf(stderr, "fsync no-op: %u of %u runs failed the check (last: %s)\n", failed, runs,
	        why);
	assert_true(failed >= 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durable_whole_group_restart_keeps_acknowledged_writes),
		cmocka_unit_test(test_durable_replica_restarted_on_its_directory_votes_at_once),
		cmocka_unit_test(test_durable_lost_disk_rejoins_and_catches_up),
		cmocka_unit_test(test_durable_snapshot_is_due_under_constant_load),
		cmocka_unit_test(test_durable_lost_disk_restart_cut_before_its_first_sync_still_rejoins),
		cmocka_unit_test(test_durable_bad_directories_are_refused),
		cmocka_unit_test(test_durable_disk_use_follows_the_live_state),
		cmocka_unit_test(test_durable_fsync_error_stops_the_replica),
		cmocka_unit_test(test_durable_no_fsync_writes_without_syncing),
		cmocka_unit_test(test_durable_power_cut_at_write_boundaries_loses_no_acknowledged_op),
		cmocka_unit_test(test_durable_power_cut_check_fails_when_fsync_is_a_noop),
	};
	return th_run_suite("durable", tests);
}
