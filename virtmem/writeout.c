/* writeout.c — dirty pages leave: stored through storeblk and marked
 * stored (DIRTY -> LOADED, or EMPTY in overlay mode), or discarded (DIRTY ->
 * EMPTY).
 *
 * Owns: fh->writeout_active and the pages' storing/stored flags.
 * Locking: under vm_lock, given up around each storeblk.  While a page is
 * being stored it is write-protected (->storing); a write fault on it sleeps
 * in vm_lock_wait_io until the store ends, and keeps the page dirty:
 *
 *   writeout thread                    writer thread
 *   ->storing = true, mprotect(READ)
 *   release vm_lock, storeblk(...)     write faults: DIRTY and ->storing:
 *                                      vm_lock_wait_io
 *   take vm_lock, ->stored = true,
 *   vm_lock_wake_io                    wakes: DIRTY and ->stored: clears
 *                                      ->stored, mprotect(READ|WRITE)
 *   MARKSTORED: not ->stored, so the page stays DIRTY
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "internal.h"

static int cmp_page_blk(const void *a, const void *b)
{
	const struct vm_page *pa = *(struct vm_page *const *)a;
	const struct vm_page *pb = *(struct vm_page *const *)b;
	return pa->blk < pb->blk ? -1 : pa->blk > pb->blk;
}

/* The dirty pages of fh in ascending block order (caller frees). */
static struct vm_page **dirty_sorted(vm_fileh *fh, size_t *np)
{
	struct vm_page **v = malloc((fh->ndirty ? fh->ndirty : 1) * sizeof(*v));
	struct vm_list *pos, *tmp;
	size_t n = 0;

	if (v == NULL)
		return NULL;
	vm_list_for_each_safe(pos, tmp, &fh->dirty)
		v[n++] = vm_container_of(pos, struct vm_page, dirty);
	qsort(v, n, sizeof(*v), cmp_page_blk);
	*np = n;
	return v;
}

/* Stores the dirty pages in ascending order.  vm_lock is released around
 * each storeblk; the page is write-protected meanwhile (->storing).  Pages
 * cannot go away meanwhile: dirty pages are freed only by discard (refused
 * during writeout), MARKSTORED (this thread) or close (not concurrent).
 * On an error nothing this call stored stays marked stored: a later
 * MARKSTORED alone must not clean pages whose store the caller saw fail. */
static int writeout_store_locked(vm_fileh *fh)
{
	size_t n = 0, i;
	struct vm_page **v = dirty_sorted(fh, &n);
	int rc = 0;

	vm_lock_assert_held();
	if (v == NULL)
		return -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		struct vm_page *page = v[i];
		page->storing = true;
		page->stored = false;
		rc = page_protect_all_locked(page, PROT_READ);
		if (rc < 0) {
			page->storing = false;
			page_protect_all_locked(page, PROT_READ | PROT_WRITE);
			break;
		}
		vm_lock_release();
		vm_backend_enter();
		void *buf = fh->engine->page_view ? fh->engine->page_view(fh, page)
						  : ram_addr(fh->ram, page->ram_off);
		if (buf == NULL) {
			rc = -errno;
		} else {
			rc = vm_norm_rc(fh->file->ops->storeblk(fh->file, page->blk, buf));
			if (fh->engine->page_view_end)
				fh->engine->page_view_end(fh, page, buf);
		}
		vm_backend_leave();
		vm_lock_acquire();
		page->storing = false;
		if (rc == 0) {
			page->stored = true;
			fh->st.stores++;
			/* Written during the store without a fault (an engine
			 * that finds writes later): not stored after all. */
			engine_sync_written_locked(fh, page);
		} else {
			vm_log("storeblk of block %llu failed: %s",
			       (unsigned long long)page->blk, vm_strerror(rc));
			page_protect_all_locked(page, PROT_READ | PROT_WRITE);
		}
		vm_lock_wake_io();
	}
	if (rc < 0) {
		/* v[0..i) holds every page this call stored.  Those still
		 * marked stored (not written since) become plain dirty pages
		 * again, mapped read-write as such pages are. */
		while (i-- > 0) {
			if (!v[i]->stored)
				continue;
			v[i]->stored = false;
			page_protect_all_locked(v[i], PROT_READ | PROT_WRITE);
		}
	}
	free(v);
	return rc;
}

/* Turns stored, unwritten dirty pages clean. */
static void writeout_markstored_locked(vm_fileh *fh)
{
	struct vm_list *pos, *tmp;

	vm_lock_assert_held();
	vm_list_for_each_safe(pos, tmp, &fh->dirty) {
		struct vm_page *page = vm_container_of(pos, struct vm_page, dirty);
		page_check_locked(page);
		if (!page->stored)
			continue;
		if (fh->overlay) {
			/* Not unmapped (its error logged): it stays, dirty
			 * and stored, for the next MARKSTORED. */
			(void)page_drop_locked(page);
			continue;
		}
		vm_list_del(&page->dirty);
		fh->ndirty--;
		page->stored = false;
		page->state = VM_PAGE_LOADED;
		vm_list_add_tail(&fh->ram->lru, &page->lru);
		page_check_locked(page);
		/* It is mapped read-only already (stored pages are). */
	}
}

int vm_fileh_dirty_writeout(vm_fileh *fh, int flags)
{
	int rc = 0;

	if (flags == 0 || (flags & ~(VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED)) != 0)
		return -EINVAL;
	vm_lock_acquire();
	if (fh->writeout_active) {
		vm_lock_release();
		return -EBUSY;
	}
	fh->writeout_active = true;
	engine_sync_written_locked(fh, NULL);
	if (flags & VM_WRITEOUT_STORE)
		rc = writeout_store_locked(fh);
	if (rc == 0 && flags & VM_WRITEOUT_MARKSTORED) {
		engine_sync_written_locked(fh, NULL);
		writeout_markstored_locked(fh);
	}
	fh->writeout_active = false;
	vm_lock_release();
	return rc;
}

int vm_fileh_dirty_discard(vm_fileh *fh)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_lock_acquire();
	if (fh->writeout_active) {
		vm_lock_release();
		return -EBUSY;
	}
	engine_sync_written_locked(fh, NULL);
	vm_list_for_each_safe(pos, tmp, &fh->dirty) {
		/* A page that cannot be unmapped stays dirty. */
		int r = page_drop_locked(vm_container_of(pos, struct vm_page, dirty));
		if (r < 0 && rc == 0)
			rc = r;
	}
	vm_lock_release();
	return rc;
}
