/* tests/test_server_protocol.c — blkmap-server's HTTP object protocol, run
 * against the real process twice: with --memory and with --root DIR.
 * Status codes of GET/HEAD/PUT/DELETE, ETags, Range edge cases,
 * conditional requests, the JSON listing, rejected keys (traversal),
 * body and header limits, keep-alive. */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_server_util.h"

#define MAX_BODY (9u << 20)

static const char *const limits[] = {
	"--max-body-bytes", "9437184", "--max-header-bytes", "4096", NULL
};

static int start_memory(void **state)
{
	return ts_fixture_memory(state, limits);
}

static int start_disk(void **state)
{
	return ts_fixture_disk(state, limits);
}

static const struct ts_server *server(void **state)
{
	return &((struct ts_fixture *)*state)->srv;
}

/* A request with at most one extra header; returns the status. */
static long request1(void **state, const char *method, const char *path,
		     const char *header, struct ts_resp *r)
{
	const char *h[] = { header, NULL };

	ts_request(NULL, server(state), method, path, header ? h : NULL, NULL,
		   0, r);
	assert_int_equal(r->rc, CURLE_OK);
	return r->status;
}

static void get_etag(void **state, const char *path, char *etag, size_t n)
{
	struct ts_resp r;

	assert_int_equal(request1(state, "GET", path, NULL, &r), 200);
	assert_non_null(ts_header(&r, "ETag", etag, n));
	ts_resp_free(&r);
}

static void assert_one_line_error(const struct ts_resp *r, const char *part)
{
	assert_true(r->len > 0 && r->body[r->len - 1] == '\n');
	assert_ptr_equal(strchr(r->body, '\n'), r->body + r->len - 1);
	assert_non_null(strstr(r->body, part));
}

/* ---- basic methods ---- */

static void put_new_key_answers_201_and_replacing_answers_204(void **state)
{
	assert_int_equal(ts_put(server(state), "/m/new", "one", 3), 201);
	assert_int_equal(ts_put(server(state), "/m/new", "two", 3), 204);
}

static void get_returns_stored_bytes_length_and_strong_etag(void **state)
{
	unsigned char *data = ts_pattern(100000, 1);
	char etag[128], len[32], etag2[128], etag3[128];
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/get", data, 100000), 201);
	assert_int_equal(request1(state, "GET", "/m/get", NULL, &r), 200);
	assert_int_equal(r.len, 100000);
	assert_memory_equal(r.body, data, 100000);
	assert_string_equal(ts_header(&r, "Content-Length", len, sizeof(len)),
			    "100000");
	assert_non_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	assert_int_equal(etag[0], '"');
	ts_resp_free(&r);
	/* derived from the content: same bytes, same tag; others, other */
	assert_int_equal(ts_put(server(state), "/m/get-copy", data, 100000),
			 201);
	get_etag(state, "/m/get-copy", etag2, sizeof(etag2));
	assert_string_equal(etag, etag2);
	data[500] ^= 1;
	assert_int_equal(ts_put(server(state), "/m/get-copy", data, 100000),
			 204);
	get_etag(state, "/m/get-copy", etag3, sizeof(etag3));
	assert_string_not_equal(etag, etag3);
	free(data);
}

static void head_answers_get_headers_without_body(void **state)
{
	char etag[128], etag2[128], len[32];
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/head", "12345", 5), 201);
	get_etag(state, "/m/head", etag, sizeof(etag));
	assert_int_equal(request1(state, "HEAD", "/m/head", NULL, &r), 200);
	assert_int_equal(r.len, 0);
	assert_string_equal(ts_header(&r, "Content-Length", len, sizeof(len)),
			    "5");
	assert_string_equal(ts_header(&r, "ETag", etag2, sizeof(etag2)), etag);
	ts_resp_free(&r);
	assert_int_equal(request1(state, "HEAD", "/m/nothing", NULL, &r), 404);
	ts_resp_free(&r);
}

