/* tests/test_server_limits.c — blkmap-server treats every connection as
 * untrusted: a connection limit, a request timeout for slow clients that
 * does not stall others, an idle timeout, cut-off uploads that leave the
 * old object, malformed requests, pipelining, HTTP/1.0, bearer tokens.
 * Each test starts its own server with the limits it pins. */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_server_util.h"

static void send_text(int fd, const char *text)
{
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

static void connection_limit_answers_503_beyond_max_connections(void **st)
{
	const char *args[] = { "--memory", "--max-connections", "3", NULL };
	struct ts_server s;
	struct ts_resp r;
	int fds[3];

	assert_int_equal(ts_start(&s, args), 0);
	for (int i = 0; i < 3; i++) {  /* three served, kept alive */
		fds[i] = ts_connect(&s);
		send_text(fds[i], "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
		char *resp = ts_read_response(fds[i]);
		assert_non_null(resp);
		assert_non_null(strstr(resp, " 404 "));
		free(resp);
	}
	ts_request(NULL, &s, "GET", "/x", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 503);
	assert_non_null(strstr(r.body, "too many connections"));
	ts_resp_free(&r);
	close(fds[0]);  /* a slot frees up once the server sees the close */
	long status = 0;
	for (int i = 0; i < 2000 && status != 404; i++) {
		ts_request(NULL, &s, "GET", "/x", NULL, NULL, 0, &r);
		status = r.status;
		ts_resp_free(&r);
		if (status != 404)
			usleep(5000);
	}
	assert_int_equal(status, 404);
	close(fds[1]);
	close(fds[2]);
	assert_int_equal(ts_stop(&s), 0);
}

static void slow_client_gets_408_and_does_not_stall_others(void **state)
{
	const char *args[] = { "--memory", "--threads", "1",
			       "--request-timeout-ms", "300", NULL };
	struct ts_server s;
	struct ts_resp r;
	size_t n;
	int slow_head, slow_body;

	assert_int_equal(ts_start(&s, args), 0);
	slow_head = ts_connect(&s);
	send_text(slow_head, "GET /x HTTP/1.1\r\nHost:");
	slow_body = ts_connect(&s);
	send_text(slow_body, "PUT /slow HTTP/1.1\r\nHost: t\r\n"
		  "Content-Length: 100\r\n\r\n0123456789");
	/* one worker thread, two stalled clients: others are still served */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(ts_put(&s, "/fast", "ok", 2) / 100, 2);
		ts_request(NULL, &s, "GET", "/fast", NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		ts_resp_free(&r);
	}
	char *got = ts_read_all(slow_head, &n);  /* returns once closed */
	assert_non_null(strstr(got, "HTTP/1.1 408 "));
	free(got);
	got = ts_read_all(slow_body, &n);
	assert_non_null(strstr(got, "HTTP/1.1 408 "));
	free(got);
	close(slow_head);
	close(slow_body);
	ts_request(NULL, &s, "GET", "/slow", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);  /* the partial upload was dropped */
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static void idle_keep_alive_connection_is_closed(void **state)
{
	const char *args[] = { "--memory", "--idle-timeout-ms", "200", NULL };
	struct ts_server s;
	size_t n;

	assert_int_equal(ts_start(&s, args), 0);
	int fd = ts_connect(&s);
	send_text(fd, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
	free(ts_read_response(fd));
	char *rest = ts_read_all(fd, &n);  /* returns once the server closes */
	assert_int_equal(n, 0);
	free(rest);
	close(fd);
	assert_int_equal(ts_stop(&s), 0);
}

static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int empty = 1;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			empty = 0;
	if (d)
		closedir(d);
	return empty;
}

/* Wait (about 10 s at most, only so a broken server cannot hang the
 * test) until the server has counted PUTS PUT requests, has no request in
 * flight and no connection open but the one asking. The server unlinks a
 * cut-off upload's temporary file before its request stops being in
 * flight and before its connection stops being open. 0, or -1. */
static int wait_puts_settled(const struct ts_server *s, json_int_t puts)
{
	for (int i = 0; i < 2000; i++) {
		json_t *doc = ts_get_json(s, "/_admin/stats");
		json_int_t put = -1, in_flight = -1, open = -1;

		if (doc) {
			put = json_integer_value(json_object_get(
				json_object_get(doc, "requests"), "PUT"));
			in_flight = json_integer_value(
				json_object_get(doc, "requests_in_flight"));
			open = json_integer_value(json_object_get(
				json_object_get(doc, "connections"), "open"));
			json_decref(doc);
		}
		if (put == puts && in_flight == 0 && open == 1)
			return 0;
		usleep(5000);
	}
	return -1;
}

static void cut_off_upload_leaves_old_object(void **state)
{
	const char *args[] = { "--admin", NULL };
	char *root = ts_mkdtemp(), tmp[512];
	struct ts_server s;
	struct ts_resp r;

	snprintf(s.root, sizeof(s.root), "%s", root);
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	assert_int_equal(ts_start_disk(&s, args), 0);
	assert_int_equal(ts_put(&s, "/k", "old", 3), 201);
	int fd = ts_connect(&s);
	send_text(fd, "PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n"
		  "\r\nnew new new");
	close(fd);
	/* Not "wait until tmp/ is empty": it is empty before the server even
	 * reads the head and creates the temporary file. Wait until the
	 * server has taken the cut PUT (so it began the upload) and is done
	 * with its connection; only then must tmp/ be empty. */
	assert_int_equal(wait_puts_settled(&s, 2), 0);
	assert_true(dir_is_empty(tmp));
	json_t *doc = ts_get_json(&s, "/_admin/stats");
	assert_non_null(doc);  /* the cut PUT got no answer: no 500, no 408 */
	json_t *responses = json_object_get(doc, "responses");
	assert_int_equal(json_object_size(responses), 1);
	assert_int_equal(json_integer_value(json_object_get(responses, "201")),
			 1);
	json_decref(doc);
	ts_request(NULL, &s, "GET", "/k", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "old");
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
}

static void malformed_request_answers_400_and_closes(void **state)
{
	const char *args[] = { "--memory", NULL };
	static const char *const bad[] = {
		"HELLO\r\n\r\n",
		"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",
		"GET /x HTTP/1.1\r\nBad Name: x\r\n\r\n",
		"GET /x HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
		NULL
	};
	struct ts_server s;
	size_t n;

	assert_int_equal(ts_start(&s, args), 0);
	for (int i = 0; bad[i]; i++) {
		int fd = ts_connect(&s);
		send_text(fd, bad[i]);
		char *got = ts_read_all(fd, &n);
		assert_non_null(strstr(got, "HTTP/1.1 400 "));
		assert_non_null(strstr(got, "Connection: close"));
		free(got);
		close(fd);
	}
	int fd = ts_connect(&s);
	send_text(fd, "GET /x HTTP/2.0\r\n\r\n");
	char *got = ts_read_all(fd, &n);
	assert_non_null(strstr(got, "HTTP/1.1 505 "));
	free(got);
	close(fd);
	assert_int_equal(ts_stop(&s), 0);
}

static void pipelined_requests_are_answered_in_order(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/p1", "first", 5), 201);
	int fd = ts_connect(&s);
	send_text(fd, "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
		  "GET /p2 HTTP/1.1\r\nHost: t\r\n\r\n"
		  "GET /p1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	char *a = ts_read_response(fd), *b = ts_read_response(fd),
	     *c = ts_read_response(fd);
	assert_true(a && strstr(a, " 200 ") && strstr(a, "\r\n\r\nfirst"));
	assert_true(b && strstr(b, " 404 "));
	assert_true(c && strstr(c, " 200 ") && strstr(c, "Connection: close"));
	free(a);
	free(b);
	free(c);
	close(fd);
	assert_int_equal(ts_stop(&s), 0);
}

static void http10_request_is_answered_then_closed(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	size_t n;

	assert_int_equal(ts_start(&s, args), 0);
	int fd = ts_connect(&s);
	send_text(fd, "GET /x HTTP/1.0\r\n\r\n");
	char *got = ts_read_all(fd, &n);
	assert_non_null(strstr(got, "HTTP/1.1 404 "));
	free(got);
	close(fd);
	assert_int_equal(ts_stop(&s), 0);
}

static void token_is_required_when_given(void **state)
{
	const char *args[] = { "--memory", "--token", "s3cret", NULL };
	const char *wrong[] = { "Authorization: Bearer nope", NULL };
	const char *right[] = { "Authorization: Bearer s3cret", NULL };
	struct ts_server s;
	struct ts_resp r;
	char www[64];

	assert_int_equal(ts_start(&s, args), 0);
	ts_request(NULL, &s, "PUT", "/t", NULL, "x", 1, &r);
	assert_int_equal(r.status, 401);
	assert_string_equal(ts_header(&r, "WWW-Authenticate", www,
				      sizeof(www)), "Bearer");
	ts_resp_free(&r);
	ts_request(NULL, &s, "PUT", "/t", wrong, "x", 1, &r);
	assert_int_equal(r.status, 401);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/t", wrong, NULL, 0, &r);
	assert_int_equal(r.status, 401);
	ts_resp_free(&r);
	ts_request(NULL, &s, "PUT", "/t", right, "x", 1, &r);
	assert_int_equal(r.status, 201);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/t", right, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(connection_limit_answers_503_beyond_max_connections),
		cmocka_unit_test(slow_client_gets_408_and_does_not_stall_others),
		cmocka_unit_test(idle_keep_alive_connection_is_closed),
		cmocka_unit_test(cut_off_upload_leaves_old_object),
		cmocka_unit_test(malformed_request_answers_400_and_closes),
		cmocka_unit_test(pipelined_requests_are_answered_in_order),
		cmocka_unit_test(http10_request_is_answered_then_closed),
		cmocka_unit_test(token_is_required_when_given),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
