/*
 * paxos/rsm_disk.c — paxosrsm's state on disk (opts->dir; issue 13).
 *
 * One data directory per replica, opened once by paxosrsm (identity: the
 * service, gid, peers and me) and handed to its Paxos peer (px_make_dir),
 * which keeps its acceptor state (promises, accepts, decisions, Done) in
 * "paxos.log" there. The engine adds one file, "rsm.snap": the state
 * machine's snapshot, the session table and the position (the first seq it
 * does not cover), written atomically (dkv_snap_writev: temp, fdatasync,
 * rename, fsync the directory).
 *
 * Done rule (with a directory): the replica calls paxos_done(pos - 1) only
 * after a snapshot at pos is durable, so the Paxos log holds every decided
 * op after the snapshot, and replay on start is: restore rsm.snap, then apply
 * the decided instances from pos on (Paxos replays its own log; what it does
 * not hold comes from the peers as usual: hole no-ops, or a peer's snapshot
 * where the peers forgot it).
 *
 * Snapshot policy: a snapshot is due when RSM_DISK_SNAP_BYTES of log values
 * (or twice the last snapshot's size, if larger: the cost of a snapshot stays
 * proportional to the log it saves) were applied since the last one, and at
 * the latest RSM_DISK_IDLE_MS after the last apply, so that ~1 s after a
 * replica's last op its directory holds the live state about once — or
 * RSM_DISK_MAX_AGE_MS after the first apply not yet in a snapshot, so a
 * replica under constant load (never idle) still compacts.
 *
 * Gossip and compaction: Paxos forgets an instance (and its compaction drops
 * it from paxos.log) only when every peer is Done with it, and Done values
 * travel on Paxos messages — of which there are none once the clients stop.
 * So after each snapshot a small thread exchanges headers with every peer
 * (PX_INFO: read-only, carries both sides' Done vectors), a few times while
 * Min lags the snapshot, and rewrites paxos.log (px_compact) each time Min
 * has advanced. A peer that is down keeps Min (and the disk) where it is:
 * the bound holds with every replica up, as API.md says.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rsm_disk.h"

#define RSD_MAGIC 0x31445352u /* "RSD1" */
#define RSD_HDR 24u
#define GOSSIP_ROUNDS 8
#define GOSSIP_PAUSE_MS 150u
#define GOSSIP_CALL_MS 500u
#define COMPACT_MIN_BYTES 4096u

struct rsm_disk {
	dkv_dir *dir;
	bool fresh;
	/* applier-owned */
	int pos;                  /* durable snapshot's position, 0 none */
	uint64_t bytes_since;     /* log value bytes applied since it */
	uint64_t last_snap_bytes;
	uint64_t last_apply_ms;
	uint64_t first_apply_ms;  /* first apply since it (0: none) */
	/* gossip thread */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, poked, running;
	pthread_t tid;
	paxos *px;
	dkv_rpc_pool *pool;
};

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
	return v;
}
static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
	return v;
}

int rsm_disk_open(const dkv_server_opts *opts, const char *service, int64_t gid,
                  const char *const *peers, int npeers, int me, rsm_disk **out)
{
	*out = NULL;
	if (!peers || npeers <= 0 || me < 0 || me >= npeers) return EINVAL;
	for (int i = 0; i < npeers; i++)
		if (!peers[i]) return EINVAL;
	char *id = dkv_dir_identity_new(service, gid, peers, npeers, me);
	if (!id) return ENOMEM;
	rsm_disk *d = dkv_calloc(1, sizeof *d);
	if (!d) {
		free(id);
		return ENOMEM;
	}
	int err = dkv_dir_open_server(opts, id, &d->dir);
	free(id);
	if (err || !d->dir) {
		free(d);
		return err ? err : EINVAL;
	}
	d->fresh = dkv_dir_fresh(d->dir);
	pthread_mutex_init(&d->mu, NULL);
	if ((err = dkv_cond_init(&d->cv)) != 0) {
		pthread_mutex_destroy(&d->mu);
		dkv_dir_close(d->dir);
		free(d);
		return err;
	}
	d->last_apply_ms = dkv_now_ms();
	*out = d;
	return 0;
}

dkv_dir *rsm_disk_dir(rsm_disk *d)
{
	return d->dir;
}

bool rsm_disk_fresh(rsm_disk *d)
{
	return d->fresh;
}

int rsm_disk_pos(const rsm_disk *d)
{
	return d->pos;
}

int rsm_disk_load(rsm_disk *d, int *pos, void **blob, const void **st, size_t *st_len,
                  const void **ses, size_t *ses_len)
{
	*blob = NULL;
	void *buf = NULL;
	size_t len = 0;
	int err = dkv_snap_read(d->dir, RSM_DISK_SNAP_NAME, &buf, &len);
	if (err) return err;
	const unsigned char *p = buf;
	uint64_t sl = 0, el = 0;
	if (len >= RSD_HDR) {
		sl = get64(p + 8);
		el = get64(p + 16);
	}
	if (len < RSD_HDR || get32(p) != RSD_MAGIC || get32(p + 4) > (uint32_t)INT32_MAX ||
	    sl > len - RSD_HDR || el != len - RSD_HDR - sl) {
		DKV_ERROR("paxosrsm: %s/%s: malformed snapshot (%zu bytes)", dkv_dir_path(d->dir),
		          RSM_DISK_SNAP_NAME, len);
		free(buf);
		return EIO;
	}
	*pos = (int)get32(p + 4);
	*st = p + RSD_HDR;
	*st_len = (size_t)sl;
	*ses = p + RSD_HDR + sl;
	*ses_len = (size_t)el;
	*blob = buf;
	d->pos = *pos;
	d->last_snap_bytes = len;
	return 0;
}

