/* tests/wcfs_fixture.h — the cmocka group fixture that test_wcfs.c,
 * test_wcfs_nodes.c and test_wcfs_failures.c share: one blkmap-server
 * --memory --admin and one mirror of it mounted for the whole group
 * (skipped, with the reason, where FUSE cannot be mounted); paths under a
 * mirror, dataset URLs, the checks they make on directories, files and
 * logs, and a mirror run that must stop before it mounts.  Include after cmocka.h,
 * test_server_util.h and wcfs_util.h.  Static inline: a program uses what
 * it needs.  Single-threaded, as the tests.
 */
#ifndef BLKMAP_TEST_WCFS_FIXTURE_H
#define BLKMAP_TEST_WCFS_FIXTURE_H

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
	struct ts_fixture *srv;    /* blkmap-server --memory --admin */
	struct wt_mirror mir;
	int skip;                  /* 1: FUSE not usable here */
};

/* Reads retry once, 1 ms apart: a bad block fails fast. */
static const char *const mirror_env[] = {
	"BLKMAP_RETRIES=1", "BLKMAP_RETRY_BASE_MS=1", "BLKMAP_TIMEOUT_MS=5000", NULL
};

static inline int group_setup(void **state)
{
	static const char *const args[] = { "--admin", NULL };
	struct fx *f = calloc(1, sizeof(*f));
	void *srv;

	*state = f;
	if (ts_fixture_memory(&srv, args) < 0)
		return -1;
	f->srv = srv;
	int rc = wt_mount(&f->mir, f->srv->srv.url, mirror_env);
	if (rc == 1)
		f->skip = 1;
	return rc < 0 ? -1 : 0;
}

static inline int group_teardown(void **state)
{
	struct fx *f = *state;
	int rc = wt_unmount(&f->mir);
	void *srv = f->srv;

	if (rc != 0)
		print_error("the mirror did not unmount cleanly (status %d)\n", rc);
	if (srv != NULL && ts_fixture_stop(&srv) < 0) {
		print_error("blkmap-server did not exit 0\n");
		rc = -1;
	}
	free(f);
	return rc == 0 ? 0 : -1;
}

#define SKIP_WITHOUT_FUSE(f)                                              \
	do {                                                              \
		if ((f)->skip) {                                          \
			print_message("[  SKIP    ] %s\n", wt_skip_reason); \
			skip();                                           \
		}                                                         \
	} while (0)

/* The path of printf-formatted REL under mirror m's mountpoint (one of
 * four rotating buffers). */
static inline const char *mpath(const struct wt_mirror *m, const char *fmt, ...)
{
	static char buf[4][1200];
	static int next;
	char rel[800], *p = buf[next++ % 4];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(p, sizeof(buf[0]), "%s/%s", m->mnt, rel);
	return p;
}

/* BASE/PATH (one of two rotating buffers). */
static inline const char *url_of(const char *base, const char *path)
{
	static char buf[2][1024];
	static int next;
	char *p = buf[next++ % 2];

	snprintf(p, sizeof(buf[0]), "%s/%s", base, path);
	return p;
}

/* The URL of dataset PATH on the group's server. */
static inline const char *ds_url(const struct fx *f, const char *path)
{
	return url_of(f->srv->srv.url, path);
}

/* The names in directory path but . and .., sorted, space-separated. */
static inline const char *list_dir(const char *path)
{
	static char out[2048];
	char *names[64];
	int n = 0;
	DIR *d = opendir(path);
	struct dirent *e;

	if (d == NULL)
		fail_msg("opendir %s: %s", path, strerror(errno));
	while ((e = readdir(d)) != NULL && n < 64)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			names[n++] = strdup(e->d_name);
	closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (strcmp(names[i], names[j]) > 0) {
				char *t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		strcat(out, i ? " " : "");
		strncat(out, names[i], 200);
		free(names[i]);
	}
	return out;
}

/* Does a line of the file at PATH (a mirror's log) hold A, and B unless
 * NULL?  false when the file cannot be read. */
static inline bool file_has_line_with(const char *path, const char *a, const char *b)
{
	char line[4096];
	bool found = false;
	FILE *l = fopen(path, "r");

	while (l && !found && fgets(line, sizeof(line), l))
		found = strstr(line, a) && (b == NULL || strstr(line, b));
	if (l)
		fclose(l);
	return found;
}

/* Runs blkmap-wcfs -f OPTS... URL on a new temporary mountpoint (removed
 * after) with ENV (or NULL) added to its environment, as wt_output: its
 * output (malloc'd), its wait status in *STATUS (-1: stopped after 30 s)
 * and in *MOUNTED whether the mountpoint was still mounted when it ended.
 * For mirrors that must stop before they mount.  OPTS: up to 8, or NULL. */
static inline char *run_mirror_on_a_new_dir(const char *const *opts, const char *url,
					    const char *const *env, int *status, bool *mounted)
{
	char dir[] = "/tmp/blkmap-wcfs-run-XXXXXX";
	const char *argv[16] = { "blkmap-wcfs", "-f" };
	size_t n = 2;

	assert_non_null(mkdtemp(dir));
	for (const char *const *o = opts; o && *o; o++) {
		assert_true(n < 10);
		argv[n++] = *o;
	}
	argv[n++] = url;
	argv[n++] = dir;
	argv[n] = NULL;
	char *out = wt_output(argv, env, status);
	*mounted = wt_is_mounted(dir);
	rmdir(dir);
	assert_non_null(out);
	return out;
}

static inline void assert_file_equals(const char *path, const unsigned char *want, size_t len)
{
	size_t got_len = 0;
	unsigned char *got = wt_read_file(path, &got_len);

	if (got == NULL)
		fail_msg("reading %s: %s", path, strerror(errno));
	assert_int_equal(got_len, len);
	assert_memory_equal(got, want, len);
	free(got);
}

#endif
