/*
 * tests/lib/harness.c — the shared test harness (see harness.h).
 *
 * Files: every path the harness hands out (ports, pair links, proxy sockets)
 * is recorded in a table and removed by th_cleanup(), which runs after each
 * suite and at exit, so a failing test leaves nothing in /var/tmp.
 * Randomness: one suite PRNG seeded from DKV_TEST_SEED (or the clock), guarded
 * by a mutex; the seed is printed at start so any run can be replayed.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ cleanup table */

static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;
static char **files;
static size_t nfiles, capfiles;

static void remember(const char *path)
{
	pthread_mutex_lock(&files_mu);
	for (size_t i = 0; i < nfiles; i++)
		if (strcmp(files[i], path) == 0) {
			pthread_mutex_unlock(&files_mu);
			return;
		}
	if (nfiles == capfiles) {
		capfiles = capfiles ? capfiles * 2 : 64;
		files = realloc(files, capfiles * sizeof *files);
	}
	files[nfiles++] = strdup(path);
	pthread_mutex_unlock(&files_mu);
}

void th_unlink(const char *path)
{
	if (unlink(path) != 0 && errno != ENOENT)
		fprintf(stderr, "harness: unlink %s: %s\n", path, strerror(errno));
}

void th_cleanup(void)
{
	pthread_mutex_lock(&files_mu);
	for (size_t i = 0; i < nfiles; i++) {
		unlink(files[i]);
		free(files[i]);
	}
	free(files);
	files = NULL;
	nfiles = capfiles = 0;
	pthread_mutex_unlock(&files_mu);
}

/* ------------------------------------------------------------ time */

uint64_t th_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void th_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ------------------------------------------------------------ randomness */

static pthread_mutex_t rng_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_state;
static bool seeded;
static uint64_t the_seed;

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void seed_locked(void)
{
	if (seeded)
		return;
	const char *e = getenv("DKV_TEST_SEED");
	if (e != NULL && *e != '\0') {
		the_seed = strtoull(e, NULL, 0);
	} else {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		the_seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
	}
	rng_state = the_seed;
	seeded = true;
	fprintf(stderr, "harness: DKV_TEST_SEED=%llu\n", (unsigned long long)the_seed);
}

uint64_t th_seed(void)
{
	pthread_mutex_lock(&rng_mu);
	seed_locked();
	uint64_t s = the_seed;
	pthread_mutex_unlock(&rng_mu);
	return s;
}

uint64_t th_rand(void)
{
	pthread_mutex_lock(&rng_mu);
	seed_locked();
	uint64_t r = splitmix(&rng_state);
	pthread_mutex_unlock(&rng_mu);
	return r;
}

void th_randstr(char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)('a' + th_rand() % 26);
	buf[n] = '\0';
}

/* ------------------------------------------------------------ suites */

bool th_under_valgrind(void)
{
	const char *e = getenv("DKV_UNDER_VALGRIND");
	return e != NULL && *e != '\0' && strcmp(e, "0") != 0;
}

static void cleanup_at_exit(void)
{
	th_cleanup();
}

/* ------------------------------------------------------------ background failures */

static pthread_t test_thread;
static bool test_thread_set;
static pthread_mutex_t bg_mu = PTHREAD_MUTEX_INITIALIZER;
static char bg_msg[1024]; /* guarded by bg_mu: the first failure, "" if none */
static unsigned bg_count; /* guarded by bg_mu: failures since the last check */

bool th_on_test_thread(void)
{
	return !test_thread_set || pthread_equal(pthread_self(), test_thread);
}

void th_bg_fail(const char *fmt, ...)
{
	char msg[sizeof bg_msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&bg_mu);
	if (bg_count++ == 0)
		memcpy(bg_msg, msg, sizeof bg_msg);
	pthread_mutex_unlock(&bg_mu);
	fprintf(stderr, "harness: background thread failure: %s\n", msg);
}

/* take_bg_failure: the first failure since the last call (and how many), cleared. */
static unsigned take_bg_failure(char *msg, size_t len)
{
	pthread_mutex_lock(&bg_mu);
	unsigned n = bg_count;
	if (len > 0) {
		size_t l = strnlen(bg_msg, len - 1);
		memcpy(msg, bg_msg, l);
		msg[l] = '\0';
	}
	bg_count = 0;
	bg_msg[0] = '\0';
	pthread_mutex_unlock(&bg_mu);
	return n;
}

void th_assert_no_bg_failure(void)
{
	char msg[sizeof bg_msg];
	unsigned n = take_bg_failure(msg, sizeof msg);
	if (n > 0)
		fail_msg("%u background failure%s; the first: %s", n, n == 1 ? "" : "s", msg);
}

/* ------------------------------------------------------------ environment */

