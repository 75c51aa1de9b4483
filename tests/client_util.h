/* tests/client_util.h — what the libblkmap integration tests and the client
 * benchmark share: a blkmap-server per test (through test_server_util's
 * ts_*), test options with fast retries, datasets made and read back with
 * the library, running the `blkmap` CLI, child processes that may die of a
 * signal, servers of every kind (blkmap-server, nginx and Apache with
 * WebDAV) for the parameterised suites, and a tiny canned HTTP responder
 * for answers no real server gives.  Prefix tc_.
 */
#ifndef BLKMAP_TESTS_CLIENT_UTIL_H
#define BLKMAP_TESTS_CLIENT_UTIL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

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
/* Waits until blkmap-server has closed every connection its clients closed
 * (bounded, 10 s: then the test fails): it has then read and counted every
 * request sent on them, such as a flat probe stopped by the manifest's
 * answer (docs/client.md, "Opening"), which it may read at any time after
 * the open, or a GET a child killed in a read left.  Before a test counts
 * requests exactly.  Compares the server's open connections with the
 * sockets connected to its port (/proc/net/tcp). */
void tc_server_settle(const struct ts_server *s);
/* The server's bytes_out once it stops moving (two readings 20 ms apart
 * agree; at most 5 s): blkmap-server counts an answer's bytes once its
 * write returned, which may be after the client has them and went on. */
long tc_server_bytes_out(const struct ts_server *s);

/* ---- the library ------------------------------------------------------------ */

/* Defaults for tests: fast retries (1 ms base, 10 tries), 64 MiB cache. */
void tc_options(struct bm_options *o);

/* The helpers below that open a dataset (tc_put, tc_open, tc_write_commit,
 * tc_dataset_equals, tc_map_open, tc_block_key(s),
 * tc_assert_manifests_refused) open it as a prefix, its URL with a '/' at
 * the end (tc_prefix): the open then sends the manifest's GET alone, not
 * the Range GET of the URL itself beside it (the flat probe, docs/client.md
 * "Opening").  A probe that the manifest's answer stopped may be read and
 * counted by blkmap-server at any time after the open, even among the GETs
 * a test counts after its set-up, or the next test's (docs/testing.md).
 * Tests of plain objects and of the probe open with tc_open_as_given. */
#define TC_URL_MAX 1024
/* URL with a '/' at its end (kept if there) into OUT (asserts it fits). */
const char *tc_prefix(char *out, size_t n, const char *url);
/* Creates (or replaces the content of) the dataset at URL with LEN bytes of
 * DATA in blocks of BLKSIZE through bm_write + bm_commit; returns the new
 * generation (asserts success). */
uint64_t tc_put(const char *url, size_t blksize, const void *data, size_t len);
/* Opens the dataset at URL (as a prefix) with tc_options, plus generation
 * GEN if not 0; asserts. */
bm_dataset *tc_open(const char *url, uint64_t gen);
/* Opens URL as given (a plain object, or a dataset with the probe of its
 * name), as tc_open does otherwise. */
bm_dataset *tc_open_as_given(const char *url, uint64_t gen);
/* Another writer's commit: opens URL (tc_open), writes LEN bytes of DATA
 * at OFF, commits and closes (asserted); returns the new generation. */
uint64_t tc_write_commit(const char *url, uint64_t off, const void *data, size_t len);
/* Copies the whole dataset through a mapping into a malloc'd buffer. */
unsigned char *tc_read_mapped(bm_dataset *ds);
/* True if the dataset at URL (latest, or generation GEN) reads as LEN
 * bytes equal to DATA through a fresh handle. */
int tc_dataset_equals(const char *url, uint64_t gen, const void *data, size_t len);
/* The same for URL opened as given (a plain object): its bytes now. */
int tc_object_equals(const char *url, const void *data, size_t len);

/* A dataset a test opens and maps whole: set url, put it (tc_map_put),
 * change o if the test needs, then tc_map_open. */
struct tc_mapped {
	char url[512];
	struct bm_options o;       /* what tc_map_open opens it with */
	bm_dataset *ds;
	bm_mapping *m;
	unsigned char *mem;        /* the mapping's bytes */
};
/* Stores LEN bytes of DATA in blocks of BLKSIZE at v->url (tc_put) and
 * sets v->o to the test options (tc_options). */
void tc_map_put(struct tc_mapped *v, size_t blksize, const void *data, size_t len);
/* Opens v->url (as a prefix) with v->o and maps it whole (asserted). */
void tc_map_open(struct tc_mapped *v);
/* Unmaps and closes it. */
void tc_map_close(struct tc_mapped *v);

/* "blocks/<sum>" of block BLK of the dataset at URL (latest), into OUT:
 * the object holding it, in either format version (asserts it is stored). */
