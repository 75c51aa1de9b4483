/* tests/test_client_cli.c — the `blkmap` command line: every command's
 * --help exits 0 with its usage on stdout; a usage error exits 2 with one
 * line on stderr; any other error exits 1 with one line on stderr naming
 * what failed; stat prints JSON (that parses whatever the URL holds); sum -v
 * prints its counters.
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

static void every_command_has_help_that_exits_0(void **state)
{
	static const char *const cmds[] = { "put", "get", "sum", "patch", "stat", "log",
					    "diff", "tag", "tags", "gc" };
	char *out, *err;
	(void)state;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		assert_int_equal(tc_cli(&out, &err, (const char *[]){ cmds[i], "--help", NULL }), 0);
		assert_true(strncmp(out, "usage: blkmap ", 14) == 0);
		assert_non_null(strstr(out, cmds[i]));
		assert_string_equal(err, "");
		free(out);
		free(err);
	}
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "--help", NULL }), 0);
	assert_non_null(strstr(out, "patch URL OFFSET FILE"));
	assert_non_null(strstr(out, "take --at GEN|TAG"));
	free(out);
}

static void usage_errors_exit_2_with_one_line(void **state)
{
	static const char *const cases[][6] = {
		{ NULL },
		{ "frobnicate", NULL },
		{ "put", NULL },
		{ "put", "--blksize", "lots", "f", "http://h/x", NULL },
		{ "get", "http://h/x", NULL },
		{ "sum", NULL },
		{ "sum", "a", "b", NULL },
		{ "patch", "http://h/x", "notanumber", "f", NULL },
		{ "patch", "--at", "0", "http://h/x", "0", "f" },
		{ "stat", NULL },
		{ "log", "a", "b", NULL },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *argv[8] = { NULL };
		char *out, *err;
		for (int k = 0; k < 6 && cases[i][k]; k++)
			argv[k] = cases[i][k];
		int ex = tc_cli(&out, &err, argv);
		if (ex != 2 || tc_lines(err) != 1 || out[0] != '\0')
			fail_msg("case %zu (%s): exit %d, stderr \"%s\"", i, argv[0] ? argv[0] : "(none)", ex, err);
		free(out);
		free(err);
	}
}

static void errors_exit_1_with_one_line_naming_the_url(void **state)
{
	struct ts_server *s = *state;
	char url[512], *out, *err;
	const char *bad_urls[] = { "http://127.0.0.1:1/nothing", url, "ftp://example/x" };

	tc_url(url, sizeof(url), s, "/cli/missing");
	for (size_t i = 0; i < 3; i++) {
		int ex = tc_cli(&out, &err, (const char *[]){ "sum", bad_urls[i], NULL });
		if (ex != 1 || tc_lines(err) != 1 || !strstr(err, bad_urls[i]) || out[0])
			fail_msg("sum %s: exit %d, stderr \"%s\"", bad_urls[i], ex, err);
		free(out);
		free(err);
	}
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "put", "/nonexistent/file", url, NULL }), 1);
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "/nonexistent/file"));
	free(out);
	free(err);
}

/* URL schemes are case-insensitive (RFC 3986): HTTP:// is http://. */
static void a_scheme_in_capitals_names_the_same_dataset(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(3 * 4096, 62);
	char url[512], *out, *err;

	tc_url(url, sizeof(url), s, "/cli/capitals");
	tc_put(url, 4096, data, 3 * 4096);
	memcpy(url, "HTTP", 4);
	if (tc_cli(&out, &err, (const char *[]){ "stat", url, NULL }) != 0 || !strstr(out, "\"generation\": 1"))
		fail_msg("stat %s: stdout \"%s\", stderr \"%s\"", url, out, err);
	free(out);
	free(err);
	free(data);
}

