/* tests/test_client_bad.c — manifests and responses are untrusted input:
 * bad JSON, wrong types, absurd numbers, unknown versions, keys that escape
 * the dataset, block objects whose bytes fail their checksum or have the
 * wrong length, a 200 where a 206 was asked for, a wrong Content-Range.
 * Each is an error naming the URL and what was wrong; nothing crashes and
 * no wrong byte reaches a mapping (a fault gets SIGBUS, in a child).
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "client_util.h"

#define KiB ((size_t)1 << 10)
#define SUM "0123456789abcdef0123456789abcdef"

/* ---- bad manifests ------------------------------------------------------------ */

#define HEAD_OK "\"format\": \"blkmap-dataset\", \"checksum\": \"xxh128\", "

static const struct tc_bad_manifest bad_manifests[] = {
	{ "{\"format\": \"blkmap-dataset\", ", "not valid JSON" },
	{ "[1, 2, 3]", "not a JSON object" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": \"big\", \"size\": 1, \"generation\": 1, \"blocks\": []}",
	  "\"blksize\" is not an integer" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 1152921504606846976, \"generation\": 1, \"blocks\": []}",
	  "\"size\" = 1152921504606846976 is out of range" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 12288, \"size\": 1, \"generation\": 1, \"blocks\": []}",
	  "not a power of two" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": -5, \"generation\": 1, \"blocks\": []}",
	  "\"size\" = -5 is out of range" },
	{ "{" HEAD_OK "\"version\": 5, \"blksize\": 4096, \"size\": 1, \"generation\": 1, \"blocks\": []}",
	  "version 5 is not supported" },
	/* Version 2 carries its checksum: without one it is damaged (fetched
	 * again, then refused). */
	{ "{" HEAD_OK "\"version\": 2, \"blksize\": 4096, \"size\": 1, \"generation\": 1, \"root\": null}",
	  "version 2 without a valid \"manifest_sum\"" },
	{ "{\"format\": \"other\", \"version\": 1, \"checksum\": \"xxh128\", \"blksize\": 4096, \"size\": 1, \"generation\": 1, \"blocks\": []}",
	  "\"format\" is not" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": "
	  "[{\"index\": 0, \"key\": \"../../etc/passwd\", \"sum\": \"" SUM "\"}]}",
	  "not a safe relative key" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": "
	  "[{\"index\": 0, \"key\": \"blocks/a/../b\", \"sum\": \"" SUM "\"}]}",
	  "not a safe relative key" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": "
	  "[{\"index\": 5, \"key\": \"blocks/x\", \"sum\": \"" SUM "\"}]}",
	  "out of range" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": "
	  "[{\"index\": 1, \"key\": \"blocks/x\", \"sum\": \"" SUM "\"}, {\"index\": 0, \"key\": \"blocks/y\", \"sum\": \"" SUM "\"}]}",
	  "is not above the previous one" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": "
	  "[{\"index\": 0, \"key\": \"blocks/x\", \"sum\": \"XYZ\"}]}",
	  "\"sum\" is not 32 lowercase hex digits" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 0, \"blocks\": []}",
	  "\"generation\" = 0 is out of range" },
	{ "{" HEAD_OK "\"version\": 1, \"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": {}}",
	  "\"blocks\" is missing or not an array" },
};

static void each_bad_manifest_is_refused_with_a_message_naming_url_and_fault(void **state)
{
	struct ts_server *s = *state;

	tc_assert_manifests_refused(s, "/bad", bad_manifests,
				    sizeof(bad_manifests) / sizeof(bad_manifests[0]));
}

/* ---- bad block objects ---------------------------------------------------------- */

/* A 4-block dataset at PATH; returns its URL in url and the URL path of
 * block 1's object in key. */
static void make_dataset(struct ts_server *s, const char *path, char *url, size_t n, char *key, size_t kn)
{
	unsigned char *data = ts_pattern(4 * 4 * KiB, 31);
	char bkey[128];

	tc_url(url, n, s, path);
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	snprintf(key, kn, "%s/%s", path, tc_block_key(url, 1, bkey, sizeof(bkey)));
	free(data);
}

/* For children (no cmocka asserts): opens url with 3 fast retries and
 * maps all of it.  0, or 1 (options) or 2 (open or map, message on stderr). */
