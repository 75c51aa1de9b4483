/* aws.c — AWS configuration (environment, ~/.aws/credentials and
 * ~/.aws/config with profiles), s3:// URLs, and the canonical encoding of
 * keys and query strings that SigV4 signs.  See aws.h for the precedence.
 * Owns struct bm_aws and the INI reading; no I/O but reading the two files,
 * no global state, no locks.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws.h"
#include "internal.h"

#define AWS_DEFAULT_REGION "us-east-1"
#define INI_LINE_MAX 4096

/* ---- small strings ------------------------------------------------------------ */

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* Replaces *dst with a copy of v (v may be NULL: keeps *dst).  -1 when out
 * of memory. */
static int set(char **dst, const char *v)
{
	char *c;

	if (v == NULL)
		return 0;
	c = strdup(v);
	if (c == NULL)
		return -1;
	free(*dst);
	*dst = c;
	return 0;
}

/* ---- INI files ------------------------------------------------------------------ */

/* What one profile's section holds: the settings we read. */
struct profile_vals {
	char *access_key, *secret_key, *session_token, *region, *endpoint, *ca_bundle;
	bool found;                /* the section exists */
};

static void profile_vals_free(struct profile_vals *v)
{
	free(v->access_key);
	free(v->secret_key);
	free(v->session_token);
	free(v->region);
	free(v->endpoint);
	free(v->ca_bundle);
	memset(v, 0, sizeof(*v));
}

/* Whether the section header h (the text between [ and ]) is profile's:
 * in the credentials file "[NAME]"; in the config file "[profile NAME]",
 * or "[default]" for the profile "default". */
static bool section_is(const char *h, const char *profile, bool config)
{
	if (!config || strcmp(profile, "default") == 0)
		if (strcmp(h, profile) == 0)
			return true;
	if (config && strncmp(h, "profile", 7) == 0 && (h[7] == ' ' || h[7] == '\t')) {
		const char *name = h + 8;
		while (*name == ' ' || *name == '\t')
			name++;
		return strcmp(name, profile) == 0;
	}
	return false;
}

/* Reads profile's section of path into v.  A missing file is no error (0,
 * v->found false); a file that cannot be read or a line that is neither a
 * section, a setting, a comment nor blank is BM_EINVAL with msg. */
static int ini_read(const char *path, const char *profile, bool config, struct profile_vals *v,
		    char *msg, size_t n)
{
	char line[INI_LINE_MAX];
	bool in = false;
	int lineno = 0, rc = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		bm_fmt(msg, n, "AWS %s file %s: %s", config ? "config" : "credentials", path,
		       strerror(errno));
		return BM_EINVAL;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *key, *val, **dst = NULL;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			bm_fmt(msg, n, "%s:%d: line longer than %d bytes", path, lineno, INI_LINE_MAX - 2);
			rc = BM_EINVAL;
			break;
		}
		/* An indented line belongs to a nested setting ("s3 =" block):
		 * not read (aws.h). */
		if (line[0] == ' ' || line[0] == '\t')
			continue;
		s = trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (end == NULL || *trim(end + 1) != '\0') {
				bm_fmt(msg, n, "%s:%d: a section header needs a closing ']'", path, lineno);
				rc = BM_EINVAL;
				break;
			}
			*end = '\0';
			in = section_is(trim(s + 1), profile, config);
			if (in)
				v->found = true;
			continue;
		}
		eq = strchr(s, '=');
		if (eq == NULL) {
			bm_fmt(msg, n, "%s:%d: expected \"name = value\", a [section] or a comment",
			       path, lineno);
			rc = BM_EINVAL;
			break;
		}
		if (!in)
			continue;
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (!strcmp(key, "aws_access_key_id"))
			dst = &v->access_key;
		else if (!strcmp(key, "aws_secret_access_key"))
			dst = &v->secret_key;
		else if (!strcmp(key, "aws_session_token"))
			dst = &v->session_token;
		else if (!strcmp(key, "region"))
			dst = &v->region;
		else if (!strcmp(key, "endpoint_url"))
			dst = &v->endpoint;
		else if (!strcmp(key, "ca_bundle"))
			dst = &v->ca_bundle;
		if (dst && *val && set(dst, val) != 0) {
			bm_fmt(msg, n, "%s: out of memory", path);
			rc = BM_ENOMEM;
			break;
		}
	}
	if (rc == 0 && ferror(f)) {
		bm_fmt(msg, n, "AWS %s file %s: read error", config ? "config" : "credentials", path);
		rc = BM_EINVAL;
	}
	fclose(f);
	return rc;
}

