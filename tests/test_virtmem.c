/* test_virtmem.c — libvirtmem in loadblk mode: the page state machine driven
 * by explicit and real faults, mappings, reclaim, writeout, discard and
 * invalidation, for several block sizes.
 */
#include "config.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <cmocka.h>

#include "vmfixture.h"

#define BS4K 4096
#define BS64K (64 << 10)
#define BS2M (2 << 20)

static struct fx *fx_open(size_t blksize, size_t nblk, size_t budget_blocks)
{
	return fx_open_file(blksize, nblk, budget_blocks, 0);
}

/* A read the compiler cannot drop. */
static void touch(const uint64_t *p)
{
	(void)*(const volatile uint64_t *)p;
}

static enum vm_page_state state(struct fx *f, vm_blk_t blk)
{
	return vm_fileh_page_state(f->fh, blk);
}

/* ---- state transitions through explicit faults -------------------------- */

static void test_explicit_read_fault_loads_block_readonly(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	void *p = vm_vma_blk_addr(f->vma, 1);

	assert_int_equal(state(f, 1), VM_PAGE_EMPTY);
	assert_false(block_mapped(f->fh, p));
	assert_int_equal(vm_vma_on_fault(f->vma, p, 0), 0);
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	assert_int_equal(f->m->loads[1], 1);
	assert_true(block_mapped(f->fh, p));
	assert_int_equal(*word(f->vma, 1, 7), PATTERN(1, 7));
	/* Reading a loaded page takes no further fault. */
	assert_int_equal(stats(f->fh).faults, 1);
	assert_int_equal(vm_ram_used(f->ram), BS4K);
	fx_close(f);
}

static void test_explicit_write_fault_makes_page_dirty(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	void *p = vm_vma_blk_addr(f->vma, 2);

	assert_int_equal(vm_vma_on_fault(f->vma, p, 1), 0);
	assert_int_equal(state(f, 2), VM_PAGE_DIRTY);
	assert_int_equal(f->m->loads[2], 1);
	*word(f->vma, 2, 0) = 42; /* writable: no fault */
	assert_int_equal(stats(f->fh).faults, 1);
	assert_int_equal(stats(f->fh).ndirty, 1);
	assert_int_equal(*word(f->vma, 2, 1), PATTERN(2, 1));
	fx_close(f);
}

static void test_fault_outside_mapping_is_refused(void **unused)
{
	struct fx *f = fx_open(BS4K, 2, 2);
	char *end = (char *)vm_vma_addr(f->vma) + vm_vma_len(f->vma);
	assert_int_equal(vm_vma_on_fault(f->vma, end, 0), -EFAULT);
	fx_close(f);
}

static void test_failed_load_leaves_page_empty_and_is_retried(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	void *p = vm_vma_blk_addr(f->vma, 3);

	f->m->fail_load_blk = 3;
	assert_int_equal(vm_vma_on_fault(f->vma, p, 0), -EIO);
	assert_int_equal(state(f, 3), VM_PAGE_EMPTY);
	assert_int_equal(vm_ram_used(f->ram), 0);
	assert_int_equal(stats(f->fh).load_errors, 1);
	f->m->fail_load_blk = -1;
	assert_int_equal(vm_vma_on_fault(f->vma, p, 0), 0);
	assert_int_equal(state(f, 3), VM_PAGE_LOADED);
	assert_int_equal(f->m->loads[3], 2);
	fx_close(f);
}

/* ---- real faults ----------------------------------------------------------- */

static void test_reading_every_word_loads_each_block_once(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 16);
	for (vm_blk_t b = 0; b < 16; b++)
		for (size_t i = 0; i < BS4K / 8; i++)
			assert_true(*word(f->vma, b, i) == PATTERN(b, i));
	for (vm_blk_t b = 0; b < 16; b++) {
		assert_int_equal(f->m->loads[b], 1);
		assert_int_equal(state(f, b), VM_PAGE_LOADED);
	}
	assert_int_equal(stats(f->fh).faults, 16);
	fx_close(f);
}

static void test_write_after_read_dirties_without_reload(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	uint64_t v = *word(f->vma, 1, 5);
	assert_true(v == PATTERN(1, 5));
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	*word(f->vma, 1, 5) = 77;
	assert_int_equal(state(f, 1), VM_PAGE_DIRTY);
	assert_int_equal(f->m->loads[1], 1);
	assert_int_equal(*word(f->vma, 1, 5), 77);
	assert_true(*word(f->vma, 1, 6) == PATTERN(1, 6));
	/* The backend's copy is untouched until writeout. */
	assert_true(memfile_blk(f->m, 1)[5] == PATTERN(1, 5));
	fx_close(f);
}

static void test_write_to_empty_page_loads_it_first(void **unused)
{
	struct fx *f = fx_open(BS64K, 4, 4);
	*word(f->vma, 0, 100) = 1;
	assert_int_equal(state(f, 0), VM_PAGE_DIRTY);
	assert_int_equal(f->m->loads[0], 1);
	assert_true(*word(f->vma, 0, 99) == PATTERN(0, 99));
	assert_true(*word(f->vma, 0, 101) == PATTERN(0, 101));
	fx_close(f);
}

/* ---- several mappings ------------------------------------------------------- */

static void test_overlapping_mappings_share_pages(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);
	vm_vma *a, *b;

	assert_int_equal(vm_fileh_mmap(&a, f->fh, 0, 4), 0);
	assert_int_equal(vm_fileh_mmap(&b, f->fh, 2, 4), 0);
	assert_int_equal(vm_vma_first_blk(b), 2);
	assert_ptr_equal(vm_vma_fileh(b), f->fh);

	/* A block read through one mapping is not loaded again through the
	 * other. */
	assert_true(*word(a, 2, 0) == PATTERN(2, 0));
	assert_true(*word(b, 2, 0) == PATTERN(2, 0));
	assert_int_equal(f->m->loads[2], 1);

	/* A write through one mapping is seen at once through every other
	 * mapping of the block, without a fault there. */
	*word(a, 3, 9) = 1234;
	assert_true(block_mapped(f->fh, vm_vma_blk_addr(b, 3)));
	assert_true(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 3)));
	unsigned faults = stats(f->fh).faults;
	assert_int_equal(*word(b, 3, 9), 1234);
	assert_int_equal(*word(f->vma, 3, 9), 1234);
	assert_int_equal(stats(f->fh).faults, faults);
	assert_int_equal(f->m->loads[3], 1);

	/* So too with more mappings than one fault maps at a time. */
	vm_vma *many[12];
	for (int i = 0; i < 12; i++)
		assert_int_equal(vm_fileh_mmap(&many[i], f->fh, 5, 2), 0);
	*word(many[0], 6, 1) = 4321;
	faults = stats(f->fh).faults;
	for (int i = 0; i < 12; i++) {
		assert_true(block_mapped(f->fh, vm_vma_blk_addr(many[i], 6)));
		assert_int_equal(*word(many[i], 6, 1), 4321);
	}
	assert_int_equal(*word(f->vma, 6, 1), 4321);
	assert_int_equal(stats(f->fh).faults, faults);
	assert_int_equal(f->m->loads[6], 1);
	for (int i = 0; i < 12; i++)
		vm_vma_unmap(many[i]);

	vm_vma_unmap(a);
	vm_vma_unmap(b);
	fx_close(f);
}

static void test_new_mapping_shows_dirty_pages(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	vm_vma *b;

	*word(f->vma, 1, 0) = 555;
	assert_int_equal(vm_fileh_mmap(&b, f->fh, 0, 4), 0);
	assert_true(block_mapped(f->fh, vm_vma_blk_addr(b, 1)));
	assert_int_equal(*word(b, 1, 0), 555);
	assert_int_equal(f->m->loads[1], 1);
	vm_vma_unmap(b);
	fx_close(f);
}

static void test_unmap_keeps_dirty_pages(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);

	*word(f->vma, 2, 3) = 99;
	vm_vma_unmap(f->vma);
	assert_int_equal(state(f, 2), VM_PAGE_DIRTY);
	assert_int_equal(vm_fileh_mmap(&f->vma, f->fh, 0, 4), 0);
	assert_int_equal(*word(f->vma, 2, 3), 99);
	fx_close(f);
}

static void test_mapping_needs_blocks(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	vm_vma *b;
	assert_int_equal(vm_fileh_mmap(&b, f->fh, 0, 0), -EINVAL);
	assert_null(b);
	assert_int_equal(vm_fileh_mmap(&b, f->fh, UINT64_MAX, 2), -EINVAL);
	fx_close(f);
}

/* ---- RAM budget and reclaim ------------------------------------------------- */

static void test_reclaim_keeps_ram_within_budget(void **unused)
{
	struct fx *f = fx_open(BS64K, 32, 3);

	for (vm_blk_t b = 0; b < 32; b++) {
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
		assert_true(vm_ram_used(f->ram) <= 3 * BS64K);
	}
	assert_int_equal(stats(f->fh).reclaimed, 29);
	assert_int_equal(stats(f->fh).ncached, 3);
	/* A reclaimed block is unmapped and loads again on access. */
	assert_int_equal(state(f, 0), VM_PAGE_EMPTY);
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 0)));
	assert_true(*word(f->vma, 0, 2) == PATTERN(0, 2));
	assert_int_equal(f->m->loads[0], 2);
	fx_close(f);
}

static void test_reclaim_takes_least_recently_faulted_page(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 2);
	vm_vma *b;

	assert_int_equal(vm_fileh_mmap(&b, f->fh, 0, 8), 0);
	touch(word(f->vma, 0, 0));
	touch(word(f->vma, 1, 0));
	touch(word(b, 0, 0)); /* fault on block 0 again, through b */
	touch(word(f->vma, 2, 0));
	assert_int_equal(state(f, 1), VM_PAGE_EMPTY);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED);
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	vm_vma_unmap(b);
	fx_close(f);
}

static void test_dirty_pages_are_never_reclaimed(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 2);

	*word(f->vma, 0, 0) = 1;
	*word(f->vma, 1, 0) = 2;
	/* Budget full of dirty pages: the fault fails, nothing is lost. */
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, 2), 0), -ENOMEM);
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY);
	assert_int_equal(*word(f->vma, 0, 0), 1);
	assert_int_equal(*word(f->vma, 1, 0), 2);
	/* Once written out they are clean and can make room. */
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_true(*word(f->vma, 2, 0) == PATTERN(2, 0));
	assert_true(vm_ram_used(f->ram) <= 2 * BS4K);
	fx_close(f);
}

