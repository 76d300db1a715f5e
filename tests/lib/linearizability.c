/*
 * tests/lib/linearizability.c — the linearizability checker (see
 * linearizability.h): this file holds the driver (grouping by key, threads,
 * verdicts), the shrinking of failing sub-histories and the reports; the
 * engines are in lin_search.c and lin_frontier.c (lin_internal.h).
 * Written from the published algorithms: Wing & Gong
 * (1993), Lowe, "Testing for linearizability" (2017), and the memoization and
 * P-compositionality ideas described for Porcupine (Horn & Kroening 2015).
 *
 * Partitioning. Linearizability is local: a history of a map is linearizable
 * iff the sub-history of every key is. Ops are grouped by key and each key is
 * checked on its own (a small thread pool; the first ILLEGAL key stops the
 * others through a shared flag). Open-ended writes that no read could have
 * observed (no Get's result contains the argument) are dropped first: they
 * may never have happened, and keeping them makes the search try every subset.
 *
 * Engine 1, depth-first (Wing–Gong/Lowe, as in Porcupine). The 2n call and
 * return events are sorted by time (a call before a return at the same µs:
 * ties overlap) into a doubly-linked list. From the head, a call whose op the
 * model accepts is linearized: lifted out with its return (dancing links) and
 * pushed with the value before it; the walk restarts at the head. Reaching a
 * return means its op should be in already: pop and try the next call. Empty
 * stack there: ILLEGAL; empty list: OK. Open-ended ops return at +inf: reaching
 * one means only they remain, and leaving them out is legal. Memo: a (set of
 * linearized ops, value) seen before is not expanded again. Two prunings keep
 * it near-linear on recorded histories: eager reads (a Get that reads the
 * current value goes now — moving a read earlier never breaks a linearization
 * — and if that branch fails the level fails) and dead reads (after a write,
 * a Get of the window or one of the next two Gets to come that can no longer
 * read its result — the value is not a prefix of it and no pending Put starts
 * it — kills the branch at once instead of at that Get's return).
 *
 * Engine 2, the frontier (Lowe's just-in-time linearization, breadth-first):
 * events in time order; the frontier is every possible configuration (value,
 * which running ops took effect); at a return, it becomes every configuration
 * reachable by linearizing running ops until the returning one is in. Same
 * prunings, plus open-write dominance (see fx_prune_dominated). An empty
 * frontier pinpoints the violation with no backtracking over the past, and
 * the ops since the frontier last held one configuration, started from its
 * value, are a small failing sub-history. The DFS runs first (fast on legal
 * histories) with a quarter of the time (≤ 5 s); on ILLEGAL (to localize) or a
 * give-up (to decide), the frontier engine runs. If they disagree, that is a
 * checker bug, reported as UNKNOWN with a loud message.
 *
 * Memo key (DFS): canonical and compact: m = the first finite op not yet in,
 * the open ops' bits, and the bitset words from m/64 to the highest op in,
 * plus the value id; hashed by a Zobrist hash of the set (one random word per
 * op, XORed in O(1) per push/pop) mixed with the value id; a hit is confirmed
 * word by word. Frontier: (value id, running-op bits), per return.
 *
 * Values. Append concatenates, so values can be long: a value is an interned
 * node — the root "", a Put's argument, or (parent, an Append's suffix) —
 * carrying the 64-bit FNV-1a hash of its whole content (computed from its
 * parent's) and its length; equal hash and length are confirmed exactly by
 * walking the chains, so value ids are equal iff contents are. Transitions are
 * cached per (value, Append); a Get caches the value id it matched; prefix
 * tests are cached per (value, Get).
 *
 * Complexity. Worst case exponential (the problem is NP-complete). Work is
 * bounded by the distinct (set, value) pairs (DFS) or configurations
 * (frontier) reached, each O(1) amortized plus the window scans. Recorded
 * histories check in near-linear time (10,000 ops from 16 clients: tens of
 * ms). A deadline (checked every 1024 steps, on an injectable clock), a step
 * budget (tests) and a memory bound turn runaway searches into UNKNOWN.
 *
 * Failing sub-history. From the frontier engine (re-run without look-ahead on
 * the ops up to the violation, so that the read that breaks it is the one
 * reported). If only the DFS could tell, the ops are shrunk while the DFS
 * stays ILLEGAL: cut after the latest dead end, cut before a Put that overlaps
 * nothing, drop Gets in halving chunks; every adopted subset is re-checked.
 */
#include "linearizability.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "lin_internal.h"

#define MINIMIZE_BUDGET_US 2000000
#define REPORT_MAX_OPS 60

/* ------------------------------------------------------------ one check of a subset */

/* What one search over a subset of a key's ops found (indices are into the
 * key's kop array). */
