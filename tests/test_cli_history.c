/* tests/test_cli_history.c — what `blkmap diff`, `tag`, `tags` and `gc`
 * promise beyond the round trips of test_client_gc: diff across version 1
 * generations and the commit that upgraded them to version 2, and its
 * refusals (another block size, a generation it cannot resolve, a
 * generation file naming another generation, a damaged one); a tag list on
 * the server that is not one is refused with one line naming it; tags
 * written at the same time by several processes all land; gc --keep-since
 * by the creation time each generation records (ISO time, date or a
 * duration ago; a generation without one is kept), gc's duration and time
 * syntax, gc of a dataset of a thousand blocks keeping every one still
 * named, a gc.json that is not a marker, gc beside another running gc.  The server does not matter here: one blkmap-server (memory
 * store) for the group; datasets are edited by hand through its HTTP API.
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "client_util.h"
#include "../client/internal.h"

#define BS ((size_t)4096)
#define NBLK 8

/* Runs `blkmap ARGV`: exit status WANT, nothing on stdout, exactly one
 * line on stderr holding SAYS. */
static void assert_cli_fails(int want, const char *says, const char *const *argv)
{
	char *out, *err;
	int ex = tc_cli(&out, &err, argv);

	if (ex != want || out[0] != '\0' || tc_lines(err) != 1 || !strstr(err, says))
		fail_msg("blkmap %s %s: exit %d (want %d), stdout \"%s\", stderr \"%s\" (want one line with "
			 "\"%s\")", argv[0], argv[1] ? argv[1] : "", ex, want, out, err, says);
	free(out);
	free(err);
}

/* Runs `blkmap ARGV`: exit 0; stdout into *OUT (malloc'd). */
static char *cli_ok(const char *const *argv)
{
	char *out, *err;
	int ex = tc_cli(&out, &err, argv);

	if (ex != 0)
		fail_msg("blkmap %s %s: exit %d, stderr \"%s\"", argv[0], argv[1] ? argv[1] : "", ex, err);
	free(err);
	return out;
}

/* ---- datasets by hand ---------------------------------------------------------------- */

/* A version 1 manifest of generation GEN: NBLK blocks of DATA (blocks in
 * HOLE_MASK left out of the table: holes), uploaded under PATH. */
static json_t *v1_manifest(const struct ts_server *s, const char *path, uint64_t gen, size_t blksize,
			   const unsigned char *data, unsigned hole_mask)
{
	json_t *man = json_pack("{s:s, s:i, s:I, s:I, s:I, s:s, s:s, s:[]}", "format", "blkmap-dataset", "version",
				1, "blksize", (json_int_t)blksize, "size", (json_int_t)(NBLK * BS), "generation",
				(json_int_t)gen, "checksum", "xxh128", "created", "2026-11-29T10:00:00Z", "blocks");
	json_t *blocks = json_object_get(man, "blocks");
	char key[256], sum[40];

	for (size_t b = 0; b < NBLK * BS / blksize; b++) {
		if (hole_mask & (1u << b))
			continue;
		bm_sum_hex(data + b * blksize, blksize, sum);
		snprintf(key, sizeof(key), "%s/blocks/%s", path, sum);
		long st = ts_put(s, key, data + b * blksize, blksize);
		assert_true(st == 201 || st == 204);
		json_array_append_new(blocks, json_pack("{s:I, s:s, s:s}", "index", (json_int_t)b, "key",
							key + strlen(path) + 1, "sum", sum));
	}
	return man;
}

/* PUTs MAN as PATH/NAME ("manifest.json", "gen/1.json"). */
static void put_json(const struct ts_server *s, const char *path, const char *name, json_t *man)
{
	char key[256];
	char *text = tc_manifest_text(man, NULL);

	snprintf(key, sizeof(key), "%s/%s", path, name);
	long st = ts_put(s, key, text, strlen(text));
	assert_true(st == 200 || st == 201 || st == 204);
	free(text);
}

/* Publishes MAN as generation GEN (gen/GEN.json and manifest.json). */
static void publish(const struct ts_server *s, const char *path, uint64_t gen, json_t *man)
{
	char name[64];

	snprintf(name, sizeof(name), "gen/%" PRIu64 ".json", gen);
	put_json(s, path, name, man);
	put_json(s, path, "manifest.json", man);
}

/* The dataset at PATH on S (its URL into URL, 512 bytes): generations 1 to
 * NGEN of NBLK blocks of D, block 0 changed from each to the next (D ends
 * as the latest). */
