/* store_http.c — the store backend for http:// and https:// URLs: plain
 * HTTP object servers (blkmap-server) and WebDAV servers (nginx's dav
 * module, Apache mod_dav_fs).  A key is the URL "<base>/<key>".
 *
 * What a server guarantees is learned from the Server header of its
 * answers (store.h's BM_CAP_*; the table is docs/FORMAT.md's "Servers").
 * WebDAV servers create no parent collections on PUT (Apache answers 409,
 * nginx 500): the collections are made with MKCOL, top down, once each,
 * and remembered, before the first PUT into them (on any server that
 * answers a PUT with 409, after it).
 * Apache checks If-Match and If-None-Match when a PUT starts, not when
 * its body is stored, its ETags are weak for a second after a change,
 * and its WebDAV locks are not exclusive under races: a compare-and-swap
 * there runs under a claim made with MKCOL (put_claimed).  A conditional
 * PUT failing after every retry
 * is read back (bm_store_read_back): it may have been applied.
 * Listing: blkmap-server's JSON, or PROPFIND
 * (Apache) one collection at a time; the answers are parsed by
 * store_list.c.
 * Owns: struct store_http (the HTTP pool, the collections made).
 * Locking: h->mu guards the list of collections made; never held across a
 * request.  h->mkcol_mu is held while collections are made (so that the
 * parallel uploads of a new dataset make each once), never with h->mu
 * nor any other lock.  The pool has its own lock (http.c).
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "store.h"

#define LIST_MAX ((size_t)64 << 20) /* a bigger listing is refused */

struct store_http {
	struct bm_store s;         /* first: the interface */
	struct bm_http *http;
	atomic_bool learned;       /* caps set from a Server header */
	atomic_bool claims;        /* swaps under a claim (Apache) */
	atomic_bool collections;   /* a WebDAV server: collections made first */
	pthread_mutex_t mu, mkcol_mu;
	char **colls;              /* collection URLs made or found (ending in '/') */
	size_t ncolls, capcolls;
};

static struct store_http *sh_of(struct bm_store *s)
{
	return (struct store_http *)s;
}

/* What the server guarantees, by its name.  An unknown server is taken
 * at the word of RFC 9110 (conditional PUT honoured), with ETags that may
 * be weak. */
static void learn(struct store_http *h, const struct bm_req *r)
{
	unsigned caps = BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH;

	if (r->server[0] == '\0' || atomic_load(&h->learned))
		return;
	if (strncmp(r->server, "blkmap-server", 13) == 0)
		caps = BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH | BM_CAP_STRONG_ETAG | BM_CAP_LIST;
	else if (strncmp(r->server, "nginx", 5) == 0)
		caps = 0; /* If-Match and If-None-Match on PUT are ignored */
	else if (strncmp(r->server, "Apache", 6) == 0) {
		/* Swaps under a claim; weak ETags for a second; PROPFIND. */
		caps |= BM_CAP_LIST;
		atomic_store(&h->claims, true);
	}
	if (strncmp(r->server, "nginx", 5) == 0 || strncmp(r->server, "Apache", 6) == 0)
		atomic_store(&h->collections, true);
	atomic_store(&h->s.caps, caps);
	atomic_store(&h->learned, true);
}

static char *key_url(struct store_http *h, const char *key)
{
	return bm_store_name(&h->s, key);
}

/* ---- get ----------------------------------------------------------------------- */

struct get_check {
	struct store_http *h;
	struct bm_get *g;
};

/* An answer that names another version than the pinned one. */
static int check_pin(const struct bm_req *r, const struct bm_version *pin, char *msg, size_t n)
{
	/* Weakly compared: a server may send W/"x" for a second after a
	 * change and "x" afterwards for the same version (Apache). */
	if (r->status == 412 || (pin->etag[0] && r->etag[0] && !bm_etag_same(r->etag, pin->etag))) {
		bm_fmt(msg, n, "the object changed on the server (ETag %s, was %s)",
		       r->etag[0] ? r->etag : "?", pin->etag);
		return BM_ECHANGED;
	}
	if (r->status / 100 == 2 && pin->last_modified[0] && r->last_modified[0] &&
	    strcmp(r->last_modified, pin->last_modified) != 0) {
		bm_fmt(msg, n, "the object changed on the server (Last-Modified %s, was %s)",
		       r->last_modified, pin->last_modified);
		return BM_ECHANGED;
	}
	return 0;
}