typedef struct {
	th_lin_verdict v;
	give_up why;
	size_t memo;
	int depth;        /* ILLEGAL: the longest linearizable prefix … */
	int *seq;         /* … its ops */
	char *value;      /* … and the value after it */
	int stuck;        /* the op whose return the search could not pass */
	int64_t far_time; /* the latest return time where a branch stopped */
} outcome;

static void outcome_destroy(outcome *o)
{
	free(o->seq);
	free(o->value);
	memset(o, 0, sizeof *o);
}

typedef struct {
	uint64_t mask;
	size_t max_bytes;
	uint64_t max_steps;
	int64_t (*clock_us)(void); /* NULL = now_us */
} knobs;

/* knob_now: the check's clock (µs): the injected one, if any. */
static int64_t knob_now(const knobs *k)
{
	return k->clock_us ? k->clock_us() : now_us();
}

static th_lin_verdict check_subset(const kop *all, const int *idx, int m, const knobs *k,
                                   int64_t deadline, atomic_int *kill, outcome *out)
{
	kop *ops = xmalloc((size_t)m * sizeof *ops + 1);
	for (int i = 0; i < m; i++)
		ops[i] = all[idx[i]];
	search s;
	lin_search_init(&s, ops, m, k->mask, deadline, kill, k->max_bytes);
	s.max_steps = k->max_steps;
	s.clock_us = k->clock_us;
	memset(out, 0, sizeof *out);
	out->v = lin_search_run(&s, &out->far_time);
	out->why = s.why;
	out->memo = s.nmemo;
	out->stuck = -1;
	if (out->v == TH_LIN_ILLEGAL && s.best_depth < 0) { /* cannot happen; stay safe */
		s.best_depth = 0;
		s.best_value = 0;
		s.best_stuck = 0;
	}
	if (out->v == TH_LIN_ILLEGAL) {
		out->depth = s.best_depth;
		out->seq = xmalloc((size_t)s.best_depth * sizeof *out->seq + 1);
		for (int i = 0; i < s.best_depth; i++)
			out->seq[i] = idx[s.best_seq[i]];
		out->value = lin_materialize(&s, s.best_value);
		out->stuck = idx[s.best_stuck];
	}
	lin_search_destroy(&s);
	free(ops);
	return out->v;
}

/* ------------------------------------------------------------ minimization */

/* try: check the candidate subset; adopt it into (cur, ncur, best) when ILLEGAL. */
static bool try_subset(const kop *all, int *cur, int *ncur, int *cand, int ncand,
                       const knobs *k, int64_t budget, outcome *best)
{
	if (ncand >= *ncur || ncand == 0)
		return false;
	outcome o;
	if (check_subset(all, cand, ncand, k, budget, NULL, &o) != TH_LIN_ILLEGAL) {
		outcome_destroy(&o);
		return false;
	}
	memcpy(cur, cand, (size_t)ncand * sizeof *cur);
	*ncur = ncand;
	outcome_destroy(best);
	*best = o;
	return true;
}

/* truncate: keep the ops invoked no later than the latest dead end. */
static void shrink_truncate(const kop *all, int *cur, int *ncur, int *cand, const knobs *k,
                            int64_t budget, outcome *best)
{
	for (;;) {
		int m = 0;
		for (int i = 0; i < *ncur; i++)
			if (all[cur[i]].inv <= best->far_time)
				cand[m++] = cur[i];
		if (knob_now(k) >= budget || !try_subset(all, cur, ncur, cand, m, k, budget, best))
			return;
	}
}

/* cut: drop everything before a Put that overlaps no other op (the value
 * after it is its argument whatever came before). */
static void shrink_cut(const kop *all, int *cur, int *ncur, int *cand, const knobs *k,
                       int64_t budget, outcome *best)
{
	for (int pi = *ncur - 1; pi > 0 && knob_now(k) < budget; pi--) {
		const kop *p = &all[cur[pi]];
		if (p->kind != TH_OP_PUT || p->ret == OPEN)
			continue;
		bool alone = true;
		for (int j = 0; j < *ncur && alone; j++) {
			const kop *q = &all[cur[j]];
			if (j != pi && q->inv <= p->ret && q->ret >= p->inv)
				alone = false;
		}
		if (!alone)
			continue;
		int m = 0;
		for (int j = 0; j < *ncur; j++)
			if (all[cur[j]].inv >= p->inv)
				cand[m++] = cur[j];
		if (try_subset(all, cur, ncur, cand, m, k, budget, best))
			return;
	}
}

