/* store.h — one interface to an object store: get (whole or a range, the
 * body into the caller's sink), head, put (plain, if-none-match,
 * if-match), delete and list, by key.  The dataset, the commit protocol
 * and the format speak only this; the backends speak HTTP.
 *
 * Keys are relative to the store's base (the dataset's URL): "manifest.json",
 * "gen/3.json", "blocks/<sum>"; "" is the object at the base itself (a
 * flat object).  The store turns them into requests and owns the meaning
 * of every status: a call returns 0 or one BM_E* code, with msg naming the
 * method, the full URL and what was wrong.
 *
 *   BM_ENOTFOUND   no such object (404, 410)
 *   BM_ECONFLICT   a put's precondition failed (412): the object exists
 *                  (if-none-match) or is another version (if-match)
 *   BM_ECHANGED    a get pinned to a version found another one
 *   BM_EAUTH       credentials refused (401, 403)
 *   BM_EHTTP       unreachable or failing after every retry (5xx, 429,
 *                  408, transport errors, cut bodies)
 *   BM_ECHECKSUM   the get's verify callback refused the body every try
 *   BM_EFORMAT     an answer that makes no sense (wrong status, range,
 *                  length, an overlong header or body)
 *   BM_ENOMEM      out of memory, or the sink failed
 *
 * Transient failures are retried inside the call (backoff with jitter); a
 * retried conditional put may meet its own earlier, unanswered write: a
 * BM_ECONFLICT after a retry can mean "done" — the caller reads back
 * (docs/FORMAT.md, "Commit").
 *
 * Ownership: the store copies nothing it is given beyond the call except
 * its options; what it returns (bm_list pages) the caller frees.  Bodies go
 * to sinks, never to memory the store allocates, except bm_store_get_all's.
 * Threads: every call is safe from any thread and calls run in parallel,
 * up to the store's connections (more wait for a free one).  Sinks and
 * verify callbacks run on the calling thread.  bm_store_close only once no
 * call runs.
 *
 * Backends (a vtable, struct bm_store_ops): store_http.c (blkmap-server,
 * nginx, Apache mod_dav and other WebDAV servers); store_s3.c (s3://:
 * AWS S3, Ceph RGW, MinIO).
 */
#ifndef BLKMAP_CLIENT_STORE_H
#define BLKMAP_CLIENT_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* ---- key names (the only place that spells them) -------------------------- */

#define BM_KEY_MANIFEST "manifest.json"
#define BM_KEY_GEN_SIZE 48       /* "gen/<N>.json" with its NUL */
#define BM_KEY_BLOCK_SIZE (BM_SUM_HEX + 8)

/* "gen/<N>.json": the kept manifest of generation N. */
void bm_key_gen(char out[BM_KEY_GEN_SIZE], uint64_t gen);
/* "blocks/<sum>": the block object holding bytes whose checksum is sum. */
void bm_key_block(char out[BM_KEY_BLOCK_SIZE], const char *sum);
/* The generation N of a key "gen/<N>.json" (decimal, no leading zero,
 * 1..BM_GEN_MAX), or 0 if key is not one. */
uint64_t bm_key_gen_parse(const char *key);

/* ---- what a store guarantees ------------------------------------------------- */

/* Bits of bm_store_caps().  Each names a promise the commit protocol relies
 * on when present and works around when absent. */
enum {
	/* PUT with If-None-Match: * never replaces an object: 412 when one
	 * is there (else the last writer wins). */
	BM_CAP_CREATE_EXCL = 1u << 0,
	/* PUT with If-Match: E replaces only the version whose ETag is E
	 * (else the condition is ignored and the last writer wins). */
	BM_CAP_REPLACE_MATCH = 1u << 1,
	/* Every ETag it sends is strong and changes with the content.  Absent:
	 * an ETag may be weak (W/"..."), and If-Match never matches a weak
	 * one; the commit then waits for the strong one (commit.c). */
	BM_CAP_STRONG_ETAG = 1u << 2,
	/* bm_store_list works. */
	BM_CAP_LIST = 1u << 3,
};

