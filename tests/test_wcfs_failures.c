/* tests/test_wcfs_failures.c — what blkmap-wcfs does when something around
 * it fails or is pushed to its limits: a server that fails while a file's
 * idle handle is closed (open is EIO with a log line, and works again once
 * the server is back), a listing that fails (the directory shows what was
 * looked up), a head/ switch that cannot compare the generations (the whole
 * file is dropped from the kernel cache), more blocks read at once than a
 * handle keeps, files open when the mirror ends, an environment setting
 * that does not parse, libfuse's thread options, and system calls that fail
 * in the mirror (sigaction, pthread_create: tests/fault_preload.c preloaded
 * into it).  A real mirror over a real blkmap-server, as in test_wcfs.c;
 * skipped, with the reason, where FUSE cannot be mounted.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <blkmap/blkmap.h>

#include "client_util.h"
#include "test_server_util.h"
#include "wcfs_util.h"
#include "wcfs_fixture.h"

static int exit_status(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- the server fails ----------------------------------------------------------------- */

/* A file open nowhere keeps its dataset handle only among the
 * WC_IDLE_HANDLES (8) most recently idle; beyond, the handle is closed and
 * reopened on the next open.  When the server fails then, that open is
 * EIO with the dataset named in the log — for @<gen>/ and head/ alike —
 * and once the server is back the same file opens and reads its bytes. */
static void test_a_closed_handle_that_cannot_be_reopened_opens_eio_then_recovers(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	unsigned char *data = ts_pattern(9000, 51);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "idle/a"), data, 9000, 4096), 1);
	/* Looked up (a handle each), and pinned: the kernel keeps the nodes,
	 * so the opens below reach the mirror's open, not a lookup. */
	int pin_gen = open(mpath(m, "@1/idle/a"), O_PATH);
	int pin_head = open(mpath(m, "head/idle/a"), O_PATH);
	assert_true(pin_gen >= 0);
	assert_true(pin_head >= 0);
	/* Nine more files looked up: idle handles more recent than a's. */
	for (int i = 0; i < 9; i++) {
		char path[64];
		snprintf(path, sizeof(path), "idle/b%d", i);
		assert_int_equal(wt_publish(ds_url(f, path), data, 100, 4096), 1);
		struct stat st;
		assert_int_equal(stat(mpath(m, "@1/%s", path), &st), 0);
	}
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 1}"), 200);
	errno = 0;
	int fd_gen = open(mpath(m, "@1/idle/a"), O_RDONLY);
	int err_gen = errno;
	errno = 0;
	int fd_head = open(mpath(m, "head/idle/a"), O_RDONLY);
	int err_head = errno;
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 0}"), 200);
	if (fd_gen >= 0)
		close(fd_gen);
	if (fd_head >= 0)
		close(fd_head);
	assert_int_equal(fd_gen, -1);
	assert_int_equal(err_gen, EIO);
	assert_int_equal(fd_head, -1);
	assert_int_equal(err_head, EIO);
	assert_true(file_has_line_with(m->log, "/idle/a (generation 1)", "503"));
	assert_true(file_has_line_with(m->log, "/idle/a (generation 0)", "503"));
	/* The server is back: the same files open and read. */
	assert_file_equals(mpath(m, "@1/idle/a"), data, 9000);
	assert_file_equals(mpath(m, "head/idle/a"), data, 9000);
	close(pin_gen);
	close(pin_head);
	free(data);
}

/* A directory whose listing fails (the server answers 503) is not an
 * error: it shows the datasets looked up under it, as on a server that
 * does not list. */
