/* blocks.c — where a block's bytes come from: the block table of a
 * generation in any format version (v1's list, the v2/v3 index tree
 * through ds->pages) and the verified fetch of one block of the published
 * generation, of pieces of a format 3 or 4 block (a Range GET of its
 * object, each piece checked against its piece sum: what a miss on a
 * dataset mapped in pieces loads), or of an object a pending change names
 * (changes.c).
 *
 * Owns: nothing of its own; it reads the handle's manifest.
 * Locking: ds->mu is taken only to copy what a lookup needs (key, sum,
 * length; a v2 root); pages are looked up and blocks fetched without it.
 * It calls no other file of the handle (dataset.c, changes.c, commit.c
 * call it).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bm_xxhash.h"

#include "index_load.h"
#include "internal.h"
#include "store.h"

/* ---- fetching one block ---------------------------------------------------- */

/* The sink of a block's body: hashed while hot, then stored into the
 * loadblk buffer (which may be a fresh RAM slot of virtmem's: filled with
 * vm_loadblk_write, never through the pointer), or with keep > 0 only
 * bytes [skip, skip + keep) of the block into a plain buffer (a read of a
 * part of it: the other bytes are hashed, never stored), or into the
 * page cache through a run of virtmem's (read-ahead over a flow: the
 * zeros past the bytes are vm_run_end's). */
struct block_sink {
	void *buf;
	vm_run *run;               /* not NULL: the bytes go to this run */
	size_t skip, keep;         /* keep > 0: buf holds bytes [skip, skip + keep) */
	size_t at;                 /* the answer's first byte is the block's byte at
				      (a part of a flat block: its Range starts there) */
	XXH3_state_t *xxh;         /* the bytes' xxh128 (format 1, 2) */
	struct bm_piece_hash *ph;  /* the xxh128 of their piece sums (format 3) */
	const char *sum;           /* expected sum; neither hash: not checked (flat) */
};

/* Stores bytes [off, off + len) of the block (data; NULL: zeros). */
static int sink_put(struct block_sink *b, size_t off, const void *data, size_t len)
{
	if (b->run != NULL)
		return data ? vm_run_write(b->run, off, data, len) : 0;
	if (b->keep == 0)
		return data ? vm_loadblk_write(b->buf, off, data, len) : vm_loadblk_zero(b->buf, off, len);
	size_t a = off > b->skip ? off : b->skip, end = off + len;
	size_t e = b->skip + b->keep < end ? b->skip + b->keep : end;
	if (a < e) {
		if (data)
			memcpy((char *)b->buf + (a - b->skip), (const char *)data + (a - off), e - a);
		else
			memset((char *)b->buf + (a - b->skip), 0, e - a);
	}
	return 0;
}

static int block_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct block_sink *b = arg;

	if (b->xxh) {
		if (off == 0)
			XXH3_128bits_reset(b->xxh); /* a retry starts over */
		bm_xxh3_128_update(b->xxh, data, len); /* while the data is hot */
	} else if (b->ph) {
		if (off == 0)
			bm_piece_hash_reset(b->ph);
		bm_piece_hash_update(b->ph, data, len);
	}
	return sink_put(b, b->at + (size_t)off, data, len);
}

static int block_verify(void *arg, char *msg, size_t n)
{
	struct block_sink *b = arg;
	char sum[BM_SUM_HEX + 1];

	if (b->xxh == NULL && b->ph == NULL)
		return 0;
	if (b->xxh)
		bm_sum_state_hex(b->xxh, sum);
	else
		bm_piece_hash_final(b->ph, sum);
	if (strcmp(sum, b->sum) != 0) {
		bm_fmt(msg, n, "checksum mismatch: bytes hash to %s, manifest says %s", sum, b->sum);
		return BM_ECHECKSUM;
	}
	return 0;
}

/* Where a block's bytes come from. */
struct block_source {
	bool flat, hole;
	unsigned pieces;           /* formats 3 and 4: sum is of its piece sums */
	size_t piece;              /* then the bytes of a piece */
	char key[BM_KEY_MAX + 1];
	char sum[BM_SUM_HEX + 1];
	size_t len;                /* object length */
	size_t visible;            /* bytes below the size the next commit publishes */
	char etag[BM_ETAG_SIZE];   /* flat: the object's ETag when opened */
	char last_modified[64];    /* flat: its Last-Modified */
	uint64_t total;            /* flat: its size */
};