static void put_generations(const struct ts_server *s, const char *path, char *url, unsigned char *d, int ngen)
{
	tc_url(url, 512, s, path);
	for (int g = 1; g <= ngen; g++) {
		if (g > 1)
			d[0] ^= 1;
		tc_put(url, BS, d, NBLK * BS);
	}
}

/* ---- diff ------------------------------------------------------------------------------- */

static void diff_lists_changes_between_version_1_generations_and_across_the_upgrade_to_version_2(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 31);
	char url[512], *out;
	json_t *man;

	tc_url(url, sizeof(url), s, "/hist/v1diff");
	man = v1_manifest(s, "/hist/v1diff", 1, BS, d, 0);
	publish(s, "/hist/v1diff", 1, man);
	json_decref(man);
	/* Generation 2 (version 1): block 3 changed, block 5 a hole, 6 and 7
	 * changed (one range). */
	d[3 * BS] ^= 1;
	d[6 * BS + 7] ^= 1;
	d[7 * BS + 9] ^= 1;
	man = v1_manifest(s, "/hist/v1diff", 2, BS, d, 1u << 5);
	publish(s, "/hist/v1diff", 2, man);
	json_decref(man);
	/* Generation 3: the library's commit of block 1, a version 2 manifest. */
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 2);
	d[1 * BS] ^= 1;
	assert_int_equal(bm_write(ds, 1 * BS, d + 1 * BS, BS), 0);
	uint64_t gen;
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_close(ds);
	man = ts_get_json(s, "/hist/v1diff/manifest.json");
	assert_non_null(man);
	assert_int_equal(json_integer_value(json_object_get(man, "version")), 2);
	json_decref(man);

	out = cli_ok((const char *[]){ "diff", url, "1", "2", NULL });
	assert_string_equal(out, "blocks 3-3 bytes 12288-16383\nblocks 5-7 bytes 20480-32767\n");
	free(out);
	out = cli_ok((const char *[]){ "diff", url, "2", "3", NULL });
	assert_string_equal(out, "blocks 1-1 bytes 4096-8191\n");
	free(out);
	out = cli_ok((const char *[]){ "diff", url, "3", "1", NULL });
	assert_string_equal(out, "blocks 1-1 bytes 4096-8191\nblocks 3-3 bytes 12288-16383\n"
				 "blocks 5-7 bytes 20480-32767\n");
	free(out);

	/* gc keeping 2 (version 1) and 3 reads 2's table for what it names:
	 * only generation 1's own blocks go, and 2 still reads whole. */
	out = cli_ok((const char *[]){ "sum", "--at", "2", url, NULL });
	char *sum2 = out;
	out = cli_ok((const char *[]){ "gc", "--keep", "2", "--grace", "0", url, NULL });
	/* Generation 1's blocks 3, 5, 6 and 7, and any index page the upgrade
	 * left unpublished. */
	const char *objs = strstr(out, "2 kept, 1 dropped; objects: ");
	unsigned long deleted = 0;
	if (objs == NULL || sscanf(objs, "2 kept, 1 dropped; objects: %lu deleted", &deleted) != 1 || deleted < 4)
		fail_msg("gc said \"%s\"", out);
	free(out);
	out = cli_ok((const char *[]){ "sum", url, NULL });
	free(out);
	out = cli_ok((const char *[]){ "sum", "--at", "2", url, NULL });
	assert_string_equal(out, sum2);
	free(out);
	free(sum2);
	free(d);
}

static void diff_refuses_generations_of_different_block_sizes(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 32);
	char url[512];
	json_t *man;

	tc_url(url, sizeof(url), s, "/hist/bs");
	man = v1_manifest(s, "/hist/bs", 1, BS, d, 0);
	publish(s, "/hist/bs", 1, man);
	json_decref(man);
	man = v1_manifest(s, "/hist/bs", 2, 2 * BS, d, 0);
	publish(s, "/hist/bs", 2, man);
	json_decref(man);
	assert_cli_fails(1, "generations 1 and 2 have different block sizes (4096, 8192)",
			 (const char *[]){ "diff", url, "1", NULL });
	free(d);
}

