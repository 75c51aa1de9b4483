/* tests/test_client_errors.c — libblkmap's refusals, as a program using it
 * meets them: error codes and their texts; options from the environment
 * (suffixes, and values that do not parse, named in the message); options
 * out of range; a server that wants a token (BLKMAP_TOKEN) and one that
 * refuses a block (401/403 are BM_EAUTH, 404 BM_ENOTFOUND); bm_refresh
 * refusing dirty handles, another block size and a manifest older than
 * the handle's; a commit that is already behind (another writer published,
 * created the dataset or deleted it) conflicting before it uploads a
 * single block.  Also the harness's own promise: a child that hangs is
 * killed at tc_child_limit_ms.  One blkmap-server for the group; the
 * token test starts its own.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#define KiB ((size_t)1 << 10)
#define SUM_HEX 32  /* a block checksum: 32 hex digits (bm_block_sum) */

/* ---- codes and options ------------------------------------------------------------ */

static void every_error_code_has_its_own_text(void **state)
{
	(void)state;
	assert_string_equal(bm_strerror(0), "success");
	for (int a = BM_EIO; a <= BM_EINVAL; a++) {
		const char *ta = bm_strerror(a);
		assert_non_null(ta);
		if (strstr(ta, "Unknown error"))
			fail_msg("code %d has no text of its own: \"%s\"", a, ta);
		for (int b = BM_EIO; b < a; b++)
			if (strcmp(ta, bm_strerror(b)) == 0)
				fail_msg("codes %d and %d share the text \"%s\"", a, b, ta);
	}
	assert_string_equal(bm_strerror(BM_EAUTH), "not authorized");
	/* -errno codes read as the system's text. */
	assert_string_equal(bm_strerror(-ENOENT), strerror(ENOENT));
	assert_string_equal(bm_strerror(-EACCES), strerror(EACCES));
}

static const char *const option_vars[] = {
	"BLKMAP_CACHE_BYTES", "BLKMAP_CONNECTIONS", "BLKMAP_RETRIES", "BLKMAP_TIMEOUT_MS",
	"BLKMAP_BLKSIZE", "BLKMAP_READAHEAD_BYTES", "BLKMAP_SPARE_BYTES", "BLKMAP_VERBOSE",
	"BLKMAP_CONNECT_TIMEOUT_MS", "BLKMAP_RETRY_BASE_MS",
};

static void unset_option_vars(void)
{
	for (size_t i = 0; i < sizeof(option_vars) / sizeof(option_vars[0]); i++)
		unsetenv(option_vars[i]);
}

static void environment_sizes_take_binary_suffixes(void **state)
{
	struct bm_options o;
	(void)state;

	unset_option_vars();
	setenv("BLKMAP_CACHE_BYTES", "64k", 1);
	setenv("BLKMAP_READAHEAD_BYTES", "3MiB", 1);
	setenv("BLKMAP_SPARE_BYTES", "2MB", 1);
	setenv("BLKMAP_CONNECTIONS", "", 1);  /* empty: the default */
	setenv("BLKMAP_VERBOSE", "2", 1);
	assert_int_equal(bm_options_init(&o), 0);
	assert_int_equal(o.cache_bytes, 64 * KiB);
	assert_int_equal(o.readahead_bytes, (size_t)3 << 20);
	assert_int_equal(o.spare_bytes, (size_t)2 << 20);
	assert_int_equal(o.connections, 16);
	assert_int_equal(o.verbose, 2);
	unset_option_vars();
	setenv("BLKMAP_BLKSIZE", "64M", 1);
	setenv("BLKMAP_CACHE_BYTES", "1t", 1);
	assert_int_equal(bm_options_init(&o), BM_EINVAL); /* 1 TiB > 512 GiB */
	setenv("BLKMAP_CACHE_BYTES", "512G", 1);
	assert_int_equal(bm_options_init(&o), 0);
	assert_int_equal(o.blksize, (size_t)64 << 20);
	assert_int_equal(o.cache_bytes, (size_t)512 << 30);
	unset_option_vars();
}

