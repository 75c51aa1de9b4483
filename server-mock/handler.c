/* server-mock/handler.c — what blkmap-server answers: routing, auth, the
 * object methods (GET/HEAD with Range and conditionals, PUT, DELETE), the
 * JSON listing, and the /_admin/ endpoints. Decides the early answers from
 * the request head (srv_handle_head) and the full answer once the body is
 * in (srv_handle_request). Keeps no state of its own: the store, faults
 * and stats lock themselves; a request belongs to one worker thread. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "srv.h"

const char *srv_status_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 507: return "Insufficient Storage";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

void srv_reply_error(struct srv_response *rs, int status, const char *fmt, ...)
{
	va_list ap;

	rs->status = status;
	rs->content_length = -1;
	evbuffer_drain(rs->body, evbuffer_get_length(rs->body));
	evbuffer_add_printf(rs->headers,
			    "Content-Type: text/plain; charset=utf-8\r\n");
	evbuffer_add_printf(rs->body, "%d %s: ", status,
			    srv_status_reason(status));
	va_start(ap, fmt);
	evbuffer_add_vprintf(rs->body, fmt, ap);
	va_end(ap);
	evbuffer_add(rs->body, "\n", 1);
}

/* 507: the store's disk is full.  Not a transient 5xx: retrying the same
 * PUT at once only fills the disk's last bytes again. */
void srv_reply_full(struct srv_response *rs, const char *key)
{
	srv_reply_error(rs, 507, "the store's disk is full; '/%s' not stored",
			key);
}

static void add_header(struct srv_response *rs, const char *name,
		       const char *value)
{
	evbuffer_add_printf(rs->headers, "%s: %s\r\n", name, value);
}

/* Last-Modified: the HTTP date of when the object was stored (gc reads
 * it to leave young objects alone). */
static void add_last_modified(struct srv_response *rs, int64_t mtime)
{
	char buf[64];
	time_t t = (time_t)mtime;
	struct tm tm;

	if (mtime <= 0 || gmtime_r(&t, &tm) == NULL)
		return;
	strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	add_header(rs, "Last-Modified", buf);
}

static void reply_json(struct srv_request *rq, struct srv_response *rs,
		       int status, json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(doc);
	if (!text) {
		srv_reply_error(rs, 500, "cannot format JSON");
		return;
	}
	rs->status = status;
	add_header(rs, "Content-Type", "application/json");
	evbuffer_add(rs->body, text, strlen(text));
	evbuffer_add(rs->body, "\n", 1);
	free(text);
}

/* ---- checks on the request head ---- */

static int query_has(const char *query, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = query; p && *p;) {
		size_t len = strcspn(p, "&");
		if ((len == n || (len > n && p[n] == '=')) &&
		    !strncmp(p, name, n))
			return 1;
		p += len + (p[len] == '&');
	}
	return 0;
}

static int key_is_dir(const char *key)
{
	size_t n = strlen(key);
	return n == 0 || key[n - 1] == '/';
}

static int token_ok(const struct srv_server *srv, const char *auth)
{
	const char *want = srv->cfg.token;
	size_t n = strlen(want), m;
	unsigned char diff = 0;

	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
		return 0;
	auth += 7;
	m = strlen(auth);
	for (size_t i = 0; i < n; i++)  /* time independent of where */
		diff |= (unsigned char)want[i] ^ (unsigned char)auth[i < m ? i : 0];
	return diff == 0 && m == n;
}

static enum srv_head_action check_admin_head(struct srv_request *rq,
					     struct srv_response *rs)
{
	int stats = !strcmp(rq->key, "_admin/stats");
	int faults = !strcmp(rq->key, "_admin/faults");

	if (!stats && !faults) {
		srv_reply_error(rs, 404, "no admin endpoint '/%s' (try "
				"/_admin/stats, /_admin/faults)", rq->key);
		return SRV_REPLY_NOW;
	}
	if (rq->method == SRV_GET || (faults && rq->method == SRV_PUT))
		return SRV_READ_BODY;
	srv_reply_error(rs, 405, "%s not allowed on /%s", rq->method_name,
			rq->key);
	add_header(rs, "Allow", faults ? "GET, PUT" : "GET");
	return SRV_REPLY_NOW;
}

