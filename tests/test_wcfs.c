/* tests/test_wcfs.c — blkmap-wcfs against a real blkmap-server: a mirror is
 * mounted (-f, in a child process) on a temporary mountpoint for the group;
 * the tests publish datasets through libblkmap and check what the mirror's
 * files show: bytes, sizes, generations, holes, errors, refusals, mmap,
 * listings, and that unmounting (fusermount3 -u, SIGTERM) is clean.
 * Skipped, with the reason, where FUSE cannot be mounted.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <blkmap/blkmap.h>

#include "test_server_util.h"
#include "wcfs_util.h"
#include "wcfs_fixture.h"

static long server_gets(const struct fx *f)
{
	json_t *j = ts_get_json(&f->srv->srv, "/_admin/stats");
	long n;

	assert_non_null(j);
	n = (long)json_integer_value(json_object_get(json_object_get(j, "requests"), "GET"));
	json_decref(j);
	return n;
}

/* ---- what the files show ------------------------------------------------------------- */

static void test_url_file_holds_the_normalized_server_url(void **state)
{
	struct fx *f = *state;
	char want[600];
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	snprintf(want, sizeof(want), "%s\n", f->srv->srv.url);
	assert_file_equals(mpath(&f->mir, ".wcfs/url"), (const unsigned char *)want, strlen(want));
	assert_int_equal(stat(mpath(&f->mir, ".wcfs/url"), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, (off_t)strlen(want));
}

static void test_reads_equal_the_data_for_several_block_sizes(void **state)
{
	struct fx *f = *state;
	static const size_t sizes[] = { 4096, 65536, 1 << 20 };

	SKIP_WITHOUT_FUSE(f);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t bs = sizes[i], len = 3 * bs + 1234; /* not a multiple of bs */
		unsigned char *data = ts_pattern(len, (unsigned)i + 1), buf[10000];
		char name[64];

		snprintf(name, sizeof(name), "sizes/bs%zu", bs);
		assert_int_equal(wt_publish(ds_url(f, name), data, len, bs), 1);
		assert_file_equals(mpath(&f->mir, "head/%s", name), data, len);
		assert_file_equals(mpath(&f->mir, "@1/%s", name), data, len);

		/* A read across a block boundary, and one past the end. */
		int fd = open(mpath(&f->mir, "@1/%s", name), O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, buf, 5000, (off_t)bs - 100), 5000);
		assert_memory_equal(buf, data + bs - 100, 5000);
		assert_int_equal(pread(fd, buf, sizeof(buf), (off_t)len - 100), 100);
		assert_memory_equal(buf, data + len - 100, 100);
		assert_int_equal(pread(fd, buf, sizeof(buf), (off_t)len), 0);
		close(fd);
		free(data);
	}
}

static void test_stat_gives_the_dataset_size_and_block_size(void **state)
{
	struct fx *f = *state;
	unsigned char *data = ts_pattern(100000, 7);
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "stat/one"), data, 100000, 16384), 1);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(stat(mpath(&f->mir, i ? "@1/stat/one" : "head/stat/one"), &st), 0);
		assert_true(S_ISREG(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0444);
		assert_int_equal(st.st_size, 100000);
		assert_int_equal(st.st_blksize, 16384);
	}
	assert_int_equal(stat(mpath(&f->mir, "head/stat"), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0555);
	free(data);
}

/* A lookup under head/ asks for the dataset's manifest and nothing else:
 * no probe for a plain object of that name (the mirror shows datasets
 * only; a lookup of a generation sent none before either).  The
 * manifest's answer is held 300 ms, so a probe sent beside it would be
 * answered, and counted, before the lookup returns. */
static void test_a_lookup_sends_one_get_the_manifest_and_no_probe(void **state)
{
	struct fx *f = *state;
	unsigned char *data = ts_pattern(5000, 16);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "lookup-one-get"), data, 5000, 65536), 1);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-latency-ms\": 300, "
						   "\"fault-path\": \"lookup-one-get/manifest.json\"}"),
			 200);
	long before = server_gets(f);
	int pin = open(mpath(&f->mir, "head/lookup-one-get"), O_PATH);
	long gets = server_gets(f) - before;
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-latency-ms\": 0, \"fault-path\": \"\"}"),
			 200);
	assert_true(pin >= 0);
	assert_int_equal(gets, 1);
	close(pin);
	free(data);
}

static void test_holes_read_as_zeros_without_a_fetch(void **state)
{
	struct fx *f = *state;
	const size_t bs = 65536;
	const uint64_t size = 10 * bs + 100;
	const struct wt_piece pieces[] = {
		{ 2 * bs, bs, 0xaa },            /* block 2, whole */
		{ 7 * bs + 10, 1000, 0x55 },     /* inside block 7 */
	};
	unsigned char *want = calloc(1, size);

	SKIP_WITHOUT_FUSE(f);
	memset(want + 2 * bs, 0xaa, bs);
	memset(want + 7 * bs + 10, 0x55, 1000);
	assert_int_equal(wt_publish_sparse(ds_url(f, "sparse"), size, bs, pieces, 2), 1);
	/* Looked up (manifest read), and pinned so that the kernel cannot
	 * forget it meanwhile (test_wcfs_nodes' drop_caches running beside
	 * us): a forgotten file is looked up again, GETs and all. */
	int pin = open(mpath(&f->mir, "@1/sparse"), O_PATH);
	assert_true(pin >= 0);
	long before = server_gets(f);
	assert_file_equals(mpath(&f->mir, "@1/sparse"), want, size);
	assert_int_equal(server_gets(f) - before, 2 + 1); /* blocks 2 and 7 only, and the index page */
	close(pin);
	free(want);
}

static void test_unknown_paths_are_enoent(void **state)
{
	struct fx *f = *state;
	static const char *const paths[] = {
		"nope", "head/nope", "head/sizes/nope", "@1/nope", "@999/sizes/bs4096",
		"@0/sizes/bs4096", "@01/sizes/bs4096", "@x/sizes/bs4096", "head/with space",
		".wcfs/nope", "head/sizes/bs4096/below",
	};
	struct stat st;
	unsigned char *data = ts_pattern(5000, 3);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "sizes/bs4096"), data, 5000, 4096) > 0, 1);
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		errno = 0;
		int rc = stat(mpath(&f->mir, "%s", paths[i]), &st);
		if (rc == 0 || (errno != ENOENT && errno != ENOTDIR))
			fail_msg("stat %s: rc %d, %s (ENOENT expected)", paths[i], rc, strerror(errno));
	}
	free(data);
}

