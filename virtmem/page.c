/* page.c — the page cache: a page's life from EMPTY through a load to its
 * end, the RAM a page takes, and reclaim (the pool's LRU of clean pages).
 *
 * Owns: every struct vm_page (its state, its place on ram->lru and
 * fh->dirty) and the reclaim order.  The state machine and which function
 * performs each transition are at the top of fileh.c.
 *
 * Locking: everything here runs with vm_lock held; page_load_locked gives
 * it up around the fill (a backend call) and takes it back.  A streamed
 * run (vm_run_*) takes vm_lock itself to take and end its blocks, and
 * writes their slots without it.  A page being
 * loaded is LOADING and owned by its loader (page->loader) meanwhile: other
 * threads that need it sleep in vm_lock_wait_io until the load ends.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

void page_check_locked(const struct vm_page *page)
{
	vm_lock_assert_held();
	switch (page->state) {
	case VM_PAGE_EMPTY:
		vm_assert(!"an EMPTY page has no struct");
		break;
	case VM_PAGE_LOADING:
	case VM_PAGE_LOADING_INVALIDATED:
	case VM_PAGE_LOADED_FOR_WRITE:
		/* Owned by its loader, on no list. */
		vm_assert(page->loader != NULL);
		vm_assert(vm_list_empty(&page->lru));
		vm_assert(vm_list_empty(&page->dirty));
		break;
	case VM_PAGE_LOADED:
		vm_assert(!vm_list_empty(&page->lru));
		vm_assert(vm_list_empty(&page->dirty));
		vm_assert(!page->storing && !page->stored);
		break;
	case VM_PAGE_DIRTY:
		vm_assert(!vm_list_empty(&page->dirty));
		vm_assert(vm_list_empty(&page->lru));
		break;
	}
	/* LOADED_FOR_WRITE is seen by its loader only. */
	vm_assert(page->state != VM_PAGE_LOADED_FOR_WRITE || page->loader == vm_self());
}

struct vm_page *page_new_locked(vm_fileh *fh, vm_blk_t blk)
{
	vm_lock_assert_held();
	vm_assert(pagetab_get(&fh->pages, blk) == NULL);
	struct vm_page *page = calloc(1, sizeof(*page));
	if (page == NULL)
		return NULL;
	page->fh = fh;
	page->blk = blk;
	page->state = VM_PAGE_LOADING;
	page->loader = vm_self();
	vm_list_init(&page->lru);
	vm_list_init(&page->dirty);
	if (pagetab_put(&fh->pages, page) < 0) {
		free(page);
		return NULL;
	}
	return page;
}

size_t page_forget_locked(struct vm_page *page)
{
	vm_fileh *fh = page->fh;
	size_t off = page->ram_off;

	vm_lock_assert_held();
	vm_list_del(&page->lru);
	if (!vm_list_empty(&page->dirty)) {
		vm_list_del(&page->dirty);
		fh->ndirty--;
	}
	if (fh->engine->release_page_locked)
		fh->engine->release_page_locked(page);
	pagetab_del(&fh->pages, page->blk);
	fh->st.ncached--;
	free(page);
	return off;
}

void page_free_locked(struct vm_page *page)
{
	vm_ram *ram = page->fh->ram;
	size_t size = page->fh->blksize;
	/* An engine that keeps blocks in memory of its own (uffd) never
	 * writes the pool's slot: a slot it got fresh is a hole still (one
	 * it got from a reclaimed page of another engine may hold that
	 * page's bytes, and is punched). */
	bool hole = page->fh->engine->own_memory && page->slot == VM_SLOT_FRESH;

	vm_lock_assert_held();
	ram_free(ram, page_forget_locked(page), size, hole);
	spare_wake_locked(ram);
}

int page_drop_locked(struct vm_page *page)
{
	int rc;

	vm_lock_assert_held();
	rc = page_unmap_all_locked(page);
	if (rc < 0)
		return rc; /* still mapped: its slot is not to be reused */
	page_free_locked(page);
	return 0;
}