int rsm_disk_save(rsm_disk *d, int pos, const void *st, size_t st_len, const void *ses,
                  size_t ses_len)
{
	unsigned char hdr[RSD_HDR];
	put32(hdr, RSD_MAGIC);
	put32(hdr + 4, (uint32_t)pos);
	put64(hdr + 8, st_len);
	put64(hdr + 16, ses_len);
	struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)st, st_len}, {(void *)ses, ses_len}};
	int err = dkv_snap_writev(d->dir, RSM_DISK_SNAP_NAME, iov, 3);
	if (err) return err;
	pthread_mutex_lock(&d->mu);
	d->pos = pos;
	pthread_mutex_unlock(&d->mu);
	d->bytes_since = 0;
	d->first_apply_ms = 0;
	d->last_snap_bytes = RSD_HDR + st_len + ses_len;
	return 0;
}

void rsm_disk_note_apply(rsm_disk *d, size_t bytes, uint64_t now_ms)
{
	d->bytes_since += bytes;
	d->last_apply_ms = now_ms;
	if (d->first_apply_ms == 0) d->first_apply_ms = now_ms;
}

uint32_t rsm_disk_due(const rsm_disk *d, int next_apply, uint64_t now_ms)
{
	if (next_apply <= d->pos) return UINT32_MAX;
	uint64_t big = 2 * d->last_snap_bytes;
	if (big < RSM_DISK_SNAP_BYTES) big = RSM_DISK_SNAP_BYTES;
	if (d->bytes_since >= big) return 0;
	uint64_t at = d->last_apply_ms + RSM_DISK_IDLE_MS;
	if (d->first_apply_ms != 0 && d->first_apply_ms + RSM_DISK_MAX_AGE_MS < at)
		at = d->first_apply_ms + RSM_DISK_MAX_AGE_MS;
	return now_ms >= at ? 0 : (uint32_t)(at - now_ms);
}

/* One exchange of headers with every other peer (their Done values for ours). */
static void gossip_once(rsm_disk *d)
{
	paxos *px = d->px;
	int n = px->npeers;
	int *dv = dkv_malloc((size_t)n * sizeof *dv);
	uint64_t *di = dkv_malloc((size_t)n * sizeof *di);
	for (int p = 0; p < n && dv && di; p++) {
		if (p == px->me) continue;
		px_info_args a;
		px_info_reply r;
		memset(&a, 0, sizeof a);
		memset(&r, 0, sizeof r);
		pthread_mutex_lock(&px->mu);
		bool dead = px->dead;
		if (!dead) px_hdr_fill_locked(px, &a.h, p, dv, di);
		pthread_mutex_unlock(&px->mu);
		if (dead) break;
		int rc = dkv_rpc_call(d->pool, px->peers[p], PX_PROG, PX_VERS, PX_INFO,
		                      (xdrproc_t)xdr_px_info_args, &a, (xdrproc_t)xdr_px_info_reply, &r,
		                      GOSSIP_CALL_MS);
		if (rc != DKV_OK) continue;
		pthread_mutex_lock(&px->mu);
		px_rhdr_note_locked(px, p, &r.h);
		pthread_mutex_unlock(&px->mu);
		xdr_free((xdrproc_t)xdr_px_info_reply, (char *)&r);
	}
	free(dv);
	free(di);
}

static void *gossip_main(void *arg)
{
	rsm_disk *d = arg;
	int rounds = 0, compacted_min = paxos_min(d->px);
	pthread_mutex_lock(&d->mu);
	while (!d->stop) {
		if (d->poked) {
			d->poked = false;
			rounds = GOSSIP_ROUNDS;
		}
		if (rounds == 0) {
			pthread_cond_wait(&d->cv, &d->mu);
			continue;
		}
		int target = d->pos; /* Min reaching the snapshot: nothing left to tell */
		pthread_mutex_unlock(&d->mu);
		gossip_once(d);
		int m = paxos_min(d->px);
		if (m > compacted_min) {
			px_compact(d->px, COMPACT_MIN_BYTES);
			compacted_min = m;
		}
		pthread_mutex_lock(&d->mu);
		if (m >= target)
			rounds = 0;
		else if (--rounds > 0 && !d->stop && !d->poked)
			dkv_cond_wait_ms(&d->cv, &d->mu, GOSSIP_PAUSE_MS);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

int rsm_disk_gossip_start(rsm_disk *d, paxos *px)
{
	d->px = px;
	if (!d->pool && !(d->pool = dkv_rpc_pool_new())) return ENOMEM;
	int err = pthread_create(&d->tid, NULL, gossip_main, d);
	if (err) return err;
	d->running = true;
	return 0;
}

void rsm_disk_poke(rsm_disk *d)
{
	pthread_mutex_lock(&d->mu);
	d->poked = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

void rsm_disk_stop(rsm_disk *d)
{
	if (!d || !d->running) return;
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	if (d->pool) dkv_rpc_pool_shutdown(d->pool);
	pthread_join(d->tid, NULL);
	d->running = false;
}

void rsm_disk_close(rsm_disk *d)
{
	if (!d) return;
	rsm_disk_stop(d);
	dkv_rpc_pool_free(d->pool);
	dkv_dir_close(d->dir);
	pthread_cond_destroy(&d->cv);
	pthread_mutex_destroy(&d->mu);
	free(d);
}
