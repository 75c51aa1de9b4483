/* tests/test_client_edges.c — libblkmap (client/dataset.c, client/commit.c)
 * where a dataset is not what a writer of this version leaves: a hand-made
 * version 2 manifest without its "stored" count (counted, then written by
 * the next commit), an index page gone from the server (reads, walks,
 * refresh and commit fail naming it, with one line, and publish nothing),
 * and the calls a handle refuses for what it is (a generation and a tag
 * at once, a flat object read in blocks of no power of two, blocks of a
 * flat object or of two block sizes compared).  One blkmap-server.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "client_util.h"
#include "../client/index_load.h"

#define BS 4096

static struct ts_server *srv(void **state)
{
	return *state;
}

static json_t *get_json(const struct ts_server *s, const char *path)
{
	struct ts_resp r;
	json_t *j;

	assert_int_equal(ts_request(NULL, s, "GET", path, NULL, NULL, 0, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	j = json_loadb(r.body, r.len, 0, NULL);
	assert_non_null(j);
	ts_resp_free(&r);
	return j;
}

static void put_json(const struct ts_server *s, const char *path, json_t *man)
{
	struct ts_resp r;
	size_t len;
	char *text = tc_manifest_text(man, &len);

	assert_int_equal(ts_request(NULL, s, "PUT", path, NULL, text, len, &r), CURLE_OK);
	assert_int_equal(r.status / 100, 2);
	ts_resp_free(&r);
	free(text);
}

static void delete_object(const struct ts_server *s, const char *path)
{
	struct ts_resp r;

	assert_int_equal(ts_request(NULL, s, "DELETE", path, NULL, NULL, 0, &r), CURLE_OK);
	assert_int_equal(r.status / 100, 2);
	ts_resp_free(&r);
}

/* ---- a hand-made v2 manifest ---------------------------------------------------------- */

static void a_v2_manifest_without_its_stored_count_is_counted_and_the_next_commit_writes_it(void **state)
{
	const struct ts_server *s = srv(state);
	unsigned char *data = ts_pattern(5 * BS, 31);
	char url[256], path[256];
	struct bm_generation_info gi;
	uint64_t gen;

	memset(data + 2 * BS, 0, BS); /* a hole: 4 stored blocks of 5 */
	tc_url(url, sizeof(url), s, "/edges/nostored");
	gen = tc_put(url, BS, data, 5 * BS);
	json_t *man = get_json(s, "/edges/nostored/manifest.json");
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), 4);
	json_object_del(man, "stored"); /* the field is optional */
	put_json(s, "/edges/nostored/manifest.json", man);
	/* Not kept: the handle's own manifest answers. */
	snprintf(path, sizeof(path), "/edges/nostored/gen/%llu.json", (unsigned long long)gen);
	delete_object(s, path);

	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation_info(ds, gen, &gi), 0);
	assert_int_equal(gi.generation, gen);
	assert_int_equal(gi.nblocks, 4);
	/* Fill the hole: the next manifest says 5, counted from the tree. */
	unsigned char blk[BS];
	memset(blk, 7, sizeof(blk));
	assert_int_equal(bm_write(ds, 2 * BS, blk, BS), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	json_decref(man);
	man = get_json(s, "/edges/nostored/manifest.json");
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), 5);
	json_decref(man);
	free(data);
}

/* ---- an index page gone from the server -------------------------------------------------- */

/* A dataset of 600 blocks (a root over leaves) whose first leaf is gone;
 * its path into *leafp ("/edges/<name>/index/<sum>"). */
