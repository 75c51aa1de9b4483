/* tests/gcov-exit.h — forced into every file of a coverage build
 * (configure --enable-coverage adds -include): _exit() first writes the
 * gcov counts, so that forked children (crash checks, test helpers) that
 * leave with _exit keep theirs; exit() already writes them.
 * Locking: none. */
#ifndef BLKMAP_GCOV_EXIT_H
#define BLKMAP_GCOV_EXIT_H

/* Before any system header: the feature macros config.h sets must be seen
 * by the first one. */
#include "config.h"
#include <unistd.h>

void __gcov_dump(void);

static inline __attribute__((noreturn, unused)) void blkmap_gcov_exit(int status)
{
	__gcov_dump();
	_exit(status);
}
#define _exit(status) blkmap_gcov_exit(status)

#endif
