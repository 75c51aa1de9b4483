/* test_virtmem_faults.c — what a user of virtmem sees when the system
 * refuses a call virtmem makes (memfd_create, ftruncate, mmap, mprotect,
 * fallocate, pwrite, the userfaultfd ioctls, pthread_create, sigaction):
 * the call fails with the system's errno, nothing is leaked (descriptors,
 * mappings, threads), the handle or pool stays usable, and the next
 * attempt works.  The failures are planned with the test-side fault
 * injector (tests/fault_inject.c), which stands in for the C library's
 * calls in this program only.  Runs under each fault engine
 * (tests/vm-engine.sh); the userfaultfd engine's own calls are tried
 * where it runs (its setup in forked children, where it starts afresh).
 */
#include "config.h"

#include <dirent.h>
#include <linux/userfaultfd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <cmocka.h>

#include "fault_inject.h"
#include "vmfixture.h"

#define BS 4096
#define BIG ((size_t)512 << 10) /* above the uffd engine's bounce buffer */
#define CHILD_OK 0

/* Linux 6.7's PAGEMAP_SCAN, which Debian 12's headers lack. */
struct fi_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define FI_PAGEMAP_SCAN _IOWR('f', 16, struct fi_pm_scan_arg)

/* ---- helpers ------------------------------------------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		abort();
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int maps_line_is_uffd_file(const char *line, const void *unused)
{
	return strstr(line, "/memfd:virtmem-file-") != NULL;
}

/* Kernel mappings of memfds named virtmem-file-* (the uffd engine maps one
 * per mapping). */
static int uffd_file_mappings(void)
{
	return kernel_mappings_where(maps_line_is_uffd_file, NULL);
}

/* What virtmem writes on stderr between stderr_begin and stderr_end. */
static int stderr_saved = -1;
static FILE *stderr_file;

static void stderr_begin(void)
{
	fflush(stderr);
	stderr_file = tmpfile();
	assert_non_null(stderr_file);
	stderr_saved = dup(STDERR_FILENO);
	assert_true(dup2(fileno(stderr_file), STDERR_FILENO) >= 0);
}

static const char *stderr_end(void)
{
	static char buf[8192];
	size_t n;

	fflush(stderr);
	dup2(stderr_saved, STDERR_FILENO);
	close(stderr_saved);
	rewind(stderr_file);
	n = fread(buf, 1, sizeof(buf) - 1, stderr_file);
	buf[n] = '\0';
	fclose(stderr_file);
	/* Shown in the test's log as well. */
	fputs(buf, stderr);
	return buf;
}

static void assert_contains(const char *text, const char *want)
{
	if (strstr(text, want) == NULL)
		fail_msg("'%s' not in: %s", want, text);
}

/* Under the uffd engine a read-write mapping's blocks map through
 * UFFDIO_CONTINUE; under the SIGSEGV engine through mmap of the pool. */
static void plan_map_failure(vm_fileh *fh, int err)
{
	if (fh_uffd(fh))
		fi_fail_match(FI_IOCTL, UFFDIO_CONTINUE, 1, 1, err);
	else
		fi_fail_match(FI_MMAP, MAP_SHARED | MAP_FIXED, 1, 1, err);
}

static unsigned map_failures(vm_fileh *fh)
{
	return fi_failed(fh_uffd(fh) ? FI_IOCTL : FI_MMAP);
}

/* Whether the os page at p is mapped at all (even PROT_NONE). */
static bool address_mapped(void *p)
{
	unsigned char v;
	long pagesize = sysconf(_SC_PAGESIZE);
	return mincore((void *)((uintptr_t)p & ~(uintptr_t)(pagesize - 1)), 1, &v) == 0;
}

static void check_child(int st)
{
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	if (WEXITSTATUS(st) != CHILD_OK)
		fail_msg("the child failed at its check %d", WEXITSTATUS(st));
}

static void skip_unless_uffd(void)
{
	if (!test_engine_uffd())
		skip();
}

static int teardown(void **unused)
{
	fi_reset();
	return 0;
}

/* ---- the RAM pool -------------------------------------------------------------------- */

