/* tests/client_util.h — what the libblkmap integration tests and the client
 * benchmark share: a blkmap-server per test (through test_server_util's
 * ts_*), test options with fast retries, datasets made and read back with
 * the library, running the `blkmap` CLI, child processes that may die of a
 * signal, nginx with WebDAV, and a tiny canned HTTP responder for answers no
 * real server gives.  Prefix tc_.
 */
#ifndef BLKMAP_TESTS_CLIENT_UTIL_H
#define BLKMAP_TESTS_CLIENT_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <blkmap/blkmap.h>

#include "test_server_util.h"

/* ---- blkmap-server ------------------------------------------------------- */

/* Starts blkmap-server --memory --admin plus ARGS (NULL-terminated, may be
 * NULL).  Asserts (cmocka) that it started. */
void tc_server_start(struct ts_server *s, const char *const *args);
/* Stops it; asserts a clean exit. */
void tc_server_stop(struct ts_server *s);
/* cmocka group setup/teardown: *state is a struct ts_server started with
 * tc_server_start(s, NULL). */
int tc_group_setup(void **state);
int tc_group_teardown(void **state);
/* URL of PATH ("/ds") on S into a static-free buffer OUT. */
const char *tc_url(char *out, size_t n, const struct ts_server *s, const char *path);
/* A counter of GET /_admin/stats: tc_stat(s, "requests", "GET"), or with
 * inner NULL a top-level number ("requests_in_flight"). */
long tc_server_stat(const struct ts_server *s, const char *outer, const char *inner);

/* ---- the library ------------------------------------------------------------ */

/* Defaults for tests: fast retries (1 ms base, 10 tries), 64 MiB cache. */
void tc_options(struct bm_options *o);
/* Creates (or replaces the content of) the dataset at URL with LEN bytes of
 * DATA in blocks of BLKSIZE through bm_write + bm_commit; returns the new
 * generation (asserts success). */
uint64_t tc_put(const char *url, size_t blksize, const void *data, size_t len);
/* Opens URL with tc_options (plus generation GEN if not 0); asserts. */
bm_dataset *tc_open(const char *url, uint64_t gen);
/* Copies the whole dataset through a mapping into a malloc'd buffer. */
unsigned char *tc_read_mapped(bm_dataset *ds);
/* True if the dataset at URL (latest, or generation GEN) reads as LEN
 * bytes equal to DATA through a fresh handle. */
int tc_dataset_equals(const char *url, uint64_t gen, const void *data, size_t len);

/* ---- processes ----------------------------------------------------------------- */

/* Runs FN(ARG) in a child process (exit status: what FN returns) with its
 * stderr captured into *ERRP (malloc'd, may be NULL), and SIGBUS and
 * SIGSEGV back to their default action.  Returns the wait status.  FN must
 * not use cmocka's assertions (a failure would go on running the tests in
 * the child). */
int tc_child(int (*fn)(void *), void *arg, char **errp);
/* Runs `blkmap ARGV...` (ARGV NULL-terminated, without the program name);
 * its stdout and stderr into *OUTP and *ERRP (malloc'd; either may be
 * NULL).  Returns the exit status, or 128 + signal. */
int tc_cli(char **outp, char **errp, const char *const *argv);
/* Number of lines in S (a final line without '\n' counts). */
int tc_lines(const char *s);
/* Writes LEN bytes to a new temporary file; returns its path (malloc'd). */
char *tc_tmpfile(const void *data, size_t len);

/* ---- nginx with WebDAV ----------------------------------------------------------- */

struct tc_nginx {
	pid_t pid;
	char *dir;                 /* config, logs and the document root */
	char url[128];             /* http://127.0.0.1:PORT */
};

#define TC_NGINX_PATH "/usr/sbin/nginx"
/* 0 when nginx answers, -1 when it could not be started. */
int tc_nginx_start(struct tc_nginx *n);
void tc_nginx_stop(struct tc_nginx *n);

/* ---- canned HTTP responder ----------------------------------------------------------- */

/* Answers each request with the first rule whose method and path match
 * (else 404), then closes the connection.  RESPONSE is a whole HTTP
 * response, head and body.  A request with If-Match gets 412 unless it
 * names the response's ETag, strongly (a weak W/ ETag never matches). */
struct tc_rule {
	const char *method;
	const char *path;
	const char *response;
	size_t len;                /* 0: strlen(response) */
};

/* The thread reads only a heap copy of the rules (state): a test that
 * fails before tc_canned_stop (cmocka leaves the test function) leaves it
 * serving from memory that stays valid, not from a dead stack frame. */
struct tc_canned {
	int fd;
	pthread_t thread;
	char url[64];
	struct tc_canned_state *state;
};

void tc_canned_start(struct tc_canned *c, const struct tc_rule *rules, size_t nrules);
void tc_canned_stop(struct tc_canned *c);

#endif
