/* vmtest.h — test backends shared by the virtmem tests.
 *
 * memfile: a BigFile whose "disk" is an array in memory.  Every word of block
 * b holds PATTERN(b, i) until a block is stored.  It counts loads per block,
 * logs stores in order, can fail chosen loads/stores, and can hold a load
 * until the test releases it (to observe LOADING states and races).
 *
 * basefile: a memfile that also has the overlay trio, whose base layer is a
 * real temporary file mapped read-only; storeblk writes that file, so the
 * base shows stored data (as a mirror would after a commit).
 */
#ifndef BLKMAP_TESTS_VMTEST_H
#define BLKMAP_TESTS_VMTEST_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <virtmem/virtmem.h>

#define PATTERN(b, i) (((uint64_t)(b) << 32) | (uint64_t)(i))
#define MAXLOG 4096

struct memfile {
	vm_bigfile file;
	size_t nblk;
	unsigned char *disk;
	atomic_uint *loads;           /* per block */
	atomic_uint nload_total;
	atomic_int loading_now, loading_max;
	vm_blk_t store_log[MAXLOG];
	atomic_uint nstore;
	/* Atomic: set by the test, read by loads that may run in a uffd
	 * handler thread. */
	_Atomic long fail_load_blk;   /* -1: none */
	_Atomic long fail_store_blk;  /* -1: none */
	_Atomic unsigned load_delay_us;
	/* hold: a load of hold_blk waits until released */
	_Atomic long hold_blk;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int held, released;
	/* overlay */
	int basefd;
	atomic_uint nremmap, nmunmap, nsetup;
	int released_file;
};

static inline uint64_t *memfile_blk(struct memfile *m, vm_blk_t blk)
{
	return (uint64_t *)(m->disk + blk * m->file.blksize);
}

static inline void fill_pattern(void *buf, vm_blk_t blk, size_t blksize)
{
	uint64_t *w = buf;
	for (size_t i = 0; i < blksize / 8; i++)
		w[i] = PATTERN(blk, i);
}

/* A load or store of hold_blk waits until the test releases it. */
static inline void memfile_hold_if(struct memfile *m, vm_blk_t blk)
{
	if ((long)blk != m->hold_blk)
		return;
	pthread_mutex_lock(&m->mu);
	m->held = 1;
	pthread_cond_broadcast(&m->cv);
	while (!m->released)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
}

static int memfile_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	struct memfile *m = (struct memfile *)f;
	int now = atomic_fetch_add(&m->loading_now, 1) + 1, max;
	while (now > (max = atomic_load(&m->loading_max)) &&
	       !atomic_compare_exchange_weak(&m->loading_max, &max, now))
		;
	if (blk < m->nblk)
		atomic_fetch_add(&m->loads[blk], 1);
	atomic_fetch_add(&m->nload_total, 1);
	memfile_hold_if(m, blk);
	if (m->load_delay_us)
		usleep(m->load_delay_us);
	atomic_fetch_sub(&m->loading_now, 1);
	if ((long)blk == m->fail_load_blk || blk >= m->nblk)
		return -EIO;
	memcpy(buf, memfile_blk(m, blk), f->blksize);
	return 0;
}

static int memfile_storeblk(vm_bigfile *f, vm_blk_t blk, const void *buf)
{
	struct memfile *m = (struct memfile *)f;
	memfile_hold_if(m, blk);
	if ((long)blk == m->fail_store_blk)
		return -ENOSPC;
	unsigned n = atomic_fetch_add(&m->nstore, 1);
	if (n < MAXLOG)
		m->store_log[n] = blk;
	memcpy(memfile_blk(m, blk), buf, f->blksize);
	if (m->basefd >= 0 &&
	    pwrite(m->basefd, buf, f->blksize, (off_t)(blk * f->blksize)) != (ssize_t)f->blksize)
		return -EIO;
	return 0;
}

static void memfile_release(vm_bigfile *f)
{
	((struct memfile *)f)->released_file++;
}

