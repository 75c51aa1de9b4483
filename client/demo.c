/* demo.c — blkmap-demo, the main job `./quickstart demo` runs.
 *
 * Starts blkmap-server on a free loopback port with a temporary store (or
 * uses the server URL given as argument), creates a dataset of doubles with
 * known values (256 MiB, or --mib N), then through libblkmap: maps it, computes
 * statistics over a slice that touches a fraction of its blocks, changes a
 * region, commits, reopens the new and the old generation to verify, and
 * shows what it cost: bytes in the dataset vs bytes fetched, cache hits,
 * read-ahead, uploads, time, generations.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkmap/blkmap.h>

#define BLKSIZE ((size_t)1 << 20)
#define MIB_MIN 2      /* the 100000 changed values fit in the second half */
#define MIB_MAX 65536

static uint64_t nval = (uint64_t)32 << 20;  /* doubles: 32 Mi = 256 MiB */

static double value_at(uint64_t i)
{
	return 20.0 + 10.0 * sin((double)i * 1e-5) + (double)(i % 1000) * 1e-3;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc, bm_dataset *ds)
{
	const char *m = bm_last_error(ds);
	fprintf(stderr, "blkmap-demo: %s: %s\n", what, m[0] ? m : bm_strerror(rc));
	exit(1);
}

static pid_t server_pid;
static char server_root[] = "/tmp/blkmap-demo-XXXXXX";

static void stop_server(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = 0;
		char cmd[PATH_MAX + 16];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", server_root);
		if (system(cmd) != 0)
			fprintf(stderr, "blkmap-demo: could not remove %s\n", server_root);
	}
}

/* OUT = DIR/NAME if that is an executable. */
static int executable_in(char *out, size_t n, const char *dir, const char *name)
{
	return (size_t)snprintf(out, n, "%s/%s", dir, name) < n && access(out, X_OK) == 0;
}

/* $BLKMAP_SERVER, or the blkmap-server next to this program (one level up
 * when libtool runs this program from .libs/ in a build tree), or
 * blkmap-server from $PATH. */
static void server_path(char *out, size_t n)
{
	const char *env = getenv("BLKMAP_SERVER");
	if (env && *env) {
		snprintf(out, n, "%s", env);
		return;
	}
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash = len > 0 ? (self[len] = '\0', strrchr(self, '/')) : NULL;
	if (slash) {
		*slash = '\0';
		if (executable_in(out, n, self, "blkmap-server"))
			return;
		size_t dl = strlen(self);
		if (dl >= 6 && strcmp(self + dl - 6, "/.libs") == 0 && executable_in(out, n, self, "../blkmap-server"))
			return;
	}
	snprintf(out, n, "blkmap-server");
}

