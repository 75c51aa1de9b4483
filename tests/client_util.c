/* tests/client_util.c — helpers of the libblkmap integration tests (see
 * client_util.h): servers of every kind (blkmap-server, nginx, Apache),
 * datasets, the CLI, child processes and a canned HTTP responder.
 * Threads: only the canned responder runs a thread of its own; it reads
 * its rules, which do not change while it runs.
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"
#include "rgw_util.h"

/* ---- blkmap-server ------------------------------------------------------- */

void tc_server_start(struct ts_server *s, const char *const *args)
{
	const char *argv[64] = { "--memory", "--admin" };
	int n = 2;

	for (; args && *args && n < 62; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	assert_int_equal(ts_start(s, argv), 0);
}

void tc_server_stop(struct ts_server *s)
{
	assert_int_equal(ts_stop(s), 0);
}

int tc_group_setup(void **state)
{
	struct ts_server *s = calloc(1, sizeof(*s));
	tc_server_start(s, NULL);
	*state = s;
	return 0;
}

int tc_group_teardown(void **state)
{
	tc_server_stop(*state);
	free(*state);
	return 0;
}

const char *tc_url(char *out, size_t n, const struct ts_server *s, const char *path)
{
	snprintf(out, n, "%s%s", s->url, path);
	return out;
}

long tc_server_stat(const struct ts_server *s, const char *outer, const char *inner)
{
	json_t *doc = ts_get_json(s, "/_admin/stats");
	json_t *v = json_object_get(doc, outer);
	long x;

	if (inner)
		v = json_object_get(v, inner);
	x = (long)json_integer_value(v);
	json_decref(doc);
	return x;
}

long tc_server_bytes_out(const struct ts_server *s)
{
	long last = tc_server_stat(s, "bytes_out", NULL);

	for (int i = 0; i < 250; i++) {
		usleep(20 * 1000);
		long now = tc_server_stat(s, "bytes_out", NULL);
		if (now == last)
			break;
		last = now;
	}
	return last;
}

/* Sockets of this network namespace connected to PORT on loopback (state
 * ESTABLISHED): the client ends of the connections still open to a
 * server of the test's (/proc/net/tcp, tcp6). */
static long connected_to(int port)
{
	static const char *const files[] = { "/proc/net/tcp", "/proc/net/tcp6" };
	long n = 0;

	for (size_t i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "r");
		char line[512], rem[80];
		unsigned st;

		if (f == NULL)
			continue;
		while (fgets(line, sizeof(line), f) != NULL) {
			if (sscanf(line, " %*s %*s %79s %x", rem, &st) != 2)
				continue; /* the heading */
			char *colon = strrchr(rem, ':');
			n += colon != NULL && strtol(colon + 1, NULL, 16) == port && st == 1;
		}
		fclose(f);
	}
	return n;
}

void tc_server_settle(const struct ts_server *s)
{
	const char *colon = strrchr(s->url, ':');
	int port = colon ? atoi(colon + 1) : 0;
	long open = 0, mine = 0;

	for (int i = 0; i < 2000; i++) {
		/* Its count includes the connection of this reading. */
		open = tc_server_stat(s, "connections", "open") - 1;
		mine = connected_to(port);
		if (open <= mine)
			return;
		usleep(5 * 1000);
	}
	fail_msg("blkmap-server still holds %ld connections, %ld of them not closed by clients",
		 open, open - mine);
}

/* ---- the library ------------------------------------------------------------ */

void tc_options(struct bm_options *o)
{
	assert_int_equal(bm_options_init(o), 0);
	o->retry_base_ms = 1;
	o->retries = 10;
	o->cache_bytes = (size_t)64 << 20;
	o->timeout_ms = 20000;
}

const char *tc_prefix(char *out, size_t n, const char *url)
{
	size_t len = strlen(url);
	int w = snprintf(out, n, "%s%s", url, len > 0 && url[len - 1] == '/' ? "" : "/");

	assert_true(w > 0 && (size_t)w < n);
	return out;
}

uint64_t tc_put(const char *url, size_t blksize, const void *data, size_t len)
{
	struct bm_options o;
	bm_dataset *ds;
	uint64_t gen = 0;
	char prefix[TC_URL_MAX];

	tc_options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = blksize;
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	assert_int_equal(bm_resize(ds, len), 0);
	if (len > 0)
		assert_int_equal(bm_write(ds, 0, data, len), 0);
	int rc = bm_commit(ds, &gen);
	if (rc < 0)
		fprintf(stderr, "commit of %s: %s\n", url, bm_last_error(ds));
	assert_int_equal(rc, 0);
	bm_close(ds);
	return gen;
}

bm_dataset *tc_open(const char *url, uint64_t gen)
{
	char prefix[TC_URL_MAX];

	return tc_open_as_given(tc_prefix(prefix, sizeof(prefix), url), gen);
}

