/* blkmap.h — libblkmap: map a dataset that lives on an HTTP object server
 * into memory.
 *
 * A dataset at URL <base>/<path> is a JSON manifest plus immutable block
 * objects (docs/FORMAT.md).  bm_open() reads the manifest; bm_map() gives a
 * pointer whose pages load on first access (HTTP GET of the block object,
 * checksum verified, retried); writes make pages dirty; bm_commit() uploads
 * the dirty blocks in parallel and publishes them as the next generation
 * with a compare-and-swap of the manifest.  A URL that holds a plain object
 * (no manifest) maps read-only as a "flat" dataset through Range GETs.
 *
 * Errors: functions return 0 or a negative value, either a BM_E* code below
 * or -errno.  bm_strerror() names the code; bm_last_error() gives the one-line
 * message of the last failure on a dataset, naming the URL and what was
 * wrong.  A load that fails inside a page fault (after its retries) cannot
 * return anything: the access gets SIGBUS at the faulting address, and a
 * line on stderr names the URL and the block; a later access retries.
 *
 * Threads: a dataset may be used from any thread; its mappings may be read
 * and written by any number of threads at once.  bm_commit, bm_discard,
 * bm_refresh, bm_attrs_set and bm_close must not run concurrently with each
 * other on one dataset.
 */
#ifndef BLKMAP_BLKMAP_H
#define BLKMAP_BLKMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bm_dataset bm_dataset;
typedef struct bm_mapping bm_mapping;

enum bm_error {
	BM_EINVAL = -1001,    /* bad argument or option */
	BM_EHTTP = -1002,     /* the server could not be reached or kept failing */
	BM_ENOTFOUND = -1003, /* no dataset or object at the URL (404) */
	BM_EFORMAT = -1004,   /* a bad manifest or a bad response from the server */
	BM_ECHECKSUM = -1005, /* block bytes do not match their checksum */
	BM_ECONFLICT = -1006, /* another writer committed first */
	BM_EREADONLY = -1007, /* writing to a flat object or an old generation */
	BM_ECHANGED = -1008,  /* a flat object changed on the server while mapped */
	BM_EAUTH = -1009,     /* the server refused the credentials (401/403) */
	BM_EBUSY = -1010,     /* the dataset has dirty pages or mappings in the way */
	BM_ENOMEM = -1011,    /* out of memory or RAM budget */
	BM_EIO = -1012,       /* a local file could not be read or written */
};

/* Text for a code returned by this library (BM_E* or -errno). */
const char *bm_strerror(int err);

/* ---- options -------------------------------------------------------------- */

enum bm_open_flags {
	BM_OPEN_CREATE = 1 << 0, /* create an empty dataset when none exists */
	/* The URL is a plain object: open it with one Range GET of its first
	 * block, asking for no manifest (one request, where an open that must
	 * find out sends two; no 404 in the server's log).  Not with
	 * BM_OPEN_CREATE, a generation or a tag. */
	BM_OPEN_FLAT = 1 << 1,
};

