/*
 * tests/lib/view_watch.c — see view_watch.h.
 */
#include "harness.h"
#include "view_watch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../../viewservice/vs_core.h"
#include "../../viewservice/vs_server_internal.h"

/* A thread that samples the view service's view every few ms and checks every
 * observed step with vs_core_check_step (STYLE P9: invariants all the time). */
struct view_watch {
	viewservice_server *vs;
	atomic_bool stop;
	atomic_bool failed;
	char why[256];
	pthread_t th;
};

static void *watch_main(void *arg)
{
	view_watch *w = arg;
	viewservice_view prev, cur;
	memset(&prev, 0, sizeof prev);
	while (!atomic_load(&w->stop)) {
		bool acked;
		viewservice_server_peek(w->vs, &cur, &acked);
		if (!atomic_load(&w->failed) && !vs_core_check_step(&prev, &cur, w->why, sizeof w->why))
			atomic_store(&w->failed, true);
		prev = cur;
		th_sleep_ms(5);
	}
	return NULL;
}

/* The watcher is on the heap: if the test fails (cmocka longjmps out), the
 * thread keeps running harmlessly instead of reading a dead stack frame. */
view_watch *watch_start(viewservice_server *vs)
{
	view_watch *w = calloc(1, sizeof(*w));
	assert_non_null(w);
	w->vs = vs;
	atomic_init(&w->stop, false);
	atomic_init(&w->failed, false);
	w->why[0] = '\0';
	assert_int_equal(pthread_create(&w->th, NULL, watch_main, w), 0);
	return w;
}

/* Stop the watcher; fail the test if it saw an impossible view step. */
void watch_stop(view_watch *w)
{
	atomic_store(&w->stop, true);
	pthread_join(w->th, NULL);
	bool failed = atomic_load(&w->failed);
	char why[sizeof w->why];
	memcpy(why, w->why, sizeof why);
	free(w);
	if (failed)
		fail_msg("view invariant violated: %s", why);
}
