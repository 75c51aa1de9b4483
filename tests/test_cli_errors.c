/* tests/test_cli_errors.c — the `blkmap` command's error paths, each as a
 * user meets it: a usage error exits 2 with one line naming what was wrong
 * and pointing at --help; an environment variable that does not parse, a
 * file that cannot be read or written, a block size or kind of object that
 * does not fit the command, a patch that does not fit, a missing attribute,
 * a server that does not answer exit 1 with one line naming the thing; a
 * commit that lost exits 3.  Progress (put, get, gc) shows on a terminal only.
 * One blkmap-server (memory store) for the whole group.
 */
#include "config.h"

#include <fcntl.h>
#include <setjmp.h>
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

/* Runs `blkmap ARGV`: exit status WANT, nothing on stdout, exactly one
 * line on stderr holding SAYS (and SAYS2 if not NULL). */
static void assert_cli_fails(int want, const char *says, const char *says2, const char *const *argv)
{
	char *out, *err;
	int ex = tc_cli(&out, &err, argv);

	if (ex != want || out[0] != '\0' || tc_lines(err) != 1 || !strstr(err, says) ||
	    (says2 && !strstr(err, says2)))
		fail_msg("blkmap %s %s: exit %d (want %d), stdout \"%s\", stderr \"%s\" (want one line "
			 "with \"%s\"%s%s)", argv[0] ? argv[0] : "", argv[0] && argv[1] ? argv[1] : "", ex,
			 want, out, err, says, says2 ? " and " : "", says2 ? says2 : "");
	free(out);
	free(err);
}

static char *new_dataset(const struct ts_server *s, const char *path, char *url, size_t n, size_t blksize,
			 size_t size)
{
	unsigned char *data = ts_pattern(size, 77);

	tc_url(url, n, s, path);
	tc_put(url, blksize, data, size);
	free(data);
	return url;
}

static void usage_errors_name_what_is_wrong_and_point_at_help(void **state)
{
	static const struct {
		const char *argv[6];
		const char *says;
	} cases[] = {
		{ { "frobnicate" }, "unknown command 'frobnicate'" },
		{ { "put", "--blksize" }, "--blksize needs a number" },
		{ { "put", "--blksize", "4k", "onlyfile" }, "expected FILE and URL" },
		{ { "put", "--piece", "0", "f", "u" }, "--piece needs a number of bytes" },
		{ { "put", "--piece", "lots", "f", "u" }, "--piece needs a number of bytes" },
		{ { "get", "u", "f", "extra" }, "expected URL and FILE" },
		{ { "sum", "-v" }, "expected URL" },
		{ { "patch", "--at" }, "--at needs a generation number" },
		{ { "patch", "--at", "-1", "u", "0", "f" }, "--at needs a generation number" },
		{ { "patch", "u", "0" }, "expected URL, OFFSET and FILE" },
		{ { "patch", "u", "1Q", "f" }, "OFFSET is not a number" },
		{ { "patch", "u", "99999999999999999999", "f" }, "OFFSET is not a number" },
		{ { "patch", "u", "20000000000G", "f" }, "OFFSET is not a number" },
		{ { "stat", "a", "b" }, "expected URL" },
		{ { "attr" }, "expected URL and at most one KEY" },
		{ { "attr", "u", "k", "v" }, "expected URL and at most one KEY" },
		{ { "attr", "--delete", "u" }, "expected URL and KEY" },
		{ { "attr", "u", "=value" }, "KEY is empty" },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_cli_fails(2, cases[i].says, "--help", cases[i].argv);
	assert_cli_fails(2, "expected a command", "--help", (const char *[]){ NULL });
}

static void version_and_every_help_exit_0_on_stdout(void **state)
{
	static const char *const cmds[] = { "put", "get", "sum", "patch", "stat", "log", "attr" };
	char *out, *err;
	(void)state;

	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "--version", NULL }), 0);
	assert_true(strncmp(out, "blkmap " PACKAGE_VERSION "\n", strlen("blkmap " PACKAGE_VERSION) + 1) == 0);
	assert_string_equal(err, "");
	free(out);
	free(err);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		assert_int_equal(tc_cli(&out, &err, (const char *[]){ cmds[i], "-h", NULL }), 0);
		assert_non_null(strstr(out, "usage: blkmap "));
		assert_non_null(strstr(out, cmds[i]));
		assert_string_equal(err, "");
		free(out);
		free(err);
	}
}

