/* pool.c — one dataset's worker threads (one per connection), shared by the
 * upload queue (upload.c) and read-ahead (readahead.c).
 *
 * Each user registers a run_one callback at open (bm_pool_add): it takes one
 * unit of its own work under its own lock and does it, and says whether it
 * found any.  A user that queued work calls bm_pool_kick; an idle worker
 * then asks every user in turn (uploads first) until none has work.  The
 * threads start on first need (bm_pool_start: the first upload, or the
 * first blocks read-ahead queues), never at open: a handle that neither
 * writes nor reads ahead has no thread, and its close joins none.  A start
 * that creates no thread leaves the pool as it was, so that the next call
 * tries again; no upload is queued for a pool without workers (read-ahead
 * drops its queue then: nobody waits for a block read ahead).
 * bm_pool_grow adds threads to a started pool (read-ahead under slow
 * answers: readahead.c); it never removes any.  bm_pool_stop lets the
 * workers finish what the users still hand out, then joins them.
 * Owns: struct bm_pool.  Locking: pool->mu guards the thread list (grown
 * under it; bm_pool_stop reads it after setting stop, when no grow can
 * add to it), the kick
 * count and the stop flag; it is a leaf, never held while a run_one runs
 * (the users take their own locks there).
 */
#include "config.h"

#include <stdlib.h>

#include "internal.h"

void bm_pool_init(struct bm_pool *pool, int nthreads)
{
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	pool->want = nthreads;
}

void bm_pool_add(struct bm_pool *pool, bool (*run_one)(void *arg), void (*thread_exit)(void *arg),
		 void *arg)
{
	bm_assert(pool->nthreads == 0 && pool->nusers < BM_POOL_USERS);
	pool->users[pool->nusers].run_one = run_one;
	pool->users[pool->nusers].thread_exit = thread_exit;
	pool->users[pool->nusers].arg = arg;
	pool->nusers++;
}

/* Runs units of work until no user has one; true when it ran any. */
static bool run_all(struct bm_pool *pool)
{
	bool any = false, ran;

	do {
		ran = false;
		for (int i = 0; i < pool->nusers; i++)
			ran |= pool->users[i].run_one(pool->users[i].arg);
		any |= ran;
	} while (ran);
	return any;
}

static void *worker_main(void *arg)
{
	struct bm_pool *pool = arg;

	pthread_mutex_lock(&pool->mu);
	for (;;) {
		/* A kick after this read makes the wait below return: a unit
		 * queued while run_all looked elsewhere is never missed. */
		uint64_t seen = pool->kicks;
		bool stop = pool->stop;
		pthread_mutex_unlock(&pool->mu);
		bool ran = run_all(pool);
		pthread_mutex_lock(&pool->mu);
		if (stop && !ran)
			break; /* stopping, and nothing left to hand out */
		while (!pool->stop && pool->kicks == seen)
			pthread_cond_wait(&pool->cv, &pool->mu);
	}
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->nusers; i++)
		if (pool->users[i].thread_exit)
			pool->users[i].thread_exit(pool->users[i].arg);
	return NULL;
}

int bm_pool_start(struct bm_pool *pool)
{
	int rc = 0;

	pthread_mutex_lock(&pool->mu);
	if (pool->nthreads > 0)
		goto out;
	bm_assert(!pool->stop);
	pthread_t *t = calloc((size_t)pool->want, sizeof(*t));
	if (t == NULL) {
		rc = BM_ENOMEM;
		goto out;
	}
	int n = 0;
	while (n < pool->want && pthread_create(&t[n], NULL, worker_main, pool) == 0)
		n++;
	if (n == 0) {
		free(t); /* no trace: the next call tries again */
		rc = BM_ENOMEM;
		goto out;
	}
	pool->threads = t;
	pool->nthreads = n;
out:
	pthread_mutex_unlock(&pool->mu);
	return rc;
}

int bm_pool_grow(struct bm_pool *pool, int n)
{
	int rc = 0;

	pthread_mutex_lock(&pool->mu);
	if (pool->nthreads == 0 || pool->stop || n <= pool->nthreads)
		goto out; /* not started (the start makes want), stopping, or big enough */
	pthread_t *t = realloc(pool->threads, (size_t)n * sizeof(*t));
	if (t == NULL) {
		rc = BM_ENOMEM;
		goto out;
	}
	pool->threads = t;
	while (pool->nthreads < n && pthread_create(&t[pool->nthreads], NULL, worker_main, pool) == 0)
		pool->nthreads++;
	if (pool->nthreads < n)
		rc = BM_ENOMEM; /* the pool keeps the threads it has */
out:
	pthread_mutex_unlock(&pool->mu);
	return rc;
}

static void kick(struct bm_pool *pool, bool all)
{
	pthread_mutex_lock(&pool->mu);
	pool->kicks++;
	if (all)
		pthread_cond_broadcast(&pool->cv);
	else
		pthread_cond_signal(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
}

void bm_pool_kick(struct bm_pool *pool) { kick(pool, false); }
void bm_pool_kick_all(struct bm_pool *pool) { kick(pool, true); }

void bm_pool_stop(struct bm_pool *pool)
{
	pthread_mutex_lock(&pool->mu);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	free(pool->threads);
	pool->threads = NULL;
	pool->nthreads = 0;
	pthread_mutex_destroy(&pool->mu);
	pthread_cond_destroy(&pool->cv);
}
