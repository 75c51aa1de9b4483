/* bench_wcfs.c — what the wcfs mirror buys: 4 processes each map the same
 * 256 MiB dataset and read all of it, once in loadblk mode (each process
 * fetches and caches everything itself) and once in mmap-overlay mode
 * through a mounted blkmap-wcfs (the mirror fetches once; the kernel page
 * cache is shared).  Measured in the same run: total PSS of the readers
 * (plus the mirror's) from /proc/PID/smaps_rollup, and bytes the server sent
 * (its /_admin/stats).  Then sequential read throughput through an overlay
 * mapping against plain mmap of the mirror's file, cold (page cache of the
 * file dropped) and warm.  Not a test: nothing is asserted.
 *
 *   wcfs pss_mib nprocs=4 overlay=<x> loadblk=<y> ratio=<x/y>
 *   wcfs pss_mib overlay nprocs=1: <x> nprocs=4: <y> ratio=<y/x>
 *   wcfs net_mib nprocs=4 overlay=<x> loadblk=<y> ratio=<x/y>
 *   wcfs seq_read_<cold|warm> overlay_mb_s=<x> mmap_mb_s=<y> ratio=<x/y>
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkmap/blkmap.h>

#include "bench_util.h"
#include "test_server_util.h"

#define SIZE ((uint64_t)256 << 20)
#define NPROC 4
#define ROUNDS 3

static void die(const char *what)
{
	bench_die(what, bm_last_error(NULL)[0] ? bm_last_error(NULL) : strerror(errno));
}

static uint64_t read_all(const volatile uint64_t *p, uint64_t n)
{
	uint64_t s = 0;
	for (uint64_t i = 0; i < n; i += 8) /* every 64-byte line */
		s += p[i];
	return s;
}

static long pss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

static uint64_t server_bytes_out(const struct ts_server *s)
{
	json_t *j = ts_get_json(s, "/_admin/stats");
	uint64_t v = j ? (uint64_t)json_integer_value(json_object_get(j, "bytes_out")) : 0;
	json_decref(j);
	return v;
}

/* A reader process: maps the dataset, reads it all, reports, waits. */
static pid_t spawn_reader(const char *url, const char *wcfs, int report_fd)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	struct bm_options o;
	bm_dataset *ds;
	bm_mapping *m;
	void *p;
	bm_options_init(&o);
	o.wcfs = wcfs;
	o.cache_bytes = SIZE + (64 << 20);
	if (bm_open(&ds, url, &o) < 0 || bm_map(ds, 0, 0, &p, &m) < 0)
		_exit(2);
	volatile uint64_t sink = read_all(p, SIZE / 8);
	(void)sink;
	struct bm_stats st;
	bm_stats(ds, &st);
	char line[128];
	int n = snprintf(line, sizeof(line), "%s\n", st.mode);
	if (write(report_fd, line, (size_t)n) != n)
		_exit(3);
	pause(); /* until the parent has read our PSS */
	_exit(0);
}

/* Runs nproc readers; returns total PSS (KiB) and the mode they used. */
static long run_readers(int nproc, const char *url, const char *wcfs, char *mode, size_t n)
{
	int fds[2];
	pid_t pids[NPROC];
	long total = 0;
	char buf[64];

	if (pipe(fds) < 0)
		die("pipe");
	for (int i = 0; i < nproc; i++)
		pids[i] = spawn_reader(url, wcfs, fds[1]);
	FILE *f = fdopen(fds[0], "r");
	close(fds[1]);
	for (int i = 0; i < nproc; i++) {
		if (!fgets(buf, sizeof(buf), f))
			die("a reader failed");
		buf[strcspn(buf, "\n")] = '\0';
		snprintf(mode, n, "%s", buf);
	}
	for (int i = 0; i < nproc; i++)
		total += pss_kib(pids[i]);
	for (int i = 0; i < nproc; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	fclose(f);
	return total;
}

static pid_t start_mirror(const char *server, const char *mnt)
{
	char bin[1024], url[512];
	const char *top = getenv("top_builddir");
	snprintf(bin, sizeof(bin), "%s/blkmap-wcfs", top ? top : ".");
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, STDOUT_FILENO);
		execl(bin, bin, "-f", server, mnt, (char *)NULL);
		_exit(127);
	}
	/* Wait until the mirror answers. */
	char path[600];
	snprintf(path, sizeof(path), "%s/.wcfs/url", mnt);
	for (int i = 0; i < 500; i++) {
		FILE *f = fopen(path, "r");
		if (f && fgets(url, sizeof(url), f)) {
			fclose(f);
			return pid;
		}
		if (f)
			fclose(f);
		usleep(10000);
	}
	fprintf(stderr, "bench_wcfs: the mirror did not come up at %s\n", mnt);
	kill(pid, SIGTERM);
	exit(1);
}

static void stop_mirror(pid_t pid, const char *mnt)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "fusermount3 -u '%s' 2>/dev/null || fusermount3 -u -z '%s'", mnt, mnt);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_wcfs: unmounting %s failed\n", mnt);
	waitpid(pid, NULL, 0);
}

