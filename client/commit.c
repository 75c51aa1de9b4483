/* commit.c — the commit protocol (docs/FORMAT.md, "Commit"): dirty pages
 * written out into changes, the edges of a resize, the next generation's
 * manifest (formats 2 and 3: its index pages, PUT in parallel through the
 * upload queue; a v1 dataset upgraded to 2), gc's check, the manifest compare-and-swap
 * and the kept generation.
 *
 * Dirty pages reach the change list through virtmem's writeout (storeblk,
 * dataset.c -> changes.c), whose blocks upload.c PUTs in parallel while
 * the writeout goes on.  Calls changes.c, upload.c and blocks.c; nothing
 * below calls it.
 * Owns: no state of its own: it moves the handle (ds->manifest, ds->etag,
 * ds->manifest_json; refresh in dataset.c does too) to what it published.
 * Locking: ds->mu, taken briefly to read the change list and to publish;
 * never across a request.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "index_load.h"
#include "internal.h"
#include "gcmark.h"
#include "store.h"

/* ---- gc's check (gcmark.c) ------------------------------------------------------ */

struct commit_objects {
	bm_dataset *ds;
	const struct bm_manifest *next;
	bm_gc_visit_fn visit;
	void *varg;
};

/* Format 2: the pages of the next generation's tree (those it shares
 * with the last one are named by that one, but a gc may have dropped it
 * meanwhile if it was not the latest: check them all). */
static int page_key(void *arg, const char *key)
{
	struct commit_objects *c = arg;
	int rc = strncmp(key, "index/", 6) == 0 ? c->visit(c->varg, key) : 0;
	return rc > 0 ? 0 : rc; /* never BM_INDEX_KNOWN: every page is checked */
}

/* The objects this commit names that it uploaded or reused: its blocks,
 * and in formats 2 and 3 its index pages.  Only called after a gc overlapped
 * the commit (bm_gc_guard_check). */
static int commit_keys(void *arg, bm_gc_visit_fn visit, void *varg)
{
	struct commit_objects *c = arg;
	bm_dataset *ds = c->ds;
	int rc = bm_changes_keys(ds, visit, varg);

	if (rc == 0 && c->next->version >= 2 && c->next->root[0] != '\0') {
		struct bm_index_io io;
		struct bm_itree t;
		char msg[512];
		c->visit = visit;
		c->varg = varg;
		bm_pages_io(ds->pages, &io);
		bm_manifest_itree(c->next, &t);
		rc = bm_index_keys(&io, &t, page_key, c, NULL, msg, sizeof(msg));
		if (rc < 0 && rc != BM_ECONFLICT)
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
	}
	return rc;
}

/* ---- the commit ------------------------------------------------------------------ */

/* True when manifest.json on the server holds exactly json; sets etag (if
 * not NULL) to its ETag then.  Used where ETags cannot tell: a swap whose
 * answer was lost and whose retry got 412 did publish if the retry found
 * our own manifest; a swap answered without an ETag learns its ETag only
 * if the manifest is still ours. */
static bool server_manifest_is(bm_dataset *ds, const char *json, size_t len, char *etag, size_t etagn)
{
	struct bm_version v;
	char msg[512], *got = NULL;
	size_t glen = 0;
	bool same = bm_store_get_all(ds->store, BM_KEY_MANIFEST, BM_MANIFEST_MAX, &got, &glen, &v,
				     msg, sizeof(msg)) == 0 &&
		    glen == len && memcmp(got, json, len) == 0;

	if (same && etag)
		snprintf(etag, etagn, "%s", v.etag);
	free(got);
	return same;
}

static int conflict(bm_dataset *ds, const char *fmt, const char *detail)
{
	atomic_fetch_add(&ds->c.conflicts, 1);
	bm_set_error(ds, BM_ECONFLICT, fmt, ds->url, detail);
	return BM_ECONFLICT;
}