static void start_server(char *url, size_t n)
{
	char path[PATH_MAX];
	int fds[2];

	server_path(path, sizeof(path));
	if (mkdtemp(server_root) == NULL || pipe(fds) < 0) {
		perror("blkmap-demo: temporary store");
		exit(1);
	}
	server_pid = fork();
	if (server_pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execlp(path, path, "--listen", "127.0.0.1:0", "--root", server_root, (char *)NULL);
		fprintf(stderr, "blkmap-demo: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	atexit(stop_server);
	FILE *f = fdopen(fds[0], "r");
	char line[512];
	if (f == NULL || fgets(line, sizeof(line), f) == NULL) {
		/* A server that could not be run said so (exit 127): one line. */
		int status = 0;
		waitpid(server_pid, &status, 0);
		server_pid = 0;
		rmdir(server_root);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 127)
			fprintf(stderr, "blkmap-demo: blkmap-server did not start (%s)\n", path);
		exit(1);
	}
	char *u = strstr(line, "http://");
	if (u == NULL) {
		fprintf(stderr, "blkmap-demo: unexpected line from blkmap-server: %s", line);
		exit(1);
	}
	u[strcspn(u, " \r\n")] = '\0';
	snprintf(url, n, "%s", u);
	/* Keep the pipe open: the server may print more. */
}

static void show(const char *step, double secs, bm_dataset *ds)
{
	struct bm_stats st;
	bm_stats(ds, &st);
	printf("  %-40s %8.1f ms  fetched %7.1f MiB (%3" PRIu64 " blocks, %3" PRIu64 " read ahead)"
	       "  hits %5" PRIu64 "  uploaded %6.1f MiB\n",
	       step, secs * 1e3, (double)st.fetched_bytes / (1 << 20), st.fetched_blocks,
	       st.readahead_blocks, st.cache_hits, (double)st.uploaded_bytes / (1 << 20));
}

static bm_dataset *open_at(const char *url, uint64_t gen, int flags)
{
	struct bm_options o;
	bm_dataset *ds;
	int rc;

	if ((rc = bm_options_init(&o)) < 0)
		die("options", rc, NULL);
	o.generation = gen;
	o.flags = flags;
	o.blksize = BLKSIZE;
	if ((rc = bm_open(&ds, url, &o)) < 0)
		die("open", rc, NULL);
	return ds;
}

static void create_dataset(const char *url)
{
	bm_dataset *ds = open_at(url, 0, BM_OPEN_CREATE);
	double *buf = malloc(BLKSIZE), t = now();
	uint64_t per = BLKSIZE / sizeof(double), gen;
	int rc = bm_resize(ds, nval * sizeof(double));

	for (uint64_t b = 0; rc == 0 && b < nval / per; b++) {
		for (uint64_t k = 0; k < per; k++)
			buf[k] = value_at(b * per + k);
		rc = bm_write(ds, b * BLKSIZE, buf, BLKSIZE);
	}
	if (rc == 0)
		rc = bm_commit(ds, &gen);
	if (rc < 0)
		die("create", rc, ds);
	printf("created %s: %" PRIu64 " doubles (%" PRIu64 " MiB, %" PRIu64 " blocks of %zu KiB), generation %" PRIu64 "\n",
	       url, nval, nval * 8 >> 20, bm_nblocks_stored(ds), BLKSIZE >> 10, gen);
	show("upload", now() - t, ds);
	free(buf);
	bm_close(ds);
}

int main(int argc, char **argv)
{
	char base[512], url[600];
	double t;
	int rc;

	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		printf("usage: blkmap-demo [--mib N] [SERVER_URL]\n\n"
		       "Without SERVER_URL, starts blkmap-server on a free loopback port with a\n"
		       "temporary store. Creates SERVER_URL/demo/doubles-<pid> (256 MiB, or N MiB,\n"
		       "%d to %d), computes statistics over a slice through a memory mapping,\n"
		       "changes a region, commits, and verifies both generations.\n"
		       "Exit status: 0 verified, 1 error or a value that did not verify, 2 usage error.\n",
		       MIB_MIN, MIB_MAX);
		return 0;
	}
	int a = 1;
	if (argc > a && strcmp(argv[a], "--mib") == 0) {
		char *e;
		unsigned long mib = a + 1 < argc ? strtoul(argv[a + 1], &e, 10) : 0;
		if (a + 1 >= argc || argv[a + 1][0] < '0' || argv[a + 1][0] > '9' || *e != '\0' ||
		    mib < MIB_MIN || mib > MIB_MAX) {
			fprintf(stderr, "blkmap-demo: --mib needs a size in MiB from %d to %d (see --help)\n",
				MIB_MIN, MIB_MAX);
			return 2;
		}
		nval = (uint64_t)mib << 17;
		a += 2;
	}
	if (argc > a + 1) {
		fprintf(stderr, "blkmap-demo: expected at most one SERVER_URL (see --help)\n");
		return 2;
	}
	if (argc > a)
		snprintf(base, sizeof(base), "%s", argv[a]);
	else
		start_server(base, sizeof(base));
	snprintf(url, sizeof(url), "%s/demo/doubles-%d", base, (int)getpid());

	create_dataset(url);

	/* 1. Statistics over a slice: values [40%, 45%) of the array. */
	bm_dataset *ds = open_at(url, 0, 0);
	bm_mapping *m;
	double *v;
	if ((rc = bm_map(ds, 0, 0, (void **)&v, &m)) < 0)
		die("map", rc, ds);
	uint64_t lo = nval * 40 / 100, hi = nval * 45 / 100;
	double sum = 0, sq = 0, mn = INFINITY, mx = -INFINITY;
	t = now();
	for (uint64_t i = lo; i < hi; i++) {
		double x = v[i];
		sum += x;
		sq += x * x;
		mn = x < mn ? x : mn;
		mx = x > mx ? x : mx;
	}
	double n = (double)(hi - lo), mean = sum / n;
	printf("\nstatistics of v[%" PRIu64 " .. %" PRIu64 ") through the mapping:\n"
	       "  mean %.6f  stddev %.6f  min %.6f  max %.6f\n",
	       lo, hi, mean, sqrt(sq / n - mean * mean), mn, mx);
	show("scan 5% of the dataset", now() - t, ds);

	/* 2. Change a region: double v[50% .. 50% + 100000). */
	uint64_t c0 = nval / 2, c1 = c0 + 100000, gen;
	t = now();
	for (uint64_t i = c0; i < c1; i++)
		v[i] *= 2;
	show("double 100000 values (in RAM)", now() - t, ds);
	t = now();
	if ((rc = bm_commit(ds, &gen)) < 0)
		die("commit", rc, ds);
	show("commit", now() - t, ds);
	printf("  committed generation %" PRIu64 "\n", gen);
	struct bm_stats st;
	bm_stats(ds, &st);
	uint64_t fetched = st.fetched_bytes;
	bm_unmap(m);
	bm_close(ds);

	/* 3. Reopen the new generation and the old one; verify both. */
	int bad = 0;
	uint64_t probe[] = { c0, c1 - 1, c0 - 1, c1, lo, nval - 1 };
	for (uint64_t g = gen; g >= gen - 1; g--) {
		ds = open_at(url, g, 0);
		if ((rc = bm_map(ds, 0, 0, (void **)&v, &m)) < 0)
			die("map", rc, ds);
		t = now();
		for (size_t k = 0; k < sizeof(probe) / sizeof(probe[0]); k++) {
			uint64_t i = probe[k];
			double want = value_at(i) * (g == gen && i >= c0 && i < c1 ? 2 : 1);
			if (v[i] != want) {
				fprintf(stderr, "blkmap-demo: generation %" PRIu64 " v[%" PRIu64 "] = %g, want %g\n",
					g, i, v[i], want);
				bad = 1;
			}
		}
		char label[64];
		snprintf(label, sizeof(label), "verify generation %" PRIu64 " (6 probes)", g);
		show(label, now() - t, ds);
		bm_unmap(m);
		bm_close(ds);
	}

	printf("\ndataset %" PRIu64 " MiB; the scan and the change fetched %.1f MiB (%.1f%%); "
	       "generations 1 (created) and %" PRIu64 " (the change) are both readable\n",
	       nval * 8 >> 20, (double)fetched / (1 << 20),
	       100.0 * (double)fetched / (double)(nval * 8), gen);
	printf(bad ? "FAILED\n" : "ok\n");
	return bad;
}
