/* tests/test_s3_client.c — libblkmap and the `blkmap` CLI on s3:// URLs
 * against the real Ceph RADOS Gateway (tests/rgw.sh): put, get, sum, patch
 * and log through the CLI (log over several listing pages), mapping from
 * C, a plain object as a flat dataset, a stale commit refused by If-Match,
 * unsigned requests to a public bucket, what a wrong key says, and a
 * mirror of a bucket (files, listed directories, overlay mode).  Each test
 * has its own bucket; the library is configured through the AWS_*
 * environment, as a user's.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "client_util.h"
#include "rgw_util.h"
#include "wcfs_util.h"

static struct tr_rgw rgw;

static int group_setup(void **state)
{
	(void)state;
	if (tr_rgw_get_or_skip(&rgw) != 0)
		return -1;
	tr_rgw_setenv(&rgw);
	setenv("BLKMAP_WCFS", "off", 1);
	setenv("BLKMAP_RETRY_BASE_MS", "5", 1);
	return 0;
}

static unsigned char *random_bytes(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (unsigned char)(seed >> 16);
	}
	return p;
}

/* "s3://BUCKET/PATH" of a new bucket into out. */
static const char *s3url(char *out, size_t n, const char *bucket_prefix, const char *path)
{
	char b[128];

	tr_bucket(&rgw, bucket_prefix, b, sizeof(b));
	snprintf(out, n, "s3://%s%s%s", b, path[0] ? "/" : "", path);
	return out;
}

/* Runs the CLI; asserts its exit status; its stdout (malloc'd) back. */
static char *cli_ok(const char *const *argv)
{
	char *out = NULL, *err = NULL;
	int st = tc_cli(&out, &err, argv);

	if (st != 0)
		fail_msg("blkmap %s %s: exit %d: %s", argv[0], argv[1], st, err ? err : "");
	free(err);
	return out;
}

static void sha256_of_file(const char *path, char out[65])
{
	char cmd[4200];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, 65, p));
	pclose(p);
	assert_int_equal(strlen(out), 64);
}

static unsigned char *read_file(const char *path, size_t *lenp)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p;
	long len;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	p = malloc((size_t)len + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*lenp = (size_t)len;
	return p;
}

static void test_put_get_sum_patch_and_log_through_the_cli(void **state)
{
	const size_t len = (5u << 19) + 1234; /* 2.5 MiB and a bit: a partial last block */
	unsigned char *data = random_bytes(len, 1), *back, patch[3000];
	char url[256], want[65], *file, *pfile, out_path[] = "/tmp/blkmap-s3-get-XXXXXX";
	char *out;
	size_t blen;
	int fd;

	(void)state;
	s3url(url, sizeof(url), "cli", "datasets/one");
	file = tc_tmpfile(data, len);
	free(cli_ok((const char *const[]){ "put", "--blksize", "262144", file, url, NULL }));

	sha256_of_file(file, want);
	out = cli_ok((const char *const[]){ "sum", url, NULL });
	assert_memory_equal(out, want, 64);
	free(out);

	fd = mkstemp(out_path);
	assert_true(fd >= 0);
	close(fd);
	free(cli_ok((const char *const[]){ "get", url, out_path, NULL }));
	back = read_file(out_path, &blen);
	assert_int_equal(blen, len);
	assert_memory_equal(back, data, len);
	free(back);

	/* A patch across a block boundary: generation 2. */
	memset(patch, 0xab, sizeof(patch));
	pfile = tc_tmpfile(patch, sizeof(patch));
	free(cli_ok((const char *const[]){ "patch", url, "261000", pfile, NULL }));
	memcpy(data + 261000, patch, sizeof(patch));
	free(cli_ok((const char *const[]){ "get", url, out_path, NULL }));
	back = read_file(out_path, &blen);
	assert_int_equal(blen, len);
	assert_memory_equal(back, data, len);
	free(back);

	out = cli_ok((const char *const[]){ "log", url, NULL });
	assert_int_equal(tc_lines(out), 2);
	assert_true(strncmp(out, "generation 2 size ", 18) == 0);
	assert_true(strncmp(strchr(out, '\n') + 1, "generation 1 size ", 18) == 0);
	free(out);

	unlink(out_path);
	unlink(file);
	unlink(pfile);
	free(file);
	free(pfile);
	free(data);
}

/* `blkmap log` lists the kept generations with ListObjectsV2, page by page
 * (RGW pages hold 1000 keys): 1005 generations, one not kept, all found
 * and in order. */
#define LOG_GENS 1005
#define LOG_PUTTERS 8

/* The kept copies gen/<g>.json of a log, PUT by LOG_PUTTERS threads at
 * once (a thousand one by one took 8 s): each takes the next generation
 * and notes the first failure; the test asserts in its own thread. */