static void test_a_listing_that_fails_shows_what_was_looked_up(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	unsigned char *data = ts_pattern(5000, 52);
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "lsfail/seen"), data, 5000, 4096), 1);
	assert_int_equal(wt_publish(ds_url(f, "lsfail/unseen"), data, 5000, 4096), 1);
	assert_int_equal(stat(mpath(m, "head/lsfail/seen"), &st), 0);
	/* Opened before the server fails (a lookup of it then would fail). */
	int dfd = open(mpath(m, "head/lsfail"), O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 1}"), 200);
	DIR *d = fdopendir(dfd);
	assert_non_null(d);
	char names[256] = "";
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			strncat(names, names[0] ? " " : "", sizeof(names) - strlen(names) - 1);
			strncat(names, e->d_name, sizeof(names) - strlen(names) - 1);
		}
	int err = errno;
	closedir(d);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 0}"), 200);
	assert_int_equal(err, 0);
	assert_string_equal(names, "seen");
	/* With the server back, the listing has both. */
	assert_string_equal(list_dir(mpath(m, "head/lsfail")), "seen unseen");
	free(data);
}

/* The index pages (format 2: U/index/<sum>) the server holds for dataset
 * path, as "key key ..." (malloc'd). */
static char *index_keys(const struct fx *f, const char *path)
{
	char q[256];
	size_t cap = 1 << 16, len = 0;
	char *out = calloc(1, cap);

	snprintf(q, sizeof(q), "/%s/index/", path);
	json_t *j = ts_get_json(&f->srv->srv, q);
	assert_non_null(j);
	json_t *objs = json_object_get(j, "objects"), *o;
	size_t i;
	json_array_foreach(objs, i, o) {
		const char *k = json_string_value(json_object_get(o, "key"));
		assert_non_null(k);
		assert_true(len + strlen(k) + 2 < cap);
		len += (size_t)snprintf(out + len, cap - len, "%s ", k);
	}
	json_decref(j);
	return out;
}

/* When a head/ switch cannot tell which blocks changed (here: the old
 * generation's index pages are gone from the server before the mirror
 * compared them), the whole file is dropped from the kernel cache, with a
 * log line: a page read before the switch is read again, with the new
 * generation's bytes. */
static void test_a_head_switch_that_cannot_compare_drops_the_whole_file(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	const size_t bs = 4096, len = 300 * 4096; /* two index levels */
	unsigned char *old = ts_pattern(len, 55), *new = ts_pattern(len, 56);
	unsigned char got[4096];

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "nodiff/ds"), old, len, bs), 1);
	char *old_pages = index_keys(f, "nodiff/ds");
	int fd = open(mpath(m, "head/nodiff/ds"), O_RDONLY);
	assert_true(fd >= 0);
	/* Block 0 in the kernel cache, and only its index path in the
	 * handle's: the rest of the old tree is read when compared. */
	assert_int_equal(pread(fd, got, sizeof(got), 0), (ssize_t)sizeof(got));
	assert_memory_equal(got, old, sizeof(got));
	/* Every block changes: the new tree shares no page with the old. */
	assert_int_equal(wt_publish(ds_url(f, "nodiff/ds"), new, len, bs), 2);
	for (char *k = strtok(old_pages, " "); k; k = strtok(NULL, " ")) {
		char p[512];
		snprintf(p, sizeof(p), "/%s", k);
		assert_int_equal(ts_delete(&f->srv->srv, p), 204);
	}
	/* Past the attribute timeout and the check interval (1 s each), a
	 * stat makes the mirror switch; its reply waits for the drop. */
	bool logged = false;
	for (int64_t end = wt_now_ms() + 30000; !logged && wt_now_ms() < end;) {
		struct stat st;
		wt_sleep_ms(200);
		assert_int_equal(fstat(fd, &st), 0);
		logged = file_has_line_with(m->log, "head/nodiff/ds: cannot tell which blocks changed",
				  "the whole file is dropped");
	}
	assert_true(logged);
	assert_int_equal(pread(fd, got, sizeof(got), 0), (ssize_t)sizeof(got));
	close(fd);
	assert_memory_equal(got, new, sizeof(got));
	free(old_pages);
	free(old);
	free(new);
}

/* ---- limits ------------------------------------------------------------------------------ */

struct block_reader {
	const char *path;
	off_t off;
	unsigned char got[4096];
	ssize_t n;
	int err;
};

