/*
 * cmd/lib/status_cmd.c — `dkvctl status` (see status_cmd.h).
 *
 * Design: collect the target addresses first (lists given, then the shard
 * master's latest configuration and the viewservice's view, which need one
 * call each), then ask each target once, one after the other, through one
 * connection pool, with the per-call timeout. A target that does not answer
 * is probed with a plain connect() so the row can say why ("connection
 * refused", "no such file or directory") rather than only "RPC failed". The
 * rows are formatted into cells first so each column is as wide as its
 * widest cell.
 */
#include "status_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "dkv/shardmaster.h"
#include "dkv/viewservice.h"
#include "status.h"

#define DEFAULT_STATUS_TIMEOUT_MS 2000u

struct target {
	char addr[DKV_NAME_MAX];
	char expect[16];  /* the service the address was given for */
	int64_t gid;      /* shardkv group from the configuration, else 0 */
	bool ok;
	char err[256];
	dkv_status st;
};

struct targets {
	struct target *v;
	int n, cap;
};

static bool same_name(const char *a, const char *b)
{
	if (strncmp(a, "unix:", 5) == 0)
		a += 5;
	if (strncmp(b, "unix:", 5) == 0)
		b += 5;
	return strcmp(a, b) == 0;
}

static bool add_target(struct targets *t, const char *addr, const char *expect, int64_t gid)
{
	if (addr == NULL || addr[0] == '\0')
		return true;
	for (int i = 0; i < t->n; i++)
		if (same_name(t->v[i].addr, addr))
			return true;
	if (t->n == t->cap) {
		int cap = t->cap ? t->cap * 2 : 16;
		struct target *v = realloc(t->v, (size_t)cap * sizeof *v);
		if (v == NULL)
			return false;
		t->v = v;
		t->cap = cap;
	}
	struct target *x = &t->v[t->n++];
	memset(x, 0, sizeof *x);
	snprintf(x->addr, sizeof x->addr, "%s", addr);
	snprintf(x->expect, sizeof x->expect, "%s", expect);
	x->gid = gid;
	dkv_status_init(&x->st);
	return true;
}

/* probe: why does `name` not answer? A plain connect, at most timeout_ms. */
static void probe(const char *name, unsigned timeout_ms, int rc, char *why, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	memset(&ss, 0, sizeof ss);
	const char *path = strncmp(name, "unix:", 5) == 0 ? name + 5 : name;
	if (strncmp(name, "tcp:", 4) == 0) {
		char host[DKV_NAME_MAX];
		snprintf(host, sizeof host, "%s", name + 4);
		char *colon = strrchr(host, ':');
		if (colon == NULL) {
			snprintf(why, len, "bad address");
			return;
		}
		*colon = '\0';
		char *h = host;
		if (h[0] == '[' && h[strlen(h) - 1] == ']') {
			h[strlen(h) - 1] = '\0';
			h++;
		}
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
		int g = getaddrinfo(h, colon + 1, &hints, &ai);
		if (g != 0 || ai == NULL) {
			snprintf(why, len, "cannot resolve: %s", gai_strerror(g));
			return;
		}
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		sl = ai->ai_addrlen;
		freeaddrinfo(ai);
	} else {
		struct sockaddr_un *su = (struct sockaddr_un *)&ss;
		su->sun_family = AF_UNIX;
		size_t pl = strlen(path);
		if (pl >= sizeof su->sun_path) {
			snprintf(why, len, "socket path too long (%zu bytes)", pl);
			return;
		}
		memcpy(su->sun_path, path, pl + 1);
		sl = sizeof *su;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(why, len, "socket: %s", strerror(errno));
		return;
	}
	int e = 0;
	if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
		e = errno;
		if (e == EINPROGRESS) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			int n = poll(&pf, 1, (int)timeout_ms);
			socklen_t el = sizeof e;
			if (n <= 0)
				e = ETIMEDOUT;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
				e = errno;
		}
	}
	close(fd);
	if (e != 0)
		snprintf(why, len, "connect: %s", strerror(e));
	else if (rc == DKV_ERR_TIMEOUT)
		snprintf(why, len, "accepts connections but no answer within %u ms", timeout_ms);
	else
		snprintf(why, len, "accepts connections but the status call failed (%s; an older "
		                   "dkvd without the status program?)",
		         dkv_strerror(rc));
}

