/* server-mock/srv.h — what the files of blkmap-server share: configuration,
 * the object store, content hashes and ETags, fault injection, counters, and
 * the request/response types the HTTP layer (conn.c) hands to the request
 * handlers (handler.c). Internal to blkmap-server; every symbol is srv_*.
 * Locking: each shared object (store, faults, stats) carries its own mutex;
 * a connection and its request belong to one worker thread. */
#ifndef BLKMAP_SRV_H
#define BLKMAP_SRV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

/* ---- assertions (configure --enable-checks defines BLKMAP_CHECKS) ---- */

/* Prints "blkmap-server: FILE:LINE: assertion failed: COND" and aborts. */
static inline __attribute__((noreturn)) void
srv_assert_fail(const char *file, int line, const char *cond)
{
	fprintf(stderr, "blkmap-server: %s:%d: assertion failed: %s\n", file,
		line, cond);
	abort();
}
#ifdef BLKMAP_CHECKS
#define srv_assert(cond) \
	((cond) ? (void)0 : srv_assert_fail(__FILE__, __LINE__, #cond))
#else
#define srv_assert(cond) ((void)sizeof(!(cond)))
#endif
/* Does the calling thread hold MU?  glibc records a locked mutex's owner
 * thread; where that is unknown the answer is 1 (the check is vacuous). */
static inline int srv_mutex_held(pthread_mutex_t *mu)
{
#ifdef __GLIBC__
	return mu->__data.__owner == (int)syscall(SYS_gettid);
#else
	(void)mu;
	return 1;
#endif
}

/* ---- configuration (main.c fills it from the command line) ---- */

struct srv_config {
	const char *listen;          /* HOST:PORT */
	const char *root;            /* storage directory, or NULL with memory */
	int memory;                  /* in-process store */
	const char *token;           /* required bearer token, or NULL */
	int admin;                   /* serve /_admin/ */
	int verbose;                 /* access log on stderr */
	unsigned threads;            /* worker threads */
	unsigned max_connections;    /* beyond it: 503, then close */
	size_t max_header_bytes;     /* request line + headers */
	uint64_t max_body_bytes;     /* PUT bodies above it: 413 */
	unsigned idle_timeout_ms;    /* keep-alive connection with no request */
	unsigned request_timeout_ms; /* receiving one request; stalled writes */
	double fault_error_rate, fault_drop_rate, fault_corrupt_rate;
	unsigned fault_latency_ms;
	uint64_t fault_seed;
	unsigned fault_pad_bytes;    /* filler body on PUT and error answers */
	int fault_put_no_etag;       /* PUT answers without their ETag */
	int fault_method;            /* 0, or faults only for requests of
					method (enum srv_method) fault_method - 1 */
	const char *fault_path;      /* faults only for keys holding it, or NULL */
};

#define SRV_MAX_KEY_BYTES 1024      /* decoded key length limit */
#define SRV_MAX_SEGMENT_BYTES 255   /* one path segment (a file name) */
#define SRV_MAX_SMALL_BODY 65536    /* bodies of non-PUT requests */

/* ---- content hash and ETags (etag.c) ---- */

#define SRV_ETAG_LEN 40  /* buffer size; an ETag is "\"" 32 hex "\"" */

struct srv_hash {
	uint64_t h1, h2, len;
	unsigned char tail[8];
	unsigned ntail;
};

void srv_hash_init(struct srv_hash *h);
void srv_hash_update(struct srv_hash *h, const void *data, size_t n);
void srv_hash_etag(const struct srv_hash *h, char etag[SRV_ETAG_LEN]);
/* Does the If-Match / If-None-Match value LIST name ETAG?  "*" matches.
 * weak != 0: W/ tags compare by their opaque part (If-None-Match);
 * weak == 0: a W/ tag never matches (If-Match). */
int srv_etag_list_matches(const char *list, const char *etag, int weak);

/* ---- keys (key.c) ---- */

/* Percent-decode the path PATH (starting with '/') into KEY (no leading
 * '/', size >= strlen(path) + 1) and check it; a trailing '/' is kept and
 * means a listing. Returns 0, or -1 with a one-line reason in *why. */
int srv_key_decode(const char *path, char *key, const char **why);

/* ---- object store (store.c dispatches to store_disk.c / store_mem.c) ---- */

struct srv_store;
struct srv_upload;

/* An object opened for reading: a stable snapshot even if it is replaced
 * or deleted meanwhile. */
struct srv_object {
	uint64_t size;
	char etag[SRV_ETAG_LEN];
	int64_t mtime;     /* Unix time it was stored (Last-Modified) */
	struct srv_store *store;
	int fd;            /* disk store */
	void *mem;         /* memory store: struct mem_obj */
};

/* Preconditions of PUT and DELETE, checked atomically with the change. */
struct srv_cond {
	const char *if_match;
	const char *if_none_match;
};

struct srv_store_ops {
	int (*get)(struct srv_store *, const char *key, struct srv_object *);
	int (*add_body)(struct srv_object *, struct evbuffer *, uint64_t off,
			uint64_t len);
	int (*read)(struct srv_object *, void *buf, uint64_t off, uint64_t len);
	void (*release)(struct srv_object *);
	int (*upload_begin)(struct srv_store *, const char *key, uint64_t size,
			    struct srv_upload **);
	/* 0, or -1 with errno (ENOSPC, EDQUOT: the disk is full) */
	int (*upload_write)(struct srv_upload *, const void *, size_t);
	int (*upload_commit)(struct srv_upload *, const struct srv_cond *,
			     char etag[SRV_ETAG_LEN]);
	void (*upload_abort)(struct srv_upload *);
	int (*remove)(struct srv_store *, const char *key,
		      const struct srv_cond *);
	int (*list)(struct srv_store *, const char *prefix, json_t *array);
	void (*close)(struct srv_store *);
};

struct srv_store {
	const struct srv_store_ops *ops;
	pthread_mutex_t lock;  /* namespace: precondition checks + changes */
};

/* Store results are HTTP statuses: 200/201/204 success, 404 no object,
 * 409 key conflicts with a directory, 412 precondition failed, 507 the disk
 * is full, 500 other I/O errors. */
struct srv_store *srv_store_open_disk(const char *root, char *err, size_t n);
struct srv_store *srv_store_open_memory(void);
int srv_cond_check(const struct srv_cond *cond, const char *etag);

static inline void srv_store_close(struct srv_store *s) { s->ops->close(s); }

/* ---- fault injection (faults.c) ---- */

#define SRV_FAULT_PATH_MAX 255

struct srv_faults {
	pthread_mutex_t lock;
	double error_rate, drop_rate, corrupt_rate;
	unsigned latency_ms;
	unsigned pad_bytes;
	int put_no_etag;
	int method;          /* faults only for requests of method
				(enum srv_method) method - 1; 0: every method */
	char path[SRV_FAULT_PATH_MAX + 1]; /* every fault (latency too) only for
				keys holding it; "": every key */
	uint64_t seed, rng;
};

/* One request's draw: every request draws the same amount, so that a
 * seed gives the same sequence of faults to the same sequence of requests. */
struct srv_fault_roll {
	int error, drop, corrupt;
	unsigned latency_ms;
	unsigned pad_bytes;  /* filler appended to a PUT or error answer */
	int put_no_etag;     /* a PUT answer leaves its ETag out */
	uint64_t pick;  /* which byte to corrupt */
};

void srv_faults_init(struct srv_faults *, const struct srv_config *);
void srv_faults_destroy(struct srv_faults *);
/* Draws the faults of one request of method m (enum srv_method). */
void srv_faults_roll(struct srv_faults *, int m, const char *key, struct srv_fault_roll *);
json_t *srv_faults_to_json(struct srv_faults *);
/* Apply a JSON object of fault names; 0, or -1 with a reason in ERR. */
int srv_faults_update(struct srv_faults *, json_t *obj, char *err, size_t n);
/* The fault_method of a method name ("GET", "HEAD", "PUT", "DELETE"; ""
 * for every method: 0), or -1 when it names none of these. */
int srv_faults_method(const char *name);

/* ---- counters (stats.c) ---- */

enum srv_method { SRV_GET, SRV_HEAD, SRV_PUT, SRV_DELETE, SRV_OTHER,
		  SRV_NMETHODS };
enum srv_fault_kind { SRV_FAULT_ERROR, SRV_FAULT_DROP, SRV_FAULT_CORRUPT,
		      SRV_FAULT_LATENCY, SRV_NFAULTS };

struct srv_stats {
	pthread_mutex_t lock;
	uint64_t requests[SRV_NMETHODS];
	uint64_t status[600];
	uint64_t bytes_in, bytes_out;
	uint64_t faults[SRV_NFAULTS];
	uint64_t accepted, rejected, open, in_flight;
	uint64_t in_flight_max;  /* since the previous srv_stats_to_json */
};

void srv_stats_init(struct srv_stats *);
void srv_stats_destroy(struct srv_stats *);
void srv_stats_add(struct srv_stats *, uint64_t *counter, int64_t delta);
json_t *srv_stats_to_json(struct srv_stats *);

/* ---- the server (server.c) ---- */

struct srv_worker;

struct srv_server {
	struct srv_config cfg;
	struct srv_store *store;
	struct srv_faults faults;
	struct srv_stats stats;
	int listen_fd;
	unsigned open_conns;  /* atomic */
	struct srv_worker *workers;
};

int srv_server_run(const struct srv_config *cfg);

/* ---- requests and responses (conn.c parses, handler.c answers) ---- */

#define SRV_MAX_HEADERS 64

struct srv_request {
	enum srv_method method;
	const char *method_name, *target, *query;  /* query: after '?' */
	int http_minor;                   /* HTTP/1.<minor> */
	char *key;                        /* decoded key, no leading '/' */
	int is_list, is_admin;
	const char *range, *if_range, *if_match, *if_none_match;
	const char *authorization, *content_type;
	uint64_t content_length;
	int has_content_length, chunked;
	int has_host;                     /* Host lines seen */
	struct srv_upload *upload;        /* PUT body sink */
	struct evbuffer *small_body;      /* other bodies (admin JSON) */
	int counted;                      /* counted in stats (not admin) */
};

struct srv_response {
	int status;
	struct evbuffer *headers;         /* extra "Name: value\r\n" lines */
	struct evbuffer *body;
	int64_t content_length;           /* -1: the body's length */
	int close;                        /* close the connection after it */
	struct srv_fault_roll roll;       /* faults for this response */
	int body_cut;                     /* drop fault already applied */
};

enum srv_head_action { SRV_READ_BODY, SRV_REPLY_NOW };

enum srv_head_action srv_handle_head(struct srv_server *,
				     struct srv_request *,
				     struct srv_response *, int over_limit);
void srv_handle_request(struct srv_server *, struct srv_request *,
			struct srv_response *);
void srv_reply_error(struct srv_response *, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
const char *srv_status_reason(int status);
/* 507 Insufficient Storage for KEY: the disk store is full. */
void srv_reply_full(struct srv_response *, const char *key);

/* ---- connections (conn.c) ---- */

void srv_conn_accept(struct srv_worker *, struct srv_server *,
		     struct event_base *, int fd);
void srv_worker_conns_stop(struct srv_worker *);
/* server.c: a worker's bookkeeping that conn.c updates */
struct srv_conn;
struct srv_conn **srv_worker_conn_list(struct srv_worker *);
void srv_worker_conn_gone(struct srv_worker *);
int srv_worker_stopping(struct srv_worker *);

#endif
