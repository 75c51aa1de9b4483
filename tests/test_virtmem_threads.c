/* test_virtmem_threads.c — concurrent faults: 8 threads faulting the same
 * and different blocks load each block exactly once, and loads of different
 * blocks run in parallel (the lock is released during loadblk).  The uffd
 * engine's handler threads: they sleep once faults stop, their polling
 * setting (VIRTMEM_UFFD_SPIN_US; its parse, vm_poll_us_env, libblkmap's
 * BLKMAP_MISS_POLL_US's too) is checked, they follow the faulting
 * thread to its CPU (VIRTMEM_UFFD_FOLLOW), and with VIRTMEM_UFFD_AWAKE=1
 * their loads keep a CPU awake with the idle-priority vm-awake thread.
 */
#include "config.h"

#include <dirent.h>
#include <sched.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>
#include <cmocka.h>

#include "vmtest.h"

#define NTHREAD 8
#define NBLK 64
#define BS (64 << 10)
#define WRITTEN(b) (~PATTERN(b, 1))

struct shared {
	struct memfile *m;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	pthread_barrier_t start;
	atomic_int bad;
};

struct worker {
	struct shared *s;
	int id;
	int mode; /* 0: all read block 5; 1: each its own block; 2: all blocks */
};

static int check_block(struct shared *s, vm_blk_t b)
{
	const uint64_t *w = vm_vma_blk_addr(s->vma, b);
	for (size_t i = 0; i < BS / 8; i += 512)
		if (w[i] != PATTERN(b, i))
			return 1;
	return 0;
}

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct shared *s = w->s;

	pthread_barrier_wait(&s->start);
	if (w->mode == 0) {
		s->bad += check_block(s, 5);
	} else if (w->mode == 1) {
		s->bad += check_block(s, (vm_blk_t)w->id);
	} else {
		/* Every thread walks all blocks from its own starting point,
		 * the odd-numbered threads writing word 1 (not checked by
		 * check_block) of odd blocks. */
		for (int k = 0; k < NBLK; k++) {
			vm_blk_t b = (vm_blk_t)((k + w->id * 7) % NBLK);
			s->bad += check_block(s, b);
			if (w->id % 2 == 1 && b % 2 == 1)
				/* Several threads store the same value: atomic,
				 * so that the test itself has no data race. */
				__atomic_store_n((uint64_t *)vm_vma_blk_addr(s->vma, b) + 1, WRITTEN(b),
						 __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

/* ops: the backend's, or NULL for the memfile's. */
static struct shared *shared_open_ops(unsigned delay_us, const vm_bigfile_ops *ops)
{
	struct shared *s = calloc(1, sizeof(*s));
	s->m = memfile_new(BS, NBLK, 0);
	s->m->load_delay_us = delay_us;
	if (ops != NULL)
		s->m->file.ops = ops;
	assert_int_equal(vm_ram_open(&s->ram, NBLK * BS), 0);
	assert_int_equal(vm_fileh_open(&s->fh, &s->m->file, s->ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&s->vma, s->fh, 0, NBLK), 0);
	pthread_barrier_init(&s->start, NULL, NTHREAD);
	return s;
}

static struct shared *shared_open(unsigned delay_us)
{
	return shared_open_ops(delay_us, NULL);
}

static void shared_close(struct shared *s)
{
	vm_vma_unmap(s->vma);
	vm_fileh_close(s->fh);
	assert_int_equal(vm_ram_close(s->ram), 0);
	pthread_barrier_destroy(&s->start);
	memfile_free(s->m);
	free(s);
}

static void run_workers(struct shared *s, int mode)
{
	pthread_t t[NTHREAD];
	struct worker w[NTHREAD];
	for (int i = 0; i < NTHREAD; i++) {
		w[i] = (struct worker){ s, i, mode };
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (int i = 0; i < NTHREAD; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(s->bad, 0);
}

static void test_threads_faulting_one_block_load_it_once(void **unused)
{
	struct shared *s = shared_open(20000);
	run_workers(s, 0);
	assert_int_equal(s->m->loads[5], 1);
	assert_int_equal(s->m->nload_total, 1);
	shared_close(s);
}

static void test_threads_faulting_different_blocks_load_each_once(void **unused)
{
	struct shared *s = shared_open(2000);
	run_workers(s, 1);
	for (int b = 0; b < NTHREAD; b++)
		assert_int_equal(s->m->loads[b], 1);
	assert_int_equal(s->m->nload_total, NTHREAD);
	shared_close(s);
}

static void test_threads_reading_and_writing_all_blocks_load_each_once(void **unused)
{
	struct shared *s = shared_open(200);
	run_workers(s, 2);
	for (int b = 0; b < NBLK; b++) {
		const uint64_t *w = vm_vma_blk_addr(s->vma, (vm_blk_t)b);
		assert_int_equal(s->m->loads[b], 1);
		/* Odd blocks were written (and not loaded again for it). */
		assert_true(w[1] == (b % 2 ? WRITTEN(b) : PATTERN(b, 1)));
		assert_int_equal(vm_fileh_page_state(s->fh, (vm_blk_t)b),
				 b % 2 ? VM_PAGE_DIRTY : VM_PAGE_LOADED);
	}
	shared_close(s);
}

/* Rendezvous inside loadblk: each load waits (up to 30 s) until rv_need
 * loads run at the same time.  If loads were serialized (or, under the uffd
 * engine, served by fewer handler threads than rv_need), the rendezvous
 * could never happen. */
static pthread_mutex_t rv_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rv_cv = PTHREAD_COND_INITIALIZER;
static int rv_arrived, rv_met, rv_need;

/* Under rv_mu: the loads run in handler threads under the uffd engine. */
static void rv_set_need(int need)
{
	pthread_mutex_lock(&rv_mu);
	rv_arrived = rv_met = 0;
	rv_need = need;
	pthread_mutex_unlock(&rv_mu);
}

static int rendezvous_loadblk(vm_bigfile *f, vm_blk_t blk, void *buf)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 30;
	pthread_mutex_lock(&rv_mu);
	rv_arrived++;
	pthread_cond_broadcast(&rv_cv);
	while (rv_arrived < rv_need &&
	       pthread_cond_timedwait(&rv_cv, &rv_mu, &deadline) == 0)
		;
	if (rv_arrived >= rv_need)
		rv_met++;
	pthread_mutex_unlock(&rv_mu);
	fill_pattern(buf, blk, f->blksize);
	return 0;
}

static void test_loads_of_different_blocks_run_in_parallel(void **unused)
{
	static const vm_bigfile_ops ops = { .loadblk = rendezvous_loadblk };
	vm_bigfile file = { .ops = &ops, .blksize = BS };
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;
	pthread_t t1, t2;

	rv_set_need(2);
	assert_int_equal(vm_ram_open(&ram, 4 * BS), 0);
	assert_int_equal(vm_fileh_open(&fh, &file, ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&vma, fh, 0, 4), 0);
	struct shared s = { .vma = vma };
	struct worker w1 = { &s, 1, 1 }, w2 = { &s, 2, 1 };
	pthread_barrier_init(&s.start, NULL, 2);
	pthread_create(&t1, NULL, worker_main, &w1);
	pthread_create(&t2, NULL, worker_main, &w2);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	pthread_barrier_destroy(&s.start);
	assert_int_equal(s.bad, 0);
	/* The loads ran in the faulting threads (SIGSEGV) or in handler
	 * threads (uffd): read what they counted under their lock. */
	pthread_mutex_lock(&rv_mu);
	int met = rv_met;
	pthread_mutex_unlock(&rv_mu);
	assert_int_equal(met, 2);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	vm_ram_close(ram);
}

/* NTHREAD slow loads at once, one per block: none waits for another to
 * end (under the uffd engine, handler threads are added while every one
 * is busy in a load). */
static void test_slow_loads_of_many_blocks_do_not_wait_for_each_other(void **unused)
{
	static const vm_bigfile_ops ops = { .loadblk = rendezvous_loadblk };
	struct shared *s = shared_open_ops(0, &ops);

	rv_set_need(NTHREAD);
	run_workers(s, 1);
	pthread_mutex_lock(&rv_mu);
	int met = rv_met;
	pthread_mutex_unlock(&rv_mu);
	assert_int_equal(met, NTHREAD);
	shared_close(s);
}

/* Writers, readers, reclaim and writeouts at once: every write reaches the
 * backend.  Each writer owns 4 blocks and writes increasing values to their
 * first word, while reading other blocks through a budget small enough to
 * force reclaim; a writeout thread stores and marks stored in a loop. */
#define NWRITER 4
#define OWN 4
#define ITER 400

struct stress {
	struct memfile *m;
	vm_fileh *fh;
	vm_vma *vma;
	atomic_int writers_left;
	atomic_int errors;
};

struct stress_writer {
	struct stress *s;
	int id;
};

static void *stress_writer_main(void *p)
{
	struct stress_writer *w = p;
	struct stress *s = w->s;
	unsigned seed = (unsigned)w->id;

	for (uint64_t it = 1; it <= ITER; it++) {
		for (int k = 0; k < OWN; k++) {
			vm_blk_t b = (vm_blk_t)(w->id * OWN + k);
			uint64_t *first = vm_vma_blk_addr(s->vma, b);
			if (it > 1 && *first != ((uint64_t)w->id << 32 | (it - 1)))
				s->errors++;
			*first = (uint64_t)w->id << 32 | it;
		}
		/* Read a block nobody writes. */
		vm_blk_t r = NWRITER * OWN + (vm_blk_t)(rand_r(&seed) % (NBLK - NWRITER * OWN));
		if (*(volatile uint64_t *)((uint64_t *)vm_vma_blk_addr(s->vma, r) + 3) != PATTERN(r, 3))
			s->errors++;
	}
	s->writers_left--;
	return NULL;
}

static void *stress_writeout_main(void *p)
{
	struct stress *s = p;
	while (s->writers_left > 0) {
		int rc = vm_fileh_dirty_writeout(s->fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED);
		if (rc != 0)
			s->errors++;
	}
	return NULL;
}

static void test_writes_survive_concurrent_reclaim_and_writeout(void **unused)
{
	struct stress s = { 0 };
	struct stress_writer w[NWRITER];
	pthread_t tw[NWRITER], two;
	vm_ram *ram;

	s.m = memfile_new(BS, NBLK, 0);
	assert_int_equal(vm_ram_open(&ram, (NWRITER * OWN + 6) * BS), 0);
	assert_int_equal(vm_fileh_open(&s.fh, &s.m->file, ram, 0), 0);
	assert_int_equal(vm_fileh_mmap(&s.vma, s.fh, 0, NBLK), 0);
	s.writers_left = NWRITER;
	for (int i = 0; i < NWRITER; i++) {
		w[i] = (struct stress_writer){ &s, i };
		pthread_create(&tw[i], NULL, stress_writer_main, &w[i]);
	}
	pthread_create(&two, NULL, stress_writeout_main, &s);
	for (int i = 0; i < NWRITER; i++)
		pthread_join(tw[i], NULL);
	pthread_join(two, NULL);
	assert_int_equal(vm_fileh_dirty_writeout(s.fh, VM_WRITEOUT_STORE | VM_WRITEOUT_MARKSTORED), 0);
	assert_int_equal(s.errors, 0);
	for (int i = 0; i < NWRITER; i++)
		for (int k = 0; k < OWN; k++)
			assert_true(memfile_blk(s.m, (vm_blk_t)(i * OWN + k))[0] ==
				    ((uint64_t)i << 32 | ITER));
	struct vm_fileh_stats st;
	vm_fileh_stats(s.fh, &st);
	assert_true(st.reclaimed > 0);
	assert_true(vm_ram_used(ram) <= (NWRITER * OWN + 6) * BS);
	vm_vma_unmap(s.vma);
	vm_fileh_close(s.fh);
	vm_ram_close(ram);
	memfile_free(s.m);
}

/* ---- the uffd engine's handler threads ----------------------------------------- */

/* The uffd engine's handler threads (named vm-uffd) in this process: how
 * many there are, and in *awake how many are not asleep. */
static int handler_threads(int *awake)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	*awake = 0;
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[512];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue; /* the thread ended */
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		/* "tid (comm) state ..." */
		char *name = strchr(buf, '('), *end = strrchr(buf, ')');
		if (name == NULL || end == NULL || end[1] != ' ' || end - name - 1 != 7 ||
		    memcmp(name + 1, "vm-uffd", 7) != 0)
			continue;
		n++;
		if (end[2] != 'S')
			(*awake)++;
	}
	closedir(d);
	return n;
}

#define NSEQ 2000

/* A handler thread polls the userfaultfd for a while after faults that
 * come close together (virtmem/uffd.c, read_msg), and sleeps once they
 * stop: after 2000 faults back to back, every handler thread is found
 * asleep (in microseconds; up to 10 s are allowed for a loaded machine). */
static void test_uffd_handler_threads_sleep_once_faults_stop(void **unused)
{
	struct memfile *m = memfile_new(4096, NSEQ, 0);
	int n = 0, awake = -1;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	assert_int_equal(vm_ram_open(&ram, (size_t)NSEQ * 4096), 0);
	assert_int_equal(vm_fileh_open(&fh, &m->file, ram, 0), 0);
	if (!fh_uffd(fh)) {
		vm_fileh_close(fh);
		vm_ram_close(ram);
		memfile_free(m);
		skip();
	}
	assert_int_equal(vm_fileh_mmap(&vma, fh, 0, NSEQ), 0);
	for (vm_blk_t b = 0; b < NSEQ; b++)
		assert_true(*(volatile uint64_t *)vm_vma_blk_addr(vma, b) == PATTERN(b, 0));
	for (int i = 0; i < 1000; i++) {
		n = handler_threads(&awake);
		if (n > 0 && awake == 0)
			break;
		usleep(10000);
	}
	assert_true(n >= 2); /* HANDLERS_MIN */
	assert_int_equal(awake, 0);
	vm_vma_unmap(vma);
	vm_fileh_close(fh);
	assert_int_equal(vm_ram_close(ram), 0);
	memfile_free(m);
}

struct spin_setting {
	const char *value;
	int errfd;
};

/* In a child: the setting in the environment, stderr to errfd, then
 * faults on 8 blocks of a uffd mapping; exits 0 when they read right. */
static void spin_setting_child(void *arg)
{
	struct spin_setting *c = arg;
	struct memfile *m = memfile_new(4096, 8, 0);
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	setenv("VIRTMEM_UFFD_SPIN_US", c->value, 1);
	dup2(c->errfd, STDERR_FILENO);
	if (vm_ram_open(&ram, 8 * 4096) < 0 || vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 8) < 0)
		_exit(90);
	for (vm_blk_t b = 0; b < 8; b++)
		if (*(volatile uint64_t *)vm_vma_blk_addr(vma, b) != PATTERN(b, 0))
			_exit(1);
	_exit(0);
}

/* Runs fn(arg) in a child (run_in_child) with *errfd a new memfd that fn
 * makes its stderr, asserts the child exited 0, and reads back what it
 * wrote there into buf (NUL-terminated, n - 1 bytes at most): its length. */
static size_t child_stderr(void (*fn)(void *), void *arg, int *errfd, char *buf, size_t n)
{
	*errfd = memfd_create("stderr", 0);
	assert_true(*errfd >= 0);
	int st = run_in_child(fn, arg);
	ssize_t len = pread(*errfd, buf, n - 1, 0);
	close(*errfd);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_true(len >= 0);
	buf[len] = '\0';
	return (size_t)len;
}

/* In a child bound to one CPU: vm_poll_us_env gives 0 for a good value
 * and for a bad one (which it still calls bad); exits 0 when it does. */
static void poll_us_on_one_cpu_child(void *arg)
{
	cpu_set_t one;
	unsigned us = 1;
	(void)arg;

	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
	if (sched_setaffinity(0, sizeof(one), &one) < 0)
		_exit(90);
	setenv("VM_TEST_POLL_US", "300", 1);
	if (vm_poll_us_env("VM_TEST_POLL_US", 50, &us) != 0 || us != 0)
		_exit(1);
	setenv("VM_TEST_POLL_US", "12x", 1);
	us = 1;
	if (vm_poll_us_env("VM_TEST_POLL_US", 50, &us) != -EINVAL || us != 0)
		_exit(2);
	_exit(0);
}

/* vm_poll_us_env, the one parse of VIRTMEM_UFFD_SPIN_US and
 * BLKMAP_MISS_POLL_US: a number of microseconds from 0 to 10000 is
 * taken, unset or empty is the default, anything else is -EINVAL with the
 * default; a process that may run on one CPU only polls never (0). */
static void test_poll_us_setting_takes_0_to_10000_and_is_0_on_one_cpu(void **unused)
{
	static const struct { const char *value; int rc; unsigned us; } cases[] = {
		{ NULL, 0, 50 }, { "", 0, 50 }, { "0", 0, 0 }, { "7", 0, 7 },
		{ "10000", 0, 10000 }, { "10001", -EINVAL, 50 }, { "12x", -EINVAL, 50 },
		{ "-1", -EINVAL, 50 }, { "99999999999999999999999", -EINVAL, 50 },
	};
	cpu_set_t cpus;
	(void)unused;

	assert_int_equal(sched_getaffinity(0, sizeof(cpus), &cpus), 0);
	bool one_cpu = CPU_COUNT(&cpus) < 2;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned us = 12345;
		if (cases[i].value)
			setenv("VM_TEST_POLL_US", cases[i].value, 1);
		else
			unsetenv("VM_TEST_POLL_US");
		assert_int_equal(vm_poll_us_env("VM_TEST_POLL_US", 50, &us), cases[i].rc);
		assert_int_equal(us, one_cpu ? 0 : cases[i].us);
	}
	unsetenv("VM_TEST_POLL_US");
	int st = run_in_child(poll_us_on_one_cpu_child, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* VIRTMEM_UFFD_SPIN_US, the longest poll of a handler thread: a value that
 * is not a number of microseconds from 0 to 10000 is named on one line of
 * stderr (and the default used); 0 turns polling off; faults are served
 * whatever the value.  The setting is read once per process: each value
 * is tried in a child, which sets up a userfaultfd of its own. */
static void test_uffd_spin_setting_is_checked_and_faults_are_served_with_any(void **unused)
{
	static const struct { const char *value; int bad; } cases[] = {
		{ "12x", 1 }, { "20000", 1 }, { "-1", 1 }, { "0", 0 }, { "50", 0 },
	};

	if (!test_engine_uffd())
		skip();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct spin_setting c = { cases[i].value, -1 };
		char buf[1024], want[64];
		size_t n = child_stderr(spin_setting_child, &c, &c.errfd, buf, sizeof(buf));
		snprintf(want, sizeof(want), "VIRTMEM_UFFD_SPIN_US=%s: not a number", cases[i].value);
		if (cases[i].bad) {
			assert_non_null(strstr(buf, want));
			assert_ptr_equal(strchr(buf, '\n'), buf + n - 1); /* one line */
		} else {
			assert_null(strstr(buf, "VIRTMEM_UFFD_SPIN_US"));
		}
	}
}

/* How many of this process's handler threads (named vm-uffd) may run on
 * CPU cpu only. */
static int handlers_bound_to(int cpu)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char path[300], name[32] = "";
		cpu_set_t set;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue; /* the thread ended */
		if (fgets(name, sizeof(name), f) == NULL)
			name[0] = '\0';
		fclose(f);
		if (strcmp(name, "vm-uffd\n") != 0 ||
		    sched_getaffinity((pid_t)atoi(e->d_name), sizeof(set), &set) < 0)
			continue;
		n += CPU_COUNT(&set) == 1 && CPU_ISSET(cpu, &set);
	}
	closedir(d);
	return n;
}