static void diff_names_what_it_cannot_resolve(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 33);
	char url[512], none[512], key[256], *out;

	put_generations(s, "/hist/resolve", url, d, 2);
	tc_url(none, sizeof(none), s, "/hist/nothing-here");
	assert_cli_fails(1, "generation 0 is out of range", (const char *[]){ "diff", url, "0", NULL });
	assert_cli_fails(1, "generation 99999999999999999999 is out of range",
			 (const char *[]){ "diff", url, "99999999999999999999", NULL });
	assert_cli_fails(1, "\"1x/\" is neither a generation number nor a tag name",
			 (const char *[]){ "diff", url, "1x/", NULL });
	assert_cli_fails(1, "no tag \"later\"", (const char *[]){ "diff", url, "1", "later", NULL });
	assert_cli_fails(1, "no dataset here", (const char *[]){ "diff", none, "1", NULL });
	assert_cli_fails(2, "--at needs a generation number or a tag name", (const char *[]){ "diff", "--at", NULL });
	assert_cli_fails(2, "not both", (const char *[]){ "diff", "--at", "1", url, "1", "2", NULL });
	assert_cli_fails(2, "expected URL GEN1|TAG1 [GEN2|TAG2]", (const char *[]){ "diff", url, NULL });

	/* The latest generation is read from manifest.json when its own
	 * gen/2.json is not kept yet (its writer stopped before keeping it);
	 * an older one that is missing is "not kept". */
	snprintf(key, sizeof(key), "/hist/resolve/gen/2.json");
	assert_int_equal(ts_delete(s, key), 204);
	out = cli_ok((const char *[]){ "diff", url, "1", "2", NULL });
	assert_string_equal(out, "blocks 0-0 bytes 0-4095\n");
	free(out);
	snprintf(key, sizeof(key), "/hist/resolve/gen/1.json");
	assert_int_equal(ts_delete(s, key), 204);
	assert_cli_fails(1, "generation 1 is not kept", (const char *[]){ "diff", url, "1", NULL });
	free(d);
}

static void a_generation_file_naming_another_generation_or_damaged_is_refused_naming_it(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 34);
	char url[512];
	struct ts_resp r;

	put_generations(s, "/hist/liar", url, d, 2);
	/* gen/1.json holds generation 2's manifest. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(ts_request(NULL, s, "GET", "/hist/liar/gen/2.json", NULL, NULL, 0, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(ts_put(s, "/hist/liar/gen/1.json", r.body, r.len), 204);
	assert_cli_fails(1, "/hist/liar/gen/1.json: it says it is generation 2",
			 (const char *[]){ "diff", url, "1", NULL });

	/* A damaged one (its manifest_sum no longer matches) is fetched again,
	 * then refused. */
	char *bad = strstr(r.body, "\"size\":");
	assert_non_null(bad);
	bad[7] = bad[7] == '1' ? '2' : '1';
	assert_int_equal(ts_put(s, "/hist/liar/gen/1.json", r.body, r.len), 204);
	long gets = tc_server_stat(s, "requests", "GET");
	assert_cli_fails(1, "/hist/liar/gen/1.json: ", (const char *[]){ "diff", url, "1", NULL });
	assert_true(tc_server_stat(s, "requests", "GET") - gets >= 2);
	ts_resp_free(&r);
	free(d);
}

/* ---- tags ------------------------------------------------------------------------------- */

static void a_tag_list_that_is_not_one_is_refused_with_one_line_naming_it(void **state)
{
	static const struct {
		const char *text, *says;
	} cases[] = {
		{ "not json", "not a tag list" },
		{ "[1, 2]", "not a tag list" },
		{ "{\"format\": \"blkmap-dataset\", \"tags\": {}}", "not a tag list" },
		{ "{\"format\": \"blkmap-tags\", \"tags\": [\"v1\"]}", "\"tags\" is not an object" },
		{ "{\"format\": \"blkmap-tags\", \"tags\": {\"a/b\": 1}}", "a tag name is not valid" },
		{ "{\"format\": \"blkmap-tags\", \"tags\": {\"v1\": 0}}", "a tag's generation is not an integer" },
		{ "{\"format\": \"blkmap-tags\", \"tags\": {\"v1\": \"1\"}}", "a tag's generation is not an integer" },
		{ "{\"format\": \"blkmap-tags\", \"tags\": {\"v1\": 9007199254740993}}",
		  "a tag's generation is not an integer from 1 to 2^53" },
	};
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 35);
	char url[512], *out;

	put_generations(s, "/hist/badtags", url, d, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long st = ts_put(s, "/hist/badtags/tags.json", cases[i].text, strlen(cases[i].text));
		assert_true(st == 201 || st == 204);
		char says[256];
		snprintf(says, sizeof(says), "/hist/badtags/tags.json: %s", cases[i].says);
		assert_cli_fails(1, says, (const char *[]){ "tags", url, NULL });
	}
	/* Setting a tag, resolving one and gc (it keeps tagged generations)
	 * read it too. */
	assert_cli_fails(1, "/hist/badtags/tags.json: a tag's generation", (const char *[]){ "tag", url, "v2", NULL });
	assert_cli_fails(1, "/hist/badtags/tags.json: a tag's generation", (const char *[]){ "gc", url, NULL });
	assert_cli_fails(1, "/hist/badtags/tags.json: a tag's generation", (const char *[]){ "diff", url, "v1", NULL });
	/* A good one again: all is well. */
	const char *good = "{\"format\": \"blkmap-tags\", \"tags\": {\"v1\": 1}}";
	assert_int_equal(ts_put(s, "/hist/badtags/tags.json", good, strlen(good)), 204);
	out = cli_ok((const char *[]){ "tags", url, NULL });
	assert_string_equal(out, "v1 1\n");
	free(out);
	free(d);
}

