/* readahead.c — sequential access detection and background block fetches.
 *
 * Every page fault on a dataset (virtmem's on_fault hook) reports its block.
 * A fault on the block right after the previous one is sequential; so is a
 * fault right after the cached blocks the previous fault also mapped
 * (virtmem's fault-around, told by on_fault_around).  When a
 * sequential reader has consumed half of what is fetched ahead, the window
 * doubles (2, 4, 8, ... up to max_window) and the blocks up to fault + window
 * are queued: the window grows with what the reader actually reads, so a
 * short sequential run over-fetches little.  Any other fault is random: the
 * window resets and the queue is emptied, so a random reader fetches only
 * what it touches.  The dataset's worker pool (pool.c, shared with the
 * uploads; its threads start at the first blocks queued) takes blocks
 * from the queue and loads them into the page cache.  A dataset's whole
 * blocks (formats 1 and 2, or format 3 mapped whole) from a store with
 * flows go over flows: one worker per CPU keeps several block GETs in
 * flight over a flow of its own (one curl multi handle: bm_store_flow_*),
 * each block taken in the page cache before its GET goes out (a run of
 * one block, vm_run_take: a fault on it waits for the answer instead of
 * fetching it again; one not taken yet is fetched by its fault), its
 * bytes written into its slot as they come, checked against the block's
 * sum as any block load's (blocks.c, bm_block_fetch_begin_run) and cached
 * only then (vm_run_end; a failure leaves it EMPTY: the fault fetches it
 * again and reports).  The flows hold places of the store's bound, one
 * always left for the faults and the index pages (a mapping read of a
 * dataset of 64 KiB blocks: a fifth to a third less CPU than one GET per
 * worker thread, its time within a busy machine's noise; docs/client.md,
 * "Read-ahead").  A store
 * without flows keeps one GET per worker: vm_fileh_prefetch, in
 * parallel.  A flat object's blocks are small (a random miss fetches
 * little): there a worker takes a run of consecutive queued blocks and
 * fetches it with one Range GET whose body goes straight into the page
 * cache as it arrives (virtmem's vm_run: each block taken when the answer
 * reaches it, cached once the answer is whole and checked).  A format 3
 * dataset mapped in 64 KiB pieces reads ahead in runs too, pieces of one
 * block from one Range GET of its object into a buffer of the worker
 * (blocks.c checks each piece), then handed to the page cache in one call
 * (vm_fileh_prefetch_run: all LOADING at once, so a fault on one waits
 * for the copy instead of fetching it again), each piece filled from the
 * buffer (bm_readahead_fill, from loadblk).  max_window keeps read-ahead
 * within half of the RAM budget, and the runs in transit within half of
 * that again.  A dataset's block loads are timed:
 * when answers are slow, the connections and workers grow towards the
 * bandwidth-delay product (note_load), up to 4 times `connections`,
 * while growing moves more bytes; when answers are fast, fewer fetch at
 * once (ramp.c decides, the rule `blkmap sum` follows too).  With flows
 * only the GETs in flight grow, not the threads.
 * Owns: struct bm_readahead.
 * Locking: ds->ra.mu guards the queue, the detector and the ramp; it is
 * never held while a block is fetched, nor with ds->mu or the pool's
 * lock.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "store.h"

/* Read from the fault handler: initial-exec, so no lazy TLS allocation. */
static __thread bool in_readahead __attribute__((tls_model("initial-exec")));
/* Loads this worker's current unit ran (bm_readahead_fill counts them):
 * 0 after a prefetch means the block was cached or being loaded. */
static __thread unsigned loads;

/* The run this worker hands to the page cache (pieces of a format 3
 * block): blocks [first, first + n), fetched with one Range GET: len
 * bytes at buf. */
static __thread struct {
	bm_dataset *ds;
	uint64_t first;
	size_t n;
	const char *buf;
	size_t len;
} held;

bool bm_in_readahead(void)
{
	return in_readahead;
}