/* ~/.aws/NAME, or the file the variable var names, into out. */
static void aws_file(char *out, size_t n, const char *var, const char *name)
{
	const char *v = env(var), *home = env("HOME");

	if (v) {
		bm_fmt(out, n, "%s", v);
		return;
	}
	if (home == NULL) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/";
	}
	bm_fmt(out, n, "%s/.aws/%s", home, name);
}

/* ---- the configuration ------------------------------------------------------------ */

void bm_aws_free(struct bm_aws *a)
{
	free(a->access_key);
	free(a->secret_key);
	free(a->session_token);
	free(a->region);
	free(a->endpoint);
	free(a->ca_bundle);
	free(a->profile);
	memset(a, 0, sizeof(*a));
}

/* An endpoint must be http(s)://HOST...; a trailing '/' is dropped. */
static int check_endpoint(struct bm_aws *a, const char *from, char *msg, size_t n)
{
	const char *host;
	size_t len;

	if (a->endpoint == NULL)
		return 0;
	if (strncmp(a->endpoint, "http://", 7) != 0 && strncmp(a->endpoint, "https://", 8) != 0) {
		bm_fmt(msg, n, "%s=%.200s: the S3 endpoint must be an http:// or https:// URL",
		       from, a->endpoint);
		bm_printable(msg);
		return BM_EINVAL;
	}
	if (strpbrk(a->endpoint, "?# \t\r\n") != NULL) {
		bm_fmt(msg, n, "%s=%.200s: the S3 endpoint must not hold a query, a fragment or spaces",
		       from, a->endpoint);
		bm_printable(msg);
		return BM_EINVAL;
	}
	host = strstr(a->endpoint, "://") + 3;
	if (*host == '\0' || *host == '/' || *host == ':') {
		bm_fmt(msg, n, "%s=%.200s: the S3 endpoint has no host", from, a->endpoint);
		return BM_EINVAL;
	}
	len = strlen(a->endpoint);
	while (a->endpoint[len - 1] == '/')
		a->endpoint[--len] = '\0';
	return 0;
}

