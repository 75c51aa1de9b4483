/* tests/test_client_gc.c — gc, tags, --at and diff against a real server:
 * gc drops the generations outside its policy but never the latest or a
 * tagged one, deletes unreferenced objects only once older than the
 * grace, deletes nothing in a dry run, says when the server cannot list;
 * gc racing committing writer processes and gc killed at any point leave
 * every kept generation whole; tags name generations that every reading
 * command and the library open; diff lists exactly the changed ranges,
 * and diff and gc walk version 2 trees (written here by hand), each page
 * once however many kept generations share it.
 * One program per kind of server (TC_KIND; client.mk).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"
#include "../client/index.h"
#include "../client/index_load.h"
#include "../client/store.h"

/* A v2 tree (no piece sums) of root and nblk blocks, for index.c's walks. */
#define V2TREE(root, nblk) (&(const struct bm_itree){ (root), (nblk), 0 })

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define BS ((size_t)4096)
#define NBLK 16
/* BLKMAP_GC_SETTLE_MS but in the racing test (main) */
#define SETTLE_MS "20"

static bm_dataset *open_at(const char *url, uint64_t gen, const char *tag, bool create)
{
	struct bm_options o;
	bm_dataset *ds = NULL;
	tc_options(&o);
	o.wcfs = "off";
	o.generation = gen;
	o.tag = tag;
	if (create) {
		o.flags = BM_OPEN_CREATE;
		o.blksize = BS;
	}
	if (bm_open(&ds, url, &o) < 0)
		return NULL;
	return ds;
}

/* Generation g's content: NBLK blocks from seed g. */
static unsigned char *content(unsigned seed)
{
	return ts_pattern(NBLK * BS, seed);
}

/* Puts n generations, generation g holding content(100 + g). */
static void put_generations(const char *url, int n)
{
	for (int g = 1; g <= n; g++) {
		unsigned char *d = content(100 + (unsigned)g);
		assert_int_equal(tc_put(url, BS, d, NBLK * BS), (uint64_t)g);
		free(d);
	}
}

static bool reads_as(const char *url, uint64_t gen, unsigned seed)
{
	unsigned char *d = content(seed);
	bool ok = tc_dataset_equals(url, gen, d, NBLK * BS);
	free(d);
	return ok;
}

/* The path of URL under the store's base ("/gc/x/blocks/..."). */
static long head_status(const struct tc_store *s, const char *path)
{
	struct ts_resp r;
	memset(&r, 0, sizeof(r));
	assert_int_equal(tc_store_request(s, "HEAD", path, NULL, 0, &r), CURLE_OK);
	long st = r.status;
	ts_resp_free(&r);
	return st;
}

static char *block_path(const char *dir, bm_dataset *ds, uint64_t blk)
{
	char sum[40];
	static char path[256];
	assert_int_equal(bm_block_sum(ds, blk, sum, sizeof(sum)), 1);
	snprintf(path, sizeof(path), "%s/blocks/%s", dir, sum);
	return path;
}

static void gc_keeps_the_newest_the_latest_and_tagged_generations_and_drops_the_rest(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL, *err = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/keep");
	put_generations(url, 4);
	const char *tag[] = { "tag", url, "first", "1", NULL };
	assert_int_equal(tc_cli(NULL, NULL, tag), 0);
	bm_dataset *ds = open_at(url, 2, NULL, false);
	assert_non_null(ds);
	char gone[256];
	snprintf(gone, sizeof(gone), "%s", block_path("/gc/keep", ds, 5));
	bm_close(ds);
	assert_int_equal(head_status(s, gone), 200);

	const char *gc[] = { "gc", "--keep", "2", "--grace", "0", url, NULL };
	int st = tc_cli(&out, &err, gc);
	if (st != 0)
		fail_msg("gc: exit %d: %s", st, err);
	assert_non_null(strstr(out, "3 kept, 1 dropped"));
	/* Its 16 blocks and its root index page (8 + 16 x 17 bytes). */
	assert_non_null(strstr(out, "17 deleted, 65816 bytes freed"));
	free(out);
	free(err);
	/* Generation 2 is gone, its blocks with it; 1 (tagged), 3 and 4 read. */
	assert_null(open_at(url, 2, NULL, false));
	assert_non_null(strstr(bm_last_error(NULL), "not kept"));
	assert_int_equal(head_status(s, gone), 404);
	assert_true(reads_as(url, 1, 101));
	assert_true(reads_as(url, 3, 103));
	assert_true(reads_as(url, 4, 104));
}

static void gc_without_a_policy_keeps_every_generation(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/all");
	put_generations(url, 3);
	const char *gc[] = { "gc", "--grace", "0", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, gc), 0);
	assert_non_null(strstr(out, "3 kept, 0 dropped; objects: 0 deleted"));
	free(out);
	for (int g = 1; g <= 3; g++)
		assert_true(reads_as(url, (uint64_t)g, 100 + (unsigned)g));
}

