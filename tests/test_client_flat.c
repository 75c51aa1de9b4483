/* tests/test_client_flat.c — a plain HTTP object (no manifest) maps as a
 * read-only "flat" dataset through Range GETs: its bytes read back, writes
 * and commits are refused, and an object that changes on the server while
 * mapped makes the next load fail rather than mix two versions; a random
 * miss fetches one small block, read-ahead fetches a run of blocks with one
 * Range GET; the open's one Range GET brings block 0 and the size (short
 * and empty objects too), sent beside the manifest's GET (one round
 * trip, from the opening thread: an open makes no thread) while a
 * dataset opens as before; opened as a plain object (BM_OPEN_FLAT) it
 * sends the Range GET alone; a miss waiting for a slow server sleeps.  One program per kind of server
 * (TC_KIND; client.mk).
 */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define MiB ((size_t)1 << 20)
#define FLAT_BS ((size_t)16 << 10) /* a flat object's default block size */
#define SIZE (2 * MiB + MiB / 2 + 3)

/* The object every test reads: made by the first test that needs it. */
static struct tc_store *with_object(void **state)
{
	static bool made;
	struct tc_store *st = tc_store_of(state);

	if (!made) {
		unsigned char *data = ts_pattern(SIZE, 11);
		/* 201 Created; 200 on S3, which does not tell. */
		assert_int_equal(tc_store_put(st, "/plain/object.bin", data, SIZE) / 100, 2);
		free(data);
		made = true;
	}
	return st;
}

static void a_plain_object_maps_read_only_through_range_gets(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(SIZE, 11);
	char url[512];
	struct bm_stats st;

	bm_dataset *ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/object.bin"), 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), SIZE);
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, data, SIZE);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, (SIZE + FLAT_BS - 1) / FLAT_BS); /* 16 KiB blocks */
	assert_int_equal(st.fetched_bytes, SIZE);
	bm_close(ds);
	free(got);
	free(data);
}

/* The descriptors of page caches the process holds: virtmem's memfds
 * ("virtmem-ram", "virtmem-file-..."). */
static int page_cache_memfds(void)
{
	char path[300], link[300];
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t k = e->d_name[0] == '.' ? -1 : readlink(path, link, sizeof(link) - 1);
		if (k > 0) {
			link[k] = '\0';
			n += strncmp(link, "/memfd:virtmem", 14) == 0;
		}
	}
	if (d)
		closedir(d);
	return n;
}

/* An open makes no page cache (its RAM pool's memfd and reserved
 * mapping, virtmem's handle): the first mapping does, and a bm_read
 * needs none. */
static void an_open_and_a_read_make_no_page_cache_until_the_first_mapping(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(SIZE, 11), got[100];
	char url[512];
	bm_mapping *m;
	void *addr;

	int before = page_cache_memfds();
	bm_dataset *ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/object.bin"), 0);
	assert_int_equal(bm_read(ds, 2 * FLAT_BS + 7, got, sizeof(got)), sizeof(got));
	assert_memory_equal(got, data + 2 * FLAT_BS + 7, sizeof(got));
	assert_int_equal(page_cache_memfds(), before);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	assert_true(page_cache_memfds() > before);
	assert_memory_equal(addr, data, SIZE);
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

/* A bm_read of a flat object asks for the bytes it returns and no more
 * (a flat object has no sum that would need the rest of the block):
 * 100 bytes inside a block, 100 across two blocks (two Range GETs of 50),
 * and 100 at the object's end, of which 3 are there. */
static void a_small_bm_read_of_a_flat_object_fetches_only_the_bytes_it_returns(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(SIZE, 11), got[100];
	struct bm_stats st;
	char url[512];

	bm_dataset *ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/object.bin"), 0);
	assert_int_equal(bm_read(ds, 2 * FLAT_BS + 7, got, sizeof(got)), sizeof(got));
	assert_memory_equal(got, data + 2 * FLAT_BS + 7, sizeof(got));
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_bytes, sizeof(got));
	assert_int_equal(st.fetched_blocks, 1);
	assert_int_equal(bm_read(ds, 5 * FLAT_BS - 50, got, sizeof(got)), sizeof(got));
	assert_memory_equal(got, data + 5 * FLAT_BS - 50, sizeof(got));
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_bytes, 2 * sizeof(got));
	assert_int_equal(st.fetched_blocks, 3);
	assert_int_equal(bm_read(ds, SIZE - 3, got, sizeof(got)), 3);
	assert_memory_equal(got, data + SIZE - 3, 3);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_bytes, 2 * sizeof(got) + 3);
	bm_close(ds);
	free(data);
}

