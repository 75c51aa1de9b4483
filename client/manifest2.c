/* manifest2.c — the manifest of dataset formats v2, v3 and v4
 * (docs/FORMAT.md, "Version 2", "Version 3", "Version 4": the same fields,
 * v3 for blocks larger than 64 KiB whose tree holds piece sums, v4 the
 * same with a "piece" size of its own): a small JSON object naming the root
 * index page, whose last field is a checksum of every byte before it.  Parsing and validating
 * untrusted bytes (self-checksum first), serializing.  The format layer:
 * no I/O.
 * Owns: struct bm_manifest2.  Locking: none; a manifest is immutable once
 * built.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "index.h"

/* The document ends with SUM_FIELD, 32 hex digits, then SUM_END. */
#define SUM_FIELD ",\"manifest_sum\":\""
#define SUM_FIELD_LEN (sizeof(SUM_FIELD) - 1)
#define SUM_END "\"}"
#define SUM_TAIL (SUM_FIELD_LEN + BM_SUM_HEX + 2)

void bm_manifest2_free(struct bm_manifest2 *m)
{
	if (m == NULL)
		return;
	free(m->attrs);
	free(m);
}

uint64_t bm_manifest2_nblk(const struct bm_manifest2 *m)
{
	return (m->size + m->blksize - 1) / m->blksize;
}

