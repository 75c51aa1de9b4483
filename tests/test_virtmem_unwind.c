/* test_virtmem_unwind.c — what the public API refuses, and what is left
 * when a call fails half-way: a mapping larger than the address space, a
 * backend whose base layer cannot be mapped (the mapping fails and leaves
 * nothing behind), a base that cannot be mapped again after a discard (the
 * block is mapped again on the next read), the choice of fault engine by
 * flags and VIRTMEM_ENGINE (overlay handles refuse uffd), the engine
 * where userfaultfd is refused (sigsegv) or allowed for user mode only
 * (uffd-user: system calls on unloaded blocks get EFAULT; seccomp stands
 * for the missing privileges), the RAM pool's limits, and a foreign fault
 * handed to a previous handler installed without SA_SIGINFO, a forked
 * child using virtmem on its own, one writeout at a time, a prefetch in
 * overlay mode, a log line that stays one line, a backend touching virtmem
 * memory (SIGBUS at that address), page state names, explicit faults
 * outside their mapping.  Runs under each fault
 * engine (tests/vm-engine.sh).
 */
#include "config.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <cmocka.h>

#include "vmfixture.h"

#define BS 4096

/* ---- mappings that fail ------------------------------------------------------------- */

static void test_a_mapping_larger_than_the_address_space_fails_and_the_handle_still_maps(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	vm_vma *vma = (vm_vma *)1, *again;

	/* 2^48 bytes: past the 47-bit user address space. */
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, (size_t)1 << 36), -ENOMEM);
	assert_null(vma);
	/* Nothing of it is left: the handle maps and faults as before. */
	assert_int_equal(vm_fileh_mmap(&again, f->fh, 1, 2), 0);
	assert_int_equal(*word(again, 2, 7), PATTERN(2, 7));
	assert_int_equal(*word(f->vma, 2, 7), PATTERN(2, 7));
	vm_vma_unmap(again);
	vm_vma_unmap(NULL); /* a no-op, as free(NULL) */
	fx_close(f);
}

static void test_a_mapping_of_no_blocks_or_past_the_last_block_number_is_einval(void **unused)
{
	struct fx *f = fx_open_file(BS, 4, 4, 0);
	vm_vma *vma = (vm_vma *)1;

	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, 0), -EINVAL);
	assert_null(vma);
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, UINT64_MAX - 1, 4), -EINVAL);
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, SIZE_MAX / 2), -EINVAL);
	fx_close(f);
}

/* A base layer whose setup fails (or, once, whose remap fails). */
static atomic_int fail_setup, fail_remmap;

static int flaky_setup(vm_bigfile *f, vm_vma *vma, vm_blk_t blk, size_t blklen)
{
	if (atomic_load(&fail_setup))
		return -EACCES;
	return basefile_setup(f, vma, blk, blklen);
}

static int flaky_remmap(vm_bigfile *f, vm_vma *vma, vm_blk_t blk)
{
	if (atomic_exchange(&fail_remmap, 0))
		return -EIO;
	return basefile_remmap(f, vma, blk);
}

static const vm_bigfile_ops flaky_base_ops = {
	.loadblk = memfile_loadblk,
	.storeblk = memfile_storeblk,
	.release = memfile_release,
	.mmap_setup_read = flaky_setup,
	.remmap_blk_read = flaky_remmap,
	.munmap = basefile_munmap,
};

static struct fx *open_flaky(void)
{
	struct fx *f = calloc(1, sizeof(*f));

	f->m = memfile_new(BS, 4, 1);
	f->m->file.ops = &flaky_base_ops;
	assert_int_equal(vm_ram_open(&f->ram, 4 * BS), 0);
	assert_int_equal(vm_fileh_open(&f->fh, &f->m->file, f->ram, 0), 0);
	assert_true(vm_fileh_is_overlay(f->fh));
	return f;
}