/* A variable a test changed, and what it was before (the first change wins). */
typedef struct {
	char *name;
	char *old; /* NULL: it was unset */
} saved_env;

static saved_env *envs;
static size_t nenvs, capenvs;

static void save_env(const char *name)
{
	for (size_t i = 0; i < nenvs; i++)
		if (strcmp(envs[i].name, name) == 0)
			return;
	if (nenvs == capenvs) {
		capenvs = capenvs ? capenvs * 2 : 8;
		envs = realloc(envs, capenvs * sizeof *envs);
		assert_non_null(envs);
	}
	const char *v = getenv(name);
	envs[nenvs].name = strdup(name);
	envs[nenvs].old = v != NULL ? strdup(v) : NULL;
	nenvs++;
}

void th_setenv(const char *name, const char *value)
{
	save_env(name);
	assert_int_equal(setenv(name, value, 1), 0);
}

void th_unsetenv(const char *name)
{
	save_env(name);
	unsetenv(name);
}

static void restore_env(void)
{
	for (size_t i = nenvs; i-- > 0;) {
		if (envs[i].old != NULL)
			setenv(envs[i].name, envs[i].old, 1);
		else
			unsetenv(envs[i].name);
		free(envs[i].name);
		free(envs[i].old);
	}
	free(envs);
	envs = NULL;
	nenvs = capenvs = 0;
}

/* ------------------------------------------------------------ the per-test wrapper */

/* Each test runs with the harness's setup and teardown around its own. */
typedef struct {
	const struct CMUnitTest *orig;
} wrapped;

static const wrapped *current;

static int wrap_setup(void **state)
{
	current = *state;
	*state = current->orig->initial_state;
	take_bg_failure((char[1]){ 0 }, 1); /* a late report from an earlier test is not ours */
	return current->orig->setup_func ? current->orig->setup_func(state) : 0;
}

static int wrap_teardown(void **state)
{
	int rc = current->orig->teardown_func ? current->orig->teardown_func(state) : 0;
	restore_env();
	char msg[sizeof bg_msg];
	unsigned n = take_bg_failure(msg, sizeof msg);
	if (n > 0) {
		fprintf(stderr, "%s: %u background failure%s; the first: %s\n", current->orig->name, n,
		        n == 1 ? "" : "s", msg);
		rc = -1;
	}
	return rc;
}

int th_run_group_impl(const char *name, const struct CMUnitTest *tests, size_t n)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(cleanup_at_exit);
	test_thread = pthread_self();
	test_thread_set = true;
	char pattern[256];
	const char *f = getenv("DKV_TEST_FILTER");
	if (f != NULL && *f != '\0') {
		snprintf(pattern, sizeof pattern, "*%s*", f);
		cmocka_set_test_filter(pattern);
	}
	th_seed();
	struct CMUnitTest *w = calloc(n ? n : 1, sizeof *w);
	wrapped *ws = calloc(n ? n : 1, sizeof *ws);
	if (w == NULL || ws == NULL) {
		fprintf(stderr, "harness: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		ws[i].orig = &tests[i];
		w[i] = tests[i];
		w[i].setup_func = wrap_setup;
		w[i].teardown_func = wrap_teardown;
		w[i].initial_state = &ws[i];
	}
	int rc = _cmocka_run_group_tests(name, w, n, NULL, NULL);
	free(w);
	free(ws);
	th_cleanup();
	if (rc != 0)
		fprintf(stderr, "harness: %s failed; replay with DKV_TEST_SEED=%llu\n", name,
		        (unsigned long long)th_seed());
	return rc;
}

/* ------------------------------------------------------------ names */

static char the_dir[128];

static void make_dir(void)
{
	snprintf(the_dir, sizeof the_dir, "/var/tmp/dkv-%u", (unsigned)getuid());
	mode_t old = umask(0);
	if (mkdir(the_dir, 0777) != 0 && errno != EEXIST)
		fprintf(stderr, "harness: mkdir %s: %s\n", the_dir, strerror(errno));
	umask(old);
}

const char *th_dir(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, make_dir);
	return the_dir;
}

char *th_port(char *buf, const char *prefix, const char *tag, int i)
{
	snprintf(buf, DKV_NAME_MAX, "%s/%s-%d-%s-%d", th_dir(), prefix, (int)getpid(), tag, i);
	remember(buf);
	return buf;
}

char *th_pair_name(char *buf, const char *prefix, const char *tag, int i, int j)
{
	snprintf(buf, DKV_NAME_MAX, "%s/%s-%s-%d-%d-%d", th_dir(), prefix, tag, (int)getpid(), i, j);
	remember(buf);
	return buf;
}

