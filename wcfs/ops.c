/* ops.c — the FUSE low-level operations of blkmap-wcfs: lookup/forget,
 * getattr, open/read/release of dataset files and .wcfs/url, and directory
 * listings.  Everything is read-only (the mount is "ro" and open refuses
 * writing).  Reads go to the node's current dataset handle through its
 * block cache (blocks.c, bm_read underneath).
 * Owns: the per-open directory buffers (fi->fh of directories) and the list
 * of those open, freed at unmount (wc_destroy) when the kernel's releasedir
 * never came: an unmount can overtake it.
 * Locking: a directory buffer's mutex, held by readdir while it builds and
 * replies (a releasedir waits for it); open_dirs_mu guards the list of open
 * buffers (never held with a buffer's mutex); nothing else, see node.c.
 * No operation waits for a kernel cache invalidation: lookup, getattr and
 * open of a head/ file whose invalidation is queued (inval.c) hand their
 * reply to the invalidation thread, to be sent after it, and return.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "wcfs.h"

static void wc_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* The mirror invalidates the kernel cache itself, block by block (head/)
	 * or never (@<gen>/): no whole-file drop when attributes are fetched. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	conn->max_read = 0; /* no limit of ours: the kernel's (max_pages) */
}

/* ---- replies that wait for head/'s invalidations ------------------------------------ */

enum reply_kind { REPLY_ENTRY, REPLY_ATTR, REPLY_OPEN };

struct reply {
	enum reply_kind kind;
	fuse_req_t req;
	struct wc_node *n;
	struct fuse_file_info fi;    /* REPLY_OPEN */
	bool under_tag;              /* REPLY_ENTRY: looked up under a tag's view */
};

static void reply_node(fuse_req_t req, struct wc_node *n, bool under_tag);

static void send_reply(struct reply *r)
{
	struct stat st;

	switch (r->kind) {
	case REPLY_ENTRY:
		reply_node(r->req, r->n, r->under_tag);
		break;
	case REPLY_ATTR:
		wc_stat(r->n, &st);
		fuse_reply_attr(r->req, &st, wc_attr_timeout(r->n));
		break;
	case REPLY_OPEN:
		fuse_reply_open(r->req, &r->fi);
		break;
	}
}

static void send_deferred(void *arg)
{
	send_reply(arg);
	free(arg);
}

/* Replies to req about n once the invalidations queued for n are done
 * (inval.c): whoever opens or stats head/f after a switch sees none of the
 * old generation's bytes.  The worker returns at once either way. */
static void reply_after_inval(enum reply_kind kind, fuse_req_t req, struct wc_node *n,
			      const struct fuse_file_info *fi, bool under_tag)
{
	struct reply r = { .kind = kind, .req = req, .n = n, .under_tag = under_tag }, *later;

	if (fi != NULL)
		r.fi = *fi;
	later = malloc(sizeof(*later));
	if (later != NULL) {
		*later = r;
		if (wc_inval_defer(n, send_deferred, later))
			return;
		free(later);
	}
	send_reply(&r);
}

/* An entry under a tag's view is cached 1 s: the tag may move. */
static void reply_node(fuse_req_t req, struct wc_node *n, bool under_tag)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = wc_ino_of(n);
	e.attr_timeout = wc_attr_timeout(n);
	e.entry_timeout = under_tag ? 1.0 : wc_attr_timeout(n);
	wc_stat(n, &e.attr);
	if (fuse_reply_entry(req, &e) != 0)
		wc_forget(n, 1); /* the kernel did not get it */
}

static void wc_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int err;
	struct wc_node *n = wc_lookup(wc_node_of(parent), name, &err);

	if (n == NULL)
		fuse_reply_err(req, err);
	else
		reply_after_inval(REPLY_ENTRY, req, n, NULL, wc_node_of(parent)->tag != NULL);
}

static void wc_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	wc_forget(wc_node_of(ino), nlookup);
	fuse_reply_none(req);
}

static void wc_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		wc_forget(wc_node_of(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void wc_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct wc_node *n = wc_node_of(ino);

	(void)fi;
	wc_check_generation(n, false);
	reply_after_inval(REPLY_ATTR, req, n, NULL, false);
}

static void wc_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct wc_node *n = wc_node_of(ino);

	if (n->kind != WC_FILE && n->kind != WC_URLFILE) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	wc_check_generation(n, true);
	int err = wc_node_open(n); /* a handle while open (reopened if closed) */
	if (err != 0) {
		fuse_reply_err(req, err);
		return;
	}
	/* @<gen> never changes; head/ drops what changed itself. */
	fi->keep_cache = 1;
	reply_after_inval(REPLY_OPEN, req, n, fi, false);
}

