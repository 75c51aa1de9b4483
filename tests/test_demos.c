/* tests/test_demos.c — the two demo programs as a user runs them: blkmap-demo
 * (what `./quickstart demo` runs) creates, scans, changes, commits and
 * verifies a dataset, on a blkmap-server of its own or on the server URL
 * given, and what it says it did is true of the store afterwards; it fails
 * with one line when its server cannot start or be reached.  virtmem-demo
 * reads past its RAM budget (clean blocks reclaimed), writes 8 blocks and
 * gets them back through a fresh handle.  Both are run at a small size
 * (--mib, MIB) to stay fast; a usage error exits 2 with one line.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#define DEMO_MIB 8 /* blkmap-demo --mib: 8 blocks of 1 MiB */

struct run {
	const char *const *argv; /* argv[0]: the program's path */
	const char *server;      /* BLKMAP_SERVER for the child, or NULL */
	char out_path[64];
};

static void builddir_path(char *out, size_t n, const char *name)
{
	const char *dir = getenv("top_builddir");

	snprintf(out, n, "%s/%s", dir ? dir : ".", name);
}

static int exec_child(void *arg)
{
	struct run *r = arg;
	FILE *f = fopen(r->out_path, "w");

	if (f == NULL)
		return 126;
	dup2(fileno(f), STDOUT_FILENO);
	if (r->server)
		setenv("BLKMAP_SERVER", r->server, 1);
	else
		unsetenv("BLKMAP_SERVER");
	setenv("BLKMAP_RETRY_BASE_MS", "1", 1);
	execv(r->argv[0], (char *const *)r->argv);
	return 127;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = malloc(1);
	size_t len = 0;
	int c;

	assert_non_null(f);
	assert_non_null(buf);
	while ((c = getc(f)) != EOF) {
		buf = realloc(buf, len + 2);
		assert_non_null(buf);
		buf[len++] = (char)c;
	}
	buf[len] = '\0';
	fclose(f);
	return buf;
}

/* Runs ARGV (argv[0] a path) with SERVER as $BLKMAP_SERVER (NULL: unset):
 * its exit status (128 + signal if killed); stdout and stderr into *OUTP
 * and *ERRP (malloc'd). */
static int run(const char *const *argv, const char *server, char **outp, char **errp)
{
	struct run r = { .argv = argv, .server = server };
	int fd, status;

	strcpy(r.out_path, "/tmp/blkmap-demo-test.XXXXXX");
	fd = mkstemp(r.out_path);
	assert_true(fd >= 0);
	close(fd);
	status = tc_child(exec_child, &r, errp);
	*outp = read_file(r.out_path);
	unlink(r.out_path);
	assert_true(status != -1);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The line of OUT that starts with PREFIX (after leading spaces); fails the
 * test if there is none.  Points into OUT. */
static const char *line_of(const char *out, const char *prefix)
{
	for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *p = l + strspn(l, " ");
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			return p;
	}
	fail_msg("no line starting with \"%s\" in:\n%s", prefix, out);
	return NULL;
}

static bool ends_with_ok(const char *out)
{
	size_t n = strlen(out);

	return n >= 4 && strcmp(out + n - 4, "\nok\n") == 0;
}

/* ---- virtmem-demo ---------------------------------------------------------- */

/* The number after "NAME=" in LINE. */
static long field(const char *line, const char *name)
{
	const char *p = strstr(line, name);

	if (p == NULL)
		fail_msg("no %s in \"%.*s\"", name, (int)strcspn(line, "\n"), line);
	return strtol(p + strlen(name), NULL, 10);
}

