/* tests/test_client_v3.c — dataset format version 3 (blocks larger than
 * 64 KiB, each with the sums of its 64 KiB pieces in its leaf entry)
 * through the library, one program per kind of server (TC_KIND;
 * client.mk): a new dataset of such blocks whose options ask for 64 KiB
 * pieces is created in version 3, named by the sum of its piece sums,
 * and reads back; commits of it round-trip
 * (a write through a mapping, a grow that makes the short last block
 * whole) and stay in version 3; a version 1 dataset of large blocks
 * becomes version 2, never 3.  Mapped a 64 KiB piece per virtmem block: a
 * random miss sends one Range GET of 64 KiB; a damaged piece is refused
 * naming its block and piece (SIGBUS on a fault; the other pieces read,
 * each checked on its own), the whole block fails its sum; a sequential
 * read reads every piece (read-ahead: runs of a block's pieces).  A
 * small bm_read fetches only the pieces it covers (one Range GET per
 * block), a whole block with one GET, and stores only its bytes (no
 * buffer of the piece, nor of a 64 KiB block: this program counts
 * malloc's bytes); reads across
 * pieces, blocks, a hole and the end return the right bytes, a damaged
 * piece is refused
 * naming it, a shrink not committed reads as zeros past the cut.  A
 * written piece is committed with the rest of its block (fetched), a
 * block written whole without fetching it.  A v3
 * tree read as version 2 (what a v2 reader's walk does) is refused with
 * one line; gc drops what a dropped generation alone named.
 * Every case runs twice: on format 3 (created with BLKMAP_PIECE_BYTES=
 * 65536), then on format 4 with 16 KiB pieces (created with no piece
 * option: what a new dataset of blocks above 64 KiB gets by default), where the same holds of its
 * pieces (a 4 KiB bm_read fetches 16 KiB), its manifest says "piece"
 * (and `blkmap stat` its piece_bytes, 65536 in format 3), its
 * pages have page version 3, commits keep the piece size (a handle that
 * asks for other pieces too), and a v4 manifest without "piece", with a
 * bad one, or said to be v3 with one, is refused at open with one line.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#include "client_util.h"
#include "../client/index.h"

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define BS ((size_t)256 << 10) /* 4 pieces of 64 KiB, 16 of 16 KiB */
#define PIECES ((unsigned)(BS / PS))

/* The format under test (main runs every case for each): 3, 64 KiB
 * pieces (BLKMAP_PIECE_BYTES=65536); 4, the pieces a created dataset
 * gets by default (16 KiB).  Its datasets live under V ("/v3",
 * "/v4"). */
static unsigned FMT = 3;
static size_t PS = (size_t)64 << 10;
static const char *V = "/v3";

/* V followed by rest (one of 8 buffers used in turn). */
static const char *vpath(const char *rest)
{
	static char buf[8][128];
	static unsigned next;
	char *b = buf[next++ % 8];
	snprintf(b, sizeof(buf[0]), "%s%s", V, rest);
	return b;
}

static json_int_t manifest_int(struct tc_store *st, const char *path, const char *field)
{
	json_t *m = tc_store_manifest(st, path);
	json_int_t v = json_integer_value(json_object_get(m, field));
	json_decref(m);
	return v;
}

/* The format 3 key of a block's bytes: blocks/<xxh128 of its piece sums>,
 * made from the format's words (docs/FORMAT.md), one xxh128 per piece. */
static void v3_key(const unsigned char *b, size_t len, char *out, size_t n)
{
	unsigned char psum[BM_PIECES_MAX * 16];
	char hex[BM_SUM_HEX + 1];
	size_t np = (len + PS - 1) / PS;

	for (size_t i = 0; i < np; i++) {
		size_t off = i * PS;
		size_t plen = len - off < PS ? len - off : PS;
		bm_sum_hex(b + off, plen, hex);
		for (int k = 0; k < 16; k++) {
			char h[3] = { hex[2 * k], hex[2 * k + 1], 0 };
			psum[i * 16 + k] = (unsigned char)strtoul(h, NULL, 16);
		}
	}
	bm_sum_hex(psum, np * 16, hex);
	snprintf(out, n, "blocks/%s", hex);
}

/* Stores SIZE bytes of DATA in blocks of BS at PATH of ST, opens it with
 * the test options and maps it whole, into *V (asserted). */
static void put_and_map(struct tc_store *st, const char *path, const unsigned char *data,
			size_t size, struct tc_mapped *v)
{
	tc_store_url(v->url, sizeof(v->url), st, path);
	tc_map_put(v, BS, data, size);
	tc_map_open(v);
}

