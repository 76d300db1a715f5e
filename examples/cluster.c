/*
 * examples/cluster.c — the main job (`make run`) until the daemons exist: an
 * in-process kvpaxos cluster of three replicas on unix sockets, driven by
 * concurrent clerks with a live one-line progress display.
 *
 * Phases: start 3 replicas; 8 clerks run a mixed Put/Append/Get workload; at
 * one third of the run one replica is made unreliable, at two thirds another is
 * killed (the majority keeps serving); at the end every clerk's Append log is
 * read back and checked (each append present exactly once, in order), a summary
 * is printed and everything is stopped and removed. Ctrl-C ends the run early,
 * cleanly. Usage: cluster [seconds] (default 12).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dkv/kvpaxos.h"

#define NREPLICAS 3
#define NCLERKS 8
#define NKEYS 50

static atomic_bool stop;
static atomic_ulong ops, errors, lat_sum_us, lat_max_us;

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, true);
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct clerk_arg {
	int id;
	const char *const *servers;
	int appends; /* appends acknowledged on this clerk's own key */
	unsigned seed;
};

static void account(uint64_t t0, int rc)
{
	uint64_t dt = now_us() - t0;
	atomic_fetch_add(&ops, 1);
	atomic_fetch_add(&lat_sum_us, dt);
	unsigned long m = atomic_load(&lat_max_us);
	while (dt > m && !atomic_compare_exchange_weak(&lat_max_us, &m, dt))
		;
	if (rc != DKV_OK)
		atomic_fetch_add(&errors, 1);
}

static void *clerk_main(void *arg)
{
	struct clerk_arg *a = arg;
	kvpaxos_clerk *ck = kvpaxos_clerk_new(a->servers, NREPLICAS);
	if (ck == NULL)
		return NULL;
	kvpaxos_clerk_set_timeout(ck, 5000);
	char key[32], val[64], own[32];
	snprintf(own, sizeof own, "log-%d", a->id);
	while (!atomic_load(&stop)) {
		unsigned r = (unsigned)rand_r(&a->seed) % 10;
		snprintf(key, sizeof key, "key-%u", (unsigned)rand_r(&a->seed) % NKEYS);
		uint64_t t0 = now_us();
		int rc;
		if (r < 4) {
			char *v = NULL;
			rc = kvpaxos_clerk_get(ck, key, &v);
			free(v);
		} else if (r < 7) {
			snprintf(val, sizeof val, "v%d-%u", a->id, (unsigned)rand_r(&a->seed));
			rc = kvpaxos_clerk_put(ck, key, val);
		} else {
			snprintf(val, sizeof val, "x %d %d y", a->id, a->appends);
			rc = kvpaxos_clerk_append(ck, own, val);
			if (rc == DKV_OK)
				a->appends++;
			else
				break; /* an unknown outcome would make the final check ambiguous */
		}
		account(t0, rc);
	}
	kvpaxos_clerk_free(ck);
	return NULL;
}

/* Each "x <id> <j> y" for j < n appears exactly once, in order. */
static bool check_log(const char *v, int id, int n)
{
	const char *last = v;
	for (int j = 0; j < n; j++) {
		char want[64];
		snprintf(want, sizeof want, "x %d %d y", id, j);
		const char *p = strstr(v, want);
		if (p == NULL || p < last || strstr(p + 1, want) != NULL)
			return false;
		last = p;
	}
	return true;
}

