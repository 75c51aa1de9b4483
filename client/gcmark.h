/* gcmark.h — the gc marker "gc.json" and the guard that writers (a
 * commit, a tag) take around it, so that gc never deletes an object a
 * writer is about to publish (docs/FORMAT.md, "Garbage collection").
 * Prefix bm_gcmark_ (the marker) and bm_gc_guard_ (writers).
 */
#ifndef BLKMAP_CLIENT_GCMARK_H
#define BLKMAP_CLIENT_GCMARK_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "store.h"

#define BM_KEY_GC "gc.json"
#define BM_GC_SETTLE_MS_DEFAULT 30000

/* The settle time D (BLKMAP_GC_SETTLE_MS, default 30 s): a gc waits D after
 * raising its marker before it reads anything; it renews the marker every
 * D; a marker whose bytes stay the same for 4 D is stale (its gc died). */
long bm_gc_settle_ms(void);

/* What gc.json said. */
struct bm_gcmark {
	bool exists;
	uint64_t epoch;            /* 0 when none */
	bool running;
	uint64_t beat;
	int64_t renewed;           /* Unix time the gc last wrote it (its clock) */
	char host[128];
	long pid;
	char started[40];
	char etag[BM_ETAG_SIZE];
	char *bytes;               /* as read (malloc'd), for staleness */
	size_t len;
};

int bm_gcmark_read(struct bm_store *s, struct bm_gcmark *m, char *msg, size_t n);
void bm_gcmark_clear(struct bm_gcmark *m);
/* Writes m (running or done) over the version `was` read (was->exists
 * false: create only).  BM_ECONFLICT when another gc wrote in between.
 * Updates m->etag. */
int bm_gcmark_write(struct bm_store *s, struct bm_gcmark *m, const struct bm_gcmark *was, char *msg,
		    size_t n);
/* A running marker is stale (its gc died) when its "renewed" time is
 * more than 4 D + BM_GC_SKEW_S behind our clock. */
#define BM_GC_SKEW_S 60
bool bm_gcmark_stale(const struct bm_gcmark *m);
/* Waits while the marker says the gc of m->epoch is running and keeps
 * changing; returns with *m the last version read: that gc done (or
 * another one started), or stale (unchanged for 4 D, or bm_gcmark_stale:
 * *stale set).  0 or an error. */
int bm_gcmark_wait(struct bm_store *s, struct bm_gcmark *m, bool *stale, char *msg, size_t n);

/* ---- the writers' guard ------------------------------------------------------ */

/* struct bm_gc_guard is in internal.h (a dataset handle holds one). */

int bm_gc_guard_begin(struct bm_store *s, struct bm_gc_guard *g, char *msg, size_t n);

/* Visits every object key the writer is about to publish (calling visit
 * for each); returns 0 or visit's first non-zero value. */
typedef int (*bm_gc_visit_fn)(void *varg, const char *key);
typedef int (*bm_gc_keys_fn)(void *arg, bm_gc_visit_fn visit, void *varg);

/* Just before the publishing write: when no gc ran since begin and none
 * runs, 0 at once.  Else waits for the gc to end and checks that every
 * object keys() names still exists: BM_ECONFLICT with msg naming the first
 * one a gc removed.  Then looks again (a new gc may have started). */
int bm_gc_guard_check(struct bm_store *s, struct bm_gc_guard *g, bm_gc_keys_fn keys, void *arg,
		      char *msg, size_t n);

#endif /* BLKMAP_CLIENT_GCMARK_H */
