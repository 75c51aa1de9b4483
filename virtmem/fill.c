/* fill.c — filling a page's RAM slot: loadblk (through vm_loadblk_write
 * and vm_loadblk_zero for backends that promise VM_OPS_LOADBLK_WRITES), or
 * in overlay mode a copy from the base layer; the cheapest way to write a
 * slot for what it holds (enum vm_slot).
 *
 * A block of a streamed run (vm_run, page.c) is written the same way,
 * its context kept by the run between the stream's pieces (fill_slot_*).
 *
 * Owns: the thread-local fill context (cur_fill).
 * Locking: none.  Runs without vm_lock, on the thread that loads the page,
 * which owns the LOADING page meanwhile; the fill context is that thread's.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "internal.h"

/* The RAM slot this thread's loadblk is filling, for vm_loadblk_write and
 * vm_loadblk_zero: set by fill_page around loadblk when the backend has
 * VM_OPS_LOADBLK_WRITES, else buf == NULL (struct fill: internal.h). */
static __thread struct fill cur_fill __attribute__((tls_model("initial-exec")));

/* Fills the slot of a LOADING page: loadblk, or in overlay mode a copy from
 * vma's base layer.  Runs with vm_lock released.  process_vm_readv turns an
 * unreadable base (a mirror's EIO) into an error instead of a nested SIGBUS. */
int fill_page(vm_fileh *fh, vm_vma *vma, struct vm_page *page, void *buf)
{
	if (fh->overlay) {
		struct iovec local = { buf, fh->blksize };
		struct iovec remote = { vm_vma_blk_addr(vma, page->blk), fh->blksize };
		ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		page->slot = VM_SLOT_MAPPED; /* (or partly: harmless) */
		if (n < 0)
			return -errno;
		return (size_t)n == fh->blksize ? 0 : -EIO;
	}
	/* How to write a slot (figures for 4 MiB on the 2-core VM, from
	 * tests/bench_client and a microbenchmark):
	 *  - memory and page table entries present (a recycled slot that was
	 *    written through the pointer, or a spare): non-temporal stores,
	 *    0.19 ms (memcpy 0.4 ms);
	 *  - fresh: pwrite, 1.3 ms: the kernel allocates the pages without
	 *    zeroing them and without a fault per 4 KiB page; populating
	 *    (MADV_POPULATE_WRITE) then memcpy costs 1.9 ms, memcpy alone
	 *    faulting each page 2.4 ms;
	 *  - memory present without page table entries (a recycled slot that
	 *    was filled with pwrite): MADV_POPULATE_WRITE, 0.6-0.9 ms, then
	 *    memcpy; pwrite would cost 1.0 ms every time the slot is reused,
	 *    memcpy faulting each page 1.8 ms.
	 * A backend that writes through the pointer gets a fresh slot
	 * populated in one go first too. */
	bool fresh = page->slot == VM_SLOT_FRESH || page->slot == VM_SLOT_ZEROED;
	bool ptes = page->slot == VM_SLOT_MAPPED || page->slot == VM_SLOT_ZEROED;
	bool writes = fh->file->ops->flags & VM_OPS_LOADBLK_WRITES;
	int rc;
	if (!ptes && !(fresh && writes)) {
		if (fh->blkshift > fh->ram->pageshift)
			(void)madvise(buf, fh->blksize, MADV_POPULATE_WRITE);
		ptes = true;
	}
	rc = fill_loadblk(fh, page->blk, buf, fh->ram->memfd, (off_t)page->ram_off, fresh, ptes, NULL);
	page->slot = ptes ? VM_SLOT_MAPPED : VM_SLOT_UNMAPPED;
	return rc;
}

int fill_loadblk(vm_fileh *fh, vm_blk_t blk, void *buf, int fd, off_t off,
		 bool fresh, bool ptes, bool *wholep)
{
	bool writes = fh->file->ops->flags & VM_OPS_LOADBLK_WRITES;
	int rc;

	if (writes)
		cur_fill = (struct fill){ .buf = buf, .len = fh->blksize, .fd = fd, .off = off,
					  .pagesize = (size_t)1 << fh->ram->pageshift,
					  .fresh = fresh, .ptes = ptes };
	rc = vm_norm_rc(fh->file->ops->loadblk(fh->file, blk, buf));
	if (wholep != NULL)
		*wholep = writes && !ptes && !cur_fill.holes && cur_fill.done == cur_fill.len;
	cur_fill.buf = NULL;
	return rc;
}

