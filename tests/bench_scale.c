/* tests/bench_scale.c — what metadata costs as a dataset grows (issue 12,
 * `make bench`): format 2 datasets of 2^12, 2^15 and 2^17 stored blocks
 * of 4 KiB (and 2^20 with BENCH_SCALE_BIG=1) on blkmap-server --memory
 * (loopback).  Block contents repeat with a period of 4099 blocks (equal
 * blocks are stored once; index pages stay distinct), so a dataset is made
 * quickly through the store: its blocks, its index pages, its manifest.
 * For each size, the median of ROUNDS (9) runs of:
 *   open      bm_open + bm_close of the latest generation, ms
 *   commit1   a 1-block bm_write + bm_commit, ms, and the bytes the server
 *             received for it (bytes_in: bodies and request heads) and
 *             those beyond the block's 4096
 *   refresh   bm_refresh of a reader after another writer's 1-block
 *             commit, ms (the reader read block 0 before)
 *   switch    what the mirror does when head/ moves to the next
 *             generation: open it and list the blocks changed since the
 *             handle it had (bm_diff_blocks), ms
 * One line per size and figure:
 *   scale <figure> n=<blocks> ms=<median> [bytes=...] x2^12=<ratio to the
 *   2^12 case in the same run>
 * Not a test: nothing here asserts a time.
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bench_util.h"
#include "client_util.h"
#include "../client/index_load.h"

/* A v2 tree (no piece sums) of root and nblk blocks, for index.c's walks. */
#define V2TREE(root, nblk) (&(const struct bm_itree){ (root), (nblk), 0 })

#define BS 4096
#define PERIOD 4099
#define ROUNDS 9
#define CACHE ((size_t)256 << 20)

/* The content of block b: one of PERIOD patterns. */
static void block_of(uint64_t b, unsigned char *out)
{
	uint64_t k = b % PERIOD;
	for (size_t i = 0; i < BS; i += 8) {
		uint64_t x = (k + 1) * 0x9e3779b97f4a7c15ull ^ (i * 0xbf58476d1ce4e5b9ull);
		memcpy(out + i, &x, 8);
	}
}

/* Makes the format 2 dataset at url: nblk stored blocks, generation 1. */
static void make_dataset(const char *url, uint64_t nblk)
{
	struct bm_store_opts so = { .connect_timeout_ms = 5000, .timeout_ms = 60000, .retry_base_ms = 1,
				    .retries = 10, .connections = 4 };
	struct bm_store *s;
	struct bm_pages *pc;
	struct bm_index_io io;
	struct bm_version v;
	char msg[512], key[64];
	static char sums[PERIOD][BM_SUM_HEX + 1];
	unsigned char buf[BS];

	if (bm_store_open(&s, url, &so, msg, sizeof(msg)) != 0)
		bench_die("store", msg);
	(void)bm_store_head(s, "none", &v, msg, sizeof(msg));
	if (bm_pages_new(&pc, s, (size_t)64 << 20) != 0)
		bench_die("pages", "out of memory");
	bm_pages_io(pc, &io);
	for (uint64_t k = 0; k < PERIOD && k < nblk; k++) {
		block_of(k, buf);
		bm_sum_hex(buf, BS, sums[k]);
		memcpy(key, "blocks/", 7);
		memcpy(key + 7, sums[k], BM_SUM_HEX + 1);
		if (bm_put_immutable(s, key, buf, BS, false, msg, sizeof(msg)) != 0)
			bench_die("block", msg);
	}
	struct bm_index_change *ch = malloc(nblk * sizeof(*ch));
	if (ch == NULL)
		bench_die("changes", "out of memory");
	for (uint64_t b = 0; b < nblk; b++) {
		ch[b].blk = b;
		memcpy(ch[b].sum, sums[b % PERIOD], sizeof(ch[b].sum));
	}
	struct bm_manifest2 m = { .blksize = BS, .size = nblk * BS, .generation = 1, .stored = nblk };
	if (bm_index_update(&io, V2TREE("", 0), ch, nblk, nblk, m.root, NULL, msg, sizeof(msg)) != 0)
		bench_die("index", msg);
	free(ch);
	size_t len;
	char *text = bm_manifest2_dump(&m, &len);
	if (bm_store_put(s, "manifest.json", text, len, NULL, NULL, msg, sizeof(msg)) != 0 ||
	    bm_store_put(s, "gen/1.json", text, len, NULL, NULL, msg, sizeof(msg)) != 0)
		bench_die("manifest", msg);
	free(text);
	bm_pages_free(pc);
	bm_store_close(s);
}

