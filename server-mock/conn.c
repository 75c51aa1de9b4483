/* server-mock/conn.c — one HTTP/1.1 connection of blkmap-server on a
 * libevent bufferevent. Owns the request head buffer (bounded by
 * --max-header-bytes), the body stream into its sink, the idle / request /
 * linger timers, the latency delay, and the writing of each response
 * (object bodies leave by sendfile). States: HEAD -> BODY -> (WAIT) ->
 * RESPOND -> HEAD again on keep-alive, or LINGER -> closed.
 * Locking: a connection lives on one worker's event base and no other
 * thread touches it; shared state is reached through srv_* calls. */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>

#include "srv.h"

#define LINGER_MS 2000
#define READ_CHUNK (256 * 1024)
#define WRITE_CHUNK (16 * 1024 * 1024)

enum conn_state {
	CONN_HEAD,     /* waiting for or reading a request head */
	CONN_BODY,     /* streaming the request body into its sink */
	CONN_WAIT,     /* latency fault: the request waits before running */
	CONN_RESPOND,  /* response queued; waiting for it to drain */
	CONN_LINGER,   /* last response sent, write side shut; reading out */
};

enum timer_mode { TIMER_OFF, TIMER_IDLE, TIMER_REQUEST, TIMER_LINGER };

struct srv_conn {
	struct srv_server *srv;
	struct srv_worker *worker;
	struct srv_conn *prev, *next;
	struct bufferevent *bev;
	enum conn_state state;
	enum timer_mode timer_mode;
	struct event *timer, *delay;
	int over_limit;      /* past --max-connections: answer 503 */
	int keep_alive, expect_continue;
	int closing;         /* close after this response */
	int cut;             /* drop fault: close as soon as it drained */
	int in_flight, peer_eof;
	int out_counted;     /* bytes leaving now count in stats bytes_out */
	uint64_t body_left;
	char *head;          /* the raw request head, parsed in place */
	char *key;           /* storage for rq.key */
	char *lists[4];      /* joined repeated list headers (malloc'd) */
	unsigned nlists;
	struct evbuffer *scratch;
	struct srv_request rq;
	struct srv_response rs;
};

static void conn_read_head(struct srv_conn *c);
static void conn_send_response(struct srv_conn *c);
static void count_sent(struct evbuffer *buf,
		       const struct evbuffer_cb_info *info, void *arg);

/* ---- bookkeeping ---- */

static void set_timer(struct srv_conn *c, enum timer_mode mode, unsigned ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	c->timer_mode = mode;
	if (mode == TIMER_OFF)
		evtimer_del(c->timer);
	else
		evtimer_add(c->timer, &tv);
}

static void end_in_flight(struct srv_conn *c)
{
	if (c->in_flight)
		srv_stats_add(&c->srv->stats, &c->srv->stats.in_flight, -1);
	c->in_flight = 0;
}

static void reset_request(struct srv_conn *c)
{
	if (c->rq.upload)
		c->srv->store->ops->upload_abort(c->rq.upload);
	if (c->rq.small_body)
		evbuffer_free(c->rq.small_body);
	memset(&c->rq, 0, sizeof(c->rq));
	for (unsigned i = 0; i < c->nlists; i++)
		free(c->lists[i]);
	c->nlists = 0;
	c->rq.key = c->key;
	c->key[0] = '\0';
	evbuffer_drain(c->rs.headers, evbuffer_get_length(c->rs.headers));
	evbuffer_drain(c->rs.body, evbuffer_get_length(c->rs.body));
	c->rs.status = 0;
	c->rs.content_length = -1;
	c->rs.close = 0;
	c->rs.body_cut = 0;
	memset(&c->rs.roll, 0, sizeof(c->rs.roll));
	c->body_left = 0;
	c->expect_continue = 0;
}

static void conn_free(struct srv_conn *c)
{
	struct srv_conn **list = srv_worker_conn_list(c->worker);
	struct srv_server *srv = c->srv;
	struct srv_worker *w = c->worker;

	reset_request(c);
	end_in_flight(c);
	if (c->prev)
		c->prev->next = c->next;
	else
		*list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	event_free(c->timer);
	event_free(c->delay);
	evbuffer_remove_cb(bufferevent_get_output(c->bev), count_sent, c);
	bufferevent_free(c->bev);
	evbuffer_free(c->rs.headers);
	evbuffer_free(c->rs.body);
	evbuffer_free(c->scratch);
	free(c->head);
	free(c->key);
	free(c);
	__atomic_sub_fetch(&srv->open_conns, 1, __ATOMIC_SEQ_CST);
	srv_stats_add(&srv->stats, &srv->stats.open, -1);
	srv_worker_conn_gone(w);
}

