/* tests/test_client_attrs.c — a dataset's user attributes (the manifest's
 * "attrs", issue 14) against a real blkmap-server: bm_attrs_set publishes
 * them with the next commit (alone, a new generation), every later commit
 * carries them over, old generations keep theirs; what is not a JSON object
 * or too long is refused and changes nothing; discard drops them, refresh
 * waits for them, a conflict keeps them; a manifest with hostile attrs is
 * refused at open; `blkmap attr` prints, sets and deletes them.  Also what
 * the Python package asks of the library besides: bm_generation_prev walks
 * the kept generations (bounded), bm_is_latest says whether a commit may
 * publish.
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

#define BS ((size_t)4096)

static bm_dataset *open_url(const char *url, uint64_t gen)
{
	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = BS;
	o.generation = gen;
	o.wcfs = "off";
	assert_int_equal(bm_open(&ds, url, &o), 0);
	return ds;
}

/* The attributes of a handle, as text (static buffer). */
static const char *attrs_of(bm_dataset *ds)
{
	static char buf[BM_ATTRS_MAX + 1];
	int n = bm_attrs_get(ds, buf, sizeof(buf));
	assert_in_range(n, 2, BM_ATTRS_MAX);
	assert_int_equal((size_t)n, strlen(buf));
	return buf;
}

static void attrs_alone_publish_a_generation_and_every_later_commit_carries_them(void **state)
{
	struct ts_server *s = *state;
	char url[512];
	unsigned char *data = ts_pattern(3 * BS, 5);
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/at/carry");
	assert_int_equal(tc_put(url, BS, data, 3 * BS), 1);
	bm_dataset *ds = open_url(url, 0);
	assert_string_equal(attrs_of(ds), "{}");
	/* Whitespace and key order as given: stored compact, order kept. */
	assert_int_equal(bm_attrs_set(ds, "{ \"shape\": [3, 512], \"dtype\" : \"<f8\", \"n\": {\"a\": null} }"), 0);
	const char *want = "{\"shape\":[3,512],\"dtype\":\"<f8\",\"n\":{\"a\":null}}";
	assert_string_equal(attrs_of(ds), want);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2); /* only the attrs changed */
	bm_close(ds);

	ds = open_url(url, 0);
	assert_int_equal(bm_generation(ds), 2);
	assert_string_equal(attrs_of(ds), want);
	/* A commit that changes bytes only keeps them. */
	assert_int_equal(bm_write(ds, 0, "xyz", 3), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	/* A commit with nothing to publish publishes nothing. */
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	/* Setting them to what they are is no change either. */
	assert_int_equal(bm_attrs_set(ds, want), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_close(ds);

	ds = open_url(url, 0);
	assert_int_equal(bm_generation(ds), 3);
	assert_string_equal(attrs_of(ds), want);
	/* The empty object removes them. */
	assert_int_equal(bm_attrs_set(ds, "{}"), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 4);
	bm_close(ds);
	json_t *man = ts_get_json(s, "/at/carry/manifest.json");
	assert_non_null(man);
	assert_null(json_object_get(man, "attrs"));
	json_decref(man);

	/* Each kept generation has its own. */
	ds = open_url(url, 1);
	assert_string_equal(attrs_of(ds), "{}");
	bm_close(ds);
	ds = open_url(url, 2);
	assert_string_equal(attrs_of(ds), want);
	bm_close(ds);
	free(data);
}

static void a_new_dataset_can_be_created_with_attrs_only(void **state)
{
	struct ts_server *s = *state;
	char url[512];
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/at/new");
	bm_dataset *ds = open_url(url, 0);
	assert_int_equal(bm_attrs_set(ds, "{\"units\":\"K\"}"), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 1);
	bm_close(ds);
	ds = open_url(url, 0);
	assert_int_equal(bm_size(ds), 0);
	assert_string_equal(attrs_of(ds), "{\"units\":\"K\"}");
	bm_close(ds);
}

static void attrs_that_are_not_a_small_object_are_refused_and_change_nothing(void **state)
{
	struct ts_server *s = *state;
	char url[512];
	unsigned char *data = ts_pattern(BS, 6);
	uint64_t gen;
	static const struct {
		const char *json;
		const char *says;
	} bad[] = {
		{ "[1, 2]", "not a JSON object" },
		{ "42", "not a JSON object" },
		{ "\"text\"", "not a JSON object" },
		{ "null", "not a JSON object" },
		{ "{\"a\": 1", "not valid JSON" },
		{ "{\"a\": 1, \"a\": 2}", "not valid JSON" },
		{ "", "not valid JSON" },
		{ "{\"a\": \"\\u0000\"}", "not valid JSON" },
		{ "{\"a\": 1} {}", "not valid JSON" },
	};

	tc_url(url, sizeof(url), s, "/at/bad");
	assert_int_equal(tc_put(url, BS, data, BS), 1);
	bm_dataset *ds = open_url(url, 0);
	assert_int_equal(bm_attrs_set(ds, "{\"keep\":true}"), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = bm_attrs_set(ds, bad[i].json);
		const char *msg = bm_last_error(ds);
		if (rc != BM_EINVAL || !strstr(msg, bad[i].says) || !strstr(msg, url) || strchr(msg, '\n'))
			fail_msg("attrs %zu (%s): rc %d, message \"%s\"", i, bad[i].json, rc, msg);
		assert_string_equal(attrs_of(ds), "{\"keep\":true}");
	}
	/* One byte over the limit, compact, is refused; the limit itself
	 * is accepted. */
	char *big = malloc(BM_ATTRS_MAX + 64);
	assert_non_null(big);
	size_t pad = BM_ATTRS_MAX - strlen("{\"k\":\"\"}");
	memcpy(big, "{\"k\": \"", 7);
	memset(big + 7, 'v', pad + 1);
	strcpy(big + 7 + pad + 1, "\"}");
	assert_int_equal(bm_attrs_set(ds, big), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(ds), "above the limit of 65536"));
	assert_string_equal(attrs_of(ds), "{\"keep\":true}");
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2); /* nothing was set */
	strcpy(big + 7 + pad, "\"}");
	assert_int_equal(bm_attrs_set(ds, big), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_close(ds);
	ds = open_url(url, 0);
	char *got = malloc(BM_ATTRS_MAX + 1);
	assert_int_equal(bm_attrs_get(ds, got, BM_ATTRS_MAX + 1), BM_ATTRS_MAX);
	/* A small buffer gets a cut, terminated text and the whole length. */
	char small[8];
	assert_int_equal(bm_attrs_get(ds, small, sizeof(small)), BM_ATTRS_MAX);
	assert_string_equal(small, "{\"k\":\"v");
	bm_close(ds);
	free(got);
	free(big);
	free(data);
}