/* Bytes of a block at off that stay visible after a shrink to
 * ds->trunc_size (the block's older bytes past it read as zeros). */
static size_t trunc_visible(const bm_dataset *ds, uint64_t off, size_t visible)
{
	if (off >= ds->trunc_size)
		return 0;
	return ds->trunc_size - off < visible ? (size_t)(ds->trunc_size - off) : visible;
}

/* ---- the block table of a generation ------------------------------------------ */

/* An index.c message names a page "index page <sum>": the URL instead
 * (index.h: the caller adds it), so that a hostile page is named where
 * it is.  The loader's own messages name it already. */
static void name_page(bm_dataset *ds, int rc, char *msg, size_t n)
{
	static const char pfx[] = "index page ";
	char inner[512];

	if (rc >= 0 || strncmp(msg, pfx, sizeof(pfx) - 1) != 0)
		return;
	snprintf(inner, sizeof(inner), "%s", msg + sizeof(pfx) - 1);
	bm_fmt(msg, n, "%s/index/%s", ds->url, inner);
}

/* bm_table_find, and with psum non-NULL a v3 block's piece sums
 * (bm_manifest_pieces(m) x 16 bytes). */
static int table_find(bm_dataset *ds, const struct bm_manifest *m, uint64_t blk,
		      char sum[BM_SUM_HEX + 1], char key[BM_KEY_MAX + 1], uint8_t *psum, char *msg,
		      size_t n)
{
	struct bm_index_io io;
	int rc;

	sum[0] = '\0';
	if (key)
		key[0] = '\0';
	if (m->version >= 2) {
		struct bm_itree t;
		bm_manifest_itree(m, &t);
		if (blk >= t.nblk || m->root[0] == '\0')
			return 0;
		bm_pages_io(ds->pages, &io);
		rc = bm_index_lookup(&io, &t, blk, sum, psum, NULL, msg, n);
		name_page(ds, rc, msg, n);
		if (rc == 1 && key)
			bm_key_block(key, sum);
		return rc;
	}
	pthread_mutex_lock(&ds->mu);
	const struct bm_block *b = m->blocks ? bm_manifest_find(m, blk) : NULL;
	if (b) {
		memcpy(sum, b->sum, BM_SUM_HEX + 1);
		if (key)
			snprintf(key, BM_KEY_MAX + 1, "%s", b->key);
	}
	pthread_mutex_unlock(&ds->mu);
	return b != NULL;
}

int bm_table_find(bm_dataset *ds, const struct bm_manifest *m, uint64_t blk,
		  char sum[BM_SUM_HEX + 1], char key[BM_KEY_MAX + 1], char *msg, size_t n)
{
	return table_find(ds, m, blk, sum, key, NULL, msg, n);
}

int bm_table_next(bm_dataset *ds, const struct bm_manifest *m, uint64_t from, uint64_t *blk,
		  char *msg, size_t n)
{
	struct bm_index_io io;
	int found = 0;

	if (m->version >= 2) {
		struct bm_itree t;
		bm_manifest_itree(m, &t);
		bm_pages_io(ds->pages, &io);
		int rc = bm_index_next(&io, &t, from, blk, NULL, msg, n);
		name_page(ds, rc, msg, n);
		return rc;
	}
	pthread_mutex_lock(&ds->mu);
	size_t i = bm_manifest_lower_bound(m, from);
	if (i < m->nblocks) {
		*blk = m->blocks[i].index;
		found = 1;
	}
	pthread_mutex_unlock(&ds->mu);
	return found;
}

