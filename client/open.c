/* open.c — opening a dataset handle (bm_open): the manifest's GET, which
 * refresh and generation lookups use too (bm_get_manifest); the probe of
 * a flat object sent beside it, or alone for BM_OPEN_FLAT; a generation
 * or a tag to open at; the checks of what the store answered and of the
 * options, and the handle's setup (dataset.c has the handle from then on).
 *
 * Owns: nothing past bm_open: the handle it makes is dataset.c's, the
 * probe (struct flat_probe) lives and dies within the open.
 * Locking: the handle is the opening thread's alone until bm_open returns
 * it; the open's two GETs go out from that thread (bm_store_get_many): an
 * open makes no thread.  bm_get_manifest takes no lock (its caller's
 * ds->mu rules apply to what it returns).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_load.h"
#include "internal.h"
#include "store.h"
#include "tags.h"

/* The check of a manifest GET: parsed here, either version.  Damage in
 * transit (BM_ECHECKSUM: a v2 manifest's self-checksum) fetches it again;
 * any other refusal is kept for manifest_result to report as before.  A
 * manifest that came (parsed or not) cancels the flat probe sent beside
 * it (won, NULL: none): the manifest wins. */
struct manifest_parse {
	struct bm_manifest *m;
	int rc;
	char why[300];
	atomic_bool *won;
};

static int manifest_check(void *arg, const char *buf, size_t len, char *msg, size_t n)
{
	struct manifest_parse *p = arg;

	bm_manifest_free(p->m);
	p->m = NULL;
	p->rc = bm_manifest_parse_any(buf, len, &p->m, p->why, sizeof(p->why));
	if (p->rc == BM_ECHECKSUM) {
		bm_fmt(msg, n, "%s", p->why);
		return BM_ECHECKSUM;
	}
	if (p->won)
		atomic_store(p->won, true);
	return 0;
}

/* A manifest GET of key ended with rc (bm_store_get_checked's; msg its
 * message, p its parse, json its body and v its version): BM_ENOTFOUND
 * when absent (no error set); on success *mp, *jsonp (malloc'd) and etag
 * are set. */
static int manifest_result(bm_dataset *ds, const char *key, int rc, struct manifest_parse *p, const char *msg,
			   char *json, size_t len, const struct bm_version *v, struct bm_manifest **mp,
			   char **jsonp, size_t *lenp, char *etag, size_t etagn)
{
	if (rc < 0)
		bm_manifest_free(p->m);
	if (rc == BM_ENOTFOUND)
		return rc;
	if (rc == BM_ECHECKSUM && p->rc == BM_ECHECKSUM) {
		/* Damaged every time it came: a bad manifest, reported as the
		 * others below. */
		rc = BM_EFORMAT;
	} else if (rc < 0) {
		bm_set_error(ds, rc, "%s", msg);
		return rc;
	} else {
		*mp = p->m;
		rc = p->rc;
	}
	if (rc < 0) {
		char *name = bm_store_name(ds->store, key);
		bm_set_error(ds, rc, "%s: %s", name ? name : key, p->why);
		free(name);
		free(json);
		return rc;
	}
	if (etag)
		snprintf(etag, etagn, "%s", v->etag);
	*jsonp = json;
	*lenp = len;
	return 0;
}

/* GETs a manifest object at key (either version; a damaged v2 one is
 * fetched again): manifest_result's result. */
int bm_get_manifest(bm_dataset *ds, const char *key, struct bm_manifest **mp,
		    char **jsonp, size_t *lenp, char *etag, size_t etagn)
{
	struct bm_version v;
	struct manifest_parse p = { .m = NULL };
	char msg[512], *json = NULL;
	size_t len = 0;
	int rc = bm_store_get_checked(ds->store, key, BM_MANIFEST_MAX, manifest_check, &p, &json, &len,
				      &v, msg, sizeof(msg));

	return manifest_result(ds, key, rc, &p, msg, json, len, &v, mp, jsonp, lenp, etag, etagn);
}

/* ---- the flat probe: the object at the URL itself ------------------------ */