static void discard_drops_attrs_refresh_waits_and_a_conflict_keeps_them(void **state)
{
	struct ts_server *s = *state;
	char url[512];
	unsigned char *data = ts_pattern(BS, 7);
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/at/discard");
	assert_int_equal(tc_put(url, BS, data, BS), 1);
	bm_dataset *a = open_url(url, 0), *b = open_url(url, 0);
	assert_int_equal(bm_attrs_set(a, "{\"x\":1}"), 0);
	assert_int_equal(bm_refresh(a), BM_EBUSY);
	assert_int_equal(bm_discard(a), 0);
	assert_string_equal(attrs_of(a), "{}");
	assert_int_equal(bm_commit(a, &gen), 0);
	assert_int_equal(gen, 1);

	/* Another writer publishes first: the conflict leaves a's attrs set
	 * (like its dirty pages), for the writer to resolve. */
	assert_int_equal(bm_attrs_set(b, "{\"by\":\"b\"}"), 0);
	assert_int_equal(bm_commit(b, &gen), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(bm_attrs_set(a, "{\"by\":\"a\"}"), 0);
	assert_int_equal(bm_commit(a, &gen), BM_ECONFLICT);
	assert_string_equal(attrs_of(a), "{\"by\":\"a\"}");
	assert_int_equal(bm_discard(a), 0);
	assert_int_equal(bm_refresh(a), 0);
	assert_string_equal(attrs_of(a), "{\"by\":\"b\"}");
	bm_close(a);
	bm_close(b);
	free(data);
}

static void a_flat_object_has_no_attrs_to_set(void **state)
{
	struct ts_server *s = *state;
	char url[512];

	assert_in_range(ts_put(s, "/at/flat.bin", "0123456789", 10), 201, 204);
	tc_url(url, sizeof(url), s, "/at/flat.bin");
	bm_dataset *ds = tc_open_as_given(url, 0);
	assert_true(bm_is_flat(ds));
	assert_string_equal(attrs_of(ds), "{}");
	assert_int_equal(bm_attrs_set(ds, "{\"a\":1}"), BM_EREADONLY);
	bm_close(ds);
}

#define HEAD_OK "\"format\": \"blkmap-dataset\", \"checksum\": \"xxh128\", \"version\": 1, " \
		"\"blksize\": 4096, \"size\": 8192, \"generation\": 1, \"blocks\": [], "

static void a_manifest_with_hostile_attrs_is_refused_at_open(void **state)
{
	struct ts_server *s = *state;
	static const struct tc_bad_manifest bad[] = {
		{ "{" HEAD_OK "\"attrs\": [1]}", "\"attrs\") are not a JSON object" },
		{ "{" HEAD_OK "\"attrs\": \"{}\"}", "\"attrs\") are not a JSON object" },
		{ "{" HEAD_OK "\"attrs\": null}", "\"attrs\") are not a JSON object" },
		{ "{" HEAD_OK "\"attrs\": {\"a\": 1, \"a\": 2}}", "not valid JSON" },
	};

	tc_assert_manifests_refused(s, "/at/hostile", bad, sizeof(bad) / sizeof(bad[0]));
	/* Too long: a valid object of 64 KiB + 1 compact. */
	size_t n = BM_ATTRS_MAX + 256;
	char *json = malloc(n + 256);
	assert_non_null(json);
	int k = snprintf(json, n + 256, "{" HEAD_OK "\"attrs\": {\"k\": \"");
	size_t pad = BM_ATTRS_MAX - strlen("{\"k\":\"\"}") + 1;
	memset(json + k, 'v', pad);
	strcpy(json + k + pad, "\"}}");
	assert_in_range(ts_put(s, "/at/long/manifest.json", json, strlen(json)), 201, 204);
	char url[512];
	bm_dataset *ds = NULL;
	tc_url(url, sizeof(url), s, "/at/long");
	assert_int_equal(bm_open(&ds, url, NULL), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(NULL), "above the limit"));
	free(json);
}

