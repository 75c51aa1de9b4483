/* tests/test_server_faults.c — blkmap-server's fault injection and admin
 * endpoints: each fault flag does what it says (503s, cut responses,
 * one flipped byte with headers unchanged, delays, padded PUT and error
 * answers, PUT answers without an ETag), faults limited to one method,
 * the sequence repeats
 * with the same seed, faults change at run time through PUT
 * /_admin/faults, GET /_admin/stats counts what happened, and /_admin/ is
 * an ordinary key without --admin. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_server_util.h"

static void start(struct ts_server *s, const char *a, const char *b,
		  const char *c, const char *d)
{
	const char *args[] = { "--memory", "--admin", a, b, c, d, NULL };
	assert_int_equal(ts_start(s, args), 0);
}

static long fault_count(const struct ts_server *s, const char *name)
{
	json_t *doc = ts_get_json(s, "/_admin/stats");
	long n = json_integer_value(json_object_get(
		json_object_get(doc, "faults"), name));
	json_decref(doc);
	return n;
}

static void error_rate_1_answers_503_and_stores_nothing(void **state)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, "--fault-error-rate", "1", NULL, NULL);
	assert_int_equal(ts_put(&s, "/e", "x", 1), 503);
	ts_request(NULL, &s, "GET", "/e", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 503);
	assert_non_null(strstr(r.body, "injected fault"));
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "error"), 2);
	/* /_admin/ is never faulted, so faults can be turned off */
	assert_int_equal(ts_set_faults(&s, "{\"fault-error-rate\": 0}"), 200);
	ts_request(NULL, &s, "GET", "/e", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);  /* the 503'd PUT stored nothing */
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static void fault_method_limits_faults_to_requests_of_that_method(void **state)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, "--fault-error-rate", "1", "--fault-method", "PUT");
	assert_int_equal(ts_put(&s, "/m", "x", 1), 503);
	ts_request(NULL, &s, "GET", "/m", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404); /* answered, not faulted */
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "error"), 1);
	json_t *doc = ts_get_json(&s, "/_admin/faults");
	assert_string_equal(json_string_value(json_object_get(doc, "fault-method")), "PUT");
	json_decref(doc);
	/* At run time: GET only, then every method again. */
	assert_int_equal(ts_set_faults(&s, "{\"fault-method\": \"GET\"}"), 200);
	assert_int_equal(ts_put(&s, "/m", "x", 1), 201);
	ts_request(NULL, &s, "GET", "/m", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 503);
	ts_resp_free(&r);
	assert_int_equal(ts_set_faults(&s, "{\"fault-method\": \"\"}"), 200);
	assert_int_equal(ts_put(&s, "/m", "y", 1), 503);
	/* Not a method it knows: 400, nothing changes. */
	ts_request(NULL, &s, "PUT", "/_admin/faults", NULL, "{\"fault-method\": \"POST\"}", 24, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "fault-method must be"));
	ts_resp_free(&r);
	assert_int_equal(ts_set_faults(&s, "{\"fault-method\": 1}"), 400);
	assert_int_equal(ts_stop(&s), 0);
}

/* A path makes every fault, the latency included, reach only keys that
 * hold it: the others are answered at once and as they are. */
