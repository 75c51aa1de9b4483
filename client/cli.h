/* cli.h — what the files of the `blkmap` command share (cli.c holds them):
 * the messages and exit statuses every command uses.
 */
#ifndef BLKMAP_CLIENT_CLI_H
#define BLKMAP_CLIENT_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <blkmap/blkmap.h>

#define EXIT_USAGE 2
#define EXIT_CONFLICT 3

extern const char *prog;

/* One line "blkmap: WHAT: why" on stderr; the exit status for rc. */
int fail(const char *what, int rc, bm_dataset *ds);
/* "blkmap CMD: MSG (see ...)"; returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *msg);
bool is_help(const char *a);
int parse_u64(const char *s, uint64_t *out);
int load_options(struct bm_options *o);
/* "--at GEN|TAG" into o (generation or tag): 0, or EXIT_USAGE said. */
int parse_at(const char *cmd, const char *arg, struct bm_options *o);
void print_json_string(const char *s);

/* cli_ramp.c: the GETs a streamed sum keeps in flight.  At the end of
 * each of the caller's epochs (a number of reads) ramp_epoch is told the
 * rate bytes were moved at and how many requests in flight the epoch's
 * round trips call for (need: the bandwidth-delay product); it answers
 * how many to keep in flight now.  Every RAMP_TRIES epochs (a window) it
 * grows, doubling, up to the least need of the window and to max, when
 * that is more than now, and while each growth raised the best rate of a
 * window by RAMP_GAIN or left the least need as it was (within RAMP_GAIN:
 * the round trips are the network's); after one that did neither it
 * never changes again, and undoes it if the best rate fell.  When the most need of a window is
 * half of now or less, it halves, down to min. */
#define RAMP_TRIES 3
#define RAMP_GAIN 1.25

struct ramp {
	int n, min, max;           /* in flight now; the bounds */
	int prev;                  /* in flight before the last growth (0: none) */
	double prev_rate;          /* the best rate of a window at prev */
	double prev_need;          /* the least need of that window */
	double best;               /* the best rate at n so far */
	double need, need_max;     /* the least and most need of this window */
	int epochs;                /* epochs of this window so far */
	bool full;                 /* growth is over */
};

void ramp_init(struct ramp *r, int n, int min, int max);
int ramp_epoch(struct ramp *r, double rate, double need);

/* cli_history.c */
int cmd_gc(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_tags(int argc, char **argv);
int cmd_diff(int argc, char **argv);

#endif /* BLKMAP_CLIENT_CLI_H */
