/* tests/fault_inject.h — a test-side fault injector: a test program linked
 * with tests/fault_inject.c has its own definitions of a few C library
 * calls (the system calls virtmem and wcfs make), which pass each call on
 * to the C library unless the test planned a failure for it.  A plan says
 * which call fails (e.g. the 2nd memfd_create from now on, or every
 * UFFDIO_CONTINUE ioctl) and with which errno; the call then returns its
 * failure value with errno set, without calling the C library.
 *
 * Only test programs link it: product code is never changed for it.  The
 * calls are the ones libvirtmem.so (or the program's own objects) make
 * through the dynamic linker; calls the C library makes internally (malloc
 * asking for memory, fopen opening a file) are not seen.
 *
 * Safe to call from any thread and from a signal handler (the SIGSEGV
 * engine's handler calls mmap, mprotect, sigaction, syscall): atomics only.
 * Plans are made by the test while no failure it plans can race with the
 * making (before the call that should fail starts).
 */
#ifndef BLKMAP_TESTS_FAULT_INJECT_H
#define BLKMAP_TESTS_FAULT_INJECT_H

enum fi_call {
	FI_MMAP,
	FI_MPROTECT,
	FI_MADVISE,
	FI_MEMFD_CREATE,
	FI_FTRUNCATE,
	FI_FALLOCATE,
	FI_PWRITE,
	FI_IOCTL,
	FI_PTHREAD_CREATE, /* fails by returning err, as pthread_create does */
	FI_SIGACTION,
	FI_EPOLL_CREATE1,
	FI_EPOLL_CTL,
	FI_OPEN,
	FI_SYSCALL,
	FI_PROCESS_VM_READV,
	FI_NCALLS
};

/* Plans a failure: counting the calls of `call` from now on (for
 * fi_fail_match only those whose match value is match), the nth (1: the
 * next one) and the count - 1 after it fail with err; count 0: every one
 * from the nth on.  Up to 8 plans at once.  The match value of each call:
 * mmap its flags (every bit of match set in them), mprotect its prot,
 * madvise its advice, memfd_create its flags, ftruncate and pwrite the fd,
 * fallocate its mode, ioctl the request, sigaction the signal,
 * epoll_create1 its flags, epoll_ctl the op, open its flags, syscall the
 * number, process_vm_readv the pid; pthread_create 0. */
void fi_fail(enum fi_call call, unsigned nth, unsigned count, int err);
void fi_fail_match(enum fi_call call, unsigned long match, unsigned nth, unsigned count, int err);

/* How many calls of `call` the plans made so far have failed (a test
 * asserts its failure happened: the path it names was taken). */
unsigned fi_failed(enum fi_call call);

/* The address the last mmap, mprotect or madvise failed by a plan was
 * called for (NULL: none since fi_reset). */
void *fi_last_failed_addr(void);

/* No failure planned any more (the counts of fi_failed start again). */
void fi_reset(void);

/* The name of call ("memfd_create"), for messages. */
const char *fi_name(enum fi_call call);

#endif /* BLKMAP_TESTS_FAULT_INJECT_H */