/* Makes room for size bytes by dropping the least recently faulted clean
 * pages of any handle on ram.  When the oldest clean page has the size
 * wanted, its slot is handed over as it is (*offp, still counted as used):
 * its memory is overwritten by the next load instead of being given back
 * and zeroed again, which is what keeps a cache at its budget cheap.
 * Returns 1 with *offp set, 0 when size bytes are free, -ENOSPC when
 * only dirty or busy pages are left, or the -errno of a victim that could
 * not be unmapped (it is kept). */
static int reclaim_locked(vm_ram *ram, size_t size, size_t *offp, enum vm_slot *slotp)
{
	vm_lock_assert_held();
	if (size > ram->budget)
		return -ENOSPC; /* reclaiming could never make room */
	while (ram->budget - ram->used - ram->spare_bytes < size) {
		if (vm_list_empty(&ram->lru))
			return -ENOSPC;
		struct vm_page *victim = vm_container_of(ram->lru.next, struct vm_page, lru);
		page_check_locked(victim);
		vm_assert(victim->state == VM_PAGE_LOADED);
		/* Written without a fault (an engine that finds writes
		 * later)?  Then it is dirty, off the LRU, and kept.  Writes
		 * are fenced off meanwhile, so none lands after the look. */
		vm_fileh *vfh = victim->fh;
		vm_blk_t vblk = victim->blk;
		engine_fence_locked(vfh, vblk, true);
		engine_sync_written_locked(vfh, victim);
		if (victim->state != VM_PAGE_LOADED) {
			engine_fence_locked(vfh, vblk, false);
			continue;
		}
		/* A victim that cannot be unmapped is kept: the load
		 * fails (its error was logged). */
		if (vfh->blksize == size) {
			int rc = page_unmap_all_locked(victim);
			if (rc == 0) {
				vfh->st.reclaimed++;
				*slotp = victim->slot;
				*offp = page_forget_locked(victim);
			}
			engine_fence_locked(vfh, vblk, false);
			return rc < 0 ? rc : 1;
		}
		int rc = page_drop_locked(victim);
		engine_fence_locked(vfh, vblk, false);
		if (rc < 0)
			return rc;
		vfh->st.reclaimed++;
	}
	return 0;
}

/* Gives page a RAM slot of the handle's block size: a ready spare, a free
 * slot within the budget (after giving spares back), the spare being
 * filled, or a reclaimed page's slot, in that order. */
static int page_alloc_ram_locked(vm_fileh *fh, struct vm_page *page)
{
	vm_ram *ram = fh->ram;
	size_t size = fh->blksize;
	int rc;

	vm_lock_assert_held();
	if (!fh->engine->own_memory && spare_take_locked(ram, size, &page->ram_off)) {
		page->slot = VM_SLOT_ZEROED;
		fh->st.spares_taken++;
		fh->st.ncached++;
		return 0;
	}
	rc = ram_alloc(ram, size, &page->ram_off);
	if (rc == -ENOSPC && ram->spare_n > 0) {
		spare_release_locked(ram, size);
		rc = ram_alloc(ram, size, &page->ram_off);
	}
	if (rc == -ENOSPC && !fh->engine->own_memory &&
	    spare_take_filling_locked(ram, size, &page->ram_off)) {
		/* Rather than reclaim a block. */
		page->slot = VM_SLOT_FRESH;
		fh->st.spares_taken++;
		rc = 0;
	}
	if (rc == -ENOSPC) {
		rc = reclaim_locked(ram, size, &page->ram_off, &page->slot);
		if (rc == 0)
			rc = ram_alloc(ram, size, &page->ram_off);
		else if (rc == 1)
			rc = 0; /* a recycled slot */
	}
	if (rc == 0)
		fh->st.ncached++;
	return rc;
}

