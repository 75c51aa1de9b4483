/* tests/test_client_faults.c — libblkmap against a blkmap-server that
 * injects faults (503s, responses cut in the middle, flipped body bytes,
 * latency, long bodies on PUT and error answers, PUT answers without an
 * ETag; a swap whose every try fails, read back): every read and every
 * commit still gives exactly the right bytes,
 * the retries show in the stats, and no commit overwrites another's; a full
 * server (507) fails a commit at once, saying so.  Faults are switched at run time
 * through PUT /_admin/faults so that each test sets up its dataset cleanly.
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

static void no_faults(struct ts_server *s)
{
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0, \"fault-drop-rate\": 0, "
				       "\"fault-corrupt-rate\": 0, \"fault-latency-ms\": 0, "
				       "\"fault-pad-bytes\": 0, \"fault-put-no-etag\": 0, "
				       "\"fault-method\": \"\"}"), 200);
}

static long faults_seen(struct ts_server *s)
{
	return tc_server_stat(s, "faults", "error") + tc_server_stat(s, "faults", "drop") +
	       tc_server_stat(s, "faults", "corrupt");
}

static void reads_are_exact_under_503s_drops_and_corrupt_bodies(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 64 * KiB, size = 64 * bs + 1000;
	unsigned char *data = ts_pattern(size, 21);
	char url[512];
	struct bm_stats st;

	tc_url(url, sizeof(url), s, "/f/read");
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	long before = faults_seen(s);
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0.15, \"fault-drop-rate\": 0.1, "
				       "\"fault-corrupt-rate\": 0.15, \"fault-seed\": 3}"), 200);
	unsigned char *got = tc_read_mapped(ds);
	no_faults(s);
	assert_memory_equal(got, data, size);
	bm_stats(ds, &st);
	assert_true(faults_seen(s) > before);
	assert_true(st.retries > 0);
	assert_int_equal(st.fetched_bytes, size);
	bm_close(ds);
	free(got);
	free(data);
}

static void partial_block_writes_are_exact_under_corrupt_bodies(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 4 * KiB, size = 40 * bs;
	unsigned char *data = ts_pattern(size, 22);
	char url[512];
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/f/partial");
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(ts_set_faults(s, "{\"fault-corrupt-rate\": 0.3, \"fault-seed\": 4}"), 200);
	/* Every write covers part of two blocks: each is fetched and merged. */
	for (size_t b = 0; b + 1 < 40; b += 2) {
		assert_int_equal(bm_write(ds, b * bs + bs / 2, "0123456789abcdef", 16), 0);
		memcpy(data + b * bs + bs / 2, "0123456789abcdef", 16);
	}
	assert_int_equal(bm_commit(ds, &gen), 0);
	no_faults(s);
	struct bm_stats st;
	bm_stats(ds, &st);
	assert_true(st.retries > 0);
	bm_close(ds);
	assert_int_equal(gen, 2);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

static void commits_are_exact_under_503s_and_drops(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 16 * KiB, size = 32 * bs;
	unsigned char *data = ts_pattern(size, 23);
	char url[512];
	uint64_t gen = 0, retries = 0;
	struct bm_stats st;

	tc_url(url, sizeof(url), s, "/f/commit");
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0.15, \"fault-drop-rate\": 0.15, "
				       "\"fault-seed\": 5}"), 200);
	assert_int_equal(tc_put(url, bs, data, size), 1);
	for (int round = 0; round < 6; round++) {
		bm_dataset *ds = tc_open(url, 0);
		bm_mapping *m;
		void *addr;
		assert_int_equal(bm_generation(ds), round + 1);
		assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
		for (size_t b = round; b < 32; b += 5) {
			memset((char *)addr + b * bs + 7 * round, 'a' + round, 33);
			memset(data + b * bs + 7 * round, 'a' + round, 33);
		}
		int rc = bm_commit(ds, &gen);
		if (rc < 0)
			fprintf(stderr, "commit: %s\n", bm_last_error(ds));
		assert_int_equal(rc, 0);
		assert_int_equal(gen, round + 2);
		bm_stats(ds, &st);
		retries += st.retries;
		bm_unmap(m);
		bm_close(ds);
	}
	no_faults(s);
	assert_true(retries > 0);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

/* The hook turns on drops just before the manifest swap, so the swap's PUT
 * may be stored and its answer cut: the retry then finds the manifest
 * changed — by this very commit, which must count as success. */
struct set_faults {
	const struct ts_server *s;
	char json[128];
};

static void drops_from_now(const char *stage, void *arg)
{
	struct set_faults *f = arg;
	if (strcmp(stage, "uploaded") == 0)
		assert_int_equal(ts_set_faults(f->s, f->json), 200);
}

