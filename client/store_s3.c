/* store_s3.c — the store backend for s3://BUCKET[/PREFIX] URLs: AWS S3 and
 * S3-compatible servers (Ceph RGW, MinIO).  A key is the object
 * "PREFIX/<key>" in BUCKET ("" is the object PREFIX itself: a flat object).
 * Requests are signed by libcurl (SigV4, aws.h's credentials; unsigned when
 * there are none); listing is ListObjectsV2, page by page (parsed, like
 * the <Code> of an error answer, by store_list.c).
 *
 * Guarantees: S3's conditional writes (If-None-Match: *, If-Match) and its
 * ETags (an MD5 of the bytes for a single PUT: strong).  If-Match on a PUT
 * is sent as the ETag was received, quoted; RGW 16.2 compares it without
 * its quotes and answers 412 to the quoted form: a 412 whose object still
 * has the ETag asked for is that, and the put is sent again unquoted (and
 * unquoted from then on).  A 5xx to a conditional PUT is retried like any
 * other; a 412 after a retry may be our own write (store.h); a PUT that
 * still fails after every retry may have been applied by one of its tries:
 * the object is read back (bm_store_read_back).
 * Owns: struct store_s3 (the HTTP pool, the configuration, the learned
 * If-Match spelling).  Locking: none beyond the pool's; the spelling is an
 * atomic flag.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws.h"
#include "store.h"

#define LIST_PAGE_MAX ((size_t)16 << 20) /* a bigger page of 1000 keys is refused */

struct store_s3 {
	struct bm_store s;         /* first: the interface */
	struct bm_http *http;
	struct bm_aws aws;
	char *bucket;
	char *prefix;              /* "" or "a/b" (no leading or trailing '/') */
	char *token_header;        /* "x-amz-security-token: ..." or NULL */
	char *sigv4;               /* "aws:amz:REGION:s3", NULL: unsigned */
	char *userpwd;             /* "KEY:SECRET" for libcurl, or NULL */
	char who[768];             /* bm_aws_describe: named in 401/403 messages */
	atomic_bool if_match_unquoted; /* learned: the server wants If-Match without quotes */
};

static struct store_s3 *s3_of(struct bm_store *s)
{
	return (struct store_s3 *)s;
}

/* The object name of key: "PREFIX/key", "key" with no prefix, PREFIX for
 * "" (malloc'd; NULL when out of memory). */
static char *object_key(const struct store_s3 *h, const char *key)
{
	size_t n = strlen(h->prefix) + strlen(key) + 2;
	char *k = malloc(n);

	if (k == NULL)
		return NULL;
	if (h->prefix[0] && key[0])
		snprintf(k, n, "%s/%s", h->prefix, key);
	else
		snprintf(k, n, "%s", h->prefix[0] ? h->prefix : key);
	return k;
}

/* The URL of key's object; NULL when out of memory, or for "" without a
 * prefix (the bucket itself is no object: *bucket set). */
static char *key_url(const struct store_s3 *h, const char *key, const char *query)
{
	char *k, *u;

	if (!h->prefix[0] && !key[0])
		return NULL;
	k = object_key(h, key);
	if (k == NULL)
		return NULL;
	u = bm_s3_url(&h->aws, h->bucket, k, query);
	free(k);
	return u;
}

/* The headers every request carries: the payload hash (RGW refuses a
 * signed request without it; the body is not hashed: UNSIGNED-PAYLOAD) and
 * the session token. */
static void sign_headers(const struct store_s3 *h, struct bm_req *r)
{
	int i = 0;

	if (h->aws.access_key == NULL)
		return;
	r->headers[i++] = "x-amz-content-sha256: UNSIGNED-PAYLOAD";
	if (h->token_header)
		r->headers[i++] = h->token_header;
}

/* The message for a status that is not the one expected. */
static int status_error(const struct store_s3 *h, const struct bm_req *r, char *msg, size_t n)
{
	char code[64];

	bm_s3_error_code(r->errbody, strnlen(r->errbody, sizeof(r->errbody)), code, sizeof(code));
	if (r->status == 401 || r->status == 403)
		bm_fmt(msg, n, "HTTP %ld%s%s (%s)", r->status, code[0] ? " " : "", code, h->who);
	else if (r->status == 412)
		bm_fmt(msg, n, "precondition failed (HTTP 412)");
	else
		bm_fmt(msg, n, "HTTP %ld%s%s", r->status, code[0] ? " " : "", code);
	return bm_store_status_error(r->status);
}

