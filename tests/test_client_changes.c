/* tests/test_client_changes.c — how changes accumulate into the next
 * generation: partial bm_writes to one block merge, a commit retried after
 * failed uploads publishes only blocks that exist, an unchanged block keeps
 * its object's key, committed pages stay cached, shrinking then growing
 * reads zeros, refresh moves to what another writer published (in time
 * however large the new size, and never back to an older generation), and
 * a write that could start no upload thread fails, and fails again, rather
 * than queue a block nobody uploads, and an open that could start no
 * thread still succeeds and reads (no thread is started at open).  A
 * partial write keeps
 * the bytes of the block it wrote.  One program per kind of server
 * (TC_KIND; client.mk).
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define BS ((size_t)4096)

/* Puts data[0..size) in blocks of BS at path on the test's store (its URL
 * into url, 512 bytes) and opens the latest generation. */
static bm_dataset *put_and_open(void **state, const char *path, char *url, const unsigned char *data, size_t size)
{
	tc_store_url(url, 512, tc_store_of(state), path);
	tc_put(url, BS, data, size);
	return tc_open(url, 0);
}

static bm_dataset *open_new(const char *url)
{
	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = BS;
	o.wcfs = "off";
	assert_int_equal(bm_open(&ds, url, &o), 0);
	return ds;
}

static void two_partial_writes_to_one_block_both_survive(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];
	tc_store_url(url, sizeof(url), s, "/ch/partial");
	bm_dataset *ds = open_new(url);
	assert_int_equal(bm_resize(ds, 2 * BS), 0);
	assert_int_equal(bm_write(ds, 0, "AAAA", 4), 0);
	assert_int_equal(bm_write(ds, 4, "BBBB", 4), 0);
	assert_int_equal(bm_write(ds, BS - 2, "CCCC", 4), 0); /* across blocks */
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);

	unsigned char *want = calloc(1, 2 * BS);
	memcpy(want, "AAAABBBB", 8);
	memcpy(want + BS - 2, "CCCC", 4);
	assert_true(tc_dataset_equals(url, 0, want, 2 * BS));
	free(want);
}

/* Writing a block piece by piece: the first piece GETs the block, the next
 * ones merge into the bytes kept from the one before (before, each waited
 * for the upload of the last and GOT it back). */
static void a_partial_write_keeps_the_bytes_it_wrote_instead_of_fetching_them_again(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];
	struct bm_stats st;
	unsigned char *data = ts_pattern(2 * BS, 73);

	tc_store_url(url, sizeof(url), s, "/ch/keep");
	bm_dataset *ds = open_new(url);
	assert_int_equal(bm_resize(ds, 2 * BS), 0);
	assert_int_equal(bm_write(ds, 0, data, 2 * BS), 0);
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);

	ds = open_new(url);
	for (size_t off = 8; off < 64; off += 8) {
		assert_int_equal(bm_write(ds, off, "abcd", 4), 0);
		memcpy(data + off, "abcd", 4);
	}
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, 1); /* block 0, once */
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, 2 * BS));
	free(data);
}

static void a_commit_retried_after_failed_uploads_publishes_readable_blocks(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];
	uint64_t gen = 0;

	tc_require(s, TC_CAN_FAULTS, "it injects no faults");
	unsigned char *data = ts_pattern(3 * BS, 71);
	tc_store_url(url, sizeof(url), s, "/ch/retry");
	bm_dataset *ds = open_new(url);
	assert_int_equal(bm_resize(ds, 3 * BS), 0);
	/* Every request fails while blocks 0 and 1 are uploaded: the commit
	 * reports it and publishes nothing. */
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-error-rate\": 1}"), 200);
	assert_int_equal(bm_write(ds, 0, data, 2 * BS), 0);
	assert_true(bm_commit(ds, &gen) < 0);
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-error-rate\": 0}"), 200);
	/* The next commit uploads again what failed, then publishes. */
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 1);
	bm_close(ds);
	memset(data + 2 * BS, 0, BS); /* never written */
	assert_true(tc_dataset_equals(url, 0, data, 3 * BS));
	free(data);
}

