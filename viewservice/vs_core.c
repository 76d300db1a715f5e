/*
 * viewservice/vs_core.c — the view service's rules as a pure state machine.
 *
 * The lab handout's rules (6.824, 2015, lab 2A), and how they map here:
 *   - "Views are numbered. The primary of view i+1 must be the primary or backup
 *     of view i", except view 1, whose primary is the first server to ping.
 *   - A server that has not pinged for DeadPings * PingInterval is dead
 *     (`dead_ms`). A server that pings 0 while it is primary or backup restarted
 *     and is dead as well (`restarted`) — but only when its previous ping was
 *     nonzero: a server made backup by a tick still pings 0 once before it learns
 *     the new view, and that is not a restart.
 *   - "The view service must not move from view X to X+1 until the primary of
 *     view X has sent Ping(X)" (`acked`). Until then nothing changes, whoever
 *     dies; a primary that dies unacknowledged leaves the service stuck.
 *   - A new view comes when the primary or backup is dead, or when there is no
 *     backup and an idle server (pinging, in no role) exists. A dead primary is
 *     replaced by the backup, and an idle server fills the backup slot in the same
 *     step, so no view lacks a backup needlessly. An idle server never becomes
 *     primary, and with a dead primary and no live backup the service waits.
 *   - UMich EECS 491: a primary that restarted (Ping(0)) while a backup exists
 *     is alive and empty: the backup becomes primary and the restarted server
 *     becomes the backup in that same view change — (old backup, restarted, n+1)
 *     on the Ping(0) itself — rather than leaving the view and returning later.
 *   - Views change on the Ping that makes them due (an ack, a restart, a new
 *     idle server); silence is noticed by the tick, so a server that stops
 *     pinging is replaced at the first tick >= dead_ms after its last ping:
 *     after more than DeadPings - 1 and at most DeadPings + 1 intervals.
 * Servers silent for 10 * dead_ms and in no role are forgotten (bounded memory).
 *
 * Lost state (`recovering`): a view service that ran before and lost its
 * state (started with `restart` and no directory, or an empty one; or a fresh
 * service whose very first ping names a view > 0: someone knows a view we do
 * not). Handing out view 1 again would be wrong both ways: the old primary
 * ignores a view older than its own (failover silently stops), and a fresh
 * server made primary serves an empty store next to the old primary. So a
 * recovering service hands out no view (replies carry view 0) and adopts:
 *
 *   RULE. Server S reports "view L = (S, B), I hold its data", and every member
 *   of L other than S (B, if any) is alive and reports holding view L itself,
 *   and nobody reported a view above L + 1. Then the service continues at view
 *   L + 2 = (S, none), unacknowledged; the normal rules take over from there
 *   (S acks, then an idle server — B first, if still alive — becomes backup).
 *   Until then: no view, whoever pings, for as long as it takes.
 *
 *   Why it is safe. Assumptions: one view service at a time (the old process
 *   is gone before the new one starts); a p/b server's report is its current
 *   memory (a restarted server reports nothing, it holds no data); views reach
 *   servers only from the view service or inside a primary's forward/transfer
 *   for a view that primary holds. Any view after L has, by the handout's rule,
 *   a primary that is S or B. Neither holds a view above L, and nobody can tell
 *   them one (the old service is gone, the new one issues none, and a primary
 *   of a later view would be S or B), so L + 1 — if the old service issued it —
 *   was never acknowledged, never served in, and no view after it exists.
 *   Every operation that completed was applied at the primary of its view, and
 *   (the lab's argument) the primary of the latest view holds them all: S.
 *   L + 2 is above every number any server may hold, so every server adopts it
 *   and none ever acts on an older one again (pbservice adopts only newer views).
 *   An idle server reports the current view too, but with no data and not as
 *   primary, so it never counts as a holder.
 *
 *   What it costs. If a member of the last view is dead (or restarted: its
 *   memory is gone) when the service lost its state, the service waits until it
 *   is back with its memory: for in-memory pbservice servers, possibly for ever
 *   (a human must decide). Meanwhile a live pair keeps serving on its own; only
 *   failover and new backups wait. The rule never promotes a backup, because the
 *   primary could have moved on to a view the new service cannot know of.
 *   Nothing stale or empty is ever served because of the restart.
 */
