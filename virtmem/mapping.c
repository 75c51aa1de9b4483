/* mapping.c — mappings (vm_vma): the process-wide index of mappings by
 * address, and a page mapped into, protected in and unmapped from the
 * mappings of its handle: through its engine's operations, or the pool way
 * (the SIGSEGV engine's): the page's RAM slot mapped with mmap/mprotect over
 * PROT_NONE address space, one kernel mapping per mapped block unless
 * neighbours merge.
 *
 * Owns: the index (vma_index), every vm_vma and its bitmap of mapped
 * blocks.
 * Locking: all under vm_lock (vm_vma_seq is also read without it, by
 * handler threads, atomically).  The overlay trio (mmap_setup_read,
 * remmap_blk_read, munmap) is called with vm_lock held: it must not call
 * back into virtmem.  The kernel's mmap lock nests inside vm_lock here.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* ---- the index of mappings by address ---------------------------------- */

/* Sorted by addr_start; mappings never overlap.  Binary search gives the
 * O(log n) address -> mapping lookup the fault handler needs. */
static vm_vma **vma_index;
static size_t vma_index_n, vma_index_cap;
uint64_t vm_vma_seq; /* written under vm_lock, read atomically */

/* Position of the first mapping with addr_start > addr. */
static size_t index_upper(uintptr_t addr)
{
	size_t lo = 0, hi = vma_index_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (vma_index[mid]->addr_start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

vm_vma *vma_lookup_locked(uintptr_t addr)
{
	vm_lock_assert_held();
	size_t i = index_upper(addr);
	if (i == 0)
		return NULL;
	vm_vma *vma = vma_index[i - 1];
	return addr < vma->addr_stop ? vma : NULL;
}

static int index_insert(vm_vma *vma)
{
	if (vma_index_n == vma_index_cap) {
		size_t ncap = vma_index_cap ? vma_index_cap * 2 : 16;
		vm_vma **n = realloc(vma_index, ncap * sizeof(*n));
		if (n == NULL)
			return -ENOMEM;
		vma_index = n;
		vma_index_cap = ncap;
	}
	size_t i = index_upper(vma->addr_start);
	memmove(&vma_index[i + 1], &vma_index[i], (vma_index_n - i) * sizeof(*vma_index));
	vma_index[i] = vma;
	vma_index_n++;
	return 0;
}

static void index_remove(vm_vma *vma)
{
	size_t i = index_upper(vma->addr_start);
	if (i == 0 || vma_index[i - 1] != vma)
		return;
	i--;
	memmove(&vma_index[i], &vma_index[i + 1], (vma_index_n - i - 1) * sizeof(*vma_index));
	vma_index_n--;
}

/* ---- mapping pages into mappings ---------------------------------------- */

void *vm_vma_addr(const vm_vma *vma) { return (void *)vma->addr_start; }
size_t vm_vma_len(const vm_vma *vma) { return vma->addr_stop - vma->addr_start; }
vm_blk_t vm_vma_first_blk(const vm_vma *vma) { return vma->blk_start; }
vm_fileh *vm_vma_fileh(const vm_vma *vma) { return vma->fh; }

void *vm_vma_blk_addr(const vm_vma *vma, vm_blk_t blk)
{
	return (void *)(vma->addr_start + ((blk - vma->blk_start) << vma->fh->blkshift));
}

bool vma_page_mapped(const vm_vma *vma, vm_blk_t blk)
{
	size_t i = blk - vma->blk_start;
	return vma->mapped[i / 64] >> (i % 64) & 1;
}

void vma_set_mapped(vm_vma *vma, vm_blk_t blk, bool on)
{
	size_t i = blk - vma->blk_start;
	if (on)
		vma->mapped[i / 64] |= 1ull << (i % 64);
	else
		vma->mapped[i / 64] &= ~(1ull << (i % 64));
}

/* Maps page's RAM at its place in vma (replacing what was there). */
int vma_map_page_locked(vm_vma *vma, struct vm_page *page, int prot)
{
	vm_fileh *fh = vma->fh;
	void *addr = vm_vma_blk_addr(vma, page->blk);

	vm_lock_assert_held();
	if (fh->engine->map_page_locked)
		return fh->engine->map_page_locked(vma, page, prot);
	/* Page table entries: a writable mapping gets them for the whole
	 * block at once, since a write fault maps one 4 KiB page at a time.
	 * A read-only one gets them as the pages are touched: the kernel's
	 * fault-around maps 64 KiB per read fault, which costs about what
	 * MAP_POPULATE does for a block read in full, and far less for a
	 * block read in a few places, whose pages need not be unmapped
	 * either when the block is reclaimed.  Measured on a 4 MiB block:
	 * 0.2-0.35 ms of MAP_POPULATE plus 0.15-0.25 ms of unmapping,
	 * against 0.25 ms of faults for reading all of it. */
	if (vma_page_mapped(vma, page->blk)) {
		if (mprotect(addr, fh->blksize, prot) < 0)
			return -errno;
		if (prot & PROT_WRITE)
			(void)madvise(addr, fh->blksize, MADV_POPULATE_WRITE);
		return 0;
	}
	if (mmap(addr, fh->blksize, prot, MAP_SHARED | MAP_FIXED | (prot & PROT_WRITE ? MAP_POPULATE : 0),
		 fh->ram->memfd, (off_t)page->ram_off) == MAP_FAILED) {
		int rc = -errno;
		vm_log("mapping block %llu failed: %s%s", (unsigned long long)page->blk,
		       vm_strerror(rc), rc == -ENOMEM ? " (too many mappings? see vm.max_map_count)" : "");
		return rc;
	}
	vma_set_mapped(vma, page->blk, true);
	return 0;
}

int vma_map_run_locked(vm_vma *vma, vm_blk_t blk, size_t n)
{
	vm_fileh *fh = vma->fh;
	int rc = 0;

	vm_lock_assert_held();
#ifdef BLKMAP_CHECKS
	for (size_t k = 0; k < n; k++) {
		struct vm_page *page = pagetab_get(&fh->pages, blk + k);
		vm_assert(page != NULL && page->state == VM_PAGE_LOADED);
		vm_assert(vma_covers(vma, blk + k) && !vma_page_mapped(vma, blk + k));
	}
#endif
	if (fh->engine->map_run_locked)
		return fh->engine->map_run_locked(vma, blk, n);
	for (size_t k = 0; k < n && rc == 0; k++)
		rc = vma_map_page_locked(vma, pagetab_get(&fh->pages, blk + k), PROT_READ);
	return rc;
}

/* Puts back what vma shows for an EMPTY page: nothing (loadblk mode) or the
 * base layer (overlay mode).  -errno when the base could not be mapped
 * (a hole is left: the block reads as an error until mapped again), or
 * when even the hole was refused (out of kernel mappings: replacing a block
 * in the middle of a kernel mapping splits it): the block then stays
 * mapped and marked so, and its page must be kept, or its RAM slot, reused,
 * would show another block there. */
int vma_unmap_page_locked(vm_vma *vma, vm_blk_t blk)
{
	vm_fileh *fh = vma->fh;
	void *addr = vm_vma_blk_addr(vma, blk);
	int rc = 0;

	vm_lock_assert_held();

	if (!vma_page_mapped(vma, blk))
		return 0;
	vma_set_mapped(vma, blk, false);
	if (fh->overlay) {
		rc = vm_norm_rc(fh->file->ops->remmap_blk_read(fh->file, vma, blk));
		if (rc == 0)
			return 0;
		vm_log("remmap_blk_read of block %llu failed: %s; the block reads as an error until mapped again",
		       (unsigned long long)blk, vm_strerror(rc));
	}
	/* No base: leave a hole that faults (and is mapped again on fault). */
	if (mmap(addr, fh->blksize, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) {
		rc = -errno;
		vma_set_mapped(vma, blk, true);
		vm_log("unmapping block %llu failed: %s; it stays cached%s", (unsigned long long)blk,
		       vm_strerror(rc), rc == -ENOMEM ? " (too many mappings? see vm.max_map_count)" : "");
	}
	return rc;
}

/* Applies prot to page in every mapping where it is mapped. */
int page_protect_all_locked(struct vm_page *page, int prot)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_lock_assert_held();

	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (!vma_covers(vma, page->blk))
			continue;
		if (page->fh->engine->protect_page_locked) {
			int r = page->fh->engine->protect_page_locked(vma, page, prot);
			if (r < 0 && rc == 0)
				rc = r;
		} else if (vma_page_mapped(vma, page->blk)) {
			int r = mprotect(vm_vma_blk_addr(vma, page->blk), page->fh->blksize, prot);
			if (r < 0 && rc == 0)
				rc = -errno;
		}
	}
	return rc;
}

/* Maps page with prot in every mapping that covers it. */
int page_map_all_locked(struct vm_page *page, int prot)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_lock_assert_held();

	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (vma_covers(vma, page->blk)) {
			int r = vma_map_page_locked(vma, page, prot);
			if (r < 0 && rc == 0)
				rc = r;
		}
	}
	return rc;
}

