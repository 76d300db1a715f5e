/*
 * paxos/rsm_disk.h — paxosrsm's data directory (internal to libpaxos):
 * the directory (shared with the Paxos peer), the engine's snapshot file,
 * the snapshot policy's counters and the Done gossip. See rsm_disk.c.
 */
#ifndef DKV_RSM_DISK_H
#define DKV_RSM_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "paxos_internal.h"

/* A snapshot when this many bytes of log values were applied since the last
 * one (or twice the last snapshot's size, if larger)... */
#define RSM_DISK_SNAP_BYTES (8u << 20)
/* ... and at the latest this long after the last apply, */
#define RSM_DISK_IDLE_MS 500u
/* ... or this long after the first apply not in a snapshot (a replica that is
 * never idle — a shard master its pollers query all the time — still
 * compacts its log). */
#define RSM_DISK_MAX_AGE_MS 10000u

typedef struct rsm_disk rsm_disk;

/* rsm_disk_open: open opts->dir for the replica (service, gid, peers, me).
 * 0 and *out, or an errno value (EACCES, EBUSY, EINVAL, EIO, ENOMEM...). */
int rsm_disk_open(const dkv_server_opts *opts, const char *service, int64_t gid,
                  const char *const *peers, int npeers, int me, rsm_disk **out);
/* the directory (borrowed) and whether it held no dkv state at open */
dkv_dir *rsm_disk_dir(rsm_disk *d);
bool rsm_disk_fresh(rsm_disk *d);
/* rsm_disk_load: the snapshot file: 0 with *pos and the two blobs (malloc'ed,
 * views into one buffer *blob the caller frees), ENOENT (none), EIO (damage,
 * logged), or another errno. */
int rsm_disk_load(rsm_disk *d, int *pos, void **blob, const void **st, size_t *st_len,
                  const void **ses, size_t *ses_len);
/* rsm_disk_save: write the snapshot at pos atomically (durable on return,
 * unless no_fsync). 0 or an errno (sticky: the replica must stop). */
int rsm_disk_save(rsm_disk *d, int pos, const void *st, size_t st_len, const void *ses,
                  size_t ses_len);
/* position of the last durable snapshot (0: none) */
int rsm_disk_pos(const rsm_disk *d);
/* the applier applied a log value of `bytes` (at now_ms) */
void rsm_disk_note_apply(rsm_disk *d, size_t bytes, uint64_t now_ms);
/* rsm_disk_due: 0 = take a snapshot now; else the ms until one is due
 * (UINT32_MAX: none pending). next_apply: the applier's position. */
uint32_t rsm_disk_due(const rsm_disk *d, int next_apply, uint64_t now_ms);
/* rsm_disk_gossip_start: the gossip thread (tells the peers our Done after a
 * snapshot, learns theirs, compacts paxos.log as Min advances). */
int rsm_disk_gossip_start(rsm_disk *d, paxos *px);
/* rsm_disk_poke: a snapshot at pos was made and Done moved: gossip now. */
void rsm_disk_poke(rsm_disk *d);
/* rsm_disk_stop: stop and join the gossip thread (before paxos_kill). */
void rsm_disk_stop(rsm_disk *d);
/* rsm_disk_close: close the directory and free (after paxos_kill). NULL ok. */
void rsm_disk_close(rsm_disk *d);
/* the snapshot file's name in the directory */
#define RSM_DISK_SNAP_NAME "rsm.snap"

#endif /* DKV_RSM_DISK_H */