/* Step 1: has someone published since we opened? */
static int check_still_latest(bm_dataset *ds)
{
	struct bm_version v;
	char msg[512];
	int rc = bm_store_head(ds->store, BM_KEY_MANIFEST, &v, msg, sizeof(msg));

	if (rc < 0 && rc != BM_ENOTFOUND) {
		bm_set_error(ds, rc, "%s", msg);
		return rc;
	}
	if (!ds->exists && rc == 0)
		return conflict(ds, "%s: %s", "another writer created the dataset first");
	if (ds->exists && rc == BM_ENOTFOUND)
		return conflict(ds, "%s: %s", "the dataset was deleted on the server");
	/* Weakly compared: a server may send W/"x" for a second after a
	 * change and "x" afterwards for the same version (Apache).  The swap
	 * (step 4) is the real check. */
	if (ds->exists && ds->etag[0] && v.etag[0] && !bm_etag_same(ds->etag, v.etag))
		return conflict(ds, "%s: %s", "another writer published a new generation since this one was opened");
	if (ds->exists && ds->etag[0] == '\0' && ds->manifest_json) {
		/* No ETag to compare (the server sends none): compare bytes. */
		if (!server_manifest_is(ds, ds->manifest_json, ds->manifest_json_len, NULL, 0))
			return conflict(ds, "%s: %s", "the manifest on the server is not the one this handle opened");
	}
	return 0;
}

/* PUTs body at key with If-None-Match: * (a kept generation), never over
 * an object there; a failure is only logged. */
static int put_once(bm_dataset *ds, const char *key, const char *body, size_t len)
{
	struct bm_version v;
	char msg[512];

	/* A store that ignores If-None-Match would replace what is there. */
	if (!(bm_store_caps(ds->store) & BM_CAP_CREATE_EXCL) &&
	    bm_store_head(ds->store, key, &v, msg, sizeof(msg)) == 0)
		return 0;
	int rc = bm_put_immutable(ds->store, key, body, len, false, msg, sizeof(msg));
	if (rc < 0)
		bm_log("warning: %s", msg);
	return rc;
}

/* Step 2: make sure the generation we build on is kept (a writer may have
 * crashed between its swap and its gen/ PUT). */