static void test_an_overlay_mapping_whose_base_cannot_be_mapped_fails_with_its_error(void **unused)
{
	struct fx *f = open_flaky();
	vm_vma *vma = (vm_vma *)1;

	atomic_store(&fail_setup, 1);
	assert_int_equal(vm_fileh_mmap(&vma, f->fh, 0, 4), -EACCES);
	assert_null(vma);
	/* The backend was not told to forget a mapping it never had. */
	assert_int_equal(f->m->nmunmap, 0);
	atomic_store(&fail_setup, 0);
	assert_int_equal(vm_fileh_mmap(&f->vma, f->fh, 0, 4), 0);
	assert_int_equal(*word(f->vma, 3, 1), PATTERN(3, 1));
	*word(f->vma, 3, 1) = 77;
	assert_int_equal(stats(f->fh).ndirty, 1);
	fx_close(f);
}

/* A discarded block whose base cannot be mapped again reads as an error
 * no longer than until the next read: that read maps the base again. */
static void test_an_overlay_block_whose_remap_failed_is_mapped_again_on_the_next_read(void **unused)
{
	struct fx *f = open_flaky();

	assert_int_equal(vm_fileh_mmap(&f->vma, f->fh, 0, 4), 0);
	*word(f->vma, 1, 3) = 42;
	atomic_store(&fail_remmap, 1);
	assert_int_equal(vm_fileh_dirty_discard(f->fh), 0);
	assert_int_equal(atomic_load(&fail_remmap), 0); /* the failing remap ran */
	assert_int_equal(stats(f->fh).ndirty, 0);
	unsigned remaps = f->m->nremmap;
	/* The read faults (nothing is mapped there) and maps the base. */
	assert_int_equal(*word(f->vma, 1, 3), PATTERN(1, 3));
	assert_int_equal(f->m->nremmap, remaps + 1);
	assert_int_equal(stats(f->fh).ncached, 0);
	fx_close(f);
}

/* ---- engines --------------------------------------------------------------------- */

static void test_engine_flags_and_virtmem_engine_choose_the_engine(void **unused)
{
	struct memfile *m = memfile_new(BS, 2, 0);
	char *env = getenv("VIRTMEM_ENGINE") ? strdup(getenv("VIRTMEM_ENGINE")) : NULL;
	vm_fileh *fh = (vm_fileh *)1;
	vm_ram *ram;

	assert_int_equal(vm_ram_open(&ram, 2 * BS), 0);
	assert_int_equal(vm_engine_probe("sigsegv"), 0);
	assert_int_equal(vm_engine_probe("mmu"), -EINVAL);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_SIGSEGV | VM_ENGINE_UFFD), -EINVAL);
	/* The flag wins over the environment. */
	setenv("VIRTMEM_ENGINE", "uffd", 1);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_SIGSEGV), 0);
	assert_string_equal(stats(fh).engine, "sigsegv");
	vm_fileh_close(fh);
	/* Overlay handles run on the SIGSEGV engine: asking for uffd is
	 * refused, not ignored. */
	struct memfile *based = memfile_new(BS, 2, 1);
	assert_int_equal(vm_fileh_open(&fh, &based->file, ram, VM_ENGINE_UFFD), -ENOTSUP);
	assert_int_equal(vm_fileh_open(&fh, &based->file, ram, 0), 0);
	assert_true(vm_fileh_is_overlay(fh));
	assert_string_equal(stats(fh).engine, "sigsegv");
	vm_fileh_close(fh);
	memfile_free(based);
	/* An engine name that does not exist is refused, not replaced. */
	setenv("VIRTMEM_ENGINE", "mmu", 1);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, 0), -EINVAL);
	/* Empty: the best engine available. */
	setenv("VIRTMEM_ENGINE", "", 1);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, 0), 0);
	if (vm_engine_probe("uffd") == 0)
		assert_int_equal(strncmp(stats(fh).engine, "uffd", 4), 0);
	else
		assert_string_equal(stats(fh).engine, "sigsegv");
	vm_fileh_close(fh);
	if (env)
		setenv("VIRTMEM_ENGINE", env, 1);
	else
		unsetenv("VIRTMEM_ENGINE");
	free(env);
	assert_int_equal(vm_ram_close(ram), 0);
	memfile_free(m);
}

/* A seccomp filter on this thread and the threads it starts: userfaultfd(2)
 * is refused (EPERM) unless user_mode_ok and the call asks for faults of
 * user mode only, and so is /dev/userfaultfd's USERFAULTFD_IOC_NEW: what a
 * process without the privileges for a full userfaultfd gets.  -1 where
 * it cannot be installed. */