static void tag_usage_errors_and_a_url_without_a_dataset(void **state)
{
	struct ts_server *s = *state;
	char none[512];

	tc_url(none, sizeof(none), s, "/hist/no-dataset");
	assert_cli_fails(1, "no dataset here", (const char *[]){ "tag", none, "v1", NULL });
	assert_cli_fails(1, "no tag \"v1\"", (const char *[]){ "tag", "-d", none, "v1", NULL });
	assert_cli_fails(2, "expected -d URL NAME", (const char *[]){ "tag", "-d", none, NULL });
	assert_cli_fails(2, "expected URL NAME [GEN]", (const char *[]){ "tag", none, NULL });
	assert_cli_fails(2, "GEN is not a generation number", (const char *[]){ "tag", none, "v1", "0", NULL });
	assert_cli_fails(2, "GEN is not a generation number", (const char *[]){ "tag", none, "v1", "x", NULL });
	assert_cli_fails(2, "NAME is not a tag name", (const char *[]){ "tag", none, "12", NULL });
	assert_cli_fails(2, "NAME is not a tag name", (const char *[]){ "tag", "-d", none, ".hidden", NULL });
	assert_cli_fails(2, "NAME is not a tag name", (const char *[]){ "tag", "ftp://example/x", "a/b", NULL });
	assert_cli_fails(2, "expected URL", (const char *[]){ "tags", NULL });
	assert_cli_fails(2, "expected URL", (const char *[]){ "tags", none, "more", NULL });
	char *out = cli_ok((const char *[]){ "tags", "--help", NULL });
	assert_true(strncmp(out, "usage: blkmap tags URL\n", 23) == 0);
	free(out);
}

#define TAGGERS 4
#define TAGS_EACH 4

struct tagger {
	const char *url;
	int id;
};

static int tag_some(void *arg)
{
	struct tagger *t = arg;
	struct bm_options o;

	if (bm_options_init(&o) < 0)
		return 1;
	o.retry_base_ms = 1;
	for (int k = 0; k < TAGS_EACH; k++) {
		char name[32];
		snprintf(name, sizeof(name), "t%d-%d", t->id, k);
		if (bm_tag_set(t->url, &o, name, 1 + (uint64_t)(k % 2), NULL) < 0) {
			fprintf(stderr, "tagger %d: %s\n", t->id, bm_last_error(NULL));
			return 2;
		}
	}
	return 0;
}

/* TAGGERS processes at once (forked by one child: a hang is bounded by
 * tc_child's limit). */
static int tag_at_once(void *arg)
{
	const char *url = arg;
	pid_t pids[TAGGERS];
	int bad = 0;

	for (int i = 0; i < TAGGERS; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct tagger t = { url, i };
			_exit(tag_some(&t));
		}
	}
	for (int i = 0; i < TAGGERS; i++) {
		int st;
		if (pids[i] < 0 || waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
	}
	return bad;
}

static void tags_written_at_the_same_time_by_several_processes_all_land(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 36);
	char url[512], *err, *out;

	put_generations(s, "/hist/racetags", url, d, 2);
	int st = tc_child(tag_at_once, url, &err);
	if (st != 0)
		fail_msg("the taggers: status %d, %s", st, err);
	free(err);
	out = cli_ok((const char *[]){ "tags", url, NULL });
	assert_int_equal(tc_lines(out), TAGGERS * TAGS_EACH);
	for (int i = 0; i < TAGGERS; i++)
		for (int k = 0; k < TAGS_EACH; k++) {
			char line[64];
			snprintf(line, sizeof(line), "t%d-%d %d\n", i, k, 1 + k % 2);
			if (!strstr(out, line))
				fail_msg("tag line \"%s\" missing from:\n%s", line, out);
		}
	free(out);
	free(d);
}

/* ---- gc --keep-since ------------------------------------------------------------------ */

