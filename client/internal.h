/* internal.h — what the files of libblkmap share: the dataset handle, the
 * HTTP layer (under the store, store.h), the manifest, read-ahead and
 * uploads.
 *
 * Locking (one dataset):
 *   ds->mu     the manifest pointer, size, generation, ETag, last error.
 *              Taken briefly; never across a request.
 *   ds->ra.mu  read-ahead state and queue (readahead.c).
 *   ds->up.mu  the upload queue of a commit (upload.c).
 *   ds->pool.mu  the worker pool's threads and kicks (pool.c).
 *   store and http locks: inside the store (store_http.c, http.c).
 *   ds->pages' mu: the index page cache (index_load.c), a leaf.
 *   ds->cache_mu  the making of the page cache (bm_page_cache): held
 *              around virtmem's calls that make it, read-ahead's start
 *              (which takes ds->ra.mu) and the error it may set (ds->mu).
 * No two of them are ever held at once, but for cache_mu, then ra.mu or
 * mu.  virtmem's own lock is never held
 * when virtmem calls into this library (loadblk, storeblk, on_fault).
 */
#ifndef BLKMAP_CLIENT_INTERNAL_H
#define BLKMAP_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <blkmap/blkmap.h>
#include <virtmem/virtmem.h>

#include "ramp.h"

struct bm_pages;

#define BM_MANIFEST_MAX ((size_t)256 << 20) /* largest manifest we accept */
#define BM_SIZE_MAX ((uint64_t)1 << 50)
#define BM_GEN_MAX ((uint64_t)1 << 53)
#define BM_KEY_MAX 1024
#define BM_SUM_HEX 32                       /* xxh128 as hex */
/* Block sizes when bm_options.blksize is 0: a dataset created by the handle;
 * the blocks a flat object is read in (a random miss fetches one; read-ahead
 * fetches many with one Range GET, readahead.c). */
#define BM_DEFAULT_BLKSIZE ((size_t)1 << 20)
/* 16 KiB: a random miss costs about a third less than with 64 KiB, and a
 * sequential reader of a mapping pays for 4 times the faults (docs/client.md,
 * "Fetch sizes": bench_peers figures of both). */
#define BM_FLAT_BLKSIZE ((size_t)16 << 10)
/* A flat object's open asks for its first block with the Range GET that
 * learns its size, when the block is no larger than this. */
#define BM_FLAT_FIRST_MAX ((size_t)1 << 20)
/* The most one read-ahead Range GET of a flat object asks for. */
#define BM_RUN_BYTES_MAX ((size_t)2 << 20)
/* Read-ahead of a dataset keeps enough block GETs in flight to move this
 * many bytes a second at the round trip it measures (more than SHA-256
 * or a copy consumes here), within BM_RA_CONNS_FACTOR times
 * `connections` (and 256). */
#define BM_RA_TARGET_RATE 2e9
#define BM_RA_CONNS_FACTOR 4
/* Loads timed between two decisions to add requests in flight. */
#define BM_RA_EPOCH 16
#define BM_ETAG_SIZE 1024    /* longest ETag kept, with its NUL; longer: an error */

/* ---- assertions (configure --enable-checks defines BLKMAP_CHECKS) -------- */

/* Prints "blkmap: FILE:LINE: assertion failed: COND" and aborts. */
void bm_assert_fail(const char *file, int line, const char *cond) __attribute__((noreturn));
#ifdef BLKMAP_CHECKS
#define bm_assert(cond) ((cond) ? (void)0 : bm_assert_fail(__FILE__, __LINE__, #cond))
#else
#define bm_assert(cond) ((void)sizeof(!(cond)))
#endif
/* Does the calling thread hold mu?  glibc records a locked mutex's owner
 * thread; where that is unknown the answer is true (the check is vacuous). */
bool bm_mutex_held(pthread_mutex_t *mu);
/* Is mu not held by the calling thread?  (True where that is unknown.) */
bool bm_mutex_free_here(pthread_mutex_t *mu);

/* ---- logging and errors (util.c) ------------------------------------------ */

void bm_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Formats a message into buf (size n). */
void bm_fmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The calling thread's last bm_open/bm_options_init error. */
void bm_set_thread_error(const char *msg);
/* Replaces each byte of s that is not printable ASCII with '?': messages
 * quote what servers sent, which must not reach a terminal as control
 * sequences. */
void bm_printable(char *s);
/* strlen(scheme) + 3 when url starts with scheme and "://" in any case
 * (URL schemes are case-insensitive: HTTP://, S3://), else 0. */
size_t bm_url_scheme_len(const char *url, const char *scheme);

/* xxh128 of buf as 32 lowercase hex digits + NUL. */
void bm_sum_hex(const void *buf, size_t len, char out[BM_SUM_HEX + 1]);
/* The same for an XXH3_state_t fed with XXH3_128bits_update. */
void bm_sum_state_hex(void *state, char out[BM_SUM_HEX + 1]);
bool bm_is_zero(const void *buf, size_t len);
double bm_now(void);

