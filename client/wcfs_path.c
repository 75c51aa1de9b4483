/* wcfs_path.c — naming shared by the wcfs mirror and the client: the
 * normalized server URL and the default mountpoint derived from it.
 * Locking: none (pure functions).
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bm_xxhash.h"

#include "internal.h"

int bm_wcfs_normalize_url(const char *server_url, char *out, size_t n)
{
	const char *p = strstr(server_url ? server_url : "", "://");
	size_t len, i;

	if (p == NULL || bm_url_scheme_len(server_url, "http") + bm_url_scheme_len(server_url, "https") +
				 bm_url_scheme_len(server_url, "s3") == 0)
		return BM_EINVAL;
	len = strlen(server_url);
	while (len > (size_t)(p - server_url) + 3 && server_url[len - 1] == '/')
		len--;
	if (len + 1 > n)
		return BM_EINVAL;
	/* Scheme and host are case-insensitive; the path is not. */
	const char *host_end = strchr(p + 3, '/');
	size_t lower_upto = host_end ? (size_t)(host_end - server_url) : len;
	for (i = 0; i < len; i++)
		out[i] = i < lower_upto ? (char)tolower((unsigned char)server_url[i]) : server_url[i];
	out[len] = '\0';
	return 0;
}

int bm_wcfs_default_mountpoint(const char *server_url, char *out, size_t n)
{
	/* Normalizing never lengthens: any URL that normalizes has a
	 * mountpoint, however long (a fixed buffer refused long ones that
	 * the mirror accepts). */
	size_t cap = server_url ? strlen(server_url) + 1 : 1;
	char *norm = malloc(cap);
	int rc;

	if (norm == NULL)
		return BM_ENOMEM;
	rc = bm_wcfs_normalize_url(server_url, norm, cap);
	if (rc == 0) {
		unsigned long long h = bm_xxh3_64(norm, strlen(norm));
		if ((size_t)snprintf(out, n, "/dev/shm/blkmap-wcfs/%016llx", h) >= n)
			rc = BM_EINVAL;
	}
	free(norm);
	return rc;
}