static void a_dry_run_deletes_nothing(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/dry");
	put_generations(url, 3);
	const char *gc[] = { "gc", "--dry-run", "--keep", "1", "--grace", "0", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, gc), 0);
	assert_non_null(strstr(out, "2 would be dropped"));
	assert_non_null(strstr(out, "34 would be deleted")); /* 2 x (16 blocks + a page) */
	free(out);
	for (int g = 1; g <= 3; g++)
		assert_true(reads_as(url, (uint64_t)g, 100 + (unsigned)g));
}

/* An object under blocks/ that no generation names: what a commit that
 * never published leaves. */
static void orphans_are_deleted_once_older_than_the_grace_where_the_server_lists(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL;
	const char *orphan = "/gc/orphan/blocks/0123456789abcdef0123456789abcdef";
	tc_store_url(url, sizeof(url), s, "/gc/orphan");
	put_generations(url, 1);
	long put = tc_store_put(s, orphan, "orphan", 6);
	assert_true(put >= 200 && put < 300);

	const char *young[] = { "gc", "--grace", "1h", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, young), 0);
	bool lists = strstr(out, "cannot list") == NULL;
	if (lists)
		assert_non_null(strstr(out, "0 deleted, 0 bytes freed, 1 unreferenced but younger than the grace"));
	free(out);
	assert_int_equal(head_status(s, orphan), 200);

	const char *old[] = { "gc", "--grace", "0", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, old), 0);
	if (lists) {
		assert_non_null(strstr(out, "1 deleted, 6 bytes freed"));
		assert_int_equal(head_status(s, orphan), 404);
	} else {
		/* nginx: only what dropped generations named is searched. */
		assert_non_null(strstr(out, "orphans of commits that never published were not searched"));
		assert_int_equal(head_status(s, orphan), 200);
	}
	free(out);
	assert_true(reads_as(url, 1, 101));
}

static void gc_usage_errors_exit_2(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512];
	tc_store_url(url, sizeof(url), s, "/gc/usage");
	const char *a[] = { "gc", "--keep", "0", url, NULL };
	const char *b[] = { "gc", "--grace", "soon", url, NULL };
	const char *c[] = { "gc", "--keep-since", "yesterday", url, NULL };
	const char *d[] = { "gc", NULL };
	assert_int_equal(tc_cli(NULL, NULL, a), 2);
	assert_int_equal(tc_cli(NULL, NULL, b), 2);
	assert_int_equal(tc_cli(NULL, NULL, c), 2);
	assert_int_equal(tc_cli(NULL, NULL, d), 2);
	const char *none[] = { "gc", url, NULL };
	char *err = NULL;
	assert_int_equal(tc_cli(NULL, &err, none), 1);
	assert_non_null(strstr(err, "no dataset here"));
	free(err);
}

/* ---- racing writers and a killed gc --------------------------------------------------- */

