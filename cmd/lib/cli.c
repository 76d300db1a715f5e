/*
 * cmd/lib/cli.c — the helpers shared by the programs in cmd/ (see cli.h).
 *
 * The logger's level and program name are process-wide: each program has one
 * of each, set once in main before any thread starts (the level is read
 * atomically afterwards). Name checks mirror the library's own parser so that
 * a bad --listen or --peers is refused with a clear message before any server
 * starts, instead of a bare EINVAL from X_start.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- log */

static const char *log_prog = "dkv";
static _Atomic int log_level = CLI_LOG_INFO;

int cli_level_parse(const char *s)
{
	static const char *const names[] = { "debug", "info", "warn", "error", "off" };
	if (s == NULL)
		return -1;
	for (int i = 0; i < 5; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}

void cli_log_init(const char *prog, int level)
{
	log_prog = prog;
	atomic_store(&log_level, level);
}

void cli_log(int level, const char *fmt, ...)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	if (level < atomic_load(&log_level) || level >= CLI_LOG_OFF)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(stderr, "%02d:%02d:%02d.%03ld %s[%ld] %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
	        ts.tv_nsec / 1000000, log_prog, (long)getpid(), names[level], msg);
}

/* ---------------------------------------------------------------- parsing */

const char *cli_env(const char *name)
{
	const char *v = getenv(name);
	return v != NULL && *v != '\0' ? v : NULL;
}

bool cli_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	if (s == NULL || !((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
		return false;
	errno = 0;
	char *end = NULL;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = (int64_t)v;
	return true;
}

bool cli_parse_ms(const char *s, unsigned *out)
{
	if (s == NULL || *s < '0' || *s > '9')
		return false;
	errno = 0;
	char *end = NULL;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0)
		return false;
	unsigned long long mul;
	if (*end == '\0' || strcmp(end, "ms") == 0)
		mul = 1;
	else if (strcmp(end, "s") == 0)
		mul = 1000;
	else if (strcmp(end, "m") == 0)
		mul = 60000;
	else
		return false;
	if (v > UINT_MAX / mul)
		return false;
	*out = (unsigned)(v * mul);
	return true;
}

bool cli_name_check(const char *name, char *err, size_t errlen)
{
	if (name == NULL || *name == '\0') {
		snprintf(err, errlen, "empty endpoint name");
		return false;
	}
	if (strlen(name) >= DKV_NAME_MAX) {
		snprintf(err, errlen, "endpoint name longer than %d bytes", DKV_NAME_MAX - 1);
		return false;
	}
	if (strncmp(name, "tcp:", 4) == 0) {
		const char *hp = name + 4;
		const char *colon = strrchr(hp, ':');
		if (colon == NULL || colon == hp || colon[1] == '\0') {
			snprintf(err, errlen, "'%s': expected tcp:HOST:PORT", name);
			return false;
		}
		int64_t port;
		if (!cli_parse_i64(colon + 1, 0, 65535, &port)) {
			snprintf(err, errlen, "'%s': the port must be a number from 0 to 65535", name);
			return false;
		}
		return true;
	}
	const char *path = strncmp(name, "unix:", 5) == 0 ? name + 5 : name;
	if (*path == '\0' || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "'%s': a unix socket path must have 1 to %zu bytes", name,
		         sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return false;
	}
	return true;
}

static const char *strip_unix(const char *name)
{
	return strncmp(name, "unix:", 5) == 0 ? name + 5 : name;
}

void cli_list_destroy(cli_list *l)
{
	if (l == NULL)
		return;
	for (int i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int cli_list_find(const cli_list *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (strcmp(strip_unix(l->v[i]), strip_unix(name)) == 0)
			return i;
	return -1;
}

bool cli_list_parse(const char *s, cli_list *out, char *err, size_t errlen)
{
	out->n = 0;
	out->v = NULL;
	if (s == NULL || *s == '\0') {
		snprintf(err, errlen, "empty list");
		return false;
	}
	const char *p = s;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		if (len == 0) {
			snprintf(err, errlen, "'%s': empty item in the list", s);
			goto fail;
		}
		char *item = strndup(p, len);
		char **nv = item ? realloc(out->v, (size_t)(out->n + 1) * sizeof *nv) : NULL;
		if (nv == NULL) {
			free(item);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		out->v = nv;
		if (!cli_name_check(item, err, errlen)) {
			free(item);
			goto fail;
		}
		if (cli_list_find(out, item) >= 0) {
			snprintf(err, errlen, "'%s' appears twice in the list", item);
			free(item);
			goto fail;
		}
		out->v[out->n++] = item;
		if (comma == NULL)
			return true;
		p = comma + 1;
	}
fail:
	cli_list_destroy(out);
	return false;
}

/* ---------------------------------------------------------------- sockets */

bool cli_unix_in_use(const char *name)
{
	if (strncmp(name, "tcp:", 4) == 0)
		return false;
	const char *path = strip_unix(name);
	struct stat st;
	if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
		return false;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	bool live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return live;
}

/* ---------------------------------------------------------------- processes */

bool cli_self_dir(const char *argv0, char *buf, size_t len)
{
	char tmp[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", tmp, sizeof tmp - 1);
	if (n > 0) {
		tmp[n] = '\0';
	} else if (argv0 == NULL || strchr(argv0, '/') == NULL || realpath(argv0, tmp) == NULL) {
		return false;
	}
	char *slash = strrchr(tmp, '/');
	if (slash == NULL)
		return false;
	*slash = '\0';
	if ((size_t)snprintf(buf, len, "%s", tmp[0] ? tmp : "/") >= len)
		return false;
	return true;
}

/* ---------------------------------------------------------------- time */

uint64_t cli_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t cli_now_ms(void)
{
	return cli_now_us() / 1000u;
}

void cli_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ---------------------------------------------------------------- json */

void cli_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

void cli_usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	exit(CLI_EXIT_USAGE);
}
