/* manifest.c — the dataset manifest (docs/FORMAT.md): parsing and validating
 * untrusted JSON, serializing, block lookup, the user attributes ("attrs"),
 * and building the next generation from a set of changes.
 * Owns: struct bm_manifest.  Locking: none; a manifest is immutable once
 * built and replaced whole under ds->mu.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "internal.h"

void bm_manifest_free(struct bm_manifest *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nblocks; i++)
		free(m->blocks[i].key);
	free(m->blocks);
	free(m->attrs);
	free(m);
}

uint64_t bm_manifest_nblk(const struct bm_manifest *m)
{
	return (m->size + m->blksize - 1) / m->blksize;
}

size_t bm_manifest_objlen(const struct bm_manifest *m, uint64_t index)
{
	uint64_t off = index * m->blksize;
	if (off >= m->size)
		return 0;
	return m->size - off < m->blksize ? (size_t)(m->size - off) : m->blksize;
}

size_t bm_manifest_lower_bound(const struct bm_manifest *m, uint64_t index)
{
	size_t lo = 0, hi = m->nblocks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->blocks[mid].index < index)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const struct bm_block *bm_manifest_find(const struct bm_manifest *m, uint64_t index)
{
	size_t i = bm_manifest_lower_bound(m, index);
	return i < m->nblocks && m->blocks[i].index == index ? &m->blocks[i] : NULL;
}

bool bm_key_valid(const char *key)
{
	size_t len = strlen(key), seg = 0;

	if (len == 0 || len > BM_KEY_MAX || key[0] == '/')
		return false;
	for (size_t i = 0; i <= len; i++) {
		char ch = key[i];
		if (ch == '/' || ch == '\0') {
			/* Segment key[i-seg, i): not empty, ".", or "..". */
			if (seg == 0 || (seg == 1 && key[i - 1] == '.') ||
			    (seg == 2 && key[i - 1] == '.' && key[i - 2] == '.'))
				return false;
			seg = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return false;
		seg++;
	}
	return true;
}

