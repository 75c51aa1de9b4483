/* tests/test_wcfs_nodes.c — what blkmap-wcfs shows as the kernel looks
 * names up, forgets them and lists directories, and how the program starts:
 * the top directory, statfs, view names, plain objects, a dataset deleted on
 * the server (gone once the kernel forgets it), a dataset recreated with
 * another block size, lookups on a failing server, -d, the background mode
 * and the default mountpoint, --version, a missing mountpoint; and, on a
 * server that cannot list (nginx), directories that show what was looked
 * up.  A real mirror over a real server, as in test_wcfs.c; skipped, with
 * the reason, where FUSE cannot be mounted.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <blkmap/blkmap.h>

#include "client_util.h"
#include "test_server_util.h"
#include "wcfs_util.h"
#include "wcfs_fixture.h"

/* Prints the mirror's log (for a failure's report). */
static void show_log(const char *path)
{
	char line[4096];
	FILE *l = fopen(path, "r");

	while (l && fgets(line, sizeof(line), l))
		print_error("mirror: %s", line);
	if (l)
		fclose(l);
}

static int stat_errno(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? 0 : errno;
}

/* Drops the kernel's unused dentries and inodes: the mirror gets FORGET
 * for every node of it that nothing holds.  false where that is not
 * allowed (not root). */
static bool kernel_forgets(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	bool ok = fd >= 0 && write(fd, "2", 1) == 1;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* Deletes, on the group's server, every object listed under PREFIX
 * ("/path/ds/": the manifest, the kept generations, the blocks). */
static void delete_every_object_under(const struct fx *f, const char *prefix)
{
	json_t *list = ts_get_json(&f->srv->srv, prefix);
	size_t i;
	json_t *o;

	assert_non_null(list);
	json_array_foreach(json_object_get(list, "objects"), i, o) {
		char key[512];
		snprintf(key, sizeof(key), "/%s", json_string_value(json_object_get(o, "key")));
		assert_int_equal(ts_delete(&f->srv->srv, key), 204);
	}
	json_decref(list);
}

/* ---- the top, statfs, names ------------------------------------------------------------- */

static void test_the_top_lists_head_and_wcfs(void **state)
{
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	assert_string_equal(list_dir(f->mir.mnt), ".wcfs head");
}

static void test_statfs_answers_so_df_works_on_the_mount(void **state)
{
	struct fx *f = *state;
	struct statvfs sv;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(statvfs(f->mir.mnt, &sv), 0);
	assert_true(sv.f_flag & ST_RDONLY);
	assert_int_equal(sv.f_namemax, 255);
	assert_int_equal(sv.f_bsize, 4096);
	assert_int_equal(sv.f_blocks, 0);
}

static void test_views_are_plain_decimal_generations(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	unsigned char *data = ts_pattern(5000, 31);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(url_of(f->srv->srv.url, "views/a"), data, 5000, 4096), 1);
	assert_int_equal(stat_errno(mpath(m, "@1/views/a")), 0);
	assert_int_equal(stat_errno(mpath(m, "@0")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@01")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@+1")), ENOENT);
	/* "@1x" would be the view of tag 1x (docs/wcfs.md); "@-1" is neither. */
	assert_int_equal(stat_errno(mpath(m, "@-1")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@")), ENOENT);
	/* Past 2^64: not generation 2^64 - 1 nor any other. */
	assert_int_equal(stat_errno(mpath(m, "@99999999999999999999999")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "tail")), ENOENT);
	free(data);
}

/* "@<tag>" is a view only for a name a tag may have (FORMAT.md "Tags": 1 to
 * 100 of A-Z a-z 0-9 . _ -, not starting with '.' or '-', not all digits);
 * any other "@..." is no view at all. */