static void an_environment_variable_that_does_not_parse_fails_every_command_naming_it(void **state)
{
	struct ts_server *s = *state;
	char url[512];

	new_dataset(s, "/clie/env", url, sizeof(url), 4096, 5000);
	setenv("BLKMAP_CONNECTIONS", "lots", 1);
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", "expected a number", (const char *[]){ "stat", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "sum", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "get", url, "-", NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "log", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "attr", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "put", "/dev/null", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "patch", url, "0", "/dev/null", NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "tag", url, "v1", NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "tag", "-d", url, "v1", NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "tags", url, NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "diff", url, "1", NULL });
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=lots", NULL, (const char *[]){ "gc", url, NULL });
	unsetenv("BLKMAP_CONNECTIONS");
	/* gc's settle time is read by gc, tag and every commit: a value that
	 * does not parse was taken as 30 s without a word. */
	setenv("BLKMAP_GC_SETTLE_MS", "soon", 1);
	assert_cli_fails(1, "BLKMAP_GC_SETTLE_MS=soon", "from 1 to 3600000", (const char *[]){ "gc", url, NULL });
	assert_cli_fails(1, "BLKMAP_GC_SETTLE_MS=soon", NULL, (const char *[]){ "tag", url, "v1", NULL });
	assert_cli_fails(1, "BLKMAP_GC_SETTLE_MS=soon", NULL, (const char *[]){ "put", "/dev/null", url, NULL });
	setenv("BLKMAP_GC_SETTLE_MS", "0", 1);
	assert_cli_fails(1, "BLKMAP_GC_SETTLE_MS=0", NULL, (const char *[]){ "stat", url, NULL });
	unsetenv("BLKMAP_GC_SETTLE_MS");
	setenv("BLKMAP_CONNECTIONS", "0", 1);  /* parses, but below 1 */
	assert_cli_fails(1, "BLKMAP_CONNECTIONS=0", "from 1 to 256", (const char *[]){ "stat", url, NULL });
	unsetenv("BLKMAP_CONNECTIONS");
}

static void put_refuses_a_file_it_cannot_read_another_block_size_and_a_plain_object(void **state)
{
	struct ts_server *s = *state;
	char url[512], flat[512];
	unsigned char *bytes = ts_pattern(3000, 5);

	new_dataset(s, "/clie/put", url, sizeof(url), 4096, 10000);
	/* A directory opens, but reading it fails: named with the offset. */
	char *dir = ts_mkdtemp(), says[600];
	snprintf(says, sizeof(says), "reading %s at 0", dir);
	assert_cli_fails(1, says, NULL,
			 (const char *[]){ "put", dir, tc_url(flat, sizeof(flat), s, "/clie/put-dir"), NULL });
	ts_rmtree(dir);
	free(dir);
	char *path = tc_tmpfile(bytes, 3000);
	assert_cli_fails(1, "has blocks of 4096 bytes, not 8192", url,
			 (const char *[]){ "put", "--blksize", "8k", path, url, NULL });
	assert_int_equal(ts_put(s, "/clie/put-flat", bytes, 3000) / 100, 2);
	tc_url(flat, sizeof(flat), s, "/clie/put-flat");
	assert_cli_fails(1, "is a plain object, not a dataset", flat, (const char *[]){ "put", path, flat, NULL });
	/* Nothing was published by any of them. */
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 1);
	assert_int_equal(bm_size(ds), 10000);
	bm_close(ds);
	unlink(path);
	free(path);
	free(bytes);
}

