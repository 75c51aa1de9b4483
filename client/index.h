/* index.h — the format layer of dataset formats v2, v3 and v4
 * (docs/FORMAT.md, "Version 2", "Version 3", "Version 4"): index pages (a
 * radix tree of 256-way, immutable, content-addressed pages over block
 * numbers; v3 leaves also hold each block's 64 KiB piece sums, v4 leaves
 * those of pieces of the size its manifest says) and the small v2-v4
 * manifest.
 * Pure functions over bytes: every I/O goes through the caller's
 * callbacks (struct bm_index_io), so that the commands can cache and fetch
 * pages as they like and the fuzzers can drive it all.
 *
 * Sums are xxh128 as 32 lowercase hex digits (as in v1); "" is "none" (a
 * hole, or the root of a dataset with no stored block).  Page keys are
 * "index/<sum>", block keys "blocks/<sum>", relative to the dataset URL.
 * Errors: BM_EFORMAT (a page or manifest that breaks the format),
 * BM_ECHECKSUM (bytes that do not hash to their key or self-checksum: fetch
 * again), BM_EINVAL (a caller's bad argument), BM_ENOMEM, or whatever a
 * callback returned; msg then holds one line (no URL: the caller adds it).
 */
#ifndef BLKMAP_CLIENT_INDEX_H
#define BLKMAP_CLIENT_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define BM_IPAGE_BITS 8                        /* fan-out 2^8 */
#define BM_IPAGE_FANOUT (1u << BM_IPAGE_BITS)
#define BM_IPAGE_HDR 8                         /* "BMIP", version, level, count */
#define BM_IPAGE_ENTRY 17                      /* slot byte + 16-byte sum */
#define BM_IPAGE_MAX (BM_IPAGE_HDR + BM_IPAGE_FANOUT * BM_IPAGE_ENTRY) /* 4360: a v2 page */
/* Format v3: a block larger than a piece has a sum per piece of 64 KiB,
 * kept in its leaf entry; the block's sum is the xxh128 of those sums.
 * Format v4: the same with pieces of the size its manifest says (a power
 * of two from BM_PIECE_MIN to blksize / 2, at most BM_PIECES_MAX a block). */
#define BM_PIECE_SIZE ((size_t)64 << 10)       /* v3's pieces */
#define BM_PIECE_MIN ((size_t)4 << 10)         /* v4's smallest */
#define BM_PIECE_DEFAULT ((size_t)16 << 10)    /* a new dataset's, blocks > 64 KiB */
#define BM_PIECES_MAX 1024                     /* 64 MiB blocks / 64 KiB */
/* The largest page of any tree: a v3 leaf of 64 MiB blocks (4.2 MB). */
#define BM_IPAGE_LIMIT (BM_IPAGE_HDR + (size_t)BM_IPAGE_FANOUT * (BM_IPAGE_ENTRY + 16 * BM_PIECES_MAX))
#define BM_ILEVELS_MAX 5                       /* 256^5 = 2^40 blocks >= 2^50 / 4096 */
#define BM_INDEX_NBLK_MAX ((uint64_t)1 << 40)
#define BM_MANIFEST2_MAX ((size_t)128 << 10)    /* largest v2 manifest accepted */

/* A decoded index page.  level 0 is a leaf: sum[i] is the sum of block
 * base + slot[i]; above, sum[i] is the key of the child page covering
 * slots' 256^level blocks.  slot[] strictly ascending, count 1..256.
 * pieces: 0 in a v2 tree; in a v3 or v4 tree the pieces per block (blksize
 * / its piece size), and a leaf's psum holds count x pieces piece sums of 16 bytes
 * (entry i's at psum + i * pieces * 16; a short last block's unused ones
 * are zeros).  psum is malloc'd by decode: a page is made with
 * bm_ipage_new and freed with bm_ipage_free. */
struct bm_ipage {
	unsigned level;
	unsigned count;
	unsigned pieces;
	unsigned format;           /* the tree's, as struct bm_itree's */
	uint8_t slot[BM_IPAGE_FANOUT];
	uint8_t sum[BM_IPAGE_FANOUT][16];
	uint8_t *psum;
	size_t psum_cap;           /* entries psum has room for */
};

