/*
 * tests/test_session.c — the at-most-once table (src/session.c), a pure unit
 * suite: verdicts, LRU eviction order, the horizon, the wire form (round trip,
 * malformed input), merge, allocation failure, memory flat over many sessions.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/harness.h"
#include "dkv_internal.h"
#include "session.h"

static void rec(dkv_sessions *t, uint64_t id, uint64_t seq, const char *res)
{
	assert_int_equal(dkv_sessions_record(t, id, seq, res, res ? strlen(res) : 0), DKV_OK);
}

static void test_session_verdicts(void **state)
{
	(void)state;
	dkv_sessions *t = dkv_sessions_new(4);
	assert_non_null(t);
	const void *r;
	size_t rl;
	assert_int_equal(dkv_sessions_check(t, 1, 1, &r, &rl), DKV_SESS_NEW);
	assert_int_equal(dkv_sessions_open(t, 1), DKV_OK);
	assert_int_equal(dkv_sessions_check(t, 1, 1, &r, &rl), DKV_SESS_NEW);
	rec(t, 1, 1, "one");
	assert_int_equal(dkv_sessions_check(t, 1, 1, &r, &rl), DKV_SESS_DUP);
	assert_int_equal(rl, 3);
	assert_memory_equal(r, "one", 3);
	assert_int_equal(dkv_sessions_check(t, 1, 2, NULL, NULL), DKV_SESS_NEW);
	rec(t, 1, 2, NULL);
	assert_int_equal(dkv_sessions_check(t, 1, 2, &r, &rl), DKV_SESS_DUP);
	assert_null(r);
	assert_int_equal(rl, 0);
	assert_int_equal(dkv_sessions_check(t, 1, 1, &r, &rl), DKV_SESS_STALE);
	assert_int_equal(dkv_sessions_count(t), 1);
	assert_int_equal(dkv_sessions_horizon(t), 0);
	/* reopening a known id keeps its state */
	assert_int_equal(dkv_sessions_open(t, 1), DKV_OK);
	assert_int_equal(dkv_sessions_check(t, 1, 2, NULL, NULL), DKV_SESS_DUP);
	dkv_sessions_free(t);
	dkv_sessions_free(NULL);
	assert_null(dkv_sessions_new(0));
}

static void test_session_lru_eviction_order_and_horizon(void **state)
{
	(void)state;
	dkv_sessions *t = dkv_sessions_new(3);
	assert_non_null(t);
	for (uint64_t id = 10; id <= 12; id++) assert_int_equal(dkv_sessions_open(t, id), DKV_OK);
	rec(t, 10, 1, "a"); /* 10 is now the most recent: order 11, 12, 10 */
	assert_int_equal(dkv_sessions_open(t, 13), DKV_OK); /* evicts 11 */
	assert_int_equal(dkv_sessions_count(t), 3);
	assert_int_equal(dkv_sessions_horizon(t), 11);
	assert_int_equal(dkv_sessions_check(t, 11, 1, NULL, NULL), DKV_SESS_EXPIRED);
	assert_int_equal(dkv_sessions_check(t, 10, 1, NULL, NULL), DKV_SESS_DUP);
	assert_int_equal(dkv_sessions_check(t, 12, 1, NULL, NULL), DKV_SESS_NEW);
	rec(t, 14, 1, "x"); /* evicts 12 */
	assert_int_equal(dkv_sessions_horizon(t), 12);
	assert_int_equal(dkv_sessions_check(t, 12, 1, NULL, NULL), DKV_SESS_EXPIRED);
	rec(t, 15, 1, "y"); /* evicts 10 (older than 13): the horizon does not go down */
	assert_int_equal(dkv_sessions_check(t, 10, 2, NULL, NULL), DKV_SESS_EXPIRED);
	assert_int_equal(dkv_sessions_horizon(t), 12);
	/* an id below the horizon that is still held keeps working */
	assert_int_equal(dkv_sessions_check(t, 13, 1, NULL, NULL), DKV_SESS_NEW);
	/* an unknown id above the horizon was never here */
	assert_int_equal(dkv_sessions_check(t, 99, 1, NULL, NULL), DKV_SESS_NEW);
	assert_false(dkv_sessions_known(t, 99));
	assert_false(dkv_sessions_known(t, 12));
	assert_true(dkv_sessions_known(t, 13));
	/* 13 evicted next: horizon 13 */
	rec(t, 16, 1, NULL);
	assert_int_equal(dkv_sessions_horizon(t), 13);
	assert_int_equal(dkv_sessions_count(t), 3);
	dkv_sessions_free(t);
}

