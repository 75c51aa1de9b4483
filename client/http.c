/* http.c — HTTP/1.1 requests over libcurl: a bounded pool of keep-alive
 * connections, request/response plumbing, and retries with bm_http_backoff.
 *
 * Owns: struct bm_http (http_pool.h), one curl multi handle per connection.
 * Its sockets (close-on-exec, parked for the next handle) are
 * http_sock.c's.  A request
 * takes a connection from the pool (waiting when all are busy, so there are
 * never more than `connections` connections to the server) and gives it
 * back; the multi handle keeps its connection alive between requests.  Each
 * request runs on a curl easy handle of its own, a copy of the connection's
 * template (the options every request has, set once): libcurl 7.88 (Debian
 * 12) keeps a pointer to the last header of an easy handle's previous answer
 * after freeing it, and appends a next answer's folded first header line
 * to it (a read and realloc of freed memory a server can cause); a fresh
 * easy handle has no previous answer.  The copy costs about 2 us a request
 * (a 16 KiB GET on loopback: 34.5-36 us against 33-34), and no descriptor:
 * curl_easy_perform made each reused handle a multi handle of its own.  The
 * bound can be raised while requests run (bm_http_set_connections:
 * read-ahead under slow answers), never lowered.  Several requests at
 * once from one thread (bm_http_do_all, flows) are http_many.c's, over
 * this pool and these steps (http_pool.h).
 * A request a faulting thread waits for is polled for, not slept on,
 * while the server answers fast (perform_on).
 * Locking: h->mu protects the pool only; requests run without it;
 * h->waited_ns is atomic.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "internal.h"
#include "http_pool.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void init_curl(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }


int bm_http_new(struct bm_http **hp, const struct bm_http_opts *o)
{
	struct bm_http *h = calloc(1, sizeof(*h));

	*hp = NULL;
	if (h == NULL)
		return BM_ENOMEM;
	pthread_once(&curl_once, init_curl);
	h->o = *o;
	atomic_init(&h->waited_ns, UINT64_MAX);
	if (h->o.connections < 1)
		h->o.connections = 1;
	h->idle = calloc((size_t)h->o.connections, sizeof(*h->idle));
	if (o->token != NULL && *o->token != '\0') {
		size_t n = strlen(o->token) + 32;
		h->auth = malloc(n);
		if (h->auth != NULL)
			snprintf(h->auth, n, "Authorization: Bearer %s", o->token);
	}
	if (h->idle == NULL || (o->token && *o->token && h->auth == NULL)) {
		bm_http_free(h);
		return BM_ENOMEM;
	}
	h->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	h->inited = true;
	*hp = h;
	return 0;
}

void bm_http_free(struct bm_http *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < h->nidle; i++) {
		h->idle[i]->parking = true; /* idle: curl kept it after a whole answer */
		bm_http_conn_free(h->idle[i]);
	}
	free(h->idle);
	free(h->auth);
	if (h->inited) {
		pthread_mutex_destroy(&h->mu);
		pthread_cond_destroy(&h->cv);
	}
	free(h);
}

int bm_http_set_connections(struct bm_http *h, int n)
{
	int rc = 0;

	pthread_mutex_lock(&h->mu);
	if (n > h->o.connections) {
		/* idle holds at most ncreated <= connections handles. */
		struct bm_conn **idle = realloc(h->idle, (size_t)n * sizeof(*idle));
		if (idle == NULL) {
			rc = BM_ENOMEM;
		} else {
			h->idle = idle;
			h->o.connections = n;
			pthread_cond_broadcast(&h->cv); /* waiters may open one now */
		}
	}
	pthread_mutex_unlock(&h->mu);
	return rc;
}

static void set_common(struct bm_http *h, CURL *c);

void bm_http_conn_free(struct bm_conn *c)
{
	if (c->m)
		curl_multi_cleanup(c->m);
	if (c->tpl)
		curl_easy_cleanup(c->tpl);
	free(c);
}

struct bm_conn *bm_http_conn_new(struct bm_http *h)
{
	struct bm_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->m = curl_multi_init();
	c->tpl = curl_easy_init();
	if (c->m == NULL || c->tpl == NULL) {
		bm_http_conn_free(c);
		return NULL;
	}
	/* One connection kept, also after bm_http_do_all ran several. */
	curl_multi_setopt(c->m, CURLMOPT_MAXCONNECTS, 1L);
	c->h = h;
	set_common(h, c->tpl);
	bm_http_sock_options(c);
	return c;
}