/* vm_ram_open makes a memfd, sizes it and maps it: each refusal fails the
 * open with its errno, closes the memfd, and the next open works. */
static void test_a_pool_the_system_refuses_fails_with_its_errno_and_leaves_no_descriptor(void **unused)
{
	static const struct {
		enum fi_call call;
		int err;
	} cases[] = {
		{ FI_MEMFD_CREATE, EMFILE },
		{ FI_FTRUNCATE, ENOSPC },
		{ FI_MMAP, ENOMEM },
	};
	int fds = count_fds();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		vm_ram *ram = (vm_ram *)1;
		fi_fail(cases[i].call, 1, 1, cases[i].err);
		assert_int_equal(vm_ram_open(&ram, 4 * BS), -cases[i].err);
		assert_int_equal(fi_failed(cases[i].call), 1);
		fi_reset();
		assert_null(ram);
		assert_int_equal(count_fds(), fds);
	}
	vm_ram *ram;
	assert_int_equal(vm_ram_open(&ram, 4 * BS), 0);
	assert_int_equal(count_fds(), fds + 1);
	assert_int_equal(vm_ram_close(ram), 0);
	assert_int_equal(count_fds(), fds);
}

/* The spare thread cannot start: vm_ram_keep_spare says so and keeps no
 * spare; asked again once threads start, it does. */
static void test_a_pool_whose_spare_thread_cannot_start_says_so_and_starts_it_when_asked_again(void **unused)
{
	vm_ram *ram;

	assert_int_equal(vm_ram_open(&ram, 64 * BS), 0);
	fi_fail(FI_PTHREAD_CREATE, 1, 1, EAGAIN);
	assert_int_equal(vm_ram_keep_spare(ram, BS, 2), -EAGAIN);
	assert_int_equal(fi_failed(FI_PTHREAD_CREATE), 1);
	fi_reset();
	assert_int_equal(vm_ram_spare(ram) + vm_ram_spare_filling(ram), 0);
	assert_int_equal(vm_ram_keep_spare(ram, BS, 2), 0);
	for (int i = 0; i < 10000 && vm_ram_spare(ram) < 2 * BS; i++)
		usleep(1000);
	assert_int_equal(vm_ram_spare(ram), 2 * BS);
	assert_int_equal(vm_ram_close(ram), 0);
}

/* ---- mappings ------------------------------------------------------------------------ */

/* Each call of vm_fileh_mmap the system refuses fails it with that errno
 * and leaves no mapping (the uffd engine's memfd mapping is gone again);
 * the handle maps and faults as before. */
static void test_a_mapping_the_system_refuses_fails_with_its_errno_and_leaves_no_mapping(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	int uffd = fh_uffd(f->fh);
	struct {
		enum fi_call call;
		unsigned long match;
		int err;
	} cases[4];
	size_t n = 0;

	if (uffd) {
		cases[n++] = (__typeof__(cases[0])){ FI_FTRUNCATE, (unsigned long)-1, ENOSPC };
		cases[n++] = (__typeof__(cases[0])){ FI_MMAP, MAP_SHARED, ENOMEM };
		cases[n++] = (__typeof__(cases[0])){ FI_IOCTL, UFFDIO_REGISTER, EPERM };
	} else {
		cases[n++] = (__typeof__(cases[0])){ FI_MMAP, MAP_PRIVATE | MAP_ANONYMOUS, ENOMEM };
	}
	int maps = uffd_file_mappings();
	for (size_t i = 0; i < n; i++) {
		vm_vma *vma = (vm_vma *)1;
		/* Past the memfd's size: the uffd engine grows it. */
		fi_fail_match(cases[i].call, cases[i].match, 1, 1, cases[i].err);
		assert_int_equal(vm_fileh_mmap(&vma, f->fh, 100, 4), -cases[i].err);
		assert_int_equal(fi_failed(cases[i].call), 1);
		fi_reset();
		assert_null(vma);
		assert_int_equal(uffd_file_mappings(), maps);
	}
	vm_vma *again;
	assert_int_equal(vm_fileh_mmap(&again, f->fh, 1, 2), 0);
	assert_true(*word(again, 2, 3) == PATTERN(2, 3));
	assert_true(*word(f->vma, 1, 3) == PATTERN(1, 3));
	vm_vma_unmap(again);
	fx_close(f);
}