void page_make_dirty_locked(struct vm_page *page)
{
	vm_fileh *fh = page->fh;

	vm_lock_assert_held();
	vm_assert(page->state == VM_PAGE_LOADED || page->state == VM_PAGE_LOADED_FOR_WRITE);
	vm_list_del(&page->lru);
	page->state = VM_PAGE_DIRTY;
	page->loader = NULL;
	page->stored = false;
	vm_list_add_tail(&fh->dirty, &page->dirty);
	fh->ndirty++;
	page_check_locked(page);
}

void page_note_written_locked(struct vm_page *page)
{
	vm_lock_assert_held();
	page_check_locked(page);
	if (page->state == VM_PAGE_LOADED)
		page_make_dirty_locked(page);
	else if (page->state == VM_PAGE_DIRTY)
		page->stored = false;
}

/* A new LOADING page for blk with its RAM slot, or NULL with *rcp set:
 * -ENOMEM (no memory for the page), -ENOSPC (no RAM slot in the budget),
 * or the -errno of a reclaim victim that could not be unmapped. */
static struct vm_page *page_claim_locked(vm_fileh *fh, vm_blk_t blk, int *rcp)
{
	struct vm_page *page = page_new_locked(fh, blk);

	vm_lock_assert_held();
	*rcp = -ENOMEM;
	if (page == NULL)
		return NULL;
	*rcp = page_alloc_ram_locked(fh, page);
	if (*rcp < 0) {
		pagetab_del(&fh->pages, blk);
		free(page);
		return NULL;
	}
	page_check_locked(page);
	return page;
}

/* Fills the LOADING page (vm_lock given up meanwhile), then ends the
 * load: LOADED, or LOADED_FOR_WRITE for a write; on an error or an
 * invalidation meanwhile the page is freed (EMPTY).  Returns 0 or the
 * fill's -errno. */
static int page_fill_locked(vm_fileh *fh, vm_vma *vma, struct vm_page *page, int write)
{
	int rc;

	vm_lock_release();
	vm_backend_enter();
	if (fh->engine->fill_page)
		rc = fh->engine->fill_page(fh, page);
	else
		rc = fill_page(fh, vma, page, ram_addr(fh->ram, page->ram_off));
	vm_backend_leave();
	vm_lock_acquire();

	fh->st.loads++;
	vm_assert(page->state == VM_PAGE_LOADING || page->state == VM_PAGE_LOADING_INVALIDATED);
	if (rc < 0 || page->state == VM_PAGE_LOADING_INVALIDATED) {
		if (rc < 0)
			fh->st.load_errors++;
		page_free_locked(page);
		vm_lock_wake_io();
		return rc;
	}
	if (write) {
		/* The caller turns it DIRTY before it gives vm_lock up. */
		page->state = VM_PAGE_LOADED_FOR_WRITE;
	} else {
		page->state = VM_PAGE_LOADED;
		page->loader = NULL;
		vm_list_add_tail(&fh->ram->lru, &page->lru);
	}
	page_check_locked(page);
	vm_lock_wake_io();
	return 0;
}

int page_load_locked(vm_fileh *fh, vm_vma *vma, vm_blk_t blk, int write)
{
	struct vm_page *page;
	int rc;

	vm_lock_assert_held();
	page = page_claim_locked(fh, blk, &rc);
	if (page == NULL) {
		if (rc != -ENOSPC)
			return rc; /* no memory, or a reclaim that failed: said why */
		if (fh->blksize > fh->ram->budget)
			vm_log("no RAM for block %llu: a %zu-byte block does not fit the %zu-byte budget",
			       (unsigned long long)blk, fh->blksize, fh->ram->budget);
		else
			vm_log("no RAM for block %llu: the %zu-byte budget is full of dirty or busy pages",
			       (unsigned long long)blk, fh->ram->budget);
		return -ENOMEM;
	}
	return page_fill_locked(fh, vma, page, write);
}