static void an_unchanged_block_keeps_the_key_of_its_object(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], path[600];
	unsigned char *data = ts_pattern(2 * BS, 72);

	tc_store_url(url, sizeof(url), s, "/ch/keys");
	/* Another tool wrote block 0 under a key of its own. */
	char sum[40], manifest[1024];
	bm_dataset *ds = open_new(url);
	assert_int_equal(bm_resize(ds, 2 * BS), 0);
	assert_int_equal(bm_write(ds, 0, data, 2 * BS), 0);
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);
	char sum1[40];
	ds = tc_open(url, 0);
	assert_int_equal(bm_block_sum(ds, 0, sum, sizeof(sum)), 1);
	assert_int_equal(bm_block_sum(ds, 1, sum1, sizeof(sum1)), 1);
	bm_close(ds);
	snprintf(manifest, sizeof(manifest),
		 "{\"format\":\"blkmap-dataset\",\"version\":1,\"blksize\":%zu,\"size\":%zu,"
		 "\"generation\":2,\"checksum\":\"xxh128\",\"blocks\":["
		 "{\"index\":0,\"key\":\"custom/b0\",\"sum\":\"%s\"},"
		 "{\"index\":1,\"key\":\"blocks/%s\",\"sum\":\"%s\"}]}",
		 BS, 2 * BS, sum, sum1, sum1);
	assert_true(tc_store_put(s, "/ch/keys/custom/b0", data, BS) / 100 == 2);
	assert_true(tc_store_put(s, "/ch/keys/manifest.json", manifest, strlen(manifest)) / 100 == 2);

	/* Rewrite block 0 with the same bytes, change block 1, commit. */
	ds = tc_open(url, 0);
	bm_mapping *mp;
	unsigned char *p;
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &mp), 0);
	((volatile unsigned char *)p)[0] = p[0]; /* same bytes, but dirty */
	p[BS] ^= 0xff;
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_unmap(mp);
	bm_close(ds);
	/* Format 2 names blocks by their sum alone: the dataset stays v1. */
	json_t *m = tc_store_get_json(s, "/ch/keys/manifest.json");
	assert_int_equal(json_integer_value(json_object_get(m, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(m, "blocks"), 0), "key")),
			    "custom/b0");
	json_decref(m);
	data[BS] ^= 0xff;
	assert_true(tc_dataset_equals(url, 0, data, 2 * BS));
	(void)path;
	free(data);
}

static void committed_pages_stay_cached(void **state)
{
	char url[512];
	unsigned char *data = ts_pattern(8 * BS, 73), *p;
	bm_mapping *m;
	struct bm_stats st;
	bm_dataset *ds = put_and_open(state, "/ch/cached", url, data, 8 * BS);

	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	for (size_t b = 0; b < 8; b++)
		p[b * BS] ^= 1;
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_stats(ds, &st);
	uint64_t fetched = st.fetched_blocks;
	assert_int_equal(st.ram_bytes, 8 * BS);
	for (size_t b = 0; b < 8; b++)
		assert_int_equal(p[b * BS], data[b * BS] ^ 1);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, fetched); /* nothing fetched again */
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

static void shrinking_then_growing_reads_zeros_past_the_old_end(void **state)
{
	char url[512];
	unsigned char *data = ts_pattern(2 * BS, 74), *p;
	bm_mapping *m;
	bm_dataset *ds = put_and_open(state, "/ch/shrink", url, data, 2 * BS);

	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	assert_int_equal(p[BS + 5], data[BS + 5]); /* block 1 cached */
	bm_unmap(m);
	assert_int_equal(bm_resize(ds, BS / 2), 0);
	assert_int_equal(bm_commit(ds, NULL), 0);
	assert_int_equal(bm_resize(ds, 2 * BS), 0);
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	assert_int_equal(p[5], data[5]);
	assert_int_equal(p[BS / 2 + 5], 0);
	assert_int_equal(p[BS + 5], 0);
	bm_unmap(m);
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);
	unsigned char *want = calloc(1, 2 * BS);
	memcpy(want, data, BS / 2);
	assert_true(tc_dataset_equals(url, 0, want, 2 * BS));
	free(want);
	free(data);
}