/* Every vm_fileh_mmap puts virtmem's SIGSEGV handler back in front of one
 * installed over it; when sigaction refuses, the mapping fails with its
 * errno, and succeeds (in front again) once it works. */
static int foreign_segv_calls;

static void foreign_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)si;
	(void)uc;
	foreign_segv_calls++;
}

static void test_a_mapping_whose_sigsegv_handler_cannot_be_installed_fails_with_its_errno(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	struct sigaction sa, before;
	vm_vma *vma = (vm_vma *)1;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = foreign_segv;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGSEGV, &sa, &before), 0);
	/* The look at the current handler fails, then the installation. */
	for (unsigned nth = 1; nth <= 2; nth++) {
		fi_fail_match(FI_SIGACTION, SIGSEGV, nth, 1, EINVAL);
		assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, 2), -EINVAL);
		assert_int_equal(fi_failed(FI_SIGACTION), 1);
		fi_reset();
		assert_null(vma);
	}
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, 2), 0);
	assert_true(*word(vma, 1, 9) == PATTERN(1, 9));
	vm_vma_unmap(vma);
	/* Virtmem's handler is in front again, and the foreign handler was
	 * not called for virtmem's faults. */
	struct sigaction now;
	assert_int_equal(sigaction(SIGSEGV, NULL, &now), 0);
	assert_true(now.sa_sigaction != foreign_segv);
	assert_int_equal(foreign_segv_calls, 0);
	assert_int_equal(sigaction(SIGSEGV, &before, NULL), 0);
	fx_close(f);
}

/* ---- faults -------------------------------------------------------------------------- */

/* A block loaded but refused its mapping (out of kernel mappings: ENOMEM):
 * the access fails with ENOMEM and says what to look at; the next access
 * maps the block without loading it again. */
static void test_a_block_that_cannot_be_mapped_fails_its_access_with_ENOMEM_and_maps_on_the_next(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	void *p = vm_vma_blk_addr(f->vma, 2);

	plan_map_failure(f->fh, ENOMEM);
	stderr_begin();
	int rc = vm_vma_on_fault(f->vma, p, 0);
	const char *log = stderr_end();
	assert_int_equal(rc, -ENOMEM);
	assert_int_equal(map_failures(f->fh), 1);
	fi_reset();
	assert_contains(log, "mapping block 2 failed");
	if (!fh_uffd(f->fh))
		assert_contains(log, "vm.max_map_count");
	assert_true(*word(f->vma, 2, 5) == PATTERN(2, 5));
	backend_sync(f->fh);
	assert_int_equal(f->m->loads[2], 1);
	fx_close(f);
}

/* A write to a block loaded for reading needs it mapped writable: when
 * that is refused the write fault fails, and the next write lands and is
 * stored by a writeout. */
static void test_a_write_whose_block_cannot_be_made_writable_fails_and_the_next_write_is_stored(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	void *p = vm_vma_blk_addr(f->vma, 1);

	assert_true(*word(f->vma, 1, 0) == PATTERN(1, 0));
	if (fh_uffd(f->fh))
		fi_fail_match(FI_IOCTL, UFFDIO_CONTINUE, 1, 1, ENOMEM);
	else
		fi_fail_match(FI_MPROTECT, PROT_READ | PROT_WRITE, 1, 1, ENOMEM);
	assert_int_equal(vm_vma_on_fault(f->vma, p, 1), -ENOMEM);
	assert_int_equal(fi_failed(fh_uffd(f->fh) ? FI_IOCTL : FI_MPROTECT), 1);
	fi_reset();
	*word(f->vma, 1, 0) = 42;
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	backend_sync(f->fh);
	assert_int_equal(f->m->nstore, 1);
	assert_int_equal(f->m->store_log[0], 1);
	assert_true(memfile_blk(f->m, 1)[0] == 42);
	assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_LOADED);
	fx_close(f);
}