static void stat_prints_json_and_sum_v_prints_counters(void **state)
{
	struct ts_server *s = *state;
	size_t size = 5 * 65536 + 3;
	unsigned char *data = ts_pattern(size, 61);
	char url[512], *out, *err;

	tc_url(url, sizeof(url), s, "/cli/stat");
	tc_put(url, 65536, data, size);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "stat", url, NULL }), 0);
	json_t *doc = json_loads(out, 0, NULL);
	assert_non_null(doc);
	assert_int_equal(json_integer_value(json_object_get(doc, "size")), size);
	assert_int_equal(json_integer_value(json_object_get(doc, "blksize")), 65536);
	assert_int_equal(json_integer_value(json_object_get(doc, "generation")), 1);
	assert_int_equal(json_integer_value(json_object_get(doc, "blocks")), 6);
	json_decref(doc);
	free(out);
	/* A URL with a quote and a backslash still makes JSON that parses. */
	char odd[512];
	tc_url(odd, sizeof(odd), s, "/cli/a\"b\\c");
	tc_put(odd, 65536, data, 10);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "stat", odd, NULL }), 0);
	doc = json_loads(out, 0, NULL);
	if (doc == NULL)
		fail_msg("stat of %s printed %s, not JSON", odd, out);
	assert_string_equal(json_string_value(json_object_get(doc, "url")), odd);
	json_decref(doc);
	free(out);

	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "sum", "-v", url, NULL }), 0);
	assert_int_equal(tc_lines(err), 1);
	assert_true(strncmp(err, "mode=loadblk fetched_bytes=", 27) == 0);
	char want[64];
	snprintf(want, sizeof(want), "fetched_bytes=%zu ", size);
	assert_non_null(strstr(err, want));
	/* The fault engine in use: the one VIRTMEM_ENGINE names, if any. */
	const char *engine = getenv("VIRTMEM_ENGINE");
	if (engine != NULL && *engine != '\0') {
		snprintf(want, sizeof(want), " engine=%s ", engine);
		assert_non_null(strstr(err, want));
	} else {
		assert_true(strstr(err, " engine=sigsegv ") || strstr(err, " engine=uffd"));
	}
	free(out);
	free(err);
	free(data);
}

static void log_lists_generations_past_a_long_run_not_kept(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(8192, 62);
	char url[512], *out, *err;

	/* The current generation is the server's word: at 200, with only 1
	 * kept besides the current one.  blkmap-server lists: the log finds
	 * generation 1 past the 198 not kept, in one line for them, with no
	 * lookup of each (a walk would stop after 64). */
	tc_url(url, sizeof(url), s, "/cli/log");
	tc_put(url, 4096, data, 8192);
	json_t *man = ts_get_json(s, "/cli/log/manifest.json");
	json_object_set_new(man, "generation", json_integer(200));
	char *text = tc_manifest_text(man, NULL);
	assert_int_equal(ts_put(s, "/cli/log/manifest.json", text, strlen(text)), 204);
	long gets = tc_server_stat(s, "requests", "GET"), heads = tc_server_stat(s, "requests", "HEAD");
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "log", url, NULL }), 0);
	assert_int_equal(tc_lines(out), 3);
	assert_true(strncmp(out, "generation 200 size 8192 blocks 2 ", 34) == 0);
	assert_non_null(strstr(out, "\ngenerations 2-199 (not kept)\ngeneration 1 size 8192 blocks 2 "));
	/* manifest.json, the listing, gen/200.json (not kept) and gen/1.json */
	assert_true(tc_server_stat(s, "requests", "GET") - gets <= 5);
	assert_true(tc_server_stat(s, "requests", "HEAD") - heads <= 1);
	free(out);
	free(err);
	free(text);
	json_decref(man);
	free(data);
}

/* Replaces the object of block 1 of the dataset at PATH of S (URL: its
 * URL) with LEN other bytes (ts_pattern SEED): the same length, not its
 * sum. */
static void replace_block_1(struct ts_server *s, const char *path, const char *url, size_t len,
			    unsigned seed)
{
	char key[256], bkey[128];

	snprintf(key, sizeof(key), "%s/%s", path, tc_block_key(url, 1, bkey, sizeof(bkey)));
	unsigned char *other = ts_pattern(len, seed);
	assert_true(ts_put(s, key, other, len) / 100 == 2);
	free(other);
}

