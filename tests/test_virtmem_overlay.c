/* test_virtmem_overlay.c — mmap-overlay mode with a local-file backend: reads
 * come from the base mapping with no RAM and no faults, a write makes a dirty
 * page in every mapping, new mappings see dirty pages, writeout and discard
 * map the base again, invalidation is refused.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vmfixture.h"

#define BS (64 << 10)
#define NBLK 8

static struct fx *fx_open(void)
{
	struct fx *f = fx_open_file(BS, NBLK, NBLK, 1);
	assert_int_equal(f->m->nsetup, 1);
	return f;
}

static void test_overlay_is_chosen_by_flags(void **unused)
{
	struct memfile *with = memfile_new(BS, 1, 1), *without = memfile_new(BS, 1, 0);
	vm_ram *ram;
	vm_fileh *fh;
	assert_int_equal(vm_ram_open(&ram, BS), 0);
	assert_int_equal(vm_fileh_open(&fh, &with->file, ram, VM_DONT_MMAP_OVERLAY), 0);
	assert_false(vm_fileh_is_overlay(fh));
	vm_fileh_close(fh);
	assert_int_equal(vm_fileh_open(&fh, &with->file, ram, VM_MMAP_OVERLAY), 0);
	assert_true(vm_fileh_is_overlay(fh));
	vm_fileh_close(fh);
	assert_int_equal(vm_fileh_open(&fh, &without->file, ram, 0), 0);
	assert_false(vm_fileh_is_overlay(fh));
	vm_fileh_close(fh);
	assert_int_equal(vm_fileh_open(&fh, &without->file, ram, VM_MMAP_OVERLAY), -EINVAL);
	vm_ram_close(ram);
	memfile_free(with);
	memfile_free(without);
}

static void test_overlay_reads_come_from_base_without_ram(void **unused)
{
	struct fx *f = fx_open();
	for (vm_blk_t b = 0; b < NBLK; b++)
		for (size_t i = 0; i < BS / 8; i += 64)
			assert_true(*word(f->vma, b, i) == PATTERN(b, i));
	assert_int_equal(vm_ram_used(f->ram), 0);
	assert_int_equal(stats(f->fh).faults, 0);
	assert_int_equal(f->m->nload_total, 0);
	fx_close(f);
}

static void test_overlay_write_is_a_dirty_page_in_all_mappings(void **unused)
{
	struct fx *f = fx_open();
	vm_vma *b;

	assert_int_equal(vm_fileh_mmap(&b, f->fh, 2, 4), 0);
	*word(f->vma, 3, 10) = 1010;
	assert_int_equal(vm_fileh_page_state(f->fh, 3), VM_PAGE_DIRTY);
	assert_int_equal(vm_ram_used(f->ram), BS);
	/* Copied from the base, not loaded. */
	assert_int_equal(f->m->nload_total, 0);
	assert_true(*word(f->vma, 3, 11) == PATTERN(3, 11));
	/* The other mapping shows the write without a fault. */
	unsigned faults = stats(f->fh).faults;
	assert_int_equal(*word(b, 3, 10), 1010);
	assert_int_equal(stats(f->fh).faults, faults);
	/* The base itself is unchanged. */
	uint64_t v;
	assert_int_equal(pread(f->m->basefd, &v, 8, 3 * BS + 80), 8);
	assert_true(v == PATTERN(3, 10));
	/* Writing the same page through the other mapping: no new page. */
	*word(b, 3, 12) = 1212;
	assert_int_equal(*word(f->vma, 3, 12), 1212);
	assert_int_equal(vm_ram_used(f->ram), BS);
	vm_vma_unmap(b);
	assert_int_equal(f->m->nmunmap, 1);
	fx_close(f);
}

static void test_overlay_new_mapping_sees_dirty_pages(void **unused)
{
	struct fx *f = fx_open();
	vm_vma *b;

	*word(f->vma, 5, 0) = 55;
	assert_int_equal(vm_fileh_mmap(&b, f->fh, 4, 2), 0);
	assert_int_equal(*word(b, 5, 0), 55);
	assert_true(*word(b, 4, 0) == PATTERN(4, 0));
	vm_vma_unmap(b);
	fx_close(f);
}

static void test_overlay_writeout_maps_base_again(void **unused)
{
	struct fx *f = fx_open();
	vm_vma *b;

	assert_int_equal(vm_fileh_mmap(&b, f->fh, 0, 2), 0);
	*word(f->vma, 1, 0) = 11;
	*word(f->vma, 6, 0) = 66;
	assert_int_equal(vm_ram_used(f->ram), 2 * BS);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(f->m->nstore, 2);
	assert_int_equal(vm_ram_used(f->ram), 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_EMPTY);
	/* Block 1 is in two mappings, block 6 in one. */
	assert_int_equal(f->m->nremmap, 3);
	/* Reads now come from the base, which has the stored data. */
	unsigned faults = stats(f->fh).faults;
	assert_int_equal(*word(f->vma, 1, 0), 11);
	assert_int_equal(*word(b, 1, 0), 11);
	assert_int_equal(*word(f->vma, 6, 0), 66);
	assert_int_equal(stats(f->fh).faults, faults);
	/* And a new write starts from the stored data. */
	*word(f->vma, 1, 1) = 12;
	assert_int_equal(*word(f->vma, 1, 0), 11);
	vm_vma_unmap(b);
	fx_close(f);
}

static void test_overlay_discard_maps_base_again(void **unused)
{
	struct fx *f = fx_open();

	*word(f->vma, 2, 0) = 22;
	assert_int_equal(vm_fileh_dirty_discard(f->fh), 0);
	assert_int_equal(vm_ram_used(f->ram), 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 2), VM_PAGE_EMPTY);
	assert_true(*word(f->vma, 2, 0) == PATTERN(2, 0));
	assert_int_equal(f->m->nstore, 0);
	fx_close(f);
}

static void test_overlay_refuses_invalidate(void **unused)
{
	struct fx *f = fx_open();
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 1), -ENOTSUP);
	fx_close(f);
}

static void test_overlay_unreadable_base_fails_the_write_fault(void **unused)
{
	struct fx *f = fx_open();
	/* Shrink the base file: the block past its end cannot be read. */
	assert_int_equal(ftruncate(f->m->basefd, 4 * BS), 0);
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, 6), 1), -EFAULT);
	assert_int_equal(vm_fileh_page_state(f->fh, 6), VM_PAGE_EMPTY);
	assert_int_equal(vm_ram_used(f->ram), 0);
	fx_close(f);
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overlay_is_chosen_by_flags),
		cmocka_unit_test(test_overlay_reads_come_from_base_without_ram),
		cmocka_unit_test(test_overlay_write_is_a_dirty_page_in_all_mappings),
		cmocka_unit_test(test_overlay_new_mapping_sees_dirty_pages),
		cmocka_unit_test(test_overlay_writeout_maps_base_again),
		cmocka_unit_test(test_overlay_discard_maps_base_again),
		cmocka_unit_test(test_overlay_refuses_invalidate),
		cmocka_unit_test(test_overlay_unreadable_base_fails_the_write_fault),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
