/* tests/test_client_roundtrip.c — libblkmap against a real server, one
 * program per kind (TC_KIND: blkmap-server, nginx, apache; client.mk):
 * round trips of several block sizes, sparse datasets, commits of dirty
 * blocks and kept generations, patch and log through the CLI, conflicts
 * between two handles, racing writers (where the server can refuse the
 * loser), and a writer killed in the middle of a commit.  One server per
 * program.
 */
#include "config.h"

#include <pthread.h>
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

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- round trips ---------------------------------------------------------- */

static void round_trip(struct tc_store *st, const char *path, size_t bs, size_t size)
{
	char url[512];
	unsigned char *data = ts_pattern(size, (unsigned)bs);

	tc_store_url(url, sizeof(url), st, path);
	assert_int_equal(tc_put(url, bs, data, size), 1);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_blksize(ds), bs);
	assert_int_equal(bm_size(ds), size);
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, data, size);
	free(got);
	bm_close(ds);
	free(data);
}

static void round_trip_4k_blocks_reads_back_every_byte(void **state)
{
	round_trip(tc_store_of(state), "/rt4k", 4 * KiB, 37 * 4 * KiB + 123);
}

static void round_trip_64k_blocks_reads_back_every_byte(void **state)
{
	round_trip(tc_store_of(state), "/rt64k", 64 * KiB, 21 * 64 * KiB + 4097);
}

static void round_trip_1m_blocks_reads_back_every_byte(void **state)
{
	round_trip(tc_store_of(state), "/rt1m", MiB, 5 * MiB + 77);
}

static void cli_put_then_get_gives_the_same_file_and_sum_matches(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 3 * MiB + 5;
	unsigned char *data = ts_pattern(size, 9);
	char *in = tc_tmpfile(data, size), out[] = "/tmp/blkmap-client-get.XXXXXX";
	char url[512], url2[512], *o1, *o2;
	close(mkstemp(out));

	tc_store_url(url, sizeof(url), st, "/cli/a");
	tc_store_url(url2, sizeof(url2), st, "/cli/b");
	assert_int_equal(tc_cli(&o1, NULL, (const char *[]){ "put", "--blksize", "1M", in, url, NULL }), 0);
	assert_string_equal(o1, "1\n");
	free(o1);
	assert_int_equal(tc_cli(NULL, NULL, (const char *[]){ "get", url, out, NULL }), 0);
	FILE *f = fopen(out, "rb");
	unsigned char *back = malloc(size + 1);
	assert_int_equal(fread(back, 1, size + 1, f), size);
	fclose(f);
	assert_memory_equal(back, data, size);
	/* The same bytes in 64 KiB blocks have the same sum. */
	assert_int_equal(tc_cli(NULL, NULL, (const char *[]){ "put", "--blksize", "64k", in, url2, NULL }), 0);
	assert_int_equal(tc_cli(&o1, NULL, (const char *[]){ "sum", url, NULL }), 0);
	assert_int_equal(tc_cli(&o2, NULL, (const char *[]){ "sum", url2, NULL }), 0);
	assert_int_equal(strlen(o1), 64 + 2 + strlen(url) + 1);
	assert_memory_equal(o1, o2, 64);
	free(o1);
	free(o2);
	unlink(in);
	unlink(out);
	free(in);
	free(back);
	free(data);
}

/* ---- sparse datasets --------------------------------------------------------- */

