/* tests/test_client_readahead.c — read-ahead: a sequential scan has blocks
 * fetched ahead of the faults (blocks never touched get fetched), never
 * more than the window ahead of the reader, each block once, several
 * requests in flight at once; random access fetches exactly the blocks
 * touched and nothing ahead.  The workers start at the first blocks
 * queued: an open, a mapping or random access creates none.  Every
 * assertion is an invariant, not a
 * timing: parallelism is the server's own peak of requests in flight
 * (GET /_admin/stats requests_in_flight_max) while every response is
 * delayed, so a serial client could never show two.  Slow answers make
 * a dataset's read-ahead keep more GETs in flight than `connections`,
 * from no more threads than `connections` (flows: several GETs per
 * worker).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "client_util.h"

#define KiB ((size_t)1 << 10)
#define BS (64 * KiB)
#define NBLK 48
#define WINDOW 8  /* read-ahead window, blocks */

/* Stores LEN bytes of DATA in blocks of BS at PATH of S into *V, whose
 * options (tc_options) the test then sets before tc_map_open. */
static void ra_put(struct ts_server *s, const char *path, size_t bs, const unsigned char *data,
		   size_t len, struct tc_mapped *v)
{
	tc_url(v->url, sizeof(v->url), s, path);
	tc_map_put(v, bs, data, len);
}

/* The fault engine's threads are the process's, made with its first page
 * cache (the first mapping, or bm_stats): started here, so that the
 * counts after are a handle's own. */
static void start_fault_engine(const char *url)
{
	struct bm_stats st;
	bm_dataset *ds = tc_open(url, 0);

	bm_stats(ds, &st);
	bm_close(ds);
}

static void a_sequential_scan_fetches_ahead_in_parallel(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(NBLK * BS, 41), *got = malloc(NBLK * BS);
	struct timespec ms10 = { 0, 10 * 1000 * 1000 };
	const size_t half = NBLK / 2;
	struct bm_stats st;
	struct tc_mapped v;

	ra_put(s, "/ra/seq", BS, data, NBLK * BS, &v);
	v.o.readahead_bytes = WINDOW * BS;
	v.o.connections = 4;
	v.o.spare_bytes = 0; /* no spare memory thread: only the workers count */
	start_fault_engine(v.url);
	int before = tc_nthreads();
	tc_map_open(&v);
	/* Nothing queued yet: no worker (they start at the first blocks
	 * queued, and still read ahead in parallel below). */
	assert_int_equal(tc_nthreads(), before);
	tc_server_settle(s); /* nothing left unread from before */
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 30}"), 200);
	long gets = tc_server_stat(s, "requests", "GET");  /* also starts a new peak */
	for (size_t b = 0; b < half; b++) {
		memcpy(got + b * BS, v.mem + b * BS, BS);
		/* What is fetched was queued at a fault on a block <= b, for
		 * at most WINDOW blocks past it: never more. */
		bm_stats(v.ds, &st);
		if (st.fetched_blocks > b + 1 + WINDOW)
			fail_msg("%llu blocks fetched after reading %zu: more than %d ahead",
				 (unsigned long long)st.fetched_blocks, b + 1, WINDOW);
	}
	/* The reader stops: read-ahead still fetches what it queued past
	 * it, blocks nobody touched (bounded wait: 30 s is a hang). */
	for (int i = 0; i < 3000; i++) {
		bm_stats(v.ds, &st);
		if (st.fetched_blocks > half)
			break;
		nanosleep(&ms10, NULL);
	}
	assert_true(st.fetched_blocks > half);
	assert_true(st.fetched_blocks <= half + WINDOW);
	for (size_t b = half; b < NBLK; b++)
		memcpy(got + b * BS, v.mem + b * BS, BS);
	long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);

	assert_memory_equal(got, data, NBLK * BS);
	bm_stats(v.ds, &st);
	/* Each block fetched once, by a fault or ahead of one. */
	assert_int_equal(st.fetched_blocks, NBLK);
	/* ... plus the one index page of NBLK blocks (format 2). */
	assert_int_equal(tc_server_stat(s, "requests", "GET") - gets, NBLK + 1);
	assert_int_equal(st.cache_misses + st.readahead_blocks, NBLK);
	assert_true(st.readahead_blocks >= 1);
	/* Several requests were in the server at once. */
	assert_true(peak >= 2);
	assert_true(tc_nthreads() > before); /* the workers, started by the scan */
	tc_map_close(&v);
	assert_int_equal(tc_nthreads(), before); /* joined */
	free(data);
	free(got);
}