int bm_table_diff(bm_dataset *ds, const struct bm_manifest *a, const struct bm_manifest *b,
		  bm_range_fn fn, void *arg, char *msg, size_t n)
{
	struct bm_index_io io;
	char sa[BM_SUM_HEX + 1], sb[BM_SUM_HEX + 1];
	uint64_t from = 0;
	int rc;

	if (a->version >= 2 && b->version >= 2) {
		struct bm_itree ta, tb;
		bm_manifest_itree(a, &ta);
		bm_manifest_itree(b, &tb);
		bm_pages_io(ds->pages, &io);
		rc = bm_index_diff(&io, &ta, &tb, fn, arg, NULL, msg, n);
		name_page(ds, rc, msg, n);
		return rc;
	}
	/* A v1 list on either side: a merge of the stored blocks of both. */
	for (;;) {
		uint64_t ia, ib;
		if ((rc = bm_table_next(ds, a, from, &ia, msg, n)) < 0)
			return rc;
		if (rc == 0)
			ia = UINT64_MAX;
		if ((rc = bm_table_next(ds, b, from, &ib, msg, n)) < 0)
			return rc;
		if (rc == 0)
			ib = UINT64_MAX;
		uint64_t i = ia < ib ? ia : ib;
		if (i == UINT64_MAX)
			return 0;
		if ((rc = bm_table_find(ds, a, i, sa, NULL, msg, n)) < 0 ||
		    (rc = bm_table_find(ds, b, i, sb, NULL, msg, n)) < 0)
			return rc;
		if (strcmp(sa, sb) != 0 && (rc = fn(arg, i, 1)) != 0)
			return rc;
		from = i + 1;
	}
}

/* ---- where a block comes from --------------------------------------------------- */

/* Looks block index up in the published manifest.  A v2 generation's
 * tree is walked without ds->mu (pages may be fetched): on its copy of the
 * root, which stays valid (pages are immutable).  With psum non-NULL
 * (src->pieces x 16 bytes: BM_PIECES_MAX x 16 will do) a v3 block's piece
 * sums too, checked against its sum and length. */
static int find_source(bm_dataset *ds, uint64_t index, struct block_source *src, uint8_t *psum,
		       char *msg, size_t n)
{
	size_t bs = ds->blksize;
	uint64_t off = index * bs;

	memset(src, 0, sizeof(*src));
	src->hole = true;
	pthread_mutex_lock(&ds->mu);
	src->flat = ds->flat;
	src->len = bm_manifest_objlen(ds->manifest, index);
	src->visible = off >= ds->new_size ? 0 : (ds->new_size - off < src->len ? (size_t)(ds->new_size - off) : src->len);
	const struct bm_block *b = src->flat ? NULL : bm_manifest_find(ds->manifest, index);
	if (b != NULL) {
		snprintf(src->key, sizeof(src->key), "%s", b->key);
		memcpy(src->sum, b->sum, sizeof(src->sum));
		src->hole = false;
		src->visible = trunc_visible(ds, off, src->visible);
	}
	snprintf(src->etag, sizeof(src->etag), "%s", ds->etag);
	snprintf(src->last_modified, sizeof(src->last_modified), "%s", ds->last_modified);
	src->total = ds->manifest->size;
	/* v2: the root and size of the tree, copied (a refresh may swap the
	 * manifest once the lock is dropped). */
	struct bm_manifest tree = { .version = 0 };
	if (!src->flat && ds->manifest->version >= 2) {
		tree.version = ds->manifest->version;
		src->pieces = bm_manifest_pieces(ds->manifest);
		src->piece = bm_manifest_piece(ds->manifest);
		tree.blksize = ds->manifest->blksize;
		tree.piece = ds->manifest->piece;
		tree.size = ds->manifest->size;
		memcpy(tree.root, ds->manifest->root, sizeof(tree.root));
	}
	pthread_mutex_unlock(&ds->mu);
	if (tree.version >= 2) {
		int rc = table_find(ds, &tree, index, src->sum, src->key, src->pieces ? psum : NULL, msg,
				    n);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			src->hole = false;
			src->visible = trunc_visible(ds, off, src->visible);
			if (psum && src->pieces &&
			    (rc = bm_pieces_check(src->sum, psum, src->pieces, src->piece, src->len, msg,
						  n)) < 0)
				return rc;
		}
	}
	return 0;
}

/* A flat object's block 0 from the open (ds->first), taken by the first
 * load of block 0; NULL when gone. */
static char *take_first(bm_dataset *ds, size_t *lenp)
{
	pthread_mutex_lock(&ds->mu);
	char *first = ds->first;
	*lenp = ds->first_len;
	ds->first = NULL;
	pthread_mutex_unlock(&ds->mu);
	return first;
}

/* A block's fetch in parts (fetch_begin, the GET, fetch_end): what
 * fetch_source does in one call, and bm_block_fetch_* for blocks fetched
 * together (a flow: reads.c). */