struct log_puts {
	const char *bucket;
	char **text;               /* [g], NULL: not kept */
	size_t *len;
	int next;                  /* atomic */
	int failed_gen;            /* atomic; 0: none */
	long failed_status;
};

static void *log_putter(void *arg)
{
	struct log_puts *lp = arg;
	char path[512];
	struct tr_resp r;
	int g;

	while ((g = __atomic_fetch_add(&lp->next, 1, __ATOMIC_RELAXED)) <= LOG_GENS) {
		if (lp->text[g] == NULL)
			continue;
		snprintf(path, sizeof(path), "/%s/ds/gen/%d.json", lp->bucket, g);
		tr_s3(&rgw, "PUT", path, NULL, lp->text[g], lp->len[g], &r);
		if (r.status != 200) {
			int none = 0;
			if (__atomic_compare_exchange_n(&lp->failed_gen, &none, g, false, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED))
				lp->failed_status = r.status;
		}
		tr_resp_free(&r);
	}
	return NULL;
}

static void test_log_lists_generations_over_several_pages(void **state)
{
	char url[256], b[128], path[512], *out;
	unsigned char data[4096];
	struct tr_resp r;
	char *text[LOG_GENS + 1] = { NULL };
	size_t len[LOG_GENS + 1];
	pthread_t t[LOG_PUTTERS];

	(void)state;
	memset(data, 7, sizeof(data));
	tr_bucket(&rgw, "logpages", b, sizeof(b));
	snprintf(url, sizeof(url), "s3://%s/ds", b);
	tc_put(url, 4096, data, sizeof(data));
	snprintf(path, sizeof(path), "/%s/ds/gen/1.json", b);
	tr_s3(&rgw, "GET", path, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	json_t *man = json_loadb(r.body, r.len, 0, NULL);
	tr_resp_free(&r);
	assert_non_null(man);
	/* Generations 2..LOG_GENS kept as copies of 1 with their number,
	 * but 600; the last one current. */
	for (int g = 2; g <= LOG_GENS; g++) {
		json_object_set_new(man, "generation", json_integer(g));
		text[g] = tc_manifest_text(man, &len[g]); /* format 2: sealed again */
		assert_true(len[g] > 0);
	}
	json_decref(man);
	char *current = text[LOG_GENS];
	size_t current_len = len[LOG_GENS];
	free(text[600]);
	text[600] = NULL;
	struct log_puts lp = { .bucket = b, .text = text, .len = len, .next = 2 };
	for (int i = 0; i < LOG_PUTTERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, log_putter, &lp), 0);
	for (int i = 0; i < LOG_PUTTERS; i++)
		pthread_join(t[i], NULL);
	if (lp.failed_gen != 0)
		fail_msg("PUT gen/%d.json: status %ld", lp.failed_gen, lp.failed_status);
	snprintf(path, sizeof(path), "/%s/ds/manifest.json", b);
	tr_s3(&rgw, "PUT", path, NULL, current, current_len, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);
	for (int g = 2; g <= LOG_GENS; g++)
		free(text[g]);
	/* Keys past the last page's start that are not generations. */
	snprintf(path, sizeof(path), "/%s/ds/gen/zz", b);
	tr_s3(&rgw, "PUT", path, NULL, "x", 1, &r);
	tr_resp_free(&r);

	out = cli_ok((const char *const[]){ "log", url, NULL });
	assert_int_equal(tc_lines(out), LOG_GENS);
	const char *line = out;
	for (int g = LOG_GENS; g >= 1; g--) {
		char want[128];
		if (g == 600)
			snprintf(want, sizeof(want), "generation 600 (not kept)\n");
		else
			snprintf(want, sizeof(want), "generation %d size 4096 blocks 1 ", g);
		if (strncmp(line, want, strlen(want)) != 0)
			fail_msg("line for generation %d: \"%.60s\", want \"%s\"", g, line, want);
		line = strchr(line, '\n') + 1;
	}
	free(out);
}

static void test_a_mapping_from_c_reads_what_was_written(void **state)
{
	const size_t len = 3u << 20;
	unsigned char *data = random_bytes(len, 2), *got;
	char url[256];
	bm_dataset *ds;

	(void)state;
	s3url(url, sizeof(url), "map", "ds");
	tc_put(url, 1u << 20, data, len);
	ds = tc_open(url, 0);
	assert_int_equal(bm_size(ds), len);
	assert_int_equal(bm_generation(ds), 1);
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, len);
	free(got);
	bm_close(ds);
	free(data);
}

