/* tests/test_client_v2.c — dataset format version 2 through the library,
 * one program per kind of server (TC_KIND; client.mk): what a commit
 * writes (the block, the index pages on its path, a small self-checked
 * manifest; its index pages PUT in parallel), one small GET to open, the upgrade of a version 1 dataset
 * (one line on stderr, the old generations still readable), a v1-only
 * reader's refusal, `blkmap stat`'s format version (and no piece size), refresh and bm_next_block over two trees, hostile
 * index pages and manifests served by the server (one-line errors; a
 * fault under a bad page gets SIGBUS, never wrong bytes), a
 * byte flipped in transit (fetched again), and a 2^50-byte dataset whose
 * metadata costs the pages touched.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#include "client_util.h"
#include "../client/index_load.h"

/* A v2 tree (no piece sums) of root and nblk blocks, for index.c's walks. */
#define V2TREE(root, nblk) (&(const struct bm_itree){ (root), (nblk), 0 })

#ifndef TC_KIND
#define TC_KIND "blkmap-server"
#endif

#define BS 4096

static void a_new_dataset_is_version_2_and_opens_with_one_small_get(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	unsigned char *data = ts_pattern(size, 201);
	char url[512];

	memset(data + 7 * BS, 0, BS); /* a hole */
	tc_store_url(url, sizeof(url), st, "/v2/new");
	tc_put(url, BS, data, size);
	json_t *man = tc_store_manifest(st, "/v2/new");
	assert_int_equal(json_integer_value(json_object_get(man, "version")), 2);
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), nblk - 1);
	assert_true(json_is_string(json_object_get(man, "root")));
	assert_true(json_is_string(json_object_get(man, "manifest_sum")));
	assert_null(json_object_get(man, "blocks"));
	json_decref(man);

	long gets = tc_store_count(st, "GET");
	/* With its '/': no probe for a flat object (test_client_flat.c). */
	char slash[520];
	snprintf(slash, sizeof(slash), "%s/", url);
	bm_dataset *ds = tc_open(slash, 0);
	if (gets >= 0) /* the server counts: only the manifest */
		assert_int_equal(tc_store_count(st, "GET") - gets, 1);
	assert_int_equal(bm_nblocks_stored(ds), nblk - 1);
	assert_int_equal(bm_size(ds), size);
	unsigned char *got = tc_read_mapped(ds);
	assert_memory_equal(got, data, size);
	free(got);
	/* The stored blocks, in order, without the hole. */
	uint64_t b = 0, n = 0, next;
	while (bm_next_block(ds, b, &next) == 1) {
		assert_int_not_equal(next, 7);
		n++;
		b = next + 1;
	}
	assert_int_equal(n, nblk - 1);
	char sum[64];
	assert_int_equal(bm_block_sum(ds, 7, sum, sizeof(sum)), 0);
	assert_int_equal(bm_block_sum(ds, 8, sum, sizeof(sum)), 1);
	assert_int_equal(bm_block_sum(ds, nblk, sum, sizeof(sum)), BM_EINVAL);
	bm_close(ds);
	free(data);
}

