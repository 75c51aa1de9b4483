/* changes.c — what the next commit publishes: the list of pending changes
 * (block -> object, in submission order), bm_write, bm_resize and
 * bm_discard.
 *
 * A change comes from virtmem's writeout (storeblk, dataset.c) or from
 * bm_write; its bytes go to the upload queue (upload.c) unless the
 * published generation has them there already.  A partial bm_write merges
 * into the block as the next generation has it; the bytes of the block it
 * wrote last are kept (ds->wrote), so that writing a block piece by piece
 * never GETs back what it just queued.  Calls blocks.c, upload.c and
 * gcmark.c; commit.c calls it.
 * A format 3 or 4 dataset is mapped in its pieces: storeblk's pieces are
 * kept for their block (ds->staged), which becomes one change; the pieces
 * not written are fetched then, and only if there are some.
 * Owns: ds->changes, ds->wrote and ds->staged.  Locking: ds->mu guards
 * the list, the sizes and ds->wrote; never held across a request or with
 * ds->up.mu.  ds->staged is the writeout thread's alone.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gcmark.h"
#include "index.h"
#include "internal.h"
#include "store.h"

/* Before the first upload of the next commit: which gc ran last (the
 * commit's check, gcmark.c).  Not known (the marker could not be read) is
 * as good as "one ran": the check then verifies. */
void bm_changes_begin(bm_dataset *ds)
{
	char msg[512];

	if (ds->gc_guard.begun)
		return;
	if (bm_gc_guard_begin(ds->store, &ds->gc_guard, msg, sizeof(msg)) < 0) {
		ds->gc_guard.begun = true;
		ds->gc_guard.epoch = UINT64_MAX;
	}
}

/* Forgets the bytes bm_write kept (ds->mu held). */
static void forget_wrote_locked(bm_dataset *ds)
{
	bm_assert(bm_mutex_held(&ds->mu));
	ds->wrote.valid = false;
}

/* Appends a change (psum: its piece sums, pieces x 16 bytes, or NULL);
 * *seqp (if not NULL) gets its sequence number. */
static int add_change(bm_dataset *ds, uint64_t index, const char *key, const char *sum,
		      const uint8_t *psum, unsigned pieces, size_t len, bool from_page, uint64_t *seqp)
{
	size_t klen = key ? strlen(key) + 1 : 0, plen = psum ? (size_t)pieces * 16 : 0;
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
	c->key = key ? malloc(klen + plen) : NULL; /* the piece sums after the key */
	c->psum = NULL;
	if (key && c->key == NULL) {
		rc = BM_ENOMEM;
		goto out;
	}
	if (key) {
		memcpy(c->key, key, klen);
		if (plen) {
			c->psum = (uint8_t *)c->key + klen;
			memcpy(c->psum, psum, plen);
		}
	}
	snprintf(c->sum, sizeof(c->sum), "%s", sum); /* "" for a hole */
	c->len = len;
	c->seq = ds->change_seq++;
	c->from_page = from_page;
	ds->nchanges++;
	/* bm_write's kept bytes of this block are no longer what it holds
	 * (bm_write keeps them again for its own change). */
	if (ds->wrote.valid && ds->wrote.index == index)
		forget_wrote_locked(ds);
	if (seqp)
		*seqp = c->seq;
out:
	pthread_mutex_unlock(&ds->mu);
	return rc;
}

static int change_block(bm_dataset *ds, uint64_t index, const void *buf, size_t len, bool from_page,
			uint64_t *seqp)
{
	char sum[BM_SUM_HEX + 1], key[BM_KEY_MAX + 1];
	unsigned pieces = bm_ds_pieces(ds);
	uint8_t *psum = NULL;
	bool unchanged;
	int rc;

	if (bm_is_zero(buf, len))
		return add_change(ds, index, NULL, "", NULL, 0, len, from_page, seqp); /* a hole */
	if (pieces > 0) {
		/* Formats 3 and 4: the sums of its pieces, and of them. */
		if ((psum = malloc((size_t)pieces * 16)) == NULL)
			return BM_ENOMEM;
		bm_pieces_sum(buf, len, bm_ds_piece(ds), pieces, psum, sum);
	} else {
		bm_sum_hex(buf, len, sum);
	}
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
	rc = add_change(ds, index, key, sum, psum, pieces, len, from_page, seqp);
	free(psum);
	if (rc < 0 || unchanged)
		return rc;
	return bm_upload_queue(ds, index, key, buf, len);
}

int bm_change_block(bm_dataset *ds, uint64_t index, const void *buf, size_t len, bool from_page)
{
	return change_block(ds, index, buf, len, from_page, NULL);
}