/* Binds the calling thread to CPU cpu. */
static int bind_to(int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	return sched_setaffinity(0, sizeof(one), &one);
}

/* Waits (up to 10 s: a loaded machine) until some handler thread is bound
 * to CPU cpu alone; returns whether one was. */
static bool some_handler_bound_to(int cpu)
{
	for (int i = 0; i < 1000; i++) {
		if (handlers_bound_to(cpu) > 0)
			return true;
		usleep(10000);
	}
	return false;
}

struct follow_case {
	const char *setting; /* VIRTMEM_UFFD_FOLLOW, or NULL */
	int cpu[2];          /* two CPUs the process may run on */
	int errfd;           /* the child's stderr */
};

/* In a child (a userfaultfd of its own, set up before this thread is bound,
 * so that the process may use both CPUs): faults a block bound to cpu[0],
 * then one bound to cpu[1].  Exits 0 when the handler threads were seen
 * following (setting NULL) or never bound to either CPU ("0"). */
static void follow_child(void *arg)
{
	struct follow_case *c = arg;
	struct memfile *m = memfile_new(4096, 4, 0);
	bool follows = c->setting == NULL || strcmp(c->setting, "0") != 0;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	dup2(c->errfd, STDERR_FILENO);
	if (c->setting != NULL)
		setenv("VIRTMEM_UFFD_FOLLOW", c->setting, 1);
	if (vm_ram_open(&ram, 4 * 4096) < 0 || vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 4) < 0)
		_exit(90);
	for (int i = 0; i < 2; i++) {
		if (bind_to(c->cpu[i]) < 0)
			_exit(91);
		usleep(2000); /* past FOLLOW_CHECK_NS (1 ms) since the last look */
		if (*(volatile uint64_t *)vm_vma_blk_addr(vma, (vm_blk_t)i) != PATTERN(i, 0))
			_exit(1);
		if (follows && !some_handler_bound_to(c->cpu[i]))
			_exit(2 + i);
	}
	if (!follows) {
		usleep(100000); /* time for a handler to bind itself, were it to */
		if (handlers_bound_to(c->cpu[0]) != 0 || handlers_bound_to(c->cpu[1]) != 0)
			_exit(4);
	}
	_exit(0);
}