/* Fetches pieces [first, first + n) of a format 3 or 4 block with one Range
 * GET of its object into buf, each piece checked (blocks.c); *lenp: the
 * bytes.  Errors are not reported: the fault that needs a piece fetches
 * it again and reports. */
static int pieces_get(bm_dataset *ds, uint64_t first, size_t n, char *buf, size_t *lenp)
{
	char msg[512];

	if (bm_fetch_pieces(ds, first, n, buf, lenp, msg, sizeof(msg)) == 0)
		return 0;
	if (ds->opt.verbose)
		bm_log("%s: read-ahead of pieces %" PRIu64 "..%" PRIu64 " failed: %s", ds->url, first,
		       first + n - 1, msg);
	return BM_EIO;
}

/* The sink of a flat run's Range GET: the bytes go into the page cache
 * as they arrive (virtmem's vm_run). */
static int stream_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	int rc = vm_run_write(arg, off, data, len);
	return rc == 0 ? 0 : rc == -ENOMEM ? BM_ENOMEM : BM_EIO;
}

/* A run's blocks are cached: counted before any reader can see them (a
 * reader that waited for the run and then read the stats would otherwise
 * miss them: test_client_flat's fetched_blocks under ThreadSanitizer). */
static void stream_cached(void *arg, size_t blocks, uint64_t bytes)
{
	bm_dataset *ds = arg;

	atomic_fetch_add(&ds->c.fetched_blocks, (uint64_t)blocks);
	atomic_fetch_add(&ds->c.fetched_bytes, bytes);
	atomic_fetch_add(&ds->c.readahead_blocks, (uint64_t)blocks);
}

/* Fetches blocks [first, first + n) of a flat object with one Range GET,
 * streamed into the page cache (vm_run): each block is taken (LOADING)
 * when its first bytes arrive, unless cached or being loaded, written in
 * place as the answer comes, and cached once the answer is whole and
 * checked (the version opened, the range asked for); on a failure the
 * blocks taken turn EMPTY again (the fault that needs one fetches it and
 * reports the error).  Blocks the answer has not reached are not taken:
 * a reader that gets there first fetches its block itself. */
static void stream_run(bm_dataset *ds, uint64_t first, size_t n)
{
	size_t bs = ds->file.blksize;
	struct bm_version pin;
	char msg[512];
	vm_run *run;

	pthread_mutex_lock(&ds->mu);
	uint64_t size = ds->manifest->size, off = first * bs;
	snprintf(pin.etag, sizeof(pin.etag), "%s", ds->etag);
	snprintf(pin.last_modified, sizeof(pin.last_modified), "%s", ds->last_modified);
	pin.size = size;
	pthread_mutex_unlock(&ds->mu);
	if (off >= size)
		return; /* not queued: blocks end with the object */
	if (vm_run_begin(ds->fh, first, n, &run) < 0 || run == NULL)
		return;
	vm_run_on_cached(run, stream_cached, ds);
	size_t len = size - off < n * bs ? (size_t)(size - off) : n * bs;
	struct bm_get g = { .range = true, .off = off, .len = len, .pin = &pin,
			    .sink = stream_sink, .sink_arg = run };
	int rc = bm_store_get(ds->store, "", &g, msg, sizeof(msg));
	if (rc < 0 && ds->opt.verbose)
		bm_log("%s: read-ahead of blocks %" PRIu64 "..%" PRIu64 " failed: %s", ds->url, first,
		       first + n - 1, msg);
	vm_run_end(run, rc == 0 ? (int64_t)len : -1, NULL); /* counted by stream_cached */
}

