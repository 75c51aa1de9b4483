/* fault.c — the fault path: from an access to a mapping, reported by a
 * fault engine or asked for by vm_vma_on_fault / vm_fileh_prefetch, to a
 * page loaded and mapped with the protection its state calls for.
 *
 * Owns: a mapping's fault-around window (vm_vma.around_next, .around);
 * otherwise it drives the page state machine (fileh.c) through page.c and
 * mapping.c.  A read fault that continues a run also maps the cached
 * blocks after its own (fault-around, below).
 * Locking: takes vm_lock; gives it up around on_fault and on_fault_around
 * and, in page_load_locked, around the fill.  A fault from a thread that
 * holds vm_lock or runs a backend call made by virtmem would deadlock: it
 * is refused (vm_fault_at).
 */
#include "config.h"

#include <errno.h>
#include <sys/mman.h>

#include "internal.h"

/* One step of fault handling on block blk of vma.  Returns 1 when the caller
 * must look again (the lock was released), 0 when the access can be retried,
 * or -errno. */
static int fault_step_locked(vm_vma *vma, vm_blk_t blk, int write)
{
	vm_fileh *fh = vma->fh;
	struct vm_page *page = pagetab_get(&fh->pages, blk);
	enum vm_page_state state = page ? page->state : VM_PAGE_EMPTY;
	int rc;

	vm_lock_assert_held();
	if (page != NULL)
		page_check_locked(page);
	switch (state) {
	case VM_PAGE_EMPTY:
		if (fh->overlay && !write) {
			/* The base serves reads; a read fault means the base is
			 * missing here (a failed remmap): try to map it again. */
			vma_set_mapped(vma, blk, true);
			return vma_unmap_page_locked(vma, blk) < 0 ? -EIO : 0;
		}
		rc = page_load_locked(fh, vma, blk, write);
		return rc < 0 ? rc : 1;

	case VM_PAGE_LOADING:
	case VM_PAGE_LOADING_INVALIDATED:
		vm_lock_wait_io();
		return 1;

	case VM_PAGE_LOADED:
		if (!write) {
			vm_list_del(&page->lru); /* most recently faulted last */
			vm_list_add_tail(&fh->ram->lru, &page->lru);
			return vma_map_page_locked(vma, page, PROT_READ);
		}
		/* A write makes it dirty: */
		__attribute__((fallthrough));
	case VM_PAGE_LOADED_FOR_WRITE:
		page_make_dirty_locked(page);
		return page_map_all_locked(page, PROT_READ | PROT_WRITE);

	case VM_PAGE_DIRTY:
		if (write && page->storing) {
			vm_lock_wait_io();
			return 1;
		}
		if (write && page->stored) {
			page->stored = false;
			return page_protect_all_locked(page, PROT_READ | PROT_WRITE);
		}
		/* Spurious or racing fault: make sure this mapping is right. */
		return vma_map_page_locked(vma, page, write ? PROT_READ | PROT_WRITE : page_dirty_prot(page));
	}
	return -EINVAL;
}

int fault_readonly_locked(vm_vma *vma, vm_blk_t blk)
{
	const char *name = vma->fh->file->name;

	vm_lock_assert_held();
	vm_log("write to block %llu of %s refused: it is mapped read-only",
	       (unsigned long long)blk, name != NULL ? name : "a file opened VM_READONLY");
	return -EROFS;
}

/* Fault-around.  A sequential reader of a mapping whose blocks were read
 * ahead (cached, not yet mapped there) would take one fault per block just
 * to map it: with 16 KiB blocks the fault's round trip, not the fetch, set
 * the speed.  So a read fault that continues a run (on the block after
 * the last one the previous fault of this mapping mapped) also maps the
 * blocks after its own that are LOADED and not yet mapped here, up to a
 * window that doubles with each such fault (1, 2, 4 ... AROUND_BYTES
 * worth); any other fault resets it, so a random miss maps its block
 * only.  Nothing is loaded or allocated for it: the RAM budget is not
 * touched, and a block DIRTY, LOADING or absent ends the run. */
#define AROUND_BYTES ((size_t)2 << 20)

/* Maps the cached blocks after blk (a read fault's, served) into vma, as
 * the window allows.  Returns how many were mapped. */
static size_t fault_around_locked(vm_vma *vma, vm_blk_t blk)
{
	vm_fileh *fh = vma->fh;
	size_t max = AROUND_BYTES >> fh->blkshift, n = 0, mapped = 0;

	vm_lock_assert_held();
	if (max < 2)
		max = 2;
	if (blk != vma->around_next)
		vma->around = 0;
	else if (vma->around < max)
		vma->around = vma->around ? vma->around * 2 : 1;
	while (n < vma->around && vma_covers(vma, blk + 1 + n)) {
		struct vm_page *page = pagetab_get(&fh->pages, blk + 1 + n);
		if (page == NULL || page->state != VM_PAGE_LOADED || vma_page_mapped(vma, blk + 1 + n))
			break;
		n++;
	}
	if (n > 0)
		(void)vma_map_run_locked(vma, blk + 1, n);
	/* What was mapped (all, unless the engine failed part way). */
	while (mapped < n && vma_page_mapped(vma, blk + 1 + mapped)) {
		struct vm_page *page = pagetab_get(&fh->pages, blk + 1 + mapped);
		vm_list_del(&page->lru); /* most recently faulted last */
		vm_list_add_tail(&fh->ram->lru, &page->lru);
		mapped++;
	}
	fh->st.mapped_around += mapped;
	vma->around_next = blk + 1 + mapped;
	return mapped;
}

