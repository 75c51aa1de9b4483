/* test_virtmem_signals.c — what a process sees from the fault handler: a
 * failed load is SIGBUS at the faulting address (and later accesses retry),
 * a full budget is SIGBUS, errno survives a fault, a wild access still kills
 * the process with SIGSEGV, a system call whose load failed gets EFAULT
 * and the next access loads, and an earlier SIGSEGV handler still gets the
 * faults that are not virtmem's, also when a handler installed over
 * virtmem's chains back to it, virtmem back in front of up to 32 handlers
 * installed over it (then it leaves the new one in front and says so
 * once), and a write to a read-only mapping is SIGBUS without a backend
 * call.  Each case runs in a child process.
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vmtest.h"

#define BS 4096

static sigjmp_buf jb;
static void *bus_addr;
static int bus_code, bus_count;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	bus_addr = si->si_addr;
	bus_code = si->si_code;
	bus_count++;
	siglongjmp(jb, 1);
}

static void catch_sigbus(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
}

struct child {
	struct memfile *m;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
};

static void child_open(struct child *c, size_t nblk, size_t budget_blocks)
{
	c->m = memfile_new(BS, nblk, 0);
	if (vm_ram_open(&c->ram, budget_blocks * BS) < 0 ||
	    vm_fileh_open(&c->fh, &c->m->file, c->ram, 0) < 0 ||
	    vm_fileh_mmap(&c->vma, c->fh, 0, nblk) < 0)
		_exit(90);
}

/* Exit codes: 0 all good, 1.. which check failed. */
static void failed_load_child(void *unused)
{
	struct child c;
	child_open(&c, 4, 4);
	volatile uint64_t *p = (uint64_t *)vm_vma_blk_addr(c.vma, 2) + 5;
	c.m->fail_load_blk = 2;
	catch_sigbus();
	if (sigsetjmp(jb, 1) == 0) {
		(void)*p;
		_exit(1); /* the read must not complete */
	}
	if (bus_addr != (void *)p)
		_exit(2);
	if (bus_code != BUS_ADRERR)
		_exit(3);
	if (vm_fileh_page_state(c.fh, 2) != VM_PAGE_EMPTY)
		_exit(4);
	/* A later access retries the load. */
	c.m->fail_load_blk = -1;
	if (*p != PATTERN(2, 5))
		_exit(5);
	if (bus_count != 1)
		_exit(6);
	_exit(0);
}

