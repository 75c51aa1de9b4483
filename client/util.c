/* util.c — libblkmap's small shared pieces: error texts and messages,
 * logging, options from the environment, checksums.
 * Locking: none needed; the thread's last open error is thread-local.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bm_xxhash.h"

#include "internal.h"

const char *bm_strerror(int err)
{
	switch (err) {
	case 0: return "success";
	case BM_EINVAL: return "invalid argument";
	case BM_EHTTP: return "server unreachable or failing";
	case BM_ENOTFOUND: return "not found";
	case BM_EFORMAT: return "bad data from the server";
	case BM_ECHECKSUM: return "checksum mismatch";
	case BM_ECONFLICT: return "commit conflict: another writer published first";
	case BM_EREADONLY: return "read-only dataset";
	case BM_ECHANGED: return "object changed on the server";
	case BM_EAUTH: return "not authorized";
	case BM_EBUSY: return "busy";
	case BM_ENOMEM: return "out of memory";
	case BM_EIO: return "local I/O error";
	}
	return strerror(err < 0 ? -err : err);
}

void bm_printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

size_t bm_url_scheme_len(const char *url, const char *scheme)
{
	size_t n = strlen(scheme);

	if (url == NULL || strncasecmp(url, scheme, n) != 0 || strncmp(url + n, "://", 3) != 0)
		return 0;
	return n + 3;
}

void bm_assert_fail(const char *file, int line, const char *cond)
{
	bm_log("%s:%d: assertion failed: %s", file, line, cond);
	abort();
}

bool bm_mutex_held(pthread_mutex_t *mu)
{
#ifdef __GLIBC__
	return mu->__data.__owner == (int)syscall(SYS_gettid);
#else
	(void)mu;
	return true;
#endif
}

bool bm_mutex_free_here(pthread_mutex_t *mu)
{
#ifdef __GLIBC__
	return mu->__data.__owner != (int)syscall(SYS_gettid);
#else
	(void)mu;
	return true;
#endif
}

void bm_log(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "blkmap: ");

	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	bm_printable(buf);
	n = (int)strlen(buf);
	buf[n++] = '\n';
	/* One write(2), so lines of several threads do not interleave; usable
	 * from the fault handler. */
	ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
	(void)w;
}

void bm_fmt(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	/* Messages quote what servers sent (JSON parser text, keys, headers);
	 * they stay one printable line whoever formats them. */
	if (n > 0)
		bm_printable(buf);
}

static __thread char thread_error[512];

void bm_set_thread_error(const char *msg)
{
	snprintf(thread_error, sizeof(thread_error), "%s", msg);
	bm_printable(thread_error);
}

void bm_set_error(bm_dataset *ds, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bm_printable(msg);
	(void)code;
	/* No two of the dataset's locks at once (internal.h). */
	bm_assert(bm_mutex_free_here(&ds->up.mu) && bm_mutex_free_here(&ds->ra.mu));
	pthread_mutex_lock(&ds->mu);
	snprintf(ds->errmsg, sizeof(ds->errmsg), "%s", msg);
	pthread_mutex_unlock(&ds->mu);
	bm_set_thread_error(msg);
	if (ds->opt.verbose)
		bm_log("%s", msg);
}

const char *bm_last_error(bm_dataset *ds)
{
	return ds ? ds->errmsg : thread_error;
}

static void hex128(XXH128_hash_t h, char out[BM_SUM_HEX + 1])
{
	static const char hex[] = "0123456789abcdef";
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	for (int i = 0; i < 16; i++) {
		out[2 * i] = hex[c.digest[i] >> 4];
		out[2 * i + 1] = hex[c.digest[i] & 15];
	}
	out[BM_SUM_HEX] = '\0';
}

void bm_sum_hex(const void *buf, size_t len, char out[BM_SUM_HEX + 1])
{
	hex128(bm_xxh3_128(buf, len), out);
}

void bm_sum_state_hex(void *state, char out[BM_SUM_HEX + 1])
{
	hex128(XXH3_128bits_digest(state), out);
}

bool bm_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	/* Compare the buffer with itself shifted by one: vectorized memcmp. */
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

double bm_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- options -------------------------------------------------------------- */