const char *tc_block_key(const char *url, uint64_t blk, char *out, size_t n);
/* The object keys ("blocks/<sum>") of the stored blocks of the dataset at
 * URL (latest), in block order, as a JSON array: what benchmarks GET
 * with curl, in either format version. */
json_t *tc_block_keys(const char *url);
/* The text of manifest MAN (a JSON object) as a writer would store it:
 * compact, and for a version 2 or 3 one with its "manifest_sum" made again
 * over the new bytes (docs/FORMAT.md).  malloc'd; *LENP its length. */
char *tc_manifest_text(json_t *man, size_t *lenp);
/* A manifest libblkmap must refuse: its text, and a part of the message
 * that says why. */
struct tc_bad_manifest {
	const char *json;
	const char *says;
};
/* Stores each of the N manifests as PREFIX<i>/manifest.json on S and opens
 * that dataset: the test fails unless the open is BM_EFORMAT with a message
 * naming its URL and the case's reason, and gives no handle. */
void tc_assert_manifests_refused(const struct ts_server *s, const char *prefix,
				 const struct tc_bad_manifest *bad, size_t n);

/* ---- processes ----------------------------------------------------------------- */

/* Every wait for a child process of tc_child, tc_cli and the servers of
 * every kind gives up after this many ms (default 120000, far above what
 * any child takes on a loaded machine): the child is killed with SIGKILL
 * and a line on stderr names the hang. */
extern long tc_child_limit_ms;

/* Runs FN(ARG) in a child process (exit status: what FN returns) with its
 * stderr captured into *ERRP (malloc'd, may be NULL), and SIGBUS and
 * SIGSEGV back to their default action.  Returns the wait status (a child
 * that hung: killed by SIGKILL; -1 if even that did not end it).  FN must
 * not use cmocka's assertions (a failure would go on running the tests in
 * the child). */
int tc_child(int (*fn)(void *), void *arg, char **errp);

/* For a child of tc_child: from now on every new thread of this process
 * fails (clone3 as if absent, a clone of a thread EAGAIN: pthread_create
 * fails), and handles get the SIGSEGV fault engine (the uffd one starts
 * handler threads).  0, or -1 with a line on stderr. */
int tc_child_refuse_threads(void);

/* For a child of tc_child (no cmocka asserts): the library's default
 * options with retries 1 ms apart, into *O; -1 if bm_options_init failed. */
int tc_child_options(struct bm_options *o);
/* For a child: opens URL with O and maps it whole (*ADDRP: its address).
 * The handle, or NULL if the open or the map failed (bm_last_error(NULL)
 * says why); the child exits without closing either. */
bm_dataset *tc_child_map(const char *url, const struct bm_options *o, void **addrp);

/* A byte to read through a mapping in a child (tc_touch_child). */
struct tc_touch {
	const char *url;
	uint64_t off;
};

/* For tc_child (no cmocka asserts): opens the dataset at t->url as a
 * prefix (retries 2, 1 ms apart), maps it whole and reads the byte at
 * t->off.  1: options, 2: open or map failed; 0 when the byte was read (a
 * block that cannot be loaded kills it with SIGBUS instead). */
int tc_touch_child(void *t);
/* Runs `blkmap ARGV...` (ARGV NULL-terminated, without the program name);
 * its stdout and stderr into *OUTP and *ERRP (malloc'd; either may be
 * NULL).  Returns the exit status, or 128 + signal (128 + SIGKILL for a
 * command that hung past tc_child_limit_ms), or -1. */
int tc_cli(char **outp, char **errp, const char *const *argv);
/* Number of lines in S (a final line without '\n' counts). */
int tc_lines(const char *s);
/* Writes LEN bytes to a new temporary file; returns its path (malloc'd). */
char *tc_tmpfile(const void *data, size_t len);

/* ---- servers of every kind: the parameterised suites -------------------------------- */

/* A suite (test_client_roundtrip.c, test_client_flat.c) is one source built
 * into one program per kind of server (client.mk: -DTC_KIND=\"nginx\");
 * its tests take a struct tc_store from *state and ask it what the server
 * can do.  A kind is a descriptor: adding a server (RGW) is one more entry
 * in tc_kinds and one more program per suite. */

enum {
	TC_CAN_SWAP = 1u << 0,     /* a commit that lost the race is a conflict
				      (conditional PUT or locks honoured) */
	TC_CAN_COUNT = 1u << 1,    /* requests are counted (tc_store_count) */
	TC_CAN_FAULTS = 1u << 2,   /* faults injected by /_admin/faults */
	TC_CAN_LIST = 1u << 3,     /* the store lists keys (bm_store_list) */
};

struct tc_store;
struct tr_rgw;

struct tc_kind {
	const char *name;          /* "blkmap-server", "nginx", "apache" */
	/* Starts one on loopback (st->srv.url, st->docroot and st->dir set):
	 * 0, or -1 with why, the reason the tests skip, set. */
	int (*start)(struct tc_store *st, char *why, size_t n);
	void (*stop)(struct tc_store *st);
	unsigned can;              /* TC_CAN_* */
	/* "NAME=value" strings put into the environment once it runs (what
	 * the client needs, such as credentials); NULL-terminated, or NULL. */
	const char *const *env;
};

