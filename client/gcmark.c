/* gcmark.c — the gc marker (U/gc.json) and the writers' guard around it:
 * the protocol of docs/FORMAT.md "Garbage collection".  A gc raises the
 * marker (state running, epoch + 1), waits the settle time D, renews it
 * every D and lowers it (state done) when it ends.  A writer reads the
 * epoch before its first upload and again just before it publishes; if a
 * gc ran or runs in between, it waits for that gc and checks that what it
 * is about to publish still exists.
 * Owns: nothing beyond a call.  Locking: none (each call its own state).
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gcmark.h"

#define GCMARK_MAX 4096

long bm_gc_settle_ms(void)
{
	const char *e = getenv("BLKMAP_GC_SETTLE_MS");
	char *end;
	long v;

	if (e == NULL || *e == '\0')
		return BM_GC_SETTLE_MS_DEFAULT;
	v = strtol(e, &end, 10);
	if (*end != '\0' || v < 1 || v > 3600000)
		return BM_GC_SETTLE_MS_DEFAULT;
	return v;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

void bm_gcmark_clear(struct bm_gcmark *m)
{
	free(m->bytes);
	memset(m, 0, sizeof(*m));
}

static int gcmark_read_once(struct bm_store *s, struct bm_gcmark *m, char *msg, size_t n)
{
	struct bm_version v;
	json_error_t jerr;
	json_t *o = NULL;
	char *buf = NULL;
	size_t len = 0;
	int rc;

	bm_gcmark_clear(m);
	rc = bm_store_get_all(s, BM_KEY_GC, GCMARK_MAX, &buf, &len, &v, msg, n);
	if (rc == BM_ENOTFOUND)
		return 0;
	if (rc < 0)
		return rc;
	o = json_loadb(buf, len, 0, &jerr);
	json_t *f = json_object_get(o, "format"), *ep = json_object_get(o, "epoch"),
	       *st = json_object_get(o, "state"), *beat = json_object_get(o, "beat");
	if (!json_is_object(o) || !json_is_string(f) || strcmp(json_string_value(f), "blkmap-gc") != 0 ||
	    !json_is_integer(ep) || json_integer_value(ep) < 1 || !json_is_string(st) ||
	    (strcmp(json_string_value(st), "running") != 0 && strcmp(json_string_value(st), "done") != 0)) {
		char *name = bm_store_name(s, BM_KEY_GC);
		bm_fmt(msg, n, "%s: not a gc marker (want {\"format\": \"blkmap-gc\", \"epoch\": N >= 1, "
			       "\"state\": \"running\" or \"done\"}); delete it if nothing else wrote it",
		       name ? name : BM_KEY_GC);
		free(name);
		json_decref(o);
		free(buf);
		return BM_EFORMAT;
	}
	m->exists = true;
	m->epoch = (uint64_t)json_integer_value(ep);
	m->running = strcmp(json_string_value(st), "running") == 0;
	json_t *r = json_object_get(o, "renewed");
	m->renewed = json_is_integer(r) ? (int64_t)json_integer_value(r) : 0;
	m->beat = json_is_integer(beat) && json_integer_value(beat) > 0 ? (uint64_t)json_integer_value(beat) : 0;
	json_t *h = json_object_get(o, "host"), *p = json_object_get(o, "pid"), *t = json_object_get(o, "started");
	snprintf(m->host, sizeof(m->host), "%s", json_is_string(h) ? json_string_value(h) : "?");
	bm_printable(m->host);
	m->pid = json_is_integer(p) ? (long)json_integer_value(p) : 0;
	snprintf(m->started, sizeof(m->started), "%s", json_is_string(t) ? json_string_value(t) : "?");
	bm_printable(m->started);
	snprintf(m->etag, sizeof(m->etag), "%s", v.etag);
	m->bytes = buf;
	m->len = len;
	json_decref(o);
	return 0;
}

/* A marker that does not parse is read again a few times (25, 50, 100 ms
 * apart) before it is called one: a server whose PUT is not atomic can
 * show a read the marker half written while a gc renews it. */
int bm_gcmark_read(struct bm_store *s, struct bm_gcmark *m, char *msg, size_t n)
{
	int rc = gcmark_read_once(s, m, msg, n);

	for (long wait = 25; rc == BM_EFORMAT && wait <= 100; wait *= 2) {
		sleep_ms(wait);
		rc = gcmark_read_once(s, m, msg, n);
	}
	return rc;
}

