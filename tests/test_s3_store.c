/* tests/test_s3_store.c — the S3 store backend (client/store_s3.c) through
 * the store interface (client/store.h) against the real RADOS Gateway:
 * conditional puts and their BM_ECONFLICT, If-Match with the ETag as a HEAD
 * returned it (quoted: RGW 16.2 wants it bare, the backend learns that),
 * ranges, delete, the bucket itself is no object, and ListObjectsV2 paging
 * past 1000 keys with keys relative to the store's prefix; and, on a canned
 * endpoint that answers 503 to every try, a conditional put read back.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "../client/store.h"
#include "client_util.h"
#include "rgw_util.h"

static struct tr_rgw rgw;

static int group_setup(void **state)
{
	(void)state;
	if (tr_rgw_get_or_skip(&rgw) != 0)
		return -1;
	tr_rgw_setenv(&rgw);
	return 0;
}

static struct bm_store *open_store(const char *url)
{
	struct bm_store_opts o = { .connect_timeout_ms = 5000, .timeout_ms = 60000,
				   .retry_base_ms = 5, .retries = 6, .connections = 8 };
	struct bm_store *s;
	char msg[1024] = "";

	if (bm_store_open(&s, url, &o, msg, sizeof(msg)) != 0)
		fail_msg("bm_store_open %s: %s", url, msg);
	return s;
}

static int collect(void *arg, uint64_t off, const void *data, size_t len)
{
	memcpy((char *)arg + off, data, len);
	return 0;
}

static void test_conditional_puts_conflict_and_if_match_takes_the_etag_as_sent(void **state)
{
	struct bm_store *s;
	struct bm_version v1, v2, now;
	struct bm_put none = { .cond = BM_PUT_IF_NONE };
	struct bm_put match = { .cond = BM_PUT_IF_MATCH, .swap = true };
	char b[128], url[256], msg[1024], got[16] = "";
	struct bm_get g = { .max = sizeof(got), .sink = collect, .sink_arg = got };

	(void)state;
	snprintf(url, sizeof(url), "s3://%s/ds", tr_bucket(&rgw, "store-put", b, sizeof(b)));
	s = open_store(url);
	assert_true(bm_store_caps(s) & BM_CAP_CREATE_EXCL);
	assert_true(bm_store_caps(s) & BM_CAP_REPLACE_MATCH);
	assert_true(bm_store_caps(s) & BM_CAP_LIST);

	assert_int_equal(bm_store_put(s, "manifest.json", "one", 3, &none, &v1, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "manifest.json", "two", 3, &none, NULL, msg, sizeof(msg)),
			 BM_ECONFLICT);
	assert_int_equal(bm_store_head(s, "manifest.json", &now, msg, sizeof(msg)), 0);
	assert_string_equal(now.etag, v1.etag);
	assert_int_equal(now.size, 3);

	/* The ETag as HEAD gave it (quoted). */
	match.etag = now.etag;
	assert_int_equal(bm_store_put(s, "manifest.json", "three", 5, &match, &v2, msg, sizeof(msg)), 0);
	assert_string_not_equal(v2.etag, v1.etag);
	/* v1 is stale now. */
	match.etag = v1.etag;
	assert_int_equal(bm_store_put(s, "manifest.json", "four", 4, &match, NULL, msg, sizeof(msg)),
			 BM_ECONFLICT);
	assert_non_null(strstr(msg, "412"));
	assert_int_equal(bm_store_get(s, "manifest.json", &g, msg, sizeof(msg)), 0);
	assert_int_equal(g.got, 5);
	assert_memory_equal(got, "three", 5);
	/* If-Match on a key that does not exist. */
	assert_int_equal(bm_store_put(s, "gen/9.json", "x", 1, &match, NULL, msg, sizeof(msg)),
			 BM_ECONFLICT);
	bm_store_close(s);
}

