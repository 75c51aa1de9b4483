/* test_manifest.c — the manifest parser (client/manifest.c) against
 * untrusted input: a valid manifest survives dump and parse unchanged, and
 * every mutation of one (fields set to hostile values, bytes flipped,
 * spans cut or repeated) either parses to a manifest that keeps every
 * invariant the rest of libblkmap relies on, or is refused with
 * BM_EFORMAT and a one-line message.  The user attributes ("attrs") too:
 * only an object of at most BM_ATTRS_MAX bytes compact is taken, kept
 * compact and in order.  Deterministic (fixed seeds); run
 * under ASan+UBSan by `./quickstart sanitize` too.
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
#include <jansson.h>

#include "../client/internal.h"

#define NBLK 12
#define ROUNDS 6000

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

/* A valid manifest: 1 MiB blocks, a short last block, holes between. */
static char *base_json(size_t *lenp)
{
	struct bm_manifest m = { .blksize = (size_t)1 << 20, .generation = 7 };
	struct bm_block blocks[NBLK];
	size_t n = 0;

	m.size = (uint64_t)NBLK * m.blksize - 12345;
	snprintf(m.created, sizeof(m.created), "2026-11-26T12:00:00Z");
	m.attrs = "{\"dtype\":\"<f8\",\"shape\":[3,4],\"units\":{\"t\":\"K\"}}";
	for (uint64_t i = 0; i < NBLK; i++) {
		if (i % 3 == 1)
			continue; /* a hole */
		blocks[n].index = i;
		blocks[n].key = i % 2 ? "blocks/0123456789abcdef0123456789abcdef" : "b/x_y-z.1";
		snprintf(blocks[n].sum, sizeof(blocks[n].sum), "%016" PRIx64 "%016" PRIx64, i * 977,
			 (uint64_t)(~i & 0xffffffffffffull));
		n++;
	}
	m.blocks = blocks;
	m.nblocks = n;
	return bm_manifest_dump(&m, lenp);
}

static bool is_hex32(const char *s)
{
	if (strlen(s) != BM_SUM_HEX)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return false;
	return true;
}

/* What the rest of libblkmap assumes of a parsed manifest.  Returns a
 * description of the first broken invariant, or NULL. */
