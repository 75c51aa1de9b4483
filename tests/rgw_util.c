/* tests/rgw_util.c — the shared RADOS Gateway for the tests (see
 * rgw_util.h): runs tests/rgw.sh's "shared" mode and reads the instance's
 * endpoint and keys, makes SigV4-signed S3 requests with libcurl, buckets
 * and the AWS_* environment.  No locking: tr_rgw_get(_or_skip), tr_bucket and
 * tr_rgw_setenv are for the test's thread; tr_s3 keeps nothing between
 * calls, so threads may make requests at once once one request has set
 * libcurl up.  tests/rgw.sh serializes the programs' starts.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "rgw_util.h"

static void copy_value(char *dst, size_t n, const char *line, const char *key)
{
	size_t kl = strlen(key);

	if (strncmp(line, key, kl) == 0 && line[kl] == '=')
		snprintf(dst, n, "%.*s", (int)strcspn(line + kl + 1, "\r\n"), line + kl + 1);
}

int tr_rgw_get(struct tr_rgw *r, char *why, size_t n)
{
	const char *src = getenv("top_srcdir"), *build = getenv("top_builddir");
	char cmd[8192], line[1024];
	size_t used = 0;
	FILE *p;
	int st;

	memset(r, 0, sizeof(*r));
	why[0] = '\0';
	/* The instance lives as long as this process's make (or this process). */
	snprintf(cmd, sizeof(cmd),
		 "BLKMAP_RGW_CALLER=%ld bash '%s/tests/rgw.sh' shared '%s/tests/rgw.state' 2>&1",
		 (long)getpid(), src ? src : ".", build ? build : ".");
	fflush(NULL);
	p = popen(cmd, "r");
	if (p == NULL) {
		snprintf(why, n, "cannot run %s", cmd);
		return -1;
	}
	while (fgets(line, sizeof(line), p)) {
		copy_value(r->endpoint, sizeof(r->endpoint), line, "endpoint");
		copy_value(r->access_key, sizeof(r->access_key), line, "access_key");
		copy_value(r->secret_key, sizeof(r->secret_key), line, "secret_key");
		if (strchr(line, '=') == NULL && used < n) {
			line[strcspn(line, "\n")] = '\0';
			used += snprintf(why + used, n - used, "%s%s", used ? "; " : "", line);
		}
	}
	st = pclose(p);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		return 77;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !r->endpoint[0] || !r->secret_key[0]) {
		if (!why[0])
			snprintf(why, n, "tests/rgw.sh shared failed (status %d)", st);
		return -1;
	}
	return 0;
}

int tr_rgw_get_or_skip(struct tr_rgw *r)
{
	char why[1024];
	int rc = tr_rgw_get(r, why, sizeof(why));

	if (rc == 77) {
		printf("SKIP: %s\n", why);
		exit(77);
	}
	if (rc != 0) {
		fprintf(stderr, "RADOS Gateway: %s\n", why);
		return -1;
	}
	return 0;
}

struct upload {
	const char *p;
	size_t left;
};

static size_t read_body(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct upload *u = arg;
	size_t k = size * nmemb < u->left ? size * nmemb : u->left;

	memcpy(buf, u->p, k);
	u->p += k;
	u->left -= k;
	return k;
}

static void append(char **buf, size_t *len, const char *data, size_t k)
{
	char *nb = realloc(*buf, *len + k + 1);

	assert_non_null(nb);
	memcpy(nb + *len, data, k);
	*len += k;
	nb[*len] = '\0';
	*buf = nb;
}

static size_t write_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct tr_resp *r = arg;

	append(&r->body, &r->len, data, size * nmemb);
	return size * nmemb;
}

static size_t write_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct tr_resp *r = arg;
	size_t hl = 0;

	/* A new status line starts the block of another response (100). */
	if (size * nmemb > 5 && strncmp(data, "HTTP/", 5) == 0) {
		free(r->headers);
		r->headers = NULL;
	}
	if (r->headers)
		hl = strlen(r->headers);
	append(&r->headers, &hl, data, size * nmemb);
	return size * nmemb;
}