/* A new mapping shows the handle's dirty pages at once: when one cannot be
 * mapped, the mapping fails and leaves nothing; the dirty data stays, and
 * the next mapping shows it. */
static void test_a_mapping_that_cannot_show_a_dirty_page_fails_and_the_data_stays(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	vm_vma *vma = (vm_vma *)1;

	*word(f->vma, 3, 7) = 4242;
	int maps = uffd_file_mappings();
	plan_map_failure(f->fh, ENOMEM);
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 2, 2), -ENOMEM);
	assert_int_equal(map_failures(f->fh), 1);
	void *failed_at = fi_last_failed_addr(); /* the SIGSEGV engine's */
	fi_reset();
	assert_null(vma);
	/* Its address space is given back. */
	assert_int_equal(uffd_file_mappings(), maps);
	if (failed_at != NULL)
		assert_false(address_mapped(failed_at));
	assert_int_equal(vm_fileh_page_state(f->fh, 3), VM_PAGE_DIRTY);
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 2, 2), 0);
	assert_true(*word(vma, 3, 7) == 4242);
	assert_true(*word(f->vma, 3, 7) == 4242);
	vm_vma_unmap(vma);
	fx_close(f);
}

/* Under the SIGSEGV engine a block leaves a mapping by a PROT_NONE hole put
 * over it; out of kernel mappings (a hole in the middle of a kernel mapping
 * splits it) that is refused with ENOMEM.  The block then stays cached and
 * mapped: invalidating it, reclaiming it for another block and discarding
 * it fail with ENOMEM, and its address shows its own bytes, never those of
 * the block its slot would have been given to.  Once the system allows,
 * each works. */
static void test_a_block_that_cannot_be_unmapped_stays_cached_and_never_shows_another_blocks_bytes(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 1, 0); /* room for one block */

	if (fh_uffd(f->fh)) {
		/* Its blocks leave by a punched hole: none of this applies. */
		fx_close(f);
		skip();
	}
	assert_true(*word(f->vma, 0, 3) == PATTERN(0, 3));
	fi_fail_match(FI_MMAP, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, 1, 0, ENOMEM);
	stderr_begin();
	int rc = vm_fileh_invalidate_page(f->fh, 0);
	const char *log = stderr_end();
	assert_int_equal(rc, -ENOMEM);
	assert_contains(log, "unmapping block 0 failed");
	assert_int_equal(vm_fileh_page_state(f->fh, 0), VM_PAGE_LOADED);
	/* Block 1 needs block 0's slot. */
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, 1), 0), -ENOMEM);
	assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_EMPTY);
	assert_true(*word(f->vma, 0, 3) == PATTERN(0, 3));
	*word(f->vma, 0, 4) = 77;
	assert_int_equal(vm_fileh_dirty_discard(f->fh), -ENOMEM);
	assert_int_equal(vm_fileh_page_state(f->fh, 0), VM_PAGE_DIRTY);
	assert_true(*word(f->vma, 0, 4) == 77);
	assert_true(fi_failed(FI_MMAP) >= 3);
	fi_reset();
	assert_int_equal(vm_fileh_dirty_discard(f->fh), 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 0), VM_PAGE_EMPTY);
	assert_true(*word(f->vma, 1, 3) == PATTERN(1, 3));
	assert_true(*word(f->vma, 0, 4) == PATTERN(0, 4));
	assert_int_equal(vm_fileh_invalidate_page(f->fh, 0), 0);
	fx_close(f);
}

/* ---- writeout ------------------------------------------------------------------------ */

/* A page is write-protected while it is stored: when that is refused the
 * writeout fails with the errno, stores nothing, and the page stays dirty
 * and writable; the next writeout stores it. */