/* Answer now, before (the rest of) the body was read, and close. */
static void conn_reply_early(struct srv_conn *c, int status, const char *fmt,
			     ...) __attribute__((format(printf, 3, 4)));
static void conn_reply_early(struct srv_conn *c, int status, const char *fmt,
			     ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->rq.upload) {
		c->srv->store->ops->upload_abort(c->rq.upload);
		c->rq.upload = NULL;
	}
	evbuffer_drain(c->rs.headers, evbuffer_get_length(c->rs.headers));
	memset(&c->rs.roll, 0, sizeof(c->rs.roll));
	srv_reply_error(&c->rs, status, "%s", msg);
	c->rs.close = 1;
	set_timer(c, TIMER_OFF, 0);
	conn_send_response(c);
}

/* The disk filled up under the body: 507, and close (the rest of the body
 * is not read). */
static void conn_reply_full(struct srv_conn *c)
{
	if (c->rq.upload) {
		c->srv->store->ops->upload_abort(c->rq.upload);
		c->rq.upload = NULL;
	}
	evbuffer_drain(c->rs.headers, evbuffer_get_length(c->rs.headers));
	memset(&c->rs.roll, 0, sizeof(c->rs.roll));
	srv_reply_full(&c->rs, c->rq.key);
	c->rs.close = 1;
	set_timer(c, TIMER_OFF, 0);
	conn_send_response(c);
}

/* ---- request head ---- */

static int is_tchar(unsigned char ch)
{
	return ch > 32 && ch < 127 && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* Does the comma-separated header value LIST hold TOKEN? */
static int has_token(const char *list, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		size_t len = strcspn(p, ", \t");
		if (len == n && strncasecmp(p, token, n) == 0)
			return 1;
		p += len;
	}
	return 0;
}

static int parse_length(const char *v, uint64_t *out)
{
	uint64_t n = 0;

	if (!*v)
		return -1;
	while (v[0] == '0' && v[1])
		v++;  /* leading zeros say nothing */
	if (strlen(v) > 18)
		return -1;
	for (; *v; v++) {
		if (*v < '0' || *v > '9')
			return -1;
		n = n * 10 + (*v - '0');
	}
	*out = n;
	return 0;
}

static void keep_first(const char **slot, const char *value)
{
	if (!*slot)
		*slot = value;
}

/* A list header (If-Match, If-None-Match) sent on several lines is one
 * list (RFC 9110 5.3): the lines are joined with ", " into c->lists. */
static int add_to_list(struct srv_conn *c, const char **slot,
		       const char *value, const char **why)
{
	if (!*slot) {
		*slot = value;
		return 0;
	}
	size_t have = strlen(*slot), add = strlen(value);
	char *joined = malloc(have + add + 3);
	if (!joined) {
		*why = "out of memory";
		return 500;
	}
	memcpy(joined, *slot, have);
	memcpy(joined + have, ", ", 2);
	memcpy(joined + have + 2, value, add + 1);
	if (c->nlists == sizeof(c->lists) / sizeof(c->lists[0])) {
		free(joined);
		*why = "too many repeated If-Match / If-None-Match lines";
		return 400;
	}
	c->lists[c->nlists++] = joined;
	*slot = joined;
	return 0;
}