/* Parses "123", "64k", "512M", "2G" (binary multiples). */
static int parse_size(const char *s, uint64_t *out)
{
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	uint64_t mul = 1;

	if (e == s || errno != 0 || *s == '-')
		return -1;
	switch (*e) {
	case 'k': case 'K': mul = 1ull << 10; e++; break;
	case 'm': case 'M': mul = 1ull << 20; e++; break;
	case 'g': case 'G': mul = 1ull << 30; e++; break;
	case 't': case 'T': mul = 1ull << 40; e++; break;
	}
	if (*e == 'i' || *e == 'B')
		e += (*e == 'i' && e[1] == 'B') ? 2 : 1;
	if (*e != '\0' || (v != 0 && mul > UINT64_MAX / v))
		return -1;
	*out = v * mul;
	return 0;
}

static int env_size(const char *name, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *v = getenv(name);
	uint64_t x;
	char msg[256];

	if (v == NULL || *v == '\0')
		return 0;
	if (parse_size(v, &x) < 0 || x < min || x > max) {
		snprintf(msg, sizeof(msg), "%s=%s: expected a number from %" PRIu64 " to %" PRIu64
			 " (suffixes k, M, G allowed)", name, v, min, max);
		bm_set_thread_error(msg);
		bm_log("%s", msg);
		return BM_EINVAL;
	}
	*out = x;
	return 0;
}

int bm_options_init(struct bm_options *o)
{
	uint64_t v;
	int rc = 0;

	memset(o, 0, sizeof(*o));
	o->cache_bytes = (size_t)512 << 20;
	o->connect_timeout_ms = 5000;
	o->timeout_ms = 60000;
	o->retries = 6;
	o->retry_base_ms = 50;
	o->connections = 16;
	o->readahead_bytes = (size_t)64 << 20;
	o->spare_bytes = (size_t)16 << 20;
	o->blksize = 0; /* BM_DEFAULT_BLKSIZE, or BM_FLAT_BLKSIZE for a flat object */
	o->token = getenv("BLKMAP_TOKEN");
	o->wcfs = getenv("BLKMAP_WCFS");

#define ENV(name, min, max, field)                                     \
	do {                                                           \
		v = (uint64_t)o->field;                                \
		int r_ = env_size(name, min, max, &v);                 \
		if (r_ < 0)                                            \
			rc = r_;                                       \
		else                                                   \
			o->field = (__typeof__(o->field))v;            \
	} while (0)
	ENV("BLKMAP_CACHE_BYTES", 4096, (uint64_t)512 << 30, cache_bytes); /* vm_ram_open's limit */
	ENV("BLKMAP_CONNECT_TIMEOUT_MS", 1, 3600000, connect_timeout_ms);
	ENV("BLKMAP_TIMEOUT_MS", 1, 86400000, timeout_ms);
	ENV("BLKMAP_RETRIES", 0, 100, retries);
	ENV("BLKMAP_RETRY_BASE_MS", 1, 60000, retry_base_ms);
	ENV("BLKMAP_CONNECTIONS", 1, 256, connections);
	ENV("BLKMAP_READAHEAD_BYTES", 0, (uint64_t)1 << 40, readahead_bytes);
	ENV("BLKMAP_SPARE_BYTES", 0, (uint64_t)1 << 40, spare_bytes);
	ENV("BLKMAP_BLKSIZE", 4096, VM_BLKSIZE_MAX, blksize);
	ENV("BLKMAP_PIECE_BYTES", 0, VM_BLKSIZE_MAX / 2, piece_bytes);
	ENV("BLKMAP_VERBOSE", 0, 9, verbose);
#undef ENV
	/* Not an option: gcmark.c reads it where gc and the writers' guard
	 * use it.  Checked here so that one that does not parse is an error
	 * of every call, not a silent 30 s. */
	const char *settle = getenv("BLKMAP_GC_SETTLE_MS");
	if (settle && *settle) {
		char *end;
		long ms = strtol(settle, &end, 10);
		if (*end != '\0' || settle[0] < '0' || settle[0] > '9' || ms < 1 || ms > 3600000) {
			char msg[256];
			snprintf(msg, sizeof(msg), "BLKMAP_GC_SETTLE_MS=%s: expected a number of ms from 1 to 3600000",
				 settle);
			bm_set_thread_error(msg);
			bm_log("%s", msg);
			rc = BM_EINVAL;
		}
	}
	return rc;
}