static const char *broken_invariant(const struct bm_manifest *m)
{
	if (m->blksize < 4096 || m->blksize > VM_BLKSIZE_MAX || (m->blksize & (m->blksize - 1)))
		return "blksize not a power of two in [4 KiB, 64 MiB]";
	if (m->size > BM_SIZE_MAX)
		return "size above BM_SIZE_MAX";
	if (m->attrs) {
		json_t *a = json_loads(m->attrs, JSON_REJECT_DUPLICATES, NULL);
		bool ok = json_is_object(a) && json_object_size(a) > 0 && strlen(m->attrs) <= BM_ATTRS_MAX;
		char *compact = ok ? json_dumps(a, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		ok = ok && compact && strcmp(compact, m->attrs) == 0;
		free(compact);
		json_decref(a);
		if (!ok)
			return "attrs not a compact non-empty object of at most BM_ATTRS_MAX bytes";
	}
	if (m->generation < 1 || m->generation > BM_GEN_MAX)
		return "generation out of range";
	uint64_t nblk = bm_manifest_nblk(m);
	if (nblk != (m->size + m->blksize - 1) / m->blksize)
		return "block count not ceil(size / blksize)";
	if (m->nblocks > nblk)
		return "more blocks listed than the dataset has";
	for (size_t i = 0; i < m->nblocks; i++) {
		const struct bm_block *b = &m->blocks[i];
		if (b->index >= nblk)
			return "block index beyond the end";
		if (i > 0 && b->index <= m->blocks[i - 1].index)
			return "block indexes not strictly ascending";
		if (b->key == NULL || !bm_key_valid(b->key))
			return "unsafe or missing key";
		if (!is_hex32(b->sum))
			return "sum not 32 lowercase hex digits";
		size_t len = bm_manifest_objlen(m, b->index);
		if (len == 0 || len > m->blksize)
			return "object length not in [1, blksize]";
		if (bm_manifest_find(m, b->index) != b)
			return "listed block not found by index";
	}
	return NULL;
}

/* Parses json; fails the test unless it is refused cleanly or parses to a
 * manifest that keeps the invariants and round-trips.  Returns rc. */
static int check_one(const char *json, size_t len, const char *what)
{
	struct bm_manifest *m = NULL;
	char msg[512] = "";
	int rc = bm_manifest_parse(json, len, &m, msg, sizeof(msg));

	if (rc == BM_EFORMAT) {
		if (m != NULL || msg[0] == '\0' || strchr(msg, '\n'))
			fail_msg("%s: refused without a one-line message (\"%s\")", what, msg);
		return rc;
	}
	if (rc != 0)
		fail_msg("%s: rc %d (%s), expected 0 or BM_EFORMAT", what, rc, msg);
	const char *bad = broken_invariant(m);
	if (bad)
		fail_msg("%s: accepted a manifest with %s: %.*s", what, bad, (int)(len < 300 ? len : 300), json);
	/* What was accepted is what is written back. */
	size_t dlen;
	char *dump = bm_manifest_dump(m, &dlen);
	struct bm_manifest *m2 = NULL;
	assert_non_null(dump);
	assert_int_equal(bm_manifest_parse(dump, dlen, &m2, msg, sizeof(msg)), 0);
	assert_int_equal(m2->blksize, m->blksize);
	assert_int_equal(m2->size, m->size);
	assert_int_equal(m2->generation, m->generation);
	assert_int_equal(m2->nblocks, m->nblocks);
	if (m->attrs == NULL)
		assert_null(m2->attrs);
	else
		assert_string_equal(m2->attrs, m->attrs);
	for (size_t i = 0; i < m->nblocks; i++) {
		assert_int_equal(m2->blocks[i].index, m->blocks[i].index);
		assert_string_equal(m2->blocks[i].key, m->blocks[i].key);
		assert_string_equal(m2->blocks[i].sum, m->blocks[i].sum);
	}
	bm_manifest_free(m2);
	free(dump);
	bm_manifest_free(m);
	return 0;
}

static void a_valid_manifest_round_trips_through_dump_and_parse(void **unused)
{
	size_t len;
	char *json = base_json(&len);
	struct bm_manifest *m;
	char msg[256];

	(void)unused;
	assert_int_equal(bm_manifest_parse(json, len, &m, msg, sizeof(msg)), 0);
	assert_int_equal(m->blksize, 1 << 20);
	assert_int_equal(m->nblocks, NBLK - NBLK / 3);
	assert_int_equal(m->generation, 7);
	assert_null(bm_manifest_find(m, 1));
	assert_int_equal(bm_manifest_objlen(m, NBLK - 1), (1 << 20) - 12345);
	bm_manifest_free(m);
	assert_int_equal(check_one(json, len, "the base manifest"), 0);
	free(json);
}

/* Values a hostile server might put anywhere: hostile_value(k) for k in
 * [0, NHOSTILE). */
static const long long hostile_ints[] = {
	-1, 0, 1, 2, 4095, 4096, 4097, 1 << 20, (1 << 20) + 1, 1LL << 26, (1LL << 26) + 1, 1LL << 27,
	NBLK - 1, NBLK, NBLK + 1, (1LL << 50) - 1, 1LL << 50, (1LL << 50) + 1, 1LL << 53,
	(1LL << 53) + 1, INT64_MAX, INT64_MIN, 11, 12 * (1LL << 20), 12 * (1LL << 20) + 1,
};
static const char *hostile_strs[] = {
	"", "/", "/etc/passwd", "..", "../x", "a/../b", "a//b", "a/./b", ".", "a/", "blocks/ok",
	"a b", "a%2fb", "a?b", "a#b", "http://evil/x", "\xc3\xa9", "0123456789abcdef0123456789abcdef",
	"0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde", "blkmap-dataset",
	"xxh128", "sha256",
};
#define NINTS (sizeof(hostile_ints) / sizeof(hostile_ints[0]))
#define NSTRS (sizeof(hostile_strs) / sizeof(hostile_strs[0]))
#define NHOSTILE (NINTS + NSTRS + 8)

static json_t *hostile_value(size_t k)
{
	if (k < NINTS)
		return json_integer(hostile_ints[k]);
	k -= NINTS;
	if (k < NSTRS)
		return json_string(hostile_strs[k]);
	k -= NSTRS;
	switch (k) {
	case 0: return json_null();
	case 1: return json_true();
	case 2: return json_real(1.5);
	case 3: return json_real(1e300);
	case 4: return json_array();
	case 5: return json_object();
	case 6: return json_pack("[i]", 4096);
	default: {
		/* A long key of safe characters (above BM_KEY_MAX). */
		size_t n = BM_KEY_MAX + 8;
		char *str = malloc(n + 1);
		for (size_t i = 0; i < n; i++)
			str[i] = (i % 7 == 6) ? '/' : 'a' + (char)(i % 26);
		str[n] = '\0';
		json_t *v = json_string(str);
		free(str);
		return v;
	}
	}
}

static const char *root_fields[] = { "format", "version", "blksize", "size", "generation",
				     "checksum", "created", "blocks", "attrs" };
#define NROOT (sizeof(root_fields) / sizeof(root_fields[0]))
static const char *block_fields[] = { "index", "key", "sum" };

/* One structural change to a parsed manifest: a field set to a hostile
 * value or removed, a block entry changed, removed, duplicated or moved. */
static void mutate_tree(json_t *root)
{
	json_t *blocks = json_object_get(root, "blocks");
	size_t nb = json_is_array(blocks) ? json_array_size(blocks) : 0;

	switch (rnd_below(6)) {
	case 0: /* a root field */
		json_object_set_new(root, root_fields[rnd_below(NROOT)], hostile_value(rnd_below(NHOSTILE)));
		break;
	case 1:
		json_object_del(root, root_fields[rnd_below(NROOT)]);
		break;
	case 2: case 3: /* a block's field */
		if (nb) {
			json_t *b = json_array_get(blocks, rnd_below(nb));
			if (json_is_object(b)) {
				if (rnd_below(5) == 0)
					json_object_del(b, block_fields[rnd_below(3)]);
				else
					json_object_set_new(b, block_fields[rnd_below(3)], hostile_value(rnd_below(NHOSTILE)));
			}
		}
		break;
	case 4: /* a block entry duplicated, or replaced by any value */
		if (nb) {
			size_t i = rnd_below(nb);
			if (rnd_below(2))
				json_array_insert(blocks, i, json_array_get(blocks, rnd_below(nb)));
			else
				json_array_set_new(blocks, i, hostile_value(rnd_below(NHOSTILE)));
		}
		break;
	default: /* block entries removed or swapped (order) */
		if (nb >= 2) {
			size_t i = rnd_below(nb), j = rnd_below(nb);
			if (rnd_below(2)) {
				json_array_remove(blocks, i);
			} else if (i != j) {
				json_t *a = json_incref(json_array_get(blocks, i));
				json_t *b = json_incref(json_array_get(blocks, j));
				json_array_set_new(blocks, i, b);
				json_array_set_new(blocks, j, a);
			}
		}
		break;
	}
}

static void hostile_field_values_parse_to_valid_manifests_or_are_refused(void **unused)
{
	size_t len, accepted = 0;
	char *json = base_json(&len);
	json_t *base = json_loadb(json, len, 0, NULL);

	(void)unused;
	assert_non_null(base);
	/* Every hostile value in every field, one at a time. */
	for (size_t f = 0; f < sizeof(root_fields) / sizeof(root_fields[0]) + 3; f++) {
		for (size_t k = 0; k < NHOSTILE; k++) {
			json_t *t = json_deep_copy(base);
			if (f < sizeof(root_fields) / sizeof(root_fields[0]))
				json_object_set_new(t, root_fields[f], hostile_value(k));
			else
				json_object_set_new(json_array_get(json_object_get(t, "blocks"), 1),
						    block_fields[f - sizeof(root_fields) / sizeof(root_fields[0])],
						    hostile_value(k));
			char *s = json_dumps(t, JSON_COMPACT), what[64];
			assert_non_null(s);
			snprintf(what, sizeof(what), "field %zu value %zu", f, k);
			check_one(s, strlen(s), what);
			free(s);
			json_decref(t);
		}
	}
	/* Then random combinations of structural changes. */
	rng_state = 0x9e3779b97f4a7c15ull;
	for (int r = 0; r < ROUNDS; r++) {
		json_t *t = json_deep_copy(base);
		int nmut = 1 + (int)rnd_below(3);
		for (int k = 0; k < nmut; k++)
			mutate_tree(t);
		char *s = json_dumps(t, JSON_COMPACT);
		char what[64];
		assert_non_null(s);
		snprintf(what, sizeof(what), "structural mutation %d", r);
		accepted += check_one(s, strlen(s), what) == 0;
		free(s);
		json_decref(t);
	}
	/* Some mutations are harmless (a hole made, "created" changed): the
	 * checks above ran on accepted manifests too. */
	assert_true(accepted > 0);
	assert_true(accepted < ROUNDS / 2);
	json_decref(base);
	free(json);
}

static void damaged_bytes_parse_to_valid_manifests_or_are_refused(void **unused)
{
	size_t len;
	char *json = base_json(&len);
	char *buf = malloc(2 * len + 64);
	static const char pick[] = "{}[]\",:0123456789-eE.\\ \x00\xff\x80\xc3nulltrue";

	(void)unused;
	rng_state = 0xdeadbeefcafef00dull;
	for (int r = 0; r < ROUNDS; r++) {
		size_t n = len;
		memcpy(buf, json, len);
		int nmut = 1 + (int)rnd_below(4);
		for (int k = 0; k < nmut && n > 0; k++) {
			size_t at = rnd_below(n), span = 1 + rnd_below(16);
			if (span > n - at)
				span = n - at;
			switch (rnd_below(4)) {
			case 0: /* a byte changed */
				buf[at] = pick[rnd_below(sizeof(pick) - 1)];
				break;
			case 1: /* a span cut out */
				memmove(buf + at, buf + at + span, n - at - span);
				n -= span;
				break;
			case 2: /* a span repeated */
				if (n + span <= 2 * len) {
					memmove(buf + at + span, buf + at, n - at);
					n += span;
				}
				break;
			default: /* truncated */
				n = at;
				break;
			}
		}
		char what[64];
		snprintf(what, sizeof(what), "byte mutation %d", r);
		check_one(buf, n, what);
	}
	/* Embedded NUL and nothing at all. */
	assert_int_equal(check_one("{\"format\":\"blkmap\0-dataset\"}", 28, "embedded NUL"), BM_EFORMAT);
	assert_int_equal(check_one("", 0, "empty"), BM_EFORMAT);
	free(buf);
	free(json);
}

/* Puts text (JSON, or not) as the "attrs" of the base manifest, by bytes:
 * what a hostile server could send. */
static char *with_attrs(const char *text)
{
	size_t len;
	char *json = base_json(&len);
	char *at = strstr(json, "\"attrs\":");
	assert_non_null(at);
	char *end = strstr(at, "},\"blocks\"");
	assert_non_null(end);
	size_t head = (size_t)(at - json) + 8, tail = strlen(end + 1);
	char *out = malloc(head + strlen(text) + tail + 1);
	memcpy(out, json, head);
	strcpy(out + head, text);
	strcat(out, end + 1);
	free(json);
	return out;
}

static void hostile_attrs_are_refused_or_kept_compact_and_whole(void **unused)
{
	static const struct {
		const char *text;
		const char *says; /* NULL: accepted */
		const char *kept; /* accepted: the attrs kept (NULL: none) */
	} cases[] = {
		{ "[]", "\"attrs\") are not a JSON object", NULL },
		{ "\"{}\"", "\"attrs\") are not a JSON object", NULL },
		{ "null", "\"attrs\") are not a JSON object", NULL },
		{ "7", "\"attrs\") are not a JSON object", NULL },
		{ "{\"a\":1,\"a\":2}", "duplicate", NULL },
		{ "{\"a\":\"\\u0000\"}", "not valid JSON", NULL },
		{ "{\"\\u0000\":1}", "not valid JSON", NULL },
		{ "{\"a\":\"\xff\"}", "not valid JSON", NULL },
		{ "{\"a\":1", "not valid JSON", NULL },
		{ "{}", NULL, NULL },
		{ " { \"b\" : [ 1 , 2.5 , \"\xc3\xa9\" ] , \"a\" : { } } ", NULL,
		  "{\"b\":[1,2.5,\"\xc3\xa9\"],\"a\":{}}" },
		{ "{\"ctl\":\"\\u001b[31m\"}", NULL, "{\"ctl\":\"\\u001B[31m\"}" },
	};
	(void)unused;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *json = with_attrs(cases[i].text), msg[512] = "";
		struct bm_manifest *m = NULL;
		int rc = bm_manifest_parse(json, strlen(json), &m, msg, sizeof(msg));
		if (cases[i].says) {
			if (rc != BM_EFORMAT || !strstr(msg, cases[i].says))
				fail_msg("attrs %zu: rc %d, message \"%s\", expected \"%s\"", i, rc, msg, cases[i].says);
		} else {
			if (rc != 0)
				fail_msg("attrs %zu: rc %d (%s)", i, rc, msg);
			if (cases[i].kept)
				assert_string_equal(m->attrs, cases[i].kept);
			else
				assert_null(m->attrs);
		}
		check_one(json, strlen(json), "hostile attrs");
		bm_manifest_free(m);
		free(json);
	}

	/* Deeply nested: refused cleanly (jansson's depth limit), however
	 * deep, never a crash. */
	size_t depth = 100000;
	char *deep = malloc(2 * depth + 1);
	for (size_t i = 0; i < depth; i++) {
		deep[i] = '[';
		deep[2 * depth - 1 - i] = ']';
	}
	deep[2 * depth] = '\0';
	deep[0] = '{';
	deep[2 * depth - 1] = '}';
	char *json = with_attrs(deep);
	assert_int_equal(check_one(json, strlen(json), "deep attrs"), BM_EFORMAT);
	free(json);
	free(deep);

	/* The size limit is on the compact text: exactly BM_ATTRS_MAX bytes
	 * is taken (however much whitespace it came with); one more is not. */
	for (int over = 0; over <= 1; over++) {
		size_t pad = BM_ATTRS_MAX - strlen("{\"k\":\"\"}") + (size_t)over;
		char *text = malloc(pad + 4096);
		char *p = text + sprintf(text, "{   \"k\"  :   \"");
		memset(p, 'v', pad);
		strcpy(p + pad, "\"   }");
		json = with_attrs(text);
		struct bm_manifest *m = NULL;
		char msg[512];
		int rc = bm_manifest_parse(json, strlen(json), &m, msg, sizeof(msg));
		if (over) {
			assert_int_equal(rc, BM_EFORMAT);
			assert_non_null(strstr(msg, "above the limit of 65536"));
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(strlen(m->attrs), BM_ATTRS_MAX);
		}
		check_one(json, strlen(json), "long attrs");
		bm_manifest_free(m);
		free(json);
		free(text);
	}

	/* bm_attrs_normalize, what bm_attrs_set uses, says the same. */
	char *out = NULL, msg[256];
	assert_int_equal(bm_attrs_normalize("[1]", 3, &out, msg, sizeof(msg)), BM_EFORMAT);
	assert_null(out);
	assert_int_equal(bm_attrs_normalize("{ }", 3, &out, msg, sizeof(msg)), 0);
	assert_null(out);
	const char *spaced = "{\"z\": 1, \"a\": [ ]}";
	assert_int_equal(bm_attrs_normalize(spaced, strlen(spaced), &out, msg, sizeof(msg)), 0);
	assert_string_equal(out, "{\"z\":1,\"a\":[]}");
	free(out);
}

