/*
 * tests/lib/lin_frontier.c — the checker's second engine: just-in-time
 * linearization over the events in time order, keeping every possible
 * configuration (value, running ops already in). See linearizability.c for
 * how it is used and lin_search.c for the values and prunings it shares.
 */
#include "lin_internal.h"

#include <string.h>

/* ------------------------------------------------------------ the frontier engine */

/*
 * A second engine, used when the depth-first search finds a history ILLEGAL
 * or gives up: just-in-time linearization (Lowe) over the events in time
 * order, keeping the whole frontier of possible configurations (value, which
 * of the running ops already took effect). A call adds a running op; a return
 * replaces the frontier by every configuration reachable by linearizing
 * running ops until the returning one is in (and no further: the rest waits
 * for later returns). Reads go first when they can (same dominance as in the
 * DFS) and dead reads prune as in the DFS. An empty frontier after a return
 * is a violation found exactly where it happens, with no backtracking over
 * the past: the ops since the last time the frontier held one configuration,
 * started from that configuration's value, are a failing sub-history.
 */
typedef struct {
	search *s;
	int n, SW, nslots;
	int8_t *state;    /* per op: 0 not invoked, 1 running, 2 returned */
	int32_t *slot_of; /* per op: its slot while running */
	int32_t *slot_op; /* per slot: the running op, or -1 */
	int32_t *gets;    /* the Gets by invoke order … */
	int ngets, gpos;  /* … and the first not yet invoked */
	uint64_t *L;      /* the configuration being expanded: one bit per slot */
	/* visited (value, L) pairs of the current return: entries of 2 + SW words,
	 * [epoch << 32 | value][hash][L]; an entry of another epoch is empty */
	uint64_t *vis;
	size_t viscap, viscount;
	uint64_t epoch;
	/* the next frontier */
	int32_t *nv;
	uint64_t *nL;
	size_t nn, ncap;
	size_t steps, visited_total;
	int64_t refuter_inv; /* the latest invoke of a Get that pruned since the pin */
	bool lookahead;      /* prune with Gets not yet invoked too */
	bool stop;
	give_up why;
} fx;

static bool fx_bit(const uint64_t *L, int a)
{
	return L[a / 64] >> (a % 64) & 1;
}

static uint64_t fx_hash(const fx *x, int32_t v)
{
	uint64_t h = mix64((uint64_t)(uint32_t)v + 0x51ed270b27f3a6c5ULL);
	for (int i = 0; i < x->SW; i++)
		h = mix64(h ^ x->L[i]);
	return h;
}

static size_t fx_bytes(const fx *x)
{
	return x->viscap * (2 + (size_t)x->SW) * 8 + x->ncap * (4 + (size_t)x->SW * 8);
}

/* fx_visit: remember (v, x->L) for this return; false if already seen. */
static bool fx_visit(fx *x, int32_t v)
{
	size_t stride = 2 + (size_t)x->SW;
	if ((x->viscount + 1) * 2 > x->viscap) {
		size_t ocap = x->viscap, ncap = ocap ? ocap * 2 : 1024;
		if (fx_bytes(x) + (ncap - ocap) * stride * 8 > x->s->max_bytes) {
			x->stop = true;
			x->why = WHY_MEMORY;
			return false;
		}
		uint64_t *old = x->vis;
		x->vis = xcalloc(ncap * stride, 8);
		x->viscap = ncap;
		for (size_t i = 0; i < ocap; i++) {
			const uint64_t *e = &old[i * stride];
			if (e[0] >> 32 != x->epoch)
				continue;
			size_t b = (size_t)e[1] & (ncap - 1);
			while (x->vis[b * stride] >> 32 == x->epoch)
				b = (b + 1) & (ncap - 1);
			memcpy(&x->vis[b * stride], e, stride * 8);
		}
		free(old);
	}
	uint64_t h = fx_hash(x, v), tag = x->epoch << 32 | (uint32_t)v;
	size_t b = (size_t)h & (x->viscap - 1);
	for (; x->vis[b * stride] >> 32 == x->epoch; b = (b + 1) & (x->viscap - 1)) {
		const uint64_t *e = &x->vis[b * stride];
		if (e[0] == tag && e[1] == h && memcmp(e + 2, x->L, (size_t)x->SW * 8) == 0)
			return false;
	}
	uint64_t *e = &x->vis[b * stride];
	e[0] = tag;
	e[1] = h;
	memcpy(e + 2, x->L, (size_t)x->SW * 8);
	x->viscount++;
	x->visited_total++;
	return true;
}