static struct bm_conn *take_handle(struct bm_http *h)
{
	struct bm_conn *c = NULL;

	pthread_mutex_lock(&h->mu);
	while (h->nidle == 0 && h->ncreated >= h->o.connections)
		pthread_cond_wait(&h->cv, &h->mu);
	if (h->nidle > 0) {
		c = h->idle[--h->nidle];
	} else if ((c = bm_http_conn_new(h)) != NULL) {
		h->ncreated++;
	}
	pthread_mutex_unlock(&h->mu);
	return c;
}

void bm_http_conn_give(struct bm_http *h, struct bm_conn *c, bool broken)
{
	pthread_mutex_lock(&h->mu);
	if (broken) {
		/* A connection in an unknown state: start afresh. */
		bm_http_conn_free(c);
		h->ncreated--;
	} else {
		h->idle[h->nidle++] = c;
	}
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* ---- callbacks ------------------------------------------------------------ */

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct bm_req *r = arg;
	size_t n = size * nmemb;

	r->body_seen += n;
	if (r->head_status / 100 != 2) {
		/* An error page: never to the caller's sink, and never an
		 * error of its own (its status is what counts).  Its start is
		 * kept for messages. */
		size_t room = sizeof(r->errbody) - 1 - r->errlen;
		size_t k = n < room ? n : room;
		memcpy(r->errbody + r->errlen, data, k);
		r->errlen += k;
		r->errbody[r->errlen] = '\0';
		return n;
	}
	if (r->discard || r->sink == NULL)
		return n; /* an answer whose body nobody reads (to a PUT) */
	if (n > r->cap - r->got) {
		r->overflow = true;
		return 0; /* abort: longer than the caller can take */
	}
	int rc = r->sink(r->sink_arg, r->got, data, n);
	if (rc < 0) {
		r->write_err = rc;
		return 0; /* abort */
	}
	r->got += n;
	return n;
}

/* Copies a header's value (trimmed) if line is "name: value".  A value
 * that does not fit is not cut short (a cut ETag or Content-Range would say
 * something else): it is recorded in r->long_header, which fails the
 * request. */
static bool header_value(struct bm_req *r, const char *line, size_t len, const char *name, char *out,
			 size_t outn)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return false;
	const char *v = line + nl + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t vl = (size_t)(end - v);
	if (vl >= outn) {
		r->long_header = name;
		vl = 0;
	}
	memcpy(out, v, vl);
	out[vl] = '\0';
	return true;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
	struct bm_req *r = arg;
	size_t n = size * nmemb;
	char cl[32];

	if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or 100): forget the last. */
		r->etag[0] = r->content_range[0] = r->last_modified[0] = r->server[0] = '\0';
		r->header_value[0] = r->errbody[0] = '\0';
		r->errlen = 0;
		r->long_header = NULL;
		r->content_length = UINT64_MAX;
		r->body_seen = 0;
		r->keepalive = n > 8 && strncmp(line, "HTTP/1.1", 8) == 0;
		const char *sp = memchr(line, ' ', n);
		r->head_status = sp ? strtol(sp + 1, NULL, 10) : 0;
	}
	if (n > 11 && strncasecmp(line, "Connection:", 11) == 0) {
		char v[128];
		size_t k = n - 11 < sizeof(v) - 1 ? n - 11 : sizeof(v) - 1;
		memcpy(v, line + 11, k);
		v[k] = '\0';
		if (strcasestr(v, "close") != NULL)
			r->keepalive = false; /* the server closes it */
	}
	header_value(r, line, n, "ETag", r->etag, sizeof(r->etag));
	header_value(r, line, n, "Content-Range", r->content_range, sizeof(r->content_range));
	header_value(r, line, n, "Last-Modified", r->last_modified, sizeof(r->last_modified));
	header_value(r, line, n, "Server", r->server, sizeof(r->server));
	if (r->want_header)
		header_value(r, line, n, r->want_header, r->header_value, sizeof(r->header_value));
	if (header_value(r, line, n, "Content-Length", cl, sizeof(cl))) {
		char *e;
		unsigned long long v = strtoull(cl, &e, 10);
		r->content_length = (*cl && *e == '\0') ? v : UINT64_MAX;
	}
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct bm_put_src *s = arg;
	size_t n = size * nmemb;
	if (n > s->left)
		n = s->left;
	memcpy(buf, s->p, n);
	s->p += n;
	s->left -= n;
	return n;
}