static enum srv_head_action check_body_head(struct srv_server *srv,
					    struct srv_request *rq,
					    struct srv_response *rs)
{
	if (rq->chunked) {
		srv_reply_error(rs, rq->method == SRV_PUT ? 411 : 501,
				"Transfer-Encoding is not supported; send "
				"Content-Length");
		return SRV_REPLY_NOW;
	}
	if (rq->method == SRV_PUT && !rq->is_admin) {
		if (!rq->has_content_length) {
			srv_reply_error(rs, 411, "PUT needs Content-Length");
			return SRV_REPLY_NOW;
		}
		if (rq->content_length > srv->cfg.max_body_bytes) {
			srv_reply_error(rs, 413, "body of %llu bytes is over "
					"the limit of %llu bytes",
					(unsigned long long)rq->content_length,
					(unsigned long long)
					srv->cfg.max_body_bytes);
			return SRV_REPLY_NOW;
		}
		return SRV_READ_BODY;
	}
	if (rq->content_length > SRV_MAX_SMALL_BODY) {
		srv_reply_error(rs, 413, "body of %llu bytes is over the limit "
				"of %d bytes for %s",
				(unsigned long long)rq->content_length,
				SRV_MAX_SMALL_BODY, rq->method_name);
		return SRV_REPLY_NOW;
	}
	if (rq->is_admin && rq->method == SRV_PUT)
		rq->small_body = evbuffer_new();
	return SRV_READ_BODY;
}

static enum srv_head_action check_object_head(struct srv_server *srv,
					      struct srv_request *rq,
					      struct srv_response *rs)
{
	if (rq->method == SRV_OTHER) {
		srv_reply_error(rs, 405, "method %s not allowed",
				rq->method_name);
		add_header(rs, "Allow", "GET, HEAD, PUT, DELETE");
		return SRV_REPLY_NOW;
	}
	if ((rq->method == SRV_PUT || rq->method == SRV_DELETE) &&
	    key_is_dir(rq->key)) {
		srv_reply_error(rs, 400, "cannot %s a key ending in '/' "
				"(that names a listing)", rq->method_name);
		return SRV_REPLY_NOW;
	}
	if (rq->method == SRV_PUT) {
		struct srv_store *st = srv->store;
		int status = st->ops->upload_begin(st, rq->key,
						   rq->content_length,
						   &rq->upload);
		if (status == 507) {
			srv_reply_full(rs, rq->key);
			return SRV_REPLY_NOW;
		}
		if (status != 200) {
			srv_reply_error(rs, 500, "cannot start storing '/%s'",
					rq->key);
			return SRV_REPLY_NOW;
		}
	}
	return SRV_READ_BODY;
}

enum srv_head_action srv_handle_head(struct srv_server *srv,
				     struct srv_request *rq,
				     struct srv_response *rs, int over_limit)
{
	char *query = strchr(rq->target, '?');
	const char *why;
	int bad_key;

	if (query) {
		*query = '\0';  /* the target keeps only the path */
		rq->query = query + 1;
	}
	bad_key = srv_key_decode(rq->target, rq->key, &why) < 0;
	rq->is_admin = !bad_key && srv->cfg.admin &&
		       (!strcmp(rq->key, "_admin") ||
			!strncmp(rq->key, "_admin/", 7));
	rq->is_list = !bad_key && (rq->method == SRV_GET ||
				   rq->method == SRV_HEAD) &&
		      (key_is_dir(rq->key) || query_has(rq->query, "list"));
	rq->counted = !rq->is_admin;
	if (rq->counted) {
		pthread_mutex_lock(&srv->stats.lock);
		srv->stats.requests[rq->method]++;
		srv->stats.in_flight++;
		if (srv->stats.in_flight > srv->stats.in_flight_max)
			srv->stats.in_flight_max = srv->stats.in_flight;
		srv->stats.rejected += over_limit != 0;
		pthread_mutex_unlock(&srv->stats.lock);
	}
	if (over_limit) {
		srv_reply_error(rs, 503, "too many connections (limit %u); "
				"retry later", srv->cfg.max_connections);
		return SRV_REPLY_NOW;
	}
	if (bad_key) {
		srv_reply_error(rs, 400, "bad key: %s", why);
		return SRV_REPLY_NOW;
	}
	if (srv->cfg.token && !token_ok(srv, rq->authorization)) {
		srv_reply_error(rs, 401, "missing or wrong "
				"'Authorization: Bearer' token");
		add_header(rs, "WWW-Authenticate", "Bearer");
		return SRV_REPLY_NOW;
	}
	if (rq->is_admin && check_admin_head(rq, rs) == SRV_REPLY_NOW)
		return SRV_REPLY_NOW;
	if (check_body_head(srv, rq, rs) == SRV_REPLY_NOW)
		return SRV_REPLY_NOW;
	return rq->is_admin ? SRV_READ_BODY : check_object_head(srv, rq, rs);
}

/* ---- GET / HEAD of an object ---- */

enum range_result { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

/* A decimal number; one too large for 64 bits reads as UINT64_MAX (past
 * any end: a last byte is clipped to the object, a first one is beyond). */
static int parse_number(const char **pp, uint64_t *out)
{
	const char *p = *pp;
	uint64_t n = 0;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++)
		n = n > (UINT64_MAX - 9) / 10 ? UINT64_MAX : n * 10 + (*p - '0');
	*pp = p;
	*out = n;
	return 0;
}