/* Tells the backend what fault_around_locked mapped after blk. */
static void fault_around_tell_locked(vm_vma *vma, vm_blk_t blk, size_t n)
{
	vm_bigfile *file = vma->fh->file;

	if (n == 0 || file->ops->on_fault_around == NULL)
		return;
	vm_lock_release();
	vm_backend_enter();
	file->ops->on_fault_around(file, blk + 1, n);
	vm_backend_leave();
	vm_lock_acquire();
}

static int fault_locked(vm_vma *vma, uintptr_t addr, int write, vm_blk_t *blkp)
{
	vm_blk_t blk = vma_blk_of(vma, addr);
	int rc;

	vm_lock_assert_held();
	*blkp = blk;
	vma->fh->st.faults++;
	if (write < 0)
		/* The CPU did not say: a fault where something readable is
		 * mapped must be a write. */
		write = vma->fh->overlay || vma_page_mapped(vma, blk);
	if (write && vma->fh->readonly)
		return fault_readonly_locked(vma, blk);
	if (vma->fh->file->ops->on_fault && !vma->fh->overlay) {
		/* The vma stays valid: unmapping it during a fault on it is
		 * the caller's error. */
		vm_lock_release();
		vm_backend_enter();
		vma->fh->file->ops->on_fault(vma->fh->file, blk, write);
		vm_backend_leave();
		vm_lock_acquire();
	}
	do
		rc = fault_step_locked(vma, blk, write);
	while (rc == 1);
	if (rc == 0 && !write && !vma->fh->overlay)
		fault_around_tell_locked(vma, blk, fault_around_locked(vma, blk));
	return rc;
}

int vm_fault_at(uintptr_t addr, int write, bool signal, uint64_t seen, vm_blk_t *blkp)
{
	vm_vma *vma;
	int rc;

	if (vm_lock_held_here) {
		/* A bug in virtmem itself: crash as any bad access would. */
		vm_log("fault at %p with the virtmem lock held", (void *)addr);
		return VM_FAULT_NOT_OURS;
	}
	if (vm_in_backend) {
		/* A backend called by virtmem touches virtmem memory. */
		vm_lock_acquire();
		vma = vma_lookup_locked(addr);
		vm_lock_release();
		if (vma == NULL)
			return VM_FAULT_NOT_OURS;
		vm_log("fault at %p from inside virtmem or a backend call: refused", (void *)addr);
		*blkp = vma_blk_of(vma, addr);
		return -EDEADLK;
	}
	vm_lock_acquire();
	vma = vma_lookup_locked(addr);
	if (vma == NULL)
		rc = VM_FAULT_NOT_OURS;
	else if (signal && vma->fh->engine->signal_fault_locked)
		rc = vma->fh->engine->signal_fault_locked(vma, addr, write, blkp);
	else if (signal)
		rc = fault_locked(vma, addr, write, blkp);
	else if (vma->seq > seen)
		rc = VM_FAULT_NOT_OURS; /* maybe another mapping's stale message */
	else {
		/* Served by a handler thread: the faulting thread may have
		 * gone on (a duplicate fault), so its owner may unmap vma
		 * meanwhile; vma_unmap_locked waits for this to end. */
		vma->inflight++;
		rc = fault_locked(vma, addr, write, blkp);
		if (--vma->inflight == 0)
			vm_lock_wake_io();
	}
	vm_lock_release();
	return rc;
}

int vm_fileh_prefetch(vm_fileh *fh, vm_blk_t blk)
{
	int rc = 0;

	if (fh->overlay)
		return 0;
	vm_lock_acquire();
	if (pagetab_get(&fh->pages, blk) == NULL)
		rc = page_load_locked(fh, NULL, blk, 0);
	vm_lock_release();
	return rc;
}

int vm_fileh_prefetch_run(vm_fileh *fh, vm_blk_t blk, size_t n)
{
	int rc;

	if (fh->overlay || n == 0)
		return 0;
	if (blk + n < blk)
		return -EINVAL;
	vm_lock_acquire();
	rc = page_load_run_locked(fh, blk, n);
	vm_lock_release();
	return rc;
}

int vm_vma_on_fault(vm_vma *vma, void *addr, int write)
{
	uintptr_t a = (uintptr_t)addr;
	vm_blk_t blk;
	int rc;

	if (a < vma->addr_start || a >= vma->addr_stop)
		return -EFAULT;
	vm_lock_acquire();
	rc = fault_locked(vma, a, write, &blk);
	vm_lock_release();
	return rc;
}
