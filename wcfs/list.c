/* list.c — which datasets lie under a directory of the mirror, from
 * blkmap-server's listing (`GET <url>/<dir>/`, docs/server.md).  The
 * listing is a convenience of that server only: any failure (another
 * server, a 404, not JSON) answers "does not list" and the caller falls
 * back to what was looked up.  What the listing says is parsed by
 * listing.c.
 * Owns: nothing across calls (one curl handle per call).  Locking: none.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

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

/* GET the listing of dir: 0 with *bp its body (NULL: not listed, a status
 * other than 200 or a failure), or -ENAMETOOLONG when its URL (or the
 * token's header) would not fit. */
static int get_listing(const char *dir, struct body *bp)
{
	char url[WC_URL_MAX], auth[WC_URL_MAX];
	struct body b = { 0 };
	struct curl_slist *hdr = NULL;
	long status = 0;
	CURL *h;

	*bp = b;
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
		*bp = b;
	else
		free(b.p);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	return 0;
}

int wc_list(uint64_t gen, const char *dir,
	    void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	struct body b;
	int count;

	if (get_listing(dir, &b) < 0)
		return -ENAMETOOLONG;
	count = b.p ? wc_listing_parse(b.p, b.len, gen, fn, arg) : -1;
	wc_debug("list %s: %s", dir[0] ? dir : "/", count >= 0 ? "ok" : "not listed");
	free(b.p);
	return count;
}