static void a_new_dataset_of_blocks_above_64k_has_pieces_and_reads_back(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 6, size = 5 * BS + 70000; /* the last block: 2 pieces */
	unsigned char *data = ts_pattern(size, 301);
	char url[512], key[80], want[80], path[300];

	memset(data + 2 * BS, 0, BS); /* a hole */
	tc_store_url(url, sizeof(url), st, vpath("/new"));
	tc_put(url, BS, data, size);
	json_t *man = tc_store_manifest(st, vpath("/new"));
	assert_int_equal(json_integer_value(json_object_get(man, "version")), FMT);
	/* Version 4 says its pieces; version 3's are 64 KiB, unsaid. */
	if (FMT == 4)
		assert_int_equal(json_integer_value(json_object_get(man, "piece")), PS);
	else
		assert_null(json_object_get(man, "piece"));
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), nblk - 1);
	const char *root = json_string_value(json_object_get(man, "root"));
	assert_non_null(root);
	/* One leaf is the root: 5 entries of a slot, the block's sum and its
	 * 4 (16) piece sums. */
	struct ts_resp r;
	snprintf(path, sizeof(path), "%s/new/index/%s", V, root);
	assert_int_equal(tc_store_request(st, "GET", path, NULL, 0, &r), CURLE_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, 8 + 5 * (17 + PIECES * 16));
	assert_int_equal(((unsigned char *)r.body)[4], FMT - 1); /* page version 2 (3) */
	ts_resp_free(&r);
	json_decref(man);

	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_format_version(ds), FMT);
	assert_int_equal(bm_piece_bytes(ds), PS);
	bm_close(ds);
	/* Each block's object is named by the sum of its piece sums and holds
	 * its bytes; the short last block too. */
	for (uint64_t b = 0; b < nblk; b++) {
		if (b == 2)
			continue;
		size_t len = b + 1 == nblk ? size - b * BS : BS;
		v3_key(data + b * BS, len, want, sizeof(want));
		assert_string_equal(tc_block_key(url, b, key, sizeof(key)), want);
		snprintf(path, sizeof(path), "%s/new/%s", V, key);
		assert_int_equal(tc_store_request(st, "GET", path, NULL, 0, &r), CURLE_OK);
		assert_int_equal(r.len, len);
		assert_memory_equal(r.body, data + b * BS, len);
		ts_resp_free(&r);
	}
	assert_true(tc_dataset_equals(url, 0, data, size));
	/* blkmap stat says so, and its piece size. */
	char *out = NULL, *err = NULL;
	const char *stat[] = { "stat", url, NULL };
	if (tc_cli(&out, &err, stat) != 0)
		fail_msg("blkmap stat: stdout \"%s\", stderr \"%s\"", out, err);
	json_t *doc = json_loads(out, 0, NULL);
	if (doc == NULL)
		fail_msg("blkmap stat printed \"%s\", not JSON", out);
	assert_int_equal(json_integer_value(json_object_get(doc, "format_version")), FMT);
	assert_true(json_is_integer(json_object_get(doc, "piece_bytes")));
	assert_int_equal(json_integer_value(json_object_get(doc, "piece_bytes")), PS);
	json_decref(doc);
	free(out);
	free(err);
	free(data);
}

/* ... and keep its pieces: a handle opened with other pieces asked keeps
 * the dataset's (as its blksize). */
static void commits_of_a_v3_dataset_round_trip_and_stay_version_3(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 3 * BS + 1000, size2 = 5 * BS;
	unsigned char *data = ts_pattern(size2, 302), *d1 = malloc(size);
	char url[512], prefix[TC_URL_MAX];
	uint64_t gen;
	void *addr;
	bm_mapping *m;

	assert_non_null(d1);
	tc_store_url(url, sizeof(url), st, vpath("/commit"));
	memcpy(d1, data, size);
	tc_put(url, BS, d1, size);
	/* A write through a mapping (storeblk), a partial bm_write, and a
	 * grow that makes the short last block whole; through a handle that
	 * asks for pieces of 32 KiB. */
	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.piece_bytes = (size_t)32 << 10;
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	assert_int_equal(bm_piece_bytes(ds), PS);
	assert_int_equal(bm_resize(ds, size2), 0);
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	unsigned char *mem = addr;
	mem[BS + 7] ^= 0x5a;
	mem[BS + 3 * PS + 1] ^= 0x21;
	memcpy(mem + 3 * BS + 1000, data + 3 * BS + 1000, size2 - (3 * BS + 1000));
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	memcpy(data, mem, size2);
	bm_unmap(m);
	assert_int_equal(bm_write(ds, 10, "partial", 7), 0);
	memcpy(data + 10, "partial", 7);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 3);
	bm_close(ds);
	assert_int_equal(manifest_int(st, vpath("/commit"), "version"), FMT);
	assert_int_equal(manifest_int(st, vpath("/commit"), "piece"), FMT == 4 ? PS : 0);
	assert_int_equal(manifest_int(st, vpath("/commit"), "parent"), 2);
	assert_int_equal(manifest_int(st, vpath("/commit"), "size"), size2);
	assert_true(tc_dataset_equals(url, 0, data, size2));
	assert_true(tc_dataset_equals(url, 1, d1, size));
	/* The grown block's object holds its whole bytes under their v3 key. */
	char key[80], want[80];
	v3_key(data + 3 * BS, BS, want, sizeof(want));
	assert_string_equal(tc_block_key(url, 3, key, sizeof(key)), want);
	free(data);
	free(d1);
}

static void a_v1_dataset_of_blocks_above_64k_becomes_version_2_never_3(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 3;
	unsigned char *data = ts_pattern(nblk * BS, 303);
	char url[512];
	uint64_t gen;

	tc_store_put_v1(st, vpath("/old"), BS, data, nblk);
	tc_store_url(url, sizeof(url), st, vpath("/old"));
	for (int i = 0; i < 2; i++) {
		bm_dataset *ds = tc_open(url, 0);
		data[BS + i] ^= 0x11;
		assert_int_equal(bm_write(ds, BS + i, data + BS + i, 1), 0);
		assert_int_equal(bm_commit(ds, &gen), 0);
		bm_close(ds);
		/* Its blocks keep the sums of their bytes: version 2 (version 3
		 * would rename every block). */
		assert_int_equal(manifest_int(st, vpath("/old"), "version"), 2);
	}
	assert_int_equal(gen, 3);
	char key[80], sum[40];
	bm_sum_hex(data + 2 * BS, BS, sum);
	assert_string_equal(tc_block_key(url, 2, key, sizeof(key)) + 7, sum);
	assert_true(tc_dataset_equals(url, 0, data, nblk * BS));
	free(data);
}