static void test_tag_views_are_named_as_tags_may_be(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	char longest[102], too_long[103];
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	longest[0] = too_long[0] = '@';
	memset(longest + 1, 'a', 100);
	longest[101] = '\0';
	memset(too_long + 1, 'a', 101);
	too_long[102] = '\0';
	assert_int_equal(stat(mpath(m, "%s", longest), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(stat(mpath(m, "@v1.0_rc-2"), &st), 0);
	assert_int_equal(stat_errno(mpath(m, "%s", too_long)), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@.hidden")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@a+b")), ENOENT);
	assert_int_equal(stat_errno(mpath(m, "@a b")), ENOENT);
}

/* An object that is not a dataset (no manifest): bm_open would map it
 * flat, the mirror does not show it. */
static void test_a_plain_object_is_not_shown_as_a_dataset(void **state)
{
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(ts_put(&f->srv->srv, "/plain-object", "not a dataset", 13), 201);
	assert_int_equal(ts_put(&f->srv->srv, "/plain/object", "not a dataset", 13), 201);
	assert_int_equal(stat_errno(mpath(&f->mir, "head/plain-object")), ENOENT);
	assert_int_equal(stat_errno(mpath(&f->mir, "@1/plain-object")), ENOENT);
	/* Nor is a directory holding only plain objects. */
	assert_int_equal(stat_errno(mpath(&f->mir, "head/plain")), ENOENT);
}

/* ---- forgetting, recreating, failing ---------------------------------------------------- */

/* The mirror keeps a node while the kernel holds it; once the kernel
 * forgets it (FORGET), a lookup asks the server again: a dataset deleted
 * there is gone.  A mirror that never frees its nodes shows it forever. */
static void test_a_dataset_deleted_on_the_server_vanishes_once_the_kernel_forgets_it(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	unsigned char *data = ts_pattern(5000, 32);
	int err = 0;

	SKIP_WITHOUT_FUSE(f);
	if (!kernel_forgets()) {
		print_message("[  SKIP    ] cannot write /proc/sys/vm/drop_caches (not root)\n");
		free(data);
		skip();
	}
	assert_int_equal(wt_publish(url_of(f->srv->srv.url, "gone/ds"), data, 5000, 4096), 1);
	assert_file_equals(mpath(m, "head/gone/ds"), data, 5000);
	/* Its objects go: the manifest, the kept generation, the block. */
	delete_every_object_under(f, "/gone/ds/");
	/* Until FORGET is handled, each lookup the kernel makes finds the
	 * node again; 30 s bound: a mirror that never lets go fails here. */
	for (int64_t end = wt_now_ms() + 30000; wt_now_ms() < end; wt_sleep_ms(100)) {
		kernel_forgets();
		if ((err = stat_errno(mpath(m, "head/gone/ds"))) != 0)
			break;
	}
	assert_int_equal(err, ENOENT);
	/* The directory above goes the same way, once the kernel forgets it. */
	for (int64_t end = wt_now_ms() + 30000; wt_now_ms() < end; wt_sleep_ms(100)) {
		kernel_forgets();
		if ((err = stat_errno(mpath(m, "head/gone"))) != 0)
			break;
	}
	assert_int_equal(err, ENOENT);
	free(data);
}

/* head/ follows a dataset deleted and created again with another block
 * size: the whole file is dropped from the kernel cache, not block by
 * block of the old size, and the new bytes are read. */
static void test_a_dataset_recreated_with_another_block_size_reads_its_new_bytes(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	const size_t len = 3 * 65536;
	unsigned char *old = ts_pattern(len, 33), *new = ts_pattern(len, 34);
	const char *url = url_of(f->srv->srv.url, "resized/ds");
	struct stat st;
	int fd;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(url, old, len, 65536), 1);
	/* Kept open: the mirror keeps its handle, the kernel its pages. */
	fd = open(mpath(m, "head/resized/ds"), O_RDONLY);
	assert_true(fd >= 0);
	assert_file_equals(mpath(m, "head/resized/ds"), old, len);
	delete_every_object_under(f, "/resized/ds/");
	/* Generation 2 (the first of the new dataset is 1 again, which the
	 * mirror would take for the one it has). */
	assert_int_equal(wt_publish(url, new, len, 4096), 1);
	assert_int_equal(wt_publish(url, new, len, 4096), 2);
	/* The mirror checks head/ files at most once a second. */
	for (int64_t end = wt_now_ms() + 30000; wt_now_ms() < end; wt_sleep_ms(100))
		if (stat(mpath(m, "head/resized/ds"), &st) == 0 && st.st_blksize == 4096)
			break;
	assert_int_equal(st.st_blksize, 4096);
	assert_file_equals(mpath(m, "head/resized/ds"), new, len);
	close(fd);
	free(old);
	free(new);
}