/* One "bytes=a-b" / "a-" / "-n" range; anything else (several ranges,
 * bad syntax) is ignored, as RFC 9110 allows, and the whole object sent. */
static enum range_result parse_range(const char *v, uint64_t size,
				     uint64_t *off, uint64_t *len)
{
	uint64_t a, b = UINT64_MAX, n;

	if (strncasecmp(v, "bytes=", 6) != 0 || strchr(v, ','))
		return RANGE_NONE;
	v += 6;
	if (*v == '-') {
		v++;
		if (parse_number(&v, &n) < 0 || *v)
			return RANGE_NONE;
		if (n == 0 || size == 0)
			return RANGE_UNSATISFIABLE;
		*off = n >= size ? 0 : size - n;
		*len = size - *off;
		return RANGE_OK;
	}
	if (parse_number(&v, &a) < 0 || *v++ != '-')
		return RANGE_NONE;
	if (*v && (parse_number(&v, &b) < 0 || *v || b < a))
		return RANGE_NONE;
	if (a >= size)
		return RANGE_UNSATISFIABLE;
	if (b >= size)
		b = size - 1;
	*off = a;
	*len = b - a + 1;
	return RANGE_OK;
}

static void free_copy(const void *data, size_t len, void *arg)
{
	free(arg);
}

/* Add bytes [off, off+len) of O as the body, applying the drop and
 * corrupt faults of this response. */
static int add_object_body(struct srv_server *srv, struct srv_response *rs,
			   struct srv_object *o, uint64_t off, uint64_t len)
{
	const struct srv_store_ops *ops = srv->store->ops;
	uint64_t send = len;
	unsigned char *copy;

	if (rs->roll.drop) {
		send = len / 2;
		rs->body_cut = send > 0;
	}
	if (!rs->roll.corrupt || send == 0)
		return ops->add_body(o, rs->body, off, send);
	copy = malloc(send);
	if (!copy || ops->read(o, copy, off, send) < 0) {
		free(copy);
		return -1;
	}
	copy[rs->roll.pick % send] ^= 0xFF;
	srv_stats_add(&srv->stats, &srv->stats.faults[SRV_FAULT_CORRUPT], 1);
	if (evbuffer_add_reference(rs->body, copy, send, free_copy, copy) < 0) {
		free(copy);
		return -1;
	}
	return 0;
}

/* Preconditions of GET/HEAD; returns 0 to go on, else the status set. */
static int check_get_conditions(struct srv_request *rq,
				struct srv_response *rs, const char *etag)
{
	if (rq->if_match && !srv_etag_list_matches(rq->if_match, etag, 0)) {
		srv_reply_error(rs, 412, "If-Match does not match ETag %s",
				etag);
		return 412;
	}
	if (rq->if_none_match &&
	    srv_etag_list_matches(rq->if_none_match, etag, 1)) {
		rs->status = 304;
		add_header(rs, "ETag", etag);
		return 304;
	}
	return 0;
}

static void handle_get(struct srv_server *srv, struct srv_request *rq,
		       struct srv_response *rs)
{
	const struct srv_store_ops *ops = srv->store->ops;
	struct srv_object o;
	uint64_t off = 0, len;
	int status = ops->get(srv->store, rq->key, &o);

	if (status != 200) {
		if (status == 404)
			srv_reply_error(rs, 404, "no object at key '/%s'",
					rq->key);
		else
			srv_reply_error(rs, 500, "cannot read '/%s'", rq->key);
		return;
	}
	if (check_get_conditions(rq, rs, o.etag)) {
		ops->release(&o);
		return;
	}
	len = o.size;
	status = 200;
	if (rq->range && (!rq->if_range || !strcmp(rq->if_range, o.etag))) {
		enum range_result r = parse_range(rq->range, o.size, &off, &len);
		if (r == RANGE_UNSATISFIABLE) {
			srv_reply_error(rs, 416, "range '%s' is outside the "
					"object's %llu bytes", rq->range,
					(unsigned long long)o.size);
			evbuffer_add_printf(rs->headers,
					    "Content-Range: bytes */%llu\r\n",
					    (unsigned long long)o.size);
			ops->release(&o);
			return;
		}
		if (r == RANGE_OK) {
			status = 206;
			evbuffer_add_printf(rs->headers, "Content-Range: bytes "
					    "%llu-%llu/%llu\r\n",
					    (unsigned long long)off,
					    (unsigned long long)(off + len - 1),
					    (unsigned long long)o.size);
		}
	}
	if (rq->method == SRV_GET && add_object_body(srv, rs, &o, off, len)) {
		evbuffer_drain(rs->headers, evbuffer_get_length(rs->headers));
		srv_reply_error(rs, 500, "cannot read '/%s'", rq->key);
		ops->release(&o);
		return;
	}
	rs->status = status;
	rs->content_length = (int64_t)len;
	add_header(rs, "ETag", o.etag);
	add_last_modified(rs, o.mtime);
	add_header(rs, "Accept-Ranges", "bytes");
	add_header(rs, "Content-Type", "application/octet-stream");
	ops->release(&o);
}