static void test_writes_are_refused(void **state)
{
	struct fx *f = *state;
	unsigned char *data = ts_pattern(5000, 4);
	const char *file = mpath(&f->mir, "head/ro/file");

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "ro/file"), data, 5000, 4096), 1);
	int flags[] = { O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND };
	for (size_t i = 0; i < 4; i++) {
		errno = 0;
		int fd = open(file, flags[i]);
		if (fd >= 0)
			close(fd);
		assert_int_equal(fd, -1);
		assert_true(errno == EROFS || errno == EACCES);
	}
	errno = 0;
	assert_int_equal(open(mpath(&f->mir, "head/ro/new"), O_WRONLY | O_CREAT, 0644), -1);
	assert_true(errno == EROFS || errno == EACCES);
	assert_int_equal(mkdir(mpath(&f->mir, "head/ro/dir"), 0755), -1);
	assert_true(errno == EROFS || errno == EACCES);
	assert_int_equal(unlink(file), -1);
	assert_true(errno == EROFS || errno == EACCES);
	assert_int_equal(truncate(file, 0), -1);
	assert_true(errno == EROFS || errno == EACCES);
	assert_file_equals(mpath(&f->mir, "@1/ro/file"), data, 5000);
	free(data);
}

static void test_mmap_shared_reads_the_same_bytes(void **state)
{
	struct fx *f = *state;
	const size_t len = 5 * 65536 + 777;
	unsigned char *data = ts_pattern(len, 5);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "mm/data"), data, len, 65536), 1);
	for (int i = 0; i < 2; i++) {
		int fd = open(mpath(&f->mir, i ? "head/mm/data" : "@1/mm/data"), O_RDONLY);
		assert_true(fd >= 0);
		void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
		assert_true(p != MAP_FAILED);
		assert_memory_equal(p, data, len);
		munmap(p, len);
		close(fd);
	}
	free(data);
}

static void test_kept_generation_is_served_from_the_kernel_cache(void **state)
{
	struct fx *f = *state;
	const size_t len = 8 * 65536;
	unsigned char *data = ts_pattern(len, 6);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "cached"), data, len, 65536), 1);
	/* Pinned so that the kernel cannot forget the file, and its cached
	 * pages with it, between the reads (test_wcfs_nodes' drop_caches
	 * running beside us did: 10 GETs on a re-read). */
	int pin = open(mpath(&f->mir, "@1/cached"), O_PATH);
	assert_true(pin >= 0);
	assert_file_equals(mpath(&f->mir, "@1/cached"), data, len);
	long before = server_gets(f);
	assert_file_equals(mpath(&f->mir, "@1/cached"), data, len);
	assert_file_equals(mpath(&f->mir, "@1/cached"), data, len);
	assert_int_equal(server_gets(f) - before, 0);
	close(pin);
	free(data);
}

static void test_a_big_block_is_fetched_once_though_the_kernel_reads_it_in_pieces(void **state)
{
	struct fx *f = *state;
	const size_t bs = 1 << 20, len = 3 * bs + 1000;
	unsigned char *data = ts_pattern(len, 13);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "bigblocks"), data, len, bs), 1);
	int pin = open(mpath(&f->mir, "@1/bigblocks"), O_PATH); /* looked up for good (above) */
	assert_true(pin >= 0);
	long before = server_gets(f);
	assert_file_equals(mpath(&f->mir, "@1/bigblocks"), data, len);
	assert_int_equal(server_gets(f) - before, 4 + 1); /* and the index page */
	close(pin);
	free(data);
}

/* The same read when the kernel's requests that start a block reach the
 * mirror after the ones behind them (the mirror holds them 30 ms: a
 * loaded machine's scheduler did this at times, and the block was then
 * fetched twice, its rest first, then all of it): still one GET a block. */
static void test_a_block_whose_first_request_comes_late_is_still_fetched_once(void **state)
{
	struct fx *f = *state;
	const size_t bs = 1 << 20, len = 3 * bs + 1000;
	unsigned char *data = ts_pattern(len, 17);
	static const char *const env[] = { "BLKMAP_RETRIES=1", "BLKMAP_RETRY_BASE_MS=1",
					   "BLKMAP_TIMEOUT_MS=5000", "BLKMAP_WCFS_TEST_LATE_BLOCK_MS=30",
					   NULL };
	struct wt_mirror m;
	char path[400];

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "lateblocks"), data, len, bs), 1);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, env), 0);
	snprintf(path, sizeof(path), "%s/@1/lateblocks", m.mnt);
	int pin = open(path, O_PATH); /* looked up for good */
	assert_true(pin >= 0);
	long before = server_gets(f);
	size_t n = 0;
	unsigned char *got = wt_read_file(path, &n);
	long gets = server_gets(f) - before;
	close(pin);
	int um = wt_unmount(&m);
	assert_non_null(got);
	assert_int_equal(n, len);
	assert_memory_equal(got, data, len);
	assert_int_equal(gets, 4 + 1); /* and the index page */
	assert_int_equal(um, 0);
	free(got);
	free(data);
}

static long server_bytes_out(const struct fx *f)
{
	json_t *j = ts_get_json(&f->srv->srv, "/_admin/stats");
	long n;

	assert_non_null(j);
	n = (long)json_integer_value(json_object_get(j, "bytes_out"));
	json_decref(j);
	return n;
}

/* pread of len bytes at off of path, equal to want. */
static void assert_pread_equals(const char *path, uint64_t off, const unsigned char *want, size_t len)
{
	unsigned char *buf = malloc(len);
	int fd = open(path, O_RDONLY);

	assert_non_null(buf);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	assert_memory_equal(buf, want, len);
	close(fd);
	free(buf);
}

/* A random 4 KiB read of a file of 1 MiB blocks in pieces of piece bytes
 * (64 KiB: format 3; else format 4; published with BLKMAP_PIECE_BYTES,
 * but for 16 KiB: what a dataset of 1 MiB blocks gets by default)
 * at name: one Range GET of the pieces the kernel's pages cover, not the
 * whole block; the file then reads right whole. */
