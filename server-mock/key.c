/* server-mock/key.c — from a request path to an object key. A key is the
 * percent-decoded URL path without its leading '/'. It is checked after
 * decoding, so that "%2e%2e" is caught like "..": no ".", ".." or empty
 * segments, no NUL, bounded length. A checked key, appended to the storage
 * root, never names anything outside it. No shared state, no locks. */
#include "config.h"

#include <string.h>

#include "srv.h"

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode PATH+1 into KEY; returns the decoded length or -1. */
static long decode_path(const char *path, char *key, const char **why)
{
	long n = 0;

	for (const char *p = path + 1; *p; p++) {
		if (*p != '%') {
			key[n++] = *p;
			continue;
		}
		int hi = hex_value(p[1]), lo = hi < 0 ? -1 : hex_value(p[2]);
		if (hi < 0 || lo < 0) {
			*why = "bad percent-escape in path";
			return -1;
		}
		key[n++] = (char)(hi * 16 + lo);
		if (key[n - 1] == '\0') {
			*why = "NUL byte in path";
			return -1;
		}
		p += 2;
	}
	key[n] = '\0';
	return n;
}

static int check_segments(const char *key, long n, const char **why)
{
	const char *seg = key, *end = key + n;

	while (seg < end) {
		const char *slash = memchr(seg, '/', end - seg);
		size_t len = slash ? (size_t)(slash - seg) : (size_t)(end - seg);

		if (len == 0) {
			*why = "empty path segment ('//') in key";
			return -1;
		}
		if ((len == 1 && seg[0] == '.') ||
		    (len == 2 && seg[0] == '.' && seg[1] == '.')) {
			*why = "'.' or '..' path segment in key";
			return -1;
		}
		if (len > SRV_MAX_SEGMENT_BYTES) {
			*why = "path segment longer than 255 bytes";
			return -1;
		}
		if (!slash)
			break;
		seg = slash + 1;  /* a trailing '/' ends the loop: listing */
	}
	return 0;
}

int srv_key_decode(const char *path, char *key, const char **why)
{
	long n;

	if (path[0] != '/') {
		*why = "request target must start with '/'";
		return -1;
	}
	n = decode_path(path, key, why);
	if (n < 0)
		return -1;
	if (n > SRV_MAX_KEY_BYTES) {
		*why = "key longer than 1024 bytes";
		return -1;
	}
	if (key[0] == '/') {
		*why = "empty path segment ('//') in key";
		return -1;
	}
	return check_segments(key, n, why);
}