#include "vs_core.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkv_internal.h"

void vs_core_init(vs_core *c, uint64_t dead_ms)
{
	assert(c != NULL);
	memset(c, 0, sizeof(*c));
	c->dead_ms = dead_ms;
}

void vs_core_init_lost(vs_core *c, uint64_t dead_ms)
{
	vs_core_init(c, dead_ms);
	c->recovering = true;
}

void vs_core_destroy(vs_core *c)
{
	if (c == NULL)
		return;
	free(c->servers);
	c->servers = NULL;
	c->nservers = c->cap = 0;
}

static vs_core_server *find_server(vs_core *c, const char *name)
{
	if (name[0] == '\0')
		return NULL;
	for (size_t i = 0; i < c->nservers; i++)
		if (strcmp(c->servers[i].name, name) == 0)
			return &c->servers[i];
	return NULL;
}

static vs_core_server *add_server(vs_core *c, const char *name)
{
	if (c->nservers == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 8;
		vs_core_server *n = dkv_realloc(c->servers, ncap * sizeof(*n));
		if (n == NULL)
			return NULL;
		c->servers = n;
		c->cap = ncap;
	}
	vs_core_server *s = &c->servers[c->nservers++];
	memset(s, 0, sizeof(*s));
	strcpy(s->name, name); /* length checked by the caller */
	return s;
}

static bool is_dead(const vs_core *c, const vs_core_server *s, uint64_t now_ms)
{
	if (s == NULL || s->restarted)
		return true;
	return now_ms >= s->last_ping_ms && now_ms - s->last_ping_ms >= c->dead_ms;
}

static bool in_view(const vs_core *c, const char *name)
{
	return strcmp(c->view.primary, name) == 0 || strcmp(c->view.backup, name) == 0;
}

/* An idle server fit to become backup: alive, not restarted, in neither slot of
 * the view being built (primary `p`). The earliest to have pinged wins. */
static const vs_core_server *pick_idle(const vs_core *c, const char *p, uint64_t now_ms)
{
	for (size_t i = 0; i < c->nservers; i++) {
		const vs_core_server *s = &c->servers[i];
		if (is_dead(c, s, now_ms) || strcmp(s->name, p) == 0 || in_view(c, s->name))
			continue;
		return s;
	}
	return NULL;
}

/* Apply the view-change rules at `now_ms`. */
static void advance(vs_core *c, uint64_t now_ms)
{
	if (c->view.viewnum == 0 || !c->acked)
		return;
	const vs_core_server *p = find_server(c, c->view.primary);
	const vs_core_server *b = find_server(c, c->view.backup);
	bool has_b = c->view.backup[0] != '\0';
	bool p_dead = is_dead(c, p, now_ms);
	bool b_dead = has_b && is_dead(c, b, now_ms);

	char np[DKV_NAME_MAX], nb[DKV_NAME_MAX];
	strcpy(np, c->view.primary);
	strcpy(nb, c->view.backup);
	if (p_dead) {
		if (!has_b || b_dead)
			return; /* nobody may take over: wait (lab: stuck) */
		strcpy(np, c->view.backup);
		nb[0] = '\0';
		/* UMich: a primary that restarted (and is pinging) becomes the backup. */
		if (p != NULL && p->restarted && now_ms >= p->last_ping_ms &&
		    now_ms - p->last_ping_ms < c->dead_ms)
			strcpy(nb, p->name);
	} else if (b_dead) {
		nb[0] = '\0';
	}
	if (nb[0] == '\0') {
		const vs_core_server *idle = pick_idle(c, np, now_ms);
		if (idle != NULL)
			strcpy(nb, idle->name);
	}
	if (strcmp(np, c->view.primary) == 0 && strcmp(nb, c->view.backup) == 0)
		return;

	/* Servers leaving their slot forget their restart: they are idle (or, for
	 * a restarted primary, a fresh backup) from now on. */
	vs_core_server *op = find_server(c, c->view.primary);
	vs_core_server *ob = find_server(c, c->view.backup);
	if (op != NULL && strcmp(op->name, np) != 0)
		op->restarted = false;
	if (ob != NULL && strcmp(ob->name, np) != 0 && strcmp(ob->name, nb) != 0)
		ob->restarted = false;

	c->view.viewnum++;
	strcpy(c->view.primary, np);
	strcpy(c->view.backup, nb);
	c->acked = false;
}

