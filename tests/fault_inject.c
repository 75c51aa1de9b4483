/* tests/fault_inject.c — the test-side fault injector (fault_inject.h):
 * definitions of a few C library calls in the test program, which the
 * dynamic linker prefers to the C library's for every object of the
 * process (libvirtmem.so included).  Each asks the plans whether this call
 * fails; if not it calls the next definition (the C library's, or a
 * sanitizer's interceptor), found with dlsym(RTLD_NEXT).
 * Owns: the plans and the pointers to the next definitions.
 * Locking: none; plans and counts are atomics (a call may come from any
 * thread or from a signal handler).  The next definitions are looked up
 * once, before main (constructor), or at the first call before that.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fault_inject.h"

#define NPLANS 8

/* ThreadSanitizer's start-up (its symbolizer) calls mmap before the
 * runtime can take an instrumented call: what runs inside the calls is not
 * instrumented (it only reads atomics). */
#define UNINSTRUMENTED __attribute__((no_sanitize_thread))

/* Every field atomic: a call in another thread may read a plan while the
 * test makes a new one in its place. */
static struct plan {
	atomic_int active;
	atomic_int call;
	atomic_int has_match;
	atomic_ulong match;
	atomic_uint nth, count;
	atomic_int err;
	atomic_uint seen;
} plans[NPLANS];
static atomic_uint failed[FI_NCALLS];
static _Atomic(void *) last_addr; /* of the last mmap, mprotect, madvise failed */

static const char *const names[FI_NCALLS] = {
	[FI_MMAP] = "mmap",
	[FI_MPROTECT] = "mprotect",
	[FI_MADVISE] = "madvise",
	[FI_MEMFD_CREATE] = "memfd_create",
	[FI_FTRUNCATE] = "ftruncate",
	[FI_FALLOCATE] = "fallocate",
	[FI_PWRITE] = "pwrite",
	[FI_IOCTL] = "ioctl",
	[FI_PTHREAD_CREATE] = "pthread_create",
	[FI_SIGACTION] = "sigaction",
	[FI_EPOLL_CREATE1] = "epoll_create1",
	[FI_EPOLL_CTL] = "epoll_ctl",
	[FI_OPEN] = "open",
	[FI_SYSCALL] = "syscall",
	[FI_PROCESS_VM_READV] = "process_vm_readv",
};

const char *fi_name(enum fi_call call)
{
	return call < FI_NCALLS ? names[call] : "?";
}

void fi_fail_match(enum fi_call call, unsigned long match, unsigned nth, unsigned count, int err)
{
	for (int i = 0; i < NPLANS; i++) {
		struct plan *p = &plans[i];
		if (atomic_load(&p->active))
			continue;
		p->call = call;
		p->has_match = match != (unsigned long)-1;
		p->match = match;
		p->nth = nth ? nth : 1;
		p->count = count;
		p->err = err;
		atomic_store(&p->seen, 0);
		atomic_store_explicit(&p->active, 1, memory_order_release);
		return;
	}
	fprintf(stderr, "fault_inject: more than %d plans at once\n", NPLANS);
	abort();
}

void fi_fail(enum fi_call call, unsigned nth, unsigned count, int err)
{
	fi_fail_match(call, (unsigned long)-1, nth, count, err);
}

void *fi_last_failed_addr(void)
{
	return atomic_load(&last_addr);
}

unsigned fi_failed(enum fi_call call)
{
	return atomic_load(&failed[call]);
}

void fi_reset(void)
{
	for (int i = 0; i < NPLANS; i++)
		atomic_store(&plans[i].active, 0);
	for (int i = 0; i < FI_NCALLS; i++)
		atomic_store(&failed[i], 0);
	atomic_store(&last_addr, NULL);
}

/* The errno this call fails with, or 0 to pass it on. */
UNINSTRUMENTED static int planned(enum fi_call call, unsigned long value)
{
	for (int i = 0; i < NPLANS; i++) {
		struct plan *p = &plans[i];
		if (!atomic_load_explicit(&p->active, memory_order_acquire) || p->call != (int)call)
			continue;
		unsigned long match = p->match;
		if (p->has_match && (call == FI_MMAP ? (value & match) != match : value != match))
			continue;
		unsigned n = atomic_fetch_add(&p->seen, 1) + 1, nth = p->nth, count = p->count;
		if (n >= nth && (count == 0 || n - nth < count)) {
			atomic_fetch_add(&failed[call], 1);
			return p->err;
		}
	}
	return 0;
}

/* ---- the next definitions ---------------------------------------------------- */

static void *(*next_mmap)(void *, size_t, int, int, int, off_t);
static int (*next_mprotect)(void *, size_t, int);
static int (*next_madvise)(void *, size_t, int);
static int (*next_memfd_create)(const char *, unsigned);
static int (*next_ftruncate)(int, off_t);
static int (*next_fallocate)(int, int, off_t, off_t);
static ssize_t (*next_pwrite)(int, const void *, size_t, off_t);
static int (*next_ioctl)(int, unsigned long, ...);
static int (*next_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static int (*next_sigaction)(int, const struct sigaction *, struct sigaction *);
static int (*next_epoll_create1)(int);
static int (*next_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*next_open)(const char *, int, ...);
static long (*next_syscall)(long, ...);
static ssize_t (*next_process_vm_readv)(pid_t, const struct iovec *, unsigned long,
					const struct iovec *, unsigned long, unsigned long);

UNINSTRUMENTED static void *next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (f == NULL) {
		fprintf(stderr, "fault_inject: no next definition of %s\n", name);
		abort();
	}
	return f;
}

/* The next definition of name, looked up at the first call if the
 * constructor has not run yet. */
