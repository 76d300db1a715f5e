/*
 * tests/lib/history.c — the operation recorder (see history.h).
 *
 * Design: operations live in fixed-size chunks of CHUNK ops, so an op never
 * moves once recorded and th_history_op can hand out stable pointers; only the
 * small array of chunk pointers grows (doubling). One mutex guards the chunk
 * array, the count and every op's status/result/return fields. The expensive
 * part of recording — copying key, argument and result strings — happens
 * before the lock is taken, so the critical section is a few stores: recording
 * costs O(len of the strings) plus an uncontended-lock round trip.
 *
 * Time: invoke takes the clock before it publishes the op (so the recorded
 * invoke is no later than the real call); return takes it on entry (no earlier
 * than the real return). Widening an interval is always safe for the checker.
 */
#include "history.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 1024

struct th_history {
	pthread_mutex_t mu; /* guards every field below and the mutable op fields */
	th_op **chunks;     /* chunks[i] holds ops i*CHUNK … i*CHUNK+CHUNK-1 */
	size_t nchunks, capchunks;
	size_t n;           /* ops recorded */
};

int64_t th_history_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

th_history *th_history_new(void)
{
	th_history *h = calloc(1, sizeof *h);
	if (h == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&h->mu, NULL);
	return h;
}

static th_op *op_at(const th_history *h, size_t id)
{
	return &h->chunks[id / CHUNK][id % CHUNK];
}

void th_history_free(th_history *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->n; i++) {
		th_op *o = op_at(h, i);
		free(o->key);
		free(o->arg);
		free(o->result);
	}
	for (size_t c = 0; c < h->nchunks; c++)
		free(h->chunks[c]);
	free(h->chunks);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

/* Reserve the next slot; called with mu held. NULL when out of memory. */
static th_op *slot_locked(th_history *h)
{
	if (h->n == h->nchunks * CHUNK) {
		if (h->nchunks == h->capchunks) {
			size_t cap = h->capchunks ? h->capchunks * 2 : 16;
			th_op **nc = realloc(h->chunks, cap * sizeof *nc);
			if (nc == NULL)
				return NULL;
			h->chunks = nc;
			h->capchunks = cap;
		}
		th_op *c = calloc(CHUNK, sizeof *c);
		if (c == NULL)
			return NULL;
		h->chunks[h->nchunks++] = c;
	}
	th_op *o = op_at(h, h->n);
	o->id = (int)h->n;
	h->n++;
	return o;
}

static int record(th_history *h, int client, th_op_kind kind, const char *key, const char *arg,
                  const char *result, th_op_status status, int64_t inv, int64_t ret)
{
	char *k = strdup(key ? key : "");
	char *a = kind == TH_OP_GET ? NULL : strdup(arg ? arg : "");
	char *r = kind == TH_OP_GET && status == TH_OP_OK ? strdup(result ? result : "") : NULL;
	if (k == NULL || (kind != TH_OP_GET && a == NULL) ||
	    (kind == TH_OP_GET && status == TH_OP_OK && r == NULL))
		goto nomem;
	pthread_mutex_lock(&h->mu);
	th_op *o = slot_locked(h);
	if (o == NULL) {
		pthread_mutex_unlock(&h->mu);
		goto nomem;
	}
	o->client = client;
	o->kind = kind;
	o->status = status;
	o->key = k;
	o->arg = a;
	o->result = r;
	o->invoke_us = inv < 0 ? th_history_now_us() : inv;
	o->return_us = ret;
	int id = o->id;
	pthread_mutex_unlock(&h->mu);
	return id;
nomem:
	free(k);
	free(a);
	free(r);
	errno = ENOMEM;
	return -1;
}

int th_history_invoke(th_history *h, int client, th_op_kind kind, const char *key,
                      const char *arg)
{
	/* The invoke time is read inside record() under the lock, before the
	 * caller can start the operation: never later than the real invoke. */
	return record(h, client, kind, key, arg, NULL, TH_OP_PENDING, -1, TH_HISTORY_OPEN);
}

int th_history_add(th_history *h, int client, th_op_kind kind, const char *key,
                   const char *arg, const char *result, th_op_status status,
                   int64_t invoke_us, int64_t return_us)
{
	if (invoke_us < 0)
		invoke_us = 0;
	if (status == TH_OP_UNKNOWN || status == TH_OP_PENDING)
		return_us = TH_HISTORY_OPEN;
	else if (return_us < invoke_us)
		return_us = invoke_us;
	return record(h, client, kind, key, arg, result, status, invoke_us, return_us);
}

