/*
 * tests/lib/view_watch.h — a thread that samples a view service's view every
 * few ms and checks every observed step against the view rules
 * (vs_core_check_step): invariants all the time, not only at the end (STYLE P9).
 * Used by the viewservice and pbservice suites.
 */
#ifndef DKV_TEST_VIEW_WATCH_H
#define DKV_TEST_VIEW_WATCH_H

#include "dkv/viewservice.h"

typedef struct view_watch view_watch;

/* watch_start: start watching `vs` (borrowed; it must outlive the watcher). */
view_watch *watch_start(viewservice_server *vs);
/* watch_stop: stop and free the watcher; fail the test if it saw an impossible view step. */
void watch_stop(view_watch *w);

#endif /* DKV_TEST_VIEW_WATCH_H */
