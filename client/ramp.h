/* ramp.h — how many requests a streamed reader keeps in flight
 * (ramp.c): a pure decision over what its caller measures.  Two callers,
 * each serialising its calls: a dataset's read-ahead (readahead.c's
 * note_load, under ds->ra.mu: block GETs of a mapping read) and the
 * streamed `blkmap sum` (cli.c's sum_judge, under its stream's mutex).
 *
 * At the end of each of the caller's epochs (a number of reads)
 * bm_ramp_epoch is told the rate the epoch moved bytes at and how many
 * requests in flight its fastest read calls for (need: the
 * bandwidth-delay product at the caller's target rate); it answers how
 * many to keep in flight now.  Every BM_RAMP_TRIES epochs (a window) it
 * grows, doubling, up to the least need of the window and to max, when
 * that is more than now.  A growth is judged by the window after it: it
 * stands when the best rate of that window rose by BM_RAMP_GAIN over the
 * window before it, or, with BM_RAMP_STEADY_STANDS, when the least need
 * stayed as it was (within BM_RAMP_GAIN: the round trips are the
 * network's); otherwise it is the last (full), and undone if the best
 * rate fell.  When the most need of a window is half of now or less, it
 * halves, down to min, full or not.
 */
#ifndef BLKMAP_CLIENT_RAMP_H
#define BLKMAP_CLIENT_RAMP_H

#include <stdbool.h>

#define BM_RAMP_TRIES 3
#define BM_RAMP_GAIN 1.25

/* bm_ramp_init's flags.  BM_RAMP_STEADY_STANDS: a growth after which the
 * round trips stay as long stands whatever the rate did.  For a reader
 * that consumes as fast as the bytes come (sum's, hashing in C: a flat
 * rate there is a busy machine's, and under load the rate alone froze
 * its ds64k at 16-32 in flight at 2 ms).  Not for read-ahead: the rate
 * of a mapping's reader is its own (a Python loop hashing), more in
 * flight than it consumes only cost CPU (with it, a mapping read of
 * 64 KiB blocks at 2 ms stayed at 64 in flight instead of going back to
 * 32, and took 8% more time and CPU). */
#define BM_RAMP_STEADY_STANDS 1u

struct bm_ramp {
	int n, min, max;           /* in flight now; the bounds */
	int prev;                  /* in flight before the growth being judged (0: none) */
	double prev_rate;          /* the best rate of a window at prev */
	double prev_need;          /* the least need of that window */
	double best;               /* the best rate at n so far */
	double need, need_max;     /* the least and most need of this window */
	int epochs;                /* epochs of this window so far */
	bool full;                 /* growth is over (halving is not) */
	unsigned flags;            /* BM_RAMP_* */
};

/* n in flight to start with, never fewer than min (at least 1, at most
 * n) nor more than max (at least n); flags: BM_RAMP_*. */
void bm_ramp_init(struct bm_ramp *r, int n, int min, int max, unsigned flags);
/* The end of an epoch that moved rate bytes a second and whose fastest
 * read calls for need in flight: how many to keep in flight now (r->n). */
int bm_ramp_epoch(struct bm_ramp *r, double rate, double need);

#endif /* BLKMAP_CLIENT_RAMP_H */
