/* listing.c — bm_list_keys: the keys under a store URL, for callers that
 * hold no dataset (the wcfs mirror's directory listings): a store opened
 * for the call, listed page by page through bm_store_list (blkmap-server's
 * JSON, WebDAV PROPFIND, S3 ListObjectsV2).
 * Owns: nothing across calls.  Locking: none (the store is the call's own).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store.h"

int bm_list_keys(const char *url, const struct bm_options *opt, const char *prefix,
		 int (*fn)(const char *key, uint64_t size, void *arg), void *arg)
{
	struct bm_options defaults;
	struct bm_store *s = NULL;
	char msg[1024] = "", *token = NULL;
	int rc;

	if (opt == NULL) {
		if ((rc = bm_options_init(&defaults)) < 0)
			return rc;
		opt = &defaults;
	}
	struct bm_store_opts so = {
		.token = opt->token,
		.connect_timeout_ms = opt->connect_timeout_ms,
		.timeout_ms = opt->timeout_ms,
		.retry_base_ms = opt->retry_base_ms,
		.retries = opt->retries,
		.connections = 1,
		.verbose = opt->verbose,
	};
	if ((rc = bm_store_open(&s, url, &so, msg, sizeof(msg))) < 0)
		goto out;
	/* An HTTP store learns from its first answer whether the server
	 * lists (store_http.c): ask for the base once. */
	if (!(bm_store_caps(s) & BM_CAP_LIST)) {
		struct bm_version v;
		char why[512];
		rc = bm_store_head(s, "", &v, why, sizeof(why));
		if (rc == BM_EAUTH || rc == BM_EHTTP) {
			bm_fmt(msg, sizeof(msg), "%s", why);
			goto out;
		}
	}
	do {
		struct bm_list page;
		rc = bm_store_list(s, prefix, token, &page, msg, sizeof(msg));
		free(token);
		token = NULL;
		if (rc < 0)
			break;
		for (size_t i = 0; i < page.n && rc == 0; i++)
			if (fn(page.entries[i].key, page.entries[i].size, arg) != 0)
				rc = 1; /* stopped */
		if (rc == 0 && page.next && (token = strdup(page.next)) == NULL)
			rc = BM_ENOMEM;
		bm_list_free(&page);
	} while (rc == 0 && token);
	if (rc == 1)
		rc = 0;
out:
	free(token);
	if (rc < 0)
		bm_set_thread_error(msg[0] ? msg : bm_strerror(rc));
	bm_store_close(s);
	return rc;
}