static void fx_emit(fx *x, int32_t v)
{
	if (x->nn == x->ncap) {
		x->ncap = x->ncap ? x->ncap * 2 : 64;
		x->nv = xrealloc(x->nv, x->ncap * sizeof *x->nv);
		x->nL = xrealloc(x->nL, x->ncap * (size_t)x->SW * 8);
	}
	x->nv[x->nn] = v;
	memcpy(&x->nL[x->nn * (size_t)x->SW], x->L, (size_t)x->SW * 8);
	x->nn++;
}

/* fx_done: has op p taken effect in the configuration x->L? */
static bool fx_done(const fx *x, int p)
{
	return x->state[p] == 2 || (x->state[p] == 1 && fx_bit(x->L, x->slot_of[p]));
}

static bool fx_get_alive(fx *x, int g, int32_t v)
{
	search *s = x->s;
	if (lin_prefix_of(s, v, g))
		return true;
	for (int32_t i = s->reset_at[g]; i < s->reset_at[g + 1]; i++)
		if (!fx_done(x, s->reset_list[i]))
			return true;
	return false;
}

/* fx_alive: can every running Get not yet in, and the next Gets to come,
 * still read their results after value v? */
static bool fx_alive(fx *x, int32_t v)
{
	for (int a = 0; a < x->nslots; a++) {
		int op = x->slot_op[a];
		if (op >= 0 && !fx_bit(x->L, a) && x->s->ops[op].kind == TH_OP_GET &&
		    !fx_get_alive(x, op, v))
			return false;
	}
	for (int i = x->gpos, k = 0; x->lookahead && i < x->ngets && k < LOOKAHEAD_GETS; i++) {
		if (x->state[x->gets[i]] != 0)
			continue;
		if (!fx_get_alive(x, x->gets[i], v)) {
			/* a Get still to come refuted this branch: the witness must hold it */
			if (x->s->ops[x->gets[i]].inv > x->refuter_inv)
				x->refuter_inv = x->s->ops[x->gets[i]].inv;
			return false;
		}
		k++;
	}
	return true;
}

static void fx_expand(fx *x, int32_t v, int so)
{
	search *s = x->s;
	if (x->stop)
		return;
	if ((++x->steps & 1023) == 0) {
		if (s->kill && atomic_load(s->kill)) {
			x->stop = true;
			x->why = WHY_KILLED;
			return;
		}
		if (s->deadline && lin_now(s) >= s->deadline) {
			x->stop = true;
			x->why = WHY_DEADLINE;
			return;
		}
		if (s->max_steps && x->steps >= s->max_steps) {
			x->stop = true;
			x->why = WHY_STEPS;
			return;
		}
	}
	if (fx_bit(x->L, so)) {
		fx_emit(x, v);
		return;
	}
	int32_t nv;
	for (int a = 0; a < x->nslots; a++) { /* a read that can go now goes now */
		int op = x->slot_op[a];
		if (op < 0 || fx_bit(x->L, a) || s->ops[op].kind != TH_OP_GET || !lin_step(s, v, op, &nv))
			continue;
		x->L[a / 64] |= 1ULL << (a % 64);
		if (fx_visit(x, v))
			fx_expand(x, v, so);
		x->L[a / 64] &= ~(1ULL << (a % 64));
		return;
	}
	for (int a = 0; a < x->nslots && !x->stop; a++) {
		int op = x->slot_op[a];
		if (op < 0 || fx_bit(x->L, a) || s->ops[op].kind == TH_OP_GET)
			continue;
		lin_step(s, v, op, &nv);
		x->L[a / 64] |= 1ULL << (a % 64);
		if ((nv == v || fx_alive(x, nv)) && fx_visit(x, nv))
			fx_expand(x, nv, so);
		x->L[a / 64] &= ~(1ULL << (a % 64));
	}
}

/*
 * Open writes dominate. For an open-ended write U, the configuration (v, L)
 * can do everything (v, L + U) can: U may simply never take effect. So among
 * configurations with the same value and the same finite-return ops in, only
 * those whose set of open writes in is minimal are kept. Without this, every
 * timed-out write whose effect a later Put hides doubles the frontier.
 */
typedef struct {
	int32_t value;
	uint64_t fhash; /* hash of L without the open slots */
	size_t idx;
} fx_key;