static void read_url(fuse_req_t req, size_t size, off_t off)
{
	char line[sizeof(wc_m.url) + 1];
	size_t len = (size_t)snprintf(line, sizeof(line), "%s\n", wc_m.url);

	if ((size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, line + off, len - (size_t)off < size ? len - (size_t)off : size);
}

/* "head", "@<gen>" or "@<tag>": the view n is under. */
static const char *view_of(const struct wc_node *n, char *buf, size_t len)
{
	if (n->gen == 0)
		return "head";
	if (n->tag) {
		snprintf(buf, len, "@%s", n->tag);
		return buf;
	}
	snprintf(buf, len, "@%" PRIu64, n->gen);
	return buf;
}

static void wc_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct wc_node *n = wc_node_of(ino);

	(void)fi;
	if (n->kind == WC_URLFILE) {
		read_url(req, size, off);
		return;
	}
	char view[32];
	struct wc_ds *d = wc_ds_hold(n); /* open: the handle is there */
	if (d == NULL) {
		wc_log("%s/%s: read at %jd failed, EIO: the dataset cannot be reopened",
		       view_of(n, view, sizeof(view)), n->path, (intmax_t)off);
		fuse_reply_err(req, EIO);
		return;
	}
	uint64_t want = (uint64_t)off >= d->size ? 0 : d->size - (uint64_t)off;
	if (want > size)
		want = size;
	char *buf = want ? malloc(want) : NULL;
	/* All or nothing: a short read would look like the end of the file. */
	int got = want ? (buf ? wc_blocks_read(d, (uint64_t)off, buf, want) : BM_ENOMEM) : 0;
	if (got < 0) {
		const char *why = bm_last_error(NULL);
		wc_log("%s/%s: read of %zu bytes at %jd (generation %" PRIu64 ") failed, EIO: %s",
		       view_of(n, view, sizeof(view)), n->path, size, (intmax_t)off, d->generation,
		       why[0] ? why : bm_strerror(got));
		fuse_reply_err(req, got == BM_ENOMEM ? ENOMEM : EIO);
	} else {
		fuse_reply_buf(req, buf, want);
	}
	free(buf);
	wc_ds_put(d);
}

static void wc_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	wc_node_release(wc_node_of(ino));
	fuse_reply_err(req, 0);
}

/* ---- directories ------------------------------------------------------------------ */

struct dirbuf {
	/* Held by readdir until its reply has been written, so that a
	 * releasedir (the kernel may send it as soon as the reply arrives,
	 * while the replying thread is still in writev) frees the buffer
	 * only after. */
	pthread_mutex_t mu;
	struct dirbuf *prev, *next;  /* on open_dirs (open_dirs_mu) */
	fuse_req_t req;
	char *p;
	size_t len, cap;
	bool built;
};

/* Every directory buffer opendir handed out and no releasedir freed yet. */
static pthread_mutex_t open_dirs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dirbuf *open_dirs;

static void open_dirs_add(struct dirbuf *b)
{
	pthread_mutex_lock(&open_dirs_mu);
	b->prev = NULL;
	b->next = open_dirs;
	if (open_dirs)
		open_dirs->prev = b;
	open_dirs = b;
	pthread_mutex_unlock(&open_dirs_mu);
}

static void open_dirs_remove(struct dirbuf *b)
{
	pthread_mutex_lock(&open_dirs_mu);
	if (b->prev)
		b->prev->next = b->next;
	else
		open_dirs = b->next;
	if (b->next)
		b->next->prev = b->prev;
	pthread_mutex_unlock(&open_dirs_mu);
}

static void dirbuf_free(struct dirbuf *b)
{
	pthread_mutex_destroy(&b->mu);
	free(b->p);
	free(b);
}

static void dir_add(struct dirbuf *b, const char *name, bool is_file, fuse_ino_t ino)
{
	struct stat st = { .st_ino = ino, .st_mode = is_file ? S_IFREG : S_IFDIR };
	size_t need = fuse_add_direntry(b->req, NULL, 0, name, NULL, 0);

	if (b->len + need > b->cap) {
		size_t cap = (b->cap + need) * 2;
		char *p = realloc(b->p, cap);
		if (p == NULL)
			return;
		b->p = p;
		b->cap = cap;
	}
	fuse_add_direntry(b->req, b->p + b->len, need, name, &st, (off_t)(b->len + need));
	b->len += need;
}

static void dir_add_child(const char *name, bool is_file, void *arg)
{
	/* d_ino only needs to be non-zero here: lookup gives the real one. */
	uint64_t h = 14695981039346656037ULL;
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	dir_add(arg, name, is_file, (fuse_ino_t)(h | 1));
}

