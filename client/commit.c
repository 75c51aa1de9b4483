/* commit.c — publishing changes: parallel block uploads, the next
 * generation's manifest (format v2: its index pages; a v1 dataset
 * upgraded), the manifest compare-and-swap, kept generations, and
 * bm_write.
 *
 * The protocol is docs/FORMAT.md's "Commit".  Dirty pages reach us through
 * virtmem's writeout (storeblk, one block at a time, in block order); each is
 * hashed, copied and queued for upload, so storeblk returns quickly and the
 * uploads run in parallel on the upload workers (one per connection).  The
 * copy matters: once storeblk returns the page may be written again.
 * Owns: the upload queue (ds->up) and the change list (ds->changes).
 * Locking: ds->up.mu guards the queue; ds->mu guards the change list and the
 * manifest.  Never both at once.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index_load.h"
#include "internal.h"
#include "gcmark.h"
#include "store.h"

struct bm_upload_job {
	struct bm_upload_job *next;
	uint64_t index;
	char key[BM_KEY_BLOCK_SIZE];
	void *data;
	size_t len;
};

/* ---- upload workers ------------------------------------------------------ */

/* A buffer of blksize bytes for a job: one kept from an earlier job, or a
 * new one. */
static void *buf_get(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;
	void *p = NULL;

	pthread_mutex_lock(&up->mu);
	if (up->nbufs > 0)
		p = up->bufs[--up->nbufs];
	pthread_mutex_unlock(&up->mu);
	return p ? p : malloc(ds->file.blksize);
}

/* Frees the buffers kept (up->mu held, or no worker running). */
static void free_bufs_locked(struct bm_upload *up)
{
	bm_assert(up->nthreads == 0 || bm_mutex_held(&up->mu));
	while (up->nbufs > 0)
		free(up->bufs[--up->nbufs]);
}

/* Frees job, keeping its buffer for the next job (up->mu held).  At most
 * max_queued buffers are kept, as many as the queue holds, and only until
 * the commit's uploads are done (bm_upload_wait). */
static void job_free_locked(struct bm_upload *up, struct bm_upload_job *job)
{
	bm_assert(bm_mutex_held(&up->mu));
	if (job->data != NULL && up->bufs != NULL && up->nbufs < up->max_queued)
		up->bufs[up->nbufs++] = job->data;
	else
		free(job->data);
	free(job);
}

static int put_block(bm_dataset *ds, struct bm_upload_job *job, char *msg, size_t n)
{
	int rc = bm_put_immutable(ds->store, job->key, job->data, job->len, true, msg, n);
	if (rc == 0) {
		atomic_fetch_add(&ds->c.uploaded_blocks, 1);
		atomic_fetch_add(&ds->c.uploaded_bytes, job->len);
	}
	return rc;
}

static void *upload_main(void *arg)
{
	bm_dataset *ds = arg;
	struct bm_upload *up = &ds->up;
	char msg[400];

	pthread_mutex_lock(&up->mu);
	for (;;) {
		while (!up->stop && up->head == NULL)
			pthread_cond_wait(&up->cv, &up->mu);
		if (up->head == NULL)
			break; /* stop, and nothing left */
		struct bm_upload_job *job = up->head;
		up->head = job->next;
		if (up->head == NULL)
			up->tail = NULL;
		bool skip = up->err != 0; /* the commit fails anyway */
		pthread_mutex_unlock(&up->mu);
		int rc = skip ? BM_EHTTP : put_block(ds, job, msg, sizeof(msg));
		pthread_mutex_lock(&up->mu);
		if (rc < 0 && up->err == 0) {
			up->err = rc;
			snprintf(up->errmsg, sizeof(up->errmsg), "upload of block %" PRIu64 ": %s",
				 job->index, msg);
		}
		if (rc < 0) {
			/* Its change stays queued for the next generation: keep
			 * the bytes, so that the next commit uploads them. */
			job->next = up->failed;
			up->failed = job;
		} else {
			job_free_locked(up, job);
		}
		bm_assert(up->queued > 0); /* each job was counted when queued */
		up->queued--;
		pthread_cond_broadcast(&up->cv);
	}
	pthread_mutex_unlock(&up->mu);
	return NULL;
}