struct bm_options {
	size_t cache_bytes;       /* RAM budget for cached blocks   BLKMAP_CACHE_BYTES (512 MiB) */
	const char *token;        /* bearer token, or NULL           BLKMAP_TOKEN */
	long connect_timeout_ms;  /* per connection attempt          BLKMAP_CONNECT_TIMEOUT_MS (5000) */
	long timeout_ms;          /* per request                     BLKMAP_TIMEOUT_MS (60000) */
	int retries;              /* tries after the first failure   BLKMAP_RETRIES (6) */
	long retry_base_ms;       /* first backoff, doubled per try  BLKMAP_RETRY_BASE_MS (50) */
	/* Connections to the server (and read-ahead workers); a dataset's
	 * read-ahead raises both up to 4 times this when answers are slow
	 * (docs/client.md, "Fetch sizes")  BLKMAP_CONNECTIONS (16) */
	int connections;
	size_t readahead_bytes;   /* largest read-ahead window       BLKMAP_READAHEAD_BYTES (64 MiB) */
	size_t spare_bytes;       /* zeroed RAM kept ready for loads BLKMAP_SPARE_BYTES (16 MiB) */
	/* Block size of a created dataset (0: 1 MiB), and of the blocks a
	 * flat object is read in (0: 16 KiB)       BLKMAP_BLKSIZE (0) */
	size_t blksize;
	uint64_t generation;      /* open as of this generation; 0 = latest */
	int flags;                /* BM_OPEN_* */
	int verbose;              /* log requests and decisions to stderr */
	/* The wcfs mirror to read through (mmap-overlay mode): a mountpoint,
	 * "off", or NULL for the default mountpoint of the server  BLKMAP_WCFS */
	const char *wcfs;
	/* For tests and tools: called at each stage of a commit: "uploaded"
	 * (blocks and index pages stored, manifest not yet replaced), "checked"
	 * (the gc guard's last look found no gc running: the manifest PUT
	 * comes next, and must land within the gc settle time), "manifest-put" (the
	 * manifest PUT succeeded; its ETag not yet learnt when the answer had
	 * none), "swapped" (published); may be NULL. */
	void (*commit_hook)(const char *stage, void *arg);
	void *commit_hook_arg;
	/* Open as of the generation this tag names (bm_tag_set), when not
	 * NULL; generation must then be 0. */
	const char *tag;
	/* The pieces of a created dataset's blocks, each with a sum of its
	 * own (docs/FORMAT.md, "Version 4"): a read of part of a block
	 * fetches and checks only its pieces.  0: 16 KiB when blocks are
	 * larger than 64 KiB (blksize / 1024 for blocks of more than 16
	 * MiB), else none (format 2); 65536 asks for format 3's 64 KiB
	 * pieces; another power of two from 4 KiB to blksize / 2, at most
	 * 1024 a block, for those in format 4.  An existing dataset keeps its
	 * own, as its blksize  BLKMAP_PIECE_BYTES (0) */
	size_t piece_bytes;
};

/* Fills *o with the defaults, then overrides them from the environment
 * variables named above.  Returns BM_EINVAL (with a message on stderr naming
 * the variable) when one does not parse. */
int bm_options_init(struct bm_options *o);

/* ---- datasets ------------------------------------------------------------- */

/* Opens the dataset at url (http://host:port/path, or s3://BUCKET/PREFIX:
 * docs/s3.md).  With BM_OPEN_CREATE and
 * no dataset at url, the handle is a new empty dataset (generation 0, size 0,
 * blksize o->blksize) that the first commit creates.  opt may be NULL for
 * bm_options_init()'s defaults. */
int bm_open(bm_dataset **dsp, const char *url, const struct bm_options *opt);

/* Unmaps everything, drops dirty pages (commit first), frees the handle. */
void bm_close(bm_dataset *ds);

uint64_t bm_size(const bm_dataset *ds);
size_t bm_blksize(const bm_dataset *ds);
uint64_t bm_generation(const bm_dataset *ds);
int bm_is_flat(const bm_dataset *ds);
/* The format version (docs/FORMAT.md) of the generation the handle shows:
 * 1 to 4; 0 for a flat object and for a dataset not yet committed. */
int bm_format_version(const bm_dataset *ds);
/* The bytes of a piece of the handle's blocks, each checked on its own
 * (formats 3 and 4; a new dataset: those its first commit writes); 0 when
 * its blocks have no pieces. */
size_t bm_piece_bytes(const bm_dataset *ds);
/* Number of blocks that hold data (the rest are holes). */
uint64_t bm_nblocks_stored(const bm_dataset *ds);
const char *bm_url(const bm_dataset *ds);
/* 1 when the handle's generation was the latest when it was opened,
 * refreshed or last committed (a commit may publish from it); 0 for an
 * old generation (its commit conflicts), or once the handle learnt that
 * another writer published on top of its commit. */