static void holes_read_as_zeros_and_cost_no_request(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 64 * KiB, nblk = 16, size = nblk * bs;
	unsigned char *data = calloc(1, size);
	char url[512], prefix[520];
	struct bm_stats stats;

	memset(data + 0 * bs, 1, bs);
	memset(data + 5 * bs + 100, 5, 10);
	memset(data + 15 * bs, 15, bs);
	tc_store_url(url, sizeof(url), st, "/sparse");
	tc_put(url, bs, data, size);

	/* As a prefix ('/' at the end): no flat probe beside the manifest's
	 * GET, which the server may count at any time after the open (the
	 * manifest's answer stops it where it is), even among the reads'. */
	snprintf(prefix, sizeof(prefix), "%s/", url);
	bm_dataset *ds = tc_open(prefix, 0);
	assert_int_equal(bm_nblocks_stored(ds), 3);
	tc_store_settle(st); /* nothing left unread from before (tc_server_settle) */
	long gets = tc_store_count(st, "GET");
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, data, size);
	bm_stats(ds, &stats);
	assert_int_equal(stats.fetched_blocks, 3);
	assert_int_equal(stats.hole_blocks, nblk - 3);
	/* The 3 blocks and the one index page of 16 blocks (format 2). */
	if (gets >= 0) /* the server counts */
		assert_int_equal(tc_store_count(st, "GET") - gets, 3 + 1);
	bm_close(ds);
	free(got);
	free(data);
}

static void a_block_written_all_zero_becomes_a_hole(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 64 * KiB, size = 8 * bs;
	unsigned char *data = ts_pattern(size, 3);
	char url[512];
	bm_mapping *m;
	void *addr;
	uint64_t gen;

	tc_store_url(url, sizeof(url), st, "/zeroed");
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_nblocks_stored(ds), 8);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memset((char *)addr + 2 * bs, 0, bs);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_unmap(m);
	bm_close(ds);

	json_t *man = tc_store_get_json(st, "/zeroed/manifest.json");
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), 7);
	json_decref(man);
	char sum[64];
	ds = tc_open(url, 0);
	assert_int_equal(bm_nblocks_stored(ds), 7);
	assert_int_equal(bm_block_sum(ds, 2, sum, sizeof(sum)), 0); /* a hole */
	assert_int_equal(bm_block_sum(ds, 3, sum, sizeof(sum)), 1);
	bm_close(ds);
	memset(data + 2 * bs, 0, bs);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

/* ---- commits and generations ------------------------------------------------------ */

static void commit_uploads_only_the_dirty_blocks(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 64 * KiB, size = 32 * bs;
	unsigned char *data = ts_pattern(size, 4), *old = malloc(size);
	char url[512];
	struct bm_stats stats;
	bm_mapping *m;
	void *addr;
	uint64_t gen;

	memcpy(old, data, size);
	tc_store_url(url, sizeof(url), st, "/dirty");
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	((char *)addr)[3 * bs + 17] ^= 0x5a;
	((char *)addr)[20 * bs] ^= 0x5a;
	data[3 * bs + 17] ^= 0x5a;
	data[20 * bs] ^= 0x5a;
	long puts = tc_store_count(st, "PUT");
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_stats(ds, &stats);
	assert_int_equal(stats.uploaded_blocks, 2);
	assert_int_equal(stats.uploaded_bytes, 2 * bs);
	assert_int_equal(stats.commits, 1);
	/* Two blocks, the index page of 32 blocks (format 2), the manifest
	 * and its kept copy. */
	if (puts >= 0)
		assert_int_equal(tc_store_count(st, "PUT") - puts, 5);
	bm_unmap(m);
	bm_close(ds);

	assert_true(tc_dataset_equals(url, 0, data, size));
	assert_true(tc_dataset_equals(url, 2, data, size));
	assert_true(tc_dataset_equals(url, 1, old, size));
	free(data);
	free(old);
}