static bool is_hex32(const char *s, size_t len)
{
	if (len != BM_SUM_HEX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Checks the self-checksum of buf: 0 or BM_ECHECKSUM. */
static int check_self_sum(const char *buf, size_t len, char *msg, size_t n)
{
	char got[BM_SUM_HEX + 1];
	const char *hex;

	if (len < SUM_TAIL || memcmp(buf + len - SUM_TAIL, SUM_FIELD, SUM_FIELD_LEN) != 0 ||
	    memcmp(buf + len - 2, SUM_END, 2) != 0) {
		bm_fmt(msg, n, "manifest does not end with its \"manifest_sum\" field (damaged, or not version 2)");
		return BM_ECHECKSUM;
	}
	hex = buf + len - BM_SUM_HEX - 2;
	if (!is_hex32(hex, BM_SUM_HEX)) {
		bm_fmt(msg, n, "manifest's \"manifest_sum\" is not 32 lowercase hex digits");
		return BM_ECHECKSUM;
	}
	bm_sum_hex(buf, len - BM_SUM_HEX - 2, got);
	if (memcmp(got, hex, BM_SUM_HEX) != 0) {
		bm_fmt(msg, n, "manifest bytes hash to %s, not to their \"manifest_sum\" %.32s", got, hex);
		return BM_ECHECKSUM;
	}
	return 0;
}

/* True when buf ends the way a self-checksummed manifest does, whatever
 * its digits. */
static bool has_sum_tail(const char *buf, size_t len)
{
	return len >= SUM_TAIL && memcmp(buf + len - SUM_TAIL, SUM_FIELD, SUM_FIELD_LEN) == 0 &&
	       memcmp(buf + len - 2, SUM_END, 2) == 0;
}

/* The "version" of JSON text: >= 0, or -1 when it is not JSON, -2 when it
 * has no integer "version". */
static json_int_t version_of(const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	json_int_t v;

	if (root == NULL)
		return -1;
	json_t *x = json_object_get(root, "version");
	v = json_is_integer(x) && json_integer_value(x) >= 0 ? json_integer_value(x) : -2;
	json_decref(root);
	return v;
}

int bm_manifest_version(const char *buf, size_t len, char *msg, size_t n)
{
	json_int_t v;

	if (len > BM_MANIFEST_MAX) {
		bm_fmt(msg, n, "manifest is %zu bytes, above the %zu accepted", len, BM_MANIFEST_MAX);
		return BM_EFORMAT;
	}
	if (len <= BM_MANIFEST2_MAX && check_self_sum(buf, len, msg, n) == 0) {
		v = version_of(buf, len);
		if (v >= 2 && v <= 4)
			return (int)v;
		if (v == -1) {
			bm_fmt(msg, n, "manifest is not valid JSON (its self-checksum holds)");
			return BM_EFORMAT;
		}
		bm_fmt(msg, n,
		       "a manifest with a self-checksum has format version %lld, not 2, 3 or 4 (this "
		       "reader knows 1 to 4)",
		       (long long)v);
		return BM_EFORMAT;
	}
	if (has_sum_tail(buf, len)) {
		bm_fmt(msg, n, "manifest bytes do not match their \"manifest_sum\" (damaged in transit)");
		return BM_ECHECKSUM;
	}
	v = version_of(buf, len);
	if (v == 1)
		return 1;
	if (v == -1) {
		bm_fmt(msg, n, "manifest is not valid JSON (damaged in transit)");
		return BM_ECHECKSUM;
	}
	if (v >= 2 && v <= 4) {
		bm_fmt(msg, n, "manifest is version %lld without a valid \"manifest_sum\" (damaged in transit)",
		       (long long)v);
		return BM_ECHECKSUM;
	}
	if (v == -2) {
		bm_fmt(msg, n, "manifest has no integer field \"version\"");
		return BM_EFORMAT;
	}
	bm_fmt(msg, n, "format version %lld is not supported (this reader knows 1 to 4)",
	       (long long)v);
	return BM_EFORMAT;
}

static int parse_fields(json_t *root, struct bm_manifest2 *m, char *msg, size_t n)
{
	struct bm_manifest_head h = { 0 };
	json_t *v = json_object_get(root, "version");
	int rc;

	/* 2, 3 or 4: the head's check of the version names the one found. */
	m->version = json_is_integer(v) && (json_integer_value(v) == 3 || json_integer_value(v) == 4)
			     ? (unsigned)json_integer_value(v)
			     : 2;
	rc = bm_manifest_head_parse(root, m->version, &h, msg, n);
	BM_MANIFEST_HEAD_TAKE(m, &h);
	if (rc < 0)
		return rc;
	/* Version 4's pieces: a power of two from 4 KiB to half a block, at
	 * most BM_PIECES_MAX a block.  No other version has the field. */
	v = json_object_get(root, "piece");
	if (m->version != 4 && v != NULL) {
		bm_fmt(msg, n, "a version %u manifest has a field \"piece\" (only version 4 has one)",
		       m->version);
		return BM_EFORMAT;
	}
	if (m->version == 4) {
		uint64_t pc;
		if (v == NULL) {
			bm_fmt(msg, n, "a version 4 manifest has no field \"piece\"");
			return BM_EFORMAT;
		}
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			bm_fmt(msg, n, "a version 4 manifest's \"piece\" is not a number of bytes");
			return BM_EFORMAT;
		}
		pc = (uint64_t)json_integer_value(v);
		if (pc < BM_PIECE_MIN || pc >= m->blksize || (pc & (pc - 1)) != 0) {
			bm_fmt(msg, n,
			       "a version 4 manifest's piece %" PRIu64 " is not a power of two from %zu "
			       "to blksize/2 (%zu)",
			       pc, BM_PIECE_MIN, m->blksize / 2);
			return BM_EFORMAT;
		}
		if (m->blksize / pc > BM_PIECES_MAX) {
			bm_fmt(msg, n,
			       "a version 4 manifest's piece %" PRIu64 " makes %zu pieces of a block of "
			       "%zu bytes, more than %d",
			       pc, (size_t)(m->blksize / pc), m->blksize, BM_PIECES_MAX);
			return BM_EFORMAT;
		}
		m->piece = (size_t)pc;
	}
	if (m->version == 3 && m->blksize <= BM_PIECE_SIZE) {
		bm_fmt(msg, n,
		       "format version 3 with \"blksize\" = %zu: version 3 is for blocks larger than "
		       "its 64 KiB pieces",
		       m->blksize);
		return BM_EFORMAT;
	}
	if ((rc = bm_json_uint(root, "parent", 0, m->generation - 1, &m->parent, msg, n)) < 0)
		return rc;
	v = json_object_get(root, "root");
	if (json_is_null(v)) {
		m->root[0] = '\0';
	} else if (json_is_string(v) && is_hex32(json_string_value(v), json_string_length(v))) {
		memcpy(m->root, json_string_value(v), BM_SUM_HEX + 1);
		if (m->size == 0) {
			bm_fmt(msg, n, "field \"root\" names an index page for a dataset of size 0");
			return BM_EFORMAT;
		}
	} else {
		bm_fmt(msg, n, "field \"root\" is missing, or neither null nor 32 lowercase hex digits");
		return BM_EFORMAT;
	}
	m->stored = UINT64_MAX;
	if (json_object_get(root, "stored") != NULL) {
		uint64_t nblk = bm_manifest2_nblk(m);
		if ((rc = bm_json_uint(root, "stored", 0, m->root[0] ? nblk : 0, &m->stored,
					msg, n)) < 0)
			return rc;
	}
	return 0;
}

int bm_manifest2_parse(const char *buf, size_t len, struct bm_manifest2 **mp, char *msg, size_t n)
{
	struct bm_manifest2 *m;
	json_error_t jerr;
	json_t *root;
	int rc;

	*mp = NULL;
	if (len > BM_MANIFEST2_MAX) {
		bm_fmt(msg, n, "manifest is %zu bytes, above the %zu a version 2 manifest may have", len,
		       BM_MANIFEST2_MAX);
		return BM_EFORMAT;
	}
	if ((rc = check_self_sum(buf, len, msg, n)) < 0)
		return rc;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		bm_fmt(msg, n, "manifest is not valid JSON: %s at line %d column %d", jerr.text,
		       jerr.line, jerr.column);
		return BM_EFORMAT;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		json_decref(root);
		return BM_ENOMEM;
	}
	rc = parse_fields(root, m, msg, n);
	json_decref(root);
	if (rc < 0) {
		bm_manifest2_free(m);
		return rc;
	}
	*mp = m;
	return 0;
}

