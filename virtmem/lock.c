/* lock.c — vm_lock, the one mutex of libvirtmem, and what goes with it:
 * vm_cond (the end of a load or store), the thread-local record of what
 * this thread is doing inside virtmem, the log line and error text helpers.
 *
 * Owns: vm_lock, vm_cond, vm_lock_held_here, vm_in_backend.
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
#include <unistd.h>

#include "internal.h"

static pthread_mutex_t vm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t vm_cond = PTHREAD_COND_INITIALIZER;

__thread int vm_lock_held_here __attribute__((tls_model("initial-exec")));
__thread int vm_in_backend __attribute__((tls_model("initial-exec")));

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
	vm_lock_wait(&vm_cond);
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
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
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