int main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 12;
	if (seconds <= 0) {
		fprintf(stderr, "usage: %s [seconds]\n", argv[0]);
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	char dir[64];
	snprintf(dir, sizeof dir, "/var/tmp/dkv-%u", (unsigned)getuid());
	mkdir(dir, 0777);
	char names[NREPLICAS][128];
	const char *servers[NREPLICAS];
	for (int i = 0; i < NREPLICAS; i++) {
		snprintf(names[i], sizeof names[i], "%s/run-%d-%d", dir, (int)getpid(), i);
		servers[i] = names[i];
	}
	kvpaxos_server *srv[NREPLICAS];
	for (int i = 0; i < NREPLICAS; i++) {
		srv[i] = kvpaxos_server_start(servers, NREPLICAS, i);
		if (srv[i] == NULL) {
			fprintf(stderr, "cluster: starting replica %d at %s: %s\n", i, servers[i], strerror(errno));
			return 1;
		}
	}
	printf("dkv cluster: %d kvpaxos replicas (unix sockets under %s), %d clerks, %d s\n",
	       NREPLICAS, dir, NCLERKS, seconds);

	struct clerk_arg ca[NCLERKS];
	pthread_t t[NCLERKS];
	for (int i = 0; i < NCLERKS; i++) {
		ca[i] = (struct clerk_arg){ .id = i, .servers = servers, .seed = (unsigned)(i * 7919 + getpid()) };
		pthread_create(&t[i], NULL, clerk_main, &ca[i]);
	}

	uint64_t start = now_us(), last = start;
	unsigned long last_ops = 0;
	bool unreliable_done = false, kill_done = false;
	while (!atomic_load(&stop)) {
		struct timespec ts = { 0, 250 * 1000000L };
		nanosleep(&ts, NULL);
		uint64_t now = now_us();
		double el = (double)(now - start) / 1e6;
		if (!unreliable_done && el >= seconds / 3.0) {
			kvpaxos_server_set_unreliable(srv[1], true);
			printf("\n[%5.1f s] fault: replica 1 now drops 10%% of requests and 18%% of replies\n", el);
			unreliable_done = true;
		}
		if (!kill_done && el >= 2.0 * seconds / 3.0) {
			kvpaxos_server_kill(srv[2]);
			printf("\n[%5.1f s] fault: replica 2 killed; the majority keeps serving\n", el);
			kill_done = true;
		}
		unsigned long o = atomic_load(&ops);
		double rate = (double)(o - last_ops) / ((double)(now - last) / 1e6);
		double avg = o ? (double)atomic_load(&lat_sum_us) / (double)o / 1000.0 : 0;
		printf("\r[%5.1f s] %8lu ops  %7.0f ops/s  avg %6.2f ms  max %7.1f ms  errors %lu   ", el, o,
		       rate, avg, (double)atomic_load(&lat_max_us) / 1000.0, atomic_load(&errors));
		fflush(stdout);
		last = now;
		last_ops = o;
		if (el >= seconds)
			atomic_store(&stop, true);
	}
	for (int i = 0; i < NCLERKS; i++)
		pthread_join(t[i], NULL);
	double el = (double)(now_us() - start) / 1e6;
	printf("\n");

	/* Read every clerk's Append log back through a fresh clerk and check it. */
	kvpaxos_clerk *ck = kvpaxos_clerk_new(servers, NREPLICAS);
	kvpaxos_clerk_set_timeout(ck, 10000);
	int bad = 0, total_appends = 0;
	for (int i = 0; i < NCLERKS; i++) {
		char key[32];
		snprintf(key, sizeof key, "log-%d", i);
		char *v = NULL;
		if (kvpaxos_clerk_get(ck, key, &v) != DKV_OK || !check_log(v, i, ca[i].appends))
			bad++;
		total_appends += ca[i].appends;
		free(v);
	}
	kvpaxos_clerk_free(ck);
	unsigned long o = atomic_load(&ops);
	printf("summary: %lu ops in %.1f s (%.0f ops/s), avg latency %.2f ms, %lu errors; "
	       "%d appends checked: %s\n",
	       o, el, (double)o / el, o ? (double)atomic_load(&lat_sum_us) / (double)o / 1000.0 : 0,
	       atomic_load(&errors), total_appends, bad ? "VIOLATION" : "each exactly once, in order");
	for (int i = 0; i < NREPLICAS; i++) {
		kvpaxos_server_free(srv[i]);
		unlink(servers[i]);
	}
	printf("stopped %d replicas, removed their sockets\n", NREPLICAS);
	return bad ? 1 : 0;
}