static void an_old_generation_is_read_only_and_patch_at_it_exits_3(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 4 * KiB, size = 10 * bs;
	unsigned char *data = ts_pattern(size, 5);
	char url[512], *out, *err;
	char *patch = tc_tmpfile("PATCH", 5);

	tc_store_url(url, sizeof(url), st, "/gens");
	tc_put(url, bs, data, size);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "patch", url, "100", patch, NULL }), 0);
	assert_string_equal(out, "2\n");
	free(out);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "patch", url, "5000", patch, NULL }), 0);
	assert_string_equal(out, "3\n");
	free(out);

	/* Generation 1 still reads as it was. */
	assert_true(tc_dataset_equals(url, 1, data, size));
	memcpy(data + 100, "PATCH", 5);
	assert_true(tc_dataset_equals(url, 2, data, size));
	memcpy(data + 5000, "PATCH", 5);
	assert_true(tc_dataset_equals(url, 3, data, size));

	/* A commit from generation 1 is a conflict: exit 3, nothing published. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "patch", "--at", "1", url, "0", patch, NULL }), 3);
	assert_string_equal(out, "");
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, url));
	free(out);
	free(err);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 3);
	bm_close(ds);

	/* The library says the same. */
	ds = tc_open(url, 1);
	bm_mapping *m;
	void *addr;
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	((char *)addr)[0] = 'x';
	assert_int_equal(bm_commit(ds, NULL), BM_ECONFLICT);
	bm_unmap(m);
	bm_close(ds);

	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "log", url, NULL }), 0);
	assert_int_equal(tc_lines(out), 3);
	char *g3 = strstr(out, "generation 3 "), *g2 = strstr(out, "generation 2 "),
	     *g1 = strstr(out, "generation 1 ");
	assert_true(g3 && g2 && g1 && g3 < g2 && g2 < g1);
	free(out);
	unlink(patch);
	free(patch);
	free(data);
}

/* `blkmap log` on every server: one line per kept generation, one per run
 * not kept.  A store that lists is listed, so generation 1 is found past
 * a run of 96 not kept; on one that does not (nginx) each generation is
 * looked up and the walk stops after 64 in a row. */
static void log_shows_kept_generations_and_runs_not_kept(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 4 * KiB, size = 2 * bs;
	unsigned char *data = ts_pattern(size, 45);
	char url[512], *out;
	struct ts_resp r;

	tc_store_url(url, sizeof(url), st, "/logged");
	tc_put(url, bs, data, size);
	for (int i = 0; i < 2; i++)
		tc_write_commit(url, (uint64_t)i, "L", 1);
	tc_store_request(st, "DELETE", "/logged/gen/2.json", NULL, 0, &r);
	assert_true(r.status / 100 == 2);
	ts_resp_free(&r);
	json_t *man = tc_store_get_json(st, "/logged/manifest.json");
	assert_non_null(man);
	json_object_set_new(man, "generation", json_integer(100));
	char *text = tc_manifest_text(man, NULL);
	assert_true(tc_store_put(st, "/logged/manifest.json", text, strlen(text)) / 100 == 2);
	assert_int_equal(tc_cli(&out, NULL, (const char *[]){ "log", url, NULL }), 0);
	assert_true(strncmp(out, "generation 100 size 8192 blocks 2 ", 34) == 0);
	if (tc_store_can(st, TC_CAN_LIST)) {
		assert_int_equal(tc_lines(out), 5);
		const char *want[] = { "\ngenerations 4-99 (not kept)\n", "\ngeneration 3 size 8192 blocks 2 ",
				       "\ngeneration 2 (not kept)\n", "\ngeneration 1 size 8192 blocks 2 " };
		const char *at = out;
		for (size_t i = 0; i < 4; i++) {
			const char *p = strstr(at, want[i]);
			if (p == NULL)
				fail_msg("log output lacks \"%s\" in order:\n%s", want[i] + 1, out);
			at = p + 1;
		}
	} else {
		assert_int_equal(tc_lines(out), 3);
		assert_non_null(strstr(out, "\ngenerations 36-99 (not kept)\n"
					    "generations 1-35 not looked up (64 in a row not kept)\n"));
	}
	free(out);
	free(text);
	json_decref(man);
	free(data);
}

/* Apache's ETag of a file changed within the last second is weak, and
 * If-Match never matches a weak ETag: commits in quick succession, of one
 * handle and of fresh processes, must still each publish (no conflict that
 * never happened). */
