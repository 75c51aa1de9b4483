/* store_list.c — what the store backends share to read listings and error
 * answers: the pages of bm_store_list (grown, sorted, each key once) and
 * the parsers of the untrusted bodies that fill them — blkmap-server's JSON
 * listing, a WebDAV PROPFIND multistatus (store_http.c), an S3
 * ListObjectsV2 page and an S3 XML error (store_s3.c).  Pure: no I/O, so
 * that tests/fuzz/fuzz_store.c drives each with any bytes.
 * The rule every parser keeps: a key it returns is relative to the store's
 * base, starts with the prefix asked and is one blkmap could have written
 * (bm_key_valid); any other object the server names is passed over, never
 * handed to a caller that might GET or DELETE it.
 * Owns: nothing beyond a call.  Locking: none.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store.h"

/* ---- pages ----------------------------------------------------------------------------- */

int bm_list_add(struct bm_list *page, size_t *cap, const char *key, size_t klen, uint64_t size)
{
	if (page->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct bm_list_entry *ne = realloc(page->entries, ncap * sizeof(*ne));
		if (ne == NULL)
			return BM_ENOMEM;
		page->entries = ne;
		*cap = ncap;
	}
	if ((page->entries[page->n].key = strndup(key, klen)) == NULL)
		return BM_ENOMEM;
	page->entries[page->n++].size = size;
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct bm_list_entry *)a)->key, ((const struct bm_list_entry *)b)->key);
}

void bm_list_sort(struct bm_list *page)
{
	size_t k = 0;

	if (page->n < 2)
		return;
	qsort(page->entries, page->n, sizeof(*page->entries), cmp_entry);
	for (size_t i = 0; i < page->n; i++) {
		if (k > 0 && strcmp(page->entries[k - 1].key, page->entries[i].key) == 0)
			free(page->entries[i].key); /* named twice: the first kept */
		else
			page->entries[k++] = page->entries[i];
	}
	page->n = k;
}

/* How a parser ends: a refused page emptied (msg says why), a good one
 * sorted. */
static int page_done(struct bm_list *page, int rc, char *msg, size_t n)
{
	if (rc == BM_ENOMEM)
		bm_fmt(msg, n, "out of memory");
	if (rc < 0)
		bm_list_free(page);
	else
		bm_list_sort(page);
	return rc;
}

/* Whether rel (relative to the base, rl bytes) is a key under prefix that
 * blkmap could have written. */
static bool key_listed(const char *rel, size_t rl, const char *prefix)
{
	char key[BM_KEY_MAX + 1];
	size_t pl = strlen(prefix);

	if (rl < pl || rl > BM_KEY_MAX || memcmp(rel, prefix, pl) != 0 || memchr(rel, '\0', rl))
		return false;
	memcpy(key, rel, rl);
	key[rl] = '\0';
	return bm_key_valid(key);
}

/* ---- blkmap-server's JSON listing ---------------------------------------------------------- */

int bm_list_parse_json(const char *json, size_t len, const char *base, const char *prefix,
		       struct bm_list *page, char *msg, size_t n)
{
	json_error_t je;
	json_t *doc = json_loadb(json, len, 0, &je), *objs = json_object_get(doc, "objects");
	size_t bl = strlen(base), cap = 0;
	int rc = 0;

	memset(page, 0, sizeof(*page));
	if (!json_is_array(objs)) {
		bm_fmt(msg, n, "not a listing (%s)", doc ? "no \"objects\" array" : je.text);
		json_decref(doc);
		return BM_EFORMAT;
	}
	for (size_t i = 0; i < json_array_size(objs) && rc == 0; i++) {
		json_t *o = json_array_get(objs, i), *k = json_object_get(o, "key");
		json_t *sz = json_object_get(o, "size");
		if (!json_is_string(k) || !json_is_integer(sz) || json_integer_value(sz) < 0) {
			bm_fmt(msg, n, "entry %zu has no key or size", i);
			rc = BM_EFORMAT;
			continue;
		}
		/* The server's keys are from its root: the base's path is cut. */
		const char *key = json_string_value(k);
		size_t kl = json_string_length(k);
		if (kl >= bl && memcmp(key, base, bl) == 0 && key_listed(key + bl, kl - bl, prefix))
			rc = bm_list_add(page, &cap, key + bl, kl - bl, (uint64_t)json_integer_value(sz));
	}
	json_decref(doc);
	return page_done(page, rc, msg, n);
}

/* ---- XML, as far as the answers of WebDAV and S3 need it ---------------------------------------- */

