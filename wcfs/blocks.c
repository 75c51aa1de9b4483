/* blocks.c — a few blocks kept per dataset handle, so that the kernel's
 * reads (at most its read-ahead window, 128 KiB, at a time) of one block
 * fetch that block once, not once per read.  A block of a format 3 or 4
 * dataset is kept in its pieces (64 KiB in format 3, the dataset's own
 * size in 4): a read that is not sequential fetches only
 * the pieces it covers (bm_read: one Range GET, each piece checked), a
 * sequential one (or one covering most of the block) the rest of the
 * block at once; a request a little ahead of the last read's end (the
 * kernel's requests of one read(2), served in any order) fetches its block
 * from that end, so the requests before it find their bytes loading.  Other formats keep whole blocks.  Bounded: at most
 * WC_BLOCKS_BYTES (but 2 blocks at least) per handle, freed with the handle
 * or when its file is open nowhere (wc_blocks_trim).
 * Owns: d->slots, d->next.  Locking: d->bmu guards both; pieces are
 * fetched without it (the slot LOADING), and readers of that block wait
 * on d->bcv.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wcfs.h"

#define WC_BLOCKS_BYTES (8u << 20)
#define WC_BLOCKS_MAX 8
/* How far past the end of the last read a request may start and still be
 * part of the same stream: the kernel splits one large read(2) into
 * requests of its window (128 KiB), all sent at once, and the mirror's
 * threads may take a later one first. */
#define WC_AHEAD (2u << 20)
/* A format 3 or 4 block's most pieces (docs/FORMAT.md, "Version 3",
 * "Version 4": BM_PIECES_MAX). */
#define WC_UNITS_MAX 1024

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

struct wc_slot {
	uint64_t index;
	int state;
	char *buf;                   /* blksize bytes, allocated on first use */
	/* The units of buf that hold the block's bytes (READY), and while
	 * LOADING the ones being fetched: [from, to]. */
	uint64_t have[WC_UNITS_MAX / 64];
	unsigned from, to;
	uint64_t used;               /* d->tick of the last use (LRU) */
};

void wc_blocks_init(struct wc_ds *d)
{
	size_t n = WC_BLOCKS_BYTES / d->blksize;

	pthread_mutex_init(&d->bmu, NULL);
	pthread_cond_init(&d->bcv, NULL);
	d->nslots = n < 2 ? 2 : n > WC_BLOCKS_MAX ? WC_BLOCKS_MAX : (int)n;
	d->slots = calloc((size_t)d->nslots, sizeof(*d->slots));
	if (d->slots == NULL)
		d->nslots = 0;
	/* The unit a slot fetches and keeps: a piece of a format 3 or 4
	 * block (bm_piece_bytes), else the whole block. */
	size_t piece = bm_format_version(d->bm) >= 3 ? bm_piece_bytes(d->bm) : 0;
	d->units = piece > 0 && d->blksize > piece && d->blksize / piece <= WC_UNITS_MAX
			   ? (unsigned)(d->blksize / piece)
			   : 1;
	d->next = 0; /* a read from the start is sequential */
	const char *late = getenv("BLKMAP_WCFS_TEST_LATE_BLOCK_MS");
	d->test_late_ms = late ? atoi(late) : 0;
}

void wc_blocks_free(struct wc_ds *d)
{
	for (int i = 0; i < d->nslots; i++)
		free(d->slots[i].buf);
	free(d->slots);
	pthread_cond_destroy(&d->bcv);
	pthread_mutex_destroy(&d->bmu);
}

void wc_blocks_trim(struct wc_ds *d)
{
	pthread_mutex_lock(&d->bmu);
	for (int i = 0; i < d->nslots; i++) {
		struct wc_slot *s = &d->slots[i];
		if (s->state == SLOT_LOADING)
			continue; /* a reader still fills it */
		free(s->buf);
		s->buf = NULL;
		s->state = SLOT_EMPTY;
	}
	pthread_mutex_unlock(&d->bmu);
}

