/* test_pagetab.c — the page table (block -> page hash) keeps every entry
 * findable through growth and backward-shift deletion.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "../virtmem/internal.h"

#define N 5000

static void test_pagetab_finds_all_after_puts_and_deletes(void **unused)
{
	struct vm_pagetab t;
	static struct vm_page pages[N];
	pagetab_init(&t);
	assert_null(pagetab_get(&t, 1));
	srand(7);
	for (size_t i = 0; i < N; i++) {
		/* Clustered and scattered block numbers. */
		pages[i].blk = i % 2 ? i : ((uint64_t)rand() << 20) + i;
		assert_int_equal(pagetab_put(&t, &pages[i]), 0);
	}
	assert_int_equal(t.used, N);
	for (size_t i = 0; i < N; i += 3)
		pagetab_del(&t, pages[i].blk);
	pagetab_del(&t, 0xdeadbeef); /* absent: no-op */
	for (size_t i = 0; i < N; i++) {
		struct vm_page *p = pagetab_get(&t, pages[i].blk);
		if (i % 3 == 0)
			assert_null(p);
		else
			assert_ptr_equal(p, &pages[i]);
	}
	assert_int_equal(t.used, N - (N + 2) / 3);
	pagetab_destroy(&t);
}

static void count_cb(struct vm_page *p, void *arg)
{
	(void)p;
	(*(size_t *)arg)++;
}

static void test_pagetab_for_each_visits_every_page(void **unused)
{
	struct vm_pagetab t;
	struct vm_page pages[100];
	size_t n = 0;
	pagetab_init(&t);
	for (size_t i = 0; i < 100; i++) {
		pages[i].blk = i * 64;
		pagetab_put(&t, &pages[i]);
	}
	pagetab_for_each(&t, count_cb, &n);
	assert_int_equal(n, 100);
	pagetab_destroy(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pagetab_finds_all_after_puts_and_deletes),
		cmocka_unit_test(test_pagetab_for_each_visits_every_page),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
