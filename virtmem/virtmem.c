/* virtmem.c — file handles, mappings, the page state machine, page faults,
 * writeout, discard, invalidation and reclaim; how a RAM slot is filled
 * (vm_loadblk_write/zero) and the pools' spare slots.
 *
 * Owns: vm_lock and vm_cond, the global index of mappings by address, every
 * vm_fileh, vm_vma and vm_page, and each pool's spare thread.
 *
 * Locking: one mutex, vm_lock, protects all of virtmem's state (pages, page
 * tables, mappings, the index, RAM pools).  It is held only for bookkeeping
 * and the mmap/mprotect calls that keep mappings in step with page states;
 * it is never held across a backend call (loadblk, storeblk) or an overlay
 * copy, so loads of different blocks run in parallel.  A thread that needs a
 * page another thread is loading or storing sleeps on vm_cond, which is
 * broadcast whenever a load or a store ends.  Backend calls made by virtmem
 * while holding the lock: only the overlay trio (mmap_setup_read,
 * remmap_blk_read, munmap), which must not call back into virtmem.
 * A pool's spare thread (spare_main) takes vm_lock for its bookkeeping and
 * waits on the pool's spare_cv with it; it populates a slot without it.
 * The fill context of vm_loadblk_write is thread-local: no lock.
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
 *   EMPTY -> LOADING -> LOADED              read fault or prefetch, loadblk mode
 *   EMPTY -> LOADING -> LOADED_FOR_WRITE -> DIRTY     write fault
 *   LOADING -> LOADING_INVALIDATED -> EMPTY           invalidate during load
 *   LOADING -> EMPTY                        load failed (access gets SIGBUS)
 *   LOADED -> DIRTY                         write fault
 *   LOADED -> EMPTY                         reclaim, invalidate
 *   DIRTY -> LOADED (loadblk) / EMPTY (overlay)   writeout MARKSTORED
 *   DIRTY -> EMPTY                          discard
 *
 * Writes during writeout: a page being stored is mapped read-only; a write
 * fault on it sleeps until storeblk returns.  A stored page stays read-only
 * with ->stored set; a write clears ->stored, so MARKSTORED keeps it dirty.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "internal.h"

static pthread_mutex_t vm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vm_cond = PTHREAD_COND_INITIALIZER;

/* What this thread is doing inside virtmem.  A fault on virtmem memory
 * while it holds vm_lock, or from a backend call made by virtmem, would
 * deadlock, so such a fault is refused instead. */
static __thread int vm_lock_held __attribute__((tls_model("initial-exec")));
static __thread int vm_in_backend __attribute__((tls_model("initial-exec")));

/* The RAM slot this thread's loadblk is filling, for vm_loadblk_write and
 * vm_loadblk_zero: set by page_fill around loadblk when the backend has
 * VM_OPS_LOADBLK_WRITES, else buf == NULL. */
struct fill {
	char *buf;
	size_t len;
	int fd;
	off_t off;         /* of the slot in the memfd */
	size_t pagesize;
	bool fresh;        /* the slot read as zeros when the fill began */
	bool ptes;         /* the pool's view of the slot has page table entries */
	size_t hi;         /* bytes [0, hi) may have been written by this fill */
};
static __thread struct fill cur_fill __attribute__((tls_model("initial-exec")));

static void lock(void)
{
	pthread_mutex_lock(&vm_lock);
	vm_lock_held = 1;
}

static void unlock(void)
{
	vm_lock_held = 0;
	pthread_mutex_unlock(&vm_lock);
}

/* Sleeps until a load or store ends.  Page pointers are not valid after it:
 * look the page up again. */
static void wait_io(void)
{
	vm_lock_held = 0;
	pthread_cond_wait(&vm_cond, &vm_lock);
	vm_lock_held = 1;
}

static void wake_io(void)
{
	pthread_cond_broadcast(&vm_cond);
}

