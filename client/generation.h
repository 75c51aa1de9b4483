/* generation.h — one kept generation of a dataset, whatever its format
 * version, read straight from a store: what gc, tags and `blkmap diff`
 * need without opening a dataset handle (no mapping, no cache).
 * Prefix bm_gen_.  See generation.c.
 */
#ifndef BLKMAP_CLIENT_GENERATION_H
#define BLKMAP_CLIENT_GENERATION_H

#include <stdint.h>

#include "index.h"
#include "internal.h"
#include "store.h"

/* A generation's manifest: version 1 (m1), or 2, 3 or 4 (m2). */
struct bm_gen {
	int version;
	struct bm_manifest *m1;
	struct bm_manifest2 *m2;
	uint64_t generation, size;
	size_t blksize;
	const char *created;       /* "" when not recorded */
	char etag[BM_ETAG_SIZE];   /* of the object read */
};

/* Opens the store of url with opt's connection settings (NULL: the
 * defaults of bm_options_init). */
int bm_gen_store_open(struct bm_store **sp, const char *url, const struct bm_options *opt, char *msg,
		      size_t n);

/* Reads generation gen's kept manifest "gen/<N>.json" (gen 0: the latest,
 * "manifest.json"), checks it says it is that generation, and parses it
 * (either version; a damaged v2 manifest is fetched again).  BM_ENOTFOUND
 * when the object is missing; other errors with msg naming the URL. */
int bm_gen_read(struct bm_store *s, uint64_t gen, struct bm_gen *g, char *msg, size_t n);
void bm_gen_free(struct bm_gen *g);

/* Every object key the generation references, each once per call:
 * "blocks/..." (v1: the keys its table names) and, for v2, "index/<sum>"
 * for its pages (loaded from the store; an emit answering BM_INDEX_KNOWN
 * for a page skips its subtree, index.h). */
int bm_gen_keys(struct bm_store *s, const struct bm_gen *g, bm_index_key_fn emit, void *arg,
		char *msg, size_t n);

/* The block ranges whose content differs between generations a and b,
 * ascending and coalesced (bm_index_diff's contract): v2 against v2
 * descends only where page sums differ; otherwise the block tables are
 * compared.  The generations must have the same block size. */
int bm_gen_diff(struct bm_store *s, const struct bm_gen *a, const struct bm_gen *b,
		bm_index_range_fn emit, void *arg, char *msg, size_t n);

#endif /* BLKMAP_CLIENT_GENERATION_H */
