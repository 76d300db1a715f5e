/*
 * viewservice/vs_disk.h — the view service's data directory: one small state
 * file, replaced atomically.
 *
 * Interim: this is the small atomic state file of issue 14 (write "STATE.tmp",
 * fsync it, rename it over "STATE", fsync the directory), with a LOCK file
 * (flock: one live server per directory) and an IDENTITY file. It is written
 * behind these four functions so that it can move onto src/storage.h
 * (dkv_dir_open + dkv_snap_write/read) once that lands, without touching the
 * server. Every failure writes a log line naming the file.
 */
#ifndef DKV_VS_DISK_H
#define DKV_VS_DISK_H

#include <stdbool.h>

#include "dkv/viewservice.h"

typedef struct vs_disk vs_disk;

/* What a view service keeps across a restart. */
typedef struct {
	viewservice_view view;
	bool acked;
	bool recovering;      /* it had lost its state and has not adopted a view yet */
	unsigned p_last;      /* viewnum of the primary's latest ping (restart detection) */
	unsigned b_last;      /* the same for the backup */
} vs_saved;

/*
 * vs_disk_open: open (creating it, 0700, if missing) the directory `dir` of the
 * view service `me`, lock it and read its state. *found: a state was read into
 * *out (else the directory is fresh). Returns 0 or a positive errno: EBUSY (in
 * use), EINVAL (another server's directory, not a dkv directory, bad name), EIO
 * (damaged state), EACCES, ENOTDIR, ENOMEM.
 */
int vs_disk_open(const char *dir, const char *me, bool no_fsync, vs_disk **d, vs_saved *out,
                 bool *found);

/* vs_disk_save: make *st durable (unless no_fsync: written only). 0 or errno;
 * a failure is sticky (every later save fails with it). */
int vs_disk_save(vs_disk *d, const vs_saved *st);

/* vs_disk_close: release the lock and free. NULL: no-op. */
void vs_disk_close(vs_disk *d);

#endif /* DKV_VS_DISK_H */