static void test_a_writeout_whose_page_cannot_be_write_protected_fails_and_keeps_it_dirty(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	int uffd = fh_uffd(f->fh);
	vm_vma *second;

	/* Two mappings show the page: the first is write-protected, the
	 * second refused; the first is made writable again. */
	assert_int_equal(vm_fileh_mmap(&second, f->fh, 2, 1), 0);
	*word(f->vma, 2, 0) = 7;
	assert_true(*word(second, 2, 0) == 7);
	if (uffd)
		fi_fail_match(FI_IOCTL, UFFDIO_WRITEPROTECT, 2, 1, ENOMEM);
	else
		fi_fail_match(FI_MPROTECT, PROT_READ, 2, 1, ENOMEM);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED),
			 -ENOMEM);
	assert_int_equal(fi_failed(uffd ? FI_IOCTL : FI_MPROTECT), 1);
	fi_reset();
	backend_sync(f->fh);
	assert_int_equal(f->m->nstore, 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 2), VM_PAGE_DIRTY);
	uint64_t faults = stats(f->fh).faults;
	*word(f->vma, 2, 1) = 8; /* still writable in both: no fault */
	*word(second, 2, 2) = 9;
	assert_int_equal(stats(f->fh).faults, faults);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	backend_sync(f->fh);
	assert_int_equal(f->m->nstore, 1);
	assert_true(memfile_blk(f->m, 2)[0] == 7 && memfile_blk(f->m, 2)[1] == 8 &&
		    memfile_blk(f->m, 2)[2] == 9);
	assert_int_equal(vm_fileh_page_state(f->fh, 2), VM_PAGE_LOADED);
	vm_vma_unmap(second);
	fx_close(f);
}

/* ---- backends that write the slot (VM_OPS_LOADBLK_WRITES) --------------------------- */

/* loadblk writes the block through vm_loadblk_write, then, if zero_mid,
 * zeros bytes [BS, 3 * BS) of it with vm_loadblk_zero (whole os pages:
 * punched out of the slot). */
static atomic_bool zero_mid; /* read by loads in uffd handler threads */

static int writes_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	struct memfile *m = (struct memfile *)f;
	size_t bs = f->blksize;
	int rc;

	atomic_fetch_add(&m->loads[blk], 1);
	rc = vm_loadblk_write(buf, 0, memfile_blk(m, blk), bs);
	if (rc == 0 && zero_mid)
		rc = vm_loadblk_zero(buf, BS, 2 * BS);
	return rc;
}

static const vm_bigfile_ops writes_ops = {
	.loadblk = writes_loadblk,
	.storeblk = memfile_storeblk,
	.flags = VM_OPS_LOADBLK_WRITES,
};

/* The slot's writes go to the memory file with pwrite (a fresh slot) and
 * zeros are punched: when the system refuses either, vm_loadblk_write or
 * vm_loadblk_zero returns its errno to the backend, whose load fails with
 * it; the next access loads the block right. */
static void test_a_backend_whose_slot_writes_are_refused_gets_the_errno_and_the_next_load_works(void **unused)
{
	struct fx *f = fx_open_file(4 * BS, 4, 4, 0);
	vm_blk_t blk = 0;

	backend_sync(f->fh);
	f->m->file.ops = &writes_ops;
	zero_mid = true;
	fi_fail(FI_PWRITE, 1, 1, ENOSPC);
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, blk), 0), -ENOSPC);
	assert_int_equal(fi_failed(FI_PWRITE), 1);
	fi_reset();
	assert_int_equal(vm_fileh_page_state(f->fh, blk), VM_PAGE_EMPTY);

	blk = 1;
	fi_fail_match(FI_FALLOCATE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1, 1, EOPNOTSUPP);
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, blk), 0), -EOPNOTSUPP);
	assert_int_equal(fi_failed(FI_FALLOCATE), 1);
	fi_reset();
	assert_int_equal(vm_fileh_page_state(f->fh, blk), VM_PAGE_EMPTY);

	for (blk = 0; blk < 2; blk++) {
		const uint64_t *w = vm_vma_blk_addr(f->vma, blk);
		for (size_t i = 0; i < 4 * BS / 8; i++) {
			uint64_t want = i >= BS / 8 && i < 3 * BS / 8 ? 0 : PATTERN(blk, i);
			if (w[i] != want)
				fail_msg("block %llu word %zu: %llx", (unsigned long long)blk, i,
					 (unsigned long long)w[i]);
		}
	}
	zero_mid = false;
	fx_close(f);
}