static void *read_block(void *arg)
{
	struct block_reader *r = arg;
	int fd = open(r->path, O_RDONLY);

	r->n = -1;
	if (fd < 0) {
		r->err = errno;
		return NULL;
	}
	r->n = pread(fd, r->got, sizeof(r->got), r->off);
	r->err = r->n < 0 ? errno : 0;
	close(fd);
	return NULL;
}

/* A handle keeps whole blocks in a few slots (2 for 4 MiB blocks); the
 * kernel reads a block in pieces.  Six readers of six blocks at once, each
 * block slow to come (300 ms of server latency): the readers that find
 * every slot loading read their piece directly, and every reader gets the
 * bytes of its own block. */
static void test_more_blocks_read_at_once_than_a_handle_keeps_all_read_right(void **state)
{
	struct fx *f = *state;
	const size_t bs = (size_t)4 << 20, nblk = 6;
	unsigned char *data = ts_pattern(nblk * bs, 53);
	struct block_reader r[6];
	pthread_t t[6];

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "slots/ds"), data, nblk * bs, bs), 1);
	const char *path = mpath(&f->mir, "@1/slots/ds");
	struct stat st;
	assert_int_equal(stat(path, &st), 0); /* the handle is open */
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-latency-ms\": 300}"), 200);
	for (size_t i = 0; i < nblk; i++) {
		r[i] = (struct block_reader){ .path = path, .off = (off_t)(i * bs + 8192) };
		assert_int_equal(pthread_create(&t[i], NULL, read_block, &r[i]), 0);
	}
	for (size_t i = 0; i < nblk; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-latency-ms\": 0}"), 200);
	for (size_t i = 0; i < nblk; i++) {
		if (r[i].n != 4096)
			fail_msg("block %zu: read %zd bytes (%s)", i, r[i].n, strerror(r[i].err));
		assert_memory_equal(r[i].got, data + r[i].off, 4096);
	}
	free(data);
}

/* ---- how the program starts ---------------------------------------------------------------- */

/* Files open when the mirror ends (SIGTERM; an unmount likewise overtakes
 * their release): the mirror frees their handles, kept blocks and nodes
 * itself and exits 0.  In the sanitizer build a leak makes the exit
 * status non-zero (LeakSanitizer). */
static void test_files_open_at_unmount_are_freed_and_the_mirror_exits_0(void **state)
{
	struct fx *f = *state;
	const size_t bs = 65536, len = 3 * 65536;
	unsigned char *data = ts_pattern(len, 57), got[4096];
	struct wt_mirror m;
	int status = -1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "atexit/ds"), data, len, bs), 1);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, mirror_env), 0);
	int head = open(mpath(&m, "head/atexit/ds"), O_RDONLY);
	int kept = open(mpath(&m, "@1/atexit/ds"), O_RDONLY);
	assert_true(head >= 0);
	assert_true(kept >= 0);
	/* A piece of a block: the handle keeps the whole block. */
	assert_int_equal(pread(head, got, sizeof(got), 4096), (ssize_t)sizeof(got));
	assert_int_equal(pread(kept, got, sizeof(got), bs + 4096), (ssize_t)sizeof(got));
	assert_memory_equal(got, data + bs + 4096, sizeof(got));
	kill(m.pid, SIGTERM); /* the mirror ends, both files open */
	for (int i = 0; i < 6000 && waitpid(m.pid, &status, WNOHANG) != m.pid; i++)
		wt_sleep_ms(10); /* 60 s: a hang */
	close(head);
	close(kept);
	m.pid = 0;
	wt_unmount(&m);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	free(data);
}

/* An environment setting of libblkmap that does not parse stops the
 * mirror before it mounts: exit status 2 and one line naming the setting. */
static void test_an_environment_setting_that_does_not_parse_exits_2_naming_it(void **state)
{
	struct fx *f = *state;
	static const char *const env[] = { "BLKMAP_TIMEOUT_MS=soon", NULL };
	int status;
	bool mounted;
	char *out = run_mirror_on_a_new_dir(NULL, f->srv->srv.url, env, &status, &mounted);

	if (exit_status(status) != 2 || tc_lines(out) != 1)
		print_error("blkmap-wcfs (status %d) said: %s", status, out);
	assert_int_equal(exit_status(status), 2);
	assert_non_null(strstr(out, "BLKMAP_TIMEOUT_MS=soon"));
	assert_int_equal(tc_lines(out), 1);
	assert_false(mounted);
	free(out);
}

