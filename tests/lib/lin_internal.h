/*
 * tests/lib/lin_internal.h — internals shared by the checker's files (never
 * included by tests): linearizability.c (driver, shrinking, reports),
 * lin_search.c (values, prunings, the depth-first engine), lin_frontier.c
 * (the frontier engine). See linearizability.c for the design.
 */
#ifndef DKV_TEST_LIN_INTERNAL_H
#define DKV_TEST_LIN_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "history.h"
#include "linearizability.h"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
#define OPEN TH_HISTORY_OPEN
/* dead reads: the Gets still to come that are checked after each write */
#define LOOKAHEAD_GETS 2
#define LOOKAHEAD_EVENTS 256

/* ------------------------------------------------------------ small helpers */

static inline void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL) {
		fprintf(stderr, "linearizability: out of memory (%zu bytes)\n", n);
		abort();
	}
	return p;
}

static inline void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (p == NULL) {
		fprintf(stderr, "linearizability: out of memory (%zu x %zu bytes)\n", n, sz);
		abort();
	}
	return p;
}

static inline void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL) {
		fprintf(stderr, "linearizability: out of memory (%zu bytes)\n", n);
		abort();
	}
	return q;
}

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint64_t fnv(uint64_t h, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= FNV_PRIME;
	}
	return h;
}

static inline int64_t now_us(void)
{
	return th_history_now_us();
}

/* ------------------------------------------------------------ per-key input */

/* One op of a key, as the search sees it. */
typedef struct {
	int id;          /* the op's id in the history */
	int client;
	th_op_kind kind;
	const char *val; /* Put/Append argument, or what a Get read */
	size_t len;
	uint64_t hash;   /* FNV-1a of val from the offset basis */
	int64_t inv, ret; /* ret == OPEN: open-ended write */
} kop;

/* ------------------------------------------------------------ the search */

typedef struct {
	uint64_t hash;  /* FNV-1a of the whole content */
	size_t len;
	int32_t parent; /* Append: the value it extends; else -1 */
	int32_t op;     /* the Put/Append that made it; -1 for the root "" */
} vnode;

typedef struct {
	int32_t from, op, to;
} trans;

typedef enum { WHY_NONE = 0, WHY_DEADLINE, WHY_MEMORY, WHY_KILLED, WHY_DISAGREE, WHY_STEPS } give_up;

typedef struct {
	int32_t value, get; /* value == -1: empty slot */
	int32_t prefix;     /* 1 if the value is a prefix of the Get's result */
} pcache;

typedef struct {
	/* input */
	const kop *ops;
	int n;
	uint64_t mask;
	int64_t deadline; /* µs, 0 = none */
	atomic_int *kill; /* may be NULL */
	size_t max_bytes;
	uint64_t max_steps;         /* 0 = none (set after lin_search_init) */
	int64_t (*clock_us)(void);  /* NULL = now_us (set after lin_search_init) */

	/* values */
	vnode *v;
	int32_t nv, capv;
	int32_t *itab; /* intern table of value ids, -1 = empty */
	size_t icap;
	trans *ttab;   /* Append transitions, from == -1: empty */
	size_t tcap, tcount;
	int32_t *put_val;   /* per op: a Put's value id, or -1 */
	int32_t *get_match; /* per op: the value id equal to what a Get read, or -1 */

	/* memo */
	int W;          /* words per bitset */
	int OW;         /* words of the open-ended ops' bitset */
	int32_t *open_rank; /* per op: its rank among open-ended ops, or -1 */
	uint64_t *obits; /* which open-ended ops are linearized */
	uint64_t *arena; /* variable-length entries, see memo_add */
	size_t arena_words, arena_cap;
	uint32_t *mtab; /* 0 = empty, else arena offset + 1 */
	size_t mcap, nmemo;

	/* outcome */
	give_up why;
	int best_depth;     /* longest linearized prefix at a dead end, -1 before any */
	int32_t *best_seq;  /* its ops */
	int32_t best_value;
	int best_stuck;     /* the op whose return stopped that branch */
	int64_t far_time;   /* the latest return where a branch stopped, or of a Get that
	                       refuted a branch (ops invoked later never mattered) */

	/* dead-read pruning (see get_alive) */
	int32_t *reset_at;  /* per Get: its Puts in reset_list[reset_at[g] .. reset_at[g+1]) */
	int32_t *reset_list;
	pcache *ptab;       /* (value, Get) -> is the value a prefix of what the Get read */
	size_t pcap, pcount;
	int32_t *walk;      /* scratch for prefix_of */
	size_t walkcap;
} search;

/* lin_now: the search's clock (µs), for its deadline. */
static inline int64_t lin_now(const search *s)
{
	return s->clock_us ? s->clock_us() : now_us();
}

/* A call or return event; calls sort before returns at the same time. */
typedef struct {
	int64_t t;
	int is_ret;
	int op;
} event;

/* What the frontier engine found (op indices are into the searched ops). */
typedef struct {
	th_lin_verdict v;
	give_up why;
	size_t visited, max_frontier;
	int fail;          /* ILLEGAL: the op whose return left no configuration */
	int64_t horizon;   /* ILLEGAL: the witness holds the ops invoked up to here */
	int64_t pin_time;  /* the last return after which one configuration remained
	                      (INT64_MIN: the start) */
	char *pin_value;   /* that configuration's value */
	bool *pin_done;    /* per op: had taken effect in it */
	int nbefore;       /* configurations just before the failure (up to FX_SHOW kept) */
	char *before_value[3];
	int *before_ops[3]; /* running ops already in, -1 terminated */
} fout;

#define FX_SHOW 3

/* lin_event_cmp: qsort order of events (time, calls first, op). */
int lin_event_cmp(const void *a, const void *b);

/* lin_search_init: a search over ops[0..n) (borrowed; must outlive the search),
 * with the hash mask, deadline (µs, 0 = none), kill flag (may be NULL) and
 * memory bound. Release with lin_search_destroy. */
void lin_search_init(search *s, const kop *ops, int n, uint64_t mask, int64_t deadline,
                     atomic_int *kill, size_t max_bytes);
void lin_search_destroy(search *s);

/* lin_search_run: the depth-first engine; *far_time gets the latest return
 * where a branch stopped. */
th_lin_verdict lin_search_run(search *s, int64_t *far_time);

/* lin_frontier_run: the frontier engine over an initialized search's ops;
 * fills *out (release with lin_fout_destroy). */
void lin_frontier_run(search *s, bool lookahead, fout *out);
void lin_fout_destroy(fout *o);

/* lin_materialize: the content of value id (malloc'd). */
char *lin_materialize(const search *s, int32_t id);

/* lin_step: apply op to value cur; false if the model rejects it. */
bool lin_step(search *s, int32_t cur, int op, int32_t *next);

/* lin_prefix_of: is value v a prefix of what Get g read? (cached) */
bool lin_prefix_of(search *s, int32_t v, int g);

#endif /* DKV_TEST_LIN_INTERNAL_H */