int bm_upload_start(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;

	if (up->threads != NULL)
		return 0;
	pthread_mutex_init(&up->mu, NULL);
	pthread_cond_init(&up->cv, NULL);
	up->max_queued = (size_t)ds->opt.connections * 2;
	if (up->bufs == NULL)
		up->bufs = calloc(up->max_queued, sizeof(*up->bufs)); /* NULL: none kept */
	up->threads = calloc((size_t)ds->opt.connections, sizeof(*up->threads));
	if (up->threads == NULL)
		return BM_ENOMEM;
	for (int i = 0; i < ds->opt.connections; i++) {
		if (pthread_create(&up->threads[i], NULL, upload_main, ds) != 0)
			break;
		up->nthreads++;
	}
	if (up->nthreads > 0)
		return 0;
	/* Not one worker: leave no trace, so that the next call tries again
	 * (threads set with no worker would queue jobs nobody takes). */
	free(up->threads);
	up->threads = NULL;
	pthread_mutex_destroy(&up->mu);
	pthread_cond_destroy(&up->cv);
	bm_set_error(ds, BM_ENOMEM, "%s: cannot start an upload thread", ds->url);
	return BM_ENOMEM;
}

void bm_upload_stop(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;

	if (up->threads == NULL) {
		free(up->bufs); /* a start that failed (no buffer in it) */
		up->bufs = NULL;
		return;
	}
	pthread_mutex_lock(&up->mu);
	up->stop = true;
	pthread_cond_broadcast(&up->cv);
	pthread_mutex_unlock(&up->mu);
	for (int i = 0; i < up->nthreads; i++)
		pthread_join(up->threads[i], NULL);
	free(up->threads);
	up->threads = NULL;
	up->nthreads = 0;
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

static int add_change(bm_dataset *ds, uint64_t index, const char *key, const char *sum,
		      size_t len, bool from_page)
{
	int rc = 0;

	pthread_mutex_lock(&ds->mu);
	if (ds->nchanges == ds->capchanges) {
		size_t ncap = ds->capchanges ? ds->capchanges * 2 : 64;
		struct bm_change *n = realloc(ds->changes, ncap * sizeof(*n));
		if (n == NULL) {
			rc = BM_ENOMEM;
			goto out;
		}
		ds->changes = n;
		ds->capchanges = ncap;
	}
	struct bm_change *c = &ds->changes[ds->nchanges];
	c->index = index;
	c->key = key ? strdup(key) : NULL;
	if (key && c->key == NULL) {
		rc = BM_ENOMEM;
		goto out;
	}
	snprintf(c->sum, sizeof(c->sum), "%s", sum); /* "" for a hole */
	c->len = len;
	c->seq = ds->change_seq++;
	c->from_page = from_page;
	ds->nchanges++;
out:
	pthread_mutex_unlock(&ds->mu);
	return rc;
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

int bm_upload_block(bm_dataset *ds, uint64_t index, const void *buf, size_t len, bool from_page)
{
	struct bm_upload *up = &ds->up;
	char sum[BM_SUM_HEX + 1], key[BM_KEY_MAX + 1];
	bool unchanged;
	int rc;

	if (bm_is_zero(buf, len))
		return add_change(ds, index, NULL, "", len, from_page); /* a hole */
	bm_sum_hex(buf, len, sum);
	bm_key_block(key, sum);
	/* Unchanged when the generation has these bytes there (an error
	 * finding out uploads them: nothing lost). */
	char have[BM_SUM_HEX + 1], have_key[BM_KEY_MAX + 1], msg[300];
	unchanged = bm_table_find(ds, ds->manifest, index, have, have_key, msg, sizeof(msg)) == 1 &&
		    strcmp(have, sum) == 0 && bm_manifest_objlen(ds->manifest, index) == len;
	if (unchanged)
		snprintf(key, sizeof(key), "%s", have_key); /* keep its object, whatever its name */
	/* Recorded even when unchanged: it overrides an earlier change to
	 * this block that the bytes have since gone back on. */
	rc = add_change(ds, index, key, sum, len, from_page);
	if (rc < 0 || unchanged)
		return rc;

	if ((rc = bm_upload_start(ds)) < 0)
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
	pthread_mutex_lock(&up->mu);
	/* Bounded: at most max_queued copies of blocks in memory. */
	while (up->queued >= up->max_queued)
		pthread_cond_wait(&up->cv, &up->mu);
	enqueue_locked(up, job);
	pthread_cond_signal(&up->cv);
	pthread_mutex_unlock(&up->mu);
	return 0;
}

/* Empties the list of failed uploads: requeued, or dropped. */
static void take_failed(bm_dataset *ds, bool requeue)
{
	struct bm_upload *up = &ds->up;

	if (up->threads == NULL)
		return;
	pthread_mutex_lock(&up->mu);
	while (up->failed) {
		struct bm_upload_job *job = up->failed;
		up->failed = job->next;
		if (requeue)
			enqueue_locked(up, job);
		else
			job_free_locked(up, job);
	}
	pthread_cond_broadcast(&up->cv);
	pthread_mutex_unlock(&up->mu);
}

void bm_upload_requeue_failed(bm_dataset *ds) { take_failed(ds, true); }
void bm_upload_drop_failed(bm_dataset *ds) { take_failed(ds, false); }

int bm_upload_wait(bm_dataset *ds)
{
	struct bm_upload *up = &ds->up;
	int rc;

	if (up->threads == NULL)
		return 0;
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

/* ---- bm_write ----------------------------------------------------------------- */

/* ---- gc's guard (gcmark.c) ------------------------------------------------------ */

/* Before this commit's first upload: which gc ran last.  Not known (the
 * marker could not be read) is as good as "one ran": the check then
 * verifies. */
static void gc_guard_begin(bm_dataset *ds)
{
	char msg[512];

	if (ds->gc_guard.begun)
		return;
	if (bm_gc_guard_begin(ds->store, &ds->gc_guard, msg, sizeof(msg)) < 0) {
		ds->gc_guard.begun = true;
		ds->gc_guard.epoch = UINT64_MAX;
	}
}

struct commit_objects {
	bm_dataset *ds;
	const struct bm_manifest *next;
	bm_gc_visit_fn visit;
	void *varg;
};

/* Format 2: the pages of the next generation's tree (those it shares
 * with the last one are named by that one, but a gc may have dropped it
 * meanwhile if it was not the latest: check them all). */
static int page_key(void *arg, const char *key)
{
	struct commit_objects *c = arg;
	return strncmp(key, "index/", 6) == 0 ? c->visit(c->varg, key) : 0;
}

/* The objects this commit names that it uploaded or reused: its blocks,
 * and in format 2 its index pages.  Only called after a gc overlapped
 * the commit (bm_gc_guard_check). */
static int commit_keys(void *arg, bm_gc_visit_fn visit, void *varg)
{
	struct commit_objects *c = arg;
	bm_dataset *ds = c->ds;
	char **keys;
	size_t n = 0;
	int rc = 0;

	pthread_mutex_lock(&ds->mu);
	keys = calloc(ds->nchanges + 1, sizeof(*keys));
	for (size_t i = 0; keys && i < ds->nchanges; i++)
		if (ds->changes[i].key && (keys[n] = strdup(ds->changes[i].key)) != NULL)
			n++;
	pthread_mutex_unlock(&ds->mu);
	if (keys == NULL)
		return BM_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (rc == 0)
			rc = visit(varg, keys[i]);
		free(keys[i]);
	}
	free(keys);
	if (rc == 0 && c->next->version == 2 && c->next->root[0] != '\0') {
		struct bm_index_io io;
		char msg[512];
		c->visit = visit;
		c->varg = varg;
		bm_pages_io(ds->pages, &io);
		rc = bm_index_keys(&io, c->next->root, bm_manifest_nblk(c->next), page_key, c, NULL, msg,
				   sizeof(msg));
		if (rc < 0 && rc != BM_ECONFLICT)
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
	}
	return rc;
}

int bm_write(bm_dataset *ds, uint64_t offset, const void *buf, size_t len)
{
	size_t bs = ds->file.blksize;
	const char *src = buf;
	char *tmp = NULL;
	int rc = 0;

	if (ds->flat)
		return BM_EREADONLY;
	if (ds->overlay && atomic_load(&ds->nmappings) > 0) {
		/* The mirror's file under existing mappings would not show it. */
		bm_set_error(ds, BM_EBUSY, "%s: bm_write while mapped through the mirror: write through the mapping",
			     ds->url);
		return BM_EBUSY;
	}
	if (offset > ds->new_size || len > ds->new_size - offset) {
		bm_set_error(ds, BM_EINVAL, "%s: write of %zu bytes at %" PRIu64 " is past the size %" PRIu64,
			     ds->url, len, offset, ds->new_size);
		return BM_EINVAL;
	}
	gc_guard_begin(ds);
	while (len > 0 && rc == 0) {
		uint64_t index = offset / bs;
		size_t in = (size_t)(offset % bs);
		uint64_t left = ds->new_size - index * bs;
		size_t objlen = left < bs ? (size_t)left : bs;
		size_t n = objlen - in < len ? objlen - in : len;

		if (in == 0 && n == objlen) {
			rc = bm_upload_block(ds, index, src, objlen, false);
		} else {
			/* Partly covered: merge with the block as the next
			 * generation has it so far (earlier writes included). */
			if (tmp == NULL && (tmp = malloc(bs)) == NULL)
				return BM_ENOMEM;
			rc = bm_upload_wait(ds);
			if (rc == 0)
				rc = bm_fetch_pending(ds, index, tmp);
			if (rc == 0) {
				memcpy(tmp + in, src, n);
				rc = bm_upload_block(ds, index, tmp, objlen, false);
			}
		}
		src += n;
		offset += n;
		len -= n;
	}
	free(tmp);
	return rc;
}

/* ---- the commit ------------------------------------------------------------------ */

/* True when manifest.json on the server holds exactly json; sets etag (if
 * not NULL) to its ETag then.  Used where ETags cannot tell: a swap whose
 * answer was lost and whose retry got 412 did publish if the retry found
 * our own manifest; a swap answered without an ETag learns its ETag only
 * if the manifest is still ours. */
static bool server_manifest_is(bm_dataset *ds, const char *json, size_t len, char *etag, size_t etagn)
{
	struct bm_version v;
	char msg[512], *got = NULL;
	size_t glen = 0;
	bool same = bm_store_get_all(ds->store, BM_KEY_MANIFEST, BM_MANIFEST_MAX, &got, &glen, &v,
				     msg, sizeof(msg)) == 0 &&
		    glen == len && memcmp(got, json, len) == 0;

	if (same && etag)
		snprintf(etag, etagn, "%s", v.etag);
	free(got);
	return same;
}

static int conflict(bm_dataset *ds, const char *fmt, const char *detail)
{
	atomic_fetch_add(&ds->c.conflicts, 1);
	bm_set_error(ds, BM_ECONFLICT, fmt, ds->url, detail);
	return BM_ECONFLICT;
}

/* Step 1: has someone published since we opened? */
static int check_still_latest(bm_dataset *ds)
{
	struct bm_version v;
	char msg[512];
	int rc = bm_store_head(ds->store, BM_KEY_MANIFEST, &v, msg, sizeof(msg));

	if (rc < 0 && rc != BM_ENOTFOUND) {
		bm_set_error(ds, rc, "%s", msg);
		return rc;
	}
	if (!ds->exists && rc == 0)
		return conflict(ds, "%s: %s", "another writer created the dataset first");
	if (ds->exists && rc == BM_ENOTFOUND)
		return conflict(ds, "%s: %s", "the dataset was deleted on the server");
	/* Weakly compared: a server may send W/"x" for a second after a
	 * change and "x" afterwards for the same version (Apache).  The swap
	 * (step 4) is the real check. */
	if (ds->exists && ds->etag[0] && v.etag[0] && !bm_etag_same(ds->etag, v.etag))
		return conflict(ds, "%s: %s", "another writer published a new generation since this one was opened");
	if (ds->exists && ds->etag[0] == '\0' && ds->manifest_json) {
		/* No ETag to compare (the server sends none): compare bytes. */
		if (!server_manifest_is(ds, ds->manifest_json, ds->manifest_json_len, NULL, 0))
			return conflict(ds, "%s: %s", "the manifest on the server is not the one this handle opened");
	}
	return 0;
}

/* PUTs body at key with If-None-Match: * (a kept generation), never over
 * an object there; a failure is only logged. */
static int put_once(bm_dataset *ds, const char *key, const char *body, size_t len)
{
	struct bm_version v;
	char msg[512];

	/* A store that ignores If-None-Match would replace what is there. */
	if (!(bm_store_caps(ds->store) & BM_CAP_CREATE_EXCL) &&
	    bm_store_head(ds->store, key, &v, msg, sizeof(msg)) == 0)
		return 0;
	int rc = bm_put_immutable(ds->store, key, body, len, false, msg, sizeof(msg));
	if (rc < 0)
		bm_log("warning: %s", msg);
	return rc;
}

/* Step 2: make sure the generation we build on is kept (a writer may have
 * crashed between its swap and its gen/ PUT). */
static void keep_generation(bm_dataset *ds)
{
	char key[BM_KEY_GEN_SIZE], msg[512];
	struct bm_version v;

	if (!ds->exists || ds->manifest_json == NULL)
		return;
	bm_key_gen(key, ds->manifest->generation);
	if (bm_store_head(ds->store, key, &v, msg, sizeof(msg)) == BM_ENOTFOUND)
		put_once(ds, key, ds->manifest_json, ds->manifest_json_len);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The indexes of the blocks written since the last shrink, sorted: *np of
 * them, malloc'd (NULL: out of memory).  One snapshot, searched per block,
 * instead of a scan of every change per block. */
static uint64_t *written_since_shrink(bm_dataset *ds, size_t *np)
{
	pthread_mutex_lock(&ds->mu);
	uint64_t *v = malloc((ds->nchanges + 1) * sizeof(*v));
	size_t n = 0;
	for (size_t c = 0; v && c < ds->nchanges; c++)
		if (ds->changes[c].seq >= ds->trunc_seq)
			v[n++] = ds->changes[c].index;
	pthread_mutex_unlock(&ds->mu);
	if (v)
		qsort(v, n, sizeof(*v), cmp_u64);
	*np = n;
	return v;
}

static bool written(const uint64_t *v, size_t n, uint64_t idx)
{
	return bsearch(&idx, v, n, sizeof(*v), cmp_u64) != NULL;
}

/* A shrink then a grow before this commit: the bytes between the cut and
 * the new size are zeros in the next generation.  The block holding the
 * cut is rewritten (its bytes past the cut read as zeros); the published
 * blocks past it become holes, unless written since. */
static int apply_truncation(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;
	size_t bs = m->blksize;
	uint64_t cut = ds->trunc_size, nblk = (ds->new_size + bs - 1) / bs, idx;
	int rc = 0;

	if (cut >= ds->new_size)
		return 0; /* not grown past the cut: the size hides the rest */
	size_t nw;
	uint64_t *w = written_since_shrink(ds, &nw); /* the hole changes below add none that matter */
	char *buf = calloc(1, bs);
	if (buf == NULL || w == NULL) {
		free(buf);
		free(w);
		return BM_ENOMEM;
	}
	if (cut % bs != 0 && !written(w, nw, cut / bs)) {
		idx = cut / bs;
		uint64_t left = ds->new_size - idx * bs;
		rc = bm_fetch_pending(ds, idx, buf);
		if (rc == 0)
			rc = bm_upload_block(ds, idx, buf, left < bs ? (size_t)left : bs, false);
		memset(buf, 0, bs);
	}
	for (uint64_t from = (cut + bs - 1) / bs; rc == 0 && from < nblk; from = idx + 1) {
		char msg[512];
		rc = bm_table_next(ds, m, from, &idx, msg, sizeof(msg)); /* the next stored block */
		if (rc < 0) {
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
			break;
		}
		if (rc == 0 || idx >= nblk) {
			rc = 0;
			break;
		}
		rc = 0;
		if (!written(w, nw, idx)) {
			uint64_t left = ds->new_size - idx * bs;
			rc = bm_upload_block(ds, idx, buf, left < bs ? (size_t)left : bs, false); /* a hole */
		}
	}
	free(buf);
	free(w);
	return rc;
}

/* Resizing changes the length of the old and the new last block: their
 * objects are rewritten unless the commit rewrites them anyway. */
static int rewrite_edge_blocks(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;
	size_t bs = m->blksize;
	uint64_t edges[2] = { bm_manifest_nblk(m), (ds->new_size + bs - 1) / bs };
	int rc = 0;

	if (ds->new_size == m->size)
		return 0;
	char *buf = malloc(bs);
	if (buf == NULL)
		return BM_ENOMEM;
	for (int i = 0; i < 2 && rc == 0; i++) {
		if (edges[i] == 0)
			continue;
		uint64_t idx = edges[i] - 1;
		uint64_t left = ds->new_size > idx * bs ? ds->new_size - idx * bs : 0;
		size_t newlen = left < bs ? (size_t)left : bs;
		bool changed = false;
		char sum[BM_SUM_HEX + 1], msg[512];
		pthread_mutex_lock(&ds->mu);
		for (size_t c = 0; c < ds->nchanges; c++)
			changed |= ds->changes[c].index == idx;
		pthread_mutex_unlock(&ds->mu);
		if (changed || newlen == 0 || bm_manifest_objlen(m, idx) == newlen)
			continue;
		rc = bm_table_find(ds, m, idx, sum, NULL, msg, sizeof(msg));
		if (rc < 0) {
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
			break;
		}
		if (rc == 0)
			continue; /* a hole stays one */
		rc = bm_fetch_block(ds, idx, buf);
		if (rc == 0)
			rc = bm_upload_block(ds, idx, buf, newlen, false);
	}
	free(buf);
	return rc;
}

static void hook(bm_dataset *ds, const char *stage)
{
	if (ds->opt.commit_hook)
		ds->opt.commit_hook(stage, ds->opt.commit_hook_arg);
}

/* A store that would not refuse a lost race (it ignores If-Match or
 * If-None-Match: nginx) gets the manifest compared just before the swap:
 * only a writer publishing within that one round trip goes unseen, not
 * one publishing during the uploads. */
static int still_the_one_read(bm_dataset *ds)
{
	struct bm_version v;
	char msg[512];

	if (ds->exists && !server_manifest_is(ds, ds->manifest_json, ds->manifest_json_len, NULL, 0))
		return conflict(ds, "%s: %s", "another writer published a new generation since this one was opened");
	if (!ds->exists && bm_store_head(ds->store, BM_KEY_MANIFEST, &v, msg, sizeof(msg)) != BM_ENOTFOUND)
		return conflict(ds, "%s: %s", "another writer created the dataset first");
	return 0;
}

/* Step 4: the compare-and-swap of manifest.json.  Sets new_etag, and
 * *superseded when the swap published but another writer's manifest was
 * there already when we asked for our ETag. */
static int swap_manifest(bm_dataset *ds, const char *json, size_t len, char *new_etag, size_t etagn,
			 bool *superseded)
{
	struct bm_version v;
	struct bm_put p = {
		.cond = !ds->exists ? BM_PUT_IF_NONE : ds->etag[0] ? BM_PUT_IF_MATCH : BM_PUT_ANY,
		.etag = ds->etag,
		.was = ds->manifest_json,
		.was_len = ds->manifest_json_len,
		.swap = true,
	};
	char msg[512];
	int rc;

	*superseded = false;
	if (!(bm_store_caps(ds->store) & (ds->exists ? BM_CAP_REPLACE_MATCH : BM_CAP_CREATE_EXCL)) &&
	    (rc = still_the_one_read(ds)) < 0)
		return rc;
	rc = bm_store_put(ds->store, BM_KEY_MANIFEST, json, len, &p, &v, msg, sizeof(msg));
	if (rc == BM_ECONFLICT) {
		if (server_manifest_is(ds, json, len, new_etag, etagn))
			return 0;
		return conflict(ds, "%s: %s", "another writer published first (the manifest changed)");
	}
	if (rc < 0) {
		bm_set_error(ds, rc, "%s", msg);
		return rc;
	}
	hook(ds, "manifest-put");
	snprintf(new_etag, etagn, "%s", v.etag);
	/* The server did not say: ask, and take the answer only if the
	 * manifest there is still ours.  Another writer's ETag taken for ours
	 * would let our next commit overwrite it. */
	if (v.etag[0] == '\0' && !server_manifest_is(ds, json, len, new_etag, etagn))
		*superseded = true;
	return 0;
}

/* ---- the next generation's manifest ------------------------------------------------ */

/* The format version the next generation is written in (docs/FORMAT.md,
 * "Version 2"): 2 for a new dataset and for a v2 one; a v1 dataset is
 * upgraded to 2 (said once on stderr), unless one of its blocks has a key
 * other than blocks/<sum> (written by another tool): v2 cannot name it,
 * so it stays 1. */
static unsigned next_version(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;

	if (!ds->exists || m->version == 2)
		return 2;
	for (size_t i = 0; i < m->nblocks; i++) {
		const struct bm_block *b = &m->blocks[i];
		if (strncmp(b->key, "blocks/", 7) != 0 || strcmp(b->key + 7, b->sum) != 0)
			return 1;
	}
	return 2;
}

/* A change in submission order, to sort by block and keep that order. */
struct ordered {
	uint64_t blk;
	size_t pos;
};

static int cmp_ordered(const void *a, const void *b)
{
	const struct ordered *x = a, *y = b;
	if (x->blk != y->blk)
		return x->blk < y->blk ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The changes below nblk as the index takes them: ascending block, the
 * changes of one block in submission order (bm_index_update keeps the
 * last).  malloc'd; NULL when out of memory. */
static struct bm_index_change *index_changes(bm_dataset *ds, uint64_t nblk, size_t *np)
{
	struct bm_index_change *ch = NULL;
	struct ordered *o;
	size_t n = 0;

	pthread_mutex_lock(&ds->mu);
	o = malloc((ds->nchanges + 1) * sizeof(*o));
	for (size_t i = 0; o && i < ds->nchanges; i++) {
		if (ds->changes[i].index < nblk) {
			o[n].blk = ds->changes[i].index;
			o[n].pos = i;
			n++;
		}
	}
	if (o != NULL) {
		qsort(o, n, sizeof(*o), cmp_ordered);
		ch = malloc((n + 1) * sizeof(*ch));
	}
	for (size_t i = 0; ch && i < n; i++) {
		const struct bm_change *c = &ds->changes[o[i].pos];
		ch[i].blk = c->index;
		snprintf(ch[i].sum, sizeof(ch[i].sum), "%s", c->key ? c->sum : "");
	}
	pthread_mutex_unlock(&ds->mu);
	free(o);
	*np = n;
	return ch;
}

static void stamp_created(char out[40])
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out, 40, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The next generation in version 2: the tree of the published one (built
 * from the v1 block list first when upgrading) with the changes applied;
 * the pages of the changed paths are stored (ds->pages) before the
 * manifest names them.  *outp gets the manifest, no block list. */
static int next_manifest_v2(bm_dataset *ds, struct bm_manifest **outp)
{
	const struct bm_manifest *m = ds->manifest;
	uint64_t nblk = (ds->new_size + m->blksize - 1) / m->blksize;
	struct bm_manifest old = { .version = 2, .blksize = m->blksize, .size = m->size };
	struct bm_manifest *out = NULL;
	struct bm_index_change *ch = NULL;
	struct bm_index_io io;
	char msg[512];
	size_t nch = 0;
	int rc;

	bm_pages_io(ds->pages, &io);
	old.stored = m->stored;
	if (m->version == 2) {
		memcpy(old.root, m->root, sizeof(old.root));
	} else if (ds->exists) {
		rc = bm_index_from_v1(&io, m, old.root, NULL, msg, sizeof(msg));
		if (rc < 0)
			goto fail;
		bm_log("%s: upgrading the dataset from format version 1 to 2 (blkmap before format 2 "
		       "cannot read it; docs/FORMAT.md)", ds->url);
	} else {
		old.size = 0;
		old.stored = 0;
	}
	if (old.stored == UINT64_MAX)
		old.stored = bm_nblocks_stored(ds);
	if ((ch = index_changes(ds, nblk, &nch)) == NULL)
		return BM_ENOMEM;
	/* The stored count follows each change, and the cut past nblk. */
	uint64_t stored = old.stored, oldnblk = bm_manifest_nblk(&old), blk;
	for (size_t i = 0; i < nch; i++) {
		char sum[BM_SUM_HEX + 1];
		if (i + 1 < nch && ch[i + 1].blk == ch[i].blk)
			continue; /* the last change of a block decides */
		if ((rc = bm_table_find(ds, &old, ch[i].blk, sum, NULL, msg, sizeof(msg))) < 0)
			goto fail;
		stored += (ch[i].sum[0] != '\0') - (rc == 1);
	}
	for (uint64_t from = nblk; from < oldnblk; from = blk + 1) {
		if ((rc = bm_table_next(ds, &old, from, &blk, msg, sizeof(msg))) < 0)
			goto fail;
		if (rc == 0)
			break;
		stored--;
	}
	if ((out = calloc(1, sizeof(*out))) == NULL) {
		free(ch);
		return BM_ENOMEM;
	}
	out->version = 2;
	out->blksize = m->blksize;
	out->size = ds->new_size;
	out->generation = m->generation + 1;
	out->parent = ds->exists ? m->generation : 0;
	out->stored = stored;
	stamp_created(out->created);
	rc = bm_index_update(&io, old.root, oldnblk, ch, nch, nblk, out->root, NULL, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	pthread_mutex_lock(&ds->mu);
	const char *a = ds->attrs_changed ? ds->new_attrs : m->attrs;
	if (a && (out->attrs = strdup(a)) == NULL)
		rc = BM_ENOMEM;
	pthread_mutex_unlock(&ds->mu);
	free(ch);
	if (rc < 0) {
		bm_manifest_free(out);
		return rc;
	}
	*outp = out;
	return 0;
fail:
	if (rc != BM_ENOMEM)
		bm_set_error(ds, rc, "%s: the index of generation %" PRIu64 ": %s", ds->url,
			     m->generation + 1, msg);
	free(ch);
	bm_manifest_free(out);
	return rc;
}

/* The next generation's manifest, in the version next_version says. */
static int next_manifest(bm_dataset *ds, struct bm_manifest **outp)
{
	struct bm_manifest *next = NULL;
	int rc;

	*outp = NULL;
	if (next_version(ds) == 2)
		return next_manifest_v2(ds, outp);
	pthread_mutex_lock(&ds->mu);
	rc = bm_manifest_apply(ds->manifest, ds->changes, ds->nchanges, ds->new_size, &next);
	char *new_attrs = NULL;
	if (rc == 0 && ds->attrs_changed && ds->new_attrs && (new_attrs = strdup(ds->new_attrs)) == NULL)
		rc = BM_ENOMEM;
	if (rc == 0 && ds->attrs_changed) {
		free(next->attrs);
		next->attrs = new_attrs;
	}
	pthread_mutex_unlock(&ds->mu);
	if (rc < 0) {
		bm_manifest_free(next);
		return rc;
	}
	*outp = next;
	return 0;
}

/* ---- the commit ------------------------------------------------------------------ */

int bm_commit(bm_dataset *ds, uint64_t *genp)
{
	struct bm_manifest *next = NULL;
	char etag[BM_ETAG_SIZE] = "", key[BM_KEY_GEN_SIZE];
	size_t len = 0;
	bool superseded = false;
	int rc;

	if (ds->flat) {
		bm_set_error(ds, BM_EREADONLY, "%s is a flat object (not a dataset): it cannot be committed", ds->url);
		return BM_EREADONLY;
	}
	if (!ds->at_latest) {
		char detail[128];
		snprintf(detail, sizeof(detail), "generation %" PRIu64 " is not the latest", ds->manifest->generation);
		return conflict(ds, "%s: %s", detail);
	}
	struct vm_fileh_stats st;
	vm_fileh_stats(ds->fh, &st);
	if (ds->exists && st.ndirty == 0 && ds->nchanges == 0 && ds->new_size == ds->manifest->size &&
	    ds->trunc_size >= ds->manifest->size && !ds->attrs_changed) {
		if (genp)
			*genp = ds->manifest->generation; /* nothing to publish */
		return 0;
	}
	if ((rc = check_still_latest(ds)) < 0)
		return rc;
	keep_generation(ds);
	gc_guard_begin(ds);

	/* Step 3: upload.  What failed to upload last time goes first; then
	 * storeblk queues each dirty block. */
	bm_upload_requeue_failed(ds);
	rc = vm_fileh_dirty_writeout(ds->fh, VM_WRITEOUT_STORE);
	if (rc < 0) {
		/* storeblk failed (it only queues): out of memory. */
		bm_upload_wait(ds);
		bm_set_error(ds, BM_ENOMEM, "%s: writing out dirty blocks failed: %s", ds->url, vm_strerror(rc));
		return BM_ENOMEM;
	}
	rc = apply_truncation(ds);
	if (rc == 0)
		rc = rewrite_edge_blocks(ds);
	int urc = bm_upload_wait(ds);
	if (urc < 0)
		return urc;
	if (rc < 0)
		return rc;
	/* The next manifest; in format 2 its index pages are stored here. */
	rc = next_manifest(ds, &next);
	if (rc < 0) {
		bm_manifest_free(next);
		return rc;
	}
	hook(ds, "uploaded");

	char *json = bm_manifest_dump_any(next, &len);
	if (json == NULL) {
		bm_manifest_free(next);
		return BM_ENOMEM;
	}
	/* A gc that ran during the uploads may have taken an object we
	 * name: the guard waits for it and checks (FORMAT.md). */
	char gmsg[512];
	struct commit_objects objs = { .ds = ds, .next = next };
	rc = bm_gc_guard_check(ds->store, &ds->gc_guard, commit_keys, &objs, gmsg, sizeof(gmsg));
	if (rc < 0)
		bm_set_error(ds, rc, "%s", gmsg);
	if (rc == 0)
		rc = swap_manifest(ds, json, len, etag, sizeof(etag), &superseded);
	if (rc < 0) {
		bm_manifest_free(next);
		free(json);
		return rc;
	}
	hook(ds, "swapped");
	bm_key_gen(key, next->generation);
	put_once(ds, key, json, len);

	pthread_mutex_lock(&ds->mu);
	struct bm_manifest *prev = ds->manifest;
	ds->manifest = next;
	free(ds->manifest_json);
	ds->manifest_json = json;
	ds->manifest_json_len = len;
	ds->exists = true;
	ds->trunc_size = next->size;
	ds->trunc_seq = 0;
	snprintf(ds->etag, sizeof(ds->etag), "%s", etag);
	/* Published, but another writer published after us already: the
	 * next commit must refresh first. */
	if (superseded)
		ds->at_latest = false;
	struct bm_change *done = ds->changes;
	size_t ndone = ds->nchanges;
	ds->changes = NULL;
	ds->nchanges = ds->capchanges = 0;
	free(ds->new_attrs);
	ds->new_attrs = NULL;
	ds->attrs_changed = false;
	ds->gc_guard.begun = false;
	pthread_mutex_unlock(&ds->mu);

	/* Published: the stored pages are clean now (a page written since its
	 * store stays dirty for the next commit).  In overlay mode their RAM
	 * is dropped and the base, moved to the new generation, shows them. */
	if (!ds->overlay || bm_overlay_move_base(ds, next->generation, next->size) == 0)
		vm_fileh_dirty_writeout(ds->fh, VM_WRITEOUT_MARKSTORED);
	/* Blocks written with bm_write may be cached from before. */
	for (size_t i = 0; i < ndone && !ds->overlay; i++)
		if (!done[i].from_page)
			vm_fileh_invalidate_page(ds->fh, done[i].index);
	for (size_t i = 0; i < ndone; i++)
		free(done[i].key);
	free(done);
	bm_manifest_free(prev);
	atomic_fetch_add(&ds->c.commits, 1);
	if (genp)
		*genp = next->generation;
	return 0;
}