/* Every commit carries the attrs over; the changes do not touch them. */
static void the_next_generation_carries_the_attrs_over(void **unused)
{
	size_t len;
	char *json = base_json(&len), msg[256];
	struct bm_manifest *m, *next;
	struct bm_change ch = { .index = 0, .key = NULL };

	(void)unused;
	assert_int_equal(bm_manifest_parse(json, len, &m, msg, sizeof(msg)), 0);
	assert_int_equal(bm_manifest_apply(m, &ch, 1, m->size, &next), 0);
	assert_int_equal(next->generation, m->generation + 1);
	assert_string_equal(next->attrs, m->attrs);
	assert_true(next->attrs != m->attrs);
	bm_manifest_free(next);
	bm_manifest_free(m);
	free(json);
}

/* Changes are applied in block order; of two changes to one block the one
 * submitted later wins, whatever order they are given in; a change past
 * the new size is dropped with the blocks the size cuts. */
static void of_two_changes_to_a_block_the_later_one_wins(void **unused)
{
	size_t len;
	char *json = base_json(&len), msg[256];
	struct bm_manifest *m, *next;
	char s1[BM_SUM_HEX + 1], s2[BM_SUM_HEX + 1];

	(void)unused;
	memset(s1, '1', BM_SUM_HEX);
	memset(s2, '2', BM_SUM_HEX);
	s1[BM_SUM_HEX] = s2[BM_SUM_HEX] = '\0';
	assert_int_equal(bm_manifest_parse(json, len, &m, msg, sizeof(msg)), 0);
	assert_true(bm_manifest_nblk(m) >= 2);
	struct bm_change ch[3] = {
		{ .index = 1, .key = "blocks/later", .seq = 9 },
		{ .index = 1, .key = "blocks/earlier", .seq = 2 },
		{ .index = bm_manifest_nblk(m) + 5, .key = "blocks/past", .seq = 3 },
	};
	memcpy(ch[0].sum, s2, sizeof(s2));
	memcpy(ch[1].sum, s1, sizeof(s1));
	memcpy(ch[2].sum, s1, sizeof(s1));
	assert_int_equal(bm_manifest_apply(m, ch, 3, m->size, &next), 0);
	const struct bm_block *b = bm_manifest_find(next, 1);
	assert_non_null(b);
	assert_string_equal(b->key, "blocks/later");
	assert_string_equal(b->sum, s2);
	assert_null(bm_manifest_find(next, bm_manifest_nblk(m) + 5));
	for (size_t i = 1; i < next->nblocks; i++)
		assert_true(next->blocks[i - 1].index < next->blocks[i].index);
	bm_manifest_free(next);
	bm_manifest_free(m);
	free(json);
}