static void committing_or_writing_a_flat_object_is_read_only(void **state)
{
	struct tc_store *s = with_object(state);
	char url[512];

	bm_dataset *ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/object.bin"), 0);
	assert_int_equal(bm_write(ds, 0, "x", 1), BM_EREADONLY);
	assert_int_equal(bm_commit(ds, NULL), BM_EREADONLY);
	assert_non_null(strstr(bm_last_error(ds), url));
	bm_close(ds);
}

static int write_to_flat_mapping(void *arg)
{
	const char *url = arg;
	bm_dataset *ds;
	bm_mapping *m;
	void *addr;

	if (bm_open(&ds, url, NULL) < 0 || bm_map(ds, 0, 0, &addr, &m) < 0)
		return 1;
	((volatile char *)addr)[10] = 'w';
	return 0; /* not reached: SIGBUS */
}

static void a_write_to_a_flat_mapping_gets_sigbus(void **state)
{
	struct tc_store *s = with_object(state);
	char url[512], *err;

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	int status = tc_child(write_to_flat_mapping, url, &err);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
	assert_non_null(strstr(err, url));
	assert_non_null(strstr(err, "read-only"));
	free(err);
	/* The object is unchanged. */
	bm_dataset *ds = tc_open_as_given(url, 0);
	unsigned char *got = tc_read_mapped(ds), *data = ts_pattern(SIZE, 11);
	assert_memory_equal(got, data, SIZE);
	bm_close(ds);
	free(got);
	free(data);
}

/* Opens url with blksize (0: the default) and connections, maps it. */
static bm_dataset *open_mapped(const char *url, size_t blksize, int connections, unsigned char **addr,
			       bm_mapping **m)
{
	struct bm_options o;
	bm_dataset *ds;

	tc_options(&o);
	o.blksize = blksize;
	o.connections = connections;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_int_equal(bm_map(ds, 0, 0, (void **)addr, m), 0);
	return ds;
}

static void a_random_miss_on_a_flat_object_fetches_one_small_block(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(SIZE, 11), *addr;
	char url[512];
	struct bm_stats st;
	bm_mapping *m;

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	/* 16 KiB by default, the caller's block size if it sets one. */
	static const size_t sizes[] = { 0, 65536 };
	for (size_t i = 0; i < 2; i++) {
		size_t bs = sizes[i] ? sizes[i] : FLAT_BS;
		bm_dataset *ds = open_mapped(url, sizes[i], 8, &addr, &m);
		assert_int_equal(bm_blksize(ds), bs);
		assert_int_equal(addr[MiB + 5], data[MiB + 5]);
		bm_stats(ds, &st);
		assert_int_equal(st.fetched_blocks, 1);
		assert_int_equal(st.fetched_bytes, bs);
		bm_unmap(m);
		bm_close(ds);
	}
	free(data);
}

static double cpu_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A fault's miss polls for its answer only while answers come fast
 * (http.c perform_on): with every answer held 100 ms, 4 misses wait
 * 400 ms and the process spends a small part of it on the CPU, loaded
 * machine or not (polling through the waits would spend about all of
 * it on an idle one). */
static void a_miss_waiting_for_a_slow_server_sleeps_instead_of_polling(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data, *addr;
	char url[512];
	bm_mapping *m;

	tc_require(s, TC_CAN_FAULTS, "it injects no latency");
	data = ts_pattern(SIZE, 11);
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	bm_dataset *ds = open_mapped(url, 0, 2, &addr, &m);
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 100}"), 200);
	double cpu = cpu_seconds();
	/* Far apart and out of order: no read-ahead. */
	static const size_t at[] = { 2 * MiB + 7, MiB / 2 + 1, 3 * MiB / 2 + 5, MiB + 3 };
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(addr[at[i]], data[at[i]]);
	cpu = cpu_seconds() - cpu;
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 0}"), 200);
	assert_true(cpu < 0.1);
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