static void a_manifest_swap_whose_answer_was_cut_is_not_a_conflict(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 4 * KiB, size = 8 * bs;
	unsigned char *data = ts_pattern(size, 24);
	char url[512], prefix[TC_URL_MAX];
	struct set_faults f = { .s = s };
	struct bm_options o;
	int cut_swaps = 0;

	tc_url(url, sizeof(url), s, "/f/swap");
	tc_put(url, bs, data, size);
	for (int seed = 1; seed <= 12; seed++) {
		bm_dataset *ds;
		bm_mapping *m;
		void *addr;
		uint64_t gen;

		tc_options(&o);
		o.commit_hook = drops_from_now;
		o.commit_hook_arg = &f;
		snprintf(f.json, sizeof(f.json), "{\"fault-drop-rate\": 0.5, \"fault-seed\": %d}", seed);
		assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
		assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
		memset(addr, seed, 100);
		memset(data, seed, 100);
		long drops = tc_server_stat(s, "faults", "drop");
		int rc = bm_commit(ds, &gen);
		no_faults(s);
		cut_swaps += tc_server_stat(s, "faults", "drop") > drops;
		if (rc < 0)
			fprintf(stderr, "seed %d: %s\n", seed, bm_last_error(ds));
		assert_int_equal(rc, 0);
		assert_int_equal(gen, seed + 1);
		bm_unmap(m);
		bm_close(ds);
		assert_true(tc_dataset_equals(url, 0, data, size));
	}
	assert_true(cut_swaps > 0);
	free(data);
}

/* Every try of the manifest swap fails (its PUTs only: reads work); the
 * hook sets that up once the blocks are uploaded, after letting another
 * writer publish first if asked. */
struct swap_fails {
	const struct ts_server *s;
	const char *url;
	const char *faults;
	bool other_writer_first;
	int fired;
};

static void swap_fails_from_now(const char *stage, void *arg)
{
	struct swap_fails *f = arg;

	if (strcmp(stage, "uploaded") != 0 || f->fired++)
		return;
	if (f->other_writer_first)
		tc_write_commit(f->url, 1, "B", 1);
	assert_int_equal(ts_set_faults(f->s, f->faults), 200);
}

static int commit_with_swap_failing(struct ts_server *s, const char *url, struct swap_fails *f,
				    char *err, size_t n)
{
	struct bm_options o;
	bm_dataset *ds;
	uint64_t gen = 0;
	char prefix[TC_URL_MAX];

	tc_options(&o);
	o.retries = 3;
	f->fired = 0;
	o.commit_hook = swap_fails_from_now;
	o.commit_hook_arg = f;
	/* As a prefix, as tc_open (client_util.h): no probe beside the
	 * manifest's GET for the server to count in a later test's GETs
	 * (reads_are_exact_with_latency's). */
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	assert_int_equal(bm_write(ds, 0, "A", 1), 0);
	int rc = bm_commit(ds, &gen);
	snprintf(err, n, "%s", rc < 0 ? bm_last_error(ds) : "");
	no_faults(s);
	if (rc == 0)
		assert_int_equal(gen, bm_generation(ds));
	/* Not published: the change is still there for the next commit. */
	if (rc == BM_EHTTP) {
		int rc2 = bm_commit(ds, &gen);
		if (rc2 != 0)
			fail_msg("the commit after a swap not applied: %s", bm_last_error(ds));
		assert_int_equal(gen, 2);
	}
	bm_close(ds);
	return rc;
}

/* A manifest swap that failed after every retry (5xx, answers cut) may
 * have been applied by one of its tries: the manifest is read back before
 * the commit reports.  Won: success (never an error, whose retry would
 * then be a conflict).  Not applied: the error stands, the change stays.
 * Another writer's manifest there: a conflict, not a transport error. */