int bm_gcmark_write(struct bm_store *s, struct bm_gcmark *m, const struct bm_gcmark *was, char *msg,
		    size_t n)
{
	struct bm_version v;
	struct bm_put p = {
		/* A weak ETag (Apache, within a second of a change) never
		 * matches If-Match: then no condition (FORMAT.md). */
		.cond = !was->exists ? BM_PUT_IF_NONE
			: was->etag[0] && !bm_etag_is_weak(was->etag) ? BM_PUT_IF_MATCH
			: BM_PUT_ANY,
		.etag = was->etag,
		.was = was->bytes,
		.was_len = was->len,
		/* Not a swap: on Apache that would take the dataset's swap
		 * claim, which a gc killed while holding it would leave to
		 * hold up every commit for a minute.  The condition checked
		 * when the request starts is enough between gcs (FORMAT.md). */
		.swap = false,
	};
	m->renewed = (int64_t)time(NULL);
	json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:I, s:s, s:I, s:s}", "format", "blkmap-gc", "epoch",
			      (json_int_t)m->epoch, "state", m->running ? "running" : "done", "beat",
			      (json_int_t)m->beat, "renewed", (json_int_t)m->renewed, "host", m->host,
			      "pid", (json_int_t)m->pid, "started", m->started);
	char *json = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int rc;

	json_decref(o);
	if (json == NULL)
		return BM_ENOMEM;
	rc = bm_store_put(s, BM_KEY_GC, json, strlen(json), &p, &v, msg, n);
	if (rc == 0) {
		snprintf(m->etag, sizeof(m->etag), "%s", v.etag);
		free(m->bytes);
		m->bytes = json;
		m->len = strlen(json);
		m->exists = true;
		return 0;
	}
	free(json);
	return rc;
}

bool bm_gcmark_stale(const struct bm_gcmark *m)
{
	int64_t limit = 4 * bm_gc_settle_ms() / 1000 + BM_GC_SKEW_S;
	return m->exists && m->running && (int64_t)time(NULL) - m->renewed > limit;
}

int bm_gcmark_wait(struct bm_store *s, struct bm_gcmark *m, bool *stale, char *msg, size_t n)
{
	long d = bm_gc_settle_ms(), poll = d / 8 > 0 ? d / 8 : 1;
	double since = bm_now();
	int rc;

	uint64_t epoch = m->epoch;

	*stale = false;
	/* Until the gc we saw running ends: a later one is another wait. */
	while (m->exists && m->running && m->epoch == epoch) {
		struct bm_gcmark next = { 0 };
		if (bm_gcmark_stale(m) || bm_now() - since >= 4.0 * (double)d / 1000) {
			*stale = true;
			return 0;
		}
		sleep_ms(poll);
		if ((rc = bm_gcmark_read(s, &next, msg, n)) < 0)
			return rc;
		bool same = next.exists && next.len == m->len && memcmp(next.bytes, m->bytes, m->len) == 0;
		bm_gcmark_clear(m);
		*m = next;
		if (!same)
			since = bm_now();
	}
	return 0;
}

/* ---- the writers' guard ------------------------------------------------------------ */

int bm_gc_guard_begin(struct bm_store *s, struct bm_gc_guard *g, char *msg, size_t n)
{
	struct bm_gcmark m = { 0 };
	int rc = bm_gcmark_read(s, &m, msg, n);

	if (rc < 0)
		return rc;
	g->begun = true;
	g->epoch = m.epoch;
	g->running = m.running;
	bm_gcmark_clear(&m);
	return 0;
}

struct verify_ctx {
	struct bm_store *s;
	char *msg;
	size_t n;
	int rc;
};

static int verify_one(void *varg, const char *key)
{
	struct verify_ctx *v = varg;
	struct bm_version ver;
	int rc = bm_store_head(v->s, key, &ver, v->msg, v->n);

	if (rc == BM_ENOTFOUND) {
		char *name = bm_store_name(v->s, key);
		bm_fmt(v->msg, v->n, "%s: a concurrent gc removed this object, which this commit uploaded "
				     "or reused; nothing was published: discard and write the data again",
		       name ? name : key);
		free(name);
		return BM_ECONFLICT;
	}
	return rc;
}

int bm_gc_guard_check(struct bm_store *s, struct bm_gc_guard *g, bm_gc_keys_fn keys, void *arg,
		      char *msg, size_t n)
{
	struct bm_gcmark m = { 0 };
	bool stale;
	int rc;

	if (!g->begun && (rc = bm_gc_guard_begin(s, g, msg, n)) < 0)
		return rc;
	for (;;) {
		if ((rc = bm_gcmark_read(s, &m, msg, n)) < 0)
			break;
		if (m.epoch == g->epoch && !m.running && !g->running) {
			g->checked = bm_now();
			rc = 0;
			break;
		}
		/* A gc ran or runs while we uploaded: wait for it, then make
		 * sure it left everything we name. */
		if ((rc = bm_gcmark_wait(s, &m, &stale, msg, n)) < 0)
			break;
		if (stale)
			bm_log("%s/%s: the gc that raised it (%s pid %ld) stopped renewing it: going on",
			       s->url, BM_KEY_GC, m.host, m.pid);
		struct verify_ctx v = { .s = s, .msg = msg, .n = n };
		if (keys && (rc = keys(arg, verify_one, &v)) != 0)
			break;
		g->epoch = m.epoch;
		g->running = m.running && !stale;
		if (stale) {
			g->checked = bm_now();
			rc = 0;
			break;
		}
	}
	bm_gcmark_clear(&m);
	return rc;
}
