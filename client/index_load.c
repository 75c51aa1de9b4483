/* index_load.c — index pages of formats v2 and v3 from the object store: a cache of
 * immutable, content-addressed pages (never stale: a page's key is the hash
 * of its bytes) bounded in bytes, the loader that fills it with verified
 * GETs, and the writer of new pages.  What index.c's walks get as their
 * struct bm_index_io (index_load.h).
 * Owns: struct bm_pages and its entries.  Locking: pc->mu guards the hash
 * table, the LRU list, the byte count, each entry's refs and the list of
 * pages being fetched; it is a leaf, never held across a request (a load
 * of a page another thread is fetching waits on pc->fetched, which
 * releases it: one GET a page however many threads want it at once).  A page handed out by load stays until its
 * release (refs > 0 pins it); eviction takes only unpinned pages.  An
 * entry's checked mark (index.h: set once a whole decode accepted its
 * bytes) is atomic: set and read by walks that hold a ref, not pc->mu.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_load.h"

struct cpage {
	struct cpage *hnext;       /* hash chain */
	struct cpage *prev, *next; /* LRU list, most recent first */
	unsigned refs;             /* loads not yet released */
	atomic_bool checked;       /* a whole decode accepted data (index.h) */
	char sum[BM_SUM_HEX + 1];
	size_t len;
	uint8_t data[];
};

/* A page a load is fetching (on that load's stack while it runs). */
struct fetching {
	struct fetching *next;
	const char *sum;
};

struct bm_pages {
	struct bm_store *store;
	size_t cap;
	pthread_mutex_t mu;
	pthread_cond_t fetched;    /* a fetch ended: look again */
	struct fetching *fetching; /* pages being fetched */
	struct cpage **buckets;
	size_t nbuckets;           /* a power of two */
	size_t npages, bytes;
	struct cpage *head, *tail; /* LRU */
	atomic_uint_fast64_t hits, fetched_pages, fetched_bytes, stored_pages, stored_bytes;
};

int bm_pages_new(struct bm_pages **pp, struct bm_store *store, size_t cap)
{
	struct bm_pages *pc = calloc(1, sizeof(*pc));

	*pp = NULL;
	if (pc == NULL)
		return BM_ENOMEM;
	pc->nbuckets = 64;
	pc->buckets = calloc(pc->nbuckets, sizeof(*pc->buckets));
	if (pc->buckets == NULL) {
		free(pc);
		return BM_ENOMEM;
	}
	pc->store = store;
	pc->cap = cap;
	pthread_mutex_init(&pc->mu, NULL);
	pthread_cond_init(&pc->fetched, NULL);
	*pp = pc;
	return 0;
}

void bm_pages_free(struct bm_pages *pc)
{
	if (pc == NULL)
		return;
	for (struct cpage *p = pc->head, *nx; p; p = nx) {
		nx = p->next;
		bm_assert(p->refs == 0); /* every load was released */
		free(p);
	}
	free(pc->buckets);
	bm_assert(pc->fetching == NULL);
	pthread_cond_destroy(&pc->fetched);
	pthread_mutex_destroy(&pc->mu);
	free(pc);
}

void bm_pages_stats(struct bm_pages *pc, struct bm_pages_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->hits = atomic_load(&pc->hits);
	st->fetched_pages = atomic_load(&pc->fetched_pages);
	st->fetched_bytes = atomic_load(&pc->fetched_bytes);
	st->stored_pages = atomic_load(&pc->stored_pages);
	st->stored_bytes = atomic_load(&pc->stored_bytes);
	pthread_mutex_lock(&pc->mu);
	st->cached_pages = pc->npages;
	st->cached_bytes = pc->bytes;
	pthread_mutex_unlock(&pc->mu);
}

static struct cpage *page_of(const void *data)
{
	return (struct cpage *)((const char *)data - offsetof(struct cpage, data));
}

/* ---- the table (pc->mu held) ------------------------------------------------ */