static int open_and_map(const char *url, void **addrp)
{
	struct bm_options o;

	if (tc_child_options(&o) < 0)
		return 1;
	o.retries = 3;
	o.blksize = 4 * KiB; /* a flat object's: byte 4106 is in block 1, not in
				the first block the open fetched */
	if (tc_child_map(url, &o, addrp) == NULL) {
		fprintf(stderr, "%s\n", bm_last_error(NULL));
		return 2;
	}
	return 0;
}

static int read_block_1(void *arg)
{
	void *addr;
	int rc = open_and_map(arg, &addr);

	if (rc)
		return rc;
	volatile char c = ((volatile char *)addr)[4 * KiB + 10];
	(void)c;
	return 0; /* not reached: SIGBUS */
}

/* The child dies of SIGBUS and its stderr holds each of the texts. */
static void assert_read_gets_sigbus(const char *url, const char *text1, const char *text2)
{
	char *err;
	int status = tc_child(read_block_1, (void *)url, &err);

	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || !strstr(err, text1) || !strstr(err, text2))
		fail_msg("status %#x, stderr \"%s\"; expected SIGBUS and \"%s\", \"%s\"", status, err, text1, text2);
	free(err);
}

/* The docs promise one line on stderr naming the URL and the block (not
 * one from libblkmap, one from virtmem and one from the program). */
static void an_unloadable_block_read_through_a_mapping_gets_sigbus_and_one_line_naming_url_and_block(void **state)
{
	struct ts_server *s = *state;
	char url[512], key[512], *err;

	make_dataset(s, "/bad/gone", url, sizeof(url), key, sizeof(key));
	assert_int_equal(ts_delete(s, key), 204);
	int status = tc_child(read_block_1, url, &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || tc_lines(err) != 1 ||
	    !strstr(err, url) || !strstr(err, "block 1") || !strstr(err, "404"))
		fail_msg("status %#x, stderr \"%s\"; expected SIGBUS and one line naming %s, block 1, 404",
			 status, err, url);
	free(err);
}

static void a_block_whose_bytes_fail_their_checksum_never_reaches_memory(void **state)
{
	struct ts_server *s = *state;
	char url[512], key[512], keyurl[512];
	unsigned char *other = ts_pattern(4 * KiB, 99);
	struct bm_stats st;

	make_dataset(s, "/badsum", url, sizeof(url), key, sizeof(key));
	assert_int_equal(ts_put(s, key, other, 4 * KiB), 204);
	tc_url(keyurl, sizeof(keyurl), s, key);
	assert_read_gets_sigbus(url, keyurl, "checksum mismatch");

	/* bm_write of part of the block fetches it to merge: BM_ECHECKSUM,
	 * after its retries. */
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_write(ds, 4 * KiB + 10, "x", 1), BM_ECHECKSUM);
	assert_non_null(strstr(bm_last_error(ds), keyurl));
	assert_non_null(strstr(bm_last_error(ds), "checksum mismatch"));
	bm_stats(ds, &st);
	assert_int_equal(st.retries, 10);
	assert_int_equal(st.fetched_blocks, 0);
	bm_close(ds);
	free(other);
}

static void a_block_object_longer_or_shorter_than_its_block_is_an_error(void **state)
{
	struct ts_server *s = *state;
	char url[512], key[512], keyurl[512];
	unsigned char *big = ts_pattern(4 * KiB + 1, 98);

	make_dataset(s, "/badlen", url, sizeof(url), key, sizeof(key));
	tc_url(keyurl, sizeof(keyurl), s, key);
	assert_int_equal(ts_put(s, key, big, 4 * KiB + 1), 204);
	assert_read_gets_sigbus(url, keyurl, "longer than 4096 bytes");
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_write(ds, 4 * KiB + 10, "x", 1), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(ds), keyurl));
	bm_close(ds);

	assert_int_equal(ts_put(s, key, big, 100), 204);
	assert_read_gets_sigbus(url, keyurl, "short body: 100 of 4096 bytes");
	free(big);
}