/* gets: drop Gets in halving chunks while the subset stays ILLEGAL. */
static void shrink_gets(const kop *all, int *cur, int *ncur, int *cand, const knobs *k,
                        int64_t budget, outcome *best)
{
	int ngets = 0;
	for (int i = 0; i < *ncur; i++)
		ngets += all[cur[i]].kind == TH_OP_GET;
	for (int chunk = ngets / 2 > 0 ? ngets / 2 : 1; chunk >= 1; chunk /= 2) {
		/* chunk c covers the c-th run of `chunk` Gets counted from the end */
		for (int c = 0; knob_now(k) < budget; c++) {
			int lo = c * chunk, hi = lo + chunk, g = 0, m = 0;
			bool any = false;
			for (int i = *ncur - 1; i >= 0; i--) {
				int id = cur[i];
				if (all[id].kind == TH_OP_GET) {
					bool drop = g >= lo && g < hi && id != best->stuck;
					g++;
					if (drop) {
						any = true;
						continue;
					}
				}
				cand[m++] = id;
			}
			if (lo >= g)
				break;
			if (!any)
				continue;
			/* cand is reversed: restore invoke order */
			for (int a = 0, b = m - 1; a < b; a++, b--) {
				int t = cand[a];
				cand[a] = cand[b];
				cand[b] = t;
			}
			if (try_subset(all, cur, ncur, cand, m, k, budget, best))
				c--; /* the same position now holds the next chunk */
		}
		if (chunk == 1)
			break;
	}
}

/* ------------------------------------------------------------ reporting */

static void put_value(FILE *f, const char *v, size_t len)
{
	const size_t edge = 28;
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		if (len > 2 * edge + 8 && i == edge) {
			fputs("…", f);
			i = len - edge;
		}
		unsigned char c = (unsigned char)v[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 32 || c >= 127)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
	if (len > 2 * edge + 8)
		fprintf(f, " (%zu bytes)", len);
}

static void put_time(FILE *f, int64_t t, int64_t t0)
{
	if (t == OPEN)
		fprintf(f, "%10s", "inf");
	else
		fprintf(f, "%10.3f", (double)(t - t0) / 1000.0);
}

static void put_op(FILE *f, const kop *o, int64_t t0)
{
	fprintf(f, "#%-6d c%-3d [", o->id, o->client);
	put_time(f, o->inv, t0);
	fputs(" ..", f);
	put_time(f, o->ret, t0);
	fprintf(f, "] %-6s ", th_op_kind_name(o->kind));
	if (o->kind == TH_OP_GET)
		fputs("-> ", f);
	put_value(f, o->val, o->len);
	if (o->ret == OPEN)
		fputs("  (outcome unknown)", f);
}

/* string_dead: the string version of get_alive, for the report: could Get g
 * (of the witness) still read its result after value `v`, given the Puts of
 * the witness not yet linearized (except `cand`, just used)? */
static bool string_dead(const kop *all, const int *cur, int ncur, const bool *done, int cand,
                        int g, const char *v)
{
	const kop *go = &all[g];
	size_t vl = strlen(v);
	if (vl <= go->len && memcmp(go->val, v, vl) == 0)
		return false;
	for (int i = 0; i < ncur; i++) {
		const kop *p = &all[cur[i]];
		if (cur[i] != cand && !done[cur[i]] && p->kind == TH_OP_PUT && p->inv <= go->ret &&
		    p->len <= go->len && memcmp(go->val, p->val, p->len) == 0)
			return false;
	}
	return true;
}

