/* sigsegv.c — the process-wide SIGSEGV handler that turns accesses to
 * virtmem mappings into page faults handled by virtmem.c.
 *
 * Owns: the handler's installation and the previous SIGSEGV disposition.
 * A fault outside virtmem memory goes to the previous handler (or, when
 * there was none, kills the process exactly as it would have been killed).
 * A fault virtmem cannot serve (failed load, RAM budget full of dirty pages)
 * gets SIGBUS at the faulting address, as a failed read of an mmapped file
 * does.  errno is preserved.  Read/write detection: x86-64 (page-fault error
 * code) and aarch64 (ESR WnR bit).
 * Locking: installation is serialized by install_mu; the handler takes
 * vm_lock through vm_fault_at().
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__aarch64__)
#include <asm/sigcontext.h>
#endif

#include "internal.h"

static struct sigaction prev_segv;
static pthread_mutex_t install_mu = PTHREAD_MUTEX_INITIALIZER;

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

/* Hands the fault to whoever had SIGSEGV before us. */
static void chain_previous(int sig, siginfo_t *si, void *uctx)
{
	if (prev_segv.sa_flags & SA_SIGINFO) {
		if (prev_segv.sa_sigaction != NULL) {
			prev_segv.sa_sigaction(sig, si, uctx);
			return;
		}
	} else if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
		prev_segv.sa_handler(sig);
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

	rc = vm_fault_at(addr, write, &blk);
	if (rc == VM_FAULT_NOT_OURS) {
		chain_previous(sig, si, uctx);
	} else if (rc < 0) {
		vm_log("%s of block %llu failed: %s; SIGBUS at %p",
		       write > 0 ? "write fault" : "load", (unsigned long long)blk,
		       vm_strerror(rc), (void *)addr);
		raise_sigbus((void *)addr, uc);
	}
	errno = saved_errno;
}

/* Installs on_sigsegv unless it is the current handler.  Called at every
 * vm_fileh_open and vm_fileh_mmap, so that a handler installed over ours
 * later (a test framework, a language runtime) is chained to rather than
 * left to swallow virtmem's faults. */
int sigsegv_install(void)
{
	struct sigaction sa, cur;
	int rc = 0;

	pthread_mutex_lock(&install_mu);
	if (sigaction(SIGSEGV, NULL, &cur) == 0 &&
	    cur.sa_flags & SA_SIGINFO && cur.sa_sigaction == on_sigsegv)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsegv;
	/* No SA_ONSTACK: loads may need more stack than an alternate signal
	 * stack has.  SIGBUS is held off while the handler runs so that the
	 * SIGBUS we raise arrives on the faulting instruction's context. */
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGBUS);
	if (sigaction(SIGSEGV, &sa, &prev_segv) < 0)
		rc = -errno;
out:
	pthread_mutex_unlock(&install_mu);
	return rc;
}
