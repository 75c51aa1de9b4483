/* internal.h — what the files of libvirtmem share: the structures behind the
 * public handles, the intrusive list, the page table and RAM pool calls.
 *
 * Locking: one lock, vm_lock (virtmem.c), protects every structure declared
 * here.  Functions named *_locked and every ram_* / pagetab_* function must be
 * called with it held.  It is never held across a backend call (loadblk,
 * storeblk) nor across a copy from an overlay base.
 */
#ifndef VIRTMEM_INTERNAL_H
#define VIRTMEM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include <virtmem/virtmem.h>

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
	struct vm_list lru;   /* in ram->lru while LOADED */
	struct vm_list dirty; /* in fh->dirty while DIRTY */
};

/* ---- page table: block number -> page ----------------------------------- */

struct vm_pagetab {
	struct vm_pagetab_slot {
		vm_blk_t blk;
		struct vm_page *page; /* NULL: free slot */
	} *slots;
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

/* ---- RAM pool ------------------------------------------------------------ */

#define RAM_NCLASS 32 /* size classes: 2^k pages, far more than needed */

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

	/* Spare slots (vm_ram_keep_spare): zeroed memory with page table
	 * entries, filled ahead of need by spare_thread.  Their bytes count
	 * in spare_bytes, not in used; used + spare_bytes <= budget. */
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

/* ram_alloc takes a slot of size bytes (a power of two >= page size).
 * -ENOSPC when the budget would be exceeded: the caller reclaims and
 * retries. */
int ram_alloc(vm_ram *ram, size_t size, size_t *offp);
/* ram_free gives the slot back and its memory to the OS. */
void ram_free(vm_ram *ram, size_t off, size_t size);
/* The same without the budget's accounting (spare slots count apart). */
int ram_take(vm_ram *ram, size_t size, size_t *offp);
void ram_put(vm_ram *ram, size_t off, size_t size);
/* Stops the spare thread and gives its spares back (virtmem.c; takes
 * vm_lock: call it without). */
void ram_stop_spares(vm_ram *ram);
static inline void *ram_addr(const vm_ram *ram, size_t off) { return ram->base + off; }

/* ---- handles and mappings ----------------------------------------------- */

struct vm_fileh {
	vm_bigfile *file;
	vm_ram *ram;
	size_t blksize;
	unsigned blkshift;     /* log2(blksize) */
	bool overlay;
	bool readonly;         /* VM_READONLY: write faults fail */
	bool writeout_active;
	struct vm_pagetab pages;
	struct vm_list vmas;   /* vm_vma.in_fileh */
	struct vm_list dirty;  /* vm_page.dirty */
	size_t ndirty;
	struct vm_fileh_stats st;
};

struct vm_vma {
	uintptr_t addr_start, addr_stop;
	vm_blk_t pgoffset;
	size_t pglen;
	vm_fileh *fh;
	uint64_t *mapped;      /* bit per page: a RAM page is mapped there */
	struct vm_list in_fileh;
};

static inline bool vma_covers(const vm_vma *vma, vm_blk_t blk)
{
	return blk >= vma->pgoffset && blk - vma->pgoffset < vma->pglen;
}

/* ---- fault entry from the signal handler (sigsegv.c -> virtmem.c) -------- */

enum { VM_FAULT_NOT_OURS = 1 };

/* vm_fault_at handles a fault at addr: 0 handled (retry the access),
 * VM_FAULT_NOT_OURS when addr is not in any mapping, or -errno to turn into
 * SIGBUS.  write: 1 write, 0 read, -1 unknown (guessed from the mapping).  On -errno, *blkp names the block that failed. */
int vm_fault_at(uintptr_t addr, int write, vm_blk_t *blkp);

/* Installs the SIGSEGV handler unless it is installed (sigsegv.c). */
int sigsegv_install(void);

/* Logs one line to stderr with write(2); usable in the signal handler. */
void vm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* VIRTMEM_INTERNAL_H */