struct writer {
	const char *url;
	unsigned id;
	int commits;
	long settle_ms;            /* BLKMAP_GC_SETTLE_MS of this race */
	char why[300];             /* a file: the error that stopped it */
	char over[300];            /* a file: publishes that took settle_ms or more */
	const char *starving;      /* a file: made after 50 tries in vain */
	double checked;            /* when the commit's gc guard passed */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Between its uploads and its manifest swap a writer dawdles, so that gc
 * runs meet commits in that window (where an uploaded block is named by
 * no generation yet): 100 ms, against gc runs of at least the settle time
 * (200 ms) every 150 ms, so that most commits overlap a gc.  And it notes
 * each publish that took the settle time D or more from the gc guard's
 * last look to the manifest PUT's answer: gc's guarantee holds only for
 * publishes shorter than D (FORMAT.md, "Why this is safe"), which a
 * loaded machine can stall past 200 ms. */
static void dawdle(const char *stage, void *arg)
{
	struct writer *w = arg;
	if (strcmp(stage, "uploaded") == 0)
		usleep(100000);
	else if (strcmp(stage, "checked") == 0)
		w->checked = now_s();
	else if (strcmp(stage, "manifest-put") == 0 && w->checked > 0) {
		long ms = (long)((now_s() - w->checked) * 1000);
		if (ms >= w->settle_ms) {
			FILE *f = fopen(w->over, "a");
			if (f != NULL) {
				fprintf(f, "writer %u: a publish took %ld ms; ", w->id, ms);
				fclose(f);
			}
		}
		w->checked = 0;
	}
}

/* For a child whose stderr is /dev/null: the error it stops on, into the
 * file PATH for the test to show; returns RC. */
static int stopped(const char *path, int rc, const char *msg)
{
	FILE *f = fopen(path, "w");
	if (f != NULL) {
		fprintf(f, "%s", msg);
		fclose(f);
	}
	return rc;
}

/* Child: commits w->commits times (each: 4 blocks of fresh content), going
 * again after a conflict or a commit a gc spoiled.  Exit 0, or the step
 * that failed (its error in w->why). */
static int writer_main(void *arg)
{
	struct writer *w = arg;
	int done = 0, tries = 0;

	while (done < w->commits) {
		if (++tries > 200)
			return 10;
		/* 50 tries in vain (a slow machine: under ThreadSanitizer every
		 * commit met a gc run): the gc loop pauses longer from now on,
		 * so that the race goes on and the writers still get through. */
		if (tries == 50) {
			int fd = open(w->starving, O_CREAT | O_WRONLY, 0600);
			if (fd >= 0)
				close(fd);
		}
		struct bm_options o;
		bm_dataset *ds = NULL;
		tc_options(&o);
		o.wcfs = "off";
		o.commit_hook = dawdle;
		o.commit_hook_arg = w;
		if (bm_open(&ds, w->url, &o) < 0)
			return stopped(w->why, 11, bm_last_error(NULL));
		unsigned char buf[BS];
		for (int k = 0; k < 4; k++) {
			memset(buf, (int)(w->id * 64 + (unsigned)done * 4 + (unsigned)k), BS);
			snprintf((char *)buf, 64, "writer %u commit %d try %d block %d", w->id, done, tries, k);
			uint64_t blk = (w->id * 5 + (unsigned)done * 3 + (unsigned)k * 7) % NBLK;
			if (bm_write(ds, blk * BS, buf, BS) < 0) {
				stopped(w->why, 12, bm_last_error(ds));
				bm_close(ds);
				return 12;
			}
		}
		int rc = bm_commit(ds, NULL);
		if (rc < 0 && rc != BM_ECONFLICT)
			stopped(w->why, 13, bm_last_error(ds));
		bm_close(ds);
		if (rc == 0)
			done++;
		else if (rc != BM_ECONFLICT)
			return 13;
	}
	return 0;
}

static pid_t spawn(int (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		int nul = open("/dev/null", 1);
		if (nul >= 0)
			dup2(nul, 2);
		_exit(fn(arg));
	}
	return pid;
}

/* Waits for pid at most secs seconds (then kills it): its wait status. */
static int wait_bounded(pid_t pid, int secs)
{
	int status = 0;
	for (int i = 0; i < secs * 20; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	fail_msg("a child did not finish within %d s", secs);
	return status;
}

struct gc_loop {
	const char *url;
	const char *stop;          /* a file: once it exists, one last run */
	const char *starving;      /* a file: once it exists, 10 times the pause */
	uint64_t keep;
	long pause_ms;             /* between runs */
};

static int gc_loop_main(void *arg)
{
	struct gc_loop *g = arg;
	struct bm_options o;
	tc_options(&o);
	struct bm_gc_policy p = { .keep = g->keep, .grace_s = 0 };
	struct bm_gc_report r;
	for (int runs = 0;; runs++) {
		bool last = access(g->stop, F_OK) == 0;
		int rc = bm_gc(g->url, &o, &p, &r);
		if (rc < 0 && rc != BM_ECONFLICT)
			return 20;
		if (last)
			return runs > 0 ? 0 : 21;
		/* A pause between runs, as between cron jobs: writers wait
		 * for a running gc, so gcs back to back would starve them. */
		long pause = access(g->starving, F_OK) == 0 ? 10 * g->pause_ms : g->pause_ms;
		usleep((useconds_t)pause * 1000);
	}
}

/* Every generation the dataset keeps reads whole (each block's object is
 * there and matches its sum). */
static void assert_every_kept_generation_reads(const char *url)
{
	bm_dataset *ds = open_at(url, 0, NULL, false);
	assert_non_null(ds);
	struct bm_generation_info gi;
	uint64_t before = bm_generation(ds) + 1;
	int n = 0;
	while (bm_generation_prev(ds, before, &gi) == 1) {
		bm_dataset *g = open_at(url, gi.generation, NULL, false);
		if (g == NULL)
			fail_msg("generation %llu: %s", (unsigned long long)gi.generation, bm_last_error(NULL));
		unsigned char *buf = malloc(gi.size + 1);
		int64_t got = bm_read(g, 0, buf, gi.size);
		if (got != (int64_t)gi.size)
			fail_msg("generation %llu does not read whole: %s", (unsigned long long)gi.generation,
				 bm_last_error(g));
		free(buf);
		bm_close(g);
		before = gi.generation;
		n++;
	}
	assert_true(n >= 1);
	bm_close(ds);
}

/* Reads and removes the file PATH (at most n - 1 bytes into buf, "" if none). */
static const char *take_file(const char *path, char *buf, size_t n)
{
	buf[0] = '\0';
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		buf[fread(buf, 1, n - 1, f)] = '\0';
		fclose(f);
	}
	unlink(path);
	return buf;
}

static void gc_racing_committing_writers_never_breaks_a_published_generation(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], stop[256], starving[300];
	/* Racing writers need a compare-and-swap; elsewhere one writer
	 * (FORMAT.md: one writer per dataset there).  4 commits each: a
	 * commit that overlaps a gc with no grace loses its uploads and goes
	 * again, and writers conflict with each other, so these 12 commits
	 * are many more attempts, most of them meeting a gc run. */
	int nw = tc_store_can(s, TC_CAN_SWAP) ? 3 : 1, commits = 4;
	long pause_ms = 150;
	/* RGW: two writers of 3 commits and 1.5 s between gc runs, as before
	 * its requests got fast (tcp_nodelay). */
	if (strcmp(s->kind->name, "rgw") == 0)
		nw = 2, commits = 3, pause_ms = 1500;
	/* Here the settle time D matters: a writer that saw no gc publishes
	 * within one request, which must take less than D (FORMAT.md, "Why
	 * this is safe"); the other tests run one thing at a time.  A race
	 * in which a publish took D or more (a stalled process on a loaded
	 * machine: seen on RGW at load 30, a block of the latest generation
	 * deleted) is outside that guarantee: it runs again on a new dataset
	 * with a longer D, and the last D (3 s) is asserted whatever. */
	static const long settle_ms[] = { 200, 800, 3000 };
	const int attempts = (int)(sizeof(settle_ms) / sizeof(settle_ms[0]));
	for (int a = 0; a < attempts; a++) {
		char d[32], over[2048] = "", path[64];
		snprintf(d, sizeof(d), "%ld", settle_ms[a]);
		setenv("BLKMAP_GC_SETTLE_MS", d, 1);
		snprintf(path, sizeof(path), "/gc/race%d", a);
		tc_store_url(url, sizeof(url), s, path);
		put_generations(url, 1);
		snprintf(stop, sizeof(stop), "/tmp/blkmap-gc-race-%ld", (long)getpid());
		snprintf(starving, sizeof(starving), "%s-starving", stop);
		unlink(stop);
		unlink(starving);
		struct gc_loop gl = { .url = url, .stop = stop, .starving = starving, .keep = 1,
				      .pause_ms = pause_ms };
		struct writer w[3];
		pid_t gcpid = spawn(gc_loop_main, &gl), wp[3];
		for (int i = 0; i < nw; i++) {
			w[i] = (struct writer){ .url = url, .id = (unsigned)i + 1, .commits = commits,
						.settle_ms = settle_ms[a], .starving = starving };
			snprintf(w[i].why, sizeof(w[i].why), "%s-w%d", stop, i + 1);
			snprintf(w[i].over, sizeof(w[i].over), "%s-w%d-over", stop, i + 1);
			unlink(w[i].why);
			unlink(w[i].over);
			wp[i] = spawn(writer_main, &w[i]);
		}
		int wst[3];
		char why[3][1024];
		for (int i = 0; i < nw; i++) {
			wst[i] = wait_bounded(wp[i], 240);
			take_file(w[i].why, why[i], sizeof(why[i]));
		}
		for (int i = 0; i < nw; i++) {
			char one[512];
			size_t used = strlen(over);
			snprintf(over + used, sizeof(over) - used, "%s", take_file(w[i].over, one, sizeof(one)));
		}
		int fd = open(stop, O_CREAT | O_WRONLY, 0600);
		assert_true(fd >= 0);
		close(fd);
		int st = wait_bounded(gcpid, 120);
		unlink(stop);
		unlink(starving);
		/* Past the guarantee, gc may delete what a publish named: the
		 * generation reads short, or a writer building on it stops
		 * ("missing (404), yet the dataset's index names it"). */
		if (over[0] != '\0' && a + 1 < attempts) {
			fprintf(stderr, "D = %ld ms: %soutside gc's guarantee: again with D = %ld ms\n",
				settle_ms[a], over, settle_ms[a + 1]);
			continue;
		}
		if (over[0] != '\0')
			fprintf(stderr, "D = %ld ms: %sasserted all the same (the last D)\n", settle_ms[a], over);
		for (int i = 0; i < nw; i++)
			if (!WIFEXITED(wst[i]) || WEXITSTATUS(wst[i]) != 0)
				fail_msg("writer %d failed (status %d): %s", i + 1, wst[i], why[i]);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("the gc loop failed (status %d)", st);
		assert_every_kept_generation_reads(url);
		bm_dataset *ds = open_at(url, 0, NULL, false);
		assert_non_null(ds);
		assert_int_equal(bm_generation(ds), 1 + (uint64_t)commits * (uint64_t)nw);
		bm_close(ds);
		break;
	}
	setenv("BLKMAP_GC_SETTLE_MS", SETTLE_MS, 1);
}

