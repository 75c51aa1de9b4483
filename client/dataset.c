/* dataset.c — the dataset handle once open (opening it: open.c): the
 * BigFile backend that virtmem calls (loadblk -> blocks.c, storeblk ->
 * changes.c, on_fault -> readahead.c), closing, mappings, reads,
 * generations, attributes, refresh and stats.  The top of the handle's
 * files with open.c: it calls blocks.c, changes.c, upload.c, readahead.c
 * and pool.c, and none of them calls it.
 *
 * Owns: struct bm_dataset and struct bm_mapping.
 * Locking: ds->mu guards the manifest pointer and the fields next to it.
 * See internal.h for the order of the other locks.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_load.h"
#include "internal.h"
#include "store.h"
#include "tags.h"

struct bm_mapping {
	bm_dataset *ds;
	vm_vma *vma;
};

static bm_dataset *ds_of(vm_bigfile *f)
{
	return (bm_dataset *)f; /* file is the first member */
}

/* ---- the BigFile backend ------------------------------------------------------- */

static int ds_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	bm_dataset *ds = ds_of(f);
	int rc;

	if (!bm_in_readahead())
		atomic_fetch_add(&ds->c.misses, 1);
	/* A fault's failure is reported here, with the URL: the access gets
	 * SIGBUS.  A read-ahead failure is not: the fault that needs the block
	 * tries again.  A read-ahead worker may hold the block already (a
	 * flat object's run). */
	rc = bm_in_readahead() ? bm_readahead_fill(ds, blk, buf) : 0;
	if (rc == 0) {
		/* A miss: a thread waits for it (a fault, a read). */
		bool was = bm_http_set_waited(!bm_in_readahead());
		rc = bm_load_vmblock(ds, blk, buf, !bm_in_readahead());
		bm_http_set_waited(was);
	}
	else if (rc > 0)
		rc = 0;
	if (rc < 0)
		return rc == BM_ENOMEM ? -ENOMEM : -EIO;
	if (bm_in_readahead())
		atomic_fetch_add(&ds->c.readahead_blocks, 1);
	return 0;
}

static int ds_storeblk(vm_bigfile *f, vm_blk_t blk, const void *buf)
{
	bm_dataset *ds = ds_of(f);
	size_t bs = f->blksize, len;
	uint64_t off = blk * bs;

	pthread_mutex_lock(&ds->mu);
	len = off >= ds->new_size ? 0 : (ds->new_size - off < bs ? (size_t)(ds->new_size - off) : bs);
	pthread_mutex_unlock(&ds->mu);
	if (len == 0)
		return 0; /* past the end of what is published */
	/* A piece of a format 3 block joins its block (changes.c). */
	int rc = ds->vm_per_blk > 1 ? bm_change_piece(ds, blk, buf, len)
				    : bm_change_block(ds, blk, buf, len, true);
	return rc == 0 ? 0 : (rc == BM_ENOMEM ? -ENOMEM : -EIO);
}

static void ds_on_fault(vm_bigfile *f, vm_blk_t blk, int write)
{
	bm_dataset *ds = ds_of(f);

	/* A write to a flat object (mapped VM_READONLY) never gets here:
	 * virtmem refuses it with a line naming ds->file.name. */
	if (!write)
		bm_readahead_on_fault(ds, blk);
}

static void ds_on_fault_around(vm_bigfile *f, vm_blk_t blk, size_t n)
{
	bm_readahead_on_fault_around(ds_of(f), blk, n);
}

static const vm_bigfile_ops ds_ops = {
	.loadblk = ds_loadblk,
	.storeblk = ds_storeblk,
	.on_fault = ds_on_fault,
	.on_fault_around = ds_on_fault_around,
	.flags = VM_OPS_LOADBLK_WRITES,
};

/* Overlay mode: the same, plus the mirror as base layer (overlay.c). */
static const vm_bigfile_ops ds_overlay_ops = {
	.loadblk = ds_loadblk,
	.storeblk = ds_storeblk,
	.on_fault = ds_on_fault,
	.on_fault_around = ds_on_fault_around,
	.mmap_setup_read = bm_overlay_setup_read,
	.remmap_blk_read = bm_overlay_remmap,
	.munmap = bm_overlay_munmap,
	.flags = VM_OPS_LOADBLK_WRITES,
};

