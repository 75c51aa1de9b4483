/* tests/test_store_http.c — the store interface (client/store.h) of the
 * HTTP backend against a real server, one program per kind (TC_KIND;
 * client.mk): the guarantees it states for the server it talks to, what a
 * conditional put does there (refused, or ignored where the server ignores
 * it), a swap that replaces only the version it names, racing swaps of
 * one version with one winner, Apache's claims, 404 as
 * BM_ENOTFOUND, ranges, keys in collections that do not exist yet, and
 * the listing where the server has one.  The kind "rgw" runs the same
 * tests through the S3 backend (store_s3.c).
 */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"
#include "rgw_util.h"
#include "../client/store.h"

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

/* What each kind of server is known to guarantee (docs/FORMAT.md,
 * "Servers"). */
static unsigned expected_caps(const char *kind)
{
	if (strcmp(kind, "blkmap-server") == 0)
		return BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH | BM_CAP_STRONG_ETAG | BM_CAP_LIST;
	if (strcmp(kind, "apache") == 0)
		return BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH | BM_CAP_LIST;
	if (strcmp(kind, "rgw") == 0) /* the S3 backend, store_s3.c */
		return BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH | BM_CAP_STRONG_ETAG | BM_CAP_LIST;
	return 0; /* nginx */
}

/* A store for URL PATH on the test's server; a first HEAD lets it learn
 * which server it talks to. */
static struct bm_store *open_store(struct tc_store *st, const char *path)
{
	struct bm_store_opts o = { .connect_timeout_ms = 5000, .timeout_ms = 20000, .retry_base_ms = 1,
				   .retries = 10, .connections = 4 };
	struct bm_store *s;
	struct bm_version v;
	char url[512], msg[512];

