/* ram.c — the RAM page pool: slots of block data in one memfd, and the
 * pool's spare thread that keeps zeroed slots ready ahead of need.
 *
 * The memfd is sized (sparsely) far beyond the budget and mapped once into
 * the process, so a page's bytes are always reachable at ram_addr() with no
 * per-fault mmap.  Slots are power-of-two sized; freed slots go to a free
 * list of their size and their memory back to the OS (FALLOC_FL_PUNCH_HOLE),
 * so a slot fresh from ram_alloc reads as zeros.
 * The budget counts slot bytes handed out and is never exceeded.  Offset space
 * per size class never exceeds the budget, so RAM_NCLASS * budget of address
 * space always suffices.
 * Owns: every vm_ram, its free lists, its spare slots and spare thread
 * (the LRU it holds is page.c's).
 * Locking: ram_* and spare_* functions and the LRU are under vm_lock;
 * vm_ram_open and vm_ram_close touch no shared state.  The spare thread
 * (spare_main) takes vm_lock for its bookkeeping and waits on the pool's
 * spare_cv with it; it populates a slot without it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Address space reserved for a pool: one budget per block size class that
 * can occur (page size .. VM_BLKSIZE_MAX), rounded to VM_BLKSIZE_MAX. */
static size_t view_size_for(size_t budget)
{
	size_t pagesize = (size_t)sysconf(_SC_PAGESIZE);
	size_t nclass = 0;
	for (size_t s = pagesize; s <= VM_BLKSIZE_MAX; s <<= 1)
		nclass++;
	size_t b = (budget + VM_BLKSIZE_MAX - 1) & ~(VM_BLKSIZE_MAX - 1);
	return b * nclass;
}

int vm_ram_open(vm_ram **ramp, size_t budget)
{
	size_t pagesize = (size_t)sysconf(_SC_PAGESIZE);
	vm_ram *ram;

	*ramp = NULL;
	/* Reserve at most 1/8 of a 47-bit address space. */
	if (budget < pagesize || budget > ((size_t)1 << 44) / RAM_NCLASS)
		return -EINVAL;
	ram = calloc(1, sizeof(*ram));
	if (ram == NULL)
		return -ENOMEM;
	ram->budget = budget;
	ram->pageshift = (unsigned)__builtin_ctzl(pagesize);
	ram->view_size = view_size_for(budget);
	vm_list_init(&ram->lru);
	ram->memfd = memfd_create("virtmem-ram", MFD_CLOEXEC);
	if (ram->memfd < 0)
		goto fail;
	if (ftruncate(ram->memfd, (off_t)ram->view_size) < 0)
		goto fail;
	ram->base = mmap(NULL, ram->view_size, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_NORESERVE, ram->memfd, 0);
	if (ram->base == MAP_FAILED)
		goto fail;
	*ramp = ram;
	return 0;
fail: {
	int rc = -errno;
	if (ram->memfd >= 0)
		close(ram->memfd);
	free(ram);
	return rc;
}
}

int vm_ram_close(vm_ram *ram)
{
	if (ram == NULL)
		return 0;
	if (ram->nfileh != 0)
		return -EBUSY;
	ram_stop_spares(ram);
	munmap(ram->base, ram->view_size);
	close(ram->memfd);
	for (int i = 0; i < RAM_NCLASS; i++)
		free(ram->free[i].off);
	free(ram);
	return 0;
}

size_t vm_ram_budget(const vm_ram *ram) { return ram->budget; }
size_t vm_ram_used(const vm_ram *ram) { return __atomic_load_n(&ram->used, __ATOMIC_RELAXED); }

/* Size class of a slot: log2(size / page size).  ram->pageshift is read
 * once at open: this runs on every fault. */
static int class_of(const vm_ram *ram, size_t size)
{
	return __builtin_ctzl(size) - (int)ram->pageshift;
}

/* Free slots of one size are kept in a min-heap of offsets: handing out the
 * lowest free offset first makes blocks faulted in order sit at ascending,
 * adjacent offsets, so the kernel merges their mappings into few VMAs (fewer
 * VMAs: cheaper mmap calls, and far from vm.max_map_count). */
static void heap_push(struct ram_freelist *fl, size_t off)
{
	size_t i = fl->n++;
	while (i > 0 && fl->off[(i - 1) / 2] > off) {
		fl->off[i] = fl->off[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	fl->off[i] = off;
}

static size_t heap_pop(struct ram_freelist *fl)
{
	size_t top = fl->off[0], last = fl->off[--fl->n], i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= fl->n)
			break;
		if (c + 1 < fl->n && fl->off[c + 1] < fl->off[c])
			c++;
		if (fl->off[c] >= last)
			break;
		fl->off[i] = fl->off[c];
		i = c;
	}
	if (fl->n > 0)
		fl->off[i] = last;
	return top;
}

