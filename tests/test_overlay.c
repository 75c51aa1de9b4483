/* tests/test_overlay.c — the client's switch to mmap-overlay mode through a
 * real blkmap-wcfs mirror: overlay is chosen when a live mirror of the
 * server shows the generation (named by BLKMAP_WCFS / opt.wcfs, or found at
 * the default mountpoint), reads come from the mirror with no fetch and no
 * RAM, writes commit correctly and the base moves to the new generation,
 * and a missing, stale or dead mirror falls back to loadblk mode.  Skipped,
 * with the reason, where FUSE cannot be mounted.
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"
#include "wcfs_util.h"

#define BS ((size_t)64 << 10)
#define SIZE (BS * 10 + 1234) /* not a whole number of blocks */

struct fx {
	struct ts_server srv;
	struct wt_mirror mir;
	int skip;
	unsigned char *data;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	*state = f;
	tc_server_start(&f->srv, NULL);
	f->data = ts_pattern(SIZE, 5);
	int rc = wt_mount(&f->mir, f->srv.url, NULL);
	f->skip = rc == 1;
	return rc < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int rc = 0;
	if (f->mir.mounted)
		rc = wt_unmount(&f->mir);
	tc_server_stop(&f->srv);
	free(f->data);
	free(f);
	return rc == 0 ? 0 : -1;
}

#define SKIP_WITHOUT_FUSE(f)                                         \
	do {                                                         \
		if ((f)->skip) {                                     \
			print_message("skipped: %s\n", wt_skip_reason); \
			skip();                                      \
		}                                                    \
	} while (0)

static bm_dataset *open_with(const char *url, const char *wcfs)
{
	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.wcfs = wcfs;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	return ds;
}

static struct bm_stats stats(bm_dataset *ds)
{
	struct bm_stats st;
	bm_stats(ds, &st);
	return st;
}

static void overlay_reads_come_from_the_mirror_without_fetch_or_ram(void **state)
{
	struct fx *f = *state;
	char url[512];
	SKIP_WITHOUT_FUSE(f);
	tc_url(url, sizeof(url), &f->srv, "/ov/read");
	tc_put(url, BS, f->data, SIZE);

	bm_dataset *ds = open_with(url, f->mir.mnt);
	assert_string_equal(stats(ds).mode, "overlay");
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, f->data, SIZE);
	free(got);
	struct bm_stats st = stats(ds);
	assert_int_equal(st.fetched_bytes, 0);  /* the mirror fetched */
	assert_int_equal(st.ram_bytes, 0);      /* no RAM for clean pages */
	assert_int_equal(st.cache_misses, 0);
	bm_close(ds);
}

static void overlay_write_commits_and_moves_the_base(void **state)
{
	struct fx *f = *state;
	char url[512];
	bm_mapping *m;
	unsigned char *p;
	uint64_t gen1, gen2;
	SKIP_WITHOUT_FUSE(f);
	tc_url(url, sizeof(url), &f->srv, "/ov/write");
	gen1 = tc_put(url, BS, f->data, SIZE);

	bm_dataset *ds = open_with(url, f->mir.mnt);
	assert_string_equal(stats(ds).mode, "overlay");
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	memset(p + 3 * BS + 10, 0xab, 100);     /* one block dirty */
	p[SIZE - 1] = 0xcd;                     /* and the last one */
	assert_int_equal(stats(ds).ram_bytes, 2 * BS);
	assert_int_equal(bm_commit(ds, &gen2), 0);
	assert_int_equal(gen2, gen1 + 1);
	assert_int_equal(stats(ds).uploaded_blocks, 2);
	/* The committed pages' RAM is dropped: the base, moved to the new
	 * generation's file, shows them. */
	assert_int_equal(stats(ds).ram_bytes, 0);
	assert_int_equal(p[3 * BS + 10], 0xab);
	assert_int_equal(p[SIZE - 1], 0xcd);
	assert_int_equal(p[3 * BS + 9], f->data[3 * BS + 9]);
	bm_unmap(m);
	bm_close(ds);

	unsigned char *want = malloc(SIZE);
	memcpy(want, f->data, SIZE);
	memset(want + 3 * BS + 10, 0xab, 100);
	want[SIZE - 1] = 0xcd;
	/* Fresh handles agree, without the mirror and through it; the old
	 * generation is unchanged. */
	bm_dataset *plain = open_with(url, "off");
	assert_string_equal(stats(plain).mode, "loadblk");
	unsigned char *got = tc_read_mapped(plain);
	assert_memory_equal(got, want, SIZE);
	free(got);
	bm_close(plain);
	ds = open_with(url, f->mir.mnt);
	assert_string_equal(stats(ds).mode, "overlay");
	got = tc_read_mapped(ds);
	assert_memory_equal(got, want, SIZE);
	free(got);
	bm_close(ds);
	assert_true(tc_dataset_equals(url, gen1, f->data, SIZE));
	free(want);
}

