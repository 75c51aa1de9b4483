/* tests/fuzz/fuzz_store.c — libFuzzer target for the parsers of what a
 * store's server answers besides objects (client/store_list.c): the
 * listings bm_store_list hands to gc, `blkmap log` and the mirror —
 * blkmap-server's JSON, a WebDAV PROPFIND multistatus, an S3
 * ListObjectsV2 page with its continuation token — and S3 XML errors.
 * The input: byte 0 picks the parser (mod 4: JSON, PROPFIND, S3 page, S3
 * error), byte 1 the call's arguments (the prefix asked, the store's base,
 * the token the S3 page was asked with), the rest is the body.
 * Properties: a refusal leaves an empty page and says why in one printable
 * line; a page holds only keys relative to the base, under the prefix,
 * each a key blkmap could have written (never "..", never absolute: gc
 * DELETEs them), sorted, each once; a truncated S3 page names a next token
 * that is neither empty nor the one asked (else a caller lists for ever);
 * blkmap-server's listing leaves out no key it should give; an S3 error
 * code is one printable word.  Locking: none. */
#include "config.h"

#include <string.h>

#include <jansson.h>

#include "../../client/store.h"
#include "fuzz.h"

static const char *const prefixes[] = { "", "gen/", "blocks/", "index/", "b", "gen/1", "a/", "x" };

static bool printable_line(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* The properties of a page every parser fills; dir: PROPFIND's collection
 * (its members' keys start with it, collections end with '/'), else NULL. */
static void check_page(const char *what, int rc, const struct bm_list *page, const char *prefix,
		       const char *dir, const char *token, const char *msg)
{
	if (rc < 0) {
		if (rc != BM_EFORMAT && rc != BM_ENOMEM)
			fuzz_fail("%s: refused with %d, neither BM_EFORMAT nor BM_ENOMEM", what, rc);
		if (page->n != 0 || page->entries != NULL || page->next != NULL)
			fuzz_fail("%s: a refused listing left %zu entries", what, page->n);
		fuzz_check_message(what, msg);
		if (!printable_line(msg))
			fuzz_fail("%s: the message is not printable: '%s'", what, msg);
		return;
	}
	if (rc != 0)
		fuzz_fail("%s: returned %d", what, rc);
	for (size_t i = 0; i < page->n; i++) {
		char key[BM_KEY_MAX + 2];
		const char *k = page->entries[i].key;
		size_t kl = strlen(k);
		if (kl == 0 || kl > BM_KEY_MAX + 1)
			fuzz_fail("%s: key %zu is %zu bytes", what, i, kl);
		memcpy(key, k, kl + 1);
		if (dir && key[kl - 1] == '/')
			key[kl - 1] = '\0'; /* a collection */
		if (!bm_key_valid(key))
			fuzz_fail("%s: key '%s' is not a key blkmap writes", what, k);
		if (strncmp(k, dir ? dir : prefix, strlen(dir ? dir : prefix)) != 0)
			fuzz_fail("%s: key '%s' is not under '%s'", what, k, dir ? dir : prefix);
		if (dir && strcmp(k, dir) == 0)
			fuzz_fail("%s: collection '%s' listed as its own member", what, dir);
		if (i > 0 && strcmp(page->entries[i - 1].key, k) >= 0)
			fuzz_fail("%s: keys out of order or repeated: '%s' then '%s'", what,
				  page->entries[i - 1].key, k);
	}
	if (page->next && (page->next[0] == '\0' || (token && strcmp(page->next, token) == 0)))
		fuzz_fail("%s: next token '%s' after token '%s' would list for ever", what, page->next,
			  token ? token : "(none)");
}

/* blkmap-server's listing: every object under base + prefix with a valid
 * key and a size is in the page. */
static void check_json_complete(const char *body, size_t len, const char *base, const char *prefix,
				const struct bm_list *page)
{
	json_t *doc = json_loadb(body, len, 0, NULL), *o;
	size_t i, bl = strlen(base), pl = strlen(prefix);

	json_array_foreach(json_object_get(doc, "objects"), i, o) {
		const char *k = json_string_value(json_object_get(o, "key"));
		if (k == NULL || strncmp(k, base, bl) != 0 || strncmp(k + bl, prefix, pl) != 0 ||
		    strlen(k) != json_string_length(json_object_get(o, "key")) || !bm_key_valid(k + bl))
			continue;
		bool found = false;
		for (size_t e = 0; e < page->n && !found; e++)
			found = strcmp(page->entries[e].key, k + bl) == 0;
		if (!found)
			fuzz_fail("json: key '%s' of the listing is not in the page", k);
	}
	json_decref(doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bm_list page;
	char msg[512] = "";
	int rc;

	if (size < 2)
		return 0;
	unsigned mode = data[0] % 4, arg = data[1];
	const char *prefix = prefixes[arg & 7];
	const char *token = arg & 16 ? "tok-1" : NULL;
	size_t len = size - 2;
	/* The body as the store has it: NUL-terminated (bm_body_sink). */
	char *body = malloc(len + 1);
	if (body == NULL)
		return 0;
	memcpy(body, data + 2, len);
	body[len] = '\0';

	switch (mode) {
	case 0: {
		const char *base = arg & 8 ? "a/ds/" : "";
		rc = bm_list_parse_json(body, len, base, prefix, &page, msg, sizeof(msg));
		check_page("json", rc, &page, prefix, NULL, NULL, msg);
		if (rc == 0)
			check_json_complete(body, len, base, prefix, &page);
		bm_list_free(&page);
		break;
	}
	case 1: {
		/* The collection PROPFIND asks: the one holding the prefix. */
		char dir[16] = "";
		const char *slash = strrchr(prefix, '/');
		if (slash)
			memcpy(dir, prefix, (size_t)(slash + 1 - prefix));
		rc = bm_list_parse_propfind(body, len, arg & 8 ? "/a/ds/" : "/", dir, &page, msg,
					    sizeof(msg));
		check_page("propfind", rc, &page, prefix, dir, NULL, msg);
		bm_list_free(&page);
		break;
	}
	case 2:
		rc = bm_list_parse_s3(body, len, arg & 8 ? "pfx/" : "", prefix, token, &page, msg,
				      sizeof(msg));
		check_page("s3 list", rc, &page, prefix, NULL, token, msg);
		bm_list_free(&page);
		break;
	default: {
		char code[64];
		memset(code, 'Z', sizeof(code));
		bm_s3_error_code(body, len, code, sizeof(code));
		if (memchr(code, '\0', sizeof(code)) == NULL)
			fuzz_fail("s3 error: the code is not terminated within its buffer");
		if (!printable_line(code) || strchr(code, ' '))
			fuzz_fail("s3 error: code '%s' is not one printable word", code);
		break;
	}
	}
	free(body);
	return 0;
}