static void keep_generation(bm_dataset *ds)
{
	char key[BM_KEY_GEN_SIZE], msg[512];
	struct bm_version v;

	if (!ds->exists || ds->manifest_json == NULL)
		return;
	bm_key_gen(key, ds->manifest->generation);
	if (bm_store_head(ds->store, key, &v, msg, sizeof(msg)) == BM_ENOTFOUND)
		put_once(ds, key, ds->manifest_json, ds->manifest_json_len);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The indexes of the blocks written since the last shrink, sorted: *np of
 * them, malloc'd (NULL: out of memory).  One snapshot, searched per block,
 * instead of a scan of every change per block. */
static uint64_t *written_since_shrink(bm_dataset *ds, size_t *np)
{
	pthread_mutex_lock(&ds->mu);
	uint64_t *v = malloc((ds->nchanges + 1) * sizeof(*v));
	size_t n = 0;
	for (size_t c = 0; v && c < ds->nchanges; c++)
		if (ds->changes[c].seq >= ds->trunc_seq)
			v[n++] = ds->changes[c].index;
	pthread_mutex_unlock(&ds->mu);
	if (v)
		qsort(v, n, sizeof(*v), cmp_u64);
	*np = n;
	return v;
}

static bool written(const uint64_t *v, size_t n, uint64_t idx)
{
	return bsearch(&idx, v, n, sizeof(*v), cmp_u64) != NULL;
}

/* A shrink then a grow before this commit: the bytes between the cut and
 * the new size are zeros in the next generation.  The block holding the
 * cut is rewritten (its bytes past the cut read as zeros); the published
 * blocks past it become holes, unless written since. */
static int apply_truncation(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;
	size_t bs = m->blksize;
	uint64_t cut = ds->trunc_size, nblk = (ds->new_size + bs - 1) / bs, idx;
	int rc = 0;

	if (cut >= ds->new_size)
		return 0; /* not grown past the cut: the size hides the rest */
	size_t nw;
	uint64_t *w = written_since_shrink(ds, &nw); /* the hole changes below add none that matter */
	char *buf = calloc(1, bs);
	if (buf == NULL || w == NULL) {
		free(buf);
		free(w);
		return BM_ENOMEM;
	}
	if (cut % bs != 0 && !written(w, nw, cut / bs)) {
		idx = cut / bs;
		uint64_t left = ds->new_size - idx * bs;
		rc = bm_fetch_pending(ds, idx, buf);
		if (rc == 0)
			rc = bm_change_block(ds, idx, buf, left < bs ? (size_t)left : bs, false);
		memset(buf, 0, bs);
	}
	for (uint64_t from = (cut + bs - 1) / bs; rc == 0 && from < nblk; from = idx + 1) {
		char msg[512];
		rc = bm_table_next(ds, m, from, &idx, msg, sizeof(msg)); /* the next stored block */
		if (rc < 0) {
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
			break;
		}
		if (rc == 0 || idx >= nblk) {
			rc = 0;
			break;
		}
		rc = 0;
		if (!written(w, nw, idx)) {
			uint64_t left = ds->new_size - idx * bs;
			rc = bm_change_block(ds, idx, buf, left < bs ? (size_t)left : bs, false); /* a hole */
		}
	}
	free(buf);
	free(w);
	return rc;
}

/* Resizing changes the length of the old and the new last block: their
 * objects are rewritten unless the commit rewrites them anyway. */
static int rewrite_edge_blocks(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;
	size_t bs = m->blksize;
	uint64_t edges[2] = { bm_manifest_nblk(m), (ds->new_size + bs - 1) / bs };
	int rc = 0;

	if (ds->new_size == m->size)
		return 0;
	char *buf = malloc(bs);
	if (buf == NULL)
		return BM_ENOMEM;
	for (int i = 0; i < 2 && rc == 0; i++) {
		if (edges[i] == 0)
			continue;
		uint64_t idx = edges[i] - 1;
		uint64_t left = ds->new_size > idx * bs ? ds->new_size - idx * bs : 0;
		size_t newlen = left < bs ? (size_t)left : bs;
		bool changed = false;
		char sum[BM_SUM_HEX + 1], msg[512];
		pthread_mutex_lock(&ds->mu);
		for (size_t c = 0; c < ds->nchanges; c++)
			changed |= ds->changes[c].index == idx;
		pthread_mutex_unlock(&ds->mu);
		if (changed || newlen == 0 || bm_manifest_objlen(m, idx) == newlen)
			continue;
		rc = bm_table_find(ds, m, idx, sum, NULL, msg, sizeof(msg));
		if (rc < 0) {
			bm_set_error(ds, rc, "%s: %s", ds->url, msg);
			break;
		}
		if (rc == 0)
			continue; /* a hole stays one */
		rc = bm_fetch_block(ds, idx, buf, false);
		if (rc == 0)
			rc = bm_change_block(ds, idx, buf, newlen, false);
	}
	free(buf);
	return rc;
}

static void hook(bm_dataset *ds, const char *stage)
{
	if (ds->opt.commit_hook)
		ds->opt.commit_hook(stage, ds->opt.commit_hook_arg);
}

/* A store that would not refuse a lost race (it ignores If-Match or
 * If-None-Match: nginx) gets the manifest compared just before the swap:
 * only a writer publishing within that one round trip goes unseen, not
 * one publishing during the uploads. */
static int still_the_one_read(bm_dataset *ds)
{
	struct bm_version v;
	char msg[512];

	if (ds->exists && !server_manifest_is(ds, ds->manifest_json, ds->manifest_json_len, NULL, 0))
		return conflict(ds, "%s: %s", "another writer published a new generation since this one was opened");
	if (!ds->exists && bm_store_head(ds->store, BM_KEY_MANIFEST, &v, msg, sizeof(msg)) != BM_ENOTFOUND)
		return conflict(ds, "%s: %s", "another writer created the dataset first");
	return 0;
}

/* Step 4: the compare-and-swap of manifest.json.  Sets new_etag, and
 * *superseded when the swap published but another writer's manifest was
 * there already when we asked for our ETag. */
static int swap_manifest(bm_dataset *ds, const char *json, size_t len, char *new_etag, size_t etagn,
			 bool *superseded)
{
	struct bm_version v;
	struct bm_put p = {
		.cond = !ds->exists ? BM_PUT_IF_NONE : ds->etag[0] ? BM_PUT_IF_MATCH : BM_PUT_ANY,
		.etag = ds->etag,
		.was = ds->manifest_json,
		.was_len = ds->manifest_json_len,
		.swap = true,
	};
	char msg[512];
	int rc;

	*superseded = false;
	if (!(bm_store_caps(ds->store) & (ds->exists ? BM_CAP_REPLACE_MATCH : BM_CAP_CREATE_EXCL)) &&
	    (rc = still_the_one_read(ds)) < 0)
		return rc;
	rc = bm_store_put(ds->store, BM_KEY_MANIFEST, json, len, &p, &v, msg, sizeof(msg));
	if (rc == BM_ECONFLICT) {
		if (server_manifest_is(ds, json, len, new_etag, etagn))
			return 0;
		return conflict(ds, "%s: %s", "another writer published first (the manifest changed)");
	}
	if (rc < 0) {
		bm_set_error(ds, rc, "%s", msg);
		return rc;
	}
	hook(ds, "manifest-put");
	snprintf(new_etag, etagn, "%s", v.etag);
	/* The server did not say: ask, and take the answer only if the
	 * manifest there is still ours.  Another writer's ETag taken for ours
	 * would let our next commit overwrite it. */
	if (v.etag[0] == '\0' && !server_manifest_is(ds, json, len, new_etag, etagn))
		*superseded = true;
	return 0;
}

/* ---- the next generation's manifest ------------------------------------------------ */

/* The format version the next generation is written in (docs/FORMAT.md,
 * "Version 3", "Commit (version 3)", "Version 4"): a new dataset is
 * created in 4 when it gets pieces of another size than 64 KiB (by
 * default 16 KiB ones when its blocks are larger than 64 KiB:
 * bm_piece_option, checked at open), else in 3 when its blocks are larger
 * than a 64 KiB piece (its options asked for those), else in 2; a v2, v3 or v4 dataset
 * stays in its version, with its pieces (its sums would all change); a v1 dataset
 * is upgraded to 2 (said once on stderr), unless one of its blocks has a
 * key other than blocks/<sum> (written by another tool): v2 cannot name
 * it, so it stays 1.  ds->mu held. */
static unsigned next_version_locked(bm_dataset *ds)
{
	const struct bm_manifest *m = ds->manifest;

	if (!ds->exists) {
		if (bm_piece_option(&ds->opt, m->blksize) != 0)
			return 4;
		return m->blksize > BM_PIECE_SIZE ? 3 : 2;
	}
	if (m->version >= 2)
		return m->version;
	for (size_t i = 0; i < m->nblocks; i++) {
		const struct bm_block *b = &m->blocks[i];
		if (strncmp(b->key, "blocks/", 7) != 0 || strcmp(b->key + 7, b->sum) != 0)
			return 1;
	}
	return 2;
}

static unsigned next_version(bm_dataset *ds)
{
	pthread_mutex_lock(&ds->mu);
	unsigned v = next_version_locked(ds);
	pthread_mutex_unlock(&ds->mu);
	return v;
}

size_t bm_piece_option(const struct bm_options *o, size_t blksize)
{
	size_t piece = o->piece_bytes;

	if (piece == 0 && blksize > BM_PIECE_SIZE) {
		piece = BM_PIECE_DEFAULT;
		if (blksize / piece > BM_PIECES_MAX)
			piece = blksize / BM_PIECES_MAX;
	}
	return piece == BM_PIECE_SIZE ? 0 : piece;
}

/* The bytes of a piece of the blocks the next generation is written in
 * version v: 64 KiB in 3, in 4 the dataset's (a new one: its option's),
 * else 0.  ds->mu held. */
static size_t next_piece_locked(bm_dataset *ds, unsigned v)
{
	if (v == 3)
		return BM_PIECE_SIZE;
	if (v == 4)
		return ds->exists ? ds->manifest->piece : bm_piece_option(&ds->opt, ds->manifest->blksize);
	return 0;
}

unsigned bm_next_pieces(bm_dataset *ds)
{
	pthread_mutex_lock(&ds->mu);
	unsigned v = ds->flat ? 0 : next_version_locked(ds);
	size_t bs = ds->manifest->blksize, piece = next_piece_locked(ds, v);
	pthread_mutex_unlock(&ds->mu);
	return piece ? (unsigned)(bs / piece) : 0;
}

/* A change in submission order, to sort by block and keep that order. */
struct ordered {
	uint64_t blk;
	size_t pos;
};

static int cmp_ordered(const void *a, const void *b)
{
	const struct ordered *x = a, *y = b;
	if (x->blk != y->blk)
		return x->blk < y->blk ? -1 : 1;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The changes below nblk as the index takes them: ascending block, the
 * changes of one block in submission order (bm_index_update keeps the
 * last).  malloc'd; NULL when out of memory. */
static struct bm_index_change *index_changes(bm_dataset *ds, uint64_t nblk, size_t *np)
{
	struct bm_index_change *ch = NULL;
	struct ordered *o;
	size_t n = 0;

	pthread_mutex_lock(&ds->mu);
	o = malloc((ds->nchanges + 1) * sizeof(*o));
	for (size_t i = 0; o && i < ds->nchanges; i++) {
		if (ds->changes[i].index < nblk) {
			o[n].blk = ds->changes[i].index;
			o[n].pos = i;
			n++;
		}
	}
	if (o != NULL) {
		qsort(o, n, sizeof(*o), cmp_ordered);
		ch = malloc((n + 1) * sizeof(*ch));
	}
	for (size_t i = 0; ch && i < n; i++) {
		const struct bm_change *c = &ds->changes[o[i].pos];
		ch[i].blk = c->index;
		snprintf(ch[i].sum, sizeof(ch[i].sum), "%s", c->key ? c->sum : "");
		ch[i].psum = c->key ? c->psum : NULL; /* stays: only the commit frees changes */
	}
	pthread_mutex_unlock(&ds->mu);
	free(o);
	*np = n;
	return ch;
}

static void stamp_created(char out[40])
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out, 40, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A page of the next generation's tree: cached (the next walks read it)
 * and queued for upload, so that the pages of a commit are PUT in
 * parallel (next_manifest_tree waits for them). */
struct commit_io {
	struct bm_index_io pages;  /* loads and releases go there */
	bm_dataset *ds;
};

static int cio_load(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n)
{
	struct commit_io *c = arg;
	return c->pages.load(c->pages.arg, sum, data, len, msg, n);
}

static void cio_release(void *arg, const char *sum, const void *data)
{
	struct commit_io *c = arg;
	c->pages.release(c->pages.arg, sum, data);
}

static int page_queue(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	bm_dataset *ds = ((struct commit_io *)arg)->ds;
	int rc = bm_upload_page(ds, sum, data, len);

	if (rc < 0) {
		bm_fmt(msg, n, "index page %s: %s", sum, bm_strerror(rc));
		return rc;
	}
	bm_pages_keep(ds->pages, sum, data, len);
	return 0;
}

/* The next generation in version 2 or 3 (version): the tree of the
 * published one (built from the v1 block list first when upgrading to 2)
 * with the changes applied;
 * the pages of the changed paths are uploaded in parallel (page_queue) and
 * all stored before the manifest names them.  *outp gets the manifest, no
 * block list. */
static int next_manifest_tree(bm_dataset *ds, unsigned version, struct bm_manifest **outp)
{
	const struct bm_manifest *m = ds->manifest;
	uint64_t nblk = (ds->new_size + m->blksize - 1) / m->blksize;
	pthread_mutex_lock(&ds->mu);
	size_t piece = next_piece_locked(ds, version);
	pthread_mutex_unlock(&ds->mu);
	struct bm_manifest old = { .version = version, .blksize = m->blksize,
				   .piece = version == 4 ? piece : 0, .size = m->size };
	struct bm_manifest *out = NULL;
	struct bm_index_change *ch = NULL;
	struct bm_index_io io;
	char msg[512];
	size_t nch = 0;
	int rc;

	struct commit_io cio = { .ds = ds };
	bm_pages_io(ds->pages, &cio.pages);
	io = (struct bm_index_io){ .load = cio_load, .release = cio_release, .store = page_queue, .arg = &cio };
	old.stored = m->stored;
	if (ds->exists && m->version >= 2) {
		memcpy(old.root, m->root, sizeof(old.root));
	} else if (ds->exists) {
		rc = bm_index_from_v1(&io, m, old.root, NULL, msg, sizeof(msg));
		if (rc < 0)
			goto fail;
		bm_log("%s: upgrading the dataset from format version 1 to 2 (blkmap before format 2 "
		       "cannot read it; docs/FORMAT.md)", ds->url);
	} else {
		old.size = 0;
		old.stored = 0;
	}
	if (old.stored == UINT64_MAX)
		old.stored = bm_nblocks_stored(ds);
	if ((ch = index_changes(ds, nblk, &nch)) == NULL)
		return BM_ENOMEM;
	/* The stored count follows each change, and the cut past nblk. */
	uint64_t stored = old.stored, oldnblk = bm_manifest_nblk(&old), blk;
	for (size_t i = 0; i < nch; i++) {
		char sum[BM_SUM_HEX + 1];
		if (i + 1 < nch && ch[i + 1].blk == ch[i].blk)
			continue; /* the last change of a block decides */
		if ((rc = bm_table_find(ds, &old, ch[i].blk, sum, NULL, msg, sizeof(msg))) < 0)
			goto fail;
		stored += (ch[i].sum[0] != '\0') - (rc == 1);
	}
	for (uint64_t from = nblk; from < oldnblk; from = blk + 1) {
		if ((rc = bm_table_next(ds, &old, from, &blk, msg, sizeof(msg))) < 0)
			goto fail;
		if (rc == 0)
			break;
		stored--;
	}
	if ((out = calloc(1, sizeof(*out))) == NULL) {
		free(ch);
		return BM_ENOMEM;
	}
	out->version = version;
	out->blksize = m->blksize;
	out->piece = old.piece;
	out->size = ds->new_size;
	out->generation = m->generation + 1;
	out->parent = ds->exists ? m->generation : 0;
	out->stored = stored;
	stamp_created(out->created);
	struct bm_itree ot;
	bm_manifest_itree(&old, &ot);
	rc = bm_index_update(&io, &ot, ch, nch, nblk, out->root, NULL, msg, sizeof(msg));
	if (rc < 0)
		goto fail;
	/* Every page stored before the manifest names them. */
	if ((rc = bm_upload_wait(ds)) < 0) {
		free(ch);
		bm_manifest_free(out);
		return rc;
	}
	pthread_mutex_lock(&ds->mu);
	const char *a = ds->attrs_changed ? ds->new_attrs : m->attrs;
	if (a && (out->attrs = strdup(a)) == NULL)
		rc = BM_ENOMEM;
	pthread_mutex_unlock(&ds->mu);
	free(ch);
	if (rc < 0) {
		bm_manifest_free(out);
		return rc;
	}
	*outp = out;
	return 0;
fail:
	(void)bm_upload_wait(ds); /* the pages queued; this error is the one said */
	if (rc != BM_ENOMEM)
		bm_set_error(ds, rc, "%s: the index of generation %" PRIu64 ": %s", ds->url,
			     m->generation + 1, msg);
	free(ch);
	bm_manifest_free(out);
	return rc;
}

/* The next generation's manifest, in the version next_version says. */
static int next_manifest(bm_dataset *ds, struct bm_manifest **outp)
{
	struct bm_manifest *next = NULL;
	int rc;

	*outp = NULL;
	unsigned version = next_version(ds);
	if (version >= 2)
		return next_manifest_tree(ds, version, outp);
	pthread_mutex_lock(&ds->mu);
	rc = bm_manifest_apply(ds->manifest, ds->changes, ds->nchanges, ds->new_size, &next);
	char *new_attrs = NULL;
	if (rc == 0 && ds->attrs_changed && ds->new_attrs && (new_attrs = strdup(ds->new_attrs)) == NULL)
		rc = BM_ENOMEM;
	if (rc == 0 && ds->attrs_changed) {
		free(next->attrs);
		next->attrs = new_attrs;
	}
	pthread_mutex_unlock(&ds->mu);
	if (rc < 0) {
		bm_manifest_free(next);
		return rc;
	}
	*outp = next;
	return 0;
}

/* ---- the commit ------------------------------------------------------------------ */

int bm_commit(bm_dataset *ds, uint64_t *genp)
{
	struct bm_manifest *next = NULL;
	char etag[BM_ETAG_SIZE] = "", key[BM_KEY_GEN_SIZE];
	size_t len = 0;
	bool superseded = false;
	int rc;

	if (ds->flat) {
		bm_set_error(ds, BM_EREADONLY, "%s is a flat object (not a dataset): it cannot be committed", ds->url);
		return BM_EREADONLY;
	}
	if (!ds->at_latest) {
		char detail[128];
		snprintf(detail, sizeof(detail), "generation %" PRIu64 " is not the latest", ds->manifest->generation);
		return conflict(ds, "%s: %s", detail);
	}
	struct vm_fileh_stats st = { .ndirty = 0 };
	vm_fileh *fh = bm_fh(ds); /* NULL: never mapped, nothing dirty */
	if (fh != NULL)
		vm_fileh_stats(fh, &st);
	if (ds->exists && st.ndirty == 0 && !bm_changes_pending(ds) && ds->new_size == ds->manifest->size &&
	    ds->trunc_size >= ds->manifest->size && !ds->attrs_changed) {
		if (genp)
			*genp = ds->manifest->generation; /* nothing to publish */
		return 0;
	}
	/* An upload bm_write started since the last commit that failed (after
	 * the store's own retries) fails this commit at once: sending its
	 * block again now would repeat those retries, and PUT each block twice
	 * on a full server.  The error is reported once; its block stays
	 * queued, and the next commit tries it again first. */
	if ((rc = bm_upload_wait(ds)) < 0)
		return rc;
	if ((rc = check_still_latest(ds)) < 0)
		return rc;
	keep_generation(ds);
	bm_changes_begin(ds);

	/* Step 3: upload.  What failed to upload before goes first; then
	 * storeblk queues each dirty block. */
	bm_upload_requeue_failed(ds);
	ds->staged.err = 0;
	ds->staged.valid = false; /* what a failed writeout merged: stored again */
	rc = fh != NULL ? vm_fileh_dirty_writeout(fh, VM_WRITEOUT_STORE) : 0;
	/* A format 3 dataset's pieces were merged into their blocks (each
	 * fetched whole first unless new): the last one merged becomes its
	 * change too.  A fetch that failed said why (bm_set_error). */
	int frc = rc == 0 ? bm_changes_flush(ds) : 0;
	if ((rc == -EIO && ds->staged.err < 0) || (frc < 0 && frc != BM_ENOMEM)) {
		bm_upload_wait(ds);
		return frc < 0 ? frc : ds->staged.err;
	}
	if (frc < 0)
		rc = -ENOMEM;
	if (rc < 0) {
		/* storeblk failed (it only queues): out of memory. */
		bm_upload_wait(ds);
		bm_set_error(ds, BM_ENOMEM, "%s: writing out dirty blocks failed: %s", ds->url, vm_strerror(rc));
		return BM_ENOMEM;
	}
	rc = apply_truncation(ds);
	if (rc == 0)
		rc = rewrite_edge_blocks(ds);
	int urc = bm_upload_wait(ds);
	if (urc < 0)
		return urc;
	if (rc < 0)
		return rc;
	/* The next manifest; in format 2 its index pages are stored here. */
	rc = next_manifest(ds, &next);
	if (rc < 0) {
		bm_manifest_free(next);
		return rc;
	}
	hook(ds, "uploaded");

	char *json = bm_manifest_dump_any(next, &len);
	if (json == NULL) {
		bm_manifest_free(next);
		return BM_ENOMEM;
	}
	/* A gc that ran during the uploads may have taken an object we
	 * name: the guard waits for it and checks (FORMAT.md). */
	char gmsg[512];
	struct commit_objects objs = { .ds = ds, .next = next };
	rc = bm_gc_guard_check(ds->store, &ds->gc_guard, commit_keys, &objs, gmsg, sizeof(gmsg));
	if (rc < 0)
		bm_set_error(ds, rc, "%s", gmsg);
	if (rc == 0) {
		/* From here to "manifest-put" is the one request that must
		 * take less than the gc settle time (FORMAT.md). */
		hook(ds, "checked");
		rc = swap_manifest(ds, json, len, etag, sizeof(etag), &superseded);
	}
	if (rc < 0) {
		bm_manifest_free(next);
		free(json);
		return rc;
	}
	hook(ds, "swapped");
	bm_key_gen(key, next->generation);
	put_once(ds, key, json, len);

	pthread_mutex_lock(&ds->mu);
	struct bm_manifest *prev = ds->manifest;
	ds->manifest = next;
	free(ds->manifest_json);
	ds->manifest_json = json;
	ds->manifest_json_len = len;
	ds->exists = true;
	ds->trunc_size = next->size;
	ds->trunc_seq = 0;
	snprintf(ds->etag, sizeof(ds->etag), "%s", etag);
	/* Published, but another writer published after us already: the
	 * next commit must refresh first. */
	if (superseded)
		ds->at_latest = false;
	free(ds->new_attrs);
	ds->new_attrs = NULL;
	ds->attrs_changed = false;
	ds->gc_guard.begun = false;
	pthread_mutex_unlock(&ds->mu);
	size_t ndone;
	struct bm_change *done = bm_changes_take(ds, &ndone);

	/* Published: the stored pages are clean now (a page written since its
	 * store stays dirty for the next commit).  In overlay mode their RAM
	 * is dropped and the base, moved to the new generation, shows them. */
	if ((!ds->overlay || bm_overlay_move_base(ds, next->generation, next->size) == 0) && fh != NULL)
		vm_fileh_dirty_writeout(fh, VM_WRITEOUT_MARKSTORED);
	/* Blocks written with bm_write may be cached from before. */
	for (size_t i = 0; i < ndone && !ds->overlay && fh != NULL; i++)
		for (unsigned k = 0; !done[i].from_page && k < ds->vm_per_blk; k++)
			vm_fileh_invalidate_page(fh, done[i].index * ds->vm_per_blk + k);
	for (size_t i = 0; i < ndone; i++)
		free(done[i].key);
	free(done);
	bm_manifest_free(prev);
	atomic_fetch_add(&ds->c.commits, 1);
	if (genp)
		*genp = next->generation;
	return 0;
}