static int refuse_userfaultfd(int user_mode_ok)
{
#if defined(__x86_64__)
	const __u32 arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
	const __u32 arch = AUDIT_ARCH_AARCH64;
#else
	const __u32 arch = 0;
#endif
	struct sock_filter insns[] = {
		/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
		/* 2 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		/* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 2, 0),
		/* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 5, 0),
		/* 6 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 7: userfaultfd(flags) */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		/* 8 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, user_mode_ok ? UFFD_USER_MODE_ONLY : 0, 1, 0),
		/* 9 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		/* 10 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 11: ioctl(fd, cmd) */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		/* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (__u32)USERFAULTFD_IOC_NEW, 0, 1),
		/* 13 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		/* 14 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(insns) / sizeof(insns[0]), .filter = insns };

	if (arch == 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* Exit statuses of the children below. */
enum { CHILD_OK, CHILD_NO_SECCOMP = 77, CHILD_SETUP = 90 };

/* Runs fn(arg) in a child: it must exit CHILD_OK (else the test fails
 * naming the check it stopped at, or the signal that killed it); a child
 * that could not install its seccomp filter skips the test. */
static void assert_child_passes(void (*fn)(void *), void *arg)
{
	int st = run_in_child(fn, arg);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	if (WEXITSTATUS(st) == CHILD_NO_SECCOMP)
		skip(); /* no seccomp filter here */
	if (WEXITSTATUS(st) != CHILD_OK)
		fail_msg("the child failed at its check %d", WEXITSTATUS(st));
}

/* Where userfaultfd is refused, a handle asked for no engine runs on the
 * SIGSEGV engine and works; asking for uffd (by flag or VIRTMEM_ENGINE)
 * fails the open with the refusal's error. */
static void refused_userfaultfd_child(void *unused)
{
	struct memfile *m = memfile_new(BS, 2, 0);
	vm_fileh *fh;
	vm_ram *ram;
	vm_vma *vma;

	if (refuse_userfaultfd(0) < 0)
		_exit(CHILD_NO_SECCOMP);
	unsetenv("VIRTMEM_ENGINE");
	if (vm_ram_open(&ram, 2 * BS) < 0)
		_exit(CHILD_SETUP);
	if (vm_engine_probe("uffd") != -EPERM)
		_exit(1);
	if (vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) != -EPERM)
		_exit(2);
	setenv("VIRTMEM_ENGINE", "uffd", 1);
	if (vm_fileh_open(&fh, &m->file, ram, 0) != -EPERM)
		_exit(3);
	unsetenv("VIRTMEM_ENGINE");
	if (vm_fileh_open(&fh, &m->file, ram, 0) != 0 || strcmp(stats(fh).engine, "sigsegv") != 0)
		_exit(4);
	if (vm_fileh_mmap(&vma, fh, 0, 2) != 0 || *(volatile uint64_t *)vm_vma_blk_addr(vma, 1) != PATTERN(1, 0))
		_exit(5);
	_exit(CHILD_OK);
}

static void test_where_userfaultfd_is_refused_the_sigsegv_engine_serves_and_uffd_is_refused(void **unused)
{
	assert_child_passes(refused_userfaultfd_child, NULL);
}

/* Where only a userfaultfd for faults of user mode is allowed, the uffd
 * engine runs as "uffd-user": faults are served, a system call on an
 * unloaded block gets EFAULT (as under the SIGSEGV engine), and on a
 * loaded one works. */
static void user_mode_userfaultfd_child(void *unused)
{
	struct memfile *m = memfile_new(BS, 3, 0);
	uint64_t w = 0;
	vm_fileh *fh;
	vm_ram *ram;
	vm_vma *vma;
	int fds[2];

	if (refuse_userfaultfd(1) < 0)
		_exit(CHILD_NO_SECCOMP);
	unsetenv("VIRTMEM_ENGINE");
	if (vm_ram_open(&ram, 3 * BS) < 0 || pipe(fds) < 0)
		_exit(CHILD_SETUP);
	if (vm_engine_probe("uffd") != 0)
		_exit(1);
	if (vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) != 0 || strcmp(stats(fh).engine, "uffd-user") != 0)
		_exit(2);
	if (vm_fileh_mmap(&vma, fh, 0, 3) != 0 || *(volatile uint64_t *)vm_vma_blk_addr(vma, 2) != PATTERN(2, 0))
		_exit(3);
	/* write(2) from unloaded block 1, read(2) into it: EFAULT, no load. */
	if (write(fds[1], vm_vma_blk_addr(vma, 1), 8) != -1 || errno != EFAULT)
		_exit(4);
	if (write(fds[1], &w, 8) != 8 || read(fds[0], vm_vma_blk_addr(vma, 1), 8) != -1 || errno != EFAULT)
		_exit(5);
	if (m->loads[1] != 0)
		_exit(6);
	/* Block 2 is loaded: both work. */
	if (read(fds[0], vm_vma_blk_addr(vma, 2), 8) != 8 || write(fds[1], vm_vma_blk_addr(vma, 2), 8) != 8 ||
	    read(fds[0], &w, 8) != 8 || w != 0)
		_exit(7);
	_exit(CHILD_OK);
}