int bm_is_latest(bm_dataset *ds);

/* Sets the size the next commit publishes.  Blocks past the new end are
 * dropped; new bytes read as zeros, also bytes that a shrink cut and a grow
 * before the commit brought back inside the size.  BM_EBUSY while mappings
 * exist.  In overlay mode such a shrink makes the next bm_map switch the
 * handle to loadblk mode (the mirror's file still has the cut bytes). */
int bm_resize(bm_dataset *ds, uint64_t size);

/* ---- mappings ------------------------------------------------------------- */

/* Maps bytes [offset, offset+len) of the dataset (len 0: to the end).
 * *addrp points at offset.  Bytes past the dataset's size up to the end of
 * its last block read as zeros and are not published by a commit. */
int bm_map(bm_dataset *ds, uint64_t offset, size_t len, void **addrp, bm_mapping **mp);
void bm_unmap(bm_mapping *m);

/* Reads up to len bytes at offset of the handle's generation into buf,
 * without mapping or caching (what the wcfs mirror serves reads with): each
 * block the range covers whole is fetched whole; of a block it covers in
 * part, a format 3 or 4 dataset fetches only the pieces it needs (one
 * Range GET), the others the whole block; all verified and retried like a
 * page fault's.  Returns the number of bytes read (0 at or past the end;
 * fewer when a later block fails) or a negative error. */
int64_t bm_read(bm_dataset *ds, uint64_t offset, void *buf, size_t len);

/* Many block reads in flight at once from the calling thread, over one
 * connection pool's multi handle (no thread is made): what bm_read does
 * for one block, for up to max blocks together, at most the dataset's
 * connections (BLKMAP_CONNECTIONS) less one, left for the index pages
 * the reads look blocks up in; they are held until bm_reads_free.
 * bm_reads_new: 0, or BM_EINVAL with a bound of one connection (then use
 * bm_read).  bm_reads_start reads block index
 * (bm_blksize bytes into buf, which lives until its read ends; zeros past
 * the end of the content) and returns 0, or BM_EBUSY when max reads are
 * in flight, BM_EINVAL past the last block, another error for a read
 * that failed at once.  bm_reads_wait waits for a read to end: its result
 * (0, or the error bm_read would give, bm_last_error naming it), with
 * *tagp the tag it was started with; 1 when none is in flight.  One
 * thread uses a bm_reads at a time; bm_reads_free stops the reads still
 * in flight. */
typedef struct bm_reads bm_reads;
int bm_reads_new(bm_dataset *ds, int max, bm_reads **rp);
int bm_reads_start(bm_reads *r, uint64_t index, void *buf, void *tag);
int bm_reads_wait(bm_reads *r, void **tagp);
void bm_reads_free(bm_reads *r);

/* The checksum of block index of the handle's generation, as the manifest
 * names it (32 hex digits and a NUL into sum, n >= 33), so that a reader of
 * two generations can tell which blocks changed (the wcfs mirror does).
 * Returns 1 for a stored block, 0 for a hole (sum ""), BM_EINVAL past the
 * last block, for a flat dataset or when n is too small, or the error of an
 * index page (format 2) that cannot be read (bm_last_error names it). */
int bm_block_sum(bm_dataset *ds, uint64_t index, char *sum, size_t n);

/* The first stored block (not a hole) at or after block from, in the
 * handle's generation: 1 with *index set, 0 when there is none (or the
 * dataset is flat), or the error of an index page (format 2) that cannot
 * be read.  With bm_block_sum it walks only the stored blocks: a
 * dataset's size is the server's word, its block count can be 2^38. */
int bm_next_block(bm_dataset *ds, uint64_t from, uint64_t *index);

