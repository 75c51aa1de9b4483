/* diff.c — bm_diff, what `blkmap diff` lists: the block ranges whose
 * content differs between two kept generations (or tags) of a dataset,
 * read straight from the store (generation.c): version 2 descends only
 * where index page sums differ, version 1 compares the block tables.
 * Owns: nothing beyond a call.  Locking: none.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generation.h"
#include "tags.h"

/* "N" (a generation) or a tag name; NULL or "" the latest (0). */
static int resolve(struct bm_store *s, const char *at, uint64_t *gen, char *msg, size_t n)
{
	char *end;

	*gen = 0;
	if (at == NULL || at[0] == '\0')
		return 0;
	if (at[0] >= '0' && at[0] <= '9') {
		unsigned long long v = strtoull(at, &end, 10);
		if (*end == '\0') {
			if (v == 0 || v > BM_GEN_MAX) {
				bm_fmt(msg, n, "%s: generation %s is out of range", s->url, at);
				return BM_EINVAL;
			}
			*gen = v;
			return 0;
		}
	}
	if (!bm_tag_name_valid(at)) {
		bm_fmt(msg, n, "\"%s\" is neither a generation number nor a tag name", at);
		return BM_EINVAL;
	}
	return bm_tags_resolve(s, at, gen, msg, n);
}

static int read_at(struct bm_store *s, uint64_t gen, struct bm_gen *g, char *msg, size_t n)
{
	int rc = bm_gen_read(s, gen, g, msg, n);

	if (rc == BM_ENOTFOUND && gen != 0) {
		/* The latest may not be kept yet. */
		rc = bm_gen_read(s, 0, g, msg, n);
		if (rc == 0 && g->generation != gen) {
			bm_gen_free(g);
			bm_fmt(msg, n, "%s: generation %" PRIu64 " is not kept", s->url, gen);
			return BM_ENOTFOUND;
		}
	}
	/* No manifest.json, whichever generation was asked for. */
	if (rc == BM_ENOTFOUND)
		bm_fmt(msg, n, "%s: no dataset here (no %s)", s->url, BM_KEY_MANIFEST);
	return rc;
}

struct emit_ctx {
	int (*fn)(void *arg, uint64_t first, uint64_t count);
	void *arg;
};

static int emit_range(void *arg, uint64_t first, uint64_t count)
{
	struct emit_ctx *e = arg;
	return e->fn(e->arg, first, count);
}

int bm_diff(const char *url, const struct bm_options *opt, const char *a, const char *b,
	    struct bm_diff_info *info, int (*fn)(void *arg, uint64_t first, uint64_t count), void *arg)
{
	struct bm_store *s = NULL;
	struct bm_gen ga = { 0 }, gb = { 0 };
	struct emit_ctx e = { .fn = fn, .arg = arg };
	uint64_t na, nb;
	char msg[1024] = "";
	int rc;

	memset(info, 0, sizeof(*info));
	if ((rc = bm_gen_store_open(&s, url, opt, msg, sizeof(msg))) < 0 ||
	    (rc = resolve(s, a, &na, msg, sizeof(msg))) < 0 || (rc = resolve(s, b, &nb, msg, sizeof(msg))) < 0 ||
	    (rc = read_at(s, na, &ga, msg, sizeof(msg))) < 0 || (rc = read_at(s, nb, &gb, msg, sizeof(msg))) < 0)
		goto out;
	info->generation_a = ga.generation;
	info->generation_b = gb.generation;
	info->size_a = ga.size;
	info->size_b = gb.size;
	info->blksize = ga.blksize;
	rc = bm_gen_diff(s, &ga, &gb, emit_range, &e, msg, sizeof(msg));
out:
	if (rc < 0)
		bm_set_thread_error(msg[0] ? msg : bm_strerror(rc));
	bm_gen_free(&ga);
	bm_gen_free(&gb);
	bm_store_close(s);
	return rc;
}
