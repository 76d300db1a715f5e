/*
 * tests/lib/lin_search.c — the checker's values and prunings and its
 * depth-first engine (Wing–Gong/Lowe with memoization, eager reads, dead
 * reads). The design is described at the top of linearizability.c; the
 * pieces here: interned values (FNV-1a chains, exact comparison on equal hash
 * and length), Append transitions and Get matches cached, the dead-read test
 * (value is a prefix of the read, or a pending Put starts it), the compact
 * canonical memo, and the search loop itself.
 */
#include "lin_internal.h"

#include <string.h>

static void resets_init(search *s);
static bool get_alive(search *s, int g, int32_t v, const uint64_t *bits);

static size_t search_bytes(const search *s)
{
	return s->arena_cap * 8 + s->mcap * 4 + (size_t)s->capv * sizeof(vnode) + s->icap * 4 +
	       s->tcap * sizeof(trans) + s->pcap * sizeof(pcache);
}

/* Does value `id` have exactly the content str[0..len)? Walks the chain from
 * the end of the string. */
static bool value_equals(const search *s, int32_t id, const char *str, size_t len)
{
	if (s->v[id].len != len)
		return false;
	size_t pos = len;
	for (int32_t cur = id;;) {
		const vnode *nd = &s->v[cur];
		if (nd->op < 0)
			return pos == 0;
		const kop *o = &s->ops[nd->op];
		if (o->kind == TH_OP_PUT)
			return pos == o->len && memcmp(str, o->val, o->len) == 0;
		if (o->len > pos || memcmp(str + pos - o->len, o->val, o->len) != 0)
			return false;
		pos -= o->len;
		cur = nd->parent;
	}
}

/* materialize: the content of value `id` (malloc'd, NUL-terminated). */
char *lin_materialize(const search *s, int32_t id)
{
	size_t len = s->v[id].len;
	char *buf = xmalloc(len + 1);
	buf[len] = '\0';
	size_t pos = len;
	for (int32_t cur = id; s->v[cur].op >= 0;) {
		const kop *o = &s->ops[s->v[cur].op];
		if (o->kind == TH_OP_PUT) {
			memcpy(buf, o->val, o->len);
			break;
		}
		pos -= o->len;
		memcpy(buf + pos, o->val, o->len);
		cur = s->v[cur].parent;
	}
	return buf;
}

static size_t ibucket(const search *s, uint64_t hash, size_t len)
{
	return (size_t)mix64((hash & s->mask) ^ ((uint64_t)len * 0x9e3779b97f4a7c15ULL)) &
	       (s->icap - 1);
}

static void intern_grow(search *s)
{
	size_t ncap = s->icap ? s->icap * 2 : 1024;
	int32_t *nt = xmalloc(ncap * sizeof *nt);
	memset(nt, 0xff, ncap * sizeof *nt);
	int32_t *old = s->itab;
	size_t ocap = s->icap;
	s->itab = nt;
	s->icap = ncap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i] >= 0) {
			size_t b = ibucket(s, s->v[old[i]].hash, s->v[old[i]].len);
			while (s->itab[b] >= 0)
				b = (b + 1) & (ncap - 1);
			s->itab[b] = old[i];
		}
	free(old);
}

static int32_t new_value(search *s, uint64_t hash, size_t len, int32_t parent, int32_t op,
                         size_t bucket)
{
	if (s->nv == s->capv) {
		s->capv = s->capv ? s->capv * 2 : 256;
		s->v = xrealloc(s->v, (size_t)s->capv * sizeof *s->v);
	}
	int32_t id = s->nv++;
	s->v[id] = (vnode){ .hash = hash, .len = len, .parent = parent, .op = op };
	s->itab[bucket] = id;
	return id;
}