int bm_readahead_fill(bm_dataset *ds, uint64_t blk, void *buf)
{
	size_t bs = ds->file.blksize;

	loads++;
	if (held.ds != ds || blk < held.first || blk - held.first >= held.n)
		return 0;
	size_t off = (size_t)(blk - held.first) * bs;
	size_t len = off >= held.len ? 0 : held.len - off < bs ? held.len - off : bs;
	if ((len > 0 && vm_loadblk_write(buf, 0, held.buf + off, len) < 0) ||
	    (len < bs && vm_loadblk_zero(buf, len, bs - len) < 0))
		return BM_ENOMEM;
	atomic_fetch_add(&ds->c.fetched_blocks, 1);
	atomic_fetch_add(&ds->c.fetched_bytes, len);
	return 1;
}

/* Fetches pieces [first, first + n) of a format 3 or 4 block with one Range
 * GET into buf, then hands them to the page cache as one run: virtmem
 * makes every one of them LOADING at once (a fault on one waits for the
 * copy rather than fetching it again), then fills them from buf in order
 * (bm_readahead_fill).  While the GET runs the pieces stay EMPTY. */
static void fetch_run(bm_dataset *ds, uint64_t first, size_t n, char *buf)
{
	size_t len = 0;

	if (pieces_get(ds, first, n, buf, &len) < 0)
		return;
	held.ds = ds;
	held.first = first;
	held.n = n;
	held.buf = buf;
	held.len = len;
	(void)vm_fileh_prefetch_run(ds->fh, first, n);
	held.ds = NULL;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A dataset's block load took secs for bytes.  Every BM_RA_EPOCH loads,
 * the least seconds per byte among them (the round trip when answers
 * are slow; a load that only waited for CPU is slower, never faster)
 * says how many GETs in flight move BM_RA_TARGET_RATE (need), and the
 * bytes they brought over the epoch's time the rate: bm_ramp_epoch
 * (ramp.c) decides how many workers fetch at once (ra->conns).  On
 * loopback more in flight only queue (for the CPU and the server), which
 * makes every load slower and seemed to call for still more: without the
 * rate's say, 16 grew to 64 and stayed.  Growing adds connections and workers
 * (never taken away: fewer then fetch at once, the others idle).  Flat
 * objects do not come here: their requests grow in size instead (runs). */
static void note_load(bm_dataset *ds, double secs, size_t bytes)
{
	struct bm_readahead *ra = &ds->ra;
	double per_byte = secs / (double)(bytes ? bytes : 1), now = now_seconds();
	int was = 0, to = 0;
	double least = 0;

	pthread_mutex_lock(&ra->mu);
	if (ra->epoch_n == 0 && ra->epoch_start == 0)
		ra->epoch_start = now - secs; /* the first load's start */
	if (ra->epoch_n == 0 || per_byte < ra->epoch_min)
		ra->epoch_min = per_byte;
	ra->epoch_bytes += (double)bytes;
	if (++ra->epoch_n >= BM_RA_EPOCH) {
		double need = BM_RA_TARGET_RATE * ra->epoch_min + 1; /* rounded up */
		double span = now - ra->epoch_start;
		double rate = ra->epoch_bytes / (span > 1e-6 ? span : 1e-6);
		least = ra->epoch_min;
		ra->epoch_n = 0;
		ra->epoch_bytes = 0;
		ra->epoch_start = now;
		was = ra->conns;
		ra->conns = to = bm_ramp_epoch(&ra->ramp, rate, need);
	}
	pthread_mutex_unlock(&ra->mu);
	if (to == was)
		return;
	if (ds->opt.verbose)
		bm_log("%s: read-ahead: a block of %zu bytes takes %.2f ms at least: %d requests in flight",
		       ds->url, bytes, least * (double)bytes * 1e3, to);
	if (to < was)
		return; /* the workers over it stop at the end of their unit */
	/* No lock held: each takes its own. */
	if (bm_store_set_connections(ds->store, to) < 0)
		return;
	if (ra->flows) {
		/* The flows' places grow with the bound: no more threads. */
		pthread_mutex_lock(&ra->mu);
		if (to > ra->store_conns)
			ra->store_conns = to;
		pthread_mutex_unlock(&ra->mu);
	} else if (bm_pool_grow(&ds->pool, to) < 0) {
		return; /* what was added stays, and fetches */
	}
	bm_pool_kick_all(&ds->pool);
}

/* ---- whole blocks over a flow ------------------------------------------------------ */

/* One block GET of a worker's flow: its bytes go into the page cache
 * through a run of that one block (vm_run, taken before the GET goes
 * out: a fault on the block waits for it), checked as any block load's
 * (blocks.c: bm_block_fetch_begin_run). */
struct flow_get {
	struct bm_store_flow_get x; /* first: bm_store_flow_next hands it back */
	struct bm_block_fetch *f;  /* NULL: the slot is free */
	vm_run *run;
	uint64_t blk;
	struct timespec t0;
};

/* A flow's block is cached: counted before any reader can see it (as
 * stream_cached; blocks.c counted it fetched already). */
static void flow_cached(void *arg, size_t blocks, uint64_t bytes)
{
	bm_dataset *ds = arg;

	(void)bytes;
	atomic_fetch_add(&ds->c.readahead_blocks, (uint64_t)blocks);
}

/* Starts the GET of block blk in g over flow: true when it went out.
 * false when there is nothing to fetch (the block is cached, being
 * loaded, or no RAM is left; a hole is cached as zeros here) or it
 * failed at once (not reported: the fault that needs it fetches it). */
static bool flow_get_start(bm_dataset *ds, struct bm_store_flow *flow, struct flow_get *g,
			   uint64_t blk)
{
	int rc;

	g->blk = blk;
	g->f = NULL;
	if (vm_run_begin(ds->fh, blk, 1, &g->run) < 0 || g->run == NULL)
		return false;
	if (vm_run_take(g->run) <= 0) {
		(void)vm_run_end(g->run, -1, NULL);
		return false;
	}
	vm_run_on_cached(g->run, flow_cached, ds);
	g->x = (struct bm_store_flow_get){ .tag = g };
	clock_gettime(CLOCK_MONOTONIC, &g->t0);
	rc = bm_block_fetch_begin_run(ds, blk, g->run, &g->f, &g->x.key, &g->x.g, &g->x.msg, &g->x.n);
	if (rc <= 0) {
		g->f = NULL;
		(void)vm_run_end(g->run, rc == 0 ? 0 : -1, NULL); /* a hole: zeros */
		return false;
	}
	if ((rc = bm_store_flow_start(flow, &g->x)) < 0) {
		(void)bm_block_fetch_end(ds, g->f, rc);
		g->f = NULL;
		(void)vm_run_end(g->run, -1, NULL);
		return false;
	}
	return true;
}

/* Ends g's GET (x->rc its result): the block checked (blocks.c) is
 * cached, else it turns EMPTY again (the fault that needs it fetches it
 * and reports the error). */
static void flow_get_end(bm_dataset *ds, struct flow_get *g)
{
	size_t bytes = bm_block_fetch_bytes(g->f);

	if (g->x.rc < 0 && ds->opt.verbose)
		bm_log("%s: read-ahead of block %" PRIu64 " failed: %s", ds->url, g->blk, g->x.msg);
	int rc = bm_block_fetch_end(ds, g->f, g->x.rc);
	g->f = NULL;
	(void)vm_run_end(g->run, rc == 0 ? (int64_t)bytes : -1, NULL);
	if (rc == 0)
		note_load(ds, seconds_since(&g->t0), ds->file.blksize);
}

/* A flow's share of the GETs in flight: ra->conns among the flow
 * workers, within the places of the store's bound left (one stays).
 * Under ra->mu. */
static int flow_share(const struct bm_readahead *ra, int mine)
{
	int share = (ra->conns + ra->flow_workers - 1) / ra->flow_workers;
	int left = ra->store_conns - 1 - (ra->flow_places - mine);
	return share < left ? share : left;
}

/* The pool's unit of read-ahead work with flows: blocks taken from the
 * queue one by one as long as there are, each GET sent as soon as the
 * flow has room and fewer than ra->conns are in flight in all, each
 * handed to the page cache as it ends.  The unit ends when nothing is
 * queued nor in flight (its flow's connections closed with it), or to
 * grow its flow when the ramp raised ra->conns (drained first). */
static bool readahead_flow_one(bm_dataset *ds)
{
	struct bm_readahead *ra = &ds->ra;
	struct bm_store_flow *flow = NULL;
	struct flow_get *g = NULL;
	int n, inflight = 0;

	pthread_mutex_lock(&ra->mu);
	if (ra->stop || ra->qlen == 0 || ra->active >= ra->conns || ra->flowing >= ra->flow_workers ||
	    (n = flow_share(ra, 0)) < 1) {
		pthread_mutex_unlock(&ra->mu);
		return false;
	}
	ra->flowing++;
	ra->flow_places += n;
	pthread_mutex_unlock(&ra->mu);
	if ((g = calloc((size_t)n, sizeof(*g))) == NULL || bm_store_flow_new(ds->store, n, &flow) < 0) {
		free(g);
		pthread_mutex_lock(&ra->mu);
		ra->flowing--;
		ra->flow_places -= n;
		pthread_mutex_unlock(&ra->mu);
		return false; /* the faults load what they touch */
	}
	in_readahead = true;
	for (;;) {
		for (int i = 0; i < n; i++) {
			if (g[i].f != NULL)
				continue;
			pthread_mutex_lock(&ra->mu);
			bool go = !ra->stop && ra->qlen > 0 && ra->active < ra->conns &&
				  flow_share(ra, n) <= n;
			uint64_t blk = 0;
			if (go) {
				blk = ra->queue[ra->qhead];
				ra->qhead = (ra->qhead + 1) % ra->qcap;
				ra->qlen--;
				ra->active++;
			}
			pthread_mutex_unlock(&ra->mu);
			if (!go)
				break;
			if (flow_get_start(ds, flow, &g[i], blk)) {
				inflight++;
				continue;
			}
			pthread_mutex_lock(&ra->mu);
			ra->active--;
			pthread_mutex_unlock(&ra->mu);
			i--; /* the slot is still free */
		}
		if (inflight == 0)
			break;
		struct bm_store_flow_get *x = bm_store_flow_next(flow);
		bm_assert(x != NULL);
		flow_get_end(ds, (struct flow_get *)x);
		inflight--;
		pthread_mutex_lock(&ra->mu);
		ra->active--;
		pthread_mutex_unlock(&ra->mu);
	}
	in_readahead = false;
	bm_store_flow_free(flow);
	free(g);
	pthread_mutex_lock(&ra->mu);
	ra->flowing--;
	ra->flow_places -= n;
	pthread_mutex_unlock(&ra->mu);
	return true;
}

/* A run's bytes (pieces of a format 3 or 4 block), one buffer per pool worker. */
static __thread char *run_buf;

/* The pool's unit of read-ahead work: a run of queued blocks, fetched. */
static bool readahead_run_one(void *arg)
{
	bm_dataset *ds = arg;
	struct bm_readahead *ra = &ds->ra;

	/* Under the lock: the pool is the uploads' too, so a worker may run
	 * this while the first mapping's bm_readahead_start sets it (a data
	 * race ThreadSanitizer caught in test_client_changes). */
	pthread_mutex_lock(&ra->mu);
	bool flows = ra->flows;
	pthread_mutex_unlock(&ra->mu);
	if (flows)
		return readahead_flow_one(ds);
	pthread_mutex_lock(&ra->mu);
	/* At most ra->conns fetch at once: the others idle (until a kick)
	 * while those loop. */
	if (ra->stop || ra->qlen == 0 || ra->active >= ra->conns) {
		pthread_mutex_unlock(&ra->mu);
		return false;
	}
	bm_assert(ra->qhead < ra->qcap && ra->qlen <= ra->qcap);
	/* A run: the consecutive blocks queued at the head, as many as one
	 * GET carries (run_max).  Not a fair share of the queue among the
	 * workers: the share of a short queue (each burst's tail, the
	 * window's first doublings) was a block each, a 16 KiB Range GET
	 * costing the server and the client about what a 2 MiB one does
	 * (bench_peers' map: 1,100 GETs for 256 MiB instead of 150;
	 * docs/client.md, "Fetch sizes"). */
	size_t want = ra->run_max;
	uint64_t first = ra->queue[ra->qhead];
	size_t n = 0;
	/* The pieces of a format 3 or 4 block come from its object: a run ends
	 * with the block. */
	while (n < want && ra->qlen > 0 && ra->queue[ra->qhead] == first + n &&
	       (n == 0 || ds->vm_per_blk <= 1 || (first + n) % ds->vm_per_blk != 0)) {
		ra->qhead = (ra->qhead + 1) % ra->qcap;
		ra->qlen--;
		n++;
	}
	size_t run_max = ra->run_max;
	ra->active++;
	pthread_mutex_unlock(&ra->mu);

	in_readahead = true;
	if (run_max > 1 && !ds->flat && run_buf == NULL)
		run_buf = malloc(run_max * ds->file.blksize);
	if (run_max > 1 && ds->flat) {
		stream_run(ds, first, n);
	} else if (run_max > 1 && run_buf != NULL) {
		fetch_run(ds, first, n, run_buf);
	} else {
		/* Errors are not reported here: the fault that needs the
		 * block fetches it again and reports. */
		for (size_t k = 0; k < n; k++) {
			struct timespec t0;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			loads = 0;
			int rc = vm_fileh_prefetch(ds->fh, first + k);
			if (rc == 0 && loads > 0)
				note_load(ds, seconds_since(&t0), ds->file.blksize);
		}
	}
	in_readahead = false;
	pthread_mutex_lock(&ra->mu);
	ra->active--;
	pthread_mutex_unlock(&ra->mu);
	return true;
}

/* A pool worker ends: its run buffer goes. */
static void readahead_thread_exit(void *arg)
{
	(void)arg;
	free(run_buf);
	run_buf = NULL;
}

void bm_readahead_init(bm_dataset *ds)
{
	pthread_mutex_init(&ds->ra.mu, NULL);
	bm_pool_add(&ds->pool, readahead_run_one, readahead_thread_exit, ds);
}

int bm_readahead_start(bm_dataset *ds)
{
	struct bm_readahead *ra = &ds->ra;
	size_t bs = ds->file.blksize;
	size_t budget = ds->opt.readahead_bytes < ds->opt.cache_bytes / 2
				? ds->opt.readahead_bytes : ds->opt.cache_bytes / 2;
	int nthreads = ds->opt.connections;

	pthread_mutex_lock(&ra->mu);
	bool started = ra->queue != NULL;
	pthread_mutex_unlock(&ra->mu);
	if (started || budget / bs == 0)
		return 0; /* started already, or read-ahead off */
	uint64_t *queue = calloc(budget / bs, sizeof(*queue));
	if (queue == NULL)
		return BM_ENOMEM;
	/* The pool's workers start at the first blocks queued (on_fault):
	 * an open that reads nothing ahead creates no thread. */
	pthread_mutex_lock(&ra->mu);
	ra->max_window = budget / bs;
	ra->qcap = ra->max_window;
	ra->queue = queue;
	/* Flat: runs of up to BM_RUN_BYTES_MAX, all workers' runs in
	 * transit within half of the read-ahead budget. */
	ra->run_max = 1;
	ra->conns = nthreads;
	ra->conns_max = nthreads * BM_RA_CONNS_FACTOR < 256 ? nthreads * BM_RA_CONNS_FACTOR : 256;
	if (ra->conns_max < nthreads)
		ra->conns_max = nthreads;
	bm_ramp_init(&ra->ramp, nthreads, nthreads / 4, ra->conns_max, 0); /* the rate judges (ramp.h) */
	/* A dataset's whole blocks, from a store with flows: several GETs
	 * in flight per worker, one worker per CPU. */
	ra->flows = !ds->flat && ds->vm_per_blk <= 1 && ds->store->ops->get_begin != NULL;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	ra->flow_workers = ncpu < 1 ? 1 : ncpu > nthreads ? nthreads : (int)ncpu;
	ra->store_conns = nthreads;
	if (ds->flat || ds->vm_per_blk > 1) {
		/* A format 3 dataset mapped in pieces: runs of a block's
		 * pieces, at most the whole block (one GET of its object). */
		size_t run = budget / 2 / (size_t)nthreads;
		size_t most = ds->flat ? BM_RUN_BYTES_MAX : ds->blksize;
		run = run < most ? run : most;
		ra->run_max = run / bs ? run / bs : 1;
	}
	pthread_mutex_unlock(&ra->mu);
	return 0;
}

void bm_readahead_stop(bm_dataset *ds)
{
	struct bm_readahead *ra = &ds->ra;

	pthread_mutex_lock(&ra->mu);
	ra->stop = true;
	ra->qlen = 0; /* nothing more is handed out */
	pthread_mutex_unlock(&ra->mu);
}

void bm_readahead_free(bm_dataset *ds)
{
	free(ds->ra.queue);
	ds->ra.queue = NULL;
	pthread_mutex_destroy(&ds->ra.mu);
}

void bm_readahead_on_fault(bm_dataset *ds, uint64_t blk)
{
	struct bm_readahead *ra = &ds->ra;
	uint64_t nblk;
	bool kick = false;

	if (bm_in_readahead())
		return;
	pthread_mutex_lock(&ra->mu);
	bool off = ra->max_window == 0 || ra->stop;
	pthread_mutex_unlock(&ra->mu);
	if (off)
		return;
	pthread_mutex_lock(&ds->mu);
	nblk = (ds->manifest->size + ds->file.blksize - 1) / ds->file.blksize; /* virtmem's */
	pthread_mutex_unlock(&ds->mu);

	pthread_mutex_lock(&ra->mu);
	/* Every block faults once per mapping even when it was read ahead
	 * (it is cached, not yet mapped), unless the fault before it mapped
	 * it (bm_readahead_on_fault_around moved ra->last past those), so a
	 * sequential reader's faults are exactly consecutive.  A jump, even
	 * into the range read ahead, is random access. */
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
		kick = true;
	}
	/* Never more than max_window ahead, never more queued than fits. */
	bm_assert(ra->window <= ra->max_window && ra->qlen <= ra->qcap);
	bm_assert(ra->next <= blk + 1 + ra->max_window);
	ra->last = blk + 1;
	pthread_mutex_unlock(&ra->mu);
	if (!kick)
		return;
	/* The workers start here, at the first blocks queued (after ra->mu:
	 * no two locks).  None to be had: the queue is dropped (read-ahead
	 * is an optimisation: the faults load what they touch), and the next
	 * sequential fault tries again. */
	if (bm_pool_start(&ds->pool) < 0) {
		pthread_mutex_lock(&ra->mu);
		ra->qlen = 0;
		pthread_mutex_unlock(&ra->mu);
		if (ds->opt.verbose)
			bm_log("%s: no read-ahead: cannot start a worker thread", ds->url);
		return;
	}
	bm_pool_kick_all(&ds->pool);
}

void bm_readahead_on_fault_around(bm_dataset *ds, uint64_t blk, size_t n)
{
	struct bm_readahead *ra = &ds->ra;

	/* The fault on blk - 1 mapped these: the next sequential fault is
	 * on blk + n.  Nothing is queued for them: read-ahead stays within
	 * its window of the reader's last fault, not of what it mapped. */
	pthread_mutex_lock(&ra->mu);
	if (ra->last == blk)
		ra->last = blk + n;
	pthread_mutex_unlock(&ra->mu);
}