struct bm_block_fetch {
	uint64_t index;
	void *buf;
	vm_run *run;               /* not NULL: the bytes go there, not to buf */
	size_t bs, len;
	size_t skip, keep;         /* keep > 0: buf gets bytes [skip, skip + keep) */
	struct block_source src;
	struct block_sink sink;
	struct bm_version pin;
	struct bm_get g;
	const char *key;           /* NULL: no GET (bytes of the open) */
	char msg[512];
};

/* Prepares the fetch of f->src (f->index, f->buf and f->bs set: virtmem's
 * block of a flat object, else the dataset's block): 1 with f->key and
 * f->g the GET to send, 2 when the bytes are in f->buf already (block 0
 * of a flat object, from the open), 0 when done without a request (a
 * hole, or past the end: zeros), BM_ENOMEM.  1 and 2 end with fetch_end. */
static int fetch_begin(bm_dataset *ds, struct bm_block_fetch *f)
{
	const struct block_source *src = &f->src;
	size_t first_len = 0;
	char *first;

	f->sink = (struct block_sink){ .buf = f->buf, .run = f->run, .skip = f->skip, .keep = f->keep, .sum = src->sum };
	f->g = (struct bm_get){ .sink = block_sink, .sink_arg = &f->sink, .verify = block_verify };
	f->pin = (struct bm_version){ .size = src->total };
	f->len = src->len;
	f->key = NULL;
	if (f->len == 0 || src->visible == 0 || (!src->flat && src->hole)) {
		/* A hole, or past the end: zeros without a request. */
		if (sink_put(&f->sink, 0, NULL, f->bs) < 0)
			return BM_ENOMEM;
		atomic_fetch_add(&ds->c.hole_blocks, 1);
		return 0;
	}
	if (src->flat && f->index == 0 && (first = take_first(ds, &first_len)) != NULL) {
		/* Block 0's bytes came with the open. */
		int rc = sink_put(&f->sink, 0, first, first_len) < 0 ? BM_ENOMEM : 2;
		free(first);
		f->len = first_len;
		return rc;
	}
	if (src->flat) {
		/* A range of the object, which must still be the version
		 * opened.  For a part of the block (a bm_read), only the
		 * bytes asked for: a flat object has no sum that would need
		 * the rest to check them. */
		size_t from = 0, to = f->len;
		if (f->keep > 0) {
			from = f->skip;
			to = f->skip + f->keep < src->visible ? f->skip + f->keep : src->visible;
			if (from >= to) { /* past what is visible: zeros */
				if (sink_put(&f->sink, 0, NULL, f->bs) < 0)
					return BM_ENOMEM;
				atomic_fetch_add(&ds->c.hole_blocks, 1);
				return 0;
			}
		}
		f->sink.at = from;
		f->len = to - from;
		f->g.range = true;
		f->g.off = f->index * f->bs + from;
		f->g.len = f->len;
		snprintf(f->pin.etag, sizeof(f->pin.etag), "%s", src->etag);
		snprintf(f->pin.last_modified, sizeof(f->pin.last_modified), "%s", src->last_modified);
		f->g.pin = &f->pin;
		f->key = "";
		return 1;
	}
	f->g.max = f->len;
	f->g.exact = true;
	if (src->pieces > 0)
		f->sink.ph = bm_piece_hash_new(src->pieces, src->piece);
	else
		f->sink.xxh = XXH3_createState();
	if (f->sink.xxh == NULL && f->sink.ph == NULL)
		return BM_ENOMEM;
	f->key = src->key;
	return 1;
}

/* Ends a fetch fetch_begin prepared (1 or 2), whose GET ended with rc
 * (f->msg its message); with log, a failure is also reported on stderr. */
static int fetch_end(bm_dataset *ds, struct bm_block_fetch *f, int rc, bool log)
{
	XXH3_freeState(f->sink.xxh);
	bm_piece_hash_free(f->sink.ph);
	f->sink.xxh = NULL;
	f->sink.ph = NULL;
	if (rc < 0) {
		bm_set_error(ds, rc, "block %" PRIu64 ": %s", f->index, f->msg);
		if (log) /* the one line a failed fault gets (virtmem adds none) */
			bm_log("%s: block %" PRIu64 " not loaded, the access gets SIGBUS: %s", ds->url,
			       f->index, f->msg);
		return rc;
	}
	/* Bytes past the object, or past a size shrunk since, read as zeros. */
	if (f->src.visible < f->bs && sink_put(&f->sink, f->src.visible, NULL, f->bs - f->src.visible) < 0)
		return BM_ENOMEM;
	atomic_fetch_add(&ds->c.fetched_blocks, 1);
	atomic_fetch_add(&ds->c.fetched_bytes, f->len);
	return 0;
}