th_names *th_names_new(const char *prefix, const char *tag, int n)
{
	th_names *nm = calloc(1, sizeof *nm);
	assert_non_null(nm);
	nm->n = n;
	snprintf(nm->prefix, sizeof nm->prefix, "%s", prefix);
	snprintf(nm->tag, sizeof nm->tag, "%s", tag);
	nm->ports = calloc((size_t)n, sizeof *nm->ports);
	nm->pairs = calloc((size_t)n * (size_t)n, sizeof *nm->pairs);
	nm->peer_lists = calloc((size_t)n * (size_t)n, sizeof *nm->peer_lists);
	assert_true(nm->ports && nm->pairs && nm->peer_lists);
	for (int i = 0; i < n; i++)
		th_port(nm->ports[i], prefix, tag, i);
	for (int i = 0; i < n; i++)
		for (int j = 0; j < n; j++) {
			th_pair_name(nm->pairs[i * n + j], prefix, tag, i, j);
			nm->peer_lists[i * n + j] = i == j ? nm->ports[j] : nm->pairs[i * n + j];
		}
	return nm;
}

void th_names_free(th_names *nm)
{
	if (nm == NULL)
		return;
	th_cleanpp(nm);
	for (int i = 0; i < nm->n; i++)
		th_unlink(nm->ports[i]);
	free(nm->ports);
	free(nm->pairs);
	free(nm->peer_lists);
	free(nm);
}

const char *const *th_peers(th_names *nm, int i)
{
	return &nm->peer_lists[i * nm->n];
}

void th_cleanpp(th_names *nm)
{
	for (int k = 0; k < nm->n * nm->n; k++)
		th_unlink(nm->pairs[k]);
}

void th_links(th_names *nm, const bool *reach)
{
	th_cleanpp(nm);
	for (int i = 0; i < nm->n; i++)
		for (int j = 0; j < nm->n; j++) {
			if (i != j && !reach[i * nm->n + j])
				continue;
			const char *pair = nm->pairs[i * nm->n + j];
			if (link(nm->ports[j], pair) == 0)
				continue;
			if (th_on_test_thread())
				fail_msg("partition: link %s -> %s: %s", pair, nm->ports[j], strerror(errno));
			th_bg_fail("partition: link %s -> %s: %s", pair, nm->ports[j], strerror(errno));
		}
}

void th_partition(th_names *nm, const int *group_of)
{
	bool *reach = calloc((size_t)nm->n * (size_t)nm->n, sizeof *reach);
	assert_non_null(reach);
	for (int i = 0; i < nm->n; i++)
		for (int j = 0; j < nm->n; j++)
			reach[i * nm->n + j] = group_of[i] >= 0 && group_of[i] == group_of[j];
	th_links(nm, reach);
	free(reach);
}

void th_bridge(th_names *nm, const int *side_of, int bridge)
{
	bool *reach = calloc((size_t)nm->n * (size_t)nm->n, sizeof *reach);
	assert_non_null(reach);
	for (int i = 0; i < nm->n; i++)
		for (int j = 0; j < nm->n; j++)
			reach[i * nm->n + j] = i == bridge || j == bridge || side_of[i] == side_of[j];
	th_links(nm, reach);
	free(reach);
}

void th_part3(th_names *nm, const int *p1, const int *p2, const int *p3)
{
	int *g = malloc((size_t)nm->n * sizeof *g);
	assert_non_null(g);
	for (int i = 0; i < nm->n; i++)
		g[i] = -1;
	const int *ps[3] = { p1, p2, p3 };
	for (int k = 0; k < 3; k++)
		for (const int *p = ps[k]; p != NULL && *p >= 0; p++) {
			assert_true(*p < nm->n);
			g[*p] = k;
		}
	th_partition(nm, g);
	free(g);
}

void th_deafen(th_names *nm, int i)
{
	th_unlink(nm->ports[i]);
}

/* ------------------------------------------------------------ delay proxy */

struct th_proxy {
	char path[DKV_NAME_MAX];
	char real[DKV_NAME_MAX + 2];
	int lfd;
	int wake[2];
	pthread_t acceptor;
	pthread_mutex_t mu;
	unsigned delay_ms; /* guarded by mu */
	unsigned nthreads; /* guarded by mu: relay threads alive */
	pthread_cond_t cv;
};

struct relay {
	th_proxy *px;
	int cfd;
};