static void a_cut_object_under_a_blocks_key_is_replaced_by_the_commit(void **state)
{
	struct ts_server *s = *state;
	char url[512], surl[512], key[512];
	unsigned char *data = ts_pattern(4 * 4 * KiB, 41), *x = ts_pattern(4 * KiB, 42);

	/* The key X's bytes get: from a scratch dataset. */
	tc_url(surl, sizeof(surl), s, "/cutkey");
	tc_put(surl, 4 * KiB, x, 4 * KiB);
	char bkey[128];
	/* A server that stores non-atomically holds a cut object there. */
	snprintf(key, sizeof(key), "/cut/%s", tc_block_key(surl, 0, bkey, sizeof(bkey)));
	tc_url(url, sizeof(url), s, "/cut");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	assert_int_equal(ts_put(s, key, x, 100), 201);
	/* A commit of X: the PUT's 412 (If-None-Match) is not taken for
	 * "the same bytes are there" when the length says otherwise. */
	uint64_t gen = tc_write_commit(url, 2 * 4 * KiB, x, 4 * KiB);
	memcpy(data + 2 * 4 * KiB, x, 4 * KiB);
	assert_true(tc_dataset_equals(url, gen, data, 4 * 4 * KiB));
	free(data);
	free(x);
}

/* ---- answers no honest server gives (canned) -------------------------------------------------- */

/* The answer to the open's Range GET of an 8192-byte object's first 4 KiB
 * block (open_and_map's block size): size 8192, ETag "v1". */
#define OPEN_RANGE "bytes=0-4095"
#define OBJ_OPEN "HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\nContent-Range: bytes 0-4095/8192\r\n" \
	"ETag: \"v1\"\r\nConnection: close\r\n\r\n"

static char *canned_response(const char *head, size_t body_len)
{
	size_t hl = strlen(head);
	char *r = malloc(hl + body_len + 1);

	memcpy(r, head, hl);
	memset(r + hl, 'z', body_len);
	r[hl + body_len] = '\0';
	return r;
}

static void a_200_to_a_range_request_is_refused(void **state)
{
	struct tc_canned c;
	char url[128], *open = canned_response(OBJ_OPEN, 4096);
	char *resp = canned_response("HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nETag: \"v1\"\r\n"
				     "Connection: close\r\n\r\n", 4096);
	const struct tc_rule rules[] = {
		{ "GET", "/obj", open, 0, OPEN_RANGE },
		{ "GET", "/obj", resp, 0, NULL }, /* not the range: a 200 */
	};
	(void)state;

	tc_canned_start(&c, rules, 2);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	assert_read_gets_sigbus(url, url, "206 expected");
	tc_canned_stop(&c);
	free(open);
	free(resp);
}

static void a_206_with_another_range_is_refused(void **state)
{
	struct tc_canned c;
	char url[128];
	char *head = canned_response(OBJ_OPEN, 4096);
	char *part = canned_response("HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\n"
				     "Content-Range: bytes 0-4095/8192\r\nETag: \"v1\"\r\n"
				     "Connection: close\r\n\r\n", 4096);
	const struct tc_rule rules[] = {
		{ "GET", "/obj", head, 0, OPEN_RANGE },
		{ "GET", "/obj", part, 0, NULL },
	};
	(void)state;

	/* read_block_1's byte 4106 is in block 1 = bytes 4096-8191, and the
	 * answer says 0-4095. */
	tc_canned_start(&c, rules, 2);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	assert_read_gets_sigbus(url, url, "Content-Range");
	tc_canned_stop(&c);
	free(head);
	free(part);
}

/* An answer whose first header line is folded (begins with a blank) has
 * no header to continue.  libcurl 7.88 appended it to the last header of
 * the curl handle's previous answer, freed by then: a read and realloc of
 * freed memory (AddressSanitizer stops the program; without it the read
 * went on).  Every request now runs on a fresh curl handle: the answer is
 * refused, and the read gets SIGBUS with one line naming the URL. */
static void a_folded_first_header_line_is_refused_and_never_touches_an_earlier_answer(void **state)
{
	struct tc_canned c;
	char url[128], *err;
	char *open = canned_response(OBJ_OPEN, 4096);
	char *folded = canned_response("HTTP/1.1 206 Partial Content\r\n X-Folded: onto nothing\r\n"
				       "Content-Length: 4096\r\nContent-Range: bytes 4096-8191/8192\r\n"
				       "ETag: \"v1\"\r\nConnection: close\r\n\r\n", 4096);
	const struct tc_rule rules[] = {
		{ "GET", "/obj", open, 0, OPEN_RANGE },
		{ "GET", "/obj", folded, 0, NULL },
	};
	(void)state;

	tc_canned_start(&c, rules, 2);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	int status = tc_child(read_block_1, url, &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || tc_lines(err) != 1 || !strstr(err, url))
		fail_msg("status %#x, stderr \"%s\"; expected SIGBUS and one line naming %s", status, err, url);
	free(err);
	tc_canned_stop(&c);
	free(open);
	free(folded);
}