/* libfuse's loop options (--help lists them): a descriptor per thread,
 * at most 4 threads of which 1 idle; the mirror serves the same. */
static void test_the_thread_options_of_libfuse_mount_a_mirror_that_serves(void **state)
{
	struct fx *f = *state;
	static const char *const args[] = { "-o", "clone_fd,max_threads=4,max_idle_threads=1", NULL };
	const struct wt_opts o = { .env = mirror_env, .args = args };
	unsigned char *data = ts_pattern(20000, 54);
	struct wt_mirror m;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "threads/ds"), data, 20000, 4096), 1);
	assert_int_equal(wt_mount_with(&m, f->srv->srv.url, &o), 0);
	size_t len = 0;
	unsigned char *got = wt_read_file(mpath(&m, "head/threads/ds"), &len);
	assert_int_equal(wt_unmount(&m), 0);
	assert_non_null(got);
	assert_int_equal(len, 20000);
	assert_memory_equal(got, data, 20000);
	free(got);
	free(data);
}

/* ---- system calls that fail in the mirror ---------------------------------------------- */

/* A mirror that cannot set itself up after mounting — its signal handlers
 * (sigaction fails) or its invalidation thread (pthread_create fails,
 * tests/fault_preload.c preloaded into it) — exits 1 with one line saying
 * what failed, and leaves no mount behind. */
static void test_a_mirror_that_cannot_set_itself_up_exits_1_and_leaves_no_mount(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *plan, *says;
	} cases[] = {
		{ "BLKMAP_TEST_FAULTS=sigaction,1,1,22", "signal handler" },
		{ "BLKMAP_TEST_FAULTS=pthread_create,1,1,11",
		  "cannot start the invalidation thread: Resource temporarily unavailable" },
	};
	char lib[PATH_MAX], preload[PATH_MAX + 16], asan[1024];

	SKIP_WITHOUT_FUSE(f);
	assert_non_null(realpath(wt_prog("tests/.libs/libfaultpreload.so"), lib));
	snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", lib);
	/* ASan wants its runtime first; the preloaded library comes before. */
	snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s:verify_asan_link_order=0",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const env[] = { preload, asan, cases[i].plan, NULL };
		int status;
		bool mounted;
		char *out = run_mirror_on_a_new_dir(NULL, f->srv->srv.url, env, &status, &mounted);

		if (exit_status(status) != 1 || tc_lines(out) != 1 || !strstr(out, cases[i].says))
			print_error("%s: blkmap-wcfs (status %d) said: %s", cases[i].plan, status, out);
		assert_int_equal(exit_status(status), 1);
		assert_non_null(strstr(out, cases[i].says));
		assert_int_equal(tc_lines(out), 1);
		assert_false(mounted);
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_closed_handle_that_cannot_be_reopened_opens_eio_then_recovers),
		cmocka_unit_test(test_a_listing_that_fails_shows_what_was_looked_up),
		cmocka_unit_test(test_a_head_switch_that_cannot_compare_drops_the_whole_file),
		cmocka_unit_test(test_more_blocks_read_at_once_than_a_handle_keeps_all_read_right),
		cmocka_unit_test(test_files_open_at_unmount_are_freed_and_the_mirror_exits_0),
		cmocka_unit_test(test_an_environment_setting_that_does_not_parse_exits_2_naming_it),
		cmocka_unit_test(test_the_thread_options_of_libfuse_mount_a_mirror_that_serves),
		cmocka_unit_test(test_a_mirror_that_cannot_set_itself_up_exits_1_and_leaves_no_mount),
	};

	return cmocka_run_group_tests_name("wcfs failures", tests, group_setup, group_teardown);
}