void vm_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	memcpy(buf, "virtmem: ", 9);
	va_start(ap, fmt);
	n = vsnprintf(buf + 9, sizeof(buf) - 10, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 9;
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	buf[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
	(void)w;
}

const char *vm_strerror(int err)
{
	return strerror(err < 0 ? -err : err);
}

/* Backend calls return 0 or -errno; anything else positive is an error too. */
static int norm_rc(int rc)
{
	return rc > 0 ? -EIO : rc;
}

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

/* ---- the index of mappings by address ---------------------------------- */

/* Sorted by addr_start; mappings never overlap.  Binary search gives the
 * O(log n) address -> mapping lookup the fault handler needs. */
static vm_vma **vma_index;
static size_t vma_index_n, vma_index_cap;

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

static vm_vma *index_lookup(uintptr_t addr)
{
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
vm_blk_t vm_vma_pgoffset(const vm_vma *vma) { return vma->pgoffset; }
vm_fileh *vm_vma_fileh(const vm_vma *vma) { return vma->fh; }

void *vm_vma_blk_addr(const vm_vma *vma, vm_blk_t blk)
{
	return (void *)(vma->addr_start + ((blk - vma->pgoffset) << vma->fh->blkshift));
}

static bool vma_page_mapped(const vm_vma *vma, vm_blk_t blk)
{
	size_t i = blk - vma->pgoffset;
	return vma->mapped[i / 64] >> (i % 64) & 1;
}

static void vma_set_mapped(vm_vma *vma, vm_blk_t blk, bool on)
{
	size_t i = blk - vma->pgoffset;
	if (on)
		vma->mapped[i / 64] |= 1ull << (i % 64);
	else
		vma->mapped[i / 64] &= ~(1ull << (i % 64));
}

/* Maps page's RAM at its place in vma (replacing what was there). */
static int vma_map_page(vm_vma *vma, struct vm_page *page, int prot)
{
	vm_fileh *fh = vma->fh;
	void *addr = vm_vma_blk_addr(vma, page->blk);

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

/* Puts back what vma shows for an EMPTY page: nothing (loadblk mode) or the
 * base layer (overlay mode). */
static int vma_unmap_page(vm_vma *vma, vm_blk_t blk)
{
	vm_fileh *fh = vma->fh;
	void *addr = vm_vma_blk_addr(vma, blk);
	int rc = 0;

	if (!vma_page_mapped(vma, blk))
		return 0;
	vma_set_mapped(vma, blk, false);
	if (fh->overlay) {
		rc = norm_rc(fh->file->ops->remmap_blk_read(fh->file, vma, blk));
		if (rc == 0)
			return 0;
		vm_log("remmap_blk_read of block %llu failed: %s; the block reads as an error until mapped again",
		       (unsigned long long)blk, vm_strerror(rc));
	}
	/* No base: leave a hole that faults (and is mapped again on fault). */
	if (mmap(addr, fh->blksize, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
		rc = -errno;
	return rc;
}

/* Applies prot to page in every mapping where it is mapped. */
static int page_protect_all(struct vm_page *page, int prot)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (vma_covers(vma, page->blk) && vma_page_mapped(vma, page->blk)) {
			int r = mprotect(vm_vma_blk_addr(vma, page->blk), page->fh->blksize, prot);
			if (r < 0 && rc == 0)
				rc = -errno;
		}
	}
	return rc;
}

/* Maps page with prot in every mapping that covers it. */
static int page_map_all(struct vm_page *page, int prot)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (vma_covers(vma, page->blk)) {
			int r = vma_map_page(vma, page, prot);
			if (r < 0 && rc == 0)
				rc = r;
		}
	}
	return rc;
}

static void page_unmap_all(struct vm_page *page)
{
	struct vm_list *pos, *tmp;

	vm_list_for_each_safe(pos, tmp, &page->fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (vma_covers(vma, page->blk))
			vma_unmap_page(vma, page->blk);
	}
}

/* Protection a DIRTY page must have in the mappings. */
static int dirty_prot(const struct vm_page *page)
{
	return page->storing || page->stored ? PROT_READ : PROT_READ | PROT_WRITE;
}

/* ---- page life ------------------------------------------------------------ */

static struct vm_page *page_new(vm_fileh *fh, vm_blk_t blk)
{
	struct vm_page *page = calloc(1, sizeof(*page));
	if (page == NULL)
		return NULL;
	page->fh = fh;
	page->blk = blk;
	page->state = VM_PAGE_LOADING;
	vm_list_init(&page->lru);
	vm_list_init(&page->dirty);
	if (pagetab_put(&fh->pages, page) < 0) {
		free(page);
		return NULL;
	}
	return page;
}

/* Frees page and its RAM; it must already be mapped nowhere. */
/* Forgets page (it must already be mapped nowhere) and returns its RAM slot
 * offset; the slot is still counted as used. */
static size_t page_forget(struct vm_page *page)
{
	vm_fileh *fh = page->fh;
	size_t off = page->ram_off;

	vm_list_del(&page->lru);
	if (!vm_list_empty(&page->dirty)) {
		vm_list_del(&page->dirty);
		fh->ndirty--;
	}
	pagetab_del(&fh->pages, page->blk);
	fh->st.ncached--;
	free(page);
	return off;
}

static void spare_wake_locked(vm_ram *ram);

/* Frees page and its RAM; it must already be mapped nowhere. */
static void page_free(struct vm_page *page)
{
	vm_ram *ram = page->fh->ram;
	size_t size = page->fh->blksize;
	ram_free(ram, page_forget(page), size);
	spare_wake_locked(ram);
}

/* Unmaps page from every mapping and frees it: the block becomes EMPTY. */
static void page_drop(struct vm_page *page)
{
	page_unmap_all(page);
	page_free(page);
}

/* Makes room for size bytes by dropping the least recently faulted clean
 * pages of any handle on ram.  When the oldest clean page has the size
 * wanted, its slot is handed over as it is (*offp, still counted as used):
 * its memory is overwritten by the next load instead of being given back
 * and zeroed again, which is what keeps a cache at its budget cheap.
 * Returns 1 with *offp set, 0 when size bytes are free, or -ENOSPC when
 * only dirty or busy pages are left. */
static int ram_reclaim_locked(vm_ram *ram, size_t size, size_t *offp, enum vm_slot *slotp)
{
	if (size > ram->budget)
		return -ENOSPC; /* reclaiming could never make room */
	while (ram->budget - ram->used - ram->spare_bytes < size) {
		if (vm_list_empty(&ram->lru))
			return -ENOSPC;
		struct vm_page *victim = vm_container_of(ram->lru.next, struct vm_page, lru);
		victim->fh->st.reclaimed++;
		if (victim->fh->blksize == size) {
			page_unmap_all(victim);
			*slotp = victim->slot;
			*offp = page_forget(victim);
			return 1;
		}
		page_drop(victim);
	}
	return 0;
}

/* Gives the last ready spare slot back to the pool. */
static void spare_drop_locked(vm_ram *ram)
{
	ram_put(ram, ram->spare[--ram->spare_n], ram->spare_size);
	ram->spare_bytes -= ram->spare_size;
}

/* Gives ready spare slots back until size bytes fit the budget (or none
 * is left).  Spares go before any cached block. */
static void spare_release_locked(vm_ram *ram, size_t size)
{
	while (ram->spare_n > 0 && ram->budget - ram->used - ram->spare_bytes < size)
		spare_drop_locked(ram);
}

static int page_alloc_ram(vm_fileh *fh, struct vm_page *page)
{
	vm_ram *ram = fh->ram;

	if (ram->spare_n > 0 && ram->spare_size == fh->blksize) {
		page->ram_off = ram->spare[--ram->spare_n];
		page->slot = VM_SLOT_ZEROED;
		ram->spare_bytes -= fh->blksize;
		__atomic_store_n(&ram->used, ram->used + fh->blksize, __ATOMIC_RELAXED);
		pthread_cond_signal(&ram->spare_cv); /* fill another */
		fh->st.spares_taken++;
		fh->st.ncached++;
		return 0;
	}
	int rc = ram_alloc(fh->ram, fh->blksize, &page->ram_off);
	if (rc == -ENOSPC && ram->spare_n > 0) {
		spare_release_locked(ram, fh->blksize);
		rc = ram_alloc(fh->ram, fh->blksize, &page->ram_off);
	}
	if (rc == -ENOSPC && ram->spare_filling && !ram->filling_taken &&
	    ram->filling_size == fh->blksize) {
		/* Take over the spare being filled rather than reclaim a
		 * block: it reads as zeros, partly populated (populating
		 * never overwrites what the load writes meanwhile). */
		page->ram_off = ram->filling_off;
		page->slot = VM_SLOT_FRESH;
		__atomic_store_n(&ram->filling_taken, true, __ATOMIC_RELAXED);
		ram->spare_bytes -= fh->blksize;
		__atomic_store_n(&ram->used, ram->used + fh->blksize, __ATOMIC_RELAXED);
		fh->st.spares_taken++;
		rc = 0;
	}
	if (rc == -ENOSPC) {
		rc = ram_reclaim_locked(fh->ram, fh->blksize, &page->ram_off, &page->slot);
		if (rc == 0)
			rc = ram_alloc(fh->ram, fh->blksize, &page->ram_off);
		else if (rc == 1)
			rc = 0; /* a recycled slot */
	}
	if (rc == 0)
		fh->st.ncached++;
	return rc;
}

static void page_make_dirty(struct vm_page *page)
{
	vm_fileh *fh = page->fh;

	vm_list_del(&page->lru);
	page->state = VM_PAGE_DIRTY;
	page->stored = false;
	vm_list_add_tail(&fh->dirty, &page->dirty);
	fh->ndirty++;
}

/* Fills the slot of a LOADING page: loadblk, or in overlay mode a copy from
 * vma's base layer.  Runs with vm_lock released.  process_vm_readv turns an
 * unreadable base (a mirror's EIO) into an error instead of a nested SIGBUS. */
static int page_fill(vm_fileh *fh, vm_vma *vma, struct vm_page *page, void *buf)
{
	if (fh->overlay) {
		struct iovec local = { buf, fh->blksize };
		struct iovec remote = { vm_vma_blk_addr(vma, page->blk), fh->blksize };
		ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		page->slot = VM_SLOT_MAPPED; /* (or partly: harmless) */
		if (n < 0)
			return -errno;
		return (size_t)n == fh->blksize ? 0 : -EIO;
	}
	/* How to write a slot (figures for 4 MiB on the 2-core VM, from
	 * tests/bench_client and a microbenchmark):
	 *  - memory and page table entries present (a recycled slot that was
	 *    written through the pointer, or a spare): non-temporal stores,
	 *    0.19 ms (memcpy 0.4 ms);
	 *  - fresh: pwrite, 1.3 ms: the kernel allocates the pages without
	 *    zeroing them and without a fault per 4 KiB page; populating
	 *    (MADV_POPULATE_WRITE) then memcpy costs 1.9 ms, memcpy alone
	 *    faulting each page 2.4 ms;
	 *  - memory present without page table entries (a recycled slot that
	 *    was filled with pwrite): MADV_POPULATE_WRITE, 0.6-0.9 ms, then
	 *    memcpy; pwrite would cost 1.0 ms every time the slot is reused,
	 *    memcpy faulting each page 1.8 ms.
	 * A backend that writes through the pointer gets a fresh slot
	 * populated in one go first too. */
	bool fresh = page->slot == VM_SLOT_FRESH || page->slot == VM_SLOT_ZEROED;
	bool ptes = page->slot == VM_SLOT_MAPPED || page->slot == VM_SLOT_ZEROED;
	bool writes = fh->file->ops->flags & VM_OPS_LOADBLK_WRITES;
	int rc;
	if (!ptes && !(fresh && writes)) {
		if (fh->blkshift > fh->ram->pageshift)
			(void)madvise(buf, fh->blksize, MADV_POPULATE_WRITE);
		ptes = true;
	}
	if (writes)
		cur_fill = (struct fill){ .buf = buf, .len = fh->blksize, .fd = fh->ram->memfd,
					  .off = (off_t)page->ram_off,
					  .pagesize = (size_t)1 << fh->ram->pageshift,
					  .fresh = fresh, .ptes = ptes };
	rc = norm_rc(fh->file->ops->loadblk(fh->file, page->blk, buf));
	cur_fill.buf = NULL;
	page->slot = ptes ? VM_SLOT_MAPPED : VM_SLOT_UNMAPPED;
	return rc;
}

/* The offset in the slot being filled of [buf + off, + len), or -1 when
 * that range is not inside it (or no slot is being filled). */
static ssize_t fill_rel(void *buf, size_t off, size_t len)
{
	struct fill *f = &cur_fill;
	uintptr_t d = (uintptr_t)buf + off, b = (uintptr_t)f->buf;
	if (f->buf == NULL || d < b || d - b > f->len || len > f->len - (d - b))
		return -1;
	return (ssize_t)(d - b);
}

static int fill_pwrite(const void *src, size_t len, off_t pos)
{
	while (len > 0) {
		ssize_t n = pwrite(cur_fill.fd, src, len, pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		src = (const char *)src + n;
		pos += n;
		len -= (size_t)n;
	}
	return 0;
}

/* memcpy into a slot with non-temporal stores: they skip reading each
 * destination cache line before writing it, which a block is too big to
 * gain from (measured: 0.19 ms against memcpy's 0.42 ms per 4 MiB written in
 * 16 KiB pieces, as curl hands a body over). */
static void copy_to_slot(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
	if (n >= 4096) {
		size_t head = (64 - ((uintptr_t)dst & 63)) & 63;
		memcpy(dst, src, head);
		char *d = (char *)dst + head;
		const char *s = (const char *)src + head;
		size_t body = (n - head) & ~(size_t)63;
		for (size_t i = 0; i < body; i += 64) {
			const __m128i *p = (const __m128i *)(s + i);
			__m128i a = _mm_loadu_si128(p), b = _mm_loadu_si128(p + 1);
			__m128i c = _mm_loadu_si128(p + 2), e = _mm_loadu_si128(p + 3);
			__m128i *q = (__m128i *)(d + i);
			_mm_stream_si128(q, a);
			_mm_stream_si128(q + 1, b);
			_mm_stream_si128(q + 2, c);
			_mm_stream_si128(q + 3, e);
		}
		_mm_sfence(); /* the stores are ordered before whatever follows */
		memcpy(d + body, s + body, n - head - body);
		return;
	}
#endif
	memcpy(dst, src, n);
}

int vm_loadblk_write(void *buf, size_t off, const void *src, size_t len)
{
	ssize_t rel = fill_rel(buf, off, len);
	struct fill *f = &cur_fill;

	if (rel < 0) {
		memcpy((char *)buf + off, src, len);
		return 0;
	}
	if ((size_t)rel + len > f->hi)
		f->hi = (size_t)rel + len;
	if (f->ptes) {
		copy_to_slot((char *)buf + off, src, len);
		return 0;
	}
	return fill_pwrite(src, len, f->off + rel);
}

/* Writes zeros to bytes [from, to) of the slot being filled. */
static int fill_pwrite_zeros(size_t from, size_t to)
{
	static const char zeros[4096];

	while (from < to) {
		size_t n = to - from < sizeof(zeros) ? to - from : sizeof(zeros);
		int rc = fill_pwrite(zeros, n, cur_fill.off + (off_t)from);
		if (rc < 0)
			return rc;
		from += n;
	}
	return 0;
}

int vm_loadblk_zero(void *buf, size_t off, size_t len)
{
	ssize_t rel = fill_rel(buf, off, len);
	struct fill *f = &cur_fill;

	if (rel < 0) {
		memset((char *)buf + off, 0, len);
		return 0;
	}
	if (f->fresh) {
		/* Fresh memory (never written, hole-punched when freed, or a
		 * zeroed spare) reads as zeros above what this fill wrote. */
		if ((size_t)rel >= f->hi)
			return 0;
		if ((size_t)rel + len > f->hi)
			len = f->hi - (size_t)rel;
	}
	if (f->ptes) {
		memset((char *)buf + off, 0, len);
		return 0;
	}
	/* Whole pages are punched out (they read as zeros and cost no
	 * memory); the partial pages at either end get zeros written. */
	size_t start = (size_t)rel, end = start + len, pg = f->pagesize;
	size_t a = (start + pg - 1) & ~(pg - 1), b = end & ~(pg - 1);
	if (a >= b)
		a = b = end;
	if (b > a && fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       f->off + (off_t)a, (off_t)(b - a)) < 0)
		return -errno;
	int rc = fill_pwrite_zeros(start, a);
	return rc < 0 ? rc : fill_pwrite_zeros(b, end);
}

/* Loads block blk for an access through vma (NULL for a prefetch; only the
 * overlay copy needs a mapping).  Returns with vm_lock held, 0
 * when the caller should look at the page again, or -errno. */
static int page_load_locked(vm_fileh *fh, vm_vma *vma, vm_blk_t blk, int write)
{
	struct vm_page *page = page_new(fh, blk);
	int rc;

	if (page == NULL)
		return -ENOMEM;
	rc = page_alloc_ram(fh, page);
	if (rc < 0) {
		pagetab_del(&fh->pages, blk);
		free(page);
		if (fh->blksize > fh->ram->budget)
			vm_log("no RAM for block %llu: a %zu-byte block does not fit the %zu-byte budget",
			       (unsigned long long)blk, fh->blksize, fh->ram->budget);
		else
			vm_log("no RAM for block %llu: the %zu-byte budget is full of dirty or busy pages",
			       (unsigned long long)blk, fh->ram->budget);
		return -ENOMEM;
	}

	unlock();
	vm_in_backend++;
	rc = page_fill(fh, vma, page, ram_addr(fh->ram, page->ram_off));
	vm_in_backend--;
	lock();

	fh->st.loads++;
	if (rc < 0 || page->state == VM_PAGE_LOADING_INVALIDATED) {
		if (rc < 0)
			fh->st.load_errors++;
		page_free(page);
		wake_io();
		return rc;
	}
	if (write) {
		page->state = VM_PAGE_LOADED_FOR_WRITE;
	} else {
		page->state = VM_PAGE_LOADED;
		vm_list_add_tail(&fh->ram->lru, &page->lru);
	}
	wake_io();
	return 0;
}

/* One step of fault handling on block blk of vma.  Returns 1 when the caller
 * must look again (the lock was released), 0 when the access can be retried,
 * or -errno. */
static int fault_step_locked(vm_vma *vma, vm_blk_t blk, int write)
{
	vm_fileh *fh = vma->fh;
	struct vm_page *page = pagetab_get(&fh->pages, blk);
	enum vm_page_state state = page ? page->state : VM_PAGE_EMPTY;
	int rc;

	switch (state) {
	case VM_PAGE_EMPTY:
		if (fh->overlay && !write) {
			/* The base serves reads; a read fault means the base is
			 * missing here (a failed remmap): try to map it again. */
			vma_set_mapped(vma, blk, true);
			return vma_unmap_page(vma, blk) < 0 ? -EIO : 0;
		}
		rc = page_load_locked(fh, vma, blk, write);
		return rc < 0 ? rc : 1;

	case VM_PAGE_LOADING:
	case VM_PAGE_LOADING_INVALIDATED:
		wait_io();
		return 1;

	case VM_PAGE_LOADED:
		if (!write) {
			vm_list_del(&page->lru); /* most recently faulted last */
			vm_list_add_tail(&fh->ram->lru, &page->lru);
			return vma_map_page(vma, page, PROT_READ);
		}
		/* A write makes it dirty: */
		__attribute__((fallthrough));
	case VM_PAGE_LOADED_FOR_WRITE:
		page_make_dirty(page);
		return page_map_all(page, PROT_READ | PROT_WRITE);

	case VM_PAGE_DIRTY:
		if (write && page->storing) {
			wait_io();
			return 1;
		}
		if (write && page->stored) {
			page->stored = false;
			return page_protect_all(page, PROT_READ | PROT_WRITE);
		}
		/* Spurious or racing fault: make sure this mapping is right. */
		return vma_map_page(vma, page, write ? PROT_READ | PROT_WRITE : dirty_prot(page));
	}
	return -EINVAL;
}

static int fault_locked(vm_vma *vma, uintptr_t addr, int write, vm_blk_t *blkp)
{
	vm_blk_t blk = vma->pgoffset + ((addr - vma->addr_start) >> vma->fh->blkshift);
	int rc;

	*blkp = blk;
	vma->fh->st.faults++;
	if (write < 0)
		/* The CPU did not say: a fault where something readable is
		 * mapped must be a write. */
		write = vma->fh->overlay || vma_page_mapped(vma, blk);
	if (vma->fh->file->ops->on_fault && !vma->fh->overlay) {
		/* The vma stays valid: unmapping it during a fault on it is
		 * the caller's error. */
		unlock();
		vm_in_backend++;
		vma->fh->file->ops->on_fault(vma->fh->file, blk, write);
		vm_in_backend--;
		lock();
	}
	if (write && vma->fh->readonly)
		return -EROFS;
	do
		rc = fault_step_locked(vma, blk, write);
	while (rc == 1);
	return rc;
}

int vm_fault_at(uintptr_t addr, int write, vm_blk_t *blkp)
{
	vm_vma *vma;
	int rc;

	if (vm_lock_held) {
		/* A bug in virtmem itself: crash as any bad access would. */
		vm_log("fault at %p with the virtmem lock held", (void *)addr);
		return VM_FAULT_NOT_OURS;
	}
	if (vm_in_backend) {
		/* A backend called by virtmem touches virtmem memory. */
		lock();
		vma = index_lookup(addr);
		unlock();
		if (vma == NULL)
			return VM_FAULT_NOT_OURS;
		vm_log("fault at %p from inside virtmem or a backend call: refused", (void *)addr);
		*blkp = vma->pgoffset + ((addr - vma->addr_start) >> vma->fh->blkshift);
		return -EDEADLK;
	}
	lock();
	vma = index_lookup(addr);
	rc = vma ? fault_locked(vma, addr, write, blkp) : VM_FAULT_NOT_OURS;
	unlock();
	return rc;
}

/* ---- spare slots ---------------------------------------------------------------- */

/* The pool's spare thread: while fewer than spare_want spares are ready,
 * none is being filled, and the budget has room for a new one plus two more
 * blocks, takes a slot and populates it without vm_lock.  It runs at normal
 * priority: populating holds the process's mmap lock, which every fault's
 * mmap needs, so a thread starved of CPU while holding it (SCHED_IDLE was
 * measured stalling mmap for 0.7 s) would stall the faults it is meant to
 * speed up.  The work is what the loads would do anyway, done earlier; it
 * is done in 128 KiB steps so that no step holds the lock long.
 * VIRTMEM_TEST_SPARE_PAUSE_US (tests only) pauses between steps. */
#define SPARE_STEP ((size_t)128 << 10)

static void *spare_main(void *arg)
{
	vm_ram *ram = arg;
	unsigned pause_us = ram->spare_pause_us;

	lock();
	while (!ram->spare_stop) {
		size_t size = ram->spare_size, off;
		if (size == 0 || ram->spare_n >= ram->spare_want ||
		    ram->budget - ram->used - ram->spare_bytes < 3 * size ||
		    ram_take(ram, size, &off) < 0) {
			pthread_cond_wait(&ram->spare_cv, &vm_lock);
			continue;
		}
		ram->spare_filling = true;
		ram->filling_off = off;
		ram->filling_size = size;
		__atomic_store_n(&ram->filling_taken, false, __ATOMIC_RELAXED);
		ram->spare_bytes += size;
		unlock();
		for (size_t o = 0; o < size; o += SPARE_STEP) {
			/* Stop when closing, or when a load took the slot
			 * over (it may be freed and reused meanwhile). */
			if (__atomic_load_n(&ram->spare_stop, __ATOMIC_RELAXED) ||
			    __atomic_load_n(&ram->filling_taken, __ATOMIC_RELAXED))
				break;
			(void)madvise(ram->base + off + o, size - o < SPARE_STEP ? size - o : SPARE_STEP,
				      MADV_POPULATE_WRITE);
			if (pause_us)
				usleep(pause_us);
		}
		lock();
		ram->spare_filling = false;
		if (ram->filling_taken)
			continue; /* a load has it, and accounted for it */
		if (ram->spare_stop || size != ram->spare_size || ram->spare_n >= ram->spare_want) {
			ram_put(ram, off, size);
			ram->spare_bytes -= size;
			continue;
		}
		ram->spare[ram->spare_n++] = off;
	}
	unlock();
	return NULL;
}

/* Wakes the spare thread when memory was given back (it may have room to
 * fill spares again).  vm_lock held. */
static void spare_wake_locked(vm_ram *ram)
{
	if (ram->spare_running && ram->spare_n < ram->spare_want)
		pthread_cond_signal(&ram->spare_cv);
}

int vm_ram_keep_spare(vm_ram *ram, size_t blksize, unsigned n)
{
	size_t pagesize = (size_t)1 << ram->pageshift;
	int rc = 0;

	if (n > 0 && (blksize < pagesize || blksize > VM_BLKSIZE_MAX || (blksize & (blksize - 1))))
		return -EINVAL;
	if (n > 1024)
		n = 1024;
	lock();
	if (ram->spare_want < n) {
		size_t *a = realloc(ram->spare, n * sizeof(*a));
		if (a == NULL) {
			unlock();
			return -ENOMEM;
		}
		ram->spare = a;
	}
	/* Spares of another size are no use any more. */
	while (ram->spare_n > (blksize == ram->spare_size ? n : 0))
		spare_drop_locked(ram);
	ram->spare_size = n ? blksize : 0;
	ram->spare_want = n;
	if (n > 0 && !ram->spare_running) {
		const char *pause = getenv("VIRTMEM_TEST_SPARE_PAUSE_US");
		ram->spare_pause_us = pause ? (unsigned)strtoul(pause, NULL, 10) : 0;
		sigset_t all, old;
		sigfillset(&all);
		/* The thread takes no signal meant for the application. */
		pthread_sigmask(SIG_BLOCK, &all, &old);
		if (!ram->spare_cv_inited) {
			pthread_cond_init(&ram->spare_cv, NULL);
			ram->spare_cv_inited = true;
		}
		rc = -pthread_create(&ram->spare_thread, NULL, spare_main, ram);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		ram->spare_running = rc == 0;
	}
	if (ram->spare_running)
		pthread_cond_signal(&ram->spare_cv);
	unlock();
	return rc;
}

size_t vm_ram_spare(const vm_ram *ram)
{
	lock();
	size_t n = ram->spare_n * ram->spare_size;
	unlock();
	return n;
}

size_t vm_ram_spare_filling(const vm_ram *ram)
{
	lock();
	size_t n = ram->spare_filling && !ram->filling_taken ? ram->filling_size : 0;
	unlock();
	return n;
}

void ram_stop_spares(vm_ram *ram)
{
	lock();
	bool running = ram->spare_running;
	__atomic_store_n(&ram->spare_stop, true, __ATOMIC_RELAXED);
	if (ram->spare_cv_inited)
		pthread_cond_broadcast(&ram->spare_cv);
	unlock();
	if (running)
		pthread_join(ram->spare_thread, NULL);
	lock();
	while (ram->spare_n > 0)
		spare_drop_locked(ram);
	ram->spare_running = false;
	unlock();
	if (ram->spare_cv_inited)
		pthread_cond_destroy(&ram->spare_cv);
	free(ram->spare);
	ram->spare = NULL;
}

int vm_fileh_prefetch(vm_fileh *fh, vm_blk_t blk)
{
	int rc = 0;

	if (fh->overlay)
		return 0;
	lock();
	if (pagetab_get(&fh->pages, blk) == NULL)
		rc = page_load_locked(fh, NULL, blk, 0);
	unlock();
	return rc;
}

int vm_vma_on_fault(vm_vma *vma, void *addr, int write)
{
	uintptr_t a = (uintptr_t)addr;
	vm_blk_t blk;
	int rc;

	if (a < vma->addr_start || a >= vma->addr_stop)
		return -EFAULT;
	lock();
	rc = fault_locked(vma, a, write, &blk);
	unlock();
	return rc;
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
	if ((flags & ~(VM_MMAP_OVERLAY | VM_DONT_MMAP_OVERLAY | VM_READONLY)) != 0 ||
	    (flags & VM_MMAP_OVERLAY && flags & VM_DONT_MMAP_OVERLAY) ||
	    (flags & VM_MMAP_OVERLAY && !trio) ||
	    file->ops->loadblk == NULL)
		return -EINVAL;
	rc = sigsegv_install();
	if (rc < 0)
		return rc;
	fh = calloc(1, sizeof(*fh));
	if (fh == NULL)
		return -ENOMEM;
	fh->file = file;
	fh->ram = ram;
	fh->blksize = bs;
	fh->blkshift = (unsigned)__builtin_ctzl(bs);
	fh->overlay = flags & VM_MMAP_OVERLAY || (trio && !(flags & VM_DONT_MMAP_OVERLAY));
	fh->readonly = flags & VM_READONLY;
	pagetab_init(&fh->pages);
	vm_list_init(&fh->vmas);
	vm_list_init(&fh->dirty);
	lock();
	ram->nfileh++;
	file->nopen++;
	unlock();
	*fhp = fh;
	return 0;
}

int vm_fileh_is_overlay(const vm_fileh *fh) { return fh->overlay; }

static void vma_unmap_locked(vm_vma *vma);

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

	if (all == NULL) {
		/* No memory for the list: drop one at a time. */
		while (fh->pages.used > 0) {
			struct vm_page *page = NULL;
			for (size_t i = 0; page == NULL; i++)
				page = fh->pages.slots[i].page;
			page_drop(page);
		}
		return;
	}
	pagetab_for_each(&fh->pages, drop_page_cb, &p);
	for (size_t i = 0; i < n; i++)
		page_drop(all[i]);
	free(all);
}