/* Reads byte 4106 of the flat object at url (arg): exit 0 if it is 'z'
 * (what canned bodies hold), 3 if not; a failed load kills with SIGBUS. */
static int read_z(void *arg)
{
	void *addr;
	int rc = open_and_map(arg, &addr);

	if (rc)
		return rc;
	return ((volatile char *)addr)[4 * KiB + 10] == 'z' ? 0 : 3;
}

/* The open's answer (bytes 0-4095 of 8192) and a block GET's (bytes
 * 4096-8191 of TOTAL), each with more header lines. */
#define OPEN_HEAD(more) "HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\nContent-Range: bytes 0-4095/8192\r\n" \
	more "Connection: close\r\n\r\n"
#define PART_HEAD(total, more) "HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\n" \
	"Content-Range: bytes 4096-8191/" total "\r\n" more "Connection: close\r\n\r\n"

/* Serves an 8192-byte flat object in 4 KiB blocks: the open's Range GET
 * with head (a 206 of bytes 0-4095), the other GETs with part (a 206 of
 * bytes 4096-8191). */
static int serve_flat(const char *head, const char *part, char **errp)
{
	struct tc_canned c;
	char url[128];
	char *h = canned_response(head, 4096), *p = canned_response(part, 4096);
	const struct tc_rule rules[] = {
		{ "GET", "/obj", h, 0, OPEN_RANGE },
		{ "GET", "/obj", p, 0, NULL },
	};

	tc_canned_start(&c, rules, 2);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	int status = tc_child(read_z, url, errp);
	tc_canned_stop(&c);
	free(h);
	free(p);
	return status;
}

static void a_flat_object_whose_size_changed_is_an_error_even_without_an_etag(void **state)
{
	char *err;
	(void)state;

	/* No ETag, no Last-Modified: the total of Content-Range is what
	 * tells that the object is not the one opened. */
	int status = serve_flat(OPEN_HEAD(""), PART_HEAD("9000", ""), &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || !strstr(err, "changed on the server") ||
	    !strstr(err, "size was 8192"))
		fail_msg("status %#x, stderr \"%s\"", status, err);
	free(err);
	/* The same with Last-Modified: another date is another object. */
	status = serve_flat(OPEN_HEAD("Last-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\n"),
			    PART_HEAD("8192", "Last-Modified: Thu, 26 Nov 2026 10:00:00 GMT\r\n"), &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || !strstr(err, "Last-Modified"))
		fail_msg("status %#x, stderr \"%s\"", status, err);
	free(err);
	/* An unknown total ("*") with the same date reads. */
	status = serve_flat(OPEN_HEAD("Last-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\n"),
			    PART_HEAD("*", "Last-Modified: Tue, 24 Nov 2026 10:00:00 GMT\r\n"), &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("status %#x, stderr \"%s\"", status, err);
	free(err);
}

/* An ETag of n characters (quotes included) into out. */
static void long_etag(char *out, size_t n)
{
	out[0] = '"';
	for (size_t i = 1; i + 1 < n; i++)
		out[i] = 'a' + (char)(i % 26);
	out[n - 1] = '"';
	out[n] = '\0';
}

static void flat_objects_with_long_or_weak_etags_read_as_they_are(void **state)
{
	char etag[700], head[1024], part[1024], *err;
	const char *weak[] = { "W/\"w1\"", etag };
	(void)state;

	long_etag(etag, 600);
	/* The canned server answers 412 to an If-Match that is cut short
	 * or weak, as real servers do. */
	for (int i = 0; i < 2; i++) {
		snprintf(head, sizeof(head), OPEN_HEAD("ETag: %s\r\n"), weak[i]);
		snprintf(part, sizeof(part), PART_HEAD("8192", "ETag: %s\r\n"), weak[i]);
		int status = serve_flat(head, part, &err);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("ETag %.20s...: status %#x, stderr \"%s\"", weak[i], status, err);
		free(err);
	}
}

static void an_etag_longer_than_blkmap_keeps_is_an_error_naming_the_url(void **state)
{
	struct tc_canned c;
	char url[128], etag[2100], *head = malloc(2300);
	struct bm_options o;
	bm_dataset *ds;
	(void)state;

	long_etag(etag, 2000);
	snprintf(head, 2300, "HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\nETag: %s\r\n"
		 "Connection: close\r\n\r\n", etag);
	const struct tc_rule rules[] = { { "GET", "/obj", head, 0, NULL } };
	tc_canned_start(&c, rules, 1);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	tc_options(&o);
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(NULL), url));
	assert_non_null(strstr(bm_last_error(NULL), "ETag header is longer"));
	tc_canned_stop(&c);
	free(head);
}