static void fault_path_limits_every_fault_to_keys_that_hold_it(void **state)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, "--fault-error-rate", "1", "--fault-path", "/blocks/");
	assert_int_equal(ts_put(&s, "/d/manifest.json", "x", 1), 201);
	assert_int_equal(ts_put(&s, "/d/blocks/b1", "x", 1), 503);
	assert_int_equal(fault_count(&s, "error"), 1);
	json_t *doc = ts_get_json(&s, "/_admin/faults");
	assert_string_equal(json_string_value(json_object_get(doc, "fault-path")), "/blocks/");
	json_decref(doc);
	/* At run time: a latency that would outlast the client, on blocks
	 * only; then every key again. */
	assert_int_equal(ts_set_faults(&s, "{\"fault-error-rate\": 0, \"fault-latency-ms\": 600000}"), 200);
	ts_request(NULL, &s, "GET", "/d/manifest.json", NULL, NULL, 0, &r);
	assert_int_equal(r.rc, CURLE_OK);
	assert_int_equal(r.status, 200);
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "latency"), 0);
	ts_timeout_ms = 300;
	ts_request(NULL, &s, "GET", "/d/blocks/b1", NULL, NULL, 0, &r);
	ts_timeout_ms = 60000;
	assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "latency"), 1);
	assert_int_equal(ts_set_faults(&s, "{\"fault-latency-ms\": 0, \"fault-error-rate\": 1, "
					   "\"fault-path\": \"\"}"), 200);
	assert_int_equal(ts_put(&s, "/d/manifest.json", "y", 1), 503);
	/* Not a string, or longer than 255 bytes: 400, nothing changes. */
	assert_int_equal(ts_set_faults(&s, "{\"fault-path\": 1}"), 400);
	char body[400];
	snprintf(body, sizeof(body), "{\"fault-path\": \"%0256d\"}", 0);
	ts_request(NULL, &s, "PUT", "/_admin/faults", NULL, body, strlen(body), &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "fault-path must be"));
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

/* 40 GETs on one connection with error rate 0.5 and SEED: the statuses. */
static void error_sequence(const char *seed, char out[41])
{
	struct ts_server s;
	struct ts_resp r;
	CURL *h = curl_easy_init();

	start(&s, "--fault-error-rate", "0.5", "--fault-seed", seed);
	for (int i = 0; i < 40; i++) {
		ts_request(h, &s, "GET", "/x", NULL, NULL, 0, &r);
		assert_true(r.status == 503 || r.status == 404);
		out[i] = r.status == 503 ? 'E' : '.';
		ts_resp_free(&r);
	}
	out[40] = '\0';
	curl_easy_cleanup(h);
	assert_int_equal(ts_stop(&s), 0);
}

static void error_faults_repeat_with_the_same_seed(void **state)
{
	char a[41], b[41], c[41];

	error_sequence("42", a);
	error_sequence("42", b);
	error_sequence("43", c);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	assert_non_null(strchr(a, 'E'));
	assert_non_null(strchr(a, '.'));
}

static void drop_rate_1_cuts_every_response(void **state)
{
	unsigned char *data = ts_pattern(100000, 9);
	struct ts_server s;
	struct ts_resp r;

	start(&s, NULL, NULL, NULL, NULL);
	assert_int_equal(ts_put(&s, "/d", data, 100000), 201);
	assert_int_equal(ts_put(&s, "/one", "1", 1), 201);
	assert_int_equal(ts_set_faults(&s, "{\"fault-drop-rate\": 1}"), 200);
	static const char *const paths[] = { "/d", "/one", "/missing", "/" };
	for (int i = 0; i < 4; i++) {
		ts_request(NULL, &s, "GET", paths[i], NULL, NULL, 0, &r);
		assert_int_not_equal(r.rc, CURLE_OK);
		ts_resp_free(&r);
	}
	ts_request(NULL, &s, "HEAD", "/d", NULL, NULL, 0, &r);
	assert_int_not_equal(r.rc, CURLE_OK);
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "drop"), 5);
	assert_int_equal(ts_set_faults(&s, "{\"fault-drop-rate\": 0}"), 200);
	ts_request(NULL, &s, "GET", "/d", NULL, NULL, 0, &r);
	assert_int_equal(r.rc, CURLE_OK);
	assert_int_equal(r.len, 100000);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	free(data);
}

static int count_differences(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	int d = 0;

	for (size_t i = 0; i < n; i++)
		d += x[i] != y[i];
	return d;
}