struct bm_ipage *bm_ipage_new(void);
void bm_ipage_free(struct bm_ipage *p);
/* Room in p->psum for count entries of p->pieces sums: 0 or BM_ENOMEM. */
int bm_ipage_reserve(struct bm_ipage *p, unsigned count);
/* Bytes of a page of count entries at level in a tree of pieces (0: v2). */
size_t bm_ipage_len(unsigned level, unsigned count, unsigned pieces);

/* ---- piece sums (formats v3 and v4) ------------------------------------------ */

/* Pieces of a block of len bytes in pieces of piece bytes: ceil(len /
 * piece). */
unsigned bm_pieces_of(size_t len, size_t piece);
/* The sums of the pieces of piece bytes of a block's len bytes into psum
 * (pieces x 16 bytes: those past the block's own pieces are zeros) and its
 * sum (the xxh128 of its piece sums) as hex.  pieces >= bm_pieces_of(len,
 * piece). */
void bm_pieces_sum(const void *buf, size_t len, size_t piece, unsigned pieces, uint8_t *psum,
		   char sum[BM_SUM_HEX + 1]);
/* The same over bytes that arrive in order, in chunks of any size: reset,
 * then update for each chunk, then final.  No allocation but the state. */
struct bm_piece_hash;
struct bm_piece_hash *bm_piece_hash_new(unsigned pieces, size_t piece);
void bm_piece_hash_free(struct bm_piece_hash *h);
void bm_piece_hash_reset(struct bm_piece_hash *h);
void bm_piece_hash_update(struct bm_piece_hash *h, const void *data, size_t len);
void bm_piece_hash_final(struct bm_piece_hash *h, char sum[BM_SUM_HEX + 1]);
/* Instead of final, for the bytes of pieces [p0, p0 + k) of a block (k at
 * most the pieces h was made for; the last may be short): checks each
 * piece against psum's entry p0 + i.  0, or BM_ECHECKSUM with msg as
 * bm_piece_verify's for the first that differs. */
int bm_piece_hash_check(struct bm_piece_hash *h, const uint8_t *psum, unsigned p0, char *msg,
			size_t n);
/* Checks untrusted piece sums of a block of len bytes in pieces of piece
 * bytes against its sum (a leaf entry, as bm_index_lookup gives it): its
 * pieces are bm_pieces_of(len, piece), none all zeros, the rest zeros,
 * and their xxh128 is sum.  0 or BM_EFORMAT with msg saying what is
 * wrong. */
int bm_pieces_check(const char *sum, const uint8_t *psum, unsigned pieces, size_t piece, size_t len,
		    char *msg, size_t n);
/* Checks bytes of piece i (len bytes) against psum's entry i: 0 or
 * BM_ECHECKSUM (msg: "piece I: checksum mismatch..."). */
int bm_piece_verify(const uint8_t *psum, unsigned i, const void *data, size_t len, char *msg,
		    size_t n);

/* Depth of the tree of a dataset of nblk blocks: the smallest d >= 1 with
 * 256^d >= nblk (its root has level d - 1). */
unsigned bm_index_depth(uint64_t nblk);

/* Encodes p into out (bm_ipage_len bytes); returns the length. */
size_t bm_ipage_encode(const struct bm_ipage *p, uint8_t *out);
/* Checks that data hashes to sum (32 hex): 0 or BM_ECHECKSUM. */
int bm_ipage_verify(const char *sum, const void *data, size_t len, char *msg, size_t n);
/* Decodes untrusted page bytes.  With sum non-NULL the bytes must hash to
 * it.  level: the level the page must have (-1: any, as stored).  nblk:
 * the dataset's blocks; base: the first block the page covers; every
 * entry must cover a block below nblk.  pieces and format: the tree's
 * (struct bm_itree): pieces 0 is a v2 tree, whose pages have page version
 * 1; else v3, page version 2, or with format 4 v4, page version 3, whose
 * leaf entries' piece sums must hash to the entry's sum, all pieces of a
 * block but the dataset's last.  p from bm_ipage_new. */
int bm_ipage_decode(const void *data, size_t len, const char *sum, int level, uint64_t base,
		    uint64_t nblk, unsigned pieces, unsigned format, struct bm_ipage *p, char *msg,
		    size_t n);

