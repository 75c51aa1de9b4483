/* cli.c — the `blkmap` command: put, get, sum, patch, stat, log, attr (gc,
 * tag, tags and diff: cli_history.c).
 *
 * A thin layer over libblkmap's public API (blkmap.h): each command opens
 * the dataset, does its job through a mapping, bm_read or bm_write, and
 * reports one clear line on stderr when something fails.  Exit status: 0
 * success, 1 error, 2 usage error, 3 commit conflict.
 * Threads: only `sum` without a mapping starts any (its fetchers, joined
 * before it returns; their shared state is under struct sum_stream's mu).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include <blkmap/blkmap.h>

#include "cli.h"

const char *prog = "blkmap";

int fail(const char *what, int rc, bm_dataset *ds)
{
	const char *detail = bm_last_error(ds);
	if (detail[0])
		fprintf(stderr, "%s: %s: %s\n", prog, what, detail);
	else
		fprintf(stderr, "%s: %s: %s\n", prog, what, bm_strerror(rc));
	return rc == BM_ECONFLICT ? EXIT_CONFLICT : 1;
}

int usage_error(const char *cmd, const char *msg)
{
	fprintf(stderr, "%s %s: %s (see '%s %s --help')\n", prog, cmd, msg, prog, cmd);
	return EXIT_USAGE;
}

/* Parses a non-negative integer with an optional k/M/G suffix. */
int parse_u64(const char *s, uint64_t *out)
{
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	uint64_t mul = 1;
	if (e == s || errno || *s == '-')
		return -1;
	if (*e == 'k' || *e == 'K')
		mul = 1ull << 10, e++;
	else if (*e == 'M')
		mul = 1ull << 20, e++;
	else if (*e == 'G')
		mul = 1ull << 30, e++;
	if (*e != '\0' || (v && mul > UINT64_MAX / v))
		return -1;
	*out = v * mul;
	return 0;
}