static void random_read_of_pieces(struct fx *f, const char *name, size_t piece)
{
	const size_t bs = 1 << 20, len = 4 * bs;
	unsigned char *data = ts_pattern(len, 14);
	char at[128], num[32];

	if (piece != 16384) {
		snprintf(num, sizeof(num), "%zu", piece);
		setenv("BLKMAP_PIECE_BYTES", num, 1);
	}
	uint64_t gen = wt_publish(ds_url(f, name), data, len, bs);
	unsetenv("BLKMAP_PIECE_BYTES");
	assert_int_equal(gen, 1);
	struct bm_options o;
	bm_dataset *ds;
	assert_int_equal(bm_options_init(&o), 0);
	assert_int_equal(bm_open(&ds, ds_url(f, name), &o), 0);
	assert_int_equal(bm_format_version(ds), piece == 65536 ? 3 : 4);
	assert_int_equal(bm_piece_bytes(ds), piece);
	bm_close(ds);
	snprintf(at, sizeof(at), "@1/%s", name);
	const char *path = mpath(&f->mir, at);
	int pin = open(path, O_PATH); /* looked up for good (above) */
	assert_true(pin >= 0);
	/* A first read in block 3 also fetches the index page. */
	assert_pread_equals(path, 3 * bs + 5 * 65536 + 100, data + 3 * bs + 5 * 65536 + 100, 4096);
	/* 4 KiB in block 1: the kernel asks for a few pages, the mirror
	 * fetches the pieces they cover (one Range GET), never the whole
	 * block as before. */
	long gets = server_gets(f), out = server_bytes_out(f);
	uint64_t off = bs + 9 * 65536 + 1000;
	assert_pread_equals(path, off, data + off, 4096);
	assert_int_equal(server_gets(f) - gets, 1);
	long sent = server_bytes_out(f) - out;
	/* (Format 4's 16 KiB pieces: less than one 64 KiB piece of format 3.) */
	if (sent < (long)piece || sent >= (piece < 65536 ? 65536 : (long)bs / 2))
		fail_msg("the server sent %ld bytes for a 4 KiB read of a 1 MiB block in pieces of %zu",
			 sent, piece);
	print_message("a 4 KiB read in pieces of %zu: %ld bytes sent\n", piece, sent);
	/* The rest of that block, read from its start, is right (the pieces
	 * kept and the ones fetched now). */
	size_t n = 0;
	unsigned char *got = wt_read_file(path, &n);
	assert_non_null(got);
	assert_int_equal(n, len);
	assert_memory_equal(got, data, len);
	free(got);
	close(pin);
	free(data);
}

static void test_a_random_read_of_a_v3_file_fetches_pieces_not_its_whole_block(void **state)
{
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	/* 1 MiB blocks: format 3, 16 pieces of 64 KiB each. */
	random_read_of_pieces(f, "v3random", 65536);
}

static void test_a_random_read_of_a_v4_file_fetches_its_16k_pieces_not_its_whole_block(void **state)
{
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	/* 1 MiB blocks: format 4, 64 pieces of 16 KiB each. */
	random_read_of_pieces(f, "v4random", 16384);
}

static void test_a_damaged_piece_of_a_v3_file_reads_as_eio_naming_the_piece(void **state)
{
	struct fx *f = *state;
	const size_t bs = 1 << 20, len = 2 * bs;
	unsigned char *data = ts_pattern(len, 15);

	SKIP_WITHOUT_FUSE(f);
	setenv("BLKMAP_PIECE_BYTES", "65536", 1); /* format 3 */
	assert_int_equal(wt_publish(ds_url(f, "bad/v3corrupt"), data, len, bs), 1);
	unsetenv("BLKMAP_PIECE_BYTES");
	const char *path = mpath(&f->mir, "@1/bad/v3corrupt");
	int pin = open(path, O_PATH); /* looked up for good (see above) */
	assert_true(pin >= 0);
	/* The index page first, from a sound server. */
	assert_pread_equals(path, bs + 100, data + bs + 100, 100);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-corrupt-rate\": 1}"), 200);
	int fd = open(path, O_RDONLY);
	unsigned char buf[4096];
	assert_true(fd >= 0);
	errno = 0;
	assert_int_equal(pread(fd, buf, sizeof(buf), 7 * 65536 + 10), -1);
	assert_int_equal(errno, EIO);
	close(fd);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-corrupt-rate\": 0}"), 200);
	assert_true(file_has_line_with(f->mir.log, "bad/v3corrupt", "checksum mismatch"));
	assert_true(file_has_line_with(f->mir.log, "bad/v3corrupt", "piece 7"));
	/* Nothing bad was kept: the next read fetches again and is right. */
	assert_pread_equals(path, 7 * 65536 + 10, data + 7 * 65536 + 10, 4096);
	close(pin);
	free(data);
}

/* ---- generations ----------------------------------------------------------------------- */

static void test_old_generation_keeps_its_content_while_head_shows_the_new(void **state)
{
	struct fx *f = *state;
	const size_t bs = 65536, len1 = 5 * bs + 100, len2 = 7 * bs + 3;
	unsigned char *v1 = ts_pattern(len1, 8), *v2 = malloc(len2);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "gens/ds"), v1, len1, bs), 1);
	/* Read everything once: the kernel caches generation 1 under head/ and
	 * @1/, and a mapping of head/ holds its pages. */
	assert_file_equals(mpath(&f->mir, "head/gens/ds"), v1, len1);
	assert_file_equals(mpath(&f->mir, "@1/gens/ds"), v1, len1);
	int fd = open(mpath(&f->mir, "head/gens/ds"), O_RDONLY);
	assert_true(fd >= 0);
	unsigned char *map = mmap(NULL, len1, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	assert_memory_equal(map, v1, len1);

	/* Generation 2: block 1 changed, the dataset grew. */
	memcpy(v2, v1, len1);
	memset(v2 + bs + 100, 0x77, 5000);
	memset(v2 + len1, 0x33, len2 - len1);
	assert_int_equal(wt_publish(ds_url(f, "gens/ds"), v2, len2, bs), 2);

	assert_file_equals(mpath(&f->mir, "head/gens/ds"), v2, len2);
	assert_file_equals(mpath(&f->mir, "@1/gens/ds"), v1, len1);
	assert_file_equals(mpath(&f->mir, "@2/gens/ds"), v2, len2);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, (off_t)len2);
	/* The old mapping sees the new bytes of the changed block. */
	assert_memory_equal(map, v2, len1);
	munmap(map, len1);
	close(fd);
	free(v1);
	free(v2);
}