bm_dataset *tc_open_as_given(const char *url, uint64_t gen)
{
	struct bm_options o;
	bm_dataset *ds = NULL;

	tc_options(&o);
	o.generation = gen;
	int rc = bm_open(&ds, url, &o);
	if (rc < 0)
		fprintf(stderr, "open %s: %s\n", url, bm_last_error(NULL));
	assert_int_equal(rc, 0);
	return ds;
}

uint64_t tc_write_commit(const char *url, uint64_t off, const void *data, size_t len)
{
	bm_dataset *ds = tc_open(url, 0);
	uint64_t gen = 0;

	assert_int_equal(bm_write(ds, off, data, len), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	bm_close(ds);
	return gen;
}

unsigned char *tc_read_mapped(bm_dataset *ds)
{
	uint64_t size = bm_size(ds);
	unsigned char *buf = malloc(size ? size : 1);
	bm_mapping *m;
	void *addr;

	assert_non_null(buf);
	if (size == 0)
		return buf;
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	memcpy(buf, addr, size);
	bm_unmap(m);
	return buf;
}

/* Whether DS (closed here) reads as LEN bytes equal to DATA. */
static int equals(bm_dataset *ds, const void *data, size_t len)
{
	int same = 0;

	if (bm_size(ds) == len) {
		unsigned char *got = tc_read_mapped(ds);
		same = memcmp(got, data, len) == 0;
		free(got);
	}
	bm_close(ds);
	return same;
}

int tc_dataset_equals(const char *url, uint64_t gen, const void *data, size_t len)
{
	return equals(tc_open(url, gen), data, len);
}

int tc_object_equals(const char *url, const void *data, size_t len)
{
	return equals(tc_open_as_given(url, 0), data, len);
}

void tc_map_put(struct tc_mapped *v, size_t blksize, const void *data, size_t len)
{
	tc_put(v->url, blksize, data, len);
	tc_options(&v->o);
}

void tc_map_open(struct tc_mapped *v)
{
	void *addr;
	char prefix[TC_URL_MAX];
	int rc = bm_open(&v->ds, tc_prefix(prefix, sizeof(prefix), v->url), &v->o);

	if (rc < 0)
		fprintf(stderr, "open %s: %s\n", v->url, bm_last_error(NULL));
	assert_int_equal(rc, 0);
	assert_int_equal(bm_map(v->ds, 0, 0, &addr, &v->m), 0);
	v->mem = addr;
}

void tc_map_close(struct tc_mapped *v)
{
	bm_unmap(v->m);
	bm_close(v->ds);
}

const char *tc_block_key(const char *url, uint64_t blk, char *out, size_t n)
{
	char sum[64];
	bm_dataset *ds = tc_open(url, 0);

	assert_int_equal(bm_block_sum(ds, blk, sum, sizeof(sum)), 1);
	bm_close(ds);
	snprintf(out, n, "blocks/%s", sum);
	return out;
}

json_t *tc_block_keys(const char *url)
{
	json_t *keys = json_array();
	bm_dataset *ds = tc_open(url, 0);
	char sum[64], key[80];
	uint64_t b = 0, next;

	while (bm_next_block(ds, b, &next) == 1) {
		assert_int_equal(bm_block_sum(ds, next, sum, sizeof(sum)), 1);
		snprintf(key, sizeof(key), "blocks/%s", sum);
		json_array_append_new(keys, json_string(key));
		b = next + 1;
	}
	bm_close(ds);
	return keys;
}

/* xxh128 as hex: the library's (client/util.c), an exported helper. */
void bm_sum_hex(const void *buf, size_t len, char out[33]);

/* The self-checksum of a version 2 or 3 manifest, made here from the format's
 * words (docs/FORMAT.md), not with the library's manifest code. */
char *tc_manifest_text(json_t *man, size_t *lenp)
{
	json_t *v = json_object_get(man, "version");
	bool v2 = json_is_integer(v) && json_integer_value(v) >= 2; /* 2 and 3 */

	json_object_del(man, "manifest_sum");
	char *text = json_dumps(man, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(text);
	size_t len = strlen(text);
	if (v2) {
		static const char field[] = ",\"manifest_sum\":\"";
		char *out = malloc(len + sizeof(field) + 32 + 3);
		assert_non_null(out);
		memcpy(out, text, len - 1); /* without its '}' */
		memcpy(out + len - 1, field, sizeof(field) - 1);
		size_t plen = len - 1 + sizeof(field) - 1;
		bm_sum_hex(out, plen, out + plen);
		memcpy(out + plen + 32, "\"}", 3);
		free(text);
		text = out;
		len = plen + 34;
	}
	if (lenp)
		*lenp = len;
	return text;
}

void tc_assert_manifests_refused(const struct ts_server *s, const char *prefix,
				 const struct tc_bad_manifest *bad, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char path[256], url[512], dir[TC_URL_MAX];
		bm_dataset *ds = NULL;
		struct bm_options o;

		snprintf(path, sizeof(path), "%s%zu/manifest.json", prefix, i);
		assert_in_range(ts_put(s, path, bad[i].json, strlen(bad[i].json)), 201, 204);
		snprintf(path, sizeof(path), "%s%zu", prefix, i);
		tc_url(url, sizeof(url), s, path);
		tc_options(&o);
		/* As a prefix (tc_prefix): a refused manifest stops the probe
		 * too.  The message names the URL without its '/'. */
		int rc = bm_open(&ds, tc_prefix(dir, sizeof(dir), url), &o);
		const char *msg = bm_last_error(NULL);
		if (rc != BM_EFORMAT || !strstr(msg, url) || !strstr(msg, bad[i].says))
			fail_msg("manifest %zu: rc %d, message \"%s\", expected \"%s\"", i, rc, msg,
				 bad[i].says);
		assert_null(ds);
	}
}

/* ---- processes ----------------------------------------------------------------- */

static char *slurp_fd(int fd)
{
	size_t n;
	char *s;

	lseek(fd, 0, SEEK_SET);
	s = ts_read_all(fd, &n);
	close(fd);
	return s;
}

static int tmp_fd(void)
{
	char path[] = "/tmp/blkmap-client-test.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

long tc_child_limit_ms = 120000;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits at most LIMIT_MS for PID to exit: its status, or -1 if it did not
 * (or is not our child). */
static int wait_until(pid_t pid, long limit_ms)
{
	int64_t deadline = now_ms() + limit_ms;
	long nap_us = 500;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_ms() >= deadline)
			return -1;
		/* From 0.5 ms up to 20 ms: a quick child costs little. */
		struct timespec ts = { 0, nap_us * 1000 };
		nanosleep(&ts, NULL);
		if (nap_us < 20000)
			nap_us *= 2;
	}
}