/* A 1-block change at block b of a handle, committed: seconds. */
static double commit_one(bm_dataset *ds, uint64_t b, unsigned salt)
{
	unsigned char buf[BS];
	block_of(b, buf);
	memcpy(buf, &salt, sizeof(salt));
	double t0 = bench_now();
	if (bm_write(ds, b * BS, buf, BS) != 0 || bm_commit(ds, NULL) != 0)
		bench_die("commit", bm_last_error(ds));
	return bench_now() - t0;
}

static int count_range(void *arg, uint64_t first, uint64_t count)
{
	(void)first;
	*(uint64_t *)arg += count;
	return 0;
}

struct figures {
	double open, commit, refresh, sw;
	double bytes;
};

static void measure(const struct ts_server *srv, uint64_t nblk, struct figures *f)
{
	char url[512], path[64];
	double t_open[ROUNDS], t_commit[ROUNDS], t_refresh[ROUNDS], t_switch[ROUNDS], bytes[ROUNDS];
	unsigned salt = 1;

	snprintf(path, sizeof(path), "/scale/%" PRIu64, nblk);
	tc_url(url, sizeof(url), srv, path);
	make_dataset(url, nblk);
	for (int r = 0; r < ROUNDS; r++) {
		double t0 = bench_now();
		bm_dataset *ds = bench_open(url, CACHE);
		bm_close(ds);
		t_open[r] = bench_now() - t0;

		ds = bench_open(url, CACHE);
		long in0 = tc_server_stat(srv, "bytes_in", NULL);
		t_commit[r] = commit_one(ds, nblk / 2 + (uint64_t)r, salt++);
		bytes[r] = (double)(tc_server_stat(srv, "bytes_in", NULL) - in0);

		/* A reader that read block 0; another writer commits. */
		bm_dataset *reader = bench_open(url, CACHE);
		char b0[BS];
		if (bm_read(reader, 0, b0, BS) != BS)
			bench_die("read", bm_last_error(reader));
		commit_one(ds, nblk / 3 + (uint64_t)r, salt++);
		t0 = bench_now();
		if (bm_refresh(reader) != 0)
			bench_die("refresh", bm_last_error(reader));
		t_refresh[r] = bench_now() - t0;

		/* The mirror's switch: the next generation opened, compared. */
		commit_one(ds, nblk / 4 + (uint64_t)r, salt++);
		uint64_t changed = 0;
		t0 = bench_now();
		bm_dataset *next = bench_open(url, CACHE);
		if (bm_diff_blocks(reader, next, count_range, &changed) != 0)
			bench_die("diff", bm_last_error(reader));
		t_switch[r] = bench_now() - t0;
		if (changed != 1)
			bench_die("diff", "not exactly one block changed");
		bm_close(next);
		bm_close(reader);
		bm_close(ds);
	}
	f->open = bench_median(t_open, ROUNDS) * 1e3;
	f->commit = bench_median(t_commit, ROUNDS) * 1e3;
	f->refresh = bench_median(t_refresh, ROUNDS) * 1e3;
	f->sw = bench_median(t_switch, ROUNDS) * 1e3;
	f->bytes = bench_median(bytes, ROUNDS);
}

int main(void)
{
	static const uint64_t sizes[] = { 1u << 12, 1u << 15, 1u << 17, 1u << 20 };
	const char *big = getenv("BENCH_SCALE_BIG");
	size_t nsizes = big && strcmp(big, "1") == 0 ? 4 : 3;
	struct figures base = { 0 }, f;
	struct ts_server srv;

	if (ts_start(&srv, (const char *const[]){ "--memory", "--admin", NULL }) != 0)
		bench_die("blkmap-server", "did not start");
	for (size_t i = 0; i < nsizes; i++) {
		uint64_t n = sizes[i];
		measure(&srv, n, &f);
		if (i == 0)
			base = f;
		printf("scale open n=%" PRIu64 " ms=%.2f x2^12=%.2f\n", n, f.open, f.open / base.open);
		printf("scale commit1 n=%" PRIu64 " ms=%.2f bytes=%.0f beyond_block=%.0f x2^12=%.2f\n", n,
		       f.commit, f.bytes, f.bytes - BS, f.commit / base.commit);
		printf("scale refresh n=%" PRIu64 " ms=%.2f x2^12=%.2f\n", n, f.refresh, f.refresh / base.refresh);
		printf("scale switch n=%" PRIu64 " ms=%.2f x2^12=%.2f\n", n, f.sw, f.sw / base.sw);
		fflush(stdout);
	}
	ts_stop(&srv);
	return 0;
}
