/* reads.c — bm_reads: many block reads in flight at once from one
 * thread (what `blkmap sum` streams a dataset with), each a block fetch
 * of blocks.c (found, sent, checked, retried as bm_read's) carried by a
 * flow of the store (store.c, http.c: one multi handle, no thread).
 *
 * Owns: struct bm_reads and its reads' state.  A read that needs no
 * request (a hole) ends at its start and waits in `ready` for
 * bm_reads_wait.
 * Locking: none; one thread uses a bm_reads at a time (the dataset's
 * own calls lock what they share).
 */
#include "config.h"

#include <stdlib.h>

#include "internal.h"
#include "store.h"

struct bm_read_one {
	struct bm_store_flow_get x;
	struct bm_block_fetch *f;
	bool used;
};

struct bm_reads {
	bm_dataset *ds;
	struct bm_store_flow *flow;
	int max;
	struct bm_read_one *one;   /* max of them */
	void **ready;              /* tags of reads ended at their start (0) */
	int nready;
};

int bm_reads_new(bm_dataset *ds, int max, bm_reads **rp)
{
	bm_reads *r;
	int rc;

	*rp = NULL;
	/* One connection of the bound stays for the requests a read makes
	 * before its GET (index pages), which would wait for ever else. */
	if (max > ds->opt.connections - 1)
		max = ds->opt.connections - 1;
	if (max < 1)
		return BM_EINVAL;
	if ((r = calloc(1, sizeof(*r))) == NULL || (r->one = calloc((size_t)max, sizeof(*r->one))) == NULL ||
	    (r->ready = calloc((size_t)max, sizeof(*r->ready))) == NULL) {
		rc = BM_ENOMEM;
		goto fail;
	}
	if ((rc = bm_store_flow_new(ds->store, max, &r->flow)) < 0)
		goto fail;
	r->ds = ds;
	r->max = max;
	*rp = r;
	return 0;
fail:
	if (r)
		free(r->one), free(r->ready);
	free(r);
	return rc;
}

int bm_reads_start(bm_reads *r, uint64_t index, void *buf, void *tag)
{
	struct bm_read_one *o = NULL;
	uint64_t size = bm_size(r->ds);
	size_t bs = bm_blksize(r->ds);
	int rc;

	if (index >= (size + bs - 1) / bs)
		return BM_EINVAL;
	for (int i = 0; i < r->max && o == NULL; i++)
		if (!r->one[i].used)
			o = &r->one[i];
	if (o == NULL || r->nready >= r->max)
		return BM_EBUSY;
	o->x = (struct bm_store_flow_get){ .tag = tag };
	rc = bm_block_fetch_begin(r->ds, index, buf, &o->f, &o->x.key, &o->x.g, &o->x.msg, &o->x.n);
	if (rc == 0) {
		r->ready[r->nready++] = tag; /* no request: done */
		return 0;
	}
	if (rc < 0)
		return rc;
	if ((rc = bm_store_flow_start(r->flow, &o->x)) < 0) {
		/* Failed at once (out of memory): said as the read's error. */
		return bm_block_fetch_end(r->ds, o->f, rc);
	}
	o->used = true;
	return 0;
}

int bm_reads_wait(bm_reads *r, void **tagp)
{
	if (r->nready > 0) {
		*tagp = r->ready[--r->nready];
		return 0;
	}
	struct bm_store_flow_get *x = bm_store_flow_next(r->flow);
	if (x == NULL)
		return 1;
	struct bm_read_one *o = (struct bm_read_one *)x; /* x is its first member */
	*tagp = x->tag;
	o->used = false;
	return bm_block_fetch_end(r->ds, o->f, x->rc);
}

void bm_reads_free(bm_reads *r)
{
	if (r == NULL)
		return;
	bm_store_flow_free(r->flow); /* stops those in flight */
	for (int i = 0; i < r->max; i++)
		if (r->one[i].used)
			bm_block_fetch_drop(r->one[i].f);
	free(r->one);
	free(r->ready);
	free(r);
}