static void commits_in_quick_succession_are_not_conflicts(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 4 * KiB, size = 4 * bs;
	unsigned char *data = ts_pattern(size, 44);
	char url[512], *out, *patch = tc_tmpfile("quick", 5);
	uint64_t gen;

	tc_store_url(url, sizeof(url), st, "/quick");
	tc_put(url, bs, data, size);
	bm_dataset *ds = tc_open(url, 0);
	for (int i = 0; i < 3; i++) {
		data[(size_t)i * bs] = (unsigned char)('a' + i);
		assert_int_equal(bm_write(ds, (uint64_t)i * bs, &data[(size_t)i * bs], 1), 0);
		int rc = bm_commit(ds, &gen);
		if (rc < 0)
			fprintf(stderr, "commit %d: %s\n", i, bm_last_error(ds));
		assert_int_equal(rc, 0);
		assert_int_equal(gen, 2 + (uint64_t)i);
	}
	bm_close(ds);
	for (int i = 0; i < 2; i++) {
		char *err;
		int ex = tc_cli(&out, &err, (const char *[]){ "patch", url, "10", patch, NULL });
		if (ex != 0)
			fprintf(stderr, "patch %d: %s", i, err);
		assert_int_equal(ex, 0);
		assert_int_equal(strtoull(out, NULL, 10), 5 + (uint64_t)i);
		free(out);
		free(err);
	}
	memcpy(data + 10, "quick", 5);
	assert_true(tc_dataset_equals(url, 0, data, size));
	unlink(patch);
	free(patch);
	free(data);
}

/* ---- conflicts ------------------------------------------------------------------------ */

struct two {
	bm_dataset *a, *b;
	void *pa, *pb;
	bm_mapping *ma, *mb;
	unsigned char *data;
	size_t bs, size;
	char url[512];
};

static void open_two(struct tc_store *st, struct two *t, const char *path, struct bm_options *ob)
{
	t->bs = 64 * KiB;
	t->size = 8 * t->bs;
	t->data = ts_pattern(t->size, 6);
	tc_store_url(t->url, sizeof(t->url), st, path);
	tc_put(t->url, t->bs, t->data, t->size);
	t->a = tc_open(t->url, 0);
	assert_int_equal(bm_open(&t->b, t->url, ob), 0);
	assert_int_equal(bm_map(t->a, 0, 0, &t->pa, &t->ma), 0);
	assert_int_equal(bm_map(t->b, 0, 0, &t->pb, &t->mb), 0);
	memset((char *)t->pa + 1 * t->bs, 'A', 100);
	memset((char *)t->pb + 2 * t->bs, 'B', 100);
}

static void close_two(struct two *t)
{
	bm_unmap(t->ma);
	bm_unmap(t->mb);
	bm_close(t->a);
	bm_close(t->b);
	free(t->data);
}

/* After A's commit, B's commit fails and publishes nothing; B's data stays
 * readable in its mapping; discard shows B's generation, refresh the
 * latest. */
static void check_b_lost_the_race(struct two *t)
{
	struct bm_stats stats;
	unsigned char *want = malloc(t->size);

	bm_stats(t->b, &stats);
	assert_int_equal(stats.conflicts, 1);
	assert_int_equal(stats.commits, 0);
	assert_non_null(strstr(bm_last_error(t->b), t->url));
	/* Published: generation 2 = A's change only. */
	memcpy(want, t->data, t->size);
	memset(want + 1 * t->bs, 'A', 100);
	assert_true(tc_dataset_equals(t->url, 0, want, t->size));
	bm_dataset *fresh = tc_open(t->url, 0);
	assert_int_equal(bm_generation(fresh), 2);
	bm_close(fresh);
	/* B still sees its own change. */
	assert_int_equal(((char *)t->pb)[2 * t->bs + 99], 'B');
	assert_int_equal(bm_refresh(t->b), BM_EBUSY);
	/* Discard: B's generation (1) again. */
	assert_int_equal(bm_discard(t->b), 0);
	assert_memory_equal(t->pb, t->data, t->size);
	assert_int_equal(bm_generation(t->b), 1);
	/* Refresh: the latest. */
	assert_int_equal(bm_refresh(t->b), 0);
	assert_int_equal(bm_generation(t->b), 2);
	assert_memory_equal(t->pb, want, t->size);
	free(want);
}