/* Attribute text far longer than any compact form within the limit is
 * refused before it is parsed. */
static void attrs_text_far_above_the_limit_is_refused_unparsed(void **unused)
{
	size_t len = (size_t)BM_ATTRS_MAX * 16 + 2;
	char *text = malloc(len + 1), *out = NULL, msg[256];

	(void)unused;
	assert_non_null(text);
	memset(text, ' ', len);
	text[0] = '{';
	text[len - 1] = '}';
	text[len] = '\0';
	assert_int_equal(bm_attrs_normalize(text, len, &out, msg, sizeof(msg)), BM_EFORMAT);
	assert_null(out);
	assert_non_null(strstr(msg, "bytes of text, above"));
	/* The same object with less white space is fine. */
	assert_int_equal(bm_attrs_normalize("{ }", 3, &out, msg, sizeof(msg)), 0);
	assert_null(out);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_valid_manifest_round_trips_through_dump_and_parse),
		cmocka_unit_test(hostile_field_values_parse_to_valid_manifests_or_are_refused),
		cmocka_unit_test(damaged_bytes_parse_to_valid_manifests_or_are_refused),
		cmocka_unit_test(hostile_attrs_are_refused_or_kept_compact_and_whole),
		cmocka_unit_test(the_next_generation_carries_the_attrs_over),
		cmocka_unit_test(of_two_changes_to_a_block_the_later_one_wins),
		cmocka_unit_test(attrs_text_far_above_the_limit_is_refused_unparsed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