static void delete_answers_204_then_404_and_object_is_gone(void **state)
{
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/del/x", "x", 1), 201);
	assert_int_equal(ts_delete(server(state), "/m/del/x"), 204);
	assert_int_equal(ts_delete(server(state), "/m/del/x"), 404);
	assert_int_equal(request1(state, "GET", "/m/del/x", NULL, &r), 404);
	ts_resp_free(&r);
	/* the emptied directory does not block a key of the same name */
	assert_int_equal(ts_put(server(state), "/m/del", "y", 1), 201);
}

static void get_of_missing_key_answers_404_with_one_line_reason(void **st)
{
	struct ts_resp r;

	assert_int_equal(request1(st, "GET", "/m/missing", NULL, &r), 404);
	assert_one_line_error(&r, "no object at key '/m/missing'");
	ts_resp_free(&r);
}

static void empty_object_round_trips(void **state)
{
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/empty", "", 0), 201);
	assert_int_equal(request1(state, "GET", "/m/empty", NULL, &r), 200);
	assert_int_equal(r.len, 0);
	ts_resp_free(&r);
}

static void large_object_round_trips(void **state)
{
	size_t n = 8u << 20;
	unsigned char *data = ts_pattern(n, 7);
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/large", data, n), 201);
	assert_int_equal(request1(state, "GET", "/m/large", NULL, &r), 200);
	assert_int_equal(r.len, n);
	assert_memory_equal(r.body, data, n);
	ts_resp_free(&r);
	free(data);
}

/* ---- Range ---- */

static unsigned char *range_object(void **state)
{
	static unsigned char *data;

	if (!data)
		data = ts_pattern(1000, 3);
	assert_true(ts_put(server(state), "/r/obj", data, 1000) / 100 == 2);
	return data;
}

static void assert_range(void **state, const char *range, long status,
			 const char *content_range, size_t off, size_t len)
{
	unsigned char *data = range_object(state);
	char h[64], cr[64];
	struct ts_resp r;

	snprintf(h, sizeof(h), "Range: %s", range);
	assert_int_equal(request1(state, "GET", "/r/obj", h, &r), status);
	if (content_range)
		assert_string_equal(ts_header(&r, "Content-Range", cr,
					      sizeof(cr)), content_range);
	else
		assert_null(ts_header(&r, "Content-Range", cr, sizeof(cr)));
	if (status / 100 == 2) {
		assert_int_equal(r.len, len);
		assert_memory_equal(r.body, data + off, len);
	}
	ts_resp_free(&r);
}

static void range_first_byte_answers_206_with_that_byte(void **state)
{
	assert_range(state, "bytes=0-0", 206, "bytes 0-0/1000", 0, 1);
}

static void range_last_byte_answers_206_with_that_byte(void **state)
{
	assert_range(state, "bytes=999-999", 206, "bytes 999-999/1000", 999, 1);
}

static void range_suffix_answers_the_last_n_bytes(void **state)
{
	assert_range(state, "bytes=-10", 206, "bytes 990-999/1000", 990, 10);
	assert_range(state, "bytes=-5000", 206, "bytes 0-999/1000", 0, 1000);
}

static void range_open_end_answers_up_to_the_end(void **state)
{
	assert_range(state, "bytes=990-", 206, "bytes 990-999/1000", 990, 10);
}

static void range_end_beyond_size_is_clipped(void **state)
{
	assert_range(state, "bytes=500-5000", 206, "bytes 500-999/1000", 500,
		     500);
}

static void range_beyond_end_answers_416(void **state)
{
	assert_range(state, "bytes=1000-", 416, "bytes */1000", 0, 0);
	assert_range(state, "bytes=5000-6000", 416, "bytes */1000", 0, 0);
	assert_range(state, "bytes=-0", 416, "bytes */1000", 0, 0);
}

static void range_on_empty_object_answers_416(void **state)
{
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/r/empty", "", 0) / 100, 2);
	assert_int_equal(request1(state, "GET", "/r/empty", "Range: bytes=0-",
				  &r), 416);
	ts_resp_free(&r);
}

static void several_or_malformed_ranges_send_whole_object(void **state)
{
	assert_range(state, "bytes=0-1,5-6", 200, NULL, 0, 1000);
	assert_range(state, "bytes=5-2", 200, NULL, 0, 1000);
	assert_range(state, "items=0-1", 200, NULL, 0, 1000);
}

