/* client/bm_xxhash.h — the XXH3 calls of libblkmap: bm_xxh3_128,
 * bm_xxh3_128_update and bm_xxh3_64.  When libxxhash has its x86 dispatch,
 * they run the widest vector code the CPU has (AVX2/AVX-512): 0.10 ms
 * against 0.27 ms per 4 MiB block checksum on the 2-core VM.  That code may
 * return with the upper halves of the vector registers dirty, which makes
 * every later SSE instruction of the calling thread slow (measured: the
 * demo's sin() loop ran 8 times slower, 6.6 s against 0.86 s), so each
 * call is followed by VZEROUPPER.  Without the dispatch they are the
 * library's default calls.
 */
#ifndef BLKMAP_CLIENT_BM_XXHASH_H
#define BLKMAP_CLIENT_BM_XXHASH_H

#include <stddef.h>
#include <xxhash.h>

#if defined(HAVE_XXH_X86DISPATCH_H) && defined(HAVE_XXH3_128BITS_UPDATE_DISPATCH) && \
	defined(__x86_64__)
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <immintrin.h>
#include <xxh_x86dispatch.h>

/* VZEROUPPER is an AVX instruction: the dispatch picks vector code only on
 * CPUs that have AVX, so only they need (and can run) it.  Compiled for
 * AVX on its own (not inlined), through the intrinsic, so that the compiler
 * knows what it clobbers whatever -march the rest is built with. */
__attribute__((target("avx"), noinline, unused)) static void bm_zeroupper_avx(void)
{
	_mm256_zeroupper();
}

static inline void bm_vzeroupper(void)
{
	if (__builtin_cpu_supports("avx"))
		bm_zeroupper_avx();
}

static inline XXH128_hash_t bm_xxh3_128(const void *p, size_t n)
{
	XXH128_hash_t h = XXH3_128bits_dispatch(p, n);
	bm_vzeroupper();
	return h;
}

static inline void bm_xxh3_128_update(XXH3_state_t *s, const void *p, size_t n)
{
	(void)XXH3_128bits_update_dispatch(s, p, n);
	bm_vzeroupper();
}

static inline unsigned long long bm_xxh3_64(const void *p, size_t n)
{
	unsigned long long h = (unsigned long long)XXH3_64bits_dispatch(p, n);
	bm_vzeroupper();
	return h;
}
#else
static inline XXH128_hash_t bm_xxh3_128(const void *p, size_t n) { return XXH3_128bits(p, n); }
static inline void bm_xxh3_128_update(XXH3_state_t *s, const void *p, size_t n)
{
	(void)XXH3_128bits_update(s, p, n);
}
static inline unsigned long long bm_xxh3_64(const void *p, size_t n)
{
	return (unsigned long long)XXH3_64bits(p, n);
}
#endif

#endif