bool is_help(const char *a)
{
	return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* "--at GEN|TAG": a generation number, else a tag name. */
int parse_at(const char *cmd, const char *arg, struct bm_options *o)
{
	uint64_t gen;

	if (arg == NULL)
		return usage_error(cmd, "--at needs a generation number or a tag name");
	if (arg[0] >= '0' && arg[0] <= '9' && strspn(arg, "0123456789") == strlen(arg)) {
		if (parse_u64(arg, &gen) < 0 || gen == 0)
			return usage_error(cmd, "--at needs a generation number (1 or more) or a tag name");
		o->generation = gen;
		o->tag = NULL;
		return 0;
	}
	if (arg[0] == '.' || arg[0] == '-' || arg[0] == '\0' ||
	    strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(arg))
		return usage_error(cmd, "--at needs a generation number (1 or more) or a tag name");
	o->generation = 0;
	o->tag = arg;
	return 0;
}

/* ---- progress ------------------------------------------------------------- */

struct progress {
	bool on;
	uint64_t total, done;
	double start, last;
	const char *label;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress_init(struct progress *p, const char *label, uint64_t total)
{
	p->on = isatty(STDERR_FILENO);
	p->total = total;
	p->done = 0;
	p->start = p->last = now();
	p->label = label;
}

static void progress_show(struct progress *p, bool final)
{
	double t = now();
	if (!p->on || (!final && t - p->last < 0.1))
		return;
	p->last = t;
	int pct = p->total ? (int)(p->done * 100 / p->total) : 100;
	int bar = pct / 4;
	double mbs = (double)p->done / (1 << 20) / (t - p->start > 1e-6 ? t - p->start : 1e-6);
	fprintf(stderr, "\r%s [%.*s%*s] %3d%% %8.1f MiB/s", p->label, bar,
		"#########################", 25 - bar, "", pct, mbs);
	if (final)
		fputc('\n', stderr);
}

static void progress_add(struct progress *p, uint64_t n)
{
	p->done += n;
	progress_show(p, false);
}

/* ---- options ----------------------------------------------------------------- */

/* A variable that does not parse: bm_options_init has printed the one
 * line naming it. */
int load_options(struct bm_options *o)
{
	return bm_options_init(o) < 0 ? -1 : 0;
}

/* sum and get read the whole content in order: a flat object is then read
 * in 1 MiB blocks (not the 64 KiB a random reader wants): a sixteenth of
 * the page faults, about 14% less CPU time on the development machine.
 * BLKMAP_BLKSIZE still chooses. */
#define SEQUENTIAL_FLAT_BLKSIZE ((size_t)1 << 20)

static int load_options_sequential(struct bm_options *o)
{
	int rc = load_options(o);
	if (rc == 0 && o->blksize == 0)
		o->blksize = SEQUENTIAL_FLAT_BLKSIZE;
	return rc;
}

static int open_or_fail(bm_dataset **ds, const char *url, struct bm_options *o, int *exitp)
{
	int rc = bm_open(ds, url, o);
	if (rc < 0) {
		*exitp = fail("open", rc, NULL);
		return -1;
	}
	return 0;
}

/* ---- put ------------------------------------------------------------------------ */

static const char put_help[] =
	"usage: blkmap put [--blksize BYTES] [--piece BYTES] FILE URL\n"
	"\n"
	"Writes FILE's bytes as the next generation of the dataset at URL, creating\n"
	"the dataset if there is none (with blocks of BYTES, default 1M; k, M, G\n"
	"suffixes allowed). Only blocks that changed are uploaded; all-zero blocks\n"
	"are stored as holes. Prints the new generation. A progress bar is shown on\n"
	"a terminal.\n"
	"--piece: a created dataset's blocks have a sum per piece of BYTES (a power\n"
	"of two from 4k to half a block, at most 1024 a block; default 16k for\n"
	"blocks above 64k), so that a read of part of a block fetches only its\n"
	"pieces: format version 4, or 3 for 64k (docs/FORMAT.md). An existing\n"
	"dataset keeps its own.\n"
	"Exit status: 0 success, 1 error, 2 usage error, 3 another writer published\n"
	"first.\n";

static int cmd_put(int argc, char **argv)
{
	struct bm_options o;
	uint64_t blksize = 0, piece = 0, gen = 0;
	int i = 1, ex = 1;

	if (argc > 1 && is_help(argv[1]))
		return fputs(put_help, stdout), 0;
	while (i < argc && (strcmp(argv[i], "--blksize") == 0 || strcmp(argv[i], "--piece") == 0)) {
		bool is_bs = strcmp(argv[i], "--blksize") == 0;
		uint64_t *v = is_bs ? &blksize : &piece;
		if (i + 1 >= argc || parse_u64(argv[i + 1], v) < 0 || (!is_bs && *v == 0))
			return usage_error("put", is_bs ? "--blksize needs a number of bytes"
							: "--piece needs a number of bytes");
		i += 2;
	}
	if (argc - i != 2)
		return usage_error("put", "expected FILE and URL");
	const char *path = argv[i], *url = argv[i + 1];
	if (load_options(&o) < 0)
		return 1;
	o.flags |= BM_OPEN_CREATE;
	if (blksize)
		o.blksize = blksize;
	if (piece)
		o.piece_bytes = piece;

	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) < 0) {
		fprintf(stderr, "%s: put: cannot read %s: %s\n", prog, path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	bm_dataset *ds;
	if (open_or_fail(&ds, url, &o, &ex) < 0) {
		close(fd);
		return ex;
	}
	if (bm_is_flat(ds)) {
		fprintf(stderr, "%s: put: %s is a plain object, not a dataset\n", prog, url);
		goto out;
	}
	if (blksize && blksize != bm_blksize(ds)) {
		fprintf(stderr, "%s: put: %s has blocks of %zu bytes, not %" PRIu64 "\n", prog, url,
			bm_blksize(ds), blksize);
		goto out;
	}
	if (piece && piece != bm_piece_bytes(ds)) {
		if (bm_piece_bytes(ds) == 0)
			fprintf(stderr, "%s: put: %s's blocks (of %zu bytes) have no pieces, not pieces of %" PRIu64 " bytes\n",
				prog, url, bm_blksize(ds), piece);
		else
			fprintf(stderr, "%s: put: %s's blocks have pieces of %zu bytes, not %" PRIu64 "\n",
				prog, url, bm_piece_bytes(ds), piece);
		goto out;
	}
	int rc = bm_resize(ds, (uint64_t)sb.st_size);
	size_t bs = bm_blksize(ds);
	char *buf = malloc(bs);
	struct progress p;
	if (buf == NULL)
		rc = BM_ENOMEM; /* never commit what was not written */
	progress_init(&p, "put", (uint64_t)sb.st_size);
	for (uint64_t off = 0; rc == 0 && buf && off < (uint64_t)sb.st_size; off += bs) {
		size_t want = (uint64_t)sb.st_size - off < bs ? (size_t)((uint64_t)sb.st_size - off) : bs;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n != (ssize_t)want) {
			fprintf(stderr, "%s: put: reading %s at %" PRIu64 ": %s\n", prog, path, off,
				n < 0 ? strerror(errno) : "file shrank while reading");
			free(buf);
			goto out;
		}
		rc = bm_write(ds, off, buf, want);
		progress_add(&p, want);
	}
	free(buf);
	if (rc == 0)
		rc = bm_commit(ds, &gen);
	progress_show(&p, true);
	if (rc < 0) {
		ex = fail("put", rc, ds);
		goto out;
	}
	printf("%" PRIu64 "\n", gen);
	ex = 0;
out:
	close(fd);
	bm_close(ds);
	return ex;
}

/* ---- get ------------------------------------------------------------------------- */

static const char get_help[] =
	"usage: blkmap get [--at GEN|TAG] URL FILE\n"
	"\n"
	"Writes the bytes of the dataset (or plain object) at URL to FILE ('-' for\n"
	"standard output), reading them through a memory mapping: the latest\n"
	"generation, or generation GEN, or the one tag TAG names. A progress bar is\n"
	"shown on a terminal. A plain object is read in 1 MiB blocks (BLKMAP_BLKSIZE\n"
	"sets another size).\n";

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A block that cannot be loaded through a mapping (after its retries)
 * raises SIGBUS.  In loadblk mode libblkmap has already printed the one
 * line that says which URL and block and why, so the command fails like
 * any other error, silently.  Through the mirror (overlay mode) the kernel
 * raised it and nobody has said anything: sigbus_line does. */
static char sigbus_line[600];
static volatile sig_atomic_t sigbus_line_len;

/* Called once the dataset is mapped: what to say if a read of it fails. */
static void note_mapped(bm_dataset *ds, const char *url)
{
	struct bm_stats st;
	bm_stats(ds, &st);
	int n = 0;
	if (strcmp(st.mode, "overlay") == 0)
		n = snprintf(sigbus_line, sizeof(sigbus_line),
			     "%s: %s: a read through the wcfs mirror failed (SIGBUS); the mirror's log says why\n",
			     prog, url);
	sigbus_line_len = n > 0 && (size_t)n < sizeof(sigbus_line) ? n : 0;
}

static void on_sigbus(int sig)
{
	(void)sig;
	if (sigbus_line_len > 0) {
		ssize_t w = write(STDERR_FILENO, sigbus_line, (size_t)sigbus_line_len);
		(void)w;
	}
	_exit(1);
}

static int cmd_get(int argc, char **argv)
{
	struct bm_options o;
	bm_dataset *ds;
	bm_mapping *m = NULL;
	void *addr = NULL;
	int ex = 1;

	if (argc > 1 && is_help(argv[1]))
		return fputs(get_help, stdout), 0;
	if (load_options_sequential(&o) < 0)
		return 1;
	int i = 1;
	if (i < argc && strcmp(argv[i], "--at") == 0) {
		if ((ex = parse_at("get", i + 1 < argc ? argv[i + 1] : NULL, &o)) != 0)
			return ex;
		i += 2;
	}
	if (argc - i != 2)
		return usage_error("get", "expected URL and FILE");
	const char *url = argv[i], *path = argv[i + 1];
	if (open_or_fail(&ds, url, &o, &ex) < 0)
		return ex;
	bool out_stdout = strcmp(path, "-") == 0;
	int fd = out_stdout ? STDOUT_FILENO : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "%s: get: cannot write %s: %s\n", prog, path, strerror(errno));
		goto out;
	}
	uint64_t size = bm_size(ds);
	if (size > 0) {
		int rc = bm_map(ds, 0, 0, &addr, &m);
		if (rc < 0) {
			ex = fail("get", rc, ds);
			goto out;
		}
		note_mapped(ds, url);
	}
	struct progress p;
	progress_init(&p, "get", size);
	size_t bs = bm_blksize(ds);
	/* Copy through a buffer: the kernel does not take page faults for
	 * write(2) on unloaded mapped pages (it returns EFAULT); memcpy does. */
	char *bounce = malloc(bs);
	if (bounce == NULL) {
		fprintf(stderr, "%s: get: out of memory\n", prog);
		goto out;
	}
	for (uint64_t off = 0; off < size; off += bs) {
		size_t n = size - off < bs ? (size_t)(size - off) : bs;
		memcpy(bounce, (const char *)addr + off, n);
		if (write_all(fd, bounce, n) < 0) {
			fprintf(stderr, "%s: get: writing %s: %s\n", prog, path, strerror(errno));
			free(bounce);
			goto out;
		}
		progress_add(&p, n);
	}
	free(bounce);
	progress_show(&p, true);
	ex = 0;