/* Sets the "created" of PATH/gen/GEN.json to CREATED (NULL: removes it). */
static void set_created(const struct ts_server *s, const char *path, uint64_t gen, const char *created)
{
	char key[256], name[64];

	snprintf(key, sizeof(key), "%s/gen/%" PRIu64 ".json", path, gen);
	json_t *man = ts_get_json(s, key);
	assert_non_null(man);
	if (created)
		json_object_set_new(man, "created", json_string(created));
	else
		json_object_del(man, "created");
	snprintf(name, sizeof(name), "gen/%" PRIu64 ".json", gen);
	put_json(s, path, name, man);
	json_decref(man);
}

/* `gc --dry-run ARGS... URL`: the "N kept, M would be dropped" it prints. */
static void assert_gc_keeps(const char *url, const char *opt, const char *val, const char *says)
{
	char *out = cli_ok((const char *[]){ "gc", "--dry-run", opt, val, url, NULL });

	if (strstr(out, says) == NULL)
		fail_msg("gc %s %s said \"%s\", want \"%s\"", opt, val, out, says);
	free(out);
}

static void gc_keep_since_keeps_the_generations_created_at_or_after_the_time(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 37);
	char url[512];

	tc_url(url, sizeof(url), s, "/hist/since");
	for (int g = 1; g <= 5; g++) {
		d[0] = (unsigned char)g;
		tc_put(url, BS, d, NBLK * BS);
	}
	set_created(s, "/hist/since", 1, "2020-01-01T00:00:00Z");
	set_created(s, "/hist/since", 2, "2024-06-01T12:00:00Z");
	set_created(s, "/hist/since", 3, "2024-06-02T00:00:00Z");
	/* 4 keeps the time of its commit (now); 5 is the latest. */
	assert_gc_keeps(url, "--keep-since", "2024-06-01T12:00:00Z", "4 kept, 1 would be dropped");
	assert_gc_keeps(url, "--keep-since", "2024-06-01T12:00:01Z", "3 kept, 2 would be dropped");
	assert_gc_keeps(url, "--keep-since", "2024-06-01", "4 kept, 1 would be dropped");
	assert_gc_keeps(url, "--keep-since", "2024-06-02", "3 kept, 2 would be dropped");
	assert_gc_keeps(url, "--keep-since", "1d", "2 kept, 3 would be dropped");
	assert_gc_keeps(url, "--keep-since", "1970-01-01", "5 kept, 0 would be dropped");
	char *out;
	/* A generation that does not say when it was created is kept. */
	set_created(s, "/hist/since", 1, NULL);
	assert_gc_keeps(url, "--keep-since", "2h", "3 kept, 2 would be dropped");
	/* A real run drops 2 and 3 (not 1: no creation time). */
	out = cli_ok((const char *[]){ "gc", "--keep-since", "2h", "--grace", "0", url, NULL });
	assert_non_null(strstr(out, "3 kept, 2 dropped"));
	free(out);
	json_t *g2 = ts_get_json(s, "/hist/since/gen/2.json"), *g1 = ts_get_json(s, "/hist/since/gen/1.json");
	assert_null(g2);
	assert_non_null(g1);
	json_decref(g1);
	free(d);
}

static void gc_reads_every_duration_and_time_form_and_refuses_others(void **state)
{
	static const char *const graces[] = { "90", "90s", "15m", "2h", "7d", "0" };
	static const char *const bad_graces[] = { "1w", "-5", "99999999999999999d" };
	static const char *const bad_times[] = { "2026-13-45", "2026-11-29T10:00:00", "-1d" };
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 38);
	char url[512], *out;

	put_generations(s, "/hist/durations", url, d, 1);
	for (size_t i = 0; i < sizeof(graces) / sizeof(graces[0]); i++) {
		out = cli_ok((const char *[]){ "gc", "--dry-run", "--grace", graces[i], url, NULL });
		assert_non_null(strstr(out, "1 kept, 0 would be dropped"));
		free(out);
	}
	for (size_t i = 0; i < sizeof(bad_graces) / sizeof(bad_graces[0]); i++)
		assert_cli_fails(2, "--grace needs a DURATION", (const char *[]){ "gc", "--grace", bad_graces[i], url, NULL });
	for (size_t i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]); i++)
		assert_cli_fails(2, "--keep-since needs a TIME",
				 (const char *[]){ "gc", "--keep-since", bad_times[i], url, NULL });
	assert_cli_fails(2, "--keep needs a number", (const char *[]){ "gc", "--keep", url, NULL });
	assert_cli_fails(2, "unknown option", (const char *[]){ "gc", "--frobnicate", url, NULL });
	assert_cli_fails(2, "expected URL", (const char *[]){ "gc", url, url, NULL });
	free(d);
}

