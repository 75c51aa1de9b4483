/* server-mock/key.c — from a request path to an object key. A key is the
 * percent-decoded URL path without its leading '/' (an absolute-form
 * target, "http://host/path", counts by its path). It is checked after
 * decoding, so that "%2e%2e" is caught like "..": no ".", ".." or empty
 * segments, no NUL or other control character, valid UTF-8 (listings are
 * JSON), bounded length. A checked key, appended to the storage root,
 * never names anything outside it. No shared state, no locks. */
#include "config.h"

#include <string.h>
#include <strings.h>

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
	for (long i = 0; i < n; i++) {
		if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) {
			*why = "control character in path";
			return -1;
		}
	}
	return n;
}

/* Whether S (N bytes) is well-formed UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, long n)
{
	for (long i = 0; i < n;) {
		unsigned c = s[i], len, min, cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			len = 2, min = 0x80, cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3, min = 0x800, cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4, min = 0x10000, cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + (long)len > n)
			return 0;
		for (unsigned k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
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

	if (!strncasecmp(path, "http://", 7) || !strncasecmp(path, "https://", 8)) {
		/* Absolute form (RFC 9112 3.2.2): the key is in its path. */
		const char *slash = strchr(strstr(path, "//") + 2, '/');
		if (!slash) {
			*why = "absolute request target without a path";
			return -1;
		}
		path = slash;
	}
	if (path[0] != '/') {
		*why = "request target must start with '/'";
		return -1;
	}
	n = decode_path(path, key, why);
	if (n < 0)
		return -1;
	if (!utf8_valid((const unsigned char *)key, n)) {
		*why = "key is not valid UTF-8";
		return -1;
	}
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