/* Fails the test unless ERR, the stderr of `blkmap CMD`, is one line
 * naming URL, block 1 and its checksum mismatch. */
static void assert_block_1_mismatch(const char *cmd, const char *url, const char *err)
{
	if (tc_lines(err) != 1 || !strstr(err, "checksum mismatch") || !strstr(err, url) ||
	    !strstr(err, "block 1"))
		fail_msg("%s: stderr \"%s\": one line naming the URL and block 1 expected", cmd, err);
}

static void unreadable_block_fails_get_and_sum_with_exit_1_and_one_line_not_a_signal(void **state)
{
	struct ts_server *s = *state;
	size_t size = 3 * 65536;
	unsigned char *data = ts_pattern(size, 62);
	char url[512], *out, *err, path[] = "/tmp/blkmap-cli-get-XXXXXX";

	tc_url(url, sizeof(url), s, "/cli/corrupt");
	tc_put(url, 65536, data, size);
	close(mkstemp(path));
	replace_block_1(s, "/cli/corrupt", url, 65536, 63);
	setenv("BLKMAP_RETRIES", "1", 1);
	setenv("BLKMAP_RETRY_BASE_MS", "1", 1);
	const char *const *cmds[] = {
		(const char *[]){ "sum", url, NULL },
		(const char *[]){ "get", url, path, NULL },
	};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(tc_cli(&out, &err, cmds[i]), 1);
		assert_block_1_mismatch(cmds[i][0], url, err);
		free(out);
		free(err);
	}
	unsetenv("BLKMAP_RETRIES");
	unsetenv("BLKMAP_RETRY_BASE_MS");
	unlink(path);
	free(data);
}

/* `blkmap sum` reads a plain object or a dataset with a GET per block in
 * parallel straight into buffers, hashed in order, not through a mapping
 * (no fault, no read-ahead): the sum of the same bytes read through a
 * mapping (64 KiB blocks with one connection: a block per connection, 4
 * at most, is under 4 MiB).  While answers are 30 ms late several
 * requests are in flight, and for 64 KiB blocks more than the 16
 * connections: the reads in flight grow to the bandwidth-delay product
 * (after 3 epochs of 32 reads at 16: the dataset has 321 blocks), at
 * most 64 and an index page. */
static void sum_reads_blocks_in_parallel_without_a_mapping(void **state)
{
	struct ts_server *s = *state;
	const size_t size = 20 * 1048576 + 1000;
	unsigned char *data = ts_pattern(size, 64);
	char flat[512], big[512], small[512], want[64], *out, *err, *mapped;

	tc_url(flat, sizeof(flat), s, "/cli/sum.bin");
	tc_url(big, sizeof(big), s, "/cli/sum1m");
	tc_url(small, sizeof(small), s, "/cli/sum64k");
	assert_true(ts_put(s, "/cli/sum.bin", data, size) / 100 == 2);
	tc_put(big, 1048576, data, size);
	tc_put(small, 65536, data, size);
	setenv("BLKMAP_CONNECTIONS", "1", 1);
	assert_int_equal(tc_cli(&mapped, &err, (const char *[]){ "sum", "-v", small, NULL }), 0);
	unsetenv("BLKMAP_CONNECTIONS");
	if (strstr(err, " cache_misses=0 readahead_blocks=0 "))
		fail_msg("sum -v of 64 KiB blocks, 1 connection: %s: a mapping expected", err);
	free(err);
	const char *urls[] = { flat, big, small };
	const int blocks[] = { 21, 21, 321 };
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 30}"), 200);
		(void)tc_server_stat(s, "requests_in_flight_max", NULL); /* a new peak */
		int ex = tc_cli(&out, &err, (const char *[]){ "sum", "-v", urls[i], NULL });
		long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
		assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);
		assert_int_equal(ex, 0);
		assert_true(strlen(out) > 64 && strlen(mapped) > 64);
		assert_memory_equal(out, mapped, 64);
		snprintf(want, sizeof(want), " fetched_bytes=%zu ", size);
		assert_non_null(strstr(err, want));
		char fetched[64];
		snprintf(fetched, sizeof(fetched), " fetched_blocks=%d ", blocks[i]);
		if (!strstr(err, fetched) || !strstr(err, " cache_hits=0 cache_misses=0 readahead_blocks=0 "))
			fail_msg("sum -v %s: %s: %d blocks fetched, no fault and no read-ahead expected",
				 urls[i], err, blocks[i]);
		if (peak < 2 || peak > 65 || (urls[i] == small && peak <= 16))
			fail_msg("sum %s: %ld requests in flight at most", urls[i], peak);
		free(out);
		free(err);
	}
	/* A block that fails its checksum fails the sum: exit 1, one line
	 * naming the URL and the block (as through a mapping, below). */
	replace_block_1(s, "/cli/sum1m", big, 1048576, 65);
	setenv("BLKMAP_RETRIES", "1", 1);
	setenv("BLKMAP_RETRY_BASE_MS", "1", 1);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "sum", big, NULL }), 1);
	unsetenv("BLKMAP_RETRIES");
	unsetenv("BLKMAP_RETRY_BASE_MS");
	assert_block_1_mismatch("sum", big, err);
	free(out);
	free(err);
	free(mapped);
	free(data);
}

