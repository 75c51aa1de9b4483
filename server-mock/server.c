/* server-mock/server.c — blkmap-server's process: the listening socket,
 * the worker threads (one event base each, all accepting on the same
 * socket), signals, and the order of shutdown (stop accepting, let
 * requests in flight finish, free everything, exit 0).
 * Signals: SIGINT and SIGTERM are blocked in every thread and read from a
 * signalfd by the main thread's event base; the first one unblocks them
 * in the main thread, so that a second one kills.
 * Locking: a worker's fields belong to its thread; the main thread only
 * activates stop_ev, which libevent makes safe across threads. */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/thread.h>

#include "srv.h"

struct srv_worker {
	struct srv_server *srv;
	pthread_t thread;
	struct event_base *base;
	struct event *accept_ev, *resume_ev, *stop_ev;
	struct srv_conn *conns;
	int stopping;
};

struct srv_conn **srv_worker_conn_list(struct srv_worker *w)
{
	return &w->conns;
}

int srv_worker_stopping(struct srv_worker *w)
{
	return w->stopping;
}

void srv_worker_conn_gone(struct srv_worker *w)
{
	if (w->stopping && !w->conns)
		event_base_loopexit(w->base, NULL);
}

static void accept_ready(evutil_socket_t fd, short what, void *arg)
{
	struct srv_worker *w = arg;

	for (int i = 0; i < 16 && !w->stopping; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			srv_conn_accept(w, w->srv, w->base, cfd);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
			/* out of descriptors: pause rather than spin */
			struct timeval tv = { 0, 100 * 1000 };
			fprintf(stderr, "blkmap-server: accept: %s; pausing\n",
				strerror(errno));
			event_del(w->accept_ev);
			evtimer_add(w->resume_ev, &tv);
		}
		break;
	}
}

static void resume_accept(evutil_socket_t fd, short what, void *arg)
{
	struct srv_worker *w = arg;

	if (!w->stopping)
		event_add(w->accept_ev, NULL);
}

static void stop_worker(evutil_socket_t fd, short what, void *arg)
{
	struct srv_worker *w = arg;

	w->stopping = 1;
	event_del(w->accept_ev);
	event_del(w->resume_ev);
	srv_worker_conns_stop(w);
	srv_worker_conn_gone(w);
}

static void *run_worker(void *arg)
{
	struct srv_worker *w = arg;

	event_base_dispatch(w->base);
	return NULL;
}

static int start_worker(struct srv_server *srv, struct srv_worker *w)
{
	struct event_config *ec = event_config_new();

	w->srv = srv;
	/* Precise timers (timerfd): the latency fault's delay is N ms, not
	 * N ms rounded up to epoll's milliseconds plus the loop's lag. */
	if (ec)
		event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	w->base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	if (!w->base)
		return -1;
	w->accept_ev = event_new(w->base, srv->listen_fd, EV_READ | EV_PERSIST,
				 accept_ready, w);
	w->resume_ev = evtimer_new(w->base, resume_accept, w);
	w->stop_ev = event_new(w->base, -1, 0, stop_worker, w);
	if (!w->accept_ev || !w->resume_ev || !w->stop_ev ||
	    event_add(w->accept_ev, NULL) < 0)
		return -1;
	/* The worker inherits the main thread's mask: SIGINT and SIGTERM
	 * blocked (serve). */
	return pthread_create(&w->thread, NULL, run_worker, w) ? -1 : 0;
}

static void free_worker(struct srv_worker *w)
{
	if (w->accept_ev)
		event_free(w->accept_ev);
	if (w->resume_ev)
		event_free(w->resume_ev);
	if (w->stop_ev)
		event_free(w->stop_ev);
	if (w->base)
		event_base_free(w->base);
}