static void test_failed_load_is_sigbus_at_faulting_address(void **unused)
{
	int st = run_in_child(failed_load_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A system call whose load failed gets EFAULT (uffd: the load ran and
 * failed; sigsegv: the kernel does not fault for us) and leaves nothing
 * behind: the same thread's next access to the block loads it, with no
 * SIGBUS for the failure the system call already reported; so does a
 * system call, and the mapping then unmaps cleanly. */
static void failed_syscall_load_child(void *unused)
{
	struct child c;
	uint64_t w = 0;
	int fds[2];

	child_open(&c, 4, 4);
	volatile uint64_t *p = (uint64_t *)vm_vma_blk_addr(c.vma, 1);
	volatile uint64_t *q = (uint64_t *)vm_vma_blk_addr(c.vma, 3);
	if (pipe(fds) < 0)
		_exit(90);
	catch_sigbus();
	c.m->fail_load_blk = 1;
	if (write(fds[1], &w, 8) != 8 || read(fds[0], (void *)p, 8) != -1 || errno != EFAULT)
		_exit(1);
	c.m->fail_load_blk = 3;
	if (write(fds[1], (void *)q, 8) != -1 || errno != EFAULT)
		_exit(2);
	c.m->fail_load_blk = -1;
	if (sigsetjmp(jb, 1) == 0) {
		if (*p != PATTERN(1, 0))
			_exit(3);
	} else {
		_exit(4); /* SIGBUS for the failure read(2) got */
	}
	if (fh_uffd(c.fh) && (read(fds[0], (void *)p, 8) != 8 || *p != 0))
		_exit(5);
	vm_vma_unmap(c.vma);
	if (vm_fileh_mmap(&c.vma, c.fh, 0, 4) < 0)
		_exit(90);
	q = (uint64_t *)vm_vma_blk_addr(c.vma, 3);
	if (sigsetjmp(jb, 1) == 0) {
		if (*q != PATTERN(3, 0))
			_exit(6);
	} else {
		_exit(7);
	}
	if (bus_count != 0)
		_exit(8);
	_exit(0);
}

static void test_a_system_call_whose_load_failed_gets_efault_and_the_next_access_loads(void **unused)
{
	int st = run_in_child(failed_syscall_load_child, NULL);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	if (WEXITSTATUS(st) != 0)
		fail_msg("the child failed at its check %d", WEXITSTATUS(st));
}

static void failed_load_default_child(void *unused)
{
	struct child c;
	child_open(&c, 4, 4);
	c.m->fail_load_blk = 1;
	(void)*(volatile char *)vm_vma_blk_addr(c.vma, 1);
	_exit(1);
}

static void test_failed_load_kills_with_sigbus_by_default(void **unused)
{
	int st = run_in_child(failed_load_default_child, NULL);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
}

static void sigbus_blocked_child(void *unused)
{
	struct child c;
	sigset_t set;
	child_open(&c, 4, 4);
	c.m->fail_load_blk = 1;
	sigemptyset(&set);
	sigaddset(&set, SIGBUS);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGBUS, SIG_IGN);
	(void)*(volatile char *)vm_vma_blk_addr(c.vma, 1);
	_exit(1);
}

static void test_blocked_or_ignored_sigbus_still_kills(void **unused)
{
	int st = run_in_child(sigbus_blocked_child, NULL);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
}

static void full_budget_child(void *unused)
{
	struct child c;
	child_open(&c, 4, 2);
	*(volatile char *)vm_vma_blk_addr(c.vma, 0) = 1;
	*(volatile char *)vm_vma_blk_addr(c.vma, 1) = 1;
	catch_sigbus();
	if (sigsetjmp(jb, 1) == 0) {
		*(volatile char *)vm_vma_blk_addr(c.vma, 2) = 1;
		_exit(1);
	}
	if (bus_addr != vm_vma_blk_addr(c.vma, 2))
		_exit(2);
	/* Dirty data survived. */
	if (*(volatile char *)vm_vma_blk_addr(c.vma, 0) != 1)
		_exit(3);
	_exit(0);
}

static void test_full_budget_of_dirty_pages_is_sigbus(void **unused)
{
	int st = run_in_child(full_budget_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_errno_survives_a_fault(void **unused)
{
	struct memfile *m = memfile_new(BS, 2, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	assert_int_equal(vm_ram_open(&ram, 2 * BS), 0);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&vma, fh, 0, 2), 0);
	volatile uint64_t *p = vm_vma_blk_addr(vma, 1);
	errno = 12345;
	uint64_t v = *p;  /* read fault */
	assert_int_equal(errno, 12345);
	*p = v + 1;       /* write fault */
	assert_int_equal(errno, 12345);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	vm_ram_close(ram);
	memfile_free(m);
}

/* An address the compiler cannot see through (no -Warray-bounds). */
static void *wild_addr(uintptr_t a)
{
	volatile uintptr_t v = a;
	return (void *)v;
}

static void wild_access_child(void *unused)
{
	struct child c;
	child_open(&c, 2, 2);
	(void)*(volatile char *)vm_vma_addr(c.vma); /* virtmem's: fine */
	(void)*(volatile int *)wild_addr(16);       /* not virtmem's */
	_exit(1);
}

static void test_wild_access_still_crashes_with_sigsegv(void **unused)
{
	int st = run_in_child(wild_access_child, NULL);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSEGV);
}

static void *prev_addr;

static void prev_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	prev_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static void previous_handler_child(void *unused)
{
	struct sigaction sa;
	struct child c;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = prev_handler;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	child_open(&c, 2, 2); /* installs virtmem's handler over ours */
	if (sigsetjmp(jb, 1) == 0) {
		(void)*(volatile int *)wild_addr(24);
		_exit(1);
	}
	if (prev_addr != (void *)24)
		_exit(2);
	/* virtmem's own faults still work afterwards. */
	if (*(volatile uint64_t *)vm_vma_blk_addr(c.vma, 1) != PATTERN(1, 0))
		_exit(3);
	_exit(0);
}

static void test_foreign_faults_go_to_previous_handler(void **unused)
{
	int st = run_in_child(previous_handler_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* 33 distinct handlers: h<i> notes i and jumps back. */
static volatile sig_atomic_t which_handler = -1;
#define H(i)                                                      \
	static void h##i(int sig, siginfo_t *si, void *uc)        \
	{                                                         \
		(void)sig;                                        \
		(void)si;                                         \
		(void)uc;                                         \
		which_handler = i;                                \
		siglongjmp(jb, 1);                                \
	}
H(0) H(1) H(2) H(3) H(4) H(5) H(6) H(7) H(8) H(9) H(10) H(11) H(12) H(13) H(14) H(15) H(16)
H(17) H(18) H(19) H(20) H(21) H(22) H(23) H(24) H(25) H(26) H(27) H(28) H(29) H(30) H(31) H(32)
#undef H
static void (*const many_handlers[33])(int, siginfo_t *, void *) = {
	h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11, h12, h13, h14, h15, h16,
	h17, h18, h19, h20, h21, h22, h23, h24, h25, h26, h27, h28, h29, h30, h31, h32,
};

/* Handlers installed over virtmem's one after the other, each followed by
 * a vm_fileh_mmap: virtmem puts its own back in front and hands a foreign
 * fault to the latest, as long as it can remember them (32 dispositions,
 * those seen before included); then it leaves the new one in front, and
 * says so in one line, once. */
static void many_handlers_child(void *unused)
{
	char path[] = "/tmp/vmtest-handlers-XXXXXX", log[4096];
	int logfd = mkstemp(path);
	struct sigaction sa, cur;
	struct child c;
	vm_vma *vma;

	child_open(&c, 2, 2);
	if (logfd < 0)
		_exit(90);
	unlink(path);
	dup2(logfd, 2);
	int k = -1; /* the first handler left in front */
	for (int i = 0; i < 34; i++) {
		int h = i < 33 ? i : 32;
		memset(&sa, 0, sizeof(sa));
		sa.sa_sigaction = many_handlers[h];
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSEGV, &sa, NULL);
		if (vm_fileh_mmap(&vma, c.fh, 0, 2) != 0)
			_exit(1);
		sigaction(SIGSEGV, NULL, &cur);
		int front = cur.sa_sigaction == many_handlers[h];
		if (front && k < 0)
			k = i;
		if (front != (k >= 0))
			_exit(2); /* once it gave up, virtmem stays behind */
		which_handler = -1;
		if (sigsetjmp(jb, 1) == 0) {
			(void)*(volatile int *)wild_addr(32);
			_exit(3);
		}
		if (which_handler != h)
			_exit(4); /* the foreign fault went to the latest handler */
		if (k < 0 && *(volatile uint64_t *)vm_vma_blk_addr(vma, 1) != PATTERN(1, 0))
			_exit(5);
		vm_vma_unmap(vma);
	}
	/* The 32 slots were shared with what was installed before. */
	if (k < 1 || k > 32)
		_exit(7);
	ssize_t n = pread(logfd, log, sizeof(log) - 1, 0);
	log[n > 0 ? n : 0] = '\0';
	char *first = strstr(log, "too many SIGSEGV handlers installed over virtmem's");
	if (first == NULL || strstr(first + 1, "too many SIGSEGV handlers") != NULL)
		_exit(6);
	_exit(0);
}

static void test_virtmem_comes_back_in_front_of_up_to_32_handlers_and_says_once_when_it_gives_up(void **unused)
{
	int st = run_in_child(many_handlers_child, NULL);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	if (WEXITSTATUS(st) != 0)
		fail_msg("the child failed at its check %d", WEXITSTATUS(st));
}


/* A handler H installed over virtmem's that chains to the disposition it
 * replaced (virtmem's), as test frameworks and runtimes do.  virtmem then
 * puts its handler in front again (its previous handler is now H): a foreign
 * fault must go H -> virtmem -> A (the handler installed before virtmem)
 * once, not loop virtmem -> H -> virtmem ... until the stack overflows. */
static struct sigaction h_prev;
static int h_count, a_count;
static void *a_addr;

static void chaining_handler(int sig, siginfo_t *si, void *uc)
{
	h_count++;
	if (h_prev.sa_flags & SA_SIGINFO)
		h_prev.sa_sigaction(sig, si, uc);
	else if (h_prev.sa_handler != SIG_DFL && h_prev.sa_handler != SIG_IGN)
		h_prev.sa_handler(sig);
}

static void first_handler(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	a_count++;
	a_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static void chaining_over_virtmem_child(void *unused)
{
	struct sigaction sa;
	struct child c;
	vm_vma *vma2;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = first_handler;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSEGV, &sa, NULL);
	child_open(&c, 2, 2); /* virtmem in front; its previous handler: A */
	sa.sa_sigaction = chaining_handler;
	sigaction(SIGSEGV, &sa, &h_prev); /* H over virtmem; H chains to it */
	if (vm_fileh_mmap(&vma2, c.fh, 0, 2) < 0) /* virtmem in front again */
		_exit(90);
	/* Twice from the same place: A's siglongjmp leaves the first chain
	 * without returning through virtmem's handler. */
	for (volatile int i = 1; i <= 2; i++) {
		if (sigsetjmp(jb, 1) == 0) {
			(void)*(volatile int *)wild_addr(32);
			_exit(1);
		}
		if (a_count != i || a_addr != (void *)32)
			_exit(2);
		if (h_count != i)
			_exit(3);
	}
	/* virtmem's own faults still work, through both mappings. */
	if (*(volatile uint64_t *)vm_vma_blk_addr(c.vma, 1) != PATTERN(1, 0) ||
	    *(volatile uint64_t *)vm_vma_blk_addr(vma2, 0) != PATTERN(0, 0))
		_exit(4);
	*(volatile uint64_t *)vm_vma_blk_addr(vma2, 1) = 7;
	if (*(volatile uint64_t *)vm_vma_blk_addr(c.vma, 1) != 7)
		_exit(5);
	_exit(0);
}

static void test_handler_chaining_back_to_virtmem_does_not_recurse(void **unused)
{
	int st = run_in_child(chaining_over_virtmem_child, NULL);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* A backend whose loadblk reads virtmem memory would deadlock; it gets an
 * error (SIGBUS on the outer access) instead. */
static vm_vma *other_vma;

static int reentrant_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	memcpy(buf, vm_vma_addr(other_vma), 8);
	(void)f;
	(void)blk;
	return 0;
}

static void reentrant_child(void *unused)
{
	static const vm_bigfile_ops ops = { .loadblk = reentrant_loadblk };
	vm_bigfile file = { .ops = &ops, .blksize = BS };
	struct child c;
	vm_fileh *fh;
	vm_vma *vma;
	child_open(&c, 2, 4);
	other_vma = c.vma;
	if (vm_fileh_open(&fh, &file, c.ram, 0) < 0 || vm_fileh_mmap(&vma, fh, 0, 1) < 0)
		_exit(90);
	/* Outside a signal handler (an explicit fault, as writeout's storeblk
	 * would be), the backend's stray access reaches virtmem's handler. */
	vm_vma_on_fault(vma, vm_vma_addr(vma), 0);
	_exit(1);
}

static void test_backend_touching_virtmem_memory_fails_not_deadlocks(void **unused)
{
	int st = run_in_child(reentrant_child, NULL);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGBUS);
}

/* A write to a VM_READONLY handle's mapping is SIGBUS at the address, with
 * one line on stderr naming the block and the file, and no backend call:
 * on_fault, told of the read before, is not called for the refused
 * writes (under the SIGSEGV engine it would run in the signal handler, and
 * the uffd engine makes no backend call there at all). */
static atomic_int readonly_on_faults;

static void count_on_fault(vm_bigfile *f, vm_blk_t blk, int write)
{
	(void)f;
	(void)blk;
	(void)write;
	atomic_fetch_add(&readonly_on_faults, 1);
}

static void readonly_write_child(void *unused)
{
	static const vm_bigfile_ops ops = { .loadblk = memfile_loadblk, .on_fault = count_on_fault };
	struct memfile *m = memfile_new(BS, 2, 0);
	volatile uint64_t *p0, *p1;
	char err[512] = "";
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	int errfd = memfd_create("stderr", 0);

	m->file.ops = &ops;
	m->file.name = "readonly-test-file";
	if (errfd < 0 || vm_ram_open(&ram, 2 * BS) < 0 ||
	    vm_fileh_open(&fh, &m->file, ram, VM_READONLY) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 2) < 0)
		_exit(90);
	p0 = (uint64_t *)vm_vma_blk_addr(vma, 0) + 3;
	p1 = (uint64_t *)vm_vma_blk_addr(vma, 1) + 5;
	if (*p0 != PATTERN(0, 3) || atomic_load(&readonly_on_faults) != 1)
		_exit(1);
	dup2(errfd, STDERR_FILENO);
	catch_sigbus();
	/* A loaded block, then one never loaded. */
	if (sigsetjmp(jb, 1) == 0) {
		*p0 = 1;
		_exit(2);
	}
	if (bus_addr != (void *)p0 || bus_code != BUS_ADRERR)
		_exit(3);
	if (sigsetjmp(jb, 1) == 0) {
		*p1 = 1;
		_exit(4);
	}
	if (bus_addr != (void *)p1 || bus_count != 2)
		_exit(5);
	if (atomic_load(&readonly_on_faults) != 1)
		_exit(6);
	if (pread(errfd, err, sizeof(err) - 1, 0) <= 0 ||
	    strstr(err, "block 0 of readonly-test-file") == NULL ||
	    strstr(err, "block 1 of readonly-test-file") == NULL ||
	    strstr(err, "read-only") == NULL)
		_exit(7);
	if (*p0 != PATTERN(0, 3) || vm_fileh_page_state(fh, 1) != VM_PAGE_EMPTY)
		_exit(8);
	_exit(0);
}

static void test_write_to_readonly_mapping_is_sigbus_without_backend_call(void **unused)
{
	int st = run_in_child(readonly_write_child, NULL);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failed_load_is_sigbus_at_faulting_address),
		cmocka_unit_test(test_a_system_call_whose_load_failed_gets_efault_and_the_next_access_loads),
		cmocka_unit_test(test_failed_load_kills_with_sigbus_by_default),
		cmocka_unit_test(test_blocked_or_ignored_sigbus_still_kills),
		cmocka_unit_test(test_full_budget_of_dirty_pages_is_sigbus),
		cmocka_unit_test(test_errno_survives_a_fault),
		cmocka_unit_test(test_wild_access_still_crashes_with_sigsegv),
		cmocka_unit_test(test_foreign_faults_go_to_previous_handler),
		cmocka_unit_test(test_handler_chaining_back_to_virtmem_does_not_recurse),
		cmocka_unit_test(test_virtmem_comes_back_in_front_of_up_to_32_handlers_and_says_once_when_it_gives_up),
		cmocka_unit_test(test_backend_touching_virtmem_memory_fails_not_deadlocks),
		cmocka_unit_test(test_write_to_readonly_mapping_is_sigbus_without_backend_call),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
