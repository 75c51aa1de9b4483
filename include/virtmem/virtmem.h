/* virtmem.h — libvirtmem: user-space virtual memory over a block file.
 *
 * A BigFile is a file of fixed-size blocks whose bytes a backend loads and
 * stores (vm_bigfile_ops).  vm_fileh_open() opens a handle on it with a RAM
 * pool (vm_ram) that caches blocks; vm_fileh_mmap() maps a range of blocks
 * into the process.  Touching the mapping loads blocks on demand through page
 * faults, served by a fault engine (a SIGSEGV handler, or userfaultfd: see
 * docs/virtmem.md); writing marks them dirty; vm_fileh_dirty_writeout()
 * stores dirty blocks back through the backend.
 *
 * Two modes per handle:
 *  - loadblk mode: every block that is read is loaded into a RAM page by
 *    ops->loadblk and mapped read-only; a write makes it dirty (read-write).
 *  - mmap-overlay mode: the backend provides a read-only base layer that it
 *    maps itself (ops->mmap_setup_read / remmap_blk_read / munmap).  Reads are
 *    served by the base mapping without virtmem; only a write faults, copies
 *    the block from the base into a RAM page and makes it dirty.
 *
 * Blocks, pages: the file's unit is the block (blksize bytes, a power of two
 * from the OS page size up to 64 MiB).  A RAM page holds exactly one block.
 * In this API "page" and "block" are numbered the same way: page N of a
 * mapping's file is block N.
 *
 * Errors: functions return 0 or a negative errno value; vm_strerror() turns
 * it into text.  A failed load inside a page fault cannot return anything:
 * the faulting access gets SIGBUS at the faulting address, as a failed read
 * of an mmapped file would, and the block is retried on the next access.
 *
 * Thread safety: every function may be called from any thread.  Memory
 * obtained from vm_fileh_mmap() may be accessed concurrently by any thread.
 */
#ifndef VIRTMEM_VIRTMEM_H
#define VIRTMEM_VIRTMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t vm_blk_t;

typedef struct vm_ram vm_ram;
typedef struct vm_bigfile vm_bigfile;
typedef struct vm_bigfile_ops vm_bigfile_ops;
typedef struct vm_fileh vm_fileh;
typedef struct vm_vma vm_vma;
typedef struct vm_run vm_run;

/* Smallest and largest block size a BigFile may use. */
#define VM_BLKSIZE_MAX ((size_t)64 << 20)

/* ---- RAM page pool ------------------------------------------------------ */

/* vm_ram_open creates a RAM page pool that never holds more than budget
 * bytes of block data.  Pages live in one memfd; a dropped page is given back
 * to the OS (hole punching).  When the pool is full, clean pages of any handle
 * using the pool are reclaimed, least recently faulted first.  Dirty pages
 * are never reclaimed: when everything is dirty, a fault that needs a page
 * fails (SIGBUS) instead.  budget must be at least one OS page. */
int vm_ram_open(vm_ram **ramp, size_t budget);

/* vm_ram_close frees the pool.  It is an error to close a pool that handles
 * still use (-EBUSY is returned and nothing happens). */
int vm_ram_close(vm_ram *ram);

/* vm_ram_keep_spare keeps up to n slots of blksize bytes ready ahead of
 * need: zeroed memory with page table entries, which a load then writes
 * without the cost of allocating memory (on the 2-core VM of the
 * benchmarks, 1.3-1.8 ms per 4 MiB, more than fetching the block over
 * loopback).  A background thread of the pool fills them, one at a time,
 * at normal priority (a starved thread would hold up every fault: it holds
 * the mmap lock while it populates), only while the budget has room for
 * two more blocks besides the new spare, and again when memory is given
 * back.  Spares count against the budget, apart from vm_ram_used(), and
 * are given back before any cached block is reclaimed.  n = 0 stops keeping spares; a new
 * blksize replaces the spares of the old one.  Returns 0, -EINVAL for a bad
 * blksize, or -errno when the thread cannot be started. */
int vm_ram_keep_spare(vm_ram *ram, size_t blksize, unsigned n);
/* Bytes in ready spare slots now. */
size_t vm_ram_spare(const vm_ram *ram);
/* Bytes of the spare slot being filled now (0 or its size).  A load that
 * finds the budget full takes it over, rather than reclaim a block. */
size_t vm_ram_spare_filling(const vm_ram *ram);