static void random_access_fetches_only_the_blocks_touched(void **state)
{
	struct ts_server *s = *state;
	static const size_t order[] = { 40, 3, 17, 46, 9, 33, 21, 1, 25, 12 };
	const size_t n = sizeof(order) / sizeof(order[0]);
	unsigned char *data = ts_pattern(NBLK * BS, 42);
	struct bm_stats st;
	struct tc_mapped v;

	ra_put(s, "/ra/random", BS, data, NBLK * BS, &v);
	v.o.spare_bytes = 0; /* no spare memory thread: only the workers count */
	int before = tc_nthreads();
	tc_map_open(&v);
	tc_server_settle(s); /* nothing left unread from before */
	long gets = tc_server_stat(s, "requests", "GET");
	for (size_t i = 0; i < n; i++) {
		size_t off = order[i] * BS + 1000 * i;
		assert_int_equal(v.mem[off], data[off]);
	}
	/* Touching a loaded block again costs nothing. */
	assert_int_equal(v.mem[order[0] * BS], data[order[0] * BS]);
	bm_stats(v.ds, &st);
	assert_int_equal(st.fetched_blocks, n);
	assert_int_equal(st.cache_misses, n);
	assert_int_equal(st.readahead_blocks, 0);
	assert_int_equal(tc_server_stat(s, "requests", "GET") - gets, n + 1); /* + the index page */
	/* Nothing was read ahead: no worker was started. */
	assert_int_equal(tc_nthreads(), before);
	tc_map_close(&v);
	free(data);
}

/* An open and a close that read nothing ahead create no thread and leave
 * none behind: of a dataset, of a flat object (its probe is answered
 * before the open returns), and of a dataset with read-ahead off. */
static void an_open_and_close_that_read_nothing_ahead_start_no_worker(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * BS, 43);
	char ds_url[512], flat_url[512];
	const char *urls[] = { ds_url, flat_url };

	tc_url(ds_url, sizeof(ds_url), s, "/ra/quiet");
	tc_put(ds_url, BS, data, 4 * BS);
	tc_url(flat_url, sizeof(flat_url), s, "/ra/quiet.bin");
	assert_int_equal(ts_put(s, "/ra/quiet.bin", data, 4 * BS) / 100, 2);
	int before = tc_nthreads();
	for (int i = 0; i < 3; i++) {
		struct bm_options o;
		bm_dataset *ds;
		unsigned char buf[100];
		tc_options(&o);
		o.connections = 4;
		if (i == 2)
			o.readahead_bytes = 0;
		assert_int_equal(bm_open(&ds, urls[i % 2], &o), 0);
		assert_int_equal(bm_read(ds, BS + 5, buf, sizeof(buf)), (int64_t)sizeof(buf));
		assert_memory_equal(buf, data + BS + 5, sizeof(buf));
		assert_int_equal(tc_nthreads(), before);
		bm_close(ds);
		assert_int_equal(tc_nthreads(), before);
	}
	free(data);
}

/* Answers 30 ms late: a dataset's read-ahead measures it and keeps more
 * GETs in flight than `connections` (up to 4 times as many), the
 * bandwidth-delay product of small blocks.  The server's peak of requests
 * in flight shows it: with connections = 2 the old pool never had more
 * than 2 (its connection bound covers the reader's own GETs too). */
static void slow_answers_raise_the_requests_in_flight_past_connections(void **state)
{
	struct ts_server *s = *state;
	const size_t bs = 16 * KiB, nblk = 256;
	unsigned char *data = ts_pattern(nblk * bs, 43);
	struct bm_stats st;
	struct tc_mapped v;

	ra_put(s, "/ra/slow", bs, data, nblk * bs, &v);
	v.o.connections = 2;
	tc_map_open(&v);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 30}"), 200);
	(void)tc_server_stat(s, "requests_in_flight_max", NULL); /* a new peak */
	assert_memory_equal(v.mem, data, nblk * bs);
	long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);
	bm_stats(v.ds, &st);
	assert_int_equal(st.fetched_blocks, nblk);
	assert_true(st.readahead_blocks >= 16);
	if (peak <= 2 || peak > 8)
		fail_msg("%ld requests in flight at most: expected 3..8 (connections 2, at most 4 times)",
			 peak);
	tc_map_close(&v);
	free(data);
}