/* intern_put: the value id of Put op's argument. */
static int32_t intern_put(search *s, int op)
{
	if ((size_t)(s->nv + 1) * 2 > s->icap)
		intern_grow(s);
	const kop *o = &s->ops[op];
	size_t b = ibucket(s, o->hash, o->len);
	for (; s->itab[b] >= 0; b = (b + 1) & (s->icap - 1)) {
		int32_t c = s->itab[b];
		if ((s->v[c].hash & s->mask) == (o->hash & s->mask) && s->v[c].len == o->len &&
		    value_equals(s, c, o->val, o->len))
			return c;
	}
	return new_value(s, o->hash, o->len, -1, op, b);
}

/* intern_append: the value id of value `from` followed by Append op's argument. */
static int32_t intern_append(search *s, int32_t from, int op)
{
	if ((size_t)(s->nv + 1) * 2 > s->icap)
		intern_grow(s);
	const kop *o = &s->ops[op];
	uint64_t hash = fnv(s->v[from].hash, o->val, o->len);
	size_t len = s->v[from].len + o->len;
	char *flat = NULL; /* the new content, built only for an inexact match */
	size_t b = ibucket(s, hash, len);
	int32_t found = -1;
	for (; s->itab[b] >= 0; b = (b + 1) & (s->icap - 1)) {
		int32_t c = s->itab[b];
		const vnode *nd = &s->v[c];
		if ((nd->hash & s->mask) != (hash & s->mask) || nd->len != len)
			continue;
		if (nd->parent == from && nd->op >= 0 && s->ops[nd->op].kind == TH_OP_APPEND &&
		    s->ops[nd->op].len == o->len && memcmp(s->ops[nd->op].val, o->val, o->len) == 0) {
			found = c;
			break;
		}
		if (flat == NULL) {
			char *pre = lin_materialize(s, from);
			flat = xmalloc(len + 1);
			memcpy(flat, pre, s->v[from].len);
			memcpy(flat + s->v[from].len, o->val, o->len);
			flat[len] = '\0';
			free(pre);
		}
		if (value_equals(s, c, flat, len)) {
			found = c;
			break;
		}
	}
	free(flat);
	if (found >= 0)
		return found;
	return new_value(s, hash, len, from, op, b);
}

static size_t tbucket(const search *s, int32_t from, int32_t op)
{
	return (size_t)mix64(((uint64_t)(uint32_t)from << 32) | (uint32_t)op) & (s->tcap - 1);
}

static int32_t append_value(search *s, int32_t from, int op)
{
	if ((s->tcount + 1) * 2 > s->tcap) {
		size_t ocap = s->tcap;
		trans *old = s->ttab;
		s->tcap = ocap ? ocap * 2 : 1024;
		s->ttab = xmalloc(s->tcap * sizeof *s->ttab);
		for (size_t i = 0; i < s->tcap; i++)
			s->ttab[i].from = -1;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].from >= 0) {
				size_t b = tbucket(s, old[i].from, old[i].op);
				while (s->ttab[b].from >= 0)
					b = (b + 1) & (s->tcap - 1);
				s->ttab[b] = old[i];
			}
		free(old);
	}
	size_t b = tbucket(s, from, op);
	for (; s->ttab[b].from >= 0; b = (b + 1) & (s->tcap - 1))
		if (s->ttab[b].from == from && s->ttab[b].op == op)
			return s->ttab[b].to;
	int32_t to = intern_append(s, from, op);
	b = tbucket(s, from, op);
	while (s->ttab[b].from >= 0)
		b = (b + 1) & (s->tcap - 1);
	s->ttab[b] = (trans){ from, op, to };
	s->tcount++;
	return to;
}

/* step: apply op to value `cur`; false if the model rejects it (a Get that
 * read something else). */
bool lin_step(search *s, int32_t cur, int op, int32_t *next)
{
	const kop *o = &s->ops[op];
	switch (o->kind) {
	case TH_OP_GET:
		*next = cur;
		if (s->get_match[op] >= 0)
			return s->get_match[op] == cur;
		if ((s->v[cur].hash & s->mask) == (o->hash & s->mask) && s->v[cur].len == o->len &&
		    value_equals(s, cur, o->val, o->len)) {
			s->get_match[op] = cur;
			return true;
		}
		return false;
	case TH_OP_PUT:
		if (s->put_val[op] < 0)
			s->put_val[op] = intern_put(s, op);
		*next = s->put_val[op];
		return true;
	case TH_OP_APPEND:
		*next = append_value(s, cur, op);
		return true;
	}
	return false;
}