static void test_ranges_delete_and_the_bucket_itself(void **state)
{
	struct bm_store *s;
	char b[128], url[256], msg[1024], got[8], whole[64];
	struct bm_get g = { .range = true, .off = 3, .len = 4, .sink = collect, .sink_arg = got };
	struct bm_get all = { .max = sizeof(whole), .sink = collect, .sink_arg = whole };
	struct bm_version v;

	(void)state;
	tr_bucket(&rgw, "store-misc", b, sizeof(b));
	snprintf(url, sizeof(url), "s3://%s/a b/c+d", b);
	s = open_store(url);
	assert_int_equal(bm_store_put(s, "blocks/k", "0123456789", 10, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_get(s, "blocks/k", &g, msg, sizeof(msg)), 0);
	assert_memory_equal(got, "3456", 4);
	assert_int_equal(bm_store_delete(s, "blocks/k", msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_head(s, "blocks/k", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_store_delete(s, "blocks/k", msg, sizeof(msg)), BM_ENOTFOUND);
	/* The flat object at the prefix itself. */
	assert_int_equal(bm_store_put(s, "", "flat", 4, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_get(s, "", &all, msg, sizeof(msg)), 0);
	assert_int_equal(all.got, 4);
	assert_memory_equal(whole, "flat", 4);
	bm_store_close(s);

	snprintf(url, sizeof(url), "s3://%s", b);
	s = open_store(url);
	assert_int_equal(bm_store_get(s, "", &all, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_non_null(strstr(msg, "a bucket, not an object"));
	/* The key holds a space and a '+': encoded, it is the same object. */
	assert_int_equal(bm_store_head(s, "a b/c+d", &v, msg, sizeof(msg)), 0);
	assert_int_equal(v.size, 4);
	bm_store_close(s);
}

#define NKEYS 1010
#define PUTTERS 8

struct putter {
	const char *bucket;
	int first;
};

static void *put_keys(void *arg)
{
	struct putter *p = arg;
	char path[256];
	struct tr_resp r;

	for (int i = p->first; i < NKEYS; i += PUTTERS) {
		snprintf(path, sizeof(path), "/%s/pre/fix/gen/%d.json", p->bucket, i + 1);
		tr_s3(&rgw, "PUT", path, NULL, "{}", 2, &r);
		if (r.status != 200)
			fprintf(stderr, "PUT %s: %ld\n", path, r.status);
		tr_resp_free(&r);
	}
	return NULL;
}

static void test_list_pages_past_1000_keys_relative_to_the_prefix(void **state)
{
	struct bm_store *s;
	struct putter p[PUTTERS];
	pthread_t t[PUTTERS];
	char b[128], url[256], msg[1024], path[256], *token = NULL;
	unsigned char *seen = calloc(NKEYS + 1, 1);
	int pages = 0, total = 0;
	struct tr_resp r;

	(void)state;
	tr_bucket(&rgw, "store-list", b, sizeof(b));
	for (int i = 0; i < PUTTERS; i++) {
		p[i] = (struct putter){ b, i };
		pthread_create(&t[i], NULL, put_keys, &p[i]);
	}
	for (int i = 0; i < PUTTERS; i++)
		pthread_join(t[i], NULL);
	/* Keys outside the prefix asked are not listed. */
	snprintf(path, sizeof(path), "/%s/pre/fix/blocks/x", b);
	tr_s3(&rgw, "PUT", path, NULL, "b", 1, &r);
	tr_resp_free(&r);
	snprintf(path, sizeof(path), "/%s/pre/gen/1.json", b);
	tr_s3(&rgw, "PUT", path, NULL, "b", 1, &r);
	tr_resp_free(&r);

	snprintf(url, sizeof(url), "s3://%s/pre/fix", b);
	s = open_store(url);
	do {
		struct bm_list page;
		int rc = bm_store_list(s, "gen/", token, &page, msg, sizeof(msg));
		if (rc != 0)
			fail_msg("list: %s", msg);
		free(token);
		token = page.next ? strdup(page.next) : NULL;
		for (size_t i = 0; i < page.n; i++) {
			uint64_t gen = bm_key_gen_parse(page.entries[i].key);
			if (gen < 1 || gen > NKEYS)
				fail_msg("listed key %s", page.entries[i].key);
			assert_int_equal(page.entries[i].size, 2);
			assert_int_equal(seen[gen], 0);
			seen[gen] = 1;
			total++;
		}
		bm_list_free(&page);
		assert_true(++pages <= 3);
	} while (token);
	assert_int_equal(pages, 2);
	assert_int_equal(total, NKEYS);
	bm_store_close(s);
	free(seen);
}

/* A server that answers 503 to a conditional PUT (replacing ETag "e1")
 * every time, and GET with BODY and ETAG: the put is read back. */
static int put_through_503s(const char *get_body, const char *get_etag, char *msg, size_t n,
			    struct bm_version *v)
{
	static char get[256];
	const struct tc_rule rules[] = {
		{ "PUT", "/bkt/ds/manifest.json",
		  "HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nETag: \"e1\"\r\n\r\n", 0, NULL },
		{ "GET", "/bkt/ds/manifest.json", get, 0, NULL },
	};
	struct tc_canned c;
	struct bm_put match = { .cond = BM_PUT_IF_MATCH, .etag = "\"e1\"", .swap = true };
	struct bm_store_opts o = { .connect_timeout_ms = 5000, .timeout_ms = 10000,
				   .retry_base_ms = 1, .retries = 2, .connections = 2 };
	struct bm_store *s;
	int rc;

	snprintf(get, sizeof(get), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nETag: %s\r\n\r\n%s",
		 strlen(get_body), get_etag, get_body);
	tc_canned_start(&c, rules, 2);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_ENDPOINT_URL_S3", c.url, 1);
	assert_int_equal(bm_store_open(&s, "s3://bkt/ds", &o, msg, n), 0);
	tr_rgw_setenv(&rgw);
	rc = bm_store_put(s, "manifest.json", "ours", 4, &match, v, msg, n);
	bm_store_close(s);
	tc_canned_stop(&c);
	return rc;
}

static void test_a_swap_that_keeps_failing_is_read_back_won_lost_or_not_applied(void **state)
{
	struct bm_version v = { .etag = "" };
	char msg[1024] = "";

	(void)state;
	/* Our bytes are there: one of the tries was applied. */
	assert_int_equal(put_through_503s("ours", "\"e2\"", msg, sizeof(msg), &v), 0);
	assert_string_equal(v.etag, "\"e2\"");
	/* Still the version replaced: not applied, the failure stands. */
	msg[0] = '\0';
	assert_int_equal(put_through_503s("prev", "\"e1\"", msg, sizeof(msg), &v), BM_EHTTP);
	assert_non_null(strstr(msg, "HTTP 503"));
	assert_non_null(strstr(msg, "read back: not applied"));
	assert_null(strchr(msg, '\n'));
	/* Another version: another writer won the swap, a conflict. */
	msg[0] = '\0';
	assert_int_equal(put_through_503s("othr", "\"e3\"", msg, sizeof(msg), &v), BM_ECONFLICT);
	assert_non_null(strstr(msg, "HTTP 503"));
	assert_non_null(strstr(msg, "read back: another version there"));
	assert_null(strchr(msg, '\n'));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conditional_puts_conflict_and_if_match_takes_the_etag_as_sent),
		cmocka_unit_test(test_ranges_delete_and_the_bucket_itself),
		cmocka_unit_test(test_list_pages_past_1000_keys_relative_to_the_prefix),
		cmocka_unit_test(test_a_swap_that_keeps_failing_is_read_back_won_lost_or_not_applied),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
