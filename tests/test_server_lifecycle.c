/* tests/test_server_lifecycle.c — blkmap-server as a process: objects and
 * ETags survive a restart with --root (kept with each file, not hashed
 * again), leftovers of a crashed upload are
 * removed at start, SIGTERM lets requests in flight finish and exits 0,
 * --help names every option, bad options get a one-line error. */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_server_util.h"

static void restart_keeps_objects_and_etags(void **state)
{
	char *root = ts_mkdtemp(), e1[128], e2[128];
	unsigned char *data = ts_pattern(300000, 21);
	struct ts_server s;
	struct ts_resp r;

	snprintf(s.root, sizeof(s.root), "%s", root);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	assert_int_equal(ts_put(&s, "/ds/manifest", "{}", 2), 201);
	assert_int_equal(ts_put(&s, "/ds/blk/0", data, 300000), 201);
	ts_request(NULL, &s, "HEAD", "/ds/blk/0", NULL, NULL, 0, &r);
	assert_non_null(ts_header(&r, "ETag", e1, sizeof(e1)));
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);

	assert_int_equal(ts_start_disk(&s, NULL), 0);
	ts_request(NULL, &s, "GET", "/ds/blk/0", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 300000);
	assert_memory_equal(r.body, data, 300000);
	assert_string_equal(ts_header(&r, "ETag", e2, sizeof(e2)), e1);
	ts_resp_free(&r);
	json_t *doc = ts_get_json(&s, "/ds/");
	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "objects")), 2);
	json_decref(doc);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
	free(data);
}

static void leftover_upload_files_are_removed_at_start(void **state)
{
	char *root = ts_mkdtemp(), path[512];
	struct ts_server s;
	struct stat st;
	FILE *f;

	snprintf(s.root, sizeof(s.root), "%s", root);
	snprintf(path, sizeof(path), "%s/tmp", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/tmp/up-crashed", root);
	f = fopen(path, "w");
	fputs("half an upload", f);
	fclose(f);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	assert_int_not_equal(stat(path, &st), 0);
	json_t *doc = ts_get_json(&s, "/");
	assert_int_equal(json_array_size(json_object_get(doc, "objects")), 0);
	json_decref(doc);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
}

struct getter {
	const struct ts_server *srv;
	struct ts_resp resp;
};

static void *get_object(void *arg)
{
	struct getter *g = arg;
	ts_request(NULL, g->srv, "GET", "/obj", NULL, NULL, 0, &g->resp);
	return NULL;
}

static long in_flight(const struct ts_server *s)
{
	json_t *doc = ts_get_json(s, "/_admin/stats");
	long n = json_integer_value(json_object_get(doc,
						    "requests_in_flight"));
	json_decref(doc);
	return n;
}

/* Waits until the server counts no request in flight.  It counts one out
 * once its answer's bytes left, which may be after the client has them:
 * a test that then counts its own requests in flight must start from 0,
 * or a request answered already is taken for one of them (a PUT counted
 * out late let a SIGTERM meet a GET not yet read, which was closed
 * unanswered; or no GET at all, and the server exited 0). */
static void wait_none_in_flight(const struct ts_server *s)
{
	/* Bounded: 30 s is a hang, not a slow machine. */
	for (int i = 0; in_flight(s) > 0; i++) {
		if (i == 15000)
			fail_msg("requests still in flight 30 s after their answers");
		usleep(2000);
	}
}

static void sigterm_finishes_requests_in_flight_then_exits_0(void **state)
{
	const char *args[] = { "--memory", "--admin", NULL };
	unsigned char *data = ts_pattern(1 << 20, 5);
	struct getter g[3];
	pthread_t t[3];
	struct ts_server s;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/obj", data, 1 << 20), 201);
	/* Hold the GETs in the server with a delay of L ms, then SIGTERM
	 * while all three are in flight.  They started at t0 and are held
	 * until t0 + L at least: seen all in flight before t0 + L/2, each
	 * still is at the kill.  Else (a loaded machine) wait for them and
	 * go again with a longer L: 1.5 s was once too short, and a fixed
	 * 4 s cost make check 4 s every run. */
	static const long delays_ms[] = { 400, 1500, 4000 };
	for (int d = 0;; d++) {
		long l = delays_ms[d];
		bool last = d == (int)(sizeof(delays_ms) / sizeof(delays_ms[0])) - 1, early = false;
		char faults[64];
		snprintf(faults, sizeof(faults), "{\"fault-latency-ms\": %ld}", l);
		assert_int_equal(ts_set_faults(&s, faults), 200);
		wait_none_in_flight(&s); /* the PUT, or the last round's GETs */
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < 3; i++) {
			memset(&g[i].resp, 0, sizeof(g[i].resp));
			g[i].srv = &s;
			pthread_create(&t[i], NULL, get_object, &g[i]);
		}
		/* Bounded: 30 s is a hang, not a slow machine. */
		for (int i = 0; in_flight(&s) < 3; i++) {
			if (i == 15000)
				fail_msg("3 GETs not in flight together after 30 s");
			usleep(2000);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		early = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < l / 2;
		if (early || last)
			break;
		for (int i = 0; i < 3; i++) {
			pthread_join(t[i], NULL);
			ts_resp_free(&g[i].resp);
		}
	}
	kill(s.pid, SIGTERM);
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(g[i].resp.rc, CURLE_OK);
		assert_int_equal(g[i].resp.status, 200);
		assert_int_equal(g[i].resp.len, 1 << 20);
		assert_memory_equal(g[i].resp.body, data, 1 << 20);
		ts_resp_free(&g[i].resp);
	}
	assert_int_equal(ts_wait(&s), 0);
	free(data);
}

