/* store.c — the store interface's common part (store.h): key names, the
 * choice of a backend by URL, the calls that dispatch to it, whole-object
 * reads into memory, ETag comparison and the meaning of HTTP statuses.
 *
 * Owns: nothing beyond a call (a store's state is its backend's).
 * Locking: none here; the backends say theirs.
 */
#include "config.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* ---- key names --------------------------------------------------------------- */

void bm_key_gen(char out[BM_KEY_GEN_SIZE], uint64_t gen)
{
	snprintf(out, BM_KEY_GEN_SIZE, "gen/%" PRIu64 ".json", gen);
}

void bm_key_block(char out[BM_KEY_BLOCK_SIZE], const char *sum)
{
	snprintf(out, BM_KEY_BLOCK_SIZE, "blocks/%s", sum);
}

uint64_t bm_key_gen_parse(const char *key)
{
	uint64_t g = 0;
	const char *p;

	if (strncmp(key, "gen/", 4) != 0 || key[4] < '1' || key[4] > '9')
		return 0;
	for (p = key + 4; *p >= '0' && *p <= '9'; p++) {
		g = g * 10 + (uint64_t)(*p - '0');
		if (g > BM_GEN_MAX)
			return 0;
	}
	return strcmp(p, ".json") == 0 ? g : 0;
}

/* ---- opening and dispatch -------------------------------------------------------- */

int bm_store_open(struct bm_store **sp, const char *url, const struct bm_store_opts *o, char *msg, size_t n)
{
	*sp = NULL;
	if (url == NULL) {
		bm_fmt(msg, n, "(null): not an http://, https:// or s3:// URL");
		return BM_EINVAL;
	}
	int rc = bm_store_http_open(sp, url, o, msg, n);
	if (rc == BM_EINVAL && msg[0] == '\0')
		rc = bm_store_s3_open(sp, url, o, msg, n);
	if (rc == BM_EINVAL && msg[0] == '\0')
		bm_fmt(msg, n, "%s: not an http://, https:// or s3:// URL", url);
	return rc;
}

void bm_store_close(struct bm_store *s)
{
	if (s != NULL)
		s->ops->close(s);
}

int bm_store_set_connections(struct bm_store *s, int n)
{
	return s->ops->set_connections ? s->ops->set_connections(s, n) : 0;
}

unsigned bm_store_caps(struct bm_store *s)
{
	return atomic_load(&s->caps);
}

char *bm_store_name(const struct bm_store *s, const char *key)
{
	size_t n = strlen(s->url) + strlen(key) + 2;
	char *u = malloc(n);
	if (u)
		snprintf(u, n, key[0] ? "%s/%s" : "%s%s", s->url, key);
	return u;
}

int bm_store_get(struct bm_store *s, const char *key, struct bm_get *g, char *msg, size_t n)
{
	g->got = 0;
	return s->ops->get(s, key, g, msg, n);
}

void bm_store_get_many(struct bm_store *s, struct bm_get_job *jobs, int n)
{
	for (int i = 0; i < n; i++)
		jobs[i].g->got = 0;
	if (s->ops->get_many != NULL && n >= 2 && n <= BM_HTTP_JOBS_MAX) {
		s->ops->get_many(s, jobs, n);
		return;
	}
	for (int i = 0; i < n; i++)
		jobs[i].rc = s->ops->get(s, jobs[i].key, jobs[i].g, jobs[i].msg, jobs[i].n);
}

struct bm_store_flow {
	struct bm_store *s;
	struct bm_http_flow *hf;
};

int bm_store_flow_new(struct bm_store *s, int n, struct bm_store_flow **fp)
{
	struct bm_store_flow *f;
	int rc;

	*fp = NULL;
	if (s->ops->http == NULL)
		return BM_EINVAL;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return BM_ENOMEM;
	f->s = s;
	if ((rc = bm_http_flow_new(s->ops->http(s), n, &f->hf)) < 0) {
		free(f);
		return rc;
	}
	*fp = f;
	return 0;
}

