/* tests/test_server_limits.c — blkmap-server treats every connection as
 * untrusted: a connection limit, a request timeout for slow clients that
 * does not stall others, an idle timeout, cut-off uploads that leave the
 * old object, malformed requests (NUL bytes, control characters, missing
 * or repeated Host, bodies it does not read), pipelining (also before a
 * half-close), repeated list headers, absolute-form targets, huge range
 * ends, 1024-byte keys in disk listings, HTTP/1.0, bearer tokens; a
 * server out of descriptors (it pauses accepting, then serves what
 * waited), and one listening on IPv6.
 * Each test starts its own server with the limits it pins. */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
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
	for (int i = 0; i < 12000 && status != 404; i++) {  /* 60 s: a hang */
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

/* Wait (about 60 s at most, only so a broken server cannot hang the
 * test) until the server has counted PUTS PUT requests, has no request in
 * flight and no connection open but the one asking. The server unlinks a
 * cut-off upload's temporary file before its request stops being in
 * flight and before its connection stops being open. 0, or -1. */
static int wait_puts_settled(const struct ts_server *s, json_int_t puts)
{
	for (int i = 0; i < 12000; i++) {
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

/* Each answer is also the last on its connection: the server closes it
 * (Connection: close) rather than wait for more from a client it could not
 * understand.  The idle timeout is 10 minutes, so a prompt close can only
 * be that rule; ts_ask() would report a hang after 60 s. */
static void hostile_heads_get_400_with_a_one_line_reason_and_a_close(void **state)
{
	const char *args[] = { "--memory", "--idle-timeout-ms", "600000", NULL };
	static const struct { const char *req; size_t n; const char *why; } bad[] = {
#define C(lit, why) { lit, sizeof(lit) - 1, why }
		C("GET /a\0 HTTP/1.1\r\nHost: t\r\n\r\n", "NUL byte"),
		C("GET /a HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n", "NUL byte"),
		C("GET /x%0Ay HTTP/1.1\r\nHost: t\r\n\r\n", "control character in path"),
		C("GET /x\ny HTTP/1.1\r\nHost: t\r\n\r\n", "request target"),
		C("G\nT /x HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
		C("GET /x HTTP/1.1\r\nHost: t\r\nX: y\nContent-Length: 5\r\n\r\n", "control character"),
		C("GET /x HTTP/1.1\r\n\r\n", "without a Host"),
		C("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
		C("PUT /u/%FF HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx", "not valid UTF-8"),
		C("GET /x HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n", "Range"),
#undef C
	};
	struct ts_server s;

	assert_int_equal(ts_start(&s, args), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *a = ts_ask(&s, bad[i].req, bad[i].n);
		char *body = a ? strstr(a, "\r\n\r\n") : NULL;
		const char *close_line = a ? strstr(a, "\r\nConnection: close\r\n") : NULL;
		const char *wrong = NULL;
		if (!a || strncmp(a, "HTTP/1.1 400 ", 13) != 0 || !body || !strstr(body, bad[i].why) ||
		    strchr(body + 4, '\n') != a + strlen(a) - 1)
			wrong = "answer";
		else if (!close_line || close_line > body)
			wrong = "no Connection: close in the answer";
		if (wrong) {
			ts_stop(&s);  /* not left running by the failure */
			fail_msg("case %zu: %s \"%s\"", i, wrong, a ? a : "(none: not closed?)");
		}
		free(a);
	}
	/* The server is alive and well. */
	assert_int_equal(ts_put(&s, "/ok", "x", 1), 201);
	assert_int_equal(ts_stop(&s), 0);
}

static void a_body_the_server_does_not_read_is_never_taken_for_a_request(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	struct ts_resp r;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/victim", "v", 1), 201);
	char *a = TS_ASK(&s, "PUT /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"
		      "DELETE /victim HTTP/1.1\r\nHost: t\r\n\r\n");
	assert_non_null(a);
	assert_true(strncmp(a, "HTTP/1.1 411 ", 13) == 0);
	assert_non_null(strstr(a, "Connection: close"));
	assert_null(strstr(a + 13, "HTTP/1.1 "));  /* one answer only */
	free(a);
	ts_request(NULL, &s, "GET", "/victim", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static void pipelined_requests_before_a_half_close_are_all_answered(void **state)
{
	const char *args[] = { "--memory", NULL };
	const char *disk[] = { NULL };
	char *root = ts_mkdtemp();
	struct ts_server s;
	size_t n;

	for (int store = 0; store < 2; store++) {
		if (store == 0) {
			assert_int_equal(ts_start(&s, args), 0);
		} else {
			snprintf(s.root, sizeof(s.root), "%s", root);
			assert_int_equal(ts_start_disk(&s, disk), 0);
		}
		assert_int_equal(ts_put(&s, "/p1", "first", 5), 201);
		int fd = ts_connect(&s);
		for (int i = 0; i < 5; i++)
			send_text(fd, "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n");
		shutdown(fd, SHUT_WR);
		char *all = ts_read_all(fd, &n);
		int answers = 0;
		for (char *p = all; (p = strstr(p, "HTTP/1.1 200 ")) != NULL; p++)
			answers++;
		assert_int_equal(answers, 5);
		free(all);
		close(fd);
		assert_int_equal(ts_stop(&s), 0);
	}
	ts_rmtree(root);
	free(root);
}

static void list_headers_on_several_lines_are_one_list(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	struct ts_resp r;
	char etag[128], req[512];

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/c", "old", 3), 201);
	ts_request(NULL, &s, "GET", "/c", NULL, NULL, 0, &r);
	assert_non_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	ts_resp_free(&r);
	/* "*" on the second line still forbids overwriting. */
	char *a = TS_ASK(&s, "PUT /c HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"nope\"\r\n"
		      "If-None-Match: *\r\nContent-Length: 3\r\nConnection: close\r\n\r\nnew");
	assert_true(a && strncmp(a, "HTTP/1.1 412 ", 13) == 0);
	free(a);
	/* The ETag on the second line of If-Match matches. */
	snprintf(req, sizeof(req), "PUT /c HTTP/1.1\r\nHost: t\r\nIf-Match: \"nope\"\r\nIf-Match: %s\r\n"
		 "Content-Length: 3\r\nConnection: close\r\n\r\nnew", etag);
	a = ts_ask(&s, req, strlen(req));
	assert_true(a && strncmp(a, "HTTP/1.1 204 ", 13) == 0);
	free(a);
	ts_request(NULL, &s, "GET", "/c", NULL, NULL, 0, &r);
	assert_string_equal(r.body, "new");
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static void absolute_targets_huge_range_ends_and_zero_padded_lengths_are_understood(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/m", "0123456789", 10), 201);
	char *a = TS_ASK(&s, "GET http://t/m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_true(a && strncmp(a, "HTTP/1.1 200 ", 13) == 0 && strstr(a, "\r\n\r\n0123456789"));
	free(a);
	a = TS_ASK(&s, "GET /m HTTP/1.1\r\nHost: t\r\nRange: bytes=2-99999999999999999999\r\n"
		"Connection: close\r\n\r\n");
	assert_true(a && strncmp(a, "HTTP/1.1 206 ", 13) == 0 && strstr(a, "bytes 2-9/10") &&
		    strstr(a, "\r\n\r\n23456789"));
	free(a);
	a = TS_ASK(&s, "PUT /z HTTP/1.1\r\nHost: t\r\nContent-Length: 00000000000000000000001\r\n"
		"Connection: close\r\n\r\nz");
	assert_true(a && strncmp(a, "HTTP/1.1 201 ", 13) == 0);
	free(a);
	assert_int_equal(ts_stop(&s), 0);
}

static void a_disk_listing_shows_keys_of_1024_bytes(void **state)
{
	char *root = ts_mkdtemp(), key[1100];
	const char *args[] = { NULL };
	struct ts_server s;

	snprintf(s.root, sizeof(s.root), "%s", root);
	assert_int_equal(ts_start_disk(&s, args), 0);
	/* Keys "l3/aaa.../aaa" of 1023 bytes and "l4/..." of 1024, in
	 * segments under 200 bytes. */
	for (int len = 1023; len <= 1024; len++) {
		size_t k = 0;
		key[k++] = '/';
		key[k++] = 'l';
		key[k++] = (char)('0' + len % 10);
		key[k++] = '/';
		while (k < (size_t)len + 1) {
			key[k] = (k % 200 == 0) ? '/' : 'a';
			k++;
		}
		key[k] = '\0';
		assert_int_equal(ts_put(&s, key, "x", 1), 201);
		char list[8];
		snprintf(list, sizeof(list), "/l%c/", key[2]);
		json_t *doc = ts_get_json(&s, list);
		assert_non_null(doc);
		assert_int_equal(json_array_size(json_object_get(doc, "objects")), 1);
		json_decref(doc);
	}
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
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

/* The number of descriptors process pid has open. */
static int count_fds(pid_t pid)
{
	char path[64];
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n - 2; /* . and .. */
}

/* A GET of /k on fd: the status of its answer (the connection stays). */
static int get_k(int fd)
{
	char buf[4096];
	size_t got = 0;

	send_text(fd, "GET /k HTTP/1.1\r\nHost: t\r\n\r\n");
	while (got < sizeof(buf) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 20000) != 1)
			return -1; /* no answer within 20 s */
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			return -1;
		buf[got += (size_t)r] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (end != NULL && strlen(end + 4) >= 1) /* the body: "v" */
			return atoi(buf + 9);
	}
	return -1;
}

/* A server out of descriptors stops accepting for a moment (it does not
 * spin, nor drop what waits): the connections that came meanwhile are
 * served once descriptors are free again.  Its descriptor limit is set
 * from outside (prlimit) to what it has open plus two. */
static void connections_beyond_the_descriptor_limit_are_served_once_descriptors_are_free(void **st)
{
	const char *args[] = { "--memory", "--threads", "1", NULL };
	struct ts_server s;
	int fds[6];

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/k", "v", 1), 201);
	struct rlimit lim, low;
	assert_int_equal(prlimit(s.pid, RLIMIT_NOFILE, NULL, &lim), 0);
	low.rlim_cur = (rlim_t)count_fds(s.pid) + 2;
	low.rlim_max = lim.rlim_max;
	assert_int_equal(prlimit(s.pid, RLIMIT_NOFILE, &low, NULL), 0);
	for (int i = 0; i < 6; i++) {
		fds[i] = ts_connect(&s); /* queued by the kernel: the backlog */
		assert_true(fds[i] >= 0);
	}
	/* Two are accepted and served. */
	assert_int_equal(get_k(fds[0]), 200);
	assert_int_equal(get_k(fds[1]), 200);
	/* The others are served as the first ones close. */
	for (int i = 2; i < 6; i++) {
		close(fds[i - 2]);
		assert_int_equal(get_k(fds[i]), 200);
	}
	close(fds[4]);
	close(fds[5]);
	assert_int_equal(prlimit(s.pid, RLIMIT_NOFILE, &lim, NULL), 0);
	assert_int_equal(ts_stop(&s), 0);
}

/* --listen [::1]:0 serves IPv6, and the URL it prints is bracketed. */
static void a_server_on_an_ipv6_address_prints_a_bracketed_url_and_answers_there(void **st)
{
	const char *args[] = { "--memory", "--listen", "[::1]:0", NULL };
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct ts_server s;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		skip(); /* no IPv6 loopback here */
	}
	close(fd);
	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(strncmp(s.url, "http://[::1]:", 13), 0);
	sa.sin6_port = htons((uint16_t)atoi(s.url + 13));
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	send_text(fd, "PUT /k HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nv");
	char buf[512] = "";
	struct pollfd p = { .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 20000), 1);
	assert_true(read(fd, buf, sizeof(buf) - 1) > 12);
	assert_int_equal(strncmp(buf, "HTTP/1.1 201", 12), 0);
	assert_int_equal(get_k(fd), 200);
	close(fd);
	assert_int_equal(ts_stop(&s), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(connection_limit_answers_503_beyond_max_connections),
		cmocka_unit_test(connections_beyond_the_descriptor_limit_are_served_once_descriptors_are_free),
		cmocka_unit_test(a_server_on_an_ipv6_address_prints_a_bracketed_url_and_answers_there),
		cmocka_unit_test(slow_client_gets_408_and_does_not_stall_others),
		cmocka_unit_test(idle_keep_alive_connection_is_closed),
		cmocka_unit_test(cut_off_upload_leaves_old_object),
		cmocka_unit_test(malformed_request_answers_400_and_closes),
		cmocka_unit_test(pipelined_requests_are_answered_in_order),
		cmocka_unit_test(hostile_heads_get_400_with_a_one_line_reason_and_a_close),
		cmocka_unit_test(a_body_the_server_does_not_read_is_never_taken_for_a_request),
		cmocka_unit_test(pipelined_requests_before_a_half_close_are_all_answered),
		cmocka_unit_test(list_headers_on_several_lines_are_one_list),
		cmocka_unit_test(absolute_targets_huge_range_ends_and_zero_padded_lengths_are_understood),
		cmocka_unit_test(a_disk_listing_shows_keys_of_1024_bytes),
		cmocka_unit_test(http10_request_is_answered_then_closed),
		cmocka_unit_test(token_is_required_when_given),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