static uint64_t memo_hash(uint64_t z, int32_t value)
{
	return mix64(z ^ ((uint64_t)(uint32_t)value * 0x9e3779b97f4a7c15ULL));
}

/*
 * Memo entries are compact and canonical. With m the first finite-return op
 * (in invoke order) not yet linearized, every finite op below m is in the set;
 * the set is then fully described by m, the open-ended ops' bits (OW words)
 * and the words from m/64 up to the highest linearized op. An entry is
 * [hash][value | m/64 << 32][nwin][OW open words][nwin window words]: a few
 * words instead of n/64, whatever the history's length.
 */
static void memo_grow(search *s)
{
	size_t ncap = s->mcap ? s->mcap * 2 : 4096;
	free(s->mtab);
	s->mtab = xcalloc(ncap, sizeof *s->mtab);
	s->mcap = ncap;
	for (size_t off = 0; off < s->arena_words;) {
		size_t b = (size_t)s->arena[off] & (ncap - 1);
		while (s->mtab[b] != 0)
			b = (b + 1) & (ncap - 1);
		s->mtab[b] = (uint32_t)(off + 1);
		off += 3 + (size_t)s->OW + (size_t)s->arena[off + 2];
	}
}

/* memo_add: 1 if the linearized set (bits, with first missing finite op m and
 * highest member maxop) and value are new (and now remembered), 0 if seen, -1
 * when the memory bound is reached. */
static int memo_add(search *s, const uint64_t *bits, uint64_t z, int32_t value, int m, int maxop)
{
	if ((s->nmemo + 1) * 2 > s->mcap)
		memo_grow(s);
	uint64_t h = memo_hash(z, value);
	uint64_t lo = (uint64_t)m / 64;
	uint64_t nwin = maxop >= 0 && (uint64_t)maxop / 64 >= lo ? (uint64_t)maxop / 64 - lo + 1 : 0;
	uint64_t w1 = (uint64_t)(uint32_t)value | lo << 32;
	const uint64_t *win = bits + lo;
	size_t ow = (size_t)s->OW;
	size_t b = (size_t)h & (s->mcap - 1);
	for (; s->mtab[b] != 0; b = (b + 1) & (s->mcap - 1)) {
		const uint64_t *e = &s->arena[s->mtab[b] - 1];
		if (e[0] == h && e[1] == w1 && e[2] == nwin && memcmp(e + 3, s->obits, ow * 8) == 0 &&
		    memcmp(e + 3 + ow, win, (size_t)nwin * 8) == 0)
			return 0;
	}
	size_t need = 3 + ow + (size_t)nwin;
	if (s->arena_words + need > s->arena_cap) {
		size_t ncap = s->arena_cap ? s->arena_cap * 2 : 4096;
		while (ncap < s->arena_words + need)
			ncap *= 2;
		if (search_bytes(s) + (ncap - s->arena_cap) * 8 > s->max_bytes)
			return -1;
		s->arena = xrealloc(s->arena, ncap * 8);
		s->arena_cap = ncap;
	}
	if (s->arena_words + need >= UINT32_MAX)
		return -1;
	uint64_t *e = &s->arena[s->arena_words];
	e[0] = h;
	e[1] = w1;
	e[2] = nwin;
	memcpy(e + 3, s->obits, ow * 8);
	memcpy(e + 3 + ow, win, (size_t)nwin * 8);
	s->mtab[b] = (uint32_t)(s->arena_words + 1);
	s->arena_words += need;
	s->nmemo++;
	return 1;
}