/* A failure's message naming the object as the user does
 * (s3://BUCKET/KEY) rather than by the endpoint's URL: "GET <url>: ..."
 * becomes "GET <name>: ...".  name NULL: left as it is. */
static void name_in_msg(const struct bm_req *r, const char *name, int rc, char *msg, size_t n)
{
	size_t ml = strlen(r->method), ul = strlen(r->url);

	if (rc != 0 && name && strncmp(msg, r->method, ml) == 0 && msg[ml] == ' ' &&
	    strncmp(msg + ml + 1, r->url, ul) == 0) {
		char *rest = strdup(msg + ml + 1 + ul);
		if (rest) {
			bm_fmt(msg, n, "%s %s%s", r->method, name, rest);
			free(rest);
		}
	}
}

/* bm_http_do, with a failure's message naming the object (name_in_msg). */
static int s3_do(struct store_s3 *h, struct bm_req *r, const char *name, bm_check_fn check,
		 void *arg, char *msg, size_t n)
{
	int rc = bm_http_do(h->http, r, check, arg, msg, n, h->s.retries_counter);

	name_in_msg(r, name, rc, msg, n);
	return rc;
}

/* ---- get ----------------------------------------------------------------------- */

struct get_check {
	struct store_s3 *h;
	struct bm_get *g;
};

static int check_get(struct bm_req *r, void *arg, char *msg, size_t n)
{
	struct get_check *c = arg;
	struct bm_get *g = c->g;
	const struct bm_version *pin = g->pin;

	if (pin && (r->status == 412 || (pin->etag[0] && r->etag[0] && strcmp(r->etag, pin->etag)))) {
		bm_fmt(msg, n, "the object changed on the server (ETag %s, was %s)",
		       r->etag[0] ? r->etag : "?", pin->etag);
		return BM_ECHANGED;
	}
	if (g->range && r->status != 200 && r->status != 206 && r->status != 416)
		return status_error(c->h, r, msg, n);
	if (g->range) {
		int rc = bm_store_check_range(g, r->status, r->content_range, r->got, msg, n);
		if (rc < 0)
			return rc;
	} else if (r->status != 200) {
		return status_error(c->h, r, msg, n);
	} else if (g->exact && r->got != g->max) {
		bm_fmt(msg, n, "short body: %zu of %zu bytes", r->got, g->max);
		return BM_EHTTP; /* cut off: retried */
	}
	bm_version_of(r, &g->ver);
	g->got = r->got;
	return g->verify ? g->verify(g->sink_arg, msg, n) : 0;
}

/* The request of get g at url (with its check c). */
static void get_request(struct store_s3 *h, const char *url, struct bm_get *g, struct bm_req *r,
			struct get_check *c)
{
	*r = (struct bm_req){ .method = "GET", .url = url, .sink = g->sink, .sink_arg = g->sink_arg,
			      .cancel = g->cancel, .close = g->lone };
	*c = (struct get_check){ h, g };
	sign_headers(h, r);
	r->cap = g->range ? g->len : g->max;
	if (g->range) {
		r->has_range = true;
		r->range_start = g->off;
		r->range_end = g->off + g->len - 1;
	}
	if (g->pin && g->pin->etag[0])
		r->if_match = g->pin->etag; /* on a GET, RGW and S3 take it quoted */
}

static int s3_get_url(struct store_s3 *h, const char *url, const char *name, struct bm_get *g,
		      char *msg, size_t n)
{
	struct bm_req r;
	struct get_check c;

	get_request(h, url, g, &r, &c);
	return s3_do(h, &r, name, check_get, &c, msg, n);
}

/* NULL url: out of memory, or the bucket itself was asked for. */
static int no_url(const struct store_s3 *h, const char *key, char *msg, size_t n)
{
	if (!h->prefix[0] && !key[0]) {
		bm_fmt(msg, n, "%s: a bucket, not an object (no manifest.json in it)", h->s.url);
		return BM_ENOTFOUND;
	}
	bm_fmt(msg, n, "out of memory");
	return BM_ENOMEM;
}

