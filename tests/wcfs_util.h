/* tests/wcfs_util.h — what the blkmap-wcfs tests share: mount a real
 * mirror (blkmap-wcfs -f in a child process) on a temporary mountpoint and
 * wait until it answers, unmount it (fusermount3 -u, -z as a last resort)
 * and get its exit status, run a program (blkmap-wcfs) for its output and
 * exit status, publish datasets through libblkmap, read files.
 * Prefix wt_. */
#ifndef BLKMAP_TEST_WCFS_UTIL_H
#define BLKMAP_TEST_WCFS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct wt_mirror {
	pid_t pid;
	char dir[256];   /* temporary directory: mnt/ and mirror.log */
	char mnt[300];
	char log[300];   /* the mirror's stderr */
	bool mounted;
	dev_t dev;       /* the mount's device: names its FUSE connection */
};

/* How to start a mirror (every field may be 0/NULL). */
struct wt_opts {
	const char *const *env;   /* "NAME=value"s added to its environment */
	const char *const *args;  /* options before SERVER_URL, e.g. "-s" */
	long nofile;              /* > 0: its RLIMIT_NOFILE */
};

/* Why mounting cannot be tested here ("" when it can): set by wt_mount. */
extern char wt_skip_reason[256];

/* Mount a mirror of URL: ENV (NULL-terminated "NAME=value", or NULL) is
 * added to its environment.  0 when .wcfs/url reads back the URL; 1 when
 * FUSE is not usable here (wt_skip_reason says why); -1 on failure. */
int wt_mount(struct wt_mirror *m, const char *url, const char *const *env);
/* The same with more settings (struct wt_opts). */
int wt_mount_with(struct wt_mirror *m, const char *url, const struct wt_opts *o);
/* Aborts the mirror's FUSE connection (/sys/fs/fuse/connections/N/abort):
 * every request waiting on it fails, so a hung mirror frees its callers.
 * 0, or -1 when fusectl is not there.  For watchdogs; unmount after. */
int wt_abort(struct wt_mirror *m);
/* fusermount3 -u, then wait for the mirror: its exit status (128 + signal
 * if killed).  If it does not go in time: fusermount3 -u -z, SIGKILL, -1.
 * Removes the temporary directory. */
int wt_unmount(struct wt_mirror *m);
/* Is PATH a mountpoint (listed in /proc/self/mounts)? */
bool wt_is_mounted(const char *path);
/* Run ARGV (NULL-terminated) and wait: exit status, or -1. */
int wt_run(const char *const *argv);
/* Run ARGV (NULL-terminated; ARGV[0] names a program of the build
 * directory, as wt_prog) with ENV ("NAME=value"s, or NULL) added to its
 * environment.  Its output (stdout and stderr together, NUL-terminated,
 * at most 65535 bytes, malloc'd) and its wait status in *STATUS: -1 when
 * it did not end within 30 s (then it is stopped: SIGTERM, SIGKILL 10 s
 * later).  NULL when the pipe or the child cannot be made. */
char *wt_output(const char *const *argv, const char *const *env, int *status);
/* Sleep MS milliseconds; the monotonic clock in milliseconds. */
void wt_sleep_ms(long ms);
int64_t wt_now_ms(void);
/* The path of a program in the build directory. */
const char *wt_prog(const char *name);

/* Publish LEN bytes of DATA as the next generation of the dataset at URL
 * (created with block size BLKSIZE).  The generation, or 0 on failure. */
uint64_t wt_publish(const char *url, const void *data, size_t len, size_t blksize);
/* Publish a dataset of SIZE bytes that holds only the NPIECES given pieces
 * (offset, length, byte value); the rest are holes. */
struct wt_piece { uint64_t off; size_t len; unsigned char byte; };
uint64_t wt_publish_sparse(const char *url, uint64_t size, size_t blksize,
			   const struct wt_piece *pieces, size_t npieces);
/* The whole content of PATH (malloc'd) and its length, or NULL with
 * errno set by the failing call. */
unsigned char *wt_read_file(const char *path, size_t *len);

#endif
