/* tests/test_s3_rgw.c — what the S3 backend relies on in Ceph RGW 16.2,
 * pinned against the real server (tests/rgw.sh): conditional PUTs are
 * honoured and atomic, If-Match on a PUT compares the ETag without its
 * quotes, ListObjectsV2 pages with a continuation token, a signed request
 * needs x-amz-content-sha256, a wrong key is refused.  If an RGW upgrade
 * changes one of these, this test says which before the backend breaks.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "rgw_util.h"

static struct tr_rgw rgw;

static int group_setup(void **state)
{
	(void)state;
	if (tr_rgw_get_or_skip(&rgw) != 0)
		return -1;
	return 0;
}

static void put_ok(const char *path, const char *body)
{
	struct tr_resp r;

	tr_s3(&rgw, "PUT", path, NULL, body, strlen(body), &r);
	if (r.status != 200)
		fail_msg("PUT %s: %ld %s%s", path, r.status, r.err, r.body);
	tr_resp_free(&r);
}

static void assert_content(const char *path, const char *want)
{
	struct tr_resp r;

	tr_s3(&rgw, "GET", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, want);
	tr_resp_free(&r);
}

/* The ETag of path as RGW sends it (quoted) into out. */
static void etag_of(const char *path, char *out, size_t n)
{
	struct tr_resp r;

	tr_s3(&rgw, "HEAD", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(tr_header(&r, "ETag", out, n));
	tr_resp_free(&r);
}

static void test_if_none_match_star_refuses_an_existing_key(void **state)
{
	const char *const inm[] = { "If-None-Match: *", NULL };
	char b[128], path[256];
	struct tr_resp r;

	(void)state;
	snprintf(path, sizeof(path), "/%s/k", tr_bucket(&rgw, "inm", b, sizeof(b)));
	tr_s3(&rgw, "PUT", path, inm, "first", 5, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);
	tr_s3(&rgw, "PUT", path, inm, "second", 6, &r);
	assert_int_equal(r.status, 412);
	assert_non_null(strstr(r.body, "<Code>PreconditionFailed</Code>"));
	tr_resp_free(&r);
	assert_content(path, "first");
}

static void test_if_match_on_put_compares_the_unquoted_etag(void **state)
{
	char b[128], path[256], etag[128], hdr[160];
	const char *const h[] = { hdr, NULL };
	struct tr_resp r;

	(void)state;
	snprintf(path, sizeof(path), "/%s/m", tr_bucket(&rgw, "im", b, sizeof(b)));
	put_ok(path, "v1");
	etag_of(path, etag, sizeof(etag));
	assert_true(etag[0] == '"' && etag[strlen(etag) - 1] == '"');

	/* The ETag as sent, quotes and all: 412 on RGW 16.2. */
	snprintf(hdr, sizeof(hdr), "If-Match: %s", etag);
	tr_s3(&rgw, "PUT", path, h, "v2", 2, &r);
	assert_int_equal(r.status, 412);
	tr_resp_free(&r);
	assert_content(path, "v1");

	/* Without its quotes: replaced. */
	snprintf(hdr, sizeof(hdr), "If-Match: %.*s", (int)strlen(etag) - 2, etag + 1);
	tr_s3(&rgw, "PUT", path, h, "v3", 2, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);
	assert_content(path, "v3");

	/* The old ETag again (now stale): 412, nothing replaced. */
	tr_s3(&rgw, "PUT", path, h, "v4", 2, &r);
	assert_int_equal(r.status, 412);
	tr_resp_free(&r);
	assert_content(path, "v3");
}

static void test_if_match_on_a_missing_key_is_412(void **state)
{
	const char *const h[] = { "If-Match: 0123456789abcdef0123456789abcdef", NULL };
	char b[128], path[256];
	struct tr_resp r;

	(void)state;
	snprintf(path, sizeof(path), "/%s/none", tr_bucket(&rgw, "im-missing", b, sizeof(b)));
	tr_s3(&rgw, "PUT", path, h, "x", 1, &r);
	assert_int_equal(r.status, 412);
	tr_resp_free(&r);
	tr_s3(&rgw, "HEAD", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	tr_resp_free(&r);
}

#define RACERS 4

struct racer {
	pthread_barrier_t *go;
	const char *path;
	const char *cond;          /* the If-Match or If-None-Match line */
	char body[32];
	long status;
};

static void *race(void *arg)
{
	struct racer *x = arg;
	const char *const h[] = { x->cond, NULL };
	struct tr_resp r;

	pthread_barrier_wait(x->go);
	tr_s3(&rgw, "PUT", x->path, h, x->body, strlen(x->body), &r);
	x->status = r.status;
	tr_resp_free(&r);
	return NULL;
}

/* RACERS conditional PUTs at once, trials times: exactly one 200 each time,
 * and the object holds that one's body.  A loser answers 412, or 500 when
 * RGW's own compare-and-swap raced (ECANCELED): not applied either. */
static void race_conditional_puts(const char *bucket_prefix, bool if_match)
{
	char b[128], path[256], etag[128], cond[160];
	pthread_barrier_t go;
	struct racer x[RACERS];
	pthread_t t[RACERS];

	snprintf(path, sizeof(path), "/%s/race", tr_bucket(&rgw, bucket_prefix, b, sizeof(b)));
	for (int trial = 0; trial < 10; trial++) {
		int winner = -1;
		struct tr_resp r;

		if (if_match) {
			char base[32];
			snprintf(base, sizeof(base), "base-%d", trial);
			put_ok(path, base);
			etag_of(path, etag, sizeof(etag));
			snprintf(cond, sizeof(cond), "If-Match: %.*s", (int)strlen(etag) - 2, etag + 1);
		} else {
			snprintf(path, sizeof(path), "/%s/race-%d", b, trial);
			snprintf(cond, sizeof(cond), "If-None-Match: *");
		}
		pthread_barrier_init(&go, NULL, RACERS);
		for (int i = 0; i < RACERS; i++) {
			x[i] = (struct racer){ .go = &go, .path = path, .cond = cond };
			snprintf(x[i].body, sizeof(x[i].body), "racer-%d-%d", trial, i);
			assert_int_equal(pthread_create(&t[i], NULL, race, &x[i]), 0);
		}
		for (int i = 0; i < RACERS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		for (int i = 0; i < RACERS; i++) {
			if (x[i].status == 200) {
				assert_int_equal(winner, -1);
				winner = i;
			} else if (x[i].status != 412 && x[i].status != 500) {
				fail_msg("racer %d: status %ld", i, x[i].status);
			}
		}
		assert_int_not_equal(winner, -1);
		tr_s3(&rgw, "GET", path, NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, x[winner].body);
		tr_resp_free(&r);
	}
}

static void test_racing_if_match_puts_have_exactly_one_winner(void **state)
{
	(void)state;
	race_conditional_puts("race-im", true);
}

static void test_racing_if_none_match_puts_have_exactly_one_winner(void **state)
{
	(void)state;
	race_conditional_puts("race-inm", false);
}

/* Counts <Key> elements of a ListObjectsV2 page; the next token into tok. */
static int page_keys(const char *xml, char *tok, size_t n)
{
	const char *p = xml, *t;
	int k = 0;

	while ((p = strstr(p, "<Key>")) != NULL) {
		k++;
		p += 5;
	}
	tok[0] = '\0';
	t = strstr(xml, "<NextContinuationToken>");
	if (t) {
		t += strlen("<NextContinuationToken>");
		snprintf(tok, n, "%.*s", (int)strcspn(t, "<"), t);
	}
	return k;
}

static void test_list_objects_v2_pages_with_a_continuation_token(void **state)
{
	char b[128], path[512], tok[256], enc[768];
	int total = 0, pages = 0;

	(void)state;
	tr_bucket(&rgw, "list", b, sizeof(b));
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "/%s/ds/gen/%d.json", b, i + 1);
		put_ok(path, "{}");
	}
	snprintf(path, sizeof(path), "/%s/other", b);
	put_ok(path, "x");
	tok[0] = '\0';
	do {
		struct tr_resp r;
		char *e = NULL;

		if (tok[0]) {
			CURL *c = curl_easy_init();
			e = curl_easy_escape(c, tok, 0);
			snprintf(enc, sizeof(enc), "continuation-token=%s&", e);
			curl_free(e);
			curl_easy_cleanup(c);
		} else {
			enc[0] = '\0';
		}
		snprintf(path, sizeof(path), "/%s?%slist-type=2&max-keys=2&prefix=ds%%2Fgen%%2F", b, enc);
		tr_s3(&rgw, "GET", path, NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		total += page_keys(r.body, tok, sizeof(tok));
		assert_true((tok[0] != '\0') == (strstr(r.body, "<IsTruncated>true") != NULL));
		tr_resp_free(&r);
		assert_true(++pages <= 3);
	} while (tok[0]);
	assert_int_equal(pages, 3);
	assert_int_equal(total, 5);
}

static void test_signed_request_without_content_sha256_is_refused(void **state)
{
	char b[128], path[256];
	CURL *h = curl_easy_init();
	char userpwd[256], url[512];
	long status = 0;

	(void)state;
	snprintf(path, sizeof(path), "/%s/k", tr_bucket(&rgw, "nosha", b, sizeof(b)));
	put_ok(path, "x");
	snprintf(url, sizeof(url), "%s%s", rgw.endpoint, path);
	snprintf(userpwd, sizeof(userpwd), "%s:%s", rgw.access_key, rgw.secret_key);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
	curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	assert_int_equal(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	assert_int_equal(status, 403);
}

static void test_wrong_secret_and_unknown_key_are_refused(void **state)
{
	char b[128], path[256];
	struct tr_resp r;

	(void)state;
	snprintf(path, sizeof(path), "/%s/k", tr_bucket(&rgw, "auth", b, sizeof(b)));
	put_ok(path, "x");
	tr_s3_as(&rgw, rgw.access_key, "wrong-secret", "GET", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 403);
	assert_non_null(strstr(r.body, "SignatureDoesNotMatch"));
	tr_resp_free(&r);
	tr_s3_as(&rgw, "NOSUCHKEY", "wrong-secret", "GET", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 403);
	assert_non_null(strstr(r.body, "InvalidAccessKeyId"));
	tr_resp_free(&r);
	tr_s3_as(&rgw, NULL, "", "GET", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 403);
	assert_non_null(strstr(r.body, "AccessDenied"));
	tr_resp_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_if_none_match_star_refuses_an_existing_key),
		cmocka_unit_test(test_if_match_on_put_compares_the_unquoted_etag),
		cmocka_unit_test(test_if_match_on_a_missing_key_is_412),
		cmocka_unit_test(test_racing_if_match_puts_have_exactly_one_winner),
		cmocka_unit_test(test_racing_if_none_match_puts_have_exactly_one_winner),
		cmocka_unit_test(test_list_objects_v2_pages_with_a_continuation_token),
		cmocka_unit_test(test_signed_request_without_content_sha256_is_refused),
		cmocka_unit_test(test_wrong_secret_and_unknown_key_are_refused),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
