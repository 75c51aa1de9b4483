# wcfs/ — blkmap-wcfs, the read-only FUSE mirror of a blkmap server (issue 5).
# Its tests are tests/test_wcfs*.c.
bin_PROGRAMS += blkmap-wcfs
blkmap_wcfs_SOURCES = \
	wcfs/wcfs.h \
	wcfs/main.c \
	wcfs/node.c \
	wcfs/ops.c \
	wcfs/list.c
blkmap_wcfs_CFLAGS = $(AM_CFLAGS) $(FUSE3_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
blkmap_wcfs_LDADD = client/libblkmap.la $(FUSE3_LIBS) $(CURL_LIBS) $(JANSSON_LIBS)