/* ---- HTTP (http.c) -------------------------------------------------------- */

struct bm_http;

#define BM_REQ_HEADERS 4

struct bm_req {
	/* request */
	const char *method;        /* "GET", "HEAD", "PUT", "DELETE", "MKCOL", ... */
	const char *url;
	uint64_t range_start;      /* with has_range: Range: bytes=start-end */
	uint64_t range_end;        /* inclusive */
	bool has_range;
	const char *if_match;      /* ETag to send as If-Match, or NULL */
	bool if_none_match_any;    /* If-None-Match: * */
	const char *headers[BM_REQ_HEADERS]; /* more "Name: value" lines, NULL-ended */
	const void *body;          /* request body (PUT, or any method with one) */
	size_t body_len;
	/* A 2xx response body goes to sink (see store.h's bm_sink_fn), at
	 * most cap bytes; a longer one aborts the request. */
	int (*sink)(void *arg, uint64_t off, const void *data, size_t len);
	void *sink_arg;
	size_t cap;
	bool discard;              /* a 2xx body is not wanted (PUT answers) */
	const atomic_bool *cancel; /* set: no retry (bm_http_do); may be NULL */
	bool close;                /* the connection is closed once answered */
	/* response, as http.c sees it for the park (a lone request's
	 * connection may be parked, not closed, once answered whole) */
	int fd;                    /* the socket it connected, -1: none */
	bool keepalive;            /* HTTP/1.1, no Connection: close */
	uint64_t body_seen;        /* body bytes received, any status */
	/* response */
	long status;
	long head_status;          /* status line as it arrives (http.c) */
	size_t got;                /* body bytes received */
	bool overflow;             /* the body was longer than cap */
	int write_err;             /* -errno: the sink failed */
	char etag[BM_ETAG_SIZE];   /* "" if none */
	uint64_t content_length;   /* UINT64_MAX if none */
	char content_range[128];   /* "" if none */
	char last_modified[64];    /* "" if none */
	char server[64];           /* the Server header, "" if none */
	const char *want_header;   /* one more header to keep, or NULL ... */
	char header_value[256];    /* ... its value ("" if absent) */
	char errbody[512];         /* the start of a non-2xx body, NUL-terminated */
	size_t errlen;
	const char *long_header;   /* a header above kept longer than its buffer */
	char err[256];             /* transport error text */
};

/* Checks a response: 0 if good, or a BM_E* code with a message in msg.
 * BM_ECHECKSUM and BM_EHTTP returned here are retried. */
typedef int (*bm_check_fn)(struct bm_req *r, void *arg, char *msg, size_t n);

struct bm_http_opts {
	const char *token;
	long connect_timeout_ms, timeout_ms, retry_base_ms;
	int retries, connections, verbose;
	/* S3 (store_s3.c): libcurl signs every request with SigV4
	 * (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3", CURLOPT_USERPWD
	 * "KEY:SECRET"); NULL: unsigned.  Kept as pointers: they must live
	 * as long as the pool. */
	const char *aws_sigv4;
	const char *userpwd;
	const char *ca_bundle;     /* CURLOPT_CAINFO, or NULL for curl's default */
};

int bm_http_new(struct bm_http **hp, const struct bm_http_opts *o);
void bm_http_free(struct bm_http *h);
/* Raises the pool's bound to n connections (a lower n changes nothing):
 * 0, or BM_ENOMEM with the bound as it was. */
int bm_http_set_connections(struct bm_http *h, int n);
/* Whether the calling thread's next requests are ones it waits for with
 * nothing else to do (a fault's miss): their answers are polled for, not
 * slept on, while the server answers fast (http.c perform_on).  Returns
 * the setting it replaces. */
bool bm_http_set_waited(bool on);

/* Performs r with retries of transient failures (connection errors,
 * timeouts, 5xx, 429, dropped or short responses, and check() returning
 * BM_EHTTP or BM_ECHECKSUM), with exponential backoff and jitter.
 * Returns 0 when a response passed check (or, with check NULL, any response
 * arrived: look at r->status), else a BM_E* code with msg set (naming the
 * method, URL and what was wrong).  *retriesp counts the retries. */
int bm_http_do(struct bm_http *h, struct bm_req *r, bm_check_fn check, void *arg,
	       char *msg, size_t n, atomic_uint_fast64_t *retriesp);

/* One request of bm_http_do_all: bm_http_do's arguments, and its result. */
struct bm_http_job {
	struct bm_req *r;
	bm_check_fn check;
	void *arg;
	char *msg;
	size_t n;
	atomic_uint_fast64_t *retriesp;
	int rc;                    /* out: what bm_http_do would return */
};

#define BM_HTTP_JOBS_MAX 4