void vm_fileh_close(vm_fileh *fh)
{
	vm_bigfile *file;
	bool last;

	if (fh == NULL)
		return;
	file = fh->file;
	lock();
	while (!vm_list_empty(&fh->vmas))
		vma_unmap_locked(vm_container_of(fh->vmas.next, vm_vma, in_fileh));
	fileh_drop_all_locked(fh);
	fh->ram->nfileh--;
	last = --file->nopen == 0;
	unlock();
	pagetab_destroy(&fh->pages);
	free(fh);
	if (last && file->ops->release)
		file->ops->release(file);
}

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

	if (v == NULL)
		return -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		struct vm_page *page = v[i];
		page->storing = true;
		page->stored = false;
		rc = page_protect_all(page, PROT_READ);
		if (rc < 0) {
			page->storing = false;
			page_protect_all(page, PROT_READ | PROT_WRITE);
			break;
		}
		unlock();
		vm_in_backend++;
		rc = norm_rc(fh->file->ops->storeblk(fh->file, page->blk,
						     ram_addr(fh->ram, page->ram_off)));
		vm_in_backend--;
		lock();
		page->storing = false;
		if (rc == 0) {
			page->stored = true;
			fh->st.stores++;
		} else {
			vm_log("storeblk of block %llu failed: %s",
			       (unsigned long long)page->blk, vm_strerror(rc));
			page_protect_all(page, PROT_READ | PROT_WRITE);
		}
		wake_io();
	}
	if (rc < 0) {
		/* v[0..i) holds every page this call stored.  Those still
		 * marked stored (not written since) become plain dirty pages
		 * again, mapped read-write as such pages are. */
		while (i-- > 0) {
			if (!v[i]->stored)
				continue;
			v[i]->stored = false;
			page_protect_all(v[i], PROT_READ | PROT_WRITE);
		}
	}
	free(v);
	return rc;
}