/* The block ranges [first, first + count) whose content differs between
 * the generations of handles a and b of one dataset (same block size), to
 * fn in ascending order; a non-zero return of fn stops the walk and is
 * returned.  A hole and a block past a generation's end count as the same
 * (zeros): a caller that cares about the sizes compares them.  Walks only
 * stored blocks, and of two format 2 generations only the index pages
 * whose sums differ: a 1-block change costs a few pages, whatever the
 * size.  BM_EINVAL for a flat dataset or two block sizes; an index page
 * that cannot be read is its error (bm_last_error(a) names it).  Neither
 * handle may be refreshed or committed meanwhile. */
int bm_diff_blocks(bm_dataset *a, bm_dataset *b, int (*fn)(void *arg, uint64_t first, uint64_t count),
		   void *arg);

/* ---- changes --------------------------------------------------------------- */

/* Uploads every dirty block and publishes them as generation G+1, where G is
 * the handle's generation.  On success *genp (if not NULL) is the new
 * generation and the pages are clean.  BM_ECONFLICT when another writer
 * published since G (or the handle is at an old generation): nothing is
 * published and the dirty pages stay, for bm_discard() or a retry after
 * resolving.  Any other failure also leaves every dirty page dirty. */
int bm_commit(bm_dataset *ds, uint64_t *genp);

/* Drops every dirty page: the mapping shows the handle's generation again. */
int bm_discard(bm_dataset *ds);

/* Moves the handle to the latest generation: blocks that changed are dropped
 * from the cache.  BM_EBUSY when there are dirty pages; BM_EFORMAT when the
 * server's generation is older than the handle's (it never goes back). */
int bm_refresh(bm_dataset *ds);

/* Writes len bytes at offset straight into the next generation without
 * mapping (what `blkmap put` uses): every block it covers fully is hashed
 * and uploaded if it changed; partly covered blocks are merged with their
 * bytes in the next generation (those of the block written last are kept:
 * not fetched again).  Call bm_commit() to publish.  Mappings show the published
 * generation and their own writes: these bytes once committed.  A block
 * also written through a mapping before the commit gets the mapping's
 * bytes. */
int bm_write(bm_dataset *ds, uint64_t offset, const void *buf, size_t len);

/* ---- user attributes --------------------------------------------------------- */

/* Each generation carries user attributes: a JSON object of at most
 * BM_ATTRS_MAX bytes in compact form ("attrs" in the manifest, FORMAT.md),
 * for what the bytes mean (dtype, shape, units...).  A commit carries them
 * over to the next generation unless bm_attrs_set changed them. */
#define BM_ATTRS_MAX 65536

/* Copies the attributes, as compact JSON text of an object ("{}" when there
 * are none), into buf (n bytes, NUL-terminated, cut when n is too small):
 * those set since the last commit, else the handle's generation's.
 * Returns the length of the whole text (without the NUL), like snprintf:
 * a buffer of BM_ATTRS_MAX + 1 bytes always suffices. */
int bm_attrs_get(bm_dataset *ds, char *buf, size_t n);

/* Sets the attributes the next bm_commit publishes to json, the text of a
 * JSON object (NUL-terminated); a commit with only this change publishes a
 * new generation.  BM_EINVAL when json is not an object or longer than
 * BM_ATTRS_MAX compact (bm_last_error says why), BM_EREADONLY for a flat
 * object.  bm_discard drops what was set. */
int bm_attrs_set(bm_dataset *ds, const char *json);

/* ---- history ---------------------------------------------------------------- */

struct bm_generation_info {
	uint64_t generation;
	uint64_t size;
	size_t blksize;
	uint64_t nblocks;          /* non-empty blocks */
	char created[40];          /* "" if not recorded */
};

/* Reads what generation gen of the dataset was, from its kept manifest.
 * BM_ENOTFOUND when that generation is not kept. */
int bm_generation_info(bm_dataset *ds, uint64_t gen, struct bm_generation_info *gi);

/* The newest kept generation below `before` (the walk `blkmap log` does):
 * 1 with *gi set, 0 when there is none — also once BM_LOG_MAX_MISSING
 * generations in a row are not kept (the generation numbers are the
 * server's word: the walk stays bounded) — or a negative error.  Starting
 * with before = bm_generation(ds) + 1 lists the generations newest first. */
