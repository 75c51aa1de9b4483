/* tests/test_client_reads.c — bm_reads: many block reads in flight at
 * once from one thread (what `blkmap sum` streams a dataset with), on
 * blkmap-server.  They go out together from a process that can make no
 * thread; each is checked, retried and reported like bm_read's (a block
 * in the middle that keeps failing fails alone, with one line naming it);
 * holes read as zeros without a request; the handle never holds all of
 * the dataset's connections.
 */
#include "config.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client_util.h"

#define BS 65536

/* Reads blocks [0, nblk) of ds with at most max in flight into out
 * (nblk * BS bytes); each block's result into rc[blk].  The number of
 * reads that ended in error. */
static int read_all(bm_dataset *ds, int max, uint64_t nblk, unsigned char *out, int *rc)
{
	bm_reads *r;
	uint64_t next = 0;
	int bad = 0, err = bm_reads_new(ds, max, &r);

	if (err < 0)
		return -1000 + err;
	for (;;) {
		while (next < nblk) {
			int s = bm_reads_start(r, next, out + next * BS, (void *)(uintptr_t)next);
			if (s == BM_EBUSY)
				break;
			if (s < 0) {
				rc[next] = s;
				bad++;
			}
			next++;
		}
		void *tag;
		int w = bm_reads_wait(r, &tag);
		if (w == 1) {
			if (next >= nblk)
				break;
			continue;
		}
		rc[(uintptr_t)tag] = w;
		bad += w < 0;
	}
	bm_reads_free(r);
	return bad;
}

/* For tc_child: makes every new thread of this process fail (clone3 as
 * if absent, clone of a thread with EAGAIN), then opens the dataset at
 * arg and reads its 40 blocks with 16 in flight: 0 when all read as
 * ts_pattern(40 * BS, 81); 1 no filter, 2 open, 3 a read, 4 other bytes. */
static int read_with_no_thread_allowed(void *arg)
{
	/* args[0]'s low 32 bits, where CLONE_THREAD is: first on a
	 * little-endian machine. */
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	struct bm_options o;
	bm_dataset *ds;
	int rc[40];

	/* The SIGSEGV engine: no fault handler thread with the handle. */
	setenv("VIRTMEM_ENGINE", "sigsegv", 1);
	if (tc_child_options(&o) < 0)
		return 2;
	o.connections = 32;
	unsigned char *want = ts_pattern(40 * BS, 81), *got = malloc(40 * BS);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		perror("seccomp");
		return 1;
	}
	if (bm_open(&ds, arg, &o) < 0) {
		fprintf(stderr, "%s\n", bm_last_error(NULL));
		return 2;
	}
	int bad = read_all(ds, 16, 40, got, rc);
	if (bad != 0) {
		fprintf(stderr, "%d reads failed: %s\n", bad, bm_last_error(ds));
		return 3;
	}
	int same = memcmp(got, want, 40 * BS) == 0;
	bm_close(ds);
	free(want);
	free(got);
	return same ? 0 : 4;
}

/* Answers 100 ms late: in a process that can make no thread, the reads
 * still reach the server 16 at once (the server's peak in flight), and
 * each block is read right. */
static void reads_go_out_together_from_a_process_that_can_make_no_thread(void **state)
{
	struct ts_server *s = *state;
	unsigned char *data = ts_pattern(40 * BS, 81);
	char url[512], *err = NULL;

	tc_url(url, sizeof(url), s, "/reads/nothread");
	tc_put(url, BS, data, 40 * BS);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 100}"), 200);
	(void)tc_server_stat(s, "requests_in_flight_max", NULL); /* a new period */
	int status = tc_child(read_with_no_thread_allowed, url, &err);
	long peak = tc_server_stat(s, "requests_in_flight_max", NULL);
	assert_int_equal(ts_set_faults(s, "{\"fault-latency-ms\": 0}"), 200);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("reads in a process with no new thread: status %#x: %s", status, err ? err : "");
	if (peak != 16)
		fail_msg("%ld requests in flight at most, 16 expected", peak);
	free(err);
	free(data);
}

/* A third of the GETs answered 503 and a sixth cut mid-answer: every
 * read is retried to the right bytes (the server saw more GETs than
 * blocks).  Then block 17's object holds other bytes: that read alone
 * fails, BM_ECHECKSUM after its tries, with one line naming block 17,
 * and every other block still reads right. */
