/* sigsegv.c — the SIGSEGV fault engine: a process-wide SIGSEGV handler
 * that turns accesses to virtmem mappings into calls of the fault path
 * (fault.c), with the mappings' pages mapped by mmap/mprotect (mapping.c).
 *
 * Owns: the handler's installation and the SIGSEGV dispositions it replaced.
 * A fault outside virtmem memory goes to the previous handler (or, when
 * there was none, kills the process exactly as it would have been killed).
 * A fault virtmem cannot serve (failed load, RAM budget full of dirty pages)
 * gets SIGBUS at the faulting address, as a failed read of an mmapped file
 * does.  errno is preserved.  Read/write detection: x86-64 (page-fault error
 * code) and aarch64 (ESR WnR bit).
 *
 * Chaining: the handler is put back in front at every vm_fileh_open and
 * vm_fileh_mmap, so its previous handler may be one that was installed over
 * it and that itself chains to it.  A foreign fault that comes back into the
 * handler from the handler it chained to goes to what that handler replaced
 * (what virtmem chained to when it was installed), or to the default action,
 * so chaining never recurses.  Replaced dispositions are kept in an array
 * that is only appended to; the handler reads indexes into it atomically.
 *
 * Locking: installation is serialized by install_mu (never held with
 * vm_lock); the handler takes vm_lock through vm_fault_at().
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__aarch64__)
#include <asm/sigcontext.h>
#endif

#include "internal.h"

/* The dispositions our handler replaced, each handler once, in the order
 * they were first replaced.  An entry is written before its index is
 * published and never changed, so the handler can read saved[prev_idx]
 * while another thread re-installs.  below[i] is what our handler chained
 * to when saved[i] was installed over it, i.e. what saved[i] means when it
 * calls the handler it replaced (ours); NONE: nothing (the default action). */
#define NSAVED 32
#define NONE UINT_MAX
static struct sigaction saved[NSAVED];
static atomic_uint below[NSAVED];
static unsigned nsaved;                /* under install_mu */
static atomic_uint prev_idx = NONE;    /* the previous handler: saved[prev_idx] */
static pthread_mutex_t install_mu = PTHREAD_MUTEX_INITIALIZER;

/* The chains of foreign faults this thread runs, innermost last: the frame
 * of chain_previous() that chains, the arguments it passed on and the
 * saved[] index it chained to.  A record whose frame is at or above the
 * current one belongs to a chain that was left by siglongjmp; it is
 * dropped. */
#define CHAIN_MAX 8
static __thread struct chain_rec {
	const char *frame;
	const void *si, *uc;
	unsigned idx;
} chain_stack[CHAIN_MAX] __attribute__((tls_model("initial-exec")));
static __thread unsigned chain_n __attribute__((tls_model("initial-exec")));

/* 1 if the fault was a write, 0 if a read, -1 if the CPU does not say. */
static int fault_is_write(const ucontext_t *uc)
{
#if defined(__x86_64__)
	/* Page-fault error code: bit 1 set for a write access. */
	return (uc->uc_mcontext.gregs[REG_ERR] & 0x2) != 0;
#elif defined(__aarch64__)
	const struct _aarch64_ctx *h = (const void *)uc->uc_mcontext.__reserved;
	while (h->magic != 0) {
		if (h->magic == ESR_MAGIC) {
			uint64_t esr = ((const struct esr_context *)h)->esr;
			unsigned ec = (unsigned)(esr >> 26) & 0x3f;
			/* Data abort from a lower or the same level: WnR is bit 6. */
			if (ec == 0x24 || ec == 0x25)
				return (esr >> 6) & 1;
			return 0;
		}
		if (h->size == 0)
			break;
		h = (const void *)((const char *)h + h->size);
	}
	return -1;
#else
	(void)uc;
	return -1;
#endif
}

/* Hands the fault to the disposition prev (NULL: the default action). */
static void chain_to(const struct sigaction *prev, int sig, siginfo_t *si, void *uctx)
{
	if (prev != NULL && prev->sa_flags & SA_SIGINFO) {
		if (prev->sa_sigaction != NULL) {
			prev->sa_sigaction(sig, si, uctx);
			return;
		}
	} else if (prev != NULL && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
		prev->sa_handler(sig);
		return;
	}
	/* Default action: restore it; the access faults again on return and
	 * the kernel kills the process with SIGSEGV at the right address. */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGSEGV, &dfl, NULL);
}

/* Hands a fault that is not virtmem's to the previous handler.  When the
 * fault comes back from a handler this thread chained it to (same siginfo
 * or ucontext, deeper on the stack), that handler was installed over ours
 * and chains to it: the fault goes to what was below that handler instead,
 * and to the default action when that is unknown or already on the chain.
 * So chaining never recurses, even through a handler that passes copies on
 * (CHAIN_MAX). */
static void chain_previous(int sig, siginfo_t *si, void *uctx)
{
	const char *frame = __builtin_frame_address(0);
	unsigned n = chain_n, idx;

	/* The stack grows down: a chain that still runs has its frame above
	 * ours. */
	while (n > 0 && chain_stack[n - 1].frame <= frame)
		n--;
	if (n == CHAIN_MAX) {
		idx = NONE;
	} else if (n > 0 && (chain_stack[n - 1].si == si || chain_stack[n - 1].uc == uctx)) {
		idx = atomic_load_explicit(&below[chain_stack[n - 1].idx], memory_order_acquire);
		for (unsigned i = 0; i < n && idx != NONE; i++)
			if (chain_stack[i].idx == idx)
				idx = NONE;
	} else {
		idx = atomic_load_explicit(&prev_idx, memory_order_acquire);
	}
	if (idx == NONE) {
		chain_n = n;
		chain_to(NULL, sig, si, uctx);
		return;
	}
	chain_stack[n] = (struct chain_rec){ frame, si, uctx, idx };
	chain_n = n + 1;
	chain_to(&saved[idx], sig, si, uctx);
	chain_n = n;
}