/* nginx and Apache answer a HEAD or GET of a directory on their disk (a
 * collection: datasets below it, no object) with a permanent redirect to
 * the same path and '/': not found, as an object. */
static bool redirect_to_collection(const struct bm_req *r)
{
	const char *loc = r->header_value, *path = strstr(r->url, "://");
	size_t ll = strlen(loc), pl;

	path = path ? strchr(path + 3, '/') : NULL;
	if ((r->status != 301 && r->status != 308) || path == NULL || ll < 2 || loc[ll - 1] != '/')
		return false;
	pl = strlen(path);
	return ll - 1 >= pl && memcmp(loc + ll - 1 - pl, path, pl) == 0;
}

static int check_get(struct bm_req *r, void *arg, char *msg, size_t n)
{
	struct get_check *c = arg;
	struct bm_get *g = c->g;
	int rc;

	learn(c->h, r);
	if (g->pin && (rc = check_pin(r, g->pin, msg, n)) < 0)
		return rc;
	if (redirect_to_collection(r)) {
		/* A directory: no object there (as for a HEAD). */
		bm_fmt(msg, n, "a directory, not an object (HTTP %ld to %s)", r->status, r->header_value);
		return BM_ENOTFOUND;
	}
	if (g->range) {
		if ((rc = bm_store_check_range(g, r->status, r->content_range, r->got, msg, n)) < 0)
			return rc;
	} else if (r->status != 200) {
		bm_fmt(msg, n, "HTTP %ld", r->status);
		return bm_store_status_error(r->status);
	} else if (g->exact && r->got != g->max) {
		/* A cut-off body: retried. */
		bm_fmt(msg, n, "short body: %zu of %zu bytes", r->got, g->max);
		return BM_EHTTP;
	}
	bm_version_of(r, &g->ver);
	g->got = r->got;
	return g->verify ? g->verify(g->sink_arg, msg, n) : 0;
}

/* The request of get g of key (with its check c): the URL it names
 * (malloc'd; the caller frees it after the request), NULL when out of
 * memory. */
static char *get_request(struct store_http *h, const char *key, struct bm_get *g, struct bm_req *r,
			 struct get_check *c)
{
	char *url = key_url(h, key);

	*r = (struct bm_req){ .method = "GET", .url = url, .sink = g->sink, .sink_arg = g->sink_arg,
			      .want_header = "Location", .cancel = g->cancel, .close = g->lone };
	*c = (struct get_check){ h, g };
	r->cap = g->range ? g->len : g->max;
	if (g->range) {
		r->has_range = true;
		r->range_start = g->off;
		r->range_end = g->off + g->len - 1;
	}
	/* If-Match compares strongly: a weak ETag (W/"...") would never
	 * match, so it is only compared with the answer's. */
	if (g->pin && g->pin->etag[0] && !bm_etag_is_weak(g->pin->etag))
		r->if_match = g->pin->etag;
	return url;
}

static int http_get(struct bm_store *s, const char *key, struct bm_get *g, char *msg, size_t n)
{
	struct store_http *h = sh_of(s);
	struct bm_req r;
	struct get_check c;
	char *url = get_request(h, key, g, &r, &c);
	int rc;

	if (url == NULL)
		return BM_ENOMEM;
	rc = bm_http_do(h->http, &r, check_get, &c, msg, n, s->retries_counter);
	free(url);
	return rc;
}

static void http_get_many(struct bm_store *s, struct bm_get_job *jobs, int n)
{
	struct store_http *h = sh_of(s);
	struct bm_req r[BM_HTTP_JOBS_MAX];
	struct get_check c[BM_HTTP_JOBS_MAX];
	struct bm_http_job hj[BM_HTTP_JOBS_MAX];
	char *url[BM_HTTP_JOBS_MAX];
	bool ok = true;

	for (int i = 0; i < n; i++) {
		url[i] = get_request(h, jobs[i].key, jobs[i].g, &r[i], &c[i]);
		ok &= url[i] != NULL;
		hj[i] = (struct bm_http_job){ &r[i], check_get, &c[i], jobs[i].msg, jobs[i].n, s->retries_counter, 0 };
	}
	if (ok)
		bm_http_do_all(h->http, hj, n);
	for (int i = 0; i < n; i++) {
		jobs[i].rc = ok ? hj[i].rc : BM_ENOMEM;
		free(url[i]);
	}
}