static void a_damaged_piece_is_refused_naming_block_and_piece_and_never_mapped(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 4, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 304);
	char url[512], prefix[TC_URL_MAX], key[80], path[300], *err = NULL;
	void *addr;
	bm_mapping *m;

	tc_store_url(url, sizeof(url), st, vpath("/damaged"));
	tc_put(url, BS, data, size);
	tc_block_key(url, 3, key, sizeof(key));
	snprintf(path, sizeof(path), "%s/damaged/%s", V, key);
	/* One byte of block 3's piece 2 flipped, the length kept. */
	unsigned char *bad = malloc(BS);
	assert_non_null(bad);
	memcpy(bad, data + 3 * BS, BS);
	bad[2 * PS + 99] ^= 0x01;
	assert_true(tc_store_put(st, path, bad, BS) / 100 == 2);

	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.retries = 2;
	/* As a prefix (tc_open): no probe left for the server to count in
	 * the next case's GETs. */
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	/* The whole block (bm_read) fails its sum. */
	assert_int_equal(bm_read(ds, 3 * BS, bad, BS), BM_ECHECKSUM);
	tc_assert_one_line_naming(bm_last_error(ds), "block 3");
	tc_assert_one_line_naming(bm_last_error(ds), "checksum mismatch");
	/* A partial write fetches it to merge: refused the same way, and
	 * nothing of it is kept. */
	assert_int_equal(bm_write(ds, 3 * BS + 10, "x", 1), BM_ECHECKSUM);
	tc_assert_one_line_naming(bm_last_error(ds), "checksum mismatch");
	struct bm_stats bst;
	bm_stats(ds, &bst);
	assert_int_equal(bst.fetched_blocks, 0);
	/* Through a mapping, its other pieces are each checked on their own
	 * and read; the blocks around it too. */
	assert_int_equal(bm_map(ds, 0, 0, &addr, &m), 0);
	const unsigned char *mem = addr;
	for (size_t piece = 0; piece < PIECES; piece++) {
		size_t off = 3 * BS + piece * PS;
		if (piece != 2)
			assert_memory_equal(mem + off, data + off, PS);
	}
	assert_memory_equal(mem + 2 * BS, data + 2 * BS, BS);
	bm_unmap(m);
	bm_close(ds);
	/* A fault on the damaged piece: SIGBUS and one line naming the block
	 * and the piece. */
	struct tc_touch c = { url, 3 * BS + 2 * PS + 5 };
	int status = tc_child(tc_touch_child, &c, &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS)
		fail_msg("status %#x, stderr \"%s\"", status, err ? err : "");
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "block 3 piece 2 not loaded"));
	assert_non_null(strstr(err, "piece 2: checksum mismatch"));
	free(err);
	free(bad);
	free(data);
}

static void a_random_miss_fetches_one_piece_with_one_range_get_of_64k(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_COUNT, "counts the server's requests and bytes");
	size_t nblk = 8, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 307);
	struct bm_stats s0, s1;
	struct tc_mapped v;

	put_and_map(st, vpath("/random"), data, size, &v);
	const volatile unsigned char *mem = v.mem;
	/* A first miss also reads the index (one leaf, the root here). */
	assert_int_equal(mem[6 * BS + 3], data[6 * BS + 3]);
	/* Counted from a settled server: requests still unread on connections
	 * closed before (an earlier case's, such as a child's killed with
	 * GETs in flight) are counted first (tc_server_settle). */
	tc_store_settle(st);
	long gets = tc_store_count(st, "GET");
	long ranges = tc_server_stat(&st->srv, "responses", "206");
	long out = tc_server_bytes_out(&st->srv);
	bm_stats(v.ds, &s0);
	/* A miss in piece 1 of block 3: one Range GET of that piece. */
	size_t off = 3 * BS + PS + 777;
	assert_int_equal(mem[off], data[off]);
	assert_int_equal(tc_store_count(st, "GET") - gets, 1);
	assert_int_equal(tc_server_stat(&st->srv, "responses", "206") - ranges, 1);
	long sent = tc_server_bytes_out(&st->srv) - out;
	if (sent < (long)PS || sent > (long)PS + 2048)
		fail_msg("the server sent %ld bytes for one miss", sent);
	bm_stats(v.ds, &s1);
	assert_int_equal(s1.fetched_bytes - s0.fetched_bytes, PS);
	/* The piece holds the right bytes, and its neighbours miss on their
	 * own. */
	assert_memory_equal(v.mem + 3 * BS + PS, data + 3 * BS + PS,
			    PS);
	assert_int_equal(mem[3 * BS + 5], data[3 * BS + 5]);
	assert_int_equal(tc_store_count(st, "GET") - gets, 2);
	tc_map_close(&v);
	free(data);
}

/* ---- bm_read: the pieces a read covers ----------------------------------- */

/* Counters of the server around a step of a test. */
struct counts {
	long gets, ranges, out;
	uint64_t fetched;
};

static void counts_now(struct tc_store *st, bm_dataset *ds, struct counts *c)
{
	struct bm_stats s;

	tc_store_settle(st); /* nothing left unread from before (tc_server_settle) */
	bm_stats(ds, &s);
	c->gets = tc_store_count(st, "GET");
	c->ranges = tc_server_stat(&st->srv, "responses", "206");
	c->out = tc_server_bytes_out(&st->srv);
	c->fetched = s.fetched_bytes;
}

/* Since c: gets GETs, ranges of them Range GETs, about bytes sent. */
static void assert_counts_since(struct tc_store *st, bm_dataset *ds, const struct counts *c,
				long gets, long ranges, long bytes)
{
	struct counts now;

	counts_now(st, ds, &now);
	assert_int_equal(now.gets - c->gets, gets);
	assert_int_equal(now.ranges - c->ranges, ranges);
	long sent = now.out - c->out;
	if (sent < bytes || sent > bytes + 2048 * gets)
		fail_msg("the server sent %ld bytes, %ld expected", sent, bytes);
	assert_int_equal(now.fetched - c->fetched, (uint64_t)bytes);
}