/* put: a new dataset of 1 MiB blocks is in format 4 with 16 KiB pieces
 * by default and keeps them (--piece 16k again is fine, another --piece
 * refused, as another --blksize); --piece 64k makes format 3, whose 64
 * KiB pieces are kept alike; a piece that is not a power of two from 4
 * KiB to half a block is refused before anything is published. */
static void put_makes_16k_pieces_or_those_of_piece_and_refuses_other_pieces_of_a_dataset(void **state)
{
	struct ts_server *s = *state;
	char url[512], v3[512], bad[512], *out, *err;
	unsigned char *bytes = ts_pattern(3 << 20, 6);
	char *path = tc_tmpfile(bytes, 3 << 20);

	tc_url(url, sizeof(url), s, "/clie/piece");
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "put", path, url, NULL }), 0);
	free(out);
	free(err);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_format_version(ds), 4);
	assert_int_equal(bm_piece_bytes(ds), 16384);
	assert_int_equal(bm_blksize(ds), 1 << 20);
	bm_close(ds);
	assert_true(tc_dataset_equals(url, 0, bytes, 3 << 20));
	/* The same pieces again: fine; others: refused. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "put", "--piece", "16384", path, url, NULL }), 0);
	free(out);
	free(err);
	assert_cli_fails(1, "have pieces of 16384 bytes, not 32768", url,
			 (const char *[]){ "put", "--piece", "32k", path, url, NULL });
	tc_url(v3, sizeof(v3), s, "/clie/piece-v3");
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "put", "--piece", "64k", path, v3, NULL }), 0);
	free(out);
	free(err);
	assert_cli_fails(1, "have pieces of 65536 bytes, not 16384", v3,
			 (const char *[]){ "put", "--piece", "16k", path, v3, NULL });
	/* Pieces that are no power of two, or a whole block. */
	tc_url(bad, sizeof(bad), s, "/clie/piece-bad");
	assert_cli_fails(1, "pieces of 3000 bytes: a piece is a power of two from 4096", bad,
			 (const char *[]){ "put", "--piece", "3000", path, bad, NULL });
	assert_cli_fails(1, "pieces of 1048576 bytes", bad,
			 (const char *[]){ "put", "--piece", "1M", path, bad, NULL });
	ds = tc_open(url, 0);
	assert_int_equal(bm_piece_bytes(ds), 16384);
	bm_close(ds);
	struct bm_options o;
	tc_options(&o);
	assert_int_equal(bm_open(&ds, bad, &o), BM_ENOTFOUND); /* nothing published */
	unlink(path);
	free(path);
	free(bytes);
}

static void get_names_the_file_it_cannot_write(void **state)
{
	struct ts_server *s = *state;
	char url[512];

	new_dataset(s, "/clie/get", url, sizeof(url), 4096, 10000);
	assert_cli_fails(1, "cannot write /nonexistent/dir/out", NULL,
			 (const char *[]){ "get", url, "/nonexistent/dir/out", NULL });
	assert_cli_fails(1, "writing /dev/full", NULL, (const char *[]){ "get", url, "/dev/full", NULL });
}