int bm_store_flow_room(const struct bm_store_flow *f)
{
	return bm_http_flow_room(f->hf);
}

int bm_store_flow_start(struct bm_store_flow *f, struct bm_store_flow_get *x)
{
	int rc;

	if (bm_http_flow_room(f->hf) == 0)
		return BM_EBUSY;
	x->g->got = 0;
	x->rc = 0;
	x->be = NULL;
	if ((rc = f->s->ops->get_begin(f->s, x)) < 0)
		return x->rc = rc;
	x->j.msg = x->msg;
	x->j.n = x->n;
	return bm_http_flow_start(f->hf, &x->j);
}

struct bm_store_flow_get *bm_store_flow_next(struct bm_store_flow *f)
{
	struct bm_http_job *j = bm_http_flow_next(f->hf);

	if (j == NULL)
		return NULL;
	struct bm_store_flow_get *x = (struct bm_store_flow_get *)((char *)j - offsetof(struct bm_store_flow_get, j));
	x->rc = j->rc;
	f->s->ops->get_end(f->s, x);
	return x;
}

void bm_store_flow_free(struct bm_store_flow *f)
{
	if (f == NULL)
		return;
	/* Those in flight are stopped, their state freed. */
	struct bm_http_job *j;
	while ((j = bm_http_flow_drop(f->hf)) != NULL) {
		struct bm_store_flow_get *x =
			(struct bm_store_flow_get *)((char *)j - offsetof(struct bm_store_flow_get, j));
		f->s->ops->get_end(f->s, x);
	}
	bm_http_flow_free(f->hf);
	free(f);
}

int bm_store_head(struct bm_store *s, const char *key, struct bm_version *v, char *msg, size_t n)
{
	return s->ops->head(s, key, v, msg, n);
}

int bm_store_put(struct bm_store *s, const char *key, const void *body, size_t len,
		 const struct bm_put *p, struct bm_version *v, char *msg, size_t n)
{
	static const struct bm_put any = { .cond = BM_PUT_ANY };
	struct bm_version dummy;

	return s->ops->put(s, key, body, len, p ? p : &any, v ? v : &dummy, msg, n);
}

int bm_store_delete(struct bm_store *s, const char *key, char *msg, size_t n)
{
	return s->ops->del(s, key, msg, n);
}

int bm_store_list(struct bm_store *s, const char *prefix, const char *token, struct bm_list *page,
		  char *msg, size_t n)
{
	memset(page, 0, sizeof(*page));
	if (!(bm_store_caps(s) & BM_CAP_LIST) || s->ops->list == NULL) {
		bm_fmt(msg, n, "%s: this server does not list objects", s->url);
		return BM_EINVAL;
	}
	return s->ops->list(s, prefix, token, page, msg, n);
}

void bm_list_free(struct bm_list *page)
{
	for (size_t i = 0; i < page->n; i++)
		free(page->entries[i].key);
	free(page->entries);
	free(page->next);
	memset(page, 0, sizeof(*page));
}

/* ---- whole objects into memory ------------------------------------------------------ */