static void sigterm_closes_idle_connections_and_exits_0(void **state)
{
	const char *args[] = { "--memory", NULL };
	struct ts_server s;
	size_t n;

	assert_int_equal(ts_start(&s, args), 0);
	int fd = ts_connect(&s);
	const char *req = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	free(ts_read_response(fd));
	kill(s.pid, SIGTERM);
	char *rest = ts_read_all(fd, &n);  /* returns once the server closed it */
	assert_non_null(rest);  /* NULL: not closed within 60 s */
	assert_int_equal(n, 0);
	free(rest);
	close(fd);
	assert_int_equal(ts_wait(&s), 0);
}

/* The first SIGTERM waits for the requests in flight; a second one ends the
 * server at once (its default action), whatever is still in flight.  The
 * GET is held 10 minutes; SIGTERM is sent every 50 ms, since two sent
 * before the server took the first count as one. */
static void a_second_sigterm_during_a_graceful_stop_kills_at_once(void **state)
{
	const char *args[] = { "--memory", "--admin", NULL };
	unsigned char *data = ts_pattern(4096, 7);
	struct getter g = { 0 };
	pthread_t t;
	struct ts_server s;
	int status = 0;
	pid_t r = 0;

	assert_int_equal(ts_start(&s, args), 0);
	assert_int_equal(ts_put(&s, "/obj", data, 4096), 201);
	assert_int_equal(ts_set_faults(&s, "{\"fault-latency-ms\": 600000}"), 200);
	wait_none_in_flight(&s); /* the PUT */
	g.srv = &s;
	pthread_create(&t, NULL, get_object, &g);
	for (int i = 0; in_flight(&s) < 1; i++) {
		if (i == 15000)
			fail_msg("the GET not in flight after 30 s");
		usleep(2000);
	}
	for (int i = 0; i < 600 && (r = waitpid(s.pid, &status, WNOHANG)) == 0; i++) {
		kill(s.pid, SIGTERM);
		usleep(50000);
	}
	if (r == 0) {
		kill(s.pid, SIGKILL);
		waitpid(s.pid, &status, 0);
		fail_msg("blkmap-server still ran 30 s after SIGTERMs every 50 ms");
	}
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGTERM);
	pthread_join(t, NULL);
	assert_int_not_equal(g.resp.status, 200); /* cut, never answered */
	ts_resp_free(&g.resp);
	free(data);
}

/* A client that sent part of a request head has asked nothing yet: SIGTERM
 * closes it at once instead of waiting up to the request timeout (10
 * minutes here; ts_wait reports a hang after 60 s). */
static void sigterm_does_not_wait_for_a_partial_request_head(void **state)
{
	const char *args[] = { "--memory", "--request-timeout-ms", "600000", NULL };
	struct ts_server s;
	size_t n;

	assert_int_equal(ts_start(&s, args), 0);
	int fd = ts_connect(&s);
	const char *part = "GET /x HTTP/1.1\r\nHo";
	assert_int_equal(write(fd, part, strlen(part)), (ssize_t)strlen(part));
	/* Whether or not the server read these bytes before the signal, it
	 * must close at once (before the fix it waited for the rest once it
	 * had read them, which is nearly always). */
	kill(s.pid, SIGTERM);
	int rc = ts_wait(&s);
	char *rest = ts_read_all(fd, &n);
	close(fd);
	assert_int_equal(rc, 0);
	assert_non_null(rest);
	assert_int_equal(n, 0);  /* closed without an answer */
	free(rest);
}