/* Two faults in a row start read-ahead: the next two blocks are queued at
 * once, and one worker takes both as a run that one Range GET fetches,
 * however many workers there are. */
static void read_ahead_of_a_flat_object_fetches_consecutive_blocks_in_one_get(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data, *addr;
	char url[512];
	struct bm_stats st;
	bm_mapping *m;

	tc_require(s, TC_CAN_COUNT, "counts the GETs");
	data = ts_pattern(SIZE, 11);
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	/* One worker, then 8: the first worker to look takes both queued
	 * blocks (a share of the queue per worker would be one each, two
	 * GETs). */
	static const int conns[] = { 1, 8 };
	for (size_t i = 0; i < 2; i++) {
		bm_dataset *ds = open_mapped(url, 0, conns[i], &addr, &m);
		long gets = tc_store_count(s, "GET");
		assert_int_equal(addr[5], data[5]);
		assert_int_equal(addr[FLAT_BS + 5], data[FLAT_BS + 5]);
		/* Bounded wait for the run (a hang bound, not a timing). */
		for (int k = 0; k < 2000; k++) {
			bm_stats(ds, &st);
			if (st.readahead_blocks >= 2)
				break;
			usleep(10000);
		}
		assert_int_equal(st.readahead_blocks, 2);
		assert_int_equal(st.fetched_bytes, 4 * FLAT_BS);
		/* Block 0 came with the open: 1 fault, 1 run. */
		assert_int_equal(tc_store_count(s, "GET") - gets, 2);
		/* The run's blocks read back right. */
		assert_memory_equal(addr + 2 * FLAT_BS, data + 2 * FLAT_BS, 2 * FLAT_BS);
		bm_stats(ds, &st);
		assert_int_equal(st.cache_misses, 2);
		bm_unmap(m);
		bm_close(ds);
	}
	free(data);
}

/* Opening a flat object is the GET of manifest.json (404) and one Range
 * GET of the object's first block, which gives its size and version (no
 * HEAD); reading that block then costs no request. */
static void a_flat_object_opens_with_one_range_get_that_brings_its_first_block(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data, *addr;
	char url[512];
	struct bm_stats st;
	bm_mapping *m;

	tc_require(s, TC_CAN_COUNT, "counts the requests");
	data = ts_pattern(SIZE, 11);
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	long gets = tc_store_count(s, "GET"), heads = tc_store_count(s, "HEAD");
	bm_dataset *ds = open_mapped(url, 0, 1, &addr, &m);
	assert_int_equal(bm_size(ds), SIZE);
	assert_memory_equal(addr, data, 4096);
	assert_memory_equal(addr + FLAT_BS - 4096, data + FLAT_BS - 4096, 4096);
	assert_int_equal(tc_store_count(s, "GET") - gets, 2);
	assert_int_equal(tc_store_count(s, "HEAD") - heads, 0);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, 1);
	assert_int_equal(st.fetched_bytes, FLAT_BS);
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

/* The open of a URL that may name a flat object sends the manifest's GET
 * and the object's Range GET at once: with every answer held 500 ms, the
 * server sees the second begin before it answered the first (its peak of
 * requests in flight), whichever thread runs first. */
static void a_flat_open_sends_the_manifest_get_and_the_range_get_at_once(void **state)
{
	struct tc_store *s = with_object(state);
	char url[512];

	tc_require(s, TC_CAN_FAULTS | TC_CAN_COUNT, "it injects no latency");
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	long gets = tc_store_count(s, "GET");
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 500}"), 200);
	(void)tc_server_stat(&s->srv, "requests_in_flight_max", NULL); /* a new period */
	bm_dataset *ds = tc_open_as_given(url, 0);
	long peak = tc_server_stat(&s->srv, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 0}"), 200);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), SIZE);
	assert_int_equal(tc_store_count(s, "GET") - gets, 2);
	assert_int_equal(peak, 2);
	bm_close(ds);
}

/* For tc_child: makes every new thread of this process fail
 * (tc_child_refuse_threads, which also picks the SIGSEGV fault engine),
 * then opens the URL arg.  0: a flat object opened; 1: no filter; 2: the
 * open failed; 3: not flat. */
