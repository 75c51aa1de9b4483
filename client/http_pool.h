/* http_pool.h — what http.c (the pool and one request) shares with
 * http_many.c (several requests at once: bm_http_do_all and flows) and
 * http_sock.c (the connections' sockets and their park): the pool's
 * structures and the steps of a request.  For these three files only;
 * the rest of the library uses internal.h's bm_http_* API.
 * Locking: h->mu guards a pool's idle list and counts (idle, nidle,
 * ncreated, o.connections); the steps run without it.
 */
#ifndef BLKMAP_HTTP_POOL_H
#define BLKMAP_HTTP_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "internal.h"

/* A connection: the multi handle that keeps it, and the easy handle each
 * request is a copy of (the options every request of its pool has). */
struct bm_conn {
	CURLM *m;
	CURL *tpl;
	struct bm_http *h;
	/* What a socket curl closes now is (the park, http_sock.c): parking, an
	 * idle one curl kept (its answer read whole); else a lone request's
	 * among jobs[0..njobs) may be, once answered whole. */
	bool parking;
	struct bm_http_job *jobs;
	int njobs;
};

struct bm_http {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct bm_conn **idle;
	int nidle, ncreated;
	struct bm_http_opts o;
	char *auth;                /* "Authorization: Bearer ..." or NULL */
	bool inited;               /* mu and cv exist */
	unsigned seed;
	atomic_uint_fast64_t waited_ns; /* the last waited request's time (perform_on) */
	atomic_bool tls;           /* an https URL was asked: nothing is parked */
};

/* A request body's reader (curl's read callback). */
struct bm_put_src {
	const char *p;
	size_t left;
};

/* A new connection of h (its multi handle and template), or NULL; the
 * caller counts it in h->ncreated.  bm_http_conn_free frees one;
 * bm_http_conn_give hands one back to h's idle list (broken: freed, its
 * place in the bound given back) and wakes a waiter. */
struct bm_conn *bm_http_conn_new(struct bm_http *h);
void bm_http_conn_free(struct bm_conn *c);
void bm_http_conn_give(struct bm_http *h, struct bm_conn *c, bool broken);

/* http_sock.c: c's template gets the socket callbacks (close-on-exec
 * sockets, the park of idle connections closed handles leave). */
void bm_http_sock_options(struct bm_conn *c);

/* Forgets r's last answer before an attempt. */
void bm_http_req_reset(struct bm_req *r);
/* The options of request r on c (a copy of a connection's template):
 * its URL, method, headers and body; *hdrp gets the header list to free
 * after the transfer, src is the body's reader (lives as long as it). */
void bm_http_req_set(struct bm_http *h, struct bm_req *r, CURL *c, char *errbuf, struct bm_put_src *src,
		     struct curl_slist **hdrp);
/* What a transfer of r on c that ended with cc comes to: 0 when a
 * response arrived (any status), BM_EHTTP for a transport failure worth
 * retrying, BM_EFORMAT for an overlong or malformed answer; r->status and
 * r->err set; logged when verbose. */
int bm_http_req_result(struct bm_http *h, struct bm_req *r, CURL *c, CURLcode cc, const char *errbuf);
/* What attempt `attempt` of r, which ended with rc (bm_http_req_result's),
 * comes to: *again when it is to be tried once more (after a
 * bm_http_backoff), else the request's result (0, or a BM_E* code with
 * msg set). */
int bm_http_judge(struct bm_http *h, struct bm_req *r, int rc, int attempt, bm_check_fn check, void *arg,
		  char *msg, size_t n, atomic_uint_fast64_t *retriesp, bool *again);
/* The wait before retry `attempt` + 1, in ms; bm_http_backoff sleeps it. */
long bm_http_backoff_ms(struct bm_http *h, int attempt);
void bm_http_backoff(struct bm_http *h, int attempt);
/* CLOCK_MONOTONIC in ns. */
uint64_t bm_http_mono_ns(void);

#endif
