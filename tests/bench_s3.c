/* tests/bench_s3.c — libblkmap on s3:// against curl --aws-sigv4 on the
 * same block objects of a 64 MiB dataset in the RADOS Gateway that
 * tests/rgw.sh starts (loopback, memstore), for 1 MiB and 4 MiB blocks, in
 * the same run (`make bench`):
 *   seq_scan    a scan through a mapping (fresh handle, the whole dataset
 *               fits the cache) vs curl --parallel (8) --aws-sigv4 GETs of
 *               every block to /dev/null, MB/s
 *   random_read one fault on a not-yet-loaded block vs one libcurl GET
 *               signed by libcurl (SigV4) of one block on a kept-alive
 *               connection, median ms (30 blocks a round, or half of them)
 *   random_read_cpu  the CPU time (getrusage, every thread of this
 *               process: RGW's own is not counted) per block of the same
 *               two loops, ms: what the client costs, whatever the load
 *   random_get  the S3 store layer alone (client/store.h: bm_store_get of
 *               the same blocks into one reused buffer, checksum verified:
 *               no fault, no fresh memory) vs the same libcurl GETs, ms
 * Each figure is the median of ROUNDS runs.  One line per figure:
 *   s3 <name>_<bs> ours=<x> baseline=<y> ratio=<r>
 * Without radosgw it says so and exits 0 (nothing to compare).
 * Not a test: nothing here asserts a time.
 */
#include "config.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "bench_util.h"
#include "client_util.h"
#include "rgw_util.h"
#include "../client/store.h"

#define MiB ((size_t)1 << 20)
#define SIZE (64 * MiB)
#define ROUNDS 3
#define NRANDOM 30

static struct tr_rgw rgw;