/* ---- requests ---------------------------------------------------------------- */

/* What tells two versions of one object apart, as the store reported it. */
struct bm_version {
	char etag[BM_ETAG_SIZE];   /* "" if none was sent */
	char last_modified[64];    /* "" if none */
	uint64_t size;             /* the object's size; UINT64_MAX if unknown */
};

/* Receives len bytes of a body at offset off (bodies arrive in order; a
 * retry starts again at off 0).  0, or -errno to abort the call (then it
 * returns BM_ENOMEM, not retried). */
typedef int (*bm_sink_fn)(void *arg, uint64_t off, const void *data, size_t len);

struct bm_get {
	/* in */
	bool range;                /* bytes [off, off + len): a 206 with that
				      Content-Range and len bytes, nothing else */
	uint64_t off;
	size_t len;
	bool to_end;               /* range: the answer may stop early at the
				      object's end (bytes off..size-1; none
				      for an empty object); sets total */
	size_t max;                /* no range: a longer body is BM_EFORMAT */
	bool exact;                /* no range: the body must be max bytes
				      (shorter: cut, retried) */
	/* The object must still be this version (its ETag is sent as If-Match
	 * when strong; ETag, Last-Modified and the Content-Range total are
	 * compared when the answer has them): else BM_ECHANGED.  NULL: any. */
	const struct bm_version *pin;
	bm_sink_fn sink;           /* NULL: the body is dropped */
	void *sink_arg;
	/* Called once a whole body arrived (with sink_arg): 0, or a BM_E*
	 * code with msg set; BM_ECHECKSUM and BM_EHTTP are retried. */
	int (*verify)(void *arg, char *msg, size_t n);
	/* Set (by another thread): no further try is made; a body still
	 * coming is for the sink to refuse.  NULL: never. */
	const atomic_bool *cancel;
	/* A lone request beside the handle's steady ones: its connection is
	 * closed once it is answered, not kept idle (a handle holds no more
	 * sockets than with one request at a time). */
	bool lone;
	/* out */
	struct bm_version ver;     /* of the object that answered */
	size_t got;                /* body bytes delivered */
	uint64_t total;            /* range: the object's size by the answer's
				      Content-Range (UINT64_MAX: "*") */
};

enum bm_put_cond {
	BM_PUT_ANY,                /* create or replace */
	BM_PUT_IF_NONE,            /* create only (If-None-Match: *) */
	BM_PUT_IF_MATCH,           /* replace only version etag (If-Match) */
};

/* The condition of a put. */
struct bm_put {
	enum bm_put_cond cond;
	const char *etag;          /* BM_PUT_IF_MATCH: the version replaced */
	/* BM_PUT_IF_MATCH: that version's bytes, or NULL.  Where ETags cannot
	 * tell two versions apart (a weak one), the store compares these. */
	const void *was;
	size_t was_len;
	/* The condition must still hold when the object is written, not only
	 * when the request starts: a compare-and-swap (the manifest).  Without
	 * it a store may check a little earlier (a block: the same bytes
	 * either way). */
	bool swap;
};

struct bm_list_entry {
	char *key;                 /* relative to the base, like every key */
	uint64_t size;
};

/* One page of a listing: entries in ascending key order. */
struct bm_list {
	struct bm_list_entry *entries;
	size_t n;
	char *next;                /* token of the next page; NULL: the last */
};

/* ---- the interface ----------------------------------------------------------- */

struct bm_store_opts {
	const char *token;         /* bearer token (http), may be NULL */
	long connect_timeout_ms, timeout_ms, retry_base_ms;
	int retries, connections, verbose;
	atomic_uint_fast64_t *retries_counter; /* counts retries; may be NULL */
};

struct bm_store;
struct bm_store_flow_get;

/* One get of bm_store_get_many. */
struct bm_get_job {
	const char *key;
	struct bm_get *g;
	char *msg;
	size_t n;
	int rc;                    /* out: what bm_store_get would return */
};

/* One get of a flow (bm_store_flow_start): bm_store_get's arguments,
 * its result, and the flow's own part. */