/* Fetches and verifies src into buf (bs bytes: virtmem's block of a flat
 * object, else the dataset's block; zeros past what is visible; with keep
 * > 0 only bytes [skip, skip + keep) of it, into a plain buf).  With log,
 * a failure is also reported on stderr. */
static int fetch_source(bm_dataset *ds, uint64_t index, const struct block_source *src, void *buf,
			size_t bs, size_t skip, size_t keep, bool log)
{
	struct bm_block_fetch f = { .index = index, .buf = buf, .bs = bs, .skip = skip, .keep = keep,
				    .src = *src };
	int rc = fetch_begin(ds, &f);

	if (rc == 1)
		rc = bm_store_get(ds->store, f.key, &f.g, f.msg, sizeof(f.msg));
	else if (rc == 2)
		rc = 0;
	else
		return rc;
	return fetch_end(ds, &f, rc, log);
}

/* find_source then fetch_source; a failure to find the block (its index
 * page) is reported like one to fetch it. */
static int find_fetch(bm_dataset *ds, uint64_t index, void *buf, size_t skip, size_t keep, bool log)
{
	struct block_source src;
	char msg[512];
	int rc = find_source(ds, index, &src, NULL, msg, sizeof(msg));

	if (rc < 0) {
		bm_set_error(ds, rc, "block %" PRIu64 ": %s", index, msg);
		if (log)
			bm_log("%s: block %" PRIu64 " not loaded, the access gets SIGBUS: %s", ds->url,
			       index, msg);
		return rc;
	}
	return fetch_source(ds, index, &src, buf, ds->blksize, skip, keep, log);
}

int bm_fetch_block(bm_dataset *ds, uint64_t index, void *buf, bool log)
{
	return find_fetch(ds, index, buf, 0, 0, log);
}

int bm_fetch_block_part(bm_dataset *ds, uint64_t index, size_t in, size_t len, void *buf)
{
	bm_assert(len >= 1 && in + len <= ds->blksize);
	return find_fetch(ds, index, buf, in, len, false);
}

/* bm_block_fetch_begin into buf, or into run (buf NULL). */
static int block_fetch_begin(bm_dataset *ds, uint64_t index, void *buf, vm_run *run,
			     struct bm_block_fetch **fp, const char **keyp, struct bm_get **gp,
			     char **msgp, size_t *np)
{
	struct bm_block_fetch *f = calloc(1, sizeof(*f));
	int rc;

	*fp = NULL;
	if (f == NULL)
		return BM_ENOMEM;
	*f = (struct bm_block_fetch){ .index = index, .buf = buf, .run = run, .bs = ds->blksize };
	if ((rc = find_source(ds, index, &f->src, NULL, f->msg, sizeof(f->msg))) < 0) {
		bm_set_error(ds, rc, "block %" PRIu64 ": %s", index, f->msg);
		free(f);
		return rc;
	}
	if ((rc = fetch_begin(ds, f)) == 2)
		rc = fetch_end(ds, f, 0, false);
	if (rc != 1) {
		free(f);
		return rc;
	}
	*fp = f;
	*keyp = f->key;
	*gp = &f->g;
	*msgp = f->msg;
	*np = sizeof(f->msg);
	return 1;
}

int bm_block_fetch_begin(bm_dataset *ds, uint64_t index, void *buf, struct bm_block_fetch **fp,
			 const char **keyp, struct bm_get **gp, char **msgp, size_t *np)
{
	return block_fetch_begin(ds, index, buf, NULL, fp, keyp, gp, msgp, np);
}

int bm_block_fetch_begin_run(bm_dataset *ds, uint64_t index, vm_run *run, struct bm_block_fetch **fp,
			     const char **keyp, struct bm_get **gp, char **msgp, size_t *np)
{
	return block_fetch_begin(ds, index, NULL, run, fp, keyp, gp, msgp, np);
}