/* The wait status of child PID (WHAT names it), waited for at most
 * tc_child_limit_ms: past that it is a hang, said on stderr, and the child
 * is killed (SIGKILL: the status says so, which fails the test that
 * expected an exit).  -1 if even the killed child does not go (a process
 * stuck in the kernel) within 10 s. */
static int wait_status(pid_t pid, const char *what)
{
	int status = wait_until(pid, tc_child_limit_ms);

	if (status != -1)
		return status;
	fprintf(stderr, "%s (pid %d) still running after %ld ms: a hang; killed\n", what, (int)pid,
		tc_child_limit_ms);
	kill(pid, SIGKILL);
	status = wait_until(pid, 10000);
	if (status == -1)
		fprintf(stderr, "%s (pid %d) does not go even when killed\n", what, (int)pid);
	return status;
}

int tc_child_options(struct bm_options *o)
{
	if (bm_options_init(o) < 0)
		return -1;
	o->retry_base_ms = 1;
	return 0;
}

bm_dataset *tc_child_map(const char *url, const struct bm_options *o, void **addrp)
{
	bm_dataset *ds;
	bm_mapping *m;

	if (bm_open(&ds, url, o) < 0)
		return NULL;
	return bm_map(ds, 0, 0, addrp, &m) < 0 ? NULL : ds;
}

int tc_touch_child(void *arg)
{
	struct tc_touch *t = arg;
	struct bm_options o;
	char prefix[TC_URL_MAX];
	void *addr;

	if (tc_child_options(&o) < 0)
		return 1;
	o.retries = 2;
	/* As a prefix, as tc_open: no probe for the server to count late. */
	snprintf(prefix, sizeof(prefix), "%s/", t->url);
	if (tc_child_map(prefix, &o, &addr) == NULL)
		return 2;
	volatile char x = ((volatile char *)addr)[t->off];
	(void)x;
	return 0;
}

int tc_child_refuse_threads(void)
{
	/* args[0]'s low 32 bits, where CLONE_THREAD is: first on a
	 * little-endian machine. */
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	/* The uffd engine starts the process's fault handler threads with
	 * its first handle: the SIGSEGV one has none. */
	setenv("VIRTMEM_ENGINE", "sigsegv", 1);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("seccomp");
		return -1;
	}
	return 0;
}

int tc_child(int (*fn)(void *), void *arg, char **errp)
{
	int efd = tmp_fd();
	pid_t pid;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* cmocka catches SIGBUS and SIGSEGV to fail a test; the child must
		 * die of them as a plain program would. */
		signal(SIGBUS, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		dup2(efd, 2);
		_exit(fn(arg));
	}
	int status = wait_status(pid, "a child process (tc_child)");
	if (errp)
		*errp = slurp_fd(efd);
	else
		close(efd);
	return status;
}

int tc_cli(char **outp, char **errp, const char *const *argv)
{
	const char *args[64];
	char path[4096];
	const char *dir = getenv("top_builddir");
	int ofd = tmp_fd(), efd = tmp_fd(), n = 0;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/blkmap", dir ? dir : ".");
	args[n++] = path;
	for (; *argv && n < 62; argv++)
		args[n++] = *argv;
	args[n] = NULL;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		dup2(nul, 0);
		dup2(ofd, 1);
		dup2(efd, 2);
		/* Fast retries, as in the library tests. */
		setenv("BLKMAP_RETRY_BASE_MS", "1", 1);
		setenv("BLKMAP_CACHE_BYTES", "64M", 1);
		execv(path, (char *const *)args);
		_exit(127);
	}
	int status = wait_status(pid, "the blkmap command (tc_cli)");
	if (outp)
		*outp = slurp_fd(ofd);
	else
		close(ofd);
	if (errp)
		*errp = slurp_fd(efd);
	else
		close(efd);
	if (status == -1)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int tc_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		if (*s == '\n' || s[1] == '\0')
			n++;
	return n;
}

