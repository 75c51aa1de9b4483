/* ram.c — the RAM page pool: slots of block data in one memfd.
 *
 * The memfd is sized (sparsely) far beyond the budget and mapped once into
 * the process, so a page's bytes are always reachable at ram_addr() with no
 * per-fault mmap.  Slots are power-of-two sized; freed slots go to a free
 * list of their size and their memory back to the OS (FALLOC_FL_PUNCH_HOLE),
 * so a slot fresh from ram_alloc reads as zeros.
 * The budget counts slot bytes handed out and is never exceeded.  Offset space
 * per size class never exceeds the budget, so RAM_NCLASS * budget of address
 * space always suffices.
 * Locking: ram_alloc/ram_free and the LRU are under vm_lock; vm_ram_open and
 * vm_ram_close touch no shared state.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Address space reserved for a pool: one budget per block size class that
 * can occur (page size .. VM_BLKSIZE_MAX), rounded to VM_BLKSIZE_MAX. */
static size_t view_size_for(size_t budget)
{
	size_t pagesize = (size_t)sysconf(_SC_PAGESIZE);
	size_t nclass = 0;
	for (size_t s = pagesize; s <= VM_BLKSIZE_MAX; s <<= 1)
		nclass++;
	size_t b = (budget + VM_BLKSIZE_MAX - 1) & ~(VM_BLKSIZE_MAX - 1);
	return b * nclass;
}

int vm_ram_open(vm_ram **ramp, size_t budget)
{
	size_t pagesize = (size_t)sysconf(_SC_PAGESIZE);
	vm_ram *ram;

	*ramp = NULL;
	/* Reserve at most 1/8 of a 47-bit address space. */
	if (budget < pagesize || budget > ((size_t)1 << 44) / RAM_NCLASS)
		return -EINVAL;
	ram = calloc(1, sizeof(*ram));
	if (ram == NULL)
		return -ENOMEM;
	ram->budget = budget;
	ram->pageshift = (unsigned)__builtin_ctzl(pagesize);
	ram->view_size = view_size_for(budget);
	vm_list_init(&ram->lru);
	ram->memfd = memfd_create("virtmem-ram", MFD_CLOEXEC);
	if (ram->memfd < 0)
		goto fail;
	if (ftruncate(ram->memfd, (off_t)ram->view_size) < 0)
		goto fail;
	ram->base = mmap(NULL, ram->view_size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_NORESERVE, ram->memfd, 0);
	if (ram->base == MAP_FAILED)
		goto fail;
	*ramp = ram;
	return 0;
fail: {
	int rc = -errno;
	if (ram->memfd >= 0)
		close(ram->memfd);
	free(ram);
	return rc;
}
}

int vm_ram_close(vm_ram *ram)
{
	if (ram == NULL)
		return 0;
	if (ram->nfileh != 0)
		return -EBUSY;
	ram_stop_spares(ram);
	munmap(ram->base, ram->view_size);
	close(ram->memfd);
	for (int i = 0; i < RAM_NCLASS; i++)
		free(ram->free[i].off);
	free(ram);
	return 0;
}

size_t vm_ram_budget(const vm_ram *ram) { return ram->budget; }
size_t vm_ram_used(const vm_ram *ram) { return __atomic_load_n(&ram->used, __ATOMIC_RELAXED); }

/* Size class of a slot: log2(size / page size).  ram->pageshift is read
 * once at open: this runs on every fault. */
static int class_of(const vm_ram *ram, size_t size)
{
	return __builtin_ctzl(size) - (int)ram->pageshift;
}

/* Free slots of one size are kept in a min-heap of offsets: handing out the
 * lowest free offset first makes blocks faulted in order sit at ascending,
 * adjacent offsets, so the kernel merges their mappings into few VMAs (fewer
 * VMAs: cheaper mmap calls, and far from vm.max_map_count). */
static void heap_push(struct ram_freelist *fl, size_t off)
{
	size_t i = fl->n++;
	while (i > 0 && fl->off[(i - 1) / 2] > off) {
		fl->off[i] = fl->off[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	fl->off[i] = off;
}

static size_t heap_pop(struct ram_freelist *fl)
{
	size_t top = fl->off[0], last = fl->off[--fl->n], i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= fl->n)
			break;
		if (c + 1 < fl->n && fl->off[c + 1] < fl->off[c])
			c++;
		if (fl->off[c] >= last)
			break;
		fl->off[i] = fl->off[c];
		i = c;
	}
	if (fl->n > 0)
		fl->off[i] = last;
	return top;
}

int ram_take(vm_ram *ram, size_t size, size_t *offp)
{
	struct ram_freelist *fl = &ram->free[class_of(ram, size)];

	if (fl->n > 0) {
		*offp = heap_pop(fl);
	} else {
		if (ram->view_size - ram->bump < size)
			return -ENOSPC; /* cannot happen: see the file comment */
		*offp = ram->bump;
		ram->bump += size;
	}
	return 0;
}

int ram_alloc(vm_ram *ram, size_t size, size_t *offp)
{
	if (size > ram->budget - ram->used - ram->spare_bytes)
		return -ENOSPC;
	int rc = ram_take(ram, size, offp);
	if (rc == 0)
		__atomic_store_n(&ram->used, ram->used + size, __ATOMIC_RELAXED);
	return rc;
}

void ram_put(vm_ram *ram, size_t off, size_t size)
{
	struct ram_freelist *fl = &ram->free[class_of(ram, size)];

	/* Give the memory back.  A free slot reads as zeros (page_fill
	 * counts on it): should punching fail, zero it instead. */
	if (fallocate(ram->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)size) < 0)
		memset(ram->base + off, 0, size);
	if (fl->n == fl->cap) {
		size_t ncap = fl->cap ? fl->cap * 2 : 64;
		size_t *n = realloc(fl->off, ncap * sizeof(*n));
		if (n == NULL)
			return; /* the slot is lost to reuse, not to the budget */
		fl->off = n;
		fl->cap = ncap;
	}
	heap_push(fl, off);
}

void ram_free(vm_ram *ram, size_t off, size_t size)
{
	ram_put(ram, off, size);
	__atomic_store_n(&ram->used, ram->used - size, __ATOMIC_RELAXED);
}
