/* overlay.c — mmap-overlay mode: reading a dataset through the wcfs mirror.
 *
 * When a live mirror shows the handle's generation as <mnt>/@<gen>/<path>,
 * that file is the read-only base layer of every mapping (the BigFile mmap
 * trio below): reads go to the kernel page cache the mirror fills, shared by
 * every process on the host, and virtmem spends RAM only on dirty pages.
 * After a commit the base moves to the new generation's file.  Bytes past
 * the end of the file (the tail of the last block) are mapped as anonymous
 * zero pages, so they read as zeros as in loadblk mode instead of SIGBUS.
 * Owns: ds->base_fd, ds->base_size, ds->wcfs_mnt, ds->wcfs_path.
 * Locking: the trio runs under virtmem's lock (it must not call back into
 * virtmem); base_fd changes only in bm_commit, which runs alone.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ---- the mmap trio ---------------------------------------------------------- */

/* Maps blocks [blk, blk+n) of the base at addr: file pages up to the end of
 * the file, anonymous zero pages past it. */
static int map_base(bm_dataset *ds, void *addr, vm_blk_t blk, size_t n)
{
	size_t bs = ds->file.blksize, pagesize = (size_t)sysconf(_SC_PAGESIZE);
	/* Not past what the next commit publishes (after a shrink). */
	uint64_t off = blk * bs, size = ds->base_size < ds->new_size ? ds->base_size : ds->new_size;
	size_t len = n * bs, file_len = 0;

	if (off < size) {
		uint64_t left = size - off;
		file_len = left < len ? (size_t)((left + pagesize - 1) & ~(uint64_t)(pagesize - 1)) : len;
		if (file_len > len)
			file_len = len;
		if (mmap(addr, file_len, PROT_READ, MAP_SHARED | MAP_FIXED, ds->base_fd, (off_t)off) == MAP_FAILED)
			return -errno;
	}
	if (file_len < len &&
	    mmap((char *)addr + file_len, len - file_len, PROT_READ,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		return -errno;
	return 0;
}

int bm_overlay_setup_read(vm_bigfile *f, vm_vma *vma, vm_blk_t blk, size_t blklen)
{
	return map_base((bm_dataset *)f, vm_vma_addr(vma), blk, blklen);
}

int bm_overlay_remmap(vm_bigfile *f, vm_vma *vma, vm_blk_t blk)
{
	return map_base((bm_dataset *)f, vm_vma_blk_addr(vma, blk), blk, 1);
}

int bm_overlay_munmap(vm_bigfile *f, vm_vma *vma)
{
	/* Nothing of ours per mapping: virtmem unmaps the range itself. */
	(void)f;
	(void)vma;
	return 0;
}

/* ---- finding the mirror ---------------------------------------------------- */

/* Reads <mnt>/.wcfs/url; 0 and out set, or -errno (ENOTCONN: a crashed
 * mirror; ENOENT: nothing mounted there). */
static int read_mirror_url(const char *mnt, char *out, size_t n)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/.wcfs/url", mnt);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t got = read(fd, out, n - 1);
	int err = errno;
	close(fd);
	if (got < 0)
		return -err;
	out[got] = '\0';
	out[strcspn(out, "\n")] = '\0';
	return 0;
}

/* Is mnt a live mirror of a server that holds ds?  Sets ds->wcfs_path. */
static bool mirror_serves(bm_dataset *ds, const char *mnt, char *why, size_t n)
{
	char url[2048], norm[2048];
	int rc = read_mirror_url(mnt, url, sizeof(url));

	if (rc < 0) {
		bm_fmt(why, n, "no live mirror at %s (%s)", mnt, strerror(-rc));
		return false;
	}
	if (bm_wcfs_normalize_url(ds->url, norm, sizeof(norm)) < 0)
		return false;
	size_t ul = strlen(url);
	if (ul == 0 || strncmp(norm, url, ul) != 0 || norm[ul] != '/') {
		bm_fmt(why, n, "the mirror at %s serves %s, not this dataset", mnt, url);
		return false;
	}
	free(ds->wcfs_path);
	ds->wcfs_path = strdup(norm + ul + 1);
	return ds->wcfs_path != NULL;
}

/* Opens <mnt>/@<gen>/<path> and checks it is the dataset's size. */
static int open_base(bm_dataset *ds, const char *mnt, uint64_t gen, uint64_t size, char *why, size_t n)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/@%" PRIu64 "/%s", mnt, gen, ds->wcfs_path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		bm_fmt(why, n, "the mirror does not show %s (%s)", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size) {
		bm_fmt(why, n, "the mirror's %s has %lld bytes, the dataset %" PRIu64, path,
			 (long long)st.st_size, size);
		close(fd);
		return -1;
	}
	return fd;
}