/* The caller's I/O.  load gives the bytes of page "index/<sum>" (the
 * layer verifies them again); they stay valid until release (if not NULL)
 * is called with them.  store is called for each new page, children before
 * their parents; store may be NULL for functions that only read.
 * checked and set_checked (both NULL, or both set) let a cache of
 * immutable pages spare a lookup the whole check of a page it has seen
 * pass one: set_checked(data) is called for loaded bytes that a whole
 * bm_ipage_decode accepted (their sum included), and a lookup that finds
 * checked(data) true checks only what depends on the page's place
 * (bm_index_lookup).  The mark must stay with those bytes. */
struct bm_index_io {
	int (*load)(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n);
	void (*release)(void *arg, const char *sum, const void *data);
	int (*store)(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n);
	bool (*checked)(void *arg, const void *data);
	void (*set_checked)(void *arg, const void *data);
	void *arg;
};

struct bm_index_stats {
	uint64_t pages_read;     /* load calls */
	uint64_t pages_written;  /* store calls */
	uint64_t bytes_written;  /* their bytes */
};

/* A tree: its root ("" none), its blocks, the piece sums per leaf entry
 * (0: a v2 tree; v3: blksize / 64 KiB; v4: blksize / its piece size), and
 * its format version (4; 0 for 2 or 3, which pieces tells apart): a tree
 * reads only pages of its format's page version. */
struct bm_itree {
	const char *root;
	uint64_t nblk;
	unsigned pieces;
	unsigned format;
};

/* The sum of block blk in tree t into sum: 1 stored, 0 a hole (sum ""),
 * < 0 an error.  With psum non-NULL (t->pieces x 16 bytes) a v3 tree's
 * piece sums of the block too (checked only as bm_ipage_decode does: the
 * caller, who knows the block's length, calls bm_pieces_check).  Loads
 * at most depth pages.  A page io->checked says passed a whole decode is
 * searched in place: its sum is not hashed again, and of what its place
 * decides only its version, level, length, last entry (below nblk) and
 * the found entry are checked (not every entry's piece count), with no
 * allocation and no copy of its other piece sums; any other page is
 * decoded whole, then io->set_checked. */
int bm_index_lookup(const struct bm_index_io *io, const struct bm_itree *t, uint64_t blk,
		    char sum[BM_SUM_HEX + 1], uint8_t *psum, struct bm_index_stats *st, char *msg,
		    size_t n);

/* The first stored block (not a hole) at or after block from: 1 with *blk
 * set, 0 when there is none, < 0 an error.  Loads at most two pages per
 * level (every entry's subtree holds a block, but the one holding from
 * may hold none at or after it). */
int bm_index_next(const struct bm_index_io *io, const struct bm_itree *t, uint64_t from,
		  uint64_t *blk, struct bm_index_stats *st, char *msg, size_t n);

/* One change of a commit: block blk becomes sum, or a hole (sum "").  In
 * a v3 tree a stored block's piece sums too (pieces x 16 bytes, as
 * bm_pieces_sum gives them); NULL otherwise. */
struct bm_index_change {
	uint64_t blk;
	char sum[BM_SUM_HEX + 1];
	const uint8_t *psum;
};

/* Copy-on-write update: the tree old (root, nblk, pieces) with changes
 * applied (blk ascending; of equal blks the last wins; blks at or past
 * new_nblk are ignored) and cut or grown to new_nblk blocks.  Pages of the paths
 * that changed are stored through io->store; every other page is shared.
 * new_root gets the new root ("" when no block is stored).  st (may be
 * NULL) counts what was read and written. */
int bm_index_update(const struct bm_index_io *io, const struct bm_itree *old,
		    const struct bm_index_change *ch, size_t nch, uint64_t new_nblk,
		    char new_root[BM_SUM_HEX + 1], struct bm_index_stats *st, char *msg, size_t n);

/* The block ranges [first, first + count) whose sums differ between trees
 * a and b (a hole and a block past a tree's nblk count as the same),
 * ascending and coalesced, to emit (a non-zero return stops the walk and
 * is returned).  Descends only where the page sums differ. */
typedef int (*bm_index_range_fn)(void *arg, uint64_t first, uint64_t count);
int bm_index_diff(const struct bm_index_io *io, const struct bm_itree *a, const struct bm_itree *b,
		  bm_index_range_fn emit, void *arg, struct bm_index_stats *st, char *msg, size_t n);

/* Every key the tree references, each once: "index/<sum>" for its pages
 * (a page before its children), "blocks/<sum>" for its blocks.  An emit
 * that answers BM_INDEX_KNOWN for a page skips its subtree (the caller has
 * its keys already: gc over generations that share pages); for a block it
 * is the same as 0. */
