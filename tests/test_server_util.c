/* tests/test_server_util.c — helpers for the blkmap-server tests: the
 * server process (fork/exec, URL from stdout, SIGTERM and exit status),
 * libcurl requests, raw sockets, temporary directories, a program's tests
 * run on the memory store and the disk store. Each test process
 * is single-threaded except where a test starts threads that each use
 * their own curl handle. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "test_server_util.h"

long ts_timeout_ms = 60000;

/* Every wait on the server (a read, its exit) gives up after this long:
 * far above what any step takes on a loaded machine, so that reaching it
 * means a hang, reported as one rather than waited out. */
#define TS_HANG_MS 60000

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until FD is readable (or closed) before DEADLINE: 0, or -1 with a
 * message naming WHAT when the deadline passed. */
static int wait_readable(int fd, int64_t deadline, const char *what)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (;;) {
		int64_t left = deadline - now_ms();
		int r = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (r > 0)
			return 0;
		if (r < 0 && errno == EINTR)
			continue;
		fprintf(stderr, "%s: nothing came from the server within %d s "
			"(a hang)\n", what, TS_HANG_MS / 1000);
		return -1;
	}
}

const char *ts_server_path(void)
{
	static char path[4096];
	const char *dir = getenv("top_builddir");

	snprintf(path, sizeof(path), "%s/blkmap-server", dir ? dir : ".");
	return path;
}

int ts_start(struct ts_server *s, const char *const *args)
{
	const char *argv[64];
	int n = 0, fds[2];
	char line[512];
	FILE *f;

	argv[n++] = ts_server_path();
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	for (; args && *args && n < 62; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	if (pipe(fds) < 0)
		return -1;
	s->pid = fork();
	if (s->pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	s->url[0] = '\0';
	while (f && fgets(line, sizeof(line), f)) {
		char *u = strstr(line, "http://");
		if (u) {
			u[strcspn(u, " \r\n")] = '\0';
			snprintf(s->url, sizeof(s->url), "%s", u);
			break;
		}
	}
	if (f)
		fclose(f);
	return s->url[0] ? 0 : -1;
}

int ts_start_disk(struct ts_server *s, const char *const *args)
{
	const char *argv[64] = { "--root", s->root };
	int n = 2;

	for (; args && *args && n < 62; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	return ts_start(s, argv);
}

int ts_stop(struct ts_server *s)
{
	kill(s->pid, SIGTERM);
	return ts_wait(s);
}

int ts_wait(struct ts_server *s)
{
	int64_t deadline = now_ms() + TS_HANG_MS;
	struct timespec ms5 = { 0, 5 * 1000 * 1000 };
	int status;
	pid_t r;

	while ((r = waitpid(s->pid, &status, WNOHANG)) == 0 &&
	       now_ms() < deadline)
		nanosleep(&ms5, NULL);
	if (r == 0) {
		fprintf(stderr, "blkmap-server (pid %d) still running %d s "
			"after it was asked to stop: killed\n", (int)s->pid,
			TS_HANG_MS / 1000);
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &status, 0);
		return -1;
	}
	if (r < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status)
				 : 128 + WTERMSIG(status);
}

int ts_fixture_memory(void **state, const char *const *args)
{
	struct ts_fixture *f = calloc(1, sizeof(*f));
	const char *argv[64] = { "--memory" };
	int n = 1;

	for (; args && *args && n < 62; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	*state = f;
	return ts_start(&f->srv, argv);
}

int ts_fixture_disk(void **state, const char *const *args)
{
	struct ts_fixture *f = calloc(1, sizeof(*f));

	*state = f;
	f->root = ts_mkdtemp();
	snprintf(f->srv.root, sizeof(f->srv.root), "%s/store", f->root);
	return ts_start_disk(&f->srv, args);
}

int ts_fixture_stop(void **state)
{
	struct ts_fixture *f = *state;
	int rc = ts_stop(&f->srv);

	if (f->root) {
		ts_rmtree(f->root);
		free(f->root);
	}
	free(f);
	return rc == 0 ? 0 : -1;
}

int ts_run_on_both_stores(const struct CMUnitTest *tests, size_t n, int (*memory)(void **),
			  int (*disk)(void **))
{
	int failed;

	curl_global_init(CURL_GLOBAL_ALL);
	failed = _cmocka_run_group_tests("memory store", tests, n, memory, ts_fixture_stop);
	failed += _cmocka_run_group_tests("disk store", tests, n, disk, ts_fixture_stop);
	curl_global_cleanup();
	return failed;
}

struct upload {
	const char *p;
	size_t left;
};

static size_t read_body(char *buf, size_t size, size_t n, void *arg)
{
	struct upload *u = arg;
	size_t len = size * n < u->left ? size * n : u->left;

	memcpy(buf, u->p, len);
	u->p += len;
	u->left -= len;
	return len;
}

static size_t append(char **buf, size_t *len, const char *p, size_t n)
{
	char *b = realloc(*buf, *len + n + 1);

	if (!b)
		return 0;
	memcpy(b + *len, p, n);
	*len += n;
	b[*len] = '\0';
	*buf = b;
	return n;
}

static size_t write_body(char *p, size_t size, size_t n, void *arg)
{
	struct ts_resp *r = arg;
	return append(&r->body, &r->len, p, size * n);
}

static size_t write_header(char *p, size_t size, size_t n, void *arg)
{
	struct ts_resp *r = arg;

	if (size * n >= 5 && !strncmp(p, "HTTP/", 5))
		r->hlen = 0;  /* a new response (after 100 Continue) */
	return append(&r->headers, &r->hlen, p, size * n);
}

CURLcode ts_request(CURL *handle, const struct ts_server *s,
		    const char *method, const char *path,
		    const char *const *headers, const void *body, size_t len,
		    struct ts_resp *r)
{
	CURL *h = handle ? handle : curl_easy_init();
	struct curl_slist *list = NULL;
	struct upload up = { body, len };
	char url[4096];

	memset(r, 0, sizeof(*r));
	if (handle)
		curl_easy_reset(h);
	snprintf(url, sizeof(url), "%s%s", s->url, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ts_timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, write_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(method, "PUT") && body) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, read_body);
		curl_easy_setopt(h, CURLOPT_READDATA, &up);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)len);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	for (; headers && *headers; headers++)
		list = curl_slist_append(list, *headers);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
	r->rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(list);
	if (!handle)
		curl_easy_cleanup(h);
	if (!r->body)
		append(&r->body, &r->len, "", 0);
	if (!r->headers)
		append(&r->headers, &r->hlen, "", 0);
	return r->rc;
}