/* A handler thread binds itself to the CPU of the thread whose fault it
 * served (virtmem/uffd.c, follow_thread): a thread faulting on one CPU,
 * then on another, is followed to each; with VIRTMEM_UFFD_FOLLOW=0 no
 * handler thread is ever bound to one CPU; a value other than 0 or 1 is
 * named on one line of stderr, and 1 is used. */
static void test_uffd_handler_threads_follow_the_faulting_thread_to_its_cpu(void **unused)
{
	struct follow_case c = { NULL, { -1, -1 }, -1 };
	cpu_set_t set;
	int n = 0;

	if (!test_engine_uffd())
		skip();
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; cpu++)
		if (CPU_ISSET(cpu, &set))
			c.cpu[n++] = cpu;
	if (n < 2)
		skip(); /* one CPU: nothing to follow */
	const char *settings[] = { NULL, "0", "1", "yes" };
	for (int i = 0; i < 4; i++) {
		char buf[1024];
		c.setting = settings[i];
		size_t len = child_stderr(follow_child, &c, &c.errfd, buf, sizeof(buf));
		if (i == 3) {
			assert_non_null(strstr(buf, "VIRTMEM_UFFD_FOLLOW=yes: not 0 or 1"));
			assert_ptr_equal(strchr(buf, '\n'), buf + len - 1); /* one line */
		} else {
			assert_null(strstr(buf, "VIRTMEM_UFFD_FOLLOW"));
		}
	}
}