int ram_take(vm_ram *ram, size_t size, size_t *offp)
{
	vm_lock_assert_held();
	struct ram_freelist *fl = &ram->free[class_of(ram, size)];

	if (fl->n > 0) {
		*offp = heap_pop(fl);
	} else {
		if (ram->view_size - ram->bump < size)
			return -ENOSPC; /* cannot happen: see the file comment */
		*offp = ram->bump;
		ram->bump += size;
	}
	return 0;
}

int ram_alloc(vm_ram *ram, size_t size, size_t *offp)
{
	if (size > ram->budget - ram->used - ram->spare_bytes)
		return -ENOSPC;
	int rc = ram_take(ram, size, offp);
	if (rc == 0)
		__atomic_store_n(&ram->used, ram->used + size, __ATOMIC_RELAXED);
	return rc;
}

void ram_put(vm_ram *ram, size_t off, size_t size, bool hole)
{
	vm_lock_assert_held();
	struct ram_freelist *fl = &ram->free[class_of(ram, size)];

	/* Give the memory back.  A free slot reads as zeros (page_fill
	 * counts on it): should punching fail, zero it instead. */
	if (!hole && fallocate(ram->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)size) < 0)
		memset(ram->base + off, 0, size);
	if (fl->n == fl->cap) {
		size_t ncap = fl->cap ? fl->cap * 2 : 64;
		size_t *n = realloc(fl->off, ncap * sizeof(*n));
		if (n == NULL)
			return; /* the slot is lost to reuse, not to the budget */
		fl->off = n;
		fl->cap = ncap;
	}
	heap_push(fl, off);
}

void ram_free(vm_ram *ram, size_t off, size_t size, bool hole)
{
	ram_put(ram, off, size, hole);
	vm_assert(ram->used >= size);
	__atomic_store_n(&ram->used, ram->used - size, __ATOMIC_RELAXED);
}

/* ---- spare slots ---------------------------------------------------------------- */

/* Gives the last ready spare slot back to the pool. */
static void spare_drop_locked(vm_ram *ram)
{
	vm_lock_assert_held();
	ram_put(ram, ram->spare[--ram->spare_n], ram->spare_size, false);
	ram->spare_bytes -= ram->spare_size;
}

void spare_release_all_locked(vm_ram *ram)
{
	vm_lock_assert_held();
	while (ram->spare_n > 0)
		spare_drop_locked(ram);
}

/* Gives ready spare slots back until size bytes fit the budget (or none
 * is left).  Spares go before any cached block. */
void spare_release_locked(vm_ram *ram, size_t size)
{
	vm_lock_assert_held();
	while (ram->spare_n > 0 && ram->budget - ram->used - ram->spare_bytes < size)
		spare_drop_locked(ram);
}

/* The pool's spare thread: while fewer than spare_want spares are ready,
 * none is being filled, and the budget has room for a new one plus two more
 * blocks, takes a slot and populates it without vm_lock.  It runs at normal
 * priority: populating holds the process's mmap lock, which every fault's
 * mmap needs, so a thread starved of CPU while holding it (SCHED_IDLE was
 * measured stalling mmap for 0.7 s) would stall the faults it is meant to
 * speed up.  The work is what the loads would do anyway, done earlier; it
 * is done in 128 KiB steps so that no step holds the lock long.
 * VIRTMEM_TEST_SPARE_PAUSE_US (tests only) pauses between steps. */
#define SPARE_STEP ((size_t)128 << 10)

static void *spare_main(void *arg)
{
	vm_ram *ram = arg;
	unsigned pause_us = ram->spare_pause_us;

	vm_lock_acquire();
	while (!ram->spare_stop) {
		size_t size = ram->spare_size, off;
		if (size == 0 || ram->spare_n >= ram->spare_want || ram->nfileh_own > 0 ||
		    ram->budget - ram->used - ram->spare_bytes < 3 * size ||
		    ram_take(ram, size, &off) < 0) {
			vm_lock_wait(&ram->spare_cv);
			continue;
		}
		ram->spare_filling = true;
		ram->filling_off = off;
		ram->filling_size = size;
		__atomic_store_n(&ram->filling_taken, false, __ATOMIC_RELAXED);
		ram->spare_bytes += size;
		vm_lock_release();
		for (size_t o = 0; o < size; o += SPARE_STEP) {
			/* Stop when closing, or when a load took the slot
			 * over (it may be freed and reused meanwhile). */
			if (__atomic_load_n(&ram->spare_stop, __ATOMIC_RELAXED) ||
			    __atomic_load_n(&ram->filling_taken, __ATOMIC_RELAXED))
				break;
			(void)madvise(ram->base + off + o, size - o < SPARE_STEP ? size - o : SPARE_STEP,
				      MADV_POPULATE_WRITE);
			if (pause_us)
				usleep(pause_us);
		}
		vm_lock_acquire();
		ram->spare_filling = false;
		if (ram->filling_taken)
			continue; /* a load has it, and accounted for it */
		if (ram->spare_stop || size != ram->spare_size || ram->spare_n >= ram->spare_want) {
			ram_put(ram, off, size, false);
			ram->spare_bytes -= size;
			continue;
		}
		ram->spare[ram->spare_n++] = off;
	}
	vm_lock_release();
	return NULL;
}