static void an_environment_variable_that_does_not_parse_is_refused_naming_it(void **state)
{
	static const char *const bad[][2] = {
		{ "BLKMAP_CACHE_BYTES", "lots" },
		{ "BLKMAP_CACHE_BYTES", "100" },            /* below 4096 */
		{ "BLKMAP_CACHE_BYTES", "-4096" },
		{ "BLKMAP_RETRIES", "101" },
		{ "BLKMAP_CONNECTIONS", "0" },
		{ "BLKMAP_TIMEOUT_MS", "5s" },
		{ "BLKMAP_BLKSIZE", "1G" },                 /* above 64 MiB */
		{ "BLKMAP_BLKSIZE", "4kk" },
		{ "BLKMAP_READAHEAD_BYTES", "99999999999999999999" },
		{ "BLKMAP_SPARE_BYTES", "16777216T" },      /* overflows 64 bits */
		{ "BLKMAP_VERBOSE", "10" },
		{ "BLKMAP_RETRY_BASE_MS", "0" },
		{ "BLKMAP_CONNECT_TIMEOUT_MS", "5 " },
	};
	struct bm_options o;
	bm_dataset *ds = NULL;
	(void)state;

	unset_option_vars();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[128];
		snprintf(want, sizeof(want), "%s=%s: expected a number from ", bad[i][0], bad[i][1]);
		setenv(bad[i][0], bad[i][1], 1);
		int rc = bm_options_init(&o);
		if (rc != BM_EINVAL || !strstr(bm_last_error(NULL), want) || strchr(bm_last_error(NULL), '\n'))
			fail_msg("%s=%s: %d, \"%s\"", bad[i][0], bad[i][1], rc, bm_last_error(NULL));
		/* bm_open with no options reads the same environment. */
		rc = bm_open(&ds, "http://127.0.0.1:1/x", NULL);
		if (rc != BM_EINVAL || ds != NULL || !strstr(bm_last_error(NULL), want))
			fail_msg("bm_open with %s=%s: %d, \"%s\"", bad[i][0], bad[i][1], rc, bm_last_error(NULL));
		unsetenv(bad[i][0]);
	}
	assert_int_equal(bm_options_init(&o), 0);
}

static void options_out_of_range_are_refused_by_bm_open(void **state)
{
	struct ts_server *s = *state;
	struct bm_options o;
	bm_dataset *ds = NULL;
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/opts");
	for (int i = 0; i < 4; i++) {
		tc_options(&o);
		switch (i) {
		case 0: o.connections = 0; break;
		case 1: o.retries = -1; break;
		case 2: o.cache_bytes = 100; break;
		case 3: o.timeout_ms = 0; break;
		}
		assert_int_equal(bm_open(&ds, url, &o), BM_EINVAL);
		assert_null(ds);
		assert_non_null(strstr(bm_last_error(NULL), "bad options"));
	}
}

/* ---- credentials and refusals from the server ----------------------------------------- */

static void a_server_that_wants_a_token_gets_it_from_BLKMAP_TOKEN_and_refusals_are_BM_EAUTH(void **state)
{
	const char *args[] = { "--token", "sekrit", NULL };
	struct ts_server srv;
	struct bm_options o;
	bm_dataset *ds = NULL;
	unsigned char *data = ts_pattern(3 * 4 * KiB, 11);
	char url[512], *out, *err;
	(void)state;

	tc_server_start(&srv, args);
	tc_url(url, sizeof(url), &srv, "/ce/token");
	setenv("BLKMAP_TOKEN", "sekrit", 1);
	tc_put(url, 4 * KiB, data, 3 * 4 * KiB);
	assert_true(tc_dataset_equals(url, 0, data, 3 * 4 * KiB));

	const char *tokens[] = { NULL, "wrong" };
	for (int i = 0; i < 2; i++) {
		if (tokens[i])
			setenv("BLKMAP_TOKEN", tokens[i], 1);
		else
			unsetenv("BLKMAP_TOKEN");
		tc_options(&o);
		assert_int_equal(bm_open(&ds, url, &o), BM_EAUTH);
		assert_null(ds);
		const char *msg = bm_last_error(NULL);
		if (!strstr(msg, url) || !strstr(msg, "401"))
			fail_msg("token %s: \"%s\" does not name the URL and the 401", tokens[i] ? tokens[i] : "(none)",
				 msg);
		/* The command says the same, in one line. */
		assert_int_equal(tc_cli(&out, &err, (const char *[]){ "stat", url, NULL }), 1);
		assert_int_equal(tc_lines(err), 1);
		assert_non_null(strstr(err, "401"));
		free(out);
		free(err);
	}
	unsetenv("BLKMAP_TOKEN");
	tc_server_stop(&srv);
	free(data);
}

/* A responder that serves the manifest of a real dataset and answers its
 * block 0 with STATUS (block 1 gets the responder's 404). */