static void test_session_encode_decode_round_trip(void **state)
{
	(void)state;
	dkv_sessions *t = dkv_sessions_new(5);
	for (uint64_t id = 1; id <= 7; id++) rec(t, id, id * 3, id % 2 ? "res" : NULL);
	rec(t, 4, 13, "four"); /* order now 3 5 6 7 4 */
	void *buf;
	size_t len;
	assert_int_equal(dkv_sessions_encode(t, &buf, &len), DKV_OK);
	dkv_sessions *u = dkv_sessions_decode(buf, len, 5);
	assert_non_null(u);
	assert_int_equal(dkv_sessions_count(u), 5);
	assert_int_equal(dkv_sessions_horizon(u), 2);
	const void *r;
	size_t rl;
	assert_int_equal(dkv_sessions_check(u, 4, 13, &r, &rl), DKV_SESS_DUP);
	assert_int_equal(rl, 4);
	assert_memory_equal(r, "four", 4);
	assert_int_equal(dkv_sessions_check(u, 7, 21, &r, &rl), DKV_SESS_DUP);
	assert_memory_equal(r, "res", 3);
	assert_int_equal(dkv_sessions_check(u, 2, 1, NULL, NULL), DKV_SESS_EXPIRED);
	/* the encoding is canonical: re-encoding gives the same bytes */
	void *buf2;
	size_t len2;
	assert_int_equal(dkv_sessions_encode(u, &buf2, &len2), DKV_OK);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	/* the LRU order survived: the same next eviction on both */
	rec(t, 8, 1, NULL);
	rec(u, 8, 1, NULL);
	assert_int_equal(dkv_sessions_horizon(t), 3);
	assert_int_equal(dkv_sessions_horizon(u), 3);
	/* decode into a smaller table: the oldest go, the horizon rises */
	dkv_sessions *w = dkv_sessions_decode(buf, len, 2);
	assert_non_null(w);
	assert_int_equal(dkv_sessions_count(w), 2);
	assert_int_equal(dkv_sessions_horizon(w), 6);
	assert_int_equal(dkv_sessions_check(w, 4, 13, NULL, NULL), DKV_SESS_DUP);
	assert_int_equal(dkv_sessions_check(w, 7, 21, NULL, NULL), DKV_SESS_DUP);
	assert_int_equal(dkv_sessions_check(w, 5, 1, NULL, NULL), DKV_SESS_EXPIRED);
	free(buf);
	free(buf2);
	dkv_sessions_free(t);
	dkv_sessions_free(u);
	dkv_sessions_free(w);
	/* empty table */
	t = dkv_sessions_new(1);
	assert_int_equal(dkv_sessions_encode(t, &buf, &len), DKV_OK);
	u = dkv_sessions_decode(buf, len, 1);
	assert_non_null(u);
	assert_int_equal(dkv_sessions_count(u), 0);
	free(buf);
	dkv_sessions_free(t);
	dkv_sessions_free(u);
}

