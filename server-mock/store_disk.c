/* server-mock/store_disk.c — the on-disk object store (--root DIR).
 * Owns DIR/objects/<key> (one file per object, so any static file server
 * can serve the same tree) and DIR/tmp/ (uploads in progress; emptied at
 * start, so a crashed upload leaves nothing). A PUT writes a temporary
 * file, fsyncs it and renames it over the key: readers see the old or the
 * new file, never a partial one. An object file gets mode 0666 minus the
 * umask (0644 usually), like any file a program creates, so that a static
 * server running as another user can serve the tree. ETags are content
 * hashes, cached by inode. A full disk (ENOSPC, EDQUOT) is 507.
 * Locking: store.lock serialises precondition checks with rename/unlink/
 * mkdir/rmdir; cache_lock guards the ETag cache; reads take no lock. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "srv.h"

#define ETAG_CACHE_SLOTS 4096

struct etag_slot {
	int used;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	char etag[SRV_ETAG_LEN];
};

struct disk_store {
	struct srv_store base;
	char objects[PATH_MAX];   /* DIR/objects */
	char tmp[PATH_MAX];       /* DIR/tmp */
	mode_t file_mode;         /* 0666 & ~umask: mkstemp's files are 0600 */
	pthread_mutex_t cache_lock;
	struct etag_slot cache[ETAG_CACHE_SLOTS];
};

struct srv_upload {
	struct disk_store *store;
	char *key;
	char tmp_path[PATH_MAX];
	int fd;
	uint64_t size, written;
	struct srv_hash hash;
};

static int path_of(struct disk_store *d, const char *key, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", d->objects, key);
	return n > 0 && n < PATH_MAX ? 0 : -1;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= w;
	}
	return 0;
}