int bm_body_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct bm_body *b = arg;

	b->len = (size_t)off; /* a retry starts again at 0 */
	if (b->len + len + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 64 << 10;
		while (ncap < b->len + len + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (np == NULL)
			return -12; /* -ENOMEM */
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
	return 0;
}

void bm_version_of(const struct bm_req *r, struct bm_version *v)
{
	snprintf(v->etag, sizeof(v->etag), "%s", r->etag);
	snprintf(v->last_modified, sizeof(v->last_modified), "%s", r->last_modified);
	v->size = r->content_length;
}

static int checked_verify(void *arg, char *msg, size_t n)
{
	struct bm_checked_get *c = arg;
	return c->check(c->arg, c->b.p ? c->b.p : "", c->b.p ? c->b.len : 0, msg, n);
}

void bm_checked_get_init(struct bm_checked_get *c, size_t max, bm_bytes_check_fn check, void *arg)
{
	*c = (struct bm_checked_get){ .check = check, .arg = arg };
	c->g = (struct bm_get){ .max = max, .sink = bm_body_sink, .sink_arg = &c->b };
	if (check) {
		c->g.verify = checked_verify;
		c->g.sink_arg = c; /* c->b is its first member: bm_body_sink sees a struct bm_body */
	}
}

int bm_checked_get_end(struct bm_checked_get *c, int rc, char **bufp, size_t *lenp, struct bm_version *v)
{
	*bufp = NULL;
	*lenp = 0;
	if (rc < 0) {
		free(c->b.p);
		return rc;
	}
	if (c->b.p == NULL && (c->b.p = calloc(1, 1)) == NULL)
		return BM_ENOMEM; /* an empty body */
	*bufp = c->b.p;
	*lenp = c->g.got;
	if (v)
		*v = c->g.ver;
	return 0;
}

int bm_store_get_checked(struct bm_store *s, const char *key, size_t max, bm_bytes_check_fn check,
			 void *arg, char **bufp, size_t *lenp, struct bm_version *v, char *msg, size_t n)
{
	struct bm_checked_get c;

	bm_checked_get_init(&c, max, check, arg);
	return bm_checked_get_end(&c, bm_store_get(s, key, &c.g, msg, n), bufp, lenp, v);
}

int bm_store_get_all(struct bm_store *s, const char *key, size_t max, char **bufp, size_t *lenp,
		     struct bm_version *v, char *msg, size_t n)
{
	struct bm_body b = { 0 };
	struct bm_get g = { .max = max, .sink = bm_body_sink, .sink_arg = &b };
	int rc = bm_store_get(s, key, &g, msg, n);

	*bufp = NULL;
	*lenp = 0;
	if (rc < 0) {
		free(b.p);
		return rc;
	}
	if (b.p == NULL && (b.p = calloc(1, 1)) == NULL)
		return BM_ENOMEM; /* an empty body */
	*bufp = b.p;
	*lenp = g.got;
	if (v)
		*v = g.ver;
	return 0;
}

/* ---- a conditional put that failed after every retry ------------------------------------ */

int bm_store_read_back(struct bm_store *s, const char *key, const void *body, size_t len,
		       const struct bm_put *p, struct bm_version *v, int rc, char *msg, size_t n)
{
	size_t max = (p->was && p->was_len > len ? p->was_len : len) + 1;
	char *got = NULL, why[512];
	size_t glen = 0, ml = strnlen(msg, n);
	struct bm_version now;
	int grc = bm_store_get_all(s, key, max, &got, &glen, &now, why, sizeof(why));
	bool ours = grc == 0 && glen == len && memcmp(got, body, len) == 0;
	/* Still the version the put was to replace (or no object, for a
	 * create): not applied. */
	bool before = p->cond == BM_PUT_IF_NONE ? grc == BM_ENOTFOUND :
		      p->was ? grc == 0 && glen == p->was_len && memcmp(got, p->was, glen) == 0 :
		      grc == 0 && p->etag && bm_etag_same(now.etag, p->etag);

	if (ours) {
		snprintf(v->etag, sizeof(v->etag), "%s", now.etag);
		rc = 0;
	} else if (before) {
		bm_fmt(msg + ml, n - ml, "; read back: not applied");
	} else if (grc == 0 || grc == BM_ENOTFOUND || grc == BM_EFORMAT) {
		/* Another writer's version: a swap lost. */
		bm_fmt(msg + ml, n - ml, "; read back: %s",
		       grc == BM_ENOTFOUND ? "no object there" : "another version there (another writer's)");
		if (p->swap)
			rc = BM_ECONFLICT;
	} else {
		bm_fmt(msg + ml, n - ml, "; reading it back failed too");
	}
	free(got);
	return rc;
}

/* ---- ETags and statuses --------------------------------------------------------------- */

bool bm_etag_is_weak(const char *etag)
{
	return strncmp(etag, "W/", 2) == 0;
}

bool bm_etag_same(const char *a, const char *b)
{
	if (bm_etag_is_weak(a))
		a += 2;
	if (bm_etag_is_weak(b))
		b += 2;
	return strcmp(a, b) == 0;
}

/* A decimal number at *pp (digits only, no overflow): true, *pp past it. */
static bool parse_u64(const char **pp, uint64_t *v)
{
	const char *p = *pp;

	*v = 0;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (*v > (UINT64_MAX - 9) / 10)
			return false;
		*v = *v * 10 + (uint64_t)(*p - '0');
	}
	*pp = p;
	return true;
}