static bool alive_at(const vs_core *c, const vs_core_server *s, uint64_t now_ms)
{
	return s != NULL && now_ms >= s->last_ping_ms && now_ms - s->last_ping_ms < c->dead_ms;
}

/* Recovering: adopt the primary of the last view if the RULE above holds. */
static void try_adopt(vs_core *c, uint64_t now_ms)
{
	for (size_t i = 0; i < c->nservers; i++) {
		const vs_core_server *s = &c->servers[i];
		if (!s->has_report || !s->report.data || !alive_at(c, s, now_ms))
			continue;
		const viewservice_view *l = &s->report.view;
		if (l->viewnum == 0 || strcmp(l->primary, s->name) != 0)
			continue; /* not a data-holding primary */
		if (c->max_seen > l->viewnum + 1)
			continue; /* someone knows a later view: S may be stale */
		if (l->backup[0] != '\0') {
			const vs_core_server *b = find_server(c, l->backup);
			if (b == NULL || !alive_at(c, b, now_ms) || !b->has_report ||
			    b->report.view.viewnum != l->viewnum ||
			    strcmp(b->report.view.primary, l->primary) != 0 ||
			    strcmp(b->report.view.backup, l->backup) != 0)
				continue; /* the backup has not confirmed L (yet) */
		}
		DKV_INFO("viewservice: recovered: %s was primary of view %u with its data; "
		         "continuing at view %u", s->name, l->viewnum, l->viewnum + 2);
		c->view.viewnum = l->viewnum + 2;
		strcpy(c->view.primary, s->name);
		c->view.backup[0] = '\0';
		c->acked = false;
		c->recovering = false;
		for (size_t j = 0; j < c->nservers; j++)
			c->servers[j].restarted = false;
		return;
	}
}

int vs_core_ping(vs_core *c, const char *me, unsigned viewnum, uint64_t now_ms,
                 viewservice_view *out)
{
	return vs_core_ping_report(c, me, viewnum, NULL, now_ms, out);
}

int vs_core_ping_report(vs_core *c, const char *me, unsigned viewnum, const vs_report *rep,
                        uint64_t now_ms, viewservice_view *out)
{
	assert(c != NULL && out != NULL);
	if (me == NULL || me[0] == '\0' || strlen(me) >= DKV_NAME_MAX) {
		vs_core_get(c, out);
		return DKV_ERR_INVAL;
	}
	int rc = DKV_OK;
	vs_core_server *s = find_server(c, me);
	if (s == NULL)
		s = add_server(c, me);
	if (s == NULL)
		rc = DKV_ERR_NOMEM;

	/* A fresh service whose first ping names a view: that view came from an
	 * earlier incarnation of this service, whose state we lack. */
	if (c->view.viewnum == 0 && !c->recovering &&
	    (viewnum > 0 || (rep != NULL && (rep->view.viewnum > 0 || rep->data)))) {
		DKV_WARN("viewservice: %s pinged view %u but this service has no state: "
		         "treating it as restarted (waiting to adopt the last view)", me,
		         rep != NULL && rep->view.viewnum > viewnum ? rep->view.viewnum : viewnum);
		c->recovering = true;
	}
	if (c->recovering) {
		if (s != NULL) {
			s->last_ping_ms = now_ms;
			s->last_viewnum = viewnum;
			s->has_report = rep != NULL;
			if (rep != NULL)
				s->report = *rep;
		}
		if (viewnum > c->max_seen)
			c->max_seen = viewnum;
		if (rep != NULL && rep->view.viewnum > c->max_seen)
			c->max_seen = rep->view.viewnum;
		try_adopt(c, now_ms);
		vs_core_get(c, out);
		return rc;
	}
	if (c->view.viewnum == 0) {
		/* The first server to ping becomes the first primary. */
		c->view.viewnum = 1;
		strcpy(c->view.primary, me);
		c->view.backup[0] = '\0';
		c->acked = false;
	} else if (strcmp(me, c->view.primary) == 0) {
		if (viewnum == c->view.viewnum)
			c->acked = true;
		else if (viewnum == 0 && s != NULL && s->last_viewnum != 0)
			s->restarted = true;
	} else if (strcmp(me, c->view.backup) == 0) {
		if (viewnum == 0 && s != NULL && s->last_viewnum != 0)
			s->restarted = true;
	}
	if (s != NULL) {
		s->last_ping_ms = now_ms;
		s->last_viewnum = viewnum;
		s->has_report = rep != NULL;
		if (rep != NULL)
			s->report = *rep;
	}
	advance(c, now_ms);
	vs_core_get(c, out);
	return rc;
}