/* Run blkmap-server with ARGS; its stdout+stderr and exit status. */
static char *run_server(const char *args, int *status)
{
	char cmd[4096], *out = calloc(1, 65536);
	size_t n = 0, r;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", ts_server_path(), args);
	p = popen(cmd, "r");
	while ((r = fread(out + n, 1, 65535 - n, p)) > 0)
		n += r;
	*status = WEXITSTATUS(pclose(p));
	return out;
}

static void help_names_every_option(void **state)
{
	static const char *const opts[] = {
		"--root", "--memory", "--listen", "--token", "--threads",
		"--max-connections", "--max-header-bytes", "--max-body-bytes",
		"--idle-timeout-ms", "--request-timeout-ms", "--admin",
		"--verbose", "--fault-error-rate", "--fault-drop-rate",
		"--fault-corrupt-rate", "--fault-latency-ms", "--fault-seed",
		"--help", "--version", NULL
	};
	int status;
	char *out = run_server("--help", &status);

	assert_int_equal(status, 0);
	for (int i = 0; opts[i]; i++) {
		char with_space[64];
		snprintf(with_space, sizeof(with_space), "  %s ", opts[i]);
		if (!strstr(out, with_space))
			fail_msg("--help does not document %s", opts[i]);
	}
	free(out);
}

static void bad_options_get_one_line_error_and_status_2(void **state)
{
	static const char *const bad[][2] = {
		{ "", "--root DIR and --memory" },
		{ "--memory --root /tmp", "--root DIR and --memory" },
		{ "--memory --fault-error-rate 2", "--fault-error-rate" },
		{ "--memory --threads zero", "--threads" },
		{ "--memory --listen nocolon", "--listen" },
		{ "--memory --no-such-option", "no-such-option" },
	};
	int status;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = run_server(bad[i][0], &status);
		if (!strstr(out, bad[i][1]))
			fail_msg("'%s': '%s' not in: %s", bad[i][0], bad[i][1],
				 out);
		assert_int_equal(strchr(out, '\n') - out + 1, strlen(out));
		assert_int_not_equal(status, 0);
		free(out);
	}
}

/* A store blkmap-server wrote can be served by a static server running as
 * another user (nginx's www-data): object files are 0666 minus the umask,
 * as any program's files are (mkstemp's 0600 was kept before). */
/* An ETag is kept with its file (an extended attribute naming the size
 * and mtime it belongs to): after a restart it is sent as kept, without
 * hashing the bytes again, while the file keeps its size and mtime; a
 * file changed since (another mtime) is hashed again.  The proof that the
 * bytes were not read: they are changed behind the server's back with the
 * old mtime put back, and the old ETag still comes. */
static void a_restart_sends_the_etag_kept_with_the_file_without_hashing_it(void **state)
{
	char *root = ts_mkdtemp(), path[512], e1[128], e2[128], e3[128], v[8];
	unsigned char *data = ts_pattern(100000, 22);
	struct ts_server s;
	struct ts_resp r;
	struct stat st;

	(void)state;
	snprintf(s.root, sizeof(s.root), "%s", root);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	assert_int_equal(ts_put(&s, "/ds/blk/1", data, 100000), 201);
	ts_request(NULL, &s, "HEAD", "/ds/blk/1", NULL, NULL, 0, &r);
	assert_non_null(ts_header(&r, "ETag", e1, sizeof(e1)));
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	snprintf(path, sizeof(path), "%s/objects/ds/blk/1", root);
	if (getxattr(path, "user.blkmap-server.etag", v, 0) < 0 && errno == ENOTSUP) {
		fprintf(stderr, "skipped: %s has no user extended attributes\n", root);
		ts_rmtree(root);
		free(root);
		free(data);
		skip();
	}
	assert_int_equal(stat(path, &st), 0);
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	assert_int_equal(fwrite("changed", 1, 7, f), 7);
	fclose(f);
	struct timespec times[2] = { st.st_atim, st.st_mtim };
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);

	assert_int_equal(ts_start_disk(&s, NULL), 0);
	ts_request(NULL, &s, "HEAD", "/ds/blk/1", NULL, NULL, 0, &r);
	assert_string_equal(ts_header(&r, "ETag", e2, sizeof(e2)), e1);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);

	times[1].tv_sec += 1; /* another mtime: hashed again */
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	ts_request(NULL, &s, "HEAD", "/ds/blk/1", NULL, NULL, 0, &r);
	assert_non_null(ts_header(&r, "ETag", e3, sizeof(e3)));
	assert_string_not_equal(e3, e1);
	ts_resp_free(&r);
	assert_int_equal(ts_stop(&s), 0);
	ts_rmtree(root);
	free(root);
	free(data);
}

