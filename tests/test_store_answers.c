/* tests/test_store_answers.c — the store backends (client/store_http.c,
 * client/store_s3.c, client/store_list.c) against answers no well-behaved
 * server gives, sent by a canned loopback responder (tc_canned): listings
 * that name objects blkmap never writes ("..", foreign names), an S3
 * listing paged by continuation tokens and one that hands back its own
 * token, S3 XML errors and what a user reads of them, the If-Match
 * spelling an S3 server wants, and the bucket that is no object.  No real
 * server: these run in a fraction of a second.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client_util.h"
#include "../client/store.h"

static const struct bm_store_opts opts = { .connect_timeout_ms = 5000, .timeout_ms = 10000,
					    .retry_base_ms = 1, .retries = 2, .connections = 2 };

/* A canned responder (tc_canned) and a store opened on it. */
struct canned {
	struct tc_canned c;
	struct bm_store *s;
};

/* Starts the responder with rules[0..n) and opens where on it: a path
 * ("/ds": http://<responder>/ds), or an s3:// URL (the responder as the
 * endpoint, unsigned).  canned_close ends both. */
static struct bm_store *canned_open(struct canned *k, const struct tc_rule *rules, size_t n, const char *where)
{
	char url[256], msg[1024] = "";

	tc_canned_start(&k->c, rules, n);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
	setenv("AWS_ENDPOINT_URL_S3", k->c.url, 1);
	snprintf(url, sizeof(url), "%s%s", where[0] == '/' ? k->c.url : "", where);
	if (bm_store_open(&k->s, url, &opts, msg, sizeof(msg)) != 0)
		fail_msg("bm_store_open %s: %s", url, msg);
	return k->s;
}

static void canned_close(struct canned *k)
{
	bm_store_close(k->s);
	tc_canned_stop(&k->c);
}

