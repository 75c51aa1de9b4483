/* main.c — blkmap-wcfs: command line, mounting, the multi-threaded FUSE
 * loop (and the invalidation thread beside it), signals and logging of
 * the read-only mirror of a blkmap server.
 * Owns: wc_m (the mirror's settings, written before the loop starts and
 * only read after) and the log sink (stderr, or syslog once daemonized);
 * wc_format, the checked snprintf every URL and path is built with.
 * Locking: none; logging is one write per line.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

#include <curl/curl.h>

#include "wcfs.h"

struct wc_mirror wc_m;

static void vlog(int level, const char *fmt, va_list ap)
{
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (wc_m.use_syslog)
		syslog(level, "%s", line);
	else
		fprintf(stderr, "blkmap-wcfs: %s\n", line);
}

void wc_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap);
	va_end(ap);
}

void wc_debug(const char *fmt, ...)
{
	va_list ap;

	if (!wc_m.verbose)
		return;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, fmt, ap);
	va_end(ap);
}

int wc_format(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= n) {
		if (n > 0)
			buf[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[2048];

	if (!wc_m.use_syslog) {
		vfprintf(stderr, fmt, ap); /* libfuse ends its lines itself */
		return;
	}
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	syslog((int)level, "%s", line);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: blkmap-wcfs [-f] [-d] [-o OPTION[,OPTION...]] SERVER_URL [MOUNTPOINT]\n"
		"\n"
		"Mounts a read-only mirror of the blkmap datasets under SERVER_URL, served\n"
		"through the kernel page cache (shared by every process on the host).\n"
		"SERVER_URL may be s3://BUCKET[/PREFIX] (AWS_* configuration, docs/s3.md);\n"
		"an S3 mirror's directories list nothing, their datasets open by name.\n"
		"\n"
		"  MOUNTPOINT/.wcfs/url       the normalized SERVER_URL and a newline\n"
		"  MOUNTPOINT/head/PATH       dataset SERVER_URL/PATH, latest generation\n"
		"                             (follows new generations)\n"
		"  MOUNTPOINT/@GEN/PATH       the dataset as of kept generation GEN\n"
		"\n"
		"MOUNTPOINT defaults to /dev/shm/blkmap-wcfs/<16 hex digits of a hash of the\n"
		"normalized URL>, created if missing: where libblkmap looks for a mirror.\n"
		"Unmount with `fusermount3 -u MOUNTPOINT`, or SIGTERM/SIGINT: exit status 0.\n"
		"\n"
		"Environment (as for libblkmap, docs/client.md): BLKMAP_TOKEN,\n"
		"BLKMAP_CONNECT_TIMEOUT_MS, BLKMAP_TIMEOUT_MS, BLKMAP_RETRIES,\n"
		"BLKMAP_RETRY_BASE_MS, BLKMAP_CONNECTIONS (per dataset).  A read that still\n"
		"fails after the retries (server unreachable, checksum mismatch) gets EIO\n"
		"and one line in the log (stderr; syslog when running in the background).\n"
		"\n"
		"Options (libfuse):\n"
		"  -h, --help                 this text\n"
		"  -V, --version              versions\n"
		"  -f                         stay in the foreground\n"
		"  -d, -o debug               log every FUSE request and mirror decision (implies -f)\n"
		"  -s                         one thread (default: one per concurrent request)\n"
		"  -o max_threads=N           most worker threads (default 10)\n"
		"  -o clone_fd                a /dev/fuse descriptor per thread\n"
		"  -o allow_other             let other users read the mirror (root, or\n"
		"                             user_allow_other in /etc/fuse.conf)\n"
		"  -o OPTION                  any other libfuse or mount option (below)\n");
}

/* The first argument that is not an option is the server URL; the next one
 * is left to libfuse as the mountpoint. */
static int take_url(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	const char **url = data;

	static const char *const known[] = { "-h", "--help", "-V", "--version", "-f", "-d", "-s", NULL };

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && *url == NULL) {
		*url = arg;
		return 0;
	}
	if (key == FUSE_OPT_KEY_OPT && arg[0] == '-') {
		/* (-o's suboptions come without a dash: libfuse checks those.) */
		for (const char *const *k = known; *k; k++)
			if (!strcmp(arg, *k))
				return 1;
		fprintf(stderr, "blkmap-wcfs: unknown option %s (see blkmap-wcfs --help)\n", arg);
		return -1;
	}
	return 1;
}