static void test_a_user_mode_only_userfaultfd_serves_faults_and_system_calls_get_efault(void **unused)
{
	assert_child_passes(user_mode_userfaultfd_child, NULL);
}

/* A mapping whose blocks lie past the largest file offset: under uffd,
 * whose blocks live at their offset in a memfd, it is -EFBIG (and the
 * handle still maps); the SIGSEGV engine maps it (it needs only address
 * space). */
static void test_blocks_past_the_largest_file_offset_are_efbig_under_uffd(void **unused)
{
	struct fx *f = fx_open_file(BS, 2, 2, 0);
	vm_vma *vma = (vm_vma *)1;
	int rc = vm_fileh_mmap(&vma, f->fh, (vm_blk_t)1 << 52, 2);

	if (fh_uffd(f->fh)) {
		assert_int_equal(rc, -EFBIG);
		assert_null(vma);
	} else {
		assert_int_equal(rc, 0);
		vm_vma_unmap(vma);
	}
	assert_int_equal(*word(f->vma, 1, 1), PATTERN(1, 1));
	fx_close(f);
}

/* Out of file descriptors, opening a handle (uffd: its memfd, the handler
 * threads' epoll instances) fails with an error, never half-way: once
 * descriptors are free again, it opens, maps and faults. */
static void out_of_descriptors_child(void *unused)
{
	struct memfile *m = memfile_new(BS, 2, 0);
	struct rlimit lim = { 256, 256 };
	static int held[256];
	int nheld = 0, rc, tries = 0;
	vm_fileh *fh;
	vm_ram *ram;

	if (vm_ram_open(&ram, 2 * BS) < 0 || setrlimit(RLIMIT_NOFILE, &lim) < 0)
		_exit(CHILD_SETUP);
	(void)vm_engine_probe("uffd"); /* set up while descriptors last */
	while (nheld < 256 && (held[nheld] = dup(2)) >= 0)
		nheld++;
	if (errno != EMFILE)
		_exit(CHILD_SETUP);
	/* Give descriptors back one by one until the open works. */
	while ((rc = vm_fileh_open(&fh, &m->file, ram, 0)) < 0) {
		if (rc != -EMFILE && rc != -EAGAIN)
			_exit(1);
		if (nheld == 0 || ++tries > 16)
			_exit(2);
		close(held[--nheld]);
	}
	child_reads_block_closes_and_exits(fh, ram, 2, 1);
}

static void test_out_of_descriptors_a_handle_fails_to_open_then_opens_once_they_are_free(void **unused)
{
	assert_child_passes(out_of_descriptors_child, NULL);
}

/* ---- the RAM pool ------------------------------------------------------------------ */

static void test_the_pool_refuses_budgets_it_cannot_hold(void **unused)
{
	vm_ram *ram = (vm_ram *)1;

	assert_int_equal(vm_ram_open(&ram, 100), -EINVAL);  /* under an OS page */
	assert_int_equal(vm_ram_open(&ram, (size_t)1 << 62), -EINVAL);
	assert_int_equal(vm_ram_open(&ram, 3 * BS), 0);
	assert_int_equal(vm_ram_budget(ram), 3 * BS);
	assert_int_equal(vm_ram_used(ram), 0);
	assert_int_equal(vm_ram_keep_spare(ram, 3000, 1), -EINVAL); /* not a power of two */
	assert_int_equal(vm_ram_keep_spare(ram, BS, 0), 0);
	assert_int_equal(vm_ram_close(ram), 0);
}