static void a_one_block_commit_writes_the_block_its_path_and_a_small_manifest(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	unsigned char *data = ts_pattern(size, 202);
	char url[512];
	uint64_t gen;

	tc_store_url(url, sizeof(url), st, "/v2/one");
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	data[270 * BS + 9] ^= 0x33;
	long puts = tc_store_count(st, "PUT");
	assert_int_equal(bm_write(ds, 270 * BS, data + 270 * BS, BS), 0);
	assert_int_equal(bm_commit(ds, &gen), 0);
	assert_int_equal(gen, 2);
	/* The block, the leaf and the root page, the manifest, its kept copy. */
	if (puts >= 0)
		assert_int_equal(tc_store_count(st, "PUT") - puts, 1 + 2 + 1 + 1);
	bm_close(ds);
	json_t *man = tc_store_manifest(st, "/v2/one");
	assert_int_equal(json_integer_value(json_object_get(man, "parent")), 1);
	assert_int_equal(json_integer_value(json_object_get(man, "generation")), 2);
	size_t mlen;
	char *text = tc_manifest_text(man, &mlen);
	assert_true(mlen < 400); /* whatever the dataset's size */
	free(text);
	json_decref(man);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

/* A commit that changes one block under each of four leaves, to holes (so
 * that no block is uploaded): its five new pages (four leaves, the root)
 * are PUT in parallel, every answer late, several late at once. */
static void the_index_pages_of_a_commit_are_put_in_parallel(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 1024, size = nblk * BS; /* four leaves of 256 blocks */
	char url[512];
	uint64_t gen;

	tc_require(st, TC_CAN_FAULTS | TC_CAN_COUNT, "it injects no latency");
	unsigned char *data = ts_pattern(size, 203);
	tc_store_url(url, sizeof(url), st, "/v2/parallel");
	tc_put(url, BS, data, size);
	bm_dataset *ds = tc_open(url, 0);
	char *zeros = calloc(1, BS);
	for (size_t leaf = 0; leaf < 4; leaf++) {
		assert_int_equal(bm_write(ds, (leaf * 256 + 7) * BS, zeros, BS), 0);
		memset(data + (leaf * 256 + 7) * BS, 0, BS);
	}
	long puts = tc_store_count(st, "PUT");
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 100}"), 200);
	(void)tc_server_stat(&st->srv, "requests_in_flight_max", NULL); /* a new period */
	assert_int_equal(bm_commit(ds, &gen), 0);
	long peak = tc_server_stat(&st->srv, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-latency-ms\": 0}"), 200);
	assert_int_equal(gen, 2);
	/* The five pages, the manifest and its kept copy; no block. */
	assert_int_equal(tc_store_count(st, "PUT") - puts, 5 + 1 + 1);
	/* Everything else a commit asks is one request at a time. */
	assert_true(peak >= 2);
	bm_close(ds);
	free(zeros);
	assert_true(tc_dataset_equals(url, 0, data, size));
	free(data);
}

struct upgrade_case {
	const char *url;
	const unsigned char *data;
};

static int upgrade_child(void *arg)
{
	struct upgrade_case *c = arg;
	struct bm_options o;
	bm_dataset *ds;
	uint64_t gen;

	if (bm_options_init(&o) < 0)
		return 1;
	o.retry_base_ms = 1;
	if (bm_open(&ds, c->url, &o) < 0 || bm_generation(ds) != 1)
		return 2;
	if (bm_write(ds, 3 * BS, c->data + 3 * BS, BS) < 0 || bm_commit(ds, &gen) < 0 || gen != 2)
		return 3;
	if (bm_write(ds, 4 * BS, c->data + 4 * BS, BS) < 0 || bm_commit(ds, &gen) < 0 || gen != 3)
		return 4;
	bm_close(ds);
	return 0;
}

static void a_v1_dataset_is_upgraded_by_its_next_commit_saying_so_once(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300;
	unsigned char *data = ts_pattern(nblk * BS, 203), *v1 = malloc(nblk * BS);
	char url[512], *err = NULL;

	memcpy(v1, data, nblk * BS);
	tc_store_url(url, sizeof(url), st, "/v2/upgrade");
	tc_store_put_v1(st, "/v2/upgrade", BS, data, nblk);
	data[3 * BS] ^= 1;
	data[4 * BS] ^= 1;
	struct upgrade_case c = { url, data };
	int status = tc_child(upgrade_child, &c, &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("status %#x, stderr \"%s\"", status, err ? err : "");
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "from format version 1 to 2"));
	assert_non_null(strstr(err, url));
	free(err);
	json_t *man = tc_store_manifest(st, "/v2/upgrade");
	assert_int_equal(json_integer_value(json_object_get(man, "version")), 2);
	assert_int_equal(json_integer_value(json_object_get(man, "stored")), nblk);
	json_decref(man);
	assert_true(tc_dataset_equals(url, 0, data, nblk * BS));
	/* The version 1 generation stays readable. */
	assert_true(tc_dataset_equals(url, 1, v1, nblk * BS));
	free(data);
	free(v1);
}