static char *illegal_report(const char *key, const kop *all, int nall, const int *cur, int ncur,
                            const outcome *o, int64_t t0)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);
	if (f == NULL)
		abort();
	bool *done = xcalloc((size_t)nall, sizeof *done);
	for (int i = 0; i < o->depth; i++)
		done[o->seq[i]] = true;
	const kop *stuck = &all[o->stuck];

	/* Why each op that could go next fails: a Get reads something else; a
	 * write leaves some later Get unable to read its result, or just leads
	 * to a dead end further on. */
	int *why = xmalloc((size_t)ncur * sizeof *why + 1); /* refuting op index into all, or -1 */
	int64_t horizon = stuck->ret;
	for (int i = 0; i < ncur; i++) {
		const kop *p = &all[cur[i]];
		why[i] = -1;
		if (done[cur[i]] || p->inv > stuck->ret || p->kind == TH_OP_GET)
			continue;
		char *nv = NULL;
		if (p->kind == TH_OP_PUT)
			nv = strdup(p->val);
		else if (asprintf(&nv, "%s%s", o->value, p->val) < 0)
			nv = NULL;
		if (nv == NULL)
			abort();
		for (int j = 0; j < ncur && why[i] < 0; j++)
			if (j != i && !done[cur[j]] && all[cur[j]].kind == TH_OP_GET &&
			    string_dead(all, cur, ncur, done, cur[i], cur[j], nv))
				why[i] = cur[j];
		free(nv);
		if (why[i] >= 0 && all[why[i]].ret > horizon)
			horizon = all[why[i]].ret;
	}

	fprintf(f, "key ");
	put_value(f, key, strlen(key));
	fprintf(f, ": NOT LINEARIZABLE; a failing sub-history of %d of its %d ops", ncur, nall);
	fprintf(f, " (times in ms since the first invoke; * = in the longest linearizable prefix):\n");
	int shown = 0, skipped = 0, later = 0;
	for (int i = 0; i < ncur; i++) {
		if (all[cur[i]].inv <= horizon)
			shown++;
		else
			later++;
	}
	if (shown > REPORT_MAX_OPS)
		skipped = shown - REPORT_MAX_OPS;
	if (skipped)
		fprintf(f, "    … %d earlier ops not shown\n", skipped);
	for (int i = 0, k = 0; i < ncur; i++) {
		const kop *p = &all[cur[i]];
		if (p->inv > horizon || k++ < skipped)
			continue;
		fprintf(f, "  %c ", done[cur[i]] ? '*' : ' ');
		put_op(f, p, t0);
		fputc('\n', f);
	}
	if (later)
		fprintf(f, "    … and %d later ops\n", later);
	fprintf(f, "  the longest linearizable prefix has %d ops and leaves the value ", o->depth);
	put_value(f, o->value, strlen(o->value));
	fprintf(f, ";\n  then ");
	put_op(f, stuck, t0);
	fprintf(f, "\n  must take effect by ");
	put_time(f, stuck->ret, t0);
	fprintf(f, " ms, but no op that may go next fits:\n");
	for (int i = 0; i < ncur; i++) {
		const kop *p = &all[cur[i]];
		if (done[cur[i]] || p->inv > stuck->ret)
			continue;
		fprintf(f, "    ");
		put_op(f, p, t0);
		if (p->kind == TH_OP_GET && strcmp(p->val, o->value) != 0) {
			fprintf(f, "\n        <- reads something else than ");
			put_value(f, o->value, strlen(o->value));
		} else if (p->kind == TH_OP_GET) {
			fprintf(f, "\n        <- reads the value, but the ops after it do not fit");
		} else if (why[i] >= 0) {
			fprintf(f, "\n        <- then #%d (%s -> ", all[why[i]].id,
			        th_op_kind_name(all[why[i]].kind));
			put_value(f, all[why[i]].val, all[why[i]].len);
			fprintf(f, ") could no longer read its value");
		} else {
			fprintf(f, "\n        <- could go next, but every order after it fails");
		}
		fputc('\n', f);
	}
	fclose(f);
	free(why);
	free(done);
	return buf;
}

/* ------------------------------------------------------------ the driver */

typedef struct {
	const char *key;
	const int *ids;   /* history ids, by invoke time */
	int n;
	int pruned;       /* open-ended writes nobody could have seen */
	th_lin_verdict v;
	give_up why;
	size_t memo;
	int *witness;     /* ILLEGAL: history ids */
	int nwitness;
	char *witness_value; /* ILLEGAL: the value the witness starts from */
	char *report;
} keyjob;

typedef struct {
	const th_history *h;
	keyjob *jobs;
	int njobs;
	atomic_int next;
	atomic_int kill;
	atomic_llong cpu_us; /* CPU time of the workers */
	int64_t deadline;
	int64_t t0;
	knobs k;
	bool minimize;
	int engine;
} driver;

static kop make_kop(const th_op *o)
{
	kop k = { .id = o->id, .client = o->client, .kind = o->kind, .inv = o->invoke_us };
	k.val = o->kind == TH_OP_GET ? o->result : o->arg;
	if (k.val == NULL)
		k.val = "";
	k.len = strlen(k.val);
	k.hash = fnv(FNV_OFFSET, k.val, k.len);
	k.ret = o->status == TH_OP_OK ? o->return_us : OPEN;
	if (k.ret < k.inv)
		k.ret = k.inv;
	return k;
}

/*
 * unobservable: open-ended write `u` can be left out without changing the
 * verdict. If `u` took effect, every Get between it and the next Put in the
 * order reads a value containing u's argument (an Append) or starting with it
 * (a Put); when no Get that may follow `u` (one returning after u's invoke)
 * reads such a value, no Get lies between them, so dropping `u` from any
 * linearization leaves a linearization. An empty Append changes nothing.
 * Pruning these ops avoids trying every subset of timed-out writes that
 * never happened, which is exponential.
 */
