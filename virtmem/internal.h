/* internal.h — what the files of libvirtmem share: the structures behind the
 * public handles, the intrusive list, the page table, the RAM pool, the
 * fault engines' interface and the calls the files make to each other.
 *
 * Files by role (each opens with what it owns and its locks):
 *   lock.c     vm_lock, vm_cond, what this thread does inside virtmem
 *   ram.c      the RAM pool (slots in one memfd) and its spare thread
 *   pagetab.c  a handle's page table: block number -> page
 *   page.c     the page cache: page life, loads, reclaim
 *   fill.c     filling a RAM slot (vm_loadblk_write / vm_loadblk_zero)
 *   mapping.c  the index of mappings by address, pages mapped into them
 *   fault.c    the fault path, from an engine's fault to a mapped page
 *   writeout.c storing dirty pages, marking them stored, discarding them
 *   fileh.c    handles and the page state machine
 *   engine.c   the fault engines' registry; sigsegv.c the SIGSEGV engine
 *
 * Locking: one lock, vm_lock (lock.c), protects every structure declared
 * here.  Functions named *_locked and every ram_* / pagetab_* function must
 * be called with it held; under BLKMAP_CHECKS they assert it.  It is never
 * held across a backend call (loadblk, storeblk, on_fault) nor across a copy
 * from an overlay base.
 *
 * Words: a block number is `blk`; a "slot" is a RAM slot of the pool; a
 * "page" is a cached block (struct vm_page), an OS page is an "os page".
 */
#ifndef VIRTMEM_INTERNAL_H
#define VIRTMEM_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>

#include <virtmem/virtmem.h>

/* ---- assertions (configure --enable-checks defines BLKMAP_CHECKS) ------- */

void vm_assert_fail(const char *file, int line, const char *cond)
	__attribute__((noreturn));