out:
	if (fd >= 0 && !out_stdout && close(fd) < 0 && ex == 0) {
		fprintf(stderr, "%s: get: closing %s: %s\n", prog, path, strerror(errno));
		ex = 1;
	}
	bm_unmap(m);
	bm_close(ds);
	return ex;
}

/* ---- sum -------------------------------------------------------------------------- */

static const char sum_help[] =
	"usage: blkmap sum [-v] [--at GEN|TAG] URL\n"
	"\n"
	"Prints the SHA-256 of the dataset's content (the latest generation, or GEN,\n"
	"or the one tag TAG names) as '<hex>  <URL>'. It is read with a GET per block\n"
	"(a plain object: 1 MiB blocks unless BLKMAP_BLKSIZE sets another size), one\n"
	"per connection in parallel at first (a thread sends up to 16 at once),\n"
	"straight into buffers hashed in order by another; through a memory\n"
	"mapping instead (page faults and read-ahead do the loading) when a wcfs\n"
	"mirror serves it or its blocks are small (a block per connection, at 4\n"
	"times BLKMAP_CONNECTIONS, under 4 MiB). The GETs in flight follow the\n"
	"answers' round trips: when slow they grow, up to 4 times\n"
	"BLKMAP_CONNECTIONS, when fast they shrink, down to a quarter of it\n"
	"(BLKMAP_SUM_TRACE=1 prints each change to stderr). With -v, prints to\n"
	"stderr one line of what it took: mode=<loadblk|overlay>\n"
	"fetched_bytes=<n> and the other counters.\n";

static void print_stats(bm_dataset *ds, double secs)
{
	struct bm_stats st;
	bm_stats(ds, &st);
	fprintf(stderr,
		"mode=%s fetched_bytes=%" PRIu64 " fetched_blocks=%" PRIu64 " hole_blocks=%" PRIu64
		" cache_hits=%" PRIu64 " cache_misses=%" PRIu64 " readahead_blocks=%" PRIu64
		" retries=%" PRIu64 " uploaded_bytes=%" PRIu64 " commits=%" PRIu64
		" conflicts=%" PRIu64 " engine=%s seconds=%.3f why=\"%s\"\n",
		st.mode, st.fetched_bytes, st.fetched_blocks, st.hole_blocks, st.cache_hits,
		st.cache_misses, st.readahead_blocks, st.retries, st.uploaded_bytes, st.commits,
		st.conflicts, st.engine, secs, st.mode_why ? st.mode_why : "");
}

/* A sum without a mapping: fetcher threads keep many block reads in
 * flight at once, each up to SUM_PER_FETCHER over one multi handle of
 * its own (bm_reads: no thread per GET), each read straight into a slot
 * of a ring of buffers; this thread hashes the slots in order as they
 * fill.  Each byte is copied once after curl's (into its slot) and
 * hashed while the next blocks arrive, on the other CPU; the mapping's
 * page cache (pages allocated, mapped, freed) cost about a fifth more CPU
 * here.  A fetcher per SUM_PER_FETCHER reads wanted (fewer when that is
 * more than SUM_FETCHER_BYTES of blocks), not one for all: on
 * a busy machine a lone fetcher waits its turn for a CPU with all its
 * GETs (at load 15 and 2 ms per answer, 1.1-1.8 s against 0.7 s for a
 * thread per GET).  The ring holds two blocks per read in flight at
 * most, within half of cache_bytes.  Locking: st.mu guards everything
 * of struct sum_stream but the buffers' bytes (a slot's are its
 * fetcher's until ready, then this thread's); bm_reads runs without it.
 * The reads in flight grow, when answers are slow, to as many as move
 * SUM_TARGET_RATE (the fastest read of an epoch says how many that is),
 * up to SUM_CONNS_FACTOR times `connections`, and only while each growth
 * moves the bytes faster or leaves the round trips as they were; when
 * answers are fast they shrink, down to a SUM_CONNS_FACTOR-th of
 * `connections` (ramp.c; docs/client.md, "Fetch sizes").  An epoch
 * is SUM_EPOCH reads, or two per read wanted in flight.
 * BLKMAP_SUM_TRACE=1 prints to stderr each change of how many are
 * wanted (for tests and tuning).  A dataset's index pages are looked up
 * ahead of the reads by a thread of their own (sum_ahead), so that no
 * fetcher waits for one with its other reads. */
#define SUM_STREAM_INFLIGHT ((uint64_t)4 << 20)
#define SUM_CONNS_FACTOR 4
#define SUM_PER_FETCHER 16
#define SUM_FETCHER_BYTES ((size_t)4 << 20) /* fewer reads a fetcher when blocks are big */
#define SUM_TARGET_RATE 2e9
#define SUM_EPOCH 16
#define SUM_RING_BYTES ((size_t)16 << 20) /* unless 2 blocks per connection are more */
#define SUM_AHEAD_BYTES ((uint64_t)64 << 20) /* index pages looked up ahead of the reads */
#define SUM_LEAF_BLOCKS 256 /* blocks an index leaf covers (docs/FORMAT.md) */

struct sum_stream {
	bm_dataset *ds;
	uint64_t size, nchunks;
	size_t chunk, nslots;
	char *bufs;                /* nslots * chunk */
	int64_t *got;              /* per slot: bytes read, or a BM_E* code */
	bool *ready;               /* per slot: got is the answer for its chunk */
	double *t0;                /* per slot: when its read started */
	uint64_t next;             /* first chunk no fetcher took */
	uint64_t hashed;           /* chunks hashed: chunk c's slot is free once c < hashed + nslots */
	bool stop, trace;
	/* The epoch: its reads, their bytes and the least seconds per byte
	 * among them, since epoch_t0; the reads wanted in flight (ramp's
	 * answer) and those in flight; fetchers started (ids from 0; one
	 * whose id is past what want calls for idles). */
	unsigned epoch_reads;
	uint64_t epoch_bytes;
	double least, epoch_t0;
	struct bm_ramp ramp;
	int want, max, inflight, started, per;
	pthread_mutex_t mu;
	pthread_cond_t filled, freed;
};

/* One fetcher: its id, the stream, and the reads it may have in flight
 * (st->per, the last one what is left of st->max: together they hold no
 * more places than the bound has). */