static bool unobservable(const kop *all, int n, int u)
{
	const kop *w = &all[u];
	if (w->ret != OPEN || w->kind == TH_OP_GET)
		return false;
	if (w->len == 0)
		return w->kind == TH_OP_APPEND;
	for (int i = 0; i < n; i++) {
		const kop *g = &all[i];
		if (g->kind != TH_OP_GET || g->ret < w->inv || g->len < w->len)
			continue;
		if (w->kind == TH_OP_PUT ? memcmp(g->val, w->val, w->len) == 0
		                         : memmem(g->val, g->len, w->val, w->len) != NULL)
			return false;
	}
	return true;
}

/* frontier_subset: the frontier engine over all[idx[0..m)]; op indices in
 * `out` (fail, before_ops, pin_done[nall]) are mapped back to `all`. */
static void frontier_subset(const kop *all, int nall, const int *idx, int m, const knobs *k,
                            int64_t deadline, atomic_int *kill, bool lookahead, fout *out)
{
	kop *ops = xmalloc((size_t)m * sizeof *ops + 1);
	for (int i = 0; i < m; i++)
		ops[i] = all[idx[i]];
	search s;
	lin_search_init(&s, ops, m, k->mask, deadline, kill, k->max_bytes);
	s.max_steps = k->max_steps;
	s.clock_us = k->clock_us;
	lin_frontier_run(&s, lookahead, out);
	if (out->v == TH_LIN_ILLEGAL) {
		out->fail = idx[out->fail];
		for (int c = 0; c < FX_SHOW; c++)
			for (int *l = out->before_ops[c]; l && *l >= 0; l++)
				*l = idx[*l];
		bool *pd = xcalloc((size_t)nall + 1, sizeof *pd);
		for (int i = 0; i < m; i++)
			pd[idx[i]] = out->pin_done[i];
		free(out->pin_done);
		out->pin_done = pd;
	}
	lin_search_destroy(&s);
	free(ops);
}

/* frontier_report: the explanation of a frontier ILLEGAL verdict; fills the
 * witness (kop indices) with the ops from the last certain state on. */
static char *frontier_report(const char *key, const kop *all, int nall, const int *cur, int ncur,
                             const fout *o, int64_t t0, int *witness, int *nw)
{
	char *buf = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&buf, &blen);
	if (f == NULL)
		abort();
	const kop *fail = &all[o->fail];
	*nw = 0;
	for (int i = 0; i < ncur; i++)
		if (!o->pin_done[cur[i]] && all[cur[i]].inv <= o->horizon)
			witness[(*nw)++] = cur[i];
	fprintf(f, "key ");
	put_value(f, key, strlen(key));
	fprintf(f, ": NOT LINEARIZABLE (%d ops on the key): no order of its ops lets\n    ", nall);
	put_op(f, fail, t0);
	fprintf(f, "\n  take effect by its return.\n");
	if (o->pin_time == INT64_MIN)
		fprintf(f, "  From the start (value \"\"), ");
	else {
		fprintf(f, "  The state was last certain at ");
		put_time(f, o->pin_time, t0);
		fprintf(f, " ms: value ");
		put_value(f, o->pin_value, strlen(o->pin_value));
		fprintf(f, ";\n  from there, ");
	}
	fprintf(f, "these %d ops cannot be linearized (times in ms since the first invoke):\n", *nw);
	int skipped = *nw > REPORT_MAX_OPS ? *nw - REPORT_MAX_OPS : 0;
	if (skipped)
		fprintf(f, "    … %d earlier ops not shown\n", skipped);
	for (int i = skipped; i < *nw; i++) {
		fprintf(f, "  %c ", witness[i] == o->fail ? '>' : ' ');
		put_op(f, &all[witness[i]], t0);
		fputc('\n', f);
	}
	fprintf(f, "  Just before that return, %d state%s possible", o->nbefore,
	        o->nbefore == 1 ? " was" : "s were");
	if (o->nbefore > FX_SHOW)
		fprintf(f, " (the first %d shown)", FX_SHOW);
	fprintf(f, ":\n");
	for (int c = 0; c < FX_SHOW && o->before_value[c]; c++) {
		fprintf(f, "    value ");
		put_value(f, o->before_value[c], strlen(o->before_value[c]));
		int k = 0;
		for (int *l = o->before_ops[c]; *l >= 0; l++, k++)
			fprintf(f, "%s#%d", k ? " " : ", with running ops already in: ", all[*l].id);
		fputc('\n', f);
	}
	fclose(f);
	(void)nall;
	return buf;
}

#define DFS_BUDGET_US 5000000