char *tc_tmpfile(const void *data, size_t len)
{
	char *path = strdup("/tmp/blkmap-client-file.XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

/* ---- servers of every kind ------------------------------------------------------------- */

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Polls until something accepts on PORT; at most about 10 s. */
static int wait_listening(int port, pid_t pid)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timespec ms10 = { 0, 10 * 1000 * 1000 };

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 1000; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		close(fd);
		if (ok)
			return 0;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1; /* the server exited (port taken?) */
		nanosleep(&ms10, NULL);
	}
	return -1;
}

typedef void (*write_conf_fn)(const struct tc_store *st, const char *conf, int port);

/* Starts ARGV (ARGV[0] the program, CONF its config, written by WRITE for
 * each port tried) with stdout and stderr to DIR/stderr.log, on a free port:
 * 0, or -1. */
static int start_daemon(struct tc_store *st, const char *const *argv, const char *conf, write_conf_fn write)
{
	char log[600];

	snprintf(log, sizeof(log), "%s/stderr.log", st->dir);
	for (int attempt = 0; attempt < 3; attempt++) {
		int port = free_port();
		write(st, conf, port);
		fflush(NULL);
		st->pid = fork();
		if (st->pid == 0) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
			dup2(fd, 1);
			dup2(fd, 2);
			execv(argv[0], (char *const *)argv);
			_exit(127);
		}
		if (st->pid > 0 && wait_listening(port, st->pid) == 0) {
			snprintf(st->srv.url, sizeof(st->srv.url), "http://127.0.0.1:%d", port);
			return 0;
		}
		if (st->pid > 0) {
			kill(st->pid, SIGKILL);
			wait_status(st->pid, st->kind ? st->kind->name : "a server");
		}
		st->pid = 0;
	}
	return -1;
}

static void stop_daemon(struct tc_store *st)
{
	if (st->pid > 0) {
		kill(st->pid, SIGTERM);
		wait_status(st->pid, st->kind ? st->kind->name : "a server");
	}
	if (st->dir) {
		ts_rmtree(st->dir);
		free(st->dir);
	}
	st->dir = NULL;
	st->pid = 0;
}

/* A temporary directory for config, logs and the document root (www/),
 * which a server that drops root privileges (to nobody) can write. */
