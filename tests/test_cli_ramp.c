/* tests/test_cli_ramp.c — how many GETs a streamed `blkmap sum` keeps in
 * flight (client/cli_ramp.c) alone: epochs fed with the rates and the
 * round trips' needs a server would show, no server, no clock.  A server
 * whose answers are late for the network's sake (need steady, the rate
 * grows with what is in flight) gets more; one where more in flight only
 * queues (need grows with what is in flight, the rate does not) does not
 * keep them, a busy machine (need steady, the rate flat) still gets
 * them, and a moment of load (need high in one epoch) grows nothing.
 * Round trips that call for half of what is in flight or less halve it,
 * down to a floor.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Before cmocka.h, whose fail() macro would rename cli.h's fail. */
#include "../client/cli.h"

#include <setjmp.h>
#include <cmocka.h>

/* A server of fixed round trips (2 ms) that moves n * 100 MB/s with n
 * in flight, up to 6400: need 68 (64 KiB blocks at 2 GB/s) in every
 * epoch. */
static int feed_latency(struct ramp *r, int epochs)
{
	int n = r->n;
	for (int i = 0; i < epochs; i++)
		n = ramp_epoch(r, (n < 64 ? n : 64) * 100e6, 68);
	return n;
}

static void while_each_growth_moves_more_it_doubles_up_to_need_and_max(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 16, 64);
	assert_int_equal(feed_latency(&r, RAMP_TRIES - 1), 16); /* a window first */
	assert_int_equal(feed_latency(&r, 1), 32);
	assert_int_equal(feed_latency(&r, RAMP_TRIES), 64);
	assert_int_equal(feed_latency(&r, 10 * RAMP_TRIES), 64);
	ramp_init(&r, 16, 16, 40);
	assert_int_equal(feed_latency(&r, 10 * RAMP_TRIES), 40);
	/* Need 20: one growth, to 20, not 32. */
	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, r.n * 100e6, 20);
	assert_int_equal(r.n, 20);
}

/* Loopback: each one more in flight waits behind the others, so the
 * round trips call for more than there are, whatever there are; the rate
 * stays. */
static void a_growth_that_moves_no_more_is_the_last(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 2.5 * r.n);
	assert_int_equal(r.n, 32);
	assert_true(r.full);
	/* A growth that gained a little (less than RAMP_GAIN) is kept. */
	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, r.n == 16 ? 1e9 : 1.1e9, 2.5 * r.n);
	assert_int_equal(r.n, 32);
}

static void a_growth_that_moves_less_is_undone(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, r.n == 16 ? 1e9 : 0.8e9, 2.5 * r.n);
	assert_int_equal(r.n, 16);
	assert_true(r.full);
}

/* A busy machine: answers late for the network's sake (need steady at
 * 68 whatever is in flight) while the rate stays, the CPU being short:
 * each growth stands, up to need and max. */
static void a_growth_after_which_round_trips_stay_as_long_stands_though_no_faster(void **state)
{
	struct ramp r;

	(void)state;
	ramp_init(&r, 16, 4, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, 0.5e9, 68);
	assert_int_equal(r.n, 64);
	/* Round trips a little longer (less than RAMP_GAIN) count as the
	 * same. */
	ramp_init(&r, 16, 4, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, 0.5e9, r.n == 16 ? 60 : 70);
	assert_int_equal(r.n, 64);
	assert_false(r.full);
}

/* The least need of a window counts: one slow epoch in each window (the
 * machine busy elsewhere) grows nothing. */
static void a_need_in_one_epoch_of_a_window_grows_nothing(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 20 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, i % RAMP_TRIES == 1 ? 200 : 4);
	assert_int_equal(r.n, 16);
	assert_false(r.full);
	/* Answers late from then on: it grows. */
	for (int i = 0; i < RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 68);
	assert_int_equal(r.n, 32);
}

/* Loopback, quiet: 16 in flight, round trips that call for 3. */
static void when_the_round_trips_call_for_half_or_less_it_halves_down_to_min(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 4, 64);
	for (int i = 0; i < RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 8);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 3);
	assert_int_equal(r.n, 4);
	/* Need 7.5: 8 stay 8. */
	ramp_init(&r, 16, 4, 64);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 7.5);
	assert_int_equal(r.n, 8);
	/* Answers late from then on: it grows again, by need alone. */
	for (int i = 0; i < RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 68);
	assert_int_equal(r.n, 16);
	assert_false(r.full);
	/* One epoch of a window that calls for more than half holds it. */
	ramp_init(&r, 16, 4, 64);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, i % RAMP_TRIES == 1 ? 12 : 3);
	assert_int_equal(r.n, 16);
}

static void it_never_goes_past_max_nor_below_min(void **state)
{
	struct ramp r;
	(void)state;

	ramp_init(&r, 16, 16, 16);
	assert_int_equal(feed_latency(&r, 10 * RAMP_TRIES), 16);
	ramp_init(&r, 1, 1, 4);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, r.n * 1e6, 1000);
	assert_int_equal(r.n, 4);
	ramp_init(&r, 16, 16, 64);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 0);
	assert_int_equal(r.n, 16);
	ramp_init(&r, 16, 5, 64);
	for (int i = 0; i < 10 * RAMP_TRIES; i++)
		ramp_epoch(&r, 1e9, 0);
	assert_int_equal(r.n, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(while_each_growth_moves_more_it_doubles_up_to_need_and_max),
		cmocka_unit_test(a_growth_that_moves_no_more_is_the_last),
		cmocka_unit_test(a_growth_that_moves_less_is_undone),
		cmocka_unit_test(a_growth_after_which_round_trips_stay_as_long_stands_though_no_faster),
		cmocka_unit_test(a_need_in_one_epoch_of_a_window_grows_nothing),
		cmocka_unit_test(when_the_round_trips_call_for_half_or_less_it_halves_down_to_min),
		cmocka_unit_test(it_never_goes_past_max_nor_below_min),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