bool bm_xml_find(const char *p, const char *end, const char *name, const char **vp, size_t *vl,
		 const char **after)
{
	size_t nl = strlen(name);

	for (const char *q = p; q < end && (q = memchr(q, '<', (size_t)(end - q))) != NULL; q++) {
		const char *t = q + 1, *e = t, *local = t;
		while (e < end && *e != '>' && *e != ' ' && *e != '/')
			if (*e++ == ':')
				local = e;
		if (e >= end || *t == '/' || (size_t)(e - local) != nl || memcmp(local, name, nl) != 0)
			continue;
		const char *gt = memchr(e, '>', (size_t)(end - e));
		if (gt == NULL)
			return false;
		*vp = gt + 1;
		*vl = 0;
		if (gt[-1] != '/') { /* not <x/> */
			const char *lt = memchr(gt + 1, '<', (size_t)(end - gt - 1));
			*vl = (size_t)((lt ? lt : end) - (gt + 1));
		}
		*after = gt + 1;
		return true;
	}
	return false;
}

/* The text v (vl bytes) with XML's five named entities and the numeric
 * ones of ASCII decoded, into out (outn bytes, NUL-terminated); false if it
 * does not fit.  Any other '&' stays as it is. */
static bool xml_decode(const char *v, size_t vl, char *out, size_t outn)
{
	static const struct {
		const char *ent;
		char c;
	} ents[] = { { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' },
		     { "&apos;", '\'' } };
	const char *p = v, *end = v + vl;
	size_t o = 0;

	while (p < end) {
		char c = *p++;
		if (c == '&') {
			bool done = false;
			for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
				size_t el = strlen(ents[i].ent) - 1;
				if ((size_t)(end - p) >= el && memcmp(p, ents[i].ent + 1, el) == 0) {
					c = ents[i].c;
					p += el;
					done = true;
				}
			}
			if (!done && p < end && *p == '#') {
				const char *q = p + 1;
				int base = q < end && *q == 'x' ? 16 : 10;
				unsigned long cp = 0;
				q += base == 16;
				const char *digits = q;
				for (; q < end && cp < 0x80; q++) {
					int d = *q >= '0' && *q <= '9' ? *q - '0' :
						base == 16 && *q >= 'a' && *q <= 'f' ? *q - 'a' + 10 :
						base == 16 && *q >= 'A' && *q <= 'F' ? *q - 'A' + 10 : -1;
					if (d < 0)
						break;
					cp = cp * (unsigned long)base + (unsigned long)d;
				}
				if (q > digits && q < end && *q == ';' && cp > 0 && cp < 0x80) {
					c = (char)cp;
					p = q + 1;
				}
			}
		}
		if (o + 1 >= outn)
			return false;
		out[o++] = c;
	}
	out[o] = '\0';
	return true;
}

/* The decoded text of the first <name> in [p, end) into out: true, or false
 * when there is none or it does not fit in outn bytes. */
static bool xml_text(const char *p, const char *end, const char *name, char *out, size_t outn)
{
	const char *v, *after;
	size_t vl;

	return bm_xml_find(p, end, name, &v, &vl, &after) && xml_decode(v, vl, out, outn);
}

/* ---- WebDAV: a PROPFIND multistatus ------------------------------------------------------------ */

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The key of href (a path or a URL, %-escaped) relative to the base path
 * bp ("/ds/"), into out; false when it is not under the base or is not a
 * key blkmap would have written.  A collection's key ends with '/'. */