/* A directory of a tag's view lists the directories there are and the
 * datasets that have the tag (one GET of each one's tags.json). */
struct tagged {
	const struct wc_node *dir;
	struct dirbuf *b;
	const char *want;
	bool found;
};

static int tag_seen(void *arg, const char *name, uint64_t gen)
{
	struct tagged *t = arg;
	(void)gen;
	if (strcmp(name, t->want) == 0)
		t->found = true;
	return 0;
}

static void add_if_tagged(const char *name, bool is_file, void *arg)
{
	struct tagged *t = arg;
	char url[WC_URL_MAX];

	if (is_file) {
		t->found = false;
		if (wc_format(url, sizeof(url), "%s/%s%s%s", wc_m.url, t->dir->path, t->dir->path[0] ? "/" : "",
			      name) < 0 || bm_tags_list(url, &wc_m.opt, tag_seen, t) < 0 || !t->found)
			return;
	}
	dir_add_child(name, is_file, t->b);
}

static int list_tagged(const struct wc_node *n, struct dirbuf *b)
{
	struct tagged t = { .dir = n, .b = b, .want = n->tag };
	int rc = wc_list(0, n->path, add_if_tagged, &t);
	return rc == -ENAMETOOLONG ? rc : 0;
}

/* 0, or an errno: ENAMETOOLONG when the directory's listing URL would
 * not fit (none of its children could be opened either). */
static int dir_build(struct dirbuf *b, struct wc_node *n)
{
	int rc = 0;

	dir_add(b, ".", false, wc_ino_of(n));
	dir_add(b, "..", false, FUSE_ROOT_ID);
	switch (n->kind) {
	case WC_ROOT:
		dir_add(b, ".wcfs", false, 2);
		dir_add(b, "head", false, 3);
		break;
	case WC_META:
		dir_add(b, "url", true, 4);
		break;
	default:
		if (n->tag) {
			rc = list_tagged(n, b);
			if (rc == -ENAMETOOLONG)
				return ENAMETOOLONG;
			break;
		}
		rc = wc_list(n->gen, n->path, dir_add_child, b);
		if (rc == -ENAMETOOLONG)
			return ENAMETOOLONG;
		if (rc < 0)
			wc_table_children(n->gen, n->path, dir_add_child, b);
		break;
	}
	b->built = true;
	return 0;
}

static void wc_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct wc_node *n = wc_node_of(ino);

	if (n->kind == WC_FILE || n->kind == WC_URLFILE) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	struct dirbuf *b = calloc(1, sizeof(*b));
	if (b == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&b->mu, NULL);
	fi->fh = (uint64_t)(uintptr_t)b;
	open_dirs_add(b);
	if (fuse_reply_open(req, fi) != 0) {
		/* The open was interrupted: no releasedir will come. */
		open_dirs_remove(b);
		dirbuf_free(b);
	}
}

static void wc_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
	int err = 0;

	pthread_mutex_lock(&b->mu);
	if (!b->built || off == 0) {
		/* (Re)built at the start of each pass (rewinddir sees news). */
		b->len = 0;
		b->req = req;
		err = dir_build(b, wc_node_of(ino));
	}
	/* The kernel stops at an entry cut in half and asks again from it. */
	if (err != 0)
		fuse_reply_err(req, err);
	else if ((size_t)off >= b->len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, b->p + off, b->len - (size_t)off < size ? b->len - (size_t)off : size);
	pthread_mutex_unlock(&b->mu);
}

static void wc_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;

	(void)ino;
	if (b != NULL) {
		pthread_mutex_lock(&b->mu); /* a readdir may still be replying */
		pthread_mutex_unlock(&b->mu);
		open_dirs_remove(b);
		dirbuf_free(b);
	}
	fuse_reply_err(req, 0);
}

/* The session ends (every worker thread has returned): directories still
 * open had their releasedir overtaken by the unmount; free them. */
static void wc_destroy(void *userdata)
{
	(void)userdata;
	pthread_mutex_lock(&open_dirs_mu);
	while (open_dirs) {
		struct dirbuf *b = open_dirs;
		open_dirs = b->next;
		dirbuf_free(b);
	}
	pthread_mutex_unlock(&open_dirs_mu);
}

static void wc_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = 255;
	sv.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops wc_ops = {
	.init = wc_init,
	.destroy = wc_destroy,
	.lookup = wc_op_lookup,
	.forget = wc_op_forget,
	.forget_multi = wc_op_forget_multi,
	.getattr = wc_op_getattr,
	.open = wc_op_open,
	.read = wc_op_read,
	.release = wc_op_release,
	.opendir = wc_op_opendir,
	.readdir = wc_op_readdir,
	.releasedir = wc_op_releasedir,
	.statfs = wc_op_statfs,
};