static int open_with_no_thread_allowed(void *arg)
{
	bm_dataset *ds;

	if (tc_child_refuse_threads() < 0)
		return 1;
	if (bm_open(&ds, arg, NULL) < 0) {
		fprintf(stderr, "%s\n", bm_last_error(NULL));
		return 2;
	}
	int flat = bm_is_flat(ds);
	bm_close(ds);
	return flat ? 0 : 3;
}

/* The open sends both GETs from the calling thread: in a process that
 * can make no thread, they still reach the server at once (each held
 * 300 ms, the second begins before the first is answered). */
static void a_flat_open_makes_no_thread_and_still_sends_both_gets_at_once(void **state)
{
	struct tc_store *s = with_object(state);
	char url[512], *err = NULL;

	tc_require(s, TC_CAN_FAULTS | TC_CAN_COUNT, "it injects no latency");
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 300}"), 200);
	(void)tc_server_stat(&s->srv, "requests_in_flight_max", NULL); /* a new period */
	int status = tc_child(open_with_no_thread_allowed, url, &err);
	long peak = tc_server_stat(&s->srv, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-latency-ms\": 0}"), 200);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the open in a process with no new thread: status %#x: %s", status, err ? err : "");
	assert_int_equal(peak, 2);
	free(err);
}

/* The two GETs sent at once are each retried as a GET alone: with a
 * third of the GETs answered 503 and a sixth cut mid-answer, every open of
 * a flat object and of a dataset succeeds (20 retries 1 ms apart) and
 * knows which it opened, and the server saw more GETs than opens asked
 * (the retries). */
static void both_gets_of_an_open_are_retried_through_errors_and_drops(void **state)
{
	struct tc_store *s = with_object(state);
	struct bm_options o;
	char url[512], ds_url[512];
	const int opens = 12;

	tc_require(s, TC_CAN_FAULTS | TC_CAN_COUNT, "it injects no faults");
	unsigned char *data = ts_pattern(FLAT_BS + 7, 44);
	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	tc_put(tc_store_url(ds_url, sizeof(ds_url), s, "/plain/retried"), FLAT_BS, data, FLAT_BS + 7);
	tc_options(&o);
	o.retries = 20;
	long gets = tc_store_count(s, "GET");
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-error-rate\": 0.33, \"fault-drop-rate\": 0.17, "
						"\"fault-method\": \"GET\", \"fault-seed\": 7}"), 200);
	for (int i = 0; i < opens; i++) {
		bm_dataset *ds;
		const char *u = i % 2 ? ds_url : url;
		int rc = bm_open(&ds, u, &o);
		if (rc < 0) {
			(void)ts_set_faults(&s->srv, "{\"fault-error-rate\": 0, \"fault-drop-rate\": 0}");
			fail_msg("open %d of %s: %s", i, u, bm_last_error(NULL));
		}
		assert_int_equal(bm_is_flat(ds), i % 2 == 0);
		assert_int_equal(bm_size(ds), i % 2 ? FLAT_BS + 7 : SIZE);
		bm_close(ds);
	}
	assert_int_equal(ts_set_faults(&s->srv, "{\"fault-error-rate\": 0, \"fault-drop-rate\": 0}"), 200);
	/* The probes the datasets' manifests stopped: counted now, if ever
	 * (the server may read them late), not in a later case's GETs. */
	tc_server_settle(&s->srv);
	assert_true(tc_store_count(s, "GET") - gets > 2 * opens);
	free(data);
}

/* For tc_child: opens the flat object at URL arg and reads 100 bytes of
 * its third block (not the first, which the open brings).  0 when they
 * are the object's, 1 open, 2 read, 3 other bytes. */
static int open_then_read_block_2(void *arg)
{
	unsigned char *want = ts_pattern(SIZE, 11), got[100];
	bm_dataset *ds;

	if (bm_open(&ds, arg, NULL) < 0)
		return 1;
	int64_t n = bm_read(ds, 2 * FLAT_BS + 7, got, sizeof(got));
	bm_close(ds);
	if (n != (int64_t)sizeof(got))
		return 2;
	int same = memcmp(got, want + 2 * FLAT_BS + 7, sizeof(got)) == 0;
	free(want);
	return same ? 0 : 3;
}