/* Record one header; returns 0 or an HTTP status with *why. */
static int apply_header(struct srv_conn *c, const char *name, char *value,
			const char **why)
{
	struct srv_request *rq = &c->rq;
	uint64_t n;

	for (const char *q = value; *q; q++) {
		if ((unsigned char)*q < 0x20 && *q != '\t') {
			/* A bare CR or LF inside a line: a proxy before
			 * us may have split it elsewhere. */
			*why = "control character in a header value";
			return 400;
		}
	}
	if (!strcasecmp(name, "Content-Length")) {
		if (parse_length(value, &n) < 0 ||
		    (rq->has_content_length && n != rq->content_length)) {
			*why = "bad Content-Length";
			return 400;
		}
		rq->content_length = n;
		rq->has_content_length = 1;
	} else if (!strcasecmp(name, "Transfer-Encoding")) {
		rq->chunked = 1;
	} else if (!strcasecmp(name, "Connection")) {
		if (has_token(value, "close"))
			c->keep_alive = 0;
		else if (has_token(value, "keep-alive") && rq->http_minor == 0)
			c->keep_alive = 1;
	} else if (!strcasecmp(name, "Expect")) {
		if (strcasecmp(value, "100-continue") != 0) {
			*why = "unsupported Expect";
			return 417;
		}
		c->expect_continue = rq->http_minor >= 1;
	} else if (!strcasecmp(name, "Range")) {
		if (rq->range) {
			*why = "more than one Range header";
			return 400;
		}
		rq->range = value;
	} else if (!strcasecmp(name, "If-Range")) {
		keep_first(&rq->if_range, value);
	} else if (!strcasecmp(name, "If-Match")) {
		return add_to_list(c, &rq->if_match, value, why);
	} else if (!strcasecmp(name, "If-None-Match")) {
		return add_to_list(c, &rq->if_none_match, value, why);
	} else if (!strcasecmp(name, "Host")) {
		if (rq->has_host++) {
			*why = "more than one Host header";
			return 400;
		}
	} else if (!strcasecmp(name, "Authorization")) {
		keep_first(&rq->authorization, value);
	} else if (!strcasecmp(name, "Content-Type")) {
		keep_first(&rq->content_type, value);
	}
	return 0;
}

static enum srv_method method_of(const char *m)
{
	static const char *const names[] = { "GET", "HEAD", "PUT", "DELETE" };

	for (int i = 0; i < 4; i++)
		if (!strcmp(m, names[i]))
			return (enum srv_method)i;
	return SRV_OTHER;
}

static int parse_request_line(struct srv_conn *c, char *line,
			      const char **why)
{
	char *sp1 = strchr(line, ' '), *sp2, *version;

	*why = "malformed request line";
	if (!sp1 || sp1 == line)
		return 400;
	*sp1 = '\0';
	sp2 = strchr(sp1 + 1, ' ');
	if (!sp2 || sp2 == sp1 + 1)
		return 400;
	*sp2 = '\0';
	version = sp2 + 1;
	if (strchr(version, ' '))
		return 400;
	for (const char *q = line; *q; q++)
		if (!is_tchar((unsigned char)*q))
			return 400;
	for (const char *q = sp1 + 1; *q; q++) {
		if ((unsigned char)*q <= 0x20 || *q == 0x7f) {
			*why = "control character in the request target";
			return 400;
		}
	}
	c->rq.method_name = line;
	c->rq.method = method_of(line);
	c->rq.target = sp1 + 1;
	if (!strcmp(version, "HTTP/1.1")) {
		c->rq.http_minor = 1;
	} else if (!strcmp(version, "HTTP/1.0")) {
		c->rq.http_minor = 0;
	} else {
		*why = "HTTP version not supported (use HTTP/1.1)";
		return strncmp(version, "HTTP/", 5) ? 400 : 505;
	}
	c->keep_alive = c->rq.http_minor == 1;
	return 0;
}