/* ---------------------------------------------------------------- formatting */

static void fmt_i64(char *b, size_t n, int64_t v)
{
	if (v < 0)
		snprintf(b, n, "-");
	else
		snprintf(b, n, "%lld", (long long)v);
}

static void fmt_bytes(char *b, size_t n, int64_t v)
{
	if (v < 0) {
		snprintf(b, n, "-");
		return;
	}
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double x = (double)v;
	int u = 0;
	while (x >= 1024 && u < 4) {
		x /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(b, n, "%lld B", (long long)v);
	else
		snprintf(b, n, "%.1f %s", x, unit[u]);
}

static void fmt_uptime(char *b, size_t n, uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s < 60)
		snprintf(b, n, "%.1fs", (double)ms / 1000.0);
	else if (s < 3600)
		snprintf(b, n, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
	else if (s < 86400)
		snprintf(b, n, "%lluh%02llum", (unsigned long long)(s / 3600),
		         (unsigned long long)(s / 60 % 60));
	else
		snprintf(b, n, "%llud%02lluh", (unsigned long long)(s / 86400),
		         (unsigned long long)(s / 3600 % 24));
}

enum { C_ADDR, C_SVC, C_GROUP, C_UP, C_ROLE, C_INC, C_APPLIED, C_MAX, C_MIN, C_SNAP, C_SESS,
       C_KEYS, C_BYTES, C_DIR, C_UPTIME, C_NOTE, NCOLS };
static const char *const col_names[NCOLS] = { "ADDRESS", "SERVICE", "GROUP", "UP", "ROLE",
	                                      "INCARNATION", "APPLIED", "MAX", "MIN", "SNAPSHOT",
	                                      "SESSIONS", "KEYS", "BYTES", "DIR", "UPTIME", "NOTE" };
#define CELL 300

static void row_cells(const struct target *t, char cell[NCOLS][CELL])
{
	const dkv_status *s = &t->st;
	snprintf(cell[C_ADDR], CELL, "%s", t->addr);
	snprintf(cell[C_SVC], CELL, "%s", t->ok && s->service[0] ? s->service : t->expect);
	int64_t gid = t->ok && s->gid > 0 ? s->gid : t->gid;
	if (gid > 0)
		snprintf(cell[C_GROUP], CELL, "%lld", (long long)gid);
	else
		snprintf(cell[C_GROUP], CELL, "-");
	snprintf(cell[C_UP], CELL, "%s", t->ok ? "yes" : "no");
	if (!t->ok) {
		snprintf(cell[C_ROLE], CELL, "unreachable");
		for (int c = C_INC; c < C_NOTE; c++)
			snprintf(cell[c], CELL, "-");
		snprintf(cell[C_NOTE], CELL, "%s", t->err);
		return;
	}
	snprintf(cell[C_ROLE], CELL, "%s", s->role[0] ? s->role : "-");
	if (s->incarnation != 0)
		snprintf(cell[C_INC], CELL, "%llu", (unsigned long long)s->incarnation);
	else
		snprintf(cell[C_INC], CELL, "-");
	fmt_i64(cell[C_APPLIED], CELL, s->applied);
	fmt_i64(cell[C_MAX], CELL, s->paxos_max);
	fmt_i64(cell[C_MIN], CELL, s->paxos_min);
	fmt_i64(cell[C_SNAP], CELL, s->snapshot_seq);
	fmt_i64(cell[C_SESS], CELL, s->sessions);
	fmt_i64(cell[C_KEYS], CELL, s->keys);
	fmt_bytes(cell[C_BYTES], CELL, s->bytes);
	fmt_bytes(cell[C_DIR], CELL, s->dir_bytes);
	fmt_uptime(cell[C_UPTIME], CELL, s->uptime_ms);
	snprintf(cell[C_NOTE], CELL, "%s", s->detail);
}

static void print_table(FILE *f, const struct targets *t)
{
	size_t w[NCOLS];
	for (int c = 0; c < NCOLS; c++)
		w[c] = strlen(col_names[c]);
	char (*cells)[NCOLS][CELL] = calloc((size_t)(t->n ? t->n : 1), sizeof *cells);
	if (cells == NULL)
		return;
	for (int i = 0; i < t->n; i++) {
		row_cells(&t->v[i], cells[i]);
		for (int c = 0; c < NCOLS; c++)
			if (strlen(cells[i][c]) > w[c])
				w[c] = strlen(cells[i][c]);
	}
	/* Numbers right-aligned, words left-aligned; the note last, unpadded. */
	static const bool right[NCOLS] = { [C_GROUP] = true,   [C_INC] = true,  [C_APPLIED] = true,
		                           [C_MAX] = true,     [C_MIN] = true,  [C_SNAP] = true,
		                           [C_SESS] = true,    [C_KEYS] = true, [C_BYTES] = true,
		                           [C_DIR] = true,     [C_UPTIME] = true };
	for (int i = -1; i < t->n; i++) {
		for (int c = 0; c < NCOLS; c++) {
			const char *s = i < 0 ? col_names[c] : cells[i][c];
			if (c == C_NOTE)
				fprintf(f, "%s", s);
			else
				fprintf(f, right[c] ? "%*s  " : "%-*s  ", (int)w[c], s);
		}
		fputc('\n', f);
	}
	free(cells);
}

static void json_i64(FILE *f, const char *k, int64_t v)
{
	if (v < 0)
		fprintf(f, ",\"%s\":null", k);
	else
		fprintf(f, ",\"%s\":%lld", k, (long long)v);
}

static void print_json(FILE *f, const struct targets *t, int answered, const char *error)
{
	fprintf(f, "{\"ok\":%s,\"answered\":%d,\"total\":%d", answered == t->n && !error ? "true" : "false",
	        answered, t->n);
	if (error != NULL) {
		fprintf(f, ",\"error\":");
		cli_json_str(f, error);
	}
	fprintf(f, ",\"replicas\":[");
	for (int i = 0; i < t->n; i++) {
		const struct target *x = &t->v[i];
		const dkv_status *s = &x->st;
		fprintf(f, "%s{\"address\":", i ? "," : "");
		cli_json_str(f, x->addr);
		fprintf(f, ",\"service\":");
		cli_json_str(f, x->ok && s->service[0] ? s->service : x->expect);
		int64_t gid = x->ok && s->gid > 0 ? s->gid : x->gid;
		json_i64(f, "group", gid > 0 ? gid : -1);
		fprintf(f, ",\"reachable\":%s", x->ok ? "true" : "false");
		if (!x->ok) {
			fprintf(f, ",\"error\":");
			cli_json_str(f, x->err);
			fprintf(f, "}");
			continue;
		}
		fprintf(f, ",\"role\":");
		cli_json_str(f, s->role);
		fprintf(f, ",\"detail\":");
		cli_json_str(f, s->detail);
		json_i64(f, "me", s->me);
		json_i64(f, "npeers", s->npeers);
		fprintf(f, ",\"incarnation\":%llu", (unsigned long long)s->incarnation);
		json_i64(f, "applied", s->applied);
		json_i64(f, "paxos_max", s->paxos_max);
		json_i64(f, "paxos_min", s->paxos_min);
		json_i64(f, "snapshot", s->snapshot_seq);
		json_i64(f, "sessions", s->sessions);
		json_i64(f, "keys", s->keys);
		json_i64(f, "bytes", s->bytes);
		json_i64(f, "dir_bytes", s->dir_bytes);
		fprintf(f, ",\"uptime_ms\":%llu,\"pid\":%llu}", (unsigned long long)s->uptime_ms,
		        (unsigned long long)s->pid);
	}
	fprintf(f, "]}\n");
}

/* ---------------------------------------------------------------- run */

static int cmp_gid(const void *a, const void *b)
{
	int64_t x = ((const shardmaster_group *)a)->gid, y = ((const shardmaster_group *)b)->gid;
	return (x > y) - (x < y);
}

int cli_status_run(const cli_status_req *rq)
{
	FILE *f = rq->out != NULL ? rq->out : stdout;
	unsigned tmo = rq->timeout_ms ? rq->timeout_ms : DEFAULT_STATUS_TIMEOUT_MS;
	struct targets t = { NULL, 0, 0 };
	char error[512] = "";
	bool oom = false;

	for (int i = 0; rq->servers && i < rq->servers->n; i++)
		oom |= !add_target(&t, rq->servers->v[i], "kvpaxos", 0);
	if (rq->shardmasters != NULL && rq->shardmasters->n > 0) {
		for (int i = 0; i < rq->shardmasters->n; i++)
			oom |= !add_target(&t, rq->shardmasters->v[i], "shardmaster", 0);
		shardmaster_clerk *ck = shardmaster_clerk_new((const char *const *)rq->shardmasters->v,
		                                              rq->shardmasters->n);
		shardmaster_config *c = NULL;
		int rc = DKV_ERR_NOMEM;
		if (ck != NULL) {
			shardmaster_clerk_set_timeout(ck, tmo);
			rc = shardmaster_clerk_query(ck, -1, &c);
		}
		if (rc == DKV_OK && c != NULL) {
			qsort(c->groups, (size_t)c->ngroups, sizeof c->groups[0], cmp_gid);
			for (int g = 0; g < c->ngroups; g++)
				for (int j = 0; j < c->groups[g].nservers; j++)
					oom |= !add_target(&t, c->groups[g].servers[j], "shardkv", c->groups[g].gid);
		} else {
			snprintf(error, sizeof error, "shard master: latest configuration: %s (shardkv "
			                              "groups not listed)",
			         dkv_strerror(rc));
		}
		shardmaster_config_free(c);
		shardmaster_clerk_free(ck);
	}
	if (rq->vs != NULL && rq->vs[0] != '\0') {
		oom |= !add_target(&t, rq->vs, "viewservice", 0);
		viewservice_clerk *ck = viewservice_clerk_new("", rq->vs);
		viewservice_view v;
		int rc = ck != NULL ? viewservice_clerk_get(ck, &v) : DKV_ERR_NOMEM;
		viewservice_clerk_free(ck);
		if (rc == DKV_OK) {
			oom |= !add_target(&t, v.primary, "pbservice", 0);
			oom |= !add_target(&t, v.backup, "pbservice", 0);
		} else if (error[0] == '\0') {
			snprintf(error, sizeof error, "viewservice: current view: %s (pbservice servers "
			                              "not listed)",
			         dkv_strerror(rc));
		}
	}
	for (int i = 0; rq->extra && i < rq->extra->n; i++)
		oom |= !add_target(&t, rq->extra->v[i], "?", 0);
	if (oom && error[0] == '\0')
		snprintf(error, sizeof error, "out of memory");

	dkv_rpc_pool *pool = dkv_rpc_pool_new();
	int answered = 0;
	for (int i = 0; i < t.n; i++) {
		struct target *x = &t.v[i];
		int rc = pool != NULL ? dkv_status_get(pool, x->addr, tmo, &x->st) : DKV_ERR_NOMEM;
		x->ok = rc == DKV_OK;
		if (x->ok)
			answered++;
		else
			probe(x->addr, tmo, rc, x->err, sizeof x->err);
	}
	dkv_rpc_pool_free(pool);

	if (rq->json) {
		print_json(f, &t, answered, error[0] ? error : NULL);
	} else {
		print_table(f, &t);
		fprintf(f, "%d of %d replicas answered\n", answered, t.n);
		if (error[0])
			fprintf(f, "error: %s\n", error);
	}
	fflush(f);
	int code = answered == t.n && error[0] == '\0' && t.n > 0 ? CLI_EXIT_OK : CLI_EXIT_ERR;
	free(t.v);
	return code;
}
