/* lock.c — vm_lock, the one mutex of libvirtmem, and what goes with it:
 * vm_cond (the end of a load or store), the thread-local record of what
 * this thread is doing inside virtmem, the log line and error text helpers.
 *
 * Owns: vm_lock, vm_cond, vm_lock_held_here, vm_in_backend, the table of
 * threads in a backend call (for engines whose faults another thread
 * serves) and the calls of vm_thread_blocks around what may block.
 *
 * Locking: vm_lock protects every structure of internal.h.  It is taken by
 * vm_lock_acquire and given up by vm_lock_release, vm_lock_wait_io and
 * vm_lock_wait (a pool's spare_cv), which keep vm_lock_held_here true
 * exactly while this thread holds it: vm_lock_assert_held() and the fault
 * path's refusal of faults from inside virtmem rely on that.  Lock order:
 * vm_lock is the innermost lock of libvirtmem; a backend is never called
 * with it held except for the overlay trio (mapping.c).
 */
#include "config.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static pthread_mutex_t vm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vm_cond = PTHREAD_COND_INITIALIZER;

__thread int vm_lock_held_here __attribute__((tls_model("initial-exec")));
__thread int vm_in_backend __attribute__((tls_model("initial-exec")));
__thread void (*vm_thread_blocks)(bool on) __attribute__((tls_model("initial-exec")));

void vm_lock_acquire(void)
{
	pthread_mutex_lock(&vm_lock);
	vm_lock_held_here = 1;
}

void vm_lock_release(void)
{
	vm_assert(vm_lock_held_here);
	vm_lock_held_here = 0;
	pthread_mutex_unlock(&vm_lock);
}

void vm_lock_wait(pthread_cond_t *cv)
{
	vm_assert(vm_lock_held_here);
	vm_lock_held_here = 0;
	pthread_cond_wait(cv, &vm_lock);
	vm_lock_held_here = 1;
}

void vm_lock_wait_io(void)
{
	if (vm_thread_blocks)
		vm_thread_blocks(true);
	vm_lock_wait(&vm_cond);
	if (vm_thread_blocks)
		vm_thread_blocks(false);
}

void vm_lock_wake_io(void)
{
	vm_assert(vm_lock_held_here);
	pthread_cond_broadcast(&vm_cond);
}

void vm_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	memcpy(buf, "virtmem: ", 9);
	va_start(ap, fmt);
	n = vsnprintf(buf + 9, sizeof(buf) - 10, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 9;
	/* Cut: the text ends before vsnprintf's NUL, at buf[sizeof(buf) - 3]. */
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
	(void)w;
}

void vm_assert_fail(const char *file, int line, const char *cond)
{
	vm_log("%s:%d: assertion failed: %s", file, line, cond);
	abort();
}

const char *vm_strerror(int err)
{
	return strerror(err < 0 ? -err : err);
}

/* Threads running a backend call made by virtmem, by thread id: a fault
 * that a handler thread serves for one of them is refused as the SIGSEGV
 * engine refuses it in the thread itself (vm_in_backend).  A thread beyond
 * the table's room is not recorded (its fault is then served). */
#define NBACKEND 256
static pid_t in_backend[NBACKEND];
static unsigned nin_backend; /* entries in use (atomic): none, no scan */
static __thread pid_t my_tid __attribute__((tls_model("initial-exec")));
static __thread int my_slot __attribute__((tls_model("initial-exec")));

void vm_backend_enter(void)
{
	if (vm_in_backend++ > 0)
		return;
	if (vm_thread_blocks)
		vm_thread_blocks(true);
	if (my_tid == 0)
		my_tid = (pid_t)syscall(SYS_gettid);
	my_slot = -1;
	for (int i = 0; i < NBACKEND; i++) {
		pid_t none = 0;
		if (__atomic_compare_exchange_n(&in_backend[i], &none, my_tid, false,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			__atomic_fetch_add(&nin_backend, 1, __ATOMIC_ACQ_REL);
			my_slot = i;
			break;
		}
	}
}

void vm_backend_leave(void)
{
	if (--vm_in_backend > 0)
		return;
	if (my_slot >= 0) {
		__atomic_fetch_sub(&nin_backend, 1, __ATOMIC_ACQ_REL);
		__atomic_store_n(&in_backend[my_slot], 0, __ATOMIC_RELEASE);
	}
	if (vm_thread_blocks)
		vm_thread_blocks(false);
}

bool vm_thread_in_backend(pid_t tid)
{
	if (__atomic_load_n(&nin_backend, __ATOMIC_ACQUIRE) == 0)
		return false;
	for (int i = 0; i < NBACKEND; i++)
		if (__atomic_load_n(&in_backend[i], __ATOMIC_ACQUIRE) == tid)
			return true;
	return false;
}