struct bm_store_flow_get {
	const char *key;
	struct bm_get *g;
	char *msg;
	size_t n;
	int rc;                    /* out: what bm_store_get would return */
	void *tag;                 /* the caller's */
	struct bm_http_job j;      /* the flow's */
	void *be;                  /* the backend's */
};

struct bm_store_ops {
	int (*get)(struct bm_store *s, const char *key, struct bm_get *g, char *msg, size_t n);
	/* n (2..BM_HTTP_JOBS_MAX) gets at once; NULL: one after the other. */
	void (*get_many)(struct bm_store *s, struct bm_get_job *jobs, int n);
	int (*head)(struct bm_store *s, const char *key, struct bm_version *v, char *msg, size_t n);
	int (*put)(struct bm_store *s, const char *key, const void *body, size_t len,
		   const struct bm_put *p, struct bm_version *v, char *msg, size_t n);
	int (*del)(struct bm_store *s, const char *key, char *msg, size_t n);
	int (*list)(struct bm_store *s, const char *prefix, const char *token, struct bm_list *page,
		    char *msg, size_t n);
	void (*close)(struct bm_store *s);
	/* Raises the bound on connections to n (never lowers it). */
	int (*set_connections)(struct bm_store *s, int n);
	/* A get to run in a flow (bm_store_flow): the pool its requests go
	 * to; get_begin makes x's request (x->j set but for msg and n; its
	 * state in x->be) or fails (BM_E* with x->msg set, nothing to end);
	 * get_end, once it ran, finishes x->msg and frees x->be.  NULL: the
	 * backend has no flows. */
	struct bm_http *(*http)(struct bm_store *s);
	int (*get_begin)(struct bm_store *s, struct bm_store_flow_get *x);
	void (*get_end)(struct bm_store *s, struct bm_store_flow_get *x);
};

/* The part every backend shares; a backend's struct starts with it. */
struct bm_store {
	const struct bm_store_ops *ops;
	char *url;                 /* the base, no trailing '/': for messages */
	atomic_uint caps;          /* BM_CAP_*; a backend may learn them from
				      the server's answers, so read each time */
	atomic_uint_fast64_t *retries_counter;
};

/* Opens the store for url (http://, https://, s3://; a backend per scheme).
 * BM_EINVAL with msg for a URL no backend takes.  Sends no request. */
int bm_store_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o, char *msg, size_t n);
void bm_store_close(struct bm_store *s);
unsigned bm_store_caps(struct bm_store *s);
/* Raises the store's bound on connections to n (opts.connections at the
 * open; a lower n changes nothing): 0, or BM_ENOMEM. */
int bm_store_set_connections(struct bm_store *s, int n);
/* The full name of key for messages ("<base>/<key>", or the base for "");
 * malloc'd, NULL when out of memory. */
char *bm_store_name(const struct bm_store *s, const char *key);

/* GET key (or a range of it) into g->sink: 0, BM_ENOTFOUND, ... (above). */
int bm_store_get(struct bm_store *s, const char *key, struct bm_get *g, char *msg, size_t n);
/* The gets of jobs (at most BM_HTTP_JOBS_MAX), sent at once from the
 * calling thread (one round trip, each on a connection of its own; no
 * thread is made) where the store's bound on connections allows, else
 * one after the other; each job's rc is bm_store_get's. */
void bm_store_get_many(struct bm_store *s, struct bm_get_job *jobs, int n);
/* A flow of gets: started one by one from the calling thread and kept in
 * flight together, up to n at once, over one multi handle (http.c's
 * bm_http_flow: n places of the store's bound held until free; no
 * thread), each with bm_store_get's checks, retries and messages.
 * new: 0, or BM_EINVAL for a backend without flows (the caller uses
 * bm_store_get).  start sends x (which lives until next returns it): 0;
 * BM_EBUSY when n are in flight; another BM_E* when x failed at once
 * (x->rc, x->msg set; next never returns it).  next waits for a get to
 * end and returns it (x->rc, x->msg as bm_store_get's), NULL when none
 * is in flight.  free stops the rest. */