/* Performs n requests at once from the calling thread (no thread is
 * made), each on a connection of its own from the pool (all n taken
 * together, once the bound allows), each with bm_http_do's retries and
 * messages; retries of several wait one backoff.  A request whose cancel
 * flag is set (by another's check) is stopped where it is.  With more
 * than BM_HTTP_JOBS_MAX, or than the pool's bound, one after the other. */
void bm_http_do_all(struct bm_http *h, struct bm_http_job *jobs, int n);

/* A flow: requests started one by one and kept in flight together from
 * the calling thread over one multi handle (no thread), up to n at once
 * on n connections, each with bm_http_do's retries and messages (a try
 * that failed waits its backoff beside the others).  new takes n places
 * of the pool's bound (at most the bound; waits until they are free) and
 * holds them until free.  start sends job j (which lives until next
 * returns it): 0, or BM_EBUSY when n are in flight.  next waits until a
 * job has its result (j->rc as bm_http_do's) and returns it; NULL when
 * none is in flight.  free stops those still in flight and gives the
 * places back.  One thread uses a flow at a time. */
struct bm_http_flow;
int bm_http_flow_new(struct bm_http *h, int n, struct bm_http_flow **fp);
int bm_http_flow_room(const struct bm_http_flow *f);
int bm_http_flow_start(struct bm_http_flow *f, struct bm_http_job *j);
struct bm_http_job *bm_http_flow_next(struct bm_http_flow *f);
/* Stops one job still in flight (or ended, not yet returned) and returns
 * it (its rc as it is), NULL when none is left: before free, for those
 * whose state the caller frees. */
struct bm_http_job *bm_http_flow_drop(struct bm_http_flow *f);
void bm_http_flow_free(struct bm_http_flow *f);


/* ---- manifest (manifest.c) -------------------------------------------------- */

struct bm_block {
	uint64_t index;
	char *key;                 /* relative to the dataset URL */
	char sum[BM_SUM_HEX + 1];
};

struct bm_manifest {
	unsigned version;          /* 1: the block list below; 2: the index
				      tree at root (index.h); 0: none yet (a
				      dataset not created, a flat object) */
	size_t blksize;
	size_t piece;              /* v4: the bytes of a piece of a block
				      (index.h: bm_manifest_piece); else 0 */
	uint64_t size;
	uint64_t generation;
	char created[40];
	char *attrs;               /* user attributes: compact JSON text of a
				      non-empty object, or NULL (none) */
	struct bm_block *blocks;   /* v1: ascending index */
	size_t nblocks;
	uint64_t parent;           /* v2: the generation committed on (0: none) */
	char root[BM_SUM_HEX + 1]; /* v2: the root index page, "" if none */
	uint64_t stored;           /* blocks stored: v1 nblocks; v2 its
				      "stored" field, UINT64_MAX if absent */
};

/* Parses and validates untrusted manifest JSON.  On error returns BM_EFORMAT
 * with msg saying what was wrong (without the URL: the caller adds it). */
int bm_manifest_parse(const char *json, size_t len, struct bm_manifest **mp, char *msg, size_t n);
/* Serializes to JSON (malloc'd, NUL-terminated). */
char *bm_manifest_dump(const struct bm_manifest *m, size_t *lenp);
void bm_manifest_free(struct bm_manifest *m);
/* The entry for block index, or NULL for a hole. */
const struct bm_block *bm_manifest_find(const struct bm_manifest *m, uint64_t index);
/* The position in m->blocks of the first entry at or after block index
 * (m->nblocks if none). */
size_t bm_manifest_lower_bound(const struct bm_manifest *m, uint64_t index);
uint64_t bm_manifest_nblk(const struct bm_manifest *m);
/* Bytes of block index's object: min(blksize, size - index*blksize). */
size_t bm_manifest_objlen(const struct bm_manifest *m, uint64_t index);
bool bm_key_valid(const char *key);
/* Checks untrusted user attributes (the text of a JSON object, len bytes)
 * and gives them in the form a manifest stores: *out is their compact
 * JSON text (malloc'd), or NULL for an empty object.  BM_EFORMAT with
 * msg saying why when they are not an object or longer than BM_ATTRS_MAX
 * compact.  Both manifest versions keep attrs this one way. */
int bm_attrs_normalize(const char *json, size_t len, char **out, char *msg, size_t n);

/* What both manifest versions open with (docs/FORMAT.md): "format",
 * "version", "checksum", "blksize", "size", "generation", "created",
 * "attrs". */
struct bm_manifest_head {
	size_t blksize;
	uint64_t size;
	uint64_t generation;
	char created[40];          /* kept printable; "" if none */
	char *attrs;               /* as bm_attrs_normalize gives them (malloc'd) */
};
struct json_t;
/* Reads and checks those fields of untrusted manifest root (a JSON value)
 * for format version `version`: 0, or BM_EFORMAT (msg says which field is
 * wrong) or BM_ENOMEM; h->attrs is the caller's to free either way. */
