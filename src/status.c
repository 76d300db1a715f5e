/*
 * src/status.c — the status program (see status.h): one procedure,
 * DKV_STATUS_GET, registered by each service on its own dkv_rpc_server.
 *
 * Design: the registration is a small object (the service's fill callback,
 * its ctx, the start time) handed to the RPC layer as the program's
 * instance. The handler initialises a record, lets the service fill it
 * (the service takes its own lock; this layer holds none), adds uptime and
 * pid, and converts it to the wire struct (strings malloc'ed: the RPC layer
 * frees the result with xdr_free). Nothing here keeps state between calls.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dkv/paxosrsm.h"
#include "status.h"
#include "status_prot.h"

struct dkv_status_reg {
	dkv_rpc_server *rpcs; /* borrowed */
	dkv_status_fill_fn fill;
	void *ctx;
	uint64_t t0_ms; /* immutable after register */
};

void dkv_status_init(dkv_status *st)
{
	memset(st, 0, sizeof *st);
	st->gid = 0;
	st->me = st->npeers = -1;
	st->applied = st->paxos_max = st->paxos_min = st->snapshot_seq = -1;
	st->sessions = st->keys = st->bytes = st->dir_bytes = -1;
}

/* A wire string: a malloc'ed copy of s with anything unprintable replaced. */
static char *wire_str(const char *s, size_t max)
{
	size_t n = strnlen(s, max);
	char *c = dkv_malloc(n + 1);
	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	c[n] = '\0';
	return c;
}

static void status_get(void *inst, void *args, void *res)
{
	(void)args;
	dkv_status_reg *reg = inst;
	dkv_status_x *x = res;
	dkv_status st;
	dkv_status_init(&st);
	reg->fill(reg->ctx, &st);
	st.uptime_ms = dkv_now_ms() - reg->t0_ms;
	st.pid = (uint64_t)getpid();
	/* A NULL string fails to encode: the caller sees an RPC error (out of memory). */
	x->service = wire_str(st.service, DKV_STATUS_WORD_LEN);
	x->role = wire_str(st.role, DKV_STATUS_WORD_LEN);
	x->detail = wire_str(st.detail, DKV_STATUS_TEXT_LEN);
	x->gid = st.gid;
	x->me = st.me;
	x->npeers = st.npeers;
	x->incarnation = st.incarnation;
	x->applied = st.applied;
	x->paxos_max = st.paxos_max;
	x->paxos_min = st.paxos_min;
	x->snapshot_seq = st.snapshot_seq;
	x->sessions = st.sessions;
	x->keys = st.keys;
	x->bytes = st.bytes;
	x->dir_bytes = st.dir_bytes;
	x->uptime_ms = st.uptime_ms;
	x->pid = st.pid;
}

static const dkv_rpc_proc status_procs[] = {
	{ DKV_STATUS_GET, (xdrproc_t)xdr_void, 0, (xdrproc_t)xdr_dkv_status_x, sizeof(dkv_status_x),
	  status_get },
};

dkv_status_reg *dkv_status_register(dkv_rpc_server *rpcs, dkv_status_fill_fn fill, void *ctx)
{
	if (rpcs == NULL || fill == NULL) {
		errno = EINVAL;
		return NULL;
	}
	dkv_status_reg *reg = dkv_calloc(1, sizeof *reg);
	if (reg == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	reg->rpcs = rpcs;
	reg->fill = fill;
	reg->ctx = ctx;
	reg->t0_ms = dkv_now_ms();
	int rc = dkv_rpc_server_add(rpcs, DKV_STATUS_PROG, DKV_STATUS_VERS, status_procs,
	                            sizeof status_procs / sizeof status_procs[0], reg);
	if (rc != DKV_OK) {
		free(reg);
		errno = rc == DKV_ERR_KILLED ? ESHUTDOWN : EINVAL;
		return NULL;
	}
	return reg;
}

void dkv_status_unregister(dkv_status_reg *reg)
{
	if (reg == NULL)
		return;
	dkv_rpc_server_remove(reg->rpcs, DKV_STATUS_PROG);
	free(reg);
}

static void copy_str(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src != NULL ? src : "");
}

int dkv_status_get(dkv_rpc_pool *pool, const char *name, unsigned timeout_ms, dkv_status *out)
{
	dkv_status_x x;
	memset(&x, 0, sizeof x);
	int rc = dkv_rpc_call(pool, name, DKV_STATUS_PROG, DKV_STATUS_VERS, DKV_STATUS_GET,
	                      (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_dkv_status_x, &x, timeout_ms);
	if (rc != DKV_OK)
		return rc;
	dkv_status_init(out);
	copy_str(out->service, sizeof out->service, x.service);
	copy_str(out->role, sizeof out->role, x.role);
	copy_str(out->detail, sizeof out->detail, x.detail);
	out->gid = x.gid;
	out->me = x.me;
	out->npeers = x.npeers;
	out->incarnation = x.incarnation;
	out->applied = x.applied;
	out->paxos_max = x.paxos_max;
	out->paxos_min = x.paxos_min;
	out->snapshot_seq = x.snapshot_seq;
	out->sessions = x.sessions;
	out->keys = x.keys;
	out->bytes = x.bytes;
	out->dir_bytes = x.dir_bytes;
	out->uptime_ms = x.uptime_ms;
	out->pid = x.pid;
	xdr_free((xdrproc_t)xdr_dkv_status_x, (char *)&x);
	return DKV_OK;
}

/* Sum of regular-file sizes under the open directory fd (consumed), depth-bounded. */
static int64_t dir_sum(int fd, int depth)
{
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	int64_t total = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue; /* removed meanwhile (compaction): not counted */
		if (S_ISREG(st.st_mode)) {
			total += st.st_size;
		} else if (S_ISDIR(st.st_mode) && depth < 8) {
			int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
			if (sub >= 0) {
				int64_t s = dir_sum(sub, depth + 1);
				if (s > 0)
					total += s;
			}
		}
	}
	closedir(d);
	return total;
}

int64_t dkv_status_dir_bytes(const char *dir)
{
	if (dir == NULL || dir[0] == '\0')
		return -1;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	return dir_sum(fd, 0);
}

void dkv_status_set_rsm(dkv_status *st, const struct paxosrsm_info *info)
{
	snprintf(st->role, sizeof st->role, "%s", dkv_status_rsm_role((int)info->role));
	st->incarnation = info->incarnation;
	st->applied = info->applied;
	st->paxos_max = info->paxos_max;
	st->paxos_min = info->paxos_min;
	st->snapshot_seq = info->snapshot_seq;
	st->sessions = (int64_t)info->sessions;
}

const char *dkv_status_rsm_role(int role)
{
	switch (role) {
	case PAXOSRSM_VOTING: return "voting";
	case PAXOSRSM_REJOINING: return "rejoining";
	case PAXOSRSM_CATCHING_UP: return "catching-up";
	case PAXOSRSM_STOPPED: return "stopped";
	default: return "unknown";
	}
}
