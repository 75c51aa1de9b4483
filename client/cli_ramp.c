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
 * growth must have moved the bytes faster for the next one to be tried.
 */
#include "config.h"

#include "cli.h"

void ramp_init(struct ramp *r, int n, int max)
{
	*r = (struct ramp){ .n = n, .max = max > n ? max : n };
}

int ramp_epoch(struct ramp *r, double rate, double need)
{
	if (r->full)
		return r->n;
	if (r->epochs++ == 0 || need < r->need)
		r->need = need;
	if (rate > r->best)
		r->best = rate;
	if (r->epochs < RAMP_TRIES)
		return r->n; /* one epoch is noise: a window of RAMP_TRIES */
	r->epochs = 0;
	if (r->prev > 0 && r->best < RAMP_GAIN * r->prev_rate) {
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
		r->n = to < 2 * r->n ? to : 2 * r->n;
		r->best = 0;
	}
	return r->n;
}