static int basefile_setup(vm_bigfile *f, vm_vma *vma, vm_blk_t blk, size_t blklen)
{
	struct memfile *m = (struct memfile *)f;
	atomic_fetch_add(&m->nsetup, 1);
	void *p = mmap(vm_vma_addr(vma), blklen * f->blksize, PROT_READ, MAP_SHARED | MAP_FIXED,
		       m->basefd, (off_t)(blk * f->blksize));
	return p == MAP_FAILED ? -errno : 0;
}

static int basefile_remmap(vm_bigfile *f, vm_vma *vma, vm_blk_t blk)
{
	struct memfile *m = (struct memfile *)f;
	atomic_fetch_add(&m->nremmap, 1);
	void *p = mmap(vm_vma_blk_addr(vma, blk), f->blksize, PROT_READ, MAP_SHARED | MAP_FIXED,
		       m->basefd, (off_t)(blk * f->blksize));
	return p == MAP_FAILED ? -errno : 0;
}

static int basefile_munmap(vm_bigfile *f, vm_vma *vma)
{
	struct memfile *m = (struct memfile *)f;
	(void)vma;
	atomic_fetch_add(&m->nmunmap, 1);
	return 0;
}

static const vm_bigfile_ops memfile_ops = {
	.loadblk = memfile_loadblk,
	.storeblk = memfile_storeblk,
	.release = memfile_release,
};

static const vm_bigfile_ops basefile_ops = {
	.loadblk = memfile_loadblk,
	.storeblk = memfile_storeblk,
	.release = memfile_release,
	.mmap_setup_read = basefile_setup,
	.remmap_blk_read = basefile_remmap,
	.munmap = basefile_munmap,
};

/* A memfile of nblk blocks of blksize; with_base adds the overlay trio. */
static inline struct memfile *memfile_new(size_t blksize, size_t nblk, int with_base)
{
	struct memfile *m = calloc(1, sizeof(*m));
	m->file.ops = with_base ? &basefile_ops : &memfile_ops;
	m->file.blksize = blksize;
	m->nblk = nblk;
	m->disk = malloc(blksize * nblk);
	m->loads = calloc(nblk, sizeof(*m->loads));
	for (size_t b = 0; b < nblk; b++)
		fill_pattern(memfile_blk(m, b), b, blksize);
	m->fail_load_blk = m->fail_store_blk = m->hold_blk = -1;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	m->basefd = -1;
	if (with_base) {
		char path[] = "/tmp/vmtest-base-XXXXXX";
		m->basefd = mkstemp(path);
		unlink(path);
		if (m->basefd < 0 ||
		    pwrite(m->basefd, m->disk, blksize * nblk, 0) != (ssize_t)(blksize * nblk))
			abort();
	}
	return m;
}

static inline void memfile_free(struct memfile *m)
{
	if (m->basefd >= 0)
		close(m->basefd);
	free(m->disk);
	free(m->loads);
	free(m);
}

/* Waits until a held load (or store) has started. */
static inline void memfile_wait_held(struct memfile *m)
{
	pthread_mutex_lock(&m->mu);
	while (!m->held)
		pthread_cond_wait(&m->cv, &m->mu);
	pthread_mutex_unlock(&m->mu);
}