static bool href_key(const char *v, size_t vl, const char *bp, char *out, size_t outn)
{
	char path[BM_KEY_MAX + 512];
	size_t n = 0, bl = strlen(bp);

	if (vl > 7 && memcmp(v, "http", 4) == 0) { /* an absolute URL: its path */
		const char *h = memchr(v, ':', vl);
		const char *sl = h && h + 3 < v + vl ? memchr(h + 3, '/', (size_t)(v + vl - h - 3)) : NULL;
		if (sl == NULL)
			return false;
		vl -= (size_t)(sl - v);
		v = sl;
	}
	for (size_t i = 0; i < vl; i++) {
		char c = v[i];
		int hi, lo;
		if (c == '%' && i + 2 < vl && (hi = hexval(v[i + 1])) >= 0 && (lo = hexval(v[i + 2])) >= 0) {
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (n + 1 >= sizeof(path))
			return false;
		path[n++] = c;
	}
	path[n] = '\0';
	if (n < bl || strncmp(path, bp, bl) != 0)
		return false;
	const char *k = path + bl;
	size_t kl = strlen(k);
	bool coll = kl > 0 && k[kl - 1] == '/';
	if (kl >= outn)
		return false;
	memcpy(out, k, kl + 1);
	if (coll)
		out[kl - 1] = '\0'; /* checked without the '/' */
	bool ok = out[0] == '\0' || bm_key_valid(out);
	if (coll && ok && out[0] != '\0')
		strcat(out, "/");
	return ok;
}

int bm_list_parse_propfind(const char *xml, size_t len, const char *bp, const char *dir,
			   struct bm_list *page, char *msg, size_t n)
{
	const char *p = xml, *end = xml + len, *v;
	char key[BM_KEY_MAX + 2];
	size_t vl, cap = 0;
	int rc = 0;

	memset(page, 0, sizeof(*page));
	while (rc == 0 && bm_xml_find(p, end, "href", &v, &vl, &p)) {
		/* This response's properties lie before the next href. */
		const char *nv, *after, *next, *cv, *ca;
		size_t nvl, cl;
		next = bm_xml_find(p, end, "href", &nv, &nvl, &after) ? nv : end;
		if (!href_key(v, vl, bp, key, sizeof(key)) || strcmp(key, dir) == 0 ||
		    strncmp(key, dir, strlen(dir)) != 0)
			continue; /* not a member of dir */
		uint64_t size = 0;
		if (key[strlen(key) - 1] != '/' &&
		    bm_xml_find(p, next, "getcontentlength", &cv, &cl, &ca) && cl > 0 && cl < 21 &&
		    strspn(cv, "0123456789") >= cl)
			size = strtoull(cv, NULL, 10);
		rc = bm_list_add(page, &cap, key, strlen(key), size);
	}
	return page_done(page, rc, msg, n);
}

/* ---- S3: a ListObjectsV2 page, an error ------------------------------------------------------ */

#define S3_KEY_MAX 4096 /* a decoded key with its NUL: S3 keys are at most 1024 bytes */

int bm_list_parse_s3(const char *xml, size_t len, const char *base, const char *prefix,
		     const char *token, struct bm_list *page, char *msg, size_t n)
{
	const char *p = xml, *end = xml + len, *v, *after;
	size_t bl = strlen(base), vl, cap = 0;
	char *key = malloc(S3_KEY_MAX), text[32];
	int rc = 0;

	memset(page, 0, sizeof(*page));
	if (key == NULL) {
		bm_fmt(msg, n, "out of memory");
		return BM_ENOMEM;
	}
	if (!bm_xml_find(xml, end, "ListBucketResult", &v, &vl, &after) ||
	    !xml_text(xml, end, "IsTruncated", text, sizeof(text))) {
		bm_fmt(msg, n, "not a ListObjectsV2 answer (no ListBucketResult with IsTruncated)");
		free(key);
		return BM_EFORMAT;
	}
	bool truncated = strcmp(text, "true") == 0;
	while (rc == 0 && bm_xml_find(p, end, "Contents", &v, &vl, &after)) {
		const char *ce = memmem(after, (size_t)(end - after), "</Contents>", 11);
		if (ce == NULL) {
			bm_fmt(msg, n, "a <Contents> without its end");
			rc = BM_EFORMAT;
			break;
		}
		p = ce + strlen("</Contents>");
		if (!xml_text(after, ce, "Key", key, S3_KEY_MAX) ||
		    !xml_text(after, ce, "Size", text, sizeof(text)) || !text[0] ||
		    strspn(text, "0123456789") != strlen(text) || strlen(text) > 19 ||
		    strncmp(key, base, bl) != 0 || strncmp(key + bl, prefix, strlen(prefix)) != 0) {
			bm_fmt(msg, n, "an entry without a key under \"%.200s%.200s\" or its size", base,
			       prefix);
			rc = BM_EFORMAT;
			break;
		}
		size_t kl = strlen(key);
		if (key_listed(key + bl, kl - bl, prefix))
			rc = bm_list_add(page, &cap, key + bl, kl - bl, strtoull(text, NULL, 10));
	}
	if (rc == 0 && truncated) {
		/* A token is at most 1024 bytes (AWS); its own again would
		 * list the same page for ever. */
		if (!xml_text(xml, end, "NextContinuationToken", key, 1025) || key[0] == '\0') {
			bm_fmt(msg, n, "a truncated listing without NextContinuationToken");
			rc = BM_EFORMAT;
		} else if (token && strcmp(key, token) == 0) {
			bm_fmt(msg, n, "the next page's NextContinuationToken is the one asked for (a loop)");
			rc = BM_EFORMAT;
		} else if ((page->next = strdup(key)) == NULL) {
			rc = BM_ENOMEM;
		}
	}
	free(key);
	return page_done(page, rc, msg, n);
}

void bm_s3_error_code(const char *body, size_t len, char *out, size_t n)
{
	if (!xml_text(body, body + len, "Code", out, n))
		out[0] = '\0';
	bm_printable(out);
	/* One word: a code is an identifier ("NoSuchKey"). */
	for (char *c = out; *c; c++)
		if (*c == ' ')
			*c = '_';
}
