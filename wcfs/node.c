/* node.c — the mirror's inodes: the static top (/, .wcfs/, .wcfs/url), the
 * views head/ and @<gen>/, and the directories and dataset files under them,
 * found on demand; each dataset file's shared bm_dataset handle; head/'s
 * generation checks (which queue the kernel cache invalidation they cause
 * to inval.c, never run it).
 *
 * Owns: the node table (a hash of (gen, path) -> node), every wc_node, and
 * the list of idle handles (files open nowhere; beyond WC_IDLE_HANDLES
 * their handles are closed, reopened on demand).
 * Locking: table_mu guards the table and every nlookup; a node's check_mu
 * serializes its generation checks and reopens (a manifest GET runs under
 * it, never a kernel notification); lru_mu guards the idle list and every
 * opens count; a node's mu guards n->ds and what the node shows (a reader
 * takes a reference under mu and reads without it; n->ds changes under
 * lru_mu and mu).  Order: table_mu, check_mu, lru_mu, mu, then inval.c's
 * q_mu; no network request runs under table_mu, lru_mu or mu.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wcfs.h"

#define WC_NBUCKETS 4096

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static struct wc_node *table[WC_NBUCKETS];
static time_t mount_time;

static struct wc_node root_node = { .kind = WC_ROOT, .path = "", .is_static = true };
static struct wc_node meta_node = { .kind = WC_META, .path = "", .is_static = true };
static struct wc_node url_node = { .kind = WC_URLFILE, .path = "", .is_static = true };

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wc_table_init(void)
{
	mount_time = time(NULL);
}

struct wc_node *wc_node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root_node : (struct wc_node *)(uintptr_t)ino;
}

fuse_ino_t wc_ino_of(const struct wc_node *n)
{
	return n == &root_node ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

/* ---- dataset handles ---------------------------------------------------------- */

static struct wc_ds *ds_new(bm_dataset *bm)
{
	struct wc_ds *d = calloc(1, sizeof(*d));

	if (d == NULL) {
		bm_close(bm);
		return NULL;
	}
	d->bm = bm;
	atomic_init(&d->refs, 1);
	d->generation = bm_generation(bm);
	d->size = bm_size(bm);
	d->blksize = bm_blksize(bm);
	d->nstored = bm_nblocks_stored(bm);
	wc_blocks_init(d);
	return d;
}

struct wc_ds *wc_ds_get(struct wc_node *n)
{
	pthread_mutex_lock(&n->mu);
	struct wc_ds *d = n->ds;
	if (d != NULL)
		atomic_fetch_add(&d->refs, 1);
	pthread_mutex_unlock(&n->mu);
	return d;
}

void wc_ds_put(struct wc_ds *d)
{
	if (d != NULL && atomic_fetch_sub(&d->refs, 1) == 1) {
		wc_blocks_free(d);
		bm_close(d->bm);
		free(d);
	}
}

/* Opens the dataset at path as of gen (0: latest).  0 with *bmp set, or a
 * BM_E* code; a flat object counts as BM_ENOTFOUND (not shown);
 * -ENAMETOOLONG when the URL would not fit (nothing is opened then).
 * The URL ends in '/': the mirror shows datasets only, so the open asks
 * for the manifest alone, not also for a plain object of that name (the
 * probe, one more GET per lookup; docs/client.md "Opening"). */
static int open_dataset_at(uint64_t gen, const char *tag, const char *path, bm_dataset **bmp)
{
	char url[WC_URL_MAX + 1]; /* the '/' at the end is not the name's */
	struct bm_options o = wc_m.opt;
	int rc;

	if (wc_format(url, WC_URL_MAX, "%s/%s", wc_m.url, path) < 0)
		return -ENAMETOOLONG;
	strcat(url, "/");
	o.generation = tag ? 0 : gen;
	o.tag = tag;
	rc = bm_open(bmp, url, &o);
	if (rc == 0 && bm_is_flat(*bmp)) {
		bm_close(*bmp);
		*bmp = NULL;
		return BM_ENOTFOUND;
	}
	if (rc < 0 && rc != BM_ENOTFOUND)
		wc_log("%.*s (generation %" PRIu64 "): %s", (int)strlen(url) - 1, url, gen,
		       bm_last_error(NULL));
	return rc;
}

static int open_dataset(uint64_t gen, const char *path, bm_dataset **bmp)
{
	return open_dataset_at(gen, NULL, path, bmp);
}

/* ---- idle handles ----------------------------------------------------------------- */