static int make_dirs(struct tc_store *st)
{
	char path[1024];

	if ((st->dir = ts_mkdtemp()) == NULL)
		return -1;
	chmod(st->dir, 0755);
	snprintf(path, sizeof(path), "%s/www", st->dir);
	if (strlen(path) >= sizeof(st->docroot))
		return -1;
	memcpy(st->docroot, path, strlen(path) + 1);
	if (mkdir(path, 0777) < 0 || chmod(path, 0777) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/lock", st->dir);
	return mkdir(path, 0777) < 0 || chmod(path, 0777) < 0 ? -1 : 0;
}

/* blkmap-server --memory --admin */
static int start_blkmap_server(struct tc_store *st, char *why, size_t n)
{
	const char *argv[] = { "--memory", "--admin", NULL };

	if (ts_start(&st->srv, argv) != 0) {
		snprintf(why, n, "blkmap-server (%s) did not start", ts_server_path());
		return -1;
	}
	return 0;
}

static void stop_blkmap_server(struct tc_store *st)
{
	assert_int_equal(ts_stop(&st->srv), 0);
}

/* nginx with its WebDAV module: PUT, DELETE and MKCOL; no parent
 * directories made on PUT (create_full_put_path off, its default), so the
 * client makes them, as on any WebDAV server. */
static void write_nginx_conf(const struct tc_store *st, const char *conf, int port)
{
	FILE *f = fopen(conf, "w");

	assert_non_null(f);
	fprintf(f,
		"%s"
		"daemon off;\n"
		"worker_processes 1;\n"
		"pid %s/nginx.pid;\n"
		"error_log %s/error.log;\n"
		"events { worker_connections 256; }\n"
		"http {\n"
		"  access_log off;\n"
		"  client_body_temp_path %s/body;\n"
		"  server {\n"
		"    listen 127.0.0.1:%d;\n"
		"    root %s;\n"
		"    dav_methods PUT DELETE MKCOL;\n"
		"    client_max_body_size 0;\n"
		"  }\n"
		"}\n",
		geteuid() == 0 ? "user root;\n" : "", st->dir, st->dir, st->dir, port, st->docroot);
	fclose(f);
}

static int start_nginx(struct tc_store *st, char *why, size_t n)
{
	char conf[600];

	if (access(TC_NGINX_PATH, X_OK) != 0) {
		snprintf(why, n, "%s is not installed", TC_NGINX_PATH);
		return -1;
	}
	if (make_dirs(st) < 0) {
		snprintf(why, n, "cannot make a temporary directory");
		return -1;
	}
	snprintf(conf, sizeof(conf), "%s/nginx.conf", st->dir);
	const char *argv[] = { TC_NGINX_PATH, "-p", st->dir, "-c", conf, NULL };
	if (start_daemon(st, argv, conf, write_nginx_conf) < 0) {
		snprintf(why, n, "%s did not start (see %s/error.log)", TC_NGINX_PATH, st->dir);
		return -1;
	}
	return 0;
}

/* Apache httpd with mod_dav_fs, as Debian's apache2 package has it: a
 * config of its own (nothing from /etc/apache2), one process. */
static void write_apache_conf(const struct tc_store *st, const char *conf, int port)
{
	FILE *f = fopen(conf, "w");
	const char *mods = TC_APACHE_MODULES;

	assert_non_null(f);
	fprintf(f,
		"ServerRoot %s\n"
		"ServerName 127.0.0.1\n"
		"Listen 127.0.0.1:%d\n"
		"PidFile %s/httpd.pid\n"
		"DefaultRuntimeDir %s\n"
		"ErrorLog %s/error.log\n"
		"LogLevel warn\n"
		"LoadModule mpm_event_module %s/mod_mpm_event.so\n"
		"LoadModule authz_core_module %s/mod_authz_core.so\n"
		"LoadModule dav_module %s/mod_dav.so\n"
		"LoadModule dav_fs_module %s/mod_dav_fs.so\n"
		"StartServers 1\n"
		"ServerLimit 1\n"
		"ThreadsPerChild 64\n"
		"MaxRequestWorkers 64\n"
		"KeepAlive On\n"
		"MaxKeepAliveRequests 0\n"
		"LimitRequestBody 0\n"
		"%s"
		"DocumentRoot %s\n"
		"DavLockDB %s/lock/davlock\n"
		"<Directory %s>\n"
		"  Dav On\n"
		"  Require all granted\n"
		"</Directory>\n",
		st->dir, port, st->dir, st->dir, st->dir, mods, mods, mods, mods,
		geteuid() == 0 ? "User nobody\nGroup nogroup\n" : "", st->docroot, st->dir, st->docroot);
	fclose(f);
}

static int start_apache(struct tc_store *st, char *why, size_t n)
{
	char conf[600];

	if (access(TC_APACHE_PATH, X_OK) != 0 || access(TC_APACHE_MODULES "/mod_dav_fs.so", R_OK) != 0) {
		snprintf(why, n, "%s or %s/mod_dav_fs.so is not installed (Debian package apache2)",
			 TC_APACHE_PATH, TC_APACHE_MODULES);
		return -1;
	}
	if (make_dirs(st) < 0) {
		snprintf(why, n, "cannot make a temporary directory");
		return -1;
	}
	snprintf(conf, sizeof(conf), "%s/httpd.conf", st->dir);
	const char *argv[] = { TC_APACHE_PATH, "-f", conf, "-DFOREGROUND", NULL };
	if (start_daemon(st, argv, conf, write_apache_conf) < 0) {
		snprintf(why, n, "%s did not start (see %s/error.log)", TC_APACHE_PATH, st->dir);
		return -1;
	}
	return 0;
}

/* ---- Ceph RGW (S3) ---------------------------------------------------------------------- */

/* The shared RADOS Gateway (rgw_util.h) and a new bucket; the base URL is
 * s3://BUCKET and the library reaches it through the AWS_* environment.
 * A gateway that is installed but does not start fails the program: only
 * a missing one skips. */
static int start_rgw(struct tc_store *st, char *why, size_t n)
{
	static int buckets;
	struct tr_rgw r;
	struct tr_resp resp;
	char path[96];
	int rc = tr_rgw_get(&r, why, n);

	if (rc == 77)
		return -1;
	if (rc != 0) {
		fprintf(stderr, "RADOS Gateway: %s\n", why);
		exit(1);
	}
	tr_rgw_setenv(&r);
	snprintf(path, sizeof(path), "/suite-%ld-%d", (long)getpid(), ++buckets);
	tr_s3(&r, "PUT", path, NULL, "", 0, &resp);
	if (resp.status != 200) {
		snprintf(why, n, "PUT bucket %s: %ld %s", path, resp.status, resp.err);
		tr_resp_free(&resp);
		return -1;
	}
	tr_resp_free(&resp);
	snprintf(st->srv.url, sizeof(st->srv.url), "s3:/%s", path);
	st->rgw = malloc(sizeof(r));
	assert_non_null(st->rgw);
	memcpy(st->rgw, &r, sizeof(r));
	return 0;
}

/* The gateway is shared: it stops when make does; the bucket goes with it. */
static void stop_rgw(struct tc_store *st)
{
	free(st->rgw);
	st->rgw = NULL;
}

const struct tc_kind tc_kinds[] = {
	{ "blkmap-server", start_blkmap_server, stop_blkmap_server,
	  TC_CAN_SWAP | TC_CAN_COUNT | TC_CAN_FAULTS | TC_CAN_LIST, NULL },
	{ "nginx", start_nginx, stop_daemon, 0, NULL },
	/* Swaps under claims made with MKCOL (store_http.c): its WebDAV
	 * locks are not exclusive under races. */
	{ "apache", start_apache, stop_daemon, TC_CAN_SWAP | TC_CAN_LIST, NULL },
	{ "rgw", start_rgw, stop_rgw, TC_CAN_SWAP | TC_CAN_LIST, NULL },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct tc_kind *tc_kind_named(const char *name)
{
	for (const struct tc_kind *k = tc_kinds; k->name; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

int tc_store_start(struct tc_store *st, const struct tc_kind *kind)
{
	memset(st, 0, sizeof(*st));
	st->kind = kind;
	if (kind->start(st, st->skip_why, sizeof(st->skip_why)) < 0) {
		if (st->dir) {
			ts_rmtree(st->dir);
			free(st->dir);
			st->dir = NULL;
		}
		return -1;
	}
	for (const char *const *e = kind->env; e && *e; e++)
		putenv((char *)*e);
	st->running = true;
	return 0;
}

void tc_store_stop(struct tc_store *st)
{
	if (st->running)
		st->kind->stop(st);
	st->running = false;
}

/* The kind the suite of this program runs against (tc_run_suite). */
static const struct tc_kind *suite_kind;

static int suite_setup(void **state)
{
	struct tc_store *st = calloc(1, sizeof(*st));

	assert_non_null(st);
	tc_store_start(st, suite_kind);
	*state = st;
	return 0;
}

static int suite_teardown(void **state)
{
	tc_store_stop(*state);
	free(*state);
	return 0;
}

int tc_run_suite(const char *kind, const struct CMUnitTest *tests, size_t n)
{
	const char *env = getenv("BLKMAP_TEST_SERVER");
	char name[128];

	if (env && *env)
		kind = env;
	suite_kind = tc_kind_named(kind);
	if (suite_kind == NULL) {
		fprintf(stderr, "no server kind \"%s\" (BLKMAP_TEST_SERVER)\n", kind);
		return 99;
	}
	/* A server that cannot start skips the whole program (exit 77). */
	struct tc_store probe;
	if (tc_store_start(&probe, suite_kind) < 0) {
		printf("SKIP: every test on %s: %s\n", kind, probe.skip_why);
		return 77;
	}
	tc_store_stop(&probe);
	snprintf(name, sizeof(name), "on %s", kind);
	/* Only the cases whose names match (cmocka's * and ?): to loop one
	 * case, e.g. while chasing a flake (docs/testing.md). */
	const char *only = getenv("BLKMAP_TEST_FILTER");
	if (only && *only)
		cmocka_set_test_filter(only);
	return _cmocka_run_group_tests(name, tests, n, suite_setup, suite_teardown);
}

struct tc_store *tc_store_of(void **state)
{
	struct tc_store *st = *state;

	if (!st->running) {
		fprintf(stderr, "skipped on %s: %s\n", st->kind->name, st->skip_why);
		skip();
	}
	return st;
}

bool tc_store_can(const struct tc_store *st, unsigned can)
{
	return (st->kind->can & can) == can;
}

void tc_require(const struct tc_store *st, unsigned can, const char *why)
{
	if (!tc_store_can(st, can)) {
		fprintf(stderr, "skipped on %s: %s\n", st->kind->name, why);
		skip();
	}
}

const char *tc_store_url(char *out, size_t n, const struct tc_store *st, const char *path)
{
	snprintf(out, n, "%s%s", st->srv.url, path);
	return out;
}

void tc_store_settle(const struct tc_store *st)
{
	if (tc_store_can(st, TC_CAN_COUNT))
		tc_server_settle(&st->srv);
}

long tc_store_count(const struct tc_store *st, const char *method)
{
	return tc_store_can(st, TC_CAN_COUNT) ? tc_server_stat(&st->srv, "requests", method) : -1;
}

/* PATH of the store as the S3 path "/BUCKET/PATH". */
static void rgw_path(const struct tc_store *st, const char *path, char *out, size_t n)
{
	snprintf(out, n, "%s%s", st->srv.url + 4, path); /* after "s3:/" */
}

CURLcode tc_store_request(const struct tc_store *st, const char *method, const char *path,
			  const void *body, size_t len, struct ts_resp *r)
{
	if (st->rgw) {
		struct tr_resp t;
		char p[1024];
		rgw_path(st, path, p, sizeof(p));
		tr_s3(st->rgw, method, p, NULL, body, len, &t);
		memset(r, 0, sizeof(*r));
		r->rc = t.status < 0 ? CURLE_COULDNT_CONNECT : CURLE_OK;
		r->status = t.status;
		r->body = t.body;
		r->len = t.len;
		r->headers = t.headers;
		r->hlen = strlen(t.headers);
		return r->rc;
	}
	return ts_request(NULL, &st->srv, method, path, NULL, body, len, r);
}

json_t *tc_store_get_json(const struct tc_store *st, const char *path)
{
	struct ts_resp r;
	json_t *j = NULL;

	if (tc_store_request(st, "GET", path, NULL, 0, &r) == CURLE_OK && r.status == 200)
		j = json_loadb(r.body, r.len, 0, NULL);
	ts_resp_free(&r);
	return j;
}

json_t *tc_store_manifest(const struct tc_store *st, const char *path)
{
	char mpath[256];
	snprintf(mpath, sizeof(mpath), "%s/manifest.json", path);
	json_t *m = tc_store_get_json(st, mpath);
	assert_non_null(m);
	return m;
}

void tc_store_put_manifest(const struct tc_store *st, const char *path, json_t *man)
{
	char mpath[256];
	size_t len;
	char *text = tc_manifest_text(man, &len);
	snprintf(mpath, sizeof(mpath), "%s/manifest.json", path);
	assert_true(tc_store_put(st, mpath, text, len) / 100 == 2);
	free(text);
}

void tc_store_put_v1(const struct tc_store *st, const char *path, size_t blksize,
		     const unsigned char *data, size_t nblk)
{
	json_t *man = json_pack("{s:s, s:i, s:I, s:I, s:i, s:s, s:[]}", "format", "blkmap-dataset",
				"version", 1, "blksize", (json_int_t)blksize, "size",
				(json_int_t)(nblk * blksize), "generation", 1, "checksum", "xxh128", "blocks");
	json_t *blocks = json_object_get(man, "blocks");
	char key[256], sum[40];

	assert_non_null(man);
	for (size_t b = 0; b < nblk; b++) {
		bm_sum_hex(data + b * blksize, blksize, sum);
		snprintf(key, sizeof(key), "%s/blocks/%s", path, sum);
		assert_true(tc_store_put(st, key, data + b * blksize, blksize) / 100 == 2);
		json_array_append_new(blocks, json_pack("{s:I, s:s, s:s}", "index", (json_int_t)b, "key",
							key + strlen(path) + 1, "sum", sum));
	}
	tc_store_put_manifest(st, path, man);
	snprintf(key, sizeof(key), "%s/gen/1.json", path);
	char *text = tc_manifest_text(man, NULL);
	assert_true(tc_store_put(st, key, text, strlen(text)) / 100 == 2);
	free(text);
	json_decref(man);
}

void tc_assert_one_line_naming(const char *msg, const char *what)
{
	if (strchr(msg, '\n') != NULL || strstr(msg, what) == NULL)
		fail_msg("message \"%s\" is not one line naming \"%s\"", msg, what);
}

long tc_store_put(const struct tc_store *st, const char *path, const void *data, size_t len)
{
	if (st->rgw) {
		struct ts_resp r;
		long status;
		tc_store_request(st, "PUT", path, data, len, &r);
		status = r.status;
		ts_resp_free(&r);
		return status;
	}

	/* A WebDAV server makes no parent collections: MKCOL each (an
	 * existing one answers 405, a server without MKCOL 404 or 405). */
	char coll[1024];
	for (const char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		struct ts_resp r;
		snprintf(coll, sizeof(coll), "%.*s", (int)(p - path + 1), path);
		ts_request(NULL, &st->srv, "MKCOL", coll, NULL, NULL, 0, &r);
		ts_resp_free(&r);
	}
	return ts_put(&st->srv, path, data, len);
}

/* ---- canned responder ------------------------------------------------------------------- */

/* The value of header name in the head at p (NUL-terminated), trimmed,
 * into out; false if absent. */
static bool head_value(const char *p, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);

	for (const char *l = strstr(p, "\r\n"); l && strncmp(l, "\r\n\r\n", 4) != 0; l = strstr(l + 2, "\r\n")) {
		if (strncasecmp(l + 2, name, nl) != 0 || l[2 + nl] != ':')
			continue;
		const char *v = l + 3 + nl, *e = strstr(v, "\r\n");
		while (*v == ' ')
			v++;
		size_t vl = e ? (size_t)(e - v) : strlen(v);
		snprintf(out, n, "%.*s", (int)vl, v);
		return true;
	}
	return false;
}

struct tc_canned_state {
	int fd;                    /* the listening socket */
	struct tc_rule *rules;     /* copies: method, path, response, range */
	size_t nrules;
	void *stack;               /* the thread's own stack (tc_canned_start) */
};

#define CANNED_STACK (1u << 20)

static void answer(struct tc_canned_state *c, int fd)
{
	static const char notfound[] =
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
	char req[8192], method[16], path[1024];
	size_t got = 0;
	const char *resp = notfound;
	size_t len = strlen(notfound);

	while (got < sizeof(req) - 1) {
		ssize_t r = read(fd, req + got, sizeof(req) - 1 - got);
		if (r <= 0)
			return;
		got += (size_t)r;
		req[got] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	if (sscanf(req, "%15s %1023s", method, path) != 2)
		return;
	char range[128];
	if (!head_value(req, "Range", range, sizeof(range)))
		range[0] = '\0';
	for (size_t i = 0; i < c->nrules; i++) {
		if (!strcmp(c->rules[i].method, method) && !strcmp(c->rules[i].path, path) &&
		    (c->rules[i].range == NULL || !strcmp(c->rules[i].range, range))) {
			resp = c->rules[i].response;
			len = c->rules[i].len ? c->rules[i].len : strlen(resp);
			break;
		}
	}
	/* If-Match another ETag than the answer's, or a weak one (which
	 * If-Match never matches): 412, as a real server answers. */
	static const char failed[] =
		"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
	char *want = malloc(8192), *have = malloc(8192);
	char *head = strndup(resp, len);
	if (want && have && head && head_value(req, "If-Match", want, 8192) &&
	    head_value(head, "ETag", have, 8192) && (strncmp(want, "W/", 2) == 0 || strcmp(want, have) != 0)) {
		resp = failed;
		len = strlen(failed);
	}
	free(want);
	free(have);
	free(head);
	/* HEAD: the same head, no body. */
	if (!strcmp(method, "HEAD")) {
		const char *end = strstr(resp, "\r\n\r\n");
		if (end && (size_t)(end + 4 - resp) < len)
			len = (size_t)(end + 4 - resp);
	}
	while (len > 0) {
		ssize_t w = write(fd, resp, len);
		if (w <= 0)
			return;
		resp += w;
		len -= (size_t)w;
	}
}

static void *canned_main(void *arg)
{
	struct tc_canned_state *c = arg;

	for (;;) {
		int fd = accept(c->fd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL; /* the listening socket was shut down */
		}
		answer(c, fd);
		shutdown(fd, SHUT_WR);
		close(fd);
	}
}

void tc_canned_start(struct tc_canned *c, const struct tc_rule *rules, size_t nrules)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);

	signal(SIGPIPE, SIG_IGN);
	struct tc_canned_state *st = calloc(1, sizeof(*st));
	assert_non_null(st);
	st->rules = calloc(nrules ? nrules : 1, sizeof(*st->rules));
	assert_non_null(st->rules);
	st->nrules = nrules;
	for (size_t i = 0; i < nrules; i++) {
		size_t len = rules[i].len ? rules[i].len : strlen(rules[i].response);
		char *resp = malloc(len + 1);
		assert_non_null(resp);
		memcpy(resp, rules[i].response, len);
		resp[len] = '\0';
		st->rules[i].method = strdup(rules[i].method);
		st->rules[i].path = strdup(rules[i].path);
		st->rules[i].response = resp;
		st->rules[i].len = len;
		st->rules[i].range = rules[i].range ? strdup(rules[i].range) : NULL;
		assert_true(st->rules[i].method && st->rules[i].path);
	}
	c->state = st;
	c->fd = st->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(c->fd, 64), 0);
	assert_int_equal(getsockname(c->fd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(c->url, sizeof(c->url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
	/* The thread runs on a stack of its own, which glibc never caches: a
	 * child forked while it runs (tc_child) gets the parent's cached and
	 * in-use stacks for its own threads, so a thread the child starts
	 * (bm_open's) could get this thread's id, and ThreadSanitizer, which
	 * still counts this thread alive in the child, stops the child ("dup
	 * thread with used id"). */
	pthread_attr_t attr;
	st->stack = mmap(NULL, CANNED_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK,
			 -1, 0);
	assert_true(st->stack != MAP_FAILED);
	assert_int_equal(pthread_attr_init(&attr), 0);
	assert_int_equal(pthread_attr_setstack(&attr, st->stack, CANNED_STACK), 0);
	assert_int_equal(pthread_create(&c->thread, &attr, canned_main, st), 0);
	pthread_attr_destroy(&attr);
}

void tc_canned_stop(struct tc_canned *c)
{
	struct tc_canned_state *st = c->state;

	shutdown(c->fd, SHUT_RDWR);
	pthread_join(c->thread, NULL);
	close(c->fd);
	for (size_t i = 0; i < st->nrules; i++) {
		free((char *)st->rules[i].method);
		free((char *)st->rules[i].path);
		free((char *)st->rules[i].response);
		free((char *)st->rules[i].range);
	}
	free(st->rules);
	munmap(st->stack, CANNED_STACK);
	free(st);
	c->state = NULL;
}

static int count_tasks(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/task");
	for (struct dirent *e; d && (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

int tc_nthreads(void)
{
	int n = count_tasks(), m;
	for (int i = 0; usleep(5000), (m = count_tasks()) != n; i++) {
		if (i == 2000)
			fail_msg("the thread count kept changing for 10 s (%d, %d)", n, m);
		n = m;
	}
	return n;
}
