/* index_load.h — index pages of format v2 from the object store, through a
 * cache of immutable pages (index_load.c); the struct bm_index_io that
 * index.c's walks (lookup, update, diff, keys) take.  Also the write of an
 * immutable object that blocks and pages share.
 */
#ifndef BLKMAP_CLIENT_INDEX_LOAD_H
#define BLKMAP_CLIENT_INDEX_LOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "store.h"

struct bm_pages;

struct bm_pages_stats {
	uint64_t hits;             /* loads served from the cache */
	uint64_t fetched_pages;    /* pages GET from the store (verified) */
	uint64_t fetched_bytes;
	uint64_t stored_pages;     /* pages PUT by store (new or already there) */
	uint64_t stored_bytes;
	size_t cached_pages;       /* now in the cache */
	size_t cached_bytes;
};

/* A cache of at most cap bytes of page data (pages in use by a walk stay
 * until released, so a walk works with cap 0), reading "index/<sum>" from
 * store.  The store must outlive it. */
int bm_pages_new(struct bm_pages **pp, struct bm_store *store, size_t cap);
/* Makes the cache's cap cap bytes (evicting down to it now). */
void bm_pages_set_cap(struct bm_pages *pc, size_t cap);
void bm_pages_free(struct bm_pages *pc);
/* The io for index.c's walks: load = from the cache or a GET whose bytes
 * must hash to the page's key (else fetched again, like a block: a
 * BM_ECHECKSUM that stays; a missing page is BM_EFORMAT naming its URL);
 * store = bm_put_immutable of "index/<sum>", and the page is cached. */
void bm_pages_io(struct bm_pages *pc, struct bm_index_io *io);
void bm_pages_stats(struct bm_pages *pc, struct bm_pages_stats *st);
/* For a writer that PUTs pages itself (a commit, through its upload
 * queue): keep caches page sum (not pinned), count_stored counts one
 * stored page of len bytes. */
void bm_pages_keep(struct bm_pages *pc, const char *sum, const void *data, size_t len);
void bm_pages_count_stored(struct bm_pages *pc, size_t len);

/* PUTs body as the immutable object key with If-None-Match: *; an object
 * already there counts as stored.  With whole (blocks, pages), one
 * already there is PUT again plainly: that renews its age for gc
 * (FORMAT.md "Garbage collection") and replaces a cut one a server that
 * does not store atomically may hold. */
int bm_put_immutable(struct bm_store *s, const char *key, const void *body, size_t len, bool whole,
		     char *msg, size_t n);

#endif /* BLKMAP_CLIENT_INDEX_LOAD_H */