static void a_swap_failing_after_every_retry_is_read_back_won_lost_or_not_applied(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 4 * KiB, size = 4 * bs;
	unsigned char *data = ts_pattern(size, 28);
	char url[512], err[1024];
	struct swap_fails f = { s, url, NULL, false, 0 };

	/* Won: the first try is stored and its answer cut; every retry's
	 * answer (a 412: the manifest is ours now) is cut too. */
	tc_url(url, sizeof(url), s, "/f/readback-won");
	tc_put(url, bs, data, size);
	f.faults = "{\"fault-drop-rate\": 1, \"fault-method\": \"PUT\"}";
	long drops = tc_server_stat(s, "faults", "drop");
	int rc = commit_with_swap_failing(s, url, &f, err, sizeof(err));
	if (rc != 0)
		fail_msg("won swap: %s", err);
	assert_true(tc_server_stat(s, "faults", "drop") >= drops + 3);
	data[0] = 'A';
	assert_true(tc_dataset_equals(url, 0, data, size));
	assert_true(tc_dataset_equals(url, 2, data, size));

	/* Not applied: every try answered 503 and stored nothing. */
	tc_url(url, sizeof(url), s, "/f/readback-not");
	data[0] = 28;
	tc_put(url, bs, data, size);
	f.faults = "{\"fault-error-rate\": 1, \"fault-method\": \"PUT\"}";
	assert_int_equal(commit_with_swap_failing(s, url, &f, err, sizeof(err)), BM_EHTTP);
	assert_non_null(strstr(err, "read back: not applied"));
	data[0] = 'A';
	assert_true(tc_dataset_equals(url, 0, data, size)); /* by the second commit */

	/* Lost: another writer published generation 2 before our swap. */
	tc_url(url, sizeof(url), s, "/f/readback-lost");
	data[0] = 28;
	tc_put(url, bs, data, size);
	f.other_writer_first = true;
	assert_int_equal(commit_with_swap_failing(s, url, &f, err, sizeof(err)), BM_ECONFLICT);
	assert_int_equal(tc_lines(err), 1);
	data[1] = 'B';
	assert_true(tc_dataset_equals(url, 0, data, size));
	assert_true(tc_dataset_equals(url, 2, data, size));
	free(data);
}

static void reads_are_exact_with_latency(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 64 * KiB, size = 12 * bs;
	unsigned char *data = ts_pattern(size, 25);
	char url[512];

	tc_url(url, sizeof(url), s, "/f/slow");
	tc_put(url, bs, data, size);
	tc_server_settle(s); /* nothing left unread from before */
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 20}"), 200);
	long gets = tc_server_stat(s, "requests", "GET");  /* also starts a new peak */
	long delayed = tc_server_stat(s, "faults", "latency");
	assert_true(tc_dataset_equals(url, 0, data, size));
	long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
	gets = tc_server_stat(s, "requests", "GET") - gets;
	delayed = tc_server_stat(s, "faults", "latency") - delayed;
	no_faults(s);
	/* What the name says happened: every answer was late, and several
	 * were late at once (read-ahead over several connections), so they
	 * could come back in any order. */
	assert_true(gets >= 12);
	assert_int_equal(delayed, gets);
	assert_true(peak >= 2);
	free(data);
}