/* `blkmap stat`'s "format_version" of the output of URL (with --at at);
 * its "piece_bytes" is asserted null (formats 1 and 2 and a flat object
 * have no pieces). */
static json_int_t stat_format_version(const char *url, const char *at, bool *is_null)
{
	char *out = NULL, *err = NULL;
	const char *with_at[] = { "stat", "--at", at, url, NULL }, *latest[] = { "stat", url, NULL };
	int st = tc_cli(&out, &err, at ? with_at : latest);
	if (st != 0)
		fail_msg("stat %s: %s", url, err ? err : "");
	json_t *doc = json_loads(out, 0, NULL);
	assert_non_null(doc);
	json_t *v = json_object_get(doc, "format_version");
	assert_non_null(v); /* the field is there */
	*is_null = json_is_null(v);
	json_int_t ver = json_integer_value(v);
	json_t *piece = json_object_get(doc, "piece_bytes");
	assert_non_null(piece); /* the field is there */
	assert_true(json_is_null(piece));
	json_decref(doc);
	free(out);
	free(err);
	return ver;
}

static void stat_shows_the_format_version_of_the_generation_and_no_piece_size(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 8;
	unsigned char *data = ts_pattern(nblk * BS, 210);
	char url[512];
	bool is_null = true;

	tc_store_url(url, sizeof(url), st, "/v2/statver");
	tc_store_put_v1(st, "/v2/statver", BS, data, nblk);
	assert_int_equal(stat_format_version(url, NULL, &is_null), 1);
	assert_false(is_null);
	/* The next commit upgrades it; generation 1 stays version 1. */
	struct upgrade_case c = { url, data };
	char *err = NULL;
	data[3 * BS] ^= 1;
	int status = tc_child(upgrade_child, &c, &err);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("status %#x, stderr \"%s\"", status, err ? err : "");
	free(err);
	assert_int_equal(stat_format_version(url, NULL, &is_null), 2);
	assert_int_equal(stat_format_version(url, "1", &is_null), 1);
	/* A flat object has no format version. */
	assert_true(tc_store_put(st, "/v2/statver-flat.bin", data, BS) / 100 == 2);
	tc_store_url(url, sizeof(url), st, "/v2/statver-flat.bin");
	(void)stat_format_version(url, NULL, &is_null);
	assert_true(is_null);
	free(data);
}

static void a_v1_only_reader_refuses_v2_with_its_version_error(void **state)
{
	struct tc_store *st = tc_store_of(state);
	unsigned char *data = ts_pattern(4 * BS, 204);
	char url[512], msg[256];
	struct bm_manifest *m = NULL;

	tc_store_url(url, sizeof(url), st, "/v2/v1reader");
	tc_put(url, BS, data, 4 * BS);
	json_t *man = tc_store_manifest(st, "/v2/v1reader");
	size_t len;
	char *text = tc_manifest_text(man, &len);
	/* bm_manifest_parse is the version 1 parser, as a reader before
	 * format 2 has it. */
	assert_int_equal(bm_manifest_parse(text, len, &m, msg, sizeof(msg)), BM_EFORMAT);
	assert_non_null(strstr(msg, "format version 2 is not supported"));
	free(text);
	json_decref(man);
	free(data);
}

static void refresh_follows_another_writers_v2_generation(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	unsigned char *data = ts_pattern(size, 205);
	char url[512];
	uint64_t gen;

	tc_store_url(url, sizeof(url), st, "/v2/refresh");
	tc_put(url, BS, data, size);
	bm_dataset *reader = tc_open(url, 0), *writer = tc_open(url, 0);
	unsigned char *got = tc_read_mapped(reader); /* everything cached */
	free(got);
	data[280 * BS] ^= 0x77;
	memset(data + 10 * BS, 0, BS); /* becomes a hole */
	assert_int_equal(bm_write(writer, 280 * BS, data + 280 * BS, BS), 0);
	assert_int_equal(bm_write(writer, 10 * BS, data + 10 * BS, BS), 0);
	assert_int_equal(bm_commit(writer, &gen), 0);
	bm_close(writer);
	struct bm_stats s0, s1;
	bm_stats(reader, &s0);
	assert_int_equal(bm_refresh(reader), 0);
	assert_int_equal(bm_generation(reader), gen);
	assert_int_equal(bm_nblocks_stored(reader), nblk - 1);
	got = tc_read_mapped(reader);
	assert_memory_equal(got, data, size);
	bm_stats(reader, &s1);
	/* Only the changed block was fetched again (the hole costs none). */
	assert_int_equal(s1.fetched_blocks - s0.fetched_blocks, 1);
	bm_close(reader);
	free(got);
	free(data);
}