/* An open's two GETs go on two connections; the probe's closes once
 * answered, and the manifest's stays for the reads: a process that opens
 * a flat object and reads its third block makes 2 connections, not 3
 * (in a child: no connection of this process's to take). */
static void a_flat_open_leaves_its_manifest_gets_connection_for_the_first_read(void **state)
{
	struct tc_store *s = with_object(state);
	tc_require(s, TC_CAN_COUNT, "counts the connections it accepts");
	char url[512], *err = NULL;

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	long before = tc_server_stat(&s->srv, "connections", "accepted");
	int status = tc_child(open_then_read_block_2, url, &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("open and read in a child: status %#x: %s", status, err ? err : "");
	/* Less this stat's own connection (each makes one). */
	long made = tc_server_stat(&s->srv, "connections", "accepted") - 1 - before;
	if (made != 2)
		fail_msg("an open and a read made %ld connections, 2 expected", made);
	free(err);
}

/* For tc_child: opens and closes the flat object at URL arg 5 times
 * (0, or 1 when an open failed). */
static int open_and_close_5_times(void *arg)
{
	for (int i = 0; i < 5; i++) {
		bm_dataset *ds;
		if (bm_open(&ds, arg, NULL) < 0)
			return 1;
		bm_close(ds);
	}
	return 0;
}

/* The connections made by tc_child(fn, url) at s's server. */
static long connections_of_child(struct tc_store *s, int (*fn)(void *), char *url)
{
	char *err = NULL;
	long before = tc_server_stat(&s->srv, "connections", "accepted");
	int status = tc_child(fn, url, &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("in a child: status %#x: %s", status, err ? err : "");
	free(err);
	/* Less this stat's own connection (each makes one). */
	return tc_server_stat(&s->srv, "connections", "accepted") - 1 - before;
}

/* A closed handle's idle connections (its manifest GET's, and the probe's
 * once answered whole) are parked for the next handle of the process:
 * 5 opens and closes make the first open's 2 connections, not 10 (2
 * more allowed, for a machine so loaded that a park's time runs out). */
static void closed_handles_connections_serve_the_next_opens(void **state)
{
	struct tc_store *s = with_object(state);
	tc_require(s, TC_CAN_COUNT, "counts the connections it accepts");
	char url[512];

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	long made = connections_of_child(s, open_and_close_5_times, url);
	if (made < 2 || made > 4)
		fail_msg("5 opens and closes made %ld connections, 2 expected", made);
}

/* A child made by fork never uses the connections its parent parked
 * (both would talk on one socket): after this process opened and closed
 * the object, a child's open and read still make their own 2. */
static void a_child_after_fork_makes_its_own_connections_not_its_parents(void **state)
{
	struct tc_store *s = with_object(state);
	tc_require(s, TC_CAN_COUNT, "counts the connections it accepts");
	char url[512];

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	bm_close(tc_open_as_given(url, 0)); /* parks its 2 connections */
	long made = connections_of_child(s, open_then_read_block_2, url);
	if (made != 2)
		fail_msg("a child's open and read made %ld connections, 2 expected", made);
	bm_close(tc_open_as_given(url, 0)); /* the parent's parked ones still serve it */
}

/* A dataset's open sends the same two GETs; the manifest wins even where
 * an object has the dataset's name (S3 and blkmap-server allow both), and
 * a URL ending in '/' (a prefix, never an object) costs the manifest's
 * GET alone.  The manifest's answer cancels the probe: on a loaded
 * machine it may come before the probe's connection is even made, and
 * the server then sees one GET, not two. */
static void a_dataset_opens_as_before_beside_the_probe_of_its_name(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(3 * FLAT_BS + 5, 41), *obj = ts_pattern(1000, 42), *got;
	char url[512], slash[520];

	tc_store_url(url, sizeof(url), s, "/plain/both");
	tc_put(url, FLAT_BS, data, 3 * FLAT_BS + 5);
	/* A file where a directory is (nginx, Apache): refused; the test
	 * then pins only the rest. */
	long put = tc_store_put(s, "/plain/both", obj, 1000);
	long gets = tc_store_count(s, "GET");
	bm_dataset *ds = tc_open_as_given(url, 0);
	assert_false(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), 3 * FLAT_BS + 5);
	if (gets >= 0) {
		long n = tc_store_count(s, "GET") - gets;
		assert_in_range(n, 1, 2);
	}
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, 3 * FLAT_BS + 5);
	free(got);
	bm_close(ds);
	/* The probe the manifest's answer stopped may still be unread by
	 * the server, then counted among the next open's GETs (2 for 1):
	 * counted now, if ever. */
	if (gets >= 0)
		tc_server_settle(&s->srv);
	snprintf(slash, sizeof(slash), "%s/", url);
	gets = tc_store_count(s, "GET");
	ds = tc_open_as_given(slash, 0);
	assert_false(bm_is_flat(ds));
	if (gets >= 0)
		assert_int_equal(tc_store_count(s, "GET") - gets, 1);
	bm_close(ds);
	if (put / 100 != 2)
		fprintf(stderr, "%s refused an object beside the dataset (HTTP %ld)\n", s->kind->name, put);
	free(data);
	free(obj);
}