static void second_commit_on_the_same_generation_is_a_conflict(void **state)
{
	struct two t;
	struct bm_options ob;
	uint64_t gen;

	struct tc_store *st = tc_store_of(state);
	tc_options(&ob);
	open_two(st, &t, "/race1", &ob);
	assert_int_equal(bm_commit(t.a, &gen), 0);
	assert_int_equal(gen, 2);
	assert_int_equal(bm_commit(t.b, &gen), BM_ECONFLICT);
	check_b_lost_the_race(&t);
	close_two(&t);
}

static void a_commit_between_uploads_and_swap(const char *stage, void *arg)
{
	struct two *t = arg;
	if (strcmp(stage, "uploaded") == 0)
		assert_int_equal(bm_commit(t->a, NULL), 0);
}

static void the_manifest_swap_itself_refuses_the_second_writer(void **state)
{
	struct two t;
	struct bm_options ob;

	/* B passes the early check, uploads, and then A publishes: only the
	 * compare-and-swap can stop B (on a server that ignores If-Match:
	 * the manifest compared just before the swap). */
	struct tc_store *st = tc_store_of(state);
	tc_options(&ob);
	ob.commit_hook = a_commit_between_uploads_and_swap;
	ob.commit_hook_arg = &t;
	open_two(st, &t, "/race2", &ob);
	assert_int_equal(bm_commit(t.b, NULL), BM_ECONFLICT);
	check_b_lost_the_race(&t);
	close_two(&t);
}

/* Writers in threads, each with its own handle, commit their own bytes
 * again and again; a conflict makes a writer refresh and try again.  No
 * commit may be lost: every writer's last bytes are in the end result, and
 * the generation counts every commit that succeeded. */
#define RACERS 4
#define RACE_COMMITS 6

struct racer {
	const char *url;
	int id;
	int commits, conflicts;
	int err;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct bm_options o;
	bm_dataset *ds;
	unsigned char mark[64];

	tc_options(&o);
	if (bm_open(&ds, r->url, &o) < 0) {
		r->err = 1;
		return NULL;
	}
	for (int tries = 0; r->commits < RACE_COMMITS && tries < 1000; tries++) {
		memset(mark, 'a' + r->commits, sizeof(mark));
		int rc = bm_write(ds, (uint64_t)r->id * 4096, mark, sizeof(mark));
		if (rc == 0)
			rc = bm_commit(ds, NULL);
		if (rc == BM_ECONFLICT) {
			r->conflicts++;
			if (bm_discard(ds) < 0 || bm_refresh(ds) < 0)
				r->err = 2;
			continue;
		}
		if (rc < 0) {
			fprintf(stderr, "writer %d: %s\n", r->id, bm_last_error(ds));
			r->err = 3;
			break;
		}
		r->commits++;
	}
	bm_close(ds);
	return NULL;
}

static void racing_writers_lose_no_commit(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = RACERS * 4096;
	struct racer r[RACERS];
	pthread_t t[RACERS];
	char url[512];
	int total = 0;

	tc_require(st, TC_CAN_SWAP, "it does not swap the manifest atomically: a racing writer may lose (docs/FORMAT.md, Servers)");
	unsigned char *data = calloc(1, size);
	tc_store_url(url, sizeof(url), st, "/racers");
	tc_put(url, 4096, data, size);
	for (int i = 0; i < RACERS; i++) {
		r[i] = (struct racer){ .url = url, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(t[i], NULL); /* all of them before any assertion */
	for (int i = 0; i < RACERS; i++) {
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].commits, RACE_COMMITS);
		total += r[i].commits;
		memset(data + (size_t)i * 4096, 'a' + RACE_COMMITS - 1, 64);
	}
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 1 + (uint64_t)total);
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

/* ---- a writer killed in the middle of a commit ---------------------------------------------- */

struct crash {
	const char *url;
	const char *stage;         /* the hook kills the process here */
	size_t bs;
};

static void kill_at(const char *stage, void *arg)
{
	struct crash *c = arg;
	if (strcmp(stage, c->stage) == 0)
		raise(SIGKILL);
}