/* With no piece option a new dataset's blocks get 16 KiB pieces (format
 * 4) when larger than 64 KiB, at most 1024 a block (32 MiB blocks: 32 KiB
 * pieces; 64 MiB ones: 64 KiB, format 3), none at 64 KiB (format 2). */
static void the_default_pieces_are_16k_at_most_1024_a_block_and_none_for_64k_blocks(void **state)
{
	struct tc_store *st = tc_store_of(state);
	const struct {
		size_t bs, piece;
		int format;
	} want[] = {
		{ (size_t)64 << 10, 0, 2 },      { (size_t)128 << 10, 16384, 4 },
		{ (size_t)1 << 20, 16384, 4 },   { (size_t)16 << 20, 16384, 4 },
		{ (size_t)32 << 20, 32768, 4 },  { (size_t)64 << 20, 65536, 3 },
	};
	unsigned char *data = ts_pattern(5000, 330);
	const char *was = getenv("BLKMAP_PIECE_BYTES");
	char url[512], path[64], keep[32];

	snprintf(keep, sizeof(keep), "%s", was ? was : "");
	unsetenv("BLKMAP_PIECE_BYTES");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(path, sizeof(path), "/default-piece-%zu", want[i].bs);
		tc_store_url(url, sizeof(url), st, vpath(path));
		assert_int_equal(tc_put(url, want[i].bs, data, 5000), 1);
		bm_dataset *ds = tc_open(url, 0);
		if (bm_format_version(ds) != want[i].format || bm_piece_bytes(ds) != want[i].piece)
			fail_msg("blocks of %zu: format %d, pieces of %zu; want format %d, pieces of %zu",
				 want[i].bs, bm_format_version(ds), bm_piece_bytes(ds), want[i].format,
				 want[i].piece);
		assert_true(tc_dataset_equals(url, 0, data, 5000));
		bm_close(ds);
	}
	if (keep[0])
		setenv("BLKMAP_PIECE_BYTES", keep, 1);
	free(data);
}

/* The index's share of the cache (a sixteenth of cache_bytes) holds at
 * least four full leaves of the dataset's format: a leaf larger than the
 * share (a v4 leaf of 4 MiB blocks in 16 KiB pieces is 1 MB; blkmap-wcfs's
 * handles have a share of 1 MiB) is fetched once, not again by every read
 * under it.  Here a leaf of 64 blocks of 64 KiB in 4 KiB pieces (17.5
 * KB) and a cache of 128 KiB (a share of 8 KiB). */
static void a_leaf_larger_than_the_index_share_of_the_cache_is_fetched_once(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_COUNT, "counts the server's requests");
	const size_t bs = (size_t)64 << 10, nblk = 64, size = nblk * bs;
	unsigned char *data = ts_pattern(size, 320), got[4096];
	const char *was = getenv("BLKMAP_PIECE_BYTES");
	char url[512], keep[32];
	struct bm_options o;
	bm_dataset *ds;

	snprintf(keep, sizeof(keep), "%s", was ? was : "");
	tc_store_url(url, sizeof(url), st, vpath("/bigleaf"));
	setenv("BLKMAP_PIECE_BYTES", "4096", 1);
	tc_put(url, bs, data, size);
	if (keep[0])
		setenv("BLKMAP_PIECE_BYTES", keep, 1);
	else
		unsetenv("BLKMAP_PIECE_BYTES");
	tc_options(&o);
	o.cache_bytes = (size_t)128 << 10;
	char prefix[520];
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0); /* no probe */
	assert_int_equal(bm_piece_bytes(ds), 4096);
	/* The first read fetches the leaf (the root) and its piece. */
	assert_int_equal(bm_read(ds, 10 * bs + 5000, got, 4096), 4096);
	assert_memory_equal(got, data + 10 * bs + 5000, 4096);
	tc_store_settle(st);
	long gets = tc_store_count(st, "GET");
	for (size_t b = 20; b < nblk; b += 10) {
		assert_int_equal(bm_read(ds, b * bs + 9000, got, 4096), 4096);
		assert_memory_equal(got, data + b * bs + 9000, 4096);
	}
	/* One GET a read (its pieces), no leaf again. */
	assert_int_equal(tc_store_count(st, "GET") - gets, 5);
	bm_close(ds);
	free(data);
}

static void a_small_bm_read_fetches_only_the_pieces_it_covers_with_one_range_get(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_COUNT, "counts the server's requests and bytes");
	size_t nblk = 8, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 310), got[2 * BM_PIECE_SIZE];
	char url[512];
	struct counts c;

	tc_store_url(url, sizeof(url), st, vpath("/read"));
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	/* A first read also reads the index (one leaf, the root here). */
	assert_int_equal(bm_read(ds, 6 * BS + 3, got, 1), 1);
	/* 4 KiB inside piece 1 of block 3: one Range GET of that piece. */
	counts_now(st, ds, &c);
	size_t off = 3 * BS + PS + 777;
	assert_int_equal(bm_read(ds, off, got, 4096), 4096);
	assert_memory_equal(got, data + off, 4096);
	assert_counts_since(st, ds, &c, 1, 1, (long)PS);
	/* 200 bytes across pieces 1 and 2: one Range GET of both. */
	counts_now(st, ds, &c);
	off = 3 * BS + 2 * PS - 100;
	assert_int_equal(bm_read(ds, off, got, 200), 200);
	assert_memory_equal(got, data + off, 200);
	assert_counts_since(st, ds, &c, 1, 1, 2 * (long)PS);
	/* Two whole pieces: the same, straight into the caller's buffer. */
	counts_now(st, ds, &c);
	off = 5 * BS + 2 * PS;
	assert_int_equal(bm_read(ds, off, got, 2 * PS), 2 * PS);
	assert_memory_equal(got, data + off, 2 * PS);
	assert_counts_since(st, ds, &c, 1, 1, 2 * (long)PS);
	/* The last piece of block 1 and the first of block 2: one Range GET
	 * in each block. */
	counts_now(st, ds, &c);
	off = 2 * BS - 10;
	assert_int_equal(bm_read(ds, off, got, 20), 20);
	assert_memory_equal(got, data + off, 20);
	assert_counts_since(st, ds, &c, 2, 2, 2 * (long)PS);
	/* A whole block: one GET of its object, no range. */
	unsigned char *block = malloc(BS);
	assert_non_null(block);
	counts_now(st, ds, &c);
	assert_int_equal(bm_read(ds, 4 * BS, block, BS), BS);
	assert_memory_equal(block, data + 4 * BS, BS);
	assert_counts_since(st, ds, &c, 1, 0, (long)BS);
	free(block);
	bm_close(ds);
	free(data);
}

