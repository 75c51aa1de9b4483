/* tests/test_cli_ramp.c — how many GETs a streamed `blkmap sum` keeps in
 * flight (bm_ramp_epoch with BM_RAMP_STEADY_STANDS, client/ramp.c;
 * read-ahead's cases are test_readahead_ramp's) alone: epochs fed with the rates and the
 * round trips' needs a server would show, no server, no clock.  A server
 * whose answers are late for the network's sake (need steady, the rate
 * grows with what is in flight) gets more; one where more in flight only
 * queues (need grows with what is in flight, the rate does not) does not
 * keep them, a busy machine (need steady, the rate flat) still gets
 * them, a growth that stood stays when round trips lengthen later, and
 * a moment of load (need high in one epoch) grows nothing.  Round trips
 * that call for half of what is in flight or less halve it, down to a
 * floor, after the last growth too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "../client/ramp.h"

#include <setjmp.h>
#include <cmocka.h>

/* A server of fixed round trips (2 ms) that moves n * 100 MB/s with n
 * in flight, up to 6400: need 68 (64 KiB blocks at 2 GB/s) in every
 * epoch. */
static int feed_latency(struct bm_ramp *r, int epochs)
{
	int n = r->n;
	for (int i = 0; i < epochs; i++)
		n = bm_ramp_epoch(r, (n < 64 ? n : 64) * 100e6, 68);
	return n;
}

static void while_each_growth_moves_more_it_doubles_up_to_need_and_max(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	assert_int_equal(feed_latency(&r, BM_RAMP_TRIES - 1), 16); /* a window first */
	assert_int_equal(feed_latency(&r, 1), 32);
	assert_int_equal(feed_latency(&r, BM_RAMP_TRIES), 64);
	assert_int_equal(feed_latency(&r, 10 * BM_RAMP_TRIES), 64);
	bm_ramp_init(&r, 16, 16, 40, BM_RAMP_STEADY_STANDS);
	assert_int_equal(feed_latency(&r, 10 * BM_RAMP_TRIES), 40);
	/* Need 20: one growth, to 20, not 32. */
	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n * 100e6, 20);
	assert_int_equal(r.n, 20);
}

/* Loopback: each one more in flight waits behind the others, so the
 * round trips call for more than there are, whatever there are; the rate
 * stays. */
static void a_growth_that_moves_no_more_is_the_last(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 2.5 * r.n);
	assert_int_equal(r.n, 32);
	assert_true(r.full);
	/* A growth that gained a little (less than BM_RAMP_GAIN) is kept. */
	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n == 16 ? 1e9 : 1.1e9, 2.5 * r.n);
	assert_int_equal(r.n, 32);
}

static void a_growth_that_moves_less_is_undone(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n == 16 ? 1e9 : 0.8e9, 2.5 * r.n);
	assert_int_equal(r.n, 16);
	assert_true(r.full);
}

/* A busy machine: answers late for the network's sake (need steady at
 * 68 whatever is in flight) while the rate stays, the CPU being short:
 * each growth stands, up to need and max. */
static void a_growth_after_which_round_trips_stay_as_long_stands_though_no_faster(void **state)
{
	struct bm_ramp r;

	(void)state;
	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.5e9, 68);
	assert_int_equal(r.n, 64);
	/* Round trips a little longer (less than BM_RAMP_GAIN) count as the
	 * same. */
	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.5e9, r.n == 16 ? 60 : 70);
	assert_int_equal(r.n, 64);
	assert_false(r.full);
}

/* A growth is judged by the window after it alone: 16 -> 32 -> 64 at
 * 2 ms (round trips steady, the rate flat: a busy machine), the first
 * window at 64 a little slower; then a load elsewhere makes the round
 * trips three times as long.  The growth stood: it stays, and fast
 * answers may still halve. */
static void a_growth_that_stood_is_not_undone_by_round_trips_longer_later(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 2 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.5e9, 68);
	assert_int_equal(r.n, 64);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.45e9, 68);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 0.4e9, 200);
	assert_int_equal(r.n, 64);
	assert_false(r.full);
}

/* After the last growth (one that moved too little more), a window of
 * fast answers still halves: a sum of a big dataset outlives the
 * moment that called for more. */
static void after_the_last_growth_fast_answers_still_halve(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n == 16 ? 1e9 : 1.1e9, 2.5 * r.n);
	assert_int_equal(r.n, 32);
	assert_true(r.full);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 16);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 4);
	/* Late answers again: no growth after the last. */
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 68);
	assert_int_equal(r.n, 4);
}

/* The least need of a window counts: one slow epoch in each window (the
 * machine busy elsewhere) grows nothing. */
static void a_need_in_one_epoch_of_a_window_grows_nothing(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 20 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, i % BM_RAMP_TRIES == 1 ? 200 : 4);
	assert_int_equal(r.n, 16);
	assert_false(r.full);
	/* Answers late from then on: it grows. */
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 68);
	assert_int_equal(r.n, 32);
}

/* Loopback, quiet: 16 in flight, round trips that call for 3. */
static void when_the_round_trips_call_for_half_or_less_it_halves_down_to_min(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 8);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 4);
	/* Need 7.5: 8 stay 8. */
	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 7.5);
	assert_int_equal(r.n, 8);
	/* Answers late from then on: it grows again, by need alone. */
	for (int i = 0; i < BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 68);
	assert_int_equal(r.n, 16);
	assert_false(r.full);
	/* One epoch of a window that calls for more than half holds it. */
	bm_ramp_init(&r, 16, 4, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, i % BM_RAMP_TRIES == 1 ? 12 : 3);
	assert_int_equal(r.n, 16);
}

static void it_never_goes_past_max_nor_below_min(void **state)
{
	struct bm_ramp r;
	(void)state;

	bm_ramp_init(&r, 16, 16, 16, BM_RAMP_STEADY_STANDS);
	assert_int_equal(feed_latency(&r, 10 * BM_RAMP_TRIES), 16);
	bm_ramp_init(&r, 1, 1, 4, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, r.n * 1e6, 1000);
	assert_int_equal(r.n, 4);
	bm_ramp_init(&r, 16, 16, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 0);
	assert_int_equal(r.n, 16);
	bm_ramp_init(&r, 16, 5, 64, BM_RAMP_STEADY_STANDS);
	for (int i = 0; i < 10 * BM_RAMP_TRIES; i++)
		bm_ramp_epoch(&r, 1e9, 0);
	assert_int_equal(r.n, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(while_each_growth_moves_more_it_doubles_up_to_need_and_max),
		cmocka_unit_test(a_growth_that_moves_no_more_is_the_last),
		cmocka_unit_test(a_growth_that_moves_less_is_undone),
		cmocka_unit_test(a_growth_after_which_round_trips_stay_as_long_stands_though_no_faster),
		cmocka_unit_test(a_growth_that_stood_is_not_undone_by_round_trips_longer_later),
		cmocka_unit_test(after_the_last_growth_fast_answers_still_halve),
		cmocka_unit_test(a_need_in_one_epoch_of_a_window_grows_nothing),
		cmocka_unit_test(when_the_round_trips_call_for_half_or_less_it_halves_down_to_min),
		cmocka_unit_test(it_never_goes_past_max_nor_below_min),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
