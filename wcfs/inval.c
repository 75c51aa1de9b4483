/* inval.c — the kernel cache invalidation of head/ files, on a thread of
 * its own, and the replies that must wait for it.
 *
 * fuse_lowlevel_notify_inval_inode waits for every page it drops that is
 * locked, and a page is locked while its FUSE_READ is queued or served.  So
 * it must never run on a FUSE worker (with -s the only worker, or all of
 * them, may be what that read waits for) nor under a lock a request path
 * may wait for.  A generation check queues the invalidation here and
 * returns; the requests that must see its result (open, getattr, lookup of
 * that file) queue their reply behind it instead of waiting, so workers
 * stay free to serve the reads the invalidation waits for:
 *
 *	worker (open head/f)                 inval thread
 *	check: new generation, n->ds = new
 *	queue inval(old -> new)      ----->  notify_inval_inode(changed blocks)
 *	queue reply(open)                      waits for page P (locked)
 *	return                                 ...
 *	worker: FUSE_READ of P (new ds),
 *	  replies: P unlocked          ----->  P dropped, notify returns
 *	                                     reply(open): the opener reads new bytes
 *
 * Owns: the queue (one FIFO for every node, run in order by one thread) and
 * each node's inval_pending and dead.  Locking: q_mu guards the queue,
 * inval_pending and dead; it is a leaf (taken under check_mu, never held
 * across a notification, a reply or a free).  A node with queued work is not
 * freed when forgotten: the thread frees it after its last job.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wcfs.h"

struct wc_inval {
	struct wc_inval *next;
	struct wc_node *n;
	/* An invalidation (fn NULL): what changed from old (NULL: unknown,
	 * the whole file) to new; references owned by the job. */
	struct wc_ds *old, *new;
	/* Or a deferred call (a reply). */
	void (*fn)(void *arg);
	void *arg;
};

static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static struct wc_inval *q_head, *q_tail;
static bool q_stopping;
static pthread_t q_thread;
static bool q_started;

/* ---- what to invalidate ------------------------------------------------------------- */

static void inval(struct wc_node *n, off_t off, off_t len)
{
	int rc = fuse_lowlevel_notify_inval_inode(wc_m.se, wc_ino_of(n), off, len);

	if (rc < 0 && rc != -ENOENT)
		wc_log("head/%s: cannot invalidate the kernel cache at %jd+%jd: %s", n->path,
		       (intmax_t)off, (intmax_t)len, strerror(-rc));
}

/* The changed blocks of inval_changed, coalesced into runs. */
struct inval_run {
	struct wc_node *n;
	size_t bs;
	uint64_t same_len;         /* blocks below it have one length in both */
	uint64_t run, run_end;     /* changed blocks [run, run_end) not yet sent */
};

static void inval_flush(struct inval_run *r)
{
	if (r->run_end > r->run)
		inval(r->n, (off_t)(r->run * r->bs), (off_t)((r->run_end - r->run) * r->bs));
	r->run = r->run_end = 0;
}

static int inval_range(void *arg, uint64_t first, uint64_t count)
{
	struct inval_run *r = arg;

	if (first >= r->same_len)
		return 1; /* the tail is dropped whole by the caller */
	if (count > r->same_len - first)
		count = r->same_len - first;
	if (first != r->run_end) /* not adjacent to the run: send it */
		inval_flush(r);
	if (r->run_end == 0 && r->run == 0)
		r->run = first;
	r->run_end = first + count;
	return 0;
}

/* Drops from the kernel's page cache the blocks whose content differs
 * between the handles a (old) and b (new), and n's cached attributes.
 * bm_diff_blocks walks only stored blocks, and of two format 2
 * generations only the index pages whose sums differ: its cost is the
 * change's, not the size's (a manifest may claim 2^50 bytes in 4 KiB
 * blocks).  When the change cannot be read, the whole file is dropped. */
