/* server-mock/etag.c — content hashes and ETags for blkmap-server.
 * An ETag is a 128-bit hash of the object's bytes, so it is strong, it is
 * the same for the same content on every server run, and it needs no
 * storage of its own. The hash is streamable (PUT bodies arrive in pieces).
 * Not cryptographic: a mock object server, not a content-addressed store.
 * No shared state, no locks. */
#include "config.h"

#include <string.h>
#include <stdio.h>

#include "srv.h"

#define K1 0x9E3779B97F4A7C15ull
#define K2 0xC2B2AE3D27D4EB4Full
#define K3 0x165667B19E3779F9ull
#define K4 0xD6E8FEB86659FD93ull

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t mix_final(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 31;
	return x;
}

static void hash_word(struct srv_hash *h, uint64_t w)
{
	h->h1 = rotl64(h->h1 ^ (w * K1), 31) * K2;
	h->h2 = rotl64(h->h2 + (w ^ K3), 27) * K4 + h->h1;
}

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t w = 0;
	for (int i = 7; i >= 0; i--)
		w = (w << 8) | p[i];
	return w;
}

void srv_hash_init(struct srv_hash *h)
{
	memset(h, 0, sizeof(*h));
	h->h1 = K3;
	h->h2 = K4;
}

void srv_hash_update(struct srv_hash *h, const void *data, size_t n)
{
	const unsigned char *p = data;

	h->len += n;
	while (h->ntail && n) {
		h->tail[h->ntail++] = *p++;
		n--;
		if (h->ntail == 8) {
			hash_word(h, load_le64(h->tail));
			h->ntail = 0;
		}
	}
	for (; n >= 8; p += 8, n -= 8)
		hash_word(h, load_le64(p));
	memcpy(h->tail, p, n);
	h->ntail += n;
}

void srv_hash_etag(const struct srv_hash *h, char etag[SRV_ETAG_LEN])
{
	struct srv_hash t = *h;
	unsigned char last[8] = { 0 };

	memcpy(last, t.tail, t.ntail);
	hash_word(&t, load_le64(last) ^ ((uint64_t)t.ntail << 56));
	hash_word(&t, t.len);
	snprintf(etag, SRV_ETAG_LEN, "\"%016llx%016llx\"",
		 (unsigned long long)mix_final(t.h1 ^ rotl64(t.h2, 17)),
		 (unsigned long long)mix_final(t.h2 + t.h1));
}

/* Compare one entity-tag starting at *P (after spaces) with ETAG; advances
 * *P past it. Returns 1 match, 0 no match, -1 malformed. */
static int match_one(const char **pp, const char *etag, int weak)
{
	const char *p = *pp, *end;
	int is_weak = 0;

	if (p[0] == 'W' && p[1] == '/') {
		is_weak = 1;
		p += 2;
	}
	if (*p != '"')
		return -1;
	end = strchr(p + 1, '"');
	if (!end)
		return -1;
	*pp = end + 1;
	if (is_weak && !weak)
		return 0;
	return (size_t)(end + 1 - p) == strlen(etag) &&
	       memcmp(p, etag, end + 1 - p) == 0;
}

int srv_etag_list_matches(const char *list, const char *etag, int weak)
{
	const char *p = list;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			return 0;
		if (*p == '*')
			return 1;
		int r = match_one(&p, etag, weak);
		if (r != 0)
			return r > 0;
	}
}
