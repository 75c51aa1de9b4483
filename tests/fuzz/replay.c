/* tests/fuzz/replay.c — the fuzz targets without libFuzzer: a plain
 * program that runs every committed input (the seed corpus and the
 * regressions, each a crash or failure a fuzzer once found) through the
 * target's LLVMFuzzerTestOneInput, so that make check replays them with
 * any compiler.  With no arguments it reads
 * $top_srcdir/tests/fuzz/{corpus,regressions}/FUZZ_NAME/; arguments name
 * files or directories instead.  Locking: none (one thread). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "FUZZ_NAME names the target's corpus directory"
#endif

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, r;

	if (f == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	do {
		if (len == cap) {
			cap = cap ? 2 * cap : 65536;
			uint8_t *nb = realloc(buf, cap);
			if (nb == NULL) {
				fprintf(stderr, "replay: %s: out of memory\n", path);
				free(buf);
				fclose(f);
				return -1;
			}
			buf = nb;
		}
		r = fread(buf + len, 1, cap - len, f);
		len += r;
	} while (r > 0);
	fclose(f);
	/* Named first, so that a crash's log says which input did it. */
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	/* A copy of exactly len bytes: ASan sees any read past the input. */
	uint8_t *exact = malloc(len ? len : 1);
	if (exact == NULL) {
		free(buf);
		return -1;
	}
	memcpy(exact, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	return 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every file of DIR (sorted, hidden files skipped); the count, or -1. */
static int run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	int count = 0;

	if (d == NULL) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*names));
		if (nn == NULL || (nn[n] = malloc(strlen(dir) + strlen(e->d_name) + 2)) == NULL) {
			fprintf(stderr, "replay: %s: out of memory\n", dir);
			closedir(d);
			return -1;
		}
		names = nn;
		sprintf(names[n++], "%s/%s", dir, e->d_name);
	}
	closedir(d);
	if (n > 0)  /* names is NULL for an empty directory */
		qsort(names, n, sizeof(*names), compare_names);
	for (size_t i = 0; i < n; i++) {
		if (count >= 0 && run_file(names[i]) == 0)
			count++;
		else
			count = -1;
		free(names[i]);
	}
	free(names);
	return count;
}

static int run_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return S_ISDIR(st.st_mode) ? run_dir(path) : run_file(path) == 0 ? 1 : -1;
}

int main(int argc, char **argv)
{
	const char *top = getenv("top_srcdir");
	char corpus[4096], regressions[4096];
	int n, seeds, total = 0;

	if (argc > 1) {
		for (int i = 1; i < argc; i++) {
			if ((n = run_path(argv[i])) < 0)
				return 1;
			total += n;
		}
		printf("replay %s: %d inputs passed\n", FUZZ_NAME, total);
		return 0;
	}
	if (top == NULL)
		top = ".";
	snprintf(corpus, sizeof(corpus), "%s/tests/fuzz/corpus/%s", top, FUZZ_NAME);
	snprintf(regressions, sizeof(regressions), "%s/tests/fuzz/regressions/%s", top, FUZZ_NAME);
	struct stat st;
	/* regressions/NAME/ exists once a finding was committed. */
	if ((seeds = run_dir(corpus)) < 0 ||
	    (n = stat(regressions, &st) < 0 && errno == ENOENT ? 0 : run_dir(regressions)) < 0)
		return 1;
	if (seeds == 0) {
		fprintf(stderr, "replay %s: no seed inputs in %s\n", FUZZ_NAME, corpus);
		return 1;
	}
	printf("replay %s: %d seed inputs and %d regression inputs passed\n", FUZZ_NAME, seeds, n);
	return 0;
}