/* "bytes FIRST-LAST/TOTAL", or a 416's star form with no range (first =
 * UINT64_MAX); TOTAL a number or "*" (UINT64_MAX). */
static bool parse_content_range(const char *cr, uint64_t *first, uint64_t *last, uint64_t *total)
{
	const char *p = cr;

	*first = *last = *total = UINT64_MAX;
	if (strncmp(p, "bytes ", 6) != 0)
		return false;
	p += 6;
	if (*p == '*') {
		p++;
	} else if (!parse_u64(&p, first) || *p++ != '-' || !parse_u64(&p, last) || *last < *first) {
		return false;
	}
	if (*p++ != '/')
		return false;
	if (strcmp(p, "*") == 0)
		return *first != UINT64_MAX;
	return parse_u64(&p, total) && *p == '\0' && (*first == UINT64_MAX || *last < *total);
}

int bm_store_check_range(struct bm_get *g, long status, const char *content_range, size_t got,
			 char *msg, size_t n)
{
	uint64_t first, last, total, end = g->off + g->len - 1;
	bool parsed = parse_content_range(content_range, &first, &last, &total);

	g->total = UINT64_MAX;
	if (status == 200 && g->to_end && g->off == 0) {
		/* The whole object (a server may ignore Range: nginx does for
		 * an empty file); a longer one than asked was refused while it
		 * came. */
		g->total = got;
		return 0;
	}
	if (status == 200) {
		bm_fmt(msg, n, "server answered 200 to a Range request (206 expected)");
		return BM_EFORMAT;
	}
	if (status == 416 && g->to_end && g->off == 0 && (!parsed || (first == UINT64_MAX && total == 0))) {
		/* A range from byte 0 is unsatisfiable only in an empty
		 * object (RGW's 416 names no total). */
		g->total = 0;
		return 0;
	}
	if (status != 206) {
		bm_fmt(msg, n, "HTTP %ld", status);
		return bm_store_status_error(status);
	}
	/* Cut at the end only when the total says that is the end. */
	bool whole = parsed && first == g->off &&
		     (last == end || (g->to_end && last < end && total != UINT64_MAX && last == total - 1));
	if (!whole) {
		bm_fmt(msg, n, "Content-Range \"%s\" does not match the range asked (bytes %" PRIu64 "-%" PRIu64 "/...)",
		       content_range, g->off, end);
		return BM_EFORMAT;
	}
	if (g->pin && g->pin->size != UINT64_MAX && total != UINT64_MAX && total != g->pin->size) {
		bm_fmt(msg, n, "the object changed on the server (Content-Range \"%s\": size was %" PRIu64 ")",
		       content_range, g->pin->size);
		return BM_ECHANGED;
	}
	if (got != last - first + 1) {
		/* A cut-off body: retried. */
		bm_fmt(msg, n, "short body: %zu of %" PRIu64 " bytes", got, last - first + 1);
		return BM_EHTTP;
	}
	g->total = total;
	return 0;
}

int bm_store_status_error(long status)
{
	switch (status) {
	case 401:
	case 403:
		return BM_EAUTH;
	case 404:
	case 410:
		return BM_ENOTFOUND;
	case 412:
		return BM_ECONFLICT;
	default:
		/* 5xx, 429 and 408 are retried before this is asked; anything
		 * else (a redirect, another 4xx) is not worth retrying. */
		return status >= 500 || status == 429 || status == 408 ? BM_EHTTP : BM_EFORMAT;
	}
}

void bm_store_count_retry(struct bm_store *s)
{
	if (s->retries_counter)
		atomic_fetch_add(s->retries_counter, 1);
}
