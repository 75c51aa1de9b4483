/* tests/test_readahead_ramp.c — how many block GETs a dataset's read-ahead
 * keeps in flight (bm_ramp_epoch, client/ramp.c, `blkmap sum`'s rule
 * too; its cases are test_cli_ramp's) alone: epochs fed with the
 * rate and the need (requests in flight the fastest load calls for) that
 * a server would show; no server, no clock.  Late answers for the
 * network's sake (need steady, rate up with what is in flight) get more
 * in flight, doubling up to need and the bound; on loopback, where more
 * in flight only queue (need grows with them, rate stays), a growth is
 * undone and the last, and so is one that a slow reader does not follow
 * though the round trips stay as long (no BM_RAMP_STEADY_STANDS); an
 * epoch of load alone grows nothing; fast answers (need at most half)
 * halve what is in flight, down to a floor.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../client/ramp.h"

/* Round trips of 2 ms, 100 MB/s more per request in flight up to 64:
 * every epoch calls for 68. */
static int latency_epochs(struct bm_ramp *r, int epochs)
{
	for (int i = 0; i < epochs; i++)
		bm_ramp_epoch(r, (r->n < 64 ? r->n : 64) * 100e6, 68);
	return r->n;
}

static void late_answers_double_what_is_in_flight_up_to_need_and_bound(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, 0);
	assert_int_equal(latency_epochs(&r, BM_RAMP_TRIES - 1), 16); /* a window first */
	assert_int_equal(latency_epochs(&r, 1), 32);
	assert_int_equal(latency_epochs(&r, BM_RAMP_TRIES), 64);
	assert_int_equal(latency_epochs(&r, 10 * BM_RAMP_TRIES), 64);
	bm_ramp_init(&r, 16, 4, 40, 0);
	assert_int_equal(latency_epochs(&r, 10 * BM_RAMP_TRIES), 40);
	/* Need 20: to 20, not 32. */
	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n * 100e6, 20);
	assert_int_equal(r.n, 20);
}

/* Loopback: each more in flight waits behind the others, so the fastest
 * load calls for more than there are, whatever there are (here 1.4 times
 * as many); the rate is the CPU's, the same at every count. */
static void on_loopback_a_growth_that_moves_no_more_is_undone_and_the_last(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 1.4 * r.n);
	assert_int_equal(r.n, 22); /* tried */
	/* A little slower at 22 (more threads to switch): undone. */
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.95e9, 1.4 * r.n);
	assert_int_equal(r.n, 16);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 1.4 * r.n);
	assert_int_equal(r.n, 16); /* never 64 */
	/* A growth that paid a little (under a quarter) stays, and is the
	 * last. */
	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 40);
	assert_int_equal(r.n, 32);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1.1e9, 80);
	assert_int_equal(r.n, 32);
}

/* 2 ms round trips (need 68 whatever is in flight) and a reader that
 * consumes no faster than it did at 16 (a Python loop hashing): the
 * round trips still call for 68, but the rate says more in flight move
 * no more; unlike sum's (BM_RAMP_STEADY_STANDS), the growth is undone
 * if it moved less, and the last. */
static void a_growth_the_reader_does_not_follow_is_the_last_though_round_trips_stay(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.5e9, 68);
	assert_int_equal(r.n, 32);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n == 16 ? 0.5e9 : 0.45e9, 68);
	assert_int_equal(r.n, 16);
	assert_true(r.full);
	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.5e9, 68);
	assert_int_equal(r.n, 32);
	assert_true(r.full);
}

/* A moment of load elsewhere makes one epoch's loads slow: need is high
 * once in a window, which grows nothing. */
static void one_slow_epoch_in_a_window_grows_nothing(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int w = 0; w < 10; w++)
		for (int i = 0; i < BM_RAMP_TRIES; i++)
			bm_ramp_epoch(&r, 1e9, i == 1 ? 100 : 12);
	assert_int_equal(r.n, 16);
}

/* Fast answers: a window whose every epoch calls for half or less
 * halves what is in flight, down to the floor; one epoch calling for
 * more keeps it. */
static void fast_answers_halve_what_is_in_flight_down_to_the_floor(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 8);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 4);
	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, i == 2 ? 9 : 3);
	assert_int_equal(r.n, 16);
	/* After a last growth, fast answers still halve. */
	bm_ramp_init(&r, 16, 4, 64, 0);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 40);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.9e9, 40);
	assert_int_equal(r.n, 16);
	assert_true(r.full);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 2);
	assert_int_equal(r.n, 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(late_answers_double_what_is_in_flight_up_to_need_and_bound),
		cmocka_unit_test(on_loopback_a_growth_that_moves_no_more_is_undone_and_the_last),
		cmocka_unit_test(a_growth_the_reader_does_not_follow_is_the_last_though_round_trips_stay),
		cmocka_unit_test(one_slow_epoch_in_a_window_grows_nothing),
		cmocka_unit_test(fast_answers_halve_what_is_in_flight_down_to_the_floor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
