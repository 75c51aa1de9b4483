/* test_index.c — the format layer of dataset formats v2 and v3
 * (client/index.c, client/manifest2.c) over an in-memory page store: lookups, copy-on-write
 * updates that share every unchanged page (the bytes a 1-block commit
 * writes at 2^12, 2^15 and 2^17 blocks, checked against the arithmetic of
 * docs/FORMAT.md), diffs that descend only where sums differ, the v1
 * upgrade, the keys gc will keep, and hostile pages and manifests (each
 * field, truncations, bit flips, wrong hashes, out-of-range entries): a
 * one-line error, never a crash or a wrong answer.  Format v3: piece sums
 * (whole, streamed in any chunks; streamed pieces each checked against
 * its own sum), leaves that carry them through updates
 * and lookups, and v3 leaves whose piece sums lie, or pages of the other
 * format's page version, refused.  No server, no I/O;
 * deterministic.  Locking: none (one thread).
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../client/index.h"

/* A v2 tree (no piece sums) of root and nblk blocks, for index.c's walks. */
#define V2TREE(root, nblk) (&(const struct bm_itree){ (root), (nblk), 0 })

/* ---- an in-memory page store ------------------------------------------------ */

struct mpage {
	char sum[BM_SUM_HEX + 1];
	uint8_t *data;
	size_t len;
	bool checked;              /* set_checked marked it (io_checked) */
	struct mpage *next;
};

#define NBUCKET 4096

struct mstore {
	struct mpage *bucket[NBUCKET];
	size_t npages;
	uint64_t loads, stores, stored_bytes;
	int fail_load;             /* < 0: the next load returns it */
};

static struct mstore ms;

static size_t bucket_of(const char *sum)
{
	return (size_t)strtoull((char[9]){ sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6],
					   sum[7], 0 },
				NULL, 16) % NBUCKET;
}

static struct mpage *ms_find(const char *sum)
{
	for (struct mpage *p = ms.bucket[bucket_of(sum)]; p; p = p->next)
		if (strcmp(p->sum, sum) == 0)
			return p;
	return NULL;
}

/* Puts bytes under key sum as they are (hostile tests put wrong ones). */
static void ms_put_raw(const char *sum, const void *data, size_t len)
{
	struct mpage *p = ms_find(sum);
	if (p == NULL) {
		p = calloc(1, sizeof(*p));
		assert_non_null(p);
		snprintf(p->sum, sizeof(p->sum), "%s", sum);
		p->next = ms.bucket[bucket_of(sum)];
		ms.bucket[bucket_of(sum)] = p;
		ms.npages++;
	} else {
		free(p->data);
	}
	p->checked = false;
	p->data = malloc(len + 1);
	assert_non_null(p->data);
	memcpy(p->data, data, len);
	p->len = len;
}

static void ms_reset(void)
{
	for (size_t i = 0; i < NBUCKET; i++) {
		struct mpage *p = ms.bucket[i];
		while (p) {
			struct mpage *next = p->next;
			free(p->data);
			free(p);
			p = next;
		}
		ms.bucket[i] = NULL;
	}
	memset(&ms, 0, sizeof(ms));
}

static int ms_load(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n)
{
	(void)arg;
	ms.loads++;
	if (ms.fail_load < 0) {
		int rc = ms.fail_load;
		ms.fail_load = 0;
		snprintf(msg, n, "loader failed on purpose");
		return rc;
	}
	struct mpage *p = ms_find(sum);
	if (p == NULL) {
		snprintf(msg, n, "index page %s is not in the store", sum);
		return BM_ENOTFOUND;
	}
	*data = p->data;
	*len = p->len;
	return 0;
}

static int ms_store(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	(void)arg;
	(void)msg;
	(void)n;
	char check[BM_SUM_HEX + 1];
	bm_sum_hex(data, len, check);
	assert_string_equal(check, sum); /* the layer names pages by their hash */
	assert_true(len <= BM_IPAGE_LIMIT);
	ms.stores++;
	ms.stored_bytes += len;
	ms_put_raw(sum, data, len);
	return 0;
}

static const struct bm_index_io io = { .load = ms_load, .store = ms_store };

/* The store's page whose bytes are data. */
static struct mpage *ms_page_of(const void *data)
{
	for (size_t i = 0; i < NBUCKET; i++)
		for (struct mpage *p = ms.bucket[i]; p; p = p->next)
			if (p->data == data)
				return p;
	fail_msg("no page holds these bytes");
	return NULL;
}

static unsigned ms_marks;          /* set_checked calls */

static bool ms_checked(void *arg, const void *data)
{
	(void)arg;
	return ms_page_of(data)->checked;
}

static void ms_set_checked(void *arg, const void *data)
{
	(void)arg;
	ms_marks++;
	ms_page_of(data)->checked = true;
}

/* The same store, as a cache that keeps pages checked (index_load.c). */
static const struct bm_index_io io_checked = { .load = ms_load, .store = ms_store,
					       .checked = ms_checked,
					       .set_checked = ms_set_checked };

/* ---- helpers -------------------------------------------------------------------- */

/* The sum a test gives block blk in version v (stands for its bytes). */
static void test_sum(uint64_t blk, unsigned v, char out[BM_SUM_HEX + 1])
{
	uint64_t x[2] = { blk, v };
	bm_sum_hex(x, sizeof(x), out);
}

static void one_line(const char *msg)
{
	assert_true(msg[0] != '\0');
	assert_null(strchr(msg, '\n'));
}

/* A tree of nblk blocks where block b is stored (version v) when
 * keep(b), a hole otherwise. */
static void build(uint64_t nblk, bool (*keep)(uint64_t), unsigned v, char root[BM_SUM_HEX + 1])
{
	struct bm_index_change *ch = calloc(nblk + 1, sizeof(*ch));
	size_t nch = 0;
	char msg[256] = "";
	assert_non_null(ch);
	for (uint64_t b = 0; b < nblk; b++) {
		if (keep && !keep(b))
			continue;
		ch[nch].blk = b;
		test_sum(b, v, ch[nch].sum);
		nch++;
	}
	int rc = bm_index_update(&io, V2TREE("", 0), ch, nch, nblk, root, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("build: %d %s", rc, msg);
	free(ch);
}

static bool every(uint64_t b)
{
	(void)b;
	return true;
}

static bool sparse(uint64_t b)
{
	return b % 7 == 3 || (b >= 600 && b < 900) || b % 1000 == 999;
}

/* Asserts that block b of tree (root, nblk) reads as version v of b, or
 * a hole when v is 0. */
static void expect_block(const char *root, uint64_t nblk, uint64_t b, unsigned v)
{
	char sum[BM_SUM_HEX + 1], want[BM_SUM_HEX + 1], msg[256] = "";
	int rc = bm_index_lookup(&io, V2TREE(root, nblk), b, sum, NULL, NULL, msg, sizeof(msg));
	if (v == 0) {
		if (rc != 0)
			fail_msg("block %" PRIu64 ": expected a hole, got %d %s %s", b, rc, sum, msg);
		assert_string_equal(sum, "");
		return;
	}
	if (rc != 1)
		fail_msg("block %" PRIu64 ": expected stored, got %d %s", b, rc, msg);
	test_sum(b, v, want);
	assert_string_equal(sum, want);
}

/* ---- lookups and updates ------------------------------------------------------- */

static void lookup_finds_every_stored_block_and_every_hole(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1];
	const uint64_t nblk = 70000; /* depth 3 */
	ms_reset();
	build(nblk, sparse, 1, root);
	assert_int_equal(strlen(root), BM_SUM_HEX);
	for (uint64_t b = 0; b < nblk; b++)
		expect_block(root, nblk, b, sparse(b) ? 1 : 0);
	/* Past the end: an argument error, not a hole. */
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	assert_int_equal(bm_index_lookup(&io, V2TREE(root, nblk), nblk, sum, NULL, NULL, msg, sizeof(msg)), BM_EINVAL);
	one_line(msg);
	/* A dataset with no stored block has no root: every block is a hole. */
	assert_int_equal(bm_index_lookup(&io, V2TREE("", nblk), 5, sum, NULL, NULL, msg, sizeof(msg)), 0);
	ms_reset();
}

static void lookup_loads_one_page_per_level(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], sum[BM_SUM_HEX + 1], msg[256];
	struct bm_index_stats st = { 0 };
	ms_reset();
	build(70000, every, 1, root);
	assert_int_equal(bm_index_depth(70000), 3);
	assert_int_equal(bm_index_lookup(&io, V2TREE(root, 70000), 69999, sum, NULL, &st, msg, sizeof(msg)), 1);
	assert_int_equal(st.pages_read, 3);
	ms_reset();
}

static void depth_follows_the_block_count(void **state)
{
	(void)state;
	assert_int_equal(bm_index_depth(0), 1);
	assert_int_equal(bm_index_depth(1), 1);
	assert_int_equal(bm_index_depth(256), 1);
	assert_int_equal(bm_index_depth(257), 2);
	assert_int_equal(bm_index_depth(65536), 2);
	assert_int_equal(bm_index_depth(65537), 3);
	assert_int_equal(bm_index_depth((uint64_t)1 << 17), 3);
	/* The largest legal dataset: 2^50 bytes of 4 KiB blocks. */
	assert_int_equal(bm_index_depth((uint64_t)1 << 38), 5);
	assert_int_equal(bm_index_depth(BM_INDEX_NBLK_MAX), BM_ILEVELS_MAX);
}

/* The arithmetic of docs/FORMAT.md: a 1-block change rewrites the one page
 * per level on its path, each at most BM_IPAGE_MAX bytes; in a full tree
 * of nblk blocks the page of level l on the path of block b has as many
 * entries as its range holds. */
static uint64_t path_bytes(uint64_t nblk, uint64_t blk)
{
	unsigned depth = bm_index_depth(nblk);
	uint64_t total = 0;
	for (unsigned l = 0; l < depth; l++) {
		uint64_t cover = (uint64_t)1 << (8 * l);          /* blocks per entry */
		uint64_t base = blk / (cover * 256) * (cover * 256); /* page's first block */
		uint64_t left = (nblk - base + cover - 1) / cover;
		total += BM_IPAGE_HDR + BM_IPAGE_ENTRY * (left < 256 ? left : 256);
	}
	return total;
}