/* The bytes this thread asked malloc for while armed: this program's
 * malloc stands in for libc's (ELF interposition: libcurl's and the
 * library's calls come here too).  Not under a sanitizer, whose own
 * malloc would be bypassed. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_MALLOC 0
#else
#define COUNT_MALLOC 1
extern void *__libc_malloc(size_t n);
static __thread bool malloc_armed;
static __thread size_t malloc_bytes;

void *malloc(size_t n)
{
	if (malloc_armed)
		malloc_bytes += n;
	return __libc_malloc(n);
}
#endif

static void a_small_bm_read_inside_a_piece_or_block_stores_only_its_bytes_with_no_buffer_of_either(
	void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 4 * BS;
	unsigned char *data, got[4096];
	char url[512];

	if (!COUNT_MALLOC)
		skip(); /* a sanitizer's malloc */
	data = ts_pattern(size, 312);
	tc_store_url(url, sizeof(url), st, vpath("/nobuf"));
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_read(ds, 3, got, 1), 1); /* the index, the connection */
#if COUNT_MALLOC
	/* 4 KiB inside piece 2 of block 1: the piece is checked whole, but
	 * only the 4 KiB are stored.  Allocated: libcurl's receive buffer (64
	 * KiB), the piece sums (16 KiB) and small things (83 KB in all); a
	 * buffer of the piece would be 64 KiB more. */
	const size_t MALLOC_MAX = 96 << 10;
	size_t off = BS + 2 * PS + 1000;
	malloc_bytes = 0;
	malloc_armed = true;
	int64_t n = bm_read(ds, off, got, sizeof(got));
	malloc_armed = false;
	assert_int_equal(n, (int64_t)sizeof(got));
	assert_memory_equal(got, data + off, sizeof(got));
	if (malloc_bytes >= MALLOC_MAX)
		fail_msg("a 4 KiB bm_read inside a piece allocated %zu bytes", malloc_bytes);
	print_message("a 4 KiB bm_read inside a piece allocated %zu bytes\n", malloc_bytes);
	/* The same inside a block of one piece (64 KiB blocks: the block is
	 * fetched whole and checked against its sum): no buffer of the block. */
	char url64[512];
	tc_store_url(url64, sizeof(url64), st, vpath("/nobuf64"));
	tc_put(url64, BM_PIECE_SIZE, data, size);
	bm_dataset *ds64 = tc_open(url64, 0);
	assert_int_equal(bm_read(ds64, 3, got, 1), 1);
	off = 5 * BM_PIECE_SIZE + 3000;
	malloc_bytes = 0;
	malloc_armed = true;
	n = bm_read(ds64, off, got, sizeof(got));
	malloc_armed = false;
	assert_int_equal(n, (int64_t)sizeof(got));
	assert_memory_equal(got, data + off, sizeof(got));
	if (malloc_bytes >= MALLOC_MAX)
		fail_msg("a 4 KiB bm_read inside a 64 KiB block allocated %zu bytes", malloc_bytes);
	print_message("a 4 KiB bm_read inside a 64 KiB block allocated %zu bytes\n", malloc_bytes);
	bm_close(ds64);
#endif
	bm_close(ds);
	free(data);
}

static void bm_reads_spanning_pieces_and_blocks_return_the_right_bytes(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 5 * BS + 70000; /* the last block: 2 pieces, the 2nd short */
	unsigned char *data = ts_pattern(size, 311);
	unsigned char *got = malloc(3 * BS);
	char url[512];
	const size_t P = PS;
	/* Inside a piece, across pieces, across blocks, whole pieces, into
	 * and over the hole (block 2), a whole block among parts of two,
	 * the short last block and past the end (cut at the size). */
	const struct { size_t off, len; } cases[] = {
		{ 0, 1 }, { 5, 4096 }, { P - 1, 2 }, { P, P }, { P + 1, 2 * P },
		{ BS - P, P }, { BS - 3, 7 }, { BS + 3 * P + 100, 2 * P },
		{ 2 * BS - 5000, 10000 }, { 2 * BS + P + 7, 4096 }, { 3 * BS - 1, 2 },
		{ BS + 12345, 2 * BS }, { 3 * BS + 3 * P, P }, { 5 * BS, 70000 },
		{ 5 * BS + P + 1, 10000 }, { size - 1, 1 }, { 4 * BS + 17, 3 * BS },
	};
	uint32_t seed = 311;

	assert_non_null(got);
	memset(data + 2 * BS, 0, BS); /* a hole */
	tc_store_url(url, sizeof(url), st, vpath("/spans"));
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) + 40; i++) {
		size_t off, len;
		if (i < sizeof(cases) / sizeof(cases[0])) {
			off = cases[i].off;
			len = cases[i].len;
		} else { /* and random ones */
			seed = seed * 1103515245u + 12345u;
			off = (seed >> 4) % size;
			seed = seed * 1103515245u + 12345u;
			len = 1 + (seed >> 4) % (2 * BS);
		}
		size_t want = off + len > size ? size - off : len;
		memset(got, 0xee, 3 * BS);
		int64_t n = bm_read(ds, off, got, len);
		if (n != (int64_t)want)
			fail_msg("bm_read at %zu of %zu bytes returned %lld: %s", off, len, (long long)n,
				 bm_last_error(ds));
		if (memcmp(got, data + off, want) != 0)
			fail_msg("bm_read at %zu of %zu bytes: wrong bytes", off, len);
	}
	/* At and past the end: nothing. */
	assert_int_equal(bm_read(ds, size, got, 10), 0);
	bm_close(ds);
	free(got);
	free(data);
}