/* One Range GET of the URL's first block (or of its first
 * BM_FLAT_FIRST_MAX bytes): for a flat object it gives its size, its
 * version and block 0's bytes, kept for block 0's first load (where file
 * formats keep their headers).  A dataset open that may meet a flat object
 * sends it beside the manifest's GET, both at once from the opening thread
 * (manifest_and_probe), so that a flat URL costs one round trip, as a
 * dataset does; the manifest wins when both are there: the probe is then
 * cancelled (no more bytes, no retry) and dropped. */
struct flat_probe {
	bm_dataset *ds;
	char *buf;
	struct bm_get g;
	atomic_bool cancel;        /* the manifest won: no more bytes nor tries */
	int rc;
	char msg[512];
};

static int flat_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct flat_probe *p = arg;

	if (atomic_load(&p->cancel))
		return -ECANCELED; /* the rest of the body is not wanted */
	memcpy(p->buf + off, data, len); /* the store keeps it within the range */
	return 0;
}

static size_t flat_blksize(const bm_dataset *ds)
{
	return ds->opt.blksize ? ds->opt.blksize : BM_FLAT_BLKSIZE;
}

static struct flat_probe *flat_new(bm_dataset *ds)
{
	size_t bs = flat_blksize(ds), len = bs < BM_FLAT_FIRST_MAX ? bs : BM_FLAT_FIRST_MAX;
	struct flat_probe *p = calloc(1, sizeof(*p));

	if (p == NULL || (p->buf = malloc(len)) == NULL) {
		free(p);
		return NULL;
	}
	p->ds = ds;
	atomic_init(&p->cancel, false);
	p->g = (struct bm_get){ .range = true, .to_end = true, .off = 0, .len = len, .sink = flat_sink,
				.sink_arg = p, .cancel = &p->cancel, .lone = true };
	return p;
}

/* The probe's answer (p->rc) from its GET's (rc). */
static void flat_result(struct flat_probe *p, int rc)
{
	p->rc = rc;
	if (p->rc == 0 && (p->g.total == UINT64_MAX || p->g.total > BM_SIZE_MAX)) {
		bm_fmt(p->msg, sizeof(p->msg), "GET %s: no usable size in its Content-Range", p->ds->url);
		p->rc = BM_EFORMAT;
	}
}

static void flat_get(struct flat_probe *p)
{
	flat_result(p, bm_store_get(p->ds->store, "", &p->g, p->msg, sizeof(p->msg)));
}

static void flat_free(struct flat_probe *p)
{
	if (p == NULL)
		return;
	free(p->buf);
	free(p);
}

/* The URL is not a dataset: a flat object, if the probe found one.  Sets
 * up a synthetic manifest.  BM_ENOTFOUND (no error set) when nothing is
 * there; the probe is freed either way. */
static int open_flat(bm_dataset *ds, struct flat_probe *p)
{
	size_t bs = flat_blksize(ds);
	int rc = p->rc;

	if (rc < 0) {
		if (rc != BM_ENOTFOUND)
			bm_set_error(ds, rc, "%s", p->msg);
		flat_free(p);
		return rc;
	}
	ds->manifest = calloc(1, sizeof(*ds->manifest));
	if (ds->manifest == NULL) {
		flat_free(p);
		return BM_ENOMEM;
	}
	/* Small blocks: a random miss fetches little; read-ahead fetches
	 * many in one Range GET (readahead.c). */
	ds->manifest->blksize = bs;
	ds->manifest->size = p->g.total;
	ds->flat = true;
	ds->at_latest = true;
	snprintf(ds->etag, sizeof(ds->etag), "%s", p->g.ver.etag);
	snprintf(ds->last_modified, sizeof(ds->last_modified), "%s", p->g.ver.last_modified);
	/* Kept only when it is the whole of block 0. */
	if (p->g.got > 0 && (p->g.got == bs || p->g.got == p->g.total)) {
		ds->first = p->buf;
		ds->first_len = p->g.got;
		p->buf = NULL;
	}
	flat_free(p);
	return 0;
}

/* Whether an open of the latest generation sends the flat probe beside
 * the manifest's GET: not for a URL ending in '/' (a dataset's prefix,
 * never an object), nor with one connection (the two would queue for it
 * and a dataset's open would pay both). */
