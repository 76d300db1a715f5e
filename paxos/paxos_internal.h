/*
 * paxos/paxos_internal.h — what the files of libpaxos share (never installed).
 *
 *   px_blob      a refcounted immutable byte string: one accepted/decided value
 *                is shared by the acceptor, the learner and the proposers.
 *   px_inst      one Paxos instance: acceptor state (n_p, n_a, v_a), the
 *                learner's decided value (v_d) and proposer bookkeeping.
 *   acceptor.c   the pure acceptor core (Paxos Made Simple, phase 1b / 2b).
 *   proposer.c   proposer worker threads running rounds for started instances.
 *   paxos.c      the object: instance table, Done/Min/Max, RPC handlers.
 *   paxosrsm.c   the replicated log on top; it learns of decisions through
 *                the decide hook below instead of polling paxos_status.
 */
#ifndef DKV_PAXOS_INTERNAL_H
#define DKV_PAXOS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dkv/paxos.h"
#include "dkv_internal.h"
#include "px_prot.h"
#include "storage.h"

/* Per-call timeout of Paxos RPCs: kill and partitions never hang a proposer long. */
#define PX_CALL_TIMEOUT_MS 1000u
/* Proposer retry backoff: random in [1, cap] ms, cap doubling up to this. */
#define PX_BACKOFF_MAX_MS 100u
/* A peer whose call failed is tried last for this long. */
#define PX_PEER_PENALTY_MS 200u
/* Proposal numbers: (round << PX_ROUND_SHIFT) | proposer index. */
#define PX_ROUND_SHIFT 16
/* A proposer counts no vote in a round whose phase 1 began longer ago than
 * this (for a round under a lease: the lease's range prepare). A restarted
 * peer waits this long (plus PX_REJOIN_SLACK_MS) before it asks to rejoin, so
 * no round that counted a vote of its old incarnation is still running
 * (paxos.c "Restarts"). Above PX_CALL_TIMEOUT_MS so that a round survives
 * one timed-out call. */
#define PX_ROUND_MAX_MS 1500u
#define PX_REJOIN_SLACK_MS 100u
/* A forwarder waits this long for the lease holder's decision, then runs its
 * own rounds. */
#define PX_FORWARD_WAIT_MS 500u

/* ---------------------------------------------------------------- values */

typedef struct px_blob {
	unsigned long refs; /* atomic (__atomic builtins); the blob is immutable otherwise */
	size_t len;
	void *data;         /* malloc'ed (len bytes, at least 1 allocated), owned */
} px_blob;

/* px_blob_copy: a blob holding a copy of p[0..len). NULL on ENOMEM. */
px_blob *px_blob_copy(const void *p, size_t len);
/* px_blob_adopt: a blob taking ownership of malloc'ed `data` (may be NULL when
 * len == 0). On ENOMEM returns NULL and frees nothing (the caller keeps data). */
px_blob *px_blob_adopt(void *data, size_t len);
px_blob *px_blob_ref(px_blob *b);
/* px_blob_unref: drop one reference; frees at zero. NULL is a no-op. */
void px_blob_unref(px_blob *b);
bool px_blob_equal(const px_blob *b, const void *p, size_t len);

/* ---------------------------------------------------------------- instances */

typedef struct px_inst {
	int seq;
	/* acceptor */
	uint64_t n_p;    /* highest prepare promised (0: none) */
	uint64_t n_a;    /* highest proposal accepted (0: none) */
	px_blob *v_a;    /* its value (ref), NULL when n_a == 0 */
	/* learner */
	px_blob *v_d;    /* decided value (ref), NULL while pending */
	/* proposer */
	uint64_t n_seen; /* highest proposal number seen in rejections */
	bool proposing;  /* a local proposer thread runs for this instance */
} px_inst;

