/* upload.c — the upload queue of a commit: copies of blocks (and, in format
 * v2, of the commit's index pages) PUT in parallel by the dataset's worker
 * pool (pool.c), as immutable objects.
 *
 * bm_upload_queue copies the bytes and returns at once (it waits only while
 * max_queued copies are in memory); bm_upload_wait waits for all and
 * reports the first error.  A block whose PUT failed stays on the failed
 * list, bytes kept, for the next commit to queue again (its change is still
 * pending); a failed page is dropped (the next commit writes its pages
 * again).  It knows nothing of changes or manifests: changes.c and commit.c
 * call it, and it calls only the pool, the store and the page cache.
 * Owns: struct bm_upload and its jobs.  Locking: ds->up.mu guards the
 * queue, the failed list, the kept buffers and the error; never held with
 * ds->mu (bm_set_error is called after it is released).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_load.h"
#include "internal.h"
#include "store.h"

struct bm_upload_job {
	struct bm_upload_job *next;
	uint64_t index;            /* the block (a block's job) */
	bool page;                 /* an index page, not a block */
	char key[BM_KEY_BLOCK_SIZE];
	void *data;
	size_t len;
};

/* A buffer of blksize bytes for a block's job: one kept from an earlier
 * job, or a new one. */
static void *buf_get(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;
	void *p = NULL;

	pthread_mutex_lock(&up->mu);
	if (up->nbufs > 0)
		p = up->bufs[--up->nbufs];
	pthread_mutex_unlock(&up->mu);
	return p ? p : malloc(ds->blksize);
}

/* Frees the buffers kept (up->mu held, or no worker running). */
static void free_bufs_locked(struct bm_upload *up)
{
	while (up->nbufs > 0)
		free(up->bufs[--up->nbufs]);
}

/* Frees job, keeping a block's buffer for the next job (up->mu held).  At
 * most max_queued buffers are kept, as many as the queue holds, and only
 * until the commit's uploads are done (bm_upload_wait). */
static void job_free_locked(struct bm_upload *up, struct bm_upload_job *job)
{
	bm_assert(bm_mutex_held(&up->mu));
	if (!job->page && job->data != NULL && up->bufs != NULL && up->nbufs < up->max_queued)
		up->bufs[up->nbufs++] = job->data;
	else
		free(job->data);
	free(job);
}

static int put_job(bm_dataset *ds, struct bm_upload_job *job, char *msg, size_t n)
{
	int rc = bm_put_immutable(ds->store, job->key, job->data, job->len, true, msg, n);
	if (rc == 0 && job->page) {
		bm_pages_count_stored(ds->pages, job->len);
	} else if (rc == 0) {
		atomic_fetch_add(&ds->c.uploaded_blocks, 1);
		atomic_fetch_add(&ds->c.uploaded_bytes, job->len);
	}
	return rc;
}

/* The pool's unit of upload work: one job from the queue, PUT. */
static bool upload_run_one(void *arg)
{
	bm_dataset *ds = arg;
	struct bm_upload *up = &ds->up;
	char msg[400];

	pthread_mutex_lock(&up->mu);
	struct bm_upload_job *job = up->head;
	if (job == NULL) {
		pthread_mutex_unlock(&up->mu);
		return false;
	}
	up->head = job->next;
	if (up->head == NULL)
		up->tail = NULL;
	bool skip = up->err != 0; /* the commit fails anyway */
	pthread_mutex_unlock(&up->mu);
	int rc = skip ? BM_EHTTP : put_job(ds, job, msg, sizeof(msg));
	pthread_mutex_lock(&up->mu);
	if (rc < 0 && up->err == 0) {
		up->err = rc;
		if (job->page)
			bm_fmt(up->errmsg, sizeof(up->errmsg), "upload of %s: %s", job->key, msg);
		else
			bm_fmt(up->errmsg, sizeof(up->errmsg), "upload of block %" PRIu64 ": %s", job->index,
			       msg);
	}
	if (rc < 0 && !job->page) {
		/* Its change stays queued for the next generation: keep the
		 * bytes, so that the next commit uploads them. */
		job->next = up->failed;
		up->failed = job;
	} else {
		job_free_locked(up, job);
	}
	bm_assert(up->queued > 0); /* each job was counted when queued */
	up->queued--;
	pthread_cond_broadcast(&up->cv);
	pthread_mutex_unlock(&up->mu);
	return true;
}

void bm_upload_init(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;

	pthread_mutex_init(&up->mu, NULL);
	pthread_cond_init(&up->cv, NULL);
	up->max_queued = (size_t)ds->opt.connections * 2;
	up->bufs = calloc(up->max_queued, sizeof(*up->bufs)); /* NULL: none kept */
	bm_pool_add(&ds->pool, upload_run_one, NULL, ds);
}

