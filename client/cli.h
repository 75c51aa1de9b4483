/* cli.h — what the files of the `blkmap` command share (cli.c holds them):
 * the messages and exit statuses every command uses.
 */
#ifndef BLKMAP_CLIENT_CLI_H
#define BLKMAP_CLIENT_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <blkmap/blkmap.h>

#include "ramp.h"

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

/* cli_history.c */
int cmd_gc(int argc, char **argv);
int cmd_tag(int argc, char **argv);
int cmd_tags(int argc, char **argv);
int cmd_diff(int argc, char **argv);

#endif /* BLKMAP_CLIENT_CLI_H */