/* Queues SIGBUS for this thread so that it is delivered when the handler
 * returns, at the faulting instruction, with si_addr = addr.  Like the
 * kernel's own SIGBUS for a failed mmapped read, it cannot be blocked or
 * ignored: a blocked or ignored SIGBUS kills the process. */
static void raise_sigbus(void *addr, ucontext_t *uc)
{
	struct sigaction cur;
	siginfo_t si;

	if (sigaction(SIGBUS, NULL, &cur) == 0 &&
	    !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) {
		cur.sa_handler = SIG_DFL;
		sigaction(SIGBUS, &cur, NULL);
	}
	sigdelset(&uc->uc_sigmask, SIGBUS);
	memset(&si, 0, sizeof(si));
	si.si_signo = SIGBUS;
	si.si_code = BUS_ADRERR;
	si.si_addr = addr;
	syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), SIGBUS, &si);
}

static void on_sigsegv(int sig, siginfo_t *si, void *uctx)
{
	int saved_errno = errno;
	ucontext_t *uc = uctx;
	uintptr_t addr = (uintptr_t)si->si_addr;
	int write = fault_is_write(uc);
	vm_blk_t blk = 0;
	int rc;

	rc = vm_fault_at(addr, write, true, 0, &blk);
	if (rc == VM_FAULT_NOT_OURS) {
		chain_previous(sig, si, uctx);
	} else if (rc < 0) {
		/* Not logged: whoever failed (loadblk, RAM, mapping) said so. */
		raise_sigbus((void *)addr, uc);
	}
	errno = saved_errno;
}

/* Index of disposition sa in saved[], appending it if it is new; -1 when
 * saved[] is full.  Only how the handler is called matters. */
static int saved_index(const struct sigaction *sa)
{
	for (unsigned i = 0; i < nsaved; i++) {
		if ((saved[i].sa_flags & SA_SIGINFO) != (sa->sa_flags & SA_SIGINFO))
			continue;
		if (sa->sa_flags & SA_SIGINFO ? saved[i].sa_sigaction == sa->sa_sigaction
					      : saved[i].sa_handler == sa->sa_handler)
			return (int)i;
	}
	if (nsaved == NSAVED)
		return -1;
	saved[nsaved] = *sa;
	atomic_store_explicit(&below[nsaved], NONE, memory_order_relaxed);
	return (int)nsaved++;
}

static bool is_ours(const struct sigaction *sa)
{
	/* Also when put back with signal(), without SA_SIGINFO: sa_handler
	 * and sa_sigaction share their storage. */
	return sa->sa_sigaction == on_sigsegv;
}

/* saved[idx] replaced our handler: what we chained to then is below it.
 * Published before our handler goes back in front, so that a fault that
 * reaches it afterwards chains to saved[idx]. */
static void publish_prev(unsigned idx)
{
	unsigned cur = atomic_load_explicit(&prev_idx, memory_order_relaxed);
	if (cur != idx)
		atomic_store_explicit(&below[idx], cur, memory_order_release);
	atomic_store_explicit(&prev_idx, idx, memory_order_release);
}

/* Installs on_sigsegv unless it is the current handler.  Called at every
 * vm_fileh_open and vm_fileh_mmap, so that a handler installed over ours
 * later (a test framework, a language runtime) is chained to rather than
 * left to swallow virtmem's faults.  The handler it replaces becomes the
 * previous handler; if that one chains back to ours, chain_previous()
 * breaks the loop. */
static int sigsegv_install(void)
{
	struct sigaction sa, cur, old;
	static bool warned;
	int rc = 0, idx = -1;

	pthread_mutex_lock(&install_mu);
	memset(&cur, 0, sizeof(cur));
	if (sigaction(SIGSEGV, NULL, &cur) < 0) {
		rc = -errno;
		goto out;
	}
	if (cur.sa_flags & SA_SIGINFO && cur.sa_sigaction == on_sigsegv)
		goto out;
	if (!is_ours(&cur)) {
		idx = saved_index(&cur);
		if (idx < 0) {
			/* NSAVED different handlers took SIGSEGV over ours:
			 * leave this one in front. */
			if (!warned)
				vm_log("too many SIGSEGV handlers installed over virtmem's; not re-installing");
			warned = true;
			goto out;
		}
		publish_prev((unsigned)idx);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsegv;
	/* No SA_ONSTACK: loads may need more stack than an alternate signal
	 * stack has.  SIGBUS is held off while the handler runs so that the
	 * SIGBUS we raise arrives on the faulting instruction's context. */
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGBUS);
	memset(&old, 0, sizeof(old));
	if (sigaction(SIGSEGV, &sa, &old) < 0) {
		rc = -errno;
		goto out;
	}
	/* Another thread installed a handler since we looked: chain to it. */
	if (!is_ours(&old) && (idx = saved_index(&old)) >= 0)
		publish_prev((unsigned)idx);
out:
	pthread_mutex_unlock(&install_mu);
	return rc;
}

static int sigsegv_probe(void)
{
	return 0;
}

static int sigsegv_attach(vm_fileh *fh)
{
	(void)fh;
	return sigsegv_install();
}

const struct vm_engine vm_engine_sigsegv = {
	.name = "sigsegv",
	.probe = sigsegv_probe,
	.attach = sigsegv_attach,
};