/* Turns stored, unwritten dirty pages clean. */
static void writeout_markstored_locked(vm_fileh *fh)
{
	struct vm_list *pos, *tmp;

	vm_list_for_each_safe(pos, tmp, &fh->dirty) {
		struct vm_page *page = vm_container_of(pos, struct vm_page, dirty);
		if (!page->stored)
			continue;
		if (fh->overlay) {
			page_drop(page);
			continue;
		}
		vm_list_del(&page->dirty);
		fh->ndirty--;
		page->stored = false;
		page->state = VM_PAGE_LOADED;
		vm_list_add_tail(&fh->ram->lru, &page->lru);
		/* It is mapped read-only already (stored pages are). */
	}
}

int vm_fileh_dirty_writeout(vm_fileh *fh, int flags)
{
	int rc = 0;

	if (flags == 0 || (flags & ~(VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED)) != 0)
		return -EINVAL;
	lock();
	if (fh->writeout_active) {
		unlock();
		return -EBUSY;
	}
	fh->writeout_active = true;
	if (flags & VM_WRITEOUT_STORE)
		rc = writeout_store_locked(fh);
	if (rc == 0 && flags & VM_WRITEOUT_MARKSTORED)
		writeout_markstored_locked(fh);
	fh->writeout_active = false;
	unlock();
	return rc;
}