static void one_block_commit_writes(unsigned log2n)
{
	const uint64_t nblk = (uint64_t)1 << log2n, blk = nblk / 2 + 3;
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_stats st = { 0 };
	struct bm_index_change ch = { .blk = blk };

	ms_reset();
	build(nblk, every, 1, root);
	size_t before = ms.npages;
	test_sum(blk, 2, ch.sum);
	assert_int_equal(bm_index_update(&io, V2TREE(root, nblk), &ch, 1, nblk, root2, &st, msg, sizeof(msg)), 0);
	assert_string_not_equal(root, root2);
	/* One new page per level, nothing else. */
	assert_int_equal(st.pages_written, bm_index_depth(nblk));
	assert_int_equal(ms.npages, before + bm_index_depth(nblk));
	assert_int_equal(st.bytes_written, path_bytes(nblk, blk));
	/* The doc's bound: depth full pages.  The budget: 64 KiB beyond the
	 * block for the pages and the new manifest (without user attributes)
	 * together. */
	assert_true(st.bytes_written <= bm_index_depth(nblk) * (uint64_t)BM_IPAGE_MAX);
	struct bm_manifest2 m = { .blksize = 4096, .size = nblk * 4096, .generation = 1000000,
				  .parent = 999999 };
	snprintf(m.created, sizeof(m.created), "2026-11-29T09:00:00Z");
	memcpy(m.root, root2, sizeof(m.root));
	size_t mlen;
	char *mtext = bm_manifest2_dump(&m, &mlen);
	assert_non_null(mtext);
	free(mtext);
	assert_true(st.bytes_written + mlen <= 64 * 1024);
	/* Pages read: the path (depth pages) only. */
	assert_int_equal(st.pages_read, bm_index_depth(nblk));
	print_message("measure: 1-block commit at n=2^%u blocks: %" PRIu64 " index pages, %" PRIu64
		      " bytes + a %zu-byte manifest\n",
		      log2n, st.pages_written, st.bytes_written, mlen);
	/* The new tree has the change; the old one is untouched. */
	expect_block(root2, nblk, blk, 2);
	expect_block(root, nblk, blk, 1);
	expect_block(root2, nblk, blk - 1, 1);
	expect_block(root2, nblk, 0, 1);
	expect_block(root2, nblk, nblk - 1, 1);
	ms_reset();
}

static void one_block_commit_at_2e12_blocks_writes_one_page_per_level(void **state)
{
	(void)state;
	one_block_commit_writes(12);
}

static void one_block_commit_at_2e15_blocks_writes_one_page_per_level(void **state)
{
	(void)state;
	one_block_commit_writes(15);
}

static void one_block_commit_at_2e17_blocks_writes_one_page_per_level(void **state)
{
	(void)state;
	one_block_commit_writes(17);
}

static int count_key(void *arg, const char *key)
{
	size_t *c = arg;
	c[strncmp(key, "index/", 6) == 0 ? 0 : 1]++;
	return 0;
}

static void an_update_shares_every_unchanged_page(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch[3] = { { .blk = 10 }, { .blk = 40000 }, { .blk = 69000 } };
	struct bm_index_stats st = { 0 };
	size_t k1[2] = { 0 }, k2[2] = { 0 };

	ms_reset();
	build(70000, every, 1, root);
	for (int i = 0; i < 3; i++)
		test_sum(ch[i].blk, 2, ch[i].sum);
	assert_int_equal(bm_index_update(&io, V2TREE(root, 70000), ch, 3, 70000, root2, &st, msg, sizeof(msg)), 0);
	/* Three leaves, their two level-1 parents, the root. */
	assert_int_equal(st.pages_written, 6);
	assert_int_equal(bm_index_keys(&io, V2TREE(root, 70000), count_key, k1, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_index_keys(&io, V2TREE(root2, 70000), count_key, k2, NULL, msg, sizeof(msg)), 0);
	/* Both trees have the same number of pages; together they have only
	 * the 6 new ones more than one of them. */
	assert_int_equal(k1[0], k2[0]);
	assert_int_equal(ms.npages, k1[0] + 6);
	assert_int_equal(k1[1], 70000);
	ms_reset();
}

static void an_update_that_changes_nothing_writes_nothing(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch = { .blk = 500 };
	struct bm_index_stats st = { 0 };

	ms_reset();
	build(5000, every, 1, root);
	test_sum(500, 1, ch.sum); /* the sum it already has */
	assert_int_equal(bm_index_update(&io, V2TREE(root, 5000), &ch, 1, 5000, root2, &st, msg, sizeof(msg)), 0);
	assert_string_equal(root, root2);
	assert_int_equal(st.pages_written, 0);
	assert_int_equal(bm_index_update(&io, V2TREE(root, 5000), NULL, 0, 5000, root2, &st, msg, sizeof(msg)), 0);
	assert_string_equal(root, root2);
	assert_int_equal(st.pages_written, 0);
	ms_reset();
}

static void holes_remove_entries_and_empty_pages_vanish(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], root3[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change *ch = calloc(5000, sizeof(*ch));

	ms_reset();
	build(5000, every, 1, root);
	/* Blocks 256..511 (one whole leaf) become holes. */
	for (int i = 0; i < 256; i++)
		ch[i].blk = 256 + (uint64_t)i;
	assert_int_equal(bm_index_update(&io, V2TREE(root, 5000), ch, 256, 5000, root2, NULL, msg, sizeof(msg)), 0);
	expect_block(root2, 5000, 255, 1);
	expect_block(root2, 5000, 300, 0);
	expect_block(root2, 5000, 512, 1);
	/* The same content built from scratch: the same root (canonical). */
	{
		struct bm_index_change *all = calloc(5000, sizeof(*all));
		size_t n = 0;
		for (uint64_t b = 0; b < 5000; b++) {
			if (b >= 256 && b < 512)
				continue;
			all[n].blk = b;
			test_sum(b, 1, all[n].sum);
			n++;
		}
		assert_int_equal(bm_index_update(&io, V2TREE("", 0), all, n, 5000, root3, NULL, msg, sizeof(msg)), 0);
		free(all);
	}
	assert_string_equal(root2, root3);
	/* Every block a hole: no root at all. */
	for (int i = 0; i < 5000; i++) {
		ch[i].blk = (uint64_t)i;
		ch[i].sum[0] = '\0';
	}
	assert_int_equal(bm_index_update(&io, V2TREE(root, 5000), ch, 5000, 5000, root2, NULL, msg, sizeof(msg)), 0);
	assert_string_equal(root2, "");
	free(ch);
	ms_reset();
}

static void the_last_of_several_changes_to_a_block_wins(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch[3] = { { .blk = 7 }, { .blk = 7 }, { .blk = 9 } };
	ms_reset();
	test_sum(7, 1, ch[0].sum);
	test_sum(7, 2, ch[1].sum);
	test_sum(9, 1, ch[2].sum);
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), ch, 3, 100, root, NULL, msg, sizeof(msg)), 0);
	expect_block(root, 100, 7, 2);
	expect_block(root, 100, 8, 0);
	expect_block(root, 100, 9, 1);
	/* Changes out of order are the caller's bug: refused. */
	struct bm_index_change bad[2] = { { .blk = 9 }, { .blk = 7 } };
	test_sum(9, 1, bad[0].sum);
	test_sum(7, 1, bad[1].sum);
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), bad, 2, 100, root, NULL, msg, sizeof(msg)), BM_EINVAL);
	one_line(msg);
	snprintf(bad[1].sum, sizeof(bad[1].sum), "not hex");
	bad[1].blk = 10;
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), bad, 2, 100, root, NULL, msg, sizeof(msg)), BM_EINVAL);
	one_line(msg);
	ms_reset();
}

static bool below_200(uint64_t b)
{
	return b < 200 && b % 3 != 0;
}

static void growing_and_shrinking_keep_the_tree_canonical(void **state)
{
	(void)state;
	char small[BM_SUM_HEX + 1], grown[BM_SUM_HEX + 1], again[BM_SUM_HEX + 1], back[BM_SUM_HEX + 1];
	char msg[256] = "";
	struct bm_index_change ch = { .blk = 69999 };
	struct bm_index_stats st = { 0 };

	ms_reset();
	build(200, below_200, 1, small); /* depth 1: the root is a leaf */
	/* Grown to 70000 blocks (depth 3) with one more block at the end. */
	test_sum(69999, 1, ch.sum);
	assert_int_equal(bm_index_update(&io, V2TREE(small, 200), &ch, 1, 70000, grown, &st, msg, sizeof(msg)), 0);
	/* The old root is shared as the leaf of blocks 0..255: only the new
	 * path, the level-1 page above the old root and the root written. */
	assert_int_equal(st.pages_written, 4);
	for (uint64_t b = 0; b < 200; b++)
		expect_block(grown, 70000, b, below_200(b) ? 1 : 0);
	expect_block(grown, 70000, 69999, 1);
	expect_block(grown, 70000, 69998, 0);
	/* Built from scratch: the same root. */
	{
		struct bm_index_change all[200];
		size_t n = 0;
		for (uint64_t b = 0; b < 200; b++)
			if (below_200(b)) {
				all[n].blk = b;
				test_sum(b, 1, all[n].sum);
				n++;
			}
		all[n++] = ch;
		assert_int_equal(bm_index_update(&io, V2TREE("", 0), all, n, 70000, again, NULL, msg, sizeof(msg)), 0);
	}
	assert_string_equal(grown, again);
	/* Shrunk back to 200 blocks: block 69999 cut off, the first root again. */
	assert_int_equal(bm_index_update(&io, V2TREE(grown, 70000), NULL, 0, 200, back, NULL, msg, sizeof(msg)), 0);
	assert_string_equal(back, small);
	/* Shrunk into a page: only blocks below the new count stay. */
	assert_int_equal(bm_index_update(&io, V2TREE(small, 200), NULL, 0, 100, back, NULL, msg, sizeof(msg)), 0);
	for (uint64_t b = 0; b < 100; b++)
		expect_block(back, 100, b, below_200(b) ? 1 : 0);
	build(100, below_200, 1, again);
	assert_string_equal(back, again);
	/* Shrunk to nothing. */
	assert_int_equal(bm_index_update(&io, V2TREE(grown, 70000), NULL, 0, 0, back, NULL, msg, sizeof(msg)), 0);
	assert_string_equal(back, "");
	ms_reset();
}