void bm_ds_set_backend(bm_dataset *ds)
{
	ds->file.ops = ds->overlay ? &ds_overlay_ops : &ds_ops;
}

void bm_close(bm_dataset *ds)
{
	if (ds == NULL)
		return;
	bm_readahead_stop(ds);  /* hands out no more work */
	bm_pool_stop(&ds->pool); /* the uploads queued finish first */
	bm_readahead_free(ds);
	bm_upload_free(ds);
	vm_fileh_close(ds->fh); /* unmaps what is still mapped */
	vm_ram_close(ds->ram);
	bm_overlay_close(ds);
	bm_pages_free(ds->pages);
	bm_store_close(ds->store);
	bm_manifest_free(ds->manifest);
	bm_changes_clear(ds);
	free(ds->new_attrs);
	free(ds->manifest_json);
	free(ds->first);
	free(ds->url);
	pthread_mutex_destroy(&ds->mu);
	pthread_mutex_destroy(&ds->cache_mu);
	free(ds);
}


int bm_generation_info(bm_dataset *ds, uint64_t gen, struct bm_generation_info *gi)
{
	struct bm_manifest *m = NULL;
	char key[BM_KEY_GEN_SIZE], *json = NULL;
	size_t len = 0;
	int rc;

	if (ds->flat || gen == 0)
		return BM_ENOTFOUND;
	bm_key_gen(key, gen);
	rc = bm_get_manifest(ds, key, &m, &json, &len, NULL, 0);
	if (rc == BM_ENOTFOUND && ds->exists && gen == ds->manifest->generation) {
		/* The latest may not be kept yet (its writer stopped before). */
		rc = 0;
		m = NULL;
	}
	if (rc < 0)
		return rc;
	if (m && m->generation != gen) {
		bm_set_error(ds, BM_EFORMAT, "%s/%s says it is generation %" PRIu64, ds->url, key, m->generation);
		bm_manifest_free(m);
		free(json);
		return BM_EFORMAT;
	}
	const struct bm_manifest *src = m ? m : ds->manifest;
	memset(gi, 0, sizeof(*gi));
	gi->generation = src->generation;
	gi->size = src->size;
	gi->blksize = src->blksize;
	gi->nblocks = src->stored;
	if (src->stored == UINT64_MAX) /* a v2 manifest that does not say */
		gi->nblocks = bm_table_count(ds, src);
	snprintf(gi->created, sizeof(gi->created), "%s", src->created);
	bm_manifest_free(m);
	free(json);
	return 0;
}

int bm_generation_prev(bm_dataset *ds, uint64_t before, struct bm_generation_info *gi)
{
	unsigned missing = 0;

	if (ds->flat)
		return 0;
	for (uint64_t g = before - 1; before > 1 && g >= 1 && missing < BM_LOG_MAX_MISSING; g--) {
		int rc = bm_generation_info(ds, g, gi);
		if (rc == 0)
			return 1;
		if (rc != BM_ENOTFOUND)
			return rc;
		missing++;
	}
	return 0;
}

int bm_is_latest(bm_dataset *ds)
{
	pthread_mutex_lock(&ds->mu);
	int latest = ds->at_latest;
	pthread_mutex_unlock(&ds->mu);
	return latest;
}

uint64_t bm_size(const bm_dataset *ds) { return ds->new_size; }
size_t bm_blksize(const bm_dataset *ds) { return ds->blksize; }
uint64_t bm_generation(const bm_dataset *ds) { return ds->manifest->generation; }
int bm_is_flat(const bm_dataset *ds) { return ds->flat; }
int bm_format_version(const bm_dataset *ds)
{
	return ds->flat || !ds->exists ? 0 : (int)ds->manifest->version;
}
size_t bm_piece_bytes(const bm_dataset *ds) { return bm_ds_piece(ds); }
const char *bm_url(const bm_dataset *ds) { return ds->url; }

/* ---- mappings ------------------------------------------------------------------- */