static void test_head_size_change_shows_in_stat_without_reopening(void **state)
{
	struct fx *f = *state;
	unsigned char *data = ts_pattern(200000, 9);
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "grow"), data, 100000, 4096), 1);
	assert_int_equal(stat(mpath(&f->mir, "head/grow"), &st), 0);
	assert_int_equal(st.st_size, 100000);
	assert_int_equal(wt_publish(ds_url(f, "grow"), data, 200000, 4096), 2);
	/* getattr checks the generation at most once a second (60 s: a hang). */
	for (int i = 0; i < 600 && st.st_size != 200000; i++) {
		wt_sleep_ms(100);
		assert_int_equal(stat(mpath(&f->mir, "head/grow"), &st), 0);
	}
	assert_int_equal(st.st_size, 200000);
	free(data);
}

/* Runs fn(arg) in a child process: its exit status, or -1 when it did not
 * finish within seconds (a hang: the connection of mirror m is aborted,
 * which frees the child, and the child is killed).  A watchdog, not a
 * timing: the bound is far above what the work takes.  fn must not use
 * cmocka's assertions. */
static int run_bounded(struct wt_mirror *m, int (*fn)(void *), void *arg, int seconds)
{
	int status;
	pid_t pid = fork();

	if (pid == 0)
		_exit(fn(arg));
	assert_true(pid > 0);
	for (long i = 0; i < seconds * 100L; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		wt_sleep_ms(10);
	}
	print_error("still running after %d s: aborting the mirror's connection\n", seconds);
	wt_abort(m);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

static int open_and_close(void *path)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return 1;
	close(fd);
	return 0;
}

static void put_empty_manifest(const struct fx *f, const char *path, uint64_t size, uint64_t gen)
{
	char key[256], json[512];

	snprintf(key, sizeof(key), "/%s/manifest.json", path);
	snprintf(json, sizeof(json),
		 "{\"format\":\"blkmap-dataset\",\"version\":1,\"blksize\":4096,\"size\":%" PRIu64
		 ",\"generation\":%" PRIu64 ",\"checksum\":\"xxh128\",\"blocks\":[]}", size, gen);
	long st = ts_put(&f->srv->srv, key, json, strlen(json));
	if (st != 200 && st != 201 && st != 204)
		fail_msg("PUT %s: HTTP %ld", key, st);
}

/* A manifest may claim 2^50 bytes in 4 KiB blocks (2^38 blocks): the
 * switch to its next generation costs its stored blocks (none), not its
 * block count, so an open of head/ answers at once. */
static void test_head_switch_of_a_2_pow_50_byte_dataset_costs_its_stored_blocks_only(void **state)
{
	struct fx *f = *state;
	const uint64_t size = (uint64_t)1 << 50;
	struct wt_mirror m;
	char path[400];
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, mirror_env), 0);
	snprintf(path, sizeof(path), "%s/head/huge", m.mnt);
	put_empty_manifest(f, "huge", size, 1);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	put_empty_manifest(f, "huge", size, 2);
	int rc = run_bounded(&m, open_and_close, path, 20); /* open: generation check, switch */
	int um = wt_unmount(&m);
	assert_int_equal(rc, 0);
	assert_int_equal(um, 0);
}

/* The switch walks the stored blocks of both generations: a block changed
 * and one stored where there was a hole both show under head/. */
static void test_head_shows_changed_and_new_blocks_of_a_sparse_dataset(void **state)
{
	struct fx *f = *state;
	const size_t bs = 4096;
	const uint64_t size = 64 * bs;
	const struct wt_piece v1[] = { { 3 * bs, bs, 0x11 }, { 40 * bs, bs, 0x22 }, { 50 * bs, bs, 0x33 } };
	const struct wt_piece v2[] = { { 3 * bs, bs, 0x11 }, { 10 * bs, bs, 0x44 }, { 40 * bs, bs, 0x55 } };
	/* (The mirror's walk over the blocks of both generations, not one.) */
	unsigned char *want = calloc(1, size);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish_sparse(ds_url(f, "sparse2"), size, bs, v1, 3), 1);
	memset(want + 3 * bs, 0x11, bs);
	memset(want + 40 * bs, 0x22, bs);
	memset(want + 50 * bs, 0x33, bs);
	assert_file_equals(mpath(&f->mir, "head/sparse2"), want, size); /* now in the kernel cache */
	/* Generation 2: block 40 changed, block 10 stored in a hole. */
	struct bm_options o;
	bm_dataset *ds;
	uint64_t gen = 0;
	assert_int_equal(bm_options_init(&o), 0);
	assert_int_equal(bm_open(&ds, ds_url(f, "sparse2"), &o), 0);
	for (int i = 0; i < 3; i++) {
		unsigned char blk[4096];
		memset(blk, v2[i].byte, bs);
		assert_int_equal(bm_write(ds, v2[i].off, blk, bs), 0);
	}
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	assert_int_equal(gen, 2);
	memset(want + 10 * bs, 0x44, bs);
	memset(want + 40 * bs, 0x55, bs);
	assert_file_equals(mpath(&f->mir, "@2/sparse2"), want, size);
	assert_file_equals(mpath(&f->mir, "head/sparse2"), want, size);
	free(want);
}

/* Reads path over and over, dropping its page cache before each pass (so
 * that its reads keep pages locked in the kernel); reopens it each pass
 * when reopen (each open checks head/'s generation).  Until killed. */
static void read_forever(const char *path, bool reopen)
{
	static char buf[1 << 17];
	int fd = -1;

	for (;;) {
		if (reopen || fd < 0) {
			if (fd >= 0)
				close(fd);
			fd = open(path, O_RDONLY);
		}
		if (fd < 0) {
			wt_sleep_ms(1);
			continue;
		}
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		for (off_t off = 0;; off += sizeof(buf))
			if (pread(fd, buf, sizeof(buf), off) <= 0)
				break;
	}
}

struct switcher {
	const struct fx *f;
	const char *name;            /* the dataset */
	const char *path;            /* its head/ file in the mirror */
	unsigned char *data[2];      /* the generations alternate between these */
	size_t len;
	int generations;
};

/* Publishes generations 2, 3... while the readers run; after each, an open
 * of head/ must answer and read the new bytes only (no old byte survives
 * a switch).  0, or 1 + the number of the generation that read wrong. */
static int switch_generations(void *arg)
{
	struct switcher *sw = arg;

	for (int g = 2; g < 2 + sw->generations; g++) {
		const unsigned char *want = sw->data[g % 2];
		if (wt_publish(ds_url(sw->f, sw->name), want, sw->len, 65536) != (uint64_t)g)
			return 1;
		size_t len = 0;
		unsigned char *got = wt_read_file(sw->path, &len);
		bool same = got && len == sw->len && !memcmp(got, want, len);
		free(got);
		if (!same)
			return 1 + g;
	}
	return 0;
}

