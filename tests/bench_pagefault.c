/* bench_pagefault.c — the cost of a virtmem page fault against the kernel's
 * own first-touch fault, measured in the same run.
 *
 * For each block size, a reader touches every 4 KiB page of every block of a
 * mapping whose loadblk does nothing, so what is measured is virtmem's
 * fault path plus the memory it hands out.  The baseline is the kernel
 * first-touching the same number of bytes of a shared memfd mapping, after a
 * warm-up pass whose pages were given back with a punched hole: both sides
 * pay for fresh zeroed memory the same way.  Rounds alternate between the
 * two sides; medians are printed.  Not a test: nothing is asserted.
 *
 *   pagefault blksize=<bytes> faults=<n> us_per_fault=<x>
 *             kernel_us_per_block=<y> ratio=<x/y>
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <virtmem/virtmem.h>

#define TOTAL ((size_t)128 << 20) /* bytes touched per round */
#define ROUNDS 7
#define TOUCH 4096

static int noop_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	(void)f;
	(void)blk;
	(void)buf;
	return 0;
}

static const vm_bigfile_ops noop_ops = { .loadblk = noop_loadblk };

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static uint64_t touch_all(const volatile char *p, size_t len)
{
	uint64_t sum = 0;
	for (size_t off = 0; off < len; off += TOUCH)
		sum += (unsigned char)p[off];
	return sum;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_pagefault: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

/* One virtmem round: a fresh handle and mapping, every 4 KiB page touched.
 * Returns microseconds. */
static double virtmem_round(vm_ram *ram, vm_bigfile *file)
{
	vm_fileh *fh;
	vm_vma *vma;
	int rc;

	if ((rc = vm_fileh_open(&fh, file, ram, 0)) < 0)
		die("vm_fileh_open", rc);
	if ((rc = vm_fileh_mmap(&vma, fh, 0, TOTAL / file->blksize)) < 0)
		die("vm_fileh_mmap", rc);
	double t0 = now_us();
	touch_all(vm_vma_addr(vma), TOTAL);
	double t = now_us() - t0;
	struct vm_fileh_stats st;
	vm_fileh_stats(fh, &st);
	if (st.faults != TOTAL / file->blksize) {
		fprintf(stderr, "bench_pagefault: %llu faults, expected %zu\n",
			(unsigned long long)st.faults, TOTAL / file->blksize);
		exit(1);
	}
	vm_vma_unmap(vma);
	vm_fileh_close(fh); /* drops the pages: their memory goes back */
	return t;
}

/* One kernel round: first touch of every 4 KiB page of a shared memfd
 * mapping, then its pages given back by punching a hole. */
static double kernel_round(int fd, volatile char *p)
{
	double t0 = now_us();
	touch_all(p, TOTAL);
	double t = now_us() - t0;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)TOTAL) < 0)
		die("fallocate", errno);
	return t;
}

int main(void)
{
	const size_t sizes[] = { 4096, 65536, 2097152 };
	int fd = memfd_create("bench-kernel", MFD_CLOEXEC);
	vm_ram *ram;
	int rc;

	if (fd < 0 || ftruncate(fd, (off_t)TOTAL) < 0)
		die("memfd", errno);
	volatile char *kp = mmap(NULL, TOTAL, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (kp == MAP_FAILED)
		die("mmap", errno);
	if ((rc = vm_ram_open(&ram, TOTAL)) < 0)
		die("vm_ram_open", rc);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		vm_bigfile file = { .ops = &noop_ops, .blksize = sizes[i] };
		size_t nblk = TOTAL / sizes[i];
		double vt[ROUNDS], kt[ROUNDS];

		/* Warm-up: both sides once, memory given back. */
		virtmem_round(ram, &file);
		kernel_round(fd, kp);
		for (int r = 0; r < ROUNDS; r++) {
			vt[r] = virtmem_round(ram, &file);
			kt[r] = kernel_round(fd, kp);
		}
		double x = median(vt, ROUNDS) / (double)nblk;
		double y = median(kt, ROUNDS) / (double)nblk;
		printf("pagefault blksize=%zu faults=%zu us_per_fault=%.3f kernel_us_per_block=%.3f ratio=%.3f\n",
		       sizes[i], nblk, x, y, x / y);
		fflush(stdout);
	}
	vm_ram_close(ram);
	return 0;
}
