/* demo.c — virtmem-demo: maps a synthetic file (1 GiB, or the MiB given as
 * argument) through libvirtmem with a RAM budget (1/16 of it, at least
 * 32 MiB) smaller than what it reads, reads and writes it, writes the dirty
 * blocks out, and shows what happened.  The backend computes each block
 * (value i at index i as little-endian uint64) until a block is stored; stored
 * blocks live in a sparse temporary file.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <virtmem/virtmem.h>

struct synth {
	vm_bigfile file;
	int fd;                 /* stored blocks */
	unsigned char *stored;  /* one byte per block: stored in fd */
	uint64_t nblk;
};

static int synth_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	struct synth *s = (struct synth *)f;
	if (blk >= s->nblk)
		return -EFAULT;
	if (s->stored[blk]) {
		ssize_t n = pread(s->fd, buf, f->blksize, (off_t)(blk * f->blksize));
		return n == (ssize_t)f->blksize ? 0 : -EIO;
	}
	uint64_t *v = buf, n = f->blksize / sizeof(*v), first = blk * n;
	for (uint64_t i = 0; i < n; i++)
		v[i] = first + i;
	return 0;
}

static int synth_storeblk(vm_bigfile *f, vm_blk_t blk, const void *buf)
{
	struct synth *s = (struct synth *)f;
	ssize_t n = pwrite(s->fd, buf, f->blksize, (off_t)(blk * f->blksize));
	if (n != (ssize_t)f->blksize)
		return n < 0 ? -errno : -EIO;
	s->stored[blk] = 1;
	return 0;
}

static const vm_bigfile_ops synth_ops = {
	.loadblk = synth_loadblk,
	.storeblk = synth_storeblk,
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "virtmem-demo: %s: %s\n", what, vm_strerror(rc));
	exit(1);
}

static void show(const char *step, vm_fileh *fh, vm_ram *ram, double secs)
{
	struct vm_fileh_stats st;
	vm_fileh_stats(fh, &st);
	printf("%-34s %7.1f ms  loads=%-5" PRIu64 " reclaimed=%-5" PRIu64
	       " dirty=%-3zu stores=%-3" PRIu64 " ram=%zu MiB\n",
	       step, secs * 1e3, st.loads, st.reclaimed, st.ndirty, st.stores,
	       vm_ram_used(ram) >> 20);
}

#define MIB_MIN 256  /* a quarter of it is twice the smallest budget */
#define MIB_MAX 65536

int main(int argc, char **argv)
{
	const size_t blksize = 2 << 20;
	size_t size = (size_t)1 << 30;
	char path[] = "/tmp/virtmem-demo-XXXXXX";
	struct synth s = { .file = { .ops = &synth_ops, .blksize = blksize } };
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	double t;
	int rc;

	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		printf("usage: virtmem-demo [MIB]\n\n"
		       "Maps a synthetic file of MIB MiB (default 1024; %d to %d, even) with a\n"
		       "RAM budget of 1/16 of it (at least 32 MiB), reads a quarter, writes one\n"
		       "value in 8 blocks, writes them out, and verifies them through a fresh handle.\n"
		       "Exit status: 0 verified, 1 error or a value that did not verify, 2 usage error.\n",
		       MIB_MIN, MIB_MAX);
		return 0;
	}
	if (argc > 1) {
		char *e;
		unsigned long mib = strtoul(argv[1], &e, 10);
		if (argc > 2 || argv[1][0] < '0' || argv[1][0] > '9' || *e != '\0' || mib < MIB_MIN ||
		    mib > MIB_MAX || mib % 2) {
			fprintf(stderr, "virtmem-demo: expected one MIB, an even number from %d to %d (see --help)\n",
				MIB_MIN, MIB_MAX);
			return 2;
		}
		size = (size_t)mib << 20;
	}
	s.nblk = size / blksize;
	s.stored = calloc(s.nblk, 1);
	s.fd = mkstemp(path);
	if (s.fd < 0 || s.stored == NULL)
		die("temporary store", -errno);
	unlink(path);

	/* At least 16 blocks: the 8 dirty ones never fill it. */
	if ((rc = vm_ram_open(&ram, size / 16 > 16 * blksize ? size / 16 : 16 * blksize)) < 0)
		die("vm_ram_open", rc);
	if ((rc = vm_fileh_open(&fh, &s.file, ram, 0)) < 0)
		die("vm_fileh_open", rc);
	if ((rc = vm_fileh_mmap(&vma, fh, 0, s.nblk)) < 0)
		die("vm_fileh_mmap", rc);
	uint64_t *v = vm_vma_addr(vma), n = size / sizeof(*v);
	printf("mapped a %zu MiB file of %zu KiB blocks at %p with a %zu MiB RAM budget\n",
	       size >> 20, blksize >> 10, (void *)v, vm_ram_budget(ram) >> 20);

	/* Read a quarter of the file: four times the budget, so clean pages
	 * are reclaimed as the scan goes. */
	t = now();
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n / 4; i++)
		sum += v[i];
	uint64_t want = (n / 4) * (n / 4 - 1) / 2;
	char label[64];
	snprintf(label, sizeof(label), "read %zu MiB (sum check)", size >> 22);
	show(label, fh, ram, now() - t);
	if (sum != want) {
		fprintf(stderr, "virtmem-demo: sum %" PRIu64 " != %" PRIu64 "\n", sum, want);
		return 1;
	}

	/* Write one value in 8 blocks, spread over the file. */
	const uint64_t every = s.nblk / 8;
	t = now();
	for (uint64_t b = 0; b < 8 * every; b += every)
		v[b * (blksize / sizeof(*v))] = UINT64_MAX - b;
	show("write 1 value in 8 blocks", fh, ram, now() - t);

	t = now();
	if ((rc = vm_fileh_dirty_writeout(fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED)) < 0)
		die("writeout", rc);
	show("writeout (store + mark stored)", fh, ram, now() - t);

	/* Read the written values back through a second, fresh handle. */
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	if ((rc = vm_fileh_open(&fh, &s.file, ram, 0)) < 0 ||
	    (rc = vm_fileh_mmap(&vma, fh, 0, s.nblk)) < 0)
		die("reopen", rc);
	v = vm_vma_addr(vma);
	t = now();
	for (uint64_t b = 0; b < 8 * every; b += every)
		if (v[b * (blksize / sizeof(*v))] != UINT64_MAX - b) {
			fprintf(stderr, "virtmem-demo: block %" PRIu64 " lost its write\n", b);
			return 1;
		}
	show("reopen, verify the 8 writes", fh, ram, now() - t);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	vm_ram_close(ram);
	close(s.fd);
	free(s.stored);
	printf("ok\n");
	return 0;
}