/* head/ switches generations while other processes read and reopen it: the
 * kernel waits for pages locked under reads queued in the mirror, so the
 * invalidation must never keep a worker (with -s, the only one) from
 * serving them.  Run under a watchdog: a deadlock fails the test. */
static void check_switches_under_readers(struct fx *f, const char *name, const char *const *args,
					 int nreaders, int nreopeners)
{
	const size_t len = 4 << 20;
	const struct wt_opts o = { .env = mirror_env, .args = args };
	struct wt_mirror m;
	struct switcher sw = { .f = f, .name = name, .len = len, .generations = 8 };
	pid_t kids[32];
	int nkids = 0;
	char path[400];

	sw.data[0] = ts_pattern(len, 21);
	sw.data[1] = ts_pattern(len, 22);
	sw.path = path;
	assert_int_equal(wt_mount_with(&m, f->srv->srv.url, &o), 0);
	snprintf(path, sizeof(path), "%s/head/%s", m.mnt, name);
	/* Generation 1 (then 2, 3... alternate between the two patterns). */
	assert_int_equal(wt_publish(ds_url(f, name), sw.data[1], len, 65536), 1);
	for (int i = 0; i < nreaders + nreopeners && nkids < 32; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			read_forever(path, i >= nreaders);
		}
		kids[nkids++] = pid;
	}
	int rc = run_bounded(&m, switch_generations, &sw, 30);
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGKILL);
	for (int i = 0; i < nkids; i++)
		waitpid(kids[i], NULL, 0);
	int um = wt_unmount(&m);
	free(sw.data[0]);
	free(sw.data[1]);
	if (rc < 0)
		fail_msg("the generation switches hung (a deadlock in the mirror)");
	if (rc > 1)
		fail_msg("head/%s read old bytes after the switch to generation %d", name, rc - 1);
	assert_int_equal(rc, 0);
	assert_int_equal(um, 0);
}

static void test_head_switches_under_readers_never_hang_a_single_threaded_mirror(void **state)
{
	static const char *const args[] = { "-s", NULL };
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	check_switches_under_readers(f, "busy/single", args, 4, 1);
}

static void test_head_switches_under_more_reopeners_than_threads_never_hang(void **state)
{
	static const char *const args[] = { "-o", "max_threads=4", NULL };
	struct fx *f = *state;

	SKIP_WITHOUT_FUSE(f);
	check_switches_under_readers(f, "busy/threads", args, 4, 8);
}

/* ---- resources ------------------------------------------------------------------------- */

static int count_fds(pid_t pid)
{
	char dir[64];
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	if ((d = opendir(dir)) == NULL)
		return -1;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Each dataset handle holds a few fds (sockets, a memfd): a mirror allowed
 * 64 fds reads 40 files, under head/ and @1/, twice (closed handles are
 * reopened), and ends with about as many fds as it had; a head/ file
 * whose handle was closed shows a new generation. */
static void test_more_files_than_the_fd_limit_has_handles_for_all_read(void **state)
{
	static const char *const nofile_env[] = { "BLKMAP_RETRIES=1", "BLKMAP_RETRY_BASE_MS=1", NULL };
	const struct wt_opts o = { .env = nofile_env, .nofile = 64 };
	struct fx *f = *state;
	const int nfiles = 40;
	const size_t len = 3 * 4096 + 100;
	struct wt_mirror m;
	char name[64], path[400];

	SKIP_WITHOUT_FUSE(f);
	for (int i = 0; i < nfiles; i++) {
		unsigned char *data = ts_pattern(len, 100 + (unsigned)i);
		snprintf(name, sizeof(name), "many/f%d", i);
		assert_int_equal(wt_publish(ds_url(f, name), data, len, 4096), 1);
		free(data);
	}
	assert_int_equal(wt_mount_with(&m, f->srv->srv.url, &o), 0);
	int fds_before = count_fds(m.pid);
	for (int pass = 0; pass < 4; pass++) {
		for (int i = 0; i < nfiles; i++) {
			unsigned char *data = ts_pattern(len, 100 + (unsigned)i);
			size_t got_len = 0;
			snprintf(path, sizeof(path), "%s/%s/many/f%d", m.mnt, pass % 2 ? "@1" : "head", i);
			unsigned char *got = wt_read_file(path, &got_len);
			int err = errno;
			bool same = got && got_len == len && !memcmp(got, data, len);
			free(got);
			free(data);
			if (!same) {
				wt_unmount(&m);
				fail_msg("pass %d: %s: %s", pass, path, got ? "wrong bytes" : strerror(err));
			}
		}
	}
	int fds_after = count_fds(m.pid);
	/* A head/ file whose handle was closed for others (the first ones
	 * read are) still follows a new generation: the kernel's cache of it
	 * is dropped whole, as the old handle cannot say what changed. */
	unsigned char *v2 = ts_pattern(len, 99);
	bool followed = false;
	assert_int_equal(wt_publish(ds_url(f, "many/f0"), v2, len, 4096), 2);
	snprintf(path, sizeof(path), "%s/head/many/f0", m.mnt);
	for (int i = 0; i < 200 && !followed; i++) { /* checks are 1 s apart: 10 s at most */
		size_t got_len = 0;
		unsigned char *got = wt_read_file(path, &got_len);
		followed = got && got_len == len && !memcmp(got, v2, len);
		free(got);
		if (!followed)
			wt_sleep_ms(50);
	}
	free(v2);
	assert_int_equal(wt_unmount(&m), 0);
	print_message("mirror fds: %d at the start, %d after reading %d files 4 times\n", fds_before,
		      fds_after, nfiles);
	assert_true(fds_after < 64);
	assert_true(followed);
}

/* ---- directories ---------------------------------------------------------------------- */

static void test_directories_list_the_datasets_below_them(void **state)
{
	struct fx *f = *state;
	unsigned char *data = ts_pattern(5000, 10);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "tree/x/a"), data, 5000, 4096), 1);
	assert_int_equal(wt_publish(ds_url(f, "tree/x/b"), data, 5000, 4096), 1);
	assert_int_equal(wt_publish(ds_url(f, "tree/y"), data, 5000, 4096), 1);
	assert_int_equal(wt_publish(ds_url(f, "tree/y"), data, 4000, 4096), 2);
	assert_string_equal(list_dir(mpath(&f->mir, "head/tree")), "x y");
	assert_string_equal(list_dir(mpath(&f->mir, "head/tree/x")), "a b");
	assert_string_equal(list_dir(mpath(&f->mir, "@2/tree")), "y");
	assert_string_equal(list_dir(mpath(&f->mir, ".wcfs")), "url");
	free(data);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void expect_eio(const char *path, size_t len)
{
	unsigned char *buf = malloc(len);
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	errno = 0;
	assert_int_equal(read(fd, buf, len), -1);
	assert_int_equal(errno, EIO);
	close(fd);
	free(buf);
}

