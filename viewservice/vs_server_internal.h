/*
 * viewservice/vs_server_internal.h — test-only inspection of a running view
 * service (not installed, not part of API.md).
 */
#ifndef DKV_VS_SERVER_INTERNAL_H
#define DKV_VS_SERVER_INTERNAL_H

#include "dkv/viewservice.h"

/*
 * viewservice_server_peek: the current view and whether its primary has
 * acknowledged it (pinged its viewnum). Thread-safe; works after kill.
 */
void viewservice_server_peek(viewservice_server *vs, viewservice_view *out, bool *acked);

#endif /* DKV_VS_SERVER_INTERNAL_H */
