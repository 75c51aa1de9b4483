/* ramp.c — how many requests a streamed reader keeps in flight, for a
 * dataset's read-ahead and for `blkmap sum` (the rule: ramp.h).  A pure
 * decision over what the caller measures: no I/O, no clock, no threads.
 *
 * Owns: struct bm_ramp (plain data; each caller serialises its calls:
 * ds->ra.mu, the sum stream's mutex).
 */
#include "config.h"

#include "ramp.h"

void bm_ramp_init(struct bm_ramp *r, int n, int min, int max, unsigned flags)
{
	*r = (struct bm_ramp){ .n = n, .min = min < n ? (min > 1 ? min : 1) : n,
			       .max = max > n ? max : n, .flags = flags };
}

/* More requests in flight pay only when answers are late for the
 * network's sake.  On loopback each one more only queues behind the
 * others, at the server and for the CPU: every answer comes later, which
 * seems to call for still more (a mapping read of 64 KiB blocks once
 * went 16, 22, 41, 64 and stayed), and a moment of load elsewhere looks
 * like latency.  Hence the window, the rate's say over a growth (for a
 * reader as fast as the bytes come, only over one that lengthened the
 * round trips: BM_RAMP_STEADY_STANDS), and the halving (fewer in flight
 * move as much for less CPU). */
int bm_ramp_epoch(struct bm_ramp *r, double rate, double need)
{
	if (r->epochs++ == 0)
		r->need = r->need_max = need;
	r->need = need < r->need ? need : r->need;
	r->need_max = need > r->need_max ? need : r->need_max;
	r->best = rate > r->best ? rate : r->best;
	if (r->epochs < BM_RAMP_TRIES)
		return r->n; /* an epoch alone may be a moment of load */
	r->epochs = 0;
	/* The last growth is judged by this window alone: one that stood
	 * is not undone later by round trips that a load elsewhere made
	 * longer (under load that froze sum's ds64k at 16-32 in flight at
	 * 2 ms).  With BM_RAMP_STEADY_STANDS, round trips as long as before
	 * it are the network's, not a queue it made: it stands whatever the
	 * rate did (a busy machine moves no more, yet the round trips still
	 * call for as many).  Longer ones, or any without the flag, are
	 * judged by the rate. */
	bool judged = r->prev > 0;
	bool queued = !(r->flags & BM_RAMP_STEADY_STANDS) || r->need > BM_RAMP_GAIN * r->prev_need;
	if (judged && queued && r->best < BM_RAMP_GAIN * r->prev_rate) {
		/* It moved too little more: it is the last, and undone if it
		 * moved less. */
		if (r->best < r->prev_rate)
			r->n = r->prev;
		r->prev = 0;
		r->full = true;
		r->best = 0;
		return r->n;
	}
	r->prev = 0;
	if (!r->full && r->need > (double)r->n && r->n < r->max) {
		int to = r->need < (double)r->max ? (int)r->need : r->max;
		r->prev = r->n;
		r->prev_rate = r->best;
		r->prev_need = r->need;
		r->n = to < 2 * r->n ? to : 2 * r->n;
		r->best = 0;
	} else if (2 * r->need_max <= (double)r->n && r->n > r->min) {
		/* Half as many in flight move as much (Little's law) for less
		 * CPU, and wait less: halved, down to min.  Also after the
		 * last growth: a dataset's read-ahead lives as long as its
		 * handle, and answers late once may be fast later. */
		r->n = r->n / 2 > r->min ? r->n / 2 : r->min;
		r->best = 0;
	}
	return r->n;
}