#define BM_LOG_MAX_MISSING 64
int bm_generation_prev(bm_dataset *ds, uint64_t before, struct bm_generation_info *gi);

/* The kept generations of the dataset at or below its own, newest first:
 * *gensp (malloc'd, the caller frees) holds *np numbers, the handle's own
 * generation always first (kept or not yet).  A store that lists (S3,
 * blkmap-server, WebDAV with PROPFIND) is listed, a page at a time; on
 * another each generation is looked up from the newest down, giving up
 * after BM_LOG_MAX_MISSING in a row that are not kept: *unlookedp (may be
 * NULL) is then the highest generation not looked up, else 0.  0, or
 * BM_EINVAL for a flat object, or the store's error. */
int bm_generations(bm_dataset *ds, uint64_t **gensp, size_t *np, uint64_t *unlookedp);

/* ---- listing ------------------------------------------------------------------- */

/* Calls fn(key, size, arg) for each object under url (http(s):// or
 * s3://, a store's base) whose key, relative to url, starts with prefix,
 * in key order, a page of the server's listing at a time (blkmap-server's
 * JSON, WebDAV PROPFIND, S3 ListObjectsV2); fn returning non-zero stops the
 * walk.  opt may be NULL (defaults).  0, BM_EINVAL when the server does not
 * list (nginx) or url is not one, or the store's error; bm_last_error(NULL)
 * says why. */
int bm_list_keys(const char *url, const struct bm_options *opt, const char *prefix,
		 int (*fn)(const char *key, uint64_t size, void *arg), void *arg);

/* ---- tags ------------------------------------------------------------------------ */

/* A tag names a kept generation; bm_gc keeps it (docs/FORMAT.md, "Tags").
 * Names: 1..100 of A-Z a-z 0-9 . _ -, not starting with '.' or '-', not
 * all digits.  These calls take a URL and open no dataset handle; opt may
 * be NULL for bm_options_init()'s defaults.  Errors: bm_last_error(NULL). */

/* 1 when name is a tag name by the rules above, else 0 (what bm_tag_set
 * and bm_tag_delete refuse with BM_EINVAL before they touch the URL). */
int bm_tag_name_valid(const char *name);
/* Points tag name at generation gen (0: the latest), replacing where it
 * pointed; *tagged (may be NULL) gets the generation.  BM_ENOTFOUND when
 * that generation is not kept, BM_EINVAL for a bad name. */
int bm_tag_set(const char *url, const struct bm_options *opt, const char *name, uint64_t gen,
	       uint64_t *tagged);
/* Removes tag name: BM_ENOTFOUND when there is no such tag. */
int bm_tag_delete(const char *url, const struct bm_options *opt, const char *name);
/* Calls fn for each tag in name order; fn's non-zero return stops the walk
 * and is returned. */
int bm_tags_list(const char *url, const struct bm_options *opt,
		 int (*fn)(void *arg, const char *name, uint64_t gen), void *arg);

/* ---- comparing generations ------------------------------------------------------- */

struct bm_diff_info {
	uint64_t generation_a, generation_b;
	uint64_t size_a, size_b;
	size_t blksize;
};

/* Calls fn for each range of blocks [first, first + count) whose content
 * differs between two kept generations of the dataset at url, ascending
 * and coalesced (a block past a generation's end counts as a hole).  a and
 * b are each a generation number ("12"), a tag name, or NULL for the
 * latest.  Version 2 datasets read only the index pages whose sums differ.
 * The two must have the same block size (BM_EINVAL).  fn's non-zero return
 * stops the walk and is returned.  Errors: bm_last_error(NULL). */
int bm_diff(const char *url, const struct bm_options *opt, const char *a, const char *b,
	    struct bm_diff_info *info, int (*fn)(void *arg, uint64_t first, uint64_t count), void *arg);