/* A get of a flow (bm_store_flow): its request, check and URL. */
struct flow_get {
	struct bm_req r;
	struct get_check c;
	char *url;
};

static struct bm_http *http_pool(struct bm_store *s)
{
	return sh_of(s)->http;
}

static int http_get_begin(struct bm_store *s, struct bm_store_flow_get *x)
{
	struct flow_get *fg = malloc(sizeof(*fg));

	if (fg == NULL || (fg->url = get_request(sh_of(s), x->key, x->g, &fg->r, &fg->c)) == NULL) {
		free(fg);
		bm_fmt(x->msg, x->n, "out of memory");
		return BM_ENOMEM;
	}
	x->be = fg;
	x->j = (struct bm_http_job){ &fg->r, check_get, &fg->c, x->msg, x->n, s->retries_counter, 0 };
	return 0;
}

static void http_get_end(struct bm_store *s, struct bm_store_flow_get *x)
{
	struct flow_get *fg = x->be;

	(void)s;
	free(fg->url);
	free(fg);
	x->be = NULL;
}

/* ---- head, delete ------------------------------------------------------------------ */

struct status_check {
	struct store_http *h;
	long ok1, ok2, ok3;        /* the statuses that mean success */
};

static int check_status(struct bm_req *r, void *arg, char *msg, size_t n)
{
	struct status_check *c = arg;

	learn(c->h, r);
	if (r->status == c->ok1 || r->status == c->ok2 || r->status == c->ok3)
		return 0;
	if (r->status == 423 || r->status == 207) {
		/* A WebDAV lock held by another client (Apache answers 207
		 * with a 423 inside for a locked parent): retried, it may be
		 * short. */
		bm_fmt(msg, n, "locked by another writer (HTTP %ld)", r->status);
		return BM_EHTTP;
	}
	if (r->status == 412)
		bm_fmt(msg, n, "precondition failed (HTTP 412)");
	else
		bm_fmt(msg, n, "HTTP %ld", r->status);
	return bm_store_status_error(r->status);
}

static int check_head(struct bm_req *r, void *arg, char *msg, size_t n)
{
	if (redirect_to_collection(r)) {
		bm_fmt(msg, n, "a directory, not an object (HTTP %ld to %s)", r->status, r->header_value);
		return BM_ENOTFOUND;
	}
	return check_status(r, arg, msg, n);
}

static int http_head(struct bm_store *s, const char *key, struct bm_version *v, char *msg, size_t n)
{
	struct store_http *h = sh_of(s);
	struct bm_req r = { .method = "HEAD", .want_header = "Location" };
	struct status_check c = { h, 200, 200, 200 };
	char *url = key_url(h, key);
	int rc;

	if (url == NULL)
		return BM_ENOMEM;
	r.url = url;
	rc = bm_http_do(h->http, &r, check_head, &c, msg, n, s->retries_counter);
	if (rc == 0)
		bm_version_of(&r, v);
	free(url);
	return rc;
}

static int http_del(struct bm_store *s, const char *key, char *msg, size_t n)
{
	struct store_http *h = sh_of(s);
	struct bm_req r = { .method = "DELETE" };
	struct status_check c = { h, 200, 202, 204 };
	char *url = key_url(h, key);
	int rc;

	if (url == NULL)
		return BM_ENOMEM;
	r.url = url;
	rc = bm_http_do(h->http, &r, check_status, &c, msg, n, s->retries_counter);
	free(url);
	return rc;
}

/* ---- put, and the collections of WebDAV servers ------------------------------------------ */

static bool coll_known(struct store_http *h, const char *coll)
{
	bool known = false;

	pthread_mutex_lock(&h->mu);
	for (size_t i = 0; i < h->ncolls && !known; i++)
		known = strcmp(h->colls[i], coll) == 0;
	pthread_mutex_unlock(&h->mu);
	return known;
}

static void coll_remember(struct store_http *h, const char *coll)
{
	pthread_mutex_lock(&h->mu);
	if (h->ncolls == h->capcolls) {
		size_t ncap = h->capcolls ? h->capcolls * 2 : 16;
		char **nc = realloc(h->colls, ncap * sizeof(*nc));
		if (nc != NULL) {
			h->colls = nc;
			h->capcolls = ncap;
		}
	}
	if (h->ncolls < h->capcolls && (h->colls[h->ncolls] = strdup(coll)) != NULL)
		h->ncolls++; /* else it is made again next time: harmless */
	pthread_mutex_unlock(&h->mu);
}