/* ---- one attempt -------------------------------------------------------------- */

void bm_http_req_reset(struct bm_req *r)
{
	r->status = 0;
	r->got = 0;
	r->overflow = false;
	r->write_err = 0;
	r->head_status = 0;
	r->etag[0] = r->content_range[0] = r->last_modified[0] = r->server[0] = r->err[0] = '\0';
	r->header_value[0] = r->errbody[0] = '\0';
	r->errlen = 0;
	r->long_header = NULL;
	r->content_length = UINT64_MAX;
	r->fd = -1;
	r->keepalive = false;
	r->body_seen = 0;
}

/* Whether a failed transfer is worth retrying: the connection or the
 * server may do better next time.  A reply curl could not make sense of
 * (a bad status line or Content-Length, an unknown encoding) is not. */
static bool curl_transient(CURLcode cc)
{
	switch (cc) {
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_BAD_CONTENT_ENCODING:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_BAD_FUNCTION_ARGUMENT:
	case CURLE_NOT_BUILT_IN:
		return false;
	default:
		return true;
	}
}

/* The options every request of h has: a connection's template. */
static void set_common(struct bm_http *h, CURL *c)
{
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->o.connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->o.timeout_ms);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	/* A 64 KiB receive buffer (curl's default is 16 KiB): a quarter of
	 * the recv calls, and still hot in cache when the body is hashed and
	 * stored.  bench_client, 3 runs each, median ratios 16K -> 64K:
	 * random_read 1M 1.55 -> 1.28, 4M cache full 1.39 -> 1.05, seq_scan
	 * 4M 64 MiB cache 0.84 -> 0.89; 128 KiB was no better, 256 KiB and
	 * more worse. */
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 64L << 10);
	if (h->o.aws_sigv4) {
		curl_easy_setopt(c, CURLOPT_AWS_SIGV4, h->o.aws_sigv4);
		curl_easy_setopt(c, CURLOPT_USERPWD, h->o.userpwd);
	}
	if (h->o.ca_bundle)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->o.ca_bundle);
}

/* A request a thread waits for with nothing else to do (the miss of a
 * fault: bm_http_set_waited) is polled for its answer, not slept on, for
 * up to twice the time the last such request took, when that was short
 * (below the longest poll): the thread's CPU then stays busy while the
 * server answers, and the answer is seen with no wake-up.  On a virtual
 * machine whose idle CPUs halt, a wake-up on an idle CPU is an exit to the
 * host, tens of microseconds, as long as a loopback answer itself
 * (docs/client.md, "Random reads").  A server farther away answers in
 * more than the longest poll: no poll.  On a busy machine a wake-up lands
 * on a busy CPU and costs little while the poll takes CPU from other
 * work: when a sched_yield ran something else for more than SPIN_BUSY_NS,
 * the poll stops.  No poll when the process may run on one CPU only.
 * BLKMAP_MISS_POLL_US sets the longest poll (default SPIN_MAX_US; 0:
 * never), read once per process (virtmem's vm_poll_us_env, the parse of
 * VIRTMEM_UFFD_SPIN_US too). */
#define SPIN_MAX_US 200
#define SPIN_BUSY_NS 10000

static __thread bool waited;
static uint64_t spin_max_ns;
static pthread_once_t spin_once = PTHREAD_ONCE_INIT;

static void spin_setup(void)
{
	unsigned us;

	if (vm_poll_us_env("BLKMAP_MISS_POLL_US", SPIN_MAX_US, &us) < 0)
		bm_log("BLKMAP_MISS_POLL_US=%s: not a number of microseconds from 0 to %d; "
		       "%d is used", getenv("BLKMAP_MISS_POLL_US"), VM_POLL_US_MAX, SPIN_MAX_US);
	spin_max_ns = (uint64_t)us * 1000;
}

bool bm_http_set_waited(bool on)
{
	bool was = waited;
	waited = on;
	return was;
}

uint64_t bm_http_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Runs easy handle c on multi handle m (which keeps the connection) until
 * it is done; its result. */