static void objects_on_disk_are_readable_by_other_users(void **state)
{
	char *root = ts_mkdtemp(), path[512];
	struct ts_server s;
	struct stat st;
	mode_t was = umask(022);

	snprintf(s.root, sizeof(s.root), "%s", root);
	assert_int_equal(ts_start_disk(&s, NULL), 0);
	umask(was);
	assert_int_equal(ts_put(&s, "/ds/blk/0", "bytes", 5), 201);
	assert_int_equal(ts_put(&s, "/ds/blk/0", "other", 5), 204);  /* a replaced one too */
	assert_int_equal(ts_put(&s, "/top", "t", 1), 201);
	assert_int_equal(ts_stop(&s), 0);
	snprintf(path, sizeof(path), "%s/objects/ds/blk/0", root);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	snprintf(path, sizeof(path), "%s/objects/top", root);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	snprintf(path, sizeof(path), "%s/objects/ds/blk", root);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	ts_rmtree(root);
	free(root);
}

/* A full disk is 507 Insufficient Storage (not a 500 that clients retry),
 * nothing is stored, and the server goes on serving.  The disk is a 1 MiB
 * tmpfs: mounting one needs root. */
static void a_full_disk_answers_507_and_stores_nothing(void **state)
{
	char *dir = ts_mkdtemp(), cmd[600];
	unsigned char *big = ts_pattern(2 << 20, 7);
	struct ts_server s;
	struct ts_resp r;

	if (getuid() != 0) {
		rmdir(dir);
		free(dir);
		free(big);
		skip();  /* mounting a small tmpfs needs root */
	}
	snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=1m blkmap-test %s 2>&1", dir);
	if (system(cmd) != 0) {
		print_message("cannot mount a tmpfs here: skipped\n");
		rmdir(dir);
		free(dir);
		free(big);
		skip();
	}
	snprintf(s.root, sizeof(s.root), "%s", dir);
	int started = ts_start_disk(&s, NULL);
	long small = started == 0 ? ts_put(&s, "/small", "s", 1) : 0;
	if (started == 0)
		ts_request(NULL, &s, "PUT", "/big", NULL, big, 2 << 20, &r);
	long after = started == 0 ? ts_put(&s, "/after", "a", 1) : 0;
	long got_big = 0;
	if (started == 0) {
		struct ts_resp g;
		ts_request(NULL, &s, "GET", "/big", NULL, NULL, 0, &g);
		got_big = g.status;
		ts_resp_free(&g);
	}
	int stopped = started == 0 ? ts_stop(&s) : -1;
	snprintf(cmd, sizeof(cmd), "umount %s", dir);
	int unmounted = system(cmd);
	rmdir(dir);
	free(dir);
	free(big);
	assert_int_equal(started, 0);
	assert_int_equal(small, 201);
	assert_int_equal(r.status, 507);
	assert_non_null(strstr(r.body, "507 Insufficient Storage: the store's disk is full"));
	assert_non_null(strstr(r.body, "/big"));
	ts_resp_free(&r);
	assert_int_equal(got_big, 404);
	assert_int_equal(after, 201);  /* the failed upload left no file behind */
	assert_int_equal(stopped, 0);
	assert_int_equal(unmounted, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(restart_keeps_objects_and_etags),
		cmocka_unit_test(a_restart_sends_the_etag_kept_with_the_file_without_hashing_it),
		cmocka_unit_test(leftover_upload_files_are_removed_at_start),
		cmocka_unit_test(objects_on_disk_are_readable_by_other_users),
		cmocka_unit_test(a_full_disk_answers_507_and_stores_nothing),
		cmocka_unit_test(sigterm_finishes_requests_in_flight_then_exits_0),
		cmocka_unit_test(sigterm_closes_idle_connections_and_exits_0),
		cmocka_unit_test(sigterm_does_not_wait_for_a_partial_request_head),
		cmocka_unit_test(a_second_sigterm_during_a_graceful_stop_kills_at_once),
		cmocka_unit_test(help_names_every_option),
		cmocka_unit_test(bad_options_get_one_line_error_and_status_2),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