static size_t bucket_of(const struct bm_pages *pc, const char *sum)
{
	/* The sum is already uniform: its first hex digits will do. */
	uint64_t h = 0;
	for (int i = 0; i < 16 && sum[i]; i++)
		h = h * 16 + (uint64_t)(sum[i] <= '9' ? sum[i] - '0' : sum[i] - 'a' + 10);
	return (size_t)h & (pc->nbuckets - 1);
}

static struct cpage *find_locked(struct bm_pages *pc, const char *sum)
{
	bm_assert(bm_mutex_held(&pc->mu));
	for (struct cpage *p = pc->buckets[bucket_of(pc, sum)]; p; p = p->hnext)
		if (strcmp(p->sum, sum) == 0)
			return p;
	return NULL;
}

static void lru_unlink_locked(struct bm_pages *pc, struct cpage *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		pc->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		pc->tail = p->prev;
	p->prev = p->next = NULL;
}

static void lru_push_locked(struct bm_pages *pc, struct cpage *p)
{
	p->prev = NULL;
	p->next = pc->head;
	if (pc->head)
		pc->head->prev = p;
	pc->head = p;
	if (pc->tail == NULL)
		pc->tail = p;
}

/* Doubles the buckets when the table is fuller than one page per bucket
 * (a failed allocation keeps the chains longer, nothing worse). */
static void grow_locked(struct bm_pages *pc)
{
	size_t nb = pc->nbuckets * 2;
	struct cpage **b;

	if (pc->npages <= pc->nbuckets || (b = calloc(nb, sizeof(*b))) == NULL)
		return;
	struct cpage **old = pc->buckets;
	size_t oldn = pc->nbuckets;
	pc->buckets = b;
	pc->nbuckets = nb;
	for (size_t i = 0; i < oldn; i++) {
		for (struct cpage *p = old[i], *nx; p; p = nx) {
			nx = p->hnext;
			size_t k = bucket_of(pc, p->sum);
			p->hnext = b[k];
			b[k] = p;
		}
	}
	free(old);
}

static void remove_locked(struct bm_pages *pc, struct cpage *p)
{
	struct cpage **pp = &pc->buckets[bucket_of(pc, p->sum)];

	bm_assert(p->refs == 0);
	while (*pp != p)
		pp = &(*pp)->hnext;
	*pp = p->hnext;
	lru_unlink_locked(pc, p);
	pc->npages--;
	pc->bytes -= p->len;
	free(p);
}

/* Drops the least recently used unpinned pages until the cache fits. */
static void evict_locked(struct bm_pages *pc)
{
	for (struct cpage *p = pc->tail, *pv; p && pc->bytes > pc->cap; p = pv) {
		pv = p->prev;
		if (p->refs == 0)
			remove_locked(pc, p);
	}
}

void bm_pages_set_cap(struct bm_pages *pc, size_t cap)
{
	pthread_mutex_lock(&pc->mu);
	pc->cap = cap;
	evict_locked(pc);
	pthread_mutex_unlock(&pc->mu);
}

/* Adds the page (sum, data, len), pinned when pin: the entry now in the
 * table (another thread's, when it was quicker), or NULL when out of
 * memory. */
static struct cpage *insert(struct bm_pages *pc, const char *sum, const void *data, size_t len, bool pin)
{
	struct cpage *p = malloc(sizeof(*p) + len), *have;

	if (p == NULL)
		return NULL;
	memset(p, 0, sizeof(*p));
	atomic_init(&p->checked, false);
	memcpy(p->sum, sum, sizeof(p->sum));
	memcpy(p->data, data, len);
	p->len = len;
	pthread_mutex_lock(&pc->mu);
	if ((have = find_locked(pc, sum)) != NULL) {
		free(p);
		p = have;
		lru_unlink_locked(pc, p);
	} else {
		size_t k = bucket_of(pc, sum);
		p->hnext = pc->buckets[k];
		pc->buckets[k] = p;
		pc->npages++;
		pc->bytes += len;
	}
	lru_push_locked(pc, p);
	p->refs += pin;
	evict_locked(pc);
	grow_locked(pc);
	pthread_mutex_unlock(&pc->mu);
	return p;
}