static void a_gc_json_that_is_not_a_gc_marker_stops_gc_tags_and_commits_naming_it(void **state)
{
	static const char *const bad[] = {
		"garbage",
		"{\"format\": \"blkmap-gc\", \"epoch\": 0, \"state\": \"done\"}",
		"{\"format\": \"blkmap-gc\", \"epoch\": 2, \"state\": \"paused\"}",
		"{\"format\": \"blkmap-tags\", \"epoch\": 2, \"state\": \"done\"}",
	};
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 39);
	char url[512], *file = tc_tmpfile(d, NBLK * BS);

	put_generations(s, "/hist/badmark", url, d, 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long st = ts_put(s, "/hist/badmark/gc.json", bad[i], strlen(bad[i]));
		assert_true(st == 201 || st == 204);
		assert_cli_fails(1, "/hist/badmark/gc.json: not a gc marker", (const char *[]){ "gc", url, NULL });
		assert_cli_fails(1, "/hist/badmark/gc.json: not a gc marker", (const char *[]){ "tag", url, "v1", NULL });
		assert_cli_fails(1, "/hist/badmark/gc.json: not a gc marker",
				 (const char *[]){ "put", "--blksize", "4k", file, url, NULL });
	}
	/* Deleted, as the message says: all is well again. */
	assert_int_equal(ts_delete(s, "/hist/badmark/gc.json"), 204);
	char *out = cli_ok((const char *[]){ "tag", url, "v1", NULL });
	assert_string_equal(out, "1\n");
	free(out);
	unlink(file);
	free(file);
	free(d);
}

/* PUTs PATH/gc.json: the running marker of another gc (host "elsewhere",
 * PID, STARTED), as gcmark.c writes it, renewed now; the HTTP status.  No
 * cmocka assertion: the children below call it. */
static long put_other_marker(const struct ts_server *s, const char *path, long long epoch, int beat, int pid,
			     const char *started)
{
	char key[256], text[512];

	snprintf(key, sizeof(key), "%s/gc.json", path);
	snprintf(text, sizeof(text),
		 "{\"format\":\"blkmap-gc\",\"epoch\":%lld,\"state\":\"running\",\"beat\":%d,\"renewed\":%lld,"
		 "\"host\":\"elsewhere\",\"pid\":%d,\"started\":\"%s\"}",
		 epoch, beat, (long long)time(NULL), pid, started);
	return ts_put(s, key, text, strlen(text));
}

static void put_marker(const struct ts_server *s, const char *path, int epoch, int beat)
{
	long st = put_other_marker(s, path, epoch, beat, 4242, "2026-11-29T10:00:00Z");
	assert_true(st == 201 || st == 204);
}

/* GETs the server has answered (/_admin/ requests are not counted); -1 on
 * failure.  No cmocka assertion: other_gc's child calls it. */
static long gets_answered(const struct ts_server *s)
{
	json_t *st = ts_get_json(s, "/_admin/stats");
	long n = st ? (long)json_integer_value(json_object_get(json_object_get(st, "requests"), "GET")) : -1;

	json_decref(st);
	return n;
}

struct other_gc {
	const struct ts_server *s;
	long gets;                 /* GETs answered before the gc under test ran */
};

/* Another gc that renews its marker (epoch 5) every 20 ms.  Once the gc
 * under test has made 4 GETs (manifest.json, gc.json, then gc.json again:
 * it is watching this marker), the marker turns into one of epoch 6: a gc
 * that started after the first ended.  Runs until killed (at most 30 s). */
static int other_gc(void *arg)
{
	const struct other_gc *o = arg;
	int epoch = 5;

	for (int beat = 2; beat < 1500; beat++) {
		if (epoch == 5 && gets_answered(o->s) >= o->gets + 4)
			epoch = 6;
		if (put_other_marker(o->s, "/hist/othergc", epoch, beat, 4242, "2026-11-29T10:00:00Z") / 100 != 2)
			return 1;
		usleep(20000);
	}
	return 0;
}

static void gc_refuses_to_run_beside_another_gc_that_renews_its_marker(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 40);
	char url[512];

	put_generations(s, "/hist/othergc", url, d, 1);
	put_marker(s, "/hist/othergc", 5, 1);
	struct other_gc o = { .s = s, .gets = gets_answered(s) };
	assert_true(o.gets >= 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(other_gc(&o));
	/* Its settle time D is 250 ms: a marker unchanged for 4 D would be
	 * a dead gc's, and this one changes every 20 ms. */
	setenv("BLKMAP_GC_SETTLE_MS", "250", 1);
	assert_cli_fails(3, "another gc is running (elsewhere pid 4242, since 2026-11-29T10:00:00Z)",
			 (const char *[]){ "gc", url, NULL });
	setenv("BLKMAP_GC_SETTLE_MS", "100", 1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* The marker is still the other gc's: this one wrote nothing. */
	json_t *m = ts_get_json(s, "/hist/othergc/gc.json");
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "host")), "elsewhere");
	json_decref(m);
	free(d);
}