/* The probe of a dataset's name meets a directory on nginx and Apache:
 * a redirect to the same path with '/', which neither writes to its error
 * log (a flat object's manifest GET does on nginx: docs/client.md). */
static void a_dataset_open_leaves_no_line_in_the_error_log(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], log[600];
	struct stat sb;

	snprintf(log, sizeof(log), "%s/error.log", s->dir ? s->dir : "");
	if (s->dir == NULL || stat(log, &sb) < 0) {
		fprintf(stderr, "skipped on %s: no error log\n", s->kind->name);
		skip();
	}
	unsigned char *data = ts_pattern(FLAT_BS, 43);
	tc_store_url(url, sizeof(url), s, "/quiet/ds");
	tc_put(url, FLAT_BS, data, FLAT_BS);
	assert_int_equal(stat(log, &sb), 0);
	off_t before = sb.st_size;
	bm_close(tc_open_as_given(url, 0));
	assert_int_equal(stat(log, &sb), 0);
	if (sb.st_size != before) {
		FILE *f = fopen(log, "r");
		char line[1024] = "";
		if (f && fseeko(f, before, SEEK_SET) == 0 && fgets(line, sizeof(line), f) == NULL)
			line[0] = '\0';
		if (f)
			fclose(f);
		fail_msg("the open wrote to %s: %s", log, line);
	}
	free(data);
}

/* The error log's size, or -1 when the server keeps none the test can see. */
static off_t error_log_size(const struct tc_store *s)
{
	char log[600];
	struct stat sb;

	snprintf(log, sizeof(log), "%s/error.log", s->dir ? s->dir : "");
	return s->dir != NULL && stat(log, &sb) == 0 ? sb.st_size : -1;
}

/* BM_OPEN_FLAT: the caller says the URL is a plain object, so the open
 * asks for no manifest: one Range GET, which brings block 0 and the size,
 * and no 404 for nginx to log. */
static void an_open_as_a_plain_object_sends_one_get_and_asks_for_no_manifest(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(SIZE, 11), buf[4096];
	char url[512];
	struct bm_options o;
	struct bm_stats st;
	bm_dataset *ds;

	tc_store_url(url, sizeof(url), s, "/plain/object.bin");
	tc_options(&o);
	o.flags |= BM_OPEN_FLAT;
	long gets = tc_store_count(s, "GET"), heads = tc_store_count(s, "HEAD");
	off_t log = error_log_size(s);
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), SIZE);
	if (gets >= 0) {
		assert_int_equal(tc_store_count(s, "GET") - gets, 1);
		assert_int_equal(tc_store_count(s, "HEAD") - heads, 0);
	}
	if (log >= 0)
		assert_int_equal(error_log_size(s), log);
	/* Block 0 came with the open: mapped, it costs no GET more. */
	unsigned char *addr;
	bm_mapping *m;
	assert_int_equal(bm_map(ds, 0, 0, (void **)&addr, &m), 0);
	assert_memory_equal(addr + 100, data + 100, 4096);
	bm_stats(ds, &st);
	assert_int_equal(st.fetched_blocks, 1);
	assert_int_equal(st.fetched_bytes, FLAT_BS);
	if (gets >= 0)
		assert_int_equal(tc_store_count(s, "GET") - gets, 1);
	assert_int_equal(bm_read(ds, SIZE - 4096, buf, sizeof(buf)), sizeof(buf));
	assert_memory_equal(buf, data + SIZE - 4096, sizeof(buf));
	bm_unmap(m);
	bm_close(ds);
	free(data);
}