static void the_largest_dataset_needs_no_memory_per_block(void **state)
{
	(void)state;
	/* 2^50 bytes of 4 KiB blocks: 2^38 blocks, 5 levels.  Two blocks far
	 * apart cost two paths of pages, nothing per block. */
	const uint64_t nblk = (uint64_t)1 << 38;
	char root[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch[2] = { { .blk = 5 }, { .blk = nblk - 1 } };
	struct bm_index_stats st = { 0 };
	ms_reset();
	test_sum(5, 1, ch[0].sum);
	test_sum(nblk - 1, 1, ch[1].sum);
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), ch, 2, nblk, root, &st, msg, sizeof(msg)), 0);
	assert_int_equal(st.pages_written, 9); /* the root, 4 + 4 below it */
	expect_block(root, nblk, 5, 1);
	expect_block(root, nblk, nblk - 1, 1);
	expect_block(root, nblk, nblk / 2, 0);
	/* More blocks than an index holds: refused. */
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), NULL, 0, BM_INDEX_NBLK_MAX + 1, root, NULL, msg,
					 sizeof(msg)),
			 BM_EINVAL);
	one_line(msg);
	ms_reset();
}

/* ---- diff ------------------------------------------------------------------------- */

struct ranges {
	uint64_t first[64], count[64];
	int n;
};

static int add_range(void *arg, uint64_t first, uint64_t count)
{
	struct ranges *r = arg;
	assert_true(r->n < 64);
	r->first[r->n] = first;
	r->count[r->n] = count;
	r->n++;
	return 0;
}

