/*
 * viewservice/vs_core.h — the view service state machine, pure: no sockets, no
 * clock, no threads, no locks. The RPC shell (vs_server.c) owns a vs_core under
 * its mutex and passes the time in; tests drive it directly with made-up times.
 */
#ifndef DKV_VS_CORE_H
#define DKV_VS_CORE_H

#include <stdint.h>

#include "dkv/viewservice.h"

/*
 * What a p/b server says about itself in a ping (pbservice sends it; the lab's
 * clerk pings carry none): the whole view it holds (which may be newer than
 * the viewnum it pings, e.g. a primary that has not acknowledged yet) and
 * whether it holds that view's data — as primary: it has legitimate state; as
 * backup: it received the primary's state for exactly that view.
 */
typedef struct {
	viewservice_view view;
	bool data;
} vs_report;

/* A server the view service has heard from. */
typedef struct {
	char name[DKV_NAME_MAX];
	uint64_t last_ping_ms; /* time of its latest ping */
	unsigned last_viewnum; /* viewnum of its latest ping */
	bool restarted;        /* pinged 0 after a nonzero ping while primary/backup */
	bool has_report;       /* its latest ping carried a report ... */
	vs_report report;      /* ... this one */
} vs_core_server;

typedef struct {
	viewservice_view view; /* the current view */
	bool acked;            /* the primary of `view` has pinged view.viewnum */
	bool recovering;       /* state lost: no view is handed out until adoption */
	unsigned max_seen;     /* recovering: the highest view number heard of */
	vs_core_server *servers; /* known servers, in order of first ping */
	size_t nservers, cap;
	uint64_t dead_ms; /* silence after which a server is dead (PI * DP) */
} vs_core;

/* vs_core_init: empty state, no view (viewnum 0). dead_ms: usually
 * VIEWSERVICE_PING_INTERVAL_MS * VIEWSERVICE_DEAD_PINGS. */
void vs_core_init(vs_core *c, uint64_t dead_ms);

/* vs_core_init_lost: like vs_core_init, for a view service that has run before
 * and lost its state (started with `restart` and no state to read): it starts
 * recovering (see vs_core.c, "Lost state"). */
void vs_core_init_lost(vs_core *c, uint64_t dead_ms);

/* vs_core_restore: resume at a view read back from disk (after vs_core_init).
 * Its primary and backup count as alive at now_ms (they get dead_ms to ping)
 * and as having pinged p_last / b_last last (restart detection). */
void vs_core_restore(vs_core *c, const viewservice_view *v, bool acked, unsigned p_last,
                     unsigned b_last, uint64_t now_ms);

/* vs_core_last_viewnum: the viewnum `name` pinged last (0: none / unknown). */
unsigned vs_core_last_viewnum(const vs_core *c, const char *name);

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

/* vs_core_ping_report: vs_core_ping with the server's report (NULL: none). */
int vs_core_ping_report(vs_core *c, const char *me, unsigned viewnum, const vs_report *rep,
                        uint64_t now_ms, viewservice_view *out);

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