static void test_pool_reclaims_across_handles(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 18); /* 72 KiB */
	struct memfile *m2 = memfile_new(BS64K, 2, 0);
	vm_fileh *fh2;
	vm_vma *v2;

	for (vm_blk_t b = 0; b < 4; b++)
		touch(word(f->vma, b, 0));
	/* 64 KiB next to 4 x 4 KiB does not fit: the two oldest pages of the
	 * other handle make room. */
	assert_int_equal(vm_fileh_open(&fh2, &m2->file, f->ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&v2, fh2, 0, 2), 0);
	assert_true(*word(v2, 1, 3) == PATTERN(1, 3));
	assert_int_equal(state(f, 0), VM_PAGE_EMPTY);
	assert_int_equal(state(f, 1), VM_PAGE_EMPTY);
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	assert_int_equal(vm_ram_used(f->ram), 72 << 10);
	assert_int_equal(vm_ram_close(f->ram), -EBUSY);
	vm_vma_unmap(v2);
	vm_fileh_close(fh2);
	memfile_free(m2);
	fx_close(f);
}

static void test_block_larger_than_budget_fails_without_reclaim(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 3);
	struct memfile *m2 = memfile_new(BS64K, 2, 0);
	vm_fileh *fh2;
	vm_vma *v2;

	touch(word(f->vma, 0, 0));
	assert_int_equal(vm_fileh_open(&fh2, &m2->file, f->ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&v2, fh2, 0, 2), 0);
	assert_int_equal(vm_vma_on_fault(v2, vm_vma_addr(v2), 0), -ENOMEM);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED);
	vm_vma_unmap(v2);
	vm_fileh_close(fh2);
	memfile_free(m2);
	fx_close(f);
}

/* ---- writeout ------------------------------------------------------------- */

static void test_writeout_stores_in_ascending_block_order(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);

	*word(f->vma, 5, 0) = 50;
	*word(f->vma, 1, 0) = 10;
	*word(f->vma, 3, 0) = 30;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE), 0);
	assert_int_equal(f->m->nstore, 3);
	assert_int_equal(f->m->store_log[0], 1);
	assert_int_equal(f->m->store_log[1], 3);
	assert_int_equal(f->m->store_log[2], 5);
	assert_int_equal(memfile_blk(f->m, 3)[0], 30);
	/* STORE alone leaves them dirty. */
	assert_int_equal(state(f, 3), VM_PAGE_DIRTY);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	assert_int_equal(state(f, 3), VM_PAGE_LOADED);
	assert_int_equal(state(f, 5), VM_PAGE_LOADED);
	assert_int_equal(stats(f->fh).ndirty, 0);
	/* Clean again: read-only, a new write dirties again without a load. */
	assert_int_equal(*word(f->vma, 5, 0), 50);
	*word(f->vma, 5, 0) = 51;
	assert_int_equal(state(f, 5), VM_PAGE_DIRTY);
	assert_int_equal(f->m->loads[5], 1);
	fx_close(f);
}

static void test_writeout_error_leaves_every_page_dirty(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);

	*word(f->vma, 1, 0) = 10;
	*word(f->vma, 3, 0) = 30;
	*word(f->vma, 5, 0) = 50;
	f->m->fail_store_blk = 3;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED),
			 -ENOSPC);
	assert_int_equal(f->m->nstore, 1); /* block 1 only; 5 never tried */
	assert_int_equal(stats(f->fh).ndirty, 3);
	for (vm_blk_t b = 1; b <= 5; b += 2)
		assert_int_equal(state(f, b), VM_PAGE_DIRTY);
	/* The failed page is writable again at once. */
	*word(f->vma, 3, 1) = 31;
	f->m->fail_store_blk = -1;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(stats(f->fh).ndirty, 0);
	assert_int_equal(memfile_blk(f->m, 3)[1], 31);
	assert_int_equal(memfile_blk(f->m, 5)[0], 50);
	fx_close(f);
}

/* A failed STORE marks nothing stored, not even the pages it stored before
 * the failing one: a MARKSTORED alone afterwards must not clean pages whose
 * store the caller never saw succeed (and so never published). */
static void test_failed_store_marks_earlier_pages_not_stored(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);

	*word(f->vma, 1, 0) = 10;
	*word(f->vma, 3, 0) = 30;
	*word(f->vma, 5, 0) = 50;
	f->m->fail_store_blk = 5;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE), -ENOSPC);
	assert_int_equal(f->m->nstore, 2); /* 1 and 3 reached storeblk */
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_MARKSTORED), 0);
	for (vm_blk_t b = 1; b <= 5; b += 2)
		assert_int_equal(state(f, b), VM_PAGE_DIRTY);
	assert_int_equal(stats(f->fh).ndirty, 3);
	/* Dirty and not stored: writable at once, no fault. */
	uint64_t faults = stats(f->fh).faults;
	*word(f->vma, 1, 1) = 11;
	*word(f->vma, 3, 1) = 31;
	*word(f->vma, 5, 1) = 51;
	assert_int_equal(stats(f->fh).faults, faults);
	f->m->fail_store_blk = -1;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(stats(f->fh).ndirty, 0);
	for (vm_blk_t b = 1; b <= 5; b += 2) {
		assert_int_equal(state(f, b), VM_PAGE_LOADED);
		assert_int_equal(memfile_blk(f->m, b)[0], b * 10);
		assert_int_equal(memfile_blk(f->m, b)[1], b * 10 + 1);
	}
	fx_close(f);
}

static void test_markstored_keeps_pages_written_after_store(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);

	*word(f->vma, 0, 0) = 1;
	*word(f->vma, 1, 0) = 2;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE), 0);
	*word(f->vma, 1, 0) = 3; /* after its store */
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED);
	assert_int_equal(state(f, 1), VM_PAGE_DIRTY);
	assert_int_equal(*word(f->vma, 1, 0), 3);
	assert_int_equal(memfile_blk(f->m, 1)[0], 2);
	fx_close(f);
}

struct writer_arg {
	struct fx *f;
	vm_blk_t blk;
	uint64_t value;
};

static void *write_word_thread(void *p)
{
	struct writer_arg *a = p;
	*word(a->f->vma, a->blk, 0) = a->value;
	return NULL;
}

static void *writeout_thread(void *p)
{
	struct fx *f = p;
	intptr_t rc = vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED);
	return (void *)rc;
}

static void test_write_during_store_is_not_lost(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	struct writer_arg wa = { f, 1, 222 };
	int uffd = fh_uffd(f->fh);
	pthread_t wo, wr;
	void *rc;

	*word(f->vma, 1, 0) = 111;
	backend_sync(f->fh);
	f->m->hold_blk = 1; /* storeblk(1) waits for us */
	pthread_create(&wo, NULL, writeout_thread, f);
	memfile_wait_held(f->m);
	pthread_create(&wr, NULL, write_word_thread, &wa);
	if (uffd) {
		/* The page is write-protected without faults: the write goes
		 * through during the store, and is found after it. */
		pthread_join(wr, NULL);
	} else {
		/* The page is write-protected: the writer's fault is counted
		 * under vm_lock, which it gives up only to wait for the
		 * store. */
		wait_faults(f->fh, 2);
	}
	assert_int_equal(vm_fileh_dirty_discard(f->fh), -EBUSY);
	memfile_release_held(f->m);
	pthread_join(wo, &rc);
	if (!uffd)
		pthread_join(wr, NULL);
	assert_int_equal((intptr_t)rc, 0);
	/* The store took the page as it was before the write (SIGSEGV: the
	 * writer waited for it) ... */
	if (!uffd)
		assert_int_equal(memfile_blk(f->m, 1)[0], 111);
	/* ... and the write is kept, dirty. */
	assert_int_equal(*word(f->vma, 1, 0), 222);
	assert_int_equal(state(f, 1), VM_PAGE_DIRTY);
	f->m->hold_blk = -1;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(memfile_blk(f->m, 1)[0], 222);
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	fx_close(f);
}

static void test_writeout_refuses_bad_flags(void **unused)
{
	struct fx *f = fx_open(BS4K, 2, 2);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, 0), -EINVAL);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, 8), -EINVAL);
	fx_close(f);
}

/* ---- discard and invalidate ---------------------------------------------- */

static void test_discard_drops_dirty_pages(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);

	touch(word(f->vma, 0, 0));
	*word(f->vma, 1, 0) = 5;
	assert_int_equal(vm_fileh_dirty_discard(f->fh), 0);
	assert_int_equal(state(f, 1), VM_PAGE_EMPTY);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED); /* clean pages stay */
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 1)));
	assert_true(*word(f->vma, 1, 0) == PATTERN(1, 0));
	assert_int_equal(f->m->loads[1], 2);
	assert_int_equal(vm_ram_used(f->ram), 2 * BS4K);
	fx_close(f);
}

static void test_invalidate_drops_clean_page(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);

	touch(word(f->vma, 2, 0));
	backend_sync(f->fh);
	memfile_blk(f->m, 2)[0] = 4242;
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 2), 0);
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY);
	assert_int_equal(*word(f->vma, 2, 0), 4242);
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 3), 0); /* EMPTY: no-op */
	fx_close(f);
}

/* A clean page written after it was read (under the uffd engine such a
 * write takes no fault: only a look at the page table tells) stays: an
 * invalidate refuses it and reclaim passes over it to the next clean page.
 * Nothing asks for the page states before, so the look is theirs. */
static void test_clean_page_written_is_kept_by_invalidate_and_reclaim(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 2);

	assert_true(*word(f->vma, 0, 3) == PATTERN(0, 3));
	assert_true(*word(f->vma, 1, 3) == PATTERN(1, 3));
	*word(f->vma, 0, 3) = 77;
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 0), -EBUSY);
	*word(f->vma, 1, 3) = 78;
	/* Block 2 needs a slot: both pages are dirty now. */
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, 2), 0), -ENOMEM);
	assert_int_equal(*word(f->vma, 0, 3), 77);
	assert_int_equal(*word(f->vma, 1, 3), 78);
	assert_int_equal(state(f, 0), VM_PAGE_DIRTY);
	assert_int_equal(state(f, 1), VM_PAGE_DIRTY);
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY);
	fx_close(f);
}

static void test_invalidate_refuses_dirty_page(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	*word(f->vma, 2, 0) = 1;
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 2), -EBUSY);
	assert_int_equal(*word(f->vma, 2, 0), 1);
	fx_close(f);
}

struct fault_arg {
	vm_vma *vma;
	void *addr;
	int write;
	int rc;
};

static void *fault_thread(void *p)
{
	struct fault_arg *a = p;
	a->rc = vm_vma_on_fault(a->vma, a->addr, a->write);
	return NULL;
}