static int gc_cli_main(void *arg)
{
	const char *url = arg;
	char path[4096];
	const char *dir = getenv("top_builddir");
	snprintf(path, sizeof(path), "%s/blkmap", dir ? dir : ".");
	execl(path, path, "gc", "--keep", "1", "--grace", "0", url, (char *)NULL);
	return 127;
}

static void gc_killed_at_any_point_leaves_every_kept_generation_whole(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL, *err = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/kill");
	put_generations(url, 1);
	/* Kill points spread from before the marker to the end of the sweep
	 * (a gc here takes some 100 ms: start, the wait for the marker a
	 * killed gc left (4 D), its own marker, the settle time D, the sweep);
	 * whichever it hits, what is kept reads whole. */
	for (int round = 0; round < 6; round++) {
		unsigned char *d = content(200 + (unsigned)round);
		tc_put(url, BS, d, NBLK * BS);
		tc_put(url, BS, d + BS, (NBLK - 1) * BS);
		free(d);
		const char *tag[] = { "tag", url, "keep-me", NULL };
		if (round == 2)
			assert_int_equal(tc_cli(NULL, NULL, tag), 0);
		pid_t pid = spawn(gc_cli_main, url);
		usleep((useconds_t)(round * 20000));
		kill(pid, SIGKILL);
		wait_bounded(pid, 60);
		assert_every_kept_generation_reads(url);
	}
	/* A commit after a killed gc goes through (the dead gc's marker goes
	 * stale), and a gc then finishes the work. */
	unsigned char *d = content(300);
	uint64_t last = tc_put(url, BS, d, NBLK * BS);
	const char *gc[] = { "gc", "--keep", "1", "--grace", "0", url, NULL };
	int st = tc_cli(&out, &err, gc);
	if (st != 0)
		fail_msg("gc after the kills: exit %d: %s", st, err);
	free(out);
	free(err);
	assert_true(tc_dataset_equals(url, last, d, NBLK * BS));
	free(d);
	bm_dataset *t = open_at(url, 0, "keep-me", false);
	assert_non_null(t);
	bm_close(t);
	assert_every_kept_generation_reads(url);
}