static void test_session_decode_rejects_malformed(void **state)
{
	(void)state;
	dkv_sessions *t = dkv_sessions_new(8);
	rec(t, 1, 1, "abc");
	rec(t, 2, 5, NULL);
	void *buf;
	size_t len;
	assert_int_equal(dkv_sessions_encode(t, &buf, &len), DKV_OK);
	unsigned char *b = buf;
	/* every truncation is rejected */
	for (size_t n = 0; n < len; n++) {
		errno = 0;
		assert_null(dkv_sessions_decode(b, n, 8));
		assert_int_equal(errno, EINVAL);
	}
	/* trailing garbage */
	unsigned char *big = malloc(len + 1);
	memcpy(big, b, len);
	big[len] = 0;
	assert_null(dkv_sessions_decode(big, len + 1, 8));
	assert_int_equal(errno, EINVAL);
	/* bad magic, bad version */
	memcpy(big, b, len);
	big[0] ^= 1;
	assert_null(dkv_sessions_decode(big, len, 8));
	memcpy(big, b, len);
	big[4] = 99;
	assert_null(dkv_sessions_decode(big, len, 8));
	/* a huge count */
	memcpy(big, b, len);
	memset(big + 13, 0xff, 8);
	assert_null(dkv_sessions_decode(big, len, 8));
	assert_int_equal(errno, EINVAL);
	/* a result length past the end */
	memcpy(big, b, len);
	big[21 + 16] = 0xff;
	assert_null(dkv_sessions_decode(big, len, 8));
	/* id 0 */
	memcpy(big, b, len);
	memset(big + 21, 0, 8);
	assert_null(dkv_sessions_decode(big, len, 8));
	/* a duplicate id: make the second entry's id 1 */
	memcpy(big, b, len);
	size_t second = 21 + 20 + 3;
	memcpy(big + second, big + 21, 8);
	assert_null(dkv_sessions_decode(big, len, 8));
	assert_int_equal(errno, EINVAL);
	assert_null(dkv_sessions_decode(NULL, 0, 8));
	/* every single-byte corruption either decodes or fails cleanly (no crash) */
	for (size_t i = 0; i < len; i++) {
		memcpy(big, b, len);
		big[i] ^= 0x5a;
		dkv_sessions_free(dkv_sessions_decode(big, len, 8));
	}
	free(big);
	free(buf);
	dkv_sessions_free(t);
}

static void test_session_merge(void **state)
{
	(void)state;
	dkv_sessions *a = dkv_sessions_new(8), *b = dkv_sessions_new(8);
	rec(a, 1, 5, "a1");
	rec(a, 2, 1, "a2");
	rec(b, 1, 3, "b1"); /* older than a's: a's wins */
	rec(b, 2, 4, "b2"); /* newer: b's wins */
	rec(b, 3, 1, "b3"); /* only in b */
	for (uint64_t id = 20; id <= 24; id++) rec(b, id, 1, NULL);
	assert_int_equal(dkv_sessions_merge(a, b), DKV_OK);
	const void *r;
	size_t rl;
	assert_int_equal(dkv_sessions_count(a), 8);
	assert_int_equal(dkv_sessions_check(a, 1, 5, &r, &rl), DKV_SESS_DUP);
	assert_memory_equal(r, "a1", 2);
	assert_int_equal(dkv_sessions_check(a, 2, 4, &r, &rl), DKV_SESS_DUP);
	assert_memory_equal(r, "b2", 2);
	assert_int_equal(dkv_sessions_check(a, 3, 1, &r, &rl), DKV_SESS_DUP);
	assert_memory_equal(r, "b3", 2);
	assert_int_equal(dkv_sessions_horizon(a), 0);
	/* a source with a horizon raises ours; overflow evicts our oldest */
	dkv_sessions *h = dkv_sessions_new(2);
	for (uint64_t id = 30; id <= 33; id++) rec(h, id, 1, NULL);
	uint64_t hb = dkv_sessions_horizon(h);
	assert_int_equal(hb, 31);
	assert_int_equal(dkv_sessions_merge(a, h), DKV_OK);
	assert_true(dkv_sessions_horizon(a) >= hb);
	assert_int_equal(dkv_sessions_count(a), 8);
	assert_int_equal(dkv_sessions_check(a, 33, 1, NULL, NULL), DKV_SESS_DUP);
	assert_int_equal(dkv_sessions_check(a, 31, 1, NULL, NULL), DKV_SESS_EXPIRED);
	dkv_sessions_free(h);
	dkv_sessions_free(a);

	/* merge of disjoint small tables keeps both */
	a = dkv_sessions_new(8);
	dkv_sessions *c = dkv_sessions_new(8);
	rec(a, 1, 1, "x");
	rec(c, 2, 2, "y");
	assert_int_equal(dkv_sessions_merge(a, c), DKV_OK);
	assert_int_equal(dkv_sessions_count(a), 2);
	assert_int_equal(dkv_sessions_check(a, 2, 2, &r, &rl), DKV_SESS_DUP);
	assert_memory_equal(r, "y", 1);
	assert_int_equal(dkv_sessions_check(a, 2, 3, NULL, NULL), DKV_SESS_NEW);
	dkv_sessions_free(a);
	dkv_sessions_free(b);
	dkv_sessions_free(c);
}