static bool flat_concurrent(const bm_dataset *ds, const char *url)
{
	size_t n = strlen(url);

	return ds->opt.connections >= 2 && n > 0 && url[n - 1] != '/';
}

/* The latest manifest's GET and the probe's at once (one round trip):
 * bm_get_manifest's result, the probe's in probe->rc. */
static int manifest_and_probe(bm_dataset *ds, struct flat_probe *probe)
{
	struct manifest_parse p = { .m = NULL, .won = &probe->cancel };
	struct bm_checked_get cg;
	char msg[512], *json = NULL;
	size_t len = 0;

	bm_checked_get_init(&cg, BM_MANIFEST_MAX, manifest_check, &p);
	struct bm_get_job jobs[2] = {
		{ .key = BM_KEY_MANIFEST, .g = &cg.g, .msg = msg, .n = sizeof(msg) },
		{ .key = "", .g = &probe->g, .msg = probe->msg, .n = sizeof(probe->msg) },
	};
	bm_store_get_many(ds->store, jobs, 2);
	flat_result(probe, jobs[1].rc);
	int rc = bm_checked_get_end(&cg, jobs[0].rc, &json, &len, NULL);
	return manifest_result(ds, BM_KEY_MANIFEST, rc, &p, msg, json, len, &cg.g.ver, &ds->manifest,
			       &ds->manifest_json, &ds->manifest_json_len, ds->etag, sizeof(ds->etag));
}

/* The manifest's GET, and for the latest generation of a URL that may
 * name a flat object the probe beside it (url: as the caller gave it). */
static int open_manifest(bm_dataset *ds, const char *url)
{
	char key[BM_KEY_GEN_SIZE];
	uint64_t want = ds->opt.generation;
	struct flat_probe *probe = NULL;
	int rc;

	if (ds->opt.flags & BM_OPEN_FLAT) { /* the caller knows: the object alone */
		if ((probe = flat_new(ds)) == NULL)
			return BM_ENOMEM;
		flat_get(probe);
		rc = open_flat(ds, probe);
		if (rc == BM_ENOTFOUND)
			bm_set_error(ds, rc, "%s: no object there (opened as a plain object)", ds->url);
		return rc;
	}
	if (want == 0 && flat_concurrent(ds, url)) {
		if ((probe = flat_new(ds)) == NULL)
			return BM_ENOMEM;
		rc = manifest_and_probe(ds, probe);
	} else {
		rc = bm_get_manifest(ds, BM_KEY_MANIFEST, &ds->manifest, &ds->manifest_json,
				  &ds->manifest_json_len, ds->etag, sizeof(ds->etag));
	}
	if (probe != NULL && rc != BM_ENOTFOUND) {
		flat_free(probe); /* a dataset (or its error): the manifest wins */
		probe = NULL;
	}
	if (rc == BM_ENOTFOUND) {
		if (want != 0) {
			bm_set_error(ds, rc, "%s: no dataset, so no generation %" PRIu64, ds->url, want);
			return rc;
		}
		if (probe == NULL) { /* one after the other */
			if ((probe = flat_new(ds)) == NULL)
				return BM_ENOMEM;
			flat_get(probe);
		}
		rc = open_flat(ds, probe);
		if (rc != BM_ENOTFOUND)
			return rc;
		if (!(ds->opt.flags & BM_OPEN_CREATE)) {
			bm_set_error(ds, rc, "%s: no dataset (no manifest.json) and no object there", ds->url);
			return rc;
		}
		/* A new dataset: generation 0, published by the first commit. */
		ds->manifest = calloc(1, sizeof(*ds->manifest));
		if (ds->manifest == NULL)
			return BM_ENOMEM;
		ds->manifest->blksize = ds->opt.blksize ? ds->opt.blksize : BM_DEFAULT_BLKSIZE;
		ds->at_latest = true;
		return 0;
	}
	if (rc < 0)
		return rc;
	ds->exists = true;
	ds->at_latest = true;
	if (want == 0 || want == ds->manifest->generation)
		return 0;
	if (want > ds->manifest->generation) {
		bm_set_error(ds, BM_ENOTFOUND, "%s: generation %" PRIu64 " does not exist (latest is %" PRIu64 ")",
			     ds->url, want, ds->manifest->generation);
		return BM_ENOTFOUND;
	}
	/* An older generation: its kept manifest. */
	struct bm_manifest *old = NULL;
	char *json = NULL;
	size_t len = 0;
	bm_key_gen(key, want);
	rc = bm_get_manifest(ds, key, &old, &json, &len, NULL, 0);
	if (rc == BM_ENOTFOUND)
		bm_set_error(ds, rc, "%s: generation %" PRIu64 " is not kept (no %s)", ds->url, want, key);
	if (rc < 0)
		return rc;
	if (old->generation != want || old->blksize != ds->manifest->blksize) {
		bm_set_error(ds, BM_EFORMAT, "%s/%s: says generation %" PRIu64 " with block size %zu",
			     ds->url, key, old->generation, old->blksize);
		bm_manifest_free(old);
		free(json);
		return BM_EFORMAT;
	}
	bm_manifest_free(ds->manifest);
	free(ds->manifest_json);
	ds->manifest = old;
	ds->manifest_json = json;
	ds->manifest_json_len = len;
	ds->at_latest = false;
	return 0;
}