static void corrupt_one(const struct ts_server *s, const unsigned char *data)
{
	char e1[128], e2[128], len[32];
	const char *range[] = { "Range: bytes=100-199", NULL };
	struct ts_resp r;

	assert_int_equal(ts_put(s, "/c", data, 65536), 201);
	ts_request(NULL, s, "HEAD", "/c", NULL, NULL, 0, &r);
	assert_non_null(ts_header(&r, "ETag", e1, sizeof(e1)));
	ts_resp_free(&r);
	assert_int_equal(ts_set_faults(s, "{\"fault-corrupt-rate\": 1}"), 200);
	for (int i = 0; i < 3; i++) {
		ts_request(NULL, s, "GET", "/c", NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.len, 65536);
		assert_int_equal(count_differences(r.body, data, 65536), 1);
		assert_string_equal(ts_header(&r, "ETag", e2, sizeof(e2)), e1);
		assert_string_equal(ts_header(&r, "Content-Length", len,
					      sizeof(len)), "65536");
		ts_resp_free(&r);
	}
	ts_request(NULL, s, "GET", "/c", range, NULL, 0, &r);
	assert_int_equal(r.status, 206);
	assert_int_equal(r.len, 100);
	assert_int_equal(count_differences(r.body, data + 100, 100), 1);
	ts_resp_free(&r);
	assert_int_equal(fault_count(s, "corrupt"), 4);
}

static void corrupt_rate_1_flips_one_byte_headers_unchanged(void **state)
{
	unsigned char *data = ts_pattern(65536, 13);
	char *root = ts_mkdtemp();
	struct ts_server s;
	const char *disk[] = { "--admin", NULL };

	start(&s, NULL, NULL, NULL, NULL);
	corrupt_one(&s, data);
	assert_int_equal(ts_stop(&s), 0);
	snprintf(s.root, sizeof(s.root), "%s", root);
	assert_int_equal(ts_start_disk(&s, disk), 0);
	corrupt_one(&s, data);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
	free(data);
}

static void latency_holds_responses_until_turned_off(void **state)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, "--fault-latency-ms", "600000", NULL, NULL);
	ts_timeout_ms = 300;  /* the client gives up long before 10 minutes */
	ts_request(NULL, &s, "GET", "/x", NULL, NULL, 0, &r);
	ts_timeout_ms = 60000;
	assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
	ts_resp_free(&r);
	assert_int_equal(fault_count(&s, "latency"), 1);
	assert_int_equal(ts_set_faults(&s, "{\"fault-latency-ms\": 0}"), 200);
	ts_request(NULL, &s, "GET", "/x", NULL, NULL, 0, &r);
	assert_int_equal(r.rc, CURLE_OK);
	assert_int_equal(r.status, 404);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Each answer comes no sooner than N ms after its request (the delay runs
 * from the request's end, not from an older cached time), and the server
 * reports N as configured.  How close to N it comes is not asserted (load
 * only makes it later); the server uses precise timers for that. */
static void latency_delays_every_response_by_at_least_n_ms_and_reports_n(void **state)
{
	struct ts_server s;
	struct ts_resp r;
	CURL *h = curl_easy_init();

	start(&s, "--fault-latency-ms", "40", NULL, NULL);
	json_t *doc = ts_get_json(&s, "/_admin/faults");
	assert_int_equal(json_integer_value(json_object_get(doc, "fault-latency-ms")), 40);
	json_decref(doc);
	ts_request(h, &s, "GET", "/x", NULL, NULL, 0, &r);  /* connect first */
	ts_resp_free(&r);
	for (int i = 0; i < 10; i++) {
		int64_t t0 = now_us();
		ts_request(h, &s, "GET", "/x", NULL, NULL, 0, &r);
		int64_t took = now_us() - t0;
		assert_int_equal(r.status, 404);
		ts_resp_free(&r);
		if (took < 40000)
			fail_msg("answer %d came after %lld us, under the 40 ms asked", i,
				 (long long)took);
	}
	assert_int_equal(fault_count(&s, "latency"), 11);
	curl_easy_cleanup(h);
	assert_int_equal(ts_stop(&s), 0);
}

static void pad_lengthens_put_and_error_answers_and_no_etag_drops_put_etags(void **st)
{
	struct ts_server s;
	struct ts_resp r;
	char etag[128];

	start(&s, "--fault-pad-bytes", "100000", "--fault-put-no-etag", NULL);
	ts_request(NULL, &s, "PUT", "/p", NULL, "x", 1, &r);
	assert_int_equal(r.status, 201);
	assert_int_equal(r.len, 100000);
	assert_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	ts_resp_free(&r);
	ts_request(NULL, &s, "PUT", "/p", NULL, "y", 1, &r);
	assert_int_equal(r.status, 200); /* a 204 with a body is a 200 */
	assert_int_equal(r.len, 100000);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/none", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	assert_true(r.len > 100000);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/p", NULL, NULL, 0, &r); /* not padded */
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 1);
	assert_non_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	ts_resp_free(&r);
	json_t *doc = ts_get_json(&s, "/_admin/faults");
	assert_int_equal(json_integer_value(json_object_get(doc, "fault-pad-bytes")), 100000);
	assert_int_equal(json_integer_value(json_object_get(doc, "fault-put-no-etag")), 1);
	json_decref(doc);
	assert_int_equal(ts_set_faults(&s, "{\"fault-pad-bytes\": 0, \"fault-put-no-etag\": 0}"), 200);
	ts_request(NULL, &s, "PUT", "/p", NULL, "z", 1, &r);
	assert_int_equal(r.status, 204);
	assert_non_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	ts_resp_free(&r);
	assert_int_equal(ts_set_faults(&s, "{\"fault-put-no-etag\": 2}"), 400);
	assert_int_equal(ts_stop(&s), 0);
}