size_t bm_block_fetch_bytes(const struct bm_block_fetch *f)
{
	return f->len < f->src.visible ? f->len : f->src.visible;
}

int bm_block_fetch_end(bm_dataset *ds, struct bm_block_fetch *f, int rc)
{
	rc = fetch_end(ds, f, rc, false);
	free(f);
	return rc;
}

void bm_block_fetch_drop(struct bm_block_fetch *f)
{
	XXH3_freeState(f->sink.xxh);
	bm_piece_hash_free(f->sink.ph);
	free(f);
}

/* ---- pieces of a format 3 block ---------------------------------------------------- */

/* The sink of a Range GET of pieces [p0, p0 + n) of a block: each piece
 * hashed as it arrives (a piece hash of n pieces), the bytes written to
 * buf (vm_loadblk_write: a loadblk's RAM slot, or a read-ahead run's
 * plain buffer); at the end each piece is checked against its sum.  A
 * plain buf may keep only bytes [skip, skip + keep) of the pieces (a read
 * of a range inside them: the others are hashed, never stored). */
struct piece_sink {
	void *buf;
	bool plain;                /* buf is a plain buffer (memcpy) */
	size_t skip, keep;         /* plain: buf holds bytes [skip, skip + keep) */
	struct bm_piece_hash *ph;
	const uint8_t *psum;       /* the block's piece sums */
	unsigned p0;               /* the first piece */
};

static int piece_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct piece_sink *p = arg;

	if (off == 0) /* a retry starts over */
		bm_piece_hash_reset(p->ph);
	if (p->plain) {
		uint64_t a = off > p->skip ? off : p->skip, end = off + len;
		uint64_t b = p->skip + p->keep < end ? p->skip + p->keep : end;
		if (a < b)
			memcpy((char *)p->buf + (a - p->skip), (const char *)data + (a - off), b - a);
	} else if (vm_loadblk_write(p->buf, (size_t)off, data, len) < 0)
		return -ENOMEM;
	bm_piece_hash_update(p->ph, data, len); /* while the data is hot */
	return 0;
}

static int piece_verify(void *arg, char *msg, size_t n)
{
	struct piece_sink *p = arg;

	return bm_piece_hash_check(p->ph, p->psum, p->p0, msg, n);
}

/* Block obj's pieces [p0, p0 + n) into buf (plain: a plain buffer that
 * gets only their bytes [skip, skip + keep)), with one Range GET of its
 * object, each piece checked.  *lenp: the bytes of the pieces that hold
 * data (0: a hole, or past what is visible); buf past them is not
 * written.  msg says what failed, without the block number. */
static int fetch_pieces(bm_dataset *ds, uint64_t obj, unsigned p0, unsigned n, void *buf,
			bool plain, size_t skip, size_t keep, size_t *lenp, char *msg, size_t msgn)
{
	struct block_source src;
	uint8_t *psum = malloc((size_t)BM_PIECES_MAX * 16);
	int rc;

	*lenp = 0;
	if (psum == NULL)
		return BM_ENOMEM;
	if ((rc = find_source(ds, obj, &src, psum, msg, msgn)) < 0)
		goto done;
	size_t piece = bm_ds_piece(ds), from = (size_t)p0 * piece;
	/* Pieces of a hole, or past what the next commit shows: zeros. */
	if (src.hole || src.visible <= from)
		goto done;
	size_t len = src.len - from < (size_t)n * piece ? src.len - from : (size_t)n * piece;
	struct piece_sink sink = { .buf = buf, .plain = plain, .skip = skip, .keep = keep,
				   .psum = psum, .p0 = p0 };
	struct bm_get g = { .range = true, .off = from, .len = len, .sink = piece_sink,
			    .sink_arg = &sink, .verify = piece_verify };
	if ((sink.ph = bm_piece_hash_new(n, piece)) == NULL) {
		rc = BM_ENOMEM;
		goto done;
	}
	rc = bm_store_get(ds->store, src.key, &g, msg, msgn);
	bm_piece_hash_free(sink.ph);
	if (rc == 0)
		*lenp = src.visible - from < len ? src.visible - from : len;
done:
	free(psum);
	return rc;
}