static void test_a_plain_object_maps_as_a_flat_dataset(void **state)
{
	const size_t len = (1u << 20) * 2 + 77;
	unsigned char *data = random_bytes(len, 3), *got;
	char b[128], path[256], url[256];
	struct tr_resp r;
	bm_dataset *ds;

	(void)state;
	tr_bucket(&rgw, "flat", b, sizeof(b));
	snprintf(path, sizeof(path), "/%s/plain/file.bin", b);
	tr_s3(&rgw, "PUT", path, NULL, data, len, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);
	snprintf(url, sizeof(url), "s3://%s/plain/file.bin", b);
	ds = tc_open_as_given(url, 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), len);
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, len);
	free(got);
	bm_close(ds);
	free(data);
}

static void test_a_stale_commit_is_a_conflict_and_publishes_nothing(void **state)
{
	unsigned char *a = random_bytes(1u << 16, 4), *b2 = random_bytes(1u << 16, 5);
	unsigned char *base = random_bytes(1u << 17, 6);
	char url[256];
	bm_dataset *x, *y;
	uint64_t gen = 0;

	(void)state;
	s3url(url, sizeof(url), "stale", "ds");
	tc_put(url, 1u << 16, base, 1u << 17);
	x = tc_open(url, 0);
	y = tc_open(url, 0);
	assert_int_equal(bm_write(x, 0, a, 1u << 16), 0);
	assert_int_equal(bm_commit(x, &gen), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(bm_write(y, 0, b2, 1u << 16), 0);
	assert_int_equal(bm_commit(y, &gen), BM_ECONFLICT);
	/* The store holds x's generation 2. */
	memcpy(base, a, 1u << 16);
	assert_true(tc_dataset_equals(url, 0, base, 1u << 17));
	/* y, refreshed past its discarded change, commits as generation 3. */
	assert_int_equal(bm_discard(y), 0);
	assert_int_equal(bm_refresh(y), 0);
	assert_int_equal(bm_write(y, 1u << 16, b2, 1u << 16), 0);
	assert_int_equal(bm_commit(y, &gen), 0);
	assert_int_equal(gen, 3);
	memcpy(base + (1u << 16), b2, 1u << 16);
	assert_true(tc_dataset_equals(url, 0, base, 1u << 17));
	bm_close(x);
	bm_close(y);
	free(a);
	free(b2);
	free(base);
}

static void test_a_public_bucket_reads_without_credentials(void **state)
{
	const char *const acl[] = { "x-amz-acl: public-read", NULL };
	const size_t len = 100000;
	unsigned char *data = random_bytes(len, 7), *got;
	char b[128], path[256], url[256];
	struct tr_resp r;
	bm_dataset *ds;

	(void)state;
	snprintf(b, sizeof(b), "public-%ld", (long)getpid());
	snprintf(path, sizeof(path), "/%s", b);
	tr_s3(&rgw, "PUT", path, acl, "", 0, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);
	snprintf(path, sizeof(path), "/%s/obj", b);
	tr_s3(&rgw, "PUT", path, acl, data, len, &r);
	assert_int_equal(r.status, 200);
	tr_resp_free(&r);

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	snprintf(url, sizeof(url), "s3://%s/obj", b);
	ds = tc_open(url, 0);
	assert_int_equal(bm_size(ds), len);
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, len);
	free(got);
	bm_close(ds);
	tr_rgw_setenv(&rgw);
	free(data);
}

static void test_a_wrong_secret_is_one_line_naming_the_key_not_the_secret(void **state)
{
	char url[256], *out = NULL, *err = NULL;
	unsigned char data[1000] = { 1 };
	int st;

	(void)state;
	s3url(url, sizeof(url), "wrongkey", "ds");
	tc_put(url, 1u << 16, data, sizeof(data));
	setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-xyzzy", 1);
	st = tc_cli(&out, &err, (const char *const[]){ "stat", url, NULL });
	tr_rgw_setenv(&rgw);
	assert_int_equal(st, 1);
	assert_non_null(err);
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "403"));
	assert_non_null(strstr(err, "SignatureDoesNotMatch"));
	assert_non_null(strstr(err, rgw.access_key));
	assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
	assert_null(strstr(err, "xyzzy"));
	free(out);
	free(err);

	setenv("AWS_ACCESS_KEY_ID", "NOSUCHACCESSKEY", 1);
	st = tc_cli(&out, &err, (const char *const[]){ "stat", url, NULL });
	tr_rgw_setenv(&rgw);
	assert_int_equal(st, 1);
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "InvalidAccessKeyId"));
	assert_non_null(strstr(err, "NOSUCHACCESSKEY"));
	free(out);
	free(err);
}