static int write_and_commit(void *arg)
{
	struct crash *c = arg;
	struct bm_options o;
	bm_dataset *ds;
	void *addr;

	if (tc_child_options(&o) < 0)
		return 1;
	o.commit_hook = kill_at;
	o.commit_hook_arg = c;
	if ((ds = tc_child_map(c->url, &o, &addr)) == NULL)
		return 1;
	for (int b = 0; b < 4; b++)
		memset((char *)addr + (size_t)b * c->bs, 'K', 1000);
	bm_commit(ds, NULL);
	return 0; /* not reached */
}

static void a_writer_killed_after_uploads_leaves_the_old_generation(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 64 * KiB, size = 8 * bs;
	unsigned char *data = ts_pattern(size, 7);
	char url[512], *sum1, *sum2;
	struct crash c = { url, "uploaded", bs };

	tc_store_url(url, sizeof(url), st, "/crash1");
	tc_put(url, bs, data, size);
	assert_int_equal(tc_cli(&sum1, NULL, (const char *[]){ "sum", url, NULL }), 0);
	long puts = tc_store_count(st, "PUT");
	int status = tc_child(write_and_commit, &c, NULL);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* The blocks and the index page went up, the manifest did not. */
	if (puts >= 0)
		assert_int_equal(tc_store_count(st, "PUT") - puts, 4 + 1);
	assert_int_equal(tc_cli(&sum2, NULL, (const char *[]){ "sum", url, NULL }), 0);
	assert_string_equal(sum1, sum2);
	assert_true(tc_dataset_equals(url, 0, data, size));

	/* Another writer commits normally on top of generation 1. */
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 1);
	bm_mapping *m;
	void *addr;
	uint64_t gen;
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memset(addr, 'N', 10);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_unmap(m);
	bm_close(ds);
	memset(data, 'N', 10);
	assert_true(tc_dataset_equals(url, 2, data, size));
	free(sum1);
	free(sum2);
	free(data);
}

static void a_writer_killed_after_the_swap_is_repaired_by_the_next_commit(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t bs = 64 * KiB, size = 8 * bs;
	unsigned char *data = ts_pattern(size, 8);
	char url[512];
	struct crash c = { url, "swapped", bs };
	struct ts_resp r;

	tc_store_url(url, sizeof(url), st, "/crash2");
	tc_put(url, bs, data, size);
	int status = tc_child(write_and_commit, &c, NULL);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* Generation 2 is published but not kept yet. */
	tc_store_request(st, "HEAD", "/crash2/gen/2.json", NULL, 0, &r);
	assert_int_equal(r.status, 404);
	ts_resp_free(&r);
	for (int b = 0; b < 4; b++)
		memset(data + (size_t)b * bs, 'K', 1000);
	assert_true(tc_dataset_equals(url, 0, data, size));
	assert_true(tc_dataset_equals(url, 2, data, size));

	/* The next commit keeps generation 2 before publishing 3. */
	bm_dataset *ds = tc_open(url, 0);
	bm_mapping *m;
	void *addr;
	uint64_t gen;
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memset((char *)addr + 7 * bs, 'L', 10);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_unmap(m);
	bm_close(ds);
	tc_store_request(st, "HEAD", "/crash2/gen/2.json", NULL, 0, &r);
	assert_int_equal(r.status, 200);
	ts_resp_free(&r);
	assert_true(tc_dataset_equals(url, 2, data, size));
	memset(data + 7 * bs, 'L', 10);
	assert_true(tc_dataset_equals(url, 3, data, size));
	free(data);
}

/* Spare memory (and its thread) serves page faults only: a handle used with
 * bm_read / bm_write alone (as the mirror and `blkmap put` use theirs) keeps
 * none; the first mapping starts it, unless spare_bytes is 0 or the fault
 * engine is userfaultfd (its blocks live in the handle's memfd, never in
 * the pool's spare slots). */