static void coll_forget(struct store_http *h)
{
	pthread_mutex_lock(&h->mu);
	while (h->ncolls > 0)
		free(h->colls[--h->ncolls]);
	pthread_mutex_unlock(&h->mu);
}

/* Makes every collection above url (top down) that is not known to exist:
 * MKCOL answers 201 (made) or 405 (there already, or MKCOL not allowed:
 * the PUT says which).  A 403 may be a MKCOL that raced another's: asked
 * once more.  0, or a BM_E* code. */
static int make_parents(struct store_http *h, const char *url, char *msg, size_t n)
{
	const char *path = strstr(url, "://");
	char *coll = strdup(url);
	int rc = 0;

	if (path == NULL || coll == NULL || (path = strchr(path + 3, '/')) == NULL) {
		free(coll);
		return coll == NULL ? BM_ENOMEM : BM_EINVAL;
	}
	pthread_mutex_lock(&h->mkcol_mu);
	for (const char *p = strchr(path + 1, '/'); p != NULL && rc == 0; p = strchr(p + 1, '/')) {
		size_t len = (size_t)(p - url) + 1; /* through this '/' */
		memcpy(coll, url, len);
		coll[len] = '\0';
		if (coll_known(h, coll))
			continue;
		struct bm_req r = { .method = "MKCOL", .url = coll };
		struct status_check c = { h, 201, 405, 200 };
		rc = bm_http_do(h->http, &r, check_status, &c, msg, n, h->s.retries_counter);
		if (rc < 0 && r.status == 403)
			rc = bm_http_do(h->http, &r, check_status, &c, msg, n, h->s.retries_counter);
		if (rc == 0)
			coll_remember(h, coll);
	}
	pthread_mutex_unlock(&h->mkcol_mu);
	free(coll);
	return rc;
}

/* ---- a compare-and-swap by claims (Apache) ------------------------------------------------
 *
 * mod_dav_fs is no compare-and-swap by itself: it checks If-Match when a
 * PUT starts, not when the body is stored, and its lock database grants
 * two exclusive LOCKs of one resource to LOCK requests that race (8
 * concurrent LOCKs of one collection: two granted in 14 of 200 rounds
 * with the event MPM, 5 of 200 with prefork; the second grant's record
 * replaces the first's, whose UNLOCK then answers 400).  MKCOL is atomic:
 * mkdir(2) makes a collection once, and a racing MKCOL gets 403 (or 405
 * once it exists).  So a writer replacing version X of key first claims X
 * by making the collection
 *
 *     <key's collection>.blkmap-claim-<sum of X's bytes, or "new">-<k>/
 *
 * then checks that key still holds X, PUTs, and deletes its claim.  Each
 * version is replaced at most once, so a claim there already means
 * another writer is replacing X now: a conflict.  A writer that died
 * holding a claim holds the next ones up for CLAIM_STALE_S (by the
 * server's clock); then the next k is claimed.  A writer whose claim got
 * older than half of that before its PUT gives up (not applied), so a
 * claim passed over belongs to no one that will still write.  A claim is
 * kept (left to go stale) when the PUT's outcome is unknown: the PUT may
 * still land.
 */

#define CLAIM_STALE_S 60
#define CLAIM_TRIES 8