static void test_corrupt_blocks_read_as_eio_never_as_wrong_bytes(void **state)
{
	struct fx *f = *state;
	const size_t len = 3 * 65536;
	unsigned char *data = ts_pattern(len, 11);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "bad/corrupt"), data, len, 65536), 1);
	/* Looked up, and pinned so that the kernel cannot forget it meanwhile
	 * (memory pressure, or test_wcfs_nodes' drop_caches running beside
	 * us): a forgotten file is looked up again, on the faulty server. */
	int pin = open(mpath(&f->mir, "@1/bad/corrupt"), O_PATH);
	assert_true(pin >= 0);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-corrupt-rate\": 1}"), 200);
	expect_eio(mpath(&f->mir, "@1/bad/corrupt"), len);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-corrupt-rate\": 0}"), 200);
	assert_true(file_has_line_with(f->mir.log, "bad/corrupt", "checksum"));
	/* Nothing bad was cached: the next read fetches again and is right. */
	assert_file_equals(mpath(&f->mir, "@1/bad/corrupt"), data, len);
	close(pin);
	free(data);
}

static void test_failing_server_reads_give_eio_and_a_log_line(void **state)
{
	struct fx *f = *state;
	const size_t len = 2 * 65536;
	unsigned char *data = ts_pattern(len, 12);

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "bad/down"), data, len, 65536), 1);
	/* Looked up, and pinned so that the kernel cannot forget it meanwhile
	 * (memory pressure, or test_wcfs_nodes' drop_caches running beside
	 * us): a forgotten file is looked up again, on the faulty server. */
	int pin = open(mpath(&f->mir, "@1/bad/down"), O_PATH);
	assert_true(pin >= 0);
	int head = open(mpath(&f->mir, "head/bad/down"), O_RDONLY);
	assert_true(head >= 0);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 1}"), 200);
	expect_eio(mpath(&f->mir, "@1/bad/down"), len);
	errno = 0;
	assert_int_equal(pread(head, data, 100, 65536), -1);
	assert_int_equal(errno, EIO);
	close(head);
	assert_int_equal(ts_set_faults(&f->srv->srv, "{\"fault-error-rate\": 0}"), 200);
	/* Each line names the view the read came through. */
	assert_true(file_has_line_with(f->mir.log, "@1/bad/down", "EIO"));
	assert_true(file_has_line_with(f->mir.log, "head/bad/down", "EIO"));
	assert_file_equals(mpath(&f->mir, "@1/bad/down"), data, len);
	close(pin);
	free(data);
}

/* ---- long names ------------------------------------------------------------------------ */

/* A server for keys longer than blkmap-server takes (1 KiB): answers GET
 * MANIFEST_PATH with a 4 KiB dataset's manifest and everything else 404
 * (so it does not list: every other name is taken for a directory), and
 * counts the requests for MANIFEST_PATH. */
struct long_server {
	int fd;
	pthread_t thread;
	char url[64];
	const char *manifest_path;
	atomic_int manifest_gets;
};

static void *long_server_main(void *arg)
{
	static const char manifest[] =
		"{\"format\":\"blkmap-dataset\",\"version\":1,\"blksize\":4096,\"size\":4096,"
		"\"generation\":1,\"checksum\":\"xxh128\",\"blocks\":[]}";
	struct long_server *ls = arg;
	static char req[65536], method[16], path[16384], resp[1024];
	int c;

	while ((c = accept(ls->fd, NULL, NULL)) >= 0) {
		size_t got = 0;
		ssize_t r;
		while (got < sizeof(req) - 1 && (r = read(c, req + got, sizeof(req) - 1 - got)) > 0) {
			req[got += (size_t)r] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		if (got > 0 && sscanf(req, "%15s %16383s", method, path) == 2 &&
		    !strcmp(method, "GET") && !strcmp(path, ls->manifest_path)) {
			atomic_fetch_add(&ls->manifest_gets, 1);
			snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				 "ETag: \"m1\"\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
				 strlen(manifest), manifest);
		} else {
			snprintf(resp, sizeof(resp), "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
				 "Connection: close\r\n\r\n");
		}
		if (write(c, resp, strlen(resp)) < 0)
			(void)0;
		close(c);
	}
	return NULL;
}

/* Listen: ls->url is known from here on. */
static void long_server_listen(struct long_server *ls)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	atomic_init(&ls->manifest_gets, 0);
	ls->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(ls->fd >= 0);
	assert_int_equal(bind(ls->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(ls->fd, 64), 0);
	assert_int_equal(getsockname(ls->fd, (struct sockaddr *)&a, &alen), 0);
	snprintf(ls->url, sizeof(ls->url), "http://127.0.0.1:%d", ntohs(a.sin_port));
}

/* Serve: manifest_path is final (the thread reads it from now on). */
static void long_server_start(struct long_server *ls, const char *manifest_path)
{
	ls->manifest_path = manifest_path;
	assert_int_equal(pthread_create(&ls->thread, NULL, long_server_main, ls), 0);
}

static void long_server_stop(struct long_server *ls)
{
	shutdown(ls->fd, SHUT_RDWR); /* accept fails: the thread ends */
	pthread_join(ls->thread, NULL);
	close(ls->fd);
}

/* A dataset path whose URL is one byte too long for the mirror (4096 with
 * its NUL) fails with ENAMETOOLONG; it must not open the dataset its cut
 * URL names (here "<16 dirs>/xxx...", one byte shorter). */