static void diff_lists_the_changed_ranges_reading_only_differing_pages(void **state)
{
	(void)state;
	const uint64_t nblk = (uint64_t)1 << 17;
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch[6] = { { .blk = 100 }, { .blk = 101 }, { .blk = 102 },
					 { .blk = 256 }, { .blk = 70000 }, { .blk = 131071 } };
	struct bm_index_stats st = { 0 };
	struct ranges r = { .n = 0 };

	ms_reset();
	build(nblk, every, 1, root);
	for (int i = 0; i < 6; i++)
		test_sum(ch[i].blk, 2, ch[i].sum);
	ch[3].sum[0] = '\0'; /* block 256 becomes a hole */
	assert_int_equal(bm_index_update(&io, V2TREE(root, nblk), ch, 6, nblk, root2, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_index_diff(&io, V2TREE(root, nblk), V2TREE(root2, nblk), add_range, &r, &st, msg, sizeof(msg)), 0);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.first[0], 100);
	assert_int_equal(r.count[0], 3);
	assert_int_equal(r.first[1], 256);
	assert_int_equal(r.count[1], 1);
	assert_int_equal(r.first[2], 70000);
	assert_int_equal(r.first[3], 131071);
	/* Pages read: 2 roots; level 1: 2 pages (0 and 1) on each side;
	 * leaves: 4 on each side.  Not the 2 x 515 pages of both trees. */
	assert_int_equal(st.pages_read, 2 + 4 + 8);
	/* A tree against itself: no range, only nothing read. */
	r.n = 0;
	st.pages_read = 0;
	assert_int_equal(bm_index_diff(&io, V2TREE(root, nblk), V2TREE(root, nblk), add_range, &r, &st, msg, sizeof(msg)), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(st.pages_read, 0);
	ms_reset();
}

static void diff_across_sizes_and_against_an_empty_tree(void **state)
{
	(void)state;
	char a[BM_SUM_HEX + 1], b[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch[2] = { { .blk = 65536 }, { .blk = 69999 } };
	struct ranges r = { .n = 0 };

	ms_reset();
	build(300, every, 1, a); /* depth 2 */
	test_sum(65536, 1, ch[0].sum);
	test_sum(69999, 1, ch[1].sum);
	assert_int_equal(bm_index_update(&io, V2TREE(a, 300), ch, 2, 70000, b, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_index_diff(&io, V2TREE(a, 300), V2TREE(b, 70000), add_range, &r, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.first[0], 65536);
	assert_int_equal(r.first[1], 69999);
	r.n = 0;
	assert_int_equal(bm_index_diff(&io, V2TREE("", 0), V2TREE(a, 300), add_range, &r, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.first[0], 0);
	assert_int_equal(r.count[0], 300);
	ms_reset();
}

static int stop_at_first(void *arg, uint64_t first, uint64_t count)
{
	(void)arg;
	(void)first;
	(void)count;
	return 42;
}

static void a_diff_callback_can_stop_the_walk(void **state)
{
	(void)state;
	char a[BM_SUM_HEX + 1], msg[256] = "";
	ms_reset();
	build(1000, sparse, 1, a);
	assert_int_equal(bm_index_diff(&io, V2TREE("", 0), V2TREE(a, 1000), stop_at_first, NULL, NULL, msg, sizeof(msg)), 42);
	ms_reset();
}

/* ---- keys, v1 upgrade -------------------------------------------------------------- */

static int check_key(void *arg, const char *key)
{
	size_t *c = arg;
	if (strncmp(key, "index/", 6) == 0) {
		assert_non_null(ms_find(key + 6));
		c[0]++;
	} else {
		assert_memory_equal(key, "blocks/", 7);
		assert_int_equal(strlen(key), 7 + BM_SUM_HEX);
		c[1]++;
	}
	return 0;
}

static void keys_lists_each_page_and_block_once(void **state)
{
	(void)state;
	char root[BM_SUM_HEX + 1], msg[256] = "";
	size_t c[2] = { 0 };
	struct bm_index_change *ch = calloc(2000, sizeof(*ch));

	ms_reset();
	/* 2000 blocks, all with one of 3 contents: leaves 0..6 repeat. */
	for (uint64_t b = 0; b < 2000; b++) {
		ch[b].blk = b;
		test_sum(b % 3 == 0 ? 0 : 1 + b % 2, 0, ch[b].sum);
	}
	assert_int_equal(bm_index_update(&io, V2TREE("", 0), ch, 2000, 2000, root, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(bm_index_keys(&io, V2TREE(root, 2000), check_key, c, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(c[1], 3);
	assert_int_equal(c[0], ms.npages); /* every page stored is referenced, once */
	free(ch);
	ms_reset();
}

static void a_v1_block_list_upgrades_to_the_same_tree(void **state)
{
	(void)state;
	struct bm_manifest m = { .blksize = 4096, .size = (uint64_t)70000 * 4096 - 100, .generation = 3 };
	char root[BM_SUM_HEX + 1], again[BM_SUM_HEX + 1], msg[256] = "";
	size_t n = 0;

	ms_reset();
	m.blocks = calloc(70000, sizeof(*m.blocks));
	for (uint64_t b = 0; b < 70000; b++) {
		if (!sparse(b))
			continue;
		m.blocks[n].index = b;
		test_sum(b, 1, m.blocks[n].sum);
		m.blocks[n].key = malloc(8 + BM_SUM_HEX);
		snprintf(m.blocks[n].key, 8 + BM_SUM_HEX, "blocks/%s", m.blocks[n].sum);
		n++;
	}
	m.nblocks = n;
	assert_int_equal(bm_index_from_v1(&io, &m, root, NULL, msg, sizeof(msg)), 0);
	build(70000, sparse, 1, again);
	assert_string_equal(root, again);
	expect_block(root, 70000, 3, 1);
	expect_block(root, 70000, 4, 0);
	/* A key v2 cannot express: refused, naming the block. */
	free(m.blocks[5].key);
	m.blocks[5].key = strdup("b/x_y-z.1");
	assert_int_equal(bm_index_from_v1(&io, &m, root, NULL, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "b/x_y-z.1"));
	for (size_t i = 0; i < n; i++)
		free(m.blocks[i].key);
	free(m.blocks);
	ms_reset();
}

/* ---- hostile pages ----------------------------------------------------------------- */

/* A leaf of 3 entries for block base 0: slots 1, 5, 9. */
static size_t sample_leaf(uint8_t *buf)
{
	struct bm_ipage p = { .level = 0, .count = 3, .slot = { 1, 5, 9 } };
	for (int i = 0; i < 3; i++)
		memset(p.sum[i], 0x11 * (i + 1), 16);
	return bm_ipage_encode(&p, buf);
}

static void a_page_round_trips_and_is_exactly_its_entries(void **state)
{
	(void)state;
	uint8_t buf[BM_IPAGE_MAX], again[BM_IPAGE_MAX];
	struct bm_ipage p;
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	size_t len = sample_leaf(buf);
	assert_int_equal(len, BM_IPAGE_HDR + 3 * BM_IPAGE_ENTRY);
	bm_sum_hex(buf, len, sum);
	assert_int_equal(bm_ipage_decode(buf, len, sum, 0, 0, 10, 0, 0, &p, msg, sizeof(msg)), 0);
	assert_int_equal(p.count, 3);
	assert_int_equal(p.slot[2], 9);
	assert_int_equal(bm_ipage_encode(&p, again), len);
	assert_memory_equal(buf, again, len);
	assert_int_equal(BM_IPAGE_MAX, 4360);
}

/* Decodes buf as the page of level 0, base 0, 10 blocks: must fail with
 * code (and a one-line message naming what). */
static void expect_bad_page(const uint8_t *buf, size_t len, int code, const char *what)
{
	struct bm_ipage p;
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	bm_sum_hex(buf, len, sum);
	int rc = bm_ipage_decode(buf, len, sum, 0, 0, 10, 0, 0, &p, msg, sizeof(msg));
	if (rc != code)
		fail_msg("%s: expected %d, got %d (%s)", what, code, rc, msg);
	one_line(msg);
}

static void hostile_page_fields_are_refused_with_one_line(void **state)
{
	(void)state;
	uint8_t good[BM_IPAGE_MAX], b[BM_IPAGE_MAX + 32];
	size_t len = sample_leaf(good);

#define MUTATE(stmt, code, what)                       \
	do {                                           \
		memcpy(b, good, len);                  \
		size_t blen = len;                     \
		stmt;                                  \
		expect_bad_page(b, blen, code, what);  \
	} while (0)

	MUTATE(b[0] = 'X', BM_EFORMAT, "magic");
	MUTATE(b[4] = 2, BM_EFORMAT, "page version");
	MUTATE(b[4] = 0, BM_EFORMAT, "page version 0");
	MUTATE(b[5] = 1, BM_EFORMAT, "level other than the position's");
	MUTATE(b[5] = 200, BM_EFORMAT, "absurd level");
	MUTATE((b[6] = 0, b[7] = 0), BM_EFORMAT, "no entries");
	MUTATE((b[6] = 1, b[7] = 1), BM_EFORMAT, "257 entries");
	MUTATE((b[6] = 0xff, b[7] = 0xff), BM_EFORMAT, "65535 entries");
	MUTATE(b[6] = 2, BM_EFORMAT, "count below the bytes");
	MUTATE(b[6] = 4, BM_EFORMAT, "count above the bytes");
	MUTATE((memset(b + len, 0, 1), blen = len + 1), BM_EFORMAT, "a trailing byte");
	MUTATE(b[8 + 17] = 1, BM_EFORMAT, "duplicate slot");
	MUTATE(b[8 + 17] = 0, BM_EFORMAT, "slot out of order");
	MUTATE(b[8 + 34] = 10, BM_EFORMAT, "slot past the dataset's last block");
	MUTATE(b[8 + 34] = 255, BM_EFORMAT, "slot past the dataset's last block (255)");
	for (size_t cut = 0; cut < len; cut++)
		MUTATE(blen = cut, BM_EFORMAT, "truncated");
#undef MUTATE

	/* A page at another position: base 256 in a dataset of 260 blocks
	 * allows slots 0..3 only. */
	struct bm_ipage p;
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	bm_sum_hex(good, len, sum);
	assert_int_equal(bm_ipage_decode(good, len, sum, 0, 256, 260, 0, 0, &p, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_int_equal(bm_ipage_decode(good, len, sum, 0, 256, 266, 0, 0, &p, msg, sizeof(msg)), 0);
}

static void every_bit_flip_of_a_page_fails_its_key(void **state)
{
	(void)state;
	uint8_t good[BM_IPAGE_MAX], b[BM_IPAGE_MAX];
	struct bm_ipage p;
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	size_t len = sample_leaf(good);

	bm_sum_hex(good, len, sum);
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(b, good, len);
			b[i] ^= (uint8_t)(1u << bit);
			int rc = bm_ipage_decode(b, len, sum, 0, 0, 10, 0, 0, &p, msg, sizeof(msg));
			if (rc != BM_ECHECKSUM)
				fail_msg("flip of byte %zu bit %d: %d (%s)", i, bit, rc, msg);
			one_line(msg);
		}
	/* A key that is not a sum at all. */
	assert_int_equal(bm_ipage_decode(good, len, "../../etc/passwd", 0, 0, 10, 0, 0, &p, msg, sizeof(msg)),
			 BM_EINVAL);
	one_line(msg);
}

/* Stores a hostile page under its true hash, and a root above it (level
 * 1, slot 0) also under its hash: returns the root. */
static void root_over(const uint8_t *leaf, size_t len, char root[BM_SUM_HEX + 1])
{
	char leafsum[BM_SUM_HEX + 1];
	uint8_t rbuf[BM_IPAGE_MAX];
	struct bm_ipage r = { .level = 1, .count = 1 };
	bm_sum_hex(leaf, len, leafsum);
	ms_put_raw(leafsum, leaf, len);
	for (int i = 0; i < 16; i++)
		r.sum[0][i] = (uint8_t)strtoul((char[3]){ leafsum[2 * i], leafsum[2 * i + 1], 0 }, NULL, 16);
	size_t rlen = bm_ipage_encode(&r, rbuf);
	bm_sum_hex(rbuf, rlen, root);
	ms_put_raw(root, rbuf, rlen);
}

/* Every walk over root (a tree of 1000 blocks) fails with code and one
 * line, never a wrong answer. */
static void expect_walks_fail(const char *root, int code, const char *what)
{
	char sum[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], msg[256] = "";
	struct bm_index_change ch = { .blk = 3 };
	struct ranges r = { .n = 0 };
	size_t c[2] = { 0 };
	int rc;

	test_sum(3, 9, ch.sum);
	if ((rc = bm_index_lookup(&io, V2TREE(root, 1000), 1, sum, NULL, NULL, msg, sizeof(msg))) != code)
		fail_msg("%s: lookup gave %d (%s)", what, rc, msg);
	one_line(msg);
	if ((rc = bm_index_update(&io, V2TREE(root, 1000), &ch, 1, 1000, root2, NULL, msg, sizeof(msg))) != code)
		fail_msg("%s: update gave %d (%s)", what, rc, msg);
	one_line(msg);
	if ((rc = bm_index_diff(&io, V2TREE("", 1000), V2TREE(root, 1000), add_range, &r, NULL, msg, sizeof(msg))) != code)
		fail_msg("%s: diff gave %d (%s)", what, rc, msg);
	one_line(msg);
	if ((rc = bm_index_keys(&io, V2TREE(root, 1000), count_key, c, NULL, msg, sizeof(msg))) != code)
		fail_msg("%s: keys gave %d (%s)", what, rc, msg);
	one_line(msg);
}

static void hostile_trees_fail_every_walk_with_one_line(void **state)
{
	(void)state;
	uint8_t leaf[BM_IPAGE_MAX];
	char root[BM_SUM_HEX + 1], leafsum[BM_SUM_HEX + 1];
	size_t len;

	ms_reset();
	/* A leaf whose slots are out of order. */
	len = sample_leaf(leaf);
	leaf[8 + 17] = 0;
	root_over(leaf, len, root);
	expect_walks_fail(root, BM_EFORMAT, "slots out of order");
	/* An interior page where a leaf belongs (a loop would need a page to
	 * hold its own hash; a level that does not go down is refused). */
	len = sample_leaf(leaf);
	leaf[5] = 1;
	root_over(leaf, len, root);
	expect_walks_fail(root, BM_EFORMAT, "level 1 below level 1");
	/* The root itself at the wrong level for the dataset's size. */
	len = sample_leaf(leaf);
	bm_sum_hex(leaf, len, root);
	ms_put_raw(root, leaf, len);
	expect_walks_fail(root, BM_EFORMAT, "a leaf as the root of a depth-2 tree");
	/* A page whose bytes do not hash to its key (damaged in transit). */
	len = sample_leaf(leaf);
	root_over(leaf, len, root);
	bm_sum_hex(leaf, len, leafsum);
	leaf[20] ^= 4;
	ms_put_raw(leafsum, leaf, len);
	expect_walks_fail(root, BM_ECHECKSUM, "wrong hash");
	/* A missing page: the loader's error passes through. */
	expect_walks_fail("0123456789abcdef0123456789abcdef", BM_ENOTFOUND, "missing root");
	/* Truncated pages under their true hash. */
	len = sample_leaf(leaf);
	root_over(leaf, len - 5, root);
	expect_walks_fail(root, BM_EFORMAT, "truncated");
	/* A root that is not a sum. */
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	assert_int_equal(bm_index_lookup(&io, V2TREE("zz", 1000), 1, sum, NULL, NULL, msg, sizeof(msg)), BM_EINVAL);
	one_line(msg);
	/* The loader failing. */
	ms.fail_load = BM_EHTTP;
	assert_int_equal(bm_index_lookup(&io, V2TREE(root, 1000), 1, sum, NULL, NULL, msg, sizeof(msg)), BM_EHTTP);
	ms_reset();
}

/* ---- the v2 manifest -------------------------------------------------------------------- */

static struct bm_manifest2 sample_manifest(void)
{
	struct bm_manifest2 m = { .blksize = 4096, .size = (uint64_t)1 << 29, .generation = 12,
				  .parent = 11 };
	snprintf(m.created, sizeof(m.created), "2026-11-29T09:00:00Z");
	snprintf(m.root, sizeof(m.root), "00112233445566778899aabbccddeeff");
	m.attrs = (char *)"{\"units\":\"K\",\"n\":[1,2]}";
	return m;
}

static void a_v2_manifest_round_trips_and_v1_readers_refuse_it(void **state)
{
	(void)state;
	struct bm_manifest2 m = sample_manifest(), *p = NULL;
	struct bm_manifest *v1 = NULL;
	char msg[256] = "";
	size_t len, len2;
	char *text = bm_manifest2_dump(&m, &len);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	assert_true(len < 400); /* small: the block table is in the pages */
	assert_int_equal(bm_manifest2_parse(text, len, &p, msg, sizeof(msg)), 0);
	assert_int_equal(p->blksize, 4096);
	assert_int_equal(p->size, m.size);
	assert_int_equal(p->generation, 12);
	assert_int_equal(p->parent, 11);
	assert_string_equal(p->root, m.root);
	assert_string_equal(p->created, m.created);
	assert_string_equal(p->attrs, m.attrs);
	char *text2 = bm_manifest2_dump(p, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(text, text2, len);
	/* This version's v1 reader refuses it with its version error. */
	assert_int_equal(bm_manifest_parse(text, len, &v1, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "version 2"));
	/* And the v2 reader refuses a v1 manifest (no self-checksum). */
	struct bm_manifest one = { .blksize = 4096, .size = 4096, .generation = 1 };
	size_t l1;
	char *t1 = bm_manifest_dump(&one, &l1);
	bm_manifest2_free(p);
	assert_int_equal(bm_manifest2_parse(t1, l1, &p, msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	free(t1);
	free(text);
	free(text2);
	/* No root, no attrs: a dataset of holes. */
	m.root[0] = '\0';
	m.attrs = NULL;
	text = bm_manifest2_dump(&m, &len);
	assert_non_null(strstr(text, "\"root\":null"));
	assert_int_equal(bm_manifest2_parse(text, len, &p, msg, sizeof(msg)), 0);
	assert_string_equal(p->root, "");
	assert_null(p->attrs);
	bm_manifest2_free(p);
	free(text);
}

static void every_byte_flip_of_a_v2_manifest_is_a_checksum_error(void **state)
{
	(void)state;
	struct bm_manifest2 m = sample_manifest(), *p = NULL;
	char msg[256] = "";
	size_t len;
	char *text = bm_manifest2_dump(&m, &len), *b = malloc(len + 1);

	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(b, text, len);
			b[i] ^= (char)(1u << bit);
			int rc = bm_manifest2_parse(b, len, &p, msg, sizeof(msg));
			if (rc != BM_ECHECKSUM)
				fail_msg("flip of byte %zu bit %d: %d (%s)", i, bit, rc, msg);
			assert_null(p);
			one_line(msg);
		}
	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(bm_manifest2_parse(text, cut, &p, msg, sizeof(msg)), BM_ECHECKSUM);
		one_line(msg);
	}
	free(b);
	free(text);
}

/* Re-seals JSON text (everything but the checksum field) with a correct
 * checksum, so that what is checked is the field, not the sum. */
static char *seal(const char *body, size_t *lenp)
{
	const char *field = ",\"manifest_sum\":\"";
	size_t bl = strlen(body);
	char *out = malloc(bl + strlen(field) + BM_SUM_HEX + 3);
	assert_true(bl > 0 && body[bl - 1] == '}');
	memcpy(out, body, bl - 1);
	strcpy(out + bl - 1, field);
	size_t plen = strlen(out);
	bm_sum_hex(out, plen, out + plen);
	strcpy(out + plen + BM_SUM_HEX, "\"}");
	*lenp = strlen(out);
	return out;
}

static void hostile_v2_manifest_fields_are_refused_with_one_line(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"{}",
		"{\"format\":\"blkmap-dataset\",\"version\":1,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":3,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"other\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"md5\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":5000,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":-1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1125899906842625,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":0,\"parent\":0,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":2,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":\"1\",\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":\"ABCDEF00112233445566778899aabbcc\"}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":\"../gen/1.json\"}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":7}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":0,\"generation\":2,\"parent\":1,\"root\":\"00112233445566778899aabbccddeeff\"}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null,\"attrs\":[1]}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"format\":\"blkmap-dataset\",\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}",
		"{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null,}",
	};
	struct bm_manifest2 *p = NULL;
	char msg[256] = "";
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *t = seal(bad[i], &len);
		int rc = bm_manifest2_parse(t, len, &p, msg, sizeof(msg));
		if (rc != BM_EFORMAT)
			fail_msg("case %zu: %d (%s): %s", i, rc, msg, t);
		assert_null(p);
		one_line(msg);
		free(t);
	}
	/* The same, well formed: accepted (the cases differ by their field). */
	char *t = seal("{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null,\"future\":[1]}",
		       &len);
	assert_int_equal(bm_manifest2_parse(t, len, &p, msg, sizeof(msg)), 0);
	bm_manifest2_free(p);
	free(t);
	/* Attributes over 64 KiB compact. */
	size_t big = 70000;
	char *body = malloc(big + 300);
	int k = snprintf(body, 300, "{\"format\":\"blkmap-dataset\",\"version\":2,\"checksum\":\"xxh128\",\"blksize\":4096,\"size\":1,\"generation\":2,\"parent\":1,\"root\":null,\"attrs\":{\"a\":\"");
	memset(body + k, 'x', big);
	strcpy(body + k + big, "\"}}");
	t = seal(body, &len);
	assert_int_equal(bm_manifest2_parse(t, len, &p, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	free(t);
	free(body);
	/* Far too long. */
	body = calloc(1, BM_MANIFEST2_MAX + 10);
	memset(body, ' ', BM_MANIFEST2_MAX + 1);
	assert_int_equal(bm_manifest2_parse(body, BM_MANIFEST2_MAX + 1, &p, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	free(body);
}

static void the_version_of_a_manifest_tells_damage_from_a_bad_manifest(void **state)
{
	(void)state;
	struct bm_manifest2 m = sample_manifest();
	struct bm_manifest one = { .blksize = 4096, .size = 4096, .generation = 1 };
	char msg[256] = "";
	size_t l1, l2, len;
	char *v1 = bm_manifest_dump(&one, &l1), *v2 = bm_manifest2_dump(&m, &l2), *t;

	assert_int_equal(bm_manifest_version(v1, l1, msg, sizeof(msg)), 1);
	assert_int_equal(bm_manifest_version(v2, l2, msg, sizeof(msg)), 2);
	/* Damage: a flipped digit of a v2 manifest, a v1 manifest cut short,
	 * "version": 2 whose self-checksum field is gone. */
	v2[40] ^= 1;
	assert_int_equal(bm_manifest_version(v2, l2, msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	assert_int_equal(bm_manifest_version(v1, l1 - 3, msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	static const char no_sum[] = "{\"format\":\"blkmap-dataset\",\"version\":2}";
	assert_int_equal(bm_manifest_version(no_sum, strlen(no_sum), msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	/* Bad manifests, not damage: a version not known, sealed or not; no
	 * version. */
	t = seal("{\"format\":\"blkmap-dataset\",\"version\":5}", &len);
	assert_int_equal(bm_manifest_version(t, len, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "format version 5, not 2, 3 or 4 (this reader knows 1 to 4)"));
	free(t);
	static const char v5[] = "{\"format\":\"blkmap-dataset\",\"version\":5}";
	assert_int_equal(bm_manifest_version(v5, strlen(v5), msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	static const char none[] = "{\"format\":\"blkmap-dataset\"}";
	assert_int_equal(bm_manifest_version(none, strlen(none), msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	free(v1);
	free(v2);
}


/* ---- format v3: piece sums ---------------------------------------------------- */

/* Bytes of a block of len bytes, seeded. */
static uint8_t *block_bytes(size_t len, unsigned seed)
{
	uint8_t *b = malloc(len + 1);
	uint32_t x = seed * 2654435761u + 1;
	assert_non_null(b);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (uint8_t)(x >> 16);
	}
	return b;
}

/* A 1 MiB block's piece sums in pieces of piece bytes (64 KiB: format
 * 3; else 4). */
static void block_piece_sums_case(size_t piece)
{
	const unsigned pieces = (unsigned)(((size_t)1 << 20) / piece); /* 1 MiB blocks */
	const size_t lens[] = { 1 << 20, (1 << 20) - 1, 3 * piece + 17, piece, 1 };
	uint8_t *psum = malloc(pieces * 16);
	assert_non_null(psum);
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t len = lens[k];
		uint8_t *b = block_bytes(len, (unsigned)k);
		char sum[BM_SUM_HEX + 1], whole[BM_SUM_HEX + 1], streamed[BM_SUM_HEX + 1], msg[256];
		unsigned np = bm_pieces_of(len, piece);
		bm_pieces_sum(b, len, piece, pieces, psum, sum);
		/* Each piece sum is the xxh128 of its bytes; the block's sum
		 * that of the piece sums; the unused ones zeros. */
		for (unsigned i = 0; i < np; i++) {
			size_t off = (size_t)i * piece;
			size_t plen = len - off < piece ? len - off : piece;
			assert_int_equal(bm_piece_verify(psum, i, b + off, plen, msg, sizeof(msg)), 0);
		}
		for (unsigned i = np; i < pieces; i++)
			for (int j = 0; j < 16; j++)
				assert_int_equal(psum[i * 16 + j], 0);
		bm_sum_hex(psum, (size_t)np * 16, whole);
		assert_string_equal(sum, whole);
		if (len > 1) {
			bm_sum_hex(b, len, whole);
			assert_string_not_equal(sum, whole); /* not the v2 sum of the bytes */
		}
		assert_int_equal(bm_pieces_check(sum, psum, pieces, piece, len, msg, sizeof(msg)), 0);
		/* A length that makes another number of pieces. */
		if (np < pieces) {
			assert_int_equal(bm_pieces_check(sum, psum, pieces, piece, len + piece, msg,
							 sizeof(msg)),
					 BM_EFORMAT);
			one_line(msg);
		}
		/* Streamed in chunks of several sizes, and again after a reset
		 * (a retried GET starts over). */
		const size_t chunks[] = { 1, 4096, 16384 + 3, piece, 1 << 20 };
		struct bm_piece_hash *h = bm_piece_hash_new(pieces, piece);
		assert_non_null(h);
		for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
			bm_piece_hash_reset(h);
			bm_piece_hash_update(h, b, len / 3); /* a first try, cut */
			bm_piece_hash_reset(h);
			for (size_t off = 0; off < len; off += chunks[c])
				bm_piece_hash_update(h, b + off, len - off < chunks[c] ? len - off : chunks[c]);
			bm_piece_hash_final(h, streamed);
			assert_string_equal(streamed, sum);
		}
		/* More bytes than the block has pieces for: no sum matches. */
		if (len == (1 << 20)) {
			bm_piece_hash_reset(h);
			bm_piece_hash_update(h, b, len);
			bm_piece_hash_update(h, b, 1);
			bm_piece_hash_final(h, streamed);
			assert_string_not_equal(streamed, sum);
		}
		bm_piece_hash_free(h);
		/* A damaged piece fails its own sum, naming the piece. */
		b[len - 1] ^= 0x40;
		assert_int_equal(bm_piece_verify(psum, np - 1, b + (size_t)(np - 1) * piece,
						 len - (size_t)(np - 1) * piece, msg, sizeof(msg)),
				 BM_ECHECKSUM);
		one_line(msg);
		char want[16];
		snprintf(want, sizeof(want), "piece %u:", np - 1);
		assert_non_null(strstr(msg, want));
		free(b);
	}
	free(psum);
}

static void a_blocks_v3_sum_is_the_sum_of_its_piece_sums_however_its_bytes_arrive(void **state)
{
	(void)state;
	block_piece_sums_case(BM_PIECE_SIZE);
}

/* Format 4: the same with the pieces its manifest says (16 KiB, and the
 * smallest, 4 KiB: 256 of a 1 MiB block). */
static void a_blocks_v4_sum_is_the_sum_of_its_piece_sums_of_any_piece_size(void **state)
{
	(void)state;
	block_piece_sums_case((size_t)16 << 10);
	block_piece_sums_case(BM_PIECE_MIN);
}

/* Pieces [p0, p0 + k) of a block streamed through a piece hash (a Range
 * GET of them) are each checked against their own sums: a damaged one is
 * named with its length (a short last piece's too), and more bytes than
 * the k pieces asked for fail. */
static void streamed_pieces_are_each_checked_against_their_own_sums(void **state)
{
	(void)state;
	const unsigned pieces = 16;
	const size_t len = 5 * BM_PIECE_SIZE + 1000; /* 6 pieces, the last 1000 bytes */
	const size_t n = len - 2 * BM_PIECE_SIZE, chunk = 10007;
	uint8_t *b = block_bytes(len, 77), *psum = malloc(pieces * 16);
	const uint8_t *from = b + 2 * BM_PIECE_SIZE; /* pieces 2 to 5 */
	struct bm_piece_hash *h = bm_piece_hash_new(4, BM_PIECE_SIZE);
	char sum[BM_SUM_HEX + 1], msg[256];

	assert_non_null(psum);
	assert_non_null(h);
	bm_pieces_sum(b, len, BM_PIECE_SIZE, pieces, psum, sum);
	bm_piece_hash_reset(h);
	bm_piece_hash_update(h, from, n / 2); /* a first try, cut */
	bm_piece_hash_reset(h);
	for (size_t off = 0; off < n; off += chunk)
		bm_piece_hash_update(h, from + off, n - off < chunk ? n - off : chunk);
	assert_int_equal(bm_piece_hash_check(h, psum, 2, msg, sizeof(msg)), 0);
	/* Checked as pieces 1 to 4: the first differs. */
	bm_piece_hash_reset(h);
	bm_piece_hash_update(h, from, n);
	assert_int_equal(bm_piece_hash_check(h, psum, 1, msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	assert_non_null(strstr(msg, "piece 1: checksum mismatch: its 65536 bytes hash to "));
	/* A byte of piece 4 flipped, then one of the short piece 5. */
	const size_t flip[] = { 4 * BM_PIECE_SIZE + 9, len - 1 };
	const char *says[] = { "piece 4: checksum mismatch: its 65536 bytes",
			       "piece 5: checksum mismatch: its 1000 bytes" };
	for (int i = 0; i < 2; i++) {
		b[flip[i]] ^= 0x10;
		bm_piece_hash_reset(h);
		bm_piece_hash_update(h, from, n);
		assert_int_equal(bm_piece_hash_check(h, psum, 2, msg, sizeof(msg)), BM_ECHECKSUM);
		one_line(msg);
		assert_non_null(strstr(msg, says[i]));
		b[flip[i]] ^= 0x10;
	}
	/* A fifth piece's bytes past the four asked for. */
	bm_piece_hash_reset(h);
	bm_piece_hash_update(h, from, n);
	bm_piece_hash_update(h, b, BM_PIECE_SIZE);
	assert_int_equal(bm_piece_hash_check(h, psum, 2, msg, sizeof(msg)), BM_ECHECKSUM);
	assert_non_null(strstr(msg, "more bytes than the 4 pieces asked for"));
	bm_piece_hash_free(h);
	free(psum);
	free(b);
}

/* A tree of format format (0: 3) of nblk blocks of pieces pieces of piece
 * bytes each, every block stored, the last one last_len bytes; block b's
 * bytes are block_bytes(.., b + seed).  psums gets each block's piece
 * sums (nblk x pieces x 16). */
static void build_pieces(uint64_t nblk, unsigned pieces, size_t piece, unsigned format,
			 size_t last_len, unsigned seed, uint8_t *psums, char root[BM_SUM_HEX + 1])
{
	struct bm_index_change *ch = calloc(nblk, sizeof(*ch));
	size_t bs = (size_t)pieces * piece;
	char msg[256] = "";
	assert_non_null(ch);
	for (uint64_t b = 0; b < nblk; b++) {
		size_t len = b + 1 == nblk ? last_len : bs;
		uint8_t *bytes = block_bytes(len, (unsigned)b + seed);
		ch[b].blk = b;
		ch[b].psum = psums + b * pieces * 16;
		bm_pieces_sum(bytes, len, piece, pieces, psums + b * pieces * 16, ch[b].sum);
		free(bytes);
	}
	const struct bm_itree empty = { .root = "", .pieces = pieces, .format = format };
	int rc = bm_index_update(&io, &empty, ch, nblk, nblk, root, NULL, msg, sizeof(msg));
	if (rc != 0)
		fail_msg("build_pieces: %d %s", rc, msg);
	free(ch);
}

/* A format 3 tree (64 KiB pieces), as build_pieces. */
static void build_v3(uint64_t nblk, unsigned pieces, size_t last_len, unsigned seed,
		     uint8_t *psums, char root[BM_SUM_HEX + 1])
{
	build_pieces(nblk, pieces, BM_PIECE_SIZE, 0, last_len, seed, psums, root);
}

static void a_v3_tree_keeps_each_blocks_piece_sums_through_updates(void **state)
{
	(void)state;
	const unsigned pieces = 4; /* 256 KiB blocks */
	const uint64_t nblk = 300;  /* two leaves and a root */
	const size_t last = BM_PIECE_SIZE + 5;
	uint8_t *psums = malloc(nblk * pieces * 16), got[4 * 16];
	char root[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1], sum[BM_SUM_HEX + 1], msg[256] = "";
	assert_non_null(psums);
	ms_reset();
	build_v3(nblk, pieces, last, 0, psums, root);
	const struct bm_itree t = { root, nblk, pieces };
	for (uint64_t b = 0; b < nblk; b += 37) {
		assert_int_equal(bm_index_lookup(&io, &t, b, sum, got, NULL, msg, sizeof(msg)), 1);
		assert_memory_equal(got, psums + b * pieces * 16, pieces * 16);
	}
	assert_int_equal(bm_index_lookup(&io, &t, nblk - 1, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_int_equal(bm_pieces_check(sum, got, pieces, BM_PIECE_SIZE, last, msg, sizeof(msg)), 0);
	/* A full leaf: 256 entries of 17 + 4 x 16 bytes. */
	assert_int_equal(bm_ipage_len(0, 256, pieces), 8 + 256 * (17 + 64));
	/* One block changed: the others keep their piece sums. */
	uint8_t *bytes = block_bytes(pieces * BM_PIECE_SIZE, 999), nps[4 * 16];
	struct bm_index_change ch = { .blk = 5, .psum = nps };
	bm_pieces_sum(bytes, pieces * BM_PIECE_SIZE, BM_PIECE_SIZE, pieces, nps, ch.sum);
	free(bytes);
	assert_int_equal(bm_index_update(&io, &t, &ch, 1, nblk, root2, NULL, msg, sizeof(msg)), 0);
	const struct bm_itree t2 = { root2, nblk, pieces };
	assert_int_equal(bm_index_lookup(&io, &t2, 5, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_string_equal(sum, ch.sum);
	assert_memory_equal(got, nps, sizeof(nps));
	assert_int_equal(bm_index_lookup(&io, &t2, 6, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_memory_equal(got, psums + 6 * pieces * 16, pieces * 16);
	/* A stored block without piece sums cannot enter a v3 tree. */
	ch.psum = NULL;
	assert_int_equal(bm_index_update(&io, &t, &ch, 1, nblk, root2, NULL, msg, sizeof(msg)), BM_EINVAL);
	one_line(msg);
	/* Read as a v2 tree (a v2 reader), every walk refuses its pages. */
	const struct bm_itree as_v2 = { root, nblk, 0 };
	assert_int_equal(bm_index_lookup(&io, &as_v2, 1, sum, NULL, NULL, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "page version 2 (format 3) in a tree of format version 2"));
	ms_reset();
	free(psums);
}

static void child_sum(const char *sum, unsigned level, uint64_t nblk, unsigned pieces,
		      unsigned format, unsigned i, char out[BM_SUM_HEX + 1]);

/* A format 4 tree (here 64 KiB blocks of 16 KiB pieces) is a format 3
 * tree whose pages have page version 3: its leaves keep each block's
 * piece sums through updates, and a tree of either format refuses the
 * other's pages, naming both formats. */
static void a_v4_tree_has_page_version_3_and_refuses_v3_pages_and_the_reverse(void **state)
{
	(void)state;
	const unsigned pieces = 4;
	const size_t piece = (size_t)16 << 10;
	const uint64_t nblk = 300;
	const size_t last = piece + 5; /* 2 pieces */
	uint8_t *psums = malloc(nblk * pieces * 16), got[4 * 16];
	char root[BM_SUM_HEX + 1], root3[BM_SUM_HEX + 1], root2[BM_SUM_HEX + 1];
	char sum[BM_SUM_HEX + 1], leaf[BM_SUM_HEX + 1], msg[256] = "";
	assert_non_null(psums);
	ms_reset();
	build_pieces(nblk, pieces, piece, 4, last, 0, psums, root);
	const struct bm_itree t = { root, nblk, pieces, 4 };
	for (uint64_t b = 0; b < nblk; b += 37) {
		assert_int_equal(bm_index_lookup(&io, &t, b, sum, got, NULL, msg, sizeof(msg)), 1);
		assert_memory_equal(got, psums + b * pieces * 16, pieces * 16);
	}
	assert_int_equal(bm_index_lookup(&io, &t, nblk - 1, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_int_equal(bm_pieces_check(sum, got, pieces, piece, last, msg, sizeof(msg)), 0);
	/* Its length as a 64 KiB-piece block's: another number of pieces. */
	assert_int_equal(bm_pieces_check(sum, got, pieces, BM_PIECE_SIZE, last, msg, sizeof(msg)),
			 BM_EFORMAT);
	one_line(msg);
	/* Every page has page version 3; a leaf decodes as format 4 only. */
	struct mpage *mp = ms_find(root);
	assert_non_null(mp);
	assert_int_equal(mp->data[4], 3);
	child_sum(root, 1, nblk, pieces, 4, 0, leaf);
	mp = ms_find(leaf);
	assert_non_null(mp);
	assert_int_equal(mp->data[4], 3);
	struct bm_ipage *p = bm_ipage_new();
	assert_non_null(p);
	assert_int_equal(bm_ipage_decode(mp->data, mp->len, leaf, 0, 0, nblk, pieces, 4, p, msg,
					 sizeof(msg)), 0);
	assert_int_equal(p->format, 4);
	uint8_t again[8 + 256 * (17 + 64)];
	assert_int_equal(bm_ipage_encode(p, again), mp->len);
	assert_memory_equal(again, mp->data, mp->len);
	assert_int_equal(bm_ipage_decode(mp->data, mp->len, leaf, 0, 0, nblk, pieces, 0, p, msg,
					 sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "page version 3 (format 4) in a tree of format version 3"));
	bm_ipage_free(p);
	/* An update keeps the format. */
	uint8_t *bytes = block_bytes(pieces * piece, 999), nps[4 * 16];
	struct bm_index_change ch = { .blk = 5, .psum = nps };
	bm_pieces_sum(bytes, pieces * piece, piece, pieces, nps, ch.sum);
	free(bytes);
	assert_int_equal(bm_index_update(&io, &t, &ch, 1, nblk, root2, NULL, msg, sizeof(msg)), 0);
	assert_int_equal(ms_find(root2)->data[4], 3);
	const struct bm_itree t2 = { root2, nblk, pieces, 4 };
	assert_int_equal(bm_index_lookup(&io, &t2, 5, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_memory_equal(got, nps, sizeof(nps));
	/* Read as a v3 tree of the same pieces, or a v2 tree: refused. */
	const struct bm_itree as_v3 = { root, nblk, pieces, 0 }, as_v2 = { root, nblk, 0, 0 };
	assert_int_equal(bm_index_lookup(&io, &as_v3, 1, sum, NULL, NULL, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "page version 3 (format 4) in a tree of format version 3"));
	assert_int_equal(bm_index_lookup(&io, &as_v2, 1, sum, NULL, NULL, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "page version 3 (format 4) in a tree of format version 2"));
	/* A v3 tree read as a v4 one: refused the same way. */
	build_v3(nblk, pieces, BM_PIECE_SIZE + 5, 0, psums, root3);
	const struct bm_itree v3_as_v4 = { root3, nblk, pieces, 4 };
	assert_int_equal(bm_index_lookup(&io, &v3_as_v4, 1, sum, NULL, NULL, msg, sizeof(msg)),
			 BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "page version 2 (format 3) in a tree of format version 4"));
	ms_reset();
	free(psums);
}

/* The sum of child i of page sum (level > 0), as hex. */
static void child_sum(const char *sum, unsigned level, uint64_t nblk, unsigned pieces,
		      unsigned format, unsigned i, char out[BM_SUM_HEX + 1])
{
	struct bm_ipage *p = bm_ipage_new();
	struct mpage *mp = ms_find(sum);
	char msg[256] = "";
	assert_non_null(p);
	assert_non_null(mp);
	assert_int_equal(bm_ipage_decode(mp->data, mp->len, sum, (int)level, 0, nblk, pieces, format, p,
					 msg, sizeof(msg)), 0);
	assert_true(i < p->count);
	static const char hx[] = "0123456789abcdef";
	for (int k = 0; k < 16; k++) {
		out[2 * k] = hx[p->sum[i][k] >> 4];
		out[2 * k + 1] = hx[p->sum[i][k] & 15];
	}
	out[BM_SUM_HEX] = '\0';
	bm_ipage_free(p);
}

/* A lookup through a cache that marks pages it saw pass a whole decode
 * (what a dataset's miss goes through) decodes each page in full once:
 * later lookups neither hash a marked page again nor check its other
 * entries' piece sums, yet still check what its place decides (its last
 * entry below the dataset's blocks, the found entry's pieces) and the
 * entry they return. */
static void a_page_checked_once_is_searched_in_place_and_its_place_still_checked(void **state)
{
	(void)state;
	const unsigned pieces = 4;
	const uint64_t nblk = 300; /* a root and two leaves */
	const size_t last = BM_PIECE_SIZE + 5; /* the last block has 2 pieces */
	uint8_t *psums = malloc(nblk * pieces * 16), got[4 * 16];
	char root[BM_SUM_HEX + 1], leaf0[BM_SUM_HEX + 1], sum[BM_SUM_HEX + 1], want[BM_SUM_HEX + 1];
	char msg[256] = "";
	assert_non_null(psums);
	ms_reset();
	build_v3(nblk, pieces, last, 0, psums, root);
	const struct bm_itree t = { root, nblk, pieces };
	ms_marks = 0;
	for (uint64_t b = 0; b < nblk; b++) {
		assert_int_equal(bm_index_lookup(&io_checked, &t, b, sum, got, NULL, msg, sizeof(msg)), 1);
		assert_int_equal(bm_index_lookup(&io, &t, b, want, NULL, NULL, msg, sizeof(msg)), 1);
		assert_string_equal(sum, want);
		assert_memory_equal(got, psums + b * pieces * 16, pieces * 16);
	}
	assert_int_equal(ms_marks, 3); /* the root and both leaves, once each */

	/* Entry 0's first piece sum damaged in place: the marked leaf is not
	 * hashed again, so block 1 still reads (the plain io's whole decode
	 * refuses the page), while block 0's own entry is checked. */
	child_sum(root, 1, nblk, pieces, 0, 0, leaf0);
	struct mpage *mp = ms_find(leaf0);
	assert_non_null(mp);
	assert_true(mp->checked);
	mp->data[BM_IPAGE_HDR + BM_IPAGE_ENTRY] ^= 0x01;
	assert_int_equal(bm_index_lookup(&io_checked, &t, 1, sum, got, NULL, msg, sizeof(msg)), 1);
	assert_memory_equal(got, psums + 1 * pieces * 16, pieces * 16);
	assert_int_equal(bm_index_lookup(&io, &t, 1, sum, NULL, NULL, msg, sizeof(msg)), BM_ECHECKSUM);
	one_line(msg);
	assert_int_equal(bm_index_lookup(&io_checked, &t, 0, sum, got, NULL, msg, sizeof(msg)),
			 BM_ECHECKSUM);
	one_line(msg);
	assert_non_null(strstr(msg, "checksum mismatch"));
	mp->data[BM_IPAGE_HDR + BM_IPAGE_ENTRY] ^= 0x01;

	/* The same marked pages in a tree of 257 blocks: leaf 1 holds blocks
	 * up to 299, past the end. */
	const struct bm_itree t257 = { root, 257, pieces };
	assert_int_equal(bm_index_lookup(&io_checked, &t257, 256, sum, got, NULL, msg, sizeof(msg)),
			 BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "past the dataset's 257 blocks"));
	/* ... in a tree of 301: block 299, short, is no longer the last. */
	const struct bm_itree t301 = { root, 301, pieces };
	assert_int_equal(bm_index_lookup(&io_checked, &t301, 299, sum, got, NULL, msg, sizeof(msg)),
			 BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "2 piece sums for a full block of 4"));
	/* ... read as a v2 tree. */
	const struct bm_itree as_v2 = { root, nblk, 0 };
	assert_int_equal(bm_index_lookup(&io_checked, &as_v2, 1, sum, NULL, NULL, msg, sizeof(msg)),
			 BM_EFORMAT);
	one_line(msg);
	assert_int_equal(ms_marks, 3); /* what failed was not marked again */
	ms_reset();
	free(psums);
}

/* A v3 leaf of level 0, base 0, 3 blocks of 2 pieces (128 KiB), the last
 * one piece; entries for blocks 0, 1, 2.  Returns its length. */
static size_t sample_v3_leaf(uint8_t *buf, uint8_t *psums)
{
	struct bm_ipage *p = bm_ipage_new();
	assert_non_null(p);
	p->level = 0;
	p->pieces = 2;
	p->count = 3;
	assert_int_equal(bm_ipage_reserve(p, 3), 0);
	for (unsigned i = 0; i < 3; i++) {
		size_t len = i == 2 ? 100 : 2 * BM_PIECE_SIZE;
		uint8_t *b = block_bytes(len, 40 + i);
		char hex[BM_SUM_HEX + 1];
		bm_pieces_sum(b, len, BM_PIECE_SIZE, 2, psums + i * 32, hex);
		memcpy(p->psum + i * 32, psums + i * 32, 32);
		for (int k = 0; k < 16; k++) {
			char h[3] = { hex[2 * k], hex[2 * k + 1], 0 };
			p->sum[i][k] = (uint8_t)strtoul(h, NULL, 16);
		}
		p->slot[i] = (uint8_t)i;
		free(b);
	}
	size_t len = bm_ipage_encode(p, buf);
	bm_ipage_free(p);
	return len;
}

static void hostile_v3_leaves_are_refused_with_one_line(void **state)
{
	(void)state;
	uint8_t good[8 + 3 * (17 + 32)], b[sizeof(good) + 8], psums[3 * 32];
	size_t len = sample_v3_leaf(good, psums);
	struct bm_ipage *p = bm_ipage_new();
	char sum[BM_SUM_HEX + 1], msg[256] = "";
	assert_int_equal(len, sizeof(good));
	assert_int_equal(good[4], 2); /* the page version of a v3 tree */
	bm_sum_hex(good, len, sum);
	assert_int_equal(bm_ipage_decode(good, len, sum, 0, 0, 3, 2, 0, p, msg, sizeof(msg)), 0);
	assert_int_equal(p->count, 3);
	assert_memory_equal(p->psum, psums, sizeof(psums));
	uint8_t again[sizeof(good)];
	assert_int_equal(bm_ipage_encode(p, again), len);
	assert_memory_equal(again, good, len);

#define EXPECT_BAD(stmt, nblk, pieces, what)                                                      \
	do {                                                                                      \
		memcpy(b, good, len);                                                             \
		size_t blen = len;                                                                \
		stmt;                                                                             \
		bm_sum_hex(b, blen, sum);                                                         \
		int rc = bm_ipage_decode(b, blen, sum, 0, 0, nblk, pieces, 0, p, msg, sizeof(msg)); \
		if (rc != BM_EFORMAT)                                                             \
			fail_msg("%s: expected BM_EFORMAT, got %d (%s)", what, rc, msg);          \
		one_line(msg);                                                                    \
	} while (0)

	/* A piece sum that does not hash to its block's sum (entry 1's
	 * second), one of zeros followed by one that is not, none at all. */
	EXPECT_BAD(b[8 + 49 + 17 + 16] ^= 1, 3, 2, "a piece sum that lies");
	EXPECT_BAD(memset(b + 8 + 49 + 17, 0, 16), 3, 2, "a zero piece sum before a real one");
	EXPECT_BAD(memset(b + 8 + 98 + 17, 0, 32), 3, 2, "no piece sum");
	/* The short block (one piece) is not the dataset's last. */
	EXPECT_BAD((void)0, 4, 2, "a short block that is not the last");
	/* Read with another number of pieces, or as a v2 page. */
	EXPECT_BAD((void)0, 3, 4, "another number of pieces");
	EXPECT_BAD((void)0, 3, 0, "a v3 page in a v2 tree");
	EXPECT_BAD(b[4] = 1, 3, 2, "a v2 page in a v3 tree");
	for (size_t cut = 0; cut < len; cut += 7)
		EXPECT_BAD(blen = cut, 3, 2, "truncated");
#undef EXPECT_BAD
	/* More pieces than a 64 MiB block has: the caller's error. */
	assert_int_equal(bm_ipage_decode(good, len, NULL, 0, 0, 3, BM_PIECES_MAX + 1, 0, p, msg, sizeof(msg)),
			 BM_EINVAL);
	bm_ipage_free(p);
}

static void a_v3_manifest_round_trips_and_needs_blocks_above_64k(void **state)
{
	(void)state;
	struct bm_manifest2 m = sample_manifest(), *p = NULL;
	struct bm_manifest *any = NULL;
	char msg[256] = "";
	size_t len;

	m.version = 3;
	m.blksize = (size_t)1 << 20;
	char *text = bm_manifest2_dump(&m, &len);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"version\":3"));
	assert_int_equal(bm_manifest_version(text, len, msg, sizeof(msg)), 3);
	assert_int_equal(bm_manifest2_parse(text, len, &p, msg, sizeof(msg)), 0);
	assert_int_equal(p->version, 3);
	bm_manifest2_free(p);
	assert_int_equal(bm_manifest_parse_any(text, len, &any, msg, sizeof(msg)), 0);
	assert_int_equal(any->version, 3);
	assert_int_equal(bm_manifest_pieces(any), 16);
	size_t len2;
	char *again = bm_manifest_dump_any(any, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(again, text, len);
	free(again);
	bm_manifest_free(any);
	free(text);
	/* Version 3 with blocks of 64 KiB or less: refused. */
	m.blksize = BM_PIECE_SIZE;
	text = bm_manifest2_dump(&m, &len);
	assert_int_equal(bm_manifest2_parse(text, len, &p, msg, sizeof(msg)), BM_EFORMAT);
	one_line(msg);
	assert_non_null(strstr(msg, "blksize"));
	free(text);
	/* A v2 manifest has no piece sums in its tree. */
	m.version = 2;
	text = bm_manifest2_dump(&m, &len);
	assert_int_equal(bm_manifest_parse_any(text, len, &any, msg, sizeof(msg)), 0);
	assert_int_equal(bm_manifest_pieces(any), 0);
	bm_manifest_free(any);
	free(text);
}

/* A version 4 manifest says its piece size ("piece"), kept through a
 * round trip; a piece that is not a power of two from 4096 to blksize/2
 * (at most 1024 a block), a version 4 without one and a version 2 or 3
 * with one are refused with one line naming it. */
static void a_v4_manifest_round_trips_its_piece_and_refuses_bad_ones(void **state)
{
	(void)state;
	struct bm_manifest2 m = sample_manifest(), *p = NULL;
	struct bm_manifest *any = NULL;
	char msg[256] = "";
	size_t len, len2;

	m.version = 4;
	m.blksize = (size_t)1 << 20;
	m.piece = (size_t)16 << 10;
	char *text = bm_manifest2_dump(&m, &len);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"version\":4"));
	assert_non_null(strstr(text, "\"piece\":16384"));
	assert_int_equal(bm_manifest_version(text, len, msg, sizeof(msg)), 4);
	assert_int_equal(bm_manifest2_parse(text, len, &p, msg, sizeof(msg)), 0);
	assert_int_equal(p->version, 4);
	assert_int_equal(p->piece, 16384);
	bm_manifest2_free(p);
	assert_int_equal(bm_manifest_parse_any(text, len, &any, msg, sizeof(msg)), 0);
	assert_int_equal(any->version, 4);
	assert_int_equal(bm_manifest_piece(any), 16384);
	assert_int_equal(bm_manifest_pieces(any), 64);
	struct bm_itree t;
	bm_manifest_itree(any, &t);
	assert_int_equal(t.pieces, 64);
	assert_int_equal(t.format, 4);
	char *again = bm_manifest_dump_any(any, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(again, text, len);
	free(again);
	bm_manifest_free(any);
	free(text);
	/* A version 3 manifest's pieces are 64 KiB; a v2 one has none. */
	m.version = 3;
	text = bm_manifest2_dump(&m, &len);
	assert_null(strstr(text, "\"piece\""));
	assert_int_equal(bm_manifest_parse_any(text, len, &any, msg, sizeof(msg)), 0);
	assert_int_equal(bm_manifest_piece(any), BM_PIECE_SIZE);
	bm_manifest_free(any);
	free(text);

#define HEAD "{\"format\":\"blkmap-dataset\",\"version\":"
#define TAIL ",\"size\":1,\"generation\":2,\"parent\":1,\"root\":null}"
	static const struct {
		const char *body, *says;
	} bad[] = {
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576" TAIL,
		  "a version 4 manifest has no field \"piece\"" },
		{ HEAD "3,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":65536" TAIL,
		  "a version 3 manifest has a field \"piece\"" },
		{ HEAD "2,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":16384" TAIL,
		  "a version 2 manifest has a field \"piece\"" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":3000" TAIL,
		  "a version 4 manifest's piece 3000 is not a power of two from 4096 to blksize/2" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":2048" TAIL,
		  "piece 2048 is not a power of two from 4096" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":1048576" TAIL,
		  "piece 1048576 is not a power of two from 4096 to blksize/2 (524288)" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":65536,\"piece\":131072" TAIL,
		  "piece 131072 is not" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":8388608,\"piece\":4096" TAIL,
		  "makes 2048 pieces of a block of 8388608 bytes, more than 1024" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":\"16384\"" TAIL,
		  "\"piece\" is not a number of bytes" },
		{ HEAD "4,\"checksum\":\"xxh128\",\"blksize\":1048576,\"piece\":-16384" TAIL,
		  "\"piece\" is not a number of bytes" },
	};
#undef HEAD
#undef TAIL
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *t2 = seal(bad[i].body, &len);
		int rc = bm_manifest2_parse(t2, len, &p, msg, sizeof(msg));
		if (rc != BM_EFORMAT || strstr(msg, bad[i].says) == NULL)
			fail_msg("case %zu: %d (%s): %s", i, rc, msg, t2);
		assert_null(p);
		one_line(msg);
		/* The reader of either version says the same. */
		assert_int_equal(bm_manifest_parse_any(t2, len, &any, msg, sizeof(msg)), BM_EFORMAT);
		assert_non_null(strstr(msg, bad[i].says));
		free(t2);
	}
	/* The smallest and the most pieces are fine. */
	char *ok = seal("{\"format\":\"blkmap-dataset\",\"version\":4,\"checksum\":\"xxh128\","
			"\"blksize\":4194304,\"piece\":4096,\"size\":1,\"generation\":2,\"parent\":1,"
			"\"root\":null}", &len);
	assert_int_equal(bm_manifest2_parse(ok, len, &p, msg, sizeof(msg)), 0);
	assert_int_equal(p->piece, 4096);
	bm_manifest2_free(p);
	free(ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(depth_follows_the_block_count),
		cmocka_unit_test(lookup_finds_every_stored_block_and_every_hole),
		cmocka_unit_test(lookup_loads_one_page_per_level),
		cmocka_unit_test(one_block_commit_at_2e12_blocks_writes_one_page_per_level),
		cmocka_unit_test(one_block_commit_at_2e15_blocks_writes_one_page_per_level),
		cmocka_unit_test(one_block_commit_at_2e17_blocks_writes_one_page_per_level),
		cmocka_unit_test(an_update_shares_every_unchanged_page),
		cmocka_unit_test(an_update_that_changes_nothing_writes_nothing),
		cmocka_unit_test(holes_remove_entries_and_empty_pages_vanish),
		cmocka_unit_test(the_last_of_several_changes_to_a_block_wins),
		cmocka_unit_test(growing_and_shrinking_keep_the_tree_canonical),
		cmocka_unit_test(the_largest_dataset_needs_no_memory_per_block),
		cmocka_unit_test(diff_lists_the_changed_ranges_reading_only_differing_pages),
		cmocka_unit_test(diff_across_sizes_and_against_an_empty_tree),
		cmocka_unit_test(a_diff_callback_can_stop_the_walk),
		cmocka_unit_test(keys_lists_each_page_and_block_once),
		cmocka_unit_test(a_v1_block_list_upgrades_to_the_same_tree),
		cmocka_unit_test(a_page_round_trips_and_is_exactly_its_entries),
		cmocka_unit_test(hostile_page_fields_are_refused_with_one_line),
		cmocka_unit_test(every_bit_flip_of_a_page_fails_its_key),
		cmocka_unit_test(hostile_trees_fail_every_walk_with_one_line),
		cmocka_unit_test(a_v2_manifest_round_trips_and_v1_readers_refuse_it),
		cmocka_unit_test(every_byte_flip_of_a_v2_manifest_is_a_checksum_error),
		cmocka_unit_test(hostile_v2_manifest_fields_are_refused_with_one_line),
		cmocka_unit_test(the_version_of_a_manifest_tells_damage_from_a_bad_manifest),
		cmocka_unit_test(a_blocks_v3_sum_is_the_sum_of_its_piece_sums_however_its_bytes_arrive),
		cmocka_unit_test(a_blocks_v4_sum_is_the_sum_of_its_piece_sums_of_any_piece_size),
		cmocka_unit_test(streamed_pieces_are_each_checked_against_their_own_sums),
		cmocka_unit_test(a_v3_tree_keeps_each_blocks_piece_sums_through_updates),
		cmocka_unit_test(a_v4_tree_has_page_version_3_and_refuses_v3_pages_and_the_reverse),
		cmocka_unit_test(hostile_v3_leaves_are_refused_with_one_line),
		cmocka_unit_test(a_page_checked_once_is_searched_in_place_and_its_place_still_checked),
		cmocka_unit_test(a_v3_manifest_round_trips_and_needs_blocks_above_64k),
		cmocka_unit_test(a_v4_manifest_round_trips_its_piece_and_refuses_bad_ones),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
