/* tests/bench_util.h — what the benchmarks (tests/bench_*.c) share: the
 * clock, the median of a round's figures, the one-line exit on a failed
 * setup, and (for the libblkmap ones) opening a dataset and scanning it
 * through a mapping.  Header-only (static functions), so that a benchmark
 * that uses a part links only what that part needs.  No state, no locking.
 */
#ifndef BLKMAP_TESTS_BENCH_UTIL_H
#define BLKMAP_TESTS_BENCH_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <blkmap/blkmap.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "<program>: WHAT: DETAIL" on stderr, exit 1: a setup that failed leaves
 * nothing to compare. */
static inline void bench_die(const char *what, const char *detail)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, detail);
	exit(1);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The median of v[0..n) (n >= 1); sorts v. */
static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* n distinct blocks of nblk (n well below nblk) into out, in an order
 * where none comes right after or before its predecessor (read-ahead sees
 * random access); the same for the same seed. */
static inline void bench_pick_blocks(size_t nblk, size_t *out, int n, unsigned seed)
{
	unsigned char *used = calloc(nblk, 1);

	if (used == NULL)
		bench_die("pick_blocks", "out of memory");
	for (int i = 0; i < n; i++) {
		size_t b;
		do {
			seed = seed * 1103515245u + 12345u;
			b = (seed >> 8) % nblk;
		} while (used[b] || (i > 0 && (b == out[i - 1] + 1 || b + 1 == out[i - 1])));
		used[b] = 1;
		out[i] = b;
	}
	free(used);
}

/* The dataset at url with a RAM cache of cache_bytes and no wcfs mirror
 * (a benchmark measures the fetch path, whatever is mounted); dies when it
 * does not open. */
static inline bm_dataset *bench_open(const char *url, size_t cache_bytes)
{
	struct bm_options o;
	bm_dataset *ds;

	if (bm_options_init(&o) < 0)
		bench_die("options", bm_last_error(NULL));
	o.cache_bytes = cache_bytes;
	o.wcfs = "off";
	if (bm_open(&ds, url, &o) < 0)
		bench_die(url, bm_last_error(NULL));
	return ds;
}

/* Reads one byte of every 4 KiB of [0, size) through a mapping of the whole
 * dataset ds (then unmapped and closed): the seconds that took. */
static inline double bench_scan(bm_dataset *ds, const char *url, size_t size)
{
	bm_mapping *m;
	void *addr;
	volatile unsigned char sink = 0;

	if (bm_map(ds, 0, 0, &addr, &m) < 0)
		bench_die(url, bm_last_error(ds));
	double t0 = bench_now();
	for (size_t off = 0; off < size; off += 4096)
		sink ^= ((unsigned char *)addr)[off];
	double t = bench_now() - t0;
	bm_unmap(m);
	bm_close(ds);
	(void)sink;
	return t;
}

#endif /* BLKMAP_TESTS_BENCH_UTIL_H */