static void test_invalidate_while_loading_reloads(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	struct fault_arg fa = { f->vma, vm_vma_blk_addr(f->vma, 2), 0, -1 };
	pthread_t t;

	f->m->hold_blk = 2;
	pthread_create(&t, NULL, fault_thread, &fa);
	memfile_wait_held(f->m);
	assert_int_equal(state(f, 2), VM_PAGE_LOADING);
	memfile_blk(f->m, 2)[0] = 9999; /* the block changes under the load */
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 2), 0);
	assert_int_equal(state(f, 2), VM_PAGE_LOADING_INVALIDATED);
	f->m->hold_blk = -1;
	memfile_release_held(f->m);
	pthread_join(t, NULL);
	assert_int_equal(fa.rc, 0);
	assert_int_equal(f->m->loads[2], 2);
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	assert_int_equal(*word(f->vma, 2, 0), 9999);
	fx_close(f);
}

static void test_readonly_handle_refuses_writes(void **unused)
{
	struct memfile *m = memfile_new(BS4K, 2, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	assert_int_equal(vm_ram_open(&ram, 2 * BS4K), 0);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, VM_READONLY), 0);
	assert_int_equal(vm_fileh_mmap(&vma, fh, 0, 2), 0);
	assert_int_equal(vm_vma_on_fault(vma, vm_vma_addr(vma), 1), -EROFS);
	assert_int_equal(vm_fileh_page_state(fh, 0), VM_PAGE_EMPTY);
	assert_true(*word(vma, 0, 1) == PATTERN(0, 1));
	assert_int_equal(vm_vma_on_fault(vma, vm_vma_addr(vma), 1), -EROFS);
	assert_int_equal(vm_fileh_page_state(fh, 0), VM_PAGE_LOADED);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	vm_ram_close(ram);
	memfile_free(m);
}

static volatile vm_blk_t seen_blk[16];
static volatile int seen_write[16], nseen; /* written from the fault handler */

static void record_fault(vm_bigfile *f, vm_blk_t blk, int write)
{
	(void)f;
	if (nseen < 16) {
		seen_blk[nseen] = blk;
		seen_write[nseen++] = write;
	}
}

static void test_on_fault_sees_every_fault_cached_or_not(void **unused)
{
	static const vm_bigfile_ops ops = {
		.loadblk = memfile_loadblk, .on_fault = record_fault };
	struct memfile *m = memfile_new(BS4K, 4, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *a, *b;

	m->file.ops = &ops;
	nseen = 0;
	assert_int_equal(vm_ram_open(&ram, 4 * BS4K), 0);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&a, fh, 0, 4), 0);
	assert_int_equal(vm_fileh_mmap(&b, fh, 0, 4), 0);
	touch(word(a, 2, 0));      /* miss */
	touch(word(b, 2, 0));      /* cached: a fault in b all the same */
	*(volatile uint64_t *)word(a, 3, 0) = 1; /* write */
	backend_sync(fh);
	assert_int_equal(nseen, 3);
	assert_int_equal(seen_blk[0], 2);
	assert_int_equal(seen_blk[1], 2);
	assert_int_equal(seen_blk[2], 3);
	assert_int_equal(seen_write[0], 0);
	assert_int_equal(seen_write[2], 1);
	assert_int_equal(m->loads[2], 1);
	vm_vma_unmap(a);
	vm_vma_unmap(b);
	vm_fileh_close(fh);
	vm_ram_close(ram);
	memfile_free(m);
}

/* ---- prefetch ------------------------------------------------------------- */

static void test_prefetch_loads_without_mapping(void **unused)
{
	struct fx *f = fx_open(BS64K, 4, 4);

	assert_int_equal(vm_fileh_prefetch(f->fh, 2), 0);
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	assert_int_equal(f->m->loads[2], 1);
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 2)));
	/* Prefetching again does nothing; the fault only maps. */
	assert_int_equal(vm_fileh_prefetch(f->fh, 2), 0);
	assert_true(*word(f->vma, 2, 5) == PATTERN(2, 5));
	assert_int_equal(f->m->loads[2], 1);
	assert_int_equal(stats(f->fh).faults, 1);
	/* A failed prefetch leaves the block EMPTY. */
	f->m->fail_load_blk = 3;
	assert_int_equal(vm_fileh_prefetch(f->fh, 3), -EIO);
	assert_int_equal(state(f, 3), VM_PAGE_EMPTY);
	fx_close(f);
}

static void *prefetch_thread(void *p)
{
	struct fx *f = p;
	intptr_t rc = vm_fileh_prefetch(f->fh, 1);
	return (void *)rc;
}

static void *prefetch_thread_5(void *p)
{
	struct fx *f = p;
	intptr_t rc = vm_fileh_prefetch(f->fh, 5);
	return (void *)rc;
}

static void *read_block1_thread(void *p)
{
	struct fx *f = p;
	intptr_t ok = *word(f->vma, 1, 0) == PATTERN(1, 0);
	return (void *)ok;
}

static void test_fault_waits_for_a_prefetch_in_progress(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	pthread_t tp, tr;
	void *rc, *ok;

	f->m->hold_blk = 1;
	pthread_create(&tp, NULL, prefetch_thread, f);
	memfile_wait_held(f->m);
	assert_int_equal(state(f, 1), VM_PAGE_LOADING);
	pthread_create(&tr, NULL, read_block1_thread, f);
	/* The reader's fault is counted under vm_lock, which it gives up only
	 * to wait for the load. */
	wait_faults(f->fh, 1);
	assert_int_equal(f->m->loads[1], 1);
	memfile_release_held(f->m);
	pthread_join(tp, &rc);
	pthread_join(tr, &ok);
	assert_int_equal((intptr_t)rc, 0);
	assert_int_equal((intptr_t)ok, 1);
	assert_int_equal(f->m->loads[1], 1);
	fx_close(f);
}

/* ---- prefetch of a run ------------------------------------------------------ */

static void test_prefetch_run_loads_each_block_once(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 16);

	assert_int_equal(vm_fileh_prefetch(f->fh, 4), 0);
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 2, 5), 0);
	for (vm_blk_t b = 0; b < 16; b++) {
		bool in = b >= 2 && b < 7;
		assert_int_equal(state(f, b), in ? VM_PAGE_LOADED : VM_PAGE_EMPTY);
		assert_int_equal(f->m->loads[b], in ? 1 : 0); /* 4 was cached */
		assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, b)));
	}
	assert_int_equal(vm_ram_used(f->ram), 5 * BS4K);
	assert_true(*word(f->vma, 6, 8) == PATTERN(6, 8));
	assert_int_equal(f->m->loads[6], 1);
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 2, 0), 0);
	assert_int_equal(vm_fileh_prefetch_run(f->fh, UINT64_MAX, 2), -EINVAL);
	fx_close(f);
}

struct run_arg {
	struct fx *f;
	vm_blk_t blk;
	size_t n;
};

static void *prefetch_run_thread(void *p)
{
	struct run_arg *a = p;
	intptr_t rc = vm_fileh_prefetch_run(a->f->fh, a->blk, a->n);
	return (void *)rc;
}

static void *read_block4_thread(void *p)
{
	struct fx *f = p;
	intptr_t ok = *word(f->vma, 4, 0) == PATTERN(4, 0);
	return (void *)ok;
}

static void test_fault_on_a_block_of_a_run_waits_for_the_run(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);
	struct run_arg a = { f, 2, 4 };
	pthread_t tp, tr;
	void *rc, *ok;

	f->m->hold_blk = 2; /* the run's first load waits */
	pthread_create(&tp, NULL, prefetch_run_thread, &a);
	memfile_wait_held(f->m);
	/* Every block of the run is taken before the first is filled. */
	for (vm_blk_t b = 2; b < 6; b++)
		assert_int_equal(state(f, b), VM_PAGE_LOADING);
	pthread_create(&tr, NULL, read_block4_thread, f);
	wait_faults(f->fh, 1);
	assert_int_equal(f->m->loads[4], 0); /* the fault waits, loads nothing */
	memfile_release_held(f->m);
	pthread_join(tp, &rc);
	pthread_join(tr, &ok);
	assert_int_equal((intptr_t)rc, 0);
	assert_int_equal((intptr_t)ok, 1);
	for (vm_blk_t b = 2; b < 6; b++)
		assert_int_equal(f->m->loads[b], 1);
	fx_close(f);
}

static void test_prefetch_run_takes_only_the_ram_the_budget_has(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 4);

	*word(f->vma, 14, 0) = 1;
	*word(f->vma, 15, 0) = 1; /* 2 of 4 blocks dirty: never reclaimed */
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 0, 8), 0);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED);
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	/* No block of the run makes room for another. */
	for (vm_blk_t b = 2; b < 8; b++)
		assert_int_equal(state(f, b), VM_PAGE_EMPTY);
	assert_int_equal(vm_ram_used(f->ram), 4 * BS4K);
	assert_int_equal(stats(f->fh).reclaimed, 0);
	/* The next run reclaims the clean blocks, no dirty one. */
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 8, 4), 0);
	assert_int_equal(state(f, 8), VM_PAGE_LOADED);
	assert_int_equal(state(f, 9), VM_PAGE_LOADED);
	assert_int_equal(state(f, 10), VM_PAGE_EMPTY);
	assert_int_equal(stats(f->fh).ndirty, 2);
	assert_int_equal(vm_ram_used(f->ram), 4 * BS4K);
	/* All dirty: no block of a run finds RAM. */
	*word(f->vma, 12, 0) = 1;
	*word(f->vma, 13, 0) = 1;
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 0, 2), -ENOMEM);
	assert_int_equal(state(f, 0), VM_PAGE_EMPTY);
	fx_close(f);
}

static void test_failed_load_in_a_run_leaves_the_rest_empty(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);

	f->m->fail_load_blk = 3;
	assert_int_equal(vm_fileh_prefetch_run(f->fh, 2, 4), -EIO);
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	for (vm_blk_t b = 3; b < 6; b++)
		assert_int_equal(state(f, b), VM_PAGE_EMPTY);
	assert_int_equal(f->m->loads[4], 0);
	assert_int_equal(vm_ram_used(f->ram), BS4K);
	f->m->fail_load_blk = -1;
	assert_true(*word(f->vma, 4, 1) == PATTERN(4, 1)); /* a fault loads it */
	fx_close(f);
}

/* ---- a streamed run (vm_run) ------------------------------------------------------ */

/* Bytes of a stream that differ from every block's PATTERN. */
static unsigned char *stream_bytes(size_t len)
{
	unsigned char *s = malloc(len);
	for (size_t i = 0; i < len; i++)
		s[i] = (unsigned char)(i * 7 + 3 + i / 4093);
	return s;
}