/* Parse c->head (NUL-terminated, ends with an empty line) in place. */
static int parse_head(struct srv_conn *c, const char **why)
{
	char *p = c->head, *eol = strstr(p, "\r\n");
	int status, nheaders = 0;

	if (!eol) {  /* cannot happen: the head ends with CRLF CRLF */
		*why = "malformed request head";
		return 400;
	}
	*eol = '\0';
	status = parse_request_line(c, p, why);
	if (status)
		return status;
	for (p = eol + 2; strncmp(p, "\r\n", 2) != 0; p = eol + 2) {
		char *colon, *value, *end;

		eol = strstr(p, "\r\n");
		if (!eol) {  /* cannot happen: the head ends with CRLF CRLF */
			*why = "malformed request head";
			return 400;
		}
		*eol = '\0';
		if (++nheaders > SRV_MAX_HEADERS) {
			*why = "too many header lines";
			return 431;
		}
		colon = strchr(p, ':');
		*why = "malformed header line";
		if (!colon || colon == p)
			return 400;
		for (char *q = p; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				return 400;
		*colon = '\0';
		for (value = colon + 1; *value == ' ' || *value == '\t';)
			value++;
		end = value + strlen(value);
		while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		status = apply_header(c, p, value, why);
		if (status)
			return status;
	}
	if (c->rq.http_minor == 1 && !c->rq.has_host) {
		*why = "HTTP/1.1 request without a Host header";
		return 400;
	}
	return 0;
}

/* ---- request body and running the request ---- */

/* The pad fault: a body (or a longer one) on a PUT or error answer, as
 * servers and proxies with verbose pages send.  A 204 becomes a 200. */
static void pad_body(struct srv_response *rs)
{
	static const char filler[] = "padding.";

	if (rs->status == 204)
		rs->status = 200;
	for (unsigned n = rs->roll.pad_bytes; n > 0;) {
		unsigned k = n < sizeof(filler) - 1 ? n : (unsigned)sizeof(filler) - 1;
		evbuffer_add(rs->body, filler, k);
		n -= k;
	}
}

static void conn_run_request(struct srv_conn *c)
{
	struct srv_server *srv = c->srv;

	if (c->rs.roll.error) {
		srv_stats_add(&srv->stats, &srv->stats.faults[SRV_FAULT_ERROR],
			      1);
		if (c->rq.upload) {
			srv->store->ops->upload_abort(c->rq.upload);
			c->rq.upload = NULL;
		}
		srv_reply_error(&c->rs, 503, "injected fault: service "
				"unavailable, retry");
	} else {
		srv_handle_request(srv, &c->rq, &c->rs);
	}
	if (c->rs.roll.pad_bytes && c->rs.content_length < 0 &&
	    (c->rs.status >= 400 || c->rq.method == SRV_PUT))
		pad_body(&c->rs);
	conn_send_response(c);
}

static void delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct srv_conn *c = arg;

	srv_assert(c->state == CONN_WAIT);
	conn_run_request(c);
}

static void conn_complete_request(struct srv_conn *c)
{
	struct srv_server *srv = c->srv;

	set_timer(c, TIMER_OFF, 0);
	if (!c->rq.is_admin)
		srv_faults_roll(&srv->faults, (int)c->rq.method, c->rq.key, &c->rs.roll);
	if (c->rs.roll.latency_ms) {
		struct timeval tv = { c->rs.roll.latency_ms / 1000,
				      (c->rs.roll.latency_ms % 1000) * 1000 };
		srv_stats_add(&srv->stats,
			      &srv->stats.faults[SRV_FAULT_LATENCY], 1);
		c->state = CONN_WAIT;
		/* From now, not from the loop's cached time (earlier): never
		 * less than N ms. */
		event_base_update_cache_time(bufferevent_get_base(c->bev));
		evtimer_add(c->delay, &tv);
		return;
	}
	conn_run_request(c);
}

static int sink_body(struct srv_conn *c, const void *p, size_t n)
{
	if (c->rq.upload)
		return c->srv->store->ops->upload_write(c->rq.upload, p, n);
	if (c->rq.small_body)
		return evbuffer_add(c->rq.small_body, p, n);
	return 0;  /* a body nobody wants: read and dropped */
}

static void conn_read_body(struct srv_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer_iovec vec[16];

	srv_assert(c->state == CONN_BODY);
	while (c->body_left && evbuffer_get_length(in)) {
		size_t want = evbuffer_get_length(in), done = 0;
		if (want > c->body_left)
			want = c->body_left;
		int nv = evbuffer_peek(in, want, NULL, vec, 16);
		if (nv > 16)
			nv = 16;
		for (int i = 0; i < nv && done < want; i++) {
			size_t n = vec[i].iov_len;
			if (n > want - done)
				n = want - done;
			errno = 0;
			if (sink_body(c, vec[i].iov_base, n) < 0) {
				if (errno == ENOSPC || errno == EDQUOT) {
					conn_reply_full(c);
					return;
				}
				conn_reply_early(c, 500, "cannot store the "
						 "request body");
				return;
			}
			done += n;
		}
		evbuffer_drain(in, done);
		c->body_left -= done;
		srv_stats_add(&c->srv->stats, &c->srv->stats.bytes_in, done);
	}
	if (!c->body_left)
		conn_complete_request(c);
	else if (c->peer_eof)
		conn_free(c);  /* a body that will never end */
}

