/* fileh.c — file handles (vm_fileh): open, close, stats, invalidation,
 * and the page state machine they hold.
 *
 * Owns: every vm_fileh and its page table; the state machine below.
 * Locking: vm_lock for all of a handle's state (see internal.h); a handle's
 * close runs the backend's release without it.
 *
 * Page state machine (struct vm_page.state; an absent page is EMPTY):
 *
 *   EMPTY       no RAM.  loadblk mode: unmapped (PROT_NONE) in every mapping.
 *               overlay mode: every mapping shows the base layer.
 *   LOADING     a RAM slot is being filled by one thread (loadblk, or the
 *               copy from the base in overlay mode) with vm_lock released.
 *               Mapped nowhere.  Other faults on it wait.
 *   LOADING_INVALIDATED
 *               like LOADING, but the block changed meanwhile
 *               (vm_fileh_invalidate_page): the loader throws the data away,
 *               the page goes back to EMPTY and the access is retried.
 *   LOADED      clean copy of the block (loadblk mode only).  Mapped
 *               read-only in the mappings that faulted on it; on ram->lru.
 *   LOADED_FOR_WRITE
 *               clean copy loaded to serve a write fault; the loader turns it
 *               DIRTY before it releases vm_lock, so only the loader ever
 *               sees it.  Mapped nowhere, on no list.
 *   DIRTY       written.  Mapped read-write in EVERY mapping that covers it
 *               (a new mapping maps it at once) except while ->storing or
 *               ->stored, when it is mapped read-only so that the next write
 *               faults.  On fh->dirty.  Never reclaimed.
 *
 * Transitions, and the function that performs each:
 *
 *   EMPTY -> LOADING                  page_new_locked (page.c), from
 *                                     page_load_locked: a fault or a prefetch,
 *                                     or page_load_run_locked: a run's blocks
 *                                     all at once (vm_fileh_prefetch_run)
 *   LOADING -> LOADED                 page_load_locked (page_fill_locked),
 *                                     read fault/prefetch
 *   LOADING -> LOADED_FOR_WRITE       page_load_locked, write fault
 *   LOADED_FOR_WRITE -> DIRTY         page_make_dirty_locked, from
 *                                     fault_step_locked (fault.c)
 *   LOADED -> DIRTY                   page_make_dirty_locked, write fault
 *   LOADING -> LOADING_INVALIDATED    vm_fileh_invalidate_page
 *   LOADING_INVALIDATED -> EMPTY      page_load_locked (page_free_locked);
 *                                     the access is retried
 *   LOADING -> EMPTY                  page_load_locked, load failed (the
 *                                     access gets SIGBUS); page_load_run_locked,
 *                                     a run's block after a failed one
 *   LOADED -> EMPTY                   reclaim_locked (page.c),
 *                                     vm_fileh_invalidate_page
 *   DIRTY -> LOADED (loadblk mode)    writeout_markstored_locked (writeout.c)
 *   DIRTY -> EMPTY (overlay mode)     writeout_markstored_locked
 *   DIRTY -> EMPTY                    vm_fileh_dirty_discard (writeout.c)
 *   any -> EMPTY                      vm_fileh_close (fileh_drop_all_locked)
 *
 * Writes during writeout: a page being stored is mapped read-only; a write
 * fault on it sleeps until storeblk returns (see writeout.c).  A stored page
 * stays read-only with ->stored set; a write clears ->stored, so MARKSTORED
 * keeps it dirty.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

const char *vm_page_state_name(enum vm_page_state state)
{
	switch (state) {
	case VM_PAGE_EMPTY: return "EMPTY";
	case VM_PAGE_LOADING: return "LOADING";
	case VM_PAGE_LOADING_INVALIDATED: return "LOADING_INVALIDATED";
	case VM_PAGE_LOADED: return "LOADED";
	case VM_PAGE_LOADED_FOR_WRITE: return "LOADED_FOR_WRITE";
	case VM_PAGE_DIRTY: return "DIRTY";
	}
	return "?";
}

/* ---- handles ---------------------------------------------------------------- */

static bool has_overlay_trio(const vm_bigfile_ops *ops)
{
	return ops->mmap_setup_read && ops->remmap_blk_read && ops->munmap;
}