size_t vm_ram_budget(const vm_ram *ram);
/* Bytes of block data the pool holds right now (<= budget). */
size_t vm_ram_used(const vm_ram *ram);

/* ---- BigFile: what a backend implements --------------------------------- */

struct vm_bigfile_ops {
	/* loadblk fills buf (blksize bytes) with block blk: all of it, for buf
	 * may hold another block's old bytes (a recycled RAM slot), not zeros.  Called with no
	 * virtmem lock held, possibly from a page-fault (SIGSEGV) handler or a
	 * userfaultfd handler thread (see the fault engines), and
	 * possibly for several blocks at once from several threads.  It must not
	 * touch memory mapped from this library.  Returns 0 or -errno; on error
	 * the faulting access gets SIGBUS and the block stays unloaded. */
	int (*loadblk)(vm_bigfile *file, vm_blk_t blk, void *buf);

	/* storeblk writes buf (blksize bytes) as block blk.  Called by
	 * vm_fileh_dirty_writeout() with no lock held, one block at a time in
	 * ascending block order.  Returns 0 or -errno. */
	int (*storeblk)(vm_bigfile *file, vm_blk_t blk, const void *buf);

	/* release is called when the last handle on the file is closed.
	 * Optional. */
	void (*release)(vm_bigfile *file);

	/* on_fault is told of every page fault a handle in loadblk mode takes
	 * on the file (block blk; write nonzero for a write), before virtmem
	 * serves it, whether the block is cached or not: for read-ahead.
	 * Optional.  Called with no lock held, from the fault handler; it must
	 * be quick and must not touch virtmem memory.  A write to a
	 * VM_READONLY handle's mapping is refused without it. */
	void (*on_fault)(vm_bigfile *file, vm_blk_t blk, int write);

	/* on_fault_around is told that a read fault on block blk - 1 also
	 * mapped blocks [blk, blk + n), which were cached (fault-around, see
	 * docs/virtmem.md): they take no fault of their own, and a read-ahead
	 * that follows the faults would otherwise see the next fault as a
	 * jump.  Called after on_fault for blk - 1, once they are mapped, as
	 * on_fault is (no lock held, quick, no virtmem memory).  Optional. */
	void (*on_fault_around)(vm_bigfile *file, vm_blk_t blk, size_t n);

	/* The overlay trio: optional, all three or none.
	 *
	 * mmap_setup_read maps the read-only base layer of blocks
	 * [blk, blk+blklen) over the whole address range of vma (exactly at
	 * vm_vma_addr(vma), with MAP_FIXED, PROT_READ).  Returns 0 or -errno.
	 *
	 * remmap_blk_read maps the base layer of block blk again at its place
	 * in vma (vm_vma_blk_addr), read-only, replacing the RAM page virtmem
	 * had there.  Called when a dirty page is dropped (after writeout or
	 * discard).  The base must by then show the block's latest stored
	 * content.  Returns 0 or -errno.
	 *
	 * munmap is called before virtmem unmaps vma's address range, so that
	 * the backend can forget what it tracks for it.  virtmem itself unmaps
	 * the range afterwards.  Returns 0 or -errno (an error is logged). */
	int (*mmap_setup_read)(vm_bigfile *file, vm_vma *vma, vm_blk_t blk,
			       size_t blklen);
	int (*remmap_blk_read)(vm_bigfile *file, vm_vma *vma, vm_blk_t blk);
	int (*munmap)(vm_bigfile *file, vm_vma *vma);

	/* VM_OPS_* flags. */
	unsigned flags;
};

enum vm_bigfile_ops_flags {
	/* loadblk writes buf only through vm_loadblk_write() and
	 * vm_loadblk_zero(), never through the pointer: virtmem then leaves a
	 * fresh RAM slot unallocated and vm_loadblk_write fills it with
	 * pwrite(2). */
	VM_OPS_LOADBLK_WRITES = 1 << 0,
};

/* vm_loadblk_write copies len bytes from src to buf + off, for a loadblk
 * filling its buf.  The result is that of memcpy; the difference is the
 * cost.  When buf is a slot of fresh memory (the file's ops have
 * VM_OPS_LOADBLK_WRITES, and the call is made from the thread running
 * loadblk on that buf), the bytes go into the pool's memfd with pwrite(2):
 * the kernel allocates the pages without zeroing them first and without one
 * page fault per 4 KiB page.  Any other buffer gets a memcpy.
 * Returns 0, or -errno when pwrite fails (-ENOSPC when the system is out of
 * memory for the pool). */
