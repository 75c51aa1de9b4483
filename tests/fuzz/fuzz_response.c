/* tests/fuzz/fuzz_response.c — libFuzzer target for the client's handling
 * of responses: the status line, the headers it reads (ETag,
 * Content-Range, Content-Length, Last-Modified, Server, Lock-Token), the
 * checks of a body (length, range, the version it pins, a block's
 * checksum) and listings.  The input is what a server on loopback sends;
 * the client is libblkmap's HTTP store (client/store_http.c over
 * client/http.c and libcurl), and for one mode bm_open + bm_read.
 *
 * Input: byte 0 picks the operation (enum op); the rest is the raw response
 * (head and body) sent to every request.  For OP_DATASET the rest is two
 * responses split by SPLIT: the first for manifest.json, the second for
 * every other key.  The server answers each connection once and closes it.
 *
 * Properties: every call returns 0 or a store code (store.h), with, on
 * failure, a message of one printable line naming the URL; a success is
 * only ever the answer of a success status (404 is BM_ENOTFOUND, 401 and
 * 403 BM_EAUTH, only then); a range read delivers exactly the bytes asked,
 * in order; a pinned read never succeeds on another ETag; with no retries
 * a GET, HEAD or DELETE makes one request; bm_read returns only bytes that
 * match their block's checksum.
 * Locking: the server thread and the fuzzer's thread share the responses
 * and the request count under mu.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../client/store.h"
#include "fuzz.h"

#define SPLIT "\n--blkmap-fuzz-next--\n"
#define IO_MS 5000      /* a peer silent this long: the connection is dropped */
#define HEAD_MAX 65536

enum op {
	OP_GET,            /* the whole object, at most 4096 bytes */
	OP_GET_EXACT,      /* exactly 64 bytes */
	OP_GET_RANGE,      /* bytes [100, 164) */
	OP_GET_PINNED,     /* bytes [0, 16), pinned to ETag "v1", size 1000 */
	OP_HEAD,
	OP_PUT,            /* plain */
	OP_PUT_NEW,        /* If-None-Match: *, a swap */
	OP_PUT_SWAP,       /* If-Match: "v1", a swap */
	OP_DELETE,
	OP_LIST,           /* a HEAD (to learn what the server is), then a listing */
	OP_DATASET,        /* bm_open, then bm_read of the first 8 KiB */
	OP_COUNT
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *manifest_resp, *other_resp; /* under mu */
static size_t manifest_len, other_len;
static unsigned requests;
static char base[64];   /* http://127.0.0.1:PORT */

/* Reads into buf until the request head is whole (and its body, by
 * Content-Length, read and dropped); true if it was.  *is_manifest: the
 * target ends in manifest.json. */
static bool read_request(int fd, char *buf, bool *is_manifest)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t len = 0;
	char *end = NULL;

