/* wcfs.h — what the files of blkmap-wcfs (the read-only FUSE mirror of a
 * blkmap server) share: the node table (node.c), the server listing
 * (list.c fetches its keys, listing.c makes them children), the per-handle block cache
 * (blocks.c), the kernel cache invalidation thread (inval.c), the FUSE
 * operations (ops.c) and logging (main.c).  Internal symbols use the
 * prefix wc_.  Lock order: the table
 * lock, then a node's check_mu, then the idle-handle list's lock, then a
 * node's mu, then a handle's bmu; the invalidation queue's lock is a leaf.  No lock is held across a FUSE reply
 * or a kernel notification; check_mu is held across a manifest GET, and
 * only other checks of the same node wait for it.
 */
#ifndef BLKMAP_WCFS_H
#define BLKMAP_WCFS_H

#define FUSE_USE_VERSION 314

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <fuse_lowlevel.h>

#include <blkmap/blkmap.h>

/* ---- assertions (configure --enable-checks defines BLKMAP_CHECKS) ---- */

/* Prints "blkmap-wcfs: FILE:LINE: assertion failed: COND" and aborts
 * (main.c). */
void wc_assert_fail(const char *file, int line, const char *cond) __attribute__((noreturn));
#ifdef BLKMAP_CHECKS
#define wc_assert(cond) ((cond) ? (void)0 : wc_assert_fail(__FILE__, __LINE__, #cond))
#else
#define wc_assert(cond) ((void)sizeof(!(cond)))
#endif
/* Does the calling thread hold mu?  glibc records a locked mutex's owner
 * thread; where that is unknown the answer is true (the check is vacuous). */
bool wc_mutex_held(pthread_mutex_t *mu);

/* The whole mirror: one per process. */
struct wc_mirror {
	char url[2048];              /* normalized server URL, no trailing / */
	struct fuse_session *se;
	int verbose;                 /* -d: log decisions */
	int use_syslog;              /* daemonized: log to syslog */
	struct bm_options opt;       /* for every bm_open */
};
extern struct wc_mirror wc_m;

enum wc_kind {
	WC_ROOT,      /* <mnt>/ */
	WC_META,      /* <mnt>/.wcfs/ */
	WC_URLFILE,   /* <mnt>/.wcfs/url */
	WC_VIEW,      /* <mnt>/head/, <mnt>/@<gen>/ or <mnt>/@<tag>/ (path "") */
	WC_DIR,       /* an intermediate component of dataset paths */
	WC_FILE,      /* a dataset at one generation (or head) */
};

/* An open dataset handle shared by the readers of one file; freed (bm_close)
 * when the last reference goes. */
struct wc_ds {
	bm_dataset *bm;
	atomic_int refs;
	uint64_t generation, size;
	size_t blksize;
	uint64_t nstored;            /* blocks that hold data */
	/* The last blocks read (blocks.c): the kernel asks for at most its
	 * read-ahead window (128 KiB) at a time, a block may be 64 MiB.  A
	 * block is kept in units: its pieces (formats 3 and 4), else whole. */
	pthread_mutex_t bmu;
	pthread_cond_t bcv;
	struct wc_slot *slots;
	int nslots;
	unsigned units;              /* per block */
	uint64_t tick;
	uint64_t next;               /* where the last read ended */
	int test_late_ms;            /* BLKMAP_WCFS_TEST_LATE_BLOCK_MS (blocks.c) */
};

/* An inode.  ino is the node's address (the root is FUSE_ROOT_ID).  A node
 * lives while the kernel holds a lookup count on it (static nodes always). */
struct wc_node {
	enum wc_kind kind;
	uint64_t gen;                /* 0: head/; WC_TAG_VIEW(tag) for a tag's
					views and directories */
	char *tag;                   /* the tag of a tag's view or directory, else NULL */
	char *path;                  /* dataset path under the server URL ("" for views) */
	uint64_t nlookup;            /* under the table lock */
	bool is_static;
	struct wc_node *hnext;       /* hash chain, under the table lock */
	pthread_mutex_t check_mu;    /* serializes generation checks and reopens */
	pthread_mutex_t mu;          /* guards ds and what the node shows */
	/* WC_FILE: the current handle, or NULL while closed (idle, beyond the
	 * WC_IDLE_HANDLES most recently used: reopened on demand). */
	struct wc_ds *ds;
	uint64_t generation, size, nstored; /* the file's, kept while closed */
	size_t blksize;
	/* Under node.c's lru_mu: */
	int opens;                   /* FUSE opens not yet released */
	bool in_lru;                 /* in the idle list: opens == 0, ds != NULL */
	struct wc_node *lru_prev, *lru_next;
	_Atomic int64_t last_check_ms; /* head files: last generation check */
	/* Under inval.c's lock: */
	int inval_pending;           /* its jobs queued or running there */
	bool dead;                   /* forgotten: freed after its last job */
};

/* The view gen of <mnt>/@<tag>/ and its directories: a number no
 * generation reaches (generations stay below 2^53), from a hash of the
 * tag.  Files under it are the files of the generation the tag names for
 * each dataset (the same nodes as under @<gen>/). */
#define WC_TAG_BIT ((uint64_t)1 << 63)
static inline uint64_t WC_TAG_VIEW(const char *tag)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *tag; tag++)
		h = (h ^ (unsigned char)*tag) * 1099511628211ULL;
	return WC_TAG_BIT | (h >> 2);
}

