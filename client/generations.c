/* generations.c — which generations of a dataset are kept (what `blkmap
 * log` shows): listed through the store (bm_store_list of "gen/", page by
 * page: ListObjectsV2 on S3, PROPFIND on WebDAV, blkmap-server's listing)
 * when the store lists; else looked up one by one from the newest down
 * (HEAD gen/<N>.json), giving up after BM_LOG_MAX_MISSING in a row that
 * are not kept (the generation number is the server's word).
 * Owns: nothing across calls.  Locking: none; it reads the handle's
 * generation as bm_generation does (the handle's owner does not commit or
 * refresh meanwhile).
 */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store.h"

struct gens {
	uint64_t *v;
	size_t n, cap;
};

static int gens_add(struct gens *g, uint64_t gen)
{
	if (g->n == g->cap) {
		size_t ncap = g->cap ? g->cap * 2 : 64;
		uint64_t *nv = realloc(g->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return BM_ENOMEM;
		g->v = nv;
		g->cap = ncap;
	}
	g->v[g->n++] = gen;
	return 0;
}

static int cmp_newest_first(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* Every "gen/<N>.json" with N <= cur, from the listing. */
static int list_kept(bm_dataset *ds, uint64_t cur, struct gens *g)
{
	char msg[1024] = "", *token = NULL;
	int rc;

	do {
		struct bm_list page;
		rc = bm_store_list(ds->store, "gen/", token, &page, msg, sizeof(msg));
		free(token);
		token = NULL;
		if (rc < 0)
			break;
		for (size_t i = 0; i < page.n && rc == 0; i++) {
			uint64_t gen = bm_key_gen_parse(page.entries[i].key);
			if (gen >= 1 && gen <= cur)
				rc = gens_add(g, gen);
		}
		if (rc == 0 && page.next && (token = strdup(page.next)) == NULL)
			rc = BM_ENOMEM;
		bm_list_free(&page);
	} while (rc == 0 && token);
	free(token);
	if (rc < 0)
		bm_set_error(ds, rc, "%s", msg[0] ? msg : bm_strerror(rc));
	return rc;
}

/* HEAD gen/<N>.json from cur - 1 down; *unlooked as bm_generations says. */
static int walk_kept(bm_dataset *ds, uint64_t cur, struct gens *g, uint64_t *unlooked)
{
	unsigned missing = 0;

	for (uint64_t gen = cur - 1; gen >= 1; gen--) {
		char key[BM_KEY_GEN_SIZE], msg[1024];
		struct bm_version v;
		bm_key_gen(key, gen);
		int rc = bm_store_head(ds->store, key, &v, msg, sizeof(msg));
		if (rc == BM_ENOTFOUND) {
			if (++missing == BM_LOG_MAX_MISSING && gen > 1) {
				*unlooked = gen - 1;
				break;
			}
			continue;
		}
		if (rc < 0) {
			bm_set_error(ds, rc, "%s", msg);
			return rc;
		}
		missing = 0;
		if ((rc = gens_add(g, gen)) < 0)
			return rc;
	}
	return 0;
}

int bm_generations(bm_dataset *ds, uint64_t **gensp, size_t *np, uint64_t *unlookedp)
{
	struct gens g = { 0 };
	uint64_t cur, unlooked = 0;
	int rc;

	*gensp = NULL;
	*np = 0;
	if (unlookedp)
		*unlookedp = 0;
	if (ds->flat) {
		bm_set_error(ds, BM_EINVAL, "%s is a plain object: it has no generations", ds->url);
		return BM_EINVAL;
	}
	cur = ds->manifest->generation;
	if (cur == 0)
		return 0; /* a dataset not created yet */
	/* The current generation first, kept or not (its writer may have
	 * stopped before keeping it: bm_generation_info still describes it). */
	if ((rc = gens_add(&g, cur)) < 0)
		goto out;
	if (bm_store_caps(ds->store) & BM_CAP_LIST) {
		if ((rc = list_kept(ds, cur, &g)) < 0)
			goto out;
		qsort(g.v, g.n, sizeof(*g.v), cmp_newest_first);
		size_t k = 0; /* the current one was added twice when kept */
		for (size_t i = 0; i < g.n; i++)
			if (k == 0 || g.v[k - 1] != g.v[i])
				g.v[k++] = g.v[i];
		g.n = k;
	} else if ((rc = walk_kept(ds, cur, &g, &unlooked)) < 0) {
		goto out;
	}
	*gensp = g.v;
	*np = g.n;
	g.v = NULL;
	if (unlookedp)
		*unlookedp = unlooked;
	rc = 0;
out:
	free(g.v);
	return rc;
}
