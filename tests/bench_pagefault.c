/* bench_pagefault.c — the cost of a virtmem page fault, per fault engine,
 * against the kernel's own first-touch fault, measured in the same run.
 *
 * pagefault: for each engine and block size, a reader touches every 4 KiB
 * page of every block of a mapping whose loadblk does nothing, so what is
 * measured is virtmem's fault path plus the memory it hands out.  The
 * baseline is the kernel first-touching the same number of bytes of a
 * shared memfd mapping, after a warm-up pass whose pages were given back
 * with a punched hole: both sides pay for fresh zeroed memory the same way.
 * scale: 200,000 random 4 KiB blocks of one 3.2 GiB mapping through a
 * 64 MiB budget (reclaim all along), against the kernel touching the same
 * os pages of a memfd mapping; and the kernel mappings (lines of
 * /proc/self/maps) inside the mapping at the end.
 * syscall: write(2) of each 64 KiB block of an unloaded mapping to a file,
 * against the same from a memfd mapping the kernel first-touches; EFAULT
 * counted (the SIGSEGV engine cannot serve system calls).
 * Rounds alternate between the two sides; medians are printed.  For the
 * uffd engine, handler_sleeps_per_fault is how often a handler thread went
 * to sleep (and had to be woken) per fault, over the rounds: 1 when every
 * fault wakes one, 0 when polling handlers read each fault (virtmem/uffd.c,
 * read_msg); a number that does not vary with the load of the machine, as
 * the times do.  Not a test: nothing is asserted.
 *
 *   pagefault engine=<e> blksize=<bytes> faults=<n> us_per_fault=<x>
 *             kernel_us_per_block=<y> ratio=<x/y> [handler_sleeps_per_fault=<s>]
 *   scale engine=<e> blocks=<n> us_per_block=<x> kernel_us_per_block=<y>
 *             ratio=<x/y> kernel_mappings=<m>
 *   syscall engine=<e> blksize=<bytes> blocks=<n> ok=<k> efault=<f>
 *             us_per_block=<x> kernel_us_per_block=<y> ratio=<x/y>
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
#include <dirent.h>
#include <unistd.h>

#include <virtmem/virtmem.h>

#include "bench_util.h"

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

static uint64_t touch_all(const volatile char *p, size_t len)
{
	uint64_t sum = 0;
	for (size_t off = 0; off < len; off += TOUCH)
		sum += (unsigned char)p[off];
	return sum;
}

static void die(const char *what, int rc)
{
	bench_die(what, strerror(rc < 0 ? -rc : rc));
}

/* Times the uffd engine's handler threads (named vm-uffd) went to sleep
 * so far: the sum of their voluntary context switches. */
static long handler_sleeps(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	long sum = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		char path[300], line[256];
		int handler = 0;
		long n;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		while (fgets(line, sizeof(line), f) != NULL) {
			if (strcmp(line, "Name:\tvm-uffd\n") == 0)
				handler = 1;
			else if (handler && sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
				sum += n;
		}
		fclose(f);
	}
	closedir(d);
	return sum;
}

/* One virtmem round: a fresh handle and mapping, every 4 KiB page touched.
 * Returns microseconds; adds the handler threads' sleeps meanwhile to
 * sleeps. */
static int engine_flag;
static long sleeps;

static double virtmem_round(vm_ram *ram, vm_bigfile *file)
{
	vm_fileh *fh;
	vm_vma *vma;
	int rc;

	if ((rc = vm_fileh_open(&fh, file, ram, engine_flag)) < 0)
		die("vm_fileh_open", rc);
	if ((rc = vm_fileh_mmap(&vma, fh, 0, TOTAL / file->blksize)) < 0)
		die("vm_fileh_mmap", rc);
	long s0 = handler_sleeps();
	double t0 = bench_now();
	touch_all(vm_vma_addr(vma), TOTAL);
	double t = (bench_now() - t0) * 1e6; /* microseconds */
	sleeps += handler_sleeps() - s0;
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
	double t0 = bench_now();
	touch_all(p, TOTAL);
	double t = (bench_now() - t0) * 1e6; /* microseconds */
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)TOTAL) < 0)
		die("fallocate", errno);
	return t;
}

