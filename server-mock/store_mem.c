/* server-mock/store_mem.c — the in-process object store (--memory).
 * Owns a hash table of key -> immutable object. An object is reference
 * counted: a GET keeps a reference while its body is being sent, so a PUT
 * or DELETE can replace the key at any time without touching bytes in
 * flight. Locking: store.lock guards the table and every reference count
 * change; object bytes are never written after publication. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv.h"

struct mem_obj {
	unsigned refs;             /* under store.lock */
	uint64_t size;
	char etag[SRV_ETAG_LEN];
	int64_t mtime;             /* Unix time it was stored */
	unsigned char *data;
};

struct mem_entry {
	char *key;
	struct mem_obj *obj;
	struct mem_entry *next;
};

struct mem_store {
	struct srv_store base;
	struct mem_entry **buckets;
	size_t nbuckets, count;
};

struct srv_upload {
	struct mem_store *store;
	char *key;
	struct mem_obj *obj;
	uint64_t written;
	struct srv_hash hash;
};

static uint64_t hash_key(const char *key)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 0x100000001b3ull;
	return h;
}

static struct mem_entry **find_slot(struct mem_store *m, const char *key)
{
	struct mem_entry **e = &m->buckets[hash_key(key) % m->nbuckets];
	while (*e && strcmp((*e)->key, key) != 0)
		e = &(*e)->next;
	return e;
}