#ifdef BLKMAP_CHECKS
#define vm_assert(cond) \
	((cond) ? (void)0 : vm_assert_fail(__FILE__, __LINE__, #cond))
#else
#define vm_assert(cond) ((void)0)
#endif

/* ---- vm_lock (lock.c) ---------------------------------------------------- */

/* True exactly while this thread holds vm_lock. */
extern __thread int vm_lock_held_here __attribute__((tls_model("initial-exec")));
/* Nonzero while this thread runs a backend call made by virtmem (a fault
 * then is refused rather than deadlocking). */
extern __thread int vm_in_backend __attribute__((tls_model("initial-exec")));

/* Set by an engine's own threads (uffd.c's handler threads): called with
 * true before the thread may block for long (a backend call, a wait for a
 * load or store of another thread) and with false after. */
extern __thread void (*vm_thread_blocks)(bool on) __attribute__((tls_model("initial-exec")));

/* Around every backend call virtmem makes: vm_in_backend, the thread
 * recorded for vm_thread_in_backend, and vm_thread_blocks. */
void vm_backend_enter(void);
void vm_backend_leave(void);
bool vm_thread_in_backend(pid_t tid);

void vm_lock_acquire(void);
void vm_lock_release(void);
/* Sleeps on cv with vm_lock given up meanwhile. */
void vm_lock_wait(pthread_cond_t *cv);
/* Sleeps until a load or store ends.  Page pointers are not valid after it:
 * look the page up again. */
void vm_lock_wait_io(void);
/* Wakes the threads in vm_lock_wait_io (a load or store ended). */
void vm_lock_wake_io(void);
#define vm_lock_assert_held() vm_assert(vm_lock_held_here)

/* An address unique to the calling thread (who loads a page). */
static inline const void *vm_self(void) { return &vm_lock_held_here; }

/* Backend calls return 0 or -errno; anything else positive is an error too. */
static inline int vm_norm_rc(int rc) { return rc > 0 ? -EIO : rc; }

/* ---- intrusive doubly linked list -------------------------------------- */

struct vm_list {
	struct vm_list *prev, *next;
};

static inline void vm_list_init(struct vm_list *h) { h->prev = h->next = h; }
static inline bool vm_list_empty(const struct vm_list *h) { return h->next == h; }

static inline void vm_list_add_tail(struct vm_list *h, struct vm_list *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

static inline void vm_list_del(struct vm_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#define vm_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define vm_list_for_each_safe(pos, tmp, head) \
	for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

/* ---- pages ------------------------------------------------------------- */

/* What a page's RAM slot holds, beyond its bytes. */
enum vm_slot {
	VM_SLOT_FRESH,     /* no memory yet: reads as zeros */
	VM_SLOT_MAPPED,    /* memory, and page table entries in the pool's view */
	VM_SLOT_UNMAPPED,  /* memory (filled with pwrite), no page table entries */
	VM_SLOT_ZEROED,    /* a spare: zeros in memory with page table entries */
};

/* A page exists (has a struct) only while it is not EMPTY: an absent page is
 * EMPTY.  The page owns one RAM slot of fh->blksize bytes at ram_off. */
struct vm_page {
	enum vm_page_state state;
	vm_fileh *fh;
	vm_blk_t blk;
	size_t ram_off;       /* offset of the RAM slot in the pool memfd */
	bool storing;         /* storeblk runs on it (write-protected) */
	bool stored;          /* stored by a writeout, not written since */
	enum vm_slot slot;    /* what the RAM slot holds (how to fill it) */
	const void *loader;   /* vm_self() of the loading thread, while LOADING* */
	struct vm_list lru;   /* in ram->lru while LOADED */
	struct vm_list dirty; /* in fh->dirty while DIRTY */
};

/* ---- page table: block number -> page (pagetab.c) ------------------------ */

struct vm_pagetab {
	struct vm_pagetab_entry {
		vm_blk_t blk;
		struct vm_page *page; /* NULL: a free entry */
	} *entries;
	size_t cap;  /* power of two, or 0 */
	size_t used;
};

void pagetab_init(struct vm_pagetab *t);
void pagetab_destroy(struct vm_pagetab *t);
struct vm_page *pagetab_get(const struct vm_pagetab *t, vm_blk_t blk);
int pagetab_put(struct vm_pagetab *t, struct vm_page *page); /* 0 / -ENOMEM */
void pagetab_del(struct vm_pagetab *t, vm_blk_t blk);
/* Calls fn for every page; fn may not change the table. */
void pagetab_for_each(const struct vm_pagetab *t,
		      void (*fn)(struct vm_page *page, void *arg), void *arg);

/* ---- RAM pool (ram.c) ------------------------------------------------------ */

#define RAM_NCLASS 32 /* size classes: 2^k os pages, far more than needed */

struct vm_ram {
	int memfd;
	char *base;          /* the whole memfd, mapped once read-write */
	size_t view_size;    /* bytes of memfd/address space reserved */
	size_t budget;
	unsigned pageshift;  /* log2(OS page size) */
	size_t used;
	size_t bump;         /* offsets below it have been handed out */
	struct ram_freelist {
		size_t *off;
		size_t n, cap;
	} free[RAM_NCLASS];
	struct vm_list lru;  /* LOADED pages, least recently faulted first */
	unsigned nfileh;     /* handles using the pool */
	unsigned nfileh_own; /* of which engines with memory of their own */

	/* Spare slots (vm_ram_keep_spare): zeroed memory with page table
	 * entries, filled ahead of need by the spare thread.  Their bytes
	 * count in spare_bytes, not in used; used + spare_bytes <= budget. */
	size_t spare_size;      /* 0: none kept */
	unsigned spare_want;
	size_t *spare;          /* offsets of ready spares (spare_want of room) */
	unsigned spare_n;
	bool spare_filling;     /* one slot is being populated right now, */
	size_t filling_off;     /* this one, */
	size_t filling_size;    /* of this size */
	bool filling_taken;     /* a load took it over while it was filled */
	size_t spare_bytes;     /* (spare_n + spare_filling) * spare_size */
	bool spare_running, spare_stop, spare_cv_inited;
	unsigned spare_pause_us; /* tests: VIRTMEM_TEST_SPARE_PAUSE_US */
	pthread_t spare_thread;
	pthread_cond_t spare_cv;
};

/* ram_alloc takes a slot of size bytes (a power of two >= os page size).
 * -ENOSPC when the budget would be exceeded: the caller reclaims and
 * retries. */
int ram_alloc(vm_ram *ram, size_t size, size_t *offp);
/* ram_free gives the slot back and its memory to the OS; with hole, the
 * caller knows the slot was never written (it reads as zeros already): no
 * system call. */
void ram_free(vm_ram *ram, size_t off, size_t size, bool hole);
/* The same without the budget's accounting (spare slots count apart). */
int ram_take(vm_ram *ram, size_t size, size_t *offp);
void ram_put(vm_ram *ram, size_t off, size_t size, bool hole);
static inline void *ram_addr(const vm_ram *ram, size_t off) { return ram->base + off; }

/* Spare slots.  spare_take_locked hands a ready spare of size bytes over to
 * a page (counted as used from then on): 1 with *offp set, or 0 when there
 * is none.  spare_take_filling_locked does the same with the slot the spare
 * thread is filling (it reads as zeros, partly populated).
 * spare_release_locked gives ready spares back until size bytes fit the
 * budget, spare_release_all_locked all of them (a handle whose engine keeps
 * its own memory opened: it cannot use them; the thread then keeps none
 * while such handles are open).  spare_wake_locked tells the spare thread memory was given back.
 * ram_stop_spares stops the thread and gives its spares back (it takes
 * vm_lock: call it without). */
int spare_take_locked(vm_ram *ram, size_t size, size_t *offp);
int spare_take_filling_locked(vm_ram *ram, size_t size, size_t *offp);
void spare_release_locked(vm_ram *ram, size_t size);
void spare_release_all_locked(vm_ram *ram);
void spare_wake_locked(vm_ram *ram);
void ram_stop_spares(vm_ram *ram);

/* ---- handles and mappings ----------------------------------------------- */

struct vm_engine;

struct vm_fileh {
	vm_bigfile *file;
	vm_ram *ram;
	const struct vm_engine *engine;
	size_t blksize;
	unsigned blkshift;     /* log2(blksize) */
	bool overlay;
	bool readonly;         /* VM_READONLY: write faults fail */
	bool writeout_active;
	bool closing;          /* vm_fileh_close drops every page */
	int memfd;             /* uffd engine: block blk at blk * blksize */
	size_t memfd_size;
	struct vm_pagetab pages;
	struct vm_list vmas;   /* vm_vma.in_fileh */
	struct vm_list dirty;  /* vm_page.dirty */
	size_t ndirty;
	struct vm_fileh_stats st;
};

struct vm_vma {
	uintptr_t addr_start, addr_stop;
	vm_blk_t blk_start;    /* the first block mapped */
	size_t blklen;         /* blocks mapped */
	vm_fileh *fh;
	uint64_t *mapped;      /* bit per block: its RAM slot is mapped there */
	unsigned inflight;     /* faults a handler thread serves on it now */
	/* Fault-around (fault.c): a read fault on around_next continues a
	 * sequential run, and maps up to around blocks already cached after
	 * its own (0: a random fault maps only its block). */
	vm_blk_t around_next;
	size_t around;
	uint64_t seq;          /* vm_vma_seq when it was indexed */
	struct vm_list in_fileh;
};

/* Counts the mappings indexed so far (mapping.c; written under vm_lock,
 * read atomically): vm_fault_at tells a mapping made after a handler
 * thread read its fault's message from the one the message was for. */
extern uint64_t vm_vma_seq;

static inline bool vma_covers(const vm_vma *vma, vm_blk_t blk)
{
	return blk >= vma->blk_start && blk - vma->blk_start < vma->blklen;
}

/* The block of vma an address in it falls in. */
static inline vm_blk_t vma_blk_of(const vm_vma *vma, uintptr_t addr)
{
	return vma->blk_start + ((addr - vma->addr_start) >> vma->fh->blkshift);
}

/* ---- the page cache (page.c) ---------------------------------------------- */

/* page_new_locked makes a LOADING page for blk (NULL: no memory). */
struct vm_page *page_new_locked(vm_fileh *fh, vm_blk_t blk);
/* page_forget_locked forgets page (it must be mapped nowhere) and returns
 * its RAM slot's offset, still counted as used. */
size_t page_forget_locked(struct vm_page *page);
/* page_free_locked frees page and its RAM; it must be mapped nowhere. */
void page_free_locked(struct vm_page *page);
/* page_drop_locked unmaps page everywhere and frees it: the block is EMPTY.
 * -errno when it could not be unmapped somewhere: the page is kept, as it
 * was (see vma_unmap_page_locked). */
int page_drop_locked(struct vm_page *page);
/* page_make_dirty_locked: LOADED or LOADED_FOR_WRITE -> DIRTY. */
void page_make_dirty_locked(struct vm_page *page);
/* page_load_locked loads block blk for an access through vma (NULL for a
 * prefetch): EMPTY -> LOADING -> LOADED, or LOADED_FOR_WRITE for a write.
 * Releases vm_lock around the fill and returns with it held: 0 when the
 * caller should look at the page again, or -errno. */
int page_load_locked(vm_fileh *fh, vm_vma *vma, vm_blk_t blk, int write);
/* page_load_run_locked loads the blocks of [blk, blk + n) that are EMPTY
 * for a prefetch: all turn LOADING first, then each is filled in order
 * and turns LOADED (vm_fileh_prefetch_run).  Releases vm_lock around the
 * fills.  0, the first fill's -errno, or -ENOMEM. */
int page_load_run_locked(vm_fileh *fh, vm_blk_t blk, size_t n);
/* page_check_locked asserts page's state invariants (BLKMAP_CHECKS). */
void page_check_locked(const struct vm_page *page);

/* ---- filling a RAM slot (fill.c) ------------------------------------------ */

/* fill_page fills the slot of a LOADING page at buf: loadblk, or in overlay
 * mode a copy from vma's base layer.  Runs without vm_lock. */
int fill_page(vm_fileh *fh, vm_vma *vma, struct vm_page *page, void *buf);

/* ---- mappings (mapping.c) ------------------------------------------------- */

/* The mapping that holds addr, or NULL. */
vm_vma *vma_lookup_locked(uintptr_t addr);
bool vma_page_mapped(const vm_vma *vma, vm_blk_t blk);
void vma_set_mapped(vm_vma *vma, vm_blk_t blk, bool on);
/* Maps page's RAM at its place in vma with prot (replacing what was there). */
int vma_map_page_locked(vm_vma *vma, struct vm_page *page, int prot);
/* Puts back what vma shows for an EMPTY block: nothing, or the base.
 * -errno when the system refuses: the block stays mapped there. */
int vma_unmap_page_locked(vm_vma *vma, vm_blk_t blk);
/* Maps the LOADED pages of blocks [blk, blk + n), mapped nowhere in vma
 * yet, read-only in vma: with the engine's map_run_locked, else page by
 * page.  On an error, blocks may be left unmapped (they fault later). */
int vma_map_run_locked(vm_vma *vma, vm_blk_t blk, size_t n);
/* Unmaps and frees vma. */
void vma_unmap_locked(vm_vma *vma);
/* page in every mapping of its handle: map (those covering it), protect
 * (those where it is mapped), unmap (-errno: still mapped in one). */
int page_map_all_locked(struct vm_page *page, int prot);
int page_protect_all_locked(struct vm_page *page, int prot);
int page_unmap_all_locked(struct vm_page *page);
/* Protection a DIRTY page must have in the mappings. */
int page_dirty_prot(const struct vm_page *page);

/* ---- the fault path (fault.c) --------------------------------------------- */

enum { VM_FAULT_NOT_OURS = 1 };

/* vm_release_range unmaps [addr, addr + len), which frees about frees
 * bytes (its pages, or a memfd's it holds the last reference to): the
 * range is free on return, its pages unmapped then or by the release
 * thread (release.c). */
void vm_release_range(void *addr, size_t len, uint64_t frees);
/* Less than this is unmapped or freed on the caller's thread: about a
 * millisecond, and no thread for a program that maps little. */
#define RELEASE_MIN ((uint64_t)16 << 20)

/* vm_fault_at handles a fault at addr: 0 handled (retry the access),
 * VM_FAULT_NOT_OURS when addr is not in any mapping, or -errno to turn into
 * SIGBUS.  write: 1 write, 0 read, -1 unknown (guessed from the mapping).
 * signal: called from the SIGSEGV handler (a mapping of an engine with
 * signal_fault_locked is then left to it: no load in signal context).
 * seen (handler threads, signal false): vm_vma_seq read before the fault's
 * message was.  The faulting thread may have gone on meanwhile (woken by
 * the serving of a duplicate fault) and its mapping been unmapped and the
 * address given to a new one: a mapping indexed after seen is not served
 * (VM_FAULT_NOT_OURS: the caller wakes the address; a thread that still
 * waits faults again).
 * On -errno, *blkp names the block that failed. */
int vm_fault_at(uintptr_t addr, int write, bool signal, uint64_t seen, vm_blk_t *blkp);
/* A write to a VM_READONLY handle's mapping (block blk of vma): refused
 * with one line on stderr naming the block and the file, and no backend
 * call (it may run in a signal handler).  Returns -EROFS. */
int fault_readonly_locked(vm_vma *vma, vm_blk_t blk);

/* ---- fault engines (engine.c, sigsegv.c, uffd.c) ------------------------- */

/* A fault engine turns accesses to a mapping into calls of the fault path
 * and keeps the mappings in step with the page states.  Each engine is
 * listed in engine.c's table; the core calls it only through these
 * operations.  An operation left NULL means the pool way (mapping.c): a
 * page's bytes live in its RAM slot of the pool's memfd, mapped block by
 * block with mmap/mprotect over PROT_NONE address space. */
struct vm_engine {
	const char *name;
	/* 0 when the engine can run in this process, else -errno. */
	int (*probe)(void);
	/* Called at every vm_fileh_open and vm_fileh_mmap with the handle: the
	 * engine makes sure its faults reach the fault path. */
	int (*attach)(vm_fileh *fh);
	/* The rest is optional. */
	void (*detach)(vm_fileh *fh);                  /* at close, no lock */
	/* Address space for vma (addr_start/addr_stop set by it). */
	int (*vma_create)(vm_vma *vma, int prot);
	/* Before vma is unmapped (vm_lock held). */
	void (*vma_destroy_locked)(vm_vma *vma);
	int (*map_page_locked)(vm_vma *vma, struct vm_page *page, int prot);
	/* Maps blocks [blk, blk + n) of vma read-only at once: each is a
	 * LOADED page mapped nowhere in vma (fault-around).  NULL: page by
	 * page with map_page_locked or the pool way. */
	int (*map_run_locked)(vm_vma *vma, vm_blk_t blk, size_t n);
	int (*protect_page_locked)(vm_vma *vma, struct vm_page *page, int prot);
	/* Makes the block EMPTY in every mapping of its handle. */
	void (*unmap_page_all_locked)(struct vm_page *page);
	/* The page's memory is given back (page_forget_locked). */
	void (*release_page_locked)(struct vm_page *page);
	/* Fills a LOADING page (without vm_lock). */
	int (*fill_page)(vm_fileh *fh, struct vm_page *page);
	/* A pointer to the page's bytes for storeblk, and its end. */
	void *(*page_view)(vm_fileh *fh, struct vm_page *page);
	void (*page_view_end)(vm_fileh *fh, struct vm_page *page, void *buf);
	/* Fences writes to block blk in every mapping of fh (on) or lifts the
	 * fence (off): while fenced, a write waits for vm_lock, so that a
	 * clean page found unwritten can be dropped without losing a write
	 * made after it was looked at. */
	void (*fence_locked)(vm_fileh *fh, vm_blk_t blk, bool on);
	/* Finds pages written without a fault (page_note_written_locked on
	 * each): every page of fh, or only page when it is not NULL. */
	void (*sync_written_locked)(vm_fileh *fh, struct vm_page *page);
	/* A SIGSEGV on a mapping of this engine (the SIGSEGV engine's handler
	 * asks): 0 to retry the access, or the -errno for its SIGBUS.  It
	 * calls no backend: a handler thread serves the engine's faults. */
	int (*signal_fault_locked)(vm_vma *vma, uintptr_t addr, int write, vm_blk_t *blkp);
	/* The engine keeps pages in memory of its own: the pool only counts
	 * their bytes, and its spare slots are of no use. */
	bool own_memory;
};

extern const struct vm_engine vm_engine_sigsegv;
extern const struct vm_engine vm_engine_uffd;

/* The engine a new handle gets: the one flags (VM_ENGINE_*) or
 * VIRTMEM_ENGINE ask for, else the best available; overlay handles get
 * the SIGSEGV engine.  NULL with *errp set when the one asked for cannot
 * run. */
const struct vm_engine *engine_pick(int flags, bool overlay, int *errp);

/* The name vm_fileh_stats shows for engine e ("uffd-user" for a
 * userfaultfd that serves faults of user mode only). */
const char *vm_engine_name(const struct vm_engine *e);
bool uffd_user_mode_only(void);

/* Lets the engine of fh find pages written without faults. */
static inline void engine_sync_written_locked(vm_fileh *fh, struct vm_page *page)
{
	if (fh->engine->sync_written_locked)
		fh->engine->sync_written_locked(fh, page);
}

static inline void engine_fence_locked(vm_fileh *fh, vm_blk_t blk, bool on)
{
	if (fh->engine->fence_locked)
		fh->engine->fence_locked(fh, blk, on);
}

/* page was written without a fault (found by the engine): a LOADED page
 * turns DIRTY, a stored DIRTY page is stored no longer (page.c). */
void page_note_written_locked(struct vm_page *page);

/* Where the bytes of a slot being filled go (fill.c). */
struct fill {
	char *buf;
	size_t len;
	int fd;
	off_t off;         /* of the slot in the memfd */
	size_t pagesize;
	bool fresh;        /* the slot read as zeros when the fill began */
	bool ptes;         /* the pool's view of the slot has page table entries */
	size_t hi;         /* bytes [0, hi) may have been written by this fill */
	size_t done;       /* bytes [0, done) were written by it (pwrite) */
	bool holes;        /* it left or punched a hole in the slot */
};
/* A LOADING page filled from a stream (vm_run) without a loadblk call:
 * fill_slot_open sets s up as fill_page (or the uffd engine's fill) would
 * for a backend that writes with vm_loadblk_write; fill_slot_write writes
 * bytes [off, off + len) of the block; fill_slot_close makes bytes [len,
 * blksize) zeros and leaves the slot as a load would (page->slot, or
 * every os page of a uffd block allocated).  -errno on failure.  No
 * vm_lock: the caller owns the LOADING page. */
int fill_slot_open(vm_fileh *fh, struct vm_page *page, struct fill *s);
int fill_slot_write(struct fill *s, size_t off, const void *data, size_t len);
int fill_slot_close(vm_fileh *fh, struct vm_page *page, struct fill *s, size_t len);
/* fill_slots_pwrite writes len bytes from byte off of s[0] on, through the
 * n slots s[0, n), which lie in order in one memfd and have no page table
 * entries (a uffd handle's blocks): one pwrite. */
int fill_slots_pwrite(struct fill *s, size_t n, size_t off, const void *data, size_t len);
/* fill_loadblk runs loadblk for block blk into buf, the view of a slot at
 * off in fd; fresh: the slot reads as zeros; ptes: buf has page table
 * entries.  For VM_OPS_LOADBLK_WRITES backends vm_loadblk_write then
 * writes the slot with pwrite unless ptes (fill.c).  *wholep (if not
 * NULL): every byte of the slot was so written, none left as a hole. */
int fill_loadblk(vm_fileh *fh, vm_blk_t blk, void *buf, int fd, off_t off,
		 bool fresh, bool ptes, bool *wholep);

/* Logs one line to stderr with write(2); usable in the signal handler. */
void vm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* VIRTMEM_INTERNAL_H */
