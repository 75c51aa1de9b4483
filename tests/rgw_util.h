/* tests/rgw_util.h — the Ceph RADOS Gateway (S3) the tests share: one
 * instance per `make check`, started by tests/rgw.sh on the first call and
 * reused by every later one (the script's "shared" mode: a lock and a state
 * file in the build tree; the instance stops itself once `make` exits), and
 * S3 requests signed by libcurl (SigV4) to set it up and look at it behind
 * the library's back.  Prefix tr_.
 */
#ifndef BLKMAP_TESTS_RGW_UTIL_H
#define BLKMAP_TESTS_RGW_UTIL_H

#include <stddef.h>

struct tr_rgw {
	char endpoint[128];        /* http://127.0.0.1:PORT */
	char access_key[64];
	char secret_key[128];
};

/* The shared instance: 0, or 77 when radosgw is not installed (WHY says
 * so: the test skips), or -1 when it did not start (WHY says why: the test
 * fails).  Takes about 3 s (more under load) the first time in a `make
 * check`. */
int tr_rgw_get(struct tr_rgw *r, char *why, size_t n);
/* tr_rgw_get for a test program's group setup: 0; where radosgw is not
 * installed, "SKIP: why" on stdout and the program exits 77 (skipped);
 * -1 with "RADOS Gateway: why" on stderr when it did not start. */
int tr_rgw_get_or_skip(struct tr_rgw *r);

/* An S3 response: status, headers (the last response's block) and body,
 * NUL-terminated; status -1 when the request failed (err says why). */
struct tr_resp {
	long status;
	char *headers;
	char *body;
	size_t len;
	char err[4400];
};

/* METHOD on PATH ("/bucket/key?query", already canonical: the query sorted
 * and encoded) with HEADERS (NULL-terminated "Name: value" lines, or NULL)
 * and BODY (PUT), signed with the instance's keys (SECRET NULL) or with
 * ACCESS:SECRET given, or unsigned (ACCESS NULL and SECRET ""). */
long tr_s3(const struct tr_rgw *r, const char *method, const char *path,
	   const char *const *headers, const void *body, size_t len,
	   struct tr_resp *resp);
long tr_s3_as(const struct tr_rgw *r, const char *access, const char *secret,
	      const char *method, const char *path, const char *const *headers,
	      const void *body, size_t len, struct tr_resp *resp);
void tr_resp_free(struct tr_resp *resp);
/* Value of header NAME (case-insensitive) into OUT, trimmed; NULL if absent. */
const char *tr_header(const struct tr_resp *resp, const char *name, char *out, size_t n);

/* A new bucket named after PREFIX, this process and a counter (lowercase,
 * valid as an S3 bucket name) into OUT; asserts (cmocka) it was created. */
const char *tr_bucket(const struct tr_rgw *r, const char *prefix, char *out, size_t n);

/* Sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 and
 * AWS_REGION for the library and the CLI to reach this instance, and
 * clears the other AWS_* variables a developer's environment may hold. */
void tr_rgw_setenv(const struct tr_rgw *r);

#endif