int vm_fileh_dirty_discard(vm_fileh *fh)
{
	struct vm_list *pos, *tmp;

	lock();
	if (fh->writeout_active) {
		unlock();
		return -EBUSY;
	}
	vm_list_for_each_safe(pos, tmp, &fh->dirty)
		page_drop(vm_container_of(pos, struct vm_page, dirty));
	unlock();
	return 0;
}

int vm_fileh_invalidate_page(vm_fileh *fh, vm_blk_t blk)
{
	struct vm_page *page;
	int rc = 0;

	if (fh->overlay)
		return -ENOTSUP;
	lock();
	page = pagetab_get(&fh->pages, blk);
	switch (page ? page->state : VM_PAGE_EMPTY) {
	case VM_PAGE_EMPTY:
	case VM_PAGE_LOADING_INVALIDATED:
		break;
	case VM_PAGE_LOADING:
		page->state = VM_PAGE_LOADING_INVALIDATED;
		break;
	case VM_PAGE_LOADED:
		page_drop(page);
		break;
	case VM_PAGE_LOADED_FOR_WRITE: /* never seen outside the loader */
	case VM_PAGE_DIRTY:
		rc = -EBUSY;
		break;
	}
	unlock();
	return rc;
}

enum vm_page_state vm_fileh_page_state(vm_fileh *fh, vm_blk_t blk)
{
	lock();
	struct vm_page *page = pagetab_get(&fh->pages, blk);
	enum vm_page_state state = page ? page->state : VM_PAGE_EMPTY;
	unlock();
	return state;
}