static int unix_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	if (n >= sizeof sa.sun_path) {
		close(fd);
		return -1;
	}
	memcpy(sa.sun_path, path, n + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sleep the delay (waking early only when the proxy stops), then relay. */
static void *relay_main(void *arg)
{
	struct relay *r = arg;
	th_proxy *px = r->px;
	pthread_mutex_lock(&px->mu);
	unsigned delay = px->delay_ms;
	pthread_mutex_unlock(&px->mu);
	struct pollfd w = { .fd = px->wake[0], .events = POLLIN };
	int sfd = -1;
	if (poll(&w, 1, (int)delay) == 0)
		sfd = unix_connect(px->real);
	if (sfd >= 0) {
		char buf[65536];
		for (;;) {
			struct pollfd pf[3] = { { .fd = r->cfd, .events = POLLIN },
				                { .fd = sfd, .events = POLLIN },
				                { .fd = px->wake[0], .events = POLLIN } };
			if (poll(pf, 3, -1) < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (pf[2].revents)
				break;
			int from = pf[0].revents ? r->cfd : sfd, to = from == r->cfd ? sfd : r->cfd;
			ssize_t n = read(from, buf, sizeof buf);
			if (n <= 0)
				break;
			ssize_t off = 0;
			while (off < n) {
				ssize_t m = write(to, buf + off, (size_t)(n - off));
				if (m <= 0)
					goto done;
				off += m;
			}
		}
	}
done:
	if (sfd >= 0)
		close(sfd);
	close(r->cfd);
	free(r);
	pthread_mutex_lock(&px->mu);
	px->nthreads--;
	pthread_cond_broadcast(&px->cv);
	pthread_mutex_unlock(&px->mu);
	return NULL;
}

static void *proxy_acceptor(void *arg)
{
	th_proxy *px = arg;
	for (;;) {
		struct pollfd pf[2] = { { .fd = px->lfd, .events = POLLIN },
			                { .fd = px->wake[0], .events = POLLIN } };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents)
			break;
		int cfd = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		struct relay *r = malloc(sizeof *r);
		r->px = px;
		r->cfd = cfd;
		pthread_t t;
		pthread_mutex_lock(&px->mu);
		px->nthreads++;
		pthread_mutex_unlock(&px->mu);
		if (pthread_create(&t, NULL, relay_main, r) != 0) {
			close(cfd);
			free(r);
			pthread_mutex_lock(&px->mu);
			px->nthreads--;
			pthread_mutex_unlock(&px->mu);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

th_proxy *th_proxy_start(const char *path)
{
	th_proxy *px = calloc(1, sizeof *px);
	assert_non_null(px);
	snprintf(px->path, sizeof px->path, "%s", path);
	snprintf(px->real, sizeof px->real, "%sx", path);
	remember(px->real);
	if (rename(px->path, px->real) != 0)
		fail_msg("proxy: rename %s: %s", path, strerror(errno));
	px->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (px->lfd < 0 || bind(px->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(px->lfd, 128) != 0)
		fail_msg("proxy: listen %s: %s", path, strerror(errno));
	assert_int_equal(pipe2(px->wake, O_CLOEXEC), 0);
	pthread_mutex_init(&px->mu, NULL);
	pthread_cond_init(&px->cv, NULL);
	assert_int_equal(pthread_create(&px->acceptor, NULL, proxy_acceptor, px), 0);
	return px;
}

void th_proxy_set_delay(th_proxy *px, unsigned ms)
{
	pthread_mutex_lock(&px->mu);
	px->delay_ms = ms;
	pthread_mutex_unlock(&px->mu);
}

void th_proxy_stop(th_proxy *px)
{
	if (px == NULL)
		return;
	ssize_t w = write(px->wake[1], "x", 1);
	(void)w;
	pthread_join(px->acceptor, NULL);
	pthread_mutex_lock(&px->mu);
	while (px->nthreads > 0)
		pthread_cond_wait(&px->cv, &px->mu);
	pthread_mutex_unlock(&px->mu);
	close(px->lfd);
	close(px->wake[0]);
	close(px->wake[1]);
	th_unlink(px->path);
	th_unlink(px->real);
	pthread_mutex_destroy(&px->mu);
	pthread_cond_destroy(&px->cv);
	free(px);
}

/* ------------------------------------------------------------ checks */

void th_check_appends(const char *v, const int *counts, int nclients)
{
	for (int i = 0; i < nclients; i++) {
		const char *last = NULL;
		for (int j = 0; j < counts[i]; j++) {
			char wanted[64];
			snprintf(wanted, sizeof wanted, "x %d %d y", i, j);
			const char *off = strstr(v, wanted);
			if (off == NULL)
				fail_msg("check_appends: missing element \"%s\" in Append result", wanted);
			if (strstr(off + 1, wanted) != NULL)
				fail_msg("check_appends: duplicate element \"%s\" in Append result", wanted);
			if (last != NULL && off <= last)
				fail_msg("check_appends: wrong order for element \"%s\"", wanted);
			last = off;
		}
	}
}

size_t th_live_heap(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

int th_thread_count(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	char line[256];
	int n = -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}