static void conn_start_request(struct srv_conn *c)
{
	struct srv_server *srv = c->srv;
	const char *why;
	int status = parse_head(c, &why);

	if (status) {
		conn_reply_early(c, status, "%s", why);
		return;
	}
	if (srv_handle_head(srv, &c->rq, &c->rs, c->over_limit) ==
	    SRV_REPLY_NOW) {
		c->in_flight = c->rq.counted;
		if (c->rq.content_length || c->rq.chunked)
			c->rs.close = 1;  /* the body was not read */
		set_timer(c, TIMER_OFF, 0);
		conn_send_response(c);
		return;
	}
	c->in_flight = c->rq.counted;
	c->body_left = c->rq.content_length;
	if (c->body_left && c->expect_continue) {
		c->out_counted = c->rq.counted;
		bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	}
	c->state = CONN_BODY;
	conn_read_body(c);
}

static void skip_empty_lines(struct evbuffer *in)
{
	while (evbuffer_get_length(in) >= 2) {
		unsigned char *p = evbuffer_pullup(in, 2);
		if (p[0] != '\r' || p[1] != '\n')
			break;
		evbuffer_drain(in, 2);
	}
}

static void conn_read_head(struct srv_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t max = c->srv->cfg.max_header_bytes, len, n;
	struct evbuffer_ptr end;

	skip_empty_lines(in);
	len = evbuffer_get_length(in);
	if (len == 0) {
		if (c->peer_eof)
			conn_free(c);  /* all answered, nothing more comes */
		return;
	}
	if (c->timer_mode == TIMER_IDLE)
		set_timer(c, TIMER_REQUEST, c->srv->cfg.request_timeout_ms);
	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	n = end.pos < 0 ? len : (size_t)end.pos + 4;
	if (n > max) {
		conn_reply_early(c, 431, "request head larger than %zu bytes",
				 max);
		return;
	}
	if (end.pos < 0) {
		if (c->peer_eof)
			conn_free(c);  /* a head that will never end */
		return;
	}
	evbuffer_remove(in, c->head, n);
	c->head[n] = '\0';
	srv_stats_add(&c->srv->stats, &c->srv->stats.bytes_in, n);
	if (memchr(c->head, '\0', n)) {
		/* The head is parsed as a C string: a NUL would hide the
		 * rest of it. */
		conn_reply_early(c, 400, "NUL byte in the request head");
		return;
	}
	conn_start_request(c);
}

/* ---- response ---- */

static void log_access(struct srv_conn *c, size_t bytes)
{
	fprintf(stderr, "%s %s%s%s %d %zu%s\n",
		c->rq.method_name ? c->rq.method_name : "-",
		c->rq.target ? c->rq.target : "-", c->rq.query ? "?" : "",
		c->rq.query ? c->rq.query : "", c->rs.status, bytes,
		c->cut ? " (cut: fault)" : "");
}

static void write_status_and_headers(struct srv_conn *c, struct evbuffer *hb)
{
	struct srv_response *rs = &c->rs;
	int st = rs->status;

	evbuffer_add_printf(hb, "HTTP/1.1 %d %s\r\nServer: blkmap-server\r\n",
			    st, srv_status_reason(st));
	if (st != 204 && st != 304) {
		uint64_t n = rs->content_length >= 0 ?
			(uint64_t)rs->content_length :
			evbuffer_get_length(rs->body);
		evbuffer_add_printf(hb, "Content-Length: %llu\r\n",
				    (unsigned long long)n);
	}
	if (c->closing)
		evbuffer_add_printf(hb, "Connection: close\r\n");
	else if (c->rq.http_minor == 0)
		evbuffer_add_printf(hb, "Connection: keep-alive\r\n");
	evbuffer_add_buffer(hb, rs->headers);
	evbuffer_add(hb, "\r\n", 2);
}

/* Drop fault: send part of the response, then close. An object body was
 * already cut by the handler; otherwise cut the body, or else the status
 * line (a client may take a cut header block for a complete one). */
static void queue_cut_response(struct srv_conn *c, struct evbuffer *out)
{
	struct evbuffer *hb = c->scratch, *body = c->rs.body;
	size_t blen = evbuffer_get_length(body);

	if (c->rs.body_cut) {
		evbuffer_add_buffer(out, hb);
		evbuffer_add_buffer(out, body);
	} else if (blen >= 2) {
		evbuffer_add_buffer(out, hb);
		evbuffer_remove_buffer(body, out, blen / 2);
	} else {  /* no body to cut: cut inside the status line */
		struct evbuffer_ptr eol = evbuffer_search(hb, "\r\n", 2, NULL);
		evbuffer_remove_buffer(hb, out, eol.pos > 0 ? eol.pos / 2 : 1);
	}
	evbuffer_drain(hb, evbuffer_get_length(hb));
	evbuffer_drain(body, evbuffer_get_length(body));
	c->cut = 1;
	c->closing = 1;
	srv_stats_add(&c->srv->stats, &c->srv->stats.faults[SRV_FAULT_DROP],
		      1);
}