static void gc_that_cannot_delete_fails_with_one_line_and_lowers_its_marker(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 43);
	char url[512];

	put_generations(s, "/hist/nodelete", url, d, 2);
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 1, \"fault-method\": \"DELETE\"}"), 200);
	setenv("BLKMAP_RETRIES", "1", 1);
	assert_cli_fails(1, "503", (const char *[]){ "gc", "--keep", "1", "--grace", "0", url, NULL });
	unsetenv("BLKMAP_RETRIES");
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0, \"fault-method\": \"\"}"), 200);
	/* Its marker says it is done: the next gc need not wait, and finishes
	 * the job. */
	json_t *m = ts_get_json(s, "/hist/nodelete/gc.json");
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "state")), "done");
	json_decref(m);
	char *out = cli_ok((const char *[]){ "gc", "--keep", "1", "--grace", "0", url, NULL });
	assert_non_null(strstr(out, "1 kept, 1 dropped; objects: "));
	assert_null(strstr(out, "objects: 0 deleted"));
	free(out);
	assert_true(tc_dataset_equals(url, 0, d, NBLK * BS));
	free(d);
}

/* Waits (at most 30 s) for a gc of this host to raise its marker on
 * /hist/takeover, then takes it over as another gc would: 0 once done. */
static int take_over(void *arg)
{
	const struct ts_server *s = arg;

	for (int i = 0; i < 6000; i++) {
		json_t *m = ts_get_json(s, "/hist/takeover/gc.json");
		const char *st = json_string_value(json_object_get(m, "state"));
		json_int_t epoch = json_integer_value(json_object_get(m, "epoch"));
		bool ours = m && st && strcmp(st, "running") == 0;
		json_decref(m);
		if (ours)
			return put_other_marker(s, "/hist/takeover", (long long)epoch + 1, 1, 4243,
						"2026-11-29T11:00:00Z") / 100 == 2 ? 0 : 1;
		usleep(5000);
	}
	return 2;
}

static void a_gc_whose_marker_another_gc_took_over_stops_before_deleting_anything(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 44);
	char url[512];

	put_generations(s, "/hist/takeover", url, d, 2);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(take_over(s));
	/* Taken over while it settles (1 s): its next beat finds out. */
	setenv("BLKMAP_GC_SETTLE_MS", "1000", 1);
	assert_cli_fails(3, "gc.json: another gc took over this one's marker",
			 (const char *[]){ "gc", "--keep", "1", "--grace", "0", url, NULL });
	setenv("BLKMAP_GC_SETTLE_MS", "100", 1);
	int st = -1;
	waitpid(pid, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Nothing was dropped, and the marker is the other gc's. */
	json_t *g1 = ts_get_json(s, "/hist/takeover/gen/1.json"), *m = ts_get_json(s, "/hist/takeover/gc.json");
	assert_non_null(g1);
	assert_string_equal(json_string_value(json_object_get(m, "host")), "elsewhere");
	json_decref(g1);
	json_decref(m);
	free(d);
}

#define BIG_NBLK 1100 /* more keys than gc's key set starts with room for */

static void gc_of_a_dataset_of_a_thousand_blocks_deletes_only_what_no_kept_generation_names(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(BIG_NBLK * BS, 41);
	char url[512];

	tc_url(url, sizeof(url), s, "/hist/big");
	tc_put(url, BS, d, BIG_NBLK * BS);
	d[0] ^= 1;
	d[700 * BS] ^= 1;
	tc_put(url, BS, d, BIG_NBLK * BS);
	char *out = cli_ok((const char *[]){ "gc", "--keep", "1", "--grace", "0", url, NULL });
	unsigned long deleted = 0;
	const char *p = strstr(out, "1 kept, 1 dropped; objects: ");
	if (p == NULL || sscanf(p, "1 kept, 1 dropped; objects: %lu deleted", &deleted) != 1)
		fail_msg("gc said \"%s\"", out);
	/* Generation 1's blocks 0 and 700, and its index pages on their
	 * paths: nothing else. */
	assert_true(deleted >= 2 && deleted < 10);
	free(out);
	assert_true(tc_dataset_equals(url, 0, d, BIG_NBLK * BS));
	free(d);
}

struct stops {
	int calls, stop_with;
	uint64_t first;
};

static int stop_tag(void *arg, const char *name, uint64_t gen)
{
	struct stops *st = arg;
	(void)name;
	st->first = st->calls++ ? st->first : gen;
	return st->stop_with;
}