/* ---- the io of index.c ---------------------------------------------------------- */

/* A page as it arrives: grown as needed (a v2 page is at most 4360
 * bytes, a v3 leaf up to BM_IPAGE_LIMIT, the get's max). */
struct page_buf {
	uint8_t *data;
	size_t len, cap;
	const char *sum;
};

static int page_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	struct page_buf *b = arg;

	if (off + len > BM_IPAGE_LIMIT)
		return -EFBIG; /* cannot happen: the get's max is the limit */
	if (off + len > b->cap) {
		size_t cap = b->cap ? b->cap : BM_IPAGE_MAX;
		while (cap < off + len)
			cap *= 2;
		uint8_t *d = realloc(b->data, cap);
		if (d == NULL)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + off, data, len);
	b->len = (size_t)off + len;
	return 0;
}

static int page_verify(void *arg, char *msg, size_t n)
{
	struct page_buf *b = arg;
	return bm_ipage_verify(b->sum, b->data, b->len, msg, n);
}

static bool fetching_locked(const struct bm_pages *pc, const char *sum)
{
	for (const struct fetching *f = pc->fetching; f; f = f->next)
		if (strcmp(f->sum, sum) == 0)
			return true;
	return false;
}

static int fetch_page(struct bm_pages *pc, const char *sum, struct cpage **pp, char *msg, size_t n);

static int pages_load(void *arg, const char *sum, const void **data, size_t *len, char *msg, size_t n)
{
	struct bm_pages *pc = arg;
	struct cpage *p;
	int rc;

	*data = NULL;
	*len = 0;
	if (strlen(sum) != BM_SUM_HEX)
		return bm_ipage_verify(sum, "", 0, msg, n); /* names the bad key */
	struct fetching me = { .sum = sum };
	pthread_mutex_lock(&pc->mu);
	for (;;) {
		if ((p = find_locked(pc, sum)) != NULL) {
			p->refs++;
			lru_unlink_locked(pc, p);
			lru_push_locked(pc, p);
			break;
		}
		if (!fetching_locked(pc, sum))
			break;
		/* Another load is fetching it: its page, once cached, is
		 * this one's too (if that fetch failed, or the page was
		 * evicted at once, this load fetches it itself). */
		pthread_cond_wait(&pc->fetched, &pc->mu);
	}
	if (p == NULL) {
		me.next = pc->fetching;
		pc->fetching = &me;
	}
	pthread_mutex_unlock(&pc->mu);
	if (p != NULL) {
		atomic_fetch_add(&pc->hits, 1);
		*data = p->data;
		*len = p->len;
		return 0;
	}
	rc = fetch_page(pc, sum, &p, msg, n);
	pthread_mutex_lock(&pc->mu);
	for (struct fetching **q = &pc->fetching; *q; q = &(*q)->next)
		if (*q == &me) {
			*q = me.next;
			break;
		}
	pthread_cond_broadcast(&pc->fetched);
	pthread_mutex_unlock(&pc->mu);
	if (rc < 0)
		return rc;
	*data = p->data;
	*len = p->len;
	return 0;
}

