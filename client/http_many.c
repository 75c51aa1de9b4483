/* http_many.c — several HTTP requests at once from one thread, over one
 * curl multi handle and no thread: bm_http_do_all (a fixed set sent
 * together, each retried as bm_http_do would, e.g. an open's manifest GET
 * beside its probe) and flows (bm_http_flow_*: requests started one by
 * one as the caller asks and reported as they end, what bm_reads and
 * `blkmap sum` carry).  The pool and the steps of one request are
 * http.c's (http_pool.h).
 * Owns: struct attempt (one transfer of a round), struct bm_http_flow and
 * its slots.  Locking: the places taken in the pool's bound are counted
 * under h->mu (take_handles, give_handles); a round or a flow is its
 * caller's alone and runs without a lock.
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "internal.h"
#include "http_pool.h"

/* ---- several requests at once ------------------------------------------------------ */

/* n places in the pool's bound, taken at once (never some while waiting
 * for the rest: two callers could then wait for each other): conns[0],
 * a connection that runs all n transfers; the other places hold no
 * connection of their own (an idle one taking a place is closed: its
 * socket would be one more than the bound), counted in ncreated until
 * give_handles.  false: out of memory, nothing taken. */
static bool take_handles(struct bm_http *h, struct bm_conn **conns, int n)
{
	struct bm_conn *dropbuf[BM_HTTP_JOBS_MAX], **drop = dropbuf;
	int ndrop = 0;

	if (n > BM_HTTP_JOBS_MAX && (drop = malloc((size_t)n * sizeof(*drop))) == NULL)
		return false;
	pthread_mutex_lock(&h->mu);
	while (h->nidle + (h->o.connections - h->ncreated) < n)
		pthread_cond_wait(&h->cv, &h->mu);
	if (h->nidle > 0) {
		conns[0] = h->idle[--h->nidle];
	} else if ((conns[0] = bm_http_conn_new(h)) != NULL) {
		h->ncreated++;
	} else {
		pthread_mutex_unlock(&h->mu);
		if (drop != dropbuf)
			free(drop);
		return false;
	}
	for (int i = 1; i < n; i++) {
		if (h->nidle > 0)
			drop[ndrop++] = h->idle[--h->nidle]; /* its place is ours */
		else
			h->ncreated++;
	}
	pthread_mutex_unlock(&h->mu);
	while (ndrop > 0) {
		drop[--ndrop]->parking = true; /* idle: curl kept it after a whole answer */
		bm_http_conn_free(drop[ndrop]);
	}
	if (drop != dropbuf)
		free(drop);
	return true;
}

/* Gives back what take_handles took (conns[0] broken: dropped). */
static void give_handles(struct bm_http *h, struct bm_conn **conns, int n, bool broken)
{
	pthread_mutex_lock(&h->mu);
	h->ncreated -= n - 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	bm_http_conn_give(h, conns[0], broken);
}

/* One transfer of bm_http_do_all's round. */
struct attempt {
	CURL *c;
	struct curl_slist *hdr;
	struct bm_put_src src;
	char errbuf[CURL_ERROR_SIZE];
	bool running;
};