/* Files open nowhere keep their handle (a few fds, a manifest) only while
 * among the WC_IDLE_HANDLES most recently idle; the others are closed and
 * reopened on demand.  An open file always has one: fds and memory grow
 * with the files open, never with the files looked up.  lru_mu guards the
 * list, every n->opens, in_lru and lru links; n->ds changes under lru_mu
 * and n->mu both (readers take mu only). */
static pthread_mutex_t lru_mu = PTHREAD_MUTEX_INITIALIZER;
static struct wc_node *lru_head, *lru_tail; /* most recently idle first */
static int lru_count;

/* Under lru_mu. */
static void lru_unlink(struct wc_node *n)
{
	wc_assert(wc_mutex_held(&lru_mu));
	if (!n->in_lru)
		return;
	*(n->lru_prev ? &n->lru_prev->lru_next : &lru_head) = n->lru_next;
	*(n->lru_next ? &n->lru_next->lru_prev : &lru_tail) = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
	n->in_lru = false;
	lru_count--;
	wc_assert(lru_count >= 0);
}

/* Under lru_mu. */
static void lru_push(struct wc_node *n)
{
	wc_assert(wc_mutex_held(&lru_mu));
	wc_assert(!n->in_lru && n->ds != NULL); /* only idle handles are listed */
	n->lru_prev = NULL;
	n->lru_next = lru_head;
	*(lru_head ? &lru_head->lru_prev : &lru_tail) = n;
	lru_head = n;
	n->in_lru = true;
	lru_count++;
}

/* Under lru_mu: puts n first in the idle list if it is idle (open nowhere,
 * with a handle), else takes it out; then closes the handle of the least
 * recently idle node beyond the bound.  Returns that handle's reference,
 * to put by the caller once out of the locks (or NULL). */
static struct wc_ds *lru_settle(struct wc_node *n)
{
	wc_assert(wc_mutex_held(&lru_mu));
	pthread_mutex_lock(&n->mu);
	bool idle = n->opens == 0 && n->ds != NULL;
	pthread_mutex_unlock(&n->mu);
	lru_unlink(n);
	if (idle)
		lru_push(n);
	if (lru_count <= WC_IDLE_HANDLES)
		return NULL;
	struct wc_node *v = lru_tail;
	wc_assert(lru_count == WC_IDLE_HANDLES + 1); /* one over: one out */
	lru_unlink(v);
	pthread_mutex_lock(&v->mu);
	struct wc_ds *d = v->ds;
	v->ds = NULL; /* what it shows stays: stat needs no handle */
	pthread_mutex_unlock(&v->mu);
	return d;
}

static void settle(struct wc_node *n)
{
	pthread_mutex_lock(&lru_mu);
	struct wc_ds *evicted = lru_settle(n);
	pthread_mutex_unlock(&lru_mu);
	wc_ds_put(evicted);
}

static void show_ds(struct wc_node *n, const struct wc_ds *d)
{
	n->generation = d->generation;
	n->size = d->size;
	n->nstored = d->nstored;
	n->blksize = d->blksize;
}

/* Makes d (a reference taken over) n's handle.  Returns the reference to
 * the previous one (NULL if closed); *evicted the handle closed to keep the
 * bound (or NULL).  The caller puts both. */
static struct wc_ds *set_ds(struct wc_node *n, struct wc_ds *d, struct wc_ds **evicted)
{
	pthread_mutex_lock(&lru_mu);
	pthread_mutex_lock(&n->mu);
	struct wc_ds *old = n->ds;
	n->ds = d;
	if (d != NULL)
		show_ds(n, d);
	pthread_mutex_unlock(&n->mu);
	*evicted = lru_settle(n);
	pthread_mutex_unlock(&lru_mu);
	return old;
}

/* @<gen> files: reopens a closed handle.  Under check_mu. */
static void reopen_kept(struct wc_node *n)
{
	bm_dataset *bm;
	struct wc_ds *d, *evicted;

	wc_assert(wc_mutex_held(&n->check_mu));
	if (n->ds != NULL || open_dataset(n->gen, n->path, &bm) < 0)
		return;
	if ((d = ds_new(bm)) == NULL)
		return;
	wc_ds_put(set_ds(n, d, &evicted));
	wc_ds_put(evicted);
}

struct wc_ds *wc_ds_hold(struct wc_node *n)
{
	struct wc_ds *d = wc_ds_get(n);

	if (d != NULL || n->kind != WC_FILE)
		return d;
	if (n->gen == 0) {
		wc_check_generation(n, true); /* reattaches the latest */
	} else {
		pthread_mutex_lock(&n->check_mu);
		reopen_kept(n);
		pthread_mutex_unlock(&n->check_mu);
	}
	return wc_ds_get(n);
}