void vm_fileh_stats(vm_fileh *fh, struct vm_fileh_stats *st)
{
	lock();
	*st = fh->st;
	st->ndirty = fh->ndirty;
	unlock();
}

/* ---- mappings -------------------------------------------------------------- */

/* Maps every dirty page of fh that vma covers (a new mapping shows them). */
static int vma_map_dirty_locked(vm_vma *vma)
{
	struct vm_list *pos, *tmp;
	int rc = 0;

	vm_list_for_each_safe(pos, tmp, &vma->fh->dirty) {
		struct vm_page *page = vm_container_of(pos, struct vm_page, dirty);
		if (vma_covers(vma, page->blk) && rc == 0)
			rc = vma_map_page(vma, page, dirty_prot(page));
	}
	return rc;
}

int vm_fileh_mmap(vm_vma **vmap, vm_fileh *fh, vm_blk_t pgoffset, size_t pglen)
{
	vm_vma *vma;
	size_t len;
	void *addr;
	int rc;

	*vmap = NULL;
	if (pglen == 0 || pglen > (SIZE_MAX >> fh->blkshift) || pgoffset + pglen < pgoffset)
		return -EINVAL;
	rc = sigsegv_install();
	if (rc < 0)
		return rc;
	len = pglen << fh->blkshift;
	vma = calloc(1, sizeof(*vma));
	if (vma == NULL)
		return -ENOMEM;
	vma->mapped = calloc((pglen + 63) / 64, sizeof(uint64_t));
	if (vma->mapped == NULL) {
		free(vma);
		return -ENOMEM;
	}
	addr = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (addr == MAP_FAILED) {
		rc = -errno;
		goto fail_free;
	}
	vma->addr_start = (uintptr_t)addr;
	vma->addr_stop = vma->addr_start + len;
	vma->pgoffset = pgoffset;
	vma->pglen = pglen;
	vma->fh = fh;
	vm_list_init(&vma->in_fileh);

	lock();
	if (fh->overlay) {
		rc = norm_rc(fh->file->ops->mmap_setup_read(fh->file, vma, pgoffset, pglen));
		if (rc < 0) {
			vm_log("mmap_setup_read of blocks [%llu, +%zu) failed: %s",
			       (unsigned long long)pgoffset, pglen, vm_strerror(rc));
			unlock();
			munmap(addr, len);
			goto fail_free;
		}
	}
	rc = index_insert(vma);
	if (rc == 0) {
		vm_list_add_tail(&fh->vmas, &vma->in_fileh);
		rc = vma_map_dirty_locked(vma);
		if (rc == 0)
			*vmap = vma;
	}
	if (rc < 0)
		vma_unmap_locked(vma); /* also undoes the backend's part */
	unlock();
	return rc;

fail_free:
	free(vma->mapped);
	free(vma);
	return rc;
}

static void vma_unmap_locked(vm_vma *vma)
{
	vm_fileh *fh = vma->fh;

	index_remove(vma);
	vm_list_del(&vma->in_fileh);
	if (fh->overlay) {
		int rc = norm_rc(fh->file->ops->munmap(fh->file, vma));
		if (rc < 0)
			vm_log("backend munmap failed: %s", vm_strerror(rc));
	}
	munmap((void *)vma->addr_start, vma->addr_stop - vma->addr_start);
	free(vma->mapped);
	free(vma);
}

void vm_vma_unmap(vm_vma *vma)
{
	if (vma == NULL)
		return;
	lock();
	vma_unmap_locked(vma);
	unlock();
}