/* The thread that keeps a CPU awake while a handler loads (virtmem/uffd.c,
 * awake_main), named vm-awake: its id, its state letter and how often it
 * went to sleep (voluntary context switches); 0 when there is none. */
static pid_t awake_thread(char *state, long *sleeps)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	pid_t tid = 0;

	if (d == NULL)
		return -1;
	while (tid == 0 && (e = readdir(d)) != NULL) {
		char path[300], line[256];
		bool named = false;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue; /* the thread ended */
		while (fgets(line, sizeof(line), f) != NULL) {
			if (strcmp(line, "Name:\tvm-awake\n") == 0)
				named = true;
			else if (named && strncmp(line, "State:\t", 7) == 0)
				*state = line[7];
			else if (named && sscanf(line, "voluntary_ctxt_switches: %ld", sleeps) == 1)
				tid = (pid_t)atoi(e->d_name);
		}
		fclose(f);
	}
	closedir(d);
	return tid;
}

/* Waits (up to 10 s: a loaded machine) until vm-awake sleeps; its sleeps
 * so far, or -1 if it never did. */
static long awake_sleeps_once_asleep(void)
{
	for (int i = 0; i < 1000; i++) {
		char state = '?';
		long sleeps = -1;
		if (awake_thread(&state, &sleeps) > 0 && state == 'S')
			return sleeps;
		usleep(10000);
	}
	return -1;
}

