/* list.c — which datasets lie under a directory of the mirror, from
 * blkmap-server's listing (`GET <url>/<dir>/`, docs/server.md).  The
 * listing is a convenience of that server only: any failure (another
 * server, a 404, not JSON) answers "does not list" and the caller falls
 * back to what was looked up.
 * Owns: nothing across calls (one curl handle per call).  Locking: none.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "wcfs.h"

#define WC_LIST_MAX (64u << 20) /* a bigger listing is refused */

struct body {
	char *p;
	size_t len;
};

static size_t add_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t add = size * n;

	if (b->len + add > WC_LIST_MAX)
		return 0;
	char *q = realloc(b->p, b->len + add + 1);
	if (q == NULL)
		return 0;
	memcpy(q + b->len, p, add);
	b->len += add;
	q[b->len] = '\0';
	b->p = q;
	return add;
}

/* GET the listing of dir: 0 with *jp the parsed JSON (NULL: not listed),
 * or -ENAMETOOLONG when its URL (or the token's header) would not fit. */
static int get_listing(const char *dir, json_t **jp)
{
	char url[WC_URL_MAX], auth[WC_URL_MAX];
	struct body b = { 0 };
	struct curl_slist *hdr = NULL;
	long status = 0;
	json_t *j = NULL;
	CURL *h;

	*jp = NULL;
	if (wc_format(url, sizeof(url), "%s/%s%s", wc_m.url, dir, dir[0] ? "/" : "") < 0)
		return -ENAMETOOLONG;
	if (wc_m.opt.token && wc_m.opt.token[0] &&
	    wc_format(auth, sizeof(auth), "Authorization: Bearer %s", wc_m.opt.token) < 0)
		return -ENAMETOOLONG;
	if ((h = curl_easy_init()) == NULL)
		return 0;
	if (wc_m.opt.token && wc_m.opt.token[0])
		hdr = curl_slist_append(hdr, auth);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, wc_m.opt.connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, wc_m.opt.timeout_ms);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, add_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (curl_easy_perform(h) == CURLE_OK &&
	    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200 && b.p)
		j = json_loadb(b.p, b.len, 0, NULL);
	if (j != NULL && !json_is_array(json_object_get(j, "objects"))) {
		json_decref(j);
		j = NULL;
	}
	wc_debug("list %s: %s", url, j ? "ok" : "not listed");
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	free(b.p);
	*jp = j;
	return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

int wc_list(uint64_t gen, const char *dir,
	    void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	char file_key[64], below_key[80], child[256] = "";
	bool have = false, child_file = false, child_below = false;
	int count = 0;
	json_t *j, *o;
	size_t i;

	if (get_listing(dir, &j) < 0)
		return -ENAMETOOLONG;
	if (j == NULL)
		return -1;
	/* A dataset D of view gen has key D/manifest.json (head) or
	 * D/gen/<gen>.json (a kept generation). */
	if (gen == 0)
		snprintf(file_key, sizeof(file_key), "manifest.json");
	else
		snprintf(file_key, sizeof(file_key), "gen/%" PRIu64 ".json", gen);
	snprintf(below_key, sizeof(below_key), "/%s", file_key);
	const char *prefix = json_string_value(json_object_get(j, "prefix"));
	size_t plen = prefix ? strlen(prefix) : 0;

	/* Keys come sorted, so the keys under one child are consecutive. */
	json_array_foreach(json_object_get(j, "objects"), i, o) {
		const char *key = json_string_value(json_object_get(o, "key"));
		if (key == NULL || strncmp(key, prefix ? prefix : "", plen) != 0)
			continue;
		const char *rel = key + plen, *slash = strchr(rel, '/');
		if (slash == NULL || (size_t)(slash - rel) >= sizeof(child))
			continue;
		if (!have || strncmp(child, rel, (size_t)(slash - rel)) != 0 || child[slash - rel] != '\0') {
			if (have && (child_file || child_below) && wc_name_ok(child)) {
				fn(child, child_file, arg);
				count++;
			}
			memcpy(child, rel, (size_t)(slash - rel));
			child[slash - rel] = '\0';
			have = true;
			child_file = child_below = false;
		}
		if (!strcmp(slash + 1, file_key))
			child_file = true;
		else if (ends_with(slash + 1, below_key))
			child_below = true;
	}
	if (have && (child_file || child_below) && wc_name_ok(child)) {
		fn(child, child_file, arg);
		count++;
	}
	json_decref(j);
	return count;
}
