/* tests/test_wcfs_path.c — how a client and blkmap-wcfs agree on where the
 * mirror of a server is, without a server: bm_wcfs_normalize_url lower-cases
 * the scheme and host (not the path) and drops trailing slashes, so every
 * spelling of one server gets one default mountpoint and another server or
 * path another; what is not an http(s) or s3 URL, or does not fit the
 * caller's buffer, is BM_EINVAL.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <blkmap/blkmap.h>

static void spellings_of_one_server_normalize_to_one_url(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "http://127.0.0.1:8080", "http://127.0.0.1:8080" },
		{ "http://Example.COM:80/Data/Sets//", "http://example.com:80/Data/Sets" },
		{ "https://Host/", "https://host" },
		{ "s3://Bucket/Prefix/", "s3://bucket/Prefix" },
		{ "http://host///", "http://host" },
		/* Schemes are case-insensitive, as everywhere in the client. */
		{ "HTTP://Host/Data/", "http://host/Data" },
		{ "Https://host", "https://host" },
		{ "S3://bucket/Prefix", "s3://bucket/Prefix" },
	};
	char out[256];
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(bm_wcfs_normalize_url(cases[i].in, out, sizeof(out)), 0);
		assert_string_equal(out, cases[i].want);
	}
}

static void what_is_not_a_server_url_or_does_not_fit_is_refused(void **state)
{
	static const char *const bad[] = { "", "example.com/x", "ftp://host/x", "file:///tmp", "httpx://host/x",
					   "http:/host/x", "s3:/bucket" };
	char out[256], small[16];
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(bm_wcfs_normalize_url(bad[i], out, sizeof(out)), BM_EINVAL);
		assert_int_equal(bm_wcfs_default_mountpoint(bad[i], out, sizeof(out)), BM_EINVAL);
	}
	assert_int_equal(bm_wcfs_normalize_url(NULL, out, sizeof(out)), BM_EINVAL);
	assert_int_equal(bm_wcfs_default_mountpoint(NULL, out, sizeof(out)), BM_EINVAL);
	/* 17 bytes and its NUL do not fit in 16; 15 and the NUL do (the
	 * trailing slash goes). */
	assert_int_equal(bm_wcfs_normalize_url("http://host:1/ab", small, sizeof(small)), BM_EINVAL);
	assert_int_equal(bm_wcfs_normalize_url("http://host:1/a/", small, sizeof(small)), 0);
	assert_string_equal(small, "http://host:1/a");
	/* A mountpoint is 37 bytes and its NUL. */
	char mnt[64];
	assert_int_equal(bm_wcfs_default_mountpoint("http://host", mnt, 37), BM_EINVAL);
	assert_int_equal(bm_wcfs_default_mountpoint("http://host", mnt, 38), 0);
	assert_int_equal(strlen(mnt), 37);
}

static void every_spelling_of_a_server_has_one_mountpoint_and_another_server_another(void **state)
{
	char a[64], b[64], c[64], d[64];
	(void)state;

	assert_int_equal(bm_wcfs_default_mountpoint("http://Host:9000/data/", a, sizeof(a)), 0);
	assert_int_equal(bm_wcfs_default_mountpoint("http://HOST:9000/data//", b, sizeof(b)), 0);
	assert_int_equal(bm_wcfs_default_mountpoint("http://host:9000/Data", c, sizeof(c)), 0);
	assert_int_equal(bm_wcfs_default_mountpoint("http://host:9001/data", d, sizeof(d)), 0);
	assert_true(strncmp(a, "/dev/shm/blkmap-wcfs/", 21) == 0);
	assert_int_equal(strspn(a + 21, "0123456789abcdef"), 16);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	assert_string_not_equal(a, d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(spellings_of_one_server_normalize_to_one_url),
		cmocka_unit_test(what_is_not_a_server_url_or_does_not_fit_is_refused),
		cmocka_unit_test(every_spelling_of_a_server_has_one_mountpoint_and_another_server_another),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
