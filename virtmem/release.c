/* release.c — giving a mapping's memory back off the caller's thread.
 *
 * Unmapping a mapping whose blocks are all mapped, and closing the last
 * reference to a uffd handle's memfd, cost the caller's thread a walk of
 * every os page: 256 MiB took 17 ms to munmap and 20 ms to free the memfd
 * (docs/virtmem.md, "What a sequential read of a mapping costs").
 * vm_release_range moves the range out of the way with mremap (page tables
 * move whole when source and destination agree modulo 2 MiB: about 70 us
 * for 256 MiB), so the address range is free at once, and the release
 * thread drops the moved pages and unmaps them; the last munmap of a
 * memfd's pages frees them on that thread too.  What frees less than
 * RELEASE_MIN, and what cannot be moved (a range spanning several kernel
 * mappings, no room, no thread, a full queue, a child after fork), is
 * unmapped on the caller's thread as before.
 * vm_release_wait waits until everything handed over is unmapped.
 * VIRTMEM_TEST_RELEASE_HOLD (tests only, read at each hand-over) keeps
 * the thread from unmapping until someone waits.
 * Owns: the release thread and its queue of ranges.
 * Locking: rel.mu guards the queue; it may be taken with vm_lock held,
 * never the other way round; the thread never takes vm_lock and never
 * allocates (a fork while it works cannot catch an allocator lock).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define RELEASE_QUEUE 64
/* What the thread drops at once: 2 MiB of mapped 4 KiB pages, about
 * 0.15 ms. */
#define RELEASE_STEP ((size_t)2 << 20)
/* Page tables move whole between addresses equal modulo this. */
#define RELEASE_ALIGN ((size_t)2 << 20)

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* work queued, or the queue emptied */
	pid_t pid;              /* the process the thread runs in, else 0 */
	bool started;           /* the thread runs (its start-up is over) */
	bool busy;              /* the thread is unmapping one */
	bool hold;              /* VIRTMEM_TEST_RELEASE_HOLD: until a wait */
	unsigned waiting;       /* threads in vm_release_wait */
	unsigned head, len;
	struct { void *addr; size_t len; } q[RELEASE_QUEUE];
} rel = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *release_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&rel.mu);
	rel.started = true;
	pthread_cond_broadcast(&rel.cv);
	for (;;) {
		if (rel.len == 0 || (rel.hold && rel.waiting == 0)) {
			pthread_cond_wait(&rel.cv, &rel.mu);
			continue;
		}
		void *addr = rel.q[rel.head].addr;
		size_t len = rel.q[rel.head].len;
		rel.head = (rel.head + 1) % RELEASE_QUEUE;
		rel.len--;
		rel.busy = true;
		pthread_mutex_unlock(&rel.mu);
		/* The pages' entries are dropped with MADV_DONTNEED, under the
		 * process's mmap lock taken for reading, in steps, then the
		 * range, empty, is unmapped.  A munmap takes that lock for
		 * writing: in 2 MiB steps, the program's own mmap and munmap
		 * calls (a handle's close: 3 ms alone) waited for about all
		 * of them (25 ms), the thread taking the lock again before
		 * the woken waiter could. */
		for (size_t off = 0; off < len; off += RELEASE_STEP)
			(void)madvise((char *)addr + off, len - off < RELEASE_STEP ? len - off : RELEASE_STEP,
				      MADV_DONTNEED);
		munmap(addr, len);
		pthread_mutex_lock(&rel.mu);
		rel.busy = false;
		if (rel.len == 0)
			pthread_cond_broadcast(&rel.cv);
	}
	return NULL;
}

/* A fork while the thread holds rel.mu would leave the child's copy held
 * for ever: the fork waits for it (a child unmaps what it inherited
 * queued itself; a range the thread was unmapping stays mapped in the
 * child). */
static void fork_prepare(void) { pthread_mutex_lock(&rel.mu); }
static void fork_done(void) { pthread_mutex_unlock(&rel.mu); }