static void read_blocks_refused(const struct ts_server *s, const char *status_line, int want0)
{
	unsigned char *data = ts_pattern(2 * 4 * KiB, 12);
	char url[512], path0[512], head[256], dsurl[256];
	struct tc_canned c;
	struct ts_resp r;

	tc_url(url, sizeof(url), s, "/ce/blocks");
	tc_put(url, 4 * KiB, data, 2 * 4 * KiB);
	ts_request(NULL, s, "GET", "/ce/blocks/manifest.json", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	json_t *man = json_loadb(r.body, r.len, 0, NULL);
	char bkey[128], ipath[256], spath[300];
	snprintf(path0, sizeof(path0), "/ds/%s", tc_block_key(url, 0, bkey, sizeof(bkey)));
	/* Format 2: the index page (one, of 2 blocks) is served too. */
	snprintf(ipath, sizeof(ipath), "/ds/index/%s", json_string_value(json_object_get(man, "root")));
	snprintf(spath, sizeof(spath), "/ce/blocks%s", ipath + 3);
	json_decref(man);
	struct ts_resp pr;
	ts_request(NULL, s, "GET", spath, NULL, NULL, 0, &pr);
	assert_int_equal(pr.status, 200);
	char phead[256];
	snprintf(phead, sizeof(phead), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		 pr.len);
	size_t page_len = strlen(phead) + pr.len;
	char *page_resp = malloc(page_len);
	memcpy(page_resp, phead, strlen(phead));
	memcpy(page_resp + strlen(phead), pr.body, pr.len);
	ts_resp_free(&pr);
	snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nETag: \"m1\"\r\n"
		 "Connection: close\r\n\r\n", r.len);
	char *manifest_resp = malloc(strlen(head) + r.len + 1);
	memcpy(manifest_resp, head, strlen(head));
	memcpy(manifest_resp + strlen(head), r.body, r.len);
	manifest_resp[strlen(head) + r.len] = '\0';
	char refused[256];
	snprintf(refused, sizeof(refused), "%s\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused",
		 status_line);
	const struct tc_rule rules[] = {
		{ "GET", "/ds/manifest.json", manifest_resp, 0, NULL },
		{ "GET", path0, refused, 0, NULL },
		{ "GET", ipath, page_resp, page_len, NULL },
	};
	tc_canned_start(&c, rules, 3);
	snprintf(dsurl, sizeof(dsurl), "%s/ds", c.url);

	bm_dataset *ds = tc_open(dsurl, 0);
	char buf[4 * KiB];
	assert_int_equal(bm_read(ds, 0, buf, sizeof(buf)), want0);
	const char *msg = bm_last_error(ds);
	char http[16];
	snprintf(http, sizeof(http), "HTTP %.3s", status_line + 9);
	if (!strstr(msg, "block 0") || !strstr(msg, path0) || !strstr(msg, http))
		fail_msg("\"%s\" does not name block 0, %s and %s", msg, path0, http);
	assert_int_equal(bm_read(ds, 4 * KiB, buf, sizeof(buf)), BM_ENOTFOUND);
	assert_non_null(strstr(bm_last_error(ds), "block 1"));
	bm_close(ds);
	tc_canned_stop(&c);
	ts_resp_free(&r);
	free(manifest_resp);
	free(page_resp);
	free(data);
}

static void a_block_refused_with_401_or_403_is_BM_EAUTH_and_a_missing_one_BM_ENOTFOUND(void **state)
{
	read_blocks_refused(*state, "HTTP/1.1 403 Forbidden", BM_EAUTH);
	read_blocks_refused(*state, "HTTP/1.1 401 Unauthorized", BM_EAUTH);
}

/* ---- bm_refresh's refusals ---------------------------------------------------------------- */

static void refresh_with_changes_is_refused_and_keeps_them(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 13);
	char url[512];
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/ce/refresh-dirty");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_write(ds, 5, "changed", 7), 0);
	assert_int_equal(bm_refresh(ds), BM_EBUSY);
	assert_non_null(strstr(bm_last_error(ds), "commit or discard the changes before refreshing"));
	memcpy(data + 5, "changed", 7);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, 4 * 4 * KiB));
	free(data);
}