/* Starts job j's attempt on m: false when out of memory (j->rc set). */
static bool attempt_start(struct bm_http *h, CURLM *m, CURL *tpl, struct bm_http_job *j, struct attempt *a)
{
	struct bm_req *r = j->r;

	bm_http_req_reset(r);
	memset(a, 0, sizeof(*a));
	a->src = (struct bm_put_src){ r->body, r->body_len };
	if ((a->c = curl_easy_duphandle(tpl)) == NULL) {
		snprintf(r->err, sizeof(r->err), "cannot create a connection handle");
		return false;
	}
	bm_http_req_set(h, r, a->c, a->errbuf, &a->src, &a->hdr);
	/* Its connection is closed once answered, not kept (the same
	 * multi handle keeps the others'). */
	if (r->close) {
		curl_easy_setopt(a->c, CURLOPT_FORBID_REUSE, 1L);
		/* Nor does it take the kept one (answered already when the
		 * park gave both at once): that one stays for the reads. */
		curl_easy_setopt(a->c, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(a->c, CURLOPT_SOCKOPTDATA, r); /* its socket, for the park */
	}
	if (curl_multi_add_handle(m, a->c) != CURLM_OK) {
		snprintf(r->err, sizeof(r->err), "cannot start the request");
		curl_easy_cleanup(a->c);
		curl_slist_free_all(a->hdr);
		a->c = NULL;
		return false;
	}
	a->running = true;
	return true;
}

/* Ends an attempt whose transfer ended with cc: perform_once's result. */
static int attempt_end(struct bm_http *h, CURLM *m, struct bm_req *r, struct attempt *a, CURLcode cc)
{
	int rc = bm_http_req_result(h, r, a->c, cc, a->errbuf);

	curl_multi_remove_handle(m, a->c);
	curl_easy_cleanup(a->c);
	curl_slist_free_all(a->hdr);
	a->c = NULL;
	a->running = false;
	return rc;
}

static bool cancelled(const struct bm_req *r)
{
	return r->cancel != NULL && atomic_load(r->cancel);
}

/* One round: every job with again[i] set tried once, all at once on m;
 * each judged as it ends (a request whose cancel flag its neighbour's
 * check set is stopped then).  Sets again[i] for those to try again;
 * *failed when a transfer failed (m's connections are then dropped). */
static void do_round(struct bm_http *h, CURLM *m, CURL *tpl, struct bm_http_job *jobs, int n, int attempt,
		     bool *again, struct attempt *at, bool *failed)
{
	int running = 0, left = 0, queued;
	CURLMcode mc = CURLM_OK;
	CURLMsg *msg;

	for (int i = 0; i < n; i++) {
		if (!again[i])
			continue;
		if (cancelled(jobs[i].r)) {
			again[i] = false; /* cancelled since: rc and msg as they are */
			continue;
		}
		if (attempt_start(h, m, tpl, &jobs[i], &at[i])) {
			left++;
		} else {
			jobs[i].rc = bm_http_judge(h, jobs[i].r, BM_ENOMEM, h->o.retries, NULL, NULL, jobs[i].msg, jobs[i].n,
					   NULL, &again[i]);
		}
	}
	while (left > 0) {
		mc = curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &queued)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			for (int i = 0; i < n; i++) {
				if (!at[i].running || at[i].c != msg->easy_handle)
					continue;
				CURLcode cc = msg->data.result;
				int rc = attempt_end(h, m, jobs[i].r, &at[i], cc);
				/* A transfer cut by its cancel leaves the
				 * others' connection as it was (curl closes
				 * its own). */
				*failed |= cc != CURLE_OK && !cancelled(jobs[i].r);
				jobs[i].rc = bm_http_judge(h, jobs[i].r, rc, attempt, jobs[i].check, jobs[i].arg, jobs[i].msg,
						   jobs[i].n, jobs[i].retriesp, &again[i]);
				left--;
				break;
			}
		}
		/* The rest after a multi failure (or none running, yet not
		 * all reported: never waited for), or those a check
		 * cancelled: stopped where they are. */
		bool stop = mc != CURLM_OK || running == 0;
		for (int i = 0; i < n; i++) {
			if (!at[i].running || (!stop && !cancelled(jobs[i].r)))
				continue;
			int rc = attempt_end(h, m, jobs[i].r, &at[i], CURLE_ABORTED_BY_CALLBACK);
			*failed |= stop;
			jobs[i].rc = bm_http_judge(h, jobs[i].r, rc, attempt, jobs[i].check, jobs[i].arg, jobs[i].msg,
					   jobs[i].n, jobs[i].retriesp, &again[i]);
			left--;
		}
		/* The wait ends early for curl's own timeouts (connect,
		 * request): those end the transfer through perform. */
		if (left > 0 && running > 0)
			mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
	}
}

