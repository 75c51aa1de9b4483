/* tests/bench_client.c — libblkmap against curl on the same block objects of
 * a 256 MiB dataset on blkmap-server --memory (loopback), for 1 MiB and
 * 4 MiB blocks, in the same run (`make bench`):
 *   seq_scan    scan through a mapping vs curl --parallel (8) GETs, MB/s,
 *               with a 1 GiB cache (fresh memory per block) and with a
 *               64 MiB one (reclaimed slots reused: a dataset larger
 *               than its cache)
 *   random_read one fault on a not-yet-loaded block vs one libcurl GET of
 *               one block on a kept-alive connection, median ms; also with
 *               a full cache (each miss reuses a reclaimed slot)
 *   commit64    bm_commit of 64 dirty blocks vs curl --parallel (8) PUTs of
 *               the same bytes, MB/s
 * The first two, with an empty cache, put every block into fresh memory;
 * their baselines discard the bytes.  To show what fresh memory costs on
 * the machine, each also has a second baseline that keeps the bytes in
 * fresh memory the way a program without blkmap would, in the same run:
 *   seq_scan_<bs>_vs_curl_to_memory     curl --parallel (8) writing the
 *               blocks to new files in a tmpfs (/dev/shm), MB/s
 *   random_read_<bs>_vs_get_to_memory   one libcurl GET into newly mapped
 *               anonymous memory (transparent huge pages asked for when
 *               the block can use them), median ms
 * Each figure is the median of ROUNDS runs.  One line per figure:
 *   client <name>_<bs> ours=<x> baseline=<y> ratio=<r>
 * BENCH_ONLY=seq_scan|random_read|commit64 runs one figure; BENCH_VERBOSE=1
 * prints commit64's rounds.
 * Not a test: nothing here asserts a time.  Single-threaded except for the
 * library's own workers.
 */
#include "config.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "bench_util.h"
#include "client_util.h"

#define MiB ((size_t)1 << 20)
#define SIZE (256 * MiB)
#define ROUNDS 5
#define NRANDOM 50
#define CACHE ((size_t)1 << 30)

static void options(struct bm_options *o)
{
	if (bm_options_init(o) < 0)
		bench_die("options", bm_last_error(NULL));
	o->cache_bytes = CACHE;
}