int bm_load_vmblock(bm_dataset *ds, uint64_t blk, void *buf, bool log)
{
	size_t bs = ds->file.blksize, len = 0;
	char msg[512];

	if (ds->vm_per_blk <= 1) { /* the block itself */
		struct block_source src;
		int rc = find_source(ds, blk, &src, NULL, msg, sizeof(msg));
		if (rc == 0)
			return fetch_source(ds, blk, &src, buf, bs, 0, 0, log);
		bm_set_error(ds, rc, "block %" PRIu64 ": %s", blk, msg);
		if (log)
			bm_log("%s: block %" PRIu64 " not loaded, the access gets SIGBUS: %s", ds->url, blk,
			       msg);
		return rc;
	}
	uint64_t obj = blk / ds->vm_per_blk;
	unsigned piece = (unsigned)(blk % ds->vm_per_blk);
	int rc = fetch_pieces(ds, obj, piece, 1, buf, false, 0, 0, &len, msg, sizeof(msg));
	if (rc < 0) {
		bm_set_error(ds, rc, "block %" PRIu64 " piece %u: %s", obj, piece, msg);
		if (log) /* the one line a failed fault gets (virtmem adds none) */
			bm_log("%s: block %" PRIu64 " piece %u not loaded, the access gets SIGBUS: %s",
			       ds->url, obj, piece, msg);
		return rc;
	}
	if (len < bs && vm_loadblk_zero(buf, len, bs - len) < 0)
		return BM_ENOMEM;
	atomic_fetch_add(len ? &ds->c.fetched_blocks : &ds->c.hole_blocks, 1);
	atomic_fetch_add(&ds->c.fetched_bytes, len);
	return 0;
}

int bm_fetch_pieces(bm_dataset *ds, uint64_t first, size_t n, char *buf, size_t *lenp, char *msg,
		    size_t msgn)
{
	uint64_t obj = first / ds->vm_per_blk;
	unsigned p0 = (unsigned)(first % ds->vm_per_blk);

	bm_assert(ds->vm_per_blk > 1 && n >= 1 && p0 + n <= ds->vm_per_blk);
	return fetch_pieces(ds, obj, p0, (unsigned)n, buf, true, 0, n * bm_ds_piece(ds), lenp, msg,
			    msgn);
}

int bm_fetch_pieces_part(bm_dataset *ds, uint64_t index, size_t in, size_t len, char *buf,
			 size_t *lenp, char *msg, size_t msgn)
{
	unsigned pieces = bm_ds_pieces(ds);
	size_t piece = bm_ds_piece(ds), p0 = in / piece, p1 = (in + len - 1) / piece;

	bm_assert(pieces > 1 && len >= 1 && in + len <= ds->blksize);
	return fetch_pieces(ds, index, (unsigned)p0, (unsigned)(p1 - p0 + 1), buf, true,
			    in - p0 * piece, len, lenp, msg, msgn);
}

int bm_fetch_object(bm_dataset *ds, uint64_t index, const char *key, const char *sum, size_t len,
		    bool before_shrink, void *buf)
{
	struct block_source src = { .hole = key == NULL, .len = len, .visible = len };

	if (before_shrink) {
		pthread_mutex_lock(&ds->mu);
		src.visible = trunc_visible(ds, index * ds->blksize, len);
		pthread_mutex_unlock(&ds->mu);
	}
	if (key != NULL) {
		snprintf(src.key, sizeof(src.key), "%s", key);
		snprintf(src.sum, sizeof(src.sum), "%s", sum);
		src.pieces = bm_ds_pieces(ds); /* a change's sum is in its format's kind */
		src.piece = bm_ds_piece(ds);
	}
	return fetch_source(ds, index, &src, buf, ds->blksize, 0, 0, false);
}

uint64_t bm_table_count(bm_dataset *ds, const struct bm_manifest *m)
{
	uint64_t count = 0, blk, from = 0;
	char msg[300];

	while (bm_table_next(ds, m, from, &blk, msg, sizeof(msg)) == 1) {
		count++;
		from = blk + 1;
	}
	return count;
}

uint64_t bm_nblocks_stored(const bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;
	if (m->version < 2)
		return m->nblocks;
	return m->stored != UINT64_MAX ? m->stored : bm_table_count((bm_dataset *)ds, m);
}
