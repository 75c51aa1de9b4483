/* listing.c — what a server's listing says lies in a directory of the
 * mirror: from the keys under the directory (untrusted, in any order), the
 * children that are datasets of a generation or lie above one, and the
 * name rule every path component of the mirror obeys (wc_name_ok).  Pure
 * functions, no I/O and no global state: list.c fetches the keys, this
 * file makes them children, and tests/fuzz/fuzz_list drives it.
 * Owns: nothing across calls.  Locking: none.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wcfs.h"

bool wc_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 255 || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && !strcmp(s + n - k, suffix);
}

static int compare_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int wc_children(const char **keys, size_t n, uint64_t gen,
		void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	char file_key[64], below_key[80], child[256] = "";
	bool have = false, child_file = false, child_below = false;
	int count = 0;

	/* A dataset D of view gen has key D/manifest.json (head) or
	 * D/gen/<gen>.json (a kept generation). */
	if (gen == 0)
		snprintf(file_key, sizeof(file_key), "manifest.json");
	else
		snprintf(file_key, sizeof(file_key), "gen/%" PRIu64 ".json", gen);
	snprintf(below_key, sizeof(below_key), "/%s", file_key);
	/* The listing is untrusted: sorted here, the keys under one child are
	 * consecutive whatever order they came in, so each child is told once. */
	if (n > 1)
		qsort(keys, n, sizeof(*keys), compare_keys);
	for (size_t i = 0; i <= n; i++) {
		const char *rel = i < n ? keys[i] : NULL, *slash = rel ? strchr(rel, '/') : NULL;
		if (rel != NULL && (slash == NULL || (size_t)(slash - rel) >= sizeof(child)))
			continue;
		size_t len = rel ? (size_t)(slash - rel) : 0;
		if (rel == NULL || !have || strncmp(child, rel, len) != 0 || child[len] != '\0') {
			if (have && (child_file || child_below) && wc_name_ok(child)) {
				fn(child, child_file, arg);
				count++;
			}
			if (rel == NULL)
				break;
			memcpy(child, rel, len);
			child[len] = '\0';
			have = true;
			child_file = child_below = false;
		}
		if (!strcmp(slash + 1, file_key))
			child_file = true;
		else if (ends_with(slash + 1, below_key))
			child_below = true;
	}
	return count;
}