static void finish(th_history *h, int id, th_op_status status, const char *result)
{
	int64_t now = th_history_now_us();
	char *r = NULL;
	if (status == TH_OP_OK && result != NULL)
		r = strdup(result);
	pthread_mutex_lock(&h->mu);
	if (id < 0 || (size_t)id >= h->n) {
		pthread_mutex_unlock(&h->mu);
		free(r);
		return;
	}
	th_op *o = op_at(h, (size_t)id);
	if (o->status != TH_OP_PENDING) { /* finished twice: keep the first outcome */
		pthread_mutex_unlock(&h->mu);
		free(r);
		return;
	}
	o->status = status;
	if (status == TH_OP_UNKNOWN) {
		o->return_us = TH_HISTORY_OPEN;
	} else {
		o->return_us = now < o->invoke_us ? o->invoke_us : now;
	}
	if (o->kind == TH_OP_GET && status == TH_OP_OK) {
		if (r == NULL)
			r = strdup("");
		if (r == NULL) /* cannot record what it read: drop the Get */
			o->status = TH_OP_UNKNOWN, o->return_us = TH_HISTORY_OPEN;
		o->result = r;
		r = NULL;
	}
	pthread_mutex_unlock(&h->mu);
	free(r);
}

void th_history_return(th_history *h, int id, const char *result)
{
	finish(h, id, TH_OP_OK, result);
}

void th_history_unknown(th_history *h, int id)
{
	finish(h, id, TH_OP_UNKNOWN, NULL);
}

void th_history_fail(th_history *h, int id)
{
	finish(h, id, TH_OP_FAILED, NULL);
}

size_t th_history_size(const th_history *h)
{
	return h->n;
}

const th_op *th_history_op(const th_history *h, int id)
{
	if (id < 0 || (size_t)id >= h->n)
		return NULL;
	return op_at(h, (size_t)id);
}

void th_history_counts(const th_history *h, size_t *ok, size_t *unknown, size_t *failed)
{
	size_t c[4] = { 0, 0, 0, 0 };
	for (size_t i = 0; i < h->n; i++)
		c[op_at(h, i)->status]++;
	if (ok)
		*ok = c[TH_OP_OK];
	if (unknown)
		*unknown = c[TH_OP_UNKNOWN] + c[TH_OP_PENDING];
	if (failed)
		*failed = c[TH_OP_FAILED];
}

const char *th_op_kind_name(th_op_kind kind)
{
	switch (kind) {
	case TH_OP_GET: return "Get";
	case TH_OP_PUT: return "Put";
	case TH_OP_APPEND: return "Append";
	}
	return "?";
}

static const char *status_name(th_op_status s)
{
	switch (s) {
	case TH_OP_PENDING: return "pending";
	case TH_OP_OK: return "ok";
	case TH_OP_UNKNOWN: return "unknown";
	case TH_OP_FAILED: return "failed";
	}
	return "?";
}

void th_history_dump(const th_history *h, FILE *out)
{
	int64_t t0 = h->n ? op_at(h, 0)->invoke_us : 0;
	for (size_t i = 0; i < h->n; i++)
		if (op_at(h, i)->invoke_us < t0)
			t0 = op_at(h, i)->invoke_us;
	fprintf(out, "id\tclient\tkind\tstatus\tkey\tinvoke_us\treturn_us\targ\tresult\n");
	for (size_t i = 0; i < h->n; i++) {
		const th_op *o = op_at(h, i);
		char ret[32];
		if (o->return_us == TH_HISTORY_OPEN)
			snprintf(ret, sizeof ret, "inf");
		else
			snprintf(ret, sizeof ret, "%" PRId64, o->return_us - t0);
		fprintf(out, "%d\t%d\t%s\t%s\t%s\t%" PRId64 "\t%s\t%s\t%s\n", o->id, o->client,
		        th_op_kind_name(o->kind), status_name(o->status), o->key, o->invoke_us - t0,
		        ret, o->arg ? o->arg : "-", o->result ? o->result : "-");
	}
}

int th_history_dump_file(const th_history *h, const char *path)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	th_history_dump(h, f);
	if (fclose(f) != 0)
		return -1;
	return 0;
}