static void virtmem_demo_reads_past_its_budget_and_keeps_every_written_block(void **state)
{
	char prog[4096], *out, *err;
	(void)state;

	builddir_path(prog, sizeof(prog), "virtmem/virtmem-demo");
	assert_int_equal(run((const char *[]){ prog, "256", NULL }, NULL, &out, &err), 0);
	assert_string_equal(err, "");
	assert_non_null(strstr(line_of(out, "mapped a 256 MiB file of 2048 KiB blocks"),
			       "with a 32 MiB RAM budget"));
	/* 64 MiB read through a 32 MiB budget: 32 loads, and what did not
	 * fit was reclaimed; RAM in use never above the budget. */
	const char *read = line_of(out, "read 64 MiB (sum check)");
	assert_int_equal(field(read, "loads="), 32);
	assert_true(field(read, "reclaimed=") >= 16);
	assert_true(field(read, "ram=") <= 32);
	const char *write = line_of(out, "write 1 value in 8 blocks");
	assert_int_equal(field(write, "dirty="), 8);
	assert_int_equal(field(write, "stores="), 0);
	const char *wo = line_of(out, "writeout (store + mark stored)");
	assert_int_equal(field(wo, "dirty="), 0);
	assert_int_equal(field(wo, "stores="), 8);
	/* The fresh handle loads just the 8 written blocks to check them. */
	assert_int_equal(field(line_of(out, "reopen, verify the 8 writes"), "loads="), 8);
	assert_true(ends_with_ok(out));
	free(out);
	free(err);
}

static void virtmem_demo_usage_errors_exit_2_and_help_exits_0(void **state)
{
	static const char *const bad[] = { "255", "254", "lots", "-1", "99999999" };
	char prog[4096], *out, *err;
	(void)state;

	builddir_path(prog, sizeof(prog), "virtmem/virtmem-demo");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(run((const char *[]){ prog, bad[i], NULL }, NULL, &out, &err), 2);
		assert_string_equal(out, "");
		assert_int_equal(tc_lines(err), 1);
		assert_non_null(strstr(err, "virtmem-demo: expected one MIB"));
		free(out);
		free(err);
	}
	assert_int_equal(run((const char *[]){ prog, "256", "512", NULL }, NULL, &out, &err), 2);
	assert_int_equal(tc_lines(err), 1);
	free(out);
	free(err);
	assert_int_equal(run((const char *[]){ prog, "--help", NULL }, NULL, &out, &err), 0);
	assert_true(strncmp(out, "usage: virtmem-demo [MIB]\n", 26) == 0);
	assert_string_equal(err, "");
	free(out);
	free(err);
}

/* ---- blkmap-demo ------------------------------------------------------------- */

/* What the demo computes, computed here again (client/demo.c value_at). */
static double demo_value(uint64_t i)
{
	return 20.0 + 10.0 * sin((double)i * 1e-5) + (double)(i % 1000) * 1e-3;
}

/* The statistics line blkmap-demo must print for a dataset of MIB MiB. */
static void expected_stats(unsigned mib, char *out, size_t n)
{
	uint64_t nval = (uint64_t)mib << 17, lo = nval * 40 / 100, hi = nval * 45 / 100;
	double sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;

	for (uint64_t i = lo; i < hi; i++) {
		double x = demo_value(i);
		sum += x;
		sq += x * x;
		mn = x < mn ? x : mn;
		mx = x > mx ? x : mx;
	}
	double cnt = (double)(hi - lo), mean = sum / cnt;
	snprintf(out, n, "mean %.6f  stddev %.6f  min %.6f  max %.6f\n", mean, sqrt(sq / cnt - mean * mean),
		 mn, mx);
}

/* Checks what every successful run prints; returns the dataset's URL
 * (from the "created" line) into URL. */