/* The page cache is made at the first mapping (or bm_stats), not at open:
 * its RAM pool's memfd and reserved mapping, virtmem's handle (another
 * memfd), read-ahead's queue (only faults read ahead) and, on the
 * process's first, the fault engine's threads.  An
 * open and close that map nothing (a bm_read, a listing, an attribute)
 * made and unmade them for nothing: ~14% of an open and close's CPU on
 * loopback (docs/client.md).  Mappings may be made from several threads
 * at once: cache_mu makes it once (read-ahead's start too, which is not
 * safe twice at once); fh is published last. */
int bm_page_cache(bm_dataset *ds)
{
	int rc = 0;

	if (bm_fh(ds) != NULL)
		return 0;
	pthread_mutex_lock(&ds->cache_mu);
	if (ds->fh == NULL) {
		vm_fileh *fh = NULL;
		if (ds->ram == NULL)
			rc = vm_ram_open(&ds->ram, ds->ram_budget);
		if (rc == 0)
			rc = vm_fileh_open(&fh, &ds->file, ds->ram, ds->fh_flags);
		if (rc < 0) {
			bm_set_error(ds, rc, "%s: cannot set up the page cache: %s", ds->url, vm_strerror(rc));
			rc = rc == -EINVAL ? BM_EINVAL : BM_ENOMEM;
		} else if (!ds->overlay && (rc = bm_readahead_start(ds)) < 0) {
			vm_fileh_close(fh); /* overlay: the kernel reads ahead */
		} else {
			__atomic_store_n(&ds->fh, fh, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&ds->cache_mu);
	return rc;
}

/* Spares (zeroed memory ready for the next loads): from the first mapping
 * on, since only faults load into the page cache (bm_read and bm_write do
 * not); up to an eighth of the budget, at least one block.  None for the
 * userfaultfd engine, whose blocks live in a memfd of the handle: the
 * pool's spares would go unused, then be filled once the handle closes
 * (16 MiB populated and punched again in bm_close). */
static void start_spares(bm_dataset *ds)
{
	size_t bs = ds->file.blksize, cap = ds->opt.cache_bytes / 8;
	size_t n = (ds->opt.spare_bytes < cap ? ds->opt.spare_bytes : cap) / bs;
	struct vm_fileh_stats st;

	if (ds->opt.spare_bytes == 0 || atomic_exchange(&ds->spares_started, true))
		return;
	vm_fileh_stats(ds->fh, &st);
	if (strncmp(st.engine, "uffd", 4) == 0)
		return;
	/* An optimisation: without its thread, loads allocate. */
	int r = vm_ram_keep_spare(ds->ram, bs, n ? (unsigned)(n < 1024 ? n : 1024) : 1);
	if (r < 0 && ds->opt.verbose)
		bm_log("%s: no spare memory kept: %s", ds->url, vm_strerror(r));
}

/* The mirror's file shows the generation as published, also the bytes a
 * shrink since has cut (which must read as zeros).  A handle with such a
 * shrink reads in loadblk mode from then on (it has no mapping and no
 * dirty page: bm_resize refuses while mapped through the mirror, or with
 * dirty pages).  0, or BM_EBUSY should dirty pages be lost. */
static int overlay_check(bm_dataset *ds)
{
	struct vm_fileh_stats st;
	vm_fileh *fh;

	if (!ds->overlay || atomic_load(&ds->nmappings) > 0 || ds->trunc_size >= ds->base_size)
		return 0;
	vm_fileh_stats(ds->fh, &st);
	if (st.ndirty > 0) {
		bm_set_error(ds, BM_EBUSY, "%s: commit or discard first: a shrink is not visible through the "
			     "mirror, and pages written through it are dirty", ds->url);
		return BM_EBUSY;
	}
	ds->file.ops = &ds_ops;
	int rc = vm_fileh_open(&fh, &ds->file, ds->ram, VM_DONT_MMAP_OVERLAY);
	if (rc == 0)
		rc = bm_readahead_start(ds);
	if (rc < 0) {
		ds->file.ops = &ds_overlay_ops;
		bm_set_error(ds, BM_ENOMEM, "%s: cannot leave overlay mode: %s", ds->url, vm_strerror(rc));
		return BM_ENOMEM;
	}
	vm_fileh_close(ds->fh);
	__atomic_store_n(&ds->fh, fh, __ATOMIC_RELEASE); /* read with bm_fh */
	bm_overlay_close(ds);
	ds->overlay = false;
	snprintf(ds->mode_why, sizeof(ds->mode_why),
		 "left overlay mode: the mirror's file still shows bytes a shrink cut");
	return 0;
}

int bm_map(bm_dataset *ds, uint64_t offset, size_t len, void **addrp, bm_mapping **mp)
{
	size_t bs = ds->file.blksize;
	uint64_t size = ds->new_size;
	bm_mapping *m;
	int rc;

	*mp = NULL;
	*addrp = NULL;
	if ((rc = bm_page_cache(ds)) < 0 || (rc = overlay_check(ds)) < 0)
		return rc;
	if (len == 0 && offset < size)
		len = size - offset;
	if (len == 0 || offset >= size || len > size - offset) {
		bm_set_error(ds, BM_EINVAL, "%s: range [%" PRIu64 ", +%zu) is not inside the dataset's %" PRIu64 " bytes",
			     ds->url, offset, len, size);
		return BM_EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return BM_ENOMEM;
	uint64_t first = offset / bs, last = (offset + len - 1) / bs;
	rc = vm_fileh_mmap(&m->vma, ds->fh, first, (size_t)(last - first + 1));
	if (rc < 0) {
		bm_set_error(ds, rc, "%s: cannot map %zu bytes: %s", ds->url, len, vm_strerror(rc));
		free(m);
		return rc == -ENOMEM ? BM_ENOMEM : BM_EINVAL;
	}
	m->ds = ds;
	atomic_fetch_add(&ds->nmappings, 1);
	start_spares(ds);
	*addrp = (char *)vm_vma_addr(m->vma) + (offset - first * bs);
	*mp = m;
	return 0;
}

void bm_unmap(bm_mapping *m)
{
	if (m == NULL)
		return;
	atomic_fetch_sub(&m->ds->nmappings, 1);
	vm_vma_unmap(m->vma);
	free(m);
}

/* Bytes [in, in + n) of block index, a part of it, into dst.  A format 3
 * or 4 block (pieces > 1): only the pieces that cover the bytes, with
 * one Range GET of its object, each piece checked against its own sum
 * (blocks.c); only the bytes asked for are stored, straight into dst
 * (the rest of the pieces is hashed as it arrives, not copied; on a
 * failure dst's bytes are undefined).  Else the whole block, checked
 * against its sum, of which only the bytes asked for are stored, the same
 * way. */
static int read_part(bm_dataset *ds, uint64_t index, size_t in, size_t n, char *dst)
{
	size_t got = 0;
	unsigned pieces = bm_ds_pieces(ds);
	char msg[512];
	int rc;

	if (pieces <= 1)
		return bm_fetch_block_part(ds, index, in, n, dst);
	size_t skip = in % bm_ds_piece(ds);
	rc = bm_fetch_pieces_part(ds, index, in, n, dst, &got, msg, sizeof(msg));
	if (rc < 0) {
		bm_set_error(ds, rc, "block %" PRIu64 ": %s", index, msg);
	} else {
		/* A hole, the dataset's end or a shrink: zeros past what came. */
		size_t have = got > skip ? got - skip : 0;
		if (have < n)
			memset(dst + have, 0, n - have);
		atomic_fetch_add(got ? &ds->c.fetched_blocks : &ds->c.hole_blocks, 1);
		atomic_fetch_add(&ds->c.fetched_bytes, got);
	}
	return rc;
}

int64_t bm_read(bm_dataset *ds, uint64_t offset, void *buf, size_t len)
{
	size_t bs = ds->blksize;
	char *dst = buf;
	uint64_t size;
	int64_t done = 0;

	pthread_mutex_lock(&ds->mu);
	size = ds->manifest->size;
	pthread_mutex_unlock(&ds->mu);
	if (offset >= size)
		return 0;
	if (len > size - offset)
		len = (size_t)(size - offset);
	while (len > 0) {
		uint64_t index = offset / bs;
		size_t in = (size_t)(offset % bs), n = bs - in < len ? bs - in : len;
		int rc;
		if (in == 0 && n == bs) /* a whole block: one GET, straight into buf */
			rc = bm_fetch_block(ds, index, dst, false);
		else
			rc = read_part(ds, index, in, n, dst);
		if (rc < 0)
			return done ? done : rc;
		dst += n;
		offset += n;
		len -= n;
		done += (int64_t)n;
	}
	return done;
}

/* The handle's generation as a v2 or v3 tree (root and size copied under
 * ds->mu: a refresh may swap the manifest), into *t: true for v2 and v3;
 * false for v1 or flat, with ds->mu then HELD for the caller to read
 * ds->manifest. */
static bool tree_snapshot(bm_dataset *ds, struct bm_manifest *t)
{
	pthread_mutex_lock(&ds->mu);
	if (ds->flat || ds->manifest->version < 2)
		return false;
	memset(t, 0, sizeof(*t));
	t->version = ds->manifest->version;
	t->blksize = ds->manifest->blksize;
	t->piece = ds->manifest->piece;
	t->size = ds->manifest->size;
	memcpy(t->root, ds->manifest->root, sizeof(t->root));
	pthread_mutex_unlock(&ds->mu);
	return true;
}

int bm_next_block(bm_dataset *ds, uint64_t from, uint64_t *index)
{
	struct bm_manifest t;
	char msg[512];
	int found = 0;

	if (tree_snapshot(ds, &t)) {
		found = bm_table_next(ds, &t, from, index, msg, sizeof(msg));
		if (found < 0)
			bm_set_error(ds, found, "%s: %s", ds->url, msg);
		return found;
	}
	const struct bm_manifest *m = ds->manifest;
	if (!ds->flat) {
		size_t i = bm_manifest_lower_bound(m, from);
		if (i < m->nblocks) {
			*index = m->blocks[i].index;
			found = 1;
		}
	}
	pthread_mutex_unlock(&ds->mu);
	return found;
}

int bm_block_sum(bm_dataset *ds, uint64_t index, char *sum, size_t n)
{
	struct bm_manifest t;
	char msg[512], s[BM_SUM_HEX + 1];
	int rc = BM_EINVAL;

	if (n < BM_SUM_HEX + 1)
		return BM_EINVAL;
	if (tree_snapshot(ds, &t)) {
		if (index >= bm_manifest_nblk(&t))
			return BM_EINVAL;
		rc = bm_table_find(ds, &t, index, s, NULL, msg, sizeof(msg));
		if (rc < 0)
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
		else
			snprintf(sum, n, "%s", s);
		return rc;
	}
	if (!ds->flat && index < bm_manifest_nblk(ds->manifest)) {
		const struct bm_block *b = bm_manifest_find(ds->manifest, index);
		snprintf(sum, n, "%s", b ? b->sum : "");
		rc = b ? 1 : 0;
	}
	pthread_mutex_unlock(&ds->mu);
	return rc;
}

int bm_diff_blocks(bm_dataset *a, bm_dataset *b, int (*fn)(void *arg, uint64_t first, uint64_t count),
		   void *arg)
{
	char msg[512];

	if (a->flat || b->flat || a->blksize != b->blksize) {
		bm_set_error(a, BM_EINVAL, "%s: blocks of a flat object, or of two block sizes, cannot be "
			     "compared", a->url);
		return BM_EINVAL;
	}
	/* b's pages are read through a's cache: pages are named by their
	 * bytes, whoever reads them. */
	int rc = bm_table_diff(a, a->manifest, b->manifest, fn, arg, msg, sizeof(msg));
	if (rc < 0)
		bm_set_error(a, rc, "%s: comparing generations %" PRIu64 " and %" PRIu64 ": %s", a->url,
			     a->manifest->generation, b->manifest->generation, msg);
	return rc;
}

/* ---- user attributes ------------------------------------------------------------- */

int bm_attrs_get(bm_dataset *ds, char *buf, size_t n)
{
	pthread_mutex_lock(&ds->mu);
	const char *a = ds->attrs_changed ? ds->new_attrs : ds->manifest->attrs;
	int len = snprintf(buf, n, "%s", a ? a : "{}");
	pthread_mutex_unlock(&ds->mu);
	return len;
}

int bm_attrs_set(bm_dataset *ds, const char *json)
{
	char msg[300], *a = NULL;
	int rc;

	if (ds->flat) {
		bm_set_error(ds, BM_EREADONLY, "%s is a flat object (not a dataset): it has no attributes to set",
			     ds->url);
		return BM_EREADONLY;
	}
	if (json == NULL)
		return BM_EINVAL;
	rc = bm_attrs_normalize(json, strlen(json), &a, msg, sizeof(msg));
	if (rc == BM_EFORMAT) {
		bm_set_error(ds, BM_EINVAL, "%s: %s", ds->url, msg);
		return BM_EINVAL;
	}
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ds->mu);
	const char *cur = ds->manifest->attrs;
	free(ds->new_attrs);
	ds->new_attrs = a;
	/* Back to what the generation has: nothing to publish. */
	ds->attrs_changed = !((a == NULL && cur == NULL) || (a && cur && strcmp(a, cur) == 0));
	pthread_mutex_unlock(&ds->mu);
	return 0;
}

/* ---- refresh, discard, stats ------------------------------------------------------- */

/* The blocks whose content differs between two generations: ranges
 * collected before a refresh swaps manifests (finding them may fail: a v2
 * page that cannot be read), dropped from the cache after. */
struct changed {
	uint64_t (*r)[2];          /* [first, count] */
	size_t n, cap;
};

static int changed_add(void *arg, uint64_t first, uint64_t count)
{
	struct changed *c = arg;

	if (c->n == c->cap) {
		size_t ncap = c->cap ? 2 * c->cap : 16;
		void *p = realloc(c->r, ncap * sizeof(*c->r));
		if (p == NULL)
			return BM_ENOMEM;
		c->r = p;
		c->cap = ncap;
	}
	c->r[c->n][0] = first;
	c->r[c->n][1] = count;
	c->n++;
	return 0;
}

/* The changed blocks of a -> b into c: those whose sums differ, and the
 * last block of each when the size changed (its length did).  Only stored
 * blocks are walked (the sizes are the server's word: up to 2^50 / 4 KiB
 * blocks), and of two v2 trees only the pages whose sums differ. */
static int find_changed(bm_dataset *ds, const struct bm_manifest *a, const struct bm_manifest *b,
			struct changed *c)
{
	char msg[512];
	int rc = bm_table_diff(ds, a, b, changed_add, c, msg, sizeof(msg));

	if (rc < 0 && rc != BM_ENOMEM)
		bm_set_error(ds, rc, "%s: cannot compare generations %" PRIu64 " and %" PRIu64 ": %s",
			     ds->url, a->generation, b->generation, msg);
	if (rc == 0 && a->size != b->size) {
		uint64_t na = bm_manifest_nblk(a), nb = bm_manifest_nblk(b);
		if (na > 0)
			rc = changed_add(c, na - 1, 1);
		if (rc == 0 && nb > 0)
			rc = changed_add(c, nb - 1, 1);
	}
	return rc;
}

int bm_refresh(bm_dataset *ds)
{
	struct bm_manifest *m = NULL;
	char *json = NULL, etag[BM_ETAG_SIZE];
	size_t len = 0;
	struct vm_fileh_stats st;
	int rc;

	if (ds->flat)
		return 0;
	if (ds->overlay && atomic_load(&ds->nmappings) > 0) {
		bm_set_error(ds, BM_EBUSY, "%s: unmap before refreshing a handle that reads through the mirror",
			     ds->url);
		return BM_EBUSY;
	}
	vm_fileh *fh = bm_fh(ds);
	st.ndirty = 0;
	if (fh != NULL)
		vm_fileh_stats(fh, &st);
	if (st.ndirty > 0 || bm_changes_pending(ds) || ds->attrs_changed) {
		bm_set_error(ds, BM_EBUSY, "%s: commit or discard the changes before refreshing", ds->url);
		return BM_EBUSY;
	}
	rc = bm_get_manifest(ds, BM_KEY_MANIFEST, &m, &json, &len, etag, sizeof(etag));
	if (rc < 0)
		return rc;
	if (m->blksize != ds->blksize || bm_manifest_pieces(m) != bm_ds_pieces(ds)) {
		if (m->blksize != ds->blksize)
			bm_set_error(ds, BM_EFORMAT, "%s: the block size changed from %zu to %zu", ds->url,
				     ds->blksize, m->blksize);
		else /* mapped in pieces or not: reopen */
			bm_set_error(ds, BM_EFORMAT, "%s: the dataset is now in format version %u, "
				     "with%s piece sums (reopen to follow it)", ds->url, m->version,
				     bm_manifest_pieces(m) ? "" : "out");
		bm_manifest_free(m);
		free(json);
		return BM_EFORMAT;
	}
	if (ds->exists && m->generation < ds->manifest->generation) {
		/* A server (or a cache before it) gone back in time: following
		 * it would make our next commit reuse generation numbers. */
		bm_set_error(ds, BM_EFORMAT, "%s: the server's manifest is at generation %" PRIu64
			     ", older than this handle's %" PRIu64 " (reopen to follow it)",
			     ds->url, m->generation, ds->manifest->generation);
		bm_manifest_free(m);
		free(json);
		return BM_EFORMAT;
	}
	struct changed ch = { .r = NULL };
	if (!ds->overlay && (rc = find_changed(ds, ds->manifest, m, &ch)) < 0) {
		free(ch.r);
		bm_manifest_free(m);
		free(json);
		return rc;
	}
	if (ds->overlay && m->generation != ds->manifest->generation &&
	    bm_overlay_move_base(ds, m->generation, m->size) < 0) {
		/* The mirror does not show it (yet): stay where we are. */
		bm_set_error(ds, BM_EBUSY, "%s: the mirror does not show generation %" PRIu64 " yet",
			     ds->url, m->generation);
		bm_manifest_free(m);
		free(json);
		return BM_EBUSY;
	}
	/* Swap first, then drop what changed: a load that read the old
	 * manifest is still LOADING then, so virtmem redoes it. */
	pthread_mutex_lock(&ds->mu);
	struct bm_manifest *old = ds->manifest;
	ds->manifest = m;
	free(ds->manifest_json);
	ds->manifest_json = json;
	ds->manifest_json_len = len;
	ds->new_size = ds->trunc_size = m->size;
	ds->trunc_seq = 0;
	ds->exists = true;
	ds->at_latest = true;
	snprintf(ds->etag, sizeof(ds->etag), "%s", etag);
	pthread_mutex_unlock(&ds->mu);
	for (size_t i = 0; i < ch.n && fh != NULL; i++) /* blocks, each vm_per_blk of virtmem's */
		for (uint64_t k = 0; k < ch.r[i][1] * ds->vm_per_blk; k++)
			vm_fileh_invalidate_page(fh, ch.r[i][0] * ds->vm_per_blk + k);
	free(ch.r);
	bm_manifest_free(old);
	return 0;
}

void bm_stats(bm_dataset *ds, struct bm_stats *st)
{
	struct vm_fileh_stats vs = { .engine = "" };

	/* The engine is known once the page cache is made. */
	if (bm_page_cache(ds) == 0)
		vm_fileh_stats(bm_fh(ds), &vs);
	memset(st, 0, sizeof(*st));
	st->mode = ds->overlay ? "overlay" : "loadblk";
	st->mode_why = ds->mode_why;
	st->fetched_blocks = ds->c.fetched_blocks;
	st->fetched_bytes = ds->c.fetched_bytes;
	st->hole_blocks = ds->c.hole_blocks;
	st->cache_misses = ds->c.misses;
	st->cache_hits = vs.faults > st->cache_misses ? vs.faults - st->cache_misses : 0;
	st->readahead_blocks = ds->c.readahead_blocks;
	st->retries = ds->c.retries;
	st->uploaded_blocks = ds->c.uploaded_blocks;
	st->uploaded_bytes = ds->c.uploaded_bytes;
	st->commits = ds->c.commits;
	st->conflicts = ds->c.conflicts;
	st->ram_bytes = vm_ram_used(ds->ram);
	st->engine = vs.engine;
}