int bm_fetch_pending(bm_dataset *ds, uint64_t index, void *buf)
{
	char key[BM_KEY_MAX + 1], sum[BM_SUM_HEX + 1];
	bool found = false, hole = false, before_shrink = false;
	size_t len = 0;

	pthread_mutex_lock(&ds->mu);
	for (size_t i = ds->nchanges; i-- > 0;) {
		const struct bm_change *c = &ds->changes[i];
		if (c->index != index)
			continue;
		found = true;
		hole = c->key == NULL;
		if (!hole)
			snprintf(key, sizeof(key), "%s", c->key);
		snprintf(sum, sizeof(sum), "%s", c->sum);
		len = c->len;
		before_shrink = c->seq < ds->trunc_seq;
		break;
	}
	pthread_mutex_unlock(&ds->mu);
	if (!found) /* the published block */
		return bm_fetch_block(ds, index, buf, false);
	/* Its object may still be in the upload queue. */
	int rc = hole ? 0 : bm_upload_wait(ds);
	if (rc == 0)
		rc = bm_fetch_object(ds, index, hole ? NULL : key, sum, len, before_shrink, buf);
	return rc;
}

bool bm_changes_pending(bm_dataset *ds)
{
	pthread_mutex_lock(&ds->mu);
	bool any = ds->nchanges > 0;
	pthread_mutex_unlock(&ds->mu);
	return any;
}

int bm_changes_keys(bm_dataset *ds, int (*visit)(void *arg, const char *key), void *arg)
{
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
			rc = visit(arg, keys[i]);
		free(keys[i]);
	}
	free(keys);
	return rc;
}

struct bm_change *bm_changes_take(bm_dataset *ds, size_t *np)
{
	pthread_mutex_lock(&ds->mu);
	struct bm_change *v = ds->changes;
	*np = ds->nchanges;
	ds->changes = NULL;
	ds->nchanges = ds->capchanges = 0;
	forget_wrote_locked(ds);
	pthread_mutex_unlock(&ds->mu);
	return v;
}

void bm_changes_clear(bm_dataset *ds)
{
	size_t n;
	struct bm_change *v = bm_changes_take(ds, &n);

	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
	free(ds->wrote.buf);
	ds->wrote.buf = NULL;
	free(ds->staged.buf);
	ds->staged.buf = NULL;
	ds->staged.valid = false;
}

/* ---- pieces of format 3 blocks (storeblk) ---------------------------------------- */

static int pending_block(bm_dataset *ds, uint64_t index, char *buf);

int bm_changes_flush(bm_dataset *ds)
{
	size_t pbs = ds->file.blksize, len = ds->staged.len;
	unsigned np = (unsigned)((len + pbs - 1) / pbs), missing = 0;
	char *tmp = NULL;
	int rc;

	if (!ds->staged.valid)
		return 0;
	for (unsigned i = 0; i < np; i++)
		missing += !(ds->staged.have[i / 64] >> (i % 64) & 1);
	if (missing > 0) {
		/* The pieces not stored, from the block as the next generation
		 * has it (fetched whole unless kept or new). */
		if ((tmp = malloc(ds->blksize)) == NULL)
			return BM_ENOMEM;
		if ((rc = pending_block(ds, ds->staged.index, tmp)) < 0) {
			free(tmp);
			return rc;
		}
		for (unsigned i = 0; i < np; i++) {
			size_t off = (size_t)i * pbs;
			if (!(ds->staged.have[i / 64] >> (i % 64) & 1))
				memcpy(ds->staged.buf + off, tmp + off, len - off < pbs ? len - off : pbs);
		}
		free(tmp);
	}
	ds->staged.valid = false;
	return change_block(ds, ds->staged.index, ds->staged.buf, len, true, NULL);
}

int bm_change_piece(bm_dataset *ds, uint64_t blk, const void *buf, size_t len)
{
	size_t bs = ds->blksize;
	uint64_t index = blk / ds->vm_per_blk;
	unsigned piece = (unsigned)(blk % ds->vm_per_blk);
	size_t in = (size_t)piece * ds->file.blksize;
	int rc;

	if (ds->staged.valid && ds->staged.index != index && (rc = bm_changes_flush(ds)) < 0)
		return ds->staged.err = rc;
	if (!ds->staged.valid) {
		if (ds->staged.buf == NULL && (ds->staged.buf = malloc(bs)) == NULL)
			return BM_ENOMEM;
		pthread_mutex_lock(&ds->mu);
		uint64_t left = ds->new_size - index * bs; /* storeblk: blk is below new_size */
		pthread_mutex_unlock(&ds->mu);
		ds->staged.index = index;
		ds->staged.len = left < bs ? (size_t)left : bs;
		memset(ds->staged.have, 0, sizeof(ds->staged.have));
		ds->staged.valid = true;
	}
	bm_assert(in + len <= ds->staged.len && piece < BM_VM_PER_BLK_MAX);
	memcpy(ds->staged.buf + in, buf, len);
	ds->staged.have[piece / 64] |= (uint64_t)1 << (piece % 64);
	return 0;
}

/* ---- bm_write ----------------------------------------------------------------- */

/* Block index as the next generation has it, into buf: bm_write's kept
 * bytes if they are that block, else fetched (waiting for its upload if it
 * is queued). */
static int pending_block(bm_dataset *ds, uint64_t index, char *buf)
{
	size_t bs = ds->blksize;

	pthread_mutex_lock(&ds->mu);
	bool kept = ds->wrote.valid && ds->wrote.index == index;
	if (kept && buf != ds->wrote.buf)
		memcpy(buf, ds->wrote.buf, bs);
	pthread_mutex_unlock(&ds->mu);
	return kept ? 0 : bm_fetch_pending(ds, index, buf);
}

