/* tests/fuzz/fuzz_server.c — libFuzzer target for blkmap-server's request
 * handling: the input is the byte stream a client sends on one connection
 * (pipelined heads and bodies, then end of stream), fed through the
 * server's own connection code (server-mock/conn.c, handler.c) over a
 * socketpair, with a fresh memory store and /_admin/ on.  Time passes only
 * when the server waits for it: pending timers (idle, request, linger,
 * latency) are fired at once, so that every path runs at full speed.
 * Properties: the connection always ends; what the server sends starts as
 * an HTTP/1.1 status line.  This file plays the worker (server.c is not
 * linked).  Locking: none (one thread, one event base). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "../../server-mock/srv.h"
#include "fuzz.h"

#define MAX_PASSES 100000

/* The worker of the one connection (server.c's is not linked). */
struct srv_worker {
	struct srv_conn *conns;
};

struct srv_conn **srv_worker_conn_list(struct srv_worker *w)
{
	return &w->conns;
}

int srv_worker_stopping(struct srv_worker *w)
{
	return 0;
}

void srv_worker_conn_gone(struct srv_worker *w)
{
}

struct timers {
	struct event *ev[64];
	int n;
};

static int collect_timer(const struct event_base *base, const struct event *ev, void *arg)
{
	struct timers *t = arg;

	if (t->n < 64 && event_pending(ev, EV_TIMEOUT, NULL))
		t->ev[t->n++] = (struct event *)ev;
	return 0;
}

/* Let time pass: every pending timer fires now. */
static void fire_timers(struct event_base *base)
{
	struct timers t = { .n = 0 };

	event_base_foreach_event(base, collect_timer, &t);
	for (int i = 0; i < t.n; i++)
		event_active(t.ev[i], EV_TIMEOUT, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct event_base *base;
	struct srv_server srv = { .cfg = {
		.memory = 1,
		.admin = 1,
		.threads = 1,
		.max_connections = 4,
		.max_header_bytes = 8192,
		.max_body_bytes = 1 << 20,
		.idle_timeout_ms = 30000,
		.request_timeout_ms = 60000,
	} };
	struct srv_worker w = { NULL };
	static const char status_line[] = "HTTP/1.1 ";
	char first[sizeof(status_line) - 1], buf[65536];
	size_t sent = 0, got = 0;
	int fds[2], idle = 0;

	if (base == NULL && (base = event_base_new()) == NULL)
		fuzz_fail("event_base_new failed");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
		fuzz_fail("socketpair: %s", strerror(errno));
	srv.store = srv_store_open_memory();
	if (srv.store == NULL)
		fuzz_fail("srv_store_open_memory failed");
	srv_faults_init(&srv.faults, &srv.cfg);
	srv_stats_init(&srv.stats);
	srv_conn_accept(&w, &srv, base, fds[0]);
	if (size == 0)
		shutdown(fds[1], SHUT_WR);
	for (int pass = 0; w.conns != NULL; pass++) {
		int progress = 0;
		ssize_t n;

		if (pass == MAX_PASSES)
			fuzz_fail("the connection is still open after %d passes", MAX_PASSES);
		if (sent < size) {
			n = write(fds[1], data + sent, size - sent);
			if (n > 0) {
				sent += (size_t)n;
				progress = 1;
				if (sent == size)
					shutdown(fds[1], SHUT_WR);
			} else if (n < 0 && errno != EAGAIN) {
				sent = size;  /* the server closed: the rest is not read */
			}
		}
		while ((n = read(fds[1], buf, sizeof(buf))) > 0) {
			if (got < sizeof(first))
				memcpy(first + got, buf,
				       (size_t)n < sizeof(first) - got ? (size_t)n : sizeof(first) - got);
			got += (size_t)n;
			progress = 1;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (progress)
			idle = 0;
		else if (++idle >= 3) {
			fire_timers(base);
			idle = 0;
		}
	}
	/* A drop fault may cut even the status line, never change it. */
	size_t cmp = got < sizeof(first) ? got : sizeof(first);
	if (memcmp(first, status_line, cmp) != 0)
		fuzz_fail("the server's answer does not start with '%s': '%.*s'", status_line,
			  (int)cmp, first);
	close(fds[1]);
	srv_store_close(srv.store);
	srv_faults_destroy(&srv.faults);
	srv_stats_destroy(&srv.stats);
	return 0;
}