static bool sum_valid(const char *s)
{
	if (strlen(s) != BM_SUM_HEX)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

int bm_json_uint(json_t *o, const char *name, uint64_t min, uint64_t max, uint64_t *out,
		    char *msg, size_t n)
{
	json_t *v = json_object_get(o, name);
	if (v == NULL) {
		bm_fmt(msg, n, "field \"%s\" is missing", name);
		return BM_EFORMAT;
	}
	if (!json_is_integer(v)) {
		bm_fmt(msg, n, "field \"%s\" is not an integer", name);
		return BM_EFORMAT;
	}
	json_int_t x = json_integer_value(v);
	if (x < 0 || (uint64_t)x < min || (uint64_t)x > max) {
		bm_fmt(msg, n, "field \"%s\" = %lld is out of range [%" PRIu64 ", %" PRIu64 "]",
		       name, (long long)x, min, max);
		return BM_EFORMAT;
	}
	*out = (uint64_t)x;
	return 0;
}

/* The user attributes v (untrusted) as a manifest keeps them: compact
 * text of a non-empty object into *out, NULL for an empty one. */
static int attrs_from_json(json_t *v, char **out, char *msg, size_t n)
{
	*out = NULL;
	if (!json_is_object(v)) {
		bm_fmt(msg, n, "user attributes (\"attrs\") are not a JSON object");
		return BM_EFORMAT;
	}
	if (json_object_size(v) == 0)
		return 0;
	char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (s == NULL)
		return BM_ENOMEM;
	size_t len = strlen(s);
	if (len > BM_ATTRS_MAX) {
		bm_fmt(msg, n, "user attributes (\"attrs\") are %zu bytes of JSON, above the limit of %d",
		       len, BM_ATTRS_MAX);
		free(s);
		return BM_EFORMAT;
	}
	*out = s;
	return 0;
}

int bm_attrs_normalize(const char *json, size_t len, char **out, char *msg, size_t n)
{
	json_error_t jerr;

	*out = NULL;
	/* A longer text can still be short compact; far longer is refused
	 * before it is parsed. */
	if (len > (size_t)BM_ATTRS_MAX * 16) {
		bm_fmt(msg, n, "user attributes are %zu bytes of text, above %d", len, BM_ATTRS_MAX * 16);
		return BM_EFORMAT;
	}
	json_t *v = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (v == NULL) {
		bm_fmt(msg, n, "user attributes are not valid JSON: %s at line %d column %d", jerr.text,
		       jerr.line, jerr.column);
		return BM_EFORMAT;
	}
	int rc = attrs_from_json(v, out, msg, n);
	json_decref(v);
	return rc;
}

int bm_manifest_head_parse(json_t *root, unsigned version, struct bm_manifest_head *h, char *msg,
			   size_t n)
{
	json_t *v;
	uint64_t x;
	int rc;

	if (!json_is_object(root)) {
		bm_fmt(msg, n, "manifest is not a JSON object");
		return BM_EFORMAT;
	}
	v = json_object_get(root, "format");
	if (!json_is_string(v) || strcmp(json_string_value(v), "blkmap-dataset") != 0) {
		bm_fmt(msg, n, "field \"format\" is not \"blkmap-dataset\"");
		return BM_EFORMAT;
	}
	if ((rc = bm_json_uint(root, "version", 0, INT64_MAX, &x, msg, n)) < 0)
		return rc;
	if (x != version) {
		if (version == 1)
			bm_fmt(msg, n, "format version %" PRIu64 " is not supported (this reader knows 1)", x);
		else
			bm_fmt(msg, n, "format version %" PRIu64 " where a version %u manifest was expected",
			       x, version);
		return BM_EFORMAT;
	}
	v = json_object_get(root, "checksum");
	if (!json_is_string(v) || strcmp(json_string_value(v), "xxh128") != 0) {
		bm_fmt(msg, n, "field \"checksum\" is not \"xxh128\"");
		return BM_EFORMAT;
	}
	if ((rc = bm_json_uint(root, "blksize", 4096, VM_BLKSIZE_MAX, &x, msg, n)) < 0)
		return rc;
	if ((x & (x - 1)) != 0) {
		bm_fmt(msg, n, "field \"blksize\" = %" PRIu64 " is not a power of two", x);
		return BM_EFORMAT;
	}
	h->blksize = (size_t)x;
	if ((rc = bm_json_uint(root, "size", 0, BM_SIZE_MAX, &h->size, msg, n)) < 0)
		return rc;
	if ((rc = bm_json_uint(root, "generation", 1, BM_GEN_MAX, &h->generation, msg, n)) < 0)
		return rc;
	v = json_object_get(root, "created");
	if (json_is_string(v)) {
		/* Informational (shown by `blkmap log`): kept printable. */
		snprintf(h->created, sizeof(h->created), "%s", json_string_value(v));
		bm_printable(h->created);
	}
	v = json_object_get(root, "attrs");
	if (v != NULL && (rc = attrs_from_json(v, &h->attrs, msg, n)) < 0)
		return rc;
	return 0;
}

static int parse_blocks(json_t *root, struct bm_manifest *m, char *msg, size_t n)
{
	json_t *arr = json_object_get(root, "blocks"), *e;
	uint64_t nblk = bm_manifest_nblk(m);
	size_t i;
	int rc;

	if (!json_is_array(arr)) {
		bm_fmt(msg, n, "field \"blocks\" is missing or not an array");
		return BM_EFORMAT;
	}
	if (json_array_size(arr) > nblk) {
		bm_fmt(msg, n, "%zu blocks listed for a dataset of %" PRIu64 " blocks",
		       json_array_size(arr), nblk);
		return BM_EFORMAT;
	}
	m->blocks = calloc(json_array_size(arr) + 1, sizeof(*m->blocks));
	if (m->blocks == NULL)
		return BM_ENOMEM;
	json_array_foreach(arr, i, e) {
		struct bm_block *b = &m->blocks[i];
		json_t *key = json_object_get(e, "key"), *sum = json_object_get(e, "sum");
		if (!json_is_object(e)) {
			bm_fmt(msg, n, "blocks[%zu] is not an object", i);
			return BM_EFORMAT;
		}
		/* nblk >= 1 here: the array is not longer than nblk. */
		if ((rc = bm_json_uint(e, "index", 0, nblk - 1, &b->index, msg, n)) < 0) {
			char inner[200];
			snprintf(inner, sizeof(inner), "%s", msg);
			bm_fmt(msg, n, "blocks[%zu]: %s", i, inner);
			return rc;
		}
		if (i > 0 && b->index <= m->blocks[i - 1].index) {
			bm_fmt(msg, n, "blocks[%zu]: index %" PRIu64 " is not above the previous one", i, b->index);
			return BM_EFORMAT;
		}
		if (!json_is_string(key) || !bm_key_valid(json_string_value(key))) {
			bm_fmt(msg, n, "blocks[%zu] (index %" PRIu64 "): \"key\" is missing or not a safe relative key",
			       i, b->index);
			return BM_EFORMAT;
		}
		if (!json_is_string(sum) || !sum_valid(json_string_value(sum))) {
			bm_fmt(msg, n, "blocks[%zu] (index %" PRIu64 "): \"sum\" is not 32 lowercase hex digits",
			       i, b->index);
			return BM_EFORMAT;
		}
		b->key = strdup(json_string_value(key));
		if (b->key == NULL)
			return BM_ENOMEM;
		memcpy(b->sum, json_string_value(sum), BM_SUM_HEX + 1);
		m->nblocks++;
	}
	return 0;
}

int bm_manifest_parse(const char *json, size_t len, struct bm_manifest **mp, char *msg, size_t n)
{
	json_error_t jerr;
	json_t *root;
	struct bm_manifest *m;
	struct bm_manifest_head h = { 0 };
	int rc;

	*mp = NULL;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		bm_fmt(msg, n, "manifest is not valid JSON: %s at line %d column %d",
		       jerr.text, jerr.line, jerr.column);
		return BM_EFORMAT;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		json_decref(root);
		return BM_ENOMEM;
	}
	rc = bm_manifest_head_parse(root, 1, &h, msg, n);
	BM_MANIFEST_HEAD_TAKE(m, &h);
	if (rc == 0)
		rc = parse_blocks(root, m, msg, n);
	m->version = 1;
	m->stored = m->nblocks;
	json_decref(root);
	if (rc < 0) {
		bm_manifest_free(m);
		return rc;
	}
	*mp = m;
	return 0;
}