static int fx_key_cmp(const void *a, const void *b)
{
	const fx_key *x = a, *y = b;
	if (x->value != y->value)
		return x->value < y->value ? -1 : 1;
	if (x->fhash != y->fhash)
		return x->fhash < y->fhash ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static void fx_prune_dominated(fx *x)
{
	int SW = x->SW;
	uint64_t *omask = xcalloc((size_t)SW, 8);
	bool any = false;
	for (int a = 0; a < x->nslots; a++)
		if (x->slot_op[a] >= 0 && x->s->open_rank[x->slot_op[a]] >= 0) {
			omask[a / 64] |= 1ULL << (a % 64);
			any = true;
		}
	if (!any || x->nn < 2) {
		free(omask);
		return;
	}
	fx_key *k = xmalloc(x->nn * sizeof *k);
	for (size_t c = 0; c < x->nn; c++) {
		const uint64_t *L = &x->nL[c * (size_t)SW];
		uint64_t h = 0x2545f4914f6cdd1dULL;
		for (int w = 0; w < SW; w++)
			h = mix64(h ^ (L[w] & ~omask[w]));
		k[c] = (fx_key){ x->nv[c], h, c };
	}
	qsort(k, x->nn, sizeof *k, fx_key_cmp);
	bool *drop = xcalloc(x->nn, sizeof *drop);
	for (size_t i = 0; i < x->nn;) {
		size_t j = i;
		while (j < x->nn && k[j].value == k[i].value && k[j].fhash == k[i].fhash)
			j++;
		for (size_t p = i; p < j; p++)
			for (size_t q = i; q < j && !drop[k[p].idx]; q++) {
				if (p == q || drop[k[q].idx])
					continue;
				const uint64_t *A = &x->nL[k[p].idx * (size_t)SW];
				const uint64_t *B = &x->nL[k[q].idx * (size_t)SW];
				bool same_finite = true, b_sub_a = true;
				for (int w = 0; w < SW; w++) {
					if ((A[w] & ~omask[w]) != (B[w] & ~omask[w]))
						same_finite = false;
					if ((B[w] & omask[w]) & ~(A[w] & omask[w]))
						b_sub_a = false;
				}
				/* B's open writes are a subset of A's: A is dominated */
				if (same_finite && b_sub_a)
					drop[k[p].idx] = true;
			}
		i = j;
	}
	size_t m = 0;
	for (size_t c = 0; c < x->nn; c++) {
		if (drop[c])
			continue;
		x->nv[m] = x->nv[c];
		memmove(&x->nL[m * (size_t)SW], &x->nL[c * (size_t)SW], (size_t)SW * 8);
		m++;
	}
	x->nn = m;
	free(drop);
	free(k);
	free(omask);
}


void lin_fout_destroy(fout *o)
{
	free(o->pin_value);
	free(o->pin_done);
	for (int i = 0; i < FX_SHOW; i++) {
		free(o->before_value[i]);
		free(o->before_ops[i]);
	}
	memset(o, 0, sizeof *o);
}

void lin_frontier_run(search *s, bool lookahead, fout *out)
{
	int n = s->n, ne = 2 * n;
	memset(out, 0, sizeof *out);
	out->pin_time = INT64_MIN;
	out->fail = -1;
	event *ev = xmalloc((size_t)ne * sizeof *ev + 1);
	for (int i = 0; i < n; i++) {
		ev[2 * i] = (event){ s->ops[i].inv, 0, i };
		ev[2 * i + 1] = (event){ s->ops[i].ret, 1, i };
	}
	qsort(ev, (size_t)ne, sizeof *ev, lin_event_cmp);
	fx x;
	memset(&x, 0, sizeof x);
	x.s = s;
	x.n = n;
	x.lookahead = lookahead;
	for (int e = 0, run = 0; e < ne; e++) { /* slots needed: the most ops running at once */
		run += ev[e].is_ret ? -1 : 1;
		if (run > x.nslots)
			x.nslots = run;
	}
	x.SW = (x.nslots + 63) / 64;
	if (x.SW == 0)
		x.SW = 1;
	x.state = xcalloc((size_t)n + 1, 1);
	x.slot_of = xmalloc((size_t)n * sizeof *x.slot_of + 1);
	x.slot_op = xmalloc((size_t)x.nslots * sizeof *x.slot_op + 1);
	int32_t *free_slots = xmalloc((size_t)x.nslots * sizeof *free_slots + 1);
	int nfree = 0;
	for (int a = x.nslots - 1; a >= 0; a--) {
		x.slot_op[a] = -1;
		free_slots[nfree++] = a;
	}
	x.gets = xmalloc((size_t)n * sizeof *x.gets + 1);
	for (int i = 0; i < n; i++)
		if (s->ops[i].kind == TH_OP_GET)
			x.gets[x.ngets++] = i;
	x.L = xcalloc((size_t)x.SW, 8);
	/* the frontier: starts with the root value and nothing running */
	size_t nf = 1, fcap = 64;
	int32_t *fv = xmalloc(fcap * sizeof *fv);
	uint64_t *fL = xcalloc(fcap * (size_t)x.SW, 8);
	fv[0] = 0;
	int pin_e = -1;
	int32_t *pin_slot_op = xmalloc((size_t)x.nslots * sizeof *pin_slot_op + 1);
	uint64_t *pin_L = xcalloc((size_t)x.SW, 8);
	int32_t pin_v = 0;
	out->v = TH_LIN_OK;
	out->max_frontier = 1;
	x.refuter_inv = INT64_MIN;

	for (int e = 0; e < ne; e++) {
		int op = ev[e].op;
		if (!ev[e].is_ret) {
			int a = free_slots[--nfree];
			x.state[op] = 1;
			x.slot_of[op] = a;
			x.slot_op[a] = op;
			while (x.gpos < x.ngets && x.state[x.gets[x.gpos]] != 0)
				x.gpos++;
			continue;
		}
		if (ev[e].t == OPEN)
			break; /* only open-ended writes remain: leave them out */
		int so = x.slot_of[op];
		x.epoch++;
		x.viscount = 0;
		x.nn = 0;
		for (size_t c = 0; c < nf && !x.stop; c++) {
			memcpy(x.L, &fL[c * (size_t)x.SW], (size_t)x.SW * 8);
			if (fx_visit(&x, fv[c]))
				fx_expand(&x, fv[c], so);
		}
		if (x.stop) {
			out->v = TH_LIN_UNKNOWN;
			out->why = x.why;
			break;
		}
		if (x.nn == 0) {
			out->v = TH_LIN_ILLEGAL;
			out->fail = op;
			out->horizon = ev[e].t > x.refuter_inv ? ev[e].t : x.refuter_inv;
			out->nbefore = (int)nf;
			for (size_t c = 0; c < nf && c < FX_SHOW; c++) {
				out->before_value[c] = lin_materialize(s, fv[c]);
				int *l = xmalloc(((size_t)x.nslots + 1) * sizeof *l);
				int k = 0;
				for (int a = 0; a < x.nslots; a++)
					if (fx_bit(&fL[c * (size_t)x.SW], a) && x.slot_op[a] >= 0)
						l[k++] = x.slot_op[a];
				l[k] = -1;
				out->before_ops[c] = l;
			}
			break;
		}
		/* the returning op is in every new configuration: drop its slot */
		for (size_t c = 0; c < x.nn; c++)
			x.nL[c * (size_t)x.SW + (size_t)so / 64] &= ~(1ULL << (so % 64));
		x.slot_op[so] = -1;
		fx_prune_dominated(&x);
		if (x.nn > fcap) {
			fcap = x.nn;
			fv = xrealloc(fv, fcap * sizeof *fv);
			fL = xrealloc(fL, fcap * (size_t)x.SW * 8);
		}
		nf = x.nn;
		memcpy(fv, x.nv, nf * sizeof *fv);
		memcpy(fL, x.nL, nf * (size_t)x.SW * 8);
		if (nf > out->max_frontier)
			out->max_frontier = nf;
		x.state[op] = 2;
		x.slot_op[so] = -1;
		free_slots[nfree++] = so;
		if (nf == 1) {
			x.refuter_inv = INT64_MIN;
			pin_e = e;
			pin_v = fv[0];
			memcpy(pin_L, fL, (size_t)x.SW * 8);
			memcpy(pin_slot_op, x.slot_op, (size_t)x.nslots * sizeof *pin_slot_op);
		}
	}
	out->visited = x.visited_total;
	if (out->v == TH_LIN_ILLEGAL) {
		out->pin_value = lin_materialize(s, pin_v);
		out->pin_done = xcalloc((size_t)n + 1, sizeof *out->pin_done);
		if (pin_e >= 0) {
			out->pin_time = ev[pin_e].t;
			for (int e = 0; e <= pin_e; e++)
				if (ev[e].is_ret)
					out->pin_done[ev[e].op] = true;
			for (int a = 0; a < x.nslots; a++)
				if (pin_slot_op[a] >= 0 && fx_bit(pin_L, a))
					out->pin_done[pin_slot_op[a]] = true;
		}
	}
	free(ev);
	free(x.state);
	free(x.slot_of);
	free(x.slot_op);
	free(free_slots);
	free(x.gets);
	free(x.L);
	free(x.vis);
	free(x.nv);
	free(x.nL);
	free(fv);
	free(fL);
	free(pin_slot_op);
	free(pin_L);
}