char *bm_manifest2_dump(const struct bm_manifest2 *m, size_t *lenp)
{
	json_t *root = json_object();
	char *text = NULL, *out = NULL;

	if (root == NULL)
		return NULL;
	json_object_set_new(root, "format", json_string("blkmap-dataset"));
	json_object_set_new(root, "version", json_integer(m->version >= 3 && m->version <= 4
								  ? (json_int_t)m->version
								  : 2));
	json_object_set_new(root, "checksum", json_string("xxh128"));
	json_object_set_new(root, "blksize", json_integer((json_int_t)m->blksize));
	if (m->version == 4)
		json_object_set_new(root, "piece", json_integer((json_int_t)m->piece));
	json_object_set_new(root, "size", json_integer((json_int_t)m->size));
	json_object_set_new(root, "generation", json_integer((json_int_t)m->generation));
	json_object_set_new(root, "parent", json_integer((json_int_t)m->parent));
	if (m->created[0])
		json_object_set_new(root, "created", json_string(m->created));
	json_object_set_new(root, "root", m->root[0] ? json_string(m->root) : json_null());
	if (m->stored != UINT64_MAX)
		json_object_set_new(root, "stored", json_integer((json_int_t)m->stored));
	if (m->attrs) {
		json_t *a = json_loads(m->attrs, 0, NULL);
		if (!json_is_object(a)) {
			json_decref(a);
			goto done;
		}
		json_object_set_new(root, "attrs", a);
	}
	text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text == NULL)
		goto done;
	/* text is "{...}": drop its "}", add the checksum field over all of
	 * it, close. */
	size_t tlen = strlen(text);
	if (tlen < 2 || text[tlen - 1] != '}')
		goto done;
	out = malloc(tlen - 1 + SUM_TAIL + 1);
	if (out == NULL)
		goto done;
	memcpy(out, text, tlen - 1);
	memcpy(out + tlen - 1, SUM_FIELD, SUM_FIELD_LEN);
	size_t plen = tlen - 1 + SUM_FIELD_LEN;
	char hex[BM_SUM_HEX + 1];
	bm_sum_hex(out, plen, hex);
	memcpy(out + plen, hex, BM_SUM_HEX);
	memcpy(out + plen + BM_SUM_HEX, SUM_END, 3); /* with the NUL */
	if (lenp)
		*lenp = plen + BM_SUM_HEX + 2;