/* rel.mu held.  Is the thread there to take [addr, addr + len)?  Starts
 * it at the first call of the process.  A child after fork has the
 * parent's queue but no thread: it unmaps what was queued itself and
 * gives nothing to a thread (a thread started in a child could be caught
 * by a lock the fork copied held). */
static bool thread_ready_locked(void)
{
	pid_t self = getpid();

	if (rel.pid == self)
		return true;
	if (rel.pid != 0) {
		/* A child: what the parent had queued goes now. */
		while (rel.len > 0) {
			munmap(rel.q[rel.head].addr, rel.q[rel.head].len);
			rel.head = (rel.head + 1) % RELEASE_QUEUE;
			rel.len--;
		}
		rel.busy = false;
		return false;
	}
	/* No thread yet (or it could not start: tried again next time). */
	static bool atfork;
	if (!atfork && pthread_atfork(fork_prepare, fork_done, fork_done) != 0)
		return false;
	atfork = true;
	pthread_attr_t attr;
	pthread_t t;
	sigset_t all, old;
	if (pthread_attr_init(&attr) != 0)
		return false;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* Signals are the program's: the thread takes none. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&t, &attr, release_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc != 0)
		return false;
	rel.pid = self;
	/* Started before anyone goes on: a fork during a thread's start-up
	 * can copy a sanitizer's allocator lock held (docs/virtmem.md). */
	while (!rel.started)
		pthread_cond_wait(&rel.cv, &rel.mu);
	return true;
}

/* [addr, addr + len) moved to an address of a new reservation equal to
 * addr modulo RELEASE_ALIGN: the reservation's start and length in *resp
 * and *reslenp, or -1 (nothing moved). */
static int move_away(void *addr, size_t len, void **resp, size_t *reslenp)
{
	size_t reslen = len + 2 * RELEASE_ALIGN;
	char *res = mmap(NULL, reslen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (res == MAP_FAILED)
		return -1;
	uintptr_t dst = ((uintptr_t)res + RELEASE_ALIGN - 1) & ~(uintptr_t)(RELEASE_ALIGN - 1);
	dst += (uintptr_t)addr & (RELEASE_ALIGN - 1);
	if (mremap(addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)dst) == MAP_FAILED) {
		munmap(res, reslen);
		return -1;
	}
	*resp = res;
	*reslenp = reslen;
	return 0;
}

void vm_release_range(void *addr, size_t len, uint64_t frees)
{
	void *res;
	size_t reslen;

	if (len == 0)
		return;
	if (frees < RELEASE_MIN) {
		munmap(addr, len);
		return;
	}
	const char *hold = getenv("VIRTMEM_TEST_RELEASE_HOLD");
	pthread_mutex_lock(&rel.mu);
	rel.hold = hold != NULL && *hold != '\0' && *hold != '0';
	if (!thread_ready_locked() || rel.len == RELEASE_QUEUE || move_away(addr, len, &res, &reslen) < 0) {
		pthread_mutex_unlock(&rel.mu);
		munmap(addr, len);
		return;
	}
	rel.q[(rel.head + rel.len) % RELEASE_QUEUE].addr = res;
	rel.q[(rel.head + rel.len) % RELEASE_QUEUE].len = reslen;
	rel.len++;
	pthread_cond_broadcast(&rel.cv);
	pthread_mutex_unlock(&rel.mu);
}

void vm_release_wait(void)
{
	pthread_mutex_lock(&rel.mu);
	if (rel.pid != 0 && rel.pid != getpid())
		(void)thread_ready_locked(); /* a child: unmaps what it has */
	else {
		rel.waiting++;
		pthread_cond_broadcast(&rel.cv); /* a held thread goes on */
		while (rel.len > 0 || rel.busy)
			pthread_cond_wait(&rel.cv, &rel.mu);
		rel.waiting--;
	}
	pthread_mutex_unlock(&rel.mu);
}