int page_unmap_all_locked(struct vm_page *page)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_lock_assert_held();
	if (page->fh->engine->unmap_page_all_locked) {
		page->fh->engine->unmap_page_all_locked(page);
		return 0;
	}
	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (!vma_covers(vma, page->blk))
			continue;
		/* Only a block left mapped is a failure here: a hole
		 * where the base could not be mapped is unmapped. */
		int r = vma_unmap_page_locked(vma, page->blk);
		if (r < 0 && vma_page_mapped(vma, page->blk) && rc == 0)
			rc = r;
	}
	return rc;
}

/* Protection a DIRTY page must have in the mappings. */
int page_dirty_prot(const struct vm_page *page)
{
	return page->storing || page->stored ? PROT_READ : PROT_READ | PROT_WRITE;
}

/* ---- mappings -------------------------------------------------------------- */

/* Maps every dirty page of fh that vma covers (a new mapping shows them). */
static int vma_map_dirty_locked(vm_vma *vma)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_lock_assert_held();

	vm_list_for_each_safe(pos, tmp, &vma->fh->dirty) {
		struct vm_page *page = vm_container_of(pos, struct vm_page, dirty);
		if (vma_covers(vma, page->blk) && rc == 0)
			rc = vma_map_page_locked(vma, page, page_dirty_prot(page));
	}
	return rc;
}