static void if_range_with_other_etag_sends_whole_object(void **state)
{
	const char *h[] = { "Range: bytes=0-9", "If-Range: \"other\"", NULL };
	struct ts_resp r;

	range_object(state);
	ts_request(NULL, server(state), "GET", "/r/obj", h, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 1000);
	ts_resp_free(&r);
}

/* ---- conditional requests ---- */

static void put_if_none_match_star_answers_412_when_key_exists(void **st)
{
	const char *h[] = { "If-None-Match: *", NULL };
	struct ts_resp r;

	ts_request(NULL, server(st), "PUT", "/c/inm", h, "first", 5, &r);
	assert_int_equal(r.status, 201);
	ts_resp_free(&r);
	ts_request(NULL, server(st), "PUT", "/c/inm", h, "second", 6, &r);
	assert_int_equal(r.status, 412);
	ts_resp_free(&r);
	assert_int_equal(request1(st, "GET", "/c/inm", NULL, &r), 200);
	assert_string_equal(r.body, "first");
	ts_resp_free(&r);
}

static void put_if_match_answers_412_unless_etag_is_current(void **st)
{
	char etag[128], hm[160];
	const char *wrong[] = { "If-Match: \"0000\"", NULL };
	const char *right[] = { hm, NULL };
	struct ts_resp r;

	ts_request(NULL, server(st), "PUT", "/c/im-missing", wrong, "x", 1, &r);
	assert_int_equal(r.status, 412);  /* no object: If-Match fails */
	ts_resp_free(&r);
	assert_int_equal(ts_put(server(st), "/c/im", "v1", 2), 201);
	get_etag(st, "/c/im", etag, sizeof(etag));
	snprintf(hm, sizeof(hm), "If-Match: %s", etag);
	ts_request(NULL, server(st), "PUT", "/c/im", wrong, "v2", 2, &r);
	assert_int_equal(r.status, 412);
	ts_resp_free(&r);
	ts_request(NULL, server(st), "PUT", "/c/im", right, "v2", 2, &r);
	assert_int_equal(r.status, 204);
	ts_resp_free(&r);
	/* the tag was of v1: now stale */
	ts_request(NULL, server(st), "PUT", "/c/im", right, "v3", 2, &r);
	assert_int_equal(r.status, 412);
	ts_resp_free(&r);
	assert_int_equal(request1(st, "GET", "/c/im", NULL, &r), 200);
	assert_string_equal(r.body, "v2");
	ts_resp_free(&r);
}

static void put_answers_the_new_etag(void **state)
{
	char e1[128], e2[128];
	struct ts_resp r;

	ts_request(NULL, server(state), "PUT", "/c/tag", NULL, "abc", 3, &r);
	assert_non_null(ts_header(&r, "ETag", e1, sizeof(e1)));
	ts_resp_free(&r);
	get_etag(state, "/c/tag", e2, sizeof(e2));
	assert_string_equal(e1, e2);
}

static void get_if_none_match_current_etag_answers_304(void **state)
{
	char etag[128], h[160];
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/c/g", "data", 4) / 100, 2);
	get_etag(state, "/c/g", etag, sizeof(etag));
	snprintf(h, sizeof(h), "If-None-Match: \"x\", %s", etag);
	assert_int_equal(request1(state, "GET", "/c/g", h, &r), 304);
	assert_int_equal(r.len, 0);
	ts_resp_free(&r);
	assert_int_equal(request1(state, "GET", "/c/g", "If-None-Match: \"x\"",
				  &r), 200);
	ts_resp_free(&r);
}

static void get_if_match_other_etag_answers_412(void **state)
{
	char etag[128], h[160];
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/c/gm", "data", 4) / 100, 2);
	assert_int_equal(request1(state, "GET", "/c/gm", "If-Match: \"x\"",
				  &r), 412);
	ts_resp_free(&r);
	get_etag(state, "/c/gm", etag, sizeof(etag));
	snprintf(h, sizeof(h), "If-Match: %s", etag);
	assert_int_equal(request1(state, "GET", "/c/gm", h, &r), 200);
	ts_resp_free(&r);
}

