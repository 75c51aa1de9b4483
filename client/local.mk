# client/ — libblkmap (shared and static, blkmap.pc) and the `blkmap` CLI.
lib_LTLIBRARIES += client/libblkmap.la
client_libblkmap_la_SOURCES = \
	client/internal.h \
	client/bm_xxhash.h \
	client/aws.c \
	client/aws.h \
	client/blocks.c \
	client/changes.c \
	client/commit.c \
	client/dataset.c \
	client/open.c \
	client/generations.c \
	client/listing.c \
	client/http.c \
	client/http_pool.h \
	client/http_many.c \
	client/http_sock.c \
	client/store.h \
	client/store.c \
	client/store_http.c \
	client/store_s3.c \
	client/store_list.c \
	client/manifest.c \
	client/index.h \
	client/index.c \
	client/manifest2.c \
	client/generation.h \
	client/generation.c \
	client/gcmark.h \
	client/gcmark.c \
	client/gc.c \
	client/diff.c \
	client/tags.h \
	client/tags.c \
	client/index_load.h \
	client/index_load.c \
	client/pool.c \
	client/ramp.h \
	client/ramp.c \
	client/readahead.c \
	client/reads.c \
	client/upload.c \
	client/overlay.c \
	client/util.c \
	client/wcfs_path.c
client_libblkmap_la_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS) $(XXHASH_CFLAGS)
client_libblkmap_la_LIBADD = virtmem/libvirtmem.la $(CURL_LIBS) $(JANSSON_LIBS) $(XXHASH_LIBS)
client_libblkmap_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0 -no-undefined
blkmapincludedir = $(includedir)/blkmap
blkmapinclude_HEADERS = include/blkmap/blkmap.h
pkgconfig_DATA += client/blkmap.pc

bin_PROGRAMS += blkmap
blkmap_SOURCES = client/cli.c client/cli.h client/cli_history.c
blkmap_CFLAGS = $(AM_CFLAGS) $(CRYPTO_CFLAGS) $(JANSSON_CFLAGS)
blkmap_LDADD = client/libblkmap.la $(CRYPTO_LIBS) $(JANSSON_LIBS)
# libblkmap linked in (libtool's -static: only libtool libraries): the
# command is one file, and in the build tree a program, not libtool's
# wrapper script, whose bash start cost each of the tests' many runs of
# blkmap some 70 ms on a loaded machine.
blkmap_LDFLAGS = -static

# The main job `./quickstart demo` runs.
noinst_PROGRAMS += blkmap-demo
blkmap_demo_SOURCES = client/demo.c
blkmap_demo_LDADD = client/libblkmap.la -lm