/* Acceptor core (acceptor.c): pure functions of the instance state. */
typedef struct {
	px_status status; /* PX_ST_OK or PX_ST_REJECT */
	uint64_t n;       /* OK: n_a (0: nothing accepted); REJECT: n_p */
	px_blob *v;       /* OK: v_a (borrowed) or NULL */
} px_promise;
/* Phase 1b: promise not to accept proposals below n if n > n_p. */
void px_acceptor_prepare(px_inst *in, uint64_t n, px_promise *out);
/* Phase 2b test: would accept(n) be accepted? (n >= n_p) */
bool px_acceptor_can_accept(const px_inst *in, uint64_t n);
/* Phase 2b: accept (n, v) if n >= n_p; takes a new reference to v when it does.
 * Returns PX_ST_OK or PX_ST_REJECT (then *n_p_out = n_p). */
px_status px_acceptor_accept(px_inst *in, uint64_t n, px_blob *v, uint64_t *n_p_out);
/* px_next_number: the proposer's next number at `me`: above every number seen. */
uint64_t px_next_number(const px_inst *in, int me);

/* ---------------------------------------------------------------- the object */

/* Called (no paxos lock held) each time this peer learns a decision. */
typedef void (*px_decide_hook)(void *ctx, int seq);

/* One paxos_start waiting for a proposer worker. */
typedef struct px_job {
	int seq;
	px_blob *v;            /* the value to propose unless another is found */
	struct px_job *next;
} px_job;

/* A proposer worker thread: runs queued jobs, one instance at a time. */
typedef struct px_worker {
	struct paxos *px;
	pthread_t tid;
	bool finished;         /* set (under px->mu) as the thread's last act */
	struct px_worker *next;
} px_worker;

/* Idle workers beyond this many exit after PX_WORKER_IDLE_MS without work. */
#define PX_WORKERS_KEEP 4
#define PX_WORKER_IDLE_MS 2000u

struct paxos {
	pthread_mutex_t mu;   /* guards every field down to `rng` */
	pthread_cond_t cv;    /* broadcast on decisions, forgetting, kill */
	bool dead;
	px_inst **insts;      /* live instances, sorted by seq */
	size_t ninst, cap;
	int max_seq;          /* highest seq heard of, -1 */
	int *dones;           /* dones[i]: peer i's Done value as known here, -1 */
	int min_seq;          /* min(dones) + 1 */
	pthread_cond_t work_cv; /* signalled when a job is queued, and at kill */
	px_job *jobs, *jobs_tail; /* queued paxos_starts, FIFO */
	int njobs;            /* length of `jobs` */
	int nidle;            /* workers waiting on work_cv */
	px_worker *workers;   /* worker threads, running or finished-not-joined */
	uint64_t *fail_until; /* per peer: a recent call failed; try it last until then */
	/* Acceptor side of Multi-Paxos: a range promise. Every instance >=
	 * floor_seq has n_p >= floor_n (applied lazily by px_get_locked). */
	uint64_t floor_n;     /* 0: none */
	int floor_seq;        /* INT_MAX: none */
	/* Proposer side: our lease from a range promise granted by a majority.
	 * Instances above lead_from, but those in unsafe[], may skip phase 1 and
	 * send ACCEPT(lead_n) at once. Dropped on any refusal. */
	uint64_t lead_n;      /* 0: no lease */
	int lead_from;
	int *unsafe;          /* malloc'ed; nunsafe entries */
	int nunsafe;
	dkv_rng rng;
	uint64_t lead_t0;     /* when the lease's range prepare began (ms) */
	uint64_t fwd_bad_n;   /* a forward to the holder of floor_n was refused */
	int hint;             /* the last peer that said it leads (headers), -1 */