/* Hands s[0, len) to run in pieces of the sizes given (cycled). */
static void stream_write(vm_run *run, const unsigned char *s, size_t from, size_t len)
{
	static const size_t pieces[] = { 1000, 5000, 3, 4096, 7777 };
	size_t i = 0;

	for (size_t off = from; off < len; i++) {
		size_t n = pieces[i % 5] < len - off ? pieces[i % 5] : len - off;
		assert_int_equal(vm_run_write(run, off, s + off, n), 0);
		off += n;
	}
}

static void test_streamed_run_caches_the_blocks_it_reaches_with_the_streams_bytes(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 16);
	size_t len = 4 * BS4K + 100;
	unsigned char *s = stream_bytes(len), zeros[BS4K] = { 0 };
	uint64_t bytes = 1;
	vm_run *run;

	assert_int_equal(vm_fileh_prefetch(f->fh, 4), 0); /* cached before */
	assert_int_equal(vm_run_begin(f->fh, 2, 6, &run), 0);
	assert_non_null(run);
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY); /* not reached yet */
	stream_write(run, s, 0, len);
	/* Taken as reached, LOADING until the run ends. */
	for (vm_blk_t b = 2; b < 7; b++)
		assert_int_equal(state(f, b), b == 4 ? VM_PAGE_LOADED : VM_PAGE_LOADING);
	assert_int_equal(state(f, 7), VM_PAGE_EMPTY);
	assert_int_equal(vm_run_end(run, (int64_t)len, &bytes), 4);
	assert_int_equal(bytes, 3 * BS4K + 100);
	for (vm_blk_t b = 0; b < 16; b++) {
		bool in = b >= 2 && b < 7;
		assert_int_equal(state(f, b), in ? VM_PAGE_LOADED : VM_PAGE_EMPTY);
		assert_int_equal(f->m->loads[b], b == 4 ? 1 : 0); /* no loadblk */
	}
	assert_int_equal(stats(f->fh).loads, 5);
	assert_int_equal(vm_ram_used(f->ram), 5 * BS4K);
	assert_memory_equal(vm_vma_blk_addr(f->vma, 2), s, 2 * BS4K);
	assert_true(*word(f->vma, 4, 9) == PATTERN(4, 9)); /* not overwritten */
	assert_memory_equal(vm_vma_blk_addr(f->vma, 5), s + 3 * BS4K, BS4K + 100);
	/* Past the stream's end: zeros. */
	assert_memory_equal((char *)vm_vma_blk_addr(f->vma, 6) + 100, zeros, BS4K - 100);
	assert_int_equal(f->m->loads[6], 0);
	free(s);
	fx_close(f);
}

static void test_streamed_run_refuses_bytes_outside_it(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 16);
	unsigned char b[16] = { 0 };
	vm_run *run;

	assert_int_equal(vm_run_begin(f->fh, 2, 0, &run), 0);
	assert_null(run);
	assert_int_equal(vm_run_begin(f->fh, UINT64_MAX, 2, &run), -EINVAL);
	assert_int_equal(vm_run_begin(f->fh, 2, 2, &run), 0);
	assert_int_equal(vm_run_write(run, 2 * BS4K - 8, b, 16), -EINVAL);
	assert_int_equal(vm_run_write(run, 2 * BS4K, b, 1), -EINVAL);
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY);
	assert_int_equal(vm_run_end(run, 0, NULL), 0); /* nothing was taken */
	fx_close(f);
}

static void test_failed_streamed_run_leaves_its_blocks_empty(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 16);
	size_t len = 3 * BS4K;
	unsigned char *s = stream_bytes(len);
	uint64_t bytes = 1;
	vm_run *run;

	assert_int_equal(vm_run_begin(f->fh, 0, 4, &run), 0);
	stream_write(run, s, 0, 2 * BS4K + 10);
	assert_int_equal(state(f, 2), VM_PAGE_LOADING);
	assert_int_equal(vm_run_end(run, -1, &bytes), 0);
	assert_int_equal(bytes, 0);
	for (vm_blk_t b = 0; b < 4; b++)
		assert_int_equal(state(f, b), VM_PAGE_EMPTY);
	assert_int_equal(vm_ram_used(f->ram), 0);
	/* A fault loads the block from the backend. */
	assert_true(*word(f->vma, 1, 3) == PATTERN(1, 3));
	assert_int_equal(f->m->loads[1], 1);
	/* A retry starts again at 0: the last bytes written count. */
	unsigned char *junk = stream_bytes(len + 1);
	assert_int_equal(vm_run_begin(f->fh, 2, 3, &run), 0);
	stream_write(run, junk + 1, 0, BS4K + 5);
	stream_write(run, s, 0, len);
	assert_int_equal(vm_run_end(run, (int64_t)len, &bytes), 3);
	assert_int_equal(bytes, len);
	assert_memory_equal(vm_vma_blk_addr(f->vma, 2), s, len);
	free(junk);
	free(s);
	fx_close(f);
}

static void test_streamed_run_takes_only_the_ram_the_budget_has(void **unused)
{
	struct fx *f = fx_open(BS4K, 16, 4);
	size_t len = 6 * BS4K;
	unsigned char *s = stream_bytes(len);
	vm_run *run;

	*word(f->vma, 14, 0) = 1;
	*word(f->vma, 15, 0) = 1; /* 2 of 4 blocks dirty: never reclaimed */
	assert_int_equal(vm_run_begin(f->fh, 0, 6, &run), 0);
	stream_write(run, s, 0, len);
	assert_int_equal(vm_run_end(run, (int64_t)len, NULL), 2);
	assert_int_equal(state(f, 0), VM_PAGE_LOADED);
	assert_int_equal(state(f, 1), VM_PAGE_LOADED);
	for (vm_blk_t b = 2; b < 6; b++)
		assert_int_equal(state(f, b), VM_PAGE_EMPTY);
	assert_int_equal(vm_ram_used(f->ram), 4 * BS4K);
	assert_memory_equal(vm_vma_blk_addr(f->vma, 0), s, 2 * BS4K);
	assert_true(*word(f->vma, 3, 0) == PATTERN(3, 0)); /* a fault reclaims a clean one */
	free(s);
	fx_close(f);
}

struct stream_read {
	struct fx *f;
	const unsigned char *want;
};

static void *read_block2_thread(void *p)
{
	struct stream_read *a = p;
	return (void *)(intptr_t)(memcmp(vm_vma_blk_addr(a->f->vma, 2), a->want, BS4K) == 0);
}

/* vm_run_take: the run holds its blocks before any byte came (a backend's
 * one request per block), a fault on one waits for the run, and a run
 * whose blocks are all cached takes none (nothing to fetch). */
static void test_run_taken_before_its_bytes_makes_a_fault_wait(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);
	size_t len = 3 * BS4K;
	unsigned char *s = stream_bytes(len);
	struct stream_read a = { f, s };
	pthread_t tr;
	vm_run *run;
	void *ok;

	assert_int_equal(vm_fileh_prefetch(f->fh, 3), 0); /* cached before */
	assert_int_equal(vm_run_begin(f->fh, 2, 3, &run), 0);
	assert_int_equal(vm_run_take(run), 2);
	assert_int_equal(state(f, 2), VM_PAGE_LOADING);
	assert_int_equal(state(f, 3), VM_PAGE_LOADED);
	assert_int_equal(state(f, 4), VM_PAGE_LOADING);
	pthread_create(&tr, NULL, read_block2_thread, &a);
	wait_faults(f->fh, 1);
	assert_int_equal(f->m->loads[2], 0); /* the fault waits, loads nothing */
	stream_write(run, s, 0, len);
	assert_int_equal(vm_run_end(run, (int64_t)len, NULL), 2);
	pthread_join(tr, &ok);
	assert_int_equal((intptr_t)ok, 1);
	assert_int_equal(f->m->loads[2], 0);
	assert_int_equal(state(f, 4), VM_PAGE_LOADED);
	/* All cached now: a run of them takes nothing. */
	assert_int_equal(vm_run_begin(f->fh, 2, 3, &run), 0);
	assert_int_equal(vm_run_take(run), 0);
	assert_int_equal(vm_run_end(run, -1, NULL), 0);
	assert_int_equal(vm_run_take(NULL), 0);
	free(s);
	fx_close(f);
}

static void test_fault_on_a_block_a_stream_reached_waits_for_the_run(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);
	size_t len = 2 * BS4K;
	unsigned char *s = stream_bytes(len);
	struct stream_read a = { f, s };
	pthread_t tr;
	vm_run *run;
	void *ok;

	assert_int_equal(vm_run_begin(f->fh, 2, 2, &run), 0);
	assert_int_equal(vm_run_write(run, 0, s, 100), 0); /* block 2 reached */
	pthread_create(&tr, NULL, read_block2_thread, &a);
	wait_faults(f->fh, 1);
	assert_int_equal(f->m->loads[2], 0); /* the fault waits, loads nothing */
	stream_write(run, s, 100, len);
	assert_int_equal(vm_run_end(run, (int64_t)len, NULL), 2);
	pthread_join(tr, &ok);
	assert_int_equal((intptr_t)ok, 1);
	assert_int_equal(f->m->loads[2], 0);
	free(s);
	fx_close(f);
}

struct counted {
	struct stream_read *reader;
	volatile int reader_done;  /* the reader got its bytes */
	int done_at_note;          /* reader_done when the run's note ran */
	size_t blocks;
	uint64_t bytes;
};

static void *read_block2_and_note(void *p)
{
	struct counted *c = p;
	void *ok = read_block2_thread(c->reader);
	__atomic_store_n(&c->reader_done, 1, __ATOMIC_SEQ_CST);
	return ok;
}

static void note_cached(void *arg, size_t blocks, uint64_t bytes)
{
	struct counted *c = arg;
	/* A reader woken early would finish meanwhile (on an idle machine:
	 * a loaded one may hide that, never make a false alarm). */
	usleep(100 * 1000);
	c->done_at_note = __atomic_load_n(&c->reader_done, __ATOMIC_SEQ_CST);
	c->blocks = blocks;
	c->bytes = bytes;
}

static void test_a_runs_cached_blocks_are_noted_before_a_waiting_fault_returns(void **unused)
{
	struct fx *f = fx_open(BS4K, 8, 8);
	size_t len = 2 * BS4K - 10;
	unsigned char *s = stream_bytes(len);
	struct stream_read a = { f, s };
	struct counted c = { .reader = &a, .done_at_note = -1 };
	pthread_t tr;
	vm_run *run;
	void *ok;

	assert_int_equal(vm_run_begin(f->fh, 2, 2, &run), 0);
	vm_run_on_cached(run, note_cached, &c);
	assert_int_equal(vm_run_write(run, 0, s, 100), 0); /* block 2 reached */
	pthread_create(&tr, NULL, read_block2_and_note, &c);
	wait_faults(f->fh, 1);
	stream_write(run, s, 100, len);
	assert_int_equal(vm_run_end(run, (int64_t)len, NULL), 2);
	pthread_join(tr, &ok);
	assert_int_equal((intptr_t)ok, 1);
	assert_int_equal(c.done_at_note, 0);
	assert_int_equal(c.blocks, 2);
	assert_int_equal(c.bytes, len);
	free(s);
	fx_close(f);
}