/* ---- the uffd engine's own calls ------------------------------------------------------- */

/* Filling a block's memory: pwrite of a small block, and for a block too
 * big for the bounce buffer a view mapped over the thread's window and the
 * os pages allocated with fallocate.  Each refusal fails the load with its
 * errno, the block stays EMPTY, and the next access loads it. */
struct load_case {
	size_t bs;
	enum fi_call call;
	unsigned long match;
	int err;
	vm_fileh *fh;
	vm_vma *vma;
	int rc;
};

static void *fault_in_thread(void *arg)
{
	struct load_case *c = arg;
	c->rc = vm_vma_on_fault(c->vma, vm_vma_blk_addr(c->vma, 1), 0);
	return NULL;
}

static void test_a_uffd_block_whose_memory_cannot_be_filled_fails_its_load_and_loads_on_the_next(void **unused)
{
	struct load_case cases[] = {
		{ .bs = BS, .call = FI_PWRITE, .match = (unsigned long)-1, .err = ENOSPC },
		/* the view, then the window it is mapped over */
		{ .bs = BIG, .call = FI_MMAP, .match = MAP_SHARED | MAP_FIXED, .err = ENOMEM },
		{ .bs = BIG, .call = FI_MMAP, .match = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, .err = ENOMEM },
		{ .bs = BIG, .call = FI_FALLOCATE, .match = 0, .err = ENOSPC },
	};

	skip_unless_uffd();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct load_case *c = &cases[i];
		struct fx *f = fx_open_file(c->bs, 4, 4, 0);
		pthread_t t;
		c->fh = f->fh;
		c->vma = f->vma;
		/* A new thread: its window is made at its first load. */
		fi_fail_match(c->call, c->match, 1, 1, c->err);
		assert_int_equal(pthread_create(&t, NULL, fault_in_thread, c), 0);
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(fi_failed(c->call), 1);
		fi_reset();
		assert_int_equal(c->rc, -c->err);
		assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_EMPTY);
		assert_true(*word(f->vma, 1, 11) == PATTERN(1, 11));
		assert_true(*word(f->vma, 1, c->bs / 8 - 1) == PATTERN(1, c->bs / 8 - 1));
		fx_close(f);
	}
}

/* A writeout reads a block through a view mapped over the thread's window:
 * when that is refused, the writeout fails with the errno and stores
 * nothing, and the page stays dirty. */
static void test_a_uffd_writeout_whose_block_view_cannot_be_mapped_fails_and_keeps_it_dirty(void **unused)
{
	skip_unless_uffd();
	struct fx *f = fx_open_file(BIG, 2, 2, 0);
	*word(f->vma, 1, 0) = 99;
	fi_fail_match(FI_MMAP, MAP_SHARED | MAP_FIXED, 1, 1, ENOMEM);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED),
			 -ENOMEM);
	assert_int_equal(fi_failed(FI_MMAP), 1);
	fi_reset();
	backend_sync(f->fh);
	assert_int_equal(f->m->nstore, 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_DIRTY);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	backend_sync(f->fh);
	assert_int_equal(f->m->nstore, 1);
	assert_true(memfile_blk(f->m, 1)[0] == 99);
	fx_close(f);
}

/* UFFDIO_CONTINUE answers EAGAIN while the address space changes: the
 * block is mapped on the retry, with no error. */
static void test_a_uffd_block_mapping_interrupted_by_eagain_is_retried_and_maps(void **unused)
{
	skip_unless_uffd();
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	fi_fail_match(FI_IOCTL, UFFDIO_CONTINUE, 1, 2, EAGAIN);
	assert_int_equal(vm_vma_on_fault(f->vma, vm_vma_blk_addr(f->vma, 2), 0), 0);
	assert_int_equal(fi_failed(FI_IOCTL), 2);
	fi_reset();
	assert_true(*word(f->vma, 2, 1) == PATTERN(2, 1));
	assert_int_equal(stats(f->fh).faults, 1);
	fx_close(f);
}