/* ---- garbage collection ------------------------------------------------------------ */

/* Which kept generations bm_gc keeps: the latest and every tagged one
 * always; with neither keep nor keep_since set, all of them; else those
 * either rule keeps. */
struct bm_gc_policy {
	uint64_t keep;             /* the keep newest (0: no such rule) */
	int64_t keep_since;        /* those created at or after this Unix time (0: no rule) */
	int64_t grace_s;           /* an unreferenced object younger than this stays (3600) */
	int dry_run;               /* decide and report, delete nothing */
	/* Called as the run goes: phase "settle", "list", "mark", "delete"; may be NULL. */
	void (*progress)(const char *phase, uint64_t done, uint64_t total, void *arg);
	void *progress_arg;
};

struct bm_gc_report {
	uint64_t latest;               /* the latest generation */
	uint64_t generations_kept;
	uint64_t generations_dropped;
	uint64_t objects_deleted;      /* blocks and index pages (dry run: would be) */
	uint64_t bytes_freed;          /* their bytes */
	uint64_t objects_young;        /* unreferenced, but younger than the grace */
	uint64_t objects_unknown_age;  /* unreferenced, no Last-Modified: kept */
	int listed;                    /* 1: the store listed its objects, so
					  orphans of unpublished commits were
					  searched; 0: it cannot list */
	uint64_t pages_walked;         /* index pages read to mark what
					  generations reference: each once,
					  however many generations share it */
};

/* Collects the dataset at url: drops the generations outside policy p and
 * deletes the blocks and index pages no kept generation references once
 * they are older than the grace.  Safe beside committing writers and when
 * killed (docs/FORMAT.md, "Garbage collection").  Errors: bm_last_error(NULL). */
int bm_gc(const char *url, const struct bm_options *opt, const struct bm_gc_policy *p,
	  struct bm_gc_report *r);

/* ---- the wcfs mirror ----------------------------------------------------------- */

/* The normalized form of a server URL (scheme and host lower-cased, trailing
 * slashes removed), which the mirror writes to <mountpoint>/.wcfs/url. */
int bm_wcfs_normalize_url(const char *server_url, char *out, size_t n);

/* Where blkmap-wcfs mounts the mirror of server_url by default:
 * /dev/shm/blkmap-wcfs/<16 hex digits of a hash of the normalized URL>.
 * The client looks there unless BLKMAP_WCFS names a mountpoint (or is
 * "off"). */
int bm_wcfs_default_mountpoint(const char *server_url, char *out, size_t n);

/* ---- stats and errors ------------------------------------------------------- */

struct bm_stats {
	const char *mode;          /* "loadblk" or "overlay" */
	const char *mode_why;      /* why that mode, e.g. "no mirror at /dev/shm/..." */
	uint64_t fetched_blocks;   /* block GETs that succeeded */
	uint64_t fetched_bytes;    /* their bytes */
	uint64_t hole_blocks;      /* holes served without a request */
	uint64_t cache_hits;       /* page faults served from RAM */
	uint64_t cache_misses;     /* page faults that had to fetch */
	uint64_t readahead_blocks; /* blocks fetched ahead of access */
	uint64_t retries;          /* requests tried again */
	uint64_t uploaded_blocks;
	uint64_t uploaded_bytes;
	uint64_t commits;
	uint64_t conflicts;
	size_t ram_bytes;          /* RAM held by cached pages now */
	const char *engine;        /* virtmem's fault engine: "sigsegv", "uffd"
				    * or "uffd-user" (docs/virtmem.md) */
};
void bm_stats(bm_dataset *ds, struct bm_stats *st);

/* The message of the last failure on ds ("" if none).  With ds NULL: the
 * last failure of bm_open or bm_options_init in the calling thread. */
const char *bm_last_error(bm_dataset *ds);

#ifdef __cplusplus
}
#endif

#endif /* BLKMAP_BLKMAP_H */