static int s3_get(struct bm_store *s, const char *key, struct bm_get *g, char *msg, size_t n)
{
	struct store_s3 *h = s3_of(s);
	char *url = key_url(h, key, NULL);
	int rc;

	if (url == NULL)
		return no_url(h, key, msg, n);
	char *name = bm_store_name(s, key);
	rc = s3_get_url(h, url, name, g, msg, n);
	free(name);
	free(url);
	return rc;
}

static void s3_get_many(struct bm_store *s, struct bm_get_job *jobs, int n)
{
	struct store_s3 *h = s3_of(s);
	struct bm_req r[BM_HTTP_JOBS_MAX];
	struct get_check c[BM_HTTP_JOBS_MAX];
	struct bm_http_job hj[BM_HTTP_JOBS_MAX];
	char *url[BM_HTTP_JOBS_MAX], *name[BM_HTTP_JOBS_MAX];
	int k = 0, at[BM_HTTP_JOBS_MAX];

	/* Those with no URL (the bucket itself) answered at once. */
	for (int i = 0; i < n; i++) {
		url[i] = key_url(h, jobs[i].key, NULL);
		name[i] = bm_store_name(s, jobs[i].key);
		if (url[i] == NULL) {
			jobs[i].rc = no_url(h, jobs[i].key, jobs[i].msg, jobs[i].n);
			continue;
		}
		get_request(h, url[i], jobs[i].g, &r[k], &c[k]);
		hj[k] = (struct bm_http_job){ &r[k], check_get, &c[k], jobs[i].msg, jobs[i].n, s->retries_counter, 0 };
		at[k++] = i;
	}
	bm_http_do_all(h->http, hj, k);
	for (int j = 0; j < k; j++) {
		int i = at[j];
		jobs[i].rc = hj[j].rc;
		name_in_msg(&r[j], name[i], hj[j].rc, jobs[i].msg, jobs[i].n);
	}
	for (int i = 0; i < n; i++) {
		free(url[i]);
		free(name[i]);
	}
}

/* A get of a flow (bm_store_flow): its request, check, URL and name. */
struct flow_get {
	struct bm_req r;
	struct get_check c;
	char *url, *name;
};

static struct bm_http *s3_pool(struct bm_store *s)
{
	return s3_of(s)->http;
}

static int s3_get_begin(struct bm_store *s, struct bm_store_flow_get *x)
{
	struct store_s3 *h = s3_of(s);
	struct flow_get *fg = calloc(1, sizeof(*fg));

	if (fg == NULL) {
		bm_fmt(x->msg, x->n, "out of memory");
		return BM_ENOMEM;
	}
	if ((fg->url = key_url(h, x->key, NULL)) == NULL) {
		free(fg);
		return no_url(h, x->key, x->msg, x->n);
	}
	fg->name = bm_store_name(s, x->key);
	get_request(h, fg->url, x->g, &fg->r, &fg->c);
	x->be = fg;
	x->j = (struct bm_http_job){ &fg->r, check_get, &fg->c, x->msg, x->n, s->retries_counter, 0 };
	return 0;
}

static void s3_get_end(struct bm_store *s, struct bm_store_flow_get *x)
{
	struct flow_get *fg = x->be;

	(void)s;
	name_in_msg(&fg->r, fg->name, x->rc, x->msg, x->n);
	free(fg->url);
	free(fg->name);
	free(fg);
	x->be = NULL;
}

/* ---- head, delete, put ----------------------------------------------------------------- */

struct status_check {
	struct store_s3 *h;
	long ok1, ok2;             /* the statuses that mean success */
};

static int check_status(struct bm_req *r, void *arg, char *msg, size_t n)
{
	struct status_check *c = arg;

	if (r->status == c->ok1 || r->status == c->ok2)
		return 0;
	return status_error(c->h, r, msg, n);
}

static int s3_head(struct bm_store *s, const char *key, struct bm_version *v, char *msg, size_t n)
{
	struct store_s3 *h = s3_of(s);
	struct bm_req r = { .method = "HEAD" };
	struct status_check c = { h, 200, 200 };
	char *url = key_url(h, key, NULL);
	int rc;

	if (url == NULL)
		return no_url(h, key, msg, n);
	r.url = url;
	sign_headers(h, &r);
	char *name = bm_store_name(s, key);
	rc = s3_do(h, &r, name, check_status, &c, msg, n);
	free(name);
	if (rc == 0)
		bm_version_of(&r, v);
	free(url);
	return rc;
}