/* ---- node.c ---- */
void wc_table_init(void);
void wc_table_clear(void);
struct wc_node *wc_node_of(fuse_ino_t ino);
fuse_ino_t wc_ino_of(const struct wc_node *n);
/* The child called name of directory node parent: a held node (its lookup
 * count raised by one) or NULL with *err = an errno. */
struct wc_node *wc_lookup(struct wc_node *parent, const char *name, int *err);
void wc_forget(struct wc_node *n, uint64_t nlookup);
/* Frees n (out of the table, no job queued for it). */
void wc_node_destroy(struct wc_node *n);
/* Fills st for n. */
void wc_stat(struct wc_node *n, struct stat *st);
/* The seconds the kernel may cache n's attributes and its entry. */
double wc_attr_timeout(const struct wc_node *n);
/* head files: move to the latest generation if it changed (force: now;
 * otherwise at most once per WC_CHECK_MS) and queue the invalidation of
 * the kernel cache of the blocks that changed (inval.c): reply through
 * wc_inval_defer to answer after it. */
void wc_check_generation(struct wc_node *n, bool force);
#define WC_CHECK_MS 1000
/* A reference to n's current dataset handle (NULL while it is closed);
 * give it back with wc_ds_put. */
struct wc_ds *wc_ds_get(struct wc_node *n);
/* The same, reopening a closed handle (at the node's generation; for head/
 * through a generation check): NULL when that fails. */
struct wc_ds *wc_ds_hold(struct wc_node *n);
void wc_ds_put(struct wc_ds *d);
/* Open and release of dataset file n: an open file keeps its handle; the
 * handles of files open nowhere are closed beyond the WC_IDLE_HANDLES most
 * recently used.  wc_node_open: 0 or an errno (the handle cannot be
 * reopened: EIO). */
int wc_node_open(struct wc_node *n);
void wc_node_release(struct wc_node *n);
#define WC_IDLE_HANDLES 8
/* Calls fn for every held node of view gen whose path's parent is dir. */
void wc_table_children(uint64_t gen, const char *dir,
		       void (*fn)(const char *name, bool is_file, void *arg), void *arg);

/* ---- blocks.c ---- */
void wc_blocks_init(struct wc_ds *d);
void wc_blocks_free(struct wc_ds *d);
/* Frees the kept blocks of d (none is loading): its file is open nowhere. */
void wc_blocks_trim(struct wc_ds *d);
/* Reads len bytes at off (within the dataset's size) of d into buf: what
 * it covers is fetched once with bm_read (formats 3 and 4: the pieces it
 * covers, or the rest of the block when the read is sequential; else whole
 * blocks) and kept for the next reads of the same block.  0 or a BM_E*
 * code (bm_last_error(NULL) says why). */
int wc_blocks_read(struct wc_ds *d, uint64_t off, char *buf, size_t len);

/* ---- inval.c ---- */
struct wc_inval;
/* The invalidation thread: started before the FUSE loop, stopped (joined)
 * after it returns and before the session goes. */
int wc_inval_start(void);
void wc_inval_stop(void);
/* A job, allocated before the switch it will invalidate (NULL: no memory). */
struct wc_inval *wc_inval_new(void);
/* Queues job j: drop from the kernel cache what changed in head file n
 * from old (NULL: unknown, the whole file) to new, and n's attributes.  Takes
 * over a reference to each. */
void wc_inval_submit(struct wc_inval *j, struct wc_node *n, struct wc_ds *old, struct wc_ds *new);
/* When n has invalidations queued or running: queues fn(arg) to run after
 * them on the invalidation thread, and returns true.  Otherwise (or out of
 * memory) false: the caller runs it. */
bool wc_inval_defer(struct wc_node *n, void (*fn)(void *arg), void *arg);
/* For freeing a forgotten node: true when it still has jobs (it is then
 * marked dead and the thread frees it after the last one). */
bool wc_inval_keep(struct wc_node *n);

/* ---- list.c ---- */
/* Lists, through the server's listing (bm_list_keys), the datasets of
 * view gen under dir ("" = the top): fn gets each child name once, with
 * is_file when dir/name is itself a dataset of that generation.  Returns
 * the number of children, -1 when the server does not list, or
 * -ENAMETOOLONG when the listing's URL would not fit in WC_URL_MAX. */
int wc_list(uint64_t gen, const char *dir,
	    void (*fn)(const char *name, bool is_file, void *arg), void *arg);

/* ---- listing.c (pure: no I/O, no globals) ---- */
/* A name that may be a dataset path component (FORMAT.md's key charset). */
bool wc_name_ok(const char *name);
/* The children of a directory from the keys below it (relative to it:
 * "<child>/..."), in any order (a listing is untrusted); keys is sorted in
 * place.  fn gets each child once, when its name passes wc_name_ok and
 * <child>/<file> is a key (is_file), or some <child>/.../<file> is, where
 * <file> is manifest.json for gen 0 (head) and gen/<gen>.json otherwise.
 * Returns the number of calls of fn. */
int wc_children(const char **keys, size_t n, uint64_t gen,
		void (*fn)(const char *name, bool is_file, void *arg), void *arg);

/* ---- ops.c ---- */
extern const struct fuse_lowlevel_ops wc_ops;

/* ---- main.c ---- */
void wc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void wc_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* snprintf into buf (n bytes) that never truncates: 0, or -ENAMETOOLONG
 * when the result does not fit (buf then holds "", never a cut name). */
int wc_format(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The longest URL (and dataset path) the mirror builds, NUL included. */
#define WC_URL_MAX 4096

#endif