/* CPU seconds used by every thread of this process so far. */
static double cpu_now(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* bm_store_get's sink: the body into one reused buffer. */
static int buf_sink(void *arg, uint64_t off, const void *data, size_t len)
{
	memcpy((char *)arg + off, data, len);
	return 0;
}

static void make_dataset(const char *url, size_t bs, const unsigned char *data)
{
	struct bm_options o;
	bm_dataset *ds;

	bm_options_init(&o);
	o.flags = BM_OPEN_CREATE;
	o.blksize = bs;
	o.wcfs = "off";
	if (bm_open(&ds, url, &o) < 0)
		bench_die(url, bm_last_error(NULL));
	if (bm_resize(ds, SIZE) < 0 || bm_write(ds, 0, data, SIZE) < 0 || bm_commit(ds, NULL) < 0)
		bench_die(url, bm_last_error(ds));
	bm_close(ds);
}

static double curl_scan(const char *bucket, json_t *keys)
{
	char cfg[] = "/tmp/blkmap-bench-s3.XXXXXX";
	FILE *f;
	json_t *k;
	size_t i;
	int fd = mkstemp(cfg), status;

	if (fd < 0 || (f = fdopen(fd, "w")) == NULL)
		bench_die(cfg, "cannot write the curl config");
	fprintf(f, "aws-sigv4 = \"aws:amz:us-east-1:s3\"\nuser = \"%s:%s\"\n"
		"header = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\"\n",
		rgw.access_key, rgw.secret_key);
	json_array_foreach(keys, i, k)
		fprintf(f, "url = \"%s/%s/ds/%s\"\noutput = \"/dev/null\"\n", rgw.endpoint, bucket,
			json_string_value(k));
	fclose(f);
	double t0 = bench_now();
	pid_t pid = fork();
	if (pid == 0) {
		execlp("curl", "curl", "--silent", "--show-error", "--no-progress-meter", "--fail", "--parallel", "--parallel-max",
		       "8", "--config", cfg, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &status, 0);
	double t = bench_now() - t0;
	unlink(cfg);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		bench_die("curl", "failed");
	return t;
}

static double scan_ours(const char *url)
{
	return bench_scan(bench_open(url, 1024 * MiB), url, SIZE);
}

static size_t count_body(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	*(size_t *)arg += size * n;
	return size * n;
}

static void bench(size_t bs, const unsigned char *data)
{
	char bucket[128], url[256], userpwd[256];
	double ours[ROUNDS], base[ROUNDS], rours[NRANDOM * ROUNDS], rbase[NRANDOM * ROUNDS];
	double rstore[NRANDOM * ROUNDS], cpu_ours = 0, cpu_base = 0;
	int ns = 0;
	size_t nblk = SIZE / bs, blocks[NRANDOM];
	int no = 0, nb = 0, npick = (int)(nblk / 2 < NRANDOM ? nblk / 2 : NRANDOM);
	json_t *keys;
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");

	snprintf(bucket, sizeof(bucket), "bench-%zum-%ld", bs / MiB, (long)getpid());
	snprintf(url, sizeof(url), "/%s", bucket);
	struct tr_resp r;
	tr_s3(&rgw, "PUT", url, NULL, "", 0, &r);
	if (r.status != 200)
		bench_die(url, r.body);
	tr_resp_free(&r);
	snprintf(url, sizeof(url), "s3://%s/ds", bucket);
	make_dataset(url, bs, data);
	keys = tc_block_keys(url);
	if (json_array_size(keys) != nblk)
		bench_die(url, "unexpected number of blocks");

	for (int round = 0; round < ROUNDS; round++) {
		base[round] = SIZE / 1e6 / curl_scan(bucket, keys);
		ours[round] = SIZE / 1e6 / scan_ours(url);
	}
	double o = bench_median(ours, ROUNDS), b = bench_median(base, ROUNDS);
	printf("s3 seq_scan_%zuM ours=%.0f baseline=%.0f ratio=%.2f\n", bs / MiB, o, b, o / b);
	fflush(stdout);

	snprintf(userpwd, sizeof(userpwd), "%s:%s", rgw.access_key, rgw.secret_key);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
	curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, count_body);
	for (int round = 0; round < ROUNDS; round++) {
		bm_dataset *ds = bench_open(url, 1024 * MiB);
		bm_mapping *m;
		void *addr;
		volatile unsigned char sink = 0;

		bench_pick_blocks(nblk, blocks, npick, (unsigned)(round + 1));
		if (bm_map(ds, 0, 0, &addr, &m) < 0)
			bench_die(url, bm_last_error(ds));
		double c0 = cpu_now();
		for (int i = 0; i < npick; i++) {
			double t0 = bench_now();
			sink ^= ((unsigned char *)addr)[blocks[i] * bs + 4096];
			rours[no++] = (bench_now() - t0) * 1e3;
		}
		cpu_ours += cpu_now() - c0;
		(void)sink;
		bm_unmap(m);
		bm_close(ds);
		c0 = cpu_now();
		for (int i = 0; i < npick; i++) {
			char burl[512];
			size_t got = 0;
			snprintf(burl, sizeof(burl), "%s/%s/ds/%s", rgw.endpoint, bucket,
				 json_string_value(json_array_get(keys, blocks[i])));
			curl_easy_setopt(c, CURLOPT_URL, burl);
			curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
			double t0 = bench_now();
			if (curl_easy_perform(c) != CURLE_OK || got != bs)
				bench_die(burl, "GET failed");
			rbase[nb++] = (bench_now() - t0) * 1e3;
		}
		cpu_base += cpu_now() - c0;
		/* The store layer alone, on other blocks of the same kind. */
		struct bm_store_opts so = { .connect_timeout_ms = 10000, .timeout_ms = 60000,
					    .retry_base_ms = 10, .retries = 3, .connections = 1 };
		struct bm_store *st;
		char msg[512], *buf = malloc(bs);
		if (buf == NULL || bm_store_open(&st, url, &so, msg, sizeof(msg)) < 0)
			bench_die(url, buf ? msg : "out of memory");
		bench_pick_blocks(nblk, blocks, npick, (unsigned)(round + 101));
		for (int i = -1; i < npick; i++) { /* -1: opens the connection */
			const char *key = json_string_value(json_array_get(keys, blocks[i < 0 ? 0 : i]));
			struct bm_get g = { .max = bs, .exact = true, .sink = buf_sink, .sink_arg = buf };
			double t0 = bench_now();
			if (bm_store_get(st, key, &g, msg, sizeof(msg)) < 0)
				bench_die(key, msg);
			char sum[BM_SUM_HEX + 1];
			bm_sum_hex(buf, bs, sum);
			if (i >= 0)
				rstore[ns++] = (bench_now() - t0) * 1e3;
		}
		bm_store_close(st);
		free(buf);
	}
	o = bench_median(rours, no);
	b = bench_median(rbase, nb);
	printf("s3 random_read_%zuM ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, o, b, o / b);
	printf("s3 random_read_cpu_%zuM ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, cpu_ours * 1e3 / no,
	       cpu_base * 1e3 / nb, (cpu_ours / no) / (cpu_base / nb));
	o = bench_median(rstore, ns);
	printf("s3 random_get_%zuM ours=%.3f baseline=%.3f ratio=%.2f\n", bs / MiB, o, b, o / b);
	fflush(stdout);
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	json_decref(keys);
}

int main(void)
{
	char why[1024];
	int rc = tr_rgw_get(&rgw, why, sizeof(why));
	unsigned char *data = malloc(SIZE);

	if (rc != 0) {
		fprintf(stderr, "bench_s3: no RADOS Gateway: %s\n", why);
		return rc == 77 ? 0 : 1;
	}
	if (data == NULL)
		bench_die("malloc", "out of memory");
	for (size_t i = 0; i < SIZE; i += 8) {
		uint64_t x = i * 0x9e3779b97f4a7c15ull;
		memcpy(data + i, &x, 8);
	}
	tr_rgw_setenv(&rgw);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	bench(1 * MiB, data);
	bench(4 * MiB, data);
	free(data);
	return 0;
}
