/*
 * dkv/common.h — rules shared by every dkv library: error codes, size limits.
 *
 * Every public header of dkv includes this one. Nothing here allocates or blocks.
 */
#ifndef DKV_COMMON_H
#define DKV_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the headers; dkv_version_string() gives the archive's, to detect a mismatch. */
#define DKV_VERSION_MAJOR 0
#define DKV_VERSION_MINOR 1
#define DKV_VERSION_PATCH 0
#define DKV_VERSION_STRING "0.1.0"
#define DKV_VERSION_HEX ((DKV_VERSION_MAJOR << 16) | (DKV_VERSION_MINOR << 8) | DKV_VERSION_PATCH)
const char *dkv_version_string(void);

/*
 * The error table. Each entry: code, name, message. dkv_strerror() is built from
 * this same list, so a code without a message does not compile. New codes go at
 * the end (the numeric values are part of the contract).
 */
#define DKV_ERR_TABLE(X)                                                          \
	X(DKV_OK, "ok")                                                             \
	X(DKV_ERR_NOKEY, "no such key")                                             \
	X(DKV_ERR_WRONG_SERVER, "wrong server (not the primary / not the backup)")  \
	X(DKV_ERR_WRONG_GROUP, "wrong group (this group does not own the shard)")   \
	X(DKV_ERR_TIMEOUT, "timed out")                                             \
	X(DKV_ERR_NET, "network error (RPC failed or peer unreachable)")            \
	X(DKV_ERR_INVAL, "invalid argument")                                        \
	X(DKV_ERR_NOMEM, "out of memory")                                           \
	X(DKV_ERR_KILLED, "the object was killed")                                  \
	X(DKV_ERR_EXPIRED, "client session expired (the operation may have been applied)")

#define DKV_ERR_ENUM_ENTRY(code, msg) code,
enum dkv_err { DKV_ERR_TABLE(DKV_ERR_ENUM_ENTRY) DKV_ERR__COUNT };
#undef DKV_ERR_ENUM_ENTRY

/*
 * dkv_strerror: a static, human-readable message for an error code.
 * Unknown codes (negative, or past the table) give "unknown dkv error".
 * The string is never freed. Thread-safe.
 */
const char *dkv_strerror(int err);

/* Longest endpoint name, including the terminating NUL. */
#define DKV_NAME_MAX 256
/* Longest key in bytes (without the NUL). */
#define DKV_KEY_MAX 1024
/* Longest value in bytes (without the NUL); an Append counts the value it would produce. */
#define DKV_VALUE_MAX (64u * 1024u * 1024u)

/*
 * dkv_server_opts: how a replica starts (see API.md "Durability, restarts and
 * catch-up"). Zero-initialise it (`dkv_server_opts o = {0};`); fields may be
 * added at the end. All zero = what the plain start functions do.
 *   dir       this replica's own data directory (created if missing, 0700);
 *             NULL or "" = state in memory only.
 *   restart   this replica has voted before in this group: where its state did
 *             not survive, it rejoins without voting until it cannot contradict
 *             a vote it cast before. Never set on a replica's first start.
 *   no_fsync  with dir: write but never fsync (survives a killed process, not a
 *             power cut).
 */
typedef struct dkv_server_opts {
	const char *dir;
	bool restart;
	bool no_fsync;
} dkv_server_opts;

#ifdef __cplusplus
}
#endif

#endif /* DKV_COMMON_H */
