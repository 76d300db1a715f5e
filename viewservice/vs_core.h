/*
 * viewservice/vs_core.h — the view service state machine, pure: no sockets, no
 * clock, no threads, no locks. The RPC shell (vs_server.c) owns a vs_core under
 * its mutex and passes the time in; tests drive it directly with made-up times.
 */
#ifndef DKV_VS_CORE_H
#define DKV_VS_CORE_H

#include <stdint.h>

#include "dkv/viewservice.h"

/* A server the view service has heard from. */
typedef struct {
	char name[DKV_NAME_MAX];
	uint64_t last_ping_ms; /* time of its latest ping */
	unsigned last_viewnum; /* viewnum of its latest ping */
	bool restarted;        /* pinged 0 after a nonzero ping while primary/backup */
} vs_core_server;

typedef struct {
	viewservice_view view; /* the current view */
	bool acked;            /* the primary of `view` has pinged view.viewnum */
	vs_core_server *servers; /* known servers, in order of first ping */
	size_t nservers, cap;
	uint64_t dead_ms; /* silence after which a server is dead (PI * DP) */
} vs_core;

/* vs_core_init: empty state, no view (viewnum 0). dead_ms: usually
 * VIEWSERVICE_PING_INTERVAL_MS * VIEWSERVICE_DEAD_PINGS. */
void vs_core_init(vs_core *c, uint64_t dead_ms);

/* vs_core_destroy: release what the state holds (not `c` itself). */
void vs_core_destroy(vs_core *c);

/*
 * vs_core_ping: server `me` pinged with `viewnum` at time `now_ms`. Records the
 * ping, applies the view-change rules, and writes the resulting current view to
 * *out. Returns DKV_OK, DKV_ERR_INVAL (empty or over-long name) or DKV_ERR_NOMEM
 * (the server could not be recorded; *out still gets the current view).
 */
int vs_core_ping(vs_core *c, const char *me, unsigned viewnum, uint64_t now_ms,
                 viewservice_view *out);

/* vs_core_tick: the periodic check at `now_ms`: dead servers leave the view, an
 * idle server fills an empty backup slot (only once the current view is acked),
 * servers silent for long are forgotten. */
void vs_core_tick(vs_core *c, uint64_t now_ms);

/* vs_core_get: the current view. */
void vs_core_get(const vs_core *c, viewservice_view *out);

/*
 * vs_core_check_step: may an observer who saw view `prev` and later `next` have
 * seen them? View numbers never go back; one number is one view; a primary and a
 * backup are distinct and a view with a number has a primary; and when `next`
 * directly follows `prev`, its primary is prev's primary or backup. Returns true,
 * or false with a reason in why (len bytes). For tests' invariant watchers.
 */
bool vs_core_check_step(const viewservice_view *prev, const viewservice_view *next, char *why,
                        size_t len);

#endif /* DKV_VS_CORE_H */