static CURLcode perform_on(struct bm_http *h, CURLM *m, CURL *c)
{
	CURLcode cc = CURLE_FAILED_INIT;
	CURLMcode mc = curl_multi_add_handle(m, c);
	int running = 1, queued;
	uint64_t start = 0, until = 0, yield = 0;
	CURLMsg *msg;

	if (mc != CURLM_OK)
		return mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
	if (waited) {
		pthread_once(&spin_once, spin_setup);
		uint64_t last = atomic_load_explicit(&h->waited_ns, memory_order_relaxed);
		start = bm_http_mono_ns();
		if (last < spin_max_ns)
			until = start + 2 * last;
	}
	while (running && mc == CURLM_OK) {
		mc = curl_multi_perform(m, &running);
		if (!running || mc != CURLM_OK)
			break;
		if (until != 0) {
			uint64_t now = bm_http_mono_ns();
			if (now < until && (yield == 0 || now - yield < SPIN_BUSY_NS)) {
				yield = now;
				sched_yield();
				continue;
			}
			until = 0;
		}
		/* The wait ends early for curl's own timeouts (connect,
		 * request): those end the transfer through perform. */
		mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
	}
	if (start != 0)
		atomic_store_explicit(&h->waited_ns, bm_http_mono_ns() - start, memory_order_relaxed);
	while ((msg = curl_multi_info_read(m, &queued)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == c)
			cc = msg->data.result;
	if (mc != CURLM_OK && cc == CURLE_FAILED_INIT)
		cc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_SEND_ERROR;
	curl_multi_remove_handle(m, c);
	return cc;
}

/* The options of request r on c (a copy of a connection's template):
 * its URL, method, headers and body; *hdr gets the header list to free
 * after the transfer, src is the body's reader (lives as long as it). */
void bm_http_req_set(struct bm_http *h, struct bm_req *r, CURL *c, char *errbuf, struct bm_put_src *src,
			struct curl_slist **hdrp)
{
	struct curl_slist *hdr = NULL;
	char line[512];

	if (strncasecmp(r->url, "https:", 6) == 0)
		atomic_store(&h->tls, true);
	curl_easy_setopt(c, CURLOPT_URL, r->url);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	if (h->auth)
		hdr = curl_slist_append(hdr, h->auth);
	if (r->has_range) {
		snprintf(line, sizeof(line), "Range: bytes=%" PRIu64 "-%" PRIu64,
			 r->range_start, r->range_end);
		hdr = curl_slist_append(hdr, line);
	}
	if (r->if_match) {
		/* An ETag may be up to BM_ETAG_SIZE - 1 bytes: not in line. */
		char im[BM_ETAG_SIZE + 16];
		snprintf(im, sizeof(im), "If-Match: %s", r->if_match);
		hdr = curl_slist_append(hdr, im);
	}
	if (r->if_none_match_any)
		hdr = curl_slist_append(hdr, "If-None-Match: *");
	for (int i = 0; i < BM_REQ_HEADERS && r->headers[i]; i++)
		hdr = curl_slist_append(hdr, r->headers[i]);
	if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "PUT") == 0 || r->body != NULL) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, src);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		/* No 100-continue round trip.  Not when signing: libcurl signs
		 * the headers of the list, a removed one too, and the server
		 * never sees it: the signature would not match. */
		if (!h->o.aws_sigv4)
			hdr = curl_slist_append(hdr, "Expect:");
	}
	if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0 && strcmp(r->method, "PUT") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method); /* DELETE, MKCOL, PROPFIND */
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	*hdrp = hdr;
}

/* What a transfer of r on c that ended with cc comes to (perform_once's
 * result), r->status and r->err set; logged when verbose. */