char *bm_manifest_dump(const struct bm_manifest *m, size_t *lenp)
{
	json_t *root = json_object(), *arr = json_array();
	char *out = NULL;

	if (root == NULL || arr == NULL)
		goto done;
	json_object_set_new(root, "format", json_string("blkmap-dataset"));
	json_object_set_new(root, "version", json_integer(1));
	json_object_set_new(root, "blksize", json_integer((json_int_t)m->blksize));
	json_object_set_new(root, "size", json_integer((json_int_t)m->size));
	json_object_set_new(root, "generation", json_integer((json_int_t)m->generation));
	json_object_set_new(root, "checksum", json_string("xxh128"));
	if (m->created[0])
		json_object_set_new(root, "created", json_string(m->created));
	if (m->attrs) {
		json_t *a = json_loads(m->attrs, 0, NULL); /* our own text (normalized) */
		if (a == NULL)
			goto done;
		json_object_set_new(root, "attrs", a);
	}
	for (size_t i = 0; i < m->nblocks; i++) {
		json_t *b = json_object();
		if (b == NULL)
			goto done;
		json_object_set_new(b, "index", json_integer((json_int_t)m->blocks[i].index));
		json_object_set_new(b, "key", json_string(m->blocks[i].key));
		json_object_set_new(b, "sum", json_string(m->blocks[i].sum));
		json_array_append_new(arr, b);
	}
	json_object_set(root, "blocks", arr);
	out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (out && lenp)
		*lenp = strlen(out);
done:
	json_decref(arr);
	json_decref(root);
	return out;
}

static int cmp_change(const void *a, const void *b)
{
	const struct bm_change *x = a, *y = b;
	if (x->index != y->index)
		return x->index < y->index ? -1 : 1;
	/* Same block: submission order, so that the later change wins. */
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Appends a copy of block (index, key, sum) to out. */
static int push_block(struct bm_manifest *out, uint64_t index, const char *key, const char *sum)
{
	struct bm_block *b = &out->blocks[out->nblocks];
	b->key = strdup(key);
	if (b->key == NULL)
		return BM_ENOMEM;
	b->index = index;
	memcpy(b->sum, sum, BM_SUM_HEX + 1);
	out->nblocks++;
	return 0;
}

int bm_manifest_apply(const struct bm_manifest *m, struct bm_change *ch, size_t nch,
		      uint64_t new_size, struct bm_manifest **outp)
{
	struct bm_manifest *out = calloc(1, sizeof(*out));
	size_t i = 0, j = 0;
	int rc = 0;

	*outp = NULL;
	if (out == NULL)
		return BM_ENOMEM;
	if (nch > 0)
		qsort(ch, nch, sizeof(*ch), cmp_change); /* ch may be NULL then */
	out->blksize = m->blksize;
	out->size = new_size;
	if (m->attrs && (out->attrs = strdup(m->attrs)) == NULL) {
		free(out);
		return BM_ENOMEM;
	}
	out->version = 1;
	out->generation = m->generation + 1;
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out->created, sizeof(out->created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	out->blocks = calloc(m->nblocks + nch + 1, sizeof(*out->blocks));
	if (out->blocks == NULL) {
		free(out->attrs);
		free(out);
		return BM_ENOMEM;
	}
	uint64_t nblk = bm_manifest_nblk(out);
	while (rc == 0 && (i < m->nblocks || j < nch)) {
		if (j < nch && (i >= m->nblocks || ch[j].index <= m->blocks[i].index)) {
			/* The last change to this index decides. */
			while (j + 1 < nch && ch[j + 1].index == ch[j].index)
				j++;
			if (i < m->nblocks && m->blocks[i].index == ch[j].index)
				i++;
			if (ch[j].key != NULL && ch[j].index < nblk)
				rc = push_block(out, ch[j].index, ch[j].key, ch[j].sum);
			j++;
		} else {
			if (m->blocks[i].index < nblk)
				rc = push_block(out, m->blocks[i].index, m->blocks[i].key, m->blocks[i].sum);
			i++;
		}
	}
	if (rc < 0) {
		bm_manifest_free(out);
		return rc;
	}
	out->stored = out->nblocks;
	*outp = out;
	return 0;
}