void bm_upload_free(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;

	bm_assert(up->head == NULL); /* the pool ran them all before it stopped */
	while (up->failed) { /* kept for a next commit that will not come */
		struct bm_upload_job *job = up->failed;
		up->failed = job->next;
		free(job->data);
		free(job);
	}
	free_bufs_locked(up);
	free(up->bufs);
	up->bufs = NULL;
	pthread_mutex_destroy(&up->mu);
	pthread_cond_destroy(&up->cv);
}

/* Appends job to the upload queue (up->mu held). */
static void enqueue_locked(struct bm_upload *up, struct bm_upload_job *job)
{
	bm_assert(bm_mutex_held(&up->mu));
	bm_assert((up->head == NULL) == (up->tail == NULL));
	job->next = NULL;
	if (up->tail)
		up->tail->next = job;
	else
		up->head = job;
	up->tail = job;
	up->queued++;
}

static int queue_job(bm_dataset *ds, struct bm_upload_job *job)
{
	struct bm_upload *up = &ds->up;

	pthread_mutex_lock(&up->mu);
	/* Bounded: at most max_queued copies in memory. */
	while (up->queued >= up->max_queued)
		pthread_cond_wait(&up->cv, &up->mu);
	enqueue_locked(up, job);
	pthread_mutex_unlock(&up->mu);
	bm_pool_kick(&ds->pool);
	return 0;
}

/* The workers, started on the first upload; none to be had is an error
 * (a job queued without a worker would never be uploaded). */
static int start_workers(bm_dataset *ds)
{
	if (bm_pool_start(&ds->pool) == 0)
		return 0;
	bm_set_error(ds, BM_ENOMEM, "%s: cannot start an upload thread", ds->url);
	return BM_ENOMEM;
}

int bm_upload_queue(bm_dataset *ds, uint64_t index, const char *key, const void *buf, size_t len)
{
	int rc;

	if ((rc = start_workers(ds)) < 0)
		return rc;
	struct bm_upload_job *job = calloc(1, sizeof(*job));
	if (job == NULL || (job->data = buf_get(ds)) == NULL) {
		free(job);
		return BM_ENOMEM;
	}
	memcpy(job->data, buf, len);
	job->len = len;
	job->index = index;
	bm_fmt(job->key, sizeof(job->key), "%s", key); /* "blocks/<sum>" */
	return queue_job(ds, job);
}

int bm_upload_page(bm_dataset *ds, const char *sum, const void *data, size_t len)
{
	int rc;

	if ((rc = start_workers(ds)) < 0)
		return rc;
	struct bm_upload_job *job = calloc(1, sizeof(*job));
	if (job == NULL || (job->data = malloc(len ? len : 1)) == NULL) {
		free(job);
		return BM_ENOMEM;
	}
	memcpy(job->data, data, len);
	job->len = len;
	job->page = true;
	bm_fmt(job->key, sizeof(job->key), "index/%s", sum);
	return queue_job(ds, job);
}

/* Empties the list of failed uploads: requeued, or dropped.  Jobs still
 * running finish first (one that fails joins the list), and their error
 * is forgotten: what failed is tried again, or its change is dropped. */
static void take_failed(bm_dataset *ds, bool requeue)
{
	struct bm_upload *up = &ds->up;

	pthread_mutex_lock(&up->mu);
	while (up->queued > 0)
		pthread_cond_wait(&up->cv, &up->mu);
	up->err = 0;
	bool any = up->failed != NULL;
	while (up->failed) {
		struct bm_upload_job *job = up->failed;
		up->failed = job->next;
		if (requeue)
			enqueue_locked(up, job);
		else
			job_free_locked(up, job);
	}
	pthread_mutex_unlock(&up->mu);
	if (any && requeue)
		bm_pool_kick_all(&ds->pool); /* the pool ran them before: it is started */
}

void bm_upload_requeue_failed(bm_dataset *ds) { take_failed(ds, true); }
void bm_upload_drop_failed(bm_dataset *ds) { take_failed(ds, false); }

int bm_upload_wait(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;
	int rc;

	pthread_mutex_lock(&up->mu);
	while (up->queued > 0)
		pthread_cond_wait(&up->cv, &up->mu);
	free_bufs_locked(up); /* not kept between commits: outside the budget */
	rc = up->err;
	char errmsg[sizeof(up->errmsg)];
	memcpy(errmsg, up->errmsg, sizeof(errmsg));
	up->err = 0;
	pthread_mutex_unlock(&up->mu);
	if (rc < 0) /* after the unlock: bm_set_error takes ds->mu, never with up->mu */
		bm_set_error(ds, rc, "%s", errmsg);
	return rc;
}
