/* tests/test_server_race.c — blkmap-server under concurrent requests, on
 * both stores: conditional PUTs racing on one key have exactly one winner
 * (what the client's manifest compare-and-swap relies on), and readers of
 * a key being replaced see the old or the new object, never a mix, with
 * reads counted that did overlap a replacement. */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_server_util.h"

#define RACERS 24

static int start_memory(void **state)
{
	const char *args[] = { "--threads", "2", NULL };
	return ts_fixture_memory(state, args);
}

static int start_disk(void **state)
{
	return ts_fixture_disk(state, NULL);
}

struct racer {
	const struct ts_server *srv;
	const char *key, *header;
	pthread_barrier_t *start;
	char body[32];
	long status;
};

static void *race_put(void *arg)
{
	struct racer *r = arg;
	const char *h[] = { r->header, NULL };
	struct ts_resp resp;

	pthread_barrier_wait(r->start);
	ts_request(NULL, r->srv, "PUT", r->key, h, r->body, strlen(r->body),
		   &resp);
	r->status = resp.rc == CURLE_OK ? resp.status : -1;
	ts_resp_free(&resp);
	return NULL;
}

/* Run RACERS conditional PUTs of KEY with HEADER at once; check exactly
 * one got WIN, all others 412, and the stored body is the winner's. */
static void race(void **state, const char *key, const char *header, long win)
{
	struct ts_fixture *f = *state;
	struct racer r[RACERS];
	pthread_t t[RACERS];
	pthread_barrier_t start;
	int winners = 0, winner = -1;
	struct ts_resp resp;

	pthread_barrier_init(&start, NULL, RACERS);
	for (int i = 0; i < RACERS; i++) {
		r[i] = (struct racer){ &f->srv, key, header, &start, "", 0 };
		snprintf(r[i].body, sizeof(r[i].body), "racer %d", i);
		pthread_create(&t[i], NULL, race_put, &r[i]);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < RACERS; i++) {
		if (r[i].status == win) {
			winners++;
			winner = i;
		} else {
			assert_int_equal(r[i].status, 412);
		}
	}
	assert_int_equal(winners, 1);
	ts_request(NULL, &f->srv, "GET", key, NULL, NULL, 0, &resp);
	assert_int_equal(resp.status, 200);
	assert_string_equal(resp.body, r[winner].body);
	ts_resp_free(&resp);
}

static void if_none_match_star_race_has_exactly_one_201(void **state)
{
	char key[32];

	for (int round = 0; round < 4; round++) {
		snprintf(key, sizeof(key), "/race/new-%d", round);
		race(state, key, "If-None-Match: *", 201);
	}
}

static void if_match_race_has_exactly_one_204(void **state)
{
	struct ts_fixture *f = *state;
	char key[32], etag[128], header[160];
	struct ts_resp resp;

	for (int round = 0; round < 4; round++) {
		snprintf(key, sizeof(key), "/race/cas-%d", round);
		assert_int_equal(ts_put(&f->srv, key, "base", 4), 201);
		ts_request(NULL, &f->srv, "HEAD", key, NULL, NULL, 0, &resp);
		assert_non_null(ts_header(&resp, "ETag", etag, sizeof(etag)));
		ts_resp_free(&resp);
		snprintf(header, sizeof(header), "If-Match: %s", etag);
		race(state, key, header, 204);
	}
}

/* Readers of a key that one writer replaces over and over.  A read
 * overlapped a replacement when a PUT started before the GET's answer was
 * in and ended after the GET was sent: with one writer, PUTs end in order,
 * so that is "PUTs started after the GET > PUTs ended before it". */
struct replace_race {
	atomic_int started, ended;  /* PUTs of the writer */
	atomic_int overlaps;        /* reads that overlapped a PUT, all readers */
	atomic_int readers_done;
};

#define OVERLAPS_WANTED 20
#define READS_MAX 400           /* per reader: the bound on the tries */

struct reader {
	const struct ts_server *srv;
	struct replace_race *race;
	const unsigned char *a, *b;
	size_t n;
	int mixed, seen_a, seen_b, reads;
};

static void *read_many(void *arg)
{
	struct reader *r = arg;
	CURL *h = curl_easy_init();
	struct ts_resp resp;

	while (r->reads < READS_MAX &&
	       atomic_load(&r->race->overlaps) < OVERLAPS_WANTED) {
		int ended_before = atomic_load(&r->race->ended);
		ts_request(h, r->srv, "GET", "/race/replaced", NULL, NULL, 0,
			   &resp);
		if (atomic_load(&r->race->started) > ended_before)
			atomic_fetch_add(&r->race->overlaps, 1);
		r->reads++;
		if (resp.rc != CURLE_OK || resp.status != 200 ||
		    resp.len != r->n)
			r->mixed++;
		else if (!memcmp(resp.body, r->a, r->n))
			r->seen_a++;
		else if (!memcmp(resp.body, r->b, r->n))
			r->seen_b++;
		else
			r->mixed++;
		ts_resp_free(&resp);
	}
	curl_easy_cleanup(h);
	atomic_fetch_add(&r->race->readers_done, 1);
	return NULL;
}

/* Every read is the old or the new object, and reads did overlap
 * replacements (OVERLAPS_WANTED of them; the test fails if READS_MAX reads
 * per reader never got there, rather than pass without a race). */
static void readers_see_old_or_new_object_never_a_mix(void **state)
{
	struct ts_fixture *f = *state;
	size_t n = 1 << 20;
	unsigned char *a = ts_pattern(n, 11), *b = ts_pattern(n, 12);
	struct replace_race race = { 0 };
	struct reader r[3];
	pthread_t t[3];
	int bad_puts = 0, reads = 0;

	assert_int_equal(ts_put(&f->srv, "/race/replaced", a, n) / 100, 2);
	for (int i = 0; i < 3; i++) {
		r[i] = (struct reader){ .srv = &f->srv, .race = &race, .a = a, .b = b, .n = n };
		pthread_create(&t[i], NULL, read_many, &r[i]);
	}
	for (int i = 0; atomic_load(&race.readers_done) < 3; i++) {
		atomic_fetch_add(&race.started, 1);
		bad_puts += ts_put(&f->srv, "/race/replaced", i % 2 ? a : b, n) != 204;
		atomic_fetch_add(&race.ended, 1);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(r[i].mixed, 0);
		assert_int_equal(r[i].seen_a + r[i].seen_b, r[i].reads);
		reads += r[i].reads;
	}
	assert_int_equal(bad_puts, 0);
	if (atomic_load(&race.overlaps) < OVERLAPS_WANTED)
		fail_msg("only %d of %d reads overlapped a replacement", atomic_load(&race.overlaps),
			 reads);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(if_none_match_star_race_has_exactly_one_201),
		cmocka_unit_test(if_match_race_has_exactly_one_204),
		cmocka_unit_test(readers_see_old_or_new_object_never_a_mix),
	};

	return ts_run_on_both_stores(tests, sizeof(tests) / sizeof(tests[0]), start_memory, start_disk);
}
