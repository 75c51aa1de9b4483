/* tags.h — named generations: the tag list "tags.json" of a dataset
 * (docs/FORMAT.md, "Tags").  Prefix bm_tags_.  See tags.c.
 */
#ifndef BLKMAP_CLIENT_TAGS_H
#define BLKMAP_CLIENT_TAGS_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define BM_KEY_TAGS "tags.json"
#define BM_TAG_NAME_MAX 100

/* Calls fn for each tag, in name order (fn's non-zero return stops and is
 * returned).  No tags.json: no call. */
int bm_tags_each(struct bm_store *s, int (*fn)(void *arg, const char *name, uint64_t gen), void *arg,
		 char *msg, size_t n);
/* The generation tag name names: 0, or BM_ENOTFOUND with msg. */
int bm_tags_resolve(struct bm_store *s, const char *name, uint64_t *gen, char *msg, size_t n);

#endif /* BLKMAP_CLIENT_TAGS_H */