/* The key of an index page of the dataset at path: the root's first
 * child (depth 2) or the root. */
static void page_key(struct tc_store *st, const char *path, bool child, char out[BM_SUM_HEX + 1])
{
	json_t *man = tc_store_manifest(st, path);
	snprintf(out, BM_SUM_HEX + 1, "%s", json_string_value(json_object_get(man, "root")));
	json_decref(man);
	if (!child)
		return;
	char url[512], msg[256], ppath[300];
	snprintf(ppath, sizeof(ppath), "%s/index/%s", path, out);
	struct ts_resp r;
	assert_int_equal(tc_store_request(st, "GET", ppath, NULL, 0, &r), CURLE_OK);
	struct bm_ipage p;
	assert_int_equal(bm_ipage_decode(r.body, r.len, out, -1, 0, UINT64_MAX, 0, 0, &p, msg, sizeof(msg)), 0);
	ts_resp_free(&r);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", p.sum[0][i]);
	(void)url;
}

static void expect_read_error(const char *url, uint64_t off, int code, const char *what)
{
	bm_dataset *ds = tc_open(url, 0);
	char buf[BS];
	int64_t rc = bm_read(ds, off, buf, BS);
	if (rc != code)
		fail_msg("bm_read: %lld, not %d: %s", (long long)rc, code, bm_last_error(ds));
	tc_assert_one_line_naming(bm_last_error(ds), what);
	bm_close(ds);
}

static void hostile_index_pages_on_the_server_are_one_line_errors(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	unsigned char *data = ts_pattern(size, 206);
	char url[512], leaf[BM_SUM_HEX + 1], ppath[300], root[BM_SUM_HEX + 1];

	tc_store_url(url, sizeof(url), st, "/v2/hostile");
	tc_put(url, BS, data, size);
	page_key(st, "/v2/hostile", true, leaf);
	page_key(st, "/v2/hostile", false, root);

	/* A leaf whose bytes are another page's (valid, but not its key). */
	snprintf(ppath, sizeof(ppath), "/v2/hostile/index/%s", leaf);
	struct ts_resp r;
	char rpath[300];
	snprintf(rpath, sizeof(rpath), "/v2/hostile/index/%s", root);
	assert_int_equal(tc_store_request(st, "GET", rpath, NULL, 0, &r), CURLE_OK);
	assert_true(tc_store_put(st, ppath, r.body, r.len) / 100 == 2);
	expect_read_error(url, 5 * BS, BM_ECHECKSUM, ppath);

	/* The root page as the dataset's only page, where the tree of 300
	 * blocks needs a root of level 1 over leaves: a level-1 page where a
	 * leaf is needed loops nowhere, it is refused. */
	json_t *man = tc_store_manifest(st, "/v2/hostile");
	json_t *saved = json_deep_copy(man);
	json_object_set_new(man, "size", json_integer(200 * BS)); /* depth 1: root must be a leaf */
	json_object_set_new(man, "stored", json_integer(1));
	tc_store_put_manifest(st, "/v2/hostile", man);
	expect_read_error(url, 5 * BS, BM_EFORMAT, rpath);
	json_decref(man);

	/* Missing: the page is gone from the server. */
	tc_store_put_manifest(st, "/v2/hostile", saved);
	ts_resp_free(&r);
	assert_int_equal(tc_store_request(st, "DELETE", ppath, NULL, 0, &r), CURLE_OK);
	ts_resp_free(&r);
	expect_read_error(url, 5 * BS, BM_EFORMAT, ppath);

	/* A root that is not a sum: the manifest is refused at open. */
	json_object_set_new(saved, "root", json_string("../../etc/passwd"));
	tc_store_put_manifest(st, "/v2/hostile", saved);
	bm_dataset *ds = NULL;
	struct bm_options o;
	tc_options(&o);
	assert_int_equal(bm_open(&ds, url, &o), BM_EFORMAT);
	tc_assert_one_line_naming(bm_last_error(NULL), "manifest.json");
	assert_non_null(strstr(bm_last_error(NULL), "\"root\""));
	json_decref(saved);
	free(data);
}