/* Lines of /proc/self/maps inside [p, p + len). */
static int mappings_in(const void *p, size_t len)
{
	uintptr_t lo = (uintptr_t)p, hi = lo + len;
	unsigned long start, end;
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	if (f == NULL)
		die("/proc/self/maps", errno);
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start >= lo && end <= hi)
			n++;
	fclose(f);
	return n;
}

#define SCALE_BLOCKS 200000
#define SCALE_FILE (16 * (size_t)SCALE_BLOCKS) /* blocks in the file */
#define SCALE_BUDGET ((size_t)64 << 20)
#define SCALE_ROUNDS 3

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Touches SCALE_BLOCKS random os pages (the same sequence every time) of
 * [p, p + SCALE_FILE * 4096).  Returns microseconds. */
static double touch_random(const volatile char *p)
{
	uint64_t x = 88172645463325252ull, sum = 0;
	double t0 = bench_now();
	for (int i = 0; i < SCALE_BLOCKS; i++)
		sum += (unsigned char)p[(xorshift(&x) % SCALE_FILE) * 4096];
	(void)sum;
	return (bench_now() - t0) * 1e6;
}

static void scale(const char *engine)
{
	vm_bigfile file = { .ops = &noop_ops, .blksize = 4096 };
	size_t len = SCALE_FILE * 4096;
	double vt[SCALE_ROUNDS], kt[SCALE_ROUNDS];
	int maps = 0, rc;
	vm_ram *ram;

	int fd = memfd_create("bench-scale", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)len) < 0)
		die("memfd", errno);
	if ((rc = vm_ram_open(&ram, SCALE_BUDGET)) < 0)
		die("vm_ram_open", rc);
	for (int r = 0; r < SCALE_ROUNDS; r++) {
		vm_fileh *fh;
		vm_vma *vma;
		if ((rc = vm_fileh_open(&fh, &file, ram, engine_flag)) < 0)
			die("vm_fileh_open", rc);
		if ((rc = vm_fileh_mmap(&vma, fh, 0, SCALE_FILE)) < 0)
			die("vm_fileh_mmap", rc);
		vt[r] = touch_random(vm_vma_addr(vma));
		maps = mappings_in(vm_vma_addr(vma), vm_vma_len(vma));
		vm_vma_unmap(vma);
		vm_fileh_close(fh);

		volatile char *kp = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
		if (kp == MAP_FAILED)
			die("mmap", errno);
		kt[r] = touch_random(kp);
		munmap((void *)kp, len);
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len) < 0)
			die("fallocate", errno);
	}
	double x = bench_median(vt, SCALE_ROUNDS) / SCALE_BLOCKS;
	double y = bench_median(kt, SCALE_ROUNDS) / SCALE_BLOCKS;
	printf("scale engine=%s blocks=%d us_per_block=%.3f kernel_us_per_block=%.3f ratio=%.3f kernel_mappings=%d\n",
	       engine, SCALE_BLOCKS, x, y, x / y, maps);
	fflush(stdout);
	vm_ram_close(ram);
	close(fd);
}

#define SYS_BS ((size_t)64 << 10)
#define SYS_BLOCKS 1024

/* write(2) of every block of p to out; counts EFAULT.  Microseconds. */
static double write_blocks(int out, const char *p, int *ok, int *efault)
{
	double t0 = bench_now();
	*ok = *efault = 0;
	for (size_t b = 0; b < SYS_BLOCKS; b++) {
		ssize_t n = pwrite(out, p + b * SYS_BS, SYS_BS, 0);
		if (n == (ssize_t)SYS_BS)
			(*ok)++;
		else if (n < 0 && errno == EFAULT)
			(*efault)++;
	}
	return (bench_now() - t0) * 1e6;
}

