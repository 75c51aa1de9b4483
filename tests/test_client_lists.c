/* tests/test_client_lists.c — the library's two listings on blkmap-server:
 * bm_list_keys (what the wcfs mirror lists directories with) hands every
 * key under a prefix with its size in key order, stops when the callback
 * says so, and fails with one line when the URL is not a store or the
 * server errs; bm_generations lists the kept generations newest first,
 * nothing for a dataset not created yet, and fails naming the listing when
 * the server errs.  The server does not matter: one blkmap-server (memory
 * store, fault injection) for the group.
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client_util.h"

struct seen {
	char keys[16][64];
	uint64_t sizes[16];
	int n, stop_after;
};

static int collect(const char *key, uint64_t size, void *arg)
{
	struct seen *s = arg;

	if (s->n < 16) {
		snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", key);
		s->sizes[s->n] = size;
	}
	s->n++;
	return s->stop_after && s->n >= s->stop_after;
}

static void list_keys_hands_every_key_under_the_prefix_with_its_size_in_order(void **state)
{
	struct ts_server *srv = *state;
	struct seen s = { 0 };
	char url[512];

	assert_int_equal(ts_put(srv, "/lists/a/x/2", "22", 2), 201);
	assert_int_equal(ts_put(srv, "/lists/a/x/1", "1", 1), 201);
	assert_int_equal(ts_put(srv, "/lists/a/y", "333", 3), 201);
	assert_int_equal(ts_put(srv, "/lists/b", "4444", 4), 201);
	tc_url(url, sizeof(url), srv, "/lists/");
	/* opt NULL: the defaults. */
	assert_int_equal(bm_list_keys(url, NULL, "a/", collect, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.keys[0], "a/x/1");
	assert_string_equal(s.keys[1], "a/x/2");
	assert_string_equal(s.keys[2], "a/y");
	assert_int_equal(s.sizes[0], 1);
	assert_int_equal(s.sizes[1], 2);
	assert_int_equal(s.sizes[2], 3);

	/* The callback stops the walk: no more calls, and that is success. */
	struct seen first = { .stop_after = 2 };
	assert_int_equal(bm_list_keys(url, NULL, "", collect, &first), 0);
	assert_int_equal(first.n, 2);
	assert_string_equal(first.keys[0], "a/x/1");

	/* A prefix that matches nothing: no calls. */
	struct seen none = { 0 };
	assert_int_equal(bm_list_keys(url, NULL, "zzz", collect, &none), 0);
	assert_int_equal(none.n, 0);
}

static void list_keys_fails_with_one_line_on_what_is_not_a_store_or_an_erring_server(void **state)
{
	struct ts_server *srv = *state;
	struct bm_options o;
	struct seen s = { 0 };
	char url[512];

	assert_true(bm_list_keys("ftp://example/x", NULL, "", collect, &s) < 0);
	assert_non_null(strstr(bm_last_error(NULL), "ftp://example/x"));
	assert_null(strchr(bm_last_error(NULL), '\n'));

	tc_options(&o);
	o.retries = 1;
	tc_url(url, sizeof(url), srv, "/lists/");
	assert_int_equal(ts_set_faults(srv, "{\"fault-error-rate\": 1, \"fault-method\": \"GET\"}"), 200);
	int rc = bm_list_keys(url, &o, "", collect, &s);
	assert_int_equal(ts_set_faults(srv, "{\"fault-error-rate\": 0, \"fault-method\": \"\"}"), 200);
	assert_true(rc < 0);
	assert_int_equal(s.n, 0);
	assert_non_null(strstr(bm_last_error(NULL), "503"));
	assert_null(strchr(bm_last_error(NULL), '\n'));
}

static void generations_lists_the_kept_ones_newest_first_and_none_before_creation(void **state)
{
	struct ts_server *srv = *state;
	unsigned char *d = ts_pattern(8192, 3);
	struct bm_options o;
	uint64_t *gens, unlooked = 99;
	size_t n;
	char url[512];
	bm_dataset *ds;

	/* Opened to be created: no generation yet. */
	tc_url(url, sizeof(url), srv, "/lists/gens");
	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = 4096;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_int_equal(bm_generations(ds, &gens, &n, &unlooked), 0);
	assert_int_equal(n, 0);
	assert_null(gens);
	assert_int_equal(unlooked, 0);
	bm_close(ds);

	for (int g = 1; g <= 3; g++) {
		d[0] = (unsigned char)g;
		tc_put(url, 4096, d, 8192);
	}
	assert_int_equal(ts_delete(srv, "/lists/gens/gen/2.json"), 204);
	ds = tc_open(url, 0);
	assert_int_equal(bm_generations(ds, &gens, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_int_equal(gens[0], 3);
	assert_int_equal(gens[1], 1);
	free(gens);

	/* The listing fails: the error names it, nothing is returned. */
	assert_int_equal(ts_set_faults(srv, "{\"fault-error-rate\": 1, \"fault-method\": \"GET\"}"), 200);
	int rc = bm_generations(ds, &gens, &n, NULL);
	assert_int_equal(ts_set_faults(srv, "{\"fault-error-rate\": 0, \"fault-method\": \"\"}"), 200);
	assert_true(rc < 0);
	assert_null(gens);
	assert_int_equal(n, 0);
	assert_non_null(strstr(bm_last_error(ds), "503"));
	assert_non_null(strstr(bm_last_error(ds), "/lists/gens/"));
	bm_close(ds);
	free(d);
}

int main(void)
{
	setenv("BLKMAP_WCFS", "off", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(list_keys_hands_every_key_under_the_prefix_with_its_size_in_order),
		cmocka_unit_test(list_keys_fails_with_one_line_on_what_is_not_a_store_or_an_erring_server),
		cmocka_unit_test(generations_lists_the_kept_ones_newest_first_and_none_before_creation),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