/*
 * Dead reads. Between two Puts the value only grows at its end, so a Get that
 * is not yet linearized can still read its result from value `v` only if `v`
 * is a prefix of that result, or if a Put not yet linearized (one that may
 * precede the Get) starts the result. Otherwise no extension of the current
 * prefix linearizes the Get, and the branch is dead now rather than at the
 * Get's return. Checking the Gets in the current window (calls before the
 * first pending return) after each write cuts the exploration of orders that
 * a read has already refuted, which otherwise grows as the factorial of the
 * number of concurrent writes.
 */
static size_t pbucket(const search *s, int32_t v, int32_t g)
{
	return (size_t)mix64(((uint64_t)(uint32_t)v << 32) | (uint32_t)g) & (s->pcap - 1);
}

static void pcache_put(search *s, int32_t v, int32_t g, int32_t prefix)
{
	if ((s->pcount + 1) * 2 > s->pcap) {
		size_t ocap = s->pcap;
		pcache *old = s->ptab;
		s->pcap = ocap ? ocap * 2 : 1024;
		s->ptab = xmalloc(s->pcap * sizeof *s->ptab);
		for (size_t i = 0; i < s->pcap; i++)
			s->ptab[i].value = -1;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].value >= 0) {
				size_t b = pbucket(s, old[i].value, old[i].get);
				while (s->ptab[b].value >= 0)
					b = (b + 1) & (s->pcap - 1);
				s->ptab[b] = old[i];
			}
		free(old);
	}
	size_t b = pbucket(s, v, g);
	while (s->ptab[b].value >= 0)
		b = (b + 1) & (s->pcap - 1);
	s->ptab[b] = (pcache){ v, g, prefix };
	s->pcount++;
}

static int pcache_get(const search *s, int32_t v, int32_t g)
{
	if (s->pcap == 0)
		return -1;
	for (size_t b = pbucket(s, v, g); s->ptab[b].value >= 0; b = (b + 1) & (s->pcap - 1))
		if (s->ptab[b].value == v && s->ptab[b].get == g)
			return s->ptab[b].prefix;
	return -1;
}

/* prefix_of: is value v a prefix of what Get g read? Walks v's chain up to a
 * Put, the root or a cached answer, then caches the answer for every node
 * walked (a mismatch in a node's suffix is a mismatch for all below it). */
bool lin_prefix_of(search *s, int32_t v, int g)
{
	const kop *go = &s->ops[g];
	if (s->v[v].len > go->len)
		return false;
	size_t nw = 0;
	bool ok = true;
	for (int32_t cur = v;;) {
		if (s->v[cur].op < 0)
			break; /* the root "" is a prefix of everything */
		int c = pcache_get(s, cur, g);
		if (c >= 0) {
			ok = c == 1;
			break;
		}
		if (nw == s->walkcap) {
			s->walkcap = s->walkcap ? s->walkcap * 2 : 64;
			s->walk = xrealloc(s->walk, s->walkcap * sizeof *s->walk);
		}
		s->walk[nw++] = cur;
		const vnode *nd = &s->v[cur];
		const kop *o = &s->ops[nd->op];
		if (o->kind == TH_OP_PUT) {
			ok = memcmp(go->val, o->val, o->len) == 0;
			break;
		}
		if (memcmp(go->val + nd->len - o->len, o->val, o->len) != 0) {
			ok = false;
			break;
		}
		cur = nd->parent;
	}
	for (size_t i = 0; i < nw; i++)
		pcache_put(s, s->walk[i], g, ok);
	return ok;
}

static bool get_alive(search *s, int g, int32_t v, const uint64_t *bits)
{
	if (lin_prefix_of(s, v, g))
		return true;
	for (int32_t i = s->reset_at[g]; i < s->reset_at[g + 1]; i++) {
		int p = s->reset_list[i];
		if (!(bits[p / 64] >> (p % 64) & 1))
			return true;
	}
	return false;
}