static inline void memfile_release_held(struct memfile *m)
{
	pthread_mutex_lock(&m->mu);
	m->released = 1;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

/* Runs fn in a child process; returns the child's wait status. */
static inline int run_in_child(void (*fn)(void *), void *arg)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		/* The child dies as a plain process would: no test framework
		 * handlers. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		fn(arg);
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	return status;
}

/* Does reading one byte at p work?  (mincore-free check through a pipe:
 * the kernel reports EFAULT instead of faulting.) */
static inline int kernel_can_read(const void *p)
{
	int fds[2];
	if (pipe(fds) < 0)
		abort();
	ssize_t n = write(fds[1], p, 1);
	close(fds[0]);
	close(fds[1]);
	return n == 1;
}

/* ---- fault engines -------------------------------------------------------- */

/* Whether fh takes its faults through userfaultfd ("uffd", "uffd-user"). */
static inline int fh_uffd(vm_fileh *fh)
{
	struct vm_fileh_stats st;
	vm_fileh_stats(fh, &st);
	return strncmp(st.engine, "uffd", 4) == 0;
}

/* Whether new handles in loadblk mode take faults through userfaultfd:
 * VIRTMEM_ENGINE, else the best available. */
static inline int test_engine_uffd(void)
{
	const char *e = getenv("VIRTMEM_ENGINE");
	if (e != NULL && *e != '\0')
		return strcmp(e, "uffd") == 0;
	return vm_engine_probe("uffd") == 0;
}

/* A test program's main calls this first: when VIRTMEM_ENGINE names an
 * engine that cannot run here, the whole program is skipped (exit 77). */
static inline void test_engine_or_skip(void)
{
	const char *e = getenv("VIRTMEM_ENGINE");
	if (e != NULL && *e != '\0' && vm_engine_probe(e) != 0) {
		printf("SKIP: the %s fault engine cannot run here\n", e);
		exit(77);
	}
}

/* Whether the os page at p has a page table entry (/proc/self/pagemap). */
static inline int os_page_present(const void *p)
{
	long pagesize = sysconf(_SC_PAGESIZE);
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || pread(fd, &entry, sizeof(entry), (off_t)((uintptr_t)p / (uintptr_t)pagesize * 8)) != 8)
		abort();
	close(fd);
	return (int)(entry >> 63);
}

/* Whether fh shows memory at p now, without making it do so: the SIGSEGV
 * engine has mapped something readable there (the kernel can read it); the
 * uffd engine has page table entries there (a kernel read would wait for
 * the block to load instead of failing). */
static inline int block_mapped(vm_fileh *fh, const void *p)
{
	return fh_uffd(fh) ? os_page_present(p) : kernel_can_read(p);
}

/* Kernel mappings: the lines of /proc/self/maps for which match(line, arg)
 * holds. */
static inline int kernel_mappings_where(int (*match)(const char *line, const void *arg),
					const void *arg)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	if (f == NULL)
		abort();
	while (fgets(line, sizeof(line), f) != NULL)
		n += match(line, arg) != 0;
	fclose(f);
	return n;
}

struct maps_range {
	uintptr_t lo, hi;
};

static inline int maps_line_inside(const char *line, const void *arg)
{
	const struct maps_range *r = arg;
	unsigned long start, end;
	return sscanf(line, "%lx-%lx", &start, &end) == 2 && start >= r->lo && end <= r->hi;
}

/* Kernel mappings (lines of /proc/self/maps) inside [p, p + len). */
static inline int kernel_mappings_in(const void *p, size_t len)
{
	const struct maps_range r = { (uintptr_t)p, (uintptr_t)p + len };
	return kernel_mappings_where(maps_line_inside, &r);
}

/* ---- children ------------------------------------------------------------- */

/* The end of a child (run_in_child) that checks a handle works: maps
 * blocks [0, nblk) of fh, reads block blk (it must hold PATTERN(blk, 0)),
 * unmaps, closes fh and then its pool ram, and exits 0.  Exits 3 when the
 * block cannot be mapped or reads wrong, 4 when the pool does not close
 * cleanly (something of it still in use). */
static inline void child_reads_block_closes_and_exits(vm_fileh *fh, vm_ram *ram, size_t nblk,
						      vm_blk_t blk)
{
	vm_vma *vma;
	if (vm_fileh_mmap(&vma, fh, 0, nblk) != 0 ||
	    *(volatile uint64_t *)vm_vma_blk_addr(vma, blk) != PATTERN(blk, 0))
		_exit(3);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	if (vm_ram_close(ram) != 0)
		_exit(4);
	_exit(0);
}

#endif /* BLKMAP_TESTS_VMTEST_H */