static const char propfind_mtime[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<D:propfind xmlns:D=\"DAV:\"><D:prop><D:getlastmodified/></D:prop></D:propfind>\n";

/* 201: the claim is ours (0); 403 or 405: someone else's (BM_ECONFLICT). */
static int check_claim(struct bm_req *r, void *arg, char *msg, size_t n)
{
	struct status_check *c = arg;

	learn(c->h, r);
	if (r->status == 201)
		return 0;
	if (r->status == 403 || r->status == 405) {
		bm_fmt(msg, n, "another writer is replacing this version now (HTTP %ld)", r->status);
		return BM_ECONFLICT;
	}
	bm_fmt(msg, n, "HTTP %ld", r->status);
	return bm_store_status_error(r->status);
}

/* The age of collection url in seconds by the server's clock (its
 * getlastmodified against the answer's Date): >= 0, or BM_ENOTFOUND when
 * it is gone, or another BM_E* code. */
static int claim_age(struct store_http *h, const char *url, double *age, char *msg, size_t n)
{
	struct bm_body b = { 0 };
	struct bm_req r = { .method = "PROPFIND", .url = url, .body = propfind_mtime,
			    .body_len = strlen(propfind_mtime),
			    .headers = { "Depth: 0", "Content-Type: application/xml" },
			    .want_header = "Date", .sink = bm_body_sink, .sink_arg = &b, .cap = 65536 };
	struct status_check c = { h, 207, 207, 207 };
	const char *v, *after;
	size_t vl;
	int rc = bm_http_do(h->http, &r, check_status, &c, msg, n, h->s.retries_counter);

	if (rc == 0) {
		char when[128] = "";
		if (b.p && bm_xml_find(b.p, b.p + b.len, "getlastmodified", &v, &vl, &after) && vl < sizeof(when))
			memcpy(when, v, vl), when[vl] = '\0';
		time_t made = when[0] ? curl_getdate(when, NULL) : -1, now = curl_getdate(r.header_value, NULL);
		if (made < 0 || now < 0) {
			bm_fmt(msg, n, "PROPFIND %s: no getlastmodified or Date to tell its age", url);
			rc = BM_EFORMAT;
		} else {
			*age = difftime(now, made);
		}
	}
	free(b.p);
	return rc;
}

/* Claims version p->was (or p->etag; "new" for a create) of key, whose
 * collection is coll: 0 with *claim (malloc'd URL) ours, BM_ECONFLICT when
 * another writer holds a live claim, or another error. */
static int claim_take(struct store_http *h, const char *coll, const struct bm_put *p, char **claim,
		      char *msg, size_t n)
{
	char sum[BM_SUM_HEX + 1] = "new";
	int rc = BM_ECONFLICT;

	*claim = NULL;
	if (p->cond == BM_PUT_IF_MATCH && p->was)
		bm_sum_hex(p->was, p->was_len, sum);
	else if (p->cond == BM_PUT_IF_MATCH) {
		const char *e = p->etag;
		bm_sum_hex(e + (bm_etag_is_weak(e) ? 2 : 0), strlen(e) - (bm_etag_is_weak(e) ? 2 : 0), sum);
	}
	for (int k = 0; k < CLAIM_TRIES; k++) {
		char *url = NULL;
		if (asprintf(&url, "%s.blkmap-claim-%s-%d/", coll, sum, k) < 0)
			return BM_ENOMEM;
		struct bm_req r = { .method = "MKCOL", .url = url };
		struct status_check c = { h, 201, 201, 201 };
		rc = bm_http_do(h->http, &r, check_claim, &c, msg, n, h->s.retries_counter);
		if (rc == 0) {
			*claim = url;
			return 0;
		}
		double age = 0;
		int arc = rc == BM_ECONFLICT ? claim_age(h, url, &age, msg, n) : rc;
		if (arc == BM_ENOTFOUND) {
			k--; /* deleted since: claimed again */
		} else if (arc < 0) {
			rc = arc;
		} else if (age < CLAIM_STALE_S) {
			bm_fmt(msg, n, "PUT %s: another writer is replacing this version (its claim %s is %.0f s old)",
			       coll, url, age);
			rc = BM_ECONFLICT;
		}
		free(url);
		if (arc < 0 && arc != BM_ENOTFOUND)
			return rc;
		if (arc == 0 && age < CLAIM_STALE_S)
			return rc;
	}
	bm_fmt(msg, n, "PUT %s: %d claims in a row are held by writers that died", coll, CLAIM_TRIES);
	return BM_EHTTP;
}

static void claim_drop(struct store_http *h, const char *claim)
{
	char msg[512];
	struct bm_req r = { .method = "DELETE", .url = claim };
	struct status_check c = { h, 200, 204, 404 };

	if (bm_http_do(h->http, &r, check_status, &c, msg, sizeof(msg), h->s.retries_counter) < 0)
		bm_log("warning: %s (the claim goes stale in %d s)", msg, CLAIM_STALE_S); /* msg names DELETE and the claim */
}

struct cmp_sink {
	const char *was;
	size_t len;
	bool differ;
};

static int cmp_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct cmp_sink *c = arg;

	if (off == 0)
		c->differ = false; /* a retry starts over */
	if (off + len > c->len || memcmp(c->was + off, data, len) != 0)
		c->differ = true;
	return 0;
}

