/*
 * src/util.c — the small shared pieces of libdkvrpc: one-time library set-up
 * (SIGPIPE, log level), the error table, monotonic time and condition
 * variables, the per-object PRNG, the logger and the allocation wrappers.
 *
 * Nothing here keeps mutable global state except what must be process-wide:
 * the log level (set once from DKV_LOG, readable from every thread) and the
 * test-only allocation-failure countdown (atomic). Randomness lives in each
 * object (dkv_rng); dkv_random_seed() only draws fresh seeds from the kernel.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dkv_internal.h"

/* ---------------------------------------------------------------- errors */

#define DKV_ERR_MSG_ENTRY(code, msg) [code] = msg,
static const char *const err_messages[] = { DKV_ERR_TABLE(DKV_ERR_MSG_ENTRY) };
#undef DKV_ERR_MSG_ENTRY

const char *dkv_strerror(int err)
{
	if (err < 0 || err >= DKV_ERR__COUNT || err_messages[err] == NULL)
		return "unknown dkv error";
	return err_messages[err];
}

const char *dkv_version_string(void)
{
	return DKV_VERSION_STRING;
}

/* ---------------------------------------------------------------- log */

static _Atomic int log_level = DKV_LOG_WARN;

void dkv_log_set_level(int level)
{
	atomic_store(&log_level, level);
}

int dkv_log_get_level(void)
{
	return atomic_load_explicit(&log_level, memory_order_relaxed);
}

void dkv_log_write(int level, const char *file, int line, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	const char *base = strrchr(file, '/');
	/* One fprintf per line: stdio locks the stream, so lines never interleave. */
	fprintf(stderr, "%02d:%02d:%02d.%03ld dkv %s %s:%d: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
	        ts.tv_nsec / 1000000, names[level < 0 ? 0 : level > 3 ? 3 : level],
	        base ? base + 1 : file, line, msg);
}

static int parse_level(const char *s)
{
	static const char *const names[] = { "debug", "info", "warn", "error", "off" };
	for (int i = 0; i < 5; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* ---------------------------------------------------------------- init */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void lib_init_once(void)
{
	/* libtirpc writes with plain write(): a peer that vanished would kill the
	 * process with SIGPIPE. Keep a handler the program installed itself. */
	struct sigaction sa;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = SIG_IGN;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGPIPE, &sa, NULL);
	}
	/* libtirpc's authnone_create() reads its singleton before taking its lock,
	 * so the first concurrent dials each allocate one and all but one leak
	 * (LeakSanitizer: "authnone_create"). Create it once here, before any. */
	(void)authnone_create();
	const char *lv = getenv("DKV_LOG");
	if (lv != NULL && *lv != '\0') {
		int l = parse_level(lv);
		if (l >= 0)
			dkv_log_set_level(l);
		else
			fprintf(stderr, "dkv: DKV_LOG=%s: unknown level (debug|info|warn|error|off)\n", lv);
	}
}

void dkv_lib_init(void)
{
	pthread_once(&init_once, lib_init_once);
}

/* ---------------------------------------------------------------- time */

uint64_t dkv_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t dkv_now_ms(void)
{
	return dkv_now_us() / 1000u;
}

void dkv_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int dkv_cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	int rc = pthread_condattr_init(&a);
	if (rc != 0)
		return rc;
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	rc = pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
	return rc;
}

bool dkv_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline_ms)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ms / 1000u),
		               .tv_nsec = (long)(deadline_ms % 1000u) * 1000000L };
	return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

bool dkv_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000u);
	ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return pthread_cond_timedwait(cv, mu, &ts) != ETIMEDOUT;
}