static void run_job(driver *d, keyjob *j)
{
	kop *all = xmalloc((size_t)j->n * sizeof *all + 1);
	int *cur = xmalloc((size_t)j->n * sizeof *cur + 1);
	int *cand = xmalloc((size_t)j->n * sizeof *cand + 1);
	for (int i = 0; i < j->n; i++)
		all[i] = make_kop(th_history_op(d->h, j->ids[i]));
	int ncur = 0;
	for (int i = 0; i < j->n; i++)
		if (!unobservable(all, j->n, i))
			cur[ncur++] = i;
	j->pruned = j->n - ncur;
	outcome best;
	memset(&best, 0, sizeof best);
	j->v = TH_LIN_UNKNOWN;
	j->why = WHY_NONE;
	if (d->engine != 2) {
		/* the DFS first (fast on legal histories), with part of the time */
		int64_t dl = d->deadline;
		if (d->engine == 0) {
			int64_t now = knob_now(&d->k);
			int64_t cap = dl ? now + (dl - now) / 4 : now + DFS_BUDGET_US;
			if (cap > now + DFS_BUDGET_US)
				cap = now + DFS_BUDGET_US;
			if (dl == 0 || cap < dl)
				dl = cap;
		}
		j->v = check_subset(all, cur, ncur, &d->k, dl, &d->kill, &best);
		j->why = best.why;
		j->memo = best.memo;
	}
	bool use_frontier = d->engine == 2 ||
	                    (d->engine == 0 && (j->v == TH_LIN_ILLEGAL ||
	                                        (j->v == TH_LIN_UNKNOWN && j->why != WHY_KILLED)));
	if (j->v == TH_LIN_ILLEGAL)
		atomic_store(&d->kill, 1);
	if (use_frontier) {
		fout fo;
		frontier_subset(all, j->n, cur, ncur, &d->k, d->deadline,
		                j->v == TH_LIN_ILLEGAL ? NULL : &d->kill, true, &fo);
		j->memo += fo.visited;
		if (fo.v == TH_LIN_ILLEGAL && d->minimize) {
			/* Pruning by reads still to come may have emptied the frontier
			 * early, far from the read that explains it. Without it, on the
			 * ops up to the horizon, the failure shows where it happens (if
			 * that finishes quickly). */
			int m = 0;
			for (int i = 0; i < ncur; i++)
				if (all[cur[i]].inv <= fo.horizon)
					cand[m++] = cur[i];
			int64_t dl = knob_now(&d->k) + MINIMIZE_BUDGET_US;
			if (d->deadline && d->deadline < dl)
				dl = d->deadline;
			fout plain;
			frontier_subset(all, j->n, cand, m, &d->k, dl, NULL, false, &plain);
			if (plain.v == TH_LIN_ILLEGAL) {
				lin_fout_destroy(&fo);
				fo = plain;
			} else {
				lin_fout_destroy(&plain);
			}
		}
		if (fo.v == TH_LIN_ILLEGAL) {
			atomic_store(&d->kill, 1);
			j->v = TH_LIN_ILLEGAL;
			j->witness = xmalloc((size_t)ncur * sizeof *j->witness + 1);
			int nw = 0;
			j->report = frontier_report(j->key, all, j->n, cur, ncur, &fo, d->t0, cand, &nw);
			j->nwitness = nw;
			for (int i = 0; i < nw; i++)
				j->witness[i] = all[cand[i]].id;
			j->witness_value = strdup(fo.pin_value);
		} else if (fo.v == TH_LIN_OK && j->v == TH_LIN_ILLEGAL) {
			/* the engines disagree: a checker bug; say so rather than guess */
			j->v = TH_LIN_UNKNOWN;
			j->why = WHY_DISAGREE;
		} else if (fo.v == TH_LIN_OK || d->engine == 2 || j->v == TH_LIN_UNKNOWN) {
			j->v = fo.v; /* OK, or both gave up: report the last reason */
			j->why = fo.why;
		}
		lin_fout_destroy(&fo);
	}
	if (j->v == TH_LIN_ILLEGAL && j->report == NULL) {
		/* only the DFS could tell: shrink by re-checking subsets */
		if (d->minimize) {
			int64_t budget = knob_now(&d->k) + MINIMIZE_BUDGET_US;
			if (d->deadline && d->deadline < budget && d->deadline > knob_now(&d->k) + 200000)
				budget = d->deadline;
			shrink_truncate(all, cur, &ncur, cand, &d->k, budget, &best);
			shrink_cut(all, cur, &ncur, cand, &d->k, budget, &best);
			shrink_gets(all, cur, &ncur, cand, &d->k, budget, &best);
			shrink_truncate(all, cur, &ncur, cand, &d->k, budget, &best);
		}
		j->nwitness = ncur;
		j->witness = xmalloc((size_t)ncur * sizeof *j->witness + 1);
		for (int i = 0; i < ncur; i++)
			j->witness[i] = all[cur[i]].id;
		j->witness_value = strdup("");
		j->report = illegal_report(j->key, all, j->n, cur, ncur, &best, d->t0);
	}
	outcome_destroy(&best);
	free(all);
	free(cur);
	free(cand);
}