int bm_http_req_result(struct bm_http *h, struct bm_req *r, CURL *c, CURLcode cc, const char *errbuf)
{
	int rc = 0;

	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	if (cc != CURLE_OK) {
		if (r->overflow) {
			snprintf(r->err, sizeof(r->err), "response body longer than %zu bytes", r->cap);
			rc = BM_EFORMAT;
		} else if (r->write_err) {
			snprintf(r->err, sizeof(r->err), "cannot store the body: %s", strerror(-r->write_err));
			rc = BM_ENOMEM;
		} else {
			snprintf(r->err, sizeof(r->err), "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = curl_transient(cc) ? BM_EHTTP : BM_EFORMAT;
		}
	} else if (r->long_header) {
		snprintf(r->err, sizeof(r->err), "the %s header is longer than blkmap accepts", r->long_header);
		rc = BM_EFORMAT;
	}
	if (h->o.verbose)
		bm_log("%s %s -> %ld%s%s", r->method, r->url, r->status, rc ? ": " : "", rc ? r->err : "");
	return rc;
}

/* One request.  0 when a response arrived (any status), BM_EHTTP for a
 * transport failure worth retrying (r->err says which), BM_EFORMAT for an
 * overlong body or header or a malformed reply. */
static int perform_once(struct bm_http *h, struct bm_req *r)
{
	struct curl_slist *hdr = NULL;
	struct bm_put_src src = { r->body, r->body_len };
	char errbuf[CURL_ERROR_SIZE] = "";
	struct bm_conn *conn = take_handle(h);
	CURLcode cc;
	CURL *c;
	int rc;

	bm_http_req_reset(r);
	if (conn == NULL || (c = curl_easy_duphandle(conn->tpl)) == NULL) {
		snprintf(r->err, sizeof(r->err), "cannot create a connection handle");
		if (conn)
			bm_http_conn_give(h, conn, false);
		return BM_ENOMEM;
	}
	bm_http_req_set(h, r, c, errbuf, &src, &hdr);
	cc = perform_on(h, conn->m, c);
	rc = bm_http_req_result(h, r, c, cc, errbuf);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdr);
	bm_http_conn_give(h, conn, cc != CURLE_OK || r->close);
	return rc;
}

/* 507 Insufficient Storage is not transient: the server is out of space,
 * and trying again at once only fails again. */
static bool status_transient(long status)
{
	return (status >= 500 && status != 507) || status == 429 || status == 408;
}

/* The wait before retry `attempt` + 1, in ms. */
long bm_http_backoff_ms(struct bm_http *h, int attempt)
{
	long ms = h->o.retry_base_ms;
	for (int i = 0; i < attempt && ms < 5000; i++)
		ms *= 2;
	if (ms > 5000)
		ms = 5000;
	/* Full jitter in [ms/2, ms]: retries of many clients spread out. */
	pthread_mutex_lock(&h->mu);
	unsigned r = (unsigned)rand_r(&h->seed);
	pthread_mutex_unlock(&h->mu);
	return ms / 2 + (long)(r % (unsigned)(ms / 2 + 1));
}

void bm_http_backoff(struct bm_http *h, int attempt)
{
	long ms = bm_http_backoff_ms(h, attempt);
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* What attempt `attempt` of r, which ended with rc (perform_once's),
 * comes to: *again when it is to be tried once more (after a bm_http_backoff),
 * else the request's result (0, or a BM_E* code with msg set). */
int bm_http_judge(struct bm_http *h, struct bm_req *r, int rc, int attempt, bm_check_fn check, void *arg,
		 char *msg, size_t n, atomic_uint_fast64_t *retriesp, bool *again)
{
	char why[300];

	*again = false;
	if (rc == 0 && r->status == 507) {
		bm_fmt(msg, n, "%s %s: HTTP 507: the server is out of space", r->method, r->url);
		return BM_EHTTP;
	}
	if (rc == 0 && status_transient(r->status)) {
		rc = BM_EHTTP;
		snprintf(why, sizeof(why), "HTTP %ld", r->status);
	} else if (rc != 0) {
		snprintf(why, sizeof(why), "%s", r->err);
	} else if (check != NULL) {
		rc = check(r, arg, why, sizeof(why));
	}
	if (rc == 0)
		return 0;
	bool transient = rc == BM_EHTTP || rc == BM_ECHECKSUM;
	bool cancelled = r->cancel != NULL && atomic_load(r->cancel);
	/* Set also before a retry: the message if a cancel comes first. */
	if (transient && attempt > 0)
		bm_fmt(msg, n, "%s %s: %s (after %d tries)", r->method, r->url, why, attempt + 1);
	else
		bm_fmt(msg, n, "%s %s: %s", r->method, r->url, why);
	if (!transient || attempt >= h->o.retries || cancelled)
		return rc;
	if (retriesp)
		atomic_fetch_add(retriesp, 1);
	if (h->o.verbose)
		bm_log("%s %s: %s; retrying", r->method, r->url, why);
	*again = true;
	return rc;
}

int bm_http_do(struct bm_http *h, struct bm_req *r, bm_check_fn check, void *arg,
	       char *msg, size_t n, atomic_uint_fast64_t *retriesp)
{
	for (int attempt = 0;; attempt++) {
		bool again;
		int rc = bm_http_judge(h, r, perform_once(h, r), attempt, check, arg, msg, n, retriesp, &again);
		if (!again)
			return rc;
		bm_http_backoff(h, attempt);
	}
}