void bm_http_do_all(struct bm_http *h, struct bm_http_job *jobs, int n)
{
	struct bm_conn *conns[BM_HTTP_JOBS_MAX] = { NULL };
	struct attempt at[BM_HTTP_JOBS_MAX];
	bool again[BM_HTTP_JOBS_MAX], failed = false, any = true;

	if (n > BM_HTTP_JOBS_MAX || n > h->o.connections || n < 2) {
		/* Not all at once: one after the other. */
		for (int i = 0; i < n; i++)
			jobs[i].rc = bm_http_do(h, jobs[i].r, jobs[i].check, jobs[i].arg, jobs[i].msg, jobs[i].n,
						jobs[i].retriesp);
		return;
	}
	if (!take_handles(h, conns, n)) {
		for (int i = 0; i < n; i++) {
			snprintf(jobs[i].r->err, sizeof(jobs[i].r->err), "cannot create a connection handle");
			jobs[i].rc = bm_http_judge(h, jobs[i].r, BM_ENOMEM, h->o.retries, NULL, NULL, jobs[i].msg, jobs[i].n,
					   NULL, &again[i]);
		}
		return;
	}
	/* n places in the bound are ours, all the transfers driven by the
	 * first's multi handle, which keeps one connection (MAXCONNECTS 1).
	 * A lone request's connection closes once it is answered: during the
	 * rounds it counts beside the one kept, or the first answer would
	 * close that one to make room for it (an open's manifest GET beside
	 * its probe would leave no connection for the reads after it). */
	long keep = 1;
	for (int i = 0; i < n; i++) {
		again[i] = true;
		keep += jobs[i].r->close;
	}
	curl_multi_setopt(conns[0]->m, CURLMOPT_MAXCONNECTS, keep);
	conns[0]->jobs = jobs; /* a lone one answered whole is parked (http_sock.c) */
	conns[0]->njobs = n;
	for (int attempt = 0; any; attempt++) {
		do_round(h, conns[0]->m, conns[0]->tpl, jobs, n, attempt, again, at, &failed);
		any = false;
		for (int i = 0; i < n; i++)
			any |= again[i];
		if (any)
			bm_http_backoff(h, attempt);
	}
	conns[0]->jobs = NULL;
	conns[0]->njobs = 0;
	curl_multi_setopt(conns[0]->m, CURLMOPT_MAXCONNECTS, 1L);
	give_handles(h, conns, n, failed);
}

/* ---- a flow: many requests in flight from one thread --------------------------------- */

/* A flow holds n places of the pool's bound for its life, and one multi
 * handle (the first place's connection) that keeps up to n connections
 * alive between its transfers: each request started runs on one of
 * them, and a new one can start as soon as any ends, with no thread and
 * no round to wait for.  A request whose try failed transiently waits
 * its bm_http_backoff beside the others (a due time, not a sleep) and is tried
 * again. */
struct flow_slot {
	struct bm_http_job *j;     /* NULL: free */
	struct attempt a;          /* a.running: its transfer is out */
	int attempt;               /* tries made */
	uint64_t due;              /* not running: when it is tried again */
};

struct bm_http_flow {
	struct bm_http *h;
	struct bm_conn *conn;
	int n, busy;               /* slots, and those with a job */
	struct flow_slot *slot;
	struct bm_http_job **done; /* ended, not yet returned: a stack */
	int ndone;
	bool failed;               /* a transfer failed: conn is dropped at the end */
};

int bm_http_flow_new(struct bm_http *h, int n, struct bm_http_flow **fp)
{
	struct bm_http_flow *f = calloc(1, sizeof(*f));

	*fp = NULL;
	pthread_mutex_lock(&h->mu);
	if (n > h->o.connections)
		n = h->o.connections;
	pthread_mutex_unlock(&h->mu);
	if (n < 1)
		n = 1;
	if (f == NULL || (f->slot = calloc((size_t)n, sizeof(*f->slot))) == NULL ||
	    (f->done = calloc((size_t)n, sizeof(*f->done))) == NULL || !take_handles(h, &f->conn, n)) {
		if (f)
			free(f->slot), free(f->done);
		free(f);
		return BM_ENOMEM;
	}
	f->h = h;
	f->n = n;
	curl_multi_setopt(f->conn->m, CURLMOPT_MAXCONNECTS, (long)n);
	*fp = f;
	return 0;
}

int bm_http_flow_room(const struct bm_http_flow *f)
{
	return f->n - f->busy;
}

/* Starts slot s's next try; false when it ended at once (out of memory:
 * its job is done). */
static bool flow_try(struct bm_http_flow *f, struct flow_slot *s)
{
	struct bm_http_job *j = s->j;
	bool again;

	if (attempt_start(f->h, f->conn->m, f->conn->tpl, j, &s->a))
		return true;
	j->rc = bm_http_judge(f->h, j->r, BM_ENOMEM, f->h->o.retries, NULL, NULL, j->msg, j->n, NULL, &again);
	return false;
}

static void flow_done(struct bm_http_flow *f, struct flow_slot *s)
{
	f->done[f->ndone++] = s->j;
	s->j = NULL;
	f->busy--;
}

int bm_http_flow_start(struct bm_http_flow *f, struct bm_http_job *j)
{
	struct flow_slot *s = NULL;

	for (int i = 0; i < f->n && s == NULL; i++)
		if (f->slot[i].j == NULL)
			s = &f->slot[i];
	if (s == NULL)
		return BM_EBUSY;
	memset(s, 0, sizeof(*s));
	s->j = j;
	f->busy++;
	if (!flow_try(f, s))
		flow_done(f, s);
	return 0;
}