static void conn_send_response(struct srv_conn *c)
{
	struct srv_server *srv = c->srv;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t before = evbuffer_get_length(out), sent;

	/* One response at a time: the next waits for this one to drain
	 * (count_sent relies on it). */
	srv_assert(c->state != CONN_RESPOND && c->state != CONN_LINGER);
	/* A 400 means we could not make sense of the request: what the
	 * client sends next on this connection is not to be trusted either
	 * (nginx closes too), and it must not wait out the idle timeout. */
	if (!c->keep_alive || c->rs.close || c->over_limit ||
	    c->rs.status == 400 || srv_worker_stopping(c->worker))
		c->closing = 1;
	if (c->rq.method == SRV_HEAD) {  /* same headers as GET, no body */
		if (c->rs.content_length < 0)
			c->rs.content_length = evbuffer_get_length(c->rs.body);
		evbuffer_drain(c->rs.body, evbuffer_get_length(c->rs.body));
	}
	write_status_and_headers(c, c->scratch);
	if (c->rs.roll.drop) {
		queue_cut_response(c, out);
	} else {
		evbuffer_add_buffer(out, c->scratch);
		evbuffer_add_buffer(out, c->rs.body);
	}
	sent = evbuffer_get_length(out) - before;
	/* bytes_out grows as the bytes leave (count_sent), not here. */
	c->out_counted = c->rq.counted;
	if (c->rq.counted) {
		int st = c->rs.status;
		pthread_mutex_lock(&srv->stats.lock);
		srv->stats.status[st > 0 && st < 600 ? st : 0]++;
		pthread_mutex_unlock(&srv->stats.lock);
	}
	if (srv->cfg.verbose)
		log_access(c, sent);
	c->state = CONN_RESPOND;
}

/* Close gracefully: shut our write side and read out what the client
 * still sends, so that it reads our last response instead of a reset. */
static void conn_linger(struct srv_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (c->peer_eof) {
		conn_free(c);
		return;
	}
	shutdown(bufferevent_getfd(c->bev), SHUT_WR);
	evbuffer_drain(in, evbuffer_get_length(in));
	c->state = CONN_LINGER;
	set_timer(c, TIMER_LINGER, LINGER_MS);
}

static void conn_wait_request(struct srv_conn *c)
{
	c->state = CONN_HEAD;
	set_timer(c, TIMER_IDLE, c->srv->cfg.idle_timeout_ms);
	conn_read_head(c);
}

static void conn_finish_response(struct srv_conn *c)
{
	srv_assert(c->state == CONN_RESPOND);
	srv_assert(evbuffer_get_length(bufferevent_get_output(c->bev)) == 0);
	end_in_flight(c);
	if (c->cut) {
		conn_free(c);
		return;
	}
	if (c->closing || srv_worker_stopping(c->worker)) {
		conn_linger(c);
		return;
	}
	reset_request(c);
	conn_wait_request(c);
}

/* ---- libevent callbacks ---- */

/* Bytes drained from the output buffer were written to the socket (by
 * write or sendfile): those are the bytes sent.  What is still queued when
 * a client leaves was never sent and is never counted.  The buffer holds
 * one response at a time, so out_counted says whose bytes these are. */