struct bm_store_flow;
int bm_store_flow_new(struct bm_store *s, int n, struct bm_store_flow **fp);
int bm_store_flow_room(const struct bm_store_flow *f);
int bm_store_flow_start(struct bm_store_flow *f, struct bm_store_flow_get *x);
struct bm_store_flow_get *bm_store_flow_next(struct bm_store_flow *f);
void bm_store_flow_free(struct bm_store_flow *f);
/* GET the whole of key into a malloc'd NUL-terminated buffer of at most max
 * bytes (*bufp, *lenp; the caller frees); v may be NULL. */
int bm_store_get_all(struct bm_store *s, const char *key, size_t max, char **bufp, size_t *lenp,
		     struct bm_version *v, char *msg, size_t n);
/* The same, calling check(arg, buf, len, msg, n) on each whole answer
 * (buf NUL-terminated): BM_ECHECKSUM from it fetches again (bounded
 * retries, like a block's checksum), any other error ends the call. */
typedef int (*bm_bytes_check_fn)(void *arg, const char *buf, size_t len, char *msg, size_t n);
int bm_store_get_checked(struct bm_store *s, const char *key, size_t max, bm_bytes_check_fn check,
			 void *arg, char **bufp, size_t *lenp, struct bm_version *v, char *msg, size_t n);
/* HEAD key: its version (size = its length).  0 or BM_ENOTFOUND, ... */
int bm_store_head(struct bm_store *s, const char *key, struct bm_version *v, char *msg, size_t n);
/* PUT body as key under condition p (NULL: BM_PUT_ANY).  0 when stored (v,
 * if not NULL, gets the answer's ETag, "" if it had none), BM_ECONFLICT
 * when the condition failed.  Collections a WebDAV server needs for the
 * key are made here. */
int bm_store_put(struct bm_store *s, const char *key, const void *body, size_t len,
		 const struct bm_put *p, struct bm_version *v, char *msg, size_t n);
/* DELETE key: 0 or BM_ENOTFOUND, ... */
int bm_store_delete(struct bm_store *s, const char *key, char *msg, size_t n);
/* One page of the keys starting with prefix, from token (NULL: the first
 * page).  Only with BM_CAP_LIST (else BM_EINVAL).  Free with bm_list_free. */
int bm_store_list(struct bm_store *s, const char *prefix, const char *token, struct bm_list *page,
		  char *msg, size_t n);
void bm_list_free(struct bm_list *page);

/* Weak ETags (no BM_CAP_STRONG_ETAG): whether two ETags name the same
 * version by the weak comparison (RFC 9110 8.8.3.2: W/ ignored).  Every
 * store: strcmp. */
bool bm_etag_same(const char *a, const char *b);
bool bm_etag_is_weak(const char *etag);

/* ---- for backends -------------------------------------------------------------- */

/* A conditional put p of body as key that failed with rc after every
 * retry (BM_EHTTP: one of its tries may have been applied, its answer
 * lost) reads key back.  Our bytes there: stored, 0 (v->etag set).  Still
 * the version p replaces (p->was's bytes, else p->etag; no object for a
 * create): not applied, rc.  Another version, for a swap: another writer
 * won, BM_ECONFLICT.  msg (rc's message) gets what the read showed. */
int bm_store_read_back(struct bm_store *s, const char *key, const void *body, size_t len,
		       const struct bm_put *p, struct bm_version *v, int rc, char *msg, size_t n);
/* The version an answer names (its ETag, Last-Modified, Content-Length). */
void bm_version_of(const struct bm_req *r, struct bm_version *v);
/* A body read whole into memory: a bm_sink_fn with a struct bm_body as
 * its argument (p NUL-terminated, len bytes; a retry starts over).  Zero
 * it first; the caller frees p. */
struct bm_body {
	char *p;
	size_t len, cap;
};
int bm_body_sink(void *arg, uint64_t off, const void *data, size_t len);
/* bm_store_get_checked in two parts, for a get among others
 * (bm_store_get_many): init gives c->g to send, end the call's result
 * from the get's (rc) as bm_store_get_checked's. */