static int64_t thread_cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void *worker_main(void *arg)
{
	driver *d = arg;
	int64_t cpu0 = thread_cpu_us();
	for (;;) {
		int i = atomic_fetch_add(&d->next, 1);
		if (i >= d->njobs) {
			atomic_fetch_add(&d->cpu_us, thread_cpu_us() - cpu0);
			return NULL;
		}
		keyjob *j = &d->jobs[i];
		if (atomic_load(&d->kill)) {
			j->v = TH_LIN_UNKNOWN;
			j->why = WHY_KILLED;
			continue;
		}
		run_job(d, j);
	}
}

/* A sort record for grouping ops by key (then invoke time, then id). */
typedef struct {
	const char *key;
	int64_t inv;
	int id;
} sortrec;

static int sortrec_cmp(const void *a, const void *b)
{
	const sortrec *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	if (x->inv != y->inv)
		return x->inv < y->inv ? -1 : 1;
	return x->id - y->id;
}

static int job_cmp(const void *a, const void *b)
{
	const keyjob *x = a, *y = b;
	if (x->n != y->n)
		return y->n - x->n; /* busiest first */
	return strcmp(x->key, y->key);
}

void th_lin_options_init(th_lin_options *o)
{
	memset(o, 0, sizeof *o);
	o->nthreads = 2;
	o->minimize = true;
}

const char *th_lin_verdict_name(th_lin_verdict v)
{
	switch (v) {
	case TH_LIN_OK: return "OK";
	case TH_LIN_ILLEGAL: return "ILLEGAL";
	case TH_LIN_UNKNOWN: return "UNKNOWN";
	}
	return "?";
}

void th_lin_result_destroy(th_lin_result *res)
{
	if (res == NULL)
		return;
	free(res->bad_key);
	free(res->witness);
	free(res->witness_value);
	free(res->report);
	memset(res, 0, sizeof *res);
}

th_lin_verdict th_lin_check(const th_history *h, unsigned timeout_ms, th_lin_result *res)
{
	th_lin_options o;
	th_lin_options_init(&o);
	o.timeout_ms = timeout_ms;
	return th_lin_check_opts(h, &o, res);
}

