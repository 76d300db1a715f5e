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
 * Servers silent for 10 * dead_ms and in no role are forgotten (bounded memory).
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

	/* Servers leaving the view forget their restart: they are idle from now on. */
	vs_core_server *op = find_server(c, c->view.primary);
	vs_core_server *ob = find_server(c, c->view.backup);
	if (op != NULL && strcmp(op->name, np) != 0 && strcmp(op->name, nb) != 0)
		op->restarted = false;
	if (ob != NULL && strcmp(ob->name, np) != 0 && strcmp(ob->name, nb) != 0)
		ob->restarted = false;

	c->view.viewnum++;
	strcpy(c->view.primary, np);
	strcpy(c->view.backup, nb);
	c->acked = false;
}

int vs_core_ping(vs_core *c, const char *me, unsigned viewnum, uint64_t now_ms,
                 viewservice_view *out)
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
	}
	advance(c, now_ms);
	vs_core_get(c, out);
	return rc;
}

void vs_core_tick(vs_core *c, uint64_t now_ms)
{
	assert(c != NULL);
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