static void bytes_past_the_end_of_the_last_block_read_as_zeros(void **state)
{
	struct fx *f = *state;
	char url[512];
	bm_mapping *m;
	unsigned char *p;
	SKIP_WITHOUT_FUSE(f);
	tc_url(url, sizeof(url), &f->srv, "/ov/tail");
	tc_put(url, BS, f->data, SIZE);
	bm_dataset *ds = open_with(url, f->mir.mnt);
	assert_string_equal(stats(ds).mode, "overlay");
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	/* The mapping covers the whole last block; past SIZE: zeros. */
	for (size_t i = SIZE; i < 11 * BS; i += 4096)
		assert_int_equal(p[i], 0);
	bm_unmap(m);
	bm_close(ds);
}

static void a_shrink_then_a_grow_reads_zeros_in_an_overlay_mapping_and_commits_them(void **state)
{
	struct fx *f = *state;
	char url[512];
	bm_mapping *m;
	unsigned char *p, *want = malloc(SIZE);
	size_t small = 3 * BS + 1000; /* not on a page boundary */
	uint64_t gen;
	SKIP_WITHOUT_FUSE(f);
	tc_url(url, sizeof(url), &f->srv, "/ov/pending");
	tc_put(url, BS, f->data, SIZE);
	bm_dataset *ds = open_with(url, f->mir.mnt);
	assert_string_equal(stats(ds).mode, "overlay");
	/* Shrunk: nothing past the new end; grown again: zeros there. */
	assert_int_equal(bm_resize(ds, small), 0);
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	assert_memory_equal(p + 2 * BS, f->data + 2 * BS, small - 2 * BS);
	for (size_t i = small; i < 4 * BS; i++)
		if (p[i] != 0)
			fail_msg("byte %zu past the new end is %d", i, p[i]);
	bm_unmap(m);
	assert_int_equal(bm_resize(ds, SIZE), 0);
	assert_int_equal(bm_map(ds, 0, 0, (void **)&p, &m), 0);
	for (size_t i = small; i < SIZE; i++)
		if (p[i] != 0)
			fail_msg("byte %zu of the regrown part is %d", i, p[i]);
	bm_unmap(m);
	assert_string_equal(stats(ds).mode, "loadblk"); /* the mirror's file shows the old bytes */
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	memcpy(want, f->data, small);
	memset(want + small, 0, SIZE - small);
	assert_true(tc_dataset_equals(url, gen, want, SIZE));
	free(want);
}

static void no_mirror_or_off_means_loadblk_with_the_reason(void **state)
{
	struct fx *f = *state;
	char url[512];
	tc_url(url, sizeof(url), &f->srv, "/ov/none");
	tc_put(url, BS, f->data, SIZE);

	bm_dataset *ds = open_with(url, "off");
	assert_string_equal(stats(ds).mode, "loadblk");
	assert_non_null(strstr(stats(ds).mode_why, "BLKMAP_WCFS=off"));
	bm_close(ds);
	ds = open_with(url, "/nonexistent/mirror");
	assert_string_equal(stats(ds).mode, "loadblk");
	assert_non_null(strstr(stats(ds).mode_why, "no live mirror"));
	assert_true(tc_dataset_equals(url, 0, f->data, SIZE));
	bm_close(ds);
}