static void test_a_name_too_long_for_a_url_is_enametoolong_not_another_dataset(void **state)
{
	struct fx *f = *state;
	struct long_server ls;
	struct wt_mirror m;
	static char comp[251], dirs[16 * 251 + 1], shortname[200], longname[256], manifest_path[8192];
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	memset(comp, 'a', 250);
	for (int i = 0; i < 16; i++) {
		memset(dirs + i * 251, 'a', 250);
		dirs[i * 251 + 250] = '/';
	}
	/* Filled in once the server's URL (hence its length) is known, and
	 * before its thread starts reading it. */
	long_server_listen(&ls);
	size_t t = 4095 - strlen(ls.url) - 1 - strlen(dirs); /* URL of dirs+shortname: 4095 */
	assert_true(t > 1 && t < 200);
	memset(shortname, 'x', t);
	snprintf(longname, sizeof(longname), "%sy", shortname);
	snprintf(manifest_path, sizeof(manifest_path), "/%s%s/manifest.json", dirs, shortname);
	long_server_start(&ls, manifest_path);
	assert_int_equal(wt_mount(&m, ls.url, mirror_env), 0);

	int dfd = open(m.mnt, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	for (int i = 0; i <= 16; i++) {
		int next = openat(dfd, i == 0 ? "head" : comp, O_RDONLY | O_DIRECTORY);
		if (next < 0)
			fail_msg("opening directory %d of the long path: %s", i, strerror(errno));
		close(dfd);
		dfd = next;
	}
	/* The dataset of the longest URL that fits is there... */
	assert_int_equal(fstatat(dfd, shortname, &st, 0), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 4096);
	/* A name beside it that is no dataset might be a directory, but its
	 * listing's URL (one '/' longer) does not fit: ENAMETOOLONG, not
	 * ENOENT, and not a directory nobody can list. */
	static char other[200];
	memset(other, 'z', t);
	int other_rc = fstatat(dfd, other, &st, 0), other_err = errno;
	/* A name whose dataset path itself (not only its URL) would pass
	 * WC_URL_MAX: refused the same. */
	errno = 0;
	int path_rc = fstatat(dfd, comp, &st, 0), path_err = errno;
	int gets = atomic_load(&ls.manifest_gets);
	/* ...and one byte more is refused, without a request for the cut URL. */
	errno = 0;
	int rc = fstatat(dfd, longname, &st, 0);
	int err = errno;
	close(dfd);
	assert_int_equal(wt_unmount(&m), 0);
	long_server_stop(&ls);
	if (rc == 0)
		fail_msg("head/<16 dirs>/x...xy (%zu bytes): found, a %s of %jd bytes (the cut URL's?),"
			 " ENAMETOOLONG expected", strlen(dirs) + strlen(longname),
			 S_ISREG(st.st_mode) ? "file" : "directory", (intmax_t)st.st_size);
	assert_int_equal(err, ENAMETOOLONG);
	assert_int_equal(atomic_load(&ls.manifest_gets), gets);
	assert_int_equal(other_rc, -1);
	assert_int_equal(other_err, ENAMETOOLONG);
	assert_int_equal(path_rc, -1);
	assert_int_equal(path_err, ENAMETOOLONG);
}

/* ---- the process ------------------------------------------------------------------------- */

static void test_fusermount_unmounts_cleanly_and_the_mirror_exits_0(void **state)
{
	struct fx *f = *state;
	struct wt_mirror m;
	char mnt[300];

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, NULL), 0);
	snprintf(mnt, sizeof(mnt), "%s", m.mnt);
	assert_true(wt_is_mounted(mnt));
	assert_int_equal(wt_unmount(&m), 0);
	assert_false(wt_is_mounted(mnt));
}

static void test_sigterm_unmounts_and_exits_0(void **state)
{
	struct fx *f = *state;
	struct wt_mirror m;
	int status = -1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, NULL), 0);
	kill(m.pid, SIGTERM);
	for (int i = 0; i < 6000 && waitpid(m.pid, &status, WNOHANG) != m.pid; i++)
		wt_sleep_ms(10);  /* 60 s: a hang */
	m.pid = 0;
	bool mounted = wt_is_mounted(m.mnt);
	wt_unmount(&m);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(mounted);
}

/* A directory open when the mirror ends (SIGTERM here; an unmount can
 * likewise overtake the releasedir, which then never comes): the mirror
 * frees its listing buffer itself and exits 0.  In the sanitizer build a
 * leak makes the exit status non-zero (LeakSanitizer). */
static void test_a_directory_open_at_unmount_is_freed_and_the_mirror_exits_0(void **state)
{
	struct fx *f = *state;
	struct wt_mirror m;
	char path[400];
	int status = -1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_mount(&m, f->srv->srv.url, NULL), 0);
	snprintf(path, sizeof(path), "%s/head", m.mnt);
	DIR *d = opendir(path);
	assert_non_null(d);
	assert_non_null(readdir(d));  /* the listing is built: a buffer */
	kill(m.pid, SIGTERM);  /* the mirror ends, d open */
	for (int i = 0; i < 6000 && waitpid(m.pid, &status, WNOHANG) != m.pid; i++)
		wt_sleep_ms(10);  /* 60 s: a hang */
	closedir(d);
	m.pid = 0;
	wt_unmount(&m);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_bad_arguments_exit_2(void **state)
{
	const char *prog = wt_prog("blkmap-wcfs");
	const char *const no_url[] = { prog, NULL };
	const char *const ftp[] = { prog, "-f", "ftp://example.com", "/tmp", NULL };
	const char *const bogus[] = { prog, "--bogus", "http://127.0.0.1:1", "/tmp", NULL };
	const char *const help[] = { prog, "--help", NULL };
	const char *const no_host[] = { prog, "-f", "http://", "/tmp", NULL };
	const char *const empty_host[] = { prog, "-f", "https:///ds", "/tmp", NULL };

	(void)state;
	assert_int_equal(wt_run(no_url), 2);
	assert_int_equal(wt_run(ftp), 2);
	assert_int_equal(wt_run(no_host), 2);
	assert_int_equal(wt_run(empty_host), 2);
	assert_int_equal(wt_run(bogus), 2);
	assert_int_equal(wt_run(help), 0);
}

/* <mnt>/@<tag>/ beside @<gen>/: each dataset that has the tag shows the
 * generation it names (the same file as under @<gen>/), others are not
 * there, and a tag moved shows within a few seconds. */
