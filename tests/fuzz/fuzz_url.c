/* tests/fuzz/fuzz_url.c — libFuzzer target for URL handling: the
 * normalized server URL and default mountpoint the client and the wcfs
 * mirror agree on (client/wcfs_path.c), bm_open's refusal of what is not an
 * http(s) or s3 URL (s3:// inputs are opened against an endpoint on a
 * loopback port where nothing listens), and bm_open of a dataset whose
 * path is the input, on a
 * loopback port where nothing listens.  Properties: normalizing is
 * idempotent, never lengthens, leaves no trailing '/'; equivalent URLs get
 * one mountpoint; bm_open fails cleanly with a message, one line unless
 * the input itself has a line break.  Locking: none. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <blkmap/blkmap.h>

#include "fuzz.h"

#define MAX_URL 4096

static void check_message(const char *what, const char *input)
{
	const char *msg = bm_last_error(NULL);

	if (msg == NULL || msg[0] == '\0')
		fuzz_fail("%s '%s': failed without a message", what, input);
	if (strchr(msg, '\n') && !strchr(input, '\n'))
		fuzz_fail("%s '%s': the message is not one line: '%s'", what, input, msg);
}

static void check_normalize(const char *url)
{
	static char norm[MAX_URL + 64], again[MAX_URL + 64];
	char mnt[256], mnt_norm[256];
	int rc = bm_wcfs_normalize_url(url, norm, sizeof(norm));

	if (rc < 0) {
		if (rc != BM_EINVAL)
			fuzz_fail("bm_wcfs_normalize_url('%s') = %d, not BM_EINVAL", url, rc);
		if (bm_wcfs_default_mountpoint(url, mnt, sizeof(mnt)) == 0)
			fuzz_fail("'%s' has a default mountpoint but no normalized form", url);
		return;
	}
	size_t len = strlen(norm);
	if (len > strlen(url))
		fuzz_fail("normalizing '%s' lengthened it to '%s'", url, norm);
	const char *host = strstr(norm, "://");
	if (host == NULL || (strncmp(norm, "http", 4) != 0 && strncmp(norm, "s3://", 5) != 0))
		fuzz_fail("'%s' normalized to '%s', not an http or s3 URL", url, norm);
	if (len > (size_t)(host - norm) + 3 && norm[len - 1] == '/')
		fuzz_fail("'%s' normalized to '%s', with a trailing '/'", url, norm);
	if (bm_wcfs_normalize_url(norm, again, sizeof(again)) != 0 || strcmp(norm, again) != 0)
		fuzz_fail("normalizing is not idempotent: '%s' -> '%s' -> '%s'", url, norm, again);
	if (bm_wcfs_default_mountpoint(url, mnt, sizeof(mnt)) != 0 ||
	    bm_wcfs_default_mountpoint(norm, mnt_norm, sizeof(mnt_norm)) != 0)
		fuzz_fail("'%s' normalizes but has no default mountpoint", url);
	if (strcmp(mnt, mnt_norm) != 0)
		fuzz_fail("'%s' and its normal form '%s' have two mountpoints: %s, %s", url, norm, mnt,
			  mnt_norm);
	if (strncmp(mnt, "/dev/shm/blkmap-wcfs/", 21) != 0 || strlen(mnt) != 21 + 16 ||
	    strspn(mnt + 21, "0123456789abcdef") != 16)
		fuzz_fail("'%s': default mountpoint '%s' is not /dev/shm/blkmap-wcfs/<16 hex>", url, mnt);
}

static void check_open(const char *url, int must_refuse)
{
	struct bm_options o;
	bm_dataset *ds = (bm_dataset *)&o;  /* must become NULL */

	if (bm_options_init(&o) < 0)
		fuzz_fail("bm_options_init: %s", bm_last_error(NULL));
	o.retries = 0;
	o.connections = 1;
	o.connect_timeout_ms = 2000;
	o.timeout_ms = 2000;
	o.cache_bytes = 1 << 20;
	o.spare_bytes = 0;
	o.wcfs = "off";
	int rc = bm_open(&ds, url, &o);
	if (rc == 0)
		fuzz_fail("bm_open('%s') succeeded with no server there", url);
	if (ds != NULL)
		fuzz_fail("bm_open('%s') failed (%d) but left a dataset", url, rc);
	if (must_refuse && rc != BM_EINVAL)
		fuzz_fail("bm_open('%s') = %d, not BM_EINVAL", url, rc);
	check_message("bm_open", url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char url[MAX_URL + 1], on_loopback[MAX_URL + 64];
	static int env_set;

	if (size > MAX_URL)
		return 0;
	memcpy(url, data, size);
	url[size] = '\0';  /* a C string: the input up to its first NUL */
	if (!env_set) {
		/* s3:// inputs go to a loopback port where nothing listens,
		 * unsigned, whatever this machine's AWS setup says. */
		setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1", 1);
		setenv("AWS_CONFIG_FILE", "/dev/null", 1);
		setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null", 1);
		unsetenv("AWS_ACCESS_KEY_ID");
		unsetenv("AWS_SECRET_ACCESS_KEY");
		unsetenv("AWS_SESSION_TOKEN");
		unsetenv("AWS_PROFILE");
		env_set = 1;
	}
	check_normalize(url);
	/* Schemes are case-insensitive (S3://, HTTP://). */
	if (strncasecmp(url, "s3://", 5) == 0) {
		check_open(url, 0);
	} else if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
		check_open(url, 1);
	} else if (strncasecmp(url, "http://127.0.0.1:1/", 19) == 0) {
		check_open(url, 0);
	}
	/* The input as a dataset path on a port where nothing listens. */
	snprintf(on_loopback, sizeof(on_loopback), "http://127.0.0.1:1/%s", url);
	check_open(on_loopback, 0);
	return 0;
}