struct sum_fetch {
	struct sum_stream *st;
	int id, cap;
};

static double mono(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Fetchers that n reads in flight call for. */
static int sum_fetchers(const struct sum_stream *st, int n)
{
	return (n + st->per - 1) / st->per;
}

/* The end of an epoch (under st->mu): how many reads in flight now. */
static void sum_judge(struct sum_stream *st)
{
	double end = mono(), secs = end - st->epoch_t0;
	double need = SUM_TARGET_RATE * st->least + 1; /* rounded up */
	int n = bm_ramp_epoch(&st->ramp, (double)st->epoch_bytes / (secs > 0 ? secs : 1e-9), need);
	if (st->trace && n != st->want)
		fprintf(stderr, "%s: sum: %d reads in flight, %d fetchers\n", prog, n, sum_fetchers(st, n));
	if (n != st->want)
		pthread_cond_broadcast(&st->freed); /* fetchers past it idle, or back to work */
	st->want = n;
	st->epoch_t0 = end;
	st->epoch_bytes = 0;
	st->epoch_reads = 0;
}

/* Records chunk c's read, which ended with rc (under st->mu). */
static void sum_got(struct sum_stream *st, uint64_t c, int rc, double now)
{
	size_t slot = (size_t)(c % st->nslots);
	uint64_t off = c * st->chunk;
	size_t len = st->size - off < st->chunk ? (size_t)(st->size - off) : st->chunk;
	double per_byte = (now - st->t0[slot]) / (double)len;

	st->got[slot] = rc < 0 ? rc : (int64_t)len;
	st->ready[slot] = true;
	/* A read that waited for the CPU is slower, never faster. */
	if (st->epoch_reads == 0 || per_byte < st->least)
		st->least = per_byte;
	st->epoch_bytes += len;
	if (++st->epoch_reads >= (2 * st->want > SUM_EPOCH ? 2 * (unsigned)st->want : SUM_EPOCH))
		sum_judge(st);
	pthread_cond_broadcast(&st->filled);
}

/* A fetcher: starts reads while fewer than st->want are in flight (its
 * own fewer than its cap) and the ring has room, and records each as it
 * ends; while want calls for fewer fetchers than its id, it starts none
 * (idles once its reads are in).  It ends at the end of the content or
 * at a stop. */
static void *sum_fetcher(void *arg)
{
	struct sum_fetch *me = arg;
	struct sum_stream *st = me->st;
	bm_reads *r = NULL;
	int mine = 0, rc = bm_reads_new(st->ds, me->cap, &r);

	pthread_mutex_lock(&st->mu);
	if (rc < 0) {
		/* Said as the next chunk's error (the first fetcher's:
		 * chunk 0). */
		if (me->id == 0) {
			st->got[0] = rc;
			st->ready[0] = true;
			st->stop = true;
			pthread_cond_broadcast(&st->filled);
		}
		goto out;
	}
	for (;;) {
		bool over = me->id >= sum_fetchers(st, st->want);
		while (!st->stop && !over && st->next < st->nchunks && st->next < st->hashed + st->nslots &&
		       st->inflight < st->want && mine < me->cap) {
			uint64_t c = st->next++;
			size_t slot = (size_t)(c % st->nslots);
			st->t0[slot] = mono();
			st->inflight++;
			mine++;
			pthread_mutex_unlock(&st->mu);
			rc = bm_reads_start(r, c, st->bufs + slot * st->chunk, (void *)(uintptr_t)c);
			pthread_mutex_lock(&st->mu);
			if (rc < 0) {
				st->inflight--;
				mine--;
				sum_got(st, c, rc, mono()); /* failed at once */
			}
		}
		if (mine == 0) {
			if (st->stop || st->next >= st->nchunks)
				break;
			/* The ring is full, or the others carry want (this one
			 * is past what it calls for: it idles): until a slot
			 * is hashed or want changes. */
			pthread_cond_wait(&st->freed, &st->mu);
			continue;
		}
		pthread_mutex_unlock(&st->mu);
		void *tag = NULL;
		rc = bm_reads_wait(r, &tag);
		pthread_mutex_lock(&st->mu);
		if (rc == 1) { /* none in flight: cannot be */
			st->inflight -= mine;
			mine = 0;
			continue;
		}
		st->inflight--;
		mine--;
		sum_got(st, (uint64_t)(uintptr_t)tag, rc, mono());
		pthread_cond_broadcast(&st->freed); /* room for the others' reads */
	}
out:
	pthread_mutex_unlock(&st->mu);
	bm_reads_free(r); /* stops those still in flight (after an error) */
	return NULL;
}

/* Index pages ahead of the reads (formats 2 and 3): a read finds its
 * block in the dataset's index, and a leaf page not yet cached costs the
 * fetcher that needs it a round trip with its other reads waiting (at 2 ms
 * an answer, the 17 pages of a 256 MiB dataset of 64 KiB blocks made a sum
 * 0.42-0.44 s, against 0.35-0.38 s with them looked up first, one by one).
 * This thread looks up the first block of each leaf (bm_block_sum loads
 * and keeps its pages) up to SUM_AHEAD_BYTES of blocks past the next read,
 * over the connection the handle keeps for index pages; it waits for the
 * reads to move on (st->filled) when that far ahead.  It stops at the end,
 * at a stop, at a flat object or a format 1 manifest (nothing to load:
 * BM_EINVAL or no wait), and at an error, which is the reads' to meet and
 * report. */
static void *sum_ahead(void *arg)
{
	struct sum_stream *st = arg;
	uint64_t ahead = SUM_AHEAD_BYTES / st->chunk, blk = 0;
	char sum[64];

	if (ahead < SUM_LEAF_BLOCKS)
		ahead = SUM_LEAF_BLOCKS;
	pthread_mutex_lock(&st->mu);
	while (!st->stop && blk < st->nchunks) {
		if (blk >= st->next + ahead) {
			pthread_cond_wait(&st->filled, &st->mu);
			continue;
		}
		pthread_mutex_unlock(&st->mu);
		int rc = bm_block_sum(st->ds, blk, sum, sizeof(sum));
		pthread_mutex_lock(&st->mu);
		if (rc < 0)
			break;
		blk += SUM_LEAF_BLOCKS;
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* Whether sum reads ds with sum_streamed, not through a mapping: in
 * loadblk mode (a wcfs mirror, when it serves the dataset, is read
 * through its mapping), when a block per read in flight, at up to
 * SUM_CONNS_FACTOR times `connections` (the bound read-ahead grows to
 * as well), can be SUM_STREAM_INFLIGHT bytes: at 2 ms a round trip,
 * 2 GB/s.  Smaller blocks go through the mapping. */

static int sum_conns_max(int connections)
{
	return connections * SUM_CONNS_FACTOR < 256 ? connections * SUM_CONNS_FACTOR : 256;
}

static bool sum_streams(bm_dataset *ds, int connections)
{
	struct bm_stats st;
	bm_stats(ds, &st);
	return strcmp(st.mode, "loadblk") == 0 &&
	       (uint64_t)bm_blksize(ds) * (uint64_t)sum_conns_max(connections) >= SUM_STREAM_INFLIGHT;
}

/* Hashes the whole content of ds into ctx: 0, or a BM_E* code. */
static int sum_streamed(bm_dataset *ds, const struct bm_options *o, int connections, EVP_MD_CTX *ctx)
{
	struct sum_stream st = { .ds = ds, .size = bm_size(ds), .chunk = bm_blksize(ds) };
	const char *trace = getenv("BLKMAP_SUM_TRACE");
	struct sum_fetch *f = NULL;
	pthread_t *t = NULL;
	int rc = 0;

	/* The ring: two blocks per read in flight at most (o->connections
	 * less one, the bound the handle was opened with: bm_reads leaves
	 * one for index pages), within SUM_RING_BYTES unless two per
	 * `connections` are more, and within half of cache_bytes. */
	size_t ring = 2 * (size_t)connections * st.chunk > SUM_RING_BYTES
			      ? 2 * (size_t)connections * st.chunk : SUM_RING_BYTES;
	if (ring > o->cache_bytes / 2)
		ring = o->cache_bytes / 2;
	st.nchunks = (st.size + st.chunk - 1) / st.chunk;
	st.nslots = 2 * (size_t)(o->connections - 1);
	if (st.nslots > ring / st.chunk)
		st.nslots = ring / st.chunk;
	if (st.nslots < 1)
		st.nslots = 1;
	st.trace = trace != NULL && strcmp(trace, "1") == 0;
	st.max = o->connections - 1 < (int)st.nslots ? o->connections - 1 : (int)st.nslots;
	if (st.max < 1)
		st.max = 1;
	/* A fetcher also checks and copies what it reads: big blocks spread
	 * over more of them (1 MiB blocks, 4 a fetcher: 0.32 s a sum at 2 ms
	 * per answer against 0.36 s with 16, 7 interleaved runs, load 5). */
	st.per = SUM_FETCHER_BYTES / st.chunk < SUM_PER_FETCHER ? (int)(SUM_FETCHER_BYTES / st.chunk)
								: SUM_PER_FETCHER;
	if (st.per > st.max)
		st.per = st.max;
	if (st.per < 1)
		st.per = 1;
	st.want = connections < st.max ? connections : st.max;
	bm_ramp_init(&st.ramp, st.want, (st.want + SUM_CONNS_FACTOR - 1) / SUM_CONNS_FACTOR, st.max,
		     BM_RAMP_STEADY_STANDS);
	int nf = sum_fetchers(&st, st.max);
	st.bufs = malloc(st.nslots * st.chunk);
	st.got = calloc(st.nslots, sizeof(*st.got));
	st.ready = calloc(st.nslots, sizeof(*st.ready));
	st.t0 = calloc(st.nslots, sizeof(*st.t0));
	t = calloc((size_t)nf, sizeof(*t));
	f = calloc((size_t)nf, sizeof(*f));
	if (st.bufs == NULL || st.got == NULL || st.ready == NULL || st.t0 == NULL || t == NULL || f == NULL) {
		rc = BM_ENOMEM;
		goto out;
	}
	pthread_mutex_init(&st.mu, NULL);
	pthread_cond_init(&st.filled, NULL);
	pthread_cond_init(&st.freed, NULL);
	st.epoch_t0 = mono();
	pthread_t ahead_thread;
	bool ahead = pthread_create(&ahead_thread, NULL, sum_ahead, &st) == 0; /* or none: slower */
	if (st.trace)
		fprintf(stderr, "%s: sum: %d reads in flight, %d fetchers\n", prog, st.want,
			sum_fetchers(&st, st.want));
	for (uint64_t c = 0; rc == 0 && c < st.nchunks; c++) {
		size_t slot = (size_t)(c % st.nslots);
		pthread_mutex_lock(&st.mu);
		while (!st.ready[slot]) {
			/* Fetchers are started in id order, as want calls for
			 * them (one past it idles). */
			if (st.started < sum_fetchers(&st, st.want) && st.started < nf) {
				int left = st.max - st.started * st.per;
				f[st.started] = (struct sum_fetch){ &st, st.started, left < st.per ? left : st.per };
				pthread_mutex_unlock(&st.mu);
				bool made = pthread_create(&t[st.started], NULL, sum_fetcher, &f[st.started]) == 0;
				pthread_mutex_lock(&st.mu);
				if (made) {
					st.started++;
					continue;
				}
				if (st.started == 0) {
					rc = BM_ENOMEM; /* no fetcher at all */
					break;
				}
				/* None more to be had: want as those carry. */
				st.want = st.ramp.n = st.started * st.per;
				st.ramp.full = true;
				st.ramp.prev = 0; /* nothing more to undo to */
				continue;
			}
			pthread_cond_wait(&st.filled, &st.mu);
		}
		if (rc < 0) {
			pthread_mutex_unlock(&st.mu);
			break;
		}
		int64_t n = st.got[slot];
		pthread_mutex_unlock(&st.mu);
		if (n < 0) {
			rc = (int)n;
			break;
		}
		EVP_DigestUpdate(ctx, st.bufs + slot * st.chunk, (size_t)n);
		pthread_mutex_lock(&st.mu);
		st.ready[slot] = false;
		st.hashed++;
		pthread_cond_broadcast(&st.freed);
		pthread_mutex_unlock(&st.mu);
	}
	pthread_mutex_lock(&st.mu);
	st.stop = true; /* after an error: the fetchers start no more */
	pthread_cond_broadcast(&st.freed);
	pthread_cond_broadcast(&st.filled); /* sum_ahead's wait */
	pthread_mutex_unlock(&st.mu);
	for (int i = 0; i < st.started; i++)
		pthread_join(t[i], NULL);
	if (ahead)
		pthread_join(ahead_thread, NULL);
	pthread_mutex_destroy(&st.mu);
	pthread_cond_destroy(&st.filled);
	pthread_cond_destroy(&st.freed);
out:
	free(t);
	free(f);
	free(st.bufs);
	free(st.got);
	free(st.ready);
	free(st.t0);
	return rc;
}

static int cmd_sum(int argc, char **argv)
{
	struct bm_options o;
	bm_dataset *ds;
	bm_mapping *m = NULL;
	void *addr = NULL;
	bool verbose = false;
	int i = 1, ex = 1;

	if (argc > 1 && is_help(argv[1]))
		return fputs(sum_help, stdout), 0;
	if (load_options_sequential(&o) < 0)
		return 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0) {
			verbose = true;
		} else if (strcmp(argv[i], "--at") == 0) {
			if ((ex = parse_at("sum", i + 1 < argc ? argv[i + 1] : NULL, &o)) != 0)
				return ex;
			i++;
		} else {
			break;
		}
	}
	if (argc - i != 1)
		return usage_error("sum", "expected URL");
	const char *url = argv[i];
	double t0 = now();
	/* Opened with the bound a streamed sum may grow to (and one for index
	 * pages); it starts with `connections` reads in flight (connections
	 * are made as they are used). */
	int connections = o.connections;
	o.connections = sum_conns_max(connections) + 1; /* one for index pages */
	if (open_or_fail(&ds, url, &o, &ex) < 0)
		return ex;
	bool streamed = sum_streams(ds, connections);
	if (!streamed && o.connections != connections) {
		/* Through a mapping: opened again with `connections` (its
		 * read-ahead grows by itself when answers are slow). */
		bm_close(ds);
		o.connections = connections;
		if (open_or_fail(&ds, url, &o, &ex) < 0)
			return ex;
	}
	uint64_t size = bm_size(ds);
	if (size > 0 && !streamed) {
		int rc = bm_map(ds, 0, 0, &addr, &m);
		if (rc < 0) {
			ex = fail("sum", rc, ds);
			goto out;
		}
		note_mapped(ds, url);
	}
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (ctx == NULL) {
		ex = fail("sum", BM_ENOMEM, NULL);
		goto out;
	}
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	if (streamed && size > 0) {
		int rc = sum_streamed(ds, &o, connections, ctx);
		if (rc < 0) {
			EVP_MD_CTX_free(ctx);
			ex = fail("sum", rc, ds);
			goto out;
		}
	}
	const size_t chunk = 1 << 20;
	for (uint64_t off = 0; !streamed && off < size; off += chunk)
		EVP_DigestUpdate(ctx, (const char *)addr + off, size - off < chunk ? (size_t)(size - off) : chunk);
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	for (unsigned k = 0; k < mdlen; k++)
		printf("%02x", md[k]);
	printf("  %s\n", url);
	if (verbose)
		print_stats(ds, now() - t0);
	ex = 0;
out:
	bm_unmap(m);
	bm_close(ds);
	return ex;
}

/* ---- patch -------------------------------------------------------------------------- */

static const char patch_help[] =
	"usage: blkmap patch [--at GEN|TAG] URL OFFSET FILE\n"
	"\n"
	"Maps the dataset at URL (as of generation GEN, or the one tag TAG names, if\n"
	"given, else the latest),\n"
	"copies FILE's bytes into the mapping at byte OFFSET, commits, and prints the\n"
	"new generation. The bytes must lie inside the dataset.\n"
	"Exit status: 0 success, 1 error, 2 usage error, 3 commit conflict (another\n"
	"writer published since GEN, or GEN is not the latest).\n";

static int read_file(const char *path, char **bufp, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	if (fd < 0 || fstat(fd, &sb) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		errno = err;
		return -1;
	}
	char *buf = malloc((size_t)sb.st_size + 1);
	ssize_t n = buf ? read(fd, buf, (size_t)sb.st_size) : -1;
	close(fd);
	if (n != sb.st_size) {
		free(buf);
		if (n >= 0)
			errno = EIO;
		return -1;
	}
	*bufp = buf;
	*lenp = (size_t)sb.st_size;
	return 0;
}

static int cmd_patch(int argc, char **argv)
{
	struct bm_options o;
	uint64_t offset, gen = 0;
	bm_dataset *ds;
	bm_mapping *m = NULL;
	void *addr;
	char *data = NULL;
	size_t len = 0;
	int i = 1, ex = 1, rc;

	if (argc > 1 && is_help(argv[1]))
		return fputs(patch_help, stdout), 0;
	if (load_options(&o) < 0)
		return 1;
	if (i < argc && strcmp(argv[i], "--at") == 0) {
		if ((ex = parse_at("patch", i + 1 < argc ? argv[i + 1] : NULL, &o)) != 0)
			return ex;
		i += 2;
	}
	if (argc - i != 3)
		return usage_error("patch", "expected URL, OFFSET and FILE");
	const char *url = argv[i], *path = argv[i + 2];
	if (parse_u64(argv[i + 1], &offset) < 0)
		return usage_error("patch", "OFFSET is not a number of bytes");
	if (read_file(path, &data, &len) < 0) {
		fprintf(stderr, "%s: patch: cannot read %s: %s\n", prog, path, strerror(errno));
		return 1;
	}
	if (open_or_fail(&ds, url, &o, &ex) < 0) {
		free(data);
		return ex;
	}
	if (len == 0) {
		fprintf(stderr, "%s: patch: %s is empty: nothing to write\n", prog, path);
		goto out;
	}
	if (offset > bm_size(ds) || len > bm_size(ds) - offset) {
		fprintf(stderr, "%s: patch: %zu bytes at offset %" PRIu64 " do not fit in the dataset's %" PRIu64 " bytes\n",
			prog, len, offset, bm_size(ds));
		goto out;
	}
	rc = bm_map(ds, offset, len, &addr, &m);
	if (rc < 0) {
		ex = fail("patch", rc, ds);
		goto out;
	}
	note_mapped(ds, url);
	if (bm_is_flat(ds)) {
		fprintf(stderr, "%s: patch: %s is a plain object, not a dataset: it is read-only\n", prog, url);
		goto out;
	}
	memcpy(addr, data, len);
	rc = bm_commit(ds, &gen);
	if (rc < 0) {
		ex = fail("patch: commit", rc, ds);
		goto out;
	}
	printf("%" PRIu64 "\n", gen);
	ex = 0;
out:
	free(data);
	bm_unmap(m);
	bm_close(ds);
	return ex;
}

/* ---- stat and log --------------------------------------------------------------------- */

static const char stat_help[] =
	"usage: blkmap stat [--at GEN|TAG] URL\n"
	"\n"
	"Prints what the dataset at URL (or its generation GEN, or the one tag TAG\n"
	"names) is, as JSON: url, kind (dataset or flat),\n"
	"size, blksize, generation, blocks (the non-empty ones), format_version\n"
	"(the dataset format version of that generation, 1 to 4; null for a\n"
	"flat object), piece_bytes (the bytes of a piece of each block, each piece\n"
	"checked on its own: 65536 in format 3, the dataset's own in format 4;\n"
	"null when its blocks have no pieces).\n";

/* Prints s as a JSON string (quotes, backslashes and controls escaped). */
void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int cmd_stat(int argc, char **argv)
{
	struct bm_options o;
	bm_dataset *ds;
	int ex = 1;

	if (argc > 1 && is_help(argv[1]))
		return fputs(stat_help, stdout), 0;
	if (load_options(&o) < 0)
		return 1;
	if (argc > 1 && strcmp(argv[1], "--at") == 0) {
		if ((ex = parse_at("stat", argc > 2 ? argv[2] : NULL, &o)) != 0)
			return ex;
		argc -= 2, argv += 2;
	}
	if (argc != 2)
		return usage_error("stat", "expected URL");
	if (open_or_fail(&ds, argv[1], &o, &ex) < 0)
		return ex;
	uint64_t nblk = (bm_size(ds) + bm_blksize(ds) - 1) / bm_blksize(ds);
	printf("{\"url\": ");
	print_json_string(bm_url(ds));
	printf(", \"kind\": \"%s\", \"size\": %" PRIu64 ", \"blksize\": %zu, "
	       "\"generation\": %" PRIu64 ", \"blocks\": %" PRIu64 ", \"format_version\": ",
	       bm_is_flat(ds) ? "flat" : "dataset", bm_size(ds), bm_blksize(ds),
	       bm_generation(ds), bm_is_flat(ds) ? nblk : bm_nblocks_stored(ds));
	if (bm_format_version(ds) > 0)
		printf("%d", bm_format_version(ds));
	else
		printf("null"); /* a flat object: no format */
	printf(", \"piece_bytes\": ");
	if (bm_piece_bytes(ds) > 0)
		printf("%zu}\n", bm_piece_bytes(ds));
	else
		printf("null}\n"); /* formats 1 and 2, a flat object: no pieces */
	bm_close(ds);
	return 0;
}

static const char log_help[] =
	"usage: blkmap log [--at GEN|TAG] URL\n"
	"\n"
	"Lists the kept generations of the dataset at URL, newest first (from GEN,\n"
	"or the one tag TAG names, with --at): one line\n"
	"each with generation, size, non-empty blocks and the time of the commit,\n"
	"and one line for each run of generations that are not kept. A server that\n"
	"lists (S3, blkmap-server, Apache WebDAV) is listed; on another each\n"
	"generation is looked up, and after 64 in a row that are not kept the\n"
	"lookup stops.\n";

/* One line for generations lo..hi (lo <= hi) that are not kept. */
static void print_not_kept(uint64_t lo, uint64_t hi)
{
	if (lo == hi)
		printf("generation %" PRIu64 " (not kept)\n", lo);
	else
		printf("generations %" PRIu64 "-%" PRIu64 " (not kept)\n", lo, hi);
}

static int cmd_log(int argc, char **argv)
{
	struct bm_options o;
	bm_dataset *ds;
	uint64_t *gens = NULL, unlooked = 0;
	size_t ngens = 0;
	int ex = 1;

	if (argc > 1 && is_help(argv[1]))
		return fputs(log_help, stdout), 0;
	if (load_options(&o) < 0)
		return 1;
	if (argc > 1 && strcmp(argv[1], "--at") == 0) {
		if ((ex = parse_at("log", argc > 2 ? argv[2] : NULL, &o)) != 0)
			return ex;
		argc -= 2, argv += 2;
	}
	if (argc != 2)
		return usage_error("log", "expected URL");
	if (open_or_fail(&ds, argv[1], &o, &ex) < 0)
		return ex;
	if (bm_is_flat(ds)) {
		fprintf(stderr, "%s: log: %s is a plain object: it has no generations\n", prog, argv[1]);
		bm_close(ds);
		return 1;
	}
	int rc = bm_generations(ds, &gens, &ngens, &unlooked);
	if (rc < 0) {
		ex = fail("log", rc, ds);
		goto out;
	}
	ex = 0;
	/* next: the highest generation not printed yet. */
	uint64_t next = ngens ? gens[0] : 0;
	for (size_t i = 0; i < ngens; i++) {
		struct bm_generation_info gi;
		if (gens[i] < next)
			print_not_kept(gens[i] + 1, next);
		next = gens[i] - 1;
		rc = bm_generation_info(ds, gens[i], &gi);
		if (rc == BM_ENOTFOUND) {
			/* Gone since it was listed (a gc?). */
			print_not_kept(gens[i], gens[i]);
			continue;
		}
		if (rc < 0) {
			ex = fail("log", rc, ds);
			goto out;
		}
		printf("generation %" PRIu64 " size %" PRIu64 " blocks %" PRIu64 " created %s\n",
		       gi.generation, gi.size, gi.nblocks, gi.created[0] ? gi.created : "-");
	}
	if (next > unlooked)
		print_not_kept(unlooked + 1, next);
	if (unlooked > 0)
		printf("generations 1-%" PRIu64 " not looked up (%u in a row not kept)\n", unlooked,
		       BM_LOG_MAX_MISSING);
out:
	free(gens);
	bm_close(ds);
	return ex;
}

/* ---- attr ------------------------------------------------------------------------------ */

static const char attr_help[] =
	"usage: blkmap attr URL [KEY[=VALUE]]\n"
	"       blkmap attr --delete URL KEY\n"
	"\n"
	"Shows or sets the user attributes of the dataset at URL: a JSON object kept\n"
	"in its manifest (at most 64 KiB) and carried from generation to generation.\n"
	"  attr URL             prints them all, as one JSON object ({} when none)\n"
	"  attr URL KEY         prints the value of KEY, as JSON\n"
	"  attr URL KEY=VALUE   sets KEY to VALUE, commits, prints the new generation;\n"
	"                       VALUE is taken as JSON when it parses as JSON (42,\n"
	"                       true, [2,3], {\"a\":1}, \"text\"), else as a string\n"
	"  attr --delete URL KEY  removes KEY, commits, prints the new generation\n"
	"Exit status: 0 success, 1 error (no such KEY), 2 usage error, 3 another\n"
	"writer published first.\n";

/* Prints v as compact JSON and a newline. */
static int print_json(const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
	if (s == NULL) {
		fprintf(stderr, "%s: attr: out of memory\n", prog);
		return 1;
	}
	puts(s);
	free(s);
	return 0;
}

static int cmd_attr(int argc, char **argv)
{
	struct bm_options o;
	bm_dataset *ds;
	bool del = false;
	int i = 1, ex = 1, rc;
	json_t *attrs = NULL, *val = NULL;
	char *text = NULL;

	if (argc > 1 && is_help(argv[1]))
		return fputs(attr_help, stdout), 0;
	if (i < argc && strcmp(argv[i], "--delete") == 0) {
		del = true;
		i++;
	}
	if (del && argc - i != 2)
		return usage_error("attr", "expected URL and KEY");
	if (argc - i < 1 || argc - i > 2)
		return usage_error("attr", "expected URL and at most one KEY[=VALUE]");
	const char *url = argv[i];
	char *key = argc - i == 2 ? strdup(argv[i + 1]) : NULL;
	char *eq = key && !del ? strchr(key, '=') : NULL;
	if (argc - i == 2 && key == NULL)
		return fprintf(stderr, "%s: attr: out of memory\n", prog), 1;
	if (eq)
		*eq = '\0';
	if (key && key[0] == '\0') {
		free(key);
		return usage_error("attr", "KEY is empty");
	}
	if (load_options(&o) < 0 || open_or_fail(&ds, url, &o, &ex) < 0) {
		free(key);
		return ex;
	}
	ex = 1;
	text = malloc(BM_ATTRS_MAX + 1);
	if (text == NULL) {
		fprintf(stderr, "%s: attr: out of memory\n", prog);
		goto out;
	}
	bm_attrs_get(ds, text, BM_ATTRS_MAX + 1);
	json_error_t jerr;
	attrs = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(attrs)) {
		fprintf(stderr, "%s: attr: %s: the library gave attributes that are not a JSON object\n", prog, url);
		goto out;
	}
	if (key == NULL) {
		ex = print_json(attrs);
		goto out;
	}
	if (!del && eq == NULL) {
		json_t *v = json_object_get(attrs, key);
		if (v == NULL) {
			fprintf(stderr, "%s: attr: %s has no attribute \"%s\"\n", prog, url, key);
			goto out;
		}
		ex = print_json(v);
		goto out;
	}
	if (del) {
		if (json_object_del(attrs, key) < 0) {
			fprintf(stderr, "%s: attr: %s has no attribute \"%s\"\n", prog, url, key);
			goto out;
		}
	} else {
		val = json_loads(eq + 1, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
		if (val == NULL)
			val = json_string(eq + 1); /* not JSON: a string (NULL if not UTF-8) */
		if (val == NULL) {
			fprintf(stderr, "%s: attr: VALUE is neither JSON nor UTF-8 text\n", prog);
			goto out;
		}
		if (json_object_set(attrs, key, val) < 0) {
			fprintf(stderr, "%s: attr: KEY is not UTF-8 text\n", prog);
			goto out;
		}
	}
	char *s = json_dumps(attrs, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (s == NULL) {
		fprintf(stderr, "%s: attr: out of memory\n", prog);
		goto out;
	}
	uint64_t gen = 0;
	rc = bm_attrs_set(ds, s);
	free(s);
	if (rc == 0)
		rc = bm_commit(ds, &gen);
	if (rc < 0) {
		ex = fail("attr", rc, ds);
		goto out;
	}
	printf("%" PRIu64 "\n", gen);
	ex = 0;
out:
	json_decref(val);
	json_decref(attrs);
	free(text);
	free(key);
	bm_close(ds);
	return ex;
}

/* ---- main ----------------------------------------------------------------------------- */

static const char main_help[] =
	"usage: blkmap COMMAND [ARGS]\n"
	"\n"
	"Maps datasets that live on an HTTP object server or in S3 (s3://BUCKET/PREFIX)\n"
	"into memory.\n"
	"\n"
	"commands:\n"
	"  put [--blksize BYTES] [--piece BYTES] FILE URL\n"
	"                                    FILE's bytes as the dataset's next generation\n"
	"  get URL FILE                      the dataset's bytes to FILE\n"
	"  sum [-v] URL                      SHA-256 of the content\n"
	"  patch URL OFFSET FILE             write FILE at OFFSET and commit\n"
	"  stat URL                          size, block size, generation as JSON\n"
	"  log URL                           the kept generations\n"
	"  diff URL GEN1|TAG1 [GEN2|TAG2]    the block ranges that differ\n"
	"  attr URL [KEY[=VALUE]]            show or set the user attributes (JSON)\n"
	"  tag URL NAME [GEN], tag -d URL NAME   name a generation, or remove the name\n"
	"  tags URL                          the tags\n"
	"  gc [--keep N] [--keep-since TIME] [--grace DURATION] [--dry-run] URL\n"
	"                                    drop old generations, delete unreferenced objects\n"
	"\n"
	"get, sum, patch, stat, log and diff take --at GEN|TAG: a generation, or the one\n"
	"a tag names, instead of the latest.\n"
	"\n"
	"'blkmap COMMAND --help' tells more.  Environment: BLKMAP_TOKEN (bearer token),\n"
	"BLKMAP_CACHE_BYTES, BLKMAP_CONNECTIONS, BLKMAP_RETRIES, BLKMAP_RETRY_BASE_MS,\n"
	"BLKMAP_TIMEOUT_MS, BLKMAP_CONNECT_TIMEOUT_MS, BLKMAP_READAHEAD_BYTES,\n"
	"BLKMAP_SPARE_BYTES, BLKMAP_BLKSIZE, BLKMAP_WCFS, BLKMAP_VERBOSE,\n"
	"BLKMAP_MISS_POLL_US (see docs/client.md); for s3:// URLs the AWS_* variables\n"
	"and ~/.aws files (see docs/s3.md).\n";

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "put", cmd_put }, { "get", cmd_get }, { "sum", cmd_sum },
		{ "patch", cmd_patch }, { "stat", cmd_stat }, { "log", cmd_log },
		{ "attr", cmd_attr }, { "diff", cmd_diff }, { "tag", cmd_tag },
		{ "tags", cmd_tags }, { "gc", cmd_gc },
	};

	if (argc < 2) {
		fprintf(stderr, "%s: expected a command: put, get, sum, patch, stat, log, diff, attr, tag, tags or gc (see '%s --help')\n",
			prog, prog);
		return EXIT_USAGE;
	}
	if (is_help(argv[1])) {
		fputs(main_help, stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("blkmap %s\n", PACKAGE_VERSION);
		return 0;
	}
	signal(SIGBUS, on_sigbus);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "%s: unknown command '%s' (see '%s --help')\n", prog, argv[1], prog);
	return EXIT_USAGE;
}
