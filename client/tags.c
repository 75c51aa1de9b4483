/* tags.c — named generations: the dataset's tag list U/tags.json
 * ({"format": "blkmap-tags", "tags": {"name": N, ...}}), read and changed
 * with a compare-and-swap like the manifest, and the public bm_tag_set,
 * bm_tag_delete and bm_tags_list.  A tag write is a writer for gc: it
 * takes the gc guard (gcmark.c), so that a gc never drops a generation a
 * tag is being pointed at (docs/FORMAT.md, "Tags").
 * Owns: nothing beyond a call.  Locking: none.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "gcmark.h"
#include "generation.h"
#include "tags.h"

#define TAGS_MAX ((size_t)1 << 20)
/* A tag write that loses the race waits a random while (up to twice as
 * long each time: writers that lost together spread out) and reads and
 * tries again. */
#define TAGS_TRIES 16
#define TAGS_BACKOFF_MS 2
#define TAGS_BACKOFF_MAX_MS 250

/* Not all digits, so that "--at 12" is always a generation. */
int bm_tag_name_valid(const char *name)
{
	size_t len = strlen(name);
	bool digits = true;

	if (len == 0 || len > BM_TAG_NAME_MAX || name[0] == '.' || name[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
		if (c < '0' || c > '9')
			digits = false;
	}
	return !digits;
}

/* The tag list as read: obj (a new empty one when there is none). */
struct tags {
	json_t *obj;               /* the "tags" object */
	json_t *doc;
	bool exists;
	char etag[BM_ETAG_SIZE];
	char *bytes;
	size_t len;
};

static void tags_free(struct tags *t)
{
	json_decref(t->doc);
	free(t->bytes);
	memset(t, 0, sizeof(*t));
}

static int tags_read(struct bm_store *s, struct tags *t, char *msg, size_t n)
{
	struct bm_version v;
	json_error_t jerr;
	int rc;

	memset(t, 0, sizeof(*t));
	rc = bm_store_get_all(s, BM_KEY_TAGS, TAGS_MAX, &t->bytes, &t->len, &v, msg, n);
	if (rc == BM_ENOTFOUND) {
		t->doc = json_pack("{s:s, s:{}}", "format", "blkmap-tags", "tags");
		t->obj = json_object_get(t->doc, "tags");
		return t->doc ? 0 : BM_ENOMEM;
	}
	if (rc < 0)
		return rc;
	t->exists = true;
	snprintf(t->etag, sizeof(t->etag), "%s", v.etag);
	t->doc = json_loadb(t->bytes, t->len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *f = json_object_get(t->doc, "format");
	t->obj = json_object_get(t->doc, "tags");
	const char *why = NULL;
	if (!json_is_object(t->doc) || !json_is_string(f) || strcmp(json_string_value(f), "blkmap-tags") != 0)
		why = "not a tag list (want {\"format\": \"blkmap-tags\", \"tags\": {...}})";
	else if (!json_is_object(t->obj))
		why = "\"tags\" is not an object";
	const char *name;
	json_t *val;
	if (why == NULL)
		json_object_foreach(t->obj, name, val) {
			if (!bm_tag_name_valid(name)) {
				why = "a tag name is not valid";
				break;
			}
			if (!json_is_integer(val) || json_integer_value(val) < 1 ||
			    (uint64_t)json_integer_value(val) > BM_GEN_MAX) {
				why = "a tag's generation is not an integer from 1 to 2^53";
				break;
			}
		}
	if (why) {
		char *key = bm_store_name(s, BM_KEY_TAGS);
		bm_fmt(msg, n, "%s: %s", key ? key : BM_KEY_TAGS, why);
		free(key);
		tags_free(t);
		return BM_EFORMAT;
	}
	return 0;
}

static int tags_write(struct bm_store *s, struct tags *t, char *msg, size_t n)
{
	struct bm_put p = {
		.cond = !t->exists ? BM_PUT_IF_NONE : t->etag[0] ? BM_PUT_IF_MATCH : BM_PUT_ANY,
		.etag = t->etag,
		.was = t->bytes,
		.was_len = t->len,
		.swap = true,
	};
	char *json = json_dumps(t->doc, JSON_COMPACT | JSON_SORT_KEYS);
	int rc;

	if (json == NULL)
		return BM_ENOMEM;
	rc = bm_store_put(s, BM_KEY_TAGS, json, strlen(json), &p, NULL, msg, n);
	free(json);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int bm_tags_each(struct bm_store *s, int (*fn)(void *arg, const char *name, uint64_t gen), void *arg,
		 char *msg, size_t n)
{
	struct tags t;
	const char *name;
	json_t *val;
	size_t k = 0;
	int rc = tags_read(s, &t, msg, n);

	if (rc < 0)
		return rc;
	const char **names = calloc(json_object_size(t.obj) + 1, sizeof(*names));
	if (names == NULL) {
		tags_free(&t);
		return BM_ENOMEM;
	}
	json_object_foreach(t.obj, name, val) names[k++] = name;
	qsort(names, k, sizeof(*names), cmp_str);
	for (size_t i = 0; i < k && rc == 0; i++)
		rc = fn(arg, names[i], (uint64_t)json_integer_value(json_object_get(t.obj, names[i])));
	free(names);
	tags_free(&t);
	return rc;
}

int bm_tags_resolve(struct bm_store *s, const char *name, uint64_t *gen, char *msg, size_t n)
{
	struct tags t;
	int rc = tags_read(s, &t, msg, n);

	if (rc < 0)
		return rc;
	json_t *v = json_object_get(t.obj, name);
	if (v == NULL) {
		bm_fmt(msg, n, "%s: no tag \"%s\" (see blkmap tags)", s->url, name);
		rc = BM_ENOTFOUND;
	} else {
		*gen = (uint64_t)json_integer_value(v);
	}
	tags_free(&t);
	return rc;
}

/* ---- the public calls ------------------------------------------------------------- */

/* The guard's view of what a tag publishes: the generation's manifest. */
static int tag_keys(void *arg, bm_gc_visit_fn visit, void *varg)
{
	return visit(varg, (const char *)arg);
}

/* Sleeps a random time in [0, TAGS_BACKOFF_MS << tries], capped. */
static void backoff(int tries, unsigned *seed)
{
	long ms = TAGS_BACKOFF_MS;
	for (int i = 0; i < tries && ms < TAGS_BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > TAGS_BACKOFF_MAX_MS)
		ms = TAGS_BACKOFF_MAX_MS;
	ms = (long)((unsigned)rand_r(seed) % (unsigned)(ms + 1));
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int tag_change(const char *url, const struct bm_options *opt, const char *name, uint64_t gen,
		      bool del, uint64_t *tagged)
{
	unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
	struct bm_store *s = NULL;
	struct bm_gc_guard guard = { 0 };
	char msg[1024] = "", key[BM_KEY_GEN_SIZE];
	struct tags t = { 0 };
	int rc;

	if (!bm_tag_name_valid(name)) {
		bm_fmt(msg, sizeof(msg), "\"%s\" is not a tag name: 1 to %d of A-Z a-z 0-9 . _ -, not starting "
					 "with . or -, not all digits", name, BM_TAG_NAME_MAX);
		rc = BM_EINVAL;
		goto out;
	}
	if ((rc = bm_gen_store_open(&s, url, opt, msg, sizeof(msg))) < 0)
		goto out;
	if (!del) {
		struct bm_gen latest;
		struct bm_version v;
		if ((rc = bm_gc_guard_begin(s, &guard, msg, sizeof(msg))) < 0)
			goto out;
		rc = bm_gen_read(s, 0, &latest, msg, sizeof(msg));
		if (rc == BM_ENOTFOUND)
			bm_fmt(msg, sizeof(msg), "%s: no dataset here (no %s)", s->url, BM_KEY_MANIFEST);
		if (rc < 0)
			goto out;
		if (gen == 0)
			gen = latest.generation;
		bm_gen_free(&latest);
		bm_key_gen(key, gen);
		rc = bm_store_head(s, key, &v, msg, sizeof(msg));
		if (rc == BM_ENOTFOUND)
			bm_fmt(msg, sizeof(msg), "%s: generation %" PRIu64 " is not kept (no %s)", s->url, gen, key);
		if (rc < 0)
			goto out;
	}
	for (int tries = 0;; tries++) {
		if ((rc = tags_read(s, &t, msg, sizeof(msg))) < 0)
			goto out;
		if (del) {
			if (json_object_del(t.obj, name) < 0) {
				bm_fmt(msg, sizeof(msg), "%s: no tag \"%s\"", s->url, name);
				rc = BM_ENOTFOUND;
				goto out;
			}
		} else if (json_object_set_new(t.obj, name, json_integer((json_int_t)gen)) < 0) {
			rc = BM_ENOMEM;
			goto out;
		}
		/* A gc that ran since we looked may have dropped the
		 * generation: the guard waits for it and checks. */
		if (!del && (rc = bm_gc_guard_check(s, &guard, tag_keys, key, msg, sizeof(msg))) < 0) {
			if (rc == BM_ECONFLICT)
				bm_fmt(msg, sizeof(msg), "%s: a concurrent gc dropped generation %" PRIu64, s->url, gen);
			goto out;
		}
		rc = tags_write(s, &t, msg, sizeof(msg));
		if (rc != BM_ECONFLICT || tries + 1 == TAGS_TRIES)
			break;
		tags_free(&t);
		backoff(tries, &seed);
	}
	if (rc == BM_ECONFLICT)
		bm_fmt(msg, sizeof(msg), "%s: the tag list kept changing under other writers", s->url);
	if (rc == 0 && tagged)
		*tagged = gen;
out:
	if (rc < 0)
		bm_set_thread_error(msg[0] ? msg : bm_strerror(rc));
	tags_free(&t);
	bm_store_close(s);
	return rc;
}

int bm_tag_set(const char *url, const struct bm_options *opt, const char *name, uint64_t gen,
	       uint64_t *tagged)
{
	return tag_change(url, opt, name, gen, false, tagged);
}

int bm_tag_delete(const char *url, const struct bm_options *opt, const char *name)
{
	return tag_change(url, opt, name, 0, true, NULL);
}

int bm_tags_list(const char *url, const struct bm_options *opt,
		 int (*fn)(void *arg, const char *name, uint64_t gen), void *arg)
{
	struct bm_store *s = NULL;
	char msg[1024] = "";
	int rc = bm_gen_store_open(&s, url, opt, msg, sizeof(msg));

	if (rc == 0)
		rc = bm_tags_each(s, fn, arg, msg, sizeof(msg));
	if (rc < 0)
		bm_set_thread_error(msg[0] ? msg : bm_strerror(rc));
	bm_store_close(s);
	return rc;
}
