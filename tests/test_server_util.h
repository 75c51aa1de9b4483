/* tests/test_server_util.h — what the blkmap-server tests share: start
 * the real blkmap-server on port 0 and read its URL, stop it and get its
 * exit status, make HTTP requests with libcurl, open raw sockets, make and
 * remove temporary directories, run a program's tests on the memory and
 * the disk store. Prefix ts_. */
#ifndef BLKMAP_TEST_SERVER_UTIL_H
#define BLKMAP_TEST_SERVER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <jansson.h>

struct ts_server {
	pid_t pid;
	char url[256];   /* http://127.0.0.1:PORT */
	char root[256];  /* --root DIR, or "" */
};

struct ts_resp {
	CURLcode rc;
	long status;
	char *body;
	size_t len;
	char *headers;   /* the final response's header block */
	size_t hlen;
};

/* Start blkmap-server with ARGS (NULL-terminated; "--listen 127.0.0.1:0"
 * is added) and wait for the line with its URL. 0 or -1. */
int ts_start(struct ts_server *s, const char *const *args);
/* Like ts_start with "--root S->root" (S->root must be set). */
int ts_start_disk(struct ts_server *s, const char *const *args);
/* SIGTERM, then wait: the exit status, or 128 + signal; -1 (with a
 * message, the server killed) if it is still running after 60 s. */
int ts_stop(struct ts_server *s);
/* Wait for the server to exit (no signal sent): as ts_stop. */
int ts_wait(struct ts_server *s);
/* Read one whole response (head + Content-Length body) from FD; the
 * malloc'd text, or NULL if the peer closed first or sent nothing for
 * 60 s (a hang, reported on stderr). */
char *ts_read_response(int fd);
/* The path of the blkmap-server binary under test. */
const char *ts_server_path(void);

/* A server for a cmocka group of tests: *state points to it. */
struct ts_fixture {
	struct ts_server srv;
	char *root;      /* temporary directory (disk store), or NULL */
};

/* Group setup: --memory, or --root <tmpdir>/store, plus ARGS. */
int ts_fixture_memory(void **state, const char *const *args);
int ts_fixture_disk(void **state, const char *const *args);
/* Group teardown: stop (exit status must be 0), remove the directory. */
int ts_fixture_stop(void **state);
/* Runs the N TESTS as two cmocka groups, "memory store" and "disk store",
 * set up by MEMORY and DISK (ts_fixture_memory and ts_fixture_disk with
 * the program's arguments), each torn down by ts_fixture_stop, between
 * curl_global_init and curl_global_cleanup: the failures of both. */
struct CMUnitTest;
int ts_run_on_both_stores(const struct CMUnitTest *tests, size_t n, int (*memory)(void **),
			  int (*disk)(void **));

/* One request. HANDLE may be NULL (a fresh connection) or a handle to
 * reuse (keep-alive). HEADERS is NULL-terminated or NULL. BODY with
 * METHOD "PUT" is uploaded with Content-Length LEN. */
CURLcode ts_request(CURL *handle, const struct ts_server *s,
		    const char *method, const char *path,
		    const char *const *headers, const void *body, size_t len,
		    struct ts_resp *r);
void ts_resp_free(struct ts_resp *r);
/* Value of header NAME of R into OUT, or NULL. */
const char *ts_header(const struct ts_resp *r, const char *name, char *out,
		      size_t n);
/* Shorthands: status of a PUT / GET / DELETE (GET fills R if given). */
long ts_put(const struct ts_server *s, const char *path, const void *body,
	    size_t len);
long ts_delete(const struct ts_server *s, const char *path);
/* GET PATH and parse the body as JSON; NULL unless 200 and JSON. */
json_t *ts_get_json(const struct ts_server *s, const char *path);
/* PUT a JSON text to /_admin/faults; returns the status. */
long ts_set_faults(const struct ts_server *s, const char *json);

/* Per-request timeout, ms; only so a broken server cannot hang a test. */
extern long ts_timeout_ms;

/* A TCP socket connected to S. */
int ts_connect(const struct ts_server *s);
/* Read from FD until the peer closes; returns the bytes read (malloc'd,
 * NUL-terminated) and their count in *N; NULL if the peer neither sent
 * nor closed for 60 s (a hang, reported on stderr). */
char *ts_read_all(int fd, size_t *n);
/* Sends the N bytes of REQ on a new connection and reads until the server
 * closes it (ts_read_all): the whole answer, or NULL when it could not be
 * sent or the server hung.  TS_ASK sends a string literal (NUL bytes in it
 * too). */
char *ts_ask(const struct ts_server *s, const void *req, size_t n);
#define TS_ASK(s, lit) ts_ask((s), (lit), sizeof(lit) - 1)

char *ts_mkdtemp(void);
void ts_rmtree(const char *path);
/* A buffer of N bytes of pattern SEED (malloc'd). */
unsigned char *ts_pattern(size_t n, unsigned seed);

#endif