int vm_loadblk_write(void *buf, size_t off, const void *src, size_t len);

/* vm_loadblk_zero sets len bytes at buf + off to zero, like memset.  In a
 * fresh slot (as above) bytes not yet written are left alone: fresh memory
 * reads as zeros, and its pages are then never allocated.  Returns 0 or
 * -errno. */
int vm_loadblk_zero(void *buf, size_t off, size_t len);

/* A backend embeds this struct (first member or via container_of). */
struct vm_bigfile {
	const vm_bigfile_ops *ops;
	size_t blksize; /* power of two, OS page size .. VM_BLKSIZE_MAX */
	/* What virtmem's own messages call the file (a URL, a path), or NULL;
	 * it must stay valid while a handle on the file is open. */
	const char *name;
	/* owned by virtmem: */
	unsigned nopen;
};

/* ---- file handles ------------------------------------------------------- */

enum vm_fileh_flags {
	/* 0: mmap-overlay mode when file has the overlay trio, else loadblk. */
	VM_MMAP_OVERLAY = 1 << 0,      /* overlay mode; -EINVAL if no trio */
	VM_DONT_MMAP_OVERLAY = 1 << 1, /* loadblk mode even if trio exists */
	VM_READONLY = 1 << 2,          /* write faults fail (SIGBUS, -EROFS) */
	/* The fault engine (see docs/virtmem.md); neither: the one
	 * VIRTMEM_ENGINE names (sigsegv or uffd), else the best available.
	 * mmap-overlay handles always use the SIGSEGV engine. */
	VM_ENGINE_SIGSEGV = 1 << 3,    /* a SIGSEGV handler, mmap/mprotect */
	VM_ENGINE_UFFD = 1 << 4,       /* userfaultfd; -ENOTSUP if unavailable */
};

/* vm_engine_probe tells whether the fault engine name ("sigsegv", "uffd")
 * can run in this process: 0, -EINVAL for an unknown name, or the -errno
 * that keeps it from running (no userfaultfd, a kernel without
 * UFFD_FEATURE_WP_ASYNC or PAGEMAP_SCAN). */
int vm_engine_probe(const char *name);

/* vm_fileh_open opens a handle on file whose pages come from ram.  Sets up
 * its fault engine on first use.  -EINVAL for a bad block size, for both
 * mode flags or both engine flags at once, for VM_MMAP_OVERLAY without the
 * trio or an unknown VIRTMEM_ENGINE; -ENOTSUP (or the -errno of the failure)
 * when the engine asked for cannot run. */
int vm_fileh_open(vm_fileh **fhp, vm_bigfile *file, vm_ram *ram, int flags);

/* vm_fileh_close unmaps every mapping still open on the handle, drops its
 * pages (dirty ones too: write them out first) and frees it.  It is an error
 * to close a handle while another thread uses it or its memory. */
void vm_fileh_close(vm_fileh *fh);

/* 1 when the handle is in mmap-overlay mode, 0 in loadblk mode. */
int vm_fileh_is_overlay(const vm_fileh *fh);

enum vm_writeout_flags {
	VM_WRITEOUT_STORE = 1 << 0,      /* storeblk every dirty page */
	VM_WRITEOUT_MARKSTORED = 1 << 1, /* then mark stored pages clean */
};

/* vm_fileh_dirty_writeout stores and/or marks stored the dirty pages.
 *
 * STORE calls storeblk for each dirty page in ascending block order.  While
 * a page is being stored it is write-protected: a thread writing to it waits
 * until its storeblk returns, and its write then keeps the page dirty.  A
 * page written after it was stored stays dirty however the writeout ends.
 *
 * MARKSTORED turns every dirty page that was stored (by this call or an
 * earlier STORE) and not written since into a clean page: in loadblk mode it
 * stays in RAM read-only; in overlay mode its RAM is dropped and the base
 * layer mapped again (remmap_blk_read).
 *
 * On a storeblk error the call returns it at once and marks nothing stored:
 * every dirty page stays dirty, and the pages it stored before the failing
 * one are not marked stored either, so a MARKSTORED alone afterwards leaves
 * them dirty.  -EBUSY if another writeout or a discard runs
 * on the handle, -EINVAL for bad flags. */
int vm_fileh_dirty_writeout(vm_fileh *fh, int flags);

