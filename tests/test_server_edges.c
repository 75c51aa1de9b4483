/* tests/test_server_edges.c — blkmap-server at the edges a client or an
 * operator can reach: connections past twice --max-connections closed
 * without an answer (and counted as rejected); request heads refused with
 * their status and a one-line reason (Expect, request lines, too many
 * header lines, lengths, repeated list headers, targets, UTF-8 in keys);
 * keys in any UTF-8; header values without their trailing blanks; the
 * /_admin/ endpoints' refusals; keys that collide with directories in a
 * disk store; command-line refusals (extra arguments, an empty token, a
 * taken port, a --root that is a file), --version, BLKMAP_SERVER_TOKEN and
 * --verbose's access log.  Each test starts the servers it needs; every
 * wait is bounded (test_server_util's 60 s, or WAIT_MS here).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_server_util.h"

#define WAIT_MS 60000  /* far above what a step takes: reaching it is a hang */

static void send_bytes(int fd, const char *p, size_t n)
{
	assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* The answer starts with STATUS, its body holds WHY, on one line. */
static void assert_answer(const char *a, int status, const char *why, const char *req)
{
	char want[32];
	const char *body = a ? strstr(a, "\r\n\r\n") : NULL;

	snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
	if (!a || strncmp(a, want, strlen(want)) != 0 || !body || (why && !strstr(body, why)) ||
	    (why && strchr(body + 4, '\n') != a + strlen(a) - 1))
		fail_msg("request \"%.60s...\": answer \"%s\"; expected %d with \"%s\" on one line", req,
			 a ? a : "(none)", status, why ? why : "");
}

/* ---- connections ------------------------------------------------------------------ */

static void connections_past_twice_the_limit_are_closed_without_an_answer(void **state)
{
	const char *args[] = { "--memory", "--admin", "--threads", "1", "--max-connections", "1", NULL };
	struct ts_server s;
	size_t n;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	int served = ts_connect(&s);  /* 1: the limit, kept alive */
	send_bytes(served, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 28);
	char *a = ts_read_response(served);
	assert_non_null(a);
	assert_true(strncmp(a, "HTTP/1.1 404 ", 13) == 0);
	free(a);
	int over = ts_connect(&s);    /* 2: over the limit, a 503 when it asks */
	/* The server accepts in order on its one thread: once the third is
	 * closed, the second is known to have been accepted before it. */
	int past = ts_connect(&s);    /* 3: past twice the limit */
	char *nothing = ts_read_all(past, &n);
	assert_non_null(nothing);     /* closed, not left hanging */
	assert_int_equal(n, 0);       /* without a byte */
	free(nothing);
	close(past);
	send_bytes(over, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 28);
	a = ts_read_all(over, &n);
	assert_answer(a, 503, "too many connections", "GET /x (over the limit)");
	free(a);
	close(over);
	close(served);
	/* Both refusals are counted; the stats connection is the only one
	 * once the server has seen the others close. */
	json_t *st = NULL;
	for (int i = 0; i < WAIT_MS / 10; i++) {
		st = ts_get_json(&s, "/_admin/stats");
		if (st)
			break;
		usleep(10000);
	}
	assert_non_null(st);
	json_t *conns = json_object_get(st, "connections");
	assert_true(json_integer_value(json_object_get(conns, "rejected")) >= 2);
	json_decref(st);
	assert_int_equal(ts_stop(&s), 0);
}

/* ---- request heads ---------------------------------------------------------------- */

static void refused_request_heads_get_their_status_and_a_one_line_reason(void **state)
{
	const char *args[] = { "--memory", NULL };
	static const struct { const char *req; int status; const char *why; } bad[] = {
		{ "GET /x HTTP/1.1\r\nHost: t\r\nExpect: 200-ok\r\n\r\n", 417, "unsupported Expect" },
		{ "GET  HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed request line" },
		{ "GET /x HTTP/1.1 more\r\nHost: t\r\n\r\n", 400, "malformed request line" },
		{ "GET /x HTTP/2.0\r\nHost: t\r\n\r\n", 505, "HTTP version not supported" },
		{ "GET /x FTP/1.1\r\nHost: t\r\n\r\n", 400, "HTTP version not supported" },
		{ "GET /x HTTP/1.1\r\nHost: t\r\n: no name\r\n\r\n", 400, "malformed header line" },
		{ "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length:   \r\n\r\n", 400, "bad Content-Length" },
		{ "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1234567890123456789\r\n\r\n", 400,
		  "bad Content-Length" },
		{ "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400,
		  "bad Content-Length" },
		{ "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nIf-Match: \"a\"\r\nIf-Match: \"b\"\r\n"
		  "If-Match: \"c\"\r\nIf-Match: \"d\"\r\nIf-Match: \"e\"\r\nIf-Match: \"f\"\r\n\r\nx", 400,
		  "too many repeated If-Match / If-None-Match lines" },
		{ "GET x HTTP/1.1\r\nHost: t\r\n\r\n", 400, "must start with '/'" },
		{ "GET http://t HTTP/1.1\r\nHost: t\r\n\r\n", 400, "absolute request target without a path" },
		{ "GET /%C3%28 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not valid UTF-8" },
		{ "GET /%C0%AF HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not valid UTF-8" },        /* overlong '/' */
		{ "GET /%ED%A0%80 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not valid UTF-8" },     /* a surrogate */
		{ "GET /%F4%90%80%80 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not valid UTF-8" },  /* > U+10FFFF */
		{ "GET /a%E2%82 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not valid UTF-8" },       /* cut short */
	};
	struct ts_server s;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *a = ts_ask(&s, bad[i].req, strlen(bad[i].req));
		assert_answer(a, bad[i].status, bad[i].why, bad[i].req);
		free(a);
	}
	/* 64 header lines are fine, 65 are too many. */
	char req[4096];
	for (int lines = 64; lines <= 65; lines++) {
		int n = snprintf(req, sizeof(req), "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
		for (int i = 2; i < lines; i++)
			n += snprintf(req + n, sizeof(req) - (size_t)n, "X-%d: y\r\n", i);
		n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
		char *a = ts_ask(&s, req, (size_t)n);
		assert_answer(a, lines == 64 ? 404 : 431, lines == 64 ? NULL : "too many header lines", req);
		free(a);
	}
	assert_int_equal(ts_stop(&s), 0);
}

static void keys_in_any_utf8_are_stored_and_read_back(void **state)
{
	const char *args[] = { "--memory", NULL };
	/* e-acute (2 bytes), euro (3), an emoji (4). */
	static const char *const keys[] = { "/u/caf%C3%A9", "/u/%E2%82%AC", "/u/%F0%9F%98%80", "/u/%F4%8F%BF%BF" };
	struct ts_server s;
	struct ts_resp r;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		assert_int_equal(ts_put(&s, keys[i], keys[i], strlen(keys[i])), 201);
		ts_request(NULL, &s, "GET", keys[i], NULL, NULL, 0, &r);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.len, strlen(keys[i]));
		assert_memory_equal(r.body, keys[i], r.len);
		ts_resp_free(&r);
	}
	assert_int_equal(ts_stop(&s), 0);
}