/* PUTs the bytes of FROM (a path on S) to TO. */
static void copy_object(const struct ts_server *s, const char *from, const char *to)
{
	struct ts_resp r;

	ts_request(NULL, s, "GET", from, NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(ts_put(s, to, r.body, r.len) / 100, 2);
	ts_resp_free(&r);
}

static void refresh_refuses_another_block_size_and_keeps_the_generation_it_has(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 14), *other = ts_pattern(4 * 4 * KiB, 15);
	char url[512], url8[512];

	tc_url(url, sizeof(url), s, "/ce/refresh-bs");
	tc_url(url8, sizeof(url8), s, "/ce/refresh-bs8");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	tc_put(url8, 8 * KiB, other, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	copy_object(s, "/ce/refresh-bs8/manifest.json", "/ce/refresh-bs/manifest.json");
	assert_int_equal(bm_refresh(ds), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(ds), "the block size changed from 4096 to 8192"));
	assert_int_equal(bm_blksize(ds), 4 * KiB);
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, data, 4 * 4 * KiB);
	free(got);
	bm_close(ds);
	free(data);
	free(other);
}

static void refresh_refuses_a_manifest_older_than_the_handle(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 16);
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/refresh-old");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	data[0] ^= 1;
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 2);
	/* The server (or a cache in front of it) goes back to generation 1. */
	copy_object(s, "/ce/refresh-old/gen/1.json", "/ce/refresh-old/manifest.json");
	assert_int_equal(bm_refresh(ds), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(ds), "at generation 1, older than this handle's 2"));
	assert_int_equal(bm_generation(ds), 2);
	assert_true(bm_is_latest(ds));
	bm_close(ds);
	free(data);
}

/* ---- a commit already behind: refused before any upload ------------------------------------- */

/* Writes to DS through a mapping (dirty pages: uploaded by the commit,
 * unlike bm_write's blocks) and commits: BM_ECONFLICT with SAYS in the
 * message, and not one PUT reached the server. */
static void assert_commit_conflicts_before_uploading(const struct ts_server *s, bm_dataset *ds, const char *says)
{
	unsigned char *bytes = ts_pattern(3 * 4 * KiB, 17);
	uint64_t gen = 0;
	bm_mapping *m;
	void *addr;

	assert_int_equal(bm_resize(ds, 3 * 4 * KiB), 0);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memcpy(addr, bytes, 3 * 4 * KiB);
	long puts = tc_server_stat(s, "requests", "PUT");
	assert_int_equal(bm_commit(ds, &gen), BM_ECONFLICT);
	if (!strstr(bm_last_error(ds), says) || !strstr(bm_last_error(ds), bm_url(ds)))
		fail_msg("\"%s\": expected \"%s\" and the URL", bm_last_error(ds), says);
	assert_int_equal(tc_server_stat(s, "requests", "PUT"), puts);
	/* The written bytes are still there, for the program to keep. */
	assert_memory_equal(addr, bytes, 3 * 4 * KiB);
	bm_unmap(m);
	free(bytes);
}

static void a_commit_behind_another_writer_conflicts_before_uploading(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 18);
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/behind");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	data[7] ^= 1;
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);  /* generation 2, by another */
	assert_commit_conflicts_before_uploading(s, ds, "another writer published a new generation");
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, 4 * 4 * KiB));
	free(data);
}

static void a_commit_to_a_dataset_deleted_on_the_server_conflicts(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 19);
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/deleted");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(ts_delete(s, "/ce/deleted/manifest.json"), 204);
	assert_commit_conflicts_before_uploading(s, ds, "the dataset was deleted on the server");
	bm_close(ds);
	free(data);
}

static void creating_a_dataset_another_writer_created_first_conflicts(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 20);
	struct bm_options o;
	bm_dataset *ds = NULL;
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/created");
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = 4 * KiB;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_int_equal(bm_generation(ds), 0);
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	assert_commit_conflicts_before_uploading(s, ds, "another writer created the dataset first");
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, 4 * 4 * KiB));
	free(data);
}

/* ---- misuse of the API, generations, flat objects -------------------------------------- */