static void a_bm_read_of_a_damaged_piece_is_refused_naming_it_and_the_others_read(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 4, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 312), got[4 * BM_PIECE_SIZE];
	char url[512], prefix[TC_URL_MAX], key[80], path[300];

	tc_store_url(url, sizeof(url), st, vpath("/rdamaged"));
	tc_put(url, BS, data, size);
	tc_block_key(url, 3, key, sizeof(key));
	snprintf(path, sizeof(path), "%s/rdamaged/%s", V, key);
	/* One byte of block 3's piece 2 flipped, the length kept. */
	unsigned char *bad = malloc(BS);
	assert_non_null(bad);
	memcpy(bad, data + 3 * BS, BS);
	bad[2 * PS + 99] ^= 0x01;
	assert_true(tc_store_put(st, path, bad, BS) / 100 == 2);

	struct bm_options o;
	bm_dataset *ds;
	tc_options(&o);
	o.retries = 2;
	assert_int_equal(bm_open(&ds, tc_prefix(prefix, sizeof(prefix), url), &o), 0);
	/* 10 bytes of the damaged piece, then a read across pieces 1 to 3:
	 * refused, one line naming the block, the piece and what was wrong;
	 * none of their bytes given out. */
	memset(got, 0, sizeof(got));
	assert_int_equal(bm_read(ds, 3 * BS + 2 * PS + 95, got, 10), BM_ECHECKSUM);
	tc_assert_one_line_naming(bm_last_error(ds), "block 3: GET ");
	tc_assert_one_line_naming(bm_last_error(ds), "piece 2: checksum mismatch");
	assert_int_equal(bm_read(ds, 3 * BS + PS + 5, got, 2 * PS), BM_ECHECKSUM);
	tc_assert_one_line_naming(bm_last_error(ds), "block 3: GET ");
	tc_assert_one_line_naming(bm_last_error(ds), "piece 2: checksum mismatch");
	/* The pieces around it read, each checked on its own. */
	for (size_t piece = 0; piece < PIECES; piece++) {
		size_t off = 3 * BS + piece * PS + 3;
		if (piece == 2)
			continue;
		assert_int_equal(bm_read(ds, off, got, 4096), 4096);
		assert_memory_equal(got, data + off, 4096);
	}
	/* A read that ends in the block before it reads too. */
	assert_int_equal(bm_read(ds, 3 * BS - 100, got, 100 + PS), 100 + PS);
	assert_memory_equal(got, data + 3 * BS - 100, 100 + PS);
	/* A read that reaches the damaged piece from there returns the bytes
	 * before it (a short read), and then the error. */
	assert_int_equal(bm_read(ds, 3 * BS - 100, got, 100 + 3 * PS), 100);
	bm_close(ds);
	free(bad);
	free(data);
}

static void a_bm_read_after_a_shrink_reads_zeros_past_the_cut_in_pieces_too(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 4, size = nblk * BS, cut = 2 * BS + PS + 100;
	unsigned char *data = ts_pattern(size, 313), got[8192], *block = malloc(BS);
	char url[512];

	assert_non_null(block);
	tc_store_url(url, sizeof(url), st, vpath("/rshrink"));
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	/* Shrunk, not committed: bytes past the cut read as zeros (the
	 * published size still bounds the read), in a piece and in the
	 * whole block alike; so after a grow back before the commit. */
	assert_int_equal(bm_resize(ds, cut), 0);
	for (int round = 0; round < 2; round++) {
		size_t off = cut - 100;
		assert_int_equal(bm_read(ds, off, got, sizeof(got)), sizeof(got));
		assert_memory_equal(got, data + off, 100);
		for (size_t i = 100; i < sizeof(got); i++)
			assert_int_equal(got[i], 0);
		assert_int_equal(bm_read(ds, 2 * BS + 3 * PS, got, 100), 100);
		for (size_t i = 0; i < 100; i++)
			assert_int_equal(got[i], 0);
		assert_int_equal(bm_read(ds, 2 * BS, block, BS), BS);
		assert_memory_equal(block, data + 2 * BS, cut - 2 * BS);
		for (size_t i = cut - 2 * BS; i < BS; i++)
			assert_int_equal(block[i], 0);
		assert_int_equal(bm_resize(ds, size), 0);
	}
	/* Blocks before the cut read as published. */
	assert_int_equal(bm_read(ds, BS + 5, got, sizeof(got)), sizeof(got));
	assert_memory_equal(got, data + BS + 5, sizeof(got));
	bm_close(ds);
	free(block);
	free(data);
}

