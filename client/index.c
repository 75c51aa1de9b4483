/* index.c — the index pages of dataset formats v2, v3 and v4
 * (docs/FORMAT.md, "Version 2", "Version 3", "Version 4"): encoding and
 * validating pages (a tree's page version is its format's), the piece sums
 * of v3 and v4 leaves, lookup, copy-on-write update, diff, the keys a tree
 * references, and the upgrade of a v1 block list.  The
 * format layer: pure functions over bytes, every page read or written
 * through the caller's struct bm_index_io.  manifest2.c holds the v2
 * manifest.
 * Owns nothing between calls.  Locking: none (no shared state; callbacks
 * run on the calling thread).  Recursion is bounded by BM_ILEVELS_MAX:
 * each page must have exactly the level its position gives it, so a tree
 * can neither loop nor go deeper than its dataset's size allows.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bm_xxhash.h"
#include "index.h"

static const uint8_t page_magic[4] = { 'B', 'M', 'I', 'P' };
#define PAGE_VERSION 1    /* the pages of a v2 tree */
#define PAGE_VERSION_V3 2 /* the pages of a v3 tree (leaves with piece sums) */
#define PAGE_VERSION_V4 3 /* the pages of a v4 tree (v3's, pieces of any size) */

/* The page version of a tree of format version format (0: 2 or 3, as
 * pieces says) with pieces piece sums per leaf entry. */
static unsigned page_version(unsigned format, unsigned pieces)
{
	if (format == 4)
		return PAGE_VERSION_V4;
	return pieces ? PAGE_VERSION_V3 : PAGE_VERSION;
}

/* Blocks one slot of a page of level L covers: 256^L. */
static uint64_t cspan(unsigned level)
{
	return (uint64_t)1 << (BM_IPAGE_BITS * level);
}

unsigned bm_index_depth(uint64_t nblk)
{
	unsigned d = 1;
	while (d < BM_ILEVELS_MAX + 3 && nblk > cspan(d))
		d++;
	return d;
}

/* ---- sums ----------------------------------------------------------------- */

static void sum_bin(const void *data, size_t len, uint8_t out[16])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, bm_xxh3_128(data, len));
	memcpy(out, c.digest, 16);
}