int vm_fileh_open(vm_fileh **fhp, vm_bigfile *file, vm_ram *ram, int flags)
{
	size_t pagesize = (size_t)sysconf(_SC_PAGESIZE);
	size_t bs = file->blksize;
	bool trio = has_overlay_trio(file->ops);
	vm_fileh *fh;
	int rc;

	*fhp = NULL;
	if (bs < pagesize || bs > VM_BLKSIZE_MAX || (bs & (bs - 1)) != 0) {
		vm_log("block size %zu is not a power of two from %zu to %zu",
		       bs, pagesize, VM_BLKSIZE_MAX);
		return -EINVAL;
	}
	if ((flags & ~(VM_MMAP_OVERLAY | VM_DONT_MMAP_OVERLAY | VM_READONLY |
		       VM_ENGINE_SIGSEGV | VM_ENGINE_UFFD)) != 0 ||
	    (flags & VM_ENGINE_SIGSEGV && flags & VM_ENGINE_UFFD) ||
	    (flags & VM_MMAP_OVERLAY && flags & VM_DONT_MMAP_OVERLAY) ||
	    (flags & VM_MMAP_OVERLAY && !trio) ||
	    file->ops->loadblk == NULL)
		return -EINVAL;
	fh = calloc(1, sizeof(*fh));
	if (fh == NULL)
		return -ENOMEM;
	fh->file = file;
	fh->ram = ram;
	fh->blksize = bs;
	fh->blkshift = (unsigned)__builtin_ctzl(bs);
	fh->overlay = flags & VM_MMAP_OVERLAY || (trio && !(flags & VM_DONT_MMAP_OVERLAY));
	fh->readonly = flags & VM_READONLY;
	fh->memfd = -1;
	fh->engine = engine_pick(flags, fh->overlay, &rc);
	if (fh->engine == NULL || (rc = fh->engine->attach(fh)) < 0) {
		if (fh->engine && fh->engine->detach)
			fh->engine->detach(fh);
		free(fh);
		return rc;
	}
	fh->st.engine = vm_engine_name(fh->engine);
	pagetab_init(&fh->pages);
	vm_list_init(&fh->vmas);
	vm_list_init(&fh->dirty);
	vm_lock_acquire();
	ram->nfileh++;
	if (fh->engine->own_memory && ram->nfileh_own++ == 0)
		spare_release_all_locked(ram); /* of no use to it */
	file->nopen++;
	vm_lock_release();
	*fhp = fh;
	return 0;
}

int vm_fileh_is_overlay(const vm_fileh *fh) { return fh->overlay; }

static void drop_page_cb(struct vm_page *page, void *arg)
{
	struct vm_page ***sink = arg;
	*(*sink)++ = page;
}

/* Drops every page of fh (whatever its state). */
static void fileh_drop_all_locked(vm_fileh *fh)
{
	size_t n = fh->pages.used;
	struct vm_page **all = malloc((n ? n : 1) * sizeof(*all)), **p = all;

	vm_lock_assert_held();
	if (all == NULL) {
		/* No memory for the list: drop one at a time. */
		while (fh->pages.used > 0) {
			struct vm_page *page = NULL;
			for (size_t i = 0; page == NULL; i++)
				page = fh->pages.entries[i].page;
			(void)page_drop_locked(page); /* mapped nowhere: cannot fail */
		}
		return;
	}
	pagetab_for_each(&fh->pages, drop_page_cb, &p);
	for (size_t i = 0; i < n; i++)
		(void)page_drop_locked(all[i]); /* mapped nowhere: cannot fail */
	free(all);
}

void vm_fileh_close(vm_fileh *fh)
{
	vm_bigfile *file;
	bool last;

	if (fh == NULL)
		return;
	file = fh->file;
	vm_lock_acquire();
	while (!vm_list_empty(&fh->vmas))
		vma_unmap_locked(vm_container_of(fh->vmas.next, vm_vma, in_fileh));
	fh->closing = true;
	fileh_drop_all_locked(fh); /* no mapping left to unmap pages from */
	fh->ram->nfileh--;
	if (fh->engine->own_memory)
		fh->ram->nfileh_own--;
	last = --file->nopen == 0;
	spare_wake_locked(fh->ram);
	vm_lock_release();
	if (fh->engine->detach)
		fh->engine->detach(fh);
	pagetab_destroy(&fh->pages);
	free(fh);
	if (last && file->ops->release)
		file->ops->release(file);
}

int vm_fileh_invalidate_page(vm_fileh *fh, vm_blk_t blk)
{
	struct vm_page *page;
	int rc = 0;

	if (fh->overlay)
		return -ENOTSUP;
	vm_lock_acquire();
	page = pagetab_get(&fh->pages, blk);
	engine_fence_locked(fh, blk, true);
	if (page != NULL) {
		engine_sync_written_locked(fh, page);
		page_check_locked(page);
	}
	switch (page ? page->state : VM_PAGE_EMPTY) {
	case VM_PAGE_EMPTY:
	case VM_PAGE_LOADING_INVALIDATED:
		break;
	case VM_PAGE_LOADING:
		page->state = VM_PAGE_LOADING_INVALIDATED;
		break;
	case VM_PAGE_LOADED:
		rc = page_drop_locked(page); /* -errno: kept, still mapped */
		break;
	case VM_PAGE_LOADED_FOR_WRITE:
		vm_assert(!"LOADED_FOR_WRITE seen outside its loader");
		__attribute__((fallthrough));
	case VM_PAGE_DIRTY:
		rc = -EBUSY;
		break;
	}
	engine_fence_locked(fh, blk, false);
	vm_lock_release();
	return rc;
}

enum vm_page_state vm_fileh_page_state(vm_fileh *fh, vm_blk_t blk)
{
	vm_lock_acquire();
	struct vm_page *page = pagetab_get(&fh->pages, blk);
	if (page != NULL) {
		engine_sync_written_locked(fh, page);
		page_check_locked(page);
	}
	enum vm_page_state state = page ? page->state : VM_PAGE_EMPTY;
	vm_lock_release();
	return state;
}

void vm_fileh_stats(vm_fileh *fh, struct vm_fileh_stats *st)
{
	vm_lock_acquire();
	engine_sync_written_locked(fh, NULL);
	*st = fh->st;
	st->ndirty = fh->ndirty;
	vm_lock_release();
}