int bm_manifest_head_parse(struct json_t *root, unsigned version, struct bm_manifest_head *h,
			   char *msg, size_t n);
/* Moves head h's fields into those of the same names of *m, a struct
 * bm_manifest or bm_manifest2: what each format's parser takes alike
 * (m->attrs becomes the caller's to free). */
#define BM_MANIFEST_HEAD_TAKE(m, h)                                     \
	do {                                                            \
		(m)->blksize = (h)->blksize;                            \
		(m)->size = (h)->size;                                  \
		(m)->generation = (h)->generation;                      \
		memcpy((m)->created, (h)->created, sizeof((m)->created)); \
		(m)->attrs = (h)->attrs;                                \
	} while (0)
/* Integer field name of untrusted JSON object o into *out, within [min,
 * max]: 0, or BM_EFORMAT with msg naming the field. */
int bm_json_uint(struct json_t *o, const char *name, uint64_t min, uint64_t max, uint64_t *out,
		 char *msg, size_t n);

/* A change for the next generation: block index becomes key/sum, or a hole
 * (key NULL). */
struct bm_change {
	uint64_t index;
	char *key;
	char sum[BM_SUM_HEX + 1];
	uint8_t *psum;             /* format 3: the block's piece sums (pieces
				      x 16 bytes), in key's allocation (freed
				      with it); NULL otherwise */
	size_t len;                /* object length */
	uint64_t seq;              /* order of submission: the later wins */
	bool from_page;            /* stored from a page (it stays cached) */
};

/* The next generation: m with changes applied (sorted by index, later
 * changes to the same index win), size new_size, generation+1, m's user
 * attributes carried over. */
int bm_manifest_apply(const struct bm_manifest *m, struct bm_change *ch, size_t nch,
		      uint64_t new_size, struct bm_manifest **outp);

/* The piece sums per block of the format the next commit writes
 * (commit.c: version 3 for blocks larger than 64 KiB, 4 for the pieces
 * the options ask, FORMAT.md); 0 for versions 1 and 2 (a sum of the
 * bytes).  Asked once, at open (a handle's
 * format never changes): bm_ds_pieces says it after. */
unsigned bm_next_pieces(bm_dataset *ds);
/* The piece size a dataset created with options o and blocks of blksize
 * bytes gets in format 4 (docs/FORMAT.md, "Version 4"): o->piece_bytes;
 * by default (0) 16 KiB when blocks are larger than 64 KiB, or as many
 * pieces as a block may have (BM_PIECES_MAX) when 16 KiB ones would be
 * more.  0 when it gets none of format 4: no pieces (format 2: blocks of
 * 64 KiB or less, by default) or format 3's 64 KiB ones. */
size_t bm_piece_option(const struct bm_options *o, size_t blksize);

/* ---- gc (gcmark.h) --------------------------------------------------------------- */

/* A writer's view of gc, taken before its first upload (bm_gc_guard_begin)
 * and checked just before it publishes (bm_gc_guard_check). */
struct bm_gc_guard {
	bool begun;
	uint64_t epoch;            /* of the last gc then (0: none) */
	bool running;              /* a gc was running then */
	double checked;            /* when the check last passed (bm_now) */
};

/* ---- the dataset handle ----------------------------------------------------- */

/* The worker threads uploads and read-ahead share (pool.c). */
#define BM_POOL_USERS 2
struct bm_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t *threads;        /* NULL until the first bm_pool_start */
	int nthreads, want;
	bool stop;
	uint64_t kicks;            /* bm_pool_kick calls: work was queued */
	struct {
		bool (*run_one)(void *arg);
		void (*thread_exit)(void *arg);
		void *arg;
	} users[BM_POOL_USERS];
	int nusers;
};

struct bm_readahead {
	pthread_mutex_t mu;
	bool stop;
	uint64_t *queue;           /* ring of blocks to fetch; NULL: not started */
	size_t qcap, qhead, qlen;
	uint64_t last;             /* last faulted block + 1 (0: none) */
	uint64_t next;             /* first block not yet queued */
	size_t window;             /* blocks ahead, 0 when random */
	size_t max_window;         /* 0: read-ahead off */
	size_t run_max;            /* flat: blocks one worker's Range GET covers */
	/* Requests in flight (datasets): the workers that may fetch at
	 * once, from `connections`, grown up to conns_max when answers are
	 * slow and growing pays, halved when they are fast (ramp). */
	int conns, conns_max;
	int active;                /* workers fetching now (flows: GETs in flight) */
	/* Flows (a dataset's whole blocks, a store with flows): at most
	 * flow_workers workers fetch, each keeping several block GETs in
	 * flight over a flow of its own; flowing of them do now, their
	 * flows holding flow_places of the store's bound, kept below
	 * store_conns (the bound: one place stays for the faults and the
	 * index pages, which the workers' own block lookups may need). */
	bool flows;
	int flow_workers, flowing, flow_places, store_conns;
	unsigned epoch_n;          /* loads timed in this epoch */
	double epoch_min;          /* their least seconds per byte */
	double epoch_start;        /* when the epoch began (seconds) */
	double epoch_bytes;        /* the bytes its loads brought */
	struct bm_ramp ramp;       /* decides conns each epoch (ramp.h) */
};