static void test_a_lookup_on_a_failing_server_is_eio_with_a_log_line(void **state)
{
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 1}"), 200);
	int err = stat_errno(mpath(&f->mir, "head/never/looked-up"));
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 0}"), 200);
	assert_int_equal(err, EIO);
	/* The first name looked up is the one that failed. */
	assert_true(file_has_line_with(f->mir.log, "/never (generation 0)", "503"));
	/* Nothing failed is kept: with the server back, it is not there. */
	assert_int_equal(stat_errno(mpath(&f->mir, "head/never/looked-up")), ENOENT);
}

/* A head/ file whose server fails keeps the generation it has: its size
 * and bytes stay (the kernel cache), nothing vanishes. */
static void test_a_head_file_keeps_its_generation_while_the_server_fails(void **state)
{
	struct fx *f = *state;
	const struct wt_mirror *m = &f->mir;
	unsigned char *data = ts_pattern(9000, 38);
	struct stat st;
	int rc = -1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(url_of(f->srv->srv.url, "steady/ds"), data, 9000, 4096), 1);
	assert_file_equals(mpath(m, "head/steady/ds"), data, 9000);
	/* Pinned, so that the kernel cannot forget head/steady/ds meanwhile
	 * (memory pressure, or another test's drop_caches): a node it forgot
	 * must be looked up again, which a failing server answers EIO. */
	int pin = open(mpath(m, "head/steady/ds"), O_PATH);
	assert_true(pin >= 0);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 1}"), 200);
	/* Past the attribute timeout and the check interval (1 s each):
	 * the stat makes the mirror look for a new generation. */
	wt_sleep_ms(1500);
	rc = stat(mpath(m, "head/steady/ds"), &st);
	int stat_errno = errno;
	int fd = open(mpath(m, "head/steady/ds"), O_RDONLY);
	int open_errno = errno;
	unsigned char buf[9000];
	ssize_t got = fd >= 0 ? pread(fd, buf, sizeof(buf), 0) : -1;
	if (fd >= 0)
		close(fd);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 0}"), 200);
	close(pin);
	if (rc != 0 || fd < 0) /* which step failed, for the log */
		print_message("stat: %s; open: %s\n", rc ? strerror(stat_errno) : "ok",
			      fd < 0 ? strerror(open_errno) : "ok");
	assert_int_equal(rc, 0);
	assert_int_equal(st.st_size, 9000);
	assert_int_equal(got, 9000);
	assert_memory_equal(buf, data, 9000);
	free(data);
}

/* Directories open at once are listed and closed independently, in any
 * order. */
static void test_several_open_directories_list_and_close_independently(void **state)
{
	struct fx *f = *state;
	DIR *a, *b, *c;
	int na = 0, nb = 0, nc = 0;

	SKIP_WITHOUT_FUSE(f);
	a = opendir(mpath(&f->mir, ".wcfs"));
	b = opendir(f->mir.mnt);
	c = opendir(mpath(&f->mir, ".wcfs"));
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	while (readdir(a) != NULL)
		na++;
	while (readdir(b) != NULL)
		nb++;
	assert_int_equal(closedir(b), 0); /* the middle one first */
	while (readdir(c) != NULL)
		nc++;
	assert_int_equal(closedir(a), 0);
	assert_int_equal(closedir(c), 0);
	assert_int_equal(na, 3); /* . .. url */
	assert_int_equal(nb, 4); /* . .. .wcfs head */
	assert_int_equal(nc, 3);
}

/* ---- how the program runs ----------------------------------------------------------------- */