static void count_sent(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		       void *arg)
{
	struct srv_conn *c = arg;

	if (info->n_deleted && c->out_counted)
		srv_stats_add(&c->srv->stats, &c->srv->stats.bytes_out,
			      info->n_deleted);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct srv_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	switch (c->state) {
	case CONN_HEAD:
		conn_read_head(c);
		break;
	case CONN_BODY:
		conn_read_body(c);
		break;
	case CONN_LINGER:
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	default:
		break;  /* pipelined bytes wait for this response to end */
	}
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct srv_conn *c = arg;

	if (c->state == CONN_RESPOND &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_finish_response(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct srv_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		c->peer_eof = 1;
		if (c->state == CONN_RESPOND) {
			/* The client only stopped sending: answer this
			 * request and those already received, then close
			 * (conn_read_head). */
			return;
		}
		if (c->state == CONN_WAIT) {
			/* Held by the latency fault: carry the request out
			 * now (a PUT is stored) rather than hold a
			 * connection the client may have left. */
			evtimer_del(c->delay);
			conn_run_request(c);
			return;
		}
		if (c->state == CONN_HEAD) {
			conn_read_head(c);  /* complete heads still count */
			return;
		}
	}
	conn_free(c);  /* error, write timeout, or EOF mid-request */
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct srv_conn *c = arg;

	if (c->timer_mode == TIMER_REQUEST)
		conn_reply_early(c, 408, "request not received within %u ms",
				 c->srv->cfg.request_timeout_ms);
	else
		conn_free(c);  /* idle keep-alive, or linger over */
}

static void tune_socket(struct srv_conn *c, int fd)
{
	int one = 1;
	size_t hw = c->srv->cfg.max_header_bytes + 1;
	struct timeval wt = { c->srv->cfg.request_timeout_ms / 1000,
			      (c->srv->cfg.request_timeout_ms % 1000) * 1000 };

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bufferevent_set_max_single_read(c->bev, READ_CHUNK);
	bufferevent_set_max_single_write(c->bev, WRITE_CHUNK);
	bufferevent_setwatermark(c->bev, EV_READ, 0,
				 hw > READ_CHUNK ? hw : READ_CHUNK);
	bufferevent_set_timeouts(c->bev, NULL, &wt);
}

void srv_conn_accept(struct srv_worker *w, struct srv_server *srv,
		     struct event_base *base, int fd)
{
	unsigned open = __atomic_add_fetch(&srv->open_conns, 1,
					   __ATOMIC_SEQ_CST);
	struct srv_conn *c, **list;

	srv_stats_add(&srv->stats, &srv->stats.accepted, 1);
	/* Past twice the limit, not even a 503: close at once. */
	c = open > 2 * srv->cfg.max_connections ? NULL : calloc(1, sizeof(*c));
	if (c) {
		c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->timer = evtimer_new(base, on_timer, c);
		c->delay = evtimer_new(base, delay_done, c);
		c->head = malloc(srv->cfg.max_header_bytes + 1);
		c->key = malloc(srv->cfg.max_header_bytes + 1);
		c->scratch = evbuffer_new();
		c->rs.headers = evbuffer_new();
		c->rs.body = evbuffer_new();
	}
	if (!c || !c->bev || !c->timer || !c->delay || !c->head || !c->key ||
	    !c->scratch || !c->rs.headers || !c->rs.body) {
		if (c) {
			if (c->bev)
				bufferevent_free(c->bev);
			else
				close(fd);
			if (c->timer)
				event_free(c->timer);
			if (c->delay)
				event_free(c->delay);
			if (c->scratch)
				evbuffer_free(c->scratch);
			if (c->rs.headers)
				evbuffer_free(c->rs.headers);
			if (c->rs.body)
				evbuffer_free(c->rs.body);
			free(c->head);
			free(c->key);
			free(c);
		} else {
			close(fd);
		}
		__atomic_sub_fetch(&srv->open_conns, 1, __ATOMIC_SEQ_CST);
		srv_stats_add(&srv->stats, &srv->stats.rejected, 1);
		return;
	}
	evbuffer_set_flags(c->rs.body, EVBUFFER_FLAG_DRAINS_TO_FD);
	c->srv = srv;
	c->worker = w;
	c->over_limit = open > srv->cfg.max_connections;
	list = srv_worker_conn_list(w);
	c->next = *list;
	if (*list)
		(*list)->prev = c;
	*list = c;
	srv_stats_add(&srv->stats, &srv->stats.open, 1);
	tune_socket(c, fd);
	reset_request(c);
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	evbuffer_add_cb(bufferevent_get_output(c->bev), count_sent, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	conn_wait_request(c);
}

/* Shutdown: close connections between requests, and those holding only
 * part of a request head (a head is parsed as soon as it is whole, so in
 * CONN_HEAD any bytes are an unfinished head): nothing was asked of us
 * yet, and waiting for the rest could take the whole request timeout.
 * The others finish their request and close after the response. */
void srv_worker_conns_stop(struct srv_worker *w)
{
	struct srv_conn *c = *srv_worker_conn_list(w), *next;

	for (; c; c = next) {
		next = c->next;
		if (c->state == CONN_HEAD)
			conn_free(c);
	}
}