th_lin_verdict th_lin_check_opts(const th_history *h, const th_lin_options *o,
                                 th_lin_result *res)
{
	int64_t start = o->clock_us ? o->clock_us() : now_us();
	int64_t wall0 = now_us();
	size_t total = th_history_size(h);
	int *ids = xmalloc(total * sizeof *ids + 1);
	sortrec *recs = xmalloc(total * sizeof *recs + 1);
	size_t n = 0, nopen = 0;
	int64_t t0 = OPEN;
	for (size_t i = 0; i < total; i++) {
		const th_op *op = th_history_op(h, (int)i);
		if (op->invoke_us < t0)
			t0 = op->invoke_us;
		if (op->status == TH_OP_FAILED)
			continue;
		if (op->kind == TH_OP_GET && op->status != TH_OP_OK)
			continue; /* a Get with an unknown outcome constrains nothing */
		if (op->status != TH_OP_OK)
			nopen++;
		recs[n++] = (sortrec){ op->key, op->invoke_us, (int)i };
	}
	qsort(recs, n, sizeof *recs, sortrec_cmp);
	for (size_t i = 0; i < n; i++)
		ids[i] = recs[i].id;
	free(recs);

	driver d;
	memset(&d, 0, sizeof d);
	d.h = h;
	d.t0 = t0 == OPEN ? 0 : t0;
	d.deadline = o->timeout_ms ? start + (int64_t)o->timeout_ms * 1000 : 0;
	d.k.mask = o->hash_mask ? o->hash_mask : ~0ULL;
	d.k.max_bytes = o->max_memo_bytes ? o->max_memo_bytes : (size_t)1 << 30;
	d.k.max_steps = o->max_steps;
	d.k.clock_us = o->clock_us;
	d.minimize = o->minimize;
	d.engine = o->engine;
	atomic_init(&d.next, 0);
	atomic_init(&d.kill, 0);
	atomic_init(&d.cpu_us, 0);
	d.jobs = xcalloc(n ? n : 1, sizeof *d.jobs);
	size_t maxk = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		const char *key = th_history_op(h, ids[i])->key;
		while (j < n && strcmp(th_history_op(h, ids[j])->key, key) == 0)
			j++;
		d.jobs[d.njobs++] = (keyjob){ .key = key, .ids = &ids[i], .n = (int)(j - i) };
		if (j - i > maxk)
			maxk = j - i;
		i = j;
	}
	qsort(d.jobs, (size_t)d.njobs, sizeof *d.jobs, job_cmp);

	int nth = o->nthreads > 0 ? o->nthreads : 2;
	if (nth > d.njobs)
		nth = d.njobs;
	if (nth <= 1) {
		worker_main(&d);
	} else {
		pthread_t *t = xmalloc((size_t)nth * sizeof *t);
		int started = 0;
		for (int i = 0; i < nth; i++)
			if (pthread_create(&t[i], NULL, worker_main, &d) == 0)
				started++;
			else
				break;
		if (started == 0)
			worker_main(&d);
		for (int i = 0; i < started; i++)
			pthread_join(t[i], NULL);
		free(t);
	}

	th_lin_verdict v = TH_LIN_OK;
	keyjob *bad = NULL, *unk = NULL;
	size_t memo = 0, pruned = 0;
	for (int i = 0; i < d.njobs; i++) {
		keyjob *j = &d.jobs[i];
		memo += j->memo;
		pruned += (size_t)j->pruned;
		if (j->v == TH_LIN_ILLEGAL && (bad == NULL || strcmp(j->key, bad->key) < 0))
			bad = j;
		if (j->v == TH_LIN_UNKNOWN && j->why != WHY_KILLED && unk == NULL)
			unk = j;
	}
	if (bad)
		v = TH_LIN_ILLEGAL;
	else if (unk)
		v = TH_LIN_UNKNOWN;

	if (res) {
		memset(res, 0, sizeof *res);
		res->verdict = v;
		res->nops = n;
		res->nopen = nopen;
		res->nkeys = (size_t)d.njobs;
		res->max_key_ops = maxk;
		res->memo_entries = memo;
		res->npruned = pruned;
		if (bad) {
			res->bad_key = strdup(bad->key);
			res->witness = bad->witness;
			res->nwitness = (size_t)bad->nwitness;
			res->witness_value = bad->witness_value;
			res->report = bad->report;
			bad->witness = NULL;
			bad->witness_value = NULL;
			bad->report = NULL;
		} else if (unk) {
			char *buf = NULL;
			size_t blen = 0;
			FILE *f = open_memstream(&buf, &blen);
			if (f == NULL)
				abort();
			fprintf(f, "linearizability check gave up (%s) on key ",
			        unk->why == WHY_MEMORY     ? "memory bound reached"
			        : unk->why == WHY_DISAGREE ? "CHECKER BUG: its two engines disagree"
			        : unk->why == WHY_STEPS    ? "step budget reached"
			                                   : "deadline reached");
			put_value(f, unk->key, strlen(unk->key));
			fprintf(f, " with %d ops after %zu memo entries; keys not finished:", unk->n,
			        unk->memo);
			for (int i = 0; i < d.njobs; i++)
				if (d.jobs[i].v == TH_LIN_UNKNOWN) {
					fputc(' ', f);
					put_value(f, d.jobs[i].key, strlen(d.jobs[i].key));
				}
			fputc('\n', f);
			fclose(f);
			res->report = buf;
		}
	}
	for (int i = 0; i < d.njobs; i++) {
		free(d.jobs[i].witness);
		free(d.jobs[i].witness_value);
		free(d.jobs[i].report);
	}
	free(d.jobs);
	free(ids);
	if (res) {
		res->elapsed_ms = (double)(now_us() - wall0) / 1000.0;
		res->cpu_ms = (double)atomic_load(&d.cpu_us) / 1000.0;
		if (res->bad_key == NULL && bad)
			abort();
	}
	return v;
}

void th_lin_assert_ok(const th_history *h, unsigned timeout_ms, const char *label)
{
	th_lin_result r;
	th_lin_verdict v = th_lin_check(h, timeout_ms, &r);
	size_t ok, unknown, failed;
	th_history_counts(h, &ok, &unknown, &failed);
	fprintf(stderr,
	        "linearizability[%s]: %s: %zu ops (ok %zu, unknown %zu, failed %zu), %zu keys, "
	        "busiest key %zu ops, %zu memo entries, checked in %.1f ms (%.1f ms CPU)\n",
	        label, th_lin_verdict_name(v), th_history_size(h), ok, unknown, failed, r.nkeys,
	        r.max_key_ops, r.memo_entries, r.elapsed_ms, r.cpu_ms);
	if (v == TH_LIN_OK) {
		th_lin_result_destroy(&r);
		return;
	}
	char path[512];
	snprintf(path, sizeof path, "%s/history-%d-%s.tsv", th_dir(), (int)getpid(), label);
	bool dumped = th_history_dump_file(h, path) == 0;
	fprintf(stderr, "%s", r.report ? r.report : "");
	if (dumped)
		fprintf(stderr, "linearizability[%s]: whole history in %s\n", label, path);
	th_lin_result_destroy(&r);
	fail_msg("linearizability[%s]: %s", label, th_lin_verdict_name(v));
}