void vs_core_tick(vs_core *c, uint64_t now_ms)
{
	assert(c != NULL);
	if (c->recovering)
		try_adopt(c, now_ms); /* nothing changes by silence alone; kept for symmetry */
	else
		advance(c, now_ms);
	/* Forget servers long gone that hold no role. */
	size_t j = 0;
	for (size_t i = 0; i < c->nservers; i++) {
		vs_core_server *s = &c->servers[i];
		bool gone = now_ms >= s->last_ping_ms && now_ms - s->last_ping_ms >= 10 * c->dead_ms;
		if (gone && !in_view(c, s->name))
			continue;
		if (i != j)
			c->servers[j] = *s;
		j++;
	}
	c->nservers = j;
}

void vs_core_restore(vs_core *c, const viewservice_view *v, bool acked, unsigned p_last,
                     unsigned b_last, uint64_t now_ms)
{
	c->view = *v;
	c->acked = acked;
	c->recovering = false;
	const char *names[2] = {v->primary, v->backup};
	unsigned last[2] = {p_last, b_last};
	for (int i = 0; i < 2; i++) {
		if (names[i][0] == '\0' || find_server(c, names[i]) != NULL)
			continue;
		vs_core_server *s = add_server(c, names[i]);
		if (s == NULL)
			continue; /* it will be added at its next ping */
		s->last_ping_ms = now_ms;
		s->last_viewnum = last[i];
	}
}

unsigned vs_core_last_viewnum(const vs_core *c, const char *name)
{
	for (size_t i = 0; i < c->nservers; i++)
		if (strcmp(c->servers[i].name, name) == 0)
			return c->servers[i].last_viewnum;
	return 0;
}

void vs_core_get(const vs_core *c, viewservice_view *out)
{
	assert(c != NULL && out != NULL);
	*out = c->view;
}

bool vs_core_check_step(const viewservice_view *prev, const viewservice_view *next, char *why,
                        size_t len)
{
	const viewservice_view *a = prev, *b = next;
	if (b->viewnum < a->viewnum) {
		snprintf(why, len, "viewnum went back from %u to %u", a->viewnum, b->viewnum);
		return false;
	}
	if (b->viewnum == a->viewnum &&
	    (strcmp(a->primary, b->primary) != 0 || strcmp(a->backup, b->backup) != 0)) {
		snprintf(why, len, "view %u changed content", b->viewnum);
		return false;
	}
	if (b->viewnum == 0 ? (b->primary[0] != '\0' || b->backup[0] != '\0')
	                    : b->primary[0] == '\0') {
		snprintf(why, len, "view %u: primary \"%s\"", b->viewnum, b->primary);
		return false;
	}
	if (b->backup[0] != '\0' && strcmp(b->primary, b->backup) == 0) {
		snprintf(why, len, "view %u: primary and backup are both %s", b->viewnum, b->primary);
		return false;
	}
	if (a->viewnum >= 1 && b->viewnum == a->viewnum + 1 && strcmp(b->primary, a->primary) != 0 &&
	    strcmp(b->primary, a->backup) != 0) {
		snprintf(why, len, "view %u: primary %s was neither primary nor backup of view %u",
		         b->viewnum, b->primary, a->viewnum);
		return false;
	}
	return true;
}
