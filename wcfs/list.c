/* list.c — which datasets lie under a directory of the mirror, from the
 * server's listing of the keys below it (bm_list_keys: blkmap-server's
 * JSON, WebDAV PROPFIND, S3 ListObjectsV2 page by page).  A server that
 * does not list (nginx), or a listing that fails, answers "does not list"
 * and the caller falls back to what was looked up.  The keys become
 * children in listing.c, whatever order they came in.
 * Owns: nothing across calls (the listing opens its own store).
 * Locking: none.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wcfs.h"

/* The keys below the directory, relative to it. */
struct keys {
	size_t plen;                 /* length of the prefix "dir/" */
	char **v;
	size_t n, cap;
	bool oom;
};

static int add_key(const char *key, uint64_t size, void *arg)
{
	struct keys *k = arg;

	(void)size;
	if (strlen(key) < k->plen)
		return 0;
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 256;
		char **v = realloc(k->v, cap * sizeof(*v));
		if (v == NULL) {
			k->oom = true;
			return 1; /* stop */
		}
		k->v = v;
		k->cap = cap;
	}
	if ((k->v[k->n] = strdup(key + k->plen)) == NULL) {
		k->oom = true;
		return 1;
	}
	k->n++;
	return 0;
}

int wc_list(uint64_t gen, const char *dir,
	    void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	char prefix[WC_URL_MAX];
	struct keys k = { 0 };
	int count = -1;

	if (wc_format(prefix, sizeof(prefix), "%s%s", dir, dir[0] ? "/" : "") < 0 ||
	    strlen(wc_m.url) + 1 + strlen(prefix) >= WC_URL_MAX)
		return -ENAMETOOLONG;
	k.plen = strlen(prefix);
	int rc = bm_list_keys(wc_m.url, &wc_m.opt, prefix, add_key, &k);
	wc_debug("list %s/%s: %s", wc_m.url, prefix,
		 rc < 0 ? bm_last_error(NULL) : k.oom ? "out of memory" : "ok");
	if (rc == 0 && !k.oom)
		count = wc_children((const char **)k.v, k.n, gen, fn, arg);
	for (size_t i = 0; i < k.n; i++)
		free(k.v[i]);
	free(k.v);
	return count;
}