static void the_attr_command_prints_sets_and_deletes(void **state)
{
	struct ts_server *s = *state;
	char url[512], *out, *err;
	unsigned char *data = ts_pattern(BS, 8);

	tc_url(url, sizeof(url), s, "/at/cli");
	assert_int_equal(tc_put(url, BS, data, BS), 1);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, NULL }), 0);
	assert_string_equal(out, "{}\n");
	free(out);
	free(err);
	/* VALUE: JSON when it parses, else a string. */
	static const struct {
		const char *arg, *gen;
	} sets[] = {
		{ "shape=[2, 3]", "2\n" }, { "dtype=<f8", "3\n" }, { "n=42", "4\n" },
		{ "q=\"42\"", "5\n" }, { "empty=", "6\n" }, { "eq=a=b", "7\n" },
	};
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		int ex = tc_cli(&out, &err, (const char *[]){ "attr", url, sets[i].arg, NULL });
		if (ex != 0 || strcmp(out, sets[i].gen) != 0)
			fail_msg("attr %s: exit %d, out \"%s\", err \"%s\"", sets[i].arg, ex, out, err);
		free(out);
		free(err);
	}
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, NULL }), 0);
	assert_string_equal(out, "{\"shape\":[2,3],\"dtype\":\"<f8\",\"n\":42,\"q\":\"42\",\"empty\":\"\",\"eq\":\"a=b\"}\n");
	free(out);
	free(err);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, "dtype", NULL }), 0);
	assert_string_equal(out, "\"<f8\"\n");
	free(out);
	free(err);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", "--delete", url, "dtype", NULL }), 0);
	assert_string_equal(out, "8\n");
	free(out);
	free(err);
	/* A missing key: exit 1, one line naming it. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, "dtype", NULL }), 1);
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "no attribute \"dtype\""));
	free(out);
	free(err);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", "--delete", url, "dtype", NULL }), 1);
	free(out);
	free(err);
	/* The bytes were never touched. */
	assert_true(tc_dataset_equals(url, 0, data, BS));
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", "--help", NULL }), 0);
	assert_true(strncmp(out, "usage: blkmap attr URL [KEY[=VALUE]]\n", 37) == 0);
	free(out);
	free(err);
	/* Usage errors. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", NULL }), 2);
	free(out);
	free(err);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, "=1", NULL }), 2);
	free(out);
	free(err);
	free(data);
}

static void generation_prev_walks_kept_generations_and_is_latest_says_who_may_commit(void **state)
{
	struct ts_server *s = *state;
	char url[512], path[128], text[64];
	unsigned char *data = ts_pattern(BS, 9);
	struct bm_generation_info gi;
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/at/log");
	assert_int_equal(tc_put(url, BS, data, BS), 1);
	bm_dataset *ds = open_url(url, 0);
	for (int i = 2; i <= 71; i++) {
		snprintf(text, sizeof(text), "{\"i\":%d}", i);
		assert_int_equal(bm_attrs_set(ds, text), 0);
		assert_int_equal(bm_commit(ds, &gen), 0);
		assert_int_equal(gen, (uint64_t)i);
	}
	assert_int_equal(bm_is_latest(ds), 1);
	/* gen/70 and gen/5 lost: the walk skips them. */
	assert_int_equal(ts_delete(s, "/at/log/gen/70.json"), 204);
	assert_int_equal(ts_delete(s, "/at/log/gen/5.json"), 204);
	uint64_t want[] = { 71, 69, 68 };
	uint64_t before = bm_generation(ds) + 1;
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(bm_generation_prev(ds, before, &gi), 1);
		assert_int_equal(gi.generation, want[i]);
		assert_int_equal(gi.size, BS);
		before = gi.generation;
	}
	assert_int_equal(bm_generation_prev(ds, 6, &gi), 1);
	assert_int_equal(gi.generation, 4);
	assert_int_equal(bm_generation_prev(ds, 2, &gi), 1);
	assert_int_equal(gi.generation, 1);
	assert_int_equal(bm_generation_prev(ds, 1, &gi), 0);
	assert_int_equal(bm_generation_prev(ds, 0, &gi), 0);
	/* BM_LOG_MAX_MISSING missing in a row end the walk. */
	for (int g = 2; g <= 70; g++) {
		snprintf(path, sizeof(path), "/at/log/gen/%d.json", g);
		ts_delete(s, path);
	}
	assert_int_equal(bm_generation_prev(ds, 71, &gi), 0);
	assert_int_equal(bm_generation_prev(ds, 2 + BM_LOG_MAX_MISSING, &gi), 0);
	assert_int_equal(bm_generation_prev(ds, 1 + BM_LOG_MAX_MISSING, &gi), 1); /* 63 missing */
	assert_int_equal(gi.generation, 1);

	/* An old generation is not the latest; nor is a handle after
	 * another writer published on top (refresh makes it latest). */
	bm_dataset *old = open_url(url, 1);
	assert_int_equal(bm_is_latest(old), 0);
	bm_close(old);
	bm_dataset *other = open_url(url, 0);
	assert_int_equal(bm_attrs_set(other, "{\"by\":\"other\"}"), 0);
	assert_int_equal(bm_commit(other, &gen), 0);
	bm_close(other);
	assert_int_equal(bm_attrs_set(ds, "{\"by\":\"ds\"}"), 0);
	assert_int_equal(bm_commit(ds, &gen), BM_ECONFLICT);
	assert_int_equal(bm_discard(ds), 0);
	assert_int_equal(bm_refresh(ds), 0);
	assert_int_equal(bm_is_latest(ds), 1);
	bm_close(ds);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(attrs_alone_publish_a_generation_and_every_later_commit_carries_them),
		cmocka_unit_test(a_new_dataset_can_be_created_with_attrs_only),
		cmocka_unit_test(attrs_that_are_not_a_small_object_are_refused_and_change_nothing),
		cmocka_unit_test(discard_drops_attrs_refresh_waits_and_a_conflict_keeps_them),
		cmocka_unit_test(a_flat_object_has_no_attrs_to_set),
		cmocka_unit_test(a_manifest_with_hostile_attrs_is_refused_at_open),
		cmocka_unit_test(the_attr_command_prints_sets_and_deletes),
		cmocka_unit_test(generation_prev_walks_kept_generations_and_is_latest_says_who_may_commit),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
