/* cli_history.c — the `blkmap` commands about a dataset's history: gc,
 * tag, tags and diff.  Thin layers over bm_gc, bm_tag_set/bm_tag_delete/
 * bm_tags_list and bm_diff (blkmap.h); exit statuses as every command's
 * (cli.h).  No state beyond a call.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static int fail_url(const char *what, int rc)
{
	return fail(what, rc, NULL);
}

/* "90", "90s", "15m", "2h", "7d" into seconds. */
static int parse_duration(const char *s, int64_t *out)
{
	char *e;
	long long v;
	int64_t mul = 1;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	v = strtoll(s, &e, 10);
	if (*e == 's')
		e++;
	else if (*e == 'm')
		mul = 60, e++;
	else if (*e == 'h')
		mul = 3600, e++;
	else if (*e == 'd')
		mul = 86400, e++;
	if (*e != '\0' || v < 0 || v > INT64_MAX / mul / 2)
		return -1;
	*out = (int64_t)v * mul;
	return 0;
}

/* "2026-11-29T10:00:00Z", "2026-11-29" (UTC midnight) or a duration ago. */
static int parse_time(const char *s, int64_t *out)
{
	struct tm tm;
	int64_t ago;
	const char *e;

	memset(&tm, 0, sizeof(tm));
	if ((e = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm)) != NULL && *e == '\0') {
		*out = (int64_t)timegm(&tm);
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	if ((e = strptime(s, "%Y-%m-%d", &tm)) != NULL && *e == '\0') {
		*out = (int64_t)timegm(&tm);
		return 0;
	}
	if (parse_duration(s, &ago) == 0) {
		*out = (int64_t)time(NULL) - ago;
		return 0;
	}
	return -1;
}

/* ---- gc ----------------------------------------------------------------------------- */

static const char gc_help[] =
	"usage: blkmap gc [--keep N] [--keep-since TIME] [--grace DURATION] [--dry-run] URL\n"
	"\n"
	"Collects the dataset at URL: drops the kept generations outside the policy\n"
	"and deletes every block and index page that no kept generation references,\n"
	"once it is older than the grace (objects of commits that never published,\n"
	"and of dropped generations).  The latest generation and every tagged one\n"
	"are always kept; with neither --keep nor --keep-since, all generations are.\n"
	"  --keep N            keep the N newest generations\n"
	"  --keep-since TIME   keep those created at or after TIME: 2026-11-29T10:00:00Z,\n"
	"                      2026-11-29, or a DURATION ago (7d)\n"
	"  --grace DURATION    leave unreferenced objects younger than this (default 1h;\n"
	"                      90, 90s, 15m, 2h, 7d)\n"
	"  --dry-run           say what would go, delete nothing\n"
	"Safe while other writers commit and when killed (docs/FORMAT.md, \"Garbage\n"
	"collection\"): it waits for a gc already running on the dataset, raises its\n"
	"marker and waits BLKMAP_GC_SETTLE_MS (30 s) before it reads anything.\n"
	"A server that cannot list (nginx) gets only what the dropped generations\n"
	"named searched; orphans of unpublished commits are not found there.\n"
	"Prints a summary (generations kept and dropped, objects deleted, bytes freed,\n"
	"index pages walked); progress on a terminal.\n"
	"Exit status: 0 success, 1 error, 2 usage error, 3 another gc is running (or\n"
	"took this one over).\n";

static void gc_progress(const char *phase, uint64_t done, uint64_t total, void *arg)
{
	double *last = arg;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (done != total && t - *last < 0.1)
		return;
	*last = t;
	fprintf(stderr, "\rgc: %-6s %" PRIu64 "/%" PRIu64 "   ", phase, done, total);
	if (strcmp(phase, "delete") == 0 && done == total)
		fputc('\n', stderr);
}