/* resets_init: for each Get, the Puts that may precede it and start its result. */
static void resets_init(search *s)
{
	int n = s->n, m = 0, cap = 64;
	s->reset_at = xmalloc((size_t)(n + 1) * sizeof *s->reset_at);
	s->reset_list = xmalloc((size_t)cap * sizeof *s->reset_list);
	for (int g = 0; g < n; g++) {
		s->reset_at[g] = m;
		const kop *go = &s->ops[g];
		if (go->kind != TH_OP_GET)
			continue;
		for (int p = 0; p < n; p++) {
			const kop *po = &s->ops[p];
			if (po->kind != TH_OP_PUT || po->inv > go->ret || po->len > go->len ||
			    memcmp(go->val, po->val, po->len) != 0)
				continue;
			if (m == cap) {
				cap *= 2;
				s->reset_list = xrealloc(s->reset_list, (size_t)cap * sizeof *s->reset_list);
			}
			s->reset_list[m++] = p;
		}
	}
	s->reset_at[n] = m;
}


int lin_event_cmp(const void *a, const void *b)
{
	const event *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	if (x->is_ret != y->is_ret)
		return x->is_ret - y->is_ret; /* calls first: equal times overlap */
	return x->op - y->op;
}

void lin_search_init(search *s, const kop *ops, int n, uint64_t mask, int64_t deadline,
                        atomic_int *kill, size_t max_bytes)
{
	memset(s, 0, sizeof *s);
	s->ops = ops;
	s->n = n;
	s->mask = mask;
	s->deadline = deadline;
	s->kill = kill;
	s->max_bytes = max_bytes;
	s->W = (n + 63) / 64;
	if (s->W == 0)
		s->W = 1;
	s->open_rank = xmalloc((size_t)n * sizeof *s->open_rank + 1);
	int nopen = 0;
	for (int i = 0; i < n; i++)
		s->open_rank[i] = ops[i].ret == OPEN ? nopen++ : -1;
	s->OW = (nopen + 63) / 64;
	s->obits = xcalloc((size_t)s->OW + 1, sizeof *s->obits);
	s->put_val = xmalloc((size_t)n * sizeof *s->put_val + 1);
	s->get_match = xmalloc((size_t)n * sizeof *s->get_match + 1);
	for (int i = 0; i < n; i++)
		s->put_val[i] = s->get_match[i] = -1;
	intern_grow(s);
	/* value 0: the root "" */
	size_t b = ibucket(s, FNV_OFFSET, 0);
	new_value(s, FNV_OFFSET, 0, -1, -1, b);
	s->best_depth = -1;
	s->best_stuck = -1;
	s->far_time = INT64_MIN;
	resets_init(s);
}

void lin_search_destroy(search *s)
{
	free(s->v);
	free(s->itab);
	free(s->ttab);
	free(s->put_val);
	free(s->get_match);
	free(s->arena);
	free(s->mtab);
	free(s->open_rank);
	free(s->obits);
	free(s->best_seq);
	free(s->reset_at);
	free(s->reset_list);
	free(s->ptab);
	free(s->walk);
}

/* zobrist: the random word of op i (fixed, so runs are reproducible). */
static uint64_t zobrist(int i)
{
	return mix64((uint64_t)i * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL);
}

/* window_alive: after a write that makes value v (candidate event cand), can
 * every Get of the window (calls before the first pending return) and the
 * next LOOKAHEAD_GETS Gets invoked after it still be linearized? The Gets
 * ahead matter most: a run of concurrent Appends is ordered only by the next
 * read, which may start after all of them. */

static int dead_get(search *s, const event *ev, const int32_t *next, int head, int tail,
                    int cand, int32_t v, const uint64_t *bits);

static bool window_alive(search *s, const event *ev, const int32_t *next, int head, int tail,
                         int cand, int32_t v, const uint64_t *bits)
{
	int dead = dead_get(s, ev, next, head, tail, cand, v, bits);
	if (dead < 0)
		return true;
	if (s->ops[dead].ret > s->far_time)
		s->far_time = s->ops[dead].ret;
	return false;
}

/* dead_get: the first Get of the window and lookahead that value v makes
 * impossible, or -1. */