struct bm_upload {
	pthread_mutex_t mu;
	pthread_cond_t cv;         /* a job done (queue space, bm_upload_wait) */
	struct bm_upload_job *head, *tail;
	struct bm_upload_job *failed; /* not uploaded: queued again by the next commit */
	size_t queued;             /* jobs queued or running */
	size_t max_queued;
	int err;                   /* first upload error of the commit */
	char errmsg[512];
	/* Block buffers of jobs done, kept for the next jobs: a fresh 4 MiB
	 * malloc is fresh memory, 1024 page faults to fill. */
	void **bufs;
	size_t nbufs;
};

struct bm_counters {
	atomic_uint_fast64_t fetched_blocks, fetched_bytes, hole_blocks, misses,
		readahead_blocks, retries, uploaded_blocks, uploaded_bytes,
		commits, conflicts;
};

/* The most virtmem blocks one block is mapped in: a block's most pieces
 * (index.h's BM_PIECES_MAX). */
#define BM_VM_PER_BLK_MAX 1024

struct bm_dataset {
	vm_bigfile file;           /* first: virtmem hands it back to us */
	char *url;                 /* dataset URL, no trailing '/' */
	/* The dataset's block size (its objects', the manifest's), and how
	 * many of virtmem's blocks (file.blksize) one block is: 1, or a
	 * format 3 or 4 block's pieces (mapped a piece per virtmem block,
	 * so that a random miss fetches one piece).  Set at open. */
	size_t blksize;
	unsigned vm_per_blk;
	struct bm_options opt;
	struct bm_store *store;    /* the object store the dataset lives in */
	/* The page cache: NULL until the first mapping (or bm_stats) made
	 * it (bm_page_cache; read fh with bm_fh), as ram_budget and
	 * fh_flags say. */
	vm_ram *ram;
	vm_fileh *fh;
	size_t ram_budget;
	int fh_flags;
	pthread_mutex_t cache_mu;
	atomic_uint nmappings;
	atomic_bool spares_started;  /* vm_ram_keep_spare called (bm_map) */

	pthread_mutex_t mu;
	struct bm_manifest *manifest;  /* flat: a synthetic one, no blocks */
	char *manifest_json;       /* bytes of the generation opened (for gen/ repair) */
	size_t manifest_json_len;
	char etag[BM_ETAG_SIZE];   /* manifest.json ETag (flat: the object's) when
				      opened or last committed; "" if none */
	char last_modified[64];    /* flat: the object's Last-Modified; "" if none */
	char *first;               /* flat: block 0's bytes from the open, until
				      its first load takes them (or NULL) */
	size_t first_len;
	bool exists;               /* manifest.json exists on the server */
	bool at_latest;            /* opened generation was the current one */
	bool flat;
	uint64_t new_size;         /* size the next commit publishes */
	uint64_t trunc_size;       /* the smallest size set since the last
				      commit: older bytes at or past it read
				      as zeros (a shrink then a grow) */
	uint64_t trunc_seq;        /* changes with seq below it are older */
	char errmsg[512];

	char *new_attrs;           /* attrs the next commit publishes (NULL:
				      none), when attrs_changed */
	bool attrs_changed;

	/* gc's epoch when this commit's first upload started (commit.c) */
	struct bm_gc_guard gc_guard;

	/* the next commit's changes (changes.c): storeblk and bm_write
	 * append here */
	struct bm_change *changes;
	size_t nchanges, capchanges;
	uint64_t change_seq;
	/* the block bm_write changed last, as the next generation has it
	 * (blksize bytes), while that change is the block's last one */
	struct {
		bool valid;
		uint64_t index;
		char *buf;
	} wrote;
	/* vm_per_blk > 1: the block whose dirty pieces storeblk is merging
	 * (blksize bytes), until a piece of another block or the writeout's
	 * end makes it one change (bm_change_piece, bm_changes_flush): the
	 * pieces not stored (have) then come from the block as the next
	 * generation has it, fetched only when there are some.  Only the
	 * writeout's thread touches it. */
	struct {
		bool valid;
		uint64_t index;
		size_t len;
		char *buf;
		uint64_t have[BM_VM_PER_BLK_MAX / 64]; /* pieces stored, a bit each */
		int err;           /* why the last merge failed (storeblk's
				      error reaches the commit as -EIO) */
	} staged;

