/* tests/wcfs_util.c — mounting and unmounting a real blkmap-wcfs for the
 * tests (fork/exec of the mirror with -f, polling .wcfs/url, fusermount3),
 * running a program of the build for its output and exit status, and
 * publishing datasets through libblkmap.  Single-threaded; the mirror
 * child dies with the test process (PR_SET_PDEATHSIG SIGTERM, which makes
 * it unmount), so a crashed test leaves no mount behind.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkmap/blkmap.h>

#include "wcfs_util.h"

char wt_skip_reason[256];

const char *wt_prog(const char *name)
{
	static char path[8][4096];
	static int next;
	const char *dir = getenv("top_builddir");
	char *p = path[next++ % 8];

	snprintf(p, sizeof(path[0]), "%s/%s", dir ? dir : ".", name);
	return p;
}

void wt_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

int64_t wt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wt_run(const char *const *argv)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		dup2(null, 2);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *wt_output(const char *const *argv, const char *const *env, int *status)
{
	int p[2];
	char *out = calloc(1, 65536);
	size_t len = 0;
	ssize_t r;

	if (out == NULL || pipe(p) < 0) {
		free(out);
		return NULL;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		free(out);
		return NULL;
	}
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		for (const char *const *e = env; e && *e; e++)
			putenv((char *)*e);
		execv(wt_prog(argv[0]), (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	/* The pipe ends when the program (and anything it forked) is gone; a
	 * program still running after 30 s (a mirror that mounted after all)
	 * is stopped. */
	int64_t end = wt_now_ms() + 30000;
	struct pollfd pfd = { .fd = p[0], .events = POLLIN };
	while (len < 65535 && wt_now_ms() < end) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if ((r = read(p[0], out + len, 65535 - len)) <= 0)
			break;
		len += (size_t)r;
	}
	close(p[0]);
	bool reaped;
	while (!(reaped = waitpid(pid, status, WNOHANG) == pid) && wt_now_ms() < end)
		wt_sleep_ms(10);
	if (!reaped) {
		kill(pid, SIGTERM); /* a mirror unmounts */
		for (int i = 0; i < 1000 && !(reaped = waitpid(pid, NULL, WNOHANG) == pid); i++)
			wt_sleep_ms(10);
		if (!reaped) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		*status = -1;
	}
	return out;
}

bool wt_is_mounted(const char *path)
{
	char line[4096], dev[1024], mnt[2048];
	bool found = false;
	FILE *f = fopen("/proc/self/mounts", "r");

	while (f && !found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%1023s %2047s", dev, mnt) == 2 && !strcmp(mnt, path))
			found = true;
	if (f)
		fclose(f);
	return found;
}

/* The first line of the mirror's log that says mounting is not allowed. */
static bool log_says_no_permission(const struct wt_mirror *m)
{
	char line[512];
	bool no = false;
	FILE *f = fopen(m->log, "r");

	while (f && !no && fgets(line, sizeof(line), f)) {
		if (strstr(line, "ermission denied") || strstr(line, "ot permitted")) {
			line[strcspn(line, "\n")] = '\0';
			line[160] = '\0'; /* fits the reason */
			snprintf(wt_skip_reason, sizeof(wt_skip_reason),
				 "mounting FUSE is not permitted here (%.160s)", line);
			no = true;
		}
	}
	if (f)
		fclose(f);
	return no;
}

static bool url_reads_back(const struct wt_mirror *m, const char *url)
{
	char path[400], want[600], got[600];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/.wcfs/url", m->mnt);
	snprintf(want, sizeof(want), "%s\n", url);
	if ((fd = open(path, O_RDONLY)) < 0)
		return false;
	n = read(fd, got, sizeof(got) - 1);
	close(fd);
	return n > 0 && (got[n] = '\0', !strcmp(got, want));
}

static void start_mirror(struct wt_mirror *m, const char *url, const struct wt_opts *o)
{
	pid_t parent = getpid();
	const char *argv[32] = { "blkmap-wcfs", "-f" };
	int argc = 2;

	for (const char *const *a = o->args; a && *a && argc < 28; a++)
		argv[argc++] = *a;
	argv[argc++] = url;
	argv[argc++] = m->mnt;
	argv[argc] = NULL;
	m->pid = fork();
	if (m->pid != 0)
		return;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(1);
	int fd = open(m->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	dup2(fd, 2);
	dup2(fd, 1);
	for (const char *const *e = o->env; e && *e; e++)
		putenv((char *)*e);
	if (o->nofile > 0) {
		struct rlimit rl = { (rlim_t)o->nofile, (rlim_t)o->nofile };
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(126);
	}
	execv(wt_prog("blkmap-wcfs"), (char *const *)argv);
	fprintf(stderr, "cannot run blkmap-wcfs: %s\n", strerror(errno));
	_exit(127);
}

int wt_mount(struct wt_mirror *m, const char *url, const char *const *env)
{
	const struct wt_opts o = { .env = env };

	return wt_mount_with(m, url, &o);
}

int wt_mount_with(struct wt_mirror *m, const char *url, const struct wt_opts *o)
{
	char tmpl[] = "/tmp/blkmap-wcfs-test.XXXXXX";
	struct stat st;
	int status;

	memset(m, 0, sizeof(*m));
	wt_skip_reason[0] = '\0';
	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		snprintf(wt_skip_reason, sizeof(wt_skip_reason),
			 "/dev/fuse is not usable here (%s): cannot mount a FUSE mirror", strerror(errno));
		return 1;
	}
	if (mkdtemp(tmpl) == NULL)
		return -1;
	snprintf(m->dir, sizeof(m->dir), "%s", tmpl);
	snprintf(m->mnt, sizeof(m->mnt), "%s/mnt", m->dir);
	snprintf(m->log, sizeof(m->log), "%s/mirror.log", m->dir);
	if (mkdir(m->mnt, 0755) < 0)
		return -1;
	start_mirror(m, url, o);
	if (m->pid < 0)
		return -1;
	/* 30 s: a hang, not a slow (sanitizer, loaded) start. */
	for (int64_t end = wt_now_ms() + 30000; wt_now_ms() < end; wt_sleep_ms(10)) {
		if (url_reads_back(m, url) && stat(m->mnt, &st) == 0) {
			m->mounted = true;
			m->dev = st.st_dev;
			return 0;
		}
		if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
			m->pid = 0;
			return log_says_no_permission(m) ? 1 : -1;
		}
	}
	return -1;
}