static void refresh_shows_what_another_writer_published(void **state)
{
	char url[512];
	unsigned char *data = ts_pattern(4 * BS, 75), *p;
	bm_mapping *m;
	bm_dataset *a = put_and_open(state, "/ch/refresh", url, data, 4 * BS);

	assert_int_equal(bm_map(a, 0, 0, (void **)&p, &m), 0);
	assert_int_equal(p[2 * BS], data[2 * BS]); /* cached */
	data[2 * BS] ^= 0x55;
	uint64_t gen = tc_put(url, BS, data, 4 * BS);
	assert_int_equal(p[2 * BS], data[2 * BS] ^ 0x55); /* a still shows its generation */
	assert_int_equal(bm_refresh(a), 0);
	assert_int_equal(bm_generation(a), gen);
	assert_int_equal(p[2 * BS], data[2 * BS]);
	assert_int_equal(p[3 * BS], data[3 * BS]);
	bm_unmap(m);
	bm_close(a);
	free(data);
}

/* Replaces path's manifest on s with its JSON at generation gen and size. */
static void rewrite_manifest(struct tc_store *s, const char *path, json_t *man, uint64_t gen, uint64_t size)
{
	json_object_set_new(man, "generation", json_integer((json_int_t)gen));
	if (json_integer_value(json_object_get(man, "size")) != (json_int_t)size &&
	    json_integer_value(json_object_get(man, "version")) == 2) {
		/* Format 2: another size is another tree; an empty one. */
		json_object_set_new(man, "root", json_null());
		json_object_set_new(man, "stored", json_integer(0));
	}
	json_object_set_new(man, "size", json_integer((json_int_t)size));
	char *text = tc_manifest_text(man, NULL);
	char mpath[256];
	snprintf(mpath, sizeof(mpath), "%s/manifest.json", path);
	assert_true(tc_store_put(s, mpath, text, strlen(text)) / 100 == 2); /* 204; 200 on S3 */
	free(text);
}

struct refresh_case {
	struct tc_store *s;
	const char *path, *url;
	json_t *man;
};

/* In a child with a watchdog: a refresh that walked every block of a
 * 2^50-byte dataset would run for hours. */
static int refresh_huge_then_older(void *arg)
{
	struct refresh_case *c = arg;
	bm_dataset *ds = tc_open(c->url, 0);

	alarm(60);
	rewrite_manifest(c->s, c->path, c->man, 2, (uint64_t)1 << 50);
	if (bm_refresh(ds) != 0 || bm_size(ds) != (uint64_t)1 << 50 || bm_generation(ds) != 2)
		return 3;
	rewrite_manifest(c->s, c->path, c->man, 1, 4 * BS);
	if (bm_refresh(ds) != BM_EFORMAT || !strstr(bm_last_error(ds), "older than this handle's 2"))
		return 4;
	if (bm_generation(ds) != 2)
		return 5;
	bm_close(ds);
	return 0;
}

static void refresh_takes_a_huge_sparse_size_at_once_and_never_goes_back(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], mpath[256], *err;
	unsigned char *data = ts_pattern(4 * BS, 76);
	struct refresh_case c = { s, "/ch/huge", url, NULL };

	tc_store_url(url, sizeof(url), s, c.path);
	tc_put(url, BS, data, 4 * BS);
	snprintf(mpath, sizeof(mpath), "%s/manifest.json", c.path);
	c.man = tc_store_get_json(s, mpath);
	int status = tc_child(refresh_huge_then_older, &c, &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("status %#x, stderr \"%s\"", status, err);
	free(err);
	json_decref(c.man);
	free(data);
}