/* Opened as a plain object, a URL with no object (a dataset's name is
 * none: its manifest is not looked for) fails with one line naming it;
 * BM_OPEN_FLAT with what only a dataset has is refused before any
 * request. */
static void an_open_as_a_plain_object_of_no_object_or_with_dataset_options_fails(void **state)
{
	struct tc_store *s = with_object(state);
	unsigned char *data = ts_pattern(FLAT_BS, 44);
	char url[512], ds_url[512];
	struct bm_options o;
	bm_dataset *ds = NULL;

	tc_store_url(url, sizeof(url), s, "/plain/nothing-here.bin");
	tc_store_url(ds_url, sizeof(ds_url), s, "/plain/flagged-ds");
	tc_put(ds_url, FLAT_BS, data, FLAT_BS);
	tc_options(&o);
	o.flags |= BM_OPEN_FLAT;
	assert_int_equal(bm_open(&ds, url, &o), BM_ENOTFOUND);
	assert_null(ds);
	assert_non_null(strstr(bm_last_error(NULL), "no object there (opened as a plain object)"));
	assert_non_null(strstr(bm_last_error(NULL), "nothing-here.bin"));
	assert_int_equal(bm_open(&ds, ds_url, &o), BM_ENOTFOUND);
	assert_null(ds);
	long gets = tc_store_count(s, "GET");
	const int bad[] = { 0, 1, 2 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tc_options(&o);
		o.flags |= BM_OPEN_FLAT;
		if (bad[i] == 0)
			o.flags |= BM_OPEN_CREATE;
		else if (bad[i] == 1)
			o.generation = 1;
		else
			o.tag = "v1";
		assert_int_equal(bm_open(&ds, url, &o), BM_EINVAL);
		assert_null(ds);
		assert_non_null(strstr(bm_last_error(NULL), "a plain object (BM_OPEN_FLAT) has no generation"));
	}
	if (gets >= 0)
		assert_int_equal(tc_store_count(s, "GET") - gets, 0);
	free(data);
}

/* An object shorter than a block answers the open's Range GET with the
 * bytes it has; an empty one with 416: both open, at their size. */
static void flat_objects_shorter_than_a_block_or_empty_open_at_their_size(void **state)
{
	struct tc_store *s = tc_store_of(state);
	unsigned char *data = ts_pattern(100, 31), *got;
	char url[512];

	assert_int_equal(tc_store_put(s, "/plain/short.bin", data, 100) / 100, 2);
	assert_int_equal(tc_store_put(s, "/plain/empty.bin", "", 0) / 100, 2);
	bm_dataset *ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/short.bin"), 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), 100);
	got = tc_read_mapped(ds);
	assert_memory_equal(got, data, 100);
	free(got);
	bm_close(ds);
	ds = tc_open_as_given(tc_store_url(url, sizeof(url), s, "/plain/empty.bin"), 0);
	assert_true(bm_is_flat(ds));
	assert_int_equal(bm_size(ds), 0);
	bm_close(ds);
	free(data);
}

struct change {
	struct tc_store *s;
	const char *path;
	char url[512];
};

/* Loads block 0, replaces the object on the server, then reads block 2. */
static int read_across_a_change(void *arg)
{
	struct change *c = arg;
	bm_dataset *ds;
	bm_mapping *m;
	void *addr;
	unsigned char *v2 = ts_pattern(SIZE, 12);

	if (bm_open(&ds, c->url, NULL) < 0 || bm_map(ds, 0, 0, &addr, &m) < 0)
		return 1;
	volatile unsigned char x = ((unsigned char *)addr)[0];
	(void)x;
	if (tc_store_put(c->s, c->path, v2, SIZE) / 100 != 2)
		return 2;
	x = ((volatile unsigned char *)addr)[2 * MiB]; /* not loaded yet */
	return 3; /* not reached: SIGBUS */
}