static int mkdir_p(const char *path)
{
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int setup_options(void)
{
	if (bm_options_init(&wc_m.opt) < 0)
		return -1; /* the message is on stderr */
	wc_m.opt.readahead_bytes = 0; /* the kernel reads ahead; no threads */
	/* bm_read caches no block, but a handle's index pages take a
	 * sixteenth of this: 1 MiB keeps the leaf of the region being read (a
	 * format 3 leaf of 1 MiB blocks is 68 KiB; with 1 MiB here, the 64 KiB
	 * left no room for it and every read fetched it again).  A cap, not
	 * an allocation: the mirror maps nothing. */
	wc_m.opt.cache_bytes = 16 << 20;
	/* Never look for a mirror from inside one: the default mountpoint
	 * may be our own, and a lookup there from a FUSE request deadlocks. */
	wc_m.opt.wcfs = "off";
	return 0;
}

static int run(struct fuse_args *args, struct fuse_cmdline_opts *co, const char *mnt)
{
	struct fuse_session *se;
	struct fuse_loop_config *lc;
	int rc = 1;

	se = fuse_session_new(args, &wc_ops, sizeof(wc_ops), NULL);
	if (se == NULL)
		return 2; /* a bad -o option: libfuse said which */
	wc_m.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, mnt) != 0)
		goto out_signals;
	if (fuse_daemonize(co->foreground) != 0)
		goto out_unmount;
	if (!co->foreground) {
		openlog("blkmap-wcfs", LOG_PID, LOG_DAEMON);
		wc_m.use_syslog = 1;
	}
	if (wc_inval_start() < 0)
		goto out_unmount;
	if (co->singlethread) {
		rc = fuse_session_loop(se);
	} else {
		lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, (unsigned)co->clone_fd);
		if (co->max_threads != UINT_MAX) /* UINT_MAX: not given */
			fuse_loop_cfg_set_max_threads(lc, co->max_threads);
		if (co->max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(lc, co->max_idle_threads);
		rc = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	/* 0 after `fusermount3 -u`; the signal number after SIGTERM/SIGINT;
	 * negative when reading /dev/fuse failed. */
	if (rc < 0)
		wc_log("%s: the FUSE loop failed: %s", mnt, strerror(-rc));
	rc = rc < 0 ? 1 : 0;
	/* Before the session goes: queued replies are still sent. */
	wc_inval_stop();
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	wc_table_clear();
	return rc;
}

/* Everything before mounting: 0 to go on, else the exit status. */
static int prepare(struct fuse_cmdline_opts *co, const char *url, char *mnt, size_t n)
{
	struct stat st;

	if (co->show_help) {
		usage(stdout);
		printf("\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		return -1;
	}
	if (co->show_version) {
		printf("blkmap-wcfs %s, libfuse %s\n", PACKAGE_VERSION, fuse_pkgversion());
		fuse_lowlevel_version();
		return -1;
	}
	if (url == NULL) {
		fprintf(stderr, "blkmap-wcfs: no SERVER_URL (usage: blkmap-wcfs [-f] [-o OPTIONS] SERVER_URL [MOUNTPOINT])\n");
		return 2;
	}
	/* The scheme is checked by bm_wcfs_normalize_url (any case). */
	const char *host = strstr(url, "://");
	if (bm_wcfs_normalize_url(url, wc_m.url, sizeof(wc_m.url)) < 0 || host[3] == '\0' || host[3] == '/') {
		fprintf(stderr, "blkmap-wcfs: %s: not an http://, https:// or s3:// server URL\n", url);
		return 2;
	}
	wc_m.verbose = co->debug;
	if (co->mountpoint) {
		snprintf(mnt, n, "%s", co->mountpoint);
	} else if (bm_wcfs_default_mountpoint(url, mnt, n) < 0 || mkdir_p(mnt) < 0) {
		fprintf(stderr, "blkmap-wcfs: cannot create the default mountpoint %s: %s\n", mnt,
			strerror(errno));
		return 1;
	}
	if (stat(mnt, &st) < 0) {
		fprintf(stderr, "blkmap-wcfs: mountpoint %s: %s%s\n", mnt, strerror(errno),
			errno == ENOTCONN ? " (a mirror died there: fusermount3 -u it first)" : "");
		return 1;
	}
	if (setup_options() < 0)
		return 2;
	return 0;
}

void wc_assert_fail(const char *file, int line, const char *cond)
{
	fprintf(stderr, "blkmap-wcfs: %s:%d: assertion failed: %s\n", file, line, cond);
	abort();
}

bool wc_mutex_held(pthread_mutex_t *mu)
{
#ifdef __GLIBC__
	return mu->__data.__owner == (int)syscall(SYS_gettid);
#else
	(void)mu;
	return true;
#endif
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts co;
	const char *url = NULL;
	char mnt[4096] = "";
	int rc;

	memset(&co, 0, sizeof(co));
	if (fuse_opt_parse(&args, &url, NULL, take_url) != 0)
		rc = 2;
	else if (fuse_parse_cmdline(&args, &co) != 0)
		rc = 2; /* libfuse said why, in one line */
	else
		rc = prepare(&co, url, mnt, sizeof(mnt));
	if (rc == 0) {
		/* Read-only at the VFS too: writes get EROFS before reaching us. */
		fuse_opt_add_arg(&args, "-oro,fsname=blkmap-wcfs,default_permissions");
		fuse_set_log_func(fuse_log_to_ours);
		curl_global_init(CURL_GLOBAL_DEFAULT);
		wc_table_init();
		rc = run(&args, &co, mnt);
		curl_global_cleanup();
	}
	free(co.mountpoint);
	fuse_opt_free_args(&args);
	return rc < 0 ? 0 : rc;
}