/* ---------------------------------------------------------------- randomness */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void dkv_rng_seed(dkv_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna). */
uint64_t dkv_rng_next(dkv_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t dkv_rng_below(dkv_rng *r, uint64_t n)
{
	/* Rejection sampling: no modulo bias. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = dkv_rng_next(r);
	while (x >= limit);
	return x % n;
}

uint64_t dkv_random_seed(void)
{
	uint64_t v;
	if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
		return v;
	static _Atomic uint64_t counter;
	uint64_t c = atomic_fetch_add(&counter, 1) + dkv_now_us() + (uint64_t)getpid();
	return splitmix64(&c);
}

/* ---------------------------------------------------------------- memory */

/* Test hook: fail the Nth allocation from now (0 = off). Process-wide on
 * purpose: it models the allocator, which is process-wide too. */
static _Atomic unsigned long alloc_countdown;

void dkv_alloc_fail_after(unsigned long n)
{
	atomic_store(&alloc_countdown, n);
}

static bool alloc_should_fail(void)
{
	unsigned long c = atomic_load_explicit(&alloc_countdown, memory_order_relaxed);
	while (c != 0) {
		if (atomic_compare_exchange_weak(&alloc_countdown, &c, c - 1))
			return c == 1;
	}
	return false;
}

void *dkv_malloc(size_t n)
{
	if (alloc_should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return malloc(n == 0 ? 1 : n);
}

void *dkv_calloc(size_t nmemb, size_t size)
{
	if (alloc_should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return calloc(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);
}

void *dkv_realloc(void *p, size_t n)
{
	if (alloc_should_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n == 0 ? 1 : n);
}

char *dkv_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = dkv_malloc(n);
	if (d != NULL)
		memcpy(d, s, n);
	return d;
}

void *dkv_memdup(const void *p, size_t n)
{
	void *d = dkv_malloc(n);
	if (d != NULL && n > 0)
		memcpy(d, p, n);
	return d;
}

/* ---------------------------------------------------------------- names */

int dkv_name_parse(const char *name, dkv_name *out)
{
	memset(out, 0, sizeof *out);
	if (name == NULL || *name == '\0' || strlen(name) >= DKV_NAME_MAX)
		return DKV_ERR_INVAL;
	if (strncmp(name, "tcp:", 4) == 0) {
		const char *hp = name + 4;
		const char *colon = strrchr(hp, ':');
		if (colon == NULL || colon == hp || colon[1] == '\0')
			return DKV_ERR_INVAL;
		size_t hl = (size_t)(colon - hp);
		const char *port = colon + 1;
		if (strlen(port) >= sizeof out->port)
			return DKV_ERR_INVAL;
		for (const char *c = port; *c; c++)
			if (*c < '0' || *c > '9')
				return DKV_ERR_INVAL;
		if (atol(port) > 65535)
			return DKV_ERR_INVAL;
		/* [v6addr] form */
		if (hp[0] == '[' && hl >= 2 && hp[hl - 1] == ']') {
			hp++;
			hl -= 2;
		}
		memcpy(out->host, hp, hl);
		out->host[hl] = '\0';
		strcpy(out->port, port);
		out->kind = DKV_NAME_TCP;
		return DKV_OK;
	}
	const char *path = strncmp(name, "unix:", 5) == 0 ? name + 5 : name;
	if (*path == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return DKV_ERR_INVAL;
	strcpy(out->path, path);
	out->kind = DKV_NAME_UNIX;
	return DKV_OK;
}

bool dkv_opts_plain(const dkv_server_opts *opts)
{
	return opts == NULL || ((opts->dir == NULL || opts->dir[0] == '\0') && !opts->restart);
}

/* ---------------------------------------------------------------- XDR */

int dkv_xdr_encode(xdrproc_t proc, const void *v, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	unsigned long n = xdr_sizeof(proc, (void *)v);
	if (n == 0)
		return DKV_ERR_INVAL;
	if (n > DKV_STATE_MAX) {
		DKV_ERROR("refusing to encode %lu bytes (more than DKV_STATE_MAX, %u: no .x field "
		          "carries that much)", n, (unsigned)DKV_STATE_MAX);
		return DKV_ERR_INVAL;
	}
	char *b = dkv_malloc(n);
	if (b == NULL)
		return DKV_ERR_NOMEM;
	XDR x;
	xdrmem_create(&x, b, (u_int)n, XDR_ENCODE);
	bool ok = proc(&x, (void *)v);
	xdr_destroy(&x);
	if (!ok) {
		free(b);
		return DKV_ERR_INVAL;
	}
	*buf = b;
	*len = n;
	return DKV_OK;
}
