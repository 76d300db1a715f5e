/*
 * pbservice/pb_internal.h — pbservice internals shared by the server and the
 * tests (not installed, not part of API.md).
 */
#ifndef DKV_PB_INTERNAL_H
#define DKV_PB_INTERNAL_H

#include <stddef.h>

#include "dkv/pbservice.h"

/* Sessions a server remembers (src/session.h: least recently used evicted). */
#define PB_SESSION_CAP 1024
/* Session ids at or above this are refused (DKV_ERR_INVAL): ids come from the
 * primary's counter, and a caller-chosen id must leave that counter room. */
#define PB_SESSION_ID_MAX (1ull << 62)

/* pbservice_server_session_count: sessions held now (thread-safe; waits for the
 * operation in progress). 0 for a killed server. */
size_t pbservice_server_session_count(pbservice_server *srv);

#endif /* DKV_PB_INTERNAL_H */