static void a_mirror_of_another_server_is_not_used(void **state)
{
	struct fx *f = *state;
	struct ts_server other;
	struct wt_mirror mir;
	char url[512];
	SKIP_WITHOUT_FUSE(f);
	tc_server_start(&other, NULL);
	assert_int_equal(wt_mount(&mir, other.url, NULL), 0);
	tc_url(url, sizeof(url), &f->srv, "/ov/stale");
	tc_put(url, BS, f->data, SIZE);
	bm_dataset *ds = open_with(url, mir.mnt);
	assert_string_equal(stats(ds).mode, "loadblk");
	assert_non_null(strstr(stats(ds).mode_why, "serves"));
	bm_close(ds);
	assert_int_equal(wt_unmount(&mir), 0);
	tc_server_stop(&other);
}

static void a_dead_mirror_falls_back_to_loadblk(void **state)
{
	struct fx *f = *state;
	struct wt_mirror mir;
	char url[512];
	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(wt_mount(&mir, f->srv.url, NULL), 0);
	tc_url(url, sizeof(url), &f->srv, "/ov/dead");
	tc_put(url, BS, f->data, SIZE);
	/* The mirror crashes: its mountpoint answers ENOTCONN. */
	kill(mir.pid, SIGKILL);
	waitpid(mir.pid, NULL, 0);
	bm_dataset *ds = open_with(url, mir.mnt);
	assert_string_equal(stats(ds).mode, "loadblk");
	assert_non_null(strstr(stats(ds).mode_why, "not connected"));
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, f->data, SIZE);
	free(got);
	bm_close(ds);
	mir.pid = 0;
	wt_unmount(&mir); /* lazy unmount of the dead mount */
	assert_false(wt_is_mounted(mir.mnt));
}

static void the_default_mountpoint_is_found_without_being_named(void **state)
{
	struct fx *f = *state;
	char url[512], mnt[512], path[600];
	SKIP_WITHOUT_FUSE(f);
	assert_int_equal(bm_wcfs_default_mountpoint(f->srv.url, mnt, sizeof(mnt)), 0);
	pid_t pid = fork();
	if (pid == 0) {
		execl(wt_prog("blkmap-wcfs"), "blkmap-wcfs", "-f", f->srv.url, (char *)NULL);
		_exit(127);
	}
	snprintf(path, sizeof(path), "%s/.wcfs/url", mnt);
	int up = 0;
	for (int i = 0; i < 3000 && !up; i++) {  /* 30 s: a hang */
		struct stat st;
		up = stat(path, &st) == 0 && wt_is_mounted(mnt);
		if (!up)
			usleep(10000);
	}
	assert_true(up);
	tc_url(url, sizeof(url), &f->srv, "/ov/default");
	tc_put(url, BS, f->data, SIZE);
	bm_dataset *ds = open_with(url, NULL);
	assert_string_equal(stats(ds).mode, "overlay");
	assert_non_null(strstr(stats(ds).mode_why, mnt));
	bm_close(ds);
	const char *argv[] = { "fusermount3", "-u", mnt, NULL };
	assert_int_equal(wt_run(argv), 0);
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_false(wt_is_mounted(mnt));
}

static void cli_sum_verbose_says_overlay_and_fetches_nothing(void **state)
{
	struct fx *f = *state;
	char url[512], *out = NULL, *err = NULL;
	SKIP_WITHOUT_FUSE(f);
	tc_url(url, sizeof(url), &f->srv, "/ov/cli");
	tc_put(url, BS, f->data, SIZE);
	setenv("BLKMAP_WCFS", f->mir.mnt, 1);
	const char *argv[] = { "sum", "-v", url, NULL };
	int rc = tc_cli(&out, &err, argv);
	unsetenv("BLKMAP_WCFS");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(err, "mode=overlay fetched_bytes=0 "));
	assert_non_null(strstr(out, url));
	free(out);
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(overlay_reads_come_from_the_mirror_without_fetch_or_ram),
		cmocka_unit_test(overlay_write_commits_and_moves_the_base),
		cmocka_unit_test(a_shrink_then_a_grow_reads_zeros_in_an_overlay_mapping_and_commits_them),
		cmocka_unit_test(bytes_past_the_end_of_the_last_block_read_as_zeros),
		cmocka_unit_test(no_mirror_or_off_means_loadblk_with_the_reason),
		cmocka_unit_test(a_mirror_of_another_server_is_not_used),
		cmocka_unit_test(a_dead_mirror_falls_back_to_loadblk),
		cmocka_unit_test(the_default_mountpoint_is_found_without_being_named),
		cmocka_unit_test(cli_sum_verbose_says_overlay_and_fetches_nothing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