int vm_fileh_mmap(vm_vma **vmap, vm_fileh *fh, vm_blk_t blk, size_t blklen)
{
	vm_vma *vma;
	size_t len;
	void *addr;
	int rc;

	*vmap = NULL;
	if (blklen == 0 || blklen > (SIZE_MAX >> fh->blkshift) || blk + blklen < blk)
		return -EINVAL;
	rc = fh->engine->attach(fh);
	if (rc < 0)
		return rc;
	len = blklen << fh->blkshift;
	vma = calloc(1, sizeof(*vma));
	if (vma == NULL)
		return -ENOMEM;
	vma->blk_start = blk;
	vma->blklen = blklen;
	vma->fh = fh;
	vma->around_next = UINT64_MAX; /* no fault yet: the first is random */
	vm_list_init(&vma->in_fileh);
	if (fh->engine->vma_create) {
		rc = fh->engine->vma_create(vma, fh->readonly ? PROT_READ : PROT_READ | PROT_WRITE);
		if (rc < 0)
			goto fail_free;
	} else {
		addr = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (addr == MAP_FAILED) {
			rc = -errno;
			goto fail_free;
		}
		vma->addr_start = (uintptr_t)addr;
		vma->addr_stop = vma->addr_start + len;
	}
	addr = (void *)vma->addr_start;
	/* The bitmap comes after the address space: a mapping the address
	 * space cannot hold fails without allocating it first (2^36 blocks
	 * want 8 GiB of bitmap, which an allocator that touches what it
	 * hands out, as ThreadSanitizer's does, would fill). */
	vma->mapped = calloc((blklen + 63) / 64, sizeof(uint64_t));
	if (vma->mapped == NULL) {
		munmap(addr, len);
		rc = -ENOMEM;
		goto fail_free;
	}

	vm_lock_acquire();
	if (fh->overlay) {
		rc = vm_norm_rc(fh->file->ops->mmap_setup_read(fh->file, vma, blk, blklen));
		if (rc < 0) {
			vm_log("mmap_setup_read of blocks [%llu, +%zu) failed: %s",
			       (unsigned long long)blk, blklen, vm_strerror(rc));
			vm_lock_release();
			munmap(addr, len);
			goto fail_free;
		}
	}
	vma->seq = __atomic_add_fetch(&vm_vma_seq, 1, __ATOMIC_SEQ_CST);
	rc = index_insert(vma);
	if (rc == 0) {
		vm_list_add_tail(&fh->vmas, &vma->in_fileh);
		rc = vma_map_dirty_locked(vma);
		if (rc == 0)
			*vmap = vma;
	}
	if (rc < 0)
		vma_unmap_locked(vma); /* also undoes the backend's part */
	vm_lock_release();
	return rc;

fail_free:
	free(vma->mapped);
	free(vma);
	return rc;
}

void vma_unmap_locked(vm_vma *vma)
{
	vm_fileh *fh = vma->fh;

	vm_lock_assert_held();
	/* Out of the index first: no new fault finds it; then wait for the
	 * faults a handler thread serves on it. */
	index_remove(vma);
	while (vma->inflight > 0)
		vm_lock_wait_io();
	if (fh->engine->vma_destroy_locked)
		fh->engine->vma_destroy_locked(vma);
	vm_list_del(&vma->in_fileh);
	if (fh->overlay) {
		int rc = vm_norm_rc(fh->file->ops->munmap(fh->file, vma));
		if (rc < 0)
			vm_log("backend munmap failed: %s", vm_strerror(rc));
	}
	/* Its pages' unmapping (every os page's entry) is the release
	 * thread's: the range is free now. */
	vm_release_range((void *)vma->addr_start, vma->addr_stop - vma->addr_start,
			 vma->addr_stop - vma->addr_start);
	free(vma->mapped);
	free(vma);
}

void vm_vma_unmap(vm_vma *vma)
{
	if (vma == NULL)
		return;
	vm_lock_acquire();
	vma_unmap_locked(vma);
	vm_lock_release();
}
