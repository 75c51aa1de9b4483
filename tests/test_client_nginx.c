/* tests/test_client_nginx.c — libblkmap against nginx with WebDAV (PUT,
 * DELETE, Range GET, ETag; If-Match on PUT ignored): a round trip, a patch
 * and a single writer's commits work the same as on blkmap-server.
 * Conflicts are not tested here: nginx cannot detect them (docs/FORMAT.md,
 * "Servers without conditional PUT").  Skipped when nginx is not installed.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#define KiB ((size_t)1 << 10)

static int setup(void **state)
{
	struct tc_nginx *n = calloc(1, sizeof(*n));

	*state = n;
	if (access(TC_NGINX_PATH, X_OK) != 0)
		return 0; /* each test skips */
	return tc_nginx_start(n);
}

static int teardown(void **state)
{
	tc_nginx_stop(*state);
	free(*state);
	return 0;
}

static struct tc_nginx *nginx_or_skip(void **state)
{
	struct tc_nginx *n = *state;
	if (n->pid <= 0) {
		fprintf(stderr, "skipped: %s is not installed\n", TC_NGINX_PATH);
		skip();
	}
	return n;
}

static void round_trip_through_nginx_reads_back_every_byte(void **state)
{
	struct tc_nginx *n = nginx_or_skip(state);
	size_t bs = 64 * KiB, size = 20 * bs + 999;
	unsigned char *data = ts_pattern(size, 51);
	char url[256];

	snprintf(url, sizeof(url), "%s/nx/rt", n->url);
	assert_int_equal(tc_put(url, bs, data, size), 1);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

static void patch_and_commits_through_nginx_keep_every_generation(void **state)
{
	struct tc_nginx *n = nginx_or_skip(state);
	size_t bs = 16 * KiB, size = 12 * bs;
	unsigned char *data = ts_pattern(size, 52), *old = malloc(size);
	char url[256], *out, *patch = tc_tmpfile("nginx!", 6);
	struct bm_stats st;

	memcpy(old, data, size);
	snprintf(url, sizeof(url), "%s/nx/patch", n->url);
	tc_put(url, bs, data, size);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "patch", url, "20000", patch, NULL }), 0);
	assert_string_equal(out, "2\n");
	free(out);
	memcpy(data + 20000, "nginx!", 6);

	/* A library commit of one dirty block on top. */
	bm_dataset *ds = tc_open(url, 0);
	bm_mapping *m;
	void *addr;
	uint64_t gen;
	assert_int_equal(bm_generation(ds), 2);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memset((char *)addr + 11 * bs, 'W', 10);
	memset(data + 11 * bs, 'W', 10);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_stats(ds, &st);
	assert_int_equal(st.uploaded_blocks, 1);
	bm_unmap(m);
	bm_close(ds);

	assert_true(tc_dataset_equals(url, 0, data, size));
	assert_true(tc_dataset_equals(url, 1, old, size));
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "log", url, NULL }), 0);
	assert_int_equal(tc_lines(out), 3);
	free(out);
	unlink(patch);
	free(patch);
	free(old);
	free(data);
}

static void a_plain_file_on_nginx_maps_as_a_flat_object(void **state)
{
	struct tc_nginx *n = nginx_or_skip(state);
	size_t size = 1536 * KiB + 7;
	unsigned char *data = ts_pattern(size, 53);
	char path[4096], url[256];

	snprintf(path, sizeof(path), "%s/www/plain.bin", n->dir);
	FILE *f = fopen(path, "wb");
	assert_int_equal(fwrite(data, 1, size, f), size);
	fclose(f);
	snprintf(url, sizeof(url), "%s/plain.bin", n->url);
	bm_dataset *ds = tc_open(url, 0);
	assert_true(bm_is_flat(ds));
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip_through_nginx_reads_back_every_byte),
		cmocka_unit_test(patch_and_commits_through_nginx_keep_every_generation),
		cmocka_unit_test(a_plain_file_on_nginx_maps_as_a_flat_object),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