int bm_aws_load(struct bm_aws *a, char *msg, size_t n)
{
	struct profile_vals cred = { 0 }, conf = { 0 };
	char cred_path[4096], conf_path[4096];
	const char *profile = env("AWS_PROFILE"), *profile_var = "AWS_PROFILE";
	const char *endpoint_from = NULL;
	bool explicit_profile;
	int rc;

	memset(a, 0, sizeof(*a));
	if (profile == NULL) {
		profile = env("AWS_DEFAULT_PROFILE");
		profile_var = "AWS_DEFAULT_PROFILE";
	}
	explicit_profile = profile != NULL;
	if (profile == NULL)
		profile = "default";
	aws_file(cred_path, sizeof(cred_path), "AWS_SHARED_CREDENTIALS_FILE", "credentials");
	aws_file(conf_path, sizeof(conf_path), "AWS_CONFIG_FILE", "config");
	rc = ini_read(cred_path, profile, false, &cred, msg, n);
	if (rc == 0)
		rc = ini_read(conf_path, profile, true, &conf, msg, n);
	if (rc != 0)
		goto out;
	rc = BM_ENOMEM;
	if (set(&a->profile, profile) != 0)
		goto out;

	/* Credentials: the environment, else the credentials file, else the
	 * config file; a key id and its secret always from the same place. */
	if (env("AWS_ACCESS_KEY_ID") || env("AWS_SECRET_ACCESS_KEY")) {
		if (!env("AWS_ACCESS_KEY_ID") || !env("AWS_SECRET_ACCESS_KEY")) {
			bm_fmt(msg, n, "%s is set but %s is not: set both, or neither to use profile '%s'",
			       env("AWS_ACCESS_KEY_ID") ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			       env("AWS_ACCESS_KEY_ID") ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID",
			       profile);
			rc = BM_EINVAL;
			goto out;
		}
		if (set(&a->access_key, env("AWS_ACCESS_KEY_ID")) ||
		    set(&a->secret_key, env("AWS_SECRET_ACCESS_KEY")) ||
		    set(&a->session_token, env("AWS_SESSION_TOKEN")))
			goto out;
		bm_fmt(a->source, sizeof(a->source), "the environment (AWS_ACCESS_KEY_ID)");
	} else {
		struct profile_vals *from = cred.access_key || cred.secret_key ? &cred : &conf;
		const char *path = from == &cred ? cred_path : conf_path;

		if (from->access_key || from->secret_key) {
			if (!from->access_key || !from->secret_key) {
				bm_fmt(msg, n, "%s, profile '%s': %s without %s", path, profile,
				       from->access_key ? "aws_access_key_id" : "aws_secret_access_key",
				       from->access_key ? "aws_secret_access_key" : "aws_access_key_id");
				rc = BM_EINVAL;
				goto out;
			}
			if (set(&a->access_key, from->access_key) ||
			    set(&a->secret_key, from->secret_key) ||
			    set(&a->session_token, from->session_token))
				goto out;
			bm_fmt(a->source, sizeof(a->source), "profile '%s' in %s", profile, path);
		} else if (explicit_profile && !cred.found && !conf.found) {
			bm_fmt(msg, n, "%s=%s: no such profile in %s nor %s", profile_var, profile,
			       cred_path, conf_path);
			rc = BM_EINVAL;
			goto out;
		}
	}

	if (set(&a->region, env("AWS_REGION") ? env("AWS_REGION")
			    : env("AWS_DEFAULT_REGION") ? env("AWS_DEFAULT_REGION")
			    : conf.region ? conf.region : AWS_DEFAULT_REGION))
		goto out;
	if (strspn(a->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(a->region)) {
		bm_fmt(msg, n, "region '%.100s': only lowercase letters, digits and '-'", a->region);
		bm_printable(msg);
		rc = BM_EINVAL;
		goto out;
	}

	if (env("AWS_ENDPOINT_URL_S3"))
		endpoint_from = "AWS_ENDPOINT_URL_S3";
	else if (env("AWS_ENDPOINT_URL"))
		endpoint_from = "AWS_ENDPOINT_URL";
	if (set(&a->endpoint, endpoint_from ? env(endpoint_from) : conf.endpoint))
		goto out;
	rc = check_endpoint(a, endpoint_from ? endpoint_from : "endpoint_url", msg, n);
	if (rc != 0)
		goto out;
	rc = BM_ENOMEM;
	if (set(&a->ca_bundle, env("AWS_CA_BUNDLE") ? env("AWS_CA_BUNDLE") : conf.ca_bundle))
		goto out;
	rc = 0;
out:
	if (rc == BM_ENOMEM)
		bm_fmt(msg, n, "AWS configuration: out of memory");
	profile_vals_free(&cred);
	profile_vals_free(&conf);
	if (rc != 0)
		bm_aws_free(a);
	return rc;
}

void bm_aws_describe(const struct bm_aws *a, char *out, size_t n)
{
	char where[256];

	if (a->endpoint)
		bm_fmt(where, sizeof(where), "endpoint %.200s", a->endpoint);
	else
		bm_fmt(where, sizeof(where), "AWS S3");
	if (a->access_key)
		bm_fmt(out, n, "access key %.64s from %s, region %s, %s", a->access_key, a->source,
		       a->region, where);
	else
		bm_fmt(out, n, "no AWS credentials (unsigned requests), region %s, %s", a->region,
		       where);
	bm_printable(out);
}

/* ---- s3:// URLs --------------------------------------------------------------------- */

bool bm_s3_is_url(const char *url)
{
	return bm_url_scheme_len(url, "s3") != 0;
}

/* AWS's rules: 3-63 of a-z 0-9 . -, starting and ending with a letter or
 * a digit. */
static bool bucket_valid(const char *b, size_t len)
{
	if (len < 3 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = b[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && ((c != '.' && c != '-') || i == 0 || i == len - 1))
			return false;
	}
	return true;
}

int bm_s3_url_parse(const char *url, char **bucketp, char **prefixp, char *msg, size_t n)
{
	const char *b, *slash, *p;
	size_t blen, plen;

	*bucketp = *prefixp = NULL;
	if (!bm_s3_is_url(url)) {
		bm_fmt(msg, n, "%.200s: not an s3:// URL", url ? url : "(null)");
		goto bad;
	}
	b = url + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!bucket_valid(b, blen)) {
		bm_fmt(msg, n, "%.200s: bucket name '%.*s' is not valid (3-63 of a-z 0-9 . -, "
		       "starting and ending with a letter or digit)", url, (int)(blen > 80 ? 80 : blen), b);
		goto bad;
	}
	p = slash ? slash + 1 : "";
	plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		plen--;
	for (size_t i = 0; i < plen; i++) {
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
			bm_fmt(msg, n, "%.200s: the key holds a control character", url);
			goto bad;
		}
		if (p[i] == '/' && (i == 0 || p[i - 1] == '/')) {
			bm_fmt(msg, n, "%.200s: the key has an empty path segment ('//')", url);
			goto bad;
		}
	}
	if (plen > BM_KEY_MAX) {
		bm_fmt(msg, n, "%.200s...: the key is longer than %d bytes", url, BM_KEY_MAX);
		goto bad;
	}
	*bucketp = strndup(b, blen);
	*prefixp = strndup(p, plen);
	if (*bucketp == NULL || *prefixp == NULL) {
		free(*bucketp);
		free(*prefixp);
		*bucketp = *prefixp = NULL;
		bm_fmt(msg, n, "out of memory");
		return BM_ENOMEM;
	}
	return 0;