/* A new dataset's piece option (bm_piece_option): a power of two from 4
 * KiB to half its block, at most BM_PIECES_MAX a block; 0 or BM_EINVAL.
 * An existing dataset keeps its own pieces, as its blksize. */
static int check_piece_option(bm_dataset *ds)
{
	size_t bs = ds->manifest->blksize, piece = bm_piece_option(&ds->opt, bs);

	if (piece == 0)
		return 0;
	if (piece < BM_PIECE_MIN || piece >= bs || (piece & (piece - 1)) != 0 ||
	    bs / piece > BM_PIECES_MAX) {
		bm_set_error(ds, BM_EINVAL,
			     "%s: pieces of %zu bytes: a piece is a power of two from 4096 to half "
			     "a block (%zu), at most %d a block",
			     ds->url, piece, bs / 2, BM_PIECES_MAX);
		return BM_EINVAL;
	}
	return 0;
}

/* opt.tag: the generation it names becomes opt.generation (tags.c). */
static int open_at_tag(bm_dataset *ds)
{
	char msg[512];
	int rc;

	if (ds->opt.tag == NULL)
		return 0;
	if (ds->opt.generation != 0) {
		bm_set_error(ds, BM_EINVAL, "%s: open at a generation or at a tag, not both", ds->url);
		return BM_EINVAL;
	}
	if ((rc = bm_tags_resolve(ds->store, ds->opt.tag, &ds->opt.generation, msg, sizeof(msg))) < 0)
		bm_set_error(ds, rc, "%s", msg);
	ds->opt.tag = NULL; /* not kept: the caller's string */
	return rc;
}