int page_load_run_locked(vm_fileh *fh, vm_blk_t blk, size_t n)
{
	struct vm_page **run;
	size_t claimed = 0;
	bool starved = false;
	int rc = 0, crc;

	vm_lock_assert_held();
	run = calloc(n, sizeof(*run));
	if (run == NULL)
		return -ENOMEM;
	/* Every block of the run at once, before the first load: a fault
	 * on any of them waits for this load instead of starting its own.
	 * The run's pages are LOADING, off the LRU: reclaim cannot take one
	 * to make room for another. */
	for (size_t k = 0; k < n; k++) {
		if (pagetab_get(&fh->pages, blk + k) != NULL)
			continue; /* cached, or loaded by someone else */
		run[k] = page_claim_locked(fh, blk + k, &crc);
		if (run[k] == NULL) {
			starved = true; /* the budget is full: the rest stays EMPTY */
			break;
		}
		claimed++;
	}
	if (starved && claimed == 0)
		rc = -ENOMEM;
	/* In order; after a failure the rest is given up (EMPTY). */
	for (size_t k = 0; k < n; k++) {
		if (run[k] == NULL)
			continue;
		if (rc == 0) {
			rc = page_fill_locked(fh, NULL, run[k], 0);
			continue;
		}
		page_free_locked(run[k]);
		vm_lock_wake_io();
	}
	free(run);
	return rc;
}

/* ---- a streamed run (vm_run) -------------------------------------------------- */

/* A run of blocks whose bytes come as one stream (a backend's one request
 * for consecutive blocks): each block is taken (LOADING) when the stream
 * reaches it, unless it is cached, being loaded, or the budget is full;
 * its bytes go straight into its slot (fill.c: fill_slot_*), and every
 * block taken is LOADED (or EMPTY again) when the run ends. */
struct vm_run {
	vm_fileh *fh;
	vm_blk_t blk;
	size_t n;
	size_t next;             /* blocks [0, next) were reached */
	bool full;               /* no RAM was left: no more blocks are taken */
	int err;                 /* the first failure to write a block */
	struct vm_page **page;   /* [n]: the block's page, when this run loads it */
	struct fill *slot;       /* [n]: where its bytes go */
	void (*on_cached)(void *arg, size_t blocks, uint64_t bytes);
	void *on_cached_arg;
};

void vm_run_on_cached(vm_run *run, void (*fn)(void *arg, size_t blocks, uint64_t bytes), void *arg)
{
	if (run == NULL)
		return;
	run->on_cached = fn;
	run->on_cached_arg = arg;
}

int vm_run_begin(vm_fileh *fh, vm_blk_t blk, size_t n, vm_run **runp)
{
	vm_run *run;

	*runp = NULL;
	if (fh->overlay || n == 0)
		return 0;
	if (blk + n < blk)
		return -EINVAL;
	run = calloc(1, sizeof(*run));
	if (run == NULL)
		return -ENOMEM;
	run->page = calloc(n, sizeof(*run->page));
	run->slot = calloc(n, sizeof(*run->slot));
	if (run->page == NULL || run->slot == NULL) {
		free(run->page);
		free(run->slot);
		free(run);
		return -ENOMEM;
	}
	run->fh = fh;
	run->blk = blk;
	run->n = n;
	*runp = run;
	return 0;
}

/* Takes the blocks [run->next, last] that are EMPTY, within the budget. */
static void run_reach(vm_run *run, size_t last)
{
	vm_fileh *fh = run->fh;
	size_t from = run->next;

	vm_lock_acquire();
	for (size_t k = from; k <= last; k++) {
		int rc;
		if (run->full || pagetab_get(&fh->pages, run->blk + k) != NULL)
			continue; /* cached, or loaded by someone else */
		run->page[k] = page_claim_locked(fh, run->blk + k, &rc);
		if (run->page[k] == NULL)
			run->full = true; /* the rest stays EMPTY: a fault loads it */
	}
	run->next = last + 1;
	vm_lock_release();
	for (size_t k = from; k <= last; k++)
		if (run->page[k] != NULL && fill_slot_open(fh, run->page[k], &run->slot[k]) < 0 &&
		    run->err == 0)
			run->err = -EIO;
}