bad:
	bm_printable(msg);
	return BM_EINVAL;
}

/* ---- canonical encoding -------------------------------------------------------------- */

bool bm_uri_encode(char *out, size_t cap, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = strlen(out);

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			     c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
		if (o + (plain ? 1 : 3) >= cap)
			return false;
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return true;
}

char *bm_s3_url(const struct bm_aws *a, const char *bucket, const char *key, const char *query)
{
	size_t cap = strlen(bucket) + 3 * strlen(key) + (query ? strlen(query) : 0) +
		     (a->endpoint ? strlen(a->endpoint) : 0) + strlen(a->region) + 64;
	char *u = malloc(cap);

	if (u == NULL)
		return NULL;
	if (a->endpoint)
		bm_fmt(u, cap, "%s/%s/", a->endpoint, bucket);
	else if (strchr(bucket, '.'))
		bm_fmt(u, cap, "https://s3.%s.amazonaws.com/%s/", a->region, bucket);
	else
		bm_fmt(u, cap, "https://%s.s3.%s.amazonaws.com/", bucket, a->region);
	bm_uri_encode(u, cap, key, true);
	if (query && *query) {
		strcat(u, "?");
		strcat(u, query);
	}
	return u;
}

struct kv {
	const char *name, *value;
};

static int kv_cmp(const void *x, const void *y)
{
	const struct kv *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	return c ? c : strcmp(a->value, b->value);
}

char *bm_s3_query(const char *const *kv, size_t n)
{
	struct kv *v = calloc(n ? n : 1, sizeof(*v));
	size_t m = 0, cap = 1;
	char *q = NULL;

	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (kv[2 * i + 1] == NULL)
			continue;
		v[m++] = (struct kv){ kv[2 * i], kv[2 * i + 1] };
		cap += 3 * (strlen(kv[2 * i]) + strlen(kv[2 * i + 1])) + 2;
	}
	qsort(v, m, sizeof(*v), kv_cmp);
	q = malloc(cap);
	if (q != NULL) {
		q[0] = '\0';
		for (size_t i = 0; i < m; i++) {
			if (i)
				strcat(q, "&");
			bm_uri_encode(q, cap, v[i].name, false);
			strcat(q, "=");
			bm_uri_encode(q, cap, v[i].value, false);
		}
	}
	free(v);
	return q;
}