static void make_dataset(const char *url, size_t bs, const unsigned char *data)
{
	struct bm_options o;
	bm_dataset *ds;

	options(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = bs;
	if (bm_open(&ds, url, &o) < 0 || bm_resize(ds, SIZE) < 0 || bm_write(ds, 0, data, SIZE) < 0 ||
	    bm_commit(ds, NULL) < 0)
		bench_die(url, bm_last_error(ds));
	bm_close(ds);
}

/* Runs curl with a config file; returns its wall time in seconds. */
static double run_curl(const char *config)
{
	double t0 = bench_now();
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		execlp("curl", "curl", "--silent", "--show-error", "--no-progress-meter", "--fail", "--parallel",
		       "--parallel-max", "8", "--config", config, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		bench_die("curl", "failed");
	return bench_now() - t0;
}

/* A curl config that GETs every block object of the dataset to /dev/null,
 * or to files in outdir when it is not NULL. */
static void write_get_config(const char *path, struct ts_server *s, const char *ds_path,
			     const char *outdir)
{
	char url[512];
	FILE *f = fopen(path, "w");

	tc_url(url, sizeof(url), s, ds_path);
	json_t *keys = tc_block_keys(url), *b;
	size_t i;
	if (f == NULL)
		bench_die(path, "cannot write the curl config");
	json_array_foreach(keys, i, b) {
		fprintf(f, "url = \"%s%s/%s\"\n", s->url, ds_path, json_string_value(b));
		if (outdir)
			fprintf(f, "output = \"%s/%zu\"\n", outdir, i);
		else
			fprintf(f, "output = \"/dev/null\"\n");
	}
	json_decref(keys);
	fclose(f);
}

/* ---- (1) sequential scan ----------------------------------------------------- */

/* A scan with a RAM cache of cache bytes (0: 1 GiB, the whole dataset fits,
 * so every block gets fresh memory; 64 MiB: the cache is full after a
 * quarter of the scan and reclaimed slots are reused, the steady state of
 * a dataset larger than RAM). */
static double scan_ours(const char *url, size_t cache)
{
	return SIZE / 1e6 / bench_scan(bench_open(url, cache ? cache : CACHE), url, SIZE);
}

/* A new directory on a tmpfs for curl's files, or NULL if /dev/shm is not
 * a tmpfs (the to-memory baseline is then left out). */
static char *tmpfs_dir(char *tmpl)
{
	struct statfs fs;

	if (statfs("/dev/shm", &fs) < 0 || fs.f_type != 0x01021994 /* TMPFS_MAGIC */)
		return NULL;
	return mkdtemp(tmpl);
}

static void bench_seq_scan(struct ts_server *s, const char *ds_path, size_t bs)
{
	char url[512], cfg[] = "/tmp/blkmap-bench-curl.XXXXXX";
	char mcfg[] = "/tmp/blkmap-bench-curl-mem.XXXXXX", dtmpl[] = "/dev/shm/blkmap-bench.XXXXXX";
	double ours[ROUNDS], small[ROUNDS], base[ROUNDS], tomem[ROUNDS];
	char *dir = tmpfs_dir(dtmpl);

	close(mkstemp(cfg));
	write_get_config(cfg, s, ds_path, NULL);
	close(mkstemp(mcfg));
	if (dir)
		write_get_config(mcfg, s, ds_path, dir);
	tc_url(url, sizeof(url), s, ds_path);
	for (int r = 0; r < ROUNDS; r++) {
		base[r] = SIZE / 1e6 / run_curl(cfg);
		if (dir) {
			tomem[r] = SIZE / 1e6 / run_curl(mcfg);
			ts_rmtree(dir); /* the files' memory goes back */
			if (mkdir(dir, 0700) < 0)
				bench_die(dir, "cannot create");
		}
		ours[r] = scan_ours(url, 0);
		small[r] = scan_ours(url, 64 * MiB);
	}
	unlink(cfg);
	unlink(mcfg);
	double o = bench_median(ours, ROUNDS), o2 = bench_median(small, ROUNDS), b = bench_median(base, ROUNDS);
	printf("client seq_scan_%zuM ours=%.0f baseline=%.0f ratio=%.2f\n", bs / MiB, o, b, o / b);
	printf("client seq_scan_%zuM_cache64M ours=%.0f baseline=%.0f ratio=%.2f\n", bs / MiB, o2, b, o2 / b);
	if (dir) {
		double m = bench_median(tomem, ROUNDS);
		printf("client seq_scan_%zuM_vs_curl_to_memory ours=%.0f baseline=%.0f ratio=%.2f\n",
		       bs / MiB, o, m, o / m);
		rmdir(dir);
	} else {
		fprintf(stderr, "bench_client: /dev/shm is not a tmpfs: no seq_scan_%zuM_vs_curl_to_memory\n",
			bs / MiB);
	}
	fflush(stdout);
}

/* ---- (2) random single-block reads ---------------------------------------------- */

struct sink {
	size_t got;
	char *mem; /* NULL: discard */
	size_t cap;
};

/* Counts the body, and copies it into k->mem when there is one. */
static size_t take_body(char *p, size_t size, size_t n, void *arg)
{
	struct sink *k = arg;

	if (k->mem) {
		if (size * n > k->cap - k->got)
			return 0; /* more than a block: fails the GET */
		memcpy(k->mem + k->got, p, size * n);
	}
	k->got += size * n;
	return size * n;
}

/* One GET of burl with curl c; returns ms.  With keep, the bytes go to
 * fresh memory, mapped for the GET and kept (*keep; the caller unmaps
 * bs + 2 MiB from there): what a program that reads blocks into new memory
 * and keeps them does.  Huge pages (cheaper to allocate) are asked for
 * where the block can use them. */
static double get_block(CURL *c, const char *burl, size_t bs, char **keep)
{
	const size_t huge = 2 * MiB;
	struct sink k = { 0 };

	curl_easy_setopt(c, CURLOPT_URL, burl);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, take_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &k);
	double t0 = bench_now();
	if (keep) {
		*keep = mmap(NULL, bs + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (*keep == MAP_FAILED)
			bench_die("mmap", "failed");
		k.mem = (char *)(((uintptr_t)*keep + huge - 1) & ~(uintptr_t)(huge - 1));
		k.cap = bs;
		if (bs >= huge)
			(void)madvise(k.mem, bs, MADV_HUGEPAGE);
	}
	if (curl_easy_perform(c) != CURLE_OK || k.got != bs)
		bench_die(burl, "GET failed");
	return (bench_now() - t0) * 1e3;
}

static void bench_random_read(struct ts_server *s, const char *ds_path, size_t bs)
{
	size_t nblk = SIZE / bs, blocks[NRANDOM];
	double ours[NRANDOM * ROUNDS], full[NRANDOM * ROUNDS], base[NRANDOM * ROUNDS];
	double tomem[NRANDOM * ROUNDS];
	char url[512];
	int no = 0, nf = 0, nb = 0, nm = 0;

	tc_url(url, sizeof(url), s, ds_path);
	json_t *keys = tc_block_keys(url); /* every block is stored */
	CURL *c = curl_easy_init();
	for (int r = 0; r < ROUNDS; r++) {
		bench_pick_blocks(nblk, blocks, NRANDOM, (unsigned)(r + 1));
		/* Ours: a fresh handle, one byte of each block. */
		bm_dataset *ds = bench_open(url, CACHE);
		bm_mapping *m;
		void *addr;
		volatile unsigned char sink = 0;
		if (bm_map(ds, 0, 0, &addr, &m) < 0)
			bench_die(url, bm_last_error(ds));
		for (int i = 0; i < NRANDOM; i++) {
			double t0 = bench_now();
			sink ^= ((unsigned char *)addr)[blocks[i] * bs + 4096];
			ours[no++] = (bench_now() - t0) * 1e3;
		}
		bm_unmap(m);
		bm_close(ds);
		/* Ours with a full cache (the steady state of a dataset larger
		 * than its cache): each miss reuses a reclaimed slot.  The cache
		 * holds 8 blocks; 8 blocks not in the sample fill it first. */
		ds = bench_open(url, 8 * bs);
		if (bm_map(ds, 0, 0, &addr, &m) < 0)
			bench_die(url, bm_last_error(ds));
		for (size_t b = 0, filled = 0; b < nblk && filled < 8; b += 2) {
			int picked = 0;
			for (int i = 0; i < NRANDOM; i++)
				picked |= blocks[i] == b;
			if (!picked) {
				sink ^= ((unsigned char *)addr)[b * bs];
				filled++;
			}
		}
		for (int i = 0; i < NRANDOM; i++) {
			double t0 = bench_now();
			sink ^= ((unsigned char *)addr)[blocks[i] * bs + 4096];
			full[nf++] = (bench_now() - t0) * 1e3;
		}
		(void)sink;
		bm_unmap(m);
		bm_close(ds);
		/* Baselines: libcurl GETs of the same objects, connection
		 * kept, discarding the bytes and then keeping them in fresh
		 * memory (each loop back to back, as ours ran). */
		char *kept[NRANDOM];
		for (int tm = 0; tm < 2; tm++) {
			for (int i = 0; i < NRANDOM; i++) {
				char burl[1024];
				snprintf(burl, sizeof(burl), "%s/%s", url,
					 json_string_value(json_array_get(keys, blocks[i])));
				if (tm)
					tomem[nm++] = get_block(c, burl, bs, &kept[i]);
				else
					base[nb++] = get_block(c, burl, bs, NULL);
			}
		}
		for (int i = 0; i < NRANDOM; i++)
			munmap(kept[i], bs + 2 * MiB);
	}
	curl_easy_cleanup(c);
	json_decref(keys);
	double o = bench_median(ours, no), b = bench_median(base, nb);
	double o2 = bench_median(full, nf);
	printf("client random_read_%zuM ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, o, b, o / b);
	printf("client random_read_%zuM_cachefull ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, o2, b, o2 / b);
	double m = bench_median(tomem, nm);
	printf("client random_read_%zuM_vs_get_to_memory ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, o, m,
	       o / m);
	fflush(stdout);
}

/* ---- (3) commit of 64 dirty blocks ------------------------------------------------- */

static double commit_ours(const char *url, size_t bs, int round, unsigned char *copy)
{
	bm_dataset *ds = bench_open(url, CACHE);
	bm_mapping *m;
	void *addr;
	uint64_t gen;

	if (bm_map(ds, 0, 64 * bs, &addr, &m) < 0)
		bench_die(url, bm_last_error(ds));
	/* Load and dirty 64 blocks (not timed); each round's bytes are new. */
	for (size_t b = 0; b < 64; b++) {
		((unsigned char *)addr)[b * bs + 1] = (unsigned char)(round + 1);
		((unsigned char *)addr)[b * bs + 2] = (unsigned char)b;
	}
	memcpy(copy, addr, 64 * bs);
	double t0 = bench_now();
	if (bm_commit(ds, &gen) < 0)
		bench_die(url, bm_last_error(ds));
	double t = bench_now() - t0;
	bm_unmap(m);
	bm_close(ds);
	return 64.0 * bs / 1e6 / t;
}

/* curl PUTs the same 64 blocks (from files) to fresh keys. */
static double commit_curl(struct ts_server *s, size_t bs, int round, const unsigned char *copy)
{
	char dir[] = "/tmp/blkmap-bench-put.XXXXXX", cfg[4200], file[4200];
	FILE *f;

	if (mkdtemp(dir) == NULL)
		bench_die("mkdtemp", "failed");
	snprintf(cfg, sizeof(cfg), "%s/curl.cfg", dir);
	f = fopen(cfg, "w");
	for (size_t b = 0; b < 64; b++) {
		snprintf(file, sizeof(file), "%s/%zu", dir, b);
		FILE *bf = fopen(file, "wb");
		if (bf == NULL || fwrite(copy + b * bs, 1, bs, bf) != bs)
			bench_die(file, "cannot write");
		fclose(bf);
		fprintf(f, "url = \"%s/curlput/%zu/%d/%zu\"\nupload-file = \"%s\"\noutput = \"/dev/null\"\n",
			s->url, bs, round, b, file);
	}
	fclose(f);
	double t = run_curl(cfg);
	ts_rmtree(dir);
	return 64.0 * bs / 1e6 / t;
}

static void bench_commit64(struct ts_server *s, const char *ds_path, size_t bs)
{
	double ours[ROUNDS], base[ROUNDS];
	unsigned char *copy = malloc(64 * bs);
	char url[512];

	tc_url(url, sizeof(url), s, ds_path);
	for (int r = 0; r < ROUNDS; r++) {
		ours[r] = commit_ours(url, bs, r, copy);
		base[r] = commit_curl(s, bs, r, copy);
		if (getenv("BENCH_VERBOSE")) /* the rounds behind the medians */
			fprintf(stderr, "commit64_%zuM round %d: ours %.0f curl %.0f MB/s\n", bs / MiB, r,
				ours[r], base[r]);
	}
	free(copy);
	double o = bench_median(ours, ROUNDS), b = bench_median(base, ROUNDS);
	printf("client commit64_%zuM ours=%.0f baseline=%.0f ratio=%.2f\n", bs / MiB, o, b, o / b);
	fflush(stdout);
}

int main(void)
{
	static const size_t sizes[] = { 1 * MiB, 4 * MiB };
	struct ts_server s;
	const char *args[] = { "--memory", "--max-body-bytes", "1073741824", NULL };
	unsigned char *data = ts_pattern(SIZE, 77);

	if (ts_start(&s, args) < 0)
		bench_die(ts_server_path(), "cannot start");
	for (size_t i = 0; i < 2; i++) {
		char path[64], url[512];
		snprintf(path, sizeof(path), "/bench%zuM", sizes[i] / MiB);
		make_dataset(tc_url(url, sizeof(url), &s, path), sizes[i], data);
		/* BENCH_ONLY=seq_scan|random_read|commit64 runs one of them. */
		const char *only = getenv("BENCH_ONLY");
		if (!only || strcmp(only, "seq_scan") == 0)
			bench_seq_scan(&s, path, sizes[i]);
		if (!only || strcmp(only, "random_read") == 0)
			bench_random_read(&s, path, sizes[i]);
		if (!only || strcmp(only, "commit64") == 0)
			bench_commit64(&s, path, sizes[i]);
	}
	free(data);
	return ts_stop(&s) == 0 ? 0 : 1;
}