static void test_debug_mode_logs_requests_and_head_switches(void **state)
{
	struct fx *f = *state;
	static const char *const args[] = { "-d", NULL };
	const struct wt_opts o = { .env = mirror_env, .args = args };
	unsigned char *data = ts_pattern(8192, 35);
	const char *url = url_of(f->srv->srv.url, "debug/ds");
	struct wt_mirror m;
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(url, data, 8192, 4096), 1);
	assert_int_equal(wt_mount_with(&m, f->srv->srv.url, &o), 0);
	assert_file_equals(mpath(&m, "head/debug/ds"), data, 8192);
	assert_int_equal(wt_publish(url, data, 4096, 4096), 2);
	for (int64_t end = wt_now_ms() + 30000; wt_now_ms() < end; wt_sleep_ms(100))
		if (stat(mpath(&m, "head/debug/ds"), &st) == 0 && st.st_size == 4096)
			break;
	char log[300];
	snprintf(log, sizeof(log), "%s", m.log);
	/* The log goes with the mirror's directory: read it before. */
	bool requests = file_has_line_with(log, "LOOKUP", NULL);
	bool listed = file_has_line_with(log, "list ", NULL);
	bool switched = file_has_line_with(log, "head/debug/ds: generation 1 -> 2", "size 8192 -> 4096");
	assert_int_equal(wt_unmount(&m), 0);
	assert_int_equal(st.st_size, 4096);
	assert_true(requests);
	assert_true(listed);
	assert_true(switched);
	free(data);
}

/* The pid of a child of ours running blkmap-wcfs other than not (we are
 * its subreaper), or 0. */
static pid_t find_daemon(pid_t not)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = 0;

	while (d && found == 0 && (e = readdir(d)) != NULL) {
		char path[300], buf[512];
		int pid = atoi(e->d_name), ppid = 0;
		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		FILE *s = fopen(path, "r");
		if (s == NULL)
			continue;
		/* pid (comm) state ppid ... */
		if (fgets(buf, sizeof(buf), s) && strstr(buf, "(blkmap-wcfs)")) {
			const char *rp = strrchr(buf, ')');
			if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == getpid() && pid != not)
				found = pid;
		}
		fclose(s);
	}
	if (d)
		closedir(d);
	return found;
}

/* Without -f the mirror goes to the background once mounted (its first
 * process exits 0), and without a MOUNTPOINT it mounts where libblkmap
 * looks for a mirror of that URL; fusermount3 -u ends it with status 0. */
static void test_in_the_background_it_mounts_at_the_default_mountpoint(void **state)
{
	struct fx *f = *state;
	char mnt[512], urlfile[600], want[400], *got = NULL;
	size_t len = 0;
	int status = -1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(bm_wcfs_default_mountpoint(f->srv->srv.url, mnt, sizeof(mnt)), 0);
	assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	char log[] = "/tmp/blkmap-wcfs-bg-XXXXXX";
	int logfd = mkstemp(log);
	assert_true(logfd >= 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(logfd, 1);
		dup2(logfd, 2);
		execl(wt_prog("blkmap-wcfs"), "blkmap-wcfs", f->srv->srv.url, (char *)NULL);
		_exit(127);
	}
	close(logfd);
	/* The first process returns once the mount is there (30 s: a hang). */
	for (int i = 0; i < 3000 && waitpid(pid, &status, WNOHANG) != pid; i++)
		wt_sleep_ms(10);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		print_error("status %d\n", status);
		show_log(log);
	}
	unlink(log);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	pid_t daemon = find_daemon(f->mir.pid); /* not the group's mirror */
	snprintf(urlfile, sizeof(urlfile), "%s/.wcfs/url", mnt);
	snprintf(want, sizeof(want), "%s\n", f->srv->srv.url);
	got = (char *)wt_read_file(urlfile, &len);
	bool mounted = wt_is_mounted(mnt);
	const char *const umount[] = { "fusermount3", "-u", mnt, NULL };
	int urc = wt_run(umount);
	status = -1;
	for (int i = 0; daemon > 0 && i < 3000 && waitpid(daemon, &status, WNOHANG) != daemon; i++)
		wt_sleep_ms(10);
	prctl(PR_SET_CHILD_SUBREAPER, 0);
	if (!WIFEXITED(status))
		print_error("the mirror in the background: pid %d, wait status %d\n", (int)daemon, status);
	assert_true(mounted);
	assert_non_null(got);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(got, want, len);
	assert_int_equal(urc, 0);
	assert_true(daemon > 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(wt_is_mounted(mnt));
	free(got);
}