struct awake_case {
	const char *awake; /* VIRTMEM_UFFD_AWAKE, or NULL */
	const char *spin;  /* VIRTMEM_UFFD_SPIN_US, or NULL */
	bool runs;         /* vm-awake is expected */
	int errfd;         /* the child's stderr */
};

/* In a child (a userfaultfd of its own) with the case's settings: faults
 * 64 blocks, each a load by a handler thread.  Exits 0 when vm-awake runs
 * at SCHED_IDLE, was woken by the loads and sleeps again once they stop
 * (runs), or when there is no vm-awake (!runs). */
static void awake_child(void *arg)
{
	struct awake_case *c = arg;
	struct memfile *m = memfile_new(4096, 64, 0);
	long before, after;
	char state;
	vm_ram *ram;
	vm_fileh *fh;
	vm_vma *vma;

	dup2(c->errfd, STDERR_FILENO);
	if (c->awake != NULL)
		setenv("VIRTMEM_UFFD_AWAKE", c->awake, 1);
	if (c->spin != NULL)
		setenv("VIRTMEM_UFFD_SPIN_US", c->spin, 1);
	if (vm_ram_open(&ram, 64 * 4096) < 0 || vm_fileh_open(&fh, &m->file, ram, VM_ENGINE_UFFD) < 0 ||
	    vm_fileh_mmap(&vma, fh, 0, 64) < 0)
		_exit(90);
	if (!c->runs) {
		for (vm_blk_t b = 0; b < 64; b++)
			if (*(volatile uint64_t *)vm_vma_blk_addr(vma, b) != PATTERN(b, 0))
				_exit(1);
		_exit(awake_thread(&state, &before) == 0 ? 0 : 2);
	}
	pid_t tid = awake_thread(&state, &before);
	if (tid <= 0)
		_exit(3);
	if (sched_getscheduler(tid) != SCHED_IDLE)
		_exit(4);
	if ((before = awake_sleeps_once_asleep()) < 0)
		_exit(5);
	for (vm_blk_t b = 0; b < 64; b++)
		if (*(volatile uint64_t *)vm_vma_blk_addr(vma, b) != PATTERN(b, 0))
			_exit(1);
	if ((after = awake_sleeps_once_asleep()) < 0)
		_exit(6); /* still spinning 10 s after the last load */
	_exit(after > before ? 0 : 7); /* 7: the loads never woke it */
}