static void grow_table(struct mem_store *m)
{
	size_t n = m->nbuckets * 2;
	struct mem_entry **b = calloc(n, sizeof(*b));

	if (!b)
		return;  /* keep the longer chains */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct mem_entry *e = m->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = b[hash_key(e->key) % n];
			b[hash_key(e->key) % n] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

/* Drop one reference; called with store.lock held. */
static void put_obj_locked(struct srv_store *s, struct mem_obj *o)
{
	srv_assert(srv_mutex_held(&s->lock));
	srv_assert(o->refs > 0);
	if (--o->refs == 0) {
		free(o->data);
		free(o);
	}
}

static int mem_get(struct srv_store *s, const char *key,
		   struct srv_object *out)
{
	struct mem_store *m = (struct mem_store *)s;
	int status = 404;

	pthread_mutex_lock(&s->lock);
	struct mem_entry *e = *find_slot(m, key);
	if (e) {
		e->obj->refs++;
		out->mem = e->obj;
		out->store = s;
		out->fd = -1;
		out->size = e->obj->size;
		out->mtime = e->obj->mtime;
		memcpy(out->etag, e->obj->etag, SRV_ETAG_LEN);
		status = 200;
	}
	pthread_mutex_unlock(&s->lock);
	return status;
}

struct body_ref {
	struct srv_store *store;
	struct mem_obj *obj;
};

static void release_body_ref(const void *data, size_t len, void *arg)
{
	struct body_ref *r = arg;

	pthread_mutex_lock(&r->store->lock);
	put_obj_locked(r->store, r->obj);
	pthread_mutex_unlock(&r->store->lock);
	free(r);
}

static int mem_add_body(struct srv_object *o, struct evbuffer *buf,
			uint64_t off, uint64_t len)
{
	struct mem_obj *mo = o->mem;
	struct body_ref *r = malloc(sizeof(*r));

	if (!r)
		return -1;
	if (len == 0) {
		free(r);
		return 0;
	}
	r->store = o->store;
	r->obj = mo;
	pthread_mutex_lock(&r->store->lock);
	mo->refs++;
	pthread_mutex_unlock(&r->store->lock);
	if (evbuffer_add_reference(buf, mo->data + off, len, release_body_ref,
				   r) < 0) {
		release_body_ref(NULL, 0, r);
		return -1;
	}
	return 0;
}

static int mem_read(struct srv_object *o, void *buf, uint64_t off,
		    uint64_t len)
{
	struct mem_obj *mo = o->mem;
	memcpy(buf, mo->data + off, len);
	return 0;
}

static void mem_release(struct srv_object *o)
{
	if (!o->mem)
		return;
	pthread_mutex_lock(&o->store->lock);
	put_obj_locked(o->store, o->mem);
	pthread_mutex_unlock(&o->store->lock);
	o->mem = NULL;
}

static int mem_upload_begin(struct srv_store *s, const char *key,
			    uint64_t size, struct srv_upload **out)
{
	struct srv_upload *u = calloc(1, sizeof(*u));

	if (!u)
		return 500;
	u->store = (struct mem_store *)s;
	u->key = strdup(key);
	u->obj = calloc(1, sizeof(*u->obj));
	if (u->obj) {
		u->obj->size = size;
		u->obj->refs = 1;
		u->obj->data = malloc(size ? size : 1);
	}
	if (!u->key || !u->obj || !u->obj->data) {
		if (u->obj)
			free(u->obj->data);
		free(u->obj);
		free(u->key);
		free(u);
		return 500;
	}
	srv_hash_init(&u->hash);
	*out = u;
	return 200;
}

static int mem_upload_write(struct srv_upload *u, const void *p, size_t n)
{
	if (u->written + n > u->obj->size)
		return -1;
	memcpy(u->obj->data + u->written, p, n);
	srv_hash_update(&u->hash, p, n);
	u->written += n;
	return 0;
}

static void mem_upload_abort(struct srv_upload *u)
{
	free(u->obj->data);
	free(u->obj);
	free(u->key);
	free(u);
}

/* Publish U under KEY if COND holds; returns 201, 204 or 412. */
static int publish_locked(struct srv_upload *u, const struct srv_cond *cond)
{
	struct mem_store *m = u->store;

	srv_assert(srv_mutex_held(&m->base.lock));
	struct mem_entry **slot = find_slot(m, u->key), *e = *slot;
	int status = srv_cond_check(cond, e ? e->obj->etag : NULL);

	if (status)
		return status;
	if (e) {
		put_obj_locked(&m->base, e->obj);
		e->obj = u->obj;
		return 204;
	}
	e = malloc(sizeof(*e));
	if (!e)
		return 500;
	e->key = u->key;
	u->key = NULL;
	e->obj = u->obj;
	e->next = NULL;
	*slot = e;
	if (++m->count > m->nbuckets)
		grow_table(m);
	return 201;
}

static int mem_upload_commit(struct srv_upload *u, const struct srv_cond *cond,
			     char etag[SRV_ETAG_LEN])
{
	struct srv_store *s = &u->store->base;
	int status;

	if (u->written != u->obj->size) {
		mem_upload_abort(u);
		return 500;
	}
	srv_hash_etag(&u->hash, u->obj->etag);
	u->obj->mtime = (int64_t)time(NULL);
	memcpy(etag, u->obj->etag, SRV_ETAG_LEN);
	pthread_mutex_lock(&s->lock);
	status = publish_locked(u, cond);
	pthread_mutex_unlock(&s->lock);
	if (status == 201 || status == 204) {
		free(u->key);
		free(u);
	} else {
		mem_upload_abort(u);
	}
	return status;
}

static int mem_remove(struct srv_store *s, const char *key,
		      const struct srv_cond *cond)
{
	struct mem_store *m = (struct mem_store *)s;
	int status = 404;

	pthread_mutex_lock(&s->lock);
	struct mem_entry **slot = find_slot(m, key), *e = *slot;
	if (e) {
		status = srv_cond_check(cond, e->obj->etag);
		if (!status) {
			*slot = e->next;
			put_obj_locked(&m->base, e->obj);
			free(e->key);
			free(e);
			m->count--;
			status = 204;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return status;
}

static int mem_list(struct srv_store *s, const char *prefix, json_t *array)
{
	struct mem_store *m = (struct mem_store *)s;
	size_t plen = strlen(prefix);

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct mem_entry *e = m->buckets[i]; e; e = e->next)
			if (strncmp(e->key, prefix, plen) == 0)
				json_array_append_new(array, json_pack(
					"{s:s, s:I}", "key", e->key, "size",
					(json_int_t)e->obj->size));
	pthread_mutex_unlock(&s->lock);
	return 200;
}

static void mem_close(struct srv_store *s)
{
	struct mem_store *m = (struct mem_store *)s;

	pthread_mutex_lock(&s->lock);  /* put_obj_locked's rule, even alone */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct mem_entry *e = m->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			put_obj_locked(&m->base, e->obj);
			free(e->key);
			free(e);
		}
	}
	pthread_mutex_unlock(&s->lock);
	free(m->buckets);
	pthread_mutex_destroy(&s->lock);
	free(m);
}

static const struct srv_store_ops mem_ops = {
	.get = mem_get,
	.add_body = mem_add_body,
	.read = mem_read,
	.release = mem_release,
	.upload_begin = mem_upload_begin,
	.upload_write = mem_upload_write,
	.upload_commit = mem_upload_commit,
	.upload_abort = mem_upload_abort,
	.remove = mem_remove,
	.list = mem_list,
	.close = mem_close,
};

struct srv_store *srv_store_open_memory(void)
{
	struct mem_store *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->nbuckets = 64;
	m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
	if (!m->buckets) {
		free(m);
		return NULL;
	}
	m->base.ops = &mem_ops;
	pthread_mutex_init(&m->base.lock, NULL);
	return &m->base;
}
