/* http_sock.c — the sockets of libblkmap's connections: made close-on-exec,
 * and parked for the next handle when a handle closes (the process's park
 * of idle connections).
 *
 * Owns: the park (park[], npark) and the stand-ins being adopted
 * (adopting[]); curl's socket callbacks of every connection template
 * (bm_http_sock_options: open, option, pre-request and close).
 * Locking: park_mu guards both lists (a leaf: nothing else is taken under
 * it); it is taken around fork, and a child closes its parent's parked
 * sockets.
 */
#include "config.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "internal.h"
#include "http_pool.h"

/* An open makes two connections (its manifest's GET and the probe beside
 * it) and a close closes what its handle kept: on loopback the TCP
 * handshakes and closes were most of an open's cost (docs/client.md).  A
 * socket at a clean point between answers is parked here instead of
 * closed: one curl kept idle when its pool is freed (bm_http_free) or its
 * place is taken (http_many.c), or a lone request's once its answer came
 * whole (HTTP/1.1, keep-alive, all of its Content-Length read).  The next
 * connection curl makes to the same address, from any handle of the
 * process, takes it instead of connecting.  At most PARK_MAX (the oldest
 * is closed to make room), each for PARK_TTL_NS; never a socket the peer
 * has closed or sent anything on since (polled when taken), never for a
 * pool that asked an https URL (a TLS session is not handed on), never in
 * a child after fork (its copies are closed there).  Parked sockets are
 * close-on-exec, as every socket the library makes.
 * Locking: park_mu guards the park; taken around fork. */
#define PARK_MAX 4
#define PARK_TTL_NS (2 * 1000000000ull)

struct parked {
	int fd;
	uint64_t at;
	struct sockaddr_storage a;
};

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static struct parked park[PARK_MAX];
static int npark;
static pthread_once_t park_once = PTHREAD_ONCE_INIT;

static void park_prepare(void) { pthread_mutex_lock(&park_mu); }
static void park_parent(void) { pthread_mutex_unlock(&park_mu); }

static struct adoption {
	struct bm_conn *c;
	int dummy, fd;
} adopting[PARK_MAX];
static int nadopting;

static void park_child(void)
{
	while (npark > 0)
		close(park[--npark].fd); /* the parent's connections */
	while (nadopting > 0)
		close(adopting[--nadopting].fd);
	pthread_mutex_unlock(&park_mu);
}

static void park_setup(void) { pthread_atfork(park_prepare, park_parent, park_child); }