/* A pool in use cannot be closed: -EBUSY, and nothing happens. */
static void test_a_pool_in_use_is_not_closed(void **unused)
{
	struct fx *f = fx_open_file(BS, 2, 2, 0);

	assert_int_equal(*word(f->vma, 1, 0), PATTERN(1, 0));
	assert_int_equal(vm_ram_close(f->ram), -EBUSY);
	assert_int_equal(*word(f->vma, 0, 0), PATTERN(0, 0));
	assert_int_equal(vm_ram_used(f->ram), 2 * BS);
	fx_close(f);
}

/* ---- a previous SIGSEGV handler without SA_SIGINFO ---------------------------------- */

static sigjmp_buf jb;
static volatile sig_atomic_t plain_calls;

static void plain_handler(int sig)
{
	(void)sig;
	plain_calls++;
	siglongjmp(jb, 1);
}

static void plain_previous_handler_child(void *unused)
{
	struct memfile *m = memfile_new(BS, 2, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	signal(SIGSEGV, plain_handler);
	/* The SIGSEGV engine installs its handler over the plain one. */
	if (vm_ram_open(&ram, 2 * BS) < 0 || vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_SIGSEGV) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 2) < 0)
		_exit(90);
	if (*(volatile uint64_t *)vm_vma_blk_addr(vma, 1) != PATTERN(1, 0))
		_exit(1);
	volatile uintptr_t wild = 16; /* not virtmem's */
	if (sigsetjmp(jb, 1) == 0) {
		(void)*(volatile int *)wild;
		_exit(2);
	}
	if (plain_calls != 1)
		_exit(3);
	/* virtmem's own faults still work afterwards. */
	if (*(volatile uint64_t *)vm_vma_blk_addr(vma, 0) != PATTERN(0, 0))
		_exit(4);
	_exit(0);
}

static void test_foreign_faults_go_to_a_previous_handler_without_siginfo(void **unused)
{
	assert_child_passes(plain_previous_handler_child, NULL);
}

/* ---- fork --------------------------------------------------------------------------- */

/* A child forked from a process that uses virtmem (whose engine runs: a
 * SIGSEGV handler, or a userfaultfd with its handler threads, which the
 * child does not have) maps and faults on its own. */
static void forked_child(void *arg)
{
	struct fx *parent = arg;
	struct memfile *m = memfile_new(BS, 3, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	(void)parent;
	if (vm_ram_open(&ram, 3 * BS) < 0 || vm_fileh_open(&fh, &m->file, ram, 0) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 3) < 0)
		_exit(90);
	if (*(volatile uint64_t *)vm_vma_blk_addr(vma, 2) != PATTERN(2, 0))
		_exit(1);
	*(volatile uint64_t *)vm_vma_blk_addr(vma, 1) = 5;
	if (vm_fileh_dirty_writeout(fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED) != 0 ||
	    memfile_blk(m, 1)[0] != 5)
		_exit(2);
	_exit(0);
}

static void test_a_forked_child_maps_and_faults_on_its_own(void **unused)
{
	struct fx *f = fx_open_file(BS, 2, 2, 0);

	assert_int_equal(*word(f->vma, 1, 0), PATTERN(1, 0)); /* the engine runs */
	assert_child_passes(forked_child, f);
	/* The parent's faults still work. */
	assert_int_equal(*word(f->vma, 0, 3), PATTERN(0, 3));
	fx_close(f);
}

/* ---- one writeout at a time ------------------------------------------------------------ */

struct writeout_arg {
	vm_fileh *fh;
	int rc;
};

static void *writeout_thread(void *p)
{
	struct writeout_arg *a = p;
	a->rc = vm_fileh_dirty_writeout(a->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED);
	return NULL;
}

/* While a writeout runs (its storeblk held here), a second writeout and a
 * discard are refused with -EBUSY and change nothing; the first one then
 * ends normally. */