/* ---- fault-around ---------------------------------------------------------- */

/* Loads blocks [blk, blk + n) into the cache without mapping them, as
 * read-ahead does. */
static void prefetch_blocks(struct fx *f, vm_blk_t blk, size_t n)
{
	for (size_t k = 0; k < n; k++)
		assert_int_equal(vm_fileh_prefetch(f->fh, blk + k), 0);
}

static void test_sequential_read_of_cached_blocks_takes_few_faults(void **unused)
{
	const size_t nblk = 64;
	struct fx *f = fx_open(BS4K, nblk, nblk);

	prefetch_blocks(f, 0, nblk);
	for (vm_blk_t b = 0; b < nblk; b++)
		assert_true(*word(f->vma, b, 3) == PATTERN(b, 3));
	struct vm_fileh_stats st = stats(f->fh);
	/* A fault maps the cached blocks after its own, up to a window that
	 * doubles with each fault of the run (1, 2, 4 ...). */
	if (st.faults >= nblk / 4)
		fail_msg("%llu faults for %zu cached blocks read in order",
			 (unsigned long long)st.faults, nblk);
	assert_int_equal(st.faults + st.mapped_around, nblk);
	for (vm_blk_t b = 0; b < nblk; b++) {
		assert_int_equal(f->m->loads[b], 1);
		assert_int_equal(state(f, b), VM_PAGE_LOADED);
	}
	fx_close(f);
}

static void test_blocks_mapped_around_read_their_own_bytes(void **unused)
{
	const size_t nblk = 16;
	struct fx *f = fx_open(BS64K, nblk, nblk);

	prefetch_blocks(f, 0, nblk);
	touch(word(f->vma, 0, 0));
	touch(word(f->vma, 1, 0)); /* sequential: maps block 2 as well */
	assert_int_equal(stats(f->fh).mapped_around, 1);
	assert_true(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 2)));
	uint64_t faults = stats(f->fh).faults;
	/* Every word of it, with no fault of its own. */
	for (size_t i = 0; i < BS64K / 8; i++)
		assert_true(*word(f->vma, 2, i) == PATTERN(2, i));
	assert_int_equal(stats(f->fh).faults, faults);
	fx_close(f);
}

static void test_random_miss_maps_only_its_block(void **unused)
{
	const size_t nblk = 64;
	struct fx *f = fx_open(BS4K, nblk, nblk);
	static const vm_blk_t order[] = { 40, 7, 23, 50, 12 };

	prefetch_blocks(f, 0, nblk);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		vm_blk_t b = order[i];
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
		assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, b + 1)));
		assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, b - 1)));
	}
	/* A run, then a jump: the jump maps its block only. */
	touch(word(f->vma, 30, 0));
	touch(word(f->vma, 31, 0));
	touch(word(f->vma, 33, 0));
	assert_int_equal(stats(f->fh).mapped_around, 1 + 2); /* 32; 34, 35 */
	touch(word(f->vma, 2, 0));
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 3)));
	assert_int_equal(stats(f->fh).mapped_around, 3);
	assert_int_equal(stats(f->fh).faults, 5 + 3 + 1);
	fx_close(f);
}

static void test_fault_around_maps_nothing_a_miss_did_not_find_cached(void **unused)
{
	const size_t nblk = 16;
	struct fx *f = fx_open(BS4K, nblk, nblk);

	/* Nothing cached: every block is its own miss, loaded once. */
	for (vm_blk_t b = 0; b < nblk; b++)
		assert_true(*word(f->vma, b, 0) == PATTERN(b, 0));
	assert_int_equal(stats(f->fh).faults, nblk);
	assert_int_equal(stats(f->fh).mapped_around, 0);
	assert_int_equal(stats(f->fh).loads, nblk);
	assert_int_equal(vm_ram_used(f->ram), nblk * BS4K);
	fx_close(f);
}

static void test_fault_around_keeps_ram_within_budget(void **unused)
{
	const size_t nblk = 64, budget = 12;
	struct fx *f = fx_open(BS4K, nblk, budget);

	/* Read ahead 8 blocks at a time, as read-ahead does, and read in
	 * order: the fault-around never takes RAM of its own. */
	for (vm_blk_t b = 0; b < nblk; b++) {
		if (b % 8 == 0)
			prefetch_blocks(f, b, 8);
		assert_true(*word(f->vma, b, 9) == PATTERN(b, 9));
		assert_true(vm_ram_used(f->ram) <= budget * BS4K);
	}
	struct vm_fileh_stats st = stats(f->fh);
	assert_true(st.mapped_around > nblk / 2);
	assert_int_equal(st.loads, nblk); /* nothing evicted was needed again */
	assert_true(st.ncached <= budget);
	fx_close(f);
}

static void test_fault_around_leaves_a_dirty_block_alone(void **unused)
{
	const size_t nblk = 16;
	struct fx *f = fx_open(BS4K, nblk, nblk);

	prefetch_blocks(f, 0, nblk);
	*word(f->vma, 4, 0) = 4444; /* block 4 DIRTY, mapped read-write */
	assert_int_equal(state(f, 4), VM_PAGE_DIRTY);
	for (vm_blk_t b = 0; b < nblk; b++)
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
	assert_int_equal(*word(f->vma, 4, 0), 4444);
	assert_int_equal(state(f, 4), VM_PAGE_DIRTY);
	/* Still read-write: another write takes no fault. */
	uint64_t faults = stats(f->fh).faults;
	*word(f->vma, 4, 1) = 4445;
	assert_int_equal(stats(f->fh).faults, faults);
	assert_int_equal(stats(f->fh).ndirty, 1);
	/* The run stopped at it and went on after it. */
	assert_true(stats(f->fh).mapped_around > 0);
	assert_int_equal(stats(f->fh).faults + stats(f->fh).mapped_around, nblk);
	fx_close(f);
}

static void test_fault_around_stops_at_a_block_being_loaded(void **unused)
{
	const size_t nblk = 16;
	struct fx *f = fx_open(BS4K, nblk, nblk);
	pthread_t tp;
	void *rc;

	prefetch_blocks(f, 0, 5);
	prefetch_blocks(f, 6, nblk - 6);
	f->m->hold_blk = 5;
	pthread_create(&tp, NULL, prefetch_thread_5, f);
	memfile_wait_held(f->m);
	assert_int_equal(state(f, 5), VM_PAGE_LOADING);
	touch(word(f->vma, 0, 0));
	touch(word(f->vma, 1, 0)); /* maps 2 */
	touch(word(f->vma, 3, 0)); /* a window of 2: maps 4, not 5 */
	assert_int_equal(stats(f->fh).mapped_around, 2);
	assert_true(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 4)));
	assert_int_equal(state(f, 5), VM_PAGE_LOADING);
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 5)));
	assert_false(block_mapped(f->fh, vm_vma_blk_addr(f->vma, 6)));
	memfile_release_held(f->m);
	pthread_join(tp, &rc);
	assert_int_equal((intptr_t)rc, 0);
	for (vm_blk_t b = 0; b < nblk; b++)
		assert_true(*word(f->vma, b, 2) == PATTERN(b, 2));
	assert_int_equal(f->m->loads[5], 1);
	fx_close(f);
}

static void around_record(vm_bigfile *f, vm_blk_t blk, size_t n)
{
	(void)f;
	if (nseen < 16) {
		seen_blk[nseen] = blk;
		seen_write[nseen++] = -(int)n;
	}
}

static void test_backend_is_told_of_blocks_mapped_around(void **unused)
{
	static const vm_bigfile_ops ops = {
		.loadblk = memfile_loadblk, .storeblk = memfile_storeblk,
		.release = memfile_release, .on_fault = record_fault,
		.on_fault_around = around_record };
	struct fx *f = fx_open(BS4K, 8, 8);

	f->m->file.ops = &ops;
	nseen = 0;
	prefetch_blocks(f, 0, 8);
	for (vm_blk_t b = 0; b < 8; b++)
		touch(word(f->vma, b, 0));
	backend_sync(f->fh);
	/* Faults on 0, 1, 3; around them 2 (one block) and 4-5 (two); then
	 * 6 faults and maps 7. */
	static const vm_blk_t want_blk[] = { 0, 1, 2, 3, 4, 6, 7 };
	static const int want_kind[] = { 0, 0, -1, 0, -2, 0, -1 };
	assert_int_equal(nseen, 7);
	for (int i = 0; i < 7; i++) {
		assert_int_equal(seen_blk[i], want_blk[i]);
		assert_int_equal(seen_write[i], want_kind[i]);
	}
	fx_close(f);
}

/* ---- block sizes ------------------------------------------------------------ */

static void roundtrip_blksize(size_t bs)
{
	const size_t nblk = 6;
	struct fx *f = fx_open(bs, nblk, nblk);

	/* Touch every 4 KiB page of every block: one fault per block. */
	for (vm_blk_t b = 0; b < nblk; b++)
		for (size_t off = 0; off < bs; off += 4096)
			assert_true(*word(f->vma, b, off / 8) == PATTERN(b, off / 8));
	assert_int_equal(stats(f->fh).faults, nblk);
	for (vm_blk_t b = 0; b < nblk; b++)
		assert_int_equal(f->m->loads[b], 1);
	/* Write the last word of two blocks, write out, read back in a new
	 * handle. */
	*word(f->vma, 1, bs / 8 - 1) = 0xabc;
	*word(f->vma, 4, bs / 8 - 1) = 0xdef;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(f->m->nstore, 2);
	vm_vma_unmap(f->vma);
	vm_fileh_close(f->fh);
	assert_int_equal(vm_fileh_open(&f->fh, &f->m->file, f->ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&f->vma, f->fh, 0, nblk), 0);
	assert_int_equal(*word(f->vma, 1, bs / 8 - 1), 0xabc);
	assert_int_equal(*word(f->vma, 4, bs / 8 - 1), 0xdef);
	fx_close(f);
}

static void test_blksize_4k(void **unused) { roundtrip_blksize(BS4K); }
static void test_blksize_64k(void **unused) { roundtrip_blksize(BS64K); }
static void test_blksize_2m(void **unused) { roundtrip_blksize(BS2M); }