static void header_values_are_read_without_trailing_blanks(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/here", "x", 1), 201);
	/* "*  \t" is "*": the object exists, so a create-only PUT fails. */
	char *a = TS_ASK(&s, "PUT /here HTTP/1.1\r\nHost: t\r\nConnection: close\r\nIf-None-Match: *  \t\r\n"
		      "Content-Length: 1\r\n\r\ny");
	assert_answer(a, 412, NULL, "PUT /here If-None-Match: *");
	free(a);
	assert_int_equal(ts_stop(&s), 0);
}

static long get_with(const struct ts_server *s, const char *path, const char *header, struct ts_resp *r)
{
	const char *const headers[] = { header, NULL };

	ts_request(NULL, s, "GET", path, headers, NULL, 0, r);
	return r->status;
}

static void etags_compare_strongly_for_if_match_and_malformed_ones_never_match(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	struct ts_resp r;
	char etag[64], hdr[128];
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/c", "x", 1), 201);
	assert_int_equal(get_with(&s, "/c", "X-None: 1", &r), 200);
	assert_non_null(ts_header(&r, "ETag", etag, sizeof(etag)));
	ts_resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: W/%s", etag);  /* weak: never a strong match */
	assert_int_equal(get_with(&s, "/c", hdr, &r), 412);
	ts_resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-None-Match: W/%s", etag);  /* weak comparison: a match */
	assert_int_equal(get_with(&s, "/c", hdr, &r), 304);
	ts_resp_free(&r);
	snprintf(hdr, sizeof(hdr), "If-Match: \"other\", %s", etag);  /* the second of a list */
	assert_int_equal(get_with(&s, "/c", hdr, &r), 200);
	ts_resp_free(&r);
	assert_int_equal(get_with(&s, "/c", "If-Match: \"unterminated", &r), 412);
	ts_resp_free(&r);
	assert_int_equal(get_with(&s, "/c", "If-Match: unquoted", &r), 412);
	ts_resp_free(&r);
	assert_int_equal(get_with(&s, "/c", "If-None-Match: unquoted", &r), 200);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static void ranges_the_server_cannot_use_are_ignored_and_empty_suffixes_unsatisfiable(void **state)
{
	const char *args[] = { "--memory", NULL };
	static const struct { const char *range; long status; const char *body; } cases[] = {
		{ "Range: bytes=-0", 416, NULL },
		{ "Range: bytes=-x", 200, "0123456789" },
		{ "Range: bytes=x-3", 200, "0123456789" },
		{ "Range: bytes=5-2", 200, "0123456789" },
		{ "Range: bytes=3-4x", 200, "0123456789" },
		{ "Range: bytes=-3", 206, "789" },
		{ "Range: bytes=7-", 206, "789" },
		{ "Range: bytes=8-100", 206, "89" },
	};
	struct ts_server s;
	struct ts_resp r;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/r", "0123456789", 10), 201);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long st = get_with(&s, "/r", cases[i].range, &r);
		if (st != cases[i].status ||
		    (cases[i].body && (r.len != strlen(cases[i].body) || memcmp(r.body, cases[i].body, r.len))))
			fail_msg("%s: %ld \"%.*s\", expected %ld \"%s\"", cases[i].range, st, (int)r.len, r.body,
				 cases[i].status, cases[i].body ? cases[i].body : "");
		ts_resp_free(&r);
	}
	assert_int_equal(ts_stop(&s), 0);
}