static void shrinking_then_growing_back_reads_and_commits_zeros_past_the_cut(void **state)
{
	char url[512];
	size_t size = 4 * BS, cut = BS + BS / 2;
	unsigned char *data = ts_pattern(size, 77), *p, *want = malloc(size);
	bm_mapping *m;
	uint64_t gen;
	bm_dataset *ds = put_and_open(state, "/ch/regrow", url, data, size);

	assert_int_equal(bm_write(ds, 3 * BS + 5, "q", 1), 0); /* cut off below */
	assert_int_equal(bm_resize(ds, cut), 0);
	assert_int_equal(bm_resize(ds, size), 0);
	assert_int_equal(bm_write(ds, 3 * BS, "abc", 3), 0);   /* after the cut: kept */
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	assert_memory_equal(p, data, cut);
	for (size_t i = cut; i < 3 * BS; i++)
		if (p[i] != 0)
			fail_msg("byte %zu past the cut is %d", i, p[i]);
	bm_unmap(m);
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	memcpy(want, data, cut);
	memset(want + cut, 0, size - cut);
	memcpy(want + 3 * BS, "abc", 3);
	assert_true(tc_dataset_equals(url, gen, want, size));
	/* Shrunk and grown back to the very size, nothing written: the
	 * commit still publishes the zeros. */
	ds = tc_open(url, 0);
	assert_int_equal(bm_resize(ds, BS / 2), 0);
	assert_int_equal(bm_resize(ds, size), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	memset(want + BS / 2, 0, size - BS / 2);
	assert_true(tc_dataset_equals(url, gen, want, size));
	free(want);
	free(data);
}

static void next_block_walks_the_stored_blocks_only(void **state)
{
	char url[512];
	unsigned char *data = calloc(10, BS);
	uint64_t idx, seen[10];
	int n = 0;

	/* Blocks 1, 4 and 9 hold bytes; the rest are holes. */
	data[1 * BS] = data[4 * BS + 7] = data[9 * BS + BS - 1] = 1;
	bm_dataset *ds = put_and_open(state, "/ch/next", url, data, 10 * BS);
	for (uint64_t from = 0; bm_next_block(ds, from, &idx) == 1; from = idx + 1)
		seen[n++] = idx;
	assert_int_equal(n, 3);
	assert_int_equal(seen[0], 1);
	assert_int_equal(seen[1], 4);
	assert_int_equal(seen[2], 9);
	assert_int_equal(bm_next_block(ds, 5, &idx), 1);
	assert_int_equal(idx, 9);
	assert_int_equal(bm_next_block(ds, 10, &idx), 0);
	bm_close(ds);
	free(data);
}

static void bad_options_are_refused_at_open(void **state)
{
	struct tc_store *s = tc_store_of(state);
	struct bm_options o;
	bm_dataset *ds;
	char url[512];
	tc_store_url(url, sizeof(url), s, "/ch/opts");
	tc_options(&o);
	o.connections = 0;
	assert_int_equal(bm_open(&ds, url, &o), BM_EINVAL);
	assert_non_null(strstr(bm_last_error(NULL), "connections"));
}

/* In a child: with no thread to be had (RLIMIT_NPROC 0, as a user the
 * limit applies to: root is exempt), two writes both fail; once threads
 * can be created again, a write and a commit succeed.  Exit status: 0, or
 * the step that went wrong. */
static int writes_without_threads(void *arg)
{
	const char *url = arg;
	struct rlimit was, none;
	char block[BS];
	bm_dataset *ds;
	struct bm_options o;

	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = BS;
	o.wcfs = "off";
	/* Read-ahead off, so that nothing but the first upload may start
	 * the workers (shared with read-ahead). */
	o.readahead_bytes = 0;
	if (bm_open(&ds, url, &o) != 0 || bm_resize(ds, 2 * BS) != 0)
		return 10;
	if (getrlimit(RLIMIT_NPROC, &was) != 0)
		return 11;
	none = (struct rlimit){ 0, was.rlim_max };
	if (getuid() == 0 && setresuid(65534, 65534, 0) != 0)
		return 12;
	if (setrlimit(RLIMIT_NPROC, &none) != 0)
		return 13;
	memset(block, 'w', sizeof(block));
	if (bm_write(ds, 0, block, BS) != BM_ENOMEM)
		return 20;  /* the limit did not bite: nothing tested */
	if (bm_write(ds, BS, block, BS) != BM_ENOMEM)
		return 21;  /* the second call took a start with no worker for one */
	if (!strstr(bm_last_error(ds), "upload thread"))
		return 22;
	if (setrlimit(RLIMIT_NPROC, &was) != 0)
		return 23;
	if (bm_write(ds, 0, block, BS) != 0 || bm_write(ds, BS, block, BS) != 0)
		return 24;
	if (bm_commit(ds, NULL) != 0)
		return 25;
	bm_close(ds);
	return 0;
}

/* In a child: with no thread to be had, an open with read-ahead on still
 * succeeds (the workers start at the first blocks read ahead, never at
 * open) and reads; once threads can be created again, the same open
 * succeeds too. */
static int open_without_threads(void *arg)
{
	const char *url = arg;
	struct rlimit was, none;
	bm_dataset *ds;
	struct bm_options o;

	tc_options(&o);
	o.wcfs = "off";
	o.readahead_bytes = 1 << 20;
	if (getrlimit(RLIMIT_NPROC, &was) != 0)
		return 11;
	none = (struct rlimit){ 0, was.rlim_max };
	if (getuid() == 0 && setresuid(65534, 65534, 0) != 0)
		return 12;
	if (setrlimit(RLIMIT_NPROC, &none) != 0)
		return 13;
	if (bm_open(&ds, url, &o) != 0)
		return 20;
	char got[100];
	if (bm_read(ds, BS - 50, got, sizeof(got)) != (int64_t)sizeof(got))
		return 21;
	for (size_t i = 0; i < sizeof(got); i++)
		if (got[i] != 'w')
			return 22; /* what writes_without_threads committed */
	bm_close(ds);
	if (setrlimit(RLIMIT_NPROC, &was) != 0)
		return 23;
	if (bm_open(&ds, url, &o) != 0)
		return 24;
	bm_close(ds);
	return 0;
}

/* Runs fn(url) in a child; 60 s is a hang.  Returns its exit status. */
static int run_bounded(int (*fn)(void *arg), const char *url)
{
	struct timespec ms10 = { 0, 10 * 1000 * 1000 };
	int status = 0;
	pid_t pid, r = 0;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn((void *)url));
	for (int i = 0; i < 6000 && (r = waitpid(pid, &status, WNOHANG)) == 0; i++)
		nanosleep(&ms10, NULL);
	if (r == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("the child still hangs after 60 s");
	}
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void a_write_that_cannot_start_an_upload_thread_fails_every_time_and_never_hangs(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];

	tc_store_url(url, sizeof(url), s, "/ch/nothreads");
	/* (the old bm_upload_wait waited forever) */
	int step = run_bounded(writes_without_threads, url);
	if (step != 0)
		fail_msg("step %d of writes_without_threads went wrong", step);
	/* What the commit published reads back. */
	unsigned char *want = malloc(2 * BS);
	memset(want, 'w', 2 * BS);
	assert_true(tc_dataset_equals(url, 0, want, 2 * BS));
	free(want);
}

