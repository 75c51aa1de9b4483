/* tests/fuzz/fuzz_index.c — libFuzzer target for the format layer of
 * dataset formats v2, v3 and v4 (client/index.c, client/manifest2.c): the
 * bytes an index page or a v2-v4 manifest arrives as.  An input starting
 * with 'M' is the rest as a manifest; with 'S', the rest is JSON text that
 * gets a correct self-checksum first (so that the fuzzer reaches the
 * fields behind it: it cannot forge an xxh128); with '3', its next byte k
 * picks 2 << (k % 10) piece sums per block and the rest is a page of a v3
 * tree; with '4' the same for a v4 tree (of 16 KiB pieces); any other is
 * the rest as a page of a v2 tree.
 * Properties: every input is refused with a one-line message or accepted;
 * an accepted page encodes back to exactly its bytes (one encoding per
 * page: content addressing needs it) and, as the root of a tree whose
 * pages below are missing, every walk (lookup, update, diff, keys) ends
 * with a result or a one-line error; an accepted manifest dumps to bytes
 * that parse again and dump the same, and bm_manifest_version calls it
 * its version (2, 3 or 4), and a v4 one's piece is a power of two from 4
 * KiB to half a block, at most 1024 a block.  A v3 or v4 leaf's lookup gives the entry's piece sums
 * as the page holds them, which hash to its sum.  Through an io that marks
 * a page a whole decode accepted (as the dataset's page cache does), every
 * lookup answers as the whole decode does.  Locking: none. */
#include "config.h"

#include <string.h>

#include "../../client/index.h"
#include "fuzz.h"

/* The store: the input page alone, under its hash. */
struct one {
	char sum[BM_SUM_HEX + 1];
	const uint8_t *data;
	size_t len;
	bool checked;              /* one_set_checked marked it */
};

static int one_load(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n)
{
	struct one *o = arg;
	if (strcmp(sum, o->sum) != 0) {
		snprintf(msg, n, "index page %s is not in the store", sum);
		return BM_ENOTFOUND;
	}
	*data = o->data;
	*len = o->len;
	return 0;
}

static int one_store(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	(void)arg;
	(void)msg;
	(void)n;
	if (len > BM_IPAGE_LIMIT)
		fuzz_fail("a %zu-byte page was stored", len);
	if (bm_ipage_verify(sum, data, len, msg, n) != 0)
		fuzz_fail("a page was stored under another key than its hash");
	return 0;
}

static bool one_checked(void *arg, const void *data)
{
	(void)data;
	return ((struct one *)arg)->checked;
}

static void one_set_checked(void *arg, const void *data)
{
	(void)data;
	((struct one *)arg)->checked = true;
}

/* Lookups of blocks under page p through an io that marks the page once a
 * whole decode accepted it (a dataset's page cache): a marked page is
 * searched in place, and must answer each block as the whole decode does. */
static void checked_lookups(struct one *o, const struct bm_itree *t, const struct bm_ipage *p)
{
	struct one oc = { .data = o->data, .len = o->len };
	struct bm_index_io plain = { .load = one_load, .arg = o };
	struct bm_index_io marking = { .load = one_load, .checked = one_checked,
				       .set_checked = one_set_checked, .arg = &oc };
	unsigned span = BM_IPAGE_BITS * p->level;
	uint8_t *pa = NULL, *pb = NULL;
	size_t pl = (size_t)(p->pieces ? p->pieces : 1) * 16;
	char sa[BM_SUM_HEX + 1], sb[BM_SUM_HEX + 1], ma[512], mb[512];

	memcpy(oc.sum, o->sum, sizeof(oc.sum));
	if ((pa = calloc(1, pl)) == NULL || (pb = calloc(1, pl)) == NULL)
		fuzz_fail("out of memory");
	/* The first, middle and last entries, and the slots next to them. */
	unsigned pick[] = { 0, p->count / 2, p->count - 1 };
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof(pick) / sizeof(pick[0]); i++) {
			for (int d = -1; d <= 1; d++) {
				int slot = (int)p->slot[pick[i]] + d;
				if (slot < 0 || slot >= (int)BM_IPAGE_FANOUT)
					continue;
				uint64_t blk = (uint64_t)slot << span;
				int ra = bm_index_lookup(&plain, t, blk, sa, p->pieces ? pa : NULL, NULL, ma,
							 sizeof(ma));
				int rb = bm_index_lookup(&marking, t, blk, sb, p->pieces ? pb : NULL, NULL,
							 mb, sizeof(mb));
				if (ra != rb || strcmp(sa, sb) != 0 ||
				    (ra == 1 && p->level == 0 && memcmp(pa, pb, pl) != 0))
					fuzz_fail("block %llu: a marked page answers %d %s, a whole decode %d %s",
						  (unsigned long long)blk, rb, sb, ra, sa);
				if (rb < 0)
					fuzz_check_message("bm_index_lookup (marked)", mb);
			}
		}
		if (!oc.checked)
			break; /* refused whole: never marked, nothing searched in place */
	}
	free(pa);
	free(pb);
}