/* ---- listing, PUT, DELETE ---- */

static int compare_keys(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	return strcmp(json_string_value(json_object_get(x, "key")),
		      json_string_value(json_object_get(y, "key")));
}

static json_t *sorted_array(json_t *array)
{
	size_t n = json_array_size(array);
	json_t **items = malloc((n ? n : 1) * sizeof(*items)), *out;

	if (!items)
		return array;
	for (size_t i = 0; i < n; i++)
		items[i] = json_incref(json_array_get(array, i));
	qsort(items, n, sizeof(*items), compare_keys);
	out = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(out, items[i]);
	free(items);
	json_decref(array);
	return out;
}

static void handle_list(struct srv_server *srv, struct srv_request *rq,
			struct srv_response *rs)
{
	json_t *array = json_array();

	if (srv->store->ops->list(srv->store, rq->key, array) != 200) {
		json_decref(array);
		srv_reply_error(rs, 500, "cannot list '/%s'", rq->key);
		return;
	}
	array = sorted_array(array);
	reply_json(rq, rs, 200, json_pack("{s:s, s:o}", "prefix", rq->key,
					  "objects", array));
}

static void handle_put(struct srv_server *srv, struct srv_request *rq,
		       struct srv_response *rs)
{
	struct srv_cond cond = { rq->if_match, rq->if_none_match };
	char etag[SRV_ETAG_LEN];
	int status = srv->store->ops->upload_commit(rq->upload, &cond, etag);

	rq->upload = NULL;
	switch (status) {
	case 201:
	case 204:
		rs->status = status;
		if (!rs->roll.put_no_etag)
			add_header(rs, "ETag", etag);
		break;
	case 409:
		srv_reply_error(rs, 409, "key '/%s' conflicts with a directory "
				"of keys on disk", rq->key);
		break;
	case 412:
		srv_reply_error(rs, 412, "precondition failed for '/%s' "
				"(If-Match / If-None-Match); not stored",
				rq->key);
		break;
	case 507:
		srv_reply_full(rs, rq->key);
		break;
	default:
		srv_reply_error(rs, 500, "cannot store '/%s'", rq->key);
	}
}

static void handle_delete(struct srv_server *srv, struct srv_request *rq,
			  struct srv_response *rs)
{
	struct srv_cond cond = { rq->if_match, rq->if_none_match };
	int status = srv->store->ops->remove(srv->store, rq->key, &cond);

	if (status == 204)
		rs->status = 204;
	else if (status == 404)
		srv_reply_error(rs, 404, "no object at key '/%s'", rq->key);
	else if (status == 412)
		srv_reply_error(rs, 412, "precondition failed for '/%s'; "
				"not deleted", rq->key);
	else
		srv_reply_error(rs, 500, "cannot delete '/%s'", rq->key);
}

/* ---- /_admin/ ---- */

static void handle_admin(struct srv_server *srv, struct srv_request *rq,
			 struct srv_response *rs)
{
	char err[256];
	json_error_t jerr;
	json_t *doc;

	if (!strcmp(rq->key, "_admin/stats")) {
		reply_json(rq, rs, 200, srv_stats_to_json(&srv->stats));
		return;
	}
	if (rq->method == SRV_PUT) {
		size_t n = evbuffer_get_length(rq->small_body);
		doc = json_loadb((const char *)evbuffer_pullup(rq->small_body,
							       -1), n, 0,
				 &jerr);
		if (!doc) {
			srv_reply_error(rs, 400, "body is not JSON: %s",
					jerr.text);
			return;
		}
		int r = srv_faults_update(&srv->faults, doc, err, sizeof(err));
		json_decref(doc);
		if (r < 0) {
			srv_reply_error(rs, 400, "%s", err);
			return;
		}
	}
	reply_json(rq, rs, 200, srv_faults_to_json(&srv->faults));
}

void srv_handle_request(struct srv_server *srv, struct srv_request *rq,
			struct srv_response *rs)
{
	if (rq->is_admin)
		handle_admin(srv, rq, rs);
	else if (rq->is_list)
		handle_list(srv, rq, rs);
	else if (rq->method == SRV_GET || rq->method == SRV_HEAD)
		handle_get(srv, rq, rs);
	else if (rq->method == SRV_PUT)
		handle_put(srv, rq, rs);
	else
		handle_delete(srv, rq, rs);
}