int bm_open(bm_dataset **dsp, const char *url, const struct bm_options *opt)
{
	bm_dataset *ds;
	char msg[512];
	int rc;

	*dsp = NULL;
	ds = calloc(1, sizeof(*ds));
	if (ds == NULL)
		return BM_ENOMEM;
	ds->base_fd = -1;
	pthread_mutex_init(&ds->mu, NULL);
	pthread_mutex_init(&ds->cache_mu, NULL);
	if (opt != NULL) {
		ds->opt = *opt;
	} else if ((rc = bm_options_init(&ds->opt)) < 0) {
		free(ds);
		return rc;
	}
	struct bm_store_opts so = {
		.token = ds->opt.token,
		.connect_timeout_ms = ds->opt.connect_timeout_ms,
		.timeout_ms = ds->opt.timeout_ms,
		.retry_base_ms = ds->opt.retry_base_ms,
		.retries = ds->opt.retries,
		.connections = ds->opt.connections,
		.verbose = ds->opt.verbose,
		.retries_counter = &ds->c.retries,
	};
	rc = bm_store_open(&ds->store, url, &so, msg, sizeof(msg));
	if (rc == 0 && (ds->url = strdup(ds->store->url)) == NULL)
		rc = BM_ENOMEM;
	if (rc < 0) {
		if (rc == BM_EINVAL)
			bm_set_thread_error(msg);
		bm_store_close(ds->store);
		free(ds);
		return rc;
	}
	if (ds->opt.connections < 1 || ds->opt.retries < 0 || ds->opt.cache_bytes < 4096 ||
	    ds->opt.cache_bytes > ((size_t)512 << 30) || ds->opt.timeout_ms < 1 ||
	    ds->opt.connect_timeout_ms < 1 || ds->opt.retry_base_ms < 1) {
		bm_set_thread_error("bad options: connections, timeouts and retry_base_ms must be "
				    "at least 1, retries at least 0, cache_bytes from 4 KiB to 512 GiB");
		bm_store_close(ds->store);
		free(ds->url);
		free(ds);
		return BM_EINVAL;
	}
	/* The workers uploads and read-ahead share; they start on first
	 * need.  From here on bm_close undoes everything. */
	bm_pool_init(&ds->pool, ds->opt.connections);
	bm_upload_init(ds);
	bm_readahead_init(ds);
	/* Index pages (formats 2-4) take a sixteenth of the RAM budget (at
	 * least four leaves: below), never so much that no block fits in
	 * the rest. */
	size_t pages_cap = ds->opt.cache_bytes / 16;
	rc = bm_pages_new(&ds->pages, ds->store, pages_cap);
	if (rc == 0 && (ds->opt.flags & BM_OPEN_FLAT) &&
	    ((ds->opt.flags & BM_OPEN_CREATE) || ds->opt.generation != 0 || ds->opt.tag != NULL)) {
		bm_set_error(ds, BM_EINVAL, "%s: a plain object (BM_OPEN_FLAT) has no generation or tag "
			     "to open and is not created", ds->url);
		rc = BM_EINVAL;
	}
	if (rc == 0)
		rc = open_at_tag(ds);
	if (rc == 0)
		rc = open_manifest(ds, url);
	if (rc == 0 && ((ds->manifest->blksize & (ds->manifest->blksize - 1)) != 0 ||
			ds->manifest->blksize < 4096 || ds->manifest->blksize > VM_BLKSIZE_MAX)) {
		bm_set_error(ds, BM_EINVAL, "block size %zu is not a power of two from 4 KiB to 64 MiB",
			     ds->manifest->blksize);
		rc = BM_EINVAL;
	}
	if (rc == 0 && !ds->exists && !ds->flat)
		rc = check_piece_option(ds);
	if (rc == 0) {
		ds->new_size = ds->trunc_size = ds->manifest->size;
		bm_overlay_probe(ds);
		bm_ds_set_backend(ds);
		/* A format 3 or 4 dataset (or one the first commit creates in
		 * it) is mapped a piece per virtmem block: a random miss
		 * fetches one piece (blocks.c). */
		ds->blksize = ds->manifest->blksize;
		unsigned pieces = bm_next_pieces(ds);
		ds->vm_per_blk = pieces > 1 ? pieces : 1;
		ds->file.blksize = ds->blksize / ds->vm_per_blk;
		ds->file.name = ds->url;
		/* The pages' share holds at least four full leaves of the
		 * dataset's format, whatever the budget: a leaf larger than
		 * the share (one of 4 MiB blocks in 16 KiB pieces is 1 MB, and
		 * blkmap-wcfs's handles have a share of 1 MiB) would be
		 * fetched again by every lookup under it. */
		size_t leaves = 4 * bm_ipage_len(0, BM_IPAGE_FANOUT, pieces > 1 ? pieces : 0);
		if (!ds->flat && pages_cap < leaves) {
			pages_cap = leaves;
			bm_pages_set_cap(ds->pages, pages_cap);
		}
		size_t budget = ds->opt.cache_bytes;
		if (!ds->flat && budget > pages_cap && budget - pages_cap >= ds->manifest->blksize)
			budget -= pages_cap; /* the pages' share */
		/* The page cache itself waits for the first mapping. */
		ds->ram_budget = budget;
		ds->fh_flags = (ds->overlay ? VM_MMAP_OVERLAY : VM_DONT_MMAP_OVERLAY) | (ds->flat ? VM_READONLY : 0);
	}
	if (rc < 0) {
		if (ds->errmsg[0] == '\0')
			bm_set_error(ds, rc, "%s: %s", ds->url, bm_strerror(rc));
		bm_set_thread_error(ds->errmsg);
		bm_close(ds);
		return rc;
	}
	*dsp = ds;
	return 0;
}
