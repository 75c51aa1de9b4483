/* generation.c — reading one kept generation of a dataset (either format
 * version) straight from its store, the object keys it references, and
 * the block ranges two generations differ in: what gc.c, tags.c and
 * `blkmap diff` stand on.  Index pages come through index_load.c's cache,
 * one per call, dropped when it returns.
 * Owns: struct bm_gen.  Locking: none; each call uses only its arguments.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generation.h"
#include "index_load.h"

#define GEN_TRIES 3 /* a damaged v2 manifest is fetched again this often */
#define GEN_PAGE_CACHE ((size_t)16 << 20) /* index pages kept during one walk */

int bm_gen_store_open(struct bm_store **sp, const char *url, const struct bm_options *opt, char *msg,
		      size_t n)
{
	struct bm_options o;
	int rc;

	*sp = NULL;
	if (opt == NULL) {
		if ((rc = bm_options_init(&o)) < 0)
			return rc;
		opt = &o;
	}
	struct bm_store_opts so = {
		.token = opt->token,
		.connect_timeout_ms = opt->connect_timeout_ms,
		.timeout_ms = opt->timeout_ms,
		.retry_base_ms = opt->retry_base_ms,
		.retries = opt->retries,
		.connections = opt->connections,
		.verbose = opt->verbose,
	};
	return bm_store_open(sp, url, &so, msg, n);
}

void bm_gen_free(struct bm_gen *g)
{
	bm_manifest_free(g->m1);
	bm_manifest2_free(g->m2);
	memset(g, 0, sizeof(*g));
}

static int parse_any(const char *buf, size_t len, struct bm_gen *g, char *why, size_t n)
{
	int v = bm_manifest_version(buf, len, why, n);
	int rc;

	if (v < 0)
		return v;
	g->version = v;
	if (v == 1) {
		if ((rc = bm_manifest_parse(buf, len, &g->m1, why, n)) < 0)
			return rc;
		g->generation = g->m1->generation;
		g->size = g->m1->size;
		g->blksize = g->m1->blksize;
		g->created = g->m1->created;
		return 0;
	}
	if ((rc = bm_manifest2_parse(buf, len, &g->m2, why, n)) < 0)
		return rc;
	g->generation = g->m2->generation;
	g->size = g->m2->size;
	g->blksize = g->m2->blksize;
	g->created = g->m2->created;
	return 0;
}

int bm_gen_read(struct bm_store *s, uint64_t gen, struct bm_gen *g, char *msg, size_t n)
{
	char key[BM_KEY_GEN_SIZE], why[300];
	struct bm_version v;
	int rc = 0;

	memset(g, 0, sizeof(*g));
	if (gen == 0)
		snprintf(key, sizeof(key), "%s", BM_KEY_MANIFEST);
	else
		bm_key_gen(key, gen);
	for (int t = 0; t < GEN_TRIES; t++) {
		char *buf = NULL;
		size_t len = 0;
		rc = bm_store_get_all(s, key, BM_MANIFEST_MAX, &buf, &len, &v, msg, n);
		if (rc < 0)
			return rc;
		rc = parse_any(buf, len, g, why, sizeof(why));
		free(buf);
		if (rc != BM_ECHECKSUM)
			break;
		bm_gen_free(g);
	}
	if (rc == 0 && gen != 0 && g->generation != gen) {
		snprintf(why, sizeof(why), "it says it is generation %" PRIu64, g->generation);
		rc = BM_EFORMAT;
	}
	if (rc < 0) {
		char *name = bm_store_name(s, key);
		bm_fmt(msg, n, "%s: %s", name ? name : key, why);
		free(name);
		bm_gen_free(g);
		return rc;
	}
	snprintf(g->etag, sizeof(g->etag), "%s", v.etag);
	return 0;
}

/* ---- keys ------------------------------------------------------------------------ */

/* Piece sums per leaf entry of g's tree (0: v1, v2). */
static unsigned gen_pieces(const struct bm_gen *g)
{
	if (g->version == 3)
		return (unsigned)(g->blksize / BM_PIECE_SIZE);
	return g->version == 4 ? (unsigned)(g->blksize / g->m2->piece) : 0;
}

/* The format of g's tree as struct bm_itree says it. */
static unsigned gen_format(const struct bm_gen *g)
{
	return g->version == 4 ? 4 : 0;
}

int bm_gen_keys(struct bm_store *s, const struct bm_gen *g, bm_index_key_fn emit, void *arg,
		char *msg, size_t n)
{
	struct bm_index_io io;
	int rc;

	if (g->version == 1) {
		for (size_t i = 0; i < g->m1->nblocks; i++)
			if ((rc = emit(arg, g->m1->blocks[i].key)) != 0)
				return rc;
		return 0;
	}
	struct bm_pages *pc;
	if (g->m2->root[0] == '\0')
		return 0;
	if ((rc = bm_pages_new(&pc, s, GEN_PAGE_CACHE)) < 0)
		return rc;
	bm_pages_io(pc, &io);
	const struct bm_itree t = { .root = g->m2->root,
				    .nblk = bm_manifest2_nblk(g->m2),
				    .pieces = gen_pieces(g),
				    .format = gen_format(g) };
	rc = bm_index_keys(&io, &t, emit, arg, NULL, msg, n);
	bm_pages_free(pc);
	return rc;
}