int cmd_gc(int argc, char **argv)
{
	struct bm_gc_policy p = { .grace_s = 3600 };
	struct bm_gc_report r;
	struct bm_options o;
	double last = 0;
	int i = 1, rc;

	if (argc > 1 && is_help(argv[1]))
		return fputs(gc_help, stdout), 0;
	for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--dry-run") == 0) {
			p.dry_run = 1;
			continue;
		}
		if (strcmp(a, "--keep") == 0) {
			if (v == NULL || parse_u64(v, &p.keep) < 0 || p.keep == 0)
				return usage_error("gc", "--keep needs a number of generations (1 or more)");
		} else if (strcmp(a, "--keep-since") == 0) {
			if (v == NULL || parse_time(v, &p.keep_since) < 0)
				return usage_error("gc", "--keep-since needs a TIME: 2026-11-29T10:00:00Z, "
							 "2026-11-29 or a duration ago such as 7d");
			if (p.keep_since <= 0)
				p.keep_since = 1;
		} else if (strcmp(a, "--grace") == 0) {
			if (v == NULL || parse_duration(v, &p.grace_s) < 0)
				return usage_error("gc", "--grace needs a DURATION such as 90s, 15m, 1h or 7d");
		} else {
			return usage_error("gc", "unknown option");
		}
		i++;
	}
	if (argc - i != 1)
		return usage_error("gc", "expected URL");
	if (load_options(&o) < 0)
		return 1;
	if (isatty(STDERR_FILENO)) {
		p.progress = gc_progress;
		p.progress_arg = &last;
	}
	rc = bm_gc(argv[i], &o, &p, &r);
	if (rc < 0)
		return fail_url("gc", rc);
	printf("%s: generations: %" PRIu64 " kept, %" PRIu64 " %s; objects: %" PRIu64 " %s, %" PRIu64
	       " bytes %s", argv[i], r.generations_kept, r.generations_dropped,
	       p.dry_run ? "would be dropped" : "dropped", r.objects_deleted,
	       p.dry_run ? "would be deleted" : "deleted", r.bytes_freed, p.dry_run ? "would be freed" : "freed");
	if (r.objects_young)
		printf(", %" PRIu64 " unreferenced but younger than the grace", r.objects_young);
	if (r.objects_unknown_age)
		printf(", %" PRIu64 " unreferenced with no modification time (kept)", r.objects_unknown_age);
	printf("; index pages: %" PRIu64 " walked\n", r.pages_walked);
	if (!r.listed)
		printf("%s: the server cannot list its objects: orphans of commits that never published "
		       "were not searched\n", argv[i]);
	return 0;
}

/* ---- tag and tags --------------------------------------------------------------------- */

static const char tag_help[] =
	"usage: blkmap tag URL NAME [GEN]\n"
	"       blkmap tag -d URL NAME\n"
	"\n"
	"Points tag NAME at generation GEN of the dataset at URL (default: the\n"
	"latest), or removes it (-d).  A tagged generation is never dropped by gc,\n"
	"and every reading command opens it with --at NAME.  Names: 1 to 100 of\n"
	"A-Z a-z 0-9 . _ -, not starting with . or -, not all digits.\n"
	"Prints the tagged generation.\n"
	"Exit status: 0 success, 1 error (no such generation or tag), 2 usage error,\n"
	"3 a concurrent gc dropped the generation or the tag list kept changing.\n";

/* A bad NAME is a usage error (2), said before the URL is touched; what
 * the library refuses after that, a URL that is not a server's included,
 * is an error (1) as for every command. */
static const char tag_name_rules[] =
	"NAME is not a tag name: 1 to 100 of A-Z a-z 0-9 . _ -, not starting with . or -, not all digits";

int cmd_tag(int argc, char **argv)
{
	struct bm_options o;
	uint64_t gen = 0, tagged = 0;
	int rc;

	if (argc > 1 && is_help(argv[1]))
		return fputs(tag_help, stdout), 0;
	if (argc > 1 && strcmp(argv[1], "-d") == 0) {
		if (argc != 4)
			return usage_error("tag", "expected -d URL NAME");
		if (!bm_tag_name_valid(argv[3]))
			return usage_error("tag", tag_name_rules);
		if (load_options(&o) < 0)
			return 1;
		rc = bm_tag_delete(argv[2], &o, argv[3]);
		return rc < 0 ? fail_url("tag", rc) : 0;
	}
	if (argc != 3 && argc != 4)
		return usage_error("tag", "expected URL NAME [GEN]");
	if (argc == 4 && (parse_u64(argv[3], &gen) < 0 || gen == 0))
		return usage_error("tag", "GEN is not a generation number (1 or more)");
	if (!bm_tag_name_valid(argv[2]))
		return usage_error("tag", tag_name_rules);
	if (load_options(&o) < 0)
		return 1;
	rc = bm_tag_set(argv[1], &o, argv[2], gen, &tagged);
	if (rc < 0)
		return fail_url("tag", rc);
	printf("%" PRIu64 "\n", tagged);
	return 0;
}