static void get_and_sum_of_an_empty_dataset_give_no_bytes(void **state)
{
	struct ts_server *s = *state;
	char url[512], *out, *err;

	new_dataset(s, "/clie/empty", url, sizeof(url), 4096, 0);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "get", url, "-", NULL }), 0);
	assert_string_equal(out, "");
	assert_string_equal(err, "");
	free(out);
	free(err);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "sum", url, NULL }), 0);
	/* SHA-256 of no bytes. */
	assert_true(strncmp(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ", 66) == 0);
	free(out);
	free(err);
}

static void patch_refuses_what_does_not_fit_and_exits_3_on_an_old_generation(void **state)
{
	struct ts_server *s = *state;
	char url[512], flat[512], *out, *err;
	unsigned char *bytes = ts_pattern(100, 9);
	char *path = tc_tmpfile(bytes, 100), *empty = tc_tmpfile("", 0);

	new_dataset(s, "/clie/patch", url, sizeof(url), 4096, 10000);
	assert_cli_fails(1, "cannot read /nonexistent/patch", NULL,
			 (const char *[]){ "patch", url, "0", "/nonexistent/patch", NULL });
	assert_cli_fails(1, "is empty: nothing to write", NULL, (const char *[]){ "patch", url, "0", empty, NULL });
	assert_cli_fails(1, "100 bytes at offset 9950 do not fit in the dataset's 10000 bytes", NULL,
			 (const char *[]){ "patch", url, "9950", path, NULL });
	assert_cli_fails(1, "100 bytes at offset 20000 do not fit", NULL,
			 (const char *[]){ "patch", url, "20000", path, NULL });
	assert_int_equal(ts_put(s, "/clie/patch-flat", bytes, 100) / 100, 2);
	tc_url(flat, sizeof(flat), s, "/clie/patch-flat");
	assert_cli_fails(1, "is a plain object, not a dataset: it is read-only", NULL,
			 (const char *[]){ "patch", flat, "0", path, NULL });

	/* Generation 2 published; a patch of generation 1 lost: exit 3. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "patch", url, "0", path, NULL }), 0);
	assert_string_equal(out, "2\n");
	free(out);
	free(err);
	assert_cli_fails(3, "commit", url, (const char *[]){ "patch", "--at", "1", url, "100", path, NULL });
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 2);
	bm_close(ds);
	unlink(path);
	unlink(empty);
	free(path);
	free(empty);
	free(bytes);
}

static void attr_names_a_missing_key_and_refuses_text_that_is_not_utf8(void **state)
{
	struct ts_server *s = *state;
	char url[512], *out, *err;

	new_dataset(s, "/clie/attr", url, sizeof(url), 4096, 100);
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "attr", url, NULL }), 0);
	assert_string_equal(out, "{}\n");
	free(out);
	free(err);
	assert_cli_fails(1, "has no attribute \"colour\"", url, (const char *[]){ "attr", url, "colour", NULL });
	assert_cli_fails(1, "has no attribute \"colour\"", url,
			 (const char *[]){ "attr", "--delete", url, "colour", NULL });
	assert_cli_fails(1, "VALUE is neither JSON nor UTF-8 text", NULL,
			 (const char *[]){ "attr", url, "colour=\xff\xfe", NULL });
	assert_cli_fails(1, "KEY is not UTF-8 text", NULL, (const char *[]){ "attr", url, "\xff=1", NULL });
	/* None of them committed anything. */
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_generation(ds), 1);
	bm_close(ds);
}

/* ---- on a terminal ---------------------------------------------------------------------- */

struct on_tty {
	int tty;                   /* the terminal's slave side: stderr */
	const char *const *argv;   /* blkmap's arguments, program name first */
};

static int run_on_tty(void *arg)
{
	struct on_tty *t = arg;

	int nul = open("/dev/null", O_WRONLY);

	dup2(nul, 1);  /* the generation put prints */
	dup2(t->tty, 2);
	setenv("BLKMAP_RETRY_BASE_MS", "1", 1);
	execv(t->argv[0], (char *const *)t->argv);
	return 127;
}

/* Runs blkmap ARGS with stderr on a new terminal: the exit status, and
 * what it wrote there in *OUT. */