static void a_fault_on_a_block_under_a_hostile_page_gets_sigbus_and_one_line(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	unsigned char *data = ts_pattern(size, 210);
	char url[512], leaf[BM_SUM_HEX + 1], ppath[300], *err = NULL;

	tc_store_url(url, sizeof(url), st, "/v2/sigbus");
	tc_put(url, BS, data, size);
	page_key(st, "/v2/sigbus", true, leaf);
	snprintf(ppath, sizeof(ppath), "/v2/sigbus/index/%s", leaf);
	unsigned char *junk = ts_pattern(BM_IPAGE_MAX, 211);
	assert_true(tc_store_put(st, ppath, junk, BM_IPAGE_MAX) / 100 == 2);
	free(junk);
	struct tc_touch c = { url, 5 * BS };
	int status = tc_child(tc_touch_child, &c, &err);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS)
		fail_msg("status %#x, stderr \"%s\"", status, err ? err : "");
	assert_int_equal(tc_lines(err), 1);
	assert_non_null(strstr(err, "block 5"));
	assert_non_null(strstr(err, ppath));
	free(err);
	free(data);
}

static void a_flipped_byte_in_transit_is_fetched_again(void **state)
{
	struct tc_store *st = tc_store_of(state);
	size_t nblk = 300, size = nblk * BS; /* depth 2: two leaves and the root */
	char url[512];
	struct bm_stats s;

	/* Before any allocation: a skip leaves the test (LeakSanitizer). */
	tc_require(st, TC_CAN_FAULTS, "needs fault injection (blkmap-server)");
	unsigned char *data = ts_pattern(size, 207);
	tc_store_url(url, sizeof(url), st, "/v2/flip");
	tc_put(url, BS, data, size);
	/* The manifest, every page and block: a third come damaged. */
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 0.3, \"fault-seed\": 11}"), 200);
	bm_dataset *ds = tc_open(url, 0);
	unsigned char *got = tc_read_mapped(ds);
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 0}"), 200);
	assert_memory_equal(got, data, size);
	bm_stats(ds, &s);
	assert_true(s.retries > 0);
	bm_close(ds);
	free(got);

	/* The manifest alone, damaged twice then whole: opened. */
	long corrupt0 = tc_server_stat(&st->srv, "faults", "corrupt");
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 1}"), 200);
	struct bm_options o;
	tc_options(&o);
	o.retries = 2;
	bm_dataset *bad = NULL;
	assert_int_equal(bm_open(&bad, url, &o), BM_EFORMAT); /* damaged each time */
	tc_assert_one_line_naming(bm_last_error(NULL), "manifest.json");
	assert_int_equal(ts_set_faults(&st->srv, "{\"fault-corrupt-rate\": 0}"), 200);
	assert_int_equal(tc_server_stat(&st->srv, "faults", "corrupt") - corrupt0, 3);
	free(data);
}

/* Writes a tree for a 2^50-byte dataset of 4 KiB blocks with blocks at
 * its two ends through the store directly, and its manifest. */