static void test_a_writeout_or_discard_during_a_writeout_is_ebusy(void **unused)
{
	struct fx *f = fx_open_file(BS, 3, 3, 0);
	struct writeout_arg a = { f->fh, -1 };
	pthread_t t;

	*word(f->vma, 0, 0) = 10;
	*word(f->vma, 2, 0) = 12;
	f->m->hold_blk = 2;
	assert_int_equal(pthread_create(&t, NULL, writeout_thread, &a), 0);
	memfile_wait_held(f->m);
	assert_int_equal(vm_fileh_dirty_writeout(f->fh, VM_WRITEOUT_STORE), -EBUSY);
	assert_int_equal(vm_fileh_dirty_discard(f->fh), -EBUSY);
	memfile_release_held(f->m);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.rc, 0);
	assert_int_equal(stats(f->fh).ndirty, 0);
	assert_int_equal(memfile_blk(f->m, 0)[0], 10);
	assert_int_equal(memfile_blk(f->m, 2)[0], 12);
	assert_int_equal(*word(f->vma, 2, 0), 12);
	fx_close(f);
}

/* A prefetch on an overlay handle does nothing: the base serves reads. */
static void test_a_prefetch_in_overlay_mode_loads_nothing(void **unused)
{
	struct fx *f = fx_open_file(BS, 2, 2, 1);

	assert_int_equal(vm_fileh_prefetch(f->fh, 1), 0);
	assert_int_equal(stats(f->fh).loads, 0);
	assert_int_equal(stats(f->fh).ncached, 0);
	assert_int_equal(*word(f->vma, 1, 2), PATTERN(1, 2));
	fx_close(f);
}

/* What virtmem logs is one line, however long what it names: an unknown
 * engine name of 2000 bytes is cut, not spread over lines. */
static void test_a_log_line_stays_one_line_however_long_its_subject(void **unused)
{
	struct memfile *m = memfile_new(BS, 1, 0);
	char *env = getenv("VIRTMEM_ENGINE") ? strdup(getenv("VIRTMEM_ENGINE")) : NULL;
	char name[2001], path[] = "/tmp/vmtest-log-XXXXXX", buf[8192];
	vm_fileh *fh;
	vm_ram *ram;
	int fd = mkstemp(path), saved = dup(2);

	assert_true(fd >= 0 && saved >= 0);
	unlink(path);
	memset(name, 'x', 2000);
	name[2000] = '\0';
	assert_int_equal(vm_ram_open(&ram, BS), 0);
	setenv("VIRTMEM_ENGINE", name, 1);
	fflush(stderr);
	dup2(fd, 2);
	int rc = vm_fileh_open(&fh, &m->file, ram, 0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	if (env)
		setenv("VIRTMEM_ENGINE", env, 1);
	else
		unsetenv("VIRTMEM_ENGINE");
	free(env);
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	assert_int_equal(rc, -EINVAL);
	assert_true(n > 100);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "VIRTMEM_ENGINE=xxx"));
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* one line */
	assert_int_equal(vm_ram_close(ram), 0);
	memfile_free(m);
}

/* ---- a backend that touches virtmem memory ----------------------------------------- */

static vm_vma *stray_vma;
static void *stray_bus_addr;

static int stray_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	memcpy(buf, vm_vma_addr(stray_vma), 8); /* would wait for itself */
	(void)f;
	(void)blk;
	return 0;
}

static void on_stray_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	stray_bus_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static void stray_backend_child(void *unused)
{
	static const vm_bigfile_ops ops = { .loadblk = stray_loadblk };
	vm_bigfile file = { .ops = &ops, .blksize = BS };
	struct memfile *m = memfile_new(BS, 2, 0);
	struct sigaction sa;
	vm_ram *ram;
	vm_fileh *fh, *other;
	vm_vma *vma;

	/* The SIGSEGV engine: the stray access is a nested fault in the
	 * same thread (test_virtmem_signals.c covers both engines' kill). */
	if (vm_ram_open(&ram, 4 * BS) < 0 ||
	    vm_fileh_open(&other, &m->file, ram, VM_ENGINE_SIGSEGV) < 0 ||
	    vm_fileh_mmap(&stray_vma, other, 0, 2) < 0 ||
	    vm_fileh_open(&fh, &file, ram, VM_ENGINE_SIGSEGV) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 1) < 0)
		_exit(90);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_stray_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
	if (sigsetjmp(jb, 1) == 0) {
		vm_vma_on_fault(vma, vm_vma_addr(vma), 0);
		_exit(1); /* the stray access must not complete */
	}
	/* The signal names the access the backend made. */
	_exit(stray_bus_addr == vm_vma_addr(stray_vma) ? 0 : 2);
}