static const char tags_help[] =
	"usage: blkmap tags URL\n"
	"\n"
	"Lists the tags of the dataset at URL, one 'NAME GEN' line each, by name.\n";

static int print_tag(void *arg, const char *name, uint64_t gen)
{
	(void)arg;
	printf("%s %" PRIu64 "\n", name, gen);
	return 0;
}

int cmd_tags(int argc, char **argv)
{
	struct bm_options o;
	int rc;

	if (argc > 1 && is_help(argv[1]))
		return fputs(tags_help, stdout), 0;
	if (argc != 2)
		return usage_error("tags", "expected URL");
	if (load_options(&o) < 0)
		return 1;
	rc = bm_tags_list(argv[1], &o, print_tag, NULL);
	return rc < 0 ? fail_url("tags", rc) : 0;
}

/* ---- diff ------------------------------------------------------------------------------ */

static const char diff_help[] =
	"usage: blkmap diff [--at GEN|TAG] URL GEN1|TAG1 [GEN2|TAG2]\n"
	"\n"
	"Lists the block ranges whose content differs between two kept generations\n"
	"of the dataset at URL (the second: GEN2, else --at, else the latest), one\n"
	"line each: 'blocks FIRST-LAST bytes START-END' (inclusive; bytes clipped to\n"
	"the larger size).  A block past a generation's end counts as a hole.\n"
	"Version 2 datasets read only the index pages that differ.\n"
	"Exit status: 0 success (also when nothing differs), 1 error, 2 usage error.\n";

struct diff_out {
	struct bm_diff_info info;
	uint64_t ranges, blocks;
};

static int print_range(void *arg, uint64_t first, uint64_t count)
{
	struct diff_out *d = arg;
	uint64_t bs = d->info.blksize, size = d->info.size_a > d->info.size_b ? d->info.size_a : d->info.size_b;
	uint64_t start = first * bs, end = (first + count) * bs;

	if (end > size)
		end = size;
	printf("blocks %" PRIu64 "-%" PRIu64 " bytes %" PRIu64 "-%" PRIu64 "\n", first, first + count - 1, start,
	       end ? end - 1 : 0);
	d->ranges++;
	d->blocks += count;
	return 0;
}

/* bm_diff fills d.info before the first range: print_range reads it. */
int cmd_diff(int argc, char **argv)
{
	struct bm_options o;
	struct diff_out d;
	const char *at = NULL;
	int i = 1, rc;

	if (argc > 1 && is_help(argv[1]))
		return fputs(diff_help, stdout), 0;
	if (i < argc && strcmp(argv[i], "--at") == 0) {
		if (i + 1 >= argc)
			return usage_error("diff", "--at needs a generation number or a tag name");
		at = argv[i + 1];
		i += 2;
	}
	if (argc - i != 2 && argc - i != 3)
		return usage_error("diff", "expected URL GEN1|TAG1 [GEN2|TAG2]");
	if (argc - i == 3) {
		if (at)
			return usage_error("diff", "give the second generation as GEN2 or as --at, not both");
		at = argv[i + 2];
	}
	if (load_options(&o) < 0)
		return 1;
	memset(&d, 0, sizeof(d));
	rc = bm_diff(argv[i], &o, argv[i + 1], at, &d.info, print_range, &d);
	if (rc < 0)
		return fail_url("diff", rc);
	fprintf(stderr, "generation %" PRIu64 " -> %" PRIu64 ": %" PRIu64 " range%s, %" PRIu64 " block%s differ\n",
		d.info.generation_a, d.info.generation_b, d.ranges, d.ranges == 1 ? "" : "s", d.blocks,
		d.blocks == 1 ? "" : "s");
	return 0;
}
