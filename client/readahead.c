/* readahead.c — sequential access detection and background block fetches.
 *
 * Every page fault on a dataset (virtmem's on_fault hook) reports its block.
 * A fault on the block right after the previous one is sequential.  When a
 * sequential reader has consumed half of what is fetched ahead, the window
 * doubles (2, 4, 8, ... up to max_window) and the blocks up to fault + window
 * are queued: the window grows with what the reader actually reads, so a
 * short sequential run over-fetches little.  Any other fault is random: the
 * window resets and the queue is emptied, so a random reader fetches only
 * what it touches.  Worker threads (one per connection) take blocks from the
 * queue and load them into the page cache with vm_fileh_prefetch, in
 * parallel.  A flat object's blocks are small (a random miss fetches
 * little): there a worker takes a run of consecutive queued blocks and
 * fetches it with one Range GET, then hands its blocks to the page cache
 * one by one (bm_readahead_fill, from loadblk).  max_window keeps read-ahead
 * within half of the RAM budget, and the runs in transit (one buffer per
 * worker) within half of that again.
 * Locking: ds->ra.mu guards the queue and the detector; it is never held
 * while a block is fetched.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store.h"

/* Read from the fault handler: initial-exec, so no lazy TLS allocation. */
static __thread bool in_readahead __attribute__((tls_model("initial-exec")));

/* The block of a run this worker is handing to the page cache. */
static __thread struct {
	bm_dataset *ds;
	uint64_t blk;
	const char *data;
	size_t len;
} held;

bool bm_in_readahead(void)
{
	return in_readahead;
}

int bm_readahead_fill(bm_dataset *ds, uint64_t blk, void *buf)
{
	size_t bs = ds->file.blksize;

	if (held.ds != ds || held.blk != blk)
		return 0;
	if (vm_loadblk_write(buf, 0, held.data, held.len) < 0 ||
	    (held.len < bs && vm_loadblk_zero(buf, held.len, bs - held.len) < 0))
		return BM_ENOMEM;
	atomic_fetch_add(&ds->c.fetched_blocks, 1);
	atomic_fetch_add(&ds->c.fetched_bytes, held.len);
	return 1;
}

static int run_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	memcpy((char *)arg + off, data, len); /* the store keeps it within the range */
	return 0;
}

/* Fetches blocks [first, first + n) of a flat object with one Range GET
 * into buf, then loads each into the page cache.  Errors are not reported:
 * the fault that needs a block fetches it again and reports. */
static void fetch_run(bm_dataset *ds, uint64_t first, size_t n, char *buf)
{
	size_t bs = ds->file.blksize;
	struct bm_version pin;
	char msg[512];

	pthread_mutex_lock(&ds->mu);
	uint64_t size = ds->manifest->size, off = first * bs;
	snprintf(pin.etag, sizeof(pin.etag), "%s", ds->etag);
	snprintf(pin.last_modified, sizeof(pin.last_modified), "%s", ds->last_modified);
	pin.size = size;
	pthread_mutex_unlock(&ds->mu);
	if (off >= size)
		return;
	size_t len = size - off < n * bs ? (size_t)(size - off) : n * bs;
	struct bm_get g = { .range = true, .off = off, .len = len, .pin = &pin,
			    .sink = run_sink, .sink_arg = buf };
	if (bm_store_get(ds->store, "", &g, msg, sizeof(msg)) < 0) {
		if (ds->opt.verbose)
			bm_log("%s: read-ahead of blocks %" PRIu64 "..%" PRIu64 " failed: %s", ds->url,
			       first, first + n - 1, msg);
		return;
	}
	for (size_t k = 0; k * bs < len; k++) {
		held.ds = ds;
		held.blk = first + k;
		held.data = buf + k * bs;
		held.len = len - k * bs < bs ? len - k * bs : bs;
		(void)vm_fileh_prefetch(ds->fh, first + k);
	}
	held.ds = NULL;
}

static void *worker_main(void *arg)
{
	bm_dataset *ds = arg;
	struct bm_readahead *ra = &ds->ra;

	char *buf = NULL;          /* a run's bytes (flat objects) */

	in_readahead = true;
	pthread_mutex_lock(&ra->mu);
	for (;;) {
		while (!ra->stop && ra->qlen == 0)
			pthread_cond_wait(&ra->cv, &ra->mu);
		if (ra->stop)
			break;
		bm_assert(ra->qhead < ra->qcap && ra->qlen <= ra->qcap);
		/* A run: consecutive blocks from the head, a fair share of
		 * the queue so that every worker gets some. */
		size_t want = ra->run_max > 1 ? ra->qlen / (size_t)ra->nthreads : 1;
		want = want < 1 ? 1 : want > ra->run_max ? ra->run_max : want;
		uint64_t first = ra->queue[ra->qhead];
		size_t n = 0;
		while (n < want && ra->qlen > 0 && ra->queue[ra->qhead] == first + n) {
			ra->qhead = (ra->qhead + 1) % ra->qcap;
			ra->qlen--;
			n++;
		}
		pthread_mutex_unlock(&ra->mu);
		if (ra->run_max > 1 && buf == NULL)
			buf = malloc(ra->run_max * ds->file.blksize);
		if (ra->run_max > 1 && buf != NULL) {
			fetch_run(ds, first, n, buf);
		} else {
			/* Errors are not reported here: the fault that needs
			 * the block fetches it again and reports. */
			for (size_t k = 0; k < n; k++)
				(void)vm_fileh_prefetch(ds->fh, first + k);
		}
		pthread_mutex_lock(&ra->mu);
	}
	pthread_mutex_unlock(&ra->mu);
	free(buf);
	return NULL;
}