	/* Incarnations and restarts (paxos.c "Restarts"). */
	uint64_t inc;         /* ours: nonzero, random at every start */
	uint64_t *peer_inc;   /* per peer: its incarnation as last heard from it, 0 */
	uint64_t *dincs;      /* dincs[i]: the incarnation dones[i] belongs to, 0 */
	bool voting;          /* false while rejoining */
	bool rejoined;        /* a rejoin completed: it covers every earlier incarnation */
	bool rejoin_running;  /* the rejoin thread exists (joined at kill) */
	pthread_t rejoin_tid;
	uint64_t rejoin_t0;   /* when this rejoin began (ms) */
	int vote_floor;       /* refuse (NOVOTE) every seq <= this forever; -1 */
	uint64_t round_floor; /* our proposal numbers stay above this */
	unsigned long novote_sent;  /* NOVOTE replies given */
	unsigned long novote_seen;  /* NOVOTE replies received by our proposers */
	unsigned long forwards_taken; /* FORWARDs we took as lease holder */
	unsigned long forwards_sent;  /* FORWARDs our proposers sent */
	unsigned long rejoin_asks;    /* INFO calls made by the rejoin */
	/* Fences (paxos.c "Restarts", R5): fence_inc[p] is the incarnation of p
	 * whose INFO we answered last (0: none); requests of p from any other
	 * incarnation are refused, replies from one are not taken in.
	 * fence_gen counts changes of fence_inc: a round that began under another
	 * fence_gen counts nothing (lead_gen: the lease's range round's). */
	uint64_t *fence_inc;
	uint64_t fence_gen;
	uint64_t lead_gen;
	unsigned long stale_refused;  /* requests refused: an old incarnation's */
	unsigned long fenced_rounds;  /* our rounds failed by a fence */
	bool rejoin_waited;           /* the rejoin fell back to the R3 wait */

	/* Durability (paxos.c "Durability"); NULL in memory mode. */
	dkv_dir *dir;         /* owned when own_dir */
	bool own_dir;
	dkv_log *log;         /* "paxos.log": the acceptor's records */
	uint64_t log_live;    /* bytes of live records at the last compaction */
	pthread_cond_t sync_cv; /* wakes the syncer */
	pthread_t syncer;     /* writes our own votes while our messages are out */
	bool syncer_running;
	uint64_t sync_want;   /* the syncer makes this LSN durable */
	bool replay_rejoin;   /* replay: a rejoin was under way (J without V) */
	bool replay_inc;      /* replay: the log held our incarnation record ('I') */

	/* Immutable after paxos_make. */
	int npeers, me;
	char **peers;
	dkv_rpc_server *srv;
	bool own_srv;
	dkv_rpc_pool *pool;
	px_decide_hook hook;
	void *hook_ctx;

	unsigned long rpc_count;     /* atomic */
	pthread_mutex_t kill_mu;     /* serialises paxos_kill; guards `killed` */
	bool killed;
};

/* px_make: paxos_make with a decide hook (may be NULL). */
paxos *px_make(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
               px_decide_hook hook, void *hook_ctx);
/* px_make_restart: px_make, rejoining without voting when `restart` (for
 * paxosrsm_start, which needs both the hook and the restart flag). */
paxos *px_make_restart(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                       px_decide_hook hook, void *hook_ctx, bool restart);

/* Restart state, for paxosrsm and operators (paxos.c "Restarts"). */
/* px_is_voting: false while the peer rejoins after a restart without state. */
bool px_is_voting(paxos *px);
/* px_incarnation: this peer's incarnation (nonzero). */
uint64_t px_incarnation(paxos *px);
/* px_vote_floor: the peer refuses to vote at every seq <= this; -1 none.
 * Meaningful once px_is_voting. */
int px_vote_floor(paxos *px);
/* px_novote_count: NOVOTE replies this peer gave (sent) or its proposers got. */
unsigned long px_novote_count(paxos *px, bool sent);
/* px_rejoin_asks: INFO calls this peer's rejoin has made (answered or not). */
unsigned long px_rejoin_asks(paxos *px);
/* px_rejoin_waited: the last rejoin waited PX_ROUND_MAX_MS (not every other
 * peer answered its fencing INFO in time). */
bool px_rejoin_waited(paxos *px);
/* px_stale_refused: requests refused as an old incarnation's (R5);
 * px_fenced_rounds: our rounds failed because a fence moved meanwhile. */
