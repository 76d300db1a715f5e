/*
 * src/server.c — dkv_rpc_server: one listening endpoint serving several RPC
 * programs, without rpcbind and without libtirpc's global server loop.
 *
 * Design (see ../shared/notes/tirpc.md §1–2, measured):
 *   - An acceptor thread polls {listener, wake pipe}; each accepted connection
 *     is wrapped with svc_fd_create() and served by a thread of its own, so a
 *     handler may block or call back into this server (nested calls) without
 *     stalling anyone else. A fixed pool could deadlock on nested calls.
 *   - A connection thread polls {fd, wake pipe} before each SVC_RECV (this also
 *     sidesteps libtirpc's 35 s read timeout on idle cached connections), checks
 *     credentials with _authenticate, looks the program up in this server's own
 *     table (per-instance dispatch), decodes into zeroed buffers, calls the
 *     handler, replies, frees.
 *   - Unreliable mode: per request, two independent draws from the server's
 *     PRNG: 10% dropped unread (the connection is closed), else 20% processed
 *     with the write side shut first (reply lost), as the labs' accept loop does.
 *   - Kill: set dead, write the wake pipe once (never drained: every poller
 *     wakes), shutdown() — never close() — every open connection, join the
 *     acceptor and every connection thread. Kill latency is bounded by the
 *     longest running handler.
 * Locking: `mu` guards the fields marked below; counters are atomics.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dkv_internal.h"

#include <rpc/svc_auth.h>

struct conn {
	dkv_rpc_server *srv;
	SVCXPRT *xprt;
	int fd;
	bool closed; /* guarded by srv->mu: fd no longer ours to shut down */
	bool finished; /* guarded by srv->mu: thread returned, may be joined */
	pthread_t tid;
	struct conn *next;
};

struct prog_entry {
	rpcprog_t prog;
	rpcvers_t vers;
	const dkv_rpc_proc *procs;
	size_t nprocs;
	void *inst;
	unsigned inflight; /* handlers of this program running now */
	bool active;
};

struct dkv_rpc_server {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* signalled when a program's inflight count drops */
	/* guarded by mu: */
	bool dead;
	struct conn *conns;
	struct prog_entry progs[DKV_RPC_MAX_PROGS];
	dkv_rng rng;
	/* immutable after listen: */
	int lfd;
	int wake[2];
	dkv_name_kind kind;
	char name[DKV_NAME_MAX];
	pthread_t acceptor;
	/* kill sequencing: */
	pthread_mutex_t kill_mu;
	bool killed; /* guarded by kill_mu */
	/* lock-free: */
	atomic_bool unreliable;
	atomic_ulong count;
};

/* ---------------------------------------------------------------- dispatch */

/* Aligned scratch for decoded arguments and results. */
typedef union {
	char b[DKV_RPC_MAX_STRUCT];
	long double ld;
	void *p;
	uint64_t u;
} scratch;

static const struct prog_entry *find_prog(dkv_rpc_server *s, rpcprog_t prog)
{
	for (int i = 0; i < DKV_RPC_MAX_PROGS; i++)
		if (s->progs[i].active && s->progs[i].prog == prog)
			return &s->progs[i];
	return NULL;
}