/* A backend whose loadblk reads virtmem memory would wait for itself: the
 * stray access gets SIGBUS at its own address instead (SIGSEGV engine). */
static void test_a_backend_touching_virtmem_memory_gets_sigbus_at_that_address(void **unused)
{
	assert_child_passes(stray_backend_child, NULL);
}

/* ---- names and explicit faults ------------------------------------------------------ */

static void test_every_page_state_has_its_own_name(void **unused)
{
	static const struct {
		enum vm_page_state state;
		const char *name;
	} names[] = {
		{ VM_PAGE_EMPTY, "EMPTY" },
		{ VM_PAGE_LOADING, "LOADING" },
		{ VM_PAGE_LOADING_INVALIDATED, "LOADING_INVALIDATED" },
		{ VM_PAGE_LOADED, "LOADED" },
		{ VM_PAGE_LOADED_FOR_WRITE, "LOADED_FOR_WRITE" },
		{ VM_PAGE_DIRTY, "DIRTY" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_string_equal(vm_page_state_name(names[i].state), names[i].name);
	assert_string_equal(vm_page_state_name((enum vm_page_state)99), "?");
}

static void test_an_explicit_fault_outside_its_mapping_is_efault(void **unused)
{
	struct fx *f = fx_open_file(BS, 2, 2, 0);
	char *base = vm_vma_addr(f->vma);

	assert_int_equal(vm_vma_on_fault(f->vma, base - 1, 0), -EFAULT);
	assert_int_equal(vm_vma_on_fault(f->vma, base + 2 * BS, 1), -EFAULT);
	assert_int_equal(stats(f->fh).faults, 0);
	assert_int_equal(vm_vma_on_fault(f->vma, base + BS, 0), 0);
	assert_int_equal(vm_fileh_page_state(f->fh, 1), VM_PAGE_LOADED);
	fx_close(f);
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_a_mapping_larger_than_the_address_space_fails_and_the_handle_still_maps),
		cmocka_unit_test(test_a_mapping_of_no_blocks_or_past_the_last_block_number_is_einval),
		cmocka_unit_test(test_an_overlay_mapping_whose_base_cannot_be_mapped_fails_with_its_error),
		cmocka_unit_test(test_an_overlay_block_whose_remap_failed_is_mapped_again_on_the_next_read),
		cmocka_unit_test(test_engine_flags_and_virtmem_engine_choose_the_engine),
		cmocka_unit_test(test_where_userfaultfd_is_refused_the_sigsegv_engine_serves_and_uffd_is_refused),
		cmocka_unit_test(test_a_user_mode_only_userfaultfd_serves_faults_and_system_calls_get_efault),
		cmocka_unit_test(test_blocks_past_the_largest_file_offset_are_efbig_under_uffd),
		cmocka_unit_test(test_out_of_descriptors_a_handle_fails_to_open_then_opens_once_they_are_free),
		cmocka_unit_test(test_the_pool_refuses_budgets_it_cannot_hold),
		cmocka_unit_test(test_a_pool_in_use_is_not_closed),
		cmocka_unit_test(test_foreign_faults_go_to_a_previous_handler_without_siginfo),
		cmocka_unit_test(test_a_forked_child_maps_and_faults_on_its_own),
		cmocka_unit_test(test_a_writeout_or_discard_during_a_writeout_is_ebusy),
		cmocka_unit_test(test_a_prefetch_in_overlay_mode_loads_nothing),
		cmocka_unit_test(test_a_log_line_stays_one_line_however_long_its_subject),
		cmocka_unit_test(test_a_backend_touching_virtmem_memory_gets_sigbus_at_that_address),
		cmocka_unit_test(test_every_page_state_has_its_own_name),
		cmocka_unit_test(test_an_explicit_fault_outside_its_mapping_is_efault),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