static int s3_del(struct bm_store *s, const char *key, char *msg, size_t n)
{
	struct store_s3 *h = s3_of(s);
	struct bm_req r = { .method = "DELETE" };
	struct status_check c = { h, 204, 200 };
	char *url = key_url(h, key, NULL);
	int rc;

	if (url == NULL)
		return no_url(h, key, msg, n);
	r.url = url;
	sign_headers(h, &r);
	/* S3 answers 204 to the DELETE of a missing key too: ask first. */
	struct bm_version v;
	rc = s3_head(s, key, &v, msg, n);
	if (rc == 0) {
		char *name = bm_store_name(s, key);
		rc = s3_do(h, &r, name, check_status, &c, msg, n);
		free(name);
	}
	free(url);
	return rc;
}

/* "abc" for "\"abc\"" into out; the ETag itself if it is not quoted. */
static void unquote(const char *etag, char *out, size_t n)
{
	size_t len = strlen(etag);

	if (len >= 2 && etag[0] == '"' && etag[len - 1] == '"')
		snprintf(out, n, "%.*s", (int)(len - 2), etag + 1);
	else
		snprintf(out, n, "%s", etag);
}

static int put_once(struct store_s3 *h, const char *url, const char *name, const void *body,
		    size_t len, const struct bm_put *p, const char *if_match, struct bm_req *r,
		    char *msg, size_t n)
{
	struct status_check c = { h, 200, 200 };

	*r = (struct bm_req){ .method = "PUT", .url = url, .body = body, .body_len = len,
			      .discard = true };
	sign_headers(h, r);
	r->if_none_match_any = p->cond == BM_PUT_IF_NONE;
	r->if_match = if_match;
	return s3_do(h, r, name, check_status, &c, msg, n);
}

static int s3_put(struct bm_store *s, const char *key, const void *body, size_t len,
		  const struct bm_put *p, struct bm_version *v, char *msg, size_t n)
{
	struct store_s3 *h = s3_of(s);
	char *url = key_url(h, key, NULL);
	char bare[BM_ETAG_SIZE];
	const char *im = NULL;
	struct bm_req r;
	int rc;

	if (url == NULL)
		return no_url(h, key, msg, n);
	if (p->cond == BM_PUT_IF_MATCH) {
		unquote(p->etag, bare, sizeof(bare));
		im = atomic_load(&h->if_match_unquoted) ? bare : p->etag;
	}
	char *name = bm_store_name(s, key);
	rc = put_once(h, url, name, body, len, p, im, &r, msg, n);
	if (rc == BM_ECONFLICT && p->cond == BM_PUT_IF_MATCH && im == p->etag &&
	    strcmp(bare, p->etag) != 0) {
		/* 412 to the quoted ETag: is the object still that version?
		 * Then the server compares without quotes (RGW 16.2). */
		struct bm_version now;
		char why[512];
		if (s3_head(s, key, &now, why, sizeof(why)) == 0 && strcmp(now.etag, p->etag) == 0) {
			atomic_store(&h->if_match_unquoted, true);
			rc = put_once(h, url, name, body, len, p, bare, &r, msg, n);
		}
	}
	if (rc == 0)
		snprintf(v->etag, sizeof(v->etag), "%s", r.etag);
	else if (rc == BM_EHTTP && p->cond != BM_PUT_ANY)
		rc = bm_store_read_back(s, key, body, len, p, v, rc, msg, n);
	free(name);
	free(url);
	return rc;
}

/* ---- list: ListObjectsV2 ------------------------------------------------------------------- */