static void test_bad_block_sizes_are_refused(void **unused)
{
	size_t bad[] = { 0, 512, 3 * 4096, (size_t)128 << 20 };
	vm_ram *ram;
	vm_fileh *fh;

	assert_int_equal(vm_ram_open(&ram, 1 << 20), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vm_bigfile file = { .ops = &memfile_ops, .blksize = bad[i] };
		assert_int_equal(vm_fileh_open(&fh, &file, ram, 0), -EINVAL);
		assert_null(fh);
	}
	vm_bigfile file = { .ops = &memfile_ops, .blksize = 4096 };
	assert_int_equal(vm_fileh_open(&fh, &file, ram, VM_MMAP_OVERLAY), -EINVAL);
	assert_int_equal(vm_fileh_open(&fh, &file, ram, VM_MMAP_OVERLAY | VM_DONT_MMAP_OVERLAY), -EINVAL);
	assert_int_equal(vm_ram_close(ram), 0);
	assert_int_equal(vm_ram_open(&ram, 100), -EINVAL);
}

static void test_release_runs_when_last_handle_closes(void **unused)
{
	struct memfile *m = memfile_new(BS4K, 2, 0);
	vm_ram *ram;
	vm_fileh *a, *b;

	assert_int_equal(vm_ram_open(&ram, 1 << 20), 0);
	assert_int_equal(vm_fileh_open(&a, &m->file, ram, 0), 0);
	assert_int_equal(vm_fileh_open(&b, &m->file, ram, 0), 0);
	vm_fileh_close(a);
	assert_int_equal(m->released_file, 0);
	vm_fileh_close(b);
	assert_int_equal(m->released_file, 1);
	assert_int_equal(vm_ram_close(ram), 0);
	memfile_free(m);
}

static void test_close_gives_all_ram_back(void **unused)
{
	struct fx *f = fx_open(BS64K, 8, 8);
	vm_vma *extra;

	assert_int_equal(vm_fileh_mmap(&extra, f->fh, 2, 2), 0);
	touch(word(f->vma, 0, 0));
	*word(extra, 3, 0) = 1;
	assert_int_equal(vm_ram_used(f->ram), 2 * BS64K);
	vm_vma_unmap(f->vma);
	vm_fileh_close(f->fh); /* also unmaps `extra` */
	assert_int_equal(vm_ram_used(f->ram), 0);
	assert_int_equal(vm_ram_close(f->ram), 0);
	memfile_free(f->m);
	free(f);
}

/* ---- loadblk through vm_loadblk_write / vm_loadblk_zero ----------------------- */

/* A backend that writes its buffer only through vm_loadblk_write (in odd-
 * sized pieces, as an HTTP body arrives) and vm_loadblk_zero: bytes of a
 * block from zero_from[blk] on read as zeros; zero_from 0 is a hole (nothing
 * written at all). */
static size_t zero_from[8];
static bool write_all_first; /* write the whole block, then zero */

static int writes_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	struct memfile *m = (struct memfile *)f;
	size_t bs = f->blksize, end = write_all_first ? bs : zero_from[blk];
	const unsigned char *src = (const unsigned char *)memfile_blk(m, blk);

	atomic_fetch_add(&m->loads[blk], 1);
	for (size_t off = 0; off < end; off += 5000) {
		size_t n = end - off < 5000 ? end - off : 5000;
		if (vm_loadblk_write(buf, off, src + off, n) < 0)
			return -EIO;
	}
	if (zero_from[blk] < bs && vm_loadblk_zero(buf, zero_from[blk], bs - zero_from[blk]) < 0)
		return -EIO;
	return 0;
}

static const vm_bigfile_ops writes_ops = {
	.loadblk = writes_loadblk,
	.storeblk = memfile_storeblk,
	.flags = VM_OPS_LOADBLK_WRITES,
};

/* Whether block blk reads through vma as the memfile's bytes below
 * zero_from[blk] and zeros from there on. */
static bool block_reads_right(vm_vma *vma, struct memfile *m, vm_blk_t blk)
{
	size_t bs = m->file.blksize;
	const unsigned char *p = vm_vma_blk_addr(vma, blk);
	const unsigned char *want = (const unsigned char *)memfile_blk(m, blk);

	for (size_t i = 0; i < bs; i++)
		if (((const volatile unsigned char *)p)[i] != (i < zero_from[blk] ? want[i] : 0))
			return false;
	return true;
}

/* Six blocks through a two-block budget, three rounds: fresh slots, then
 * recycled slots filled with pwrite before, then recycled slots written
 * through the pointer before.  Every block reads exactly. */
static void check_writes_backend(size_t bs, bool all_first)
{
	struct fx *f = fx_open(bs, 6, 2);

	backend_sync(f->fh);
	f->m->file.ops = &writes_ops;
	write_all_first = all_first;
	for (vm_blk_t b = 0; b < 6; b++)
		zero_from[b] = bs;
	zero_from[1] = 0;              /* a hole */
	zero_from[2] = bs / 2 + 100;   /* a short last block */
	zero_from[4] = 4096 + 8;       /* all but a page and a bit zero */
	backend_sync(f->fh);
	for (int round = 0; round < 3; round++)
		for (vm_blk_t b = 0; b < 6; b++)
			assert_true(block_reads_right(f->vma, f->m, b));
	assert_int_equal(f->m->loads[0], 3);
	assert_true(vm_ram_used(f->ram) <= 2 * bs);
	fx_close(f);
}

static void test_loadblk_write_fills_fresh_and_recycled_slots(void **unused)
{
	check_writes_backend(BS64K, false);
	check_writes_backend(BS2M, false);
}

static void test_loadblk_zero_clears_bytes_the_load_wrote(void **unused)
{
	/* The whole block is written first: zeroing must not count on fresh
	 * memory reading as zeros there. */
	check_writes_backend(BS64K, true);
	check_writes_backend(BS2M, true);
}

static void test_hole_in_recycled_slot_reads_zeros(void **unused)
{
	struct fx *f = fx_open(BS64K, 2, 1);

	backend_sync(f->fh);
	f->m->file.ops = &writes_ops;
	write_all_first = false;
	zero_from[0] = BS64K;
	zero_from[1] = 0;
	backend_sync(f->fh);
	assert_true(block_reads_right(f->vma, f->m, 0));
	/* Block 1 takes block 0's slot, full of block 0's bytes. */
	assert_true(block_reads_right(f->vma, f->m, 1));
	assert_int_equal(stats(f->fh).reclaimed, 1);
	fx_close(f);
}

static void test_loadblk_write_outside_a_load_copies(void **unused)
{
	unsigned char buf[10000], src[6000];

	memset(buf, 0x11, sizeof(buf));
	memset(src, 0x22, sizeof(src));
	assert_int_equal(vm_loadblk_write(buf, 1000, src, sizeof(src)), 0);
	assert_int_equal(vm_loadblk_zero(buf, 7000, 500), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], i < 1000 ? 0x11 : i < 7000 ? 0x22 : i < 7500 ? 0 : 0x11);
}

/* ---- spare slots ------------------------------------------------------------------ */

/* Waits (up to 10 s) for the spare thread to have want bytes ready. */
static void wait_spares(vm_ram *ram, size_t want)
{
	for (int i = 0; i < 10000 && vm_ram_spare(ram) != want; i++)
		usleep(1000);
	assert_int_equal(vm_ram_spare(ram), want);
}

static void test_loads_take_spare_slots_and_spares_are_refilled(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	struct fx *f = fx_open(BS64K, 8, 16);

	assert_int_equal(vm_ram_keep_spare(f->ram, BS64K, 2), 0);
	wait_spares(f->ram, 2 * BS64K);
	assert_true(*word(f->vma, 3, 5) == PATTERN(3, 5));
	assert_int_equal(stats(f->fh).spares_taken, 1);
	assert_int_equal(vm_ram_used(f->ram), BS64K);
	wait_spares(f->ram, 2 * BS64K);
	/* A spare is zeroed memory: a backend writing part of a block and
	 * zeroing the rest, or nothing (a hole), reads right from it. */
	backend_sync(f->fh);
	f->m->file.ops = &writes_ops;
	write_all_first = true;
	for (vm_blk_t b = 0; b < 8; b++)
		zero_from[b] = BS64K;
	zero_from[4] = 0;
	zero_from[5] = 1000;
	backend_sync(f->fh);
	assert_true(block_reads_right(f->vma, f->m, 4));
	wait_spares(f->ram, 2 * BS64K);
	assert_true(block_reads_right(f->vma, f->m, 5));
	assert_int_equal(stats(f->fh).spares_taken, 3);
	fx_close(f);
}

static void test_spares_never_push_out_cached_blocks(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	struct fx *f = fx_open(BS64K, 8, 4);

	assert_int_equal(vm_ram_keep_spare(f->ram, BS64K, 1), 0);
	wait_spares(f->ram, BS64K);
	/* Four blocks fill the budget: the first takes the spare, and no
	 * new spare may take the room of a block. */
	for (vm_blk_t b = 0; b < 4; b++)
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
	assert_int_equal(stats(f->fh).reclaimed, 0);
	assert_int_equal(stats(f->fh).ncached, 4);
	assert_int_equal(vm_ram_used(f->ram), 4 * BS64K);
	assert_int_equal(vm_ram_spare(f->ram), 0);
	fx_close(f);
}

/* Ready spares that a load cannot use (another size) are given back when
 * the budget is full, before any cached block is reclaimed. */
static void test_spares_are_given_back_before_reclaim(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	struct fx *f = fx_open(BS64K, 8, 8);

	/* Two 128 KiB spares take half of the 8-block budget. */
	assert_int_equal(vm_ram_keep_spare(f->ram, 2 * BS64K, 2), 0);
	wait_spares(f->ram, 4 * BS64K);
	for (vm_blk_t b = 0; b < 4; b++)
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
	assert_int_equal(vm_ram_spare(f->ram), 4 * BS64K);
	/* The budget is full: each further block needs a spare given back. */
	for (vm_blk_t b = 4; b < 8; b++)
		assert_true(*word(f->vma, b, 1) == PATTERN(b, 1));
	assert_int_equal(stats(f->fh).reclaimed, 0);
	assert_int_equal(stats(f->fh).spares_taken, 0);
	assert_int_equal(vm_ram_used(f->ram), 8 * BS64K);
	assert_int_equal(vm_ram_spare(f->ram), 0);
	for (vm_blk_t b = 0; b < 8; b++)
		assert_int_equal(state(f, b), VM_PAGE_LOADED);
	fx_close(f);
}

/* Waits (up to 10 s) until the spare thread is filling a slot of size. */
static void wait_filling(vm_ram *ram, size_t size)
{
	for (int i = 0; i < 10000 && vm_ram_spare_filling(ram) != size; i++)
		usleep(1000);
	assert_int_equal(vm_ram_spare_filling(ram), size);
}