int wt_abort(struct wt_mirror *m)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(m->dev));
	if ((fd = open(path, O_WRONLY)) < 0)
		return -1;
	int rc = write(fd, "1", 1) == 1 ? 0 : -1;
	close(fd);
	return rc;
}

static int wait_exit(pid_t pid, long timeout_ms)
{
	int status;

	for (int64_t end = wt_now_ms() + timeout_ms; wt_now_ms() < end; wt_sleep_ms(10))
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return -1;
}

int wt_unmount(struct wt_mirror *m)
{
	int rc = 0;

	if (m->dir[0] == '\0')
		return 0;
	if (m->pid > 0) {
		const char *const um[] = { "fusermount3", "-u", m->mnt, NULL };
		wt_run(um);
		rc = wait_exit(m->pid, 30000);  /* a hang bound: LSan's exit check takes a while */
		if (rc < 0) {
			/* Last resort: never leave a mount behind. */
			const char *const lazy[] = { "fusermount3", "-u", "-z", m->mnt, NULL };
			wt_run(lazy);
			kill(m->pid, SIGKILL);
			waitpid(m->pid, NULL, 0);
		}
	}
	if (wt_is_mounted(m->mnt)) {
		const char *const lazy[] = { "fusermount3", "-u", "-z", m->mnt, NULL };
		wt_run(lazy);
		rc = -1;
	}
	m->pid = 0;
	m->mounted = false;
	if (rc != 0) {
		/* Show why: the mirror's own log (an ASan report, say). */
		char line[1024];
		FILE *l = fopen(m->log, "r");
		fprintf(stderr, "--- the mirror's log (%s):\n", m->log);
		while (l && fgets(line, sizeof(line), l))
			fputs(line, stderr);
		if (l)
			fclose(l);
		fprintf(stderr, "--- end of the mirror's log\n");
	}
	rmdir(m->mnt);
	unlink(m->log);
	rmdir(m->dir);
	m->dir[0] = '\0';
	return rc;
}

/* Opened as a dataset (the URL with a '/' at the end): an open that may
 * find a plain object also sends a GET of the URL (the probe), which
 * blkmap-server may count only after the test's next count of GETs,
 * once the manifest's answer stopped it. */
static bm_dataset *open_for_publish(const char *name, size_t blksize)
{
	struct bm_options o;
	bm_dataset *ds;
	char url[4200];

	if ((size_t)snprintf(url, sizeof(url), "%s/", name) >= sizeof(url))
		return NULL;
	if (bm_options_init(&o) < 0)
		return NULL;
	o.blksize = blksize;
	o.flags = BM_OPEN_CREATE;
	o.readahead_bytes = 0;
	o.cache_bytes = 8 << 20;
	if (bm_open(&ds, url, &o) < 0) {
		fprintf(stderr, "wt_publish: %s\n", bm_last_error(NULL));
		return NULL;
	}
	return ds;
}

static uint64_t commit_and_close(bm_dataset *ds)
{
	uint64_t gen = 0;

	if (bm_commit(ds, &gen) < 0) {
		fprintf(stderr, "wt_publish: commit: %s\n", bm_last_error(ds));
		gen = 0;
	}
	bm_close(ds);
	return gen;
}

uint64_t wt_publish(const char *url, const void *data, size_t len, size_t blksize)
{
	bm_dataset *ds = open_for_publish(url, blksize);

	if (ds == NULL)
		return 0;
	if (bm_resize(ds, len) < 0 || (len && bm_write(ds, 0, data, len) < 0)) {
		bm_close(ds);
		return 0;
	}
	return commit_and_close(ds);
}

uint64_t wt_publish_sparse(const char *url, uint64_t size, size_t blksize,
			   const struct wt_piece *pieces, size_t npieces)
{
	bm_dataset *ds = open_for_publish(url, blksize);

	if (ds == NULL || bm_resize(ds, size) < 0) {
		bm_close(ds);
		return 0;
	}
	for (size_t i = 0; i < npieces; i++) {
		unsigned char *buf = malloc(pieces[i].len);
		memset(buf, pieces[i].byte, pieces[i].len);
		int rc = bm_write(ds, pieces[i].off, buf, pieces[i].len);
		free(buf);
		if (rc < 0) {
			bm_close(ds);
			return 0;
		}
	}
	return commit_and_close(ds);
}

unsigned char *wt_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	size_t cap = 1 << 16, n = 0;
	unsigned char *buf;

	if (fd < 0)
		return NULL;
	buf = malloc(cap);
	for (;;) {
		if (n == cap)
			buf = realloc(buf, cap *= 2);
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0) {
			int e = errno;
			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	return buf;
}