/* Under the lock: does key still hold what p expects?  0 (and cur, the
 * version there), BM_ECONFLICT, or another error.  Equal strong ETags
 * tell; a weak one names only "this size, changed within this clock
 * tick", so the bytes decide. */
static int still_expected(struct store_http *h, const char *key, const struct bm_put *p,
			  struct bm_version *cur, char *msg, size_t n)
{
	char *url = key_url(h, key);
	int rc = http_head(&h->s, key, cur, msg, n);

	if (p->cond == BM_PUT_IF_NONE && rc == 0) {
		bm_fmt(msg, n, "PUT %s: an object is there already", url);
		rc = BM_ECONFLICT;
	} else if (p->cond == BM_PUT_IF_NONE && rc == BM_ENOTFOUND) {
		rc = 0;
	} else if (rc == BM_ENOTFOUND) {
		bm_fmt(msg, n, "PUT %s: the object replaced is gone", url);
		rc = BM_ECONFLICT;
	} else if (rc == 0 && !bm_etag_same(cur->etag, p->etag)) {
		bm_fmt(msg, n, "PUT %s: the object is another version (ETag %s, not %s)", url, cur->etag, p->etag);
		rc = BM_ECONFLICT;
	} else if (rc == 0 && (bm_etag_is_weak(cur->etag) || bm_etag_is_weak(p->etag)) && p->was) {
		struct cmp_sink cs = { p->was, p->was_len, false };
		struct bm_get g = { .max = BM_MANIFEST_MAX, .sink = cmp_sink, .sink_arg = &cs };
		rc = http_get(&h->s, key, &g, msg, n);
		if (rc == 0 && (cs.differ || g.got != p->was_len)) {
			bm_fmt(msg, n, "PUT %s: the object is another version (same weak ETag %s, other bytes)",
			       url, cur->etag);
			rc = BM_ECONFLICT;
		} else if (rc == BM_ENOTFOUND) {
			bm_fmt(msg, n, "PUT %s: the object replaced is gone", url);
			rc = BM_ECONFLICT;
		}
	}
	free(url);
	return rc;
}

/* The condition of p checked and the body written under a claim of the
 * version replaced: no other writer (claiming too) writes between the
 * check and the write. */
static int put_claimed(struct store_http *h, const char *key, const void *body, size_t len,
		       const struct bm_put *p, struct bm_version *v, char *msg, size_t n)
{
	char *url = key_url(h, key), *coll = NULL, *claim = NULL;
	struct bm_version cur;
	bool tried = false;
	int rc;

	if (url == NULL || (coll = strdup(url)) == NULL) {
		free(url);
		return BM_ENOMEM;
	}
	strrchr(coll, '/')[1] = '\0';
	rc = make_parents(h, url, msg, n);
	if (rc == 0)
		rc = claim_take(h, coll, p, &claim, msg, n);
	double claimed = bm_now();
	if (rc == 0)
		rc = still_expected(h, key, p, &cur, msg, n);
	if (rc == 0 && bm_now() - claimed > CLAIM_STALE_S / 2) {
		bm_fmt(msg, n, "PUT %s: not sent: its claim got too old waiting for the server", url);
		rc = BM_EHTTP;
	}
	if (rc == 0) {
		struct bm_req r = { .method = "PUT", .url = url, .body = body, .body_len = len,
				    .discard = true };
		struct status_check c = { h, 200, 201, 204 };
		/* A weak ETag never matches; a strong one is checked as the
		 * PUT starts: redundant under the claim, unless someone
		 * writes without one. */
		if (p->cond == BM_PUT_IF_MATCH && cur.etag[0] && !bm_etag_is_weak(cur.etag))
			r.if_match = cur.etag;
		tried = true;
		rc = bm_http_do(h->http, &r, check_status, &c, msg, n, h->s.retries_counter);
		if (rc == 0)
			snprintf(v->etag, sizeof(v->etag), "%s", r.etag);
		else if (rc == BM_EHTTP)
			rc = bm_store_read_back(&h->s, key, body, len, p, v, rc, msg, n);
	}
	/* Dropped unless a PUT whose outcome is unknown may still land. */
	if (claim && (!tried || rc == 0 || rc == BM_ECONFLICT))
		claim_drop(h, claim);
	free(claim);
	free(coll);
	free(url);
	return rc;
}

