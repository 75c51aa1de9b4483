/* vmfixture.h — the fixture the virtmem tests share: a memfile, a RAM pool,
 * a handle and one mapping of the whole file.  Include after cmocka.h.
 */
#ifndef BLKMAP_TESTS_VMFIXTURE_H
#define BLKMAP_TESTS_VMFIXTURE_H

#include "vmtest.h"

struct fx {
	struct memfile *m;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
};

/* with_base: the file has the overlay trio (flags 0 then picks overlay). */
static inline struct fx *fx_open_file(size_t blksize, size_t nblk, size_t budget_blocks,
				      int with_base)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->m = memfile_new(blksize, nblk, with_base);
	assert_int_equal(vm_ram_open(&f->ram, budget_blocks * blksize), 0);
	assert_int_equal(vm_fileh_open(&f->fh, &f->m->file, f->ram, 0), 0);
	assert_int_equal(vm_fileh_is_overlay(f->fh), with_base);
	assert_int_equal(vm_fileh_mmap(&f->vma, f->fh, 0, nblk), 0);
	return f;
}

static inline void fx_close(struct fx *f)
{
	vm_vma_unmap(f->vma);
	vm_fileh_close(f->fh);
	assert_int_equal(vm_ram_close(f->ram), 0);
	memfile_free(f->m);
	free(f);
}

static inline uint64_t *word(vm_vma *vma, vm_blk_t blk, size_t i)
{
	return (uint64_t *)vm_vma_blk_addr(vma, blk) + i;
}

static inline struct vm_fileh_stats stats(vm_fileh *fh)
{
	struct vm_fileh_stats st;
	vm_fileh_stats(fh, &st);
	return st;
}

/* Orders what the test did to its backend's state before the loads that
 * follow, and what loads did to it before what the test reads next: under
 * the uffd engine loads run in handler threads, which the kernel orders
 * with the faulting thread in a way ThreadSanitizer cannot see; vm_lock,
 * taken here and around every fault, it can. */
static inline void backend_sync(vm_fileh *fh)
{
	(void)stats(fh);
}

/* Waits (up to 10 s) until fh has counted n faults. */
static inline void wait_faults(vm_fileh *fh, uint64_t n)
{
	for (int i = 0; i < 10000 && stats(fh).faults < n; i++)
		usleep(1000);
	assert_int_equal(stats(fh).faults, n);
}

#endif /* BLKMAP_TESTS_VMFIXTURE_H */