static void put_without_first_leaf(const struct ts_server *s, const char *name, char *url, size_t un,
				   char *leafp, size_t ln)
{
	size_t nblk = 600;
	unsigned char *data = ts_pattern(nblk * BS, 44);
	char path[256], rpath[300], msg[256];

	snprintf(path, sizeof(path), "/edges/%s", name);
	tc_url(url, un, s, path);
	tc_put(url, BS, data, nblk * BS);
	free(data);
	json_t *man = get_json(s, (snprintf(rpath, sizeof(rpath), "%s/manifest.json", path), rpath));
	const char *root = json_string_value(json_object_get(man, "root"));
	struct ts_resp r;
	snprintf(rpath, sizeof(rpath), "%s/index/%s", path, root);
	assert_int_equal(ts_request(NULL, s, "GET", rpath, NULL, NULL, 0, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	/* The root's first child (a page names its children by their sums). */
	struct bm_ipage p;
	assert_int_equal(bm_ipage_decode(r.body, r.len, root, -1, 0, UINT64_MAX, 0, 0, &p, msg, sizeof(msg)), 0);
	ts_resp_free(&r);
	char leaf[BM_SUM_HEX + 1];
	for (int i = 0; i < 16; i++)
		snprintf(leaf + 2 * i, 3, "%02x", p.sum[0][i]);
	snprintf(leafp, ln, "%s/index/%s", path, leaf);
	delete_object(s, leafp);
	json_decref(man);
}

static void a_missing_index_page_fails_walks_and_sums_naming_it(void **state)
{
	const struct ts_server *s = srv(state);
	char url[256], leaf[300], sum[BM_SUM_HEX + 1];
	uint64_t idx = 99;

	put_without_first_leaf(s, "walk", url, sizeof(url), leaf, sizeof(leaf));
	bm_dataset *ds = tc_open(url, 0);
	assert_true(bm_block_sum(ds, 3, sum, sizeof(sum)) < 0);
	tc_assert_one_line_naming(bm_last_error(ds), leaf);
	assert_true(bm_next_block(ds, 0, &idx) < 0);
	tc_assert_one_line_naming(bm_last_error(ds), leaf);
	assert_int_equal(idx, 99); /* not set on a failure */
	/* Past the first leaf, the walk goes on. */
	assert_int_equal(bm_next_block(ds, 300, &idx), 1);
	assert_int_equal(idx, 300);
	bm_close(ds);
}

static void a_commit_over_a_missing_index_page_fails_naming_it_and_publishes_nothing(void **state)
{
	const struct ts_server *s = srv(state);
	char url[256], leaf[300];
	unsigned char blk[BS];
	uint64_t gen = 0;

	put_without_first_leaf(s, "commit", url, sizeof(url), leaf, sizeof(leaf));
	json_t *before = get_json(s, "/edges/commit/manifest.json");
	bm_dataset *ds = tc_open(url, 0);
	memset(blk, 9, sizeof(blk));
	assert_int_equal(bm_write(ds, 5 * BS, blk, BS), 0); /* a whole block: no read */
	int rc = bm_commit(ds, &gen);
	assert_true(rc < 0);
	assert_int_not_equal(rc, BM_ECONFLICT);
	tc_assert_one_line_naming(bm_last_error(ds), leaf);
	assert_non_null(strstr(bm_last_error(ds), "the index of generation 2"));
	bm_close(ds);
	json_t *after = get_json(s, "/edges/commit/manifest.json");
	assert_true(json_equal(before, after));
	json_decref(before);
	json_decref(after);
}

static void refresh_onto_a_generation_with_a_missing_index_page_fails_and_keeps_the_one_read(void **state)
{
	const struct ts_server *s = srv(state);
	char url[256], leaf[300];
	unsigned char *data = ts_pattern(600 * BS, 45);

	tc_url(url, sizeof(url), s, "/edges/refresh");
	tc_put(url, BS, data, 600 * BS);
	bm_dataset *ds = tc_open(url, 0);
	/* Another writer publishes generation 2, then its first leaf goes. */
	put_without_first_leaf(s, "refresh", url, sizeof(url), leaf, sizeof(leaf));
	int rc = bm_refresh(ds);
	assert_true(rc < 0);
	assert_int_not_equal(rc, BM_EBUSY);
	tc_assert_one_line_naming(bm_last_error(ds), "cannot compare generations 1 and 2");
	assert_non_null(strstr(bm_last_error(ds), leaf));
	/* Still at generation 1, reading its bytes. */
	unsigned char got[BS];
	assert_int_equal(bm_read(ds, 7 * BS, got, BS), BS);
	assert_memory_equal(got, data + 7 * BS, BS);
	struct bm_generation_info gi;
	assert_int_equal(bm_generation_info(ds, 1, &gi), 0);
	bm_close(ds);
	free(data);
}

/* ---- calls refused for what the handle is ----------------------------------------------- */

static void opening_at_a_generation_and_a_tag_at_once_is_refused(void **state)
{
	const struct ts_server *s = srv(state);
	unsigned char *data = ts_pattern(BS, 46);
	struct bm_options o;
	bm_dataset *ds = NULL;
	char url[256];

	tc_url(url, sizeof(url), s, "/edges/tagged");
	tc_put(url, BS, data, BS);
	tc_options(&o);
	o.generation = 1;
	o.tag = "stable";
	assert_int_equal(bm_open(&ds, url, &o), BM_EINVAL);
	assert_null(ds);
	tc_assert_one_line_naming(bm_last_error(NULL), "open at a generation or at a tag, not both");
	free(data);
}

static void a_flat_object_read_in_blocks_of_no_power_of_two_is_refused(void **state)
{
	const struct ts_server *s = srv(state);
	unsigned char *data = ts_pattern(3 * BS, 47);
	struct bm_options o;
	bm_dataset *ds = NULL;
	struct ts_resp r;
	char url[256];

	assert_int_equal(ts_request(NULL, s, "PUT", "/edges/flat.bin", NULL, data, 3 * BS, &r), CURLE_OK);
	ts_resp_free(&r);
	tc_url(url, sizeof(url), s, "/edges/flat.bin");
	tc_options(&o);
	o.blksize = 5000;
	assert_int_equal(bm_open(&ds, url, &o), BM_EINVAL);
	tc_assert_one_line_naming(bm_last_error(NULL), "block size 5000 is not a power of two");
	o.blksize = BS;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_true(bm_is_flat(ds));
	bm_close(ds);
	free(data);
}

static int count_ranges(void *arg, uint64_t first, uint64_t count)
{
	(void)first;
	(void)count;
	++*(int *)arg;
	return 0;
}

static void blocks_of_a_flat_object_or_of_two_block_sizes_are_not_compared(void **state)
{
	const struct ts_server *s = srv(state);
	unsigned char *data = ts_pattern(4 * 8192, 48);
	char u1[256], u2[256], u3[256];
	struct ts_resp r;
	int ranges = 0;

	tc_url(u1, sizeof(u1), s, "/edges/cmp4k");
	tc_url(u2, sizeof(u2), s, "/edges/cmp8k");
	tc_url(u3, sizeof(u3), s, "/edges/cmp.bin");
	tc_put(u1, BS, data, 4 * 8192);
	tc_put(u2, 8192, data, 4 * 8192);
	assert_int_equal(ts_request(NULL, s, "PUT", "/edges/cmp.bin", NULL, data, 8192, &r), CURLE_OK);
	ts_resp_free(&r);
	bm_dataset *a = tc_open(u1, 0), *b = tc_open(u2, 0), *f = tc_open_as_given(u3, 0);
	assert_int_equal(bm_diff_blocks(a, b, count_ranges, &ranges), BM_EINVAL);
	tc_assert_one_line_naming(bm_last_error(a), "two block sizes, cannot be compared");
	assert_int_equal(bm_diff_blocks(f, a, count_ranges, &ranges), BM_EINVAL);
	assert_int_equal(bm_diff_blocks(a, f, count_ranges, &ranges), BM_EINVAL);
	assert_int_equal(ranges, 0);
	/* The same generation against itself: nothing differs. */
	assert_int_equal(bm_diff_blocks(a, a, count_ranges, &ranges), 0);
	assert_int_equal(ranges, 0);
	bm_close(a);
	bm_close(b);
	bm_close(f);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_v2_manifest_without_its_stored_count_is_counted_and_the_next_commit_writes_it),
		cmocka_unit_test(a_missing_index_page_fails_walks_and_sums_naming_it),
		cmocka_unit_test(a_commit_over_a_missing_index_page_fails_naming_it_and_publishes_nothing),
		cmocka_unit_test(refresh_onto_a_generation_with_a_missing_index_page_fails_and_keeps_the_one_read),
		cmocka_unit_test(opening_at_a_generation_and_a_tag_at_once_is_refused),
		cmocka_unit_test(a_flat_object_read_in_blocks_of_no_power_of_two_is_refused),
		cmocka_unit_test(blocks_of_a_flat_object_or_of_two_block_sizes_are_not_compared),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