/* A dataset's whole blocks are read ahead over flows: a worker keeps
 * several block GETs in flight (one curl multi handle), so the GETs in
 * flight grow past `connections` with no more threads than the pool
 * started with (`connections` of them).  Before flows, each GET in
 * flight was a worker thread of its own: the pool grew with the ramp. */
static void read_ahead_keeps_more_gets_in_flight_than_it_has_threads(void **state)
{
	struct ts_server *s = *state;
	const size_t bs = 16 * KiB, nblk = 256;
	unsigned char *data = ts_pattern(nblk * bs, 44);
	struct bm_stats st;
	struct tc_mapped v;

	ra_put(s, "/ra/flows", bs, data, nblk * bs, &v);
	v.o.connections = 2;
	v.o.spare_bytes = 0; /* no spare memory thread: only the workers count */
	start_fault_engine(v.url);
	int before = tc_nthreads();
	tc_map_open(&v);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 30}"), 200);
	(void)tc_server_stat(s, "requests_in_flight_max", NULL); /* a new peak */
	assert_memory_equal(v.mem, data, nblk * bs);
	long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);
	int threads = tc_nthreads() - before;
	bm_stats(v.ds, &st);
	assert_int_equal(st.fetched_blocks, nblk);
	assert_true(st.readahead_blocks >= 16);
	if (peak <= 2 || threads > 2)
		fail_msg("%ld requests in flight at most from %d threads: expected more than 2 from "
			 "at most 2 (connections)", peak, threads);
	tc_map_close(&v);
	free(data);
}

#define BAD 10 /* the block whose object the next test damages */

/* For a child: a sequential read of blocks 0..BAD-1 has read-ahead fetch
 * block BAD; once it failed (its error is the handle's), a read of block
 * BAD faults: SIGBUS.  3: read-ahead never tried it (30 s). */
static int read_ahead_then_touch_the_bad_block(void *arg)
{
	struct timespec ms10 = { 0, 10 * 1000 * 1000 };
	struct bm_options o;
	volatile unsigned char *p;
	void *addr;

	if (tc_child_options(&o) < 0)
		return 1;
	o.retries = 1;
	o.readahead_bytes = WINDOW * BS;
	bm_dataset *ds = tc_child_map(arg, &o, &addr);
	if (ds == NULL) {
		fprintf(stderr, "%s\n", bm_last_error(NULL));
		return 2;
	}
	p = addr;
	for (size_t b = 0; b < BAD; b++)
		(void)p[b * BS];
	int i = 0;
	while (strstr(bm_last_error(ds), "checksum mismatch") == NULL && i++ < 3000)
		nanosleep(&ms10, NULL);
	if (i > 3000)
		return 3;
	(void)p[BAD * BS + 7]; /* SIGBUS */
	return 0;
}

/* Every answer is untrusted, those read-ahead asks for too: a block
 * object whose bytes fail the block's sum, fetched ahead of the reader,
 * is not cached; the fault on it fetches it again and reports the
 * checksum error (SIGBUS, one line naming the block). */
static void a_block_read_ahead_that_fails_its_checksum_is_not_cached(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(16 * BS, 45), *other = ts_pattern(BS, 46);
	char url[512], key[512], bkey[128], *err;

	tc_url(url, sizeof(url), s, "/ra/badsum");
	tc_put(url, BS, data, 16 * BS);
	snprintf(key, sizeof(key), "/ra/badsum/%s", tc_block_key(url, BAD, bkey, sizeof(bkey)));
	assert_int_equal(ts_put(s, key, other, BS), 204);
	int status = tc_child(read_ahead_then_touch_the_bad_block, url, &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || !strstr(err, "checksum mismatch") ||
	    !strstr(err, "block 10"))
		fail_msg("status %#x, stderr \"%s\"; expected SIGBUS and a checksum mismatch of block 10",
			 status, err);
	free(err);
	free(data);
	free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_sequential_scan_fetches_ahead_in_parallel),
		cmocka_unit_test(random_access_fetches_only_the_blocks_touched),
		cmocka_unit_test(an_open_and_close_that_read_nothing_ahead_start_no_worker),
		cmocka_unit_test(slow_answers_raise_the_requests_in_flight_past_connections),
		cmocka_unit_test(read_ahead_keeps_more_gets_in_flight_than_it_has_threads),
		cmocka_unit_test(a_block_read_ahead_that_fails_its_checksum_is_not_cached),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