static void misuse_of_a_dataset_handle_is_refused_with_its_code(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(4 * 4 * KiB, 21);
	char url[512], sum[SUM_HEX + 1];
	bm_mapping *m;
	void *addr;

	tc_url(url, sizeof(url), s, "/ce/misuse");
	tc_put(url, 4 * KiB, data, 4 * 4 * KiB);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_write(ds, 4 * 4 * KiB - 2, "abc", 3), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(ds), "is past the size 16384"));
	assert_int_equal(bm_map(ds, 4 * 4 * KiB, 1, &addr, &m), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(ds), "is not inside the dataset's 16384 bytes"));
	assert_int_equal(bm_map(ds, 4 * KiB, 4 * 4 * KiB, &addr, &m), BM_EINVAL);
	assert_int_equal(bm_block_sum(ds, 4, sum, sizeof(sum)), BM_EINVAL);  /* past the last block */
	assert_int_equal(bm_block_sum(ds, 0, sum, SUM_HEX), BM_EINVAL);   /* no room for the NUL */
	assert_int_equal(bm_block_sum(ds, 0, sum, sizeof(sum)), 1);
	assert_int_equal(strlen(sum), SUM_HEX);
	assert_int_equal(bm_attrs_set(ds, "[1, 2]"), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(ds), url));
	assert_int_equal(bm_attrs_set(ds, NULL), BM_EINVAL);
	assert_int_equal(bm_resize(ds, (uint64_t)1 << 60), BM_EINVAL);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	assert_int_equal(bm_resize(ds, 4 * KiB), BM_EBUSY);
	assert_non_null(strstr(bm_last_error(ds), "cannot resize while mapped"));
	bm_unmap(m);
	/* None of it changed anything: nothing to commit. */
	uint64_t gen = 0;
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 1);
	bm_close(ds);
	free(data);
}

static void a_flat_object_refuses_every_change(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(5000, 22);
	char url[512], sum[SUM_HEX + 1];
	uint64_t *gens = NULL, gen = 0;
	size_t n = 0;

	assert_int_equal(ts_put(s, "/ce/flat", data, 5000) / 100, 2);
	tc_url(url, sizeof(url), s, "/ce/flat");
	bm_dataset *ds = tc_open_as_given(url, 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_resize(ds, 100), BM_EREADONLY);
	assert_int_equal(bm_write(ds, 0, "x", 1), BM_EREADONLY);
	assert_int_equal(bm_attrs_set(ds, "{}"), BM_EREADONLY);
	assert_non_null(strstr(bm_last_error(ds), "flat object"));
	assert_int_equal(bm_commit(ds, &gen), BM_EREADONLY);
	assert_non_null(strstr(bm_last_error(ds), "cannot be committed"));
	assert_int_equal(bm_block_sum(ds, 0, sum, sizeof(sum)), BM_EINVAL);
	assert_int_equal(bm_generations(ds, &gens, &n, NULL), BM_EINVAL);
	assert_int_equal(bm_refresh(ds), 0);  /* nothing to refresh */
	char buf[5000];
	assert_int_equal(bm_read(ds, 0, buf, sizeof(buf)), 5000);
	assert_memory_equal(buf, data, 5000);
	bm_close(ds);
	free(data);
}

/* The open's Range GET of the first block answered without the object's
 * size (a total of "*"): nothing to map. */
static void a_plain_object_whose_first_answer_has_no_size_cannot_be_opened(void **state)
{
	static const char head[] = "HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\n"
				   "Content-Range: bytes 0-4095/*\r\nConnection: close\r\n\r\n";
	struct tc_canned c;
	struct bm_options o;
	bm_dataset *ds = NULL;
	char url[128], *resp = malloc(sizeof(head) + 4096);
	(void)state;

	assert_non_null(resp);
	memcpy(resp, head, sizeof(head) - 1);
	memset(resp + sizeof(head) - 1, 'x', 4096);
	const struct tc_rule rules[] = {
		{ "GET", "/obj", resp, sizeof(head) - 1 + 4096, NULL },
	};
	tc_canned_start(&c, rules, 1);
	snprintf(url, sizeof(url), "%s/obj", c.url);
	tc_options(&o);
	o.blksize = 4096;
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	assert_null(ds);
	assert_non_null(strstr(bm_last_error(NULL), "no usable size"));
	assert_non_null(strstr(bm_last_error(NULL), url));
	tc_canned_stop(&c);
	free(resp);
}