static void long_bodies_on_put_and_error_answers_change_nothing(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 4 * KiB, size = 16 * bs;
	unsigned char *data = ts_pattern(size, 26);
	char url[512];
	struct bm_stats st;
	bm_mapping *m;
	unsigned char *p;
	uint64_t gen;

	/* 503s with 200 KB pages are retried like short ones; PUTs answered
	 * 200 with 200 KB of body are stored like 201s and 204s. */
	tc_url(url, sizeof(url), s, "/f/pad");
	assert_int_equal(ts_set_faults(s, "{\"fault-pad-bytes\": 200000, \"fault-error-rate\": 0.3, "
				       "\"fault-seed\": 5}"), 200);
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	memset(p + 3 * bs, 7, 2 * bs);
	memset(data + 3 * bs, 7, 2 * bs);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_stats(ds, &st);
	assert_true(st.retries > 0);
	bm_unmap(m);
	bm_close(ds);
	no_faults(s);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

/* Writer B commits on top of A's manifest while A's commit waits between
 * its manifest PUT (answered without an ETag) and asking for the ETag. */
struct writer_b {
	const char *url;
	int fired;
	uint64_t gen;
};

static void writer_b_publishes(const char *stage, void *arg)
{
	struct writer_b *b = arg;

	if (strcmp(stage, "manifest-put") != 0 || b->fired++)
		return;
	b->gen = tc_write_commit(b->url, 100, "B", 1);
}

static void a_commit_answered_without_an_etag_never_overwrites_a_later_writer(void **state)
{
	struct ts_server *s = *state;
	size_t bs = 4 * KiB, size = 4 * bs;
	unsigned char *data = ts_pattern(size, 27), *p;
	char url[512], prefix[TC_URL_MAX];
	struct writer_b b = { url, 0, 0 };
	struct bm_options o;
	bm_dataset *a;
	bm_mapping *m;
	uint64_t gen;

	tc_url(url, sizeof(url), s, "/f/noetag");
	tc_put(url, bs, data, size);
	assert_int_equal(ts_set_faults(s, "{\"fault-put-no-etag\": 1}"), 200);
	tc_options(&o);
	o.commit_hook = writer_b_publishes;
	o.commit_hook_arg = &b;
	assert_int_equal(bm_open(&a, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	assert_int_equal(bm_map(a, 0, 0, (void **)&p, &m), 0);
	p[0] = 'A';
	data[0] = 'A';
	assert_int_equal(bm_commit(a, &gen), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(b.gen, 3); /* B published on top of A's generation */
	data[100] = 'B';
	/* A's next commit would replace B's generation: a conflict. */
	p[200] = 'a';
	assert_int_equal(bm_commit(a, &gen), BM_ECONFLICT);
	assert_true(tc_dataset_equals(url, 3, data, size));
	assert_true(tc_dataset_equals(url, 0, data, size));
	/* Refreshed, A commits on top of B; an answer without an ETag for a
	 * manifest still A's own gives A its ETag. */
	assert_int_equal(bm_discard(a), 0);
	assert_int_equal(bm_refresh(a), 0);
	assert_int_equal(bm_generation(a), 3);
	p[200] = 'a';
	data[200] = 'a';
	assert_int_equal(bm_commit(a, &gen), 0);
	assert_int_equal(gen, 4);
	p[300] = 'c';
	data[300] = 'c';
	assert_int_equal(bm_commit(a, &gen), 0);
	assert_int_equal(gen, 5);
	no_faults(s);
	assert_true(tc_dataset_equals(url, 0, data, size));
	bm_unmap(m);
	bm_close(a);
	free(data);
}

/* A server whose disk is full answers 507: the commit fails at once (not
 * after 7 tries, as for a 5xx) saying the server is out of space, and the
 * changes stay for a later commit.  The server's root is a 1 MiB tmpfs:
 * mounting one needs root. */
static void a_commit_to_a_full_server_fails_at_once_saying_it_is_out_of_space(void **state)
{
	char *dir = ts_mkdtemp(), cmd[600], url[512];
	const char *args[] = { "--admin", NULL };
	size_t bs = 64 * KiB, size = 32 * bs;  /* 2 MiB */
	unsigned char *data = ts_pattern(size, 27);
	struct ts_server s;

	if (getuid() != 0) {
		rmdir(dir);
		free(dir);
		free(data);
		skip();  /* mounting a small tmpfs needs root */
	}
	snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=1m blkmap-test %s", dir);
	if (system(cmd) != 0) {
		print_message("cannot mount a tmpfs here: skipped\n");
		rmdir(dir);
		free(dir);
		free(data);
		skip();
	}
	snprintf(s.root, sizeof(s.root), "%s", dir);
	assert_int_equal(ts_start_disk(&s, args), 0);
	tc_url(url, sizeof(url), &s, "/full");
	struct bm_options o;
	bm_dataset *ds;
	struct bm_stats st;
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = bs;
	o.wcfs = "off";
	o.connections = 16; /* half the blocks in flight when the disk fills */
	int rc = bm_open(&ds, url, &o);
	if (rc == 0)
		rc = bm_resize(ds, size);
	if (rc == 0)
		rc = bm_write(ds, 0, data, size);
	if (rc == 0)
		rc = bm_commit(ds, NULL);
	char err[600];
	snprintf(err, sizeof(err), "%s", rc == 0 ? "" : bm_last_error(ds));
	bm_stats(ds, &st);
	bm_close(ds);
	long full = tc_server_stat(&s, "responses", "507");
	long puts = tc_server_stat(&s, "requests", "PUT");
	assert_int_equal(ts_stop(&s), 0);
	snprintf(cmd, sizeof(cmd), "umount %s", dir);
	assert_int_equal(system(cmd), 0);
	rmdir(dir);
	free(dir);
	free(data);
	if (rc != BM_EHTTP || !strstr(err, "the server is out of space") || !strstr(err, "507") ||
	    strstr(err, "tries"))
		fail_msg("commit: %d \"%s\"; BM_EHTTP and \"the server is out of space\" expected", rc, err);
	assert_int_equal(st.retries, 0);
	assert_true(full >= 1);
	assert_true(puts <= 32);  /* each block tried once at most */
}

/* Each test starts without faults, whatever the one before left on. */
static int faults_off(void **state)
{
	no_faults(*state);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(long_bodies_on_put_and_error_answers_change_nothing, faults_off),
		cmocka_unit_test_setup(a_commit_answered_without_an_etag_never_overwrites_a_later_writer, faults_off),
		cmocka_unit_test_setup(reads_are_exact_under_503s_drops_and_corrupt_bodies, faults_off),
		cmocka_unit_test_setup(partial_block_writes_are_exact_under_corrupt_bodies, faults_off),
		cmocka_unit_test_setup(commits_are_exact_under_503s_and_drops, faults_off),
		cmocka_unit_test_setup(a_manifest_swap_whose_answer_was_cut_is_not_a_conflict, faults_off),
		cmocka_unit_test_setup(a_swap_failing_after_every_retry_is_read_back_won_lost_or_not_applied,
				       faults_off),
		cmocka_unit_test_setup(reads_are_exact_with_latency, faults_off),
		cmocka_unit_test(a_commit_to_a_full_server_fails_at_once_saying_it_is_out_of_space),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