/* With VIRTMEM_UFFD_AWAKE=1, while a handler thread loads a block, a
 * thread of the uffd engine's, vm-awake, spins at SCHED_IDLE (the wake-ups
 * of a miss land on a CPU that is not halted: virtmem/uffd.c, awake_main).
 * It is woken by the loads and sleeps once they stop.  It does not exist
 * by default, nor with polling off (VIRTMEM_UFFD_SPIN_US=0); a value other
 * than 0 or 1 is named on one line of stderr, and 0 is used. */
static void test_uffd_awake_setting_starts_an_idle_priority_thread_that_loads_wake(void **unused)
{
	static const struct awake_case cases[] = {
		{ "1", NULL, true, -1 }, { NULL, NULL, false, -1 }, { "0", NULL, false, -1 },
		{ "1", "0", false, -1 }, { "yes", NULL, false, -1 },
	};
	cpu_set_t set;

	if (!test_engine_uffd())
		skip();
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	if (CPU_COUNT(&set) < 2)
		skip(); /* one CPU: nothing polls, nothing spins */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct awake_case c = cases[i];
		char buf[1024];
		size_t len = child_stderr(awake_child, &c, &c.errfd, buf, sizeof(buf));
		if (c.awake != NULL && strcmp(c.awake, "yes") == 0) {
			assert_non_null(strstr(buf, "VIRTMEM_UFFD_AWAKE=yes: not 0 or 1"));
			assert_ptr_equal(strchr(buf, '\n'), buf + len - 1); /* one line */
		} else {
			assert_null(strstr(buf, "VIRTMEM_UFFD_AWAKE"));
		}
	}
}

int main(void)
{
	test_engine_or_skip();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threads_faulting_one_block_load_it_once),
		cmocka_unit_test(test_threads_faulting_different_blocks_load_each_once),
		cmocka_unit_test(test_threads_reading_and_writing_all_blocks_load_each_once),
		cmocka_unit_test(test_loads_of_different_blocks_run_in_parallel),
		cmocka_unit_test(test_slow_loads_of_many_blocks_do_not_wait_for_each_other),
		cmocka_unit_test(test_writes_survive_concurrent_reclaim_and_writeout),
		cmocka_unit_test(test_uffd_handler_threads_sleep_once_faults_stop),
		cmocka_unit_test(test_poll_us_setting_takes_0_to_10000_and_is_0_on_one_cpu),
		cmocka_unit_test(test_uffd_spin_setting_is_checked_and_faults_are_served_with_any),
		cmocka_unit_test(test_uffd_handler_threads_follow_the_faulting_thread_to_its_cpu),
		cmocka_unit_test(test_uffd_awake_setting_starts_an_idle_priority_thread_that_loads_wake),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