static void test_an_unknown_mount_option_exits_2(void **state)
{
	struct fx *f = *state;
	static const char *const opts[] = { "-o", "no_such_option", NULL };
	int status;
	bool mounted;
	char *out = run_mirror_on_a_new_dir(opts, f->srv->srv.url, NULL, &status, &mounted);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	assert_non_null(strstr(out, "no_such_option"));
	assert_false(mounted);
	free(out);
}

static void test_version_names_blkmap_and_libfuse_and_exits_0(void **state)
{
	const char *const argv[] = { "blkmap-wcfs", "--version", NULL };
	int status;
	char *out = wt_output(argv, NULL, &status);

	(void)state;
	assert_non_null(out);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_non_null(strstr(out, "blkmap-wcfs " PACKAGE_VERSION ", libfuse "));
	free(out);
}

static void test_a_missing_mountpoint_exits_2_naming_it(void **state)
{
	struct fx *f = *state;
	const char *const argv[] = { "blkmap-wcfs", "-f", f->srv->srv.url, "/nonexistent/blkmap-mnt", NULL };
	int status;
	char *out = wt_output(argv, NULL, &status);

	assert_non_null(out);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 2);
	assert_non_null(strstr(out, "/nonexistent/blkmap-mnt"));
	assert_non_null(strstr(out, "No such file or directory"));
	assert_int_equal(tc_lines(out), 1);
	free(out);
}

/* ---- a server that wants a token --------------------------------------------------------- */

/* BLKMAP_TOKEN goes with every request of the mirror, its listings too: a
 * server that requires the token lists and serves through the mirror. */
static void test_with_a_token_the_mirror_lists_and_reads_a_server_that_requires_it(void **state)
{
	struct fx *f = *state;
	static const char *const args[] = { "--memory", "--token", "s3cret-token", NULL };
	static const char *const env[] = { "BLKMAP_TOKEN=s3cret-token", "BLKMAP_RETRIES=1",
					   "BLKMAP_RETRY_BASE_MS=1", NULL };
	unsigned char *data = ts_pattern(6000, 37);
	struct ts_server srv;
	struct wt_mirror m;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(ts_start(&srv, args), 0);
	setenv("BLKMAP_TOKEN", "s3cret-token", 1);
	uint64_t gen = wt_publish(url_of(srv.url, "locked/ds"), data, 6000, 4096);
	unsetenv("BLKMAP_TOKEN");
	assert_int_equal(gen, 1);
	assert_int_equal(wt_mount(&m, srv.url, env), 0);
	const char *top = strdup(list_dir(mpath(&m, "head")));
	const char *dir = strdup(list_dir(mpath(&m, "head/locked")));
	size_t len = 0;
	unsigned char *got = wt_read_file(mpath(&m, "head/locked/ds"), &len);
	assert_int_equal(wt_unmount(&m), 0);
	assert_int_equal(ts_stop(&srv), 0);
	assert_string_equal(top, "locked");
	assert_string_equal(dir, "ds");
	assert_non_null(got);
	assert_int_equal(len, 6000);
	assert_memory_equal(got, data, 6000);
	free((void *)top);
	free((void *)dir);
	free(got);
	free(data);
}

/* ---- a server that cannot list (nginx) ------------------------------------------------- */

/* Without the server's listing, a directory shows the datasets and
 * directories below it that were looked up (a user who knows a name can
 * open it, and then sees it listed). */