#define BM_INDEX_KNOWN 1
typedef int (*bm_index_key_fn)(void *arg, const char *key);
int bm_index_keys(const struct bm_index_io *io, const struct bm_itree *t, bm_index_key_fn emit,
		  void *arg, struct bm_index_stats *st, char *msg, size_t n);

/* The tree of a v1 manifest's block list (the upgrade to v2).  Every block
 * key must be "blocks/<sum>" (what blkmap writes): BM_EFORMAT otherwise. */
int bm_index_from_v1(const struct bm_index_io *io, const struct bm_manifest *m,
		     char root[BM_SUM_HEX + 1], struct bm_index_stats *st, char *msg, size_t n);

/* ---- the v2 and v3 manifest ---------------------------------------------- */

struct bm_manifest2 {
	unsigned version;          /* 2, 3 (blksize > 64 KiB, piece sums) or 4
				      (piece sums of pieces of piece bytes) */
	size_t blksize;
	size_t piece;              /* v4's "piece"; 0 in v2 and v3 */
	uint64_t size;
	uint64_t generation;
	uint64_t parent;           /* the generation it was committed on; 0: none */
	char created[40];
	char root[BM_SUM_HEX + 1]; /* "" when no block is stored */
	uint64_t stored;           /* blocks stored (not holes); UINT64_MAX:
				      not said (the field is optional) */
	char *attrs;               /* user attributes: compact JSON text of a
				      non-empty object, or NULL (none) */
};

/* Parses and validates an untrusted v2 manifest.  Its self-checksum is
 * checked first, over the raw bytes: BM_ECHECKSUM when the bytes do not
 * end with a "manifest_sum" field that matches them (damaged in transit:
 * fetch again); BM_EFORMAT for anything else wrong. */
int bm_manifest2_parse(const char *buf, size_t len, struct bm_manifest2 **mp, char *msg, size_t n);
/* Which version a manifest's untrusted bytes are, before parsing them with
 * that version's parser (docs/FORMAT.md, "Version 2", self-checksum): 2
 * when the self-checksum holds; 1 for JSON with "version": 1 and no
 * self-checksum field; BM_ECHECKSUM for bytes damaged in transit (a
 * self-checksum field that does not match, "version": 2 without one, or
 * not JSON at all: fetch again, report if it stays so); BM_EFORMAT for a
 * version this reader does not know.  It parses the JSON once when the
 * self-checksum fails: a reader of large v1 manifests can try v2 first
 * (bm_manifest2_parse, cheap), then bm_manifest_parse, and ask this only
 * when both refused, to tell damage (fetch again) from a bad manifest. */
int bm_manifest_version(const char *buf, size_t len, char *msg, size_t n);
/* Serializes m, self-checksum last (malloc'd, NUL-terminated); NULL when
 * out of memory or when m->attrs is not a JSON object. */
char *bm_manifest2_dump(const struct bm_manifest2 *m, size_t *lenp);
void bm_manifest2_free(struct bm_manifest2 *m);

/* Either version, into the struct bm_manifest the commands use (its
 * version field says which; a v2 one has no block list, its root
 * instead).  The version is decided as bm_manifest_version says, each
 * version's parser run at most once: BM_ECHECKSUM for bytes damaged in
 * transit (fetch again), BM_EFORMAT with the version's own message. */
int bm_manifest_parse_any(const char *buf, size_t len, struct bm_manifest **mp, char *msg, size_t n);
/* Serializes m in its version (1 or 2). */
char *bm_manifest_dump_any(const struct bm_manifest *m, size_t *lenp);
uint64_t bm_manifest2_nblk(const struct bm_manifest2 *m);
/* Piece sums per leaf entry of m's tree: blksize / its piece size in
 * versions 3 and 4, else 0. */
unsigned bm_manifest_pieces(const struct bm_manifest *m);
/* Bytes of a piece of m's blocks: 64 KiB in version 3, its "piece" in 4,
 * else 0. */
size_t bm_manifest_piece(const struct bm_manifest *m);
/* m's tree (version 2, 3 or 4), pointing into m. */
void bm_manifest_itree(const struct bm_manifest *m, struct bm_itree *t);

#endif /* BLKMAP_CLIENT_INDEX_H */
