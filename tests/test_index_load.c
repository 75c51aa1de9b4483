/* tests/test_index_load.c — the store-backed index page loader
 * (client/index_load.c) against a real server, one program per kind
 * (TC_KIND; client.mk): pages written by an update are read back verified,
 * the cache serves repeated walks and stays inside its byte budget, loads
 * of a page being fetched wait for it (one GET a page), a page
 * damaged in transit is fetched again, and a page damaged or missing on
 * the server is a one-line error naming its URL.
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client_util.h"
#include "../client/index_load.h"

/* A v2 tree (no piece sums) of root and nblk blocks, for index.c's walks. */
#define V2TREE(root, nblk) (&(const struct bm_itree){ (root), (nblk), 0 })

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

struct fixture {
	struct bm_store *store;
	struct bm_pages *pages;
	struct bm_index_io io;
	atomic_uint_fast64_t retries;
	char root[BM_SUM_HEX + 1];
	uint64_t nblk;
};

static void open_fixture(struct fixture *f, struct tc_store *st, const char *path, size_t cap)
{
	struct bm_store_opts o = { .connect_timeout_ms = 5000, .timeout_ms = 20000, .retry_base_ms = 1,
				   .retries = 10, .connections = 4, .retries_counter = &f->retries };
	char url[512], msg[512];

	tc_store_url(url, sizeof(url), st, path);
	if (bm_store_open(&f->store, url, &o, msg, sizeof(msg)) != 0)
		fail_msg("bm_store_open %s: %s", url, msg);
	/* A first request lets the store learn which server it talks to
	 * (a WebDAV server needs collections made), as bm_open's does. */
	struct bm_version v;
	assert_int_equal(bm_store_head(f->store, "none", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_pages_new(&f->pages, f->store, cap), 0);
	bm_pages_io(f->pages, &f->io);
}

static void close_fixture(struct fixture *f)
{
	bm_pages_free(f->pages);
	bm_store_close(f->store);
	f->pages = NULL;
	f->store = NULL;
}

/* The made-up sum of block b: every 7th block is a hole. */
static bool block_sum(uint64_t b, char out[BM_SUM_HEX + 1])
{
	if (b % 7 == 3) {
		out[0] = '\0';
		return false;
	}
	snprintf(out, BM_SUM_HEX + 1, "%016llx%016llx", (unsigned long long)b * 2654435761u,
		 (unsigned long long)b);
	return true;
}

/* Writes a tree of nblk blocks (block_sum) through the loader's store. */
static void write_tree(struct fixture *f, uint64_t nblk)
{
	struct bm_index_change *ch = calloc(nblk, sizeof(*ch));
	char msg[512];
	size_t n = 0;

	assert_non_null(ch);
	for (uint64_t b = 0; b < nblk; b++) {
		if (block_sum(b, ch[n].sum)) {
			ch[n].blk = b;
			n++;
		}
	}
	int rc = bm_index_update(&f->io, V2TREE("", 0), ch, n, nblk, f->root, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("bm_index_update: %s", msg);
	f->nblk = nblk;
	free(ch);
}

static void check_lookup(struct fixture *f, uint64_t b)
{
	char want[BM_SUM_HEX + 1], got[BM_SUM_HEX + 1], msg[512];
	bool stored = block_sum(b, want);
	int rc = bm_index_lookup(&f->io, V2TREE(f->root, f->nblk), b, got, NULL, NULL, msg, sizeof(msg));

	if (rc < 0)
		fail_msg("lookup of block %llu: %s", (unsigned long long)b, msg);
	assert_int_equal(rc, stored ? 1 : 0);
	assert_string_equal(got, want);
}

static void pages_written_by_an_update_are_read_back_verified_and_cached(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct fixture w = { 0 }, r = { 0 };
	struct bm_pages_stats ps;

	open_fixture(&w, st, "/il/readback", (size_t)1 << 20);
	write_tree(&w, 70000); /* depth 3: 274 leaves, 2 pages above, a root */
	bm_pages_stats(w.pages, &ps);
	assert_int_equal(ps.stored_pages, 274 + 2 + 1);
	close_fixture(&w);

	open_fixture(&r, st, "/il/readback", (size_t)1 << 20);
	memcpy(r.root, w.root, sizeof(r.root));
	r.nblk = w.nblk;
	check_lookup(&r, 66000);
	bm_pages_stats(r.pages, &ps);
	assert_int_equal(ps.fetched_pages, 3); /* one per level, verified */
	assert_int_equal(ps.hits, 0);
	check_lookup(&r, 66001); /* the same path: from the cache */
	check_lookup(&r, 3);     /* a hole, another leaf */
	bm_pages_stats(r.pages, &ps);
	assert_int_equal(ps.fetched_pages, 5);
	assert_int_equal(ps.hits, 4);
	for (uint64_t b = 0; b < r.nblk; b += 997)
		check_lookup(&r, b);
	close_fixture(&r);
}

struct lookup_job {
	struct fixture *f;
	uint64_t b;
	int rc;
	char got[BM_SUM_HEX + 1], msg[512];
};

static void *lookup_thread(void *arg)
{
	struct lookup_job *j = arg;

	j->rc = bm_index_lookup(&j->f->io, V2TREE(j->f->root, j->f->nblk), j->b, j->got, NULL, NULL,
				j->msg, sizeof(j->msg));
	return NULL;
}

/* Threads that want the same pages at once (a fault and read-ahead
 * looking up blocks of one leaf) get them with one GET each: the loads
 * that find a page being fetched wait for it.  Every answer is held
 * 300 ms, so that the four lookups meet at each level. */
static void loads_of_a_page_being_fetched_wait_for_it_one_get_a_page(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct fixture w = { 0 }, r = { 0 };
	struct lookup_job jobs[4];
	pthread_t t[4];
	struct bm_pages_stats ps;
	char want[BM_SUM_HEX + 1];

	tc_require(st, TC_CAN_FAULTS, "it holds answers so that the loads meet");
	open_fixture(&w, st, "/il/together", (size_t)1 << 20);
	write_tree(&w, 70000); /* depth 3 */
	close_fixture(&w);
	open_fixture(&r, st, "/il/together", (size_t)1 << 20);
	memcpy(r.root, w.root, sizeof(r.root));
	r.nblk = w.nblk;
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 300}"), 200);
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct lookup_job){ .f = &r, .b = 66000 };
		assert_int_equal(pthread_create(&t[i], NULL, lookup_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 0}"), 200);
	assert_true(block_sum(66000, want));
	for (int i = 0; i < 4; i++) {
		if (jobs[i].rc != 1)
			fail_msg("lookup %d: %d %s", i, jobs[i].rc, jobs[i].msg);
		assert_string_equal(jobs[i].got, want);
	}
	bm_pages_stats(r.pages, &ps);
	assert_int_equal(ps.fetched_pages, 3); /* root, the page under it, the leaf */
	assert_int_equal(ps.hits, 4 * 3 - 3);
	close_fixture(&r);
}

static int count_key(void *arg, const char *key)
{
	(void)key;
	(*(size_t *)arg)++;
	return 0;
}

static void the_cache_stays_inside_its_byte_budget(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct fixture f = { 0 };
	struct bm_pages_stats ps;
	size_t nkeys = 0, cap = 3 * BM_IPAGE_MAX;
	char msg[512];

	open_fixture(&f, st, "/il/budget", (size_t)1 << 20);
	write_tree(&f, 20000); /* 79 leaves of 4 KiB and a root */
	char root[BM_SUM_HEX + 1];
	memcpy(root, f.root, sizeof(root));
	close_fixture(&f);

	open_fixture(&f, st, "/il/budget", cap);
	int rc = bm_index_keys(&f.io, V2TREE(root, 20000), count_key, &nkeys, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("bm_index_keys: %s", msg);
	bm_pages_stats(f.pages, &ps);
	assert_int_equal(ps.fetched_pages, 80); /* every page read once */
	assert_true(ps.cached_bytes <= cap);
	assert_true(ps.cached_pages >= 1);
	close_fixture(&f);

	/* A budget of nothing still walks: pages live while in use. */
	open_fixture(&f, st, "/il/budget", 0);
	memcpy(f.root, root, sizeof(root));
	f.nblk = 20000;
	check_lookup(&f, 12345);
	bm_pages_stats(f.pages, &ps);
	assert_int_equal(ps.cached_bytes, 0);
	close_fixture(&f);
}

static void a_page_damaged_in_transit_is_fetched_again(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct fixture f = { 0 };
	struct bm_pages_stats ps;

	tc_require(st, TC_CAN_FAULTS, "needs fault injection (blkmap-server)");
	open_fixture(&f, st, "/il/flip", (size_t)1 << 20);
	write_tree(&f, 5000);
	char root[BM_SUM_HEX + 1];
	memcpy(root, f.root, sizeof(root));
	close_fixture(&f);

	open_fixture(&f, st, "/il/flip", (size_t)1 << 20);
	memcpy(f.root, root, sizeof(root));
	f.nblk = 5000;
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 0.3, \"fault-seed\": 3}"), 200);
	for (uint64_t b = 0; b < 5000; b += 256)
		check_lookup(&f, b);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 0}"), 200);
	bm_pages_stats(f.pages, &ps);
	assert_int_equal(ps.fetched_pages, 21); /* the root and 20 leaves */
	assert_true(atomic_load(&f.retries) > 0); /* some came damaged */
	close_fixture(&f);
}