static void a_sequential_read_through_a_mapping_reads_every_piece(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 9 * BS + 3 * PS + 11; /* a short last block */
	unsigned char *data = ts_pattern(size, 308);
	char url[512];

	memset(data + 4 * BS, 0, BS); /* a hole */
	tc_store_url(url, sizeof(url), st, vpath("/seq"));
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	unsigned char *got = tc_read_mapped(ds); /* read-ahead: runs of pieces */
	assert_memory_equal(got, data, size);
	free(got);
	/* Each piece loaded once, by its fault or by a run: 40 loads (10 on
	 * a mapping of whole blocks), the hole's bytes fetched by none. */
	struct bm_stats bst;
	bm_stats(ds, &bst);
	assert_int_equal(bst.fetched_blocks + bst.hole_blocks, (size + PS - 1) / PS);
	assert_int_equal(bst.fetched_bytes, size - BS);
	bm_close(ds);
	free(data);
}

static void a_written_piece_is_committed_with_the_rest_of_its_block(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 4, size = nblk * BS - 1000;
	unsigned char *data = ts_pattern(size, 309);
	char key[80], want[80];
	struct tc_mapped v;
	uint64_t gen;

	put_and_map(st, vpath("/piecewrite"), data, size, &v);
	unsigned char *mem = v.mem;
	/* One byte of piece 3 of block 1 (its other pieces never loaded),
	 * pieces 0 and 2 of block 2, all of block 0, the short last block's
	 * last piece. */
	mem[BS + 3 * PS + 1] ^= 0x5a;
	struct bm_stats bst;
	bm_stats(v.ds, &bst);
	assert_int_equal(bst.fetched_bytes, PS); /* that piece alone */
	mem[2 * BS + 7] ^= 0x11;
	mem[2 * BS + 2 * PS + 9] ^= 0x22;
	memset(mem, 0x3c, BS);
	mem[size - 1] ^= 0x44;
	memcpy(data, mem, size);
	assert_int_equal(bm_commit(v.ds, &gen), 0);
	assert_int_equal(gen, 2);
	/* The mapping still reads the committed bytes. */
	assert_memory_equal(mem, data, size);
	tc_map_close(&v);
	assert_true(tc_dataset_equals(v.url, 0, data, size));
	for (uint64_t b = 0; b < nblk; b++) {
		size_t len = b + 1 == nblk ? size - b * BS : BS;
		v3_key(data + b * BS, len, want, sizeof(want));
		assert_string_equal(tc_block_key(v.url, b, key, sizeof(key)), want);
	}
	free(data);
}

static void a_block_written_whole_through_a_mapping_is_committed_without_fetching_it(void **state)
{
	struct tc_store *st = tc_store_of(state);
	tc_require(st, TC_CAN_COUNT, "counts the bytes the server sends");
	size_t nblk = 3, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 310);
	struct tc_mapped v;
	uint64_t gen;

	tc_store_url(v.url, sizeof(v.url), st, vpath("/whole"));
	tc_map_put(&v, BS, data, size);
	/* No read-ahead: only the writes' own loads are fetched. */
	v.o.readahead_bytes = 0;
	tc_map_open(&v);
	/* Counted from before the writes: the server counts an answer's bytes
	 * once its write returned, which may be after the client has them,
	 * so a load's piece could be counted after a reading taken between
	 * the writes and the commit (a flake under load: 66,973 bytes). */
	long out = tc_server_bytes_out(&st->srv);
	memset(v.mem + BS, 0x6b, BS); /* every piece of block 1: 4 loads */
	memset(data + BS, 0x6b, BS);
	assert_int_equal(bm_commit(v.ds, &gen), 0);
	assert_int_equal(gen, 2);
	/* Its pieces are all in the writeout: nothing of its old object is
	 * read back at the commit (small answers only: gc.json, the
	 * manifest's HEAD), on top of the 4 (16) pieces the writes loaded. */
	long sent = tc_server_bytes_out(&st->srv) - out;
	if (sent >= (long)(BS + PS))
		fail_msg("the server sent %ld bytes for the writes' 4 loads and the commit", sent);
	tc_map_close(&v);
	assert_true(tc_dataset_equals(v.url, 0, data, size));
	free(data);
}

static void a_v3_tree_read_as_version_2_is_refused_with_one_line(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t size = 3 * BS;
	unsigned char *data = ts_pattern(size, 305);
	char url[512], buf[64];

	tc_store_url(url, sizeof(url), st, vpath("/as2"));
	tc_put(url, BS, data, size);
	/* The same tree under a manifest that says version 2 (sealed again):
	 * a v2 reader's walk meets a page of format 3 and stops there. */
	json_t *man = tc_store_manifest(st, vpath("/as2"));
	json_object_set_new(man, "version", json_integer(2));
	json_object_del(man, "piece"); /* version 4's */
	tc_store_put_manifest(st, vpath("/as2"), man);
	json_decref(man);
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_read(ds, BS, buf, sizeof(buf)), BM_EFORMAT);
	tc_assert_one_line_naming(bm_last_error(ds), FMT == 4 ? "page version 3 (format 4) in a tree of format version 2"
								  : "page version 2 (format 3) in a tree of format version 2");
	tc_assert_one_line_naming(bm_last_error(ds), vpath("/as2/index/"));
	bm_close(ds);
	struct bm_options o;
	tc_options(&o);
	if (FMT == 4) {
		/* Read as version 3 (its "piece" taken away): the same. */
		man = tc_store_manifest(st, vpath("/as2"));
		json_object_set_new(man, "version", json_integer(3));
		json_object_del(man, "piece");
		tc_store_put_manifest(st, vpath("/as2"), man);
		json_decref(man);
		ds = tc_open(url, 0);
		assert_int_equal(bm_read(ds, BS, buf, sizeof(buf)), BM_EFORMAT);
		tc_assert_one_line_naming(bm_last_error(ds),
					  "page version 3 (format 4) in a tree of format version 3");
		bm_close(ds);
		/* Refused at open: version 3 with a "piece", version 4
		 * without one or with one that is not a power of two. */
		static const struct {
			unsigned version;
			json_int_t piece; /* 0: none */
			const char *says;
		} bad[] = {
			{ 3, 16384, "a version 3 manifest has a field \"piece\"" },
			{ 4, 0, "a version 4 manifest has no field \"piece\"" },
			{ 4, 3000, "a version 4 manifest's piece 3000 is not a power of two from 4096 to blksize/2" },
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			man = tc_store_manifest(st, vpath("/as2"));
			json_object_set_new(man, "version", json_integer(bad[i].version));
			json_object_del(man, "piece");
			if (bad[i].piece)
				json_object_set_new(man, "piece", json_integer(bad[i].piece));
			tc_store_put_manifest(st, vpath("/as2"), man);
			json_decref(man);
			assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
			tc_assert_one_line_naming(bm_last_error(NULL), bad[i].says);
		}
		free(data);
		return;
	}
	/* Version 3 for blocks of 64 KiB: refused at open. */
	man = tc_store_manifest(st, vpath("/as2"));
	json_object_set_new(man, "version", json_integer(3));
	json_object_set_new(man, "blksize", json_integer(64 << 10));
	tc_store_put_manifest(st, vpath("/as2"), man);
	json_decref(man);
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	tc_assert_one_line_naming(bm_last_error(NULL), "version 3 is for blocks larger than its 64 KiB pieces");
	free(data);
}