static void a_failing_block_in_the_middle_is_retried_then_fails_alone_with_one_line(void **state)
{
	struct ts_server *s = *state;
	const uint64_t nblk = 40;
	unsigned char *data = ts_pattern(nblk * BS, 82), *got = malloc(nblk * BS);
	char url[512], key[256], bkey[128];
	struct bm_options o;
	int rc[40];
	bm_dataset *ds;

	tc_url(url, sizeof(url), s, "/reads/faults");
	tc_put(url, BS, data, nblk * BS);
	tc_options(&o);
	o.retries = 30;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	long gets = tc_server_stat(s, "requests", "GET");
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0.33, \"fault-drop-rate\": 0.17, "
					  "\"fault-method\": \"GET\", \"fault-seed\": 9}"), 200);
	memset(rc, 1, sizeof(rc));
	int bad = read_all(ds, 8, nblk, got, rc);
	assert_int_equal(ts_set_faults(s, "{\"fault-error-rate\": 0, \"fault-drop-rate\": 0}"), 200);
	if (bad != 0)
		fail_msg("%d reads failed through retries: %s", bad, bm_last_error(ds));
	assert_memory_equal(got, data, nblk * BS);
	assert_true(tc_server_stat(s, "requests", "GET") - gets > (long)nblk);
	bm_close(ds);

	/* Block 17: other bytes of the same length. */
	snprintf(key, sizeof(key), "/reads/faults/%s", tc_block_key(url, 17, bkey, sizeof(bkey)));
	unsigned char *other = ts_pattern(BS, 83);
	assert_true(ts_put(s, key, other, BS) / 100 == 2);
	free(other);
	o.retries = 2;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	memset(got, 0, nblk * BS);
	bad = read_all(ds, 8, nblk, got, rc);
	assert_int_equal(bad, 1);
	assert_int_equal(rc[17], BM_ECHECKSUM);
	const char *msg = bm_last_error(ds);
	if (strchr(msg, '\n') || !strstr(msg, "block 17") || !strstr(msg, "checksum mismatch") ||
	    !strstr(msg, "after 3 tries"))
		fail_msg("the failed read says \"%s\": one line naming block 17's mismatch after 3 tries expected", msg);
	for (uint64_t b = 0; b < nblk; b++) {
		if (b == 17)
			continue;
		assert_int_equal(rc[b], 0);
		assert_memory_equal(got + b * BS, data + b * BS, BS);
	}
	bm_close(ds);
	free(got);
	free(data);
}

/* Blocks 3-5 all zeros (stored as holes) and the last one short: they
 * read as zeros (past the end too) without a GET; the others with one
 * each.  A block past the last is BM_EINVAL; a bound of one connection
 * has no bm_reads (its index pages need one). */
static void holes_read_as_zeros_without_a_request(void **state)
{
	struct ts_server *s = *state;
	const size_t size = 9 * BS + 100;
	unsigned char *data = ts_pattern(size, 84), *got = malloc(10 * BS);
	char url[512];
	int rc[10];
	bm_dataset *ds;
	bm_reads *r;
	struct bm_options o;

	memset(data + 3 * BS, 0, 3 * BS);
	tc_url(url, sizeof(url), s, "/reads/holes");
	tc_put(url, BS, data, size);
	ds = tc_open(url, 0);
	char sum[64];
	assert_int_equal(bm_block_sum(ds, 9, sum, sizeof(sum)), 1); /* its index page, loaded */
	memset(got, 0xee, 10 * BS);
	long gets = tc_server_stat(s, "requests", "GET");
	assert_int_equal(read_all(ds, 4, 10, got, rc), 0);
	assert_int_equal(tc_server_stat(s, "requests", "GET") - gets, 7);
	assert_memory_equal(got, data, size);
	for (size_t i = size; i < 10 * BS; i++)
		if (got[i] != 0)
			fail_msg("byte %zu past the end: %#x, 0 expected", i, got[i]);
	assert_int_equal(bm_reads_new(ds, 4, &r), 0);
	assert_int_equal(bm_reads_start(r, 10, got, NULL), BM_EINVAL);
	bm_reads_free(r);
	bm_close(ds);
	tc_options(&o);
	o.connections = 1;
	assert_int_equal(bm_open(&ds, url, &o), 0);
	assert_int_equal(bm_reads_new(ds, 4, &r), BM_EINVAL);
	assert_null(r);
	bm_close(ds);
	free(got);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reads_go_out_together_from_a_process_that_can_make_no_thread),
		cmocka_unit_test(a_failing_block_in_the_middle_is_retried_then_fails_alone_with_one_line),
		cmocka_unit_test(holes_read_as_zeros_without_a_request),
	};
	return cmocka_run_group_tests(tests, tc_group_setup, tc_group_teardown);
}