static bool same_peer(const struct sockaddr *x, const struct sockaddr_storage *y)
{
	if (x->sa_family != y->ss_family)
		return false;
	if (x->sa_family == AF_INET) {
		const struct sockaddr_in *p = (const void *)x, *q = (const void *)y;
		return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *p = (const void *)x, *q = (const void *)y;
	return p->sin6_port == q->sin6_port && p->sin6_scope_id == q->sin6_scope_id &&
	       memcmp(&p->sin6_addr, &q->sin6_addr, sizeof(p->sin6_addr)) == 0;
}

/* Parks fd (a TCP socket at a clean point): false when it cannot be (the
 * caller closes it). */
static bool park_put(int fd)
{
	struct parked p = { .fd = fd };
	socklen_t alen = sizeof(p.a);
	int old = -1;

	if (getpeername(fd, (struct sockaddr *)&p.a, &alen) != 0 ||
	    (p.a.ss_family != AF_INET && p.a.ss_family != AF_INET6))
		return false;
	pthread_once(&park_once, park_setup);
	p.at = bm_http_mono_ns();
	pthread_mutex_lock(&park_mu);
	if (npark == PARK_MAX) {
		old = park[0].fd;
		memmove(park, park + 1, (PARK_MAX - 1) * sizeof(*park));
		npark--;
	}
	park[npark++] = p;
	pthread_mutex_unlock(&park_mu);
	if (old >= 0)
		close(old);
	return true;
}

/* A parked socket connected to a (the newest), or -1.  Those past their
 * time, and one the peer closed or wrote on, are closed on the way. */
static int park_take(const struct sockaddr *a)
{
	for (;;) {
		int fd = -1, stale[PARK_MAX], nstale = 0;
		uint64_t now = bm_http_mono_ns();

		pthread_mutex_lock(&park_mu);
		for (int i = npark - 1; i >= 0; i--) {
			bool old = now - park[i].at > PARK_TTL_NS;
			if (!old && (fd >= 0 || !same_peer(a, &park[i].a)))
				continue;
			if (old)
				stale[nstale++] = park[i].fd;
			else
				fd = park[i].fd;
			memmove(park + i, park + i + 1, (size_t)(npark - i - 1) * sizeof(*park));
			npark--;
		}
		pthread_mutex_unlock(&park_mu);
		while (nstale > 0)
			close(stale[--nstale]);
		if (fd < 0)
			return -1;
		struct pollfd pf = { .fd = fd, .events = POLLIN | POLLRDHUP };
		if (poll(&pf, 1, 0) == 0)
			return fd; /* nothing came: still open, between answers */
		close(fd);
	}
}

/* A parked socket handed to curl.  libcurl 7.88 connects whatever socket
 * its open callback gives (CURL_SOCKOPT_ALREADY_CONNECTED is not honoured
 * there: curl issue 10626), and connect(2) on a connected TCP socket
 * fails.  So open_socket gives curl a UDP socket instead, whose connect
 * to the same address succeeds at once with no packet sent, and the
 * parked connection takes its place (dup3, same descriptor number) in
 * prereq, which curl calls once connected and before it sends anything.
 * Locking: park_mu guards the list (adopting, above). */
/* Under park_mu: takes dummy out of the list; its parked socket, or -1. */
static int adoption_end(int dummy)
{
	for (int i = 0; i < nadopting; i++) {
		if (adopting[i].dummy != dummy)
			continue;
		int fd = adopting[i].fd;
		adopting[i] = adopting[--nadopting];
		return fd;
	}
	return -1;
}

/* curl's sockets for a connection (arg: its bm_conn), made close-on-exec
 * like every other descriptor of the library: a program the process
 * starts (system, popen, fork and exec) gets none of its connections,
 * which would otherwise stay open at the server for as long as that
 * program runs.  (libcurl 7.88 makes each multi handle's wakeup pair
 * without it; no option reaches those.)  A parked one to the same address
 * is taken first (above). */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct bm_conn *c = arg;

	if (purpose == CURLSOCKTYPE_IPCXN && c != NULL && a->socktype == SOCK_STREAM &&
	    (a->family == AF_INET || a->family == AF_INET6) && !atomic_load(&c->h->tls)) {
		int fd = park_take(&a->addr);
		if (fd >= 0) {
			int dummy = socket(a->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
			pthread_mutex_lock(&park_mu);
			if (dummy >= 0 && nadopting < PARK_MAX) {
				adopting[nadopting++] = (struct adoption){ c, dummy, fd };
				fd = -1;
			}
			pthread_mutex_unlock(&park_mu);
			if (fd < 0)
				return dummy;
			close(fd);
			if (dummy >= 0)
				close(dummy);
		}
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* curl connected c's transfer: a parked socket takes its stand-in's
 * place (every one of c's pending: they are all curl's, connected). */
static int prereq(void *arg, char *ip, char *local_ip, int port, int local_port)
{
	struct bm_conn *c = arg;

	(void)ip, (void)local_ip, (void)port, (void)local_port;
	pthread_mutex_lock(&park_mu);
	for (int i = 0; i < nadopting;) {
		if (adopting[i].c != c) {
			i++;
			continue;
		}
		int dummy = adopting[i].dummy, fd = adoption_end(dummy);
		if (dup3(fd, dummy, O_CLOEXEC) < 0) {
			/* The stand-in stays: its first send fails, and the
			 * request is tried again on a new connection. */
		}
		close(fd);
	}
	pthread_mutex_unlock(&park_mu);
	return CURL_PREREQFUNC_OK;
}

/* The socket a lone request connected (arg: its bm_req, or NULL). */
static int sock_opt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
	struct bm_req *r = arg;

	(void)purpose;
	if (r != NULL)
		r->fd = fd;
	return CURL_SOCKOPT_OK;
}

/* Whether fd is the socket of a lone request of c's running round whose
 * answer came whole: nothing of it is left to read. */
static bool lone_answered(struct bm_conn *c, int fd)
{
	for (int i = 0; i < c->njobs; i++) {
		struct bm_req *r = c->jobs[i].r;
		if (!r->close || r->fd != fd)
			continue;
		r->fd = -1;
		return r->keepalive && strcmp(r->method, "GET") == 0 && r->head_status >= 200 &&
		       r->content_length != UINT64_MAX && r->body_seen == r->content_length && !r->overflow &&
		       r->write_err == 0 && r->long_header == NULL;
	}
	return false;
}

/* curl closes a socket of c's: parked when at a clean point. */
static int close_socket(void *arg, curl_socket_t fd)
{
	struct bm_conn *c = arg;

	pthread_mutex_lock(&park_mu);
	int parked = adoption_end(fd);
	pthread_mutex_unlock(&park_mu);
	if (parked >= 0) {
		/* A stand-in never used: the parked one goes back. */
		if (!park_put(parked))
			close(parked);
		return close(fd);
	}

	if (c != NULL && !atomic_load(&c->h->tls) && (c->parking || lone_answered(c, fd)) && park_put(fd))
		return 0;
	return close(fd);
}

/* c's template gets the socket callbacks: every socket close-on-exec, a
 * parked one taken when curl connects to its address, and a socket at a
 * clean point parked when curl closes it. */
void bm_http_sock_options(struct bm_conn *c)
{
	curl_easy_setopt(c->tpl, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(c->tpl, CURLOPT_OPENSOCKETDATA, c);
	curl_easy_setopt(c->tpl, CURLOPT_SOCKOPTFUNCTION, sock_opt);
	curl_easy_setopt(c->tpl, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
	curl_easy_setopt(c->tpl, CURLOPT_CLOSESOCKETDATA, c);
	curl_easy_setopt(c->tpl, CURLOPT_PREREQFUNCTION, prereq);
	curl_easy_setopt(c->tpl, CURLOPT_PREREQDATA, c);
}
