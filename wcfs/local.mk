# wcfs/ — blkmap-wcfs, the read-only FUSE mirror of a blkmap server (issue 5).
# Its tests are tests/test_wcfs*.c.
bin_PROGRAMS += blkmap-wcfs
blkmap_wcfs_SOURCES = \
	wcfs/wcfs.h \
	wcfs/main.c \
	wcfs/node.c \
	wcfs/ops.c \
	wcfs/list.c \
	wcfs/listing.c \
	wcfs/blocks.c \
	wcfs/inval.c
blkmap_wcfs_CFLAGS = $(AM_CFLAGS) $(FUSE3_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
blkmap_wcfs_LDADD = client/libblkmap.la $(FUSE3_LIBS) $(CURL_LIBS) $(JANSSON_LIBS)

# Tests: a real mirror mounted on a temporary mountpoint, over blkmap-server.
check_PROGRAMS += tests/test_wcfs
LONG_TESTS += tests/test_wcfs
tests_test_wcfs_SOURCES = tests/test_wcfs.c tests/wcfs_util.c tests/wcfs_util.h tests/wcfs_fixture.h \
	$(SERVER_TEST_SOURCES)
tests_test_wcfs_CFLAGS = $(SERVER_TEST_CFLAGS)
tests_test_wcfs_LDADD = client/libblkmap.la $(SERVER_TEST_LDADD)
tests_test_wcfs_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_wcfs_DEPENDENCIES = blkmap-server$(EXEEXT) blkmap-wcfs$(EXEEXT)

# The same over blkmap-server and nginx (a server that cannot list):
# lookups, FORGET, statfs, views, the program's modes.
check_PROGRAMS += tests/test_wcfs_nodes
LONG_TESTS += tests/test_wcfs_nodes
tests_test_wcfs_nodes_SOURCES = tests/test_wcfs_nodes.c tests/wcfs_util.c tests/wcfs_util.h tests/wcfs_fixture.h \
	$(CLIENT_TEST_SOURCES)
tests_test_wcfs_nodes_CFLAGS = $(CLIENT_TEST_CFLAGS)
tests_test_wcfs_nodes_LDADD = $(CLIENT_TEST_LDADD)
tests_test_wcfs_nodes_LDFLAGS = $(IN_PLACE_LINK)
EXTRA_tests_test_wcfs_nodes_DEPENDENCIES = blkmap-server$(EXEEXT) blkmap-wcfs$(EXEEXT)