static void dispatch(dkv_rpc_server *s, SVCXPRT *x, struct rpc_msg *msg, struct svc_req *r)
{
	r->rq_xprt = x;
	r->rq_prog = msg->rm_call.cb_prog;
	r->rq_vers = msg->rm_call.cb_vers;
	r->rq_proc = msg->rm_call.cb_proc;
	r->rq_cred = msg->rm_call.cb_cred;
	enum auth_stat why = _authenticate(r, msg);
	if (why != AUTH_OK) {
		svcerr_auth(x, why);
		return;
	}

	pthread_mutex_lock(&s->mu);
	struct prog_entry *pe = (struct prog_entry *)find_prog(s, r->rq_prog);
	if (pe == NULL || s->dead) {
		pthread_mutex_unlock(&s->mu);
		svcerr_noprog(x);
		return;
	}
	if (pe->vers != r->rq_vers) {
		rpcvers_t v = pe->vers;
		pthread_mutex_unlock(&s->mu);
		svcerr_progvers(x, v, v);
		return;
	}
	pe->inflight++;
	const dkv_rpc_proc *procs = pe->procs;
	size_t nprocs = pe->nprocs;
	void *inst = pe->inst;
	pthread_mutex_unlock(&s->mu);

	if (r->rq_proc == NULLPROC) {
		svc_sendreply(x, (xdrproc_t)xdr_void, NULL);
	} else {
		const dkv_rpc_proc *p = NULL;
		for (size_t i = 0; i < nprocs; i++)
			if (procs[i].proc == r->rq_proc)
				p = &procs[i];
		if (p == NULL) {
			svcerr_noproc(x);
		} else {
			scratch args, res;
			memset(&args, 0, sizeof args);
			memset(&res, 0, sizeof res);
			if (!svc_getargs(x, p->xdr_args, args.b)) {
				svcerr_decode(x);
			} else {
				p->handler(inst, args.b, res.b);
				svc_sendreply(x, p->xdr_res, res.b);
				xdr_free(p->xdr_res, res.b);
			}
			/* Frees what was decoded, also after a partial decode. */
			svc_freeargs(x, p->xdr_args, args.b);
		}
	}

	pthread_mutex_lock(&s->mu);
	pe->inflight--;
	if (pe->inflight == 0)
		pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* Draw the unreliable-mode fate of one request: 0 serve, 1 drop unread, 2 drop reply. */
static int unreliable_fate(dkv_rpc_server *s)
{
	if (!atomic_load_explicit(&s->unreliable, memory_order_relaxed))
		return 0;
	pthread_mutex_lock(&s->mu);
	uint64_t r1 = dkv_rng_below(&s->rng, 1000);
	uint64_t r2 = dkv_rng_below(&s->rng, 1000);
	pthread_mutex_unlock(&s->mu);
	if (r1 < 100)
		return 1;
	if (r2 < 200)
		return 2;
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	dkv_rpc_server *s = c->srv;
	SVCXPRT *x = c->xprt;
	/* Credential scratch laid out as svc_getreq_common does (RQCRED_SIZE = 400). */
	char cred_area[2 * MAX_AUTH_BYTES + 400];

	for (;;) {
		if (SVC_STAT(x) != XPRT_MOREREQS) {
			struct pollfd pf[2] = { { .fd = c->fd, .events = POLLIN },
				                { .fd = s->wake[0], .events = POLLIN } };
			int n = poll(pf, 2, -1);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (pf[1].revents != 0)
				break;
			if ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
				break;
		}
		struct rpc_msg msg;
		struct svc_req r;
		memset(&msg, 0, sizeof msg);
		memset(&r, 0, sizeof r);
		msg.rm_call.cb_cred.oa_base = cred_area;
		msg.rm_call.cb_verf.oa_base = cred_area + MAX_AUTH_BYTES;
		r.rq_clntcred = cred_area + 2 * MAX_AUTH_BYTES;
		if (!SVC_RECV(x, &msg)) {
			if (SVC_STAT(x) == XPRT_DIED)
				break;
			continue; /* garbage record: skipped by the next SVC_RECV */
		}
		atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
		int fate = unreliable_fate(s);
		if (fate == 1)
			break; /* request lost: close without processing */
		if (fate == 2)
			shutdown(c->fd, SHUT_WR); /* processed, reply lost */
		dispatch(s, x, &msg, &r);
		if (fate == 2 || SVC_STAT(x) == XPRT_DIED)
			break;
	}

	pthread_mutex_lock(&s->mu);
	c->closed = true;
	pthread_mutex_unlock(&s->mu);
	SVC_DESTROY(x); /* closes fd */
	pthread_mutex_lock(&s->mu);
	c->finished = true;
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* Join and free finished connection threads. Called with mu held. */
static void reap_locked(dkv_rpc_server *s)
{
	struct conn **pp = &s->conns;
	while (*pp != NULL) {
		struct conn *c = *pp;
		if (c->finished) {
			*pp = c->next;
			pthread_join(c->tid, NULL);
			free(c);
		} else {
			pp = &c->next;
		}
	}
}

static void *acceptor_main(void *arg)
{
	dkv_rpc_server *s = arg;
	for (;;) {
		struct pollfd pf[2] = { { .fd = s->lfd, .events = POLLIN },
			                { .fd = s->wake[0], .events = POLLIN } };
		int n = poll(pf, 2, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			DKV_ERROR("%s: poll: %s", s->name, strerror(errno));
			break;
		}
		if (pf[1].revents != 0)
			break;
		if ((pf[0].revents & POLLIN) == 0)
			continue;
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
				continue;
			DKV_WARN("%s: accept: %s", s->name, strerror(errno));
			/* EMFILE and friends: back off instead of spinning. */
			struct pollfd w = { .fd = s->wake[0], .events = POLLIN };
			if (poll(&w, 1, 10) > 0)
				break;
			continue;
		}
		if (s->kind == DKV_NAME_TCP) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		struct conn *c = calloc(1, sizeof *c);
		SVCXPRT *x = c != NULL ? svc_fd_create(fd, 0, 0) : NULL;
		if (x == NULL) {
			DKV_WARN("%s: out of memory for a connection", s->name);
			free(c);
			close(fd);
			continue;
		}
		c->srv = s;
		c->xprt = x;
		c->fd = fd;
		pthread_mutex_lock(&s->mu);
		reap_locked(s);
		if (s->dead || pthread_create(&c->tid, NULL, conn_main, c) != 0) {
			pthread_mutex_unlock(&s->mu);
			SVC_DESTROY(x);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		pthread_mutex_unlock(&s->mu);
	}
	return NULL;
}

/* ---------------------------------------------------------------- listen */

static int listen_unix(dkv_rpc_server *s, const dkv_name *nm)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, nm->path);
	/* A stale socket file (a killed server's) is removed; anything else stays. */
	struct stat st;
	if (lstat(nm->path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(nm->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	snprintf(s->name, sizeof s->name, "%s", nm->path);
	return fd;
}

static int listen_tcp(dkv_rpc_server *s, const dkv_name *nm)
{
	struct addrinfo hints, *ai = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(nm->host, nm->port, &hints, &ai);
	if (rc != 0) {
		errno = EINVAL;
		return -1;
	}
	int fd = -1, err = EADDRNOTAVAIL;
	for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0)
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		errno = err;
		return -1;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char port[16] = "";
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, port, sizeof port, NI_NUMERICSERV);
	bool v6 = strchr(nm->host, ':') != NULL;
	snprintf(s->name, sizeof s->name, v6 ? "tcp:[%s]:%s" : "tcp:%s:%s", nm->host,
	         port[0] ? port : nm->port);
	return fd;
}

dkv_rpc_server *dkv_rpc_server_listen(const char *name)
{
	dkv_lib_init();
	dkv_name nm;
	if (dkv_name_parse(name, &nm) != DKV_OK) {
		errno = EINVAL;
		return NULL;
	}
	dkv_rpc_server *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	s->wake[0] = s->wake[1] = -1;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->kill_mu, NULL);
	dkv_cond_init(&s->cv);
	dkv_rng_seed(&s->rng, dkv_random_seed());
	s->kind = nm.kind;
	s->lfd = nm.kind == DKV_NAME_UNIX ? listen_unix(s, &nm) : listen_tcp(s, &nm);
	int err = errno;
	if (s->lfd < 0)
		goto fail;
	if (pipe2(s->wake, O_CLOEXEC) != 0) {
		err = errno;
		goto fail;
	}
	if ((err = pthread_create(&s->acceptor, NULL, acceptor_main, s)) != 0)
		goto fail;
	DKV_DEBUG("listening at %s", s->name);
	return s;
fail:
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->wake[0] >= 0) {
		close(s->wake[0]);
		close(s->wake[1]);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->kill_mu);
	pthread_cond_destroy(&s->cv);
	free(s);
	errno = err;
	return NULL;
}