	while (end == NULL) {
		if (len == HEAD_MAX || poll(&p, 1, IO_MS) <= 0)
			return false;
		ssize_t r = read(fd, buf + len, HEAD_MAX - len);
		if (r <= 0)
			return false;
		len += (size_t)r;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	const char *sp = strchr(buf, ' '), *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
	*is_manifest = sp2 && sp2 - sp > 14 && strncmp(sp2 - 13, "manifest.json", 13) == 0;
	size_t body = 0;
	for (const char *h = strstr(buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
		if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
			body = strtoul(h + 17, NULL, 10);
	size_t have = len - (size_t)(end + 4 - buf);
	while (have < body) {
		char drop[4096];
		if (poll(&p, 1, IO_MS) <= 0)
			return false;
		ssize_t r = read(fd, drop, sizeof(drop));
		if (r <= 0)
			return false;
		have += (size_t)r;
	}
	return true;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
	struct pollfd pw = { .fd = fd, .events = POLLOUT };

	while (n > 0 && poll(&pw, 1, IO_MS) > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* the client gave up (an overlong body): fine */
		p += w;
		n -= (size_t)w;
	}
}

static void *serve(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	static char head[HEAD_MAX + 1];

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		bool is_manifest = false;
		if (fd < 0)
			continue;
		if (read_request(fd, head, &is_manifest)) {
			pthread_mutex_lock(&mu);
			requests++;
			size_t n = is_manifest ? manifest_len : other_len;
			uint8_t *copy = malloc(n ? n : 1);
			if (copy != NULL)
				memcpy(copy, is_manifest ? manifest_resp : other_resp, n);
			pthread_mutex_unlock(&mu);
			if (copy != NULL)
				write_all(fd, copy, n);
			free(copy);
		}
		close(fd);
	}
	return NULL;
}

static void start_server(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	pthread_t t;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		fuzz_fail("cannot listen on loopback: %s", strerror(errno));
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", ntohs(sa.sin_port));
	if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0)
		fuzz_fail("cannot start the server thread");
	pthread_detach(t);
}

/* ---- what a response says ------------------------------------------------------ */

/* The status of the response's first line when curl must read it the same
 * way ("HTTP/1.x NNN" then a space or the line's end, NNN not 1xx): else 0
 * (no claim is checked). */
static long status_of(const uint8_t *p, size_t n)
{
	if (n < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
		return 0;
	for (int i = 9; i < 12; i++)
		if (p[i] < '0' || p[i] > '9')
			return 0;
	if (p[12] != ' ' && p[12] != '\r' && p[12] != '\n')
		return 0;
	long s = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	return s >= 200 && s <= 599 ? s : 0;
}

static bool is_store_code(int rc)
{
	switch (rc) {
	case 0: case BM_ENOTFOUND: case BM_ECONFLICT: case BM_ECHANGED: case BM_EAUTH:
	case BM_EHTTP: case BM_ECHECKSUM: case BM_EFORMAT:
		return true;
	}
	return false;
}

static void check_message(const char *what, const char *msg, const char *url)
{
	fuzz_check_message(what, msg);
	for (const char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			fuzz_fail("%s: the message has control character 0x%02x: '%s'", what,
				  (unsigned char)*p, msg);
	if (strstr(msg, url) == NULL)
		fuzz_fail("%s: the message does not name the URL %s: '%s'", what, url, msg);
}

/* ---- the sink: bytes arrive in order, never more than asked ------------------------- */

struct sink {
	uint8_t buf[8192];
	size_t cap, len;
};

static int sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct sink *s = arg;

	if (off == 0)
		s->len = 0;
	if (off != s->len)
		fuzz_fail("the body's bytes came at offset %llu, after %zu bytes", (unsigned long long)off, s->len);
	if (len > s->cap - s->len)
		fuzz_fail("the store gave %zu bytes past the %zu asked for", s->len + len - s->cap, s->cap);
	memcpy(s->buf + s->len, data, len);
	s->len += len;
	return 0;
}

/* ---- the operations -------------------------------------------------------------------- */

static int do_store(enum op op, struct bm_store *st, char *msg, size_t n, struct sink *sk)
{
	static const struct bm_version pin = { .etag = "\"v1\"", .size = 1000 };
	struct bm_get g = { .sink = sink, .sink_arg = sk };
	struct bm_version v;
	struct bm_put put = { .cond = BM_PUT_ANY };
	struct bm_list page;
	int rc;

	sk->len = 0;  /* a body that never comes leaves nothing from the last input */
	switch (op) {
	case OP_GET:
		g.max = sk->cap = 4096;
		rc = bm_store_get(st, "obj", &g, msg, n);
		if (rc == 0 && (g.got != sk->len || g.got > 4096))
			fuzz_fail("GET: %zu bytes reported, %zu delivered, 4096 at most", g.got, sk->len);
		return rc;
	case OP_GET_EXACT:
		g.max = sk->cap = 64;
		g.exact = true;
		rc = bm_store_get(st, "obj", &g, msg, n);
		if (rc == 0 && (g.got != 64 || sk->len != 64))
			fuzz_fail("GET of exactly 64 bytes succeeded with %zu", sk->len);
		return rc;
	case OP_GET_RANGE:
	case OP_GET_PINNED:
		g.range = true;
		g.off = op == OP_GET_RANGE ? 100 : 0;
		g.len = sk->cap = op == OP_GET_RANGE ? 64 : 16;
		g.pin = op == OP_GET_PINNED ? &pin : NULL;
		rc = bm_store_get(st, "obj", &g, msg, n);
		if (rc == 0 && (g.got != g.len || sk->len != g.len))
			fuzz_fail("a range of %zu bytes succeeded with %zu", g.len, sk->len);
		if (rc == 0 && g.pin && g.ver.etag[0] && !bm_etag_same(g.ver.etag, pin.etag))
			fuzz_fail("a read pinned to ETag %s succeeded on ETag %s", pin.etag, g.ver.etag);
		if (rc == BM_ECHANGED && !g.pin)
			fuzz_fail("BM_ECHANGED from a read that pinned no version");
		return rc;
	case OP_HEAD:
		return bm_store_head(st, "obj", &v, msg, n);
	case OP_PUT:
	case OP_PUT_NEW:
	case OP_PUT_SWAP:
		put.cond = op == OP_PUT ? BM_PUT_ANY : op == OP_PUT_NEW ? BM_PUT_IF_NONE : BM_PUT_IF_MATCH;
		put.etag = op == OP_PUT_SWAP ? "\"v1\"" : NULL;
		put.was = op == OP_PUT_SWAP ? "old bytes" : NULL;
		put.was_len = op == OP_PUT_SWAP ? 9 : 0;
		put.swap = op != OP_PUT;
		/* As a commit does: a HEAD first (which tells what the server
		 * is: an Apache swaps under a lock), then the PUT. */
		if (put.swap)
			bm_store_head(st, "gen/1.json", &v, msg, n);
		/* A key in a collection: WebDAV servers get MKCOLs first. */
		rc = bm_store_put(st, "gen/1.json", "new bytes", 9, &put, &v, msg, n);
		if (rc == BM_ECONFLICT && op == OP_PUT && status_of(other_resp, other_len) != 0 &&
		    status_of(other_resp, other_len) != 412)
			fuzz_fail("BM_ECONFLICT from an unconditional PUT answered %ld",
				  status_of(other_resp, other_len));
		return rc;
	case OP_DELETE:
		return bm_store_delete(st, "obj", msg, n);
	case OP_LIST:
		if ((rc = bm_store_head(st, "obj", &v, msg, n)) < 0)
			return rc;
		if (!(bm_store_caps(st) & BM_CAP_LIST))
			return 0;
		rc = bm_store_list(st, "gen/", NULL, &page, msg, n);
		for (size_t i = 0; rc == 0 && i < page.n; i++)
			if (strncmp(page.entries[i].key, "gen/", 4) != 0)
				fuzz_fail("a listing of prefix gen/ named key '%s'", page.entries[i].key);
		if (rc == 0)
			bm_list_free(&page);
		return rc;
	default:
		return 0;
	}
}

static void run_store_op(enum op op)
{
	struct bm_store_opts o = { .connect_timeout_ms = 2000, .timeout_ms = 1000, .retry_base_ms = 1,
				   .retries = 0, .connections = 1 };
	static struct sink sk;
	struct bm_store *st;
	char msg[1024] = "", url[128];
	long status = status_of(other_resp, other_len);

	snprintf(url, sizeof(url), "%s/ds", base);
	if (bm_store_open(&st, url, &o, msg, sizeof(msg)) < 0)
		fuzz_fail("bm_store_open(%s): %s", url, msg);
	pthread_mutex_lock(&mu);
	requests = 0;
	pthread_mutex_unlock(&mu);
	int rc = do_store(op, st, msg, sizeof(msg), &sk);
	pthread_mutex_lock(&mu);
	unsigned nreq = requests;
	pthread_mutex_unlock(&mu);
	bm_store_close(st);

	if (!is_store_code(rc))
		fuzz_fail("operation %d returned %d, not a store code", (int)op, rc);
	if (rc < 0)
		check_message("the store", msg, url);
	if ((op == OP_GET || op == OP_GET_EXACT || op == OP_GET_RANGE || op == OP_GET_PINNED ||
	     op == OP_HEAD || op == OP_DELETE) && nreq > 1)
		fuzz_fail("operation %d made %u requests with no retries allowed", (int)op, nreq);
	if (status == 0)
		return;
	bool success = op == OP_GET_RANGE || op == OP_GET_PINNED ? status == 206 :
		       op == OP_GET || op == OP_GET_EXACT || op == OP_HEAD || op == OP_LIST ? status == 200 :
		       op == OP_DELETE ? status == 200 || status == 202 || status == 204 :
		       status == 200 || status == 201 || status == 204;
	if (rc == 0 && !success)
		fuzz_fail("operation %d succeeded on HTTP %ld", (int)op, status);
	if (rc == BM_ENOTFOUND && status != 404 && status != 410)
		fuzz_fail("BM_ENOTFOUND from HTTP %ld", status);
	if (rc == BM_EAUTH && status != 401 && status != 403)
		fuzz_fail("BM_EAUTH from HTTP %ld", status);
	if ((status == 401 || status == 403) && rc != BM_EAUTH && rc != BM_EFORMAT && rc != BM_EHTTP)
		fuzz_fail("HTTP %ld gave %d, not BM_EAUTH", status, rc);
	if ((status == 404 || status == 410) && rc == 0)
		fuzz_fail("HTTP %ld gave success", status);
}

/* bm_open + bm_read: what a read returns matches the block's checksum. */
static void run_dataset(void)
{
	struct bm_options o;
	bm_dataset *ds = NULL;
	static uint8_t buf[8192];
	char url[128], sum[BM_SUM_HEX + 1], got[BM_SUM_HEX + 1];

	if (bm_options_init(&o) < 0)
		fuzz_fail("bm_options_init: %s", bm_last_error(NULL));
	o.retries = 0;
	o.connections = 1;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = 1000;
	o.cache_bytes = 1 << 20;
	o.spare_bytes = 0;
	o.readahead_bytes = 0;
	o.wcfs = "off";
	snprintf(url, sizeof(url), "%s/ds", base);
	int rc = bm_open(&ds, url, &o);
	if (rc < 0) {
		if (ds != NULL)
			fuzz_fail("bm_open failed (%d) but left a dataset", rc);
		if (!is_store_code(rc) && rc != BM_EINVAL)
			fuzz_fail("bm_open returned %d", rc);
		check_message("bm_open", bm_last_error(NULL), url);
		return;
	}
	int64_t n = bm_read(ds, 0, buf, sizeof(buf));
	if (n < 0) {
		if (!is_store_code((int)n))
			fuzz_fail("bm_read returned %lld", (long long)n);
		check_message("bm_read", bm_last_error(ds), url);
	} else if ((uint64_t)n > bm_size(ds) || (uint64_t)n > sizeof(buf)) {
		fuzz_fail("bm_read returned %lld bytes of a %llu-byte dataset", (long long)n,
			  (unsigned long long)bm_size(ds));
	} else if (!bm_is_flat(ds) && bm_block_sum(ds, 0, sum, sizeof(sum)) == 1 &&
		   bm_blksize(ds) <= (size_t)n) {
		/* A whole stored block came back: its bytes are the checksummed ones. */
		bm_sum_hex(buf, bm_blksize(ds), got);
		if (strcmp(sum, got) != 0)
			fuzz_fail("bm_read gave block 0 with checksum %s, the manifest says %s", got, sum);
	}
	bm_close(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool started;

	if (!started) {
		start_server();
		setenv("BLKMAP_WCFS", "off", 1);
		started = true;
	}
	if (size < 1)
		return 0;
	enum op op = (enum op)(data[0] % OP_COUNT);
	const uint8_t *rest = data + 1;
	size_t rest_len = size - 1;

	pthread_mutex_lock(&mu);
	manifest_resp = other_resp = rest;
	manifest_len = other_len = rest_len;
	if (op == OP_DATASET) {
		const uint8_t *split = memmem(rest, rest_len, SPLIT, strlen(SPLIT));
		if (split != NULL) {
			manifest_len = (size_t)(split - rest);
			other_resp = split + strlen(SPLIT);
			other_len = rest_len - manifest_len - strlen(SPLIT);
		}
	}
	pthread_mutex_unlock(&mu);

	if (op == OP_DATASET)
		run_dataset();
	else
		run_store_op(op);

	/* No request of this input may read the next input's bytes. */
	pthread_mutex_lock(&mu);
	manifest_resp = other_resp = (const uint8_t *)"";
	manifest_len = other_len = 0;
	pthread_mutex_unlock(&mu);
	return 0;
}
