/* tests/fuzz/fuzz_list.c — libFuzzer target for the mirror's directory
 * listing (wcfs/listing.c): the keys a server lists below a directory, as
 * blkmap-wcfs turns them into the children it shows for readdir.  The
 * input is blkmap-server's JSON listing ("objects" keys, "prefix" the
 * directory's), the keys in the order given; an input starting
 * "@<gen>\n" is the listing of view @<gen> (a kept generation), anything
 * else of the head view.  (The store's own listing parsers, client/, are
 * not driven here.)
 * Properties: each child is told once, with a name the mirror accepts,
 * and the children told are exactly those the keys say (checked against a
 * plain re-reading of the keys: a dataset <child>/<file> is a file, a
 * dataset further below makes a directory), in whatever order the keys
 * come.
 * Locking: none. */
#include "config.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>

#include "../../wcfs/wcfs.h"
#include "fuzz.h"

#define MAX_TOLD 512

struct told {
	char *name[MAX_TOLD];
	bool is_file[MAX_TOLD];
	size_t n;
	bool overflow;
};

static void tell(const char *name, bool is_file, void *arg)
{
	struct told *t = arg;

	if (t->n == MAX_TOLD) {
		t->overflow = true;
		return;
	}
	t->is_file[t->n] = is_file;
	if ((t->name[t->n++] = strdup(name)) == NULL)
		fuzz_fail("out of memory");
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* What the keys say of child name c: 2 a dataset, 1 datasets below it,
 * 0 nothing, read key by key with no grouping. */
static int oracle(json_t *objs, const char *prefix, const char *c, const char *file)
{
	size_t pl = strlen(prefix), cl = strlen(c), fl = strlen(file), i;
	int what = 0;
	json_t *o;

	json_array_foreach(objs, i, o) {
		const char *key = json_string_value(json_object_get(o, "key"));
		if (key == NULL)
			continue;
		size_t kl = strlen(key);
		if (kl < pl + cl + 1 || memcmp(key, prefix, pl) != 0 || memcmp(key + pl, c, cl) != 0 ||
		    key[pl + cl] != '/')
			continue;
		const char *rest = key + pl + cl + 1;
		size_t rl = kl - pl - cl - 1;
		if (rl == fl && memcmp(rest, file, fl) == 0)
			return 2;
		if (rl > fl && rest[rl - fl - 1] == '/' && ends_with(rest, rl, file))
			what = 1;
	}
	return what;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct told t;
	const char *body = (const char *)data;
	size_t len = size;
	uint64_t gen = 0;
	char file[64];

	if (size > 2 && data[0] == '@') {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t i;
		for (i = 1; nl && data + i < nl && data[i] >= '0' && data[i] <= '9' && i < 19; i++)
			gen = gen * 10 + (uint64_t)(data[i] - '0');
		if (nl == NULL || data + i != nl)
			gen = 0;
		else {
			body = (const char *)nl + 1;
			len = size - (size_t)(nl + 1 - data);
		}
	}
	if (gen == 0)
		snprintf(file, sizeof(file), "manifest.json");
	else
		snprintf(file, sizeof(file), "gen/%" PRIu64 ".json", gen);

	t.n = 0;
	t.overflow = false;
	json_t *j = json_loadb(body, len, 0, NULL), *objs = json_object_get(j, "objects"), *o;
	const char **keys = NULL;
	size_t nkeys = 0;
	int count;
	if (!json_is_array(objs))
		goto out; /* not a listing: the mirror does not list then */
	const char *prefix = json_string_value(json_object_get(j, "prefix"));
	if (prefix == NULL)
		prefix = "";
	/* What bm_list_keys hands the mirror: the keys below the directory;
	 * list.c cuts the directory's prefix. */
	keys = malloc((json_array_size(objs) + 1) * sizeof(*keys));
	if (keys == NULL)
		fuzz_fail("out of memory");
	size_t i;
	json_array_foreach(objs, i, o) {
		const char *key = json_string_value(json_object_get(o, "key"));
		if (key != NULL && strncmp(key, prefix, strlen(prefix)) == 0)
			keys[nkeys++] = key + strlen(prefix);
	}
	count = wc_children(keys, nkeys, gen, tell, &t);
	if (t.overflow)
		goto out; /* too many children to check one by one */
	if (count < 0 || (size_t)count != t.n)
		fuzz_fail("a listing gave %d, yet %zu children were told", count, t.n);
	for (i = 0; i < t.n; i++) {
		if (!wc_name_ok(t.name[i]))
			fuzz_fail("child '%s' is not a name the mirror accepts", t.name[i]);
		for (size_t k = 0; k < i; k++)
			if (strcmp(t.name[k], t.name[i]) == 0)
				fuzz_fail("child '%s' told twice", t.name[i]);
		int what = oracle(objs, prefix, t.name[i], file);
		if (what == 0 || (what == 2) != t.is_file[i])
			fuzz_fail("child '%s' told as %s, yet the keys say %s", t.name[i],
				  t.is_file[i] ? "a dataset" : "a directory",
				  what == 2 ? "a dataset" : what ? "a directory" : "nothing");
	}
	/* Nothing the keys name is left out. */
	json_array_foreach(objs, i, o) {
		const char *key = json_string_value(json_object_get(o, "key"));
		size_t pl = strlen(prefix);
		if (key == NULL || strncmp(key, prefix, pl) != 0)
			continue;
		const char *rel = key + pl, *slash = strchr(rel, '/');
		char c[300];
		if (slash == NULL || (size_t)(slash - rel) >= sizeof(c))
			continue;
		memcpy(c, rel, (size_t)(slash - rel));
		c[slash - rel] = '\0';
		if (!wc_name_ok(c) || oracle(objs, prefix, c, file) == 0)
			continue;
		bool found = false;
		for (size_t k = 0; k < t.n && !found; k++)
			found = strcmp(t.name[k], c) == 0;
		if (!found)
			fuzz_fail("child '%s' of key '%s' was not told", c, key);
	}
out:
	free(keys);
	for (size_t k = 0; k < t.n; k++)
		free(t.name[k]);
	json_decref(j);
	return 0;
}