static int cli_on_tty(const char *const *args, char **out)
{
	char path[4096], buf[65536];
	const char *dir = getenv("top_builddir"), *argv[16] = { path };
	int master = posix_openpt(O_RDWR | O_NOCTTY), n = 1;
	size_t len = 0;

	assert_true(master >= 0);
	assert_int_equal(grantpt(master), 0);
	assert_int_equal(unlockpt(master), 0);
	int tty = open(ptsname(master), O_RDWR | O_NOCTTY);
	assert_true(tty >= 0);
	snprintf(path, sizeof(path), "%s/blkmap", dir ? dir : ".");
	for (; *args && n < 15; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	struct on_tty t = { tty, argv };
	int status = tc_child(run_on_tty, &t, NULL);
	close(tty);
	/* The child is gone: what it wrote waits in the terminal. */
	fcntl(master, F_SETFL, O_NONBLOCK);
	for (ssize_t r; len < sizeof(buf) - 1 && (r = read(master, buf + len, sizeof(buf) - 1 - len)) > 0;)
		len += (size_t)r;
	buf[len] = '\0';
	close(master);
	*out = strdup(buf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void put_and_get_show_a_progress_bar_on_a_terminal_only(void **state)
{
	struct ts_server *s = *state;
	unsigned char *bytes = ts_pattern(300000, 4);
	char url[512], *path = tc_tmpfile(bytes, 300000), *out, *err, got[] = "/tmp/blkmap-cli-tty.XXXXXX";

	close(mkstemp(got));
	tc_url(url, sizeof(url), s, "/clie/tty");
	assert_int_equal(cli_on_tty((const char *[]){ "put", "--blksize", "64k", path, url, NULL }, &out), 0);
	if (!strstr(out, "\rput [") || !strstr(out, "] 100% ") || !strstr(out, "MiB/s"))
		fail_msg("put on a terminal showed \"%s\"", out);
	free(out);
	assert_int_equal(cli_on_tty((const char *[]){ "get", url, got, NULL }, &out), 0);
	if (!strstr(out, "\rget [#########################] 100% "))
		fail_msg("get on a terminal showed \"%s\"", out);
	free(out);
	/* Not a terminal: no bar, nothing on stderr. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "get", url, got, NULL }), 0);
	assert_string_equal(err, "");
	free(out);
	free(err);
	unlink(got);
	unlink(path);
	free(path);
	free(bytes);
}

static void log_of_a_plain_object_says_it_has_no_generations(void **state)
{
	struct ts_server *s = *state;
	char url[512];

	assert_int_equal(ts_put(s, "/clie/log-flat", "plain", 5) / 100, 2);
	tc_url(url, sizeof(url), s, "/clie/log-flat");
	assert_cli_fails(1, "is a plain object: it has no generations", url, (const char *[]){ "log", url, NULL });
}

static void every_command_fails_with_one_line_naming_a_server_that_does_not_answer_or_a_bad_url(void **state)
{
	const char *url = "http://127.0.0.1:1/clie/nobody";
	char *file = tc_tmpfile("abc", 3);
	(void)state;

	setenv("BLKMAP_RETRIES", "1", 1);  /* a refused connection: one retry says it all */
	const char *const *cmds[] = {
		(const char *[]){ "put", file, url, NULL },
		(const char *[]){ "get", url, "-", NULL },
		(const char *[]){ "patch", url, "0", file, NULL },
		(const char *[]){ "stat", url, NULL },
		(const char *[]){ "log", url, NULL },
		(const char *[]){ "attr", url, NULL },
		(const char *[]){ "tag", url, "v1", NULL },
		(const char *[]){ "tags", url, NULL },
		(const char *[]){ "diff", url, "1", NULL },
		(const char *[]){ "gc", url, NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		assert_cli_fails(1, "127.0.0.1:1", NULL, cmds[i]);
	/* Nor does what is not a server's URL. */
	const char *ftp = "ftp://example/x";
	const char *const *not_urls[] = {
		(const char *[]){ "put", file, ftp, NULL },
		(const char *[]){ "get", ftp, "-", NULL },
		(const char *[]){ "sum", ftp, NULL },
		(const char *[]){ "patch", ftp, "0", file, NULL },
		(const char *[]){ "stat", ftp, NULL },
		(const char *[]){ "attr", ftp, NULL },
		(const char *[]){ "tag", ftp, "v1", NULL },
		(const char *[]){ "log", ftp, NULL },
		(const char *[]){ "tag", "-d", ftp, "v1", NULL },
		(const char *[]){ "tags", ftp, NULL },
		(const char *[]){ "diff", ftp, "1", NULL },
		(const char *[]){ "gc", ftp, NULL },
	};
	for (size_t i = 0; i < sizeof(not_urls) / sizeof(not_urls[0]); i++)
		assert_cli_fails(1, "ftp://example/x: not an http://, https:// or s3:// URL", NULL, not_urls[i]);
	unlink(file);
	free(file);
}

static void at_without_a_generation_is_a_usage_error_of_every_reading_command(void **state)
{
	static const char *const cmds[] = { "get", "sum", "stat", "log" };
	(void)state;

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		assert_cli_fails(2, "--at needs", "--help", (const char *[]){ cmds[i], "--at", NULL });
		assert_cli_fails(2, "--at needs", "--help", (const char *[]){ cmds[i], "--at", "0", "http://h/x", NULL });
	}
}

static void gc_shows_its_progress_on_a_terminal_only(void **state)
{
	struct ts_server *s = *state;
	char url[512], *out, *err;

	new_dataset(s, "/clie/gc-tty", url, sizeof(url), 4096, 20000);
	new_dataset(s, "/clie/gc-tty", url, sizeof(url), 4096, 30000);
	setenv("BLKMAP_GC_SETTLE_MS", "50", 1);
	assert_int_equal(cli_on_tty((const char *[]){ "gc", "--keep", "1", "--grace", "0", url, NULL }, &out), 0);
	/* Its phases (at most 10 updates a second: some may not show), ending
	 * with every candidate deleted and a newline. */
	if (!strstr(out, "\rgc: settle ") || !strstr(out, "\rgc: delete "))
		fail_msg("gc on a terminal showed \"%s\"", out);
	const char *last = strstr(out, "\rgc: delete ");
	for (const char *p; (p = strstr(last + 1, "\rgc: delete ")) != NULL;)
		last = p;
	unsigned long done, total;
	if (sscanf(last, "\rgc: delete %lu/%lu", &done, &total) != 2 || done != total || total == 0 ||
	    out[strlen(out) - 1] != '\n')
		fail_msg("gc on a terminal ended with \"%s\"", last);
	free(out);
	/* Not a terminal: the summary only. */
	assert_int_equal(tc_cli(&out, &err, (const char *[]){ "gc", url, NULL }), 0);
	assert_string_equal(err, "");
	assert_int_equal(tc_lines(out), 1);
	free(out);
	free(err);
	unsetenv("BLKMAP_GC_SETTLE_MS");
}

/* Each test starts with none of the variables a test sets. */
static int clean_environment(void **state)
{
	(void)state;
	unsetenv("BLKMAP_CONNECTIONS");
	unsetenv("BLKMAP_GC_SETTLE_MS");
	unsetenv("BLKMAP_RETRIES");
	return 0;
}

#define T(name) cmocka_unit_test_setup(name, clean_environment)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(usage_errors_name_what_is_wrong_and_point_at_help),
		T(version_and_every_help_exit_0_on_stdout),
		T(an_environment_variable_that_does_not_parse_fails_every_command_naming_it),
		T(put_refuses_a_file_it_cannot_read_another_block_size_and_a_plain_object),
		T(put_makes_16k_pieces_or_those_of_piece_and_refuses_other_pieces_of_a_dataset),
		T(get_names_the_file_it_cannot_write),
		T(get_and_sum_of_an_empty_dataset_give_no_bytes),
		T(patch_refuses_what_does_not_fit_and_exits_3_on_an_old_generation),
		T(attr_names_a_missing_key_and_refuses_text_that_is_not_utf8),
		T(put_and_get_show_a_progress_bar_on_a_terminal_only),
		T(log_of_a_plain_object_says_it_has_no_generations),
		T(every_command_fails_with_one_line_naming_a_server_that_does_not_answer_or_a_bad_url),
		T(at_without_a_generation_is_a_usage_error_of_every_reading_command),
		T(gc_shows_its_progress_on_a_terminal_only),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