int vm_run_take(vm_run *run)
{
	int taken = 0;

	if (run == NULL)
		return 0;
	if (run->next < run->n)
		run_reach(run, run->n - 1);
	for (size_t k = 0; k < run->n; k++)
		taken += run->page[k] != NULL;
	return run->err < 0 ? run->err : taken;
}

int vm_run_write(vm_run *run, uint64_t off, const void *data, size_t len)
{
	unsigned shift;
	size_t bs;

	if (run == NULL || len == 0)
		return 0;
	shift = run->fh->blkshift;
	bs = run->fh->blksize;
	if (off >= (uint64_t)run->n << shift || len > ((uint64_t)run->n << shift) - off)
		return -EINVAL;
	size_t last = (size_t)((off + len - 1) >> shift);
	if (last >= run->next)
		run_reach(run, last);
	while (len > 0) {
		size_t k = (size_t)(off >> shift), rel = (size_t)(off & (bs - 1));
		size_t take = bs - rel < len ? bs - rel : len;
		if (run->page[k] != NULL && run->err == 0) {
			/* The handle's own memfd (uffd engine) holds blocks in
			 * order: the bytes of consecutive blocks taken go in
			 * one pwrite (a stream's pieces are up to 64 KiB, its
			 * blocks 16 KiB by default). */
			size_t m = 1;
			while (run->fh->memfd >= 0 && take < len && run->page[k + m] != NULL) {
				take += len - take < bs ? len - take : bs;
				m++;
			}
			int rc = m > 1 ? fill_slots_pwrite(&run->slot[k], m, rel, data, take)
				       : fill_slot_write(&run->slot[k], rel, data, take);
			if (rc < 0)
				run->err = rc;
		}
		off += take;
		data = (const char *)data + take;
		len -= take;
	}
	return run->err;
}

int vm_run_end(vm_run *run, int64_t len, uint64_t *bytesp)
{
	vm_fileh *fh;
	uint64_t bytes = 0;
	int rc, loaded = 0;
	size_t *blen;

	if (bytesp != NULL)
		*bytesp = 0;
	if (run == NULL)
		return 0;
	fh = run->fh;
	rc = run->err;
	blen = calloc(run->next ? run->next : 1, sizeof(*blen));
	if (blen == NULL && rc == 0)
		rc = -ENOMEM;
	/* What the stream did not bring reads as zeros (past its end). */
	for (size_t k = 0; k < run->next && len >= 0 && rc == 0; k++) {
		if (run->page[k] == NULL)
			continue;
		uint64_t start = (uint64_t)k << fh->blkshift, end = (uint64_t)len;
		blen[k] = end <= start ? 0 : end - start < fh->blksize ? (size_t)(end - start) : fh->blksize;
		rc = fill_slot_close(fh, run->page[k], &run->slot[k], blen[k]);
	}
	vm_lock_acquire();
	for (size_t k = 0; k < run->next; k++) {
		struct vm_page *page = run->page[k];
		if (page == NULL)
			continue;
		fh->st.loads++;
		vm_assert(page->state == VM_PAGE_LOADING || page->state == VM_PAGE_LOADING_INVALIDATED);
		if (len < 0 || rc < 0 || page->state == VM_PAGE_LOADING_INVALIDATED) {
			if (len >= 0 && rc < 0)
				fh->st.load_errors++;
			page_free_locked(page);
			continue;
		}
		page->state = VM_PAGE_LOADED;
		page->loader = NULL;
		vm_list_add_tail(&fh->ram->lru, &page->lru);
		page_check_locked(page);
		loaded++;
		bytes += blen[k];
	}
	if (loaded > 0 && run->on_cached != NULL)
		run->on_cached(run->on_cached_arg, (size_t)loaded, bytes);
	vm_lock_wake_io();
	vm_lock_release();
	free(blen);
	free(run->page);
	free(run->slot);
	free(run);
	if (bytesp != NULL)
		*bytesp = bytes;
	return rc < 0 ? rc : loaded;
}