/* A handle's first open starts the engine's handler threads; when that is
 * refused (no epoll instance, no stack, no thread), the open fails with
 * EAGAIN and leaves no descriptor, and the next open works.  In a forked
 * child: the engine starts afresh there. */
static void handler_threads_child(void *unused)
{
	static const struct {
		enum fi_call call;
		unsigned long match;
		int err;
	} cases[] = {
		{ FI_EPOLL_CREATE1, (unsigned long)-1, EMFILE },
		{ FI_EPOLL_CTL, (unsigned long)-1, ENOMEM },
		{ FI_MMAP, MAP_STACK, ENOMEM },
		{ FI_PTHREAD_CREATE, (unsigned long)-1, EAGAIN },
	};
	struct memfile *m = memfile_new(BS, 4, 0);
	vm_ram *ram;
	vm_fileh *fh;

	if (vm_engine_probe("uffd") != 0 || vm_ram_open(&ram, 4 * BS) != 0)
		_exit(1);
	int fds = count_fds();
	for (int i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])); i++) {
		fh = (vm_fileh *)1;
		fi_fail_match(cases[i].call, cases[i].match, 1, 0, cases[i].err);
		int rc = vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD);
		unsigned failed = fi_failed(cases[i].call);
		fi_reset();
		if (rc != -EAGAIN)
			_exit(10 + i);
		if (fh != NULL)
			_exit(20 + i);
		if (failed == 0)
			_exit(30 + i);
		if (count_fds() != fds)
			_exit(40 + i);
	}
	if (vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) != 0 || !fh_uffd(fh))
		_exit(2);
	child_reads_block_closes_and_exits(fh, ram, 4, 3);
}

static void test_a_uffd_handle_whose_handler_threads_cannot_start_fails_with_EAGAIN_and_the_next_opens(void **unused)
{
	skip_unless_uffd();
	check_child(run_in_child(handler_threads_child, NULL));
}

/* What the uffd engine needs from the kernel, each refused in a child of
 * its own (the engine is set up once per process): the UFFDIO_API
 * handshake, /proc/self/pagemap, PAGEMAP_SCAN (Linux 6.7).  Without it the
 * engine says why (vm_engine_probe), a handle asking for it fails with
 * that, and a handle asking for no engine gets the SIGSEGV engine and
 * works.  /dev/userfaultfd refused is no loss: the system call serves. */
struct setup_case {
	enum fi_call call;
	unsigned long match;
	int err;
	int probe;          /* what vm_engine_probe("uffd") says then */
	const char *engine; /* what a handle with no engine asked for gets */
};

static void uffd_setup_child(void *arg)
{
	const struct setup_case *c = arg;
	struct memfile *m = memfile_new(BS, 4, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	unsetenv("VIRTMEM_ENGINE");
	fi_fail_match(c->call, c->match, 1, 1, c->err);
	int rc = vm_engine_probe("uffd");
	unsigned failed = fi_failed(c->call);
	fi_reset();
	if (failed != 1)
		_exit(1);
	if (rc != c->probe)
		_exit(2);
	if (vm_ram_open(&ram, 4 * BS) != 0 || vm_fileh_open(&fh, &m->file, ram, 0) != 0)
		_exit(3);
	if (strcmp(stats(fh).engine, c->engine) != 0)
		_exit(4);
	if (vm_fileh_mmap(&vma, fh, 0, 4) != 0 ||
	    *(volatile uint64_t *)vm_vma_blk_addr(vma, 2) != PATTERN(2, 0))
		_exit(5);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	fh = (vm_fileh *)1;
	if (vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) != c->probe)
		_exit(6);
	if (c->probe == 0)
		vm_fileh_close(fh);
	else if (fh != NULL)
		_exit(7);
	if (vm_ram_close(ram) != 0)
		_exit(8);
	_exit(CHILD_OK);
}

