/* list.c — which datasets lie under a directory of the mirror, from the
 * server's listing of the keys below it (bm_list_keys: blkmap-server's
 * JSON, WebDAV PROPFIND, S3 ListObjectsV2 page by page).  A server that
 * does not list (nginx), or a listing that fails, answers "does not list"
 * and the caller falls back to what was looked up.
 * Owns: nothing across calls (the listing opens its own store).
 * Locking: none.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wcfs.h"

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

/* The walk over the sorted keys below dir: the keys under one child are
 * consecutive. */
struct walk {
	size_t plen;                 /* length of the prefix "dir/" */
	char file_key[64];           /* "manifest.json" or "gen/<gen>.json" */
	char below_key[80];          /* the same with a leading '/' */
	char child[256];
	bool have, child_file, child_below;
	int count;
	void (*fn)(const char *name, bool is_file, void *arg);
	void *arg;
};

static void walk_flush(struct walk *w)
{
	if (w->have && (w->child_file || w->child_below) && wc_name_ok(w->child)) {
		w->fn(w->child, w->child_file, w->arg);
		w->count++;
	}
}

static int walk_key(const char *key, uint64_t size, void *arg)
{
	struct walk *w = arg;
	const char *rel = key + w->plen, *slash = strchr(rel, '/');

	(void)size;
	if (slash == NULL || (size_t)(slash - rel) >= sizeof(w->child))
		return 0;
	size_t cl = (size_t)(slash - rel);
	if (!w->have || strncmp(w->child, rel, cl) != 0 || w->child[cl] != '\0') {
		walk_flush(w);
		memcpy(w->child, rel, cl);
		w->child[cl] = '\0';
		w->have = true;
		w->child_file = w->child_below = false;
	}
	if (!strcmp(slash + 1, w->file_key))
		w->child_file = true;
	else if (ends_with(slash + 1, w->below_key))
		w->child_below = true;
	return 0;
}

int wc_list(uint64_t gen, const char *dir,
	    void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	char prefix[WC_URL_MAX];
	struct walk w = { .fn = fn, .arg = arg };

	if (wc_format(prefix, sizeof(prefix), "%s%s", dir, dir[0] ? "/" : "") < 0 ||
	    strlen(wc_m.url) + 1 + strlen(prefix) >= WC_URL_MAX)
		return -ENAMETOOLONG;
	w.plen = strlen(prefix);
	/* A dataset D of view gen has key D/manifest.json (head) or
	 * D/gen/<gen>.json (a kept generation). */
	if (gen == 0)
		snprintf(w.file_key, sizeof(w.file_key), "manifest.json");
	else
		snprintf(w.file_key, sizeof(w.file_key), "gen/%" PRIu64 ".json", gen);
	snprintf(w.below_key, sizeof(w.below_key), "/%s", w.file_key);
	int rc = bm_list_keys(wc_m.url, &wc_m.opt, prefix, walk_key, &w);
	wc_debug("list %s/%s: %s", wc_m.url, prefix, rc == 0 ? "ok" : bm_last_error(NULL));
	if (rc < 0)
		return -1;
	walk_flush(&w);
	return w.count;
}