static void test_a_tag_is_a_directory_beside_the_generations(void **state)
{
	struct fx *f = *state;
	const size_t bs = 4096;
	unsigned char *v1 = ts_pattern(3 * bs, 31), *v2 = ts_pattern(3 * bs + 7, 32);
	struct stat st, st1;

	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_publish(ds_url(f, "tagged/ds"), v1, 3 * bs, bs), 1);
	assert_int_equal(wt_publish(ds_url(f, "tagged/ds"), v2, 3 * bs + 7, bs), 2);
	assert_int_equal(wt_publish(ds_url(f, "tagged/other"), v1, 3 * bs, bs), 1);
	assert_int_equal(bm_tag_set(ds_url(f, "tagged/ds"), NULL, "stable", 1, NULL), 0);

	assert_file_equals(mpath(&f->mir, "@stable/tagged/ds"), v1, 3 * bs);
	assert_int_equal(stat(mpath(&f->mir, "@stable/tagged/ds"), &st), 0);
	assert_int_equal(stat(mpath(&f->mir, "@1/tagged/ds"), &st1), 0);
	assert_int_equal(st.st_ino, st1.st_ino);
	errno = 0;
	assert_int_equal(stat(mpath(&f->mir, "@stable/tagged/other"), &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(stat(mpath(&f->mir, "@nosuchtag/tagged/ds"), &st), -1);
	assert_string_equal(list_dir(mpath(&f->mir, "@stable/tagged")), "ds");

	/* The tag moves to generation 2: the mirror follows (its entries
	 * under a tag are cached a second). */
	assert_int_equal(bm_tag_set(ds_url(f, "tagged/ds"), NULL, "stable", 2, NULL), 0);
	bool moved = false;
	for (int i = 0; i < 100 && !moved; i++) {
		size_t len = 0;
		unsigned char *got = wt_read_file(mpath(&f->mir, "@stable/tagged/ds"), &len);
		moved = got && len == 3 * bs + 7 && memcmp(got, v2, len) == 0;
		free(got);
		if (!moved)
			wt_sleep_ms(100);
	}
	assert_true(moved);
	free(v1);
	free(v2);
}

/* The rule for a file open under @<tag>/ (docs/wcfs.md): it is the file of
 * the generation the tag named when it was opened, and keeps showing that
 * generation after the tag moves; a new open follows the tag. */
static void test_a_file_open_under_a_tag_keeps_its_generation_when_the_tag_moves(void **state)
{
	struct fx *f = *state;
	const size_t bs = 4096;
	struct stat st;

	SKIP_WITHOUT_FUSE(f);
	unsigned char *v1 = ts_pattern(3 * bs, 33), *v2 = ts_pattern(2 * bs + 9, 34);
	assert_int_equal(wt_publish(ds_url(f, "tagopen/ds"), v1, 3 * bs, bs), 1);
	assert_int_equal(wt_publish(ds_url(f, "tagopen/ds"), v2, 2 * bs + 9, bs), 2);
	assert_int_equal(bm_tag_set(ds_url(f, "tagopen/ds"), NULL, "pinned", 1, NULL), 0);
	int fd = open(mpath(&f->mir, "@pinned/tagopen/ds"), O_RDONLY);
	assert_true(fd >= 0);
	unsigned char *buf = malloc(3 * bs);
	assert_int_equal(pread(fd, buf, 3 * bs, 0), (ssize_t)(3 * bs));
	assert_memory_equal(buf, v1, 3 * bs);

	assert_int_equal(bm_tag_set(ds_url(f, "tagopen/ds"), NULL, "pinned", 2, NULL), 0);
	bool moved = false;
	for (int i = 0; i < 100 && !moved; i++) {
		size_t len = 0;
		unsigned char *got = wt_read_file(mpath(&f->mir, "@pinned/tagopen/ds"), &len);
		moved = got && len == 2 * bs + 9 && memcmp(got, v2, len) == 0;
		free(got);
		if (!moved)
			wt_sleep_ms(100);
	}
	assert_true(moved); /* a new open follows the tag */
	/* The file opened before is still generation 1, whole. */
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 3 * bs);
	memset(buf, 0, 3 * bs);
	assert_int_equal(pread(fd, buf, 3 * bs, 0), (ssize_t)(3 * bs));
	assert_memory_equal(buf, v1, 3 * bs);
	close(fd);
	free(buf);
	free(v1);
	free(v2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_file_holds_the_normalized_server_url),
		cmocka_unit_test(test_reads_equal_the_data_for_several_block_sizes),
		cmocka_unit_test(test_stat_gives_the_dataset_size_and_block_size),
		cmocka_unit_test(test_a_lookup_sends_one_get_the_manifest_and_no_probe),
		cmocka_unit_test(test_holes_read_as_zeros_without_a_fetch),
		cmocka_unit_test(test_unknown_paths_are_enoent),
		cmocka_unit_test(test_writes_are_refused),
		cmocka_unit_test(test_mmap_shared_reads_the_same_bytes),
		cmocka_unit_test(test_kept_generation_is_served_from_the_kernel_cache),
		cmocka_unit_test(test_a_big_block_is_fetched_once_though_the_kernel_reads_it_in_pieces),
		cmocka_unit_test(test_a_block_whose_first_request_comes_late_is_still_fetched_once),
		cmocka_unit_test(test_a_random_read_of_a_v3_file_fetches_pieces_not_its_whole_block),
		cmocka_unit_test(test_a_random_read_of_a_v4_file_fetches_its_16k_pieces_not_its_whole_block),
		cmocka_unit_test(test_a_damaged_piece_of_a_v3_file_reads_as_eio_naming_the_piece),
		cmocka_unit_test(test_old_generation_keeps_its_content_while_head_shows_the_new),
		cmocka_unit_test(test_head_size_change_shows_in_stat_without_reopening),
		cmocka_unit_test(test_head_switch_of_a_2_pow_50_byte_dataset_costs_its_stored_blocks_only),
		cmocka_unit_test(test_head_shows_changed_and_new_blocks_of_a_sparse_dataset),
		cmocka_unit_test(test_head_switches_under_readers_never_hang_a_single_threaded_mirror),
		cmocka_unit_test(test_head_switches_under_more_reopeners_than_threads_never_hang),
		cmocka_unit_test(test_more_files_than_the_fd_limit_has_handles_for_all_read),
		cmocka_unit_test(test_directories_list_the_datasets_below_them),
		cmocka_unit_test(test_a_tag_is_a_directory_beside_the_generations),
		cmocka_unit_test(test_a_file_open_under_a_tag_keeps_its_generation_when_the_tag_moves),
		cmocka_unit_test(test_corrupt_blocks_read_as_eio_never_as_wrong_bytes),
		cmocka_unit_test(test_failing_server_reads_give_eio_and_a_log_line),
		cmocka_unit_test(test_a_name_too_long_for_a_url_is_enametoolong_not_another_dataset),
		cmocka_unit_test(test_fusermount_unmounts_cleanly_and_the_mirror_exits_0),
		cmocka_unit_test(test_sigterm_unmounts_and_exits_0),
		cmocka_unit_test(test_a_directory_open_at_unmount_is_freed_and_the_mirror_exits_0),
		cmocka_unit_test(test_bad_arguments_exit_2),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("blkmap-wcfs", tests, group_setup, group_teardown);
}