done:
	free(text);
	json_decref(root);
	return out;
}

/* ---- either version -------------------------------------------------------- */

int bm_manifest_parse_any(const char *buf, size_t len, struct bm_manifest **mp, char *msg, size_t n)
{
	struct bm_manifest2 *m2 = NULL;
	char msg2[300], msg1[300];
	int rc2, rc1, v;

	*mp = NULL;
	rc2 = bm_manifest2_parse(buf, len, &m2, msg2, sizeof(msg2));
	if (rc2 == 0) {
		struct bm_manifest *m = calloc(1, sizeof(*m));
		if (m == NULL) {
			bm_manifest2_free(m2);
			return BM_ENOMEM;
		}
		m->version = m2->version;
		m->blksize = m2->blksize;
		m->piece = m2->piece;
		m->size = m2->size;
		m->generation = m2->generation;
		m->parent = m2->parent;
		memcpy(m->created, m2->created, sizeof(m->created));
		memcpy(m->root, m2->root, sizeof(m->root));
		m->stored = m2->stored;
		m->attrs = m2->attrs; /* moved */
		m2->attrs = NULL;
		bm_manifest2_free(m2);
		*mp = m;
		return 0;
	}
	if (rc2 == BM_ENOMEM)
		return rc2;
	rc1 = bm_manifest_parse(buf, len, mp, msg1, sizeof(msg1));
	if (rc1 == 0 || rc1 == BM_ENOMEM)
		return rc1;
	v = bm_manifest_version(buf, len, msg, n);
	if (v >= 2 && v <= 4)
		bm_fmt(msg, n, "%s", msg2);
	else if (v == 1)
		bm_fmt(msg, n, "%s", msg1);
	if (v >= 1 && v <= 4)
		return v == 1 ? rc1 : rc2;
	/* Neither version: the v1 parser says better what is wrong (not an
	 * object, no "format"...), except about the version itself, where
	 * bm_manifest_version names both it knows. */
	if (v == BM_EFORMAT && strncmp(msg1, "format version", 14) != 0)
		bm_fmt(msg, n, "%s", msg1);
	return v;
}

char *bm_manifest_dump_any(const struct bm_manifest *m, size_t *lenp)
{
	if (m->version < 2)
		return bm_manifest_dump(m, lenp);
	struct bm_manifest2 m2 = {
		.version = m->version,
		.blksize = m->blksize,
		.piece = m->version == 4 ? m->piece : 0,
		.size = m->size,
		.generation = m->generation,
		.parent = m->parent,
		.stored = m->stored,
		.attrs = m->attrs,
	};
	memcpy(m2.created, m->created, sizeof(m2.created));
	memcpy(m2.root, m->root, sizeof(m2.root));
	return bm_manifest2_dump(&m2, lenp);
}

size_t bm_manifest_piece(const struct bm_manifest *m)
{
	return m->version == 3 ? BM_PIECE_SIZE : m->version == 4 ? m->piece : 0;
}

unsigned bm_manifest_pieces(const struct bm_manifest *m)
{
	size_t piece = bm_manifest_piece(m);
	return piece ? (unsigned)(m->blksize / piece) : 0;
}

void bm_manifest_itree(const struct bm_manifest *m, struct bm_itree *t)
{
	t->root = m->root;
	t->nblk = bm_manifest_nblk(m);
	t->pieces = bm_manifest_pieces(m);
	t->format = m->version == 4 ? 4 : 0;
}