/* ---------------------------------------------------------------- programs */

int dkv_rpc_server_add(dkv_rpc_server *s, rpcprog_t prog, rpcvers_t vers,
                       const dkv_rpc_proc *procs, size_t nprocs, void *inst)
{
	for (size_t i = 0; i < nprocs; i++)
		if (procs[i].args_size > DKV_RPC_MAX_STRUCT || procs[i].res_size > DKV_RPC_MAX_STRUCT)
			return DKV_ERR_INVAL;
	pthread_mutex_lock(&s->mu);
	int rc = DKV_ERR_INVAL;
	if (s->dead) {
		rc = DKV_ERR_KILLED;
	} else if (find_prog(s, prog) == NULL) {
		for (int i = 0; i < DKV_RPC_MAX_PROGS; i++) {
			struct prog_entry *pe = &s->progs[i];
			/* A removed slot may be reused once its last handler is done. */
			if (!pe->active && pe->inflight == 0) {
				*pe = (struct prog_entry){ .prog = prog, .vers = vers, .procs = procs,
					                   .nprocs = nprocs, .inst = inst, .active = true };
				rc = DKV_OK;
				break;
			}
		}
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void dkv_rpc_server_remove(dkv_rpc_server *s, rpcprog_t prog)
{
	pthread_mutex_lock(&s->mu);
	struct prog_entry *pe = (struct prog_entry *)find_prog(s, prog);
	if (pe != NULL) {
		pe->active = false;
		while (pe->inflight > 0)
			pthread_cond_wait(&s->cv, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
}

const char *dkv_rpc_server_name(const dkv_rpc_server *s)
{
	return s->name;
}

void dkv_rpc_server_set_unreliable(dkv_rpc_server *s, bool on)
{
	atomic_store(&s->unreliable, on);
}

bool dkv_rpc_server_is_unreliable(const dkv_rpc_server *s)
{
	return atomic_load(&((dkv_rpc_server *)s)->unreliable);
}

unsigned long dkv_rpc_server_count(const dkv_rpc_server *s)
{
	return atomic_load(&((dkv_rpc_server *)s)->count);
}

/* ---------------------------------------------------------------- kill, free */

void dkv_rpc_server_kill(dkv_rpc_server *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->kill_mu);
	if (s->killed) {
		pthread_mutex_unlock(&s->kill_mu);
		return;
	}
	pthread_mutex_lock(&s->mu);
	s->dead = true;
	/* One byte, never read: the pipe stays readable, so every poller wakes. */
	ssize_t w = write(s->wake[1], "x", 1);
	(void)w;
	for (struct conn *c = s->conns; c != NULL; c = c->next)
		if (!c->closed)
			shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&s->mu);

	pthread_join(s->acceptor, NULL);
	close(s->lfd);
	s->lfd = -1;

	pthread_mutex_lock(&s->mu);
	while (s->conns != NULL) {
		struct conn *c = s->conns;
		s->conns = c->next;
		pthread_mutex_unlock(&s->mu);
		pthread_join(c->tid, NULL);
		free(c);
		pthread_mutex_lock(&s->mu);
	}
	for (int i = 0; i < DKV_RPC_MAX_PROGS; i++)
		s->progs[i].active = false;
	pthread_mutex_unlock(&s->mu);
	s->killed = true;
	pthread_mutex_unlock(&s->kill_mu);
	DKV_DEBUG("killed %s", s->name);
}

void dkv_rpc_server_free(dkv_rpc_server *s)
{
	if (s == NULL)
		return;
	dkv_rpc_server_kill(s);
	close(s->wake[0]);
	close(s->wake[1]);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->kill_mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}