static int stop_range(void *arg, uint64_t first, uint64_t count)
{
	struct stops *st = arg;
	(void)count;
	st->first = st->calls++ ? st->first : first;
	return st->stop_with;
}

static void the_library_calls_take_null_options_and_stop_when_the_callback_says_so(void **state)
{
	struct ts_server *s = *state;
	unsigned char *d = ts_pattern(NBLK * BS, 42);
	struct bm_diff_info info;
	uint64_t tagged = 0;
	char url[512];

	tc_url(url, sizeof(url), s, "/hist/lib");
	tc_put(url, BS, d, NBLK * BS);
	d[1 * BS] ^= 1;
	d[5 * BS] ^= 1;
	tc_put(url, BS, d, NBLK * BS);
	assert_int_equal(bm_tag_set(url, NULL, "first", 1, NULL), 0);
	assert_int_equal(bm_tag_set(url, NULL, "latest", 0, &tagged), 0);
	assert_int_equal(tagged, 2);

	/* Both tags, in name order; the walk stops at the first non-zero. */
	struct stops all = { 0 }, one = { .stop_with = 7 };
	assert_int_equal(bm_tags_list(url, NULL, stop_tag, &all), 0);
	assert_int_equal(all.calls, 2);
	assert_int_equal(all.first, 1);
	assert_int_equal(bm_tags_list(url, NULL, stop_tag, &one), 7);
	assert_int_equal(one.calls, 1);

	/* Two ranges (blocks 1 and 5); stopped after the first. */
	struct stops ranges = { 0 }, first = { .stop_with = 5 };
	assert_int_equal(bm_diff(url, NULL, "first", NULL, &info, stop_range, &ranges), 0);
	assert_int_equal(ranges.calls, 2);
	assert_int_equal(info.generation_a, 1);
	assert_int_equal(info.generation_b, 2);
	assert_int_equal(info.blksize, BS);
	assert_int_equal(bm_diff(url, NULL, "1", "latest", &info, stop_range, &first), 5);
	assert_int_equal(first.calls, 1);
	assert_int_equal(first.first, 1);

	struct bm_gc_policy p = { .dry_run = 1, .keep = 1 };
	struct bm_gc_report r;
	assert_int_equal(bm_gc(url, NULL, &p, &r), 0);
	assert_int_equal(r.latest, 2);
	assert_int_equal(r.generations_kept, 2); /* the latest, and 1 is tagged */
	assert_int_equal(r.generations_dropped, 0);
	free(d);
}

static void the_library_refuses_a_negative_grace(void **state)
{
	struct ts_server *s = *state;
	struct bm_gc_policy p = { .grace_s = -1 };
	struct bm_gc_report r;
	char url[512];

	tc_url(url, sizeof(url), s, "/hist/negative");
	assert_int_equal(bm_gc(url, NULL, &p, &r), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(NULL), "the grace must not be negative"));
}

int main(void)
{
	setenv("BLKMAP_GC_SETTLE_MS", "100", 1);
	setenv("BLKMAP_WCFS", "off", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(diff_lists_changes_between_version_1_generations_and_across_the_upgrade_to_version_2),
		cmocka_unit_test(diff_refuses_generations_of_different_block_sizes),
		cmocka_unit_test(diff_names_what_it_cannot_resolve),
		cmocka_unit_test(a_generation_file_naming_another_generation_or_damaged_is_refused_naming_it),
		cmocka_unit_test(a_tag_list_that_is_not_one_is_refused_with_one_line_naming_it),
		cmocka_unit_test(tag_usage_errors_and_a_url_without_a_dataset),
		cmocka_unit_test(tags_written_at_the_same_time_by_several_processes_all_land),
		cmocka_unit_test(gc_keep_since_keeps_the_generations_created_at_or_after_the_time),
		cmocka_unit_test(gc_reads_every_duration_and_time_form_and_refuses_others),
		cmocka_unit_test(a_gc_json_that_is_not_a_gc_marker_stops_gc_tags_and_commits_naming_it),
		cmocka_unit_test(gc_refuses_to_run_beside_another_gc_that_renews_its_marker),
		cmocka_unit_test(gc_that_cannot_delete_fails_with_one_line_and_lowers_its_marker),
		cmocka_unit_test(a_gc_whose_marker_another_gc_took_over_stops_before_deleting_anything),
		cmocka_unit_test(gc_of_a_dataset_of_a_thousand_blocks_deletes_only_what_no_kept_generation_names),
		cmocka_unit_test(the_library_calls_take_null_options_and_stop_when_the_callback_says_so),
		cmocka_unit_test(the_library_refuses_a_negative_grace),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