static void gc_of_a_v3_dataset_drops_what_only_dropped_generations_named(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 3, size = nblk * BS;
	unsigned char *data = ts_pattern(size, 306);
	char url[512], old_key[80], path[300];
	uint64_t gen;

	tc_store_url(url, sizeof(url), st, vpath("/gc"));
	tc_put(url, BS, data, size);
	tc_block_key(url, 1, old_key, sizeof(old_key));
	bm_dataset *ds = tc_open(url, 0);
	data[BS + 5] ^= 0x42;
	assert_int_equal(bm_write(ds, BS + 5, data + BS + 5, 1), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	bm_close(ds);

	struct bm_options o;
	tc_options(&o);
	struct bm_gc_policy p = { .keep = 1, .grace_s = 0 };
	struct bm_gc_report r;
	memset(&r, 0, sizeof(r));
	assert_int_equal(bm_gc(url, &o, &p, &r), 0);
	assert_int_equal(r.generations_kept, 1);
	assert_int_equal(r.generations_dropped, 1);
	/* Generation 1's block 1 and its one index page (the root leaf). */
	assert_int_equal(r.objects_deleted, 2);
	assert_int_equal(r.bytes_freed, BS + 8 + 3 * (17 + PIECES * 16));
	struct ts_resp resp;
	snprintf(path, sizeof(path), "%s/gc/%s", V, old_key);
	assert_int_equal(tc_store_request(st, "HEAD", path, NULL, 0, &resp), CURLE_OK);
	assert_int_equal(resp.status, 404);
	ts_resp_free(&resp);
	assert_true(tc_dataset_equals(url, 0, data, size));
	/* Nothing more to drop. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(bm_gc(url, &o, &p, &r), 0);
	assert_int_equal(r.objects_deleted, 0);
	free(data);
}

int main(void)
{
	/* gc's settle time: short, no writer runs beside the gc here. */
	setenv("BLKMAP_GC_SETTLE_MS", "20", 1);
	setenv("BLKMAP_WCFS", "off", 1);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_new_dataset_of_blocks_above_64k_has_pieces_and_reads_back),
		cmocka_unit_test(commits_of_a_v3_dataset_round_trip_and_stay_version_3),
		cmocka_unit_test(a_v1_dataset_of_blocks_above_64k_becomes_version_2_never_3),
		cmocka_unit_test(a_damaged_piece_is_refused_naming_block_and_piece_and_never_mapped),
		cmocka_unit_test(a_random_miss_fetches_one_piece_with_one_range_get_of_64k),
		cmocka_unit_test(a_small_bm_read_fetches_only_the_pieces_it_covers_with_one_range_get),
		cmocka_unit_test(a_leaf_larger_than_the_index_share_of_the_cache_is_fetched_once),
		cmocka_unit_test(the_default_pieces_are_16k_at_most_1024_a_block_and_none_for_64k_blocks),
		cmocka_unit_test(a_small_bm_read_inside_a_piece_or_block_stores_only_its_bytes_with_no_buffer_of_either),
		cmocka_unit_test(bm_reads_spanning_pieces_and_blocks_return_the_right_bytes),
		cmocka_unit_test(a_bm_read_of_a_damaged_piece_is_refused_naming_it_and_the_others_read),
		cmocka_unit_test(a_bm_read_after_a_shrink_reads_zeros_past_the_cut_in_pieces_too),
		cmocka_unit_test(a_sequential_read_through_a_mapping_reads_every_piece),
		cmocka_unit_test(a_written_piece_is_committed_with_the_rest_of_its_block),
		cmocka_unit_test(a_block_written_whole_through_a_mapping_is_committed_without_fetching_it),
		cmocka_unit_test(a_v3_tree_read_as_version_2_is_refused_with_one_line),
		cmocka_unit_test(gc_of_a_v3_dataset_drops_what_only_dropped_generations_named),
	};
	/* Format 3, then format 4 of 16 KiB pieces: every case for each
	 * (each run its own server). */
	setenv("BLKMAP_PIECE_BYTES", "65536", 1);
	int rc = tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
	if (rc != 0)
		return rc;
	FMT = 4;
	PS = (size_t)16 << 10;
	V = "/v4";
	unsetenv("BLKMAP_PIECE_BYTES");
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