unsigned long px_stale_refused(paxos *px);
unsigned long px_fenced_rounds(paxos *px);
/* px_fenced_locked: is inc a fenced-off incarnation of peer `from`? */
bool px_fenced_locked(paxos *px, int from, uint64_t inc);

/* Durability. px_log_locked: append one record (no I/O); returns its LSN
 * (0: memory mode, or the peer was stopped by an error). px_sync (no lock
 * held): wait until lsn is durable; false (and the peer stopped) on error. */
uint64_t px_log_locked(paxos *px, char type, int seq, uint64_t n, const px_blob *v);
bool px_sync(paxos *px, uint64_t lsn);
/* px_sync_start_locked: have the syncer thread start making lsn durable now
 * (a proposer's own vote, while its messages are in flight; px_sync later
 * joins that group commit). */
void px_sync_start_locked(paxos *px, uint64_t lsn);
/* px_last_lsn_locked: the LSN a reply built now depends on (0: none) */
uint64_t px_last_lsn_locked(paxos *px);
/* px_make_dir: paxos_make_opts on an already open directory (borrowed; the
 * caller keeps it open past paxos_kill), for paxosrsm's shared directory. */
paxos *px_make_dir(const char *const *peers, int npeers, int me, dkv_rpc_server *rpcs,
                   px_decide_hook hook, void *hook_ctx, dkv_dir *dir, bool restart);

/* px_compact: rewrite paxos.log now with the live state only (instances >=
 * Min), if it holds at least min_bytes (0: 1). For paxosrsm, once Min passed a
 * durable snapshot: the disk then follows the live state. No-op in memory
 * mode, on a killed peer, or while a kill runs. px_log_bytes: its size. */
void px_compact(paxos *px, uint64_t min_bytes);
uint64_t px_log_bytes(paxos *px);

/* With px->mu held: */
/* may this peer vote (promise, accept) at seq? */
bool px_votes_at_locked(paxos *px, int seq);
/* fill a request header for peer `to`; dv/di: npeers-long buffers it points into */
void px_hdr_fill_locked(paxos *px, px_hdr *h, int to, int *dv, uint64_t *di);
/* take in a reply header from peer `from` */
void px_rhdr_note_locked(paxos *px, int from, const px_rhdr *h);
/* queue a proposer job for seq with value v (a new reference is taken);
 * false if not queued (decided, proposing, below Min, dead) */
bool px_start_locked(paxos *px, int seq, px_blob *v);
px_inst *px_find_locked(paxos *px, int seq);
/* find or create (NULL if seq < min or ENOMEM) */
px_inst *px_get_locked(paxos *px, int seq);
void px_note_seq_locked(paxos *px, int seq);
void px_note_done_locked(paxos *px, int from, int done);
/* merge a received Done vector (ignored unless n == npeers): entry i only when
 * di[i] is the incarnation of i we know (or we know none); never our own */
void px_note_dones_locked(paxos *px, const int *d, const uint64_t *di, unsigned n);
/* a peer's incarnation as heard from it directly: a new one resets its Done */
void px_note_inc_locked(paxos *px, int from, uint64_t inc);
/* px_learn_locked: record v (a new reference is taken) as decided for seq;
 * true if this is news (then call px_fire_hook after unlocking). */
bool px_learn_locked(paxos *px, int seq, px_blob *v);

/* px_range_promise_locked: the acceptor's range promise (after its promise
 * for instance `from` itself): n for every instance above `from`. Refused
 * (false) unless n is above every range promise given so far and `from` is
 * not below Min(). On true, *busy (malloc'ed, or NULL when *nbusy == 0) lists
 * the instances above `from` with something accepted or decided, or promised
 * above n. */
bool px_range_promise_locked(paxos *px, int from, uint64_t n, int **busy, u_int *nbusy);

/* Without the lock: tell the hook (if any). */
void px_fire_hook(paxos *px, int seq);

/* proposer.c: the body of a worker thread (arg: its px_worker). */
void *px_worker_main(void *arg);

#endif /* DKV_PAXOS_INTERNAL_H */