static void put_huge(struct tc_store *st, const char *path, const unsigned char *b0,
		     const unsigned char *blast)
{
	uint64_t nblk = ((uint64_t)1 << 50) / BS;
	struct bm_store_opts so = { .connect_timeout_ms = 5000, .timeout_ms = 20000, .retry_base_ms = 1,
				    .retries = 10, .connections = 2 };
	struct bm_store *s;
	struct bm_pages *pc;
	struct bm_index_io io;
	struct bm_version v;
	char url[512], msg[512], key[64];
	struct bm_index_change ch[2] = { { .blk = 0 }, { .blk = nblk - 1 } };

	tc_store_url(url, sizeof(url), st, path);
	assert_int_equal(bm_store_open(&s, url, &so, msg, sizeof(msg)), 0);
	assert_int_equal(bm_store_head(s, "none", &v, msg, sizeof(msg)), BM_ENOTFOUND);
	assert_int_equal(bm_pages_new(&pc, s, 1 << 20), 0);
	bm_pages_io(pc, &io);
	bm_sum_hex(b0, BS, ch[0].sum);
	bm_sum_hex(blast, BS, ch[1].sum);
	for (int i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "blocks/%s", ch[i].sum);
		assert_int_equal(bm_put_immutable(s, key, i ? blast : b0, BS, true, msg, sizeof(msg)), 0);
	}
	struct bm_manifest2 m = { .blksize = BS, .size = (uint64_t)1 << 50, .generation = 1,
				  .stored = 2 };
	if (bm_index_update(&io, V2TREE("", 0), ch, 2, nblk, m.root, NULL, msg, sizeof(msg)) != 0)
		fail_msg("%s", msg);
	size_t len;
	char *text = bm_manifest2_dump(&m, &len);
	assert_int_equal(bm_store_put(s, "manifest.json", text, len, NULL, NULL, msg, sizeof(msg)), 0);
	free(text);
	bm_pages_free(pc);
	bm_store_close(s);
}

static long maxrss_kib(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static void a_2_to_50_byte_dataset_costs_the_pages_touched_not_its_size(void **state)
{
	struct tc_store *st = tc_store_of(state);
	unsigned char *b0 = ts_pattern(BS, 208), *blast = ts_pattern(BS, 209);
	uint64_t size = (uint64_t)1 << 50;
	char url[512];
	bm_mapping *m;
	void *addr;

	tc_store_url(url, sizeof(url), st, "/v2/huge");
	put_huge(st, "/v2/huge", b0, blast);
	long rss0 = maxrss_kib();
	bm_dataset *ds = tc_open(url, 0);
	assert_int_equal(bm_size(ds), size);
	assert_int_equal(bm_nblocks_stored(ds), 2);
	/* The last MiB mapped, its last block read: 5 pages down. */
	assert_int_equal(bm_map(ds, size - (1 << 20), 1 << 20, &addr, &m), 0);
	assert_memory_equal((char *)addr + (1 << 20) - BS, blast, BS);
	assert_int_equal(((char *)addr)[0], 0); /* a hole */
	bm_unmap(m);
	char buf[BS];
	assert_int_equal(bm_read(ds, 0, buf, BS), BS);
	assert_memory_equal(buf, b0, BS);
	uint64_t next;
	assert_int_equal(bm_next_block(ds, 1, &next), 1);
	assert_int_equal(next, size / BS - 1);
	bm_close(ds);
	/* Not a table of 2^38 entries: a few MiB at most. */
	assert_true(maxrss_kib() - rss0 < 64 * 1024);
	free(b0);
	free(blast);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_new_dataset_is_version_2_and_opens_with_one_small_get),
		cmocka_unit_test(a_one_block_commit_writes_the_block_its_path_and_a_small_manifest),
		cmocka_unit_test(the_index_pages_of_a_commit_are_put_in_parallel),
		cmocka_unit_test(a_v1_dataset_is_upgraded_by_its_next_commit_saying_so_once),
		cmocka_unit_test(a_v1_only_reader_refuses_v2_with_its_version_error),
		cmocka_unit_test(stat_shows_the_format_version_of_the_generation_and_no_piece_size),
		cmocka_unit_test(refresh_follows_another_writers_v2_generation),
		cmocka_unit_test(hostile_index_pages_on_the_server_are_one_line_errors),
		cmocka_unit_test(a_fault_on_a_block_under_a_hostile_page_gets_sigbus_and_one_line),
		cmocka_unit_test(a_flipped_byte_in_transit_is_fetched_again),
		cmocka_unit_test(a_2_to_50_byte_dataset_costs_the_pages_touched_not_its_size),
	};
	return tc_run_suite(TC_KIND, tests, sizeof(tests) / sizeof(tests[0]));
}