/* The offset in the slot being filled of [buf + off, + len), or -1 when
 * that range is not inside it (or no slot is being filled). */
static ssize_t fill_rel(void *buf, size_t off, size_t len)
{
	struct fill *f = &cur_fill;
	uintptr_t d = (uintptr_t)buf + off, b = (uintptr_t)f->buf;
	if (f->buf == NULL || d < b || d - b > f->len || len > f->len - (d - b))
		return -1;
	return (ssize_t)(d - b);
}

static int fill_pwrite(const void *src, size_t len, off_t pos)
{
	size_t rel = (size_t)(pos - cur_fill.off);

	/* What was written from the slot's start on without a gap. */
	if (rel <= cur_fill.done && rel + len > cur_fill.done)
		cur_fill.done = rel + len;
	while (len > 0) {
		ssize_t n = pwrite(cur_fill.fd, src, len, pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		src = (const char *)src + n;
		pos += n;
		len -= (size_t)n;
	}
	return 0;
}

/* memcpy into a slot with non-temporal stores: they skip reading each
 * destination cache line before writing it, which a block is too big to
 * gain from (measured: 0.19 ms against memcpy's 0.42 ms per 4 MiB written in
 * 16 KiB pieces, as curl hands a body over). */
static void copy_to_slot(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__)
	if (n >= 4096) {
		size_t head = (64 - ((uintptr_t)dst & 63)) & 63;
		memcpy(dst, src, head);
		char *d = (char *)dst + head;
		const char *s = (const char *)src + head;
		size_t body = (n - head) & ~(size_t)63;
		for (size_t i = 0; i < body; i += 64) {
			const __m128i *p = (const __m128i *)(s + i);
			__m128i a = _mm_loadu_si128(p), b = _mm_loadu_si128(p + 1);
			__m128i c = _mm_loadu_si128(p + 2), e = _mm_loadu_si128(p + 3);
			__m128i *q = (__m128i *)(d + i);
			_mm_stream_si128(q, a);
			_mm_stream_si128(q + 1, b);
			_mm_stream_si128(q + 2, c);
			_mm_stream_si128(q + 3, e);
		}
		_mm_sfence(); /* the stores are ordered before whatever follows */
		memcpy(d + body, s + body, n - head - body);
		return;
	}
#endif
	memcpy(dst, src, n);
}

int vm_loadblk_write(void *buf, size_t off, const void *src, size_t len)
{
	ssize_t rel = fill_rel(buf, off, len);
	struct fill *f = &cur_fill;

	if (rel < 0) {
		memcpy((char *)buf + off, src, len);
		return 0;
	}
	if ((size_t)rel + len > f->hi)
		f->hi = (size_t)rel + len;
	if (f->ptes) {
		copy_to_slot((char *)buf + off, src, len);
		return 0;
	}
	return fill_pwrite(src, len, f->off + rel);
}

/* Writes zeros to bytes [from, to) of the slot being filled. */
static int fill_pwrite_zeros(size_t from, size_t to)
{
	static const char zeros[4096];

	while (from < to) {
		size_t n = to - from < sizeof(zeros) ? to - from : sizeof(zeros);
		int rc = fill_pwrite(zeros, n, cur_fill.off + (off_t)from);
		if (rc < 0)
			return rc;
		from += n;
	}
	return 0;
}

int vm_loadblk_zero(void *buf, size_t off, size_t len)
{
	ssize_t rel = fill_rel(buf, off, len);
	struct fill *f = &cur_fill;

	if (rel < 0) {
		memset((char *)buf + off, 0, len);
		return 0;
	}
	if (f->fresh) {
		/* Fresh memory (never written, hole-punched when freed, or a
		 * zeroed spare) reads as zeros above what this fill wrote. */
		if ((size_t)rel >= f->hi) {
			f->holes = f->holes || len > 0;
			return 0;
		}
		if ((size_t)rel + len > f->hi) {
			len = f->hi - (size_t)rel;
			f->holes = true;
		}
	}
	if (f->ptes) {
		memset((char *)buf + off, 0, len);
		return 0;
	}
	/* Whole pages are punched out (they read as zeros and cost no
	 * memory); the partial pages at either end get zeros written. */
	size_t start = (size_t)rel, end = start + len, pg = f->pagesize;
	size_t a = (start + pg - 1) & ~(pg - 1), b = end & ~(pg - 1);
	if (a >= b)
		a = b = end;
	if (b > a) {
		f->holes = true;
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      f->off + (off_t)a, (off_t)(b - a)) < 0)
			return -errno;
	}
	int rc = fill_pwrite_zeros(start, a);
	return rc < 0 ? rc : fill_pwrite_zeros(b, end);
}