/* `blkmap sum` looks a dataset's index pages up ahead of its reads: with
 * every block object answered 503 (fault-path), the sum fails after its
 * tries (exit 1, one line naming a block's 503), yet by
 * then the leaves of blocks 256 and 512 were fetched too (without the
 * look-ahead only the manifest, the root and the first leaf are: 3
 * answers of 200).  The tries give the look-ahead seconds for its two
 * GETs. */
static void sum_looks_up_index_pages_ahead_of_its_reads(void **state)
{
	struct ts_server *s = *state;
	const size_t size = 513 * 65536;
	unsigned char *data = ts_pattern(size, 66);
	char url[512], *out, *err;

	tc_url(url, sizeof(url), s, "/cli/ahead");
	tc_put(url, 65536, data, size);
	long ok = tc_server_stat(s, "responses", "200");
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 1, \"fault-path\": \"/blocks/\"}"), 200);
	setenv("BLKMAP_RETRIES", "3", 1);
	setenv("BLKMAP_RETRY_BASE_MS", "300", 1);
	int ex = tc_cli(&out, &err, (const char *[]){ "sum", url, NULL });
	unsetenv("BLKMAP_RETRIES");
	unsetenv("BLKMAP_RETRY_BASE_MS");
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0, \"fault-path\": \"\"}"), 200);
	ok = tc_server_stat(s, "responses", "200") - ok;
	assert_int_equal(ex, 1);
	if (tc_lines(err) != 1 || !strstr(err, url) || !strstr(err, "block ") || !strstr(err, "HTTP 503"))
		fail_msg("sum with every block failing: \"%s\": one line naming a block's 503 expected", err);
	if (ok < 5)
		fail_msg("%ld answers of 200 while no block could be read: the manifest, the root and "
			 "3 leaves expected", ok);
	free(out);
	free(err);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_command_has_help_that_exits_0),
		cmocka_unit_test(usage_errors_exit_2_with_one_line),
		cmocka_unit_test(errors_exit_1_with_one_line_naming_the_url),
		cmocka_unit_test(a_scheme_in_capitals_names_the_same_dataset),
		cmocka_unit_test(stat_prints_json_and_sum_v_prints_counters),
		cmocka_unit_test(log_lists_generations_past_a_long_run_not_kept),
		cmocka_unit_test(unreadable_block_fails_get_and_sum_with_exit_1_and_one_line_not_a_signal),
		cmocka_unit_test(sum_reads_blocks_in_parallel_without_a_mapping),
		cmocka_unit_test(sum_looks_up_index_pages_ahead_of_its_reads),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