static bool one_printable_line(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* "HTTP/1.1 200 OK" with BODY and extra header lines HEAD (may be ""). */
static char *answer(const char *status, const char *head, const char *body)
{
	char *r = NULL;

	assert_true(asprintf(&r, "HTTP/1.1 %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
			     status, head, strlen(body), body) > 0);
	return r;
}

/* ---- listings name only keys blkmap could have written ------------------------------- */

static void a_json_listing_passes_over_keys_blkmap_never_writes(void **state)
{
	(void)state;
	char *list = answer("200 OK", "Server: blkmap-server\r\nContent-Type: application/json\r\n",
			    "{\"prefix\":\"ds/blocks/\",\"objects\":["
			    "{\"key\":\"ds/blocks/b2\",\"size\":2},"
			    "{\"key\":\"ds/blocks/../../other/manifest.json\",\"size\":9},"
			    "{\"key\":\"ds/blocks/a b\",\"size\":3},"
			    "{\"key\":\"ds/blocks/b1\",\"size\":1},"
			    "{\"key\":\"ds/blocks/b1\",\"size\":1}]}");
	const struct tc_rule rules[] = {
		{ "GET", "/ds/blocks/?list", list, 0, NULL },
		{ "HEAD", "/ds", "HTTP/1.1 404 Not Found\r\nServer: blkmap-server\r\nContent-Length: 0\r\n\r\n", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_list page;
	struct bm_version v;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 2, "/ds");
	/* The Server header tells the store it lists. */
	assert_int_equal(bm_store_head(s, "", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_store_list(s, "blocks/", NULL, &page, msg, sizeof(msg)), 0);
	/* Sorted, each once; no "..", no space: gc would DELETE what it gets. */
	assert_int_equal(page.n, 2);
	assert_string_equal(page.entries[0].key, "blocks/b1");
	assert_string_equal(page.entries[1].key, "blocks/b2");
	assert_int_equal(page.entries[1].size, 2);
	bm_list_free(&page);
	canned_close(&cs);
	free(list);
}

static const char s3_head[] = "Content-Type: application/xml\r\n";

static void an_s3_listing_passes_over_keys_blkmap_never_writes(void **state)
{
	(void)state;
	char *list = answer("200 OK", s3_head,
			    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
			    "<Name>bkt</Name><Prefix>ds/blocks/</Prefix><IsTruncated>false</IsTruncated>"
			    "<Contents><Key>ds/blocks/b1</Key><Size>1</Size></Contents>"
			    "<Contents><Key>ds/blocks/../../other/manifest.json</Key><Size>9</Size></Contents>"
			    "<Contents><Key>ds/blocks/a&amp;b</Key><Size>3</Size></Contents>"
			    "<Contents><Key>ds/blocks/b&#50;</Key><Size>2</Size></Contents>"
			    "</ListBucketResult>");
	const struct tc_rule rules[] = {
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fblocks%2F", list, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_list page;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 1, "s3://bkt/ds");
	assert_int_equal(bm_store_list(s, "blocks/", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 2);
	assert_string_equal(page.entries[0].key, "blocks/b1");
	assert_string_equal(page.entries[1].key, "blocks/b2"); /* &#50; is '2' */
	assert_null(page.next);
	bm_list_free(&page);
	canned_close(&cs);
	free(list);
}

/* ---- S3 paging ----------------------------------------------------------------------------- */

static void an_s3_listing_follows_its_continuation_tokens_to_the_last_page(void **state)
{
	(void)state;
	char *p1 = answer("200 OK", s3_head,
			  "<ListBucketResult><IsTruncated>true</IsTruncated>"
			  "<NextContinuationToken>t/2+=</NextContinuationToken>"
			  "<Contents><Key>ds/gen/1.json</Key><Size>10</Size></Contents>"
			  "<Contents><Key>ds/gen/2.json</Key><Size>20</Size></Contents>"
			  "</ListBucketResult>");
	char *p2 = answer("200 OK", s3_head,
			  "<ListBucketResult><IsTruncated>false</IsTruncated>"
			  "<Contents><Key>ds/gen/3.json</Key><Size>30</Size></Contents>"
			  "</ListBucketResult>");
	const struct tc_rule rules[] = {
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fgen%2F", p1, 0, NULL },
		{ "GET", "/bkt/?continuation-token=t%2F2%2B%3D&list-type=2&prefix=ds%2Fgen%2F", p2, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_list page;
	char msg[1024] = "", *token = NULL;
	uint64_t sizes = 0;
	size_t pages = 0, keys = 0;

	s = canned_open(&cs, rules, 2, "s3://bkt/ds");
	do {
		assert_int_equal(bm_store_list(s, "gen/", token, &page, msg, sizeof(msg)), 0);
		free(token);
		token = page.next ? strdup(page.next) : NULL;
		for (size_t i = 0; i < page.n; i++) {
			assert_int_equal(bm_key_gen_parse(page.entries[i].key), keys + 1);
			sizes += page.entries[i].size;
			keys++;
		}
		bm_list_free(&page);
		assert_true(++pages <= 2);
	} while (token);
	assert_int_equal(keys, 3);
	assert_int_equal(sizes, 60);
	canned_close(&cs);
	free(p1);
	free(p2);
}

static void an_s3_listing_that_hands_back_its_own_token_is_refused_not_listed_for_ever(void **state)
{
	(void)state;
	char *p = answer("200 OK", s3_head,
			 "<ListBucketResult><IsTruncated>true</IsTruncated>"
			 "<NextContinuationToken>again</NextContinuationToken>"
			 "<Contents><Key>ds/gen/1.json</Key><Size>10</Size></Contents>"
			 "</ListBucketResult>");
	char *first = answer("200 OK", s3_head,
			     "<ListBucketResult><IsTruncated>true</IsTruncated>"
			     "<NextContinuationToken>again</NextContinuationToken>"
			     "</ListBucketResult>");
	char *broken = answer("200 OK", s3_head,
			      "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>");
	const struct tc_rule rules[] = {
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fgen%2F", first, 0, NULL },
		{ "GET", "/bkt/?continuation-token=again&list-type=2&prefix=ds%2Fgen%2F", p, 0, NULL },
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fblocks%2F", broken, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_list page;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 3, "s3://bkt/ds");
	assert_int_equal(bm_store_list(s, "gen/", NULL, &page, msg, sizeof(msg)), 0);
	assert_string_equal(page.next, "again");
	bm_list_free(&page);
	assert_int_equal(bm_store_list(s, "gen/", "again", &page, msg, sizeof(msg)), BM_EFORMAT);
	assert_int_equal(page.n, 0);
	assert_null(page.next);
	assert_non_null(strstr(msg, "GET http://127.0.0.1:"));
	assert_non_null(strstr(msg, "NextContinuationToken is the one asked for"));
	assert_true(one_printable_line(msg));
	/* Truncated, and no token to go on with. */
	assert_int_equal(bm_store_list(s, "blocks/", NULL, &page, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "a truncated listing without NextContinuationToken"));
	canned_close(&cs);
	free(p);
	free(first);
	free(broken);
}

static void an_s3_answer_that_is_no_listing_is_refused_with_the_url(void **state)
{
	(void)state;
	char *html = answer("200 OK", "Content-Type: text/html\r\n", "<html>captive portal</html>");
	char *cut = answer("200 OK", s3_head,
			   "<ListBucketResult><IsTruncated>false</IsTruncated>"
			   "<Contents><Key>ds/gen/1.json</Key><Size>10</Size>");
	char *nosize = answer("200 OK", s3_head,
			      "<ListBucketResult><IsTruncated>false</IsTruncated>"
			      "<Contents><Key>ds/index/x</Key><Size>-1</Size></Contents>"
			      "</ListBucketResult>");
	const struct tc_rule rules[] = {
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fblocks%2F", html, 0, NULL },
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Fgen%2F", cut, 0, NULL },
		{ "GET", "/bkt/?list-type=2&prefix=ds%2Findex%2F", nosize, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_list page;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 3, "s3://bkt/ds");
	assert_int_equal(bm_store_list(s, "blocks/", NULL, &page, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "/bkt/?list-type=2&prefix=ds%2Fblocks%2F: not a ListObjectsV2 answer"));
	assert_int_equal(bm_store_list(s, "gen/", NULL, &page, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "a <Contents> without its end"));
	assert_int_equal(bm_store_list(s, "index/", NULL, &page, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "an entry without a key under \"ds/index/\" or its size"));
	assert_int_equal(page.n, 0);
	canned_close(&cs);
	free(html);
	free(cut);
	free(nosize);
}

/* ---- S3 errors ------------------------------------------------------------------------------ */

static void an_s3_error_names_its_code_and_maps_to_the_error_a_caller_handles(void **state)
{
	(void)state;
	char *denied = answer("403 Forbidden", s3_head,
			      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
			      "<Message>Access Denied</Message><RequestId>tx1</RequestId></Error>");
	char *nokey = answer("404 Not Found", s3_head,
			     "<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>");
	char *odd = answer("400 Bad Request", s3_head,
			   "<Error><Code>Bad&#10;Code and\x01 more</Code></Error>");
	char *slow = answer("503 Slow Down", s3_head, "<Error><Code>SlowDown</Code></Error>");
	const struct tc_rule rules[] = {
		{ "GET", "/bkt/ds/manifest.json", denied, 0, NULL },
		{ "GET", "/bkt/ds/gen/1.json", nokey, 0, NULL },
		{ "GET", "/bkt/ds/gen/2.json", odd, 0, NULL },
		{ "GET", "/bkt/ds/gen/3.json", slow, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	char msg[1024] = "", *buf = NULL;
	size_t len;

	s = canned_open(&cs, rules, 4, "s3://bkt/ds");
	/* 403: the code and who asked (unsigned here: no credentials). */
	assert_int_equal(bm_store_get_all(s, "manifest.json", 1024, &buf, &len, NULL, msg, sizeof(msg)),
			 BM_EAUTH);
	assert_non_null(strstr(msg, "GET s3://bkt/ds/manifest.json: HTTP 403 AccessDenied ("));
	assert_non_null(strstr(msg, "no AWS credentials"));
	assert_true(one_printable_line(msg));
	assert_int_equal(bm_store_get_all(s, "gen/1.json", 1024, &buf, &len, NULL, msg, sizeof(msg)),
			 BM_ENOTFOUND);
	assert_non_null(strstr(msg, "GET s3://bkt/ds/gen/1.json: HTTP 404 NoSuchKey"));
	/* A code that is no word still gives one printable line. */
	assert_int_equal(bm_store_get_all(s, "gen/2.json", 1024, &buf, &len, NULL, msg, sizeof(msg)),
			 BM_EFORMAT);
	assert_non_null(strstr(msg, "HTTP 400 Bad?Code_and?_more"));
	assert_true(one_printable_line(msg));
	/* 503 is retried, then reported with the tries made. */
	assert_int_equal(bm_store_get_all(s, "gen/3.json", 1024, &buf, &len, NULL, msg, sizeof(msg)),
			 BM_EHTTP);
	assert_non_null(strstr(msg, "GET s3://bkt/ds/gen/3.json: HTTP 503 (after 3 tries)"));
	assert_true(one_printable_line(msg));
	assert_null(buf);
	canned_close(&cs);
	free(denied);
	free(nokey);
	free(odd);
	free(slow);
}

static void the_bucket_itself_is_no_object(void **state)
{
	(void)state;
	struct canned cs;
	struct bm_store *s;
	struct bm_version v;
	char msg[1024] = "";

	s = canned_open(&cs, NULL, 0, "s3://bkt");
	assert_int_equal(bm_store_head(s, "", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_non_null(strstr(msg, "s3://bkt: a bucket, not an object"));
	assert_int_equal(bm_store_put(s, "", "x", 1, NULL, NULL, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_store_delete(s, "", msg, sizeof(msg)), BM_ENOTFOUND);
	canned_close(&cs);
}

/* RGW 16.2 compares If-Match without the quotes S3 puts around an ETag:
 * a 412 to the quoted form while the object still has that ETag is sent
 * again bare, and bare from then on. */
static void an_if_match_put_refused_for_its_quotes_is_sent_again_without_them(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		/* The canned server compares If-Match with the answer's ETag:
		 * only the bare e1 matches. */
		{ "PUT", "/bkt/ds/manifest.json",
		  "HTTP/1.1 200 OK\r\nETag: e1\r\nContent-Length: 0\r\n\r\n", 0, NULL },
		{ "HEAD", "/bkt/ds/manifest.json",
		  "HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 3\r\n\r\n", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_put match = { .cond = BM_PUT_IF_MATCH, .etag = "\"e1\"", .swap = true };
	struct bm_put other = { .cond = BM_PUT_IF_MATCH, .etag = "\"e9\"", .swap = true };
	struct bm_version v = { .etag = "" };
	char msg[1024] = "";

	s = canned_open(&cs, rules, 2, "s3://bkt/ds");
	assert_int_equal(bm_store_put(s, "manifest.json", "new", 3, &match, &v, msg, sizeof(msg)), 0);
	assert_string_equal(v.etag, "e1");
	/* Another version than the one there: a conflict, not a retry. */
	assert_int_equal(bm_store_put(s, "manifest.json", "new", 3, &other, &v, msg, sizeof(msg)),
			 BM_ECONFLICT);
	assert_non_null(strstr(msg, "precondition failed (HTTP 412)"));
	assert_int_equal(bm_store_put(s, "manifest.json", "new", 3, &match, &v, msg, sizeof(msg)), 0);
	canned_close(&cs);
}

/* ---- S3 reads that must be exactly what was asked ------------------------------------------- */

static int collect(void *arg, uint64_t off, const void *data, size_t len)
{
	memcpy((char *)arg + off, data, len);
	return 0;
}

static void an_s3_read_gets_exactly_the_range_and_version_asked_or_fails_saying_why(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		/* A Range asked, a whole (2-byte) object answered. */
		{ "GET", "/bkt/ds/whole", "HTTP/1.1 200 OK\r\nETag: \"a\"\r\nContent-Length: 2\r\n\r\nab", 0, NULL },
		/* Another range than the one asked. */
		{ "GET", "/bkt/ds/other",
		  "HTTP/1.1 206 Partial Content\r\nETag: \"a\"\r\nContent-Range: bytes 0-1/4\r\n"
		  "Content-Length: 2\r\n\r\nab", 0, NULL },
		/* The range asked, of an object of another size than pinned. */
		{ "GET", "/bkt/ds/grown",
		  "HTTP/1.1 206 Partial Content\r\nETag: \"a\"\r\nContent-Range: bytes 1-2/9\r\n"
		  "Content-Length: 2\r\n\r\nbc", 0, NULL },
		/* The range asked, as pinned. */
		{ "GET", "/bkt/ds/good",
		  "HTTP/1.1 206 Partial Content\r\nETag: \"a\"\r\nContent-Range: bytes 1-2/4\r\n"
		  "Content-Length: 2\r\n\r\nbc", 0, NULL },
		/* Another version than pinned: If-Match fails (412). */
		{ "GET", "/bkt/ds/changed", "HTTP/1.1 200 OK\r\nETag: \"b\"\r\nContent-Length: 4\r\n\r\nwxyz", 0, NULL },
		/* Shorter than the exact length asked, every time. */
		{ "GET", "/bkt/ds/short", "HTTP/1.1 200 OK\r\nETag: \"a\"\r\nContent-Length: 2\r\n\r\nab", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_version pin = { .etag = "\"a\"", .size = 4 };
	char msg[1024] = "", got[8] = "";
	struct bm_get range = { .range = true, .off = 1, .len = 2, .pin = &pin, .sink = collect,
				.sink_arg = got };

	s = canned_open(&cs, rules, 6, "s3://bkt/ds");
	assert_int_equal(bm_store_get(s, "whole", &range, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "server answered 200 to a Range request"));
	assert_int_equal(bm_store_get(s, "other", &range, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "Content-Range \"bytes 0-1/4\" does not match the range asked (bytes 1-2/...)"));
	assert_int_equal(bm_store_get(s, "grown", &range, msg, sizeof(msg)), BM_ECHANGED);
	assert_non_null(strstr(msg, "the object changed on the server (Content-Range \"bytes 1-2/9\": size was 4)"));
	assert_int_equal(bm_store_get(s, "good", &range, msg, sizeof(msg)), 0);
	assert_memory_equal(got, "bc", 2);
	assert_int_equal(range.got, 2);
	assert_string_equal(range.ver.etag, "\"a\"");
	struct bm_get whole = { .max = 4, .exact = true, .pin = &pin, .sink = collect, .sink_arg = got };
	assert_int_equal(bm_store_get(s, "changed", &whole, msg, sizeof(msg)), BM_ECHANGED);
	assert_non_null(strstr(msg, "the object changed on the server"));
	whole.pin = NULL;
	assert_int_equal(bm_store_get(s, "short", &whole, msg, sizeof(msg)), BM_EHTTP);
	assert_non_null(strstr(msg, "short body: 2 of 4 bytes"));
	assert_true(one_printable_line(msg));
	canned_close(&cs);
}

static void an_s3_delete_of_a_missing_key_is_not_found_though_s3_answers_204(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		{ "HEAD", "/bkt/ds/there", "HTTP/1.1 200 OK\r\nETag: \"a\"\r\nContent-Length: 1\r\n\r\n", 0, NULL },
		{ "DELETE", "/bkt/ds/there", "HTTP/1.1 204 No Content\r\n\r\n", 0, NULL },
		{ "DELETE", "/bkt/ds/gone", "HTTP/1.1 204 No Content\r\n\r\n", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 3, "s3://bkt/ds");
	assert_int_equal(bm_store_delete(s, "there", msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_delete(s, "gone", msg, sizeof(msg)), BM_ENOTFOUND);
	assert_non_null(strstr(msg, "HEAD s3://bkt/ds/gone: HTTP 404"));
	canned_close(&cs);
}

/* ---- WebDAV (Apache): swaps under claims ---------------------------------------------------- */

/* The canned path of claim k of the version whose bytes are was, in /ds/. */
static void claim_path(char *out, size_t n, const char *was, int k)
{
	char sum[BM_SUM_HEX + 1];

	bm_sum_hex(was, strlen(was), sum);
	snprintf(out, n, "/ds/.blkmap-claim-%s-%d/", sum, k);
}

static const char apache_405[] = "HTTP/1.1 405 Method Not Allowed\r\nServer: Apache/2.4.62\r\n"
				 "Content-Length: 0\r\n\r\n";
static const char apache_201[] = "HTTP/1.1 201 Created\r\nServer: Apache/2.4.62\r\nContent-Length: 0\r\n\r\n";
static const char apache_204[] = "HTTP/1.1 204 No Content\r\nServer: Apache/2.4.62\r\n\r\n";

/* A swap replaces the version it names: where the server's ETag is weak
 * (Apache, for a second after a change) the bytes decide, under the claim;
 * an object gone since is a conflict too. */
static void an_apache_swap_compares_bytes_under_a_weak_etag_and_conflicts_on_other_ones(void **state)
{
	(void)state;
	char claim[128], msg[1024] = "";
	claim_path(claim, sizeof(claim), "old!", 0);
	const struct tc_rule rules[] = {
		{ "HEAD", "/ds/manifest.json", "HTTP/1.1 200 OK\r\nServer: Apache/2.4.62\r\n"
		  "ETag: W/\"x\"\r\nContent-Length: 4\r\n\r\n", 0, NULL },
		{ "GET", "/ds/manifest.json", "HTTP/1.1 200 OK\r\nServer: Apache/2.4.62\r\n"
		  "ETag: W/\"x\"\r\nContent-Length: 4\r\n\r\nnew!", 0, NULL },
		{ "HEAD", "/ds/gone.json", "HTTP/1.1 404 Not Found\r\nServer: Apache/2.4.62\r\n"
		  "Content-Length: 0\r\n\r\n", 0, NULL },
		{ "MKCOL", "/ds/", apache_405, 0, NULL },
		{ "MKCOL", claim, apache_201, 0, NULL },
		{ "DELETE", claim, apache_204, 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_version v;
	struct bm_put swap = { .cond = BM_PUT_IF_MATCH, .etag = "W/\"x\"", .was = "old!", .was_len = 4,
			       .swap = true };

	s = canned_open(&cs, rules, 6, "/ds");
	/* The first answer names the server: Apache lists, swaps under claims. */
	assert_int_equal(bm_store_head(s, "manifest.json", &v, msg, sizeof(msg)), 0);
	assert_true(bm_store_caps(s) & BM_CAP_LIST);
	assert_false(bm_store_caps(s) & BM_CAP_STRONG_ETAG);
	assert_int_equal(bm_store_put(s, "manifest.json", "mine", 4, &swap, &v, msg, sizeof(msg)),
			 BM_ECONFLICT);
	assert_non_null(strstr(msg, "/ds/manifest.json: the object is another version (same weak ETag W/\"x\", other bytes)"));
	assert_int_equal(bm_store_put(s, "gone.json", "mine", 4, &swap, &v, msg, sizeof(msg)), BM_ECONFLICT);
	assert_non_null(strstr(msg, "/ds/gone.json: the object replaced is gone"));
	assert_true(one_printable_line(msg));
	canned_close(&cs);
}

/* Claims left by writers that died hold a version up until they are stale
 * (by the server's clock); eight stale ones in a row end the put. */
static void an_apache_swap_behind_eight_dead_writers_claims_gives_up_saying_so(void **state)
{
	(void)state;
	struct tc_rule rules[2 + 2 * 8 + 2];
	char paths[9][128], msg[1024] = "";
	char *old_claim = answer("207 Multi-Status",
				 "Server: Apache/2.4.62\r\nDate: Sun, 29 Nov 2026 15:00:00 GMT\r\n"
				 "Content-Type: application/xml\r\n",
				 "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><D:response>"
				 "<D:propstat><D:prop><D:getlastmodified>Sun, 29 Nov 2026 14:00:00 GMT"
				 "</D:getlastmodified></D:prop></D:propstat></D:response></D:multistatus>");
	static const char no_date[] = "HTTP/1.1 207 Multi-Status\r\nServer: Apache/2.4.62\r\n"
				      "Content-Length: 0\r\n\r\n";
	size_t n = 0;

	rules[n++] = (struct tc_rule){ "HEAD", "/ds/manifest.json",
				       "HTTP/1.1 200 OK\r\nServer: Apache/2.4.62\r\nETag: \"v1\"\r\n"
				       "Content-Length: 4\r\n\r\n", 0, NULL };
	rules[n++] = (struct tc_rule){ "MKCOL", "/ds/", apache_405, 0, NULL };
	for (int k = 0; k < 8; k++) {
		claim_path(paths[k], sizeof(paths[k]), "dead", k);
		rules[n++] = (struct tc_rule){ "MKCOL", paths[k], apache_405, 0, NULL };
		rules[n++] = (struct tc_rule){ "PROPFIND", paths[k], old_claim, 0, NULL };
	}
	claim_path(paths[8], sizeof(paths[8]), "undated", 0);
	rules[n++] = (struct tc_rule){ "MKCOL", paths[8], apache_405, 0, NULL };
	rules[n++] = (struct tc_rule){ "PROPFIND", paths[8], no_date, 0, NULL };

	struct canned cs;
	struct bm_store *s;
	struct bm_version v;
	struct bm_put dead = { .cond = BM_PUT_IF_MATCH, .etag = "\"v1\"", .was = "dead", .was_len = 4,
			       .swap = true };
	struct bm_put undated = { .cond = BM_PUT_IF_MATCH, .etag = "\"v1\"", .was = "undated",
				  .was_len = 7, .swap = true };

	s = canned_open(&cs, rules, n, "/ds");
	assert_int_equal(bm_store_head(s, "manifest.json", &v, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "manifest.json", "mine", 4, &dead, &v, msg, sizeof(msg)), BM_EHTTP);
	assert_non_null(strstr(msg, "/ds/: 8 claims in a row are held by writers that died"));
	/* A claim whose age the server does not tell is no claim to pass over. */
	assert_int_equal(bm_store_put(s, "manifest.json", "mine", 4, &undated, &v, msg, sizeof(msg)),
			 BM_EFORMAT);
	assert_non_null(strstr(msg, "no getlastmodified or Date to tell its age"));
	assert_true(one_printable_line(msg));
	canned_close(&cs);
	free(old_claim);
}

/* A read pinned to a version that has no ETag is checked by its
 * Last-Modified. */
static void a_read_pinned_by_last_modified_refuses_another_one(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		{ "GET", "/ds/x", "HTTP/1.1 200 OK\r\nLast-Modified: Sun, 29 Nov 2026 15:00:01 GMT\r\n"
		  "Content-Length: 2\r\n\r\nab", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_version pin = { .etag = "", .last_modified = "Sun, 29 Nov 2026 15:00:00 GMT",
				  .size = UINT64_MAX };
	char got[4], msg[1024] = "";
	struct bm_get g = { .max = 2, .pin = &pin, .sink = collect, .sink_arg = got };

	s = canned_open(&cs, rules, 1, "/ds");
	assert_int_equal(bm_store_get(s, "x", &g, msg, sizeof(msg)), BM_ECHANGED);
	assert_non_null(strstr(msg, "the object changed on the server (Last-Modified Sun, 29 Nov 2026 15:00:01 GMT"));
	snprintf(pin.last_modified, sizeof(pin.last_modified), "Sun, 29 Nov 2026 15:00:01 GMT");
	assert_int_equal(bm_store_get(s, "x", &g, msg, sizeof(msg)), 0);
	assert_memory_equal(got, "ab", 2);
	canned_close(&cs);
}

/* ---- WebDAV: collections, redirects, PROPFIND listings ------------------------------------- */

static void a_head_redirected_to_the_same_path_with_a_slash_is_a_directory_not_an_object(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		{ "HEAD", "/ds/sub", "HTTP/1.1 301 Moved Permanently\r\nServer: nginx/1.22.1\r\n"
		  "Location: http://127.0.0.1/ds/sub/\r\nContent-Length: 0\r\n\r\n", 0, NULL },
		{ "HEAD", "/ds/elsewhere", "HTTP/1.1 301 Moved Permanently\r\nServer: nginx/1.22.1\r\n"
		  "Location: http://127.0.0.1/other/\r\nContent-Length: 0\r\n\r\n", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_version v;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 2, "/ds");
	assert_int_equal(bm_store_head(s, "sub", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_non_null(strstr(msg, "a directory, not an object (HTTP 301 to http://127.0.0.1/ds/sub/)"));
	/* A redirect elsewhere is no answer about this key. */
	assert_int_equal(bm_store_head(s, "elsewhere", &v, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "HTTP 301"));
	canned_close(&cs);
}

static void a_put_answered_409_whose_collections_cannot_be_made_says_both(void **state)
{
	(void)state;
	const struct tc_rule rules[] = {
		{ "PUT", "/ds/gen/1.json", "HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n", 0, NULL },
		{ "MKCOL", "/ds/", "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n", 0, NULL },
		{ "MKCOL", "/ds/gen/", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 0, NULL },
	};
	struct canned cs;
	struct bm_store *s;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 3, "/ds");
	assert_int_equal(bm_store_put(s, "gen/1.json", "{}", 2, NULL, NULL, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "/ds/gen/1.json: HTTP 409, and its collections cannot be made: "));
	assert_non_null(strstr(msg, "MKCOL "));
	assert_non_null(strstr(msg, "/ds/gen/: HTTP 403"));
	assert_true(one_printable_line(msg));
	canned_close(&cs);
}

static void an_apache_listing_walks_the_collections_that_may_hold_the_prefix(void **state)
{
	(void)state;
	char *top = answer("207 Multi-Status", "Server: Apache/2.4.62\r\nContent-Type: application/xml\r\n",
			   "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">"
			   "<D:response><D:href>/ds/</D:href></D:response>"
			   "<D:response><D:href>/ds/manifest.json</D:href><D:propstat><D:prop>"
			   "<D:getcontentlength>120</D:getcontentlength></D:prop></D:propstat></D:response>"
			   "<D:response><D:href>/ds/gen/</D:href></D:response>"
			   "<D:response><D:href>/ds/blocks/</D:href></D:response>"
			   "<D:response><D:href>/ds/tags/</D:href></D:response>"
			   "<D:response><D:href>/other/x.json</D:href></D:response>"
			   "<D:response><D:href>/ds/%2e%2e/x.json</D:href></D:response>"
			   "</D:multistatus>");
	char *gen = answer("207 Multi-Status", "Server: Apache/2.4.62\r\nContent-Type: application/xml\r\n",
			   "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\">"
			   "<D:response><D:href>/ds/gen/</D:href></D:response>"
			   "<D:response><D:href>http://127.0.0.1/ds/gen/2.json</D:href><D:propstat><D:prop>"
			   "<D:getcontentlength>99</D:getcontentlength></D:prop></D:propstat></D:response>"
			   "<D:response><D:href>/ds/gen/1.json</D:href></D:response>"
			   "</D:multistatus>");
	const struct tc_rule rules[] = {
		{ "HEAD", "/ds", "HTTP/1.1 404 Not Found\r\nServer: Apache/2.4.62\r\nContent-Length: 0\r\n\r\n", 0, NULL },
		{ "PROPFIND", "/ds/", top, 0, NULL },
		{ "PROPFIND", "/ds/gen/", gen, 0, NULL },
		/* blocks/: gone meanwhile (404: nothing there); tags/ not
		 * asked, it cannot hold the prefix "g". */
	};
	struct canned cs;
	struct bm_store *s;
	struct bm_version v;
	struct bm_list page;
	char msg[1024] = "";

	s = canned_open(&cs, rules, 3, "/ds");
	assert_int_equal(bm_store_head(s, "", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_true(bm_store_caps(s) & BM_CAP_LIST);
	assert_int_equal(bm_store_list(s, "", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 3);
	assert_string_equal(page.entries[0].key, "gen/1.json");
	assert_string_equal(page.entries[1].key, "gen/2.json");
	assert_int_equal(page.entries[1].size, 99);
	assert_string_equal(page.entries[2].key, "manifest.json");
	assert_int_equal(page.entries[2].size, 120);
	bm_list_free(&page);
	assert_int_equal(bm_store_list(s, "g", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 2);
	assert_string_equal(page.entries[0].key, "gen/1.json");
	bm_list_free(&page);
	canned_close(&cs);
	free(top);
	free(gen);
}

/* ---- opening ---------------------------------------------------------------------------------- */

static void an_s3_url_or_configuration_that_cannot_be_used_is_refused_at_open_with_one_line(void **state)
{
	(void)state;
	struct bm_store *s = NULL;
	char msg[1024] = "";

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent", 1);
	assert_int_equal(bm_store_open(&s, "s3://", &opts, msg, sizeof(msg)), BM_EINVAL);
	assert_null(s);
	assert_non_null(strstr(msg, "s3://"));
	assert_true(one_printable_line(msg));
	/* A key without its secret: refused before any request. */
	setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE", 1);
	msg[0] = '\0';
	assert_int_equal(bm_store_open(&s, "s3://bkt/ds", &opts, msg, sizeof(msg)), BM_EINVAL);
	assert_null(s);
	assert_non_null(strstr(msg, "AWS_SECRET_ACCESS_KEY"));
	assert_true(one_printable_line(msg));
	unsetenv("AWS_ACCESS_KEY_ID");
	/* Neither http(s) nor s3: no backend takes it. */
	assert_int_equal(bm_store_open(&s, "ftp://h/ds", &opts, msg, sizeof(msg)), BM_EINVAL);
	assert_non_null(strstr(msg, "ftp://h/ds: not an http://, https:// or s3:// URL"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_json_listing_passes_over_keys_blkmap_never_writes),
		cmocka_unit_test(an_s3_listing_passes_over_keys_blkmap_never_writes),
		cmocka_unit_test(an_s3_listing_follows_its_continuation_tokens_to_the_last_page),
		cmocka_unit_test(an_s3_listing_that_hands_back_its_own_token_is_refused_not_listed_for_ever),
		cmocka_unit_test(an_s3_answer_that_is_no_listing_is_refused_with_the_url),
		cmocka_unit_test(an_s3_error_names_its_code_and_maps_to_the_error_a_caller_handles),
		cmocka_unit_test(the_bucket_itself_is_no_object),
		cmocka_unit_test(an_if_match_put_refused_for_its_quotes_is_sent_again_without_them),
		cmocka_unit_test(an_s3_read_gets_exactly_the_range_and_version_asked_or_fails_saying_why),
		cmocka_unit_test(an_s3_delete_of_a_missing_key_is_not_found_though_s3_answers_204),
		cmocka_unit_test(an_apache_swap_compares_bytes_under_a_weak_etag_and_conflicts_on_other_ones),
		cmocka_unit_test(an_apache_swap_behind_eight_dead_writers_claims_gives_up_saying_so),
		cmocka_unit_test(a_read_pinned_by_last_modified_refuses_another_one),
		cmocka_unit_test(a_head_redirected_to_the_same_path_with_a_slash_is_a_directory_not_an_object),
		cmocka_unit_test(a_put_answered_409_whose_collections_cannot_be_made_says_both),
		cmocka_unit_test(an_apache_listing_walks_the_collections_that_may_hold_the_prefix),
		cmocka_unit_test(an_s3_url_or_configuration_that_cannot_be_used_is_refused_at_open_with_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