static int s3_list(struct bm_store *s, const char *prefix, const char *token, struct bm_list *page,
		   char *msg, size_t n)
{
	struct store_s3 *h = s3_of(s);
	struct bm_body b = { 0 };
	struct bm_get g = { .max = LIST_PAGE_MAX, .sink = bm_body_sink, .sink_arg = &b };
	char *base = NULL, *full = NULL, *query = NULL, *url = NULL;
	int rc = BM_ENOMEM;

	if (asprintf(&base, "%s%s", h->prefix, h->prefix[0] ? "/" : "") < 0) {
		base = NULL;
		goto out;
	}
	if (asprintf(&full, "%s%s", base, prefix) < 0) {
		full = NULL;
		goto out;
	}
	const char *kv[] = { "list-type", "2", "prefix", full, "continuation-token", token };
	query = bm_s3_query(kv, 3);
	if (query == NULL || (url = bm_s3_url(&h->aws, h->bucket, "", query)) == NULL)
		goto out;
	rc = s3_get_url(h, url, NULL, &g, msg, n);
	if (rc == 0) {
		rc = bm_list_parse_s3(b.p ? b.p : "", b.len, base, prefix, token, page, msg, n);
		if (rc < 0) {
			char why[512];
			bm_fmt(why, sizeof(why), "%s", msg);
			bm_fmt(msg, n, "GET %s: %s", url, why);
		}
	}
out:
	if (rc == BM_ENOMEM && url == NULL)
		bm_fmt(msg, n, "out of memory");
	free(b.p);
	free(base);
	free(full);
	free(query);
	free(url);
	return rc;
}

/* ---- opening -------------------------------------------------------------------------- */

static void s3_close(struct bm_store *s)
{
	struct store_s3 *h = s3_of(s);

	bm_http_free(h->http);
	bm_aws_free(&h->aws);
	free(h->bucket);
	free(h->prefix);
	free(h->token_header);
	free(h->sigv4);
	if (h->userpwd)
		explicit_bzero(h->userpwd, strlen(h->userpwd));
	free(h->userpwd);
	free(h->s.url);
	free(h);
}

static int s3_set_connections(struct bm_store *s, int n)
{
	return bm_http_set_connections(s3_of(s)->http, n);
}

static const struct bm_store_ops s3_ops = {
	.get = s3_get,
	.get_many = s3_get_many,
	.head = s3_head,
	.put = s3_put,
	.del = s3_del,
	.list = s3_list,
	.close = s3_close,
	.set_connections = s3_set_connections,
	.http = s3_pool,
	.get_begin = s3_get_begin,
	.get_end = s3_get_end,
};

int bm_store_s3_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o,
		     char *msg, size_t n)
{
	struct store_s3 *h;
	int rc;

	msg[0] = '\0';
	if (!bm_s3_is_url(url))
		return BM_EINVAL;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return BM_ENOMEM;
	rc = bm_s3_url_parse(url, &h->bucket, &h->prefix, msg, n);
	if (rc == 0)
		rc = bm_aws_load(&h->aws, msg, n);
	if (rc != 0) {
		free(h->bucket);
		free(h->prefix);
		free(h);
		return rc;
	}
	bm_aws_describe(&h->aws, h->who, sizeof(h->who));
	if (asprintf(&h->s.url, "s3://%s%s%s", h->bucket, h->prefix[0] ? "/" : "", h->prefix) < 0) {
		h->s.url = NULL;
		s3_close(&h->s);
		return BM_ENOMEM;
	}
	if (h->aws.session_token &&
	    asprintf(&h->token_header, "x-amz-security-token: %s", h->aws.session_token) < 0) {
		h->token_header = NULL;
		s3_close(&h->s);
		return BM_ENOMEM;
	}
	h->s.ops = &s3_ops;
	h->s.retries_counter = o->retries_counter;
	atomic_init(&h->s.caps, BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH | BM_CAP_STRONG_ETAG |
					BM_CAP_LIST);
	if (h->aws.access_key &&
	    (asprintf(&h->sigv4, "aws:amz:%s:s3", h->aws.region) < 0 ||
	     asprintf(&h->userpwd, "%s:%s", h->aws.access_key, h->aws.secret_key) < 0)) {
		h->sigv4 = h->userpwd = NULL;
		s3_close(&h->s);
		return BM_ENOMEM;
	}
	/* The pool keeps these pointers: they live as long as h. */
	struct bm_http_opts ho = {
		.connect_timeout_ms = o->connect_timeout_ms,
		.timeout_ms = o->timeout_ms,
		.retry_base_ms = o->retry_base_ms,
		.retries = o->retries,
		.connections = o->connections,
		.verbose = o->verbose,
		.aws_sigv4 = h->sigv4,
		.userpwd = h->userpwd,
		.ca_bundle = h->aws.ca_bundle ? h->aws.ca_bundle : getenv("CURL_CA_BUNDLE"),
	};
	rc = bm_http_new(&h->http, &ho);
	if (rc < 0) {
		s3_close(&h->s);
		return rc;
	}
	*sp = &h->s;
	return 0;
}