static void bin_hex(const uint8_t b[16], char out[BM_SUM_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[BM_SUM_HEX] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* 32 lowercase hex digits (exactly) to 16 bytes: 0, or -1. */
static int hex_bin(const char *s, uint8_t out[16])
{
	for (int i = 0; i < 16; i++) {
		int hi = hexval(s[2 * i]), lo;
		if (hi < 0 || (lo = hexval(s[2 * i + 1])) < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return s[BM_SUM_HEX] == '\0' ? 0 : -1;
}

/* ---- piece sums ------------------------------------------------------------- */

unsigned bm_pieces_of(size_t len, size_t piece)
{
	return (unsigned)((len + piece - 1) / piece);
}

static bool is_zero16(const uint8_t *b)
{
	static const uint8_t zero[16];
	return memcmp(b, zero, 16) == 0;
}

void bm_pieces_sum(const void *buf, size_t len, size_t piece, unsigned pieces, uint8_t *psum,
		   char sum[BM_SUM_HEX + 1])
{
	unsigned np = bm_pieces_of(len, piece);
	uint8_t bin[16];

	bm_assert(np <= pieces);
	for (unsigned i = 0; i < np; i++) {
		size_t off = (size_t)i * piece;
		size_t plen = len - off < piece ? len - off : piece;
		sum_bin((const char *)buf + off, plen, psum + (size_t)i * 16);
	}
	memset(psum + (size_t)np * 16, 0, (size_t)(pieces - np) * 16);
	sum_bin(psum, (size_t)np * 16, bin);
	bin_hex(bin, sum);
}

struct bm_piece_hash {
	XXH3_state_t *st;          /* the piece being hashed */
	size_t in_piece;           /* its bytes so far */
	size_t piece;              /* bytes of a piece */
	unsigned pieces, np;       /* room; piece sums done */
	uint8_t psum[];
};

struct bm_piece_hash *bm_piece_hash_new(unsigned pieces, size_t piece)
{
	struct bm_piece_hash *h = calloc(1, sizeof(*h) + (size_t)pieces * 16);

	bm_assert(piece > 0);
	if (h == NULL)
		return NULL;
	h->pieces = pieces;
	h->piece = piece;
	if ((h->st = XXH3_createState()) == NULL) {
		free(h);
		return NULL;
	}
	bm_piece_hash_reset(h);
	return h;
}

void bm_piece_hash_free(struct bm_piece_hash *h)
{
	if (h == NULL)
		return;
	XXH3_freeState(h->st);
	free(h);
}

void bm_piece_hash_reset(struct bm_piece_hash *h)
{
	XXH3_128bits_reset(h->st);
	h->in_piece = 0;
	h->np = 0;
}

/* Ends the piece being hashed (it has bytes). */
static void piece_end(struct bm_piece_hash *h)
{
	XXH128_canonical_t c;

	if (h->np < h->pieces) { /* more pieces than room: final's sum says so */
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h->st));
		memcpy(h->psum + (size_t)h->np * 16, c.digest, 16);
	}
	h->np++;
	h->in_piece = 0;
	XXH3_128bits_reset(h->st);
}

void bm_piece_hash_update(struct bm_piece_hash *h, const void *data, size_t len)
{
	const char *d = data;

	while (len > 0) {
		size_t take = h->piece - h->in_piece;
		if (take > len)
			take = len;
		bm_xxh3_128_update(h->st, d, take); /* while the data is hot */
		h->in_piece += take;
		d += take;
		len -= take;
		if (h->in_piece == h->piece)
			piece_end(h);
	}
}

void bm_piece_hash_final(struct bm_piece_hash *h, char sum[BM_SUM_HEX + 1])
{
	uint8_t bin[16];

	if (h->in_piece > 0)
		piece_end(h);
	if (h->np > h->pieces) {
		/* More bytes than the block holds: no sum of it can match. */
		memset(bin, 0, sizeof(bin));
		bin_hex(bin, sum);
		sum[0] = 'x';
		return;
	}
	sum_bin(h->psum, (size_t)h->np * 16, bin);
	bin_hex(bin, sum);
}

/* "piece I: checksum mismatch ...": bm_piece_verify's and
 * bm_piece_hash_check's message for piece i of len bytes. */
static int piece_mismatch(unsigned i, size_t len, const uint8_t got[16], const uint8_t want[16],
			  char *msg, size_t n)
{
	char want_hex[BM_SUM_HEX + 1], got_hex[BM_SUM_HEX + 1];

	bin_hex(want, want_hex);
	bin_hex(got, got_hex);
	bm_fmt(msg, n, "piece %u: checksum mismatch: its %zu bytes hash to %s, the index says %s", i,
	       len, got_hex, want_hex);
	return BM_ECHECKSUM;
}

int bm_piece_hash_check(struct bm_piece_hash *h, const uint8_t *psum, unsigned p0, char *msg,
			size_t n)
{
	size_t last = h->in_piece > 0 ? h->in_piece : h->piece;

	if (h->in_piece > 0)
		piece_end(h);
	if (h->np > h->pieces) { /* its sums were not kept */
		bm_fmt(msg, n, "more bytes than the %u pieces asked for", h->pieces);
		return BM_ECHECKSUM;
	}
	for (unsigned i = 0; i < h->np; i++) {
		const uint8_t *got = h->psum + (size_t)i * 16, *want = psum + (size_t)(p0 + i) * 16;
		if (memcmp(got, want, 16) != 0)
			return piece_mismatch(p0 + i, i + 1 < h->np ? h->piece : last, got, want,
					      msg, n);
	}
	return 0;
}

/* The piece sums of one entry of a v3 leaf: 0, or BM_EFORMAT with msg
 * naming the slot.  np gets the pieces the entry has (the leading ones
 * that are not zeros). */
static int entry_pieces_check(const uint8_t sum[16], const uint8_t *psum, unsigned pieces,
			      unsigned *np, char *why, size_t n)
{
	uint8_t got[16];
	unsigned k = 0;

	while (k < pieces && !is_zero16(psum + (size_t)k * 16))
		k++;
	*np = k;
	if (k == 0) {
		bm_fmt(why, n, "no piece sum");
		return BM_EFORMAT;
	}
	for (unsigned i = k; i < pieces; i++) {
		if (!is_zero16(psum + (size_t)i * 16)) {
			bm_fmt(why, n, "piece sum %u follows a piece sum of zeros", i);
			return BM_EFORMAT;
		}
	}
	sum_bin(psum, (size_t)k * 16, got);
	if (memcmp(got, sum, 16) != 0) {
		bm_fmt(why, n, "its %u piece sums do not hash to the block's sum", k);
		return BM_EFORMAT;
	}
	return 0;
}

int bm_pieces_check(const char *sum, const uint8_t *psum, unsigned pieces, size_t piece, size_t len,
		    char *msg, size_t n)
{
	uint8_t bin[16];
	unsigned np, want = bm_pieces_of(len, piece);
	char why[160];

	if (hex_bin(sum, bin) < 0) {
		bm_fmt(msg, n, "block sum \"%.40s\" is not 32 lowercase hex digits", sum);
		return BM_EINVAL;
	}
	if (entry_pieces_check(bin, psum, pieces, &np, why, sizeof(why)) < 0) {
		bm_fmt(msg, n, "block sum %s: %s", sum, why);
		return BM_EFORMAT;
	}
	if (np != want) {
		bm_fmt(msg, n, "block sum %s: %u piece sums where its %zu bytes make %u pieces", sum,
		       np, len, want);
		return BM_EFORMAT;
	}
	return 0;
}

int bm_piece_verify(const uint8_t *psum, unsigned i, const void *data, size_t len, char *msg,
		    size_t n)
{
	uint8_t got[16];

	sum_bin(data, len, got);
	if (memcmp(got, psum + (size_t)i * 16, 16) == 0)
		return 0;
	return piece_mismatch(i, len, got, psum + (size_t)i * 16, msg, n);
}

/* ---- pages ---------------------------------------------------------------- */

struct bm_ipage *bm_ipage_new(void)
{
	return calloc(1, sizeof(struct bm_ipage));
}

void bm_ipage_free(struct bm_ipage *p)
{
	if (p == NULL)
		return;
	free(p->psum);
	free(p);
}

int bm_ipage_reserve(struct bm_ipage *p, unsigned count)
{
	if (p->pieces == 0 || count <= p->psum_cap)
		return 0;
	uint8_t *q = realloc(p->psum, (size_t)count * p->pieces * 16);
	if (q == NULL)
		return BM_ENOMEM;
	p->psum = q;
	p->psum_cap = count;
	return 0;
}

/* Bytes of one entry of a page at level in a tree of pieces. */
static size_t entry_len(unsigned level, unsigned pieces)
{
	return BM_IPAGE_ENTRY + (level == 0 ? (size_t)pieces * 16 : 0);
}

size_t bm_ipage_len(unsigned level, unsigned count, unsigned pieces)
{
	return BM_IPAGE_HDR + (size_t)count * entry_len(level, pieces);
}

size_t bm_ipage_encode(const struct bm_ipage *p, uint8_t *out)
{
	uint8_t *q = out + BM_IPAGE_HDR;
	size_t plen = p->level == 0 ? (size_t)p->pieces * 16 : 0;

	bm_assert(p->count >= 1 && p->count <= BM_IPAGE_FANOUT && p->level < BM_ILEVELS_MAX);
	bm_assert(plen == 0 || p->psum_cap >= p->count);
	memcpy(out, page_magic, 4);
	out[4] = (uint8_t)page_version(p->format, p->pieces);
	out[5] = (uint8_t)p->level;
	out[6] = (uint8_t)(p->count & 0xff);
	out[7] = (uint8_t)(p->count >> 8);
	for (unsigned i = 0; i < p->count; i++) {
		bm_assert(i == 0 || p->slot[i] > p->slot[i - 1]);
		*q++ = p->slot[i];
		memcpy(q, p->sum[i], 16);
		q += 16;
		if (plen) {
			memcpy(q, p->psum + i * plen, plen);
			q += plen;
		}
	}
	return (size_t)(q - out);
}

int bm_ipage_verify(const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	uint8_t want[16], got[16];
	char hex[BM_SUM_HEX + 1];

	if (hex_bin(sum, want) < 0) {
		bm_fmt(msg, n, "index page key \"%.40s\" is not 32 lowercase hex digits", sum);
		return BM_EINVAL;
	}
	sum_bin(data, len, got);
	if (memcmp(want, got, 16) != 0) {
		bin_hex(got, hex);
		bm_fmt(msg, n, "index page %s: checksum mismatch: its %zu bytes hash to %s", sum, len, hex);
		return BM_ECHECKSUM;
	}
	return 0;
}

int bm_ipage_decode(const void *data, size_t len, const char *sum, int level, uint64_t base,
		    uint64_t nblk, unsigned pieces, unsigned format, struct bm_ipage *p, char *msg,
		    size_t n)
{
	const uint8_t *b = data;
	const char *name = sum ? sum : "(unnamed)";
	unsigned want_version = page_version(format, pieces);
	int rc;

	if (sum != NULL && (rc = bm_ipage_verify(sum, data, len, msg, n)) < 0)
		return rc;
	if (pieces > BM_PIECES_MAX) {
		bm_fmt(msg, n, "index page %s: %u pieces per block is more than %d", name, pieces,
		       BM_PIECES_MAX);
		return BM_EINVAL;
	}
	if (format == 4 && pieces < 2) {
		bm_fmt(msg, n, "index page %s: a format 4 tree with %u pieces per block", name, pieces);
		return BM_EINVAL;
	}
	p->count = 0;
	p->pieces = pieces;
	p->format = format;
	if (len < BM_IPAGE_HDR) {
		bm_fmt(msg, n, "index page %s: %zu bytes, shorter than its %d-byte header", name, len,
		       BM_IPAGE_HDR);
		return BM_EFORMAT;
	}
	if (memcmp(b, page_magic, 4) != 0) {
		bm_fmt(msg, n, "index page %s: does not start with \"BMIP\"", name);
		return BM_EFORMAT;
	}
	if (b[4] != want_version) {
		/* Page version v is format v + 1's. */
		if (b[4] >= PAGE_VERSION && b[4] <= PAGE_VERSION_V4)
			bm_fmt(msg, n,
			       "index page %s: page version %u (format %d) in a tree of format version %u",
			       name, b[4], b[4] + 1, want_version + 1);
		else
			bm_fmt(msg, n,
			       "index page %s: page version %u is not supported (this reader knows %d to %d)",
			       name, b[4], PAGE_VERSION, PAGE_VERSION_V4);
		return BM_EFORMAT;
	}
	p->level = b[5];
	if (p->level >= BM_ILEVELS_MAX || (level >= 0 && p->level != (unsigned)level)) {
		if (level >= 0)
			bm_fmt(msg, n, "index page %s: level %u where its position needs level %d", name,
			       p->level, level);
		else
			bm_fmt(msg, n, "index page %s: level %u is above the deepest, %d", name, p->level,
			       BM_ILEVELS_MAX - 1);
		return BM_EFORMAT;
	}
	unsigned count = (unsigned)b[6] | (unsigned)b[7] << 8;
	if (count < 1 || count > BM_IPAGE_FANOUT) {
		bm_fmt(msg, n, "index page %s: %u entries (a page holds 1 to %u)", name, count,
		       BM_IPAGE_FANOUT);
		return BM_EFORMAT;
	}
	size_t elen = entry_len(p->level, pieces), plen = elen - BM_IPAGE_ENTRY;
	if (len != bm_ipage_len(p->level, count, pieces)) {
		bm_fmt(msg, n, "index page %s: %zu bytes where %u entries take %zu", name, len, count,
		       bm_ipage_len(p->level, count, pieces));
		return BM_EFORMAT;
	}
	if (plen && bm_ipage_reserve(p, count) < 0)
		return BM_ENOMEM;
	p->count = count;
	b += BM_IPAGE_HDR;
	for (unsigned i = 0; i < p->count; i++, b += elen) {
		p->slot[i] = b[0];
		memcpy(p->sum[i], b + 1, 16);
		if (i > 0 && p->slot[i] <= p->slot[i - 1]) {
			bm_fmt(msg, n, "index page %s: entry %u (slot %u) is not above the previous slot %u",
			       name, i, p->slot[i], p->slot[i - 1]);
			return BM_EFORMAT;
		}
		uint64_t first = base + (uint64_t)p->slot[i] * cspan(p->level);
		if (level >= 0 && first >= nblk) {
			bm_fmt(msg, n,
			       "index page %s: entry %u covers block %" PRIu64
			       ", past the dataset's %" PRIu64 " blocks",
			       name, i, first, nblk);
			return BM_EFORMAT;
		}
		if (plen == 0)
			continue;
		/* A v3 leaf entry: its piece sums hash to its sum, and every
		 * block but the dataset's last has all its pieces (the last
		 * one's count the reader checks against its length). */
		uint8_t *ps = p->psum + (size_t)i * plen;
		unsigned np;
		char why[160];
		memcpy(ps, b + BM_IPAGE_ENTRY, plen);
		if (entry_pieces_check(p->sum[i], ps, pieces, &np, why, sizeof(why)) < 0) {
			bm_fmt(msg, n, "index page %s: entry %u (slot %u): %s", name, i, p->slot[i], why);
			return BM_EFORMAT;
		}
		if (level >= 0 && np != pieces && first + 1 < nblk) {
			bm_fmt(msg, n,
			       "index page %s: entry %u (slot %u): %u piece sums for a full block of %u",
			       name, i, p->slot[i], np, pieces);
			return BM_EFORMAT;
		}
	}
	return 0;
}

/* ---- walking a tree --------------------------------------------------------- */

/* A node of a tree as the walks see it.  WRAP stands for the page that a
 * tree grown deeper puts above its old root: only slot 0 used, pointing to
 * the old root (or to another WRAP), not stored anywhere yet. */
enum { N_NONE, N_PAGE, N_WRAP };
struct node {
	int kind;
	uint8_t sum[16];
};

/* One tree: its root, size, pieces and the level of its root. */
struct tree {
	const struct bm_index_io *io;
	struct node root;
	unsigned root_level;
	uint64_t nblk;
	unsigned pieces;
	unsigned format;           /* as struct bm_itree's */
	struct bm_index_stats *st;
	char *msg;
	size_t n;
};

static int tree_init(struct tree *t, const struct bm_index_io *io, const struct bm_itree *it,
		     struct bm_index_stats *st, char *msg, size_t n)
{
	const char *root = it->root;
	uint64_t nblk = it->nblk;

	t->io = io;
	t->nblk = nblk;
	t->pieces = it->pieces;
	t->format = it->format;
	t->st = st;
	t->msg = msg;
	t->n = n;
	if (nblk > BM_INDEX_NBLK_MAX) {
		bm_fmt(msg, n, "%" PRIu64 " blocks is more than an index holds (2^40)", nblk);
		return BM_EINVAL;
	}
	if (it->pieces > BM_PIECES_MAX) {
		bm_fmt(msg, n, "%u pieces per block is more than %d", it->pieces, BM_PIECES_MAX);
		return BM_EINVAL;
	}
	t->root_level = bm_index_depth(nblk) - 1;
	if (root == NULL || root[0] == '\0') {
		t->root.kind = N_NONE;
		return 0;
	}
	if (hex_bin(root, t->root.sum) < 0) {
		bm_fmt(msg, n, "index root \"%.40s\" is not 32 lowercase hex digits", root);
		return BM_EINVAL;
	}
	if (nblk == 0) {
		bm_fmt(msg, n, "index root %s given for a dataset of no blocks", root);
		return BM_EFORMAT;
	}
	t->root.kind = N_PAGE;
	return 0;
}

/* Page bytes data (len) that the io loaded as page hex, decoded in full
 * into *p at (level, base) of tree t, and marked checked for the io on
 * success (io->checked: see find_entry). */
static int decode_loaded(struct tree *t, const char *hex, const void *data, size_t len,
			 unsigned level, uint64_t base, struct bm_ipage *p)
{
	int rc;

	if (data == NULL && len > 0) {
		bm_fmt(t->msg, t->n, "index page %s: the loader gave no bytes", hex);
		return BM_EINVAL;
	}
	rc = bm_ipage_decode(data ? data : "", len, hex, (int)level, base, t->nblk, t->pieces,
			     t->format, p, t->msg, t->n);
	if (rc == 0 && data != NULL && t->io->set_checked)
		t->io->set_checked(t->io->arg, data);
	return rc;
}

/* The page of node nd at (level, base) of tree t into *p (count 0 for
 * N_NONE). */
static int load_page(struct tree *t, const struct node *nd, unsigned level, uint64_t base,
		     struct bm_ipage *p)
{
	char hex[BM_SUM_HEX + 1];
	const void *data = NULL;
	size_t len = 0;
	int rc;

	p->level = level;
	p->count = 0;
	p->pieces = t->pieces;
	p->format = t->format;
	if (nd->kind == N_NONE)
		return 0;
	if (nd->kind == N_WRAP) {
		bm_assert(level > t->root_level);
		p->count = 1;
		p->slot[0] = 0;
		memcpy(p->sum[0], t->root.sum, 16); /* child: see child_of */
		return 0;
	}
	bin_hex(nd->sum, hex);
	if (t->st)
		t->st->pages_read++;
	rc = t->io->load(t->io->arg, hex, &data, &len, t->msg, t->n);
	if (rc < 0)
		return rc;
	rc = decode_loaded(t, hex, data, len, level, base, p);
	if (t->io->release)
		t->io->release(t->io->arg, hex, data);
	return rc;
}

/* The node of entry i of page p, the page of node nd at level (> 0). */
static struct node child_of(const struct tree *t, const struct node *nd, unsigned level,
			    const struct bm_ipage *p, unsigned i)
{
	struct node c;
	if (nd->kind == N_WRAP)
		c.kind = level - 1 == t->root_level ? N_PAGE : N_WRAP;
	else
		c.kind = N_PAGE;
	memcpy(c.sum, p->sum[i], 16);
	return c;
}

/* The node of tree t seen at level (0, the leftmost position) when a tree
 * of another depth is compared or built from it: WRAPs above t's root,
 * the chain of slot-0 children below it. */
static int node_at_level(struct tree *t, unsigned level, struct node *out)
{
	struct bm_ipage *p;
	struct node nd = t->root;
	int rc = 0;

	if (nd.kind == N_NONE || level == t->root_level) {
		*out = nd;
		return 0;
	}
	if (level > t->root_level) {
		out->kind = N_WRAP;
		return 0;
	}
	p = bm_ipage_new();
	if (p == NULL)
		return BM_ENOMEM;
	for (unsigned l = t->root_level; l > level && nd.kind == N_PAGE; l--) {
		if ((rc = load_page(t, &nd, l, 0, p)) < 0)
			break;
		if (p->slot[0] == 0)
			nd = child_of(t, &nd, l, p, 0);
		else
			nd.kind = N_NONE;
	}
	bm_ipage_free(p);
	*out = nd;
	return rc;
}

/* ---- lookup ----------------------------------------------------------------- */

/* Entry want of page bytes b (len) at (level, base) of tree t, bytes the
 * io says passed a whole decode before (bm_ipage_decode: their sum, and
 * what they say whatever their position: magic, slots ascending, each v3
 * leaf entry's piece sums hashing to its sum).  Checked again here is
 * what depends on where the page is and on the tree: its version and
 * level, its length for its count, its last entry below nblk (slots
 * ascend: so is every other one), and the found entry's piece sums (all
 * of them but at the dataset's last block).  1 found (esum; at a v3 leaf
 * with psum non-NULL its piece sums), 0 none, 2 when any of that fails:
 * the caller decodes the page in full, which says what is wrong. */
static int search_checked(const struct tree *t, const uint8_t *b, size_t len, unsigned level,
			  uint64_t base, unsigned want, uint8_t esum[16], uint8_t *psum)
{
	size_t elen = entry_len(level, t->pieces);
	unsigned lo = 0, hi, count;

	if (len < BM_IPAGE_HDR || b[4] != page_version(t->format, t->pieces) ||
	    b[5] != level)
		return 2;
	count = (unsigned)b[6] | (unsigned)b[7] << 8;
	if (count < 1 || count > BM_IPAGE_FANOUT || len != bm_ipage_len(level, count, t->pieces))
		return 2;
	b += BM_IPAGE_HDR;
	if (base + (uint64_t)b[(size_t)(count - 1) * elen] * cspan(level) >= t->nblk)
		return 2;
	hi = count;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (b[(size_t)mid * elen] < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == count || b[(size_t)lo * elen] != want)
		return 0;
	const uint8_t *e = b + (size_t)lo * elen;
	if (level == 0 && t->pieces > 0) {
		unsigned np;
		char why[160];
		if (entry_pieces_check(e + 1, e + BM_IPAGE_ENTRY, t->pieces, &np, why, sizeof(why)) < 0 ||
		    (np != t->pieces && base + want + 1 < t->nblk))
			return 2;
		if (psum != NULL)
			memcpy(psum, e + BM_IPAGE_ENTRY, (size_t)t->pieces * 16);
	}
	memcpy(esum, e + 1, 16);
	return 1;
}

/* Entry want of the page of node nd (N_PAGE) at (level, base) of tree t,
 * as search_checked gives it.  A page the io marked checked is searched
 * where it lies (no hash, no copy of its piece sums); any other is decoded
 * in full into *pp (made on first need) and marked. */
static int find_entry(struct tree *t, const struct node *nd, unsigned level, uint64_t base,
		      unsigned want, struct bm_ipage **pp, uint8_t esum[16], uint8_t *psum)
{
	char hex[BM_SUM_HEX + 1];
	const void *data = NULL;
	size_t len = 0;
	int rc;

	bin_hex(nd->sum, hex);
	if (t->st)
		t->st->pages_read++;
	if ((rc = t->io->load(t->io->arg, hex, &data, &len, t->msg, t->n)) < 0)
		return rc;
	rc = 2;
	if (data != NULL && t->io->checked && t->io->checked(t->io->arg, data))
		rc = search_checked(t, data, len, level, base, want, esum, psum);
	if (rc == 2 && *pp == NULL && (*pp = bm_ipage_new()) == NULL)
		rc = BM_ENOMEM;
	if (rc == 2) {
		struct bm_ipage *p = *pp;
		p->pieces = t->pieces;
		p->format = t->format;
		if ((rc = decode_loaded(t, hex, data, len, level, base, p)) == 0) {
			unsigned lo = 0, hi = p->count;
			while (lo < hi) {
				unsigned mid = (lo + hi) / 2;
				if (p->slot[mid] < want)
					lo = mid + 1;
				else
					hi = mid;
			}
			rc = lo < p->count && p->slot[lo] == want;
			if (rc == 1) {
				memcpy(esum, p->sum[lo], 16);
				if (psum != NULL && level == 0 && t->pieces > 0)
					memcpy(psum, p->psum + (size_t)lo * t->pieces * 16,
					       (size_t)t->pieces * 16);
			}
		}
	}
	if (t->io->release)
		t->io->release(t->io->arg, hex, data);
	return rc;
}

int bm_index_lookup(const struct bm_index_io *io, const struct bm_itree *it, uint64_t blk,
		    char sum[BM_SUM_HEX + 1], uint8_t *psum, struct bm_index_stats *st, char *msg,
		    size_t n)
{
	struct tree t;
	struct bm_ipage *p = NULL;
	struct node nd;
	int rc;

	sum[0] = '\0';
	if ((rc = tree_init(&t, io, it, st, msg, n)) < 0)
		return rc;
	if (blk >= it->nblk) {
		bm_fmt(msg, n, "block %" PRIu64 " is past the dataset's %" PRIu64 " blocks", blk,
		       it->nblk);
		return BM_EINVAL;
	}
	nd = t.root;
	for (int level = (int)t.root_level; level >= 0 && nd.kind == N_PAGE; level--) {
		uint64_t base = blk & ~(cspan((unsigned)level + 1) - 1);
		unsigned want = (unsigned)((blk >> (BM_IPAGE_BITS * level)) & (BM_IPAGE_FANOUT - 1));
		uint8_t esum[16];
		if ((rc = find_entry(&t, &nd, (unsigned)level, base, want, &p, esum,
				     level == 0 ? psum : NULL)) <= 0) {
			if (rc == 0)
				nd.kind = N_NONE; /* a hole */
			break;
		}
		if (level == 0) {
			bin_hex(esum, sum);
			break;
		}
		/* The root's children are pages (a lookup walks no WRAP). */
		nd.kind = N_PAGE;
		memcpy(nd.sum, esum, 16);
	}
	bm_ipage_free(p);
	return rc;
}

/* ---- next stored block -------------------------------------------------------- */

/* The first stored block at or after from below node nd at (level, base):
 * 1 with *blk set, 0 when there is none, < 0 an error. */
static int next_node(struct tree *t, unsigned level, uint64_t base, const struct node *nd,
		     uint64_t from, uint64_t *blk)
{
	uint64_t span = cspan(level);
	struct bm_ipage *p;
	int rc;

	if (nd->kind == N_NONE)
		return 0;
	if ((p = bm_ipage_new()) == NULL)
		return BM_ENOMEM;
	if ((rc = load_page(t, nd, level, base, p)) < 0)
		goto done;
	rc = 0;
	for (unsigned i = 0; i < p->count && rc == 0; i++) {
		uint64_t first = base + (uint64_t)p->slot[i] * span;
		if (first + span <= from)
			continue; /* wholly before from */
		if (level == 0) {
			*blk = first;
			rc = 1;
		} else {
			struct node c = child_of(t, nd, level, p, i);
			rc = next_node(t, level - 1, first, &c, from, blk);
		}
	}
done:
	bm_ipage_free(p);
	return rc;
}

int bm_index_next(const struct bm_index_io *io, const struct bm_itree *it, uint64_t from,
		  uint64_t *blk, struct bm_index_stats *st, char *msg, size_t n)
{
	struct tree t;
	int rc;

	if ((rc = tree_init(&t, io, it, st, msg, n)) < 0)
		return rc;
	if (from >= it->nblk)
		return 0;
	return next_node(&t, t.root_level, 0, &t.root, from, blk);
}

/* ---- update ------------------------------------------------------------------- */

struct uctx {
	struct tree old;
	uint64_t new_nblk;
	const struct bm_index_change *ch;
	uint8_t (*chsum)[16];     /* the changes' sums in binary */
	struct bm_index_stats *st;
	uint8_t *buf;              /* bm_ipage_len of a full leaf */
};

/* The subtree at (level, base) holding old node nd, with changes [lo, hi)
 * (all inside its range) applied: *present and out get its new page. */
static int update_node(struct uctx *u, unsigned level, uint64_t base, const struct node *nd,
		       size_t lo, size_t hi, bool *present, uint8_t out[16])
{
	uint64_t span = cspan(level);
	struct bm_ipage *old, *q;
	int rc = 0;

	*present = false;
	if (base >= u->new_nblk)
		return 0; /* cut off */
	if (lo == hi && nd->kind != N_WRAP) {
		/* No change below: shared, unless the size cuts into it. */
		if (nd->kind == N_NONE)
			return 0;
		if (u->new_nblk >= u->old.nblk || base + span * BM_IPAGE_FANOUT <= u->new_nblk) {
			memcpy(out, nd->sum, 16);
			*present = true;
			return 0;
		}
	}
	old = bm_ipage_new();
	q = bm_ipage_new();
	if (old == NULL || q == NULL) {
		rc = BM_ENOMEM;
		goto done;
	}
	if ((rc = load_page(&u->old, nd, level, base, old)) < 0)
		goto done;
	q->level = level;
	q->count = 0;
	q->pieces = u->old.pieces;
	q->format = u->old.format;
	if (level == 0 && (rc = bm_ipage_reserve(q, BM_IPAGE_FANOUT)) < 0)
		goto done;
	size_t plen = level == 0 ? (size_t)q->pieces * 16 : 0;
	size_t j = lo;
	unsigned i = 0;
	while (i < old->count || j < hi) {
		unsigned s, cslot = BM_IPAGE_FANOUT;
		if (j < hi) {
			/* The parent gave only changes inside this page's range. */
			bm_assert(u->ch[j].blk >= base && (u->ch[j].blk - base) / span < BM_IPAGE_FANOUT);
			cslot = (unsigned)((u->ch[j].blk - base) / span);
		}
		s = i < old->count && old->slot[i] < cslot ? old->slot[i] : cslot;
		uint64_t cb = base + (uint64_t)s * span;
		if (cb >= u->new_nblk)
			break; /* this slot and all after it are cut off */
		size_t j2 = j;
		while (j2 < hi && (u->ch[j2].blk - base) / span == s)
			j2++;
		bool had = i < old->count && old->slot[i] == s;
		bool got = false;
		uint8_t sum[16];
		const uint8_t *ps = NULL;
		if (level == 0) {
			if (j2 > j) {
				got = u->ch[j2 - 1].sum[0] != '\0'; /* the last change wins */
				memcpy(sum, u->chsum[j2 - 1], 16);
				ps = u->ch[j2 - 1].psum;
			} else {
				got = true;
				memcpy(sum, old->sum[i], 16);
				ps = plen ? old->psum + i * plen : NULL;
			}
			if (got && plen && ps == NULL) {
				bm_fmt(u->old.msg, u->old.n,
				       "index change of block %" PRIu64 ": no piece sums in a format 3 tree",
				       cb);
				rc = BM_EINVAL;
				goto done;
			}
			/* A change's piece sums make a page that decodes: they
			 * hash to its sum, and only the last block is short. */
			unsigned np;
			char why[160];
			if (got && plen && j2 > j &&
			    (entry_pieces_check(sum, ps, q->pieces, &np, why, sizeof(why)) < 0 ||
			     (np != q->pieces && cb + 1 < u->new_nblk &&
			      snprintf(why, sizeof(why), "%u piece sums for a full block of %u", np,
				       q->pieces) > 0))) {
				bm_fmt(u->old.msg, u->old.n, "index change of block %" PRIu64 ": %s", cb,
				       why);
				rc = BM_EINVAL;
				goto done;
			}
		} else {
			struct node c = { .kind = N_NONE };
			if (had)
				c = child_of(&u->old, nd, level, old, i);
			if ((rc = update_node(u, level - 1, cb, &c, j, j2, &got, sum)) < 0)
				goto done;
		}
		if (got) {
			q->slot[q->count] = (uint8_t)s;
			memcpy(q->sum[q->count], sum, 16);
			if (plen)
				memcpy(q->psum + q->count * plen, ps, plen);
			q->count++;
		}
		if (had)
			i++;
		j = j2;
	}
	if (q->count == 0)
		goto done; /* nothing stored below: no page */
	size_t len = bm_ipage_encode(q, u->buf);
	sum_bin(u->buf, len, out);
	*present = true;
	if (nd->kind == N_PAGE && memcmp(out, nd->sum, 16) == 0)
		goto done; /* the same page as before */
	char hex[BM_SUM_HEX + 1];
	bin_hex(out, hex);
	if (u->old.io->store == NULL) {
		bm_fmt(u->old.msg, u->old.n, "index update without a store callback");
		rc = BM_EINVAL;
		goto done;
	}
	if ((rc = u->old.io->store(u->old.io->arg, hex, u->buf, len, u->old.msg, u->old.n)) < 0)
		goto done;
	if (u->st) {
		u->st->pages_written++;
		u->st->bytes_written += len;
	}
done:
	bm_ipage_free(old);
	bm_ipage_free(q);
	return rc;
}

int bm_index_update(const struct bm_index_io *io, const struct bm_itree *old,
		    const struct bm_index_change *ch, size_t nch, uint64_t new_nblk,
		    char new_root[BM_SUM_HEX + 1], struct bm_index_stats *st, char *msg, size_t n)
{
	struct uctx *u;
	struct node top;
	bool present = false;
	uint8_t out[16];
	size_t nuse = 0;
	int rc;

	new_root[0] = '\0';
	if (new_nblk > BM_INDEX_NBLK_MAX) {
		bm_fmt(msg, n, "%" PRIu64 " blocks is more than an index holds (2^40)", new_nblk);
		return BM_EINVAL;
	}
	u = calloc(1, sizeof(*u));
	if (u == NULL)
		return BM_ENOMEM;
	if ((rc = tree_init(&u->old, io, old, st, msg, n)) < 0)
		goto done;
	if ((u->buf = malloc(bm_ipage_len(0, BM_IPAGE_FANOUT, old->pieces))) == NULL) {
		rc = BM_ENOMEM;
		goto done;
	}
	/* Changes at or past new_nblk are dropped: they are at the end. */
	for (size_t i = 0; i < nch; i++) {
		if (i > 0 && ch[i].blk < ch[i - 1].blk) {
			bm_fmt(msg, n, "index changes out of order: block %" PRIu64 " after %" PRIu64,
			       ch[i].blk, ch[i - 1].blk);
			rc = BM_EINVAL;
			goto done;
		}
		if (ch[i].blk < new_nblk)
			nuse = i + 1;
	}
	u->chsum = calloc(nuse + 1, 16);
	if (u->chsum == NULL) {
		rc = BM_ENOMEM;
		goto done;
	}
	for (size_t i = 0; i < nuse; i++) {
		if (ch[i].sum[0] != '\0' && hex_bin(ch[i].sum, u->chsum[i]) < 0) {
			bm_fmt(msg, n, "index change of block %" PRIu64 ": sum \"%.40s\" is not 32 lowercase hex digits",
			       ch[i].blk, ch[i].sum);
			rc = BM_EINVAL;
			goto done;
		}
	}
	u->ch = ch;
	u->new_nblk = new_nblk;
	u->st = st;
	if (new_nblk == 0)
		goto done;
	unsigned level = bm_index_depth(new_nblk) - 1;
	if ((rc = node_at_level(&u->old, level, &top)) < 0)
		goto done;
	if ((rc = update_node(u, level, 0, &top, 0, nuse, &present, out)) < 0)
		goto done;
	if (present)
		bin_hex(out, new_root);
done:
	if (u) {
		free(u->chsum);
		free(u->buf);
	}
	free(u);
	return rc;
}

/* ---- diff ------------------------------------------------------------------------ */

struct dctx {
	struct tree a, b;
	bm_index_range_fn emit;
	void *arg;
	uint64_t first, count;     /* the range being coalesced */
};

static int diff_emit(struct dctx *d, uint64_t blk)
{
	int rc = 0;
	if (d->count > 0 && d->first + d->count == blk) {
		d->count++;
		return 0;
	}
	if (d->count > 0)
		rc = d->emit(d->arg, d->first, d->count);
	d->first = blk;
	d->count = 1;
	return rc;
}

static int diff_node(struct dctx *d, unsigned level, uint64_t base, const struct node *na,
		     const struct node *nb)
{
	struct bm_ipage *pa = NULL, *pb = NULL;
	int rc = 0;

	if (na->kind == N_NONE && nb->kind == N_NONE)
		return 0;
	if (na->kind == N_PAGE && nb->kind == N_PAGE && memcmp(na->sum, nb->sum, 16) == 0)
		return 0; /* the same subtree */
	pa = bm_ipage_new();
	pb = bm_ipage_new();
	if (pa == NULL || pb == NULL) {
		rc = BM_ENOMEM;
		goto done;
	}
	if ((rc = load_page(&d->a, na, level, base, pa)) < 0 ||
	    (rc = load_page(&d->b, nb, level, base, pb)) < 0)
		goto done;
	unsigned i = 0, j = 0;
	while (i < pa->count || j < pb->count) {
		unsigned sa = i < pa->count ? pa->slot[i] : BM_IPAGE_FANOUT;
		unsigned sb = j < pb->count ? pb->slot[j] : BM_IPAGE_FANOUT;
		unsigned s = sa < sb ? sa : sb;
		uint64_t cb = base + (uint64_t)s * cspan(level);
		struct node ca = { .kind = N_NONE }, cbn = { .kind = N_NONE };
		if (sa == s)
			ca = child_of(&d->a, na, level, pa, i);
		if (sb == s)
			cbn = child_of(&d->b, nb, level, pb, j);
		if (level == 0) {
			if (ca.kind != cbn.kind || memcmp(ca.sum, cbn.sum, 16) != 0)
				rc = diff_emit(d, cb);
		} else {
			rc = diff_node(d, level - 1, cb, &ca, &cbn);
		}
		if (rc != 0)
			goto done;
		i += sa == s;
		j += sb == s;
	}
done:
	bm_ipage_free(pa);
	bm_ipage_free(pb);
	return rc;
}

int bm_index_diff(const struct bm_index_io *io, const struct bm_itree *a, const struct bm_itree *b,
		  bm_index_range_fn emit, void *arg, struct bm_index_stats *st, char *msg, size_t n)
{
	struct dctx d = { .emit = emit, .arg = arg };
	struct node na, nb;
	int rc;

	if ((rc = tree_init(&d.a, io, a, st, msg, n)) < 0 ||
	    (rc = tree_init(&d.b, io, b, st, msg, n)) < 0)
		return rc;
	unsigned level = d.a.root_level > d.b.root_level ? d.a.root_level : d.b.root_level;
	if ((rc = node_at_level(&d.a, level, &na)) < 0 || (rc = node_at_level(&d.b, level, &nb)) < 0)
		return rc;
	rc = diff_node(&d, level, 0, &na, &nb);
	if (rc == 0 && d.count > 0)
		rc = emit(arg, d.first, d.count);
	return rc;
}

/* ---- the keys of a tree ---------------------------------------------------------- */

/* A set of 16-byte sums: open addressing, at most half full. */
struct sumset {
	uint8_t (*v)[16];
	uint8_t *used;
	size_t cap, len;
};

static uint64_t sumset_hash(const uint8_t s[16])
{
	uint64_t h;
	memcpy(&h, s, 8); /* the sum is already uniform */
	return h;
}

/* Adds s: 1 if it was new, 0 if present, BM_ENOMEM. */
static int sumset_add(struct sumset *set, const uint8_t s[16])
{
	if (2 * (set->len + 1) > set->cap) {
		struct sumset bigger = { .cap = set->cap ? 2 * set->cap : 64 };
		bigger.v = malloc(bigger.cap * 16);
		bigger.used = calloc(bigger.cap, 1);
		if (bigger.v == NULL || bigger.used == NULL) {
			free(bigger.v);
			free(bigger.used);
			return BM_ENOMEM;
		}
		for (size_t i = 0; i < set->cap; i++)
			if (set->used[i])
				(void)sumset_add(&bigger, set->v[i]);
		free(set->v);
		free(set->used);
		*set = bigger;
	}
	size_t i = (size_t)sumset_hash(s) & (set->cap - 1);
	while (set->used[i]) {
		if (memcmp(set->v[i], s, 16) == 0)
			return 0;
		i = (i + 1) & (set->cap - 1);
	}
	set->used[i] = 1;
	memcpy(set->v[i], s, 16);
	set->len++;
	return 1;
}

struct kctx {
	struct tree t;
	struct sumset pages, blocks;
	bm_index_key_fn emit;
	void *arg;
};

static int keys_node(struct kctx *k, unsigned level, uint64_t base, const struct node *nd)
{
	char key[8 + BM_SUM_HEX + 1];
	struct bm_ipage *p;
	int rc;

	if ((rc = sumset_add(&k->pages, nd->sum)) <= 0)
		return rc; /* seen (a shared subtree) or no memory */
	memcpy(key, "index/", 6);
	bin_hex(nd->sum, key + 6);
	if ((rc = k->emit(k->arg, key)) == BM_INDEX_KNOWN)
		return 0; /* the caller has this subtree's keys */
	if (rc != 0)
		return rc;
	if ((p = bm_ipage_new()) == NULL)
		return BM_ENOMEM;
	if ((rc = load_page(&k->t, nd, level, base, p)) < 0)
		goto done;
	for (unsigned i = 0; i < p->count; i++) {
		if (level == 0) {
			if ((rc = sumset_add(&k->blocks, p->sum[i])) < 0)
				goto done;
			if (rc == 0)
				continue;
			memcpy(key, "blocks/", 7);
			bin_hex(p->sum[i], key + 7);
			if ((rc = k->emit(k->arg, key)) != 0 && rc != BM_INDEX_KNOWN)
				goto done;
		} else {
			struct node c = child_of(&k->t, nd, level, p, i);
			rc = keys_node(k, level - 1, base + (uint64_t)p->slot[i] * cspan(level), &c);
			if (rc != 0)
				goto done;
		}
	}
	rc = 0;
done:
	bm_ipage_free(p);
	return rc;
}

int bm_index_keys(const struct bm_index_io *io, const struct bm_itree *it, bm_index_key_fn emit,
		  void *arg, struct bm_index_stats *st, char *msg, size_t n)
{
	struct kctx k = { .emit = emit, .arg = arg };
	int rc;

	if ((rc = tree_init(&k.t, io, it, st, msg, n)) < 0)
		return rc;
	if (k.t.root.kind == N_PAGE)
		rc = keys_node(&k, k.t.root_level, 0, &k.t.root);
	free(k.pages.v);
	free(k.pages.used);
	free(k.blocks.v);
	free(k.blocks.used);
	return rc;
}

/* ---- upgrade from v1 --------------------------------------------------------------- */

int bm_index_from_v1(const struct bm_index_io *io, const struct bm_manifest *m,
		     char root[BM_SUM_HEX + 1], struct bm_index_stats *st, char *msg, size_t n)
{
	struct bm_index_change *ch;
	uint64_t nblk = bm_manifest_nblk(m);
	int rc;

	root[0] = '\0';
	ch = calloc(m->nblocks + 1, sizeof(*ch));
	if (ch == NULL)
		return BM_ENOMEM;
	for (size_t i = 0; i < m->nblocks; i++) {
		const struct bm_block *b = &m->blocks[i];
		if (strncmp(b->key, "blocks/", 7) != 0 || strcmp(b->key + 7, b->sum) != 0) {
			bm_fmt(msg, n,
			       "block %" PRIu64 " has key \"%s\", not blocks/<its sum>: a v2 index names "
			       "blocks by their sum alone",
			       b->index, b->key);
			free(ch);
			return BM_EFORMAT;
		}
		ch[i].blk = b->index;
		memcpy(ch[i].sum, b->sum, BM_SUM_HEX + 1);
	}
	const struct bm_itree empty = { .root = "" };
	rc = bm_index_update(io, &empty, ch, m->nblocks, nblk, root, st, msg, n);
	free(ch);
	return rc;
}