static int http_put(struct bm_store *s, const char *key, const void *body, size_t len,
		    const struct bm_put *p, struct bm_version *v, char *msg, size_t n)
{
	struct store_http *h = sh_of(s);
	struct bm_req r = { .method = "PUT", .body = body, .body_len = len, .discard = true };
	struct status_check c = { h, 200, 201, 204 };
	char *url = key_url(h, key);
	int rc;

	if (url == NULL)
		return BM_ENOMEM;
	if (p->swap && p->cond != BM_PUT_ANY && atomic_load(&h->claims)) {
		free(url);
		return put_claimed(h, key, body, len, p, v, msg, n);
	}
	if (atomic_load(&h->collections) && (rc = make_parents(h, url, msg, n)) < 0) {
		free(url);
		return rc;
	}
	r.url = url;
	r.if_none_match_any = p->cond == BM_PUT_IF_NONE;
	r.if_match = p->cond == BM_PUT_IF_MATCH ? p->etag : NULL;
	rc = bm_http_do(h->http, &r, check_status, &c, msg, n, s->retries_counter);
	if (rc == BM_EFORMAT && r.status == 409) {
		/* A WebDAV server without the key's collections (made by
		 * others, deleted since?): they are made again. */
		char why[512];
		coll_forget(h);
		int mrc = make_parents(h, url, why, sizeof(why));
		if (mrc == 0)
			rc = bm_http_do(h->http, &r, check_status, &c, msg, n, s->retries_counter);
		else
			bm_fmt(msg, n, "PUT %s: HTTP 409, and its collections cannot be made: %s", url, why);
	}
	if (rc == 0)
		snprintf(v->etag, sizeof(v->etag), "%s", r.etag);
	else if (rc == BM_EHTTP && p->cond != BM_PUT_ANY)
		rc = bm_store_read_back(s, key, body, len, p, v, rc, msg, n);
	free(url);
	return rc;
}

/* ---- list: WebDAV PROPFIND, one collection at a time (Depth: 1) ---------------------------- */

