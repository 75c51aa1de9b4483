/* tests/test_client_reads.c — bm_reads: many block reads in flight at
 * once from one thread (what `blkmap sum` streams a dataset with), one
 * suite run on every kind of server (blkmap-server, nginx, Apache, the
 * RADOS Gateway's S3: each store's flow of GETs).  Every block reads
 * right; a block whose object holds other bytes fails alone, with one
 * line naming it; holes and the bytes past the end read as zeros (on
 * blkmap-server: without a request); the handle never holds all of the
 * dataset's connections.  Where the server can inject faults, the reads
 * go out together from a process that can make no thread, and are
 * retried through 503s and cut answers.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
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

#define BS 65536

/* Reads blocks [0, nblk) of ds with at most max in flight into out
 * (nblk * BS bytes); each block's result into rc[blk].  The number of
 * reads that ended in error. */
static int read_all(bm_dataset *ds, int max, uint64_t nblk, unsigned char *out, int *rc)
{
	bm_reads *r;
	uint64_t next = 0;
	int bad = 0, err = bm_reads_new(ds, max, &r);

	if (err < 0)
		return -1000 + err;
	for (;;) {
		while (next < nblk) {
			int s = bm_reads_start(r, next, out + next * BS, (void *)(uintptr_t)next);
			if (s == BM_EBUSY)
				break;
			if (s < 0) {
				rc[next] = s;
				bad++;
			}
			next++;
		}
		void *tag;
		int w = bm_reads_wait(r, &tag);
		if (w == 1) {
			if (next >= nblk)
				break;
			continue;
		}
		rc[(uintptr_t)tag] = w;
		bad += w < 0;
	}
	bm_reads_free(r);
	return bad;
}

/* For tc_child: makes every new thread of this process fail
 * (tc_child_refuse_threads), then opens the dataset at arg and reads its
 * 40 blocks with 16 in flight: 0 when all read as ts_pattern(40 * BS,
 * 81); 1 no filter, 2 open, 3 a read, 4 other bytes. */
static int read_with_no_thread_allowed(void *arg)
{
	struct bm_options o;
	bm_dataset *ds;
	int rc[40];

	if (tc_child_options(&o) < 0)
		return 2;
	o.connections = 32;
	unsigned char *want = ts_pattern(40 * BS, 81), *got = malloc(40 * BS);
	if (tc_child_refuse_threads() < 0)
		return 1;
	if (bm_open(&ds, arg, &o) < 0) {
		fprintf(stderr, "%s\n", bm_last_error(NULL));
		return 2;
	}
	int bad = read_all(ds, 16, 40, got, rc);
	if (bad != 0) {
		fprintf(stderr, "%d reads failed: %s\n", bad, bm_last_error(ds));
		return 3;
	}
	int same = memcmp(got, want, 40 * BS) == 0;
	bm_close(ds);
	free(want);
	free(got);
	return same ? 0 : 4;
}

/* Answers 1 s late (the 16 reads start well within it on a loaded
 * machine): in a process that can make no thread, the reads
 * still reach the server 16 at once (the server's peak in flight), and
 * each block is read right. */
static void reads_go_out_together_from_a_process_that_can_make_no_thread(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_FAULTS | TC_CAN_COUNT, "holds answers and counts those in flight");
	unsigned char *data = ts_pattern(40 * BS, 81);
	char url[512], slash[520], *err = NULL;

	tc_store_url(url, sizeof(url), st, "/reads/nothread");
	tc_put(url, BS, data, 40 * BS);
	/* Opened as a prefix: no probe of the name beside the manifest's GET,
	 * which, cancelled by the manifest's answer, could still be held in
	 * the server when the reads arrive (17 in flight, seen at load 20). */
	snprintf(slash, sizeof(slash), "%s/", url);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 1000}"), 200);
	(void)tc_server_stat(&st->srv, "requests_in_flight_max", NULL); /* a new period */
	int status = tc_child(read_with_no_thread_allowed, slash, &err);
	long peak = tc_server_stat(&st->srv, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 0}"), 200);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("reads in a process with no new thread: status %#x: %s", status, err ? err : "");
	if (peak != 16)
		fail_msg("%ld requests in flight at most, 16 expected", peak);
	free(err);
	free(data);
}