static int dead_get(search *s, const event *ev, const int32_t *next, int head, int tail,
                    int cand, int32_t v, const uint64_t *bits)
{
	int ahead = 0, seen = 0;
	bool past = false;
	for (int e = next[head]; e != tail && seen < LOOKAHEAD_EVENTS; e = next[e], seen++) {
		if (ev[e].is_ret) {
			past = true;
			continue;
		}
		if (e == cand || s->ops[ev[e].op].kind != TH_OP_GET)
			continue;
		if (!get_alive(s, ev[e].op, v, bits))
			return ev[e].op;
		if (past && ++ahead == LOOKAHEAD_GETS)
			break;
	}
	return -1;
}

th_lin_verdict lin_search_run(search *s, int64_t *far_time)
{
	int n = s->n, ne = 2 * n, head = ne, tail = ne + 1;
	event *ev = xmalloc((size_t)ne * sizeof *ev);
	for (int i = 0; i < n; i++) {
		ev[2 * i] = (event){ s->ops[i].inv, 0, i };
		ev[2 * i + 1] = (event){ s->ops[i].ret, 1, i };
	}
	qsort(ev, (size_t)ne, sizeof *ev, lin_event_cmp);
	int32_t *next = xmalloc((size_t)(ne + 2) * sizeof *next);
	int32_t *prev = xmalloc((size_t)(ne + 2) * sizeof *prev);
	int32_t *match = xmalloc((size_t)ne * sizeof *match + 1);
	int32_t *ret_of = xmalloc((size_t)n * sizeof *ret_of + 1);
	for (int e = 0; e < ne; e++)
		if (ev[e].is_ret)
			ret_of[ev[e].op] = e;
	for (int e = 0; e < ne; e++) {
		match[e] = ev[e].is_ret ? -1 : ret_of[ev[e].op];
		next[e] = e + 1 < ne ? e + 1 : tail;
		prev[e] = e > 0 ? e - 1 : head;
	}
	next[head] = ne > 0 ? 0 : tail;
	prev[tail] = ne > 0 ? ne - 1 : head;
	int32_t *stk_e = xmalloc((size_t)n * sizeof *stk_e + 1);
	int32_t *stk_v = xmalloc((size_t)n * sizeof *stk_v + 1);
	int32_t *stk_m = xmalloc((size_t)n * sizeof *stk_m + 1);   /* m before the push */
	int32_t *stk_max = xmalloc((size_t)n * sizeof *stk_max + 1); /* highest op after it */
	uint64_t *bits = xcalloc((size_t)s->W, sizeof *bits);
	s->best_seq = xmalloc((size_t)n * sizeof *s->best_seq + 1);
	int sp = 0;
	int32_t value = 0;
	uint64_t z = 0;
	int m = 0; /* the first finite-return op not linearized (n: none) */
	while (m < n && s->open_rank[m] >= 0)
		m++;
	th_lin_verdict verdict = TH_LIN_OK;
	unsigned long steps = 0;
	bool fresh = true; /* at a new level: look for a read to linearize first */
	int e = next[head];

/* push: linearize the op of call event c, giving value nv, if its (set,
 * value) is new; sets r to memo_add's answer. */
#define SET_BIT(op_)                                                                     \
	do {                                                                                 \
		bits[(op_) / 64] ^= 1ULL << ((op_) % 64);                                        \
		z ^= zobrist(op_);                                                               \
		if (s->open_rank[op_] >= 0)                                                      \
			s->obits[s->open_rank[op_] / 64] ^= 1ULL << (s->open_rank[op_] % 64);        \
	} while (0)

	while (next[head] != tail) {
		if ((++steps & 1023) == 0) {
			if (s->kill && atomic_load(s->kill)) {
				s->why = WHY_KILLED;
				verdict = TH_LIN_UNKNOWN;
				break;
			}
			if (s->deadline && lin_now(s) >= s->deadline) {
				s->why = WHY_DEADLINE;
				verdict = TH_LIN_UNKNOWN;
				break;
			}
			if (s->max_steps && steps >= s->max_steps) {
				s->why = WHY_STEPS;
				verdict = TH_LIN_UNKNOWN;
				break;
			}
		}
		int cand = -1, r = 0;
		int32_t nv = value;
		if (fresh) {
			/* Eager reads: a Get that may go now and reads the current value
			 * goes now. Any linearization placing it later stays one when it
			 * moves here (a read changes nothing, and every op that must
			 * precede it is already in), so not placing it here need not be
			 * explored: if this branch fails, the level fails. */
			fresh = false;
			for (int c = next[head]; !ev[c].is_ret; c = next[c])
				if (s->ops[ev[c].op].kind == TH_OP_GET && lin_step(s, value, ev[c].op, &nv)) {
					cand = c;
					break;
				}
			if (cand < 0) {
				e = next[head];
				continue;
			}
		} else if (!ev[e].is_ret) {
			int op = ev[e].op;
			if (s->ops[op].kind == TH_OP_GET || !lin_step(s, value, op, &nv)) {
				e = next[e]; /* reads were tried when the level began */
				continue;
			}
			cand = e;
		}
		if (cand >= 0) {
			int op = ev[cand].op;
			SET_BIT(op);
			int mx = sp ? stk_max[sp - 1] : -1;
			if (op > mx)
				mx = op;
			int nm = m;
			while (nm < n && (s->open_rank[nm] >= 0 || (bits[nm / 64] >> (nm % 64) & 1)))
				nm++;
			r = nv == value || window_alive(s, ev, next, head, tail, cand, nv, bits)
			        ? memo_add(s, bits, z, nv, nm, mx)
			        : 0;
			if (r > 0) {
				stk_e[sp] = cand;
				stk_v[sp] = value;
				stk_m[sp] = m;
				stk_max[sp] = mx;
				sp++;
				value = nv;
				m = nm;
				/* lift the call and its return out of the list */
				int r_e = match[cand];
				next[prev[cand]] = next[cand];
				prev[next[cand]] = prev[cand];
				next[prev[r_e]] = next[r_e];
				prev[next[r_e]] = prev[r_e];
				fresh = true;
				continue;
			}
			SET_BIT(op);
			if (r < 0) {
				s->why = WHY_MEMORY;
				verdict = TH_LIN_UNKNOWN;
				break;
			}
			if (s->ops[op].kind != TH_OP_GET) {
				e = next[cand];
				continue;
			}
			/* a read seen before from here: the level fails (see above) */
		} else {
			/* A return: its op had to be linearized by now. */
			if (ev[e].t == OPEN)
				break; /* only open-ended writes remain: leave them out */
			if (ev[e].t > s->far_time)
				s->far_time = ev[e].t;
			if (sp > s->best_depth) {
				s->best_depth = sp;
				for (int i = 0; i < sp; i++)
					s->best_seq[i] = ev[stk_e[i]].op;
				s->best_value = value;
				s->best_stuck = ev[e].op;
			}
		}
		/* backtrack: undo the last choice; a read undone fails its level too */
		int c;
		do {
			if (sp == 0) {
				verdict = TH_LIN_ILLEGAL;
				goto out;
			}
			sp--;
			c = stk_e[sp];
			value = stk_v[sp];
			m = stk_m[sp];
			SET_BIT(ev[c].op);
			/* unlift: the return first, then the call (reverse of the lift) */
			int r_e = match[c];
			next[prev[r_e]] = r_e;
			prev[next[r_e]] = r_e;
			next[prev[c]] = c;
			prev[next[c]] = c;
		} while (s->ops[ev[c].op].kind == TH_OP_GET);
		e = next[c];
	}
#undef SET_BIT
out:
	if (far_time)
		*far_time = s->far_time == INT64_MIN ? OPEN : s->far_time;
	free(ev);
	free(next);
	free(prev);
	free(match);
	free(ret_of);
	free(stk_e);
	free(stk_v);
	free(stk_m);
	free(stk_max);
	free(bits);
	return verdict;
}