static void test_session_allocation_failure_leaves_table_unchanged(void **state)
{
	(void)state;
	dkv_sessions *t = dkv_sessions_new(4);
	rec(t, 1, 1, "one");
	void *before;
	size_t blen;
	assert_int_equal(dkv_sessions_encode(t, &before, &blen), DKV_OK);
	unsigned long failures = 0;
	for (unsigned long n = 1; n <= 4; n++) {
		dkv_alloc_fail_after(n);
		int rc = dkv_sessions_record(t, (uint64_t)(10 + n), 1, "res", 3);
		dkv_alloc_fail_after(0);
		if (rc == DKV_ERR_NOMEM) {
			failures++;
			void *now;
			size_t nlen;
			assert_int_equal(dkv_sessions_encode(t, &now, &nlen), DKV_OK);
			assert_int_equal(nlen, blen);
			assert_memory_equal(now, before, blen);
			free(now);
		} else {
			assert_int_equal(rc, DKV_OK);
			free(before);
			assert_int_equal(dkv_sessions_encode(t, &before, &blen), DKV_OK);
		}
	}
	assert_true(failures >= 2); /* the result copy and the node */
	free(before);
	dkv_sessions_free(t);
}

static void test_session_memory_flat_over_100000_sessions(void **state)
{
	(void)state;
	const size_t cap = 8192;
	dkv_sessions *t = dkv_sessions_new(cap);
	char res[32];
	size_t heap_full = 0;
	size_t enc_full = 0;
	for (uint64_t id = 1; id <= 100000; id++) {
		snprintf(res, sizeof res, "result-%08llu", (unsigned long long)id);
		assert_int_equal(dkv_sessions_record(t, id, 1, res, strlen(res)), DKV_OK);
		assert_true(dkv_sessions_count(t) <= cap);
		if (id == 2 * cap) {
			heap_full = th_live_heap();
			void *b;
			assert_int_equal(dkv_sessions_encode(t, &b, &enc_full), DKV_OK);
			free(b);
		}
	}
	assert_int_equal(dkv_sessions_count(t), cap);
	assert_int_equal(dkv_sessions_horizon(t), 100000 - cap);
	size_t heap_end = th_live_heap();
	void *b;
	size_t enc_end;
	assert_int_equal(dkv_sessions_encode(t, &b, &enc_end), DKV_OK);
	free(b);
	assert_int_equal(enc_end, enc_full); /* same number of same-sized entries */
	/* live heap: no growth beyond allocator noise (64 KiB) from 16k to 100k sessions */
	if (heap_full) assert_true(heap_end <= heap_full + 65536);
	dkv_sessions_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_session_verdicts),
		cmocka_unit_test(test_session_lru_eviction_order_and_horizon),
		cmocka_unit_test(test_session_encode_decode_round_trip),
		cmocka_unit_test(test_session_decode_rejects_malformed),
		cmocka_unit_test(test_session_merge),
		cmocka_unit_test(test_session_allocation_failure_leaves_table_unchanged),
		cmocka_unit_test(test_session_memory_flat_over_100000_sessions),
	};
	return th_run_suite("session", tests);
}