/* The key of the root page's first child, from the root page's bytes. */
static void first_child(struct fixture *f, const char *root, char out[BM_SUM_HEX + 1])
{
	const void *data;
	size_t len;
	struct bm_ipage p;
	char msg[256];

	assert_int_equal(f->io.load(f->io.arg, root, &data, &len, msg, sizeof(msg)), 0);
	assert_int_equal(bm_ipage_decode(data, len, root, -1, 0, f->nblk, 0, 0, &p, msg, sizeof(msg)), 0);
	f->io.release(f->io.arg, root, data);
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[p.sum[0][i] >> 4];
		out[2 * i + 1] = hex[p.sum[0][i] & 15];
	}
	out[BM_SUM_HEX] = '\0';
}

static void a_page_damaged_or_missing_on_the_server_is_one_line_naming_its_url(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct fixture f = { 0 };
	char leaf[BM_SUM_HEX + 1], path[256], msg[512], sum[BM_SUM_HEX + 1];

	open_fixture(&f, st, "/il/bad", (size_t)1 << 20);
	write_tree(&f, 5000);
	first_child(&f, f.root, leaf);
	close_fixture(&f);
	char root[BM_SUM_HEX + 1];
	memcpy(root, f.root, sizeof(root));

	/* Same length, other bytes: every fetch fails its sum. */
	snprintf(path, sizeof(path), "/il/bad/index/%s", leaf);
	unsigned char *junk = ts_pattern(BM_IPAGE_MAX, 5);
	assert_int_equal(tc_store_put(st, path, junk, BM_IPAGE_MAX) / 100, 2);
	free(junk);
	open_fixture(&f, st, "/il/bad", (size_t)1 << 20);
	int rc = bm_index_lookup(&f.io, V2TREE(root, 5000), 1, sum, NULL, NULL, msg, sizeof(msg));
	assert_int_equal(rc, BM_ECHECKSUM);
	assert_non_null(strstr(msg, path));
	assert_null(strchr(msg, '\n'));
	close_fixture(&f);

	/* Gone: a format error (the dataset names a page it lacks). */
	struct ts_resp r;
	assert_int_equal(tc_store_request(st, "DELETE", path, NULL, 0, &r), CURLE_OK);
	ts_resp_free(&r);
	open_fixture(&f, st, "/il/bad", (size_t)1 << 20);
	rc = bm_index_lookup(&f.io, V2TREE(root, 5000), 1, sum, NULL, NULL, msg, sizeof(msg));
	assert_int_equal(rc, BM_EFORMAT);
	assert_non_null(strstr(msg, path));
	assert_non_null(strstr(msg, "missing"));
	assert_null(strchr(msg, '\n'));
	close_fixture(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pages_written_by_an_update_are_read_back_verified_and_cached),
		cmocka_unit_test(loads_of_a_page_being_fetched_wait_for_it_one_get_a_page),
		cmocka_unit_test(the_cache_stays_inside_its_byte_budget),
		cmocka_unit_test(a_page_damaged_in_transit_is_fetched_again),
		cmocka_unit_test(a_page_damaged_or_missing_on_the_server_is_one_line_naming_its_url),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
