/* uffd.c — the userfaultfd fault engine: a handle's blocks live in a memfd
 * of its own (block blk at offset blk * blksize), each mapping is one
 * shared mapping of that memfd registered MISSING|MINOR|WP with one
 * process-wide userfaultfd, and handler threads serve its faults.
 *
 * A fault on a block the memfd lacks (a hole: MISSING) or holds without a
 * page table entry in this mapping (MINOR) goes to a handler thread, which
 * runs the fault path (fault.c) with no signal involved: the load fills the
 * memfd (pwrite, or the backend writing through a view of the block in the
 * thread's window, mapped back to nothing after), UFFDIO_CONTINUE maps
 * the block, and the faulting threads are woken once vm_lock is given up.
 * The kernel waits for the handler on faults of system calls too, so
 * read(2)/write(2) on unloaded memory work.  A clean page is
 * mapped write-protected with UFFD_FEATURE_WP_ASYNC: a write to it costs no
 * fault to user space, and PAGEMAP_SCAN finds the pages written (and
 * write-protects them again) when virtmem needs to know (writeout, reclaim,
 * stats; before a clean page is dropped, see uffd_fence_locked).
 * Dropping a page punches its range out of the memfd, which
 * unmaps it from every mapping at once: the mapping stays one kernel
 * mapping whatever is loaded, and each cached byte is mapped once.
 *
 * A handler thread binds itself to the CPU of the thread it served last
 * (follow_thread), where that thread's next fault wakes it.  With
 * VIRTMEM_UFFD_AWAKE=1, while a handler loads a block, one more thread
 * (vm-awake, at SCHED_IDLE) keeps an otherwise idle CPU running
 * (awake_main), so that the wake-ups of the miss do not land on a halted
 * CPU.
 *
 * Owns: the process's userfaultfd (ctx), its handler threads, the handles'
 * memfds, the threads' view windows, the notes of failed faults; the
 * parse of a longest poll from the environment (vm_poll_us_env, which
 * libblkmap's misses use too).
 * Locking: ctx is set up once (pthread_once); its threads are started
 * and counted under ctx.mu, which may be taken with vm_lock held (a
 * handler about to wait in vm_lock_wait_io), never the other way round;
 * ctx.blocked and the awake_* fields are atomic.  The notes of failed
 * faults are under vm_lock.
 * Everything that touches pages runs under vm_lock, taken by the fault
 * path.  A handler thread blocks every signal; it may sleep in the fault
 * path (a load, a wait for another thread's load or store), so one more
 * is started when every thread would block (handler_blocks).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/futex.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Debian 12's kernel headers are 6.1's: what 6.7 added is defined here;
 * the kernel decides at run time. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start, end, categories;
};
struct pm_scan_arg {
	__u64 size, flags, start, end, walk_end, vec, vec_len, max_pages;
	__u64 category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PM_SCAN_WP_MATCHING (1 << 0)
#endif

#define UFFD_FEATURES                                                     \
	(UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM |          \
	 UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_ASYNC |         \
	 UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EXACT_ADDRESS)
#define HANDLERS_MIN 2
#define HANDLERS_MAX 64
#define HANDLER_STACK ((size_t)8 << 20)
enum { AWAKE_OFF, AWAKE_ASLEEP, AWAKE_SPINNING }; /* ctx.awake_state, see awake_main */
#define AWAKE_LOAD_SPINS 10 /* see awake_main */
#define SPIN_MAX_US 50 /* see read_msg */

#define UFFD_MODES \
	(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_WP)


static struct {
	pthread_once_t once;
	int err;             /* 0: usable, else why not (-errno) */
	int fd;              /* the userfaultfd */
	int pagemap;         /* /proc/self/pagemap, for PAGEMAP_SCAN */
	bool user_mode_only; /* faults of system calls are not ours: EFAULT */
	size_t pagesize;
	pthread_mutex_t mu;
	unsigned nthreads;   /* handler threads (written under mu) */
	unsigned blocked;    /* of which in a backend call or a wait (atomic) */
	int epfd[HANDLERS_MAX]; /* their epoll instances, [0, nthreads) */
	uint64_t spin_max_ns; /* the longest poll (read_msg); 0: none */
	uint64_t spin_ns;    /* the next polls' length (atomic) */
	uint64_t served_ns;  /* when the last serve ended (atomic) */
	unsigned polling;    /* threads polling now (atomic) */
	uint64_t busy_until_ns; /* no poll before (atomic; read_msg) */
	bool follow;         /* handlers follow the faulting threads' CPUs */
	bool awake;          /* VIRTMEM_UFFD_AWAKE=1: awake_main runs */
	cpu_set_t cpus;      /* the CPUs the process could run on at setup */
	bool awake_started;  /* awake_main was started (under mu) */
	int awake_state;     /* AWAKE_*: awake_main's futex word (atomic) */
	uint64_t awake_until_ns; /* awake_main spins until then at least (atomic) */
	uint64_t awake_load_ns; /* when the last load began (atomic) */
} ctx = { .once = PTHREAD_ONCE_INIT, .fd = -1, .pagemap = -1,
	  .mu = PTHREAD_MUTEX_INITIALIZER };

/* Opens a userfaultfd: /dev/userfaultfd (its group may be granted it),
 * else the system call, else the system call for user-mode faults only. */
static int uffd_open(bool *user_mode_only)
{
	int fd, dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

	*user_mode_only = false;
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0)
		return fd;
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd >= 0)
		*user_mode_only = true;
	return fd < 0 ? -errno : fd;
}

/* Whether PAGEMAP_SCAN works here (6.7+). */
static int pagemap_probe(int pagemap)
{
	static char probe[1];
	struct page_region r;
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.start = (uintptr_t)probe & ~(ctx.pagesize - 1),
		.end = ((uintptr_t)probe & ~(ctx.pagesize - 1)) + ctx.pagesize,
		.vec = (uintptr_t)&r, .vec_len = 1,
		.category_mask = PAGE_IS_PRESENT, .return_mask = PAGE_IS_PRESENT,
	};
	return ioctl(pagemap, PAGEMAP_SCAN, &a) < 0 ? -errno : 0;
}

int vm_poll_us_env(const char *name, unsigned dflt, unsigned *us)
{
	const char *env = getenv(name);
	unsigned long v = dflt;
	int rc = 0;
	cpu_set_t cpus;

	if (env != NULL && *env != '\0') {
		char *end;
		errno = 0;
		v = strtoul(env, &end, 10);
		if (errno != 0 || *end != '\0' || v > VM_POLL_US_MAX) {
			v = dflt;
			rc = -EINVAL;
		}
	}
	if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) < 2)
		v = 0;
	*us = (unsigned)v;
	return rc;
}