static void bodies_without_a_length_are_refused(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	char *a = TS_ASK(&s, "PUT /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_answer(a, 411, "PUT needs Content-Length", "PUT without a length");
	free(a);
	a = TS_ASK(&s, "GET /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	assert_answer(a, 501, "Transfer-Encoding is not supported", "GET chunked");
	free(a);
	assert_int_equal(ts_stop(&s), 0);
}

/* ---- /_admin/ ------------------------------------------------------------------------- */

static void admin_endpoints_refuse_unknown_names_methods_and_big_bodies(void **state)
{
	const char *args[] = { "--memory", "--admin", NULL };
	struct ts_server s;
	struct ts_resp r;
	char allow[64];
	(void)state;

	assert_int_equal(ts_start(&s, args), 0);
	ts_request(NULL, &s, "GET", "/_admin/nothing", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "no admin endpoint '/_admin/nothing'"));
	ts_resp_free(&r);
	ts_request(NULL, &s, "DELETE", "/_admin/stats", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(ts_header(&r, "Allow", allow, sizeof(allow)), "GET");
	ts_resp_free(&r);
	ts_request(NULL, &s, "PUT", "/_admin/stats", NULL, "{}", 2, &r);
	assert_int_equal(r.status, 405);
	ts_resp_free(&r);
	ts_request(NULL, &s, "DELETE", "/_admin/faults", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(ts_header(&r, "Allow", allow, sizeof(allow)), "GET, PUT");
	ts_resp_free(&r);
	char *big = calloc(1, 65537);
	memset(big, ' ', 65536);
	ts_request(NULL, &s, "PUT", "/_admin/faults", NULL, big, 65537, &r);
	assert_int_equal(r.status, 413);
	assert_non_null(strstr(r.body, "over the limit"));
	ts_resp_free(&r);
	free(big);
	char *a = TS_ASK(&s, "PUT /_admin/faults HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	assert_answer(a, 411, "Content-Length", "PUT /_admin/faults chunked");
	free(a);
	/* Still serving. */
	json_t *faults = ts_get_json(&s, "/_admin/faults");
	assert_non_null(faults);
	json_decref(faults);
	assert_int_equal(ts_stop(&s), 0);
}

/* ---- a disk store ----------------------------------------------------------------------- */

static void keys_that_collide_with_directories_are_refused_with_409(void **state)
{
	struct ts_server s;
	struct ts_resp r;
	char *dir = ts_mkdtemp();
	(void)state;

	snprintf(s.root, sizeof(s.root), "%s/store", dir);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	assert_int_equal(ts_put(&s, "/d/f", "x", 1), 201);
	ts_request(NULL, &s, "PUT", "/d", NULL, "y", 1, &r);  /* /d is a directory */
	assert_int_equal(r.status, 409);
	assert_non_null(strstr(r.body, "conflicts with a directory"));
	ts_resp_free(&r);
	ts_request(NULL, &s, "PUT", "/d/f/g", NULL, "z", 1, &r);  /* /d/f is an object */
	assert_int_equal(r.status, 409);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/d", NULL, NULL, 0, &r);  /* a directory is no object */
	assert_int_equal(r.status, 404);
	ts_resp_free(&r);
	assert_int_equal(ts_delete(&s, "/d"), 404);
	/* The object is untouched. */
	ts_request(NULL, &s, "GET", "/d/f", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_memory_equal(r.body, "x", 1);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(dir);
	free(dir);
}

/* ---- the command line ------------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs blkmap-server ARGV (NULL-terminated) to its exit, at most WAIT_MS;
 * stdout and stderr into *OUT (malloc'd).  The exit status, or -1. */
static int run_server(const char *const *args, char **out)
{
	const char *argv[32] = { ts_server_path() };
	char path[] = "/tmp/blkmap-server-out.XXXXXX";
	int fd = mkstemp(path), n = 1, status = -1;
	int64_t deadline = now_ms() + WAIT_MS;
	size_t len;

	assert_true(fd >= 0);
	unlink(path);
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	pid_t r;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_ms() < deadline)
		usleep(2000);
	if (r != pid) {
		fprintf(stderr, "blkmap-server still running after %d s: killed\n", WAIT_MS / 1000);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		status = -1;
	}
	lseek(fd, 0, SEEK_SET);
	*out = ts_read_all(fd, &len);
	close(fd);
	return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void command_line_refusals_exit_with_one_line_naming_the_problem(void **state)
{
	char *dir = ts_mkdtemp(), file[600], *out, longroot[2200];
	struct ts_server s;
	(void)state;

	memset(longroot, 'r', sizeof(longroot) - 1);
	longroot[0] = '/';
	longroot[sizeof(longroot) - 1] = '\0';

	assert_int_equal(run_server((const char *[]){ "--version", NULL }, &out), 0);
	assert_true(strncmp(out, "blkmap-server " PACKAGE_VERSION "\n", strlen(PACKAGE_VERSION) + 15) == 0);
	free(out);

	snprintf(file, sizeof(file), "%s/a-file", dir);
	close(open(file, O_WRONLY | O_CREAT, 0644));
	/* A taken port: the one a running server listens on. */
	const char *args[] = { "--memory", NULL };
	assert_int_equal(ts_start(&s, args), 0);
	char listen[64];
	snprintf(listen, sizeof(listen), "%s", strstr(s.url, "//") + 2);
	static const struct { int status; const char *why; } want[] = {
		{ 2, "unexpected argument 'extra'" },
		{ 2, "--token must not be empty" },
		{ 2, "--fault-drop-rate" },
		{ 2, "--fault-corrupt-rate" },
		{ 1, "cannot listen on" },
		{ 1, "is not a directory" },
		{ 1, "--listen '127.0.0.1': expected HOST:PORT" },
		{ 1, "--listen ':0': expected HOST:PORT" },
		{ 1, "--listen '[]:0': expected HOST:PORT" },
		{ 1, "--listen '127.0.0.1:http':" },
		{ 1, "--root path is too long" },
	};
	const char *const *argvs[] = {
		(const char *[]){ "--memory", "extra", NULL },
		(const char *[]){ "--memory", "--token", "", NULL },
		(const char *[]){ "--memory", "--fault-drop-rate", "1.5", NULL },
		(const char *[]){ "--memory", "--fault-corrupt-rate", "-0.1", NULL },
		(const char *[]){ "--memory", "--listen", listen, NULL },
		(const char *[]){ "--root", file, "--listen", "127.0.0.1:0", NULL },
		(const char *[]){ "--memory", "--listen", "127.0.0.1", NULL },
		(const char *[]){ "--memory", "--listen", ":0", NULL },
		(const char *[]){ "--memory", "--listen", "[]:0", NULL },
		(const char *[]){ "--memory", "--listen", "127.0.0.1:http", NULL }, /* a number, not a name */
		(const char *[]){ "--root", longroot, "--listen", "127.0.0.1:0", NULL },
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		int st = run_server(argvs[i], &out);
		if (st != want[i].status || !strstr(out, want[i].why) || strchr(out, '\n') != out + strlen(out) - 1)
			fail_msg("case %zu: exit %d, output \"%s\"; expected %d and one line with \"%s\"", i, st, out,
				 want[i].status, want[i].why);
		free(out);
	}
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(dir);
	free(dir);
}

static void the_token_can_come_from_BLKMAP_SERVER_TOKEN(void **state)
{
	const char *args[] = { "--memory", NULL };
	const char *const auth[] = { "Authorization: Bearer from-env", NULL };
	struct ts_server s;
	struct ts_resp r;
	(void)state;

	setenv("BLKMAP_SERVER_TOKEN", "from-env", 1);
	int rc = ts_start(&s, args);
	unsetenv("BLKMAP_SERVER_TOKEN");
	assert_int_equal(rc, 0);
	assert_int_equal(ts_put(&s, "/t", "x", 1), 401);
	ts_request(NULL, &s, "PUT", "/t", auth, "x", 1, &r);
	assert_int_equal(r.status, 201);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void verbose_logs_one_line_per_request(void **state)
{
	const char *args[] = { "--memory", "--verbose", NULL };
	char path[] = "/tmp/blkmap-server-log.XXXXXX";
	int log = mkstemp(path), saved = dup(2);
	struct ts_server s;
	struct ts_resp r;
	size_t n;
	(void)state;

	assert_true(log >= 0 && saved >= 0);
	unlink(path);
	/* The server inherits our stderr: the log file, while it starts. */
	fflush(stderr);
	dup2(log, 2);
	int rc = ts_start(&s, args);
	dup2(saved, 2);
	close(saved);
	assert_int_equal(rc, 0);
	assert_int_equal(ts_put(&s, "/v/obj", "abc", 3), 201);
	ts_request(NULL, &s, "GET", "/v/obj", NULL, NULL, 0, &r);
	ts_resp_free(&r);
	ts_request(NULL, &s, "GET", "/v/none?x=1", NULL, NULL, 0, &r);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	lseek(log, 0, SEEK_SET);
	char *text = ts_read_all(log, &n);
	close(log);
	/* METHOD TARGET STATUS BYTES-SENT, one line each. */
	if (count_lines(text) != 3 || !strstr(text, "PUT /v/obj 201 ") || !strstr(text, "GET /v/obj 200 ") ||
	    !strstr(text, "GET /v/none?x=1 404 "))
		fail_msg("access log: \"%s\"", text);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(connections_past_twice_the_limit_are_closed_without_an_answer),
		cmocka_unit_test(refused_request_heads_get_their_status_and_a_one_line_reason),
		cmocka_unit_test(keys_in_any_utf8_are_stored_and_read_back),
		cmocka_unit_test(header_values_are_read_without_trailing_blanks),
		cmocka_unit_test(etags_compare_strongly_for_if_match_and_malformed_ones_never_match),
		cmocka_unit_test(ranges_the_server_cannot_use_are_ignored_and_empty_suffixes_unsatisfiable),
		cmocka_unit_test(bodies_without_a_length_are_refused),
		cmocka_unit_test(admin_endpoints_refuse_unknown_names_methods_and_big_bodies),
		cmocka_unit_test(keys_that_collide_with_directories_are_refused_with_409),
		cmocka_unit_test(command_line_refusals_exit_with_one_line_naming_the_problem),
		cmocka_unit_test(the_token_can_come_from_BLKMAP_SERVER_TOKEN),
		cmocka_unit_test(verbose_logs_one_line_per_request),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
