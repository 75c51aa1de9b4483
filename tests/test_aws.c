/* tests/test_aws.c — the AWS configuration (client/aws.c) alone, no
 * server: environment and profile precedence over generated
 * ~/.aws/credentials and ~/.aws/config files, bad files and half-set keys
 * (one line, never the secret), s3:// URLs, and the canonical encoding of
 * keys and query strings that SigV4 signs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "../client/aws.h"
#include "../client/internal.h"

#define SECRET_ENV "env-secret-never-shown"
#define SECRET_FILE "file-secret-never-shown"

static char dir[] = "/tmp/blkmap-aws-XXXXXX";
static char cred_path[256], conf_path[256];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A clean environment pointing at this test's two files. */
static int setup(void **state)
{
	static const char *const vars[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", NULL,
	};

	(void)state;
	for (const char *const *v = vars; *v; v++)
		unsetenv(*v);
	setenv("AWS_SHARED_CREDENTIALS_FILE", cred_path, 1);
	setenv("AWS_CONFIG_FILE", conf_path, 1);
	unlink(cred_path);
	unlink(conf_path);
	return 0;
}

static void load_ok(struct bm_aws *a)
{
	char msg[1024] = "";
	int rc = bm_aws_load(a, msg, sizeof(msg));

	if (rc != 0)
		fail_msg("bm_aws_load: %d %s", rc, msg);
}

/* Loading fails with BM_EINVAL; the message holds want and no secret. */
static void load_fails(const char *want)
{
	struct bm_aws a;
	char msg[1024] = "";

	if (bm_aws_load(&a, msg, sizeof(msg)) != BM_EINVAL)
		fail_msg("loaded, expected an error saying '%s'", want);
	if (strstr(msg, want) == NULL)
		fail_msg("message '%s' does not say '%s'", msg, want);
	assert_null(strchr(msg, '\n'));
	assert_null(strstr(msg, SECRET_ENV));
	assert_null(strstr(msg, SECRET_FILE));
}

static void test_no_credentials_means_unsigned_requests_in_us_east_1(void **state)
{
	struct bm_aws a;
	char d[512];

	(void)state;
	load_ok(&a);
	assert_null(a.access_key);
	assert_null(a.secret_key);
	assert_null(a.endpoint);
	assert_string_equal(a.region, "us-east-1");
	assert_string_equal(a.profile, "default");
	bm_aws_describe(&a, d, sizeof(d));
	assert_non_null(strstr(d, "unsigned"));
	bm_aws_free(&a);
}