void ts_resp_free(struct ts_resp *r)
{
	free(r->body);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

const char *ts_header(const struct ts_resp *r, const char *name, char *out,
		      size_t n)
{
	size_t nl = strlen(name);

	for (const char *p = r->headers; p && *p; p = strchr(p, '\n') + 1) {
		if (!strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			size_t len = strcspn(v, "\r\n");
			if (len >= n)
				len = n - 1;
			memcpy(out, v, len);
			out[len] = '\0';
			return out;
		}
		if (!strchr(p, '\n'))
			break;
	}
	return NULL;
}

long ts_put(const struct ts_server *s, const char *path, const void *body,
	    size_t len)
{
	struct ts_resp r;
	long status;

	ts_request(NULL, s, "PUT", path, NULL, body ? body : "", len, &r);
	status = r.rc == CURLE_OK ? r.status : -1;
	ts_resp_free(&r);
	return status;
}

long ts_delete(const struct ts_server *s, const char *path)
{
	struct ts_resp r;
	long status;

	ts_request(NULL, s, "DELETE", path, NULL, NULL, 0, &r);
	status = r.rc == CURLE_OK ? r.status : -1;
	ts_resp_free(&r);
	return status;
}

json_t *ts_get_json(const struct ts_server *s, const char *path)
{
	struct ts_resp r;
	json_t *doc = NULL;

	ts_request(NULL, s, "GET", path, NULL, NULL, 0, &r);
	if (r.rc == CURLE_OK && r.status == 200)
		doc = json_loadb(r.body, r.len, 0, NULL);
	ts_resp_free(&r);
	return doc;
}

long ts_set_faults(const struct ts_server *s, const char *json)
{
	return ts_put(s, "/_admin/faults", json, strlen(json));
}

int ts_connect(const struct ts_server *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int port = atoi(strrchr(s->url, ':') + 1);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_port = htons(port);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

char *ts_read_all(int fd, size_t *n)
{
	int64_t deadline = now_ms() + TS_HANG_MS;
	char *buf = NULL, tmp[65536];
	ssize_t r;

	*n = 0;
	append(&buf, n, "", 0);
	for (;;) {
		if (wait_readable(fd, deadline, "reading until the close") < 0) {
			free(buf);
			*n = 0;
			return NULL;
		}
		r = read(fd, tmp, sizeof(tmp));
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;  /* reset counts as closed */
		append(&buf, n, tmp, r);
	}
	return buf;
}

char *ts_ask(const struct ts_server *s, const void *req, size_t n)
{
	size_t got;
	int fd = ts_connect(s);
	char *a = NULL;

	if (fd < 0)
		return NULL;
	if (write(fd, req, n) == (ssize_t)n)
		a = ts_read_all(fd, &got);
	close(fd);
	return a;
}

char *ts_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char *path = malloc(4096);

	snprintf(path, 4096, "%s/blkmap-server-test.XXXXXX",
		 base ? base : "/tmp");
	if (!mkdtemp(path)) {
		free(path);
		return NULL;
	}
	return path;
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	return remove(path);
}

void ts_rmtree(const char *path)
{
	nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

unsigned char *ts_pattern(size_t n, unsigned seed)
{
	unsigned char *p = malloc(n ? n : 1);
	uint32_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		p[i] = (unsigned char)(x >> 24);
	}
	return p;
}

char *ts_read_response(int fd)
{
	int64_t deadline = now_ms() + TS_HANG_MS;
	char *buf = NULL, *end, *cl;
	size_t n = 0, want = 0;
	char c;

	append(&buf, &n, "", 0);
	for (;;) {
		end = strstr(buf, "\r\n\r\n");
		if (end && !want) {
			cl = strcasestr(buf, "\r\nContent-Length:");
			want = (end - buf) + 4 +
			       (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
		}
		if (want && n >= want)
			return buf;
		if (wait_readable(fd, deadline, "reading a response") < 0) {
			free(buf);
			return NULL;
		}
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(buf);
			return NULL;
		}
		append(&buf, &n, &c, 1);
	}
}