static void inval_changed(struct wc_node *n, struct wc_ds *a, struct wc_ds *b)
{
	size_t bs = a->blksize;

	inval(n, -1, 0); /* attributes (size) */
	if (a->blksize != b->blksize) {
		inval(n, 0, 0);
		return;
	}
	uint64_t minsize = a->size < b->size ? a->size : b->size;
	/* Blocks [0, same_len) have the same length in both; the rest (the
	 * old or new tail) is dropped as a whole when the size changed. */
	struct inval_run r = { .n = n, .bs = bs };
	r.same_len = a->size == b->size ? (a->size + bs - 1) / bs : minsize / bs;
	int rc = bm_diff_blocks(a->bm, b->bm, inval_range, &r);
	if (rc < 0) {
		wc_log("head/%s: cannot tell which blocks changed (%s): the whole file is dropped", n->path,
		       bm_last_error(a->bm));
		inval(n, 0, 0);
		return;
	}
	inval_flush(&r);
	if (a->size != b->size)
		inval(n, (off_t)(r.same_len * bs), 0);
}

/* ---- the thread ----------------------------------------------------------------------- */

/* Without locks.  skip: the FUSE loop has stopped; no read would be served
 * for a page a notification waits for, so none is sent. */
static void run_job(struct wc_inval *j, bool skip)
{
	if (j->fn != NULL) {
		j->fn(j->arg);
		return;
	}
	if (!skip && j->old != NULL) {
		inval_changed(j->n, j->old, j->new);
	} else if (!skip) {
		inval(j->n, -1, 0);
		inval(j->n, 0, 0);
	}
	wc_ds_put(j->old);
	wc_ds_put(j->new);
}

static void *inval_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&q_mu);
	for (;;) {
		while (q_head == NULL && !q_stopping)
			pthread_cond_wait(&q_cv, &q_mu);
		struct wc_inval *j = q_head;
		if (j == NULL)
			break; /* stopping, and nothing left */
		q_head = j->next;
		if (q_head == NULL)
			q_tail = NULL;
		bool skip = q_stopping;
		pthread_mutex_unlock(&q_mu);

		run_job(j, skip);

		pthread_mutex_lock(&q_mu);
		struct wc_node *n = j->n;
		bool destroy = --n->inval_pending == 0 && n->dead;
		free(j);
		if (destroy) {
			pthread_mutex_unlock(&q_mu);
			wc_node_destroy(n);
			pthread_mutex_lock(&q_mu);
		}
	}
	pthread_mutex_unlock(&q_mu);
	return NULL;
}

int wc_inval_start(void)
{
	int rc = pthread_create(&q_thread, NULL, inval_main, NULL);

	if (rc != 0) {
		wc_log("cannot start the invalidation thread: %s", strerror(rc));
		return -1;
	}
	q_started = true;
	return 0;
}

void wc_inval_stop(void)
{
	if (!q_started)
		return;
	pthread_mutex_lock(&q_mu);
	q_stopping = true;
	pthread_cond_signal(&q_cv);
	pthread_mutex_unlock(&q_mu);
	pthread_join(q_thread, NULL);
	q_started = false;
}

/* ---- queueing ------------------------------------------------------------------------- */

/* Under q_mu. */
static void enqueue(struct wc_inval *j)
{
	wc_assert(wc_mutex_held(&q_mu));
	j->next = NULL;
	if (q_tail != NULL)
		q_tail->next = j;
	else
		q_head = j;
	q_tail = j;
	j->n->inval_pending++;
	pthread_cond_signal(&q_cv);
}

struct wc_inval *wc_inval_new(void)
{
	return calloc(1, sizeof(struct wc_inval));
}

void wc_inval_submit(struct wc_inval *j, struct wc_node *n, struct wc_ds *old, struct wc_ds *new)
{
	j->n = n;
	j->old = old;
	j->new = new;
	pthread_mutex_lock(&q_mu);
	enqueue(j);
	pthread_mutex_unlock(&q_mu);
}

bool wc_inval_defer(struct wc_node *n, void (*fn)(void *arg), void *arg)
{
	struct wc_inval *j = NULL;

	pthread_mutex_lock(&q_mu);
	if (n->inval_pending > 0 && (j = calloc(1, sizeof(*j))) != NULL) {
		j->n = n;
		j->fn = fn;
		j->arg = arg;
		enqueue(j);
	}
	pthread_mutex_unlock(&q_mu);
	return j != NULL;
}

bool wc_inval_keep(struct wc_node *n)
{
	pthread_mutex_lock(&q_mu);
	bool keep = n->inval_pending > 0;
	if (keep)
		n->dead = true;
	pthread_mutex_unlock(&q_mu);
	return keep;
}