/* The longest poll of a handler thread (read_msg), from
 * VIRTMEM_UFFD_SPIN_US; none when the process may run on one CPU only. */
static uint64_t spin_max_setup(void)
{
	unsigned us;

	if (vm_poll_us_env("VIRTMEM_UFFD_SPIN_US", SPIN_MAX_US, &us) < 0)
		vm_log("VIRTMEM_UFFD_SPIN_US=%s: not a number of microseconds from 0 to %d; "
		       "%d is used", getenv("VIRTMEM_UFFD_SPIN_US"), VM_POLL_US_MAX, SPIN_MAX_US);
	return (uint64_t)us * 1000;
}

/* Whether handler threads follow the faulting threads' CPUs
 * (follow_thread): not when the process may run on one CPU only, nor with
 * VIRTMEM_UFFD_FOLLOW=0. */
static bool follow_setup(void)
{
	const char *env = getenv("VIRTMEM_UFFD_FOLLOW");

	if (env != NULL && *env != '\0' && strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
		vm_log("VIRTMEM_UFFD_FOLLOW=%s: not 0 or 1; 1 is used", env);
	if (sched_getaffinity(0, sizeof(ctx.cpus), &ctx.cpus) < 0 || CPU_COUNT(&ctx.cpus) < 2)
		return false;
	return env == NULL || strcmp(env, "0") != 0;
}

/* Whether vm-awake runs (awake_main): only with VIRTMEM_UFFD_AWAKE=1, and
 * only when handler threads poll. */
static bool awake_setup(void)
{
	const char *env = getenv("VIRTMEM_UFFD_AWAKE");

	if (env != NULL && *env != '\0' && strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
		vm_log("VIRTMEM_UFFD_AWAKE=%s: not 0 or 1; 0 is used", env);
	return env != NULL && strcmp(env, "1") == 0 && ctx.spin_max_ns > 0;
}

static void uffd_setup(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURES };
	int fd;

	ctx.pagesize = (size_t)sysconf(_SC_PAGESIZE);
	ctx.spin_max_ns = spin_max_setup();
	ctx.follow = follow_setup();
	ctx.awake = awake_setup();
	fd = uffd_open(&ctx.user_mode_only);
	if (fd < 0) {
		ctx.err = fd;
		return;
	}
	if (ioctl(fd, UFFDIO_API, &api) < 0 ||
	    (api.features & UFFD_FEATURES) != UFFD_FEATURES ||
	    !(api.ioctls & (1ull << _UFFDIO_REGISTER))) {
		ctx.err = errno ? -errno : -ENOTSUP;
		close(fd);
		return;
	}
	ctx.pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (ctx.pagemap < 0 || (ctx.err = pagemap_probe(ctx.pagemap)) < 0) {
		if (ctx.pagemap < 0)
			ctx.err = -errno;
		close(fd);
		if (ctx.pagemap >= 0)
			close(ctx.pagemap);
		ctx.pagemap = -1;
		return;
	}
	ctx.fd = fd;
}

/* A forked child has the descriptor but none of the threads, and faults on
 * its own mappings must not go to its parent's: it sets up its own. */
static void uffd_atfork_child(void)
{
	if (ctx.fd >= 0)
		close(ctx.fd);
	if (ctx.pagemap >= 0)
		close(ctx.pagemap);
	for (unsigned i = 0; i < ctx.nthreads; i++)
		close(ctx.epfd[i]);
	ctx = (__typeof__(ctx)){ .once = PTHREAD_ONCE_INIT, .fd = -1, .pagemap = -1,
				 .mu = PTHREAD_MUTEX_INITIALIZER };
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_register(void)
{
	pthread_atfork(NULL, NULL, uffd_atfork_child);
}

static int uffd_probe(void)
{
	pthread_once(&atfork_once, atfork_register);
	pthread_once(&ctx.once, uffd_setup);
	return ctx.err;
}

bool uffd_user_mode_only(void)
{
	return uffd_probe() == 0 && ctx.user_mode_only;
}

/* ---- the handler threads ------------------------------------------------- */

/* Wakes the threads waiting on [addr, addr + len). */
static void uffd_wake(uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };
	(void)ioctl(ctx.fd, UFFDIO_WAKE, &r);
}

/* A handler thread maps a block with vm_lock held and wakes the threads
 * waiting on it only once it has given vm_lock up (serve): a thread woken
 * on the handler's CPU runs at once, and if the handler still held vm_lock
 * then, the next fault's handler would wait for it (measured with perf:
 * one fault in three went through two more context switches).  The ranges
 * to wake are the thread's own; more than NWAKE are woken at once. */
#define NWAKE 8
static __thread struct wakes {
	bool defer;
	unsigned n;
	struct uffdio_range r[NWAKE];
} wakes __attribute__((tls_model("initial-exec")));

static void wake_flush(void)
{
	for (unsigned i = 0; i < wakes.n; i++)
		(void)ioctl(ctx.fd, UFFDIO_WAKE, &wakes.r[i]);
	wakes.n = 0;
}

static void wake_later(uintptr_t addr, size_t len)
{
	if (wakes.n == NWAKE)
		wake_flush();
	wakes.r[wakes.n++] = (struct uffdio_range){ .start = addr, .len = len };
}

/* A failed fault cannot be answered from here: only the faulting thread
 * may give itself a SIGBUS with an address (the kernel refuses si_code
 * BUS_ADRERR from another thread).  So the os page is made PROT_NONE and the
 * failure noted; the thread's retry then takes SIGSEGV, and the SIGSEGV
 * engine's handler, in that thread, finds the note (uffd_signal_fault_locked)
 * and raises SIGBUS at the address, as for a failed read of an mmapped
 * file.  A system call that faulted gets EFAULT instead; its note is for
 * no thread, so that the next access retries (with no SIGBUS for the
 * failure the system call reported). */
#define NFAILED 64
static struct failed {
	uintptr_t page;      /* os page made PROT_NONE; 0: a free entry */
	vm_vma *vma;
	pid_t tid;           /* the thread whose fault failed */
	int err;
	vm_blk_t blk;
} failed[NFAILED];      /* under vm_lock */
static unsigned failed_next;

static void failed_clear_locked(struct failed *f)
{
	int prot = f->vma->fh->readonly ? PROT_READ : PROT_READ | PROT_WRITE;
	(void)mprotect((void *)f->page, ctx.pagesize, prot);
	f->page = 0;
}

/* Whether thread tid, blocked in a fault, took it in a system call (the
 * kernel reading or writing user memory for it): /proc's syscall file
 * names the call, or -1 for a fault of user mode. */
static bool thread_in_syscall(pid_t tid)
{
	char path[64], buf[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && buf[0] != '-' && strncmp(buf, "running", 7) != 0;
}

static void uffd_fail(uintptr_t addr, pid_t tid, int err, vm_blk_t blk)
{
	uintptr_t page = addr & ~(ctx.pagesize - 1);
	struct failed *f;
	vm_vma *vma;

	if (thread_in_syscall(tid))
		tid = 0; /* it gets EFAULT: no SIGBUS for it later */
	vm_lock_acquire();
	vma = vma_lookup_locked(addr);
	if (vma != NULL && vma->fh->engine == &vm_engine_uffd) {
		f = &failed[failed_next++ % NFAILED];
		if (f->page != 0)
			failed_clear_locked(f);
		if (mprotect((void *)page, ctx.pagesize, PROT_NONE) == 0)
			*f = (struct failed){ page, vma, tid, err, blk };
	}
	vm_lock_release();
}

/* The SIGSEGV engine's handler got a fault on a uffd mapping: a failure
 * noted by uffd_fail (its error for the thread it was for; a retry for any
 * other), or a write to a read-only handle (mapped PROT_READ): -EROFS, with
 * no backend call. */
static int uffd_signal_fault_locked(vm_vma *vma, uintptr_t addr, int write, vm_blk_t *blkp)
{
	uintptr_t page = addr & ~(ctx.pagesize - 1);
	pid_t self = (pid_t)syscall(SYS_gettid);
	int rc = 0;

	vm_lock_assert_held();
	*blkp = vma_blk_of(vma, addr);
	for (unsigned i = 0; i < NFAILED; i++) {
		struct failed *f = &failed[i];
		if (f->page != page || f->vma != vma)
			continue;
		if (f->tid == self) {
			rc = f->err;
			*blkp = f->blk;
		}
		failed_clear_locked(f);
		return rc;
	}
	if (write && vma->fh->readonly)
		return fault_readonly_locked(vma, *blkp);
	return 0;
}

static void uffd_vma_forget_failed_locked(vm_vma *vma)
{
	for (unsigned i = 0; i < NFAILED; i++)
		if (failed[i].page != 0 && failed[i].vma == vma)
			failed[i].page = 0; /* the mapping goes */
}

static void handler_start_locked(void);

/* ---- keeping a CPU awake while a block loads -------------------------------- */

/* A miss served by a handler is a chain of wake-ups (see follow_thread):
 * the handler wakes the server, the answer wakes the handler, the handler
 * wakes the faulting thread.  The scheduler puts a woken thread on an idle
 * CPU when there is one, and the handler's own CPU is busy with the handler
 * when it wakes the faulting thread: that thread went to the other CPU,
 * idle since the server answered.  On a virtual machine whose idle CPUs
 * halt (the 2-vCPU benchmark VM: cpuidle haltpoll, guest_halt_poll_ns 0)
 * each such wake-up is an exit to the host, tens of microseconds, and a
 * quiet machine paid it on every miss (the SIGSEGV engine's faulting thread
 * polls for its own answer and pays only the server's).  So while a handler
 * is in a backend call (a load: handler_blocks), up to AWAKE_LOAD_SPINS
 * times spin_max_ns after it began, and for spin_max_ns after the last one
 * ended, a thread of its own, vm-awake, spins at SCHED_IDLE: the CPU it
 * runs on stays out of halt, and counts as idle to the scheduler, which
 * puts the woken threads there; any other thread preempts it at once, so
 * it takes only CPU time nothing else wants (none on a loaded machine).
 * A load slower than that (a server far away) is slept through: a wake-up
 * on a halted CPU is small beside it.  It sleeps on a futex once no load
 * came for spin_max_ns: a process that stopped faulting burns nothing.  Started with the first handlers, only with
 * VIRTMEM_UFFD_AWAKE=1 and polling on (VIRTMEM_UFFD_SPIN_US, which is 0
 * when the process may run on one CPU only); a kernel refusing SCHED_IDLE
 * ends it (AWAKE_OFF).  Off by default: on this VM under other sessions'
 * load it made misses slower (docs/virtmem.md), and a quiet machine, where
 * it is meant to pay, was not to be had to measure it. */
static uint64_t now_ns(void);

static long futex(int *word, int op, int val)
{
	return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

/* A load starts (ctx.blocked was raised before): vm-awake spins. */
static void awake_kick(void)
{
	int asleep = AWAKE_ASLEEP;

	if (__atomic_load_n(&ctx.awake_state, __ATOMIC_RELAXED) == AWAKE_OFF)
		return;
	__atomic_store_n(&ctx.awake_load_ns, now_ns(), __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&ctx.awake_state, __ATOMIC_SEQ_CST) == AWAKE_ASLEEP &&
	    __atomic_compare_exchange_n(&ctx.awake_state, &asleep, AWAKE_SPINNING, false,
					__ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		(void)futex(&ctx.awake_state, FUTEX_WAKE_PRIVATE, 1);
}

/* A load ended: vm-awake spins on for spin_max_ns, for the faulting
 * thread's wake-up and its next fault. */
static void awake_note_end(void)
{
	if (__atomic_load_n(&ctx.awake_state, __ATOMIC_RELAXED) != AWAKE_OFF)
		__atomic_store_n(&ctx.awake_until_ns, now_ns() + ctx.spin_max_ns, __ATOMIC_RELAXED);
}

static bool awake_wanted(void)
{
	uint64_t now = now_ns();

	if (now < __atomic_load_n(&ctx.awake_until_ns, __ATOMIC_RELAXED))
		return true;
	return __atomic_load_n(&ctx.blocked, __ATOMIC_SEQ_CST) > 0 &&
	       now - __atomic_load_n(&ctx.awake_load_ns, __ATOMIC_SEQ_CST) <
		       AWAKE_LOAD_SPINS * ctx.spin_max_ns;
}

static void *awake_main(void *arg)
{
	struct sched_param param = { .sched_priority = 0 };

	/* At SCHED_IDLE (or off) before the starter goes on. */
	if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &param) != 0) {
		__atomic_store_n(&ctx.awake_state, AWAKE_OFF, __ATOMIC_SEQ_CST);
		sem_post(arg);
		return NULL;
	}
	sem_post(arg); /* the starter's: not touched again */
	for (;;) {
		while (awake_wanted())
			for (int i = 0; i < 64; i++) {
#if defined(__x86_64__) || defined(__i386__)
				__builtin_ia32_pause();
#endif
				__atomic_signal_fence(__ATOMIC_SEQ_CST);
			}
		__atomic_store_n(&ctx.awake_state, AWAKE_ASLEEP, __ATOMIC_SEQ_CST);
		/* A load that started before the store saw AWAKE_SPINNING and
		 * kicked no one: this sees it. */
		if (awake_wanted()) {
			int asleep = AWAKE_ASLEEP;
			(void)__atomic_compare_exchange_n(&ctx.awake_state, &asleep, AWAKE_SPINNING, false,
							  __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
			continue;
		}
		while (__atomic_load_n(&ctx.awake_state, __ATOMIC_SEQ_CST) == AWAKE_ASLEEP)
			(void)futex(&ctx.awake_state, FUTEX_WAIT_PRIVATE, AWAKE_ASLEEP);
	}
	return NULL;
}

/* Starts vm-awake once (ctx.mu held); on failure loads go on without it. */
static void awake_start_locked(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	sem_t running;
	pthread_t t;
	char *stack;

	if (ctx.awake_started || !ctx.awake)
		return;
	ctx.awake_started = true;
	__atomic_store_n(&ctx.awake_state, AWAKE_OFF, __ATOMIC_SEQ_CST);
	stack = mmap(NULL, HANDLER_STACK, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return;
	(void)mprotect(stack, ctx.pagesize, PROT_NONE); /* the guard page */
	__atomic_store_n(&ctx.awake_state, AWAKE_ASLEEP, __ATOMIC_SEQ_CST);
	sem_init(&running, 0, 0);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstack(&attr, stack, HANDLER_STACK);
	if (pthread_create(&t, &attr, awake_main, &running) == 0) {
		(void)pthread_setname_np(t, "vm-awake");
		while (sem_wait(&running) < 0 && errno == EINTR)
			;
	} else {
		__atomic_store_n(&ctx.awake_state, AWAKE_OFF, __ATOMIC_SEQ_CST);
		munmap(stack, HANDLER_STACK);
	}
	sem_destroy(&running);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* A handler thread is about to block for long (on) or is back (off): while
 * every thread blocks, one more is started so that faults on other blocks
 * go on (one slow GET never holds them up).  Counting only the threads that
 * block, not those serving a fault, keeps one faulting thread served by the
 * HANDLERS_MIN threads: the next fault of a thread comes as soon as the
 * last one is mapped, before its handler is back at epoll_wait. */
static void handler_blocks(bool on)
{
	if (!on) {
		awake_note_end();
		__atomic_fetch_sub(&ctx.blocked, 1, __ATOMIC_SEQ_CST);
		return;
	}
	unsigned blocked = __atomic_add_fetch(&ctx.blocked, 1, __ATOMIC_SEQ_CST);
	awake_kick();
	if (blocked < __atomic_load_n(&ctx.nthreads, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&ctx.mu);
	if (__atomic_load_n(&ctx.blocked, __ATOMIC_RELAXED) >= ctx.nthreads &&
	    ctx.nthreads < HANDLERS_MAX)
		handler_start_locked();
	pthread_mutex_unlock(&ctx.mu);
}

/* seen: vm_vma_seq before msg was read (vm_fault_at). */
static void serve(const struct uffd_msg *msg, uint64_t seen)
{
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address;
	int write = (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
	vm_blk_t blk = 0;
	int rc;

	if (vm_thread_in_backend((pid_t)msg->arg.pagefault.feat.ptid)) {
		/* A backend called by virtmem touches virtmem memory: it
		 * would deadlock on what it is loading. */
		vm_log("fault at %p from inside a backend call: refused", (void *)addr);
		rc = -EDEADLK;
	} else {
		wakes.defer = true;
		rc = vm_fault_at(addr, write, false, seen, &blk);
		wakes.defer = false;
		wake_flush();
	}
	if (rc == 0)
		return; /* mapped, and its waiters woken */
	if (rc < 0) {
		/* Not logged: whoever failed (loadblk, RAM, mapping) said so. */
		uffd_fail(addr, (pid_t)msg->arg.pagefault.feat.ptid, rc, blk);
	}
	/* Not ours any more (unmapped meanwhile, or mapped again after msg
	 * was read), or failed: the access is retried, and faults again or
	 * takes its signal. */
	uffd_wake(addr & ~(ctx.pagesize - 1), ctx.pagesize);
}

/* A handler thread follows the thread whose fault it served last: it binds
 * itself to the CPU that thread sleeps on (and is woken on), so that the
 * next fault of that thread wakes it there.  Serving a miss is a chain of
 * wake-ups: the faulting thread wakes a handler, the handler wakes the
 * server (a local one, or the network's interrupt), the answer wakes the
 * handler, the handler wakes the faulting thread.  The scheduler sends a
 * thread woken by a fault to an idle CPU if there is one (a fault's wake-up
 * does not say that its waker is about to sleep), so the handler ran on a
 * CPU other than the faulting thread's, and the last wake-up landed on a
 * CPU idle for the whole serve: on a virtual machine whose idle CPUs halt
 * (the benchmark VM: guest_halt_poll_ns 0) an exit to the host each.  On
 * the faulting thread's CPU, which has nothing else to do until the fault
 * is served, every wake-up of the chain is a switch on a busy CPU, as for
 * a program that reads with a system call: bench_peers' random 4 KiB
 * misses on a quiet machine (docs/virtmem.md).  The CPU is read from
 * /proc (field 39 of the thread's stat, about 3 us), at most once per
 * FOLLOW_CHECK_NS for one thread: a thread seldom moves.  A handler that
 * cannot bind (a CPU taken out of the process's cpuset) stays where it is.
 * VIRTMEM_UFFD_FOLLOW=0 turns this off. */
#define FOLLOW_CHECK_NS 1000000

static __thread struct follow {
	pid_t tid;           /* the thread followed */
	int cpu;             /* the CPU this handler is bound to, or -1 */
	uint64_t checked_ns; /* when tid's CPU was read */
} follow = { 0, -1, 0 };

/* The CPU thread tid of this process runs on, or last ran on; -1 if it
 * cannot be read (the thread ended). */
static int thread_cpu(pid_t tid)
{
	char buf[1024], *p;
	ssize_t n;
	int fd;

	snprintf(buf, sizeof(buf), "/proc/self/task/%d/stat", (int)tid);
	fd = open(buf, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the end of field 2, the name, which may hold anything */
	if (p == NULL)
		return -1;
	for (int field = 2; *p != '\0'; p++)
		if (*p == ' ' && ++field == 39)
			return atoi(p + 1);
	return -1;
}

/* The handler thread calling it has served a fault of thread tid at now. */
static void follow_thread(pid_t tid, uint64_t now)
{
	cpu_set_t one;
	int cpu;

	if (tid == follow.tid && now - follow.checked_ns < FOLLOW_CHECK_NS)
		return;
	follow.tid = tid;
	follow.checked_ns = now;
	cpu = thread_cpu(tid);
	if (cpu < 0 || cpu == follow.cpu || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &ctx.cpus))
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(one), &one) == 0)
		follow.cpu = cpu;
}

/* A handler thread with nothing to read polls the userfaultfd for a while
 * before it sleeps in epoll_wait (read_msg).  While a thread faults block
 * after block (a reader going through a mapping in order, or one random
 * miss after another), its next fault comes a few microseconds after the
 * last one was served, and a polling handler reads it with no wake-up.
 * A wake-up costs most when it lands on an idle CPU: where idle CPUs halt
 * (a virtual machine whose cpuidle haltpoll does not poll, as the 2-vCPU
 * benchmark VM: guest_halt_poll_ns 0), each one is an exit to the host.
 * Up to SPINNERS threads poll, so that on two CPUs neither the handler's
 * CPU nor the faulting thread's goes idle while a fault is served.  A
 * poll lasts twice the last gap between the end of a serve and the next
 * fault's message (spin_note_message), and none when that gap was longer
 * than spin_max_ns: a process whose faults are rare, or that stopped
 * faulting, burns nothing.  A polling thread yields the CPU between two
 * reads to whatever else may run there; when a yield ran something else
 * for more than SPIN_BUSY_NS and no fault came meanwhile, the CPUs have
 * other work (a loaded machine, where a wake-up lands on a busy CPU and
 * costs little): no thread polls for SPIN_BACKOFF_NS.  No poll when the
 * process may run on one CPU only (the faulting thread could not run
 * meanwhile).
 * VIRTMEM_UFFD_SPIN_US sets spin_max_ns (default SPIN_MAX_US; 0: never
 * poll). */
#define SPINNERS 2
#define SPIN_BUSY_NS 10000
#define SPIN_BACKOFF_NS 10000000

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A message was read at now: the next polls follow the gap since the
 * last serve ended. */
static void spin_note_message(uint64_t now)
{
	uint64_t last = __atomic_load_n(&ctx.served_ns, __ATOMIC_RELAXED);
	uint64_t gap = now > last ? now - last : 0;
	uint64_t spin = gap <= ctx.spin_max_ns ? 2 * gap + 1000 : 0;

	if (spin > ctx.spin_max_ns)
		spin = ctx.spin_max_ns;
	__atomic_store_n(&ctx.spin_ns, spin, __ATOMIC_RELAXED);
}

/* Reads one message, polling for up to ctx.spin_ns if fewer than SPINNERS
 * threads poll.  Returns read(2)'s result (-1 with EAGAIN: nothing came,
 * wait in epoll_wait).  *seen: vm_vma_seq before the read that returned
 * the message. */
static ssize_t read_msg(struct uffd_msg *msg, uint64_t *seen)
{
	uint64_t spin = __atomic_load_n(&ctx.spin_ns, __ATOMIC_RELAXED), until = 0, yield = 0;
	bool polling = false;
	ssize_t n;

	for (;;) {
		/* Before the read: a message read is for a mapping indexed by
		 * now, or its fault is not served (serve). */
		*seen = __atomic_load_n(&vm_vma_seq, __ATOMIC_SEQ_CST);
		n = read(ctx.fd, msg, sizeof(*msg));
		if (n >= 0 || errno != EAGAIN || spin == 0)
			break;
		uint64_t now = now_ns();
		if (!polling) {
			if (now < __atomic_load_n(&ctx.busy_until_ns, __ATOMIC_RELAXED))
				break;
			if (__atomic_add_fetch(&ctx.polling, 1, __ATOMIC_RELAXED) > SPINNERS) {
				__atomic_fetch_sub(&ctx.polling, 1, __ATOMIC_RELAXED);
				break;
			}
			polling = true;
			until = now + spin;
		} else if (now - yield > SPIN_BUSY_NS) {
			/* The yield ran something else, and no fault came
			 * meanwhile: the CPUs have other work, so a wake-up
			 * is cheap and polling only takes from that work. */
			__atomic_store_n(&ctx.busy_until_ns, now + SPIN_BACKOFF_NS, __ATOMIC_RELAXED);
			break;
		} else if (now >= until) {
			break;
		}
		yield = now;
		sched_yield();
	}
	if (polling)
		__atomic_fetch_sub(&ctx.polling, 1, __ATOMIC_RELAXED);
	if (n > 0 && ctx.spin_max_ns > 0)
		spin_note_message(now_ns());
	return n;
}

/* Each handler thread waits in an epoll instance of its own where the
 * userfaultfd is registered EPOLLEXCLUSIVE: the kernel wakes one idle
 * thread per fault.  (Threads blocked in read(2) on the userfaultfd would
 * all be woken by every fault, and all but one go back to sleep: with 5
 * threads, 4.9 context switches per fault instead of 2.5, measured with
 * perf stat.)  The descriptor is non-blocking: a thread reads (and polls)
 * before it waits, and one woken for a message another took reads EAGAIN
 * and waits again. */
struct handler_start {
	int ep;            /* the new thread's epoll instance */
	sem_t running;     /* posted once the thread runs its loop */
};

static void *handler_main(void *arg)
{
	struct handler_start *start = arg;
	int ep = start->ep;

	vm_thread_blocks = handler_blocks;
	sem_post(&start->running); /* start is the starter's: not touched again */
	for (;;) {
		struct uffd_msg msg;
		struct epoll_event ev;
		uint64_t seen;
		ssize_t n = read_msg(&msg, &seen);
		if (n < 0 && errno == EAGAIN) {
			if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR) {
				vm_log("waiting for the userfaultfd failed: %s; its handler thread stops",
				       strerror(errno));
				break;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(msg)) {
			vm_log("reading the userfaultfd failed: %s; its handler thread stops",
			       n < 0 ? strerror(errno) : "short read");
			break;
		}
		if (msg.event == UFFD_EVENT_PAGEFAULT) {
			serve(&msg, seen);
			uint64_t now = ctx.spin_max_ns > 0 || ctx.follow ? now_ns() : 0;
			if (ctx.spin_max_ns > 0)
				__atomic_store_n(&ctx.served_ns, now, __ATOMIC_RELAXED);
			if (ctx.follow)
				follow_thread((pid_t)msg.arg.pagefault.feat.ptid, now);
		}
	}
	vm_thread_blocks = NULL;
	pthread_mutex_lock(&ctx.mu);
	for (unsigned i = 0; i < ctx.nthreads; i++)
		if (ctx.epfd[i] == ep)
			ctx.epfd[i] = ctx.epfd[ctx.nthreads - 1];
	__atomic_store_n(&ctx.nthreads, ctx.nthreads - 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&ctx.mu);
	close(ep);
	return NULL;
}

/* Starts a handler thread (ctx.mu held) and returns once it runs its loop.
 * Waiting for that means a thread is never mid-start when the caller goes
 * on: a fork(2) right after vm_fileh_open never copies a lock that the
 * thread's start-up holds (AddressSanitizer's allocator takes one in
 * every new thread, and GCC 12's does not take it around fork: the
 * child's own first handler threads then hung on it for ever, seen in
 * test_virtmem_signals under load).  It takes no signal meant for the
 * application.  Its stack is its own mapping, not one of the C library's
 * cache: a forked child, where the thread does not exist, never hands that
 * stack (and so the thread's id) to a thread of its own, which
 * ThreadSanitizer would take for a second thread of one id. */
static void handler_start_locked(void)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	struct handler_start start;
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;
	char *stack;
	int ep;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, ctx.fd, &ev) < 0) {
		close(ep);
		return;
	}
	stack = mmap(NULL, HANDLER_STACK, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) {
		close(ep);
		return;
	}
	start.ep = ep;
	sem_init(&start.running, 0, 0);
	(void)mprotect(stack, ctx.pagesize, PROT_NONE); /* the guard page */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstack(&attr, stack, HANDLER_STACK);
	if (pthread_create(&t, &attr, handler_main, &start) == 0) {
		(void)pthread_setname_np(t, "vm-uffd"); /* for ps, perf and the tests */
		ctx.epfd[ctx.nthreads] = ep;
		__atomic_store_n(&ctx.nthreads, ctx.nthreads + 1, __ATOMIC_RELAXED);
		while (sem_wait(&start.running) < 0 && errno == EINTR)
			;
	} else {
		munmap(stack, HANDLER_STACK);
		close(ep);
	}
	sem_destroy(&start.running);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- handles and mappings -------------------------------------------------- */

static int uffd_attach(vm_fileh *fh)
{
	int rc = uffd_probe();

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ctx.mu);
	while (ctx.nthreads < HANDLERS_MIN) {
		unsigned n = ctx.nthreads;
		handler_start_locked();
		if (ctx.nthreads == n) {
			pthread_mutex_unlock(&ctx.mu);
			return -EAGAIN;
		}
	}
	awake_start_locked();
	pthread_mutex_unlock(&ctx.mu);
	if (fh->memfd < 0) {
		char name[32];
		snprintf(name, sizeof(name), "virtmem-file-%zu", fh->blksize);
		fh->memfd = memfd_create(name, MFD_CLOEXEC);
		if (fh->memfd < 0)
			return -errno;
	}
	/* A write to a read-only handle's mapping is refused by the kernel
	 * (SIGSEGV): the SIGSEGV engine turns it into SIGBUS (-EROFS). */
	return vm_engine_sigsegv.attach(fh);
}

/* The memfd's pages are freed by its last reference: a mapping of one
 * page of it, handed to the release thread, keeps it (and the cost of
 * freeing every page: 20 ms for 256 MiB) off the caller's thread, while
 * the descriptor itself closes now. */
static void uffd_detach(vm_fileh *fh)
{
	struct stat st;

	if (fh->memfd < 0)
		return;
	if (fstat(fh->memfd, &st) == 0 && (uint64_t)st.st_blocks * 512 >= RELEASE_MIN) {
		void *keep = mmap(NULL, ctx.pagesize, PROT_NONE, MAP_SHARED, fh->memfd, 0);
		if (keep != MAP_FAILED)
			vm_release_range(keep, ctx.pagesize, (uint64_t)st.st_blocks * 512);
	}
	close(fh->memfd);
	fh->memfd = -1;
}

static int uffd_vma_create(vm_vma *vma, int prot)
{
	vm_fileh *fh = vma->fh;
	size_t len = vma->blklen << fh->blkshift;
	off_t off = (off_t)(vma->blk_start << fh->blkshift);
	struct uffdio_register reg;
	void *addr;

	if (vma->blk_start > ((uint64_t)INT64_MAX >> fh->blkshift) - vma->blklen)
		return -EFBIG;
	vm_lock_acquire();
	if (fh->memfd_size < (size_t)off + len) {
		if (ftruncate(fh->memfd, off + (off_t)len) < 0) {
			int rc = -errno;
			vm_lock_release();
			return rc;
		}
		fh->memfd_size = (size_t)off + len;
	}
	vm_lock_release();
	addr = mmap(NULL, len, prot, MAP_SHARED | MAP_NORESERVE, fh->memfd, off);
	if (addr == MAP_FAILED)
		return -errno;
	reg = (struct uffdio_register){ .range = { (uintptr_t)addr, len }, .mode = UFFD_MODES };
	if (ioctl(ctx.fd, UFFDIO_REGISTER, &reg) < 0) {
		int rc = -errno;
		vm_log("registering a %zu-byte mapping with userfaultfd failed: %s", len, vm_strerror(rc));
		munmap(addr, len);
		return rc;
	}
	vma->addr_start = (uintptr_t)addr;
	vma->addr_stop = vma->addr_start + len;
	return 0;
}

static void uffd_sync_written_locked(vm_fileh *fh, struct vm_page *page);

static void uffd_vma_destroy_locked(vm_vma *vma)
{
	/* Writes through it are found before it goes. */
	uffd_sync_written_locked(vma->fh, NULL);
	uffd_vma_forget_failed_locked(vma);
}

/* Maps blocks [blk, blk + n) in vma, one UFFDIO_CONTINUE for all (they
 * lie in order in the memfd): write-protected unless prot has PROT_WRITE,
 * so that a write is seen by PAGEMAP_SCAN.  Entries already present are
 * left alone. */
static int uffd_map_blocks_locked(vm_vma *vma, vm_blk_t blk, size_t n, int prot)
{
	uintptr_t addr = (uintptr_t)vm_vma_blk_addr(vma, blk);
	size_t len = n << vma->fh->blkshift, off = 0;
	bool woke = !wakes.defer;

	vm_lock_assert_held();
	while (off < len) {
		struct uffdio_continue c = {
			.range = { addr + off, len - off },
			.mode = (prot & PROT_WRITE ? 0 : UFFDIO_CONTINUE_MODE_WP) |
				(wakes.defer ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0),
		};
		if (ioctl(ctx.fd, UFFDIO_CONTINUE, &c) == 0)
			break;
		if (errno == EAGAIN) {
			/* Mapped part of it (up to an os page mapped already),
			 * or the address space was changing: go on. */
			if (c.mapped > 0)
				off += (size_t)c.mapped;
			continue;
		}
		if (errno != EEXIST) {
			int rc = -errno;
			vm_log("mapping block %llu failed: %s",
			       (unsigned long long)vma_blk_of(vma, addr + off), vm_strerror(rc));
			return rc;
		}
		/* An os page is mapped already: skip it. */
		woke = false;
		off += (c.mapped > 0 ? (size_t)c.mapped : 0) + ctx.pagesize;
	}
	if (wakes.defer)
		wake_later(addr, len);
	else if (!woke)
		uffd_wake(addr, len);
	for (size_t k = 0; k < n; k++)
		vma_set_mapped(vma, blk + k, true);
	return 0;
}

static int uffd_map_page_locked(vm_vma *vma, struct vm_page *page, int prot)
{
	return uffd_map_blocks_locked(vma, page->blk, 1, prot);
}

/* Fault-around: the blocks are clean, so mapped write-protected. */
static int uffd_map_run_locked(vm_vma *vma, vm_blk_t blk, size_t n)
{
	return uffd_map_blocks_locked(vma, blk, n, PROT_READ);
}

static int uffd_protect_page_locked(vm_vma *vma, struct vm_page *page, int prot)
{
	struct uffdio_writeprotect wp = {
		.range = { (uintptr_t)vm_vma_blk_addr(vma, page->blk), page->fh->blksize },
		.mode = prot & PROT_WRITE ? 0 : UFFDIO_WRITEPROTECT_MODE_WP,
	};

	vm_lock_assert_held();
	return ioctl(ctx.fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

/* Punching the block out of the memfd unmaps it from every mapping. */
static void uffd_unmap_page_all_locked(struct vm_page *page)
{
	(void)page; /* uffd_release_page_locked does it */
}

static void uffd_release_page_locked(struct vm_page *page)
{
	vm_fileh *fh = page->fh;
	struct vm_list *pos, *tmp;

	vm_lock_assert_held();
	/* A closing handle's memfd goes whole at detach (close): punching
	 * its blocks one by one first cost a system call each (16384 for a
	 * 256 MiB object in 16 KiB blocks: 7% of bench_peers' seqsum_map). */
	if (fh->closing)
		return;
	if (fallocate(fh->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(page->blk << fh->blkshift), (off_t)fh->blksize) < 0)
		vm_log("giving block %llu's memory back failed: %s",
		       (unsigned long long)page->blk, strerror(errno));
	vm_list_for_each_safe(pos, tmp, &fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (vma_covers(vma, page->blk))
			vma_set_mapped(vma, page->blk, false);
	}
}

/* A view of the page's bytes in the memfd, outside any registered mapping:
 * for loadblk to write and storeblk to read.  Each thread has one window of
 * address space for it, mapped over at each use and mapped back to nothing
 * after (so that each cached byte stays mapped once): no address space is
 * taken and given back per load. */
static __thread struct window {
	char *addr;
	size_t size;
	char *bounce;   /* BOUNCE_MAX bytes, see uffd_fill_page */
} win __attribute__((tls_model("initial-exec")));
static pthread_key_t win_key;
static pthread_once_t win_once = PTHREAD_ONCE_INIT;

static void win_free(void *arg)
{
	struct window *w = arg;
	if (w->addr != NULL)
		munmap(w->addr, w->size);
	w->addr = NULL;
	w->size = 0;
}

static void win_free_all(void *arg)
{
	struct window *w = arg;
	win_free(w);
	free(w->bounce);
	w->bounce = NULL;
}

static void win_key_create(void)
{
	(void)pthread_key_create(&win_key, win_free_all);
}

/* The thread's window, of at least size bytes (NULL: no memory). */
static char *win_get(size_t size)
{
	void *p;

	if (win.size < size) {
		pthread_once(&win_once, win_key_create);
		win_free(&win);
		p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		win.addr = p;
		win.size = size;
		(void)pthread_setspecific(win_key, &win);
	}
	return win.addr;
}

static void *uffd_page_view(vm_fileh *fh, struct vm_page *page)
{
	char *w = win_get(fh->blksize);
	void *p;

	if (w == NULL)
		return NULL;
	p = mmap(w, fh->blksize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fh->memfd,
		 (off_t)(page->blk << fh->blkshift));
	return p == MAP_FAILED ? NULL : p;
}

static void uffd_page_view_end(vm_fileh *fh, struct vm_page *page, void *buf)
{
	(void)page;
	(void)fh;
	(void)buf;
	(void)mmap(win.addr, win.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		   -1, 0);
}

/* Blocks up to this size are loaded by a backend that writes through the
 * pointer into a buffer of the thread, then written into the memfd with
 * pwrite: mapping a view over the window and back costs two TLB
 * shootdowns, more than copying a small block (measured with
 * bench_pagefault at 4 KiB: 20.6 us per fault with the view, 14 without).
 * The buffer stays with the thread (at most BOUNCE_MAX bytes each). */
#define BOUNCE_MAX ((size_t)256 << 10)

static char *bounce_get(void)
{
	if (win.bounce == NULL) {
		pthread_once(&win_once, win_key_create);
		win.bounce = malloc(BOUNCE_MAX);
		if (win.bounce != NULL)
			(void)pthread_setspecific(win_key, &win);
	}
	return win.bounce;
}

static int pwrite_all(int fd, const char *p, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return 0;
}

static int uffd_fill_page(vm_fileh *fh, struct vm_page *page)
{
	off_t off = (off_t)(page->blk << fh->blkshift);
	/* A backend that writes only through vm_loadblk_write (pwrite into
	 * the memfd) needs no view: its buf is the window itself, which
	 * only names the fill. */
	bool writes = fh->file->ops->flags & VM_OPS_LOADBLK_WRITES;
	bool whole = false;
	void *buf;
	int rc;

	if (!writes && fh->blksize <= BOUNCE_MAX && (buf = bounce_get()) != NULL) {
		rc = fill_loadblk(fh, page->blk, buf, fh->memfd, off, true, true, NULL);
		return rc < 0 ? rc : pwrite_all(fh->memfd, buf, fh->blksize, off);
	}
	buf = writes ? win_get(fh->blksize) : uffd_page_view(fh, page);
	if (buf == NULL)
		return -errno;
	/* The range is a hole (punched when the page was dropped). */
	rc = fill_loadblk(fh, page->blk, buf, fh->memfd, off, true, false, &whole);
	/* UFFDIO_CONTINUE needs every os page of the block in the memfd:
	 * those the backend left as zeros are allocated here, unless it
	 * wrote every byte (fallocate over a written 1 MiB costs 45 us). */
	if (rc == 0 && !whole && fallocate(fh->memfd, 0, off, (off_t)fh->blksize) < 0)
		rc = -errno;
	if (!writes)
		uffd_page_view_end(fh, page, buf);
	return rc;
}

/* PAGEMAP_SCAN over [start, end) of a mapping for os pages written since
 * they were write-protected (present ones only, or also those whose entry
 * is gone); with wp, they are write-protected again.  Calls fn for each
 * range found (if not NULL); returns whether there was one. */
static bool scan_locked(uintptr_t start, uintptr_t end, bool present, bool wp,
			void (*fn)(vm_vma *vma, uintptr_t start, uintptr_t end), vm_vma *vma)
{
	struct page_region r[64];
	bool found = false;

	while (start < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .flags = wp ? PM_SCAN_WP_MATCHING : 0,
			.start = start, .end = end,
			.vec = (uintptr_t)r, .vec_len = sizeof(r) / sizeof(r[0]),
			.category_mask = PAGE_IS_WRITTEN | (present ? PAGE_IS_PRESENT : 0),
			.return_mask = PAGE_IS_WRITTEN,
		};
		int n = ioctl(ctx.pagemap, PAGEMAP_SCAN, &a);
		if (n < 0) {
			vm_log("PAGEMAP_SCAN failed: %s", strerror(errno));
			return found;
		}
		for (int i = 0; i < n; i++) {
			found = true;
			if (fn != NULL)
				fn(vma, r[i].start, r[i].end);
		}
		if (a.walk_end <= start)
			break;
		start = a.walk_end;
	}
	return found;
}

static bool scan_for_written_locked(uintptr_t start, uintptr_t end, bool present)
{
	return scan_locked(start, end, present, false, NULL, NULL);
}

static void note_written_locked(vm_vma *vma, uintptr_t start, uintptr_t end)
{
	vm_fileh *fh = vma->fh;
	vm_blk_t first = vma_blk_of(vma, start);
	vm_blk_t last = vma_blk_of(vma, end - 1);

	for (vm_blk_t blk = first; blk <= last; blk++) {
		struct vm_page *page = pagetab_get(&fh->pages, blk);
		if (page != NULL)
			page_note_written_locked(page);
	}
}

/* The os pages of [start, end) of vma present and written since they were
 * write-protected: their pages are noted written and write-protected
 * again. */
static void scan_written_locked(vm_vma *vma, uintptr_t start, uintptr_t end)
{
	(void)scan_locked(start, end, true, true, note_written_locked, vma);
}

/* Writes to a clean page take no fault: to drop it without losing one made
 * after PAGEMAP_SCAN looked, its page table entries are zapped first
 * (MADV_DONTNEED) in every mapping where it is mapped: a later access
 * faults (MINOR) to a handler thread, which waits for vm_lock.  The zap
 * leaves a uffd-wp marker where an os page was still write-protected and
 * nothing where it had been written (tried on 6.18: PAGEMAP_SCAN then
 * reports exactly the os pages written), so a write made before the zap
 * is found by one more PAGEMAP_SCAN of the block, without the present
 * filter.  This replaced making the block read-only around the look (two
 * mprotect calls, each splitting and merging the mapping: 18% of the scale
 * benchmark's time in perf).  Lifting the fence does nothing: the block
 * maps again at its next fault. */
static void uffd_fence_locked(vm_fileh *fh, vm_blk_t blk, bool on)
{
	struct vm_page *page = pagetab_get(&fh->pages, blk);
	struct vm_list *pos, *tmp;

	vm_lock_assert_held();
	if (!on || fh->readonly)
		return;
	vm_list_for_each_safe(pos, tmp, &fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (!vma_covers(vma, blk) || !vma_page_mapped(vma, blk))
			continue;
		uintptr_t a = (uintptr_t)vm_vma_blk_addr(vma, blk);
		if (madvise((void *)a, fh->blksize, MADV_DONTNEED) < 0) {
			vm_log("unmapping block %llu failed: %s", (unsigned long long)blk, strerror(errno));
			continue;
		}
		vma_set_mapped(vma, blk, false);
		if (page != NULL && scan_for_written_locked(a, a + fh->blksize, false))
			page_note_written_locked(page);
	}
}

static void uffd_sync_written_locked(vm_fileh *fh, struct vm_page *page)
{
	struct vm_list *pos, *tmp;

	vm_lock_assert_held();
	vm_list_for_each_safe(pos, tmp, &fh->vmas) {
		vm_vma *vma = vm_container_of(pos, vm_vma, in_fileh);
		if (page == NULL) {
			scan_written_locked(vma, vma->addr_start, vma->addr_stop);
		} else if (vma_covers(vma, page->blk)) {
			uintptr_t a = (uintptr_t)vm_vma_blk_addr(vma, page->blk);
			scan_written_locked(vma, a, a + fh->blksize);
		}
	}
}

const struct vm_engine vm_engine_uffd = {
	.name = "uffd",
	.probe = uffd_probe,
	.attach = uffd_attach,
	.detach = uffd_detach,
	.vma_create = uffd_vma_create,
	.vma_destroy_locked = uffd_vma_destroy_locked,
	.map_page_locked = uffd_map_page_locked,
	.map_run_locked = uffd_map_run_locked,
	.protect_page_locked = uffd_protect_page_locked,
	.unmap_page_all_locked = uffd_unmap_page_all_locked,
	.release_page_locked = uffd_release_page_locked,
	.fill_page = uffd_fill_page,
	.page_view = uffd_page_view,
	.page_view_end = uffd_page_view_end,
	.sync_written_locked = uffd_sync_written_locked,
	.fence_locked = uffd_fence_locked,
	.signal_fault_locked = uffd_signal_fault_locked,
	.own_memory = true,
};