static void test_without_listing_directories_show_what_was_looked_up(void **state)
{
	struct tc_store *st = tc_store_of(state);
	unsigned char *data = ts_pattern(5000, 36);
	char url[600];
	struct wt_mirror m;

	assert_int_equal(wt_publish(tc_store_url(url, sizeof(url), st, "/top/a"), data, 5000, 4096), 1);
	assert_int_equal(wt_publish(tc_store_url(url, sizeof(url), st, "/top/sub/b"), data, 5000, 4096), 1);
	int rc = wt_mount(&m, st->srv.url, mirror_env);
	if (rc == 1) {
		print_message("[  SKIP    ] %s\n", wt_skip_reason);
		free(data);
		skip();
	}
	assert_int_equal(rc, 0);
	const char *before = strdup(list_dir(mpath(&m, "head")));
	if (stat_errno(mpath(&m, "head/top/a")) != 0)
		show_log(m.log);
	assert_int_equal(stat_errno(mpath(&m, "head/top/a")), 0);
	const char *top = strdup(list_dir(mpath(&m, "head/top")));
	assert_int_equal(stat_errno(mpath(&m, "head/top/sub/b")), 0);
	const char *top2 = strdup(list_dir(mpath(&m, "head/top")));
	const char *sub = strdup(list_dir(mpath(&m, "head/top/sub")));
	const char *head = strdup(list_dir(mpath(&m, "head")));
	/* Another generation's view holds nodes of its own. */
	const char *view = strdup(list_dir(mpath(&m, "@1")));
	assert_int_equal(wt_unmount(&m), 0);
	assert_string_equal(before, "");
	assert_string_equal(top, "a");
	assert_string_equal(top2, "a sub");
	assert_string_equal(sub, "b");
	assert_string_equal(head, "top");
	assert_string_equal(view, "");
	free((void *)before);
	free((void *)top);
	free((void *)top2);
	free((void *)sub);
	free((void *)head);
	free((void *)view);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_top_lists_head_and_wcfs),
		cmocka_unit_test(test_statfs_answers_so_df_works_on_the_mount),
		cmocka_unit_test(test_views_are_plain_decimal_generations),
		cmocka_unit_test(test_tag_views_are_named_as_tags_may_be),
		cmocka_unit_test(test_a_plain_object_is_not_shown_as_a_dataset),
		cmocka_unit_test(test_a_dataset_deleted_on_the_server_vanishes_once_the_kernel_forgets_it),
		cmocka_unit_test(test_a_dataset_recreated_with_another_block_size_reads_its_new_bytes),
		cmocka_unit_test(test_a_lookup_on_a_failing_server_is_eio_with_a_log_line),
		cmocka_unit_test(test_a_head_file_keeps_its_generation_while_the_server_fails),
		cmocka_unit_test(test_several_open_directories_list_and_close_independently),
		cmocka_unit_test(test_debug_mode_logs_requests_and_head_switches),
		cmocka_unit_test(test_in_the_background_it_mounts_at_the_default_mountpoint),
		cmocka_unit_test(test_an_unknown_mount_option_exits_2),
		cmocka_unit_test(test_version_names_blkmap_and_libfuse_and_exits_0),
		cmocka_unit_test(test_a_missing_mountpoint_exits_2_naming_it),
		cmocka_unit_test(test_with_a_token_the_mirror_lists_and_reads_a_server_that_requires_it),
	};
	const struct CMUnitTest nginx_tests[] = {
		cmocka_unit_test(test_without_listing_directories_show_what_was_looked_up),
	};
	int failed = cmocka_run_group_tests_name("wcfs nodes", tests, group_setup, group_teardown);

	/* nginx answers no listing: the mirror falls back to what it holds
	 * (always nginx: BLKMAP_TEST_SERVER names the kind of other suites). */
	unsetenv("BLKMAP_TEST_SERVER");
	int nginx = tc_run_suite("nginx", nginx_tests, 1);
	if (nginx == 77)
		nginx = 0; /* nginx missing here: that part is skipped */
	return failed || nginx ? 1 : 0;
}
