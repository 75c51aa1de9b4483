/* aws.h — AWS configuration the way the AWS tools read it, s3:// URLs and
 * the canonical URL encoding SigV4 signs (libcurl signs, but neither sorts
 * nor encodes the query, so the URL must already be canonical).
 *
 * Where each setting comes from, first found wins:
 *   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *                else the profile's aws_access_key_id / aws_secret_access_key
 *                (/ aws_session_token) in the credentials file ([NAME]), then
 *                in the config file ([profile NAME], [default]); else none:
 *                requests go unsigned (public buckets)
 *   profile      AWS_PROFILE, else AWS_DEFAULT_PROFILE, else "default"
 *   files        AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials),
 *                AWS_CONFIG_FILE (~/.aws/config)
 *   region       AWS_REGION, AWS_DEFAULT_REGION, the profile's region, us-east-1
 *   endpoint     AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's
 *                endpoint_url; else AWS itself.  Path-style addressing on
 *                an endpoint (http://HOST/BUCKET/KEY), virtual-hosted on AWS
 *                (https://BUCKET.s3.REGION.amazonaws.com/KEY; path-style for
 *                a bucket name with a dot, which TLS cannot match)
 *   CA bundle    AWS_CA_BUNDLE, the profile's ca_bundle; else curl's default
 * Indented sub-settings in the config file (a "s3 =" block) are not read.
 * Pure functions over the environment and the files: no network, no locks.
 */
#ifndef BLKMAP_CLIENT_AWS_H
#define BLKMAP_CLIENT_AWS_H

#include <stdbool.h>
#include <stddef.h>

struct bm_aws {
	char *access_key;          /* NULL: unsigned requests */
	char *secret_key;
	char *session_token;       /* NULL if none */
	char *region;
	char *endpoint;            /* scheme://host[:port][/path], no trailing '/'; NULL: AWS */
	char *ca_bundle;           /* NULL: curl's default */
	char *profile;             /* the profile name looked up */
	char source[512];          /* where the credentials came from, for messages */
};

/* Reads the configuration.  0, or BM_EINVAL with one line in msg (a file
 * that cannot be read or parsed, an access key without its secret, an
 * AWS_PROFILE that names no profile, an endpoint that is not a URL).
 * Never puts a secret in msg. */
int bm_aws_load(struct bm_aws *a, char *msg, size_t n);
void bm_aws_free(struct bm_aws *a);
/* "access key AKIA... from <source>, region R, endpoint E" (or "no
 * credentials (unsigned requests), ..."): what was used, for messages;
 * never the secret. */
void bm_aws_describe(const struct bm_aws *a, char *out, size_t n);

/* Splits "s3://BUCKET[/PREFIX]" into malloc'd *bucketp and *prefixp (""
 * if none; no leading or trailing '/').  0, or BM_EINVAL with msg. */
int bm_s3_url_parse(const char *url, char **bucketp, char **prefixp, char *msg, size_t n);
bool bm_s3_is_url(const char *url);

/* Appends s to out (NUL-terminated, capacity cap) encoded as SigV4 wants:
 * every byte but A-Z a-z 0-9 - . _ ~ as %XX (uppercase hex), '/' kept when
 * keep_slash.  false if it did not fit. */
bool bm_uri_encode(char *out, size_t cap, const char *s, bool keep_slash);

/* The URL of key in bucket (key may be "" for the bucket itself), with
 * query (already canonical, without '?'; NULL or "" for none).  Malloc'd;
 * NULL when out of memory. */
char *bm_s3_url(const struct bm_aws *a, const char *bucket, const char *key, const char *query);

/* A canonical query string from n name/value pairs (kv[2i], kv[2i+1];
 * a NULL value is left out): sorted by name, each encoded.  Malloc'd. */
char *bm_s3_query(const char *const *kv, size_t n);

#endif