/* Judges slot s's try, which ended with cc: done, or due again after
 * its bm_http_backoff. */
static void flow_end(struct bm_http_flow *f, struct flow_slot *s, CURLcode cc)
{
	struct bm_http_job *j = s->j;
	int rc = attempt_end(f->h, f->conn->m, j->r, &s->a, cc);
	bool again;

	f->failed |= cc != CURLE_OK;
	j->rc = bm_http_judge(f->h, j->r, rc, s->attempt, j->check, j->arg, j->msg, j->n, j->retriesp, &again);
	if (!again) {
		flow_done(f, s);
		return;
	}
	s->due = bm_http_mono_ns() + (uint64_t)bm_http_backoff_ms(f->h, s->attempt) * 1000000u;
	s->attempt++;
}

struct bm_http_job *bm_http_flow_next(struct bm_http_flow *f)
{
	CURLMcode mc = CURLM_OK;
	int running = 0, queued;
	CURLMsg *msg;

	while (f->ndone == 0 && f->busy > 0) {
		/* Retries whose bm_http_backoff is over go out again; the first of
		 * those still waiting bounds the wait below. */
		uint64_t now = bm_http_mono_ns(), next = UINT64_MAX;
		int out = 0;
		for (int i = 0; i < f->n; i++) {
			struct flow_slot *s = &f->slot[i];
			if (s->j == NULL || s->a.running)
				continue;
			if (s->due <= now && !flow_try(f, s))
				flow_done(f, s);
			else if (s->due > now && s->due < next)
				next = s->due;
		}
		for (int i = 0; i < f->n; i++)
			out += f->slot[i].a.running;
		if (out > 0)
			mc = curl_multi_perform(f->conn->m, &running);
		while ((msg = curl_multi_info_read(f->conn->m, &queued)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			for (int i = 0; i < f->n; i++) {
				if (f->slot[i].a.running && f->slot[i].a.c == msg->easy_handle) {
					flow_end(f, &f->slot[i], msg->data.result);
					break;
				}
			}
		}
		if (out > 0 && (mc != CURLM_OK || running == 0)) {
			/* A multi failure, or none running yet not all
			 * reported (never waited for): those still out end
			 * as failed tries. */
			for (int i = 0; i < f->n; i++)
				if (f->slot[i].a.running)
					flow_end(f, &f->slot[i], CURLE_ABORTED_BY_CALLBACK);
			continue;
		}
		if (f->ndone > 0)
			break;
		/* The wait ends early for curl's own timeouts (connect,
		 * request): those end the transfer through perform. */
		now = bm_http_mono_ns();
		long ms = 1000;
		if (next != UINT64_MAX)
			ms = next <= now ? 0 : (long)((next - now) / 1000000u) + 1;
		if (ms > 1000)
			ms = 1000;
		if (out > 0)
			curl_multi_poll(f->conn->m, NULL, 0, (int)ms, NULL);
		else if (ms > 0)
			nanosleep(&(struct timespec){ ms / 1000, (ms % 1000) * 1000000L }, NULL);
	}
	return f->ndone > 0 ? f->done[--f->ndone] : NULL;
}

struct bm_http_job *bm_http_flow_drop(struct bm_http_flow *f)
{
	for (int i = 0; i < f->n; i++) {
		struct flow_slot *s = &f->slot[i];
		if (s->j == NULL)
			continue;
		if (s->a.running) {
			attempt_end(f->h, f->conn->m, s->j->r, &s->a, CURLE_ABORTED_BY_CALLBACK);
			f->failed = true; /* a connection cut mid-answer */
		}
		struct bm_http_job *j = s->j;
		s->j = NULL;
		f->busy--;
		return j;
	}
	return f->ndone > 0 ? f->done[--f->ndone] : NULL;
}

void bm_http_flow_free(struct bm_http_flow *f)
{
	if (f == NULL)
		return;
	for (int i = 0; i < f->n; i++) {
		if (f->slot[i].a.running) {
			attempt_end(f->h, f->conn->m, f->slot[i].j->r, &f->slot[i].a, CURLE_ABORTED_BY_CALLBACK);
			f->failed = true; /* a connection cut mid-answer */
		}
	}
	/* Its n connections are closed (the multi handle with them): the
	 * pool keeps one per place it counts, and this one's n - 1 others
	 * would stay open in it otherwise. */
	give_handles(f->h, &f->conn, f->n, f->failed || f->n > 1);
	free(f->slot);
	free(f->done);
	free(f);
}