/* A third of the GETs answered 503 and a sixth cut mid-answer: every
 * read is retried to the right bytes (the server saw more GETs than
 * blocks). */
static void reads_are_retried_through_503s_and_cut_answers(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_FAULTS | TC_CAN_COUNT, "injects faults");
	const uint64_t nblk = 40;
	unsigned char *data = ts_pattern(nblk * BS, 82), *got = malloc(nblk * BS);
	char url[512];
	struct bm_options o;
	int rc[40];
	bm_dataset *ds;

	tc_store_url(url, sizeof(url), st, "/reads/faults");
	tc_put(url, BS, data, nblk * BS);
	tc_options(&o);
	o.retries = 30;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	long gets = tc_store_count(st, "GET");
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-error-rate\": 0.33, \"fault-drop-rate\": 0.17, "
						 "\"fault-method\": \"GET\", \"fault-seed\": 9}"), 200);
	memset(rc, 1, sizeof(rc));
	int bad = read_all(ds, 8, nblk, got, rc);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-error-rate\": 0, \"fault-drop-rate\": 0}"), 200);
	if (bad != 0)
		fail_msg("%d reads failed through retries: %s", bad, bm_last_error(ds));
	assert_memory_equal(got, data, nblk * BS);
	assert_true(tc_store_count(st, "GET") - gets > (long)nblk);
	bm_close(ds);
	free(got);
	free(data);
}

/* 40 blocks read 8 at a time come back right; then block 17's object
 * holds other bytes of the same length: that read alone fails,
 * BM_ECHECKSUM after its tries, with one line naming block 17, and every
 * other block still reads right. */
static void a_block_with_other_bytes_fails_alone_with_one_line_and_the_others_read(void **state)
{
	struct tc_store *st = tc_store_of(state);
	const uint64_t nblk = 40;
	unsigned char *data = ts_pattern(nblk * BS, 83), *got = malloc(nblk * BS);
	char url[512], path[256], bkey[128];
	struct bm_options o;
	int rc[40];
	bm_dataset *ds;

	tc_store_url(url, sizeof(url), st, "/reads/other");
	tc_put(url, BS, data, nblk * BS);
	tc_options(&o);
	o.retries = 2;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	memset(rc, 1, sizeof(rc));
	assert_int_equal(read_all(ds, 8, nblk, got, rc), 0);
	assert_memory_equal(got, data, nblk * BS);
	bm_close(ds);

	snprintf(path, sizeof(path), "/reads/other/%s", tc_block_key(url, 17, bkey, sizeof(bkey)));
	unsigned char *other = ts_pattern(BS, 84);
	assert_true(tc_store_put(st, path, other, BS) / 100 == 2);
	free(other);
	assert_int_equal(bm_open(&ds, url, &o), 0);
	memset(got, 0, nblk * BS);
	assert_int_equal(read_all(ds, 8, nblk, got, rc), 1);
	assert_int_equal(rc[17], BM_ECHECKSUM);
	const char *msg = bm_last_error(ds);
	if (strchr(msg, '\n') || !strstr(msg, "block 17") || !strstr(msg, "checksum mismatch") ||
	    !strstr(msg, "after 3 tries"))
		fail_msg("the failed read says \"%s\": one line naming block 17's mismatch after 3 tries expected", msg);
	for (uint64_t b = 0; b < nblk; b++) {
		if (b == 17)
			continue;
		assert_int_equal(rc[b], 0);
		assert_memory_equal(got + b * BS, data + b * BS, BS);
	}
	bm_close(ds);
	free(got);
	free(data);
}