/* ---- tags ----------------------------------------------------------------------------- */

static void a_tag_names_a_generation_that_every_reading_command_opens(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL, *err = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/tags");
	put_generations(url, 3);
	const char *t1[] = { "tag", url, "v1.0", "1", NULL };
	const char *t2[] = { "tag", url, "head", NULL };
	assert_int_equal(tc_cli(&out, NULL, t1), 0);
	assert_string_equal(out, "1\n");
	free(out);
	assert_int_equal(tc_cli(&out, NULL, t2), 0);
	assert_string_equal(out, "3\n");
	free(out);
	const char *ls[] = { "tags", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, ls), 0);
	assert_string_equal(out, "head 3\nv1.0 1\n");
	free(out);

	/* get, sum, stat, log at the tag. */
	char *file = tc_tmpfile("", 0);
	const char *get[] = { "get", "--at", "v1.0", url, file, NULL };
	assert_int_equal(tc_cli(NULL, NULL, get), 0);
	unsigned char *want = content(101);
	FILE *f = fopen(file, "rb");
	unsigned char *got = malloc(NBLK * BS);
	assert_int_equal(fread(got, 1, NBLK * BS, f), NBLK * BS);
	fclose(f);
	assert_memory_equal(got, want, NBLK * BS);
	free(got);
	free(want);
	unlink(file);
	free(file);
	const char *sum_tag[] = { "sum", "--at", "v1.0", url, NULL };
	const char *sum_gen[] = { "sum", "--at", "1", url, NULL };
	const char *sum_latest[] = { "sum", url, NULL };
	char *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(tc_cli(&a, NULL, sum_tag), 0);
	assert_int_equal(tc_cli(&b, NULL, sum_gen), 0);
	assert_int_equal(tc_cli(&c, NULL, sum_latest), 0);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	free(a), free(b), free(c);
	const char *stat[] = { "stat", "--at", "v1.0", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, stat), 0);
	assert_non_null(strstr(out, "\"generation\": 1"));
	free(out);
	const char *log[] = { "log", "--at", "v1.0", url, NULL };
	assert_int_equal(tc_cli(&out, NULL, log), 0);
	assert_int_equal(tc_lines(out), 1);
	assert_non_null(strstr(out, "generation 1 "));
	free(out);

	/* The library opens at a tag. */
	bm_dataset *ds = open_at(url, 0, "v1.0", false);
	assert_non_null(ds);
	assert_int_equal(bm_generation(ds), 1);
	bm_close(ds);
	assert_null(open_at(url, 0, "nope", false));
	assert_non_null(strstr(bm_last_error(NULL), "no tag \"nope\""));

	/* A tag moves; -d removes it. */
	const char *move[] = { "tag", url, "v1.0", "2", NULL };
	assert_int_equal(tc_cli(NULL, NULL, move), 0);
	ds = open_at(url, 0, "v1.0", false);
	assert_int_equal(bm_generation(ds), 2);
	bm_close(ds);
	const char *del[] = { "tag", "-d", url, "v1.0", NULL };
	assert_int_equal(tc_cli(NULL, NULL, del), 0);
	assert_int_equal(tc_cli(&out, NULL, ls), 0);
	assert_string_equal(out, "head 3\n");
	free(out);
	assert_int_equal(tc_cli(NULL, &err, del), 1);
	assert_non_null(strstr(err, "no tag \"v1.0\""));
	free(err);
}