static void a_flat_object_changed_while_mapped_fails_instead_of_mixing(void **state)
{
	struct change c = { .s = tc_store_of(state), .path = "/plain/changing.bin" };
	unsigned char *v1 = ts_pattern(SIZE, 11), *v2 = ts_pattern(SIZE, 12);
	char *err;

	assert_int_equal(tc_store_put(c.s, c.path, v1, SIZE) / 100, 2);
	/* nginx's ETag and Last-Modified count whole seconds: a change of the
	 * same size within the second of the last one would not show there
	 * (docs/FORMAT.md, "Servers").  The new version comes in the next
	 * second (at most one second from now). */
	for (time_t t = time(NULL); time(NULL) <= t;)
		usleep(10000);
	tc_store_url(c.url, sizeof(c.url), c.s, c.path);
	int status = tc_child(read_across_a_change, &c, &err);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
	assert_non_null(strstr(err, c.url));
	assert_non_null(strstr(err, "changed"));
	free(err);
	/* A fresh mapping shows the new version whole. */
	assert_true(tc_object_equals(c.url, v2, SIZE));
	free(v1);
	free(v2);
}

/* A file put in a WebDAV server's document root by other means than
 * PUT (there for a while, or just written) maps the same. */
static void a_file_in_the_document_root_maps_as_a_flat_object(void **state)
{
	struct tc_store *s = tc_store_of(state);
	size_t size = 1536 * 1024 + 7;
	char path[1024], url[512];

	if (s->docroot[0] == '\0') {
		fprintf(stderr, "skipped on %s: it has no document root\n", s->kind->name);
		skip();
	}
	unsigned char *data = ts_pattern(size, 53);
	snprintf(path, sizeof(path), "%s/plain.bin", s->docroot);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, size, f), size);
	fclose(f);
	tc_store_url(url, sizeof(url), s, "/plain.bin");
	bm_dataset *ds = tc_open_as_given(url, 0);
	assert_true(bm_is_flat(ds));
	bm_close(ds);
	assert_true(tc_object_equals(url, data, size));
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_plain_object_maps_read_only_through_range_gets),
		cmocka_unit_test(a_random_miss_on_a_flat_object_fetches_one_small_block),
		cmocka_unit_test(a_miss_waiting_for_a_slow_server_sleeps_instead_of_polling),
		cmocka_unit_test(read_ahead_of_a_flat_object_fetches_consecutive_blocks_in_one_get),
		cmocka_unit_test(a_flat_object_opens_with_one_range_get_that_brings_its_first_block),
		cmocka_unit_test(a_flat_open_sends_the_manifest_get_and_the_range_get_at_once),
		cmocka_unit_test(a_flat_open_makes_no_thread_and_still_sends_both_gets_at_once),
		cmocka_unit_test(both_gets_of_an_open_are_retried_through_errors_and_drops),
		cmocka_unit_test(a_flat_open_leaves_its_manifest_gets_connection_for_the_first_read),
		cmocka_unit_test(closed_handles_connections_serve_the_next_opens),
		cmocka_unit_test(a_child_after_fork_makes_its_own_connections_not_its_parents),
		cmocka_unit_test(a_dataset_opens_as_before_beside_the_probe_of_its_name),
		cmocka_unit_test(a_dataset_open_leaves_no_line_in_the_error_log),
		cmocka_unit_test(flat_objects_shorter_than_a_block_or_empty_open_at_their_size),
		cmocka_unit_test(an_open_as_a_plain_object_sends_one_get_and_asks_for_no_manifest),
		cmocka_unit_test(an_open_as_a_plain_object_of_no_object_or_with_dataset_options_fails),
		cmocka_unit_test(an_open_and_a_read_make_no_page_cache_until_the_first_mapping),
		cmocka_unit_test(a_small_bm_read_of_a_flat_object_fetches_only_the_bytes_it_returns),
		cmocka_unit_test(committing_or_writing_a_flat_object_is_read_only),
		cmocka_unit_test(a_write_to_a_flat_mapping_gets_sigbus),
		cmocka_unit_test(a_flat_object_changed_while_mapped_fails_instead_of_mixing),
		cmocka_unit_test(a_file_in_the_document_root_maps_as_a_flat_object),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