/* vm_fileh_dirty_discard drops every dirty page: loadblk mode unmaps them
 * (the next access loads the block again), overlay mode maps the base layer
 * again.  -EBUSY during a writeout; the -errno of a page the system refused
 * to unmap (out of kernel mappings: -ENOMEM), which stays dirty. */
int vm_fileh_dirty_discard(vm_fileh *fh);

/* vm_fileh_invalidate_page tells virtmem that block blk changed in the
 * backend: a clean cached copy is dropped (a load in progress is redone).
 * -EBUSY for a dirty page (the caller's changes are kept), -ENOTSUP in overlay
 * mode, where the backend owns the base layer and updates it itself; the
 * -errno of a page the system refused to unmap (-ENOMEM), which stays
 * cached. */
int vm_fileh_invalidate_page(vm_fileh *fh, vm_blk_t blk);

/* ---- mappings ----------------------------------------------------------- */

/* vm_fileh_mmap maps blocks [blk, blk+blklen) of the handle's file
 * into fresh address space.  Pages are shared by every mapping of the handle
 * that covers them; a new mapping shows the handle's dirty pages at once. */
int vm_fileh_mmap(vm_vma **vmap, vm_fileh *fh, vm_blk_t blk, size_t blklen);

/* vm_vma_unmap unmaps and frees the mapping.  Pages stay cached in the
 * handle (dirty ones stay dirty).  Its address range is free on return;
 * the memory it mapped may be given back a moment later, by a thread of
 * libvirtmem (vm_release_wait). */
void vm_vma_unmap(vm_vma *vma);

/* vm_release_wait returns once the memory of every mapping unmapped and
 * every handle closed before the call is given back to the system. */
void vm_release_wait(void);

void *vm_vma_addr(const vm_vma *vma);
size_t vm_vma_len(const vm_vma *vma);          /* bytes */
vm_blk_t vm_vma_first_blk(const vm_vma *vma);  /* first block */
vm_fileh *vm_vma_fileh(const vm_vma *vma);
/* Address of block blk inside vma (blk must be covered by vma). */
void *vm_vma_blk_addr(const vm_vma *vma, vm_blk_t blk);

/* ---- page faults -------------------------------------------------------- */

/* vm_vma_on_fault handles an access to addr inside vma exactly as the
 * SIGSEGV handler does (write: nonzero for a write access), and returns 0 or
 * the -errno the faulting access would have got as SIGBUS.  For tests and
 * for callers that want to prefetch a block without touching it. */
int vm_vma_on_fault(vm_vma *vma, void *addr, int write);

/* vm_fileh_prefetch loads block blk into RAM without mapping it, so that a
 * later fault on it only maps it: for read-ahead from a background thread.
 * Returns 0 at once when the block is already cached or being loaded (or in
 * overlay mode, where the base serves reads), the loadblk error otherwise,
 * -ENOMEM when the budget has no room.  Prefetched pages are clean and
 * reclaimable like any other. */
int vm_fileh_prefetch(vm_fileh *fh, vm_blk_t blk);

/* vm_fileh_prefetch_run does the same for blocks [blk, blk + n) that a
 * backend fetches together (one request for the run): every block of the
 * range that is neither cached nor being loaded turns LOADING at once, so
 * that a fault on any of them waits for this call instead of loading it
 * again; then loadblk fills them one by one in ascending order, each
 * cached as soon as it is filled.  RAM is taken within the budget as for
 * any load; the blocks for which none is left stay EMPTY.  A failed
 * loadblk gives up the blocks after it (they stay EMPTY: a fault loads
 * them).  Returns 0, the first loadblk error, or -ENOMEM when no block of
 * the run found RAM.  Overlay mode: 0 at once. */
int vm_fileh_prefetch_run(vm_fileh *fh, vm_blk_t blk, size_t n);