#define NEXT(name) (next_##name != NULL ? next_##name : lookup_##name())
#define LOOKUP(name)                                              \
	UNINSTRUMENTED static __typeof__(next_##name) lookup_##name(void) \
	{                                                         \
		next_##name = (__typeof__(next_##name))next(#name); \
		return next_##name;                               \
	}
LOOKUP(mmap)
LOOKUP(mprotect)
LOOKUP(madvise)
LOOKUP(memfd_create)
LOOKUP(ftruncate)
LOOKUP(fallocate)
LOOKUP(pwrite)
LOOKUP(ioctl)
LOOKUP(pthread_create)
LOOKUP(sigaction)
LOOKUP(epoll_create1)
LOOKUP(epoll_ctl)
LOOKUP(open)
LOOKUP(syscall)
LOOKUP(process_vm_readv)

__attribute__((constructor)) static void fi_init(void)
{
	(void)lookup_mmap();
	(void)lookup_mprotect();
	(void)lookup_madvise();
	(void)lookup_memfd_create();
	(void)lookup_ftruncate();
	(void)lookup_fallocate();
	(void)lookup_pwrite();
	(void)lookup_ioctl();
	(void)lookup_pthread_create();
	(void)lookup_sigaction();
	(void)lookup_epoll_create1();
	(void)lookup_epoll_ctl();
	(void)lookup_open();
	(void)lookup_syscall();
	(void)lookup_process_vm_readv();
}

/* ---- the calls ----------------------------------------------------------------- */

#define FAIL_IF(call, value, failure)            \
	do {                                     \
		int err_ = planned(call, value); \
		if (err_ != 0) {                 \
			errno = err_;            \
			return failure;          \
		}                                \
	} while (0)

/* The same, noting the address the call was for. */
#define FAIL_AT_IF(call, value, failure, addr)   \
	do {                                     \
		int err_ = planned(call, value); \
		if (err_ != 0) {                 \
			atomic_store(&last_addr, addr); \
			errno = err_;            \
			return failure;          \
		}                                \
	} while (0)

UNINSTRUMENTED void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	FAIL_AT_IF(FI_MMAP, (unsigned long)flags, MAP_FAILED, addr);
	return NEXT(mmap)(addr, len, prot, flags, fd, off);
}

UNINSTRUMENTED int mprotect(void *addr, size_t len, int prot)
{
	FAIL_AT_IF(FI_MPROTECT, (unsigned long)prot, -1, addr);
	return NEXT(mprotect)(addr, len, prot);
}

UNINSTRUMENTED int madvise(void *addr, size_t len, int advice)
{
	FAIL_AT_IF(FI_MADVISE, (unsigned long)advice, -1, addr);
	return NEXT(madvise)(addr, len, advice);
}

UNINSTRUMENTED int memfd_create(const char *name, unsigned flags)
{
	FAIL_IF(FI_MEMFD_CREATE, flags, -1);
	return NEXT(memfd_create)(name, flags);
}

UNINSTRUMENTED int ftruncate(int fd, off_t len)
{
	FAIL_IF(FI_FTRUNCATE, (unsigned long)fd, -1);
	return NEXT(ftruncate)(fd, len);
}

UNINSTRUMENTED int fallocate(int fd, int mode, off_t off, off_t len)
{
	FAIL_IF(FI_FALLOCATE, (unsigned long)mode, -1);
	return NEXT(fallocate)(fd, mode, off, len);
}

UNINSTRUMENTED ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	FAIL_IF(FI_PWRITE, (unsigned long)fd, -1);
	return NEXT(pwrite)(fd, buf, len, off);
}

UNINSTRUMENTED int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	FAIL_IF(FI_IOCTL, req, -1);
	return NEXT(ioctl)(fd, req, arg);
}

UNINSTRUMENTED int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	int err = planned(FI_PTHREAD_CREATE, 0);
	if (err != 0)
		return err;
	return NEXT(pthread_create)(t, attr, fn, arg);
}

UNINSTRUMENTED int sigaction(int sig, const struct sigaction *sa, struct sigaction *old)
{
	FAIL_IF(FI_SIGACTION, (unsigned long)sig, -1);
	return NEXT(sigaction)(sig, sa, old);
}

UNINSTRUMENTED int epoll_create1(int flags)
{
	FAIL_IF(FI_EPOLL_CREATE1, (unsigned long)flags, -1);
	return NEXT(epoll_create1)(flags);
}

UNINSTRUMENTED int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
	FAIL_IF(FI_EPOLL_CTL, (unsigned long)op, -1);
	return NEXT(epoll_ctl)(ep, op, fd, ev);
}

UNINSTRUMENTED int open(const char *path, int flags, ...)
{
	mode_t mode = 0;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	FAIL_IF(FI_OPEN, (unsigned long)flags, -1);
	return NEXT(open)(path, flags, mode);
}

/* Six arguments are read whatever the call takes (as the C library's
 * syscall does): those past the caller's are not its memory to the
 * address sanitizer, hence no_sanitize. */
UNINSTRUMENTED __attribute__((no_sanitize_address)) long syscall(long nr, ...)
{
	va_list ap;
	long a[6];

	va_start(ap, nr);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	FAIL_IF(FI_SYSCALL, (unsigned long)nr, -1);
	return NEXT(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

UNINSTRUMENTED ssize_t process_vm_readv(pid_t pid, const struct iovec *local, unsigned long nlocal,
			 const struct iovec *remote, unsigned long nremote, unsigned long flags)
{
	FAIL_IF(FI_PROCESS_VM_READV, (unsigned long)pid, -1);
	return NEXT(process_vm_readv)(pid, local, nlocal, remote, nremote, flags);
}
