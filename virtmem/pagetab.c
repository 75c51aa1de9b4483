/* pagetab.c — a handle's page table: block number -> struct vm_page.
 *
 * Open addressing with linear probing and backward-shift deletion, so that
 * a lookup in the fault path is one hash and a short scan, and a file of any
 * size costs memory only for its cached pages.  Kept at most half full.
 * Owns: nothing beyond the table it is given.
 * Locking: called with vm_lock held (see internal.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

void pagetab_init(struct vm_pagetab *t)
{
	t->entries = NULL;
	t->cap = 0;
	t->used = 0;
}

void pagetab_destroy(struct vm_pagetab *t)
{
	free(t->entries);
	pagetab_init(t);
}

static size_t home_of(const struct vm_pagetab *t, vm_blk_t blk)
{
	/* Fibonacci hashing: consecutive blocks spread over the table. */
	return (size_t)((blk * 0x9E3779B97F4A7C15ull) >> 32) & (t->cap - 1);
}

struct vm_page *pagetab_get(const struct vm_pagetab *t, vm_blk_t blk)
{
	if (t->cap == 0)
		return NULL;
	for (size_t i = home_of(t, blk);; i = (i + 1) & (t->cap - 1)) {
		const struct vm_pagetab_entry *s = &t->entries[i];
		if (s->page == NULL)
			return NULL;
		if (s->blk == blk)
			return s->page;
	}
}

static void insert_entry(struct vm_pagetab *t, struct vm_page *page)
{
	size_t i = home_of(t, page->blk);
	while (t->entries[i].page != NULL)
		i = (i + 1) & (t->cap - 1);
	t->entries[i].blk = page->blk;
	t->entries[i].page = page;
}

static int grow(struct vm_pagetab *t)
{
	size_t ncap = t->cap ? t->cap * 2 : 64;
	struct vm_pagetab_entry *old = t->entries;
	size_t ocap = t->cap;

	t->entries = calloc(ncap, sizeof(*t->entries));
	if (t->entries == NULL) {
		t->entries = old;
		return -ENOMEM;
	}
	t->cap = ncap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].page != NULL)
			insert_entry(t, old[i].page);
	free(old);
	return 0;
}

int pagetab_put(struct vm_pagetab *t, struct vm_page *page)
{
	if (2 * (t->used + 1) > t->cap) {
		int rc = grow(t);
		if (rc < 0)
			return rc;
	}
	insert_entry(t, page);
	t->used++;
	return 0;
}

void pagetab_del(struct vm_pagetab *t, vm_blk_t blk)
{
	size_t mask = t->cap - 1, i, j;

	if (t->cap == 0)
		return;
	for (i = home_of(t, blk);; i = (i + 1) & mask) {
		if (t->entries[i].page == NULL)
			return;
		if (t->entries[i].blk == blk)
			break;
	}
	/* Backward shift: move later members of the probe run into the hole
	 * when their home entry is not between the hole and themselves. */
	for (j = (i + 1) & mask; t->entries[j].page != NULL; j = (j + 1) & mask) {
		size_t home = home_of(t, t->entries[j].blk);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			t->entries[i] = t->entries[j];
			i = j;
		}
	}
	t->entries[i].page = NULL;
	t->used--;
}

void pagetab_for_each(const struct vm_pagetab *t,
		      void (*fn)(struct vm_page *page, void *arg), void *arg)
{
	for (size_t i = 0; i < t->cap; i++)
		if (t->entries[i].page != NULL)
			fn(t->entries[i].page, arg);
}