static int no_range(void *arg, uint64_t first, uint64_t count)
{
	(void)arg;
	if (count == 0)
		fuzz_fail("an empty range at %llu", (unsigned long long)first);
	return 0;
}

static int no_key(void *arg, const char *key)
{
	(void)arg;
	if (strncmp(key, "index/", 6) != 0 && strncmp(key, "blocks/", 7) != 0)
		fuzz_fail("a key outside index/ and blocks/: %s", key);
	return 0;
}

static void walks(const uint8_t *data, size_t len, const struct bm_ipage *p, size_t piece)
{
	struct one o = { .data = data, .len = len };
	struct bm_index_io io = { .load = one_load, .store = one_store, .arg = &o };
	uint64_t nblk = (uint64_t)1 << (BM_IPAGE_BITS * (p->level + 1));
	char sum[BM_SUM_HEX + 1], root[BM_SUM_HEX + 1], msg[512];
	struct bm_index_change ch = { .blk = (uint64_t)p->slot[0] << (BM_IPAGE_BITS * p->level) };
	uint8_t *psum = NULL, *newpsum = NULL;
	int rc;

	bm_sum_hex(data, len, o.sum);
	const struct bm_itree t = { o.sum, nblk, p->pieces, p->format };
	if (p->pieces) {
		psum = malloc((size_t)p->pieces * 16);
		newpsum = malloc((size_t)p->pieces * 16);
		if (psum == NULL || newpsum == NULL)
			fuzz_fail("out of memory");
		/* The change's block: one piece of the page's bytes. */
		bm_pieces_sum(data, len < piece ? len : piece, piece, p->pieces, newpsum, ch.sum);
		ch.psum = newpsum;
	}
	rc = bm_index_lookup(&io, &t, ch.blk, sum, psum, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_lookup", msg);
	else if (p->level == 0 && rc != 1)
		fuzz_fail("a leaf's first entry reads as a hole (%d)", rc);
	if (rc == 1 && p->level == 0 && p->pieces) {
		if (memcmp(psum, p->psum, (size_t)p->pieces * 16) != 0)
			fuzz_fail("a lookup gave other piece sums than the leaf holds");
		size_t np = 0;
		static const uint8_t zero[16];
		while (np < p->pieces && memcmp(psum + np * 16, zero, 16) != 0)
			np++;
		if (bm_pieces_check(sum, psum, p->pieces, piece, np * piece, msg, sizeof(msg)) != 0)
			fuzz_fail("an accepted leaf's piece sums fail their check: %s", msg);
	}
	checked_lookups(&o, &t, p);
	if (!p->pieces)
		memcpy(ch.sum, o.sum, sizeof(ch.sum));
	rc = bm_index_update(&io, &t, &ch, 1, nblk, root, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_update", msg);
	const struct bm_itree none = { "", nblk, p->pieces, p->format };
	rc = bm_index_diff(&io, &none, &t, no_range, NULL, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_diff", msg);
	rc = bm_index_keys(&io, &t, no_key, NULL, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_keys", msg);
	free(psum);
	free(newpsum);
}

/* data as a page of a tree of pieces piece sums per block of format
 * format (0: 2 or 3, as pieces says), pieces of piece bytes. */
static void page(const uint8_t *data, size_t size, unsigned pieces, unsigned format, size_t piece)
{
	struct bm_ipage *p = bm_ipage_new();
	uint8_t *again = malloc(size + 1);
	char msg[512] = "";

	if (p == NULL || again == NULL)
		fuzz_fail("out of memory");
	int rc = bm_ipage_decode(data, size, NULL, -1, 0, 0, pieces, format, p, msg, sizeof(msg));
	if (rc < 0) {
		if (rc != BM_ENOMEM)
			fuzz_check_message("bm_ipage_decode", msg);
	} else {
		if (bm_ipage_len(p->level, p->count, pieces) != size)
			fuzz_fail("a page of %zu bytes decodes to %u entries", size, p->count);
		size_t len = bm_ipage_encode(p, again);
		if (len != size || memcmp(again, data, size) != 0)
			fuzz_fail("a page that decodes encodes to other bytes (%zu, %zu)", size, len);
		walks(data, size, p, piece);
	}
	free(again);
	bm_ipage_free(p);
}

static void manifest(const uint8_t *data, size_t size, bool sealed)
{
	struct bm_manifest2 *m = NULL, *again = NULL;
	char msg[512] = "";
	size_t len1 = 0, len2 = 0;

	int ver = bm_manifest_version((const char *)data, size, msg, sizeof(msg));
	if (ver < 0)
		fuzz_check_message("bm_manifest_version", msg);
	int rc = bm_manifest2_parse((const char *)data, size, &m, msg, sizeof(msg));
	if (rc == 0 && ver != (int)m->version)
		fuzz_fail("a manifest that parses as version %u is said to be %d", m->version, ver);
	if (rc == 0 && m->version == 3 && m->blksize <= BM_PIECE_SIZE)
		fuzz_fail("a version 3 manifest of %zu-byte blocks was accepted", m->blksize);
	if (rc == 0 && (m->version == 4) !=
			       (m->piece >= BM_PIECE_MIN && m->piece < m->blksize &&
				(m->piece & (m->piece - 1)) == 0 && m->blksize / m->piece <= BM_PIECES_MAX))
		fuzz_fail("a version %u manifest of %zu-byte blocks with pieces of %zu was accepted",
			  m->version, m->blksize, m->piece);
	if (rc < 0) {
		if (m != NULL)
			fuzz_fail("a refused manifest (%d) was returned", rc);
		if (rc != BM_ENOMEM)
			fuzz_check_message("bm_manifest2_parse", msg);
		if (sealed && rc == BM_ECHECKSUM)
			fuzz_fail("a correctly sealed manifest fails its checksum: %s", msg);
		return;
	}
	char *d1 = bm_manifest2_dump(m, &len1);
	if (d1 == NULL)
		fuzz_fail("bm_manifest2_dump failed on a manifest that parsed");
	if (bm_manifest2_parse(d1, len1, &again, msg, sizeof(msg)) < 0)
		fuzz_fail("a parsed manifest dumps to bytes that are refused (%s):\n%s", msg, d1);
	if (again->version != m->version)
		fuzz_fail("version %u dumps to version %u", m->version, again->version);
	char *d2 = bm_manifest2_dump(again, &len2);
	if (d2 == NULL || len1 != len2 || memcmp(d1, d2, len1) != 0)
		fuzz_fail("dump, parse, dump gives other bytes:\n%s\n%s", d1, d2 ? d2 : "(null)");
	free(d1);
	free(d2);
	bm_manifest2_free(again);
	bm_manifest2_free(m);
}

/* body (JSON text ending in '}') with the self-checksum field added as a
 * writer adds it (docs/FORMAT.md), then parsed. */
static void sealed_manifest(const uint8_t *body, size_t size)
{
	static const char field[] = ",\"manifest_sum\":\"";
	size_t flen = sizeof(field) - 1;

	if (size == 0 || body[size - 1] != '}' || size > BM_MANIFEST2_MAX)
		return;
	char *buf = malloc(size - 1 + flen + BM_SUM_HEX + 3);
	if (buf == NULL)
		fuzz_fail("out of memory");
	memcpy(buf, body, size - 1);
	memcpy(buf + size - 1, field, flen);
	size_t plen = size - 1 + flen;
	bm_sum_hex(buf, plen, buf + plen);
	memcpy(buf + plen + BM_SUM_HEX, "\"}", 2);
	manifest((const uint8_t *)buf, plen + BM_SUM_HEX + 2, plen + BM_SUM_HEX + 2 <= BM_MANIFEST2_MAX);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] == 'M')
		manifest(data + 1, size - 1, false);
	else if (data[0] == 'S')
		sealed_manifest(data + 1, size - 1);
	else if (data[0] == '3' && size >= 2)
		page(data + 2, size - 2, 2u << (data[1] % 10), 0, BM_PIECE_SIZE);
	else if (data[0] == '4' && size >= 2)
		page(data + 2, size - 2, 2u << (data[1] % 10), 4, (size_t)16 << 10);
	else
		page(data + 1, size - 1, 0, 0, 0);
	return 0;
}