static void syscalls(const char *engine)
{
	vm_bigfile file = { .ops = &noop_ops, .blksize = SYS_BS };
	size_t len = SYS_BLOCKS * SYS_BS;
	double vt[ROUNDS], kt[ROUNDS];
	int ok = 0, efault = 0, kok, kefault, rc;
	vm_ram *ram;

	int out = memfd_create("bench-out", MFD_CLOEXEC);
	int fd = memfd_create("bench-syscall", MFD_CLOEXEC);
	if (out < 0 || fd < 0 || ftruncate(fd, (off_t)len) < 0)
		die("memfd", errno);
	if ((rc = vm_ram_open(&ram, len)) < 0)
		die("vm_ram_open", rc);
	for (int r = 0; r < ROUNDS; r++) {
		vm_fileh *fh;
		vm_vma *vma;
		if ((rc = vm_fileh_open(&fh, &file, ram, engine_flag)) < 0)
			die("vm_fileh_open", rc);
		if ((rc = vm_fileh_mmap(&vma, fh, 0, SYS_BLOCKS)) < 0)
			die("vm_fileh_mmap", rc);
		vt[r] = write_blocks(out, vm_vma_addr(vma), &ok, &efault);
		vm_vma_unmap(vma);
		vm_fileh_close(fh);

		char *kp = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (kp == MAP_FAILED)
			die("mmap", errno);
		kt[r] = write_blocks(out, kp, &kok, &kefault);
		munmap(kp, len);
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len) < 0)
			die("fallocate", errno);
	}
	double x = bench_median(vt, ROUNDS) / SYS_BLOCKS;
	double y = bench_median(kt, ROUNDS) / SYS_BLOCKS;
	printf("syscall engine=%s blksize=%zu blocks=%d ok=%d efault=%d us_per_block=%.3f kernel_us_per_block=%.3f ratio=%.3f\n",
	       engine, SYS_BS, SYS_BLOCKS, ok, efault, x, y, x / y);
	fflush(stdout);
	vm_ram_close(ram);
	close(fd);
	close(out);
}

int main(void)
{
	const size_t sizes[] = { 4096, 65536, 2097152 };
	const struct { const char *name; int flag; } engines[] = {
		{ "sigsegv", VM_ENGINE_SIGSEGV },
		{ "uffd", VM_ENGINE_UFFD },
	};
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

	for (size_t e = 0; e < sizeof(engines) / sizeof(engines[0]); e++) {
		if ((rc = vm_engine_probe(engines[e].name)) < 0) {
			printf("pagefault engine=%s unavailable: %s\n", engines[e].name, strerror(-rc));
			continue;
		}
		engine_flag = engines[e].flag;
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			vm_bigfile file = { .ops = &noop_ops, .blksize = sizes[i] };
			size_t nblk = TOTAL / sizes[i];
			double vt[ROUNDS], kt[ROUNDS];

			/* Warm-up: both sides once, memory given back. */
			virtmem_round(ram, &file);
			kernel_round(fd, kp);
			sleeps = 0;
			for (int r = 0; r < ROUNDS; r++) {
				vt[r] = virtmem_round(ram, &file);
				kt[r] = kernel_round(fd, kp);
			}
			double x = bench_median(vt, ROUNDS) / (double)nblk;
			double y = bench_median(kt, ROUNDS) / (double)nblk;
			printf("pagefault engine=%s blksize=%zu faults=%zu us_per_fault=%.3f kernel_us_per_block=%.3f ratio=%.3f",
			       engines[e].name, sizes[i], nblk, x, y, x / y);
			if (engines[e].flag == VM_ENGINE_UFFD)
				printf(" handler_sleeps_per_fault=%.2f", (double)sleeps / (double)(ROUNDS * nblk));
			printf("\n");
			fflush(stdout);
		}
		scale(engines[e].name);
		syscalls(engines[e].name);
	}
	vm_ram_close(ram);
	return 0;
}