static void admin_faults_rejects_bad_bodies_and_reports_current(void **st)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, NULL, NULL, NULL, NULL);
	assert_int_equal(ts_set_faults(&s, "{"), 400);
	assert_int_equal(ts_set_faults(&s, "[1]"), 400);
	assert_int_equal(ts_set_faults(&s, "{\"fault-error-rate\": 2}"), 400);
	ts_request(NULL, &s, "PUT", "/_admin/faults", NULL,
		   "{\"fault-nope\": 1}", 17, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "unknown fault name 'fault-nope'"));
	ts_resp_free(&r);
	/* a rejected body changes nothing, even its valid names */
	assert_int_equal(ts_set_faults(&s, "{\"fault-drop-rate\": 0.5, "
				       "\"fault-seed\": -1}"), 400);
	assert_int_equal(ts_set_faults(&s, "{\"fault-corrupt-rate\": 0.25, "
				       "\"fault-seed\": 7}"), 200);
	json_t *doc = ts_get_json(&s, "/_admin/faults");
	assert_true(json_real_value(json_object_get(doc, "fault-corrupt-rate"))
		    == 0.25);
	assert_true(json_real_value(json_object_get(doc, "fault-drop-rate"))
		    == 0);
	assert_int_equal(json_integer_value(json_object_get(doc,
							    "fault-seed")), 7);
	json_decref(doc);
	assert_int_equal(ts_stop(&s), 0);
}

static long counter(json_t *doc, const char *group, const char *name)
{
	return json_integer_value(json_object_get(json_object_get(doc, group),
						  name));
}

static void admin_stats_counts_requests_statuses_and_bytes(void **state)
{
	struct ts_server s;
	struct ts_resp r;

	start(&s, NULL, NULL, NULL, NULL);
	assert_int_equal(ts_put(&s, "/s", "hello", 5), 201);
	ts_request(NULL, &s, "GET", "/s", NULL, NULL, 0, &r);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/none", NULL, NULL, 0, &r);
	ts_resp_free(&r);
	ts_request(NULL, &s, "HEAD", "/s", NULL, NULL, 0, &r);
	ts_resp_free(&r);
	assert_int_equal(ts_delete(&s, "/s"), 204);
	json_t *doc = ts_get_json(&s, "/_admin/stats");
	assert_int_equal(counter(doc, "requests", "PUT"), 1);
	assert_int_equal(counter(doc, "requests", "GET"), 2);
	assert_int_equal(counter(doc, "requests", "HEAD"), 1);
	assert_int_equal(counter(doc, "requests", "DELETE"), 1);
	assert_int_equal(counter(doc, "responses", "201"), 1);
	assert_int_equal(counter(doc, "responses", "200"), 2);
	assert_int_equal(counter(doc, "responses", "404"), 1);
	assert_int_equal(counter(doc, "responses", "204"), 1);
	assert_true(json_integer_value(json_object_get(doc, "bytes_in")) > 5);
	assert_true(json_integer_value(json_object_get(doc, "bytes_out")) > 5);
	assert_int_equal(counter(doc, "faults", "error"), 0);
	json_decref(doc);
	assert_int_equal(ts_stop(&s), 0);
}

