/* blocks.c — a few whole blocks kept per dataset handle, so that the
 * kernel's reads (at most its read-ahead window, 128 KiB, at a time) of one
 * block fetch that block once, not once per read.  Bounded: at most
 * WC_BLOCKS_BYTES (but 2 blocks at least) per handle, freed with the handle
 * or when its file is open nowhere (wc_blocks_trim).
 * Owns: d->slots.  Locking: d->bmu guards the slots; a block is fetched
 * without it (state LOADING), and readers of that block wait on d->bcv.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "wcfs.h"

#define WC_BLOCKS_BYTES (8u << 20)
#define WC_BLOCKS_MAX 8

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

struct wc_slot {
	uint64_t index;
	int state;
	char *buf;                   /* blksize bytes, allocated on first use */
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

/* Copies bytes [in, in+n) of block index into dst, fetching the block into
 * a slot if no slot has it. */
static int read_in_block(struct wc_ds *d, uint64_t index, size_t in, char *dst, size_t n)
{
	uint64_t start = index * d->blksize;
	size_t blen = d->size - start < d->blksize ? (size_t)(d->size - start) : d->blksize;

	/* Callers stay inside the file, so inside the block. */
	wc_assert(start < d->size && in + n <= blen);
	pthread_mutex_lock(&d->bmu);
	for (;;) {
		struct wc_slot *s = find_slot(d, index);
		if (s != NULL && s->state == SLOT_LOADING) {
			pthread_cond_wait(&d->bcv, &d->bmu);
			continue; /* loaded, or failed: look again */
		}
		if (s != NULL) {
			wc_assert(s->state == SLOT_READY && s->buf != NULL);
			s->used = ++d->tick;
			memcpy(dst, s->buf + in, n);
			pthread_mutex_unlock(&d->bmu);
			return 0;
		}
		s = victim_slot(d);
		if (s == NULL || (s->buf == NULL && (s->buf = malloc(d->blksize)) == NULL)) {
			/* Every slot is busy (or no memory): read just these bytes. */
			pthread_mutex_unlock(&d->bmu);
			int64_t got = bm_read(d->bm, start + in, dst, n);
			return got < 0 ? (int)got : (size_t)got == n ? 0 : BM_EIO;
		}
		s->index = index;
		s->state = SLOT_LOADING;
		pthread_mutex_unlock(&d->bmu);
		int64_t got = bm_read(d->bm, start, s->buf, blen);
		pthread_mutex_lock(&d->bmu);
		int rc = got < 0 ? (int)got : (size_t)got == blen ? 0 : BM_EIO;
		/* A failed block is not kept: the next read fetches it again. */
		s->state = rc == 0 ? SLOT_READY : SLOT_EMPTY;
		s->used = ++d->tick;
		if (rc == 0)
			memcpy(dst, s->buf + in, n);
		pthread_cond_broadcast(&d->bcv);
		pthread_mutex_unlock(&d->bmu);
		return rc;
	}
}

int wc_blocks_read(struct wc_ds *d, uint64_t off, char *buf, size_t len)
{
	while (len > 0) {
		uint64_t index = off / d->blksize;
		size_t in = (size_t)(off % d->blksize);
		size_t n = d->blksize - in < len ? d->blksize - in : len;
		int rc;

		if (in == 0 && n == d->blksize) {
			/* A whole block: straight into buf, nothing to keep. */
			int64_t got = bm_read(d->bm, off, buf, n);
			rc = got < 0 ? (int)got : (size_t)got == n ? 0 : BM_EIO;
		} else {
			rc = read_in_block(d, index, in, buf, n);
		}
		if (rc < 0)
			return rc;
		off += n;
		buf += n;
		len -= n;
	}
	return 0;
}