/* A load that finds the budget full while the spare thread is filling a
 * slot takes that slot over instead of reclaiming a cached block.  The
 * thread pauses 200 ms after each 128 KiB step, so it is still filling the
 * 2 MiB slot when the fourth block needs room. */
static void test_load_takes_over_the_spare_being_filled(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	setenv("VIRTMEM_TEST_SPARE_PAUSE_US", "200000", 1);
	struct fx *f = fx_open(BS2M, 4, 4);

	assert_int_equal(vm_ram_keep_spare(f->ram, BS2M, 1), 0);
	unsetenv("VIRTMEM_TEST_SPARE_PAUSE_US"); /* read when the thread is made */
	wait_filling(f->ram, BS2M);
	/* Budget: 3 blocks + the spare fill it; the fourth needs its room. */
	for (vm_blk_t b = 0; b < 4; b++)
		assert_true(*word(f->vma, b, BS2M / 8 - 1) == PATTERN(b, BS2M / 8 - 1));
	assert_int_equal(stats(f->fh).spares_taken, 1);
	assert_int_equal(stats(f->fh).reclaimed, 0);
	assert_int_equal(vm_ram_used(f->ram), 4 * BS2M);
	assert_int_equal(vm_ram_spare_filling(f->ram), 0);
	for (vm_blk_t b = 0; b < 4; b++)
		assert_true(*word(f->vma, b, 7) == PATTERN(b, 7));
	fx_close(f);
}

/* The slot being filled is of the old size after the spare size changed:
 * a load of the new size must not take it over. */
static void test_load_never_takes_over_a_spare_of_another_size(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	setenv("VIRTMEM_TEST_SPARE_PAUSE_US", "200000", 1);
	struct fx *f = fx_open(BS64K, 8, 8);

	assert_int_equal(vm_ram_keep_spare(f->ram, 2 * BS64K, 1), 0);
	unsetenv("VIRTMEM_TEST_SPARE_PAUSE_US");
	wait_filling(f->ram, 2 * BS64K);
	assert_int_equal(vm_ram_keep_spare(f->ram, BS64K, 1), 0);
	/* 6 blocks + the 128 KiB being filled fill the budget. */
	for (vm_blk_t b = 0; b < 7; b++)
		assert_true(*word(f->vma, b, 3) == PATTERN(b, 3));
	assert_int_equal(stats(f->fh).spares_taken, 0);
	assert_int_equal(stats(f->fh).reclaimed, 1);
	for (vm_blk_t b = 1; b < 7; b++)
		assert_true(*word(f->vma, b, BS64K / 8 - 1) == PATTERN(b, BS64K / 8 - 1));
	assert_true(vm_ram_used(f->ram) <= 6 * BS64K);
	fx_close(f);
}

static void test_spares_are_refilled_when_memory_is_given_back(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	struct fx *f = fx_open(BS64K, 4, 4);

	assert_int_equal(vm_ram_keep_spare(f->ram, BS64K, 1), 0);
	wait_spares(f->ram, BS64K);
	for (vm_blk_t b = 0; b < 4; b++)
		touch(word(f->vma, b, 0));
	assert_int_equal(vm_ram_spare(f->ram), 0); /* no room left */
	for (vm_blk_t b = 0; b < 4; b++)
		assert_int_equal(vm_fileh_invalidate_page(f->fh, b), 0);
	wait_spares(f->ram, BS64K);
	fx_close(f);
}

static void test_spares_of_another_size_are_not_used(void **unused)
{
	if (test_engine_uffd())
		skip(); /* spare slots are the pool's; uffd pages live in the file's memfd */
	struct fx *f = fx_open(BS64K, 4, 16);

	assert_int_equal(vm_ram_keep_spare(f->ram, 2 * BS64K, 1), 0);
	wait_spares(f->ram, 2 * BS64K);
	assert_true(*word(f->vma, 1, 1) == PATTERN(1, 1));
	assert_int_equal(stats(f->fh).spares_taken, 0);
	/* Stopping gives them back. */
	assert_int_equal(vm_ram_keep_spare(f->ram, 0, 0), 0);
	assert_int_equal(vm_ram_spare(f->ram), 0);
	assert_int_equal(vm_ram_keep_spare(f->ram, 3 * BS64K, 1), -EINVAL);
	assert_int_equal(vm_ram_keep_spare(f->ram, 1024, 1), -EINVAL);
	fx_close(f);
}

/* ---- system calls and kernel mappings (uffd engine) ---------------------------- */

/* The kernel waits for the block to load when a system call reads or
 * writes unloaded memory.  (The SIGSEGV engine, and uffd serving faults of
 * user mode only, give EFAULT instead: the test is for full uffd.) */
static bool syscalls_served(vm_fileh *fh)
{
	struct vm_fileh_stats st = stats(fh);
	return strcmp(st.engine, "uffd") == 0;
}

static void test_write_from_unloaded_mapping_succeeds(void **unused)
{
	struct fx *f = fx_open(BS64K, 4, 4);
	int fds[2];
	uint64_t got[2];

	if (!syscalls_served(f->fh)) {
		fx_close(f);
		skip();
	}
	assert_int_equal(state(f, 2), VM_PAGE_EMPTY);
	assert_int_equal(pipe(fds), 0);
	/* write(2) reads blocks 2 and 3 across their boundary. */
	const char *p = (const char *)vm_vma_blk_addr(f->vma, 3) - 8;
	assert_int_equal(write(fds[1], p, 16), 16);
	assert_int_equal(read(fds[0], got, 16), 16);
	assert_true(got[0] == PATTERN(2, BS64K / 8 - 1));
	assert_true(got[1] == PATTERN(3, 0));
	assert_int_equal(state(f, 2), VM_PAGE_LOADED);
	assert_int_equal(state(f, 3), VM_PAGE_LOADED);
	close(fds[0]);
	close(fds[1]);
	fx_close(f);
}

static void test_read_into_unloaded_mapping_makes_it_dirty(void **unused)
{
	struct fx *f = fx_open(BS4K, 4, 4);
	int fds[2];

	if (!syscalls_served(f->fh)) {
		fx_close(f);
		skip();
	}
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "virtmem!", 8), 8);
	assert_int_equal(read(fds[0], word(f->vma, 1, 3), 8), 8);
	assert_int_equal(state(f, 1), VM_PAGE_DIRTY);
	assert_memory_equal(word(f->vma, 1, 3), "virtmem!", 8);
	assert_true(*word(f->vma, 1, 2) == PATTERN(1, 2));
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_memory_equal(&memfile_blk(f->m, 1)[3], "virtmem!", 8);
	close(fds[0]);
	close(fds[1]);
	fx_close(f);
}

/* A file of blocks that reads as PATTERN without a disk behind it. */
static int pattern_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	fill_pattern(buf, blk, f->blksize);
	return 0;
}

#define NRANDOM 70000

/* 70,000 random 4 KiB blocks of one mapping, read through a 16 MiB budget:
 * each reads right, and the mapping stays one kernel mapping (the SIGSEGV
 * engine maps each cached block apart and would need thousands).  70,000
 * blocks are more than vm.max_map_count (65530); the 200,000 of
 * bench_pagefault's scale run took 4 s of make check. */
static void test_70000_random_blocks_use_one_kernel_mapping(void **unused)
{
	static const vm_bigfile_ops ops = { .loadblk = pattern_loadblk };
	const size_t nblk = 4 * NRANDOM;
	vm_bigfile file = { .ops = &ops, .blksize = BS4K };
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	uint64_t x = 88172645463325252ull; /* xorshift64 */
	int most = 0;

	assert_int_equal(vm_ram_open(&ram, (size_t)16 << 20), 0);
	assert_int_equal(vm_fileh_open(&fh, &file, ram, 0), 0);
	if (!fh_uffd(fh)) {
		vm_fileh_close(fh);
		vm_ram_close(ram);
		skip();
	}
	assert_int_equal(vm_fileh_mmap(&vma, fh, 0, nblk), 0);
	for (int i = 0; i < NRANDOM; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		vm_blk_t blk = x % nblk;
		size_t w = (size_t)(x >> 40) % (BS4K / 8);
		if (*word(vma, blk, w) != PATTERN(blk, w))
			fail_msg("block %llu word %zu reads wrong", (unsigned long long)blk, w);
		if (i % 7000 == 0) {
			int n = kernel_mappings_in(vm_vma_addr(vma), vm_vma_len(vma));
			if (n > most)
				most = n;
		}
	}
	int n = kernel_mappings_in(vm_vma_addr(vma), vm_vma_len(vma));
	if (n > most)
		most = n;
	/* One kernel mapping for the whole mapping, whatever is loaded. */
	assert_int_equal(most, 1);
	assert_true(stats(fh).loads >= NRANDOM / 2);
	assert_true(vm_ram_used(ram) <= (size_t)16 << 20);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	assert_int_equal(vm_ram_close(ram), 0);
}

/* Open descriptors of the process. */
static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* RssShmem of the process in KiB (/proc/self/status). */
static long rss_shmem_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "RssShmem: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* A fixture of nblk 64 KiB blocks whose handle runs under the uffd
 * engine (the test skips under another). */
static struct fx *uffd_fx(size_t nblk)
{
	struct fx *f = fx_open(BS64K, nblk, nblk);

	if (!fh_uffd(f->fh)) {
		fx_close(f);
		skip();
	}
	return f;
}

/* Under uffd each cached byte is mapped once: reading every block of a
 * mapping through a full budget adds the budget to the resident shared
 * memory, not twice the budget (the pool's view and the mapping, as the
 * SIGSEGV engine with a backend that writes through the pointer does). */
static void test_cached_bytes_are_resident_once(void **unused)
{
	const size_t nblk = 64;
	struct fx *f = uffd_fx(nblk);

	vm_release_wait(); /* earlier tests' memory is not this one's */
	long before = rss_shmem_kib();
	for (vm_blk_t b = 0; b < nblk; b++)
		for (size_t off = 0; off < BS64K; off += 4096)
			assert_true(*word(f->vma, b, off / 8) == PATTERN(b, off / 8));
	assert_int_equal(vm_ram_used(f->ram), nblk * BS64K);
	long grown = rss_shmem_kib() - before;
	/* The budget (4 MiB), give or take what else the process maps. */
	assert_in_range(grown, (long)(nblk * BS64K / 1024) - 256, (long)(nblk * BS64K / 1024) + 256);
	fx_close(f);
}