static void assert_demo_output(const char *out, char *url, size_t n)
{
	char want[256];
	const char *created = line_of(out, "created http://");

	snprintf(want, sizeof(want), ": %" PRIu64 " doubles (%u MiB, %u blocks of 1024 KiB), generation 1\n",
		 (uint64_t)DEMO_MIB << 17, DEMO_MIB, DEMO_MIB);
	const char *colon = strstr(created, ": ");
	assert_non_null(colon);
	if (strncmp(colon, want, strlen(want)) != 0)
		fail_msg("created line \"%.*s\", want \"...%s\"", (int)strcspn(created, "\n"), created, want);
	snprintf(url, n, "%.*s", (int)(colon - created - 8), created + 8);
	expected_stats(DEMO_MIB, want, sizeof(want));
	if (strncmp(line_of(out, "mean "), want, strlen(want)) != 0)
		fail_msg("statistics \"%.*s\", want \"%s\"", (int)strcspn(line_of(out, "mean "), "\n"),
			 line_of(out, "mean "), want);
	assert_non_null(line_of(out, "committed generation 2\n"));
	line_of(out, "verify generation 2 (6 probes)");
	line_of(out, "verify generation 1 (6 probes)");
	/* The scan and the change fetched part of the dataset, not all. */
	const char *sumline = line_of(out, "dataset ");
	double mib = -1, pct = -1;
	assert_int_equal(sscanf(sumline, "dataset %*u MiB; the scan and the change fetched %lf MiB (%lf%%)", &mib,
				&pct), 2);
	assert_true(mib > 0 && mib < DEMO_MIB);
	assert_true(pct > 0 && pct < 100);
	assert_non_null(strstr(sumline, "generations 1 (created) and 2 (the change) are both readable\n"));
	assert_true(ends_with_ok(out));
}

static void blkmap_demo_runs_on_a_server_of_its_own(void **state)
{
	char prog[4096], url[512], *out, *err;
	(void)state;

	/* Without $BLKMAP_SERVER: the blkmap-server of the build tree. */
	builddir_path(prog, sizeof(prog), "blkmap-demo");
	assert_int_equal(run((const char *[]){ prog, "--mib", "8", NULL }, NULL, &out, &err), 0);
	assert_string_equal(err, "");
	assert_demo_output(out, url, sizeof(url));
	assert_true(strncmp(url, "http://127.0.0.1:", 17) == 0);
	free(out);
	free(err);
}

/* Value I of generation GEN of the dataset at URL, read through the library. */
static double value_in(const char *url, uint64_t gen, uint64_t i)
{
	bm_dataset *ds = tc_open(url, gen);
	double v;

	assert_int_equal(bm_read(ds, i * sizeof(double), &v, sizeof(v)), sizeof(v));
	bm_close(ds);
	return v;
}

static void blkmap_demo_on_a_given_server_leaves_the_two_generations_it_describes(void **state)
{
	struct ts_server s;
	char prog[4096], base[512], url[512], *out, *err;
	(void)state;

	tc_server_start(&s, NULL);
	builddir_path(prog, sizeof(prog), "blkmap-demo");
	tc_url(base, sizeof(base), &s, "");
	assert_int_equal(run((const char *[]){ prog, "--mib", "8", base, NULL }, "/nonexistent/blkmap-server", &out,
			     &err),
			 0);
	assert_string_equal(err, "");
	assert_demo_output(out, url, sizeof(url));
	assert_true(strncmp(url, base, strlen(base)) == 0);
	assert_true(strncmp(url + strlen(base), "/demo/doubles-", 14) == 0);

	/* What it said: generation 2 has v[c0 .. c0 + 100000) doubled, and
	 * generation 1 has the values it created. */
	uint64_t nval = (uint64_t)DEMO_MIB << 17, c0 = nval / 2, c1 = c0 + 100000;
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 2);
	assert_int_equal(bm_size(ds), nval * sizeof(double));
	bm_close(ds);
	assert_true(value_in(url, 2, c0) == 2 * demo_value(c0));
	assert_true(value_in(url, 2, c1 - 1) == 2 * demo_value(c1 - 1));
	assert_true(value_in(url, 2, c1) == demo_value(c1));
	assert_true(value_in(url, 1, c0) == demo_value(c0));
	assert_true(value_in(url, 1, nval - 1) == demo_value(nval - 1));
	free(out);
	free(err);
	tc_server_stop(&s);
}

/* Runs blkmap-demo ARGS with $BLKMAP_SERVER SERVER: exit WANT, one line on
 * stderr holding SAYS. */