static void bad_tag_names_and_missing_generations_are_refused(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *err = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/badtags");
	put_generations(url, 1);
	const char *digits[] = { "tag", url, "12", NULL };
	const char *slash[] = { "tag", url, "a/b", NULL };
	const char *dot[] = { "tag", url, ".hidden", NULL };
	assert_int_equal(tc_cli(NULL, &err, digits), 2);
	assert_non_null(strstr(err, "is not a tag name"));
	free(err);
	assert_int_equal(tc_cli(NULL, NULL, slash), 2);
	assert_int_equal(tc_cli(NULL, NULL, dot), 2);
	const char *missing[] = { "tag", url, "later", "9", NULL };
	assert_int_equal(tc_cli(NULL, &err, missing), 1);
	assert_non_null(strstr(err, "generation 9 is not kept"));
	free(err);
	const char *at[] = { "sum", "--at", "0", url, NULL };
	assert_int_equal(tc_cli(NULL, NULL, at), 2);
}

/* ---- diff ------------------------------------------------------------------------------ */

static void diff_lists_exactly_the_changed_block_ranges(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL;
	tc_store_url(url, sizeof(url), s, "/gc/diff");
	unsigned char *d = content(7);
	tc_put(url, BS, d, NBLK * BS);
	d[3 * BS] ^= 1;
	d[4 * BS + 9] ^= 1;
	d[5 * BS + BS - 1] ^= 1;
	d[10 * BS] ^= 1;
	tc_put(url, BS, d, NBLK * BS);
	memset(d + 15 * BS, 0, BS); /* a block becomes a hole */
	tc_put(url, BS, d, NBLK * BS);
	free(d);

	const char *d12[] = { "diff", url, "1", "2", NULL };
	assert_int_equal(tc_cli(&out, NULL, d12), 0);
	assert_string_equal(out, "blocks 3-5 bytes 12288-24575\nblocks 10-10 bytes 40960-45055\n");
	free(out);
	const char *tag[] = { "tag", url, "middle", "2", NULL };
	assert_int_equal(tc_cli(NULL, NULL, tag), 0);
	const char *d23[] = { "diff", "--at", "3", url, "middle", NULL };
	assert_int_equal(tc_cli(&out, NULL, d23), 0);
	assert_string_equal(out, "blocks 15-15 bytes 61440-65535\n");
	free(out);
	const char *same[] = { "diff", url, "middle", "2", NULL };
	assert_int_equal(tc_cli(&out, NULL, same), 0);
	assert_string_equal(out, "");
	free(out);
	const char *bad[] = { "diff", url, "1", "9", NULL };
	char *err = NULL;
	assert_int_equal(tc_cli(NULL, &err, bad), 1);
	assert_non_null(strstr(err, "generation 9 is not kept"));
	free(err);
}

/* ---- version 2 (written here by hand: the commands write version 1) ---------------- */

/* Publishes generation gen of the dataset at url as a version 2 manifest
 * over old_root (nblk blocks): blocks in changes (blk, data) uploaded,
 * the tree updated.  new_root gets the root. */