static void delete_if_match_other_etag_answers_412(void **state)
{
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/c/dm", "data", 4) / 100, 2);
	assert_int_equal(request1(state, "DELETE", "/c/dm", "If-Match: \"x\"",
				  &r), 412);
	ts_resp_free(&r);
	assert_int_equal(request1(state, "GET", "/c/dm", NULL, &r), 200);
	ts_resp_free(&r);
}

/* ---- listing ---- */

static void assert_listing(void **state, const char *path,
			   const char *const *keys)
{
	json_t *doc = ts_get_json(server(state), path), *objs;
	size_t i = 0;

	assert_non_null(doc);
	objs = json_object_get(doc, "objects");
	assert_true(json_is_array(objs));
	for (; keys[i]; i++) {
		json_t *o = json_array_get(objs, i);
		assert_non_null(o);
		assert_string_equal(json_string_value(json_object_get(o, "key")),
				    keys[i]);
		assert_int_equal(json_integer_value(json_object_get(o, "size")),
				 strlen(keys[i]));
	}
	assert_int_equal(json_array_size(objs), i);
	json_decref(doc);
}

static void listing_returns_keys_under_prefix_sorted(void **state)
{
	static const char *const keys[] = { "l/b/d", "l/a", "l/b/c", "lx" };
	static const char *const all[] = { "l/a", "l/b/c", "l/b/d", NULL };
	static const char *const sub[] = { "l/b/c", "l/b/d", NULL };
	static const char *const none[] = { NULL };
	char path[32];

	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "/%s", keys[i]);
		assert_int_equal(ts_put(server(state), path, keys[i],
					strlen(keys[i])) / 100, 2);
	}
	assert_listing(state, "/l/", all);
	assert_listing(state, "/l/b?list", sub);
	assert_listing(state, "/l/b/c/", none);
	assert_listing(state, "/nothing/here/", none);
}

/* ---- bad input ---- */

static void traversal_and_malformed_keys_answer_400(void **state)
{
	static const char *const bad[] = {
		"/../escape", "/a/../../escape", "/%2e%2e/escape",
		"/a/%2E%2E/%2e%2e/escape", "/./escape", "/a/./escape",
		"/a//escape", "//escape", "/a%00escape", "/a%zzescape",
		"/a%2", "/a%2F%2Fescape", NULL
	};
	char longkey[1200];
	struct ts_resp r;

	for (int i = 0; bad[i]; i++) {
		ts_request(NULL, server(state), "PUT", bad[i], NULL, "x", 1, &r);
		assert_int_equal(r.status, 400);
		assert_one_line_error(&r, "bad key");
		ts_resp_free(&r);
		assert_int_equal(request1(state, "GET", bad[i], NULL, &r), 400);
		ts_resp_free(&r);
	}
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[0] = '/';
	longkey[sizeof(longkey) - 1] = '\0';
	assert_int_equal(request1(state, "GET", longkey, NULL, &r), 400);
	assert_one_line_error(&r, "longer than");
	ts_resp_free(&r);
	/* nothing was written anywhere */
	struct ts_fixture *f = *state;
	if (f->root) {
		char p[512];
		struct stat st;
		snprintf(p, sizeof(p), "%s/escape", f->root);
		assert_int_not_equal(stat(p, &st), 0);
		snprintf(p, sizeof(p), "%s/escape", f->srv.root);
		assert_int_not_equal(stat(p, &st), 0);
	}
	static const char *const no_escape[] = { NULL };
	assert_listing(state, "/escape?list", no_escape);
}

static void other_methods_answer_405_with_allow(void **state)
{
	char allow[64];
	struct ts_resp r;

	assert_int_equal(request1(state, "POST", "/m/x", NULL, &r), 405);
	assert_string_equal(ts_header(&r, "Allow", allow, sizeof(allow)),
			    "GET, HEAD, PUT, DELETE");
	ts_resp_free(&r);
}

static void put_or_delete_of_key_ending_in_slash_answers_400(void **state)
{
	struct ts_resp r;

	assert_int_equal(ts_put(server(state), "/m/dir/", "x", 1), 400);
	assert_int_equal(request1(state, "DELETE", "/m/dir/", NULL, &r), 400);
	ts_resp_free(&r);
}