/* Blocks 3-5 all zeros (stored as holes) and the last one short: into
 * DS's handle of them, *GOT (10 * BS bytes, malloc'd) after reading all
 * 10 blocks 4 at a time (asserted to succeed); *DATA the content. */
static bm_dataset *read_holes(struct tc_store *st, const char *path, unsigned char **data,
			      unsigned char **got, long *gets)
{
	const size_t size = 9 * BS + 100;
	char url[512], prefix[520], sum[64];
	int rc[10];

	*data = ts_pattern(size, 85);
	*got = malloc(10 * BS);
	memset(*data + 3 * BS, 0, 3 * BS);
	tc_store_url(url, sizeof(url), st, path);
	tc_put(url, BS, *data, size);
	/* Opened as a prefix ('/' at the end): no flat probe beside the
	 * manifest's GET.  The manifest's answer stops a probe where it is,
	 * so the server may read and count the probe's GET at any time after
	 * the open, even during the reads (on a loaded machine it once made
	 * the 8th GET of the 7 counted). */
	snprintf(prefix, sizeof(prefix), "%s/", url);
	bm_dataset *ds = tc_open(prefix, 0);
	assert_int_equal(bm_block_sum(ds, 9, sum, sizeof(sum)), 1); /* its index page, loaded */
	assert_int_equal(bm_block_sum(ds, 4, sum, sizeof(sum)), 0); /* a hole */
	memset(*got, 0xee, 10 * BS);
	tc_store_settle(st); /* nothing left unread from before (tc_server_settle) */
	*gets = tc_store_count(st, "GET");
	assert_int_equal(read_all(ds, 4, 10, *got, rc), 0);
	*gets = *gets >= 0 ? tc_store_count(st, "GET") - *gets : -1;
	return ds;
}

/* The holes and the bytes past the end of the content read as zeros; a
 * block past the last is BM_EINVAL; a bound of one connection has no
 * bm_reads (its index pages need one). */
static void holes_and_the_bytes_past_the_end_read_as_zeros(void **state)
{
	struct tc_store *st = tc_store_of(state);
	const size_t size = 9 * BS + 100;
	unsigned char *data, *got;
	char url[512];
	long gets;
	bm_reads *r;
	struct bm_options o;

	bm_dataset *ds = read_holes(st, "/reads/holes", &data, &got, &gets);
	assert_memory_equal(got, data, size);
	for (size_t i = size; i < 10 * BS; i++)
		if (got[i] != 0)
			fail_msg("byte %zu past the end: %#x, 0 expected", i, got[i]);
	assert_int_equal(bm_reads_new(ds, 4, &r), 0);
	assert_int_equal(bm_reads_start(r, 10, got, NULL), BM_EINVAL);
	bm_reads_free(r);
	bm_close(ds);
	tc_options(&o);
	o.connections = 1;
	assert_int_equal(bm_open(&ds, tc_store_url(url, sizeof(url), st, "/reads/holes"), &o), 0);
	assert_int_equal(bm_reads_new(ds, 4, &r), BM_EINVAL);
	assert_null(r);
	bm_close(ds);
	free(got);
	free(data);
}

/* Of the 10 blocks (3 holes), the server sees a GET for the 7 stored
 * ones only. */
static void holes_are_read_without_a_request(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_COUNT, "counts the server's requests");
	unsigned char *data, *got;
	long gets;

	bm_dataset *ds = read_holes(st, "/reads/holes_count", &data, &got, &gets);
	assert_int_equal(gets, 7);
	bm_close(ds);
	free(got);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reads_go_out_together_from_a_process_that_can_make_no_thread),
		cmocka_unit_test(reads_are_retried_through_503s_and_cut_answers),
		cmocka_unit_test(a_block_with_other_bytes_fails_alone_with_one_line_and_the_others_read),
		cmocka_unit_test(holes_and_the_bytes_past_the_end_read_as_zeros),
		cmocka_unit_test(holes_are_read_without_a_request),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