static void generations_not_kept_or_not_what_they_say_are_refused(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(2 * 4 * KiB, 23);
	struct bm_generation_info gi;
	struct bm_options o;
	bm_dataset *ds = NULL;
	char url[512];

	tc_url(url, sizeof(url), s, "/ce/gens");
	for (int i = 0; i < 3; i++) {
		data[i] ^= 1;
		tc_put(url, 4 * KiB, data, 2 * 4 * KiB);
	}
	tc_options(&o);
	o.generation = 9;
	assert_int_equal(bm_open(&ds, url, &o), BM_ENOTFOUND);
	assert_non_null(strstr(bm_last_error(NULL), "generation 9 does not exist (latest is 3)"));
	assert_int_equal(ts_delete(s, "/ce/gens/gen/1.json"), 204);
	o.generation = 1;
	assert_int_equal(bm_open(&ds, url, &o), BM_ENOTFOUND);
	assert_non_null(strstr(bm_last_error(NULL), "generation 1 is not kept (no gen/1.json)"));
	/* gen/2.json holding generation 3's manifest: not generation 2. */
	copy_object(s, "/ce/gens/gen/3.json", "/ce/gens/gen/2.json");
	o.generation = 2;
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(NULL), "says generation 3"));

	ds = tc_open(url, 0);
	assert_int_equal(bm_generation_info(ds, 1, &gi), BM_ENOTFOUND);
	assert_int_equal(bm_generation_info(ds, 2, &gi), BM_EFORMAT);
	assert_non_null(strstr(bm_last_error(ds), "says it is generation 3"));
	assert_int_equal(bm_generation_info(ds, 3, &gi), 0);
	assert_int_equal(gi.generation, 3);
	assert_int_equal(gi.size, 2 * 4 * KiB);
	bm_close(ds);
	free(data);
}

/* For a child: bm_open of the URL in arg with verbose on and one retry;
 * exits 0 when it failed as a 503 would. */
static int open_verbosely(void *arg)
{
	struct bm_options o;
	bm_dataset *ds = NULL;

	if (bm_options_init(&o) < 0)
		return 1;
	o.verbose = 1;
	o.retries = 1;
	o.retry_base_ms = 1;
	return bm_open(&ds, arg, &o) == BM_EHTTP ? 0 : 2;
}

static void verbose_mode_logs_each_request_and_retry_on_one_line(void **state)
{
	struct tc_canned c;
	char url[128], want[1024], *err;
	const struct tc_rule rules[] = {
		{ "GET", "/busy/manifest.json", "HTTP/1.1 503 Busy\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n", 0, NULL },
	};
	(void)state;

	tc_canned_start(&c, rules, 1);
	snprintf(url, sizeof(url), "%s/busy", c.url);
	/* Its '/': the manifest's GET alone (no probe for a flat object). */
	char slash[140];
	snprintf(slash, sizeof(slash), "%s/", url);
	int status = tc_child(open_verbosely, slash, &err);
	tc_canned_stop(&c);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The try, its retry, the retry's answer; then the error. */
	snprintf(want, sizeof(want), "blkmap: GET %s/manifest.json -> 503\n"
		 "blkmap: GET %s/manifest.json: HTTP 503; retrying\n"
		 "blkmap: GET %s/manifest.json -> 503\n", url, url, url);
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("stderr \"%s\", expected it to start with \"%s\"", err, want);
	free(err);
}

/* ---- the harness ------------------------------------------------------------------------------ */

static int hang(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void a_child_that_hangs_is_killed_at_the_time_limit(void **state)
{
	long limit = tc_child_limit_ms;
	(void)state;

	tc_child_limit_ms = 300;
	int status = tc_child(hang, NULL, NULL);
	tc_child_limit_ms = limit;
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* Each test starts with none of the variables a test sets. */
static int clean_environment(void **state)
{
	(void)state;
	unset_option_vars();
	unsetenv("BLKMAP_TOKEN");
	return 0;
}

#define T(name) cmocka_unit_test_setup(name, clean_environment)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(every_error_code_has_its_own_text),
		T(environment_sizes_take_binary_suffixes),
		T(an_environment_variable_that_does_not_parse_is_refused_naming_it),
		T(options_out_of_range_are_refused_by_bm_open),
		T(a_server_that_wants_a_token_gets_it_from_BLKMAP_TOKEN_and_refusals_are_BM_EAUTH),
		T(a_block_refused_with_401_or_403_is_BM_EAUTH_and_a_missing_one_BM_ENOTFOUND),
		T(refresh_with_changes_is_refused_and_keeps_them),
		T(refresh_refuses_another_block_size_and_keeps_the_generation_it_has),
		T(refresh_refuses_a_manifest_older_than_the_handle),
		T(a_commit_behind_another_writer_conflicts_before_uploading),
		T(a_commit_to_a_dataset_deleted_on_the_server_conflicts),
		T(creating_a_dataset_another_writer_created_first_conflicts),
		T(misuse_of_a_dataset_handle_is_refused_with_its_code),
		T(a_flat_object_refuses_every_change),
		T(a_plain_object_whose_first_answer_has_no_size_cannot_be_opened),
		T(generations_not_kept_or_not_what_they_say_are_refused),
		T(verbose_mode_logs_each_request_and_retry_on_one_line),
		T(a_child_that_hangs_is_killed_at_the_time_limit),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