/* A write of n bytes at in within block index (objlen bytes long) that
 * does not cover it: merged into the block as the next generation has it,
 * whose bytes are then kept. */
static int write_partial(bm_dataset *ds, uint64_t index, size_t in, const char *src, size_t n,
			 size_t objlen)
{
	size_t bs = ds->blksize;
	uint64_t seq;
	char *tmp = malloc(bs);
	int rc;

	if (tmp == NULL)
		return BM_ENOMEM;
	rc = pending_block(ds, index, tmp);
	if (rc == 0) {
		memcpy(tmp + in, src, n);
		rc = change_block(ds, index, tmp, objlen, false, &seq);
	}
	if (rc == 0) {
		pthread_mutex_lock(&ds->mu);
		/* Kept only while this change is the block's last one. */
		bool last = ds->nchanges > 0 && ds->changes[ds->nchanges - 1].seq == seq;
		if (last) {
			char *old = ds->wrote.buf;
			ds->wrote.buf = tmp;
			ds->wrote.index = index;
			ds->wrote.valid = true;
			tmp = old;
		}
		pthread_mutex_unlock(&ds->mu);
	}
	free(tmp);
	return rc;
}

int bm_write(bm_dataset *ds, uint64_t offset, const void *buf, size_t len)
{
	size_t bs = ds->blksize;
	const char *src = buf;
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
	bm_changes_begin(ds);
	while (len > 0 && rc == 0) {
		uint64_t index = offset / bs;
		size_t in = (size_t)(offset % bs);
		uint64_t left = ds->new_size - index * bs;
		size_t objlen = left < bs ? (size_t)left : bs;
		size_t n = objlen - in < len ? objlen - in : len;

		if (in == 0 && n == objlen)
			rc = change_block(ds, index, src, objlen, false, NULL);
		else
			rc = write_partial(ds, index, in, src, n, objlen);
		src += n;
		offset += n;
		len -= n;
	}
	return rc;
}

/* ---- size, discard --------------------------------------------------------------- */

int bm_resize(bm_dataset *ds, uint64_t size)
{
	if (ds->flat)
		return BM_EREADONLY;
	if (size > BM_SIZE_MAX)
		return BM_EINVAL;
	struct vm_fileh_stats st = { .ndirty = 0 };
	vm_fileh *fh = bm_fh(ds);
	if (fh != NULL)
		vm_fileh_stats(fh, &st);
	if (atomic_load(&ds->nmappings) > 0 || st.ndirty > 0) {
		bm_set_error(ds, BM_EBUSY, "%s: cannot resize while mapped or with uncommitted pages", ds->url);
		return BM_EBUSY;
	}
	/* Writes queued before the shrink must be ordered before it. */
	int rc = bm_upload_wait(ds);
	if (rc < 0)
		return rc;
	size_t bs = ds->blksize, vbs = ds->file.blksize;
	pthread_mutex_lock(&ds->mu);
	uint64_t old = ds->new_size;
	ds->new_size = size;
	/* The length of the block bm_write kept may change: fetch it next
	 * time. */
	forget_wrote_locked(ds);
	if (size < ds->trunc_size) {
		/* What lies past the cut is gone, even if the dataset grows
		 * again before the commit: changes wholly past it are
		 * dropped, the rest read as zeros past it (blocks.c). */
		ds->trunc_size = size;
		ds->trunc_seq = ds->change_seq;
		size_t keep = 0;
		for (size_t i = 0; i < ds->nchanges; i++) {
			if (ds->changes[i].index * bs >= size)
				free(ds->changes[i].key);
			else
				ds->changes[keep++] = ds->changes[i];
		}
		ds->nchanges = keep;
	}
	pthread_mutex_unlock(&ds->mu);
	if (size < old && !ds->overlay && fh != NULL) {
		/* Cached blocks past the new end (and the new last block's tail)
		 * must read as zeros if the dataset grows again: drop them;
		 * loads now zero what lies past the size. */
		for (uint64_t i = size / vbs; i < (old + vbs - 1) / vbs; i++)
			vm_fileh_invalidate_page(fh, i);
	}
	return 0;
}

int bm_discard(bm_dataset *ds)
{
	vm_fileh *fh = bm_fh(ds);
	int rc = fh != NULL ? vm_fileh_dirty_discard(fh) : 0;
	if (rc < 0)
		return BM_EBUSY;
	size_t n;
	struct bm_change *v = bm_changes_take(ds, &n);
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
	pthread_mutex_lock(&ds->mu);
	ds->new_size = ds->trunc_size = ds->manifest->size;
	ds->trunc_seq = 0;
	free(ds->new_attrs);
	ds->new_attrs = NULL;
	ds->attrs_changed = false;
	ds->gc_guard.begun = false;
	pthread_mutex_unlock(&ds->mu);
	ds->staged.valid = false; /* a writeout that failed midway */
	bm_upload_drop_failed(ds);
	return 0;
}