long tr_s3_as(const struct tr_rgw *r, const char *access, const char *secret,
	      const char *method, const char *path, const char *const *headers,
	      const void *body, size_t len, struct tr_resp *resp)
{
	CURL *h = curl_easy_init();
	struct curl_slist *list = NULL;
	struct upload up = { body, len };
	char url[4096], userpwd[256];
	CURLcode rc;

	assert_non_null(h);
	memset(resp, 0, sizeof(*resp));
	snprintf(url, sizeof(url), "%s%s", r->endpoint, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, write_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
	if (access) {
		snprintf(userpwd, sizeof(userpwd), "%s:%s", access, secret);
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
		curl_easy_setopt(h, CURLOPT_USERPWD, userpwd);
		/* RGW refuses a signed request without it. */
		list = curl_slist_append(list, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	}
	if (!strcmp(method, "HEAD")) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, read_body);
		curl_easy_setopt(h, CURLOPT_READDATA, &up);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	for (; headers && *headers; headers++)
		list = curl_slist_append(list, *headers);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
	rc = curl_easy_perform(h);
	resp->status = -1;
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
	else
		snprintf(resp->err, sizeof(resp->err), "%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_slist_free_all(list);
	curl_easy_cleanup(h);
	if (!resp->body)
		append(&resp->body, &resp->len, "", 0);
	if (!resp->headers) {
		size_t z = 0;
		append(&resp->headers, &z, "", 0);
	}
	return resp->status;
}

long tr_s3(const struct tr_rgw *r, const char *method, const char *path,
	   const char *const *headers, const void *body, size_t len, struct tr_resp *resp)
{
	return tr_s3_as(r, r->access_key, r->secret_key, method, path, headers, body, len, resp);
}

void tr_resp_free(struct tr_resp *resp)
{
	free(resp->headers);
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
}

const char *tr_header(const struct tr_resp *resp, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);

	for (const char *p = resp->headers; p && *p;) {
		const char *eol = strchr(p, '\n');
		if (!strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t vl;
			while (*v == ' ' || *v == '\t')
				v++;
			vl = (eol ? (size_t)(eol - v) : strlen(v));
			while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
				vl--;
			snprintf(out, n, "%.*s", (int)vl, v);
			return out;
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	return NULL;
}

const char *tr_bucket(const struct tr_rgw *r, const char *prefix, char *out, size_t n)
{
	static int counter;
	struct tr_resp resp;
	char path[256];

	snprintf(out, n, "%s-%ld-%d", prefix, (long)getpid(), ++counter);
	for (char *c = out; *c; c++)
		if (*c == '_')
			*c = '-';
	snprintf(path, sizeof(path), "/%s", out);
	tr_s3(r, "PUT", path, NULL, "", 0, &resp);
	if (resp.status != 200)
		fail_msg("PUT bucket %s: %ld %s %s", out, resp.status, resp.err, resp.body);
	tr_resp_free(&resp);
	return out;
}

void tr_rgw_setenv(const struct tr_rgw *r)
{
	static const char *const clear[] = {
		"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE",
		"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", NULL,
	};

	for (const char *const *v = clear; *v; v++)
		unsetenv(*v);
	setenv("AWS_ACCESS_KEY_ID", r->access_key, 1);
	setenv("AWS_SECRET_ACCESS_KEY", r->secret_key, 1);
	setenv("AWS_ENDPOINT_URL_S3", r->endpoint, 1);
	setenv("AWS_REGION", "us-east-1", 1);
	/* No ~/.aws of the developer's: files that do not exist. */
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/blkmap-test/credentials", 1);
	setenv("AWS_CONFIG_FILE", "/nonexistent/blkmap-test/config", 1);
}