static void test_where_the_kernel_refuses_what_the_uffd_engine_needs_handles_get_the_sigsegv_engine(void **unused)
{
	static const struct setup_case cases[] = {
		{ FI_IOCTL, UFFDIO_API, EINVAL, -EINVAL, "sigsegv" },
		{ FI_OPEN, O_RDONLY | O_CLOEXEC, EACCES, -EACCES, "sigsegv" },
		{ FI_IOCTL, FI_PAGEMAP_SCAN, ENOTTY, -ENOTTY, "sigsegv" },
		{ FI_OPEN, O_RDWR | O_CLOEXEC, EACCES, 0, "uffd" },
	};

	skip_unless_uffd();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st = run_in_child(uffd_setup_child, (void *)&cases[i]);
		if (WIFSIGNALED(st) || WEXITSTATUS(st) != CHILD_OK)
			fail_msg("case %zu (%s refused with %s): child status %#x", i, fi_name(cases[i].call),
				 strerror(cases[i].err), st);
	}
}

/* Spare slots are of no use to a handle whose engine keeps its own memory
 * (uffd): the first such handle gives the pool's ready spares back. */
static void test_opening_a_uffd_handle_gives_the_pools_spares_back(void **unused)
{
	skip_unless_uffd();
	struct memfile *m = memfile_new(BS, 4, 0);
	vm_ram *ram;
	vm_fileh *fh;

	assert_int_equal(vm_ram_open(&ram, 64 * BS), 0);
	assert_int_equal(vm_ram_keep_spare(ram, BS, 2), 0);
	for (int i = 0; i < 10000 && vm_ram_spare(ram) < 2 * BS; i++)
		usleep(1000);
	assert_int_equal(vm_ram_spare(ram), 2 * BS);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD), 0);
	assert_int_equal(vm_ram_spare(ram), 0);
	vm_fileh_close(fh);
	assert_int_equal(vm_ram_close(ram), 0);
	memfile_free(m);
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_a_pool_the_system_refuses_fails_with_its_errno_and_leaves_no_descriptor, teardown),
		cmocka_unit_test_teardown(test_a_pool_whose_spare_thread_cannot_start_says_so_and_starts_it_when_asked_again, teardown),
		cmocka_unit_test_teardown(test_a_mapping_the_system_refuses_fails_with_its_errno_and_leaves_no_mapping, teardown),
		cmocka_unit_test_teardown(test_a_mapping_whose_sigsegv_handler_cannot_be_installed_fails_with_its_errno, teardown),
		cmocka_unit_test_teardown(test_a_block_that_cannot_be_mapped_fails_its_access_with_ENOMEM_and_maps_on_the_next, teardown),
		cmocka_unit_test_teardown(test_a_write_whose_block_cannot_be_made_writable_fails_and_the_next_write_is_stored, teardown),
		cmocka_unit_test_teardown(test_a_mapping_that_cannot_show_a_dirty_page_fails_and_the_data_stays, teardown),
		cmocka_unit_test_teardown(test_a_block_that_cannot_be_unmapped_stays_cached_and_never_shows_another_blocks_bytes, teardown),
		cmocka_unit_test_teardown(test_a_writeout_whose_page_cannot_be_write_protected_fails_and_keeps_it_dirty, teardown),
		cmocka_unit_test_teardown(test_a_backend_whose_slot_writes_are_refused_gets_the_errno_and_the_next_load_works, teardown),
		cmocka_unit_test_teardown(test_a_uffd_block_whose_memory_cannot_be_filled_fails_its_load_and_loads_on_the_next, teardown),
		cmocka_unit_test_teardown(test_a_uffd_writeout_whose_block_view_cannot_be_mapped_fails_and_keeps_it_dirty, teardown),
		cmocka_unit_test_teardown(test_a_uffd_block_mapping_interrupted_by_eagain_is_retried_and_maps, teardown),
		cmocka_unit_test_teardown(test_a_uffd_handle_whose_handler_threads_cannot_start_fails_with_EAGAIN_and_the_next_opens, teardown),
		cmocka_unit_test_teardown(test_where_the_kernel_refuses_what_the_uffd_engine_needs_handles_get_the_sigsegv_engine, teardown),
		cmocka_unit_test_teardown(test_opening_a_uffd_handle_gives_the_pools_spares_back, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