int wc_node_open(struct wc_node *n)
{
	if (n->kind != WC_FILE)
		return 0;
	pthread_mutex_lock(&lru_mu);
	n->opens++;
	struct wc_ds *evicted = lru_settle(n); /* out of the idle list */
	pthread_mutex_unlock(&lru_mu);
	wc_ds_put(evicted);
	struct wc_ds *d = wc_ds_hold(n);
	if (d == NULL) {
		wc_node_release(n);
		return EIO;
	}
	wc_ds_put(d);
	return 0;
}

void wc_node_release(struct wc_node *n)
{
	if (n->kind != WC_FILE)
		return;
	pthread_mutex_lock(&lru_mu);
	bool idle = --n->opens == 0;
	struct wc_ds *evicted = lru_settle(n);
	pthread_mutex_unlock(&lru_mu);
	wc_ds_put(evicted);
	struct wc_ds *d = idle ? wc_ds_get(n) : NULL;
	if (d != NULL)
		wc_blocks_trim(d); /* the kernel's cache has the bytes now */
	wc_ds_put(d);
}

/* ---- the table ------------------------------------------------------------------ */

static unsigned bucket_of(uint64_t gen, const char *path)
{
	uint64_t h = 1469598103934665603ULL ^ gen;

	for (const char *p = path; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return (unsigned)(h % WC_NBUCKETS);
}

/* Under table_mu. */
static struct wc_node *table_find(enum wc_kind kind, uint64_t gen, const char *path)
{
	wc_assert(wc_mutex_held(&table_mu));
	for (struct wc_node *n = table[bucket_of(gen, path)]; n; n = n->hnext)
		if (n->gen == gen && (n->kind == WC_VIEW) == (kind == WC_VIEW) && !strcmp(n->path, path))
			return n;
	return NULL;
}

static struct wc_node *node_new(enum wc_kind kind, uint64_t gen, const char *path, struct wc_ds *ds)
{
	struct wc_node *n = calloc(1, sizeof(*n));

	if (n == NULL || (n->path = strdup(path)) == NULL) {
		free(n);
		return NULL;
	}
	n->kind = kind;
	n->gen = gen;
	n->ds = ds;
	if (ds != NULL)
		show_ds(n, ds);
	pthread_mutex_init(&n->check_mu, NULL);
	pthread_mutex_init(&n->mu, NULL);
	atomic_init(&n->last_check_ms, now_ms());
	return n;
}

void wc_node_destroy(struct wc_node *n)
{
	wc_ds_put(n->ds);
	pthread_mutex_destroy(&n->check_mu);
	pthread_mutex_destroy(&n->mu);
	free(n->tag);
	free(n->path);
	free(n);
}

/* A node out of the table: freed now, or by the invalidation thread after
 * the jobs it still has queued (they use its path and inode number). */
static void node_free(struct wc_node *n)
{
	struct wc_ds *evicted;

	wc_ds_put(set_ds(n, NULL, &evicted)); /* and out of the idle list */
	wc_ds_put(evicted);
	if (!wc_inval_keep(n))
		wc_node_destroy(n);
}

/* Holds the node for (kind, gen, path): the one already in the table, or n
 * (inserted), freeing n when another thread inserted first. */
static struct wc_node *table_hold(struct wc_node *n)
{
	pthread_mutex_lock(&table_mu);
	struct wc_node *old = table_find(n->kind, n->gen, n->path);
	if (old == NULL) {
		unsigned b = bucket_of(n->gen, n->path);
		n->hnext = table[b];
		table[b] = n;
		old = n;
	} else {
		node_free(n);
	}
	old->nlookup++;
	pthread_mutex_unlock(&table_mu);
	return old;
}

static struct wc_node *hold_static(struct wc_node *n)
{
	return n; /* never forgotten */
}

void wc_forget(struct wc_node *n, uint64_t nlookup)
{
	if (n->is_static)
		return;
	pthread_mutex_lock(&table_mu);
	n->nlookup = nlookup < n->nlookup ? n->nlookup - nlookup : 0;
	if (n->nlookup > 0) {
		pthread_mutex_unlock(&table_mu);
		return;
	}
	struct wc_node **pp = &table[bucket_of(n->gen, n->path)];
	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	pthread_mutex_unlock(&table_mu);
	node_free(n);
}

void wc_table_clear(void)
{
	pthread_mutex_lock(&table_mu);
	for (unsigned b = 0; b < WC_NBUCKETS; b++) {
		while (table[b]) {
			struct wc_node *n = table[b];
			table[b] = n->hnext;
			node_free(n);
		}
	}
	pthread_mutex_unlock(&table_mu);
}

void wc_table_children(uint64_t gen, const char *dir,
		       void (*fn)(const char *name, bool is_file, void *arg), void *arg)
{
	size_t dlen = strlen(dir);

	pthread_mutex_lock(&table_mu);
	for (unsigned b = 0; b < WC_NBUCKETS; b++) {
		for (struct wc_node *n = table[b]; n; n = n->hnext) {
			if (n->gen != gen || n->kind == WC_VIEW)
				continue;
			const char *name = n->path;
			if (dlen > 0) {
				if (strncmp(n->path, dir, dlen) != 0 || n->path[dlen] != '/')
					continue;
				name = n->path + dlen + 1;
			}
			if (strchr(name, '/') == NULL)
				fn(name, n->kind == WC_FILE, arg);
		}
	}
	pthread_mutex_unlock(&table_mu);
}

/* ---- lookup ----------------------------------------------------------------------- */

/* "@<gen>": a generation in decimal, no sign, no leading zero. */
static bool parse_view(const char *name, uint64_t *gen)
{
	char *end;

	if (name[0] != '@' || name[1] < '1' || name[1] > '9')
		return false;
	errno = 0;
	unsigned long long g = strtoull(name + 1, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*gen = g;
	return true;
}

/* "@<tag>": a tag name (FORMAT.md "Tags": not all digits, not starting
 * with '.' or '-'). */
static bool parse_tag_view(const char *name)
{
	const char *t = name + 1;
	size_t len = strlen(t);

	if (name[0] != '@' || len == 0 || len > 100 || t[0] == '.' || t[0] == '-' ||
	    strspn(t, "0123456789") == len)
		return false;
	return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

static void count_child(const char *name, bool is_file, void *arg)
{
	(void)name;
	(void)is_file;
	(*(int *)arg)++;
}

/* Is path of view gen a directory of datasets?  0 if so, else -ENOENT (or
 * -ENAMETOOLONG).  With a server that does not list, every path that is
 * not a dataset is taken for one. */
static int check_dir(uint64_t gen, const char *path)
{
	/* A tag's directories: those of the datasets there are (head). */
	int n = 0, rc = wc_list(gen & WC_TAG_BIT ? 0 : gen, path, count_child, &n);

	if (rc == -ENAMETOOLONG)
		return rc;
	return rc < 0 || n > 0 ? 0 : -ENOENT;
}

static struct wc_node *lookup_child(struct wc_node *parent, const char *name, int *err)
{
	char path[WC_URL_MAX];
	struct wc_node *n;
	bm_dataset *bm = NULL;

	if (!wc_name_ok(name)) {
		*err = ENOENT;
		return NULL;
	}
	if (wc_format(path, sizeof(path), "%s%s%s", parent->path, parent->path[0] ? "/" : "", name) < 0) {
		*err = ENAMETOOLONG;
		return NULL;
	}

	pthread_mutex_lock(&table_mu);
	n = table_find(WC_FILE, parent->gen, path);
	if (n != NULL)
		n->nlookup++;
	pthread_mutex_unlock(&table_mu);
	if (n != NULL) {
		wc_check_generation(n, false);
		return n;
	}

	/* Under a tag's view: the file of the generation the tag names. */
	int rc = open_dataset_at(parent->gen, parent->tag, path, &bm);
	if (rc == 0) {
		struct wc_ds *d = ds_new(bm);
		uint64_t fgen = parent->tag ? bm_generation(bm) : parent->gen;
		n = d ? node_new(WC_FILE, fgen, path, d) : NULL;
		if (n == NULL) {
			wc_ds_put(d);
			*err = ENOMEM;
			return NULL;
		}
		struct wc_node *held = table_hold(n);
		if (held == n)
			settle(n); /* open nowhere yet: an idle handle */
		return held;
	}
	if (rc != BM_ENOTFOUND) {
		*err = rc == -ENAMETOOLONG ? ENAMETOOLONG : EIO;
		return NULL;
	}
	if ((rc = check_dir(parent->gen, path)) < 0) {
		*err = -rc;
		return NULL;
	}
	n = node_new(WC_DIR, parent->gen, path, NULL);
	if (n != NULL && parent->tag && (n->tag = strdup(parent->tag)) == NULL) {
		wc_node_destroy(n);
		n = NULL;
	}
	if (n == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	return table_hold(n);
}

struct wc_node *wc_lookup(struct wc_node *parent, const char *name, int *err)
{
	uint64_t gen;

	*err = ENOENT;
	switch (parent->kind) {
	case WC_ROOT:
		if (!strcmp(name, ".wcfs"))
			return hold_static(&meta_node);
		const char *tag = NULL;
		if (!strcmp(name, "head"))
			gen = 0;
		else if (parse_tag_view(name))
			tag = name + 1, gen = WC_TAG_VIEW(tag);
		else if (!parse_view(name, &gen))
			return NULL;
		struct wc_node *v = node_new(WC_VIEW, gen, "", NULL);
		if (v != NULL && tag && (v->tag = strdup(tag)) == NULL) {
			wc_node_destroy(v);
			v = NULL;
		}
		if (v == NULL) {
			*err = ENOMEM;
			return NULL;
		}
		return table_hold(v);
	case WC_META:
		return !strcmp(name, "url") ? hold_static(&url_node) : NULL;
	case WC_VIEW:
	case WC_DIR:
		return lookup_child(parent, name, err);
	default:
		*err = ENOTDIR;
		return NULL;
	}
}

/* ---- attributes ------------------------------------------------------------------- */

void wc_stat(struct wc_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = wc_ino_of(n);
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atime = st->st_mtime = st->st_ctime = mount_time;
	st->st_blksize = 4096;
	switch (n->kind) {
	case WC_URLFILE:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)strlen(wc_m.url) + 1;
		st->st_blocks = 1;
		break;
	case WC_FILE:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		pthread_mutex_lock(&n->mu); /* no handle needed: it may be closed */
		st->st_size = (off_t)n->size;
		st->st_blksize = (blksize_t)n->blksize;
		st->st_blocks = (blkcnt_t)(n->nstored * (n->blksize / 512));
		pthread_mutex_unlock(&n->mu);
		break;
	default:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		break;
	}
}

double wc_attr_timeout(const struct wc_node *n)
{
	switch (n->kind) {
	case WC_FILE:
		return n->gen ? 3600.0 : 1.0; /* @<gen> never changes */
	case WC_ROOT:
	case WC_META:
	case WC_URLFILE:
		return 3600.0;
	default:
		return 1.0;
	}
}

/* ---- head/: following new generations ------------------------------------------------ */

void wc_check_generation(struct wc_node *n, bool force)
{
	struct wc_ds *evicted = NULL;
	bm_dataset *bm;

	if (n->kind != WC_FILE || n->gen != 0)
		return;
	if (!force && now_ms() - atomic_load(&n->last_check_ms) < WC_CHECK_MS)
		return;
	pthread_mutex_lock(&n->check_mu);
	if (!force && now_ms() - atomic_load(&n->last_check_ms) < WC_CHECK_MS)
		goto out;
	atomic_store(&n->last_check_ms, now_ms());
	if (open_dataset(0, n->path, &bm) < 0)
		goto out; /* keep serving the generation we have */
	/* Only checks and reopens (serialized here) set n->ds to a handle;
	 * eviction may close it meanwhile (then old is NULL below). */
	pthread_mutex_lock(&n->mu);
	uint64_t cur = n->generation, cur_size = n->size;
	bool have = n->ds != NULL;
	pthread_mutex_unlock(&n->mu);
	if (bm_generation(bm) == cur) {
		struct wc_ds *d = have ? NULL : ds_new(bm);
		if (d != NULL) /* it was closed: this is it again */
			wc_ds_put(set_ds(n, d, &evicted));
		else if (have)
			bm_close(bm);
		goto out;
	}
	struct wc_inval *job = wc_inval_new();
	struct wc_ds *d = job ? ds_new(bm) : NULL;
	if (d == NULL) {
		if (job == NULL)
			bm_close(bm);
		free(job);
		goto out; /* out of memory: keep the generation we have */
	}
	atomic_fetch_add(&d->refs, 1); /* the job's */
	/* Logged before the switch: whoever sees the new size finds the line. */
	wc_debug("head/%s: generation %" PRIu64 " -> %" PRIu64 ", size %" PRIu64 " -> %" PRIu64,
		 n->path, cur, d->generation, cur_size, d->size);
	struct wc_ds *old = set_ds(n, d, &evicted);
	/* Readers that took old before the swap may still fill pages from it;
	 * the kernel holds those pages locked while they read, and the
	 * invalidation (inval.c, queued before check_mu is released, so every
	 * later check's reply waits for it) waits for them: no old byte
	 * survives it.  The node's reference to old goes to the job; old is
	 * NULL when the handle was closed: the whole file is dropped. */
	wc_inval_submit(job, n, old, d);
out:
	pthread_mutex_unlock(&n->check_mu);
	wc_ds_put(evicted);
}