static const char propfind[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
	"<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>\n";

/* The keys starting with prefix in collection dir ("" or "gen/") and,
 * recursively (depth levels at most), in its collections, into page. */
static int list_coll(struct store_http *h, const char *bp, const char *dir, const char *prefix,
		     struct bm_list *page, size_t *cap, int depth, char *msg, size_t n)
{
	struct bm_body b = { 0 };
	struct bm_list members = { 0 };
	char *url = NULL;
	struct bm_req r = { .method = "PROPFIND", .body = propfind, .body_len = strlen(propfind),
			    .headers = { "Depth: 1", "Content-Type: application/xml" },
			    .sink = bm_body_sink, .sink_arg = &b, .cap = LIST_MAX };
	struct status_check c = { h, 207, 207, 207 };
	size_t pl = strlen(prefix);
	int rc;

	if (asprintf(&url, "%s/%s", h->s.url, dir) < 0)
		return BM_ENOMEM;
	r.url = url;
	rc = bm_http_do(h->http, &r, check_status, &c, msg, n, h->s.retries_counter);
	if (rc == BM_ENOTFOUND)
		rc = 0; /* nothing there */
	else if (rc == 0)
		rc = bm_list_parse_propfind(b.p ? b.p : "", b.len, bp, dir, &members, msg, n);
	for (size_t i = 0; i < members.n && rc == 0; i++) {
		const char *key = members.entries[i].key;
		size_t kl = strlen(key);
		if (key[kl - 1] == '/') {
			/* A collection: into it if keys under the prefix may lie there. */
			if (depth > 0 && strncmp(key, prefix, kl < pl ? kl : pl) == 0)
				rc = list_coll(h, bp, key, prefix, page, cap, depth - 1, msg, n);
		} else if (strncmp(key, prefix, pl) == 0) {
			rc = bm_list_add(page, cap, key, kl, members.entries[i].size);
		}
	}
	bm_list_free(&members);
	free(b.p);
	free(url);
	return rc;
}

static int webdav_list(struct store_http *h, const char *prefix, struct bm_list *page, char *msg, size_t n)
{
	const char *path = strchr(strstr(h->s.url, "://") + 3, '/');
	char *bp = NULL, *dir = strdup(prefix);
	size_t cap = 0;
	int rc;

	if (dir == NULL || asprintf(&bp, "%s/", path ? path : "") < 0) {
		free(dir);
		return BM_ENOMEM;
	}
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[1] = '\0'; /* the collection holding the prefix */
	else
		dir[0] = '\0';
	rc = list_coll(h, bp, dir, prefix, page, &cap, 16, msg, n);
	if (rc < 0)
		bm_list_free(page);
	else
		bm_list_sort(page);
	free(bp);
	free(dir);
	return rc;
}

/* ---- list: blkmap-server's JSON listing (GET <base>/<prefix>?list) ------------------------------------------------------ */

static int http_list(struct bm_store *s, const char *prefix, const char *token, struct bm_list *page,
		     char *msg, size_t n)
{
	struct store_http *h = sh_of(s);
	struct bm_body b = { 0 };
	struct bm_get g = { .max = LIST_MAX, .sink = bm_body_sink, .sink_arg = &b };
	const char *path = strchr(strstr(h->s.url, "://") + 3, '/');
	char *key = NULL, *base = NULL;
	int rc;

	(void)token; /* one page holds everything */
	if (atomic_load(&h->collections))
		return webdav_list(h, prefix, page, msg, n);
	/* The listing's keys are from the server's root: "a/ds/..." */
	if (asprintf(&key, "%s?list", prefix) < 0)
		return BM_ENOMEM;
	if (asprintf(&base, "%s%s", path && path[1] ? path + 1 : "", path && path[1] ? "/" : "") < 0) {
		free(key);
		return BM_ENOMEM;
	}
	rc = http_get(s, key, &g, msg, n);
	if (rc == 0 && (rc = bm_list_parse_json(b.p ? b.p : "", b.len, base, prefix, page, msg, n)) < 0) {
		char why[512];
		bm_fmt(why, sizeof(why), "%s", msg);
		bm_fmt(msg, n, "GET %s/%s?list: %s", h->s.url, prefix, why);
	}
	free(key);
	free(base);
	free(b.p);
	return rc;
}

/* ---- opening -------------------------------------------------------------------------- */

static void http_close(struct bm_store *s)
{
	struct store_http *h = sh_of(s);

	bm_http_free(h->http);
	for (size_t i = 0; i < h->ncolls; i++)
		free(h->colls[i]);
	free(h->colls);
	pthread_mutex_destroy(&h->mu);
	pthread_mutex_destroy(&h->mkcol_mu);
	free(h->s.url);
	free(h);
}

static int http_set_connections(struct bm_store *s, int n)
{
	return bm_http_set_connections(sh_of(s)->http, n);
}

static const struct bm_store_ops http_ops = {
	.get = http_get,
	.get_many = http_get_many,
	.head = http_head,
	.put = http_put,
	.del = http_del,
	.list = http_list,
	.close = http_close,
	.set_connections = http_set_connections,
	.http = http_pool,
	.get_begin = http_get_begin,
	.get_end = http_get_end,
};

int bm_store_http_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o,
		       char *msg, size_t n)
{
	size_t skip = bm_url_scheme_len(url, "http") + bm_url_scheme_len(url, "https");

	msg[0] = '\0';
	if (skip == 0 || url[skip] == '\0' || url[skip] == '/')
		return BM_EINVAL;
	struct store_http *h = calloc(1, sizeof(*h));
	if (h == NULL || (h->s.url = strdup(url)) == NULL) {
		free(h);
		return BM_ENOMEM;
	}
	size_t len = strlen(h->s.url);
	while (len > skip + 1 && h->s.url[len - 1] == '/')
		h->s.url[--len] = '\0';
	pthread_mutex_init(&h->mu, NULL);
	pthread_mutex_init(&h->mkcol_mu, NULL);
	h->s.ops = &http_ops;
	h->s.retries_counter = o->retries_counter;
	atomic_init(&h->s.caps, BM_CAP_CREATE_EXCL | BM_CAP_REPLACE_MATCH);
	struct bm_http_opts ho = {
		.token = o->token,
		.connect_timeout_ms = o->connect_timeout_ms,
		.timeout_ms = o->timeout_ms,
		.retry_base_ms = o->retry_base_ms,
		.retries = o->retries,
		.connections = o->connections,
		.verbose = o->verbose,
	};
	int rc = bm_http_new(&h->http, &ho);
	if (rc < 0) {
		http_close(&h->s);
		return rc;
	}
	*sp = &h->s;
	return 0;
}
