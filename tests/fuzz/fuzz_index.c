/* tests/fuzz/fuzz_index.c — libFuzzer target for the format layer of
 * dataset format v2 (client/index.c, client/manifest2.c): the bytes an
 * index page or a v2 manifest arrives as.  An input starting with 'M' is
 * the rest as a v2 manifest; with 'S', the rest is JSON text that gets a
 * correct self-checksum first (so that the fuzzer reaches the fields
 * behind it: it cannot forge an xxh128); any other is the rest as an
 * index page.
 * Properties: every input is refused with a one-line message or accepted;
 * an accepted page encodes back to exactly its bytes (one encoding per
 * page: content addressing needs it) and, as the root of a tree whose
 * pages below are missing, every walk (lookup, update, diff, keys) ends
 * with a result or a one-line error; an accepted manifest dumps to bytes
 * that parse again and dump the same, and bm_manifest_version calls it
 * version 2.  Locking: none. */
#include "config.h"

#include <string.h>

#include "../../client/index.h"
#include "fuzz.h"

/* The store: the input page alone, under its hash. */
struct one {
	char sum[BM_SUM_HEX + 1];
	const uint8_t *data;
	size_t len;
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
	if (len > BM_IPAGE_MAX)
		fuzz_fail("a %zu-byte page was stored", len);
	if (bm_ipage_verify(sum, data, len, msg, n) != 0)
		fuzz_fail("a page was stored under another key than its hash");
	return 0;
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

static void walks(const uint8_t *data, size_t len, const struct bm_ipage *p)
{
	struct one o = { .data = data, .len = len };
	struct bm_index_io io = { .load = one_load, .store = one_store, .arg = &o };
	uint64_t nblk = (uint64_t)1 << (BM_IPAGE_BITS * (p->level + 1));
	char sum[BM_SUM_HEX + 1], root[BM_SUM_HEX + 1], msg[512];
	struct bm_index_change ch = { .blk = (uint64_t)p->slot[0] << (BM_IPAGE_BITS * p->level) };
	int rc;

	bm_sum_hex(data, len, o.sum);
	rc = bm_index_lookup(&io, o.sum, nblk, ch.blk, sum, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_lookup", msg);
	else if (p->level == 0 && rc != 1)
		fuzz_fail("a leaf's first entry reads as a hole (%d)", rc);
	memcpy(ch.sum, o.sum, sizeof(ch.sum));
	rc = bm_index_update(&io, o.sum, nblk, &ch, 1, nblk, root, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_update", msg);
	rc = bm_index_diff(&io, "", nblk, o.sum, nblk, no_range, NULL, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_diff", msg);
	rc = bm_index_keys(&io, o.sum, nblk, no_key, NULL, NULL, msg, sizeof(msg));
	if (rc < 0)
		fuzz_check_message("bm_index_keys", msg);
}

static void page(const uint8_t *data, size_t size)
{
	struct bm_ipage *p = malloc(sizeof(*p));
	uint8_t *again = malloc(BM_IPAGE_MAX);
	char msg[512] = "";

	if (p == NULL || again == NULL)
		fuzz_fail("out of memory");
	int rc = bm_ipage_decode(data, size, NULL, -1, 0, 0, p, msg, sizeof(msg));
	if (rc < 0) {
		fuzz_check_message("bm_ipage_decode", msg);
	} else {
		size_t len = bm_ipage_encode(p, again);
		if (len != size || memcmp(again, data, size) != 0)
			fuzz_fail("a page that decodes encodes to other bytes (%zu, %zu)", size, len);
		walks(data, size, p);
	}
	free(again);
	free(p);
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
	if (rc == 0 && ver != 2)
		fuzz_fail("a manifest that parses as version 2 is said to be %d", ver);
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
	else
		page(data + 1, size - 1);
	return 0;
}