static void assert_demo_fails(int want, const char *server, const char *says, const char *const *args)
{
	const char *argv[8] = { NULL };
	char prog[4096], *out, *err;
	int n = 0;

	builddir_path(prog, sizeof(prog), "blkmap-demo");
	argv[n++] = prog;
	for (; *args && n < 7; args++)
		argv[n++] = *args;
	int ex = run(argv, server, &out, &err);
	if (ex != want || tc_lines(err) != 1 || strstr(err, says) == NULL || strstr(out, "ok\n"))
		fail_msg("blkmap-demo %s: exit %d (want %d), stderr \"%s\" (want one line with \"%s\")",
			 argv[1] ? argv[1] : "", ex, want, err, says);
	free(out);
	free(err);
}

static void blkmap_demo_fails_with_one_line_when_its_server_cannot_start_be_reached_or_store(void **state)
{
	(void)state;

	assert_demo_fails(1, "/nonexistent/blkmap-server", "blkmap-demo: cannot run /nonexistent/blkmap-server",
			  (const char *[]){ NULL });
	/* A program that exits without a word. */
	assert_demo_fails(1, "/bin/false", "blkmap-demo: blkmap-server did not start (/bin/false)",
			  (const char *[]){ NULL });
	/* One that says something else than where it listens. */
	assert_demo_fails(1, "/bin/echo", "blkmap-demo: unexpected line from blkmap-server",
			  (const char *[]){ NULL });
	/* A port nothing listens on (1 is privileged: nobody's test server). */
	assert_demo_fails(1, NULL, "blkmap-demo: ", (const char *[]){ "--mib", "2", "http://127.0.0.1:1", NULL });
	/* A server that refuses its blocks (bodies over 1000 bytes). */
	struct ts_server s;
	char base[512];
	tc_server_start(&s, (const char *const[]){ "--max-body-bytes", "1000", NULL });
	tc_url(base, sizeof(base), &s, "");
	assert_demo_fails(1, NULL, "blkmap-demo: create: ", (const char *[]){ "--mib", "2", base, NULL });
	tc_server_stop(&s);
}

static void blkmap_demo_usage_errors_exit_2_and_help_exits_0(void **state)
{
	char prog[4096], *out, *err;
	(void)state;

	assert_demo_fails(2, NULL, "--mib needs a size in MiB from 2 to 65536", (const char *[]){ "--mib", NULL });
	assert_demo_fails(2, NULL, "--mib needs a size in MiB", (const char *[]){ "--mib", "1", NULL });
	assert_demo_fails(2, NULL, "--mib needs a size in MiB", (const char *[]){ "--mib", "8x", NULL });
	assert_demo_fails(2, NULL, "--mib needs a size in MiB", (const char *[]){ "--mib", "-8", NULL });
	assert_demo_fails(2, NULL, "--mib needs a size in MiB", (const char *[]){ "--mib", "65537", NULL });
	assert_demo_fails(2, NULL, "expected at most one SERVER_URL", (const char *[]){ "http://a", "http://b", NULL });
	builddir_path(prog, sizeof(prog), "blkmap-demo");
	assert_int_equal(run((const char *[]){ prog, "--help", NULL }, NULL, &out, &err), 0);
	assert_true(strncmp(out, "usage: blkmap-demo [--mib N] [SERVER_URL]\n", 42) == 0);
	assert_string_equal(err, "");
	free(out);
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(virtmem_demo_reads_past_its_budget_and_keeps_every_written_block),
		cmocka_unit_test(virtmem_demo_usage_errors_exit_2_and_help_exits_0),
		cmocka_unit_test(blkmap_demo_runs_on_a_server_of_its_own),
		cmocka_unit_test(blkmap_demo_on_a_given_server_leaves_the_two_generations_it_describes),
		cmocka_unit_test(blkmap_demo_fails_with_one_line_when_its_server_cannot_start_be_reached_or_store),
		cmocka_unit_test(blkmap_demo_usage_errors_exit_2_and_help_exits_0),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