static void a_reply_curl_cannot_parse_fails_at_once(void **state)
{
	struct tc_canned c;
	char url[128];
	struct bm_options o;
	bm_dataset *ds;
	const struct tc_rule rules[] = {
		{ "GET", "/obj", "HTTP/1.1 206 Partial Content\r\nContent-Length: -1\r\nConnection: close\r\n\r\n", 0, NULL },
	};
	(void)state;

	tc_canned_start(&c, rules, 1);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	tc_options(&o);
	/* BM_EFORMAT, not BM_EHTTP after 10 tries. */
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(NULL), url));
	assert_null(strstr(bm_last_error(NULL), "tries"));
	tc_canned_stop(&c);
}

static void server_text_in_messages_carries_no_control_characters(void **state)
{
	char *err;
	(void)state;

	/* The object "changed": the message quotes both ETags. */
	int status = serve_flat(OPEN_HEAD("ETag: \"v\x1b[31m1\"\r\n"), PART_HEAD("8192", "ETag: \"v\x1b[0m2\"\r\n"),
				&err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS || !strstr(err, "changed on the server") ||
	    strchr(err, 0x1b) || !strstr(err, "\"v?[31m1\""))
		fail_msg("status %#x, stderr \"%s\"", status, err);
	free(err);
}

static void a_server_that_is_not_there_is_an_error_naming_the_url(void **state)
{
	struct tc_canned c;
	char url[128];
	struct bm_options o;
	bm_dataset *ds;
	(void)state;

	/* Listening but answering 404 to everything: no dataset, no object. */
	tc_canned_start(&c, NULL, 0);
	snprintf(url, sizeof(url), "%s/nothing", c.url);
	tc_options(&o);
	assert_int_equal(bm_open(&ds, url, &o), BM_ENOTFOUND);
	assert_non_null(strstr(bm_last_error(NULL), url));
	tc_canned_stop(&c);
	/* Nothing listening at all (the port just closed): BM_EHTTP. */
	o.retries = 1;
	assert_int_equal(bm_open(&ds, url, &o), BM_EHTTP);
	assert_non_null(strstr(bm_last_error(NULL), url));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_bad_manifest_is_refused_with_a_message_naming_url_and_fault),
		cmocka_unit_test(an_unloadable_block_read_through_a_mapping_gets_sigbus_and_one_line_naming_url_and_block),
		cmocka_unit_test(a_block_whose_bytes_fail_their_checksum_never_reaches_memory),
		cmocka_unit_test(a_block_object_longer_or_shorter_than_its_block_is_an_error),
		cmocka_unit_test(a_cut_object_under_a_blocks_key_is_replaced_by_the_commit),
		cmocka_unit_test(a_200_to_a_range_request_is_refused),
		cmocka_unit_test(a_206_with_another_range_is_refused),
		cmocka_unit_test(a_folded_first_header_line_is_refused_and_never_touches_an_earlier_answer),
		cmocka_unit_test(a_flat_object_whose_size_changed_is_an_error_even_without_an_etag),
		cmocka_unit_test(flat_objects_with_long_or_weak_etags_read_as_they_are),
		cmocka_unit_test(an_etag_longer_than_blkmap_keeps_is_an_error_naming_the_url),
		cmocka_unit_test(a_reply_curl_cannot_parse_fails_at_once),
		cmocka_unit_test(server_text_in_messages_carries_no_control_characters),
		cmocka_unit_test(a_server_that_is_not_there_is_an_error_naming_the_url),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