static void test_environment_keys_win_over_the_profile(void **state)
{
	struct bm_aws a;
	char d[512];

	(void)state;
	write_file(cred_path, "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = "
		   SECRET_FILE "\n");
	setenv("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET_ENV, 1);
	setenv("AWS_SESSION_TOKEN", "tok", 1);
	load_ok(&a);
	assert_string_equal(a.access_key, "ENVKEY");
	assert_string_equal(a.secret_key, SECRET_ENV);
	assert_string_equal(a.session_token, "tok");
	bm_aws_describe(&a, d, sizeof(d));
	assert_non_null(strstr(d, "ENVKEY"));
	assert_non_null(strstr(d, "AWS_ACCESS_KEY_ID"));
	assert_null(strstr(d, SECRET_ENV));
	bm_aws_free(&a);
}

static void test_aws_profile_selects_a_credentials_section(void **state)
{
	struct bm_aws a;
	char d[512];

	(void)state;
	write_file(cred_path,
		   "# a comment\n"
		   "[default]\naws_access_key_id = DEFKEY\naws_secret_access_key = x\n\n"
		   "[work]\n"
		   "; another comment\n"
		   "aws_access_key_id=WORKKEY\n"
		   "  aws_secret_access_key   =   " SECRET_FILE "  \n"
		   "aws_session_token = worktoken\n");
	setenv("AWS_PROFILE", "work", 1);
	/* An indented line is a nested setting, not read: no secret. */
	load_fails("aws_access_key_id without aws_secret_access_key");

	write_file(cred_path,
		   "[default]\naws_access_key_id = DEFKEY\naws_secret_access_key = x\n"
		   "[work]\naws_access_key_id=WORKKEY\naws_secret_access_key   =   " SECRET_FILE "  \n"
		   "aws_session_token = worktoken\n");
	load_ok(&a);
	assert_string_equal(a.access_key, "WORKKEY");
	assert_string_equal(a.secret_key, SECRET_FILE);
	assert_string_equal(a.session_token, "worktoken");
	assert_string_equal(a.profile, "work");
	bm_aws_describe(&a, d, sizeof(d));
	assert_non_null(strstr(d, "profile 'work'"));
	assert_non_null(strstr(d, cred_path));
	bm_aws_free(&a);

	unsetenv("AWS_PROFILE");
	load_ok(&a);
	assert_string_equal(a.access_key, "DEFKEY");
	bm_aws_free(&a);
}

static void test_config_file_profiles_are_named_profile_space_name(void **state)
{
	struct bm_aws a;

	(void)state;
	write_file(conf_path,
		   "[default]\nregion = eu-west-1\n"
		   "[profile lab]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:9000/\n"
		   "aws_access_key_id = LABKEY\naws_secret_access_key = " SECRET_FILE "\n"
		   "ca_bundle = /etc/lab-ca.pem\n"
		   "s3 =\n  addressing_style = path\n"
		   "[lab]\nregion = wrong-section\n");
	load_ok(&a);
	assert_string_equal(a.region, "eu-west-1");
	assert_null(a.access_key);
	bm_aws_free(&a);

	setenv("AWS_PROFILE", "lab", 1);
	load_ok(&a);
	assert_string_equal(a.region, "ap-south-1");
	assert_string_equal(a.endpoint, "http://127.0.0.1:9000");
	assert_string_equal(a.access_key, "LABKEY");
	assert_string_equal(a.ca_bundle, "/etc/lab-ca.pem");
	bm_aws_free(&a);

	/* The credentials file's keys win over the config file's. */
	write_file(cred_path, "[lab]\naws_access_key_id = CREDKEY\naws_secret_access_key = s\n");
	load_ok(&a);
	assert_string_equal(a.access_key, "CREDKEY");
	assert_string_equal(a.region, "ap-south-1");
	bm_aws_free(&a);
}

static void test_region_endpoint_and_ca_bundle_from_the_environment_win(void **state)
{
	struct bm_aws a;

	(void)state;
	write_file(conf_path, "[default]\nregion = eu-west-1\nendpoint_url = http://conf:1\n"
		   "ca_bundle = /conf.pem\n");
	setenv("AWS_DEFAULT_REGION", "us-west-2", 1);
	setenv("AWS_ENDPOINT_URL", "http://generic:2", 1);
	load_ok(&a);
	assert_string_equal(a.region, "us-west-2");
	assert_string_equal(a.endpoint, "http://generic:2");
	assert_string_equal(a.ca_bundle, "/conf.pem");
	bm_aws_free(&a);

	setenv("AWS_REGION", "eu-central-1", 1);
	setenv("AWS_ENDPOINT_URL_S3", "https://s3only:3/", 1);
	setenv("AWS_CA_BUNDLE", "/env.pem", 1);
	load_ok(&a);
	assert_string_equal(a.region, "eu-central-1");
	assert_string_equal(a.endpoint, "https://s3only:3");
	assert_string_equal(a.ca_bundle, "/env.pem");
	bm_aws_free(&a);
}

static void test_half_set_keys_are_one_line_without_the_secret(void **state)
{
	(void)state;
	setenv("AWS_SECRET_ACCESS_KEY", SECRET_ENV, 1);
	load_fails("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_ACCESS_KEY_ID", "K", 1);
	load_fails("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
	unsetenv("AWS_ACCESS_KEY_ID");
	write_file(cred_path, "[default]\naws_secret_access_key = " SECRET_FILE "\n");
	load_fails("aws_secret_access_key without aws_access_key_id");
}

static void test_a_profile_that_does_not_exist_is_named(void **state)
{
	(void)state;
	write_file(cred_path, "[default]\naws_access_key_id = A\naws_secret_access_key = B\n");
	setenv("AWS_PROFILE", "nosuch", 1);
	load_fails("AWS_PROFILE=nosuch: no such profile in");
	unsetenv("AWS_PROFILE");
	setenv("AWS_DEFAULT_PROFILE", "legacy", 1);
	load_fails("AWS_DEFAULT_PROFILE=legacy");
}

static void test_bad_files_and_values_name_the_file_and_line(void **state)
{
	char want[300];

	(void)state;
	write_file(cred_path, "[default]\naws_access_key_id = A\nthis line is wrong\n");
	snprintf(want, sizeof(want), "%s:3: expected", cred_path);
	load_fails(want);
	write_file(cred_path, "[default\n");
	snprintf(want, sizeof(want), "%s:1: a section header needs a closing ']'", cred_path);
	load_fails(want);
	unlink(cred_path);
	setenv("AWS_ENDPOINT_URL_S3", "ftp://x", 1);
	load_fails("AWS_ENDPOINT_URL_S3=ftp://x: the S3 endpoint must be an http:// or https:// URL");
	setenv("AWS_ENDPOINT_URL_S3", "http://", 1);
	load_fails("has no host");
	setenv("AWS_ENDPOINT_URL_S3", "http://h/?x=1", 1);
	load_fails("must not hold a query");
	unsetenv("AWS_ENDPOINT_URL_S3");
	setenv("AWS_REGION", "EU West", 1);
	load_fails("region 'EU West'");
	unsetenv("AWS_REGION");
	/* A directory where the file should be cannot be read. */
	setenv("AWS_CONFIG_FILE", dir, 1);
	load_fails("AWS config file");
	/* Nor a link that leads nowhere but to itself. */
	char loop[200];
	snprintf(loop, sizeof(loop), "%s/loop", dir);
	unlink(loop);
	assert_int_equal(symlink(loop, loop), 0);
	setenv("AWS_CONFIG_FILE", loop, 1);
	snprintf(want, sizeof(want), "AWS config file %s: %s", loop, strerror(ELOOP));
	load_fails(want);
	unlink(loop);
	setenv("AWS_CONFIG_FILE", conf_path, 1);
	/* A line longer than any setting is refused, not cut into two. */
	char *longline = malloc(20000);
	assert_non_null(longline);
	memset(longline, 'x', 19998);
	memcpy(longline, "region = ", 9);
	longline[19998] = '\n';
	longline[19999] = '\0';
	write_file(conf_path, "[default]\n");
	FILE *f = fopen(conf_path, "a");
	assert_non_null(f);
	fputs(longline, f);
	fclose(f);
	free(longline);
	snprintf(want, sizeof(want), "%s:2: line longer than", conf_path);
	load_fails(want);
	unlink(conf_path);
}

static void test_s3_urls_split_into_bucket_and_prefix(void **state)
{
	static const struct {
		const char *url, *bucket, *prefix;
	} good[] = {
		{ "s3://bucket", "bucket", "" },
		{ "s3://bucket/", "bucket", "" },
		{ "s3://my.bucket-1/ds", "my.bucket-1", "ds" },
		{ "s3://abc/a/b/c//", "abc", "a/b/c" },
		{ "s3://abc/with space+plus?q", "abc", "with space+plus?q" },
	};
	static const struct {
		const char *url, *why;
	} bad[] = {
		{ "http://bucket/x", "not an s3:// URL" },
		{ "s3://", "bucket name '' is not valid" },
		{ "s3://ab/x", "bucket name 'ab' is not valid" },
		{ "s3://Upper/x", "bucket name 'Upper' is not valid" },
		{ "s3://-dash/x", "is not valid" },
		{ "s3://under_score", "is not valid" },
		{ "s3://bucket//x", "empty path segment" },
		{ "s3://bucket/a//b", "empty path segment" },
		{ "s3://bucket/a\tb", "control character" },
	};
	char msg[512], *b, *p;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(bm_s3_url_parse(good[i].url, &b, &p, msg, sizeof(msg)), 0);
		assert_string_equal(b, good[i].bucket);
		assert_string_equal(p, good[i].prefix);
		free(b);
		free(p);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(bm_s3_url_parse(bad[i].url, &b, &p, msg, sizeof(msg)), BM_EINVAL);
		assert_null(b);
		if (strstr(msg, bad[i].why) == NULL)
			fail_msg("%s: message '%s' does not say '%s'", bad[i].url, msg, bad[i].why);
		assert_null(strchr(msg, '\t'));
	}
	assert_true(bm_s3_is_url("s3://x"));
	assert_false(bm_s3_is_url("https://x"));
}

static void test_keys_and_queries_are_encoded_as_sigv4_signs_them(void **state)
{
	const char *const kv[] = {
		"prefix", "ds/gen/", "list-type", "2", "continuation-token", "a+b=c/d~",
		"skipped", NULL,
	};
	char out[64] = "";
	struct bm_aws a = { .region = "eu-west-1" };
	char *u, *q;

	(void)state;
	assert_true(bm_uri_encode(out, sizeof(out), "a b+c/d~e_f.g-h%é", true));
	assert_string_equal(out, "a%20b%2Bc/d~e_f.g-h%25%C3%A9");
	out[0] = '\0';
	assert_true(bm_uri_encode(out, sizeof(out), "a/b", false));
	assert_string_equal(out, "a%2Fb");
	out[0] = '\0';
	assert_false(bm_uri_encode(out, 4, "abcd", true));

	q = bm_s3_query(kv, 4);
	assert_string_equal(q, "continuation-token=a%2Bb%3Dc%2Fd~&list-type=2&prefix=ds%2Fgen%2F");
	free(q);

	u = bm_s3_url(&a, "bkt", "ds/a b.json", NULL);
	assert_string_equal(u, "https://bkt.s3.eu-west-1.amazonaws.com/ds/a%20b.json");
	free(u);
	u = bm_s3_url(&a, "my.bkt", "k", "list-type=2");
	assert_string_equal(u, "https://s3.eu-west-1.amazonaws.com/my.bkt/k?list-type=2");
	free(u);
	a.endpoint = "http://127.0.0.1:8000";
	u = bm_s3_url(&a, "bkt", "", "list-type=2");
	assert_string_equal(u, "http://127.0.0.1:8000/bkt/?list-type=2");
	free(u);
}

static int group_setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cred_path, sizeof(cred_path), "%s/credentials", dir);
	snprintf(conf_path, sizeof(conf_path), "%s/config", dir);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	unlink(cred_path);
	unlink(conf_path);
	rmdir(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_no_credentials_means_unsigned_requests_in_us_east_1, setup),
		cmocka_unit_test_setup(test_environment_keys_win_over_the_profile, setup),
		cmocka_unit_test_setup(test_aws_profile_selects_a_credentials_section, setup),
		cmocka_unit_test_setup(test_config_file_profiles_are_named_profile_space_name, setup),
		cmocka_unit_test_setup(test_region_endpoint_and_ca_bundle_from_the_environment_win, setup),
		cmocka_unit_test_setup(test_half_set_keys_are_one_line_without_the_secret, setup),
		cmocka_unit_test_setup(test_a_profile_that_does_not_exist_is_named, setup),
		cmocka_unit_test_setup(test_bad_files_and_values_name_the_file_and_line, setup),
		cmocka_unit_test(test_s3_urls_split_into_bucket_and_prefix),
		cmocka_unit_test(test_keys_and_queries_are_encoded_as_sigv4_signs_them),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