/* Under bmu: the slot holding (or loading) block index, or NULL. */
static struct wc_slot *find_slot(struct wc_ds *d, uint64_t index)
{
	wc_assert(wc_mutex_held(&d->bmu));
	for (int i = 0; i < d->nslots; i++)
		if (d->slots[i].state != SLOT_EMPTY && d->slots[i].index == index)
			return &d->slots[i];
	return NULL;
}

/* Under bmu: an empty slot, else the least recently used ready one, else
 * NULL (all are loading). */
static struct wc_slot *victim_slot(struct wc_ds *d)
{
	struct wc_slot *v = NULL;

	wc_assert(wc_mutex_held(&d->bmu));
	for (int i = 0; i < d->nslots; i++) {
		struct wc_slot *s = &d->slots[i];
		if (s->state == SLOT_EMPTY)
			return s;
		if (s->state == SLOT_READY && (v == NULL || s->used < v->used))
			v = s;
	}
	return v;
}

static bool has_unit(const struct wc_slot *s, unsigned u)
{
	return (s->have[u / 64] >> (u % 64)) & 1;
}

/* Does s hold units [u0, u1]? */
static bool has_units(const struct wc_slot *s, unsigned u0, unsigned u1)
{
	for (unsigned u = u0; u <= u1; u++)
		if (!has_unit(s, u))
			return false;
	return true;
}

/* Under bmu: is the byte at off held, or being fetched, by a slot? (A
 * read that starts right after it is sequential.) */
static bool byte_kept(struct wc_ds *d, uint64_t off)
{
	size_t unit = d->blksize / d->units;
	struct wc_slot *s = find_slot(d, off / d->blksize);
	unsigned u = (unsigned)(off % d->blksize / unit);

	if (s == NULL)
		return false;
	return s->state == SLOT_LOADING ? u >= s->from && u <= s->to : has_unit(s, u);
}

/* Copies bytes [in, in+n) of block index into dst, fetching what no slot
 * has: the units the bytes cover, or (seq: the read follows the last one;
 * or it covers more than half the block) the block from the first of them
 * (or from unit from, when that is before them: the stream's earlier
 * requests, still to come) to its end, with one bm_read.  Called with bmu
 * held; returns with it released. */
static int read_in_block(struct wc_ds *d, uint64_t index, size_t in, char *dst, size_t n, bool seq,
			 unsigned from)
{
	uint64_t start = index * d->blksize;
	size_t blen = d->size - start < d->blksize ? (size_t)(d->size - start) : d->blksize;
	size_t unit = d->blksize / d->units;
	unsigned u0 = (unsigned)(in / unit), u1 = (unsigned)((in + n - 1) / unit);
	unsigned last = (unsigned)((blen - 1) / unit);

	/* Callers stay inside the file, so inside the block. */
	wc_assert(start < d->size && in + n <= blen);
	wc_assert(wc_mutex_held(&d->bmu));
	for (;;) {
		struct wc_slot *s = find_slot(d, index);
		if (s != NULL && s->state == SLOT_LOADING) {
			pthread_cond_wait(&d->bcv, &d->bmu);
			continue; /* loaded, or failed: look again */
		}
		if (s != NULL && has_units(s, u0, u1)) {
			wc_assert(s->state == SLOT_READY && s->buf != NULL);
			s->used = ++d->tick;
			memcpy(dst, s->buf + in, n);
			pthread_mutex_unlock(&d->bmu);
			return 0;
		}
		if (s == NULL) {
			s = victim_slot(d);
			if (s == NULL || (s->buf == NULL && (s->buf = malloc(d->blksize)) == NULL)) {
				/* Every slot is busy (or no memory): read just
				 * these bytes. */
				pthread_mutex_unlock(&d->bmu);
				int64_t got = bm_read(d->bm, start + in, dst, n);
				return got < 0 ? (int)got : (size_t)got == n ? 0 : BM_EIO;
			}
			s->index = index;
			memset(s->have, 0, sizeof(s->have));
		}
		s->from = seq && from < u0 ? from : u0;
		s->to = seq || 2 * (u1 - u0 + 1) > last + 1 ? last : u1;
		if (s->to == last && 2 * (u1 - u0 + 1) > last + 1)
			s->from = 0; /* most of the block: all of it */
		s->state = SLOT_LOADING;
		pthread_mutex_unlock(&d->bmu);
		size_t off = (size_t)s->from * unit;
		size_t end = (size_t)(s->to + 1) * unit < blen ? (size_t)(s->to + 1) * unit : blen;
		int64_t got = bm_read(d->bm, start + off, s->buf + off, end - off);
		pthread_mutex_lock(&d->bmu);
		int rc = got < 0 ? (int)got : (size_t)got == end - off ? 0 : BM_EIO;
		/* Failed units are not kept: the next read fetches them again. */
		if (rc == 0)
			for (unsigned u = s->from; u <= s->to; u++)
				s->have[u / 64] |= (uint64_t)1 << (u % 64);
		bool any = false;
		for (size_t w = 0; w < sizeof(s->have) / sizeof(s->have[0]); w++)
			any |= s->have[w] != 0;
		s->state = any ? SLOT_READY : SLOT_EMPTY;
		s->used = ++d->tick;
		if (rc == 0)
			memcpy(dst, s->buf + in, n);
		pthread_cond_broadcast(&d->bcv);
		pthread_mutex_unlock(&d->bmu);
		return rc;
	}
}

