/*
 * cmd/lib/cli.h — what dkvd, dkvctl and dkv-cluster share: exit codes, the
 * version string, strict number and list parsing, endpoint-name checks, a
 * small levelled logger for the programs' own messages, and process helpers.
 *
 * Never part of a library: linked into each program under cmd/ only. Nothing
 * here is thread-safe unless it says so; the programs call it from main.
 */
#ifndef DKV_CMD_CLI_H
#define DKV_CMD_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dkv/common.h"

/* The release of the programs: the library's own (one source: dkv/common.h). */
#define CLI_VERSION DKV_VERSION_STRING

/* Exit codes shared by the programs (documented in each --help). */
enum {
	CLI_EXIT_OK = 0,      /* success; dkvd: stopped by SIGTERM/SIGINT/SIGHUP */
	CLI_EXIT_ERR = 1,     /* the operation or the start failed (address in use …) */
	CLI_EXIT_USAGE = 2,   /* bad flags or arguments */
	CLI_EXIT_TIMEOUT = 3, /* dkvctl: no answer before --timeout */
	CLI_EXIT_EMPTY = 4    /* dkvctl get --fail-empty: the value is "" */
};

/* Log levels, the same names as the library's DKV_LOG. */
enum { CLI_LOG_DEBUG = 0, CLI_LOG_INFO, CLI_LOG_WARN, CLI_LOG_ERROR, CLI_LOG_OFF };

/* cli_level_parse: "debug|info|warn|error|off" (any case) → level; -1 if unknown. */
int cli_level_parse(const char *s);

/* cli_log_init: name the program (borrowed; must outlive the logger) and set the level. */
/* cli_usage_error: "<prog>: <message>" and a pointer to --help on stderr, then
 * exit(CLI_EXIT_USAGE). */
void cli_usage_error(const char *prog, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

void cli_log_init(const char *prog, int level);

/*
 * cli_log: one line on stderr, "HH:MM:SS.mmm PROG[PID] LEVEL: message" (UTC),
 * the library's format, if level is at or above the configured one.
 * Thread-safe (one fprintf per line).
 */
void cli_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cli_env: getenv(name) when set and not empty, else NULL. Borrowed. */
const char *cli_env(const char *name);

/*
 * cli_parse_i64: the whole of `s` as a decimal integer in [min, max] into *out.
 * Returns false (and leaves *out alone) on anything else: empty, junk, range.
 */
bool cli_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/*
 * cli_parse_ms: a duration: "250" or "250ms" (milliseconds), "3s", "2m".
 * Returns false on junk or on more than UINT32_MAX ms.
 */
bool cli_parse_ms(const char *s, unsigned *out);

/*
 * cli_name_check: is `name` an endpoint name dkv accepts ("/path", "unix:/path"
 * or "tcp:HOST:PORT" with a decimal PORT <= 65535, shorter than DKV_NAME_MAX)?
 * On false, writes why into err (errlen bytes).
 */
bool cli_name_check(const char *name, char *err, size_t errlen);

/* A list of endpoint names parsed from "a,b,c"; every string malloc'ed. */
typedef struct {
	int n;
	char **v;
} cli_list;

/*
 * cli_list_parse: split `s` (borrowed) at commas into *out (which the caller
 * empties with cli_list_destroy), checking every name with cli_name_check.
 * Returns false with a reason in err on an empty list, an empty item, a bad
 * name, a duplicate, or out of memory (*out is then empty).
 */
bool cli_list_parse(const char *s, cli_list *out, char *err, size_t errlen);
void cli_list_destroy(cli_list *l);

/* cli_list_find: the index of `name` in l, or -1. "unix:/p" and "/p" are the same. */
int cli_list_find(const cli_list *l, const char *name);

/*
 * cli_unix_in_use: for a unix-domain name, true when a process accepts
 * connections on the socket file now (the library would otherwise remove a
 * live server's socket as if it were stale). False for TCP names and for no
 * file or a stale one.
 */
bool cli_unix_in_use(const char *name);

/*
 * cli_self_dir: the directory of the running executable (from /proc/self/exe,
 * else from argv0) into buf. Returns false if neither works.
 */
bool cli_self_dir(const char *argv0, char *buf, size_t len);

/* cli_now_ms / cli_now_us: CLOCK_MONOTONIC. cli_sleep_ms: sleeps, restarting on EINTR. */
uint64_t cli_now_ms(void);
uint64_t cli_now_us(void);
void cli_sleep_ms(unsigned ms);

/*
 * cli_json_str: write `s` to `f` as a JSON string literal (quotes, escapes
 * for '"', '\\' and control characters; other bytes as they are).
 */
void cli_json_str(FILE *f, const char *s);

#endif /* DKV_CMD_CLI_H */