void bm_overlay_probe(bm_dataset *ds)
{
	const char *want = ds->opt.wcfs;
	char mnt[4096], why[512] = "", norm[2048];

	ds->base_fd = -1;
	if (ds->flat || !ds->exists) {
		bm_fmt(ds->mode_why, sizeof(ds->mode_why), "%s",
			 ds->flat ? "a flat object is not mirrored" : "a new dataset is not mirrored yet");
		return;
	}
	if (want && strcmp(want, "off") == 0) {
		bm_fmt(ds->mode_why, sizeof(ds->mode_why), "BLKMAP_WCFS=off");
		return;
	}
	bool found = false;
	if (want && *want) {
		snprintf(mnt, sizeof(mnt), "%s", want);
		found = mirror_serves(ds, mnt, why, sizeof(why));
	} else if (bm_wcfs_normalize_url(ds->url, norm, sizeof(norm)) == 0) {
		/* The server URL is a prefix of the dataset URL ending at a '/':
		 * try the default mountpoint of each, shortest first. */
		char *p = strstr(norm, "://") + 3;
		for (char *slash = strchr(p, '/'); slash && !found; slash = strchr(slash + 1, '/')) {
			*slash = '\0';
			if (bm_wcfs_default_mountpoint(norm, mnt, sizeof(mnt)) == 0 &&
			    access(mnt, F_OK) == 0)
				found = mirror_serves(ds, mnt, why, sizeof(why));
			else if (why[0] == '\0')
				bm_fmt(why, sizeof(why), "no mirror mounted at %s", mnt);
			*slash = '/';
		}
	}
	if (found) {
		ds->base_fd = open_base(ds, mnt, ds->manifest->generation, ds->manifest->size, why, sizeof(why));
		found = ds->base_fd >= 0;
	}
	if (!found) {
		bm_fmt(ds->mode_why, sizeof(ds->mode_why), "%s", why[0] ? why : "no mirror found");
		return;
	}
	ds->wcfs_mnt = strdup(mnt);
	ds->overlay = ds->wcfs_mnt != NULL;
	ds->base_size = ds->manifest->size;
	bm_fmt(ds->mode_why, sizeof(ds->mode_why), "mirror at %s", mnt);
	if (ds->opt.verbose)
		bm_log("%s: overlay mode through %s/@%" PRIu64 "/%s", ds->url, mnt,
		       ds->manifest->generation, ds->wcfs_path);
}

int bm_overlay_move_base(bm_dataset *ds, uint64_t gen, uint64_t size)
{
	char why[512];
	int fd = open_base(ds, ds->wcfs_mnt, gen, size, why, sizeof(why));

	if (fd < 0) {
		bm_log("%s: cannot read generation %" PRIu64 " through the mirror: %s; "
		       "pages that would show it stay in RAM", ds->url, gen, why);
		return -1;
	}
	/* Mappings of the old file stay valid: the blocks we did not change
	 * are the same in both generations. */
	close(ds->base_fd);
	ds->base_fd = fd;
	ds->base_size = size;
	return 0;
}

void bm_overlay_close(bm_dataset *ds)
{
	if (ds->base_fd >= 0)
		close(ds->base_fd);
	ds->base_fd = -1;
	free(ds->wcfs_mnt);
	free(ds->wcfs_path);
	ds->wcfs_mnt = ds->wcfs_path = NULL;
}