struct tc_store {
	const struct tc_kind *kind;
	struct ts_server srv;      /* srv.url is the base URL: ts_request works
				      on every kind */
	char docroot[512];         /* a file DOCROOT/x is served at URL/x; "" if none */
	char *dir;                 /* config and logs (nginx, apache) */
	pid_t pid;
	bool running;
	char skip_why[256];        /* why it did not start */
	struct tr_rgw *rgw;        /* the RADOS Gateway (kind "rgw"), else NULL */
};

#define TC_NGINX_PATH "/usr/sbin/nginx"
#define TC_APACHE_PATH "/usr/sbin/apache2"
#define TC_APACHE_MODULES "/usr/lib/apache2/modules"

/* Every kind; the last entry's name is NULL. */
extern const struct tc_kind tc_kinds[];
const struct tc_kind *tc_kind_named(const char *name);
/* Starts a server of KIND: 0, or -1 with st->skip_why set. */
int tc_store_start(struct tc_store *st, const struct tc_kind *kind);
void tc_store_stop(struct tc_store *st);
/* Runs TESTS as one cmocka group against a server of KIND (the environment
 * variable BLKMAP_TEST_SERVER, if set, names another): *state is the
 * struct tc_store.  Exits 77 (SKIP) with the reason when the server cannot
 * start, e.g. is not installed.  BLKMAP_TEST_FILTER, if set, runs only the
 * cases whose names match it (cmocka's wildcards * and ?). */
int tc_run_suite(const char *kind, const struct CMUnitTest *tests, size_t n);
/* The running store of a test's state (skips the test when none). */
struct tc_store *tc_store_of(void **state);
bool tc_store_can(const struct tc_store *st, unsigned can);
/* Skips the test, printing WHY, unless the server can do all of CAN. */
void tc_require(const struct tc_store *st, unsigned can, const char *why);
/* URL of PATH ("/ds") on ST into OUT. */
const char *tc_store_url(char *out, size_t n, const struct tc_store *st, const char *path);
/* tc_server_settle on a server that counts requests (TC_CAN_COUNT);
 * nothing on the others. */
void tc_store_settle(const struct tc_store *st);
/* Requests of METHOD the server has answered so far; -1 if it does not count. */
long tc_store_count(const struct tc_store *st, const char *method);
/* METHOD on PATH of the store, bypassing the library (signed for S3): what
 * ts_request does on an HTTP server. */
CURLcode tc_store_request(const struct tc_store *st, const char *method, const char *path,
			  const void *body, size_t len, struct ts_resp *r);
/* GET PATH and parse the body as JSON; NULL unless 200 and JSON. */
json_t *tc_store_get_json(const struct tc_store *st, const char *path);

/* The manifest of the dataset under path in st (asserted to be there), and
 * a manifest stored there in its canonical text (tc_manifest_text). */
json_t *tc_store_manifest(const struct tc_store *st, const char *path);
void tc_store_put_manifest(const struct tc_store *st, const char *path, json_t *man);

/* A version 1 dataset as blkmap wrote it before format 2, made here by
 * hand (not with the library): NBLK blocks of BLKSIZE bytes of DATA under
 * PATH/blocks/<sum>, a v1 manifest at PATH/manifest.json and its kept copy
 * PATH/gen/1.json. */
void tc_store_put_v1(const struct tc_store *st, const char *path, size_t blksize,
		     const unsigned char *data, size_t nblk);

/* Fails the test unless msg is one line naming what (the message rules,
 * README). */
void tc_assert_one_line_naming(const char *msg, const char *what);
/* PUTs a plain object at PATH (making the collections a WebDAV server
 * needs); returns the PUT's status (S3 answers 200 for a new object too). */
long tc_store_put(const struct tc_store *st, const char *path, const void *data, size_t len);

/* Threads of this process now: two counts of /proc/self/task 5 ms apart
 * that agree (a thread just joined may still be listed for a moment).
 * Bounded: counts that keep changing for 10 s fail the test. */
int tc_nthreads(void);

/* ---- canned HTTP responder ----------------------------------------------------------- */

/* Answers each request with the first rule whose method and path match
 * (and its Range header, for a rule with range; else 404), then closes the
 * connection.  RESPONSE is a whole HTTP response, head and body.  A
 * request with If-Match gets 412 unless it names the response's ETag,
 * strongly (a weak W/ ETag never matches). */
struct tc_rule {
	const char *method;
	const char *path;
	const char *response;
	size_t len;                /* 0: strlen(response) */
	const char *range;         /* NULL: any; else the Range header's value
				      ("bytes=0-4095"), which must be there */
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