static void a_handle_keeps_spare_memory_only_once_mapped(void **state)
{
	struct tc_store *st = tc_store_of(state);
	char url[512];
	const size_t bs = 65536;
	unsigned char *data = ts_pattern(4 * bs, 43);

	tc_store_url(url, sizeof(url), st, "/spares");
	tc_put(url, bs, data, 4 * bs);
	for (int with = 0; with < 2; with++) {
		struct bm_options o;
		bm_dataset *ds;
		bm_mapping *m;
		void *addr;
		tc_options(&o);
		o.spare_bytes = with ? (size_t)1 << 20 : 0;
		assert_int_equal(bm_open(&ds, url, &o), 0);
		struct bm_stats bs_st;
		bm_stats(ds, &bs_st);
		int uffd = strncmp(bs_st.engine, "uffd", 4) == 0;
		int before = tc_nthreads();
		assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
		assert_int_equal(tc_nthreads(), before + (with && !uffd));
		assert_memory_equal(addr, data, 4 * bs);
		bm_unmap(m);
		bm_close(ds);
	}
	free(data);
}

#if defined(__x86_64__)
#include <cpuid.h>

/* The in-use bits (XGETBV with ECX=1) of the upper halves of vector
 * registers 0-15: AVX's (bit 2) and AVX-512's ZMM_Hi256 (bit 6).  While
 * they are set, every legacy SSE instruction of the thread is slowed down.
 * -1 when the CPU cannot tell. */
static long upper_vector_state_in_use(void)
{
	unsigned a, b, c, d, lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
		return -1;
	if (!__get_cpuid_count(0xd, 1, &a, &b, &c, &d) || !(a & (1u << 2)))
		return -1;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
	(void)hi;
	return lo & ((1u << 2) | (1u << 6));
}
#endif

/* bm_write hashes the block on the caller's thread (with AVX2/AVX-512 when
 * libxxhash dispatches to them); the caller's own SSE code must not pay for
 * that afterwards (it ran 8 times slower in the demo). */
static void writing_a_block_leaves_no_dirty_upper_vector_state(void **state)
{
#if defined(__x86_64__)
	struct tc_store *st = tc_store_of(state);
	char url[512];
	const size_t bs = 1 << 20;
	unsigned char *data = ts_pattern(bs, 41);
	struct bm_options o;
	bm_dataset *ds;

	if (upper_vector_state_in_use() < 0)
		skip();
	tc_store_url(url, sizeof(url), st, "/vzeroupper");
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = bs;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_int_equal(bm_resize(ds, bs), 0);
	assert_int_equal(bm_write(ds, 0, data, bs), 0);
	long dirty = upper_vector_state_in_use();
	assert_int_equal(bm_commit(ds, NULL), 0);
	bm_close(ds);
	free(data);
	assert_int_equal(dirty, 0);
#else
	(void)state;
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip_4k_blocks_reads_back_every_byte),
		cmocka_unit_test(writing_a_block_leaves_no_dirty_upper_vector_state),
		cmocka_unit_test(a_handle_keeps_spare_memory_only_once_mapped),
		cmocka_unit_test(round_trip_64k_blocks_reads_back_every_byte),
		cmocka_unit_test(round_trip_1m_blocks_reads_back_every_byte),
		cmocka_unit_test(cli_put_then_get_gives_the_same_file_and_sum_matches),
		cmocka_unit_test(holes_read_as_zeros_and_cost_no_request),
		cmocka_unit_test(a_block_written_all_zero_becomes_a_hole),
		cmocka_unit_test(commit_uploads_only_the_dirty_blocks),
		cmocka_unit_test(an_old_generation_is_read_only_and_patch_at_it_exits_3),
		cmocka_unit_test(log_shows_kept_generations_and_runs_not_kept),
		cmocka_unit_test(commits_in_quick_succession_are_not_conflicts),
		cmocka_unit_test(second_commit_on_the_same_generation_is_a_conflict),
		cmocka_unit_test(the_manifest_swap_itself_refuses_the_second_writer),
		cmocka_unit_test(racing_writers_lose_no_commit),
		cmocka_unit_test(a_writer_killed_after_uploads_leaves_the_old_generation),
		cmocka_unit_test(a_writer_killed_after_the_swap_is_repaired_by_the_next_commit),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