/* MB/s of a sequential read of p (size bytes). */
static double read_rate(const void *p)
{
	double t0 = bench_now();
	volatile uint64_t s = read_all(p, SIZE / 8);
	(void)s;
	return (double)SIZE / 1e6 / (bench_now() - t0);
}

int main(void)
{
	struct ts_server srv;
	const char *args[] = { "--memory", "--admin", NULL };
	char url[512], mnt[] = "/tmp/bench-wcfs-XXXXXX", mode_l[64], mode_o[64];

	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("wcfs skipped: /dev/fuse is not usable here\n");
		return 0;
	}
	if (ts_start(&srv, args) < 0 || mkdtemp(mnt) == NULL)
		die("start blkmap-server");
	snprintf(url, sizeof(url), "%s/bench/data", srv.url);

	/* The dataset: 256 MiB of non-zero bytes, 1 MiB blocks. */
	struct bm_options o;
	bm_dataset *ds;
	bm_options_init(&o);
	o.flags = BM_OPEN_CREATE;
	o.wcfs = "off";
	if (bm_open(&ds, url, &o) < 0 || bm_resize(ds, SIZE) < 0)
		die("create");
	uint64_t *buf = malloc(1 << 20);
	for (uint64_t off = 0; off < SIZE; off += 1 << 20) {
		for (size_t i = 0; i < (1 << 20) / 8; i++)
			buf[i] = off + i * 8 + 1;
		if (bm_write(ds, off, buf, 1 << 20) < 0)
			die("write");
	}
	if (bm_commit(ds, NULL) < 0)
		die("commit");
	bm_close(ds);
	free(buf);

	/* loadblk: every process fetches and caches everything. */
	uint64_t b0 = server_bytes_out(&srv);
	long pss_l = run_readers(NPROC, url, "off", mode_l, sizeof(mode_l));
	uint64_t net_l = server_bytes_out(&srv) - b0;

	/* overlay: one mirror fetches once; readers share its page cache. */
	pid_t mirror = start_mirror(srv.url, mnt);
	b0 = server_bytes_out(&srv);
	long pss_o = run_readers(NPROC, url, mnt, mode_o, sizeof(mode_o)) + pss_kib(mirror);
	uint64_t net_o = server_bytes_out(&srv) - b0;
	/* The same with one reader (the file is in the page cache now). */
	long pss_o1 = run_readers(1, url, mnt, mode_o, sizeof(mode_o)) + pss_kib(mirror);
	if (strcmp(mode_o, "overlay") != 0 || strcmp(mode_l, "loadblk") != 0) {
		fprintf(stderr, "bench_wcfs: modes were %s and %s\n", mode_o, mode_l);
		stop_mirror(mirror, mnt);
		return 1;
	}
	printf("wcfs pss_mib nprocs=%d overlay=%.1f loadblk=%.1f ratio=%.3f\n", NPROC,
	       pss_o / 1024.0, pss_l / 1024.0, (double)pss_o / (double)pss_l);
	printf("wcfs pss_mib overlay nprocs=1: %.1f nprocs=%d: %.1f ratio=%.3f\n",
	       pss_o1 / 1024.0, NPROC, pss_o / 1024.0, (double)pss_o / (double)pss_o1);
	printf("wcfs net_mib nprocs=%d overlay=%.1f loadblk=%.1f ratio=%.3f\n", NPROC,
	       net_o / 1048576.0, net_l / 1048576.0, (double)net_o / (double)net_l);
	fflush(stdout);

	/* Throughput: an overlay mapping vs plain mmap of the mirror's file,
	 * each mapped afresh per round.  Cold rounds first drop the file's page
	 * cache (nothing maps it then), so the mirror fetches again. */
	char path[700];
	snprintf(path, sizeof(path), "%s/@1/bench/data", mnt);
	int fd = open(path, O_RDONLY);
	o.flags = 0;
	o.wcfs = mnt;
	if (fd < 0 || bm_open(&ds, url, &o) < 0)
		die("open for throughput");
	for (int warm = 0; warm < 2; warm++) {
		double ro[ROUNDS], rp[ROUNDS];
		for (int r = 0; r < ROUNDS; r++) {
			bm_mapping *m;
			void *ov, *plain;
			if (!warm)
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			if (bm_map(ds, 0, 0, &ov, &m) < 0)
				die("bm_map");
			ro[r] = read_rate(ov);
			bm_unmap(m);
			if (!warm)
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			plain = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
			if (plain == MAP_FAILED)
				die("mmap");
			rp[r] = read_rate(plain);
			munmap(plain, SIZE);
		}
		double x = bench_median(ro, ROUNDS), y = bench_median(rp, ROUNDS);
		printf("wcfs seq_read_%s overlay_mb_s=%.0f mmap_mb_s=%.0f ratio=%.3f\n",
		       warm ? "warm" : "cold", x, y, x / y);
		fflush(stdout);
	}
	bm_close(ds);
	close(fd);
	stop_mirror(mirror, mnt);
	rmdir(mnt);
	ts_stop(&srv);
	return 0;
}