/* Split "HOST:PORT" ("[v6]:PORT" too) into HOST and PORT. */
static int split_listen(const char *spec, char *host, size_t hn, char *port,
			size_t pn)
{
	const char *colon = strrchr(spec, ':');
	size_t len;

	if (!colon || !colon[1] || strlen(colon + 1) >= pn)
		return -1;
	len = colon - spec;
	if (len >= 2 && spec[0] == '[' && spec[len - 1] == ']') {
		spec++;
		len -= 2;
	}
	if (len == 0 || len >= hn)
		return -1;
	memcpy(host, spec, len);
	host[len] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static int open_listener(struct srv_server *srv, char *url, size_t n)
{
	char host[256], port[16], h[NI_MAXHOST], p[NI_MAXSERV];
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd, one = 1, r;

	if (split_listen(srv->cfg.listen, host, sizeof(host), port,
			 sizeof(port)) < 0) {
		fprintf(stderr, "blkmap-server: --listen '%s': expected "
			"HOST:PORT, e.g. 127.0.0.1:0\n", srv->cfg.listen);
		return -1;
	}
	r = getaddrinfo(host, port, &hints, &ai);
	if (r) {
		fprintf(stderr, "blkmap-server: --listen '%s': %s\n",
			srv->cfg.listen, gai_strerror(r));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
			NI_NUMERICHOST | NI_NUMERICSERV)) {
		fprintf(stderr, "blkmap-server: cannot listen on %s: %s\n",
			srv->cfg.listen, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	snprintf(url, n, strchr(h, ':') ? "http://[%s]:%s" : "http://%s:%s",
		 h, p);
	srv->listen_fd = fd;
	return 0;
}

/* SIGINT and SIGTERM are read from a signalfd, with both blocked in every
 * thread, rather than caught by a handler (libevent's evsignal): no
 * handler runs in any thread, so nothing can defer or lose one.  Under
 * ThreadSanitizer, which defers a signal that arrives outside a blocking
 * call to the thread's next interceptor, a SIGTERM sent right after the
 * "serving" line was now and then never handed to libevent's handler: the
 * server went on waiting in epoll_wait with the signal taken (about 1 in
 * 140 start-and-stop runs at load 14; seen as 60 s stop hangs in the tsan
 * suite). */
struct signal_ctx {
	struct srv_server *srv;
	struct event_base *base;
	struct event *ev;
	int fd;            /* the signalfd */
	sigset_t stop;     /* SIGINT, SIGTERM */
	sigset_t old;      /* the main thread's mask before serve */
};

/* First SIGINT/SIGTERM: stop gracefully.  The main thread's mask goes back
 * to what it was, so a second one takes its default action and kills at
 * once. */
static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	struct signal_ctx *s = arg;
	struct signalfd_siginfo si;

	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return; /* taken by nothing else: cannot happen; wait on */
	event_del(s->ev);
	pthread_sigmask(SIG_SETMASK, &s->old, NULL);
	for (unsigned i = 0; i < s->srv->cfg.threads; i++)
		event_active(s->srv->workers[i].stop_ev, EV_READ, 0);
	event_base_loopbreak(s->base);
}

static int open_store(struct srv_server *srv)
{
	char err[512] = "out of memory";

	srv->store = srv->cfg.memory ? srv_store_open_memory() :
		     srv_store_open_disk(srv->cfg.root, err, sizeof(err));
	if (!srv->store)
		fprintf(stderr, "blkmap-server: --root: %s\n", err);
	return srv->store ? 0 : -1;
}

/* Serve until SIGINT/SIGTERM with the workers started; then stop them. */
static int serve(struct srv_server *srv, const char *url)
{
	struct signal_ctx s = { .srv = srv, .fd = -1 };
	unsigned started = 0;
	int rc = 0;

	sigemptyset(&s.stop);
	sigaddset(&s.stop, SIGINT);
	sigaddset(&s.stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &s.stop, &s.old);
	s.fd = signalfd(-1, &s.stop, SFD_NONBLOCK | SFD_CLOEXEC);
	s.base = s.fd >= 0 ? event_base_new() : NULL;
	s.ev = s.base ? event_new(s.base, s.fd, EV_READ | EV_PERSIST, on_signal, &s) : NULL;
	if (!s.ev || event_add(s.ev, NULL) < 0)
		rc = -1;
	while (rc == 0 && started < srv->cfg.threads)
		if (start_worker(srv, &srv->workers[started++]) < 0)
			rc = -1;
	if (rc == 0) {
		printf("blkmap-server: serving %s\n", url);
		fflush(stdout);
		event_base_dispatch(s.base);
	} else {
		fprintf(stderr, "blkmap-server: cannot start: out of memory "
			"or threads\n");
		for (unsigned i = 0; i < started; i++)
			if (srv->workers[i].stop_ev)
				event_active(srv->workers[i].stop_ev, EV_READ,
					     0);
	}
	for (unsigned i = 0; i < started; i++)
		if (srv->workers[i].thread)
			pthread_join(srv->workers[i].thread, NULL);
	if (s.ev)
		event_free(s.ev);
	if (s.base)
		event_base_free(s.base);
	if (s.fd >= 0)
		close(s.fd);
	pthread_sigmask(SIG_SETMASK, &s.old, NULL);
	return rc;
}

int srv_server_run(const struct srv_config *cfg)
{
	struct srv_server srv = { .cfg = *cfg, .listen_fd = -1 };
	char url[300];
	int rc = 1;

	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() < 0) {
		fprintf(stderr, "blkmap-server: libevent has no pthreads\n");
		return 1;
	}
	srv_stats_init(&srv.stats);
	srv_faults_init(&srv.faults, cfg);
	srv.workers = calloc(cfg->threads, sizeof(*srv.workers));
	if (srv.workers && open_store(&srv) == 0 &&
	    open_listener(&srv, url, sizeof(url)) == 0)
		rc = serve(&srv, url) == 0 ? 0 : 1;
	for (unsigned i = 0; srv.workers && i < cfg->threads; i++)
		free_worker(&srv.workers[i]);
	free(srv.workers);
	if (srv.listen_fd >= 0)
		close(srv.listen_fd);
	if (srv.store)
		srv_store_close(srv.store);
	srv_faults_destroy(&srv.faults);
	srv_stats_destroy(&srv.stats);
	libevent_global_shutdown();
	return rc;
}
