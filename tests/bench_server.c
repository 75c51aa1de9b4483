/* tests/bench_server.c — `make bench`: GET throughput of blkmap-server
 * against nginx in the same run: 16 parallel keep-alive clients download
 * 8 MiB objects, the same files on the same disk (nginx's root is the
 * server's DIR/objects). Rounds alternate between the two; the medians are
 * printed as "server get_mb_s=<ours> nginx_mb_s=<theirs> ratio=<x>".
 * Skips (exit 0) when nginx is not installed. Asserts no time. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "test_server_util.h"

#define NGINX "/usr/sbin/nginx"
#define CLIENTS 16
#define OBJECTS 16
#define OBJECT_SIZE (8u << 20)
#define GETS_PER_CLIENT 6
#define ROUNDS 5

struct client {
	const char *base;
	int id;
	pthread_barrier_t *start;
	size_t bytes;
	int failed;
};

static size_t count_bytes(char *p, size_t size, size_t n, void *arg)
{
	*(size_t *)arg += size * n;
	return size * n;
}

static void *download(void *arg)
{
	struct client *c = arg;
	CURL *h = curl_easy_init();
	char url[512];

	pthread_barrier_wait(c->start);
	for (int i = 0; i < GETS_PER_CLIENT; i++) {
		size_t got = 0;
		long status = 0;
		snprintf(url, sizeof(url), "%s/bench/obj-%02d", c->base,
			 (c->id + i * 5) % OBJECTS);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, count_bytes);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
		if (curl_easy_perform(h) != CURLE_OK)
			c->failed = 1;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (status != 200 || got != OBJECT_SIZE)
			c->failed = 1;
		c->bytes += got;
	}
	curl_easy_cleanup(h);
	return NULL;
}

/* One round against BASE: MB/s (10^6 bytes) over all clients. */
static double measure(const char *base)
{
	struct client c[CLIENTS];
	pthread_t t[CLIENTS];
	pthread_barrier_t start;
	size_t bytes = 0;
	double t0;

	pthread_barrier_init(&start, NULL, CLIENTS + 1);
	for (int i = 0; i < CLIENTS; i++) {
		c[i] = (struct client){ base, i, &start, 0, 0 };
		pthread_create(&t[i], NULL, download, &c[i]);
	}
	pthread_barrier_wait(&start);
	t0 = bench_now();
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(t[i], NULL);
	double secs = bench_now() - t0;
	pthread_barrier_destroy(&start);
	for (int i = 0; i < CLIENTS; i++) {
		if (c[i].failed) {
			fprintf(stderr, "bench_server: a download from %s "
				"failed\n", base);
			exit(1);
		}
		bytes += c[i].bytes;
	}
	return bytes / 1e6 / secs;
}

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(fd, (struct sockaddr *)&sa, &len);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static pid_t start_nginx(const char *dir, const char *objects, int port)
{
	char conf[600], globals[600], errlog[600];
	struct ts_server probe;
	FILE *f;
	pid_t pid;

	snprintf(conf, sizeof(conf), "%s/nginx.conf", dir);
	snprintf(errlog, sizeof(errlog), "%s/nginx-error.log", dir);
	f = fopen(conf, "w");
	if (!f)
		return -1;
	fprintf(f,
		"user root;\n"
		"worker_processes 2;\n"
		"error_log %s;\n"
		"events { worker_connections 1024; }\n"
		"http {\n"
		"  access_log off;\n"
		"  sendfile on;\n"
		"  tcp_nopush on;\n"
		"  keepalive_requests 100000;\n"
		"  default_type application/octet-stream;\n"
		"  client_body_temp_path %s/body;\n"
		"  proxy_temp_path %s/proxy;\n"
		"  fastcgi_temp_path %s/fastcgi;\n"
		"  uwsgi_temp_path %s/uwsgi;\n"
		"  scgi_temp_path %s/scgi;\n"
		"  server {\n"
		"    listen 127.0.0.1:%d;\n"
		"    root %s;\n"
		"  }\n"
		"}\n", errlog, dir, dir, dir, dir, dir, port, objects);
	fclose(f);
	snprintf(globals, sizeof(globals), "daemon off; pid %s/nginx.pid;",
		 dir);
	pid = fork();
	if (pid == 0) {
		execl(NGINX, NGINX, "-p", dir, "-e", errlog, "-c", conf, "-g",
		      globals, (char *)NULL);
		_exit(127);
	}
	snprintf(probe.url, sizeof(probe.url), "http://127.0.0.1:%d", port);
	for (int i = 0; i < 500; i++) {  /* until it accepts */
		int fd = ts_connect(&probe);
		if (fd >= 0) {
			close(fd);
			return pid;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid)
			break;
		usleep(10000);
	}
	fprintf(stderr, "bench_server: nginx did not start; see %s\n", errlog);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return -1;
}

int main(void)
{
	char *dir, objects[600], nginx_url[64];
	double ours[ROUNDS], theirs[ROUNDS];
	unsigned char *data;
	struct ts_server s;
	pid_t nginx;
	int rc = 1;

	if (access(NGINX, X_OK) != 0) {
		printf("bench_server: skipped: nginx is not installed (%s; "
		       "apt-get install nginx-light)\n", NGINX);
		return 0;
	}
	curl_global_init(CURL_GLOBAL_ALL);
	dir = ts_mkdtemp();
	snprintf(s.root, sizeof(s.root), "%s/store", dir);
	snprintf(objects, sizeof(objects), "%s/store/objects", dir);
	if (ts_start_disk(&s, NULL) < 0) {
		fprintf(stderr, "bench_server: cannot start %s\n",
			ts_server_path());
		return 1;
	}
	data = ts_pattern(OBJECT_SIZE, 1);
	for (int i = 0; i < OBJECTS; i++) {
		char key[64];
		data[0] = (unsigned char)i;
		snprintf(key, sizeof(key), "/bench/obj-%02d", i);
		if (ts_put(&s, key, data, OBJECT_SIZE) / 100 != 2) {
			fprintf(stderr, "bench_server: PUT %s failed\n", key);
			goto out;
		}
	}
	int port = free_port();
	snprintf(nginx_url, sizeof(nginx_url), "http://127.0.0.1:%d", port);
	nginx = start_nginx(dir, objects, port);
	if (nginx < 0)
		goto out;
	printf("bench_server: %d clients x %d GETs of %u MiB objects; "
	       "blkmap-server %s vs nginx %s\n", CLIENTS, GETS_PER_CLIENT,
	       OBJECT_SIZE >> 20, s.url, nginx_url);
	measure(s.url);  /* warm up: page cache, connections */
	measure(nginx_url);
	for (int r = 0; r < ROUNDS; r++) {
		ours[r] = measure(s.url);
		theirs[r] = measure(nginx_url);
		printf("  round %d: server %.0f MB/s, nginx %.0f MB/s\n", r + 1,
		       ours[r], theirs[r]);
	}
	double a = bench_median(ours, ROUNDS), b = bench_median(theirs, ROUNDS);
	printf("server get_mb_s=%.0f nginx_mb_s=%.0f ratio=%.2f\n", a, b, a / b);
	kill(nginx, SIGTERM);
	waitpid(nginx, NULL, 0);
	rc = 0;
out:
	if (ts_stop(&s) != 0)
		rc = 1;
	ts_rmtree(dir);
	free(dir);
	free(data);
	curl_global_cleanup();
	return rc;
}