int bm_readahead_start(bm_dataset *ds)
{
	struct bm_readahead *ra = &ds->ra;
	size_t bs = ds->file.blksize;
	size_t budget = ds->opt.readahead_bytes < ds->opt.cache_bytes / 2
				? ds->opt.readahead_bytes : ds->opt.cache_bytes / 2;

	pthread_mutex_init(&ra->mu, NULL);
	pthread_cond_init(&ra->cv, NULL);
	ra->inited = true;
	ra->max_window = budget / bs;
	if (ra->max_window == 0)
		return 0; /* read-ahead off */
	ra->qcap = ra->max_window;
	ra->queue = calloc(ra->qcap, sizeof(*ra->queue));
	ra->nthreads = ds->opt.connections;
	/* Flat: runs of up to BM_RUN_BYTES_MAX, all workers' buffers within
	 * half of the read-ahead budget. */
	ra->run_max = 1;
	if (ds->flat) {
		size_t run = budget / 2 / (size_t)ra->nthreads;
		run = run < BM_RUN_BYTES_MAX ? run : BM_RUN_BYTES_MAX;
		ra->run_max = run / bs ? run / bs : 1;
	}
	ra->threads = calloc((size_t)ra->nthreads, sizeof(*ra->threads));
	if (ra->queue == NULL || ra->threads == NULL)
		return BM_ENOMEM;
	for (int i = 0; i < ra->nthreads; i++) {
		if (pthread_create(&ra->threads[i], NULL, worker_main, ds) != 0) {
			ra->nthreads = i;
			return BM_ENOMEM;
		}
	}
	return 0;
}

void bm_readahead_stop(bm_dataset *ds)
{
	struct bm_readahead *ra = &ds->ra;

	if (!ra->inited)
		return;
	if (ra->threads == NULL && ra->queue == NULL) {
		pthread_mutex_destroy(&ra->mu);
		pthread_cond_destroy(&ra->cv);
		ra->inited = false;
		return;
	}
	pthread_mutex_lock(&ra->mu);
	ra->stop = true;
	pthread_cond_broadcast(&ra->cv);
	pthread_mutex_unlock(&ra->mu);
	for (int i = 0; i < ra->nthreads; i++)
		pthread_join(ra->threads[i], NULL);
	free(ra->threads);
	free(ra->queue);
	ra->threads = NULL;
	ra->queue = NULL;
	ra->nthreads = 0;
	pthread_mutex_destroy(&ra->mu);
	pthread_cond_destroy(&ra->cv);
	ra->inited = false;
}

void bm_readahead_on_fault(bm_dataset *ds, uint64_t blk)
{
	struct bm_readahead *ra = &ds->ra;
	uint64_t nblk;

	if (ra->nthreads == 0 || bm_in_readahead())
		return;
	pthread_mutex_lock(&ds->mu);
	nblk = bm_manifest_nblk(ds->manifest);
	pthread_mutex_unlock(&ds->mu);

	pthread_mutex_lock(&ra->mu);
	/* Every block faults once per mapping even when it was read ahead
	 * (it is cached, not yet mapped), so a sequential reader's faults are
	 * exactly consecutive.  A jump, even into the range read ahead, is
	 * random access. */
	bool sequential = ra->last != 0 && blk == ra->last;
	bool again = ra->last != 0 && blk + 1 == ra->last; /* same block, another mapping */
	if (again) {
		pthread_mutex_unlock(&ra->mu);
		return;
	}
	if (!sequential) {
		ra->window = 0;
		ra->qlen = 0; /* random access: forget what was queued */
		ra->next = blk + 1;
	} else if (ra->next - blk <= (ra->window + 1) / 2) {
		/* The reader has consumed half of what is fetched ahead:
		 * double the window and queue up to blk + window. */
		ra->window = ra->window ? ra->window * 2 : 2;
		if (ra->window > ra->max_window)
			ra->window = ra->max_window;
		uint64_t from = ra->next > blk + 1 ? ra->next : blk + 1;
		uint64_t to = blk + ra->window; /* inclusive */
		for (uint64_t b = from; b <= to && b < nblk && ra->qlen < ra->qcap; b++) {
			ra->queue[(ra->qhead + ra->qlen) % ra->qcap] = b;
			ra->qlen++;
			ra->next = b + 1;
		}
		pthread_cond_broadcast(&ra->cv);
	}
	/* Never more than max_window ahead, never more queued than fits. */
	bm_assert(ra->window <= ra->max_window && ra->qlen <= ra->qcap);
	bm_assert(ra->next <= blk + 1 + ra->max_window);
	ra->last = blk + 1;
	pthread_mutex_unlock(&ra->mu);
}