int spare_take_locked(vm_ram *ram, size_t size, size_t *offp)
{
	vm_lock_assert_held();
	if (ram->spare_n == 0 || ram->spare_size != size)
		return 0;
	*offp = ram->spare[--ram->spare_n];
	ram->spare_bytes -= size;
	__atomic_store_n(&ram->used, ram->used + size, __ATOMIC_RELAXED);
	pthread_cond_signal(&ram->spare_cv); /* fill another */
	return 1;
}

/* Populating never overwrites what the load writes meanwhile: the thread
 * stops at its next step when it sees filling_taken. */
int spare_take_filling_locked(vm_ram *ram, size_t size, size_t *offp)
{
	vm_lock_assert_held();
	if (!ram->spare_filling || ram->filling_taken || ram->filling_size != size)
		return 0;
	*offp = ram->filling_off;
	__atomic_store_n(&ram->filling_taken, true, __ATOMIC_RELAXED);
	ram->spare_bytes -= size;
	__atomic_store_n(&ram->used, ram->used + size, __ATOMIC_RELAXED);
	return 1;
}

/* Wakes the spare thread when memory was given back (it may have room to
 * fill spares again).  vm_lock held. */
void spare_wake_locked(vm_ram *ram)
{
	vm_lock_assert_held();
	if (ram->spare_running && ram->spare_n < ram->spare_want)
		pthread_cond_signal(&ram->spare_cv);
}

int vm_ram_keep_spare(vm_ram *ram, size_t blksize, unsigned n)
{
	size_t pagesize = (size_t)1 << ram->pageshift;
	int rc = 0;

	if (n > 0 && (blksize < pagesize || blksize > VM_BLKSIZE_MAX || (blksize & (blksize - 1))))
		return -EINVAL;
	if (n > 1024)
		n = 1024;
	vm_lock_acquire();
	if (ram->spare_want < n) {
		size_t *a = realloc(ram->spare, n * sizeof(*a));
		if (a == NULL) {
			vm_lock_release();
			return -ENOMEM;
		}
		ram->spare = a;
	}
	/* Spares of another size are no use any more. */
	while (ram->spare_n > (blksize == ram->spare_size ? n : 0))
		spare_drop_locked(ram);
	ram->spare_size = n ? blksize : 0;
	ram->spare_want = n;
	if (n > 0 && !ram->spare_running) {
		const char *pause = getenv("VIRTMEM_TEST_SPARE_PAUSE_US");
		ram->spare_pause_us = pause ? (unsigned)strtoul(pause, NULL, 10) : 0;
		sigset_t all, old;
		sigfillset(&all);
		/* The thread takes no signal meant for the application. */
		pthread_sigmask(SIG_BLOCK, &all, &old);
		if (!ram->spare_cv_inited) {
			pthread_cond_init(&ram->spare_cv, NULL);
			ram->spare_cv_inited = true;
		}
		rc = -pthread_create(&ram->spare_thread, NULL, spare_main, ram);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		ram->spare_running = rc == 0;
	}
	if (ram->spare_running)
		pthread_cond_signal(&ram->spare_cv);
	vm_lock_release();
	return rc;
}

size_t vm_ram_spare(const vm_ram *ram)
{
	vm_lock_acquire();
	size_t n = ram->spare_n * ram->spare_size;
	vm_lock_release();
	return n;
}

size_t vm_ram_spare_filling(const vm_ram *ram)
{
	vm_lock_acquire();
	size_t n = ram->spare_filling && !ram->filling_taken ? ram->filling_size : 0;
	vm_lock_release();
	return n;
}

void ram_stop_spares(vm_ram *ram)
{
	vm_lock_acquire();
	bool running = ram->spare_running;
	__atomic_store_n(&ram->spare_stop, true, __ATOMIC_RELAXED);
	if (ram->spare_cv_inited)
		pthread_cond_broadcast(&ram->spare_cv);
	vm_lock_release();
	if (running)
		pthread_join(ram->spare_thread, NULL);
	vm_lock_acquire();
	while (ram->spare_n > 0)
		spare_drop_locked(ram);
	ram->spare_running = false;
	vm_lock_release();
	if (ram->spare_cv_inited)
		pthread_cond_destroy(&ram->spare_cv);
	free(ram->spare);
	ram->spare = NULL;
}