static void body_over_limit_answers_413_and_is_not_stored(void **state)
{
	unsigned char *data = ts_pattern(MAX_BODY + 1, 5);
	const char *no_expect[] = { "Expect:", NULL };
	struct ts_resp r;

	/* with Expect: 100-continue the body is refused before it is sent */
	ts_request(NULL, server(state), "PUT", "/b/big", NULL, data,
		   MAX_BODY + 1, &r);
	assert_int_equal(r.status, 413);
	assert_one_line_error(&r, "over the limit");
	ts_resp_free(&r);
	/* without it, the answer comes while the body is still arriving */
	ts_request(NULL, server(state), "PUT", "/b/big", no_expect, data,
		   MAX_BODY + 1, &r);
	assert_int_equal(r.status, 413);
	ts_resp_free(&r);
	assert_int_equal(request1(state, "GET", "/b/big", NULL, &r), 404);
	ts_resp_free(&r);
	assert_int_equal(ts_put(server(state), "/b/big", data, MAX_BODY), 201);
	free(data);
}

static void head_over_limit_answers_431(void **state)
{
	char big[5000] = "X-Big: ";
	struct ts_resp r;

	memset(big + 7, 'a', sizeof(big) - 8);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(request1(state, "GET", "/m/x", big, &r), 431);
	ts_resp_free(&r);
}

static void put_without_content_length_answers_411(void **state)
{
	const char *h[] = { "Transfer-Encoding: chunked", NULL };
	struct ts_resp r;

	ts_request(NULL, server(state), "PUT", "/m/chunked", h, "abc", 3, &r);
	assert_int_equal(r.status, 411);
	assert_one_line_error(&r, "Content-Length");
	ts_resp_free(&r);
}

static void keep_alive_serves_requests_on_one_connection(void **state)
{
	CURL *h = curl_easy_init();
	struct ts_resp r;
	long conns;

	assert_int_equal(ts_put(server(state), "/m/ka", "ka", 2) / 100, 2);
	for (int i = 0; i < 3; i++) {
		ts_request(h, server(state), "GET", "/m/ka", NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		ts_resp_free(&r);
		curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
		assert_int_equal(conns, i == 0 ? 1 : 0);
	}
	ts_request(h, server(state), "GET", "/m/none", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);  /* an error keeps it open too */
	ts_resp_free(&r);
	ts_request(h, server(state), "GET", "/m/ka", NULL, NULL, 0, &r);
	curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
	assert_int_equal(conns, 0);
	ts_resp_free(&r);
	curl_easy_cleanup(h);
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(put_new_key_answers_201_and_replacing_answers_204),
		T(get_returns_stored_bytes_length_and_strong_etag),
		T(head_answers_get_headers_without_body),
		T(delete_answers_204_then_404_and_object_is_gone),
		T(get_of_missing_key_answers_404_with_one_line_reason),
		T(empty_object_round_trips),
		T(large_object_round_trips),
		T(range_first_byte_answers_206_with_that_byte),
		T(range_last_byte_answers_206_with_that_byte),
		T(range_suffix_answers_the_last_n_bytes),
		T(range_open_end_answers_up_to_the_end),
		T(range_end_beyond_size_is_clipped),
		T(range_beyond_end_answers_416),
		T(range_on_empty_object_answers_416),
		T(several_or_malformed_ranges_send_whole_object),
		T(if_range_with_other_etag_sends_whole_object),
		T(put_if_none_match_star_answers_412_when_key_exists),
		T(put_if_match_answers_412_unless_etag_is_current),
		T(put_answers_the_new_etag),
		T(get_if_none_match_current_etag_answers_304),
		T(get_if_match_other_etag_answers_412),
		T(delete_if_match_other_etag_answers_412),
		T(listing_returns_keys_under_prefix_sorted),
		T(traversal_and_malformed_keys_answer_400),
		T(other_methods_answer_405_with_allow),
		T(put_or_delete_of_key_ending_in_slash_answers_400),
		T(body_over_limit_answers_413_and_is_not_stored),
		T(head_over_limit_answers_431),
		T(put_without_content_length_answers_411),
		T(keep_alive_serves_requests_on_one_connection),
	};

	return ts_run_on_both_stores(tests, sizeof(tests) / sizeof(tests[0]), start_memory, start_disk);
}
