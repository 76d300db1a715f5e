/*
 * cmd/lib/status_cmd.h — `dkvctl status`: ask every replica of the given
 * services for its status (the status program, src/status.h) and print one
 * row per replica, as a table or as one JSON object. Shared by dkvctl and
 * dkv-cluster (which prints the table at the end of its run).
 *
 * Which replicas: every address of `servers` (kvpaxos) and `shardmasters`;
 * with shardmasters, also every server of every group of the latest
 * configuration (shardkv); with `vs`, the viewservice and the primary and
 * backup of its current view (pbservice); and each `extra` address. An
 * address is asked once.
 */
#ifndef DKV_CMD_STATUS_CMD_H
#define DKV_CMD_STATUS_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "cli.h"

typedef struct {
	const cli_list *servers;      /* kvpaxos replicas, or NULL */
	const cli_list *shardmasters; /* shard master replicas, or NULL */
	const char *vs;               /* the viewservice, or NULL */
	const cli_list *extra;        /* more addresses to ask, or NULL */
	unsigned timeout_ms;          /* per call (0: 2 s) */
	bool json;
	FILE *out;                    /* where the table or JSON goes */
} cli_status_req;

/*
 * cli_status_run: ask, print, and return the exit code: CLI_EXIT_OK when
 * every replica answered (and the shard master's configuration or the view
 * could be read), CLI_EXIT_ERR otherwise. Names are not checked here (the
 * caller parsed the lists with cli_list_parse).
 */
int cli_status_run(const cli_status_req *rq);

#endif /* DKV_CMD_STATUS_CMD_H */