/* GETs page sum, verified, into the cache (pinned for the caller): *pp. */
static int fetch_page(struct bm_pages *pc, const char *sum, struct cpage **pp, char *msg, size_t n)
{
	char key[8 + BM_SUM_HEX + 1];
	struct cpage *p = NULL;
	int rc;

	struct page_buf *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return BM_ENOMEM;
	b->sum = sum;
	struct bm_get g = { .max = BM_IPAGE_LIMIT, .sink = page_sink, .sink_arg = b, .verify = page_verify };
	snprintf(key, sizeof(key), "index/%s", sum);
	rc = bm_store_get(pc->store, key, &g, msg, n);
	if (rc == BM_ENOTFOUND) {
		char *name = bm_store_name(pc->store, key);
		bm_fmt(msg, n, "%s: missing (404), yet the dataset's index names it", name ? name : key);
		free(name);
		rc = BM_EFORMAT;
	} else if (rc == BM_ECHECKSUM || rc == BM_EFORMAT) {
		/* The store's message names the URL, the layer's does not. */
		char inner[400], *name = bm_store_name(pc->store, key);
		snprintf(inner, sizeof(inner), "%s", msg);
		if (strstr(inner, key) == NULL)
			bm_fmt(msg, n, "%s: %s", name ? name : key, inner);
		free(name);
	}
	if (rc == 0) {
		atomic_fetch_add(&pc->fetched_pages, 1);
		atomic_fetch_add(&pc->fetched_bytes, b->len);
		if ((p = insert(pc, sum, b->data, b->len, true)) == NULL)
			rc = BM_ENOMEM;
	}
	free(b->data);
	free(b);
	*pp = p;
	return rc;
}

static void pages_release(void *arg, const char *sum, const void *data)
{
	struct bm_pages *pc = arg;

	(void)sum;
	if (data == NULL)
		return;
	struct cpage *p = page_of(data);
	pthread_mutex_lock(&pc->mu);
	bm_assert(p->refs > 0);
	p->refs--;
	if (p->refs == 0 && pc->bytes > pc->cap)
		evict_locked(pc);
	pthread_mutex_unlock(&pc->mu);
}

/* The mark lives with the bytes: an entry evicted and fetched again
 * starts unchecked. */
static bool pages_checked(void *arg, const void *data)
{
	(void)arg;
	return atomic_load_explicit(&page_of(data)->checked, memory_order_acquire);
}

static void pages_set_checked(void *arg, const void *data)
{
	(void)arg;
	atomic_store_explicit(&page_of(data)->checked, true, memory_order_release);
}

int bm_put_immutable(struct bm_store *s, const char *key, const void *body, size_t len, bool whole,
		     char *msg, size_t n)
{
	static const struct bm_put if_none = { .cond = BM_PUT_IF_NONE };
	int rc = bm_store_put(s, key, body, len, &if_none, NULL, msg, n);

	if (rc != BM_ECONFLICT)
		return rc;
	if (!whole)
		return 0; /* the same bytes are there already */
	/* An object is there under this name: PUT the bytes again, plainly.
	 * That renews its modification time, which gc reads (an old object
	 * no kept generation names may be collected while this commit is
	 * about to name it: FORMAT.md "Garbage collection"), and replaces a
	 * cut one that a server that does not store atomically left. */
	return bm_store_put(s, key, body, len, NULL, NULL, msg, n);
}

static int pages_store(void *arg, const char *sum, const void *data, size_t len, char *msg, size_t n)
{
	struct bm_pages *pc = arg;
	char key[8 + BM_SUM_HEX + 1];
	int rc;

	snprintf(key, sizeof(key), "index/%s", sum);
	rc = bm_put_immutable(pc->store, key, data, len, true, msg, n);
	if (rc < 0)
		return rc;
	atomic_fetch_add(&pc->stored_pages, 1);
	atomic_fetch_add(&pc->stored_bytes, len);
	/* The next walks read it: keep it (not pinned).  Out of memory here
	 * only means it is fetched again. */
	(void)insert(pc, sum, data, len, false);
	return 0;
}

void bm_pages_count_stored(struct bm_pages *pc, size_t len)
{
	atomic_fetch_add(&pc->stored_pages, 1);
	atomic_fetch_add(&pc->stored_bytes, len);
}

void bm_pages_keep(struct bm_pages *pc, const char *sum, const void *data, size_t len)
{
	(void)insert(pc, sum, data, len, false); /* out of memory: fetched again */
}

void bm_pages_io(struct bm_pages *pc, struct bm_index_io *io)
{
	io->load = pages_load;
	io->release = pages_release;
	io->store = pages_store;
	io->checked = pages_checked;
	io->set_checked = pages_set_checked;
	io->arg = pc;
}