/* A client that takes the head of a 32 MiB answer and leaves: bytes_out
 * counts what was sent (at most what the socket buffers took), not the
 * whole answer that was queued. */
static void admin_stats_bytes_out_counts_bytes_sent_not_queued(void **state)
{
	const size_t size = 32 << 20;
	unsigned char *data = ts_pattern(size, 3);
	struct ts_server s;
	int small = 4096;

	start(&s, NULL, NULL, NULL, NULL);
	assert_int_equal(ts_put(&s, "/big", data, size), 201);
	json_t *doc = ts_get_json(&s, "/_admin/stats");
	json_int_t before = json_integer_value(json_object_get(doc, "bytes_out"));
	json_decref(doc);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(atoi(strrchr(s.url, ':') + 1)) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	const char *req = "GET /big HTTP/1.1\r\nHost: t\r\n\r\n";
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	char head[64];
	assert_true(read(fd, head, sizeof(head)) > 0);
	close(fd);  /* unread bytes: the close is a reset */

	/* Bounded wait (30 s is a hang) for the server to drop it. */
	json_int_t open = -1, out = 0;
	for (int i = 0; i < 3000 && open != 1; i++) {
		doc = ts_get_json(&s, "/_admin/stats");
		open = json_integer_value(json_object_get(json_object_get(doc, "connections"), "open"));
		out = json_integer_value(json_object_get(doc, "bytes_out"));
		json_decref(doc);
		if (open != 1)
			usleep(10000);
	}
	assert_int_equal(ts_stop(&s), 0);  /* first: a failure leaves no server */
	free(data);
	assert_int_equal(open, 1);  /* only the connection asking */
	assert_true(out - before > 0);
	if (out - before >= (json_int_t)size / 2)
		fail_msg("bytes_out grew by %lld for a client that read 64 bytes of %zu",
			 (long long)(out - before), size);
}

static void admin_paths_are_plain_keys_without_admin_flag(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	struct ts_resp r;

	assert_int_equal(ts_start(&s, args), 0);
	ts_request(NULL, &s, "GET", "/_admin/stats", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	ts_resp_free(&r);
	assert_int_equal(ts_set_faults(&s, "{\"fault-error-rate\": 1}"), 201);
	assert_int_equal(ts_put(&s, "/x", "x", 1), 201);  /* no faults */
	assert_int_equal(ts_stop(&s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(error_rate_1_answers_503_and_stores_nothing),
		cmocka_unit_test(error_faults_repeat_with_the_same_seed),
		cmocka_unit_test(fault_method_limits_faults_to_requests_of_that_method),
		cmocka_unit_test(fault_path_limits_every_fault_to_keys_that_hold_it),
		cmocka_unit_test(drop_rate_1_cuts_every_response),
		cmocka_unit_test(corrupt_rate_1_flips_one_byte_headers_unchanged),
		cmocka_unit_test(latency_holds_responses_until_turned_off),
		cmocka_unit_test(latency_delays_every_response_by_at_least_n_ms_and_reports_n),
		cmocka_unit_test(pad_lengthens_put_and_error_answers_and_no_etag_drops_put_etags),
		cmocka_unit_test(admin_faults_rejects_bad_bodies_and_reports_current),
		cmocka_unit_test(admin_stats_counts_requests_statuses_and_bytes),
		cmocka_unit_test(admin_stats_bytes_out_counts_bytes_sent_not_queued),
		cmocka_unit_test(admin_paths_are_plain_keys_without_admin_flag),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