	/* mmap-overlay mode (overlay.c): the mirror's file of this generation */
	bool overlay;
	char *wcfs_mnt;            /* mountpoint in use */
	char *wcfs_path;           /* dataset path under the mirror */
	int base_fd;               /* <mnt>/@<gen>/<path>, -1 if none */
	uint64_t base_size;        /* its size */
	char mode_why[256];

	/* format v2: the index pages of every generation this handle reads,
	 * cached inside the RAM budget (index_load.c: bm_pages_io) */
	struct bm_pages *pages;

	struct bm_pool pool;
	struct bm_readahead ra;
	struct bm_upload up;
	struct bm_counters c;
};

/* The piece sums per block of ds's format (0: not format 3 or 4): how a
 * block's sum is made (changes.c) and checked (blocks.c). */
static inline unsigned bm_ds_pieces(const bm_dataset *ds)
{
	return ds->vm_per_blk > 1 ? ds->vm_per_blk : 0;
}
/* The bytes of one of those pieces (64 KiB in format 3, the manifest's
 * in 4; 0: not format 3 or 4). */
static inline size_t bm_ds_piece(const bm_dataset *ds)
{
	return ds->vm_per_blk > 1 ? ds->blksize / ds->vm_per_blk : 0;
}

void bm_set_error(bm_dataset *ds, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The block table of a generation m of ds: version 1's list or version
 * 2's index tree (pages loaded through ds->pages).  m must stay alive for
 * the call; ds->mu must not be held (v1 lists are read under it).  Each
 * returns < 0 with msg set on an error (a v2 page that cannot be read). */
/* Block blk: 1 stored (its sum, and its object's key if key is not
 * NULL), 0 a hole (sum ""). */
int bm_table_find(bm_dataset *ds, const struct bm_manifest *m, uint64_t blk,
		  char sum[BM_SUM_HEX + 1], char key[BM_KEY_MAX + 1], char *msg, size_t n);
/* The first stored block at or after from: 1 with *blk, 0 if none. */
int bm_table_next(bm_dataset *ds, const struct bm_manifest *m, uint64_t from, uint64_t *blk,
		  char *msg, size_t n);
/* The block ranges whose sums differ between a and b (a hole and a block
 * past a generation's end count as the same), to fn; a non-zero return
 * of fn stops the walk and is returned.  Two v2 trees: descends only
 * where the page sums differ. */
typedef int (*bm_range_fn)(void *arg, uint64_t first, uint64_t count);
int bm_table_diff(bm_dataset *ds, const struct bm_manifest *a, const struct bm_manifest *b,
		  bm_range_fn fn, void *arg, char *msg, size_t n);

/* ---- blocks.c: the table above, and fetching a block ---------------------- */

/* Stored blocks of m, counted by walking it (stops at an error). */
uint64_t bm_table_count(bm_dataset *ds, const struct bm_manifest *m);
/* Fetches one block of the published generation into buf (ds->blksize
 * bytes, zero-filled past the object and past the size the next commit
 * publishes), verifying it.  With log, a failure is also said on stderr
 * (a fault's). */
int bm_fetch_block(bm_dataset *ds, uint64_t index, void *buf, bool log);
/* Bytes [in, in + len) of block index (of the published generation, as
 * bm_fetch_block: the whole block fetched and checked against its sum)
 * into buf, which gets only those bytes (the rest is hashed, not stored;
 * zeros where the block reads as zeros).  Errors are returned, not
 * reported on stderr. */
int bm_fetch_block_part(bm_dataset *ds, uint64_t index, size_t in, size_t len, void *buf);
/* bm_fetch_block in two parts, for blocks fetched together (a flow,
 * reads.c): begin finds block index and prepares its GET into buf (the
 * dataset's block size): 1 with *keyp, *gp for bm_store_flow_start (msg
 * *msgp of *np bytes) and *fp to end with bm_block_fetch_end(rc: the
 * GET's result), 0 when done without a request (a hole, past the end),
 * or a BM_E* code (set on ds).  end: 0, or the error (set on ds). */
struct bm_block_fetch;
struct bm_get;
int bm_block_fetch_begin(bm_dataset *ds, uint64_t index, void *buf, struct bm_block_fetch **fp,
			 const char **keyp, struct bm_get **gp, char **msgp, size_t *np);
int bm_block_fetch_end(bm_dataset *ds, struct bm_block_fetch *f, int rc);
/* bm_block_fetch_begin with the block's bytes going into the page cache
 * through run (virtmem's vm_run of that one block, taken: read-ahead over
 * a flow, readahead.c) instead of a buffer: checked as bm_fetch_block's;
 * the caller ends the run with bm_block_fetch_bytes(f) once
 * bm_block_fetch_end said 0 (before it frees f: call it first), with -1
 * on an error.  A hole or a block past the end (0) is zeros: the run
 * ends with 0 bytes. */
int bm_block_fetch_begin_run(bm_dataset *ds, uint64_t index, vm_run *run, struct bm_block_fetch **fp,
			     const char **keyp, struct bm_get **gp, char **msgp, size_t *np);
/* The block's bytes a fetch brings (the rest of the block reads as zeros). */
size_t bm_block_fetch_bytes(const struct bm_block_fetch *f);
/* Frees a fetch begun and stopped unfinished (nothing said or counted). */
void bm_block_fetch_drop(struct bm_block_fetch *f);
/* virtmem's block blk (file.blksize bytes) into buf: the block itself, or
 * with vm_per_blk > 1 one piece of a format 3 or 4 block, fetched with a
 * Range GET of its object and checked against its piece sum. */
int bm_load_vmblock(bm_dataset *ds, uint64_t blk, void *buf, bool log);
/* virtmem's blocks [first, first + n), all inside one block of a format 3
 * dataset (vm_per_blk > 1), with one Range GET of its object into buf,
 * each piece checked against its sum; *lenp: the bytes that hold data
 * (the rest reads as zeros: a hole, the dataset's end, a shrink).  Errors
 * are returned, not reported (read-ahead: a fault fetches again). */
int bm_fetch_pieces(bm_dataset *ds, uint64_t first, size_t n, char *buf, size_t *lenp, char *msg,
		    size_t msgn);
/* Bytes [in, in + len) of block index of a format 3 dataset (more than
 * one piece) into buf: one Range GET of the pieces that cover them, each
 * piece checked against its sum; only those bytes are stored (the rest of
 * the pieces is hashed, not copied).  *lenp: the bytes of the pieces,
 * from the first one's start, that hold data (the rest reads as zeros);
 * buf past them is not written.  Errors are returned, not reported. */
int bm_fetch_pieces_part(bm_dataset *ds, uint64_t index, size_t in, size_t len, char *buf,
			 size_t *lenp, char *msg, size_t msgn);
/* The same for object key (NULL: a hole) of len bytes whose sum is sum,
 * as block index: a pending change's.  before_shrink: the change is older
 * than the last shrink (its bytes past the cut read as zeros). */
int bm_fetch_object(bm_dataset *ds, uint64_t index, const char *key, const char *sum, size_t len,
		    bool before_shrink, void *buf);

/* ---- changes.c: the changes the next commit publishes --------------------- */

/* Records that block index holds buf's len bytes in the next generation
 * and, unless the published generation has them there, queues them for
 * upload (from_page: they come from a cached page).  Blocks while the
 * upload queue is full. */
int bm_change_block(bm_dataset *ds, uint64_t index, const void *buf, size_t len, bool from_page);
/* vm_per_blk > 1 (storeblk): virtmem's block blk, a piece of len bytes,
 * kept for its block; the block becomes one change when a piece of
 * another block comes or at bm_changes_flush, its pieces not stored taken
 * from the block as the next generation has it (fetched only then). */
int bm_change_piece(bm_dataset *ds, uint64_t blk, const void *buf, size_t len);
/* The block bm_change_piece is merging, made a change (after a writeout). */
int bm_changes_flush(bm_dataset *ds);
/* Fetches block index as the next generation will have it: its last
 * change if any, else the published block. */
int bm_fetch_pending(bm_dataset *ds, uint64_t index, void *buf);
/* Is any change recorded? */
bool bm_changes_pending(bm_dataset *ds);
/* Before the next commit's first upload: notes which gc ran last (the
 * check of gcmark.c, done by the commit). */
void bm_changes_begin(bm_dataset *ds);
/* The change list, handed over (malloc'd, *np entries) and emptied. */
struct bm_change *bm_changes_take(bm_dataset *ds, size_t *np);
/* The change list and bm_write's kept blocks, emptied (after a commit
 * published them, or a discard). */
void bm_changes_clear(bm_dataset *ds);
/* The keys of the objects the changes name, to visit (a gc's check). */
int bm_changes_keys(bm_dataset *ds, int (*visit)(void *arg, const char *key), void *arg);

/* ---- pool.c --------------------------------------------------------------- */

/* An empty pool of nthreads workers (not started). */
void bm_pool_init(struct bm_pool *pool, int nthreads);
/* Registers a user before the start (see pool.c). */
void bm_pool_add(struct bm_pool *pool, bool (*run_one)(void *arg), void (*thread_exit)(void *arg),
		 void *arg);
/* Starts the workers if not yet: 0, or BM_ENOMEM when not one could be
 * created (the pool stays unstarted; a later call tries again). */
int bm_pool_start(struct bm_pool *pool);
/* Adds threads to a started pool up to n in all: 0, or BM_ENOMEM when not
 * all could be made (those made stay).  Not started or stopping: nothing. */
int bm_pool_grow(struct bm_pool *pool, int n);
/* Work was queued: wake one worker, or all. */
void bm_pool_kick(struct bm_pool *pool);
void bm_pool_kick_all(struct bm_pool *pool);
/* Lets the workers finish what the users still hand out, joins them and
 * frees the pool. */
void bm_pool_stop(struct bm_pool *pool);

/* ---- readahead.c ---------------------------------------------------------- */

/* At open: the state, registered with the pool.  start: the queue (at
 * open, or when leaving overlay mode; once); the pool's workers start at
 * the first blocks queued (bm_readahead_on_fault).  stop:
 * nothing more is handed out.  free: after the pool stopped. */
void bm_readahead_init(bm_dataset *ds);
int bm_readahead_start(bm_dataset *ds);
void bm_readahead_stop(bm_dataset *ds);
void bm_readahead_free(bm_dataset *ds);
/* Called on every page fault: detects sequential access and queues blocks. */
void bm_readahead_on_fault(bm_dataset *ds, uint64_t blk);
/* Called when the read fault on blk - 1 also mapped the cached blocks
 * [blk, blk + n) (virtmem's fault-around): a fault on blk + n is then
 * sequential. */
void bm_readahead_on_fault_around(bm_dataset *ds, uint64_t blk, size_t n);
/* True in read-ahead worker threads. */
bool bm_in_readahead(void);
/* In loadblk: when block blk of ds is in the run of pieces the calling
 * read-ahead worker hands to the page cache (fetched by the run's Range
 * GET; a flat object's runs are streamed, vm_run), copies
 * it into buf and returns 1 (or BM_ENOMEM); 0 when it is not. */
int bm_readahead_fill(bm_dataset *ds, uint64_t blk, void *buf);

/* Looks for a live wcfs mirror showing the handle's generation; on success
 * sets ds->overlay and ds->base_fd.  Otherwise says why in ds->mode_why. */
void bm_overlay_probe(bm_dataset *ds);
/* The mmap trio of overlay mode (vm_bigfile_ops). */
int bm_overlay_setup_read(vm_bigfile *f, vm_vma *vma, vm_blk_t blk, size_t blklen);
int bm_overlay_remmap(vm_bigfile *f, vm_vma *vma, vm_blk_t blk);
int bm_overlay_munmap(vm_bigfile *f, vm_vma *vma);
/* After a commit published generation gen: the base moves to its file.
 * Returns 0, or -1 when the mirror does not show it (pages stay dirty). */
int bm_overlay_move_base(bm_dataset *ds, uint64_t gen, uint64_t size);
void bm_overlay_close(bm_dataset *ds);

/* ---- upload.c ------------------------------------------------------------- */

/* At open: the queue, registered with the pool.  free: after the pool
 * stopped (it drains the queue first). */
void bm_upload_init(bm_dataset *ds);
void bm_upload_free(bm_dataset *ds);
/* Queues a copy of a block's len bytes for upload as object key (the
 * pool's workers are started first: BM_ENOMEM when none can be). */
int bm_upload_queue(bm_dataset *ds, uint64_t index, const char *key, const void *buf, size_t len);
/* Queues a copy of an index page for upload as "index/<sum>". */
int bm_upload_page(bm_dataset *ds, const char *sum, const void *data, size_t len);
/* Queues again the block uploads that failed in an earlier commit. */
void bm_upload_requeue_failed(bm_dataset *ds);
/* Frees the failed uploads (their changes are being dropped). */
void bm_upload_drop_failed(bm_dataset *ds);
/* Waits for every queued upload; returns the first error. */
int bm_upload_wait(bm_dataset *ds);

/* GETs the manifest object at key of ds's store (open.c; either version,
 * a damaged v2 one fetched again): 0 with *mp, *jsonp (malloc'd, *lenp
 * bytes) and its ETag in etag (when not NULL); BM_ENOTFOUND when absent
 * (no error set); else the error, set on ds. */
int bm_get_manifest(bm_dataset *ds, const char *key, struct bm_manifest **mp,
		    char **jsonp, size_t *lenp, char *etag, size_t etagn);
/* Points ds->file.ops at the backend of its mode, overlay or not
 * (dataset.c). */
void bm_ds_set_backend(bm_dataset *ds);

/* The page cache of ds (dataset.c): made at the first mapping, not at
 * open (an open and close that map nothing pay for no memfd, mapping or
 * fault engine).  bm_page_cache makes it once (0, or BM_ENOMEM/BM_EINVAL
 * with the error set); bm_fh is its handle, or NULL when not made yet:
 * then nothing is cached nor dirty. */
int bm_page_cache(bm_dataset *ds);
static inline vm_fileh *bm_fh(bm_dataset *ds)
{
	return __atomic_load_n(&ds->fh, __ATOMIC_ACQUIRE);
}

#endif /* BLKMAP_CLIENT_INTERNAL_H */
