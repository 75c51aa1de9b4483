/* cli_ramp.c — how many GETs a streamed `blkmap sum` keeps in flight: a
 * pure decision over what the caller measures, no I/O, no threads.
 *
 * Owns: struct ramp (plain data; the caller serialises the calls).  More
 * requests in flight pay only when answers are late for the network's
 * sake.  On loopback each one more only queues behind the others at the
 * server and for the CPU: every answer comes later, which seems to call
 * for still more (the round trips measured grow with what is in flight),
 * and a moment of load elsewhere looks like latency.  So the round trips
 * must call for more in every epoch of a window of RAMP_TRIES, and a
 * growth after which they grew must have moved the bytes faster for the
 * next one to be tried (round trips that stayed as long as before are
 * the network's: more in flight is what they call for).
 * Fewer in flight cost less CPU (fewer threads to switch between), so
 * when every epoch of a window calls for half or less, they halve.
 */
#include "config.h"

#include "cli.h"

void ramp_init(struct ramp *r, int n, int min, int max)
{
	*r = (struct ramp){ .n = n, .min = min < n ? (min > 1 ? min : 1) : n, .max = max > n ? max : n };
}

int ramp_epoch(struct ramp *r, double rate, double need)
{
	if (r->full)
		return r->n;
	if (r->epochs++ == 0)
		r->need = r->need_max = need;
	if (need < r->need)
		r->need = need;
	if (need > r->need_max)
		r->need_max = need;
	if (rate > r->best)
		r->best = rate;
	if (r->epochs < RAMP_TRIES)
		return r->n; /* one epoch is noise: a window of RAMP_TRIES */
	r->epochs = 0;
	/* Round trips as long as before the growth are the network's, not
	 * a queue the growth made: the growth stands whatever the rate did
	 * (a busy machine moves no more, yet the round trips still call for
	 * as many).  Longer ones are judged by the rate. */
	bool queued = r->need > RAMP_GAIN * r->prev_need;
	if (r->prev > 0 && queued && r->best < RAMP_GAIN * r->prev_rate) {
		/* The last growth gained too little: no other is tried, and
		 * one that lost is undone. */
		if (r->best < r->prev_rate)
			r->n = r->prev;
		r->full = true;
		return r->n;
	}
	if (r->need > (double)r->n && r->n < r->max) {
		int to = r->need < (double)r->max ? (int)r->need : r->max;
		r->prev = r->n;
		r->prev_rate = r->best;
		r->prev_need = r->need;
		r->n = to < 2 * r->n ? to : 2 * r->n;
		r->best = 0;
	} else if (2 * r->need_max <= (double)r->n && r->n > r->min) {
		/* Half as many move as much (Little's law; and fewer in
		 * flight wait less): halved, down to min.  A growth after it
		 * is judged by need alone, as the first. */
		r->n = r->n / 2 > r->min ? r->n / 2 : r->min;
		r->prev = 0;
		r->best = 0;
	}
	return r->n;
}