static void put_v2(const char *url, uint64_t gen, const char *old_root, const uint64_t *blks,
		   unsigned char *const *data, size_t nch, char new_root[BM_SUM_HEX + 1])
{
	struct bm_store *st;
	struct bm_pages *pc;
	struct bm_index_io io;
	struct bm_store_opts so = { .connect_timeout_ms = 5000, .timeout_ms = 30000, .retry_base_ms = 1,
				    .retries = 5, .connections = 2 };
	char msg[512], key[BM_KEY_GEN_SIZE];
	struct bm_index_change ch[8];

	assert_int_equal(bm_store_open(&st, url, &so, msg, sizeof(msg)), 0);
	assert_int_equal(bm_pages_new(&pc, st, 1 << 20), 0);
	bm_pages_io(pc, &io);
	for (size_t i = 0; i < nch; i++) {
		char bkey[BM_KEY_BLOCK_SIZE];
		ch[i].blk = blks[i];
		bm_sum_hex(data[i], BS, ch[i].sum);
		bm_key_block(bkey, ch[i].sum);
		assert_int_equal(bm_put_immutable(st, bkey, data[i], BS, true, msg, sizeof(msg)), 0);
	}
	assert_int_equal(bm_index_update(&io, V2TREE(old_root, NBLK), ch, nch, NBLK, new_root, NULL, msg, sizeof(msg)), 0);
	struct bm_manifest2 m = { .blksize = BS, .size = NBLK * BS, .generation = gen, .parent = gen - 1 };
	snprintf(m.created, sizeof(m.created), "2026-11-29T10:00:0%dZ", (int)gen);
	snprintf(m.root, sizeof(m.root), "%s", new_root);
	size_t len;
	char *json = bm_manifest2_dump(&m, &len);
	assert_non_null(json);
	bm_key_gen(key, gen);
	assert_int_equal(bm_store_put(st, BM_KEY_MANIFEST, json, len, NULL, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_put(st, key, json, len, NULL, NULL, msg, sizeof(msg)), 0);
	free(json);
	bm_pages_free(pc);
	bm_store_close(st);
}

struct keys_there {
	const struct tc_store *s;
	int n;
};

static int key_is_there(void *arg, const char *key)
{
	struct keys_there *kt = arg;
	char path[256];
	snprintf(path, sizeof(path), "/gc/v2/%s", key);
	assert_int_equal(head_status(kt->s, path), 200);
	kt->n++;
	return 0;
}

static void diff_and_gc_read_version_2_trees_and_collect_their_index_pages(void **state)
{
	struct tc_store *s = tc_store_of(state);
	char url[512], *out = NULL, *err = NULL, root1[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1],
		root3[BM_SUM_HEX + 1], path[256];
	tc_store_url(url, sizeof(url), s, "/gc/v2");
	/* Generation 1 as the library writes it; 2 and 3 by hand, each
	 * changing one block. */
	unsigned char *d = content(500);
	tc_put(url, BS, d, NBLK * BS);
	bm_dataset *ds = open_at(url, 1, NULL, false);
	assert_non_null(ds);
	char *v1_block3 = strdup(block_path("/gc/v2", ds, 3));
	char *v1_block9 = strdup(block_path("/gc/v2", ds, 9));
	bm_close(ds);
	uint64_t all[NBLK];
	unsigned char *blocks[NBLK];
	for (uint64_t b = 0; b < NBLK; b++)
		all[b] = b, blocks[b] = d + b * BS;
	d[3 * BS] ^= 1;
	put_v2(url, 2, "", all, blocks, 8, root1); /* blocks 0-7: a first tree */
	put_v2(url, 2, root1, all + 8, blocks + 8, 8, root2); /* 8-15: generation 2 */
	d[9 * BS + 5] ^= 1;
	uint64_t nine = 9;
	unsigned char *b9 = d + 9 * BS;
	put_v2(url, 3, root2, &nine, &b9, 1, root3);

	const char *d12[] = { "diff", url, "1", "2", NULL };
	int st = tc_cli(&out, &err, d12);
	if (st != 0)
		fail_msg("diff 1 2: %s", err);
	assert_string_equal(out, "blocks 3-3 bytes 12288-16383\n");
	free(out), free(err);
	const char *d23[] = { "diff", url, "2", NULL };
	assert_int_equal(tc_cli(&out, NULL, d23), 0);
	assert_string_equal(out, "blocks 9-9 bytes 36864-40959\n");
	free(out);

	/* gc keeps 3: gone are generation 1's block 3, the block 9 of 1 and
	 * 2, the root pages of 1 and 2 (root1 was never published: an
	 * orphan page, found where the server lists). */
	const char *gc[] = { "gc", "--keep", "1", "--grace", "0", url, NULL };
	st = tc_cli(&out, &err, gc);
	if (st != 0)
		fail_msg("gc: %s", err);
	bool lists = strstr(out, "cannot list") == NULL;
	assert_non_null(strstr(out, "1 kept, 2 dropped"));
	assert_non_null(strstr(out, lists ? "5 deleted" : "4 deleted"));
	free(out), free(err);
	assert_int_equal(head_status(s, v1_block3), 404);
	assert_int_equal(head_status(s, v1_block9), 404);
	snprintf(path, sizeof(path), "/gc/v2/index/%s", root2);
	assert_int_equal(head_status(s, path), 404);
	snprintf(path, sizeof(path), "/gc/v2/index/%s", root1);
	assert_int_equal(head_status(s, path), lists ? 404 : 200);
	snprintf(path, sizeof(path), "/gc/v2/index/%s", root3);
	assert_int_equal(head_status(s, path), 200);
	/* Everything generation 3 names is still there. */
	struct bm_store *stp;
	struct bm_pages *pc;
	struct bm_index_io io;
	struct bm_store_opts so = { .connect_timeout_ms = 5000, .timeout_ms = 30000, .retry_base_ms = 1,
				    .retries = 5, .connections = 2 };
	char msg[512];
	assert_int_equal(bm_store_open(&stp, url, &so, msg, sizeof(msg)), 0);
	assert_int_equal(bm_pages_new(&pc, stp, 1 << 20), 0);
	bm_pages_io(pc, &io);
	struct keys_there kt = { .s = s };
	assert_int_equal(bm_index_keys(&io, V2TREE(root3, NBLK), key_is_there, &kt, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(kt.n, NBLK + 1);
	bm_pages_free(pc);
	bm_store_close(stp);
	free(v1_block3);
	free(v1_block9);
	free(d);
}

/* Five kept generations of a 1024-block dataset (four leaves and a root),
 * each changing one block under another leaf: 5 roots, the 4 first
 * leaves and 4 new ones are 13 distinct pages.  gc walks each once (before,
 * each generation's tree whole: 25 pages), and what it keeps reads. */
static void gc_walks_each_index_page_once_however_many_kept_generations_share_it(void **state)
{
	struct tc_store *s = tc_store_of(state);
	size_t nblk = 1024;
	char url[512];
	tc_store_url(url, sizeof(url), s, "/gc/shared");
	unsigned char *d = ts_pattern(nblk * BS, 77);
	assert_int_equal(tc_put(url, BS, d, nblk * BS), 1);
	unsigned char *d1 = malloc(nblk * BS);
	memcpy(d1, d, nblk * BS);
	for (uint64_t leaf = 0; leaf < 4; leaf++) {
		bm_dataset *ds = open_at(url, 0, NULL, false);
		assert_non_null(ds);
		uint64_t off = (leaf * 256 + 3) * BS, gen = 0;
		d[off] ^= 0x5a;
		assert_int_equal(bm_write(ds, off, d + off, BS), 0);
		assert_int_equal(bm_commit(ds, &gen), 0);
		assert_int_equal(gen, leaf + 2);
		bm_close(ds);
	}
	struct bm_options o;
	tc_options(&o);
	struct bm_gc_policy p = { .grace_s = 0 }; /* no policy: all kept */
	struct bm_gc_report r;
	memset(&r, 0, sizeof(r));
	assert_int_equal(bm_gc(url, &o, &p, &r), 0);
	assert_int_equal(r.generations_kept, 5);
	assert_int_equal(r.pages_walked, 13);
	/* blkmap gc says so in its summary. */
	char *out = NULL, *err = NULL;
	const char *gc[] = { "gc", "--grace", "0", url, NULL };
	if (tc_cli(&out, &err, gc) != 0 || !strstr(out, "; index pages: 13 walked\n"))
		fail_msg("blkmap gc: stdout \"%s\", stderr \"%s\"", out, err);
	free(out);
	free(err);
	/* The first and the last generation read whole. */
	assert_true(tc_dataset_equals(url, 1, d1, nblk * BS));
	assert_true(tc_dataset_equals(url, 0, d, nblk * BS));
	free(d1);
	free(d);
}

int main(void)
{
	/* gc's settle time, for gc and for the writers' guard alike: short,
	 * as no writer runs while a gc does but in the racing test, which
	 * sets its own.  A killed gc's marker goes stale after 4 of it, what
	 * each commit after a kill waits. */
	setenv("BLKMAP_GC_SETTLE_MS", SETTLE_MS, 1);
	setenv("BLKMAP_WCFS", "off", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gc_keeps_the_newest_the_latest_and_tagged_generations_and_drops_the_rest),
		cmocka_unit_test(gc_without_a_policy_keeps_every_generation),
		cmocka_unit_test(a_dry_run_deletes_nothing),
		cmocka_unit_test(orphans_are_deleted_once_older_than_the_grace_where_the_server_lists),
		cmocka_unit_test(gc_usage_errors_exit_2),
		cmocka_unit_test(gc_racing_committing_writers_never_breaks_a_published_generation),
		cmocka_unit_test(gc_killed_at_any_point_leaves_every_kept_generation_whole),
		cmocka_unit_test(a_tag_names_a_generation_that_every_reading_command_opens),
		cmocka_unit_test(bad_tag_names_and_missing_generations_are_refused),
		cmocka_unit_test(diff_lists_exactly_the_changed_block_ranges),
		cmocka_unit_test(diff_and_gc_read_version_2_trees_and_collect_their_index_pages),
		cmocka_unit_test(gc_walks_each_index_page_once_however_many_kept_generations_share_it),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
