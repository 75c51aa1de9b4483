/* tests/test_client_readahead.c — read-ahead: a sequential scan has its
 * blocks fetched ahead of the faults, several requests in flight at once;
 * random access fetches exactly the blocks touched and nothing ahead.
 * Parallelism is observed on the server (GET /_admin/stats, polled by a
 * thread) while every response is delayed, so a serial client could never
 * show two requests in flight.
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "client_util.h"

#define KiB ((size_t)1 << 10)
#define BS (64 * KiB)
#define NBLK 48

struct poller {
	struct ts_server *s;
	atomic_bool stop;
	long max_in_flight;
	pthread_t thread;
};

static void *poll_in_flight(void *arg)
{
	struct poller *p = arg;
	struct timespec ms1 = { 0, 1000 * 1000 };

	while (!atomic_load(&p->stop)) {
		long n = tc_server_stat(p->s, "requests_in_flight", NULL);
		if (n > p->max_in_flight)
			p->max_in_flight = n;
		nanosleep(&ms1, NULL);
	}
	return NULL;
}

static void a_sequential_scan_fetches_ahead_in_parallel(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(NBLK * BS, 41), *got = malloc(NBLK * BS);
	char url[512];
	struct bm_stats st;
	struct poller p = { .s = s };
	bm_mapping *m;
	void *addr;

	tc_url(url, sizeof(url), s, "/ra/seq");
	tc_put(url, BS, data, NBLK * BS);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 30}"), 200);
	assert_int_equal(pthread_create(&p.thread, NULL, poll_in_flight, &p), 0);
	for (size_t b = 0; b < NBLK; b++)
		memcpy(got + b * BS, (char *)addr + b * BS, BS);
	atomic_store(&p.stop, true);
	pthread_join(p.thread, NULL);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);

	assert_memory_equal(got, data, NBLK * BS);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, NBLK);
	/* Only the first faults wait for the network; the rest were ahead. */
	assert_in_range(st.cache_misses, 1, 4);
	assert_int_equal(st.readahead_blocks, NBLK - st.cache_misses);
	assert_true(p.max_in_flight >= 2);
	bm_unmap(m);
	bm_close(ds);
	free(data);
	free(got);
}

static void random_access_fetches_only_the_blocks_touched(void **state)
{
	struct ts_server *s = *state;
	static const size_t order[] = { 40, 3, 17, 46, 9, 33, 21, 1, 25, 12 };
	const size_t n = sizeof(order) / sizeof(order[0]);
	unsigned char *data = ts_pattern(NBLK * BS, 42);
	char url[512];
	struct bm_stats st;
	bm_mapping *m;
	void *addr;

	tc_url(url, sizeof(url), s, "/ra/random");
	tc_put(url, BS, data, NBLK * BS);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	long gets = tc_server_stat(s, "requests", "GET");
	for (size_t i = 0; i < n; i++) {
		size_t off = order[i] * BS + 1000 * i;
		assert_int_equal(((unsigned char *)addr)[off], data[off]);
	}
	/* Touching a loaded block again costs nothing. */
	assert_int_equal(((unsigned char *)addr)[order[0] * BS], data[order[0] * BS]);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, n);
	assert_int_equal(st.cache_misses, n);
	assert_int_equal(st.readahead_blocks, 0);
	assert_int_equal(tc_server_stat(s, "requests", "GET") - gets, n);
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_sequential_scan_fetches_ahead_in_parallel),
		cmocka_unit_test(random_access_fetches_only_the_blocks_touched),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