static void test_a_missing_dataset_and_a_bad_url_say_so(void **state)
{
	char url[256], *out = NULL, *err = NULL;
	int st;

	(void)state;
	s3url(url, sizeof(url), "missing", "nothing/here");
	st = tc_cli(&out, &err, (const char *const[]){ "stat", url, NULL });
	assert_int_equal(st, 1);
	assert_non_null(strstr(err, "no dataset (no manifest.json) and no object there"));
	assert_int_equal(tc_lines(err), 1);
	free(out);
	free(err);
	st = tc_cli(&out, &err, (const char *const[]){ "stat", "s3://Bad_Bucket/x", NULL });
	assert_int_equal(st, 1);
	assert_non_null(strstr(err, "bucket name 'Bad_Bucket' is not valid"));
	assert_int_equal(tc_lines(err), 1);
	free(out);
	free(err);
}

/* blkmap-wcfs s3://BUCKET MOUNTPOINT shows the bucket's datasets, and a
 * client mapping one of them reads through it (overlay mode). */
/* The names in directory path, sorted, each followed by '\n' (no . and ..). */
static void list_dir(const char *path, char *out, size_t n)
{
	struct dirent **ents;
	int k = scandir(path, &ents, NULL, alphasort);

	out[0] = '\0';
	if (k < 0)
		fail_msg("scandir %s: %s", path, strerror(errno));
	for (int i = 0; i < k; i++) {
		if (strcmp(ents[i]->d_name, ".") != 0 && strcmp(ents[i]->d_name, "..") != 0)
			snprintf(out + strlen(out), n - strlen(out), "%s\n", ents[i]->d_name);
		free(ents[i]);
	}
	free(ents);
}

static void test_a_mirror_of_a_bucket_serves_files_and_overlay_mode(void **state)
{
	const size_t len = (3u << 19) + 99;
	unsigned char *data = random_bytes(len, 8), *got;
	char b[128], server[160], url[256], path[600];
	struct wt_mirror m;
	struct bm_stats st;
	size_t flen;
	bm_dataset *ds;
	int rc;

	(void)state;
	tr_bucket(&rgw, "mirror", b, sizeof(b));
	snprintf(server, sizeof(server), "s3://%s", b);
	snprintf(url, sizeof(url), "s3://%s/sub/ds", b);
	tc_put(url, 1u << 19, data, len);
	snprintf(path, sizeof(path), "s3://%s/top", b);
	tc_put(path, 4096, data, 4096);
	rc = wt_mount(&m, server, NULL);
	if (rc == 1) {
		printf("skipped: %s\n", wt_skip_reason);
		free(data);
		skip();
	}
	assert_int_equal(rc, 0);
	/* The directories list what the bucket holds (ListObjectsV2). */
	char names[512];
	snprintf(path, sizeof(path), "%s/head", m.mnt);
	list_dir(path, names, sizeof(names));
	assert_string_equal(names, "sub\ntop\n");
	snprintf(path, sizeof(path), "%s/head/sub", m.mnt);
	list_dir(path, names, sizeof(names));
	assert_string_equal(names, "ds\n");
	snprintf(path, sizeof(path), "%s/@1/sub", m.mnt);
	list_dir(path, names, sizeof(names));
	assert_string_equal(names, "ds\n");
	struct stat sb;
	snprintf(path, sizeof(path), "%s/head/nothing", m.mnt);
	assert_int_equal(stat(path, &sb), -1);
	assert_int_equal(errno, ENOENT);
	snprintf(path, sizeof(path), "%s/head/sub/ds", m.mnt);
	got = wt_read_file(path, &flen);
	assert_non_null(got);
	assert_int_equal(flen, len);
	assert_memory_equal(got, data, len);
	free(got);

	setenv("BLKMAP_WCFS", m.mnt, 1);
	ds = tc_open(url, 0);
	setenv("BLKMAP_WCFS", "off", 1);
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, len);
	free(got);
	bm_stats(ds, &st);
	if (strcmp(st.mode, "overlay") != 0)
		fail_msg("mode %s: %s", st.mode, st.mode_why);
	assert_int_equal(st.fetched_bytes, 0);
	bm_close(ds);
	assert_int_equal(wt_unmount(&m), 0);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_sum_patch_and_log_through_the_cli),
		cmocka_unit_test(test_log_lists_generations_over_several_pages),
		cmocka_unit_test(test_a_mapping_from_c_reads_what_was_written),
		cmocka_unit_test(test_a_plain_object_maps_as_a_flat_dataset),
		cmocka_unit_test(test_a_stale_commit_is_a_conflict_and_publishes_nothing),
		cmocka_unit_test(test_a_public_bucket_reads_without_credentials),
		cmocka_unit_test(test_a_wrong_secret_is_one_line_naming_the_key_not_the_secret),
		cmocka_unit_test(test_a_missing_dataset_and_a_bad_url_say_so),
		cmocka_unit_test(test_a_mirror_of_a_bucket_serves_files_and_overlay_mode),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