static int pread_all(int fd, void *p, size_t n, off_t off)
{
	char *c = p;
	while (n) {
		ssize_t r = pread(fd, c, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= r;
		off += r;
	}
	return 0;
}

static int same_file(const struct etag_slot *e, const struct stat *st)
{
	return e->used && e->dev == st->st_dev && e->ino == st->st_ino &&
	       e->size == st->st_size &&
	       e->mtime.tv_sec == st->st_mtim.tv_sec &&
	       e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void remember_etag(struct disk_store *d, const struct stat *st,
			  const char *etag)
{
	struct etag_slot *e = &d->cache[st->st_ino % ETAG_CACHE_SLOTS];

	pthread_mutex_lock(&d->cache_lock);
	e->used = 1;
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->size = st->st_size;
	e->mtime = st->st_mtim;
	memcpy(e->etag, etag, SRV_ETAG_LEN);
	pthread_mutex_unlock(&d->cache_lock);
}

static int hash_file(int fd, uint64_t size, char etag[SRV_ETAG_LEN])
{
	size_t bufsize = 1 << 20;
	char *buf = malloc(bufsize);
	struct srv_hash h;

	if (!buf)
		return -1;
	srv_hash_init(&h);
	for (uint64_t off = 0; off < size;) {
		size_t n = size - off < bufsize ? size - off : bufsize;
		if (pread_all(fd, buf, n, off) < 0) {
			free(buf);
			return -1;
		}
		srv_hash_update(&h, buf, n);
		off += n;
	}
	free(buf);
	srv_hash_etag(&h, etag);
	return 0;
}

/* An object's ETag is also kept with its file, in an extended attribute
 * that names the size and mtime it belongs to ("<size> <sec>.<nsec>
 * <etag>"): a file is hashed once, not again after a restart or once the
 * cache above dropped it (a dataset's thousands of block objects would
 * each be hashed on their first GET: a miss twice as slow as a real
 * server's, whose ETag is the file's size and time or stored at PUT).
 * Best effort: a file system without user attributes hashes as before. */
#define ETAG_XATTR "user.blkmap-server.etag"

static void etag_xattr_put(int fd, const struct stat *st, const char *etag)
{
	char v[64 + SRV_ETAG_LEN];
	int n = snprintf(v, sizeof(v), "%lld %lld.%09ld %s", (long long)st->st_size,
			 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, etag);

	if (n > 0 && (size_t)n < sizeof(v))
		(void)fsetxattr(fd, ETAG_XATTR, v, (size_t)n, 0);
}

/* The kept ETag of FD when it belongs to st's size and mtime: 0, else -1. */
static int etag_xattr_get(int fd, const struct stat *st, char etag[SRV_ETAG_LEN])
{
	char v[64 + SRV_ETAG_LEN], want[64];
	ssize_t n = fgetxattr(fd, ETAG_XATTR, v, sizeof(v) - 1);
	int wl = snprintf(want, sizeof(want), "%lld %lld.%09ld ", (long long)st->st_size,
			  (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);

	if (n <= wl || n - wl >= SRV_ETAG_LEN || memcmp(v, want, (size_t)wl) != 0)
		return -1;
	memcpy(etag, v + wl, (size_t)(n - wl));
	etag[n - wl] = '\0';
	return 0;
}

/* The ETag of the open file FD: from the cache, else from its attribute,
 * else by hashing it. */
static int etag_of_file(struct disk_store *d, int fd, const struct stat *st,
			char etag[SRV_ETAG_LEN])
{
	struct etag_slot *e = &d->cache[st->st_ino % ETAG_CACHE_SLOTS];
	int hit;

	pthread_mutex_lock(&d->cache_lock);
	hit = same_file(e, st);
	if (hit)
		memcpy(etag, e->etag, SRV_ETAG_LEN);
	pthread_mutex_unlock(&d->cache_lock);
	if (hit)
		return 0;
	if (etag_xattr_get(fd, st, etag) < 0) {
		if (hash_file(fd, st->st_size, etag) < 0)
			return -1;
		etag_xattr_put(fd, st, etag);
	}
	remember_etag(d, st, etag);
	return 0;
}

/* Open KEY's file. Returns 200 (fd, st filled), 404, 409 (a directory) or
 * 500. */
static int open_object(struct disk_store *d, const char *key, int *fd,
		       struct stat *st)
{
	char path[PATH_MAX];

	if (path_of(d, key, path) < 0)
		return 404;
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (*fd < 0)
		return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ?
			404 : 500;
	if (fstat(*fd, st) < 0) {
		close(*fd);
		*fd = -1;
		return 500;
	}
	if (!S_ISREG(st->st_mode)) {
		int dir = S_ISDIR(st->st_mode);
		close(*fd);
		*fd = -1;
		return dir ? 409 : 404;
	}
	return 200;
}

static int disk_get(struct srv_store *s, const char *key,
		    struct srv_object *out)
{
	struct disk_store *d = (struct disk_store *)s;
	struct stat st;
	int fd, status = open_object(d, key, &fd, &st);

	if (status == 409)
		return 404;
	if (status != 200)
		return status;
	if (etag_of_file(d, fd, &st, out->etag) < 0) {
		close(fd);
		return 500;
	}
	out->store = s;
	out->fd = fd;
	out->mem = NULL;
	out->size = st.st_size;
	out->mtime = (int64_t)st.st_mtim.tv_sec;
	return 200;
}

static int disk_add_body(struct srv_object *o, struct evbuffer *buf,
			 uint64_t off, uint64_t len)
{
	struct evbuffer_file_segment *seg;
	int fd;

	if (len == 0)
		return 0;
	fd = fcntl(o->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* The segment owns fd; libevent sends it with sendfile(). */
	seg = evbuffer_file_segment_new(fd, off, len, EVBUF_FS_CLOSE_ON_FREE);
	if (!seg) {
		close(fd);
		return -1;
	}
	int r = evbuffer_add_file_segment(buf, seg, 0, len);
	evbuffer_file_segment_free(seg);
	return r;
}

static int disk_read(struct srv_object *o, void *buf, uint64_t off,
		     uint64_t len)
{
	return pread_all(o->fd, buf, len, off);
}

static void disk_release(struct srv_object *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
}

static int disk_upload_begin(struct srv_store *s, const char *key,
			     uint64_t size, struct srv_upload **out)
{
	struct disk_store *d = (struct disk_store *)s;
	struct srv_upload *u = calloc(1, sizeof(*u));

	if (!u)
		return 500;
	if (snprintf(u->tmp_path, sizeof(u->tmp_path), "%s/up-XXXXXX",
		     d->tmp) >= (int)sizeof(u->tmp_path)) {
		free(u);
		return 500;
	}
	u->fd = mkostemp(u->tmp_path, O_CLOEXEC);
	int full = u->fd < 0 && (errno == ENOSPC || errno == EDQUOT);
	u->key = strdup(key);
	if (u->fd < 0 || !u->key || fchmod(u->fd, d->file_mode) < 0) {
		if (u->fd >= 0) {
			close(u->fd);
			unlink(u->tmp_path);
		}
		free(u->key);
		free(u);
		return full ? 507 : 500;
	}
	u->store = d;
	u->size = size;
	srv_hash_init(&u->hash);
	*out = u;
	return 200;
}

static int disk_upload_write(struct srv_upload *u, const void *p, size_t n)
{
	if (u->written + n > u->size || write_all(u->fd, p, n) < 0)
		return -1;
	srv_hash_update(&u->hash, p, n);
	u->written += n;
	return 0;
}

static void disk_upload_abort(struct srv_upload *u)
{
	close(u->fd);
	unlink(u->tmp_path);
	free(u->key);
	free(u);
}

/* Makes the directory entry of PATH durable (fsync of its directory). */
static void fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		return;
	*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* mkdir -p for the directories of KEY. Returns 0, 409, 507 or 500. Each new
 * directory's entry is made durable before the object is renamed in. */
static int make_parents(struct disk_store *d, const char *key)
{
	char path[PATH_MAX];
	size_t base = strlen(d->objects) + 1;
	struct stat st;

	if (path_of(d, key, path) < 0)
		return 500;
	for (char *p = path + base; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(path, 0755) < 0) {
			if (errno == ENOTDIR)
				return 409;
			if (errno == ENOSPC || errno == EDQUOT)
				return 507;
			if (errno != EEXIST)
				return 500;
			if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
				return 409;
		} else {
			fsync_parent(path);
		}
		*p = '/';
	}
	return 0;
}

/* Remove the directories of KEY that became empty, deepest first. */
static void prune_parents(struct disk_store *d, const char *key)
{
	char path[PATH_MAX];
	size_t base = strlen(d->objects);
	char *slash;

	if (path_of(d, key, path) < 0)
		return;
	while ((slash = strrchr(path, '/')) && (size_t)(slash - path) > base) {
		*slash = '\0';
		if (rmdir(path) < 0)
			break;
		fsync_parent(path);
	}
}

/* Check COND against the current object and rename the upload over it.
 * Called with store.lock held. */
static int publish_locked(struct srv_upload *u, const struct srv_cond *cond,
			  const char *path)
{
	struct disk_store *d = u->store;
	char cur[SRV_ETAG_LEN];
	struct stat st;

	srv_assert(srv_mutex_held(&d->base.lock));
	int fd, status = open_object(d, u->key, &fd, &st);

	if (status == 409 || status == 500)
		return status;
	if (status == 200) {
		int r = etag_of_file(d, fd, &st, cur);
		close(fd);
		if (r < 0)
			return 500;
	}
	int exists = status == 200;
	status = srv_cond_check(cond, exists ? cur : NULL);
	if (status)
		return status;
	status = make_parents(d, u->key);
	if (status)
		return status;
	if (rename(u->tmp_path, path) < 0)
		return errno == EISDIR || errno == ENOTDIR ? 409 : 500;
	return exists ? 204 : 201;
}

static int disk_upload_commit(struct srv_upload *u,
			      const struct srv_cond *cond,
			      char etag[SRV_ETAG_LEN])
{
	struct srv_store *s = &u->store->base;
	char path[PATH_MAX];
	struct stat st;
	int status;

	errno = 0;  /* a short upload is no full disk */
	if (u->written != u->size || fsync(u->fd) < 0 ||
	    fstat(u->fd, &st) < 0 || path_of(u->store, u->key, path) < 0) {
		int full = errno == ENOSPC || errno == EDQUOT;
		disk_upload_abort(u);
		return full ? 507 : 500;
	}
	srv_hash_etag(&u->hash, etag);
	etag_xattr_put(u->fd, &st, etag);
	remember_etag(u->store, &st, etag);
	pthread_mutex_lock(&s->lock);
	status = publish_locked(u, cond, path);
	pthread_mutex_unlock(&s->lock);
	if (status != 201 && status != 204) {
		disk_upload_abort(u);
		return status;
	}
	fsync_parent(path);
	close(u->fd);
	free(u->key);
	free(u);
	return status;
}

static int disk_remove(struct srv_store *s, const char *key,
		       const struct srv_cond *cond)
{
	struct disk_store *d = (struct disk_store *)s;
	char path[PATH_MAX], cur[SRV_ETAG_LEN];
	struct stat st;
	int fd, status;

	if (path_of(d, key, path) < 0)
		return 404;
	pthread_mutex_lock(&s->lock);
	status = open_object(d, key, &fd, &st);
	if (status == 200) {
		status = etag_of_file(d, fd, &st, cur) < 0 ? 500 :
			 srv_cond_check(cond, cur);
		close(fd);
		if (!status)
			status = unlink(path) < 0 ? 500 : 204;
		if (status == 204) {
			fsync_parent(path);
			prune_parents(d, key);
		}
	} else if (status == 409) {
		status = 404;
	}
	pthread_mutex_unlock(&s->lock);
	return status;
}

/* Could a key under directory key DIRKEY (ending in '/') start with
 * PREFIX? */
static int dir_may_match(const char *dirkey, const char *prefix)
{
	size_t a = strlen(dirkey), b = strlen(prefix);
	return strncmp(dirkey, prefix, a < b ? a : b) == 0;
}

static void walk_dir(int dfd, char *key, size_t klen, const char *prefix,
		     json_t *array)
{
	DIR *dir = fdopendir(dfd);
	struct dirent *de;
	struct stat st;

	if (!dir) {
		close(dfd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		size_t n = strlen(de->d_name);
		/* key holds SRV_MAX_KEY_BYTES + '/' + NUL: a file's key may
		 * be SRV_MAX_KEY_BYTES long, a directory's one less. */
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    klen + n > SRV_MAX_KEY_BYTES ||
		    fstatat(dirfd(dir), de->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		memcpy(key + klen, de->d_name, n + 1);
		if (S_ISREG(st.st_mode) && !strncmp(key, prefix,
						    strlen(prefix))) {
			json_array_append_new(array, json_pack(
				"{s:s, s:I}", "key", key, "size",
				(json_int_t)st.st_size));
		} else if (S_ISDIR(st.st_mode) && klen + n < SRV_MAX_KEY_BYTES) {
			strcpy(key + klen + n, "/");
			if (!dir_may_match(key, prefix))
				continue;
			int sub = openat(dirfd(dir), de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				walk_dir(sub, key, klen + n + 1, prefix,
					 array);
		}
	}
	closedir(dir);
}

static int disk_list(struct srv_store *s, const char *prefix, json_t *array)
{
	struct disk_store *d = (struct disk_store *)s;
	char key[SRV_MAX_KEY_BYTES + 2] = "";
	int fd = open(d->objects, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return 500;
	walk_dir(fd, key, 0, prefix, array);
	return 200;
}

static void disk_close(struct srv_store *s)
{
	struct disk_store *d = (struct disk_store *)s;

	pthread_mutex_destroy(&d->cache_lock);
	pthread_mutex_destroy(&s->lock);
	free(d);
}

static const struct srv_store_ops disk_ops = {
	.get = disk_get,
	.add_body = disk_add_body,
	.read = disk_read,
	.release = disk_release,
	.upload_begin = disk_upload_begin,
	.upload_write = disk_upload_write,
	.upload_commit = disk_upload_commit,
	.upload_abort = disk_upload_abort,
	.remove = disk_remove,
	.list = disk_list,
	.close = disk_close,
};

/* Remove the files a crashed run left in DIR/tmp. */
static void clean_tmp(const char *tmp)
{
	DIR *dir = opendir(tmp);
	struct dirent *de;

	if (!dir)
		return;
	while ((de = readdir(dir)) != NULL)
		if (strncmp(de->d_name, "up-", 3) == 0)
			unlinkat(dirfd(dir), de->d_name, 0);
	closedir(dir);
}

static int make_dir(const char *path, char *err, size_t n)
{
	struct stat st;

	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		snprintf(err, n, "cannot create directory %s: %s", path,
			 strerror(errno));
		return -1;
	}
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, n, "%s is not a directory", path);
		return -1;
	}
	return 0;
}

struct srv_store *srv_store_open_disk(const char *root, char *err, size_t n)
{
	struct disk_store *d = calloc(1, sizeof(*d));

	if (!d) {
		snprintf(err, n, "out of memory");
		return NULL;
	}
	if (strlen(root) + 16 > PATH_MAX / 2) {
		snprintf(err, n, "--root path is too long");
		free(d);
		return NULL;
	}
	snprintf(d->objects, sizeof(d->objects), "%s/objects", root);
	snprintf(d->tmp, sizeof(d->tmp), "%s/tmp", root);
	mode_t mask = umask(0);  /* read it: still one thread here */
	umask(mask);
	d->file_mode = 0666 & ~mask;
	if (make_dir(root, err, n) < 0 || make_dir(d->objects, err, n) < 0 ||
	    make_dir(d->tmp, err, n) < 0) {
		free(d);
		return NULL;
	}
	clean_tmp(d->tmp);
	d->base.ops = &disk_ops;
	pthread_mutex_init(&d->base.lock, NULL);
	pthread_mutex_init(&d->cache_lock, NULL);
	return &d->base;
}