/* For tests (test_wcfs): BLKMAP_WCFS_TEST_LATE_BLOCK_MS=N holds every
 * request that starts a block N ms before it looks at the stream, so that
 * the requests after it in the block come first, as a loaded machine's
 * scheduler may have it. */
static void test_hold_block_start(const struct wc_ds *d, uint64_t off)
{
	int ms = d->test_late_ms;

	if (ms > 0 && off % d->blksize == 0) {
		struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
}

int wc_blocks_read(struct wc_ds *d, uint64_t off, char *buf, size_t len)
{
	test_hold_block_start(d, off);
	/* Sequential: it starts where the last read ended, right after
	 * bytes a slot holds, or a little past the last read's end (the
	 * kernel's requests of one read(2) come at once and may be served
	 * in any order: WC_AHEAD).  A request ahead fetches its block from
	 * where the last read ended (or the block's start), so that the
	 * requests before it, still to come, find their bytes loading
	 * instead of fetching them again. */
	pthread_mutex_lock(&d->bmu);
	uint64_t last_end = d->next, bstart = off - off % d->blksize;
	bool ahead = off > last_end && off - last_end < WC_AHEAD;
	bool seq = off == d->next || ahead || (off > 0 && byte_kept(d, off - 1));
	unsigned from = ahead && last_end > bstart ? (unsigned)((last_end - bstart) / (d->blksize / d->units)) : 0;
	if (!ahead)
		from = d->units; /* none before the read's own */
	d->next = off + len;
	/* bmu stays held until the first block's slot is claimed: a read
	 * after this one that took bmu in between would find d->next
	 * saying "sequential" and no slot, fetch the rest of the block, and
	 * this read would then fetch it all again. */
	bool locked = true;
	while (len > 0) {
		uint64_t index = off / d->blksize;
		size_t in = (size_t)(off % d->blksize);
		size_t n = d->blksize - in < len ? d->blksize - in : len;
		int rc;

		if (in == 0 && n == d->blksize) {
			/* A whole block: straight into buf, nothing to keep. */
			if (locked)
				pthread_mutex_unlock(&d->bmu);
			locked = false;
			int64_t got = bm_read(d->bm, off, buf, n);
			rc = got < 0 ? (int)got : (size_t)got == n ? 0 : BM_EIO;
		} else {
			if (!locked)
				pthread_mutex_lock(&d->bmu);
			locked = false; /* read_in_block releases it */
			rc = read_in_block(d, index, in, buf, n, seq, from);
		}
		if (rc < 0)
			return rc;
		off += n;
		buf += n;
		len -= n;
		seq = true; /* the next block is read from its start */
		from = 0;
	}
	if (locked)
		pthread_mutex_unlock(&d->bmu);
	return 0;
}