/* Unmapping and closing leave the freeing of the memory to libvirtmem's
 * release thread: on return the address range is free and the handle's
 * descriptor closed, but the pages (held here by
 * VIRTMEM_TEST_RELEASE_HOLD) are still resident; vm_release_wait gives
 * them back. */
static void test_unmap_and_close_free_the_memory_off_the_callers_thread(void **unused)
{
	const size_t nblk = 512; /* 32 MiB: more than RELEASE_MIN */
	int fds0 = count_fds();
	struct fx *f = uffd_fx(nblk);

	vm_release_wait(); /* earlier tests' memory is not this one's */
	long before = rss_shmem_kib();
	for (vm_blk_t b = 0; b < nblk; b++)
		for (size_t off = 0; off < BS64K; off += 4096)
			touch(word(f->vma, b, off / 8));
	long full = (long)(nblk * BS64K / 1024);
	assert_true(rss_shmem_kib() - before >= full - 256);
	char *p = vm_vma_addr(f->vma);
	unsigned char v;
	setenv("VIRTMEM_TEST_RELEASE_HOLD", "1", 1);
	vm_vma_unmap(f->vma);
	/* The range is free at once (mincore: ENOMEM, nothing mapped). */
	assert_int_equal(mincore(p, 4096, &v), -1);
	assert_int_equal(errno, ENOMEM);
	vm_fileh_close(f->fh);
	assert_int_equal(vm_ram_close(f->ram), 0);
	unsetenv("VIRTMEM_TEST_RELEASE_HOLD");
	memfile_free(f->m);
	free(f);
	assert_int_equal(count_fds(), fds0);
	/* Still resident: the caller did not free them. */
	assert_true(rss_shmem_kib() - before >= full - 256);
	vm_release_wait();
	assert_true(rss_shmem_kib() - before <= 256);
}

/* Lines of /proc/self/maps naming a handle's memfd (uffd engine). */
static int memfd_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f) != NULL)
		n += strstr(line, "virtmem-file-") != NULL;
	fclose(f);
	return n;
}

/* Closing a uffd handle closes its memfd's descriptor at once, but the
 * last reference to its pages (one page of it mapped, no access) is the
 * release thread's, which frees them (held here by
 * VIRTMEM_TEST_RELEASE_HOLD until vm_release_wait). */
static void test_a_closed_handles_memfd_pages_are_freed_by_the_release_thread(void **unused)
{
	const size_t nblk = 512; /* 32 MiB: more than RELEASE_MIN */
	struct fx *f = uffd_fx(nblk);

	for (vm_blk_t b = 0; b < nblk; b++)
		touch(word(f->vma, b, 0));
	vm_vma_unmap(f->vma);
	vm_release_wait();
	assert_int_equal(memfd_maps(), 0);
	int fds = count_fds();
	setenv("VIRTMEM_TEST_RELEASE_HOLD", "1", 1);
	vm_fileh_close(f->fh);
	unsetenv("VIRTMEM_TEST_RELEASE_HOLD");
	assert_int_equal(count_fds(), fds - 1);
	assert_int_equal(memfd_maps(), 1);
	vm_release_wait();
	assert_int_equal(memfd_maps(), 0);
	assert_int_equal(vm_ram_close(f->ram), 0);
	memfile_free(f->m);
	free(f);
}

/* A child after fork has its parent's queue of ranges but no release
 * thread: it unmaps them itself (alarm: a hang fails the test). */
static void child_waits_for_its_release(void *arg)
{
	(void)arg;
	alarm(30);
	vm_release_wait();
	_exit(memfd_maps() == 0 ? 0 : 3);
}

static void test_a_child_after_fork_unmaps_what_its_parent_had_queued(void **unused)
{
	const size_t nblk = 512; /* 32 MiB: more than RELEASE_MIN */
	struct fx *f = uffd_fx(nblk);

	for (vm_blk_t b = 0; b < nblk; b++)
		touch(word(f->vma, b, 0));
	setenv("VIRTMEM_TEST_RELEASE_HOLD", "1", 1);
	vm_vma_unmap(f->vma); /* queued, held: the thread waits, idle */
	unsetenv("VIRTMEM_TEST_RELEASE_HOLD");
	assert_int_equal(memfd_maps(), 1);
	int status = run_in_child(child_waits_for_its_release, NULL);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	vm_release_wait();
	assert_int_equal(memfd_maps(), 0);
	vm_fileh_close(f->fh);
	vm_release_wait();
	assert_int_equal(vm_ram_close(f->ram), 0);
	memfile_free(f->m);
	free(f);
}

static void test_page_state_names(void **unused)
{
	assert_string_equal(vm_page_state_name(VM_PAGE_LOADING_INVALIDATED), "LOADING_INVALIDATED");
	assert_string_equal(vm_page_state_name(VM_PAGE_DIRTY), "DIRTY");
	assert_string_equal(vm_strerror(-ENOMEM), strerror(ENOMEM));
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_explicit_read_fault_loads_block_readonly),
		cmocka_unit_test(test_explicit_write_fault_makes_page_dirty),
		cmocka_unit_test(test_fault_outside_mapping_is_refused),
		cmocka_unit_test(test_failed_load_leaves_page_empty_and_is_retried),
		cmocka_unit_test(test_reading_every_word_loads_each_block_once),
		cmocka_unit_test(test_write_after_read_dirties_without_reload),
		cmocka_unit_test(test_write_to_empty_page_loads_it_first),
		cmocka_unit_test(test_overlapping_mappings_share_pages),
		cmocka_unit_test(test_new_mapping_shows_dirty_pages),
		cmocka_unit_test(test_unmap_keeps_dirty_pages),
		cmocka_unit_test(test_mapping_needs_blocks),
		cmocka_unit_test(test_reclaim_keeps_ram_within_budget),
		cmocka_unit_test(test_reclaim_takes_least_recently_faulted_page),
		cmocka_unit_test(test_dirty_pages_are_never_reclaimed),
		cmocka_unit_test(test_pool_reclaims_across_handles),
		cmocka_unit_test(test_block_larger_than_budget_fails_without_reclaim),
		cmocka_unit_test(test_writeout_stores_in_ascending_block_order),
		cmocka_unit_test(test_writeout_error_leaves_every_page_dirty),
		cmocka_unit_test(test_failed_store_marks_earlier_pages_not_stored),
		cmocka_unit_test(test_markstored_keeps_pages_written_after_store),
		cmocka_unit_test(test_write_during_store_is_not_lost),
		cmocka_unit_test(test_writeout_refuses_bad_flags),
		cmocka_unit_test(test_discard_drops_dirty_pages),
		cmocka_unit_test(test_invalidate_drops_clean_page),
		cmocka_unit_test(test_invalidate_refuses_dirty_page),
		cmocka_unit_test(test_clean_page_written_is_kept_by_invalidate_and_reclaim),
		cmocka_unit_test(test_invalidate_while_loading_reloads),
		cmocka_unit_test(test_readonly_handle_refuses_writes),
		cmocka_unit_test(test_on_fault_sees_every_fault_cached_or_not),
		cmocka_unit_test(test_prefetch_loads_without_mapping),
		cmocka_unit_test(test_fault_waits_for_a_prefetch_in_progress),
		cmocka_unit_test(test_prefetch_run_loads_each_block_once),
		cmocka_unit_test(test_fault_on_a_block_of_a_run_waits_for_the_run),
		cmocka_unit_test(test_prefetch_run_takes_only_the_ram_the_budget_has),
		cmocka_unit_test(test_failed_load_in_a_run_leaves_the_rest_empty),
		cmocka_unit_test(test_streamed_run_caches_the_blocks_it_reaches_with_the_streams_bytes),
		cmocka_unit_test(test_streamed_run_refuses_bytes_outside_it),
		cmocka_unit_test(test_failed_streamed_run_leaves_its_blocks_empty),
		cmocka_unit_test(test_streamed_run_takes_only_the_ram_the_budget_has),
		cmocka_unit_test(test_fault_on_a_block_a_stream_reached_waits_for_the_run),
		cmocka_unit_test(test_run_taken_before_its_bytes_makes_a_fault_wait),
		cmocka_unit_test(test_a_runs_cached_blocks_are_noted_before_a_waiting_fault_returns),
		cmocka_unit_test(test_sequential_read_of_cached_blocks_takes_few_faults),
		cmocka_unit_test(test_blocks_mapped_around_read_their_own_bytes),
		cmocka_unit_test(test_random_miss_maps_only_its_block),
		cmocka_unit_test(test_fault_around_maps_nothing_a_miss_did_not_find_cached),
		cmocka_unit_test(test_fault_around_keeps_ram_within_budget),
		cmocka_unit_test(test_fault_around_leaves_a_dirty_block_alone),
		cmocka_unit_test(test_fault_around_stops_at_a_block_being_loaded),
		cmocka_unit_test(test_backend_is_told_of_blocks_mapped_around),
		cmocka_unit_test(test_blksize_4k),
		cmocka_unit_test(test_blksize_64k),
		cmocka_unit_test(test_blksize_2m),
		cmocka_unit_test(test_bad_block_sizes_are_refused),
		cmocka_unit_test(test_release_runs_when_last_handle_closes),
		cmocka_unit_test(test_close_gives_all_ram_back),
		cmocka_unit_test(test_loadblk_write_fills_fresh_and_recycled_slots),
		cmocka_unit_test(test_loadblk_zero_clears_bytes_the_load_wrote),
		cmocka_unit_test(test_hole_in_recycled_slot_reads_zeros),
		cmocka_unit_test(test_loadblk_write_outside_a_load_copies),
		cmocka_unit_test(test_loads_take_spare_slots_and_spares_are_refilled),
		cmocka_unit_test(test_spares_never_push_out_cached_blocks),
		cmocka_unit_test(test_spares_are_given_back_before_reclaim),
		cmocka_unit_test(test_load_takes_over_the_spare_being_filled),
		cmocka_unit_test(test_load_never_takes_over_a_spare_of_another_size),
		cmocka_unit_test(test_spares_are_refilled_when_memory_is_given_back),
		cmocka_unit_test(test_spares_of_another_size_are_not_used),
		cmocka_unit_test(test_write_from_unloaded_mapping_succeeds),
		cmocka_unit_test(test_read_into_unloaded_mapping_makes_it_dirty),
		cmocka_unit_test(test_cached_bytes_are_resident_once),
		cmocka_unit_test(test_unmap_and_close_free_the_memory_off_the_callers_thread),
		cmocka_unit_test(test_a_closed_handles_memfd_pages_are_freed_by_the_release_thread),
		cmocka_unit_test(test_a_child_after_fork_unmaps_what_its_parent_had_queued),
		cmocka_unit_test(test_70000_random_blocks_use_one_kernel_mapping),
		cmocka_unit_test(test_page_state_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