static void an_open_that_cannot_start_a_thread_succeeds_and_reads(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];

	tc_store_url(url, sizeof(url), s, "/ch/nothreads");
	int step = run_bounded(open_without_threads, url);
	if (step != 0)
		fail_msg("step %d of open_without_threads went wrong", step);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(two_partial_writes_to_one_block_both_survive),
		cmocka_unit_test(a_partial_write_keeps_the_bytes_it_wrote_instead_of_fetching_them_again),
		cmocka_unit_test(a_commit_retried_after_failed_uploads_publishes_readable_blocks),
		cmocka_unit_test(an_unchanged_block_keeps_the_key_of_its_object),
		cmocka_unit_test(committed_pages_stay_cached),
		cmocka_unit_test(shrinking_then_growing_reads_zeros_past_the_old_end),
		cmocka_unit_test(refresh_shows_what_another_writer_published),
		cmocka_unit_test(refresh_takes_a_huge_sparse_size_at_once_and_never_goes_back),
		cmocka_unit_test(shrinking_then_growing_back_reads_and_commits_zeros_past_the_cut),
		cmocka_unit_test(next_block_walks_the_stored_blocks_only),
		cmocka_unit_test(bad_options_are_refused_at_open),
		cmocka_unit_test(a_write_that_cannot_start_an_upload_thread_fails_every_time_and_never_hangs),
		cmocka_unit_test(an_open_that_cannot_start_a_thread_succeeds_and_reads),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
