/* gc.c — bm_gc, the garbage collector behind `blkmap gc`: drops the kept
 * generations outside a policy (the latest and tagged ones always stay)
 * and deletes every object under blocks/ and index/ that no kept
 * generation references once it is older than the grace.  The protocol
 * that makes it safe beside committing writers and when killed is
 * docs/FORMAT.md "Garbage collection"; the marker is gcmark.c.
 * Owns: one run's state (struct gc_run).  Locking: none; single-threaded.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gcmark.h"
#include "generation.h"
#include "tags.h"

/* ---- a set of keys (open addressing, FNV-1a) ------------------------------------- */

struct keyset {
	char **v;
	size_t cap, n;
};

static uint64_t key_hash(const char *k)
{
	uint64_t h = 1469598103934665603ull;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return h;
}

static bool keyset_has(const struct keyset *s, const char *k)
{
	if (s->cap == 0)
		return false;
	for (size_t i = key_hash(k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (s->v[i] == NULL)
			return false;
		if (strcmp(s->v[i], k) == 0)
			return true;
	}
}

/* 1 added, 0 already there, BM_ENOMEM. */
static int keyset_add(struct keyset *s, const char *k)
{
	if ((s->n + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		char **v = calloc(cap, sizeof(*v));
		if (v == NULL)
			return BM_ENOMEM;
		for (size_t j = 0; j < s->cap; j++)
			if (s->v[j]) {
				size_t i = key_hash(s->v[j]) & (cap - 1);
				while (v[i])
					i = (i + 1) & (cap - 1);
				v[i] = s->v[j];
			}
		free(s->v);
		s->v = v, s->cap = cap;
	}
	size_t i = key_hash(k) & (s->cap - 1);
	for (; s->v[i]; i = (i + 1) & (s->cap - 1))
		if (strcmp(s->v[i], k) == 0)
			return 0;
	if ((s->v[i] = strdup(k)) == NULL)
		return BM_ENOMEM;
	s->n++;
	return 1;
}

static void keyset_free(struct keyset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* ---- one run ------------------------------------------------------------------------ */

struct gen_entry {
	uint64_t gen;
	bool keep;
	const char *why;           /* why kept: "latest", "tag", "--keep", ... */
	int64_t created;           /* Unix time, -1 unknown */
};

struct gc_run {
	struct bm_store *s;
	const struct bm_gc_policy *p;
	struct bm_gc_report *r;
	char *msg;
	size_t n;
	struct bm_gcmark mark;     /* ours, while running */
	bool marked;
	double last_beat;
	struct gen_entry *gens;    /* ascending */
	size_t ngens, capgens;
	struct keyset kept;        /* keys the kept generations reference */
	struct keyset dropped;     /* keys of dropped generations (no listing) */
	char **cand;               /* objects to consider deleting */
	size_t ncand, capcand;
	uint64_t latest;
};

static void progress(struct gc_run *g, const char *phase, uint64_t done, uint64_t total)
{
	if (g->p->progress)
		g->p->progress(phase, done, total, g->p->progress_arg);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Renews our marker every D; losing it (another gc took it over as
 * stale) stops the run before it deletes anything more. */
static int beat(struct gc_run *g)
{
	struct bm_gcmark was;

	if (!g->marked || bm_now() - g->last_beat < (double)bm_gc_settle_ms() / 1000)
		return 0;
	was = g->mark;
	was.bytes = g->mark.bytes;
	g->mark.bytes = NULL;
	g->mark.beat++;
	int rc = bm_gcmark_write(g->s, &g->mark, &was, g->msg, g->n);
	if (g->mark.bytes == NULL) {
		g->mark.bytes = was.bytes;
	} else {
		free(was.bytes);
	}
	if (rc == BM_ECONFLICT) {
		char *name = bm_store_name(g->s, BM_KEY_GC);
		bm_fmt(g->msg, g->n, "%s: another gc took over this one's marker (it was too slow to renew "
				     "it): stopped", name ? name : BM_KEY_GC);
		free(name);
		g->marked = false;
	}
	if (rc == 0)
		g->last_beat = bm_now();
	return rc;
}

static int raise_marker(struct gc_run *g)
{
	struct bm_gcmark old = { 0 };
	bool stale = false;
	int rc = bm_gcmark_read(g->s, &old, g->msg, g->n);

	if (rc == 0 && old.running) {
		/* Another gc, or one that died: watch it for 4 D. */
		rc = bm_gcmark_wait(g->s, &old, &stale, g->msg, g->n);
		if (rc == 0 && old.running && !stale) {
			bm_fmt(g->msg, g->n, "%s: another gc is running (%s pid %ld, since %s)", g->s->url,
			       old.host, old.pid, old.started);
			rc = BM_ECONFLICT;
		}
	}
	if (rc == 0) {
		char host[64] = "?";
		time_t t = time(NULL);
		struct tm tm;
		gethostname(host, sizeof(host) - 1);
		g->mark.epoch = old.epoch + 1;
		g->mark.running = true;
		g->mark.beat = 1;
		snprintf(g->mark.host, sizeof(g->mark.host), "%s", host);
		g->mark.pid = (long)getpid();
		gmtime_r(&t, &tm);
		strftime(g->mark.started, sizeof(g->mark.started), "%Y-%m-%dT%H:%M:%SZ", &tm);
		rc = bm_gcmark_write(g->s, &g->mark, &old, g->msg, g->n);
		if (rc == BM_ECONFLICT)
			bm_fmt(g->msg, g->n, "%s: another gc started at the same time", g->s->url);
	}
	bm_gcmark_clear(&old);
	if (rc < 0)
		return rc;
	g->marked = true;
	g->last_beat = bm_now();
	/* Writers that looked before the marker rose publish within D. */
	progress(g, "settle", 0, 1);
	sleep_ms(bm_gc_settle_ms());
	return beat(g);
}

static void lower_marker(struct gc_run *g)
{
	char msg[512];

	if (!g->marked)
		return;
	struct bm_gcmark was = g->mark;
	g->mark.bytes = NULL;
	g->mark.running = false;
	if (bm_gcmark_write(g->s, &g->mark, &was, msg, sizeof(msg)) < 0)
		bm_log("%s (the marker stays until it is stale)", msg);
	free(was.bytes);
	g->marked = false;
}

/* ---- generations ---------------------------------------------------------------------- */

static int add_gen(struct gc_run *g, uint64_t gen)
{
	if (g->ngens == g->capgens) {
		size_t cap = g->capgens ? g->capgens * 2 : 64;
		void *v = realloc(g->gens, cap * sizeof(*g->gens));
		if (v == NULL)
			return BM_ENOMEM;
		g->gens = v, g->capgens = cap;
	}
	g->gens[g->ngens++] = (struct gen_entry){ .gen = gen, .created = -1 };
	return 0;
}

static int cmp_gen(const void *a, const void *b)
{
	const struct gen_entry *x = a, *y = b;
	return x->gen < y->gen ? -1 : x->gen > y->gen;
}

/* The kept generations: through the listing of gen/, or (no listing) a
 * walk down from the latest that stops after BM_LOG_MAX_MISSING missing. */
static int find_generations(struct gc_run *g)
{
	int rc;

	if (bm_store_caps(g->s) & BM_CAP_LIST) {
		char *token = NULL;
		do {
			struct bm_list page = { 0 };
			rc = bm_store_list(g->s, "gen/", token, &page, g->msg, g->n);
			free(token);
			token = NULL;
			if (rc < 0)
				return rc;
			for (size_t i = 0; i < page.n && rc == 0; i++) {
				uint64_t gen = bm_key_gen_parse(page.entries[i].key);
				if (gen && gen <= g->latest)
					rc = add_gen(g, gen);
			}
			token = page.next;
			page.next = NULL;
			bm_list_free(&page);
		} while (rc == 0 && token);
		free(token);
		if (rc < 0)
			return rc;
	} else {
		unsigned missing = 0;
		for (uint64_t gen = g->latest; gen >= 1 && missing < BM_LOG_MAX_MISSING; gen--) {
			char key[BM_KEY_GEN_SIZE];
			struct bm_version v;
			bm_key_gen(key, gen);
			rc = bm_store_head(g->s, key, &v, g->msg, g->n);
			if (rc == BM_ENOTFOUND) {
				missing++;
				continue;
			}
			if (rc < 0)
				return rc;
			missing = 0;
			if ((rc = add_gen(g, gen)) < 0)
				return rc;
		}
	}
	qsort(g->gens, g->ngens, sizeof(*g->gens), cmp_gen);
	/* The latest is a generation even when its gen/<N>.json is missing
	 * (its writer stopped before keeping it). */
	if (g->ngens == 0 || g->gens[g->ngens - 1].gen != g->latest)
		return add_gen(g, g->latest);
	return 0;
}

static int64_t parse_created(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *e = s && s[0] ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (e == NULL)
		return -1;
	return (int64_t)timegm(&tm);
}

static int keep_tagged(void *arg, const char *name, uint64_t gen)
{
	struct gc_run *g = arg;
	(void)name;
	for (size_t i = 0; i < g->ngens; i++)
		if (g->gens[i].gen == gen) {
			g->gens[i].keep = true;
			g->gens[i].why = "tag";
		}
	return 0;
}

struct mark_ctx {
	struct gc_run *g;
	struct keyset *set;
};

/* A page the set has already was walked with a generation marked before
 * (pages are immutable: its subtree is the same): BM_INDEX_KNOWN, so that
 * kept generations sharing most of their pages cost their own pages only. */
static int mark_key(void *arg, const char *key)
{
	struct mark_ctx *m = arg;
	bool page = strncmp(key, "index/", 6) == 0;

	if (page && keyset_has(m->set, key))
		return BM_INDEX_KNOWN;
	int rc = keyset_add(m->set, key);
	if (rc >= 0 && page)
		m->g->r->pages_walked++;
	return rc < 0 ? rc : 0;
}

/* Reads every generation's manifest: its creation time for the policy;
 * then decides; then the keys of each kept (and, without a listing, each
 * dropped) generation. */
static int decide_and_mark(struct gc_run *g)
{
	const struct bm_gc_policy *p = g->p;
	bool listing = bm_store_caps(g->s) & BM_CAP_LIST;
	uint64_t nkept = 0;
	int rc;

	if ((rc = bm_tags_each(g->s, keep_tagged, g, g->msg, g->n)) < 0)
		return rc;
	for (size_t i = g->ngens; i-- > 0;) {
		struct gen_entry *e = &g->gens[i];
		if (e->gen == g->latest) {
			e->keep = true;
			e->why = "latest";
		}
		if (!e->keep && p->keep == 0 && p->keep_since == 0) {
			e->keep = true;
			e->why = "no policy";
		}
		if (!e->keep && p->keep && nkept < p->keep) {
			e->keep = true;
			e->why = "--keep";
		}
		if (!e->keep && p->keep_since) {
			struct bm_gen gm;
			rc = bm_gen_read(g->s, e->gen, &gm, g->msg, g->n);
			if (rc == BM_ENOTFOUND)
				continue; /* gone meanwhile: dropped already */
			if (rc < 0)
				return rc;
			e->created = parse_created(gm.created);
			bm_gen_free(&gm);
			if (e->created < 0 || e->created >= p->keep_since) {
				e->keep = true;
				e->why = e->created < 0 ? "no creation time" : "--keep-since";
			}
		}
		if (e->keep && (e->why == NULL || strcmp(e->why, "tag") != 0))
			nkept++;
	}
	for (size_t i = 0; i < g->ngens; i++) {
		struct gen_entry *e = &g->gens[i];
		struct bm_gen gm;
		if (!e->keep && listing)
			continue;
		progress(g, "mark", i, g->ngens);
		rc = bm_gen_read(g->s, e->gen == g->latest ? 0 : e->gen, &gm, g->msg, g->n);
		if (rc == BM_ENOTFOUND && e->gen == g->latest)
			rc = bm_gen_read(g->s, e->gen, &gm, g->msg, g->n);
		if (rc == BM_ENOTFOUND && !e->keep)
			continue;
		if (rc < 0)
			return rc;
		/* manifest.json may name a newer generation by now (a writer
		 * that looked before our marker rose): what it names is kept. */
		struct mark_ctx m = { .g = g, .set = e->keep ? &g->kept : &g->dropped };
		rc = bm_gen_keys(g->s, &gm, mark_key, &m, g->msg, g->n);
		bm_gen_free(&gm);
		if (rc < 0)
			return rc;
		if ((rc = beat(g)) < 0)
			return rc;
	}
	for (size_t i = 0; i < g->ngens; i++) {
		if (g->gens[i].keep)
			g->r->generations_kept++;
		else
			g->r->generations_dropped++;
	}
	return 0;
}

/* ---- candidates and deletion ------------------------------------------------------------ */

static int add_cand(struct gc_run *g, const char *key)
{
	if (g->ncand == g->capcand) {
		size_t cap = g->capcand ? g->capcand * 2 : 256;
		void *v = realloc(g->cand, cap * sizeof(*g->cand));
		if (v == NULL)
			return BM_ENOMEM;
		g->cand = v, g->capcand = cap;
	}
	if ((g->cand[g->ncand] = strdup(key)) == NULL)
		return BM_ENOMEM;
	g->ncand++;
	return 0;
}

static bool collectable(const char *key)
{
	return strncmp(key, "blocks/", 7) == 0 || strncmp(key, "index/", 6) == 0;
}

static int find_candidates(struct gc_run *g)
{
	static const char *const prefixes[] = { "blocks/", "index/" };
	int rc = 0;

	if (!(bm_store_caps(g->s) & BM_CAP_LIST)) {
		for (size_t i = 0; i < g->dropped.cap && rc == 0; i++) {
			const char *k = g->dropped.v[i];
			if (k && collectable(k) && !keyset_has(&g->kept, k))
				rc = add_cand(g, k);
		}
		return rc;
	}
	for (size_t pi = 0; pi < 2 && rc == 0; pi++) {
		char *token = NULL;
		do {
			struct bm_list page = { 0 };
			rc = bm_store_list(g->s, prefixes[pi], token, &page, g->msg, g->n);
			free(token);
			token = NULL;
			if (rc < 0)
				return rc;
			for (size_t i = 0; i < page.n && rc == 0; i++) {
				const char *k = page.entries[i].key;
				if (collectable(k) && !keyset_has(&g->kept, k))
					rc = add_cand(g, k);
			}
			token = page.next;
			page.next = NULL;
			bm_list_free(&page);
			if (rc == 0)
				rc = beat(g);
		} while (rc == 0 && token);
		free(token);
	}
	return rc;
}

static int64_t parse_http_date(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	if (s == NULL || s[0] == '\0' || strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm) == NULL)
		return -1;
	return (int64_t)timegm(&tm);
}

static int delete_key(struct gc_run *g, const char *key)
{
	int rc = g->p->dry_run ? 0 : bm_store_delete(g->s, key, g->msg, g->n);
	return rc == BM_ENOTFOUND ? 0 : rc;
}

/* Dropped generations first (their manifests stop naming anything), then
 * objects old enough: a gc killed between the two leaves orphans, which
 * the next one finds by listing. */
static int sweep(struct gc_run *g)
{
	int64_t now = (int64_t)time(NULL);
	int rc;

	for (size_t i = 0; i < g->ngens; i++) {
		char key[BM_KEY_GEN_SIZE];
		if (g->gens[i].keep)
			continue;
		bm_key_gen(key, g->gens[i].gen);
		if ((rc = delete_key(g, key)) < 0 || (rc = beat(g)) < 0)
			return rc;
	}
	for (size_t i = 0; i < g->ncand; i++) {
		struct bm_version v;
		progress(g, "delete", i, g->ncand);
		/* The age as it is now: a writer that rewrote it since the
		 * listing made it young again. */
		rc = bm_store_head(g->s, g->cand[i], &v, g->msg, g->n);
		if (rc == BM_ENOTFOUND)
			continue;
		if (rc < 0)
			return rc;
		int64_t t = parse_http_date(v.last_modified);
		if (t < 0) {
			g->r->objects_unknown_age++;
			continue;
		}
		if (now - t < g->p->grace_s) {
			g->r->objects_young++;
			continue;
		}
		if ((rc = delete_key(g, g->cand[i])) < 0)
			return rc;
		g->r->objects_deleted++;
		if (v.size != UINT64_MAX)
			g->r->bytes_freed += v.size;
		if ((rc = beat(g)) < 0)
			return rc;
	}
	progress(g, "delete", g->ncand, g->ncand);
	return 0;
}

int bm_gc(const char *url, const struct bm_options *opt, const struct bm_gc_policy *p, struct bm_gc_report *r)
{
	struct gc_run g = { .p = p, .r = r };
	char msg[1024] = "";
	struct bm_gen latest;
	int rc;

	memset(r, 0, sizeof(*r));
	if (p->grace_s < 0) {
		bm_set_thread_error("gc: the grace must not be negative");
		return BM_EINVAL;
	}
	g.msg = msg;
	g.n = sizeof(msg);
	if ((rc = bm_gen_store_open(&g.s, url, opt, msg, sizeof(msg))) < 0)
		goto out;
	rc = bm_gen_read(g.s, 0, &latest, msg, sizeof(msg));
	if (rc == BM_ENOTFOUND)
		bm_fmt(msg, sizeof(msg), "%s: no dataset here (no %s)", g.s->url, BM_KEY_MANIFEST);
	if (rc < 0)
		goto out;
	bm_gen_free(&latest);
	r->listed = (bm_store_caps(g.s) & BM_CAP_LIST) != 0;
	if (!p->dry_run && (rc = raise_marker(&g)) < 0)
		goto out;
	/* The latest as of now, after the settle time. */
	if ((rc = bm_gen_read(g.s, 0, &latest, msg, sizeof(msg))) < 0)
		goto out;
	g.latest = latest.generation;
	bm_gen_free(&latest);
	progress(&g, "list", 0, 1);
	if ((rc = find_generations(&g)) < 0 || (rc = decide_and_mark(&g)) < 0 ||
	    (rc = find_candidates(&g)) < 0 || (rc = sweep(&g)) < 0)
		goto out;
	r->latest = g.latest;
out:
	if (g.s)
		lower_marker(&g);
	if (rc < 0)
		bm_set_thread_error(msg[0] ? msg : bm_strerror(rc));
	bm_gcmark_clear(&g.mark);
	keyset_free(&g.kept);
	keyset_free(&g.dropped);
	for (size_t i = 0; i < g.ncand; i++)
		free(g.cand[i]);
	free(g.cand);
	free(g.gens);
	bm_store_close(g.s);
	return rc;
}