	tc_store_url(url, sizeof(url), st, path);
	if (bm_store_open(&s, url, &o, msg, sizeof(msg)) != 0)
		fail_msg("bm_store_open %s: %s", url, msg);
	assert_int_equal(bm_store_head(s, "none", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	return s;
}

static char *get(struct bm_store *s, const char *key, size_t *lenp, struct bm_version *v)
{
	char msg[512], *buf;
	int rc = bm_store_get_all(s, key, 1 << 20, &buf, lenp, v, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("get %s: %d %s", key, rc, msg);
	return buf;
}

static void the_store_states_what_the_server_guarantees(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct bm_store *s = open_store(st, "/caps");

	assert_int_equal(bm_store_caps(s), expected_caps(st->kind->name));
	bm_store_close(s);
}

static void missing_objects_are_not_found(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/missing");
	struct bm_version v;
	char msg[512], *buf;
	size_t len;

	assert_int_equal(bm_store_head(s, "a/b", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_store_get_all(s, "a/b", 100, &buf, &len, &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_non_null(strstr(msg, "/missing/a/b"));
	bm_store_close(s);
}

static void keys_in_collections_not_made_yet_are_stored(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/deep/er");
	char msg[512], *buf;
	size_t len;

	assert_int_equal(bm_store_put(s, "one/two/three", "deep", 4, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "one/two/four", "deeper", 6, NULL, NULL, msg, sizeof(msg)), 0);
	buf = get(s, "one/two/three", &len, NULL);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "deep", 4);
	free(buf);
	assert_int_equal(bm_store_delete(s, "one/two/three", msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_delete(s, "one/two/three", msg, sizeof(msg)), BM_ENOTFOUND);
	bm_store_close(s);
}

static void a_create_only_put_refuses_an_existing_object_where_the_server_can(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/excl");
	struct bm_put once = { .cond = BM_PUT_IF_NONE }, swap_once = { .cond = BM_PUT_IF_NONE, .swap = true };
	char msg[512], *buf;
	size_t len;

	for (int swap = 0; swap < 2; swap++) {
		const char *key = swap ? "k-swap" : "k";
		const struct bm_put *p = swap ? &swap_once : &once;
		assert_int_equal(bm_store_put(s, key, "first", 5, p, NULL, msg, sizeof(msg)), 0);
		int rc = bm_store_put(s, key, "second", 6, p, NULL, msg, sizeof(msg));
		buf = get(s, key, &len, NULL);
		if (bm_store_caps(s) & BM_CAP_CREATE_EXCL) {
			assert_int_equal(rc, BM_ECONFLICT);
			assert_int_equal(len, 5); /* untouched */
		} else {
			assert_int_equal(rc, 0); /* ignored: the last writer wins */
			assert_int_equal(len, 6);
		}
		free(buf);
	}
	bm_store_close(s);
}

static void a_swap_replaces_only_the_version_it_names(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/swap");
	struct bm_version v1, v2;
	char msg[512], *buf;
	size_t len;

	assert_int_equal(bm_store_put(s, "m", "version 1", 9, NULL, NULL, msg, sizeof(msg)), 0);
	free(get(s, "m", &len, &v1));
	struct bm_put p = { .cond = BM_PUT_IF_MATCH, .etag = v1.etag, .was = "version 1", .was_len = 9,
			    .swap = true };
	/* Right away: the ETag may still be a weak one (Apache). */
	int rc = bm_store_put(s, "m", "version 2", 9, &p, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("swap from version 1: %s", msg);
	free(get(s, "m", &len, &v2));
	/* Version 1 is gone: a swap naming it again must not replace 2. */
	rc = bm_store_put(s, "m", "version 3", 9, &p, NULL, msg, sizeof(msg));
	buf = get(s, "m", &len, NULL);
	if (bm_store_caps(s) & BM_CAP_REPLACE_MATCH) {
		assert_int_equal(rc, BM_ECONFLICT);
		assert_memory_equal(buf, "version 2", 9);
	} else {
		assert_int_equal(rc, 0);
		assert_memory_equal(buf, "version 3", 9);
	}
	free(buf);
	bm_store_close(s);
}

/* Racers swapping one version at once (Apache: under claims). */
#define RACERS 8
#define RACE_ROUNDS 25

struct racer {
	struct bm_store *s;
	const struct bm_put *p;
	char body[32];
	pthread_barrier_t *go;
	int rc;
	char msg[512];
};

static void *race_swap(void *arg)
{
	struct racer *r = arg;

	pthread_barrier_wait(r->go);
	r->rc = bm_store_put(r->s, "m", r->body, strlen(r->body), r->p, NULL, r->msg, sizeof(r->msg));
	return NULL;
}

static void racing_swaps_of_one_version_have_exactly_one_winner(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct bm_store *s = open_store(st, "/race");
	char msg[512], *cur;
	size_t len;

	if (!(bm_store_caps(s) & BM_CAP_REPLACE_MATCH)) {
		bm_store_close(s);
		fprintf(stderr, "skipped on %s: it ignores If-Match\n", st->kind->name);
		skip();
	}
	assert_int_equal(bm_store_put(s, "m", "round 0", 7, NULL, NULL, msg, sizeof(msg)), 0);
	for (int round = 1; round <= RACE_ROUNDS; round++) {
		struct racer r[RACERS];
		pthread_t t[RACERS];
		pthread_barrier_t go;
		struct bm_version v;
		int won = -1;

		cur = get(s, "m", &len, &v);
		struct bm_put p = { .cond = BM_PUT_IF_MATCH, .etag = v.etag, .was = cur, .was_len = len,
				    .swap = true };
		pthread_barrier_init(&go, NULL, RACERS);
		for (int i = 0; i < RACERS; i++) {
			r[i] = (struct racer){ .s = s, .p = &p, .go = &go };
			snprintf(r[i].body, sizeof(r[i].body), "round %d by %d", round, i);
			pthread_create(&t[i], NULL, race_swap, &r[i]);
		}
		for (int i = 0; i < RACERS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		for (int i = 0; i < RACERS; i++) {
			if (r[i].rc == 0 && won >= 0)
				fail_msg("round %d: writers %d and %d both replaced the same version", round, won, i);
			if (r[i].rc == 0)
				won = i;
			else if (r[i].rc != BM_ECONFLICT)
				fail_msg("round %d, writer %d: %d %s", round, i, r[i].rc, r[i].msg);
		}
		if (won < 0)
			fail_msg("round %d: no writer won", round);
		free(cur);
		cur = get(s, "m", &len, NULL);
		assert_int_equal(len, strlen(r[won].body));
		assert_memory_equal(cur, r[won].body, len);
		free(cur);
	}
	bm_store_close(s);
}

/* Apache: the claim of a writer that died before its swap holds the
 * version up for 60 s by the server's clock, then is passed over. */
static void a_claim_left_by_a_dead_writer_holds_swaps_up_until_it_is_stale(void **state)
{
	struct tc_store *st = tc_store_of(state);
	char msg[512], sum[BM_SUM_HEX + 1], dir[1024], *buf;
	struct bm_version v;
	size_t len;

	if (strcmp(st->kind->name, "apache") != 0) {
		fprintf(stderr, "skipped on %s: it swaps without claims\n", st->kind->name);
		skip();
	}
	struct bm_store *s = open_store(st, "/claim");
	assert_int_equal(bm_store_put(s, "m", "version 1", 9, NULL, NULL, msg, sizeof(msg)), 0);
	free(get(s, "m", &len, &v));
	bm_sum_hex("version 1", 9, sum);
	snprintf(dir, sizeof(dir), "%s/claim/.blkmap-claim-%s-0", st->docroot, sum);
	assert_int_equal(mkdir(dir, 0777), 0);
	struct bm_put p = { .cond = BM_PUT_IF_MATCH, .etag = v.etag, .was = "version 1", .was_len = 9,
			    .swap = true };
	assert_int_equal(bm_store_put(s, "m", "version 2", 9, &p, NULL, msg, sizeof(msg)), BM_ECONFLICT);
	assert_non_null(strstr(msg, "another writer is replacing this version"));
	buf = get(s, "m", &len, NULL);
	assert_memory_equal(buf, "version 1", 9);
	free(buf);
	/* Made two minutes ago: its writer is taken for dead. */
	struct timeval old[2];
	gettimeofday(&old[0], NULL);
	old[0].tv_sec -= 120;
	old[1] = old[0];
	assert_int_equal(utimes(dir, old), 0);
	int rc = bm_store_put(s, "m", "version 2", 9, &p, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("swap past a stale claim: %s", msg);
	buf = get(s, "m", &len, NULL);
	assert_memory_equal(buf, "version 2", 9);
	free(buf);
	/* The claim taken instead (k = 1) was dropped after the swap. */
	snprintf(dir, sizeof(dir), "%s/claim/.blkmap-claim-%s-1", st->docroot, sum);
	assert_int_equal(access(dir, F_OK), -1);
	bm_store_close(s);
}

struct collect {
	char buf[64];
	size_t len;
};

static int collect(void *arg, uint64_t off, const void *data, size_t len)
{
	struct collect *c = arg;
	if (off + len > sizeof(c->buf))
		return -1;
	memcpy(c->buf + off, data, len);
	c->len = (size_t)off + len;
	return 0;
}

static void a_range_get_gives_exactly_the_bytes_asked(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/range");
	struct collect c = { .len = 0 };
	struct bm_get g = { .range = true, .off = 10, .len = 6, .sink = collect, .sink_arg = &c };
	char msg[512];

	assert_int_equal(bm_store_put(s, "r", "0123456789abcdefghij", 20, NULL, NULL, msg, sizeof(msg)), 0);
	if (bm_store_get(s, "r", &g, msg, sizeof(msg)) != 0)
		fail_msg("range get: %s", msg);
	assert_int_equal(c.len, 6);
	assert_memory_equal(c.buf, "abcdef", 6);
	assert_int_equal(g.got, 6);
	bm_store_close(s);
}

/* A store's connections are close-on-exec, as the library's other
 * descriptors: a program the process starts gets none of them (it would
 * keep them open at the server while it runs).  Every TCP socket of this
 * process connected to the server's port after a GET has FD_CLOEXEC, and
 * there is one. */
static void a_stores_connections_are_not_passed_to_programs_it_starts(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct bm_store *s = open_store(st, "/cloexec");
	const char *server = st->rgw ? st->rgw->endpoint : st->srv.url; /* S3: its endpoint */
	const char *colon = strrchr(server, ':');
	int port = colon ? atoi(colon + 1) : 0, found = 0;
	char msg[512];
	size_t len;

	assert_true(port > 0);
	assert_int_equal(bm_store_put(s, "k", "x", 1, NULL, NULL, msg, sizeof(msg)), 0);
	free(get(s, "k", &len, NULL));
	for (int fd = 0; fd < 1024; fd++) {
		struct sockaddr_storage peer;
		socklen_t n = sizeof(peer);
		if (getpeername(fd, (struct sockaddr *)&peer, &n) < 0)
			continue;
		int p = peer.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&peer)->sin_port)
			: peer.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&peer)->sin6_port) : -1;
		if (p != port)
			continue;
		found++;
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			fail_msg("descriptor %d, connected to the server, is passed to programs the process starts",
				 fd);
	}
	assert_true(found > 0);
	bm_store_close(s);
}

/* http.c keeps a connection's options from one GET to the next and
 * starts afresh for any other method: on one connection, a GET after a
 * HEAD still has its body, a GET after a PUT sends none, a range GET after
 * a whole one asks only its range, and a 404 changes nothing for the next. */
static void one_connection_serves_each_method_as_its_own_after_any_other(void **state)
{
	struct tc_store *st = tc_store_of(state);
	struct bm_store_opts o = { .connect_timeout_ms = 5000, .timeout_ms = 20000, .retry_base_ms = 1,
				   .retries = 10, .connections = 1 };
	struct bm_store *s;
	struct bm_version v;
	struct collect c = { .len = 0 };
	char url[512], msg[512], *buf;
	size_t len;

	tc_store_url(url, sizeof(url), st, "/reuse");
	if (bm_store_open(&s, url, &o, msg, sizeof(msg)) != 0)
		fail_msg("bm_store_open %s: %s", url, msg);
	/* Learns the server (open_store's first HEAD). */
	assert_int_equal(bm_store_head(s, "none", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_store_put(s, "a", "0123456789", 10, NULL, NULL, msg, sizeof(msg)), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(bm_store_head(s, "a", &v, msg, sizeof(msg)), 0);
		assert_int_equal(v.size, 10);
		buf = get(s, "a", &len, NULL); /* after a HEAD */
		assert_int_equal(len, 10);
		assert_memory_equal(buf, "0123456789", 10);
		free(buf);
		struct bm_get g = { .range = true, .off = 2, .len = 3, .sink = collect, .sink_arg = &c };
		if (bm_store_get(s, "a", &g, msg, sizeof(msg)) != 0) /* after a whole GET */
			fail_msg("range get: %s", msg);
		assert_int_equal(c.len, 3);
		assert_memory_equal(c.buf, "234", 3);
		buf = get(s, "a", &len, NULL); /* after a range GET */
		assert_int_equal(len, 10);
		free(buf);
		assert_int_equal(bm_store_get_all(s, "none", 64, &buf, &len, NULL, msg, sizeof(msg)),
				 BM_ENOTFOUND);
		assert_int_equal(bm_store_put(s, "b", "xyz", 3, NULL, NULL, msg, sizeof(msg)), 0);
		buf = get(s, "b", &len, NULL); /* after a PUT */
		assert_int_equal(len, 3);
		assert_memory_equal(buf, "xyz", 3);
		free(buf);
		assert_int_equal(bm_store_delete(s, "b", msg, sizeof(msg)), 0);
		assert_int_equal(bm_store_get_all(s, "b", 64, &buf, &len, NULL, msg, sizeof(msg)), BM_ENOTFOUND);
	}
	bm_store_close(s);
}

static void a_listing_names_the_keys_under_a_prefix(void **state)
{
	struct bm_store *s = open_store(tc_store_of(state), "/list");
	struct bm_list page;
	char msg[512];

	if (!(bm_store_caps(s) & BM_CAP_LIST)) {
		assert_int_equal(bm_store_list(s, "gen/", NULL, &page, msg, sizeof(msg)), BM_EINVAL);
		bm_store_close(s);
		return;
	}
	assert_int_equal(bm_store_put(s, "gen/1.json", "1", 1, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "gen/2.json", "22", 2, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "other", "x", 1, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(s, "blocks/ab/c", "abc", 3, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_list(s, "gen/", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 2);
	assert_string_equal(page.entries[0].key, "gen/1.json");
	assert_int_equal(page.entries[1].size, 2);
	assert_int_equal(bm_key_gen_parse(page.entries[1].key), 2);
	assert_null(page.next);
	bm_list_free(&page);
	/* A prefix that is not a whole collection; keys deeper down. */
	assert_int_equal(bm_store_list(s, "blocks/a", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 1);
	assert_string_equal(page.entries[0].key, "blocks/ab/c");
	assert_int_equal(page.entries[0].size, 3);
	bm_list_free(&page);
	assert_int_equal(bm_store_list(s, "nothing/", NULL, &page, msg, sizeof(msg)), 0);
	assert_int_equal(page.n, 0);
	bm_list_free(&page);
	bm_store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(the_store_states_what_the_server_guarantees),
		cmocka_unit_test(missing_objects_are_not_found),
		cmocka_unit_test(keys_in_collections_not_made_yet_are_stored),
		cmocka_unit_test(a_create_only_put_refuses_an_existing_object_where_the_server_can),
		cmocka_unit_test(a_swap_replaces_only_the_version_it_names),
		cmocka_unit_test(racing_swaps_of_one_version_have_exactly_one_winner),
		cmocka_unit_test(a_claim_left_by_a_dead_writer_holds_swaps_up_until_it_is_stale),
		cmocka_unit_test(a_range_get_gives_exactly_the_bytes_asked),
		cmocka_unit_test(a_listing_names_the_keys_under_a_prefix),
		cmocka_unit_test(one_connection_serves_each_method_as_its_own_after_any_other),
		cmocka_unit_test(a_stores_connections_are_not_passed_to_programs_it_starts),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