struct bm_checked_get {
	struct bm_body b;          /* first: the sink's argument is this struct */
	bm_bytes_check_fn check;
	void *arg;
	struct bm_get g;
};
void bm_checked_get_init(struct bm_checked_get *c, size_t max, bm_bytes_check_fn check, void *arg);
int bm_checked_get_end(struct bm_checked_get *c, int rc, char **bufp, size_t *lenp, struct bm_version *v);

/* ---- listings and error answers (store_list.c: pure, no I/O) -------------------- */

/* Every key a parser puts in a page is relative to the base, starts with
 * the prefix asked and is bm_key_valid; objects that are not (what blkmap
 * never writes) are passed over.  Pages come sorted, each key once.  On an
 * error (BM_EFORMAT, BM_ENOMEM) the page is empty and msg says what was
 * wrong, naming no URL (the backend adds it). */

/* Appends key (klen bytes) to page, whose entries array holds *cap. */
int bm_list_add(struct bm_list *page, size_t *cap, const char *key, size_t klen, uint64_t size);
/* Sorts page by key and drops a key named again. */
void bm_list_sort(struct bm_list *page);
/* blkmap-server's listing ({"objects": [{"key", "size"}, ...]}, keys from
 * the server's root): base is the store's path from the root with its
 * '/' ("a/ds/"), or "". */
int bm_list_parse_json(const char *json, size_t len, const char *base, const char *prefix,
		       struct bm_list *page, char *msg, size_t n);
/* A WebDAV multistatus (PROPFIND Depth: 1) of collection dir ("" or
 * "gen/"): its members, by their href under base path bp ("/ds/"), a
 * collection's key ending with '/' (checked without it), a file's size
 * from getcontentlength (0 if none). */
int bm_list_parse_propfind(const char *xml, size_t len, const char *bp, const char *dir,
			   struct bm_list *page, char *msg, size_t n);
/* One ListObjectsV2 page: keys are the objects' names, base is the store's
 * prefix with its '/' ("a/ds/"), or "", cut from them.  A truncated page
 * sets page->next (never "", nor token, the one this page was asked with:
 * that would list the same page for ever). */
int bm_list_parse_s3(const char *xml, size_t len, const char *base, const char *prefix,
		     const char *token, struct bm_list *page, char *msg, size_t n);
/* The <Code> of an S3 XML error body into out: one printable word, "" if
 * none. */
void bm_s3_error_code(const char *body, size_t len, char *out, size_t n);
/* The first element named name (any namespace) in [p, end): true with *vp,
 * *vl its text up to the next tag ("" for <x/>), *after past its start tag. */
bool bm_xml_find(const char *p, const char *end, const char *name, const char **vp, size_t *vl,
		 const char **after);

/* The checks of an answer to g's Range request (every backend): a 206
 * whose Content-Range names the range asked (with g->to_end, from g->off
 * to the object's end if that comes first; with off 0, a 416 (without a
 * Content-Range total, or of 0) is an empty object, and a 200 the
 * whole object) with the whole of it in the body (got bytes),
 * of the pinned size if g->pin has one.  Sets g->total.  0, BM_EFORMAT (a
 * 200, another range), BM_ECHANGED (another size), BM_EHTTP (a body cut
 * short: retried), or the status's code; msg says which. */
int bm_store_check_range(struct bm_get *g, long status, const char *content_range, size_t got,
			 char *msg, size_t n);
/* The BM_E* code of a status that is not the one expected. */
int bm_store_status_error(long status);
/* Counts a retry (for bm_stats). */
void bm_store_count_retry(struct bm_store *s);

/* Backend constructors (store_http.c, ...): take url when they handle its
 * scheme (return 0 with *sp set, or another BM_E*), else BM_EINVAL without
 * a message. */
int bm_store_http_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o,
		       char *msg, size_t n);
/* s3://BUCKET[/PREFIX] (store_s3.c), configured from the AWS_* environment
 * and files (aws.h). */
int bm_store_s3_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o,
		     char *msg, size_t n);

#endif /* BLKMAP_CLIENT_STORE_H */