/* ---- a block filled from a stream (vm_run, page.c) ------------------------------ */

int fill_slot_open(vm_fileh *fh, struct vm_page *page, struct fill *s)
{
	size_t bs = fh->blksize, pagesize = (size_t)1 << fh->ram->pageshift;
	/* Only a name for the slot in fill_rel (nothing is written through
	 * it unless ptes): the pool's view of the page's slot. */
	char *buf = ram_addr(fh->ram, page->ram_off);

	if (fh->memfd >= 0) {
		/* The handle's own memfd (uffd engine): block blk at blk *
		 * blksize, a hole, written with pwrite as uffd_fill_page does
		 * for a backend that writes with vm_loadblk_write. */
		*s = (struct fill){ .buf = buf, .len = bs, .fd = fh->memfd,
				    .off = (off_t)(page->blk << fh->blkshift), .pagesize = pagesize,
				    .fresh = true, .ptes = false };
		return 0;
	}
	/* A slot of the pool, written the cheapest way for what it holds
	 * (fill_page's rules for a backend that writes with
	 * vm_loadblk_write). */
	bool fresh = page->slot == VM_SLOT_FRESH || page->slot == VM_SLOT_ZEROED;
	bool ptes = page->slot == VM_SLOT_MAPPED || page->slot == VM_SLOT_ZEROED;
	if (!ptes && !fresh) {
		if (fh->blkshift > fh->ram->pageshift)
			(void)madvise(buf, bs, MADV_POPULATE_WRITE);
		ptes = true;
	}
	*s = (struct fill){ .buf = buf, .len = bs, .fd = fh->ram->memfd, .off = (off_t)page->ram_off,
			    .pagesize = pagesize, .fresh = fresh, .ptes = ptes };
	return 0;
}

int fill_slot_write(struct fill *s, size_t off, const void *data, size_t len)
{
	struct fill saved = cur_fill;
	int rc;

	cur_fill = *s;
	rc = vm_loadblk_write(s->buf, off, data, len);
	*s = cur_fill;
	cur_fill = saved;
	return rc;
}

int fill_slots_pwrite(struct fill *s, size_t n, size_t off, const void *data, size_t len)
{
	off_t pos = s[0].off + (off_t)off;
	const char *p = data;

	for (size_t i = 0, rest = len, o = off; i < n && rest > 0; i++, o = 0) {
		vm_assert(s[i].fd == s[0].fd && s[i].off == s[0].off + (off_t)(i * s[0].len) && !s[i].ptes);
		size_t take = s[i].len - o < rest ? s[i].len - o : rest;
		/* What fill_pwrite notes for each slot. */
		if (o + take > s[i].hi)
			s[i].hi = o + take;
		if (o <= s[i].done && o + take > s[i].done)
			s[i].done = o + take;
		rest -= take;
	}
	while (len > 0) {
		ssize_t w = pwrite(s[0].fd, p, len, pos);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		pos += w;
		len -= (size_t)w;
	}
	return 0;
}

int fill_slot_close(vm_fileh *fh, struct vm_page *page, struct fill *s, size_t len)
{
	struct fill saved = cur_fill;
	int rc = 0;

	cur_fill = *s;
	if (len < s->len)
		rc = vm_loadblk_zero(s->buf, len, s->len - len);
	*s = cur_fill;
	cur_fill = saved;
	if (fh->memfd >= 0) {
		/* UFFDIO_CONTINUE needs every os page of the block in the
		 * memfd (uffd_fill_page). */
		bool whole = !s->holes && s->done == s->len;
		if (rc == 0 && !whole && fallocate(fh->memfd, 0, s->off, (off_t)s->len) < 0)
			rc = -errno;
		return rc;
	}
	page->slot = s->ptes ? VM_SLOT_MAPPED : VM_SLOT_UNMAPPED;
	return rc;
}