/* ---- diff ------------------------------------------------------------------------ */

/* v1 against v1: a merge of the two sorted tables. */
static int diff_tables(const struct bm_manifest *a, const struct bm_manifest *b, bm_index_range_fn emit,
		       void *arg)
{
	uint64_t first = 0, count = 0;
	size_t i = 0, j = 0;
	int rc;

	while (i < a->nblocks || j < b->nblocks) {
		const struct bm_block *x = i < a->nblocks ? &a->blocks[i] : NULL;
		const struct bm_block *y = j < b->nblocks ? &b->blocks[j] : NULL;
		uint64_t blk;
		bool same;
		if (x && (!y || x->index < y->index)) {
			blk = x->index, same = false, i++;
		} else if (y && (!x || y->index < x->index)) {
			blk = y->index, same = false, j++;
		} else {
			blk = x->index, same = strcmp(x->sum, y->sum) == 0, i++, j++;
		}
		/* A block missing from a table is a hole; a table names no
		 * block past its end (manifest.c), so past an end is a hole. */
		if (same)
			continue;
		if (count && first + count == blk) {
			count++;
			continue;
		}
		if (count && (rc = emit(arg, first, count)) != 0)
			return rc;
		first = blk, count = 1;
	}
	return count ? emit(arg, first, count) : 0;
}

/* Pages a v1 table becomes (bm_index_from_v1) kept in memory for the walk;
 * pages not found here come from the store. */
struct mem_pages {
	struct bm_index_io store;  /* the store's pages (index_load.c) */
	struct mem_page {
		char sum[BM_SUM_HEX + 1];
		void *data;
		size_t len;
	} *v;
	size_t n, cap;
};

static int mem_store(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	struct mem_pages *mp = arg;
	(void)msg, (void)n;
	if (mp->n == mp->cap) {
		size_t cap = mp->cap ? mp->cap * 2 : 64;
		void *v = realloc(mp->v, cap * sizeof(*mp->v));
		if (v == NULL)
			return BM_ENOMEM;
		mp->v = v, mp->cap = cap;
	}
	struct mem_page *p = &mp->v[mp->n];
	if ((p->data = malloc(len)) == NULL)
		return BM_ENOMEM;
	memcpy(p->data, data, len);
	p->len = len;
	snprintf(p->sum, sizeof(p->sum), "%s", sum);
	mp->n++;
	return 0;
}

static int mem_load(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n)
{
	struct mem_pages *mp = arg;
	for (size_t i = 0; i < mp->n; i++)
		if (strcmp(mp->v[i].sum, sum) == 0) {
			*data = mp->v[i].data;
			*len = mp->v[i].len;
			return 0;
		}
	return mp->store.load(mp->store.arg, sum, data, len, msg, n);
}

static void mem_release(void *arg, const char *sum, const void *data)
{
	struct mem_pages *mp = arg;
	for (size_t i = 0; i < mp->n; i++)
		if (mp->v[i].data == data)
			return;
	mp->store.release(mp->store.arg, sum, data);
}

/* The root of a generation's tree: its own (v2) or one built in memory. */
static int root_of(const struct bm_index_io *io, const struct bm_gen *g, char root[BM_SUM_HEX + 1],
		   char *msg, size_t n)
{
	if (g->version >= 2) {
		snprintf(root, BM_SUM_HEX + 1, "%s", g->m2->root);
		return 0;
	}
	return bm_index_from_v1(io, g->m1, root, NULL, msg, n);
}

int bm_gen_diff(struct bm_store *s, const struct bm_gen *a, const struct bm_gen *b,
		bm_index_range_fn emit, void *arg, char *msg, size_t n)
{
	struct mem_pages mp = { 0 };
	struct bm_pages *pc = NULL;
	struct bm_index_io io = { .load = mem_load, .release = mem_release, .store = mem_store, .arg = &mp };
	char ra[BM_SUM_HEX + 1], rb[BM_SUM_HEX + 1];
	int rc;

	if (a->blksize != b->blksize) {
		bm_fmt(msg, n, "generations %" PRIu64 " and %" PRIu64 " have different block sizes (%zu, %zu)",
		       a->generation, b->generation, a->blksize, b->blksize);
		return BM_EINVAL;
	}
	if (a->version == 1 && b->version == 1)
		return diff_tables(a->m1, b->m1, emit, arg);
	if ((rc = bm_pages_new(&pc, s, GEN_PAGE_CACHE)) < 0)
		return rc;
	bm_pages_io(pc, &mp.store);
	rc = root_of(&io, a, ra, msg, n);
	if (rc == 0)
		rc = root_of(&io, b, rb, msg, n);
	if (rc == 0) {
		/* A v1 generation's tree (built here) is a v2 one: its sums are
		 * of the bytes, so against a v3 tree every block differs. */
		const struct bm_itree ta = { ra, (a->size + a->blksize - 1) / a->blksize, gen_pieces(a),
					     gen_format(a) };
		const struct bm_itree tb = { rb, (b->size + b->blksize - 1) / b->blksize, gen_pieces(b),
					     gen_format(b) };
		rc = bm_index_diff(&io, &ta, &tb, emit, arg, NULL, msg, n);
	}
	for (size_t i = 0; i < mp.n; i++)
		free(mp.v[i].data);
	free(mp.v);
	bm_pages_free(pc);
	return rc;
}