/* A run streamed into the page cache: for a backend that receives the
 * bytes of blocks [blk, blk + n) as one stream (one request for the run),
 * without a buffer of its own and without loadblk.  vm_run_begin starts
 * it (*runp NULL, and 0, in overlay mode or for n == 0: nothing to do).
 * vm_run_write hands over bytes [off, off + len) of the stream, off
 * counted from block blk's first byte, in order from 0 (a retry may start
 * again at 0); each block is taken when the stream reaches it, unless it
 * is cached, being loaded, or no RAM is left in the budget (then no later
 * block is taken either: those stay EMPTY, a fault loads them), and its
 * bytes go straight into its slot.  A block taken is LOADING until the
 * run ends: a fault on it waits; one not reached yet is loaded by its
 * fault as usual.  vm_run_end ends the run: with len >= 0 (the stream
 * was whole and checked: its bytes were [0, len)) every block taken is
 * cached, its bytes past len zeros; with len < 0 (the request failed)
 * they all turn EMPTY again.  It returns the number of blocks cached
 * (*bytesp: their bytes from the stream), or -errno when writing a block
 * failed (none is cached then).  vm_run_write returns 0 or that -errno
 * (the stream may stop there); -EINVAL for bytes outside the run.  The
 * calls of one run come from one thread, which must not fault on the
 * run's blocks meanwhile. */
int vm_run_begin(vm_fileh *fh, vm_blk_t blk, size_t n, vm_run **runp);
int vm_run_write(vm_run *run, uint64_t off, const void *data, size_t len);
/* vm_run_take takes every block of run the stream has not reached yet
 * now, as if it had (those cached, being loaded or without RAM left stay
 * as they are): a backend that sends one request per block takes its
 * block before the request goes out, so that a fault on it waits for the
 * answer instead of sending the same request again.  Returns the number
 * of blocks the run has taken (0: nothing to fetch), or -errno. */
int vm_run_take(vm_run *run);
int vm_run_end(vm_run *run, int64_t len, uint64_t *bytesp);

/* fn(arg, blocks, bytes) runs in vm_run_end when it caches blocks of run
 * (what vm_run_end then returns, and *bytesp), before any thread can see
 * them cached: a backend's own counters of what it fetched are then right
 * for a reader that got there first and waited for the run.  It runs with
 * virtmem's lock held: it must not block nor call virtmem. */
void vm_run_on_cached(vm_run *run, void (*fn)(void *arg, size_t blocks, uint64_t bytes),
		      void *arg);

/* ---- introspection ------------------------------------------------------ */

/* Page states.  The state machine is documented in virtmem/fileh.c. */
enum vm_page_state {
	VM_PAGE_EMPTY = 0,
	VM_PAGE_LOADING,
	VM_PAGE_LOADING_INVALIDATED,
	VM_PAGE_LOADED,
	VM_PAGE_LOADED_FOR_WRITE,
	VM_PAGE_DIRTY,
};

enum vm_page_state vm_fileh_page_state(vm_fileh *fh, vm_blk_t blk);
const char *vm_page_state_name(enum vm_page_state state);

struct vm_fileh_stats {
	uint64_t loads;        /* loadblk calls (and overlay copies) */
	uint64_t load_errors;  /* loads that failed */
	uint64_t stores;       /* storeblk calls that succeeded */
	uint64_t faults;       /* faults handled (signal or vm_vma_on_fault) */
	uint64_t reclaimed;    /* clean pages dropped to make room */
	uint64_t spares_taken; /* loads into a spare slot (vm_ram_keep_spare) */
	uint64_t mapped_around; /* blocks mapped by fault-around: cached
				 * blocks after a sequential read fault's
				 * own, mapped by that fault, none of their own */
	size_t ndirty;         /* dirty pages now */
	size_t ncached;        /* pages holding RAM now */
	const char *engine;    /* fault engine: "sigsegv", "uffd", or
				* "uffd-user" (faults of system calls are
				* not served: they get EFAULT) */
};
void vm_fileh_stats(vm_fileh *fh, struct vm_fileh_stats *st);

/* vm_poll_us_env reads the longest poll, in microseconds, of a thread
 * that waits with nothing else to do (virtmem's uffd handler threads:
 * VIRTMEM_UFFD_SPIN_US; libblkmap's misses: BLKMAP_MISS_POLL_US) from
 * environment variable name: a number from 0 to VM_POLL_US_MAX, dflt when
 * unset or empty.  *us is 0 whatever the variable when the process may
 * run on one CPU only (a poll there delays what it waits for).  Returns
 * 0, or -EINVAL when the value is not such a number: *us is then dflt (or
 * 0 on one CPU), and the caller names the variable in its own message. */
#define VM_POLL_US_MAX 10000
int vm_poll_us_env(const char *name, unsigned dflt, unsigned *us);

/* Text for a negative errno returned by this library. */
const char *vm_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* VIRTMEM_VIRTMEM_H */
